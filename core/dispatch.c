/* dispatch.c: a complete request goes to a built-in endpoint, the rate limiter, then the router and Lua. */
#include "dispatch.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "admin.h"
#include "clock.h"
#include "conn.h"
#include "ctx.h"
#include "limiter.h"
#include "log.h"
#include "lua_app.h"
#include "metrics.h"
#include "response.h"
#include "routestats.h"
#include "ssestream.h"
#include "web.h"

static void write_access_log(conn *c, const sconfig *cfg, uint64_t us) __attribute__((noinline));

/* Every answered request: its metrics, then the access log line when it is on (a function of
 * its own, so the usual path does not set up the line's 2 KB stack frame). */
static void access_log(conn *c)
{
    worker *w = c->w;
    const sconfig *cfg = w->app_cfg;
    uint64_t real = mono_us();                              /* the one uncached clock read */
    uint64_t end = real + w->vclock_offset_us;
    uint64_t us = end > c->req_start_us ? end - c->req_start_us : 0;
    metrics_observe(w, c->mroute, c->mmethod, c->status, us, real / 1000000u);
    if (cfg->access_log) write_access_log(c, cfg, us);
}

static void write_access_log(conn *c, const sconfig *cfg, uint64_t us)
{
    worker *w = c->w;
    char line[2048];
    int n;
    const http_req *r = &c->req;
    int ul = (int)(r->url_len > 1000 ? 1000 : r->url_len);
    worker_update_date(w);
    if (cfg->access_log == 2) {        /* one JSON object, the same shape as log.format = "json" lines */
        char t[LOG_TIME_LEN];
        log_time_iso(t);
        n = snprintf(line, sizeof line,
                     "{\"time\":\"%s\",\"level\":\"info\",\"msg\":\"access\",\"request_id\":\"%s\",\"ip\":\"%s\","
                     "\"method\":\"%s\",\"url\":\"",
                     t, c->reqid, c->ip, http_method_str((enum http_method)r->method));
        n += (int)log_json_escape(line + n, sizeof line - (size_t)n - 400, http_req_url(r), (size_t)ul);
        n += snprintf(line + n, sizeof line - (size_t)n, "\",\"status\":%d,\"bytes\":%zu,\"ms\":%.3f,\"trace_id\":\"%s\"",
                      c->status, c->resp_bytes, (double)us / 1000.0, web_trace(c)->trace_id);
        if (c->route) {
            n += snprintf(line + n, sizeof line - (size_t)n, ",\"route\":\"");
            n += (int)log_json_escape(line + n, sizeof line - (size_t)n - 4, c->route, strlen(c->route));
            line[n++] = '"';
        }
        line[n++] = '}';
        line[n++] = '\n';
    } else {
        n = snprintf(line, sizeof line, "%s [%s] \"%s %.*s HTTP/%d.%d\" %d %zu %.3fms\n", c->ip, w->date,
                     http_method_str((enum http_method)r->method), ul, http_req_url(r), r->http_major,
                     r->http_minor, c->status, c->resp_bytes, (double)us / 1000.0);
    }
    if (n > (int)sizeof line - 1) n = (int)sizeof line - 1;
    log_raw(line, (unsigned long)n);
}

/* The one way a request ends, whatever answered it (a built-in, a static file, an error, the
 * handler, an SSE admission or refusal, limits.request_timeout): its metrics and access-log line,
 * then the connection's bookkeeping. An admitted stream (CS_SSE) takes the socket
 * (ssestream_admitted: the connection is parked, its request gone; app_sse_end runs the
 * handler's on_close when the stream ends); any other request goes to keep-alive or closing.
 * async: the answer came after dispatch_request returned (the connection waited in CS_HANDLING),
 * so the connection's pipeline goes on from here. */
static void request_end(conn *c, int async)
{
    access_log(c);
    if (c->state == CS_SSE) ssestream_admitted(c, app_sse_end);
    else conn_request_done(c);
    if (async && !c->closed && !c->task) conn_resume(c);   /* (a no-op once a stream parked c) */
}

