/* server.h: the process (layer L7): its workers, the shared tables (rate limits, SSE hub,
 * metrics, Redis settings), reload and shutdown state.
 *
 * Ownership: server_run creates the server and its workers and frees them at exit; the shared
 * tables are thread-safe by design (their own headers say how); `lock` guards the reload
 * hand-over, `reload_lock` the last-reload fields. */
#ifndef SLUICE_SERVER_H
#define SLUICE_SERVER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "sconfig.h"
#include "worker.h"

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
};

/* `sluice run`: serves until SIGTERM/SIGINT; returns the exit status. */
int server_run(const char *config_path, int watch);
/* Builds new Lua states for every worker and swaps them in (all or none); main thread only. */
int server_reload(server *s, char *err, size_t errlen);
/* Asks the main thread for a reload (any thread). */
void server_request_reload(server *s);

#endif
