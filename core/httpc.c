/* httpc.c: outbound HTTP on libcurl's multi-socket API, one multi handle per worker loop.
 *
 * curl tells us which sockets to watch (CURLMOPT_SOCKETFUNCTION) and when to call it back
 * (CURLMOPT_TIMERFUNCTION); libev watchers report readiness with curl_multi_socket_action.
 * Finished transfers are collected from curl_multi_info_read onto a done list first and their
 * callbacks run afterwards, outside any curl call, so a callback may submit or cancel requests.
 * Easy handles and request structs are recycled: a request in steady state allocates only what
 * curl allocates itself, plus its header list and body copies. */
#include "httpc.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "hist.h"

#define container_of(p, T, m) ((T *)((char *)(p) - offsetof(T, m)))
#define HTTPC_MAX_HOSTS 32        /* metric labels per worker; later hosts count as "other" */
#define FREE_KEEP 64              /* recycled requests (with their easy handles) per worker */
#define BODY_KEEP 65536           /* a recycled request keeps at most this much buffer */

enum rstate { R_QUEUED, R_ACTIVE, R_DONE };

struct httpc_req {
    httpc *h;
    CURL *easy;
    enum rstate state;
    int cancelled;                /* R_DONE: cancelled before its callback ran */
    httpc_req *prev, *next;       /* in the queue, the active list or the done list */
    ev_timer qtimer;              /* queue_timeout while R_QUEUED */
    CURLU *url;
    struct curl_slist *hdrs;
    char *body;                   /* our copy of the request body */
    buf rbody, rhdrs;             /* response body and the final response's header lines */
    size_t max_body;
    int too_big;
    int max_redirects;
    double timeout, connect_timeout;
    CURLcode rc;
    enum httpc_err qerr;          /* set when it failed before reaching curl */
    int host_idx;
    char host[128];
    char errbuf[CURL_ERROR_SIZE];
    httpc_done_cb cb;
    void *ud;
};

typedef struct hsock {
    ev_io io;
    httpc *h;
    struct hsock *next;
} hsock;

typedef struct hhost {
    char name[128];
    atomic_ullong by_class[6];    /* 1xx..5xx at 1..5 */
} hhost;

typedef struct rlist { httpc_req *head, *tail; int n; } rlist;

struct httpc {
    struct ev_loop *loop;
    CURLM *multi;
    ev_timer timer;               /* curl's timeout */
    ev_timer kick;                /* runs the done list for failures that never reached curl */
    httpc_limits lim;
    rlist queue, active, done;
    httpc_req *freereqs;
    int nfree;
    hsock *freesocks;
    int draining, closing;
    /* metrics: written by this worker only, read by any thread */
    hist latency;
    atomic_ullong errors[HTTPC_E_COUNT];
    atomic_int in_flight, queued;
    hhost hosts[HTTPC_MAX_HOSTS];
    atomic_ullong other_by_class[6];
    atomic_int nhosts;
};

static const char *const err_names[HTTPC_E_COUNT] = {
    "ok", "dns", "connect", "timeout", "tls", "too_large", "redirects", "protocol", "queue_timeout", "cancelled", "other",
};

const char *httpc_err_name(enum httpc_err e) { return e < HTTPC_E_COUNT ? err_names[e] : "other"; }
const char *httpc_req_host(const httpc_req *r) { return r->host; }

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
    if (!s) {
        s = h->freesocks;
        if (s) h->freesocks = s->next;
        else if (!(s = malloc(sizeof *s))) return -1;
        s->h = h;
        ev_init(&s->io, sock_io_cb);
        curl_multi_assign(h->multi, fd, s);
    }
    int ev = (what & CURL_POLL_IN ? EV_READ : 0) | (what & CURL_POLL_OUT ? EV_WRITE : 0);
    if (ev_is_active(&s->io) && s->io.fd == fd && (s->io.events & (EV_READ | EV_WRITE)) == ev) return 0;
    ev_io_stop(h->loop, &s->io);
    ev_io_set(&s->io, fd, ev);
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

/* ---------------------------------------------------------------- per-transfer callbacks */

static size_t write_cb(char *p, size_t size, size_t n, void *ud)
{
    httpc_req *r = ud;
    size_t len = size * n;
    if (r->max_body && r->rbody.len + len > r->max_body) { r->too_big = 1; return 0; }
    if (buf_append(&r->rbody, p, len)) return 0;
    return len;
}

static size_t header_cb(char *p, size_t size, size_t n, void *ud)
{
    httpc_req *r = ud;
    size_t len = size * n;
    if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) {   /* a new response (redirect, 1xx): start over */
        buf_reset(&r->rhdrs);
        return len;
    }
    if (len <= 2) return len;                       /* the blank line */
    if (buf_append(&r->rhdrs, p, len)) return 0;
    return len;
}

