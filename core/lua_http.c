/* lua_http.c: the `sluice.http` module: request() and all() park the calling task on the worker's
 * outbound client (httpc.c) until the responses arrive, while the worker serves other requests.
 * Misuse (bad options, no task to park, load time) raises; a failure on the network returns
 * nil, "host: reason", kind. A request task whose client goes away (socket closed, or
 * limits.request_timeout answered 503) cancels what it waits for (checked every 250 ms). Sugar is
 * in lua/sluice.lua. */
#include "lua_http.h"

#include <errno.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "clock.h"
#include "conn.h"
#include "ctx.h"
#include "lua_app.h"
#include "lua_http_int.h"
#include "util.h"

#define CFG_KEY "sluice.config"

/* ---------------------------------------------------------------- per-state context */

enum { S_CA, S_CERT, S_KEY, S_KEYPW, S_PROXY, S_NOPROXY, S_UA, S_COUNT };

/* The module's upvalue (a userdata): config defaults of this Lua state. */
typedef struct hctx {
    appstate *a;
    int res_mt_ref;
    httpc_limits lim;
    httpc_opts def;               /* string fields point into strs */
    char *strs[S_COUNT];
} hctx;

/* A task's pending request(s): one slot per request of request() or all(). */
typedef struct hgroup hgroup;
typedef struct hslot {
    hgroup *g;
    httpc_req *r;
    int idx;
} hslot;

struct hgroup {
    task *t;
    hctx *x;
    int n, pending, many;
    int res_ref, err_ref;         /* all(): the result tables being filled */
    conn *c;                      /* request tasks: the client, checked for going away */
    uint32_t gen;
    int peek;                     /* still worth peeking at the client's socket for end of file */
    int cancelling;               /* hg_cancel ran: the results are being filled in */
    hslot s[];
};

static void hg_cancel(task *t);

static const httpc_limits builtin_limits = {256, 64, 64};   /* as httpc_new(loop, NULL) */


/* ---------------------------------------------------------------- options */

/* ---------------------------------------------------------------- results */

static void push_headers(lua_State *L, const char *h, size_t n)
{
    lua_createtable(L, 0, 8);
    const char *end = h + n;
    while (h < end) {
        const char *eol = memchr(h, '\n', (size_t)(end - h));
        const char *le = eol ? eol : end;
        const char *colon = memchr(h, ':', (size_t)(le - h));
        if (colon && colon > h && colon - h < 256 && *h != ' ' && *h != '\t') {
            char name[256];
            size_t nl = (size_t)(colon - h);
            for (size_t i = 0; i < nl; i++) name[i] = (h[i] >= 'A' && h[i] <= 'Z') ? (char)(h[i] + 32) : h[i];
            const char *v = colon + 1, *ve = le;
            while (v < ve && (*v == ' ' || *v == '\t')) v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t')) ve--;
            int cookie = nl == 10 && memcmp(name, "set-cookie", 10) == 0;
            lua_pushlstring(L, name, nl);
            lua_rawget(L, -2);
            if (cookie) {                 /* never joined: an array of the Set-Cookie values */
                if (lua_isnil(L, -1)) {
                    lua_pop(L, 1);
                    lua_newtable(L);
                    lua_pushlstring(L, name, nl);
                    lua_pushvalue(L, -2);
                    lua_rawset(L, -4);
                }
                lua_pushlstring(L, v, (size_t)(ve - v));
                lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
                lua_pop(L, 1);
            } else {
                if (lua_isnil(L, -1)) {
                    lua_pop(L, 1);
                    lua_pushlstring(L, v, (size_t)(ve - v));
                } else {              /* repeated: joined as RFC 9110 allows */
                    lua_pushliteral(L, ", ");
                    lua_pushlstring(L, v, (size_t)(ve - v));
                    lua_concat(L, 3);
                }
                lua_pushlstring(L, name, nl);
                lua_insert(L, -2);
                lua_rawset(L, -3);
            }
        }
        h = le + 1;
    }
}

static void push_response(lua_State *L, const hctx *x, const httpc_result *r)
{
    lua_createtable(L, 0, 7);
    lua_pushinteger(L, r->status);
    lua_setfield(L, -2, "status");
    lua_pushlstring(L, r->headers, r->headers_len);   /* res.headers is parsed from it on first use */
    lua_setfield(L, -2, "raw_headers");
    lua_pushlstring(L, r->body, r->body_len);
    lua_setfield(L, -2, "body");
    lua_pushnumber(L, r->seconds);
    lua_setfield(L, -2, "time");
    if (r->effective_url) {
        lua_pushstring(L, r->effective_url);
        lua_setfield(L, -2, "url");
    }
    lua_pushstring(L, r->http_version);
    lua_setfield(L, -2, "http_version");
    lua_rawgeti(L, LUA_REGISTRYINDEX, x->res_mt_ref);
    lua_setmetatable(L, -2);
}

