/*
 * api_connect.c - connect sessions (/connect/sessions, /connect/session) and the
 * client-credentials link call the Connect UI makes (POST /oauth2/auth/:providerConfigKey).
 *
 * The link call validates every input against the provider definition before any network
 * call (instance enum, credential patterns), then runs the token exchange through outbound
 * (the pool thread is released: the request is suspended), stores the connection encrypted on
 * a worker thread (never on the curl thread: the upsert fsyncs),
 * queues the auth webhook, and answers {providerConfigKey, connectionId}.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/api_link.h"
#include "api/api_validate.h"
#include "core/config.h"
#include "domain/catalog.h"
#include "domain/creds.h"
#include "core/latch_limits.h"
#include "core/log.h"
#include "domain/oauth_cc.h"
#include "domain/verify.h"
#include "util/json.h"
#include "util/str.h"
#include "util/timefmt.h"
#include "util/xalloc.h"
#include "crypto/vault.h"
#include "domain/webhook.h"
#include "util/clock.h"

#define SESSION_PREFIX "nango_connect_session_"

/* ---- session creation ---- */

static bool
integration_exists(struct api_ctx *c, const char *key)
{
    struct store_integration i;
    latch_rc rc;

    memset(&i, 0, sizeof i);
    rc = store_integration_get(c->deps->store, c->env_id, key, &i);
    store_integration_clear(&i);
    return rc == LATCH_OK;
}

/* Validates and stores a session; reconnect_row != 0 for reconnect sessions. */
static void
create_session(struct api_ctx *c, json_t *b, json_t *errs, int64_t reconnect_row,
               const char *reconnect_integration)
{
    struct store_session s;
    json_t *eu = NULL, *org = NULL, *tags = NULL, *allowed = NULL, *defaults = NULL, *v;
    json_t *all_tags = NULL, *cfgdef = NULL;
    char token[sizeof SESSION_PREFIX + 64];
    char hex[65];
    char *link = NULL;
    char when[40];
    latch_rc rc;

    memset(&s, 0, sizeof s);
    v = json_object_get(b, "end_user");
    if (v != NULL)
        eu = apiv_end_user(v, "end_user", errs);
    else if (json_object_get(b, "tags") == NULL && reconnect_row == 0) {
        const char *const path[] = {"end_user", NULL};

        api_issue(errs, "invalid_type", "Invalid input: expected object, received undefined", path);
    }
    v = json_object_get(b, "organization");
    if (v != NULL && !json_is_null(v))
        org = apiv_organization(v, "organization", errs);
    v = json_object_get(b, "tags");
    if (v != NULL)
        tags = apiv_tags(v, "tags", errs);
    v = json_object_get(b, "allowed_integrations");
    if (reconnect_integration != NULL) {
        allowed = json_pack("[s]", reconnect_integration);
    } else if (v != NULL && !json_is_null(v)) {
        size_t i;
        json_t *x;

        if (!json_is_array(v) || json_array_size(v) > 100) {
            const char *const path[] = {"allowed_integrations", NULL};

            api_issue(errs, "invalid_type", "Expected an array of integration keys", path);
        } else {
            json_array_foreach(v, i, x)
            {
                char idx[24];
                const char *const path[] = {"allowed_integrations", idx, NULL};

                (void)snprintf(idx, sizeof idx, "%zu", i);
                if (!json_is_string(x) || !integration_exists(c, json_string_value(x)))
                    api_issue(errs, "custom", "Integration does not exist", path);
            }
            if (json_array_size(v) > 0)
                allowed = json_incref(v);
        }
    }
    v = json_object_get(b, "integrations_config_defaults");
    if (v != NULL && !json_is_null(v)) {
        const char *k;
        json_t *d;

        if (!json_is_object(v)) {
            const char *const path[] = {"integrations_config_defaults", NULL};

            api_issue(errs, "invalid_type", "Expected an object", path);
        } else {
            defaults = json_object();
            json_object_foreach(v, k, d)
            {
                static const char *const dk[] = {"user_scopes", "authorization_params",
                                                 "connection_config", NULL};
                const char *const path[] = {"integrations_config_defaults", k, NULL};
                json_t *cc;

                if (!integration_exists(c, k)) {
                    api_issue(errs, "custom", "Integration does not exist", path);
                    continue;
                }
                if (!json_is_object(d)) {
                    api_issue(errs, "invalid_type", "Expected an object", path);
                    continue;
                }
                api_strict_keys(d, dk, path, errs);
                cc = json_object_get(d, "connection_config");
                if (cc != NULL && !json_is_object(cc)) {
                    api_issue(errs, "invalid_type", "Expected an object", path);
                    continue;
                }
                /* deprecated connection_config.webhook_url -> webhook_url_override */
                if (json_is_string(json_object_get(cc, "webhook_url")) &&
                    json_object_get(b, "webhook_url_override") == NULL)
                    json_object_set(b, "webhook_url_override", json_object_get(cc, "webhook_url"));
                json_object_set_new(defaults, k, json_deep_copy(d));
                json_object_del(json_object_get(json_object_get(defaults, k), "connection_config"),
                                "webhook_url");
            }
        }
    }
    v = json_object_get(b, "overrides");
    if (v != NULL && !json_is_null(v) && !json_is_object(v)) {
        const char *const path[] = {"overrides", NULL};

        api_issue(errs, "invalid_type", "Expected an object", path);
    }
    v = json_object_get(b, "webhook_url_override");
    if (v != NULL)
        (void)apiv_webhook_url(v, "webhook_url_override", errs);
    if (json_array_size(errs) > 0) {
        api_error_list(c, 400, "invalid_body", "Invalid request body", json_incref(errs));
        goto out;
    }

    vault_random_hex(hex, 32);
    (void)snprintf(token, sizeof token, "%s%s", SESSION_PREFIX, hex);
    explicit_bzero(hex, sizeof hex);
    s.env_id = c->env_id;
    vault_index_hash(c->deps->vault, token, s.token_hash);
    s.end_user_json = eu != NULL ? latch_json_dump(eu) : NULL;
    s.organization_json = org != NULL ? latch_json_dump(org) : NULL;
    s.allowed_integrations_json = allowed != NULL ? latch_json_dump(allowed) : NULL;
    cfgdef = json_object();
    if (defaults != NULL)
        json_object_set(cfgdef, "defaults", defaults);
    if (json_is_object(json_object_get(b, "overrides")))
        json_object_set(cfgdef, "overrides", json_object_get(b, "overrides"));
    s.config_defaults_json = json_object_size(cfgdef) > 0 ? latch_json_dump(cfgdef) : NULL;
    all_tags = apiv_tags_from_end_user(eu, org);
    if (json_is_object(json_object_get(eu, "tags")))
        json_object_update(all_tags, json_object_get(eu, "tags"));
    if (tags != NULL)
        json_object_update(all_tags, tags);
    s.tags_json = latch_json_dump(all_tags);
    v = json_object_get(b, "webhook_url_override");
    s.webhook_url_override =
        json_is_string(v) && json_string_length(v) > 0 ? xstrdup(json_string_value(v)) : NULL;
    s.connection_row_id = reconnect_row;
    s.expires_at = latch_now_ms() + (int64_t)LATCH_CONNECT_SESSION_TTL_S * 1000;
    rc = store_session_create(c->deps->store, &s);
    if (rc != LATCH_OK) {
        api_store_unavailable(c);
        goto out;
    }
    link = xasprintf("%s/ui/?session_token=%s", c->deps->cfg->public_url, token);
    latch_fmt_time(s.expires_at, false, when);
    api_reply(c, 201,
              json_pack("{s:{s:s, s:s, s:s}}", "data", "token", token, "connect_link", link,
                        "expires_at", when));
out:
    explicit_bzero(token, sizeof token);
    if (link != NULL)
        explicit_bzero(link, strlen(link));
    free(link);
    json_decref(eu);
    json_decref(org);
    json_decref(tags);
    json_decref(allowed);
    json_decref(defaults);
    json_decref(all_tags);
    json_decref(cfgdef);
    store_session_clear(&s);
}

