/* response.c: response serialization into the connection's output buffer, with gzip. The
 * headers of the layers above (request id, CORS) come from the connection's
 * conn_ops.on_response_headers hook. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "clock.h"
#include "conn.h"
#include "ctx.h"
#include "response.h"
#include "sconfig.h"

#define LIT(b, s) buf_append((b), s, sizeof(s) - 1)

void resp_begin(resp *r, conn *c, int status)
{
    memset(r, 0, sizeof *r);
    r->c = c;
    r->status = status;
    r->hdr_start = c->out.len;
    buf *b = &c->out;
    switch (status) {          /* the common ones in one copy */
    case 200: LIT(b, "HTTP/1.1 200 OK\r\n"); break;
    case 201: LIT(b, "HTTP/1.1 201 Created\r\n"); break;
    case 204: LIT(b, "HTTP/1.1 204 No Content\r\n"); break;
    case 304: LIT(b, "HTTP/1.1 304 Not Modified\r\n"); break;
    case 404: LIT(b, "HTTP/1.1 404 Not Found\r\n"); break;
    default:
        LIT(b, "HTTP/1.1 ");
        buf_putu(b, (unsigned)status);
        LIT(b, " ");
        buf_puts(b, http_reason(status));
        LIT(b, "\r\n");
    }
    c->status = status;
}

/* Is a content type (value of length n, not NUL-terminated) in compression.types? */
static int compressible_n(const sconfig *cfg, const char *ctype, size_t n)
{
    for (size_t i = 0; i < cfg->ngzip_types; i++) {
        size_t tl = strlen(cfg->gzip_types[i]);
        if (n >= tl && strncasecmp(ctype, cfg->gzip_types[i], tl) == 0) return 1;
    }
    return 0;
}

int resp_header(resp *r, const char *name, size_t nlen, const char *value, size_t vlen)
{
    if (http_header_unsafe(name, nlen, 1) || http_header_unsafe(value, vlen, 0)) return -1;
    /* the core owns framing: a handler cannot set these */
    if ((nlen == 14 && strncasecmp(name, "content-length", 14) == 0) ||
        (nlen == 17 && strncasecmp(name, "transfer-encoding", 17) == 0) ||
        (nlen == 10 && strncasecmp(name, "connection", 10) == 0) ||
        (nlen == 4 && strncasecmp(name, "date", 4) == 0))
        return 0;
    if (nlen == 12 && strncasecmp(name, "content-type", 12) == 0) {
        r->has_ctype = 1;
        /* the handler's type decides, not the default one resp_finish is given: an image/png
         * body must not be gzipped. Marking it "already encoded" skips gzip and Vary. */
        if (!compressible_n(r->c->w->app_cfg, value, vlen)) r->has_encoding = 1;
    }
    if (nlen == 4 && strncasecmp(name, "vary", 4) == 0) r->has_vary = 1;
    if (nlen == 16 && strncasecmp(name, "content-encoding", 16) == 0) r->has_encoding = 1;
    buf *b = &r->c->out;
    buf_append(b, name, nlen);
    LIT(b, ": ");
    buf_append(b, value, vlen);
    LIT(b, "\r\n");
    return 0;
}

/* Does the client accept gzip? RFC 9110 12.5.3: "gzip" (or "x-gzip") with q > 0, or, when
 * gzip is not named, "*" with q > 0. */
static int accepts_gzip(const http_req *req)
{
    size_t n;
    const char *v = http_req_header(req, "accept-encoding", &n);
    if (!v) return 0;
    double gzip_q = -1, star_q = -1;
    const char *p = v, *end = v + n;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ',')) p++;
        const char *tok = p;
        while (p < end && *p != ',' && *p != ';' && *p != ' ' && *p != '\t') p++;
        size_t tl = (size_t)(p - tok);
        double q = 1;
        const char *item_end = memchr(p, ',', (size_t)(end - p));
        if (!item_end) item_end = end;
        for (const char *k = p; k + 1 < item_end; k++)      /* ";q=0.5" (spaces allowed) */
            if ((k[0] == 'q' || k[0] == 'Q') && k[1] == '=' && k > p && (k[-1] == ';' || k[-1] == ' ')) {
                q = strtod(k + 2, NULL);
                break;
            }
        if ((tl == 4 && strncasecmp(tok, "gzip", 4) == 0) || (tl == 6 && strncasecmp(tok, "x-gzip", 6) == 0))
            gzip_q = q;
        else if (tl == 1 && *tok == '*')
            star_q = q;
        p = item_end;
    }
    return gzip_q >= 0 ? gzip_q > 0 : star_q > 0;
}

