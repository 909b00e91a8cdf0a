/* sse_int.h: the SSE engine's internals, shared by its two files: sse.c (events and the hub:
 * channels, history, caps, ids, publishing) and sse_sub.c (the worker side: the inbox drain,
 * local fan-out, subscribe with replay, unsubscribe). Nothing outside the module includes it.
 * Locking: every hub field and every hchan/huser is guarded by sse_hub.mu; a worker's fields are
 * its own thread's, except the inbox head (pushed under the hub lock) and the counters. */
#ifndef SLUICE_SSE_INT_H
#define SLUICE_SSE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "sse.h"
#include "sseenc.h"
#include "strmap.h"

typedef struct qnode {
    _Atomic(struct qnode *) next;
    sse_event *ev;
} qnode;

struct sse_event {
    atomic_uint refs;
    uint32_t len;       /* wire bytes */
    uint32_t chlen;
    uint64_t id;
    uint64_t t_ms;      /* publish time, for age retention */
    uint64_t hash;      /* of the channel name, with the hub seed */
    const char *wire;
    const char *chan;
    qnode node[];       /* one inbox node per worker: posting never allocates */
};

/* Room for the id line, written in front of the body under the lock. */
#define ID_RESERVE SSEENC_ID_MAX

/* Hub channel: a value of sse_hub.chans, keyed by the channel name. */
typedef struct hchan {
    uint32_t nsubs;          /* over all workers */
    uint32_t cap, head, n;   /* history ring, oldest at head */
    sse_event **ring;
    uint64_t last_id;        /* newest id published here */
    uint64_t dropped_max;    /* newest id of this channel no longer replayable */
    uint64_t last_pub_ms;
} hchan;

typedef struct huser {
    uint32_t count;
} huser;

struct sse_hub {
    pthread_mutex_t mu;
    sse_limits lim;
    unsigned nw;
    uint64_t seed, id_base, last_id;
    uint64_t forgotten_max;  /* newest id published on a channel entry we freed */
    strmap *chans, *users;   /* hchan, huser; seeded with seed, as are the workers' maps */
    uint64_t nsubs;
    sse_worker **workers;
    uint64_t published, replayed, gaps, evicted, delivered_retired;
    uint64_t rej_total, rej_user, rej_channel;
};

typedef struct lchan {
    struct sse_sub_link *head;
    struct sse_sub_link *iter;  /* next link of a running delivery, fixed up by unlink */
    uint32_t n;
    uint32_t busy;           /* deliveries running (or teardown): keeps the entry alive when empty */
} lchan;

struct sse_worker {
    sse_hub *h;
    unsigned idx;
    sse_wake_fn wake;
    void *ud;
    _Atomic(qnode *) qhead;     /* producers exchange here */
    qnode *qtail;               /* consumer only */
    qnode stub;
    atomic_int pending;         /* 1 while a wake is outstanding: coalesces wakes */
    strmap *local;              /* lchan by channel name, same seed as the hub */
    size_t nsubs;
    _Atomic uint64_t delivered;
};

/* Vyukov's intrusive MPSC queue: push is one exchange (the hub pushes under its lock). */
void sse_q_push(sse_worker *w, qnode *n);
/* One allocation: header, nnodes inbox nodes, channel name, id reserve, body. Returns the body
 * pointer in *body; wire/len are set by the caller. */
sse_event *sse_ev_alloc(unsigned nnodes, const char *ch, size_t chlen, size_t bodylen, char **body);
/* The synthetic "you lost events" notice (no id line, so Last-Event-ID stays put). */
sse_event *sse_gap_alloc(unsigned nnodes, const char *name, size_t klen, uint64_t last, uint64_t oldest);
/* 1-SSE_MAX_CHANNEL_LEN bytes, no control characters. */
int sse_valid_channel(const char *s, size_t n);
/* Hub channel entries, lock held: free one with its history; create one for a name not in the
 * table yet; drop history over the count (keeping room for `adding` more) or over the age. */
void sse_chan_free(sse_hub *h, hchan *c);
hchan *sse_chan_new(sse_hub *h, const char *name, size_t len, uint64_t hash);
void sse_chan_trim(sse_hub *h, hchan *c, uint64_t now_ms, uint32_t adding);

#endif
