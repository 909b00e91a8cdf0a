/* test_http.c: request parsing (core/http.c over core/httpscan.c): RFC 9112 verdicts and the
 * request fields dispatch sees, each input parsed in one read, at every split into two reads
 * and byte by byte; the verdict must never depend on the split (that is what smuggling uses). */
#include "http.h"
#include "tap.h"

#include <stdlib.h>

static const http_limits lim = {.body_size = 65536, .header_size = 4096, .url_size = 1024, .max_headers = 20};

typedef struct outcome {
    int status;                 /* 0: no error */
    unsigned nreq;
    char url[3][64];            /* of the first three requests */
    char host[3][64];
    size_t body[3];
    int keepalive[3];
    unsigned long long digest;  /* over everything above and every later request */
} outcome;

static unsigned long long mix(unsigned long long h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

/* Feeds data in pieces of `step` bytes (0: one piece; cut: two pieces at that offset). */
static outcome parse(const char *data, size_t n, size_t step, size_t cut)
{
    outcome o;
    memset(&o, 0, sizeof o);
    o.digest = 14695981039346656037ull;
    http_req req;
    memset(&req, 0, sizeof req);
    http_conn_parser cp;
    http_parser_setup(&cp, &req, &lim);
    char *in = malloc(n + 1);
    size_t len = 0, off = 0, pos = 0;
    int dead = 0;
    while (pos < n && !dead) {
        size_t piece = step ? step : cut ? (pos < cut ? cut - pos : n - pos) : n - pos;
        if (piece > n - pos) piece = n - pos;
        memcpy(in + len, data + pos, piece);
        len += piece;
        pos += piece;
        while (off < len) {
            size_t used = 0;
            http_feed_result r = http_feed(&cp, in + off, len - off, &used);
            off += used;
            if (r == FEED_ERROR) { o.status = cp.err_status; dead = 1; break; }
            if (r != FEED_REQUEST) break;
            if (o.nreq < 3) {
                size_t hl = 0;
                const char *h = http_req_header(&req, "host", &hl);
                snprintf(o.url[o.nreq], sizeof o.url[0], "%.*s", (int)req.url_len, http_req_url(&req));
                snprintf(o.host[o.nreq], sizeof o.host[0], "%.*s", h ? (int)hl : 6, h ? h : "(none)");
                o.body[o.nreq] = req.body.len;
                o.keepalive[o.nreq] = req.keepalive;
            }
            o.digest = mix(o.digest, http_req_url(&req), req.url_len);
            o.digest = mix(o.digest, req.body.data ? req.body.data : "", req.body.len);
            o.nreq++;
            if (!req.keepalive) { dead = 1; break; }
        }
        if (off == len) off = len = 0;
    }
    o.digest = mix(o.digest, &o.status, sizeof o.status);
    o.digest = mix(o.digest, &o.nreq, sizeof o.nreq);
    free(in);
    http_req_free(&req);
    return o;
}

/* Parses s whole, then at every split point and byte by byte: all must agree. */
static outcome check_splits(const char *name, const char *s, size_t n)
{
    outcome whole = parse(s, n, 0, 0);
    int same = 1;
    for (size_t cut = 1; cut < n && same; cut++) {
        outcome o = parse(s, n, 0, cut);
        if (o.digest != whole.digest) {
            same = 0;
            printf("# %s: split at %zu: status %d, %u requests (whole: %d, %u)\n", name, cut, o.status, o.nreq,
                   whole.status, whole.nreq);
        }
    }
    outcome b = parse(s, n, 1, 0);
    ok(same && b.digest == whole.digest, "%s: same verdict at every split and byte by byte", name);
    return whole;
}

#define LEN(lit) (sizeof(lit) - 1)
#define VERDICT(name, lit, want_status, want_nreq)                                        \
    do {                                                                                  \
        outcome o_ = check_splits(name, lit, LEN(lit));                                   \
        is_int(o_.status, want_status, name ": status");                                  \
        is_int(o_.nreq, want_nreq, name ": requests before it");                          \
    } while (0)

#define H "Host: x\r\n"
#define POST "POST /p HTTP/1.1\r\n" H
#define TE "Transfer-Encoding: chunked\r\n"
#define SMUG "GET /smuggled HTTP/1.1\r\n" H "\r\n"

int main(void)
{
    /* what must work */
    outcome o = check_splits("pipelined", "GET /a HTTP/1.1\r\n" H "\r\n" POST "Content-Length: 5\r\n\r\nhello"
                     "\r\nGET /c?q HTTP/1.1\r\n" H "Connection: close \t\r\n\r\n" SMUG,
                     LEN("GET /a HTTP/1.1\r\n" H "\r\n" POST "Content-Length: 5\r\n\r\nhello"
                         "\r\nGET /c?q HTTP/1.1\r\n" H "Connection: close \t\r\n\r\n" SMUG));
    is_int(o.nreq, 3, "three requests, nothing after Connection: close");
    is_str(o.url[1], "/p", "the POST");
    is_int(o.body[1], 5, "its body");
    is_int(o.keepalive[0], 1, "HTTP/1.1 keeps alive");
    is_int(o.keepalive[2], 0, "Connection: close with trailing whitespace closes");

    o = check_splits("chunked", POST TE "\r\n5;a=\"b;\\\"c\" ; d = e\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n",
                     LEN(POST TE "\r\n5;a=\"b;\\\"c\" ; d = e\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n"));
    is_int(o.status, 0, "chunked with extensions and a trailer");
    is_int(o.body[0], 11, "decoded body");

    o = check_splits("absolute-form", "GET http://example.com:8080/p?q=1#frag HTTP/1.1\r\nHost: other\r\n\r\n",
                     LEN("GET http://example.com:8080/p?q=1#frag HTTP/1.1\r\nHost: other\r\n\r\n"));
    is_str(o.url[0], "/p?q=1", "absolute-form routes by its path; the fragment is cut");
    is_str(o.host[0], "example.com:8080", "and its authority replaces Host (RFC 9112 3.2.2)");
    o = check_splits("absolute-form, no path", "GET HTTP://h?x HTTP/1.0\r\n\r\n", LEN("GET HTTP://h?x HTTP/1.0\r\n\r\n"));
    is_str(o.url[0], "/?x", "an empty path is /");
    is_str(o.host[0], "h", "HTTP/1.0 without Host gets the target's");
    o = check_splits("fragment", "GET /a#b?c HTTP/1.1\r\n" H "\r\n", LEN("GET /a#b?c HTTP/1.1\r\n" H "\r\n"));
    is_str(o.url[0], "/a", "a fragment is not part of the path or query");
    o = check_splits("ows", "GET / HTTP/1.1\r\nHost: \t[::1]:80 \r\n\r\n", LEN("GET / HTTP/1.1\r\nHost: \t[::1]:80 \r\n\r\n"));
    is_str(o.host[0], "[::1]:80", "OWS is trimmed from values");
    o = check_splits("http/1.0 keep-alive", "GET / HTTP/1.0\r\nConnection: x, Keep-Alive\r\n\r\n",
                     LEN("GET / HTTP/1.0\r\nConnection: x, Keep-Alive\r\n\r\n"));
    is_int(o.keepalive[0], 1, "HTTP/1.0 keep-alive as a list element");
    VERDICT("leading empty lines", "\r\n\r\nGET / HTTP/1.1\r\n" H "\r\n", 0, 1);

    /* item 8: the CRLF after chunk data */
    VERDICT("no CRLF after chunk data", POST TE "\r\n5\r\nhelloXX0\r\n\r\n" SMUG, 400, 0);
    VERDICT("LF after chunk data", POST TE "\r\n5\r\nhello\n0\r\n\r\n" SMUG, 400, 0);
    /* item 9 */
    VERDICT("HTTP/1.0 with Transfer-Encoding", "POST /p HTTP/1.0\r\n" TE "\r\n0\r\n\r\n" SMUG, 400, 0);
    /* item 10 */
    VERDICT("Host list", "GET / HTTP/1.1\r\nHost: a, b\r\n\r\n", 400, 0);
    VERDICT("Host with userinfo", "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400, 0);
    VERDICT("gzip, chunked", POST "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501, 0);
    VERDICT("identity, chunked", POST "Transfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n", 501, 0);
    VERDICT("chunked, identity", POST "Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", 400, 0);
    VERDICT("chunked twice", POST "Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400, 0);
    VERDICT("unknown method", "FROB / HTTP/1.1\r\n" H "\r\n", 501, 0);
    VERDICT("lower-case method", "get / HTTP/1.1\r\n" H "\r\n", 501, 0);
    VERDICT("method not a token", "G(T / HTTP/1.1\r\n" H "\r\n", 400, 0);
    VERDICT("CONNECT", "CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n", 501, 0);
    VERDICT("userinfo in target", "GET http://u@h/ HTTP/1.1\r\n" H "\r\n", 400, 0);
    /* item 11 */
    VERDICT("bare CR in a value", "GET / HTTP/1.1\r\n" H "X: a\r" TE "\r\n", 400, 0);
    VERDICT("bare LF line ends", "POST /p HTTP/1.1\nHost: x\nContent-Length: 0\n\n" SMUG, 400, 0);
    VERDICT("bare LF after headers", "GET / HTTP/1.1\r\n" H "\n", 400, 0);
    VERDICT("obs-fold", "GET / HTTP/1.1\r\n" H "X: a\r\n " TE "\r\n", 400, 0);
    VERDICT("space before colon", POST "Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400, 0);
    VERDICT("NUL in a value", "GET / HTTP/1.1\r\n" H "X: a\0b\r\n\r\n", 400, 0);
    VERDICT("NUL in the target", "GET /\0 HTTP/1.1\r\n" H "\r\n", 400, 0);
    VERDICT("chunk size with junk", POST TE "\r\n2 xyz\r\nhi\r\n0\r\n\r\n", 400, 0);
    VERDICT("empty chunk extension", POST TE "\r\n2;\r\nhi\r\n0\r\n\r\n", 400, 0);
    VERDICT("unbalanced quote", POST TE "\r\n2;a=\"b\r\nhi\r\n0\r\n\r\n", 400, 0);
    VERDICT("chunk size 0x5", POST TE "\r\n0x5\r\nhello\r\n0\r\n\r\n", 400, 0);
    VERDICT("chunk size +5", POST TE "\r\n+5\r\nhello\r\n0\r\n\r\n", 400, 0);
    VERDICT("chunk size overflow", POST TE "\r\nffffffffffffffff1\r\n", 413, 0);
    VERDICT("chunk size digits", POST TE "\r\n00000000000000000001\r\nx\r\n0\r\n\r\n", 400, 0);
    VERDICT("trailer obs-fold", POST TE "\r\n0\r\nX: a\r\n b\r\n\r\n", 400, 0);
    VERDICT("request line in the trailer", POST TE "\r\n0\r\n" SMUG, 400, 0);
    VERDICT("two spaces", "GET  / HTTP/1.1\r\n" H "\r\n", 400, 0);
    VERDICT("no version", "GET /\r\n\r\n", 400, 0);
    VERDICT("HTTP/2.0", "GET / HTTP/2.0\r\n" H "\r\n", 505, 0);
    VERDICT("Content-Length +5", POST "Content-Length: +5\r\n\r\nhello", 400, 0);
    VERDICT("Content-Length list", POST "Content-Length: 5, 5\r\n\r\nhello", 400, 0);
    VERDICT("CL and TE", POST "Content-Length: 5\r\n" TE "\r\n0\r\n\r\n", 400, 0);
    VERDICT("error after a good request", "GET / HTTP/1.1\r\n" H "\r\nGET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, 1);

    /* limits, at their exact byte */
    {
        char big[6000];
        int n = snprintf(big, sizeof big, "GET /%0*d HTTP/1.1\r\n" H "\r\n", 1023, 0);
        outcome u = check_splits("url at url_size", big, (size_t)n);
        is_int(u.status, 0, "a target of exactly url_size bytes passes");
        n = snprintf(big, sizeof big, "GET /%0*d HTTP/1.1\r\n" H "\r\n", 1024, 0);
        u = check_splits("url over url_size", big, (size_t)n);
        is_int(u.status, 414, "one byte more is 414");
        n = snprintf(big, sizeof big, "GET / HTTP/1.1\r\n" H "X: %0*d\r\n\r\n", 4096 - 16 - 9 - 5 - 2, 0);
        u = check_splits("header block at header_size", big, (size_t)n);
        is_int(u.status, 0, "a header block of exactly header_size bytes passes");
        n = snprintf(big, sizeof big, "GET / HTTP/1.1\r\n" H "X: %0*d\r\n\r\n", 4096 - 16 - 9 - 5 - 1, 0);
        u = check_splits("header block over header_size", big, (size_t)n);
        is_int(u.status, 431, "one byte more is 431");
    }
    return tap_done();
}