void
api_connect_session_create(struct api_ctx *c)
{
    static const char *const allowed[] = {"end_user",
                                          "organization",
                                          "allowed_integrations",
                                          "integrations_config_defaults",
                                          "overrides",
                                          "webhook_url_override",
                                          "tags",
                                          NULL};
    const char *const root[] = {NULL};
    json_t *errs = json_array();

    if (!json_is_object(c->body)) {
        api_issue(errs, "invalid_type", "Expected an object", root);
        api_error_list(c, 400, "invalid_body", "Invalid request body", errs);
        return;
    }
    api_strict_keys(c->body, allowed, root, errs);
    create_session(c, c->body, errs, 0, NULL);
    json_decref(errs);
}

void
api_connect_session_reconnect(struct api_ctx *c)
{
    static const char *const allowed[] = {"connection_id",
                                          "integration_id",
                                          "end_user",
                                          "organization",
                                          "integrations_config_defaults",
                                          "overrides",
                                          "webhook_url_override",
                                          "tags",
                                          NULL};
    const char *const root[] = {NULL};
    json_t *errs = json_array();
    const char *cid, *iid;
    struct store_connection conn;
    latch_rc rc;

    memset(&conn, 0, sizeof conn);
    if (!json_is_object(c->body)) {
        api_issue(errs, "invalid_type", "Expected an object", root);
        api_error_list(c, 400, "invalid_body", "Invalid request body", errs);
        return;
    }
    api_strict_keys(c->body, allowed, root, errs);
    cid = json_string_value(json_object_get(c->body, "connection_id"));
    iid = json_string_value(json_object_get(c->body, "integration_id"));
    if (cid == NULL) {
        const char *const path[] = {"connection_id", NULL};

        api_issue(errs, "invalid_type", "Invalid input: expected string, received undefined", path);
    }
    if (iid == NULL) {
        const char *const path[] = {"integration_id", NULL};

        api_issue(errs, "invalid_type", "Invalid input: expected string, received undefined", path);
    }
    if (json_array_size(errs) > 0) {
        api_error_list(c, 400, "invalid_body", "Invalid request body", errs);
        return;
    }
    rc = store_connection_get(c->deps->store, c->env_id, iid, cid, &conn);
    if (rc == LATCH_E_NOT_FOUND) {
        json_decref(errs);
        api_error(c, 400, "invalid_body", "ConnectionID or IntegrationId does not exists");
        return;
    }
    if (rc != LATCH_OK) {
        json_decref(errs);
        api_store_unavailable(c);
        return;
    }
    create_session(c, c->body, errs, conn.id, iid);
    store_connection_clear(&conn);
    json_decref(errs);
}

