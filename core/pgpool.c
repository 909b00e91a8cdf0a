/* pgpool.c: per-worker PostgreSQL pool; every socket is driven by the worker's libev loop, nothing blocks. */
#include "pgpool_int.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util.h"

#define BACKOFF_MIN 0.1
#define BACKOFF_MAX 0.5   /* while down, a probe at least every 0.625 s (jitter): /ready turns 200 soon after */
#define SWEEP_EVERY 1.0

/* Kept under its old name for the callers (lua_db, tests); the parser lives in pgurl.c. */
int pgpool_parse_url(const char *url, pgpool_config *out, char *err, size_t errlen)
{
    return pgurl_parse(url, out, err, errlen);
}

int pgpool_worker_share(int limit, int workers, int index)
{
    if (workers <= 0 || limit <= 0) return 0;
    return limit / workers + (index < limit % workers ? 1 : 0);
}

/* ---------- connection bookkeeping ---------- */

static int category(enum cstate s)
{
    switch (s) {
    case CS_CONNECTING: case CS_SETUP: return 0;
    case CS_IDLE: return 1;
    case CS_LENT: case CS_QUERY: case CS_BROKEN: case CS_PIPE: return 2;
    default: return 3;
    }
}

static int *counter(pgpool *p, enum cstate s)
{
    int *cnt[4] = {&p->n_connecting, &p->n_idle, &p->n_lent, NULL};
    return cnt[category(s)];
}

static void idle_unlink(pgconn *c)
{
    pgpool *p = c->pool;
    if (c->iprev) c->iprev->inext = c->inext; else p->idle = c->inext;
    if (c->inext) c->inext->iprev = c->iprev;
    c->inext = c->iprev = NULL;
}

/* All state changes go through here so the counters cannot drift. */
void pgpool_set_state(pgconn *c, enum cstate s)
{
    pgpool *p = c->pool;
    int *a = counter(p, c->state), *b = counter(p, s);
    if (a != b) {
        if (a) PADD(*a, -1);
        if (b) PADD(*b, 1);
    }
    if (c->state == CS_IDLE && s != CS_IDLE) {
        idle_unlink(c);
    } else if (c->state != CS_IDLE && s == CS_IDLE) {
        c->inext = p->idle;
        if (p->idle) p->idle->iprev = c;
        p->idle = c;
    }
    c->state = s;
}

void pgpool_conn_watch(pgconn *c, int events)
{
    int fd = events ? PQsocket(c->pg) : -1;
    if (fd == c->fd && events == c->events) return;
    if (c->events) ev_io_stop(c->pool->loop, &c->io);
    c->fd = fd;
    c->events = fd >= 0 ? events : 0;
    if (c->events) {
        ev_io_set(&c->io, fd, c->events);
        ev_io_start(c->pool->loop, &c->io);
    }
}

static void *cancel_thread(void *arg)
{
    char buf[256];
    PQcancel(arg, buf, sizeof buf);
    PQfreeCancel(arg);
    return NULL;
}

/* PQcancel opens a new connection and waits for it: run it on a short-lived detached thread so the
 * loop never blocks. Rare by design (statement timeouts and abandoned queries only). */
void pgpool_cancel_async(PGconn *pg)
{
    PGcancel *cn = PQgetCancel(pg);
    if (!cn) return;
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, cancel_thread, cn) != 0) PQfreeCancel(cn); /* server-side timeout remains */
    pthread_attr_destroy(&attr);
}

void pgpool_kick(pgpool *p)
{
    if (!ev_is_active(&p->kick)) {
        ev_timer_set(&p->kick, 0., 0.);
        ev_timer_start(p->loop, &p->kick);
    }
}

