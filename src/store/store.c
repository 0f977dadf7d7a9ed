/*
 * store.c - picks a backend from the URL and forwards every call to it; holds the helpers that
 * all backends share (out-struct release, list release, clock). See docs/internals/store.md.
 */
#include "store/store.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/latch_limits.h"
#include "store/store_backend.h"
#include "util/xalloc.h"

/* Longest database URL / path accepted (PATH_MAX on Linux). */
#define STORE_MAX_URL_LEN 4096

/* libpq conninfo keywords that mark a "key=value ..." string as a PostgreSQL target. */
static const char *const pg_conninfo_prefixes[] = {
    "host=", "hostaddr=", "dbname=", "user=", "port=", "service=", "password=", "sslmode=",
};

static bool
has_prefix(const char *s, const char *p)
{
    return strncmp(s, p, strlen(p)) == 0;
}

static bool
is_postgres_target(const char *url)
{
    if (has_prefix(url, "postgres://") || has_prefix(url, "postgresql://"))
        return true;
    for (size_t i = 0; i < sizeof pg_conninfo_prefixes / sizeof pg_conninfo_prefixes[0]; i++)
        if (has_prefix(url, pg_conninfo_prefixes[i]))
            return true;
    return false;
}

latch_rc
store_open(const char *url, struct store **out, struct latch_err *err)
{
    const struct store_ops *ops = NULL;
    const char *target = url;
    void *impl = NULL;
    struct store *s;
    latch_rc rc;

    *out = NULL;
    if (url == NULL || url[0] == '\0') {
        latch_err_set(err, "store: empty database url");
        return LATCH_E_INVAL;
    }
    if (strlen(url) >= STORE_MAX_URL_LEN) {
        latch_err_set(err, "store: database url too long");
        return LATCH_E_INVAL;
    }
    if (is_postgres_target(url)) {
        /* The whole URL / conninfo goes to libpq (expand_dbname=1); see store_pg.c. */
        ops = &store_pg_ops;
    } else if (has_prefix(url, "sqlite://")) {
        ops = &store_sqlite_ops;
        target = url + strlen("sqlite://");
    } else if (has_prefix(url, "sqlite:")) {
        ops = &store_sqlite_ops;
        target = url + strlen("sqlite:");
    } else if (strstr(url, "://") != NULL) {
        latch_err_set(err, "store: unsupported database url scheme");
        return LATCH_E_INVAL;
    } else {
        ops = &store_sqlite_ops;
    }
    if (target[0] == '\0') {
        latch_err_set(err, "store: empty database path");
        return LATCH_E_INVAL;
    }

    rc = ops->open(target, &impl, err);
    if (rc != LATCH_OK)
        return rc;
    s = xcalloc(1, sizeof *s);
    s->ops = ops;
    s->impl = impl;
    *out = s;
    return LATCH_OK;
}

void
store_close(struct store *s)
{
    if (s == NULL)
        return;
    s->ops->close(s->impl);
    free(s);
}

latch_rc
store_migrate(struct store *s, struct latch_err *err)
{
    return s->ops->migrate(s->impl, err);
}

int
store_schema_version(struct store *s)
{
    return s->ops->schema_version(s->impl);
}

const char *
store_backend(const struct store *s)
{
    return s->ops->name;
}

/* ---- meta ---- */

latch_rc
store_meta_get(struct store *s, const char *key, char **value_out)
{
    return s->ops->meta_get(s->impl, key, value_out);
}

latch_rc
store_meta_set(struct store *s, const char *key, const char *value)
{
    return s->ops->meta_set(s->impl, key, value);
}

latch_rc
store_meta_add(struct store *s, const char *key, const char *value)
{
    return s->ops->meta_add(s->impl, key, value);
}

/* ---- environments ---- */

void
store_env_clear(struct store_env *e)
{
    if (e == NULL)
        return;
    free(e->name);
    free(e->webhook_url);
    free(e->webhook_url_secondary);
    free(e->webhook_key_sealed);
    memset(e, 0, sizeof *e);
}

latch_rc
store_env_create(struct store *s, const char *name, struct store_env *out)
{
    return s->ops->env_create(s->impl, name, out);
}

latch_rc
store_env_get(struct store *s, int64_t id, struct store_env *out)
{
    return s->ops->env_get(s->impl, id, out);
}

latch_rc
store_env_get_by_name(struct store *s, const char *name, struct store_env *out)
{
    return s->ops->env_get_by_name(s->impl, name, out);
}

latch_rc
store_env_list(struct store *s, struct store_env **out, size_t *n)
{
    return s->ops->env_list(s->impl, out, n);
}

