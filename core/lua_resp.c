/* lua_resp.c: a handler's return value (string, status number, nil or response table) becomes the
 * response, and an app.sse handler's the stream it admits (ssestream_accept): the one place the
 * request path turns Lua values into C structs; and the stream's on_open/on_close callbacks. */
#include <lauxlib.h>
#include <stdio.h>
#include <string.h>

#include "json.h"
#include "log.h"
#include "lua_app.h"
#include "response.h"
#include "conn.h"
#include "ssestream.h"

static int cookie_token_ok(const char *s, size_t n)
{
    if (!n) return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch <= 0x20 || ch >= 0x7f || strchr("()<>@,;:\\\"/[]?={}", ch)) return 0;
    }
    return 1;
}

static int cookie_value_ok(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x21 || ch > 0x7e || ch == '"' || ch == ',' || ch == ';' || ch == '\\') return 0;
    }
    return 1;
}

static int attr_ok(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch == 0x7f || ch == ';') return 0;
    }
    return 1;
}

/* Writes Set-Cookie headers from the response table's `cookies` list (table at idx). */
static const char *resp_cookies(resp *r, lua_State *co, int idx, char *etext, size_t elen)
{
    lua_getfield(co, idx, "cookies");
    if (lua_isnil(co, -1)) { lua_pop(co, 1); return NULL; }
    if (!lua_istable(co, -1)) { lua_pop(co, 1); return "response cookies must be a list of tables"; }
    int list = lua_gettop(co);
    int n = (int)lua_objlen(co, list);
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(co, list, i);
        int ck = lua_gettop(co);
        if (!lua_istable(co, ck)) { lua_settop(co, list - 1); return "each cookie must be a table { name =, value = }"; }
        size_t nl = 0, vl = 0;
        lua_getfield(co, ck, "name");
        const char *name = lua_tolstring(co, -1, &nl);
        lua_getfield(co, ck, "value");
        const char *value = lua_isnil(co, -1) ? "" : lua_tolstring(co, -1, &vl);
        if (!name || !cookie_token_ok(name, nl) || !value || !cookie_value_ok(value, vl)) {
            snprintf(etext, elen, "invalid cookie %.60s: the name must be a token and the value printable ASCII without space, \", comma, ; or \\", name ? name : "(no name)");
            lua_settop(co, list - 1);
            return etext;
        }
        char line[4096];
        int m = snprintf(line, sizeof line, "%.*s=%.*s", (int)nl, name, (int)vl, value);
        static const char *strs[] = {"path", "Path", "domain", "Domain", "samesite", "SameSite", "expires", "Expires"};
        for (int k = 0; k < 8; k += 2) {
            lua_getfield(co, ck, strs[k]);
            size_t al;
            const char *av = lua_tolstring(co, -1, &al);
            if (av) {
                if (!attr_ok(av, al)) {
                    snprintf(etext, elen, "invalid cookie %.60s: attribute %s contains ';' or a control character", name, strs[k]);
                    lua_settop(co, list - 1);
                    return etext;
                }
                m += snprintf(line + m, sizeof line - (size_t)m, "; %s=%.*s", strs[k + 1], (int)al, av);
            }
            lua_pop(co, 1);
        }
        lua_getfield(co, ck, "max_age");
        if (lua_isnumber(co, -1)) m += snprintf(line + m, sizeof line - (size_t)m, "; Max-Age=%lld", (long long)lua_tonumber(co, -1));
        lua_pop(co, 1);
        lua_getfield(co, ck, "httponly");
        if (lua_toboolean(co, -1)) m += snprintf(line + m, sizeof line - (size_t)m, "; HttpOnly");
        lua_pop(co, 1);
        lua_getfield(co, ck, "secure");
        if (lua_toboolean(co, -1)) m += snprintf(line + m, sizeof line - (size_t)m, "; Secure");
        lua_pop(co, 1);
        if (m >= (int)sizeof line) { lua_settop(co, list - 1); return "cookie too long"; }
        if (resp_header(r, "Set-Cookie", 10, line, (size_t)m)) { lua_settop(co, list - 1); return "invalid cookie"; }
        lua_settop(co, list);
    }
    lua_settop(co, list - 1);
    return NULL;
}