/* Close and free c. Never calls a user callback; the caller must not touch c afterwards. */
void pgpool_conn_close(pgconn *c)
{
    pgpool *p = c->pool;
    pgpool_conn_watch(c, 0);
    ev_timer_stop(p->loop, &c->timer);
    if (c->state == CS_QUERY || c->state == CS_RESET || c->state == CS_PING || (c->state == CS_PIPE && c->depth) ||
        (c->state != CS_CONNECTING && c->state != CS_SETUP && PQstatus(c->pg) == CONNECTION_OK &&
         PQtransactionStatus(c->pg) == PQTRANS_ACTIVE))
        pgpool_cancel_async(c->pg);
    if (c->state == CS_IDLE) idle_unlink(c);
    int *cnt = counter(p, c->state);
    if (cnt) PADD(*cnt, -1);
    if (c->res) PQclear(c->res);
    pgstmt_free(c->stmts);
    PQfinish(c->pg);
    if (c->prev) c->prev->next = c->next; else p->all = c->next;
    if (c->next) c->next->prev = c->prev;
    PADD(p->n_total, -1);
    free(c);
    if (p->n_waiting && !p->closing) pgpool_kick(p);
}

void pgpool_conn_to_idle(pgconn *c)
{
    pgpool *p = c->pool;
    ev_timer_stop(p->loop, &c->timer);
    c->last_used = ev_now(p->loop);
    c->flushing = 0;
    pgpool_set_state(c, CS_IDLE);
    pgpool_conn_watch(c, EV_READ); /* an idle socket turning readable means the server closed it or sent a notice */
    if (p->n_waiting) pgpool_kick(p);
}

void pgpool_first_line(char *dst, size_t n, const char *msg)
{
    if (!msg || !*msg) msg = "unknown error";
    size_t len = strcspn(msg, "\n");
    if (len >= n) len = n - 1;
    memcpy(dst, msg, len);
    dst[len] = 0;
}

static void fail_waiters(pgpool *p, const char *err)
{
    pgpool_waiter *w;
    while ((w = p->wq_head)) {
        pgpool_cancel(w);
        pgpool_waited(p, w, ev_now(p->loop));
        w->cb(w->ud, NULL, err);
    }
}

static int start_connect(pgpool *p);

/* A connection died on its own (EOF, error, no answer to a ping). If nothing else is open, or
 * only connections that may be just as dead, open one right away: its failure is what marks the
 * pool down (and /ready 503) without waiting for a query or the next health check. */
void pgpool_probe_soon(pgpool *p)
{
    if (p->closing || p->cap <= 0 || p->retry_pending || p->n_connecting > 0 || p->n_total >= p->cap) return;
    p->last_probe = ev_now(p->loop);
    start_connect(p);
}

/* Counts a lost connection, closes it and probes the server. */
static void conn_lost(pgconn *c)
{
    pgpool *p = c->pool;
    pgpool_count_error(p, "08");
    pgpool_conn_close(c);
    pgpool_probe_soon(p);
}

static void connect_failed(pgconn *c, const char *msg)
{
    pgpool *p = c->pool;
    char line[200];
    pgpool_first_line(line, sizeof line, msg);
    /* libpq names the server in some failures but not all: always say which server it was. */
    const char *host = c->pg ? PQhost(c->pg) : NULL, *port = c->pg ? PQport(c->pg) : NULL;
    if (host && *host && !strstr(line, "connection to server"))
        snprintf(p->last_err, sizeof p->last_err, PGPOOL_ERR_UNREACHABLE ": %s%s%s: %s", host, host[0] == '/' ? "/.s.PGSQL." : ":",
                 port && *port ? port : "5432", line);
    else
        snprintf(p->last_err, sizeof p->last_err, PGPOOL_ERR_UNREACHABLE ": %s", line);
    pgpool_count_error(p, "08"); /* libpq gives no SQLSTATE for a failed connect */
    /* Back off before the next attempt: doubling, jittered, so N workers do not reconnect in lockstep. */
    p->backoff = p->backoff ? fmin(p->backoff * 2, BACKOFF_MAX) : BACKOFF_MIN;
    double delay = p->backoff * (0.75 + 0.5 * rand_r(&p->seed) / (double)RAND_MAX);
    ev_timer_stop(p->loop, &p->retry);
    ev_timer_set(&p->retry, delay, 0.);
    ev_timer_start(p->loop, &p->retry);
    p->retry_pending = 1;
    pgpool_conn_close(c);
    if (p->n_total - p->n_connecting == 0) { /* nothing open: fail fast instead of waiting pool_timeout */
        PSET(p->down, 1);
        fail_waiters(p, p->last_err);
    }
}

