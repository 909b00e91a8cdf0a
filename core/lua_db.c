/* lua_db.c: coroutine-friendly database calls: a query parks its task until libpq answers.
 * Primitives return rows, or nil plus an error table; lua/sluice.lua raises the error. */
#include "lua_db.h"

#include <lauxlib.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ctx.h"
#include "log.h"
#include "lua_app.h"
#include "pglisten.h"
#include "pgpool.h"
#include "pgresult.h"
#include "sconfig.h"
#include "util.h"

/* Registry key of the current state's { [channel] = fn } table filled by app.db.listen. */
#define LISTEN_KEY "sluice.db.listen"

typedef struct dbside {
    pgpool *primary;
    pgpool **replicas;
    int nreplicas, next_replica;
    pgpool_config cfg;
    int limit;
    pgpool_waiter warm;
    pgconn *fixture;             /* test mode: every query runs in this transaction */
    struct dbop *fix_op;         /* the statement in flight on fixture (one at a time), or NULL */
    pglisten *listener;          /* worker 0 only, while the scripts registered app.db.listen */
    int nchannels;               /* channels the current state listens to (every worker counts them) */
} dbside;

/* What a parked query needs once a connection is there. */
typedef struct dbop {
    task *t;
    dbside *d;
    pgpool *pool;
    pgconn *conn;
    int pinned;                  /* conn belongs to a transaction: do not release after */
    int release_after;
    char *sql;
    int nparams;
    char **values;
    int *lengths;
    pgpool_waiter waiter;
    pgpool_job job;              /* a one-shot query shared on a pipelined connection */
    enum { OP_QUERY, OP_BEGIN, OP_COMMIT, OP_ROLLBACK, OP_FIX_BEGIN, OP_FIX_ROLLBACK } kind;
    int savepoint;               /* transaction nested in the test fixture's */
    int fix_step;                /* test fixture: 1 SAVEPOINT sent, 2 query sent, 3 ROLLBACK TO sent */
    PGresult *fix_res;           /* the failed query's result, kept while rolling back to the savepoint */
    int lost;                    /* its fixture connection was closed under it: kick fails it */
    ev_timer kick;
} dbop;

static void warm_cb(void *ud, pgconn *c, const char *err)
{
    dbside *d = ud;
    if (c) pgpool_release(d->primary, c);
    else log_msg(LOG_WARN, "database: %s (is PostgreSQL running and DATABASE_URL right? "
                           "tools/pg-dev start .sluice/pg starts a local one; /ready answers 503 meanwhile)", err);
}

int db_check_url(const char *url, char *err, size_t errlen)
{
    pgpool_config cfg;
    char e[512];
    if (pgpool_parse_url(url, &cfg, e, sizeof e) == 0) return 0;
    snprintf(err, errlen, "DATABASE_URL: %s", e);
    return -1;
}

