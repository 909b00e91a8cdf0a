/* lua_watchdog.h: the process's Lua watchdog: a thread that stops Lua runs past their deadline
 * while the JIT stays on, and ends the process when a run is stuck where nothing can stop it.
 *
 * Why a thread and a signal: an instruction hook that is always set keeps LuaJIT in its
 * interpreter, and a timer on the worker's own loop cannot fire while Lua runs. So no hook is
 * set while runs are on time; a thread polls each running thread's deadline (plain loads: a
 * run costs no system call), and for an overdue run it signals the running thread, whose
 * handler sets the hook (lua_sethook is meant to be called asynchronously; luajit.c's Ctrl-C
 * does the same). The hook then fires at the next interpreted instruction or trace exit.
 *
 * The limit: compiled code that never leaves its trace (`while true do end`, `for i = 1, 1e12
 * do x = x + i end`, a loop whose callees are inlined) never looks at the hook, and LuaJIT
 * offers no way to stop it from outside. The handler also samples the interrupted program
 * counter: when the hook has not run for LUA_WATCHDOG_STUCK seconds and the samples keep
 * landing in JIT-compiled machine code (anonymous executable memory), the thread can never be
 * recovered: its state is mid-trace and it cannot be killed alone. The last resort then logs
 * which run it was and ends the process with status LUA_WATCHDOG_EXIT, for its supervisor to
 * restart (docs/operations.md). A long C call (no Lua, samples elsewhere) is never judged
 * stuck: it runs to its end as before.
 *
 * Each thread that runs guarded Lua owns one lua_watch (thread-local; lua_watch_self). Only
 * that thread writes its run fields; the signal handler (on the same thread) writes sample and
 * armed; the watchdog thread reads. */
#ifndef SLUICE_LUA_WATCHDOG_H
#define SLUICE_LUA_WATCHDOG_H

#include <lua.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

/* Seconds without a hook call, with the thread sampled in compiled code, before a run counts as
 * stuck; and the exit status of the last resort (EX_SOFTWARE). */
#define LUA_WATCHDOG_STUCK 1.0
#define LUA_WATCHDOG_EXIT 70
/* Grace after the first stop, for a handler that catches the error to answer. */
#define LUA_WATCHDOG_GRACE 0.05

typedef struct lua_watch {
    _Atomic double deadline;     /* the current run's (monotonic s), after any grace; 0 = no run */
    _Atomic unsigned run;        /* bumped at every run start */
    _Atomic unsigned hooks;      /* hook calls: progress the hook can stop */
    lua_State *_Atomic L;        /* state of the current run */
    void *_Atomic ctx;           /* what the run is (lua_watchdog_set_describe) */
    _Atomic int armed;           /* the signal handler set the hook on L */
    _Atomic int sample;          /* the handler's last look at the program counter */
    _Atomic int rearm;           /* the watchdog asks the handler to set the hook afresh */
    _Atomic int late;            /* the watchdog saw the run overdue: allocations look at the clock */
    int graced;                  /* this run was stopped once: its grace is used */
    /* the watchdog thread's bookkeeping */
    pthread_t tid;
    int registered;
    unsigned seen_run, seen_hooks;
    int jit_samples;
    double quiet_since, rearmed_at;
} lua_watch;

/* Saved by lua_watch_begin for the run it nests in. */
typedef struct lua_watch_saved {
    double deadline;
    lua_State *L;
    void *ctx;
    int graced;
} lua_watch_saved;

/* This thread's record. The first call registers it with the watchdog (starting the watchdog
 * thread and its signal handler once per process). Never NULL. */
lua_watch *lua_watch_self(void);

/* A run of L starts on this thread with a deadline (monotonic seconds, 0 = none); ctx says what
 * it is. The previous run, if this one nests in it, goes into *save. No system call. */
void lua_watch_begin(lua_watch *w, lua_watch_saved *save, lua_State *L, double deadline, void *ctx);
/* The run ends: clears the hook if the watchdog set it, and restores the run it nested in. */
void lua_watch_end(lua_watch *w, const lua_watch_saved *save);

/* 1 when the run is past its deadline. The first time in a run it grants the grace (the new
 * deadline is now + LUA_WATCHDOG_GRACE) and sets *first; after the grace every call says 1. */
int lua_watch_overdue(lua_watch *w, double now, int *first);

/* The hook the watchdog sets on an overdue run's state (lua_guard_hook); set before any run. */
void lua_watchdog_set_hook(lua_Hook hook);
/* Writes what a run's ctx is ("GET /path") for the last-resort message; called on the
 * watchdog thread while the run's thread is stuck. */
void lua_watchdog_set_describe(void (*fn)(void *ctx, char *out, size_t outlen));
/* Replaces the last resort (default: log the message at error level, _exit(LUA_WATCHDOG_EXIT)).
 * For tests; fn runs on the watchdog thread, once per stuck run. */
void lua_watchdog_set_stuck(void (*fn)(const char *msg));

#endif
