/* testing.c: placeholder until the spec host lands. */
#include "testing.h"

#include <lua.h>
#include <stdio.h>

int luaopen_sluice_testing(lua_State *L)
{
    lua_newtable(L);
    return 1;
}

int testing_main(const char *config_path, int argc, char **argv)
{
    fprintf(stderr, "sluice test: not built yet\n");
    return 2;
}

int testing_run_script(const char *path, int argc, char **argv) { return 2; }
