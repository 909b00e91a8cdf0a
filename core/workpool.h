/* workpool.h: a small process-wide thread pool for blocking CPU work (Argon2id hashing) that must
 * not run on an event loop; each job's completion comes back to the loop that submitted it.
 *
 * Layer L2: knows libev, nothing of connections or Lua. A job is caller-owned memory that
 * embeds a wp_job: run() executes on a pool thread (touch only the job's own data there), then
 * done() runs on the submitting loop's thread, woken through the inbox's ev_async. Jobs run in
 * FIFO order; the queue is bounded so a flood of work fails fast instead of piling up. */
#ifndef SLUICE_WORKPOOL_H
#define SLUICE_WORKPOOL_H

#include <ev.h>
#include <stddef.h>

typedef struct workpool workpool;
typedef struct wp_inbox wp_inbox;
typedef struct wp_job wp_job;

struct wp_job {
    void (*run)(wp_job *j);      /* pool thread */
    void (*done)(wp_job *j);     /* the inbox's loop thread, after run; may free the job */
    wp_inbox *inbox;             /* set by workpool_submit */
    wp_job *next;
};

/* A pool of nthreads threads (1..64) and room for max_queue waiting jobs; its threads run at
 * this nice value (0..19, above the event loops' so that a core busy hashing still gives the
 * loops their turn first). NULL on failure. */
workpool *workpool_new(int nthreads, size_t max_queue, int nice);
/* The pool in *slot, created with these settings by the first caller (any thread, lock-free);
 * later callers get the same pool whatever they ask for. NULL when it cannot be created. */
workpool *workpool_shared(workpool *_Atomic *slot, int nthreads, size_t max_queue, int nice);
/* Stops the threads after the job each one is running; queued jobs are dropped without done().
 * Free every inbox first. */
void workpool_free(workpool *p);
/* Threads, waiting jobs and running jobs, for tests and metrics (approximate while busy). */
int workpool_threads(const workpool *p);
size_t workpool_queued(workpool *p);

/* Where completions for one loop arrive. Create and use it on that loop's thread. */
wp_inbox *wp_inbox_new(workpool *p, struct ev_loop *loop);
/* On the loop's thread, before the loop is destroyed: withdraws this inbox's queued jobs, waits
 * for its running ones to finish, and frees it. Withdrawn and finished jobs get no done() call;
 * their memory stays the caller's. */
void wp_inbox_free(wp_inbox *in);
/* Jobs submitted through this inbox whose done() has not run yet. */
size_t wp_inbox_pending(const wp_inbox *in);

/* Queues j (on the inbox's loop thread). 0, or -1 when the queue is full or the pool stopped
 * (nothing queued, done() will not be called). */
int workpool_submit(wp_inbox *in, wp_job *j);

#endif
