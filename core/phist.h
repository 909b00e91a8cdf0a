/* phist.h: a fixed-bound Prometheus histogram: exact counts for conventional `le` bounds, in microseconds. */
#ifndef SLUICE_PHIST_H
#define SLUICE_PHIST_H

#include <stdint.h>

#include "buf.h"

/*
 * hist.h keeps ~1,500 log-linear buckets for percentiles; a Prometheus histogram wants a
 * dozen fixed bounds (0.005, 0.01, 0.025, ...) with exact "<= le" counts, and one per label
 * set, so it must be small. A phist is 18 counters; its bounds live once in a phist_bounds.
 *
 * Recording costs a count-leading-zeros, one table load and (usually) one compare: the
 * table maps floor(log2(us)) to the first bound that can hold such a value.
 *
 * Threads: one writer per phist, any number of readers, no locks (relaxed atomics, as in
 * hist.h): a reader may see a value in the sum before its bucket, never a torn counter.
 */

#define PHIST_MAX 16

typedef struct phist_bounds {
    int n;                      /* number of finite bounds, 1..PHIST_MAX */
    uint64_t le_us[PHIST_MAX];  /* ascending, microseconds */
    double le_s[PHIST_MAX];     /* the same in seconds, as printed */
    uint8_t first[64];          /* first[k]: index of the first bound >= 2^k */
} phist_bounds;

typedef struct phist {
    uint64_t bucket[PHIST_MAX + 1]; /* bucket[i]: values in (le[i-1], le[i]]; bucket[n]: above le[n-1] */
    uint64_t sum_us;
} phist;

/* Fills b from n ascending bounds in seconds (n is clamped to PHIST_MAX). */
void phist_bounds_init(phist_bounds *b, const double *le_s, int n);

/* Index of the bucket that holds us (0..b->n). */
static inline int phist_index(const phist_bounds *b, uint64_t us)
{
    int i = b->first[63 - __builtin_clzll(us | 1)];
    while (i < b->n && us > b->le_us[i]) i++;
    return i;
}

/* Records one value (writer thread only). */
static inline void phist_record(phist *h, const phist_bounds *b, uint64_t us)
{
    int i = phist_index(b, us);
    __atomic_store_n(&h->bucket[i], __atomic_load_n(&h->bucket[i], __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
    __atomic_store_n(&h->sum_us, __atomic_load_n(&h->sum_us, __ATOMIC_RELAXED) + us, __ATOMIC_RELAXED);
}

/* Adds src (possibly live) into dst (the caller's). */
void phist_merge(phist *dst, const phist *src);

/* Values recorded (the sum of the buckets). */
uint64_t phist_count(const phist *h, const phist_bounds *b);

/* Appends the _bucket, _sum and _count lines of one series. labels is the inside of the
 * braces without them ("" for none, else e.g. `route="/x",method="GET"`). */
void phist_render(buf *out, const char *name, const char *labels, const phist *h, const phist_bounds *b);

#endif
