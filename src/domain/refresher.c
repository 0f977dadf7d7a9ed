#include "domain/refresher.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <malloc.h>

#include <openssl/rand.h>

#include "domain/appcreds.h"
#include "domain/catalog.h"
#include "domain/creds.h"
#include "domain/credcache.h"
#include "core/metrics.h"
#include "core/latch_limits.h"
#include "core/log.h"
#include "domain/oauth_cc.h"
#include "domain/opslog.h"
#include "util/json.h"
#include "util/str.h"
#include "util/xalloc.h"
#include "domain/webhook.h"
#include "core/worker.h"
#include "util/clock.h"

/* How often the background thread looks for tokens about to expire. */
#define REFRESH_SCAN_INTERVAL_MS 2000
/* how often to look whether reads stopped, to return freed memory to the OS then */
#define REFRESH_TRIM_INTERVAL_MS 2000
/* A connection counts as "in use" if read within this window. */
#define REFRESH_IN_USE_WINDOW_MS (24LL * 3600 * 1000)
#define REFRESH_SCAN_BATCH 200
/* Poll interval while another node holds the lease. */
#define REFRESH_LEASE_POLL_MS 100
/* last_fetched_at is written at most this often per connection (reads stay read-only). */
#define REFRESH_TOUCH_INTERVAL_MS 60000
#define REFRESH_MAX_BACKOFF_MS (3600LL * 1000)
/* Storing a refreshed token: attempts, and the first pause between them (doubles). */
#define REFRESH_STORE_ATTEMPTS 5
#define REFRESH_STORE_RETRY_MS 50
/* Pending last_fetched_at updates, written by the background thread (best effort). */
#define REFRESH_TOUCH_SLOTS 8192

struct waiter {
    refresher_done_fn done;
    void *ud;
    struct waiter *next;
};

struct flight {
    struct refresher *rf;
    int64_t conn_id;
    int64_t env_id;
    int64_t observed_version; /* version the creator saw when it decided to refresh */
    int64_t lease_version;
    int64_t lease_deadline; /* give up waiting for a foreign lease after this */
    bool force;
    int why; /* operations log: 0 expiry, 1 forced, REFRESH_FORCE_401 */
    char op_id[OPSLOG_ID_LEN];
    uint64_t op_t0_us;
    bool waiting_lease;
    char owner[64];
    struct store_connection conn; /* row as seen when the lease was taken */
    struct waiter *waiters;
    struct flight *next;
};

struct refresher {
    struct refresher_opts o; /* node_id points at node_id below */
    char node_id[33];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct flight *flights;
    pthread_t thr;
    bool stop;
    int64_t drain_deadline; /* shutting down: foreign leases are waited for until then (0: no) */
    bool started;
    atomic_uint_fast64_t seq;
    atomic_uint_fast64_t token_requests;
    atomic_uint_fast64_t gets; /* refresher_get_fresh calls: traffic, for the idle trim */
    int margin_override_s;     /* LATCH_REFRESH_MARGIN_S set explicitly: wins over providers */
    struct credcache *cache;   /* the hot cache of reads (NULL: off) */
    /*
     * Reads never write: connections whose last_fetched_at is stale are queued here (an
     * open-addressing set of row ids, 0 = empty) and written by the background thread, so a
     * token read costs no fsync.
     */
    int64_t touch_ids[REFRESH_TOUCH_SLOTS];
    size_t n_touch;
};

static void
touch_later(struct refresher *rf, int64_t id)
{
    size_t i = (size_t)((uint64_t)id * 11400714819323198485ULL >> 51) % REFRESH_TOUCH_SLOTS;

    pthread_mutex_lock(&rf->mu);
    if (rf->n_touch < REFRESH_TOUCH_SLOTS / 2) {
        for (;; i = (i + 1) % REFRESH_TOUCH_SLOTS) {
            if (rf->touch_ids[i] == id)
                break;
            if (rf->touch_ids[i] == 0) {
                rf->touch_ids[i] = id;
                rf->n_touch++;
                break;
            }
        }
    }
    pthread_mutex_unlock(&rf->mu);
}

/* Called with rf->mu held; drops it while writing. */
static void
flush_touches(struct refresher *rf)
{
    int64_t *ids;
    size_t n = 0;
    int64_t now = latch_now_ms();

    if (rf->n_touch == 0)
        return;
    ids = xmalloc(rf->n_touch * sizeof *ids);
    for (size_t i = 0; i < REFRESH_TOUCH_SLOTS; i++) {
        if (rf->touch_ids[i] != 0) {
            ids[n++] = rf->touch_ids[i];
            rf->touch_ids[i] = 0;
        }
    }
    rf->n_touch = 0;
    pthread_mutex_unlock(&rf->mu);
    /* one transaction (one fsync) per batch instead of one per connection */
    for (size_t i = 0; i < n; i += LATCH_STORE_TOUCH_BATCH) {
        size_t k = n - i < LATCH_STORE_TOUCH_BATCH ? n - i : LATCH_STORE_TOUCH_BATCH;

        (void)store_connection_touch_many(rf->o.store, ids + i, k, now);
    }
    free(ids);
    pthread_mutex_lock(&rf->mu);
}

void
refresh_result_clear(struct refresh_result *r)
{
    store_connection_clear(&r->conn);
    creds_free(r->creds);
    r->creds = NULL;
    if (r->body != NULL) {
        explicit_bzero(r->body, r->body_len);
        free(r->body);
        r->body = NULL;
    }
}

static void
set_err(struct refresh_result *r, enum refresh_outcome outcome, const char *msg)
{
    r->outcome = outcome;
    latch_strlcpy(r->message, msg, sizeof r->message);
}