static int header_value_str(lua_State *co, int idx, const char **v, size_t *vl)
{
    int ty = lua_type(co, idx);
    if (ty != LUA_TSTRING && ty != LUA_TNUMBER) return -1;
    *v = lua_tolstring(co, idx, vl);
    return 0;
}

/* A final status a handler may send: an integer 200..599, or 0. 1xx are interim responses
 * (101 would switch protocols: behind a proxy that tunnels it, later requests would bypass the
 * proxy's rules; 100/103 leave the client waiting for the real answer), so they are refused. */
static int final_status(lua_State *co, int idx)
{
    if (lua_type(co, idx) != LUA_TNUMBER) return 0;
    lua_Number v = lua_tonumber(co, idx);
    if (!(v >= 200 && v <= 599) || v != (lua_Number)(int)v) return 0;
    return (int)v;
}

static const char *status_error(lua_State *co, int idx, char *etext, size_t elen)
{
    if (lua_type(co, idx) == LUA_TNUMBER) {
        double v = (double)lua_tonumber(co, idx);
        snprintf(etext, elen, "invalid response status %.14g: a handler's status must be an integer 200-599%s", v,
                 v >= 100 && v < 200 ? " (1xx interim responses are not supported)" : "");
    }
    else
        snprintf(etext, elen, "invalid response status (a %s): a handler's status must be an integer 200-599",
                 luaL_typename(co, idx));
    return etext;
}

/* Writes the handler's return value (at co[1]) as the response. Returns NULL, or an error
 * message (constant or in etext) when the value cannot be sent. */
