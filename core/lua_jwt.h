/* lua_jwt.h: app.jwt's verified-token cache in C (layer L5; see lua_jwt.c): options objects made
 * by app.jwt.options, each with a bounded cache of the tokens verified under it. */
#ifndef SLUICE_LUA_JWT_H
#define SLUICE_LUA_JWT_H

#include <lua.h>

/* Adds jwt_options, jwt_hit, jwt_put, jwt_stats, jwt_now and jwt_clock_shift to the table on
 * top of the stack (the sluice.crypto module table). */
void lua_jwt_register(lua_State *L);

#endif
