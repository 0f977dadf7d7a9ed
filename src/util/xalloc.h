/*
 * xalloc.h - allocation that never returns NULL.
 *
 * On out-of-memory these log and abort(): safe because every size an attacker controls is
 * bounded first (limits.h). Thread-safe.
 */
#ifndef LATCH_XALLOC_H
#define LATCH_XALLOC_H

#include <stddef.h>

void *xmalloc(size_t n);
void *xcalloc(size_t nmemb, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
void *xmemdup(const void *p, size_t n);
/* printf into a fresh heap string; returns owned. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
