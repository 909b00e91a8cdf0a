/* server.h: the process (layer L7): starts its workers, reloads, stops. The process record
 * (struct server: workers, shared tables, reload and shutdown state) is ctx.h's.
 *
 * Ownership: server_run creates the server and its workers and frees them at exit. */
#ifndef SLUICE_SERVER_H
#define SLUICE_SERVER_H

#include "ctx.h"

/* `sluice run`: serves until SIGTERM/SIGINT; returns the exit status. */
int server_run(const char *config_path, int watch);
/* Builds new Lua states for every worker and swaps them in (all or none); main thread only. */
int server_reload(server *s, char *err, size_t errlen);
/* Asks the main thread for a reload (any thread); the layers below call s->request_reload. */
void server_request_reload(server *s);

#endif