/* res:json() -> value | nil, err */
static int l_res_json(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "body");
    if (!lua_isstring(L, -1) || lua_objlen(L, -1) == 0) {
        lua_pushnil(L);
        lua_pushstring(L, "response body is empty");
        return 2;
    }
    lua_getglobal(L, "require");
    lua_pushliteral(L, "cjson.safe");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "decode");
    lua_pushvalue(L, -3);
    lua_call(L, 1, 2);
    if (lua_isnil(L, -2)) {
        lua_pushfstring(L, "invalid JSON in response body: %s", lua_tostring(L, -1));
        lua_remove(L, -2);
        return 2;
    }
    lua_pop(L, 1);
    return 1;
}

/* __index of responses: res.headers (parsed from raw_headers once), res:json() */
static int l_res_index(lua_State *L)
{
    size_t kl;
    const char *k = lua_tolstring(L, 2, &kl);
    if (!k) return 0;
    if (kl == 4 && memcmp(k, "json", 4) == 0) { lua_pushcfunction(L, l_res_json); return 1; }
    if (kl != 7 || memcmp(k, "headers", 7) != 0) return 0;
    lua_getfield(L, 1, "raw_headers");
    size_t n = 0;
    const char *h = lua_tolstring(L, -1, &n);
    push_headers(L, h ? h : "", h ? n : 0);
    lua_pushvalue(L, -1);
    lua_setfield(L, 1, "headers");
    return 1;
}

/* ---------------------------------------------------------------- parking the task */

static void watch_cb(tw_entry *e);

static void group_free(hgroup *g)
{
    task *t = g->t;
    if (t->tmo.cb == watch_cb) tw_entry_cancel(&t->tmo);
    lua_State *co = t->co;
    if (g->res_ref) luaL_unref(co, LUA_REGISTRYINDEX, g->res_ref);
    if (g->err_ref) luaL_unref(co, LUA_REGISTRYINDEX, g->err_ref);
    free(g);
}

/* Records slot i's outcome; the last one resumes the task. */
static void slot_result(hgroup *g, int i, const httpc_result *r, enum httpc_err kind, const char *msg)
{
    task *t = g->t;
    lua_State *co = t->co;
    g->s[i].r = NULL;
    if (!g->many) {
        int n;
        if (r && r->err == HTTPC_OK) { push_response(co, g->x, r); n = 1; }
        else {
            lua_pushnil(co);
            lua_pushstring(co, msg);
            lua_pushstring(co, httpc_err_name(kind));
            n = 3;
        }
        group_free(g);
        task_resume(t, n);
        return;
    }
    lua_rawgeti(co, LUA_REGISTRYINDEX, g->res_ref);
    if (r && r->err == HTTPC_OK) push_response(co, g->x, r);
    else {
        lua_pushboolean(co, 0);
        lua_rawgeti(co, LUA_REGISTRYINDEX, g->err_ref);
        lua_pushstring(co, msg);
        lua_rawseti(co, -2, i + 1);
        lua_pop(co, 1);
    }
    lua_rawseti(co, -2, i + 1);
    lua_pop(co, 1);
    if (--g->pending > 0) return;
    lua_rawgeti(co, LUA_REGISTRYINDEX, g->res_ref);
    lua_rawgeti(co, LUA_REGISTRYINDEX, g->err_ref);
    group_free(g);
    task_resume(t, 2);
}

static void slot_done(void *ud, const httpc_result *r)
{
    hslot *s = ud;
    slot_result(s->g, s->idx, r, r->err, r->errmsg);
}

/* The task will not use the answers: cancel what is in flight and resume it with "cancelled"
 * errors (its own answer goes nowhere; docs/http-client.md). Not a t->cancel hook (those must not
 * resume the task): lua_app.c leaves a task waiting here to this module's watch. */
