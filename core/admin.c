/* admin.c: /health, /ready, /metrics, the token-guarded admin area and the HTTP publish endpoint. */
#include "admin.h"

#include <arpa/inet.h>
#include <lauxlib.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "clientip.h"
#include "conn.h"
#include "ctx.h"
#include "dashboard.h"
#include "json.h"
#include "lua_app.h"
#include "lua_db.h"
#include "metrics.h"
#include "response.h"
#include "sse.h"
#include "ssebus.h"

/* forwarding headers longer than this are not judged: the admin area is refused */
#define HTTP_ADMIN_HDR_MAX 8192

int admin_match(const sconfig *cfg, const char *p, size_t n)
{
    if (n == 7 && memcmp(p, "/health", 7) == 0) return ADMIN_HEALTH;
    if (n == 6 && memcmp(p, "/ready", 6) == 0) return ADMIN_READY;
    if (n == 8 && memcmp(p, "/metrics", 8) == 0) return ADMIN_METRICS;
    if (cfg->publish_path && strlen(cfg->publish_path) == n && memcmp(p, cfg->publish_path, n) == 0)
        return ADMIN_PUBLISH;
    if (n >= 8 && memcmp(p, "/_sluice", 8) == 0 && (n == 8 || p[8] == '/')) return ADMIN_AREA;
    return ADMIN_NONE;
}

static int is_loopback(const conn *c)
{
    if (c->peer.ss_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)&c->peer)->sin_addr.s_addr) >> 24) == 127;
    if (c->peer.ss_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)&c->peer)->sin6_addr;
        if (IN6_IS_ADDR_LOOPBACK(a)) return 1;
        if (IN6_IS_ADDR_V4MAPPED(a)) return a->s6_addr[12] == 127;
    }
    return c->peer.ss_family == AF_UNIX;
}

/* Every value of a header joined with ", "; -1 when they do not fit (never judged on a part). */
static long joined(const http_req *r, const char *name, char *out, size_t cap)
{
    size_t n = strlen(name), len = 0;
    for (unsigned i = 0; i < r->nheaders; i++) {
        const http_header *h = &r->headers[i];
        if (h->nlen != n || memcmp(http_hname(r, h), name, n) != 0) continue;
        if (len + 2 + h->vlen + 1 > cap) return -1;
        if (len) { out[len++] = ','; out[len++] = ' '; }
        memcpy(out + len, http_hvalue(r, h), h->vlen);
        len += h->vlen;
    }
    out[len] = 0;
    return (long)len;
}

/* Does one forwarding header (the other absent) name a loopback client through trusted proxies? */
static int names_loopback(const conn *c, const char *xff, size_t xl, const char *fwd, size_t fl)
{
    char ip[64];
    clientip_how how;
    if (c->peer.ss_family != AF_INET && c->peer.ss_family != AF_INET6) return 0;
    if (clientip_resolve_how(c->w->app_cfg->trust, (const struct sockaddr *)&c->peer, xff, xl, fwd, fl, ip,
                             sizeof ip, &how) < 0)
        return 0;
    return how == CLIENTIP_HOP && clientip_is_loopback(ip);
}

/* Is the client of this request on this host? The socket peer must be loopback, and when a
 * proxy (or anyone) added forwarding headers, each one present must name a loopback client the
 * way the rate limiter reads them (trusted_proxies, the right-to-left walk): a same-host proxy
 * forwarding a remote client, a garbage or unparsable header, a header no trusted proxy wrote,
 * or X-Real-IP (which sluice never reads) all mean "not local". */
