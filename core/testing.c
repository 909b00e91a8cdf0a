/* testing.c: `sluice test`: one worker runs the app on an ephemeral loopback port and the spec
 * runner (lua/spec.lua) in the same Lua state, with real HTTP/SSE clients and a virtual clock. */
#include "testing.h"

#include <arpa/inet.h>
#include <errno.h>
#include <lauxlib.h>
#include <limits.h>
#include <luajit.h>
#include <lualib.h>
#include <signal.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "lua_app.h"
#include "metrics.h"
#include "ratelimit.h"
#include "server.h"
#include "sse.h"
#include "testclient.h"

#include "clock.h"
#include "sconfig.h"
#include "util.h"
#include "worker.h"

static double real_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---------------------------------------------------------------- host.run: child tasks */

/* The waiter a test is blocked on in wait() (its done callback): a timer callback that fails
 * meanwhile (an assertion in it, typically) fails the test at once instead of at its timeout.
 * Disarmed whenever a host.run child ends or is abandoned. */
static struct twaiter *armed_waiter;

typedef struct hostrun {
    ev_timer start, limit;
    task *parent, *child;
    struct ev_loop *loop;
    double timeout;
    int done, ok;
    char *msg, *trace;
} hostrun;


static void hr_resume_parent(hostrun *hr)
{
    task *p = hr->parent;
    armed_waiter = NULL;
    ev_timer_stop(hr->loop, &hr->start);
    ev_timer_stop(hr->loop, &hr->limit);
    lua_State *co = p->co;
    int n;
    if (hr->ok) { lua_pushboolean(co, 1); n = 1; }
    else {
        lua_pushboolean(co, 0);
        lua_pushstring(co, hr->msg ? hr->msg : "failed");
        lua_pushstring(co, hr->trace ? hr->trace : "");
        n = 3;
    }
    free(hr->msg);
    free(hr->trace);
    free(hr);
    task_resume(p, n);
}

static void hr_start_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    hostrun *hr = container_of(t, hostrun, start);
    if (hr->done) { hr_resume_parent(hr); return; }
    task *c = hr->child;
    c->deadline = hr->timeout > 0 ? real_now() + hr->timeout : 0;
    if (hr->timeout > 0) {
        ev_timer_set(&hr->limit, hr->timeout, 0);
        ev_timer_start(loop, &hr->limit);
    }
    task_resume(c, 0);
}

static void hr_child_done(task *t, int st, const char *etext)
{
    hostrun *hr = t->ud;
    if (!hr) return;
    hr->done = 1;
    hr->ok = st == 0;
    if (!hr->ok) {
        const char *nl = strstr(etext, "\nstack traceback:");
        hr->msg = strndup(etext, nl ? (size_t)(nl - etext) : strlen(etext));
        hr->trace = strdup(etext);
    }
    /* resume the parent from the loop, not from inside the child's unwinding */
    ev_timer_stop(hr->loop, &hr->limit);
    ev_timer_set(&hr->start, 0, 0);
    ev_timer_start(hr->loop, &hr->start);
}

/* Whether a chunk name is one of the runtime's own modules (lua/<name>.lua: embedded in the
 * binary as "@lua/<name>.lua", or read from SLUICE_LUA_DIR in development): app.db.query's
 * wrapper, the spec runner, the request helpers. */
static int runtime_chunk(const char *source)
{
    const char *dir = getenv("SLUICE_LUA_DIR"), *name;
    size_t dl = dir ? strlen(dir) : 0;
    if (strncmp(source, "@lua/", 5) == 0) name = source + 5;
    else if (dl && strncmp(source + 1, dir, dl) == 0 && source[1 + dl] == '/') name = source + 2 + dl;
    else return 0;
    size_t n = strlen(name);
    if (n < 5 || strcmp(name + n - 4, ".lua") != 0) return 0;
    return app_runtime_module(name, n - 4);
}

static void hr_limit_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    hostrun *hr = container_of(t, hostrun, limit);
    if (hr->done) return;
    hr->done = 1;
    hr->ok = 0;
    /* point at the spec line the test was waiting on: the first Lua frame of the child outside
     * the runtime's own modules */
    char m[600], where[512] = "";
    lua_Debug ar;
    for (int lvl = 0; lua_getstack(hr->child->co, lvl, &ar); lvl++) {
        if (lua_getinfo(hr->child->co, "Sl", &ar) && ar.currentline > 0 && ar.source[0] == '@' &&
            !runtime_chunk(ar.source)) {
            snprintf(where, sizeof where, "%s:%d: ", ar.short_src, ar.currentline);
            break;
        }
    }
    snprintf(m, sizeof m, "%stimed out after %gs", where, hr->timeout);
    hr->msg = strdup(m);
    /* Abandon the test before the runner goes on (its after_each hooks roll the db fixture back):
     * a child parked on a wait is dropped there, its wait cancelled and what it holds given back
     * (a statement of the fixture is orphaned and the fixture's rollback ends it); one that
     * cannot be dropped now runs on detached and is dropped at its next wait. */
    task_detach(hr->child);
    hr->child = NULL;
    hr_resume_parent(hr);
}

