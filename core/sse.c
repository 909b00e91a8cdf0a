/* sse.c: the SSE engine core: hub (channels, history, caps, ids), events, per-worker inbox and fan-out. */
#include "sse.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sseenc.h"
#include "strmap.h"

/* ------------------------------------------------------------------ types */

typedef struct qnode {
    _Atomic(struct qnode *) next;
    sse_event *ev;
} qnode;

struct sse_event {
    atomic_uint refs;
    uint32_t len;       /* wire bytes */
    uint32_t chlen;
    uint64_t id;
    uint64_t t_ms;      /* publish time, for age retention */
    uint64_t hash;      /* of the channel name, with the hub seed */
    const char *wire;
    const char *chan;
    qnode node[];       /* one inbox node per worker: posting never allocates */
};

/* Room for the id line, written in front of the body under the lock. */
#define ID_RESERVE SSEENC_ID_MAX

/* Hub channel: a value of sse_hub.chans, keyed by the channel name. */
typedef struct hchan {
    uint32_t nsubs;          /* over all workers */
    uint32_t cap, head, n;   /* history ring, oldest at head */
    sse_event **ring;
    uint64_t last_id;        /* newest id published here */
    uint64_t dropped_max;    /* newest id of this channel no longer replayable */
    uint64_t last_pub_ms;
} hchan;

typedef struct huser {
    uint32_t count;
} huser;

struct sse_hub {
    pthread_mutex_t mu;
    sse_limits lim;
    unsigned nw;
    uint64_t seed, id_base, last_id;
    uint64_t forgotten_max;  /* newest id published on a channel entry we freed */
    strmap *chans, *users;   /* hchan, huser; seeded with seed, as are the workers' maps */
    uint64_t nsubs;
    sse_worker **workers;
    uint64_t published, replayed, gaps, evicted, delivered_retired;
    uint64_t rej_total, rej_user, rej_channel;
};

typedef struct lchan {
    struct sse_sub_link *head;
    struct sse_sub_link *iter;  /* next link of a running delivery, fixed up by unlink */
    uint32_t n;
    uint32_t busy;           /* deliveries running (or teardown): keeps the entry alive when empty */
} lchan;

struct sse_worker {
    sse_hub *h;
    unsigned idx;
    sse_wake_fn wake;
    void *ud;
    _Atomic(qnode *) qhead;     /* producers exchange here */
    qnode *qtail;               /* consumer only */
    qnode stub;
    atomic_int pending;         /* 1 while a wake is outstanding: coalesces wakes */
    strmap *local;              /* lchan by channel name, same seed as the hub */
    size_t nsubs;
    _Atomic uint64_t delivered;
};

/* -------------------------------------------------------------- the inbox */

/* Vyukov's intrusive MPSC queue: push is one exchange, pop never blocks. */
static void q_push(sse_worker *w, qnode *n)
{
    atomic_store_explicit(&n->next, NULL, memory_order_relaxed);
    qnode *prev = atomic_exchange_explicit(&w->qhead, n, memory_order_acq_rel);
    atomic_store_explicit(&prev->next, n, memory_order_release);
}

static qnode *q_pop(sse_worker *w)
{
    qnode *tail = w->qtail, *next = atomic_load_explicit(&tail->next, memory_order_acquire);
    if (tail == &w->stub) {
        if (!next) return NULL;
        w->qtail = tail = next;
        next = atomic_load_explicit(&next->next, memory_order_acquire);
    }
    if (next) {
        w->qtail = next;
        return tail;
    }
    /* A producer is between its exchange and its link: it wakes us after. */
    if (tail != atomic_load_explicit(&w->qhead, memory_order_acquire)) return NULL;
    q_push(w, &w->stub);
    next = atomic_load_explicit(&tail->next, memory_order_acquire);
    if (next) {
        w->qtail = next;
        return tail;
    }
    return NULL;
}

/* ----------------------------------------------------------------- events */

void sse_event_ref(sse_event *e) { atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed); }

void sse_event_unref(sse_event *e)
{
    if (e && atomic_fetch_sub_explicit(&e->refs, 1, memory_order_acq_rel) == 1) free(e);
}

const char *sse_event_wire(const sse_event *e, size_t *len)
{
    if (len) *len = e->len;
    return e->wire;
}

