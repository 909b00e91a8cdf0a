/* cli.c: `sluice new DIR` (scaffold), `sluice routes` (the route table) and `sluice migrate`
 * (apply / status / new); the work is done by lua/cli.lua and lua/migrate.lua. L7 (process). */
#include "cli.h"

#include <lauxlib.h>
#include <limits.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lua_app.h"
#include "testing.h"
#include "worker.h"

/* config.lua's directory, or "." when there is no config file (sluice new, migrate new). */
static void base_of(const char *cfg, char *out, size_t n)
{
    char abs[PATH_MAX];
    if (!realpath(cfg, abs)) { snprintf(out, n, "."); return; }
    char *slash = strrchr(abs, '/');
    if (slash && slash != abs) *slash = 0;
    snprintf(out, n, "%s", abs);
}

static int traceback(lua_State *L)
{
    luaL_traceback(L, L, lua_tostring(L, 1), 1);
    return 1;
}

/* require(module)[fn](args...) in L (fn NULL: the module is the function); its number result. */
static int call_lua(lua_State *L, const char *module, const char *fn, int argc, char **argv)
{
    lua_pushcfunction(L, traceback);
    int tb = lua_gettop(L);
    lua_getglobal(L, "require");
    lua_pushstring(L, module);
    if (lua_pcall(L, 1, 1, tb)) { fprintf(stderr, "sluice: %s\n", lua_tostring(L, -1)); return 2; }
    if (fn) { lua_getfield(L, -1, fn); lua_remove(L, -2); }
    for (int i = 0; i < argc; i++) lua_pushstring(L, argv[i]);
    if (lua_pcall(L, argc, 1, tb)) { fprintf(stderr, "sluice: %s\n", lua_tostring(L, -1)); return 2; }
    int rc = (int)lua_tointeger(L, -1);
    lua_settop(L, tb - 1);
    return rc;
}

/* A plain state with the embedded modules and base's paths, for commands that need no app. */
static int run_plain(const char *base, const char *module, const char *fn, int argc, char **argv)
{
    lua_State *L = luaL_newstate();
    if (!L) { fprintf(stderr, "sluice: out of memory\n"); return 2; }
    luaL_openlibs(L);
    app_setup_loaders(L, NULL, base);
    int rc = call_lua(L, module, fn, argc, argv);
    fflush(stdout);
    lua_close(L);
    return rc;
}

static int cmd_routes(const char *cfg, int argc)
{
    if (argc > 0) { fprintf(stderr, "usage: sluice routes [--config config.lua]\n"); return 2; }
    char err[8192];
    appstate *a = appstate_new(cfg, NULL, 0, err, sizeof err);
    if (!a) { fprintf(stderr, "%s\n", err); return 1; }
    char *base = a->base_dir;
    int rc = call_lua(a->L, "cli", "routes", 1, &base);
    a->closing = 1;
    appstate_release(a);
    return rc;
}

static int cmd_migrate(const char *cfg, int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        if (argv[i][0] == '-') continue;
        if (strcmp(argv[i], "new") == 0) {       /* only files: no database, no worker */
            char base[PATH_MAX];
            base_of(cfg, base, sizeof base);
            return run_plain(base, "cli", "migrate_new", argc, argv);
        }
        break;
    }
    /* config.lua only: a migration must not depend on the handler scripts loading */
    return testing_exec_flags(cfg, "migrate", APPSTATE_NO_SCRIPTS, argc, argv);
}

int cli_main(const char *cmd, const char *cfg, int argc, char **argv)
{
    if (strcmp(cmd, "new") == 0) {
        if (argc != 1) { fprintf(stderr, "usage: sluice new DIR\n"); return 2; }
        return run_plain(".", "cli", "new", argc, argv);
    }
    if (strcmp(cmd, "routes") == 0) return cmd_routes(cfg, argc);
    if (strcmp(cmd, "migrate") == 0) return cmd_migrate(cfg, argc, argv);
    return -1;
}