/* Channels registered by the state's scripts (strings owned by its registry table). */
static int app_channels(appstate *a, const char **out, int max)
{
    if (!a || !a->L) return 0;
    lua_State *L = a->L;
    int n = 0;
    lua_getfield(L, LUA_REGISTRYINDEX, LISTEN_KEY);
    if (lua_istable(L, -1)) {
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            if (n < max && lua_type(L, -2) == LUA_TSTRING) out[n++] = lua_tostring(L, -2);
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    return n;
}

/* The listener's connection counts against connection_limit: with channels, the pools share
 * limit - 1 (every worker loads the same scripts, so all agree on it). */
static int pool_share(worker *w, dbside *d)
{
    int n = w->srv && w->srv->nworkers ? w->srv->nworkers : 1;
    return pgpool_worker_share(d->limit - (d->nchannels ? 1 : 0), n, w->idx);
}

/* A NOTIFY: run the current state's function as a task, fn(payload, channel). */
static void on_notify(void *ud, const char *channel, const char *payload)
{
    worker *w = ud;
    appstate *a = w->app;
    if (!a || !a->active || a->closing) return;
    lua_State *L = a->L;
    lua_getfield(L, LUA_REGISTRYINDEX, LISTEN_KEY);
    if (!lua_istable(L, -1)) { lua_pop(L, 1); return; }
    lua_getfield(L, -1, channel);
    lua_remove(L, -2);
    if (!lua_isfunction(L, -1)) { lua_pop(L, 1); return; }
    lua_pushstring(L, payload);
    lua_pushstring(L, channel);
    task *t = task_prepare(a, TASK_TIMER, 2);
    if (t) task_resume(t, 2);
}

/* Applies the current state's app.db.listen set: pool caps on every worker, the LISTEN
 * connection on worker 0 (one per instance, so a NOTIFY runs its function once). */
static void listen_sync(worker *w)
{
    dbside *d = w->db;
    const char *ch[PGLISTEN_MAX_CHANNELS];
    int n = app_channels(w->app, ch, PGLISTEN_MAX_CHANNELS);
    int had = d->nchannels;
    d->nchannels = n;
    if (n && !had) pgpool_set_cap(d->primary, pool_share(w, d)); /* shrink the pool before the listener opens */
    if (w->idx == 0 && (n || d->listener)) {
        if (!d->listener) {
            pgpool_config lc = d->cfg;
            const char *lurl = getenv("DATABASE_LISTEN_URL");
            char err[512];
            if (lurl && *lurl && pgpool_parse_url(lurl, &lc, err, sizeof err)) {
                log_msg(LOG_ERROR, "DATABASE_LISTEN_URL: %s; listening on DATABASE_URL", err);
                lc = d->cfg;
            }
            d->listener = pglisten_new(w->loop, &lc, on_notify, w);
        }
        if (d->listener) pglisten_set(d->listener, ch, n);
    }
    if (!n && had) pgpool_set_cap(d->primary, pool_share(w, d));
}

static const metrics_db_ops db_metrics_ops = {db_ready, db_pool_totals, db_metrics};

int db_worker_init(worker *w)
{
    metrics_set_db(&db_metrics_ops);   /* the same table every time: metrics.c reads the pools through it */
    const sconfig *c = w->app_cfg;
    if (!c->db_url) return 0;
    dbside *d = calloc(1, sizeof *d);
    if (!d) return -1;
    char err[512];
    if (pgpool_parse_url(c->db_url, &d->cfg, err, sizeof err)) {
        log_msg(LOG_ERROR, "DATABASE_URL: %s", err);
        free(d);
        return -1;
    }
    if (!strstr(c->db_url, "statement_timeout=")) d->cfg.statement_timeout = c->statement_timeout;
    if (!strstr(c->db_url, "health_check_interval=")) d->cfg.health_interval = c->db_health_interval;
    d->limit = d->cfg.connection_limit;
    int n = w->srv->nworkers ? w->srv->nworkers : 1;
    const char *ch[PGLISTEN_MAX_CHANNELS];
    d->nchannels = app_channels(w->app, ch, PGLISTEN_MAX_CHANNELS);
    d->primary = pgpool_new(w->loop, &d->cfg, pool_share(w, d));
    /* statements in flight per connection (pgpool's default 4; 1 = no pipelining), docs/database.md */
    const char *pipe = getenv("SLUICE_DB_PIPELINE");
    int depth = pipe && *pipe ? atoi(pipe) : 0;
    if (depth && d->primary) pgpool_set_pipeline(d->primary, depth);
    if (c->db_replicas) {
        char *list = strdup(c->db_replicas), *save = NULL;
        for (char *u = strtok_r(list, ",", &save); u; u = strtok_r(NULL, ",", &save)) {
            pgpool_config rc;
            if (pgpool_parse_url(u, &rc, err, sizeof err)) { log_msg(LOG_ERROR, "replica URL: %s", err); continue; }
            pgpool **r = realloc(d->replicas, (size_t)(d->nreplicas + 1) * sizeof *r);
            if (!r) break;
            d->replicas = r;
            d->replicas[d->nreplicas] = pgpool_new(w->loop, &rc, pgpool_worker_share(rc.connection_limit, n, w->idx));
            if (depth && d->replicas[d->nreplicas]) pgpool_set_pipeline(d->replicas[d->nreplicas], depth);
            d->nreplicas++;
        }
        free(list);
    }
    w->db = d;
    if (d->nchannels) {
        d->nchannels = 0; /* listen_sync opens the listener when it sees channels appear */
        listen_sync(w);
    }
    pgconn *pc = pgpool_acquire(d->primary, &d->warm, warm_cb, d);
    if (pc) pgpool_release(d->primary, pc);
    return 0;
}

void db_worker_configure(worker *w)
{
    dbside *d = w->db;
    const sconfig *c = w->app_cfg;
    if (!d || !c->db_url) return;
    pgpool_config nc;
    char err[512];
    if (pgpool_parse_url(c->db_url, &nc, err, sizeof err)) return;
    if (nc.connection_limit != d->limit) {
        d->limit = nc.connection_limit;
        pgpool_set_cap(d->primary, pool_share(w, d));
    }
    listen_sync(w); /* the new state's scripts registered their listeners again */
}

static void fixture_close(appstate *a, dbside *d);

void db_worker_free(worker *w)
{
    dbside *d = w->db;
    if (!d) return;
    pgpool_cancel(&d->warm);
    if (d->fixture) fixture_close(NULL, d);
    pglisten_free(d->listener);
    pgpool_free(d->primary);
    for (int i = 0; i < d->nreplicas; i++) pgpool_free(d->replicas[i]);
    free(d->replicas);
    free(d);
    w->db = NULL;
}

int db_ready(worker *w)
{
    dbside *d = w->db;
    return !d || pgpool_healthy(d->primary);
}

void db_pool_totals(server *srv, db_totals *out)
{
    memset(out, 0, sizeof *out);
    for (int i = 0; i < srv->nworkers; i++) {
        dbside *d = srv->workers[i].db;
        if (!d || !d->primary) continue;
        pgpool_stats_t st;
        pgpool_stats(d->primary, &st);
        out->configured = 1;
        out->in_use += st.in_use;
        out->idle += st.idle;
        out->connecting += st.connecting;
        out->waiting += st.waiting;
        out->cap += st.cap;
        out->down += st.down;
        out->acquired += st.acquired;
        out->timeouts += st.timeouts;
        out->errors += st.errors;
    }
}

/* metrics.c prints HELP/TYPE of the gauges and counters below once, then calls this per worker;
 * every family is printed as one group over all workers when first is set (the text format
 * wants a family's samples together), and nothing for the other calls. */
void db_metrics(worker *w, buf *out, int first)
{
    if (!first || !w->srv) return;
    server *srv = w->srv;
    int nw = srv->nworkers;
    pgpool_stats_t *st = calloc((size_t)nw, sizeof *st);
    if (!st) return;
    for (int i = 0; i < nw; i++) {
        dbside *d = srv->workers[i].db;
        if (d) pgpool_stats(d->primary, &st[i]);
        else st[i].cap = -1;                     /* marks a worker without a pool */
    }
    static const char *const states[] = {"idle", "in_use", "connecting"};
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < nw; i++)
            if (st[i].cap >= 0)
                buf_printf(out, "sluice_db_pool_connections{worker=\"%d\",state=\"%s\"} %d\n", i, states[k],
                           k == 0 ? st[i].idle : k == 1 ? st[i].in_use : st[i].connecting);
    for (int i = 0; i < nw; i++)
        if (st[i].cap >= 0) buf_printf(out, "sluice_db_pool_waiting{worker=\"%d\"} %d\n", i, st[i].waiting);
    for (int i = 0; i < nw; i++)
        if (st[i].cap >= 0) buf_printf(out, "sluice_db_pool_cap{worker=\"%d\"} %d\n", i, st[i].cap);
    for (int i = 0; i < nw; i++)
        if (st[i].cap >= 0) buf_printf(out, "sluice_db_pool_acquired_total{worker=\"%d\"} %llu\n", i, (unsigned long long)st[i].acquired);
    for (int i = 0; i < nw; i++)
        if (st[i].cap >= 0) buf_printf(out, "sluice_db_pool_timeouts_total{worker=\"%d\"} %llu\n", i, (unsigned long long)st[i].timeouts);
    for (int i = 0; i < nw; i++)
        if (st[i].cap >= 0) buf_printf(out, "sluice_db_pool_errors_total{worker=\"%d\"} %llu\n", i, (unsigned long long)st[i].errors);
    for (int i = 0; i < nw; i++)
        if (st[i].cap >= 0) buf_printf(out, "sluice_db_pool_wait_seconds_total{worker=\"%d\"} %.6f\n", i, (double)st[i].wait_us / 1e6);
    buf_puts(out, "# HELP sluice_db_pool_errors_by_class_total Database errors by SQLSTATE class (08 also counts lost connections, 57 timeouts).\n"
                  "# TYPE sluice_db_pool_errors_by_class_total counter\n");
    for (int i = 0; i < nw; i++)
        for (int c = 0; st[i].cap >= 0 && c < PGPOOL_ERR_CLASSES; c++)
            buf_printf(out, "sluice_db_pool_errors_by_class_total{worker=\"%d\",class=\"%s\"} %llu\n", i,
                       pgpool_error_class(c), (unsigned long long)st[i].errors_by_class[c]);
    static const struct { const char *name, *help; size_t off; } stmt[] = {
        {"sluice_db_statement_cache_hits_total", "Statements executed from a connection's prepared-statement cache (no Parse).", offsetof(pgpool_stats_t, stmt_hits)},
        {"sluice_db_statement_cache_misses_total", "Statements not in a connection's cache: prepared into it, or run unnamed (an SQL text's first run; a full or stale cache inside a transaction).", offsetof(pgpool_stats_t, stmt_misses)},
        {"sluice_db_statement_cache_evictions_total", "Least recently used prepared statements closed to make room.", offsetof(pgpool_stats_t, stmt_evictions)},
        {"sluice_db_statement_cache_invalidations_total", "Cached statements whose plan went stale (result type changed) or that the server no longer knew.", offsetof(pgpool_stats_t, stmt_invalidated)},
        {"sluice_db_pool_pipelined_total", "Statements sent onto a connection already running others (pipeline mode).", offsetof(pgpool_stats_t, pipelined)},
    };
    for (size_t k = 0; k < sizeof stmt / sizeof *stmt; k++) {
        buf_printf(out, "# HELP %s %s\n# TYPE %s counter\n", stmt[k].name, stmt[k].help, stmt[k].name);
        for (int i = 0; i < nw; i++)
            if (st[i].cap >= 0)
                buf_printf(out, "%s{worker=\"%d\"} %llu\n", stmt[k].name, i,
                           (unsigned long long)*(const uint64_t *)((const char *)&st[i] + stmt[k].off));
    }
    buf_puts(out, "# HELP sluice_db_pool_wait_duration_seconds Time an acquire waited for a connection (0 when one was idle).\n"
                  "# TYPE sluice_db_pool_wait_duration_seconds histogram\n");
    for (int i = 0; i < nw; i++) {
        dbside *d = srv->workers[i].db;
        if (!d) continue;
        phist h = {{0}, 0};
        phist_merge(&h, pgpool_wait_hist(d->primary)); /* one copy: buckets, sum and count agree */
        char labels[32];
        snprintf(labels, sizeof labels, "worker=\"%d\"", i);
        phist_render(out, "sluice_db_pool_wait_duration_seconds", labels, &h, pgpool_wait_bounds());
    }
    free(st);
    buf_puts(out, "# HELP sluice_db_listen_up 1 while the LISTEN connection is open.\n# TYPE sluice_db_listen_up gauge\n"
                  "# HELP sluice_db_listen_notifications_total NOTIFYs handed to app.db.listen functions.\n# TYPE sluice_db_listen_notifications_total counter\n"
                  "# HELP sluice_db_listen_reconnects_total LISTEN connections lost or failed.\n# TYPE sluice_db_listen_reconnects_total counter\n");
    dbside *d0 = srv->workers[0].db;
    pglisten_stats_t ls = {0};
    if (d0 && d0->listener) pglisten_stats(d0->listener, &ls);
    buf_printf(out, "sluice_db_listen_up %d\nsluice_db_listen_notifications_total %llu\nsluice_db_listen_reconnects_total %llu\n",
               ls.connected, (unsigned long long)ls.notifications, (unsigned long long)ls.reconnects);
}

