/* pgpool_int.h: internal to the pgpool module; only pgpool.c, pgpool_stats.c and pgpipe.c include it (callers use pgpool.h). */
#ifndef SLUICE_PGPOOL_INT_H
#define SLUICE_PGPOOL_INT_H

#include "pgpool.h"
#include "pgstmt.h"

/* The client-side statement timer fires this long after the server's own statement_timeout, so the
 * server normally answers first with a clean SQLSTATE 57014; the timer is the backstop for a server
 * (or PgBouncer, or network) that does not answer at all. */
#define STMT_GRACE 1.0
#define PIPE_MAX 8      /* one-shot statements in flight on one connection (pgpool_query) */
#define PIPE_DEFAULT 4  /* the default of pgpool_set_pipeline */

enum cstate {
    CS_CONNECTING, /* PQconnectPoll in progress */
    CS_SETUP,      /* connected, running the SET statements */
    CS_IDLE,       /* in the idle list, socket watched for close */
    CS_PING,       /* background health check of an idle connection */
    CS_RESET,      /* released mid-transaction: ROLLBACK in flight */
    CS_LENT,       /* handed out, no query in flight */
    CS_QUERY,      /* handed out, query in flight (pipeline mode, one statement: pgconn_query) */
    CS_BROKEN,     /* handed out, unusable: closed on release */
    CS_PIPE,       /* running pgpool_query statements in pipeline mode, shared by their callers */
};

struct pgconn {
    pgpool *pool;
    PGconn *pg;
    enum cstate state;
    int fd, events, flushing;
    ev_io io;
    ev_timer timer;                /* connect timeout, then statement / reset timeout */
    ev_tstamp expires, last_used, last_check;
    pgconn *next, *prev;           /* all connections */
    pgconn *inext, *iprev;         /* idle list, most recently used first */
    PGresult *res;                 /* result being collected (of the oldest statement in flight) */
    /* CS_QUERY, CS_PIPE: statements in flight, oldest first; the oldest started at head_start */
    struct pgslot {
        pgpool_query_cb cb;
        void *ud;
        const char *sql;           /* kept (the caller's) to send it again once after a stale plan */
        int nparams;
        const char *const *values;
        const int *lengths;
        uint64_t hash;             /* pgstmt_hash(sql) */
        pgstmt_use use;            /* how it was sent: named or not, Parse first, DEALLOCATE first */
        unsigned char phase;       /* which message the next result answers (pgpipe.c) */
        unsigned char retried, parse_failed;
    } ring[PIPE_MAX];
    int head, depth;
    ev_tstamp head_start;
    pgstmt *stmts;                 /* named prepared statements of this session; NULL = unnamed only */
};

struct pgpool {
    struct ev_loop *loop;
    pgpool_config cfg;
    int cap, closing;
    pgconn *all, *idle;
    int n_total, n_connecting, n_idle, n_lent;
    pgpool_waiter *wq_head, *wq_tail;
    int n_waiting;
    ev_timer wait_timer;           /* deadline of the oldest waiter: FIFO makes deadlines monotonic */
    ev_timer retry;                /* reconnect backoff */
    ev_timer sweep;                /* idle timeout, lifetime, health checks */
    ev_timer kick;                 /* zero-delay: hand out connections / fail waiters outside callers' stacks */
    double backoff;
    int retry_pending, down;
    ev_tstamp last_probe;          /* last connect started to check the server (not for a waiter) */
    unsigned seed;
    char last_err[256];
    uint64_t acquired, timeouts, errors, wait_us;
    uint64_t err_class[PGPOOL_ERR_CLASSES];
    int pipe_max;                  /* statements in flight per shared connection; 1 = no pipelining */
    uint64_t pipelined;            /* statements sent onto a connection already running some */
    pgstmt_counters stmt_cnt;      /* every connection's statement cache counts here */
    pgstmt_est est;                /* run times by SQL text: who may queue behind whom */
    int stmt_off;                  /* the server mixed sessions (PgBouncer without pgbouncer=true): no more named statements */
    phist wait_hist;               /* every acquire's wait, us, on pgpool_wait_bounds() */
};

