/* lua_guard.h: the limits a Lua state runs under: a memory budget and a run deadline, held by a
 * counting allocator wrapped around LuaJIT's own and by the hook the watchdog (lua_watchdog.c)
 * sets on a run once it is overdue.
 *
 * Why the allocator: a long C call (string.rep, gsub, cjson.decode) never runs the hook, so the
 * hook alone lets it run far past its deadline and grow without bound. Every allocation
 * of the state passes through the guard's allocator, which refuses it (LuaJIT then raises "not
 * enough memory", a normal Lua error) when it would take the state over its budget or when the
 * run's deadline has passed (big requests read the clock; small ones once the watchdog has
 * flagged the run as late, so the common allocation costs a few instructions). Refusals happen only inside a guarded run (a request, a timer, loading):
 * allocations the core makes on a state outside one (publish, rate-limit key functions) always
 * succeed, since nothing there would catch the error.
 *
 * The state owns its lua_guard (embedded in appstate); it must outlive lua_close. */
#ifndef SLUICE_LUA_GUARD_H
#define SLUICE_LUA_GUARD_H

#include <lua.h>
#include <stddef.h>

#include "lua_watchdog.h"

/* Why a guarded run was stopped. */
enum { GUARD_NONE = 0, GUARD_MEMORY, GUARD_DEADLINE };

typedef struct lua_guard {
    lua_Alloc f;       /* LuaJIT's allocator, which does the real work */
    void *ud;
    size_t used;       /* bytes the state holds, live or not yet collected */
    size_t limit;      /* budget in bytes, 0 = none (set with lua_guard_set_limit) */
    int enforce;       /* inside a guarded run: refusals allowed (set with lua_guard_enforce) */
    int stopped;       /* GUARD_* of the current run: set by a refusal or the deadline hook */
    lua_watch *watch;  /* the running thread's deadline, inside a guarded run */
    ptrdiff_t room;    /* what the budget leaves while enforced (derived from the above) */
    const _Atomic int *late;   /* the watchdog's "this run is late" flag while enforced */
} lua_guard;

/* What lua_guard_run_begin saves of the run it nests in. */
typedef struct lua_guard_run {
    lua_watch_saved w;
    lua_watch *watch;
    int enforce, stopped;
} lua_guard_run;

/* Seconds config.lua and the scripts may take to load (start-up and every reload). */
#define LUA_GUARD_LOAD_DEADLINE 10.0

/* A new state (luaL_newstate) whose allocations go through g; limit in bytes, 0 = none.
 * NULL when out of memory. */
lua_State *lua_guard_newstate(lua_guard *g, size_t limit);
/* Allows refusals (inside the protected calls that run user code) or not. */
void lua_guard_enforce(lua_guard *g, int on);
/* Sets the budget in bytes (0 = none). */
void lua_guard_set_limit(lua_guard *g, size_t limit);
/* Closes a state made by lua_guard_newstate (gives LuaJIT its own allocator back first, so
 * it frees its arena). */
void lua_guard_close(lua_State *L, lua_guard *g);
/* After a stopped run: a full collection, so the memory the run held is returned now. */
void lua_guard_collect(lua_State *L, lua_guard *g);

/* A guarded run of L on this thread (a request's resume, a timer, a load) begins: refusals are
 * allowed (g->enforce) and the watchdog holds the deadline (monotonic seconds, 0 = none). ctx
 * says what the run is, for the watchdog's last-resort message. Runs nest; no system call. */
void lua_guard_run_begin(lua_guard *g, lua_guard_run *save, lua_State *L, double deadline, void *ctx);
/* The run ends; returns how it was stopped (GUARD_*), and restores the run it nested in. */
int lua_guard_run_end(lua_guard *g, const lua_guard_run *save);
/* CLOCK_MONOTONIC_COARSE in seconds. */
double lua_guard_now(void);
/* What the deadline hook says while a state loads (NULL: the handler message). The text is
 * "loading took longer than ..." after the hook's "file:line: ". */
void lua_guard_set_loading(const char *what);
/* The hook the watchdog sets on an overdue run (never set otherwise: the JIT stays on). Raises
 * "script ran too long without yielding (limits.script_timeout)" past the deadline; after the
 * grace, at every instruction. */
void lua_guard_hook(lua_State *L, lua_Debug *ar);

/* Replaces os.exit in a server state with a function that raises (it would end the process at
 * once, nothing logged or drained). */
void lua_guard_disable_exit(lua_State *L);

/* A run stopped in a C call ends with LuaJIT's bare "not enough memory" (etext: the message and
 * its traceback): rewrites it in place as "file:line: <which limit>" (co: the stopped coroutine). */
void lua_guard_error_text(lua_State *co, const lua_guard *g, int stopped, char *etext, size_t elen);
/* "<file>: loading stopped: <which limit>" for a load the guard stopped. */
void lua_guard_load_error(const lua_guard *g, const char *file, char *out, size_t outlen);

#endif
