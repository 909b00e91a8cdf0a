/* test_ratelimit.c: GCRA semantics, bounded memory, exactness under threads, speed. */
#include "ratelimit.h"
#include "tap.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

static rl_result R;

static int hit(ratelimit *rl, const rl_policy *p, const char *k, uint64_t now)
{
    if (ratelimit_check(rl, p, k, strlen(k), now, &R) != 0) return -1;
    return R.allowed;
}

/* Requests admitted at time now if the client keeps asking until refused. */
static int drain(ratelimit *rl, const rl_policy *p, const char *k, uint64_t now)
{
    int n = 0;
    while (hit(rl, p, k, now) == 1) n++;
    return n;
}

static void test_burst_and_refill(void)
{
    ratelimit *rl = ratelimit_new(1000, 4);
    rl_policy p = {.id = 1, .limit = 10, .window_ms = 1000}; /* T = 100 ms, B = 10 */
    int okrem = 1;
    for (int i = 0; i < 10; i++) {
        okrem &= hit(rl, &p, "a", 0) == 1 && R.remaining == (uint64_t)(9 - i);
    }
    ok(okrem, "fresh key: exactly burst=10 admitted at once, remaining counts 9..0");
    is_int(R.reset_ms, 1000, "after the burst the bucket is full again in B*T = 1000 ms");
    is_int(hit(rl, &p, "a", 0), 0, "11th request at t=0 rejected");
    is_int(R.retry_after_ms, 100, "retry_after = T");
    is_int(R.remaining, 0, "remaining 0 when rejected");
    is_int(hit(rl, &p, "a", 99), 0, "t=99: still rejected (no early refill)");
    is_int(R.retry_after_ms, 1, "t=99: retry_after 1 ms");
    int exact = 1;
    for (int k = 1; k <= 50; k++) {
        uint64_t t = (uint64_t)k * 100;
        exact &= hit(rl, &p, "a", t) == 1 && R.remaining == 0;
        exact &= hit(rl, &p, "a", t) == 0 && R.retry_after_ms == 100;
        exact &= hit(rl, &p, "a", t + 99) == 0;
    }
    ok(exact, "at t = k*T exactly one more request, none in between (k = 1..50)");
    is_int(hit(rl, &p, "b", 0), 1, "another key has its own bucket");
    rl_policy q = p;
    q.id = 2;
    is_int(drain(rl, &q, "a", 5000), 10, "same key under another policy id: separate bucket");
    ratelimit_free(rl);
}

static void test_remaining_reset_peek_cost(void)
{
    ratelimit *rl = ratelimit_new(100, 1);
    rl_policy p = {.id = 1, .limit = 10, .window_ms = 1000};
    for (int i = 0; i < 3; i++) hit(rl, &p, "k", 0);
    is_int(R.remaining, 7, "3 of 10 used: remaining 7");
    is_int(R.reset_ms, 300, "reset = 3*T = 300 ms");
    ratelimit_check_n(rl, &p, "k", 1, 0, 150, &R);
    ok(R.allowed && R.remaining == 8 && R.reset_ms == 150,
       "peek at t=150: remaining 8 (one refilled), reset 150 ms (got %llu, %llu)",
       (unsigned long long)R.remaining, (unsigned long long)R.reset_ms);
    ratelimit_check_n(rl, &p, "k", 1, 0, 150, &R);
    is_int(R.remaining, 8, "peek consumes nothing");
    ratelimit_check_n(rl, &p, "new", 3, 0, 150, &R);
    rl_stats st;
    ratelimit_stats(rl, &st);
    ok(R.remaining == 10 && st.keys == 1, "peek of an unknown key: full, and creates no key");
    ratelimit_check_n(rl, &p, "k", 1, 8, 150, &R);
    ok(R.allowed && R.remaining == 0, "cost 8 admitted with 8 remaining");
    ratelimit_check_n(rl, &p, "k", 1, 2, 200, &R);
    ok(!R.allowed && R.remaining == 1 && R.retry_after_ms == 100,
       "cost 2 with 1 remaining: rejected, retry_after 100 ms (got %llu)",
       (unsigned long long)R.retry_after_ms);
    ratelimit_check_n(rl, &p, "k", 1, 11, 99999, &R);
    ok(!R.allowed && R.retry_after_ms == UINT64_MAX, "cost > burst never conforms");
    rl_policy bad = {.id = 1, .limit = 0, .window_ms = 1000};
    is_int(ratelimit_check(rl, &bad, "k", 1, 0, &R), -1, "limit 0 is an invalid policy");
    bad.limit = 1, bad.window_ms = 0;
    is_int(ratelimit_check(rl, &bad, "k", 1, 0, &R), -1, "window 0 is an invalid policy");
    is_int(ratelimit_reset_key(rl, 1, "k", 1), 1, "reset_key finds the key");
    is_int(drain(rl, &p, "k", 200), 10, "after reset_key the bucket is full");
    is_int(ratelimit_reset_key(rl, 1, "zz", 2), 0, "reset_key of an unknown key");
    ratelimit_free(rl);
}

