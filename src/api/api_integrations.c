/*
 * api_integrations.c - /integrations: Nango's integration (provider config) API.
 *
 * latch extension: `integration_config.oauth_scopes` ("a,b") sets the scopes requested by the
 * client-credentials token call (Nango only offers this through its private dashboard API).
 *
 * OAUTH2 integrations take Nango's app credentials {type:"OAUTH2", client_id, client_secret,
 * scopes, webhook_secret}: scopes become the integration's oauth_scopes, the rest is sealed
 * (creds_app_aad: bound to env + unique_key, re-sealed on rename). GET ?include=credentials
 * answers them with the secrets masked (latch never returns a secret in full; Nango does).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/api_format.h"
#include "core/config.h"
#include "domain/catalog.h"
#include "domain/creds.h"
#include "domain/oauth_code.h"
#include "core/latch_limits.h"
#include "crypto/vault.h"
#include "util/json.h"
#include "util/xalloc.h"

/* A secret for display: its length hidden, the last 4 characters kept when it is long. */
static json_t *
masked(const char *s)
{
    size_t n = s != NULL ? strlen(s) : 0;
    char out[16];

    if (s == NULL)
        return json_null();
    (void)snprintf(out, sizeof out, "********%s", n >= 16 ? s + n - 4 : "");
    return json_string(out);
}

/* GET ?include=credentials: Nango's IntegrationCredentials, secrets masked; null when none. */
static json_t *
credentials_json(struct api_deps *a, const struct store_integration *i)
{
    json_t *cr = NULL, *o;
    char *aad;

    if (i->credentials_sealed == NULL)
        return json_null();
    aad = creds_app_aad(i->env_id, i->unique_key);
    if (creds_open_aad(a->vault, aad, i->credentials_sealed, &cr) != LATCH_OK) {
        free(aad);
        return json_null();
    }
    free(aad);
    /* copies: creds_free wipes the strings of cr */
    o = json_pack("{s:s, s:s?, s:o, s:o, s:o}", "type", "OAUTH2", "client_id",
                  json_string_value(json_object_get(cr, "client_id")), "client_secret",
                  masked(json_string_value(json_object_get(cr, "client_secret"))), "scopes",
                  i->oauth_scopes != NULL ? json_string(i->oauth_scopes) : json_null(),
                  "webhook_secret",
                  masked(json_string_value(json_object_get(cr, "webhook_secret"))));
    creds_free(cr);
    return o != NULL ? o : json_null();
}

json_t *
api_integration_json(struct api_deps *a, const struct store_integration *i, bool inc_webhook,
                     bool inc_credentials)
{
    const struct catalog_provider *p = catalog_find(a->catalog, i->provider);
    const char *dn = i->display_name;
    char *logo = xasprintf("%s/ui/logo-%s.svg", a->cfg->public_url, i->provider);
    json_t *o;

    if (dn == NULL)
        dn = p != NULL && p->display_name != NULL ? p->display_name : i->provider;
    o = json_pack("{s:s, s:s, s:s, s:s, s:b, s:o, s:o}", "unique_key", i->unique_key, "provider",
                  i->provider, "display_name", dn, "logo", logo, "forward_webhooks",
                  i->forward_webhooks, "created_at", api_time_json(i->created_at, false),
                  "updated_at", api_time_json(i->updated_at, false));
    free(logo);
    if (p != NULL && p->auth_mode != NULL)
        json_object_set_new(o, "auth_mode", json_string(p->auth_mode));
    /* latch's extension, as on GET /providers: the Connect UI offers only what latch links */
    json_object_set_new(o, "latch", json_pack("{s:b}", "linkable", p != NULL && p->linkable));
    if (i->oauth_scopes != NULL)
        json_object_set_new(o, "integration_config",
                            json_pack("{s:s}", "oauth_scopes", i->oauth_scopes));
    if (inc_webhook)
        json_object_set_new(o, "webhook_url", json_null());
    if (inc_credentials)
        json_object_set_new(o, "credentials", credentials_json(a, i));
    return o;
}

