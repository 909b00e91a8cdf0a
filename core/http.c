/* http.c: request parsing. core/httpscan.c checks every byte of the framing strictly; http-parser
 * splits the header block it accepted into method, target and fields; this file decides the
 * framing (RFC 9112 6: Content-Length, chunked, keep-alive), reads the body and maps failures to
 * 400/413/414/417/431/501/505. The reasons for this split are in docs/architecture.md. */
#include "http.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { PH_HEAD, PH_CL, PH_CHUNKED };

/* Byte classes, one table lookup per byte. */
enum { C_TCHAR = 1, C_BADRESP = 4, C_REGNAME = 8, C_IPLIT = 16 };
static unsigned char byte_class[256], lower[256];

__attribute__((constructor)) static void init_tables(void)
{
    for (int c = 0; c < 256; c++) {
        unsigned char k = 0;
        int alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (alnum || (c && strchr("!#$%&'*+-.^_`|~", c) != NULL)) k |= C_TCHAR;
        if (c == '\r' || c == '\n' || c == 0) k |= C_BADRESP;       /* what could split a response */
        /* RFC 3986 reg-name (unreserved, sub-delims; '%' is checked apart) without ',': a comma
         * in Host is two values folded into one (RFC 9110 7.2: a single host) */
        if (alnum || (c && strchr("-._~!$&'()*+;=", c) != NULL)) k |= C_REGNAME | C_IPLIT;
        if (c == ':' || c == '%') k |= C_IPLIT;
        byte_class[c] = k;
        lower[c] = (unsigned char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
    }
    /* http-parser's own cap (80 KB by default) must not undercut limits.header_size (<= 1 MB) */
    http_parser_set_max_header_size(2u << 20);
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    c |= 0x20;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

static http_conn_parser *cp_of(http_parser *p) { return (http_conn_parser *)p; }

static int fail(http_conn_parser *cp, int status, const char *msg)
{
    cp->err_status = status;
    cp->err_msg = msg;
    return -1;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    http_conn_parser *cp = cp_of(p);
    http_req *r = cp->req;
    r->url_len += (uint32_t)len;
    if (r->url_len > cp->lim.url_size) return fail(cp, 414, "URI too long");
    return buf_append(&r->store, at, len) ? fail(cp, 500, "out of memory") : 0;
}

/* Ends the string being accumulated (url, name or value) with a NUL. */
static int terminate(http_conn_parser *cp)
{
    return buf_append(&cp->req->store, "", 1) ? fail(cp, 500, "out of memory") : 0;
}

/* A new entry at the end of req->headers (the inline array, then a heap one). */
static http_header *new_header(http_conn_parser *cp)
{
    http_req *r = cp->req;
    if (r->nheaders >= cp->lim.max_headers || r->nheaders >= HTTP_MAX_HEADERS_HARD) {
        fail(cp, 431, "too many request headers");
        return NULL;
    }
    if (r->nheaders == r->cap_headers) {        /* grow past the inline array */
        unsigned nc = r->cap_headers * 2 > HTTP_MAX_HEADERS_HARD ? HTTP_MAX_HEADERS_HARD : r->cap_headers * 2;
        http_header *nh = r->headers == r->inline_headers ? malloc(nc * sizeof *nh)
                                                            : realloc(r->headers, nc * sizeof *nh);
        if (!nh) { fail(cp, 500, "out of memory"); return NULL; }
        if (r->headers == r->inline_headers) memcpy(nh, r->inline_headers, sizeof r->inline_headers);
        r->headers = nh;
        r->cap_headers = nc;
    }
    http_header *h = &r->headers[r->nheaders++];
    h->name = (uint32_t)r->store.len;
    h->nlen = h->value = h->vlen = 0;
    return h;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    http_conn_parser *cp = cp_of(p);
    http_req *r = cp->req;
    if (r->nheaders == 0 && !r->in_value && r->store.len == r->url + r->url_len) {
        if (terminate(cp)) return -1;     /* end of the url */
    }
    if (r->in_value || r->nheaders == 0) {
        if (r->nheaders && terminate(cp)) return -1;      /* end of the previous value */
        if (!new_header(cp)) return -1;
        r->in_value = 0;
    }
    http_header *h = &r->headers[r->nheaders - 1];
    if (buf_reserve(&r->store, len)) return fail(cp, 500, "out of memory");
    char *dst = r->store.data + r->store.len;
    for (size_t i = 0; i < len; i++) dst[i] = (char)lower[(unsigned char)at[i]];
    r->store.len += len;
    h->nlen += (uint32_t)len;
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    http_conn_parser *cp = cp_of(p);
    http_req *r = cp->req;
    http_header *h = &r->headers[r->nheaders - 1];
    if (!r->in_value) {
        if (terminate(cp)) return -1;     /* end of the name */
        h->value = (uint32_t)r->store.len;
        h->vlen = 0;
        r->in_value = 1;
    }
    if (buf_append(&r->store, at, len)) return fail(cp, 500, "out of memory");
    h->vlen += (uint32_t)len;
    return 0;
}

static int value_is(const http_req *r, const http_header *h, const char *lit)
{
    size_t n = strlen(lit);
    return h->vlen == n && strncasecmp(http_hvalue(r, h), lit, n) == 0;
}

/* RFC 9110 tchar: the only bytes allowed in a header name. */
static inline int is_tchar(unsigned char c) { return byte_class[c] & C_TCHAR; }
static inline int is_ows(char c) { return c == ' ' || c == '\t'; }

/* RFC 9110 7.2 / RFC 3986 3.2.2: uri-host [ ":" port ]; empty only when allow_empty. */
static int host_valid(const char *s, size_t n, int allow_empty)
{
    size_t i = 0;
    if (n == 0) return allow_empty;
    if (s[0] == '[') {                  /* IP-literal */
        while (++i < n && s[i] != ']')
            if (!(byte_class[(unsigned char)s[i]] & C_IPLIT)) return 0;
        if (i == n || i == 1) return 0;
        i++;
    } else {
        const unsigned char *u = (const unsigned char *)s;
        for (;;) {
            while (i < n && (byte_class[u[i]] & C_REGNAME)) i++;
            if (i == n || u[i] != '%') break;
            if (i + 2 >= n || hexval(u[i + 1]) < 0 || hexval(u[i + 2]) < 0) return 0;
            i += 3;
        }
        if (i == 0) return 0;           /* ":80" */
    }
    if (i < n) {
        if (s[i] != ':') return 0;
        for (i++; i < n; i++) if ((unsigned char)(s[i] - '0') > 9) return 0;
    }
    return 1;
}

/* Connection options (a comma list, RFC 9110 7.6.1) that decide keep-alive. */
static void connection_options(const char *v, size_t n, int *close, int *keep)
{
    size_t i = 0;
    while (i < n) {
        while (i < n && (is_ows(v[i]) || v[i] == ',')) i++;
        size_t a = i;
        while (i < n && v[i] != ',') i++;
        size_t e = i;
        while (e > a && is_ows(v[e - 1])) e--;
        if (e - a == 5 && strncasecmp(v + a, "close", 5) == 0) *close = 1;
        else if (e - a == 10 && strncasecmp(v + a, "keep-alive", 10) == 0) *keep = 1;
    }
}

/* RFC 9112 6.1/6.3: chunked must be the final coding and appear once (else 400); any other
 * coding is one sluice does not decode (501). An empty list element is refused as well: a
 * framing header is no place to be lenient. */
static int transfer_codings(http_conn_parser *cp, const char *v, size_t n)
{
    int chunked = 0, other = 0;
    size_t i = 0;
    for (;;) {
        size_t a = i;
        while (i < n && v[i] != ',') i++;
        size_t e = i;
        while (a < e && is_ows(v[a])) a++;
        while (e > a && is_ows(v[e - 1])) e--;
        if (a == e) return fail(cp, 400, "empty element in Transfer-Encoding");
        size_t t = a;
        while (t < e && is_tchar((unsigned char)v[t])) t++;
        if (t == a) return fail(cp, 400, "invalid Transfer-Encoding");
        int is_chunked = t == e && e - a == 7 && strncasecmp(v + a, "chunked", 7) == 0;
        if (t < e) {                    /* only parameters may follow a coding's name */
            while (t < e && is_ows(v[t])) t++;
            if (v[t] != ';') return fail(cp, 400, "invalid Transfer-Encoding");
        }
        if (chunked) return fail(cp, 400, "chunked must be the last transfer coding, and only once");
        if (is_chunked) chunked = 1;
        else other = 1;
        if (i >= n) break;
        i++;
    }
    if (!chunked) return fail(cp, 400, "chunked must be the last transfer coding, and only once");
    if (other) return fail(cp, 501, "unsupported transfer coding (only chunked is implemented)");
    cp->req->chunked = 1;
    return 0;
}

/* RFC 9112 3.2: origin-form, "*" for OPTIONS, or absolute-form, which is reduced to its path and
 * query (the authority is returned for Host, 3.2.2). A fragment is cut off first: it is never
 * part of a request target. */
static int request_target(http_conn_parser *cp, uint32_t *auth, uint32_t *auth_len)
{
    http_req *r = cp->req;
    char *url = r->store.data + r->url;
    char *hash = memchr(url, '#', r->url_len);
    if (hash) {
        r->url_len = (uint32_t)(hash - url);
        *hash = 0;
    }
    *auth_len = 0;
    if (r->url_len && url[0] == '/') return 0;
    if (r->url_len == 1 && url[0] == '*') return r->method == HTTP_OPTIONS ? 0 : fail(cp, 400, "'*' is a target for OPTIONS only");
    if (r->method == HTTP_CONNECT) return fail(cp, 501, "CONNECT is not supported");
    size_t i = 0, n = r->url_len;
    while (i < n && url[i] != ':') i++;
    if (!((i == 4 && strncasecmp(url, "http", 4) == 0) || (i == 5 && strncasecmp(url, "https", 5) == 0)) ||
        i + 3 > n || url[i + 1] != '/' || url[i + 2] != '/')
        return fail(cp, 400, "request target must be an absolute path or an http(s) URI");
    size_t a = i + 3, e = a;
    while (e < n && url[e] != '/' && url[e] != '?') e++;
    if (memchr(url + a, '@', e - a)) return fail(cp, 400, "userinfo in the request target");
    if (!host_valid(url + a, e - a, 0)) return fail(cp, 400, "invalid authority in the request target");
    *auth = r->url + (uint32_t)a;
    *auth_len = (uint32_t)(e - a);
    if (e < n && url[e] == '/') {
        r->url += (uint32_t)e;
        r->url_len -= (uint32_t)e;
        return 0;
    }
    /* "http://h" or "http://h?q": the path is "/" ("*" for OPTIONS without a query) */
    uint32_t off = (uint32_t)r->store.len, rest = r->url + (uint32_t)e, rn = (uint32_t)(n - e);
    const char *root = r->method == HTTP_OPTIONS && rn == 0 ? "*" : "/";
    if (buf_reserve(&r->store, rn + 2)) return fail(cp, 500, "out of memory");
    buf_append(&r->store, root, 1);
    buf_append(&r->store, r->store.data + rest, rn);
    buf_append(&r->store, "", 1);
    r->url = off;
    r->url_len = rn + 1;
    return 0;
}

/* 3.2.2: with an absolute-form target the server uses its authority, not the Host field. */
static int host_from_target(http_conn_parser *cp, int ih, uint32_t auth, uint32_t auth_len)
{
    http_req *r = cp->req;
    http_header *h;
    if (ih >= 0) {
        h = &r->headers[ih];
    } else {                            /* HTTP/1.0 may omit Host: add one */
        if (!(h = new_header(cp))) return -1;
        if (buf_append(&r->store, "host", 5)) return fail(cp, 500, "out of memory");
        h->nlen = 4;
        r->nhost = 1;
    }
    if (buf_reserve(&r->store, auth_len + 1)) return fail(cp, 500, "out of memory");
    h->value = (uint32_t)r->store.len;
    h->vlen = auth_len;
    buf_append(&r->store, r->store.data + auth, auth_len);
    buf_append(&r->store, "", 1);
    return 0;
}

static int parse_content_length(http_conn_parser *cp, const http_header *h)
{
    const char *v = http_hvalue(cp->req, h);
    uint64_t n = 0;
    if (h->vlen == 0 || h->vlen > 18) return fail(cp, 400, "invalid Content-Length");
    for (uint32_t i = 0; i < h->vlen; i++) {
        if (v[i] < '0' || v[i] > '9') return fail(cp, 400, "invalid Content-Length");
        n = n * 10 + (uint64_t)(v[i] - '0');
    }
    cp->content_length = n;
    cp->req->has_cl = 1;
    if (n > cp->lim.body_size) return fail(cp, 413, "request body too large");
    return 0;
}

/* Every field of the header block is in; decides the framing. Returns 1 (http-parser is told
 * there is no body: http_feed() reads it) or -1 with err_status set. */
static int on_headers_complete(http_parser *p)
{
    http_conn_parser *cp = cp_of(p);
    http_req *r = cp->req;
    if (r->nheaders == 0) {
        if (terminate(cp)) return -1;     /* url */
    } else if (r->in_value) {
        if (terminate(cp)) return -1;
    } else {
        /* a name without a value cannot reach here: http-parser rejects it */
        return fail(cp, 400, "malformed header");
    }
    r->method = p->method;
    r->http_major = p->http_major;
    r->http_minor = p->http_minor;
    r->head = p->method == HTTP_HEAD;
    r->headers_done = 1;
    r->header_bytes = cp->scan.bytes;
    /* http-parser accepts any single-digit version; only HTTP/1.x has this framing */
    if (r->http_major != 1) return fail(cp, 505, "HTTP version not supported");
    uint32_t auth = 0, auth_len = 0;
    if (request_target(cp, &auth, &auth_len)) return -1;
    const char *url = http_req_url(r);
    const char *q = memchr(url, '?', r->url_len);
    r->path_len = q ? (uint32_t)(q - url) : r->url_len;

    /* httpscan already held every name to tchar and every value to field-vchar/SP/HTAB */
    unsigned ncl = 0, nte = 0;
    int ih = -1, icl = -1, ite = -1, close = 0, keep = 0;
    for (unsigned i = 0; i < r->nheaders; i++) {
        http_header *h = &r->headers[i];
        char *v = r->store.data + h->value;
        while (h->vlen && is_ows(v[0])) v++, h->value++, h->vlen--;      /* OWS is not part of */
        while (h->vlen && is_ows(v[h->vlen - 1])) v[--h->vlen] = 0;      /* a value (5.1) */
        const char *n = http_hname(r, h);
        switch (h->nlen) {
        case 4: if (memcmp(n, "host", 4) == 0) r->nhost++, ih = (int)i; break;
        case 6:
            if (memcmp(n, "expect", 6) == 0) {
                if (!value_is(r, h, "100-continue")) return fail(cp, 417, "unsupported Expect value");
                r->expect_continue = 1;
            }
            break;
        case 10: if (memcmp(n, "connection", 10) == 0) connection_options(v, h->vlen, &close, &keep); break;
        case 14: if (memcmp(n, "content-length", 14) == 0) ncl++, icl = (int)i; break;
        case 17: if (memcmp(n, "transfer-encoding", 17) == 0) nte++, ite = (int)i; break;
        }
    }
    if (ncl > 1) return fail(cp, 400, "duplicate Content-Length");
    if (nte > 1) return fail(cp, 400, "duplicate Transfer-Encoding");
    /* 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing */
    if (nte && r->http_minor == 0) return fail(cp, 400, "Transfer-Encoding in an HTTP/1.0 request");
    if (ncl && nte) return fail(cp, 400, "both Content-Length and Transfer-Encoding");
    if (r->http_minor >= 1 && r->nhost == 0) return fail(cp, 400, "missing Host header");
    if (r->nhost > 1) return fail(cp, 400, "duplicate Host header");
    if (ih >= 0 && !host_valid(http_hvalue(r, &r->headers[ih]), r->headers[ih].vlen, 1))
        return fail(cp, 400, "invalid Host header");
    if (ite >= 0 && transfer_codings(cp, http_hvalue(r, &r->headers[ite]), r->headers[ite].vlen)) return -1;
    if (icl >= 0 && parse_content_length(cp, &r->headers[icl])) return -1;
    r->keepalive = !close && (r->http_minor >= 1 || keep);
    if (auth_len && host_from_target(cp, ih, auth, auth_len)) return -1;
    return 1;
}

static int on_message_complete(http_parser *p)
{
    cp_of(p)->hp_done = 1;
    return 0;
}

static const http_parser_settings settings = {
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_message_complete = on_message_complete,
};

static void begin_message(http_conn_parser *cp)
{
    const http_limits *l = &cp->lim;
    http_req_reset(cp->req);
    http_parser_init(&cp->p, HTTP_REQUEST);
    httpscan_begin(&cp->scan, l->header_size, l->url_size, l->max_headers, l->body_size);
    cp->phase = PH_HEAD;
    cp->body_left = cp->content_length = 0;
    cp->hp_done = 0;
    cp->fresh = 0;
}

void http_parser_setup(http_conn_parser *cp, http_req *req, const http_limits *lim)
{
    cp->req = req;
    cp->lim = *lim;
    cp->err_status = 0;
    cp->err_msg = NULL;
    http_req_reset(req);
    cp->fresh = 1;
}

/* Hands validated header-block bytes to http-parser. */
static int run_parser(http_conn_parser *cp, const char *p, size_t n)
{
    size_t got = http_parser_execute(&cp->p, &settings, p, n);
    enum http_errno e = HTTP_PARSER_ERRNO(&cp->p);
    if (e == HPE_OK && got == n) return 0;
    if (!cp->err_status) {
        cp->err_status = e == HPE_INVALID_METHOD ? 501 : e == HPE_HEADER_OVERFLOW ? 431 : 400;
        cp->err_msg = e == HPE_INVALID_METHOD ? "method not implemented"
                    : e == HPE_UNEXPECTED_CONTENT_LENGTH
                        ? (http_req_header(cp->req, "transfer-encoding", NULL) ? "both Content-Length and Transfer-Encoding"
                                                                              : "duplicate Content-Length")
                    : e == HPE_INVALID_CONTENT_LENGTH ? "invalid Content-Length"
                    : e == HPE_INVALID_TRANSFER_ENCODING ? "invalid Transfer-Encoding"
                    : e == HPE_INVALID_URL ? "invalid request target"
                    : e == HPE_INVALID_VERSION ? "invalid HTTP version"
                    : e == HPE_HEADER_OVERFLOW ? "request header block too large"
                    : "malformed request";
    }
    return -1;
}

http_feed_result http_feed(http_conn_parser *cp, const char *data, size_t len, size_t *used)
{
    http_req *r = cp->req;
    /* the previous request was answered (the caller feeds again only then): forget it now,
     * not at the next message's first byte, or empty lines between requests (RFC 9112 2.2)
     * would see its headers_done/expect_continue and get a second 100 Continue */
    if (cp->fresh) begin_message(cp);
    size_t i = 0;
    while (i < len) {
        size_t k = 0;
        if (cp->phase == PH_HEAD) {
            httpscan_ev ev = httpscan_head(&cp->scan, data + i, len - i, &k);
            size_t from = i + cp->scan.lead;
            i += k;
            if (ev == HS_SKIP) continue;
            if (ev == HS_METHOD) {      /* split across reads: it comes from the scanner's copy */
                if (run_parser(cp, cp->scan.method, cp->scan.mlen)) break;
                continue;
            }
            if (ev == HS_ERROR) {
                /* the valid bytes before the offending one go to http-parser first: an error it
                 * finds there comes earlier in the stream, whatever the reads' boundaries */
                if (!(i > from && cp->scan.in_block && run_parser(cp, data + from, i - from)))
                    fail(cp, cp->scan.status, cp->scan.msg);
                break;
            }
            if (i > from && run_parser(cp, data + from, i - from)) break;
            if (ev == HS_HEAD_END) {
                if (!cp->hp_done) { fail(cp, 400, "malformed request"); break; }
                if (r->chunked) {
                    cp->phase = PH_CHUNKED;
                    httpscan_chunked_begin(&cp->scan);
                } else if (cp->content_length) {
                    cp->phase = PH_CL;
                    cp->body_left = cp->content_length;
                } else {
                    r->complete = 1;
                }
            }
        } else if (cp->phase == PH_CL) {
            k = len - i < cp->body_left ? len - i : (size_t)cp->body_left;
            if (buf_append(&r->body, data + i, k)) { fail(cp, 500, "out of memory"); break; }
            i += k;
            cp->body_left -= k;
            if (!cp->body_left) r->complete = 1;
        } else {
            httpscan_body b = httpscan_chunked(&cp->scan, data + i, len - i, &k, &r->body);
            i += k;
            if (b == HB_ERROR) { fail(cp, cp->scan.status, cp->scan.msg); break; }
            if (b == HB_DONE) r->complete = 1;
        }
        if (r->complete) {
            cp->fresh = 1;
            *used = i;
            return FEED_REQUEST;
        }
    }
    *used = i;
    if (cp->err_status) return FEED_ERROR;
    return r->headers_done ? FEED_HEADERS : FEED_MORE;
}

void http_req_reset(http_req *r)
{
    buf_reset(&r->store);
    buf_reset(&r->body);
    if (!r->headers) {
        r->headers = r->inline_headers;
        r->cap_headers = sizeof r->inline_headers / sizeof *r->inline_headers;
    }
    r->nheaders = 0;
    r->url = r->url_len = r->path_len = 0;
    r->keepalive = r->expect_continue = r->chunked = r->has_cl = r->head = 0;
    r->complete = r->headers_done = 0;
    r->nhost = 0;
    r->header_bytes = 0;
    r->in_value = 0;
}

void http_req_free(http_req *r)
{
    buf_free(&r->store);
    buf_free(&r->body);
    if (r->headers && r->headers != r->inline_headers) free(r->headers);
    r->headers = r->inline_headers;
    r->cap_headers = sizeof r->inline_headers / sizeof *r->inline_headers;
    r->nheaders = 0;
}

const char *http_req_header(const http_req *r, const char *lname, size_t *vlen)
{
    size_t n = strlen(lname);
    for (unsigned i = 0; i < r->nheaders; i++) {
        const http_header *h = &r->headers[i];
        if (h->nlen == n && memcmp(http_hname(r, h), lname, n) == 0) {
            if (vlen) *vlen = h->vlen;
            return http_hvalue(r, h);
        }
    }
    return NULL;
}

const char *http_reason(int s)
{
    switch (s) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 418: return "I'm a teapot";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return s < 200 ? "Informational" : s < 300 ? "Success" : s < 400 ? "Redirect" : s < 500 ? "Client Error" : "Server Error";
    }
}

int http_header_unsafe(const char *s, size_t n, int is_name)
{
    const unsigned char *u = (const unsigned char *)s;
    if (is_name) {
        if (n == 0) return 1;
        for (size_t i = 0; i < n; i++) if (!(byte_class[u[i]] & C_TCHAR)) return 1;
        return 0;
    }
    unsigned char acc = 0;
    for (size_t i = 0; i < n; i++) acc |= byte_class[u[i]];
    return (acc & C_BADRESP) != 0;
}

long http_urldecode(char *s, size_t n, int plus_is_space)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%') {
            if (i + 2 >= n) return -1;
            int h = hexval((unsigned char)s[i + 1]), l = h < 0 ? -1 : hexval((unsigned char)s[i + 2]);
            if (h < 0 || l < 0) return -1;
            c = (char)(h * 16 + l);
            if (c == 0) return -1;
            i += 2;
        } else if (c == '+' && plus_is_space) {
            c = ' ';
        }
        s[o++] = c;
    }
    s[o] = 0;
    return (long)o;
}
