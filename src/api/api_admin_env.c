/*
 * api_admin_env.c - the dashboard's per-environment routes (see api_admin.h): integrations,
 * connections (search, status at a glance, detail, delete, reconnect links), settings (webhook
 * URLs, a test delivery, the signing key's fingerprint), API keys (list, create once, label,
 * revoke). Integrations and connect links go through the public API's own handlers, so the
 * dashboard validates exactly as the API does.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_admin.h"
#include "api/api_validate.h"
#include "core/config.h"
#include "core/log.h"
#include "crypto/vault.h"
#include "domain/catalog.h"
#include "net/outbound.h"
#include "util/clock.h"
#include "util/json.h"
#include "util/timefmt.h"
#include "util/str.h"
#include "util/xalloc.h"

/* A token expiring within this is "expiring". */
#define EXPIRING_MS (15LL * 60 * 1000)
#define PAGE 50

static json_t *
time_or_null(int64_t ms)
{
    return api_time_json(ms, false);
}

/*
 * A dashboard write is a management operation of the log (what: as on the public API where it
 * has a route there), the signed-in admin's email as its actor.
 */
static void
adm_op(struct api_ctx *c, const char *what, const char *admin)
{
    api_op_begin(c, what);
    api_op_detail(c, "actor", json_string(admin));
}

void
adm_environments(struct api_ctx *c, const char *admin)
{
    struct store_env *v = NULL;
    size_t n = 0;
    json_t *arr;

    (void)admin;
    if (store_env_list(c->deps->store, &v, &n) != LATCH_OK) {
        api_store_unavailable(c);
        return;
    }
    arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(
            arr, json_pack("{s:I, s:s}", "id", (json_int_t)v[i].id, "name", v[i].name));
    store_env_list_free(v, n);
    api_reply(c, 200, json_pack("{s:o}", "data", arr));
}

void
adm_providers(struct api_ctx *c, const char *admin)
{
    const struct catalog *cat = c->deps->catalog;
    json_t *arr = json_array();

    (void)admin;
    for (size_t i = 0; i < catalog_count(cat); i++) {
        const struct catalog_provider *p = catalog_at(cat, i);

        json_array_append_new(arr, json_pack("{s:s, s:s, s:s}", "name", p->name, "display_name",
                                             p->display_name != NULL ? p->display_name : p->name,
                                             "auth_mode", p->auth_mode ? p->auth_mode : ""));
    }
    api_reply(c, 200, json_pack("{s:o}", "data", arr));
}

/* ---- integrations: the public API's handlers, on the dashboard's environment ---- */

void
adm_integrations(struct api_ctx *c, const char *admin)
{
    struct store_integration *v = NULL;
    size_t n = 0;
    json_t *arr;

    (void)admin;
    if (store_integration_list(c->deps->store, c->env_id, &v, &n) != LATCH_OK) {
        api_store_unavailable(c);
        return;
    }
    arr = json_array();
    for (size_t i = 0; i < n; i++) {
        const struct catalog_provider *p = catalog_find(c->deps->catalog, v[i].provider);

        json_array_append_new(
            arr,
            json_pack("{s:s, s:s, s:s?, s:s, s:o, s:o}", "unique_key", v[i].unique_key, "provider",
                      v[i].provider, "display_name", v[i].display_name, "provider_name",
                      p != NULL && p->display_name != NULL ? p->display_name : v[i].provider,
                      "created_at", time_or_null(v[i].created_at), "updated_at",
                      time_or_null(v[i].updated_at)));
    }
    store_integration_list_free(v, n);
    api_reply(c, 200, json_pack("{s:o}", "data", arr));
}

void
adm_integration_create(struct api_ctx *c, const char *admin)
{
    adm_op(c, "integration.create", admin);
    api_integration_create(c);
}

void
adm_integration_patch(struct api_ctx *c, const char *admin)
{
    adm_op(c, "integration.update", admin);
    api_integration_patch(c);
}

void
adm_integration_delete(struct api_ctx *c, const char *admin)
{
    adm_op(c, "integration.delete", admin);
    api_integration_delete(c);
}

/* ---- connections ---- */