void
api_connect_session_get(struct api_ctx *c)
{
    struct store_session *s = &c->session;
    json_t *eu = latch_json_col(s->end_user_json);
    json_t *org = latch_json_col(s->organization_json);
    json_t *data, *cd;

    if (json_is_object(eu)) {
        json_object_set(eu, "organization", json_is_object(org) ? org : json_null());
    } else {
        json_decref(eu);
        eu = json_null();
    }
    data = json_pack("{s:o, s:{s:b, s:s, s:{s:{s:s}, s:{s:s}}}}", "endUser", eu,
                     "connectUISettings", "showWatermark", 0, "defaultTheme", "system", "theme",
                     "light", "primary", "#00B2E3", "dark", "primary", "#00B2E3");
    if (s->allowed_integrations_json != NULL)
        json_object_set_new(data, "allowed_integrations",
                            latch_json_col(s->allowed_integrations_json));
    cd = latch_json_col(s->config_defaults_json);
    if (json_is_object(json_object_get(cd, "defaults")))
        json_object_set(data, "integrations_config_defaults", json_object_get(cd, "defaults"));
    if (json_is_object(json_object_get(cd, "overrides")))
        json_object_set(data, "overrides", json_object_get(cd, "overrides"));
    json_decref(cd);
    json_decref(org);
    if (s->connection_row_id != 0)
        json_object_set_new(data, "isReconnecting", json_true());
    json_object_set_new(data, "websocketsPath", json_string("/"));
    api_reply(c, 200, json_pack("{s:o}", "data", data));
}

void
api_connect_session_delete(struct api_ctx *c)
{
    if (store_session_delete(c->deps->store, c->session.id) != LATCH_OK) {
        api_store_unavailable(c);
        return;
    }
    http_resp_bytes(c->req, 204, "application/json", "", 0, true);
}

/* ---- the link calls of @nangohq/frontend ---- */
/*
 * POST /oauth2/auth/:key (OAUTH2_CC), /api-auth/api-key/:key (API_KEY), /api-auth/basic/:key
 * (BASIC): one preparation (link_begin: integration, mode, session rules, connection config,
 * link_target: which connection, attempts), then the mode's own step (token exchange or
 * verification request), then one storing step (link_store) with the same webhooks and answer.
 */

void
link_job_free(struct link_job *j)
{
    store_integration_clear(&j->integ);
    json_decref(j->cfg);
    free(j->connection_id);
    free(j->client_id);
    if (j->client_secret != NULL) {
        explicit_bzero(j->client_secret, strlen(j->client_secret));
        free(j->client_secret);
    }
    creds_free(j->creds);
    creds_free(j->token_creds);
    free(j);
}

struct params_probe {
    json_t *cfg;
    bool bad;
};

static bool
params_cb(const char *k, const char *v, void *ud)
{
    struct params_probe *pp = ud;
    size_t n = strlen(k);

    if (strncmp(k, "params[", 7) != 0 || n < 9 || k[n - 1] != ']')
        return true;
    if (v == NULL || n - 8 > 64) {
        pp->bad = true;
        return true;
    }
    {
        char name[65];

        memcpy(name, k + 7, n - 8);
        name[n - 8] = '\0';
        if (strcmp(name, "webhook_url") == 0)
            return true;
        json_object_set_new(pp->cfg, name, json_string(v));
        if (json_object_get(pp->cfg, name) == NULL)
            pp->bad = true; /* not UTF-8 */
    }
    return true;
}

unsigned
link_status_for(enum oauth_cc_outcome o)
{
    switch (o) {
    case OCC_TIMEOUT:
        return 504;
    case OCC_UNREACHABLE:
    case OCC_BAD_RESPONSE:
    case OCC_UPSTREAM:
        return 502;
    default:
        return 400;
    }
}

