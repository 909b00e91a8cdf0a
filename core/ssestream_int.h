/* ssestream_int.h: the SSE stream's internals, shared by its two files: ssestream.c (the
 * stream: its queue, writev, heartbeats, the slow-consumer rule, adoption of the socket, close)
 * and ssestream_admit.c (admission: the handler's channels, local and Redis caps, replay from
 * the Redis streams, refusals). Nothing outside the module includes it. One worker's thread
 * owns all of it. */
#ifndef SLUICE_SSESTREAM_INT_H
#define SLUICE_SSESTREAM_INT_H

#include "ssestream.h"

#include "buf.h"
#include "rbus.h"
#include "sse.h"
#include "timerwheel.h"

#include "conn.h"
#include "ctx.h"

/* What admission needs (channel names, user, Last-Event-ID, the Redis round trip). Freed when
 * the stream is admitted, except with Redis: member and user then name the stream in the
 * shared sets until it ends. */
typedef struct admission {
    rbus_op *op;                    /* admission in flight: the connection waits in CS_HANDLING */
    void (*done)(conn *c);          /* ends the request once that admission decided (ssestream_start) */
    char *adm;                      /* one block holding the copied channel names and user */
    const char *chans[SSE_MAX_SUB_CHANNELS];
    size_t nch;
    const char *user;
    char lastid[24];
    char member[96];                /* <instance>:<worker>:<conn>: this stream in the Redis sets */
} admission;

typedef struct ssestream {
    sse_sub sub;
    conn *c;                        /* the request's connection until adopt(), then NULL */
    worker *w;
    struct ssestream *prev, *next;  /* the worker's adopted streams */
    struct ssestream *dirty_next;
    sse_event **q;
    uint32_t head, len, cap;
    uint32_t off;                   /* bytes of q[head] already written */
    uint64_t last_progress_ms;
    uint64_t behind_since_ms;       /* when the queue last went over the bound (0: under it) */
    uint64_t skip_upto;             /* ids up to this were replayed from Redis: skip the hub's copies */
    uint64_t dropped;               /* sse.slow_policy = "drop_oldest": events dropped, not yet told */
    admission *a;
    /* once adopted: the socket, its watcher, the heartbeat (or goodbye) deadline, and the bytes
     * that go before the queue (headers, replay, heartbeats, notices), freed when written */
    ev_io io;
    tw_entry tmo;
    buf out;
    ssestream_end_fn on_end;        /* run when the stream ends, with end_app and end_ref */
    appstate *end_app;
    int end_ref;
    int fd;
    unsigned dirty : 1, registered : 1, drop_gaps : 1, counted : 1, writing : 1, closing : 1;
} ssestream;

#define ADMIT_DEADLINE 0.25         /* s: then local caps only (counted as a fallback) */

typedef struct sse_side {
    sse_worker *sw;
    ev_async inbox_w;
    ssestream *dirty;               /* streams with events queued during a drain */
    ssestream *streams;             /* adopted streams (they own their sockets) */
} sse_side;

/* The hub's delivery callback (ssestream.c): queues e on the stream, marks it dirty. */
void sst_deliver(sse_sub *sub, sse_event *e, void *ud);
/* ssestream_admit.c: refreshes (remove = 0) or removes the stream's entries in the shared Redis
 * sets (fire and forget); frees what admission kept; releases the whole stream (queued events,
 * Redis entries, a pending admission) and frees it. */
void sst_touch(ssestream *s, int remove);
void sst_admission_free(ssestream *s);
void sst_drop_stream(ssestream *s);

#endif
