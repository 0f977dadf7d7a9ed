#include "app.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "api/api.h"
#include "api/api_auth.h"
#include "domain/catalog.h"
#include "net/http_server.h"
#include "net/ws.h"
#include "core/latch_limits.h"
#include "core/log.h"
#include "core/metrics.h"
#include "util/buf.h"
#include "util/clock.h"
#include "util/str.h"
#include "net/outbound.h"
#include "domain/oauth_cc.h"
#include "domain/refresher.h"
#include "domain/credcache.h"
#include "store/store.h"
#include "core/timer.h"
#include "core/ratelimit.h"
#include "util/xalloc.h"
#include "crypto/vault.h"
#include "domain/opslog.h"
#include "domain/webhook.h"
#include "core/worker.h"

#define META_FINGERPRINT "key_fingerprint"
#define META_INDEX_KEY "sealed:index_key"
/* how long a stopping latch still waits for another process's refresh (see app_stop) */
#define APP_LEASE_DRAIN_MS 5000

static latch_rc
load_index_key(struct app *a, struct latch_err *err)
{
    char *sealed = NULL;
    unsigned char *pt = NULL;
    size_t len = 0;
    latch_rc rc;

    rc = store_meta_get(a->store, META_INDEX_KEY, &sealed);
    if (rc == LATCH_E_NOT_FOUND) {
        unsigned char key[VAULT_KEY_LEN];
        char *env = NULL;

        if (RAND_bytes(key, sizeof key) != 1) {
            latch_err_set(err, "no randomness for the index key");
            return LATCH_E_CRYPTO;
        }
        rc = vault_seal(a->vault, "meta:" META_INDEX_KEY ":value", key, sizeof key, &env);
        /* several nodes may start together on an empty database: the first key stored wins */
        if (rc == LATCH_OK)
            rc = store_meta_add(a->store, META_INDEX_KEY, env);
        explicit_bzero(key, sizeof key);
        free(env);
        if (rc == LATCH_OK)
            rc = store_meta_get(a->store, META_INDEX_KEY, &sealed);
        if (rc != LATCH_OK) {
            latch_err_set(err, "cannot create the index key: %s", latch_strerror(rc));
            return rc;
        }
    }
    if (rc != LATCH_OK) {
        latch_err_set(err, "cannot read the store: %s", latch_strerror(rc));
        return rc;
    }
    rc = vault_open(a->vault, "meta:" META_INDEX_KEY ":value", sealed, &pt, &len);
    free(sealed);
    if (rc != LATCH_OK || len != VAULT_KEY_LEN) {
        latch_err_set(err, "the index key does not decrypt with the configured encryption key");
        if (pt != NULL)
            vault_plain_free(pt, len);
        return LATCH_E_CRYPTO;
    }
    vault_set_index_key(a->vault, pt);
    vault_plain_free(pt, len);
    return LATCH_OK;
}

static latch_rc
check_fingerprint(struct app *a, struct latch_err *err)
{
    char *fp = NULL;
    char mine[65];
    latch_rc rc = store_meta_get(a->store, META_FINGERPRINT, &fp);

    vault_primary_fingerprint(a->vault, mine);
    if (rc == LATCH_E_NOT_FOUND) {
        rc = store_meta_add(a->store, META_FINGERPRINT, mine);
        if (rc == LATCH_OK)
            rc = store_meta_get(a->store, META_FINGERPRINT, &fp);
    }
    if (rc != LATCH_OK) {
        latch_err_set(err, "cannot read the store: %s", latch_strerror(rc));
        return rc;
    }
    if (!vault_has_fingerprint(a->vault, fp)) {
        latch_err_set(err, "the encryption key does not match this store (its data was written "
                           "with another key); refusing to start");
        rc = LATCH_E_CRYPTO;
    }
    free(fp);
    return rc;
}

