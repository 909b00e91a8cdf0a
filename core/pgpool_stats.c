/* pgpool_stats.c: the pool's counters (errors by SQLSTATE class, acquire waits) and their read side for metrics. */
#include "pgpool_int.h"

#include <pthread.h>
#include <string.h>

static const char *const err_classes[PGPOOL_ERR_CLASSES] = {
    "08", /* connection exception (also: connection lost, unreachable) */
    "22", /* data exception */
    "23", /* integrity constraint violation */
    "25", /* invalid transaction state */
    "28", /* invalid authorization */
    "3D", /* invalid catalog name (no such database) */
    "40", /* transaction rollback: serialization failure, deadlock */
    "42", /* syntax error or access rule violation */
    "53", /* insufficient resources (too many connections, out of memory) */
    "57", /* operator intervention: statement timeout, admin shutdown */
    "XX", /* internal error */
    "other",
};

const char *pgpool_error_class(int i)
{
    return i >= 0 && i < PGPOOL_ERR_CLASSES ? err_classes[i] : "other";
}

/* Counts one error under the class of sqlstate (NULL or unknown: "other"). */
void pgpool_count_error(pgpool *p, const char *sqlstate)
{
    int i = PGPOOL_ERR_CLASSES - 1;
    if (sqlstate && sqlstate[0] && sqlstate[1])
        for (int k = 0; k < PGPOOL_ERR_CLASSES - 1; k++)
            if (sqlstate[0] == err_classes[k][0] && sqlstate[1] == err_classes[k][1]) { i = k; break; }
    PADD(p->errors, 1);
    PADD(p->err_class[i], 1);
}

/* A waiter leaves the queue (served, timed out or failed): record how long it waited. */
void pgpool_waited(pgpool *p, const pgpool_waiter *w, ev_tstamp now)
{
    double us = (now - w->since) * 1e6;
    uint64_t v = us > 0 ? (uint64_t)us : 0;
    PADD(p->wait_us, v);
    phist_record(&p->wait_hist, pgpool_wait_bounds(), v);
}

void pgpool_waited_none(pgpool *p) { phist_record(&p->wait_hist, pgpool_wait_bounds(), 0); }

/* Conventional bounds, from "served at once" to past the largest sensible pool_timeout. */
static const double wait_le[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30};
static phist_bounds wait_bounds;
static pthread_once_t wait_once = PTHREAD_ONCE_INIT;
static void wait_init(void) { phist_bounds_init(&wait_bounds, wait_le, (int)(sizeof wait_le / sizeof *wait_le)); }

const phist_bounds *pgpool_wait_bounds(void)
{
    pthread_once(&wait_once, wait_init);
    return &wait_bounds;
}

/* Counts a failed statement under its SQLSTATE class (pool-side failures: 57 timeout, else 08). */
void pgpool_count_failure(pgpool *p, const PGresult *res, const char *err)
{
    const char *st = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (!st) st = strncmp(err, PGPOOL_ERR_STMT_TIMEOUT, sizeof PGPOOL_ERR_STMT_TIMEOUT - 1) == 0 ? "57" : "08";
    pgpool_count_error(p, st);
}

int pgpool_healthy(const pgpool *p) { return !PGET(p->down); }

void pgpool_stats(const pgpool *p, pgpool_stats_t *out)
{
    out->size = PGET(p->n_total);
    out->connecting = PGET(p->n_connecting);
    out->in_use = PGET(p->n_lent);
    out->idle = out->size - out->connecting - out->in_use;
    if (out->idle < 0) out->idle = 0;              /* three loads: another thread may see them mid-change */
    out->waiting = PGET(p->n_waiting);
    out->cap = PGET(p->cap);
    out->down = PGET(p->down);
    out->acquired = PGET(p->acquired);
    out->timeouts = PGET(p->timeouts);
    out->errors = PGET(p->errors);
    out->wait_us = PGET(p->wait_us);
    for (int i = 0; i < PGPOOL_ERR_CLASSES; i++) out->errors_by_class[i] = PGET(p->err_class[i]);
    out->stmt_hits = PGET(p->stmt_cnt.hits);
    out->stmt_misses = PGET(p->stmt_cnt.misses);
    out->stmt_evictions = PGET(p->stmt_cnt.evictions);
    out->stmt_invalidated = PGET(p->stmt_cnt.invalidated);
    out->pipelined = PGET(p->pipelined);
}

const phist *pgpool_wait_hist(const pgpool *p) { return &p->wait_hist; }
