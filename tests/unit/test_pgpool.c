/* test_pgpool: the PostgreSQL pool against a real server (DATABASE_URL), plus a private server for restarts.
 * Runs under ASan on a loaded machine too: waits for a state poll it (run_until with a generous
 * bound), and a time bound only separates the behaviour from its failure by a wide margin. */
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../core/pgpool.h"
#include "tap.h"

static struct ev_loop *loop;
static pgpool *watched;       /* the tick samples this pool's size */
static int max_size, grant_seq;

static void tick_cb(struct ev_loop *l, ev_timer *t, int revents)
{
    if (!watched) return;
    pgpool_stats_t st;
    pgpool_stats(watched, &st);
    if (st.size > max_size) max_size = st.size;
}

/* Run the loop until *flag is set or secs pass; a 5 ms tick keeps ev_run from blocking forever. */
static int run_until(const int *flag, double secs)
{
    static ev_timer tick;
    ev_timer_init(&tick, tick_cb, 0.005, 0.005);
    ev_timer_start(loop, &tick);
    double end = ev_time() + secs;
    while ((!flag || !*flag) && ev_time() < end) ev_run(loop, EVRUN_ONCE);
    ev_timer_stop(loop, &tick);
    return flag ? *flag : 0;
}

typedef struct acq {
    pgpool_waiter w;
    pgpool *p;
    pgconn *c;
    char err[256];
    int done, order;
    double at;
    const char *then_sql; /* when set: run it on the connection, then release */
    int qdone;
} acq;

typedef struct q {
    PGresult *res;
    char err[256];
    int done;
    double at;
} q;

static void q_cb(void *ud, PGresult *res, const char *err)
{
    q *x = ud;
    x->res = res;
    snprintf(x->err, sizeof x->err, "%s", err ? err : "");
    x->done = 1;
    x->at = ev_time();
}

static void chain_cb(void *ud, PGresult *res, const char *err)
{
    acq *a = ud;
    if (res) PQclear(res);
    a->qdone = err ? -1 : 1;
    pgpool_release(a->p, a->c);
}

static void got(acq *a, pgconn *c, const char *err)
{
    a->c = c;
    snprintf(a->err, sizeof a->err, "%s", err ? err : "");
    a->done = 1;
    a->order = ++grant_seq;
    a->at = ev_time();
    if (watched) {
        pgpool_stats_t st;
        pgpool_stats(watched, &st);
        if (st.size > max_size) max_size = st.size;
    }
    if (c && a->then_sql && pgconn_query(c, a->then_sql, 0, NULL, NULL, chain_cb, a) < 0) a->qdone = -1;
}

static void acq_cb(void *ud, pgconn *c, const char *err) { got(ud, c, err); }

static void acquire(pgpool *p, acq *a, const char *then_sql)
{
    memset(a, 0, sizeof *a);
    a->p = p;
    a->then_sql = then_sql;
    pgconn *c = pgpool_acquire(p, &a->w, acq_cb, a);
    if (c) got(a, c, NULL);
}

static pgconn *acquire_wait(pgpool *p)
{
    acq a;
    acquire(p, &a, NULL);
    run_until(&a.done, 30);
    if (!a.done) pgpool_cancel(&a.w); /* a is on this stack frame: never leave it queued */
    if (!a.c) printf("# acquire failed: %s\n", a.err);
    return a.c;
}

/* Runs the loop until p's stats satisfy pred (or secs pass); returns whether they did. */
static int run_until_stats(pgpool *p, int (*pred)(const pgpool_stats_t *, int), int arg, double secs)
{
    pgpool_stats_t st;
    for (double end = ev_time() + secs;; run_until(NULL, 0.02)) {
        pgpool_stats(p, &st);
        if (pred(&st, arg)) return 1;
        if (ev_time() >= end) return 0;
    }
}
static int size_is(const pgpool_stats_t *st, int n) { return st->size == n; }
static int idle_is(const pgpool_stats_t *st, int n) { return st->idle == n; }
static int down_and_empty(const pgpool_stats_t *st, int unused) { (void)unused; return st->down && st->size == 0; }

/* Run sql on c and wait; returns the result (caller clears) or NULL with x->err set. */
static PGresult *query_wait(pgconn *c, q *x, const char *sql, int n, const char *const *vals, double secs)
{
    memset(x, 0, sizeof *x);
    if (pgconn_query(c, sql, n, vals, NULL, q_cb, x) < 0) {
        snprintf(x->err, sizeof x->err, "send failed: %s", PQerrorMessage(pgconn_pg(c)));
        return NULL;
    }
    run_until(&x->done, secs);
    return x->res;
}

/* First value of a one-row query on a fresh connection from p, "" on error. */
static const char *scalar(pgpool *p, const char *sql)
{
    static char out[256];
    out[0] = 0;
    pgconn *c = acquire_wait(p);
    if (!c) return out;
    q x;
    PGresult *r = query_wait(c, &x, sql, 0, NULL, 10);
    if (r && PQntuples(r) > 0) snprintf(out, sizeof out, "%s", PQgetvalue(r, 0, 0));
    else if (x.err[0]) printf("# %s: %s\n", sql, x.err);
    if (r) PQclear(r);
    pgpool_release(p, c);
    return out;
}

