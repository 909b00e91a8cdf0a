/* web.c: request IDs, CORS, static mounts served with sendfile, multipart bodies for Lua. */
#include "web.h"

#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <unistd.h>

#include "clientip.h"
#include "conn.h"
#include "ctx.h"
#include "multipart.h"
#include "response.h"
#include "sconfig.h"
#include "static.h"

/* ---------------------------------------------------------------- request IDs */

static int reqid_ok(const char *v, size_t n)
{
    if (n == 0 || n > 36) return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = v[i];
        if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '-' || ch == '_' || ch == '.'))
            return 0;
    }
    return 1;
}

void web_request_id(conn *c)
{
    worker *w = c->w;
    size_t n;
    const char *v = http_req_header(&c->req, "x-request-id", &n);
    if (v && w->app_cfg->trust && clientip_is_trusted(w->app_cfg->trust, c->ip) && reqid_ok(v, n)) {
        memcpy(c->reqid, v, n);
        c->reqid[n] = 0;
        return;
    }
    /* 64 random bits per worker, then a counter kept as text and incremented in place:
     * unique, no syscall and no formatting per request */
    static const char hex[] = "0123456789abcdef";
    char *id = w->reqid_text;
    if (!id[0]) {
        uint64_t seed;
        if (getrandom(&seed, sizeof seed, 0) != sizeof seed) seed = (uint64_t)(uintptr_t)w ^ (uint64_t)time(NULL);
        for (int i = 15; i >= 0; i--) { id[i] = hex[seed & 15]; seed >>= 4; }
        id[16] = '-';
        memset(id + 17, '0', 11);
        id[28] = 0;
    }
    for (int i = 27; i > 16; i--) {          /* hex odometer */
        if (id[i] == 'f') { id[i] = '0'; continue; }
        id[i] = id[i] == '9' ? 'a' : (char)(id[i] + 1);
        break;
    }
    memcpy(c->reqid, id, 29);
}

/* ---------------------------------------------------------------- trace context */

const tracectx *web_trace(conn *c)
{
    if (c->trace_gen != c->gen + 1) {        /* first use in this request */
        size_t n = 0;
        const char *v = http_req_header(&c->req, "traceparent", &n);
        tracectx_begin(&c->trace, v, n);
        c->trace_gen = c->gen + 1;
    }
    return &c->trace;
}

size_t web_traceparent(conn *c, char out[TRACEPARENT_LEN + 1])
{
    return tracectx_traceparent(web_trace(c), out);
}

/* req:header(name): one header's value without building req.headers (the lower-cased name;
 * repeats joined as req.headers joins them), nil when absent or when the request is over. */
static int l_req_header(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    size_t nl;
    const char *name = luaL_checklstring(L, 2, &nl);
    char lname[256];
    if (nl >= sizeof lname) return 0;
    for (size_t i = 0; i < nl; i++) lname[i] = (char)((name[i] >= 'A' && name[i] <= 'Z') ? name[i] + 32 : name[i]);
    lua_rawgeti(L, 1, 1);
    conn *c = lua_touserdata(L, -1);
    lua_rawgeti(L, 1, 2);
    uint32_t gen = (uint32_t)lua_tonumber(L, -1);
    lua_pop(L, 2);
    if (!c || c->gen != gen || c->closed) return 0;
    const http_req *r = &c->req;
    int found = 0;
    for (unsigned i = 0; i < r->nheaders; i++) {
        const http_header *h = &r->headers[i];
        if (h->nlen != nl || memcmp(http_hname(r, h), lname, nl) != 0) continue;
        if (found) lua_pushstring(L, nl == 6 && memcmp(lname, "cookie", 6) == 0 ? "; " : ", ");
        lua_pushlstring(L, http_hvalue(r, h), h->vlen);
        if (found) lua_concat(L, 3);
        found = 1;
    }
    return found;
}

