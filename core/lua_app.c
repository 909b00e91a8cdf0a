/* lua_app.c: builds a Lua state from config.lua + scripts and runs request coroutines on it. */
#include "lua_app.h"

#include <lauxlib.h>
#include <lualib.h>
#include <luajit.h>
#include <lua-cjson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <limits.h>
#include <time.h>

#include "json.h"
#include "limiter.h"
#include "log.h"
#include "lua_guard.h"
#include "lua_pgurl.h"
#include "web.h"

struct sluice_embedded { const char *name; const char *src; size_t len; };
extern const struct sluice_embedded sluice_embedded_lua[];

int luaopen_sluice_core(lua_State *L);
int luaopen_sluice_cache(lua_State *L);
int luaopen_cjson_safe(lua_State *L);
int luaopen_sluice_testing(lua_State *L);
void lua_http_preload(lua_State *L, appstate *a);
int luaopen_sluice_crypto(lua_State *L);
int luaopen_sluice_password(lua_State *L);
int luaopen_sluice_log(lua_State *L);

#include "clock.h"
#include "conn.h"
#include "ctx.h"
#include "response.h"
#include "sconfig.h"
#include "util.h"

/* ---------------------------------------------------------------- module loading */

/* package.loaders entry: lua/<name>.lua from SLUICE_LUA_DIR (development) or the binary. */
static int embedded_loader(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    const char *dir = getenv("SLUICE_LUA_DIR");
    if (dir && *dir) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s.lua", dir, name);
        if (access(path, R_OK) == 0) {
            if (luaL_loadfile(L, path)) return lua_error(L);
            return 1;
        }
    }
    for (const struct sluice_embedded *e = sluice_embedded_lua; e->name; e++) {
        if (strcmp(e->name, name) == 0) {
            char chunk[128];
            snprintf(chunk, sizeof chunk, "@lua/%s.lua", name);
            if (luaL_loadbuffer(L, e->src, e->len, chunk)) return lua_error(L);
            return 1;
        }
    }
    lua_pushfstring(L, "\n\tno embedded module '%s'", name);
    return 1;
}

int app_runtime_module(const char *name, size_t n)
{
    for (const struct sluice_embedded *e = sluice_embedded_lua; e->name; e++)
        if (strlen(e->name) == n && memcmp(e->name, name, n) == 0) return 1;
    return 0;
}

/* The guard (lua_guard.c, lua_watchdog.c): every run (a resume of a task, a load) has a
 * deadline; the watchdog thread sets the hook on a run that passes it, and the state's
 * allocator refuses memory past it or past the budget. Nothing is checked while a run is on
 * time, so the JIT stays on (limits.jit); compiled code stuck in a trace is the watchdog's
 * last resort (docs/operations.md). */
#define MB (1024.0 * 1024.0)

static double mono_now(void) { return lua_guard_now(); }

/* For the watchdog's last-resort message: which run is stuck (read from the watchdog thread
 * while the worker is stuck in compiled code, so nothing here changes under it). */
static void describe_run(void *ctx, char *out, size_t outlen)
{
    const task *t = ctx;
    switch (t->kind) {
    case TASK_REQUEST:
        if (t->c && t->c->gen == t->gen) {
            const http_req *r = &t->c->req;
            snprintf(out, outlen, "%s %.*s", http_method_str((enum http_method)r->method),
                     (int)(r->path_len < 200 ? r->path_len : 200), http_req_url(r));
        } else {
            snprintf(out, outlen, "a request handler");
        }
        break;
    case TASK_TIMER: snprintf(out, outlen, "an app.timer callback"); break;
    default: snprintf(out, outlen, "a spec"); break;
    }
}

static int traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (!msg) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_isstring(L, -1)) msg = lua_tostring(L, -1);
        else msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