static pgpool_config base_cfg;

static pgpool *pool(int cap, double pool_timeout, double stmt_timeout)
{
    pgpool_config cfg = base_cfg;
    cfg.pool_timeout = pool_timeout;
    cfg.statement_timeout = stmt_timeout;
    return pgpool_new(loop, &cfg, cap);
}

static int count_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d) return -1;
    while (readdir(d)) n++;
    closedir(d);
    return n;
}

/* URL parsing is tested in test_pgurl.c. */
static void test_worker_share(void)
{
    int sum = 0;
    for (int i = 0; i < 4; i++) sum += pgpool_worker_share(50, 4, i);
    ok(sum == 50 && pgpool_worker_share(50, 4, 0) == 13 && pgpool_worker_share(50, 4, 3) == 12, "worker share sums to the limit");
    is_int(pgpool_worker_share(3, 4, 3), 0, "worker share: 0 when limit < workers");
}

static void test_params(void)
{
    pgpool *p = pool(2, 5, 30);
    pgconn *c = acquire_wait(p);
    const char *evil = "Robert'); DROP TABLE students;-- \"q\" \\";
    const char *vals[] = {evil, NULL, "41", evil};
    q x;
    PGresult *r = query_wait(c, &x, "select $1::text as a, $2::text as b, $3::int + 1 as c, $1 = $4 as same", 4, vals, 5);
    ok(r && PQntuples(r) == 1, "params: one row (%s)", x.err);
    if (r && PQntuples(r) == 1) {
        is_str(PQgetvalue(r, 0, 0), evil, "params: quotes and backslashes arrive verbatim");
        ok(PQgetisnull(r, 0, 1), "params: NULL value is SQL NULL");
        is_str(PQgetvalue(r, 0, 2), "42", "params: int parameter");
        is_str(PQgetvalue(r, 0, 3), "t", "params: same text compares equal");
    }
    if (r) PQclear(r);
    r = query_wait(c, &x, "select nosuch from nowhere", 0, NULL, 5);
    ok(r && PQresultStatus(r) == PGRES_FATAL_ERROR, "SQL error: res is the error result");
    ok(r && !strcmp(PQresultErrorField(r, PG_DIAG_SQLSTATE), "42P01"), "SQL error: sqlstate 42P01");
    is_str(x.err, "relation \"nowhere\" does not exist", "SQL error: err is the primary message");
    if (r) PQclear(r);
    r = query_wait(c, &x, "select 1", 0, NULL, 5);
    ok(r && PQresultStatus(r) == PGRES_TUPLES_OK, "connection usable after an SQL error");
    if (r) PQclear(r);
    pgpool_release(p, c);
    pgpool_free(p);
}

static void test_cap_fifo(void)
{
    enum { N = 8, CAP = 3 };
    pgpool *p = pool(CAP, 10, 30);
    watched = p;
    max_size = 0;
    grant_seq = 0;
    acq a[N];
    double t0 = ev_time();
    for (int i = 0; i < N; i++) acquire(p, &a[i], "select pg_sleep(0.1)");
    pgpool_stats_t st;
    pgpool_stats(p, &st);
    is_int(st.waiting, N, "cap: all acquirers queue on an empty pool");
    int all = 0;
    for (double end = ev_time() + 10; !all && ev_time() < end;) {
        run_until(NULL, 0.02);
        all = 1;
        for (int i = 0; i < N; i++) all &= a[i].qdone != 0;
    }
    ok(all, "cap: all %d acquirers were served", N);
    int fifo = 1, errs = 0;
    for (int i = 0; i < N; i++) {
        fifo &= a[i].order == i + 1;
        errs += a[i].qdone != 1;
    }
    ok(fifo, "cap: waiters served in FIFO order");
    is_int(errs, 0, "cap: every query succeeded");
    ok(max_size <= CAP && max_size > 0, "cap: pool never above %d connections (peak %d)", CAP, max_size);
    double took = ev_time() - t0;
    /* the lower bound shows the rounds (the cap itself is max_size above); the upper one only a stall */
    ok(took >= 0.29 && took < 8, "cap: 8 x 100 ms over 3 connections took %.2f s (>= 3 rounds)", took);
    pgpool_stats(p, &st);
    ok(st.acquired >= N && st.in_use == 0 && st.waiting == 0, "stats: acquired %llu, none in use or waiting",
       (unsigned long long)st.acquired);
    watched = NULL;
    pgpool_free(p);
}

