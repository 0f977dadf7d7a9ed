/*
 * timer.h - run a callback later, on one shared timer thread (proxy retry waits, delayed 429s).
 * Callbacks must be short (they typically submit work elsewhere). Bounded by
 * LATCH_TIMER_MAX_PENDING. Threads: timer_after from any thread.
 */
#ifndef LATCH_TIMER_H
#define LATCH_TIMER_H

#include <stdint.h>

#include "util/rc.h"

struct timer;

latch_rc timer_start(struct timer **out);
/* Runs pending callbacks immediately (so owners can clean up), then joins. NULL is a no-op. */
void timer_stop(struct timer *t);
/* fn(ud) runs once, after delay_ms, on the timer thread. LATCH_E_BUSY when full. */
latch_rc timer_after(struct timer *t, int64_t delay_ms, void (*fn)(void *ud), void *ud);

#endif
