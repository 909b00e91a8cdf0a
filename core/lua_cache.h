/* lua_cache.h: `sluice.cache` (app.cache: Redis when configured, else a bounded in-process table) and
 * the Redis path of app.publish (cross-instance SSE), both parking the calling task until Redis answers. */
#ifndef SLUICE_LUA_CACHE_H
#define SLUICE_LUA_CACHE_H

#include <lua.h>
#include <stddef.h>

#include "lua_app.h"

#define CACHE_LOCAL_MAX 10000       /* in-process table: entries kept (least recently used go first) */

/* The module loader; needs the appstate as upvalue 1 (like sluice.core). */
int luaopen_sluice_cache(lua_State *L);

/* app.publish through Redis. Returns 1 when it took the call: the C function must then return *ret
 * (the task is parked by lua_yield and resumed with (id) or (nil, message)); 0 when Redis cannot
 * take it now and the caller publishes locally. id_override NULL = next id; retry < 0 = none. */
int lua_cache_publish(lua_State *L, appstate *a, const char *ch, size_t chl, const char *data, size_t dl,
                      const char *event, const char *id_override, int retry, int *ret);

/* Frees the process's in-process cache table (at exit, after the workers). */
void lua_cache_server_free(server *s);

#endif
