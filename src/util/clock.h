/*
 * clock.h - the two clocks, in milliseconds. Any thread.
 *   latch_mono_ms: monotonic; never goes backwards; not wall time (deadlines, timers, token
 *                  buckets, caches).
 *   latch_now_ms:  wall time since the Unix epoch (timestamps that are stored or shown).
 */
#ifndef LATCH_CLOCK_H
#define LATCH_CLOCK_H

#include <stdint.h>

int64_t latch_mono_ms(void);
int64_t latch_now_ms(void);
/* Monotonic microseconds (durations). */
uint64_t latch_mono_us(void);

#endif
