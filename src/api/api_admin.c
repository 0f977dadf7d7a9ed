/*
 * api_admin.c - the admin dashboard at /admin: its embedded web app (web-admin/), sign-in with
 * an admin account (latch admin create), the session cookie, CSRF, lockout on guessing, and the
 * router of /admin/api/ (the per-environment routes are in api_admin_env.c).
 *
 * Sessions: a random 256-bit token in the cookie "latch_admin" (HttpOnly, SameSite=Strict,
 * Path=/admin, Secure when LATCH_PUBLIC_URL is https); the store keeps only its keyed hash, an
 * absolute expiry (ADMIN_SESSION_TTL_MS) and the last use (idle timeout ADMIN_IDLE_MS).
 * CSRF: a synchronizer token derived from the session token (HMAC-SHA256), so it needs no
 * storage, changes with every session and is never derivable without the HttpOnly cookie; every
 * method but GET/HEAD must send it as X-CSRF-Token.
 * Guessing: per account (in the store, so it holds across restarts and nodes) after
 * ADMIN_SLOW_AFTER wrong passwords each next try must wait 1, 2, 4... s, and after
 * ADMIN_LOCK_AFTER the account is locked for ADMIN_LOCK_MS. Per client address (in memory) the
 * same after IP_SLOW_AFTER / IP_LOCK_AFTER failures within IP_WINDOW_MS. Unknown emails cost the
 * same scrypt work as known ones.
 * Threads: /admin/api runs on worker threads (API_OFFLOAD); the address table has its mutex.
 */
#include "api/api_admin.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/ui_assets.h"
#include "core/config.h"
#include "core/log.h"
#include "crypto/pwhash.h"
#include "crypto/vault.h"
#include "util/clock.h"
#include "util/str.h"
#include "util/xalloc.h"

#define ADMIN_COOKIE "latch_admin"
#define ADMIN_SESSION_TTL_MS (12LL * 3600 * 1000) /* absolute */
#define ADMIN_IDLE_MS (30LL * 60 * 1000)          /* since the last request */
#define ADMIN_TOUCH_EVERY_MS (60LL * 1000)        /* last-use writes at most this often */
#define ADMIN_SLOW_AFTER 3                        /* wrong passwords before each try waits */
#define ADMIN_LOCK_AFTER 6                        /* wrong passwords before the lock */
#define ADMIN_LOCK_MS (15LL * 60 * 1000)
#define IP_SLOW_AFTER 10
#define IP_LOCK_AFTER 20
#define IP_WINDOW_MS (15LL * 60 * 1000)
#define IP_SLOTS 256

/* Every /admin response: no inline script or style, no framing, no referrer, no sniffing. */
static const char csp[] = "default-src 'self'; script-src 'self'; style-src 'self'; "
                          "img-src 'self' data:; connect-src 'self'; font-src 'self'; "
                          "object-src 'none'; base-uri 'none'; form-action 'self'; "
                          "frame-ancestors 'none'";

static void
security_headers(struct api_ctx *c)
{
    http_resp_header(c->req, "Content-Security-Policy", csp);
    http_resp_header(c->req, "X-Frame-Options", "DENY");
    http_resp_header(c->req, "Referrer-Policy", "no-referrer");
    http_resp_header(c->req, "X-Content-Type-Options", "nosniff");
    http_resp_header(c->req, "Cross-Origin-Opener-Policy", "same-origin");
}

void
api_admin_page(struct api_ctx *c)
{
    const char *rest = c->params[0];
    char path[128];
    const struct ui_asset *a;

    security_headers(c);
    if (rest == NULL) {
        http_resp_header(c->req, "Location", "/admin/");
        http_resp_bytes(c->req, 301, "text/plain", "", 0, true);
        return;
    }
    a = ui_asset_path(rest, path) ? ui_asset_find_in(admin_assets, path) : NULL;
    if (a == NULL) {
        api_error(c, 404, "not_found", "Unknown asset.");
        return;
    }
    ui_asset_send(c->req, a);
}