/* ---------------------------------------------------------------- parked operations */

static void op_free(dbop *op)
{
    for (int i = 0; i < op->nparams; i++) free(op->values[i]);
    free(op->values);
    free(op->lengths);
    free(op->sql);
    free(op);
}

static void fixture_unpin(appstate *a, pgconn *fc);

/* Resumes the task with (rows) or (nil, errtable) and frees op. */
static void op_finish(dbop *op, PGresult *res, const char *err)
{
    task *t = op->t;
    lua_State *co = t->co;
    int ok = res && (PQresultStatus(res) == PGRES_TUPLES_OK || PQresultStatus(res) == PGRES_COMMAND_OK);
    if (op->conn && !op->pinned && (op->release_after || !ok)) {
        pgpool_release(op->pool, op->conn);
        op->conn = NULL;
    }
    dbside *d = op->d;
    if (d->fix_op == op) d->fix_op = NULL;
    if (op->kind == OP_COMMIT || op->kind == OP_ROLLBACK) {
        if (t->db_conn && !op->savepoint) pgpool_release(t->db_pool, t->db_conn);
        t->db_conn = NULL;
        t->db_pool = NULL;
        t->db_savepoint = 0;
    }
    if (op->kind == OP_BEGIN) {
        if (ok) { t->db_conn = op->conn; t->db_pool = op->pool; t->db_savepoint = op->savepoint; }
        else if (op->conn && !op->savepoint) pgpool_release(op->pool, op->conn);
    }
    if (op->kind == OP_FIX_BEGIN) {
        if (ok) d->fixture = op->conn;
        else if (op->conn) pgpool_release(op->pool, op->conn);
    }
    if (op->kind == OP_FIX_ROLLBACK && d->fixture) {
        fixture_unpin(t->app, d->fixture);
        pgpool_release(d->primary, d->fixture);
        d->fixture = NULL;
    }
    t->db_op = NULL;
    int n;
    if (ok) {
        if (op->kind == OP_QUERY) pgresult_push(co, res);
        else lua_pushboolean(co, 1);
        n = 1;
    } else {
        lua_pushnil(co);
        pgresult_push_error(co, res, err ? err : "query failed");
        n = 2;
    }
    if (res) PQclear(res);
    op_free(op);
    task_resume(t, n);
}

