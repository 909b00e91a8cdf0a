/* httpc.c: outbound HTTP on libcurl's multi-socket API, one multi handle per worker loop.
 *
 * curl tells us which sockets to watch (CURLMOPT_SOCKETFUNCTION) and when to call it back
 * (CURLMOPT_TIMERFUNCTION); libev watchers report readiness with curl_multi_socket_action.
 * Finished transfers are collected from curl_multi_info_read onto a done list first and their
 * callbacks run afterwards, outside any curl call, so a callback may submit or cancel requests.
 * Easy handles and request structs are recycled: a request in steady state allocates only what
 * curl allocates itself, plus its header list and body copies. */
#include "httpc.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "httpc_int.h"
#include "util.h"

/* ---------------------------------------------------------------- lists */

static void list_push(rlist *l, httpc_req *r)
{
    r->next = NULL;
    r->prev = l->tail;
    if (l->tail) l->tail->next = r;
    else l->head = r;
    l->tail = r;
    l->n++;
}

static void list_remove(rlist *l, httpc_req *r)
{
    if (r->prev) r->prev->next = r->next;
    else l->head = r->next;
    if (r->next) r->next->prev = r->prev;
    else l->tail = r->prev;
    r->prev = r->next = NULL;
    l->n--;
}

/* ---------------------------------------------------------------- per-host load */

static int load_of(httpc *h, const char *host)
{
    int freei = -1;
    for (int i = 0; i < h->nloads; i++) {
        if (strcmp(h->loads[i].name, host) == 0) return i;
        if (freei < 0 && !h->loads[i].active && !h->loads[i].queued) freei = i;
    }
    if (freei < 0) {
        hload *p = realloc(h->loads, (size_t)(h->nloads + 1) * sizeof *p);
        if (!p) return -1;
        h->loads = p;
        freei = h->nloads++;
    }
    snprintf(h->loads[freei].name, sizeof h->loads[freei].name, "%s", host);
    h->loads[freei].active = h->loads[freei].queued = 0;
    return freei;
}

static int host_room(const httpc *h, const httpc_req *r)
{
    return h->lim.max_per_host <= 0 || h->loads[r->load].active < h->lim.max_per_host;
}

static void q_push(httpc *h, httpc_req *r) { list_push(&h->queue, r); h->loads[r->load].queued++; }
static void q_remove(httpc *h, httpc_req *r) { list_remove(&h->queue, r); h->loads[r->load].queued--; }
static void a_remove(httpc *h, httpc_req *r) { list_remove(&h->active, r); h->loads[r->load].active--; }

static void publish_counts(httpc *h)
{
    atomic_store_explicit(&h->in_flight, h->active.n, memory_order_relaxed);
    atomic_store_explicit(&h->queued, h->queue.n, memory_order_relaxed);
}

/* ---------------------------------------------------------------- curl <-> libev */

static void check_done(httpc *h);

static void sock_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    hsock *s = container_of(w, hsock, io);
    httpc *h = s->h;
    int flags = (revents & EV_READ ? CURL_CSELECT_IN : 0) | (revents & EV_WRITE ? CURL_CSELECT_OUT : 0);
    int running;
    curl_multi_socket_action(h->multi, w->fd, flags, &running);   /* may free s (CURL_POLL_REMOVE) */
    check_done(h);
}

/* A socket curl stops watching is closed by curl right after, often (and not always through a
 * close callback), so its watcher goes at once: a watcher left on a closed descriptor would make
 * libev fail on it. Reusing a kept-alive connection costs one epoll_ctl for that. */
