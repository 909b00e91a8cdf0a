/* pgstmt: one PostgreSQL connection's cache of named prepared statements (LRU by SQL text), and a
 * pool's estimate of how long statements run. Bookkeeping only (no libpq, no I/O): pgpipe.c sends
 * the Parse / Execute / DEALLOCATE messages this module decides on. A connection owns its pgstmt;
 * the pool owns the pgstmt_counters and the pgstmt_est every cache of that pool shares. */
#ifndef SLUICE_PGSTMT_H
#define SLUICE_PGSTMT_H

#include <stddef.h>
#include <stdint.h>

/* Totals over a pool's connections. Written by the pool's thread with relaxed atomic stores,
 * readable from other threads with relaxed loads (metrics). */
typedef struct pgstmt_counters {
    uint64_t hits;            /* statements executed from the cache (no Parse sent) */
    uint64_t misses;          /* statements that had to be parsed (prepared, or run unnamed) */
    uint64_t evictions;       /* least recently used statements closed to make room */
    uint64_t invalidated;     /* cached statements found stale (result type changed) or gone on the server */
} pgstmt_counters;

typedef struct pgstmt pgstmt; /* opaque: one per connection */

/* How to send one statement, as pgstmt_plan decided it. */
typedef struct pgstmt_use {
    uint32_t id;              /* execute the statement named pgstmt_name(s, id); 0 = run it unnamed */
    int ref;                  /* the cache slot, for pgstmt_parsed / pgstmt_invalid */
    int parse;                /* 1: send a Parse for id first */
    uint32_t close_id;        /* non-zero: DEALLOCATE pgstmt_name(s, close_id) first (an eviction) */
} pgstmt_use;

/* 64-bit FNV-1a of the SQL text: the cache key and the pgstmt_est key. */
uint64_t pgstmt_hash(const char *sql);

/* A cache of at most cap statements (cap >= 1) counting into cnt (may be NULL). tag goes into every
 * name, so two clients' statements never share a name even where a proxy (PgBouncer in transaction
 * mode) mixes their sessions: a name the server does not know fails, it never runs another
 * client's statement. NULL on out of memory or cap < 1. */
pgstmt *pgstmt_new(int cap, pgstmt_counters *cnt, uint32_t tag);
/* Frees the cache (the server forgets the statements with its connection). NULL is fine. */
void pgstmt_free(pgstmt *s);

/* Decide how to send sql (hash = pgstmt_hash(sql)). may_close: the connection is outside a
 * transaction block, so a DEALLOCATE may go first (in its own Sync, where its failure harms
 * nothing); inside one, a full cache runs the statement unnamed instead of evicting. admit = 0:
 * a statement not cached yet runs unnamed instead of taking a slot (the caller passes 0 for SQL
 * it has never seen run, so one-off texts never evict the ones that repeat). A statement whose
 * Parse is still in flight runs unnamed (that Parse may fail: its error, not "does not exist"). */
void pgstmt_plan(pgstmt *s, const char *sql, uint64_t hash, int may_close, int admit, pgstmt_use *out);
/* The Parse sent for u answered: ok keeps the entry, a failure forgets it (the next use parses again). */
void pgstmt_parsed(pgstmt *s, const pgstmt_use *u, int ok);
/* Executing u's statement failed because the server's copy is unusable: gone = 0 for a plan whose
 * result type changed (SQLSTATE 0A000; it still exists: closed the next time it is replaced),
 * 1 for a statement the server does not know (26000, e.g. after DEALLOCATE ALL). The next use
 * parses it again. A u whose slot was reused meanwhile is ignored. */
void pgstmt_invalid(pgstmt *s, const pgstmt_use *u, int gone);
/* 1 when u's statement is cached and its Parse succeeded (the server must know it). */
int pgstmt_is_ready(const pgstmt *s, const pgstmt_use *u);
/* Statements cached now. */
int pgstmt_count(const pgstmt *s);

/* The name of statement id, "sluice_<tag in hex>_<id>", into buf (at least PGSTMT_NAME_MAX bytes). */
#define PGSTMT_NAME_MAX 32
const char *pgstmt_name(const pgstmt *s, uint32_t id, char *buf, size_t n);

/* Run times by SQL hash, direct-mapped (a collision forgets the older statement, which then counts
 * as unknown): the smoothed mean and mean deviation, as TCP estimates round trips (RFC 6298). */
#define PGSTMT_EST_SLOTS 512
typedef struct pgstmt_est_slot { uint64_t hash; float avg, dev; } pgstmt_est_slot;
typedef struct pgstmt_est { pgstmt_est_slot e[PGSTMT_EST_SLOTS]; } pgstmt_est;
/* Record that the statement with this hash ran secs. */
void pgstmt_est_add(pgstmt_est *t, uint64_t hash, double secs);
/* A generous estimate of its run time (mean + 4 deviations), or -1 when it was never seen. */
double pgstmt_est_get(const pgstmt_est *t, uint64_t hash);

#endif