static void conn_ready(pgconn *c)
{
    pgpool *p = c->pool;
    ev_tstamp now = ev_now(p->loop);
    PSET(p->down, 0);
    p->backoff = 0;
    c->last_check = now;
    c->expires = p->cfg.max_lifetime > 0
                     ? now + p->cfg.max_lifetime * (1 - 0.1 * rand_r(&p->seed) / (double)RAND_MAX)
                     : INFINITY;
    pgpool_conn_to_idle(c);
}

static void quiet_notice(void *arg, const char *msg) { (void)arg; (void)msg; }

static void conn_io_cb(struct ev_loop *loop, ev_io *w, int revents);
static void conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);

/* Returns -1 when nothing was started (out of memory, or the attempt failed at once). */
static int start_connect(pgpool *p)
{
    pgconn *c = calloc(1, sizeof *c);
    if (!c) return -1;
    c->pool = p;
    c->fd = -1;
    c->state = CS_CONNECTING;
    PADD(p->n_connecting, 1);
    PADD(p->n_total, 1);
    c->next = p->all;
    if (p->all) p->all->prev = c;
    p->all = c;
    ev_init(&c->io, conn_io_cb);
    ev_init(&c->timer, conn_timer_cb);
    if (p->cfg.stmt_cache_size > 0 && !p->stmt_off) /* NULL: unnamed statements only */
        c->stmts = pgstmt_new(p->cfg.stmt_cache_size, &p->stmt_cnt, (unsigned)rand_r(&p->seed) ^ (unsigned)(uintptr_t)c);
    c->pg = PQconnectStart(p->cfg.conninfo);
    if (!c->pg || PQstatus(c->pg) == CONNECTION_BAD) {
        connect_failed(c, c->pg ? PQerrorMessage(c->pg) : "out of memory");
        return -1;
    }
    PQsetnonblocking(c->pg, 1);
    PQsetNoticeProcessor(c->pg, quiet_notice, NULL);
    pgpool_conn_watch(c, EV_WRITE); /* libpq: behave as if PQconnectPoll had returned PGRES_POLLING_WRITING */
    if (p->cfg.connect_timeout > 0) {
        ev_timer_set(&c->timer, p->cfg.connect_timeout, 0.);
        ev_timer_start(p->loop, &c->timer);
    }
    return 0;
}

static int send_and_watch(pgconn *c, const char *sql)
{
    if (!PQsendQuery(c->pg, sql)) return -1;
    int r = PQflush(c->pg);
    if (r < 0) return -1;
    c->flushing = r;
    pgpool_conn_watch(c, r ? EV_READ | EV_WRITE : EV_READ);
    return 0;
}

static void connected(pgconn *c)
{
    pgpool *p = c->pool;
    char sql[512];
    int n = 0;
    if (p->cfg.statement_timeout > 0)
        n += snprintf(sql + n, sizeof sql - (size_t)n, "SET statement_timeout = %.0f;",
                      ceil(p->cfg.statement_timeout * 1000));
    if (p->cfg.search_path[0]) {
        char ident[300];
        size_t o = 0;
        ident[o++] = '"';
        for (const char *s = p->cfg.search_path; *s && o < sizeof ident - 3; s++) {
            if (*s == '"') ident[o++] = '"';
            ident[o++] = *s;
        }
        ident[o++] = '"';
        ident[o] = 0;
        n += snprintf(sql + n, sizeof sql - (size_t)n, "SET search_path TO %s;", ident);
    }
    if (!n) {
        pgpool_set_state(c, CS_SETUP);
        conn_ready(c);
        return;
    }
    pgpool_set_state(c, CS_SETUP);
    if (send_and_watch(c, sql) < 0) connect_failed(c, PQerrorMessage(c->pg));
}