void app_setup_loaders(lua_State *L, appstate *a, const char *base_dir)
{
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, luaopen_cjson);
    lua_setfield(L, -2, "cjson");
    lua_pushcfunction(L, luaopen_cjson_safe);
    lua_setfield(L, -2, "cjson.safe");
    lua_pushcfunction(L, luaopen_sluice_pgurl);    /* config.lua validates URLs with the pool's parser */
    lua_setfield(L, -2, "sluice.pgurl");
    lua_pushcfunction(L, luaopen_sluice_crypto);
    lua_setfield(L, -2, "sluice.crypto");
    lua_pushlightuserdata(L, a);                 /* a NULL state (sluice lua): hashes run inline */
    lua_pushcclosure(L, luaopen_sluice_password, 1);
    lua_setfield(L, -2, "sluice.password");
    if (a) {
        lua_pushlightuserdata(L, a);
        lua_pushcclosure(L, luaopen_sluice_core, 1);
        lua_setfield(L, -2, "sluice.core");
        lua_pushlightuserdata(L, a);
        lua_pushcclosure(L, luaopen_sluice_cache, 1);
        lua_setfield(L, -2, "sluice.cache");
        lua_pushlightuserdata(L, a);
        lua_pushcclosure(L, luaopen_sluice_testing, 1);
        lua_setfield(L, -2, "sluice.testing");
        lua_http_preload(L, a);
        lua_pushlightuserdata(L, a);
        lua_pushcclosure(L, luaopen_sluice_log, 1);
        lua_setfield(L, -2, "sluice.log");
    }
    lua_pop(L, 1);
    /* insert the embedded loader right after preload */
    lua_getfield(L, -1, "loaders");
    int n = (int)lua_objlen(L, -1);
    for (int i = n; i >= 2; i--) { lua_rawgeti(L, -1, i); lua_rawseti(L, -2, i + 1); }
    lua_pushcfunction(L, embedded_loader);
    lua_rawseti(L, -2, 2);
    lua_pop(L, 1);
    /* scripts may require each other: <base>/?.lua and <base>/scripts/?.lua */
    lua_getfield(L, -1, "path");
    lua_pushfstring(L, "%s/?.lua;%s/scripts/?.lua;%s", base_dir, base_dir, lua_tostring(L, -1));
    lua_setfield(L, -3, "path");
    lua_pop(L, 2);
}

/* ---------------------------------------------------------------- state lifecycle */

static void errappend(char *err, size_t errlen, const char *msg)
{
    size_t n = strlen(err);
    if (n && n + 1 < errlen) { err[n++] = '\n'; err[n] = 0; }
    snprintf(err + n, errlen - n, "%s", msg);
}

/* "file:line: message" without the traceback that follows it. */
static void first_line(char *out, size_t outlen, const char *msg)
{
    const char *nl = strchr(msg, '\n');
    size_t n = nl ? (size_t)(nl - msg) : strlen(msg);
    if (n >= outlen) n = outlen - 1;
    memcpy(out, msg, n);
    out[n] = 0;
}

/* A load the guard stopped inside a C call: LuaJIT only says "not enough memory" (and runs no
 * traceback handler for it), so say which file and which limit. */
static void load_stopped(appstate *a, const char *file, char *err, size_t errlen)
{
    char b[1024];
    lua_guard_load_error(&a->guard, file, b, sizeof b);
    errappend(err, errlen, b);
}

static long policy_key(conn *c, int fn_ref, char *out, size_t cap);

