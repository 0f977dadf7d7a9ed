/*
 * timer.c - one timer thread over a binary min-heap of events ordered by (due, seq): O(log n)
 * per event, FIFO among events due at the same millisecond. The heap array grows on demand and
 * is bounded by LATCH_TIMER_MAX_PENDING.
 */
#include "core/timer.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "core/latch_limits.h"
#include "util/clock.h"
#include "util/xalloc.h"

struct timer_ev {
    int64_t due; /* CLOCK_MONOTONIC ms */
    uint64_t seq;
    void (*fn)(void *);
    void *ud;
};

struct timer {
    pthread_t thr;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct timer_ev *heap; /* heap[0] is the earliest */
    size_t n;
    size_t cap;
    uint64_t seq;
    bool stop;
};

static bool
before(const struct timer_ev *a, const struct timer_ev *b)
{
    return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

static void
swap(struct timer_ev *a, struct timer_ev *b)
{
    struct timer_ev x = *a;

    *a = *b;
    *b = x;
}

/* With t->mu held; t->n > 0. */
static struct timer_ev
heap_pop(struct timer *t)
{
    struct timer_ev top = t->heap[0];
    size_t i = 0;

    t->heap[0] = t->heap[--t->n];
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;

        if (l < t->n && before(&t->heap[l], &t->heap[m]))
            m = l;
        if (r < t->n && before(&t->heap[r], &t->heap[m]))
            m = r;
        if (m == i)
            break;
        swap(&t->heap[i], &t->heap[m]);
        i = m;
    }
    return top;
}

/* With t->mu held; room for one more. */
static void
heap_push(struct timer *t, const struct timer_ev *e)
{
    size_t i = t->n++;

    t->heap[i] = *e;
    while (i > 0 && before(&t->heap[i], &t->heap[(i - 1) / 2])) {
        swap(&t->heap[i], &t->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
}

static void *
timer_main(void *arg)
{
    struct timer *t = arg;

    pthread_mutex_lock(&t->mu);
    while (!t->stop) {
        int64_t now = latch_mono_ms();

        if (t->n > 0 && t->heap[0].due <= now) {
            struct timer_ev e = heap_pop(t);

            pthread_mutex_unlock(&t->mu);
            e.fn(e.ud);
            pthread_mutex_lock(&t->mu);
            continue;
        }
        if (t->n == 0) {
            pthread_cond_wait(&t->cv, &t->mu);
        } else {
            struct timespec ts;
            int64_t wait = t->heap[0].due - now;

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
        pthread_cond_destroy(&t->cv);
        pthread_mutex_destroy(&t->mu);
        free(t);
        return LATCH_E_INTERNAL;
    }
    *out = t;
    return LATCH_OK;
}

void
timer_stop(struct timer *t)
{
    if (t == NULL)
        return;
    pthread_mutex_lock(&t->mu);
    t->stop = true;
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
    pthread_join(t->thr, NULL);
    /* in due order; callbacks may not add events any more (timer_after answers BUSY) */
    while (t->n > 0) {
        struct timer_ev e = heap_pop(t);

        e.fn(e.ud);
    }
    free(t->heap);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    free(t);
}

latch_rc
timer_after(struct timer *t, int64_t delay_ms, void (*fn)(void *ud), void *ud)
{
    struct timer_ev e;

    pthread_mutex_lock(&t->mu);
    if (t->stop || t->n >= LATCH_TIMER_MAX_PENDING) {
        pthread_mutex_unlock(&t->mu);
        return LATCH_E_BUSY;
    }
    if (t->n == t->cap) {
        size_t ncap = t->cap ? t->cap * 2 : 64;

        if (ncap > LATCH_TIMER_MAX_PENDING)
            ncap = LATCH_TIMER_MAX_PENDING;
        t->heap = xrealloc(t->heap, ncap * sizeof *t->heap);
        t->cap = ncap;
    }
    e.due = latch_mono_ms() + (delay_ms > 0 ? delay_ms : 0);
    e.seq = t->seq++;
    e.fn = fn;
    e.ud = ud;
    heap_push(t, &e);
    if (t->heap[0].seq == e.seq)
        pthread_cond_signal(&t->cv); /* new earliest event: re-arm the wait */
    pthread_mutex_unlock(&t->mu);
    return LATCH_OK;
}