int web_lua_req_field(lua_State *L, conn *c, const char *k)
{
    if (strcmp(k, "header") == 0) lua_pushcfunction(L, l_req_header);   /* first: per request on APIs */
    else if (strcmp(k, "trace_id") == 0) lua_pushstring(L, web_trace(c)->trace_id);
    else if (strcmp(k, "span_id") == 0) lua_pushstring(L, web_trace(c)->span_id);
    else if (strcmp(k, "traceparent") == 0) {
        char tp[TRACEPARENT_LEN + 1];
        lua_pushlstring(L, tp, web_traceparent(c, tp));
    } else if (strcmp(k, "route") == 0) {
        if (!c->route) return 0;
        lua_pushstring(L, c->route);
    } else return 0;
    return 1;
}

/* ---------------------------------------------------------------- CORS */

static int origin_allowed(const sconfig *cfg, const char *o, size_t n, int *wildcard)
{
    *wildcard = 0;
    for (size_t i = 0; i < cfg->ncors_origins; i++) {
        const char *a = cfg->cors_origins[i];
        if (strcmp(a, "*") == 0) { *wildcard = 1; return 1; }
        if (strlen(a) == n && strncasecmp(a, o, n) == 0) return 1;
    }
    return 0;
}

static void join(char *out, size_t cap, char **v, size_t n)
{
    out[0] = 0;
    size_t len = 0;
    for (size_t i = 0; i < n; i++) len += (size_t)snprintf(out + len, cap > len ? cap - len : 0, "%s%s", i ? ", " : "", v[i]);
}

static void origin_headers(resp *r, const sconfig *cfg, const char *o, size_t n, int wildcard)
{
    if (wildcard && !cfg->cors_credentials) resp_header(r, "Access-Control-Allow-Origin", 27, "*", 1);
    else {
        resp_header(r, "Access-Control-Allow-Origin", 27, o, n);
        resp_header(r, "Vary", 4, "Origin", 6);
    }
    if (cfg->cors_credentials) resp_header(r, "Access-Control-Allow-Credentials", 32, "true", 4);
}

int web_cors(conn *c)
{
    const sconfig *cfg = c->w->app_cfg;
    c->cors_ok = 0;
    if (!cfg->ncors_origins) return 0;
    size_t n;
    const char *o = http_req_header(&c->req, "origin", &n);
    int wildcard;
    if (!o || !origin_allowed(cfg, o, n, &wildcard)) return 0;
    size_t ml;
    const char *m = http_req_header(&c->req, "access-control-request-method", &ml);
    if (c->req.method == HTTP_OPTIONS && m) {        /* preflight */
        resp r;
        resp_begin(&r, c, 204);
        origin_headers(&r, cfg, o, n, wildcard);
        char b[1024];
        join(b, sizeof b, cfg->cors_methods, cfg->ncors_methods);
        resp_header(&r, "Access-Control-Allow-Methods", 28, b, strlen(b));
        join(b, sizeof b, cfg->cors_headers, cfg->ncors_headers);
        if (b[0]) resp_header(&r, "Access-Control-Allow-Headers", 28, b, strlen(b));
        int k = snprintf(b, sizeof b, "%d", cfg->cors_max_age);
        resp_header(&r, "Access-Control-Max-Age", 22, b, (size_t)k);
        resp_finish(&r, NULL, "", 0);
        return -1;
    }
    c->cors_ok = 1;
    return 0;
}

void web_response_headers(resp *r)
{
    conn *c = r->c;
    if (c->reqid[0]) {         /* generated, or checked to be a token when it came from a proxy */
        buf *b = &c->out;
        buf_append(b, "X-Request-Id: ", 14);
        buf_append(b, c->reqid, strlen(c->reqid));
        buf_append(b, "\r\n", 2);
    }
    if (c->cors_ok) {
        const sconfig *cfg = c->w->app_cfg;
        size_t n;
        const char *o = http_req_header(&c->req, "origin", &n);
        int wildcard;
        if (o && origin_allowed(cfg, o, n, &wildcard)) {
            origin_headers(r, cfg, o, n, wildcard);
            if (cfg->ncors_expose) {
                char b[1024];
                join(b, sizeof b, cfg->cors_expose, cfg->ncors_expose);
                resp_header(r, "Access-Control-Expose-Headers", 29, b, strlen(b));
            }
        }
    }
}

