#include "domain/opslog.h"
#include "domain/webhook.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "domain/catalog.h"
#include "core/metrics.h"
#include "core/latch_limits.h"
#include "core/log.h"
#include "net/outbound.h"
#include "util/json.h"
#include "util/str.h"
#include "util/xalloc.h"
#include "crypto/vault.h"
#include "util/clock.h"

#define WEBHOOK_BATCH 32
#define WEBHOOK_IDLE_POLL_MS 1000

struct webhook {
    struct webhook_opts o; /* node_id points at node_id below */
    char node_id[33];
    pthread_t thr;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    bool kicked;
    bool halted; /* the thread was joined (owner's thread only) */
    int in_flight;
};

struct delivery {
    struct webhook *w;
    int64_t id;
    int attempts;
    struct opslog_webhook op; /* the operations log row of this attempt */
};

static json_t *
end_user_obj(const char *end_user_json)
{
    json_t *eu = latch_json_col(end_user_json);
    json_t *o;
    json_t *org;

    if (!json_is_object(eu)) {
        json_decref(eu);
        return NULL;
    }
    o = json_object();
    if (json_object_get(eu, "id") != NULL)
        json_object_set(o, "endUserId", json_object_get(eu, "id"));
    if (json_is_string(json_object_get(eu, "email")))
        json_object_set(o, "endUserEmail", json_object_get(eu, "email"));
    org = json_object_get(eu, "organization");
    if (json_is_object(org) && json_object_get(org, "id") != NULL)
        json_object_set(o, "organizationId", json_object_get(org, "id"));
    json_object_set_new(o, "tags",
                        json_is_object(json_object_get(eu, "tags"))
                            ? json_deep_copy(json_object_get(eu, "tags"))
                            : json_object());
    json_decref(eu);
    return o;
}

static latch_rc
enqueue(struct webhook *w, const struct store_env *env, json_t *body, const char *url_override)
{
    char *text;
    latch_rc rc = LATCH_OK;
    const char *urls[2] = {NULL, NULL};

    if (url_override != NULL && url_override[0] != '\0') {
        urls[0] = url_override;
    } else {
        urls[0] = env->webhook_url;
        urls[1] = env->webhook_url_secondary;
    }
    text = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(body);
    if (text == NULL)
        return LATCH_E_INTERNAL;
    for (int i = 0; i < 2 && rc == LATCH_OK; i++) {
        int64_t id = 0;

        if (urls[i] == NULL || urls[i][0] == '\0')
            continue;
        rc = store_webhook_enqueue(w->o.store, env->id, urls[i], text, &id);
        if (rc == LATCH_OK)
            log_info("webhook queued", "id=%lld env=%s", (long long)id, env->name);
    }
    free(text);
    webhook_kick(w);
    return rc;
}

static bool
gated(const struct store_env *env, const char *operation, const char *url_override)
{
    bool has_url = (url_override != NULL && url_override[0] != '\0') ||
                   (env->webhook_url != NULL && env->webhook_url[0] != '\0') ||
                   (env->webhook_url_secondary != NULL && env->webhook_url_secondary[0] != '\0');

    if (!has_url)
        return false;
    if (strcmp(operation, "creation") == 0)
        return env->on_auth_creation;
    if (strcmp(operation, "refresh") == 0)
        return env->on_auth_refresh_error;
    return true; /* override is always sent */
}

static json_t *
base_body(struct webhook *w, const struct store_env *env, const char *pck, const char *provider,
          const char *connection_id, const char *operation, bool success, const char *err_type,
          const char *err_desc)
{
    const struct catalog_provider *p = provider ? catalog_find(w->o.catalog, provider) : NULL;
    json_t *b = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:b}", "from", "nango", "type",
                          "auth", "connectionId", connection_id, "providerConfigKey", pck,
                          "provider", provider ? provider : "unknown", "environment", env->name,
                          "operation", operation, "success", success);

    json_object_set_new(b, "authMode",
                        json_string(p != NULL && p->auth_mode ? p->auth_mode : "OAUTH2_CC"));
    if (!success)
        json_object_set_new(b, "error",
                            json_pack("{s:s, s:s}", "type", err_type ? err_type : "unknown",
                                      "description", err_desc ? err_desc : ""));
    return b;
}