static int64_t
margin_ms(struct refresher *rf, const struct store_connection *c)
{
    const struct catalog_provider *p = catalog_find(rf->o.catalog, c->provider);

    if (rf->margin_override_s >= 0)
        return (int64_t)rf->margin_override_s * 1000;
    if (p != NULL && p->token_expiration_buffer_s >= 0)
        return (int64_t)p->token_expiration_buffer_s * 1000;
    return (int64_t)rf->o.margin_s * 1000;
}

static bool
is_fresh(struct refresher *rf, const struct store_connection *c, int64_t now)
{
    return c->expires_at == 0 || c->expires_at - now >= margin_ms(rf, c);
}

/*
 * Moves a row sealed under the legacy AAD (uid only) to its owner binding, once, on first read.
 * Compare-and-swap: a token written meanwhile (a refresh) wins and is left alone.
 */
static void
reseal_legacy(struct refresher *rf, const struct store_connection *c)
{
    struct creds_owner o = creds_owner_of(c);
    char *sealed = NULL;
    latch_rc rc;

    rc = creds_reseal(rf->o.vault, &o, &o, c->credentials_sealed, false, &sealed);
    if (rc == LATCH_OK)
        rc = store_connection_reseal(rf->o.store, c->id, c->credentials_sealed, sealed);
    free(sealed);
    if (rc == LATCH_OK)
        log_info("credentials bound to their owner", "conn_row=%lld", (long long)c->id);
    else if (rc != LATCH_E_CONFLICT && rc != LATCH_E_NOT_FOUND)
        log_warn("re-sealing legacy credentials failed", "conn_row=%lld rc=%s", (long long)c->id,
                 latch_strerror(rc));
}

/* What answer_ok hands the hot cache while the plaintext is still there. */
struct cache_fill {
    struct refresher *rf;
    const struct store_connection *c;
    uint64_t clock;
    int64_t now;
};

static void
cache_keep(const char *text, size_t len, void *ud)
{
    const struct cache_fill *f = ud;

    (void)credcache_put(f->rf->cache, f->c, text, len, f->clock, f->now);
}

/*
 * Fills r with the row and its opened credentials (REFRESH_OK). fill (may be NULL): also put
 * them into the hot cache.
 */
static void
answer_ok(struct refresher *rf, const struct store_connection *c, struct refresh_result *r,
          struct cache_fill *fill)
{
    struct creds_owner o;
    bool legacy = false;
    latch_rc rc;

    memset(r, 0, sizeof *r);
    store_connection_copy(&r->conn, c);
    o = creds_owner_of(c);
    rc = creds_open_keep(rf->o.vault, &o, c->credentials_sealed, &r->creds, &legacy,
                         fill != NULL && rf->cache != NULL ? cache_keep : NULL, fill);
    if (rc != LATCH_OK) {
        /* a known key that does not authenticate: tampered, or moved to another owner */
        log_error("credentials do not decrypt", "conn_row=%lld rc=%s", (long long)c->id,
                  latch_strerror(rc));
        set_err(r, REFRESH_CREDS_UNREADABLE,
                "The stored credentials could not be decrypted with the configured keys for "
                "this connection (unknown key, or the row was altered or moved).");
        return;
    }
    if (legacy)
        reseal_legacy(rf, c);
    r->outcome = REFRESH_OK;
}

/*
 * Answers without a token request when the row says not to make one (unless forced): the
 * connection needs re-authorisation (REFRESH_NEEDS_REAUTH), or a back-off window is open (the
 * current token while it is valid, else REFRESH_BACKOFF). Returns false when a refresh may go
 * ahead. r starts zeroed.
 */
static bool
answer_held_back(struct refresher *rf, const struct store_connection *c, bool force, int64_t now,
                 struct refresh_result *r)
{
    if (force)
        return false;
    if (c->needs_reauth) {
        char msg[320];
        json_t *e = latch_json_col(c->auth_error_json);
        const char *desc = json_string_value(json_object_get(e, "description"));

        (void)snprintf(msg, sizeof msg, "The connection needs to be re-authorised%s%.250s",
                       desc ? ": " : ".", desc ? desc : "");
        json_decref(e);
        set_err(r, REFRESH_NEEDS_REAUTH, msg);
        store_connection_copy(&r->conn, c);
        return true;
    }
    if (c->next_refresh_at <= now)
        return false;
    if (c->expires_at > now) {
        answer_ok(rf, c, r, NULL);
    } else {
        set_err(r, REFRESH_BACKOFF,
                "A recent refresh attempt failed. Backing off before retrying.");
        store_connection_copy(&r->conn, c);
    }
    return true;
}

static void
finish_flight(struct refresher *rf, struct flight *f, const struct refresh_result *proto)
{
    struct flight **pp;
    struct waiter *w, *next;

    pthread_mutex_lock(&rf->mu);
    for (pp = &rf->flights; *pp != NULL; pp = &(*pp)->next)
        if (*pp == f) {
            *pp = f->next;
            break;
        }
    pthread_mutex_unlock(&rf->mu);
    for (w = f->waiters; w != NULL; w = next) {
        struct refresh_result r;

        next = w->next;
        memset(&r, 0, sizeof r);
        r.outcome = proto->outcome;
        latch_strlcpy(r.message, proto->message, sizeof r.message);
        latch_strlcpy(r.op_id, f->op_id, sizeof r.op_id);
        if (proto->conn.uid != NULL)
            store_connection_copy(&r.conn, &proto->conn);
        if (proto->creds != NULL)
            r.creds = json_deep_copy(proto->creds);
        w->done(&r, w->ud);
        refresh_result_clear(&r);
        free(w);
    }
    store_connection_clear(&f->conn);
    free(f);
}

