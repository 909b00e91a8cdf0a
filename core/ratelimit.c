/* ratelimit.c: sharded, fixed-capacity GCRA table; see ratelimit.h for the semantics.
 * Each shard is an open-addressing hash table (linear probing, backward-shift deletion) whose
 * slots are the keys' 64-byte entries: finding a key touches one cache line, its entry (issue 21:
 * with 10,000 keys the former bucket-head array and node array cost two dependent misses). */
#include "ratelimit.h"

#include <endian.h>
#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>

#define LEN_DIGEST RL_LEN_DIGEST /* node->len marker: key[] holds a 16-byte digest */
#define LEN_FREE 0xFE      /* node->len of an empty slot: matches no key (hints) */
#define NS_PER_MS 1000000u
#define TIME_MAX (UINT64_C(1) << 62) /* ns; keeps now + B*T + c*T far from overflow */

/* One slot: a key's entry, or empty (len == LEN_FREE). 64 bytes = one cache line, and a key
 * lives at its home slot or a few slots after it (linear probing), so a lookup usually touches
 * this one line. policy, len and key[] (the identity) are laid out as in rl_key, zero-padded:
 * comparing two identities is a few word compares, after the 32 hash bits in hh. */
typedef struct rl_node {
    uint64_t tat;   /* ns, caller's clock */
    uint32_t hh;    /* low 32 bits of the key's hash: its home slot, and a quick compare */
    uint32_t ver;   /* the shard's write clock at the last write of this entry: leases check it */
    uint32_t policy;
    uint8_t len;
    uint8_t key[RL_KEY_INLINE];
} rl_node;

#define ID_BYTES (4 + 1 + RL_KEY_INLINE) /* policy + len + key */
_Static_assert(sizeof(rl_node) == 64, "rl_node should be one cache line");
_Static_assert(ID_BYTES % 8 == 0 && offsetof(rl_node, key) + RL_KEY_INLINE == sizeof(rl_node),
               "the identity should be whole words at the end of rl_node");
_Static_assert(offsetof(rl_node, key) - offsetof(rl_node, policy) == offsetof(rl_key, bytes) - offsetof(rl_key, policy) &&
               offsetof(rl_key, bytes) + RL_KEY_INLINE <= sizeof(rl_key), "rl_node and rl_key identities differ");

/* A lock stripe with its own slice of the capacity. Aligned so two shards never
 * share a cache line (their locks and counters are written by different threads).
 * The lock is a spin lock, not a pthread mutex: every critical section but a sweep is a few
 * dozen instructions, and an uncontended acquire + release is then one atomic exchange and a
 * plain store, where a mutex pair is two atomic read-modify-writes and a library call each
 * (about 3.5 ns against 8 ns on the benchmark machine). A waiter that spins for long (the
 * holder was preempted on a busy machine, or is sweeping) yields its CPU. */
typedef struct shard {
    _Alignas(64) atomic_int lock;
    uint32_t first;    /* index of slots[0] in the table's slot array (hints are global) */
    rl_node *slots;
    uint64_t *occ;     /* bit i: slots[i] holds a key (clear and sweep skip empty ranges) */
    uint32_t nslots;   /* > cap, so a probe always ends at an empty slot */
    uint32_t cap;      /* keys this shard may hold */
    uint32_t vclock;   /* write clock: every write of an entry stamps ver with a new value */
    uint64_t min_tat;  /* lower bound of every stored TAT: no key can be expired before it */
    /* Written under the lock, read lock-free by ratelimit_stats. */
    _Atomic uint64_t used, evictions, table_full, checks, rejections;
} shard;

struct ratelimit {
    _Atomic uint32_t epoch; /* bumped by clear and reset_key: ends every lease */
    shard *shards;
    unsigned nshards;
    size_t max_keys;
    uint64_t k0, k1; /* SipHash key, random per table */
    rl_node *slot_mem;
    uint64_t *occ_mem;
};

/* ---- SipHash (keyed, so clients cannot aim keys at one bucket or forge a digest) ---- */

static inline uint64_t rotl(uint64_t x, int b) { return (x << b) | (x >> (64 - b)); }

