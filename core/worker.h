/* worker.h: one worker thread (layer L7): set-up of its parts, its loop, its teardown. The
 * worker record itself (struct worker) is ctx.h's, so the layers below can read their own part
 * of it without including this header; its clock and Date header are clock.h's.
 *
 * Ownership: worker_setup creates each service's per-worker part (each service creates and frees
 * its own) and worker_teardown frees them, on the worker's thread. */
#ifndef SLUICE_WORKER_H
#define SLUICE_WORKER_H

#include "ctx.h"

/* The worker thread's body: runs its loop until it drains or is told to stop. */
void *worker_main(void *arg);
/* Worker set-up shared with the spec runner's single-worker mode. */
int worker_setup(server *s, worker *w, int idx, appstate *a);
void worker_teardown(worker *w);

#endif