/* Status at a glance: the code and its words. */
static void
conn_status(const struct store_connection *k, int64_t now, const char **code, const char **label)
{
    if (k->needs_reauth) {
        *code = "needs_reauth";
        *label = "Needs re-authorisation";
    } else if (k->auth_error_json != NULL && k->last_refresh_failure > k->last_refresh_success) {
        *code = "refresh_failing";
        *label = "Refresh failing";
    } else if (k->expires_at != 0 && k->expires_at <= now) {
        *code = "expiring";
        *label = "Token expired";
    } else if (k->expires_at != 0 && k->expires_at - now < EXPIRING_MS) {
        *code = "expiring";
        *label = "Token expiring";
    } else {
        *code = "healthy";
        *label = "Healthy";
    }
}

/* {id, email, display_name} of the end user, or null (no other field: it may be anything). */
static json_t *
end_user_brief(const char *end_user_json)
{
    json_t *eu = latch_json_col(end_user_json), *o;

    if (!json_is_object(eu)) {
        json_decref(eu);
        return json_null();
    }
    o = json_object();
    json_object_set(o, "id", json_object_get(eu, "id"));
    if (json_is_string(json_object_get(eu, "email")))
        json_object_set(o, "email", json_object_get(eu, "email"));
    if (json_is_string(json_object_get(eu, "display_name")))
        json_object_set(o, "display_name", json_object_get(eu, "display_name"));
    json_decref(eu);
    return o;
}

static json_t *
conn_brief(const struct store_connection *k, int64_t now)
{
    const char *code, *label;

    conn_status(k, now, &code, &label);
    return json_pack("{s:s, s:s, s:s, s:o, s:s, s:s, s:o, s:o, s:o, s:o}", "connection_id",
                     k->connection_id, "provider_config_key", k->provider_config_key, "provider",
                     k->provider, "end_user", end_user_brief(k->end_user_json), "status", code,
                     "status_label", label, "expires_at", time_or_null(k->expires_at),
                     "last_refresh", time_or_null(k->last_refresh_success), "created_at",
                     time_or_null(k->created_at), "last_fetched_at",
                     time_or_null(k->last_fetched_at));
}

void
adm_connections(struct api_ctx *c, const char *admin)
{
    struct store_conn_filter f;
    struct store_connection *v = NULL;
    size_t n = 0;
    const char *q = http_req_query(c->req, "q");
    const char *off = http_req_query(c->req, "offset");
    const char *err = NULL;
    int64_t now = latch_now_ms();
    json_t *arr;

    (void)admin;
    memset(&f, 0, sizeof f);
    f.search = q != NULL && q[0] != '\0' ? q : NULL;
    f.limit = PAGE + 1;
    f.offset = off != NULL ? latch_strtonum(off, 0, 1000000, &err) : 0;
    if (err != NULL || (q != NULL && strlen(q) > 256)) {
        api_error(c, 400, "invalid_query_params", "Bad search or offset.");
        return;
    }
    if (store_connection_list(c->deps->store, c->env_id, &f, &v, &n) != LATCH_OK) {
        api_store_unavailable(c);
        return;
    }
    arr = json_array();
    for (size_t i = 0; i < n && i < PAGE; i++)
        json_array_append_new(arr, conn_brief(&v[i], now));
    api_reply(c, 200,
              json_pack("{s:o, s:b, s:I}", "data", arr, "has_more", n > PAGE, "offset",
                        (json_int_t)f.offset));
    store_connection_list_free(v, n);
}

/* The connection named by ?integration=&connection_id=, or an answer and false. */
static bool
conn_from_query(struct api_ctx *c, struct store_connection *k)
{
    const char *key = http_req_query(c->req, "integration");
    const char *id = http_req_query(c->req, "connection_id");
    latch_rc rc;

    memset(k, 0, sizeof *k);
    if (key == NULL || id == NULL) {
        api_error(c, 400, "invalid_query_params", "integration and connection_id are required.");
        return false;
    }
    rc = store_connection_get(c->deps->store, c->env_id, key, id, k);
    if (rc == LATCH_E_NOT_FOUND) {
        api_error(c, 404, "unknown_connection", "No such connection.");
        return false;
    }
    if (rc != LATCH_OK) {
        api_store_unavailable(c);
        return false;
    }
    /* never kept longer than needed, never shown */
    if (k->credentials_sealed != NULL) {
        explicit_bzero(k->credentials_sealed, strlen(k->credentials_sealed));
        free(k->credentials_sealed);
        k->credentials_sealed = NULL;
    }
    return true;
}

