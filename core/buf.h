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
/* Drops consumed bytes from the front, moving the rest down (cheap when all was consumed). */
void buf_compact(buf *b);
/* Frees the storage when it grew past keep bytes (so an idle connection holds little). */
void buf_shrink(buf *b, size_t keep);
void buf_free(buf *b);

static inline size_t buf_pending(const buf *b) { return b->len - b->off; }
static inline void buf_reset(buf *b) { b->len = b->off = 0; }

#endif
