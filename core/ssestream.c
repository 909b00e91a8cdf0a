/* ssestream.c: the connection side of SSE: a queue of refcounted events written with writev; with
 * Redis, caps that count every instance's streams and replay from the shared Redis streams.
 *
 * A stream starts on the request's connection (admission: the handler's answer, the caps, the
 * Redis round trip, the replay). Once admitted (ssestream_admitted) it takes the socket from the
 * connection (conn_release) and the connection is parked for the next request: an idle stream
 * keeps its own small struct (the hub subscription, the socket watcher, a timer entry, the event
 * queue), not the connection's parser, request buffers, request id or rate-limit state. */
#include "ssestream.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "log.h"
#include "rbus.h"
#include "sse.h"
#include "ssebus.h"
#include "sseenc.h"

#include "util.h"
#include "response.h"
#include "conn.h"
#include "server.h"
#include "worker.h"

/* What admission needs (channel names, user, Last-Event-ID, the Redis round trip). Freed when
 * the stream is admitted, except with Redis: member and user then name the stream in the
 * shared sets until it ends. */
typedef struct admission {
    rbus_op *op;                    /* admission in flight: the connection waits in CS_HANDLING */
    void (*done)(conn *c);          /* ends the request once that admission decided (ssestream_start) */
    char *adm;                      /* one block holding the copied channel names and user */
    const char *chans[SSE_MAX_SUB_CHANNELS];
    size_t nch;
    const char *user;
    char lastid[24];
    char member[96];                /* <instance>:<worker>:<conn>: this stream in the Redis sets */
} admission;

typedef struct ssestream {
    sse_sub sub;
    conn *c;                        /* the request's connection until adopt(), then NULL */
    worker *w;
    struct ssestream *prev, *next;  /* the worker's adopted streams */
    struct ssestream *dirty_next;
    sse_event **q;
    uint32_t head, len, cap;
    uint32_t off;                   /* bytes of q[head] already written */
    uint64_t last_progress_ms;
    uint64_t behind_since_ms;       /* when the queue last went over the bound (0: under it) */
    uint64_t skip_upto;             /* ids up to this were replayed from Redis: skip the hub's copies */
    uint64_t dropped;               /* sse.slow_policy = "drop_oldest": events dropped, not yet told */
    admission *a;
    /* once adopted: the socket, its watcher, the heartbeat (or goodbye) deadline, and the bytes
     * that go before the queue (headers, replay, heartbeats, notices), freed when written */
    ev_io io;
    tw_entry tmo;
    buf out;
    ssestream_end_fn on_end;        /* run when the stream ends, with end_app and end_ref */
    appstate *end_app;
    int end_ref;
    int fd;
    unsigned dirty : 1, registered : 1, drop_gaps : 1, counted : 1, writing : 1, closing : 1;
} ssestream;

#define ADMIT_DEADLINE 0.25         /* s: then local caps only (counted as a fallback) */

typedef struct sse_side {
    sse_worker *sw;
    ev_async inbox_w;
    ssestream *dirty;               /* streams with events queued during a drain */
    ssestream *streams;             /* adopted streams (they own their sockets) */
} sse_side;

static int stream_flush(ssestream *s);
static void stream_close(ssestream *s);
static void adopt(ssestream *s);

static void flush_dirty(sse_side *side)
{
    ssestream *s;
    while ((s = side->dirty)) {
        side->dirty = s->dirty_next;
        s->dirty = 0;
        if (!s->c) stream_flush(s);    /* before adoption, adopt() writes what is queued */
    }
}

/* The client's address, for a log line (not kept per stream). */
static const char *peer_ip(const ssestream *s, char *out, size_t n)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    snprintf(out, n, "?");
    if (s->c) { snprintf(out, n, "%s", s->c->ip); return out; }
    if (getpeername(s->fd, (struct sockaddr *)&ss, &sl) < 0) return out;
    if (ss.ss_family == AF_INET) inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, out, (socklen_t)n);
    else if (ss.ss_family == AF_INET6) inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, out, (socklen_t)n);
    else snprintf(out, n, "local");
    return out;
}

/* Closes the stream, or its connection while it has not taken the socket yet. */
static void s_close(ssestream *s)
{
    if (s->c) conn_close(s->c);
    else stream_close(s);
}

static void inbox_cb(struct ev_loop *loop, ev_async *aw, int revents)
{
    sse_side *side = container_of(aw, sse_side, inbox_w);
    sse_worker_drain(side->sw);
    flush_dirty(side);
}