/* ---------------------------------------------------------------- request lifecycle */

static void req_recycle(httpc *h, httpc_req *r)
{
    if (r->url) { curl_url_cleanup(r->url); r->url = NULL; }
    if (r->hdrs) { curl_slist_free_all(r->hdrs); r->hdrs = NULL; }
    free(r->body);
    r->body = NULL;
    if (h->nfree >= FREE_KEEP || h->closing) {
        if (r->easy) curl_easy_cleanup(r->easy);
        buf_free(&r->rbody);
        buf_free(&r->rhdrs);
        free(r);
        return;
    }
    curl_easy_reset(r->easy);         /* keeps curl's caches; the connections live in the multi */
    buf_reset(&r->rbody);
    buf_shrink(&r->rbody, BODY_KEEP);
    buf_reset(&r->rhdrs);
    buf_shrink(&r->rhdrs, BODY_KEEP);
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
    }
    CURL *e = r->easy;
    buf rb = r->rbody, rh = r->rhdrs;
    memset(r, 0, sizeof *r);
    r->easy = e;
    r->rbody = rb;
    r->rhdrs = rh;
    r->h = h;
    return r;
}

static int host_index(httpc *h, const char *host)
{
    int n = atomic_load_explicit(&h->nhosts, memory_order_relaxed);
    for (int i = 0; i < n; i++)
        if (strcmp(h->hosts[i].name, host) == 0) return i;
    if (n >= HTTPC_MAX_HOSTS) return -1;
    snprintf(h->hosts[n].name, sizeof h->hosts[n].name, "%s", host);
    atomic_store_explicit(&h->nhosts, n + 1, memory_order_release);   /* name before count */
    return n;
}

static void count_response(httpc *h, httpc_req *r, int status)
{
    int cls = status / 100;
    if (cls < 1 || cls > 5) return;
    atomic_ullong *c = r->host_idx >= 0 ? &h->hosts[r->host_idx].by_class[cls] : &h->other_by_class[cls];
    atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

static enum httpc_err classify(httpc_req *r, CURLcode rc)
{
    switch (rc) {
    case CURLE_OK: return HTTPC_OK;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY: return HTTPC_E_DNS;
    case CURLE_COULDNT_CONNECT: return HTTPC_E_CONNECT;
    case CURLE_OPERATION_TIMEDOUT: return HTTPC_E_TIMEOUT;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_USE_SSL_FAILED: return HTTPC_E_TLS;
    case CURLE_FILESIZE_EXCEEDED: return HTTPC_E_TOO_LARGE;
    case CURLE_WRITE_ERROR: return r->too_big ? HTTPC_E_TOO_LARGE : HTTPC_E_OTHER;
    case CURLE_TOO_MANY_REDIRECTS: return HTTPC_E_REDIRECTS;
    case CURLE_GOT_NOTHING:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_BAD_CONTENT_ENCODING:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_HTTP_RETURNED_ERROR: return HTTPC_E_PROTOCOL;
    default: return HTTPC_E_OTHER;
    }
}

/* "host: reason (curl's detail)" */
static void error_text(httpc_req *r, enum httpc_err e, char *out, size_t n)
{
    const char *detail = r->errbuf[0] ? r->errbuf : e == HTTPC_E_QUEUE_TIMEOUT || e == HTTPC_E_CANCELLED ? "" : curl_easy_strerror(r->rc);
    char reason[160];
    switch (e) {
    case HTTPC_E_DNS: snprintf(reason, sizeof reason, "could not resolve the host name"); break;
    case HTTPC_E_CONNECT: snprintf(reason, sizeof reason, "could not connect (refused or unreachable)"); break;
    case HTTPC_E_TIMEOUT: {
        curl_off_t ct = 0;
        curl_easy_getinfo(r->easy, CURLINFO_CONNECT_TIME_T, &ct);
        if (ct == 0 && r->connect_timeout > 0) snprintf(reason, sizeof reason, "connect timed out (connect_timeout %g s)", r->connect_timeout);
        else snprintf(reason, sizeof reason, "timed out (timeout %g s)", r->timeout);
        break;
    }
    case HTTPC_E_TLS:
        snprintf(reason, sizeof reason, "%s", r->rc == CURLE_PEER_FAILED_VERIFICATION ? "TLS certificate verification failed" : "TLS failed");
        break;
    case HTTPC_E_TOO_LARGE: snprintf(reason, sizeof reason, "response body over max_body (%zu bytes)", r->max_body); detail = ""; break;
    case HTTPC_E_REDIRECTS: snprintf(reason, sizeof reason, "too many redirects (max_redirects %d)", r->max_redirects); break;
    case HTTPC_E_PROTOCOL: snprintf(reason, sizeof reason, "bad or incomplete response"); break;
    case HTTPC_E_QUEUE_TIMEOUT: snprintf(reason, sizeof reason, "no free slot within queue_timeout (http_client.max_concurrent requests in flight)"); break;
    case HTTPC_E_CANCELLED: snprintf(reason, sizeof reason, "cancelled"); break;
    default: snprintf(reason, sizeof reason, "request failed"); break;
    }
    if (detail && *detail) snprintf(out, n, "%s: %s (%s)", r->host, reason, detail);
    else snprintf(out, n, "%s: %s", r->host, reason);
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
    else res.err = classify(r, r->rc);
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
        if (res.err == HTTPC_OK) {
            res.status = (int)code;
            count_response(h, r, res.status);
            hist_record(&h->latency, (uint64_t)us);
        }
    }
    if (res.err != HTTPC_OK) {
        error_text(r, res.err, msg, sizeof msg);
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
        list_remove(&h->active, r);
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
    if (curl_multi_add_handle(h->multi, r->easy) != CURLM_OK) {
        list_remove(&h->active, r);
        fail_later(h, r, HTTPC_E_OTHER);
    }
}

static void start_queued(httpc *h)
{
    httpc_req *r;
    while ((r = h->queue.head) && h->active.n < max_slots(h) && !h->closing) {
        list_remove(&h->queue, r);
        ev_timer_stop(h->loop, &r->qtimer);
        activate(h, r);
    }
}

static void qtimer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    httpc_req *r = container_of(t, httpc_req, qtimer);
    httpc *h = r->h;
    list_remove(&h->queue, r);
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
    h->lim.max_concurrent = -1;
    httpc_set_limits(h, lim);
    return h;
}

