/* ssestream.h: turns an authorized request into an event stream (replay, live events, heartbeats, slow-client cleanup).
 * Layer L4 (services, C only): it knows connections and the SSE engine, not Lua or dispatch; the
 * stream's admission hands back through the done callback its caller gives. */
#ifndef SLUICE_SSESTREAM_H
#define SLUICE_SSESTREAM_H

#include <stddef.h>

#include "conn.h"
#include "sse.h"

/* What an SSE handler admitted (lua_resp.c reads it from the handler's answer). The strings are
 * the caller's, alive until ssestream_start returns (it copies what it keeps). */
typedef struct ssestream_accept {
    const char *chans[SSE_MAX_SUB_CHANNELS];
    size_t nch;                 /* 1..SSE_MAX_SUB_CHANNELS */
    const char *user;           /* NULL: no sse.per_user cap */
} ssestream_accept;

/* Subscribes c to acc's channels. Returns 1 when c is now a stream (CS_SSE), -1 when a refusal
 * (a cap's 429/503, a bad Last-Event-ID) was queued, 2 when c waits (CS_HANDLING) for Redis's
 * admission: done(c) then ends the request, a stream (c->state CS_SSE) or a refusal. (The L4
 * convention for a decision on a request, as limiter_check: 1 go on, -1 answered, 2 pending.) */
int ssestream_start(conn *c, const ssestream_accept *acc, void (*done)(conn *c));
/* Heartbeat tick: a comment line when idle; closes streams that made no progress for
 * sse.cleanup_interval. */
void ssestream_heartbeat(conn *c);
/* Writes queued events; returns 1 while some remain. */
int ssestream_flush(conn *c);
/* Shutdown: a `retry:` hint with jitter (when nothing is half-written), then close. */
void ssestream_goodbye(conn *c);
/* Unsubscribes and drops queued events (connection closing). */
void ssestream_stop(conn *c);
/* Per-worker setup: the SSE inbox watcher. */
int ssestream_worker_init(worker *w);
void ssestream_worker_free(worker *w);

#endif
