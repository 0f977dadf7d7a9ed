/*
 * ratelimit.h - token buckets keyed by a string (an environment id, a client IP).
 *
 * Each key gets `rate` requests per second with bursts up to `burst`. The table is bounded
 * (LATCH_RATELIMIT_MAX_KEYS); when full, idle buckets are dropped first. Thread-safe (sharded
 * mutexes); O(1) per call.
 */
#ifndef LATCH_RATELIMIT_H
#define LATCH_RATELIMIT_H

#include <stdbool.h>
#include <stdint.h>

struct ratelimit;

struct ratelimit_verdict {
    bool allowed;
    unsigned limit;         /* burst size, for X-RateLimit-Limit */
    unsigned remaining;     /* whole tokens left, for X-RateLimit-Remaining */
    unsigned reset_s;       /* seconds until the bucket is full again, for X-RateLimit-Reset */
    unsigned retry_after_s; /* when refused: seconds until one token is available */
};

/* rate <= 0 disables the limiter (every call allowed). */
struct ratelimit *ratelimit_new(double rate, double burst);
void ratelimit_free(struct ratelimit *rl);
void ratelimit_take(struct ratelimit *rl, const char *key, struct ratelimit_verdict *v);

#endif