/* Deflates body into w->scratch as a gzip member; returns 0 on success. */
static int gzip_body(worker *w, int level, const char *body, size_t len)
{
    if (w->z_ready && w->z_level != level) { deflateEnd(&w->z); w->z_ready = 0; }
    if (!w->z_ready) {
        memset(&w->z, 0, sizeof w->z);
        if (deflateInit2(&w->z, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) return -1;
        w->z_ready = 1;
        w->z_level = level;
    } else {
        deflateReset(&w->z);
    }
    size_t bound = deflateBound(&w->z, len);
    buf_reset(&w->scratch);
    if (buf_reserve(&w->scratch, bound)) return -1;
    w->z.next_in = (Bytef *)body;
    w->z.avail_in = (uInt)len;
    w->z.next_out = (Bytef *)w->scratch.data;
    w->z.avail_out = (uInt)bound;
    if (deflate(&w->z, Z_FINISH) != Z_STREAM_END) return -1;
    w->scratch.len = bound - w->z.avail_out;
    return 0;
}

int resp_gzip(worker *w, const char *body, size_t len, const char **out, size_t *outlen)
{
    if (gzip_body(w, w->app_cfg->gzip_level, body, len)) return -1;
    *out = w->scratch.data;
    *outlen = w->scratch.len;
    return 0;
}

static void end_headers(resp *r);

static void upper_headers(resp *r)
{
    const conn_ops *ops = r->c->ops;
    if (ops && ops->on_response_headers) ops->on_response_headers(r);
}

void resp_finish(resp *r, const char *ctype, const char *body, size_t len)
{
    conn *c = r->c;
    worker *w = c->w;
    const sconfig *cfg = w->app_cfg;
    buf *b = &c->out;
    /* RFC 9110: 204, 304 (and 1xx) have no content and no Content-Length; 205 has no content,
     * but it is not in RFC 9112's list of bodiless responses, so it says Content-Length: 0 */
    int no_body = r->status == 204 || r->status == 205 || r->status == 304 || r->status < 200;
    upper_headers(r);
    if (!r->has_ctype && ctype && !no_body) {
        LIT(b, "Content-Type: ");
        buf_puts(b, ctype);
        LIT(b, "\r\n");
    }
    if (!no_body && cfg->gzip_enabled && len >= cfg->gzip_threshold && !r->has_encoding && ctype &&
        compressible_n(cfg, ctype, strlen(ctype))) {
        if (!r->has_vary) LIT(b, "Vary: Accept-Encoding\r\n");
        if (accepts_gzip(&c->req) && gzip_body(w, cfg->gzip_level, body, len) == 0 && w->scratch.len < len) {
            LIT(b, "Content-Encoding: gzip\r\n");
            body = w->scratch.data;
            len = w->scratch.len;
        }
    }
    if (!no_body) {
        LIT(b, "Content-Length: ");
        buf_putu(b, len);
        LIT(b, "\r\n");
    } else if (r->status == 205) {
        LIT(b, "Content-Length: 0\r\n");
    }
    end_headers(r);
    if (!no_body && !c->req.head) buf_append(b, body, len);
    c->resp_bytes = no_body ? 0 : len;
}

/* Status line and headers are in place; Date, Connection and the blank line end them. */
static void end_headers(resp *r)
{
    conn *c = r->c;
    worker *w = c->w;
    buf *b = &c->out;
    worker_update_date(w);
    LIT(b, "Date: ");
    buf_append(b, w->date, 29);
    LIT(b, "\r\n");
    if (r->close || !c->req.keepalive || w->stopping) {
        LIT(b, "Connection: close\r\n\r\n");
        c->want_close = 1;
    } else if (c->req.http_minor == 0) {
        LIT(b, "Connection: keep-alive\r\n\r\n");
    } else {
        LIT(b, "\r\n");
    }
}

void resp_finish_headers(resp *r, const char *ctype, size_t len)
{
    conn *c = r->c;
    buf *b = &c->out;
    upper_headers(r);
    if (!r->has_ctype && ctype) {
        LIT(b, "Content-Type: ");
        buf_puts(b, ctype);
        LIT(b, "\r\n");
    }
    LIT(b, "Content-Length: ");
    buf_putu(b, len);
    LIT(b, "\r\n");
    end_headers(r);
    c->resp_bytes = len;
}

void resp_simple(conn *c, int status, const char *ctype, const char *body, int close)
{
    resp r;
    resp_begin(&r, c, status);
    r.close = close;
    resp_finish(&r, ctype, body, strlen(body));
}

void resp_error(conn *c, int status, const char *msg, int close)
{
    resp r;
    resp_begin(&r, c, status);
    r.close = close;
    char body[512];
    /* msg is a constant from the core; quote-safe by construction, but escape anyway */
    size_t n = 0;
    n += (size_t)snprintf(body, sizeof body, "{\"error\":\"");
    for (const char *p = msg; *p && n < sizeof body - 40; p++) {
        if (*p == '"' || *p == '\\') body[n++] = '\\';
        body[n++] = (unsigned char)*p < 0x20 ? ' ' : *p;
    }
    n += (size_t)snprintf(body + n, sizeof body - n, "\",\"status\":%d}", status);
    if (status == 503 || status == 429) resp_header(&r, "Retry-After", 11, "1", 1);
    /* browsers get a page, API clients JSON */
    const char *acc = http_req_header(&c->req, "accept", NULL);
    if (acc && strstr(acc, "text/html") && !strstr(acc, "application/json")) {
        char page[1024];
        size_t m = (size_t)snprintf(page, sizeof page,
                                    "<!doctype html><html><head><meta charset=utf-8><title>%d %s</title></head>"
                                    "<body><h1>%d %s</h1><p>", status, http_reason(status), status, http_reason(status));
        for (const char *p = msg; *p && m < sizeof page - 40; p++) {
            const char *e = *p == '<' ? "&lt;" : *p == '>' ? "&gt;" : *p == '&' ? "&amp;" : NULL;
            if (e) { size_t k = strlen(e); memcpy(page + m, e, k); m += k; }
            else page[m++] = *p;
        }
        m += (size_t)snprintf(page + m, sizeof page - m, "</p></body></html>\n");
        resp_finish(&r, "text/html; charset=utf-8", page, m);
        return;
    }
    resp_finish(&r, "application/json", body, n);
}
