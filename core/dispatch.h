/* dispatch.h: what happens to a complete request: built-in endpoints, rate limits, routing, Lua, SSE.
 * Layer L6 (request). Every request ends in one place, dispatch.c's request_end (metrics, access
 * log, keep-alive or stream), whoever answered it: the layers below hand their answers back
 * through the callbacks dispatch gives them (app_handle's on_done, ssestream_start's and
 * limiter_check_async's done, ssebus_http_publish's finish). Its functions return nothing: they
 * answer the request themselves. */
#ifndef SLUICE_DISPATCH_H
#define SLUICE_DISPATCH_H

#include "conn.h"

/* Handles one complete request on c (the response is queued now or when its handler resumes). */
void dispatch_request(conn *c);
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