/* host.run(fn, timeout) -> true | false, err, traceback */
static int l_run(lua_State *L)
{
    appstate *a = lua_touserdata(L, lua_upvalueindex(1));
    luaL_checktype(L, 1, LUA_TFUNCTION);
    double timeout = luaL_optnumber(L, 2, 5);
    task *p = task_current(a, L);
    if (!p) return luaL_error(L, "host.run outside a task");
    hostrun *hr = calloc(1, sizeof *hr);
    hr->parent = p;
    hr->loop = a->w->loop;
    hr->timeout = timeout;
    lua_pushvalue(L, 1);
    lua_xmove(L, a->L, 1);
    task *c = task_prepare(a, TASK_CHILD, 0);
    if (!c) { free(hr); return luaL_error(L, "out of memory"); }
    hr->child = c;
    c->ud = hr;
    c->on_done = hr_child_done;
    ev_timer_init(&hr->start, hr_start_cb, 0, 0);
    ev_timer_init(&hr->limit, hr_limit_cb, timeout, 0);
    ev_timer_start(hr->loop, &hr->start);
    p->wait = hr;
    return task_yield(L, p);
}

/* ---------------------------------------------------------------- clock */

static int l_clock_now(lua_State *L)
{
    appstate *a = lua_touserdata(L, lua_upvalueindex(1));
    lua_pushnumber(L, (double)worker_now_us(a->w) / 1e6);
    return 1;
}

static int l_clock_advance(lua_State *L)
{
    appstate *a = lua_touserdata(L, lua_upvalueindex(1));
    double s = luaL_checknumber(L, 1);
    if (s < 0) return luaL_argerror(L, 1, "the clock only moves forward");
    a->w->vclock_offset_us += (uint64_t)(s * 1e6);
    timerwheel_run(a->w->tw, worker_now_us(a->w) / 1000);
    return 0;
}

/* testing.reset(): forget every rate-limit bucket so specs do not see each other's. Clearing
 * costs microseconds (only shards holding keys are walked); reallocating the 100,000-key
 * table after every test cost ~2 ms of page faults per test. */
static int l_reset(lua_State *L)
{
    appstate *a = lua_touserdata(L, lua_upvalueindex(1));
    ratelimit_clear(a->w->srv->rl);
    return 0;
}

/* ---------------------------------------------------------------- the server log of a test */

/* While specs run, log lines go here instead of stderr; the runner takes them after each test
 * and shows them under a failure (a handler's error with its file:line and traceback). */
#define TEST_LOG_MAX 65536
static buf test_log;
static size_t test_log_dropped;

static void waiter_fail_from_log(const char *line, unsigned long len);

static void test_log_tap(const char *line, unsigned long len, void *ud)
{
    (void)ud;
    waiter_fail_from_log(line, len);
    if (test_log.len + len > TEST_LOG_MAX) { test_log_dropped += len; return; }
    buf_append(&test_log, line, len);
}

/* testing.take_log() -> the lines logged since the last call, or nil */
static int l_take_log(lua_State *L)
{
    if (!test_log.len && !test_log_dropped) { lua_pushnil(L); return 1; }
    lua_pushlstring(L, test_log.data ? test_log.data : "", test_log.len);
    if (test_log_dropped) {
        lua_pushfstring(L, "... (%d more bytes of log dropped)\n", (int)test_log_dropped);
        lua_concat(L, 2);
    }
    buf_reset(&test_log);
    test_log_dropped = 0;
    return 1;
}

/* ---------------------------------------------------------------- waiters (done callbacks) */

/* testing.waiter(): a one-shot event a task can wait on and anything (another task, a timer
 * callback, the same task earlier) can signal: w:wait() -> true | nil, err; w:wake([err]).
 * The wake-up is posted through a zero timer so the waiting task never resumes inside the
 * signaller's own call. */
typedef struct twaiter {
    ev_timer kick;
    appstate *a;
    task *t;                 /* the task inside wait(), or NULL */
    int woken;
    char *err;
} twaiter;


