/*
 * api.h - the public REST API (Nango-compatible): route table, authentication, and the helpers
 * shared by the api_*.c handler files.
 *
 * Flow: http_server calls api_dispatch (pool thread) -> route match -> content-type/query checks
 * -> authentication (secret key, connect session, or none) -> the handler. Handlers reply with
 * http_resp_* or suspend (outbound calls) and reply later from the curl or a worker thread.
 * Handlers of routes flagged API_OFFLOAD (the ones that write) run on a worker thread instead.
 * Threads: all functions are called on pool threads, or worker threads for API_OFFLOAD routes.
 */
#ifndef LATCH_API_H
#define LATCH_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "net/http_server.h"
#include "store/store.h"

struct authcache;
struct catalog;
struct config;
struct oauth_cc;
struct outbound;
struct ratelimit;
struct refresh_result;
struct refresher;
struct timer;
struct vault;
struct webhook;
struct worker;

/*
 * What the REST layer uses of the running service, filled by app.c before the HTTP server starts
 * (http_server_opts.ud points at it). Ownership: every member is borrowed from the app and
 * outlives the HTTP server; the struct is immutable while requests run (any thread may read it).
 */
struct api_deps {
    const struct config *cfg;
    struct store *store;
    struct vault *vault;
    const struct catalog *catalog;
    struct outbound *outbound;
    struct oauth_cc *oauth_cc;
    struct webhook *webhook;
    struct refresher *refresher;
    struct timer *timer;
    struct worker *worker;
    struct ratelimit *rl_env;
    struct ratelimit *rl_ip;
    struct ratelimit *rl_auth_fail; /* failed authentications per client IP */
    struct authcache *authcache;
    /*
     * Tells a @nangohq/frontend WebSocket client (by its ws_client_id) how an OAuth flow ended:
     * json is Nango's message ({"message_type":"success",...} or "error"). NULL = no WebSocket
     * hub (the popup page's postMessage still reports). Any thread. app.c wires ws_hub_publish.
     */
    latch_rc (*ws_publish)(void *ctx, const char *ws_client_id, const char *json);
    void *ws_ctx;
};

/* Per-request context created by the router. */
struct api_ctx {
    struct api_deps *deps;
    struct http_req *req;
    const char *params[4]; /* path captures, borrowed from cap_buf */
    char cap_buf[1024];
    int64_t env_id;       /* authenticated environment, 0 if none */
    struct store_env env; /* loaded on first use: see api_env() */
    bool env_loaded;
    struct store_session session; /* when authenticated by a connect session */
    bool by_session;
    char key_label[64]; /* authenticated by a secret key: its label ("" = none) */
    bool authenticated; /* api_precheck authenticated it already: dispatch does not again */
    bool at_headers;    /* api_precheck: the answer cannot be delayed (no tarpit) */
    json_t *body;       /* parsed JSON body (owned), NULL if none */
    void (*offloaded)(struct api_ctx *c); /* API_OFFLOAD: the handler the worker runs */
    _Atomic int holds; /* API_OFFLOAD: answers still owed (the handler + each api_defer) */
    struct api_op *op; /* the operation this request records (api_ops.c), or NULL */
    /* api_integrations.c: the app credentials this request writes (owned), or NULL */
    json_t *app_creds;
    /*
     * API_PAGE routes (the OAuth popup, api_oauth.c): every error answer goes through this hook
     * (an HTML page, and the WebSocket client told) instead of JSON.
     */
    void (*page_error)(struct api_ctx *c, unsigned status, const char *code, const char *message);
    char ws_client_id[72];   /* API_PAGE: the WebSocket client to tell ("" = none) */
    char page_key[256];      /* API_PAGE: the integration the flow is for ("" = unknown) */
    char page_conn_id[256];  /* API_PAGE: the connection id ("" = unknown) */
    char page_provider[128]; /* API_PAGE: the provider's display name ("" = unknown) */
};

