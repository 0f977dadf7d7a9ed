/*
 * verify.h - checking new credentials with the provider before a connection is "connected":
 * the request of the provider's proxy.verification (method, endpoints, headers, data,
 * base_url_override), with the credentials applied as the proxy would (proxyauth.h).
 *
 * Outcomes, in words that name the provider's display name: 2xx -> verified; 401/403 -> the
 * provider rejected the credentials (terminal); 404 -> check the subdomain/host (terminal);
 * other 4xx -> terminal; 5xx/429/network/timeout -> transient. A provider without
 * proxy.verification is not checked, and says so (VERIFY_NONE, not an error).
 *
 * Threads: verify_start from any thread; done runs on a worker thread (worker.h) exactly once
 * when verify_start returned true. Bounded: one request, LATCH_MAX_TOKEN_RESPONSE of answer
 * read at most, the token timeout.
 */
#ifndef LATCH_VERIFY_H
#define LATCH_VERIFY_H

#include <stdbool.h>

#include <jansson.h>

#include "util/rc.h"

struct catalog_provider;
struct outbound;
struct worker;

enum verify_outcome {
    VERIFY_OK = 0,       /* the provider accepted the credentials */
    VERIFY_NONE,         /* the provider defines no verification request */
    VERIFY_REJECTED,     /* 401/403 (terminal) */
    VERIFY_NOT_FOUND,    /* 404: wrong subdomain/host (terminal) */
    VERIFY_UPSTREAM,     /* other status; terminal unless 5xx/429/408 */
    VERIFY_TIMEOUT,      /* transient */
    VERIFY_UNREACHABLE,  /* transient: DNS, connect, TLS, busy */
    VERIFY_DENIED,       /* latch's outbound policy refused the address (terminal) */
    VERIFY_INVALID_INPUT /* a template input failed validation (terminal) */
};

struct verify_result {
    enum verify_outcome outcome;
    bool terminal;
    long status;
    char endpoint[256]; /* the endpoint called (template text, no secret) or "none defined" */
    char reason[32];    /* verified, none, rejected, not_found, upstream_error, timeout, ... */
    char message[640];  /* for people; never a secret */
};

struct verify_opts {
    struct outbound *outbound;
    struct worker *worker;
    bool allow_http;
    int timeout_ms;
};

typedef void (*verify_done_fn)(struct verify_result *r, void *ud);

/*
 * Starts the verification of creds (Nango's credential shape) for a connection with config
 * cfg. Returns true when done will run later; false when *now holds the answer (VERIFY_NONE,
 * VERIFY_INVALID_INPUT, or a submission failure).
 */
bool verify_start(const struct verify_opts *o, const struct catalog_provider *p, const json_t *cfg,
                  const json_t *creds, verify_done_fn done, void *ud, struct verify_result *now);

/* Classifies an answer (tests; verify_start uses it). */
struct outbound_resp;
void verify_classify(const struct catalog_provider *p, const struct outbound_resp *resp,
                     struct verify_result *r);

#endif
