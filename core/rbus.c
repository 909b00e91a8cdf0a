/* rbus.c: hiredis async connections driven by each worker's libev loop, the cross-instance SSE
 * subscriber (worker 0), the Redis-side Lua scripts, deadlines, reconnects and counters. */
#include "rbus.h"
#include "sentinel.h"

#include <hiredis/async.h>
#include <hiredis/adapters/libev.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "sse.h"                    /* SSE_ID_PER_MS only: the floor starts at the hub's first id */

#include "ctx.h"
#include "sconfig.h"
#include "util.h"
#define BACKOFF_MIN 0.1
#define BACKOFF_MAX 5.0
#define CONNECT_TIMEOUT 2.0
#define OPS_FREE_MAX 256

/* ------------------------------------------------------------------ state */

typedef struct rbus_srv {
    char host[256], pass[256], user[128];
    int port, db;
    char prefix[72];
    char instance[17];
    char pubchan[96];                   /* <prefix>sse: the pub/sub channel of SSE events */
    char counter[96];                   /* <prefix>sse:id */
    atomic_int sub_up;                  /* subscriber confirmed SUBSCRIBE */
    atomic_int conns_up;                /* workers with a live command connection */
    _Atomic uint64_t floor;
    atomic_ullong counters[RBC_N];
    atomic_int logged_down;             /* one log line per outage */
    rbus_handlers bus;                  /* set before the workers start, read on worker 0 */
    /* redis-sentinel:// : the master's address comes from the discovery thread (sentinel.h) */
    sentinel *sent;
    char sent_desc[300];                /* "sentinel master <name>" for log lines */
    pthread_mutex_t reg_lock;           /* guards reg: the workers to tell about a switch */
    struct rbus_w *reg[64];
    int nreg;
} rbus_srv;

typedef struct rconn {
    struct rbus_w *rw;
    redisAsyncContext *ac;
    int up, sub;                        /* connected (after AUTH/SELECT were queued); subscriber */
    unsigned epoch;                     /* Sentinel: the master epoch this connection was made to */
    double backoff;
    ev_timer retry_w;                   /* reconnect after backoff / connect deadline */
    int ever_up;
} rconn;

typedef struct rbus_w {
    worker *w;
    rbus_srv *rs;
    rconn cmd, sub;
    char sha[RBUS_NSCRIPTS][41];        /* "" until SCRIPT LOAD answered on this connection */
    rbus_op *free_ops;
    int nfree;
    int stopping;
    ev_async switch_w;                  /* Sentinel: the master changed (posted by its thread) */
    unsigned epoch_seen;                /* the last master epoch switch_cb acted on */
} rbus_w;

struct rbus_op {
    rbus_w *rw;
    rbus_cb cb;
    void *ud;
    ev_timer tmo;
    int fired, answered, script;
    rbus_op *next;
};

static void conn_start(rconn *rc);
static void master_changed(void *ud);
static void switch_cb(struct ev_loop *loop, ev_async *aw, int revents);
static void role_cb(redisAsyncContext *ac, void *reply, void *privdata);

/* ------------------------------------------------------------------ helpers */