/* A failed link: the auth failure webhook, then the error answer. */
void
link_answer_failure(struct link_job *j, unsigned status, const char *code, const char *message,
                    const char *reason)
{
    struct api_ctx *c = j->c;

    (void)webhook_auth_failure(c->deps->webhook, api_env(c), j->integ.unique_key, j->integ.provider,
                               j->connection_id, c->session.end_user_json, c->session.tags_json,
                               j->existing ? "override" : "creation", code, message,
                               c->session.webhook_url_override);
    http_req_log_kv(c->req, "reason", reason);
    api_op_detail(c, "reason", json_string(reason));
    if (c->page_error != NULL) {
        api_error(c, status, code, message);
        return;
    }
    api_op_error(c, code);
    api_reply(c, status,
              json_pack("{s:{s:s, s:s, s:s}}", "error", "code", code, "message", message, "reason",
                        reason));
}

static void
session_used(struct api_ctx *c)
{
    api_error(c, 409, "connect_session_used",
              "This connect session has already linked an account. Ask for a new connect link.");
}

/*
 * A connect session links one account, once: a successful link deletes it, before the
 * connection is written. The delete is the claim: of two exchanges of one session that succeed
 * together, only the one whose delete removed the row writes a connection; the other is
 * answered 409 and its token is dropped. Reconnect sessions too. False when answered.
 */
static bool
session_consume(struct api_ctx *c)
{
    latch_rc rc = store_session_delete(c->deps->store, c->session.id);

    if (rc == LATCH_E_NOT_FOUND) {
        session_used(c);
        return false;
    }
    if (rc != LATCH_OK) {
        api_store_unavailable(c);
        return false;
    }
    return true;
}

/*
 * The end user may set only the connection_config keys the provider declares (the Connect UI
 * sends nothing else); anything else (oauth_scopes, a key a template might read) is refused
 * with a 400 naming it. Keys set by the integration or the session are not checked here.
 */
static bool
user_params_declared(struct api_ctx *c, const struct catalog_provider *p, json_t *user_cfg)
{
    const char *k;
    json_t *v;

    json_object_foreach(user_cfg, k, v)
    {
        if (catalog_find_field(p->connection_config, p->n_connection_config, k) == NULL) {
            json_t *errs = json_array();
            const char *const path[] = {"params", k, NULL};
            char msg[160];

            (void)v;
            (void)snprintf(msg, sizeof msg,
                           "Unknown connection parameter '%s': the provider does not declare it.",
                           k);
            api_issue(errs, "unrecognized_keys", msg, path);
            api_error_list(c, 400, "invalid_connection_config", msg, errs);
            return false;
        }
    }
    return true;
}

static void
link_fail(struct link_job *j, struct oauth_cc_result *res)
{
    char msg[400];

    (void)snprintf(msg, sizeof msg, "Failed to fetch %s token: %s",
                   j->creds != NULL ? "the" : "client credentials", res->message);
    link_answer_failure(j, link_status_for(res->outcome), "client_credentials_fetch_error", msg,
                        res->reason);
}

/*
 * Stores the linked connection (creds borrowed, sealed here), sends the auth webhook and
 * answers {providerConfigKey, connectionId, latch} (latch stolen: latch's extension).
 */
void
link_store(struct link_job *j, const json_t *creds, int64_t expires_at, json_t *latch)
{
    struct api_ctx *c = j->c;
    struct store_connection conn;
    bool created = false;
    latch_rc rc;

    memset(&conn, 0, sizeof conn);
    conn.env_id = c->env_id;
    conn.uid = xstrdup(j->uid);
    conn.connection_id = xstrdup(j->connection_id);
    conn.provider_config_key = xstrdup(j->integ.unique_key);
    conn.provider = xstrdup(j->integ.provider);
    {
        struct creds_owner o = creds_owner_of(&conn);

        rc = creds_seal(c->deps->vault, &o, creds, &conn.credentials_sealed);
    }
    if (rc != LATCH_OK)
        goto unavailable;
    conn.connection_config_json = latch_json_dump(j->cfg);
    conn.expires_at = expires_at;
    if (!j->existing) {
        conn.tags_json = xstrdup(c->session.tags_json != NULL ? c->session.tags_json : "{}");
        conn.metadata_json = NULL;
    } else if (c->session.tags_json != NULL) {
        conn.tags_json = xstrdup(c->session.tags_json);
    }
    if (c->session.end_user_json != NULL) {
        json_t *eu = latch_json_col(c->session.end_user_json);
        json_t *org = latch_json_col(c->session.organization_json);

        if (json_is_object(eu)) {
            json_object_set(eu, "organization", json_is_object(org) ? org : json_null());
            conn.end_user_json = latch_json_dump(eu);
        }
        json_decref(eu);
        json_decref(org);
    }
    if (c->session.webhook_url_override != NULL)
        conn.webhook_url_override = xstrdup(c->session.webhook_url_override);
    if (!session_consume(c))
        goto out;
    rc = store_connection_upsert(c->deps->store, &conn, &created);
    if (rc != LATCH_OK)
        goto unavailable;
    (void)webhook_auth_event(c->deps->webhook, api_env(c), &conn, created ? "creation" : "override",
                             true, NULL, NULL, c->session.webhook_url_override);
    log_info("connection linked", "env=%s provider=%s conn_row=%lld op=%s",
             api_env(c) ? api_env(c)->name : "?", j->integ.provider, (long long)conn.id,
             created ? "creation" : "override");
    if (j->stored != NULL) {
        j->stored(j, created);
        goto out;
    }
    api_reply(c, 200,
              json_pack("{s:s, s:s, s:o}", "providerConfigKey", j->integ.unique_key, "connectionId",
                        j->connection_id, "latch", latch));
    latch = NULL;
    goto out;
unavailable:
    api_store_unavailable(c);
out:
    json_decref(latch);
    store_connection_clear(&conn);
}

