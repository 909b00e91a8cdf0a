/* test_hist.c: unit tests for core/hist (precision against sorting, merge, count_le, window rotation, one writer + one reader thread). */
#include "hist.h"
#include "tap.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

static uint64_t rnd(void)
{
    static uint64_t s = 0x2545F4914F6CDD1Dull;
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of a sorted array: the definition hist.h states. */
static uint64_t true_pct(const uint64_t *v, size_t n, double q)
{
    double want = q * (double)n;
    size_t rank = (size_t)want;
    if ((double)rank < want) rank++;
    if (rank < 1) rank = 1;
    if (rank > n) rank = n;
    return v[rank - 1];
}

static const double QS[] = {0, 0.001, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 0.9999, 1};

/* Records v[0..n) and checks every quantile against sorting; returns the worst relative error. */
static double check_dist(const char *name, uint64_t *v, size_t n)
{
    static hist h;
    hist_init(&h);
    uint64_t sum = 0, max = 0;
    for (size_t i = 0; i < n; i++) {
        hist_record(&h, v[i]);
        sum += v[i];
        if (v[i] > max) max = v[i];
    }
    qsort(v, n, sizeof *v, cmp_u64);
    double worst = 0;
    int bad = 0;
    for (size_t k = 0; k < sizeof QS / sizeof QS[0]; k++) {
        uint64_t want = true_pct(v, n, QS[k]), got = hist_percentile(&h, QS[k]);
        uint64_t diff = got > want ? got - want : want - got;
        /* stated bound: |got - want| <= want / 128 (exact below 128 us) */
        if (diff * 128 > want) {
            bad++;
            printf("#   %s q=%g: got %llu want %llu\n", name, QS[k], (unsigned long long)got, (unsigned long long)want);
        }
        double rel = want ? (double)diff / (double)want : (double)diff;
        if (rel > worst) worst = rel;
    }
    ok(bad == 0, "%s: all quantiles within 1/128 of sorting (worst %.4f%%)", name, worst * 100);
    ok(hist_count(&h) == n && hist_max(&h) == max && hist_mean(&h) == (double)sum / (double)n,
       "%s: count, exact max and exact mean", name);
    return worst;
}

static void test_precision(void)
{
    enum { N = 200000 };
    static uint64_t v[N];

    for (size_t i = 0; i < N; i++) v[i] = 1 + rnd() % 1000000;
    check_dist("uniform 1us..1s", v, N);

    for (size_t i = 0; i < N; i++) v[i] = (rnd() >> (36 + rnd() % 28)) + 1; /* log-uniform-ish over 1..2^28 */
    check_dist("log-spread 1us..268s", v, N);

    for (size_t i = 0; i < N; i++) v[i] = i % 100 == 0 ? 5000000 + rnd() % 1000 : 100 + rnd() % 20;
    check_dist("bimodal 100us / 5s", v, N);

    /* Adversarial: only bucket edges, where rounding errors peak. */
    for (size_t i = 0; i < N; i++) {
        uint64_t x = 128 + rnd() % (HIST_MAX_US - 200);
        uint64_t top = hist_bucket_top(x);
        v[i] = rnd() % 2 ? top : top + 1; /* last value of a bucket or first of the next */
    }
    check_dist("bucket edges", v, N);

    for (size_t i = 0; i < N; i++) v[i] = 200 + i; /* sorted input, dense */
    check_dist("ramp", v, N);

    for (size_t i = 0; i < N; i++) v[i] = 127 + (i % 3); /* 127 exact, 128/129 share a bucket */
    check_dist("around 128", v, N);

    v[0] = 777777;
    check_dist("single value", v, 1);
    v[0] = 3;
    v[1] = 100000;
    check_dist("two values", v, 2);

    static hist h;
    hist_init(&h);
    ok(hist_percentile(&h, 0.5) == 0 && hist_count(&h) == 0 && hist_mean(&h) == 0.0 && hist_max(&h) == 0,
       "empty hist: zeros");
    hist_record(&h, 0);
    hist_record(&h, 1000ull * 1000 * 1000); /* 1000 s: above the range */
    is_int(hist_count(&h), 2, "0 and an over-range value are both counted");
    is_int(hist_percentile(&h, 0.5), 0, "0 goes to the first bucket");
    is_int(hist_max(&h), 1000000000, "max stays exact above the range");
    ok(hist_percentile(&h, 1) >= HIST_MAX_US - (HIST_MAX_US >> 7), "over-range value reported in the top bucket");
    is_int(hist_count_le(&h, 1000000), 1, "count_le below the overflow");
    is_int(hist_count_le(&h, UINT64_MAX), 2, "count_le(+Inf) is the total");
}

static void test_merge(void)
{
    static hist a, b, all, m;
    hist_init(&a);
    hist_init(&b);
    hist_init(&all);
    hist_init(&m);
    for (int i = 0; i < 100000; i++) {
        uint64_t x = rnd() % 3000000;
        hist_record(i % 3 ? &a : &b, x);
        hist_record(&all, x);
    }
    hist_merge(&m, &a);
    hist_merge(&m, &b);
    ok(memcmp(&m, &all, sizeof m) == 0, "merge of two halves equals recording everything in one");
    ok(hist_percentile(&m, 0.99) == hist_percentile(&all, 0.99), "merged p99 identical");
    hist_reset(&m);
    is_int(hist_count(&m), 0, "reset empties");
    printf("# sizeof(hist) = %zu bytes, sizeof(histwin) = %zu bytes\n", sizeof(hist), sizeof(histwin));
    ok(sizeof(hist) < 16 * 1024, "hist under 16 KB");
}

static void test_count_le(void)
{
    enum { N = 50000 };
    static uint64_t v[N];
    static hist h;
    hist_init(&h);
    for (size_t i = 0; i < N; i++) {
        v[i] = rnd() % 20000000; /* up to 20 s */
        hist_record(&h, v[i]);
    }
    int exact_ok = 1, round_ok = 1;
    /* Prometheus-style boundaries in us (5ms .. 10s), snapped to bucket tops: exact. */
    const uint64_t le[] = {5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000};
    for (size_t k = 0; k < sizeof le / sizeof le[0]; k++) {
        uint64_t b = hist_bucket_top(le[k]), want = 0, want_raw = 0, below = 0;
        for (size_t i = 0; i < N; i++) {
            want += v[i] <= b;
            want_raw += v[i] <= le[k];
            below += hist_bucket_top(v[i]) <= le[k]; /* whole buckets at or below le */
        }
        exact_ok &= hist_count_le(&h, b) == want;
        round_ok &= hist_count_le(&h, le[k]) == below && below <= want_raw;
        if (k == 7)
            printf("# le=1s: snapped to %llu us, count_le=%llu, exact count<=1s=%llu\n", (unsigned long long)b,
                   (unsigned long long)hist_count_le(&h, le[k]), (unsigned long long)want_raw);
    }
    ok(exact_ok, "count_le exact at bucket tops (Prometheus bounds snapped with hist_bucket_top)");
    ok(round_ok, "count_le at other values rounds down to the previous bucket top");
    int small_ok = 1;
    for (uint64_t x = 0; x < 128; x++) {
        uint64_t want = 0;
        for (size_t i = 0; i < N; i++) want += v[i] <= x;
        small_ok &= hist_count_le(&h, x) == want && hist_bucket_top(x) == x;
    }
    ok(small_ok, "count_le exact for every value below 128 us");
    /* Bucket layout: tops strictly increase, widths stay within 1/64 of the value. */
    int layout_ok = 1;
    uint64_t x = 0, nb = 0;
    while (x < HIST_MAX_US) {
        uint64_t t = hist_bucket_top(x);
        layout_ok &= t >= x && (t - x + 1) * 64 <= (x < 128 ? 64 : x);
        x = t + 1;
        nb++;
    }
    ok(layout_ok, "every bucket is at most 1/64 of its lowest value wide");
    is_int(nb, HIST_BUCKETS, "bucket tops walk exactly HIST_BUCKETS buckets");
}

static void test_window(void)
{
    static histwin w;
    static hist out;
    histwin_init(&w, 6, 10); /* 6 slots x 10 s = 1 minute */
    for (uint64_t t = 1000; t < 1060; t++) histwin_record(&w, t, 100 + (t - 1000)); /* one per second */
    histwin_sum(&w, 1059, &out);
    is_int(hist_count(&out), 60, "window holds the last 60 s");
    is_int(hist_max(&out), 159, "max within window");
    histwin_record(&w, 1060, 500);
    histwin_sum(&w, 1060, &out);
    is_int(hist_count(&out), 51, "after rotation the oldest 10 s slot is gone");
    is_int(hist_percentile(&out, 0), 110, "smallest value is from second 10");
    histwin_sum(&w, 1075, &out);
    is_int(hist_count(&out), 41, "reader later in time drops slots without a write");
    histwin_sum(&w, 1115, &out);
    is_int(hist_count(&out), 1, "only the newest slot remains after ~1 min");
    histwin_sum(&w, 1200, &out);
    is_int(hist_count(&out), 0, "all slots expired for a reader after the window");
    histwin_record(&w, 1000000, 42); /* long gap */
    histwin_sum(&w, 1000000, &out);
    ok(hist_count(&out) == 1 && hist_max(&out) == 42, "after a long gap only the new value counts");
    histwin_record(&w, 999990, 43); /* clock stepped back */
    histwin_sum(&w, 1000000, &out);
    is_int(hist_count(&out), 2, "a value from a stepped-back clock lands in the newest slot");
    /* merge adds (several workers) */
    static histwin w2;
    histwin_init(&w2, 6, 10);
    histwin_record(&w2, 1000001, 7);
    histwin_merge(&w2, 1000001, &out);
    is_int(hist_count(&out), 3, "histwin_merge adds to an existing sum");
    /* k clamp */
    histwin_init(&w2, 100, 0);
    ok(w2.k == HISTWIN_MAX_SLOTS && w2.slot_s == 1, "init clamps k and slot_s");
}

/* ---- one writer thread, one reader thread (run under -fsanitize=thread) ---- */

enum { TN = 400000 };
static hist g_h;
static histwin g_w;
static int g_done;

static void *writer(void *arg)
{
    for (uint64_t i = 0; i < TN; i++) {
        uint64_t us = 50 + (i * 7919) % 300000;
        hist_record(&g_h, us);
        histwin_record(&g_w, i / 10000, us); /* 40 virtual seconds: 2 turns of a 4 x 5 s ring */
    }
    __atomic_store_n(&g_done, 1, __ATOMIC_RELEASE);
    return arg;
}

static void *reader(void *arg)
{
    long *bad = arg;
    uint64_t last = 0;
    static hist snap, win;
    int reads = 0;
    do {
        hist_init(&snap);
        hist_merge(&snap, &g_h);
        uint64_t c = hist_count(&snap);
        if (c < last || c > TN) (*bad)++;
        last = c;
        uint64_t p99 = hist_percentile(&snap, 0.99);
        if (c && (p99 < 50 || p99 > 300050)) (*bad)++;
        histwin_sum(&g_w, (uint64_t)(c / 10000), &win);
        if (hist_count(&win) > TN) (*bad)++;
        reads++;
    } while (!__atomic_load_n(&g_done, __ATOMIC_ACQUIRE));
    printf("# reader made %d snapshots while the writer ran\n", reads);
    return NULL;
}

static void test_threads(void)
{
    hist_init(&g_h);
    histwin_init(&g_w, 4, 5);
    long bad = 0;
    pthread_t tw, tr;
    pthread_create(&tr, NULL, reader, &bad);
    pthread_create(&tw, NULL, writer, NULL);
    pthread_join(tw, NULL);
    pthread_join(tr, NULL);
    is_int(bad, 0, "reader saw monotonic counts and sane percentiles during writes");
    uint64_t total = 0;
    for (size_t i = 0; i < HIST_BUCKETS; i++) total += g_h.bucket[i];
    ok(hist_count(&g_h) == TN && total == TN, "writer's counts complete after join");
    static hist win;
    histwin_sum(&g_w, (TN - 1) / 10000, &win);
    is_int(hist_count(&win), 4 * 5 * 10000, "window holds exactly its 4 x 5 s of the last values");
}

static void bench(void)
{
    static hist h;
    hist_init(&h);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (uint64_t i = 0; i < 10000000; i++) hist_record(&h, (i * 2654435761u) & 0xFFFFF);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ns = ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / 1e7;
    printf("# bench: hist_record %.2f ns/value\n", ns);
    is_int(hist_count(&h), 10000000, "bench recorded everything");
}

int main(void)
{
    test_precision();
    test_merge();
    test_count_le();
    test_window();
    test_threads();
    bench();
    return tap_done();
}
