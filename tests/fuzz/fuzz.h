/*
 * fuzz.h - what every harness in tests/fuzz shares.
 *
 * Each fuzz_<t>.c defines LLVMFuzzerTestOneInput and nothing else public. One-time setup (a
 * catalogue, a vault) is done lazily on the first call, so the same harness runs under
 * libFuzzer and under replay_main.c. FUZZ_CHECK aborts on a broken invariant: under libFuzzer
 * that is a crash with a reproducer, under replay a failed CTest.
 * Threads: harnesses are single-threaded.
 */
#ifndef LATCH_FUZZ_H
#define LATCH_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            (void)fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#endif