static void verified(struct verify_result *r, void *ud);
static void verified_async(struct verify_result *r, void *ud);

/*
 * Worker thread: the token exchange of a link is done. With a proxy.verification the new token
 * is tried on it first (as Nango's testConnectionCredentials), so "verified" means the provider
 * accepted it; without one the token exchange itself is the verification.
 */
static void
link_done(struct oauth_cc_result *res, void *ud)
{
    struct link_job *j = ud;
    struct api_ctx *c = j->c;

    if (res->outcome != OCC_OK) {
        link_fail(j, res);
    } else if (j->p->n_verification_endpoints > 0) {
        struct verify_opts vo;
        struct verify_result now;

        j->token_creds = json_deep_copy(res->creds);
        j->expires_at = res->expires_at;
        vo.outbound = c->deps->outbound;
        vo.worker = c->deps->worker;
        vo.allow_http = c->deps->cfg->allow_http;
        vo.timeout_ms = c->deps->cfg->token_timeout_ms;
        if (verify_start(&vo, j->p, j->cfg, j->token_creds, verified_async, j, &now))
            return; /* verified_async answers and frees j */
        verified(&now, j);
    } else {
        link_store(j, res->creds, res->expires_at,
                   json_pack("{s:b, s:s}", "verified", 1, "verification", "token request"));
    }
    api_resume(c);
    link_job_free(j);
}

static bool
credential_ok(const struct catalog_provider *p, const char *name, const char *value, json_t *errs)
{
    const struct catalog_field *f = catalog_find_field(p->credentials, p->n_credentials, name);
    const char *const path[] = {"credentials", name, NULL};
    struct latch_err err;

    latch_err_clear(&err);
    if (f == NULL)
        return true;
    if ((value == NULL || value[0] == '\0') && f->default_value != NULL)
        return true;
    if (catalog_field_validate(f, value, &err) != LATCH_OK) {
        api_issue(errs, "invalid_string", err.msg[0] ? err.msg : "Invalid value", path);
        return false;
    }
    return true;
}

/* Answers the first credential issue of errs (taken) and returns false; true when none. */
static bool
credentials_answer(struct api_ctx *c, json_t *errs)
{
    const char *m;

    if (json_array_size(errs) == 0) {
        json_decref(errs);
        return true;
    }
    m = json_string_value(json_object_get(json_array_get(errs, 0), "message"));
    api_error_list(c, 400, "invalid_credentials", m ? m : "Invalid credentials", errs);
    return false;
}

/*
 * The checks every link call makes before its credentials are looked at: no connection_id in
 * the query, the integration, its provider and mode, the session's allowed integrations, the
 * connection config (params[...] then session defaults). NULL when answered.
 */