#define SIPROUND                                                              \
    do {                                                                      \
        v0 += v1; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32);             \
        v2 += v3; v3 = rotl(v3, 16); v3 ^= v2;                                \
        v0 += v3; v3 = rotl(v3, 21); v3 ^= v0;                                \
        v2 += v1; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32);             \
    } while (0)

static inline uint64_t load64le(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v); /* one load; unaligned is fine */
    return le64toh(v);
}

/* SipHash-c-d; out[1] is written only for the 128-bit variant (out128 != 0). Always inlined:
 * c, d and out128 are constants at both call sites, so the rounds unroll. */
static inline __attribute__((always_inline)) void siphash(uint64_t k0, uint64_t k1, const void *data,
                                                          size_t len, int c, int d, int out128,
                                                          uint64_t out[2])
{
    const uint8_t *p = data, *end = p + (len & ~(size_t)7);
    uint64_t v0 = k0 ^ UINT64_C(0x736f6d6570736575), v1 = k1 ^ UINT64_C(0x646f72616e646f6d);
    uint64_t v2 = k0 ^ UINT64_C(0x6c7967656e657261), v3 = k1 ^ UINT64_C(0x7465646279746573);
    if (out128) v1 ^= 0xee;
    for (; p != end; p += 8) {
        uint64_t m = load64le(p);
        v3 ^= m;
        for (int i = 0; i < c; i++) SIPROUND;
        v0 ^= m;
    }
    uint64_t b = (uint64_t)len << 56;
    switch (len & 7) {
    case 7: b |= (uint64_t)p[6] << 48; __attribute__((fallthrough));
    case 6: b |= (uint64_t)p[5] << 40; __attribute__((fallthrough));
    case 5: b |= (uint64_t)p[4] << 32; __attribute__((fallthrough));
    case 4: b |= (uint64_t)p[3] << 24; __attribute__((fallthrough));
    case 3: b |= (uint64_t)p[2] << 16; __attribute__((fallthrough));
    case 2: b |= (uint64_t)p[1] << 8; __attribute__((fallthrough));
    case 1: b |= p[0]; break;
    default: break;
    }
    v3 ^= b;
    for (int i = 0; i < c; i++) SIPROUND;
    v0 ^= b;
    v2 ^= out128 ? 0xee : 0xff;
    for (int i = 0; i < d; i++) SIPROUND;
    out[0] = v0 ^ v1 ^ v2 ^ v3;
    if (out128) {
        v1 ^= 0xdd;
        for (int i = 0; i < d; i++) SIPROUND;
        out[1] = v0 ^ v1 ^ v2 ^ v3;
    }
}

/* ---- locks ---- */

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static void shard_lock_wait(shard *s)
{
    unsigned spins = 0;
    do {
        while (atomic_load_explicit(&s->lock, memory_order_relaxed)) {
            if (++spins < 128) cpu_relax();
            else sched_yield();
        }
    } while (atomic_exchange_explicit(&s->lock, 1, memory_order_acquire));
}

static inline void shard_lock(shard *s)
{
    if (atomic_exchange_explicit(&s->lock, 1, memory_order_acquire)) shard_lock_wait(s);
}

static inline void shard_unlock(shard *s) { atomic_store_explicit(&s->lock, 0, memory_order_release); }

/* ---- keys ---- */

static inline shard *shard_of(const ratelimit *rl, uint64_t hash)
{
    return &rl->shards[((hash >> 32) * rl->nshards) >> 32];
}

/* A slot index from 32 hash bits (multiply-shift: any slot count, no division). */
static inline uint32_t home_of(const shard *s, uint32_t hh) { return (uint32_t)(((uint64_t)hh * s->nslots) >> 32); }

