/* test_timerwheel.c: unit tests for core/timerwheel (ordering, cancel, re-arm, clock jumps, brute-force model). */
#include "timerwheel.h"
#include "tap.h"

#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#define container_of(p, T, m) ((T *)((char *)(p) - offsetof(T, m)))

typedef struct item {
    int id;
    tw_entry timer;
    int fired;
    uint64_t fired_at;       /* wheel time when fired */
    struct item *victim;     /* cancelled by this item's callback, if set */
    uint64_t period;         /* re-armed by its callback when non-zero */
} item;

static timerwheel *g_tw;
static int g_log[64], g_nlog;

static void on_fire(tw_entry *e)
{
    item *it = container_of(e, item, timer);
    it->fired++;
    it->fired_at = timerwheel_now(g_tw);
    if (g_nlog < 64) g_log[g_nlog++] = it->id;
    if (it->victim) tw_entry_cancel(&it->victim->timer);
    if (it->period) timerwheel_add(g_tw, e, e->at + it->period);
}

static void test_ordering(void)
{
    item it[6] = {{0}};
    uint64_t at[6] = {1050, 1001, 1070, 1001 + 4096, 1200, 1065};
    g_tw = timerwheel_new(1000);
    for (int i = 0; i < 6; i++) {
        it[i].id = i;
        tw_entry_init(&it[i].timer, on_fire);
        timerwheel_add(g_tw, &it[i].timer, at[i]);
    }
    is_int(timerwheel_count(g_tw), 6, "count after 6 adds");
    is_int(timerwheel_next(g_tw, 1000), 1001, "next is the earliest deadline");
    is_int(timerwheel_run(g_tw, 1000), 0, "nothing fires before its time");
    is_int(timerwheel_run(g_tw, 1000 + 69), 3, "run to 1069 fires the 3 due");
    is_int(timerwheel_next(g_tw, 1069), 1070, "next after partial run");
    g_nlog = 0;
    is_int(timerwheel_run(g_tw, 1000000), 3, "a long run fires the rest");
    ok(g_nlog == 3 && g_log[0] == 2 && g_log[1] == 4 && g_log[2] == 3,
       "fired in deadline order within one run (got %d %d %d)", g_log[0], g_log[1], g_log[2]);
    int exact = 1;
    for (int i = 0; i < 6; i++) exact &= it[i].fired == 1 && it[i].fired_at == at[i];
    ok(exact, "each entry fired once, at its exact deadline (wheel time)");
    is_int(timerwheel_count(g_tw), 0, "count back to 0");
    is_int((long long)(timerwheel_next(g_tw, 1000000) == UINT64_MAX), 1, "next on empty wheel is UINT64_MAX");
    timerwheel_free(g_tw);
}

static void test_cancel(void)
{
    item a = {.id = 1}, b = {.id = 2}, c = {.id = 3}, d = {.id = 4};
    g_tw = timerwheel_new(0);
    tw_entry_init(&a.timer, on_fire);
    tw_entry_init(&b.timer, on_fire);
    tw_entry_init(&c.timer, on_fire);
    tw_entry_init(&d.timer, on_fire);
    timerwheel_add(g_tw, &a.timer, 100);
    timerwheel_add(g_tw, &b.timer, 100); /* same deadline, cancelled by a */
    timerwheel_add(g_tw, &c.timer, 5000); /* later, higher level, cancelled by a */
    timerwheel_add(g_tw, &d.timer, 50);
    a.victim = &b;
    tw_entry_cancel(&d.timer);
    tw_entry_cancel(&d.timer);
    ok(!tw_entry_linked(&d.timer), "cancel is idempotent and unlinks");
    is_int(timerwheel_count(g_tw), 3, "count after cancel");
    is_int(timerwheel_run(g_tw, 99), 0, "cancelled entry does not fire");
    is_int(timerwheel_run(g_tw, 100), 1, "a fires and cancels b (same slot, already due)");
    is_int(b.fired, 0, "b never fired");
    a.victim = &c;
    timerwheel_add(g_tw, &a.timer, 200);
    is_int(timerwheel_run(g_tw, 10000), 1, "a cancels c (far slot) from its callback");
    is_int(c.fired, 0, "c never fired");
    is_int(timerwheel_count(g_tw), 0, "count 0");
    /* Moving an entry re-arms it. */
    a.victim = NULL;
    timerwheel_add(g_tw, &a.timer, 20000);
    timerwheel_add(g_tw, &a.timer, 30000);
    is_int(timerwheel_count(g_tw), 1, "moving an entry keeps count 1");
    is_int(timerwheel_run(g_tw, 29999), 0, "moved entry not fired at its old deadline");
    is_int(timerwheel_run(g_tw, 30000), 1, "moved entry fires at its new deadline");
    /* Free with linked entries; a later cancel must be harmless (ASan checks). */
    timerwheel_add(g_tw, &a.timer, 40000);
    timerwheel_add(g_tw, &b.timer, 10);
    timerwheel_free(g_tw);
    ok(!tw_entry_linked(&a.timer) && !tw_entry_linked(&b.timer), "free unlinks remaining entries");
    tw_entry_cancel(&a.timer);
}

