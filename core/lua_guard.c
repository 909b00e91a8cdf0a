/* lua_guard.c: per-state memory budget and run deadline: a counting allocator and the watchdog hook. */
#include "lua_guard.h"

#include <lauxlib.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static __thread const char *loading_what;

/* The hook's message. The state keeps it anchored (lua_guard_newstate): pushing an interned
 * string allocates nothing, so the hook can still raise it when, after the grace, every
 * allocation is refused. */
#define HOOK_MSG "script ran too long without yielding (limits.script_timeout)"

double lua_guard_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

void lua_guard_set_loading(const char *what) { loading_what = what; }

/* Every allocation of the state comes through here, so the fast path is a subtraction, two
 * tests and a tail call: g->room is what the budget leaves (huge when nothing is enforced), and
 * the deadline is looked at (a clock read) only for big requests, where long C calls spend
 * their time, and once the watchdog has flagged the run as late. */
#define GUARD_BIG 4096
#define ROOM_FREE (PTRDIFF_MAX / 4)     /* no budget to hold: far from 0 either way */

static const _Atomic int never_late;

static void guard_sync(lua_guard *g)
{
    if (!g->enforce || !g->limit) g->room = ROOM_FREE;
    else g->room = g->used <= g->limit ? (ptrdiff_t)(g->limit - g->used) : -1;
    g->late = g->enforce && g->watch ? &g->watch->late : &never_late;
}

void lua_guard_enforce(lua_guard *g, int on)
{
    g->enforce = on;
    guard_sync(g);
}

void lua_guard_set_limit(lua_guard *g, size_t limit)
{
    g->limit = limit;
    guard_sync(g);
}

/* An allocation that must never fail: LuaJIT's string table (a fresh power-of-two array of
 * at least 256 pointers). The collector resizes it in the middle of a GC step, and a GC step
 * runs inside JIT-compiled code too, where this LuaJIT (2.1-20230119) cannot raise an error
 * from it: the unwinder crashes (LuaJIT issue #1247 and its kind, fixed after that release).
 * Other fresh power-of-two arrays of 2 KB or more (a table's array part, a buffer's first
 * growth) pass as well; the allocations around them still count and are refused. */
static int never_refused(const void *p, size_t nsize)
{
    return !p && nsize >= 2048 && (nsize & (nsize - 1)) == 0;
}

/* The slow path of a growth of d bytes (already taken off g->room): over the budget, a big
 * request, or a run the watchdog flagged as late. */
__attribute__((noinline)) static void *alloc_checked(lua_guard *g, void *p, size_t osize, size_t nsize, ptrdiff_t d)
{
    if (never_refused(p, nsize)) {
        g->used += (size_t)d;
        return g->f(g->ud, p, osize, nsize);
    }
    if (g->enforce && g->room < 0) {
        g->room += d;
        g->stopped = GUARD_MEMORY;
        return NULL;
    }
    lua_watch *w = g->enforce ? g->watch : NULL;
    if (w) {
        /* past the deadline (like the hook, a handler that catches the first refusal gets a
         * short grace to answer; after it, every allocation fails) */
        if (lua_watch_overdue(w, lua_guard_now(), NULL)) {
            g->room += d;
            g->stopped = GUARD_DEADLINE;
            return NULL;
        }
        atomic_store_explicit(&w->late, 0, memory_order_relaxed);     /* flagged for an earlier run */
    }
    g->used += (size_t)d;
    return g->f(g->ud, p, osize, nsize);
}

static void *guard_alloc(void *ud, void *p, size_t osize, size_t nsize)
{
    lua_guard *g = ud;
    /* a free or a shrink (d <= 0) is never refused */
    ptrdiff_t d = (ptrdiff_t)nsize - (ptrdiff_t)(p ? osize : 0);
    g->room -= d;
    if (d > 0 && (g->room < 0 || nsize >= GUARD_BIG || atomic_load_explicit(g->late, memory_order_relaxed)))
        return alloc_checked(g, p, osize, nsize, d);
    /* counted before the call, so that it is a tail call: when LuaJIT's allocator itself fails
     * (the system is out of memory) the count stays a little high, erring safe */
    g->used += (size_t)d;
    return g->f(g->ud, p, osize, nsize);
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
    guard_sync(g);
    lua_setallocf(L, guard_alloc, g);
    lua_pushliteral(L, HOOK_MSG);
    lua_setfield(L, LUA_REGISTRYINDEX, "sluice.guard.hookmsg");
    lua_watchdog_set_hook(lua_guard_hook);
    return L;
}