static bool
chars_ok(const char *s, const char *extra)
{
    if (s[0] == '\0' || strlen(s) > LATCH_MAX_ID_LEN)
        return false;
    for (const char *p = s; *p != '\0'; p++) {
        unsigned char ch = (unsigned char)*p;

        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9'))
            continue;
        if (strchr(extra, ch) == NULL)
            return false;
    }
    return true;
}

static bool
unique_key_ok(const char *s)
{
    return chars_ok(s, "~:.@ _-");
}

/* A bounded, NUL-free string member or NULL (absent/null); an issue when it is anything else. */
static const char *
cred_string(json_t *o, const char *k, size_t min, size_t max, json_t *errs)
{
    json_t *v = json_object_get(o, k);
    const char *const path[] = {"credentials", k, NULL};
    char msg[120];

    if (v == NULL || json_is_null(v))
        return NULL;
    if (!json_is_string(v) || json_string_length(v) < min || json_string_length(v) > max ||
        strlen(json_string_value(v)) != json_string_length(v)) {
        (void)snprintf(msg, sizeof msg, "Expected a string of %zu to %zu characters", min, max);
        api_issue(errs, "invalid_string", msg, path);
        return NULL;
    }
    return json_string_value(v);
}

/*
 * OAUTH2 app credentials {type:"OAUTH2", client_id, client_secret, scopes?, webhook_secret?}
 * (Nango's IntegrationCredentials): validated, scopes into i->oauth_scopes, the rest kept in
 * i->credentials_sealed as plaintext JSON until write_sealed seals it for the final key.
 */
static void
read_app_credentials(struct api_ctx *c, json_t *v, struct store_integration *i, json_t *errs)
{
    static const char *const allowed[] = {"type",   "client_id",      "client_secret",
                                          "scopes", "webhook_secret", NULL};
    const char *const path[] = {"credentials", NULL};
    const char *type, *id, *secret, *scopes, *wh;
    size_t before = json_array_size(errs);
    json_t *cr;

    (void)c;
    if (!json_is_object(v)) {
        api_issue(errs, "invalid_type", "Expected an object", path);
        return;
    }
    api_strict_keys(v, allowed, path, errs);
    type = json_string_value(json_object_get(v, "type"));
    if (type == NULL || strcmp(type, "OAUTH2") != 0) {
        const char *const tp[] = {"credentials", "type", NULL};

        api_issue(errs, "invalid_value", "Expected \"OAUTH2\" for an OAUTH2 integration", tp);
    }
    id = cred_string(v, "client_id", 1, 255, errs);
    secret = cred_string(v, "client_secret", 1, LATCH_MAX_CLIENT_SECRET_LEN, errs);
    scopes = cred_string(v, "scopes", 0, 1024, errs);
    wh = cred_string(v, "webhook_secret", 0, 255, errs);
    if (id == NULL || secret == NULL) {
        const char *const ip[] = {"credentials", id == NULL ? "client_id" : "client_secret", NULL};

        if (json_array_size(errs) == before)
            api_issue(errs, "invalid_type", "Required", ip);
    }
    if (scopes != NULL && scopes[0] != '\0' && !oauth_scopes_ok(scopes)) {
        const char *const sp[] = {"credentials", "scopes", NULL};

        api_issue(errs, "invalid_string",
                  "Expected scopes separated by commas (letters, digits and :/_.- only)", sp);
    }
    if (json_array_size(errs) > before)
        return;
    free(i->oauth_scopes);
    i->oauth_scopes = scopes != NULL && scopes[0] != '\0' ? xstrdup(scopes) : NULL;
    cr = json_pack("{s:s, s:s}", "client_id", id, "client_secret", secret);
    if (wh != NULL && wh[0] != '\0')
        json_object_set_new(cr, "webhook_secret", json_string(wh));
    json_decref(c->app_creds);
    c->app_creds = cr;
}

/*
 * Seals the app credentials for the integration's final key into i: the new ones of this request
 * (c->app_creds), else, on a rename, the old envelope opened under the old key. False (answered
 * 503) when that fails.
 */
