#include "domain/appcreds.h"

#include <stdlib.h>
#include <string.h>

#include "domain/creds.h"
#include "store/store.h"
#include "util/xalloc.h"

latch_rc
integration_app_credentials(struct store *s, struct vault *v, int64_t env_id,
                            const char *unique_key, char **client_id, char **client_secret)
{
    struct store_integration integ;
    json_t *cr = NULL;
    const char *id, *secret;
    char *aad;
    latch_rc rc;

    *client_id = NULL;
    *client_secret = NULL;
    memset(&integ, 0, sizeof integ);
    rc = store_integration_get(s, env_id, unique_key, &integ);
    if (rc != LATCH_OK)
        goto out;
    if (integ.credentials_sealed == NULL) {
        rc = LATCH_E_NOT_FOUND;
        goto out;
    }
    /* sealed by POST/PATCH /integrations under the integration's binding (creds.h) */
    aad = creds_app_aad(integ.env_id, integ.unique_key);
    rc = creds_open_aad(v, aad, integ.credentials_sealed, &cr);
    free(aad);
    if (rc != LATCH_OK)
        goto out;
    id = json_string_value(json_object_get(cr, "client_id"));
    secret = json_string_value(json_object_get(cr, "client_secret"));
    if (id == NULL || id[0] == '\0') {
        rc = LATCH_E_NOT_FOUND;
        goto out;
    }
    *client_id = xstrdup(id);
    *client_secret = xstrdup(secret != NULL ? secret : "");
out:
    creds_free(cr);
    store_integration_clear(&integ);
    return rc;
}

latch_rc
oauth2_app_credentials(struct store *s, struct vault *v, int64_t env_id, const char *unique_key,
                       const json_t *creds, char **client_id, char **client_secret)
{
    const json_t *o = json_object_get(creds, "config_override");
    const char *id = json_string_value(json_object_get(o, "client_id"));
    const char *secret = json_string_value(json_object_get(o, "client_secret"));
    latch_rc rc = LATCH_OK;

    *client_id = NULL;
    *client_secret = NULL;
    /* each overridden value wins over the integration's (Nango's config_override) */
    if (id == NULL || id[0] == '\0' || secret == NULL || secret[0] == '\0')
        rc = integration_app_credentials(s, v, env_id, unique_key, client_id, client_secret);
    if (rc != LATCH_OK && rc != LATCH_E_NOT_FOUND)
        return rc;
    if (id != NULL && id[0] != '\0') {
        free(*client_id);
        *client_id = xstrdup(id);
    }
    if (secret != NULL && secret[0] != '\0') {
        appcreds_free(NULL, *client_secret);
        *client_secret = xstrdup(secret);
    }
    if (*client_id == NULL) {
        appcreds_free(NULL, *client_secret);
        *client_secret = NULL;
        return LATCH_E_NOT_FOUND;
    }
    if (*client_secret == NULL)
        *client_secret = xstrdup("");
    return LATCH_OK;
}

void
appcreds_free(char *client_id, char *client_secret)
{
    free(client_id);
    if (client_secret != NULL)
        explicit_bzero(client_secret, strlen(client_secret));
    free(client_secret);
}
