/* fuzz_http.c: libFuzzer target for request parsing (core/http.c over core/httpscan.c and
 * http-parser), driven the way core/conn.c drives it: bytes arrive in pieces, every complete
 * request is handled before the next feed, pipelined messages follow each other, an error ends
 * the connection.
 * Input: byte 0 picks the limits (small ones reach 413/414/431) and the piece sizes, byte 1
 * seeds the piece sizes, the rest is what the client sends.
 * Besides memory safety and the invariants dispatch relies on (check_request), every input is
 * parsed twice, in the pieces byte 0 chose and in one piece, and both runs must agree on every
 * request and on the final error: a verdict that depends on how the bytes were split is
 * exactly what request smuggling exploits.
 * Build: cmake -B build-fuzz -DCMAKE_C_COMPILER=clang -DSLUICE_FUZZ=ON && cmake --build build-fuzz --target fuzz_http
 * Run:   build-fuzz/fuzz_http -max_total_time=60 tests/fuzz/corpus/http */

/* http.c and httpscan.c are compiled into this file so that they carry libFuzzer's coverage
 * instrumentation for sure; the library's copies are then never linked. */
#include "http.c"
#include "httpscan.c"

#include <stdlib.h>

#define CHECK(c)                                                                           \
    do {                                                                                   \
        if (!(c)) {                                                                        \
            fprintf(stderr, "fuzz_http: invariant failed at %s:%d: %s\n", __FILE__, __LINE__, #c); \
            abort();                                                                       \
        }                                                                                  \
    } while (0)

static const http_limits small_lim = {.body_size = 64, .header_size = 256, .url_size = 64, .max_headers = 4};
static const http_limits big_lim = {.body_size = 1 << 20, .header_size = 16384, .url_size = 8192, .max_headers = 100};

static int is_tchar_or_upper_free(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!is_tchar(c) || (c >= 'A' && c <= 'Z')) return 0;
    }
    return n > 0;
}

static uint64_t mix(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return (h ^ 0xff) * 1099511628211ull;
}

/* What dispatch may rely on once a request is complete; returns a digest of the request. */
static uint64_t check_request(const http_req *r, const http_limits *lim)
{
    CHECK(r->complete && r->headers_done);
    CHECK(r->http_major == 1);
    CHECK(r->url_len > 0 && r->url_len <= lim->url_size);
    CHECK(r->path_len <= r->url_len);
    CHECK((size_t)r->url + r->url_len < r->store.len);
    const char *url = http_req_url(r);
    CHECK(url[r->url_len] == 0);
    CHECK(url[0] == '/' || (r->url_len == 1 && url[0] == '*' && r->method == HTTP_OPTIONS));
    CHECK(memchr(url, '?', r->path_len) == NULL);
    CHECK(memchr(url, '#', r->url_len) == NULL);           /* a fragment is cut off */
    for (uint32_t k = 0; k < r->url_len; k++) CHECK((unsigned char)url[k] > 0x20 && (unsigned char)url[k] < 0x7f);
    CHECK(r->nheaders <= lim->max_headers + 1 && r->nheaders <= HTTP_MAX_HEADERS_HARD);   /* +1: Host from the target */
    CHECK(r->header_bytes <= lim->header_size);
    CHECK(r->body.len <= lim->body_size);
    CHECK(!(r->chunked && r->has_cl));
    CHECK(!(r->chunked && r->http_minor == 0));            /* RFC 9112 6.1 */
    CHECK(r->nhost <= 1);
    CHECK(r->http_minor == 0 || r->nhost == 1);
    unsigned hosts = 0;
    for (unsigned i = 0; i < r->nheaders; i++) {
        const http_header *h = &r->headers[i];
        CHECK((size_t)h->name + h->nlen < r->store.len && (size_t)h->value + h->vlen < r->store.len);
        CHECK(http_hname(r, h)[h->nlen] == 0 && http_hvalue(r, h)[h->vlen] == 0);
        CHECK(is_tchar_or_upper_free(http_hname(r, h), h->nlen));
        const unsigned char *v = (const unsigned char *)http_hvalue(r, h);
        for (uint32_t k = 0; k < h->vlen; k++) CHECK(v[k] >= 0x20 || v[k] == '\t');
        CHECK(memchr(v, 0x7f, h->vlen) == NULL);
        CHECK(h->vlen == 0 || (!is_ows((char)v[0]) && !is_ows((char)v[h->vlen - 1])));   /* OWS trimmed */
        if (h->nlen == 4 && memcmp(http_hname(r, h), "host", 4) == 0) {
            hosts++;
            CHECK(host_valid((const char *)v, h->vlen, 1));
            CHECK(memchr(v, ',', h->vlen) == NULL && memchr(v, ' ', h->vlen) == NULL);
        }
        /* lookups find the first header of that name */
        char name[64];
        if (h->nlen < sizeof name) {
            memcpy(name, http_hname(r, h), h->nlen);
            name[h->nlen] = 0;
            size_t vl = 0;
            const char *got = http_req_header(r, name, &vl);
            CHECK(got != NULL);
        }
    }
    CHECK(hosts == r->nhost);
    if (r->expect_continue) CHECK(http_req_header(r, "expect", NULL) != NULL);
    if (r->chunked) {
        size_t vl = 0;
        const char *te = http_req_header(r, "transfer-encoding", &vl);
        CHECK(te && vl >= 7 && strncasecmp(te + vl - 7, "chunked", 7) == 0);
    }
    uint64_t d = 14695981039346656037ull;
    d = mix(d, url, r->url_len);
    d = mix(d, r->body.data ? r->body.data : "", r->body.len);
    unsigned flags = (unsigned)r->method << 8 | r->keepalive | r->chunked << 1 | r->has_cl << 2 | r->head << 3 |
                     r->expect_continue << 4 | r->http_minor << 5;
    d = mix(d, &flags, sizeof flags);
    d = mix(d, &r->nheaders, sizeof r->nheaders);
    return d;
}