struct link_job *
link_begin(struct api_ctx *c, const char *mode)
{
    const char *key = c->params[0];
    struct link_job *j;
    struct params_probe pp = {NULL, false};
    json_t *errs = NULL, *cd = NULL, *defaults, *v;

    if (http_req_query(c->req, "connection_id") != NULL) {
        const char *const path[] = {"connection_id", NULL};

        errs = json_array();
        api_issue(errs, "custom", "connection_id is forbidden when using session token", path);
        api_error_list(c, 400, "invalid_query_params", "Invalid query parameters", errs);
        return NULL;
    }
    j = xcalloc(1, sizeof *j);
    j->c = c;
    if (store_integration_get(c->deps->store, c->env_id, key, &j->integ) != LATCH_OK) {
        api_error(c, 400, "unknown_provider_config",
                  "There is no Provider Configuration matching this key.");
        goto fail;
    }
    j->p = catalog_find(c->deps->catalog, j->integ.provider);
    if (j->p == NULL) {
        api_error(c, 404, "unknown_provider_template", "The integration's provider is unknown.");
        goto fail;
    }
    if (j->p->auth_mode == NULL || strcmp(j->p->auth_mode, mode) != 0) {
        api_error(c, 400, "invalid_auth_mode",
                  "Invalid auth mode. The provider does not support this auth mode.");
        goto fail;
    }
    if (!j->p->linkable) {
        char msg[600];

        (void)snprintf(msg, sizeof msg, "latch cannot link %.100s (auth mode %s): %.400s",
                       catalog_display_name(j->p), mode,
                       j->p->unlinkable_reason ? j->p->unlinkable_reason : "");
        api_error(c, 400, "unsupported_auth_mode", msg);
        goto fail;
    }
    if (c->session.allowed_integrations_json != NULL) {
        json_t *allowed = latch_json_col(c->session.allowed_integrations_json);
        bool ok = !json_is_array(allowed) || json_array_size(allowed) == 0 ||
                  api_json_array_has_string(allowed, key);

        json_decref(allowed);
        if (!ok) {
            api_error(c, 400, "integration_not_allowed",
                      "This integration is not allowed by the connect session.");
            goto fail;
        }
    }
    /* connection config: user params (declared keys only), integration scopes, session defaults */
    pp.cfg = json_object();
    http_req_query_foreach(c->req, params_cb, &pp);
    if (pp.bad) {
        json_decref(pp.cfg);
        api_error(c, 400, "invalid_connection_config", "A connection parameter is invalid.");
        goto fail;
    }
    if (!user_params_declared(c, j->p, pp.cfg)) {
        json_decref(pp.cfg);
        goto fail;
    }
    /* the integration's scopes win over the user's, the session's over both */
    if (j->integ.oauth_scopes != NULL)
        json_object_set_new(pp.cfg, "oauth_scopes", json_string(j->integ.oauth_scopes));
    cd = latch_json_col(c->session.config_defaults_json);
    defaults = json_object_get(json_object_get(cd, "defaults"), key);
    v = json_object_get(defaults, "connection_config");
    if (json_is_object(v))
        json_object_update(pp.cfg, v);
    json_decref(cd);
    errs = json_array();
    j->cfg = apiv_connection_config(j->p, pp.cfg, "params", false, errs);
    json_decref(pp.cfg);
    if (j->cfg == NULL) {
        const char *m = json_string_value(json_object_get(json_array_get(errs, 0), "message"));

        api_error_list(c, 400, "invalid_connection_config", m ? m : "Invalid connection config",
                       errs);
        goto fail;
    }
    json_decref(errs);
    return j;
fail:
    link_job_free(j);
    return NULL;
}

/* Which connection (a reconnect session overrides its own), and the attempt budget. */
bool
link_target(struct link_job *j)
{
    struct api_ctx *c = j->c;
    const char *key = c->params[0];
    int attempts = 0;
    latch_rc rc;

    if (c->session.connection_row_id != 0) {
        struct store_connection old;

        memset(&old, 0, sizeof old);
        if (store_connection_get_by_id(c->deps->store, c->env_id, c->session.connection_row_id,
                                       &old) != LATCH_OK ||
            strcmp(old.provider_config_key, key) != 0) {
            store_connection_clear(&old);
            api_error(c, 400, "invalid_connection",
                      "The connection this session was made to reconnect no longer exists.");
            return false;
        }
        j->connection_id = xstrdup(old.connection_id);
        latch_strlcpy(j->uid, old.uid, sizeof j->uid);
        j->existing = true;
        store_connection_clear(&old);
    } else {
        char id[37];

        vault_uuid_v4(id);
        j->connection_id = xstrdup(id);
        vault_uuid_v4(j->uid);
    }
    api_op_conn(c, j->integ.unique_key, j->integ.provider, j->connection_id);
    rc = store_session_bump_attempts(c->deps->store, c->session.id, &attempts);
    if (rc == LATCH_E_NOT_FOUND) {
        /* a concurrent link of this session succeeded and used it up */
        session_used(c);
        return false;
    }
    if (rc != LATCH_OK) {
        api_store_unavailable(c);
        return false;
    }
    if (attempts > LATCH_MAX_CONNECT_ATTEMPTS) {
        http_resp_header(c->req, "Retry-After", "60");
        api_error(c, 429, "too_many_attempts",
                  "Too many connection attempts with this session. Ask for a new connect link.");
        return false;
    }
    return true;
}

/*
 * The token exchange of OAUTH2_CC (client_id/secret) and TWO_STEP (j->creds), answered by
 * link_done; j is the exchange's (freed on failure here).
 */
static void
link_exchange(struct link_job *j)
{
    struct api_ctx *c = j->c;
    struct oauth_cc_input in;
    struct oauth_cc_result res_err;

    memset(&in, 0, sizeof in);
    in.provider = j->p;
    in.connection_config = j->cfg;
    in.client_id = j->client_id;
    in.client_secret = j->client_secret;
    in.credentials = j->creds;
    /* defer first: the exchange may complete (and resume) before this thread goes on */
    api_defer(c);
    if (oauth_cc_exchange(c->deps->oauth_cc, &in, link_done, j, &res_err) != LATCH_OK) {
        link_fail(j, &res_err);
        api_resume(c);
        link_job_free(j);
    }
}

