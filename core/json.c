/* json.c: Lua -> JSON without an intermediate Lua string (the hot path of { json = ... }). */
#include "json.h"

#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 1000

static void put_string(buf *out, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    buf_reserve(out, n + 2);
    buf_append(out, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char u[6];
        if (c >= 0x20 && c != '"' && c != '\\' && c != 0x7f) continue;
        if (i > run) buf_append(out, s + run, i - run);
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        default:
            u[0] = '\\', u[1] = 'u', u[2] = '0', u[3] = '0', u[4] = hex[c >> 4], u[5] = hex[c & 15];
            buf_append(out, u, 6);
        }
        if (esc) buf_append(out, esc, strlen(esc));
        run = i + 1;
    }
    if (n > run) buf_append(out, s + run, n - run);
    buf_append(out, "\"", 1);
}

static const char *put_number(buf *out, double v)
{
    if (isnan(v) || isinf(v)) return "cannot encode NaN or infinity as JSON";
    if (v == (double)(long long)v && v > -9.2e18 && v < 9.2e18) {
        long long n = (long long)v;
        if (n < 0) { buf_append(out, "-", 1); buf_putu(out, (unsigned long long)(-(n + 1)) + 1); }
        else buf_putu(out, (unsigned long long)n);
        return NULL;
    }
    char b[32];
    for (int prec = 15; prec <= 17; prec++) {       /* shortest text that round-trips */
        snprintf(b, sizeof b, "%.*g", prec, v);
        if (strtod(b, NULL) == v) break;
    }
    buf_append(out, b, strlen(b));
    return NULL;
}

/* Array when every key is a positive integer and the array is not too sparse. */
static int array_length(lua_State *L, int idx)
{
    double max = 0;
    int count = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TNUMBER) { lua_pop(L, 1); return -1; }
        double k = lua_tonumber(L, -1);
        if (k < 1 || k != floor(k) || k > 2147483647.0) { lua_pop(L, 1); return -1; }
        if (k > max) max = k;
        count++;
    }
    if (max > 10 && max > 2.0 * count) return -1;
    return (int)max;
}

static const char *encode(lua_State *L, int idx, buf *out, int depth)
{
    switch (lua_type(L, idx)) {
    case LUA_TNIL: buf_append(out, "null", 4); return NULL;
    case LUA_TBOOLEAN:
        if (lua_toboolean(L, idx)) buf_append(out, "true", 4);
        else buf_append(out, "false", 5);
        return NULL;
    case LUA_TNUMBER: return put_number(out, lua_tonumber(L, idx));
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        put_string(out, s, n);
        return NULL;
    }
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL) { buf_append(out, "null", 4); return NULL; }
        return "cannot encode a userdata as JSON";
    case LUA_TTABLE: break;
    default: return "cannot encode a function, thread or userdata as JSON";
    }
    if (depth >= MAX_DEPTH) return "cannot encode JSON nested deeper than 1000 levels";
    if (!lua_checkstack(L, 4)) return "out of Lua stack";
    if (idx < 0) idx = lua_gettop(L) + idx + 1;
    int n = -1;
    /* app.array(t) / app.empty_array: a metatable field __jsontype = "array" forces an array */
    if (lua_getmetatable(L, idx)) {
        lua_getfield(L, -1, "__jsontype");
        const char *jt = lua_tostring(L, -1);
        if (jt && strcmp(jt, "array") == 0) n = (int)lua_objlen(L, idx);
        lua_pop(L, 2);
        if (n == 0) { buf_append(out, "[]", 2); return NULL; }
    }
    if (n < 0) n = array_length(L, idx);
    if (n > 0) {
        buf_append(out, "[", 1);
        for (int i = 1; i <= n; i++) {
            if (i > 1) buf_append(out, ",", 1);
            lua_rawgeti(L, idx, i);
            const char *e = encode(L, lua_gettop(L), out, depth + 1);
            lua_pop(L, 1);
            if (e) return e;
        }
        buf_append(out, "]", 1);
        return NULL;
    }
    buf_append(out, "{", 1);
    int first = 1;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        int kt = lua_type(L, -2);
        if (!first) buf_append(out, ",", 1);
        first = 0;
        if (kt == LUA_TSTRING) {
            size_t kl;
            const char *k = lua_tolstring(L, -2, &kl);
            put_string(out, k, kl);
        } else if (kt == LUA_TNUMBER) {
            buf tmp = {0};
            const char *e = put_number(&tmp, lua_tonumber(L, -2));
            if (e) { buf_free(&tmp); lua_pop(L, 2); return e; }
            put_string(out, tmp.data, tmp.len);
            buf_free(&tmp);
        } else {
            lua_pop(L, 2);
            return "JSON object keys must be strings or numbers";
        }
        buf_append(out, ":", 1);
        const char *e = encode(L, lua_gettop(L), out, depth + 1);
        if (e) { lua_pop(L, 2); return e; }
        lua_pop(L, 1);
    }
    buf_append(out, "}", 1);
    return NULL;
}

const char *json_encode(lua_State *L, int idx, buf *out)
{
    if (idx < 0) idx = lua_gettop(L) + idx + 1;
    return encode(L, idx, out, 0);
}

int json_lua_encode(lua_State *L)
{
    luaL_checkany(L, 1);
    buf b = {0};
    const char *e = json_encode(L, 1, &b);
    if (e) { buf_free(&b); return luaL_error(L, "%s", e); }
    lua_pushlstring(L, b.data ? b.data : "", b.len);
    buf_free(&b);
    return 1;
}

void json_quote(buf *b, const char *s)
{
    buf_puts(b, "\"");
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') { buf_append(b, "\\", 1); buf_append(b, s, 1); }
        else if (ch == '\n') buf_puts(b, "\\n");
        else if (ch == '\t') buf_puts(b, "\\t");
        else if (ch < 0x20) buf_printf(b, "\\u%04x", ch);
        else buf_append(b, s, 1);
    }
    buf_puts(b, "\"");
}
