/* pglisten.c: a LISTEN connection outside the pool (pooled connections are lent to many callers
 * and may sit behind PgBouncer in transaction mode, where LISTEN does not survive a transaction). */
#include "pglisten.h"

#include <libpq-fe.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

#include "util.h"

#define BACKOFF_MIN 0.1
#define BACKOFF_MAX 2.0

enum lstate { LS_DOWN, LS_CONNECTING, LS_READY };

struct pglisten {
    struct ev_loop *loop;
    char conninfo[2048];
    double connect_timeout, ping_every;
    pglisten_cb cb;
    void *ud;
    PGconn *pg;
    enum lstate state;
    int fd, events, flushing, busy, warned;
    ev_tstamp busy_since;
    ev_io io;
    ev_timer timer;       /* connect timeout while connecting, reconnect delay while down */
    ev_timer ping;        /* keeps the connection honest: a silent peer is noticed */
    double backoff;
    unsigned seed;
    int nwant, nhave;
    char want[PGLISTEN_MAX_CHANNELS][PGLISTEN_NAME_MAX + 1];
    char have[PGLISTEN_MAX_CHANNELS][PGLISTEN_NAME_MAX + 1]; /* LISTENs sent on this connection */
    uint64_t notifications, reconnects;
};

static void watch(pglisten *l, int events)
{
    int fd = events && l->pg ? PQsocket(l->pg) : -1;
    if (fd == l->fd && events == l->events) return;
    if (l->events) ev_io_stop(l->loop, &l->io);
    l->fd = fd;
    l->events = fd >= 0 ? events : 0;
    if (l->events) {
        ev_io_set(&l->io, fd, l->events);
        ev_io_start(l->loop, &l->io);
    }
}

static void start_connect(pglisten *l);

/* The connection failed or went away: close it and try again after a jittered, doubling delay.
 * NOTIFYs sent while no connection is LISTENing are lost (PostgreSQL does not queue them). */
static void lost(pglisten *l, const char *why)
{
    if (!l->warned) {
        char line[200];
        size_t n = strcspn(why, "\n");
        snprintf(line, sizeof line, "%.*s", (int)(n < sizeof line ? n : sizeof line - 1), why);
        log_msg(LOG_WARN, "database listener: %s; reconnecting", line);
        l->warned = 1; /* once per outage, not once per attempt */
    }
    watch(l, 0);
    if (l->pg) PQfinish(l->pg);
    l->pg = NULL;
    l->state = LS_DOWN;
    l->busy = l->flushing = 0;
    l->nhave = 0;
    l->reconnects++;
    l->backoff = l->backoff ? fmin(l->backoff * 2, BACKOFF_MAX) : BACKOFF_MIN;
    ev_timer_stop(l->loop, &l->timer);
    ev_timer_set(&l->timer, l->backoff * (0.75 + 0.5 * rand_r(&l->seed) / (double)RAND_MAX), 0.);
    ev_timer_start(l->loop, &l->timer);
}

static int has(char (*set)[PGLISTEN_NAME_MAX + 1], int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(set[i], name) == 0) return 1;
    return 0;
}

/* Appends `verb "name";` to sql (a quoted identifier: the channel is used exactly, case kept). */
static size_t add_stmt(char *sql, size_t o, size_t cap, const char *verb, const char *name)
{
    o += (size_t)snprintf(sql + o, cap - o, "%s \"", verb);
    for (const char *s = name; *s && o < cap - 4; s++) {
        if (*s == '"') sql[o++] = '"';
        sql[o++] = *s;
    }
    sql[o++] = '"';
    sql[o++] = ';';
    sql[o] = 0;
    return o;
}

static void send_sql(pglisten *l, const char *sql)
{
    if (!PQsendQuery(l->pg, sql)) { lost(l, PQerrorMessage(l->pg)); return; }
    int r = PQflush(l->pg);
    if (r < 0) { lost(l, PQerrorMessage(l->pg)); return; }
    l->flushing = r;
    l->busy = 1;
    l->busy_since = ev_now(l->loop);
    watch(l, r ? EV_READ | EV_WRITE : EV_READ);
}

/* Brings the server's LISTEN set in line with want (one simple-protocol round trip). */
static void sync_set(pglisten *l)
{
    if (l->state != LS_READY || l->busy) return;
    static char sql[PGLISTEN_MAX_CHANNELS * 2 * (2 * PGLISTEN_NAME_MAX + 16)];
    size_t o = 0;
    sql[0] = 0;
    for (int i = 0; i < l->nhave; i++)
        if (!has(l->want, l->nwant, l->have[i])) o = add_stmt(sql, o, sizeof sql, "UNLISTEN", l->have[i]);
    for (int i = 0; i < l->nwant; i++)
        if (!has(l->have, l->nhave, l->want[i])) o = add_stmt(sql, o, sizeof sql, "LISTEN", l->want[i]);
    if (!o) return;
    memcpy(l->have, l->want, sizeof l->have);
    l->nhave = l->nwant;
    send_sql(l, sql);
}