static void waiter_post(twaiter *w, const char *err, size_t errlen)
{
    if (w->woken) return;
    w->woken = 1;
    if (err) w->err = strndup(err, errlen);
    if (armed_waiter == w) armed_waiter = NULL;
    if (w->t) ev_timer_start(w->a->w->loop, &w->kick);
}

static void waiter_fail_from_log(const char *line, unsigned long len)
{
    static const char tag[] = "[error] timer callback failed: ";
    if (!armed_waiter) return;
    const char *p = memmem(line, len, tag, sizeof tag - 1);
    if (!p) return;
    p += sizeof tag - 1;
    const char *end = line + len;
    const char *tb = memmem(p, (size_t)(end - p), "\nstack traceback:", 17);
    if (tb) end = tb;
    while (end > p && end[-1] == '\n') end--;
    char msg[1024];
    int n = snprintf(msg, sizeof msg, "%.*s\n(raised in a callback while the test waited for done())", (int)(end - p), p);
    waiter_post(armed_waiter, msg, n < (int)sizeof msg ? (size_t)n : sizeof msg - 1);
}

static void tw_kick_cb(struct ev_loop *loop, ev_timer *tm, int revents)
{
    (void)loop, (void)revents;
    twaiter *w = container_of(tm, twaiter, kick);
    task *t = w->t;
    w->t = NULL;
    if (!t || !t->waiting || t->wait != w) return;
    lua_State *co = t->co;
    if (w->err) { lua_pushnil(co); lua_pushstring(co, w->err); task_resume(t, 2); }
    else { lua_pushboolean(co, 1); task_resume(t, 1); }
}

static void tw_cancel(task *t)
{
    twaiter *w = t->wait;
    if (w && w->t == t) w->t = NULL;
    if (armed_waiter == w) armed_waiter = NULL;
}

static int l_waiter(lua_State *L)
{
    appstate *a = lua_touserdata(L, lua_upvalueindex(1));
    twaiter *w = lua_newuserdata(L, sizeof *w);
    memset(w, 0, sizeof *w);
    w->a = a;
    ev_timer_init(&w->kick, tw_kick_cb, 0, 0);
    luaL_getmetatable(L, "sluice.twaiter");
    lua_setmetatable(L, -2);
    return 1;
}

static int l_waiter_wait(lua_State *L)
{
    twaiter *w = luaL_checkudata(L, 1, "sluice.twaiter");
    if (w->woken) {
        if (w->err) { lua_pushnil(L); lua_pushstring(L, w->err); return 2; }
        lua_pushboolean(L, 1);
        return 1;
    }
    task *t = task_current(w->a, L);
    if (!t) return luaL_error(L, "waiter:wait() only inside a spec");
    if (w->t) return luaL_error(L, "waiter:wait(): another task is already waiting");
    w->t = t;
    t->wait = w;
    t->cancel = tw_cancel;
    armed_waiter = w;
    return task_yield(L, t);
}

static int l_waiter_wake(lua_State *L)
{
    twaiter *w = luaL_checkudata(L, 1, "sluice.twaiter");
    size_t n = 0;
    const char *err = lua_isnoneornil(L, 2) ? NULL : luaL_checklstring(L, 2, &n);
    waiter_post(w, err, n);
    return 0;
}

static int l_waiter_gc(lua_State *L)
{
    twaiter *w = luaL_checkudata(L, 1, "sluice.twaiter");
    if (armed_waiter == w) armed_waiter = NULL;
    if (w->a && w->a->w) ev_timer_stop(w->a->w->loop, &w->kick);
    free(w->err);
    w->err = NULL;
    return 0;
}

static int l_real_now(lua_State *L)
{
    lua_pushnumber(L, real_now());
    return 1;
}

/* testing.isatty(fd) -> whether fd (default 1, stdout) is a terminal: colours and prompts */
static int l_isatty(lua_State *L)
{
    lua_pushboolean(L, isatty((int)luaL_optinteger(L, 1, 1)));
    return 1;
}

static int l_port(lua_State *L)
{
    appstate *a = lua_touserdata(L, lua_upvalueindex(1));
    lua_pushinteger(L, a->w ? a->w->test_port : 0);
    return 1;
}

/* ---------------------------------------------------------------- stdin for the REPL */

/* testing.readline() -> the next line of stdin (without "\n"), or nil at end of input. The task
 * yields while it waits, so the instance stays live (timers, streams) as the user types. */
static struct {
    ev_io io;
    task *t;
    struct ev_loop *loop;
    buf acc;
    int eof, started;
} rl;

