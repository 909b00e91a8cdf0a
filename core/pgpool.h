/* pgpool: a per-worker PostgreSQL connection pool on libpq's non-blocking API, driven by libev. */
#ifndef SLUICE_PGPOOL_H
#define SLUICE_PGPOOL_H

#include <stddef.h>
#include <stdint.h>
#include <ev.h>
#include <libpq-fe.h>

#include "phist.h"
#include "pgurl.h" /* pgpool_config and the URL parser */

/* Error messages handed to callbacks start with one of these prefixes (map them to 503 etc.). */
#define PGPOOL_ERR_TIMEOUT "pool timeout"           /* no connection free within pool_timeout */
#define PGPOOL_ERR_UNREACHABLE "database unreachable" /* connect failed and no connection is open */
#define PGPOOL_ERR_LOST "connection lost"           /* the server went away during a query */
#define PGPOOL_ERR_STMT_TIMEOUT "statement timeout" /* the server did not answer in time */
#define PGPOOL_ERR_CLOSED "pool closed"             /* pgpool_free ran while waiting */

typedef struct pgpool pgpool; /* opaque: one per worker thread, not thread-safe */
typedef struct pgconn pgconn; /* opaque: a connection, owned by the pool, lent between acquire and release */

/* Called once per acquire: with a connection (err NULL) or with err set (c NULL). */
typedef void (*pgpool_acquire_cb)(void *ud, pgconn *c, const char *err);
/* Called once per query. res is owned by the callee (PQclear it); on an SQL error res is the error
 * result and err its primary message; on connection loss or client timeout res is NULL and err set.
 * err is valid during the call only. */
typedef void (*pgpool_query_cb)(void *ud, PGresult *res, const char *err);

/* A queued acquire. The caller embeds it (no malloc); the fields are private to pgpool. */
typedef struct pgpool_waiter {
    struct pgpool_waiter *next, *prev;
    pgpool *pool;             /* non-NULL while queued */
    ev_tstamp since;
    pgpool_acquire_cb cb;
    void *ud;
} pgpool_waiter;

/* Errors are counted by SQLSTATE class (first two characters) over this fixed label set, so a
 * misbehaving app cannot grow the metrics without bound; pool-side failures map to 08 (connection
 * lost, unreachable) or 57 (statement timeout), anything unlisted to "other". */
#define PGPOOL_ERR_CLASSES 12

/* A one-shot statement for pgpool_query. The caller embeds it (no malloc) and keeps sql and the
 * parameters alive until cb runs; the fields are private to pgpool. */
typedef struct pgpool_job {
    pgpool_waiter w;          /* queued like an acquire while no connection can take it */
    const char *sql;
    int nparams;
    const char *const *values;
    const int *lengths;
    uint64_t hash;
    pgpool_query_cb cb;
    void *ud;
} pgpool_job;

typedef struct pgpool_stats_t {
    int size;                 /* connections open or opening (never above the cap) */
    int idle, in_use, connecting, waiting;
    int cap;                  /* this worker's share of connection_limit */
    int down;                 /* 1 while the database is unreachable */
    uint64_t acquired;        /* connections handed out */
    uint64_t timeouts;        /* acquires failed with pool timeout */
    uint64_t errors;          /* failed connects, lost connections, query errors, statement timeouts */
    uint64_t wait_us;         /* total time callers waited for a connection, microseconds */
    uint64_t errors_by_class[PGPOOL_ERR_CLASSES]; /* same errors, by pgpool_error_class(i) */
    uint64_t stmt_hits, stmt_misses, stmt_evictions, stmt_invalidated; /* the statement caches (pgstmt.h) */
    uint64_t pipelined;       /* statements sent onto a connection already running others */
} pgpool_stats_t;

/* The label of errors_by_class[i]: "08", "22", "23", ..., "XX", "other" (a constant string). */
const char *pgpool_error_class(int i);

/* Same as pgurl_parse (see pgurl.h): fill a pool config from DATABASE_URL. 0, or -1 with err set. */
int pgpool_parse_url(const char *url, pgpool_config *out, char *err, size_t errlen);

/* This worker's share of the global limit: limit/workers plus one for the first limit%workers.
 * It is 0 when limit < workers; such a worker's acquires fail (the limit is a hard cap). */