/* Re-reads the row and finishes the flight with it (someone else's refresh, or ours). */
static void
finish_with_row(struct refresher *rf, struct flight *f)
{
    struct store_connection row;
    struct refresh_result r;
    latch_rc rc;

    memset(&row, 0, sizeof row);
    memset(&r, 0, sizeof r);
    rc = store_connection_get_by_id(rf->o.store, f->env_id, f->conn_id, &row);
    if (rc == LATCH_E_NOT_FOUND)
        set_err(&r, REFRESH_NOT_FOUND, "The connection was deleted.");
    else if (rc != LATCH_OK)
        set_err(&r, REFRESH_STORE_UNAVAILABLE, "");
    else
        answer_ok(rf, &row, &r, NULL);
    finish_flight(rf, f, &r);
    refresh_result_clear(&r);
    store_connection_clear(&row);
}

static int64_t
backoff_ms(struct refresher *rf, int attempts, int64_t retry_after_ms)
{
    int64_t b = rf->o.backoff_ms;
    uint32_t rnd = 0;

    for (int i = 1; i < attempts && b < REFRESH_MAX_BACKOFF_MS; i++)
        b *= 2;
    if (b > REFRESH_MAX_BACKOFF_MS)
        b = REFRESH_MAX_BACKOFF_MS;
    (void)RAND_bytes((unsigned char *)&rnd, sizeof rnd);
    /* full window minus up to 25 % jitter, so nodes don't retry in lock-step */
    b -= (int64_t)((double)b * 0.25 * ((double)rnd / 4294967295.0));
    if (retry_after_ms > b)
        b = retry_after_ms;
    return b;
}

static bool
same_binding(const struct store_connection *a, const struct store_connection *b)
{
    return a->env_id == b->env_id && strcmp(a->provider_config_key, b->provider_config_key) == 0 &&
           strcmp(a->connection_id, b->connection_id) == 0;
}

/*
 * Our refresh_done lost (LATCH_E_CONFLICT). If that is because the integration was renamed while
 * the token request was in flight (the rename re-sealed the row for the new key and released our
 * lease, store_integration_update) and no other token was written since (same version), take the
 * lease again and store our token sealed for the new key: it is not lost, and it stays readable.
 * Anything else keeps the conflict: the newer token wins.
 */
static latch_rc
done_after_rename(struct refresher *rf, struct flight *f, const struct oauth_cc_result *res,
                  int64_t *newv)
{
    latch_rc rc = LATCH_E_CONFLICT;

    for (int tries = 0; tries < 3 && rc == LATCH_E_CONFLICT; tries++) {
        struct store_connection row;
        struct creds_owner o;
        char *sealed = NULL;
        int64_t v = 0;

        memset(&row, 0, sizeof row);
        rc = store_connection_get_by_id(rf->o.store, f->env_id, f->conn_id, &row);
        if (rc != LATCH_OK)
            return rc;
        if (row.version != f->lease_version || same_binding(&row, &f->conn)) {
            store_connection_clear(&row);
            return LATCH_E_CONFLICT;
        }
        rc = store_connection_lease(rf->o.store, f->conn_id, f->owner, rf->o.lease_ms, &v);
        if (rc == LATCH_OK && v != f->lease_version) {
            (void)store_connection_lease_release(rf->o.store, f->conn_id, f->owner);
            rc = LATCH_E_CONFLICT;
        }
        if (rc != LATCH_OK) {
            store_connection_clear(&row);
            return rc;
        }
        store_connection_clear(&f->conn);
        f->conn = row;
        o = creds_owner_of(&f->conn);
        rc = creds_seal(rf->o.vault, &o, res->creds, &sealed);
        if (rc == LATCH_OK)
            rc = store_connection_refresh_done(rf->o.store, f->conn_id, f->owner, f->lease_version,
                                               sealed, res->expires_at, newv);
        else
            (void)store_connection_lease_release(rf->o.store, f->conn_id, f->owner);
        free(sealed);
    }
    return rc;
}

/*
 * Our refresh_done lost (LATCH_E_CONFLICT) after the provider rotated the refresh token: our
 * token request outlived the lease, another refresher took it over, sent the refresh token we had
 * already used and was refused (the row now records that failure). Our answer holds the only
 * refresh token the provider still accepts: take the lease again and store it, unless a newer
 * token was stored meanwhile (a success, which wins as always).
 */
static latch_rc
done_over_failure(struct refresher *rf, struct flight *f, const struct oauth_cc_result *res,
                  int64_t *newv)
{
    struct store_connection row;
    struct creds_owner o;
    char *sealed = NULL;
    int64_t v = 0;
    latch_rc rc;

    memset(&row, 0, sizeof row);
    rc = store_connection_get_by_id(rf->o.store, f->env_id, f->conn_id, &row);
    if (rc != LATCH_OK)
        return rc;
    if (!row.needs_reauth && row.refresh_attempts == 0) {
        store_connection_clear(&row);
        return LATCH_E_CONFLICT;
    }
    rc = store_connection_lease(rf->o.store, f->conn_id, f->owner, rf->o.lease_ms, &v);
    if (rc == LATCH_OK) {
        o = creds_owner_of(&row);
        rc = creds_seal(rf->o.vault, &o, res->creds, &sealed);
        if (rc == LATCH_OK)
            rc = store_connection_refresh_done(rf->o.store, f->conn_id, f->owner, v, sealed,
                                               res->expires_at, newv);
        else
            (void)store_connection_lease_release(rf->o.store, f->conn_id, f->owner);
        free(sealed);
        if (rc == LATCH_OK)
            log_warn("rotated token stored over a racing refresher's failure", "conn_row=%lld",
                     (long long)f->conn_id);
    }
    store_connection_clear(&row);
    return rc;
}

