/* control.c: the control socket and pid file of a running server (found from its config), and the
 * `sluice reload` / `sluice status` clients; see control.h. */
#include "control.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"

#define SUN_MAX ((int)sizeof(((struct sockaddr_un *)0)->sun_path))

static control_handler ctl_fn;
static void *ctl_ud;
static int ctl_fd = -1;
static ev_io ctl_w;
static char ctl_sock[SUN_MAX], ctl_pid[PATH_MAX];

/* ---------------------------------------------------------------- where */

int control_run_dir(char *out, size_t n, int create, char *err, size_t errlen)
{
    const char *explicit_dir = getenv("SLUICE_RUN_DIR"), *xdg = getenv("XDG_RUNTIME_DIR");
    if (explicit_dir && *explicit_dir) snprintf(out, n, "%s", explicit_dir);
    else if (xdg && *xdg) snprintf(out, n, "%s/sluice", xdg);
    else snprintf(out, n, "/tmp/sluice-%u", (unsigned)getuid());
    if (create && mkdir(out, 0700) && errno != EEXIST) {
        snprintf(err, errlen, "cannot create the run directory %s: %s", out, strerror(errno));
        return -1;
    }
    struct stat st;
    if (lstat(out, &st)) {
        snprintf(err, errlen, "run directory %s: %s", out, strerror(errno));
        return -1;
    }
    /* /tmp is shared: a directory someone else made (or can write) could hold a fake socket */
    if (!S_ISDIR(st.st_mode) || st.st_uid != getuid() || (st.st_mode & 022)) {
        snprintf(err, errlen, "run directory %s must be a directory owned by this user and writable by no one else "
                              "(set SLUICE_RUN_DIR to another one)", out);
        return -1;
    }
    return 0;
}

int control_key(const char *config_path, char *out, size_t n)
{
    char real[PATH_MAX];
    if (!realpath(config_path, real)) return -1;
    uint64_t h = 1469598103934665603ull;     /* FNV-1a: stable across builds and machines */
    for (const char *p = real; *p; p++) { h ^= (unsigned char)*p; h *= 1099511628211ull; }
    snprintf(out, n, "%016llx", (unsigned long long)h);
    return 0;
}

const char *control_socket_path(void) { return ctl_sock; }
const char *control_pid_path(void) { return ctl_pid; }

/* ---------------------------------------------------------------- server side */

static void ctl_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    int fd = accept4(ctl_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) return;
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    char cmd[64] = "";
    ssize_t n = read(fd, cmd, sizeof cmd - 1);
    buf out = {0};
    if (n > 0) {
        cmd[strcspn(cmd, "\r\n")] = 0;
        ctl_fn(ctl_ud, cmd, &out);
    }
    for (size_t off = 0; off < out.len;) {
        ssize_t w = write(fd, out.data + off, out.len - off);
        if (w <= 0) break;
        off += (size_t)w;
    }
    buf_free(&out);
    close(fd);
}

/* Removes the pid files (and their control sockets) that servers killed outright (SIGKILL, a
 * sanitizer abort, the watchdog's _exit) left in dir. Only names of the form this file creates
 * (<16 hex>-<port>.pid / .sock), only regular files / sockets owned by this user, and only when
 * the pid they name is gone (kill(pid, 0) fails with ESRCH): a live server's files, or a pid now
 * used by another process, are left alone. */
static void sweep_stale(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    int removed = 0;
    while ((e = readdir(d))) {
        char k[17], path[PATH_MAX], line[32];
        int port, end = 0;
        if (sscanf(e->d_name, "%16[0-9a-f]-%d.pid%n", k, &port, &end) != 2 || end == 0 || e->d_name[end] != 0 ||
            strlen(k) != 16 || port <= 0 || port > 65535)
            continue;
        if (snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= (int)sizeof path - 1) continue;
        struct stat st;
        if (lstat(path, &st) || !S_ISREG(st.st_mode) || st.st_uid != getuid() || st.st_size > 16) continue;
        FILE *f = fopen(path, "re");
        if (!f) continue;
        char *got = fgets(line, sizeof line, f);
        fclose(f);
        char *endp;
        long pid = got ? strtol(line, &endp, 10) : 0;
        if (!got || endp == line || (*endp && *endp != '\n') || pid <= 1 || pid > INT32_MAX) continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;
        unlink(path);
        snprintf(path + strlen(path) - 4, 6, ".sock");
        if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_uid == getuid()) unlink(path);
        removed++;
    }
    closedir(d);
    if (removed) log_msg(LOG_INFO, "run directory %s: removed the files of %d server(s) no longer running", dir, removed);
}

