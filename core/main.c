/* main.c: the sluice command line: run, check, reload, test, lua, version. */
#include <errno.h>
#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "cli.h"
#include "control.h"
#include "lua_app.h"
#include "sconfig.h"
#include "server.h"
#include "testing.h"

#define SLUICE_VERSION "0.1.0"

static void usage(FILE *f)
{
    fprintf(f,
            "sluice " SLUICE_VERSION " - a Lua-scriptable HTTP and Server-Sent Events server\n\n"
            "usage:\n"
            "  sluice run    [--config config.lua] [--watch]   serve (PORT overrides the port)\n"
            "  sluice check  [--config config.lua]             load and validate config and scripts\n"
            "  sluice reload [--config config.lua] [--port N]  reload the running server's Lua code and config\n"
            "  sluice status [--config config.lua] [--port N] [--json]\n"
            "                                                  the running server's pid, uptime, connections, last reload\n"
            "  sluice test   [--config config.lua] [options] [paths...]\n"
            "                                                  run Lua specs (default spec/, else tests/; --help)\n"
            "  sluice migrate [--config config.lua] [dir]      apply migrations/*.sql in order (idempotent)\n"
            "  sluice migrate status [dir]                     list applied, pending and changed migrations\n"
            "  sluice migrate new NAME [dir]                   create the next numbered migration file\n"
            "  sluice routes [--config config.lua]             the route table: method, path, file:line, rate limit\n"
            "  sluice new    DIR                               create a runnable project in DIR\n"
            "  sluice lua    [--config config.lua] [FILE [args...]]\n"
            "                                                  run FILE on a test instance of the app (no FILE: a REPL)\n"
            "  sluice version\n");
}

/* Pulls --config X out of argv (shifting the rest); returns the config path (default
 * config.lua; *given says whether one was named). */
static const char *take_config(int *argc, char **argv, int *given)
{
    const char *cfg = "config.lua";
    *given = 0;
    for (int i = 0; i < *argc; i++) {
        if ((strcmp(argv[i], "--config") == 0 || strcmp(argv[i], "-c") == 0) && i + 1 < *argc) {
            cfg = argv[i + 1];
            *given = 1;
            memmove(&argv[i], &argv[i + 2], (size_t)(*argc - i - 2) * sizeof *argv);
            *argc -= 2;
            i--;
        } else if (strncmp(argv[i], "--config=", 9) == 0) {
            cfg = argv[i] + 9;
            *given = 1;
            memmove(&argv[i], &argv[i + 1], (size_t)(*argc - i - 1) * sizeof *argv);
            *argc -= 1;
            i--;
        }
    }
    return cfg;
}

static int cmd_check(const char *cfg)
{
    char err[8192];
    appstate *a = appstate_new(cfg, NULL, 0, err, sizeof err);
    if (!a) { fprintf(stderr, "%s\n", err); return 1; }
    printf("%s: ok (%zu script%s, port %d, %d worker%s)\n", cfg, a->cfg->nscripts, a->cfg->nscripts == 1 ? "" : "s",
           a->cfg->port, a->cfg->workers, a->cfg->workers == 1 ? "" : "s");
    a->closing = 1;
    appstate_release(a);
    return 0;
}

/* `sluice lua [--config X] [FILE args]`: only options before FILE are sluice's; the rest is the script's. */
static int cmd_lua(int argc, char **argv)
{
    const char *cfg = "config.lua";
    int given = 0;
    while (argc > 0) {
        if ((strcmp(argv[0], "--config") == 0 || strcmp(argv[0], "-c") == 0) && argc > 1) {
            cfg = argv[1], given = 1, argc -= 2, argv += 2;
        } else if (strncmp(argv[0], "--config=", 9) == 0) {
            cfg = argv[0] + 9, given = 1, argc--, argv++;
        } else if (strcmp(argv[0], "--") == 0) {
            argc--, argv++;
            break;
        } else {
            break;
        }
    }
    return testing_lua(cfg, given, argc, argv);
}

int main(int argc, char **argv)
{
    if (argc < 2) { usage(stderr); return 2; }
    const char *cmd = argv[1];
    argc -= 2;
    argv += 2;
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) { printf("sluice %s\n", SLUICE_VERSION); return 0; }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) { usage(stdout); return 0; }
    if (strcmp(cmd, "lua") == 0) return cmd_lua(argc, argv);
    int given;
    const char *cfg = take_config(&argc, argv, &given);
    if (strcmp(cmd, "run") == 0) {
        int watch = 0;
        for (int i = 0; i < argc; i++) {
            if (strcmp(argv[i], "--watch") == 0) watch = 1;
            else { fprintf(stderr, "sluice run: unknown option %s\n", argv[i]); usage(stderr); return 2; }
        }
        return server_run(cfg, watch);
    }
    if (strcmp(cmd, "check") == 0) return cmd_check(cfg);
    if (strcmp(cmd, "reload") == 0) return control_cmd_reload(cfg, argc, argv);   /* control.c */
    if (strcmp(cmd, "status") == 0) return control_cmd_status(cfg, argc, argv);
    if (strcmp(cmd, "test") == 0) return testing_main(cfg, given, argc, argv);
    int rc = cli_main(cmd, cfg, argc, argv);  /* new, routes, migrate: core/cli.c */
    if (rc >= 0) return rc;
    fprintf(stderr, "sluice: unknown command \"%s\"\n\n", cmd);
    usage(stderr);
    return 2;
}