latch_rc
app_create_env(struct app *a, const char *name, int64_t *env_id, struct latch_err *err)
{
    struct store_env e;
    char key[37];
    char *aad = NULL;
    latch_rc rc;

    memset(&e, 0, sizeof e);
    rc = store_env_create(a->store, name, &e);
    if (rc != LATCH_OK) {
        latch_err_set(err, rc == LATCH_E_CONFLICT ? "environment %s exists" : "cannot create %s",
                      name);
        goto out;
    }
    vault_uuid_v4(key);
    aad = xasprintf("environments:%lld:webhook_key", (long long)e.id);
    rc = vault_seal(a->vault, aad, key, strlen(key), &e.webhook_key_sealed);
    explicit_bzero(key, sizeof key);
    e.on_auth_creation = true;
    e.on_auth_refresh_error = true;
    if (rc == LATCH_OK)
        rc = store_env_update_webhooks(a->store, &e);
    if (env_id != NULL)
        *env_id = e.id;
out:
    free(aad);
    store_env_clear(&e);
    return rc;
}

latch_rc
app_create_secret_key(struct app *a, int64_t env_id, char out[37])
{
    unsigned char h[32];

    vault_uuid_v4(out);
    vault_index_hash(a->vault, out, h);
    return store_apikey_add(a->store, env_id, h, "generated");
}

latch_rc
app_ensure_secret_key(struct app *a, int64_t env_id, char out[37])
{
    int64_t n = 0;
    latch_rc rc = store_apikey_count(a->store, env_id, &n);

    out[0] = '\0';
    if (rc != LATCH_OK || n > 0)
        return rc;
    return app_create_secret_key(a, env_id, out);
}

latch_rc
app_open_data(struct app *a, const struct config *cfg, bool create_key_file, struct latch_err *err)
{
    struct vault_opts vo;
    struct store_env dev;
    latch_rc rc;

    memset(a, 0, sizeof *a);
    memset(&dev, 0, sizeof dev);
    a->cfg = cfg;
    vault_random_hex(a->node_id, 16);
    vo.env_key_b64 = cfg->encryption_key;
    vo.key_file = cfg->key_file;
    vo.create_key_file = create_key_file && cfg->encryption_key == NULL;
    rc = vault_new(&vo, &a->vault, err);
    if (rc != LATCH_OK)
        return rc;
    if (vault_key_file_created(a->vault))
        log_info("created encryption key file", "path=%s mode=0600", cfg->key_file);
    rc = store_open(cfg->database_url, &a->store, err);
    if (rc == LATCH_OK)
        rc = store_migrate(a->store, err);
    if (rc == LATCH_OK)
        rc = check_fingerprint(a, err);
    if (rc == LATCH_OK)
        rc = load_index_key(a, err);
    if (rc != LATCH_OK)
        return rc;
    if (cfg->providers_file != NULL)
        rc = catalog_load_file(cfg->providers_file, &a->catalog, err);
    else
        rc = catalog_load_default(&a->catalog, err);
    if (rc != LATCH_OK)
        return rc;
    /*
     * Parsing Nango's catalogue peaks at ~20 MB of heap that is freed once the arena holds what
     * is kept; glibc keeps freed heap mapped unless asked. Idle RSS: docs/benchmarks.md.
     */
    (void)malloc_trim(0);
    {
        size_t linkable = 0;
        char q[400];

        for (size_t i = 0; i < catalog_count(a->catalog); i++)
            linkable += catalog_at(a->catalog, i)->linkable ? 1 : 0;
        log_info("provider catalogue loaded", "providers=%zu linkable=%zu origin=%s",
                 catalog_count(a->catalog), linkable,
                 log_quote(q, sizeof q, catalog_origin(a->catalog)));
    }
    rc = store_env_get_by_name(a->store, "dev", &dev);
    if (rc == LATCH_E_NOT_FOUND) {
        rc = app_create_env(a, "dev", NULL, err);
        if (rc == LATCH_E_CONFLICT) { /* another node created it a moment ago */
            latch_err_clear(err);
            rc = LATCH_OK;
        }
        if (rc == LATCH_OK)
            rc = store_env_get_by_name(a->store, "dev", &dev);
    }
    if (rc != LATCH_OK) {
        if (err->msg[0] == '\0')
            latch_err_set(err, "cannot load the dev environment: %s", latch_strerror(rc));
        goto out;
    }
    if (cfg->secret_key != NULL) {
        unsigned char h[32];
        int64_t owner = 0;

        vault_index_hash(a->vault, cfg->secret_key, h);
        rc = store_apikey_lookup(a->store, h, &owner);
        if (rc == LATCH_E_NOT_FOUND)
            rc = store_apikey_add(a->store, dev.id, h, "LATCH_SECRET_KEY");
        else if (rc == LATCH_OK && owner != dev.id) {
            latch_err_set(err, "LATCH_SECRET_KEY belongs to another environment");
            rc = LATCH_E_CONFLICT;
        }
    }
    if (rc == LATCH_OK && cfg->webhook_url != NULL &&
        (dev.webhook_url == NULL || strcmp(dev.webhook_url, cfg->webhook_url) != 0)) {
        free(dev.webhook_url);
        dev.webhook_url = xstrdup(cfg->webhook_url);
        rc = store_env_update_webhooks(a->store, &dev);
    }
out:
    store_env_clear(&dev);
    return rc;
}