void control_open(const char *config_path, int port, struct ev_loop *loop, control_handler fn, void *ud)
{
    char dir[PATH_MAX], key[32], err[512] = "";
    ctl_fn = fn;
    ctl_ud = ud;
    if (control_run_dir(dir, sizeof dir, 1, err, sizeof err) || control_key(config_path, key, sizeof key)) {
        log_msg(LOG_WARN, "control socket: %s (sluice reload/status will not find this server; SIGHUP still works)",
                err[0] ? err : "cannot resolve the config path");
        return;
    }
    sweep_stale(dir);
    if (snprintf(ctl_sock, sizeof ctl_sock, "%s/%s-%d.sock", dir, key, port) >= SUN_MAX) {
        log_msg(LOG_WARN, "control socket: the path %s/%s-%d.sock is too long for a unix socket: set SLUICE_RUN_DIR to a shorter directory",
                dir, key, port);
        ctl_sock[0] = 0;
        return;
    }
    snprintf(ctl_pid, sizeof ctl_pid, "%s/%s-%d.pid", dir, key, port);
    unlink(ctl_sock);                 /* left by a server that was killed: the port check passed, so it is not live */
    ctl_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", ctl_sock);
    if (ctl_fd < 0 || bind(ctl_fd, (struct sockaddr *)&sa, sizeof sa) || listen(ctl_fd, 8)) {
        log_msg(LOG_WARN, "control socket %s: %s (sluice reload will not reach this server; SIGHUP still works)", ctl_sock, strerror(errno));
        if (ctl_fd >= 0) close(ctl_fd);
        ctl_fd = -1;
        ctl_sock[0] = 0;
    } else {
        chmod(ctl_sock, 0600);
        ev_io_init(&ctl_w, ctl_cb, ctl_fd, EV_READ);
        ev_io_start(loop, &ctl_w);
    }
    char tmp[PATH_MAX + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", ctl_pid);
    FILE *f = fopen(tmp, "w");
    if (f && fprintf(f, "%d\n", (int)getpid()) > 0 && fclose(f) == 0 && rename(tmp, ctl_pid) == 0) return;
    if (f) unlink(tmp);
    log_msg(LOG_WARN, "pid file %s: %s", ctl_pid, strerror(errno));
    ctl_pid[0] = 0;
}

void control_close(void)
{
    if (ctl_fd >= 0) { close(ctl_fd); ctl_fd = -1; }
    if (ctl_sock[0]) unlink(ctl_sock);
    if (ctl_pid[0]) unlink(ctl_pid);
    ctl_sock[0] = ctl_pid[0] = 0;
}

/* ---------------------------------------------------------------- clients */

/* Pulls --port N / --port=N and --json out of argv. -1 on a bad value. */
static int client_args(const char *cmd, int argc, char **argv, int *port, int *json)
{
    *port = 0;
    const char *env = getenv("PORT");
    if (env && *env) *port = atoi(env);
    for (int i = 0; i < argc; i++) {
        const char *v = NULL;
        if (strcmp(argv[i], "--port") == 0 && i + 1 < argc) v = argv[++i];
        else if (strncmp(argv[i], "--port=", 7) == 0) v = argv[i] + 7;
        else if (json && strcmp(argv[i], "--json") == 0) { *json = 1; continue; }
        else { fprintf(stderr, "sluice %s: unknown option %s\n", cmd, argv[i]); return -1; }
        char *end;
        long p = strtol(v, &end, 10);
        if (*end || p < 1 || p > 65535) { fprintf(stderr, "sluice %s: --port wants 1..65535 (got %s)\n", cmd, v); return -1; }
        *port = (int)p;
    }
    if (*port < 0 || *port > 65535) *port = 0;
    return 0;
}

static int connect_to(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) return fd;
    int e = errno;
    if (fd >= 0) close(fd);
    errno = e;
    return -1;
}

typedef struct found { char path[SUN_MAX]; int port; } found;

/* Live control sockets for key (NULL: any config) and port (0: any), at most max. Sockets
 * nobody listens on (a killed server's) are removed with their pid file. */
