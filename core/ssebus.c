/* ssebus.c: every SSE publish (Lua, HTTP, other instances via Redis) enters the hub here; after a Redis cut-off the missed events are fetched from the streams or reported as gaps. */
#include "ssebus.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "clock.h"
#include "conn.h"
#include "ctx.h"
#include "log.h"
#include "rbus.h"
#include "response.h"
#include "sconfig.h"
#include "sse.h"

#define PUBLISH_TIMEOUT 2.0         /* s: then the caller hears "not confirmed" (it may still go out) */
#define CATCHUP_TIMEOUT 2.0         /* s per catch-up script call */
#define CATCHUP_BATCH 30            /* streams per call (rbus_eval takes 36 arguments) */
#define CATCHUP_RETRY 0.2           /* s between attempts while Redis does not answer */
#define CATCHUP_TRIES 50            /* then give up and send gaps (~10 s) */
#define CATCHUP_MAX_PER_STREAM "100000"
#define HOLD_MAX_EVENTS 100000      /* live events held during a catch-up; beyond: give up (gaps) */
#define HOLD_MAX_BYTES (64u << 20)

/* ------------------------------------------------------------------ delivery into the hub */

/* Puts an event with its global id into the hub. An event the hub cannot take is never dropped
 * in silence: its channel's subscribers get a gap. */
static void hub_put(worker *w, uint64_t id, const char *ch, size_t chl, const char *ev, size_t evl, const char *data,
                    size_t dl, int retry)
{
    server *s = w->srv;
    char evs[256], ids[32];
    if (evl >= sizeof evs) evl = sizeof evs - 1;
    memcpy(evs, ev, evl);
    evs[evl] = 0;
    snprintf(ids, sizeof ids, "%llu", (unsigned long long)id);
    const char *err = NULL;
    uint64_t now = worker_now_us(w) / 1000;
    uint64_t got = sse_hub_publish(s->ssehub, ch, chl, evl ? evs : NULL, data, dl, ids, retry, now, &err);
    if (!got && err && strstr(err, "greater")) {
        /* this hub already issued a higher id (it cannot, unless ids were set by hand): deliver
         * under a local id and raise the shared counter so the next ids agree again */
        rbus_count(s, RBC_ID_CONFLICTS);
        got = sse_hub_publish(s->ssehub, ch, chl, evl ? evs : NULL, data, dl, NULL, retry, now, &err);
        if (got) {
            rbus_note_id(s, got);
            rbus_raise_floor(w);
        }
    }
    if (!got) {
        log_msg(LOG_WARN, "redis: cross-instance event %llu on %.*s not delivered: %s (subscribers get a sluice-gap)",
                (unsigned long long)id, (int)(chl > 60 ? 60 : chl), ch, err ? err : "?");
        sse_hub_gap(s->ssehub, ch, chl, sse_hub_last_id(s->ssehub), 0);
        rbus_count(s, RBC_BUS_GAPS);
    }
}

/* ------------------------------------------------------------------ catch-up state (worker 0) */

typedef struct held {
    uint64_t id;
    int retry, fetched;             /* fetched: from the streams (else a live message held back) */
    size_t chl, evl, dl;
    char *ch, *ev, *data;           /* in the same block, NUL-terminated */
} held;

enum { CU_IDLE, CU_WAIT_SUB, CU_FETCH };

typedef struct ssebus {
    server *s;
    worker *w0;
    int state, sub_up, invalid, tries, timer_on;
    uint64_t from;                  /* the hub's last id when the cut began */
    char epoch[24];                 /* Redis's history epoch last seen ("" = none yet) */
    char token[24];                 /* the epoch proposed when Redis has none (fresh per fetch) */
    int reset;                      /* this fetch found a new epoch: Redis lost its history */
    int mark_next;                  /* a hole of unknown end: mark it up to the next live event */
    uint64_t counter;               /* Redis's id counter as the fetch saw it (highest of its calls) */
    /* read by every worker's admissions (ssebus_redis_replay_ok) */
    _Atomic uint64_t known_epoch;   /* epoch as a number, 0 = none yet */
    _Atomic uint64_t reset_upto;    /* Redis's streams hold nothing reliable up to this id */
    char **chans;                   /* channels with local subscribers when the fetch began */
    uint8_t *gap;                   /* per channel: the streams do not show it complete */
    size_t nch, capch, next, batch;
    held **ev;                      /* fetched and held events, merged at the end */
    size_t nev, capev, nlive, live_bytes;
    rbus_op *op;
    ev_timer retry_w;
} ssebus;