/* n <= RL_KEY_INLINE bytes of src into the zeroed d, in a few fixed-size moves (no call). */
static inline void copy_short(uint8_t *d, const char *src, size_t n)
{
    if (n >= 16) {
        memcpy(d, src, 16);
        if (n > 32) memcpy(d + 16, src + 16, 16);
        memcpy(d + n - 16, src + n - 16, 16);
    } else if (n >= 8) {
        memcpy(d, src, 8);
        memcpy(d + n - 8, src + n - 8, 8);
    } else if (n >= 4) {
        memcpy(d, src, 4);
        memcpy(d + n - 4, src + n - 4, 4);
    } else if (n) {
        d[0] = (uint8_t)src[0];
        d[n / 2] = (uint8_t)src[n / 2];
        d[n - 1] = (uint8_t)src[n - 1];
    }
}

/* SipHash-1-3 of the first n bytes of the zero-padded identity bytes (the same value as siphash()
 * over those n bytes): the last partial word is one load, since the bytes after n are zero. */
static inline uint64_t hash_padded(uint64_t k0, uint64_t k1, const uint8_t *p, size_t n)
{
    size_t full = n & ~(size_t)7;
    if (full + 8 > RL_KEY_INLINE) {    /* the load would leave bytes[]: the general code */
        uint64_t h[2];
        siphash(k0, k1, p, n, 1, 3, 0, h);
        return h[0];
    }
    uint64_t v0 = k0 ^ UINT64_C(0x736f6d6570736575), v1 = k1 ^ UINT64_C(0x646f72616e646f6d);
    uint64_t v2 = k0 ^ UINT64_C(0x6c7967656e657261), v3 = k1 ^ UINT64_C(0x7465646279746573);
    for (size_t i = 0; i < full; i += 8) {
        uint64_t m = load64le(p + i);
        v3 ^= m;
        SIPROUND;
        v0 ^= m;
    }
    uint64_t b = ((uint64_t)n << 56) | load64le(p + full);
    v3 ^= b;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

void ratelimit_key(const ratelimit *rl, uint32_t policy, const char *key, size_t keylen, rl_key *k)
{
    memset(k->bytes, 0, sizeof k->bytes); /* zero padding: identity is a fixed-size compare */
    if (keylen <= RL_KEY_INLINE) {
        k->len = (uint8_t)keylen;
        copy_short(k->bytes, key, keylen);
    } else {
        uint64_t h[2];
        siphash(rl->k0, rl->k1, key, keylen, 2, 4, 1, h);
        memcpy(k->bytes, h, 16);
        k->len = LEN_DIGEST;
    }
    size_t n = k->len == LEN_DIGEST ? 16 : k->len;
    /* The policy id and the digest flag go into the hash key, so equal bytes under
     * two policies (or a short key equal to some digest) land independently. */
    k->hash = hash_padded(rl->k0 ^ policy, rl->k1 ^ ((uint64_t)k->len << 32), k->bytes, n);
    k->policy = policy;
    k->hint = 0;
    /* The key's home slot is where its check will look first: with many keys that line is rarely
     * cached (a table of 10,000 busy keys is larger than L2), so its load starts now and overlaps
     * the caller's work up to the check (issue 21; perf put 90% of the check's time on it). */
    const shard *s = shard_of(rl, k->hash);
    __builtin_prefetch(&s->slots[home_of(s, (uint32_t)k->hash)]);
}

/* Two identities (policy, len, key) compared word by word, no call. Both are zero-padded and
 * the first word holds policy and len, so only the words up to b's last key byte count. */
static inline int id_eq(const uint8_t *a, const rl_key *k)
{
    const uint8_t *b = (const uint8_t *)&k->policy;
    size_t end = 5 + (k->len == LEN_DIGEST ? 16 : k->len);
    uint64_t d = 0;
    for (size_t i = 0; i < end; i += 8) d |= load64le(a + i) ^ load64le(b + i);
    return d == 0;
}

static inline int node_is(const rl_node *n, const rl_key *k) { return id_eq((const uint8_t *)&n->policy, k); }

/* The slot holding k (>= 0), or -1 - the empty slot where k would be inserted. */
static inline long find_slot(const shard *s, const rl_key *k)
{
    uint32_t hh = (uint32_t)k->hash, i = home_of(s, hh);
    for (;;) {
        const rl_node *n = &s->slots[i];
        if (n->len == LEN_FREE) return -1 - (long)i;
        if (n->hh == hh && node_is(n, k)) return (long)i;
        if (++i == s->nslots) i = 0;
    }
}

static inline void stamp(shard *s, rl_node *n) { n->ver = ++s->vclock; }

static inline void occ_set(shard *s, uint32_t i) { s->occ[i >> 6] |= UINT64_C(1) << (i & 63); }
static inline void occ_clear(shard *s, uint32_t i) { s->occ[i >> 6] &= ~(UINT64_C(1) << (i & 63)); }

/* Removes the key at slot i: the keys after it in its cluster move back so that every key stays
 * reachable from its home slot (no tombstones). A moved key keeps its ver; hints naming its old
 * slot no longer find it (they are verified, never trusted). */
static void remove_at(shard *s, uint32_t i)
{
    uint32_t j = i;
    for (;;) {
        if (++j == s->nslots) j = 0;
        rl_node *n = &s->slots[j];
        if (n->len == LEN_FREE) break;
        uint32_t h = home_of(s, n->hh);
        /* the key at j stays unless the hole at i lies on its probe path (home .. j) */
        int stays = i <= j ? (h > i && h <= j) : (h > i || h <= j);
        if (!stays) {
            s->slots[i] = *n;
            i = j;
        }
    }
    s->slots[i].len = LEN_FREE;
    occ_clear(s, i);
    atomic_store_explicit(&s->used, atomic_load_explicit(&s->used, memory_order_relaxed) - 1,
                          memory_order_relaxed);
}

/* The key's entry if its hint still names it (caller holds s's lock). */
static inline rl_node *hinted(shard *s, const rl_key *k)
{
    uint32_t local = k->hint - 1 - s->first;
    if (!k->hint || local >= s->nslots) return NULL;
    rl_node *n = &s->slots[local];
    return node_is(n, k) ? n : NULL;
}

/* The first occupied slot at or after i, or nslots. */
static inline uint32_t next_used(const shard *s, uint32_t i)
{
    while (i < s->nslots) {
        uint64_t w = s->occ[i >> 6] >> (i & 63);
        if (w) return i + (uint32_t)__builtin_ctzll(w);
        i = (i | 63) + 1;
    }
    return s->nslots;
}

static inline void bump(_Atomic uint64_t *c, uint64_t by)
{
    /* Only the shard's lock holder writes, so a load+store is enough (no lock prefix). */
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + by,
                          memory_order_relaxed);
}

