/*
 * clock.h - the monotonic clock in milliseconds (deadlines, timers, token buckets, caches).
 * Never goes backwards; not wall time (use store_now_ms for timestamps). Any thread.
 */
#ifndef LATCH_CLOCK_H
#define LATCH_CLOCK_H

#include <stdint.h>

int64_t latch_mono_ms(void);

#endif
