/*
 * creds.h - a connection's credentials object: sealing it into the store and opening it again.
 *
 * The whole credentials JSON (token, client_id, client_secret, expires_at, raw) is one AES-GCM
 * envelope bound to "connections:<uid>:credentials"; the plaintext exists only in memory, only
 * while a request needs it, and is wiped when released. Thread-safe.
 */
#ifndef LATCH_CREDS_H
#define LATCH_CREDS_H

#include <jansson.h>

#include "util/rc.h"

struct vault;

/* Seals creds for the connection uid; *sealed is owned. */
latch_rc creds_seal(struct vault *v, const char *uid, const json_t *creds, char **sealed);
/* Opens sealed credentials; *creds is a new reference (free with creds_free). */
latch_rc creds_open(struct vault *v, const char *uid, const char *sealed, json_t **creds);
/* Wipes the string values of a credentials object, then releases it. NULL is a no-op. */
void creds_free(json_t *creds);

#endif
