/* admin.c: /health, /ready, /metrics, the token-guarded admin area and the HTTP publish endpoint. */
#include "admin.h"

#include <arpa/inet.h>
#include <lauxlib.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "dashboard.h"
#include "health.h"
#include "json.h"
#include "lua_app.h"
#include "lua_db.h"
#include "metrics.h"
#include "sse.h"

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

/* Constant-time comparison of "Bearer <token>" against the configured token. */
static int bearer_ok(const conn *c, const char *token)
{
    size_t n;
    const char *v = http_req_header(&c->req, "authorization", &n);
    if (!v || n < 7 || strncasecmp(v, "Bearer ", 7) != 0) return 0;
    v += 7;
    n -= 7;
    size_t tl = strlen(token);
    unsigned diff = (unsigned)(n ^ tl);
    for (size_t i = 0; i < n; i++) diff |= (unsigned char)v[i] ^ (unsigned char)token[i % (tl ? tl : 1)];
    return diff == 0 && tl > 0;
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
    health_check(c->w, c->w->app_cfg, &h);            /* health.c: draining and health.ready_requires */
    const char *reason = h.reason;
    buf b = {0};
    if (reason) buf_printf(&b, "{\"status\":\"not ready\",\"reason\":\"%s\"}", reason);
    else buf_puts(&b, "{\"status\":\"ready\"}");
    send_buf(c, reason ? 503 : 200, "application/json", &b);
}

/* POST <publish_path> {"channel":..,"event":..,"data":..} with the publish token. */
static void publish(conn *c)
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
    const char *err = NULL;
    uint64_t eid = sse_hub_publish(w->srv->ssehub, ch, chl, ev, data ? data : "", dl, id, -1,
                                   worker_now_us(w) / 1000, &err);
    lua_settop(L, top);
    if (!eid) { resp_error(c, 400, err ? err : "publish rejected", 0); return; }
    buf b = {0};
    buf_printf(&b, "{\"id\":%llu}", (unsigned long long)eid);
    send_buf(c, 201, "application/json", &b);
}

static void area(conn *c)
{
    worker *w = c->w;
    const sconfig *cfg = w->app_cfg;
    if (cfg->admin_loopback_only && !is_loopback(c)) { resp_error(c, 404, "not found", 0); return; }
    if (cfg->admin_token && !bearer_ok(c, cfg->admin_token)) {
        /* the dashboard page may pass the token as ?token= so a browser can open it */
        const char *url = http_req_url(&c->req);
        const char *q = strstr(url, "token=");
        size_t tl = strlen(cfg->admin_token);
        if (!q || strncmp(q + 6, cfg->admin_token, tl) != 0 || (q[6 + tl] && q[6 + tl] != '&')) {
            resp_error(c, 401, "admin area requires Authorization: Bearer <admin.token>", 0);
            return;
        }
    }
    const char *p = http_req_url(&c->req) + 8;
    size_t n = c->req.path_len - 8;
    buf b = {0};
    if ((n == 7 && memcmp(p, "/status", 7) == 0)) {
        metrics_health h;
        health_check(w, w->app_cfg, &h);
        metrics_status_json(w->srv, &h, &b);
        send_buf(c, 200, "application/json", &b);
    } else if (n == 7 && memcmp(p, "/reload", 7) == 0) {
        if (c->req.method != HTTP_POST) { resp_error(c, 405, "method not allowed: use POST", 0); return; }
        server_request_reload(w->srv);
        buf_puts(&b, "{\"status\":\"reload requested\",\"see\":\"/_sluice/status\"}");
        send_buf(c, 202, "application/json", &b);
    } else if (n <= 1 || (n == 10 && memcmp(p, "/dashboard", 10) == 0)) {
        buf_append(&b, dashboard_html, dashboard_html_len);
        send_buf(c, 200, "text/html; charset=utf-8", &b);
    } else {
        resp_error(c, 404, "not found", 0);
    }
}

void admin_answer(conn *c, int which)
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
        health_check(c->w, c->w->app_cfg, &h);
        metrics_render(c->w->srv, &h, &b);
        send_buf(c, 200, "text/plain; version=0.0.4; charset=utf-8", &b);
        break;
    }
    case ADMIN_PUBLISH:
        publish(c);
        break;
    default:
        area(c);
    }
}
