/* ssestream.h: turns an authorized request into an event stream (replay, live events, heartbeats, slow-client cleanup). */
#ifndef SLUICE_SSESTREAM_H
#define SLUICE_SSESTREAM_H

#include <lua.h>

#include "conn.h"

/* Reads the SSE handler's answer (co[1]) and subscribes. Returns 0 when c is now a stream,
 * 1 when a refusal (the handler's status, or a cap's 429/503) was queued, -1 on a bad answer
 * (message in err). */
int ssestream_start(conn *c, appstate *a, lua_State *co, char *err, size_t errlen);
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