void
api_oauth2_cc(struct api_ctx *c)
{
    json_t *b = c->body;
    json_t *id_v = json_object_get(b, "client_id");
    json_t *sec_v = json_object_get(b, "client_secret");
    struct link_job *j = NULL;
    json_t *errs;

    if (!json_is_object(b) || !json_is_string(id_v) || json_string_length(id_v) == 0) {
        api_error(c, 400, "missing_client_id", "Missing param 'oauth_client_id'.");
        return;
    }
    if (!json_is_string(sec_v) || json_string_length(sec_v) == 0) {
        api_error(c, 400, "missing_client_secret", "Missing param 'oauth_client_secret'.");
        return;
    }
    if (json_string_length(id_v) > LATCH_MAX_CLIENT_ID_LEN ||
        json_string_length(sec_v) > LATCH_MAX_CLIENT_SECRET_LEN ||
        strlen(json_string_value(id_v)) != json_string_length(id_v) ||
        strlen(json_string_value(sec_v)) != json_string_length(sec_v)) {
        api_error(c, 400, "invalid_credentials", "The Client ID or Client Secret is too long.");
        return;
    }
    j = link_begin(c, "OAUTH2_CC");
    if (j == NULL)
        return;
    errs = json_array();
    (void)credential_ok(j->p, "client_id", json_string_value(id_v), errs);
    (void)credential_ok(j->p, "client_secret", json_string_value(sec_v), errs);
    if (!credentials_answer(c, errs) || !link_target(j))
        goto out;
    j->client_id = xstrdup(json_string_value(id_v));
    j->client_secret = xstrdup(json_string_value(sec_v));
    link_exchange(j);
    j = NULL; /* owned by the exchange now */
out:
    if (j != NULL)
        link_job_free(j);
}

/*
 * POST /auth/two-step/:key (TWO_STEP): @nangohq/frontend sends the credentials object itself
 * ({type:"TWO_STEP", <field>: value, ...}). Every field the definition declares for the user is
 * checked (required unless optional; pattern, format, where it lands) before the templated token
 * request (oauth_cc with the user's fields), then the same storing step as the other modes.
 */
void
api_link_two_step(struct api_ctx *c)
{
    json_t *b = c->body;
    struct link_job *j = NULL;
    json_t *errs, *creds;
    const char *k;
    json_t *v;

    if (!json_is_object(b)) {
        api_error(c, 400, "invalid_body", "The body must be a JSON object.");
        return;
    }
    creds = json_object();
    json_object_foreach(b, k, v)
    {
        if (strcmp(k, "type") == 0 || json_is_null(v))
            continue;
        if (!json_is_string(v) || strlen(k) > 64 ||
            json_string_length(v) > LATCH_MAX_CLIENT_SECRET_LEN ||
            strlen(json_string_value(v)) != json_string_length(v)) {
            creds_free(creds);
            api_error(c, 400, "invalid_credentials", "A credential is not text or is too long.");
            return;
        }
        json_object_set(creds, k, v);
    }
    j = link_begin(c, "TWO_STEP");
    if (j == NULL) {
        creds_free(creds);
        return;
    }
    j->creds = creds;
    errs = json_array();
    for (size_t i = 0; i < j->p->n_credentials; i++) {
        const struct catalog_field *f = &j->p->credentials[i];
        const char *val = json_string_value(json_object_get(creds, f->name));

        if (f->hidden || f->automated) {
            json_object_del(creds, f->name); /* hidden defaults come from the definition */
            continue;
        }
        (void)credential_ok(j->p, f->name, val != NULL ? val : "", errs);
    }
    /* undeclared fields never shape a request: keep only what the definition names */
    {
        void *tmp;

        json_object_foreach_safe(creds, tmp, k, v)
        {
            if (catalog_find_field(j->p->credentials, j->p->n_credentials, k) == NULL)
                json_object_del(creds, k);
        }
    }
    if (!credentials_answer(c, errs) || !link_target(j))
        goto out;
    j->client_id = xstrdup("");
    j->client_secret = xstrdup("");
    link_exchange(j);
    j = NULL; /* owned by the exchange now */
out:
    if (j != NULL)
        link_job_free(j);
}

/* ---- API_KEY and BASIC: verification, then the same storing step ---- */

static unsigned
verify_status(const struct verify_result *r)
{
    switch (r->outcome) {
    case VERIFY_TIMEOUT:
        return 504;
    case VERIFY_UNREACHABLE:
        return 502;
    case VERIFY_UPSTREAM:
        return r->terminal ? 400 : 502;
    default:
        return 400;
    }
}

