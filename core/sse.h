/* sse.h: the SSE engine core: channels, encode-once refcounted events, replay history, exact caps, per-worker fan-out. */
#ifndef SLUICE_SSE_H
#define SLUICE_SSE_H

#include <stddef.h>
#include <stdint.h>

/*
 * Two halves:
 *  - sse_hub (one per process, thread-safe): channel table with replay history,
 *    per-user and total subscriber counts, the id counter, publish.
 *  - sse_worker (one per worker thread, used only from that thread): an inbox
 *    (intrusive lock-free MPSC queue) and an index channel -> local subscribers.
 *
 * Ids are global to the hub: one counter, so an id is monotonic per channel AND
 * across channels, and every worker receives events in id order. One number
 * (the stream's Last-Event-ID) is therefore enough to replay a stream that
 * carries several channels. Ids start at id_base + 1 (see sse_hub_new).
 *
 * Publishing takes the hub lock once: assign the id, store in history, push
 * onto each worker inbox. Encoding happens before the lock. Workers deliver
 * without the lock. docs/sse.md has the user-level semantics.
 */

enum { SSE_OK = 0, SSE_ERR_TOTAL = 1, SSE_ERR_USER = 2, SSE_ERR_CHANNEL = 3, SSE_ERR_ARG = 4, SSE_ERR_NOMEM = 5 };

#define SSE_MAX_SUB_CHANNELS 8    /* channels on one stream */
#define SSE_MAX_CHANNEL_LEN  200  /* bytes; channel names are 1..200 bytes >= 0x20 (UTF-8 ok), no DEL */
#define SSE_GAP_EVENT        "sluice-gap"
/* A process numbers events from its start time in ms times this (see docs/sse.md, "ids"). */
#define SSE_ID_PER_MS        10

typedef struct sse_limits {
    uint32_t max_total;       /* subscribers in the process; 0 = unlimited */
    uint32_t per_user;        /* subscribers per user (anonymous ones are not counted); 0 = unlimited */
    uint32_t per_channel;     /* subscribers per channel; 0 = unlimited */
    uint32_t retention_count; /* events kept per channel for replay; 0 = none */
    uint32_t retention_ms;    /* max age of kept events; 0 = no age limit */
    uint32_t max_channels;    /* channel table entries; 0 = 100000 */
    uint32_t max_event_bytes; /* encoded event size; 0 = 1 MiB */
} sse_limits;

typedef struct sse_stats {
    uint64_t subscribers, channels, users;
    uint64_t published, delivered, replayed, gaps, evicted;
    uint64_t rejected_total, rejected_user, rejected_channel;
} sse_stats;

typedef struct sse_channel_stat {
    char name[64];            /* truncated copy */
    uint32_t subscribers;
    uint64_t last_id;
} sse_channel_stat;

typedef struct sse_hub sse_hub;
typedef struct sse_event sse_event;
typedef struct sse_worker sse_worker;
typedef struct sse_sub sse_sub;

/* ---- hub (thread-safe) ---- */

/* Creates a hub for worker indexes 0..nworkers-1. Ids start at id_base + 1:
 * pass wall-clock ms * 1000 so ids stay monotonic across restarts (a
 * Last-Event-ID below id_base is from an earlier process: gap). NULL on OOM. */
sse_hub *sse_hub_new(const sse_limits *lim, unsigned nworkers, uint64_t id_base);
/* Hot reload: caps apply to new subscribers; retention trims at the next publish or sweep. */
void sse_hub_set_limits(sse_hub *h, const sse_limits *lim);
/* Frees the hub and its history. All workers must have been freed first. */
void sse_hub_free(sse_hub *h);

/* Encodes the event once, stores it in the channel's history and posts it to
 * every worker. event may be NULL/"" (the client sees "message"); data may
 * contain CR, LF, CRLF (one data: line each). id_override, when not NULL, is a
 * decimal id that must exceed every id the hub issued (the counter jumps to it).
 * retry_ms < 0: no retry field. Returns the id, or 0 with *err a constant string. */
uint64_t sse_hub_publish(sse_hub *h, const char *channel, size_t chlen, const char *event,
                         const char *data, size_t datalen, const char *id_override,
                         int retry_ms, uint64_t now_ms, const char **err);

/* The checks sse_hub_publish makes, without publishing (for a publish that goes elsewhere
 * first, e.g. through Redis). 0, or -1 with *err a constant string. */
int sse_hub_check(sse_hub *h, const char *channel, size_t chlen, const char *event, const char *data,
                  size_t datalen, const char *id_override, int retry_ms, const char **err);
/* The newest id the hub issued or accepted. */
uint64_t sse_hub_last_id(sse_hub *h);
/* Calls fn for each channel with at least one subscriber, under the hub lock (fn must not call
 * the hub; copy the name). */
void sse_hub_each_subscribed(sse_hub *h, void (*fn)(void *ud, const char *name, size_t len), void *ud);
/* Posts an SSE_GAP_EVENT ({"channel", "last_event_id": last, "oldest"}) to every current
 * subscriber of channel, in order with the events around it; not kept in the history. For a
 * hole the hub learns of after the fact (events that could not be brought in). 0 or -1. */
