/* lua_crypto.h: the `sluice.crypto` and `sluice.password` Lua modules (layer L5; see lua_crypto.c). */
#ifndef SLUICE_LUA_CRYPTO_H
#define SLUICE_LUA_CRYPTO_H

#include <lua.h>

/* package.preload loaders (app_setup_loaders): sluice.crypto needs no state; sluice.password
 * takes the appstate as upvalue 1 (NULL: hashes run inline, as in `sluice lua`). */
int luaopen_sluice_crypto(lua_State *L);
int luaopen_sluice_password(lua_State *L);
/* At process exit, after every worker's inbox is freed: stops the password hashing threads. */
void lua_password_shutdown(void);

#endif