void lua_guard_run_begin(lua_guard *g, lua_guard_run *save, lua_State *L, double deadline, void *ctx)
{
    lua_watch *w = lua_watch_self();
    save->watch = g->watch;
    save->enforce = g->enforce;
    save->stopped = g->stopped;
    g->watch = w;
    g->stopped = 0;
    lua_guard_enforce(g, 1);
    lua_watch_begin(w, &save->w, L, deadline, ctx);
}

int lua_guard_run_end(lua_guard *g, const lua_guard_run *save)
{
    lua_watch_end(g->watch, &save->w);
    int stopped = g->stopped;
    g->watch = save->watch;
    g->stopped = save->stopped;
    lua_guard_enforce(g, save->enforce);
    return stopped;
}

void lua_guard_close(lua_State *L, lua_guard *g)
{
    if (!L) return;
    lua_guard_enforce(g, 0);
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
    lua_guard_enforce(g, 0);
    /* protected: a finalizer that raises must not take the process down */
    lua_cpcall(L, full_gc, NULL);
    lua_guard_enforce(g, e);
}

void lua_guard_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    lua_watch *w = lua_watch_self();
    /* progress the watchdog can see: the hook is running, so it will stop the run */
    atomic_store_explicit(&w->hooks, atomic_load_explicit(&w->hooks, memory_order_relaxed) + 1, memory_order_relaxed);
    int first = 0;
    if (!lua_watch_overdue(w, lua_guard_now(), &first)) return;
    void *ud;
    if (lua_getallocf(L, &ud) == guard_alloc) ((lua_guard *)ud)->stopped = GUARD_DEADLINE;
    if (loading_what) {
        luaL_where(L, 0);
        lua_pushstring(L, loading_what);
        lua_concat(L, 2);
        lua_error(L);
    }
    if (first) luaL_error(L, HOOK_MSG);
    lua_pushliteral(L, HOOK_MSG);       /* interned already: no allocation */
    lua_error(L);
}

static int os_exit_disabled(lua_State *L)
{
    return luaL_error(L, "os.exit is disabled in sluice's Lua states: return an error status (or call "
                         "app.error) from a handler; stop the server with SIGTERM. It works in `sluice lua` scripts");
}

void lua_guard_disable_exit(lua_State *L)
{
    lua_getglobal(L, "os");
    lua_pushcfunction(L, os_exit_disabled);
    lua_setfield(L, -2, "exit");
    lua_pop(L, 1);
}

#define MB (1024.0 * 1024.0)

void lua_guard_error_text(lua_State *co, const lua_guard *g, int stopped, char *etext, size_t elen)
{
    if (strncmp(etext, "not enough memory", 17) != 0) return;
    char where[300] = "";
    lua_Debug ar;
    for (int lv = 0; lua_getstack(co, lv, &ar); lv++)
        if (lua_getinfo(co, "Sl", &ar) && (ar.currentline > 0 || ar.linedefined > 0)) {
            /* a refusal inside a VM instruction leaves no current line: the function's will do */
            snprintf(where, sizeof where, "%s:%d: ", ar.short_src, ar.currentline > 0 ? ar.currentline : ar.linedefined);
            break;
        }
    const char *tb = strchr(etext, '\n');
    char rest[3000];
    snprintf(rest, sizeof rest, "%s", tb ? tb : "");
    if (stopped == GUARD_MEMORY)
        snprintf(etext, elen, "%sLua memory budget exceeded (limits.lua_memory = %.0f MB): the run was stopped and its memory collected%s",
                 where, (double)g->limit / MB, rest);
    else
        snprintf(etext, elen, "%sscript ran too long without yielding (limits.script_timeout)%s", where, rest);
}

void lua_guard_load_error(const lua_guard *g, const char *file, char *out, size_t outlen)
{
    if (g->stopped == GUARD_MEMORY)
        snprintf(out, outlen, "%s: loading stopped: over the Lua memory budget (limits.lua_memory = %.0f MB)", file,
                 (double)g->limit / MB);
    else
        snprintf(out, outlen, "%s: loading took longer than the %.0f s load deadline", file, LUA_GUARD_LOAD_DEADLINE);
}
