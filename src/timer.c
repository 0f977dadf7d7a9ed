#include "timer.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "latch_limits.h"
#include "util/xalloc.h"

struct timer_ev {
    int64_t due; /* CLOCK_MONOTONIC ms */
    void (*fn)(void *);
    void *ud;
    struct timer_ev *next;
};

struct timer {
    pthread_t thr;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct timer_ev *head; /* sorted by due */
    size_t n;
    bool stop;
};

static int64_t
mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void *
timer_main(void *arg)
{
    struct timer *t = arg;

    pthread_mutex_lock(&t->mu);
    while (!t->stop) {
        int64_t now = mono_ms();

        if (t->head != NULL && t->head->due <= now) {
            struct timer_ev *e = t->head;

            t->head = e->next;
            t->n--;
            pthread_mutex_unlock(&t->mu);
            e->fn(e->ud);
            free(e);
            pthread_mutex_lock(&t->mu);
            continue;
        }
        if (t->head == NULL) {
            pthread_cond_wait(&t->cv, &t->mu);
        } else {
            struct timespec ts;
            int64_t wait = t->head->due - now;

            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_sec += wait / 1000;
            ts.tv_nsec += (wait % 1000) * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            (void)pthread_cond_timedwait(&t->cv, &t->mu, &ts);
        }
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

latch_rc
timer_start(struct timer **out)
{
    struct timer *t = xcalloc(1, sizeof *t);
    pthread_condattr_t ca;

    pthread_mutex_init(&t->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&t->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&t->thr, NULL, timer_main, t) != 0) {
        free(t);
        return LATCH_E_INTERNAL;
    }
    *out = t;
    return LATCH_OK;
}

void
timer_stop(struct timer *t)
{
    struct timer_ev *e;

    if (t == NULL)
        return;
    pthread_mutex_lock(&t->mu);
    t->stop = true;
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
    pthread_join(t->thr, NULL);
    while ((e = t->head) != NULL) {
        t->head = e->next;
        e->fn(e->ud);
        free(e);
    }
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    free(t);
}

latch_rc
timer_after(struct timer *t, int64_t delay_ms, void (*fn)(void *ud), void *ud)
{
    struct timer_ev *e, **pp;

    pthread_mutex_lock(&t->mu);
    if (t->stop || t->n >= LATCH_TIMER_MAX_PENDING) {
        pthread_mutex_unlock(&t->mu);
        return LATCH_E_BUSY;
    }
    e = xcalloc(1, sizeof *e);
    e->due = mono_ms() + (delay_ms > 0 ? delay_ms : 0);
    e->fn = fn;
    e->ud = ud;
    for (pp = &t->head; *pp != NULL && (*pp)->due <= e->due; pp = &(*pp)->next)
        ;
    e->next = *pp;
    *pp = e;
    t->n++;
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
    return LATCH_OK;
}