static int sock_cb(CURL *e, curl_socket_t fd, int what, void *userp, void *socketp)
{
    httpc *h = userp;
    hsock *s = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (s) {
            ev_io_stop(h->loop, &s->io);
            curl_multi_assign(h->multi, fd, NULL);
            s->next = h->freesocks;
            h->freesocks = s;
        }
        return 0;
    }
    int ev = (what & CURL_POLL_IN ? EV_READ : 0) | (what & CURL_POLL_OUT ? EV_WRITE : 0);
    if (!s) {
        s = h->freesocks;
        if (s) h->freesocks = s->next;
        else if (!(s = malloc(sizeof *s))) return -1;
        s->h = h;
        ev_io_init(&s->io, sock_io_cb, fd, ev);
        ev_io_start(h->loop, &s->io);
        curl_multi_assign(h->multi, fd, s);
        return 0;
    }
    if ((s->io.events & (EV_READ | EV_WRITE)) == ev && ev_is_active(&s->io)) return 0;
    ev_io_stop(h->loop, &s->io);
    ev_io_modify(&s->io, ev);            /* the same socket: no re-registration */
    ev_io_start(h->loop, &s->io);
    return 0;
}

static void timer_fire_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    httpc *h = container_of(t, httpc, timer);
    int running;
    curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(h);
}

/* curl wants to be called back in ms (-1: never); never call curl from here. */
static int timer_cb(CURLM *m, long ms, void *userp)
{
    httpc *h = userp;
    ev_timer_stop(h->loop, &h->timer);
    if (ms >= 0) {
        ev_timer_set(&h->timer, (double)ms / 1000.0, 0.);
        ev_timer_start(h->loop, &h->timer);
    }
    return 0;
}

/* ---------------------------------------------------------------- request lifecycle */

static void req_recycle(httpc *h, httpc_req *r)
{
    httpc_easy_release(h, r);
    if (h->nfree >= FREE_KEEP || h->closing) {
        httpc_easy_free(r);
        return;
    }
    buf_reset(&r->rbody);
    buf_shrink(&r->rbody, BODY_KEEP);
    buf_reset(&r->rhdrs);
    buf_shrink(&r->rhdrs, BODY_KEEP);
    buf_shrink(&r->hlines, BODY_KEEP);
    r->next = h->freereqs;
    h->freereqs = r;
    h->nfree++;
}

static httpc_req *req_alloc(httpc *h)
{
    httpc_req *r = h->freereqs;
    if (r) {
        h->freereqs = r->next;
        h->nfree--;
    } else {
        if (!(r = calloc(1, sizeof *r))) return NULL;
        if (!(r->easy = curl_easy_init())) { free(r); return NULL; }
        r->h = h;
        httpc_easy_defaults(h, r);
    }
    /* what the handle keeps sits before `state`; the rest starts from zero */
    memset(&r->state, 0, sizeof *r - offsetof(httpc_req, state));
    r->uc = -1;
    r->prev = r->next = NULL;
    return r;
}

static const char *version_name(long v)
{
    switch (v) {
    case CURL_HTTP_VERSION_1_0: return "1.0";
    case CURL_HTTP_VERSION_1_1: return "1.1";
    case CURL_HTTP_VERSION_2_0: return "2";
    case 30: return "3";
    default: return "";
    }
}

/* Runs one finished request's callback (unless cancelled meanwhile) and recycles it. */
static void finish(httpc *h, httpc_req *r)
{
    if (r->cancelled) { req_recycle(h, r); return; }
    httpc_result res = {0};
    char msg[CURL_ERROR_SIZE + 512];
    res.host = r->host;
    res.http_version = "";
    if (r->qerr) res.err = r->qerr;
    else res.err = httpc_classify(r, r->rc);
    if (!r->qerr) {
        long code = 0, ver = 0;
        curl_off_t us = 0;
        char *eff = NULL;
        curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &code);
        curl_easy_getinfo(r->easy, CURLINFO_TOTAL_TIME_T, &us);
        curl_easy_getinfo(r->easy, CURLINFO_EFFECTIVE_URL, &eff);
        curl_easy_getinfo(r->easy, CURLINFO_HTTP_VERSION, &ver);
        res.seconds = (double)us / 1e6;
        res.effective_url = eff;
        res.http_version = version_name(ver);
        if (res.err == HTTPC_OK && r->via_proxy && code == 407) {   /* only a proxy says 407 */
            r->proxy_status = 407;
            res.err = HTTPC_E_PROXY;
        }
        if (res.err == HTTPC_OK) {
            res.status = (int)code;
            httpc_count_response(h, r, res.status);
            hist_record(&h->latency, (uint64_t)us);
        }
    }
    if (res.err != HTTPC_OK) {
        httpc_error_text(r, res.err, msg, sizeof msg);
        res.errmsg = msg;
        atomic_fetch_add_explicit(&h->errors[res.err], 1, memory_order_relaxed);
    }
    res.headers = r->rhdrs.data ? r->rhdrs.data : "";
    res.headers_len = r->rhdrs.len;
    res.body = r->rbody.data ? r->rbody.data : "";
    res.body_len = r->rbody.len;
    r->cb(r->ud, &res);
    req_recycle(h, r);
}