static void wake(void *ud)
{
    worker *w = ud;
    sse_side *side = w->sse;
    ev_async_send(w->loop, &side->inbox_w);
}

int ssestream_worker_init(worker *w)
{
    sse_side *side = calloc(1, sizeof *side);
    if (!side) return -1;
    w->sse = side;
    side->sw = sse_worker_new(w->srv->ssehub, (unsigned)w->idx, wake, w);
    if (!side->sw) return -1;
    ev_async_init(&side->inbox_w, inbox_cb);
    ev_async_start(w->loop, &side->inbox_w);
    return 0;
}

void ssestream_worker_free(worker *w)
{
    sse_side *side = w->sse;
    if (!side) return;
    sse_worker_free(side->sw);
    free(side);
    w->sse = NULL;
}

static void deliver(sse_sub *sub, sse_event *e, void *ud)
{
    ssestream *s = ud;
    if (s->c && s->c->closed) return;
    worker *w = s->w;
    if (s->skip_upto) {             /* already sent from the Redis stream (or gap already reported) */
        uint64_t id = sse_event_id(e);
        if (id ? id <= s->skip_upto : s->drop_gaps) return;
    }
    const sconfig *cfg = w->app_cfg;
    /* a full replay always fits: the bound is at least the retention */
    size_t bound = cfg->sse_max_queue > cfg->sse_retention + 16 ? cfg->sse_max_queue : cfg->sse_retention + 16;
    if (s->len >= bound && !s->c) {
        if (stream_flush(s) < 0) return;    /* a burst in one drain: give the socket a chance first */
    }
    if (s->len >= bound && !cfg->sse_drop_oldest) {
        /* Over the bound is not yet slow: a burst published at once (one inbox drain) outruns the
         * socket buffers of a client that reads as fast as it can. The client is slow when it stays
         * over the bound without taking any bytes for sse.slow_timeout, or when the queue reaches
         * the hard cap (4 x the bound: memory stays bounded either way). */
        uint64_t now_ms = worker_now_us(w) / 1000;
        if (!s->behind_since_ms) s->behind_since_ms = now_ms;
        uint64_t since = s->behind_since_ms > s->last_progress_ms ? s->behind_since_ms : s->last_progress_ms;
        size_t hard = bound * 4;
        if (s->len >= hard || (double)(now_ms - since) >= cfg->sse_slow_timeout * 1000) {
            char ip[64];
            log_msg(LOG_WARN, "SSE client %s too slow (%u events queued, over sse.max_queue %zu for %.1f s): closing",
                    peer_ip(s, ip, sizeof ip), s->len, bound, (double)(now_ms - s->behind_since_ms) / 1000);
            atomic_fetch_add_explicit(&w->sse_slow_closed, 1, memory_order_relaxed);
            s_close(s);
            return;
        }
    } else if (s->len >= bound) {           /* drop_oldest: the queue stays at the bound */
        /* drop the oldest whole event (never one already half on the wire) and signal it */
        uint32_t at = s->off ? 1 : 0;
        if (s->len > at) {
            sse_event_unref(s->q[(s->head + at) % s->cap]);
            for (uint32_t i = at; i + 1 < s->len; i++) s->q[(s->head + i) % s->cap] = s->q[(s->head + i + 1) % s->cap];
            s->len--;
            s->dropped++;
            atomic_fetch_add_explicit(&w->sse_dropped, 1, memory_order_relaxed);
        }
    }
    if (s->len == s->cap) {
        uint32_t nc = s->cap ? s->cap * 2 : 16;
        sse_event **q = malloc(nc * sizeof *q);
        if (!q) return;
        for (uint32_t i = 0; i < s->len; i++) q[i] = s->q[(s->head + i) % s->cap];
        free(s->q);
        s->q = q;
        s->head = 0;
        s->cap = nc;
    }
    sse_event_ref(e);
    s->q[(s->head + s->len++) % s->cap] = e;
    if (!s->dirty) {
        sse_side *side = w->sse;
        s->dirty = 1;
        s->dirty_next = side->dirty;
        side->dirty = s;
    }
}

static void refuse(conn *c, int status, const char *msg)
{
    resp_error(c, status, msg, 0);
}

/* Which argument sse_worker_subscribe refused (SSE_ERR_ARG) and why, for the 400 (and the log:
 * a bad channel name is the authorizer's mistake, not the client's). */
