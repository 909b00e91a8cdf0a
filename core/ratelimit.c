/* ratelimit.c: sharded, fixed-capacity GCRA table; see ratelimit.h for the semantics. */
#include "ratelimit.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define NIL UINT32_MAX
#define LEN_DIGEST 0xFF    /* node->len marker: key[] holds a 16-byte digest */
#define NS_PER_MS 1000000u
#define TIME_MAX (UINT64_C(1) << 62) /* ns; keeps now + B*T + c*T far from overflow */

/* One key. 64 bytes = one cache line, so a lookup of a known key touches the
 * bucket head and one line per chain step. */
typedef struct rl_node {
    uint64_t tat; /* ns, caller's clock */
    uint32_t policy;
    uint32_t next;
    uint8_t len;
    uint8_t key[RL_KEY_INLINE];
} rl_node;

_Static_assert(sizeof(rl_node) == 64, "rl_node should be one cache line");

/* A lock stripe with its own slice of the capacity. Aligned so two shards never
 * share a cache line (their locks and counters are written by different threads). */
typedef struct shard {
    _Alignas(64) pthread_mutex_t mu;
    rl_node *nodes;
    uint32_t *heads;
    uint32_t mask;     /* heads has mask+1 entries, a power of two >= cap */
    uint32_t cap;      /* nodes in this shard */
    uint32_t free_head;
    uint64_t min_tat;  /* lower bound of every stored TAT: no key can be expired before it */
    /* Written under mu, read lock-free by ratelimit_stats. */
    _Atomic uint64_t used, evictions, table_full, checks, rejections;
} shard;

