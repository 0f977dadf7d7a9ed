/*
 * api_connections.c - /connections: list, import, get (with always-fresh credentials), patch,
 * delete, metadata; plus the deprecated singular aliases.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/api.h"
#include "api/api_format.h"
#include "api/api_validate.h"
#include "domain/catalog.h"
#include "domain/proxyauth.h"
#include "domain/creds.h"
#include "core/latch_limits.h"
#include "domain/refresher.h"
#include "util/json.h"
#include "util/str.h"
#include "util/xalloc.h"
#include "crypto/vault.h"
#include "domain/webhook.h"

/* ---- formatting ---- */

static json_t *
end_user_public(const char *end_user_json)
{
    json_t *eu = latch_json_col(end_user_json);

    if (!json_is_object(eu)) {
        json_decref(eu);
        return json_null();
    }
    return eu;
}

json_t *
api_connection_errors(const struct store_connection *c)
{
    json_t *arr = json_array();
    json_t *e;

    if (c->auth_error_json == NULL)
        return arr;
    e = latch_json_col(c->auth_error_json);
    if (json_is_object(e)) {
        char log_id[64];

        (void)snprintf(log_id, sizeof log_id, "%.36s-auth", c->uid ? c->uid : "");
        json_object_set_new(e, "log_id", json_string(log_id));
        json_object_del(e, "at");
        json_array_append_new(arr, e);
    } else {
        json_decref(e);
    }
    return arr;
}

json_t *
api_connection_list_item(const struct store_connection *c)
{
    json_t *tags = latch_json_col(c->tags_json);

    if (!json_is_object(tags)) {
        json_decref(tags);
        tags = json_object();
    }
    return json_pack("{s:I, s:s, s:s, s:s, s:o, s:o, s:o, s:o, s:o}", "id", (json_int_t)c->id,
                     "connection_id", c->connection_id, "provider_config_key",
                     c->provider_config_key, "provider", c->provider, "errors",
                     api_connection_errors(c), "end_user", end_user_public(c->end_user_json),
                     "tags", tags, "metadata", latch_json_col(c->metadata_json), "created",
                     api_time_json(c->created_at, true));
}

json_t *
api_connection_full(const struct store_connection *c, json_t *credentials, bool plus00)
{
    json_t *o = api_connection_list_item(c);
    json_t *cfg = latch_json_col(c->connection_config_json);

    json_object_del(o, "created");
    if (!json_is_object(cfg)) {
        json_decref(cfg);
        cfg = json_object();
    }
    json_object_set_new(o, "connection_config", cfg);
    json_object_set_new(o, "webhook_url_override",
                        c->webhook_url_override ? json_string(c->webhook_url_override)
                                                : json_null());
    json_object_set_new(o, "created_at", api_time_json(c->created_at, plus00));
    json_object_set_new(o, "updated_at", api_time_json(c->updated_at, plus00));
    json_object_set_new(o, "last_fetched_at", api_time_json(c->last_fetched_at, plus00));
    json_object_set_new(o, "credentials", credentials != NULL ? credentials : json_object());
    return o;
}

/* Removes refresh tokens recursively unless asked (Nango strips any "refreshtoken" key). */
static void
strip_refresh_tokens(json_t *j)
{
    const char *k;
    json_t *v;
    void *tmp;

    if (!json_is_object(j))
        return;
    json_object_foreach_safe(j, tmp, k, v)
    {
        char letters[64];
        size_t n = 0;

        for (const char *p = k; *p != '\0' && n + 1 < sizeof letters; p++)
            if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z'))
                letters[n++] = (char)(*p | 0x20);
        letters[n] = '\0';
        if (strcmp(letters, "refreshtoken") == 0)
            json_object_del(j, k);
        else
            strip_refresh_tokens(v);
    }
}

/*
 * An imported OAUTH2 connection's own app secret (config_override.client_secret) is never
 * answered in full: only its last 4 characters (of 16 or more) after 8 stars, as for an
 * integration's app credentials.
 */
static void
mask_override_secret(json_t *creds)
{
    json_t *ov = json_object_get(creds, "config_override");
    const char *sec = json_string_value(json_object_get(ov, "client_secret"));
    char out[16];
    size_t n;

    if (sec == NULL)
        return;
    n = strlen(sec);
    (void)snprintf(out, sizeof out, "********%s", n >= 16 ? sec + n - 4 : "");
    json_object_set_new(ov, "client_secret", json_string(out));
}

/* ---- helpers ---- */

static bool
require_integration(struct api_ctx *c, const char *pck, struct store_integration *i,
                    unsigned status, const char *code, const char *msg)
{
    latch_rc rc = store_integration_get(c->deps->store, c->env_id, pck, i);

    if (rc == LATCH_E_NOT_FOUND) {
        api_error(c, status, code, msg);
        return false;
    }
    if (rc != LATCH_OK) {
        api_store_unavailable(c);
        return false;
    }
    return true;
}

struct qcheck {
    const char *const *allowed;
    bool tags_ok;
    bool unclean; /* a key or value is not UTF-8, or has control characters */
    json_t *errors;
};

static bool
qcheck_cb(const char *k, const char *v, void *ud)
{
    struct qcheck *q = ud;
    bool ok = false;

    /* the store binds them as text or JSON (PostgreSQL and jansson refuse invalid UTF-8) */
    if (!latch_utf8_clean(k) || (v != NULL && !latch_utf8_clean(v)))
        q->unclean = true;
    for (size_t i = 0; q->allowed[i] != NULL; i++)
        if (strcmp(k, q->allowed[i]) == 0)
            ok = true;
    if (q->tags_ok && strncmp(k, "tags[", 5) == 0 && k[strlen(k) - 1] == ']')
        ok = true;
    if (!ok) {
        const char *const path[] = {NULL};
        char msg[128];

        (void)snprintf(msg, sizeof msg, "Unrecognized key: \"%.64s\"", k);
        api_issue(q->errors, "unrecognized_keys", msg, path);
    }
    return true;
}

