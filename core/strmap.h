/* strmap: a hash table from byte-string keys to fixed-size entries it allocates (one block per entry, key copied in). */
#ifndef SLUICE_STRMAP_H
#define SLUICE_STRMAP_H

#include <stddef.h>
#include <stdint.h>

/*
 * Design, and why:
 *  - The map owns its entries. strmap_put allocates ONE block holding a private
 *    link header, the caller's value (vsize bytes, zeroed, aligned for any type)
 *    and a NUL-terminated copy of the key. Callers keep plain pointers to values:
 *    a value never moves while it is in the map (growth relinks, never copies).
 *  - Separate chaining, power-of-two buckets doubled when the load reaches 1;
 *    a failed grow is harmless (chains just get longer). Buckets never shrink.
 *  - Keys are hashed with seeded FNV-1a, so keys chosen by clients (channel
 *    names, user ids) cannot be aimed at one bucket cheaply. Maps created with
 *    the same seed hash alike: a hash computed once (strmap_hash, e.g. outside
 *    a lock) can be used with the *_hashed calls of every map sharing the seed.
 *  - Not thread-safe: the owner serialises access (lock or single thread).
 * Keys are any bytes (NUL allowed) up to UINT32_MAX bytes.
 */

typedef struct strmap strmap;

/* Called by strmap_iterate for each value; return nonzero to stop the walk.
 * It may strmap_del the value it is given, but must not add or delete others. */
typedef int (*strmap_iter_fn)(void *val, void *ud);

/* An empty map of entries with vsize-byte values; seed keys the hash. NULL on OOM. */
strmap *strmap_new(uint64_t seed, size_t vsize);
/* Frees every entry and the map (NULL is fine). Release what values point to
 * first (strmap_iterate); value pointers become invalid. */
void strmap_free(strmap *m);

/* The seeded hash of key, as the map computes it (equal for maps with equal seeds). */
uint64_t strmap_hash(const strmap *m, const char *key, size_t len);
/* The value stored under key, or NULL. */
void *strmap_get(const strmap *m, const char *key, size_t len);
/* strmap_get with hash = strmap_hash(key) precomputed (by any map with the same seed). */
void *strmap_get_hashed(const strmap *m, uint64_t hash, const char *key, size_t len);
/* The value stored under key; if absent, inserts a zeroed value with a copy of
 * key and sets *created (may be NULL) to 1. NULL on OOM or a key over UINT32_MAX bytes. */
void *strmap_put(strmap *m, const char *key, size_t len, int *created);
/* strmap_put with hash = strmap_hash(key) precomputed (by any map with the same seed). */
void *strmap_put_hashed(strmap *m, uint64_t hash, const char *key, size_t len, int *created);
/* Removes val (a value of m) and frees its entry; val becomes invalid. */
void strmap_del(strmap *m, void *val);

/* The map's copy of val's key (NUL-terminated; *len, if not NULL, gets its length). */
const char *strmap_key(const void *val, size_t *len);
/* Number of entries. */
size_t strmap_count(const strmap *m);
/* Calls fn for each value, in no particular order, until fn returns nonzero.
 * See strmap_iter_fn for what fn may change. */
void strmap_iterate(strmap *m, strmap_iter_fn fn, void *ud);

#endif
