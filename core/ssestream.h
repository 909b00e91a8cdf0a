/* ssestream.h: turns an authorized request into an event stream (replay, live events, heartbeats,
 * slow-client cleanup). Layer L4. A stream is admitted on its request's connection, then takes
 * the connection's socket (ssestream_admitted): from then on it is not a conn (no parser, request
 * buffers, request id or rate-limit state), and ssestream.c owns its socket, its watcher, its
 * heartbeat timer and its queue until it ends. */
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

/* Subscribes c to acc's channels. Returns 1 when c is admitted (CS_SSE: the caller ends the
 * request, then ssestream_admitted), -1 when a refusal (a cap's 429/503, a bad Last-Event-ID)
 * was queued, 2 when c waits (CS_HANDLING) for Redis's admission: done(c) then ends the request,
 * admitted (CS_SSE) or refused. The L4 convention for a decision on a request, as
 * limiter_check: 1 go on, -1 answered, 2 pending. */
int ssestream_start(conn *c, const ssestream_accept *acc, void (*done)(conn *c));
/* Run once when an adopted stream ends, with what the request left in c->sse_app and
 * c->sse_close_ref (the app.sse on_close callback); the stream's memory is gone by then. */
typedef void (*ssestream_end_fn)(appstate *a, int ref);
/* The request that started the stream is answered (admitted: c->state is CS_SSE, its access log
 * written): the stream takes the socket now. c is parked then (closed for the caller: only its
 * memory may still be read). on_end (the Lua side's, for the on_close callback) runs when the
 * stream ends. */
void ssestream_admitted(conn *c, ssestream_end_fn on_end);
/* Unsubscribes and drops queued events (the connection closes before its stream took it). */
void ssestream_stop(conn *c);
/* Shutdown: every stream gets a `retry:` hint with jitter (when nothing is half-written), then
 * is closed once written (at most 2 s). */
void ssestream_worker_stop(worker *w);
/* Teardown: closes every stream now (their on_end hooks run). */
void ssestream_worker_close(worker *w);
/* Per-worker setup: the SSE inbox watcher. */
int ssestream_worker_init(worker *w);
void ssestream_worker_free(worker *w);

#endif
