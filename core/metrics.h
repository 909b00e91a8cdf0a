/* metrics.h: per-worker counters and latency histograms, summed when read; the last errors; Prometheus text. */
#ifndef SLUICE_METRICS_H
#define SLUICE_METRICS_H

#include <stdint.h>

#include "buf.h"
#include "ctx.h"

/* Allocates the worker's metrics block (w->metrics); returns -1 when out of memory. */
int metrics_worker_init(worker *w);
void metrics_worker_free(worker *w);
/* Process-wide part (error ring, snapshots, route labels); call once before the workers start. */
int metrics_server_init(server *s, unsigned errors_kept, unsigned snapshots_kept);
void metrics_server_free(server *s);
/* The route label id of a pattern (routestats.h): once per route target, never per request. */
uint16_t metrics_route_id(server *s, const char *pattern);
/* Records one finished request: route label id, method index (RM_*, 7 = other), status and
 * duration in microseconds, now_s a monotonic second. Hot path: no locks, no allocation. */
void metrics_observe(worker *w, unsigned route, unsigned method, int status, uint64_t us, uint64_t now_s);
/* Records an error (route, status 500, message with traceback) in the bounded ring. */
void metrics_error(worker *w, conn *c, const char *msg);
/* The database's part of the metrics, readiness and status. The pools live in the database
 * binding's per-worker side (lua_db.c, above this layer), which registers these (once per
 * process, any thread); until then there is no database. */
typedef struct db_totals {
    int configured, in_use, idle, connecting, waiting, cap, down; /* down: workers whose pool is down */
    unsigned long long acquired, timeouts, errors;
} db_totals;
typedef struct metrics_db_ops {
    int (*ready)(worker *w);                        /* 1 when w has no database or its primary pool can connect */
    void (*totals)(server *s, db_totals *out);      /* the primary pools summed over the workers, lock-free */
    void (*render)(worker *w, buf *out, int first_worker);   /* Prometheus text of w's pools */
} metrics_db_ops;
void metrics_set_db(const metrics_db_ops *ops);

/* Readiness as the answering worker sees it (filled by metrics_readiness, plain data). */
enum { MH_DATABASE = 1, MH_REDIS = 2 };     /* same bits as SC_READY_* */
typedef struct metrics_health {
    int ready;                /* what /ready answers: 1 = 200 */
    const char *reason;       /* why not ("database unreachable", ...), NULL when ready */
    unsigned configured, up;  /* MH_* dependencies configured / reachable now */
    unsigned required;        /* MH_* dependencies /ready requires (health.ready_requires) */
} metrics_health;

/* Readiness (metrics_readiness): /ready is what a load balancer uses to send traffic to this instance or not. Draining always
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
void dispatch_readiness(worker *w, const sconfig *cfg, metrics_health *h);

/* Fills h for worker w under config cfg (the worker's own, or the main thread's copy): configured
 * and reachable dependencies, which are required, the verdict (what /ready answers). */
void metrics_readiness(worker *w, const sconfig *cfg, metrics_health *h);
/* The same for the whole instance, from any thread but a worker's (the main thread, with its
 * config s->cfg0): a dependency is up when every worker reaches it. */
void metrics_readiness_all(server *s, metrics_health *h);

/* Appends the Prometheus text exposition of the whole process; h (or NULL) is the answering
 * worker's readiness. */
void metrics_render(server *s, const metrics_health *h, buf *out);
/* Appends the status JSON for /_sluice/status (h as for metrics_render). */
void metrics_status_json(server *s, const metrics_health *h, buf *out);
/* One line for the terminal in development: connections, req/s since the last call, p99, errors. */
void metrics_status_line(server *s, char *out, size_t n);
/* Takes a retention snapshot (called every metrics.interval seconds by the main thread). */
void metrics_snapshot(server *s);
/* Samples CPU time and (every 10th call) re-reads the cgroup limits; the main thread calls it
 * every second so that the CPU ratio covers the last 10 s. */
void metrics_sample_usage(server *s);

/* Resource use against the limits (sysres.h), for the status JSON and `sluice status`. */
typedef struct metrics_res {
    double rss_bytes, cpu_seconds, mem_limit_bytes, cpus, mem_ratio, cpu_ratio;
    int mem_cgroup, cpu_cgroup;
} metrics_res;
void metrics_resources(server *s, metrics_res *out);

#endif
