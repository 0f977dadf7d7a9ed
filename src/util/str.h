/*
 * str.h - small string helpers that replace the banned libc ones. Thread-safe.
 */
#ifndef LATCH_STR_H
#define LATCH_STR_H

#include <stdbool.h>
#include <stddef.h>

/* OpenBSD strlcpy: copies at most size-1 bytes, always terminates; returns strlen(src). */
size_t latch_strlcpy(char *dst, const char *src, size_t size);

/*
 * OpenBSD strtonum: parses a base-10 integer in [minval, maxval]. On error returns 0 and sets
 * *errstr to a static message ("invalid", "too small", "too large"); else *errstr = NULL.
 */
long long latch_strtonum(const char *s, long long minval, long long maxval, const char **errstr);

/* Value of one hex digit (either case), or -1. */
int latch_hexval(char ch);
/* Case-insensitive ASCII prefix test. */
bool latch_str_has_prefix_ci(const char *s, const char *prefix);
/* True if s is valid UTF-8 without control characters (C0, DEL). */
bool latch_utf8_clean(const char *s);
/*
 * Copy of s that is valid UTF-8: invalid sequences and control characters become '?'.
 * Returns owned (free()); s may be NULL (returns "").
 */
char *latch_utf8_sanitize(const char *s);
/* Constant-time comparison of two equal-length byte strings. */
bool latch_mem_equal_ct(const void *a, const void *b, size_t n);

#endif
