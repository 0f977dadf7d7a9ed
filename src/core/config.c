#include "core/config.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "util/str.h"
#include "util/xalloc.h"

enum cfg_type { CFG_STR, CFG_INT, CFG_BOOL };

struct cfg_def {
    const char *env;
    enum cfg_type type;
    size_t off;
    const char *def;
    long long min, max;
    bool secret;
    const char *help;
};

#define OFF(f) offsetof(struct config, f)

static const struct cfg_def defs[] = {
    {"LATCH_BIND", CFG_STR, OFF(bind), "127.0.0.1", 0, 0, false,
     "address to listen on (0.0.0.0 for all interfaces)"},
    {"LATCH_PORT", CFG_INT, OFF(port), "3003", 0, 65535, false, "HTTP port (0 = any free port)"},
    {"LATCH_PUBLIC_URL", CFG_STR, OFF(public_url), NULL, 0, 0, false,
     "URL users reach latch at (connect links); default http://localhost:<port>"},
    {"LATCH_OAUTH_CALLBACK_URL", CFG_STR, OFF(oauth_callback_url), NULL, 0, 0, false,
     "OAuth2 redirect URI registered with providers; default <LATCH_PUBLIC_URL>/oauth/callback"},
    {"LATCH_OAUTH_STATE_TTL_S", CFG_INT, OFF(oauth_state_ttl_s), "600", 1, 3600, false,
     "how long an OAuth2 authorization (its state) may take from connect to callback"},
    {"LATCH_DATABASE_URL", CFG_STR, OFF(database_url), "latch.db", 0, 0, true,
     "SQLite file path (default ./latch.db) or postgres:// URL"},
    {"LATCH_ENCRYPTION_KEY", CFG_STR, OFF(encryption_key), NULL, 0, 0, true,
     "base64 of 32 bytes (NANGO_ENCRYPTION_KEY format); else the key file is used"},
    {"LATCH_KEY_FILE", CFG_STR, OFF(key_file), "latch.key", 0, 0, false,
     "key file (created 0600 on first start when no key is configured)"},
    {"LATCH_SECRET_KEY", CFG_STR, OFF(secret_key), NULL, 0, 0, true,
     "pin the dev environment's secret key (UUID v4)"},
    {"LATCH_PROVIDERS_FILE", CFG_STR, OFF(providers_file), NULL, 0, 0, false,
     "providers.yaml to load instead of the built-in catalogue"},
    {"LATCH_RESOLVE", CFG_STR, OFF(resolve), NULL, 0, 0, false,
     "curl-style host:port:address pins, comma separated (tests, unusual networks)"},
    {"LATCH_CA_FILE", CFG_STR, OFF(ca_file), NULL, 0, 0, false,
     "extra trusted CA bundle (PEM) for outbound HTTPS"},
    {"LATCH_ALLOW_HTTP", CFG_BOOL, OFF(allow_http), "false", 0, 0, false,
     "allow plain-http upstreams (tests only)"},
    {"LATCH_ALLOW_PRIVATE", CFG_BOOL, OFF(allow_private), "false", 0, 0, false,
     "allow private/loopback upstream addresses"},
    {"LATCH_LOG_LEVEL", CFG_STR, OFF(log_level), "info", 0, 0, false, "debug|info|warn|error"},
    {"LATCH_THREADS", CFG_INT, OFF(threads), "0", 0, 256, false,
     "HTTP loop threads (0 = number of CPUs)"},
    {"LATCH_MAX_CONNECTIONS", CFG_INT, OFF(conn_limit), "4096", 16, 100000, false,
     "concurrent client connections"},
    {"LATCH_CONNECTION_TIMEOUT_S", CFG_INT, OFF(conn_timeout_s), "10", 1, 3600, false,
     "close client connections idle this long (also bounds half-sent requests)"},
    {"LATCH_MAX_CONNECTIONS_PER_IP", CFG_INT, OFF(conn_limit_ip), "256", 0, 100000, false,
     "concurrent connections from one client address (0 = LATCH_MAX_CONNECTIONS; raise it "
     "behind a reverse proxy, whose connections all come from its address)"},
    {"LATCH_HEADER_TIMEOUT_S", CFG_INT, OFF(header_timeout_s), "10", 1, 3600, false,
     "a request head (request line + headers) must arrive within this, however steadily it "
     "trickles"},
    {"LATCH_BODY_TIMEOUT_S", CFG_INT, OFF(body_timeout_s), "30", 1, 86400, false,
     "a buffered request body must arrive within this, counted from the request line (proxied "
     "uploads are bounded by LATCH_PROXY_TIMEOUT_MS)"},
    {"LATCH_ALLOW_CORE_DUMPS", CFG_BOOL, OFF(allow_core_dumps), "false", 0, 0, false,
     "keep core dumps and ptrace possible (debugging only: a core holds decrypted secrets)"},
    {"LATCH_BODY_BUDGET_MB", CFG_INT, OFF(body_budget_mb), "64", 0, 65536, false,
     "MiB all buffered request bodies together may hold; past it 503 + Retry-After (0 = no "
     "limit)"},
    {"LATCH_WEBHOOK_URL", CFG_STR, OFF(webhook_url), NULL, 0, 0, false,
     "webhook URL of the dev environment (also: latch env set-webhook)"},
    {"LATCH_REFRESH_MARGIN_S", CFG_INT, OFF(refresh_margin_s), "900", 0, 86400, false,
     "refresh tokens with less than this life left (a provider may override)"},
    {"LATCH_DEFAULT_EXPIRES_IN_S", CFG_INT, OFF(default_expires_in_s), "3300", 60, 86400, false,
     "token lifetime assumed when the token response has no expires_in"},
    {"LATCH_TOKEN_TIMEOUT_MS", CFG_INT, OFF(token_timeout_ms), "15000", 100, 120000, false,
     "total timeout of a token request"},
    {"LATCH_PROXY_TIMEOUT_MS", CFG_INT, OFF(proxy_timeout_ms), "60000", 100, 3600000, false,
     "total timeout of a proxied request"},
    {"LATCH_PROXY_BASE_URL_OVERRIDE", CFG_BOOL, OFF(base_url_override), "false", 0, 0, false,
     "honour Base-Url-Override (limited to hosts the provider allows)"},
    {"LATCH_WEBHOOK_TIMEOUT_MS", CFG_INT, OFF(webhook_timeout_ms), "20000", 100, 120000, false,
     "webhook delivery timeout"},
    {"LATCH_WEBHOOK_LEGACY_SIGNATURE", CFG_BOOL, OFF(webhook_legacy_sig), "true", 0, 0, false,
     "also sign webhooks with Nango's legacy X-Nango-Signature, SHA-256(key||body), which is "
     "open to length extension; set false once receivers check X-Nango-Hmac-Sha256"},
    {"LATCH_WEBHOOK_MAX_ATTEMPTS", CFG_INT, OFF(webhook_max_attempts), "8", 1, 100, false,
     "webhook delivery attempts before giving up"},
    {"LATCH_WEBHOOK_BACKOFF_MS", CFG_INT, OFF(webhook_backoff_ms), "3000", 10, 3600000, false,
     "first webhook retry delay (doubles each attempt)"},
    {"LATCH_REFRESH_BACKOFF_MS", CFG_INT, OFF(refresh_backoff_ms), "30000", 10, 3600000, false,
     "first back-off after a transient refresh failure (doubles, with jitter, max 1 h)"},
    {"LATCH_REFRESH_LEASE_MS", CFG_INT, OFF(refresh_lease_ms), "30000", 100, 600000, false,
     "how long one refresher may hold a connection's refresh lease"},
    {"LATCH_BACKGROUND_REFRESH", CFG_BOOL, OFF(background_refresh), "true", 0, 0, false,
     "renew tokens of connections in use shortly before they expire"},
    {"LATCH_CACHE_ENTRIES", CFG_INT, OFF(cache_entries), "1024", 0, 1000000, false,
     "connections whose decrypted credentials the hot cache of reads keeps (0 = no cache)"},
    {"LATCH_CACHE_MB", CFG_INT, OFF(cache_mb), "8", 0, 4096, false,
     "MiB the hot cache of reads may hold (locked pages, page-rounded per entry)"},
    {"LATCH_CACHE_MAX_AGE_S", CFG_INT, OFF(cache_max_age_s), "300", 0, 86400, false,
     "a cached read older than this is read from the store again (0 = no age bound)"},
    {"LATCH_RATE_LIMIT_ENV", CFG_INT, OFF(rate_env), "2000", 0, 10000000, false,
     "requests per second per environment, bursts of twice that (0 = off)"},
    {"LATCH_RATE_LIMIT_IP", CFG_INT, OFF(rate_ip), "100", 0, 10000000, false,
     "requests per second per client IP on the Connect UI routes, bursts of twice that (0 = off)"},
    {"LATCH_RATE_LIMIT_AUTH_FAIL", CFG_INT, OFF(rate_auth_fail), "10", 0, 10000000, false,
     "failed authentications per second per client IP, bursts of twice that; past it 429 instead "
     "of 401 (0 = off). A bucket of its own: bogus tokens never use up valid ones' budget"},
    {"LATCH_TRUSTED_PROXIES", CFG_STR, OFF(trusted_proxies), NULL, 0, 0, false,
     "reverse proxies (addresses or CIDR blocks, comma separated) whose X-Forwarded-For names "
     "the client for rate limits and logs; the client is the right-most untrusted entry"},
    {"LATCH_RATE_LIMIT_DELAY_MS", CFG_INT, OFF(rate_delay_ms), "250", 0, 5000, false,
     "a 429 is answered after this delay, so a flooding client slows itself down (0 = at once)"},
    {"LATCH_OPS_LOG", CFG_BOOL, OFF(ops_log), "true", 0, 0, false,
     "record the operations log (links, refreshes, proxy calls, webhooks, management)"},
    {"LATCH_OPS_RETENTION_DAYS", CFG_INT, OFF(ops_retention_days), "30", 1, 3650, false,
     "operations older than this are pruned"},
    {"LATCH_OPS_MAX_ROWS", CFG_INT, OFF(ops_max_rows), "1000000", 10, 1000000000, false,
     "at most this many operations are kept (the oldest are pruned)"},
    {"LATCH_OPS_QUEUE", CFG_INT, OFF(ops_queue), "10000", 16, 1000000, false,
     "operations waiting for the background writer; past it new ones are dropped and counted"},
    {"LATCH_OPS_PRUNE_INTERVAL_S", CFG_INT, OFF(ops_prune_interval_s), "10", 1, 86400, false,
     "how often retention runs (in small batches, on the writer thread)"},
    {"LATCH_METRICS_BIND", CFG_STR, OFF(metrics_bind), NULL, 0, 0, false,
     "serve Prometheus /metrics on this separate host:port, e.g. 127.0.0.1:9464 (unset = off)"},
    {"LATCH_WS_PATH", CFG_STR, OFF(ws_path), "/", 0, 0, false,
     "path of the WebSocket endpoint @nangohq/frontend's auth() opens (its websocketsPath)"},
    {"LATCH_WS_MAX_CLIENTS", CFG_INT, OFF(ws_max_clients), "1000", 0, 100000, false,
     "WebSocket clients held at once (each is also an HTTP connection); 0 = endpoint off"},
    {"LATCH_WS_IDLE_S", CFG_INT, OFF(ws_idle_s), "60", 1, 3600, false,
     "a WebSocket client that answers no ping for this long is dropped (pinged every third)"},
    {"LATCH_WS_MAX_AGE_S", CFG_INT, OFF(ws_max_age_s), "900", 1, 86400, false,
     "a WebSocket is closed this long after it opened, whatever happens"},
};