static void test_retry_after_exact(void)
{
    /* T = 1000/3 ms is not a whole number of ms (or of ns: rounded up to 333333334 ns). */
    ratelimit *rl = ratelimit_new(10, 1);
    rl_policy p = {.id = 7, .limit = 3, .window_ms = 1000, .burst = 1};
    int good = 1, n = 0;
    uint64_t t = 5;
    for (int i = 0; i < 200; i++) {
        while (hit(rl, &p, "x", t) == 1) n++;
        uint64_t r = R.retry_after_ms;
        good &= r > 0 && hit(rl, &p, "x", t + r - 1) == 0;
        t += r;
    }
    ok(good, "retry_after is exact: rejected at t+retry-1, admitted at t+retry (200 rounds)");
    ok(n == 200, "non-integral T: one admitted per retry (%d)", n);
    ratelimit_free(rl);
}

static void test_window_edge(void)
{
    /* The spec's policy. A client that waits until just before a fixed window ends,
     * spends the window, then spends the next one right after the boundary gets 2x
     * the limit in a moment. GCRA has no boundary: at most B + floor(L/T) in any L. */
    ratelimit *rl = ratelimit_new(100, 1);
    rl_policy p = {.id = 1, .limit = 1000, .window_ms = 900000};
    int gcra = 0, fixed = 0, fixed_in_window[2] = {0, 0};
    for (uint64_t t = 899000; t <= 901000; t++) {
        gcra += drain(rl, &p, "edge", t);
        int w = t >= 900000; /* fixed windows [0,900s) and [900s,1800s) */
        while (fixed_in_window[w] < 1000) fixed_in_window[w]++, fixed++;
    }
    printf("# 2 s around a window boundary: fixed window admits %d, GCRA %d\n", fixed, gcra);
    is_int(fixed, 2000, "model: a fixed window would admit 2x the limit across the edge");
    is_int(gcra, 1000 + 2000 / 900, "GCRA admits B + floor(L/T) = 1002 in those 2 s");
    ratelimit_free(rl);
}

static void test_any_interval_bound(void)
{
    /* Property: for a pseudo-random request stream, every interval of length L holds
     * at most B + floor(L/T) admissions. */
    ratelimit *rl = ratelimit_new(100, 1);
    rl_policy p = {.id = 1, .limit = 5, .window_ms = 1000, .burst = 3}; /* T = 200 ms */
    enum { N = 20000 };
    static uint64_t adm[N];
    int na = 0;
    uint64_t t = 0, seed = 12345;
    for (int i = 0; i < N; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        t += (seed >> 33) % 120; /* bursty arrivals, mean 60 ms < T */
        if (hit(rl, &p, "prop", t) == 1) adm[na++] = t;
    }
    int worst_ok = 1;
    const uint64_t Ls[] = {0, 1, 199, 200, 999, 1000, 5000, 60000};
    for (size_t li = 0; li < sizeof Ls / sizeof Ls[0]; li++) {
        uint64_t L = Ls[li], bound = 3 + L / 200, maxc = 0;
        for (int i = 0, j = 0; i < na; i++) { /* count in [adm[i], adm[i]+L] */
            if (j < i) j = i;
            while (j + 1 < na && adm[j + 1] <= adm[i] + L) j++;
            if ((uint64_t)(j - i + 1) > maxc) maxc = (uint64_t)(j - i + 1);
        }
        if (maxc > bound) {
            worst_ok = 0;
            printf("#   L=%llu: %llu admitted > bound %llu\n", (unsigned long long)L,
                   (unsigned long long)maxc, (unsigned long long)bound);
        }
    }
    ok(worst_ok, "any interval of length L holds <= B + floor(L/T) admissions (%d admitted)", na);
    ok(na > (int)(t / 400) && na <= (int)(3 + t / 200),
       "busy stream gets the full rate: %d admitted over %llu ms", na, (unsigned long long)t);
    ratelimit_free(rl);
}

static void test_hour(void)
{
    ratelimit *rl = ratelimit_new(100, 1);
    rl_policy p = {.id = 1, .limit = 1000, .window_ms = 900000};
    long n = 0;
    for (uint64_t t = 0; t <= 3600000; t++) n += drain(rl, &p, "hour", t);
    is_int(n, 1000 + 4000, "1000/900 s over [0, 1 h]: exactly 1000 + 3600/0.9 = 5000 admitted");
    rl_policy m = {.id = 2, .limit = 300, .window_ms = 60000};
    n = 0;
    for (uint64_t t = 0; t <= 3600000; t++) n += drain(rl, &m, "hour", t);
    is_int(n, 300 + 3600000 / 200, "300/60 s over [0, 1 h]: exactly 300 + 18000 admitted");
    ratelimit_free(rl);
}

