/*
 * netpolicy.h - what outbound destinations are acceptable (SSRF defence).
 *
 * Two checks: (1) before any DNS lookup, hostnames that came from user input are checked for
 * syntax (LDH labels, no IP literal in any notation, no userinfo/port/path/percent/CRLF, no
 * trailing dot, ASCII only) - the caller then also requires an exact enum match from the provider
 * definition; (2) at connect time, the resolved address is refused if it is loopback, private
 * (RFC 1918, CGNAT 100.64/10), link-local (169.254/16 incl. metadata 169.254.169.254, fe80::/10),
 * ULA fc00::/7, unspecified, multicast, broadcast, documentation/benchmark ranges, or an IPv6
 * form (v4-mapped ::ffff:0:0/96, NAT64 64:ff9b::/96, 6to4 2002::/16, Teredo) embedding such a v4.
 * Pure functions; thread-safe.
 */
#ifndef LATCH_NETPOLICY_H
#define LATCH_NETPOLICY_H

#include <stdbool.h>
#include <sys/socket.h>

#include "util/rc.h"

/* True if connecting to this address must be refused by default. */
bool netpolicy_addr_is_internal(const struct sockaddr *sa, socklen_t len);

/* LATCH_OK if host is a plain DNS name acceptable as a destination; else LATCH_E_INVAL. */
latch_rc netpolicy_check_hostname(const char *host, struct latch_err *err);

/*
 * Extracts the host of an absolute https URL (curl_url API) into out; checks the scheme
 * (https, or http when allow_http) and rejects userinfo. LATCH_E_INVAL on anything odd.
 */
latch_rc netpolicy_url_host(const char *url, bool allow_http, char *out, size_t out_size,
                            struct latch_err *err);

/*
 * True if url names no port or its scheme's default one (443 for https, 80 for http); false on
 * another port or a URL curl cannot parse.
 */
bool netpolicy_url_default_port(const char *url);

#endif