static void arg_reason(char *msg, size_t n, const admission *s, const char *lastid)
{
    uint64_t id;
    if (lastid && lastid[0] && sseenc_parse_id(lastid, &id)) {
        snprintf(msg, n, "Last-Event-ID is not an event id: ids are decimal numbers such as 17331234567890 "
                         "(send back the id of the last event received, or no Last-Event-ID)");
        return;
    }
    for (size_t i = 0; i < s->nch; i++) {
        const char *ch = s->chans[i];
        size_t l = strlen(ch);
        for (size_t k = 0; k < l && l <= SSE_MAX_CHANNEL_LEN; k++)
            if ((unsigned char)ch[k] < 0x20 || ch[k] == 0x7f) l = SSE_MAX_CHANNEL_LEN + 1;
        for (size_t j = 0; j < i; j++)
            if (!strcmp(ch, s->chans[j])) {
                snprintf(msg, n, "the SSE handler returned channel \"%.60s\" twice (list each channel once)", ch);
                log_msg(LOG_WARN, "SSE %s", msg);
                return;
            }
        if (l == 0 || l > SSE_MAX_CHANNEL_LEN) {
            snprintf(msg, n, "the SSE handler returned a bad channel name (channels are 1 to %d bytes without control characters)",
                     SSE_MAX_CHANNEL_LEN);
            log_msg(LOG_WARN, "SSE %s", msg);
            return;
        }
    }
    snprintf(msg, n, "bad SSE subscription");
}

/* ---------------------------------------------------------------- Redis: caps and replay */

static double member_ttl(const sconfig *cfg) { return cfg->sse_heartbeat * 3 + 10; }