/* The operations log row of a token request (ids, codes and timings only). */
static void
record_refresh(struct flight *f, const struct oauth_cc_result *res)
{
    static const char *const why[] = {"expiry", "forced", "401"};
    struct store_op op;
    json_t *d = json_pack("{s:s}", "why", why[f->why >= 0 && f->why <= 2 ? f->why : 1]);

    if (res->outcome != OCC_OK) {
        json_object_set_new(d, "reason", json_string(res->reason));
        json_object_set_new(d, "terminal", json_boolean(res->terminal));
    }
    {
        char l[96];

        metrics_add(
            MF_REFRESHES,
            metrics_labels(l, sizeof l, "outcome", res->outcome == OCC_OK ? "success" : "failure",
                           "why", why[f->why >= 0 && f->why <= 2 ? f->why : 1], (const char *)NULL),
            1);
    }
    memset(&op, 0, sizeof op);
    op.id = f->op_id;
    op.env_id = f->env_id;
    op.kind = (char *)(uintptr_t) "refresh";
    op.success = res->outcome == OCC_OK;
    op.error = res->outcome == OCC_OK ? NULL : (char *)(uintptr_t) "refresh_failed";
    op.integration = f->conn.provider_config_key;
    op.provider = f->conn.provider;
    op.connection_id = f->conn.connection_id;
    op.duration_ms = (int64_t)((latch_mono_us() - f->op_t0_us) / 1000);
    op.detail_json = latch_json_dump(d);
    (void)opslog_emit(&op);
    free(op.detail_json);
    json_decref(d);
}

static void
on_exchange(struct oauth_cc_result *res, void *ud)
{
    struct flight *f = ud;
    struct refresher *rf = f->rf;
    struct refresh_result r;
    int64_t now = latch_now_ms();
    latch_rc rc;

    memset(&r, 0, sizeof r);
    record_refresh(f, res);
    if (res->outcome == OCC_OK) {
        int64_t newv = 0;

        /*
         * The new credentials (with a rotated refresh token, the only one the provider still
         * accepts) are sealed and committed together with the lease release, before anyone is
         * answered; the answer is then read back from the store. A store error is retried: the
         * provider has already rotated, and this write is the only copy of the new refresh token.
         */
        for (int attempt = 0;; attempt++) {
            char *sealed = NULL;
            struct creds_owner o = creds_owner_of(&f->conn);

            rc = creds_seal(rf->o.vault, &o, res->creds, &sealed);
            if (rc == LATCH_OK)
                rc =
                    store_connection_refresh_done(rf->o.store, f->conn_id, f->owner,
                                                  f->lease_version, sealed, res->expires_at, &newv);
            free(sealed);
            if (rc == LATCH_OK || rc == LATCH_E_CONFLICT || rc == LATCH_E_NOT_FOUND ||
                rc == LATCH_E_CRYPTO || attempt + 1 >= REFRESH_STORE_ATTEMPTS)
                break;
            log_warn("storing refreshed token failed, retrying", "conn_row=%lld rc=%s attempt=%d",
                     (long long)f->conn_id, latch_strerror(rc), attempt + 1);
            (void)usleep((useconds_t)(REFRESH_STORE_RETRY_MS << attempt) * 1000);
        }
        if (rc == LATCH_E_CONFLICT)
            rc = done_after_rename(rf, f, res, &newv);
        if (rc == LATCH_E_CONFLICT && res->rotated)
            rc = done_over_failure(rf, f, res, &newv);
        if (rc == LATCH_OK) {
            log_info("token refreshed", "conn_row=%lld version=%lld rotated=%d",
                     (long long)f->conn_id, (long long)newv, res->rotated ? 1 : 0);
        } else if (rc == LATCH_E_CONFLICT) {
            /* our lease expired and someone else wrote a newer token: theirs wins */
            log_warn("stale refresh discarded", "conn_row=%lld", (long long)f->conn_id);
        } else if (rc != LATCH_E_NOT_FOUND) {
            /* never answer with a token that is not stored: the caller tries again */
            log_error("storing refreshed token failed", "conn_row=%lld rc=%s rotated=%d",
                      (long long)f->conn_id, latch_strerror(rc), res->rotated ? 1 : 0);
            set_err(&r, REFRESH_STORE_UNAVAILABLE,
                    "The refreshed token could not be stored. Try again in a moment.");
            finish_flight(rf, f, &r);
            return;
        }
        finish_with_row(rf, f);
        return;
    }

    /* failure */
    {
        json_t *e = json_pack("{s:s, s:s, s:s, s:I}", "type", "auth", "reason", res->reason,
                              "description", res->message, "at", (json_int_t)now);
        char *ej = latch_json_dump(e);
        bool was_reauth = f->conn.needs_reauth;
        int attempts = f->conn.refresh_attempts + 1;
        int64_t next = res->terminal ? 0 : now + backoff_ms(rf, attempts, res->retry_after_ms);

        json_decref(e);
        rc = store_connection_refresh_failed(rf->o.store, f->conn_id, f->owner, ej, next,
                                             res->terminal);
        free(ej);
        if (rc == LATCH_E_CONFLICT) {
            /*
             * Our lease expired during the request and another refresher took over: if it stored
             * a fresh token (with a rotating provider, it used the refresh token first and ours
             * was refused for that), that token is the answer, not our failure.
             */
            struct store_connection row;
            bool fresh;

            memset(&row, 0, sizeof row);
            fresh =
                store_connection_get_by_id(rf->o.store, f->env_id, f->conn_id, &row) == LATCH_OK &&
                !row.needs_reauth && row.version != f->lease_version && is_fresh(rf, &row, now);
            store_connection_clear(&row);
            if (fresh) {
                log_warn("token refresh failed after losing the lease; serving the newer token",
                         "conn_row=%lld reason=%s", (long long)f->conn_id, res->reason);
                finish_with_row(rf, f);
                return;
            }
        }
        log_warn("token refresh failed", "conn_row=%lld reason=%s terminal=%d attempts=%d",
                 (long long)f->conn_id, res->reason, res->terminal ? 1 : 0, attempts);
        if (res->terminal && !was_reauth && rc == LATCH_OK) {
            struct store_env env;

            memset(&env, 0, sizeof env);
            if (store_env_get(rf->o.store, f->env_id, &env) == LATCH_OK)
                (void)webhook_auth_event(rf->o.webhook, &env, &f->conn, "refresh", false,
                                         "refresh_token_external_error", res->message, NULL);
            store_env_clear(&env);
        }
        if (res->terminal) {
            char msg[320];

            (void)snprintf(msg, sizeof msg, "The connection needs to be re-authorised: %.250s",
                           res->message);
            set_err(&r, REFRESH_NEEDS_REAUTH, msg);
        } else if (f->conn.expires_at > now && !f->force) {
            /* the current token still works: hand it out while we back off */
            answer_ok(rf, &f->conn, &r, NULL);
        } else {
            char msg[320];

            (void)snprintf(msg, sizeof msg,
                           "A refresh attempt failed (%.200s). Backing off before retrying.",
                           res->message);
            set_err(&r, REFRESH_BACKOFF, msg);
        }
        finish_flight(rf, f, &r);
        refresh_result_clear(&r);
    }
}