static void test_timeout_cancel(void)
{
    pgpool *p = pool(1, 0.3, 30);
    /* pool_timeout also bounds the wait for the pool's first connection to open, which a loaded
     * machine under ASan can take longer than 0.3 s to do: ask again until it is lent */
    pgconn *held = NULL;
    for (int i = 0; i < 100 && !held; i++) held = acquire_wait(p);
    ok(held != NULL, "pool_timeout: the pool's one connection is lent");
    pgpool_stats_t st;
    pgpool_stats(p, &st);
    uint64_t timeouts0 = st.timeouts;
    acq b;
    double t0 = ev_time();
    acquire(p, &b, NULL);
    run_until(&b.done, 10);
    double took = ev_time() - t0;
    ok(b.done && !b.c, "pool_timeout: the waiter fails");
    if (!b.done) pgpool_cancel(&b.w);
    ok(strncmp(b.err, "pool timeout: no connection free after 0.3 s (connection_limit=", 62) == 0, "pool_timeout: message (%s)", b.err);
    /* not early; late only by what a loaded machine adds (10 x pool_timeout would be 3 s) */
    ok(took >= 0.28 && took < 2.0, "pool_timeout: fired after %.3f s", took);
    pgpool_stats(p, &st);
    is_int(st.timeouts - timeouts0, 1, "stats: one timeout");

    acq c1, c2, c3;
    grant_seq = 0;
    acquire(p, &c1, NULL);
    acquire(p, &c2, NULL);
    acquire(p, &c3, NULL);
    pgpool_cancel(&c1.w);
    pgpool_cancel(&c1.w); /* idempotent */
    pgpool_release(p, held);
    run_until(&c2.done, 10);
    ok(c2.c && !c1.done && !c3.done, "cancel: the cancelled waiter is skipped, the next one is served");
    pgpool_release(p, c2.c);
    run_until(&c3.done, 10);
    ok(c3.c != NULL, "cancel: the third waiter gets the connection after the second");
    run_until(NULL, 0.4);
    ok(!c1.done, "cancel: a cancelled waiter's callback never runs (no timeout either)");

    acq d;
    acquire(p, &d, NULL); /* queued behind c3's connection */
    pgpool_free(p);
    ok(d.done && !d.c && !strcmp(d.err, "pool closed"), "free: a pending waiter fails with 'pool closed'");
}

static int ticks;
static double max_late, next_due;
static void beat_cb(struct ev_loop *l, ev_timer *t, int revents)
{
    double now = ev_time(), late = now - next_due;
    if (late > max_late) max_late = late;
    next_due = now + 0.05;
    ticks++;
}

static void test_nonblocking_and_timeouts(void)
{
    /* A 2 s query while a 50 ms timer runs: a loop blocked in the query would fire it once, about
     * 2 s late; a loaded machine delays ticks by tens of ms. The bounds sit far between the two. */
    pgpool *nb = pool(1, 5, 30);
    pgconn *c = acquire_wait(nb);
    ev_timer beat;
    ev_timer_init(&beat, beat_cb, 0.05, 0.05);
    ticks = 0;
    max_late = 0;
    next_due = ev_time() + 0.05;
    ev_timer_start(loop, &beat);
    q x;
    double t0 = ev_time();
    const char *vals[] = {"2"};
    PGresult *r = query_wait(c, &x, "select pg_sleep($1)", 1, vals, 15);
    ev_timer_stop(loop, &beat);
    ok(r && PQresultStatus(r) == PGRES_TUPLES_OK, "slow query completes (%s)", x.err);
    ok(ticks >= 10 && max_late < 1.0, "slow query: a 50 ms timer kept firing (%d ticks, worst %.1f ms late)", ticks,
       max_late * 1000);
    if (r) PQclear(r);
    pgpool_release(nb, c);
    pgpool_free(nb);

    pgpool *p = pool(2, 5, 0.5);
    c = acquire_wait(p);
    t0 = ev_time();
    r = query_wait(c, &x, "select pg_sleep(3)", 0, NULL, 5);
    double took = ev_time() - t0;
    ok(r && !strcmp(PQresultErrorField(r, PG_DIAG_SQLSTATE), "57014"), "statement_timeout: server cancels with 57014 (%s)", x.err);
    /* not before 0.5 s; the upper bound only has to tell it from the 3 s query running to its end */
    ok(took > 0.45 && took < 2.5, "statement_timeout: after %.2f s", took);
    if (r) PQclear(r);
    r = query_wait(c, &x, "select 1", 0, NULL, 5);
    ok(r && PQresultStatus(r) == PGRES_TUPLES_OK, "statement_timeout: connection still usable");
    if (r) PQclear(r);

    /* The client-side backstop: the server-side timeout is off on this session, the timer still fires. */
    r = query_wait(c, &x, "set statement_timeout = 0", 0, NULL, 5);
    if (r) PQclear(r);
    t0 = ev_time();
    r = query_wait(c, &x, "select pg_sleep(20), 'backstop-probe'", 0, NULL, 10);
    took = ev_time() - t0;
    ok(!r && !strncmp(x.err, "statement timeout: no answer from the database after 1.5 s", 40), "backstop: %s", x.err);
    ok(took > 1.4 && took < 6, "backstop: fired after %.2f s (the query sleeps 20 s)", took);
    pgpool_release(p, c);
    pgpool_stats_t st;
    pgpool_stats(p, &st);
    is_int(st.size, 0, "backstop: the timed-out connection was discarded");
    char n[32] = "?";
    for (int i = 0; i < 150; i++) { /* up to ~15 s: the cancel reaches the server in a moment */
        snprintf(n, sizeof n, "%s", scalar(p, "select count(*) from pg_stat_activity where query like '%backstop-' || 'probe%'"
                                              " and pid <> pg_backend_pid()"));
        if (!strcmp(n, "0")) break;
        run_until(NULL, 0.1);
    }
    is_str(n, "0", "backstop: the query was cancelled on the server (no backend still sleeping)");
    pgpool_free(p);
}