static bool
strict_query(struct api_ctx *c, const char *const *allowed, bool tags_ok)
{
    struct qcheck q = {allowed, tags_ok, false, json_array()};

    http_req_query_foreach(c->req, qcheck_cb, &q);
    if (q.unclean) {
        json_decref(q.errors);
        api_error(c, 400, "invalid_query_params",
                  "Query parameters must be valid UTF-8 without control characters.");
        return false;
    }
    if (json_array_size(q.errors) > 0) {
        api_error_list(c, 400, "invalid_query_params", "Invalid query parameters", q.errors);
        return false;
    }
    json_decref(q.errors);
    return true;
}

static const char *
require_pck(struct api_ctx *c)
{
    const char *pck = http_req_query(c->req, "provider_config_key");

    if (pck == NULL)
        pck = http_req_header(c->req, "Provider-Config-Key");
    if (pck == NULL || pck[0] == '\0') {
        json_t *errs = json_array();
        const char *const path[] = {"provider_config_key", NULL};

        api_issue(errs, "invalid_type", "Invalid input: expected string, received undefined", path);
        api_error_list(c, 400, "invalid_query_params", "Invalid query parameters", errs);
        return NULL;
    }
    if (!latch_utf8_clean(pck)) { /* the header is not checked by strict_query */
        api_error(c, 400, "invalid_query_params",
                  "provider_config_key must be valid UTF-8 without control characters.");
        return NULL;
    }
    return pck;
}

/* ---- GET /connections ---- */

struct tagq {
    const char *keys[LATCH_MAX_TAGS];
    const char *vals[LATCH_MAX_TAGS];
    char low[LATCH_MAX_TAGS][LATCH_MAX_TAG_KEY_LEN + 1];
    size_t n;
    bool too_many;
};

static bool
tag_cb(const char *k, const char *v, void *ud)
{
    struct tagq *t = ud;
    size_t kl = strlen(k);

    if (strncmp(k, "tags[", 5) != 0 || k[kl - 1] != ']' || v == NULL)
        return true;
    if (t->n >= LATCH_MAX_TAGS || kl - 6 > LATCH_MAX_TAG_KEY_LEN) {
        t->too_many = true;
        return true;
    }
    for (size_t i = 0; i < kl - 6; i++)
        t->low[t->n][i] = (char)((k[5 + i] >= 'A' && k[5 + i] <= 'Z') ? k[5 + i] | 0x20 : k[5 + i]);
    t->low[t->n][kl - 6] = '\0';
    t->keys[t->n] = t->low[t->n];
    t->vals[t->n] = v;
    t->n++;
    return true;
}

void
api_connections_list(struct api_ctx *c)
{
    static const char *const allowed[] = {
        "connectionId", "search", "endUserId", "endUserOrganizationId", "integrationId", "limit",
        "page",         "userId", NULL};
    struct store_conn_filter f;
    struct tagq tq;
    struct store_connection *rows = NULL;
    size_t n = 0;
    const char *keys[100];
    char *ikeys = NULL;
    const char *s, *e = NULL;
    json_t *arr;
    latch_rc rc;

    if (!strict_query(c, allowed, true))
        return;
    memset(&f, 0, sizeof f);
    memset(&tq, 0, sizeof tq);
    f.connection_id = http_req_query(c->req, "connectionId");
    f.search = http_req_query(c->req, "search");
    f.end_user_id = http_req_query(c->req, "endUserId");
    if (f.end_user_id == NULL)
        f.end_user_id = http_req_query(c->req, "userId");
    f.end_user_org_id = http_req_query(c->req, "endUserOrganizationId");
    f.limit = LATCH_MAX_LIST_LIMIT;
    s = http_req_query(c->req, "limit");
    if (s != NULL) {
        f.limit = latch_strtonum(s, 1, LATCH_MAX_LIST_LIMIT, &e);
        if (e != NULL) {
            json_t *errs = json_array();
            const char *const path[] = {"limit", NULL};

            api_issue(errs, "invalid_type", "Expected an integer from 1 to 10000", path);
            api_error_list(c, 400, "invalid_query_params", "Invalid query parameters", errs);
            return;
        }
    }
    s = http_req_query(c->req, "page");
    if (s != NULL) {
        long long page = latch_strtonum(s, 0, 1000000, &e);

        if (e != NULL) {
            json_t *errs = json_array();
            const char *const path[] = {"page", NULL};

            api_issue(errs, "invalid_type", "Expected an integer >= 0", path);
            api_error_list(c, 400, "invalid_query_params", "Invalid query parameters", errs);
            return;
        }
        f.offset = page * f.limit;
    }
    s = http_req_query(c->req, "integrationId");
    if (s != NULL && s[0] != '\0') {
        char *save = NULL, *tok;

        ikeys = xstrdup(s);
        for (tok = strtok_r(ikeys, ",", &save); tok != NULL && f.n_integration_keys < 100;
             tok = strtok_r(NULL, ",", &save))
            keys[f.n_integration_keys++] = tok;
        f.integration_keys = keys;
    }
    http_req_query_foreach(c->req, tag_cb, &tq);
    if (tq.too_many) {
        json_t *errs = json_array();
        const char *const path[] = {"tags", NULL};

        api_issue(errs, "too_big", "At most 10 tag filters are allowed", path);
        api_error_list(c, 400, "invalid_query_params", "Invalid query parameters", errs);
        free(ikeys);
        return;
    }
    f.tag_keys = tq.keys;
    f.tag_values = tq.vals;
    f.n_tags = tq.n;
    rc = store_connection_list(c->deps->store, c->env_id, &f, &rows, &n);
    free(ikeys);
    if (rc != LATCH_OK) {
        api_store_unavailable(c);
        return;
    }
    arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, api_connection_list_item(&rows[i]));
    store_connection_list_free(rows, n);
    api_reply(c, 200, json_pack("{s:o}", "connections", arr));
}