static void
verified(struct verify_result *r, void *ud)
{
    struct link_job *j = ud;

    if (r->outcome == VERIFY_OK || r->outcome == VERIFY_NONE) {
        json_t *ext = json_pack("{s:b, s:s}", "verified", r->outcome == VERIFY_OK, "verification",
                                r->endpoint);

        if (r->outcome == VERIFY_NONE)
            json_object_set_new(ext, "message", json_string(r->message));
        if (j->token_creds != NULL)
            link_store(j, j->token_creds, j->expires_at, ext);
        else
            link_store(j, j->creds, 0, ext);
    } else {
        link_answer_failure(j, verify_status(r), "connection_test_failed", r->message, r->reason);
    }
}

static void
verified_async(struct verify_result *r, void *ud)
{
    struct link_job *j = ud;
    struct api_ctx *c = j->c;

    verified(r, j);
    api_resume(c);
    link_job_free(j);
}

/* A body string member: NULL when absent; *bad when not a bounded NUL-free string. */
static const char *
body_string(json_t *b, const char *key, size_t max, bool *bad)
{
    json_t *v = json_object_get(b, key);

    if (v == NULL || json_is_null(v))
        return NULL;
    if (!json_is_string(v) || json_string_length(v) > max ||
        strlen(json_string_value(v)) != json_string_length(v)) {
        *bad = true;
        return NULL;
    }
    return json_string_value(v);
}

static void
link_with_verification(struct api_ctx *c, const char *mode)
{
    json_t *b = c->body;
    struct link_job *j = NULL;
    struct verify_opts vo;
    struct verify_result now;
    json_t *errs;
    bool bad = false;
    const char *k1, *k2 = NULL;

    if (!json_is_object(b)) {
        api_error(c, 400, "invalid_body", "The body must be a JSON object.");
        return;
    }
    if (strcmp(mode, "API_KEY") == 0) {
        k1 = body_string(b, "apiKey", LATCH_MAX_TOKEN_LEN, &bad);
        if (!bad && (k1 == NULL || k1[0] == '\0')) {
            api_error(c, 400, "missing_api_key", "Missing apiKey.");
            return;
        }
    } else {
        k1 = body_string(b, "username", LATCH_MAX_CLIENT_ID_LEN, &bad);
        k2 = body_string(b, "password", LATCH_MAX_CLIENT_SECRET_LEN, &bad);
    }
    if (bad) {
        api_error(c, 400, "invalid_credentials", "A credential is not text or is too long.");
        return;
    }
    j = link_begin(c, mode);
    if (j == NULL)
        return;
    errs = json_array();
    if (strcmp(mode, "API_KEY") == 0) {
        (void)credential_ok(j->p, "apiKey", k1, errs);
        j->creds = json_pack("{s:s, s:s}", "type", "API_KEY", "apiKey", k1);
    } else {
        const struct catalog_field *fu =
            catalog_find_field(j->p->credentials, j->p->n_credentials, "username");
        const struct catalog_field *fp =
            catalog_find_field(j->p->credentials, j->p->n_credentials, "password");

        if ((k1 == NULL || k1[0] == '\0') && fu != NULL && fu->default_value != NULL)
            k1 = fu->default_value;
        if ((k2 == NULL || k2[0] == '\0') && fp != NULL && fp->default_value != NULL)
            k2 = fp->default_value;
        /*
         * Nango takes any string, an empty one too (affinity's username is hidden with default
         * ""; entries without a credentials section declare none): required only when declared
         * as a field the user fills in.
         */
        if ((k1 == NULL || k1[0] == '\0') && fu != NULL && !fu->hidden && !fu->optional &&
            !fu->automated && fu->default_value == NULL) {
            const char *const path[] = {"credentials", "username", NULL};
            char msg[200];

            (void)snprintf(msg, sizeof msg, "%s is required",
                           fu != NULL && fu->title != NULL && fu->title[0] ? fu->title
                                                                           : "The user name");
            api_issue(errs, "invalid_type", msg, path);
        } else {
            if (k1 != NULL && k1[0] != '\0')
                (void)credential_ok(j->p, "username", k1, errs);
            (void)credential_ok(j->p, "password", k2 ? k2 : "", errs);
        }
        j->creds = json_pack("{s:s, s:s, s:s}", "type", "BASIC", "username", k1 ? k1 : "",
                             "password", k2 ? k2 : "");
    }
    if (!credentials_answer(c, errs) || !link_target(j))
        goto out;
    vo.outbound = c->deps->outbound;
    vo.worker = c->deps->worker;
    vo.allow_http = c->deps->cfg->allow_http;
    vo.timeout_ms = c->deps->cfg->token_timeout_ms;
    /* defer first: the verification may complete (and resume) before this thread goes on */
    api_defer(c);
    if (verify_start(&vo, j->p, j->cfg, j->creds, verified_async, j, &now)) {
        j = NULL; /* owned by the verification now */
        goto out;
    }
    verified(&now, j);
    api_resume(c);
out:
    if (j != NULL)
        link_job_free(j);
}

void
api_link_api_key(struct api_ctx *c)
{
    link_with_verification(c, "API_KEY");
}

void
api_link_basic(struct api_ctx *c)
{
    link_with_verification(c, "BASIC");
}
