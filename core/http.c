/* http.c: request parsing with http-parser, limits (413/414/431) and framing checks (400). */
#include "http.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Byte classes, one table lookup per byte on the hot paths (header names and values). */
enum { C_TCHAR = 1, C_BADREQ = 2, C_BADRESP = 4 };
static unsigned char byte_class[256], lower[256];

__attribute__((constructor)) static void init_tables(void)
{
    for (int c = 0; c < 256; c++) {
        unsigned char k = 0;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            (c && strchr("!#$%&'*+-.^_`|~", c) != NULL))
            k |= C_TCHAR;
        if ((c < 0x20 && c != '\t') || c == 0x7f) k |= C_BADREQ;    /* controls in request values */
        if (c == '\r' || c == '\n' || c == 0) k |= C_BADRESP;       /* what could split a response */
        byte_class[c] = k;
        lower[c] = (unsigned char)((c >= 'A' && c <= 'Z') ? c + 32 : c);
    }
}

static http_conn_parser *cp_of(http_parser *p) { return (http_conn_parser *)p; }

static int fail(http_conn_parser *cp, int status, const char *msg)
{
    cp->err_status = status;
    cp->err_msg = msg;
    return -1;
}

static int on_message_begin(http_parser *p)
{
    http_req_reset(cp_of(p)->req);
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    http_conn_parser *cp = cp_of(p);
    http_req *r = cp->req;
    r->url_len += (uint32_t)len;
    r->header_bytes += len;
    if (r->url_len > cp->lim.url_size) return fail(cp, 414, "URI too long");
    if (r->header_bytes > cp->lim.header_size) return fail(cp, 431, "request header block too large");
    return buf_append(&r->store, at, len) ? fail(cp, 500, "out of memory") : 0;
}

