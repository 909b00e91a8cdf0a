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

#include "log.h"
#include "lua_app.h"
#include "lua_db.h"
#include "limiter.h"
#include "lua_cache.h"
#include "metrics.h"
#include "rbus.h"
#include "ratelimit.h"
#include "sse.h"
#include "ssebus.h"
#include "ssestream.h"

#define container_of(p, T, m) ((T *)((char *)(p) - offsetof(T, m)))

static server *the_server;          /* for the main thread's signal watchers only */
static ev_async reload_async;       /* workers ask the main thread for a reload */
static ev_async drained_async;      /* workers tell the main thread they have drained */

static void worker_tick_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    worker *w = container_of(t, worker, tick_w);
    timerwheel_run(w->tw, worker_now_us(w) / 1000);
    w->tw_armed = 0;
}

/* Before the loop sleeps: arm one ev_timer for the wheel's next deadline. */
static void worker_maybe_drained(worker *w);

static void worker_prepare_cb(struct ev_loop *loop, ev_prepare *p, int revents)
{
    worker *w = container_of(p, worker, prepare_w);
    /* connections closed by this iteration's callbacks: the check watcher already ran */
    if (w->reaplist) conn_reap(w);
    worker_maybe_drained(w);
    uint64_t now = worker_now_us(w) / 1000;
    uint64_t next = timerwheel_next(w->tw, now);
    if (next == w->tw_armed && ev_is_active(&w->tick_w)) return;
    ev_timer_stop(loop, &w->tick_w);
    w->tw_armed = next;
    if (next == UINT64_MAX) return;
    double d = next > now ? (double)(next - now) / 1000.0 : 0.0;
    ev_timer_set(&w->tick_w, d + 0.0005, 0.);
    ev_timer_start(loop, &w->tick_w);
}

static void worker_maybe_drained(worker *w)
{
    if (w->stopping && !w->nconns && !w->drained) {
        w->drained = 1;
        ev_async_send(EV_DEFAULT, &drained_async);
        ev_break(w->loop, EVBREAK_ALL);
    }
}

static void worker_reap_cb(struct ev_loop *loop, ev_check *c, int revents)
{
    worker *w = container_of(c, worker, reap_w);
    conn_reap(w);
    worker_maybe_drained(w);
}