/* ---- GET /connections/:id ---- */

struct get_ctx {
    struct api_ctx *c;
    bool refresh_token;
};

#define PREPARED_CTYPE "application/json; charset=utf-8"

/*
 * Answers body (taken); when r came from the hot cache (r->cache_serial: a hit without a
 * prepared answer), also keeps the serialised text there as the prepared answer of this query
 * shape, so the next read of the same row sends it as it is. No realloc leaves copies of the
 * secret behind; the scratch copies are wiped.
 */
static void
reply_and_keep(struct api_ctx *c, const struct refresh_result *r, bool refresh_token, json_t *body)
{
    char first[4096];
    size_t n;
    char *s;

    if (r->cache_serial == 0 || body == NULL) {
        api_reply_secret(c, 200, body);
        return;
    }
    /* one pass for the usual small answer; a second, exactly sized, only when it does not fit */
    n = json_dumpb(body, first, sizeof first, JSON_COMPACT);
    if (n == 0 || n > LATCH_MAX_JSON_BODY) {
        explicit_bzero(first, sizeof first);
        api_reply_secret(c, 200, body);
        return;
    }
    s = xmalloc(n + 1);
    if (n <= sizeof first) {
        memcpy(s, first, n);
        explicit_bzero(first, n);
    } else if (json_dumpb(body, s, n, JSON_COMPACT) != n) {
        explicit_bzero(first, sizeof first);
        explicit_bzero(s, n);
        free(s);
        api_reply_secret(c, 200, body);
        return;
    } else {
        explicit_bzero(first, sizeof first);
    }
    s[n] = '\0';
    json_decref(body);
    refresher_keep_body(c->deps->refresher, r, refresh_token ? 1 : 0, s, n);
    http_resp_bytes_secret(c->req, 200, PREPARED_CTYPE, s, n);
}

static void
answer_get(struct api_ctx *c, struct refresh_result *r, bool refresh_token)
{
    const char *code, *msg;
    unsigned status;

    if (r->op_id[0] != '\0') /* this read waited for a token request: quote its operation */
        http_resp_header(c->req, "X-Latch-Operation-Id", r->op_id);
    if (r->outcome == REFRESH_OK && r->body != NULL) {
        /* the hot cache's prepared answer (credcache.h): nothing to build */
        http_resp_bytes_secret(c->req, 200, PREPARED_CTYPE, r->body, r->body_len);
        r->body = NULL;
        return;
    }
    if (r->outcome == REFRESH_OK) {
        json_t *creds = r->creds;

        r->creds = NULL;
        if (!refresh_token)
            strip_refresh_tokens(creds);
        mask_override_secret(creds);
        reply_and_keep(c, r, refresh_token, api_connection_full(&r->conn, creds, true));
        return;
    }
    if (r->outcome == REFRESH_NOT_FOUND) {
        api_error(c, 404, "not_found", "Failed to find connection");
        return;
    }
    status = api_refresh_error(r, &code, &msg);
    if (r->conn.uid != NULL && status == 424) {
        json_t *e = json_pack("{s:s, s:s, s:{s:o}}", "code", code, "message", msg, "payload",
                              "connection", api_connection_full(&r->conn, NULL, true));

        http_req_log_kv(c->req, "err", code);
        api_reply(c, status, json_pack("{s:o}", "error", e));
        return;
    }
    api_error(c, status, code, msg);
}

static void
get_done(struct refresh_result *r, void *ud)
{
    struct get_ctx *g = ud;

    answer_get(g->c, r, g->refresh_token);
    http_req_resume(g->c->req);
    free(g);
}

void
api_connection_get(struct api_ctx *c)
{
    static const char *const allowed[] = {"provider_config_key", "force_refresh", "refresh_token",
                                          "refresh_github_app_jwt_token", NULL};
    const char *pck;
    bool force = false, refresh_token = false;
    const char *v;
    struct store_integration integ;
    struct refresh_result now;
    struct get_ctx *g;

    if (!strict_query(c, allowed, false))
        return;
    pck = require_pck(c);
    if (pck == NULL)
        return;
    v = http_req_query(c->req, "force_refresh");
    if (v != NULL && !api_parse_bool(v, &force)) {
        json_t *errs = json_array();
        const char *const path[] = {"force_refresh", NULL};

        api_issue(errs, "invalid_type", "Expected a boolean string", path);
        api_error_list(c, 400, "invalid_query_params", "Invalid query parameters", errs);
        return;
    }
    v = http_req_query(c->req, "refresh_token");
    if (v != NULL && !api_parse_bool(v, &refresh_token)) {
        json_t *errs = json_array();
        const char *const path[] = {"refresh_token", NULL};

        api_issue(errs, "invalid_type", "Expected a boolean string", path);
        api_error_list(c, 400, "invalid_query_params", "Invalid query parameters", errs);
        return;
    }
    /*
     * The connection is looked up first: a connection row implies its integration (foreign key
     * (env_id, provider_config_key) with ON DELETE/UPDATE CASCADE), so the integration is only
     * read when the connection is missing, to answer 400 unknown_provider_config rather than
     * 404. Same answers as checking the integration first, one store read less per cached read.
     */
    g = xcalloc(1, sizeof *g);
    g->c = c;
    g->refresh_token = refresh_token;
    /*
     * Suspend before the waiter exists: get_done may run on the curl thread as soon as
     * refresher_get_fresh queued it (a refresh finishing at that instant), and a resume that
     * comes before the suspend would leave the request parked forever. A synchronous answer
     * resumes at once (http_server queues it when dispatch returns).
     */
    http_req_suspend(c->req);
    /* a forced read never takes (nor builds) a prepared answer */
    if (refresher_get_fresh_ex(c->deps->refresher, c->env_id, pck, c->params[0], force,
                               force ? -1 : (refresh_token ? 1 : 0), get_done, g, &now)) {
        free(g);
        if (now.outcome == REFRESH_NOT_FOUND && now.conn.uid == NULL) {
            memset(&integ, 0, sizeof integ);
            if (!require_integration(c, pck, &integ, 400, "unknown_provider_config",
                                     "Provider does not exists")) {
                refresh_result_clear(&now);
                http_req_resume(c->req);
                return;
            }
            store_integration_clear(&integ);
        }
        answer_get(c, &now, refresh_token);
        refresh_result_clear(&now);
        http_req_resume(c->req);
        return;
    }
}

