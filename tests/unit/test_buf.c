/* test_buf: the byte buffer and its decimal formatting (dec_put, buf_putu), against snprintf. */
#include "buf.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tap.h"

/* dec_put's text for v equals printf's, and nothing after it is written. */
static int dec_same(unsigned long long v)
{
    char want[32], got[32];
    int n = snprintf(want, sizeof want, "%llu", v);
    memset(got, '#', sizeof got);
    char *end = dec_put(got, v);
    if (end - got != n || memcmp(got, want, (size_t)n) != 0) return 0;
    for (size_t i = (size_t)n; i < sizeof got; i++)
        if (got[i] != '#') return 0;
    return 1;
}

static void test_dec_put(void)
{
    unsigned long long bad = 0, checked = 0, first_bad = 0;
#define CHECK(v)                                                  \
    do {                                                          \
        unsigned long long v_ = (v);                              \
        checked++;                                                \
        if (!dec_same(v_) && !bad++) first_bad = v_;              \
    } while (0)
    for (unsigned long long v = 0; v <= 200000; v++) CHECK(v);
    /* every digit count's edges: 10^k - 1, 10^k, 10^k + 1 */
    unsigned long long p = 1;
    for (int k = 0; k < 20; k++, p *= 10) {
        CHECK(p - 1);
        CHECK(p);
        CHECK(p + 1);
    }
    /* every bit length's edges (the digit count starts from the bit length) */
    for (int b = 1; b < 64; b++) {
        unsigned long long q = 1ull << b;
        CHECK(q - 1);
        CHECK(q);
        CHECK(q + 1);
    }
    CHECK(UINT64_MAX);
    CHECK(UINT64_MAX - 1);
    /* spread over every magnitude */
    unsigned long long x = 0x9E3779B97F4A7C15ull;
    for (int i = 0; i < 200000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        CHECK(x >> (i % 64));
    }
#undef CHECK
    ok(bad == 0, "dec_put writes what printf writes, and nothing after it (%llu values)", checked);
    if (bad) printf("#   %llu differ, the first %llu\n", bad, first_bad);
}

static void test_putu_appends(void)
{
    buf b = {0};
    ok(buf_append(&b, "len=", 4) == 0, "append");
    ok(buf_putu(&b, 0) == 0 && buf_append(&b, ",", 1) == 0 && buf_putu(&b, 18446744073709551615ull) == 0,
       "putu of 0 and the largest value");
    ok(b.len == 4 + 1 + 1 + 20 && memcmp(b.data, "len=0,18446744073709551615", b.len) == 0, "the text follows what was there");
    /* a buffer that is nearly full grows for the number */
    buf c = {0};
    for (int i = 0; i < 1000; i++) buf_putu(&c, (unsigned long long)i * 1000003u);
    char want[16000];
    size_t n = 0;
    for (int i = 0; i < 1000; i++) n += (size_t)snprintf(want + n, sizeof want - n, "%llu", (unsigned long long)i * 1000003u);
    ok(c.len == n && memcmp(c.data, want, n) == 0, "1000 numbers appended in a row, growing the buffer");
    buf_free(&b);
    buf_free(&c);
}

int main(void)
{
    test_dec_put();
    test_putu_appends();
    return tap_done();
}