static void test_terminate(void)
{
    pgpool *p = pool(2, 5, 30);
    pgconn *a = acquire_wait(p), *b = acquire_wait(p);
    char pid[16];
    snprintf(pid, sizeof pid, "%d", PQbackendPID(pgconn_pg(a)));
    q xa, xb;
    memset(&xa, 0, sizeof xa);
    pgconn_query(a, "select pg_sleep(30)", 0, NULL, NULL, q_cb, &xa);
    const char *vals[] = {pid};
    /* kill it once it runs (killed before it arrives, the error would be another one) */
    PGresult *r = NULL;
    for (int i = 0; i < 300; i++) {
        r = query_wait(b, &xb, "select count(*) from pg_stat_activity where pid = $1::int and state = 'active'"
                               " and query = 'select pg_sleep(30)'", 1, vals, 5);
        int running = r && PQntuples(r) == 1 && !strcmp(PQgetvalue(r, 0, 0), "1");
        if (r) PQclear(r);
        if (running) break;
        run_until(NULL, 0.05);
    }
    double t0 = ev_time();
    r = query_wait(b, &xb, "select pg_terminate_backend($1::int)", 1, vals, 5);
    if (r) PQclear(r);
    run_until(&xa.done, 20);
    /* at once: the query would sleep 30 s; the bound leaves a loaded machine seconds */
    ok(xa.done && ev_time() - t0 < 10, "terminated: the running query fails at once (%.2f s)", ev_time() - t0);
    ok(!strncmp(xa.err, "connection lost: terminating connection due to administrator command", 60), "terminated: clear error (%s)",
       xa.err);
    ok(xa.res && !strcmp(PQresultErrorField(xa.res, PG_DIAG_SQLSTATE), "57P01"), "terminated: SQLSTATE 57P01 kept");
    if (xa.res) PQclear(xa.res);
    pgpool_release(p, a);
    pgpool_release(p, b);
    pgpool_stats_t st;
    pgpool_stats(p, &st);
    ok(st.size == 1 && st.idle == 1, "terminated: the dead connection left the pool, the other is idle");

    /* Kill the idle one: the pool notices the closed socket before lending it. */
    pgconn *c = acquire_wait(p);
    snprintf(pid, sizeof pid, "%d", PQbackendPID(pgconn_pg(c)));
    pgpool_release(p, c);
    pgconn *k = acquire_wait(p); /* reuses the idle one: cap allows a second for the kill */
    pgconn *k2 = acquire_wait(p);
    pgpool_release(p, k);
    pgpool_stats(p, &st);
    uint64_t errors0 = st.errors;
    r = query_wait(k2, &xb, "select pg_terminate_backend($1::int)", 1, vals, 5);
    if (r) PQclear(r);
    pgpool_release(p, k2);
    /* terminate only signals the backend: its socket closes once it has exited; then the pool
     * counts a lost connection and opens a probe (waited for, bounded, not a fixed 0.3 s) */
    for (double end = ev_time() + 15; ev_time() < end; run_until(NULL, 0.05)) {
        pgpool_stats(p, &st);
        if (st.errors - errors0 >= 1 && st.idle == 2) break;
    }
    pgpool_stats(p, &st);
    /* the dead idle connection was closed when its socket turned readable (counted as a lost
     * connection) and the pool opened a probe at once to learn whether the server is there */
    is_int(st.errors - errors0, 1, "idle connection killed: the pool dropped it on its own");
    ok(st.size == 2 && st.idle == 2 && !st.down, "idle connection killed: a probe replaced it (size %d, idle %d)", st.size, st.idle);
    is_str(scalar(p, "select 'alive'"), "alive", "after the kills the pool still serves queries");
    pgpool_free(p);
}

static void test_release_rollback(void)
{
    pgpool *p = pool(1, 5, 30);
    q x;
    scalar(p, "create table if not exists pgpool_test_rb (v text)");
    scalar(p, "delete from pgpool_test_rb");
    pgconn *c = acquire_wait(p);
    PGresult *r = query_wait(c, &x, "begin", 0, NULL, 5);
    if (r) PQclear(r);
    r = query_wait(c, &x, "insert into pgpool_test_rb values ('leak')", 0, NULL, 5);
    if (r) PQclear(r);
    is_int(PQtransactionStatus(pgconn_pg(c)), PQTRANS_INTRANS, "rollback: connection is mid-transaction");
    pgpool_release(p, c);
    pgconn *c2 = acquire_wait(p);
    ok(c2 == c, "rollback: the same connection comes back (rolled back, not discarded)");
    is_int(PQtransactionStatus(pgconn_pg(c2)), PQTRANS_IDLE, "rollback: it is not mid-transaction");
    r = query_wait(c2, &x, "select count(*) from pgpool_test_rb", 0, NULL, 5);
    is_str(r ? PQgetvalue(r, 0, 0) : "", "0", "rollback: the insert did not survive");
    if (r) PQclear(r);
    /* Released with a query in flight: no callback, connection replaced, server work cancelled. */
    memset(&x, 0, sizeof x);
    pgconn_query(c2, "select pg_sleep(10), 'abandoned-probe'", 0, NULL, NULL, q_cb, &x);
    run_until(NULL, 0.05);
    pgpool_release(p, c2);
    double t0 = ev_time();
    is_str(scalar(p, "select 'next'"), "next", "abandoned query: the next user gets a connection at once");
    /* a fresh connection, not the end of the 10 s query: seconds apart even on a loaded machine */
    ok(ev_time() - t0 < 5 && !x.done, "abandoned query: its callback never ran (next one in %.2f s)", ev_time() - t0);
    char n[32] = "?";
    for (int i = 0; i < 150; i++) { /* up to ~15 s */
        snprintf(n, sizeof n, "%s", scalar(p, "select count(*) from pg_stat_activity where query like '%abandoned-' || 'probe%'"));
        if (!strcmp(n, "0")) break;
        run_until(NULL, 0.1);
    }
    is_str(n, "0", "abandoned query: cancelled on the server");
    scalar(p, "drop table pgpool_test_rb");
    pgpool_free(p);
}

