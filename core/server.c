/* server.c: process start-up, worker threads, reload hand-over, graceful shutdown, admin socket. */
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "control.h"
#include "httpc.h"
#include "limiter.h"
#include "log.h"
#include "lua_app.h"
#include "lua_cache.h"
#include "lua_crypto.h"
#include "lua_db.h"
#include "metrics.h"
#include "ratelimit.h"
#include "rbus.h"
#include "sse.h"
#include "ssebus.h"
#include "ssestream.h"

#include "clock.h"
#include "conn.h"
#include "sconfig.h"
#include "util.h"
#include "worker.h"

static server *the_server;          /* for the main thread's signal watchers only */
static ev_async reload_async;       /* workers ask the main thread for a reload */
static ev_async drained_async;      /* workers tell the main thread they have drained */
static void notify_drained(server *s) { (void)s; ev_async_send(EV_DEFAULT, &drained_async); }

static int open_listener(const char *host, int port, int probe, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICHOST};
    struct addrinfo *res;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    if (getaddrinfo(host, ps, &hints, &res)) {
        snprintf(err, errlen, "host \"%s\" is not a numeric address (use 0.0.0.0, 127.0.0.1 or ::)", host);
        return -1;
    }
    int fd;
    int one = 1;
    if (probe) {
        /* SO_REUSEPORT would let us share the port with another server of the same user:
         * a plain bind first tells whether anyone holds it. */
        fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (fd >= 0 && bind(fd, res->ai_addr, res->ai_addrlen) && errno == EADDRINUSE) {
            close(fd);
            freeaddrinfo(res);
            snprintf(err, errlen, "port %d is already in use: stop the other server or set PORT=<free port>", port);
            return -1;
        }
        if (fd >= 0) close(fd);
    }
    fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) || listen(fd, 4096)) {
        int e = errno;
        if (e == EADDRINUSE)
            snprintf(err, errlen, "port %d is already in use: stop the other server or set PORT=<free port>", port);
        else if (e == EACCES)
            snprintf(err, errlen, "port %d needs privileges: use a port above 1023 or run as root", port);
        else
            snprintf(err, errlen, "cannot listen on %s:%d: %s", host, port, strerror(e));
        if (fd >= 0) close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    return fd;
}

static sse_limits sse_limits_of(const sconfig *c)
{
    sse_limits l = {0};
    l.max_total = c->sse_max;
    l.per_user = c->sse_per_user;
    l.per_channel = c->sse_per_channel;
    l.retention_count = c->sse_retention;
    l.retention_ms = (uint32_t)(c->sse_retention_seconds * 1000);
    return l;
}

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The caps readers on any thread show next to the counts (metrics, status). */
static void publish_caps(server *s, const sconfig *c)
{
    unsigned conns = c->max_connections;
    if (s->fd_cap && s->fd_cap < conns) conns = s->fd_cap;
    atomic_store(&s->conn_cap, conns);
    atomic_store(&s->sse_cap, c->sse_max);
}

