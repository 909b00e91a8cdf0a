/* ssestream.h: turns an authorized request into an event stream (replay, live events, heartbeats,
 * slow-client cleanup). Layer L4. A stream is admitted on its request's connection, then takes
 * the connection's socket (ssestream_admitted): from then on it is not a conn (no parser, request
 * buffers, request id or rate-limit state), and ssestream.c owns its socket, its watcher, its
 * heartbeat timer and its queue until it ends. */
#ifndef SLUICE_SSESTREAM_H
#define SLUICE_SSESTREAM_H

#include <lua.h>

#include "conn.h"

/* Reads the SSE handler's answer (co[1]) and subscribes. Returns 0 when c is now a stream,
 * 1 when a refusal (the handler's status, or a cap's 429/503) was queued, -1 on a bad answer
 * (message in err). */
int ssestream_start(conn *c, appstate *a, lua_State *co, char *err, size_t errlen);
/* Run once when an adopted stream ends, with what the request left in c->sse_app and
 * c->sse_close_ref (the app.sse on_close callback); the stream's memory is gone by then. */
typedef void (*ssestream_end_fn)(appstate *a, int ref);
/* The request that started the stream is answered (ssestream_start returned 0, access log
 * written): the stream takes the socket now, or when its Redis admission succeeds. c is parked
 * then (closed for the caller: only its memory may still be read). on_end runs when the
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
