/* test_lua_watchdog: the runaway guard with the JIT on (lua_watchdog.c, lua_guard.c): no hook while a
 * run is on time, the hook set from the watchdog once it is overdue and cleared at its end, the grace,
 * nested runs, and the stuck verdict (with the last resort replaced, so the process lives on). */
#include <lauxlib.h>
#include <luajit.h>
#include <lualib.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "../../core/lua_guard.h"
#include "tap.h"

static _Atomic int stuck_calls;
static char stuck_msg[1200];

static void on_stuck(const char *msg)
{
    snprintf(stuck_msg, sizeof stuck_msg, "%s", msg);
    atomic_fetch_add(&stuck_calls, 1);
}

static void describe(void *ctx, char *out, size_t outlen) { snprintf(out, outlen, "%s", (const char *)ctx); }

static lua_State *newstate(lua_guard *g, int jit)
{
    lua_State *L = lua_guard_newstate(g, 0);
    luaL_openlibs(L);
    luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | (jit ? LUAJIT_MODE_ON : LUAJIT_MODE_OFF));
    return L;
}

/* Runs code as a guarded run with a deadline `secs` from now; returns the error (or "ok") and how
 * long it took. */
static const char *run(lua_State *L, lua_guard *g, const char *code, double secs, double *took, char *buf, size_t len)
{
    double t0 = lua_guard_now();
    lua_guard_run r;
    lua_guard_run_begin(g, &r, L, secs > 0 ? t0 + secs : 0, (void *)code);
    int st = luaL_loadstring(L, code) || lua_pcall(L, 0, 0, 0);
    lua_guard_run_end(g, &r);
    if (took) *took = lua_guard_now() - t0;
    snprintf(buf, len, "%s", st ? lua_tostring(L, -1) : "ok");
    lua_settop(L, 0);
    return buf;
}

static int has(const char *s, const char *sub) { return s && strstr(s, sub) != NULL; }

/* ---------------------------------------------------------------- a thread stuck in a trace */

typedef struct { lua_State *L; lua_guard *g; } stuck_arg;

static void *stuck_thread(void *p)
{
    stuck_arg *a = p;
    char buf[256];
    pthread_setname_np(pthread_self(), "stuck-test");
    run(a->L, a->g, "local x = 0 for i = 1, 1e15 do x = x + i end", 0.2, NULL, buf, sizeof buf);
    return NULL;     /* not reached: nothing stops a compiled loop */
}