int sse_hub_gap(sse_hub *h, const char *channel, size_t chlen, uint64_t last, uint64_t oldest);

/* Records that the history of every channel for which complete(ud, name, len) is not 1 (complete
 * may be NULL: all) may miss events with ids up to upto (which may be above the hub's last id:
 * events it has not seen yet), and that channels created later know nothing before it: a replay
 * from before upto then starts with a gap. complete runs under the hub lock. */
void sse_hub_mark_hole(sse_hub *h, uint64_t upto, int (*complete)(void *ud, const char *name, size_t len), void *ud);

/* Cleanup pass (cleanup_interval): trims history by age and frees channels with
 * no subscriber and no publish for idle_ms. Returns the number of channels freed. */
size_t sse_hub_sweep(sse_hub *h, uint64_t now_ms, uint64_t idle_ms);

/* Consistent snapshot of the counters (delivered is summed over workers). */
void sse_hub_stats(sse_hub *h, sse_stats *out);
/* Fills out[0..max) with the channels with the most subscribers, most first;
 * returns how many were filled. O(channels * max): keep max small (<= 20). */
size_t sse_hub_top_channels(sse_hub *h, sse_channel_stat *out, size_t max);
/* Subscribers currently counted for a user (0 for unknown); for tests and the admin page. */
uint32_t sse_hub_user_count(sse_hub *h, const char *user);

/* ---- events (immutable, refcounted; refs/unrefs are thread-safe) ---- */

/* The encoded bytes ("id: ..\nevent: ..\ndata: ..\n\n"), valid while a ref is held. */
const char *sse_event_wire(const sse_event *e, size_t *len);
/* The id (0 for the synthetic gap event, which carries no id: line). */
uint64_t sse_event_id(const sse_event *e);
/* The channel name (NUL-terminated). */
const char *sse_event_channel(const sse_event *e);
void sse_event_ref(sse_event *e);
/* Drops a ref; the last one frees the event. */
void sse_event_unref(sse_event *e);

/* ---- worker side (each call from the worker's own thread) ---- */

/* Called from ANY thread (with the hub lock held: keep it short, e.g.
 * ev_async_send) when this worker's inbox goes from empty to non-empty. */
typedef void (*sse_wake_fn)(void *ud);
/* Called for each event for s, in id order. The callee takes a ref if it keeps e.
 * It may unsubscribe s (or any subscriber) from inside the callback. */
typedef void (*sse_deliver_fn)(sse_sub *s, sse_event *e, void *ud);

/* Registers worker idx (< nworkers, once). NULL on OOM or bad/duplicate idx. */
sse_worker *sse_worker_new(sse_hub *h, unsigned idx, sse_wake_fn wake, void *ud);
/* Unregisters, drops pending inbox events and unsubscribes remaining subscribers. */
void sse_worker_free(sse_worker *w);

/* Public so it can be embedded in the connection; fields are private. Zero it
 * (or memset 0) before the first subscribe. */
struct sse_sub_link {
    struct sse_sub_link *next, *prev;
    void *lch;                /* worker-local channel */
    void *hch;                /* hub channel (stable while counted) */
    struct sse_sub *sub;
};
struct sse_sub {
    struct sse_sub_link link_[SSE_MAX_SUB_CHANNELS];
    uint64_t start_id_;       /* live events with id <= this were replayed or predate the sub */
    void *user_;              /* hub user entry, NULL = anonymous */
    sse_deliver_fn deliver_;
    void *ud_;
    uint8_t nch_, active_;
};

/* Subscribes s to channels (1..SSE_MAX_SUB_CHANNELS distinct names). user NULL =
 * anonymous (not capped per user). last_event_id NULL/"" = live only; otherwise
 * a decimal id: missed events of those channels are delivered (in id order,
 * after one SSE_GAP_EVENT per channel whose history no longer reaches back)
 * before any live event. Returns SSE_OK, SSE_ERR_TOTAL (-> 503),
 * SSE_ERR_USER (-> 429), SSE_ERR_CHANNEL (per-channel cap or table full -> 503),
 * SSE_ERR_ARG (bad channel name or Last-Event-ID -> 400), SSE_ERR_NOMEM. */
int sse_worker_subscribe(sse_worker *w, sse_sub *s, const char *const *channels, size_t nch,
                         const char *user, const char *last_event_id, uint64_t now_ms,
                         sse_deliver_fn deliver, void *ud);
/* Idempotent; releases the caps. Safe from inside a deliver callback. */
void sse_worker_unsubscribe(sse_worker *w, sse_sub *s);
/* Pops the whole inbox and delivers each event to the local subscribers of its
 * channel; call from the ev_async callback. Returns the number of events popped. */
size_t sse_worker_drain(sse_worker *w);
/* Local subscribers on this worker. */
size_t sse_worker_subscribers(const sse_worker *w);

/* Human-readable name of an SSE_* code. */
const char *sse_strerror(int code);

#endif
