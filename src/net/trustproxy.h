/*
 * trustproxy.h - which peers may say who the client is (LATCH_TRUSTED_PROXIES).
 *
 * Behind a reverse proxy every connection comes from the proxy's address, so a per-client limit
 * keyed on the socket peer puts every end user into one bucket. The proxy names the client in
 * X-Forwarded-For, but anyone can send that header: it is believed only from a trusted peer.
 * The client is then the right-most X-Forwarded-For entry that is not itself a trusted proxy
 * (entries to its left were written by the client and prove nothing), as nginx's
 * real_ip_recursive does.
 *
 * Ownership: trustproxy_parse returns an owned list (trustproxy_free). Threads: the list is
 * immutable once parsed; every function may be called from any thread.
 */
#ifndef LATCH_TRUSTPROXY_H
#define LATCH_TRUSTPROXY_H

#include <stdbool.h>
#include <stddef.h>

#include "util/rc.h"

struct trustproxy;

/*
 * Parses a list of IPv4/IPv6 addresses and CIDR blocks separated by commas or blanks
 * ("10.0.0.0/8, ::1"). An empty or NULL list gives *out = NULL (trust nobody) and LATCH_OK.
 * LATCH_E_INVAL with a reason in err on anything else.
 */
latch_rc trustproxy_parse(const char *list, struct trustproxy **out, struct latch_err *err);
void trustproxy_free(struct trustproxy *t); /* NULL-safe */

/* True if the textual address ip lies in one of t's blocks (false for NULL t or a non-address). */
bool trustproxy_contains(const struct trustproxy *t, const char *ip);

/*
 * The client address of a request whose socket peer is peer and whose X-Forwarded-For values,
 * joined by commas in arrival order, are xff (may be NULL). Writes the canonical text of the
 * address into out: peer itself unless peer is trusted; else the right-most untrusted entry; the
 * left-most entry when every one is trusted. An unparseable entry where the client should be
 * (only a misconfigured proxy writes one) gives the last trusted address instead.
 */
void trustproxy_client(const struct trustproxy *t, const char *peer, const char *xff, char *out,
                       size_t out_size);

#endif
