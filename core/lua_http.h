/* lua_http.h: app.http for Lua (the `sluice.http` module) on the worker's outbound client (httpc).
 * The client itself is w->httpc (created in worker_setup); C code on the worker's thread may
 * submit requests to it directly with httpc.h (e.g. a JWKS fetch), without Lua. */
#ifndef SLUICE_LUA_HTTP_H
#define SLUICE_LUA_HTTP_H

#include <lua.h>

typedef struct appstate appstate;

/* Sets package.preload["sluice.http"] for state a; the preload table is at the top of L. */
void lua_http_preload(lua_State *L, appstate *a);
/* The loader (upvalue: the appstate): request, all and test helpers; sugar in lua/sluice.lua. */
int luaopen_sluice_http(lua_State *L);

#endif