static void test_housekeeping(void)
{
    pgpool_config cfg = base_cfg;
    cfg.health_interval = 0.2;
    cfg.idle_timeout = 0;
    cfg.max_lifetime = 0;
    pgpool *pinged = pgpool_new(loop, &cfg, 1);
    cfg.health_interval = 0;
    cfg.idle_timeout = 0.5;
    pgpool *idle = pgpool_new(loop, &cfg, 1);
    cfg.idle_timeout = 0;
    cfg.max_lifetime = 0.3;
    pgpool *aging = pgpool_new(loop, &cfg, 1);
    pgpool *all[] = {pinged, idle, aging};
    int pid[3];
    for (int i = 0; i < 3; i++) {
        pgconn *c = acquire_wait(all[i]);
        pid[i] = c ? PQbackendPID(pgconn_pg(c)) : -1;
        pgpool_release(all[i], c);
    }
    run_until(NULL, 2.2); /* two housekeeping sweeps */
    run_until_stats(idle, size_is, 0, 15); /* (a loaded machine may run them late) */
    pgpool_stats_t st;
    pgpool_stats(idle, &st);
    is_int(st.size, 0, "idle_timeout: an unused connection is closed");
    pgpool_stats(pinged, &st);
    ok(st.size == 1 && st.errors == 0, "health check: pinged idle connection stays open and healthy");
    pgconn *c = acquire_wait(pinged);
    is_int(c ? PQbackendPID(pgconn_pg(c)) : 0, pid[0], "health check: the same connection is lent again");
    pgpool_release(pinged, c);
    c = acquire_wait(aging);
    ok(c && PQbackendPID(pgconn_pg(c)) != pid[2], "max_lifetime: an expired connection is replaced, not lent");
    pgpool_release(aging, c);
    for (int i = 0; i < 3; i++) pgpool_free(all[i]);
}

/* Health checks without traffic: with nothing open the pool connects by itself every
 * health_interval (that is how it learns the server is down before any query); with the
 * interval at 0 it stays lazy. */
static void test_health_probe(void)
{
    pgpool_config cfg = base_cfg;
    cfg.health_interval = 0.3;
    pgpool *p = pgpool_new(loop, &cfg, 1);
    cfg.health_interval = 0;
    pgpool *lazy = pgpool_new(loop, &cfg, 1);
    pgpool_stats_t st, sl;
    run_until(NULL, 1.2);      /* the sweep runs every second */
    for (double end = ev_time() + 5; ev_time() < end; run_until(NULL, 0.05)) { /* its connect finishes (bounded wait) */
        pgpool_stats(p, &st);
        if (st.idle == 1) break;
    }
    pgpool_stats(p, &st);
    pgpool_stats(lazy, &sl);
    ok(st.size == 1 && st.idle == 1 && st.acquired == 0, "health: nothing open, so the pool connected by itself (size %d)", st.size);
    is_int(sl.size, 0, "health_interval 0: no connection without a caller");
    pgpool_free(p);
    pgpool_free(lazy);
}

/* ---- a private server we can stop and start ---- */

static char pgdev[1024], devdir[256];

static int pgdev_run(const char *args, char *out, size_t outlen)
{
    char cmd[1600];
    snprintf(cmd, sizeof cmd, "'%s' %s '%s' %s", pgdev, args, devdir, out ? "" : ">/dev/null");
    FILE *f = popen(cmd, "r");
    if (!f) return -1;
    if (out) {
        if (!fgets(out, (int)outlen, f)) out[0] = 0;
        out[strcspn(out, "\n")] = 0;
    }
    return pclose(f);
}

/* A loopback port nothing listens on now (a port derived from the pid could be another server's). */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = 0;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &l) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0) close(fd);
    return port ? port : 20000 + getpid() % 20000;
}