static void hg_cancel(task *t)
{
    hgroup *g = t->wait;
    if (!g || g->cancelling) return;
    g->cancelling = 1;                    /* once */
    int n = g->n;
    for (int i = 0; i < n; i++) {
        if (!g->s[i].r) continue;
        char msg[200];
        snprintf(msg, sizeof msg, "%s: cancelled (the client went away or limits.request_timeout passed)", httpc_req_host(g->s[i].r));
        httpc_cancel(g->s[i].r);
        g->s[i].r = NULL;
        int last = g->many ? g->pending == 1 : 1;
        slot_result(g, i, NULL, HTTPC_E_CANCELLED, msg);   /* the last one resumes and frees g */
        if (last) return;
    }
}

/* A request task waiting here is checked every WATCH_MS on the worker's timer wheel: detached
 * from its connection (the connection closed, or limits.request_timeout answered 503: t->c is
 * NULL) or its client gone (end of file on the socket, peeked without reading), its outbound
 * requests are cancelled. A timer rather than a second libev watcher on the client's socket:
 * the connection may be closed by the core at any time, and a watcher left on a closed (and
 * reused) descriptor would corrupt the loop. */
#define WATCH_MS 250

static void watch_cb(tw_entry *e)
{
    task *t = container_of(e, task, tmo);
    hgroup *g = t->wait;
    if (!g || g->cancelling) return;
    conn *c = g->c;
    if (t->c != c || c->gen != g->gen || c->closed) { hg_cancel(t); return; }
    if (g->peek) {
        char b;
        ssize_t n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n > 0) g->peek = 0;           /* a pipelined request: end of file cannot be seen now */
        else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            app_conn_gone(c);             /* detach first: the handler's answer goes nowhere */
            conn_close(c);
            hg_cancel(t);
            return;
        }
    }
    worker *w = t->app->w;
    timerwheel_add(w->tw, &t->tmo, worker_now_us(w) / 1000 + WATCH_MS);
}

static int park(lua_State *L, task *t, hgroup *g)
{
    t->wait = g;
    worker *w = t->app->w;
    conn *c = t->c;
    if (t->kind == TASK_REQUEST && c && !c->closed && c->fd >= 0) {
        g->c = c;
        g->gen = t->gen;
        g->peek = 1;
        t->tmo.cb = watch_cb;
        timerwheel_add(w->tw, &t->tmo, worker_now_us(w) / 1000 + WATCH_MS);
    }
    return task_yield(L, t);
}

static hctx *ctx_of(lua_State *L) { return lua_touserdata(L, lua_upvalueindex(1)); }

/* The running task, or raises (load time, a coroutine of the script's own). */
static task *need_task(lua_State *L, hctx *x, const char *fn)
{
    task *t = task_current(x->a, L);
    if (!t || !x->a->w || !x->a->w->httpc)
        luaL_error(L, "app.http.%s: only inside a handler, a timer callback, SSE on_open/on_close or a spec (not at load time)", fn);
    return t;
}

/* httpc_submit's messages for a URL that can never work: misuse, raised. */
static int url_misuse(const char *err) { return strncmp(err, "invalid URL", 11) == 0 || strncmp(err, "unsupported URL", 15) == 0; }

static int abandoned(task *t) { return t->kind == TASK_REQUEST && !t->c; }

/* "host: why" for a request that never went out (host[:port] as written in the URL). */
static void push_unsent(lua_State *L, const char *url, const char *why)
{
    const char *h = strstr(url, "://");
    h = h ? h + 3 : url;
    size_t n = strcspn(h, "/?#");
    const char *at = memchr(h, '@', n);
    if (at) { n -= (size_t)(at + 1 - h); h = at + 1; }
    lua_pushlstring(L, h, n);
    lua_pushfstring(L, ": %s", why);
    lua_concat(L, 2);
}

#define ABANDONED "cancelled (the client went away or limits.request_timeout passed)"

/* request(opts) -> response | nil, "host: reason", kind */
static int l_request(lua_State *L)
{
    hctx *x = ctx_of(L);
    task *t = need_task(L, x, "request");
    preq p;
    if (lua_http_parse_opts(L, 1, &x->def, &p)) { lua_http_opts_free(&p); return luaL_error(L, "%s", p.err); }
    httpc *h = x->a->w->httpc;
    httpc_set_limits(h, &x->lim);
    if (abandoned(t)) {
        lua_pushnil(L);
        push_unsent(L, p.o.url, ABANDONED);
        lua_pushliteral(L, "cancelled");
        lua_http_opts_free(&p);
        return 3;
    }
    hgroup *g = calloc(1, sizeof *g + sizeof(hslot));
    if (!g) { lua_http_opts_free(&p); return luaL_error(L, "out of memory"); }
    g->t = t;
    g->x = x;
    g->n = g->pending = 1;
    g->s[0].g = g;
    char err[300];
    g->s[0].r = httpc_submit(h, &p.o, slot_done, &g->s[0], err, sizeof err);
    if (!g->s[0].r) {
        free(g);
        if (url_misuse(err)) { lua_http_opts_free(&p); return luaL_error(L, "app.http: %s", err); }
        lua_pushnil(L);
        push_unsent(L, p.o.url, err);
        lua_pushstring(L, strstr(err, "shutting down") ? "cancelled" : "other");
        lua_http_opts_free(&p);
        return 3;
    }
    lua_http_opts_free(&p);
    return park(L, t, g);
}

