/* pgpipe.c: statements on the wire in libpq pipeline mode: pgconn_query's one (CS_QUERY) and
 * pgpool_query's one-shot statements sharing a connection (CS_PIPE); named prepared statements
 * from the connection's cache (pgstmt), each statement followed by its own Sync. */
#include "pgpool_int.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "log.h"

/* Join a busy connection only when what is queued there is expected to take at most this
 * fraction of the time the statement may still wait (its pool_timeout): run times vary. */
#define PIPE_MARGIN 4.0

/* What the next result of a slot answers. A slot's messages: [DEALLOCATE, Sync] (an eviction),
 * [Parse] (a cache miss), Execute (or an unnamed Parse/Bind/Execute), Sync. */
enum { PH_CLOSE, PH_CLOSE_SYNC, PH_PARSE, PH_EXEC, PH_SYNC };

typedef struct pgslot pgslot;

/* A callback to run once the connection's bookkeeping is done (never with c half-updated). */
typedef struct { pgpool_query_cb cb; void *ud; PGresult *res; const char *err; } done_t;

static void pipe_arm(pgconn *c)
{
    pgpool *p = c->pool;
    ev_timer_stop(p->loop, &c->timer);
    if (!c->depth || p->cfg.statement_timeout <= 0) return;
    /* the server's statement_timeout counts from when it starts the statement, after the ones ahead */
    double left = c->head_start + p->cfg.statement_timeout + STMT_GRACE - ev_now(p->loop);
    ev_timer_set(&c->timer, left > 0 ? left : 0., 0.);
    ev_timer_start(p->loop, &c->timer);
}

static void run_done(pgpool *p, done_t *d, int n)
{
    for (int i = 0; i < n; i++) {
        if (d[i].err) pgpool_count_failure(p, d[i].res, d[i].err);
        if (d[i].cb) d[i].cb(d[i].ud, d[i].res, d[i].err);
        else if (d[i].res) PQclear(d[i].res);
    }
}

void pgpipe_fail(pgconn *c, PGresult *head_res, const char *err, int cancel)
{
    pgpool *p = c->pool;
    done_t todo[PIPE_MAX];
    int n = c->depth;
    for (int i = 0; i < n; i++) {
        pgslot *s = &c->ring[(c->head + i) % PIPE_MAX];
        todo[i] = (done_t){s->cb, s->ud, i == 0 ? head_res : NULL, err};
    }
    if (n) pgstmt_est_add(&p->est, c->ring[c->head].hash, ev_now(p->loop) - c->head_start);
    if (!n && head_res) PQclear(head_res);
    c->depth = 0;
    if (cancel) pgpool_cancel_async(c->pg);
    pgpool_conn_watch(c, 0);
    ev_timer_stop(p->loop, &c->timer);
    if (c->res) { PQclear(c->res); c->res = NULL; }
    int lent = c->state == CS_QUERY;
    pgpool_set_state(c, CS_BROKEN);
    if (!lent) pgpool_conn_close(c);   /* no callback can pick it any more; a lent one is closed on release */
    run_done(p, todo, n);
}

static void pipe_lost(pgconn *c, const char *msg)
{
    char line[200], err[240];
    pgpool_first_line(line, sizeof line, msg);
    PGresult *res = c->res; /* e.g. FATAL 57P01 from pg_terminate_backend, read before the EOF */
    c->res = NULL;
    const char *m = res && !pgpool_result_ok(res) ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (res && !m) { PQclear(res); res = NULL; }
    snprintf(err, sizeof err, PGPOOL_ERR_LOST ": %s", m ? m : line);
    pgpool_first_line(line, sizeof line, err);
    pgpool *p = c->pool;
    pgpool_probe_soon(p);   /* the callers get their errors; meanwhile find out whether the server is there */
    pgpipe_fail(c, res, line, 0);
}