enum api_auth {
    AUTH_NONE = 0,
    AUTH_SECRET,            /* Authorization: Bearer <secret key> */
    AUTH_SESSION_OR_SECRET, /* Bearer <session token or secret key> */
    AUTH_SESSION_HEADER,    /* Bearer <session token> only */
    AUTH_SESSION_QUERY,     /* ?connect_session_token= */
};

enum {
    API_JSON_BODY =
        1 << 0, /* body must be JSON (415 on other content types), parsed into ctx->body */
    API_NO_QUERY = 1 << 1, /* any query parameter is a 400 invalid_query_params */
    API_STREAM = 1 << 2,   /* proxy: body streamed, not buffered */
    /*
     * The handler writes to the store (a commit waits for fsync, a lock, or the database): it runs
     * on the worker pool with the request suspended, so a slow disk or a held lock never stalls
     * the pool thread, and with it every other connection that thread serves. A handler on such
     * a route that answers later uses api_defer / api_resume, never http_req_suspend.
     */
    API_OFFLOAD = 1 << 3,
    /* A page a browser opens (the OAuth popup): errors answer HTML via api_ctx.page_error. */
    API_PAGE = 1 << 4,
};

typedef void (*api_handler_fn)(struct api_ctx *c);

struct api_route {
    const char *method;  /* "GET", ... or "*" */
    const char *pattern; /* "/connections/:id", trailing "*" matches the rest */
    api_handler_fn handler;
    enum api_auth auth;
    unsigned flags;
    size_t body_limit;
    const char *op; /* operations log: "link", "proxy", or a management "what"; NULL = none */
};

/* Glue for http_server_opts. */
void api_dispatch(struct http_req *req, void *deps); /* deps: struct api_deps */
size_t api_body_limit(const char *method, const char *path, void *app);
bool api_stream_body(const char *method, const char *path, void *app);
/*
 * http_server's precheck: the route's credentials, checked at the headers of a request that
 * announces a body, so an unauthenticated client never gets its body buffered (401 at once).
 */
bool api_precheck(struct http_req *req, void *deps); /* deps: struct api_deps */

/* ---- helpers for handlers ---- */
/*
 * A handler that answers later (an outbound call) calls api_defer before starting the work, and
 * the completion (any thread) calls api_resume once it has replied. On any route, offloaded or
 * not; on other routes the same as http_req_suspend / http_req_resume.
 */
void api_defer(struct api_ctx *c);
void api_resume(struct api_ctx *c);
/* The authenticated environment's row, loaded on first use (NULL if the store fails). */
const struct store_env *api_env(struct api_ctx *c);
void api_ctx_free(struct api_ctx *c);
/* Error responses: {"error":{"code","message"}}. */
void api_error(struct api_ctx *c, unsigned status, const char *code, const char *message);
/* 503 service_unavailable: the store failed (the one wording of that answer). */
void api_store_unavailable(struct api_ctx *c);
/* {"error":{"code":code,"message":message,"errors":errors}} (takes errors). */
void api_error_list(struct api_ctx *c, unsigned status, const char *code, const char *message,
                    json_t *errors);
/* Appends a zod-like issue {code, message, path:[...]} to errors; path is NULL-terminated. */
void api_issue(json_t *errors, const char *code, const char *message, const char *const *path);
/* Checks that obj has only keys in allowed (NULL-terminated); adds unrecognized_keys issues. */
void api_strict_keys(json_t *obj, const char *const *allowed, const char *const *path,
                     json_t *errors);
/* JSON value for a time (latch_fmt_time), or null when ms == 0. */
json_t *api_time_json(int64_t ms, bool plus00);
/* Parses "true/false/1/0/yes/no/on/off" (z.stringbool). */
bool api_parse_bool(const char *s, bool *out);
/*
 * The HTTP answer to a refresher outcome other than REFRESH_OK: returns the status and sets the
 * error code; *message is r's message, or the outcome's standard one when r has none (both
 * borrowed: static or from r).
 */