/* all({opts, ...}) -> results, errors: results[i] is the response or false, errors[i] the message */
static int l_all(lua_State *L)
{
    hctx *x = ctx_of(L);
    task *t = need_task(L, x, "all");
    luaL_checktype(L, 1, LUA_TTABLE);
    int n = (int)lua_objlen(L, 1);
    preq p;
    for (int i = 1; i <= n; i++) {                /* misuse anywhere raises before anything is sent */
        lua_rawgeti(L, 1, i);
        int bad = lua_http_parse_opts(L, lua_gettop(L), &x->def, &p);
        lua_http_opts_free(&p);
        lua_pop(L, 1);
        if (bad) return luaL_error(L, "%s (request %d)", p.err, i);
    }
    httpc *h = x->a->w->httpc;
    httpc_set_limits(h, &x->lim);
    lua_createtable(L, n, 0);
    lua_createtable(L, 0, 0);
    if (n == 0) return 2;
    if (abandoned(t)) {
        for (int i = 1; i <= n; i++) {
            lua_pushboolean(L, 0);
            lua_rawseti(L, -3, i);
            lua_rawgeti(L, 1, i);
            lua_getfield(L, -1, "url");
            push_unsent(L, lua_tostring(L, -1), ABANDONED);
            lua_rawseti(L, -4, i);
            lua_pop(L, 2);
        }
        return 2;
    }
    hgroup *g = calloc(1, sizeof *g + (size_t)n * sizeof(hslot));
    if (!g) return luaL_error(L, "out of memory");
    g->t = t;
    g->x = x;
    g->n = g->pending = n;
    g->many = 1;
    g->err_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    g->res_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    for (int i = 0; i < n; i++) {
        g->s[i].g = g;
        g->s[i].idx = i;
        lua_rawgeti(L, 1, i + 1);
        lua_http_parse_opts(L, lua_gettop(L), &x->def, &p);
        lua_pop(L, 1);
        char err[300];
        g->s[i].r = httpc_submit(h, &p.o, slot_done, &g->s[i], err, sizeof err);
        if (g->s[i].r) { lua_http_opts_free(&p); continue; }
        if (url_misuse(err)) {                    /* raise, taking back what already went out */
            lua_http_opts_free(&p);
            for (int k = 0; k < i; k++) if (g->s[k].r) httpc_cancel(g->s[k].r);
            group_free(g);
            return luaL_error(L, "app.http: %s (request %d)", err, i + 1);
        }
        lua_rawgeti(L, LUA_REGISTRYINDEX, g->res_ref);   /* recorded now: the task has not yielded yet */
        lua_pushboolean(L, 0);
        lua_rawseti(L, -2, i + 1);
        lua_rawgeti(L, LUA_REGISTRYINDEX, g->err_ref);
        push_unsent(L, p.o.url, err);
        lua_rawseti(L, -2, i + 1);
        lua_pop(L, 2);
        lua_http_opts_free(&p);
        g->pending--;
    }
    if (g->pending == 0) {                        /* nothing went out */
        lua_rawgeti(L, LUA_REGISTRYINDEX, g->res_ref);
        lua_rawgeti(L, LUA_REGISTRYINDEX, g->err_ref);
        group_free(g);
        return 2;
    }
    return park(L, t, g);
}

/* test helpers: the spec instance's port (nil outside `sluice test`) */
static int l_test_port(lua_State *L)
{
    hctx *x = ctx_of(L);
    worker *w = x->a->w;
    if (!w || !w->test_mode || !w->test_port) return 0;
    lua_pushinteger(L, w->test_port);
    return 1;
}

static int l_test_mode(lua_State *L)
{
    hctx *x = ctx_of(L);
    lua_pushboolean(L, x->a->w && x->a->w->test_mode);
    return 1;
}