static void test_periodic(void)
{
    item hb = {.id = 1, .period = 30000};
    g_tw = timerwheel_new(0);
    tw_entry_init(&hb.timer, on_fire);
    timerwheel_add(g_tw, &hb.timer, 30000);
    size_t n = 0;
    for (uint64_t t = 0; t <= 300000; t += 1000) n += timerwheel_run(g_tw, t);
    is_int(n, 10, "heartbeat re-armed from its callback fires every 30 s (stepped clock)");
    is_int(hb.fired_at, 300000, "last beat at 300 s");
    is_int(timerwheel_run(g_tw, 600000), 10, "one jump of 300 s catches up 10 beats");
    ok(tw_entry_linked(&hb.timer) && hb.timer.at == 630000, "still armed for the next beat");
    /* A callback re-arming itself in the past must not loop: it waits for the next run. */
    hb.period = 0;
    timerwheel_add(g_tw, &hb.timer, 600000);
    is_int(timerwheel_run(g_tw, 600000), 1, "entry at <= now fires at the next run");
    timerwheel_free(g_tw);
}

static item *g_self;
static void rearm_past(tw_entry *e)
{
    g_self->fired++;
    timerwheel_add(g_tw, e, 0);
}

static void test_rearm_past(void)
{
    item it = {0};
    g_tw = timerwheel_new(100);
    g_self = &it;
    tw_entry_init(&it.timer, rearm_past);
    timerwheel_add(g_tw, &it.timer, 150);
    is_int(timerwheel_run(g_tw, 200), 1, "self re-arm into the past: fired once this run");
    is_int(timerwheel_next(g_tw, 200), 0, "next reports the overdue deadline");
    is_int(timerwheel_run(g_tw, 200), 1, "and once more on the next run");
    timerwheel_free(g_tw);
}

static double mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void test_jumps(void)
{
    enum { N = 10000 };
    static item it[N];
    uint64_t t0 = 1700000000000ull; /* a realistic epoch-ms start */
    g_tw = timerwheel_new(t0);
    for (int i = 0; i < N; i++) {
        it[i] = (item){.id = i};
        tw_entry_init(&it[i].timer, on_fire);
        timerwheel_add(g_tw, &it[i].timer, t0 + 1 + (uint64_t)i * 3600 * 1000); /* 1 per hour */
    }
    double start = mono_ms();
    is_int(timerwheel_run(g_tw, t0 + 5ull * 3600 * 1000), 5, "jump of 5 h fires exactly the 5 due");
    size_t n = timerwheel_run(g_tw, t0 + 20ull * 365 * 24 * 3600 * 1000); /* 20 years */
    double took = mono_ms() - start;
    is_int(n, N - 5, "jump of 20 years fires the rest");
    /* a wheel that stepped through elapsed milliseconds would take 6e11 steps here (hours); entries
     * cost well under a second even under a sanitizer on a loaded machine */
    ok(took < 5000, "jumps cost entries, not elapsed ms (%.2f ms)", took);
    int late = 0;
    for (int i = 0; i < N; i++) late += it[i].fired != 1 || it[i].fired_at != it[i].timer.at;
    is_int(late, 0, "each fired once, at its own deadline");

    /* Deadlines at the top of the range. */
    item far = {.id = 1};
    tw_entry_init(&far.timer, on_fire);
    timerwheel_add(g_tw, &far.timer, UINT64_MAX - 1);
    is_int(timerwheel_next(g_tw, 0), UINT64_MAX - 1, "next for a deadline near UINT64_MAX");
    is_int(timerwheel_run(g_tw, UINT64_MAX - 2), 0, "not fired one ms early");
    is_int(timerwheel_run(g_tw, UINT64_MAX - 1), 1, "fired at UINT64_MAX - 1");
    timerwheel_free(g_tw);
}

/* ---- brute-force model: 100k random entries, random clock steps, cancels and moves ---- */

enum { M = 100000 };
static item mi[M];
static uint64_t m_want[M]; /* model deadline, 0 = not armed */
static uint64_t m_prev_now, m_now, m_last_at_in_run;
static long m_errors_early, m_errors_late, m_errors_order, m_errors_dup;

static void on_model(tw_entry *e)
{
    item *it = container_of(e, item, timer);
    int i = it->id;
    if (m_want[i] == 0) m_errors_dup++;
    if (e->at > m_now) m_errors_early++;
    if (e->at <= m_prev_now) m_errors_late++; /* was due at an earlier run */
    if (e->at < m_last_at_in_run) m_errors_order++;
    m_last_at_in_run = e->at;
    it->fired++;
    m_want[i] = 0;
}

