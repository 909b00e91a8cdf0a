/* lua_log.c: the `sluice.log` module behind app.log: one line with the caller's file:line, the
 * request's id, route and trace id when called while handling a request, and a table of fields
 * (JSON members in log.format = "json", key=value pairs in text); and the running request's
 * traceparent for outbound calls (app.http's header hook). Misuse raises. */
#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "log.h"
#include "lua_app.h"
#include "web.h"

/* names of the line's own members: a field with one of these names is written as _name */
static int reserved(const char *k)
{
    static const char *const names[] = {"time", "level", "msg", "src", "request_id", "route", "trace_id", NULL};
    for (int i = 0; names[i]; i++) if (strcmp(k, names[i]) == 0) return 1;
    return 0;
}

/* Text mode: a value needs quotes when it is empty or holds spaces, quotes, '=' or controls. */
static void text_value(buf *b, const char *s, size_t n)
{
    int quote = n == 0;
    for (size_t i = 0; i < n && !quote; i++) {
        unsigned char c = (unsigned char)s[i];
        quote = c <= ' ' || c == '"' || c == '=' || c == 0x7f;
    }
    if (!quote) { buf_append(b, s, n); return; }
    char esc[2048];
    size_t el = log_json_escape(esc, sizeof esc, s, n);
    buf_append(b, "\"", 1);
    buf_append(b, esc, el);
    buf_append(b, "\"", 1);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

#define MAX_FIELDS 64

/* Encodes the fields table at idx into b, names in byte order; returns NULL or an error message. */
static const char *encode_fields(lua_State *L, int idx, buf *b, int json)
{
    const char *names[MAX_FIELDS];
    int n = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING) { lua_pop(L, 1); return "field names must be strings"; }
        if (n == MAX_FIELDS) { lua_pop(L, 1); return "more than 64 fields"; }
        names[n++] = lua_tostring(L, -1);   /* stays valid: the key lives in the table */
    }
    qsort(names, (size_t)n, sizeof names[0], cmp_str);
    for (int i = 0; i < n; i++) {
        const char *k = names[i];
        lua_getfield(L, idx, k);
        const char *pre = reserved(k) ? "_" : "";
        char esc[512];
        size_t el = log_json_escape(esc, sizeof esc, k, strlen(k));
        int vt = lua_type(L, -1);
        if (json) {
            buf_printf(b, ",\"%s%.*s\":", pre, (int)el, esc);
            const char *e = json_encode(L, lua_gettop(L), b);
            if (e) { lua_pop(L, 1); return e; }
        } else {
            buf_printf(b, " %s%.*s=", pre, (int)el, esc);
            if (vt == LUA_TSTRING || vt == LUA_TNUMBER) {
                size_t sl;
                const char *s = lua_tolstring(L, -1, &sl);  /* the value's own slot: the key stays intact */
                text_value(b, s, sl);
            } else if (vt == LUA_TBOOLEAN) {
                buf_puts(b, lua_toboolean(L, -1) ? "true" : "false");
            } else {
                buf tmp = {0};
                const char *e = json_encode(L, lua_gettop(L), &tmp);
                if (e) { buf_free(&tmp); lua_pop(L, 1); return e; }
                text_value(b, tmp.data ? tmp.data : "", tmp.len);
                buf_free(&tmp);
            }
        }
        lua_pop(L, 1);
    }
    return NULL;
}

/* write(level, msg, fields|nil, depth): depth is the stack level of the caller to name (1 is
 * the function that called write) */
static int l_write(lua_State *L)
{
    appstate *a = lua_touserdata(L, lua_upvalueindex(1));
    int lvl = log_level_parse(luaL_checkstring(L, 1));
    if (lvl < 0) return luaL_argerror(L, 1, "level must be debug, info, warn or error");
    size_t ml;
    const char *msg = luaL_checklstring(L, 2, &ml);
    if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
    int depth = (int)luaL_optinteger(L, 4, 1);
    if (!log_enabled(lvl)) return 0;
    log_ctx lc = {0};
    char src[300];
    lua_Debug ar;
    if (lua_getstack(L, depth, &ar) && lua_getinfo(L, "Sl", &ar) && ar.currentline > 0) {
        snprintf(src, sizeof src, "%s:%d", ar.short_src, ar.currentline);
        lc.src = src;
    }
    int json = log_json();
    task *t = a ? task_current(a, L) : NULL;
    conn *c = t && t->kind == TASK_REQUEST ? t->c : NULL;
    if (c && !c->closed && json) {
        lc.reqid = c->reqid;
        lc.route = c->route;
        lc.trace_id = web_trace(c)->trace_id;
    }
    buf fb = {0};
    if (lua_istable(L, 3)) {
        const char *e = encode_fields(L, 3, &fb, json);
        if (e) { buf_free(&fb); return luaL_error(L, "app.log: fields: %s", e); }
        lc.fields = fb.data;
        lc.fields_len = fb.len;
    }
    log_event(lvl, &lc, msg, ml);
    buf_free(&fb);
    return 0;
}

/* traceparent() -> the running request's outbound traceparent, or nil outside a request */
static int l_traceparent(lua_State *L)
{
    appstate *a = lua_touserdata(L, lua_upvalueindex(1));
    task *t = a ? task_current(a, L) : NULL;
    conn *c = t && t->kind == TASK_REQUEST ? t->c : NULL;
    if (!c || c->closed) return 0;
    char tp[TRACEPARENT_LEN + 1];
    lua_pushlstring(L, tp, web_traceparent(c, tp));
    return 1;
}

static int l_json(lua_State *L)
{
    lua_pushboolean(L, log_json());
    return 1;
}

static int l_enabled(lua_State *L)
{
    int lvl = log_level_parse(luaL_checkstring(L, 1));
    if (lvl < 0) return luaL_argerror(L, 1, "level must be debug, info, warn or error");
    lua_pushboolean(L, log_enabled(lvl));
    return 1;
}

int luaopen_sluice_log(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"write", l_write}, {"json", l_json}, {"enabled", l_enabled}, {"traceparent", l_traceparent}, {NULL, NULL},
    };
    lua_newtable(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    luaL_setfuncs(L, fns, 1);
    return 1;
}
