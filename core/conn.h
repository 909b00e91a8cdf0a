/* conn.h: one client connection (layer L3): its socket, buffers, parser state, timeouts and
 * the per-request fields the layers above keep on it.
 *
 * Ownership: a connection belongs to one worker for its whole life and is touched only on that
 * worker's thread. conn.c allocates it on accept and parks it on close (never freed while the
 * worker lives, so a request table a script kept stays safe to read); `sse` belongs to
 * ssestream.c until the stream takes the socket (conn_release), `task` to lua_app.c.
 *
 * conn.c calls nothing above L3: what happens to a request, a handler timeout, a closing
 * connection and the headers every response carries is the `conn_ops` table the connection was
 * accepted with (dispatch's HTTP set, worker->conn_ops); it writes no response itself (that is
 * response.c, which includes this header, not the other way round). A body that is not in `out` (a static
 * file) is the connection's body source: a fd, an offset and a length, sent with sendfile. */
#ifndef SLUICE_CONN_H
#define SLUICE_CONN_H

#include <ev.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "buf.h"
#include "http.h"
#include "ratelimit.h"
#include "timerwheel.h"
#include "tracectx.h"

typedef struct worker worker;
typedef struct conn conn;
typedef struct appstate appstate;
typedef struct task task;
struct sc_policy;
struct ssestream;
struct resp;

/* What the layer above does with a connection's events; set per connection (c->ops). Every
 * callback runs on the worker's thread; a NULL one is skipped. */
typedef struct conn_ops {
    /* A complete request is in c->req: answer it now (then conn_request_done) or later. */
    void (*on_request)(conn *c);
    /* The request cannot be read (a framing error, or not received within the header/body
     * timeouts): queue the error response; conn.c closes the connection after it. */
    void (*on_bad_request)(conn *c, int status, const char *msg);
    /* The TMO_HANDLER timeout fired (the handler did not answer in time). */
    void (*on_timeout)(conn *c);
    /* The connection is closing (from conn_close): detach whatever points at it. */
    void (*on_close)(conn *c);
    /* Before the framing headers of every response: headers of the layer above (request id,
     * CORS). */
    void (*on_response_headers)(struct resp *r);
} conn_ops;

enum conn_state { CS_READING, CS_HANDLING, CS_SSE, CS_CLOSING };
enum tmo_kind { TMO_NONE, TMO_HEADER, TMO_BODY, TMO_IDLE, TMO_HANDLER };

struct conn {
    worker *w;
    const conn_ops *ops;
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
    struct ssestream *sse;          /* SSE stream state (ssestream.c), NULL for plain HTTP */
    unsigned in_dispatch : 1, has_lv : 1, cors_ok : 1;
    int body_fd;                    /* body source: a file still to send after out, -1 when none */
    off_t body_off, body_left;
    char reqid[40];
    appstate *sse_app;              /* state holding the stream's on_close callback */
    int sse_close_ref;
    uint16_t mroute;                /* metrics: route label id of the current request (routestats.h) */
    uint8_t mmethod;                /* metrics: its method index (RM_*, 7 = other) */
    uint32_t client_ip_gen;
    char client_ip[64];
    char ipkey[64];                 /* rate-limit key of the peer address, computed once */
    uint8_t ipkey_len;
    uint8_t rlk_set;                /* rlk holds ipkey prepared (hashed) for policy rlk.policy */
    rl_key rlk;
    struct limiter_verdict_s {
        const char *policy;
        const struct sc_policy *pol;
        uint64_t limit, remaining, window_s, reset_s, retry_after_s;
    } lv;                           /* rate-limit outcome, for the RateLimit headers */
    const char *route;              /* the matched route's pattern (router-owned), NULL when none */
    tracectx trace;                 /* W3C trace context, filled on first use (web_trace) */
    uint32_t trace_gen;             /* gen + 1 of the request trace belongs to; 0 = not yet */
};

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
/* Makes len bytes of fd from off the body that follows what is queued in c->out (sent with
 * sendfile by conn_flush). The connection owns fd from now on and closes it when sent or when
 * the connection closes. */
void conn_send_file(conn *c, int fd, off_t off, off_t len);
/* Hands the socket over to the layer above (an admitted SSE stream takes it): the connection
 * stops watching it and is parked as if closed (on_close is not called: the caller has
 * detached what pointed at it), the fd and the connection's place in the connection counts go
 * to the caller, who gives them back with conn_socket_done. Returns the fd. */
int conn_release(conn *c, int *counted);
/* Closes a socket taken with conn_release and drops it from the connection counts. */
void conn_socket_done(worker *w, int fd, int counted);

#endif
