/* lua_core.c: the `sluice.core` module: C primitives behind lua/sluice.lua (routes, request
 * fields, publish, sleep, timers, logging). Misuse raises; runtime failures return nil, msg. */
#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <limits.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clientip.h"
#include "clock.h"
#include "conn.h"
#include "ctx.h"
#include "json.h"
#include "limiter.h"
#include "log.h"
#include "lua_app.h"
#include "lua_cache.h"
#include "rbus.h"
#include "sse.h"
#include "web.h"

static appstate *app_of(lua_State *L) { return lua_touserdata(L, lua_upvalueindex(1)); }

/* core.route(method, pattern, fn [, "sse"]) */
static int l_route(lua_State *L)
{
    appstate *a = app_of(L);
    const char *m = luaL_checkstring(L, 1);
    const char *pat = luaL_checkstring(L, 2);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    int kind = lua_isstring(L, 4) && strcmp(lua_tostring(L, 4), "sse") == 0;
    int rm = router_method_name(m);
    if (rm < 0) return luaL_argerror(L, 1, "unknown method (GET, POST, PUT, PATCH, DELETE, OPTIONS, HEAD or *)");
    lua_pushvalue(L, 3);
    route_target t = {luaL_ref(L, LUA_REGISTRYINDEX), kind, NULL};
    char err[256];
    if (router_add(a->rt, rm, pat, t, err, sizeof err)) {
        luaL_unref(L, LUA_REGISTRYINDEX, t.ref);
        return luaL_error(L, "%s", err);
    }
    return 0;
}

static int l_config(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, "sluice.config");
    return 1;
}

/* The connection behind a request table, or NULL when the request is over. */
static conn *req_conn(lua_State *L, int t)
{
    lua_rawgeti(L, t, 1);
    conn *c = lua_touserdata(L, -1);
    lua_rawgeti(L, t, 2);
    uint32_t gen = (uint32_t)lua_tonumber(L, -1);
    lua_pop(L, 2);
    if (!c || c->gen != gen || c->closed) return NULL;
    return c;
}

static void push_headers(lua_State *L, const http_req *r)
{
    lua_createtable(L, 0, (int)r->nheaders);
    for (unsigned i = 0; i < r->nheaders; i++) {
        const http_header *h = &r->headers[i];
        lua_pushlstring(L, http_hname(r, h), h->nlen);
        lua_rawget(L, -2);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            lua_pushlstring(L, http_hname(r, h), h->nlen);
            lua_pushlstring(L, http_hvalue(r, h), h->vlen);
        } else {       /* repeated header: join as the RFC allows (cookies with "; ") */
            int cookie = h->nlen == 6 && memcmp(http_hname(r, h), "cookie", 6) == 0;
            lua_pushstring(L, cookie ? "; " : ", ");
            lua_pushlstring(L, http_hvalue(r, h), h->vlen);
            lua_concat(L, 3);
            lua_pushlstring(L, http_hname(r, h), h->nlen);
            lua_insert(L, -2);
        }
        lua_rawset(L, -3);
    }
}

/* Decodes a=b&c=d into a table; repeated keys become arrays. */
static void push_form(lua_State *L, const char *s, size_t n)
{
    lua_newtable(L);
    char *tmp = malloc(n + 1);
    if (!tmp) return;
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && s[j] != '&') j++;
        if (j > i) {
            memcpy(tmp, s + i, j - i);
            char *eq = memchr(tmp, '=', j - i);
            size_t kl = eq ? (size_t)(eq - tmp) : j - i;
            size_t vl = eq ? j - i - kl - 1 : 0;
            long dk = http_urldecode(tmp, kl, 1);
            long dv = eq ? http_urldecode(eq + 1, vl, 1) : 0;
            if (dk > 0 && dv >= 0) {
                lua_pushlstring(L, tmp, (size_t)dk);
                lua_pushvalue(L, -1);
                lua_rawget(L, -3);
                if (lua_isnil(L, -1)) {
                    lua_pop(L, 1);
                    lua_pushlstring(L, eq ? eq + 1 : "", (size_t)dv);
                } else if (lua_istable(L, -1)) {
                    lua_pushlstring(L, eq ? eq + 1 : "", (size_t)dv);
                    lua_rawseti(L, -2, (int)lua_objlen(L, -2) + 1);
                } else {
                    lua_createtable(L, 2, 0);
                    lua_insert(L, -2);
                    lua_rawseti(L, -2, 1);
                    lua_pushlstring(L, eq ? eq + 1 : "", (size_t)dv);
                    lua_rawseti(L, -2, 2);
                }
                lua_rawset(L, -3);
            }
        }
        i = j + 1;
    }
    free(tmp);
}