static void start_queued(httpc *h);
static int max_slots(const httpc *h) { return h->lim.max_concurrent > 0 ? h->lim.max_concurrent : 1; }

/* Runs callbacks of finished requests; a callback may submit (the list grows) or cancel. */
static void run_done(httpc *h)
{
    if (h->draining) return;
    h->draining = 1;
    httpc_req *r;
    while ((r = h->done.head)) {
        list_remove(&h->done, r);
        finish(h, r);
    }
    h->draining = 0;
}

static void check_done(httpc *h)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(h->multi, &left))) {
        if (m->msg != CURLMSG_DONE) continue;
        CURL *e = m->easy_handle;
        CURLcode rc = m->data.result;
        httpc_req *r = NULL;
        curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&r);
        curl_multi_remove_handle(h->multi, e);      /* m is invalid from here */
        if (!r) continue;
        r->rc = rc;
        a_remove(h, r);
        r->state = R_DONE;
        list_push(&h->done, r);
    }
    start_queued(h);
    publish_counts(h);
    run_done(h);
}

static void kick_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    httpc *h = container_of(t, httpc, kick);
    run_done(h);
}

/* A request that failed before curl had it: its callback runs from the loop. */
static void fail_later(httpc *h, httpc_req *r, enum httpc_err e)
{
    r->qerr = e;
    r->state = R_DONE;
    list_push(&h->done, r);
    if (!ev_is_active(&h->kick)) {
        ev_timer_set(&h->kick, 0., 0.);
        ev_timer_start(h->loop, &h->kick);
    }
}

static void activate(httpc *h, httpc_req *r)
{
    r->state = R_ACTIVE;
    list_push(&h->active, r);
    h->loads[r->load].active++;
    if (curl_multi_add_handle(h->multi, r->easy) != CURLM_OK) {
        a_remove(h, r);
        fail_later(h, r, HTTPC_E_OTHER);
    }
}

/* Starts queued requests in order while slots are free; one whose host is at max_per_host
 * stays (FIFO per host) and does not hold up other hosts behind it. */
static void start_queued(httpc *h)
{
    httpc_req *r, *next;
    for (r = h->queue.head; r && h->active.n < max_slots(h) && !h->closing; r = next) {
        next = r->next;
        if (!host_room(h, r)) continue;
        q_remove(h, r);
        ev_timer_stop(h->loop, &r->qtimer);
        activate(h, r);
    }
}

static void qtimer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    httpc_req *r = container_of(t, httpc_req, qtimer);
    httpc *h = r->h;
    q_remove(h, r);
    fail_later(h, r, HTTPC_E_QUEUE_TIMEOUT);
    publish_counts(h);
}

/* ---------------------------------------------------------------- public */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static int curl_ok;
static void curl_init_once(void) { curl_ok = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK; }

httpc *httpc_new(struct ev_loop *loop, const httpc_limits *lim)
{
    pthread_once(&curl_once, curl_init_once);
    if (!curl_ok) return NULL;
    httpc *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    h->loop = loop;
    h->multi = curl_multi_init();
    if (!h->multi) { free(h); return NULL; }
    ev_init(&h->timer, timer_fire_cb);
    ev_init(&h->kick, kick_cb);
    hist_init(&h->latency);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
    curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
    curl_multi_setopt(h->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);   /* HTTP/2 streams share a connection */
    httpc_proxy_env(h);
    httpc_easy_accept_encoding(h);               /* read once: curl would call getenv for every transfer */
    static const httpc_limits builtin = {256, 64, 64};
    h->lim.max_concurrent = -1;
    httpc_set_limits(h, lim ? lim : &builtin);
    return h;
}

