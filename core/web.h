/* web.h: web essentials around a request: request IDs, CORS, static file mounts (sendfile), multipart for Lua. */
#ifndef SLUICE_WEB_H
#define SLUICE_WEB_H

#include <lua.h>
#include <stddef.h>

#include "response.h"

typedef struct static_mount {
    char *prefix;            /* "/assets" (no trailing slash) */
    int root_fd;             /* O_PATH directory, shared by every request */
    char *cache_control;     /* NULL: "public, max-age=0, must-revalidate" */
    char *index;             /* "index.html" or NULL */
} static_mount;

/* Gives the request its ID: X-Request-Id from a trusted proxy (sane token), else generated. */
void web_request_id(conn *c);
/* The request's W3C trace context: its traceparent header continued, or a new trace; computed
 * on first use per request (web_trace), so requests that never ask pay nothing. */
const tracectx *web_trace(conn *c);
/* The traceparent header value for an outbound call made on behalf of c (this request's span
 * is the callee's parent). Writes TRACEPARENT_LEN characters and a NUL; returns the length. */
size_t web_traceparent(conn *c, char out[TRACEPARENT_LEN + 1]);
/* Request table fields computed here (req.trace_id, req.span_id, req.traceparent, req.route,
 * and the method req:header(name)):
 * pushes the value and returns 1, or returns 0 for other keys. For lua_core.c's __index. */
int web_lua_req_field(lua_State *L, conn *c, const char *k);
/* CORS: answers a preflight (returns -1: answered, the caller ends the request) or marks the
 * request so its response carries the Access-Control-* headers (returns 0). No-op without
 * cors.origins. */
int web_cors(conn *c);
/* Adds X-Request-Id and the CORS response headers: the conn_ops.on_response_headers hook of
 * HTTP connections (dispatch installs it), so every response carries them. */
void web_response_headers(resp *r);
/* Serves a file below a mount: rest is the raw path after the prefix. A body over 16 KB becomes
 * the connection's body source (conn_send_file: sendfile after the headers). */
void web_static_serve(conn *c, const static_mount *m, const char *rest, size_t len);
/* req:multipart() for sluice.core. */
int web_lua_multipart(lua_State *L);

#endif