/* A finished statement on a connection the pool drives itself (setup, ping, rollback). */
static void internal_done(pgconn *c, int ok)
{
    PGresult *res = c->res;
    c->res = NULL;
    char msg[200] = "";
    if (res && !ok) pgpool_first_line(msg, sizeof msg, PQresultErrorMessage(res));
    if (res) PQclear(res);
    if (c->state == CS_SETUP) {
        if (ok) conn_ready(c);
        else connect_failed(c, msg[0] ? msg : PQerrorMessage(c->pg));
    } else if (ok && PQtransactionStatus(c->pg) == PQTRANS_IDLE && c->pool->n_total <= c->pool->cap) {
        c->last_check = ev_now(c->pool->loop);
        if (c->state == CS_RESET) c->last_used = c->last_check;
        ev_tstamp used = c->last_used;
        pgpool_conn_to_idle(c);
        c->last_used = used; /* a ping is not a use: keep the idle timeout running */
    } else if (!ok || PQstatus(c->pg) != CONNECTION_OK) {
        conn_lost(c);     /* the ping or ROLLBACK failed: the server may be gone */
    } else {
        pgpool_conn_close(c);
    }
}

int pgpool_result_ok(const PGresult *r)
{
    ExecStatusType s = PQresultStatus(r);
    return s == PGRES_TUPLES_OK || s == PGRES_COMMAND_OK || s == PGRES_EMPTY_QUERY;
}

static void op_lost(pgconn *c, const char *msg)
{
    char line[200];
    pgpool_first_line(line, sizeof line, msg);
    ev_timer_stop(c->pool->loop, &c->timer);
    pgpool_conn_watch(c, 0);
    if (c->state == CS_SETUP) connect_failed(c, line);
    else conn_lost(c);
}

static void op_io(pgconn *c, int revents)
{
    PGconn *pg = c->pg;
    if ((revents & EV_READ) && !PQconsumeInput(pg)) {
        op_lost(c, PQerrorMessage(pg));
        return;
    }
    if (c->flushing) {
        int r = PQflush(pg);
        if (r < 0) {
            op_lost(c, PQerrorMessage(pg));
            return;
        }
        c->flushing = r;
        pgpool_conn_watch(c, r ? EV_READ | EV_WRITE : EV_READ);
    }
    while (!PQisBusy(pg)) {
        PGresult *r = PQgetResult(pg);
        if (!r) break;
        ExecStatusType s = PQresultStatus(r);
        if (s == PGRES_COPY_IN || s == PGRES_COPY_OUT || s == PGRES_COPY_BOTH) {
            PQclear(r); /* the protocol would wait for COPY data forever: make the connection unusable */
            op_lost(c, "COPY is not supported through the pool");
            return;
        }
        if (!c->res) c->res = r;
        else if (pgpool_result_ok(c->res) && !pgpool_result_ok(r)) { PQclear(c->res); c->res = r; }
        else PQclear(r);
    }
    if (PQisBusy(pg)) return;
    /* PQgetResult returned NULL: the statement is complete. */
    ev_timer_stop(c->pool->loop, &c->timer);
    pgpool_conn_watch(c, 0);
    internal_done(c, c->res && pgpool_result_ok(c->res));
}