/* response(t): gives a table the response metatable (res:json()), for mocked responses. */
static int l_response(lua_State *L)
{
    hctx *x = ctx_of(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, x->res_mt_ref);
    lua_setmetatable(L, 1);
    return 1;
}

/* ---------------------------------------------------------------- module */

static int ctx_gc(lua_State *L)
{
    hctx *x = lua_touserdata(L, 1);
    for (int i = 0; i < S_COUNT; i++) { free(x->strs[i]); x->strs[i] = NULL; }
    return 0;
}

static double cfg_num(lua_State *L, int t, const char *k, double def)
{
    lua_getfield(L, t, k);
    double v = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : def;
    lua_pop(L, 1);
    return v;
}

static int cfg_bool(lua_State *L, int t, const char *k, int def)
{
    lua_getfield(L, t, k);
    int v = lua_isboolean(L, -1) ? lua_toboolean(L, -1) : def;
    lua_pop(L, 1);
    return v;
}

static char *cfg_str(lua_State *L, int t, const char *k, const char *def)
{
    lua_getfield(L, t, k);
    const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : def;
    char *r = s ? strdup(s) : NULL;
    lua_pop(L, 1);
    return r;
}

/* Defaults from config.lua's http_client (normalized by lua/config.lua; see docs/config.md). */
static void ctx_configure(lua_State *L, hctx *x)
{
    lua_getfield(L, LUA_REGISTRYINDEX, CFG_KEY);
    if (lua_istable(L, -1)) lua_getfield(L, -1, "http_client");
    else lua_pushnil(L);
    if (!lua_istable(L, -1)) { lua_pop(L, 1); lua_newtable(L); }
    int t = lua_gettop(L);
    x->lim.max_concurrent = (int)cfg_num(L, t, "max_concurrent", builtin_limits.max_concurrent);
    x->lim.max_per_host = (int)cfg_num(L, t, "max_per_host", builtin_limits.max_per_host);
    x->lim.max_idle = (int)cfg_num(L, t, "max_idle", builtin_limits.max_idle);
    httpc_opts *d = &x->def;
    d->timeout = cfg_num(L, t, "timeout", 10);
    d->connect_timeout = cfg_num(L, t, "connect_timeout", 3);
    d->queue_timeout = cfg_num(L, t, "queue_timeout", 5);
    d->max_body = (size_t)cfg_num(L, t, "max_body", 10485760);
    d->follow_redirects = cfg_bool(L, t, "follow_redirects", 0);
    d->max_redirects = (int)cfg_num(L, t, "max_redirects", 5);
    d->verify_tls = cfg_bool(L, t, "verify_tls", 1);
    d->decompress = cfg_bool(L, t, "decompress", 1);
    static const char *const keys[S_COUNT] = {"ca_file", "client_cert", "client_key", "key_password", "proxy", "no_proxy", "user_agent"};
    for (int i = 0; i < S_COUNT; i++) x->strs[i] = cfg_str(L, t, keys[i], i == S_UA ? "sluice" : NULL);
    d->ca_file = x->strs[S_CA];
    d->client_cert = x->strs[S_CERT];
    d->client_key = x->strs[S_KEY];
    d->key_password = x->strs[S_KEYPW];
    d->proxy = x->strs[S_PROXY];
    d->no_proxy = x->strs[S_NOPROXY];
    d->user_agent = x->strs[S_UA];
    lua_pop(L, 2);
}

void lua_http_preload(lua_State *L, appstate *a)
{
    lua_pushlightuserdata(L, a);
    lua_pushcclosure(L, luaopen_sluice_http, 1);
    lua_setfield(L, -2, "sluice.http");
}

int luaopen_sluice_http(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"request", l_request}, {"all", l_all}, {"test_port", l_test_port}, {"test_mode", l_test_mode},
        {"response", l_response}, {NULL, NULL},
    };
    appstate *a = lua_touserdata(L, lua_upvalueindex(1));
    lua_newtable(L);
    hctx *x = lua_newuserdata(L, sizeof *x);
    memset(x, 0, sizeof *x);
    x->a = a;
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, ctx_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    ctx_configure(L, x);
    lua_createtable(L, 0, 1);             /* metatable of responses: res.headers, res:json() */
    lua_pushcfunction(L, l_res_index);
    lua_setfield(L, -2, "__index");
    x->res_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    luaL_setfuncs(L, fns, 1);             /* upvalue: the context userdata (kept alive by the closures) */
    return 1;
}
