/*
 * destpolicy.h - the outbound destination policy built from configuration: LATCH_RESOLVE pins
 * ("host:port:addr[,addr]": curl's CURLOPT_RESOLVE list, and the only exception to the
 * internal-address refusal besides LATCH_ALLOW_PRIVATE, for exactly those host:port/address
 * pairs) and the CA bundle (system bundle + LATCH_CA_FILE, in memory and in a private temp file
 * so curl can cache the parsed store). Which addresses count as internal is netpolicy's.
 *
 * Ownership: struct destpolicy is owned by outbound (destpolicy_new/destpolicy_free; free
 * unlinks the temp file); returned strings and the slist are borrowed from it.
 * Threads: immutable after destpolicy_new; every query from any thread (outbound's curl thread).
 */
#ifndef LATCH_DESTPOLICY_H
#define LATCH_DESTPOLICY_H

#include <sys/socket.h>
#include <stdbool.h>
#include <stddef.h>

#include "util/rc.h"

struct curl_slist;
struct destpolicy;

struct destpolicy_opts {
    const char *resolve; /* LATCH_RESOLVE, or NULL/"" */
    const char *ca_file; /* LATCH_CA_FILE (PEM), or NULL/"" */
    bool allow_private;  /* LATCH_ALLOW_PRIVATE (tests only): any address may be reached */
};

/* LATCH_E_INVAL / _TOO_LARGE / _IO with a human message in err when a setting is unusable. */
latch_rc destpolicy_new(const struct destpolicy_opts *o, struct destpolicy **out,
                        struct latch_err *err);
void destpolicy_free(struct destpolicy *p); /* NULL-safe */

/* True if any host may connect to sa (allow_private, or not an internal address). */
bool destpolicy_addr_open(const struct destpolicy *p, const struct sockaddr *sa, socklen_t len);
bool destpolicy_has_pins(const struct destpolicy *p);
/* True if LATCH_RESOLVE pins host (case-insensitive) and port (decimal) to the address sa. */
bool destpolicy_addr_pinned(const struct destpolicy *p, const char *host, const char *port,
                            const struct sockaddr *sa);
/* Parses "1.2.3.4", "::1" or "[::1]" into ss. */
bool destpolicy_parse_addr(const char *s, struct sockaddr_storage *ss);

/* For the easy handles: CURLOPT_RESOLVE list, CA file path, CA PEM (each NULL when unset). */
struct curl_slist *destpolicy_resolve(const struct destpolicy *p);
const char *destpolicy_ca_path(const struct destpolicy *p);
const char *destpolicy_ca_pem(const struct destpolicy *p, size_t *len); /* len may be NULL */
size_t destpolicy_n_pins(const struct destpolicy *p);
bool destpolicy_allow_private(const struct destpolicy *p);

#endif
