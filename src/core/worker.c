/*
 * worker.c - a fixed pool of threads over one bounded FIFO ring of jobs (see worker.h).
 */
#include "core/worker.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "util/xalloc.h"

#define WORKER_MAX_THREADS 16

struct job {
    void (*fn)(void *);
    void *ud;
};

struct worker {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct job *ring;
    size_t cap;
    size_t head;
    size_t len;
    bool stop;
    pthread_t thr[WORKER_MAX_THREADS];
    unsigned n_thr;
};

static void *
worker_main(void *arg)
{
    struct worker *w = arg;

    pthread_mutex_lock(&w->mu);
    for (;;) {
        struct job j;

        while (w->len == 0 && !w->stop)
            pthread_cond_wait(&w->cv, &w->mu);
        if (w->len == 0)
            break; /* stopping and drained */
        j = w->ring[w->head];
        w->head = (w->head + 1) % w->cap;
        w->len--;
        pthread_mutex_unlock(&w->mu);
        j.fn(j.ud);
        pthread_mutex_lock(&w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

latch_rc
worker_start(unsigned threads, size_t max_jobs, struct worker **out)
{
    struct worker *w;

    if (threads == 0 || threads > WORKER_MAX_THREADS || max_jobs == 0)
        return LATCH_E_INVAL;
    w = xcalloc(1, sizeof *w);
    w->ring = xcalloc(max_jobs, sizeof *w->ring);
    w->cap = max_jobs;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    for (unsigned i = 0; i < threads; i++) {
        if (pthread_create(&w->thr[i], NULL, worker_main, w) != 0) {
            worker_stop(w);
            return LATCH_E_INTERNAL;
        }
        w->n_thr++;
    }
    *out = w;
    return LATCH_OK;
}

latch_rc
worker_submit(struct worker *w, void (*fn)(void *ud), void *ud)
{
    if (w == NULL)
        return LATCH_E_BUSY;
    pthread_mutex_lock(&w->mu);
    if (w->stop || w->len == w->cap) {
        pthread_mutex_unlock(&w->mu);
        return LATCH_E_BUSY;
    }
    w->ring[(w->head + w->len) % w->cap] = (struct job){fn, ud};
    w->len++;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    return LATCH_OK;
}

void
worker_run(struct worker *w, void (*fn)(void *ud), void *ud)
{
    if (worker_submit(w, fn, ud) != LATCH_OK)
        fn(ud); /* queue full, pool stopping or no pool: the caller runs it */
}

void
worker_stop(struct worker *w)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    for (unsigned i = 0; i < w->n_thr; i++)
        pthread_join(w->thr[i], NULL);
    /* no thread (start failed): run what was queued here */
    while (w->len > 0) {
        struct job j = w->ring[w->head];

        w->head = (w->head + 1) % w->cap;
        w->len--;
        j.fn(j.ud);
    }
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w->ring);
    free(w);
}