int pgpool_worker_share(int limit, int workers, int index);

/* A pool of at most max_conns connections on loop. Connects lazily. NULL on out-of-memory. */
pgpool *pgpool_new(struct ev_loop *loop, const pgpool_config *cfg, int max_conns);

/* Fail every waiter and every in-flight query with PGPOOL_ERR_CLOSED, close all connections and
 * free the pool. Lent pgconn pointers become invalid. Do not call it from a pool callback. */
void pgpool_free(pgpool *p);

/* Change the cap (hot reload). Surplus idle connections close now, surplus lent ones on release. */
void pgpool_set_cap(pgpool *p, int max_conns);

/* Ask for a connection. Returns one at once when one is idle (cb is not called). Otherwise returns
 * NULL and queues w (FIFO): cb runs later, exactly once, unless pgpool_cancel(w) runs first.
 * cb is never called from inside pgpool_acquire. */
pgconn *pgpool_acquire(pgpool *p, pgpool_waiter *w, pgpool_acquire_cb cb, void *ud);

/* Withdraw a queued acquire (the request went away). Idempotent; a no-op once cb has run. */
void pgpool_cancel(pgpool_waiter *w);

/* Give a connection back. A connection mid-transaction is rolled back before reuse, one with a
 * query in flight is cancelled and closed (its query callback is not called), a broken one closed. */
void pgpool_release(pgpool *p, pgconn *c);

/* Send one statement with $1..$n text parameters (values[i] NULL = SQL NULL; lengths may be NULL).
 * Returns 0 and calls cb exactly once later, or -1 (cb not called) when c is busy or broken.
 * sql and the values must stay valid until cb runs: a cached statement whose plan went stale
 * (DDL changed its result type) is prepared and sent again, once, outside a transaction.
 * With a statement cache (stmt_cache_size > 0) it runs as a named prepared statement, parsed
 * once per connection; a failed Parse gives cb the same error an unnamed statement would. */
int pgconn_query(pgconn *c, const char *sql, int nparams, const char *const *values,
                 const int *lengths, pgpool_query_cb cb, void *ud);

/* Run one statement outside any transaction on whichever connection can take it: an idle one, or,
 * when the pool is at its cap and pgpool_set_pipeline allows it, one already running such
 * statements (libpq pipeline mode, each with its own Sync so an error affects only its own). cb runs exactly
 * once, never from inside this call; a job still waiting for a connection can be withdrawn with
 * pgpool_cancel(&job->w). Values as for pgconn_query. */
void pgpool_query(pgpool *p, pgpool_job *job, const char *sql, int nparams, const char *const *values,
                  const int *lengths, pgpool_query_cb cb, void *ud);

/* The caller of an in-flight pgpool_query lost interest (its callback still runs, once): when
 * the job is the only statement on its connection, it is cancelled on the server (PQcancel) and
 * the connection closed after it, so a long statement does not hold a connection to its end. */
void pgpool_query_abandon(pgpool *p, pgpool_job *job);

/* Statements pgpool_query may keep in flight on one connection, 1..8 (default 4; 1: no sharing).
 * A statement joins a busy connection only when the pool is at its cap with nothing idle, and
 * only when what runs there is expected (by the recent run times of the same SQL texts, with a
 * wide margin) to finish well within its remaining pool_timeout; never behind a statement whose
 * SQL has not run yet, or one running much longer than it used to. */
void pgpool_set_pipeline(pgpool *p, int depth);

/* The libpq connection, for read-only inspection (PQtransactionStatus, PQbackendPID, escaping). */
PGconn *pgconn_pg(pgconn *c);

/* 1 unless the last connection attempt failed while no connection was open. */
int pgpool_healthy(const pgpool *p);

/* Fill out with the current counters (cheap: reads fields, no locks). */
void pgpool_stats(const pgpool *p, pgpool_stats_t *out);

/* Time each acquire waited for a connection (0 when one was idle; timeouts and fast failures
 * included), in us, on pgpool_wait_bounds(). Written by the pool's thread; other threads may read
 * it (see phist.h). */
const phist *pgpool_wait_hist(const pgpool *p);
/* The wait histogram's bounds: 0.0005 s .. 30 s, conventional values. */
const phist_bounds *pgpool_wait_bounds(void);

#endif
