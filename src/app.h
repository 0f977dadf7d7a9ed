/*
 * app.h - the running service: everything a request handler may use, built once by
 * `latch serve` (app_start) and torn down at exit (app_stop).
 *
 * Ownership: struct app owns every member. Threads: members are thread-safe objects (see their
 * headers); the struct itself is immutable after app_start.
 */
#ifndef LATCH_APP_H
#define LATCH_APP_H

#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"
#include "util/rc.h"

struct store;
struct vault;
struct catalog;
struct outbound;
struct oauth_cc;
struct http_server;
struct webhook;
struct refresher;
struct timer;
struct ratelimit;
struct authcache;
struct worker;
struct api_deps;

/* Upper bound of HTTP loop threads (LATCH_THREADS is capped at it). */
#define APP_MAX_LOOPS 256

struct app {
    const struct config *cfg;
    struct store *store;
    struct vault *vault;
    struct catalog *catalog;
    struct outbound *outbound;
    /*
     * The proxy's outbound of each HTTP loop thread (embedded: driven by that loop, policy
     * borrowed from outbound). Made and shut down by the loop thread itself, freed by app_stop
     * after the worker is gone; NULL where a loop has none (the proxy then uses outbound).
     */
    struct outbound *loop_outbound[APP_MAX_LOOPS];
    struct oauth_cc *oauth_cc; /* token exchanges: outbound + worker */
    struct webhook *webhook;
    struct refresher *refresher;
    struct http_server *http;
    struct http_server *metrics_http; /* LATCH_METRICS_BIND, or NULL */
    struct timer *timer;
    struct worker *worker; /* store writes that follow an upstream answer, off the curl thread */
    struct ratelimit *rl_env;
    struct ratelimit *rl_ip;
    struct ratelimit *rl_auth_fail;
    struct authcache *authcache;
    struct ws_hub *ws;    /* the WebSocket endpoint (LATCH_WS_*), or NULL when off */
    struct api_deps *api; /* the members the REST layer uses (owned; filled by app_start) */
    char node_id[33];     /* random per process: lease owner prefix */
};

/*
 * Opens the vault and the store, applies migrations, checks the key fingerprint, loads the
 * index key and the catalogue, and makes sure the dev environment exists. Used by serve and by
 * the CLI commands that touch data (no network, no HTTP).
 */
latch_rc app_open_data(struct app *a, const struct config *cfg, bool create_key_file,
                       struct latch_err *err);
/* app_open_data + outbound + webhook worker + refresher + HTTP server. */
latch_rc app_start(struct app *a, const struct config *cfg, struct latch_err *err);
void app_stop(struct app *a);

/*
 * Makes sure the environment has at least one secret key; if it has none, creates one and
 * returns it in out (UUID v4, shown once); else out[0] = '\0'. LATCH_SECRET_KEY (pinned) is
 * handled by app_open_data for dev.
 */
latch_rc app_ensure_secret_key(struct app *a, int64_t env_id, char out[37]);
/* Creates a new secret key for the environment and returns it (shown once). */
latch_rc app_create_secret_key(struct app *a, int64_t env_id, char out[37]);
/* Creates an environment with its webhook signing key. */
latch_rc app_create_env(struct app *a, const char *name, int64_t *env_id, struct latch_err *err);

#endif