void
adm_connection_get(struct api_ctx *c, const char *admin)
{
    struct store_connection k;
    json_t *o, *e;

    (void)admin;
    if (!conn_from_query(c, &k))
        return;
    o = conn_brief(&k, latch_now_ms());
    json_object_set_new(o, "updated_at", time_or_null(k.updated_at));
    json_object_set_new(o, "last_refresh_failure", time_or_null(k.last_refresh_failure));
    json_object_set_new(o, "next_refresh_at", time_or_null(k.next_refresh_at));
    json_object_set_new(o, "refresh_attempts", json_integer(k.refresh_attempts));
    json_object_set_new(o, "needs_reauth", json_boolean(k.needs_reauth));
    json_object_set_new(o, "metadata", latch_json_col(k.metadata_json));
    json_object_set_new(o, "tags", latch_json_col(k.tags_json));
    json_object_set_new(o, "connection_config", latch_json_col(k.connection_config_json));
    e = latch_json_col(k.auth_error_json);
    json_object_set_new(o, "last_error", json_is_object(e) ? e : json_null());
    if (!json_is_object(e))
        json_decref(e);
    api_reply(c, 200, json_pack("{s:o}", "data", o));
    store_connection_clear(&k);
}

void
adm_connection_delete(struct api_ctx *c, const char *admin)
{
    struct store_connection k;
    latch_rc rc;

    adm_op(c, "connection.delete", admin);
    if (!conn_from_query(c, &k))
        return;
    rc = store_connection_delete(c->deps->store, c->env_id, k.provider_config_key, k.connection_id);
    if (rc == LATCH_OK) {
        api_op_conn(c, k.provider_config_key, k.provider, k.connection_id);
        log_info("admin deleted a connection", "conn_row=%lld", (long long)k.id);
        api_reply(c, 200, json_pack("{s:{s:b}}", "data", "deleted", 1));
    } else if (rc == LATCH_E_NOT_FOUND) {
        api_error(c, 404, "unknown_connection", "No such connection.");
    } else {
        api_store_unavailable(c);
    }
    store_connection_clear(&k);
}

/*
 * The operations log, scoped to the dashboard's environment: GET /latch/operations itself (same
 * filters, cursor and answer; docs/api.md), so both read the log the same way.
 */
void
adm_connection_history(struct api_ctx *c, const char *admin)
{
    (void)admin;
    if (http_req_query(c->req, "integration") == NULL ||
        http_req_query(c->req, "connection_id") == NULL) {
        api_error(c, 400, "invalid_query_params", "integration and connection_id are required.");
        return;
    }
    api_operations_list(c);
}

void
adm_operations(struct api_ctx *c, const char *admin)
{
    (void)admin;
    api_operations_list(c);
}

/*
 * POST {integration, end_user_id, end_user_email?, display_name?, connection_id?}: a connect
 * link for a new connection, or (connection_id) a reconnect link for that one. Built by the
 * public API's POST /connect/sessions(/reconnect) handlers.
 */