/* ---- DELETE /connections/:id ---- */

void
api_connection_delete(struct api_ctx *c)
{
    static const char *const allowed[] = {"provider_config_key", NULL};
    const char *pck;
    latch_rc rc;

    if (!strict_query(c, allowed, false))
        return;
    pck = require_pck(c);
    if (pck == NULL)
        return;
    rc = store_connection_delete(c->deps->store, c->env_id, pck, c->params[0]);
    if (rc == LATCH_E_NOT_FOUND) {
        api_error(c, 400, "unknown_connection",
                  "No connection matching the provided params of 'connection_id' and "
                  "'provider_config_key'.");
        return;
    }
    if (rc != LATCH_OK) {
        api_store_unavailable(c);
        return;
    }
    api_reply(c, 200, json_pack("{s:b}", "success", 1));
}

/* ---- PATCH /connections/:id ---- */

void
api_connection_patch(struct api_ctx *c)
{
    static const char *const qallowed[] = {"provider_config_key", NULL};
    static const char *const allowed[] = {"end_user", "tags", "webhook_url_override", NULL};
    const char *const root[] = {NULL};
    const char *pck;
    json_t *errs, *eu = NULL, *tags = NULL, *v;
    char *eu_s = NULL, *tags_s = NULL;
    const char *wh = NULL;
    struct store_connection conn;
    latch_rc rc;

    if (!strict_query(c, qallowed, false))
        return;
    pck = require_pck(c);
    if (pck == NULL)
        return;
    errs = json_array();
    memset(&conn, 0, sizeof conn);
    if (!json_is_object(c->body)) {
        api_issue(errs, "invalid_type", "Expected an object", root);
        goto invalid;
    }
    api_strict_keys(c->body, allowed, root, errs);
    v = json_object_get(c->body, "end_user");
    if (v != NULL)
        eu = apiv_end_user(v, "end_user", errs);
    v = json_object_get(c->body, "tags");
    if (v != NULL)
        tags = apiv_tags(v, "tags", errs);
    v = json_object_get(c->body, "webhook_url_override");
    if (v != NULL && apiv_webhook_url(v, "webhook_url_override", errs))
        wh = json_string_value(v);
    if (json_array_size(errs) > 0)
        goto invalid;
    rc = store_connection_get(c->deps->store, c->env_id, pck, c->params[0], &conn);
    if (rc == LATCH_E_NOT_FOUND) {
        api_error(c, 404, "not_found", "Failed to find connection");
        goto out;
    }
    if (rc != LATCH_OK)
        goto unavailable;
    if (eu != NULL || tags != NULL) {
        json_t *merged = apiv_tags_from_end_user(eu != NULL ? eu : NULL, NULL);

        if (eu == NULL) {
            json_t *old_eu = latch_json_col(conn.end_user_json);

            json_decref(merged);
            merged = apiv_tags_from_end_user(old_eu, NULL);
            json_decref(old_eu);
        }
        if (tags != NULL)
            json_object_update(merged, tags);
        else {
            json_t *old = latch_json_col(conn.tags_json);

            if (json_is_object(old)) {
                json_object_update(old, merged);
                json_decref(merged);
                merged = old;
            } else {
                json_decref(old);
            }
        }
        tags_s = latch_json_dump(merged);
        json_decref(merged);
    }
    if (eu != NULL)
        eu_s = latch_json_dump(eu);
    rc = store_connection_patch(c->deps->store, conn.id, tags_s, eu_s, wh);
    if (rc == LATCH_E_NOT_FOUND) { /* deleted between the lookup and the write */
        api_error(c, 404, "not_found", "Failed to find connection");
        goto out;
    }
    if (rc != LATCH_OK)
        goto unavailable;
    api_reply(c, 200, json_pack("{s:b}", "success", 1));
    goto out;
unavailable:
    api_store_unavailable(c);
    goto out;
invalid:
    api_error_list(c, 400, "invalid_body", "Invalid request body", errs);
    errs = NULL;
out:
    json_decref(errs);
    json_decref(eu);
    json_decref(tags);
    free(eu_s);
    free(tags_s);
    store_connection_clear(&conn);
}

/* ---- metadata ---- */

