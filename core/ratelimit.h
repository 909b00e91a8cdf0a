/* ratelimit.h: the shared GCRA rate-limit table (one per process, used by every worker thread). */
#ifndef SLUICE_RATELIMIT_H
#define SLUICE_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

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

#define RL_KEY_INLINE 47 /* fits "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128" (43) */

typedef struct ratelimit ratelimit;

/* A policy is plain data; the caller owns it. id separates policies sharing a key. */
typedef struct rl_policy {
    uint32_t id;
    uint64_t limit;     /* requests per window, >= 1 */
    uint64_t window_ms; /* >= 1 */
    uint64_t burst;     /* bucket capacity; 0 = limit */
} rl_policy;

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

#endif
