/*
 * buf.h - growable byte buffer with a mandatory cap (curl's dynbuf idea).
 *
 * A struct buf is a small value type the caller owns (embed it or put it on the stack).
 * Appends past the cap return LATCH_E_TOO_LARGE and leave the buffer as it was.
 * The content is always NUL-terminated (the NUL is not counted in len).
 * Not thread-safe: one owner at a time.
 */
#ifndef LATCH_BUF_H
#define LATCH_BUF_H

#include <stddef.h>

#include "util/rc.h"

struct buf {
    char *data; /* owned; NULL until the first append */
    size_t len;
    size_t cap; /* allocated */
    size_t max; /* hard limit on len */
};

void buf_init(struct buf *b, size_t max);
latch_rc buf_append(struct buf *b, const void *p, size_t n);
latch_rc buf_puts(struct buf *b, const char *s);
latch_rc buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_reset(struct buf *b);
/* Frees the storage; wipes it first (buffers may carry secrets). */
void buf_free(struct buf *b);
/* Hands the storage to the caller (owned, NUL-terminated, never NULL); b is reset. */
char *buf_steal(struct buf *b, size_t *len);

#endif
