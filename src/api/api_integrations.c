/*
 * api_integrations.c - /integrations: Nango's integration (provider config) API.
 *
 * latch extension: `integration_config.oauth_scopes` ("a,b") sets the scopes requested by the
 * client-credentials token call (Nango only offers this through its private dashboard API).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/api_format.h"
#include "core/config.h"
#include "domain/catalog.h"
#include "domain/catalog_link.h"
#include "domain/creds.h"
#include "core/latch_limits.h"
#include "util/json.h"
#include "util/xalloc.h"

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
        json_object_set_new(o, "credentials", json_null());
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
    if (v != NULL && !json_is_null(v)) {
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
    if (!p->linkable && !catalog_oauth2_importable(p)) {
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