/* The counters pgpool_stats reads (sizes, waiting, cap, down, totals) are read by other threads
 * (metrics, snapshots, `sluice status`): the pool's own thread writes them with relaxed atomic
 * stores (plain moves on x86-64) and may read them plainly; pgpool_stats loads them atomically. */
#define PSET(field, v) __atomic_store_n(&(field), (v), __ATOMIC_RELAXED)
#define PADD(field, d) __atomic_store_n(&(field), (field) + (d), __ATOMIC_RELAXED)
#define PGET(field) __atomic_load_n(&(field), __ATOMIC_RELAXED)

/* ---- pgpool.c: connection bookkeeping shared with pgpipe.c ---- */

/* Move c to state s; every state change goes through here so the counters cannot drift. */
void pgpool_set_state(pgconn *c, enum cstate s);
/* Watch c's socket for events (0: stop watching). */
void pgpool_conn_watch(pgconn *c, int events);
/* Ask the server to cancel c's statement, from a detached thread (PQcancel blocks). */
void pgpool_cancel_async(PGconn *pg);
/* Close and free c without calling any user callback; c is invalid afterwards. */
void pgpool_conn_close(pgconn *c);
/* Put a healthy connection back on the idle list and serve waiters. */
void pgpool_conn_to_idle(pgconn *c);
/* A connection was lost: open one now (unless one is opening) to learn whether the server is up. */
void pgpool_probe_soon(pgpool *p);
/* Serve or fail the waiters from the loop, outside the caller's stack. */
void pgpool_kick(pgpool *p);
/* Lend the most recently used live idle connection (retiring expired ones), or NULL. */
pgconn *pgpool_take_idle(pgpool *p);
/* Queue w (FIFO) with its callback and arm the pool timeout. */
void pgpool_enqueue(pgpool *p, pgpool_waiter *w, pgpool_acquire_cb cb, void *ud);
/* Copy msg's first line into dst (n bytes), "unknown error" when empty. */
void pgpool_first_line(char *dst, size_t n, const char *msg);
/* 1 when r is a successful result (tuples, command, empty query). */
int pgpool_result_ok(const PGresult *r);

/* ---- pgpool_stats.c: counters ---- */

/* Count one error under the class of sqlstate (NULL or unknown: "other"). */
void pgpool_count_error(pgpool *p, const char *sqlstate);
/* Count a failed statement under its SQLSTATE class (pool-side failures: 57 timeout, else 08). */
void pgpool_count_failure(pgpool *p, const PGresult *res, const char *err);
/* Record how long w waited (it just left the queue). */
void pgpool_waited(pgpool *p, const pgpool_waiter *w, ev_tstamp now);
/* Record an acquire served at once (no wait). */
void pgpool_waited_none(pgpool *p);

/* ---- pgpipe.c: statements in pipeline mode (pgconn_query's one, pgpool_query's shared ones) ---- */

/* The socket of a CS_QUERY or CS_PIPE connection is ready. */
void pgpipe_io(pgconn *c, int revents);
/* The statement timer of a CS_QUERY or CS_PIPE connection fired: fail its statements. */
void pgpipe_timeout(pgconn *c);
/* Fail every statement in flight on c with err (the oldest gets head_res); cancel: on the server
 * too. A CS_PIPE connection is closed first, a CS_QUERY one stays lent, CS_BROKEN. */
void pgpipe_fail(pgconn *c, PGresult *head_res, const char *err, int cancel);
/* If w is a queued pgpool_query job and the pool is at its cap, send it on a shared connection.
 * 1 when w left the queue (served, or requeued after a failed send), 0 to leave it waiting. */
int pgpipe_share(pgpool *p, pgpool_waiter *w);

#endif
