/* rbus.h: Redis for multi-instance sluice: one async hiredis connection per worker on that worker's
 * loop, a subscriber on worker 0 that feeds cross-instance SSE events into the local hub, Lua scripts
 * (EVALSHA), a timeout on every command, reconnect with backoff, and counters for /metrics. */
#ifndef SLUICE_RBUS_H
#define SLUICE_RBUS_H

#include <hiredis/hiredis.h>
#include <stdint.h>

#include "buf.h"
#include "ctx.h"

/*
 * Threading: a worker's connection and its ops are used only from that worker's thread (the
 * libev adapter runs the callbacks on the worker's loop); the process-wide part (settings,
 * counters, the id floor, the subscriber's state) is atomics only. Nothing is queued between
 * threads: a cross-instance event arriving on worker 0 is handed to rbus_handlers.on_event
 * (ssebus.c puts it into the thread-safe SSE hub); rbus itself knows nothing of SSE delivery.
 *
 * Every command has a deadline (hiredis has none). A callback runs exactly once, never from
 * inside the call that queued the command; a command that cannot be sent (not connected)
 * returns NULL at once and the caller takes its local fallback.
 */

/* The scripts every connection loads (SCRIPT LOAD at connect; EVAL until the sha is known). */
enum rbus_script {
    RBUS_PUBLISH,   /* KEYS id counter, stream; ARGV floor, explicit id, channel, event, data, retry, origin, maxlen, pubsub channel, ttl ms */
    RBUS_GCRA,      /* KEYS bucket; ARGV T ns, B, cost [, now ms, tests only]: {allowed, remaining, retry_ms, reset_ms} */
    RBUS_SSE_ADMIT, /* KEYS total zset, user zset (or ""), streams...; ARGV member, ttl ms, max total, per user,
                       user flag, last id, count, epoch key: {verdict[, per stream: gap, entries], epoch} */
    RBUS_SSE_TOUCH, /* KEYS total zset, user zset (or ""); ARGV member, ttl ms, remove (0/1) */
    RBUS_FLOOR,     /* KEYS id counter; ARGV floor: raise the counter to at least floor */
    RBUS_INCR,      /* KEYS key; ARGV by, ttl ms: INCRBY(FLOAT) and set the ttl on creation */
    RBUS_CATCHUP,   /* KEYS epoch, id counter, streams...; ARGV after id, count, new epoch:
                       {epoch, counter, per stream: gap (0/1), XRANGE (after, +]} */
    RBUS_NSCRIPTS
};

/* The source of each script (rbus_scripts.c); internal to the rbus module. */
extern const char *const rbus_script_src[RBUS_NSCRIPTS];

/* Counters shown in /metrics and the status JSON. */
enum rbus_counter {
    RBC_ERRORS,          /* error replies and lost connections */
    RBC_TIMEOUTS,        /* commands that missed their deadline */
    RBC_RECONNECTS,      /* connections re-established after a loss */
    RBC_RL_REDIS,        /* rate-limit decisions made in Redis */
    RBC_RL_FALLBACK,     /* ... made by the local table because Redis failed */
    RBC_PUB_REDIS,       /* app.publish through Redis (cross-instance) */
    RBC_PUB_FAILED,      /* publishes refused (Redis down) or not confirmed in time */
    RBC_RECEIVED,        /* cross-instance events received by the subscriber */
    RBC_CAUGHT_UP,       /* events brought in from the Redis streams after the subscriber was cut off */
    RBC_BUS_GAPS,        /* sluice-gap notices sent because a cut-off could not be caught up */
    RBC_ID_CONFLICTS,    /* received events re-numbered locally (id below the hub's last) */
    RBC_SSE_ADMIT,       /* SSE streams admitted through Redis caps */
    RBC_SSE_ADMIT_FALLBACK, /* ... admitted on local caps only because Redis failed */
    RBC_SSE_REPLAYED,    /* events replayed to reconnecting clients from the Redis streams */
    RBC_CACHE_ERRORS,    /* app.cache calls that failed on Redis */
    RBC_MASTER_SWITCHES, /* Sentinel: the master changed and the connections followed */
    RBC_NOT_MASTER,      /* Sentinel: a connection found a non-master (ROLE) and reconnected */
    RBC_N
};

typedef struct rbus_op rbus_op;