void httpc_set_limits(httpc *h, const httpc_limits *lim)
{
    if (memcmp(&h->lim, lim, sizeof *lim) == 0) return;
    h->lim = *lim;                    /* kept as given so the comparison above stays cheap */
    curl_multi_setopt(h->multi, CURLMOPT_MAXCONNECTS, (long)(lim->max_idle > 0 ? lim->max_idle : 1));
    start_queued(h);
    publish_counts(h);
}

void httpc_free(httpc *h)
{
    if (!h) return;
    h->closing = 1;                   /* submits from the callbacks below fail */
    httpc_req *r;
    while ((r = h->queue.head)) {
        q_remove(h, r);
        ev_timer_stop(h->loop, &r->qtimer);
        r->qerr = HTTPC_E_CANCELLED;
        r->state = R_DONE;
        list_push(&h->done, r);
    }
    while ((r = h->active.head)) {
        a_remove(h, r);
        curl_multi_remove_handle(h->multi, r->easy);
        r->qerr = HTTPC_E_CANCELLED;
        r->state = R_DONE;
        list_push(&h->done, r);
    }
    h->draining = 0;
    run_done(h);
    while ((r = h->freereqs)) {
        h->freereqs = r->next;
        httpc_easy_free(r);
    }
    curl_multi_cleanup(h->multi);     /* closes the cached connections (sock_cb REMOVEs them) */
    httpc_url_cache_free(h);
    ev_timer_stop(h->loop, &h->timer);
    ev_timer_stop(h->loop, &h->kick);
    for (hsock *s = h->freesocks, *n; s; s = n) { n = s->next; free(s); }
    httpc_proxy_free(h);
    free(h->loads);
    free(h);
}

void httpc_cancel(httpc_req *r)
{
    httpc *h = r->h;
    switch (r->state) {
    case R_QUEUED:
        q_remove(h, r);
        ev_timer_stop(h->loop, &r->qtimer);
        break;
    case R_ACTIVE:
        a_remove(h, r);
        curl_multi_remove_handle(h->multi, r->easy);   /* an unfinished transfer's connection is closed */
        start_queued(h);
        break;
    case R_DONE:                      /* on the done list: run_done skips and recycles it */
        r->cancelled = 1;
        atomic_fetch_add_explicit(&h->errors[HTTPC_E_CANCELLED], 1, memory_order_relaxed);
        return;
    }
    atomic_fetch_add_explicit(&h->errors[HTTPC_E_CANCELLED], 1, memory_order_relaxed);
    publish_counts(h);
    req_recycle(h, r);
}

httpc_req *httpc_submit(httpc *h, const httpc_opts *o, httpc_done_cb cb, void *ud, char *err, size_t errlen)
{
    if (h->closing) { snprintf(err, errlen, "the server is shutting down"); return NULL; }
    httpc_req *r = req_alloc(h);
    if (!r) { snprintf(err, errlen, "out of memory"); return NULL; }
    r->cb = cb;
    r->ud = ud;
    r->state = R_QUEUED;
    if (httpc_easy_setup(h, r, o, err, errlen)) {
        req_recycle(h, r);
        return NULL;
    }
    r->host_idx = httpc_host_index(h, r->host);
    if ((r->load = load_of(h, r->host)) < 0) {
        snprintf(err, errlen, "out of memory");
        req_recycle(h, r);
        return NULL;
    }
    /* straight to curl when a slot is free and nothing of this host waits before it (queued
     * requests of other hosts are waiting for their own host, not for a slot) */
    if (h->active.n < max_slots(h) && !h->loads[r->load].queued && host_room(h, r)) {
        activate(h, r);
    } else {
        q_push(h, r);
        ev_timer_init(&r->qtimer, qtimer_cb, o->queue_timeout > 0 ? o->queue_timeout : 0., 0.);
        ev_timer_start(h->loop, &r->qtimer);
    }
    publish_counts(h);
    return r;
}

void httpc_counts(const httpc *h, int *in_flight, int *queued)
{
    *in_flight = h->active.n;
    *queued = h->queue.n;
}

