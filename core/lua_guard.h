/* lua_guard.h: the limits a Lua state runs under: a memory budget and a run deadline, held by a
 * counting allocator wrapped around LuaJIT's own and by the watchdog's count hook.
 *
 * Why the allocator: a long C call (string.rep, gsub, cjson.decode) never runs the count hook,
 * so the hook alone lets it run far past its deadline and grow without bound. Every allocation
 * of the state passes through lua_guard_alloc, which refuses it (LuaJIT then raises "not enough
 * memory", a normal Lua error) when it would take the state over its budget or when the run's
 * deadline has passed. Refusals happen only inside a guarded run (a request, a timer, loading):
 * allocations the core makes on a state outside one (publish, rate-limit key functions) always
 * succeed, since nothing there would catch the error.
 *
 * The state owns its lua_guard (embedded in appstate); it must outlive lua_close. */
#ifndef SLUICE_LUA_GUARD_H
#define SLUICE_LUA_GUARD_H

#include <lua.h>
#include <stddef.h>

/* Why a guarded run was stopped. */
enum { GUARD_NONE = 0, GUARD_MEMORY, GUARD_DEADLINE };

typedef struct lua_guard {
    lua_Alloc f;       /* LuaJIT's allocator, which does the real work */
    void *ud;
    size_t used;       /* bytes the state holds, live or not yet collected */
    size_t limit;      /* budget in bytes, 0 = none */
    int enforce;       /* inside a guarded run: refusals allowed */
    int stopped;       /* GUARD_* of the current run: set by a refusal or the deadline hook */
    unsigned ticks;    /* small allocations since the last clock read */
} lua_guard;

/* Seconds config.lua and the scripts may take to load (start-up and every reload). */
#define LUA_GUARD_LOAD_DEADLINE 10.0

/* A new state (luaL_newstate) whose allocations go through g; limit in bytes, 0 = none.
 * NULL when out of memory. */
lua_State *lua_guard_newstate(lua_guard *g, size_t limit);
/* Closes a state made by lua_guard_newstate (gives LuaJIT its own allocator back first, so
 * it frees its arena). */
void lua_guard_close(lua_State *L, lua_guard *g);
/* After a stopped run: a full collection, so the memory the run held is returned now. */
void lua_guard_collect(lua_State *L, lua_guard *g);

/* This thread's Lua run deadline (monotonic seconds, 0 = none); returns the old one. */
double lua_guard_set_deadline(double d);
/* CLOCK_MONOTONIC_COARSE in seconds. */
double lua_guard_now(void);
/* What the deadline hook says while a state loads (NULL: the handler message). The text is
 * "loading took longer than ..." after the hook's "file:line: ". */
void lua_guard_set_loading(const char *what);
/* The watchdog: install with lua_sethook(L, lua_guard_hook, LUA_MASKCOUNT, 1000). Raises
 * "script ran too long without yielding (limits.script_timeout)" past the deadline. */
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