int main(void)
{
    char buf[512];
    double took;
    lua_watchdog_set_stuck(on_stuck);
    lua_watchdog_set_describe(describe);

    lua_guard g;
    lua_State *L = newstate(&g, 1);

    /* on time: no hook, the JIT compiles */
    run(L, &g, "local x = 0 for i = 1, 1e6 do x = x + i end hooked = debug.gethook() ~= nil", 5, NULL, buf, sizeof buf);
    is_str(buf, "ok", "a run on time ends normally");
    lua_getglobal(L, "hooked");
    ok(!lua_toboolean(L, -1), "no hook is set while a run is on time");
    lua_pop(L, 1);
    (void)luaL_dostring(L, "return require('jit.util').traceinfo(1) ~= nil");
    ok(lua_toboolean(L, -1), "the JIT compiled the loop");
    lua_settop(L, 0);

    /* overdue: the watchdog sets the hook, which stops code the interpreter runs (a pattern
     * match the JIT does not compile, so the loop keeps leaving its trace) */
    run(L, &g, "local s = 'k=v' while true do s:find('(%w+)=(%w+)') end", 0.1, &took, buf, sizeof buf);
    ok(has(buf, "script ran too long without yielding (limits.script_timeout)"), "an overdue loop is stopped: %s", buf);
    ok(took >= 0.1 && took < 30, "not before its deadline (%.2f s)", took);
    ok(lua_gethook(L) == NULL, "the hook is cleared when the run ends");

    /* a compiled loop that allocates: the allocator refuses past the deadline */
    run(L, &g, "local t, i = {}, 0 while true do i = i + 1 t[i % 64 + 1] = { i } end", 0.1, NULL, buf, sizeof buf);
    ok(has(buf, "not enough memory") || has(buf, "script ran too long"), "an allocating loop is stopped: %s", buf);

    /* the grace: a pcall that catches the first stop may go on for a moment, then every
     * instruction raises, so a loop swallowing errors cannot go on */
    run(L, &g,
        "local n = 0 while true do pcall(function() local s = 'a=b' while true do s:find('(%w)=(%w)') end end) n = n + 1 end",
        0.1, &took, buf, sizeof buf);
    ok(has(buf, "script ran too long"), "a loop that catches every stop ends after the grace: %s", buf);
    run(L, &g, "local ok, e = pcall(function() local s = 'a=b' while true do s:find('(%w)=(%w)') end end) caught = tostring(e)",
        0.1, NULL, buf, sizeof buf);
    is_str(buf, "ok", "a handler that catches the stop finishes within its grace");
    lua_getglobal(L, "caught");
    ok(has(lua_tostring(L, -1), "script ran too long"), "it caught the watchdog's error");
    lua_pop(L, 1);

    /* nested runs: the inner one ends on time and the outer deadline holds again */
    {
        lua_guard_run outer, inner;
        lua_watch *w = lua_watch_self();
        double t0 = lua_guard_now();
        lua_guard_run_begin(&g, &outer, L, t0 + 100, "outer");
        lua_guard_run_begin(&g, &inner, L, t0 + 1, "inner");
        ok(atomic_load(&w->deadline) == t0 + 1, "the inner run's deadline is watched");
        lua_guard_run_end(&g, &inner);
        ok(atomic_load(&w->deadline) == t0 + 100, "the outer deadline is back after the inner run");
        is_str((const char *)atomic_load(&w->ctx), "outer", "and its ctx");
        lua_guard_run_end(&g, &outer);
        ok(atomic_load(&w->deadline) == 0, "no deadline outside a run");
    }

    /* lua_watch_overdue's grace */
    {
        lua_watch *w = lua_watch_self();
        lua_watch_saved sv;
        double now = lua_guard_now();
        int first = -1;
        lua_watch_begin(w, &sv, L, now - 1, NULL);
        ok(lua_watch_overdue(w, now, &first) && first == 1, "first overdue check grants the grace");
        ok(!lua_watch_overdue(w, now + LUA_WATCHDOG_GRACE / 2, &first), "within the grace: not overdue");
        ok(lua_watch_overdue(w, now + LUA_WATCHDOG_GRACE * 2, &first) && first == 0, "after it: overdue, no new grace");
        ok(lua_watch_overdue(w, now + 10, &first) && first == 0, "and from then on");
        lua_watch_end(w, &sv);
    }

    /* interpreter only (limits.jit = false): even `while true do end` is stopped */
    {
        lua_guard g2;
        lua_State *L2 = newstate(&g2, 0);
        run(L2, &g2, "while true do end", 0.1, NULL, buf, sizeof buf);
        ok(has(buf, "script ran too long"), "with the JIT off, `while true do end` is stopped: %s", buf);
        lua_guard_close(L2, &g2);
    }
    ok(atomic_load(&stuck_calls) == 0, "nothing so far was judged stuck");

    /* stuck in compiled code, on a thread of its own (it never comes back): judged stuck once,
     * after the deadline plus LUA_WATCHDOG_STUCK, with the run's description */
    {
        static lua_guard g3;
        stuck_arg a = {newstate(&g3, 1), &g3};
        pthread_t t;
        double t0 = lua_guard_now();
        pthread_create(&t, NULL, stuck_thread, &a);
        for (int i = 0; i < 3000 && !atomic_load(&stuck_calls); i++) usleep(10000);
        double late = lua_guard_now() - t0;
        is_int(atomic_load(&stuck_calls), 1, "a run stuck in a trace is judged stuck");
        ok(late >= 0.2 + LUA_WATCHDOG_STUCK * 0.9, "not before its deadline plus %.1f s (%.2f s)", LUA_WATCHDOG_STUCK, late);
        ok(has(stuck_msg, "thread stuck-test: a Lua run (local x = 0 for i = 1, 1e15") &&
               has(stuck_msg, "JIT-compiled code that never returns to the interpreter"),
           "the message names the thread and the run: %s", stuck_msg);
        usleep(300000);
        is_int(atomic_load(&stuck_calls), 1, "and only once");
        /* the thread spins on; the process ends without joining it */
    }

    lua_guard_close(L, &g);
    fflush(stdout);
    int rc = tap_done();
    fflush(stdout);
    _exit(rc);          /* the stuck thread cannot be joined (nor its state closed) */
}
