/* lua_pgurl.c: sluice.pgurl for Lua — one validation of database URLs, shared by config.lua and the pool. */
#include "lua_pgurl.h"

#include <lauxlib.h>

#include "pgurl.h"

/* check(url) -> table of what the pool will use, or nil + the one-line reason (no variable name). */
static int l_check(lua_State *L)
{
    const char *url = luaL_checkstring(L, 1);
    pgpool_config c;
    char err[512];
    if (pgurl_parse(url, &c, err, sizeof err)) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_createtable(L, 0, 8);
    lua_pushinteger(L, c.connection_limit);
    lua_setfield(L, -2, "connection_limit");
    lua_pushnumber(L, c.pool_timeout);
    lua_setfield(L, -2, "pool_timeout");
    lua_pushnumber(L, c.connect_timeout);
    lua_setfield(L, -2, "connect_timeout");
    lua_pushnumber(L, c.idle_timeout);
    lua_setfield(L, -2, "idle_timeout");
    lua_pushnumber(L, c.max_lifetime);
    lua_setfield(L, -2, "max_lifetime");
    lua_pushnumber(L, c.statement_timeout);
    lua_setfield(L, -2, "statement_timeout");
    lua_pushstring(L, c.search_path);
    lua_setfield(L, -2, "schema");
    return 1;
}

int luaopen_sluice_pgurl(lua_State *L)
{
    static const luaL_Reg fns[] = {{"check", l_check}, {NULL, NULL}};
    lua_newtable(L);
    luaL_setfuncs(L, fns, 0);
    return 1;
}