static int local_client(const conn *c)
{
    if (!is_loopback(c)) return 0;
    if (http_req_header(&c->req, "x-real-ip", NULL)) return 0;
    char xff[HTTP_ADMIN_HDR_MAX], fwd[HTTP_ADMIN_HDR_MAX];
    long xl = joined(&c->req, "x-forwarded-for", xff, sizeof xff);
    long fl = joined(&c->req, "forwarded", fwd, sizeof fwd);
    if (xl < 0 || fl < 0) return 0;
    int has_xff = http_req_header(&c->req, "x-forwarded-for", NULL) != NULL;
    int has_fwd = http_req_header(&c->req, "forwarded", NULL) != NULL;
    if (has_xff && !names_loopback(c, xff, (size_t)xl, NULL, 0)) return 0;
    if (has_fwd && !names_loopback(c, NULL, 0, fwd, (size_t)fl)) return 0;
    return 1;
}

/* Constant-time comparison of n bytes against the configured token. */
static int token_eq(const char *v, size_t n, const char *token)
{
    size_t tl = strlen(token);
    unsigned diff = (unsigned)(n ^ tl);
    for (size_t i = 0; i < n; i++) diff |= (unsigned char)v[i] ^ (unsigned char)token[i % (tl ? tl : 1)];
    return diff == 0 && tl > 0;
}

/* "Authorization: Bearer <token>" with the configured token. */
static int bearer_ok(const conn *c, const char *token)
{
    size_t n;
    const char *v = http_req_header(&c->req, "authorization", &n);
    if (!v || n < 7 || strncasecmp(v, "Bearer ", 7) != 0) return 0;
    return token_eq(v + 7, n - 7, token);
}

/* ?token=<token> (percent-decoded) in the query string. */
static int query_token_ok(const conn *c, const char *token)
{
    const http_req *r = &c->req;
    const char *u = http_req_url(r), *end = u + r->url_len;
    const char *q = u + r->path_len;
    if (q >= end || *q != '?') return 0;
    for (q++; q < end && *q != '#';) {
        const char *amp = q;
        while (amp < end && *amp != '&' && *amp != '#') amp++;
        if (amp - q > 6 && memcmp(q, "token=", 6) == 0 && (size_t)(amp - q - 6) < 512) {
            char v[512];
            size_t n = (size_t)(amp - q - 6);
            memcpy(v, q + 6, n);
            long m = http_urldecode(v, n, 0);
            return m >= 0 && token_eq(v, (size_t)m, token);
        }
        q = amp < end && *amp == '&' ? amp + 1 : end;
    }
    return 0;
}

/* A Host (or Origin authority) that names this machine: localhost, 127.x.y.z or [::1], any port. */
static int host_is_loopback(const char *h, size_t n)
{
    char name[64];
    if (!h || n == 0 || n >= sizeof name) return 0;
    memcpy(name, h, n);
    name[n] = 0;
    if (name[0] == '[') {
        char *close = strchr(name, ']');
        if (!close || (close[1] && close[1] != ':')) return 0;
        *close = 0;
        return clientip_is_loopback(name + 1);
    }
    char *colon = strchr(name, ':');
    if (colon) *colon = 0;
    return strcasecmp(name, "localhost") == 0 || clientip_is_loopback(name);
}

/* Browser requests get two extra checks, so a web page cannot use the user's loopback access:
 * cross-site requests are refused (Sec-Fetch-Site, Origin against Host), and without a token the
 * Host must name this machine (a DNS-rebound page is "same origin" but its Host is its own
 * name). Returns NULL or why the request is refused. */
static const char *browser_refusal(const conn *c, int token_set, int state_changing)
{
    size_t sl = 0, ol = 0, hl = 0;
    const char *site = http_req_header(&c->req, "sec-fetch-site", &sl);
    const char *origin = http_req_header(&c->req, "origin", &ol);
    const char *host = http_req_header(&c->req, "host", &hl);
    if (site && !(sl == 11 && strncasecmp(site, "same-origin", 11) == 0) && !(sl == 4 && strncasecmp(site, "none", 4) == 0))
        return "cross-site requests to the admin area are refused (Sec-Fetch-Site)";
    if (origin) {
        const char *a = origin;
        size_t al = ol;
        if (al > 7 && strncasecmp(a, "http://", 7) == 0) a += 7, al -= 7;
        else if (al > 8 && strncasecmp(a, "https://", 8) == 0) a += 8, al -= 8;
        else return "cross-site requests to the admin area are refused (Origin)";
        if (!host || al != hl || strncasecmp(a, host, al) != 0)
            return "cross-site requests to the admin area are refused (Origin does not match Host)";
    }
    if (!token_set && (site || origin || state_changing) && !host_is_loopback(host, hl))
        return "without admin.token, browsers reach the admin area only as localhost, 127.0.0.1 or [::1]";
    return NULL;
}