/* Lease held: the token request (its answer, or a failure to send it, goes to on_exchange). */
static void
start_exchange(struct flight *f, const struct oauth_cc_input *in)
{
    struct oauth_cc_result err_res;

    atomic_fetch_add(&f->rf->token_requests, 1);
    opslog_new_id(f->op_id);
    f->op_t0_us = latch_mono_us();
    if (oauth_cc_exchange(f->rf->o.oauth_cc, in, on_exchange, f, &err_res) != LATCH_OK)
        on_exchange(&err_res, f); /* classified failure, same path */
}

/*
 * OAUTH2 (authorization code), lease held: the refresh_token grant with the integration's app
 * credentials (or the connection's config_override). No refresh token: the current token while
 * it lasts, then needs_reauth (the user must reconnect).
 */
static void
run_oauth2(struct flight *f, const struct catalog_provider *p, const struct store_connection *row,
           const json_t *creds, const json_t *cfg, int64_t now)
{
    struct refresher *rf = f->rf;
    const char *rt = json_string_value(json_object_get(creds, "refresh_token"));
    char *cid = NULL, *csecret = NULL;
    struct oauth_cc_result res;
    struct oauth_cc_input in;
    latch_rc rc;

    memset(&res, 0, sizeof res);
    if (rt == NULL || rt[0] == '\0') {
        if (row->expires_at > now) {
            /* nothing to refresh with, but the token still works: serve it */
            (void)store_connection_lease_release(rf->o.store, f->conn_id, f->owner);
            finish_with_row(rf, f);
            return;
        }
        /* terminal, through the failure path: needs_reauth, webhook, operations log */
        opslog_new_id(f->op_id);
        f->op_t0_us = latch_mono_us();
        res.outcome = OCC_INVALID_GRANT;
        res.terminal = true;
        latch_strlcpy(res.reason, "no_refresh_token", sizeof res.reason);
        (void)snprintf(res.message, sizeof res.message,
                       "The %s access token has expired and the connection has no refresh token "
                       "(offline access was not granted). The user must reconnect the account.",
                       catalog_display_name(p));
        on_exchange(&res, f);
        return;
    }
    rc = oauth2_app_credentials(rf->o.store, rf->o.vault, f->env_id, row->provider_config_key,
                                creds, &cid, &csecret);
    if (rc != LATCH_OK) {
        struct refresh_result r;

        /* the integration's setup, not the user's account: nothing is marked on the connection */
        memset(&r, 0, sizeof r);
        if (rc == LATCH_E_NOT_FOUND) {
            char msg[320];

            (void)snprintf(msg, sizeof msg,
                           "The integration %.100s has no Client ID and Client Secret to refresh "
                           "the %s token with. Set them on the integration (credentials).",
                           row->provider_config_key, catalog_display_name(p));
            set_err(&r, REFRESH_NEEDS_REAUTH, msg);
        } else if (rc == LATCH_E_CRYPTO) {
            set_err(&r, REFRESH_CREDS_UNREADABLE,
                    "The integration's app credentials could not be decrypted with the "
                    "configured keys.");
        } else {
            set_err(&r, REFRESH_STORE_UNAVAILABLE, "");
        }
        (void)store_connection_lease_release(rf->o.store, f->conn_id, f->owner);
        finish_flight(rf, f, &r);
        return;
    }
    memset(&in, 0, sizeof in);
    in.provider = p;
    in.connection_config = cfg;
    in.client_id = cid;
    in.client_secret = csecret;
    in.refresh_token = rt;
    in.prior = creds;
    start_exchange(f, &in);
    appcreds_free(cid, csecret);
}