static void test_restart(void)
{
    const char *env = getenv("SLUICE_PG_DEV"), *src = getenv("SLUICE_SOURCE_DIR");
    if (env) snprintf(pgdev, sizeof pgdev, "%s", env);
    else if (src) snprintf(pgdev, sizeof pgdev, "%s/tools/pg-dev", src);
    else {
        snprintf(pgdev, sizeof pgdev, "%s", __FILE__); /* <root>/tests/unit/test_pgpool.c -> <root>/tools/pg-dev */
        char *s = strstr(pgdev, "tests/unit/test_pgpool.c");
        if (s) strcpy(s, "tools/pg-dev");
    }
    snprintf(devdir, sizeof devdir, "/tmp/sluice-pgpool-test-XXXXXX");
    char url[256];
    if (access(pgdev, X_OK) != 0 || !mkdtemp(devdir)) {
        printf("# SKIP restart test: %s not found (set SLUICE_PG_DEV)\n", pgdev);
        return;
    }
    char cmd[1600];
    snprintf(cmd, sizeof cmd, "'%s' start '%s' %d", pgdev, devdir, free_port());
    FILE *f = popen(cmd, "r");
    url[0] = 0;
    if (f) {
        if (!fgets(url, sizeof url, f)) url[0] = 0;
        url[strcspn(url, "\n")] = 0;
        if (pclose(f) != 0) url[0] = 0;
    }
    pgpool_config cfg;
    char err[256];
    if (!url[0] || pgpool_parse_url(url, &cfg, err, sizeof err) < 0) {
        ok(0, "restart test: could not start a private server with %s", pgdev);
        return;
    }
    enum { CAP = 4 };
    cfg.pool_timeout = 30;
    cfg.connect_timeout = 2;
    pgpool *p = pgpool_new(loop, &cfg, CAP);
    watched = p;
    max_size = 0;
    acq a[CAP + 4];
    for (int i = 0; i < CAP; i++) acquire(p, &a[i], "select 1");
    run_until_stats(p, idle_is, CAP, 30);
    pgpool_stats_t st;
    pgpool_stats(p, &st);
    is_int(st.idle, CAP, "restart: pool warmed up to its cap");

    pgdev_run("stop", NULL, 0);
    /* every idle connection closed, and the probe that followed failed (a probe in flight would
     * count in size: wait for the settled state, not a moment in between) */
    run_until_stats(p, down_and_empty, 0, 15);
    pgpool_stats(p, &st);
    is_int(st.size, 0, "server stopped: idle connections noticed the close");
    for (double end = ev_time() + 15; pgpool_healthy(p) && ev_time() < end;) run_until(NULL, 0.05);
    ok(!pgpool_healthy(p), "server stopped: the pool knows it is down before any query (a probe failed)");
    double t0 = ev_time();
    for (int i = 0; i < CAP + 4; i++) acquire(p, &a[i], NULL);
    int all = 0;
    for (double end = ev_time() + 15; !all && ev_time() < end;) {
        run_until(NULL, 0.01);
        all = 1;
        for (int i = 0; i < CAP + 4; i++) all &= a[i].done;
    }
    double took = ev_time() - t0;
    int unreachable = 0;
    for (int i = 0; i < CAP + 4; i++) unreachable += !a[i].c && !strncmp(a[i].err, "database unreachable: ", 22);
    is_int(unreachable, CAP + 4, "server down: every waiter fails with 'database unreachable'");
    printf("# e.g. %s\n", a[0].err);
    /* fast = not after pool_timeout (30 s here, so the two stay far apart on any machine) */
    ok(took < 10.0, "server down: failed fast (%.2f s, pool_timeout is 30 s)", took);
    ok(!pgpool_healthy(p), "server down: pool reports unhealthy");
    run_until(NULL, 1.5); /* let the backoff probe a few times */

    if (pgdev_run("start", url, sizeof url) != 0) ok(0, "restart: private server came back");
    t0 = ev_time();
    int served = 0;
    while (!served && ev_time() - t0 < 30) {
        acq b;
        acquire(p, &b, NULL);
        run_until(&b.done, 10);
        if (!b.done) pgpool_cancel(&b.w); /* b lives in this loop body: never leave it queued */
        if (b.c) {
            served = 1;
            pgpool_release(p, b.c);
        } else {
            run_until(NULL, 0.2);
        }
    }
    ok(served, "server back: the pool reconnects on its own (%.2f s)", ev_time() - t0);
    for (int i = 0; i < CAP + 4; i++) acquire(p, &a[i], "select pg_sleep(0.05)");
    all = 0;
    for (double end = ev_time() + 30; !all && ev_time() < end;) {
        run_until(NULL, 0.01);
        all = 1;
        for (int i = 0; i < CAP + 4; i++) all &= a[i].qdone == 1;
    }
    ok(all, "server back: %d queries through %d connections succeed", CAP + 4, CAP);

    /* pg_ctl restart -m fast with queries in flight: all CAP connections lent and sleeping (a
     * second pool on the same server watches pg_stat_activity for that) */
    for (int i = 0; i < CAP; i++) acquire(p, &a[i], "select pg_sleep(60)");
    pgpool *watch = pgpool_new(loop, &cfg, 1);
    char n[32] = "?";
    for (int i = 0; i < 300 && strcmp(n, "4"); i++) {
        snprintf(n, sizeof n, "%s", scalar(watch, "select count(*) from pg_stat_activity where state = 'active'"
                                                  " and query = 'select pg_sleep(60)'"));
        if (strcmp(n, "4")) run_until(NULL, 0.05);
    }
    is_str(n, "4", "fast restart: the 4 queries are running");
    pgpool_free(watch);
    pgdev_run("restart", NULL, 0);
    all = 0;
    for (double end = ev_time() + 30; !all && ev_time() < end;) {
        run_until(NULL, 0.01);
        all = 1;
        for (int i = 0; i < CAP; i++) all &= a[i].qdone != 0;
    }
    int failed = 0;
    for (int i = 0; i < CAP; i++) failed += a[i].qdone == -1;
    /* they fail when the server goes, long before their 60 s of sleep */
    ok(all && failed == CAP, "fast restart: in-flight queries fail instead of hanging (%d of %d failed)", failed, CAP);
    is_str(scalar(p, "select 'after restart'"), "after restart", "fast restart: the pool serves again");
    ok(max_size <= CAP, "restart: pool never above its cap of %d (peak %d)", CAP, max_size);
    watched = NULL;
    pgpool_free(p);
    pgdev_run("stop", NULL, 0);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", devdir);
    if (system(cmd) != 0) printf("# could not remove %s\n", devdir);
}

