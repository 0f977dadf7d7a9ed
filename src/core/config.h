/*
 * config.h - latch's settings: one table drives parsing, validation, --help text and the
 * redacted print-out at start. Environment variables only (12-factor); immutable after start.
 * Pass `const struct config *` explicitly; there is no global.
 */
#ifndef LATCH_CONFIG_H
#define LATCH_CONFIG_H

#include <stdbool.h>
#include <stdio.h>

#include "util/rc.h"

struct config {
    char *bind;               /* LATCH_BIND */
    int port;                 /* LATCH_PORT */
    char *public_url;         /* LATCH_PUBLIC_URL (connect links, logo urls) */
    char *oauth_callback_url; /* LATCH_OAUTH_CALLBACK_URL (default public_url + /oauth/callback) */
    int oauth_state_ttl_s;    /* LATCH_OAUTH_STATE_TTL_S */
    char *database_url;       /* LATCH_DATABASE_URL */
    char *encryption_key;     /* LATCH_ENCRYPTION_KEY (secret) */
    char *key_file;           /* LATCH_KEY_FILE */
    char *secret_key;         /* LATCH_SECRET_KEY (secret): pins the dev environment's key */
    char *providers_file;     /* LATCH_PROVIDERS_FILE */
    char *resolve;            /* LATCH_RESOLVE */
    char *ca_file;            /* LATCH_CA_FILE */
    bool allow_http;          /* LATCH_ALLOW_HTTP (tests only) */
    bool allow_private;       /* LATCH_ALLOW_PRIVATE */
    char *log_level;          /* LATCH_LOG_LEVEL */
    int threads;              /* LATCH_THREADS */
    int conn_limit;           /* LATCH_MAX_CONNECTIONS */
    int conn_timeout_s;       /* LATCH_CONNECTION_TIMEOUT_S */
    int conn_limit_ip;        /* LATCH_MAX_CONNECTIONS_PER_IP (0 = LATCH_MAX_CONNECTIONS) */
    int header_timeout_s;     /* LATCH_HEADER_TIMEOUT_S: whole request head */
    int body_timeout_s;       /* LATCH_BODY_TIMEOUT_S: whole buffered body, from the request line */
    bool allow_core_dumps;    /* LATCH_ALLOW_CORE_DUMPS (debugging only) */
    int body_budget_mb;       /* LATCH_BODY_BUDGET_MB: all buffered request bodies together */
    char *webhook_url;        /* LATCH_WEBHOOK_URL: dev environment's webhook URL */
    int refresh_margin_s;     /* LATCH_REFRESH_MARGIN_S */
    int default_expires_in_s; /* LATCH_DEFAULT_EXPIRES_IN_S */
    int token_timeout_ms;     /* LATCH_TOKEN_TIMEOUT_MS */
    int proxy_timeout_ms;     /* LATCH_PROXY_TIMEOUT_MS */
    bool base_url_override;   /* LATCH_PROXY_BASE_URL_OVERRIDE */
    int webhook_timeout_ms;   /* LATCH_WEBHOOK_TIMEOUT_MS */
    int webhook_max_attempts; /* LATCH_WEBHOOK_MAX_ATTEMPTS */
    int webhook_backoff_ms;   /* LATCH_WEBHOOK_BACKOFF_MS (first retry delay; doubles) */
    int refresh_backoff_ms;   /* LATCH_REFRESH_BACKOFF_MS (first back-off after a transient failure)
                               */
    int refresh_lease_ms;     /* LATCH_REFRESH_LEASE_MS */
    bool background_refresh;  /* LATCH_BACKGROUND_REFRESH */
    int cache_entries;        /* LATCH_CACHE_ENTRIES: hot cache of reads, entries (0 = off) */
    int cache_mb;             /* LATCH_CACHE_MB: hot cache of reads, MiB */
    int cache_max_age_s;      /* LATCH_CACHE_MAX_AGE_S: a cached read is re-read after this */
    bool webhook_legacy_sig;  /* LATCH_WEBHOOK_LEGACY_SIGNATURE: send X-Nango-Signature */
    int rate_env;             /* LATCH_RATE_LIMIT_ENV: requests/s per environment (0 = off) */
    int rate_ip;              /* LATCH_RATE_LIMIT_IP: requests/s per client IP on public routes */
    int rate_auth_fail;       /* LATCH_RATE_LIMIT_AUTH_FAIL: failed authentications/s per IP */
    char *trusted_proxies;    /* LATCH_TRUSTED_PROXIES: who may set X-Forwarded-For */
    int rate_delay_ms;        /* LATCH_RATE_LIMIT_DELAY_MS: 429s are answered this much later */
    bool ops_log;             /* LATCH_OPS_LOG: record the operations log */
    int ops_retention_days;   /* LATCH_OPS_RETENTION_DAYS */
    int ops_max_rows;         /* LATCH_OPS_MAX_ROWS */
    int ops_queue;            /* LATCH_OPS_QUEUE: operations waiting for the writer */
    int ops_prune_interval_s; /* LATCH_OPS_PRUNE_INTERVAL_S */
    char *metrics_bind;       /* LATCH_METRICS_BIND: host:port of /metrics (unset = off) */
    char *ws_path;            /* LATCH_WS_PATH: the WebSocket endpoint */
    int ws_max_clients;       /* LATCH_WS_MAX_CLIENTS (0 = no WebSocket endpoint) */
    int ws_idle_s;            /* LATCH_WS_IDLE_S */
    int ws_max_age_s;         /* LATCH_WS_MAX_AGE_S */
};

/* Reads the environment; LATCH_E_INVAL with a message naming the variable on bad values. */
latch_rc config_load(struct config *c, struct latch_err *err);
void config_free(struct config *c);
/* One line per setting, secrets shown as "(set)". */
void config_print(const struct config *c, FILE *f);
/* The table as help text. */
void config_help(FILE *f);

#endif