static void conn_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    pgconn *c = container_of(w, pgconn, io);
    switch (c->state) {
    case CS_CONNECTING:
        /* libpq may close and reopen its socket between polls (next address, SSL retry), possibly under
         * the same fd number: re-register unconditionally so libev never watches a stale descriptor. */
        switch (PQconnectPoll(c->pg)) {
        case PGRES_POLLING_READING: pgpool_conn_watch(c, 0); pgpool_conn_watch(c, EV_READ); break;
        case PGRES_POLLING_WRITING: pgpool_conn_watch(c, 0); pgpool_conn_watch(c, EV_WRITE); break;
        case PGRES_POLLING_OK: connected(c); break;
        default: connect_failed(c, PQerrorMessage(c->pg)); break;
        }
        break;
    case CS_IDLE:
        /* An idle socket turns readable when the server closes it (shutdown, restart, a
         * terminated backend: often an ErrorResponse, then EOF) or sends something unasked
         * (NOTICE, ParameterStatus, NOTIFY). Consume it; EOF or an error means it is dead. */
        if (!PQconsumeInput(c->pg) || PQstatus(c->pg) == CONNECTION_BAD) {
            conn_lost(c);
        } else {
            PGnotify *n;
            while ((n = PQnotifies(c->pg))) PQfreemem(n); /* also parses notices and parameter changes */
            if (PQstatus(c->pg) == CONNECTION_BAD) conn_lost(c);
        }
        break;
    case CS_SETUP: case CS_PING: case CS_RESET:
        op_io(c, revents);
        break;
    case CS_QUERY: case CS_PIPE:
        pgpipe_io(c, revents);
        break;
    default:
        pgpool_conn_watch(c, 0);
        break;
    }
}

static void conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    pgconn *c = container_of(w, pgconn, timer);
    pgpool *p = c->pool;
    char err[160];
    switch (c->state) {
    case CS_CONNECTING: case CS_SETUP:
        snprintf(err, sizeof err, "timeout expired after %g s (connect_timeout)", p->cfg.connect_timeout);
        connect_failed(c, err);
        break;
    case CS_QUERY: case CS_PIPE: /* the server's work is cancelled; a lent connection is discarded on release */
        pgpipe_timeout(c);
        break;
    default: /* a ROLLBACK or ping that does not answer */
        conn_lost(c);
        break;
    }
}

/* ---------- waiters ---------- */

static void wait_rearm(pgpool *p)
{
    ev_timer_stop(p->loop, &p->wait_timer);
    if (!p->wq_head || p->cfg.pool_timeout <= 0) return;
    double left = p->wq_head->since + p->cfg.pool_timeout - ev_now(p->loop);
    ev_timer_set(&p->wait_timer, left > 0 ? left : 0., 0.);
    ev_timer_start(p->loop, &p->wait_timer);
}

void pgpool_cancel(pgpool_waiter *w)
{
    pgpool *p = w->pool;
    if (!p) return;
    int was_head = p->wq_head == w;
    if (w->prev) w->prev->next = w->next; else p->wq_head = w->next;
    if (w->next) w->next->prev = w->prev; else p->wq_tail = w->prev;
    w->next = w->prev = NULL;
    w->pool = NULL;
    PADD(p->n_waiting, -1);
    if (was_head) wait_rearm(p);
}

void pgpool_enqueue(pgpool *p, pgpool_waiter *w, pgpool_acquire_cb cb, void *ud)
{
    w->cb = cb;
    w->ud = ud;
    w->since = ev_now(p->loop);
    w->pool = p;
    w->next = NULL;
    w->prev = p->wq_tail;
    if (p->wq_tail) p->wq_tail->next = w; else p->wq_head = w;
    p->wq_tail = w;
    PADD(p->n_waiting, 1);
    if (p->n_waiting == 1) wait_rearm(p);
    pgpool_kick(p);
}

static void wait_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    pgpool *p = container_of(t, pgpool, wait_timer);
    ev_tstamp now = ev_now(loop);
    char err[200];
    snprintf(err, sizeof err, PGPOOL_ERR_TIMEOUT ": no connection free after %g s (connection_limit=%d, %d on this worker)",
             p->cfg.pool_timeout, p->cfg.connection_limit, p->cap);
    pgpool_waiter *w;
    while ((w = p->wq_head) && now - w->since >= p->cfg.pool_timeout - 1e-3) {
        pgpool_cancel(w);
        PADD(p->timeouts, 1);
        pgpool_waited(p, w, now);
        w->cb(w->ud, NULL, err);
    }
    wait_rearm(p);
}