/* Forget every key with a full bucket; recompute the exact min_tat of the rest. */
static size_t sweep_shard(shard *s, uint64_t now)
{
    size_t evicted = 0;
    uint64_t min = UINT64_MAX;
    /* In slot order; a removal moves later keys of the cluster back, into slot i (looked at
     * again) or, for a cluster wrapping around the end, from slots already looked at. */
    for (uint32_t i = next_used(s, 0); i < s->nslots; i = next_used(s, i)) {
        rl_node *n = &s->slots[i];
        if (n->tat <= now) {
            remove_at(s, i);
            evicted++;
        } else {
            if (n->tat < min) min = n->tat;
            i++;
        }
    }
    s->min_tat = min;
    bump(&s->evictions, evicted);
    return evicted;
}

/* ---- lifecycle ---- */

#define HUGE_PAGE ((size_t)2 << 20)

/* The slot array: 8 MB for the default 100,000 keys, and every request touches one entry at
 * random, which with 4 KB pages can also miss the TLB. An array of at least one huge page is
 * aligned to one and asks for transparent huge pages (MADV_HUGEPAGE: honoured when the kernel's
 * setting is "madvise" or "always", ignored otherwise). The whole array is written below
 * anyway, so it costs at most the rounding to a huge page (368 KB more RSS measured with the
 * default; the gain was within noise, bench/RESULTS.md "session 5"). */
