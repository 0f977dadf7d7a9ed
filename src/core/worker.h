/*
 * worker.h - a small pool of threads for blocking work (store writes that fsync or wait for a
 * lock, webhook enqueues) that must not run on the curl thread, where every millisecond blocks
 * every other upstream transfer, nor on an HTTP pool thread, which serves many connections.
 *
 * Jobs run in submission order per thread (FIFO queue, any free thread takes the next one).
 * The queue is bounded (LATCH_WORKER_MAX_JOBS): worker_submit answers LATCH_E_BUSY when it is
 * full or the pool is stopping; worker_run then runs the job in the caller, so no job is lost.
 * Threads: worker_submit / worker_run from any thread; start/stop from the owner (app.c).
 */
#ifndef LATCH_WORKER_H
#define LATCH_WORKER_H

#include <stddef.h>

#include "util/rc.h"

struct worker;

latch_rc worker_start(unsigned threads, size_t max_jobs, struct worker **out);
/* fn(ud) runs once on a pool thread. LATCH_E_BUSY: not queued (full or stopping). */
latch_rc worker_submit(struct worker *w, void (*fn)(void *ud), void *ud);
/* fn(ud) runs on a pool thread, or right here when it cannot be queued: never dropped. */
void worker_run(struct worker *w, void (*fn)(void *ud), void *ud);
/* Stops taking jobs, runs every queued job, joins the threads, frees. NULL is a no-op. */
void worker_stop(struct worker *w);

#endif