void
adm_connect_link(struct api_ctx *c, const char *admin)
{
    const char *key = json_string_value(json_object_get(c->body, "integration"));
    const char *uid = json_string_value(json_object_get(c->body, "end_user_id"));
    const char *mail = json_string_value(json_object_get(c->body, "end_user_email"));
    const char *name = json_string_value(json_object_get(c->body, "display_name"));
    const char *cid = json_string_value(json_object_get(c->body, "connection_id"));
    char *okey, *ocid;
    json_t *body, *eu;

    adm_op(c, cid != NULL ? "connect_session.reconnect" : "connect_session.create", admin);
    if (key == NULL || key[0] == '\0' || ((uid == NULL || uid[0] == '\0') && cid == NULL)) {
        api_error(c, 400, "invalid_body", "Choose an integration and enter the end user's id.");
        return;
    }
    eu = json_object();
    if (uid != NULL && uid[0] != '\0')
        json_object_set_new(eu, "id", json_string(uid));
    if (mail != NULL && mail[0] != '\0')
        json_object_set_new(eu, "email", json_string(mail));
    if (name != NULL && name[0] != '\0')
        json_object_set_new(eu, "display_name", json_string(name));
    if (cid != NULL) {
        body = json_pack("{s:s, s:s}", "connection_id", cid, "integration_id", key);
        if (json_object_size(eu) > 0 && json_object_get(eu, "id") != NULL)
            json_object_set(body, "end_user", eu);
    } else {
        body = json_pack("{s:O, s:[s]}", "end_user", eu, "allowed_integrations", key);
    }
    json_decref(eu);
    okey = xstrdup(key); /* key and cid live in the old body */
    ocid = cid != NULL ? xstrdup(cid) : NULL;
    json_decref(c->body);
    c->body = body;
    if (cid != NULL)
        api_connect_session_reconnect(c);
    else
        api_connect_session_create(c);
    /* names in the log only for an accepted request (a refused one may carry anything) */
    if (http_req_status(c->req) != 0 && http_req_status(c->req) < 400)
        api_op_conn(c, okey, NULL, ocid);
    free(okey);
    free(ocid);
}

/* ---- settings ---- */

/* The first 16 hex digits of SHA-256 of the signing key ("" when it cannot be read). */
static void
signing_key_fingerprint(struct api_ctx *c, const struct store_env *e, char out[17])
{
    char *aad = xasprintf("environments:%lld:webhook_key", (long long)e->id);
    unsigned char *pt = NULL;
    size_t len = 0;
    char hex[65];

    out[0] = '\0';
    if (e->webhook_key_sealed != NULL &&
        vault_open(c->deps->vault, aad, e->webhook_key_sealed, &pt, &len) == LATCH_OK) {
        vault_sha256_hex(pt, len, hex);
        memcpy(out, hex, 16);
        out[16] = '\0';
        vault_plain_free(pt, len);
    }
    free(aad);
}

void
adm_settings(struct api_ctx *c, const char *admin)
{
    const struct store_env *e = api_env(c);
    char fp[17];

    (void)admin;
    if (e == NULL) {
        api_store_unavailable(c);
        return;
    }
    signing_key_fingerprint(c, e, fp);
    api_reply(c, 200,
              json_pack("{s:{s:I, s:s, s:s?, s:s?, s:b, s:b, s:s}}", "data", "id",
                        (json_int_t)e->id, "name", e->name, "webhook_url", e->webhook_url,
                        "webhook_url_secondary", e->webhook_url_secondary, "on_auth_creation",
                        e->on_auth_creation, "on_auth_refresh_error", e->on_auth_refresh_error,
                        "webhook_signing_key_fingerprint", fp));
}

/* PATCH {webhook_url?, webhook_url_secondary?, on_auth_creation?, on_auth_refresh_error?} */
void
adm_settings_patch(struct api_ctx *c, const char *admin)
{
    static const char *const allowed[] = {"webhook_url", "webhook_url_secondary",
                                          "on_auth_creation", "on_auth_refresh_error", NULL};
    const char *const root[] = {NULL};
    const struct store_env *cur = api_env(c);
    struct store_env e;
    json_t *errs = json_array(), *v;
    latch_rc rc;

    adm_op(c, "environment.update", admin);
    if (cur == NULL) {
        json_decref(errs);
        api_store_unavailable(c);
        return;
    }
    if (!json_is_object(c->body)) {
        api_error_list(c, 400, "invalid_body", "Invalid request body", errs);
        return;
    }
    api_strict_keys(c->body, allowed, root, errs);
    if ((v = json_object_get(c->body, "webhook_url")) != NULL)
        (void)apiv_webhook_url(v, "webhook_url", errs);
    if ((v = json_object_get(c->body, "webhook_url_secondary")) != NULL)
        (void)apiv_webhook_url(v, "webhook_url_secondary", errs);
    for (int i = 2; i < 4; i++) {
        v = json_object_get(c->body, allowed[i]);
        if (v != NULL && !json_is_boolean(v)) {
            const char *const path[] = {allowed[i], NULL};

            api_issue(errs, "invalid_type", "Expected a boolean", path);
        }
    }
    if (json_array_size(errs) > 0) {
        api_error_list(c, 400, "invalid_body", "Invalid request body", errs);
        return;
    }
    json_decref(errs);
    e = *cur; /* borrowed strings; replaced ones below are owned by the body */
    if ((v = json_object_get(c->body, "webhook_url")) != NULL)
        e.webhook_url = json_string_length(v) > 0 ? (char *)(uintptr_t)json_string_value(v) : NULL;
    if ((v = json_object_get(c->body, "webhook_url_secondary")) != NULL)
        e.webhook_url_secondary =
            json_string_length(v) > 0 ? (char *)(uintptr_t)json_string_value(v) : NULL;
    if ((v = json_object_get(c->body, "on_auth_creation")) != NULL)
        e.on_auth_creation = json_is_true(v);
    if ((v = json_object_get(c->body, "on_auth_refresh_error")) != NULL)
        e.on_auth_refresh_error = json_is_true(v);
    rc = store_env_update_webhooks(c->deps->store, &e);
    if (rc != LATCH_OK) {
        api_store_unavailable(c);
        return;
    }
    c->env_loaded = false;
    store_env_clear(&c->env);
    adm_settings(c, admin);
}

