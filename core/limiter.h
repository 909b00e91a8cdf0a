/* limiter.h: applies config.lua's rate-limit policies to requests (GCRA table in ratelimit.c, client identity in clientip.c). */
#ifndef SLUICE_LIMITER_H
#define SLUICE_LIMITER_H

#include "server.h"

typedef struct limiter_verdict_s limiter_verdict;

/* Checks the policy matching the request. Returns 0 when no policy applies, 1 when admitted
 * (v filled for the RateLimit headers), -1 when rejected (a 429 is already queued on c). */
int limiter_check(conn *c, const char *path, size_t plen, limiter_verdict *v);
/* Adds RateLimit-Policy and RateLimit headers for an admitted request (when limiter.headers). */
void limiter_headers(resp *r, const limiter_verdict *v);
/* The client address of the request (X-Forwarded-For/Forwarded from trusted proxies only). */
const char *limiter_client_ip(conn *c);

#endif