/* ---- /metrics on its own bind address (LATCH_METRICS_BIND) ---- */

static double
g_webhook_depth(void *ud)
{
    int64_t n = 0;

    (void)store_webhook_pending_count(((struct app *)ud)->store, &n);
    return (double)n;
}

static double
g_webhook_age(void *ud)
{
    int64_t t = 0;

    if (store_webhook_oldest_pending(((struct app *)ud)->store, &t) != LATCH_OK || t == 0)
        return 0;
    return (double)(latch_now_ms() - t) / 1000.0;
}

static double
cache_stat(void *ud, int which)
{
    const struct app *a = ud;
    struct credcache_stats st;

    refresher_cache_stats(a->refresher, &st);
    switch (which) {
    case 0:
        return (double)st.hits;
    case 1:
        return (double)st.misses;
    case 2:
        return (double)st.evictions;
    case 3:
        return (double)st.invalidations;
    case 4:
        return (double)st.entries;
    case 6:
        return (double)st.body_hits;
    default:
        return (double)st.bytes;
    }
}

static double
g_cache_hits(void *ud)
{
    return cache_stat(ud, 0);
}

static double
g_cache_misses(void *ud)
{
    return cache_stat(ud, 1);
}

static double
g_cache_evictions(void *ud)
{
    return cache_stat(ud, 2);
}

static double
g_cache_invalidations(void *ud)
{
    return cache_stat(ud, 3);
}

static double
g_cache_entries(void *ud)
{
    return cache_stat(ud, 4);
}

static double
g_cache_bytes(void *ud)
{
    return cache_stat(ud, 5);
}

static double
g_cache_prepared_hits(void *ud)
{
    return cache_stat(ud, 6);
}

static double
g_ops_dropped(void *ud)
{
    (void)ud;
    return (double)opslog_dropped();
}

static double
g_ops_depth(void *ud)
{
    (void)ud;
    return (double)opslog_depth();
}

static double
g_ops_written(void *ud)
{
    (void)ud;
    return (double)opslog_written();
}

static size_t
metrics_body_limit(const char *method, const char *path, void *ud)
{
    (void)method;
    (void)path;
    (void)ud;
    return 0;
}

static void
metrics_dispatch(struct http_req *req, void *ud)
{
    struct buf b;
    char *text;
    size_t len = 0;

    (void)ud;
    http_req_set_route(req, "/metrics");
    if (strcmp(http_req_path(req), "/metrics") != 0) {
        http_resp_error(req, 404, "not_found", "Only /metrics is served here.");
        return;
    }
    buf_init(&b, 16 * 1024 * 1024);
    metrics_render(&b);
    text = buf_steal(&b, &len);
    http_resp_bytes(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, len, false);
    free(text);
}

static double
g_ws_clients(void *ud)
{
    return (double)ws_hub_count(((struct app *)ud)->ws);
}

