/* sseenc.c: SSE wire encoding, done once per published event (the hub then shares the bytes). */
#include "sseenc.h"

#include <string.h>

static char *put_u64(char *p, uint64_t v)
{
    char tmp[20];
    int n = 0;
    do tmp[n++] = (char)('0' + v % 10); while ((v /= 10));
    while (n) *p++ = tmp[--n];
    return p;
}

size_t sseenc_id_line(char *out, uint64_t id)
{
    memcpy(out, "id: ", 4);
    char *p = put_u64(out + 4, id);
    *p++ = '\n';
    return (size_t)(p - out);
}

int sseenc_parse_id(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    size_t i = 0;
    for (; s[i]; i++) {
        if (s[i] < '0' || s[i] > '9' || i >= 20) return -1;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10) return -1;
        v = v * 10 + d;
    }
    if (i == 0) return -1;
    *out = v;
    return 0;
}

/* Length of the line break at data[i] (CRLF = 2, CR or LF = 1, else 0). */
static size_t brk(const char *d, size_t i, size_t n)
{
    if (d[i] == '\n') return 1;
    if (d[i] == '\r') return (i + 1 < n && d[i + 1] == '\n') ? 2 : 1;
    return 0;
}

size_t sseenc_body(char *out, const char *event, size_t evlen, int retry_ms,
                   const char *data, size_t datalen)
{
    char *p = out;
    if (evlen) {
        memcpy(p, "event: ", 7);
        memcpy(p + 7, event, evlen);
        p += 7 + evlen;
        *p++ = '\n';
    }
    if (retry_ms >= 0) {
        memcpy(p, "retry: ", 7);
        p = put_u64(p + 7, (uint64_t)retry_ms);
        *p++ = '\n';
    }
    size_t start = 0;
    for (size_t i = 0;; ) {
        size_t b = i < datalen ? brk(data, i, datalen) : 0;
        if (i == datalen || b) {
            memcpy(p, "data: ", 6);
            memcpy(p + 6, data + start, i - start);
            p += 6 + (i - start);
            *p++ = '\n';
            if (i == datalen) break;
            i += b;
            start = i;
        } else {
            i++;
        }
    }
    *p++ = '\n';
    return (size_t)(p - out);
}

size_t sseenc_body_len(size_t evlen, int retry_ms, const char *data, size_t datalen)
{
    size_t lines = 1, brkbytes = 0;
    for (size_t i = 0; i < datalen;) {
        size_t b = brk(data, i, datalen);
        if (b) {
            lines++;
            brkbytes += b;
            i += b;
        } else {
            i++;
        }
    }
    size_t n = (evlen ? 8 + evlen : 0) + lines * 7 + (datalen - brkbytes) + 1;
    if (retry_ms >= 0) n += 8 + 10;
    return n;
}