uint64_t sse_event_id(const sse_event *e) { return e->id; }
const char *sse_event_channel(const sse_event *e) { return e->chan; }

/* One allocation: header, nnodes inbox nodes, channel name, id reserve, body.
 * Returns the body pointer in *body; wire/len are set by the caller. */
static sse_event *ev_alloc(unsigned nnodes, const char *ch, size_t chlen, size_t bodylen, char **body)
{
    size_t sz = sizeof(sse_event) + nnodes * sizeof(qnode) + chlen + 1 + ID_RESERVE + bodylen;
    sse_event *e = malloc(sz);
    if (!e) return NULL;
    atomic_init(&e->refs, 1);
    char *p = (char *)&e->node[nnodes];
    memcpy(p, ch, chlen);
    p[chlen] = 0;
    e->chan = p;
    e->chlen = (uint32_t)chlen;
    e->id = 0;
    for (unsigned i = 0; i < nnodes; i++) e->node[i].ev = e;
    *body = p + chlen + 1 + ID_RESERVE;
    return e;
}

static int valid_channel(const char *s, size_t n)
{
    if (n == 0 || n > SSE_MAX_CHANNEL_LEN) return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) return 0;
    return 1;
}

/* ---------------------------------------------------------------- the hub */

static void norm_limits(sse_limits *l)
{
    if (!l->max_channels) l->max_channels = 100000;
    if (!l->max_event_bytes) l->max_event_bytes = 1u << 20;
}

