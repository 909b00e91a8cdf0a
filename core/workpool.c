/* workpool.c: threads that run blocking jobs and hand each result back to its loop via ev_async. */
#include "workpool.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

struct workpool {
    pthread_mutex_t mu;
    pthread_cond_t cv;           /* work queued, or stopping */
    wp_job *head, *tail;
    size_t nqueued, max_queue;
    int stop;
    int nthreads;
    int nice;
    pthread_t *threads;
};

struct wp_inbox {
    workpool *pool;
    struct ev_loop *loop;
    ev_async async;
    pthread_mutex_t mu;          /* guards everything below */
    pthread_cond_t cv;           /* a job finished while closing */
    wp_job *done_head, *done_tail;
    size_t inflight;             /* queued or running, not in the done list yet */
    size_t ndone;
    int closing;
};

static void *pool_thread(void *arg)
{
    workpool *p = arg;
    /* Linux applies nice per thread; raising it needs no privilege. A failure only costs the
     * loops some latency while hashing, so it is ignored. */
    if (p->nice > 0 && setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), p->nice)) { /* keep default */ }
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (!p->head && !p->stop) pthread_cond_wait(&p->cv, &p->mu);
        if (p->stop) { pthread_mutex_unlock(&p->mu); break; }
        wp_job *j = p->head;
        p->head = j->next;
        if (!p->head) p->tail = NULL;
        p->nqueued--;
        pthread_mutex_unlock(&p->mu);

        j->run(j);

        /* hand back; after this unlock the inbox may be freed, so nothing touches it later */
        wp_inbox *in = j->inbox;
        pthread_mutex_lock(&in->mu);
        j->next = NULL;
        if (in->done_tail) in->done_tail->next = j;
        else in->done_head = j;
        in->done_tail = j;
        in->ndone++;
        in->inflight--;
        if (in->closing) pthread_cond_signal(&in->cv);
        else ev_async_send(in->loop, &in->async);
        pthread_mutex_unlock(&in->mu);
    }
    return NULL;
}

workpool *workpool_new(int nthreads, size_t max_queue, int nice)
{
    if (nthreads < 1 || nthreads > 64 || max_queue < 1 || nice < 0 || nice > 19) return NULL;
    workpool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->threads = calloc((size_t)nthreads, sizeof *p->threads);
    if (!p->threads) { free(p); return NULL; }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->max_queue = max_queue;
    p->nice = nice;
    /* signals belong to the main thread: the pool threads start with all of them blocked */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (int i = 0; i < nthreads; i++) {
        if (pthread_create(&p->threads[i], NULL, pool_thread, p)) break;
        pthread_setname_np(p->threads[i], "sluice-work");
        p->nthreads++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!p->nthreads) { workpool_free(p); return NULL; }
    return p;
}

workpool *workpool_shared(workpool *_Atomic *slot, int nthreads, size_t max_queue, int nice)
{
    workpool *p = atomic_load(slot);
    if (p) return p;
    p = workpool_new(nthreads, max_queue, nice);
    if (!p) return NULL;
    workpool *expected = NULL;
    if (!atomic_compare_exchange_strong(slot, &expected, p)) {   /* another thread won */
        workpool_free(p);
        return expected;
    }
    return p;
}

void workpool_free(workpool *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nthreads; i++) pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->threads);
    free(p);
}

int workpool_threads(const workpool *p) { return p->nthreads; }

size_t workpool_queued(workpool *p)
{
    pthread_mutex_lock(&p->mu);
    size_t n = p->nqueued;
    pthread_mutex_unlock(&p->mu);
    return n;
}

static void inbox_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    wp_inbox *in = (wp_inbox *)((char *)w - offsetof(wp_inbox, async));
    pthread_mutex_lock(&in->mu);
    wp_job *j = in->done_head;
    in->done_head = in->done_tail = NULL;
    pthread_mutex_unlock(&in->mu);
    while (j) {
        wp_job *next = j->next;    /* done() may free j */
        pthread_mutex_lock(&in->mu);
        in->ndone--;
        pthread_mutex_unlock(&in->mu);
        j->done(j);
        j = next;
    }
}

wp_inbox *wp_inbox_new(workpool *p, struct ev_loop *loop)
{
    wp_inbox *in = calloc(1, sizeof *in);
    if (!in) return NULL;
    in->pool = p;
    in->loop = loop;
    pthread_mutex_init(&in->mu, NULL);
    pthread_cond_init(&in->cv, NULL);
    ev_async_init(&in->async, inbox_cb);
    ev_async_start(loop, &in->async);
    return in;
}

void wp_inbox_free(wp_inbox *in)
{
    if (!in) return;
    workpool *p = in->pool;
    size_t withdrawn = 0;
    pthread_mutex_lock(&p->mu);
    for (wp_job **pp = &p->head, *prev = NULL; *pp;) {
        wp_job *j = *pp;
        if (j->inbox == in) {
            *pp = j->next;
            if (p->tail == j) p->tail = prev;
            p->nqueued--;
            withdrawn++;
        } else {
            prev = j;
            pp = &j->next;
        }
    }
    pthread_mutex_unlock(&p->mu);
    pthread_mutex_lock(&in->mu);
    in->inflight -= withdrawn;
    in->closing = 1;
    while (in->inflight) pthread_cond_wait(&in->cv, &in->mu);
    pthread_mutex_unlock(&in->mu);
    ev_async_stop(in->loop, &in->async);
    pthread_mutex_destroy(&in->mu);
    pthread_cond_destroy(&in->cv);
    free(in);
}

size_t wp_inbox_pending(const wp_inbox *in)
{
    wp_inbox *m = (wp_inbox *)in;
    pthread_mutex_lock(&m->mu);
    size_t n = m->inflight + m->ndone;
    pthread_mutex_unlock(&m->mu);
    return n;
}

int workpool_submit(wp_inbox *in, wp_job *j)
{
    workpool *p = in->pool;
    j->inbox = in;
    j->next = NULL;
    pthread_mutex_lock(&p->mu);
    if (p->stop || p->nqueued >= p->max_queue) { pthread_mutex_unlock(&p->mu); return -1; }
    /* counted before a thread can pick it up, so the count never goes below zero */
    pthread_mutex_lock(&in->mu);
    in->inflight++;
    pthread_mutex_unlock(&in->mu);
    if (p->tail) p->tail->next = j;
    else p->head = j;
    p->tail = j;
    p->nqueued++;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return 0;
}