appstate *appstate_new(const char *config_path, worker *w, int test_mode, char *err, size_t errlen)
{
    err[0] = 0;
    char abs[PATH_MAX];
    if (!realpath(config_path, abs)) {
        snprintf(err, errlen, "%s: cannot open config file (is the path right? run from the project directory or pass --config)", config_path);
        return NULL;
    }
    limiter_set_key_fn(policy_key);      /* the same function every time: a relaxed store */
    appstate *a = calloc(1, sizeof *a);
    if (!a) { snprintf(err, errlen, "out of memory"); return NULL; }
    a->w = w;
    a->refs = 1;
    /* config.lua runs under the default budget; the scripts under the configured one */
    lua_State *L = a->L = lua_guard_newstate(&a->guard, (size_t)(LUA_MEMORY_DEFAULT_MB * MB));
    if (!L) { free(a); snprintf(err, errlen, "cannot create a Lua state (out of memory)"); return NULL; }
    luaL_openlibs(L);
    lua_guard_disable_exit(L);
    char base[PATH_MAX];
    snprintf(base, sizeof base, "%s", abs);
    char *slash = strrchr(base, '/');
    if (slash) *slash = 0;
    a->base_dir = strdup(base);
    app_setup_loaders(L, a, base);
    /* loading has a deadline too: a script looping at top level must not hang a reload. It
     * runs interpreted (the JIT goes on once loaded), so the watchdog's hook always stops it:
     * a reload must never meet the last resort. */
    luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);
    lua_watchdog_set_describe(describe_run);
    lua_guard_run load_run;
    lua_guard_run_begin(&a->guard, &load_run, L, mono_now() + LUA_GUARD_LOAD_DEADLINE, NULL);
    lua_guard_enforce(&a->guard, 0);     /* refusals only inside the protected calls that run user code */
    lua_guard_set_loading("loading took longer than the 10 s load deadline (a script's top level must not loop or wait)");

    lua_pushcfunction(L, traceback);
    a->traceback_ref = luaL_ref(L, LUA_REGISTRYINDEX);

    /* config: require("config").load(path, opts) */
    lua_getglobal(L, "require");
    lua_pushstring(L, "config");
    if (lua_pcall(L, 1, 1, 0)) { errappend(err, errlen, lua_tostring(L, -1)); goto fail; }
    lua_getfield(L, -1, "load");
    lua_pushstring(L, abs);
    lua_createtable(L, 0, 2);
    lua_getglobal(L, "os");
    lua_getfield(L, -1, "getenv");
    lua_setfield(L, -3, "lookup_env");
    lua_pop(L, 1);
    lua_guard_enforce(&a->guard, 1);     /* refusals only inside the protected calls that run user code */
    int cst = lua_pcall(L, 2, 2, 0);
    lua_guard_enforce(&a->guard, 0);
    if (cst) { errappend(err, errlen, lua_tostring(L, -1)); goto fail; }
    if (a->guard.stopped) { load_stopped(a, abs, err, errlen); goto fail; }
    if (lua_isnil(L, -2)) {
        int n = (int)lua_objlen(L, -1);
        for (int i = 1; i <= n; i++) {
            lua_rawgeti(L, -1, i);
            errappend(err, errlen, lua_tostring(L, -1));
            lua_pop(L, 1);
        }
        goto fail;
    }
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, "sluice.config");
    char cerr[512];
    a->cfg = sconfig_from_lua(L, lua_gettop(L), cerr, sizeof cerr);
    if (!a->cfg) { errappend(err, errlen, cerr); goto fail; }
    lua_guard_set_limit(&a->guard, (size_t)(a->cfg->lua_memory_mb * MB));
    lua_settop(L, 0);
    a->rt = router_new();

    lua_getglobal(L, "require");
    lua_pushstring(L, "cjson");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "encode");
    a->encode_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    /* encode empty tables as [] only when they are marked; sparse arrays as objects */
    lua_getfield(L, -1, "encode_sparse_array");
    lua_pushboolean(L, 1);
    lua_call(L, 1, 0);
    lua_settop(L, 0);

    /* the request metatable lives in sluice.core (req_index); fetch it through require */
    lua_getglobal(L, "require");
    lua_pushstring(L, "sluice.core");
    if (lua_pcall(L, 1, 1, 0)) { errappend(err, errlen, lua_tostring(L, -1)); goto fail; }
    lua_getfield(L, -1, "_req_mt");
    a->req_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_settop(L, 0);
    /* strings every request table needs, interned once and fetched by integer index */
    lua_createtable(L, 140, 0);
    lua_pushliteral(L, "method");
    lua_rawseti(L, -2, 1);
    lua_pushliteral(L, "path");
    lua_rawseti(L, -2, 2);
    lua_pushliteral(L, "params");
    lua_rawseti(L, -2, 3);
    static const char *const rkeys[] = {"status", "json", "body", "headers", "cookies"};
    for (int i = 0; i < 5; i++) {
        lua_pushstring(L, rkeys[i]);
        lua_rawseti(L, -2, KEY_STATUS + i);
    }
    for (int m = 0; m <= 40; m++) {
        lua_pushstring(L, http_method_str((enum http_method)m));
        lua_rawseti(L, -2, 100 + m);
    }
    a->keys_ref = luaL_ref(L, LUA_REGISTRYINDEX);

    for (size_t i = 0; !(test_mode & APPSTATE_NO_SCRIPTS) && i < a->cfg->nscripts; i++) {
        const char *path = a->cfg->scripts[i];
        lua_rawgeti(L, LUA_REGISTRYINDEX, a->traceback_ref);
        if (luaL_loadfile(L, path)) {
            const char *m = lua_tostring(L, -1);
            if (strstr(m, "cannot open")) {
                char b[1024];
                snprintf(b, sizeof b, "%s: script not found (listed in scripts of %s)", path, abs);
                errappend(err, errlen, b);
            } else {
                errappend(err, errlen, m);
            }
            goto fail;
        }
        lua_guard_enforce(&a->guard, 1);
        int sst = lua_pcall(L, 0, 0, -2);
        lua_guard_enforce(&a->guard, 0);
        if (sst) {
            char line[1024];
            const char *m = lua_tostring(L, -1);
            if (a->guard.stopped && m && strstr(m, "not enough memory")) { load_stopped(a, path, err, errlen); goto fail; }
            first_line(line, sizeof line, m ? m : "(error object is not a string)");
            errappend(err, errlen, line);
            goto fail;
        }
        lua_settop(L, 0);
    }
    lua_guard_set_loading(NULL);
    lua_guard_run_end(&a->guard, &load_run);
    a->script_timeout = test_mode && a->cfg->script_timeout <= 0 ? 5 : a->cfg->script_timeout;
    /* `sluice test` keeps the interpreter: a runaway spec is always stopped, never the runner */
    if (a->cfg->jit && !test_mode) luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_ON);
    return a;