static void push_cookies(lua_State *L, const http_req *r)
{
    lua_newtable(L);
    size_t n;
    const char *v = http_req_header(r, "cookie", &n);
    if (!v) return;
    const char *end = v + n;
    while (v < end) {
        while (v < end && (*v == ' ' || *v == ';')) v++;
        const char *semi = memchr(v, ';', (size_t)(end - v));
        const char *e = semi ? semi : end;
        const char *eq = memchr(v, '=', (size_t)(e - v));
        if (eq && eq > v) {
            const char *val = eq + 1, *vend = e;
            while (vend > val && vend[-1] == ' ') vend--;
            if (vend - val >= 2 && *val == '"' && vend[-1] == '"') { val++; vend--; }
            lua_pushlstring(L, v, (size_t)(eq - v));
            lua_pushvalue(L, -1);
            lua_rawget(L, -3);
            if (lua_isnil(L, -1)) {          /* first one wins, as browsers send the most specific first */
                lua_pop(L, 1);
                lua_pushlstring(L, val, (size_t)(vend - val));
                lua_rawset(L, -3);
            } else {
                lua_pop(L, 2);
            }
        }
        v = e + 1;
    }
}

static int l_req_json(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "body");
    if (!lua_isstring(L, -1) || lua_objlen(L, -1) == 0) {
        lua_pushnil(L);
        lua_pushstring(L, "request body is empty");
        return 2;
    }
    lua_getglobal(L, "require");
    lua_pushstring(L, "cjson.safe");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "decode");
    lua_pushvalue(L, -3);
    lua_call(L, 1, 2);
    if (lua_isnil(L, -2)) {
        lua_pushfstring(L, "invalid JSON in request body: %s", lua_tostring(L, -1));
        lua_remove(L, -2);
        return 2;
    }
    lua_pop(L, 1);
    return 1;
}

/* __index of request tables: computes headers, query, body, ... on first use and caches. */
static int l_req_index(lua_State *L)
{
    size_t kl;
    const char *k = lua_tolstring(L, 2, &kl);
    if (!k) return 0;
    if (strcmp(k, "json") == 0) { lua_pushcfunction(L, l_req_json); return 1; }
    if (strcmp(k, "multipart") == 0) { lua_pushcfunction(L, web_lua_multipart); return 1; }
    conn *c = req_conn(L, 1);
    if (!c) {
        if (strcmp(k, "params") == 0 || strcmp(k, "headers") == 0 || strcmp(k, "query") == 0 || strcmp(k, "cookies") == 0) {
            lua_newtable(L);
            return 1;
        }
        return 0;
    }
    const http_req *r = &c->req;
    if (strcmp(k, "headers") == 0) push_headers(L, r);
    else if (strcmp(k, "params") == 0) lua_newtable(L);
    else if (strcmp(k, "query") == 0) {
        const char *url = http_req_url(r);
        size_t ql = r->url_len > r->path_len ? r->url_len - r->path_len - 1 : 0;
        push_form(L, url + r->path_len + 1, ql);
    } else if (strcmp(k, "body") == 0) lua_pushlstring(L, r->body.data ? r->body.data : "", r->body.len);
    else if (strcmp(k, "form") == 0) {
        size_t n;
        const char *ct = http_req_header(r, "content-type", &n);
        if (ct && strncasecmp(ct, "application/x-www-form-urlencoded", 33) == 0) push_form(L, r->body.data ? r->body.data : "", r->body.len);
        else lua_newtable(L);
    } else if (strcmp(k, "cookies") == 0) push_cookies(L, r);
    else if (strcmp(k, "ip") == 0) lua_pushstring(L, limiter_client_ip(c));
    else if (strcmp(k, "url") == 0) lua_pushlstring(L, http_req_url(r), r->url_len);
    else if (strcmp(k, "id") == 0) lua_pushstring(L, c->reqid);
    else if (!web_lua_req_field(L, c, k)) return 0;     /* trace_id, span_id, traceparent, route */
    lua_pushvalue(L, 2);
    lua_pushvalue(L, -2);
    lua_rawset(L, 1);
    return 1;
}

