/* ssebus.h: the one publish path of SSE events (app.publish, the HTTP publish endpoint, events from other instances) and the catch-up after a Redis cut-off. */
#ifndef SLUICE_SSEBUS_H
#define SLUICE_SSEBUS_H

#include <stddef.h>
#include <stdint.h>

/* the core's types (server.h, layer L7 until issue 15 moves them down): only pointers here */
typedef struct server server;
typedef struct worker worker;
typedef struct conn conn;

/*
 * Layer L4 (services): uses the hub (sse.c) and the Redis bus (rbus.c); Lua bindings and the
 * request layer call it, rbus hands it the subscriber's messages through rbus_handlers.
 *
 * Without Redis a publish goes straight into this process's hub. With Redis an event exists
 * once Redis has stored and published it (the publish script gives it its global id) and every
 * instance, this one too, delivers it from its subscriber. While this worker cannot reach
 * Redis a publish FAILS (SSEBUS_UNAVAILABLE) instead of being delivered here only: an event
 * some subscribers get while others never hear of it, not even as a gap, is what the bus must
 * not produce. docs/scaling.md ("Redis outages") has the user-level rules.
 *
 * Catch-up (worker 0, the subscriber's thread): when the subscription is lost, the hub's last
 * id X is remembered; once subscribed again, the Redis streams of every channel with local
 * subscribers are read past X and those events delivered, merged in id order with the live
 * ones that arrived meanwhile (held until then). Where the streams cannot show that nothing is
 * missing (trimmed past X, retention 0, Redis lost its data, Redis not answering the catch-up)
 * the channel's subscribers get a sluice-gap {"channel", "last_event_id": X, "oldest"} instead.
 */

typedef struct ssebus_msg {
    const char *channel;
    size_t chlen;
    const char *event;          /* NULL = none */
    const char *data;
    size_t datalen;
    const char *id;             /* explicit decimal id, NULL = the next one */
    int retry;                  /* ms; < 0 = none */
} ssebus_msg;

enum ssebus_status {
    SSEBUS_DONE,                /* published; the id is known */
    SSEBUS_PENDING,             /* sent to Redis: the callback reports the outcome later, once */
    SSEBUS_REJECTED,            /* a bad event (channel, event name, size, id): a 400 */
    SSEBUS_UNAVAILABLE,         /* the bus cannot take it now (Redis down or too slow): a 503 */
};

/* The outcome of a PENDING publish: SSEBUS_DONE with id, or REJECTED/UNAVAILABLE with err. */
typedef void (*ssebus_cb)(void *ud, int status, uint64_t id, const char *err);

/* Publishes m (copied: the caller's strings may go once this returns). Returns SSEBUS_DONE with
 * *id, SSEBUS_PENDING (cb, when not NULL, is called later on this worker's thread), or
 * REJECTED/UNAVAILABLE with *err a constant string. */
int ssebus_publish(worker *w, const ssebus_msg *m, ssebus_cb cb, void *ud, uint64_t *id, const char **err);

/* The HTTP publish endpoint's answer: 201 {"id":N}, 400 or 503 (Retry-After), queued now or,
 * when Redis must confirm first, later; then finish(c) completes the request (the connection
 * waits in CS_HANDLING meanwhile). */
void ssebus_http_publish(conn *c, const ssebus_msg *m, void (*finish)(conn *c));

/* Whether Redis's streams can be trusted to replay everything after last_id: their epoch (the
 * admission script's answer) is the one this instance caught up with, and last_id is not from
 * before a Redis restart that lost the history. Otherwise a replay comes from the hub alone
 * (with its own gap notices). Any thread. */
int ssebus_redis_replay_ok(server *s, const char *epoch, uint64_t last_id);

/* Process set-up after rbus_server_init: registers the subscriber's handlers. 0 or -1 (OOM). */
int ssebus_server_init(server *s);
/* Stops worker 0's catch-up (before its loop goes). Any worker; NULL-safe. */
void ssebus_worker_free(worker *w);
/* Frees the process-wide part (after every worker's teardown). */
void ssebus_server_free(server *s);

#endif
