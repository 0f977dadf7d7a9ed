#include "api/api.h"

#include <ctype.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app.h"
#include "core/latch_limits.h"
#include "core/log.h"
#include "core/ratelimit.h"
#include "core/timer.h"
#include "util/str.h"
#include "util/xalloc.h"
#include "crypto/vault.h"
#include "core/worker.h"
#include "util/clock.h"

#define CONNECT_TOKEN_PREFIX "nango_connect_session_"

static const struct api_route routes[] = {
    {"GET", "/health", api_health, AUTH_NONE, 0, 0},
    {"GET", "/ui/*", api_ui_asset, AUTH_NONE, 0, 0}, /* before "/ui": that one tolerates a '/' */
    {"GET", "/ui", api_ui_asset, AUTH_NONE, 0, 0},
    {"GET", "/providers", api_providers_list, AUTH_SESSION_OR_SECRET, 0, 0},
    {"GET", "/providers/:provider", api_provider_get, AUTH_SESSION_OR_SECRET, 0, 0},
    {"GET", "/integrations", api_integrations_list, AUTH_SESSION_OR_SECRET, API_NO_QUERY, 0},
    {"POST", "/integrations", api_integration_create, AUTH_SECRET,
     API_JSON_BODY | API_NO_QUERY | API_OFFLOAD, LATCH_MAX_JSON_BODY},
    {"GET", "/integrations/:key", api_integration_get, AUTH_SECRET, 0, 0},
    {"PATCH", "/integrations/:key", api_integration_patch, AUTH_SECRET,
     API_JSON_BODY | API_NO_QUERY | API_OFFLOAD, LATCH_MAX_JSON_BODY},
    {"DELETE", "/integrations/:key", api_integration_delete, AUTH_SECRET,
     API_NO_QUERY | API_OFFLOAD, 0},
    {"POST", "/connections/metadata", api_metadata_set, AUTH_SECRET,
     API_JSON_BODY | API_NO_QUERY | API_OFFLOAD, LATCH_MAX_JSON_BODY},
    {"PATCH", "/connections/metadata", api_metadata_update, AUTH_SECRET,
     API_JSON_BODY | API_NO_QUERY | API_OFFLOAD, LATCH_MAX_JSON_BODY},
    {"GET", "/connections", api_connections_list, AUTH_SECRET, 0, 0},
    {"POST", "/connections", api_connection_create, AUTH_SECRET,
     API_JSON_BODY | API_NO_QUERY | API_OFFLOAD, LATCH_MAX_JSON_BODY},
    {"GET", "/connections/:id", api_connection_get, AUTH_SECRET, 0, 0},
    {"DELETE", "/connections/:id", api_connection_delete, AUTH_SECRET, API_OFFLOAD, 0},
    {"PATCH", "/connections/:id", api_connection_patch, AUTH_SECRET, API_JSON_BODY | API_OFFLOAD,
     LATCH_MAX_JSON_BODY},
    /* deprecated singular aliases still used by older SDKs */
    {"POST", "/connection/metadata", api_metadata_set, AUTH_SECRET,
     API_JSON_BODY | API_NO_QUERY | API_OFFLOAD, LATCH_MAX_JSON_BODY},
    {"PATCH", "/connection/metadata", api_metadata_update, AUTH_SECRET,
     API_JSON_BODY | API_NO_QUERY | API_OFFLOAD, LATCH_MAX_JSON_BODY},
    {"GET", "/connection", api_connections_list, AUTH_SECRET, 0, 0},
    {"POST", "/connection", api_connection_create, AUTH_SECRET,
     API_JSON_BODY | API_NO_QUERY | API_OFFLOAD, LATCH_MAX_JSON_BODY},
    {"POST", "/connection/:id/metadata", api_legacy_metadata_set, AUTH_SECRET,
     API_JSON_BODY | API_OFFLOAD, LATCH_MAX_JSON_BODY},
    {"PATCH", "/connection/:id/metadata", api_legacy_metadata_update, AUTH_SECRET,
     API_JSON_BODY | API_OFFLOAD, LATCH_MAX_JSON_BODY},
    {"GET", "/connection/:id", api_connection_get, AUTH_SECRET, 0, 0},
    {"DELETE", "/connection/:id", api_connection_delete, AUTH_SECRET, API_OFFLOAD, 0},
    {"PATCH", "/connection/:id", api_connection_patch, AUTH_SECRET, API_JSON_BODY | API_OFFLOAD,
     LATCH_MAX_JSON_BODY},
    {"POST", "/connect/sessions", api_connect_session_create, AUTH_SECRET,
     API_JSON_BODY | API_NO_QUERY | API_OFFLOAD, LATCH_MAX_JSON_BODY},
    {"POST", "/connect/sessions/reconnect", api_connect_session_reconnect, AUTH_SECRET,
     API_JSON_BODY | API_NO_QUERY | API_OFFLOAD, LATCH_MAX_JSON_BODY},
    {"GET", "/connect/session", api_connect_session_get, AUTH_SESSION_HEADER, API_NO_QUERY, 0},
    {"DELETE", "/connect/session", api_connect_session_delete, AUTH_SESSION_HEADER,
     API_NO_QUERY | API_OFFLOAD, 0},
    {"POST", "/oauth2/auth/:key", api_oauth2_cc, AUTH_SESSION_QUERY, API_JSON_BODY | API_OFFLOAD,
     LATCH_MAX_JSON_BODY},
    {"*", "/proxy/*", api_proxy, AUTH_SECRET, API_STREAM, (size_t)LATCH_MAX_PROXY_BODY},
};

