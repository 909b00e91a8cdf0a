/* lua_watchdog.c: the watchdog thread, the signal handler that arms the hook on an overdue run,
 * and the last resort for a run stuck in compiled code (see lua_watchdog.h). */
#include "lua_watchdog.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include "log.h"

/* SIGURG: ignored by default and sent by nothing else in sluice (Go's runtime preempts with it
 * for the same reasons). Delivered only to a thread whose run is overdue. */
#define WATCH_SIGNAL SIGURG
#define WATCH_MAX 1024
/* Polling: while a run is overdue, every 20 ms (the samples); otherwise until the earliest
 * deadline of the runs in progress, at most 100 ms (a run starting meanwhile has its whole
 * timeout ahead) and at least 5 ms. So a run is noticed within ~5 ms of its deadline, and an
 * idle server wakes the watchdog 10 times a second. */
#define TICK_OVERDUE 0.020
#define TICK_IDLE 0.100
#define TICK_MIN 0.005
/* Samples in compiled code, with no hook call in between, before a run counts as stuck. */
#define STUCK_SAMPLES 10
#define NRANGES 2048       /* LuaJIT maps its machine code in areas of 64 KB, up to maxmcode */

enum { SAMPLE_NONE, SAMPLE_JIT, SAMPLE_OTHER };

static __thread lua_watch self;
static lua_watch *watches[WATCH_MAX];
static int nwatches;
static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t start_once = PTHREAD_ONCE_INIT;
static pthread_key_t exit_key;
static _Atomic(lua_Hook) the_hook;
static void (*_Atomic describe_fn)(void *, char *, size_t);
static void (*_Atomic stuck_fn)(const char *);

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);    /* async-signal-safe, a vDSO read */
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---------------------------------------------------------------- where compiled code lives */

/* LuaJIT's machine code sits in anonymous executable mappings (its mcode areas); everything
 * else that executes (the interpreter, libc, C modules) is file-backed. The watchdog reads
 * /proc/self/maps (sorted by address) before each round of signals; the handler only searches.
 * Two buffers, so a handler never reads one being rewritten. */
typedef struct { _Atomic uintptr_t lo, hi; } range;      /* atomics: read by other threads' handlers */
static range ranges[2][NRANGES];
static _Atomic int nranges[2];
static _Atomic int cur_ranges;

static void refresh_ranges(void)
{
    int next = !atomic_load(&cur_ranges), n = 0;
    FILE *f = fopen("/proc/self/maps", "re");
    if (!f) return;
    char line[512];
    while (n < NRANGES && fgets(line, sizeof line, f)) {
        unsigned long lo, hi, off, inode;
        char perms[8], dev[32];
        int end = 0;
        if (sscanf(line, "%lx-%lx %7s %lx %31s %lu %n", &lo, &hi, perms, &off, dev, &inode, &end) < 6) continue;
        if (perms[2] != 'x' || !end || line[end] != '\0') continue;    /* a file, [vdso], ... */
        atomic_store_explicit(&ranges[next][n].lo, lo, memory_order_relaxed);
        atomic_store_explicit(&ranges[next][n].hi, hi, memory_order_relaxed);
        n++;
    }
    fclose(f);
    atomic_store(&nranges[next], n);
    atomic_store(&cur_ranges, next);
}

static int in_compiled_code(const void *ucv)
{
    const ucontext_t *uc = ucv;
    uintptr_t pc;
#if defined(__x86_64__)
    pc = (uintptr_t)uc->uc_mcontext.gregs[REG_RIP];
#elif defined(__aarch64__)
    pc = (uintptr_t)uc->uc_mcontext.pc;
#else
    (void)uc;
    return 0;           /* unknown machine: never judged stuck, the guard only waits */
#endif
    int c = atomic_load(&cur_ranges), lo = 0, hi = atomic_load(&nranges[c]);
    while (lo < hi) {               /* the last range starting at or below pc */
        int mid = lo + (hi - lo) / 2;
        if (atomic_load_explicit(&ranges[c][mid].lo, memory_order_relaxed) <= pc) lo = mid + 1;
        else hi = mid;
    }
    return lo > 0 && pc < atomic_load_explicit(&ranges[c][lo - 1].hi, memory_order_relaxed);
}

/* ---------------------------------------------------------------- on the running thread */

/* Runs on the thread whose run is overdue: look where it is, and set the hook (count 1 plus
 * call and return, as luajit.c's Ctrl-C handler: it fires at the next interpreted instruction,
 * call, return or trace exit). */