/* ---- the WebSocket endpoint: http_server's upgrade hook, answered by the hub ---- */

/* api_deps.ws_publish: the OAuth callback's result to the popup's opener (any thread) */
static latch_rc
app_ws_publish(void *ctx, const char *ws_client_id, const char *json)
{
    return ws_hub_publish(ctx, ws_client_id, json);
}

static bool
ws_upgrade_check(struct http_req *req, void *ud)
{
    struct app *a = ud;
    char accept[WS_ACCEPT_SIZE];
    const char *code = NULL, *message = NULL;
    struct ws_handshake hs = {
        .method = http_req_method(req),
        .upgrade = http_req_header(req, "Upgrade"),
        .connection = http_req_header(req, "Connection"),
        .version = http_req_header(req, "Sec-WebSocket-Version"),
        .key = http_req_header(req, "Sec-WebSocket-Key"),
        .has_body = http_req_header(req, "Content-Length") != NULL ||
                    http_req_header(req, "Transfer-Encoding") != NULL,
    };
    unsigned status = ws_hub_handshake(a->ws, &hs, accept, &code, &message);

    http_req_set_route(req, "websocket");
    if (status != 0) {
        if (status == 426)
            http_resp_header(req, "Sec-WebSocket-Version", "13");
        http_resp_error(req, status, code, message);
        return false;
    }
    http_resp_header(req, "Upgrade", "websocket");
    http_resp_header(req, "Sec-WebSocket-Accept", accept);
    return true;
}

static void
ws_release(void *u)
{
    http_upgraded_close(u);
}

static void
ws_upgraded(void *ud, struct http_upgraded *u, int fd, const char *extra, size_t extra_len)
{
    ws_hub_adopt(((struct app *)ud)->ws, fd, extra, extra_len, ws_release, u);
}

static latch_rc
metrics_start(struct app *a, const struct config *cfg, struct latch_err *err)
{
    struct http_server_opts mo;
    char host[256];
    const char *colon = strrchr(cfg->metrics_bind, ':');
    const char *e = NULL;
    long long port;

    if (colon == NULL || (size_t)(colon - cfg->metrics_bind) >= sizeof host) {
        latch_err_set(err, "LATCH_METRICS_BIND must be host:port");
        return LATCH_E_INVAL;
    }
    port = latch_strtonum(colon + 1, 0, 65535, &e);
    if (e != NULL) {
        latch_err_set(err, "LATCH_METRICS_BIND: bad port");
        return LATCH_E_INVAL;
    }
    memcpy(host, cfg->metrics_bind, (size_t)(colon - cfg->metrics_bind));
    host[colon - cfg->metrics_bind] = '\0';
    metrics_gauge_fn("latch_webhook_queue_depth", "Webhooks waiting for delivery (pending rows)",
                     g_webhook_depth, a);
    metrics_gauge_fn("latch_webhook_queue_oldest_age_seconds",
                     "Age of the oldest pending webhook (0 = none)", g_webhook_age, a);
    metrics_gauge_fn("latch_ops_dropped_total",
                     "Operations log rows dropped (queue full or store write failed)",
                     g_ops_dropped, a);
    metrics_gauge_fn("latch_ops_written_total", "Operations log rows written", g_ops_written, a);
    metrics_gauge_fn("latch_ws_clients", "WebSocket clients held now", g_ws_clients, a);
    metrics_gauge_fn("latch_ops_queue_depth", "Operations waiting for the log writer", g_ops_depth,
                     a);
    metrics_gauge_fn("latch_cache_hits_total", "Token reads answered from the hot cache",
                     g_cache_hits, a);
    metrics_gauge_fn("latch_cache_misses_total",
                     "Token reads the hot cache could not answer (absent, stale, too old)",
                     g_cache_misses, a);
    metrics_gauge_fn("latch_cache_evictions_total",
                     "Hot cache entries evicted (and wiped) to stay within its bounds",
                     g_cache_evictions, a);
    metrics_gauge_fn("latch_cache_invalidations_total",
                     "Hot cache entries dropped because the connection was written",
                     g_cache_invalidations, a);
    metrics_gauge_fn("latch_cache_entries", "Connections in the hot cache", g_cache_entries, a);
    metrics_gauge_fn("latch_cache_bytes", "Bytes the hot cache holds", g_cache_bytes, a);
    metrics_gauge_fn("latch_cache_prepared_hits_total",
                     "Token reads answered with the hot cache's prepared answer (also hits)",
                     g_cache_prepared_hits, a);
    memset(&mo, 0, sizeof mo);
    mo.bind_addr = host[0] != '\0' ? host : NULL;
    mo.port = (uint16_t)port;
    mo.threads = 1;
    mo.conn_limit = 16;
    mo.conn_timeout_s = 30;
    mo.header_limit = LATCH_MAX_HEADER_BYTES;
    mo.dispatch = metrics_dispatch;
    mo.body_limit = metrics_body_limit;
    mo.ud = a;
    if (http_server_start(&mo, &a->metrics_http, err) != LATCH_OK)
        return LATCH_E_UNAVAILABLE;
    log_info("metrics listening", "addr=%s port=%u", host, http_server_port(a->metrics_http));
    return LATCH_OK;
}