static void send_batch(ssebus *b);

static held *held_new(uint64_t id, const char *ch, size_t chl, const char *ev, size_t evl, const char *d, size_t dl,
                      int retry, int fetched)
{
    held *h = malloc(sizeof *h + chl + evl + dl + 3);
    if (!h) return NULL;
    h->id = id;
    h->retry = retry;
    h->fetched = fetched;
    h->chl = chl, h->evl = evl, h->dl = dl;
    h->ch = (char *)(h + 1);
    h->ev = h->ch + chl + 1;
    h->data = h->ev + evl + 1;
    memcpy(h->ch, ch, chl), h->ch[chl] = 0;
    if (evl) memcpy(h->ev, ev, evl);
    h->ev[evl] = 0;
    if (dl) memcpy(h->data, d, dl);
    h->data[dl] = 0;
    return h;
}

static int hold(ssebus *b, held *h)
{
    if (!h) return -1;
    if (b->nev == b->capev) {
        size_t nc = b->capev ? b->capev * 2 : 64;
        held **n = realloc(b->ev, nc * sizeof *n);
        if (!n) { free(h); return -1; }
        b->ev = n;
        b->capev = nc;
    }
    b->ev[b->nev++] = h;
    return 0;
}

static void drop_fetched(ssebus *b)
{
    size_t k = 0;
    for (size_t i = 0; i < b->nev; i++) {
        if (b->ev[i]->fetched) free(b->ev[i]);
        else b->ev[k++] = b->ev[i];
    }
    b->nev = k;
}

static void drop_chans(ssebus *b)
{
    for (size_t i = 0; i < b->nch; i++) free(b->chans[i]);
    b->nch = b->next = 0;
}

static void add_chan(void *ud, const char *name, size_t len)
{
    ssebus *b = ud;
    if (b->nch == b->capch) {
        size_t nc = b->capch ? b->capch * 2 : 16;
        char **n = realloc(b->chans, nc * sizeof *n);
        uint8_t *g = realloc(b->gap, nc);
        if (n) b->chans = n;
        if (g) b->gap = g;
        if (!n || !g) return;
        b->capch = nc;
    }
    char *c = malloc(len + 1);
    if (!c) return;
    memcpy(c, name, len);
    c[len] = 0;
    b->gap[b->nch] = 0;
    b->chans[b->nch++] = c;
}

static int held_cmp(const void *x, const void *y)
{
    const held *a = *(held *const *)x, *c = *(held *const *)y;
    if (a->id != c->id) return a->id < c->id ? -1 : 1;
    return c->fetched - a->fetched;          /* the same id twice: keep one */
}

static void retry_later(ssebus *b)
{
    ev_timer_stop(b->w0->loop, &b->retry_w);
    ev_timer_set(&b->retry_w, CATCHUP_RETRY, 0);
    ev_timer_start(b->w0->loop, &b->retry_w);
}

static int chan_cmp(const void *x, const void *y) { return strcmp(*(char *const *)x, *(char *const *)y); }

typedef struct complete_ctx {
    ssebus *b;
    int all;
} complete_ctx;

/* Whether the catch-up brought channel name up to date (fetched, nothing missing). */
static int caught_up(void *ud, const char *name, size_t len)
{
    complete_ctx *x = ud;
    ssebus *b = x->b;
    if (x->all || !b->nch || len > SSE_MAX_CHANNEL_LEN) return 0;
    char key[SSE_MAX_CHANNEL_LEN + 1];
    memcpy(key, name, len);
    key[len] = 0;
    const char *kp = key;
    char **hit = bsearch(&kp, b->chans, b->nch, sizeof *b->chans, chan_cmp);
    return hit && !b->gap[hit - b->chans];
}