static void worker_swap(worker *w)
{
    server *s = w->srv;
    pthread_mutex_lock(&s->lock);
    appstate *next = w->next_app;
    w->next_app = NULL;
    int pending = w->swap_pending;
    w->swap_pending = 0;
    pthread_mutex_unlock(&s->lock);
    if (!pending) return;
    if (next) {
        appstate *old = w->app;
        w->app = next;
        w->app_cfg = next->cfg;
        appstate_activate(next);
        appstate_retire(old);
        appstate_release(old);
        db_worker_configure(w);
    }
    pthread_mutex_lock(&s->lock);
    w->swapped_gen++;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

static void worker_begin_stop(worker *w)
{
    if (w->stopping) return;
    w->stopping = 1;
    ev_io_stop(w->loop, &w->accept_w);
    ev_timer_stop(w->loop, &w->accept_pause);
    if (w->lfd >= 0) { close(w->lfd); w->lfd = -1; }
    appstate_retire(w->app);
    /* idle keep-alive connections and streams go now; busy ones finish their request */
    for (conn *c = w->conns, *n; c; c = n) {
        n = c->next;
        if (c->state == CS_SSE && c->sse) ssestream_goodbye(c);
        else if (c->state == CS_SSE || (c->state == CS_READING && !c->mid_request)) conn_close(c);
    }
    conn_reap(w);
    worker_maybe_drained(w);      /* nothing left: the check watcher may not run again */
}

static void worker_wake_cb(struct ev_loop *loop, ev_async *a, int revents)
{
    worker *w = container_of(a, worker, wake_w);
    worker_swap(w);
    if (atomic_load(&w->srv->force_stop)) { ev_break(loop, EVBREAK_ALL); return; }
    if (atomic_load(&w->srv->stopping)) worker_begin_stop(w);
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    char name[16];
    snprintf(name, sizeof name, "sluice-w%d", w->idx);
    pthread_setname_np(pthread_self(), name);
    appstate_activate(w->app);
    ev_run(w->loop, 0);
    return NULL;
}

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

/* Runs the pending callbacks of one loop iteration, after one read of the clock. */
static void worker_invoke_pending(struct ev_loop *loop)
{
    worker *w = ev_userdata(loop);
    w->now_cache_us = mono_us();
    ev_invoke_pending(loop);
}

int worker_setup(server *s, worker *w, int idx, appstate *a)
{
    w->srv = s;
    w->idx = idx;
    w->lfd = -1;
    w->loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
    if (!w->loop) return -1;
    w->app = a;
    w->app_cfg = a->cfg;
    a->w = w;
    ev_set_userdata(w->loop, w);
    ev_set_invoke_pending_cb(w->loop, worker_invoke_pending);
    w->tw = timerwheel_new(worker_now_us(w) / 1000);
    ev_async_init(&w->wake_w, worker_wake_cb);
    ev_async_start(w->loop, &w->wake_w);
    ev_prepare_init(&w->prepare_w, worker_prepare_cb);
    ev_prepare_start(w->loop, &w->prepare_w);
    ev_init(&w->tick_w, worker_tick_cb);
    ev_init(&w->accept_pause, conn_accept_resume_cb);
    ev_check_init(&w->reap_w, worker_reap_cb);
    ev_check_start(w->loop, &w->reap_w);
    if (metrics_worker_init(w) || ssestream_worker_init(w) || db_worker_init(w) || rbus_worker_init(w)) return -1;
    return 0;
}

void worker_teardown(worker *w)
{
    for (conn *c = w->conns, *n; c; c = n) { n = c->next; conn_close(c); }
    conn_reap(w);
    for (conn *c = w->freelist, *n; c; c = n) {
        n = c->next;
        buf_free(&c->in);
        buf_free(&c->out);
        http_req_free(&c->req);
        free(c);
    }
    w->freelist = NULL;
    db_worker_free(w);
    limiter_worker_free(w);
    ssebus_worker_free(w);
    rbus_worker_free(w);
    if (w->app) { appstate_retire(w->app); appstate_release(w->app); w->app = NULL; }
    ssestream_worker_free(w);
    metrics_worker_free(w);
    if (w->z_ready) deflateEnd(&w->z);
    buf_free(&w->scratch);
    buf_free(&w->jsonbuf);
    if (w->tw) timerwheel_free(w->tw);
    if (w->lfd >= 0) close(w->lfd);
    ev_loop_destroy(w->loop);
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
        snprintf(s->last_reload_error, sizeof s->last_reload_error, "%s", err);
        log_msg(LOG_ERROR, "reload rejected, nothing changed:\n%s", err);
        return -1;
    }
    const sconfig *nc = next[0]->cfg, *oc = s->cfg0;
    if (nc->port != oc->port || strcmp(nc->host, oc->host) != 0 || nc->workers != oc->workers)
        log_msg(LOG_WARN, "reload: port, host and workers take effect at the next restart");
    sse_limits l = sse_limits_of(nc);
    sse_hub_set_limits(s->ssehub, &l);
    log_set_level(nc->log_level);
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
    s->last_reload_error[0] = 0;
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

/* `sluice reload` connects here: "reload\n" -> "ok\n" or "error\n<messages>". */
static int admin_fd = -1;
static ev_io admin_w;
static char admin_path[108];

static void admin_cb(struct ev_loop *loop, ev_io *io, int revents)
{
    int fd = accept4(admin_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) return;
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char cmd[64] = "";
    ssize_t n = read(fd, cmd, sizeof cmd - 1);
    if (n > 0 && strncmp(cmd, "reload", 6) == 0) {
        char err[8192];
        if (server_reload(the_server, err, sizeof err) == 0) {
            ssize_t w = write(fd, "ok\n", 3);
            (void)w;
        } else {
            char out[8300];
            int m = snprintf(out, sizeof out, "error\n%s\n", err);
            ssize_t w = write(fd, out, (size_t)m);
            (void)w;
        }
    } else {
        ssize_t w = write(fd, "error\nunknown command\n", 22);
        (void)w;
    }
    close(fd);
}

void server_admin_socket_path(int port, char *out, size_t n)
{
    const char *dir = getenv("XDG_RUNTIME_DIR");
    snprintf(out, n, "%s/sluice-%d.sock", dir && *dir ? dir : "/tmp", port);
}

static void open_admin_socket(int port)
{
    server_admin_socket_path(port, admin_path, sizeof admin_path);
    unlink(admin_path);
    admin_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", admin_path);
    if (admin_fd < 0 || bind(admin_fd, (struct sockaddr *)&sa, sizeof sa) || listen(admin_fd, 8)) {
        log_msg(LOG_WARN, "admin socket %s: %s (sluice reload will not reach this server; SIGHUP still works)", admin_path, strerror(errno));
        if (admin_fd >= 0) close(admin_fd);
        admin_fd = -1;
        return;
    }
    chmod(admin_path, 0600);
    ev_io_init(&admin_w, admin_cb, admin_fd, EV_READ);
    ev_io_start(EV_DEFAULT, &admin_w);
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
    s->config_path = strdup(config_path);
    s->watch = watch;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    char err[8192];
    appstate *first = appstate_new(config_path, NULL, 0, err, sizeof err);
    if (!first) { fprintf(stderr, "%s\n", err); return 1; }
    const sconfig *cfg = first->cfg;
    log_set_level(cfg->log_level);
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
        if (i == 0) { s->cfg0 = a->cfg; atomic_store(&s->metrics_max_channels, a->cfg->metrics_max_channels); }
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
    open_admin_socket(cfg->port);
    if (watch) open_watch(s);
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
    if (admin_fd >= 0) { close(admin_fd); unlink(admin_path); }
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
    log_msg(LOG_INFO, "sluice stopped");
    return 0;
}