void httpc_set_limits(httpc *h, const httpc_limits *lim)
{
    if (memcmp(&h->lim, lim, sizeof *lim) == 0) return;
    h->lim = *lim;                    /* kept as given so the comparison above stays cheap */
    curl_multi_setopt(h->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)(lim->max_per_host > 0 ? lim->max_per_host : 0));
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
        list_remove(&h->queue, r);
        ev_timer_stop(h->loop, &r->qtimer);
        r->qerr = HTTPC_E_CANCELLED;
        r->state = R_DONE;
        list_push(&h->done, r);
    }
    while ((r = h->active.head)) {
        list_remove(&h->active, r);
        curl_multi_remove_handle(h->multi, r->easy);
        r->qerr = HTTPC_E_CANCELLED;
        r->state = R_DONE;
        list_push(&h->done, r);
    }
    h->draining = 0;
    run_done(h);
    while ((r = h->freereqs)) {
        h->freereqs = r->next;
        curl_easy_cleanup(r->easy);
        buf_free(&r->rbody);
        buf_free(&r->rhdrs);
        free(r);
    }
    curl_multi_cleanup(h->multi);     /* closes the cached connections: sock_cb REMOVEs them */
    ev_timer_stop(h->loop, &h->timer);
    ev_timer_stop(h->loop, &h->kick);
    for (hsock *s = h->freesocks, *n; s; s = n) { n = s->next; free(s); }
    free(h);
}

void httpc_cancel(httpc_req *r)
{
    httpc *h = r->h;
    switch (r->state) {
    case R_QUEUED:
        list_remove(&h->queue, r);
        ev_timer_stop(h->loop, &r->qtimer);
        break;
    case R_ACTIVE:
        list_remove(&h->active, r);
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

static int set_method(httpc_req *r, const httpc_opts *o)
{
    CURL *e = r->easy;
    const char *m = o->method ? o->method : "GET";
    /* POST, PUT and PATCH always carry a body (Content-Length: 0 when empty): some servers
     * answer 411 to one without a length */
    int has_body = o->body != NULL || !strcmp(m, "POST") || !strcmp(m, "PUT") || !strcmp(m, "PATCH");
    if (has_body) {
        if (!(r->body = malloc(o->body_len ? o->body_len : 1))) return -1;
        if (o->body_len) memcpy(r->body, o->body, o->body_len);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(o->body ? o->body_len : 0));
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body);
        /* redirects as curl does them: 301/302/303 turn a POST into a GET, 307/308 keep it */
        if (strcmp(m, "POST") != 0) curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, m);
    } else if (strcmp(m, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (strcmp(m, "GET") != 0) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, m);
    }
    return 0;
}