/*
 * POST: sends a signed test event to each webhook URL now and reports what came back (status,
 * time, the transport error), without the outbox: the answer is the result.
 */
void
adm_webhook_test(struct api_ctx *c, const char *admin)
{
    const struct store_env *e = api_env(c);
    const char *urls[2];
    json_t *results = json_array();
    char *aad, *body;
    unsigned char *key = NULL;
    size_t klen = 0;
    char hmac[65], now_s[40];

    adm_op(c, "webhook.test", admin);
    if (e == NULL) {
        json_decref(results);
        api_store_unavailable(c);
        return;
    }
    urls[0] = e->webhook_url;
    urls[1] = e->webhook_url_secondary;
    if (urls[0] == NULL && urls[1] == NULL) {
        json_decref(results);
        api_error(c, 400, "no_webhook_url", "Set a webhook URL first.");
        return;
    }
    aad = xasprintf("environments:%lld:webhook_key", (long long)e->id);
    if (e->webhook_key_sealed == NULL ||
        vault_open(c->deps->vault, aad, e->webhook_key_sealed, &key, &klen) != LATCH_OK) {
        free(aad);
        json_decref(results);
        api_error(c, 500, "signing_key_unavailable", "The webhook signing key cannot be read.");
        return;
    }
    free(aad);
    latch_fmt_time(latch_now_ms(), false, now_s);
    {
        json_t *b = json_pack("{s:s, s:s, s:s, s:s}", "type", "test", "from", "latch",
                              "environment", e->name, "sentAt", now_s);

        body = json_dumps(b, JSON_COMPACT | JSON_SORT_KEYS);
        json_decref(b);
    }
    vault_hmac_sha256_hex(key, klen, body, strlen(body), hmac);
    vault_plain_free(key, klen);
    for (int i = 0; i < 2; i++) {
        struct outbound_header h[3] = {
            {"Content-Type", "application/json"},
            {"X-Nango-Hmac-Sha256", hmac},
            {"User-Agent", "latch-webhook-test"},
        };
        struct outbound_req r;
        struct outbound_resp resp;
        int64_t t0;
        latch_rc rc;

        if (urls[i] == NULL)
            continue;
        memset(&r, 0, sizeof r);
        memset(&resp, 0, sizeof resp);
        r.method = "POST";
        r.url = urls[i];
        r.headers = h;
        r.n_headers = 3;
        r.body = body;
        r.body_len = strlen(body);
        r.timeout_ms = c->deps->cfg->webhook_timeout_ms;
        r.max_response = 4096;
        t0 = latch_mono_ms();
        rc = outbound_fetch_sync(c->deps->outbound, &r, &resp);
        json_array_append_new(
            results,
            json_pack("{s:s, s:s, s:I, s:b, s:I, s:s?}", "which", i == 0 ? "primary" : "secondary",
                      "url", urls[i], "status", (json_int_t)resp.status, "ok",
                      rc == LATCH_OK && resp.rc == LATCH_OK && resp.status >= 200 &&
                          resp.status < 300,
                      "duration_ms", (json_int_t)(latch_mono_ms() - t0), "error",
                      rc != LATCH_OK        ? latch_strerror(rc)
                      : resp.rc != LATCH_OK ? (resp.error[0] ? resp.error : latch_strerror(resp.rc))
                                            : NULL));
        outbound_resp_clear(&resp);
    }
    free(body);
    api_reply(c, 200, json_pack("{s:o}", "data", results));
}