static bool
write_sealed(struct api_ctx *c, struct store_integration *i, const char *old_key)
{
    char *aad = creds_app_aad(i->env_id, i->unique_key);
    json_t *cr = c->app_creds;
    latch_rc rc = LATCH_OK;

    if (cr == NULL && old_key != NULL && i->credentials_sealed != NULL &&
        strcmp(old_key, i->unique_key) != 0) {
        char *old_aad = creds_app_aad(i->env_id, old_key);

        rc = creds_open_aad(c->deps->vault, old_aad, i->credentials_sealed, &cr);
        free(old_aad);
        if (rc != LATCH_OK)
            cr = NULL;
        rc = LATCH_OK; /* unreadable already: left as it is */
    } else if (cr != NULL) {
        json_incref(cr);
    }
    if (cr != NULL) {
        free(i->credentials_sealed);
        i->credentials_sealed = NULL;
        rc = creds_seal_aad(c->deps->vault, aad, cr, &i->credentials_sealed);
        creds_free(cr);
    }
    free(aad);
    if (rc != LATCH_OK) {
        api_store_unavailable(c);
        return false;
    }
    return true;
}

/* Validates the optional fields shared by POST and PATCH into i; adds issues to errs. */
static void
read_common(struct api_ctx *c, const struct catalog_provider *p, struct store_integration *i,
            json_t *errs)
{
    json_t *b = c->body;
    json_t *v;

    v = json_object_get(b, "display_name");
    if (v != NULL) {
        const char *const path[] = {"display_name", NULL};

        if (!json_is_string(v) || json_string_length(v) == 0 ||
            json_string_length(v) > LATCH_MAX_ID_LEN)
            api_issue(errs, "invalid_type", "Expected a string of 1 to 255 characters", path);
        else {
            free(i->display_name);
            i->display_name = xstrdup(json_string_value(v));
        }
    }
    v = json_object_get(b, "forward_webhooks");
    if (v != NULL) {
        const char *const path[] = {"forward_webhooks", NULL};

        if (!json_is_boolean(v))
            api_issue(errs, "invalid_type", "Expected a boolean", path);
        else
            i->forward_webhooks = json_is_true(v);
    }
    v = json_object_get(b, "credentials");
    if (v != NULL && !json_is_null(v) && p != NULL && p->auth_mode != NULL &&
        strcmp(p->auth_mode, "OAUTH2") == 0) {
        read_app_credentials(c, v, i, errs);
    } else if (v != NULL && !json_is_null(v)) {
        const char *const path[] = {"credentials", NULL};
        char msg[160];

        (void)snprintf(msg, sizeof msg,
                       "%s integrations take no credentials: the end user provides them",
                       p != NULL && p->auth_mode ? p->auth_mode : "These");
        api_issue(errs, "custom", msg, path);
    }
    v = json_object_get(b, "integration_config");
    if (v != NULL && !json_is_null(v)) {
        const char *const path[] = {"integration_config", NULL};
        const char *const allowed[] = {"oauth_scopes", NULL};
        json_t *sc;

        if (!json_is_object(v)) {
            api_issue(errs, "invalid_type", "Expected an object", path);
        } else {
            api_strict_keys(v, allowed, path, errs);
            sc = json_object_get(v, "oauth_scopes");
            if (sc != NULL) {
                const char *const sp[] = {"integration_config", "oauth_scopes", NULL};

                if (!json_is_string(sc) || json_string_length(sc) > 1024)
                    api_issue(errs, "invalid_type", "Expected a comma-separated string of scopes",
                              sp);
                else {
                    free(i->oauth_scopes);
                    i->oauth_scopes =
                        json_string_length(sc) > 0 ? xstrdup(json_string_value(sc)) : NULL;
                }
            }
        }
    }
    v = json_object_get(b, "custom");
    if (v != NULL && !json_is_null(v)) {
        const char *const path[] = {"custom", NULL};

        if (!json_is_object(v))
            api_issue(errs, "invalid_type", "Expected an object of strings", path);
        else {
            free(i->custom_json);
            i->custom_json = latch_json_dump(v);
        }
    }
}