latch_rc
webhook_auth_event(struct webhook *w, const struct store_env *env,
                   const struct store_connection *conn, const char *operation, bool success,
                   const char *err_type, const char *err_desc, const char *url_override)
{
    const char *ov =
        url_override != NULL && url_override[0] != '\0' ? url_override : conn->webhook_url_override;
    json_t *b, *tags, *eu;

    if (env == NULL)
        return LATCH_E_UNAVAILABLE;
    if (!gated(env, operation, ov))
        return LATCH_OK;
    b = base_body(w, env, conn->provider_config_key, conn->provider, conn->connection_id, operation,
                  success, err_type, err_desc);
    tags = latch_json_col(conn->tags_json);
    if (json_is_object(tags) && json_object_size(tags) > 0)
        json_object_set_new(b, "tags", tags);
    else
        json_decref(tags);
    eu = end_user_obj(conn->end_user_json);
    if (eu != NULL)
        json_object_set_new(b, "endUser", eu);
    return enqueue(w, env, b, ov);
}

latch_rc
webhook_auth_failure(struct webhook *w, const struct store_env *env,
                     const char *provider_config_key, const char *provider,
                     const char *connection_id, const char *end_user_json, const char *tags_json,
                     const char *operation, const char *err_type, const char *err_desc,
                     const char *url_override)
{
    json_t *b, *tags, *eu;

    if (env == NULL)
        return LATCH_E_UNAVAILABLE;
    if (!gated(env, operation, url_override))
        return LATCH_OK;
    b = base_body(w, env, provider_config_key, provider, connection_id, operation, false, err_type,
                  err_desc);
    tags = latch_json_col(tags_json);
    if (json_is_object(tags) && json_object_size(tags) > 0)
        json_object_set_new(b, "tags", tags);
    else
        json_decref(tags);
    eu = end_user_obj(end_user_json);
    if (eu != NULL)
        json_object_set_new(b, "endUser", eu);
    return enqueue(w, env, b, url_override);
}

void
webhook_kick(struct webhook *w)
{
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->mu);
    w->kicked = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void
delivered(struct outbound_resp *resp, void *ud)
{
    struct delivery *d = ud;
    struct webhook *w = d->w;
    bool ok = resp->rc == LATCH_OK && resp->status >= 200 && resp->status < 300;
    bool retryable = resp->rc != LATCH_OK || resp->status >= 500 || resp->status == 429;

    if (ok) {
        (void)store_webhook_done(w->o.store, d->id);
        log_info("webhook delivered", "id=%lld status=%ld attempt=%d", (long long)d->id,
                 resp->status, d->attempts + 1);
        opslog_webhook_end(&d->op, resp->status, NULL, d->attempts + 1, 0);
        metrics_add(MF_WEBHOOK_DELIVERIES, "outcome=\"success\"", 1);
    } else {
        char why[300];
        int64_t delay = w->o.backoff_ms;
        bool give_up = !retryable || d->attempts + 1 >= w->o.max_attempts;

        for (int i = 0; i < d->attempts && delay < 3600000; i++)
            delay *= 2;
        if (resp->rc != LATCH_OK)
            (void)snprintf(why, sizeof why, "%s: %s", latch_strerror(resp->rc), resp->error);
        else
            (void)snprintf(why, sizeof why, "HTTP %ld", resp->status);
        (void)store_webhook_retry(w->o.store, d->id, latch_now_ms() + delay, why, give_up);
        opslog_webhook_end(&d->op, resp->status,
                           resp->rc == LATCH_OK ? NULL : latch_strerror(resp->rc), d->attempts + 1,
                           give_up ? 0 : latch_now_ms() + delay);
        metrics_add(MF_WEBHOOK_DELIVERIES, "outcome=\"failure\"", 1);
        log_warn("webhook delivery failed", "id=%lld attempt=%d give_up=%d status=%ld",
                 (long long)d->id, d->attempts + 1, give_up ? 1 : 0, resp->status);
    }
    outbound_resp_clear(resp);
    pthread_mutex_lock(&w->mu);
    w->in_flight--;
    w->kicked = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    free(d);
}

/*
 * Nango's legacy X-Nango-Signature: hex SHA-256(key || body). A plain hash of secret || message
 * is open to length extension (who saw one signed body can sign that body plus a suffix), so
 * LATCH_WEBHOOK_LEGACY_SIGNATURE=false drops it; X-Nango-Hmac-Sha256 is the one to check.
 */
static void
legacy_signature(const unsigned char *key, size_t klen, const char *body, char sig[65])
{
    size_t blen = strlen(body);
    char *cat = xmalloc(klen + blen + 1);

    memcpy(cat, key, klen);
    memcpy(cat + klen, body, blen + 1);
    vault_sha256_hex(cat, klen + blen, sig);
    explicit_bzero(cat, klen);
    free(cat);
}