static int rl_take(lua_State *L)
{
    char *d = rl.acc.data ? rl.acc.data + rl.acc.off : NULL;
    size_t n = buf_pending(&rl.acc);
    char *nl = d ? memchr(d, '\n', n) : NULL;
    if (nl) {
        lua_pushlstring(L, d, (size_t)(nl - d));
        rl.acc.off += (size_t)(nl - d) + 1;
        return 1;
    }
    if (!rl.eof) return 0;
    if (n) { lua_pushlstring(L, d, n); rl.acc.off += n; }
    else lua_pushnil(L);
    return 1;
}

static void rl_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    char b[4096];
    ssize_t n = read(0, b, sizeof b);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n > 0) buf_append(&rl.acc, b, (size_t)n);
    else rl.eof = 1;
    task *t = rl.t;
    if (!t || !t->waiting || t->wait != &rl) return;
    if (rl_take(t->co)) {
        ev_io_stop(loop, w);
        rl.t = NULL;
        task_resume(t, 1);
    }
}

static void rl_cancel(task *t)
{
    if (rl.t == t) { ev_io_stop(rl.loop, &rl.io); rl.t = NULL; }
}

static int l_readline(lua_State *L)
{
    appstate *a = lua_touserdata(L, lua_upvalueindex(1));
    if (rl_take(L)) return 1;
    task *t = task_current(a, L);
    if (!t) return luaL_error(L, "testing.readline: only inside a task");
    if (!rl.started) { ev_io_init(&rl.io, rl_cb, 0, EV_READ); rl.started = 1; }
    rl.loop = a->w->loop;
    rl.t = t;
    t->wait = &rl;
    t->cancel = rl_cancel;
    ev_io_start(rl.loop, &rl.io);
    return task_yield(L, t);
}

int luaopen_sluice_testing(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"run", l_run},   {"raw", testclient_raw},           {"clock_now", l_clock_now}, {"clock_advance", l_clock_advance},
        {"reset", l_reset}, {"port", l_port},       {"real_now", l_real_now}, {"take_log", l_take_log},
        {"waiter", l_waiter}, {"isatty", l_isatty}, {"readline", l_readline}, {NULL, NULL},
    };
    static const luaL_Reg waiter_methods[] = {
        {"wait", l_waiter_wait}, {"wake", l_waiter_wake}, {NULL, NULL},
    };
    testclient_register(L);
    if (luaL_newmetatable(L, "sluice.twaiter")) {
        lua_newtable(L);
        luaL_setfuncs(L, waiter_methods, 0);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, l_waiter_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, lua_upvalueindex(1));
    luaL_setfuncs(L, fns, 1);
    return 1;
}

/* ---------------------------------------------------------------- sluice test */

static int exit_status = 2;
static int root_finished;

static void root_done(task *t, int st, const char *etext)
{
    root_finished = 1;
    if (st == 0) exit_status = lua_isnumber(t->co, -1) ? (int)lua_tointeger(t->co, -1) : 0;
    else { fprintf(stderr, "sluice: %s\n", etext); exit_status = 2; }
    ev_break(t->app->w->loop, EVBREAK_ALL);
}

/* The app under test: config_path's, or, when no config was named and ./config.lua does not
 * exist, an app without scripts, so the specs of a plain Lua project (busted's spec/) run too. */
static appstate *load_app(const char *config_path, int config_given, worker *w, int flags, char *err, size_t errlen)
{
    if (config_given || access(config_path, F_OK) == 0) return appstate_new(config_path, w, 1 | flags, err, errlen);
    char dir[] = "/tmp/sluice-noconfig-XXXXXX", path[64];
    if (!mkdtemp(dir)) { snprintf(err, errlen, "sluice: mkdtemp: %s", strerror(errno)); return NULL; }
    snprintf(path, sizeof path, "%s/config.lua", dir);
    FILE *f = fopen(path, "w");
    if (f) { fputs("return { scripts = {} }\n", f); fclose(f); }
    appstate *a = appstate_new(path, w, 1 | flags, err, errlen);
    unlink(path);
    rmdir(dir);
    if (!a) return NULL;
    /* the loaders put the (now removed) config directory on package.path: make it the cwd's */
    lua_State *L = a->L;
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    luaL_gsub(L, lua_tostring(L, -1), dir, ".");
    lua_setfield(L, -3, "path");
    lua_pop(L, 2);
    char cwd[PATH_MAX];
    if (getcwd(cwd, sizeof cwd)) { free(a->base_dir); a->base_dir = strdup(cwd); }
    return a;
}

