/* lua_cache.h: `sluice.cache` (app.cache: Redis when configured, else a bounded in-process table) and
 * app.publish's binding (to ssebus.c), both parking the calling task until Redis answers. */
#ifndef SLUICE_LUA_CACHE_H
#define SLUICE_LUA_CACHE_H

#include <lua.h>
#include <stddef.h>

#include "lua_app.h"

#define CACHE_LOCAL_MAX 10000       /* in-process table: entries kept (least recently used go first) */

/* The module loader; needs the appstate as upvalue 1 (like sluice.core). */
int luaopen_sluice_cache(lua_State *L);

/* app.publish's binding: publishes through ssebus_publish (the one publish path) and returns what
 * the C function returns: (id); or, when Redis must confirm first, the task is parked and resumed
 * with (id) or (nil, message, code); (nil, message) for a bad event; (nil, message, "unreachable")
 * when the bus cannot take it. id_override NULL = next id; retry < 0 = none. */
int lua_cache_publish(lua_State *L, appstate *a, const char *ch, size_t chl, const char *data, size_t dl,
                      const char *event, const char *id_override, int retry);

/* Frees the process's in-process cache table (at exit, after the workers). */
void lua_cache_server_free(server *s);

#endif