static void query_cb(void *ud, PGresult *res, const char *err);

/* In the test fixture a failed statement would abort the whole test transaction, so each
 * statement runs behind its own savepoint: SAVEPOINT, the query, and on error ROLLBACK TO. */
static int fix_send(dbop *op, const char *sql)
{
    return pgconn_query(op->conn, sql, 0, NULL, NULL, query_cb, op);
}

static void op_drop(dbop *op, PGresult *res);

static void query_cb(void *ud, PGresult *res, const char *err)
{
    dbop *op = ud;
    if (!op->t) { op_drop(op, res); return; }
    if (op->fix_step == 1) {                       /* SAVEPOINT answered */
        int ok = res && PQresultStatus(res) == PGRES_COMMAND_OK;
        if (res) PQclear(res);
        if (!ok) { op->fix_step = 0; op_finish(op, NULL, err ? err : "fixture savepoint failed"); return; }
        op->fix_step = 2;
        if (pgconn_query(op->conn, op->sql, op->nparams, (const char *const *)op->values, op->lengths, query_cb, op)) {
            op->fix_step = 0;
            op_finish(op, NULL, PGPOOL_ERR_LOST ": the connection is busy or broken");
        }
        return;
    }
    if (op->fix_step == 2) {                       /* the query answered */
        int ok = res && (PQresultStatus(res) == PGRES_TUPLES_OK || PQresultStatus(res) == PGRES_COMMAND_OK);
        if (ok || !res) { op->fix_step = 0; op_finish(op, res, err); return; }
        op->fix_res = res;
        op->fix_step = 3;
        if (fix_send(op, "ROLLBACK TO SAVEPOINT sluice_fixture_q")) { op->fix_step = 0; op->fix_res = NULL; op_finish(op, res, err); }
        return;
    }
    if (op->fix_step == 3) {                       /* rolled back: report the query's error */
        if (res) PQclear(res);
        PGresult *qres = op->fix_res;
        op->fix_res = NULL;
        op->fix_step = 0;
        op_finish(op, qres, qres ? PQresultErrorField(qres, PG_DIAG_MESSAGE_PRIMARY) : err);
        return;
    }
    op_finish(op, res, err);
}

