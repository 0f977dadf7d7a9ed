#include "domain/creds.h"

#include <stdlib.h>
#include <stdint.h>
#include <string.h>

#include "util/xalloc.h"
#include "crypto/vault.h"

static char *
aad_for(const char *uid)
{
    return xasprintf("connections:%s:credentials", uid);
}

latch_rc
creds_seal(struct vault *v, const char *uid, const json_t *creds, char **sealed)
{
    char *aad = aad_for(uid);
    char *text = json_dumps(creds, JSON_COMPACT);
    latch_rc rc = LATCH_E_INTERNAL;

    if (text != NULL) {
        rc = vault_seal(v, aad, text, strlen(text), sealed);
        explicit_bzero(text, strlen(text));
        free(text);
    }
    free(aad);
    return rc;
}

latch_rc
creds_open(struct vault *v, const char *uid, const char *sealed, json_t **creds)
{
    char *aad = aad_for(uid);
    unsigned char *pt = NULL;
    size_t len = 0;
    latch_rc rc;

    *creds = NULL;
    rc = vault_open(v, aad, sealed, &pt, &len);
    free(aad);
    if (rc != LATCH_OK)
        return rc;
    *creds = json_loadb((const char *)pt, len, 0, NULL);
    vault_plain_free(pt, len);
    return *creds != NULL ? LATCH_OK : LATCH_E_CRYPTO;
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