/* Gaps for the channels marked (all = every channel), then every held event in id order; then
 * the hub's history is marked incomplete for every channel not caught up (those without local
 * subscribers were not fetched), so a later replay from this hub alone says so. */
static void deliver_all(ssebus *b, int all)
{
    server *s = b->s;
    if (b->nev > 1) qsort(b->ev, b->nev, sizeof *b->ev, held_cmp);
    for (size_t i = 0; i < b->nch; i++) {
        if (!all && !b->gap[i]) continue;
        uint64_t oldest = 0;
        size_t l = strlen(b->chans[i]);
        for (size_t k = 0; k < b->nev && !oldest; k++)
            if (b->ev[k]->fetched && b->ev[k]->chl == l && memcmp(b->ev[k]->ch, b->chans[i], l) == 0) oldest = b->ev[k]->id;
        sse_hub_gap(s->ssehub, b->chans[i], l, b->from, oldest);
        rbus_count(s, RBC_BUS_GAPS);
    }
    uint64_t last = sse_hub_last_id(s->ssehub);
    size_t caught = 0;
    for (size_t k = 0; k < b->nev; k++) {
        held *h = b->ev[k];
        if (h->id > last) {
            hub_put(b->w0, h->id, h->ch, h->chl, h->ev, h->evl, h->data, h->dl, h->retry);
            last = h->id;
            if (h->fetched) { rbus_count(s, RBC_CAUGHT_UP); caught++; }
        }
        free(h);
    }
    /* Every event published before the last catch-up call ran has an id <= the counter it saw;
     * later ones arrive live. So the channels not caught up may miss ids up to that counter. */
    uint64_t upto = sse_hub_last_id(s->ssehub);
    if (b->counter > upto) upto = b->counter;
    complete_ctx cx = { b, all };
    sse_hub_mark_hole(s->ssehub, upto, caught_up, &cx);
    if (b->reset) {
        atomic_store(&b->reset_upto, upto);
        b->reset = 0;
    }
    b->counter = 0;
    if (caught || all)
        log_msg(LOG_INFO, "redis: caught up after the subscriber was cut off: %zu event(s) from the streams%s", caught,
                all ? ", sluice-gap sent on every subscribed channel" : "");
    b->nev = b->nlive = b->live_bytes = 0;
    drop_chans(b);
}

/* The catch-up cannot finish (Redis does not answer it, or too much piles up): say so. */
static void give_up(ssebus *b, const char *why)
{
    log_msg(LOG_WARN, "redis: catch-up after a cut-off abandoned (%s): subscribers get a sluice-gap", why);
    if (b->op) { rbus_cancel(b->op); b->op = NULL; }
    ev_timer_stop(b->w0->loop, &b->retry_w);
    drop_fetched(b);
    drop_chans(b);
    sse_hub_each_subscribed(b->s->ssehub, add_chan, b);
    b->counter = 0;                     /* not known: the hole ends where live events resume */
    deliver_all(b, 1);
    b->mark_next = 1;
    b->state = b->sub_up ? CU_IDLE : CU_WAIT_SUB;
    b->from = sse_hub_last_id(b->s->ssehub);
}

static void new_token(ssebus *b)
{
    unsigned char rnd[8] = {0};
    if (getrandom(rnd, sizeof rnd, 0) != sizeof rnd) {
        uint64_t x = worker_now_us(b->w0) ^ (uint64_t)(uintptr_t)b;
        memcpy(rnd, &x, sizeof rnd);
    }
    rnd[0] |= 1;                        /* never 0: 0 means "no epoch known" */
    for (int i = 0; i < 8; i++) sprintf(b->token + 2 * i, "%02x", rnd[i]);
}

