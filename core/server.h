/* server.h: the process, its worker threads and their connections (internal to the core). */
#ifndef SLUICE_SERVER_H
#define SLUICE_SERVER_H

#include <ev.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>
#include <zlib.h>

#include "buf.h"
#include "http.h"
#include "sconfig.h"
#include "timerwheel.h"

typedef struct server server;
typedef struct worker worker;
typedef struct conn conn;
typedef struct appstate appstate;
typedef struct task task;

enum conn_state { CS_READING, CS_HANDLING, CS_SSE, CS_CLOSING };
enum tmo_kind { TMO_NONE, TMO_HEADER, TMO_BODY, TMO_IDLE, TMO_HANDLER, TMO_HEARTBEAT };

struct conn {
    worker *w;
    int fd;
    ev_io io;
    tw_entry tmo;
    int tmo_kind;
    enum conn_state state;
    unsigned want_close : 1, continue_sent : 1, writing : 1, closed : 1, reap : 1, counted : 1;
    unsigned mid_request : 1;       /* bytes of a request arrived and its response is not queued yet */
    unsigned out_paused : 1;        /* unsent output over limits.max_output_buffer: not reading */
    uint32_t gen;                   /* bumps per request: stale Lua req handles see a mismatch */
    struct sockaddr_storage peer;
    char ip[48];
    http_conn_parser hp;
    http_req req;
    buf in, out;
    uint64_t req_start_us;
    int status;                     /* last response status, for the access log and metrics */
    size_t resp_bytes;
    task *task;                     /* the handler coroutine while it is suspended */
    conn *prev, *next;              /* worker's list of live connections */
    conn *reap_next;
    void *sse;                      /* SSE stream state (ssestream.c), NULL for plain HTTP */
    unsigned in_dispatch : 1, has_lv : 1, cors_ok : 1;
    int file_fd;                    /* static file body still to send, -1 when none */
    off_t file_off, file_left;
    char reqid[40];
    appstate *sse_app;              /* state holding the stream's on_close callback */
    int sse_close_ref;
    uint32_t client_ip_gen;
    char client_ip[64];
    char ipkey[64];                 /* rate-limit key of the peer address, computed once */
    uint8_t ipkey_len;
    struct limiter_verdict_s {
        const char *policy;
        const struct sc_policy *pol;
        uint64_t limit, remaining, window_s, reset_s, retry_after_s;
    } lv;                           /* rate-limit outcome, for the RateLimit headers */
};

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
    conn *conns;
    size_t nconns;
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
    void *metrics;                  /* per-worker metrics block */
    void *sse;                      /* per-worker SSE side */
    void *db;                       /* per-worker database pool */
    char reqid_text[32];            /* last request ID generated on this worker */
    uint64_t now_cache_us;          /* monotonic time read once per loop iteration */
    int test_mode;                  /* spec runner: virtual clock */
    int test_port;
    uint64_t vclock_offset_us;
    /* --- added for multi-instance (rbus.c) --- */
    void *rbus;                     /* this worker's Redis connections (NULL without Redis) */
    void *limiter;                  /* limiter.c: rate-limit decisions waiting for Redis */
};

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
    void *rl;                       /* shared rate-limit table */
    void *ssehub;                   /* shared SSE hub */
    void *metrics;
    const sconfig *cfg0;            /* config of worker 0's current state (main thread only) */
    atomic_uint metrics_max_channels;   /* copied from the config for readers on any thread */
    /* --- added for multi-instance (rbus.c, lua_cache.c) --- */
    void *rbus;                     /* shared Redis settings and counters (NULL without Redis) */
    void *ssebus;                   /* ssebus.c: catch-up state of the Redis subscriber (NULL without Redis) */
    void *_Atomic cache;            /* app.cache's in-process table, created on first use */
};

/* --- server.c --- */
/* `sluice run`: serves until SIGTERM/SIGINT; returns the exit status. */
int server_run(const char *config_path, int watch);
/* Builds new Lua states for every worker and swaps them in (all or none); main thread only. */
int server_reload(server *s, char *err, size_t errlen);
/* Asks the main thread for a reload (any thread). */
void server_request_reload(server *s);
/* Where `sluice reload` finds the running server for a port. */
void server_admin_socket_path(int port, char *out, size_t n);
/* Worker set-up shared with the spec runner's single-worker mode. */
int worker_setup(server *s, worker *w, int idx, appstate *a);
void worker_teardown(worker *w);

/* --- conn.c --- */
/* Accepts connections on the worker's listener. */
void conn_accept_cb(struct ev_loop *loop, ev_io *w, int revents);
/* Restarts accepting after an EMFILE pause. */
void conn_accept_resume_cb(struct ev_loop *loop, ev_timer *t, int revents);
/* Queues bytes for the client and arms writing. */
void conn_send(conn *c, const void *p, size_t n);
/* Marks a connection for closing; the memory is released later from the worker's check
 * callback, never inside the callback chain that is still using it. */
void conn_close(conn *c);
/* Called once a request's response is queued: keep-alive bookkeeping and timeouts. */
void conn_request_done(conn *c);
/* Continues reading/parsing after a suspended handler finished. */
void conn_resume(conn *c);
/* Flushes the output buffer now (called after a batch of pipelined responses). */
void conn_flush(conn *c);
/* Frees connections marked for closing. */
void conn_reap(worker *w);
/* Rearms the connection's timeout entry. */
void conn_set_timeout(conn *c, int kind, double seconds);
/* Monotonic microseconds for this worker (plus the virtual clock's offset in tests): the
 * time the current loop iteration started, so a request reads the clock once, not per use. */
uint64_t worker_now_us(worker *w);
/* The monotonic clock now, not cached (for durations). */
uint64_t mono_us(void);
/* Keeps w->date current. */
void worker_update_date(worker *w);

/* --- response.c --- */
typedef struct resp {
    conn *c;
    int status;
    size_t hdr_start;               /* where this response starts in c->out */
    unsigned has_ctype : 1, has_vary : 1, has_encoding : 1, no_body : 1, close : 1;
} resp;

/* Starts a response (status line); headers follow, then resp_finish. */
void resp_begin(resp *r, conn *c, int status);
/* Adds a header; returns -1 when the name or value contains CR/LF/NUL (nothing written). */
int resp_header(resp *r, const char *name, size_t nlen, const char *value, size_t vlen);
/* Adds Content-Type, Content-Length (gzip when worthwhile), Date, Connection and the body. */
void resp_finish(resp *r, const char *ctype, const char *body, size_t len);
/* A complete small response with a text or JSON body; closes after when close is set. */
void resp_simple(conn *c, int status, const char *ctype, const char *body, int close);
/* Like resp_finish for a body sent separately (a file of len bytes): no gzip, no body here. */
void resp_finish_headers(resp *r, const char *ctype, size_t len);
/* Gzips body at compression.level into the worker's scratch buffer (valid until the next gzip):
 * 0 with out and outlen set, -1 on failure. For callers that must know the encoding before the headers. */
int resp_gzip(worker *w, const char *body, size_t len, const char **out, size_t *outlen);
/* The JSON error body used for every error the core produces: {"error": msg, "status": N}
 * (an HTML page when the client prefers text/html). */
void resp_error(conn *c, int status, const char *msg, int close);

#endif