/* Sends the statement; -1 when the connection cannot take it (nothing was sent). */
static int send_op(dbop *op)
{
    static const char *fixed[] = {NULL, "BEGIN", "COMMIT", "ROLLBACK", "BEGIN", "ROLLBACK"};
    static const char *sp[] = {NULL, "SAVEPOINT sluice_tx", "RELEASE SAVEPOINT sluice_tx", "ROLLBACK TO SAVEPOINT sluice_tx"};
    const char *sql = op->kind == OP_QUERY ? op->sql : op->savepoint ? sp[op->kind] : fixed[op->kind];
    return pgconn_query(op->conn, sql, op->nparams, (const char *const *)op->values, op->lengths, query_cb, op);
}

static void acquire_cb(void *ud, pgconn *c, const char *err)
{
    dbop *op = ud;
    if (!op->t) { if (c) pgpool_release(op->pool, c); op_free(op); return; }   /* (withdrawn: not reached) */
    if (!c) { op_finish(op, NULL, err); return; }
    op->conn = c;
    if (send_op(op)) op_finish(op, NULL, PGPOOL_ERR_LOST ": the connection is busy or broken");
}

/* t->cancel: the task is abandoned (its request is over, lua_app.c); after this nothing
 * resumes it. A statement still waiting for a connection is withdrawn. One running on a
 * connection of its own goes with the connection: pgpool_release cancels it on the server and
 * closes the connection, without a callback (the transaction's connection is released so by
 * db_task_cleanup, the task's cleanup hook). One shared on a pipelined connection, or in the
 * test fixture, runs to its end (cancelled on the server when it is the one running there):
 * its answer is dropped by query_cb. */
static void op_cancel(task *t)
{
    dbop *op = t->db_op;
    if (!op) return;
    t->db_op = NULL;
    if (op->lost) {                          /* its connection is gone already (fixture_close) */
        ev_timer_stop(t->app->w->loop, &op->kick);
        op_free(op);
        return;
    }
    if (op->waiter.pool || op->job.w.pool) { /* still queued for a connection: withdraw and drop */
        pgpool_cancel(&op->waiter);
        pgpool_cancel(&op->job.w);
        op_free(op);
        return;
    }
    dbside *d = t->app->w->db;
    if (op->conn && op->conn != d->fixture) {
        if (!op->pinned) pgpool_release(op->pool, op->conn);   /* pinned: the transaction's, see above */
        op_free(op);
        return;
    }
    op->t = NULL;                               /* orphaned: query_cb frees it */
    if (!op->conn) pgpool_query_abandon(op->pool, &op->job);
}