unsigned api_refresh_error(const struct refresh_result *r, const char **code, const char **message);
/*
 * Matches path against a route pattern: ":name" captures one segment, a trailing "*" the rest,
 * one trailing slash of path is tolerated. Captures go to c->params / c->cap_buf (reset first).
 */
bool api_route_match(const char *pattern, const char *path, struct api_ctx *c);
/* Reply with the JSON and finish (json stolen). */
void api_reply(struct api_ctx *c, unsigned status, json_t *body);
/* api_reply for a body carrying decrypted credentials: the response buffer is wiped when freed. */
void api_reply_secret(struct api_ctx *c, unsigned status, json_t *body);
/* True if arr is an array holding the string s. */
bool api_json_array_has_string(const json_t *arr, const char *s);

/* Route handlers (api_*.c). */
void api_health(struct api_ctx *c);
void api_ui_asset(struct api_ctx *c);
void api_providers_list(struct api_ctx *c);
void api_provider_get(struct api_ctx *c);
void api_integrations_list(struct api_ctx *c);
void api_integration_create(struct api_ctx *c);
void api_integration_get(struct api_ctx *c);
void api_integration_patch(struct api_ctx *c);
void api_integration_delete(struct api_ctx *c);
void api_connections_list(struct api_ctx *c);
void api_connection_create(struct api_ctx *c);
void api_connection_get(struct api_ctx *c);
void api_connection_delete(struct api_ctx *c);
void api_connection_patch(struct api_ctx *c);
void api_metadata_set(struct api_ctx *c);
void api_metadata_update(struct api_ctx *c);
void api_legacy_metadata_set(struct api_ctx *c);
void api_legacy_metadata_update(struct api_ctx *c);
void api_connect_session_create(struct api_ctx *c);
void api_connect_session_reconnect(struct api_ctx *c);
void api_connect_session_get(struct api_ctx *c);
void api_connect_session_delete(struct api_ctx *c);
void api_oauth2_cc(struct api_ctx *c);
void api_link_api_key(struct api_ctx *c);
void api_link_basic(struct api_ctx *c);
void api_link_two_step(struct api_ctx *c);
void api_proxy(struct api_ctx *c);
void api_oauth_connect(struct api_ctx *c);  /* api_oauth.c */
void api_oauth_callback(struct api_ctx *c); /* api_oauth.c */
void api_oauth_page_error(struct api_ctx *c, unsigned status, const char *code,
                          const char *message);
void api_admin_page(struct api_ctx *c); /* api_admin.c */
void api_admin_api(struct api_ctx *c);
void api_operations_list(struct api_ctx *c);
void api_operation_get(struct api_ctx *c);

/*
 * The request's operation (api_ops.c): begun by the router for routes with an op (the id goes
 * out in X-Latch-Operation-Id), finished when the request is. Handlers add what they learn;
 * every call is a no-op on a request without one. Never pass a secret or a body.
 */
struct api_op;
void api_op_begin(struct api_ctx *c, const char *op);
void api_op_conn(struct api_ctx *c, const char *integration, const char *provider,
                 const char *connection_id);
void api_op_error(struct api_ctx *c, const char *code);
void api_op_detail(struct api_ctx *c, const char *key, json_t *value); /* value stolen */
const char *api_op_id(const struct api_ctx *c);                        /* NULL if none */
/* Proxy: method and endpoint path (the query is cut off: its values are not kept). */
void api_op_target(struct api_ctx *c, const char *method, const char *endpoint);
/* Proxy: the upstream answer that is passed on. */
void api_op_upstream(struct api_ctx *c, long status, int retries, bool refreshed);
void api_op_finish(struct api_ctx *c);
/* /metrics: one upstream answer of provider (status 0: none), latency since t0_us. */
void api_metrics_upstream(const char *provider, long status, uint64_t t0_us);

#endif
