/* sse.c: the SSE engine's hub: events (refcounted, one allocation each), channels with their
 * history rings, caps, global ids, publishing onto every worker's inbox, stats. The worker side
 * (drain, fan-out, subscribe with replay) is sse_sub.c; the shared types are in sse_int.h. */
#include "sse_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* -------------------------------------------------------------- the inbox */

/* Vyukov's intrusive MPSC queue: push is one exchange, pop never blocks. */
void sse_q_push(sse_worker *w, qnode *n)
{
    atomic_store_explicit(&n->next, NULL, memory_order_relaxed);
    qnode *prev = atomic_exchange_explicit(&w->qhead, n, memory_order_acq_rel);
    atomic_store_explicit(&prev->next, n, memory_order_release);
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
sse_event *sse_ev_alloc(unsigned nnodes, const char *ch, size_t chlen, size_t bodylen, char **body)
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

int sse_valid_channel(const char *s, size_t n)
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

void sse_chan_free(sse_hub *h, hchan *c)
{
    for (uint32_t i = 0; i < c->n; i++) sse_event_unref(c->ring[(c->head + i) % c->cap]);
    if (c->last_id > h->forgotten_max) h->forgotten_max = c->last_id;
    free(c->ring);
    strmap_del(h->chans, c);
}

static int chan_free_cb(void *c, void *h) { return sse_chan_free(h, c), 0; }

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
hchan *sse_chan_new(sse_hub *h, const char *name, size_t len, uint64_t hash)
{
    hchan *c = strmap_put_hashed(h->chans, hash, name, len, NULL);
    /* Events published before this entry existed may be forgotten ones. */
    if (c) c->dropped_max = h->forgotten_max;
    return c;
}

/* Drops history over the count (keeping room for `adding` more) or over the age. */
void sse_chan_trim(sse_hub *h, hchan *c, uint64_t now_ms, uint32_t adding)
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
        sse_q_push(w, &e->node[i]);
        if (atomic_exchange(&w->pending, 1) == 0) w->wake(w->ud);
    }
}

int sse_hub_check(sse_hub *h, const char *channel, size_t chlen, const char *event, const char *data,
                  size_t datalen, const char *id_override, int retry_ms, const char **err)
{
    *err = NULL;
    if (!channel || chlen == 0) return *err = "empty channel", -1;
    if (!sse_valid_channel(channel, chlen)) return *err = "bad channel name (1-200 bytes, no control characters)", -1;
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


int sse_hub_gap(sse_hub *h, const char *channel, size_t chlen, uint64_t last, uint64_t oldest)
{
    if (!sse_valid_channel(channel, chlen)) return -1;
    sse_event *e = sse_gap_alloc(h->nw, channel, chlen, last, oldest);
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
    sse_event *e = sse_ev_alloc(h->nw, channel, chlen, blen, &body);
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
        if (strmap_count(h->chans) >= h->lim.max_channels || !(c = sse_chan_new(h, channel, chlen, e->hash))) {
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
        sse_chan_trim(h, c, now_ms, h->lim.retention_count ? 1 : 0);
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
    sse_chan_trim(x->h, c, x->now_ms, 0);
    if (!c->nsubs && (!c->n || c->last_pub_ms + x->idle_ms <= x->now_ms)) {
        sse_chan_free(x->h, c);
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

/* The synthetic "you lost events" notice: no id line, so the client's Last-Event-ID stays put. */
sse_event *sse_gap_alloc(unsigned nnodes, const char *name, size_t klen, uint64_t last, uint64_t oldest)
{
    size_t need = 130 + 2 * klen;
    char *body;
    sse_event *e = sse_ev_alloc(nnodes, name, klen, need, &body);
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