static void test_eviction(void)
{
    ratelimit *rl = ratelimit_new(4, 1);
    rl_policy p = {.id = 1, .limit = 1, .window_ms = 100}; /* T = 100, B = 1 */
    hit(rl, &p, "a", 0), hit(rl, &p, "b", 0), hit(rl, &p, "c", 0); /* TAT 100 */
    hit(rl, &p, "d", 150);                                       /* TAT 250 */
    is_int(hit(rl, &p, "e", 200), 1, "full shard: new key admitted after evicting expired keys");
    rl_stats st;
    ratelimit_stats(rl, &st);
    ok(st.evictions == 3 && st.keys == 2, "the 3 expired keys were evicted, the busy one kept "
       "(evictions %llu keys %llu)", (unsigned long long)st.evictions, (unsigned long long)st.keys);
    is_int(hit(rl, &p, "d", 200), 0, "the busy key was not refilled by eviction");
    is_int(R.retry_after_ms, 50, "and still waits for its TAT");

    /* Table full of busy keys: a new key is refused, nobody is refilled. */
    ratelimit *t2 = ratelimit_new(2, 1);
    rl_policy q = {.id = 1, .limit = 2, .window_ms = 1000}; /* T = 500, B = 2 */
    drain(t2, &q, "x", 0), drain(t2, &q, "y", 100);
    ok(hit(t2, &q, "z", 200) == 0 && R.table_full == 1, "table full of busy keys: new key "
       "rejected with table_full");
    ok(R.retry_after_ms >= 1 && R.retry_after_ms <= 800,
       "table_full retry_after is a lower bound of the time until a key expires (%llu <= 800)",
       (unsigned long long)R.retry_after_ms);
    ok(hit(t2, &q, "x", 200) == 0 && !R.table_full, "busy key x still exhausted");
    ok(hit(t2, &q, "y", 200) == 0, "busy key y still exhausted");
    ok(hit(t2, &q, "z", 999) == 0 && R.table_full, "still full at 999 ms");
    ok(hit(t2, &q, "z", 1000) == 1 && !R.table_full, "admitted once x's bucket is full (TAT 1000)");
    ratelimit_stats(t2, &st);
    ok(st.table_full == 2 && st.keys == 2 && st.capacity == 2,
       "stats: table_full %llu, keys %llu, capacity %llu", (unsigned long long)st.table_full,
       (unsigned long long)st.keys, (unsigned long long)st.capacity);
    ok(st.checks == 11 && st.rejections == 6, "stats: checks %llu, rejections %llu",
       (unsigned long long)st.checks, (unsigned long long)st.rejections);

    is_int(ratelimit_sweep(t2, 1000), 0, "sweep at 1000: y (TAT 1100) and z (TAT 1500) busy");
    is_int(ratelimit_sweep(t2, 1500), 2, "sweep at 1500 evicts both");
    ratelimit_stats(t2, &st);
    is_int(st.keys, 0, "keys 0 after sweep");
    ratelimit_free(t2);
    ratelimit_free(rl);
}

/* ratelimit_clear: every key forgotten (buckets full again), counters zero, the table
 * keeps working at full capacity, and clearing an empty table is a no-op. */
static void test_clear(void)
{
    ratelimit *rl = ratelimit_new(8, 1);
    rl_policy p = {.id = 1, .limit = 2, .window_ms = 1000};
    const char *keys[] = {"a", "b", "c", "d", "e", "f", "g", "h"};
    for (int i = 0; i < 8; i++) drain(rl, &p, keys[i], 0);
    rl_stats st;
    ratelimit_stats(rl, &st);
    ok(st.keys == 8 && st.rejections > 0, "before clear: 8 keys, %llu rejections",
       (unsigned long long)st.rejections);
    ok(hit(rl, &p, "i", 0) == 0 && R.table_full, "table full of busy keys before clear");
    ratelimit_clear(rl);
    ratelimit_stats(rl, &st);
    ok(st.keys == 0 && st.checks == 0 && st.rejections == 0 && st.table_full == 0 && st.evictions == 0,
       "after clear: no keys and zero counters");
    int all = 1;
    for (int i = 0; i < 8; i++) all &= drain(rl, &p, keys[i], 0) == 2;
    ok(all, "every key has a full bucket again (2 admitted each at the same time)");
    ok(hit(rl, &p, "i", 0) == 0 && R.table_full, "capacity unchanged: the 9th key is refused again");
    ratelimit_clear(rl);
    ratelimit_clear(rl);
    ratelimit_stats(rl, &st);
    is_int(st.keys, 0, "clearing twice is harmless");
    ratelimit_clear(NULL);
    ratelimit_free(rl);

    /* the spec runner's case: a 100,000-key table cleared after every test */
    ratelimit *big = ratelimit_new(100000, 4);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < 1000; i++) {
        hit(big, &p, "127.0.0.1", 0);
        ratelimit_clear(big);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double us = ((t1.tv_sec - t0.tv_sec) * 1e6 + (t1.tv_nsec - t0.tv_nsec) / 1e3) / 1000;
    printf("# bench: %.1f us per clear of a 100,000-key table holding one key\n", us);
    ratelimit_stats(big, &st);
    is_int(st.keys, 0, "big table empty after the clears");
    ratelimit_free(big);
}