struct ratelimit {
    shard *shards;
    unsigned nshards;
    size_t max_keys;
    uint64_t k0, k1; /* SipHash key, random per table */
    rl_node *node_mem;
    uint32_t *head_mem;
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
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* SipHash-c-d; out[1] is written only for the 128-bit variant (out128 != 0). */
static void siphash(uint64_t k0, uint64_t k1, const void *data, size_t len, int c, int d,
                    int out128, uint64_t out[2])
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
    for (size_t i = 0; i < (len & 7); i++) b |= (uint64_t)p[i] << (8 * i);
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

/* ---- keys ---- */

/* The stored form of a key: verbatim if short, else a 128-bit digest. */
typedef struct normkey {
    uint8_t len;
    const uint8_t *bytes;
    uint8_t digest[16];
    uint64_t hash;
} normkey;

static void normalize(const ratelimit *rl, uint32_t policy, const char *key, size_t keylen,
                      normkey *nk)
{
    uint64_t h[2];
    if (!key) key = ""; /* keylen is 0 here (callers check); keeps memcmp/memcpy defined */
    if (keylen <= RL_KEY_INLINE) {
        nk->len = (uint8_t)keylen;
        nk->bytes = (const uint8_t *)key;
    } else {
        siphash(rl->k0, rl->k1, key, keylen, 2, 4, 1, h);
        memcpy(nk->digest, h, 16);
        nk->len = LEN_DIGEST;
        nk->bytes = nk->digest;
    }
    size_t n = nk->len == LEN_DIGEST ? 16 : nk->len;
    /* The policy id and the digest flag go into the hash key, so equal bytes under
     * two policies (or a short key equal to some digest) land independently. */
    siphash(rl->k0 ^ policy, rl->k1 ^ ((uint64_t)nk->len << 32), nk->bytes, n, 1, 3, 0, h);
    nk->hash = h[0];
}

static inline shard *shard_of(const ratelimit *rl, uint64_t hash)
{
    return &rl->shards[((hash >> 32) * rl->nshards) >> 32];
}

static inline int node_is(const rl_node *n, uint32_t policy, const normkey *nk)
{
    return n->policy == policy && n->len == nk->len &&
           memcmp(n->key, nk->bytes, nk->len == LEN_DIGEST ? 16 : nk->len) == 0;
}

/* Returns the link (head slot or a node's next) that points at the key, or NULL. */
static uint32_t *find_link(shard *s, uint32_t policy, const normkey *nk)
{
    uint32_t *link = &s->heads[nk->hash & s->mask];
    while (*link != NIL) {
        rl_node *n = &s->nodes[*link];
        if (node_is(n, policy, nk)) return link;
        link = &n->next;
    }
    return NULL;
}

static void unlink_node(shard *s, uint32_t *link)
{
    uint32_t i = *link;
    *link = s->nodes[i].next;
    s->nodes[i].next = s->free_head;
    s->free_head = i;
    atomic_store_explicit(&s->used, atomic_load_explicit(&s->used, memory_order_relaxed) - 1,
                          memory_order_relaxed);
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
    for (uint32_t b = 0; b <= s->mask; b++) {
        uint32_t *link = &s->heads[b];
        while (*link != NIL) {
            rl_node *n = &s->nodes[*link];
            if (n->tat <= now) {
                unlink_node(s, link);
                evicted++;
            } else {
                if (n->tat < min) min = n->tat;
                link = &n->next;
            }
        }
    }
    s->min_tat = min;
    bump(&s->evictions, evicted);
    return evicted;
}

/* ---- lifecycle ---- */

ratelimit *ratelimit_new(size_t max_keys, unsigned shards)
{
    if (max_keys == 0 || max_keys > (size_t)UINT32_MAX - 1) return NULL;
    if (shards == 0) shards = 64;
    if (shards > max_keys) shards = (unsigned)max_keys;
    ratelimit *rl = calloc(1, sizeof *rl);
    if (!rl) return NULL;
    rl->nshards = shards;
    rl->max_keys = max_keys;
    if (getrandom(&rl->k0, sizeof rl->k0, 0) != sizeof rl->k0 ||
        getrandom(&rl->k1, sizeof rl->k1, 0) != sizeof rl->k1) {
        /* No entropy source: still a valid table, just a guessable hash key. */
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        rl->k0 = (uint64_t)ts.tv_nsec * UINT64_C(0x9E3779B97F4A7C15) ^ (uintptr_t)rl;
        rl->k1 = (uint64_t)ts.tv_sec ^ rotl(rl->k0, 29);
    }

    /* Capacity per shard: max_keys split as evenly as possible; heads rounded to 2^k. */
    size_t base = max_keys / shards, extra = max_keys % shards, nheads = 0;
    for (unsigned i = 0; i < shards; i++) {
        size_t cap = base + (i < extra), h = 1;
        while (h < cap) h <<= 1;
        nheads += h;
    }
    rl->shards = aligned_alloc(64, sizeof(shard) * shards);
    rl->node_mem = aligned_alloc(64, sizeof(rl_node) * max_keys);
    rl->head_mem = malloc(sizeof(uint32_t) * nheads);
    if (!rl->shards || !rl->node_mem || !rl->head_mem) {
        free(rl->shards), free(rl->node_mem), free(rl->head_mem), free(rl);
        return NULL;
    }
    memset(rl->head_mem, 0xFF, sizeof(uint32_t) * nheads); /* all NIL */
    rl_node *nodes = rl->node_mem;
    uint32_t *heads = rl->head_mem;
    for (unsigned i = 0; i < shards; i++) {
        shard *s = &rl->shards[i];
        memset(s, 0, sizeof *s);
        pthread_mutex_init(&s->mu, NULL);
        s->cap = (uint32_t)(base + (i < extra));
        uint32_t h = 1;
        while (h < s->cap) h <<= 1;
        s->mask = h - 1;
        s->nodes = nodes;
        s->heads = heads;
        nodes += s->cap;
        heads += h;
        for (uint32_t j = 0; j < s->cap; j++) s->nodes[j].next = j + 1 < s->cap ? j + 1 : NIL;
        s->free_head = 0;
        s->min_tat = UINT64_MAX;
    }
    return rl;
}

void ratelimit_free(ratelimit *rl)
{
    if (!rl) return;
    for (unsigned i = 0; i < rl->nshards; i++) pthread_mutex_destroy(&rl->shards[i].mu);
    free(rl->shards);
    free(rl->node_mem);
    free(rl->head_mem);
    free(rl);
}

/* ---- the decision ---- */

static inline uint64_t ceil_ms(uint64_t ns) { return ns / NS_PER_MS + (ns % NS_PER_MS != 0); }

int ratelimit_check_n(ratelimit *rl, const rl_policy *p, const char *key, size_t keylen,
                      uint64_t cost, uint64_t now_ms, rl_result *out)
{
    if (!rl || !p || !out || (!key && keylen) || p->limit == 0 || p->window_ms == 0 ||
        p->window_ms > TIME_MAX / NS_PER_MS)
        return -1;
    /* T rounded up: never admits more than limit per window; exact for the usual policies. */
    uint64_t win_ns = p->window_ms * NS_PER_MS;
    uint64_t T = win_ns / p->limit + (win_ns % p->limit != 0);
    uint64_t B = p->burst ? p->burst : p->limit;
    if (B > TIME_MAX / T) return -1;
    uint64_t BT = B * T;
    uint64_t now = now_ms > TIME_MAX / NS_PER_MS ? TIME_MAX : now_ms * NS_PER_MS;

    normkey nk;
    normalize(rl, p->id, key, keylen, &nk);
    shard *s = shard_of(rl, nk.hash);

    memset(out, 0, sizeof *out);
    out->limit = B;

    pthread_mutex_lock(&s->mu);
    if (cost) bump(&s->checks, 1);
    uint32_t *link = find_link(s, p->id, &nk);
    rl_node *n = link ? &s->nodes[*link] : NULL;
    uint64_t tat = n ? n->tat : now;
    if (tat > now + BT) {
        /* Debt beyond one full bucket of the CURRENT policy: only after a lowered
         * limit or a clock that went backwards. Cap it so the key is exhausted,
         * not locked out for longer than a window. This never grants a request. */
        tat = now + BT;
        if (n && cost) {
            n->tat = tat;
            if (tat < s->min_tat) s->min_tat = tat;
        }
    }
    uint64_t base = tat > now ? tat : now;
    uint64_t limit_at = now + BT; /* admitted iff the new TAT <= limit_at */

    if (cost == 0) { /* peek */
        out->remaining = (limit_at - base) / T;
        out->allowed = out->remaining > 0;
        out->reset_ms = ceil_ms(base - now);
        pthread_mutex_unlock(&s->mu);
        return 0;
    }
    if (cost > B) { /* can never conform */
        out->remaining = (limit_at - base) / T;
        out->retry_after_ms = UINT64_MAX;
        out->reset_ms = ceil_ms(base - now);
        bump(&s->rejections, 1);
        pthread_mutex_unlock(&s->mu);
        return 0;
    }
    uint64_t new_tat = base + cost * T;
    if (new_tat > limit_at) {
        out->remaining = (limit_at - base) / T;
        out->retry_after_ms = ceil_ms(new_tat - limit_at);
        out->reset_ms = ceil_ms(base - now);
        bump(&s->rejections, 1);
        pthread_mutex_unlock(&s->mu);
        return 0;
    }
    if (!n) {
        /* New key: needs a free node. Only when the shard may hold an expired key
         * (min_tat <= now) is a sweep worth its O(shard) cost; otherwise reject
         * at once, so a flood of new keys against a busy table stays cheap. */
        if (s->free_head == NIL && s->min_tat <= now) sweep_shard(s, now);
        if (s->free_head == NIL) {
            out->allowed = 0;
            out->table_full = 1;
            out->remaining = 0;
            out->retry_after_ms = s->min_tat > now ? ceil_ms(s->min_tat - now) : 1;
            out->reset_ms = 0;
            bump(&s->table_full, 1);
            bump(&s->rejections, 1);
            pthread_mutex_unlock(&s->mu);
            return 0;
        }
        uint32_t i = s->free_head;
        n = &s->nodes[i];
        s->free_head = n->next;
        n->policy = p->id;
        n->len = nk.len;
        memcpy(n->key, nk.bytes, nk.len == LEN_DIGEST ? 16 : nk.len);
        uint32_t *head = &s->heads[nk.hash & s->mask];
        n->next = *head;
        *head = i;
        bump(&s->used, 1);
    }
    n->tat = new_tat;
    if (new_tat < s->min_tat) s->min_tat = new_tat;
    pthread_mutex_unlock(&s->mu);

    out->allowed = 1;
    out->remaining = (limit_at - new_tat) / T;
    out->reset_ms = ceil_ms(new_tat - now);
    return 0;
}

int ratelimit_check(ratelimit *rl, const rl_policy *p, const char *key, size_t keylen,
                    uint64_t now_ms, rl_result *out)
{
    return ratelimit_check_n(rl, p, key, keylen, 1, now_ms, out);
}

int ratelimit_reset_key(ratelimit *rl, uint32_t policy_id, const char *key, size_t keylen)
{
    if (!rl || (!key && keylen)) return 0;
    normkey nk;
    normalize(rl, policy_id, key, keylen, &nk);
    shard *s = shard_of(rl, nk.hash);
    pthread_mutex_lock(&s->mu);
    uint32_t *link = find_link(s, policy_id, &nk);
    if (link) unlink_node(s, link);
    pthread_mutex_unlock(&s->mu);
    return link != NULL;
}

size_t ratelimit_sweep(ratelimit *rl, uint64_t now_ms)
{
    uint64_t now = now_ms > TIME_MAX / NS_PER_MS ? TIME_MAX : now_ms * NS_PER_MS;
    size_t total = 0;
    for (unsigned i = 0; i < rl->nshards; i++) {
        shard *s = &rl->shards[i];
        pthread_mutex_lock(&s->mu);
        if (s->min_tat <= now) total += sweep_shard(s, now);
        pthread_mutex_unlock(&s->mu);
    }
    return total;
}

void ratelimit_clear(ratelimit *rl)
{
    if (!rl) return;
    for (unsigned i = 0; i < rl->nshards; i++) {
        shard *s = &rl->shards[i];
        pthread_mutex_lock(&s->mu);
        if (atomic_load_explicit(&s->used, memory_order_relaxed)) {
            for (uint32_t b = 0; b <= s->mask; b++) {
                uint32_t *link = &s->heads[b];
                while (*link != NIL) unlink_node(s, link);
            }
        }
        s->min_tat = UINT64_MAX;
        atomic_store_explicit(&s->evictions, 0, memory_order_relaxed);
        atomic_store_explicit(&s->table_full, 0, memory_order_relaxed);
        atomic_store_explicit(&s->checks, 0, memory_order_relaxed);
        atomic_store_explicit(&s->rejections, 0, memory_order_relaxed);
        pthread_mutex_unlock(&s->mu);
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