int rbus_parse_url(const char *url, char *host, size_t hostlen, int *port, char *pass, size_t passlen,
                   char *user, size_t userlen, int *db, const char **err)
{
    *port = 6379;
    *db = 0;
    pass[0] = user[0] = host[0] = 0;
    if (!url || !*url) return *err = "empty Redis URL", -1;
    if (url[0] == '/' || strncmp(url, "unix://", 7) == 0) {
        const char *p = url[0] == '/' ? url : url + 7;
        if (*p != '/' || strlen(p) >= hostlen) return *err = "bad unix socket path", -1;
        snprintf(host, hostlen, "%s", p);
        *port = 0;
        return 0;
    }
    if (strncmp(url, "rediss://", 9) == 0) return *err = "rediss:// (TLS) is not supported by this build: use a TLS tunnel", -1;
    if (strncmp(url, "redis://", 8) != 0) return *err = "must start with redis://", -1;
    const char *p = url + 8, *end = p + strcspn(p, "/?#");
    const char *at = NULL;
    for (const char *q = p; q < end; q++) if (*q == '@') at = q;
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon) {
            if ((size_t)(colon - p) >= userlen || (size_t)(at - colon - 1) >= passlen) return *err = "credentials too long", -1;
            memcpy(user, p, (size_t)(colon - p));
            user[colon - p] = 0;
            memcpy(pass, colon + 1, (size_t)(at - colon - 1));
            pass[at - colon - 1] = 0;
        } else {
            if ((size_t)(at - p) >= passlen) return *err = "credentials too long", -1;
            memcpy(pass, p, (size_t)(at - p));
            pass[at - p] = 0;
        }
        p = at + 1;
    }
    const char *hs = p, *he;
    if (*p == '[') {                    /* [ipv6]:port */
        hs = p + 1;
        he = memchr(hs, ']', (size_t)(end - hs));
        if (!he) return *err = "unterminated [ipv6] host", -1;
        p = he + 1;
    } else {
        he = memchr(p, ':', (size_t)(end - p));
        if (!he) he = end;
        p = he;
    }
    if (he == hs) return *err = "missing host", -1;
    if ((size_t)(he - hs) >= hostlen) return *err = "host too long", -1;
    memcpy(host, hs, (size_t)(he - hs));
    host[he - hs] = 0;
    if (p < end && *p == ':') {
        char *e;
        long v = strtol(p + 1, &e, 10);
        if (e != end || v <= 0 || v > 65535) return *err = "bad port", -1;
        *port = (int)v;
    } else if (p != end) {
        return *err = "bad host", -1;
    }
    if (*end == '/' && end[1] && end[1] != '?') {
        char *e;
        long v = strtol(end + 1, &e, 10);
        if (v < 0 || v > 1000 || (*e && *e != '?')) return *err = "bad database number", -1;
        *db = (int)v;
    }
    return 0;
}

static uint64_t wall_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
}

const char *rbus_prefix(const server *s) { return s->rbus ? ((rbus_srv *)s->rbus)->prefix : "sluice:"; }
const char *rbus_instance(const server *s) { return s->rbus ? ((rbus_srv *)s->rbus)->instance : ""; }

void rbus_count(server *s, enum rbus_counter c)
{
    rbus_srv *rs = s->rbus;
    if (rs && c < RBC_N) atomic_fetch_add_explicit(&rs->counters[c], 1, memory_order_relaxed);
}

uint64_t rbus_id_floor(server *s)
{
    rbus_srv *rs = s->rbus;
    return rs ? atomic_load(&rs->floor) : 0;
}

void rbus_note_id(server *s, uint64_t id)
{
    rbus_srv *rs = s->rbus;
    if (!rs) return;
    uint64_t cur = atomic_load(&rs->floor);
    while (id > cur && !atomic_compare_exchange_weak(&rs->floor, &cur, id)) {}
}

/* ------------------------------------------------------------------ server */

int rbus_server_init(server *s, const sconfig *cfg, char *err, size_t errlen)
{
    s->rbus = NULL;
    if (!cfg->redis_url || !*cfg->redis_url) return 0;
    rbus_srv *rs = calloc(1, sizeof *rs);
    if (!rs) { snprintf(err, errlen, "out of memory"); return -1; }
    const char *e = NULL;
    pthread_mutex_init(&rs->reg_lock, NULL);
    if (sentinel_is_url(cfg->redis_url)) {
        sentinel_cfg sc;
        if (sentinel_parse_url(cfg->redis_url, &sc, err, errlen) < 0) {
            char why[256];
            snprintf(why, sizeof why, "%s", err);
            snprintf(err, errlen, "REDIS_URL: %s (expected redis-sentinel://host:26379[,host:port...]/master-name"
                     "[?db=N&password=P&sentinel_password=S])", why);
            pthread_mutex_destroy(&rs->reg_lock);
            free(rs);
            return -1;
        }
        snprintf(rs->pass, sizeof rs->pass, "%s", sc.pass);
        snprintf(rs->user, sizeof rs->user, "%s", sc.user);
        rs->db = sc.db;
        rs->port = -1;                  /* the address is the Sentinels' answer, per connection */
        snprintf(rs->sent_desc, sizeof rs->sent_desc, "the master '%s' (via %d Sentinel%s)", sc.master, sc.naddrs,
                 sc.naddrs == 1 ? "" : "s");
        snprintf(rs->host, sizeof rs->host, "%s", rs->sent_desc);
        rs->sent = sentinel_start(&sc, master_changed, rs);
        if (!rs->sent) {
            snprintf(err, errlen, "REDIS_URL: cannot start the Sentinel discovery thread");
            pthread_mutex_destroy(&rs->reg_lock);
            free(rs);
            return -1;
        }
    } else if (rbus_parse_url(cfg->redis_url, rs->host, sizeof rs->host, &rs->port, rs->pass, sizeof rs->pass,
                       rs->user, sizeof rs->user, &rs->db, &e)) {
        snprintf(err, errlen, "REDIS_URL: %s (expected redis://[:password@]host:6379[/db])", e);
        pthread_mutex_destroy(&rs->reg_lock);
        free(rs);
        return -1;
    }
    snprintf(rs->prefix, sizeof rs->prefix, "%s", cfg->redis_prefix ? cfg->redis_prefix : "sluice:");
    unsigned char rnd[8];
    if (getrandom(rnd, sizeof rnd, 0) != sizeof rnd) {
        uint64_t x = wall_ms() ^ ((uint64_t)getpid() << 32);
        memcpy(rnd, &x, sizeof rnd);
    }
    for (int i = 0; i < 8; i++) sprintf(rs->instance + 2 * i, "%02x", rnd[i]);
    snprintf(rs->pubchan, sizeof rs->pubchan, "%ssse", rs->prefix);
    snprintf(rs->counter, sizeof rs->counter, "%ssse:id", rs->prefix);
    /* The hub's ids start at the wall-clock ms of its creation, which is before now. */
    atomic_store(&rs->floor, wall_ms() * SSE_ID_PER_MS);   /* the local hub's first id */
    s->rbus = rs;
    if (rs->sent) log_msg(LOG_INFO, "redis: %s (instance %s, prefix \"%s\")", rs->sent_desc, rs->instance, rs->prefix);
    else log_msg(LOG_INFO, "redis: %s%s%d (instance %s, prefix \"%s\")", rs->host, rs->port ? ":" : "",
                 rs->port, rs->instance, rs->prefix);
    return 0;
}

