/* test_workpool: jobs run off the loop and complete on it, the loop keeps serving meanwhile,
 * the queue bound, withdrawing an inbox's jobs, and the shared pool's one-time creation. */
#include "workpool.h"

#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "tap.h"

typedef struct job {
    wp_job j;
    int in, out;
    atomic_int ran;
    int done;
    pthread_t done_thread;
    sem_t *gate;                 /* run() waits on it when set */
    int nice;                    /* the pool thread's nice value while it ran */
} job;

static struct ev_loop *loop;
static int ndone, want;

static void sq_run(wp_job *w)
{
    job *j = (job *)w;
    if (j->gate) sem_wait(j->gate);
    j->nice = getpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid));
    j->out = j->in * j->in;
    atomic_store(&j->ran, 1);
}

static void sq_done(wp_job *w)
{
    job *j = (job *)w;
    j->done++;
    j->done_thread = pthread_self();
    if (++ndone == want) ev_break(loop, EVBREAK_ALL);
}

static void job_init(job *j, int in, sem_t *gate)
{
    memset(j, 0, sizeof *j);
    j->j.run = sq_run;
    j->j.done = sq_done;
    j->in = in;
    j->gate = gate;
}

static void deadline_cb(struct ev_loop *l, ev_timer *t, int revents) { ev_break(l, EVBREAK_ALL); }

/* Runs the loop until want completions arrived or 30 s passed (a hang is a failure, not a wait). */
static void run_until(int n)
{
    want = n;
    if (ndone >= want) return;
    ev_timer dl;
    ev_timer_init(&dl, deadline_cb, 30, 0);
    ev_timer_start(loop, &dl);
    ev_run(loop, 0);
    ev_timer_stop(loop, &dl);
}

/* the gate opens once the loop has served three timer ticks */
static sem_t tick_gate;
static int ticks;
static void tick_cb(struct ev_loop *l, ev_timer *t, int revents)
{
    if (++ticks == 3) sem_post(&tick_gate);
}

struct poster_arg {
    workpool *p;
    sem_t *sem;
};
static void *post_when_empty(void *arg)
{
    struct poster_arg *a = arg;
    while (workpool_queued(a->p) != 0) usleep(1000);
    sem_post(a->sem);
    return NULL;
}

static void *race(void *arg)
{
    return workpool_shared(arg, 2, 16, 0);
}

int main(void)
{
    loop = ev_loop_new(EVFLAG_AUTO);
    workpool *p = workpool_new(2, 64, 0);
    ok(p && workpool_threads(p) == 2, "pool with two threads");
    wp_inbox *in = wp_inbox_new(p, loop);

    /* 1. many jobs: each runs once, each completes once, on the loop's thread */
    enum { N = 40 };
    job js[N];
    for (int i = 0; i < N; i++) {
        job_init(&js[i], i, NULL);
        if (workpool_submit(in, &js[i].j)) ok(0, "submit %d", i);
    }
    run_until(N);
    int all = 1;
    for (int i = 0; i < N; i++)
        all &= js[i].out == i * i && js[i].done == 1 && pthread_equal(js[i].done_thread, pthread_self());
    ok(all, "40 jobs: right results, done() once each, on the loop thread");
    is_int(wp_inbox_pending(in), 0, "nothing pending after");

    /* 2. the loop serves timers while a job runs: the job can only finish after three ticks */
    sem_init(&tick_gate, 0, 0);
    ev_timer tick;
    ev_timer_init(&tick, tick_cb, 0.001, 0.001);
    ev_timer_start(loop, &tick);
    job slow;
    job_init(&slow, 7, &tick_gate);
    ndone = 0;
    ok(workpool_submit(in, &slow.j) == 0, "submit a job that waits for the loop");
    run_until(1);
    ev_timer_stop(loop, &tick);
    ok(slow.done == 1 && slow.out == 49 && ticks >= 3, "it finished after the loop ran %d timer ticks", ticks);

    /* 3. the queue bound: one thread held, max_queue 2 */
    workpool *small = workpool_new(1, 2, 5);
    wp_inbox *sin = wp_inbox_new(small, loop);
    sem_t hold;
    sem_init(&hold, 0, 0);
    job h, q1, q2, q3;
    job_init(&h, 1, &hold);
    job_init(&q1, 2, NULL);
    job_init(&q2, 3, NULL);
    job_init(&q3, 4, NULL);
    workpool_submit(sin, &h.j);
    for (int i = 0; i < 1000 && workpool_queued(small) != 0; i++) usleep(1000);   /* the thread took h */
    ok(workpool_submit(sin, &q1.j) == 0 && workpool_submit(sin, &q2.j) == 0, "two jobs queue behind the held one");
    ok(workpool_submit(sin, &q3.j) == -1, "a third is refused: the queue is full");
    is_int(wp_inbox_pending(sin), 3, "three pending on the inbox");

    /* 4. freeing the inbox withdraws queued jobs and waits for the running one (released by
     * another thread only once the queue is empty, so the withdrawal came first) */
    struct poster_arg pa = {small, &hold};
    pthread_t poster;
    pthread_create(&poster, NULL, post_when_empty, &pa);
    wp_inbox_free(sin);
    pthread_join(poster, NULL);
    ok(atomic_load(&h.ran) && h.done == 0, "the running job finished, without done()");
    is_int(h.nice, 5, "the pool's threads run at the nice value asked for");
    ok(!atomic_load(&q1.ran) && !atomic_load(&q2.ran), "queued jobs were withdrawn, never run");
    workpool_free(small);

    /* 5. the shared pool: created once even when two threads race for it */
    static workpool *_Atomic slot;
    pthread_t t1, t2;
    void *r1, *r2;
    pthread_create(&t1, NULL, race, (void *)&slot);
    pthread_create(&t2, NULL, race, (void *)&slot);
    pthread_join(t1, &r1);
    pthread_join(t2, &r2);
    ok(r1 && r1 == r2 && r1 == atomic_load(&slot), "both racers got the same pool");
    ok(workpool_shared(&slot, 8, 1, 0) == r1, "later callers get it too");
    workpool_free(atomic_load(&slot));

    wp_inbox_free(in);
    workpool_free(p);
    ok(workpool_new(0, 1, 0) == NULL && workpool_new(2, 0, 0) == NULL && workpool_new(1, 1, 20) == NULL, "bad sizes are refused");
    ev_loop_destroy(loop);
    sem_destroy(&hold);
    sem_destroy(&tick_gate);
    return tap_done();
}