/* The one-worker server of exec_app (its parts are freed by their owners first). */
static void test_server_free(server *s)
{
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->cond);
    free(s->config_path);
    free(s->workers);
    free(s);
}

/* The test instance running require(module)(args) as its root task; flags are appstate_new's. */
static int exec_app(const char *config_path, int config_given, const char *module, int plain, int flags,
                    int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    char err[8192];
    server *s = calloc(1, sizeof *s);
    worker *w = calloc(1, sizeof *w);
    s->workers = w;
    s->nworkers = 1;
    s->config_path = strdup(config_path);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    w->test_mode = 1;
    appstate *a = load_app(config_path, config_given, w, flags, err, sizeof err);
    if (!a) { fprintf(stderr, "%s\n", err); test_server_free(s); return 2; }
    a->cfg->access_log = 0;
    s->cfg0 = a->cfg;
    log_set_level(a->cfg->log_level > LOG_WARN ? a->cfg->log_level : LOG_WARN);
    s->rl = ratelimit_new(a->cfg->limiter_max_keys, 4);
    sse_limits l = {a->cfg->sse_max, a->cfg->sse_per_user, a->cfg->sse_per_channel, a->cfg->sse_retention,
                    (uint32_t)(a->cfg->sse_retention_seconds * 1000), 0, 0};
    s->ssehub = sse_hub_new(&l, 1, 1000);
    metrics_server_init(s, a->cfg->metrics_errors, a->cfg->metrics_retention);
    if (worker_setup(s, w, 0, a)) { fprintf(stderr, "sluice: worker setup failed\n"); return 2; }
    /* listen on an ephemeral loopback port */
    w->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    if (bind(w->lfd, (struct sockaddr *)&sa, sizeof sa) || listen(w->lfd, 512) ||
        getsockname(w->lfd, (struct sockaddr *)&sa, &sl)) {
        fprintf(stderr, "sluice: cannot listen on loopback: %s\n", strerror(errno));
        return 2;
    }
    w->test_port = ntohs(sa.sin_port);
    ev_io_init(&w->accept_w, conn_accept_cb, w->lfd, EV_READ);
    ev_io_start(w->loop, &w->accept_w);
    appstate_activate(a);

    lua_State *L = a->L;
    if (plain) {
        /* `sluice lua`: a script or a REPL, not a handler: no watchdog, no memory budget, the
         * JIT on, and os.exit back (luaopen_os registers the library's functions again) */
        a->script_timeout = 0;
        a->guard.limit = 0;
        lua_sethook(L, NULL, 0, 0);
        luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_ON);
        lua_pushcfunction(L, luaopen_os);
        lua_call(L, 0, 0);
    } else if (strcmp(module, "spec_host") == 0) {
        log_set_tap(test_log_tap, NULL);   /* each test's server log goes into its report */
    }
    lua_getglobal(L, "require");
    lua_pushstring(L, module);
    if (lua_pcall(L, 1, 1, 0)) { log_set_tap(NULL, NULL); fprintf(stderr, "sluice: %s\n", lua_tostring(L, -1)); return 2; }
    lua_createtable(L, argc, 0);
    for (int i = 0; i < argc; i++) { lua_pushstring(L, argv[i]); lua_rawseti(L, -2, i + 1); }
    task *root = task_prepare(a, TASK_CHILD, 1);
    if (!root) return 2;
    root->on_done = root_done;
    task_resume(root, 1);
    if (!root_finished) ev_run(w->loop, 0);
    fflush(stdout);
    log_set_tap(NULL, NULL);
    buf_free(&test_log);
    if (rl.started) ev_io_stop(w->loop, &rl.io);
    buf_free(&rl.acc);
    worker_teardown(w);
    sse_hub_free(s->ssehub);
    ratelimit_free(s->rl);
    metrics_server_free(s);
    test_server_free(s);
    return exit_status;
}

int testing_exec(const char *config_path, int config_given, const char *module, int plain, int argc, char **argv)
{
    return exec_app(config_path, config_given, module, plain, 0, argc, argv);
}

int testing_exec_flags(const char *config_path, const char *module, int flags, int argc, char **argv)
{
    return exec_app(config_path, 1, module, 0, flags, argc, argv);
}

int testing_main(const char *config_path, int config_given, int argc, char **argv)
{
    return testing_exec(config_path, config_given, "spec_host", 0, argc, argv);
}

int testing_lua(const char *config_path, int config_given, int argc, char **argv)
{
    return testing_exec(config_path, config_given, "sluice_lua", 1, argc, argv);
}
