/*
 * creds.h - a connection's credentials object: sealing it into the store and opening it again.
 *
 * The whole credentials JSON (token, client_id, client_secret, expires_at, raw) is one AES-GCM
 * envelope bound (AAD) to its owner: the connection's row uid, environment, integration key and
 * connection id, so that a row moved to another environment, integration or connection id by
 * someone who can write the database but lacks the key does not decrypt there:
 *
 *     connections:<uid>:credentials:v2:<env_id>:<len>:<provider_config_key>:<len>:<connection_id>
 *
 * (decimal env_id; <len> the byte length of the string that follows, so that no two owners map
 * to the same text whatever ':' the keys hold). Envelopes written before this binding carry the
 * legacy AAD "connections:<uid>:credentials": they are still opened (creds_open_ex says so) and
 * re-sealed under the owner binding on first read, on rename and by `latch keys rotate`.
 *
 * The plaintext exists only in memory, only while a request needs it, and is wiped when released.
 * Thread-safe.
 */
#ifndef LATCH_CREDS_H
#define LATCH_CREDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "util/rc.h"

struct vault;
struct store_connection;

/* Whom a credentials envelope belongs to; the strings are borrowed. */
struct creds_owner {
    int64_t env_id;
    const char *provider_config_key; /* integration unique_key */
    const char *connection_id;
    const char *uid; /* connections.uid, fixed at creation */
};

/* The owner fields of a connection row (borrowed from c). */
struct creds_owner creds_owner_of(const struct store_connection *c);

/* Seals creds for owner o; *sealed is owned. */
latch_rc creds_seal(struct vault *v, const struct creds_owner *o, const json_t *creds,
                    char **sealed);
/*
 * Opens sealed credentials of owner o; *creds is a new reference (free with creds_free).
 * LATCH_E_CRYPTO when the envelope does not authenticate for o (tampered, moved, unknown key).
 */
latch_rc creds_open(struct vault *v, const struct creds_owner *o, const char *sealed,
                    json_t **creds);
/* The same; *legacy is set when the envelope carries the legacy AAD (re-seal it). */
latch_rc creds_open_ex(struct vault *v, const struct creds_owner *o, const char *sealed,
                       json_t **creds, bool *legacy);
/*
 * The same, also handing the plaintext JSON text to keep(text, len, ud) before it is wiped (the
 * hot cache of reads copies it into locked memory: no re-serialisation). keep may be NULL.
 */
latch_rc creds_open_keep(struct vault *v, const struct creds_owner *o, const char *sealed,
                         json_t **creds, bool *legacy,
                         void (*keep)(const char *text, size_t len, void *ud), void *ud);
/*
 * Opens sealed as from's (either AAD) and seals it again for to under the primary key. When lazy,
 * *out is NULL (LATCH_OK) if nothing would change: same owner, owner AAD, primary key.
 */
latch_rc creds_reseal(struct vault *v, const struct creds_owner *from, const struct creds_owner *to,
                      const char *sealed, bool lazy, char **out);
/*
 * store_rebind_fn for store_integration_update (ud is the struct vault *): re-seals a connection's
 * credentials from its owner before a rename to its owner after.
 */
latch_rc creds_rebind_cb(const struct store_connection *before,
                         const struct store_connection *after, char **new_sealed, void *ud);
/*
 * Any other sealed JSON object under an AAD the caller names (an integration's app credentials:
 * creds_app_aad; an OAuth state's payload). *sealed / *obj owned; LATCH_E_CRYPTO when the
 * envelope does not authenticate for aad.
 */
latch_rc creds_seal_aad(struct vault *v, const char *aad, const json_t *obj, char **sealed);
latch_rc creds_open_aad(struct vault *v, const char *aad, const char *sealed, json_t **obj);
/*
 * The AAD of an integration's app credentials (owned): bound to the environment and the
 * integration's unique_key, length-prefixed like a connection's:
 *     integrations:credentials:v1:<env_id>:<len>:<unique_key>
 * A rename re-seals them (api_integrations.c).
 */
char *creds_app_aad(int64_t env_id, const char *unique_key);

/* Wipes the string values of a credentials object, then releases it. NULL is a no-op. */
void creds_free(json_t *creds);

#endif