/*
 * Each HTTP loop thread gets its own embedded outbound for the proxy (http_req_loop_ctx is that
 * struct outbound *, see api_proxy.c), so a proxied request's transfer runs on the thread that
 * serves its client. One app per process, hence the static.
 */
static struct app *loop_hooks_app;

static void *
loop_attach(unsigned idx, void *ud)
{
    struct app *a = loop_hooks_app;
    struct latch_err err = {0};
    struct outbound *ob = NULL;

    (void)ud;
    if (idx >= APP_MAX_LOOPS || a == NULL || a->outbound == NULL)
        return NULL;
    if (outbound_start_embedded(a->outbound, &ob, &err) != LATCH_OK) {
        log_error("no per-thread outbound for this HTTP loop; its proxy calls use the shared one",
                  "loop=%u error=\"%s\"", idx, err.msg);
        return NULL;
    }
    outbound_embedded_attach(ob);
    a->loop_outbound[idx] = ob;
    return ob;
}

static int
loop_fd(void *ctx)
{
    return outbound_embedded_fd(ctx);
}

static long
loop_timeout(void *ctx)
{
    return outbound_embedded_timeout_ms(ctx);
}

static void
loop_run(void *ctx, bool fd_ready)
{
    outbound_embedded_run(ctx, fd_ready);
}

static void
loop_detach(void *ctx)
{
    outbound_shutdown(ctx); /* fails its transfers here; freed by app_stop */
}

static const struct http_loop_hooks loop_hooks = {
    .attach = loop_attach,
    .fd = loop_fd,
    .timeout_ms = loop_timeout,
    .run = loop_run,
    .detach = loop_detach,
};