static void
metadata_common(struct api_ctx *c, bool merge, json_t *ids, const char *pck, json_t *metadata,
                unsigned ok_status, json_t *echo)
{
    size_t n = json_is_array(ids) ? json_array_size(ids) : 1;
    struct store_connection *conns = xcalloc(n, sizeof *conns);
    latch_rc rc = LATCH_OK;
    size_t i;

    for (i = 0; i < n; i++) {
        const char *id = json_string_value(json_is_array(ids) ? json_array_get(ids, i) : ids);

        rc = store_connection_get(c->deps->store, c->env_id, pck, id, &conns[i]);
        if (rc == LATCH_E_NOT_FOUND) {
            char msg[700];

            (void)snprintf(msg, sizeof msg,
                           "Connection with connection id %.255s and provider config key %.255s "
                           "not found. Please make sure the connection exists%s",
                           id, pck,
                           n > 1 ? ". No actions were taken on any of the connections." : "");
            api_error(c, 404, "unknown_connection", msg);
            goto out;
        }
        if (rc != LATCH_OK)
            goto unavailable;
    }
    for (i = 0; i < n; i++) {
        json_t *m = json_deep_copy(metadata);
        char *text;

        if (merge) {
            json_t *old = latch_json_col(conns[i].metadata_json);

            if (json_is_object(old)) {
                json_object_update(old, m);
                json_decref(m);
                m = old;
            } else {
                json_decref(old);
            }
        }
        text = latch_json_dump(m);
        json_decref(m);
        if (strlen(text) > LATCH_MAX_METADATA_BYTES) {
            free(text);
            api_error(c, 413, "payload_too_large", "Metadata is limited to 64 KiB.");
            goto out;
        }
        rc = store_connection_set_metadata(c->deps->store, conns[i].id, text);
        free(text);
        if (rc == LATCH_E_NOT_FOUND) { /* deleted between the lookup and the write */
            api_error(c, 404, "unknown_connection", "The connection was deleted meanwhile.");
            goto out;
        }
        if (rc != LATCH_OK)
            goto unavailable;
    }
    api_reply(c, ok_status, json_incref(echo));
    goto out;
unavailable:
    api_store_unavailable(c);
out:
    for (i = 0; i < n; i++)
        store_connection_clear(&conns[i]);
    free(conns);
}

static void
metadata_route(struct api_ctx *c, bool merge)
{
    static const char *const allowed[] = {"connection_id", "provider_config_key", "metadata", NULL};
    const char *const root[] = {NULL};
    json_t *errs = json_array();
    json_t *b = c->body, *ids, *md;
    const char *pck;

    if (!json_is_object(b)) {
        api_issue(errs, "invalid_type", "Expected an object", root);
        goto invalid;
    }
    api_strict_keys(b, allowed, root, errs);
    ids = json_object_get(b, "connection_id");
    pck = json_string_value(json_object_get(b, "provider_config_key"));
    md = json_object_get(b, "metadata");
    if (!(json_is_string(ids) ||
          (json_is_array(ids) && json_array_size(ids) > 0 && json_array_size(ids) <= 100))) {
        const char *const path[] = {"connection_id", NULL};

        api_issue(errs, "invalid_type", "Expected a string or a non-empty array of strings", path);
    } else if (json_is_array(ids)) {
        size_t i;
        json_t *x;

        json_array_foreach(ids, i, x) if (!json_is_string(x))
        {
            const char *const path[] = {"connection_id", NULL};

            api_issue(errs, "invalid_type", "Expected strings", path);
            break;
        }
    }
    if (pck == NULL) {
        const char *const path[] = {"provider_config_key", NULL};

        api_issue(errs, "invalid_type", "Invalid input: expected string, received undefined", path);
    }
    if (!json_is_object(md)) {
        const char *const path[] = {"metadata", NULL};

        api_issue(errs, "invalid_type", "Expected an object", path);
    }
    if (json_array_size(errs) > 0)
        goto invalid;
    json_decref(errs);
    metadata_common(c, merge, ids, pck, md, merge ? 200 : 201, b);
    return;
invalid:
    api_error_list(c, 400, "invalid_body", "Invalid request body", errs);
}

void
api_metadata_set(struct api_ctx *c)
{
    metadata_route(c, false);
}

void
api_metadata_update(struct api_ctx *c)
{
    metadata_route(c, true);
}

static void
legacy_metadata(struct api_ctx *c, bool merge)
{
    const char *pck = require_pck(c);
    json_t *id;

    if (pck == NULL)
        return;
    if (!json_is_object(c->body)) {
        api_error(c, 400, "invalid_body", "The body must be a metadata object.");
        return;
    }
    id = json_string(c->params[0]);
    metadata_common(c, merge, id, pck, c->body, merge ? 200 : 201, c->body);
    json_decref(id);
}

void
api_legacy_metadata_set(struct api_ctx *c)
{
    legacy_metadata(c, false);
}

void
api_legacy_metadata_update(struct api_ctx *c)
{
    legacy_metadata(c, true);
}

/* ---- POST /connections (import) ---- */

/* A string member within bounds; an issue at credentials.<k> otherwise (NULL). */
static const char *
import_string(json_t *v, const char *k, size_t max, bool required, json_t *errs)
{
    json_t *x = json_object_get(v, k);
    const char *const p[] = {"credentials", k, NULL};

    if (x == NULL && !required)
        return "";
    if (!json_is_string(x) || (required && json_string_length(x) < 1) ||
        json_string_length(x) > max || strlen(json_string_value(x)) != json_string_length(x)) {
        api_issue(errs, "invalid_type",
                  x == NULL ? "Invalid input: expected string, received undefined"
                            : "Invalid string length",
                  p);
        return NULL;
    }
    return json_string_value(x);
}

/* Nango's {type:"API_KEY", apiKey} and {type:"BASIC", username, password}. */
static json_t *
import_key_credentials(json_t *v, const char *type, json_t *errs)
{
    static const char *const api_key[] = {"type", "apiKey", NULL};
    static const char *const basic[] = {"type", "username", "password", NULL};
    const char *const path[] = {"credentials", NULL};
    size_t before = json_array_size(errs);

    if (strcmp(type, "API_KEY") == 0) {
        const char *k;

        api_strict_keys(v, api_key, path, errs);
        k = import_string(v, "apiKey", LATCH_MAX_TOKEN_LEN, true, errs);
        if (k == NULL || json_array_size(errs) > before)
            return NULL;
        return json_pack("{s:s, s:s}", "type", "API_KEY", "apiKey", k);
    }
    {
        const char *u, *pw;

        api_strict_keys(v, basic, path, errs);
        u = import_string(v, "username", LATCH_MAX_CLIENT_ID_LEN, true, errs);
        pw = import_string(v, "password", LATCH_MAX_CLIENT_SECRET_LEN, false, errs);
        if (u == NULL || pw == NULL || json_array_size(errs) > before)
            return NULL;
        return json_pack("{s:s, s:s, s:s}", "type", "BASIC", "username", u, "password", pw);
    }
}