static uint64_t rnd(void)
{
    static uint64_t s = 0x9E3779B97F4A7C15ull;
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
}

static uint64_t rnd_delay(void)
{
    switch (rnd() % 4) {
    case 0: return 1 + rnd() % 64;            /* level 0 */
    case 1: return 1 + rnd() % 5000;          /* a few seconds */
    case 2: return 1 + rnd() % 600000;        /* minutes */
    default: return 1 + rnd() % 86400000ull;  /* a day */
    }
}

static void test_model(void)
{
    uint64_t t = 123456789;
    g_tw = timerwheel_new(t);
    m_now = m_prev_now = t;
    size_t armed = 0, fired_total = 0, model_fired = 0;
    for (int i = 0; i < M; i++) {
        mi[i] = (item){.id = i};
        tw_entry_init(&mi[i].timer, on_model);
        m_want[i] = t + rnd_delay();
        timerwheel_add(g_tw, &mi[i].timer, m_want[i]);
        armed++;
    }
    int count_ok = 1, next_ok = 1, step;
    long next_exact = 0, next_checks = 0;
    for (step = 0; step < 1000 && armed; step++) {
        /* cancel or move a few entries */
        for (int k = 0; k < 20; k++) {
            int i = (int)(rnd() % M);
            if (rnd() % 2) {
                if (m_want[i]) armed--;
                tw_entry_cancel(&mi[i].timer);
                m_want[i] = 0;
            } else {
                if (!m_want[i]) armed++;
                m_want[i] = t + rnd_delay();
                timerwheel_add(g_tw, &mi[i].timer, m_want[i]);
            }
        }
        uint64_t step_ms = rnd() % 8 == 0 ? rnd() % 3600000 : rnd() % 2000;
        m_prev_now = t;
        t += step_ms;
        m_now = t;
        m_last_at_in_run = 0;
        size_t n = timerwheel_run(g_tw, t);
        fired_total += n;
        for (int i = 0; i < M; i++) /* model: what should have fired */
            if (m_want[i] && m_want[i] <= t) m_errors_late++;
        armed -= n;
        count_ok &= timerwheel_count(g_tw) == armed;
        if (step % 100 == 0) {
            uint64_t min = UINT64_MAX;
            for (int i = 0; i < M; i++)
                if (m_want[i] && m_want[i] < min) min = m_want[i];
            uint64_t nx = timerwheel_next(g_tw, t);
            next_ok &= nx <= min && nx > t;
            next_checks++;
            next_exact += nx == min;
        }
    }
    printf("# model: %d runs, %zu fired during them, %zu still armed\n", step, fired_total, armed);
    ok(step == 1000 && fired_total > M / 2, "model: the random schedule exercised many runs and fires");
    m_prev_now = t;
    m_now = UINT64_MAX - 1;
    m_last_at_in_run = 0;
    fired_total += timerwheel_run(g_tw, UINT64_MAX - 1);
    for (int i = 0; i < M; i++) model_fired += (size_t)mi[i].fired;
    is_int(m_errors_early, 0, "model: nothing fired early");
    is_int(m_errors_late, 0, "model: nothing fired late (all due entries fired by the run that reached them)");
    is_int(m_errors_order, 0, "model: deadline order within each run");
    is_int(m_errors_dup, 0, "model: no entry fired twice or after cancel");
    ok(count_ok, "model: count matches after every run");
    ok(next_ok, "model: next() <= true earliest deadline and > now");
    ok(next_exact * 2 >= next_checks, "model: next() exact in most checks despite cancels (%ld/%ld)", next_exact, next_checks);
    is_int(fired_total, model_fired, "fired count equals callback count");
    is_int(timerwheel_count(g_tw), 0, "empty at the end");
    timerwheel_free(g_tw);
}

static void noop(tw_entry *e) { (void)e; }

static void bench(void)
{
    enum { N = 100000 };
    static tw_entry e[N];
    timerwheel *tw = timerwheel_new(0);
    double start = mono_ms();
    for (int r = 0; r < 10; r++)
        for (int i = 0; i < N; i++) {
            if (r == 0) tw_entry_init(&e[i], noop);
            timerwheel_add(tw, &e[i], 1 + rnd() % 60000); /* re-arm = the idle-timeout pattern */
        }
    double add_ns = (mono_ms() - start) * 1e6 / (10.0 * N);
    start = mono_ms();
    size_t n = 0;
    for (uint64_t t = 0; t <= 60000; t += 10) n += timerwheel_run(tw, t);
    double run_ms = mono_ms() - start;
    printf("# bench: add/move %.0f ns each; running 60 s of 10 ms ticks with 100k entries: %.1f ms\n", add_ns, run_ms);
    is_int(n, N, "bench: every entry fired");
    timerwheel_free(tw);
}

int main(void)
{
    test_ordering();
    test_cancel();
    test_periodic();
    test_rearm_past();
    test_jumps();
    test_model();
    bench();
    return tap_done();
}