fail:
    lua_guard_set_loading(NULL);
    lua_guard_run_end(&a->guard, &load_run);
    if (!err[0]) snprintf(err, errlen, "%s: failed to load", abs);
    a->closing = 1;
    appstate_release(a);
    return NULL;
}

static void task_release(task *t);

void appstate_activate(appstate *a)
{
    if (a->active || !a->w) return;
    a->active = 1;
    for (task *t = a->tasks; t; t = t->next)
        if (t->kind == TASK_TIMER && !t->co && !tw_entry_linked(&t->tmo))
            timerwheel_add(a->w->tw, &t->tmo, worker_now_us(a->w) / 1000 + t->first_ms);
}

void appstate_retire(appstate *a)
{
    task *t = a->tasks, *next;
    for (; t; t = next) {
        next = t->next;
        if (t->kind == TASK_TIMER && !t->co) {      /* armed timer, not running */
            tw_entry_cancel(&t->tmo);
            task_release(t);
        }
    }
}

void appstate_release(appstate *a)
{
    if (--a->refs > 0) return;
    if (a->L) lua_guard_close(a->L, &a->guard);
    app_mounts_free(a);
    free(a->base_dir);
    router_free(a->rt);
    if (a->cfg) sconfig_free(a->cfg);
    for (task *t = a->freetasks, *n; t; t = n) { n = t->next; free(t); }
    free(a->copool);
    free(a);
}

/* ---------------------------------------------------------------- tasks */

static task *task_alloc(appstate *a, int kind)
{
    task *t = a->freetasks;
    if (t) a->freetasks = t->next;
    else if (!(t = malloc(sizeof *t))) return NULL;
    memset(t, 0, sizeof *t);
    t->app = a;
    t->kind = kind;
    tw_entry_init(&t->tmo, NULL);
    t->next = a->tasks;
    if (a->tasks) a->tasks->prev = t;
    a->tasks = t;
    a->refs++;
    return t;
}