void rbus_server_free(server *s)
{
    rbus_srv *rs = s->rbus;
    if (rs) {
        sentinel_stop(rs->sent);        /* joins the thread: no master_changed() after this */
        pthread_mutex_destroy(&rs->reg_lock);
    }
    free(rs);
    s->rbus = NULL;
}

int rbus_sentinel_state(server *s, char *host, size_t hostlen, int *port)
{
    rbus_srv *rs = s->rbus;
    if (!rs || !rs->sent) return -1;
    if (!sentinel_master(rs->sent, host, hostlen, port)) return 0;
    return sentinel_reachable(rs->sent) ? 2 : 1;
}

/* ------------------------------------------------------------------ ops */

static rbus_op *op_new(rbus_w *rw)
{
    rbus_op *op = rw->free_ops;
    if (op) { rw->free_ops = op->next; rw->nfree--; }
    else if (!(op = malloc(sizeof *op))) return NULL;
    memset(op, 0, sizeof *op);
    op->rw = rw;
    op->script = -1;
    return op;
}

static void op_free(rbus_op *op)
{
    rbus_w *rw = op->rw;
    if (rw->nfree < OPS_FREE_MAX) { op->next = rw->free_ops; rw->free_ops = op; rw->nfree++; }
    else free(op);
}

/* An op is freed when both its deadline passed (or it was answered) and hiredis let go of it. */
static void op_timeout_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    rbus_op *op = container_of(t, rbus_op, tmo);
    if (!op->fired) {
        rbus_count(op->rw->w->srv, RBC_TIMEOUTS);
        op->fired = 1;
        if (op->cb) op->cb(op->ud, NULL, "redis timeout");
    }
}

static void op_reply_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
    rbus_op *op = privdata;
    rbus_w *rw = op->rw;
    redisReply *r = reply;
    ev_timer_stop(rw->w->loop, &op->tmo);
    if (!r) rbus_count(rw->w->srv, RBC_ERRORS);
    else if (r->type == REDIS_REPLY_ERROR) {
        rbus_count(rw->w->srv, RBC_ERRORS);
        if (op->script >= 0 && strncmp(r->str, "NOSCRIPT", 8) == 0) rw->sha[op->script][0] = 0;
    }
    if (!op->fired && !rw->stopping) {
        op->fired = 1;
        if (op->cb) {
            if (!r) op->cb(op->ud, NULL, "redis connection lost");
            else op->cb(op->ud, r, r->type == REDIS_REPLY_ERROR ? r->str : NULL);
        }
    }
    op_free(op);
}

void rbus_cancel(rbus_op *op)
{
    if (!op) return;
    op->fired = 1;
    op->cb = NULL;
    ev_timer_stop(op->rw->w->loop, &op->tmo);
}