/* ---- API keys ---- */

/* A label: 1..100 printable characters; NULL (and an answer) otherwise. */
static const char *
key_label(struct api_ctx *c)
{
    const char *l = json_string_value(json_object_get(c->body, "label"));

    if (l == NULL || l[0] == '\0' || strlen(l) > 100 || !latch_utf8_clean(l)) {
        api_error(c, 400, "invalid_body", "A label of 1 to 100 characters is required.");
        return NULL;
    }
    return l;
}

void
adm_keys(struct api_ctx *c, const char *admin)
{
    struct store_apikey *v = NULL;
    size_t n = 0;
    json_t *arr;

    (void)admin;
    if (store_apikey_list(c->deps->store, c->env_id, &v, &n) != LATCH_OK) {
        api_store_unavailable(c);
        return;
    }
    arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(
            arr, json_pack("{s:I, s:s?, s:o, s:o, s:b}", "id", (json_int_t)v[i].id, "label",
                           v[i].label, "created_at", time_or_null(v[i].created_at), "revoked_at",
                           time_or_null(v[i].revoked_at), "active", v[i].revoked_at == 0));
    store_apikey_list_free(v, n);
    api_reply(c, 200, json_pack("{s:o}", "data", arr));
}

/* POST {label}: a new secret key, returned once (the store keeps only its keyed hash). */
void
adm_key_create(struct api_ctx *c, const char *admin)
{
    const char *label = key_label(c);
    char key[37];
    unsigned char h[32];

    adm_op(c, "api_key.create", admin);
    if (label == NULL)
        return;
    vault_uuid_v4(key);
    vault_index_hash(c->deps->vault, key, h);
    if (store_apikey_add(c->deps->store, c->env_id, h, label) != LATCH_OK) {
        explicit_bzero(key, sizeof key);
        api_store_unavailable(c);
        return;
    }
    log_info("admin created an API key", "env=%lld", (long long)c->env_id);
    api_reply_secret(c, 201,
                     json_pack("{s:{s:s, s:s}}", "data", "secret_key", key, "label", label));
    explicit_bzero(key, sizeof key);
}

static bool
key_id(struct api_ctx *c, int64_t *id)
{
    const char *err = NULL;

    *id = latch_strtonum(c->params[0], 1, INT64_MAX, &err);
    if (err != NULL) {
        api_error(c, 404, "unknown_key", "No such API key.");
        return false;
    }
    return true;
}

void
adm_key_patch(struct api_ctx *c, const char *admin)
{
    const char *label;
    int64_t id;
    latch_rc rc;

    adm_op(c, "api_key.update", admin);
    if (!key_id(c, &id) || (label = key_label(c)) == NULL)
        return;
    rc = store_apikey_set_label(c->deps->store, c->env_id, id, label);
    if (rc == LATCH_E_NOT_FOUND)
        api_error(c, 404, "unknown_key", "No such API key.");
    else if (rc != LATCH_OK)
        api_store_unavailable(c);
    else
        api_reply(c, 200,
                  json_pack("{s:{s:I, s:s}}", "data", "id", (json_int_t)id, "label", label));
}

void
adm_key_revoke(struct api_ctx *c, const char *admin)
{
    int64_t id;
    latch_rc rc;

    adm_op(c, "api_key.revoke", admin);
    if (!key_id(c, &id))
        return;
    rc = store_apikey_revoke(c->deps->store, c->env_id, id);
    if (rc == LATCH_E_NOT_FOUND)
        api_error(c, 404, "unknown_key", "No such live API key.");
    else if (rc != LATCH_OK)
        api_store_unavailable(c);
    else
        api_reply(c, 200, json_pack("{s:{s:I, s:b}}", "data", "id", (json_int_t)id, "revoked", 1));
}