static size_t user_key(const server *srv, const admission *s, char *out, size_t cap)
{
    int n = s->user ? snprintf(out, cap, "%ssse:u:%s", rbus_prefix(srv), s->user)
                    : snprintf(out, cap, "%ssse:conns", rbus_prefix(srv));
    return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

/* Refreshes (remove = 0) or removes this stream's entries in the shared sets; fire and forget. */
static void touch(ssestream *s, int remove)
{
    worker *w = s->w;
    admission *a = s->a;
    if (!w->rbus || !a || !a->member[0]) return;
    char total[96], ukey[400], ttl[24];
    snprintf(total, sizeof total, "%ssse:conns", rbus_prefix(w->srv));
    user_key(w->srv, a, ukey, sizeof ukey);
    snprintf(ttl, sizeof ttl, "%.0f", member_ttl(w->app_cfg) * 1000);
    const char *av[] = {total, ukey, a->member, ttl, remove ? "1" : "0", a->user ? "1" : "0"};
    rbus_eval(w, RBUS_SSE_TOUCH, 2, 6, av, NULL, 1.0, NULL, NULL);
}

static void admission_free(ssestream *s)
{
    if (!s->a) return;
    if (s->a->op) rbus_cancel(s->a->op);
    free(s->a->adm);
    free(s->a);
    s->a = NULL;
}

/* Releases the stream (queued events, Redis entries, the pending admission). */
static void drop_stream(ssestream *s)
{
    if (s->a && s->a->op) { rbus_cancel(s->a->op); s->a->op = NULL; }
    if (s->registered) touch(s, 1);
    for (uint32_t i = 0; i < s->len; i++) sse_event_unref(s->q[(s->head + i) % s->cap]);
    free(s->q);
    admission_free(s);
    buf_free(&s->out);
    if (s->c) s->c->sse = NULL;
    free(s);
}

static void put_event(buf *b, uint64_t id, const char *ev, size_t evl, const char *retry, const char *d, size_t dl)
{
    buf_printf(b, "id: %llu\n", (unsigned long long)id);
    if (evl) { buf_puts(b, "event: "); buf_append(b, ev, evl); buf_puts(b, "\n"); }
    if (retry && *retry && *retry != '-') buf_printf(b, "retry: %s\n", retry);
    size_t start = 0;
    for (size_t i = 0;;) {            /* CR, LF and CRLF each end a data line, as the hub encodes */
        if (i == dl || d[i] == '\r' || d[i] == '\n') {
            buf_puts(b, "data: ");
            buf_append(b, d + start, i - start);
            buf_puts(b, "\n");
            if (i == dl) break;
            i += (d[i] == '\r' && i + 1 < dl && d[i + 1] == '\n') ? 2 : 1;
            start = i;
        } else {
            i++;
        }
    }
    buf_puts(b, "\n");
}

typedef struct rent {
    uint64_t id;
    const redisReply *fields;
} rent;

static int rent_cmp(const void *a, const void *b)
{
    uint64_t x = ((const rent *)a)->id, y = ((const rent *)b)->id;
    return x < y ? -1 : x > y;
}

static const char *field(const redisReply *f, const char *name, size_t *len)
{
    for (size_t i = 0; i + 1 < f->elements; i += 2)
        if (f->element[i]->type == REDIS_REPLY_STRING && strcmp(f->element[i]->str, name) == 0 &&
            f->element[i + 1]->type == REDIS_REPLY_STRING) {
            *len = f->element[i + 1]->len;
            return f->element[i + 1]->str;
        }
    *len = 0;
    return "";
}

/* Writes what the client missed from the Redis streams (gap notices first, then the events in id
 * order); returns the highest id it covers (at least the client's Last-Event-ID). */
static uint64_t replay(conn *c, const admission *s, const redisReply *r, uint64_t last)
{
    size_t total = 0;
    for (size_t i = 0; i < s->nch; i++) {
        const redisReply *g = r->element[1 + 2 * i], *l = r->element[2 + 2 * i];
        if (g->type != REDIS_REPLY_INTEGER || l->type != REDIS_REPLY_ARRAY) return last;
        total += l->elements;
    }
    rent *ents = total ? malloc(total * sizeof *ents) : NULL;
    if (total && !ents) return last;
    size_t n = 0;
    for (size_t i = 0; i < s->nch; i++) {
        const redisReply *g = r->element[1 + 2 * i], *l = r->element[2 + 2 * i];
        uint64_t oldest = 0;
        for (size_t k = 0; k < l->elements; k++) {
            const redisReply *e = l->element[k];
            if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 || e->element[0]->type != REDIS_REPLY_STRING ||
                e->element[1]->type != REDIS_REPLY_ARRAY) continue;
            ents[n].id = strtoull(e->element[0]->str, NULL, 10);
            ents[n].fields = e->element[1];
            if (!oldest) oldest = ents[n].id;
            n++;
        }
        if (g->integer) {
            buf_printf(&c->out, "event: " SSE_GAP_EVENT "\ndata: {\"channel\":\"");
            for (const char *p = s->chans[i]; *p; p++) {
                if (*p == '"' || *p == '\\') buf_append(&c->out, "\\", 1);
                buf_append(&c->out, p, 1);
            }
            buf_printf(&c->out, "\",\"last_event_id\":%llu,\"oldest\":%llu}\n\n", (unsigned long long)last,
                       (unsigned long long)oldest);
        }
    }
    qsort(ents, n, sizeof *ents, rent_cmp);
    uint64_t upto = last;
    for (size_t k = 0; k < n; k++) {
        size_t el, dl, rl;
        const char *ev = field(ents[k].fields, "e", &el), *d = field(ents[k].fields, "d", &dl);
        const char *rt = field(ents[k].fields, "r", &rl);
        put_event(&c->out, ents[k].id, ev, el, rl ? rt : NULL, d, dl);
        if (ents[k].id > upto) upto = ents[k].id;
    }
    free(ents);
    rbus_count(c->w->srv, RBC_SSE_REPLAYED);
    return upto;
}

static void write_headers(conn *c)
{
    worker_update_date(c->w);
    buf_printf(&c->out,
               "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
               "X-Accel-Buffering: no\r\nConnection: keep-alive\r\nDate: %s\r\n\r\n: ok\n\n", c->w->date);
}

/* Subscribes s in the local hub (headers already at mark in c->out). 0: c is a stream; 1: refused
 * (the refusal is queued, s is freed). */
static int subscribe_local(conn *c, ssestream *s, size_t mark, const char *lastid)
{
    worker *w = c->w;
    const sconfig *cfg = w->app_cfg;
    sse_side *side = w->sse;
    admission *a = s->a;
    int rc = sse_worker_subscribe(side->sw, &s->sub, a->chans, a->nch, a->user, lastid && lastid[0] ? lastid : NULL,
                                  worker_now_us(w) / 1000, deliver, s);
    if (rc != SSE_OK) {
        char msg[256];
        if (rc == SSE_ERR_ARG) arg_reason(msg, sizeof msg, a, lastid); /* before s is freed */
        c->out.len = mark;
        drop_stream(s);
        switch (rc) {
        case SSE_ERR_USER:
            snprintf(msg, sizeof msg, "too many event streams for this user (sse.per_user = %u)", cfg->sse_per_user);
            refuse(c, 429, msg);
            break;
        case SSE_ERR_TOTAL:
            refuse(c, 503, "server at sse.max_connections, retry later");
            break;
        case SSE_ERR_CHANNEL:
            refuse(c, 503, "channel subscriber limit reached");
            break;
        case SSE_ERR_ARG:
            refuse(c, 400, msg);
            break;
        default:
            refuse(c, 503, sse_strerror(rc));
        }
        return 1;
    }
    c->status = 200;
    c->state = CS_SSE;              /* admitted: ssestream_admitted hands the socket to the stream */
    s->last_progress_ms = worker_now_us(w) / 1000;
    return 0;
}

