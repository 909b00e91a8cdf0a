/* worker.h: one worker thread (layer L7): its libev loop, listener, timer wheel, current Lua
 * state, connections, compression and scratch buffers, per-worker counters, and the per-worker
 * parts of the services (SSE side, database pool, Redis links, limiter waits, outbound HTTP).
 *
 * Ownership: everything here is used only on the worker's thread, except the reload hand-over
 * fields (guarded by srv->lock) and the atomic counters (read by any thread). Each service
 * creates and frees its own part (worker_setup / worker_teardown in worker.c call them). */
#ifndef SLUICE_WORKER_H
#define SLUICE_WORKER_H

#include <ev.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <zlib.h>

#include "buf.h"
#include "conn.h"
#include "sconfig.h"
#include "timerwheel.h"

typedef struct server server;
/* each service's per-worker part, defined (and created, freed) in its own .c file */
struct wmetrics;                    /* metrics.c */
struct sse_side;                    /* ssestream.c */
struct dbside;                      /* lua_db.c */
struct rbus_w;                      /* rbus.c */
struct rlside;                      /* limiter.c */
struct httpc;                       /* httpc.c */
struct wp_inbox;                    /* workpool.c */

struct worker {
    server *srv;
    int idx;
    pthread_t thread;
    struct ev_loop *loop;
    int lfd;
    ev_io accept_w;
    ev_timer accept_pause;          /* accepting paused after EMFILE */
    double emfile_logged;
    ev_async wake_w;
    ev_prepare prepare_w;
    ev_timer tick_w;
    ev_check reap_w;
    timerwheel *tw;
    uint64_t tw_armed;              /* deadline the tick timer is set for */
    appstate *app;                  /* current Lua state; older ones die with their last task */
    const sconfig *app_cfg;         /* app's config */
    const conn_ops *conn_ops;       /* installed on every accepted connection (dispatch's HTTP set) */
    conn *conns;
    size_t nconns;                  /* live connections, and sockets taken from them (SSE streams) */
    conn *reaplist;
    conn *freelist;
    size_t nfree;
    char date[30];
    long date_t;
    z_stream z;
    int z_ready, z_level;
    buf scratch;                    /* compression output */
    buf jsonbuf;                    /* { json = ... } responses are encoded here */
    int stopping;
    /* reload hand-over, guarded by srv->lock */
    appstate *next_app;
    int swap_pending;
    unsigned long long swapped_gen;
    atomic_int drained;             /* read by the main thread */
    /* counters (read by other threads with relaxed loads) */
    atomic_ullong requests, responses_5xx, responses_4xx, bytes_out, lua_errors, rate_limited;
    atomic_ullong sse_slow_closed, sse_dropped;
    atomic_ullong sse_subscribes, sse_refused_handler;  /* streams admitted; refused by the app.sse handler */
    atomic_long lua_tasks;          /* Lua tasks holding a coroutine: running or parked (lua_app.c) */
    struct wmetrics *metrics;       /* per-worker metrics block */
    struct sse_side *sse;           /* per-worker SSE side */
    struct dbside *db;              /* per-worker database pool */
    char reqid_text[32];            /* last request ID generated on this worker */
    uint64_t now_cache_us;          /* monotonic time read once per loop iteration */
    int test_mode;                  /* spec runner: virtual clock */
    int test_port;
    uint64_t vclock_offset_us;
    /* --- added for multi-instance (rbus.c) --- */
    struct rbus_w *rbus;            /* this worker's Redis connections (NULL without Redis) */
    struct rlside *limiter;         /* limiter.c: rate-limit decisions waiting for Redis */
    struct httpc *httpc;            /* outbound HTTP client (httpc.c, used by lua_http.c) */
    struct wp_inbox *wpinbox;       /* workpool.c: completions of this worker's jobs (created on first use) */
};

/* The worker thread's body: runs its loop until it drains or is told to stop. */
void *worker_main(void *arg);
/* Worker set-up shared with the spec runner's single-worker mode. */
int worker_setup(server *s, worker *w, int idx, appstate *a);
void worker_teardown(worker *w);
/* Monotonic microseconds for this worker (plus the virtual clock's offset in tests): the
 * time the current loop iteration started, so a request reads the clock once, not per use. */
uint64_t worker_now_us(worker *w);
/* Keeps w->date current. */
void worker_update_date(worker *w);

#endif