/*
 * Imported credentials go on requests as the provider's templates say: a value with a line break
 * would split a header, one in a URL template could leave its host or path segment. Refused
 * with an issue at credentials.<k> (patterns are not applied: Nango imports without them).
 */
static void
import_credentials_placed(const struct catalog_provider *p, json_t *creds, json_t *errs)
{
    const char *k;
    json_t *v;

    json_object_foreach(creds, k, v)
    {
        const struct catalog_field *f = catalog_find_field(p->credentials, p->n_credentials, k);
        const char *const path[] = {"credentials", k, NULL};
        struct latch_err err;

        if (!json_is_string(v) || strcmp(k, "type") == 0)
            continue;
        latch_err_clear(&err);
        if (f != NULL) {
            if (catalog_field_validate_place(f, json_string_value(v), &err) != LATCH_OK)
                api_issue(errs, "invalid_string", err.msg, path);
        } else if (!proxy_auth_header_value_ok(json_string_value(v))) {
            api_issue(errs, "invalid_string",
                      "The value must not contain control characters such as line breaks", path);
        }
    }
}

/* An expires_at of an imported token: ISO 8601 text or ms; an issue otherwise. */
static void
import_expires_at(json_t *v, json_t *errs, int64_t *expires_at)
{
    json_t *ea = json_object_get(v, "expires_at");

    *expires_at = 0;
    if (ea != NULL && !json_is_null(ea)) {
        struct tm tm;
        const char *s = json_string_value(ea), *r;

        memset(&tm, 0, sizeof tm);
        if (s != NULL && (r = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm)) != NULL) {
            *expires_at = (int64_t)timegm(&tm) * 1000;
            /* the milliseconds of an ISO 8601 date (JavaScript's toISOString) */
            if (r[0] == '.' && r[1] >= '0' && r[1] <= '9') {
                int64_t ms = 0, scale = 100;

                for (r++; *r >= '0' && *r <= '9'; r++, scale /= 10)
                    ms += scale > 0 ? (*r - '0') * scale : 0;
                *expires_at += ms;
            }
        } else if (json_is_integer(ea)) {
            *expires_at = json_integer_value(ea);
        } else {
            const char *const p[] = {"credentials", "expires_at", NULL};

            api_issue(errs, "invalid_date", "Invalid date", p);
        }
    }
}

/*
 * Nango's TwoStepCredentials: {type:"TWO_STEP", token, expires_at?, raw?, <field>: "..."}: the
 * token is used until it expires, then the fields ask for a new one (the refresher).
 */
static json_t *
import_two_step_credentials(json_t *v, json_t *errs, int64_t *expires_at)
{
    size_t before = json_array_size(errs);
    const char *tok = import_string(v, "token", LATCH_MAX_TOKEN_LEN, true, errs);
    json_t *out, *x;
    const char *k;

    import_expires_at(v, errs, expires_at);
    out = json_object();
    json_object_foreach(v, k, x)
    {
        const char *const p[] = {"credentials", k, NULL};

        if (strcmp(k, "type") == 0 || strcmp(k, "token") == 0 || strcmp(k, "expires_at") == 0 ||
            strcmp(k, "raw") == 0 || json_is_null(x))
            continue;
        if (!json_is_string(x) || strlen(k) > 64 ||
            json_string_length(x) > LATCH_MAX_CLIENT_SECRET_LEN ||
            strlen(json_string_value(x)) != json_string_length(x)) {
            api_issue(errs, "invalid_type", "Expected a string", p);
            continue;
        }
        json_object_set(out, k, x);
    }
    if (tok == NULL || json_array_size(errs) > before) {
        creds_free(out);
        return NULL;
    }
    json_object_set_new(out, "type", json_string("TWO_STEP"));
    json_object_set_new(out, "token", json_string(tok));
    if (*expires_at != 0)
        json_object_set_new(out, "expires_at", api_time_json(*expires_at, false));
    x = json_object_get(v, "raw");
    json_object_set_new(out, "raw", json_is_object(x) ? json_deep_copy(x) : json_object());
    return out;
}

/*
 * Nango's OAuth2Credentials import: {type:"OAUTH2", access_token, refresh_token?, expires_at?,
 * config_override?: {client_id?, client_secret?}} (strict), stored with raw = the body's
 * credentials. The refresher renews it with the refresh token and the integration's app
 * credentials (or those of config_override).
 */