static void on_signal(int sig, siginfo_t *si, void *ucv)
{
    (void)sig;
    (void)si;
    lua_watch *w = &self;
    if (w->registered <= 0) return;
    int saved_errno = errno;
    atomic_store_explicit(&w->sample, in_compiled_code(ucv) ? SAMPLE_JIT : SAMPLE_OTHER, memory_order_relaxed);
    lua_State *L = atomic_load_explicit(&w->L, memory_order_relaxed);
    double dl = atomic_load_explicit(&w->deadline, memory_order_relaxed);
    lua_Hook hook = atomic_load_explicit(&the_hook, memory_order_relaxed);
    if (L && hook && dl > 0 && now_s() > dl) {
        int again = atomic_exchange_explicit(&w->rearm, 0, memory_order_relaxed);
        if (again || !atomic_load_explicit(&w->armed, memory_order_relaxed)) {
            /* setting the hook from here may race with LuaJIT updating its dispatch table for
             * the recorder; clearing it first makes LuaJIT rewrite the whole table */
            if (again) lua_sethook(L, NULL, 0, 0);
            lua_sethook(L, hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
            atomic_store_explicit(&w->armed, 1, memory_order_relaxed);
        }
    }
    errno = saved_errno;
}

void lua_watch_begin(lua_watch *w, lua_watch_saved *save, lua_State *L, double deadline, void *ctx)
{
    save->deadline = atomic_load_explicit(&w->deadline, memory_order_relaxed);
    save->L = atomic_load_explicit(&w->L, memory_order_relaxed);
    save->ctx = atomic_load_explicit(&w->ctx, memory_order_relaxed);
    save->graced = w->graced;
    /* the deadline goes first: the handler acts only on a deadline it sees passed */
    atomic_store_explicit(&w->deadline, 0, memory_order_relaxed);
    atomic_signal_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&w->armed, memory_order_relaxed)) {     /* nested in an overdue run */
        lua_sethook(save->L, NULL, 0, 0);
        atomic_store_explicit(&w->armed, 0, memory_order_relaxed);
    }
    atomic_store_explicit(&w->L, L, memory_order_relaxed);
    atomic_store_explicit(&w->ctx, ctx, memory_order_relaxed);
    atomic_store_explicit(&w->late, 0, memory_order_relaxed);
    w->graced = 0;
    atomic_store_explicit(&w->run, atomic_load_explicit(&w->run, memory_order_relaxed) + 1, memory_order_relaxed);
    atomic_signal_fence(memory_order_seq_cst);
    atomic_store_explicit(&w->deadline, deadline, memory_order_release);
}

void lua_watch_end(lua_watch *w, const lua_watch_saved *save)
{
    atomic_store_explicit(&w->deadline, 0, memory_order_relaxed);
    atomic_signal_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&w->armed, memory_order_relaxed)) {
        lua_sethook(atomic_load_explicit(&w->L, memory_order_relaxed), NULL, 0, 0);
        atomic_store_explicit(&w->armed, 0, memory_order_relaxed);
    }
    atomic_store_explicit(&w->L, save->L, memory_order_relaxed);
    atomic_store_explicit(&w->ctx, save->ctx, memory_order_relaxed);
    w->graced = save->graced;
    if (save->deadline > 0)      /* the outer run goes on: the watchdog starts counting afresh */
        atomic_store_explicit(&w->run, atomic_load_explicit(&w->run, memory_order_relaxed) + 1, memory_order_relaxed);
    atomic_signal_fence(memory_order_seq_cst);
    atomic_store_explicit(&w->deadline, save->deadline, memory_order_release);
}

int lua_watch_overdue(lua_watch *w, double now, int *first)
{
    double dl = atomic_load_explicit(&w->deadline, memory_order_relaxed);
    if (dl <= 0 || now <= dl) return 0;
    if (first) *first = !w->graced;
    if (!w->graced) {
        w->graced = 1;
        atomic_store_explicit(&w->deadline, now + LUA_WATCHDOG_GRACE, memory_order_relaxed);
    }
    return 1;
}

/* ---------------------------------------------------------------- the watchdog thread */

static void default_stuck(const char *msg)
{
    log_msg(LOG_ERROR, "%s", msg);
    _exit(LUA_WATCHDOG_EXIT);
}

static void last_resort(lua_watch *w, double late)
{
    char what[300] = "", name[32] = "?", msg[1200];
    void *ctx = atomic_load(&w->ctx);
    void (*describe)(void *, char *, size_t) = atomic_load(&describe_fn);
    if (describe && ctx) describe(ctx, what, sizeof what);
    pthread_getname_np(w->tid, name, sizeof name);
    snprintf(msg, sizeof msg,
             "thread %s: a Lua run%s%s%s is still going %.1f s after its deadline (limits.script_timeout), in "
             "JIT-compiled code that never returns to the interpreter, where the watchdog's hook cannot stop it (a "
             "loop such as `while true do end`, or one whose body and callees are all compiled); ending the process "
             "with status %d for its supervisor to restart it (docs/operations.md, \"Runaway Lua\")",
             name, what[0] ? " (" : "", what, what[0] ? ")" : "", late, LUA_WATCHDOG_EXIT);
    void (*fn)(const char *) = atomic_load(&stuck_fn);
    (fn ? fn : default_stuck)(msg);
}

