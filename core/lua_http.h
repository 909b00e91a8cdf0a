/* lua_http.h: app.http for Lua (the `sluice.http` module) on the worker's outbound client (httpc). */
#ifndef SLUICE_LUA_HTTP_H
#define SLUICE_LUA_HTTP_H

#include <lua.h>

#include "buf.h"
#include "httpc.h"
#include "server.h"

/* Creates the worker's client (w->httpc) with the built-in limits; each Lua state applies
 * its config's http_client limits on its first request. -1 when curl cannot start. */
int http_worker_init(worker *w);
/* Completes what is still in flight with "cancelled" (resuming the waiting tasks) and frees. */
void http_worker_free(worker *w);
/* The worker's client, for C code that wants outbound HTTP without Lua (JWKS fetches...):
 * submit with httpc_submit from the worker's thread; the callback runs on its loop. */
httpc *http_worker_client(worker *w);
/* Appends the outbound-request metrics of every worker (Prometheus text). */
void http_metrics(server *s, buf *out);
/* Sets package.preload["sluice.http"] for state a; the preload table is at the top of L. */
void lua_http_preload(lua_State *L, appstate *a);
/* The loader (upvalue: the appstate): request, all and test helpers; sugar in lua/sluice.lua. */
int luaopen_sluice_http(lua_State *L);

#endif
