/* clock.h: the monotonic clock (layer L0). Durations and deadlines use it; a worker's cached
 * per-iteration time is worker_now_us (worker.h). */
#ifndef SLUICE_CLOCK_H
#define SLUICE_CLOCK_H

#include <stdint.h>

/* The monotonic clock now, not cached (for durations). */
uint64_t mono_us(void);

#endif