static void start_fetch(ssebus *b)
{
    b->state = CU_FETCH;
    b->invalid = 0;
    b->tries = 0;
    b->reset = 0;
    b->counter = 0;
    new_token(b);                       /* a restarted Redis must not get the epoch it had */
    drop_fetched(b);
    drop_chans(b);
    sse_hub_each_subscribed(b->s->ssehub, add_chan, b);
    if (b->nch > 1) qsort(b->chans, b->nch, sizeof *b->chans, chan_cmp);
    send_batch(b);
}

/* All batches answered. Valid only if the subscription stayed up from start to end. */
static void finish(ssebus *b)
{
    if (b->invalid) {
        if (b->sub_up) start_fetch(b);
        else b->state = CU_WAIT_SUB;
        return;
    }
    deliver_all(b, 0);
    b->state = CU_IDLE;
}

static void batch_cb(void *ud, const redisReply *r, const char *err)
{
    ssebus *b = ud;
    b->op = NULL;
    size_t n = b->batch;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 + 2 * n || r->element[0]->type != REDIS_REPLY_STRING ||
        r->element[1]->type != REDIS_REPLY_STRING) {
        if (++b->tries > CATCHUP_TRIES) { give_up(b, err ? err : "unexpected reply"); return; }
        retry_later(b);
        return;
    }
    b->tries = 0;
    const sconfig *cfg = b->w0->app_cfg;
    uint64_t ctr = strtoull(r->element[1]->str, NULL, 10);
    if (ctr > b->counter) b->counter = ctr;
    if (b->next == 0) {
        /* A new epoch: Redis lost its history (or this is a Redis the instance never saw):
         * nothing there shows what was published before, so every channel gets a gap. */
        const char *ep = r->element[0]->str;
        int lost = b->epoch[0] && strcmp(b->epoch, ep) != 0;
        if (lost) {
            log_msg(LOG_WARN, "redis: its history is new (restarted without its data?): subscribers get a sluice-gap, "
                              "replays from before now come from this instance's own history");
            b->reset = 1;
        }
        uint64_t counter = strtoull(r->element[1]->str, NULL, 10);
        if (!cfg->sse_retention && counter > b->from) lost = 1;     /* nothing kept to fetch */
        snprintf(b->epoch, sizeof b->epoch, "%s", ep);
        atomic_store(&b->known_epoch, strtoull(ep, NULL, 16));
        if (lost && b->nch) memset(b->gap, 1, b->nch);
    }
    for (size_t i = 0; i < n; i++) {
        const redisReply *g = r->element[2 + 2 * i], *l = r->element[3 + 2 * i];
        const char *ch = b->chans[b->next + i];
        size_t chl = strlen(ch);
        if (g->type == REDIS_REPLY_INTEGER && g->integer) b->gap[b->next + i] = 1;
        if (l->type != REDIS_REPLY_ARRAY) continue;
        for (size_t k = 0; k < l->elements; k++) {
            const redisReply *e = l->element[k];
            if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 || e->element[0]->type != REDIS_REPLY_STRING ||
                e->element[1]->type != REDIS_REPLY_ARRAY) continue;
            const redisReply *f = e->element[1];
            const char *ev = "", *d = "", *rt = NULL;
            size_t el = 0, dl = 0;
            for (size_t j = 0; j + 1 < f->elements; j += 2) {
                const redisReply *kk = f->element[j], *vv = f->element[j + 1];
                if (kk->type != REDIS_REPLY_STRING || vv->type != REDIS_REPLY_STRING || kk->len != 1) continue;
                if (kk->str[0] == 'e') ev = vv->str, el = vv->len;
                else if (kk->str[0] == 'd') d = vv->str, dl = vv->len;
                else if (kk->str[0] == 'r') rt = vv->str;
            }
            int retry = rt ? atoi(rt) : -1;
            if (hold(b, held_new(strtoull(e->element[0]->str, NULL, 10), ch, chl, ev, el, d, dl, retry, 1))) {
                b->gap[b->next + i] = 1;       /* out of memory: say so rather than lose it quietly */
            }
        }
    }
    b->next += n;
    if (b->next < b->nch) send_batch(b);
    else finish(b);
}