static bool
parse_bool(const char *s, bool *out)
{
    if (s == NULL) { /* unset and no default: off */
        *out = false;
        return true;
    }
    if (strcmp(s, "1") == 0 || strcmp(s, "true") == 0 || strcmp(s, "yes") == 0 ||
        strcmp(s, "on") == 0) {
        *out = true;
        return true;
    }
    if (strcmp(s, "0") == 0 || strcmp(s, "false") == 0 || strcmp(s, "no") == 0 ||
        strcmp(s, "off") == 0 || s[0] == '\0') {
        *out = false;
        return true;
    }
    return false;
}

latch_rc
config_load(struct config *c, struct latch_err *err)
{
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++) {
        const struct cfg_def *d = &defs[i];
        const char *v = getenv(d->env);
        char *base = (char *)c + d->off;

        if (v == NULL || (v[0] == '\0' && d->type != CFG_STR))
            v = d->def;
        if (v != NULL && v[0] == '\0')
            v = d->def;
        switch (d->type) {
        case CFG_STR:
            *(char **)(void *)base = v != NULL ? xstrdup(v) : NULL;
            break;
        case CFG_INT: {
            const char *e = NULL;
            long long n = latch_strtonum(v, d->min, d->max, &e);

            if (e != NULL) {
                latch_err_set(err, "%s: %s (expected an integer in %lld..%lld)", d->env, e, d->min,
                              d->max);
                return LATCH_E_INVAL;
            }
            *(int *)(void *)base = (int)n;
            break;
        }
        case CFG_BOOL:
            if (!parse_bool(v, (bool *)(void *)base)) {
                latch_err_set(err, "%s: expected true or false", d->env);
                return LATCH_E_INVAL;
            }
            break;
        }
    }
    if (c->ws_path[0] != '/' || strcspn(c->ws_path, "?#%\\ \t\r\n") != strlen(c->ws_path)) {
        latch_err_set(err, "LATCH_WS_PATH: expected a path starting with / (no query, no %%)");
        return LATCH_E_INVAL;
    }
    if (c->public_url == NULL)
        c->public_url = xasprintf("http://localhost:%d", c->port);
    /* no trailing slash: links are built as public_url + "/ui/..." */
    while (strlen(c->public_url) > 0 && c->public_url[strlen(c->public_url) - 1] == '/')
        c->public_url[strlen(c->public_url) - 1] = '\0';
    if (c->oauth_callback_url == NULL)
        c->oauth_callback_url = xasprintf("%s/oauth/callback", c->public_url);
    if (strncmp(c->oauth_callback_url, "https://", 8) != 0 &&
        strncmp(c->oauth_callback_url, "http://", 7) != 0) {
        latch_err_set(err, "LATCH_OAUTH_CALLBACK_URL: expected an absolute http(s) URL (the "
                           "redirect URI registered with each OAuth app)");
        return LATCH_E_INVAL;
    }
    return LATCH_OK;
}