static rbus_op *send_argv(rbus_w *rw, int script, int argc, const char **argv, const size_t *lens,
                          double timeout_s, rbus_cb cb, void *ud)
{
    if (!rw || rw->stopping || !rw->cmd.up || !rw->cmd.ac) return NULL;
    rbus_op *op = op_new(rw);
    if (!op) return NULL;
    op->cb = cb;
    op->ud = ud;
    op->script = script;
    if (redisAsyncCommandArgv(rw->cmd.ac, op_reply_cb, op, argc, argv, lens) != REDIS_OK) {
        op_free(op);
        return NULL;
    }
    ev_timer_init(&op->tmo, op_timeout_cb, timeout_s > 0 ? timeout_s : 1.0, 0);
    ev_timer_start(rw->w->loop, &op->tmo);
    return op;
}

rbus_op *rbus_command(worker *w, int argc, const char **argv, const size_t *lens, double timeout_s,
                      rbus_cb cb, void *ud)
{
    size_t l[32];
    if (argc <= 0 || argc > 32) return NULL;
    if (!lens) { for (int i = 0; i < argc; i++) l[i] = strlen(argv[i]); lens = l; }
    return send_argv(w->rbus, -1, argc, argv, lens, timeout_s, cb, ud);
}

rbus_op *rbus_eval(worker *w, int script, int nkeys, int argc, const char **argv, const size_t *lens,
                   double timeout_s, rbus_cb cb, void *ud)
{
    rbus_w *rw = w->rbus;
    const char *av[40];
    size_t al[40];
    char nk[16];
    if (!rw || script < 0 || script >= RBUS_NSCRIPTS || argc < 0 || argc > 36 || nkeys > argc) return NULL;
    int sha = rw->sha[script][0] != 0;
    av[0] = sha ? "EVALSHA" : "EVAL";
    av[1] = sha ? rw->sha[script] : rbus_script_src[script];
    al[0] = strlen(av[0]);
    al[1] = strlen(av[1]);
    al[2] = (size_t)snprintf(nk, sizeof nk, "%d", nkeys);
    av[2] = nk;
    for (int i = 0; i < argc; i++) {
        av[3 + i] = argv[i];
        al[3 + i] = lens ? lens[i] : strlen(argv[i]);
    }
    return send_argv(rw, script, argc + 3, av, al, timeout_s, cb, ud);
}

/* ------------------------------------------------------------------ connections */

static void sha_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
    rconn *rc = ac->data;
    redisReply *r = reply;
    intptr_t i = (intptr_t)privdata;
    if (rc && r && r->type == REDIS_REPLY_STRING && r->len == 40) memcpy(rc->rw->sha[i], r->str, 41);
}

static void auth_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
    redisReply *r = reply;
    if (r && r->type == REDIS_REPLY_ERROR) log_msg(LOG_ERROR, "redis: %s: %s", (const char *)privdata, r->str);
}

/* Sentinel: after every (re)connect the node must say it is the master; a demoted old master or
 * a stale answer from the Sentinels sends the connection back to ask again. */
static void role_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
    redisReply *r = reply;
    rconn *rc = privdata;
    if (!r || ac->data != rc) return;
    int master = r->type == REDIS_REPLY_ARRAY && r->elements > 0 && r->element[0]->type == REDIS_REPLY_STRING &&
                 strcmp(r->element[0]->str, "master") == 0;
    if (master) return;
    rbus_w *rw = rc->rw;
    log_msg(LOG_WARN, "redis: the node the Sentinels named is not the master (ROLE says %s): asking again",
            r->type == REDIS_REPLY_ARRAY && r->elements && r->element[0]->type == REDIS_REPLY_STRING ? r->element[0]->str
                                                                                                 : "something else");
    rbus_count(rw->w->srv, RBC_NOT_MASTER);
    sentinel_refresh(rw->rs->sent);
    redisAsyncDisconnect(ac);           /* on_disconnect: went_down, retry with backoff */
}

/* The subscriber hands each event, with its global id, to the bus user. */
static void deliver_message(rbus_w *rw, const char *p, size_t n)
{
    rbus_srv *rs = rw->rs;
    const char *nl = memchr(p, '\n', n);
    if (!nl || nl - p > 200) return;
    char head[256];
    memcpy(head, p, (size_t)(nl - p));
    head[nl - p] = 0;
    unsigned long long id;
    size_t chl, evl;
    int retry;
    char origin[40];
    if (sscanf(head, "%llu %zu %zu %d %39s", &id, &chl, &evl, &retry, origin) != 5) return;
    const char *body = nl + 1;
    size_t blen = n - (size_t)(body - p);
    if (chl + evl > blen || chl == 0 || evl > 200) return;
    rbus_count(rw->w->srv, RBC_RECEIVED);
    rbus_note_id(rw->w->srv, id);
    rbus_event ev = {
        .id = id, .channel = body, .chlen = chl, .event = body + chl, .evlen = evl,
        .data = body + chl + evl, .datalen = blen - chl - evl, .retry = retry, .origin = origin,
    };
    if (rs->bus.on_event) rs->bus.on_event(rs->bus.ud, rw->w, &ev);
}