static void admit_cb(void *ud, const redisReply *r, const char *err)
{
    ssestream *s = ud;
    conn *c = s->c;
    worker *w = c->w;
    const sconfig *cfg = w->app_cfg;
    admission *a = s->a;
    void (*done)(conn *c) = a->done;   /* a may go before it runs */
    a->op = NULL;
    long long verdict = -1;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements >= 1 && r->element[0]->type == REDIS_REPLY_INTEGER)
        verdict = r->element[0]->integer;
    if (verdict == 1 || verdict == 2) {
        drop_stream(s);
        if (verdict == 2) {
            char msg[160];
            snprintf(msg, sizeof msg, "too many event streams for this user (sse.per_user = %u, all instances)",
                     cfg->sse_per_user);
            refuse(c, 429, msg);
        } else {
            refuse(c, 503, "cluster at sse.max_connections, retry later");
        }
        done(c);
        return;
    }
    s->registered = 1;                  /* on a timeout the script may have run: remove at close */
    if (verdict == 0) {
        rbus_count(w->srv, RBC_SSE_ADMIT);
    } else {
        rbus_count(w->srv, RBC_SSE_ADMIT_FALLBACK);   /* Redis failed: local caps only */
    }
    size_t mark = c->out.len;
    write_headers(c);
    char lid[24];
    const char *lastid = a->lastid[0] ? a->lastid : NULL;
    const redisReply *ep = r && r->elements == 2 + 2 * a->nch ? r->element[1 + 2 * a->nch] : NULL;
    /* Redis's streams replay only when they are the history this instance knows; after Redis
     * lost its data they would look complete while they are not: then the hub alone replays
     * (it has what this instance received and marks what it missed) */
    if (verdict == 0 && lastid && ep && ep->type == REDIS_REPLY_STRING &&
        ssebus_redis_replay_ok(w->srv, ep->str, strtoull(lastid, NULL, 10))) {
        uint64_t upto = replay(c, a, r, strtoull(lastid, NULL, 10));
        snprintf(lid, sizeof lid, "%llu", (unsigned long long)upto);
        lastid = lid;
        s->skip_upto = upto;
        s->drop_gaps = 1;
    }
    if (subscribe_local(c, s, mark, lastid) == 0)
        s->drop_gaps = 0;               /* the hub's replay gaps were superseded by Redis's: a gap from now on is news */
    done(c);                            /* a stream (CS_SSE: the caller logs it, then ssestream_admitted) or a refusal */
}

/* Copies what the asynchronous admission needs (the Lua strings die when the handler returns)
 * and names the stream in the shared sets. -1 when it cannot (the local path decides). */
static int admit_prepare(conn *c, admission *s, const char *const *chans, size_t nch, const char *user,
                         const char *lastid)
{
    worker *w = c->w;
    size_t need = 0, ul = user ? strlen(user) : 0;
    if (lastid) {
        size_t k = 0;                   /* only a plain decimal goes to Redis; the hub rejects the rest */
        while (lastid[k] >= '0' && lastid[k] <= '9') k++;
        if (!k || k >= 20 || lastid[k]) return -1;
        memcpy(s->lastid, lastid, k + 1);
    }
    for (size_t i = 0; i < nch; i++) need += strlen(chans[i]) + 1;
    if (ul > 200 || !(s->adm = malloc(need + ul + 1))) return -1;
    char *p = s->adm;
    for (size_t i = 0; i < nch; i++) {
        size_t l = strlen(chans[i]) + 1;
        memcpy(p, chans[i], l);
        s->chans[i] = p;
        p += l;
    }
    s->nch = nch;
    if (user) { memcpy(p, user, ul + 1); s->user = p; }
    snprintf(s->member, sizeof s->member, "%s:%d:%p:%u", rbus_instance(w->srv), w->idx, (void *)c, c->gen);
    return 0;
}