/* The late answer of an abandoned task's statement. */
static void op_drop(dbop *op, PGresult *res)
{
    if (op->d->fix_op == op) op->d->fix_op = NULL;
    if (res) PQclear(res);
    if (op->fix_res) PQclear(op->fix_res);
    if (op->conn && !op->pinned) pgpool_release(op->pool, op->conn);
    op_free(op);
}

/* t->cleanup, run when the task is released: what it still holds goes back. A transaction
 * inside the test fixture is a savepoint on the fixture's connection, which is not the task's
 * to give back: it is rolled back with the fixture. */
static void db_task_cleanup(task *t)
{
    if (t->db_op) op_cancel(t);
    if (t->db_conn) {                  /* ended (or errored) inside a transaction: roll back */
        if (!t->db_savepoint) pgpool_release(t->db_pool, t->db_conn);
        t->db_conn = NULL;
        t->db_pool = NULL;
        t->db_savepoint = 0;
    }
}

/* ---------------------------------------------------------------- the test fixture's end */

/* The fixture's connection goes back: a task still pinned to it (a handler the test requested,
 * parked inside app.db.transaction) is not in that transaction any more; its COMMIT or ROLLBACK
 * says "not in a transaction" instead of touching a connection that is no longer its own. */
static void fixture_unpin(appstate *a, pgconn *fc)
{
    for (task *t = a ? a->tasks : NULL; t; t = t->next)
        if (t->db_conn == fc) { t->db_conn = NULL; t->db_pool = NULL; t->db_savepoint = 0; }
}

static void lost_cb(struct ev_loop *loop, ev_timer *tm, int revents)
{
    (void)loop, (void)revents;
    dbop *op = container_of(tm, dbop, kick);
    op->lost = 0;
    op_finish(op, NULL, PGPOOL_ERR_LOST ": the test's db fixture was rolled back while this statement ran");
}

/* Ends the test's fixture transaction without a ROLLBACK statement, when its connection is busy
 * with a statement of a task the test left behind (a timed-out test's own, or a handler's it
 * requested) or cannot take one (broken). Releasing the connection cancels that statement on the
 * server and closes it, so the server rolls the transaction back, and the next test gets a
 * fixture on another connection. The statement's answer never comes: an orphaned one (its task
 * abandoned) is freed; a task still waiting for it gets a "connection lost" error on the next
 * loop turn (not inside the caller's primitive). a is NULL at teardown. */
static void fixture_close(appstate *a, dbside *d)
{
    pgconn *fc = d->fixture;
    dbop *busy = d->fix_op;
    d->fixture = NULL;
    d->fix_op = NULL;
    fixture_unpin(a, fc);
    pgpool_release(d->primary, fc);
    if (!busy) return;
    busy->conn = NULL;
    if (busy->fix_res) { PQclear(busy->fix_res); busy->fix_res = NULL; }
    busy->fix_step = 0;
    if (!busy->t || !a) {                  /* orphaned, or the worker is going away */
        if (busy->t) busy->t->db_op = NULL;
        op_free(busy);
        return;
    }
    busy->lost = 1;
    ev_timer_init(&busy->kick, lost_cb, 0, 0);
    ev_timer_start(a->w->loop, &busy->kick);
}

/* 1 when sql starts a transaction block (BEGIN, START TRANSACTION): such a statement must not run
 * on a shared pipelined connection, where the next caller's statements would join its transaction. */