/* Builds a new state per worker; swaps all of them in, or none. */
int server_reload(server *s, char *err, size_t errlen)
{
    appstate **next = calloc((size_t)s->nworkers, sizeof *next);
    if (!next) { snprintf(err, errlen, "out of memory"); return -1; }
    int ok = 1;
    for (int i = 0; i < s->nworkers && ok; i++) {
        next[i] = appstate_new(s->config_path, &s->workers[i], 0, err, errlen);
        if (!next[i]) ok = 0;
    }
    if (!ok) {
        for (int i = 0; i < s->nworkers; i++) if (next[i]) { next[i]->closing = 1; appstate_release(next[i]); }
        free(next);
        atomic_fetch_add(&s->reload_failures, 1);
        pthread_mutex_lock(&s->reload_lock);
        snprintf(s->last_reload_error, sizeof s->last_reload_error, "%s", err);
        s->last_reload_wall = wall_now();
        atomic_store(&s->last_reload_ok, 0);
        pthread_mutex_unlock(&s->reload_lock);
        log_msg(LOG_ERROR, "reload rejected, nothing changed:\n%s", err);
        return -1;
    }
    const sconfig *nc = next[0]->cfg, *oc = s->cfg0;
    if (nc->port != oc->port || strcmp(nc->host, oc->host) != 0 || nc->workers != oc->workers)
        log_msg(LOG_WARN, "reload: port, host and workers take effect at the next restart");
    sse_limits l = sse_limits_of(nc);
    sse_hub_set_limits(s->ssehub, &l);
    log_set_level(nc->log_level);
    log_set_format(nc->log_json);
    pthread_mutex_lock(&s->lock);
    unsigned long long target[256];
    for (int i = 0; i < s->nworkers; i++) {
        worker *w = &s->workers[i];
        if (w->next_app) { w->next_app->closing = 1; appstate_release(w->next_app); }
        w->next_app = next[i];
        w->swap_pending = 1;
        target[i % 256] = w->swapped_gen + 1;
        ev_async_send(w->loop, &w->wake_w);
    }
    s->cfg0 = nc;
    atomic_store(&s->metrics_max_channels, nc->metrics_max_channels);
    publish_caps(s, nc);
    /* wait until every worker runs the new code (bounded: a worker busy in a long Lua call) */
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 10;
    for (int i = 0; i < s->nworkers; i++)
        while (s->workers[i].swapped_gen < target[i % 256])
            if (pthread_cond_timedwait(&s->cond, &s->lock, &dl) == ETIMEDOUT) break;
    pthread_mutex_unlock(&s->lock);
    free(next);
    atomic_fetch_add(&s->reloads, 1);
    pthread_mutex_lock(&s->reload_lock);
    s->last_reload_error[0] = 0;
    s->last_reload_wall = wall_now();
    atomic_store(&s->last_reload_ok, 1);
    pthread_mutex_unlock(&s->reload_lock);
    log_msg(LOG_INFO, "reloaded %s on %d worker(s)", s->config_path, s->nworkers);
    return 0;
}

void server_request_reload(server *s) { (void)s; ev_async_send(EV_DEFAULT, &reload_async); }

/* ---------------------------------------------------------------- main thread */

static void do_reload(server *s)
{
    char err[8192];
    server_reload(s, err, sizeof err);
}

static void reload_async_cb(struct ev_loop *loop, ev_async *a, int revents) { do_reload(the_server); }
static void sighup_cb(struct ev_loop *loop, ev_signal *sw, int revents) { do_reload(the_server); }

static ev_timer shutdown_deadline;
static void deadline_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    log_msg(LOG_WARN, "shutdown deadline reached: closing remaining connections");
    ev_break(loop, EVBREAK_ALL);
}

static void stop_cb(struct ev_loop *loop, ev_signal *sw, int revents)
{
    server *s = the_server;
    if (atomic_exchange(&s->stopping, 1)) {
        log_msg(LOG_WARN, "second signal: exiting now");
        _exit(1);
    }
    log_msg(LOG_INFO, "shutting down: finishing in-flight requests (up to %.0f s)", s->cfg0->shutdown_timeout);
    for (int i = 0; i < s->nworkers; i++) ev_async_send(s->workers[i].loop, &s->workers[i].wake_w);
    ev_timer_init(&shutdown_deadline, deadline_cb, s->cfg0->shutdown_timeout, 0);
    ev_timer_start(loop, &shutdown_deadline);
}

static void fmt_duration(double s, char *out, size_t n)
{
    long t = (long)s;
    if (t >= 86400) snprintf(out, n, "%ldd %ldh %ldm", t / 86400, t % 86400 / 3600, t % 3600 / 60);
    else if (t >= 3600) snprintf(out, n, "%ldh %ldm %lds", t / 3600, t % 3600 / 60, t % 60);
    else if (t >= 60) snprintf(out, n, "%ldm %lds", t / 60, t % 60);
    else snprintf(out, n, "%lds", t);
}

static void fmt_bytes(double b, char *out, size_t n)
{
    if (b >= 1073741824.0) snprintf(out, n, "%.1f GB", b / 1073741824.0);
    else snprintf(out, n, "%.1f MB", b / 1048576.0);
}