static void send_batch(ssebus *b)
{
    worker *w = b->w0;
    const char *prefix = rbus_prefix(b->s);
    char epoch[96], counter[96], from[24];
    char streams[CATCHUP_BATCH][320];
    const char *av[2 + CATCHUP_BATCH + 3];
    size_t n = b->nch - b->next;
    if (n > CATCHUP_BATCH) n = CATCHUP_BATCH;
    int na = 0;
    snprintf(epoch, sizeof epoch, "%ssse:epoch", prefix);
    snprintf(counter, sizeof counter, "%ssse:id", prefix);
    av[na++] = epoch;
    av[na++] = counter;
    for (size_t i = 0; i < n; i++) {
        snprintf(streams[i], sizeof streams[i], "%ssse:s:%s", prefix, b->chans[b->next + i]);
        av[na++] = streams[i];
    }
    snprintf(from, sizeof from, "%llu", (unsigned long long)b->from);
    av[na++] = from;
    av[na++] = CATCHUP_MAX_PER_STREAM;
    av[na++] = b->token;
    b->batch = n;
    b->op = rbus_eval(w, RBUS_CATCHUP, 2 + (int)n, na, av, NULL, CATCHUP_TIMEOUT, batch_cb, b);
    if (!b->op) {
        if (++b->tries > CATCHUP_TRIES) { give_up(b, "no Redis connection"); return; }
        retry_later(b);
    }
}

static void retry_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    ssebus *b = (ssebus *)((char *)t - offsetof(ssebus, retry_w));
    (void)loop, (void)revents;
    if (b->state != CU_FETCH || b->op) return;
    if (b->invalid) finish(b);
    else send_batch(b);
}

static void bind_worker(ssebus *b, worker *w)
{
    if (b->timer_on) return;
    b->w0 = w;
    ev_init(&b->retry_w, retry_cb);
    b->timer_on = 1;
}

/* rbus: a message from the subscriber. */
static void on_event(void *ud, worker *w, const rbus_event *e)
{
    ssebus *b = ud;
    bind_worker(b, w);
    if (b->state == CU_IDLE) {
        if (b->mark_next) {             /* the first live event after an abandoned catch-up */
            sse_hub_mark_hole(b->s->ssehub, e->id - 1, NULL, NULL);
            b->mark_next = 0;
        }
        hub_put(w, e->id, e->channel, e->chlen, e->event, e->evlen, e->data, e->datalen, e->retry);
        return;
    }
    /* a catch-up runs: this event must come after the older ones it brings in */
    if (b->nlive >= HOLD_MAX_EVENTS || b->live_bytes >= HOLD_MAX_BYTES ||
        hold(b, held_new(e->id, e->channel, e->chlen, e->event, e->evlen, e->data, e->datalen, e->retry, 0))) {
        give_up(b, "too many events arrived meanwhile");
        hub_put(w, e->id, e->channel, e->chlen, e->event, e->evlen, e->data, e->datalen, e->retry);
        return;
    }
    b->nlive++;
    b->live_bytes += e->chlen + e->evlen + e->datalen + sizeof(held);
}

/* rbus: the subscription is confirmed (up) or lost. */
static void on_link(void *ud, worker *w, int up)
{
    ssebus *b = ud;
    bind_worker(b, w);
    b->sub_up = up;
    if (!up) {
        if (b->state == CU_IDLE) {
            b->state = CU_WAIT_SUB;
            b->from = sse_hub_last_id(b->s->ssehub);
        } else if (b->state == CU_FETCH) {
            b->invalid = 1;
        }
        return;
    }
    if (b->state == CU_IDLE) {          /* the first subscription: events since the hub began */
        b->from = sse_hub_last_id(b->s->ssehub);
        start_fetch(b);
    } else if (b->state == CU_WAIT_SUB) {
        start_fetch(b);
    } else {
        b->invalid = 1;                 /* a new subscription under a running fetch: fetch again */
    }
}