/* With the lease held: refresh unless someone already did. Caller thread or refresher thread. */
static void
run_flight(struct flight *f)
{
    struct refresher *rf = f->rf;
    struct store_connection row;
    json_t *creds = NULL, *cfg = NULL;
    struct oauth_cc_input in;
    bool two_step, oauth2;
    struct refresh_result held;
    const struct catalog_provider *p;
    int64_t now = latch_now_ms();
    latch_rc rc;

    memset(&row, 0, sizeof row);
    rc = store_connection_get_by_id(rf->o.store, f->env_id, f->conn_id, &row);
    if (rc != LATCH_OK) {
        (void)store_connection_lease_release(rf->o.store, f->conn_id, f->owner);
        finish_with_row(rf, f);
        return;
    }
    if (row.version != f->observed_version && is_fresh(rf, &row, now) && !row.needs_reauth) {
        /* another refresher finished between our decision and our lease */
        (void)store_connection_lease_release(rf->o.store, f->conn_id, f->owner);
        store_connection_clear(&row);
        finish_with_row(rf, f);
        return;
    }
    memset(&held, 0, sizeof held);
    if (answer_held_back(rf, &row, f->force, now, &held)) {
        /* a failure was recorded between our decision and our lease (by our own previous
         * flight or another node): honour it instead of asking again */
        (void)store_connection_lease_release(rf->o.store, f->conn_id, f->owner);
        finish_flight(rf, f, &held);
        refresh_result_clear(&held);
        store_connection_clear(&row);
        return;
    }
    store_connection_clear(&f->conn);
    f->conn = row;
    p = catalog_find(rf->o.catalog, row.provider);
    if (p != NULL && p->auth_mode != NULL &&
        (strcmp(p->auth_mode, "API_KEY") == 0 || strcmp(p->auth_mode, "BASIC") == 0)) {
        /* a key or a password has no token to refresh: the stored one is the answer */
        (void)store_connection_lease_release(rf->o.store, f->conn_id, f->owner);
        finish_with_row(rf, f);
        return;
    }
    {
        struct creds_owner o = creds_owner_of(&row);

        rc = creds_open(rf->o.vault, &o, row.credentials_sealed, &creds);
    }
    cfg = latch_json_col(row.connection_config_json);
    two_step = p != NULL && p->auth_mode != NULL && strcmp(p->auth_mode, "TWO_STEP") == 0;
    oauth2 = p != NULL && p->auth_mode != NULL && strcmp(p->auth_mode, "OAUTH2") == 0;
    if (p != NULL && rc == LATCH_OK && json_is_object(cfg) && oauth2) {
        run_oauth2(f, p, &f->conn, creds, cfg, now);
        goto out;
    }
    if (p == NULL || rc != LATCH_OK || !json_is_object(cfg) ||
        (!two_step && json_string_value(json_object_get(creds, "client_id")) == NULL)) {
        struct refresh_result r;

        memset(&r, 0, sizeof r);
        set_err(&r, REFRESH_NEEDS_REAUTH,
                p == NULL ? "The provider of this connection is not in the catalogue."
                          : "The stored credentials cannot be used to refresh the token.");
        (void)store_connection_lease_release(rf->o.store, f->conn_id, f->owner);
        finish_flight(rf, f, &r);
        goto out;
    }
    memset(&in, 0, sizeof in);
    in.provider = p;
    in.connection_config = cfg;
    if (two_step) {
        /* TWO_STEP: the same templated request from the stored fields (token etc. unused) */
        in.client_id = "";
        in.client_secret = "";
        in.credentials = creds;
    } else {
        in.client_id = json_string_value(json_object_get(creds, "client_id"));
        in.client_secret = json_string_value(json_object_get(creds, "client_secret"));
        if (in.client_secret == NULL)
            in.client_secret = "";
    }
    start_exchange(f, &in);
out:
    creds_free(creds);
    json_decref(cfg);
}

/* Tries to take the lease; true if the flight proceeded (or finished), false to poll again. */
static bool
try_lease(struct flight *f)
{
    struct refresher *rf = f->rf;
    bool draining;
    latch_rc rc;

    rc = store_connection_lease(rf->o.store, f->conn_id, f->owner, rf->o.lease_ms,
                                &f->lease_version);
    if (rc == LATCH_OK) {
        run_flight(f);
        return true;
    }
    if (rc == LATCH_E_CONFLICT) {
        struct store_connection row;

        /* someone else is refreshing: done as soon as a newer version is visible */
        memset(&row, 0, sizeof row);
        if (store_connection_get_by_id(rf->o.store, f->env_id, f->conn_id, &row) == LATCH_OK &&
            row.version != f->observed_version && is_fresh(rf, &row, latch_now_ms())) {
            store_connection_clear(&row);
            finish_with_row(rf, f);
            return true;
        }
        store_connection_clear(&row);
        pthread_mutex_lock(&rf->mu);
        draining = rf->drain_deadline != 0 && latch_now_ms() >= rf->drain_deadline;
        pthread_mutex_unlock(&rf->mu);
        if (!draining && latch_now_ms() < f->lease_deadline)
            return false;
        {
            struct refresh_result r;

            memset(&r, 0, sizeof r);
            if (draining)
                set_err(&r, REFRESH_SHUTTING_DOWN,
                        "latch is shutting down while another process refreshes this "
                        "connection. Try again.");
            else
                set_err(&r, REFRESH_IN_PROGRESS,
                        "Another refresh of this connection is taking too long. Try again.");
            finish_flight(rf, f, &r);
        }
        return true;
    }
    finish_with_row(
        rf, f); /* NOT_FOUND or store error: answer from the row (NOT_FOUND or STORE_UNAVAILABLE) */
    return true;
}

/* Worker thread (or the caller when the pool is full): a new flight's first lease attempt. */
static void
lease_job(void *ud)
{
    struct flight *f = ud;
    struct refresher *rf = f->rf;

    if (!try_lease(f)) {
        pthread_mutex_lock(&rf->mu);
        f->waiting_lease = true;
        pthread_cond_signal(&rf->cv);
        pthread_mutex_unlock(&rf->mu);
    }
}

/*
 * The hot cache (credcache.h): fills r (REFRESH_OK) from a cached entry when no write committed
 * on this node may have changed the row since it was read (store_conn_unchanged_since), on a
 * shared database the row's stamp still matches, and the token is still fresh; otherwise drops
 * the entry and returns false (the caller reads the store as without a cache).
 */
