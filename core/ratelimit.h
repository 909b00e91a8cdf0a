/* ratelimit.h: the shared GCRA rate-limit table (one per process, used by every worker thread). */
#ifndef SLUICE_RATELIMIT_H
#define SLUICE_RATELIMIT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/*
 * Semantics (GCRA, "generic cell rate algorithm"); docs/rate-limiting.md has the long form.
 *
 *   T   = window / limit          emission interval, kept in integer nanoseconds
 *                                 (rounded UP, so exact whenever window_ms*1e6 % limit == 0,
 *                                 e.g. 1000/900 s -> T = 900 ms, 300/60 s -> T = 200 ms)
 *   B   = burst (0 means limit)   capacity: a fresh key may make B requests at once
 *   TAT = theoretical arrival time, the only state per (policy id, key)
 *
 * A request of cost c at time now is admitted iff max(TAT, now) + c*T <= now + B*T;
 * if admitted TAT becomes max(TAT, now) + c*T, otherwise nothing changes.
 * Consequence: in ANY interval of length L a key is admitted at most B + floor(L/T)
 * requests, and a key that is always asking gets exactly that. There is no window
 * boundary, so no "double burst" as with fixed windows (which allow 2*limit around
 * a boundary).
 *
 * Time is supplied by the caller (monotonic ms or a test's virtual clock); the table
 * never reads a clock. If now goes backwards nothing is refilled; a key never owes
 * more than B*T of the current policy (the excess is dropped on its next check), so
 * a clock reset or a lowered limit cannot lock a key out for longer than one window.
 *
 * Memory is bounded by max_keys, split evenly over the shards. A key whose TAT <= now
 * has a full bucket, so forgetting it changes nothing: such keys are evicted when a
 * shard is full. If none is, a NEW key is rejected (fail closed: allowed = 0,
 * table_full = 1) rather than refilling a busy key early.
 *
 * Keys up to RL_KEY_INLINE bytes are stored and compared verbatim; longer keys are
 * replaced by a 128-bit keyed SipHash digest (per-table random key), so a collision
 * needs ~2^64 distinct long keys and cannot be engineered by clients.
 */

#define RL_KEY_INLINE 43 /* fits "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128" */
#define RL_LEN_DIGEST 0xFF /* rl_key.len of a long key: bytes holds its 16-byte digest */

typedef struct ratelimit ratelimit;

/* A key in the table's stored form (verbatim, or its digest) with its hash: made once by
 * ratelimit_key and then checked any number of times without hashing again, e.g. a
 * connection's peer address for the life of the connection. Plain data the caller owns;
 * valid only with the table and the policy id it was made for. hint remembers where the
 * key was last found; it is verified under the shard's lock before use, never trusted. */
typedef struct rl_key {
    uint64_t hash;
    uint32_t hint;                  /* node index + 1, 0 = unknown */
    uint32_t policy;                /* policy, len, bytes: the identity, laid out as in the table */
    uint8_t len;
    uint8_t bytes[RL_KEY_INLINE];   /* zero-padded */
} rl_key;

/* A policy is plain data; the caller owns it. id separates policies sharing a key. */
typedef struct rl_policy {
    uint32_t id;
    uint64_t limit;     /* requests per window, >= 1 */
    uint64_t window_ms; /* >= 1 */
    uint64_t burst;     /* bucket capacity; 0 = limit */
} rl_policy;

/* A policy's GCRA constants, computed once by ratelimit_gcra (so a check divides only once,
 * for `remaining`). */
typedef struct rl_gcra {
    uint32_t id;
    uint64_t T;  /* emission interval, ns (rounded up) */
    uint64_t B;  /* burst */
    uint64_t BT; /* B * T, ns */
} rl_gcra;

/* A lease: several admissions of one key taken from the table in ONE decision at caller time
 * now_ms (a GCRA check of cost n), then spent one request at a time by its holder without the
 * table, while the holder's clock still reads now_ms. The table treats requests of the same
 * millisecond as simultaneous, so a request admitted from a lease gets exactly the decision
 * and the fields (remaining, reset) it would have got from the table at now_ms. Unspent
 * admissions go back with ratelimit_lease_end: exactly (as if never taken) when nothing else
 * wrote the key meanwhile; otherwise they stay charged. So a lease never admits more than the
 * table would; at worst, when another thread used the same key during the lease, fewer.
 * ratelimit_clear and ratelimit_reset_key end every lease. Plain data the holder owns. */
typedef struct rl_lease {
    rl_key key;
    uint64_t now_ms, now_ns;
    uint64_t T, B;
    uint64_t next_tat;   /* TAT once the next admission is spent (ns) */
    uint64_t remaining;  /* `remaining` once the next admission is spent */
    uint32_t left;       /* admissions still to spend; 0 = no lease */
    uint32_t ver;        /* the key's version after the lease (unchanged = nobody wrote it) */
    uint32_t epoch;      /* the table's epoch when taken ... */
    const _Atomic uint32_t *epoch_now; /* ... and now */
} rl_lease;

typedef struct rl_result {
    int allowed;
    int table_full;          /* rejected only because the table had no room for a new key */
    uint64_t limit;          /* effective burst B, for RateLimit-Policy/headers */
    uint64_t remaining;      /* requests (cost 1) that would be admitted right now, after this one */
    uint64_t retry_after_ms; /* 0 if allowed; else wait this long and the same request is admitted
                                (UINT64_MAX if cost > burst: never) */
    uint64_t reset_ms;       /* time until the bucket is full again (all B available) */
} rl_result;

typedef struct rl_stats {
    uint64_t keys;         /* keys in use */
    uint64_t capacity;     /* max_keys */
    uint64_t evictions;    /* expired keys forgotten to make room or by ratelimit_sweep */
    uint64_t table_full;   /* new keys rejected because their shard was full of busy keys */
    uint64_t checks;       /* ratelimit_check calls with a valid policy */
    uint64_t rejections;   /* of which rejected (including table_full) */
} rl_stats;

/* Create a table holding at most max_keys keys in `shards` lock stripes (0 = 64).
 * All memory is allocated here; NULL on allocation failure or max_keys == 0. */
ratelimit *ratelimit_new(size_t max_keys, unsigned shards);

/* Free the table. No thread may be using it. NULL is ignored. */
void ratelimit_free(ratelimit *rl);

/* Admit or reject one request for (p->id, key) at caller time now_ms; fills *out.
 * Thread-safe, O(1), no allocation. Returns 0, or -1 for an invalid policy (out untouched). */
int ratelimit_check(ratelimit *rl, const rl_policy *p, const char *key, size_t keylen,
                    uint64_t now_ms, rl_result *out);

/* As ratelimit_check with a cost of `cost` requests. cost 0 only reports the state
 * (remaining, reset) without consuming or creating the key. */
int ratelimit_check_n(ratelimit *rl, const rl_policy *p, const char *key, size_t keylen,
                      uint64_t cost, uint64_t now_ms, rl_result *out);

/* Fills *out with the constants of p. Returns 0, or -1 for an invalid policy. */
int ratelimit_gcra(const rl_policy *p, rl_gcra *out);

/* Fills *out with the stored form and hash of (policy_id, key) for ratelimit_check_key. */
void ratelimit_key(const ratelimit *rl, uint32_t policy_id, const char *key, size_t keylen,
                   rl_key *out);

/* As ratelimit_check_n for a prepared policy and key (no hashing; with a valid hint no chain
 * walk either); updates k->hint. Returns 0, or -1 if k was made for another policy id. */
int ratelimit_check_key(ratelimit *rl, const rl_gcra *g, rl_key *k, uint64_t cost,
                        uint64_t now_ms, rl_result *out);

/* As ratelimit_check_key with cost 1, but when the request is admitted up to want - 1 more
 * admissions for k at now_ms are taken with it and left in *ls (fewer when the bucket holds
 * less: at most half of what conforms, so a lease never empties a bucket others share; none
 * for a key new to the table). Returns 0, or -1 as ratelimit_check_key. */
int ratelimit_lease(ratelimit *rl, const rl_gcra *g, rl_key *k, uint32_t want, uint64_t now_ms,
                    rl_result *out, rl_lease *ls);

/* Spends one admission of ls for a request of key k under g at now_ms: returns 1 with *out as
 * the table would have filled it, or 0 (nothing left, another key, policy or millisecond, or the
 * table was cleared since): ask the table. No lock, no shared memory written; inline because a
 * pipelined batch runs it for nearly every request. */
static inline int ratelimit_lease_take(const rl_gcra *g, const rl_key *k, uint64_t now_ms, rl_lease *ls,
                                       rl_result *out);

/* Returns the unspent admissions of ls to the table and empties it. Returns how many stayed
 * charged because the key was written by someone else meanwhile (0 when all went back). */
uint32_t ratelimit_lease_end(ratelimit *rl, rl_lease *ls);

/* Forget (policy_id, key): its bucket is full again. Returns 1 if it existed. For admin/tests. */
int ratelimit_reset_key(ratelimit *rl, uint32_t policy_id, const char *key, size_t keylen);

/* Forget every key and zero the counters, as a new table would be (the hash key stays).
 * Costs O(bucket heads) for each shard that holds keys, nothing for an empty one: the
 * spec runner calls it after every test. Locks one shard at a time. */
void ratelimit_clear(ratelimit *rl);

/* Evict every key whose bucket is full at now_ms (optional housekeeping from a timer,
 * keeps `keys` meaningful). Locks one shard at a time. Returns the number evicted. */
size_t ratelimit_sweep(ratelimit *rl, uint64_t now_ms);

/* Snapshot of the counters (summed over shards; each field is individually exact). */
void ratelimit_stats(const ratelimit *rl, rl_stats *out);

/* ---- inline parts (internal) ---- */

/* Same key (hash and identity: policy, len, zero-padded bytes; the first word holds policy and
 * len, so only the words up to b's last byte count). */
static inline int rl_key_same(const rl_key *a, const rl_key *b)
{
    const unsigned char *x = (const unsigned char *)&a->policy, *y = (const unsigned char *)&b->policy;
    size_t end = 4 + 1 + (b->len == RL_LEN_DIGEST ? 16 : b->len);
    uint64_t d = a->hash ^ b->hash;
    for (size_t i = 0; i < end; i += 8) {
        uint64_t u, v;
        memcpy(&u, x + i, 8);
        memcpy(&v, y + i, 8);
        d |= u ^ v;
    }
    return d == 0;
}

static inline int ratelimit_lease_take(const rl_gcra *g, const rl_key *k, uint64_t now_ms, rl_lease *ls,
                                       rl_result *out)
{
    if (!ls->left || ls->now_ms != now_ms || ls->T != g->T || ls->B != g->B || !rl_key_same(&ls->key, k) ||
        atomic_load_explicit(ls->epoch_now, memory_order_relaxed) != ls->epoch)
        return 0;
    uint64_t owed = ls->next_tat - ls->now_ns;
    ls->left--;
    ls->next_tat += ls->T;
    out->allowed = 1;
    out->table_full = 0;
    out->limit = ls->B;
    out->remaining = ls->remaining--;
    out->retry_after_ms = 0;
    out->reset_ms = owed / 1000000u + (owed % 1000000u != 0);
    return 1;
}

#endif