/* Asks Redis for the cross-instance caps (and the missed events when the client sent a
 * Last-Event-ID). Returns 1 when the admission is in flight. */
static int admit_send(conn *c, ssestream *st)
{
    admission *s = st->a;
    worker *w = c->w;
    const sconfig *cfg = w->app_cfg;
    const char *prefix = rbus_prefix(w->srv);
    char total[96], ukey[400], ttl[24], maxt[16], peru[16], rmax[16], epoch[96];
    snprintf(epoch, sizeof epoch, "%ssse:epoch", prefix);
    char streams[SSE_MAX_SUB_CHANNELS][320];
    const char *av[10 + SSE_MAX_SUB_CHANNELS];
    int nk = 2, na = 0;
    snprintf(total, sizeof total, "%ssse:conns", prefix);
    user_key(w->srv, s, ukey, sizeof ukey);
    av[na++] = total;
    av[na++] = ukey;
    if (s->lastid[0])
        for (size_t i = 0; i < s->nch; i++) {
            snprintf(streams[i], sizeof streams[i], "%ssse:s:%s", prefix, s->chans[i]);
            av[na++] = streams[i];
            nk++;
        }
    snprintf(ttl, sizeof ttl, "%.0f", member_ttl(cfg) * 1000);
    snprintf(maxt, sizeof maxt, "%u", cfg->sse_max);
    snprintf(peru, sizeof peru, "%u", cfg->sse_per_user);
    snprintf(rmax, sizeof rmax, "%u", cfg->sse_retention ? cfg->sse_retention : 1);
    av[na++] = s->member;
    av[na++] = ttl;
    av[na++] = maxt;
    av[na++] = peru;
    av[na++] = s->user ? "1" : "0";
    av[na++] = s->lastid;
    av[na++] = rmax;
    av[na++] = epoch;
    s->op = rbus_eval(w, RBUS_SSE_ADMIT, nk, na, av, NULL, ADMIT_DEADLINE, admit_cb, st);
    return s->op != NULL;
}

int ssestream_start(conn *c, const ssestream_accept *acc, void (*done)(conn *c))
{
    worker *w = c->w;
    const sconfig *cfg = w->app_cfg;
    const char *const *chans = acc->chans;
    size_t nch = acc->nch;
    const char *user = acc->user;

    char lastid[64] = "";
    size_t ln;
    const char *h = http_req_header(&c->req, "last-event-id", &ln);
    int bad_id = 0;        /* ids are decimal numbers: anything this long is not one */
    if (h) {
        if (ln < sizeof lastid) { memcpy(lastid, h, ln); lastid[ln] = 0; }
        else bad_id = 1;
    } else {
        const char *url = http_req_url(&c->req);
        const char *q = strstr(url, "lastEventId=");
        if (q) {
            size_t k = strcspn(q + 12, "&");
            if (k < sizeof lastid) { memcpy(lastid, q + 12, k); lastid[k] = 0; }
            else bad_id = 1;
        }
    }
    if (bad_id) { refuse(c, 400, "Last-Event-ID is not an event id: ids are decimal numbers such as 17331234567890 (this one is over 63 bytes)"); return -1; }

    ssestream *s = calloc(1, sizeof *s);
    admission *ad = s ? calloc(1, sizeof *ad) : NULL;
    if (!ad) { free(s); refuse(c, 503, "out of memory"); return -1; }
    s->c = c;
    s->w = w;
    s->a = ad;
    s->fd = -1;
    c->sse = s;
    if (w->rbus && admit_prepare(c, ad, chans, nch, user, lastid[0] ? lastid : NULL) == 0) {
        /* Several instances: the caps count every instance's streams, and a reconnecting client
         * gets what it missed from Redis. The connection waits (CS_HANDLING) for the answer. */
        ad->done = done;
        if (rbus_ready(w) && admit_send(c, s)) {
            c->status = 200;
            c->state = CS_HANDLING;
            conn_set_timeout(c, TMO_HANDLER, cfg->request_timeout);
            return 2;
        }
        /* Redis is down: local caps decide; the heartbeat registers the stream once it is back */
        rbus_count(w->srv, RBC_SSE_ADMIT_FALLBACK);
        s->registered = 1;
        size_t mark = c->out.len;
        write_headers(c);
        return subscribe_local(c, s, mark, ad->lastid) ? -1 : 1;
    }
    free(ad->adm);
    ad->adm = NULL;
    ad->nch = nch;
    for (size_t i = 0; i < nch; i++) ad->chans[i] = chans[i];   /* the caller's strings, alive until we return */
    ad->user = user;
    size_t mark = c->out.len;
    write_headers(c);
    int rc = subscribe_local(c, s, mark, lastid);
    if (rc == 0) { ad->user = NULL; ad->nch = 0; }              /* they pointed at the caller's strings */
    return rc ? -1 : 1;
}