latch_rc
app_start(struct app *a, const struct config *cfg, struct latch_err *err)
{
    struct outbound_opts oo;
    struct http_server_opts ho;
    latch_rc rc;

    rc = app_open_data(a, cfg, true, err);
    if (rc != LATCH_OK)
        return rc;
    if (cfg->ops_log) {
        struct opslog_opts lo = {
            .store = a->store,
            .queue_max = (size_t)cfg->ops_queue,
            .retention_ms = (int64_t)cfg->ops_retention_days * 86400 * 1000,
            .max_rows = cfg->ops_max_rows,
            .prune_interval_ms = (int64_t)cfg->ops_prune_interval_s * 1000,
        };

        if (opslog_start(&lo) != LATCH_OK) {
            latch_err_set(err, "cannot start the operations log writer");
            return LATCH_E_INTERNAL;
        }
    }
    memset(&oo, 0, sizeof oo);
    oo.resolve = cfg->resolve;
    oo.ca_file = cfg->ca_file;
    oo.allow_http = cfg->allow_http;
    oo.allow_private = cfg->allow_private;
    rc = outbound_start(&oo, &a->outbound, err);
    if (rc != LATCH_OK)
        return rc;
    a->authcache = authcache_new();
    a->rl_env = ratelimit_new(cfg->rate_env, 2.0 * cfg->rate_env);
    a->rl_ip = ratelimit_new(cfg->rate_ip, 2.0 * cfg->rate_ip);
    a->rl_auth_fail = ratelimit_new(cfg->rate_auth_fail, 2.0 * cfg->rate_auth_fail);
    rc = timer_start(&a->timer);
    if (rc == LATCH_OK)
        rc = worker_start(LATCH_WORKER_THREADS, LATCH_WORKER_MAX_JOBS, &a->worker);
    if (rc == LATCH_OK) {
        struct oauth_cc_opts co = {
            .outbound = a->outbound,
            .worker = a->worker,
            .allow_http = cfg->allow_http,
            .timeout_ms = cfg->token_timeout_ms,
            .default_expires_in_s = cfg->default_expires_in_s,
        };
        struct webhook_opts wo = {
            .store = a->store,
            .vault = a->vault,
            .catalog = a->catalog,
            .outbound = a->outbound,
            .node_id = a->node_id,
            .timeout_ms = cfg->webhook_timeout_ms,
            .max_attempts = cfg->webhook_max_attempts,
            .backoff_ms = cfg->webhook_backoff_ms,
            .no_legacy_signature = !cfg->webhook_legacy_sig,
        };

        a->oauth_cc = oauth_cc_new(&co);
        rc = webhook_start(&wo, &a->webhook);
    }
    if (rc == LATCH_OK) {
        const char *ov = getenv("LATCH_REFRESH_MARGIN_S");
        struct refresher_opts ro = {
            .store = a->store,
            .vault = a->vault,
            .catalog = a->catalog,
            .worker = a->worker,
            .oauth_cc = a->oauth_cc,
            .webhook = a->webhook,
            .node_id = a->node_id,
            .margin_s = cfg->refresh_margin_s,
            /* set explicitly, the margin wins over the providers' token_expiration_buffer */
            .margin_override = ov != NULL && ov[0] != '\0',
            .backoff_ms = cfg->refresh_backoff_ms,
            .lease_ms = cfg->refresh_lease_ms,
            .background_refresh = cfg->background_refresh,
            .cache_entries = (size_t)cfg->cache_entries,
            .cache_bytes = (size_t)cfg->cache_mb * 1024 * 1024,
            .cache_max_age_s = cfg->cache_max_age_s,
            /* other processes write a PostgreSQL database: check each hit's stamp */
            .cache_revalidate = strcmp(store_backend(a->store), "postgres") == 0,
        };

        rc = refresher_start(&ro, &a->refresher);
    }
    if (rc != LATCH_OK) {
        latch_err_set(err, "cannot start background threads");
        return rc;
    }
    if (cfg->ws_max_clients > 0) {
        struct ws_hub_opts wso = {
            .max_clients = (unsigned)cfg->ws_max_clients,
            .idle_s = (unsigned)cfg->ws_idle_s,
            .max_age_s = (unsigned)cfg->ws_max_age_s,
        };

        rc = ws_hub_start(&wso, &a->ws, err);
        if (rc != LATCH_OK)
            return rc;
    }
    memset(&ho, 0, sizeof ho);
    ho.bind_addr = cfg->bind;
    ho.port = (uint16_t)cfg->port;
    ho.threads = (unsigned)cfg->threads;
    ho.conn_limit = (unsigned)cfg->conn_limit;
    ho.conn_timeout_s = (unsigned)cfg->conn_timeout_s;
    ho.conn_limit_ip = (unsigned)cfg->conn_limit_ip;
    ho.trusted_proxies = cfg->trusted_proxies;
    ho.header_timeout_s = (unsigned)cfg->header_timeout_s;
    ho.body_timeout_s = (unsigned)cfg->body_timeout_s;
    ho.header_limit = LATCH_MAX_HEADER_BYTES;
    ho.dispatch = api_dispatch;
    ho.body_limit = api_body_limit;
    ho.stream_body = api_stream_body;
    a->api = xcalloc(1, sizeof *a->api);
    *a->api = (struct api_deps){
        .cfg = cfg,
        .store = a->store,
        .vault = a->vault,
        .catalog = a->catalog,
        .outbound = a->outbound,
        .oauth_cc = a->oauth_cc,
        .webhook = a->webhook,
        .refresher = a->refresher,
        .timer = a->timer,
        .worker = a->worker,
        .rl_env = a->rl_env,
        .rl_ip = a->rl_ip,
        .rl_auth_fail = a->rl_auth_fail,
        .authcache = a->authcache,
        /* the OAuth callback tells @nangohq/frontend's WebSocket (issue 13) */
        .ws_publish = a->ws != NULL ? app_ws_publish : NULL,
        .ws_ctx = a->ws,
    };
    ho.precheck = api_precheck;
    ho.loop_hooks = &loop_hooks;
    loop_hooks_app = a;
    ho.body_budget = (size_t)cfg->body_budget_mb * 1024 * 1024;
    ho.ud = a->api;
    if (a->ws != NULL) {
        ho.upgrade_path = cfg->ws_path;
        ho.upgrade_check = ws_upgrade_check;
        ho.upgraded = ws_upgraded;
        ho.upgrade_ud = a;
    }
    rc = http_server_start(&ho, &a->http, err);
    if (rc == LATCH_OK && cfg->metrics_bind != NULL && cfg->metrics_bind[0] != '\0')
        rc = metrics_start(a, cfg, err);
    return rc;
}