/* What a request's path resolves to: a built-in endpoint, a route, or neither. */
typedef struct match {
    int builtin, rm, np;
    unsigned allowed;
    const route_target *t;
    router_param ps[ROUTER_MAX_PARAMS];
} match;

/* The metrics label of what a request matched: built-in endpoints have fixed ids; a route's id
 * is looked up once per route target (the router belongs to this worker's state, so the write
 * is single-threaded) and then read from the target. */
static void label_request(conn *c, const match *m)
{
    static const uint16_t builtin_ids[] = {[ADMIN_HEALTH] = RS_HEALTH, [ADMIN_READY] = RS_READY,
                                           [ADMIN_METRICS] = RS_METRICS, [ADMIN_AREA] = RS_ADMIN,
                                           [ADMIN_PUBLISH] = RS_PUBLISH};
    c->mmethod = (uint8_t)(m->rm >= 0 ? m->rm : RS_METHODS - 1);
    if (m->builtin) { c->mroute = builtin_ids[m->builtin]; return; }
    if (!m->t) { c->mroute = RS_UNMATCHED; return; }
    unsigned *id = router_label_slot(m->t);
    if (!*id) *id = metrics_route_id(c->w->srv, router_pattern(m->t));
    c->mroute = (uint16_t)*id;
}

static void match_request(conn *c, match *m)
{
    worker *w = c->w;
    const char *path = http_req_url(&c->req);
    size_t plen = c->req.path_len;
    m->builtin = admin_match(w->app_cfg, path, plen);
    m->rm = router_method(c->req.method);
    m->np = 0;
    m->allowed = 0;
    m->t = NULL;
    if (!m->builtin && m->rm >= 0) m->t = router_match(w->app->rt, m->rm, path, plen, m->ps, &m->np, &m->allowed);
    c->route = m->t ? router_pattern(m->t) : NULL;
    label_request(c, m);
}

static void handler_done(task *t, int st, const char *etext);