static json_t *
import_oauth2_credentials(json_t *v, json_t *errs, int64_t *expires_at)
{
    static const char *const allowed[] = {"type",       "access_token",    "refresh_token",
                                          "expires_at", "config_override", NULL};
    static const char *const ov_allowed[] = {"client_id", "client_secret", NULL};
    const char *const path[] = {"credentials", NULL};
    const char *const ov_path[] = {"credentials", "config_override", NULL};
    size_t before = json_array_size(errs);
    json_t *ov = json_object_get(v, "config_override");
    json_t *out;

    api_strict_keys(v, allowed, path, errs);
    (void)import_string(v, "access_token", LATCH_MAX_TOKEN_LEN, true, errs);
    if (json_object_get(v, "refresh_token") != NULL)
        (void)import_string(v, "refresh_token", LATCH_MAX_TOKEN_LEN, true, errs);
    if (ov != NULL && !json_is_object(ov)) {
        api_issue(errs, "invalid_type", "Expected an object", ov_path);
    } else if (ov != NULL) {
        static const struct {
            const char *k;
            size_t max;
        } f[] = {{"client_id", LATCH_MAX_CLIENT_ID_LEN},
                 {"client_secret", LATCH_MAX_CLIENT_SECRET_LEN}};

        api_strict_keys(ov, ov_allowed, ov_path, errs);
        for (size_t i = 0; i < 2; i++) {
            json_t *x = json_object_get(ov, f[i].k);
            const char *const p[] = {"credentials", "config_override", f[i].k, NULL};

            if (x != NULL && (!json_is_string(x) || json_string_length(x) < 1 ||
                              json_string_length(x) > f[i].max ||
                              strlen(json_string_value(x)) != json_string_length(x)))
                api_issue(errs, "invalid_type", "Invalid string length", p);
        }
    }
    import_expires_at(v, errs, expires_at);
    if (json_array_size(errs) > before)
        return NULL;
    out = json_pack("{s:s, s:O}", "type", "OAUTH2", "access_token",
                    json_object_get(v, "access_token"));
    if (json_object_get(v, "refresh_token") != NULL)
        json_object_set(out, "refresh_token", json_object_get(v, "refresh_token"));
    if (*expires_at != 0)
        json_object_set_new(out, "expires_at", api_time_json(*expires_at, false));
    if (json_is_object(ov) && json_object_size(ov) > 0)
        json_object_set_new(out, "config_override", json_deep_copy(ov));
    /* raw: the body's credentials, without the app secret (config_override holds it once) */
    json_object_set_new(out, "raw", json_deep_copy(v));
    json_object_del(json_object_get(out, "raw"), "config_override");
    return out;
}

static json_t *
import_credentials(json_t *v, const char *auth_mode, json_t *errs, int64_t *expires_at)
{
    static const char *const allowed[] = {"type",
                                          "token",
                                          "client_id",
                                          "client_secret",
                                          "client_certificate",
                                          "client_private_key",
                                          "expires_at",
                                          "raw",
                                          NULL};
    const char *const path[] = {"credentials", NULL};
    size_t before = json_array_size(errs);
    const char *type;
    json_t *out;

    if (!json_is_object(v)) {
        api_issue(errs, "invalid_type", "Invalid input: expected object, received undefined", path);
        return NULL;
    }
    type = json_string_value(json_object_get(v, "type"));
    if (type != NULL && auth_mode != NULL && strcmp(type, auth_mode) == 0 &&
        (strcmp(type, "API_KEY") == 0 || strcmp(type, "BASIC") == 0))
        return import_key_credentials(v, type, errs);
    if (type != NULL && auth_mode != NULL && strcmp(type, auth_mode) == 0 &&
        strcmp(type, "TWO_STEP") == 0)
        return import_two_step_credentials(v, errs, expires_at);
    if (type != NULL && auth_mode != NULL && strcmp(type, auth_mode) == 0 &&
        strcmp(type, "OAUTH2") == 0)
        return import_oauth2_credentials(v, errs, expires_at);
    if (type == NULL || strcmp(type, "OAUTH2_CC") != 0 ||
        (auth_mode != NULL && strcmp(auth_mode, "OAUTH2_CC") != 0)) {
        const char *const p[] = {"credentials", "type", NULL};
        char msg[160];

        (void)snprintf(msg, sizeof msg, "Provider %s does not support %s auth",
                       auth_mode ? auth_mode : "?", type ? type : "this");
        api_issue(errs, "custom", msg, p);
        return NULL;
    }
    api_strict_keys(v, allowed, path, errs);
    {
        static const struct {
            const char *k;
            size_t max;
        } req[] = {{"token", LATCH_MAX_TOKEN_LEN},
                   {"client_id", LATCH_MAX_CLIENT_ID_LEN},
                   {"client_secret", LATCH_MAX_CLIENT_SECRET_LEN}};

        for (size_t i = 0; i < 3; i++) {
            json_t *x = json_object_get(v, req[i].k);

            if (!json_is_string(x) || json_string_length(x) < 1 ||
                json_string_length(x) > req[i].max ||
                strlen(json_string_value(x)) != json_string_length(x)) {
                const char *const p[] = {"credentials", req[i].k, NULL};

                api_issue(errs, "invalid_type",
                          x == NULL ? "Invalid input: expected string, received undefined"
                                    : "Invalid string length",
                          p);
            }
        }
    }
    import_expires_at(v, errs, expires_at);
    if (json_array_size(errs) > before)
        return NULL;
    out = json_pack("{s:s, s:O, s:O, s:O}", "type", "OAUTH2_CC", "token",
                    json_object_get(v, "token"), "client_id", json_object_get(v, "client_id"),
                    "client_secret", json_object_get(v, "client_secret"));
    if (*expires_at != 0)
        json_object_set_new(out, "expires_at", api_time_json(*expires_at, false));
    json_object_set_new(out, "raw", json_deep_copy(v));
    json_object_del(json_object_get(out, "raw"), "raw");
    return out;
}