void rbus_set_handlers(server *s, const rbus_handlers *h)
{
    rbus_srv *rs = s->rbus;
    if (rs) rs->bus = *h;
}

void rbus_raise_floor(worker *w)
{
    rbus_w *rw = w->rbus;
    if (!rw) return;
    char fl[32];
    snprintf(fl, sizeof fl, "%llu", (unsigned long long)rbus_id_floor(w->srv));
    const char *av[] = {rw->rs->counter, fl};
    rbus_eval(w, RBUS_FLOOR, 1, 2, av, NULL, 1.0, NULL, NULL);
}

static void sub_msg_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
    rconn *rc = ac->data;
    redisReply *r = reply;
    if (!rc || !r || r->type != REDIS_REPLY_ARRAY || r->elements < 3) return;
    rbus_w *rw = rc->rw;
    const redisReply *kind = r->element[0];
    if (kind->type != REDIS_REPLY_STRING) return;
    if (strcmp(kind->str, "subscribe") == 0) {
        atomic_store(&rw->rs->sub_up, 1);
        log_msg(LOG_INFO, "redis: subscribed to %s: cross-instance SSE is live", rw->rs->pubchan);
        if (rw->rs->bus.on_link) rw->rs->bus.on_link(rw->rs->bus.ud, rw->w, 1);
        return;
    }
    if (strcmp(kind->str, "message") == 0 && r->element[2]->type == REDIS_REPLY_STRING)
        deliver_message(rw, r->element[2]->str, r->element[2]->len);
}

static void retry_later(rconn *rc)
{
    rbus_w *rw = rc->rw;
    if (rw->stopping) return;
    ev_timer_stop(rw->w->loop, &rc->retry_w);
    ev_timer_set(&rc->retry_w, rc->backoff, 0);
    ev_timer_start(rw->w->loop, &rc->retry_w);
    rc->backoff = rc->backoff * 2 > BACKOFF_MAX ? BACKOFF_MAX : rc->backoff * 2;
}

static void went_down(rconn *rc, const char *why)
{
    rbus_w *rw = rc->rw;
    rbus_srv *rs = rw->rs;
    if (rc->up && !rc->sub) atomic_fetch_sub(&rs->conns_up, 1);
    if (rc->sub && atomic_exchange(&rs->sub_up, 0) && !rw->stopping && rs->bus.on_link)
        rs->bus.on_link(rs->bus.ud, rw->w, 0);
    if (rc->up) rbus_count(rw->w->srv, RBC_ERRORS);
    rc->up = 0;
    rc->ac = NULL;
    if (!rw->stopping && !atomic_exchange(&rs->logged_down, 1))
        log_msg(LOG_WARN, "redis: connection lost (%s): local delivery and local limits continue; retrying", why);
    for (int i = 0; i < RBUS_NSCRIPTS && !rc->sub; i++) rw->sha[i][0] = 0;
    retry_later(rc);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    rconn *rc = ac->data;
    if (!rc) return;
    rbus_w *rw = rc->rw;
    ev_timer_stop(rw->w->loop, &rc->retry_w);
    if (status != REDIS_OK) {
        rc->ac = NULL;                 /* hiredis frees it after this callback */
        if (!rw->stopping && !atomic_exchange(&rw->rs->logged_down, 1))
            log_msg(LOG_WARN, "redis: cannot connect to %s: %s (retrying with backoff)", rw->rs->host, ac->errstr);
        retry_later(rc);
        return;
    }
    rc->up = 1;
    rc->backoff = BACKOFF_MIN;
    if (rc->ever_up) rbus_count(rw->w->srv, RBC_RECONNECTS);
    rc->ever_up = 1;
    if (atomic_exchange(&rw->rs->logged_down, 0)) log_msg(LOG_INFO, "redis: connected to %s", rw->rs->host);
    if (!rc->sub) atomic_fetch_add(&rw->rs->conns_up, 1);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    rconn *rc = ac->data;
    if (!rc) return;
    went_down(rc, status == REDIS_OK ? "closed" : ac->errstr);
}

