/* test_phist.c: unit tests for core/phist (exact `le` counts against a brute-force count, rendering). */
#include "phist.h"
#include "tap.h"

#include <stdlib.h>
#include <string.h>

static uint64_t rnd(void)
{
    static uint64_t s = 0x9E3779B97F4A7C15ull;
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
}

int main(void)
{
    static const double le[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5, 10, 20, 30};
    phist_bounds b;
    phist_bounds_init(&b, le, 16);
    is_int(b.n, 16, "16 bounds");
    is_int(b.le_us[0], 500, "0.0005 s is exactly 500 us");
    is_int(b.le_us[15], 30000000, "30 s");

    /* values on and around every bound: "<= le" must be exact, unlike hist.h's edges */
    int bad = 0;
    for (int i = 0; i < b.n; i++) {
        uint64_t v = b.le_us[i];
        if (phist_index(&b, v) != i) bad++;
        if (phist_index(&b, v + 1) != i + 1) bad++;
        if (v > 0 && phist_index(&b, v - 1) != i && !(i > 0 && v - 1 == b.le_us[i - 1])) bad++;
    }
    is_int(bad, 0, "a value equal to a bound counts in that bound's bucket, one above in the next");
    is_int(phist_index(&b, 0), 0, "0 us in the first bucket");
    is_int(phist_index(&b, UINT64_C(1) << 40), 16, "huge values in the +Inf bucket");

    /* random values, log-uniform over 1 us .. 100 s: cumulative counts equal a brute-force count */
    enum { N = 200000 };
    uint64_t *v = malloc(N * sizeof *v);
    phist h;
    memset(&h, 0, sizeof h);
    uint64_t sum = 0;
    for (int i = 0; i < N; i++) {
        int e = (int)(rnd() % 27);
        v[i] = (UINT64_C(1) << e) + rnd() % (UINT64_C(1) << e);
        phist_record(&h, &b, v[i]);
        sum += v[i];
    }
    int mism = 0;
    uint64_t cum = 0;
    for (int k = 0; k < b.n; k++) {
        cum += h.bucket[k];
        uint64_t want = 0;
        for (int i = 0; i < N; i++) want += v[i] <= b.le_us[k];
        if (cum != want) mism++;
    }
    is_int(mism, 0, "every cumulative bucket equals the number of values <= le");
    is_int(phist_count(&h, &b), N, "count");
    is_int(h.sum_us, sum, "sum");

    phist m;
    memset(&m, 0, sizeof m);
    phist_merge(&m, &h);
    phist_merge(&m, &h);
    is_int(phist_count(&m, &b), 2 * N, "merge adds counts");

    /* the text format */
    phist t;
    memset(&t, 0, sizeof t);
    phist_record(&t, &b, 500);        /* le 0.0005 */
    phist_record(&t, &b, 700);        /* le 0.001 */
    phist_record(&t, &b, 40000000);   /* +Inf */
    buf out = {0};
    phist_render(&out, "x_seconds", "route=\"/a\"", &t, &b);
    buf_append(&out, "", 1);
    ok(strstr(out.data, "x_seconds_bucket{route=\"/a\",le=\"0.0005\"} 1\n") != NULL, "first bucket");
    ok(strstr(out.data, "x_seconds_bucket{route=\"/a\",le=\"0.001\"} 2\n") != NULL, "cumulative");
    ok(strstr(out.data, "x_seconds_bucket{route=\"/a\",le=\"30\"} 2\n") != NULL, "last finite bound");
    ok(strstr(out.data, "x_seconds_bucket{route=\"/a\",le=\"+Inf\"} 3\n") != NULL, "+Inf has all");
    ok(strstr(out.data, "x_seconds_count{route=\"/a\"} 3\n") != NULL, "count line");
    ok(strstr(out.data, "x_seconds_sum{route=\"/a\"} 40.001200\n") != NULL, "sum line in seconds");
    buf_reset(&out);
    phist_render(&out, "y", "", &t, &b);
    buf_append(&out, "", 1);
    ok(strstr(out.data, "y_bucket{le=\"+Inf\"} 3\n") && strstr(out.data, "y_count 3\n"), "no labels: no stray comma or braces");
    buf_free(&out);
    free(v);
    return tap_done();
}