/* Queue slot s's messages; may_close: outside a transaction block (an eviction may close a statement). */
static int seg_send(pgconn *c, pgslot *s, int may_close)
{
    PGconn *pg = c->pg;
    char name[PGSTMT_NAME_MAX], old[PGSTMT_NAME_MAX];
    s->use = (pgstmt_use){0, -1, 0, 0};
    s->parse_failed = 0;
    /* a text never seen run on this worker runs unnamed: one-off SQL never evicts what repeats */
    if (c->stmts && !c->pool->stmt_off)
        pgstmt_plan(c->stmts, s->sql, s->hash, may_close, pgstmt_est_get(&c->pool->est, s->hash) >= 0, &s->use);
    s->phase = s->use.close_id ? PH_CLOSE : s->use.parse ? PH_PARSE : PH_EXEC;
    if (s->use.close_id) {
        char sql[48];
        snprintf(sql, sizeof sql, "DEALLOCATE %s", pgstmt_name(c->stmts, s->use.close_id, old, sizeof old));
        if (!PQsendQueryParams(pg, sql, 0, NULL, NULL, NULL, NULL, 0) || !PQpipelineSync(pg)) return -1;
    }
    if (!s->use.id)   /* unnamed: what works through PgBouncer in transaction mode */
        return PQsendQueryParams(pg, s->sql, s->nparams, NULL, s->values, s->lengths, NULL, 0) && PQpipelineSync(pg) ? 0 : -1;
    pgstmt_name(c->stmts, s->use.id, name, sizeof name);
    if (s->use.parse && !PQsendPrepare(pg, name, s->sql, s->nparams, NULL)) return -1;
    return PQsendQueryPrepared(pg, name, s->nparams, s->values, s->lengths, NULL, 0) && PQpipelineSync(pg) ? 0 : -1;
}

/* Append a statement to c's pipeline and send it. -1 when libpq refused (c is then unusable). */
static int pipe_send(pgconn *c, const char *sql, uint64_t hash, int nparams, const char *const *values,
                     const int *lengths, pgpool_query_cb cb, void *ud, int may_close, int retried)
{
    if (c->depth >= PIPE_MAX) return -1;
    pgslot *s = &c->ring[(c->head + c->depth) % PIPE_MAX];
    *s = (pgslot){.cb = cb, .ud = ud, .sql = sql, .nparams = nparams, .values = values, .lengths = lengths,
                  .hash = hash, .retried = (unsigned char)retried};
    if (seg_send(c, s, may_close) < 0) return -1;
    int r = PQflush(c->pg);
    if (r < 0) return -1;
    c->flushing = r;
    if (++c->depth == 1) {
        c->head_start = ev_now(c->pool->loop);
        pipe_arm(c);
    }
    pgpool_conn_watch(c, r ? EV_READ | EV_WRITE : EV_READ);
    return 0;
}

/* 1 when a cached statement failed because the server's copy is unusable; *gone: it does not exist. */
static int stale_plan(const PGresult *res, int *gone)
{
    const char *st = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    if (!st) return 0;
    *gone = !strcmp(st, "26000");
    if (*gone) return 1;
    /* "cached plan must not change result type" (any lc_messages): raised before the statement runs */
    const char *fn = PQresultErrorField(res, PG_DIAG_SOURCE_FUNCTION);
    return !strcmp(st, "0A000") && fn && !strcmp(fn, "RevalidateCachedQuery");
}

/* Named statements stop working for the whole pool (new connections get no cache either). */
static void stmt_off(pgpool *p, const char *why)
{
    if (p->stmt_off) return;
    p->stmt_off = 1;
    log_msg(LOG_WARN, "database: %s: the server mixes sessions (PgBouncer in transaction mode?); prepared "
                      "statements are off for this pool from now on. Add pgbouncer=true to the database URL", why);
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

/* The oldest statement's Sync arrived: hand its result on (into d), or send it again once when its
 * cached plan went stale. 1 when c was lost (do not touch it). */
static int slot_complete(pgconn *c, done_t *d, int *nd)
{
    pgpool *p = c->pool;
    pgslot *s = &c->ring[c->head];
    ev_tstamp now = ev_now(p->loop);
    PGresult *res = c->res;
    c->res = NULL;
    pgstmt_est_add(&p->est, s->hash, now - c->head_start);
    if (s->use.parse && c->stmts) pgstmt_parsed(c->stmts, &s->use, !s->parse_failed);
    pgslot done = *s;
    c->head = (c->head + 1) % PIPE_MAX;
    c->depth--;
    c->head_start = now;
    int gone = 0, retry = 0;
    const char *st = res && !pgpool_result_ok(res) && done.use.id ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    if (st && done.use.parse && done.parse_failed && !strcmp(st, "42P05")) {
        /* our Parse met a name only this connection uses (it has a random tag): the server
         * session is shared, e.g. PgBouncer in transaction mode. Named statements cannot work. */
        retry = 1;
        stmt_off(p, "a prepared statement sluice had not created on this connection already exists");
    } else if (st && !done.use.parse && stale_plan(res, &gone)) {
        retry = 1;
        if (gone && pgstmt_is_ready(c->stmts, &done.use))
            stmt_off(p, "a prepared statement this connection had created is gone");
        pgstmt_invalid(c->stmts, &done.use, gone);
    }
    if (retry) {
        /* outside a transaction the failed statement was its own, nothing ran: parse it again and
         * retry once (it goes to the back: every statement in flight has its own caller) */
        if (!done.retried && (c->state == CS_PIPE || PQtransactionStatus(c->pg) == PQTRANS_IDLE)) {
            PQclear(res);
            if (pipe_send(c, done.sql, done.hash, done.nparams, done.values, done.lengths, done.cb, done.ud, 1, 1) == 0) {
                pipe_arm(c);
                return 0;
            }
            d[(*nd)++] = (done_t){done.cb, done.ud, NULL, PGPOOL_ERR_LOST ": could not send the statement again"};
            pipe_lost(c, PQerrorMessage(c->pg));
            return 1;
        }
    }
    pipe_arm(c);
    const char *err = NULL;
    if (!res) err = "query returned no result";
    else if (!pgpool_result_ok(res) && !(err = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY))) err = "query failed";
    d[(*nd)++] = (done_t){done.cb, done.ud, res, err};
    return 0;
}