/* Prefixes where Nango rejects non-JSON content types (jsonContentTypeMiddleware). */
static const char *const json_prefixes[] = {
    "/providers", "/integrations", "/connection", "/connect", "/environment", NULL,
};

/*
 * Matches path against pattern; captures ":name" segments and a trailing "*" into c.
 * Returns true on match.
 */
static bool
route_match(const char *pattern, const char *path, struct api_ctx *c)
{
    size_t used = 0;
    int np = 0;
    const char *p = pattern, *s = path;

    while (*p != '\0') {
        if (*p == '*') {
            size_t n = strlen(s);

            if (np >= 4 || used + n + 1 > sizeof c->cap_buf)
                return false;
            memcpy(c->cap_buf + used, s, n + 1);
            c->params[np] = c->cap_buf + used; /* "*" is the last segment: nothing follows */
            return true;
        }
        if (*p == ':') {
            const char *end = strchr(s, '/');
            size_t n = end ? (size_t)(end - s) : strlen(s);

            if (n == 0 || np >= 4 || used + n + 1 > sizeof c->cap_buf)
                return false;
            memcpy(c->cap_buf + used, s, n);
            c->cap_buf[used + n] = '\0';
            c->params[np++] = c->cap_buf + used;
            used += n + 1;
            s += n;
            while (*p != '\0' && *p != '/')
                p++;
            continue;
        }
        if (*p != *s)
            return false;
        p++;
        s++;
    }
    /* tolerate one trailing slash */
    return *s == '\0' || (s[0] == '/' && s[1] == '\0');
}

static const struct api_route *
route_find(const char *method, const char *path, struct api_ctx *c, bool *method_mismatch)
{
    struct api_ctx scratch = {0};

    *method_mismatch = false;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        const struct api_route *r = &routes[i];
        struct api_ctx *cc = c != NULL ? c : &scratch;

        if (!route_match(r->pattern, path, cc))
            continue;
        if (strcmp(r->method, "*") == 0 || strcmp(r->method, method) == 0 ||
            (strcmp(method, "HEAD") == 0 && strcmp(r->method, "GET") == 0))
            return r;
        *method_mismatch = true;
    }
    return NULL;
}

size_t
api_body_limit(const char *method, const char *path, void *app)
{
    bool mm;
    const struct api_route *r = route_find(method, path, NULL, &mm);

    (void)app;
    return r != NULL ? r->body_limit : 0;
}

bool
api_stream_body(const char *method, const char *path, void *app)
{
    bool mm;
    const struct api_route *r = route_find(method, path, NULL, &mm);

    (void)app;
    return r != NULL && (r->flags & API_STREAM) != 0;
}

void
api_ctx_free(struct api_ctx *c)
{
    if (c == NULL)
        return;
    store_env_clear(&c->env);
    store_session_clear(&c->session);
    if (c->body != NULL)
        json_decref(c->body);
    free(c);
}

