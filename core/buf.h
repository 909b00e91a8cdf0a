/* buf.h: a growable byte buffer used for connection input/output and response assembly. */
#ifndef SLUICE_BUF_H
#define SLUICE_BUF_H

#include <stddef.h>
#include <string.h>

typedef struct buf {
    char *data;
    size_t len;   /* bytes in use */
    size_t off;   /* bytes already consumed from the front (input) or written (output) */
    size_t cap;
} buf;

/* Makes room for at least n more bytes at the end; returns 0, or -1 when out of memory. */
int buf_reserve(buf *b, size_t n);
/* Appends n bytes; returns 0 or -1 when out of memory. Inline: response headers are built
 * from a dozen small appends per request. */
static inline int buf_append(buf *b, const void *p, size_t n)
{
    if (b->cap - b->len < n && buf_reserve(b, n)) return -1;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}
/* Appends a NUL-terminated string. */
int buf_puts(buf *b, const char *s);
/* Appends printf-formatted text. */
int buf_printf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends an unsigned decimal number without printf. */
int buf_putu(buf *b, unsigned long long v);

/* Writes v in decimal at o (up to 20 bytes, no NUL) and returns the end. The digits are counted
 * first (from the bit length), then written in place two at a time from the last: no scratch
 * buffer to move afterwards, since a wide load of bytes just stored in narrow pieces waits for
 * them (store forwarding fails; issue 21). */
static inline char *dec_put(char *o, unsigned long long v)
{
    static const char pairs[] = "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
                                "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
                                "8081828384858687888990919293949596979899";
    static const unsigned long long pow10[20] = {
        1ull, 10ull, 100ull, 1000ull, 10000ull, 100000ull, 1000000ull, 10000000ull, 100000000ull,
        1000000000ull, 10000000000ull, 100000000000ull, 1000000000000ull, 10000000000000ull,
        100000000000000ull, 1000000000000000ull, 10000000000000000ull, 100000000000000000ull,
        1000000000000000000ull, 10000000000000000000ull};
    if (v < 10) {
        *o = (char)('0' + v);
        return o + 1;
    }
    /* floor(log10(v)) is bits * log10(2) (1233 / 4096) or one more */
    unsigned t = (unsigned)(64 - __builtin_clzll(v)) * 1233 >> 12;
    char *end = o + t + (v >= pow10[t]), *e = end;
    for (; v >= 100; v /= 100) {
        e -= 2;
        memcpy(e, pairs + v % 100 * 2, 2);
    }
    if (v >= 10) memcpy(e - 2, pairs + v * 2, 2);
    else e[-1] = (char)('0' + v);
    return end;
}
/* Drops consumed bytes from the front, moving the rest down (cheap when all was consumed). */
void buf_compact(buf *b);
/* Frees the storage when it grew past keep bytes (so an idle connection holds little). */
void buf_shrink(buf *b, size_t keep);
void buf_free(buf *b);

static inline size_t buf_pending(const buf *b) { return b->len - b->off; }
static inline void buf_reset(buf *b) { b->len = b->off = 0; }

#endif