/* Queues what every new connection needs first: AUTH, SELECT, then scripts or the subscription. */
static void conn_prime(rconn *rc)
{
    rbus_w *rw = rc->rw;
    rbus_srv *rs = rw->rs;
    redisAsyncContext *ac = rc->ac;
    if (rs->pass[0]) {
        if (rs->user[0]) redisAsyncCommand(ac, auth_cb, "AUTH", "AUTH %s %s", rs->user, rs->pass);
        else redisAsyncCommand(ac, auth_cb, "AUTH", "AUTH %s", rs->pass);
    }
    if (rs->db) redisAsyncCommand(ac, auth_cb, "SELECT", "SELECT %d", rs->db);
    if (rs->sent) redisAsyncCommand(ac, role_cb, rc, "ROLE");
    if (rc->sub) {
        /* Raise the shared id counter above this hub's ids BEFORE listening, so every event
         * this instance receives from now on carries an id its hub accepts. */
        char fl[32];
        snprintf(fl, sizeof fl, "%llu", (unsigned long long)rbus_id_floor(rw->w->srv));
        redisAsyncCommand(ac, auth_cb, "EVAL", "EVAL %s 1 %s %s", rbus_script_src[RBUS_FLOOR], rs->counter, fl);
        redisAsyncCommand(ac, sub_msg_cb, NULL, "SUBSCRIBE %s", rs->pubchan);
    } else {
        for (intptr_t i = 0; i < RBUS_NSCRIPTS; i++)
            redisAsyncCommand(ac, sha_cb, (void *)i, "SCRIPT LOAD %s", rbus_script_src[i]);
    }
}

static void retry_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    rconn *rc = container_of(t, rconn, retry_w);
    if (rc->ac && !rc->up) {            /* connect deadline passed: give up on this attempt */
        redisAsyncContext *ac = rc->ac;
        rc->ac = NULL;
        ac->data = NULL;
        redisAsyncFree(ac);
        if (!atomic_exchange(&rc->rw->rs->logged_down, 1))
            log_msg(LOG_WARN, "redis: connect to %s timed out (retrying with backoff)", rc->rw->rs->host);
        retry_later(rc);
        return;
    }
    if (!rc->ac) conn_start(rc);
}

/* On the Sentinel thread: a new master. Each worker moves its connections on its own loop. */
static void master_changed(void *ud)
{
    rbus_srv *rs = ud;
    pthread_mutex_lock(&rs->reg_lock);
    for (int i = 0; i < rs->nreg; i++) ev_async_send(rs->reg[i]->w->loop, &rs->reg[i]->switch_w);
    pthread_mutex_unlock(&rs->reg_lock);
}

static void switch_cb(struct ev_loop *loop, ev_async *aw, int revents)
{
    rbus_w *rw = container_of(aw, rbus_w, switch_w);
    if (rw->stopping) return;
    char host[256];
    int port;
    unsigned epoch = sentinel_master(rw->rs->sent, host, sizeof host, &port);
    rconn *cs[2] = {&rw->cmd, &rw->sub};
    int moved = 0;
    for (int i = 0; i < 2; i++) {
        rconn *rc = cs[i];
        if (rc->sub && (rw->w->idx != 0 || rw->w->test_mode)) continue;
        rc->backoff = BACKOFF_MIN;
        if (rc->ac && rc->epoch != epoch) {     /* connected (or connecting) to the old master */
            moved = 1;
            if (rc->up) {
                redisAsyncDisconnect(rc->ac);   /* on_disconnect -> went_down -> retry at once */
            } else {
                redisAsyncContext *ac = rc->ac;
                rc->ac = NULL;
                ac->data = NULL;
                redisAsyncFree(ac);
                conn_start(rc);
            }
        } else if (!rc->ac) {                   /* waiting out a backoff: try the new master now */
            ev_timer_stop(loop, &rc->retry_w);
            conn_start(rc);
        }
    }
    /* the first answer is a discovery, not a switch; count each switch once per process */
    if (rw->epoch_seen && epoch != rw->epoch_seen && rw->w->idx == 0) {
        rbus_count(rw->w->srv, RBC_MASTER_SWITCHES);
        log_msg(LOG_WARN, "redis: the Sentinels moved %s to %s:%d: %s", rw->rs->sent_desc, host, port,
                moved ? "reconnecting" : "connecting there");
    }
    rw->epoch_seen = epoch;
}