static void io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    pglisten *l = container_of(w, pglisten, io);
    if (l->state == LS_CONNECTING) {
        /* libpq may switch sockets between polls (next address): always re-register */
        switch (PQconnectPoll(l->pg)) {
        case PGRES_POLLING_READING: watch(l, 0); watch(l, EV_READ); break;
        case PGRES_POLLING_WRITING: watch(l, 0); watch(l, EV_WRITE); break;
        case PGRES_POLLING_OK:
            ev_timer_stop(loop, &l->timer);
            l->state = LS_READY;
            l->backoff = 0;
            if (l->warned) log_msg(LOG_INFO, "database listener: connected again");
            l->warned = 0;
            l->nhave = 0;
            watch(l, EV_READ);
            sync_set(l);
            break;
        default: lost(l, PQerrorMessage(l->pg)); break;
        }
        return;
    }
    if (l->state != LS_READY) { watch(l, 0); return; }
    if ((revents & EV_READ) && !PQconsumeInput(l->pg)) { lost(l, PQerrorMessage(l->pg)); return; }
    if (l->flushing) {
        int r = PQflush(l->pg);
        if (r < 0) { lost(l, PQerrorMessage(l->pg)); return; }
        l->flushing = r;
        watch(l, r ? EV_READ | EV_WRITE : EV_READ);
    }
    while (l->busy && !PQisBusy(l->pg)) {
        PGresult *r = PQgetResult(l->pg);
        if (!r) { l->busy = 0; break; }
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_FATAL_ERROR) log_msg(LOG_WARN, "database listener: %s", PQresultErrorMessage(r));
        PQclear(r);
    }
    PGnotify *n;
    while ((n = PQnotifies(l->pg))) {
        /* a channel we just UNLISTENed may still deliver a NOTIFY queued before it */
        if (has(l->want, l->nwant, n->relname)) {
            l->notifications++;
            l->cb(l->ud, n->relname, n->extra ? n->extra : "");
        }
        PQfreemem(n);
        if (!l->pg) return; /* defensive: nothing in the callback may free us, but lost() could run */
    }
    if (PQstatus(l->pg) == CONNECTION_BAD) { lost(l, PQerrorMessage(l->pg)); return; }
    if (!l->busy) sync_set(l);
}

static void start_connect(pglisten *l)
{
    l->pg = PQconnectStart(l->conninfo);
    if (!l->pg || PQstatus(l->pg) == CONNECTION_BAD) {
        lost(l, l->pg ? PQerrorMessage(l->pg) : "out of memory");
        return;
    }
    PQsetnonblocking(l->pg, 1);
    l->state = LS_CONNECTING;
    watch(l, EV_WRITE); /* as if PQconnectPoll had answered PGRES_POLLING_WRITING */
    ev_timer_stop(l->loop, &l->timer);
    if (l->connect_timeout > 0) {
        ev_timer_set(&l->timer, l->connect_timeout, 0.);
        ev_timer_start(l->loop, &l->timer);
    }
}

static void timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    pglisten *l = container_of(t, pglisten, timer);
    if (l->state == LS_CONNECTING) lost(l, "timeout expired (connect_timeout)");
    else if (l->state == LS_DOWN && l->nwant) start_connect(l);
}

static void ping_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    pglisten *l = container_of(t, pglisten, ping);
    if (l->state != LS_READY) return;
    if (l->busy) {
        double limit = l->connect_timeout > 0 ? l->connect_timeout : 5.;
        if (ev_now(loop) - l->busy_since > limit) lost(l, "the server did not answer a health check");
        return;
    }
    send_sql(l, ""); /* empty query: the cheapest round trip */
}

pglisten *pglisten_new(struct ev_loop *loop, const pgpool_config *cfg, pglisten_cb cb, void *ud)
{
    pglisten *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    l->loop = loop;
    snprintf(l->conninfo, sizeof l->conninfo, "%s", cfg->conninfo);
    l->connect_timeout = cfg->connect_timeout;
    l->ping_every = cfg->health_interval > 0 ? cfg->health_interval : 30.;
    l->cb = cb;
    l->ud = ud;
    l->fd = -1;
    l->seed = (unsigned)time(NULL) ^ (unsigned)(uintptr_t)l;
    ev_init(&l->io, io_cb);
    ev_init(&l->timer, timer_cb);
    ev_timer_init(&l->ping, ping_cb, l->ping_every, l->ping_every);
    return l;
}

void pglisten_free(pglisten *l)
{
    if (!l) return;
    watch(l, 0);
    ev_timer_stop(l->loop, &l->timer);
    if (ev_is_active(&l->ping)) { ev_ref(l->loop); ev_timer_stop(l->loop, &l->ping); }
    if (l->pg) PQfinish(l->pg);
    free(l);
}

int pglisten_set(pglisten *l, const char *const *channels, int n)
{
    if (n < 0 || n > PGLISTEN_MAX_CHANNELS) return -1;
    for (int i = 0; i < n; i++)
        if (!channels[i][0] || strlen(channels[i]) > PGLISTEN_NAME_MAX) return -1;
    l->nwant = 0;
    for (int i = 0; i < n; i++)
        if (!has(l->want, l->nwant, channels[i])) snprintf(l->want[l->nwant++], sizeof l->want[0], "%s", channels[i]);
    if (!l->nwant) { /* nothing to listen to: give the connection back to the cap */
        watch(l, 0);
        ev_timer_stop(l->loop, &l->timer);
        if (ev_is_active(&l->ping)) { ev_ref(l->loop); ev_timer_stop(l->loop, &l->ping); }
        if (l->pg) PQfinish(l->pg);
        l->pg = NULL;
        l->state = LS_DOWN;
        l->busy = l->flushing = l->nhave = 0;
        return 0;
    }
    if (l->nwant && !ev_is_active(&l->ping)) {
        ev_timer_start(l->loop, &l->ping);
        ev_unref(l->loop); /* housekeeping alone should not keep ev_run alive */
    }
    if (l->state == LS_DOWN && l->nwant && !ev_is_active(&l->timer)) start_connect(l);
    else sync_set(l);
    return 0;
}

void pglisten_stats(const pglisten *l, pglisten_stats_t *out)
{
    out->connected = l->state == LS_READY;
    out->notifications = l->notifications;
    out->reconnects = l->reconnects;
}