/* Gives t a coroutine from the pool (or a new one) and anchors it. */
static int task_coroutine(task *t)
{
    appstate *a = t->app;
    lua_State *L = a->L;
    if (a->ncopool) {
        t->co_ref = a->copool[--a->ncopool];
        lua_rawgeti(L, LUA_REGISTRYINDEX, t->co_ref);
        t->co = lua_tothread(L, -1);
        lua_pop(L, 1);
    } else {
        t->co = lua_newthread(L);
        t->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    if (!t->co) return -1;
    if (a->w) atomic_fetch_add_explicit(&a->w->lua_tasks, 1, memory_order_relaxed);
    return 0;
}

static void task_recycle_co(task *t, int clean);

static void task_release(task *t)
{
    appstate *a = t->app;
    if (t->cleanup) t->cleanup(t);     /* what a binding holds for the task (lua_db: a pinned connection) */
    t->cleanup = NULL;
    if (t->co) task_recycle_co(t, 0);
    tw_entry_cancel(&t->tmo);
    if (t->timer_ref) luaL_unref(a->L, LUA_REGISTRYINDEX, t->timer_ref);
    if (t->co_ref) luaL_unref(a->L, LUA_REGISTRYINDEX, t->co_ref);
    if (t->prev) t->prev->next = t->next;
    else a->tasks = t->next;
    if (t->next) t->next->prev = t->prev;
    t->next = a->freetasks;
    a->freetasks = t;
    appstate_release(a);
}

/* Returns the finished coroutine to the pool (only a cleanly finished one is reusable). */
static void task_recycle_co(task *t, int clean)
{
    appstate *a = t->app;
    if (!t->co) return;
    if (a->w) atomic_fetch_sub_explicit(&a->w->lua_tasks, 1, memory_order_relaxed);
    if (!t->co_ref) { t->co = NULL; return; }
    if (clean && a->ncopool < 256) {
        if (a->ncopool == a->capcopool) {
            size_t nc = a->capcopool ? a->capcopool * 2 : 16;
            int *p = realloc(a->copool, nc * sizeof *p);
            if (p) { a->copool = p; a->capcopool = nc; }
        }
        if (a->ncopool < a->capcopool) {
            lua_settop(t->co, 0);
            a->copool[a->ncopool++] = t->co_ref;
            t->co_ref = 0;
        }
    }
    t->co = NULL;
}

task *task_current(appstate *a, lua_State *L)
{
    task *t = a->running;
    if (t && t->co != L) return NULL;     /* inside a coroutine the script made itself */
    return t;
}

int task_yield(lua_State *L, task *t)
{
    t->waiting = 1;
    return lua_yield(L, 0);
}

static void task_finish(task *t, int status);

static void sleep_cancel(task *t) { tw_entry_cancel(&t->tmo); }

/* Whether nobody will read t's answer: a request whose request is over, a detached child. */
static int task_unwanted(const task *t)
{
    return t->kind == TASK_REQUEST ? !t->c : t->kind == TASK_CHILD && t->detached;
}

/* A task nobody waits for (task_unwanted: limits.request_timeout answered, the client gone, a
 * spec timed out) that is parked on a wait it can undo (t->cancel set) is abandoned there: the
 * wait is cancelled (after t->cancel nothing resumes t), the cleanup hook gives back what the
 * task holds, and the coroutine is dropped, so its stack and locals become garbage now. A task
 * parked on a wait without a cancel hook (a publish through Redis) is bounded by that wait's own
 * timeout: it resumes, runs on detached, and is abandoned at its next wait. */
static int task_abandon(task *t)
{
    if (!task_unwanted(t) || !t->waiting || !t->cancel || t->app->running == t) return 0;
    void (*cancel)(task *) = t->cancel;
    t->cancel = NULL;
    cancel(t);
    tw_entry_cancel(&t->tmo);
    t->waiting = 0;
    t->wait = NULL;
    t->on_done = NULL;       /* nobody waits for its answer */
    task_recycle_co(t, 0);
    task_release(t);
    return 1;
}

int task_detach(task *t)
{
    if (t->kind != TASK_CHILD) return 0;
    t->detached = 1;
    t->on_done = NULL;       /* the abandoned child may finish later: nobody listens */
    t->ud = NULL;
    return task_abandon(t);
}

static void task_run(task *t, int nargs)
{
    appstate *a = t->app;
    task *saved = a->running;
    a->running = t;
    t->waiting = 0;
    double dl = t->deadline > 0 ? t->deadline : a->script_timeout > 0 ? mono_now() + a->script_timeout : 0;
    lua_guard_run run;
    lua_guard_run_begin(&a->guard, &run, a->L, dl, t);
    int st = lua_resume(t->co, nargs);
    t->stopped = lua_guard_run_end(&a->guard, &run);
    a->running = saved;
    if (st == LUA_YIELD) {
        if (t->waiting) { task_abandon(t); return; }   /* detached while it ran: no one will read its answer */
        lua_settop(t->co, 0);
        lua_pushstring(t->co, "coroutine.yield() from a handler: use app.sleep or app.db, or wrap your own coroutine");
        st = LUA_ERRRUN;
    }
    task_finish(t, st);
}

void task_resume(task *t, int nres)
{
    t->waiting = 0;
    t->cancel = NULL;
    t->wait = NULL;
    task_run(t, nres);
}

/* Formats the error on top of co with a traceback into buf. */
static void task_error_text(task *t, char *out, size_t outlen)
{
    lua_State *co = t->co;
    const char *msg = lua_tostring(co, -1);
    if (!msg) {
        if (luaL_callmeta(co, -1, "__tostring") && lua_isstring(co, -1)) msg = lua_tostring(co, -1);
        else if (lua_istable(co, -1)) {
            lua_getfield(co, -1, "message");
            msg = lua_isstring(co, -1) ? lua_tostring(co, -1) : "(error object is a table without message)";
        } else msg = "(error object is not a string)";
    }
    luaL_traceback(co, co, msg, 0);
    snprintf(out, outlen, "%s", lua_tostring(co, -1));
    lua_pop(co, 1);
}

static void timer_arm(task *t);

static void task_finish(task *t, int st)
{
    appstate *a = t->app;
    char etext[4096];
    if (st != 0) {
        t->err_status = 0;
        if (lua_istable(t->co, -1)) {       /* error objects may carry an HTTP status */
            lua_getfield(t->co, -1, "status");
            if (lua_isnumber(t->co, -1)) t->err_status = (int)lua_tointeger(t->co, -1);
            lua_pop(t->co, 1);
            lua_getfield(t->co, -1, "code");
            const char *code = lua_tostring(t->co, -1);
            if (code && (strcmp(code, "pool_timeout") == 0 || strcmp(code, "unreachable") == 0)) t->err_status = 503;
            lua_pop(t->co, 1);
        }
        task_error_text(t, etext, sizeof etext);
        if (t->stopped) lua_guard_error_text(t->co, &a->guard, t->stopped, etext, sizeof etext);
        if (a->w) atomic_fetch_add(&a->w->lua_errors, 1);
    }
    if (t->stopped) {            /* the run's memory goes back now, not at the next GC cycle */
        if (st != 0) lua_settop(t->co, 0);   /* (a run that recovered keeps its answer) */
        lua_guard_collect(a->L, &a->guard);
    }
    if (t->kind == TASK_REQUEST && t->c) t->c->task = NULL;
    if (t->on_done) {            /* a request's: dispatch answers it (t->c; NULL once it went away) */
        t->on_done(t, st, st ? etext : NULL);
        t->on_done = NULL;
    }
    switch (t->kind) {
    case TASK_REQUEST:
        break;
    case TASK_TIMER:
        if (st) log_msg(LOG_ERROR, "timer callback failed: %s", etext);
        if (t->repeat_ms && !a->closing && st == 0) {
            task_recycle_co(t, 1);
            timer_arm(t);
            return;
        }
        break;
    case TASK_CHILD: {
        task *p = t->parent;
        tw_entry_cancel(&t->tmo);
        if (p && p->waiting && p->wait == t) {
            lua_State *pc = p->co;
            int n;
            if (st == 0) { lua_pushboolean(pc, 1); n = 1; }
            else {
                lua_pushboolean(pc, 0);
                const char *nl = strstr(etext, "\nstack traceback:");
                lua_pushlstring(pc, etext, nl ? (size_t)(nl - etext) : strlen(etext));
                lua_pushstring(pc, etext);
                n = 3;
            }
            task_recycle_co(t, st == 0);
            task_release(t);
            task_resume(p, n);
            return;
        }
        break;
    }
    }
    task_recycle_co(t, st == 0);
    task_release(t);
}

task *task_prepare(appstate *a, int kind, int nargs)
{
    lua_State *L = a->L;
    task *t = task_alloc(a, kind);
    if (!t || task_coroutine(t)) { lua_pop(L, nargs + 1); if (t) task_release(t); return NULL; }
    lua_xmove(L, t->co, nargs + 1);
    return t;
}

/* ---------------------------------------------------------------- timers (app.timer) */

static void timer_fire(tw_entry *e)
{
    task *t = container_of(e, task, tmo);
    if (t->co) { task_resume(t, 0); return; }        /* app.sleep / await deadline */
    if (task_coroutine(t)) { task_release(t); return; }
    lua_rawgeti(t->co, LUA_REGISTRYINDEX, t->timer_ref);
    task_run(t, 0);
}

static void timer_arm(task *t)
{
    worker *w = t->app->w;
    t->tmo.cb = timer_fire;
    timerwheel_add(w->tw, &t->tmo, worker_now_us(w) / 1000 + t->repeat_ms);
}

/* app.timer(seconds, fn [, repeat]) from sluice.core. */
int app_timer_new(lua_State *L, appstate *a, double seconds, int fn_idx, int repeat)
{
    if (!a->w) return 0;     /* `sluice check`: scripts load, timers do not run */
    task *t = task_alloc(a, TASK_TIMER);
    if (!t) return luaL_error(L, "out of memory");
    lua_pushvalue(L, fn_idx);
    t->timer_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    uint64_t ms = (uint64_t)(seconds * 1000);
    t->repeat_ms = repeat ? (ms ? ms : 1) : 0;
    t->tmo.cb = timer_fire;
    t->first_ms = ms;
    /* a state being built (reload) is not on its worker thread yet: arm at activation */
    if (a->active) timerwheel_add(a->w->tw, &t->tmo, worker_now_us(a->w) / 1000 + ms);
    return 0;
}

/* app.sleep(seconds): suspends the running task. */
int app_sleep(lua_State *L, double seconds)
{
    appstate *a = lua_touserdata(L, lua_upvalueindex(1));
    task *t = task_current(a, L);
    if (!t || !a->w) return luaL_error(L, "app.sleep: only inside a handler, timer or spec");
    t->tmo.cb = timer_fire;
    timerwheel_add(a->w->tw, &t->tmo, worker_now_us(a->w) / 1000 + (uint64_t)(seconds * 1000));
    t->cancel = sleep_cancel;
    return task_yield(L, t);
}

/* ---------------------------------------------------------------- requests */

int app_handle(appstate *a, conn *c, const route_target *rt, const router_param *ps, int np,
               void (*on_done)(task *t, int st, const char *etext))
{
    task *t = task_alloc(a, TASK_REQUEST);
    if (!t || task_coroutine(t)) {
        if (t) task_release(t);
        return -1;
    }
    lua_State *co = t->co;
    t->on_done = on_done;
    t->c = c;
    t->gen = c->gen;
    t->route_kind = rt->kind;
    t->route_ref = rt->ref;
    int nargs = 1;
    if (a->pipeline_ref) {            /* middleware: pipeline(handler, req, is_sse) */
        lua_rawgeti(co, LUA_REGISTRYINDEX, a->pipeline_ref);
        nargs = 3;
    }
    lua_rawgeti(co, LUA_REGISTRYINDEX, rt->ref);
    /* the request table: method, path, params eager; the rest lazily via the metatable */
    lua_rawgeti(co, LUA_REGISTRYINDEX, a->keys_ref);
    int K = lua_gettop(co);
    lua_createtable(co, 2, 4);
    lua_pushlightuserdata(co, c);
    lua_rawseti(co, -2, 1);
    lua_pushnumber(co, c->gen);
    lua_rawseti(co, -2, 2);
    lua_rawgeti(co, K, 1);
    lua_rawgeti(co, K, 100 + (c->req.method <= 40 ? c->req.method : 1));
    lua_rawset(co, -3);
    lua_rawgeti(co, K, 2);
    lua_pushlstring(co, http_req_url(&c->req), c->req.path_len);
    lua_rawset(co, -3);
    if (np) {
        lua_rawgeti(co, K, 3);
        lua_createtable(co, 0, np);
        for (int i = 0; i < np; i++) {
            char tmp[1024];
            const char *v = ps[i].val;
            size_t vl = ps[i].vlen;
            if (vl < sizeof tmp && memchr(v, '%', vl)) {
                memcpy(tmp, v, vl);
                long n = http_urldecode(tmp, vl, 0);
                if (n >= 0) { v = tmp; vl = (size_t)n; }
            }
            lua_pushlstring(co, ps[i].name, ps[i].nlen);
            lua_pushlstring(co, v, vl);
            lua_rawset(co, -3);
        }
        lua_rawset(co, -3);
    }
    lua_rawgeti(co, LUA_REGISTRYINDEX, a->req_mt_ref);
    lua_setmetatable(co, -2);
    lua_remove(co, K);
    if (nargs == 3) lua_pushboolean(co, rt->kind == 1);
    c->task = t;
    task_run(t, nargs);
    return 0;
}

void app_task_where(const task *t, char *out, size_t outlen)
{
    lua_State *L = t->app->L;
    lua_Debug ar;
    snprintf(out, outlen, "?");
    if (!t->route_ref) return;
    lua_rawgeti(L, LUA_REGISTRYINDEX, t->route_ref);
    if (!lua_isfunction(L, -1)) { lua_pop(L, 1); return; }
    if (lua_getinfo(L, ">S", &ar) && ar.linedefined > 0)      /* ">" pops the function */
        snprintf(out, outlen, "%s:%d", ar.short_src, ar.linedefined);
}

void app_conn_gone(conn *c)
{
    task *t = c->task;
    if (!t) return;
    c->task = NULL;
    t->c = NULL;         /* its answer goes nowhere: parked, it is abandoned; running, it runs on */
    task_abandon(t);
}

/* ---------------------------------------------------------------- rate-limit keys */

/* limiter.c's key function for `key = function(req)` policies (installed by appstate_new):
 * "f:" + what the function returns for a small request table, or -1. */
static long policy_key(conn *c, int fn_ref, char *out, size_t cap)
{
    appstate *a = c->w->app;
    lua_State *L = a->L;
    int top = lua_gettop(L);
    size_t n = 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, fn_ref);
    lua_createtable(L, 2, 2);
    lua_pushlightuserdata(L, c);
    lua_rawseti(L, -2, 1);
    lua_pushnumber(L, c->gen);
    lua_rawseti(L, -2, 2);
    lua_pushlstring(L, http_req_url(&c->req), c->req.path_len);
    lua_setfield(L, -2, "path");
    lua_pushstring(L, http_method_str((enum http_method)c->req.method));
    lua_setfield(L, -2, "method");
    lua_rawgeti(L, LUA_REGISTRYINDEX, a->req_mt_ref);
    lua_setmetatable(L, -2);
    if (lua_pcall(L, 1, 1, 0) == 0 && lua_isstring(L, -1)) {
        const char *v = lua_tolstring(L, -1, &n);
        int k = snprintf(out, cap, "f:%.*s", (int)n, v);
        lua_settop(L, top);
        return (size_t)k < cap ? k : (long)cap - 1;
    }
    lua_settop(L, top);
    return -1;
}