pgconn *pgpool_take_idle(pgpool *p)
{
    pgconn *c;
    ev_tstamp now = ev_now(p->loop);
    while ((c = p->idle)) {
        if (now < c->expires && PQstatus(c->pg) == CONNECTION_OK) break;
        pgpool_conn_close(c); /* past max_lifetime (or dead): retire instead of lending */
    }
    if (!c) return NULL;
    pgpool_conn_watch(c, 0);
    pgpool_set_state(c, CS_LENT);
    PADD(p->acquired, 1);
    return c;
}

static void kick_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    pgpool *p = container_of(t, pgpool, kick);
    if (p->cap <= 0) {
        char err[200];
        snprintf(err, sizeof err, PGPOOL_ERR_UNREACHABLE ": this worker has no connections (connection_limit=%d is below the worker count)",
                 p->cfg.connection_limit);
        fail_waiters(p, err);
        return;
    }
    if (p->down) {
        fail_waiters(p, p->last_err);
        return;
    }
    pgpool_waiter *w;
    pgconn *c;
    for (;;) {
        if (!(w = p->wq_head)) break;
        if (p->idle && (c = pgpool_take_idle(p))) {
            pgpool_cancel(w);
            pgpool_waited(p, w, ev_now(loop));
            w->cb(w->ud, c, NULL);
        } else if (!pgpipe_share(p, w)) {
            break;
        }
    }
    if (p->retry_pending || p->down) return;
    /* Open only as many connections as there are unserved waiters, never above the cap. */
    while (p->n_waiting > p->n_connecting && p->n_total < p->cap && !p->retry_pending)
        if (start_connect(p) < 0) break;
}

static void retry_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    pgpool *p = container_of(t, pgpool, retry);
    p->retry_pending = 0;
    /* While down, one probe at a time, even without waiters (they are failed fast, so none queue).
     * Also with no connection left: a probe that failed while another connection was still open
     * did not mark the pool down, and the last connection's loss found this retry pending, so
     * nothing else would find out whether the server is there (a /ready that stayed 200). */
    if (p->down || p->n_total == 0) {
        if (p->n_connecting == 0 && p->n_total < p->cap) start_connect(p);
    } else if (p->n_waiting) {
        pgpool_kick(p);
    }
}

static void sweep_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    pgpool *p = container_of(t, pgpool, sweep);
    ev_tstamp now = ev_now(loop);
    const pgpool_config *cfg = &p->cfg;
    pgconn *c = p->idle, *next;
    for (; c; c = next) {
        next = c->inext;
        /* with health checks on, the last connection stays (pinged) rather than idling out, so the
         * pool keeps knowing whether the server is there without reconnecting every interval */
        int keep = cfg->health_interval > 0 && p->n_total == 1;
        if ((cfg->idle_timeout > 0 && now - c->last_used >= cfg->idle_timeout && !keep) || now >= c->expires ||
            p->n_total > p->cap) {
            pgpool_conn_close(c);
        } else if (cfg->health_interval > 0 && now - c->last_check >= cfg->health_interval &&
                   now - c->last_used >= cfg->health_interval) {
            pgpool_set_state(c, CS_PING);
            if (send_and_watch(c, "") < 0) { /* empty query: the cheapest round trip */
                pgpool_conn_close(c);
            } else {
                ev_timer_set(&c->timer, cfg->connect_timeout > 0 ? cfg->connect_timeout : 5., 0.);
                ev_timer_start(loop, &c->timer);
            }
        }
    }
    /* nothing open (never connected, retired, or lost) and not known down: check the server */
    if (cfg->health_interval > 0 && !p->down && !p->retry_pending && p->n_total == 0 && p->cap > 0 &&
        now - p->last_probe >= cfg->health_interval) {
        p->last_probe = now;
        start_connect(p);
    }
}