/* ---- guessing: failures per client address (in memory; one node's view) ---- */

struct ip_slot {
    char ip[64];
    int failures;
    int64_t window_start;
    int64_t not_before; /* slowed or locked until */
};

static struct {
    pthread_mutex_t mu;
    struct ip_slot slot[IP_SLOTS];
} ipt = {.mu = PTHREAD_MUTEX_INITIALIZER};

static size_t
ip_index(const char *ip)
{
    uint32_t h = 2166136261u; /* FNV-1a */

    for (const char *p = ip; *p != '\0'; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    return h % IP_SLOTS;
}

/* Milliseconds the address must still wait (0 = may try now); *locked when it is a lock. */
static int64_t
ip_wait(const char *ip, int64_t now, bool *locked)
{
    struct ip_slot *s;
    int64_t w = 0;

    *locked = false;
    pthread_mutex_lock(&ipt.mu);
    s = &ipt.slot[ip_index(ip)];
    if (strcmp(s->ip, ip) == 0 && s->not_before > now) {
        w = s->not_before - now;
        *locked = s->failures >= IP_LOCK_AFTER;
    }
    pthread_mutex_unlock(&ipt.mu);
    return w;
}

static void
ip_failed(const char *ip, int64_t now)
{
    struct ip_slot *s;

    pthread_mutex_lock(&ipt.mu);
    s = &ipt.slot[ip_index(ip)];
    /* a colliding address takes the slot over: the table is bounded, never a way around it */
    if (strcmp(s->ip, ip) != 0 || now - s->window_start > IP_WINDOW_MS) {
        memset(s, 0, sizeof *s);
        (void)latch_strlcpy(s->ip, ip, sizeof s->ip);
        s->window_start = now;
    }
    s->failures++;
    if (s->failures >= IP_LOCK_AFTER)
        s->not_before = now + ADMIN_LOCK_MS;
    else if (s->failures >= IP_SLOW_AFTER)
        s->not_before = now + (1000LL << (s->failures - IP_SLOW_AFTER));
    pthread_mutex_unlock(&ipt.mu);
}

/* ---- cookies, sessions, CSRF ---- */

/* The value of cookie name in the Cookie header (into out), or false. */
static bool
cookie_get(struct api_ctx *c, const char *name, char *out, size_t size)
{
    const char *h = http_req_header(c->req, "Cookie");
    size_t nl = strlen(name);

    while (h != NULL && *h != '\0') {
        const char *end;
        size_t vl;

        while (*h == ' ' || *h == ';')
            h++;
        end = strchr(h, ';');
        if (end == NULL)
            end = h + strlen(h);
        if ((size_t)(end - h) > nl && strncmp(h, name, nl) == 0 && h[nl] == '=') {
            vl = (size_t)(end - h) - nl - 1;
            if (vl + 1 > size)
                return false;
            memcpy(out, h + nl + 1, vl);
            out[vl] = '\0';
            return true;
        }
        h = end;
    }
    return false;
}

static bool
is_tls(struct api_ctx *c)
{
    return latch_str_has_prefix_ci(c->deps->cfg->public_url, "https://");
}

static void
set_cookie(struct api_ctx *c, const char *token, long max_age)
{
    char v[256];

    (void)snprintf(v, sizeof v,
                   ADMIN_COOKIE "=%s; Path=/admin; Max-Age=%ld; HttpOnly; "
                                "SameSite=Strict%s",
                   token, max_age, is_tls(c) ? "; Secure" : "");
    http_resp_header(c->req, "Set-Cookie", v);
    explicit_bzero(v, sizeof v);
}

static void
csrf_token(struct api_ctx *c, const char *token, char out[65])
{
    (void)c;
    vault_hmac_sha256_hex(token, strlen(token), "latch-admin-csrf:v1", 19, out);
}

/*
 * The signed-in account of this request, or an answer (401/403/503) and false. csrf: the request
 * changes state and must carry the token.
 */
static bool
admin_session(struct api_ctx *c, bool csrf, struct store_admin_session *s)
{
    char token[80], want[65];
    unsigned char h[32];
    int64_t now = latch_now_ms();
    const char *got;
    latch_rc rc;

    memset(s, 0, sizeof *s);
    if (!cookie_get(c, ADMIN_COOKIE, token, sizeof token) || strlen(token) != 64) {
        api_error(c, 401, "unauthorized", "Sign in first.");
        return false;
    }
    vault_index_hash(c->deps->vault, token, h);
    rc = store_admin_session_get(c->deps->store, h, s);
    if (rc == LATCH_OK && (s->expires_at <= now || s->last_seen_at + ADMIN_IDLE_MS <= now)) {
        (void)store_admin_session_delete(c->deps->store, h);
        rc = LATCH_E_NOT_FOUND;
    }
    if (rc != LATCH_OK) {
        explicit_bzero(token, sizeof token);
        store_admin_session_clear(s);
        if (rc != LATCH_E_NOT_FOUND) {
            api_store_unavailable(c);
            return false;
        }
        set_cookie(c, "", 0);
        api_error(c, 401, "unauthorized", "Your session has ended. Sign in again.");
        return false;
    }
    if (csrf) {
        csrf_token(c, token, want);
        got = http_req_header(c->req, "X-CSRF-Token");
        if (got == NULL || strlen(got) != 64 || !latch_mem_equal_ct(got, want, 64)) {
            explicit_bzero(token, sizeof token);
            store_admin_session_clear(s);
            api_error(c, 403, "csrf_failed",
                      "This request lacks a valid CSRF token. Reload the page and try again.");
            return false;
        }
    }
    explicit_bzero(token, sizeof token);
    if (now - s->last_seen_at >= ADMIN_TOUCH_EVERY_MS)
        (void)store_admin_session_touch(c->deps->store, s->id, now);
    return true;
}

static void
too_many(struct api_ctx *c, int64_t wait_ms, const char *who, bool locked)
{
    char msg[200], ra[24];
    long long s = (wait_ms + 999) / 1000;

    (void)snprintf(ra, sizeof ra, "%lld", s);
    http_resp_header(c->req, "Retry-After", ra);
    if (locked)
        (void)snprintf(msg, sizeof msg,
                       "Too many failed sign-ins %s: sign-in is locked for %lld minute%s.", who,
                       (s + 59) / 60, (s + 59) / 60 == 1 ? "" : "s");
    else
        (void)snprintf(msg, sizeof msg,
                       "Too many failed sign-ins %s: wait %lld second%s before trying again.", who,
                       s, s == 1 ? "" : "s");
    api_error(c, 429, locked ? "locked" : "slow_down", msg);
}

/* POST /admin/api/login {"email","password"} */
static void
adm_login(struct api_ctx *c)
{
    const char *ip = http_req_client_ip(c->req);
    const char *email_in = json_string_value(json_object_get(c->body, "email"));
    const char *pw = json_string_value(json_object_get(c->body, "password"));
    int64_t now = latch_now_ms(), wait;
    struct store_admin a;
    char email[256], hex[65], csrf[65];
    unsigned char h[32];
    bool locked, match = false;
    latch_rc rc;
    size_t n;

    memset(&a, 0, sizeof a);
    if (ip == NULL)
        ip = "-";
    if (email_in == NULL || pw == NULL || (n = strlen(email_in)) == 0 || n >= sizeof email ||
        strlen(pw) > PWHASH_MAX_LEN) {
        api_error(c, 400, "invalid_body", "Enter your email and password.");
        return;
    }
    wait = ip_wait(ip, now, &locked);
    if (wait > 0) {
        too_many(c, wait, "from your network", locked);
        return;
    }
    for (size_t i = 0; i <= n; i++)
        email[i] =
            (email_in[i] >= 'A' && email_in[i] <= 'Z') ? (char)(email_in[i] + 32) : email_in[i];
    rc = store_admin_get_by_email(c->deps->store, email, &a);
    if (rc != LATCH_OK && rc != LATCH_E_NOT_FOUND) {
        api_store_unavailable(c);
        return;
    }
    if (rc == LATCH_OK && a.locked_until > now) {
        too_many(c, a.locked_until - now, "for this account",
                 a.failed_attempts >= ADMIN_LOCK_AFTER);
        store_admin_clear(&a);
        return;
    }
    if (rc == LATCH_OK)
        rc = pwhash_verify(pw, a.password_hash, &match);
    else
        pwhash_dummy_verify(pw);
    /*
     * The wait counts from the answer, not from the request: scrypt takes about a second on a
     * busy machine, and a wait that started before it could be over before the client hears of
     * it (seen in CI: the retry right after the third failure was let through).
     */
    now = latch_now_ms();
    if (rc != LATCH_OK || !match) {
        int attempts = 0;

        ip_failed(ip, now);
        if (a.id != 0 && store_admin_login_failed(c->deps->store, a.id, &attempts) == LATCH_OK) {
            if (attempts >= ADMIN_LOCK_AFTER)
                (void)store_admin_lock(c->deps->store, a.id, now + ADMIN_LOCK_MS);
            else if (attempts >= ADMIN_SLOW_AFTER)
                (void)store_admin_lock(c->deps->store, a.id,
                                       now + (1000LL << (attempts - ADMIN_SLOW_AFTER)));
        }
        log_info("admin sign-in failed", "ip=%s attempts=%d", ip, attempts);
        store_admin_clear(&a);
        if (attempts >= ADMIN_LOCK_AFTER)
            api_error(c, 401, "invalid_credentials",
                      "Wrong email or password. Sign-in for this account is now locked for 15 "
                      "minutes.");
        else
            api_error(c, 401, "invalid_credentials", "Wrong email or password.");
        return;
    }
    (void)store_admin_session_purge(c->deps->store, now, now - ADMIN_IDLE_MS);
    vault_random_hex(hex, 32);
    vault_index_hash(c->deps->vault, hex, h);
    rc = store_admin_session_create(c->deps->store, a.id, h, now, now + ADMIN_SESSION_TTL_MS);
    if (rc == LATCH_OK)
        rc = store_admin_login_ok(c->deps->store, a.id, now);
    if (rc != LATCH_OK) {
        explicit_bzero(hex, sizeof hex);
        store_admin_clear(&a);
        api_store_unavailable(c);
        return;
    }
    log_info("admin signed in", "ip=%s admin_id=%lld", ip, (long long)a.id);
    csrf_token(c, hex, csrf);
    set_cookie(c, hex, (long)(ADMIN_SESSION_TTL_MS / 1000));
    explicit_bzero(hex, sizeof hex);
    api_reply(c, 200, json_pack("{s:{s:s, s:s}}", "data", "email", a.email, "csrf_token", csrf));
    store_admin_clear(&a);
}

/* ---- the router ---- */

struct adm_route {
    const char *method;
    const char *pattern; /* segments; ":x" captures one */
    admin_fn fn;
};

static const struct adm_route adm_routes[] = {
    {"GET", "environments", adm_environments},
    {"GET", "providers", adm_providers},
    {"GET", "envs/:env/integrations", adm_integrations},
    {"POST", "envs/:env/integrations", adm_integration_create},
    {"PATCH", "envs/:env/integrations/:key", adm_integration_patch},
    {"DELETE", "envs/:env/integrations/:key", adm_integration_delete},
    {"GET", "envs/:env/connections", adm_connections},
    {"GET", "envs/:env/connection", adm_connection_get},
    {"DELETE", "envs/:env/connection", adm_connection_delete},
    {"GET", "envs/:env/connection/history", adm_connection_history},
    {"POST", "envs/:env/connect-links", adm_connect_link},
    {"GET", "envs/:env/settings", adm_settings},
    {"PATCH", "envs/:env/settings", adm_settings_patch},
    {"POST", "envs/:env/webhook-test", adm_webhook_test},
    {"GET", "envs/:env/api-keys", adm_keys},
    {"POST", "envs/:env/api-keys", adm_key_create},
    {"PATCH", "envs/:env/api-keys/:id", adm_key_patch},
    {"DELETE", "envs/:env/api-keys/:id", adm_key_revoke},
    {"GET", "envs/:env/operations", adm_operations},
};

void
api_admin_api(struct api_ctx *c)
{
    const char *method = http_req_method(c->req);
    char path[256];
    bool write = strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0;
    bool mismatch = false, slash;
    struct store_admin_session s;
    const struct adm_route *r = NULL;

    security_headers(c);
    http_resp_header(c->req, "Cache-Control", "no-store");
    if (c->params[0] == NULL || latch_strlcpy(path, c->params[0], sizeof path) >= sizeof path) {
        api_error(c, 404, "not_found", "Unknown route.");
        return;
    }
    if (strcmp(path, "login") == 0) {
        if (strcmp(method, "POST") != 0)
            api_error(c, 405, "method_not_allowed", "Use POST.");
        else
            adm_login(c);
        return;
    }
    /* the session first: an unauthenticated caller learns nothing, not even which routes exist */
    if (!admin_session(c, write, &s))
        return;
    if (strcmp(path, "session") == 0 || strcmp(path, "logout") == 0) {
        char token[80], csrf[65];

        if (strcmp(path, "logout") == 0 && strcmp(method, "POST") == 0) {
            unsigned char h[32];

            if (cookie_get(c, ADMIN_COOKIE, token, sizeof token)) {
                vault_index_hash(c->deps->vault, token, h);
                (void)store_admin_session_delete(c->deps->store, h);
            }
            explicit_bzero(token, sizeof token);
            set_cookie(c, "", 0);
            api_reply(c, 200, json_pack("{s:{s:b}}", "data", "signed_out", 1));
        } else if (strcmp(path, "session") == 0 && !write &&
                   cookie_get(c, ADMIN_COOKIE, token, sizeof token)) {
            csrf_token(c, token, csrf);
            explicit_bzero(token, sizeof token);
            api_reply(c, 200,
                      json_pack("{s:{s:s, s:s, s:I}}", "data", "email", s.email, "csrf_token", csrf,
                                "expires_at", (json_int_t)s.expires_at));
        } else {
            api_error(c, 405, "method_not_allowed", "This method is not allowed on this route.");
        }
        store_admin_session_clear(&s);
        return;
    }
    /* the dashboard's own paths never end in a slash (the public API tolerates one) */
    slash = path[0] != '\0' && path[strlen(path) - 1] == '/';
    for (size_t i = 0; !slash && i < sizeof adm_routes / sizeof adm_routes[0]; i++) {
        if (!api_route_match(adm_routes[i].pattern, path, c))
            continue;
        if (strcmp(adm_routes[i].method, method) == 0 ||
            (strcmp(method, "HEAD") == 0 && strcmp(adm_routes[i].method, "GET") == 0)) {
            r = &adm_routes[i];
            break;
        }
        mismatch = true;
    }
    if (r == NULL) {
        if (mismatch)
            api_error(c, 405, "method_not_allowed", "This method is not allowed on this route.");
        else
            api_error(c, 404, "not_found", "Unknown route.");
        store_admin_session_clear(&s);
        return;
    }
    if (strncmp(r->pattern, "envs/", 5) == 0) {
        const char *err = NULL;
        long long env = latch_strtonum(c->params[0], 1, INT64_MAX, &err);
        struct store_env e;

        memset(&e, 0, sizeof e);
        if (err != NULL || store_env_get(c->deps->store, env, &e) != LATCH_OK) {
            api_error(c, 404, "unknown_environment", "No such environment.");
            store_admin_session_clear(&s);
            return;
        }
        store_env_clear(&e);
        c->env_id = env;
        /* the route's own captures start at params[0], as in the public API's handlers */
        memmove(c->params, c->params + 1, 3 * sizeof c->params[0]);
        c->params[3] = NULL;
    }
    if (write)
        log_info("admin change", "admin_id=%lld method=%s path=%s", (long long)s.admin_id, method,
                 path);
    r->fn(c, s.email);
    store_admin_session_clear(&s);
}
