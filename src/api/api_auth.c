#include "api/api_auth.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"
#include "core/ratelimit.h"
#include "core/timer.h"
#include "crypto/vault.h"
#include "util/clock.h"
#include "util/str.h"
#include "util/xalloc.h"

#define CONNECT_TOKEN_PREFIX "nango_connect_session_"

static bool
is_uuid_v4(const char *s)
{
    static const char tmpl[] = "xxxxxxxx-xxxx-4xxx-Yxxx-xxxxxxxxxxxx";

    if (strlen(s) != 36)
        return false;
    for (size_t i = 0; i < 36; i++) {
        char ch = (char)tolower((unsigned char)s[i]);

        if (tmpl[i] == '-' || tmpl[i] == '4') {
            if (ch != tmpl[i])
                return false;
        } else if (tmpl[i] == 'Y') {
            if (ch != '8' && ch != '9' && ch != 'a' && ch != 'b')
                return false;
        } else if (!isxdigit((unsigned char)ch)) {
            return false;
        }
    }
    return true;
}

static bool
is_session_token(const char *s)
{
    size_t pl = strlen(CONNECT_TOKEN_PREFIX);

    if (strncmp(s, CONNECT_TOKEN_PREFIX, pl) != 0 || strlen(s) != pl + 64)
        return false;
    for (size_t i = pl; i < pl + 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

/*
 * A small direct-mapped cache of secret-key hash -> environment (AUTHCACHE_TTL_MS), so a cached
 * token read does not pay a store lookup for its key. A revoked key stays valid at most that long.
 */
#define AUTHCACHE_SLOTS 1024
#define AUTHCACHE_TTL_MS 5000

struct authcache {
    pthread_mutex_t mu;
    struct {
        unsigned char hash[32];
        int64_t env_id;
        int64_t expires;
        char label[64]; /* the key's label, for the operations log's actor */
    } slot[AUTHCACHE_SLOTS];
};

struct authcache *
authcache_new(void)
{
    struct authcache *ac = xcalloc(1, sizeof *ac);

    pthread_mutex_init(&ac->mu, NULL);
    return ac;
}

void
authcache_free(struct authcache *ac)
{
    if (ac == NULL)
        return;
    pthread_mutex_destroy(&ac->mu);
    explicit_bzero(ac, sizeof *ac);
    free(ac);
}

static bool
authcache_get(struct api_deps *a, const unsigned char h[32], int64_t *env_id, char label[64])
{
    struct authcache *ac = a->authcache;
    size_t i = ((size_t)h[0] | (size_t)h[1] << 8) % AUTHCACHE_SLOTS;
    bool hit = false;

    if (ac == NULL)
        return false;
    pthread_mutex_lock(&ac->mu);
    if (ac->slot[i].expires > latch_now_ms() && latch_mem_equal_ct(ac->slot[i].hash, h, 32)) {
        *env_id = ac->slot[i].env_id;
        memcpy(label, ac->slot[i].label, 64);
        hit = true;
    }
    pthread_mutex_unlock(&ac->mu);
    return hit;
}

static void
authcache_put(struct api_deps *a, const unsigned char h[32], int64_t env_id, const char *label)
{
    struct authcache *ac = a->authcache;
    size_t i = ((size_t)h[0] | (size_t)h[1] << 8) % AUTHCACHE_SLOTS;

    if (ac == NULL)
        return;
    pthread_mutex_lock(&ac->mu);
    memcpy(ac->slot[i].hash, h, 32);
    ac->slot[i].env_id = env_id;
    latch_strlcpy(ac->slot[i].label, label, sizeof ac->slot[i].label);
    ac->slot[i].expires = latch_now_ms() + AUTHCACHE_TTL_MS;
    pthread_mutex_unlock(&ac->mu);
}

static void refuse_429(struct api_ctx *c, const struct ratelimit_verdict *v);

/*
 * Answers a failed authentication: 401, or 429 once the client has used up its bucket of failed
 * authentications (LATCH_RATE_LIMIT_AUTH_FAIL). Only failures take from that bucket, and it is
 * not the per-IP request bucket: a flood of bogus tokens slows down only itself, while requests
 * with valid credentials from the same address (every end user behind one proxy) go on.
 */
static void
auth_refuse(struct api_ctx *c, const char *code, const char *message)
{
    struct ratelimit_verdict v;

    if (c->deps->rl_auth_fail != NULL) {
        ratelimit_take(c->deps->rl_auth_fail, http_req_client_ip(c->req), &v);
        if (!v.allowed) {
            http_req_log_kv(c->req, "auth_fail", code);
            refuse_429(c, &v);
            return;
        }
    }
    api_error(c, 401, code, message);
}

static bool
auth_secret(struct api_ctx *c, const char *token)
{
    unsigned char h[32];
    int64_t env_id = 0;
    latch_rc rc;

    if (!is_uuid_v4(token)) {
        auth_refuse(c, "invalid_secret_key_format",
                    "Authentication failed. The provided secret key is not a UUID v4.");
        return false;
    }
    vault_index_hash(c->deps->vault, token, h);
    if (authcache_get(c->deps, h, &env_id, c->key_label)) {
        rc = LATCH_OK;
    } else {
        char *label = NULL;

        rc = store_apikey_find(c->deps->store, h, &env_id, &label);
        if (rc == LATCH_OK) {
            /* a label is an operator's free text: kept short and printable for the log */
            latch_strlcpy(c->key_label, label != NULL ? label : "", sizeof c->key_label);
            authcache_put(c->deps, h, env_id, c->key_label);
        }
        free(label);
    }
    if (rc == LATCH_E_NOT_FOUND) {
        auth_refuse(c, "unknown_account",
                    "Authentication failed. The provided secret key does not match any account.");
        return false;
    }
    if (rc != LATCH_OK) {
        api_store_unavailable(c);
        return false;
    }
    c->env_id = env_id;
    return true;
}

static bool
auth_session(struct api_ctx *c, const char *token)
{
    unsigned char h[32];
    latch_rc rc;

    if (!is_session_token(token)) {
        auth_refuse(c, "invalid_connect_session_token_format",
                    "Authentication failed. The provided connect session token is not following "
                    "correct format: nango_connect_session_RANDOM");
        return false;
    }
    vault_index_hash(c->deps->vault, token, h);
    rc = store_session_get_by_hash(c->deps->store, h, &c->session);
    if (rc == LATCH_OK && c->session.expires_at <= latch_now_ms())
        rc = LATCH_E_NOT_FOUND;
    if (rc == LATCH_E_NOT_FOUND) {
        auth_refuse(c, "unknown_connect_session_token",
                    "Authentication failed. The provided connect session token does not match any "
                    "account or has expired.");
        return false;
    }
    if (rc != LATCH_OK) {
        api_store_unavailable(c);
        return false;
    }
    c->env_id = c->session.env_id;
    c->by_session = true;
    return true;
}

bool
api_authenticate(struct api_ctx *c, enum api_auth mode)
{
    const char *h;
    const char *tok;

    if (mode == AUTH_NONE)
        return true;
    if (mode == AUTH_SESSION_QUERY) {
        tok = http_req_query(c->req, "connect_session_token");
        if (tok == NULL) {
            if (http_req_query(c->req, "public_key") != NULL) {
                auth_refuse(c, "deprecated_authentication",
                            "Public key authentication is deprecated. Please use connect session "
                            "authentication instead.");
                return false;
            }
            auth_refuse(c, "missing_connect_session_token",
                        "Authentication failed. The request is missing the connect_session_token "
                        "query parameter.");
            return false;
        }
        return auth_session(c, tok);
    }
    h = http_req_header(c->req, "Authorization");
    if (h == NULL || h[0] == '\0') {
        auth_refuse(c, "missing_auth_header",
                    "Authentication failed. The request is missing the Authorization header.");
        return false;
    }
    /* Nango: token = header.split('Bearer ').pop() */
    tok = strstr(h, "Bearer ");
    tok = tok != NULL ? tok + 7 : h;
    if (tok[0] == '\0' || strlen(tok) > 256) {
        auth_refuse(c, "malformed_auth_header",
                    "Authentication failed. The provided Authorization header is malformed.");
        return false;
    }
    if (strncmp(tok, CONNECT_TOKEN_PREFIX, strlen(CONNECT_TOKEN_PREFIX)) == 0) {
        if (mode == AUTH_SECRET) {
            auth_refuse(c, "invalid_secret_key_format",
                        "Authentication failed. The provided secret key is not a UUID v4.");
            return false;
        }
        return auth_session(c, tok);
    }
    if (mode == AUTH_SESSION_HEADER) {
        auth_refuse(c, "invalid_connect_session_token_format",
                    "Authentication failed. The provided connect session token is not following "
                    "correct format: nango_connect_session_RANDOM");
        return false;
    }
    return auth_secret(c, tok);
}

/*
 * Token buckets: per client IP on the routes an end user's browser reaches (connect session or no
 * credentials), per environment on everything a secret key reaches. Nango's X-RateLimit-* headers.
 */
static void
resume_later(void *req)
{
    http_req_resume(req);
}

/* The X-RateLimit-* headers, and when refused the 429 with Retry-After and the tarpit. */
static void
refuse_429(struct api_ctx *c, const struct ratelimit_verdict *v)
{
    char b[32];

    (void)snprintf(b, sizeof b, "%u", v->retry_after_s);
    http_resp_header(c->req, "Retry-After", b);
    api_error(c, 429, "too_many_requests", "Too many requests. Retry after the Retry-After delay.");
    /*
     * Tarpit: the 429 leaves after LATCH_RATE_LIMIT_DELAY_MS. A client looping on its
     * connections then sends at most one request per connection per delay, so an environment
     * that floods latch pays in waiting, not in the CPU every other environment shares. The
     * waiting request costs a suspended connection and a timer entry, both bounded. An answer
     * at the headers (api_precheck) cannot wait; its connection is closed anyway.
     */
    if (c->deps->cfg->rate_delay_ms > 0 && c->deps->timer != NULL && !c->at_headers) {
        http_req_suspend(c->req);
        if (timer_after(c->deps->timer, c->deps->cfg->rate_delay_ms, resume_later, c->req) !=
            LATCH_OK)
            http_req_resume(c->req); /* timer full or stopping: answer now */
    }
}

bool
api_rate_limited(struct api_ctx *c, struct ratelimit *rl, const char *key)
{
    struct ratelimit_verdict v;
    char b[32];

    if (rl == NULL)
        return false;
    ratelimit_take(rl, key, &v);
    (void)snprintf(b, sizeof b, "%u", v.limit);
    http_resp_header(c->req, "X-RateLimit-Limit", b);
    (void)snprintf(b, sizeof b, "%u", v.remaining);
    http_resp_header(c->req, "X-RateLimit-Remaining", b);
    (void)snprintf(b, sizeof b, "%u", v.reset_s);
    http_resp_header(c->req, "X-RateLimit-Reset", b);
    if (v.allowed)
        return false;
    refuse_429(c, &v);
    return true;
}
