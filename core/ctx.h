/* ctx.h: the worker and process context records (layer L0): `struct worker` (one worker thread's
 * loop, listener, timer wheel, current Lua state, connections, scratch buffers, counters) and
 * `struct server` (the process: its workers, shared tables, reload and shutdown state).
 *
 * Data only. Every layer reaches its own part through these records, so they sit at the bottom:
 * each service's per-worker or shared part is an opaque pointer here, defined, created and freed
 * in that service's own .c file (worker_setup / worker_teardown in worker.c, server_run in
 * server.c call them, layer L7). Nothing here calls up: the process asks for what only it can do
 * through the function pointers at the end of `struct server` (request_reload, on_drained).
 *
 * Ownership: a worker's fields are used only on its thread, except the reload hand-over fields
 * (guarded by srv->lock) and the atomic counters (read by any thread with relaxed loads). The
 * server's shared tables are thread-safe by design (their own headers say how); `lock` guards the
 * reload hand-over, `reload_lock` the last-reload fields. The per-iteration clock of a worker and
 * its Date header are clock.h's (worker_now_us, worker_update_date). */
#ifndef SLUICE_CTX_H
#define SLUICE_CTX_H

#include <ev.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <zlib.h>

#include "buf.h"

typedef struct worker worker;
typedef struct conn conn;
typedef struct conn_ops conn_ops;
typedef struct appstate appstate;
typedef struct sconfig sconfig;
typedef struct timerwheel timerwheel;
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


/* the shared tables, defined in their own modules */
struct ratelimit;                   /* ratelimit.c */
struct sse_hub;                     /* sse.c */
struct smetrics;                    /* metrics.c */
struct rbus_srv;                    /* rbus.c */
struct ssebus;                      /* ssebus.c */
struct lcache;                      /* lua_cache.c */

struct server {
    worker *workers;
    int nworkers;
    char *config_path;
    int watch;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    atomic_int nconns;              /* across all workers, for max_connections */
    unsigned fd_cap;                /* connections the open-files limit allows (0 = no limit known) */
    atomic_int stopping, force_stop;
    double started, started_wall;
    atomic_ullong reloads, reload_failures;
    char last_reload_error[1024];
    struct ratelimit *rl;           /* shared rate-limit table */
    struct sse_hub *ssehub;         /* shared SSE hub */
    struct smetrics *metrics;
    const sconfig *cfg0;            /* config of worker 0's current state (main thread only) */
    atomic_uint metrics_max_channels;   /* copied from the config for readers on any thread */
    atomic_uint sse_cap, conn_cap;      /* sse.max_connections, effective limits.max_connections (same) */
    int port;                           /* the port listened on (PORT or the config's) */
    pthread_mutex_t reload_lock;        /* guards the three below: the main thread writes, status readers copy */
    double last_reload_wall;            /* wall-clock time of the last reload attempt, 0 = none */
    atomic_int last_reload_ok;          /* its outcome */
    /* --- added for multi-instance (rbus.c, lua_cache.c) --- */
    struct rbus_srv *rbus;          /* shared Redis settings and counters (NULL without Redis) */
    struct ssebus *ssebus;          /* ssebus.c: catch-up state of the Redis subscriber (NULL without Redis) */
    struct lcache *_Atomic cache;   /* app.cache's in-process table, created on first use */
    void (*on_drained)(server *s);  /* set by server_run: a worker drained at shutdown (any thread) */
    void (*request_reload)(server *s);  /* set by server_run: ask the main thread for a reload (any
                                         * thread); NULL in the spec runner, which has no reload */
};

#endif