static void test_long_keys(void)
{
    ratelimit *rl = ratelimit_new(100, 2);
    rl_policy p = {.id = 1, .limit = 2, .window_ms = 1000};
    char a[300], b[300];
    memset(a, 'k', sizeof a - 1), a[299] = 0;
    memcpy(b, a, sizeof a), b[298] = 'j'; /* differs in the last byte */
    is_int(drain(rl, &p, a, 0), 2, "300-byte key: burst 2");
    is_int(drain(rl, &p, b, 0), 2, "key differing only in its last byte is independent");
    is_int(drain(rl, &p, a, 0), 0, "the same long key maps to the same bucket");
    char cin[RL_KEY_INLINE + 1], cdig[RL_KEY_INLINE + 2];
    memset(cin, 'q', RL_KEY_INLINE), cin[RL_KEY_INLINE] = 0;
    memset(cdig, 'q', RL_KEY_INLINE + 1), cdig[RL_KEY_INLINE + 1] = 0;
    ok(drain(rl, &p, cin, 0) == 2 && drain(rl, &p, cdig, 0) == 2,
       "%d-byte (inline) and %d-byte (digest) keys are distinct", RL_KEY_INLINE, RL_KEY_INLINE + 1);
    is_int(drain(rl, &p, cdig, 0), 0, "the digested key is found again");
    is_int(drain(rl, &p, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128", 0), 2, "the longest IPv6 key is a key");
    is_int(ratelimit_reset_key(rl, 1, a, strlen(a)), 1, "reset_key works for a long key");
    is_int(drain(rl, &p, "", 0), 2, "empty key is a key");
    ratelimit_free(rl);
}

static void test_policy_change(void)
{
    ratelimit *rl = ratelimit_new(100, 1);
    rl_policy p = {.id = 1, .limit = 1000, .window_ms = 900000};
    for (int i = 0; i < 600; i++) hit(rl, &p, "ip", 0);
    is_int(R.remaining, 400, "600 of 1000 used");
    rl_policy low = p;
    low.limit = 100; /* reload lowers the limit, same id */
    is_int(hit(rl, &low, "ip", 0), 1, "lowered limit applies at the next request");
    is_int(R.remaining, 39, "60% of the window was used: 100*0.4 - 1 = 39 remain");
    is_int(drain(rl, &low, "ip", 0), 39, "and exactly those are admitted");
    is_int(R.retry_after_ms, 9000, "then one per new T = 9 s");
    rl_policy shorter = {.id = 1, .limit = 300, .window_ms = 60000};
    ok(hit(rl, &shorter, "ip", 0) == 0 && R.retry_after_ms == 200,
       "window shortened to 60 s: an exhausted key owes at most one new window; retry %llu ms",
       (unsigned long long)R.retry_after_ms);
    is_int(R.reset_ms, 60000, "reset capped at the new window");
    rl_policy high = {.id = 1, .limit = 2000, .window_ms = 900000};
    /* Debt is time: 60 s owed (capped above) out of a 900 s bucket, T = 450 ms. */
    is_int(drain(rl, &high, "ip", 200), (900200 - 60000) / 450,
           "raised limit: the time owed stays, the rest of the larger bucket opens");
    ratelimit_free(rl);
}

static void test_clock_backwards(void)
{
    ratelimit *rl = ratelimit_new(100, 1);
    rl_policy p = {.id = 1, .limit = 10, .window_ms = 1000};
    for (int i = 0; i < 5; i++) hit(rl, &p, "c", 10000);
    is_int(R.remaining, 5, "5 of 10 used at t=10000");
    ratelimit_check_n(rl, &p, "c", 1, 0, 9950, &R);
    is_int(R.remaining, 4, "clock 50 ms back: fewer remaining, not more");
    is_int(hit(rl, &p, "c", 0), 0, "clock reset to 0: nothing refilled (rejected)");
    ok(R.retry_after_ms == 100 && R.reset_ms == 1000, "debt capped at one bucket: retry %llu, "
       "reset %llu", (unsigned long long)R.retry_after_ms, (unsigned long long)R.reset_ms);
    is_int(drain(rl, &p, "c", 100), 1, "then the normal rate on the new timeline");
    is_int(hit(rl, &p, "c", UINT64_MAX), 1, "absurd now does not crash");
    ratelimit_free(rl);
}

/* ---- threads ---- */

typedef struct targ {
    ratelimit *rl;
    rl_policy p;
    int id, iters;
    long admitted;
} targ;

static void *one_key(void *v)
{
    targ *a = v;
    rl_result r;
    for (int i = 0; i < a->iters; i++) {
        ratelimit_check(a->rl, &a->p, "shared", 6, 42, &r);
        a->admitted += r.allowed;
    }
    return NULL;
}

static void *many_keys(void *v)
{
    targ *a = v;
    rl_result r;
    char k[32];
    for (int rep = 0; rep < 5; rep++)
        for (int i = 0; i < 1000; i++) {
            int n = snprintf(k, sizeof k, "10.%d.%d.%d", a->id, i / 256, i % 256);
            ratelimit_check(a->rl, &a->p, k, (size_t)n, 42, &r);
            a->admitted += r.allowed;
        }
    return NULL;
}

static void test_threads(void)
{
    enum { NT = 8 };
    pthread_t th[NT];
    targ a[NT];
    ratelimit *rl = ratelimit_new(100000, 64);
    rl_policy p = {.id = 1, .limit = 1000, .window_ms = 900000};
    for (int i = 0; i < NT; i++) {
        a[i] = (targ){.rl = rl, .p = p, .id = i, .iters = 20000};
        pthread_create(&th[i], NULL, one_key, &a[i]);
    }
    long total = 0;
    for (int i = 0; i < NT; i++) pthread_join(th[i], NULL), total += a[i].admitted;
    is_int(total, 1000, "8 threads x 20000 requests on one key, frozen clock: exactly 1000 admitted");

    rl_policy q = {.id = 2, .limit = 3, .window_ms = 60000};
    for (int i = 0; i < NT; i++) {
        a[i] = (targ){.rl = rl, .p = q, .id = i};
        pthread_create(&th[i], NULL, many_keys, &a[i]);
    }
    total = 0;
    for (int i = 0; i < NT; i++) pthread_join(th[i], NULL), total += a[i].admitted;
    is_int(total, NT * 1000 * 3, "8 threads x 1000 keys x 5 hits, limit 3: exactly 3 per key");
    rl_stats st;
    ratelimit_stats(rl, &st);
    is_int(st.keys, 1 + NT * 1000, "stats.keys counts every key");
    is_int(st.checks, NT * 20000 + NT * 5000, "stats.checks");
    ratelimit_free(rl);
}

/* ---- prepared keys and leases (issue 21: the pipelined fast path) ---- */

static void test_prepared_keys(void)
{
    ratelimit *rl = ratelimit_new(8, 1);
    rl_policy p = {.id = 1, .limit = 3, .window_ms = 3000}; /* T = 1 s, B = 3 */
    rl_gcra g;
    ok(ratelimit_gcra(&p, &g) == 0 && g.T == 1000000000u && g.B == 3 && g.BT == 3000000000u,
       "ratelimit_gcra: T = 1 s, B = 3");
    rl_policy bad = {.id = 1, .limit = 0, .window_ms = 1000};
    is_int(ratelimit_gcra(&bad, &g), -1, "ratelimit_gcra refuses limit 0");
    ratelimit_gcra(&p, &g);
    rl_key k, other;
    ratelimit_key(rl, 1, "10.0.0.1", 8, &k);
    ratelimit_key(rl, 2, "10.0.0.1", 8, &other);
    is_int(ratelimit_check_key(rl, &g, &other, 1, 0, &R), -1, "a key made for another policy id is refused");
    is_int(k.hint, 0, "a new key has no hint");
    ok(ratelimit_check_key(rl, &g, &k, 1, 0, &R) == 0 && R.allowed && R.remaining == 2 && k.hint != 0,
       "prepared key: admitted, remaining 2, and the hint names its node");
    /* the prepared key and the plain API share the bucket */
    ok(hit(rl, &p, "10.0.0.1", 0) == 1 && R.remaining == 1, "the plain API sees the same bucket");
    ok(ratelimit_check_key(rl, &g, &k, 1, 0, &R) == 0 && R.allowed && R.remaining == 0, "third admitted");
    ok(ratelimit_check_key(rl, &g, &k, 1, 0, &R) == 0 && !R.allowed && R.retry_after_ms == 1000,
       "fourth rejected with retry_after 1000 ms, through the hint");
    /* the key is forgotten and another key is stored: a hint naming another key's slot (as a
     * stale one may) must not find it */
    is_int(ratelimit_reset_key(rl, 1, "10.0.0.1", 8), 1, "reset_key");
    rl_key o;
    ratelimit_key(rl, 1, "10.0.0.2", 8, &o);
    for (int i = 0; i < 3; i++) ratelimit_check_key(rl, &g, &o, 1, 0, &R);
    ok(R.allowed && R.remaining == 0 && o.hint != 0, "another key, exhausted");
    k.hint = o.hint;
    ok(ratelimit_check_key(rl, &g, &k, 1, 0, &R) == 0 && R.allowed && R.remaining == 2,
       "stale hint: the key is not confused with the slot's key (full bucket again)");
    ok(k.hint != o.hint && k.hint != 0, "and the hint moved to the key's own slot");
    ok(ratelimit_check_key(rl, &g, &o, 1, 0, &R) == 0 && !R.allowed, "the other key is still exhausted");
    ratelimit_clear(rl);
    ok(ratelimit_check_key(rl, &g, &k, 1, 0, &R) == 0 && R.allowed && R.remaining == 2, "after clear: a full bucket");
    /* a table full of busy keys refuses the prepared key as it refuses the plain one */
    for (int i = 0; i < 8; i++) {
        char nm[8];
        snprintf(nm, sizeof nm, "k%d", i);
        drain(rl, &p, nm, 0);
    }
    rl_key nk;
    ratelimit_key(rl, 1, "newcomer", 8, &nk);
    ok(ratelimit_check_key(rl, &g, &nk, 1, 0, &R) == 0 && !R.allowed && R.table_full, "table full: refused");
    ratelimit_free(rl);
}

/* The reference: the same requests through plain checks on a second table. A single lease holder
 * (one worker) must see exactly the same decisions, remaining and reset as one check per request. */
static void test_lease_equals_checks(void)
{
    ratelimit *a = ratelimit_new(100, 4), *b = ratelimit_new(100, 4);
    rl_policy p = {.id = 9, .limit = 50, .window_ms = 1000, .burst = 40}; /* T = 20 ms, B = 40 */
    rl_gcra g;
    ratelimit_gcra(&p, &g);
    rl_key k;
    ratelimit_key(a, 9, "client", 6, &k);
    rl_lease ls = {0};
    rl_result ra, rb;
    uint64_t t = 1000, seed = 7;
    int same = 1, n = 0, leased = 0, adm = 0;
    for (int i = 0; i < 200000 && same; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        if ((seed >> 62) == 0) t += (seed >> 33) % 60;   /* bursts within a millisecond, then gaps */
        uint32_t want = 1 + (uint32_t)((seed >> 20) % 24);
        if (!ratelimit_lease_take(&g, &k, t, &ls, &ra)) {
            ratelimit_lease_end(a, &ls);
            ratelimit_lease(a, &g, &k, want, t, &ra, &ls);
            leased += ls.left > 0;
        }
        ratelimit_check(b, &p, "client", 6, t, &rb);
        same = ra.allowed == rb.allowed && ra.remaining == rb.remaining && ra.reset_ms == rb.reset_ms &&
               ra.retry_after_ms == rb.retry_after_ms && ra.limit == rb.limit;
        if (!same)
            printf("#   request %d at %llu: lease %d/%llu/%llu/%llu, checks %d/%llu/%llu/%llu\n", i,
                   (unsigned long long)t, ra.allowed, (unsigned long long)ra.remaining,
                   (unsigned long long)ra.reset_ms, (unsigned long long)ra.retry_after_ms, rb.allowed,
                   (unsigned long long)rb.remaining, (unsigned long long)rb.reset_ms,
                   (unsigned long long)rb.retry_after_ms);
        n++;
        adm += ra.allowed;
    }
    ok(same && leased > 1000 && adm > 10000 && adm < n,
       "one holder: %d requests decided from leases (%d leases) exactly as by one check each (%d admitted)",
       n, leased, adm);
    is_int(ratelimit_lease_end(a, &ls), 0, "the unspent rest goes back (nobody else wrote the key)");
    ratelimit_check_n(a, &p, "client", 6, 0, t, &ra);
    ratelimit_check_n(b, &p, "client", 6, 0, t, &rb);
    ok(ra.remaining == rb.remaining, "and the bucket is where one check per request leaves it (%llu)",
       (unsigned long long)ra.remaining);

    /* a key new to the table gets one admission and no lease; leases never take more than half */
    rl_key fresh;
    ratelimit_key(a, 9, "fresh", 5, &fresh);
    ratelimit_lease(a, &g, &fresh, 64, 5000, &ra, &ls);
    ok(ra.allowed && ls.left == 0, "new key: admitted, no lease");
    ratelimit_lease(a, &g, &fresh, 64, 5000, &ra, &ls);
    ok(ra.allowed && ls.left + 1 == 19 && ra.remaining == 38,
       "39 conform: the lease takes 19 (half), this request one of them (remaining %llu, left %u)",
       (unsigned long long)ra.remaining, ls.left);
    ratelimit_lease_end(a, &ls);
    ratelimit_free(a);
    ratelimit_free(b);
}

/* Another writer between the lease and its end: the unspent admissions stay charged (never
 * handed out twice); a clear ends every lease. */
static void test_lease_contention_and_clear(void)
{
    ratelimit *rl = ratelimit_new(100, 2);
    rl_policy p = {.id = 3, .limit = 20, .window_ms = 20000}; /* T = 1 s, B = 20 */
    rl_gcra g;
    ratelimit_gcra(&p, &g);
    rl_key k;
    ratelimit_key(rl, 3, "k", 1, &k);
    rl_lease ls = {0};
    hit(rl, &p, "k", 0);                                   /* 19 left */
    ratelimit_lease(rl, &g, &k, 8, 0, &R, &ls);
    ok(R.allowed && ls.left == 7, "lease of 8 (left 7 after this request)");
    is_int(hit(rl, &p, "k", 0), 1, "another holder writes the key meanwhile");
    ok(ratelimit_lease_take(&g, &k, 0, &ls, &R) && R.allowed, "the lease still spends (taken before)");
    is_int(ratelimit_lease_end(rl, &ls), 6, "6 unspent stay charged: the key was written meanwhile");
    is_int(drain(rl, &p, "k", 0), 20 - 1 - 8 - 1, "so the bucket holds 10, not 16: nothing handed out twice");
    ok(!ratelimit_lease_take(&g, &k, 0, &ls, &R), "an ended lease spends nothing");

    ratelimit_clear(rl);
    ratelimit_lease(rl, &g, &k, 8, 100, &R, &ls);          /* new key after clear: plain */
    ratelimit_lease(rl, &g, &k, 8, 100, &R, &ls);
    ok(ls.left == 7, "lease of 8 after clear");
    ratelimit_clear(rl);
    ok(!ratelimit_lease_take(&g, &k, 100, &ls, &R), "clear ends the lease: nothing spent from it");
    is_int(drain(rl, &p, "k", 100), 20, "the cleared key has exactly a full bucket");
    ratelimit_lease(rl, &g, &k, 8, 200, &R, &ls);           /* known key again (drained) */
    ok(!R.allowed && ls.left == 0, "exhausted key: rejected, no lease");
    ratelimit_free(rl);
}

typedef struct larg {
    ratelimit *rl;
    rl_gcra g;
    int iters;                      /* requests per phase */
    int phases;                     /* 1: one frozen millisecond; else the clock moves 1 ms a phase */
    pthread_barrier_t *bar;
    long admitted, charged;
    uint64_t *times;                /* admission times (ms), when recorded */
    long ntimes;
} larg;

/* A worker's loop in miniature: spend the lease, else end it and take a new one; the leases go
 * back when the "loop iteration" (a phase, one millisecond of a clock shared by all) ends. */
static void *lease_worker(void *v)
{
    larg *a = v;
    rl_key k;
    ratelimit_key(a->rl, a->g.id, "shared", 6, &k);
    rl_lease ls = {0};
    rl_result r;
    for (int ph = 0; ph < a->phases; ph++) {
        uint64_t now = 42 + (uint64_t)ph;
        for (int i = 0; i < a->iters; i++) {
            if (!ratelimit_lease_take(&a->g, &k, now, &ls, &r)) {
                a->charged += ratelimit_lease_end(a->rl, &ls);
                ratelimit_lease(a->rl, &a->g, &k, 1 + (uint32_t)((i + ph) % 16), now, &r, &ls);
            }
            if (r.allowed) {
                a->admitted++;
                if (a->times) a->times[a->ntimes++] = now;
            }
        }
        a->charged += ratelimit_lease_end(a->rl, &ls);
        if (a->bar) pthread_barrier_wait(a->bar);
    }
    return NULL;
}

static int cmp_u64(const void *x, const void *y)
{
    uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
    return a < b ? -1 : a > b;
}

static void test_lease_threads(void)
{
    enum { NT = 8 };
    pthread_t th[NT];
    larg a[NT];
    /* frozen clock: the bucket holds 1000 admissions in all; leases may leave some charged but
     * unspent (another thread wrote the key), never hand out more */
    ratelimit *rl = ratelimit_new(1000, 16);
    rl_policy p = {.id = 1, .limit = 1000, .window_ms = 900000};
    rl_gcra g;
    ratelimit_gcra(&p, &g);
    for (int i = 0; i < NT; i++) {
        a[i] = (larg){.rl = rl, .g = g, .iters = 20000, .phases = 1};
        pthread_create(&th[i], NULL, lease_worker, &a[i]);
    }
    long adm = 0, charged = 0;
    for (int i = 0; i < NT; i++) pthread_join(th[i], NULL), adm += a[i].admitted, charged += a[i].charged;
    ratelimit_check_n(rl, &p, "shared", 6, 0, 42, &R);
    printf("# 8 threads with leases, frozen clock: %ld admitted, %ld charged unspent, %llu left\n", adm,
           charged, (unsigned long long)R.remaining);
    ok(adm <= 1000, "8 threads x 20000 requests with leases on one key: never more than the limit (%ld)", adm);
    ok(adm + charged + (long)R.remaining == 1000,
       "every admission accounted for: spent %ld + charged unspent %ld + still in the bucket %llu = 1000", adm,
       charged, (unsigned long long)R.remaining);
    ratelimit_free(rl);

    /* a moving clock shared by all (a phase per millisecond, leases handed back at its end, as
     * the workers' loops do): every interval of length L holds at most B + floor(L/T) admissions,
     * over all threads together; and no phase admits more than one check per request would */
    rl = ratelimit_new(1000, 16);
    rl_policy q = {.id = 2, .limit = 100, .window_ms = 1000, .burst = 50}; /* T = 10 ms, B = 50 */
    ratelimit_gcra(&q, &g);
    enum { PHASES = 3000, PER = 6 };
    static uint64_t times[NT * PHASES * PER];
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, NT);
    for (int i = 0; i < NT; i++) {
        a[i] = (larg){.rl = rl, .g = g, .iters = PER, .phases = PHASES, .bar = &bar,
                      .times = times + (size_t)i * PHASES * PER};
        pthread_create(&th[i], NULL, lease_worker, &a[i]);
    }
    long na = 0;
    for (int i = 0; i < NT; i++) {
        pthread_join(th[i], NULL);
        memmove(times + na, a[i].times, (size_t)a[i].ntimes * sizeof *times);
        na += a[i].ntimes;
    }
    qsort(times, (size_t)na, sizeof *times, cmp_u64);
    int bound_ok = 1;
    const uint64_t Ls[] = {0, 9, 10, 100, 1000, 2999};
    for (size_t li = 0; li < sizeof Ls / sizeof Ls[0]; li++) {
        uint64_t L = Ls[li], bound = 50 + L / 10, maxc = 0;
        for (long i = 0, j = 0; i < na; i++) {
            if (j < i) j = i;
            while (j + 1 < na && times[j + 1] <= times[i] + L) j++;
            if ((uint64_t)(j - i + 1) > maxc) maxc = (uint64_t)(j - i + 1);
        }
        if (maxc > bound) {
            bound_ok = 0;
            printf("#   L=%llu: %llu admitted > bound %llu\n", (unsigned long long)L, (unsigned long long)maxc,
                   (unsigned long long)bound);
        }
    }
    /* asking 48 times a millisecond, the key is always asking: one check per request would admit
     * B + floor(2999 / T) = 349 over the run; leases may leave a few charged unspent */
    charged = 0;
    for (int i = 0; i < NT; i++) charged += a[i].charged;
    ok(bound_ok && na <= 50 + (PHASES - 1) / 10 && na + charged >= 50 + (PHASES - 1) / 10,
       "8 threads with leases, a moving clock: any interval of length L holds <= B + floor(L/T); "
       "%ld admitted over %d ms (%ld charged unspent)", na, PHASES, charged);
    pthread_barrier_destroy(&bar);
    ratelimit_free(rl);
}

static void bench(void)
{
    ratelimit *rl = ratelimit_new(100000, 64);
    rl_policy p = {.id = 1, .limit = 1000, .window_ms = 900000};
    const char *key = "2001:db8:1:2::/64";
    size_t kl = strlen(key);
    rl_result r;
    long admitted = 0;
    enum { N = 5000000 };
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < N; i++) {
        ratelimit_check(rl, &p, key, kl, (uint64_t)i, &r); /* 1 ms per check: mixes allow/reject */
        admitted += r.allowed;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ns = ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / N;
    printf("# bench: %.1f ns per check (single thread, known key, %ld admitted)\n", ns, admitted);
    /* a figure, not a check: speed is measured by the benchmarks (bench/overhead.sh), never by a
     * timed test that a loaded machine or a sanitizer build fails (this one did, under TSan) */
    ok(admitted > 0 && admitted < N, "mixed allow/reject over the run (%ld of %d admitted)", admitted, (int)N);
    ratelimit_free(rl);
}

int main(void)
{
    ok(ratelimit_new(0, 4) == NULL, "max_keys 0 is refused");
    test_burst_and_refill();
    test_remaining_reset_peek_cost();
    test_retry_after_exact();
    test_window_edge();
    test_any_interval_bound();
    test_hour();
    test_eviction();
    test_clear();
    test_long_keys();
    test_policy_change();
    test_clock_backwards();
    test_threads();
    test_prepared_keys();
    test_lease_equals_checks();
    test_lease_contention_and_clear();
    test_lease_threads();
    bench();
    return tap_done();
}