static bool
cached_read(struct refresher *rf, int64_t env_id, const char *pck, const char *cid, int64_t now,
            int body_variant, struct refresh_result *r)
{
    struct store_connection c;
    json_t *creds = NULL;
    uint64_t clock = 0;
    /* no prepared answer when this read moves last_fetched_at (the answer quotes it) */
    struct credcache_hit hit = {body_variant, now - REFRESH_TOUCH_INTERVAL_MS, NULL, 0, 0};
    bool ok;

    if (!credcache_get_ex(rf->cache, env_id, pck, cid, now, &c, &creds, &clock, &hit))
        return false;
    ok = store_conn_unchanged_since(c.id, clock) && !c.needs_reauth && is_fresh(rf, &c, now);
    if (ok && rf->o.cache_revalidate) {
        struct store_conn_stamp st;

        ok = store_connection_stamp(rf->o.store, env_id, pck, cid, &st) == LATCH_OK &&
             store_conn_stamp_matches(&st, &c);
    }
    if (!ok) {
        credcache_reject(rf->cache, env_id, pck, cid);
        creds_free(creds);
        if (hit.body != NULL) {
            explicit_bzero(hit.body, hit.body_len);
            free(hit.body);
        }
        store_connection_clear(&c);
        return false;
    }
    if (now - c.last_fetched_at > REFRESH_TOUCH_INTERVAL_MS) {
        touch_later(rf, c.id);
        c.last_fetched_at = now;
        hit.serial = credcache_touch_ex(rf->cache, env_id, pck, cid, hit.serial, now);
    }
    r->conn = c; /* takes ownership */
    r->creds = creds;
    r->body = hit.body;
    r->body_len = hit.body_len;
    r->cache_serial = hit.serial;
    r->outcome = REFRESH_OK;
    return true;
}

void
refresher_keep_body(struct refresher *rf, const struct refresh_result *r, int body_variant,
                    const char *text, size_t len)
{
    if (rf->cache == NULL || r->outcome != REFRESH_OK || r->cache_serial == 0)
        return;
    credcache_put_body(rf->cache, r->conn.env_id, r->conn.provider_config_key,
                       r->conn.connection_id, r->cache_serial, body_variant, text, len);
}

bool
refresher_get_fresh(struct refresher *rf, int64_t env_id, const char *provider_config_key,
                    const char *connection_id, int force, refresher_done_fn done, void *ud,
                    struct refresh_result *now_out)
{
    return refresher_get_fresh_ex(rf, env_id, provider_config_key, connection_id, force, -1, done,
                                  ud, now_out);
}

bool
refresher_get_fresh_ex(struct refresher *rf, int64_t env_id, const char *provider_config_key,
                       const char *connection_id, int force, int body_variant,
                       refresher_done_fn done, void *ud, struct refresh_result *now_out)
{
    uint64_t clock;
    struct store_connection c;
    struct flight *f;
    struct waiter *w;
    int64_t now = latch_now_ms();
    latch_rc rc;
    bool need;

    atomic_fetch_add_explicit(&rf->gets, 1, memory_order_relaxed);
    memset(now_out, 0, sizeof *now_out);
    memset(&c, 0, sizeof c);
    if (!force && rf->cache != NULL &&
        cached_read(rf, env_id, provider_config_key, connection_id, now, body_variant, now_out))
        return true;
    clock = store_conn_clock(); /* before the read: a write after it makes the entry stale */
    rc = store_connection_get(rf->o.store, env_id, provider_config_key, connection_id, &c);
    if (rc == LATCH_E_NOT_FOUND) {
        set_err(now_out, REFRESH_NOT_FOUND, "Failed to find connection");
        return true;
    }
    if (rc != LATCH_OK) {
        set_err(now_out, REFRESH_STORE_UNAVAILABLE, "");
        return true;
    }
    if (now - c.last_fetched_at > REFRESH_TOUCH_INTERVAL_MS) {
        touch_later(rf, c.id);
        c.last_fetched_at = now;
    }
    need = force || !is_fresh(rf, &c, now) || c.needs_reauth;
    if (!need) {
        struct cache_fill fill = {rf, &c, clock, now};

        /*
         * The prepared answer is kept from the first hit on (cache_serial stays 0 here): a
         * connection read once pays nothing for it.
         */
        answer_ok(rf, &c, now_out, &fill);
        store_connection_clear(&c);
        return true;
    }
    if (answer_held_back(rf, &c, force, now, now_out)) {
        store_connection_clear(&c);
        return true;
    }

    w = xcalloc(1, sizeof *w);
    w->done = done;
    w->ud = ud;
    pthread_mutex_lock(&rf->mu);
    for (f = rf->flights; f != NULL; f = f->next)
        if (f->conn_id == c.id)
            break;
    if (f != NULL) {
        w->next = f->waiters;
        f->waiters = w;
        pthread_mutex_unlock(&rf->mu);
        store_connection_clear(&c);
        return false;
    }
    f = xcalloc(1, sizeof *f);
    f->rf = rf;
    f->conn_id = c.id;
    f->env_id = env_id;
    f->observed_version = c.version;
    f->force = force != 0;
    f->why = force;
    f->lease_deadline = now + 2LL * rf->o.lease_ms;
    (void)snprintf(f->owner, sizeof f->owner, "%s:%llu", rf->node_id,
                   (unsigned long long)atomic_fetch_add(&rf->seq, 1));
    f->conn = c; /* takes ownership */
    f->waiters = w;
    f->next = rf->flights;
    rf->flights = f;
    pthread_mutex_unlock(&rf->mu);

    /*
     * Taking the lease is a store write (a commit that waits for fsync, or for the row lock of
     * another node's transaction): not on the caller's thread, which serves other connections.
     */
    worker_run(rf->o.worker, lease_job, f);
    return false;
}

static void
noop_done(struct refresh_result *r, void *ud)
{
    (void)r;
    (void)ud;
}