void
api_integrations_list(struct api_ctx *c)
{
    struct store_integration *list = NULL;
    size_t n = 0;
    json_t *arr, *allowed = NULL;
    latch_rc rc;

    rc = store_integration_list(c->deps->store, c->env_id, &list, &n);
    if (rc != LATCH_OK) {
        api_store_unavailable(c);
        return;
    }
    if (c->by_session && c->session.allowed_integrations_json != NULL)
        allowed = latch_json_col(c->session.allowed_integrations_json);
    arr = json_array();
    for (size_t k = 0; k < n; k++) {
        if (allowed != NULL && json_is_array(allowed) && json_array_size(allowed) > 0) {
            bool ok;

            ok = api_json_array_has_string(allowed, list[k].unique_key);
            if (!ok)
                continue;
        }
        json_array_append_new(arr, api_integration_json(c->deps, &list[k], false, false));
    }
    if (allowed != NULL)
        json_decref(allowed);
    store_integration_list_free(list, n);
    api_reply(c, 200, json_pack("{s:o}", "data", arr));
}

/*
 * Answers a create or an update and releases what it used: 400 invalid_body when errs holds
 * issues or the unique key is taken (rc LATCH_E_CONFLICT), 503 when the store failed, else the
 * stored integration. Takes errs; clears i.
 */
static void
answer_write(struct api_ctx *c, latch_rc rc, struct store_integration *i, json_t *errs)
{
    if (rc == LATCH_E_CONFLICT) {
        const char *const path[] = {"uniqueKey", NULL};

        api_issue(errs, "invalid_string", "Unique key already exists", path);
    }
    if (json_array_size(errs) > 0) {
        api_error_list(c, 400, "invalid_body", "Invalid request body", errs);
        errs = NULL;
    } else if (rc != LATCH_OK) {
        api_store_unavailable(c);
    } else {
        api_reply(c, 200,
                  json_pack("{s:o}", "data", api_integration_json(c->deps, i, false, false)));
    }
    json_decref(errs);
    store_integration_clear(i);
}

void
api_integration_create(struct api_ctx *c)
{
    static const char *const allowed[] = {"provider",         "unique_key",  "display_name",
                                          "forward_webhooks", "credentials", "integration_config",
                                          "custom",           NULL};
    const char *const root[] = {NULL};
    json_t *errs = json_array();
    json_t *b = c->body;
    const char *provider = NULL, *key = NULL;
    const struct catalog_provider *p = NULL;
    struct store_integration i;
    latch_rc rc = LATCH_OK;

    memset(&i, 0, sizeof i);
    i.forward_webhooks = true;
    if (!json_is_object(b)) {
        api_issue(errs, "invalid_type", "Expected an object", root);
        goto out;
    }
    api_strict_keys(b, allowed, root, errs);
    provider = json_string_value(json_object_get(b, "provider"));
    key = json_string_value(json_object_get(b, "unique_key"));
    if (provider == NULL || !chars_ok(provider, "_-") ||
        (p = catalog_find(c->deps->catalog, provider)) == NULL) {
        const char *const path[] = {"provider", NULL};

        api_issue(errs, "invalid_string", "Invalid provider", path);
    }
    if (key == NULL || !unique_key_ok(key)) {
        const char *const path[] = {"unique_key", NULL};

        api_issue(errs, "invalid_string", "Invalid unique_key", path);
    }
    read_common(c, p, &i, errs);
    if (json_array_size(errs) > 0 || p == NULL) /* p == NULL has its issue in errs */
        goto out;
    if (!p->linkable) {
        char msg[640];

        (void)snprintf(msg, sizeof msg, "latch cannot link %.100s (%.60s, auth mode %.40s): %.400s",
                       catalog_display_name(p), p->name, p->auth_mode ? p->auth_mode : "none",
                       p->unlinkable_reason ? p->unlinkable_reason : "");
        json_decref(errs);
        store_integration_clear(&i);
        api_error(c, 400, "unsupported_auth_mode", msg);
        return;
    }
    i.env_id = c->env_id;
    i.unique_key = xstrdup(key);
    i.provider = xstrdup(provider);
    if (!write_sealed(c, &i, NULL)) {
        json_decref(errs);
        store_integration_clear(&i);
        return;
    }
    rc = store_integration_create(c->deps->store, &i);
out:
    answer_write(c, rc, &i, errs);
}

