/* sse_sub.c: the SSE engine's worker side: draining the inbox, fan-out to the local subscribers
 * of a channel, subscribe (every cap checked and taken at once, replay after Last-Event-ID with
 * gap notices) and unsubscribe. The hub is sse.c; the shared types are in sse_int.h. */
#include "sse_int.h"

#include <stdlib.h>
#include <string.h>

/* The consumer side of the inbox (this worker's thread only); pop never blocks. */
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
    sse_q_push(w, &w->stub);
    next = atomic_load_explicit(&tail->next, memory_order_acquire);
    if (next) {
        w->qtail = next;
        return tail;
    }
    return NULL;
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
        if (--c->nsubs == 0 && c->n == 0) sse_chan_free(h, c);
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


static sse_event *gap_event(const hchan *c, uint64_t last, uint64_t oldest)
{
    size_t klen;
    const char *name = strmap_key(c, &klen);
    return sse_gap_alloc(0, name, klen, last, oldest);
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
    sse_chan_trim(h, c, now_ms, 0);
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
        if (!hc[i] && !(hc[i] = sse_chan_new(h, channels[i], len[i], hash[i]))) {
            for (size_t j = 0; j < i; j++) /* undo what we created; no count taken yet */
                if (!hc[j]->nsubs && !hc[j]->n) sse_chan_free(h, hc[j]);
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
        if (!sse_valid_channel(channels[i], len[i])) return SSE_ERR_ARG;
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
