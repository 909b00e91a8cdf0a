/* buf.c: growable byte buffer. */
#include "buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

int buf_reserve(buf *b, size_t n)
{
    if (b->cap - b->len >= n) return 0;
    if (b->off && b->off == b->len) { b->off = b->len = 0; if (b->cap >= n) return 0; }
    size_t cap = b->cap ? b->cap : 1024;
    while (cap - b->len < n) cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p) return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

int buf_puts(buf *b, const char *s) { return buf_append(b, s, strlen(s)); }

int buf_printf(buf *b, const char *fmt, ...)
{
    va_list ap;
    for (size_t want = 256;;) {
        if (buf_reserve(b, want)) return -1;
        va_start(ap, fmt);
        int n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) return -1;
        if ((size_t)n < b->cap - b->len) { b->len += (size_t)n; return 0; }
        want = (size_t)n + 1;
    }
}

int buf_putu(buf *b, unsigned long long v)
{
    if (b->cap - b->len < 20 && buf_reserve(b, 20)) return -1;
    b->len = (size_t)(dec_put(b->data + b->len, v) - b->data);
    return 0;
}

void buf_compact(buf *b)
{
    if (!b->off) return;
    size_t n = b->len - b->off;
    if (n) memmove(b->data, b->data + b->off, n);
    b->len = n;
    b->off = 0;
}

void buf_shrink(buf *b, size_t keep)
{
    if (b->cap > keep && b->len == b->off) { free(b->data); b->data = NULL; b->cap = b->len = b->off = 0; }
}

void buf_free(buf *b)
{
    free(b->data);
    b->data = NULL;
    b->cap = b->len = b->off = 0;
}
