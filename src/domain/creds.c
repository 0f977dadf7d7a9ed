#include "domain/creds.h"

#include <inttypes.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

#include "util/xalloc.h"
#include "crypto/vault.h"
#include "store/store.h"

/* The owner binding (see creds.h); length prefixes keep it injective. */
static char *
aad_for(const struct creds_owner *o)
{
    const char *pck = o->provider_config_key != NULL ? o->provider_config_key : "";
    const char *cid = o->connection_id != NULL ? o->connection_id : "";

    return xasprintf("connections:%s:credentials:v2:%" PRId64 ":%zu:%s:%zu:%s", o->uid, o->env_id,
                     strlen(pck), pck, strlen(cid), cid);
}

/* Before the owner binding: the row uid only. */
static char *
legacy_aad_for(const struct creds_owner *o)
{
    return xasprintf("connections:%s:credentials", o->uid);
}

char *
creds_app_aad(int64_t env_id, const char *unique_key)
{
    return xasprintf("integrations:credentials:v1:%" PRId64 ":%zu:%s", env_id, strlen(unique_key),
                     unique_key);
}

latch_rc
creds_seal_aad(struct vault *v, const char *aad, const json_t *obj, char **sealed)
{
    char *text = json_dumps(obj, JSON_COMPACT);
    latch_rc rc = LATCH_E_INTERNAL;

    *sealed = NULL;
    if (text != NULL) {
        rc = vault_seal(v, aad, text, strlen(text), sealed);
        explicit_bzero(text, strlen(text));
        free(text);
    }
    return rc;
}

latch_rc
creds_open_aad(struct vault *v, const char *aad, const char *sealed, json_t **obj)
{
    unsigned char *pt = NULL;
    size_t len = 0;
    latch_rc rc;

    *obj = NULL;
    if (sealed == NULL)
        return LATCH_E_INVAL;
    rc = vault_open(v, aad, sealed, &pt, &len);
    if (rc != LATCH_OK)
        return rc;
    *obj = json_loadb((const char *)pt, len, 0, NULL);
    vault_plain_free(pt, len);
    if (!json_is_object(*obj)) {
        json_decref(*obj);
        *obj = NULL;
        return LATCH_E_CRYPTO;
    }
    return LATCH_OK;
}

struct creds_owner
creds_owner_of(const struct store_connection *c)
{
    struct creds_owner o = {c->env_id, c->provider_config_key, c->connection_id, c->uid};

    return o;
}

static bool
owner_ok(const struct creds_owner *o)
{
    return o != NULL && o->uid != NULL && o->provider_config_key != NULL &&
           o->connection_id != NULL;
}

latch_rc
creds_seal(struct vault *v, const struct creds_owner *o, const json_t *creds, char **sealed)
{
    char *aad, *text;
    latch_rc rc = LATCH_E_INTERNAL;

    *sealed = NULL;
    if (!owner_ok(o))
        return LATCH_E_INVAL;
    aad = aad_for(o);
    text = json_dumps(creds, JSON_COMPACT);
    if (text != NULL) {
        rc = vault_seal(v, aad, text, strlen(text), sealed);
        explicit_bzero(text, strlen(text));
        free(text);
    }
    free(aad);
    return rc;
}

/* Opens the envelope under the owner AAD, else the legacy one; the plaintext is owned. */
static latch_rc
open_raw(struct vault *v, const struct creds_owner *o, const char *sealed, unsigned char **pt,
         size_t *len, bool *legacy)
{
    char *aad;
    latch_rc rc;

    *legacy = false;
    if (!owner_ok(o) || sealed == NULL)
        return LATCH_E_INVAL;
    aad = aad_for(o);
    rc = vault_open(v, aad, sealed, pt, len);
    free(aad);
    if (rc != LATCH_E_CRYPTO)
        return rc;
    aad = legacy_aad_for(o);
    rc = vault_open(v, aad, sealed, pt, len);
    free(aad);
    if (rc == LATCH_OK)
        *legacy = true;
    return rc;
}

latch_rc
creds_open_keep(struct vault *v, const struct creds_owner *o, const char *sealed, json_t **creds,
                bool *legacy, void (*keep)(const char *text, size_t len, void *ud), void *ud)
{
    unsigned char *pt = NULL;
    size_t len = 0;
    latch_rc rc;

    *creds = NULL;
    rc = open_raw(v, o, sealed, &pt, &len, legacy);
    if (rc != LATCH_OK)
        return rc;
    *creds = json_loadb((const char *)pt, len, 0, NULL);
    if (*creds != NULL && keep != NULL)
        keep((const char *)pt, len, ud);
    vault_plain_free(pt, len);
    return *creds != NULL ? LATCH_OK : LATCH_E_CRYPTO;
}

latch_rc
creds_open_ex(struct vault *v, const struct creds_owner *o, const char *sealed, json_t **creds,
              bool *legacy)
{
    return creds_open_keep(v, o, sealed, creds, legacy, NULL, NULL);
}

latch_rc
creds_open(struct vault *v, const struct creds_owner *o, const char *sealed, json_t **creds)
{
    bool legacy;

    return creds_open_ex(v, o, sealed, creds, &legacy);
}

static bool
same_owner(const struct creds_owner *a, const struct creds_owner *b)
{
    return a->env_id == b->env_id && strcmp(a->uid, b->uid) == 0 &&
           strcmp(a->provider_config_key, b->provider_config_key) == 0 &&
           strcmp(a->connection_id, b->connection_id) == 0;
}

latch_rc
creds_reseal(struct vault *v, const struct creds_owner *from, const struct creds_owner *to,
             const char *sealed, bool lazy, char **out)
{
    unsigned char *pt = NULL;
    size_t len = 0;
    bool legacy = false;
    char *aad;
    latch_rc rc;

    *out = NULL;
    if (!owner_ok(to))
        return LATCH_E_INVAL;
    rc = open_raw(v, from, sealed, &pt, &len, &legacy);
    if (rc != LATCH_OK)
        return rc;
    if (lazy && !legacy && same_owner(from, to)) {
        char kid[VAULT_KID_LEN + 1], primary[VAULT_KID_LEN + 1];

        vault_primary_kid(v, primary);
        if (vault_envelope_kid(sealed, kid) == LATCH_OK && strcmp(kid, primary) == 0) {
            vault_plain_free(pt, len);
            return LATCH_OK; /* current already */
        }
    }
    aad = aad_for(to);
    rc = vault_seal(v, aad, pt, len, out);
    free(aad);
    vault_plain_free(pt, len);
    return rc;
}

latch_rc
creds_rebind_cb(const struct store_connection *before, const struct store_connection *after,
                char **new_sealed, void *ud)
{
    struct creds_owner from = creds_owner_of(before), to = creds_owner_of(after);

    return creds_reseal(ud, &from, &to, before->credentials_sealed, false, new_sealed);
}

static void
wipe_json(json_t *j)
{
    const char *k;
    json_t *v;
    size_t i;

    if (json_is_object(j)) {
        json_object_foreach(j, k, v) wipe_json(v);
    } else if (json_is_array(j)) {
        json_array_foreach(j, i, v) wipe_json(v);
    } else if (json_is_string(j)) {
        /* jansson owns the buffer; overwrite it in place before it is freed */
        char *s = (char *)(uintptr_t)json_string_value(j);

        explicit_bzero(s, json_string_length(j));
    }
}

void
creds_free(json_t *creds)
{
    if (creds == NULL)
        return;
    if (creds->refcount == 1)
        wipe_json(creds);
    json_decref(creds);
}
