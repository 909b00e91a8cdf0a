/* admin.h: built-in endpoints: /health, /ready, /metrics and the admin area under /_sluice/. */
#ifndef SLUICE_ADMIN_H
#define SLUICE_ADMIN_H

#include <stddef.h>

#include "conn.h"
#include "sconfig.h"

enum { ADMIN_NONE, ADMIN_HEALTH, ADMIN_READY, ADMIN_METRICS, ADMIN_AREA, ADMIN_PUBLISH };

/* Which built-in endpoint (if any) a path is; ADMIN_NONE for application routes. */
int admin_match(const sconfig *cfg, const char *path, size_t len);
/* Answers a built-in endpoint request (queues the response). An answer that comes later (the
 * publish endpoint waiting for Redis) finishes the request with `done`, the request layer's
 * function for a request answered after it returned (dispatch_async_done). */
void admin_answer(conn *c, int which, void (*done)(conn *c));

#endif