int ssebus_server_init(server *s)
{
    s->ssebus = NULL;
    if (!s->rbus) return 0;
    ssebus *b = calloc(1, sizeof *b);
    if (!b) return -1;
    b->s = s;
    s->ssebus = b;
    rbus_handlers h = { on_event, on_link, b };
    rbus_set_handlers(s, &h);
    return 0;
}

int ssebus_redis_replay_ok(server *s, const char *epoch, uint64_t last_id)
{
    ssebus *b = s->ssebus;
    if (!b || !epoch) return 0;
    uint64_t known = atomic_load(&b->known_epoch);
    /* not caught up once yet (just started): this hub holds nothing older, Redis is the source */
    if (!known) return 1;
    return strtoull(epoch, NULL, 16) == known && last_id >= atomic_load(&b->reset_upto);
}

void ssebus_worker_free(worker *w)
{
    ssebus *b = w->srv->ssebus;
    if (!b || b->w0 != w) return;
    if (b->op) { rbus_cancel(b->op); b->op = NULL; }
    if (b->timer_on) ev_timer_stop(w->loop, &b->retry_w);
    b->timer_on = 0;
    b->w0 = NULL;
}

void ssebus_server_free(server *s)
{
    ssebus *b = s->ssebus;
    if (!b) return;
    for (size_t i = 0; i < b->nev; i++) free(b->ev[i]);
    free(b->ev);
    drop_chans(b);
    free(b->chans);
    free(b->gap);
    free(b);
    s->ssebus = NULL;
}

/* ------------------------------------------------------------------ publishing */

typedef struct pubop {
    worker *w;
    ssebus_cb cb;
    void *ud;
} pubop;

static void pub_cb(void *ud, const redisReply *r, const char *err)
{
    pubop *p = ud;
    server *s = p->w->srv;
    int st;
    uint64_t id = 0;
    const char *e = NULL;
    if (r && r->type == REDIS_REPLY_STRING) {
        id = strtoull(r->str, NULL, 10);
        rbus_note_id(s, id);
        rbus_count(s, RBC_PUB_REDIS);
        st = SSEBUS_DONE;
    } else if (r && r->type == REDIS_REPLY_ERROR && strstr(r->str, "greater")) {
        st = SSEBUS_REJECTED;
        e = "id must be greater than the last id issued";
    } else {
        /* Redis failed or is too slow. The script may still have run (then every instance
         * delivers the event): the caller learns that it is not confirmed, not that it is lost. */
        rbus_count(s, RBC_PUB_FAILED);
        st = SSEBUS_UNAVAILABLE;
        e = r ? "the event bus (Redis) refused the publish" :
            err && strstr(err, "timeout") ? "the event bus (Redis) did not confirm the publish in time (it may still be delivered)"
                                          : "the event bus (Redis) connection was lost (the event may still be delivered)";
    }
    if (p->cb) p->cb(p->ud, st, id, e);
    free(p);
}