const char *app_write_result(appstate *a, conn *c, lua_State *co, char *etext, size_t elen,
                             void (*extra)(resp *r, void *ud), void *ud)
{
    int top = lua_gettop(co);
    int ty = top ? lua_type(co, 1) : LUA_TNIL;
    resp r;
    if (ty == LUA_TSTRING) {
        size_t n;
        const char *s = lua_tolstring(co, 1, &n);
        resp_begin(&r, c, 200);
        if (extra) extra(&r, ud);
        resp_finish(&r, "text/plain; charset=utf-8", s, n);
        return NULL;
    }
    if (ty == LUA_TNUMBER) {
        int st = final_status(co, 1);
        if (!st) return status_error(co, 1, etext, elen);
        resp_begin(&r, c, st);
        if (extra) extra(&r, ud);
        const char *reason = http_reason(st);
        char body[64];
        int n = snprintf(body, sizeof body, "%s\n", reason);
        resp_finish(&r, "text/plain; charset=utf-8", body, (size_t)n);
        return NULL;
    }
    if (ty == LUA_TNIL) {
        resp_begin(&r, c, 204);
        if (extra) extra(&r, ud);
        resp_finish(&r, NULL, "", 0);
        return NULL;
    }
    if (ty != LUA_TTABLE) return "handler must return a string, a status number or a response table";

    /* field lookups with pre-interned keys: no string hashing per response */
    lua_rawgeti(co, LUA_REGISTRYINDEX, a->keys_ref);
    int K = lua_gettop(co);
#define FIELD(i) (lua_rawgeti(co, K, (i)), lua_rawget(co, 1))
    FIELD(KEY_STATUS);
    int st = lua_isnil(co, -1) ? 200 : final_status(co, -1);
    if (!st) {
        status_error(co, -1, etext, elen);
        lua_settop(co, top);
        return etext;
    }
    lua_pop(co, 1);

    const char *body = "";
    size_t blen = 0;
    const char *ctype = NULL;
    int body_idx = 0;
    FIELD(KEY_JSON);
    if (!lua_isnil(co, -1)) {
        buf *jb = &c->w->jsonbuf;      /* encoded straight into a reused buffer: no Lua string */
        buf_reset(jb);
        const char *je = json_encode(co, lua_gettop(co), jb);
        if (je) {
            snprintf(etext, elen, "response json cannot be encoded: %s", je);
            lua_settop(co, top);
            return etext;
        }
        body = jb->data ? jb->data : "";
        blen = jb->len;
        ctype = "application/json";
    } else {
        lua_pop(co, 1);
        FIELD(KEY_BODY);
        if (lua_type(co, -1) == LUA_TSTRING) {
            body = lua_tolstring(co, -1, &blen);
            body_idx = lua_gettop(co);
            ctype = "text/plain; charset=utf-8";
        } else if (!lua_isnil(co, -1)) {
            lua_settop(co, top);
            return "response body must be a string (use json = ... for tables)";
        }
    }
    (void)body_idx;
    size_t mark = c->out.len;
    resp_begin(&r, c, st);
    FIELD(KEY_HEADERS);
    if (lua_type(co, -1) == LUA_TTABLE) {
        int h = lua_gettop(co);
        lua_pushnil(co);
        while (lua_next(co, h)) {
            size_t nl;
            const char *name = lua_type(co, -2) == LUA_TSTRING ? lua_tolstring(co, -2, &nl) : NULL;
            if (!name) { c->out.len = mark; lua_settop(co, top); return "response header names must be strings"; }
            const char *v;
            size_t vl;
            int bad = 0;
            if (lua_type(co, -1) == LUA_TTABLE) {
                int n = (int)lua_objlen(co, -1);
                for (int i = 1; i <= n && !bad; i++) {
                    lua_rawgeti(co, -1, i);
                    bad = header_value_str(co, -1, &v, &vl) || resp_header(&r, name, nl, v, vl);
                    lua_pop(co, 1);
                }
            } else {
                bad = header_value_str(co, -1, &v, &vl) || resp_header(&r, name, nl, v, vl);
            }
            if (bad) {
                c->out.len = mark;
                snprintf(etext, elen, "invalid response header \"%.100s\": names must be tokens, values strings without CR, LF or NUL", name);
                lua_settop(co, top);
                return etext;
            }
            lua_pop(co, 1);
        }
    } else if (!lua_isnil(co, -1)) {
        c->out.len = mark;
        lua_settop(co, top);
        return "response headers must be a table";
    }
    lua_pop(co, 1);
    if (extra) extra(&r, ud);
    FIELD(KEY_COOKIES);
    int has_cookies = !lua_isnil(co, -1);
    lua_pop(co, 1);
#undef FIELD
    const char *cerr = has_cookies ? resp_cookies(&r, co, 1, etext, elen) : NULL;
    if (cerr) { c->out.len = mark; lua_settop(co, top); return cerr; }
    resp_finish(&r, ctype, body, blen);
    if (c->w->jsonbuf.cap > (1 << 20)) buf_free(&c->w->jsonbuf);   /* one huge answer keeps no memory */
    lua_settop(co, top);
    return NULL;
}

/* app.error(status, message, fields): a 4xx whose error table carries a fields table answers
 * {"error": message, "status": N, "fields": {...}}. Returns 1 when it answered. */
int app_write_error_fields(conn *c, task *t, const char *err)
{
    lua_State *co = t->co;
    /* the error object is on top, or under the message its __tostring gave */
    int top = lua_gettop(co);
    int idx = top >= 1 && lua_istable(co, top) ? top : top >= 2 && lua_istable(co, top - 1) ? top - 1 : 0;
    if (!idx) return 0;
    lua_getfield(co, idx, "fields");
    if (!lua_istable(co, -1)) { lua_pop(co, 1); return 0; }
    buf b = {0};
    char esc[1200];
    const char *nl = strchr(err, '\n');
    size_t ml = nl ? (size_t)(nl - err) : strlen(err);
    size_t el = log_json_escape(esc, sizeof esc, err, ml > 1000 ? 1000 : ml);
    buf_printf(&b, "{\"error\":\"%.*s\",\"status\":%d,\"fields\":", (int)el, esc, t->err_status);
    const char *je = json_encode(co, lua_gettop(co), &b);
    lua_pop(co, 1);
    if (je) { buf_free(&b); return 0; }
    buf_append(&b, "}", 2);               /* with the NUL resp_simple wants */
    resp_simple(c, t->err_status, "application/json", b.data, 0);
    buf_free(&b);
    return 1;
}