static rl_node *slots_alloc(size_t nslots)
{
    size_t bytes = sizeof(rl_node) * nslots;
    if (bytes < HUGE_PAGE) return aligned_alloc(64, bytes);
    bytes = (bytes + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
    rl_node *p = aligned_alloc(HUGE_PAGE, bytes);
#ifdef MADV_HUGEPAGE
    if (p) (void)madvise(p, bytes, MADV_HUGEPAGE);  /* advice only: no huge pages is no error */
#endif
    return p;
}

ratelimit *ratelimit_new(size_t max_keys, unsigned shards)
{
    if (max_keys == 0 || max_keys > (size_t)UINT32_MAX - 1) return NULL;
    if (shards == 0) shards = 64;
    if (shards > max_keys) shards = (unsigned)max_keys;
    ratelimit *rl = calloc(1, sizeof *rl);
    if (!rl) return NULL;
    rl->nshards = shards;
    rl->max_keys = max_keys;
    atomic_init(&rl->epoch, 0);
    if (getrandom(&rl->k0, sizeof rl->k0, 0) != sizeof rl->k0 ||
        getrandom(&rl->k1, sizeof rl->k1, 0) != sizeof rl->k1) {
        /* No entropy source: still a valid table, just a guessable hash key. */
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        rl->k0 = (uint64_t)ts.tv_nsec * UINT64_C(0x9E3779B97F4A7C15) ^ (uintptr_t)rl;
        rl->k1 = (uint64_t)ts.tv_sec ^ rotl(rl->k0, 29);
    }

    /* Capacity per shard: max_keys split as evenly as possible; 1.25 slots per key (a full shard
     * has a load factor of 0.8: about 3 slots probed for a known key, 13 for a new one). */
    size_t base = max_keys / shards, extra = max_keys % shards, nslots = 0, nwords = 0;
    for (unsigned i = 0; i < shards; i++) {
        size_t cap = base + (i < extra), ns = cap + cap / 4 + 1;
        nslots += ns;
        nwords += (ns + 63) / 64;
    }
    if (nslots > (size_t)UINT32_MAX - 1) {
        free(rl);
        return NULL;
    }
    rl->shards = aligned_alloc(64, sizeof(shard) * shards);
    rl->slot_mem = slots_alloc(nslots);
    rl->occ_mem = calloc(nwords, sizeof(uint64_t));
    if (!rl->shards || !rl->slot_mem || !rl->occ_mem) {
        free(rl->shards), free(rl->slot_mem), free(rl->occ_mem), free(rl);
        return NULL;
    }
    rl_node *slots = rl->slot_mem;
    uint64_t *occ = rl->occ_mem;
    for (unsigned i = 0; i < shards; i++) {
        shard *s = &rl->shards[i];
        memset(s, 0, sizeof *s);
        atomic_init(&s->lock, 0);
        s->first = (uint32_t)(slots - rl->slot_mem);
        s->cap = (uint32_t)(base + (i < extra));
        s->nslots = s->cap + s->cap / 4 + 1;
        s->slots = slots;
        s->occ = occ;
        slots += s->nslots;
        occ += (s->nslots + 63) / 64;
        for (uint32_t j = 0; j < s->nslots; j++) {
            memset(&s->slots[j], 0, sizeof(rl_node));
            s->slots[j].len = LEN_FREE;
        }
        s->min_tat = UINT64_MAX;
    }
    return rl;
}

void ratelimit_free(ratelimit *rl)
{
    if (!rl) return;
    free(rl->shards);
    free(rl->slot_mem);
    free(rl->occ_mem);
    free(rl);
}

/* ---- the decision ---- */

static inline uint64_t ceil_ms(uint64_t ns) { return ns / NS_PER_MS + (ns % NS_PER_MS != 0); }

int ratelimit_gcra(const rl_policy *p, rl_gcra *g)
{
    if (!p || p->limit == 0 || p->window_ms == 0 || p->window_ms > TIME_MAX / NS_PER_MS) return -1;
    /* T rounded up: never admits more than limit per window; exact for the usual policies. */
    uint64_t win_ns = p->window_ms * NS_PER_MS;
    uint64_t T = win_ns / p->limit + (win_ns % p->limit != 0);
    uint64_t B = p->burst ? p->burst : p->limit;
    if (B > TIME_MAX / T) return -1;
    g->id = p->id;
    g->T = T;
    g->B = B;
    g->BT = B * T;
    return 0;
}

/* Every case but the common one (a known key admitted): peek, reject, capped debt, new key.
 * Called with s locked, n the key's entry or NULL (then `at` is the empty slot where the key
 * would go); unlocks s. */
static __attribute__((noinline)) int check_locked(ratelimit *rl, shard *s, const rl_gcra *g,
                                                  rl_key *k, rl_node *n, long at, uint64_t cost,
                                                  uint64_t now, rl_result *out)
{
    (void)rl;
    const uint64_t T = g->T, BT = g->BT;
    out->allowed = 0;
    out->table_full = 0;
    out->limit = g->B;
    out->retry_after_ms = 0;
    if (cost) bump(&s->checks, 1);
    uint64_t tat = n ? n->tat : now;
    if (tat > now + BT) {
        /* Debt beyond one full bucket of the CURRENT policy: only after a lowered
         * limit or a clock that went backwards. Cap it so the key is exhausted,
         * not locked out for longer than a window. This never grants a request. */
        tat = now + BT;
        if (n && cost) {
            n->tat = tat;
            stamp(s, n);
            if (tat < s->min_tat) s->min_tat = tat;
        }
    }
    uint64_t base = tat > now ? tat : now;
    uint64_t limit_at = now + BT; /* admitted iff the new TAT <= limit_at */

    if (cost == 0) { /* peek */
        shard_unlock(s);
        out->remaining = (limit_at - base) / T;
        out->allowed = out->remaining > 0;
        out->reset_ms = ceil_ms(base - now);
        return 0;
    }
    if (cost > g->B) { /* can never conform */
        bump(&s->rejections, 1);
        shard_unlock(s);
        out->remaining = (limit_at - base) / T;
        out->retry_after_ms = UINT64_MAX;
        out->reset_ms = ceil_ms(base - now);
        return 0;
    }
    uint64_t new_tat = base + cost * T;
    if (new_tat > limit_at) {
        bump(&s->rejections, 1);
        shard_unlock(s);
        out->remaining = (limit_at - base) / T;
        out->retry_after_ms = ceil_ms(new_tat - limit_at);
        out->reset_ms = ceil_ms(base - now);
        return 0;
    }
    if (!n) {
        /* New key: needs room in the shard. Only when the shard may hold an expired key
         * (min_tat <= now) is a sweep worth its O(shard) cost; otherwise reject
         * at once, so a flood of new keys against a busy table stays cheap. */
        int full = atomic_load_explicit(&s->used, memory_order_relaxed) >= s->cap;
        if (full && s->min_tat <= now) {
            sweep_shard(s, now);
            full = atomic_load_explicit(&s->used, memory_order_relaxed) >= s->cap;
            at = find_slot(s, k);   /* the sweep moved keys: probe again (the key is absent) */
        }
        if (full) {
            out->retry_after_ms = s->min_tat > now ? ceil_ms(s->min_tat - now) : 1;
            bump(&s->table_full, 1);
            bump(&s->rejections, 1);
            shard_unlock(s);
            out->table_full = 1;
            out->remaining = 0;
            out->reset_ms = 0;
            return 0;
        }
        uint32_t i = (uint32_t)(-1 - at);
        n = &s->slots[i];
        memcpy(&n->policy, &k->policy, ID_BYTES);
        n->hh = (uint32_t)k->hash;
        occ_set(s, i);
        k->hint = s->first + i + 1;
        bump(&s->used, 1);
    }
    n->tat = new_tat;
    stamp(s, n);
    if (new_tat < s->min_tat) s->min_tat = new_tat;
    shard_unlock(s);

    out->allowed = 1;
    out->remaining = (limit_at - new_tat) / T;
    out->reset_ms = ceil_ms(new_tat - now);
    return 0;
}

int ratelimit_check_key(ratelimit *rl, const rl_gcra *g, rl_key *k, uint64_t cost,
                        uint64_t now_ms, rl_result *out)
{
    if (k->policy != g->id) return -1;
    uint64_t now = now_ms > TIME_MAX / NS_PER_MS ? TIME_MAX : now_ms * NS_PER_MS;
    shard *s = shard_of(rl, k->hash);

    shard_lock(s);
    /* the hint is a slot index; trusted only if that slot is in this shard and holds the key */
    rl_node *n = hinted(s, k);
    if (!n) {
        long at = find_slot(s, k);
        if (at < 0) return check_locked(rl, s, g, k, NULL, at, cost, now, out);
        n = &s->slots[at];
        k->hint = s->first + (uint32_t)at + 1;
    }
    /* The common case: a known key, no excess debt, admitted. The same arithmetic as
     * check_locked (which handles everything else), minus the branches that cannot apply. */
    uint64_t tat = n->tat, limit_at = now + g->BT;
    uint64_t new_tat = (tat > now ? tat : now) + cost * g->T;
    if (cost == 0 || cost > g->B || tat > limit_at || new_tat > limit_at)
        return check_locked(rl, s, g, k, n, 0, cost, now, out);
    bump(&s->checks, 1);
    n->tat = new_tat;
    stamp(s, n);
    if (new_tat < s->min_tat) s->min_tat = new_tat;
    shard_unlock(s);

    out->allowed = 1;
    out->table_full = 0;
    out->limit = g->B;
    out->remaining = (limit_at - new_tat) / g->T;
    out->retry_after_ms = 0;
    out->reset_ms = ceil_ms(new_tat - now);
    return 0;
}

/* ---- leases ---- */

int ratelimit_lease(ratelimit *rl, const rl_gcra *g, rl_key *k, uint32_t want, uint64_t now_ms,
                    rl_result *out, rl_lease *ls)
{
    ls->left = 0;
    if (want <= 1) return ratelimit_check_key(rl, g, k, 1, now_ms, out);
    if (k->policy != g->id) return -1;
    const uint64_t T = g->T;
    uint64_t now = now_ms > TIME_MAX / NS_PER_MS ? TIME_MAX : now_ms * NS_PER_MS;
    shard *s = shard_of(rl, k->hash);
    uint32_t epoch = atomic_load_explicit(&rl->epoch, memory_order_relaxed);

    shard_lock(s);
    rl_node *n = hinted(s, k);
    if (!n) {
        long at = find_slot(s, k);
        /* a key new to the table gets one admission, no lease: most keys are seen once */
        if (at < 0) return check_locked(rl, s, g, k, NULL, at, 1, now, out);
        n = &s->slots[at];
        k->hint = s->first + (uint32_t)at + 1;
    }
    uint64_t tat = n->tat, limit_at = now + g->BT;
    uint64_t base = tat > now ? tat : now;
    if (tat > limit_at || base + T > limit_at) return check_locked(rl, s, g, k, n, 0, 1, now, out);
    /* conform >= 1 admissions fit; take at most half of them (at least this request's one),
     * so that a lease never empties a bucket other threads may be using */
    uint64_t conform = (limit_at - base) / T, half = conform / 2;
    uint64_t take = want < half ? want : half ? half : 1;
    bump(&s->checks, 1);
    n->tat = base + take * T;
    stamp(s, n);
    if (n->tat < s->min_tat) s->min_tat = n->tat;
    ls->ver = n->ver;
    shard_unlock(s);

    /* this request is the first admission; the others wait in the lease */
    out->allowed = 1;
    out->table_full = 0;
    out->limit = g->B;
    out->remaining = conform - 1;
    out->retry_after_ms = 0;
    out->reset_ms = ceil_ms(base + T - now);
    ls->key = *k;
    ls->now_ms = now_ms;
    ls->now_ns = now;
    ls->T = T;
    ls->B = g->B;
    ls->next_tat = base + 2 * T;
    ls->remaining = conform - 2;
    ls->left = (uint32_t)(take - 1);
    ls->epoch = epoch;
    ls->epoch_now = &rl->epoch;
    return 0;
}

uint32_t ratelimit_lease_end(ratelimit *rl, rl_lease *ls)
{
    uint32_t left = ls->left;
    ls->left = 0;
    if (!left || atomic_load_explicit(&rl->epoch, memory_order_relaxed) != ls->epoch) return left;
    shard *s = shard_of(rl, ls->key.hash);
    shard_lock(s);
    rl_node *n = hinted(s, &ls->key);
    /* untouched since the lease: taking back the unspent admissions leaves exactly the TAT of a
     * lease of the spent ones (the others were never used). Touched: they stay charged, since the
     * writes between may have been decided against them (never more admitted, maybe fewer). */
    if (n && n->ver == ls->ver) {
        n->tat -= left * ls->T;
        stamp(s, n);
        if (n->tat < s->min_tat) s->min_tat = n->tat;
        left = 0;
    }
    shard_unlock(s);
    return left;
}

int ratelimit_check_n(ratelimit *rl, const rl_policy *p, const char *key, size_t keylen,
                      uint64_t cost, uint64_t now_ms, rl_result *out)
{
    rl_gcra g;
    if (!rl || !out || (!key && keylen) || ratelimit_gcra(p, &g) < 0) return -1;
    rl_key k;
    ratelimit_key(rl, p->id, key, keylen, &k);
    return ratelimit_check_key(rl, &g, &k, cost, now_ms, out);
}

int ratelimit_check(ratelimit *rl, const rl_policy *p, const char *key, size_t keylen,
                    uint64_t now_ms, rl_result *out)
{
    return ratelimit_check_n(rl, p, key, keylen, 1, now_ms, out);
}

int ratelimit_reset_key(ratelimit *rl, uint32_t policy_id, const char *key, size_t keylen)
{
    if (!rl || (!key && keylen)) return 0;
    rl_key k;
    ratelimit_key(rl, policy_id, key, keylen, &k);
    atomic_fetch_add_explicit(&rl->epoch, 1, memory_order_relaxed);
    shard *s = shard_of(rl, k.hash);
    shard_lock(s);
    long at = find_slot(s, &k);
    if (at >= 0) remove_at(s, (uint32_t)at);
    shard_unlock(s);
    return at >= 0;
}

size_t ratelimit_sweep(ratelimit *rl, uint64_t now_ms)
{
    uint64_t now = now_ms > TIME_MAX / NS_PER_MS ? TIME_MAX : now_ms * NS_PER_MS;
    size_t total = 0;
    for (unsigned i = 0; i < rl->nshards; i++) {
        shard *s = &rl->shards[i];
        shard_lock(s);
        if (s->min_tat <= now) total += sweep_shard(s, now);
        shard_unlock(s);
    }
    return total;
}

void ratelimit_clear(ratelimit *rl)
{
    if (!rl) return;
    atomic_fetch_add_explicit(&rl->epoch, 1, memory_order_relaxed);
    for (unsigned i = 0; i < rl->nshards; i++) {
        shard *s = &rl->shards[i];
        shard_lock(s);
        if (atomic_load_explicit(&s->used, memory_order_relaxed)) {
            for (uint32_t i = next_used(s, 0); i < s->nslots; i = next_used(s, i + 1)) s->slots[i].len = LEN_FREE;
            memset(s->occ, 0, (s->nslots + 63) / 64 * sizeof(uint64_t));
            atomic_store_explicit(&s->used, 0, memory_order_relaxed);
        }
        s->min_tat = UINT64_MAX;
        atomic_store_explicit(&s->evictions, 0, memory_order_relaxed);
        atomic_store_explicit(&s->table_full, 0, memory_order_relaxed);
        atomic_store_explicit(&s->checks, 0, memory_order_relaxed);
        atomic_store_explicit(&s->rejections, 0, memory_order_relaxed);
        shard_unlock(s);
    }
}

void ratelimit_stats(const ratelimit *rl, rl_stats *out)
{
    memset(out, 0, sizeof *out);
    out->capacity = rl->max_keys;
    for (unsigned i = 0; i < rl->nshards; i++) {
        shard *s = &rl->shards[i];
        out->keys += atomic_load_explicit(&s->used, memory_order_relaxed);
        out->evictions += atomic_load_explicit(&s->evictions, memory_order_relaxed);
        out->table_full += atomic_load_explicit(&s->table_full, memory_order_relaxed);
        out->checks += atomic_load_explicit(&s->checks, memory_order_relaxed);
        out->rejections += atomic_load_explicit(&s->rejections, memory_order_relaxed);
    }
}