/* reply is NULL when err is set ("redis timeout", "redis connection lost", "shutting down");
 * an error reply comes as a reply of type REDIS_REPLY_ERROR with err = its text. */
typedef void (*rbus_cb)(void *ud, const redisReply *reply, const char *err);

/* Process-wide set-up from the config (redis.url, redis.prefix). Returns 0 and leaves s->rbus NULL
 * when Redis is not configured; -1 with a message in err when the URL cannot be used. */
int rbus_server_init(server *s, const sconfig *cfg, char *err, size_t errlen);
/* Frees the process-wide part (after every worker's rbus_worker_free). NULL-safe. */
void rbus_server_free(server *s);
/* Per worker: connects (and subscribes on worker 0). 0 when Redis is not configured. */
int rbus_worker_init(worker *w);
/* Drops the connections; pending commands are discarded without calling their callbacks. */
void rbus_worker_free(worker *w);

/* Sentinel mode: -1 when REDIS_URL is not redis-sentinel://; 0 while no Sentinel has answered;
 * 1 master known but the last check reached no Sentinel; 2 master known and a Sentinel answered.
 * host/port get the master's address when known. Any thread. */
int rbus_sentinel_state(server *s, char *host, size_t hostlen, int *port);

/* Whether this worker can send commands now (configured and connected). Worker thread only. */
int rbus_ready(worker *w);
/* Workers whose command connection is up (any thread; 0 without Redis). */
int rbus_links_up(server *s);

/* Sends a command (argv with lengths; lens NULL = strlen). NULL when it cannot be sent. */
rbus_op *rbus_command(worker *w, int argc, const char **argv, const size_t *lens, double timeout_s,
                      rbus_cb cb, void *ud);
/* Runs script id with nkeys keys followed by the other arguments in argv. NULL when not sent. */
rbus_op *rbus_eval(worker *w, int script, int nkeys, int argc, const char **argv, const size_t *lens,
                   double timeout_s, rbus_cb cb, void *ud);
/* The callback of op will not run (only valid before it ran). */
void rbus_cancel(rbus_op *op);

/* The configured key prefix ("sluice:" by default) and this process's instance id (16 hex). */
const char *rbus_prefix(const server *s);
const char *rbus_instance(const server *s);
/* Counts an event of kind c (thread-safe). */
void rbus_count(server *s, enum rbus_counter c);
/* SSE ids: the highest id this instance's hub issued or received, so that the shared counter can
 * be raised above it (ids stay monotonic on every instance after an outage). */
uint64_t rbus_id_floor(server *s);
void rbus_note_id(server *s, uint64_t id);

/* Prometheus lines (sluice_redis_*); nothing when Redis is not configured. */
void rbus_metrics(server *s, buf *out);
/* `"redis":{...},` for the status JSON (with the trailing comma); nothing when not configured. */
void rbus_status_json(server *s, buf *out);

/* An SSE event as the subscriber received it (pointers into the message, valid during the call). */
typedef struct rbus_event {
    uint64_t id;
    const char *channel, *event, *data;     /* event "" = none */
    size_t chlen, evlen, datalen;
    int retry;                              /* < 0: none */
    const char *origin;                     /* instance id of the publisher */
} rbus_event;

/* What the bus tells its user (ssebus.c), on worker 0's thread. on_link: the subscription is
 * confirmed (up = 1; messages flow from here on) or lost (up = 0; messages published meanwhile
 * are missed and must be fetched from the streams or reported as a gap). */
typedef struct rbus_handlers {
    void (*on_event)(void *ud, worker *w, const rbus_event *ev);
    void (*on_link)(void *ud, worker *w, int up);
    void *ud;
} rbus_handlers;

/* Installs the handlers (before the workers start). Without them messages are dropped. */
void rbus_set_handlers(server *s, const rbus_handlers *h);
/* Raises the shared id counter to this instance's floor (fire and forget). */
void rbus_raise_floor(worker *w);

/* Parses redis://[[user]:password@]host[:port][/db], unix:///path or /path. Returns 0 or -1 with a
 * constant message in *err. host holds the socket path for unix sockets (port = 0). */
int rbus_parse_url(const char *url, char *host, size_t hostlen, int *port, char *pass, size_t passlen,
                   char *user, size_t userlen, int *db, const char **err);

#endif