/* An app.sse handler's answer (co[1]): a refusal with its own status is written as a response
 * (1); otherwise its channels and user go into acc (0), the strings staying on co's stack. */
int app_sse_result(appstate *a, conn *c, lua_State *co, ssestream_accept *acc, char *err, size_t errlen)
{
    err[0] = 0;
    if (!lua_istable(co, 1)) {
        snprintf(err, errlen, "SSE handler must return { channel = ..., user = ... } or { status = 4xx }");
        return -1;
    }
    lua_getfield(co, 1, "status");
    int st = lua_isnil(co, -1) ? 200 : (int)lua_tointeger(co, -1);
    lua_pop(co, 1);
    if (st != 200) {
        const char *e = app_write_result(a, c, co, err, errlen, NULL, NULL);
        if (e) { if (e != err) snprintf(err, errlen, "%s", e); return -1; }
        return 1;
    }
    acc->nch = 0;
    lua_getfield(co, 1, "channel");
    if (lua_isstring(co, -1)) acc->chans[acc->nch++] = lua_tostring(co, -1);
    lua_getfield(co, 1, "channels");
    if (lua_istable(co, -1)) {
        int list = lua_gettop(co);              /* -1 moves as the names are pushed */
        size_t n = lua_objlen(co, list);
        for (size_t i = 1; i <= n; i++) {
            lua_rawgeti(co, list, (int)i);
            if (!lua_isstring(co, -1) || acc->nch == SSE_MAX_SUB_CHANNELS) {
                snprintf(err, errlen, "SSE channels must be strings, at most %d per stream", SSE_MAX_SUB_CHANNELS);
                return -1;
            }
            acc->chans[acc->nch++] = lua_tostring(co, -1);   /* stays on the stack until the task ends */
        }
    }
    if (!acc->nch) {
        snprintf(err, errlen, "SSE handler returned no channel (return { channel = \"name\" })");
        return -1;
    }
    lua_getfield(co, 1, "user");
    acc->user = lua_isstring(co, -1) ? lua_tostring(co, -1) : NULL;
    return 0;
}

/* ---------------------------------------------------------------- SSE callbacks */

void app_sse_opened(task *t, conn *c)
{
    appstate *a = t->app;
    lua_State *co = t->co;
    lua_getfield(co, 1, "on_open");       /* called once the stream is admitted, as a task of its own */
    if (lua_isfunction(co, -1)) {
        lua_xmove(co, a->L, 1);
        task *ot = task_prepare(a, TASK_TIMER, 0);
        if (ot) task_resume(ot, 0);
    } else {
        lua_pop(co, 1);
    }
    lua_getfield(co, 1, "on_close");      /* called when the stream ends: app_sse_end */
    if (lua_isfunction(co, -1)) {
        c->sse_close_ref = luaL_ref(co, LUA_REGISTRYINDEX);
        c->sse_app = a;
        a->refs++;                        /* the callback lives in this state */
    } else {
        lua_pop(co, 1);
    }
}

void app_sse_end(appstate *a, int ref)
{
    if (!a->closing && a->w) {
        lua_rawgeti(a->L, LUA_REGISTRYINDEX, ref);
        task *t = task_prepare(a, TASK_TIMER, 0);
        if (t) task_resume(t, 0);
    }
    luaL_unref(a->L, LUA_REGISTRYINDEX, ref);
    appstate_release(a);
}

void app_sse_conn_gone(conn *c)
{
    if (!c->sse_close_ref) return;
    appstate *a = c->sse_app;
    int ref = c->sse_close_ref;
    c->sse_close_ref = 0;
    c->sse_app = NULL;
    app_sse_end(a, ref);
}