static void send_buf(conn *c, int status, const char *ctype, buf *b)
{
    resp r;
    resp_begin(&r, c, status);
    resp_header(&r, "Cache-Control", 13, "no-store", 8);
    resp_finish(&r, ctype, b->data ? b->data : "", b->len);
    buf_free(b);
}

static void ready(conn *c)
{
    metrics_health h;
    metrics_readiness(c->w, c->w->app_cfg, &h);            /* metrics.c: draining and health.ready_requires */
    const char *reason = h.reason;
    buf b = {0};
    if (reason) buf_printf(&b, "{\"status\":\"not ready\",\"reason\":\"%s\"}", reason);
    else buf_puts(&b, "{\"status\":\"ready\"}");
    send_buf(c, reason ? 503 : 200, "application/json", &b);
}

/* POST <publish_path> {"channel":..,"event":..,"data":..} with the publish token. */
static void publish(conn *c, void (*done)(conn *c))
{
    worker *w = c->w;
    const sconfig *cfg = w->app_cfg;
    if (!cfg->publish_token) { resp_error(c, 404, "not found", 0); return; }
    if (!bearer_ok(c, cfg->publish_token)) { resp_error(c, 401, "publish requires Authorization: Bearer <sse.publish_token>", 0); return; }
    if (c->req.method != HTTP_POST) { resp_error(c, 405, "method not allowed: use POST", 0); return; }
    lua_State *L = w->app->L;
    int top = lua_gettop(L);
    lua_getglobal(L, "require");
    lua_pushstring(L, "cjson.safe");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "decode");
    lua_pushlstring(L, c->req.body.data ? c->req.body.data : "", c->req.body.len);
    lua_call(L, 1, 1);
    if (!lua_istable(L, -1)) { lua_settop(L, top); resp_error(c, 400, "body must be a JSON object {channel, event, data}", 0); return; }
    int t = lua_gettop(L);
    lua_getfield(L, t, "channel");
    lua_getfield(L, t, "event");
    lua_getfield(L, t, "data");
    lua_getfield(L, t, "id");
    size_t chl = 0, dl = 0;
    const char *ch = lua_tolstring(L, t + 1, &chl);
    const char *ev = lua_tostring(L, t + 2);
    if (lua_istable(L, t + 3)) {          /* table data is sent as JSON */
        lua_pushcfunction(L, json_lua_encode);
        lua_pushvalue(L, t + 3);
        if (lua_pcall(L, 1, 1, 0)) { lua_settop(L, top); resp_error(c, 400, "data cannot be sent as JSON", 0); return; }
        lua_replace(L, t + 3);
    }
    const char *data = lua_tolstring(L, t + 3, &dl);
    const char *id = lua_tostring(L, t + 4);
    if (!ch) { lua_settop(L, top); resp_error(c, 400, "channel is required", 0); return; }
    /* the same path as app.publish (ssebus.c): through Redis to every instance when configured */
    ssebus_msg m = { ch, chl, ev, data ? data : "", dl, id, -1 };
    ssebus_http_publish(c, &m, done);
    lua_settop(L, top);
}

enum { AREA_NONE, AREA_STATUS, AREA_DASHBOARD, AREA_RELOAD };

