/* lua_http_opts.c: the options table of app.http.request read into httpc_opts: one pass over the
 * table, header lines checked (no CR/LF/NUL, token names), json/form bodies and the query encoded. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "json.h"
#include "lua_http_int.h"

void lua_http_opts_free(preq *p)
{
    buf_free(&p->lines);
    buf_free(&p->body);
    buf_free(&p->url);
}

static int is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static int header_line(preq *p, const char *name, size_t nl, const char *v, size_t vl)
{
    if (p->n >= MAX_HEADERS) { snprintf(p->err, sizeof p->err, "app.http: at most %d headers", MAX_HEADERS); return -1; }
    for (size_t i = 0; i < nl; i++)
        if (!is_tchar((unsigned char)name[i])) { snprintf(p->err, sizeof p->err, "app.http: invalid header name \"%.60s\"", name); return -1; }
    for (size_t i = 0; i < vl; i++)
        if (v[i] == '\r' || v[i] == '\n' || v[i] == 0) { snprintf(p->err, sizeof p->err, "app.http: header \"%.60s\" has CR, LF or NUL in its value", name); return -1; }
    if (!nl) { snprintf(p->err, sizeof p->err, "app.http: empty header name"); return -1; }
    p->off[p->n++] = p->lines.len;
    if (buf_append(&p->lines, name, nl) || buf_append(&p->lines, ": ", 2) || buf_append(&p->lines, v, vl) || buf_append(&p->lines, "", 1)) {
        snprintf(p->err, sizeof p->err, "out of memory");
        return -1;
    }
    return 0;
}

static int has_header(const preq *p, const char *name)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i < p->n; i++) {
        const char *l = p->lines.data + p->off[i];
        if (strncasecmp(l, name, nl) == 0 && l[nl] == ':') return 1;
    }
    return 0;
}

static void urlenc(buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == '~') {
            buf_append(b, s + i, 1);
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            buf_append(b, e, 3);
        }
    }
}

static int scalar(lua_State *L, int idx, const char **s, size_t *n)
{
    int ty = lua_type(L, idx);
    if (ty == LUA_TBOOLEAN) { *s = lua_toboolean(L, idx) ? "true" : "false"; *n = strlen(*s); return 0; }
    if (ty != LUA_TSTRING && ty != LUA_TNUMBER) return -1;
    *s = lua_tolstring(L, idx, n);     /* numbers are converted in place: fine on a copy */
    return 0;
}

/* Appends the table at idx as a=1&b=2 (array values repeat the key). */
static int form_encode(lua_State *L, int idx, buf *b, char *err, size_t errlen, const char *what)
{
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING) { snprintf(err, errlen, "app.http: %s keys must be strings", what); lua_pop(L, 2); return -1; }
        size_t kl, vl;
        const char *k = lua_tolstring(L, -2, &kl), *v;
        int n = lua_istable(L, -1) ? (int)lua_objlen(L, -1) : 1;
        for (int i = 1; i <= n; i++) {
            if (lua_istable(L, -1)) lua_rawgeti(L, -1, i);
            else lua_pushvalue(L, -1);
            if (scalar(L, -1, &v, &vl)) {
                snprintf(err, errlen, "app.http: %s value of \"%.60s\" must be a string, number or boolean", what, k);
                lua_pop(L, 3);
                return -1;
            }
            if (b->len && b->data[b->len - 1] != '?' && b->data[b->len - 1] != '&') buf_append(b, "&", 1);
            urlenc(b, k, kl);
            buf_append(b, "=", 1);
            urlenc(b, v, vl);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    return 0;
}

/* The options of request(); the table is read in one pass (lua_next), so a request with two
 * options costs two lookups, not one per known name. */
enum {
    K_URL, K_METHOD, K_HEADERS, K_BODY, K_JSON, K_FORM, K_QUERY, K_TIMEOUT, K_CONNECT_TIMEOUT,
    K_QUEUE_TIMEOUT, K_MAX_BODY, K_MAX_REDIRECTS, K_FOLLOW, K_VERIFY, K_DECOMPRESS, K_CA, K_CERT,
    K_KEY, K_KEYPW, K_PROXY, K_COUNT
};
static const char *const opt_names[K_COUNT] = {
    "url", "method", "headers", "body", "json", "form", "query", "timeout", "connect_timeout",
    "queue_timeout", "max_body", "max_redirects", "follow_redirects", "verify_tls", "decompress",
    "ca_file", "client_cert", "client_key", "key_password", "proxy",
};