/* ---------------------------------------------------------------- static files */

void web_static_serve(conn *c, const static_mount *m, const char *rest, size_t len)
{
    const http_req *rq = &c->req;
    if (rq->method != HTTP_GET && rq->method != HTTP_HEAD) { resp_error(c, 405, "method not allowed", 0); return; }
    const char *ae = http_req_header(rq, "accept-encoding", NULL);
    int gz_ok = static_accepts_gzip(ae);
    static_file f;
    int status = 0;
    if (static_open_at(m->root_fd, rest, len, m->index, gz_ok ? STATIC_GZIP : 0, &f, &status) < 0) {
        resp_error(c, status, status == 404 ? "not found" : status == 400 ? "bad path" : "cannot open file", 0);
        return;
    }
    resp r;
    if (f.is_dir_redirect) {
        char loc[PATH_MAX];
        const char *url = http_req_url(rq);
        snprintf(loc, sizeof loc, "%.*s/%.*s", (int)rq->path_len, url, (int)(rq->url_len - rq->path_len), url + rq->path_len);
        resp_begin(&r, c, 301);
        resp_header(&r, "Location", 8, loc, strlen(loc));
        resp_finish(&r, "text/plain; charset=utf-8", "", 0);
        return;
    }
    const char *cc = m->cache_control ? m->cache_control : "public, max-age=0, must-revalidate";
    char lm[30];
    static_http_date(f.mtime, lm);
    int compressible = static_compressible(f.content_type);
    const sconfig *cfg = c->w->app_cfg;
    off_t start = 0, blen = f.size;
    int range = f.gzip ? 0 : static_if_range(&f, http_req_header(rq, "if-range", NULL))
                             ? static_range(http_req_header(rq, "range", NULL), f.size, &start, &blen) : 0;
    /* Which representation: the .gz sibling (f.gzip), small compressible files gzipped here, or the
     * file as is. Each has its own strong ETag (RFC 9110 8.8.3: "-gz" for both gzip forms), chosen
     * before the conditionals so If-None-Match compares against the one this client would get;
     * HEAD takes the same decision as GET, so it reports the same encoding and length. */
    int fly = !f.gzip && !range && compressible && gz_ok && cfg->gzip_enabled && f.size >= (off_t)cfg->gzip_threshold &&
              f.size <= (1 << 20);
    size_t el = strlen(f.etag);
    if (el < 2 || el + 3 >= sizeof f.etag) fly = 0;
    if (fly) memcpy(f.etag + el - 1, "-gz\"", 5);
    if (static_not_modified(&f, http_req_header(rq, "if-none-match", NULL), http_req_header(rq, "if-modified-since", NULL))) {
        resp_begin(&r, c, 304);
        resp_header(&r, "ETag", 4, f.etag, strlen(f.etag));
        resp_header(&r, "Last-Modified", 13, lm, 29);
        resp_header(&r, "Cache-Control", 13, cc, strlen(cc));
        if (compressible) resp_header(&r, "Vary", 4, "Accept-Encoding", 15);
        resp_finish(&r, NULL, "", 0);
        static_close(&f);
        return;
    }
    if (range < 0) {
        char cr[64];
        int k = snprintf(cr, sizeof cr, "bytes */%lld", (long long)f.size);
        resp_begin(&r, c, 416);
        resp_header(&r, "Content-Range", 13, cr, (size_t)k);
        resp_finish(&r, "text/plain; charset=utf-8", "", 0);
        static_close(&f);
        return;
    }
    if (fly) {
        char *data = malloc((size_t)f.size);
        ssize_t got = data ? pread(f.fd, data, (size_t)f.size, 0) : -1;
        const char *gz;
        size_t gzlen;
        if (got == f.size && resp_gzip(c->w, data, (size_t)f.size, &gz, &gzlen) == 0) {
            resp_begin(&r, c, 200);
            resp_header(&r, "ETag", 4, f.etag, strlen(f.etag));
            resp_header(&r, "Last-Modified", 13, lm, 29);
            resp_header(&r, "Cache-Control", 13, cc, strlen(cc));
            resp_header(&r, "Vary", 4, "Accept-Encoding", 15);
            resp_header(&r, "Content-Encoding", 16, "gzip", 4);   /* resp_finish gzips nothing more */
            resp_finish(&r, f.content_type, gz, gzlen);               /* HEAD: headers only */
            free(data);
            static_close(&f);
            return;
        }
        free(data);
        f.etag[el - 1] = '"';                                        /* fall back to the file as is */
        f.etag[el] = 0;
    }
    resp_begin(&r, c, range ? 206 : 200);
    resp_header(&r, "ETag", 4, f.etag, strlen(f.etag));
    resp_header(&r, "Last-Modified", 13, lm, 29);
    resp_header(&r, "Cache-Control", 13, cc, strlen(cc));
    resp_header(&r, "Accept-Ranges", 13, "bytes", 5);
    if (compressible) resp_header(&r, "Vary", 4, "Accept-Encoding", 15);
    if (f.gzip) resp_header(&r, "Content-Encoding", 16, "gzip", 4);
    if (range) {
        char cr[96];
        int k = snprintf(cr, sizeof cr, "bytes %lld-%lld/%lld", (long long)start, (long long)(start + blen - 1), (long long)f.size);
        resp_header(&r, "Content-Range", 13, cr, (size_t)k);
    }
    resp_finish_headers(&r, f.content_type, (size_t)blen);
    if (rq->method == HTTP_HEAD || blen == 0) { static_close(&f); return; }
    /* small bodies go out with the headers in one send (pipelined responses too); larger ones
     * follow with sendfile, the headers held back with MSG_MORE so both leave in one segment */
    if (blen <= 16384 && buf_reserve(&c->out, (size_t)blen) == 0) {
        ssize_t got = pread(f.fd, c->out.data + c->out.len, (size_t)blen, start);
        if (got == blen) { c->out.len += (size_t)blen; static_close(&f); return; }
    }
    conn_send_file(c, f.fd, start, blen);   /* the connection's body source: sent after the headers */
}

