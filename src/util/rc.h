/*
 * rc.h - the one error enum of latch.
 *
 * Every fallible function returns enum latch_rc (LATCH_OK == 0). Detail meant for logs
 * goes into a caller-supplied struct latch_err, never into an HTTP response.
 * Thread-safety: all functions here are pure and thread-safe.
 */
#ifndef LATCH_RC_H
#define LATCH_RC_H

#include <stdarg.h>

enum latch_rc {
    LATCH_OK = 0,
    LATCH_E_NOMEM,
    LATCH_E_INVAL,     /* bad input from a caller */
    LATCH_E_TOO_LARGE, /* a bound in limits.h was hit */
    LATCH_E_NOT_FOUND,
    LATCH_E_CONFLICT, /* unique key exists, version mismatch, lease held */
    LATCH_E_UPSTREAM, /* the third party answered with an error */
    LATCH_E_TIMEOUT,
    LATCH_E_CRYPTO, /* tampered ciphertext, wrong key */
    LATCH_E_DB,
    LATCH_E_IO,
    LATCH_E_DENIED,      /* refused by policy (SSRF, auth) */
    LATCH_E_BUSY,        /* try again later */
    LATCH_E_UNAVAILABLE, /* a dependency (database, network) is down */
    LATCH_E_INTERNAL,
};
typedef enum latch_rc latch_rc;

/* Static text for a code; never NULL. */
const char *latch_strerror(latch_rc rc);

/* Detail for logs. msg is always NUL-terminated. */
struct latch_err {
    char msg[256];
};

void latch_err_set(struct latch_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void latch_err_clear(struct latch_err *e);

#endif
