/*
 * timefmt.h - timestamps as text, the way the API and stored credentials show them.
 * Pure function: no allocation, thread-safe (gmtime_r). out is the caller's buffer.
 */
#ifndef LATCH_TIMEFMT_H
#define LATCH_TIMEFMT_H

#include <stdbool.h>
#include <stdint.h>

/* Milliseconds since the epoch to ISO 8601 "2025-01-01T00:00:00.000Z" or "...+00:00". */
void latch_fmt_time(int64_t ms, bool plus00, char out[40]);

#endif