int ssebus_publish(worker *w, const ssebus_msg *m, ssebus_cb cb, void *ud, uint64_t *id, const char **err)
{
    server *s = w->srv;
    *id = 0;
    *err = NULL;
    if (!s->ssehub) return *err = "SSE is not running", SSEBUS_REJECTED;
    if (!s->rbus) {
        *id = sse_hub_publish(s->ssehub, m->channel, m->chlen, m->event, m->data, m->datalen, m->id, m->retry,
                              worker_now_us(w) / 1000, err);
        return *id ? SSEBUS_DONE : SSEBUS_REJECTED;
    }
    /* every instance's hub will check it again; refuse here what they would all drop */
    if (sse_hub_check(s->ssehub, m->channel, m->chlen, m->event, m->data, m->datalen, m->id, m->retry, err))
        return SSEBUS_REJECTED;
    if (!rbus_ready(w)) {
        rbus_count(s, RBC_PUB_FAILED);
        *err = "the event bus (Redis) is unreachable: the event was not published";
        return SSEBUS_UNAVAILABLE;
    }
    const sconfig *cfg = w->app_cfg;
    pubop *p = malloc(sizeof *p);
    if (!p) return *err = "out of memory", SSEBUS_UNAVAILABLE;
    p->w = w;
    p->cb = cb;
    p->ud = ud;
    const char *prefix = rbus_prefix(s);
    char counter[96], stream[320], pubchan[96], floor[32], rs[16], ml[16], ttl[24];
    size_t streaml = (size_t)snprintf(stream, sizeof stream, "%ssse:s:%.*s", prefix, (int)m->chlen, m->channel);
    snprintf(counter, sizeof counter, "%ssse:id", prefix);
    snprintf(pubchan, sizeof pubchan, "%ssse", prefix);
    snprintf(floor, sizeof floor, "%llu", (unsigned long long)rbus_id_floor(s) + 1);
    snprintf(rs, sizeof rs, "%d", m->retry < 0 ? -1 : m->retry);
    snprintf(ml, sizeof ml, "%u", cfg->sse_retention);
    snprintf(ttl, sizeof ttl, "%llu", (unsigned long long)(cfg->sse_retention_seconds > 0
                                                               ? (uint64_t)(cfg->sse_retention_seconds * 1000) + 1000
                                                               : 86400000ull));
    const char *av[] = {counter, stream, floor, m->id ? m->id : "", m->channel, m->event ? m->event : "",
                        m->data ? m->data : "", rs, rbus_instance(s), ml, pubchan, ttl};
    size_t al[12];
    for (int i = 0; i < 12; i++) al[i] = strlen(av[i]);
    al[1] = streaml < sizeof stream ? streaml : sizeof stream - 1;
    al[4] = m->chlen;
    al[6] = m->data ? m->datalen : 0;
    if (!rbus_eval(w, RBUS_PUBLISH, 2, 12, av, al, PUBLISH_TIMEOUT, pub_cb, p)) {
        free(p);
        rbus_count(s, RBC_PUB_FAILED);
        *err = "the event bus (Redis) is unreachable: the event was not published";
        return SSEBUS_UNAVAILABLE;
    }
    return SSEBUS_PENDING;
}

/* ------------------------------------------------------------------ the HTTP endpoint */

typedef struct httppub {
    conn *c;
    uint32_t gen;
    void (*finish)(conn *c);
} httppub;

static void http_answer(conn *c, int st, uint64_t id, const char *err)
{
    if (st == SSEBUS_DONE) {
        char body[48];
        int n = snprintf(body, sizeof body, "{\"id\":%llu}", (unsigned long long)id);
        resp r;
        resp_begin(&r, c, 201);
        resp_header(&r, "Cache-Control", 13, "no-store", 8);
        resp_finish(&r, "application/json", body, (size_t)n);
    } else {
        resp_error(c, st == SSEBUS_REJECTED ? 400 : 503, err ? err : "publish rejected", 0);
    }
}

static void http_done(void *ud, int st, uint64_t id, const char *err)
{
    httppub *h = ud;
    conn *c = h->c;
    /* the client may have left (the struct is parked or serves another client by now), or the
     * request timed out and was answered already */
    if (!c->closed && c->gen == h->gen && c->state == CS_HANDLING) {
        http_answer(c, st, id, err);
        h->finish(c);
    }
    free(h);
}

void ssebus_http_publish(conn *c, const ssebus_msg *m, void (*finish)(conn *c))
{
    httppub *h = malloc(sizeof *h);
    if (!h) { resp_error(c, 503, "out of memory", 0); return; }
    h->c = c;
    h->gen = c->gen;
    h->finish = finish;
    uint64_t id;
    const char *err;
    int st = ssebus_publish(c->w, m, http_done, h, &id, &err);
    if (st != SSEBUS_PENDING) {
        free(h);
        http_answer(c, st, id, err);
        return;
    }
    c->state = CS_HANDLING;            /* no pipelined request is parsed until the answer */
    double left = c->w->app_cfg->request_timeout - (double)(worker_now_us(c->w) - c->req_start_us) / 1e6;
    conn_set_timeout(c, TMO_HANDLER, left > 0 ? left : 0);
}