/* core.publish(channel, data, event, id, retry) -> id | nil, err [, code] */
static int l_publish(lua_State *L)
{
    appstate *a = app_of(L);
    size_t chl, dl = 0;
    const char *ch = luaL_checklstring(L, 1, &chl);
    const char *data = luaL_optlstring(L, 2, "", &dl);
    const char *ev = luaL_optstring(L, 3, NULL);
    const char *id = luaL_optstring(L, 4, NULL);
    int retry = (int)luaL_optinteger(L, 5, -1);
    if (!a->w || !a->w->srv->ssehub) { lua_pushnil(L); lua_pushstring(L, "SSE is not running"); return 2; }
    /* the one publish path (ssebus.c): with Redis every instance, this one too, delivers the
     * event under one global id and the task waits for it; Redis down: nil, message, "unreachable" */
    return lua_cache_publish(L, a, ch, chl, data, dl, ev, id, retry);
}

static int l_sleep(lua_State *L)
{
    double s = luaL_checknumber(L, 1);
    if (s < 0) return luaL_argerror(L, 1, "must be >= 0");
    return app_sleep(L, s);
}

static int l_timer(lua_State *L)
{
    double s = luaL_checknumber(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    if (s < 0) return luaL_argerror(L, 1, "must be >= 0");
    return app_timer_new(L, app_of(L), s, 2, lua_toboolean(L, 3));
}

/* core.log(level, message) */
static int l_log(lua_State *L)
{
    int lvl = log_level_parse(luaL_checkstring(L, 1));
    if (lvl < 0) return luaL_argerror(L, 1, "level must be debug, info, warn or error");
    lua_Debug ar;
    const char *src = "?";
    int line = 0;
    if (lua_getstack(L, 2, &ar) && lua_getinfo(L, "Sl", &ar)) { src = ar.short_src; line = ar.currentline; }
    log_msg(lvl, "%s:%d: %s", src, line, luaL_checkstring(L, 2));
    return 0;
}

/* core.now() -> seconds of the worker's monotonic (or virtual) clock */
static int l_now(lua_State *L)
{
    appstate *a = app_of(L);
    struct timespec ts;
    if (a->w) lua_pushnumber(L, (double)worker_now_us(a->w) / 1e6);
    else { clock_gettime(CLOCK_MONOTONIC, &ts); lua_pushnumber(L, (double)ts.tv_sec + ts.tv_nsec / 1e9); }
    return 1;
}

/* core.set_pipeline(fn): the middleware runner, called as fn(handler, req, is_sse) */
static int l_set_pipeline(lua_State *L)
{
    appstate *a = app_of(L);
    luaL_checktype(L, 1, LUA_TFUNCTION);
    if (a->pipeline_ref) luaL_unref(L, LUA_REGISTRYINDEX, a->pipeline_ref);
    lua_pushvalue(L, 1);
    a->pipeline_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

static int l_worker(lua_State *L)
{
    appstate *a = app_of(L);
    lua_pushinteger(L, a->w ? a->w->idx + 1 : 0);
    return 1;
}

/* ---------------------------------------------------------------- static mounts: routes of kind 2 whose target carries the mount (dispatch serves it with web_static_serve) */

/* core.static(prefix, dir [, cache_control [, index]]) */
static int l_static(lua_State *L)
{
    appstate *a = lua_touserdata(L, lua_upvalueindex(1));
    const char *prefix = luaL_checkstring(L, 1);
    const char *dir = luaL_checkstring(L, 2);
    const char *cc = luaL_optstring(L, 3, NULL);
    const char *index = lua_isnoneornil(L, 4) ? "index.html" : luaL_checkstring(L, 4);
    if (prefix[0] != '/') return luaL_argerror(L, 1, "prefix must start with '/'");
    char path[PATH_MAX];
    if (dir[0] == '/') snprintf(path, sizeof path, "%s", dir);
    else snprintf(path, sizeof path, "%s/%s", a->base_dir, dir);
    int fd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return luaL_error(L, "app.static: cannot open directory %s: %s", path, strerror(errno));
    static_mount **mm = realloc(a->mounts, (size_t)(a->nmounts + 1) * sizeof *mm);
    static_mount *m = mm ? calloc(1, sizeof *m) : NULL;   /* one block each: the routes point at it */
    if (mm) a->mounts = mm;
    if (!m) { close(fd); return luaL_error(L, "out of memory"); }
    a->mounts[a->nmounts] = m;
    size_t pl = strlen(prefix);
    while (pl > 1 && prefix[pl - 1] == '/') pl--;
    m->prefix = strndup(prefix, pl);
    m->root_fd = fd;
    m->cache_control = cc ? strdup(cc) : NULL;
    m->index = index && *index ? strdup(index) : NULL;
    a->nmounts++;
    char pat[PATH_MAX], err[256];
    snprintf(pat, sizeof pat, "%s/*", pl == 1 ? "" : m->prefix);
    route_target t = {a->nmounts, 2, m};        /* ref: nonzero (0 is no route) */
    if (router_add(a->rt, RM_GET, pat, t, err, sizeof err) || router_add(a->rt, RM_HEAD, pat, t, err, sizeof err))
        return luaL_error(L, "app.static: %s", err);
    return 0;
}

void app_mounts_free(appstate *a)
{
    for (int i = 0; i < a->nmounts; i++) {
        static_mount *m = a->mounts[i];
        close(m->root_fd);
        free(m->prefix);
        free(m->cache_control);
        free(m->index);
        free(m);
    }
    free(a->mounts);
    a->mounts = NULL;
    a->nmounts = 0;
}

int luaopen_sluice_db(lua_State *L);

int luaopen_sluice_core(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"route", l_route},   {"config", l_config}, {"publish", l_publish}, {"sleep", l_sleep},
        {"timer", l_timer},   {"log", l_log},       {"now", l_now},         {"worker", l_worker},
        {"static", l_static}, {"set_pipeline", l_set_pipeline}, {"json_encode", json_lua_encode},
        {NULL, NULL},
    };
    appstate *a = lua_touserdata(L, lua_upvalueindex(1));
    lua_newtable(L);
    lua_pushlightuserdata(L, a);
    luaL_setfuncs(L, fns, 1);
    lua_newtable(L);                      /* request metatable */
    lua_pushlightuserdata(L, a);
    lua_pushcclosure(L, l_req_index, 1);
    lua_setfield(L, -2, "__index");
    lua_setfield(L, -2, "_req_mt");
    lua_pushlightuserdata(L, a);
    lua_pushcclosure(L, luaopen_sluice_db, 1);
    lua_call(L, 0, 1);
    lua_setfield(L, -2, "db");
    return 1;
}