/* Ends the string being accumulated (url, name or value) with a NUL. */
static int terminate(http_conn_parser *cp)
{
    return buf_append(&cp->req->store, "", 1) ? fail(cp, 500, "out of memory") : 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    http_conn_parser *cp = cp_of(p);
    http_req *r = cp->req;
    r->header_bytes += len + 4;
    if (r->header_bytes > cp->lim.header_size) return fail(cp, 431, "request header block too large");
    /* chunked trailers arrive through the same callbacks after the headers were checked and
     * terminated: they are counted against header_size but dropped (RFC 9112 7.1.2), so a
     * trailer can neither smuggle in a second Host nor leave a value without its NUL */
    if (r->headers_done) return 0;
    if (r->nheaders == 0 && !r->in_value && r->store.len == r->url + r->url_len) {
        if (terminate(cp)) return -1;     /* end of the url */
    }
    if (r->in_value || r->nheaders == 0) {
        if (r->nheaders && terminate(cp)) return -1;      /* end of the previous value */
        if (r->nheaders >= cp->lim.max_headers || r->nheaders >= HTTP_MAX_HEADERS_HARD)
            return fail(cp, 431, "too many request headers");
        if (r->nheaders == r->cap_headers) {        /* grow past the inline array */
            unsigned nc = r->cap_headers * 2 > HTTP_MAX_HEADERS_HARD ? HTTP_MAX_HEADERS_HARD : r->cap_headers * 2;
            http_header *nh = r->headers == r->inline_headers ? malloc(nc * sizeof *nh)
                                                                : realloc(r->headers, nc * sizeof *nh);
            if (!nh) return fail(cp, 500, "out of memory");
            if (r->headers == r->inline_headers) memcpy(nh, r->inline_headers, sizeof r->inline_headers);
            r->headers = nh;
            r->cap_headers = nc;
        }
        http_header *h = &r->headers[r->nheaders++];
        h->name = (uint32_t)r->store.len;
        h->nlen = 0;
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
    r->header_bytes += len;
    if (r->header_bytes > cp->lim.header_size) return fail(cp, 431, "request header block too large");
    if (r->headers_done) return 0;          /* a trailer: dropped, see on_header_field */
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
    const char *url = http_req_url(r);
    const char *q = memchr(url, '?', r->url_len);
    r->path_len = q ? (uint32_t)(q - url) : r->url_len;
    if (r->url_len == 0 || (url[0] != '/' && !(p->method == HTTP_OPTIONS && r->url_len == 1 && url[0] == '*')))
        return fail(cp, 400, "request target must be an absolute path");

    /* http-parser accepts any single-digit version; only HTTP/1.x has this framing */
    if (r->http_major != 1) return fail(cp, 505, "HTTP version not supported");

    unsigned ncl = 0, nte = 0;
    for (unsigned i = 0; i < r->nheaders; i++) {
        const http_header *h = &r->headers[i];
        const unsigned char *v = (const unsigned char *)http_hvalue(r, h);
        unsigned char bad = 0;
        for (uint32_t k = 0; k < h->vlen; k++) bad |= byte_class[v[k]];
        if (bad & C_BADREQ) return fail(cp, 400, "control character in header value");
        const char *n = http_hname(r, h);
        /* non-strict http-parser lets spaces into names ("X A:"); a proxy may read that
         * differently, so only RFC 9110 tokens are accepted */
        if (!h->nlen) return fail(cp, 400, "empty header name");
        for (uint32_t k = 0; k < h->nlen; k++)
            if (!is_tchar((unsigned char)n[k])) return fail(cp, 400, "invalid character in header name");
        if (h->nlen == 4 && memcmp(n, "host", 4) == 0) r->nhost++;
        else if (h->nlen == 14 && memcmp(n, "content-length", 14) == 0) ncl++;
        else if (h->nlen == 17 && memcmp(n, "transfer-encoding", 17) == 0) nte++;
        else if (h->nlen == 6 && memcmp(n, "expect", 6) == 0) {
            if (!value_is(r, h, "100-continue")) return fail(cp, 417, "unsupported Expect value");
            r->expect_continue = 1;
        }
    }
    if (ncl > 1) return fail(cp, 400, "duplicate Content-Length");
    if (ncl && nte) return fail(cp, 400, "both Content-Length and Transfer-Encoding");
    if (nte > 1) return fail(cp, 400, "duplicate Transfer-Encoding");
    if (r->http_major == 1 && r->http_minor >= 1 && r->nhost == 0) return fail(cp, 400, "missing Host header");
    if (r->nhost > 1) return fail(cp, 400, "duplicate Host header");
    r->chunked = (p->flags & F_CHUNKED) != 0;
    r->has_cl = ncl == 1;
    if (nte && !r->chunked) return fail(cp, 400, "unsupported Transfer-Encoding");
    if (r->has_cl && p->content_length > cp->lim.body_size) return fail(cp, 413, "request body too large");
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    http_conn_parser *cp = cp_of(p);
    http_req *r = cp->req;
    if (r->body.len + len > cp->lim.body_size) return fail(cp, 413, "request body too large");
    return buf_append(&r->body, at, len) ? fail(cp, 500, "out of memory") : 0;
}

static int on_message_complete(http_parser *p)
{
    http_conn_parser *cp = cp_of(p);
    cp->req->complete = 1;
    cp->req->keepalive = http_should_keep_alive(p) != 0;
    http_parser_pause(p, 1);        /* one request at a time: responses stay in order */
    return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

void http_parser_setup(http_conn_parser *cp, http_req *req, const http_limits *lim)
{
    http_parser_init(&cp->p, HTTP_REQUEST);
    cp->req = req;
    cp->lim = *lim;
    cp->err_status = 0;
    cp->err_msg = NULL;
    http_req_reset(req);
}

http_feed_result http_feed(http_conn_parser *cp, const char *data, size_t len, size_t *used)
{
    if (HTTP_PARSER_ERRNO(&cp->p) == HPE_PAUSED) http_parser_pause(&cp->p, 0);
    /* the previous request was answered (the caller feeds again only then): forget it now,
     * not at the next message's first byte, or empty lines between requests (RFC 9112 2.2)
     * would see its headers_done/expect_continue and get a second 100 Continue */
    if (cp->req->complete) http_req_reset(cp->req);
    size_t n = http_parser_execute(&cp->p, &settings, data, len);
    enum http_errno e = HTTP_PARSER_ERRNO(&cp->p);
    *used = n;
    if (e == HPE_PAUSED) return FEED_REQUEST;
    if (e != HPE_OK) {
        if (!cp->err_status) {
            cp->err_status = 400;
            cp->err_msg = e == HPE_INVALID_CHUNK_SIZE ? "invalid chunk size"
                        : e == HPE_UNEXPECTED_CONTENT_LENGTH ? "conflicting Content-Length"
                        : e == HPE_INVALID_CONTENT_LENGTH ? "invalid Content-Length"
                        : e == HPE_INVALID_TRANSFER_ENCODING ? "invalid Transfer-Encoding"
                        : e == HPE_INVALID_METHOD ? "invalid method"
                        : e == HPE_INVALID_URL ? "invalid request target"
                        : e == HPE_INVALID_VERSION ? "invalid HTTP version"
                        : e == HPE_HEADER_OVERFLOW ? "request header block too large"
                        : "malformed request";
            if (e == HPE_HEADER_OVERFLOW) cp->err_status = 431;
        }
        return FEED_ERROR;
    }
    return cp->req->headers_done ? FEED_HEADERS : FEED_MORE;
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

void http_date(long t, char out[30])
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char mons[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct tm tm;
    time_t tt = (time_t)t;
    gmtime_r(&tt, &tm);
    strftime(out, 30, "---, %d --- %Y %H:%M:%S GMT", &tm);   /* C locale digits; names below */
    memcpy(out, days[tm.tm_wday % 7], 3);
    memcpy(out + 8, mons[tm.tm_mon % 12], 3);
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    c |= 0x20;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
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
