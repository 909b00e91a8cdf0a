/* hist.h: HDR-style log-linear latency histogram (microseconds) and a sliding window of them, for p50/p95/p99 metrics. */
#ifndef SLUICE_HIST_H
#define SLUICE_HIST_H

#include <stddef.h>
#include <stdint.h>

/*
 * Buckets: values 0..127 us each have their own bucket (exact). Above, every
 * power-of-two range [2^e, 2^(e+1)) is split into 64 equal sub-buckets, so a
 * bucket is at most 1/64 of its lowest value wide. Values >= HIST_MAX_US
 * (2^28 us, about 268 s) are counted in the top bucket.
 *
 * Precision: hist_percentile() reports the middle of the bucket holding the
 * true value (clamped to the exact max), so for values < HIST_MAX_US
 * |reported - true| <= true / 128 (< 0.8%); values < 128 us are exact.
 *
 * Percentiles use the nearest-rank definition: the value of rank
 * ceil(q * count) (at least 1) in sorted order.
 *
 * Size: sizeof(hist) = 11,800 bytes; all counters are uint64_t, so a hist
 * never overflows in practice and can live as long as the process.
 *
 * Threads: one writer (the worker that owns it) and any number of readers on
 * other threads, no locks. Every counter is read and written with relaxed
 * __atomic operations, so a read is tear-free and each counter only grows,
 * but it is a consistent-enough snapshot, not an exact one: a value being
 * recorded may show in `count` but not yet in its bucket (or vice versa on a
 * weakly ordered CPU). Readers should copy once (hist_merge into a local hist)
 * and compute on the copy. Two threads must never record into one hist.
 */

#define HIST_SUB_BITS 6
#define HIST_MAX_US (UINT64_C(1) << 28)
#define HIST_BUCKETS ((28 - HIST_SUB_BITS + 1) << HIST_SUB_BITS) /* 1472 */

typedef struct hist {
    uint64_t count;  /* values recorded */
    uint64_t sum;    /* of the true values, us (for the mean) */
    uint64_t max;    /* exact largest value recorded */
    uint64_t bucket[HIST_BUCKETS];
} hist;

/* Empties h. An all-zero hist is already empty (e.g. inside a calloc'ed struct). */
void hist_init(hist *h);

/* Records one value in us: a few instructions, no loop, no floating point. Writer thread only.
 * Inline (below): it is on every request's path. */
static inline void hist_record(hist *h, uint64_t us);

/* Adds src's counts into dst. src may be live (written by another thread); dst belongs to the caller. */
void hist_merge(hist *dst, const hist *src);

/* Number of values recorded. */
uint64_t hist_count(const hist *h);

/* Value at quantile q in [0, 1] (nearest rank, error <= 1/128, see above); 0 when empty. */
uint64_t hist_percentile(const hist *h, double q);

/* Exact largest value recorded (0 when empty). */
uint64_t hist_max(const hist *h);

/* Exact arithmetic mean of the recorded values, 0.0 when empty. */
double hist_mean(const hist *h);

/* Same as hist_init; named for the writer clearing a live hist (readers may see it half-cleared). */
void hist_reset(hist *h);

/* Count of values <= us, for Prometheus `_bucket{le=...}` lines. Rounds down to
 * a bucket edge: exact when us is the top of a bucket (every us < 128, and
 * us = hist_bucket_top(us)); otherwise values in us's bucket are not counted.
 * us >= HIST_MAX_US - 1 returns hist_count (the overflow bucket included). */
uint64_t hist_count_le(const hist *h, uint64_t us);

/* Largest value sharing us's bucket: pick `le` boundaries as hist_bucket_top(b)
 * to make hist_count_le exact (e.g. 5000 us -> 5055 us). */
uint64_t hist_bucket_top(uint64_t us);

/*
 * Sliding window: a ring of up to HISTWIN_MAX_SLOTS hists, each covering
 * slot_s seconds of a caller-supplied clock, so the window spans the last
 * k * slot_s seconds (the current slot being partial). Stale slots are
 * recycled lazily by the writer; a long gap needs no catch-up work.
 * Size: sizeof(histwin) is about 189 KB (16 slots whatever k is).
 * Same thread rules as hist: one writer, lock-free readers; a reader skips a
 * slot that the writer recycles while it is being read (seqlock on the slot's
 * period number), so old data never leaks into a sum.
 */
#define HISTWIN_MAX_SLOTS 16
#define HISTWIN_EMPTY UINT64_MAX

typedef struct histwin {
    uint32_t k, slot_s;
    uint64_t newest;                      /* highest period recorded (writer only) */
    uint64_t cur_s;                       /* the second the writer last recorded in (writer only) */
    unsigned cur_i;                       /* ... and the slot it went to */
    uint64_t period[HISTWIN_MAX_SLOTS];   /* now_s / slot_s held by the slot; HISTWIN_EMPTY if none */
    hist slot[HISTWIN_MAX_SLOTS];
} histwin;

/* Initialises w with k slots (clamped to 1..HISTWIN_MAX_SLOTS) of slot_s seconds (>= 1). */
void histwin_init(histwin *w, unsigned k, unsigned slot_s);

/* Records us at time now_s, recycling the slot if it holds an old period.
 * A now_s older than the newest seen counts in the newest slot. Writer only. Inline: the
 * slot is worked out once per second (histwin_advance), not per value. */
static inline void histwin_record(histwin *w, uint64_t now_s, uint64_t us);
/* histwin_record's once-a-second part: the period, its slot, recycling. */
void histwin_advance(histwin *w, uint64_t now_s);

/* Sets *out to the merge of the slots within the window ending at now_s. Any thread. */
void histwin_sum(const histwin *w, uint64_t now_s, hist *out);

/* Like histwin_sum but adds into *out, to sum several workers' windows. Any thread. */
void histwin_merge(const histwin *w, uint64_t now_s, hist *out);

/* ---- inline writers ---- */

#define HIST_SUB_ (UINT64_C(1) << HIST_SUB_BITS)

/* Bucket index: below 128 the value itself; above, the top 7 significant bits (64..127)
 * offset by 64 per power of two. */
static inline size_t hist_bucket_of(uint64_t v)
{
    if (v < 2 * HIST_SUB_) return (size_t)v;
    if (v >= HIST_MAX_US) return HIST_BUCKETS - 1;
    unsigned shift = 63u - (unsigned)__builtin_clzll(v) - HIST_SUB_BITS;
    return ((size_t)shift << HIST_SUB_BITS) + (size_t)(v >> shift);
}

/* Relaxed atomics: one writer per hist, so a load + store increment is enough (no locked
 * read-modify-write on the hot path) and readers never see a torn counter; on x86-64 these are
 * plain moves. */
static inline void hist_record(hist *h, uint64_t us)
{
    size_t i = hist_bucket_of(us);
    __atomic_store_n(&h->count, __atomic_load_n(&h->count, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
    __atomic_store_n(&h->bucket[i], __atomic_load_n(&h->bucket[i], __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
    __atomic_store_n(&h->sum, __atomic_load_n(&h->sum, __ATOMIC_RELAXED) + us, __ATOMIC_RELAXED);
    if (us > __atomic_load_n(&h->max, __ATOMIC_RELAXED)) __atomic_store_n(&h->max, us, __ATOMIC_RELAXED);
}

static inline void histwin_record(histwin *w, uint64_t now_s, uint64_t us)
{
    if (__builtin_expect(now_s != w->cur_s, 0)) histwin_advance(w, now_s);
    hist_record(&w->slot[w->cur_i], us);
}

#endif