static void conn_start(rconn *rc)
{
    rbus_w *rw = rc->rw;
    rbus_srv *rs = rw->rs;
    redisAsyncContext *ac;
    if (rs->sent) {
        char host[256];
        int port;
        rc->epoch = sentinel_master(rs->sent, host, sizeof host, &port);
        if (!rc->epoch) {               /* no Sentinel has answered yet: master_changed() wakes us */
            retry_later(rc);
            return;
        }
        ac = redisAsyncConnect(host, port);
    } else {
        ac = rs->port ? redisAsyncConnect(rs->host, rs->port) : redisAsyncConnectUnix(rs->host);
    }
    if (!ac || ac->err) {
        if (ac) redisAsyncFree(ac);
        retry_later(rc);
        return;
    }
    ac->data = rc;
    rc->ac = ac;
    redisLibevAttach(rw->w->loop, ac);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    conn_prime(rc);                     /* hiredis buffers these until the socket is writable */
    ev_timer_stop(rw->w->loop, &rc->retry_w);
    ev_timer_set(&rc->retry_w, CONNECT_TIMEOUT, 0);
    ev_timer_start(rw->w->loop, &rc->retry_w);
}

int rbus_worker_init(worker *w)
{
    rbus_srv *rs = w->srv->rbus;
    w->rbus = NULL;
    if (!rs) return 0;
    rbus_w *rw = calloc(1, sizeof *rw);
    if (!rw) return -1;
    rw->w = w;
    rw->rs = rs;
    w->rbus = rw;
    rconn *cs[2] = {&rw->cmd, &rw->sub};
    for (int i = 0; i < 2; i++) {
        cs[i]->rw = rw;
        cs[i]->sub = i;
        cs[i]->backoff = BACKOFF_MIN;
        ev_init(&cs[i]->retry_w, retry_cb);
    }
    if (rs->sent) {
        char h[256];
        int pt;
        rw->epoch_seen = sentinel_master(rs->sent, h, sizeof h, &pt);   /* a later change is a switch */
        ev_async_init(&rw->switch_w, switch_cb);
        ev_async_start(w->loop, &rw->switch_w);
        pthread_mutex_lock(&rs->reg_lock);
        if (rs->nreg < (int)(sizeof rs->reg / sizeof rs->reg[0])) rs->reg[rs->nreg++] = rw;
        pthread_mutex_unlock(&rs->reg_lock);
    }
    conn_start(&rw->cmd);
    if (w->idx == 0 && !w->test_mode) conn_start(&rw->sub);
    return 0;
}

void rbus_worker_free(worker *w)
{
    rbus_w *rw = w->rbus;
    if (!rw) return;
    rw->stopping = 1;
    if (rw->rs->sent) {
        rbus_srv *rs = rw->rs;
        pthread_mutex_lock(&rs->reg_lock);
        for (int i = 0; i < rs->nreg; i++)
            if (rs->reg[i] == rw) { rs->reg[i] = rs->reg[--rs->nreg]; break; }
        pthread_mutex_unlock(&rs->reg_lock);
        ev_async_stop(w->loop, &rw->switch_w);
    }
    rconn *cs[2] = {&rw->cmd, &rw->sub};
    for (int i = 0; i < 2; i++) {
        ev_timer_stop(w->loop, &cs[i]->retry_w);
        if (cs[i]->ac) {
            redisAsyncContext *ac = cs[i]->ac;
            if (cs[i]->up && !cs[i]->sub) atomic_fetch_sub(&rw->rs->conns_up, 1);
            if (cs[i]->sub) atomic_store(&rw->rs->sub_up, 0);
            cs[i]->ac = NULL;
            ac->data = NULL;
            redisAsyncFree(ac);          /* pending ops are answered with NULL: freed, not called */
        }
    }
    for (rbus_op *op = rw->free_ops, *n; op; op = n) { n = op->next; free(op); }
    free(rw);
    w->rbus = NULL;
}

int rbus_ready(worker *w)
{
    rbus_w *rw = w->rbus;
    return rw && rw->cmd.up && !rw->stopping;
}

int rbus_links_up(server *s)
{
    rbus_srv *rs = s->rbus;
    return rs ? atomic_load(&rs->conns_up) : 0;
}


/* ------------------------------------------------------------------ metrics */

