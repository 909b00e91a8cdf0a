/* worker.c: one worker thread's loop (see worker.h): set-up and teardown of its parts, the
 * timer-wheel tick, reaping closed connections, the reload hand-over (swapping in the new Lua
 * state between events), the graceful stop, and the per-iteration clock and Date header. */
#include "worker.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "clock.h"
#include "conn.h"
#include "dispatch.h"
#include "httpc.h"
#include "limiter.h"
#include "log.h"
#include "lua_app.h"
#include "lua_db.h"
#include "metrics.h"
#include "rbus.h"
#include "ssebus.h"
#include "ssestream.h"
#include "util.h"
#include "workpool.h"

static void worker_tick_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    worker *w = container_of(t, worker, tick_w);
    timerwheel_run(w->tw, worker_now_us(w) / 1000);
    w->tw_armed = 0;
}

/* Before the loop sleeps: arm one ev_timer for the wheel's next deadline. */
static void worker_maybe_drained(worker *w);

static void worker_prepare_cb(struct ev_loop *loop, ev_prepare *p, int revents)
{
    worker *w = container_of(p, worker, prepare_w);
    /* connections closed by this iteration's callbacks: the check watcher already ran */
    if (w->reaplist) conn_reap(w);
    worker_maybe_drained(w);
    uint64_t now = worker_now_us(w) / 1000;
    uint64_t next = timerwheel_next(w->tw, now);
    if (next == w->tw_armed && ev_is_active(&w->tick_w)) return;
    ev_timer_stop(loop, &w->tick_w);
    w->tw_armed = next;
    if (next == UINT64_MAX) return;
    double d = next > now ? (double)(next - now) / 1000.0 : 0.0;
    ev_timer_set(&w->tick_w, d + 0.0005, 0.);
    ev_timer_start(loop, &w->tick_w);
}

static void worker_maybe_drained(worker *w)
{
    if (w->stopping && !w->nconns && !w->drained) {
        w->drained = 1;
        if (w->srv->on_drained) w->srv->on_drained(w->srv);   /* the main thread waits for every worker */
        ev_break(w->loop, EVBREAK_ALL);
    }
}

static void worker_reap_cb(struct ev_loop *loop, ev_check *c, int revents)
{
    worker *w = container_of(c, worker, reap_w);
    conn_reap(w);
    worker_maybe_drained(w);
}

static void worker_swap(worker *w)
{
    server *s = w->srv;
    pthread_mutex_lock(&s->lock);
    appstate *next = w->next_app;
    w->next_app = NULL;
    int pending = w->swap_pending;
    w->swap_pending = 0;
    pthread_mutex_unlock(&s->lock);
    if (!pending) return;
    if (next) {
        appstate *old = w->app;
        w->app = next;
        w->app_cfg = next->cfg;
        appstate_activate(next);
        appstate_retire(old);
        appstate_release(old);
        db_worker_configure(w);
    }
    pthread_mutex_lock(&s->lock);
    w->swapped_gen++;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

static void worker_begin_stop(worker *w)
{
    if (w->stopping) return;
    w->stopping = 1;
    ev_io_stop(w->loop, &w->accept_w);
    ev_timer_stop(w->loop, &w->accept_pause);
    if (w->lfd >= 0) { close(w->lfd); w->lfd = -1; }
    appstate_retire(w->app);
    /* idle keep-alive connections and streams go now; busy ones finish their request */
    for (conn *c = w->conns, *n; c; c = n) {
        n = c->next;
        if (c->state == CS_SSE || (c->state == CS_READING && !c->mid_request)) conn_close(c);
    }
    ssestream_worker_stop(w);     /* streams: a retry hint, then closed */
    conn_reap(w);
    worker_maybe_drained(w);      /* nothing left: the check watcher may not run again */
}

static void worker_wake_cb(struct ev_loop *loop, ev_async *a, int revents)
{
    worker *w = container_of(a, worker, wake_w);
    worker_swap(w);
    if (atomic_load(&w->srv->force_stop)) { ev_break(loop, EVBREAK_ALL); return; }
    if (atomic_load(&w->srv->stopping)) worker_begin_stop(w);
}

void *worker_main(void *arg)
{
    worker *w = arg;
    char name[16];
    snprintf(name, sizeof name, "sluice-w%d", w->idx);
    pthread_setname_np(pthread_self(), name);
    appstate_activate(w->app);
    ev_run(w->loop, 0);
    return NULL;
}

/* Runs the pending callbacks of one loop iteration, after one read of the clock. */
static void worker_invoke_pending(struct ev_loop *loop)
{
    worker *w = ev_userdata(loop);
    w->now_cache_us = mono_us();
    ev_invoke_pending(loop);
}

int worker_setup(server *s, worker *w, int idx, appstate *a)
{
    w->srv = s;
    w->idx = idx;
    w->lfd = -1;
    w->loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
    if (!w->loop) return -1;
    w->app = a;
    w->app_cfg = a->cfg;
    w->conn_ops = &dispatch_http_ops;
    a->w = w;
    ev_set_userdata(w->loop, w);
    ev_set_invoke_pending_cb(w->loop, worker_invoke_pending);
    w->tw = timerwheel_new(worker_now_us(w) / 1000);
    ev_async_init(&w->wake_w, worker_wake_cb);
    ev_async_start(w->loop, &w->wake_w);
    ev_prepare_init(&w->prepare_w, worker_prepare_cb);
    ev_prepare_start(w->loop, &w->prepare_w);
    ev_init(&w->tick_w, worker_tick_cb);
    ev_init(&w->accept_pause, conn_accept_resume_cb);
    ev_check_init(&w->reap_w, worker_reap_cb);
    ev_check_start(w->loop, &w->reap_w);
    if (metrics_worker_init(w) || ssestream_worker_init(w) || db_worker_init(w) || rbus_worker_init(w)) return -1;
    if (!(w->httpc = httpc_new(w->loop, NULL))) return -1;   /* app.http; limits from each state */
    return 0;
}

void worker_teardown(worker *w)
{
    for (conn *c = w->conns, *n; c; c = n) { n = c->next; conn_close(c); }
    ssestream_worker_close(w);
    conn_reap(w);
    for (conn *c = w->freelist, *n; c; c = n) {
        n = c->next;
        buf_free(&c->in);
        buf_free(&c->out);
        http_req_free(&c->req);
        free(c);
    }
    w->freelist = NULL;
    httpc_free(w->httpc);           /* app.http tasks still waiting resume with "cancelled" */
    w->httpc = NULL;
    wp_inbox_free(w->wpinbox);      /* waits for this worker's running password jobs */
    w->wpinbox = NULL;
    db_worker_free(w);
    limiter_worker_free(w);
    ssebus_worker_free(w);
    rbus_worker_free(w);
    if (w->app) { appstate_retire(w->app); appstate_release(w->app); w->app = NULL; }
    ssestream_worker_free(w);
    metrics_worker_free(w);
    if (w->z_ready) deflateEnd(&w->z);
    buf_free(&w->scratch);
    buf_free(&w->jsonbuf);
    if (w->tw) timerwheel_free(w->tw);
    if (w->lfd >= 0) close(w->lfd);
    ev_loop_destroy(w->loop);
}
