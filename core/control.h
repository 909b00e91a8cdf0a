/* control.h: how a running server is found and driven from the command line: its control socket
 * and pid file (keyed by the config's real path and the port), the server side of the socket, and
 * the `sluice reload` / `sluice status` clients. */
#ifndef SLUICE_CONTROL_H
#define SLUICE_CONTROL_H

#include <ev.h>
#include <stddef.h>

#include "buf.h"

/*
 * Files, in the run directory (control_run_dir):
 *   <key>-<port>.sock   unix socket: "reload\n" -> "ok\n" | "error\n<messages>";
 *                       "status\n" -> a text summary; "status json\n" -> the status JSON
 *   <key>-<port>.pid    the server's pid, for `kill -HUP`
 * key: 16 hex digits of a hash of the config file's real path, so `sluice reload --config X`
 * finds the server running X whatever port PORT gave it. Both files go when the server exits.
 */

/* The run directory: $SLUICE_RUN_DIR, else $XDG_RUNTIME_DIR/sluice, else /tmp/sluice-<uid>.
 * With create set it is made (mode 0700); it must be a directory owned by this user that no one
 * else can write. 0, or -1 with a message in err. */
int control_run_dir(char *out, size_t n, int create, char *err, size_t errlen);
/* The key of a config file (its real path hashed). 0, or -1 when the file cannot be resolved. */
int control_key(const char *config_path, char *out, size_t n);

/* A command from the socket ("reload", "status", "status json", or anything else: answer
 * "error\n..."), its answer to be appended to out. Called on the loop's thread. */
typedef void (*control_handler)(void *ud, const char *cmd, buf *out);
/* Server side (main thread): opens the socket and writes the pid file for config_path and port;
 * each command goes to fn(ud, ...). A failure is logged, not fatal (SIGHUP still works). */
void control_open(const char *config_path, int port, struct ev_loop *loop, control_handler fn, void *ud);
/* Removes the socket and the pid file. */
void control_close(void);
/* The paths in use ("" when not open), for the status JSON and logs. */
const char *control_socket_path(void);
const char *control_pid_path(void);

/* `sluice reload [--config X] [--port N]` and `sluice status [--config X] [--port N] [--json]`:
 * argv holds what follows the command (without --config). Return the exit status. */
int control_cmd_reload(const char *config, int argc, char **argv);
int control_cmd_status(const char *config, int argc, char **argv);

#endif