static const char *const counter_names[RBC_N] = {
    [RBC_ERRORS] = "sluice_redis_errors_total",
    [RBC_TIMEOUTS] = "sluice_redis_timeouts_total",
    [RBC_RECONNECTS] = "sluice_redis_reconnects_total",
    [RBC_RL_REDIS] = "sluice_redis_ratelimit_decisions_total",
    [RBC_RL_FALLBACK] = "sluice_redis_ratelimit_fallbacks_total",
    [RBC_PUB_REDIS] = "sluice_redis_publishes_total",
    [RBC_PUB_FAILED] = "sluice_redis_publish_failures_total",
    [RBC_RECEIVED] = "sluice_redis_events_received_total",
    [RBC_CAUGHT_UP] = "sluice_redis_sse_caught_up_total",
    [RBC_BUS_GAPS] = "sluice_redis_sse_gaps_total",
    [RBC_ID_CONFLICTS] = "sluice_redis_event_id_conflicts_total",
    [RBC_SSE_ADMIT] = "sluice_redis_sse_admissions_total",
    [RBC_SSE_ADMIT_FALLBACK] = "sluice_redis_sse_admission_fallbacks_total",
    [RBC_SSE_REPLAYED] = "sluice_redis_sse_replayed_total",
    [RBC_CACHE_ERRORS] = "sluice_redis_cache_errors_total",
    [RBC_MASTER_SWITCHES] = "sluice_redis_master_switches_total",
    [RBC_NOT_MASTER] = "sluice_redis_not_master_total",
};

static const char *const counter_help[RBC_N] = {
    [RBC_ERRORS] = "Redis commands that failed.",
    [RBC_TIMEOUTS] = "Redis commands that got no answer in time.",
    [RBC_RECONNECTS] = "Reconnections to Redis.",
    [RBC_RL_REDIS] = "Rate-limit decisions made by the Redis script.",
    [RBC_RL_FALLBACK] = "Rate-limit decisions made locally because Redis did not answer.",
    [RBC_PUB_REDIS] = "SSE publishes that went through Redis.",
    [RBC_PUB_FAILED] = "SSE publishes refused because Redis was unreachable, or not confirmed in time.",
    [RBC_RECEIVED] = "SSE events received from Redis.",
    [RBC_CAUGHT_UP] = "SSE events fetched from the Redis streams after the subscriber was cut off.",
    [RBC_BUS_GAPS] = "sluice-gap notices sent because events missed during a cut-off could not be fetched.",
    [RBC_ID_CONFLICTS] = "Events from Redis renumbered locally (id not above the hub's last).",
    [RBC_SSE_ADMIT] = "SSE streams admitted through the shared Redis caps.",
    [RBC_SSE_ADMIT_FALLBACK] = "SSE streams admitted on local caps only (Redis did not answer).",
    [RBC_SSE_REPLAYED] = "SSE events replayed from the Redis history.",
    [RBC_CACHE_ERRORS] = "app.cache operations that failed.",
    [RBC_MASTER_SWITCHES] = "Redis Sentinel announced a new master and the connections moved to it.",
    [RBC_NOT_MASTER] = "Connections that found a node that is not the master (ROLE) and reconnected.",
};

void rbus_metrics(server *s, buf *out)
{
    rbus_srv *rs = s->rbus;
    if (!rs) return;
    buf_printf(out, "# HELP sluice_redis_connected Live Redis connections (command: one per worker; subscriber: 0/1).\n"
                    "# TYPE sluice_redis_connected gauge\n"
                    "sluice_redis_connected{conn=\"command\"} %d\n"
                    "sluice_redis_connected{conn=\"subscriber\"} %d\n",
               atomic_load(&rs->conns_up), atomic_load(&rs->sub_up));
    for (int i = 0; i < RBC_N; i++)
        buf_printf(out, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", counter_names[i], counter_help[i],
                   counter_names[i], counter_names[i],
                   (unsigned long long)atomic_load_explicit(&rs->counters[i], memory_order_relaxed));
}

void rbus_status_json(server *s, buf *out)
{
    rbus_srv *rs = s->rbus;
    if (!rs) return;
    int up = atomic_load(&rs->conns_up), sub = atomic_load(&rs->sub_up);
    buf_printf(out, "\"redis\":{\"status\":\"%s\",\"instance\":\"%s\",\"connections\":%d,\"workers\":%d,\"subscriber\":%s",
               up == s->nworkers && sub ? "up" : up || sub ? "degraded" : "down", rs->instance, up, s->nworkers,
               sub ? "true" : "false");
    for (int i = 0; i < RBC_N; i++)
        buf_printf(out, ",\"%s\":%llu", counter_names[i] + 13,
                   (unsigned long long)atomic_load_explicit(&rs->counters[i], memory_order_relaxed));
    buf_puts(out, "},");
}