static bool
load_integration(struct api_ctx *c, struct store_integration *i)
{
    latch_rc rc = store_integration_get(c->deps->store, c->env_id, c->params[0], i);

    if (rc == LATCH_E_NOT_FOUND) {
        char msg[320];

        (void)snprintf(msg, sizeof msg, "Integration \"%.255s\" does not exist", c->params[0]);
        api_error(c, 404, "not_found", msg);
        return false;
    }
    if (rc != LATCH_OK) {
        api_store_unavailable(c);
        return false;
    }
    return true;
}

struct include_probe {
    const char *what;
    bool found;
};

static bool
include_cb(const char *k, const char *v, void *ud)
{
    struct include_probe *s = ud;

    if (v != NULL && (strcmp(k, "include") == 0 || strcmp(k, "include[]") == 0) &&
        strstr(v, s->what) != NULL)
        s->found = true;
    return true;
}

static bool
include_has(struct http_req *req, const char *what)
{
    struct include_probe st = {what, false};

    http_req_query_foreach(req, include_cb, &st);
    return st.found;
}

void
api_integration_get(struct api_ctx *c)
{
    struct store_integration i;

    memset(&i, 0, sizeof i);
    if (!load_integration(c, &i))
        return;
    api_reply(c, 200,
              json_pack("{s:o}", "data",
                        api_integration_json(c->deps, &i, include_has(c->req, "webhook"),
                                             include_has(c->req, "credentials"))));
    store_integration_clear(&i);
}

void
api_integration_patch(struct api_ctx *c)
{
    static const char *const allowed[] = {"unique_key",  "display_name",       "forward_webhooks",
                                          "credentials", "integration_config", "custom",
                                          NULL};
    const char *const root[] = {NULL};
    json_t *errs = json_array();
    struct store_integration i;
    json_t *v;
    char *old_key = NULL;
    latch_rc rc = LATCH_OK;

    memset(&i, 0, sizeof i);
    if (!load_integration(c, &i)) { /* answered */
        json_decref(errs);
        store_integration_clear(&i);
        return;
    }
    if (!json_is_object(c->body)) {
        api_issue(errs, "invalid_type", "Expected an object", root);
        goto out;
    }
    api_strict_keys(c->body, allowed, root, errs);
    v = json_object_get(c->body, "unique_key");
    if (v != NULL) {
        const char *const path[] = {"unique_key", NULL};

        if (!json_is_string(v) || !unique_key_ok(json_string_value(v)))
            api_issue(errs, "invalid_string", "Invalid unique_key", path);
        else {
            free(i.unique_key);
            i.unique_key = xstrdup(json_string_value(v));
        }
    }
    read_common(c, catalog_find(c->deps->catalog, i.provider), &i, errs);
    if (json_array_size(errs) > 0)
        goto out;
    old_key = xstrdup(c->params[0]);
    if (!write_sealed(c, &i, old_key)) {
        free(old_key);
        json_decref(errs);
        store_integration_clear(&i);
        return;
    }
    free(old_key);
    /* a new unique_key re-seals its connections' credentials (bound to it) in the same write */
    rc = store_integration_update(c->deps->store, &i, creds_rebind_cb, c->deps->vault);
out:
    answer_write(c, rc, &i, errs);
}

void
api_integration_delete(struct api_ctx *c)
{
    latch_rc rc = store_integration_delete(c->deps->store, c->env_id, c->params[0]);

    if (rc == LATCH_E_NOT_FOUND) {
        api_error(c, 404, "not_found", "Integration does not exist");
        return;
    }
    if (rc != LATCH_OK) {
        api_store_unavailable(c);
        return;
    }
    api_reply(c, 200, json_pack("{s:b}", "success", 1));
}