/* The summary `sluice status` prints (main thread: reads the workers like the metrics do). */
static void status_text(server *s, buf *b)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    char up[64], rss[32], lim[32];
    fmt_duration((double)ts.tv_sec + ts.tv_nsec / 1e9 - s->started, up, sizeof up);
    unsigned long long streams = 0;
    if (s->ssehub) { sse_stats st; sse_hub_stats(s->ssehub, &st); streams = st.subscribers; }
    metrics_res r;
    metrics_resources(s, &r);
    fmt_bytes(r.rss_bytes, rss, sizeof rss);
    fmt_bytes(r.mem_limit_bytes, lim, sizeof lim);
    metrics_health h;
    metrics_readiness_all(s, &h);
    buf_printf(b, "pid:          %d\n", (int)getpid());
    char real[PATH_MAX];
    buf_printf(b, "config:       %s\n", realpath(s->config_path, real) ? real : s->config_path);
    buf_printf(b, "port:         %d\n", s->port);
    buf_printf(b, "uptime:       %s\n", up);
    buf_printf(b, "workers:      %d\n", s->nworkers);
    buf_printf(b, "connections:  %d (limit %u)\n", atomic_load(&s->nconns), atomic_load(&s->conn_cap));
    buf_printf(b, "streams:      %llu SSE (limit %u)\n", streams, atomic_load(&s->sse_cap));
    buf_printf(b, "ready:        %s%s\n", h.ready ? "yes" : "no: ", h.ready ? "" : h.reason);
    if (s->last_reload_wall > 0) {
        time_t t = (time_t)s->last_reload_wall;
        struct tm tm;
        char when[64];
        gmtime_r(&t, &tm);
        strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm);
        if (atomic_load(&s->last_reload_ok)) {
            buf_printf(b, "last reload:  %s, ok\n", when);
        } else {
            char first[400];
            snprintf(first, sizeof first, "%s", s->last_reload_error);
            first[strcspn(first, "\n")] = 0;
            buf_printf(b, "last reload:  %s, rejected: %s\n", when, first);
        }
    } else {
        buf_puts(b, "last reload:  none\n");
    }
    buf_printf(b, "reloads:      %llu ok, %llu rejected\n", (unsigned long long)atomic_load(&s->reloads),
               (unsigned long long)atomic_load(&s->reload_failures));
    buf_printf(b, "memory:       %s RSS of %s (%.1f%%, %s limit)\n", rss, lim, r.mem_ratio * 100,
               r.mem_cgroup ? "cgroup" : "machine");
    buf_printf(b, "cpu:          %.1f%% of %.2g cores over 10 s (%s limit)\n", r.cpu_ratio * 100, r.cpus,
               r.cpu_cgroup ? "cgroup" : "machine");
    db_totals db;
    db_pool_totals(s, &db);
    if (db.configured)
        buf_printf(b, "db pool:      %d in use, %d idle, %d waiting, cap %d\n", db.in_use, db.idle, db.waiting, db.cap);
    buf_printf(b, "control:      %s\npid file:     %s\n", control_socket_path(), control_pid_path());
}

/* What the control socket's commands do (control.c carries them). */
static void control_cmd(void *ud, const char *cmd, buf *out)
{
    server *s = ud;
    if (strcmp(cmd, "reload") == 0) {
        char err[8192];
        if (server_reload(s, err, sizeof err) == 0) buf_puts(out, "ok\n");
        else buf_printf(out, "error\n%s\n", err);
    } else if (strcmp(cmd, "status json") == 0) {
        metrics_health h;
        metrics_readiness_all(s, &h);
        metrics_status_json(s, &h, out);
        buf_puts(out, "\n");
    } else if (strcmp(cmd, "status") == 0) {
        status_text(s, out);
    } else {
        buf_puts(out, "error\nunknown command (reload, status, status json)\n");
    }
}

/* --watch: inotify on the config directory and scripts/; reload 150 ms after the last change. */
static int watch_fd = -1;
static ev_io watch_w;
static ev_timer watch_debounce;

static void watch_fire(struct ev_loop *loop, ev_timer *t, int revents) { do_reload(the_server); }

static void watch_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    char b[4096] __attribute__((aligned(8)));
    int hit = 0;
    ssize_t n;
    while ((n = read(watch_fd, b, sizeof b)) > 0) {
        for (char *p = b; p < b + n;) {
            struct inotify_event *e = (struct inotify_event *)p;
            size_t l = e->len ? strlen(e->name) : 0;
            if (l > 4 && strcmp(e->name + l - 4, ".lua") == 0) hit = 1;
            p += sizeof *e + e->len;
        }
    }
    if (hit) {
        ev_timer_stop(loop, &watch_debounce);
        ev_timer_set(&watch_debounce, 0.15, 0);
        ev_timer_start(loop, &watch_debounce);
    }
}