/* pgpool_query: one-shot statements share a connection in pipeline mode once the pool is at its cap. */
typedef struct pj {
    pgpool_job job;
    char val[16];
    const char *vals[1];
    char got[64], err[200];
    int done, order;
} pj;

static int pj_seq;

static void pj_cb(void *ud, PGresult *res, const char *err)
{
    pj *x = ud;
    x->done = 1;
    x->order = ++pj_seq;
    snprintf(x->err, sizeof x->err, "%s", err ? err : "");
    if (res && !err && PQntuples(res) == 1) snprintf(x->got, sizeof x->got, "%s", PQgetvalue(res, 0, 0));
    if (res) PQclear(res);
}

static void test_pipeline(void)
{
    enum { N = 24 };
    pgpool *p = pool(2, 5, 10);
    pgpool_set_pipeline(p, 8);
    pgpool_release(p, acquire_wait(p)); /* one connection open; the second opens on demand */
    static pj x[N];
    pj_seq = 0;
    for (int i = 0; i < N; i++) {
        memset(&x[i], 0, sizeof x[i]);
        snprintf(x[i].val, sizeof x[i].val, "%d", i);
        x[i].vals[0] = x[i].val;
        /* every fifth statement fails (division by zero) */
        pgpool_query(p, &x[i].job, i % 5 == 3 ? "select 1 / ($1::int - $1::int)" : "select $1::int * 2", 1, x[i].vals, NULL, pj_cb, &x[i]);
    }
    pgpool_stats_t st;
    pgpool_stats(p, &st);
    ok(st.size <= 2, "pipeline: %d statements on at most 2 connections (size %d)", N, st.size);
    int all = 0;
    for (double end = ev_time() + 5; !all && ev_time() < end;) {
        run_until(NULL, 0.01);
        all = 1;
        for (int i = 0; i < N; i++) all &= x[i].done;
    }
    ok(all, "pipeline: every statement answered");
    int right = 1, errs = 0;
    for (int i = 0; i < N; i++) {
        char want[16];
        snprintf(want, sizeof want, "%d", 2 * i);
        if (i % 5 == 3) {
            errs += strstr(x[i].err, "division by zero") != NULL;
        } else if (strcmp(x[i].got, want) != 0 || x[i].err[0]) {
            right = 0;
            printf("# statement %d: got '%s' err '%s'\n", i, x[i].got, x[i].err);
        }
    }
    ok(right, "pipeline: each caller gets its own result");
    int nerr = 0;
    for (int i = 0; i < N; i++) nerr += i % 5 == 3;
    is_int(errs, nerr, "pipeline: an error stays with its own statement");
    pgpool_stats(p, &st);
    ok(st.size <= 2 && st.in_use == 0, "pipeline: connections back to idle (size %d, in use %d)", st.size, st.in_use);
    uint64_t cls22 = 0;
    for (int c = 0; c < PGPOOL_ERR_CLASSES; c++)
        if (!strcmp(pgpool_error_class(c), "22")) cls22 = st.errors_by_class[c];
    ok(cls22 == (uint64_t)nerr, "errors by class: %llu in class 22", (unsigned long long)cls22);
    ok(phist_count(pgpool_wait_hist(p), pgpool_wait_bounds()) >= (uint64_t)N, "wait histogram: every acquire recorded");
    /* after a pipeline, the connection is usable for an exclusive acquire and a transaction */
    is_str(scalar(p, "select 'exclusive'"), "exclusive", "pipeline: connection usable exclusively after");
    pgpool_free(p);
}

/* The statement cache on a lent connection (pgconn_query: transactions and exclusive use). */
static int ncols(PGresult *r) { return r && PQresultStatus(r) == PGRES_TUPLES_OK ? PQnfields(r) : -1; }