void
api_connection_create(struct api_ctx *c)
{
    static const char *const allowed[] = {"provider_config_key",
                                          "connection_id",
                                          "metadata",
                                          "connection_config",
                                          "webhook_url_override",
                                          "end_user",
                                          "tags",
                                          "credentials",
                                          NULL};
    const char *const root[] = {NULL};
    json_t *errs = json_array(), *b = c->body, *v;
    json_t *creds = NULL, *cfg = NULL, *eu = NULL, *tags = NULL, *all_tags = NULL;
    const char *pck = NULL, *cid = NULL;
    char uid[37], gen_id[37];
    struct store_integration integ;
    const struct catalog_provider *p = NULL;
    struct store_connection conn, existing;
    int64_t expires_at = 0;
    bool created = false;
    latch_rc rc;

    memset(&integ, 0, sizeof integ);
    memset(&conn, 0, sizeof conn);
    memset(&existing, 0, sizeof existing);
    if (!json_is_object(b)) {
        api_issue(errs, "invalid_type", "Expected an object", root);
        goto invalid;
    }
    api_strict_keys(b, allowed, root, errs);
    pck = json_string_value(json_object_get(b, "provider_config_key"));
    if (pck == NULL) {
        const char *const path[] = {"provider_config_key", NULL};

        api_issue(errs, "invalid_type", "Invalid input: expected string, received undefined", path);
        goto invalid;
    }
    v = json_object_get(b, "connection_id");
    if (v != NULL) {
        cid = json_string_value(v);
        if (cid == NULL || cid[0] == '\0' || strlen(cid) > LATCH_MAX_ID_LEN ||
            strlen(cid) != json_string_length(v) || strpbrk(cid, "/?#\r\n") != NULL) {
            const char *const path[] = {"connection_id", NULL};

            api_issue(errs, "invalid_string", "Invalid connection_id", path);
        }
    }
    rc = store_integration_get(c->deps->store, c->env_id, pck, &integ);
    if (rc == LATCH_E_NOT_FOUND) {
        json_decref(errs);
        api_error(c, 404, "not_found", "Integration does not exist");
        return;
    }
    if (rc != LATCH_OK) {
        json_decref(errs);
        api_store_unavailable(c);
        return;
    }
    p = catalog_find(c->deps->catalog, integ.provider);
    if (p == NULL) {
        json_decref(errs);
        store_integration_clear(&integ);
        api_error(c, 404, "unknown_provider_template", "The integration's provider is unknown.");
        return;
    }
    creds = import_credentials(json_object_get(b, "credentials"), p->auth_mode, errs, &expires_at);
    if (creds != NULL)
        import_credentials_placed(p, creds, errs);
    cfg = apiv_connection_config(p, json_object_get(b, "connection_config"), "connection_config",
                                 false, errs);
    v = json_object_get(b, "end_user");
    if (v != NULL)
        eu = apiv_end_user(v, "end_user", errs);
    v = json_object_get(b, "tags");
    if (v != NULL)
        tags = apiv_tags(v, "tags", errs);
    v = json_object_get(b, "webhook_url_override");
    if (v != NULL)
        (void)apiv_webhook_url(v, "webhook_url_override", errs);
    v = json_object_get(b, "metadata");
    if (v != NULL && !json_is_object(v) && !json_is_null(v)) {
        const char *const path[] = {"metadata", NULL};

        api_issue(errs, "invalid_type", "Expected an object", path);
    }
    if (json_array_size(errs) > 0)
        goto invalid;

    if (cid == NULL) {
        vault_uuid_v4(gen_id);
        cid = gen_id;
    }
    rc = store_connection_get(c->deps->store, c->env_id, pck, cid, &existing);
    if (rc == LATCH_OK)
        latch_strlcpy(uid, existing.uid, sizeof uid);
    else if (rc == LATCH_E_NOT_FOUND)
        vault_uuid_v4(uid);
    else
        goto unavailable;
    all_tags = apiv_tags_from_end_user(eu, NULL);
    if (tags != NULL)
        json_object_update(all_tags, tags);
    conn.env_id = c->env_id;
    conn.uid = xstrdup(uid);
    conn.connection_id = xstrdup(cid);
    conn.provider_config_key = xstrdup(pck);
    conn.provider = xstrdup(integ.provider);
    {
        struct creds_owner o = creds_owner_of(&conn);

        if (creds_seal(c->deps->vault, &o, creds, &conn.credentials_sealed) != LATCH_OK)
            goto unavailable;
    }
    conn.connection_config_json = latch_json_dump(cfg);
    v = json_object_get(b, "metadata");
    conn.metadata_json = latch_json_dump(json_is_object(v) ? v : json_object_get(b, "__none__"));
    if (!json_is_object(v)) {
        free(conn.metadata_json);
        conn.metadata_json = xstrdup("{}");
    }
    conn.tags_json = latch_json_dump(all_tags);
    conn.end_user_json = eu != NULL ? latch_json_dump(eu) : NULL;
    v = json_object_get(b, "webhook_url_override");
    conn.webhook_url_override =
        json_is_string(v) && json_string_length(v) > 0 ? xstrdup(json_string_value(v)) : NULL;
    conn.expires_at = expires_at;
    rc = store_connection_upsert(c->deps->store, &conn, &created);
    for (int tries = 0; rc == LATCH_E_CONFLICT && tries < 3; tries++) {
        /*
         * A concurrent import created the row first, with its own uid: seal again for the row's
         * uid and replace it (the last writer wins, as for two imports one after the other).
         */
        struct creds_owner o;

        store_connection_clear(&existing);
        if (store_connection_get(c->deps->store, c->env_id, pck, cid, &existing) != LATCH_OK)
            break;
        free(conn.uid);
        conn.uid = xstrdup(existing.uid);
        o = creds_owner_of(&conn);
        free(conn.credentials_sealed);
        conn.credentials_sealed = NULL;
        if (creds_seal(c->deps->vault, &o, creds, &conn.credentials_sealed) != LATCH_OK)
            break;
        rc = store_connection_upsert(c->deps->store, &conn, &created);
    }
    if (rc != LATCH_OK)
        goto unavailable;
    (void)webhook_auth_event(c->deps->webhook, api_env(c), &conn, created ? "creation" : "override",
                             true, NULL, NULL, NULL);
    {
        json_t *pub = json_deep_copy(creds);

        mask_override_secret(pub);
        api_reply_secret(c, 201, api_connection_full(&conn, pub, false));
    }
    goto out;
unavailable:
    api_store_unavailable(c);
    goto out;
invalid:
    api_error_list(c, 400, "invalid_body", "Invalid request body", errs);
    errs = NULL;
out:
    json_decref(errs);
    creds_free(creds);
    json_decref(cfg);
    json_decref(eu);
    json_decref(tags);
    json_decref(all_tags);
    store_integration_clear(&integ);
    store_connection_clear(&conn);
    store_connection_clear(&existing);
}