static void open_watch(server *s)
{
    watch_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (watch_fd < 0) { log_msg(LOG_WARN, "--watch: inotify unavailable: %s", strerror(errno)); return; }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", s->config_path);
    char *sl = strrchr(dir, '/');
    if (sl) *sl = 0; else strcpy(dir, ".");
    uint32_t mask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE;
    inotify_add_watch(watch_fd, dir, mask);
    const sconfig *c = s->cfg0;
    for (size_t i = 0; i < c->nscripts; i++) {
        char d[4096];
        snprintf(d, sizeof d, "%s", c->scripts[i]);
        char *p = strrchr(d, '/');
        if (p) { *p = 0; inotify_add_watch(watch_fd, d, mask); }
    }
    ev_io_init(&watch_w, watch_cb, watch_fd, EV_READ);
    ev_io_start(EV_DEFAULT, &watch_w);
    ev_init(&watch_debounce, watch_fire);
    log_msg(LOG_INFO, "--watch: reloading when a .lua file changes under %s", dir);
}

static ev_timer usage_w;      /* CPU samples every second: the CPU ratio over the last 10 s */
static void usage_cb(struct ev_loop *loop, ev_timer *t, int revents) { metrics_sample_usage(the_server); }

static ev_timer housekeeping_w;
static void housekeeping_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    server *s = the_server;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t now_ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    metrics_snapshot(s);
    if (!s->cfg0->production) {        /* a pulse on the terminal while developing */
        char line[256];
        metrics_status_line(s, line, sizeof line);
        log_msg(LOG_INFO, "%s", line);
    }
    static uint64_t last_sweep;
    if (now_ms - last_sweep >= (uint64_t)(s->cfg0->sse_cleanup * 1000)) {
        last_sweep = now_ms;
        sse_hub_sweep(s->ssehub, now_ms, (uint64_t)(s->cfg0->sse_cleanup * 1000));
        ratelimit_sweep(s->rl, now_ms);
    }
    ev_timer_set(t, s->cfg0->metrics_interval, 0);
    ev_timer_start(loop, t);
}

static void drained_cb(struct ev_loop *loop, ev_async *a, int revents)
{
    server *s = the_server;
    for (int i = 0; i < s->nworkers; i++) if (!s->workers[i].drained) return;
    ev_break(loop, EVBREAK_ALL);
}

