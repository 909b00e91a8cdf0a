/* pgpipe.c: pgpool_query's one-shot statements, sharing a busy connection in libpq pipeline mode (opt-in). */
#include "pgpool_int.h"

#include <stdio.h>

/* Queue behind a statement only while it is younger than this: a slow statement holds up only
 * the few sent right after it, not everything that arrives while it runs. */
#define PIPE_FRESH 0.05

static void pipe_arm(pgconn *c)
{
    pgpool *p = c->pool;
    ev_timer_stop(p->loop, &c->timer);
    if (!c->depth || p->cfg.statement_timeout <= 0) return;
    double left = c->ring[c->head].sent + p->cfg.statement_timeout + STMT_GRACE - ev_now(p->loop);
    ev_timer_set(&c->timer, left > 0 ? left : 0., 0.);
    ev_timer_start(p->loop, &c->timer);
}

/* The connection is unusable: close it first (so no callback can pick it), then fail every
 * statement in flight with err; the oldest gets head_res (e.g. FATAL 57P01) when there is one. */
void pgpipe_fail(pgconn *c, PGresult *head_res, const char *err, int cancel)
{
    pgpool *p = c->pool;
    struct { pgpool_query_cb cb; void *ud; } todo[PIPE_MAX];
    int n = c->depth;
    for (int i = 0; i < n; i++) {
        todo[i].cb = c->ring[(c->head + i) % PIPE_MAX].cb;
        todo[i].ud = c->ring[(c->head + i) % PIPE_MAX].ud;
    }
    c->depth = 0;
    if (cancel) pgpool_cancel_async(c->pg);
    pgpool_conn_watch(c, 0);
    pgpool_set_state(c, CS_BROKEN);
    pgpool_conn_close(c);
    for (int i = 0; i < n; i++) {
        PGresult *r = i == 0 ? head_res : NULL;
        pgpool_count_failure(p, r, err);
        todo[i].cb(todo[i].ud, r, err);
    }
    if (!n && head_res) PQclear(head_res);
}

static void pipe_lost(pgconn *c, const char *msg)
{
    char line[200], err[240];
    pgpool_first_line(line, sizeof line, msg);
    PGresult *res = c->res;
    c->res = NULL;
    const char *m = res && !pgpool_result_ok(res) ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (res && !m) { PQclear(res); res = NULL; }
    snprintf(err, sizeof err, PGPOOL_ERR_LOST ": %s", m ? m : line);
    pgpool_first_line(line, sizeof line, err);
    pgpool *p = c->pool;
    pgpipe_fail(c, res, line, 0);
    pgpool_probe_soon(p);
}

/* Queue one statement and its Sync: each statement is its own implicit transaction. */
static int pipe_send(pgconn *c, pgpool_job *j)
{
    if (!PQsendQueryParams(c->pg, j->sql, j->nparams, NULL, j->values, j->lengths, NULL, 0) || !PQpipelineSync(c->pg))
        return -1;
    int r = PQflush(c->pg);
    if (r < 0) return -1;
    c->flushing = r;
    int i = (c->head + c->depth) % PIPE_MAX;
    c->ring[i].cb = j->cb;
    c->ring[i].ud = j->ud;
    c->ring[i].sent = ev_now(c->pool->loop);
    if (++c->depth == 1) pipe_arm(c);
    pgpool_conn_watch(c, r ? EV_READ | EV_WRITE : EV_READ);
    return 0;
}

/* c was just taken from the idle list (CS_LENT): switch it to pipeline mode and send j. */
static int pipe_start(pgconn *c, pgpool_job *j)
{
    if (!PQenterPipelineMode(c->pg)) return -1;
    pgpool_set_state(c, CS_PIPE);
    c->head = c->depth = c->sync_due = 0;
    return pipe_send(c, j);
}

/* A pipelined connection with room, the least loaded, or NULL. */
static pgconn *pipe_pick(pgpool *p)
{
    pgconn *best = NULL;
    ev_tstamp now = ev_now(p->loop);
    for (pgconn *c = p->all; c; c = c->next)
        if (c->state == CS_PIPE && c->depth < p->pipe_max && now - c->ring[c->head].sent < PIPE_FRESH &&
            (!best || c->depth < best->depth))
            best = c;
    return best;
}

/* Back to normal mode and to the idle list (or closed, as pgpool_release would). */
static void pipe_done(pgconn *c)
{
    pgpool *p = c->pool;
    ev_timer_stop(p->loop, &c->timer);
    if (!PQexitPipelineMode(c->pg) || PQstatus(c->pg) != CONNECTION_OK || p->n_total > p->cap || p->closing ||
        ev_now(p->loop) >= c->expires || PQtransactionStatus(c->pg) != PQTRANS_IDLE) {
        pgpool_conn_close(c);
        return;
    }
    pgpool_conn_to_idle(c);
}

