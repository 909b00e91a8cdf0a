/* tracectx.c: traceparent parsing and id generation (W3C Trace Context, level 1). */
#include "tracectx.h"

#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static int lhex(const char *s, size_t n)
{
    int nonzero = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return -1;
        nonzero |= c != '0';
    }
    return nonzero;
}

static int hexval(char c) { return c <= '9' ? c - '0' : c - 'a' + 10; }

int tracectx_parse(tracectx *t, const char *v, size_t n)
{
    if (!v || n < TRACEPARENT_LEN) return -1;
    if (lhex(v, 2) < 0 || (v[0] == 'f' && v[1] == 'f')) return -1;
    int v00 = v[0] == '0' && v[1] == '0';
    /* version 00 is exactly 55 characters; a later version may append fields after a '-' */
    if (v00 ? n != TRACEPARENT_LEN : (n > TRACEPARENT_LEN && v[TRACEPARENT_LEN] != '-')) return -1;
    if (v[2] != '-' || v[35] != '-' || v[52] != '-') return -1;
    if (lhex(v + 3, 32) != 1 || lhex(v + 36, 16) != 1 || lhex(v + 53, 2) < 0) return -1;
    memcpy(t->trace_id, v + 3, 32);
    t->trace_id[32] = 0;
    memcpy(t->parent_id, v + 36, 16);
    t->parent_id[16] = 0;
    t->flags = (uint8_t)(hexval(v[53]) << 4 | hexval(v[54]));
    return 0;
}

/* splitmix64, seeded once per thread: ids must be unique and unpredictable enough for tracing,
 * not secret, and cost nothing per request */
static __thread uint64_t rng;

static uint64_t next64(void)
{
    if (!rng) {
        if (getrandom(&rng, sizeof rng, 0) != sizeof rng) rng = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)&rng;
        rng |= 1;
    }
    uint64_t z = (rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void hex64(char *out, uint64_t x)
{
    static const char digits[] = "0123456789abcdef";
    if (!x) x = 1;                  /* an all-zero id is invalid */
    for (int i = 15; i >= 0; i--) { out[i] = digits[x & 15]; x >>= 4; }
}

void tracectx_begin(tracectx *t, const char *v, size_t n)
{
    if (!v || tracectx_parse(t, v, n)) {
        hex64(t->trace_id, next64());
        hex64(t->trace_id + 16, next64());
        t->trace_id[32] = 0;
        t->parent_id[0] = 0;
        t->flags = 0;
    }
    hex64(t->span_id, next64());
    t->span_id[16] = 0;
}

size_t tracectx_traceparent(const tracectx *t, char out[TRACEPARENT_LEN + 1])
{
    return (size_t)snprintf(out, TRACEPARENT_LEN + 1, "00-%s-%s-%02x", t->trace_id, t->span_id, t->flags);
}