void
store_env_list_free(struct store_env *v, size_t n)
{
    if (v == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        store_env_clear(&v[i]);
    free(v);
}

latch_rc
store_env_update_webhooks(struct store *s, const struct store_env *e)
{
    return s->ops->env_update_webhooks(s->impl, e);
}

/* ---- API keys ---- */

latch_rc
store_apikey_add(struct store *s, int64_t env_id, const unsigned char hash[32], const char *label)
{
    return s->ops->apikey_add(s->impl, env_id, hash, label);
}

latch_rc
store_apikey_lookup(struct store *s, const unsigned char hash[32], int64_t *env_id)
{
    return s->ops->apikey_lookup(s->impl, hash, env_id);
}

latch_rc
store_apikey_revoke_all(struct store *s, int64_t env_id)
{
    return s->ops->apikey_revoke_all(s->impl, env_id);
}

latch_rc
store_apikey_count(struct store *s, int64_t env_id, int64_t *n)
{
    return s->ops->apikey_count(s->impl, env_id, n);
}

/* ---- integrations ---- */

void
store_integration_clear(struct store_integration *i)
{
    if (i == NULL)
        return;
    free(i->unique_key);
    free(i->provider);
    free(i->display_name);
    free(i->oauth_scopes);
    free(i->custom_json);
    memset(i, 0, sizeof *i);
}

latch_rc
store_integration_create(struct store *s, struct store_integration *i)
{
    return s->ops->integration_create(s->impl, i);
}

latch_rc
store_integration_get(struct store *s, int64_t env_id, const char *unique_key,
                      struct store_integration *out)
{
    return s->ops->integration_get(s->impl, env_id, unique_key, out);
}

latch_rc
store_integration_list(struct store *s, int64_t env_id, struct store_integration **out, size_t *n)
{
    return s->ops->integration_list(s->impl, env_id, out, n);
}

void
store_integration_list_free(struct store_integration *v, size_t n)
{
    if (v == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        store_integration_clear(&v[i]);
    free(v);
}

latch_rc
store_integration_update(struct store *s, struct store_integration *i)
{
    return s->ops->integration_update(s->impl, i);
}

latch_rc
store_integration_delete(struct store *s, int64_t env_id, const char *unique_key)
{
    return s->ops->integration_delete(s->impl, env_id, unique_key);
}

/* ---- connections ---- */

void
store_connection_clear(struct store_connection *c)
{
    if (c == NULL)
        return;
    free(c->uid);
    free(c->connection_id);
    free(c->provider_config_key);
    free(c->provider);
    if (c->credentials_sealed != NULL) {
        /* Sealed, so not secret by itself; wiped anyway as a habit. */
        explicit_bzero(c->credentials_sealed, strlen(c->credentials_sealed));
        free(c->credentials_sealed);
    }
    free(c->connection_config_json);
    free(c->metadata_json);
    free(c->tags_json);
    free(c->end_user_json);
    free(c->webhook_url_override);
    free(c->auth_error_json);
    memset(c, 0, sizeof *c);
}

latch_rc
store_connection_upsert(struct store *s, struct store_connection *c, bool *created)
{
    return s->ops->connection_upsert(s->impl, c, created);
}

latch_rc
store_connection_get(struct store *s, int64_t env_id, const char *provider_config_key,
                     const char *connection_id, struct store_connection *out)
{
    return s->ops->connection_get(s->impl, env_id, provider_config_key, connection_id, out);
}

latch_rc
store_connection_get_by_id(struct store *s, int64_t env_id, int64_t id,
                           struct store_connection *out)
{
    return s->ops->connection_get_by_id(s->impl, env_id, id, out);
}

latch_rc
store_connection_list(struct store *s, int64_t env_id, const struct store_conn_filter *f,
                      struct store_connection **out, size_t *n)
{
    return s->ops->connection_list(s->impl, env_id, f, out, n);
}

void
store_connection_list_free(struct store_connection *v, size_t n)
{
    if (v == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        store_connection_clear(&v[i]);
    free(v);
}

latch_rc
store_connection_delete(struct store *s, int64_t env_id, const char *provider_config_key,
                        const char *connection_id)
{
    return s->ops->connection_delete(s->impl, env_id, provider_config_key, connection_id);
}

latch_rc
store_connection_set_metadata(struct store *s, int64_t id, const char *metadata_json)
{
    return s->ops->connection_set_metadata(s->impl, id, metadata_json);
}

latch_rc
store_connection_patch(struct store *s, int64_t id, const char *tags_json,
                       const char *end_user_json, const char *webhook_url_override)
{
    return s->ops->connection_patch(s->impl, id, tags_json, end_user_json, webhook_url_override);
}

latch_rc
store_connection_touch(struct store *s, int64_t id, int64_t last_fetched_at)
{
    return s->ops->connection_touch(s->impl, id, last_fetched_at);
}

latch_rc
store_connection_touch_many(struct store *s, const int64_t *ids, size_t n, int64_t last_fetched_at)
{
    if (n == 0)
        return LATCH_OK;
    if (ids == NULL || n > LATCH_STORE_TOUCH_BATCH)
        return LATCH_E_INVAL;
    return s->ops->connection_touch_many(s->impl, ids, n, last_fetched_at);
}

latch_rc
store_connection_lease(struct store *s, int64_t id, const char *owner, int64_t ttl_ms,
                       int64_t *version_out)
{
    return s->ops->connection_lease(s->impl, id, owner, ttl_ms, version_out);
}

latch_rc
store_connection_lease_release(struct store *s, int64_t id, const char *owner)
{
    return s->ops->connection_lease_release(s->impl, id, owner);
}

latch_rc
store_connection_refresh_done(struct store *s, int64_t id, const char *owner,
                              int64_t expected_version, const char *credentials_sealed,
                              int64_t expires_at, int64_t *new_version)
{
    return s->ops->connection_refresh_done(s->impl, id, owner, expected_version, credentials_sealed,
                                           expires_at, new_version);
}

latch_rc
store_connection_refresh_failed(struct store *s, int64_t id, const char *owner,
                                const char *auth_error_json, int64_t next_refresh_at,
                                bool needs_reauth)
{
    return s->ops->connection_refresh_failed(s->impl, id, owner, auth_error_json, next_refresh_at,
                                             needs_reauth);
}

latch_rc
store_connection_due_for_refresh(struct store *s, int64_t before, int64_t used_since, size_t max,
                                 int64_t **ids_out, int64_t **env_ids_out, size_t *n)
{
    return s->ops->connection_due_for_refresh(s->impl, before, used_since, max, ids_out,
                                              env_ids_out, n);
}

/* ---- connect sessions ---- */

void
store_session_clear(struct store_session *x)
{
    if (x == NULL)
        return;
    free(x->end_user_json);
    free(x->organization_json);
    free(x->allowed_integrations_json);
    free(x->config_defaults_json);
    free(x->tags_json);
    free(x->webhook_url_override);
    memset(x, 0, sizeof *x);
}

latch_rc
store_session_create(struct store *s, struct store_session *x)
{
    return s->ops->session_create(s->impl, x);
}

latch_rc
store_session_get_by_hash(struct store *s, const unsigned char hash[32], struct store_session *out)
{
    return s->ops->session_get_by_hash(s->impl, hash, out);
}

latch_rc
store_session_bump_attempts(struct store *s, int64_t id, int *attempts)
{
    return s->ops->session_bump_attempts(s->impl, id, attempts);
}

latch_rc
store_session_delete(struct store *s, int64_t id)
{
    return s->ops->session_delete(s->impl, id);
}

latch_rc
store_session_purge_expired(struct store *s, int64_t now)
{
    return s->ops->session_purge_expired(s->impl, now);
}

/* ---- webhook outbox ---- */

void
store_webhook_clear(struct store_webhook *w)
{
    if (w == NULL)
        return;
    free(w->url);
    free(w->body);
    memset(w, 0, sizeof *w);
}

latch_rc
store_webhook_enqueue(struct store *s, int64_t env_id, const char *url, const char *body,
                      int64_t *id_out)
{
    return s->ops->webhook_enqueue(s->impl, env_id, url, body, id_out);
}

latch_rc
store_webhook_claim(struct store *s, const char *owner, int64_t now, int64_t lease_ms, size_t max,
                    struct store_webhook **out, size_t *n)
{
    return s->ops->webhook_claim(s->impl, owner, now, lease_ms, max, out, n);
}

void
store_webhook_list_free(struct store_webhook *v, size_t n)
{
    if (v == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        store_webhook_clear(&v[i]);
    free(v);
}

latch_rc
store_webhook_done(struct store *s, int64_t id)
{
    return s->ops->webhook_done(s->impl, id);
}

latch_rc
store_webhook_retry(struct store *s, int64_t id, int64_t next_attempt_at, const char *last_error,
                    bool give_up)
{
    return s->ops->webhook_retry(s->impl, id, next_attempt_at, last_error, give_up);
}

latch_rc
store_webhook_pending_count(struct store *s, int64_t *n)
{
    return s->ops->webhook_pending_count(s->impl, n);
}

/* ---- rotation and integrity ---- */

latch_rc
store_reseal_all(struct store *s, store_reseal_fn fn, void *ud, size_t *rewritten)
{
    return s->ops->reseal_all(s->impl, fn, ud, rewritten);
}

latch_rc
store_integrity_check(struct store *s, struct latch_err *err)
{
    return s->ops->integrity_check(s->impl, err);
}
