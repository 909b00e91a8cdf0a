/* metrics.h: per-worker counters and latency histograms, summed when read; the last errors; Prometheus text. */
#ifndef SLUICE_METRICS_H
#define SLUICE_METRICS_H

#include <stdint.h>

#include "buf.h"
#include "server.h"

/* Allocates the worker's metrics block (w->metrics); returns -1 when out of memory. */
int metrics_worker_init(worker *w);
void metrics_worker_free(worker *w);
/* Process-wide part (error ring, snapshots); call once before the workers start. */
int metrics_server_init(server *s, unsigned errors_kept, unsigned snapshots_kept);
void metrics_server_free(server *s);
/* Records one finished request: status and duration in microseconds. Hot path: no locks. */
void metrics_observe(worker *w, int status, uint64_t us, uint64_t now_s);
/* Records an error (route, status 500, message with traceback) in the bounded ring. */
void metrics_error(worker *w, conn *c, const char *msg);
/* Appends the Prometheus text exposition of the whole process. */
void metrics_render(server *s, buf *out);
/* Appends the status JSON for /_sluice/status. */
void metrics_status_json(server *s, buf *out);
/* One line for the terminal in development: connections, req/s since the last call, p99, errors. */
void metrics_status_line(server *s, char *out, size_t n);
/* Takes a retention snapshot (called every metrics.interval seconds by worker 0). */
void metrics_snapshot(server *s);

#endif
