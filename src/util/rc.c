#include "util/rc.h"

#include <stdio.h>

const char *
latch_strerror(latch_rc rc)
{
    switch (rc) {
    case LATCH_OK:
        return "ok";
    case LATCH_E_NOMEM:
        return "out of memory";
    case LATCH_E_INVAL:
        return "invalid input";
    case LATCH_E_TOO_LARGE:
        return "too large";
    case LATCH_E_NOT_FOUND:
        return "not found";
    case LATCH_E_CONFLICT:
        return "conflict";
    case LATCH_E_UPSTREAM:
        return "upstream error";
    case LATCH_E_TIMEOUT:
        return "timeout";
    case LATCH_E_CRYPTO:
        return "cryptographic failure";
    case LATCH_E_DB:
        return "database error";
    case LATCH_E_IO:
        return "i/o error";
    case LATCH_E_DENIED:
        return "denied";
    case LATCH_E_BUSY:
        return "busy";
    case LATCH_E_UNAVAILABLE:
        return "unavailable";
    case LATCH_E_INTERNAL:
        return "internal error";
    }
    return "unknown error";
}

void
latch_err_set(struct latch_err *e, const char *fmt, ...)
{
    va_list ap;

    if (e == NULL)
        return;
    va_start(ap, fmt);
    (void)vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
}

void
latch_err_clear(struct latch_err *e)
{
    if (e != NULL)
        e->msg[0] = '\0';
}
