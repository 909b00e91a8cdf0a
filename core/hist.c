/* hist.c: log-linear latency histogram and sliding window; see hist.h for precision and threading. */
#include "hist.h"

/* Relaxed atomics: one writer per hist, so a load + store increment is enough
 * (no locked read-modify-write on the hot path) and readers never see a torn
 * counter. Clearing stores are release and copying loads acquire: that is what
 * lets histwin_merge notice a slot recycled under it without fences (which
 * TSan does not model). On x86-64 all of these compile to plain moves. */
#define LOAD(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define LOAD_ACQ(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define STORE_REL(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

#define SUB (UINT64_C(1) << HIST_SUB_BITS) /* 64 sub-buckets per power of two */
#define EXACT (2 * SUB)                    /* values below 128 have their own bucket */

#define bucket_of hist_bucket_of

static uint64_t bucket_lo(size_t i)
{
    if (i < EXACT) return i;
    unsigned shift = (unsigned)(i >> HIST_SUB_BITS) - 1;
    return ((i & (SUB - 1)) | SUB) << shift;
}

static uint64_t bucket_width(size_t i)
{
    return i < EXACT ? 1 : UINT64_C(1) << ((i >> HIST_SUB_BITS) - 1);
}

void hist_init(hist *h)
{
    STORE_REL(&h->count, 0);
    STORE_REL(&h->sum, 0);
    STORE_REL(&h->max, 0);
    for (size_t i = 0; i < HIST_BUCKETS; i++) STORE_REL(&h->bucket[i], 0);
}

void hist_reset(hist *h) { hist_init(h); }

void hist_merge(hist *dst, const hist *src)
{
    STORE(&dst->count, LOAD(&dst->count) + LOAD_ACQ(&src->count));
    STORE(&dst->sum, LOAD(&dst->sum) + LOAD_ACQ(&src->sum));
    uint64_t m = LOAD_ACQ(&src->max);
    if (m > LOAD(&dst->max)) STORE(&dst->max, m);
    for (size_t i = 0; i < HIST_BUCKETS; i++) {
        uint64_t c = LOAD_ACQ(&src->bucket[i]);
        if (c) STORE(&dst->bucket[i], LOAD(&dst->bucket[i]) + c);
    }
}

uint64_t hist_count(const hist *h) { return LOAD(&h->count); }

uint64_t hist_max(const hist *h) { return LOAD(&h->max); }

double hist_mean(const hist *h)
{
    uint64_t n = LOAD(&h->count);
    return n ? (double)LOAD(&h->sum) / (double)n : 0.0;
}

uint64_t hist_percentile(const hist *h, double q)
{
    uint64_t n = LOAD(&h->count), max = LOAD(&h->max);
    if (n == 0) return 0;
    if (!(q > 0)) q = 0; /* also maps NaN to 0 */
    if (q > 1) q = 1;
    double want = q * (double)n;
    uint64_t rank = (uint64_t)want;
    if ((double)rank < want) rank++; /* ceil without libm */
    if (rank < 1) rank = 1;
    if (rank > n) rank = n;
    uint64_t cum = 0;
    for (size_t i = 0; i < HIST_BUCKETS; i++) {
        cum += LOAD(&h->bucket[i]);
        if (cum >= rank) {
            uint64_t w = bucket_width(i);
            uint64_t mid = bucket_lo(i) + w / 2;
            return mid < max ? mid : max;
        }
    }
    /* A live hist's count may run ahead of its buckets: the value being recorded is the largest so far or near it. */
    return max;
}

uint64_t hist_bucket_top(uint64_t us)
{
    if (us >= HIST_MAX_US) return UINT64_MAX;
    size_t i = bucket_of(us);
    return bucket_lo(i) + bucket_width(i) - 1;
}

uint64_t hist_count_le(const hist *h, uint64_t us)
{
    if (us >= HIST_MAX_US - 1) return LOAD(&h->count);
    size_t i = bucket_of(us);
    size_t end = us == hist_bucket_top(us) ? i + 1 : i;
    uint64_t cum = 0;
    for (size_t b = 0; b < end; b++) cum += LOAD(&h->bucket[b]);
    return cum;
}

/* ---- sliding window ---- */

void histwin_init(histwin *w, unsigned k, unsigned slot_s)
{
    if (k < 1) k = 1;
    if (k > HISTWIN_MAX_SLOTS) k = HISTWIN_MAX_SLOTS;
    w->k = k;
    w->slot_s = slot_s ? slot_s : 1;
    w->newest = 0;
    w->cur_s = UINT64_MAX;      /* the first record works out its slot */
    w->cur_i = 0;
    for (unsigned i = 0; i < HISTWIN_MAX_SLOTS; i++) {
        STORE(&w->period[i], HISTWIN_EMPTY);
        hist_init(&w->slot[i]);
    }
}

void histwin_advance(histwin *w, uint64_t now_s)
{
    uint64_t p = now_s / w->slot_s;
    if (p < w->newest) p = w->newest; /* clock stepped back: keep the ring monotonic */
    w->newest = p;
    unsigned i = (unsigned)(p % w->k);
    if (LOAD(&w->period[i]) != p) {
        /* Recycle: the period goes through EMPTY while the counters are cleared
         * (release stores), so a reader that copied any cleared counter then
         * sees the period number change and drops the slot. */
        STORE(&w->period[i], HISTWIN_EMPTY);
        hist_reset(&w->slot[i]);
        STORE_REL(&w->period[i], p);
    }
    w->cur_s = now_s;
    w->cur_i = i;
}

void histwin_merge(const histwin *w, uint64_t now_s, hist *out)
{
    uint64_t pnow = now_s / w->slot_s;
    hist tmp;
    for (unsigned i = 0; i < w->k; i++) {
        uint64_t p1 = LOAD_ACQ(&w->period[i]);
        if (p1 == HISTWIN_EMPTY || p1 + w->k <= pnow) continue; /* empty or out of the window */
        hist_init(&tmp);
        hist_merge(&tmp, &w->slot[i]); /* acquire loads: the period load below stays after them */
        if (LOAD(&w->period[i]) != p1) continue; /* recycled while we read it: all its data is stale */
        hist_merge(out, &tmp);
    }
}

void histwin_sum(const histwin *w, uint64_t now_s, hist *out)
{
    hist_init(out);
    histwin_merge(w, now_s, out);
}
