/* clock.h: the clocks (layer L0): the monotonic clock for durations and deadlines, a worker's
 * cached per-iteration time, and the HTTP Date header's text (kept per worker, once a second). */
#ifndef SLUICE_CLOCK_H
#define SLUICE_CLOCK_H

#include <stdint.h>

#include "ctx.h"

/* The monotonic clock now, not cached (for durations). */
uint64_t mono_us(void);
/* Monotonic microseconds for this worker (plus the virtual clock's offset in tests): the
 * time the current loop iteration started, so a request reads the clock once, not per use.
 * Inline: hot paths (the limiter, every request's timestamps) read it without a call. */
static inline uint64_t worker_now_us(worker *w)
{
    return (w->now_cache_us ? w->now_cache_us : mono_us()) + w->vclock_offset_us;
}
/* Keeps w->date current (the IMF-fixdate of the loop's time, rewritten when the second changes). */
void worker_update_date(worker *w);
/* Writes the IMF-fixdate for t into out[30] (29 chars + NUL). */
void http_date(long t, char out[30]);

#endif