static void
scan_due(struct refresher *rf)
{
    int64_t now = latch_now_ms();
    int64_t *ids = NULL, *envs = NULL;
    size_t n = 0;
    int64_t m = rf->margin_override_s >= 0 ? (int64_t)rf->margin_override_s * 1000
                                           : (int64_t)rf->o.margin_s * 1000;

    if (store_connection_due_for_refresh(rf->o.store, now + m, now - REFRESH_IN_USE_WINDOW_MS,
                                         REFRESH_SCAN_BATCH, &ids, &envs, &n) != LATCH_OK)
        return;
    for (size_t i = 0; i < n; i++) {
        struct store_connection c;
        struct refresh_result r;

        memset(&c, 0, sizeof c);
        if (store_connection_get_by_id(rf->o.store, envs[i], ids[i], &c) != LATCH_OK)
            continue;
        if (refresher_get_fresh(rf, envs[i], c.provider_config_key, c.connection_id, false,
                                noop_done, NULL, &r))
            refresh_result_clear(&r);
        store_connection_clear(&c);
    }
    free(ids);
    free(envs);
}

static void *
refresher_main(void *arg)
{
    struct refresher *rf = arg;
    int64_t last_scan = 0, last_purge = 0, last_trim = 0;
    uint64_t trim_seen = 0;
    bool trimmed = false;

    pthread_mutex_lock(&rf->mu);
    while (!rf->stop) {
        struct timespec ts;
        struct flight *f;
        bool any_waiting = false;
        int64_t now;

        for (f = rf->flights; f != NULL; f = f->next)
            any_waiting |= f->waiting_lease;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += (any_waiting ? REFRESH_LEASE_POLL_MS : 500) * 1000000L;
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        (void)pthread_cond_timedwait(&rf->cv, &rf->mu, &ts);
        if (rf->stop)
            break;
        /* poll foreign leases: pick one waiting flight at a time, outside the lock */
        for (;;) {
            for (f = rf->flights; f != NULL; f = f->next)
                if (f->waiting_lease)
                    break;
            if (f == NULL)
                break;
            f->waiting_lease = false;
            pthread_mutex_unlock(&rf->mu);
            if (!try_lease(f)) {
                pthread_mutex_lock(&rf->mu);
                f->waiting_lease = true;
                break;
            }
            pthread_mutex_lock(&rf->mu);
        }
        flush_touches(rf);
        now = latch_now_ms();
        if (rf->o.background_refresh && now - last_scan >= REFRESH_SCAN_INTERVAL_MS) {
            last_scan = now;
            pthread_mutex_unlock(&rf->mu);
            scan_due(rf);
            pthread_mutex_lock(&rf->mu);
        }
        if (now - last_trim >= REFRESH_TRIM_INTERVAL_MS) {
            uint64_t seen = atomic_load_explicit(&rf->gets, memory_order_relaxed);

            last_trim = now;
            /* once traffic stops, give freed memory (buffers of reaped client connections,
             * curl's transfers) back to the OS; under load the pages would only be faulted
             * back in by the next requests. Outside the lock: it walks every arena. */
            if (seen == trim_seen && !trimmed) {
                trimmed = true;
                pthread_mutex_unlock(&rf->mu);
                (void)malloc_trim(64 * 1024);
                pthread_mutex_lock(&rf->mu);
            } else if (seen != trim_seen) {
                trim_seen = seen;
                trimmed = false;
            }
        }
        if (now - last_purge > 60000) {
            last_purge = now;
            pthread_mutex_unlock(&rf->mu);
            (void)store_session_purge_expired(rf->o.store, now);
            pthread_mutex_lock(&rf->mu);
        }
    }
    flush_touches(rf);
    pthread_mutex_unlock(&rf->mu);
    return NULL;
}

latch_rc
refresher_start(const struct refresher_opts *o, struct refresher **out)
{
    struct refresher *rf = xcalloc(1, sizeof *rf);

    rf->o = *o;
    latch_strlcpy(rf->node_id, o->node_id, sizeof rf->node_id);
    rf->o.node_id = rf->node_id;
    rf->margin_override_s = o->margin_override ? o->margin_s : -1;
    {
        struct credcache_opts co = {o->cache_entries, o->cache_bytes,
                                    (int64_t)o->cache_max_age_s * 1000};

        rf->cache = credcache_new(&co);
    }
    pthread_mutex_init(&rf->mu, NULL);
    pthread_cond_init(&rf->cv, NULL);
    if (pthread_create(&rf->thr, NULL, refresher_main, rf) != 0) {
        credcache_free(rf->cache);
        free(rf);
        return LATCH_E_INTERNAL;
    }
    rf->started = true;
    *out = rf;
    return LATCH_OK;
}

void
refresher_drain(struct refresher *rf, int64_t within_ms)
{
    if (rf == NULL)
        return;
    pthread_mutex_lock(&rf->mu);
    if (rf->drain_deadline == 0)
        rf->drain_deadline = latch_now_ms() + within_ms;
    pthread_cond_signal(&rf->cv);
    pthread_mutex_unlock(&rf->mu);
}

void
refresher_halt(struct refresher *rf)
{
    if (rf == NULL)
        return;
    pthread_mutex_lock(&rf->mu);
    rf->stop = true;
    pthread_cond_signal(&rf->cv);
    pthread_mutex_unlock(&rf->mu);
    if (rf->started)
        pthread_join(rf->thr, NULL);
    rf->started = false;
}

void
refresher_stop(struct refresher *rf)
{
    if (rf == NULL)
        return;
    refresher_halt(rf);
    credcache_free(rf->cache); /* wipes every cached credential */
    pthread_mutex_destroy(&rf->mu);
    pthread_cond_destroy(&rf->cv);
    free(rf);
}

uint64_t
refresher_token_requests(const struct refresher *rf)
{
    return atomic_load(&((struct refresher *)(uintptr_t)rf)->token_requests);
}

void
refresher_cache_stats(const struct refresher *rf, struct credcache_stats *out)
{
    credcache_stats(rf != NULL ? rf->cache : NULL, out);
}