httpc_req *httpc_submit(httpc *h, const httpc_opts *o, httpc_done_cb cb, void *ud, char *err, size_t errlen)
{
    if (h->closing) { snprintf(err, errlen, "the server is shutting down"); return NULL; }
    httpc_req *r = req_alloc(h);
    if (!r) { snprintf(err, errlen, "out of memory"); return NULL; }
    r->cb = cb;
    r->ud = ud;
    r->state = R_QUEUED;
    /* the URL: http or https with a host; curl parses it once and the transfer uses the handle */
    r->url = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL;
    CURLUcode uc = r->url ? curl_url_set(r->url, CURLUPART_URL, o->url, CURLU_NON_SUPPORT_SCHEME) : CURLUE_OUT_OF_MEMORY;
    if (uc == CURLUE_OK) uc = curl_url_get(r->url, CURLUPART_SCHEME, &scheme, 0);
    if (uc == CURLUE_OK) uc = curl_url_get(r->url, CURLUPART_HOST, &host, 0);
    if (uc != CURLUE_OK || !scheme || (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0)) {
        snprintf(err, errlen, uc != CURLUE_OK ? "invalid URL (%s): want http://host/... or https://host/..." :
                 "unsupported URL scheme (%s): want http:// or https://", uc != CURLUE_OK ? curl_url_strerror(uc) : scheme);
        curl_free(scheme);
        curl_free(host);
        req_recycle(h, r);
        return NULL;
    }
    curl_url_get(r->url, CURLUPART_PORT, &port, 0);
    if (port) snprintf(r->host, sizeof r->host, "%s:%s", host, port);
    else snprintf(r->host, sizeof r->host, "%s", host);
    /* https may negotiate h2: wait for a connection being set up rather than open another
     * (for http:// the wait would hold requests behind a slow HTTP/1.1 response) */
    if (strcmp(scheme, "https") == 0) curl_easy_setopt(r->easy, CURLOPT_PIPEWAIT, 1L);
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    r->host_idx = host_index(h, r->host);

    CURL *e = r->easy;
    curl_easy_setopt(e, CURLOPT_CURLU, r->url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);              /* worker threads: no SIGALRM for DNS */
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS); /* h2 when TLS offers it */
    r->timeout = o->timeout;
    r->connect_timeout = o->connect_timeout;
    if (o->timeout > 0) curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)(o->timeout * 1000 + 0.5));
    if (o->connect_timeout > 0) curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(o->connect_timeout * 1000 + 0.5));
    r->max_body = o->max_body;
    if (o->max_body) curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)o->max_body);
    r->max_redirects = o->max_redirects;
    if (o->follow_redirects) {
        curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
        curl_easy_setopt(e, CURLOPT_MAXREDIRS, (long)o->max_redirects);
    }
    if (!o->verify_tls) {
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (o->decompress) curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    if (o->ca_file) curl_easy_setopt(e, CURLOPT_CAINFO, o->ca_file);
    if (o->client_cert) curl_easy_setopt(e, CURLOPT_SSLCERT, o->client_cert);
    if (o->client_key) curl_easy_setopt(e, CURLOPT_SSLKEY, o->client_key);
    if (o->key_password) curl_easy_setopt(e, CURLOPT_KEYPASSWD, o->key_password);
    if (o->proxy) curl_easy_setopt(e, CURLOPT_PROXY, o->proxy);
    if (o->no_proxy) curl_easy_setopt(e, CURLOPT_NOPROXY, o->no_proxy);
    if (o->user_agent) curl_easy_setopt(e, CURLOPT_USERAGENT, o->user_agent);
    for (size_t i = 0; i < o->nheaders; i++) {
        struct curl_slist *n = curl_slist_append(r->hdrs, o->headers[i]);
        if (!n) goto oom;
        r->hdrs = n;
    }
    if (o->body && o->body_len > 1024) {   /* no Expect: 100-continue round trip for large bodies */
        struct curl_slist *n = curl_slist_append(r->hdrs, "Expect:");
        if (!n) goto oom;
        r->hdrs = n;
    }
    if (r->hdrs) curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->hdrs);
    if (set_method(r, o)) goto oom;

    if (h->active.n < max_slots(h) && !h->queue.n) {
        activate(h, r);
    } else {
        list_push(&h->queue, r);
        ev_timer_init(&r->qtimer, qtimer_cb, o->queue_timeout > 0 ? o->queue_timeout : 0., 0.);
        ev_timer_start(h->loop, &r->qtimer);
    }
    publish_counts(h);
    return r;
oom:
    snprintf(err, errlen, "out of memory");
    req_recycle(h, r);
    return NULL;
}