/* req:multipart() -> { {name=, filename=, content_type=, data=}, ... } | nil, err */
int web_lua_multipart(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "headers");
    lua_getfield(L, -1, "content-type");
    const char *ct = lua_tostring(L, -1);
    lua_getfield(L, 1, "body");
    size_t blen;
    const char *body = lua_tolstring(L, -1, &blen);
    if (!ct || !body) { lua_pushnil(L); lua_pushstring(L, "multipart: not a multipart/form-data request"); return 2; }
    enum { MAXP = 1000 };
    multipart_part *parts = malloc(MAXP * sizeof *parts);
    char *scratch = malloc(8192);
    size_t n = 0;
    const char *err = NULL;
    if (!parts || !scratch || multipart_parse(ct, body, blen, parts, MAXP, &n, scratch, 8192, &err)) {
        free(parts);
        free(scratch);
        lua_pushnil(L);
        lua_pushstring(L, err ? err : "out of memory");
        return 2;
    }
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_createtable(L, 0, 4);
        lua_pushlstring(L, parts[i].name, parts[i].name_len);
        lua_setfield(L, -2, "name");
        if (parts[i].filename) { lua_pushlstring(L, parts[i].filename, parts[i].filename_len); lua_setfield(L, -2, "filename"); }
        if (parts[i].content_type) { lua_pushlstring(L, parts[i].content_type, parts[i].content_type_len); lua_setfield(L, -2, "content_type"); }
        lua_pushlstring(L, parts[i].data, parts[i].data_len);
        lua_setfield(L, -2, "data");
        lua_rawseti(L, -2, (int)i + 1);
    }
    free(parts);
    free(scratch);
    return 1;
}