void
app_stop(struct app *a)
{
    /*
     * A request parked on another process's refresh lease (up to 2 leases, 60 s by default)
     * must be answered within the HTTP server's grace period (10 s): give it half of that.
     */
    refresher_drain(a->refresher, APP_LEASE_DRAIN_MS);
    http_server_stop(a->metrics_http);
    a->metrics_http = NULL;
    /* the hub closes its sockets first: MHD must not stop with upgraded connections held */
    ws_hub_shutdown(a->ws);
    http_server_stop(a->http);
    a->http = NULL;
    ws_hub_stop(a->ws); /* no adoption can come any more */
    a->ws = NULL;
    free(a->api); /* no request runs any more */
    a->api = NULL;
    timer_stop(a->timer);
    a->timer = NULL;
    /*
     * outbound first: it fails its pending jobs, whose callbacks hand their follow-up (store
     * writes, webhooks) to the worker. Then the webhook and refresher threads stop (they hold
     * the outbound and the worker, so must be gone before either is freed; a submit of theirs
     * meanwhile fails cleanly). The worker runs all the follow-up, which still uses the
     * webhook and refresher objects; only then is outbound freed (a job may still reach
     * outbound_submit, which then fails cleanly), then the webhook and the refresher.
     */
    outbound_shutdown(a->outbound);
    webhook_halt(a->webhook);
    refresher_halt(a->refresher);
    worker_stop(a->worker);
    a->worker = NULL;
    for (unsigned i = 0; i < APP_MAX_LOOPS; i++) {
        outbound_stop(a->loop_outbound[i]); /* shut down by its loop thread already */
        a->loop_outbound[i] = NULL;
    }
    outbound_stop(a->outbound);
    a->outbound = NULL;
    webhook_stop(a->webhook);
    a->webhook = NULL;
    refresher_stop(a->refresher);
    a->refresher = NULL;
    oauth_cc_free(a->oauth_cc);
    a->oauth_cc = NULL;
    authcache_free(a->authcache);
    a->authcache = NULL;
    ratelimit_free(a->rl_env);
    a->rl_env = NULL;
    ratelimit_free(a->rl_ip);
    a->rl_ip = NULL;
    ratelimit_free(a->rl_auth_fail);
    a->rl_auth_fail = NULL;
    catalog_free(a->catalog);
    a->catalog = NULL;
    opslog_stop(); /* after every emitter (requests, worker, webhook, refresher) is gone */
    store_close(a->store);
    a->store = NULL;
    vault_free(a->vault);
    a->vault = NULL;
}