typedef struct outcome {
    uint64_t digest;           /* over every request, in order */
    unsigned requests;
    int status;                /* the error that ended the connection, 0 if none */
} outcome;

/* One connection's life; piece_mode 0 is "everything in one read". */
static outcome run_conn(const uint8_t *data, size_t size, const http_limits *lim, unsigned piece_mode,
                        unsigned seed, int stop_at_close, int compact)
{
    outcome o = {14695981039346656037ull, 0, 0};
    http_req req;
    memset(&req, 0, sizeof req);
    http_conn_parser cp;
    http_parser_setup(&cp, &req, lim);

    /* the connection's input buffer: pieces are appended, consumed from the front */
    char *in = malloc(size + 1);
    CHECK(in != NULL);
    size_t len = 0, off = 0, pos = 0;
    int dead = 0;
    while (pos < size && !dead) {
        size_t piece;
        switch (piece_mode) {
        case 0: piece = size - pos; break;                          /* one read */
        case 1: piece = 1; break;                                   /* byte by byte */
        default:
            seed = seed * 1103515245u + 12345u;
            piece = 1 + (seed >> 8) % (piece_mode == 2 ? 16 : 512);
        }
        if (piece > size - pos) piece = size - pos;
        memcpy(in + len, data + pos, piece);
        len += piece;
        pos += piece;

        while (off < len) {            /* process_input() */
            size_t pending = len - off, used = 0;
            http_feed_result r = http_feed(&cp, in + off, pending, &used);
            CHECK(used <= pending);
            off += used;
            if (r == FEED_ERROR) {
                int s = cp.err_status;
                CHECK(s == 400 || s == 413 || s == 414 || s == 417 || s == 431 || s == 501 || s == 505);
                CHECK(cp.err_msg != NULL && cp.err_msg[0]);
                CHECK(strlen(http_reason(s)) > 0);
                o.status = s;
                dead = 1;              /* the connection closes after the error */
                break;
            }
            if (r == FEED_REQUEST) {
                uint64_t d = check_request(&req, lim);
                o.digest = mix(o.digest, &d, sizeof d);
                o.requests++;
                if (!req.keepalive && stop_at_close) { dead = 1; break; }   /* Connection: close */
                continue;              /* dispatch, then parse the next pipelined message */
            }
            /* more data needed: the parser consumed everything it was given */
            CHECK(used == pending);
            CHECK(!req.complete);      /* a finished request was reported as FEED_REQUEST */
            break;
        }
        /* conn.c compacts the input buffer between reads; the parser must not keep pointers */
        if (off == len) off = len = 0;
        else if (compact) {
            memmove(in, in + off, len - off);
            len -= off;
            off = 0;
        }
    }
    free(in);
    http_req_free(&req);
    return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    uint8_t ctl = data[0];
    unsigned seed = data[1];
    data += 2;
    size -= 2;
    const http_limits *lim = (ctl & 1) ? &small_lim : &big_lim;
    int stop_at_close = (ctl & 0x40) != 0, compact = (ctl & 0x80) != 0;
    outcome a = run_conn(data, size, lim, (ctl >> 1) & 3, seed, stop_at_close, compact);
    outcome b = run_conn(data, size, lim, 0, 0, stop_at_close, 0);
    if (a.requests != b.requests || a.digest != b.digest || a.status != b.status) {
        fprintf(stderr, "fuzz_http: split-dependent verdict: %u requests / status %d in pieces, %u / %d in one\n",
                a.requests, a.status, b.requests, b.status);
        abort();
    }
    return 0;
}