void pgpipe_io(pgconn *c, int revents)
{
    pgpool *p = c->pool;
    PGconn *pg = c->pg;
    if ((revents & EV_READ) && !PQconsumeInput(pg)) { pipe_lost(c, PQerrorMessage(pg)); return; }
    if (c->flushing) {
        int r = PQflush(pg);
        if (r < 0) { pipe_lost(c, PQerrorMessage(pg)); return; }
        c->flushing = r;
        pgpool_conn_watch(c, r ? EV_READ | EV_WRITE : EV_READ);
    }
    while ((c->depth || c->sync_due) && !PQisBusy(pg)) {
        PGresult *r = PQgetResult(pg);
        ExecStatusType s = r ? PQresultStatus(r) : PGRES_EMPTY_QUERY;
        if (c->sync_due) {
            if (r && s == PGRES_PIPELINE_SYNC) { PQclear(r); c->sync_due = 0; continue; }
            if (r) PQclear(r);
            if (!r) break;
            pipe_lost(c, "unexpected result in pipeline mode");
            return;
        }
        if (!r) { /* the oldest statement's results are complete */
            PGresult *res = c->res;
            c->res = NULL;
            pgpool_query_cb cb = c->ring[c->head].cb;
            void *ud = c->ring[c->head].ud;
            c->head = (c->head + 1) % PIPE_MAX;
            c->depth--;
            c->sync_due = 1;
            pipe_arm(c);
            const char *err = NULL;
            if (!res) err = "query returned no result";
            else if (!pgpool_result_ok(res) && !(err = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY))) err = "query failed";
            if (err) pgpool_count_failure(p, res, err);
            if (p->n_waiting) pgpool_kick(p); /* a slot is free for a queued job */
            cb(ud, res, err);         /* may queue more statements on c (it stays CS_PIPE) */
            continue;
        }
        if (s == PGRES_COPY_IN || s == PGRES_COPY_OUT || s == PGRES_COPY_BOTH) {
            PQclear(r);
            pipe_lost(c, "COPY is not supported through the pool");
            return;
        }
        if (s == PGRES_PIPELINE_SYNC) { PQclear(r); continue; }
        if (!c->res) c->res = r;
        else if (pgpool_result_ok(c->res) && !pgpool_result_ok(r)) { PQclear(c->res); c->res = r; }
        else PQclear(r);
    }
    if (!c->depth && !c->sync_due && !c->flushing) pipe_done(c);
}

/* A queued job got a connection of its own (or failed to get one). */
static void job_acquired(void *ud, pgconn *c, const char *err)
{
    pgpool_job *j = ud;
    if (!c) { j->cb(j->ud, NULL, err); return; }
    pgpool *p = c->pool;
    if (pipe_start(c, j) == 0) return;
    if (c->state == CS_PIPE) pipe_lost(c, PQerrorMessage(c->pg));
    else pgpool_conn_close(c);
    pgpool_enqueue(p, &j->w, job_acquired, j); /* try again on another connection */
}

void pgpipe_timeout(pgconn *c)
{
    char err[160];
    snprintf(err, sizeof err, PGPOOL_ERR_STMT_TIMEOUT ": no answer from the database after %g s",
             c->pool->cfg.statement_timeout + STMT_GRACE);
    pgpipe_fail(c, NULL, err, 1); /* pgpool_conn_close frees a partial result */
}

int pgpipe_share(pgpool *p, pgpool_waiter *w)
{
    pgconn *c;
    if (w->cb != job_acquired || p->n_total < p->cap || !(c = pipe_pick(p))) return 0;
    pgpool_job *j = w->ud;
    pgpool_cancel(w);
    pgpool_waited(p, w, ev_now(p->loop));
    PADD(p->acquired, 1);
    if (pipe_send(c, j)) { pipe_lost(c, PQerrorMessage(c->pg)); pgpool_enqueue(p, &j->w, job_acquired, j); }
    return 1;
}

void pgpool_query(pgpool *p, pgpool_job *j, const char *sql, int nparams, const char *const *values,
                  const int *lengths, pgpool_query_cb cb, void *ud)
{
    j->sql = sql;
    j->nparams = nparams;
    j->values = values;
    j->lengths = lengths;
    j->cb = cb;
    j->ud = ud;
    j->w.pool = NULL;
    if (!p->n_waiting && !p->down) {
        pgconn *c = p->idle ? pgpool_take_idle(p) : NULL;
        if (c) {
            pgpool_waited_none(p);
            if (pipe_start(c, j) == 0) return;
            if (c->state == CS_PIPE) pipe_lost(c, PQerrorMessage(c->pg));
            else pgpool_conn_close(c);
        } else if (p->n_total >= p->cap && (c = pipe_pick(p))) {
            /* the pool is at its cap: share a busy connection rather than wait for a free one */
            pgpool_waited_none(p);
            PADD(p->acquired, 1);
            if (pipe_send(c, j) == 0) return;
            pipe_lost(c, PQerrorMessage(c->pg));
        }
    }
    pgpool_enqueue(p, &j->w, job_acquired, j);
}
void pgpool_set_pipeline(pgpool *p, int depth)
{
    p->pipe_max = depth < 1 ? 1 : depth > PIPE_MAX ? PIPE_MAX : depth;
}

/* Only a statement alone on its connection is cancelled: PQcancel stops whatever the server
 * runs when the request arrives, so with others queued behind it, or on a connection reused
 * meanwhile, it could stop someone else's. The connection is therefore also closed once the
 * statement ends (expires now), never reused. Statements sharing a connection run to their end
 * (bounded by statement_timeout). */
void pgpool_query_abandon(pgpool *p, pgpool_job *j)
{
    for (pgconn *c = p->all; c; c = c->next)
        if (c->state == CS_PIPE && c->depth == 1 && c->ring[c->head].ud == j->ud) {
            c->expires = 0;
            pgpool_cancel_async(c->pg);
            return;
        }
}