static int opt_index(const char *k, size_t n)
{
    for (int i = 0; i < K_COUNT; i++)
        if (opt_names[i][0] == k[0] && strlen(opt_names[i]) == n && memcmp(opt_names[i], k, n) == 0) return i;
    return -1;
}

int lua_http_parse_opts(lua_State *L, int t, const httpc_opts *defaults, preq *p)
{
    int top = lua_gettop(L);
    memset(p, 0, sizeof *p);
    p->o = *defaults;
    p->o.method = "GET";
    if (!lua_istable(L, t)) { snprintf(p->err, sizeof p->err, "app.http: options must be a table ({ url = ..., method = ... })"); return -1; }
    unsigned present = 0;
    const char *url = NULL;
    size_t ul = 0;
    double mb = (double)p->o.max_body, mr = p->o.max_redirects;
    lua_pushnil(L);
    while (lua_next(L, t)) {
        size_t kl;
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &kl) : NULL;
        int ki = k ? opt_index(k, kl) : -1;
        if (ki < 0) {
            snprintf(p->err, sizeof p->err, k ? "app.http: unknown option \"%.40s\"" : "app.http: option names must be strings", k);
            goto fail;
        }
        present |= 1u << ki;
        int ty = lua_type(L, -1);
        const char *bad = NULL;
        switch (ki) {
        case K_URL:
            if (ty != LUA_TSTRING) bad = "url must be a string (http://host/path or https://...)";
            else url = lua_tolstring(L, -1, &ul);
            break;
        case K_METHOD: {
            size_t ml;
            const char *m = ty == LUA_TSTRING ? lua_tolstring(L, -1, &ml) : NULL;
            if (!m || !ml || ml >= sizeof p->method) { bad = "method must be a string such as \"POST\""; break; }
            for (size_t i = 0; i < ml; i++) {
                if (!is_tchar((unsigned char)m[i])) { snprintf(p->err, sizeof p->err, "app.http: invalid method \"%.15s\"", m); goto fail; }
                p->method[i] = (m[i] >= 'a' && m[i] <= 'z') ? (char)(m[i] - 32) : m[i];
            }
            p->method[ml] = 0;
            p->o.method = p->method;
            break;
        }
        case K_BODY:
            if (ty != LUA_TSTRING) bad = "body must be a string (use json = ... for tables)";
            else p->o.body = lua_tolstring(L, -1, &p->o.body_len);
            break;
        case K_HEADERS: case K_FORM: case K_QUERY:
            if (ty != LUA_TTABLE) { snprintf(p->err, sizeof p->err, "app.http: %s must be a table", opt_names[ki]); goto fail; }
            break;
        case K_JSON:
            break;
        case K_TIMEOUT: case K_CONNECT_TIMEOUT: case K_QUEUE_TIMEOUT: case K_MAX_BODY: case K_MAX_REDIRECTS: {
            double v = ty == LUA_TNUMBER ? lua_tonumber(L, -1) : -1;
            if (!(v >= 0)) { snprintf(p->err, sizeof p->err, "app.http: %s must be a number >= 0", opt_names[ki]); goto fail; }
            if (ki == K_TIMEOUT) p->o.timeout = v;
            else if (ki == K_CONNECT_TIMEOUT) p->o.connect_timeout = v;
            else if (ki == K_QUEUE_TIMEOUT) p->o.queue_timeout = v;
            else if (ki == K_MAX_BODY) mb = v;
            else mr = v;
            break;
        }
        case K_FOLLOW: case K_VERIFY: case K_DECOMPRESS: {
            if (ty != LUA_TBOOLEAN) { snprintf(p->err, sizeof p->err, "app.http: %s must be a boolean", opt_names[ki]); goto fail; }
            int v = lua_toboolean(L, -1);
            if (ki == K_FOLLOW) p->o.follow_redirects = v;
            else if (ki == K_VERIFY) p->o.verify_tls = v;
            else p->o.decompress = v;
            break;
        }
        default: {                        /* file and proxy strings; false unsets a config default */
            const char *v = NULL;
            if (ty == LUA_TSTRING) v = lua_tostring(L, -1);
            else if (!(ty == LUA_TBOOLEAN && !lua_toboolean(L, -1))) {
                snprintf(p->err, sizeof p->err, "app.http: %s must be a string (or false)", opt_names[ki]);
                goto fail;
            }
            const char **dst[] = {&p->o.ca_file, &p->o.client_cert, &p->o.client_key, &p->o.key_password, &p->o.proxy};
            *dst[ki - K_CA] = v;
        }
        }
        if (bad) { snprintf(p->err, sizeof p->err, "app.http: %s", bad); goto fail; }
        lua_pop(L, 1);
    }
    p->o.max_body = (size_t)mb;
    p->o.max_redirects = (int)mr;
    if (!url) { snprintf(p->err, sizeof p->err, "app.http: url must be a string (http://host/path or https://...)"); goto fail; }
    p->o.url = url;
    if (present & (1u << K_QUERY)) {
        lua_getfield(L, t, "query");
        const char *hash = memchr(url, '#', ul);  /* never sent; the query goes before it */
        if (hash) ul = (size_t)(hash - url);
        buf_append(&p->url, url, ul);
        if (!memchr(url, '?', ul)) buf_append(&p->url, "?", 1);
        else if (url[ul - 1] != '?' && url[ul - 1] != '&') buf_append(&p->url, "&", 1);
        if (form_encode(L, lua_gettop(L), &p->url, p->err, sizeof p->err, "query")) goto fail;
        buf_append(&p->url, "", 1);
        p->o.url = p->url.data;
        lua_pop(L, 1);
    }
    if (present & (1u << K_HEADERS)) {
        lua_getfield(L, t, "headers");
        int h = lua_gettop(L);
        lua_pushnil(L);
        while (lua_next(L, h)) {
            size_t nl, vl;
            const char *name = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &nl) : NULL, *v;
            if (!name) { snprintf(p->err, sizeof p->err, "app.http: header names must be strings"); goto fail; }
            int n = lua_istable(L, -1) ? (int)lua_objlen(L, -1) : 1;
            for (int i = 1; i <= n; i++) {
                if (lua_istable(L, -1)) lua_rawgeti(L, -1, i);
                else lua_pushvalue(L, -1);
                if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER) {
                    snprintf(p->err, sizeof p->err, "app.http: header \"%.60s\" must be a string or number", name);
                    goto fail;
                }
                v = lua_tolstring(L, -1, &vl);
                if (header_line(p, name, nl, v, vl)) goto fail;
                lua_pop(L, 1);
            }
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    /* the body: one of body, json, form */
    unsigned bodies = present & ((1u << K_BODY) | (1u << K_JSON) | (1u << K_FORM));
    if (bodies & (bodies - 1)) { snprintf(p->err, sizeof p->err, "app.http: give one of body, json and form"); goto fail; }
    const char *ctype = NULL;
    if (present & (1u << K_JSON)) {
        lua_getfield(L, t, "json");
        const char *je = json_encode(L, lua_gettop(L), &p->body);
        if (je) { snprintf(p->err, sizeof p->err, "app.http: json cannot be encoded: %s", je); goto fail; }
        ctype = "application/json";
        lua_pop(L, 1);
    } else if (present & (1u << K_FORM)) {
        lua_getfield(L, t, "form");
        if (form_encode(L, lua_gettop(L), &p->body, p->err, sizeof p->err, "form")) goto fail;
        ctype = "application/x-www-form-urlencoded";
        lua_pop(L, 1);
    }
    if (ctype) {
        p->o.body = p->body.data ? p->body.data : "";
        p->o.body_len = p->body.len;
        if (!has_header(p, "content-type") && header_line(p, "Content-Type", 12, ctype, strlen(ctype))) goto fail;
    }
    for (size_t i = 0; i < p->n; i++) p->ptr[i] = p->lines.data + p->off[i];
    p->o.headers = p->ptr;
    p->o.nheaders = p->n;
    lua_settop(L, top);
    return 0;
fail:
    lua_settop(L, top);
    return -1;
}