/* One look at an overdue run: did the hook make progress, where was the thread last time. */
static void check(lua_watch *w, double now)
{
    unsigned run = atomic_load_explicit(&w->run, memory_order_relaxed);
    unsigned hooks = atomic_load_explicit(&w->hooks, memory_order_relaxed);
    int sample = atomic_exchange_explicit(&w->sample, SAMPLE_NONE, memory_order_relaxed);
    if (run != w->seen_run) {           /* newly overdue */
        w->seen_run = run;
        w->seen_hooks = hooks;
        w->jit_samples = 0;
        w->quiet_since = w->rearmed_at = now;
        return;
    }
    if (w->jit_samples < 0) return;      /* reported already */
    if (hooks != w->seen_hooks) {       /* the hook runs: it will stop the run */
        w->seen_hooks = hooks;
        w->jit_samples = 0;
        w->quiet_since = now;
        return;
    }
    if (sample == SAMPLE_JIT) {
        w->jit_samples++;
    } else if (sample == SAMPLE_OTHER && atomic_load_explicit(&w->armed, memory_order_relaxed) &&
               now - w->rearmed_at >= 0.25) {
        /* in a long C call, or the hook got lost in a race with the recorder: set it afresh */
        atomic_store_explicit(&w->rearm, 1, memory_order_relaxed);
        w->rearmed_at = now;
    }
    if (w->jit_samples >= STUCK_SAMPLES && now - w->quiet_since >= LUA_WATCHDOG_STUCK) {
        w->jit_samples = -1;
        last_resort(w, now - w->quiet_since);
    }
}

static void *watchdog_main(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "sluice-watchdog");
    double wait = TICK_IDLE;
    for (;;) {
        struct timespec ts = {0, (long)(wait * 1e9)};
        nanosleep(&ts, NULL);
        double now = now_s();
        int refreshed = 0;
        wait = TICK_IDLE;
        pthread_mutex_lock(&reg_lock);
        for (int i = 0; i < nwatches; i++) {
            lua_watch *w = watches[i];
            double dl = atomic_load_explicit(&w->deadline, memory_order_acquire);
            if (dl <= 0) continue;
            if (now <= dl) {
                if (dl - now < wait) wait = dl - now;
                continue;
            }
            if (!refreshed) { refresh_ranges(); refreshed = 1; }
            atomic_store_explicit(&w->late, 1, memory_order_relaxed);
            check(w, now);
            pthread_kill(w->tid, WATCH_SIGNAL);    /* registered threads unregister under reg_lock */
            wait = TICK_OVERDUE < wait ? TICK_OVERDUE : wait;
        }
        pthread_mutex_unlock(&reg_lock);
        if (wait < TICK_MIN) wait = TICK_MIN;
    }
    return NULL;
}

static void unregister(void *p)
{
    lua_watch *w = p;
    pthread_mutex_lock(&reg_lock);
    for (int i = 0; i < nwatches; i++)
        if (watches[i] == w) { watches[i] = watches[--nwatches]; break; }
    w->registered = 0;
    pthread_mutex_unlock(&reg_lock);
}

static void start(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_signal;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(WATCH_SIGNAL, &sa, NULL);
    pthread_key_create(&exit_key, unregister);
    /* the watchdog takes no signals: it is created with all of them blocked */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    pthread_t t;
    if (pthread_create(&t, &attr, watchdog_main, NULL) != 0)
        log_msg(LOG_ERROR, "cannot start the Lua watchdog thread: limits.script_timeout holds only for allocations");
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

lua_watch *lua_watch_self(void)
{
    lua_watch *w = &self;
    if (w->registered) return w;
    pthread_once(&start_once, start);
    w->tid = pthread_self();
    pthread_mutex_lock(&reg_lock);
    int ok = nwatches < WATCH_MAX;
    if (ok) watches[nwatches++] = w;
    w->registered = ok ? 1 : -1;
    pthread_mutex_unlock(&reg_lock);
    if (ok) pthread_setspecific(exit_key, w);
    else log_msg(LOG_WARN, "more than %d threads run Lua: the watchdog does not watch this one", WATCH_MAX);
    return w;
}

void lua_watchdog_set_hook(lua_Hook hook) { atomic_store(&the_hook, hook); }
void lua_watchdog_set_describe(void (*fn)(void *ctx, char *out, size_t outlen)) { atomic_store(&describe_fn, fn); }
void lua_watchdog_set_stuck(void (*fn)(const char *msg)) { atomic_store(&stuck_fn, fn); }
