/* limiter.h: applies config.lua's rate-limit policies to requests (GCRA table in ratelimit.c, client identity in clientip.c). */
#ifndef SLUICE_LIMITER_H
#define SLUICE_LIMITER_H

#include "response.h"

typedef struct limiter_verdict_s limiter_verdict;

/* Checks the policy matching the request. Returns 0 when no policy applies, 1 when admitted
 * (v filled for the RateLimit headers), -1 when rejected (a 429 is already queued on c). */
int limiter_check(conn *c, const char *path, size_t plen, limiter_verdict *v);
/* As limiter_check, but with Redis configured and reachable the decision is made in Redis (exact
 * across instances) and this returns 2: c->state is CS_HANDLING, nothing is queued, and done(c, rc)
 * runs later on the worker's loop (never from inside this call) with rc 0/1/-1 as above and the
 * verdict in c->lv / c->has_lv. Redis errors or no answer within 50 ms: the local table decides. */
int limiter_check_async(conn *c, const char *path, size_t plen, limiter_verdict *v, void (*done)(conn *c, int rc));
/* A connection closes while its decision is pending: done will not be called. */
void limiter_conn_gone(conn *c);
/* Frees the worker's pending-decision state (worker teardown). */
void limiter_worker_free(worker *w);
/* Adds RateLimit-Policy and RateLimit headers for an admitted request (when limiter.headers). */
void limiter_headers(resp *r, const limiter_verdict *v);
/* Names the bucket of a `key = function(req)` policy (fn_ref: the function's registry ref): writes
 * the key to out and returns its length, or -1 for no key. The limiter knows no Lua: the Lua
 * side installs this (lua_app.c, once per process; any thread). */
typedef long (*limiter_key_fn)(conn *c, int fn_ref, char *out, size_t cap);
void limiter_set_key_fn(limiter_key_fn fn);
/* The client address of the request (X-Forwarded-For/Forwarded from trusted proxies only). */
const char *limiter_client_ip(conn *c);

#endif