static void test_stmt_cache(void)
{
    pgpool_config cfg = base_cfg;
    cfg.stmt_cache_size = 2;
    cfg.pool_timeout = 5;
    pgpool *p = pgpool_new(loop, &cfg, 1);
    pgconn *c = acquire_wait(p);
    q x;
    PGresult *r;
    if (!c) { ok(0, "stmt cache: a connection"); pgpool_free(p); return; }
    PQclear(query_wait(c, &x, "create temp table tpc (a int)", 0, NULL, 10));
    PQclear(query_wait(c, &x, "insert into tpc values (1)", 0, NULL, 10));
    pgpool_stats_t st0, st;
    pgpool_stats(p, &st0);
    for (int i = 0; i < 4; i++) PQclear(query_wait(c, &x, "select * from tpc", 0, NULL, 10));
    pgpool_stats(p, &st);
    ok(st.stmt_hits - st0.stmt_hits == 2 && st.stmt_misses - st0.stmt_misses == 2,
       "stmt cache: first run unnamed (never seen), second prepared, then hits");
    const char *three[] = {"select 1 as x", "select 2 as x", "select 3 as x"};
    for (int i = 0; i < 6; i++) PQclear(query_wait(c, &x, three[i / 2], 0, NULL, 10));
    r = query_wait(c, &x, "select count(*) from pg_prepared_statements where name like 'sluice%'", 0, NULL, 10);
    ok(r && !strcmp(PQgetvalue(r, 0, 0), "2"), "stmt cache: 2 named on the backend, the size (%s)", r ? PQgetvalue(r, 0, 0) : x.err);
    if (r) PQclear(r);
    pgpool_stats(p, &st);
    ok(st.stmt_evictions - st0.stmt_evictions == 2, "stmt cache: two evictions (%llu)",
       (unsigned long long)(st.stmt_evictions - st0.stmt_evictions));
    /* DDL outside a transaction: retried once, invisible */
    PQclear(query_wait(c, &x, "select * from tpc", 0, NULL, 10));
    PQclear(query_wait(c, &x, "select * from tpc", 0, NULL, 10));
    PQclear(query_wait(c, &x, "alter table tpc add column b int", 0, NULL, 10));
    PQclear(query_wait(c, &x, "select * from tpc", 0, NULL, 10)); /* may be parsed anew: size 2 */
    PQclear(query_wait(c, &x, "alter table tpc add column c int", 0, NULL, 10));
    pgpool_stats(p, &st0);
    r = query_wait(c, &x, "select * from tpc", 0, NULL, 10);
    ok(ncols(r) == 3, "stmt cache: after DDL the new columns, no error (%d, %s)", ncols(r), x.err);
    if (r) PQclear(r);
    pgpool_stats(p, &st);
    ok(st.stmt_invalidated - st0.stmt_invalidated == 1, "stmt cache: the stale plan was noticed");
    /* inside a transaction the error is the caller's (the transaction is aborted) */
    PQclear(query_wait(c, &x, "begin", 0, NULL, 10));
    PQclear(query_wait(c, &x, "alter table tpc add column d int", 0, NULL, 10));
    r = query_wait(c, &x, "select * from tpc", 0, NULL, 10);
    ok(r && !strcmp(PQresultErrorField(r, PG_DIAG_SQLSTATE) ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : "", "0A000"),
       "stmt cache: a stale plan inside a transaction gives 0A000 (%s)", x.err);
    if (r) PQclear(r);
    PQclear(query_wait(c, &x, "rollback", 0, NULL, 10));
    r = query_wait(c, &x, "select * from tpc", 0, NULL, 10);
    ok(ncols(r) == 3, "stmt cache: after the rollback parsed again (%d, %s)", ncols(r), x.err);
    if (r) PQclear(r);
    /* a failed Parse: the unnamed statement's error, nothing cached, connection fine */
    for (int i = 0; i < 2; i++) { /* unnamed the first time, a failed Parse the second */
        r = query_wait(c, &x, "selec 1", 0, NULL, 10);
        ok(r && !strcmp(PQresultErrorField(r, PG_DIAG_SQLSTATE), "42601") && !strncmp(x.err, "syntax error at or near", 23),
           "stmt cache: syntax error as before, run %d (%s)", i + 1, x.err);
        if (r) PQclear(r);
    }
    r = query_wait(c, &x, "select count(*) from pg_prepared_statements where statement = 'selec 1'", 0, NULL, 10);
    ok(r && !strcmp(PQgetvalue(r, 0, 0), "0"), "stmt cache: the failed statement is not on the backend");
    if (r) PQclear(r);
    pgpool_release(p, c);
    pgpool_free(p);
}

int main(void)
{
    test_worker_share();
    const char *url = getenv("DATABASE_URL");
    if (!url || !*url) {
        printf("# SKIP no DATABASE_URL\n");
        return tap_done();
    }
    char err[256];
    if (pgpool_parse_url(url, &base_cfg, err, sizeof err) < 0) {
        ok(0, "DATABASE_URL: %s", err);
        return tap_done();
    }
    loop = ev_loop_new(EVFLAG_AUTO);
    int fds = count_fds();
    test_params();
    test_cap_fifo();
    test_timeout_cancel();
    test_nonblocking_and_timeouts();
    test_terminate();
    test_release_rollback();
    test_housekeeping();
    test_health_probe();
    test_pipeline();
    test_stmt_cache();
    test_restart();
    run_until(NULL, 0.3); /* cancel threads finish */
    is_int(count_fds(), fds, "no file descriptors leaked");
    ev_loop_destroy(loop);
    return tap_done();
}