/* Keep the first result of a statement, or the first error after successes. */
static void keep(pgconn *c, PGresult *r)
{
    if (!c->res) c->res = r;
    else if (pgpool_result_ok(c->res) && !pgpool_result_ok(r)) { PQclear(c->res); c->res = r; }
    else PQclear(r);
}

void pgpipe_io(pgconn *c, int revents)
{
    pgpool *p = c->pool;
    PGconn *pg = c->pg;
    done_t d[PIPE_MAX + 1];
    int nd = 0;
    if ((revents & EV_READ) && !PQconsumeInput(pg)) { pipe_lost(c, PQerrorMessage(pg)); return; }
    if (c->flushing) {
        int r = PQflush(pg);
        if (r < 0) { pipe_lost(c, PQerrorMessage(pg)); return; }
        c->flushing = r;
        pgpool_conn_watch(c, r ? EV_READ | EV_WRITE : EV_READ);
    }
    while (c->depth && !PQisBusy(pg)) {
        pgslot *s = &c->ring[c->head];
        PGresult *r = PQgetResult(pg);
        ExecStatusType st = r ? PQresultStatus(r) : PGRES_EMPTY_QUERY;
        if (s->phase == PH_CLOSE_SYNC || s->phase == PH_SYNC) {
            if (!r) break;              /* not there yet */
            PQclear(r);
            if (st != PGRES_PIPELINE_SYNC) { pipe_lost(c, "unexpected result in pipeline mode"); run_done(p, d, nd); return; }
            if (s->phase == PH_CLOSE_SYNC) { s->phase = s->use.parse ? PH_PARSE : PH_EXEC; continue; }
            if (slot_complete(c, d, &nd)) { run_done(p, d, nd); return; }
            continue;
        }
        if (!r) { s->phase++; continue; } /* this message's results are complete */
        if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH || st == PGRES_PIPELINE_SYNC) {
            PQclear(r);
            pipe_lost(c, st == PGRES_PIPELINE_SYNC ? "unexpected result in pipeline mode" : "COPY is not supported through the pool");
            run_done(p, d, nd);
            return;
        }
        if (s->phase == PH_CLOSE) { PQclear(r); continue; } /* a failed DEALLOCATE harms nothing */
        if (s->phase == PH_PARSE) {
            if (pgpool_result_ok(r)) PQclear(r);
            else { s->parse_failed = 1; keep(c, r); } /* the error an unnamed statement gets */
            continue;
        }
        if (s->parse_failed || st == PGRES_PIPELINE_ABORTED) {
            if (!c->res) c->res = r; else PQclear(r);
            continue;
        }
        keep(c, r);
    }
    if (!c->depth && !c->flushing) {
        if (c->state == CS_QUERY) {
            ev_timer_stop(p->loop, &c->timer);
            pgpool_conn_watch(c, 0);
            pgpool_set_state(c, PQexitPipelineMode(pg) ? CS_LENT : CS_BROKEN);
        } else {
            pipe_done(c);
        }
    }
    if (nd && p->n_waiting) pgpool_kick(p); /* slots are free for queued jobs */
    run_done(p, d, nd);
}

void pgpipe_timeout(pgconn *c)
{
    char err[160];
    snprintf(err, sizeof err, PGPOOL_ERR_STMT_TIMEOUT ": no answer from the database after %g s",
             c->pool->cfg.statement_timeout + STMT_GRACE);
    pgpipe_fail(c, NULL, err, 1);
}

