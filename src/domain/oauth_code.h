/*
 * oauth_code.h - the pure pieces of OAUTH2's authorization-code flow (api_oauth.c runs the flow):
 * the PKCE pair (RFC 7636, S256), the scopes the user may add, and the authorization URL built
 * from the provider definition (authorization_url template with the validated connection config,
 * authorization_params, scope_separator) exactly as Nango builds it.
 *
 * Ownership: inputs are borrowed; outputs are owned by the caller (free).
 * Threads: every function is thread-safe (no state; randomness from OpenSSL via crypto/vault).
 */
#ifndef LATCH_OAUTH_CODE_H
#define LATCH_OAUTH_CODE_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "util/rc.h"

struct catalog_provider;

/* A PKCE verifier (64 characters of [0-9a-f]: 256 random bits) and its S256 challenge. */
#define OAUTH_PKCE_VERIFIER_LEN 64
#define OAUTH_PKCE_CHALLENGE_LEN 43
void oauth_pkce_new(char verifier[OAUTH_PKCE_VERIFIER_LEN + 1],
                    char challenge[OAUTH_PKCE_CHALLENGE_LEN + 1]);
/* The S256 challenge of a verifier: base64url(SHA-256(verifier)), unpadded. */
void oauth_pkce_challenge(const char *verifier, char challenge[OAUTH_PKCE_CHALLENGE_LEN + 1]);

/*
 * A comma-separated scope list as Nango accepts it (^[0-9a-zA-Z:/_.-]+(,[0-9a-zA-Z:/_.-]+)*$)
 * and at most 1024 bytes.
 */
bool oauth_scopes_ok(const char *s);

struct oauth_authorize_input {
    const struct catalog_provider *provider;
    const json_t *connection_config; /* validated (apiv_connection_config) */
    const char *client_id;
    const char *redirect_uri;
    const char *scopes;         /* comma-separated, "" or NULL = none */
    const char *state;          /* the random state */
    const char *code_challenge; /* NULL: no PKCE */
    /*
     * Authorization parameters beyond the provider's (session defaults, then the user's): an
     * object of strings; a null member removes a provider parameter (Nango's "undefined").
     * The protocol's own (client_id, redirect_uri, state, code_challenge*) cannot be set.
     */
    const json_t *extra_params;
};

/*
 * The URL the user's browser is sent to: authorization_url (templates from the connection config,
 * each value checked where it lands), then response_type=code (unless the provider's parameters
 * set it), the provider's authorization_params (templated), the extra parameters, client_id,
 * redirect_uri, scope (joined by scope_separator) when any, state, and code_challenge +
 * code_challenge_method=S256 when PKCE. LATCH_E_INVAL with a human message in err.
 */
latch_rc oauth_authorize_url(const struct oauth_authorize_input *in, bool allow_http, char **out,
                             struct latch_err *err);

#endif