static void
ctx_free_cb(void *p)
{
    api_ctx_free(p);
}

void
api_reply(struct api_ctx *c, unsigned status, json_t *body)
{
    http_resp_json(c->req, status, body);
}

void
api_reply_secret(struct api_ctx *c, unsigned status, json_t *body)
{
    http_resp_json_secret(c->req, status, body);
}

void
api_error(struct api_ctx *c, unsigned status, const char *code, const char *message)
{
    http_req_log_kv(c->req, "err", code);
    http_resp_error(c->req, status, code, message);
}

void
api_error_list(struct api_ctx *c, unsigned status, const char *code, const char *message,
               json_t *errors)
{
    json_t *e = json_object();
    char *m = latch_utf8_sanitize(message);

    json_object_set_new(e, "code", json_string(code));
    json_object_set_new(e, "message", json_string(m));
    free(m);
    json_object_set_new(e, "errors", errors);
    http_req_log_kv(c->req, "err", code);
    api_reply(c, status, json_pack("{s:o}", "error", e));
}

void
api_issue(json_t *errors, const char *code, const char *message, const char *const *path)
{
    json_t *p = json_array();
    char *m = latch_utf8_sanitize(message);

    for (size_t i = 0; path != NULL && path[i] != NULL; i++) {
        char *seg = latch_utf8_sanitize(path[i]);

        json_array_append_new(p, json_string(seg));
        free(seg);
    }
    json_array_append_new(errors,
                          json_pack("{s:s, s:s, s:o}", "code", code, "message", m, "path", p));
    free(m);
}

void
api_strict_keys(json_t *obj, const char *const *allowed, const char *const *path, json_t *errors)
{
    const char *k;
    json_t *v;

    json_object_foreach(obj, k, v)
    {
        bool ok = false;

        for (size_t i = 0; allowed[i] != NULL; i++)
            if (strcmp(k, allowed[i]) == 0)
                ok = true;
        if (!ok) {
            char msg[128];
            char clean[64];
            size_t j = 0;

            for (const char *q = k; *q != '\0' && j + 1 < sizeof clean; q++)
                clean[j++] = isprint((unsigned char)*q) ? *q : '?';
            clean[j] = '\0';
            (void)snprintf(msg, sizeof msg, "Unrecognized key: \"%s\"", clean);
            api_issue(errors, "unrecognized_keys", msg, path);
        }
    }
}

void
api_fmt_time(int64_t ms, bool plus00, char out[40])
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;

    char tmp[128];

    gmtime_r(&t, &tm);
    (void)snprintf(tmp, sizeof tmp, "%04d-%02d-%02dT%02d:%02d:%02d.%03d%s", tm.tm_year + 1900,
                   tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000),
                   plus00 ? "+00:00" : "Z");
    latch_strlcpy(out, tmp, 40);
}

json_t *
api_time_json(int64_t ms, bool plus00)
{
    char b[40];

    if (ms == 0)
        return json_null();
    api_fmt_time(ms, plus00, b);
    return json_string(b);
}

bool
api_parse_bool(const char *s, bool *out)
{
    static const char *const t[] = {"true", "1", "yes", "on", "y", "enabled", NULL};
    static const char *const f[] = {"false", "0", "no", "off", "n", "disabled", "", NULL};

    for (size_t i = 0; t[i] != NULL; i++)
        if (strcasecmp(s, t[i]) == 0) {
            *out = true;
            return true;
        }
    for (size_t i = 0; f[i] != NULL; i++)
        if (strcasecmp(s, f[i]) == 0) {
            *out = false;
            return true;
        }
    return false;
}

json_t *
api_json_col(const char *text)
{
    json_t *v;

    if (text == NULL)
        return json_null();
    v = json_loads(text, JSON_DECODE_ANY, NULL);
    return v != NULL ? v : json_null();
}

bool
api_json_array_has_string(const json_t *arr, const char *s)
{
    size_t i;
    json_t *v;

    json_array_foreach(arr, i, v)
    {
        if (json_is_string(v) && strcmp(json_string_value(v), s) == 0)
            return true;
    }
    return false;
}

char *
api_json_dump(const json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);

    return s != NULL ? s : xstrdup("null");
}