int pgconn_query(pgconn *c, const char *sql, int nparams, const char *const *values,
                 const int *lengths, pgpool_query_cb cb, void *ud)
{
    if (c->state != CS_LENT) return -1;
    int may_close = PQtransactionStatus(c->pg) == PQTRANS_IDLE;
    if (!PQenterPipelineMode(c->pg)) {
        if (PQstatus(c->pg) != CONNECTION_OK) pgpool_set_state(c, CS_BROKEN);
        return -1;
    }
    pgpool_set_state(c, CS_QUERY);
    c->head = c->depth = 0;
    if (pipe_send(c, sql, pgstmt_hash(sql), nparams, values, lengths, cb, ud, may_close, 0) < 0) {
        c->depth = 0;
        pgpool_set_state(c, CS_BROKEN); /* part of it may be queued: closed on release */
        return -1;
    }
    return 0;
}

/* c was just taken from the idle list (CS_LENT): switch it to pipeline mode and send j. */
static int pipe_start(pgconn *c, pgpool_job *j)
{
    if (!PQenterPipelineMode(c->pg)) return -1;
    pgpool_set_state(c, CS_PIPE);
    c->head = c->depth = 0;
    return pipe_send(c, j->sql, j->hash, j->nparams, j->values, j->lengths, j->cb, j->ud, 1, 0);
}

/* Expected seconds until c would start one more statement; INFINITY when it cannot be told. */
static double pipe_wait(const pgconn *c, ev_tstamp now)
{
    const pgpool *p = c->pool;
    double w = 0;
    for (int i = 0; i < c->depth; i++) {
        const pgslot *s = &c->ring[(c->head + i) % PIPE_MAX];
        double e = pgstmt_est_get(&p->est, s->hash);
        if (e < 0) return INFINITY;     /* never seen: it may be the slow one */
        if (i == 0) {
            /* a statement past half its usual time is expected to run about as long again */
            double ran = now - c->head_start;
            e = fmax(e - ran, ran);
        }
        w += e;
    }
    return w;
}

/* The pipelined connection with room whose queue is expected to clear first, if that fits the
 * job's remaining wait (deadline: when its pool_timeout ends), or NULL. */
static pgconn *pipe_pick(pgpool *p, ev_tstamp deadline)
{
    pgconn *best = NULL;
    ev_tstamp now = ev_now(p->loop);
    double budget = p->cfg.pool_timeout > 0 ? deadline - now : INFINITY, bw = INFINITY;
    if (p->cfg.statement_timeout > 0) budget = fmin(budget, p->cfg.statement_timeout);
    for (pgconn *c = p->all; c; c = c->next) {
        if (c->state != CS_PIPE || c->depth >= p->pipe_max) continue;
        double w = pipe_wait(c, now);
        if (w * PIPE_MARGIN <= budget && w < bw) { best = c; bw = w; }
    }
    return best;
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

/* Share a busy connection: only when the pool is at its cap and nothing is idle (the callers checked). */
static int share(pgpool *p, pgconn *c, pgpool_job *j)
{
    PADD(p->acquired, 1);
    PADD(p->pipelined, 1);
    if (pipe_send(c, j->sql, j->hash, j->nparams, j->values, j->lengths, j->cb, j->ud, 1, 0) == 0) return 0;
    pipe_lost(c, PQerrorMessage(c->pg));
    return -1;
}

int pgpipe_share(pgpool *p, pgpool_waiter *w)
{
    pgconn *c;
    if (w->cb != job_acquired || p->n_total < p->cap || !(c = pipe_pick(p, w->since + p->cfg.pool_timeout))) return 0;
    pgpool_job *j = w->ud;
    pgpool_cancel(w);
    pgpool_waited(p, w, ev_now(p->loop));
    if (share(p, c, j)) pgpool_enqueue(p, &j->w, job_acquired, j);
    return 1;
}

void pgpool_query(pgpool *p, pgpool_job *j, const char *sql, int nparams, const char *const *values,
                  const int *lengths, pgpool_query_cb cb, void *ud)
{
    j->sql = sql;
    j->hash = pgstmt_hash(sql);
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
        } else if (p->n_total >= p->cap && (c = pipe_pick(p, ev_now(p->loop) + p->cfg.pool_timeout))) {
            pgpool_waited_none(p);
            if (share(p, c, j) == 0) return;
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
