/* dispatch.h: what happens to a complete request: built-in endpoints, rate limits, routing, Lua, SSE. */
#ifndef SLUICE_DISPATCH_H
#define SLUICE_DISPATCH_H

#include "conn.h"

/* Handles one complete request on c (the response is queued now or when its handler resumes). */
void dispatch_request(conn *c);
/* A request's handler task ended: st is the lua_resume status, etext the error with traceback. */
void dispatch_task_done(conn *c, task *t, int st, const char *etext);
/* The handler did not finish within request_timeout. */
void dispatch_timeout(conn *c);
/* A request answered later than dispatch returned (the connection waited in CS_HANDLING): access
 * log, keep-alive bookkeeping, then the pipeline goes on. */
void dispatch_async_done(conn *c);
/* The conn_ops of an HTTP connection: on_request = dispatch_request, on_timeout =
 * dispatch_timeout, on_close detaches handler tasks, limiter waits and a stream not yet admitted,
 * on_response_headers adds the request id and CORS headers (web_response_headers). */
extern const conn_ops dispatch_http_ops;

#endif