/* Writes s->out, then the queued events, with writev. 1 while some remain (the socket is full),
 * 0 when all is written, -1 when the stream was closed (s is freed). */
static int stream_flush(ssestream *s)
{
    worker *w = s->w;
    for (;;) {
        if (s->dropped && s->off == 0) {   /* between two events: tell the client */
            buf_printf(&s->out, "event: sluice-dropped\ndata: {\"dropped\":%llu}\n\n", (unsigned long long)s->dropped);
            s->dropped = 0;
        }
        if (!s->len && !buf_pending(&s->out)) break;
        struct iovec iov[64];
        int n = 0;
        size_t outn = buf_pending(&s->out);
        if (outn) {
            iov[n].iov_base = s->out.data + s->out.off;
            iov[n].iov_len = outn;
            n++;
        }
        for (uint32_t i = 0; i < s->len && n < 64; i++) {
            size_t len;
            const char *p = sse_event_wire(s->q[(s->head + i) % s->cap], &len);
            size_t skip = i == 0 ? s->off : 0;
            iov[n].iov_base = (void *)(p + skip);
            iov[n].iov_len = len - skip;
            n++;
        }
        ssize_t wr = writev(s->fd, iov, n);
        if (wr < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (!s->writing) {
                    s->writing = 1;
                    ev_io_stop(w->loop, &s->io);
                    ev_io_set(&s->io, s->fd, EV_READ | EV_WRITE);
                    ev_io_start(w->loop, &s->io);
                }
                return 1;
            }
            stream_close(s);
            return -1;
        }
        s->last_progress_ms = worker_now_us(w) / 1000;
        size_t left = (size_t)wr;
        if (outn) {
            size_t k = left < outn ? left : outn;
            /* counted as the connection counted them (events are not in bytes_out) */
            atomic_fetch_add_explicit(&w->bytes_out, (unsigned long long)k, memory_order_relaxed);
            s->out.off += k;
            left -= k;
            if (!buf_pending(&s->out)) buf_free(&s->out);   /* an idle stream keeps no buffer */
        }
        while (left && s->len) {
            size_t len;
            sse_event *e = s->q[s->head];
            sse_event_wire(e, &len);
            size_t rem = len - s->off;
            if (left >= rem) {
                left -= rem;
                s->off = 0;
                sse_event_unref(e);
                s->head = (s->head + 1) % s->cap;
                s->len--;
            } else {
                s->off += (uint32_t)left;
                left = 0;
            }
        }
        if (!s->len) s->behind_since_ms = 0;       /* caught up */
    }
    if (s->writing) {
        s->writing = 0;
        ev_io_stop(w->loop, &s->io);
        ev_io_set(&s->io, s->fd, EV_READ);
        ev_io_start(w->loop, &s->io);
    }
    if (s->closing) { stream_close(s); return -1; }
    return 0;
}

static void arm(ssestream *s, double seconds)
{
    timerwheel_add(s->w->tw, &s->tmo, worker_now_us(s->w) / 1000 + (uint64_t)(seconds * 1000));
}

/* Shutdown: a `retry:` hint with jitter (when nothing is half-written), then close. */
static void stream_goodbye(ssestream *s)
{
    if (!s->len && !buf_pending(&s->out)) {
        /* spread the reconnects of thousands of clients over 1-5 s */
        buf_printf(&s->out, "retry: %d\n\n", 1000 + (int)(random() % 4000));
    }
    s->closing = 1;
    arm(s, 2);                      /* bounded: a client that does not read is cut */
    stream_flush(s);
}

/* Heartbeat tick: a comment line when idle; closes streams that made no progress for
 * sse.cleanup_interval. */