int server_run(const char *config_path, int watch)
{
    signal(SIGPIPE, SIG_IGN);
    server *s = calloc(1, sizeof *s);
    the_server = s;
    s->on_drained = notify_drained;
    s->request_reload = server_request_reload;
    s->config_path = strdup(config_path);
    s->watch = watch;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    pthread_mutex_init(&s->reload_lock, NULL);
    char err[8192];
    appstate *first = appstate_new(config_path, NULL, 0, err, sizeof err);
    if (!first) { fprintf(stderr, "%s\n", err); return 1; }
    const sconfig *cfg = first->cfg;
    log_set_level(cfg->log_level);
    log_set_format(cfg->log_json);
    s->nworkers = cfg->workers;
    if (cfg->db_url && db_check_url(cfg->db_url, err, sizeof err)) { fprintf(stderr, "%s\n", err); return 1; }
    s->workers = calloc((size_t)s->nworkers, sizeof *s->workers);
    /* connections beyond the open-files limit would fail in accept(): cap them below it, keeping
     * room for listeners, the database pool, Redis and files */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        unsigned reserve = 64 + (unsigned)s->nworkers * 8;
        s->fd_cap = rl.rlim_cur > reserve ? (unsigned)rl.rlim_cur - reserve : 1;
        if (cfg->max_connections > s->fd_cap)
            log_msg(LOG_WARN, "limits.max_connections = %u is above what the open-files limit (%llu) allows: "
                              "capping at %u (raise LimitNOFILE / ulimit -n, or run more instances)",
                    cfg->max_connections, (unsigned long long)rl.rlim_cur, s->fd_cap);
    }
    s->rl = ratelimit_new(cfg->limiter_max_keys, 64);
    sse_limits l = sse_limits_of(cfg);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    /* ids start at the wall-clock ms x 10: monotonic across restarts while the old process
     * averaged under 10 events per ms, and 14 digits, so even Lua's tostring keeps them exact */
    s->ssehub = sse_hub_new(&l, (unsigned)s->nworkers, ((uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000) * SSE_ID_PER_MS);
    if (rbus_server_init(s, cfg, err, sizeof err)) { fprintf(stderr, "%s\n", err); return 1; }
    if (ssebus_server_init(s)) { fprintf(stderr, "out of memory\n"); return 1; }
    if (!s->rl || !s->ssehub || metrics_server_init(s, cfg->metrics_errors, cfg->metrics_retention)) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    s->started = (double)ts.tv_sec + ts.tv_nsec / 1e9;
    s->started_wall = (double)tv.tv_sec;
    for (int i = 0; i < s->nworkers; i++) {
        worker *w = &s->workers[i];
        appstate *a = appstate_new(config_path, w, 0, err, sizeof err);
        if (!a) { fprintf(stderr, "%s\n", err); return 1; }
        if (worker_setup(s, w, i, a)) { fprintf(stderr, "worker %d: setup failed\n", i); return 1; }
        if (i == 0) {
            s->cfg0 = a->cfg;
            atomic_store(&s->metrics_max_channels, a->cfg->metrics_max_channels);
            publish_caps(s, a->cfg);
        }
        w->lfd = open_listener(cfg->host, cfg->port, i == 0, err, sizeof err);
        if (w->lfd < 0) { fprintf(stderr, "sluice: %s\n", err); return 1; }
        ev_io_init(&w->accept_w, conn_accept_cb, w->lfd, EV_READ);
        ev_io_start(w->loop, &w->accept_w);
    }
    struct ev_loop *main_loop = EV_DEFAULT;
    static ev_signal hup, term, intr;
    ev_signal_init(&hup, sighup_cb, SIGHUP);
    ev_signal_start(main_loop, &hup);
    ev_signal_init(&term, stop_cb, SIGTERM);
    ev_signal_start(main_loop, &term);
    ev_signal_init(&intr, stop_cb, SIGINT);
    ev_signal_start(main_loop, &intr);
    ev_async_init(&reload_async, reload_async_cb);
    ev_async_start(main_loop, &reload_async);
    s->port = cfg->port;
    control_open(s->config_path, s->port, main_loop, control_cmd, s);   /* socket + pid file, found from the config's path */
    if (watch) open_watch(s);
    ev_timer_init(&usage_w, usage_cb, 1., 1.);
    ev_timer_start(main_loop, &usage_w);
    ev_init(&housekeeping_w, housekeeping_cb);
    ev_timer_set(&housekeeping_w, cfg->metrics_interval, 0);
    ev_timer_start(main_loop, &housekeeping_w);
    /* block the handled signals in worker threads so the main loop gets them */
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    for (int i = 0; i < s->nworkers; i++) pthread_create(&s->workers[i].thread, NULL, worker_main, &s->workers[i]);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    log_msg(LOG_INFO, "sluice listening on %s:%d with %d worker(s) (%s)", cfg->host, cfg->port, s->nworkers,
            cfg->production ? "production" : "development");
    first->closing = 1;
    appstate_release(first);       /* it only served to validate before binding */
    cfg = s->cfg0;

    /* serve until the workers have drained after SIGTERM, or the deadline passes */
    ev_async_init(&drained_async, drained_cb);
    ev_async_start(main_loop, &drained_async);
    ev_run(main_loop, 0);
    atomic_store(&s->stopping, 1);
    atomic_store(&s->force_stop, 1);
    for (int i = 0; i < s->nworkers; i++) {
        worker *w = &s->workers[i];
        ev_async_send(w->loop, &w->wake_w);
    }
    /* a worker stuck in a long C call (or a Lua loop with the watchdog off) must not keep the
     * process alive past the deadline */
    int stuck = 0;
    for (int i = 0; i < s->nworkers; i++) {
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_sec += 2;
        if (pthread_timedjoin_np(s->workers[i].thread, NULL, &dl)) stuck = 1;
    }
    control_close();
    if (stuck) {
        log_msg(LOG_WARN, "a worker did not stop in time: exiting without cleanup");
        _exit(0);
    }
    for (int i = 0; i < s->nworkers; i++) worker_teardown(&s->workers[i]);
    sse_hub_free(s->ssehub);
    ratelimit_free(s->rl);
    metrics_server_free(s);
    ssebus_server_free(s);
    rbus_server_free(s);
    lua_cache_server_free(s);
    lua_password_shutdown();
    log_msg(LOG_INFO, "sluice stopped");
    return 0;
}

