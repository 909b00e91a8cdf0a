/* fuzz_http.c: libFuzzer target for request parsing (core/http.c over http-parser), driven
 * the way core/conn.c drives it: bytes arrive in pieces, every complete request is handled
 * before the next feed, pipelined messages follow each other, an error ends the connection.
 * Input: byte 0 picks the limits (small ones reach 413/414/431) and the piece sizes, byte 1
 * seeds the piece sizes, the rest is what the client sends.
 * Build: cmake -B build-fuzz -DCMAKE_C_COMPILER=clang -DSLUICE_FUZZ=ON && cmake --build build-fuzz --target fuzz_http
 * Run:   build-fuzz/fuzz_http -max_total_time=60 tests/fuzz/corpus/http */

/* http.c is compiled into this file so that it carries libFuzzer's coverage instrumentation
 * (the sluicecore library is built without it); the library's copy is then never linked. */
#include "http.c"

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

/* What dispatch may rely on once a request is complete. */
static void check_request(const http_req *r, const http_limits *lim)
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
    CHECK(r->nheaders <= lim->max_headers && r->nheaders <= HTTP_MAX_HEADERS_HARD);
    CHECK(r->header_bytes <= lim->header_size);
    CHECK(r->body.len <= lim->body_size);
    CHECK(!(r->chunked && r->has_cl));
    CHECK(r->nhost <= 1);
    CHECK(r->http_minor == 0 || r->nhost == 1);
    for (unsigned i = 0; i < r->nheaders; i++) {
        const http_header *h = &r->headers[i];
        CHECK((size_t)h->name + h->nlen < r->store.len && (size_t)h->value + h->vlen < r->store.len);
        CHECK(http_hname(r, h)[h->nlen] == 0 && http_hvalue(r, h)[h->vlen] == 0);
        CHECK(is_tchar_or_upper_free(http_hname(r, h), h->nlen));
        const unsigned char *v = (const unsigned char *)http_hvalue(r, h);
        for (uint32_t k = 0; k < h->vlen; k++) CHECK(v[k] >= 0x20 || v[k] == '\t');
        CHECK(memchr(v, 0x7f, h->vlen) == NULL);
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
    if (r->expect_continue) CHECK(http_req_header(r, "expect", NULL) != NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    uint8_t ctl = data[0];
    unsigned seed = data[1];
    data += 2;
    size -= 2;
    const http_limits *lim = (ctl & 1) ? &small_lim : &big_lim;

    http_req req;
    memset(&req, 0, sizeof req);
    http_conn_parser cp;
    http_parser_setup(&cp, &req, lim);

    /* the connection's input buffer: pieces are appended, consumed from the front */
    char *in = malloc(size + 1);
    CHECK(in != NULL);
    size_t len = 0, off = 0, pos = 0;
    unsigned requests = 0;
    int dead = 0;
    while (pos < size && !dead) {
        size_t piece;
        switch ((ctl >> 1) & 3) {
        case 0: piece = size - pos; break;                          /* one read */
        case 1: piece = 1; break;                                   /* byte by byte */
        default:
            seed = seed * 1103515245u + 12345u;
            piece = 1 + (seed >> 8) % (((ctl >> 1) & 3) == 2 ? 16 : 512);
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
                CHECK(s == 400 || s == 413 || s == 414 || s == 417 || s == 431 || s == 505);
                CHECK(cp.err_msg != NULL && cp.err_msg[0]);
                CHECK(strlen(http_reason(s)) > 0);
                dead = 1;              /* the connection closes after the error */
                break;
            }
            if (r == FEED_REQUEST) {
                check_request(&req, lim);
                requests++;
                if (!req.keepalive && (ctl & 0x40)) { dead = 1; break; }   /* Connection: close */
                continue;              /* dispatch, then parse the next pipelined message */
            }
            /* more data needed: http-parser consumed everything it was given */
            CHECK(used == pending);
            CHECK(!req.complete);      /* a finished request was reported as FEED_REQUEST */
            break;
        }
        /* conn.c compacts the input buffer between reads; the parser must not keep pointers */
        if (off == len) off = len = 0;
        else if (ctl & 0x80) {
            memmove(in, in + off, len - off);
            len -= off;
            off = 0;
        }
    }
    (void)requests;
    free(in);
    http_req_free(&req);
    return 0;
}
