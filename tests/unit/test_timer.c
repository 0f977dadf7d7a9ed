/*
 * test_timer.c - the timer thread: due order, FIFO among equal deadlines, many events (heap
 * growth), events added from callbacks, stop running what is pending, BUSY after stop.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "core/timer.h"

struct log {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int order[4096];
    size_t n;
};

struct ev {
    struct log *log;
    int id;
};

static struct log L = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, {0}, 0};
static struct ev evs[4096];

static void
record(void *ud)
{
    struct ev *e = ud;

    pthread_mutex_lock(&e->log->mu);
    e->log->order[e->log->n++] = e->id;
    pthread_cond_broadcast(&e->log->cv);
    pthread_mutex_unlock(&e->log->mu);
}

static void
wait_for(size_t n)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 10;
    pthread_mutex_lock(&L.mu);
    while (L.n < n)
        if (pthread_cond_timedwait(&L.cv, &L.mu, &ts) != 0)
            break;
    pthread_mutex_unlock(&L.mu);
    assert_true(L.n >= n);
}

static int
setup(void **state)
{
    (void)state;
    L.n = 0;
    for (int i = 0; i < 4096; i++)
        evs[i] = (struct ev){&L, i};
    return 0;
}

static void
test_due_order_and_fifo(void **state)
{
    struct timer *t = NULL;
    /* ids by due time: 3 (0 ms), then 0,4 (40 ms, FIFO), then 2 (80 ms), then 1 (120 ms) */
    const int64_t delays[] = {40, 120, 80, 0, 40};
    const int want[] = {3, 0, 4, 2, 1};

    (void)state;
    assert_int_equal(timer_start(&t), LATCH_OK);
    for (int i = 0; i < 5; i++)
        assert_int_equal(timer_after(t, delays[i], record, &evs[i]), LATCH_OK);
    wait_for(5);
    assert_memory_equal(L.order, want, sizeof want);
    timer_stop(t);
}

static void
test_many_events_sorted(void **state)
{
    struct timer *t = NULL;
    uint32_t x = 12345;

    (void)state;
    assert_int_equal(timer_start(&t), LATCH_OK);
    /*
     * 2000 events in 10 delay buckets 100 ms apart, inserted in pseudo-random bucket order:
     * they must come out bucket by bucket (inserting takes far less than 100 ms even under a
     * sanitizer), and in insertion order within a bucket (same delay, later due or same ms).
     */
    for (int i = 0; i < 2000; i++) {
        x = x * 1103515245u + 12345u;
        evs[i].id = (int)((x >> 8) % 10) * 10000 + i;
        assert_int_equal(timer_after(t, (int64_t)(evs[i].id / 10000) * 100, record, &evs[i]),
                         LATCH_OK);
    }
    wait_for(2000);
    for (size_t i = 1; i < 2000; i++) {
        int prev = L.order[i - 1], cur = L.order[i];

        assert_true(prev / 10000 <= cur / 10000);
        if (prev / 10000 == cur / 10000)
            assert_true(prev % 10000 < cur % 10000);
    }
    timer_stop(t);
}

static struct timer *chain_t;

static void
chain(void *ud)
{
    struct ev *e = ud;

    record(ud);
    if (e->id < 10)
        assert_int_equal(timer_after(chain_t, 1, chain, &evs[e->id + 1]), LATCH_OK);
}

static void
test_add_from_callback(void **state)
{
    (void)state;
    assert_int_equal(timer_start(&chain_t), LATCH_OK);
    assert_int_equal(timer_after(chain_t, 0, chain, &evs[0]), LATCH_OK);
    wait_for(11);
    for (int i = 0; i <= 10; i++)
        assert_int_equal(L.order[i], i);
    timer_stop(chain_t);
}

static struct timer *stop_t;

static void
try_add(void *ud)
{
    record(ud);
    /* during timer_stop: no new events */
    assert_int_equal(timer_after(stop_t, 0, record, &evs[99]), LATCH_E_BUSY);
}

static void
test_stop_runs_pending(void **state)
{
    (void)state;
    assert_int_equal(timer_start(&stop_t), LATCH_OK);
    assert_int_equal(timer_after(stop_t, 60000, try_add, &evs[2]), LATCH_OK);
    assert_int_equal(timer_after(stop_t, 30000, try_add, &evs[1]), LATCH_OK);
    timer_stop(stop_t); /* runs both at once, in due order */
    assert_int_equal(L.n, 2);
    assert_int_equal(L.order[0], 1);
    assert_int_equal(L.order[1], 2);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_due_order_and_fifo, setup),
        cmocka_unit_test_setup(test_many_events_sorted, setup),
        cmocka_unit_test_setup(test_add_from_callback, setup),
        cmocka_unit_test_setup(test_stop_runs_pending, setup),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
