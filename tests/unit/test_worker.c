/*
 * test_worker.c - the worker pool: every job runs exactly once, FIFO with one thread, the
 * queue bound answers BUSY, stop runs what is queued, jobs cannot queue more while stopping, and
 * worker_run runs in the caller what cannot be queued.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/worker.h"

static atomic_int ran[1000];
static int order[1000];
static atomic_int n_order;
static struct worker *cur;

static void
job(void *ud)
{
    int i = (int)(intptr_t)ud;

    atomic_fetch_add(&ran[i], 1);
    order[atomic_fetch_add(&n_order, 1)] = i;
}

static int
setup(void **state)
{
    (void)state;
    for (int i = 0; i < 1000; i++)
        atomic_store(&ran[i], 0);
    atomic_store(&n_order, 0);
    return 0;
}

static void
test_fifo_one_thread(void **state)
{
    (void)state;
    assert_int_equal(worker_start(1, 1000, &cur), LATCH_OK);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(worker_submit(cur, job, (void *)(intptr_t)i), LATCH_OK);
    worker_stop(cur); /* runs whatever is still queued */
    assert_int_equal(atomic_load(&n_order), 1000);
    for (int i = 0; i < 1000; i++) {
        assert_int_equal(atomic_load(&ran[i]), 1);
        assert_int_equal(order[i], i);
    }
}

static void
test_many_threads_each_once(void **state)
{
    (void)state;
    assert_int_equal(worker_start(4, 64, &cur), LATCH_OK);
    for (int i = 0; i < 1000; i++) {
        while (worker_submit(cur, job, (void *)(intptr_t)i) == LATCH_E_BUSY)
            usleep(100); /* bounded queue: wait for room */
    }
    worker_stop(cur);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(atomic_load(&ran[i]), 1);
}

static pthread_mutex_t gate = PTHREAD_MUTEX_INITIALIZER;

static void
blocked(void *ud)
{
    (void)ud;
    pthread_mutex_lock(&gate);
    pthread_mutex_unlock(&gate);
}

static void
test_bound_is_busy(void **state)
{
    (void)state;
    pthread_mutex_lock(&gate);
    assert_int_equal(worker_start(1, 2, &cur), LATCH_OK);
    assert_int_equal(worker_submit(cur, blocked, NULL), LATCH_OK);
    /* the thread takes the blocked job; then two fit and the third does not */
    while (worker_submit(cur, job, (void *)(intptr_t)1) != LATCH_OK)
        usleep(100);
    for (int tries = 0;; tries++) {
        latch_rc rc = worker_submit(cur, job, (void *)(intptr_t)2);

        if (rc == LATCH_OK)
            break;
        assert_true(tries < 10000);
        usleep(100);
    }
    assert_int_equal(worker_submit(cur, job, (void *)(intptr_t)3), LATCH_E_BUSY);
    pthread_mutex_unlock(&gate);
    worker_stop(cur);
    assert_int_equal(atomic_load(&ran[1]), 1);
    assert_int_equal(atomic_load(&ran[2]), 1);
    assert_int_equal(atomic_load(&ran[3]), 0);
}

static atomic_int resubmit_rc;

static void
resubmit(void *ud)
{
    (void)ud;
    usleep(200000); /* let worker_stop begin (it is called 5 ms after the submit) */
    atomic_store(&resubmit_rc, worker_submit(cur, job, (void *)(intptr_t)7));
}

static void
test_no_new_jobs_while_stopping(void **state)
{
    (void)state;
    atomic_store(&resubmit_rc, LATCH_OK);
    assert_int_equal(worker_start(1, 8, &cur), LATCH_OK);
    assert_int_equal(worker_submit(cur, resubmit, NULL), LATCH_OK);
    usleep(5000);
    worker_stop(cur);
    assert_int_equal(atomic_load(&resubmit_rc), LATCH_E_BUSY);
    assert_int_equal(worker_start(0, 8, &cur), LATCH_E_INVAL);
    assert_int_equal(worker_submit(NULL, job, NULL), LATCH_E_BUSY);
}

/* worker_run never drops a job: what cannot be queued runs in the caller, before it returns. */
static void
test_run_falls_back_to_the_caller(void **state)
{
    (void)state;
    worker_run(NULL, job, (void *)(intptr_t)4);
    assert_int_equal(atomic_load(&ran[4]), 1);
    pthread_mutex_lock(&gate);
    assert_int_equal(worker_start(1, 1, &cur), LATCH_OK);
    assert_int_equal(worker_submit(cur, blocked, NULL), LATCH_OK);
    while (worker_submit(cur, job, (void *)(intptr_t)5) != LATCH_OK)
        usleep(1000); /* the queue holds one: fill it behind the blocked job */
    worker_run(cur, job, (void *)(intptr_t)6); /* full: runs here */
    assert_int_equal(atomic_load(&ran[6]), 1);
    assert_int_equal(atomic_load(&ran[5]), 0);
    pthread_mutex_unlock(&gate);
    worker_stop(cur);
    assert_int_equal(atomic_load(&ran[5]), 1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_fifo_one_thread, setup),
        cmocka_unit_test_setup(test_many_threads_each_once, setup),
        cmocka_unit_test_setup(test_bound_is_busy, setup),
        cmocka_unit_test_setup(test_no_new_jobs_while_stopping, setup),
        cmocka_unit_test_setup(test_run_falls_back_to_the_caller, setup),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