/* Depth of [ and { outside strings, to refuse deep JSON before jansson recurses into it. */
static size_t
json_depth(const char *p, size_t n)
{
    size_t d = 0, max = 0;
    bool in_str = false;

    for (size_t i = 0; i < n; i++) {
        char ch = p[i];

        if (in_str) {
            if (ch == '\\')
                i++;
            else if (ch == '"')
                in_str = false;
            continue;
        }
        if (ch == '"')
            in_str = true;
        else if (ch == '[' || ch == '{') {
            if (++d > max)
                max = d;
        } else if ((ch == ']' || ch == '}') && d > 0)
            d--;
    }
    return max;
}

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

const struct store_env *
api_env(struct api_ctx *c)
{
    if (!c->env_loaded) {
        if (store_env_get(c->app->store, c->env_id, &c->env) != LATCH_OK)
            return NULL;
        c->env_loaded = true;
    }
    return &c->env;
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
authcache_get(struct app *a, const unsigned char h[32], int64_t *env_id)
{
    struct authcache *ac = a->authcache;
    size_t i = ((size_t)h[0] | (size_t)h[1] << 8) % AUTHCACHE_SLOTS;
    bool hit = false;

    if (ac == NULL)
        return false;
    pthread_mutex_lock(&ac->mu);
    if (ac->slot[i].expires > latch_now_ms() && latch_mem_equal_ct(ac->slot[i].hash, h, 32)) {
        *env_id = ac->slot[i].env_id;
        hit = true;
    }
    pthread_mutex_unlock(&ac->mu);
    return hit;
}

static void
authcache_put(struct app *a, const unsigned char h[32], int64_t env_id)
{
    struct authcache *ac = a->authcache;
    size_t i = ((size_t)h[0] | (size_t)h[1] << 8) % AUTHCACHE_SLOTS;

    if (ac == NULL)
        return;
    pthread_mutex_lock(&ac->mu);
    memcpy(ac->slot[i].hash, h, 32);
    ac->slot[i].env_id = env_id;
    ac->slot[i].expires = latch_now_ms() + AUTHCACHE_TTL_MS;
    pthread_mutex_unlock(&ac->mu);
}

static bool
auth_secret(struct api_ctx *c, const char *token)
{
    unsigned char h[32];
    int64_t env_id = 0;
    latch_rc rc;

    if (!is_uuid_v4(token)) {
        api_error(c, 401, "invalid_secret_key_format",
                  "Authentication failed. The provided secret key is not a UUID v4.");
        return false;
    }
    vault_index_hash(c->app->vault, token, h);
    rc = authcache_get(c->app, h, &env_id) ? LATCH_OK
                                           : store_apikey_lookup(c->app->store, h, &env_id);
    if (rc == LATCH_OK)
        authcache_put(c->app, h, env_id);
    if (rc == LATCH_E_NOT_FOUND) {
        api_error(c, 401, "unknown_account",
                  "Authentication failed. The provided secret key does not match any account.");
        return false;
    }
    if (rc != LATCH_OK) {
        api_error(c, 503, "service_unavailable", "The store is unavailable. Try again.");
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
        api_error(c, 401, "invalid_connect_session_token_format",
                  "Authentication failed. The provided connect session token is not following "
                  "correct format: nango_connect_session_RANDOM");
        return false;
    }
    vault_index_hash(c->app->vault, token, h);
    rc = store_session_get_by_hash(c->app->store, h, &c->session);
    if (rc == LATCH_OK && c->session.expires_at <= latch_now_ms())
        rc = LATCH_E_NOT_FOUND;
    if (rc == LATCH_E_NOT_FOUND) {
        api_error(c, 401, "unknown_connect_session_token",
                  "Authentication failed. The provided connect session token does not match any "
                  "account or has expired.");
        return false;
    }
    if (rc != LATCH_OK) {
        api_error(c, 503, "service_unavailable", "The store is unavailable. Try again.");
        return false;
    }
    c->env_id = c->session.env_id;
    c->by_session = true;
    return true;
}

static bool
authenticate(struct api_ctx *c, enum api_auth mode)
{
    const char *h;
    const char *tok;

    if (mode == AUTH_NONE)
        return true;
    if (mode == AUTH_SESSION_QUERY) {
        tok = http_req_query(c->req, "connect_session_token");
        if (tok == NULL) {
            if (http_req_query(c->req, "public_key") != NULL) {
                api_error(c, 401, "deprecated_authentication",
                          "Public key authentication is deprecated. Please use connect session "
                          "authentication instead.");
                return false;
            }
            api_error(c, 401, "missing_connect_session_token",
                      "Authentication failed. The request is missing the connect_session_token "
                      "query parameter.");
            return false;
        }
        return auth_session(c, tok);
    }
    h = http_req_header(c->req, "Authorization");
    if (h == NULL || h[0] == '\0') {
        api_error(c, 401, "missing_auth_header",
                  "Authentication failed. The request is missing the Authorization header.");
        return false;
    }
    /* Nango: token = header.split('Bearer ').pop() */
    tok = strstr(h, "Bearer ");
    tok = tok != NULL ? tok + 7 : h;
    if (tok[0] == '\0' || strlen(tok) > 256) {
        api_error(c, 401, "malformed_auth_header",
                  "Authentication failed. The provided Authorization header is malformed.");
        return false;
    }
    if (strncmp(tok, CONNECT_TOKEN_PREFIX, strlen(CONNECT_TOKEN_PREFIX)) == 0) {
        if (mode == AUTH_SECRET) {
            api_error(c, 401, "invalid_secret_key_format",
                      "Authentication failed. The provided secret key is not a UUID v4.");
            return false;
        }
        return auth_session(c, tok);
    }
    if (mode == AUTH_SESSION_HEADER) {
        api_error(c, 401, "invalid_connect_session_token_format",
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

static bool
rate_limited(struct api_ctx *c, struct ratelimit *rl, const char *key)
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
    (void)snprintf(b, sizeof b, "%u", v.retry_after_s);
    http_resp_header(c->req, "Retry-After", b);
    api_error(c, 429, "too_many_requests", "Too many requests. Retry after the Retry-After delay.");
    /*
     * Tarpit: the 429 leaves after LATCH_RATE_LIMIT_DELAY_MS. A client looping on its
     * connections then sends at most one request per connection per delay, so an environment
     * that floods latch pays in waiting, not in the CPU every other environment shares. The
     * waiting request costs a suspended connection and a timer entry, both bounded.
     */
    if (c->app->cfg->rate_delay_ms > 0 && c->app->timer != NULL) {
        http_req_suspend(c->req);
        if (timer_after(c->app->timer, c->app->cfg->rate_delay_ms, resume_later, c->req) !=
            LATCH_OK)
            http_req_resume(c->req); /* timer full or stopping: answer now */
    }
    return true;
}

void
api_defer(struct api_ctx *c)
{
    if (c->offloaded != NULL)
        atomic_fetch_add(&c->holds, 1); /* already suspended by offload() */
    else
        http_req_suspend(c->req);
}

void
api_resume(struct api_ctx *c)
{
    /* the last hold resumes; until then c cannot be freed (the request is not finished) */
    if (c->offloaded == NULL || atomic_fetch_sub(&c->holds, 1) == 1)
        http_req_resume(c->req);
}

/* Worker thread: runs an API_OFFLOAD handler, then hands the answer back to the pool. */
static void
run_offloaded(void *ud)
{
    struct api_ctx *c = ud;

    atomic_store(&c->holds, 1); /* the handler's own */
    c->offloaded(c);
    api_resume(c);
}

/*
 * Runs a writing handler on the worker pool, the request suspended meanwhile. A full queue (or
 * a pool that is stopping) runs it here instead: slower for this thread, but nothing is refused.
 */
static void
offload(struct api_ctx *c, api_handler_fn handler)
{
    c->offloaded = handler;
    http_req_suspend(c->req);
    worker_run(c->app->worker, run_offloaded, c);
}

static bool
needs_json_content_type(const char *path, const struct api_route *r)
{
    if (r->flags & API_JSON_BODY)
        return true;
    for (size_t i = 0; json_prefixes[i] != NULL; i++)
        if (strncmp(path, json_prefixes[i], strlen(json_prefixes[i])) == 0)
            return true;
    return false;
}

static bool
parse_body(struct api_ctx *c)
{
    size_t len = 0;
    const char *b = http_req_body(c->req, &len);
    json_error_t jerr;

    if (b == NULL || len == 0) {
        c->body = json_object();
        return true;
    }
    if (json_depth(b, len) > LATCH_MAX_JSON_DEPTH) {
        api_error(c, 400, "invalid_json", "The JSON body is nested too deeply.");
        return false;
    }
    c->body = json_loadb(b, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (c->body == NULL) {
        char msg[256];

        (void)snprintf(msg, sizeof msg, "Invalid JSON body: %s (line %d, column %d)", jerr.text,
                       jerr.line, jerr.column);
        api_error(c, 400, "invalid_json", msg);
        return false;
    }
    return true;
}

void
api_dispatch(struct http_req *req, void *appv)
{
    struct app *app = appv;
    const char *method = http_req_method(req);
    const char *path = http_req_path(req);
    struct api_ctx *c = xcalloc(1, sizeof *c);
    const struct api_route *r;
    bool method_mismatch;
    const char *ct;

    c->app = app;
    c->req = req;
    http_req_set_app_data(req, c, ctx_free_cb);

    r = route_find(method, path, c, &method_mismatch);
    if (r == NULL) {
        if (method_mismatch)
            api_error(c, 405, "method_not_allowed", "This method is not allowed on this route.");
        else
            api_error(c, 404, "not_found", "Unknown route.");
        return;
    }
    for (int i = 0; i < 4; i++) {
        if (c->params[i] != NULL && !latch_utf8_clean(c->params[i])) {
            api_error(c, 400, "invalid_uri_params",
                      "The URL path must be valid UTF-8 without control characters.");
            return;
        }
    }
    if (strstr(http_req_raw_target(req), "%00") != NULL) {
        /* a decoded NUL would silently truncate a value (e.g. an instance name) */
        api_error(c, 400, "invalid_query_params", "NUL bytes are not allowed in the URL.");
        return;
    }
    if (http_req_query_count(req) > LATCH_MAX_QUERY_PARAMS) {
        api_error(c, 400, "invalid_query_params", "Too many query parameters.");
        return;
    }
    ct = http_req_header(req, "Content-Type");
    if (ct != NULL && needs_json_content_type(path, r) &&
        !latch_str_has_prefix_ci(ct, "application/json")) {
        api_error(c, 415, "invalid_content_type", "Content-Type header must be application/json");
        return;
    }
    if ((r->flags & API_NO_QUERY) && http_req_query_count(req) > 0) {
        json_t *errs = json_array();
        const char *const p[] = {NULL};

        api_issue(errs, "unrecognized_keys", "This endpoint takes no query parameters", p);
        api_error_list(c, 400, "invalid_query_params", "Invalid query parameters", errs);
        return;
    }
    /* browser-facing routes: per client IP, before the session lookup */
    if ((r->auth == AUTH_SESSION_HEADER || r->auth == AUTH_SESSION_QUERY) &&
        rate_limited(c, app->rl_ip, http_req_client_ip(req)))
        return;
    if (!authenticate(c, r->auth))
        return;
    if (c->by_session && r->auth == AUTH_SESSION_OR_SECRET &&
        rate_limited(c, app->rl_ip, http_req_client_ip(req)))
        return;
    if (c->env_id != 0 && !c->by_session) {
        char key[32];

        (void)snprintf(key, sizeof key, "env:%lld", (long long)c->env_id);
        if (rate_limited(c, app->rl_env, key))
            return;
    }
    if ((r->flags & API_JSON_BODY) && !parse_body(c))
        return;
    if (r->flags & API_OFFLOAD) {
        offload(c, r->handler);
        return;
    }
    r->handler(c);
}

bool
api_precheck(struct http_req *req, void *appv)
{
    struct api_ctx *c = xcalloc(1, sizeof *c);
    const struct api_route *r;
    bool method_mismatch, ok;

    c->app = appv;
    c->req = req;
    r = route_find(http_req_method(req), http_req_path(req), c, &method_mismatch);
    /* unknown routes and bodies on routes without one are refused later, without a body */
    ok = r == NULL || r->auth == AUTH_NONE || authenticate(c, r->auth);
    api_ctx_free(c);
    return ok;
}

void
api_health(struct api_ctx *c)
{
    api_reply(c, 200, json_pack("{s:s}", "result", "ok"));
}