static void stream_heartbeat(ssestream *s)
{
    worker *w = s->w;
    const sconfig *cfg = w->app_cfg;
    uint64_t now = worker_now_us(w) / 1000;
    if (s->len && now - s->last_progress_ms > (uint64_t)(cfg->sse_cleanup * 1000)) {
        char ip[64];
        log_msg(LOG_INFO, "SSE client %s made no progress for %.0f s: closing", peer_ip(s, ip, sizeof ip), cfg->sse_cleanup);
        stream_close(s);
        return;
    }
    if (w->rbus) touch(s, 0);       /* keeps this stream counted in the shared caps */
    arm(s, cfg->sse_heartbeat);
    if (!s->len && !buf_pending(&s->out)) {
        static const char hb[] = ": hb\n\n";
        buf_append(&s->out, hb, sizeof hb - 1);
        stream_flush(s);
    }
}

static void stream_tmo_cb(tw_entry *e)
{
    ssestream *s = container_of(e, ssestream, tmo);
    if (s->closing) stream_close(s);
    else stream_heartbeat(s);
}

static void stream_io_cb(struct ev_loop *loop, ev_io *iow, int revents)
{
    ssestream *s = container_of(iow, ssestream, io);
    if (revents & EV_READ) {        /* a stream only reads to notice the client leaving */
        char sink[512];
        ssize_t n = recv(s->fd, sink, sizeof sink, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            stream_close(s);
            return;
        }
    }
    if (revents & EV_WRITE) stream_flush(s);
}

static void stream_close(ssestream *s)
{
    worker *w = s->w;
    sse_side *side = w->sse;
    ev_io_stop(w->loop, &s->io);
    tw_entry_cancel(&s->tmo);
    sse_worker_unsubscribe(side->sw, &s->sub);
    if (s->dirty) {
        ssestream **pp = &side->dirty;
        while (*pp && *pp != s) pp = &(*pp)->dirty_next;
        if (*pp) *pp = s->dirty_next;
    }
    if (s->prev) s->prev->next = s->next;
    else side->streams = s->next;
    if (s->next) s->next->prev = s->prev;
    int fd = s->fd, counted = s->counted;
    ssestream_end_fn on_end = s->on_end;
    appstate *app = s->end_app;
    int ref = s->end_ref;
    drop_stream(s);
    if (on_end && app) on_end(app, ref);
    conn_socket_done(w, fd, counted);
}

/* The admitted stream takes the socket: the connection (its parser, request, buffers, request
 * id, rate-limit state) goes back to the worker's free list. */
static void adopt(ssestream *s)
{
    conn *c = s->c;
    worker *w = c->w;
    sse_side *side = w->sse;
    s->end_app = c->sse_app;
    s->end_ref = c->sse_close_ref;
    c->sse_app = NULL;
    c->sse_close_ref = 0;
    s->out = c->out;                /* the headers (and a replay) not written yet */
    memset(&c->out, 0, sizeof c->out);
    if (!s->registered) admission_free(s);   /* with Redis, member and user name it until the end */
    c->sse = NULL;
    s->c = NULL;
    http_req_free(&c->req);
    buf_free(&c->in);
    int counted;
    s->fd = conn_release(c, &counted);
    s->counted = counted != 0;
    s->next = side->streams;
    if (side->streams) side->streams->prev = s;
    side->streams = s;
    ev_io_init(&s->io, stream_io_cb, s->fd, EV_READ);
    ev_io_start(w->loop, &s->io);
    tw_entry_init(&s->tmo, stream_tmo_cb);
    arm(s, w->app_cfg->sse_heartbeat);
    stream_flush(s);
}

void ssestream_admitted(conn *c, ssestream_end_fn on_end)
{
    ssestream *s = c->sse;
    if (!s) return;
    s->on_end = on_end;
    if (c->state == CS_SSE) adopt(s);   /* (called once admitted: ssestream_start's 1, or its done) */
}

void ssestream_stop(conn *c)
{
    ssestream *s = c->sse;
    if (!s) return;
    sse_side *side = c->w->sse;
    if (!(s->a && s->a->op)) sse_worker_unsubscribe(side->sw, &s->sub);   /* not subscribed while admission is pending */
    if (s->dirty) {       /* unlink from the dirty list */
        ssestream **pp = &side->dirty;
        while (*pp && *pp != s) pp = &(*pp)->dirty_next;
        if (*pp) *pp = s->dirty_next;
    }
    drop_stream(s);
}

void ssestream_worker_stop(worker *w)
{
    sse_side *side = w->sse;
    if (!side) return;
    for (ssestream *s = side->streams, *n; s; s = n) {
        n = s->next;
        if (!s->closing) stream_goodbye(s);
    }
}

void ssestream_worker_close(worker *w)
{
    sse_side *side = w->sse;
    if (!side) return;
    while (side->streams) stream_close(side->streams);
}
