/*
 * proxyauth.h - how a connection's credentials go on a request to the provider's API, exactly
 * as the provider definition says: proxy.base_url, proxy.headers and proxy.query templates
 * (${apiKey}, ${username}, ${password}, ${accessToken}, ${connectionConfig.x},
 * ${credentials.x}, base64(...)), hidden default values of declared fields, and the default
 * Authorization of the mode when the definition has no authorization template (BASIC: Basic
 * base64(username:password); OAUTH2_CC and TWO_STEP: Bearer <token>; API_KEY: none).
 *
 * Every value that shapes the URL or a header is validated against the provider definition
 * first (catalog_field_validate: pattern, enum, format, prefix/suffix; credentials: no control
 * characters), URL templates percent-encode what they substitute, and the host of the result
 * is checked (netpolicy) - all before any socket is opened.
 *
 * Ownership: struct proxy_auth owns its strings (values may hold secrets: proxy_auth_clear
 * wipes them). Threads: pure, thread-safe.
 */
#ifndef LATCH_PROXYAUTH_H
#define LATCH_PROXYAUTH_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "util/rc.h"

struct catalog_provider;

#define PROXY_AUTH_MAX_HEADERS 24

struct proxy_auth {
    char *base_url; /* evaluated proxy.base_url, no trailing '/'; NULL when the provider has none */
    char *names[PROXY_AUTH_MAX_HEADERS];
    char *values[PROXY_AUTH_MAX_HEADERS];
    size_t n_headers;
    char *query; /* "k=v&k2=v2", percent-encoded; NULL when none */
};

/*
 * Builds what the provider's proxy definition puts on a request for this connection. cfg is
 * the connection's config object, creds its opened credentials (Nango's shapes). On error:
 * LATCH_E_INVAL with a message for people in err (never a secret), nothing allocated.
 */
latch_rc proxy_auth_build(const struct catalog_provider *p, const json_t *cfg, const json_t *creds,
                          bool allow_http, struct proxy_auth *out, struct latch_err *err);
void proxy_auth_clear(struct proxy_auth *a);

/* True if a has a header of that name (case-insensitive). */
bool proxy_auth_has_header(const struct proxy_auth *a, const char *name);

/*
 * Evaluates one template of p (an endpoint path, a verification header) with the same inputs
 * and checks; flags as tmpl_eval. out_size bounds the result.
 */
latch_rc proxy_auth_eval(const struct catalog_provider *p, const json_t *cfg, const json_t *creds,
                         const char *tmpl, unsigned flags, char *out, size_t out_size,
                         struct latch_err *err);

/* True for a header value that may go on the wire (no CR, LF, NUL or other controls). */
bool proxy_auth_header_value_ok(const char *v);

#endif