static void area(conn *c)
{
    worker *w = c->w;
    const sconfig *cfg = w->app_cfg;
    if (cfg->admin_loopback_only && !local_client(c)) { resp_error(c, 404, "not found", 0); return; }
    const char *p = http_req_url(&c->req) + 8;
    size_t n = c->req.path_len - 8;
    int which = AREA_NONE;
    if (n == 7 && memcmp(p, "/status", 7) == 0) which = AREA_STATUS;
    else if (n == 7 && memcmp(p, "/reload", 7) == 0) which = AREA_RELOAD;
    else if (n <= 1 || (n == 10 && memcmp(p, "/dashboard", 10) == 0)) which = AREA_DASHBOARD;
    int get = c->req.method == HTTP_GET || c->req.method == HTTP_HEAD;
    if (cfg->admin_token && !bearer_ok(c, cfg->admin_token)) {
        /* only the dashboard page takes ?token=, so a browser can open it; it sends the header */
        if (!(which == AREA_DASHBOARD && get && query_token_ok(c, cfg->admin_token))) {
            resp_error(c, 401, which == AREA_DASHBOARD && get
                                   ? "admin area requires Authorization: Bearer <admin.token> (or ?token=<admin.token> on this page)"
                                   : "admin area requires Authorization: Bearer <admin.token>",
                       0);
            return;
        }
    }
    if (which == AREA_NONE) { resp_error(c, 404, "not found", 0); return; }
    if (which == AREA_RELOAD ? c->req.method != HTTP_POST : !get) {
        resp_error(c, 405, which == AREA_RELOAD ? "method not allowed: use POST" : "method not allowed: use GET", 0);
        return;
    }
    const char *why = browser_refusal(c, cfg->admin_token != NULL, which == AREA_RELOAD);
    if (why) { resp_error(c, 403, why, 0); return; }
    buf b = {0};
    switch (which) {
    case AREA_STATUS: {
        metrics_health h;
        metrics_readiness(w, w->app_cfg, &h);
        metrics_status_json(w->srv, &h, &b);
        send_buf(c, 200, "application/json", &b);
        break;
    }
    case AREA_RELOAD: {
        /* no simple-request CSRF: a page cannot send Authorization or a custom header to
         * another origin without a preflight, which the admin area never grants */
        size_t hl = 0;
        const char *h = http_req_header(&c->req, "x-sluice-admin", &hl);
        if (!cfg->admin_token && !(h && hl == 1 && h[0] == '1')) {
            resp_error(c, 403, "POST /_sluice/reload needs the header X-Sluice-Admin: 1 (or admin.token and Authorization: Bearer)", 0);
            return;
        }
        if (!w->srv->request_reload) {      /* the spec runner: one state, no main loop to reload it */
            resp_error(c, 503, "reload is not available in the spec runner", 0);
            return;
        }
        w->srv->request_reload(w->srv);
        buf_puts(&b, "{\"status\":\"reload requested\",\"see\":\"/_sluice/status\"}");
        send_buf(c, 202, "application/json", &b);
        break;
    }
    default: {
        resp r;
        resp_begin(&r, c, 200);
        resp_header(&r, "Cache-Control", 13, "no-store", 8);
        resp_header(&r, "Referrer-Policy", 15, "no-referrer", 11);   /* the URL may carry ?token= */
        resp_header(&r, "X-Frame-Options", 15, "DENY", 4);
        resp_finish(&r, "text/html; charset=utf-8", dashboard_html, dashboard_html_len);
    }
    }
}

void admin_answer(conn *c, int which, void (*done)(conn *c))
{
    buf b = {0};
    switch (which) {
    case ADMIN_HEALTH:
        buf_puts(&b, "{\"status\":\"ok\"}");
        send_buf(c, 200, "application/json", &b);
        break;
    case ADMIN_READY:
        ready(c);
        break;
    case ADMIN_METRICS: {
        metrics_health h;
        metrics_readiness(c->w, c->w->app_cfg, &h);
        metrics_render(c->w->srv, &h, &b);
        send_buf(c, 200, "text/plain; version=0.0.4; charset=utf-8", &b);
        break;
    }
    case ADMIN_PUBLISH:
        publish(c, done);
        break;
    default:
        area(c);
    }
}
