#include "util/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/xalloc.h"

void
buf_init(struct buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
}

latch_rc
buf_append(struct buf *b, const void *p, size_t n)
{
    size_t need;

    if (n > b->max || b->len > b->max - n)
        return LATCH_E_TOO_LARGE;
    need = b->len + n + 1;
    if (need > b->cap) {
        size_t ncap = b->cap ? b->cap : 64;
        char *nd;

        while (ncap < need)
            ncap *= 2;
        if (ncap > b->max + 1)
            ncap = b->max + 1;
        /* grow by copy so that a secret never lingers in a freed block */
        nd = xmalloc(ncap);
        if (b->len > 0)
            memcpy(nd, b->data, b->len);
        if (b->data != NULL) {
            explicit_bzero(b->data, b->cap);
            free(b->data);
        }
        b->data = nd;
        b->cap = ncap;
    }
    if (n > 0)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return LATCH_OK;
}

latch_rc
buf_puts(struct buf *b, const char *s)
{
    return buf_append(b, s, strlen(s));
}

latch_rc
buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    char small[256];
    char *big = NULL;
    int n;
    latch_rc rc;

    va_start(ap, fmt);
    n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return LATCH_E_INVAL;
    if ((size_t)n < sizeof small)
        return buf_append(b, small, (size_t)n);
    if ((size_t)n > b->max)
        return LATCH_E_TOO_LARGE;
    big = xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    (void)vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    rc = buf_append(b, big, (size_t)n);
    free(big);
    return rc;
}

void
buf_reset(struct buf *b)
{
    if (b->data != NULL) {
        explicit_bzero(b->data, b->len);
        b->data[0] = '\0';
    }
    b->len = 0;
}

void
buf_free(struct buf *b)
{
    if (b->data != NULL) {
        explicit_bzero(b->data, b->cap);
        free(b->data);
    }
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

char *
buf_steal(struct buf *b, size_t *len)
{
    char *p = b->data;

    if (p == NULL)
        p = xstrdup("");
    if (len != NULL)
        *len = b->len;
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    return p;
}
