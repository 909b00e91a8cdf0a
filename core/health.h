/* health.h: readiness: draining, and the dependencies health.ready_requires names (database, Redis). */
#ifndef SLUICE_HEALTH_H
#define SLUICE_HEALTH_H

#include "metrics.h"
#include "server.h"

/*
 * /ready is what a load balancer uses to send traffic to this instance or not. Draining always
 * makes it 503. A dependency makes it 503 only when health.ready_requires lists it; the default
 * is the database (when one is configured) and Redis only when the rate limiter fails closed
 * (limiter.redis_failure = "closed": without Redis every rate-limited request is refused, so the
 * instance cannot serve). A dependency that is shared by every instance takes them all out of
 * the balancer at once when it fails: see docs/monitoring.md for that choice.
 *
 * The answer is the answering worker's view (each worker has its own pool and Redis link); the
 * pool learns within moments that its server went away (pgpool's idle watch and probes).
 */

/* Fills h for worker w under config cfg (the worker's own, or the main thread's copy): configured
 * and reachable dependencies, which are required, the verdict. */
void health_check(worker *w, const sconfig *cfg, metrics_health *h);

#endif