void httpc_counts(const httpc *h, int *in_flight, int *queued)
{
    *in_flight = h->active.n;
    *queued = h->queue.n;
}

/* ---------------------------------------------------------------- metrics */

static void put_label(buf *out, const char *s)
{
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') buf_append(out, "\\", 1);
        if (*s == '\n') { buf_puts(out, "\\n"); continue; }
        buf_append(out, s, 1);
    }
}

void httpc_metrics(httpc *const *hs, int n, buf *out)
{
    typedef struct { const char *name; unsigned long long c[6]; } mh;
    mh merged[HTTPC_MAX_HOSTS + 1];
    int nm = 0;
    unsigned long long other[6] = {0}, errs[HTTPC_E_COUNT] = {0};
    long long inflight = 0, queued = 0;
    hist lat;
    hist_init(&lat);
    for (int w = 0; w < n; w++) {
        httpc *h = hs[w];
        if (!h) continue;
        int nh = atomic_load_explicit(&h->nhosts, memory_order_acquire);
        for (int i = 0; i < nh; i++) {
            int k = 0;
            while (k < nm && strcmp(merged[k].name, h->hosts[i].name) != 0) k++;
            unsigned long long *dst;
            if (k == nm && nm < HTTPC_MAX_HOSTS) { merged[nm].name = h->hosts[i].name; memset(merged[nm].c, 0, sizeof merged[nm].c); nm++; }
            dst = k < nm ? merged[k].c : other;
            for (int c = 1; c <= 5; c++) dst[c] += atomic_load_explicit(&h->hosts[i].by_class[c], memory_order_relaxed);
        }
        for (int c = 1; c <= 5; c++) other[c] += atomic_load_explicit(&h->other_by_class[c], memory_order_relaxed);
        for (int e = 1; e < HTTPC_E_COUNT; e++) errs[e] += atomic_load_explicit(&h->errors[e], memory_order_relaxed);
        inflight += atomic_load_explicit(&h->in_flight, memory_order_relaxed);
        queued += atomic_load_explicit(&h->queued, memory_order_relaxed);
        hist_merge(&lat, &h->latency);
    }
    buf_puts(out, "# HELP sluice_http_client_requests_total Outbound requests answered, by host and status class.\n"
                  "# TYPE sluice_http_client_requests_total counter\n");
    for (int k = 0; k <= nm; k++) {
        const char *name = k < nm ? merged[k].name : "other";
        unsigned long long *c = k < nm ? merged[k].c : other;
        if (k == nm && !(other[1] | other[2] | other[3] | other[4] | other[5])) break;
        for (int cls = 1; cls <= 5; cls++) {
            if (!c[cls]) continue;
            buf_puts(out, "sluice_http_client_requests_total{host=\"");
            put_label(out, name);
            buf_printf(out, "\",code=\"%dxx\"} %llu\n", cls, c[cls]);
        }
    }
    buf_puts(out, "# HELP sluice_http_client_errors_total Outbound requests that got no response, by kind.\n"
                  "# TYPE sluice_http_client_errors_total counter\n");
    for (int e = 1; e < HTTPC_E_COUNT; e++)
        buf_printf(out, "sluice_http_client_errors_total{kind=\"%s\"} %llu\n", err_names[e], errs[e]);
    buf_printf(out, "# HELP sluice_http_client_in_flight Outbound requests handed to curl.\n"
                    "# TYPE sluice_http_client_in_flight gauge\nsluice_http_client_in_flight %lld\n", inflight);
    buf_printf(out, "# HELP sluice_http_client_queued Outbound requests waiting for a slot (http_client.max_concurrent).\n"
                    "# TYPE sluice_http_client_queued gauge\nsluice_http_client_queued %lld\n", queued);
    static const double le[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
    buf_puts(out, "# HELP sluice_http_client_request_duration_seconds Outbound request time on the wire, answered requests.\n"
                  "# TYPE sluice_http_client_request_duration_seconds histogram\n");
    for (size_t i = 0; i < sizeof le / sizeof *le; i++) {
        uint64_t top = hist_bucket_top((uint64_t)(le[i] * 1e6));
        buf_printf(out, "sluice_http_client_request_duration_seconds_bucket{le=\"%g\"} %llu\n", (double)top / 1e6,
                   (unsigned long long)hist_count_le(&lat, top));
    }
    buf_printf(out, "sluice_http_client_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)lat.count);
    buf_printf(out, "sluice_http_client_request_duration_seconds_sum %.6f\n", (double)lat.sum / 1e6);
    buf_printf(out, "sluice_http_client_request_duration_seconds_count %llu\n", (unsigned long long)lat.count);
}