static int find_servers(const char *dir, const char *key, int port, found *out, int max)
{
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < max) {
        char k[32];
        int p;
        size_t len = strlen(e->d_name);
        if (len < 6 || strcmp(e->d_name + len - 5, ".sock") != 0) continue;
        if (sscanf(e->d_name, "%16[0-9a-f]-%d.sock", k, &p) != 2) continue;
        if ((key && strcmp(k, key) != 0) || (port && p != port)) continue;
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if ((int)strlen(path) >= SUN_MAX) continue;
        int fd = connect_to(path);
        if (fd < 0) {
            if (errno == ECONNREFUSED) {
                unlink(path);
                snprintf(path + strlen(path) - 5, 6, ".pid");
                unlink(path);
            }
            continue;
        }
        close(fd);
        snprintf(out[n].path, sizeof out[n].path, "%s/%s", dir, e->d_name);
        out[n].port = p;
        n++;
    }
    closedir(d);
    return n;
}

/* Sends cmd and reads the whole answer into reply (NUL-terminated). -1 when unreachable. */
static int ask(const char *path, const char *cmd, char *reply, size_t n)
{
    int fd = connect_to(path);
    if (fd < 0) return -1;
    if (write(fd, cmd, strlen(cmd)) != (ssize_t)strlen(cmd)) { close(fd); return -1; }
    size_t got = 0;
    ssize_t r;
    while (got < n - 1 && (r = read(fd, reply + got, n - 1 - got)) > 0) got += (size_t)r;
    reply[got] = 0;
    close(fd);
    return 0;
}

/* Finds the server(s) for the command; prints why not and returns 0 when there is none. */
static int locate(const char *cmd, const char *config, int port, found *out, int max, char *dir, size_t dirlen)
{
    char key[32], err[512], real[PATH_MAX];
    if (control_key(config, key, sizeof key)) {
        fprintf(stderr, "sluice %s: %s: %s (pass the config the server runs: --config path/to/config.lua)\n", cmd,
                config, strerror(errno));
        return 0;
    }
    if (!realpath(config, real)) snprintf(real, sizeof real, "%s", config);
    if (control_run_dir(dir, dirlen, 0, err, sizeof err)) {
        fprintf(stderr, "sluice %s: no server running with %s (%s)\n", cmd, real, err);
        return 0;
    }
    int n = find_servers(dir, key, port, out, max);
    if (!n && port) n = find_servers(dir, NULL, port, out, max);   /* --port/PORT: whatever runs there */
    if (!n) {
        if (port)
            fprintf(stderr, "sluice %s: no server running on port %d (no control socket in %s); start one with `sluice run --config %s`\n",
                    cmd, port, dir, config);
        else
            fprintf(stderr, "sluice %s: no server running with %s (no control socket in %s); start one with `sluice run --config %s`\n",
                    cmd, real, dir, config);
    }
    return n;
}

int control_cmd_reload(const char *config, int argc, char **argv)
{
    int port;
    if (client_args("reload", argc, argv, &port, NULL)) return 2;
    found f[16];
    char dir[PATH_MAX];
    int n = locate("reload", config, port, f, 16, dir, sizeof dir);
    if (!n) return 1;
    if (n > 1) {
        fprintf(stderr, "sluice reload: %d servers run %s (ports", n, config);
        for (int i = 0; i < n; i++) fprintf(stderr, " %d", f[i].port);
        fprintf(stderr, "): pick one with --port N (or PORT=N)\n");
        return 1;
    }
    static char reply[16384];
    if (ask(f[0].path, "reload\n", reply, sizeof reply)) {
        fprintf(stderr, "sluice reload: cannot reach the server on port %d (%s: %s)\n", f[0].port, f[0].path, strerror(errno));
        return 1;
    }
    if (strncmp(reply, "ok", 2) == 0) { printf("reloaded: the new code is live on every worker\n"); return 0; }
    const char *msg = strncmp(reply, "error\n", 6) == 0 ? reply + 6 : reply;
    fprintf(stderr, "%s", msg[0] ? msg : "sluice reload: no answer from the server\n");
    return 1;
}

int control_cmd_status(const char *config, int argc, char **argv)
{
    int port, json = 0;
    if (client_args("status", argc, argv, &port, &json)) return 2;
    found f[16];
    char dir[PATH_MAX];
    int n = locate("status", config, port, f, 16, dir, sizeof dir);
    if (!n) return 1;
    static char reply[1 << 20];
    int rc = 0;
    for (int i = 0; i < n; i++) {
        if (ask(f[i].path, json ? "status json\n" : "status\n", reply, sizeof reply)) {
            fprintf(stderr, "sluice status: cannot reach the server on port %d\n", f[i].port);
            rc = 1;
            continue;
        }
        printf("%s%s", i ? "\n" : "", reply);
    }
    return rc;
}