/* The request after its rate-limit decision (limited: 0 no policy, 1 admitted, -1 rejected). */
static void dispatch_routed(conn *c, match *mt, int limited, const limiter_verdict *lvp)
{
    worker *w = c->w;
    appstate *a = w->app;
    const char *path = http_req_url(&c->req);
    size_t plen = c->req.path_len;
    int builtin = mt->builtin, rm = mt->rm, np = mt->np;
    unsigned allowed = mt->allowed;
    const route_target *t = mt->t;
    router_param *ps = mt->ps;
    limiter_verdict lv = *lvp;
    (void)plen;
    if (limited < 0) {           /* rejected: 429 already queued */
        request_end(c, 0);
        return;
    }
    if (builtin) {
        admin_answer(c, builtin, dispatch_async_done);
        if (c->state == CS_HANDLING) return;   /* answered later (the publish endpoint waits for Redis) */
        request_end(c, 0);
        return;
    }
    if (!t) {
        if (allowed && rm == RM_OPTIONS) {
            resp rs;
            resp_begin(&rs, c, 204);
            char allow[128] = "";
            static const char *names[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"};
            if (allowed & 1) allowed |= 2;
            for (int i = 0; i < RM_ANY; i++)
                if (allowed & (1u << i)) { if (allow[0]) strcat(allow, ", "); strcat(allow, names[i]); }
            resp_header(&rs, "Allow", 5, allow, strlen(allow));
            resp_finish(&rs, NULL, "", 0);
        } else if (allowed) {
            resp_error(c, 405, "method not allowed", 0);
        } else {
            resp_error(c, 404, "not found", 0);
        }
        request_end(c, 0);
        return;
    }
    if (t->kind == 2) {          /* app.static mount: the rest of the path after the prefix */
        const static_mount *m = t->data;
        const char *rest = np ? ps[np - 1].val - 1 : path + plen;
        size_t rl = np ? ps[np - 1].vlen + 1 : 0;
        web_static_serve(c, m, rest, rl);
        request_end(c, 0);
        return;
    }
    c->lv = limited ? lv : (limiter_verdict){0};
    c->has_lv = limited != 0;
    c->in_dispatch = 1;
    if (app_handle(a, c, t, ps, np, handler_done)) {
        c->in_dispatch = 0;
        resp_error(c, 503, "out of memory", 1);
        request_end(c, 0);
        return;
    }
    c->in_dispatch = 0;
    if (c->task && !c->closed) {           /* suspended: wait for the database, a sleep, ... */
        c->state = CS_HANDLING;
        double left = w->app_cfg->request_timeout - (double)(worker_now_us(w) - c->req_start_us) / 1e6;
        conn_set_timeout(c, TMO_HANDLER, left > 0 ? left : 0);
    }
}

/* The Redis rate-limit verdict arrived (limiter_check_async returned 2): continue the request
 * where dispatch_request left it, then the connection's pipeline. */
static void dispatch_limit_done(conn *c, int rc)
{
    match m;
    limiter_verdict lv = c->lv;
    c->state = CS_READING;
    match_request(c, &m);              /* again: a reload may have swapped the routes meanwhile */
    dispatch_routed(c, &m, rc, &lv);
    if (!c->closed && !c->task) conn_resume(c);
}

void dispatch_request(conn *c)
{
    worker *w = c->w;
    atomic_fetch_add_explicit(&w->requests, 1, memory_order_relaxed);
    c->gen++;
    if (!c->req_start_us) c->req_start_us = worker_now_us(w);
    const http_req *r = &c->req;
    const char *path = http_req_url(r);
    size_t plen = r->path_len;

    web_request_id(c);
    c->route = NULL;
    c->mroute = RS_UNMATCHED;    /* until matched (a CORS preflight is answered before routing) */
    c->mmethod = RS_METHODS - 1;
    if (web_cors(c) < 0) {       /* preflight answered */
        request_end(c, 0);
        return;
    }
    match m;
    match_request(c, &m);

    /* SSE streams are never counted against rate limits */
    limiter_verdict lv;
    int limited = (m.t && m.t->kind == 1) ? 0 : limiter_check_async(c, path, plen, &lv, dispatch_limit_done);
    if (limited == 2) return;          /* Redis decides; dispatch_limit_done continues */
    dispatch_routed(c, &m, limited, &lv);
}

/* A handler's error in the error log, with the request's id, route and trace in JSON mode and the
 * Lua "file:line" of the message as src. */
static void log_request_error(conn *c, const char *route, const char *err)
{
    if (!log_enabled(LOG_ERROR)) return;
    char msg[6144];
    int n = snprintf(msg, sizeof msg, "%s %.*s: %s", http_method_str((enum http_method)c->req.method), (int)c->req.path_len,
                     route, err);
    if (n < 0) return;
    if ((size_t)n >= sizeof msg) n = (int)sizeof msg - 1;
    log_ctx lc = {0};
    char src[256];
    if (log_json()) {
        lc.reqid = c->reqid;
        lc.route = c->route;
        lc.trace_id = web_trace(c)->trace_id;
        size_t sl = strcspn(err, " \n");      /* "scripts/app.lua:12: boom" */
        if (sl > 1 && sl < sizeof src && err[sl - 1] == ':' && err[sl] == ' ') {
            memcpy(src, err, sl - 1);
            src[sl - 1] = 0;
            if (strchr(src, ':')) lc.src = src;
        }
    }
    log_event(LOG_ERROR, &lc, msg, (size_t)n);
}

static void add_limit_headers(resp *r, void *ud)
{
    conn *c = ud;
    if (c->has_lv) limiter_headers(r, &c->lv);
}

/* ssestream_start's done: Redis's admission decided (admitted, or refused). */
static void sse_admission_done(conn *c) { request_end(c, 1); }

/* A request's handler task ended (app_handle's on_done): answer it. */
static void task_done(conn *c, task *t, int st, const char *etext)
{
    appstate *a = t->app;
    worker *w = c->w;
    int was_async = !c->in_dispatch;
    char ebuf[512];
    const char *err = NULL;
    if (st != 0) {
        err = etext;
    } else if (t->route_kind == 1) {
        ssestream_accept acc;
        int rc = app_sse_result(a, c, t->co, &acc, ebuf, sizeof ebuf);
        if (rc == 1) atomic_fetch_add_explicit(&w->sse_refused_handler, 1, memory_order_relaxed);
        else if (rc < 0) err = ebuf;
        else if ((rc = ssestream_start(c, &acc, sse_admission_done)) > 0) {   /* admitted now, or once Redis says so */
            atomic_fetch_add_explicit(&w->sse_subscribes, 1, memory_order_relaxed);
            app_sse_opened(t, c);        /* on_open runs; on_close is kept for app_sse_end */
            if (rc == 2) return;         /* sse_admission_done ends the request */
            request_end(c, was_async);   /* logged, then the stream takes the socket */
            return;
        }
    } else {
        err = app_write_result(a, c, t->co, ebuf, sizeof ebuf, add_limit_headers, c);
    }
    if (err) {
        const char *route = http_req_url(&c->req);
        int client_error = st != 0 && t->err_status >= 400 && t->err_status < 500;   /* app.error(4xx) */
        if (!client_error) {
            char logged[sizeof ebuf + 300];
            const char *lm = err;
            if (st == 0) {         /* the value could not be sent: the log says which handler returned it */
                char where[256];
                app_task_where(t, where, sizeof where);
                snprintf(logged, sizeof logged, "%s: %s", where, err);
                lm = logged;
            }
            log_request_error(c, route, lm);
            metrics_error(w, c, lm);
        }
        if (client_error && app_write_error_fields(c, t, err)) {
            /* app.error(422, { field = "message" }): answered with the fields */
        } else if (st != 0 && t->err_status >= 400 && t->err_status <= 599) {
            char first[400];
            const char *nl = strchr(err, '\n');
            snprintf(first, sizeof first, "%.*s", (int)(nl ? nl - err : (long)strlen(err)), err);
            resp_error(c, t->err_status, w->app_cfg->production && t->err_status >= 500 ? "service unavailable, retry later" : first, 0);
        } else if (w->app_cfg->production) {
            resp_error(c, 500, "internal server error", 0);
        } else {
            char first[400];
            const char *nl = strchr(err, '\n');
            snprintf(first, sizeof first, "%.*s", (int)(nl ? nl - err : (long)strlen(err)), err);
            resp_error(c, 500, first, 0);
        }
    }
    request_end(c, was_async);
}

static void handler_done(task *t, int st, const char *etext)
{
    if (t->c) task_done(t->c, t, st, etext);   /* NULL: the request was answered without it */
}

void dispatch_async_done(conn *c) { request_end(c, 1); }

void dispatch_timeout(conn *c)
{
    if (c->state == CS_HANDLING) {
        app_conn_gone(c);           /* the handler's late answer is dropped */
        resp_error(c, 503, "request timed out: the handler did not answer within request_timeout", 1);
        log_msg(LOG_WARN, "%.*s: handler exceeded request_timeout", (int)c->req.path_len, http_req_url(&c->req));
        request_end(c, 0);
        c->state = CS_CLOSING;
        conn_flush(c);
        if (!c->closed) conn_set_timeout(c, TMO_IDLE, 1);
        return;
    }
    conn_close(c);
}

static void dispatch_conn_gone(conn *c)
{
    app_conn_gone(c);
    limiter_conn_gone(c);
    if (c->sse) ssestream_stop(c);
    app_sse_conn_gone(c);        /* a stream that never took the socket: its on_close runs now */
}

/* ---------------------------------------------------------------- the HTTP connection */

/* A request that cannot be read gets the core's error body; the connection closes after it. */
static void bad_request(conn *c, int status, const char *msg)
{
    resp_error(c, status, msg, 1);
}

/* What conn.c does with an HTTP connection's events (worker_setup installs it as every accepted
 * connection's c->ops). */
const conn_ops dispatch_http_ops = {
    .on_request = dispatch_request,
    .on_bad_request = bad_request,
    .on_timeout = dispatch_timeout,
    .on_close = dispatch_conn_gone,
    .on_response_headers = web_response_headers,
};