void
config_free(struct config *c)
{
    for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++) {
        if (defs[i].type == CFG_STR) {
            char **p = (char **)(void *)((char *)c + defs[i].off);

            if (*p != NULL) {
                explicit_bzero(*p, strlen(*p));
                free(*p);
                *p = NULL;
            }
        }
    }
}

void
config_print(const struct config *c, FILE *f)
{
    for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++) {
        const struct cfg_def *d = &defs[i];
        const char *base = (const char *)c + d->off;

        switch (d->type) {
        case CFG_STR: {
            const char *v = *(char *const *)(const void *)base;

            if (v == NULL)
                (void)fprintf(f, "  %-30s (unset)\n", d->env);
            else if (d->secret)
                (void)fprintf(f, "  %-30s (set)\n", d->env);
            else
                (void)fprintf(f, "  %-30s %s\n", d->env, v);
            break;
        }
        case CFG_INT:
            (void)fprintf(f, "  %-30s %d\n", d->env, *(const int *)(const void *)base);
            break;
        case CFG_BOOL:
            (void)fprintf(f, "  %-30s %s\n", d->env,
                          *(const bool *)(const void *)base ? "true" : "false");
            break;
        }
    }
}

void
config_help(FILE *f)
{
    for (size_t i = 0; i < sizeof defs / sizeof defs[0]; i++)
        (void)fprintf(f, "  %-30s %s%s%s%s\n", defs[i].env, defs[i].help,
                      defs[i].def ? " [default: " : "", defs[i].def ? defs[i].def : "",
                      defs[i].def ? "]" : "");
}