static void
send_one(struct webhook *w, const struct store_webhook *row)
{
    struct store_env env;
    unsigned char *key = NULL;
    size_t klen = 0;
    char hmac[65], sig[65];
    char *aad = NULL;
    struct outbound_header h[4];
    struct outbound_req req;
    struct delivery *d;
    latch_rc rc;

    memset(&env, 0, sizeof env);
    rc = store_env_get(w->o.store, row->env_id, &env);
    if (rc == LATCH_OK && env.webhook_key_sealed != NULL) {
        aad = xasprintf("environments:%lld:webhook_key", (long long)env.id);
        rc = vault_open(w->o.vault, aad, env.webhook_key_sealed, &key, &klen);
    } else if (rc == LATCH_OK) {
        rc = LATCH_E_NOT_FOUND;
    }
    if (rc != LATCH_OK) {
        log_error("webhook signing key unavailable", "id=%lld rc=%s", (long long)row->id,
                  latch_strerror(rc));
        (void)store_webhook_retry(w->o.store, row->id, latch_now_ms() + 60000,
                                  "signing key unavailable", false);
        goto out;
    }
    vault_hmac_sha256_hex(key, klen, row->body, strlen(row->body), hmac);
    h[0] = (struct outbound_header){"Content-Type", "application/json"};
    h[1] = (struct outbound_header){"X-Nango-Hmac-Sha256", hmac};
    h[2] = (struct outbound_header){"User-Agent", "latch/" LATCH_VERSION};
    memset(&req, 0, sizeof req);
    req.n_headers = 3;
    if (!w->o.no_legacy_signature) {
        legacy_signature(key, klen, row->body, sig);
        h[req.n_headers++] = (struct outbound_header){"X-Nango-Signature", sig};
    }
    req.method = "POST";
    req.url = row->url;
    req.headers = h;
    req.body = row->body;
    req.body_len = strlen(row->body);
    req.timeout_ms = w->o.timeout_ms;
    req.max_response = LATCH_MAX_WEBHOOK_RESPONSE;
    d = xcalloc(1, sizeof *d);
    d->w = w;
    d->id = row->id;
    d->attempts = row->attempts;
    opslog_webhook_begin(&d->op, row->env_id, row->body);
    pthread_mutex_lock(&w->mu);
    w->in_flight++;
    pthread_mutex_unlock(&w->mu);
    rc = outbound_submit(w->o.outbound, &req, delivered, d);
    if (rc != LATCH_OK) {
        struct outbound_resp fake;

        memset(&fake, 0, sizeof fake);
        fake.rc = rc;
        (void)snprintf(fake.error, sizeof fake.error, "submit failed");
        delivered(&fake, d);
    }
out:
    if (key != NULL)
        vault_plain_free(key, klen);
    free(aad);
    store_env_clear(&env);
}

static void *
webhook_main(void *arg)
{
    struct webhook *w = arg;

    pthread_mutex_lock(&w->mu);
    while (!w->stop) {
        struct store_webhook *rows = NULL;
        size_t n = 0;
        struct timespec ts;

        if (!w->kicked) {
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += WEBHOOK_IDLE_POLL_MS * 1000000L;
            ts.tv_sec += ts.tv_nsec / 1000000000L;
            ts.tv_nsec %= 1000000000L;
            (void)pthread_cond_timedwait(&w->cv, &w->mu, &ts);
        }
        w->kicked = false;
        if (w->stop || w->in_flight >= WEBHOOK_BATCH)
            continue;
        pthread_mutex_unlock(&w->mu);
        if (store_webhook_claim(w->o.store, w->node_id, latch_now_ms(),
                                (int64_t)w->o.timeout_ms + 5000, WEBHOOK_BATCH, &rows,
                                &n) == LATCH_OK) {
            for (size_t i = 0; i < n; i++)
                send_one(w, &rows[i]);
            store_webhook_list_free(rows, n);
        }
        pthread_mutex_lock(&w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

latch_rc
webhook_start(const struct webhook_opts *o, struct webhook **out)
{
    struct webhook *w = xcalloc(1, sizeof *w);

    w->o = *o;
    latch_strlcpy(w->node_id, o->node_id, sizeof w->node_id);
    w->o.node_id = w->node_id;
    w->kicked = true;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    if (pthread_create(&w->thr, NULL, webhook_main, w) != 0) {
        free(w);
        return LATCH_E_INTERNAL;
    }
    *out = w;
    return LATCH_OK;
}

void
webhook_halt(struct webhook *w)
{
    if (w == NULL || w->halted)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thr, NULL);
    w->halted = true;
}

void
webhook_stop(struct webhook *w)
{
    if (w == NULL)
        return;
    webhook_halt(w);
    /* in-flight deliveries finish (or are cancelled) when outbound stops after us */
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    free(w);
}