sse_hub *sse_hub_new(const sse_limits *lim, unsigned nworkers, uint64_t id_base)
{
    if (nworkers == 0) return NULL;
    sse_hub *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    /* A per-hub random seed, so chosen channel names cannot be aimed at one bucket cheaply. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    h->seed = (uint64_t)(uintptr_t)h * 0x9e3779b97f4a7c15ull ^ (uint64_t)ts.tv_nsec;
    h->workers = calloc(nworkers, sizeof *h->workers);
    h->chans = strmap_new(h->seed, sizeof(hchan));
    h->users = strmap_new(h->seed, sizeof(huser));
    if (!h->workers || !h->chans || !h->users) {
        free(h->workers);
        strmap_free(h->chans);
        strmap_free(h->users);
        free(h);
        return NULL;
    }
    pthread_mutex_init(&h->mu, NULL);
    h->lim = *lim;
    norm_limits(&h->lim);
    h->nw = nworkers;
    h->id_base = h->last_id = h->forgotten_max = id_base;
    return h;
}

void sse_hub_set_limits(sse_hub *h, const sse_limits *lim)
{
    pthread_mutex_lock(&h->mu);
    h->lim = *lim;
    norm_limits(&h->lim);
    pthread_mutex_unlock(&h->mu);
}

static void chan_free(sse_hub *h, hchan *c)
{
    for (uint32_t i = 0; i < c->n; i++) sse_event_unref(c->ring[(c->head + i) % c->cap]);
    if (c->last_id > h->forgotten_max) h->forgotten_max = c->last_id;
    free(c->ring);
    strmap_del(h->chans, c);
}

static int chan_free_cb(void *c, void *h) { return chan_free(h, c), 0; }

void sse_hub_free(sse_hub *h)
{
    if (!h) return;
    strmap_iterate(h->chans, chan_free_cb, h);
    strmap_free(h->chans);
    strmap_free(h->users);
    free(h->workers);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

/* Only for a name not in the table yet. */
static hchan *chan_new(sse_hub *h, const char *name, size_t len, uint64_t hash)
{
    hchan *c = strmap_put_hashed(h->chans, hash, name, len, NULL);
    /* Events published before this entry existed may be forgotten ones. */
    if (c) c->dropped_max = h->forgotten_max;
    return c;
}

/* Drops history over the count (keeping room for `adding` more) or over the age. */
static void chan_trim(sse_hub *h, hchan *c, uint64_t now_ms, uint32_t adding)
{
    uint32_t keep = h->lim.retention_count;
    uint64_t age = h->lim.retention_ms;
    while (c->n) {
        sse_event *old = c->ring[c->head];
        int over = c->n + adding > keep;
        int stale = age && old->t_ms + age < now_ms;
        if (!over && !stale) break;
        if (old->id > c->dropped_max) c->dropped_max = old->id;   /* a hole may be marked past it */
        c->head = (c->head + 1) % c->cap;
        c->n--;
        h->evicted++;
        sse_event_unref(old);
    }
}

/* Appends e (taking a ref); grows the ring up to retention_count. */
static void chan_append(sse_hub *h, hchan *c, sse_event *e)
{
    if (c->n == c->cap) {
        uint32_t ncap = c->cap ? c->cap * 2 : 8;
        if (ncap > h->lim.retention_count) ncap = h->lim.retention_count;
        sse_event **nr = ncap > c->cap ? malloc(ncap * sizeof *nr) : NULL;
        if (!nr) { /* OOM or already at the cap: replace the oldest instead */
            sse_event *old = c->ring[c->head];
            if (old->id > c->dropped_max) c->dropped_max = old->id;
            c->head = (c->head + 1) % c->cap;
            c->n--;
            h->evicted++;
            sse_event_unref(old);
        } else {
            for (uint32_t i = 0; i < c->n; i++) nr[i] = c->ring[(c->head + i) % c->cap];
            free(c->ring);
            c->ring = nr;
            c->cap = ncap;
            c->head = 0;
        }
    }
    sse_event_ref(e);
    c->ring[(c->head + c->n) % c->cap] = e;
    c->n++;
}

/* Pushes e onto every worker's inbox (a ref each). Lock held: that keeps each inbox in id order. */
static void post_all(sse_hub *h, sse_event *e)
{
    for (unsigned i = 0; i < h->nw; i++) {
        sse_worker *w = h->workers[i];
        if (!w) continue;
        sse_event_ref(e);
        q_push(w, &e->node[i]);
        if (atomic_exchange(&w->pending, 1) == 0) w->wake(w->ud);
    }
}

int sse_hub_check(sse_hub *h, const char *channel, size_t chlen, const char *event, const char *data,
                  size_t datalen, const char *id_override, int retry_ms, const char **err)
{
    *err = NULL;
    if (!channel || chlen == 0) return *err = "empty channel", -1;
    if (!valid_channel(channel, chlen)) return *err = "bad channel name (1-200 bytes, no control characters)", -1;
    size_t evlen = event ? strlen(event) : 0;
    if (evlen && strpbrk(event, "\r\n")) return *err = "CR or LF in event name", -1;
    uint64_t ov = 0;
    if (id_override && sseenc_parse_id(id_override, &ov)) return *err = "bad id (must be a decimal integer)", -1;
    if (!data) datalen = 0;
    size_t blen = sseenc_body_len(evlen, retry_ms, data, datalen);
    if (blen + ID_RESERVE > h->lim.max_event_bytes) return *err = "event too large", -1;
    return 0;
}

uint64_t sse_hub_last_id(sse_hub *h)
{
    pthread_mutex_lock(&h->mu);
    uint64_t id = h->last_id;
    pthread_mutex_unlock(&h->mu);
    return id;
}

typedef struct each_ctx {
    void (*fn)(void *ud, const char *name, size_t len);
    void *ud;
} each_ctx;

static int each_subscribed(void *v, void *ud)
{
    hchan *c = v;
    each_ctx *x = ud;
    if (c->nsubs) {
        size_t l;
        const char *name = strmap_key(c, &l);
        x->fn(x->ud, name, l);
    }
    return 0;
}

void sse_hub_each_subscribed(sse_hub *h, void (*fn)(void *ud, const char *name, size_t len), void *ud)
{
    each_ctx x = { fn, ud };
    pthread_mutex_lock(&h->mu);
    strmap_iterate(h->chans, each_subscribed, &x);
    pthread_mutex_unlock(&h->mu);
}

typedef struct hole_ctx {
    uint64_t upto;
    int (*complete)(void *ud, const char *name, size_t len);
    void *ud;
} hole_ctx;

static int hole_one(void *v, void *ud)
{
    hole_ctx *x = ud;
    hchan *c = v;
    size_t l;
    const char *name = strmap_key(c, &l);
    if (!(x->complete && x->complete(x->ud, name, l)) && c->dropped_max < x->upto) c->dropped_max = x->upto;
    return 0;
}

void sse_hub_mark_hole(sse_hub *h, uint64_t upto, int (*complete)(void *ud, const char *name, size_t len), void *ud)
{
    hole_ctx x = { upto, complete, ud };
    pthread_mutex_lock(&h->mu);
    strmap_iterate(h->chans, hole_one, &x);
    if (h->forgotten_max < upto) h->forgotten_max = upto;   /* channels made later know nothing before */
    pthread_mutex_unlock(&h->mu);
}

static sse_event *gap_alloc(unsigned nnodes, const char *name, size_t klen, uint64_t last, uint64_t oldest);

int sse_hub_gap(sse_hub *h, const char *channel, size_t chlen, uint64_t last, uint64_t oldest)
{
    if (!valid_channel(channel, chlen)) return -1;
    sse_event *e = gap_alloc(h->nw, channel, chlen, last, oldest);
    if (!e) return -1;
    e->hash = strmap_hash(h->chans, channel, chlen);
    pthread_mutex_lock(&h->mu);
    hchan *c = strmap_get_hashed(h->chans, e->hash, channel, chlen);
    if (c && c->nsubs) {
        h->gaps++;
        post_all(h, e);                 /* the same inboxes as events: order is kept */
    }
    pthread_mutex_unlock(&h->mu);
    sse_event_unref(e);
    return 0;
}

uint64_t sse_hub_publish(sse_hub *h, const char *channel, size_t chlen, const char *event,
                         const char *data, size_t datalen, const char *id_override,
                         int retry_ms, uint64_t now_ms, const char **err)
{
    const char *dummy;
    if (!err) err = &dummy;
    uint64_t ov = 0;
    if (!data) datalen = 0;
    if (sse_hub_check(h, channel, chlen, event, data, datalen, id_override, retry_ms, err)) return 0;
    if (id_override) sseenc_parse_id(id_override, &ov);
    size_t evlen = event ? strlen(event) : 0;
    size_t blen = sseenc_body_len(evlen, retry_ms, data, datalen);

    char *body;
    sse_event *e = ev_alloc(h->nw, channel, chlen, blen, &body);
    if (!e) return *err = "out of memory", 0;
    size_t used = sseenc_body(body, event, evlen, retry_ms, data, datalen);
    e->hash = strmap_hash(h->chans, channel, chlen); /* chans and its seed never change: no lock */
    e->t_ms = now_ms;

    pthread_mutex_lock(&h->mu);
    if (id_override && ov <= h->last_id) {
        pthread_mutex_unlock(&h->mu);
        free(e);
        return *err = "id must be greater than the last id issued", 0;
    }
    hchan *c = strmap_get_hashed(h->chans, e->hash, channel, chlen);
    if (!c && h->lim.retention_count) {
        if (strmap_count(h->chans) >= h->lim.max_channels || !(c = chan_new(h, channel, chlen, e->hash))) {
            pthread_mutex_unlock(&h->mu);
            free(e);
            return *err = "too many channels", 0;
        }
    }
    uint64_t id = h->last_id = id_override ? ov : h->last_id + 1;
    /* The id line goes right before the body, so the wire stays contiguous. */
    char idl[ID_RESERVE];
    size_t idlen = sseenc_id_line(idl, id);
    memcpy(body - idlen, idl, idlen);
    e->wire = body - idlen;
    e->len = (uint32_t)(idlen + used);
    e->id = id;
    h->published++;
    if (!c) {
        h->forgotten_max = id; /* no entry, no subscriber anywhere: nobody to send it to */
    } else {
        c->last_id = id;
        c->last_pub_ms = now_ms;
        chan_trim(h, c, now_ms, h->lim.retention_count ? 1 : 0);
        if (h->lim.retention_count) chan_append(h, c, e);
        else if (id > c->dropped_max) c->dropped_max = id;
        if (c->nsubs) post_all(h, e);
    }
    pthread_mutex_unlock(&h->mu);
    sse_event_unref(e);
    return id;
}

typedef struct sweep_ctx {
    sse_hub *h;
    uint64_t now_ms, idle_ms;
    size_t freed;
} sweep_ctx;

static int sweep_one(void *v, void *ud)
{
    sweep_ctx *x = ud;
    hchan *c = v;
    chan_trim(x->h, c, x->now_ms, 0);
    if (!c->nsubs && (!c->n || c->last_pub_ms + x->idle_ms <= x->now_ms)) {
        chan_free(x->h, c);
        x->freed++;
    }
    return 0;
}

size_t sse_hub_sweep(sse_hub *h, uint64_t now_ms, uint64_t idle_ms)
{
    sweep_ctx x = { h, now_ms, idle_ms, 0 };
    pthread_mutex_lock(&h->mu);
    strmap_iterate(h->chans, sweep_one, &x);
    pthread_mutex_unlock(&h->mu);
    return x.freed;
}

void sse_hub_stats(sse_hub *h, sse_stats *o)
{
    memset(o, 0, sizeof *o);
    pthread_mutex_lock(&h->mu);
    o->subscribers = h->nsubs;
    o->channels = strmap_count(h->chans);
    o->users = strmap_count(h->users);
    o->published = h->published;
    o->replayed = h->replayed;
    o->gaps = h->gaps;
    o->evicted = h->evicted;
    o->rejected_total = h->rej_total;
    o->rejected_user = h->rej_user;
    o->rejected_channel = h->rej_channel;
    o->delivered = h->delivered_retired;
    for (unsigned i = 0; i < h->nw; i++)
        if (h->workers[i]) o->delivered += atomic_load_explicit(&h->workers[i]->delivered, memory_order_relaxed);
    pthread_mutex_unlock(&h->mu);
}

typedef struct top_ctx {
    sse_channel_stat *out;
    size_t max, k;
} top_ctx;

static int top_one(void *v, void *ud)
{
    top_ctx *x = ud;
    hchan *c = v;
    sse_channel_stat *out = x->out;
    if (x->k == x->max && c->nsubs <= out[x->k - 1].subscribers) return 0;
    size_t j = x->k < x->max ? x->k++ : x->k - 1; /* insertion sort into a bounded array */
    while (j > 0 && out[j - 1].subscribers < c->nsubs) { out[j] = out[j - 1]; j--; }
    size_t l;
    const char *name = strmap_key(c, &l);
    if (l > sizeof out[j].name - 1) l = sizeof out[j].name - 1;
    memcpy(out[j].name, name, l);
    out[j].name[l] = 0;
    out[j].subscribers = c->nsubs;
    out[j].last_id = c->last_id;
    return 0;
}

size_t sse_hub_top_channels(sse_hub *h, sse_channel_stat *out, size_t max)
{
    top_ctx x = { out, max, 0 };
    if (!max) return 0;
    pthread_mutex_lock(&h->mu);
    strmap_iterate(h->chans, top_one, &x);
    pthread_mutex_unlock(&h->mu);
    return x.k;
}

uint32_t sse_hub_user_count(sse_hub *h, const char *user)
{
    if (!user) return 0;
    size_t n = strlen(user);
    pthread_mutex_lock(&h->mu);
    huser *u = strmap_get(h->users, user, n);
    uint32_t c = u ? u->count : 0;
    pthread_mutex_unlock(&h->mu);
    return c;
}

const char *sse_strerror(int code)
{
    switch (code) {
    case SSE_OK: return "ok";
    case SSE_ERR_TOTAL: return "too many SSE connections on this server";
    case SSE_ERR_USER: return "too many SSE connections for this user";
    case SSE_ERR_CHANNEL: return "too many subscribers on this channel";
    case SSE_ERR_ARG: return "bad channel name or Last-Event-ID";
    case SSE_ERR_NOMEM: return "out of memory";
    }
    return "unknown error";
}

/* ------------------------------------------------------------- the worker */

sse_worker *sse_worker_new(sse_hub *h, unsigned idx, sse_wake_fn wake, void *ud)
{
    if (idx >= h->nw || !wake) return NULL;
    sse_worker *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    if (!(w->local = strmap_new(h->seed, sizeof(lchan)))) { /* the hub's seed: events carry its hash */
        free(w);
        return NULL;
    }
    w->h = h;
    w->idx = idx;
    w->wake = wake;
    w->ud = ud;
    atomic_init(&w->stub.next, NULL);
    atomic_init(&w->qhead, &w->stub);
    w->qtail = &w->stub;
    pthread_mutex_lock(&h->mu);
    int taken = h->workers[idx] != NULL;
    if (!taken) h->workers[idx] = w;
    pthread_mutex_unlock(&h->mu);
    if (taken) {
        strmap_free(w->local);
        free(w);
        return NULL;
    }
    return w;
}

static int lchan_pin(void *lc, void *ud) { return ((lchan *)lc)->busy++, 0; }

static int lchan_teardown(void *v, void *w)
{
    lchan *lc = v;
    while (lc->head) sse_worker_unsubscribe(w, lc->head->sub);
    strmap_del(((sse_worker *)w)->local, lc);
    return 0;
}

void sse_worker_free(sse_worker *w)
{
    if (!w) return;
    sse_hub *h = w->h;
    pthread_mutex_lock(&h->mu);
    h->workers[w->idx] = NULL; /* no more pushes after this */
    h->delivered_retired += atomic_load(&w->delivered);
    pthread_mutex_unlock(&h->mu);
    for (qnode *q; (q = q_pop(w));) sse_event_unref(q->ev);
    /* A sub on several channels empties other entries too: pin them all first
     * so the walk only ever deletes the entry it is on. */
    strmap_iterate(w->local, lchan_pin, NULL);
    strmap_iterate(w->local, lchan_teardown, w);
    strmap_free(w->local);
    free(w);
}

size_t sse_worker_subscribers(const sse_worker *w) { return w->nsubs; }

static void lchan_unlink(sse_worker *w, struct sse_sub_link *l)
{
    lchan *lc = l->lch;
    if (lc->iter == l) lc->iter = l->next;
    if (l->prev) l->prev->next = l->next;
    else lc->head = l->next;
    if (l->next) l->next->prev = l->prev;
    l->next = l->prev = NULL;
    l->lch = NULL;
    if (--lc->n == 0 && !lc->busy) strmap_del(w->local, lc);
}

static void deliver_local(sse_worker *w, sse_event *e)
{
    lchan *lc = strmap_get_hashed(w->local, e->hash, e->chan, e->chlen);
    if (!lc) return;
    uint64_t n = 0;
    lc->busy++;
    for (struct sse_sub_link *l = lc->head; l; l = lc->iter) {
        lc->iter = l->next;
        sse_sub *s = l->sub;
        if (e->id > s->start_id_ || !e->id) {      /* id 0: a gap notice (sse_hub_gap), for all */
            s->deliver_(s, e, s->ud_);
            n++;
        }
    }
    if (--lc->busy == 0 && lc->n == 0) strmap_del(w->local, lc);
    atomic_fetch_add_explicit(&w->delivered, n, memory_order_relaxed);
}

size_t sse_worker_drain(sse_worker *w)
{
    size_t n = 0;
    atomic_exchange(&w->pending, 0);
    for (qnode *q; (q = q_pop(w));) {
        sse_event *e = q->ev;
        deliver_local(w, e);
        sse_event_unref(e);
        /* Bound one callback's work so the loop serves sockets under a publish flood. */
        if (++n == 4096) {
            if (atomic_exchange(&w->pending, 1) == 0) w->wake(w->ud);
            break;
        }
    }
    return n;
}

/* Hub side of unsubscribe: drop the counts, free empty entries. Lock held. */
static void hub_release(sse_hub *h, sse_sub *s, size_t nch)
{
    h->nsubs--;
    huser *u = s->user_;
    if (u && --u->count == 0) strmap_del(h->users, u);
    for (size_t i = 0; i < nch; i++) {
        hchan *c = s->link_[i].hch;
        if (--c->nsubs == 0 && c->n == 0) chan_free(h, c);
        s->link_[i].hch = NULL;
    }
    s->user_ = NULL;
}

void sse_worker_unsubscribe(sse_worker *w, sse_sub *s)
{
    if (!s->active_) return;
    s->active_ = 0;
    for (size_t i = 0; i < s->nch_; i++) lchan_unlink(w, &s->link_[i]);
    w->nsubs--;
    pthread_mutex_lock(&w->h->mu);
    hub_release(w->h, s, s->nch_);
    pthread_mutex_unlock(&w->h->mu);
}

static int cmp_ev(const void *a, const void *b)
{
    uint64_t x = (*(sse_event *const *)a)->id, y = (*(sse_event *const *)b)->id;
    return x < y ? -1 : x > y;
}

/* The synthetic "you lost events" notice: no id line, so the client's Last-Event-ID stays put. */
static sse_event *gap_alloc(unsigned nnodes, const char *name, size_t klen, uint64_t last, uint64_t oldest)
{
    size_t need = 130 + 2 * klen;
    char *body;
    sse_event *e = ev_alloc(nnodes, name, klen, need, &body);
    if (!e) return NULL;
    char *p = body;
    p += sprintf(p, "event: " SSE_GAP_EVENT "\ndata: {\"channel\":\"");
    for (size_t i = 0; i < klen; i++) {
        if (name[i] == '"' || name[i] == '\\') *p++ = '\\';
        *p++ = name[i];
    }
    p += sprintf(p, "\",\"last_event_id\":%llu,\"oldest\":%llu}\n\n", (unsigned long long)last,
                 (unsigned long long)oldest);
    e->wire = body;
    e->len = (uint32_t)(p - body);
    return e;
}

static sse_event *gap_event(const hchan *c, uint64_t last, uint64_t oldest)
{
    size_t klen;
    const char *name = strmap_key(c, &klen);
    return gap_alloc(0, name, klen, last, oldest);
}

/* What a new subscriber missed: gap notices first, then events (sorted later). */
typedef struct replay {
    sse_event *gap[SSE_MAX_SUB_CHANNELS];
    sse_event **ev;
    size_t ngap, nev;
} replay;

/* Collects c's events after L into rp, and a gap notice when c's history no
 * longer reaches back to L. An id from an earlier process or from another
 * instance tells us nothing: signal a gap and replay everything kept. Lock held. */
static void chan_snapshot(sse_hub *h, hchan *c, uint64_t L, uint64_t now_ms, replay *rp)
{
    chan_trim(h, c, now_ms, 0);
    int foreign = L < h->id_base || L > h->last_id;
    /* From a gap on, the replay is complete: events up to dropped_max that are still kept (a
     * hole sse_hub_mark_hole recorded inside the history) are left out with the rest, so that
     * the notice's "oldest" is the first id replayed and everything from there on is there. */
    uint64_t from = L;
    if (!foreign && L < c->dropped_max) {
        from = c->dropped_max;
        uint64_t oldest = 0;
        for (uint32_t k = 0; k < c->n && !oldest; k++)
            if (c->ring[(c->head + k) % c->cap]->id > from) oldest = c->ring[(c->head + k) % c->cap]->id;
        if ((rp->gap[rp->ngap] = gap_event(c, L, oldest))) rp->ngap++;
        h->gaps++;
    } else if (foreign) {
        if ((rp->gap[rp->ngap] = gap_event(c, L, c->n ? c->ring[c->head]->id : 0))) rp->ngap++;
        h->gaps++;
    }
    for (uint32_t k = 0; k < c->n; k++) {
        sse_event *e = c->ring[(c->head + k) % c->cap];
        if (foreign || e->id > from) {
            sse_event_ref(e);
            rp->ev[rp->nev++] = e;
        }
    }
}

/* Checks every cap, then takes all the counts at once (or none), so counts are
 * exact under concurrency. On success fills s's hub fields and rp. Lock held. */
static int hub_admit(sse_hub *h, sse_sub *s, const char *const *channels, const size_t *len,
                     const uint64_t *hash, size_t nch, const char *user, const uint64_t *L,
                     uint64_t now_ms, replay *rp)
{
    hchan *hc[SSE_MAX_SUB_CHANNELS];
    size_t need = 0, maxrep = 0, ulen = user ? strlen(user) : 0;
    huser *u = user ? strmap_get(h->users, user, ulen) : NULL;
    if (h->lim.max_total && h->nsubs >= h->lim.max_total) return h->rej_total++, SSE_ERR_TOTAL;
    if (u && h->lim.per_user && u->count >= h->lim.per_user) return h->rej_user++, SSE_ERR_USER;
    for (size_t i = 0; i < nch; i++) {
        hc[i] = strmap_get_hashed(h->chans, hash[i], channels[i], len[i]);
        if (!hc[i]) need++;
        else if (h->lim.per_channel && hc[i]->nsubs >= h->lim.per_channel) return h->rej_channel++, SSE_ERR_CHANNEL;
        else maxrep += hc[i]->n;
    }
    if (need && strmap_count(h->chans) + need > h->lim.max_channels) return h->rej_channel++, SSE_ERR_CHANNEL;
    if (L && maxrep && !(rp->ev = malloc(maxrep * sizeof *rp->ev))) return SSE_ERR_NOMEM;
    if (user && !u && !(u = strmap_put(h->users, user, ulen, NULL))) return SSE_ERR_NOMEM;
    for (size_t i = 0; i < nch; i++)
        if (!hc[i] && !(hc[i] = chan_new(h, channels[i], len[i], hash[i]))) {
            for (size_t j = 0; j < i; j++) /* undo what we created; no count taken yet */
                if (!hc[j]->nsubs && !hc[j]->n) chan_free(h, hc[j]);
            if (u && !u->count) strmap_del(h->users, u);
            return SSE_ERR_NOMEM;
        }
    /* Commit. Live events with id <= start_id_ are either replayed now or predate s. */
    h->nsubs++;
    if (u) u->count++;
    s->user_ = u;
    s->start_id_ = h->last_id;
    for (size_t i = 0; i < nch; i++) {
        hc[i]->nsubs++;
        s->link_[i].hch = hc[i];
        if (L) chan_snapshot(h, hc[i], *L, now_ms, rp);
    }
    h->replayed += rp->nev;
    return SSE_OK;
}

int sse_worker_subscribe(sse_worker *w, sse_sub *s, const char *const *channels, size_t nch,
                         const char *user, const char *last_event_id, uint64_t now_ms,
                         sse_deliver_fn deliver, void *ud)
{
    sse_hub *h = w->h;
    uint64_t hash[SSE_MAX_SUB_CHANNELS], L = 0;
    size_t len[SSE_MAX_SUB_CHANNELS];
    int want_replay = last_event_id && *last_event_id;
    if (s->active_ || nch == 0 || nch > SSE_MAX_SUB_CHANNELS || !deliver) return SSE_ERR_ARG;
    if (want_replay && sseenc_parse_id(last_event_id, &L)) return SSE_ERR_ARG;
    for (size_t i = 0; i < nch; i++) {
        len[i] = strlen(channels[i]);
        if (!valid_channel(channels[i], len[i])) return SSE_ERR_ARG;
        for (size_t j = 0; j < i; j++)
            if (len[j] == len[i] && !memcmp(channels[i], channels[j], len[i])) return SSE_ERR_ARG;
        hash[i] = strmap_hash(h->chans, channels[i], len[i]);
    }
    memset(s, 0, sizeof *s);
    int rc = SSE_OK;
    /* Local entries first (no lock needed), so nothing can fail after the hub commits. */
    for (size_t i = 0; i < nch && rc == SSE_OK; i++) {
        lchan *lc = strmap_put_hashed(w->local, hash[i], channels[i], len[i], NULL);
        s->link_[i].lch = lc;
        if (!lc) rc = SSE_ERR_NOMEM;
    }
    replay rp = { .ngap = 0, .nev = 0, .ev = NULL };
    if (rc == SSE_OK) {
        pthread_mutex_lock(&h->mu);
        rc = hub_admit(h, s, channels, len, hash, nch, user, want_replay ? &L : NULL, now_ms, &rp);
        pthread_mutex_unlock(&h->mu);
    }
    if (rc != SSE_OK) {
        free(rp.ev);
        for (size_t i = 0; i < nch; i++) {
            lchan *lc = s->link_[i].lch;
            if (lc && lc->n == 0 && !lc->busy) strmap_del(w->local, lc);
            s->link_[i].lch = NULL;
        }
        return rc;
    }

    s->deliver_ = deliver;
    s->ud_ = ud;
    s->nch_ = (uint8_t)nch;
    s->active_ = 1;
    w->nsubs++;
    for (size_t i = 0; i < nch; i++) {
        struct sse_sub_link *l = &s->link_[i];
        lchan *lc = l->lch;
        l->sub = s;
        l->prev = NULL;
        l->next = lc->head;
        if (lc->head) lc->head->prev = l;
        lc->head = l;
        lc->n++;
    }
    /* Replay after registering so an unsubscribe from inside deliver works;
     * live events cannot interleave: drain runs on this same thread. */
    for (size_t i = 0; i < rp.ngap; i++) {
        if (s->active_) deliver(s, rp.gap[i], ud);
        sse_event_unref(rp.gap[i]);
    }
    if (rp.nev > 1) qsort(rp.ev, rp.nev, sizeof *rp.ev, cmp_ev);
    for (size_t i = 0; i < rp.nev; i++) {
        if (s->active_) deliver(s, rp.ev[i], ud);
        sse_event_unref(rp.ev[i]);
    }
    atomic_fetch_add_explicit(&w->delivered, rp.nev, memory_order_relaxed);
    free(rp.ev);
    return SSE_OK;
}
