/*
 * appcreds.h - the OAuth app credentials (client_id, client_secret) an OAUTH2 (authorization
 * code) connection is refreshed with.
 *
 * Nango keeps them on the integration (`credentials: {type: "OAUTH2", client_id, client_secret}`
 * of POST/PATCH /integrations, sealed in integrations.credentials_sealed under creds_app_aad); an
 * imported connection may override them with its own `config_override: {client_id, client_secret}`
 * (stored inside the connection's sealed credentials). oauth2_app_credentials applies that rule;
 * integration_app_credentials reads the integration's pair alone (the accessor the /oauth/connect
 * flow and the refresher share).
 *
 * Ownership: *client_id and *client_secret are malloc'd; free them with appcreds_free (wipes).
 * Threads: any thread (store and vault calls only; blocking: not on the HTTP or curl thread).
 */
#ifndef LATCH_APPCREDS_H
#define LATCH_APPCREDS_H

#include <stdint.h>

#include <jansson.h>

#include "util/rc.h"

struct store;
struct vault;

/*
 * The integration's app credentials. LATCH_E_NOT_FOUND when the integration has none (or does
 * not exist); LATCH_E_CRYPTO when they do not open with the configured keys; store errors as they
 * come. *client_secret may be "" (public client).
 */
latch_rc integration_app_credentials(struct store *s, struct vault *v, int64_t env_id,
                                     const char *unique_key, char **client_id,
                                     char **client_secret);

/*
 * The pair a connection's refresh uses: creds.config_override when it names a client_id, else
 * the integration's (integration_app_credentials).
 */
latch_rc oauth2_app_credentials(struct store *s, struct vault *v, int64_t env_id,
                                const char *unique_key, const json_t *creds, char **client_id,
                                char **client_secret);

void appcreds_free(char *client_id, char *client_secret); /* NULL-safe; wipes the secret */

#endif
