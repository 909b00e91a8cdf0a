/* lua_guard.c: per-state memory budget and run deadline: a counting allocator and the watchdog hook. */
#include "lua_guard.h"

#include <lauxlib.h>
#include <string.h>
#include <time.h>

/* The deadline of the Lua code this thread is running (a request, a timer, a load). */
static __thread double run_deadline;
static __thread const char *loading_what;

double lua_guard_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

double lua_guard_set_deadline(double d)
{
    double old = run_deadline;
    run_deadline = d;
    return old;
}

void lua_guard_set_loading(const char *what) { loading_what = what; }

/* Reading the clock on every allocation would cost more than the allocation: big ones (which
 * is where long C calls spend their time) always look, small ones every 64th. */
#define GUARD_BIG 4096
#define GUARD_EVERY 63u

static void *guard_alloc(void *ud, void *p, size_t osize, size_t nsize)
{
    lua_guard *g = ud;
    size_t old = p ? osize : 0;
    if (nsize > old && g->enforce) {        /* a free or a shrink is never refused */
        if (g->limit && g->used - old + nsize > g->limit) {
            g->stopped = GUARD_MEMORY;
            return NULL;
        }
        if (run_deadline > 0 && (nsize >= GUARD_BIG || (++g->ticks & GUARD_EVERY) == 0)) {
            double now = lua_guard_now();
            if (now > run_deadline) {
                /* like the hook: a handler that catches the error gets a short grace to answer */
                run_deadline = now + 0.05;
                g->stopped = GUARD_DEADLINE;
                return NULL;
            }
        }
    }
    void *q = g->f(g->ud, p, osize, nsize);
    if (q || nsize == 0) g->used = g->used - old + nsize;
    return q;
}

lua_State *lua_guard_newstate(lua_guard *g, size_t limit)
{
    memset(g, 0, sizeof *g);
    lua_State *L = luaL_newstate();
    if (!L) return NULL;
    g->f = lua_getallocf(L, &g->ud);
    /* what the state holds already (LuaJIT's own count, in KB and bytes) */
    g->used = (size_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 + (size_t)lua_gc(L, LUA_GCCOUNTB, 0);
    g->limit = limit;
    lua_setallocf(L, guard_alloc, g);
    return L;
}

void lua_guard_close(lua_State *L, lua_guard *g)
{
    if (!L) return;
    g->enforce = 0;
    /* LuaJIT destroys its arena at lua_close only when its own allocator is installed */
    lua_setallocf(L, g->f, g->ud);
    lua_close(L);
}

static int full_gc(lua_State *L)
{
    lua_gc(L, LUA_GCCOLLECT, 0);
    return 0;
}

void lua_guard_collect(lua_State *L, lua_guard *g)
{
    int e = g->enforce;
    g->enforce = 0;
    /* protected: a finalizer that raises must not take the process down */
    lua_cpcall(L, full_gc, NULL);
    g->enforce = e;
}

void lua_guard_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    if (run_deadline <= 0 || lua_guard_now() <= run_deadline) return;
    void *ud;
    if (lua_getallocf(L, &ud) == guard_alloc) ((lua_guard *)ud)->stopped = GUARD_DEADLINE;
    run_deadline = lua_guard_now() + 0.05;   /* a grace for a handler that catches it with pcall */
    if (loading_what) {
        luaL_where(L, 0);
        lua_pushstring(L, loading_what);
        lua_concat(L, 2);
        lua_error(L);
    }
    luaL_error(L, "script ran too long without yielding (limits.script_timeout)");
}