static int opens_tx(const char *s)
{
    for (;;) {
        while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r' || *s == '(') s++;
        if (s[0] == '-' && s[1] == '-') { s += strcspn(s, "\n"); continue; }
        if (s[0] == '/' && s[1] == '*') { const char *e = strstr(s + 2, "*/"); if (!e) return 0; s = e + 2; continue; }
        break;
    }
    size_t n = 0;
    while ((s[n] >= 'a' && s[n] <= 'z') || (s[n] >= 'A' && s[n] <= 'Z')) n++;
    return (n == 5 && !strncasecmp(s, "begin", 5)) || (n == 5 && !strncasecmp(s, "start", 5));
}

static int park(lua_State *L, appstate *a, int kind, int read_only, int first_param)
{
    task *t = task_current(a, L);
    if (!t || !a->w) return luaL_error(L, "app.db: only inside a handler, timer or spec, not while the script loads "
                                          "(move it into a handler, or into app.timer(0, fn) to run once the server is up)");
    dbside *d = a->w->db;
    if (!d) {
        lua_pushnil(L);
        lua_pushstring(L, "no database configured: set DATABASE_URL or database.url in config.lua");
        return 2;
    }
    if (t->db_op) return luaL_error(L, "app.db: a query is already running in this task");
    t->cleanup = db_task_cleanup;
    dbop *op = calloc(1, sizeof *op);
    if (!op) return luaL_error(L, "out of memory");
    op->t = t;
    op->d = d;
    op->kind = kind;
    if (kind == OP_QUERY) {
        size_t sl;
        const char *sql = luaL_checklstring(L, 1, &sl);
        op->sql = strndup(sql, sl);
        int top = lua_gettop(L);
        op->nparams = top - first_param + 1;
        if (op->nparams < 0) op->nparams = 0;
        op->values = calloc((size_t)op->nparams + 1, sizeof *op->values);
        op->lengths = calloc((size_t)op->nparams + 1, sizeof *op->lengths);
        for (int i = 0; i < op->nparams; i++) {
            int idx = first_param + i;
            int ty = lua_type(L, idx);
            if (ty == LUA_TNIL) continue;
            if (ty == LUA_TBOOLEAN) op->values[i] = strdup(lua_toboolean(L, idx) ? "true" : "false");
            else if (ty == LUA_TNUMBER) {
                char nb[64];
                double v = lua_tonumber(L, idx);
                if (v == (double)(long long)v && v > -9.2e18 && v < 9.2e18) snprintf(nb, sizeof nb, "%lld", (long long)v);
                else {            /* the shortest text that reads back as the same double */
                    for (int prec = 15; prec <= 17; prec++) {
                        snprintf(nb, sizeof nb, "%.*g", prec, v);
                        if (strtod(nb, NULL) == v) break;
                    }
                }
                op->values[i] = strdup(nb);
            } else if (ty == LUA_TSTRING) {
                size_t n;
                const char *s = lua_tolstring(L, idx, &n);
                op->values[i] = malloc(n + 1);
                memcpy(op->values[i], s, n);
                op->values[i][n] = 0;
                op->lengths[i] = (int)n;
            } else if (ty == LUA_TTABLE) {        /* tables go as JSON (for json/jsonb columns) */
                lua_getglobal(L, "require");
                lua_pushstring(L, "cjson");
                lua_call(L, 1, 1);
                lua_getfield(L, -1, "encode");
                lua_pushvalue(L, idx);
                if (lua_pcall(L, 1, 1, 0)) { op_free(op); return luaL_error(L, "app.db: parameter $%d: %s", i + 1, lua_tostring(L, -1)); }
                op->values[i] = strdup(lua_tostring(L, -1));
                lua_pop(L, 2);
            } else {
                op_free(op);
                return luaL_error(L, "app.db: parameter $%d: cannot send a %s", i + 1, lua_typename(L, ty));
            }
        }
    }
    if (t->db_conn) {                        /* inside app.db.transaction */
        op->pool = t->db_pool;
        op->conn = t->db_conn;
        op->pinned = 1;
    } else if (d->fixture && !read_only) {   /* test fixture transaction */
        op->pool = d->primary;
        op->conn = d->fixture;
        op->pinned = 1;
        if (kind == OP_QUERY) op->fix_step = 1;
    } else {
        op->pool = d->primary;
        if (read_only && d->nreplicas) {
            for (int k = 0; k < d->nreplicas; k++) {
                pgpool *r = d->replicas[(d->next_replica + k) % d->nreplicas];
                if (pgpool_healthy(r)) { op->pool = r; d->next_replica = (d->next_replica + k + 1) % d->nreplicas; break; }
            }
        }
        op->release_after = kind == OP_QUERY;
    }
    if (kind == OP_COMMIT || kind == OP_ROLLBACK) {
        if (!t->db_conn) { op_free(op); return luaL_error(L, "app.db: not in a transaction"); }
        op->savepoint = t->db_savepoint;
    }
    if (kind == OP_BEGIN && t->db_conn) { op_free(op); return luaL_error(L, "app.db.transaction: already in a transaction"); }
    if (kind == OP_BEGIN) {
        op->savepoint = op->pinned;       /* inside the fixture: a savepoint on its connection */
        if (!op->pinned) op->release_after = 0;
    }
    if (kind == OP_FIX_BEGIN) {
        if (d->fixture) { op_free(op); return luaL_error(L, "db fixture already open"); }
        op->conn = NULL;
        op->pinned = 0;
        op->release_after = 0;
    }
    if (kind == OP_FIX_ROLLBACK) {
        /* busy with a statement a timed-out test left behind: closing the connection rolls back */
        if (d->fixture && d->fix_op) fixture_close(a, d);
        if (!d->fixture) { op_free(op); lua_pushboolean(L, 1); return 1; }
        op->conn = d->fixture;
        op->pinned = 1;
    }
    if (!op->conn && kind == OP_QUERY && op->release_after && !opens_tx(op->sql)) {
        /* a statement on its own: share a connection in pipeline mode, no exclusive lease */
        op->release_after = 0;
        pgpool_query(op->pool, &op->job, op->sql, op->nparams, (const char *const *)op->values, op->lengths, query_cb, op);
        t->db_op = op;
        t->cancel = op_cancel;
        return task_yield(L, t);
    }
    if (!op->conn) {
        pgconn *c = pgpool_acquire(op->pool, &op->waiter, acquire_cb, op);
        if (!c) {                         /* parked until a connection frees up */
            t->db_op = op;
            t->cancel = op_cancel;
            return task_yield(L, t);
        }
        op->conn = c;
    }
    if (op->fix_step == 1 ? fix_send(op, "SAVEPOINT sluice_fixture_q") : send_op(op)) {
        if (!op->pinned && op->conn) pgpool_release(op->pool, op->conn);
        op_free(op);
        if (kind == OP_FIX_ROLLBACK) {    /* a broken fixture connection: closing it rolls back */
            fixture_close(a, d);
            lua_pushboolean(L, 1);
            return 1;
        }
        lua_pushnil(L);
        pgresult_push_error(L, NULL, PGPOOL_ERR_LOST ": the connection is busy or broken");
        return 2;
    }
    if (op->conn == d->fixture) d->fix_op = op;
    t->db_op = op;
    t->cancel = op_cancel;
    return task_yield(L, t);
}

static int l_query(lua_State *L) { return park(L, lua_touserdata(L, lua_upvalueindex(1)), OP_QUERY, 0, 2); }
static int l_read(lua_State *L) { return park(L, lua_touserdata(L, lua_upvalueindex(1)), OP_QUERY, 1, 2); }
static int l_begin(lua_State *L) { return park(L, lua_touserdata(L, lua_upvalueindex(1)), OP_BEGIN, 0, 1); }
static int l_commit(lua_State *L) { return park(L, lua_touserdata(L, lua_upvalueindex(1)), OP_COMMIT, 0, 1); }
static int l_rollback(lua_State *L) { return park(L, lua_touserdata(L, lua_upvalueindex(1)), OP_ROLLBACK, 0, 1); }

static int l_fix_begin(lua_State *L) { return park(L, lua_touserdata(L, lua_upvalueindex(1)), OP_FIX_BEGIN, 0, 1); }
static int l_fix_rollback(lua_State *L) { return park(L, lua_touserdata(L, lua_upvalueindex(1)), OP_FIX_ROLLBACK, 0, 1); }

/* core.db.listen(channel, fn): load time only; the C side reads the table when the state goes live. */
static int l_listen(lua_State *L)
{
    appstate *a = lua_touserdata(L, lua_upvalueindex(1));
    size_t n;
    const char *ch = luaL_checklstring(L, 1, &n);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    if (n == 0 || n > PGLISTEN_NAME_MAX || strlen(ch) != n)
        return luaL_argerror(L, 1, "a channel name of 1 to 63 bytes");
    if (task_current(a, L)) return luaL_error(L, "app.db.listen: call it when the script loads (at its top level), not in a handler");
    lua_getfield(L, LUA_REGISTRYINDEX, LISTEN_KEY);
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, LUA_REGISTRYINDEX, LISTEN_KEY);
    }
    lua_pushvalue(L, 1);
    lua_rawget(L, -2);
    int known = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (!known) {
        int count = 0;
        for (lua_pushnil(L); lua_next(L, -2); lua_pop(L, 1)) count++;
        if (count >= PGLISTEN_MAX_CHANNELS) return luaL_error(L, "app.db.listen: at most %d channels", PGLISTEN_MAX_CHANNELS);
    }
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2);
    lua_rawset(L, -3);           /* a second listen on a channel replaces its function */
    lua_pop(L, 1);
    return 0;
}

static int l_configured(lua_State *L)
{
    appstate *a = lua_touserdata(L, lua_upvalueindex(1));
    lua_pushboolean(L, a->w && a->w->db);
    return 1;
}

int luaopen_sluice_db(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"query", l_query},   {"read", l_read},         {"begin", l_begin},
        {"commit", l_commit}, {"rollback", l_rollback}, {"configured", l_configured},
        {"listen", l_listen},
        {"fixture_begin", l_fix_begin}, {"fixture_rollback", l_fix_rollback},
        {NULL, NULL},
    };
    lua_newtable(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    luaL_setfuncs(L, fns, 1);
    return 1;
}