/* ---------- public API ---------- */

pgpool *pgpool_new(struct ev_loop *loop, const pgpool_config *cfg, int max_conns)
{
    pgpool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->loop = loop;
    p->cfg = *cfg;
    PSET(p->cap, max_conns > 0 ? max_conns : 0);
    p->pipe_max = PIPE_DEFAULT; /* pipe_pick keeps statements from queueing behind slow ones */
    p->seed = (unsigned)time(NULL) ^ (unsigned)(uintptr_t)p;
    ev_init(&p->wait_timer, wait_timer_cb);
    ev_init(&p->retry, retry_cb);
    ev_init(&p->kick, kick_cb);
    ev_timer_init(&p->sweep, sweep_cb, SWEEP_EVERY, SWEEP_EVERY);
    ev_timer_start(loop, &p->sweep);
    ev_unref(loop); /* the housekeeping timer alone should not keep ev_run alive */
    return p;
}

void pgpool_free(pgpool *p)
{
    if (!p) return;
    p->closing = 1;
    fail_waiters(p, PGPOOL_ERR_CLOSED);
    for (pgconn *c = p->all; c;) {
        if ((c->state == CS_PIPE || c->state == CS_QUERY) && c->depth) {
            pgpipe_fail(c, NULL, PGPOOL_ERR_CLOSED, 1);
            c = p->all; /* the callbacks may have released connections: rescan */
        } else {
            c = c->next;
        }
    }
    while (p->all) pgpool_conn_close(p->all);
    ev_timer_stop(p->loop, &p->wait_timer);
    ev_timer_stop(p->loop, &p->retry);
    ev_timer_stop(p->loop, &p->kick);
    ev_ref(p->loop);
    ev_timer_stop(p->loop, &p->sweep);
    free(p);
}

void pgpool_set_cap(pgpool *p, int max_conns)
{
    PSET(p->cap, max_conns > 0 ? max_conns : 0);
    pgconn *c = p->idle;
    while (c && c->inext) c = c->inext; /* least recently used first */
    while (c && p->n_total > p->cap) {
        pgconn *prev = c->iprev;
        pgpool_conn_close(c);
        c = prev;
    }
    if (p->n_waiting) pgpool_kick(p);
}

pgconn *pgpool_acquire(pgpool *p, pgpool_waiter *w, pgpool_acquire_cb cb, void *ud)
{
    if (!p->n_waiting && !p->down && p->idle) {
        pgconn *c = pgpool_take_idle(p);
        if (c) {
            pgpool_waited_none(p);
            return c;
        }
    }
    pgpool_enqueue(p, w, cb, ud);
    return NULL;
}

void pgpool_release(pgpool *p, pgconn *c)
{
    if (!c) return;
    if (c->state == CS_QUERY) { /* the caller gave up on its query: no callback, cancel on the server */
        pgpool_conn_close(c);
        return;
    }
    if (c->state != CS_LENT || p->closing || PQstatus(c->pg) != CONNECTION_OK || p->n_total > p->cap ||
        ev_now(p->loop) >= c->expires) {
        pgpool_conn_close(c);
        return;
    }
    switch (PQtransactionStatus(c->pg)) {
    case PQTRANS_IDLE:
        pgpool_conn_to_idle(c);
        break;
    case PQTRANS_INTRANS: case PQTRANS_INERROR:
        /* Never lend a connection mid-transaction: roll back first, in the background. */
        pgpool_set_state(c, CS_RESET);
        if (send_and_watch(c, "ROLLBACK") < 0) {
            pgpool_conn_close(c);
        } else {
            ev_timer_set(&c->timer, p->cfg.statement_timeout > 0 ? p->cfg.statement_timeout + STMT_GRACE : 30., 0.);
            ev_timer_start(p->loop, &c->timer);
        }
        break;
    default:
        pgpool_conn_close(c);
        break;
    }
}

PGconn *pgconn_pg(pgconn *c) { return c->pg; }
