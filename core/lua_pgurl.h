/* lua_pgurl.h: require "sluice.pgurl" — the pool's DATABASE_URL parser (pgurl.c) for lua/config.lua. */
#ifndef SLUICE_LUA_PGURL_H
#define SLUICE_LUA_PGURL_H

#include <lua.h>

/* The module table: check(url) -> { connection_limit =, pool_timeout =, ... } | nil, message.
 * Available in every state (server, spec runner, `sluice lua`), so `sluice check` validates a URL
 * with the very code `sluice run` uses. */
int luaopen_sluice_pgurl(lua_State *L);

#endif
