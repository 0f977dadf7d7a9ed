#include "api/api.h"

#include <ctype.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api_auth.h"
#include "core/latch_limits.h"
#include "core/log.h"
#include "domain/refresher.h"
#include "util/str.h"
#include "util/timefmt.h"
#include "util/xalloc.h"
#include "core/worker.h"
#include "util/clock.h"

/* the message of every 503 caused by a store failure */
#define STORE_UNAVAILABLE_MSG "The store is unavailable. Try again."

static void api_not_implemented(struct api_ctx *c);

static const struct api_route routes[] = {
    {"GET", "/health", api_health, AUTH_NONE, 0, 0, NULL},
    /* before "/ui": that one tolerates a '/' */
    {"GET", "/ui/*", api_ui_asset, AUTH_NONE, 0, 0, NULL},
    {"GET", "/ui", api_ui_asset, AUTH_NONE, 0, 0, NULL},
    /* the dashboard: its own session cookie and CSRF (api_admin.c); the API route first */
    {"*", "/admin/api/*", api_admin_api, AUTH_NONE, API_JSON_BODY | API_OFFLOAD, 64 * 1024, NULL},
    {"GET", "/admin/*", api_admin_page, AUTH_NONE, 0, 0, NULL},
    {"GET", "/admin", api_admin_page, AUTH_NONE, 0, 0, NULL},
    {"GET", "/providers", api_providers_list, AUTH_SESSION_OR_SECRET, 0, 0, NULL},
    {"GET", "/providers/:provider", api_provider_get, AUTH_SESSION_OR_SECRET, 0, 0, NULL},
    {"GET", "/integrations", api_integrations_list, AUTH_SESSION_OR_SECRET, API_NO_QUERY, 0, NULL},
    {"POST", "/integrations", api_integration_create, AUTH_SECRET,
     API_JSON_BODY | API_NO_QUERY | API_OFFLOAD, LATCH_MAX_JSON_BODY, "integration.create"},
    {"GET", "/integrations/:key", api_integration_get, AUTH_SECRET, 0, 0, NULL},
    {"PATCH", "/integrations/:key", api_integration_patch, AUTH_SECRET,
     API_JSON_BODY | API_NO_QUERY | API_OFFLOAD, LATCH_MAX_JSON_BODY, "integration.update"},
    {"DELETE", "/integrations/:key", api_integration_delete, AUTH_SECRET,
     API_NO_QUERY | API_OFFLOAD, 0, "integration.delete"},
    {"POST", "/connections/metadata", api_metadata_set, AUTH_SECRET,
     API_JSON_BODY | API_NO_QUERY | API_OFFLOAD, LATCH_MAX_JSON_BODY, "metadata.set"},
    {"PATCH", "/connections/metadata", api_metadata_update, AUTH_SECRET,
     API_JSON_BODY | API_NO_QUERY | API_OFFLOAD, LATCH_MAX_JSON_BODY, "metadata.update"},
    {"GET", "/connections", api_connections_list, AUTH_SECRET, 0, 0, NULL},
    {"POST", "/connections", api_connection_create, AUTH_SECRET,
     API_JSON_BODY | API_NO_QUERY | API_OFFLOAD, LATCH_MAX_JSON_BODY, "connection.create"},
    {"GET", "/connections/:id", api_connection_get, AUTH_SECRET, 0, 0, NULL},
    {"DELETE", "/connections/:id", api_connection_delete, AUTH_SECRET, API_OFFLOAD, 0,
     "connection.delete"},
    {"PATCH", "/connections/:id", api_connection_patch, AUTH_SECRET, API_JSON_BODY | API_OFFLOAD,
     LATCH_MAX_JSON_BODY, "connection.update"},
    /* deprecated singular aliases still used by older SDKs */
    {"POST", "/connection/metadata", api_metadata_set, AUTH_SECRET,
     API_JSON_BODY | API_NO_QUERY | API_OFFLOAD, LATCH_MAX_JSON_BODY, "metadata.set"},
    {"PATCH", "/connection/metadata", api_metadata_update, AUTH_SECRET,
     API_JSON_BODY | API_NO_QUERY | API_OFFLOAD, LATCH_MAX_JSON_BODY, "metadata.update"},
    {"GET", "/connection", api_connections_list, AUTH_SECRET, 0, 0, NULL},
    {"POST", "/connection", api_connection_create, AUTH_SECRET,
     API_JSON_BODY | API_NO_QUERY | API_OFFLOAD, LATCH_MAX_JSON_BODY, "connection.create"},
    {"POST", "/connection/:id/metadata", api_legacy_metadata_set, AUTH_SECRET,
     API_JSON_BODY | API_OFFLOAD, LATCH_MAX_JSON_BODY, "metadata.set"},
    {"PATCH", "/connection/:id/metadata", api_legacy_metadata_update, AUTH_SECRET,
     API_JSON_BODY | API_OFFLOAD, LATCH_MAX_JSON_BODY, "metadata.update"},
    {"GET", "/connection/:id", api_connection_get, AUTH_SECRET, 0, 0, NULL},
    {"DELETE", "/connection/:id", api_connection_delete, AUTH_SECRET, API_OFFLOAD, 0,
     "connection.delete"},
    {"PATCH", "/connection/:id", api_connection_patch, AUTH_SECRET, API_JSON_BODY | API_OFFLOAD,
     LATCH_MAX_JSON_BODY, "connection.update"},
    {"POST", "/connect/sessions", api_connect_session_create, AUTH_SECRET,
     API_JSON_BODY | API_NO_QUERY | API_OFFLOAD, LATCH_MAX_JSON_BODY, "connect_session.create"},
    {"POST", "/connect/sessions/reconnect", api_connect_session_reconnect, AUTH_SECRET,
     API_JSON_BODY | API_NO_QUERY | API_OFFLOAD, LATCH_MAX_JSON_BODY, "connect_session.reconnect"},
    {"GET", "/connect/session", api_connect_session_get, AUTH_SESSION_HEADER, API_NO_QUERY, 0,
     NULL},
    {"DELETE", "/connect/session", api_connect_session_delete, AUTH_SESSION_HEADER,
     API_NO_QUERY | API_OFFLOAD, 0, "connect_session.delete"},
    {"POST", "/oauth2/auth/:key", api_oauth2_cc, AUTH_SESSION_QUERY, API_JSON_BODY | API_OFFLOAD,
     LATCH_MAX_JSON_BODY, "link"},
    /* OAUTH2 authorization code: the popup's pages (api_oauth.c) */
    {"GET", "/oauth/connect/:key", api_oauth_connect, AUTH_SESSION_QUERY, API_PAGE | API_OFFLOAD, 0,
     "link"},
    {"GET", "/oauth/callback", api_oauth_callback, AUTH_NONE, API_PAGE | API_OFFLOAD, 0, "link"},
    {"POST", "/api-auth/api-key/:key", api_link_api_key, AUTH_SESSION_QUERY,
     API_JSON_BODY | API_OFFLOAD, LATCH_MAX_JSON_BODY, "link"},
    {"POST", "/api-auth/basic/:key", api_link_basic, AUTH_SESSION_QUERY,
     API_JSON_BODY | API_OFFLOAD, LATCH_MAX_JSON_BODY, "link"},
    {"POST", "/auth/two-step/:key", api_link_two_step, AUTH_SESSION_QUERY,
     API_JSON_BODY | API_OFFLOAD, LATCH_MAX_JSON_BODY, "link"},
    /* Nango features latch does not implement: 501 naming the feature, not 404 */
    {"*", "/sync*", api_not_implemented, AUTH_SECRET, API_JSON_BODY, LATCH_MAX_JSON_BODY, NULL},
    {"*", "/records*", api_not_implemented, AUTH_SECRET, API_JSON_BODY, LATCH_MAX_JSON_BODY, NULL},
    {"*", "/action/*", api_not_implemented, AUTH_SECRET, API_JSON_BODY, LATCH_MAX_JSON_BODY, NULL},
    {"*", "/scripts/*", api_not_implemented, AUTH_SECRET, API_JSON_BODY, LATCH_MAX_JSON_BODY, NULL},
    {"*", "/environment-variables*", api_not_implemented, AUTH_SECRET, API_JSON_BODY,
     LATCH_MAX_JSON_BODY, NULL},
    {"*", "/flow/*", api_not_implemented, AUTH_SECRET, API_JSON_BODY, LATCH_MAX_JSON_BODY, NULL},
    {"*", "/functions*", api_not_implemented, AUTH_SECRET, API_JSON_BODY, LATCH_MAX_JSON_BODY,
     NULL},
    /* latch extension: the operations log (docs/api.md); Nango has no /latch prefix */
    {"GET", "/latch/operations", api_operations_list, AUTH_SECRET, 0, 0, NULL},
    {"GET", "/latch/operations/:id", api_operation_get, AUTH_SECRET, API_NO_QUERY, 0, NULL},
    {"*", "/proxy/*", api_proxy, AUTH_SECRET, API_STREAM, (size_t)LATCH_MAX_PROXY_BODY, "proxy"},
};

/* Prefixes where Nango rejects non-JSON content types (jsonContentTypeMiddleware). */
static const char *const json_prefixes[] = {
    "/providers", "/integrations", "/connection", "/connect", "/environment", NULL,
};

/* Routes of Nango's API for features latch does not run (syncs, records, actions, ...). */
static void
api_not_implemented(struct api_ctx *c)
{
    static const struct {
        const char *prefix;
        const char *feature;
    } features[] = {
        {"/sync", "Syncs"},
        {"/records", "Records (the data of syncs)"},
        {"/action/", "Actions"},
        {"/scripts/", "The scripts configuration (syncs and actions)"},
        {"/environment-variables", "Environment variables"},
        {"/flow/", "Functions (flows)"},
        {"/functions", "Functions"},
    };
    const char *path = http_req_path(c->req);
    const char *feature = "This feature";
    char msg[300];

    for (size_t i = 0; i < sizeof features / sizeof features[0]; i++)
        if (strncmp(path, features[i].prefix, strlen(features[i].prefix)) == 0)
            feature = features[i].feature;
    (void)snprintf(msg, sizeof msg,
                   "%s are not implemented by latch: it links accounts, keeps their tokens fresh "
                   "and proxies requests (see docs/api.md).",
                   feature);
    api_error(c, 501, "not_implemented", msg);
}

bool
api_route_match(const char *pattern, const char *path, struct api_ctx *c)
{
    size_t used = 0;
    int np = 0;
    const char *p = pattern, *s = path;

    memset(c->params, 0, sizeof c->params);
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

        if (!api_route_match(r->pattern, path, cc))
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
    api_op_finish(c); /* the request is over: its operation goes to the log */
    store_env_clear(&c->env);
    store_session_clear(&c->session);
    if (c->body != NULL)
        json_decref(c->body);
    if (c->app_creds != NULL) {
        json_t *a = c->app_creds;

        c->app_creds = NULL;
        /* wipe the secret's text before it is released */
        {
            const char *k;
            json_t *v;

            json_object_foreach(a, k, v)
            {
                if (json_is_string(v))
                    explicit_bzero((char *)(uintptr_t)json_string_value(v), json_string_length(v));
            }
        }
        json_decref(a);
    }
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
    api_op_error(c, code);
    if (c->page_error != NULL) {
        c->page_error(c, status, code, message);
        return;
    }
    http_resp_error(c->req, status, code, message);
}

void
api_store_unavailable(struct api_ctx *c)
{
    api_error(c, 503, "service_unavailable", STORE_UNAVAILABLE_MSG);
}

void
api_error_list(struct api_ctx *c, unsigned status, const char *code, const char *message,
               json_t *errors)
{
    json_t *e = json_object();
    char *m = latch_utf8_sanitize(message);

    if (c->page_error != NULL) {
        http_req_log_kv(c->req, "err", code);
        api_op_error(c, code);
        c->page_error(c, status, code, m);
        free(m);
        json_decref(errors);
        json_decref(e);
        return;
    }
    json_object_set_new(e, "code", json_string(code));
    json_object_set_new(e, "message", json_string(m));
    free(m);
    json_object_set_new(e, "errors", errors);
    http_req_log_kv(c->req, "err", code);
    api_op_error(c, code);
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

json_t *
api_time_json(int64_t ms, bool plus00)
{
    char b[40];

    if (ms == 0)
        return json_null();
    latch_fmt_time(ms, plus00, b);
    return json_string(b);
}

unsigned
api_refresh_error(const struct refresh_result *r, const char **code, const char **message)
{
    static const struct {
        unsigned status;
        const char *code;
        const char *message; /* when the refresher has nothing to add */
    } map[] = {
        [REFRESH_OK] = {200, "", ""},
        [REFRESH_NOT_FOUND] = {404, "unknown_connection", "Failed to find connection"},
        [REFRESH_STORE_UNAVAILABLE] = {503, "service_unavailable", STORE_UNAVAILABLE_MSG},
        [REFRESH_CREDS_UNREADABLE] = {500, "credentials_unreadable", ""},
        [REFRESH_NEEDS_REAUTH] = {424, "invalid_credentials", ""},
        [REFRESH_BACKOFF] = {424, "connection_refresh_backoff", ""},
        [REFRESH_IN_PROGRESS] = {503, "refresh_in_progress", ""},
        [REFRESH_SHUTTING_DOWN] = {503, "server_shutting_down", ""},
    };
    size_t i = (size_t)r->outcome;

    if (i >= sizeof map / sizeof map[0] || map[i].status == 0)
        i = REFRESH_STORE_UNAVAILABLE; /* not reached: every outcome is in the table */
    *code = map[i].code;
    *message = r->message[0] != '\0' ? r->message : map[i].message;
    return map[i].status;
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

const struct store_env *
api_env(struct api_ctx *c)
{
    if (!c->env_loaded) {
        if (store_env_get(c->deps->store, c->env_id, &c->env) != LATCH_OK)
            return NULL;
        c->env_loaded = true;
    }
    return &c->env;
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
    worker_run(c->deps->worker, run_offloaded, c);
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
api_dispatch(struct http_req *req, void *depsv)
{
    struct api_deps *deps = depsv;
    const char *method = http_req_method(req);
    const char *path = http_req_path(req);
    struct api_ctx *c = http_req_app_data(req); /* api_precheck's, when it authenticated */
    const struct api_route *r;
    bool method_mismatch;
    const char *ct;

    if (c == NULL) {
        c = xcalloc(1, sizeof *c);
        c->deps = deps;
        c->req = req;
        http_req_set_app_data(req, c, ctx_free_cb);
    }
    c->at_headers = false;

    r = route_find(method, path, c, &method_mismatch);
    if (r == NULL) {
        if (method_mismatch)
            api_error(c, 405, "method_not_allowed", "This method is not allowed on this route.");
        else
            api_error(c, 404, "not_found", "Unknown route.");
        return;
    }
    http_req_set_route(req, r->pattern);
    if (r->flags & API_PAGE)
        c->page_error = api_oauth_page_error;
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
    /*
     * Failed authentications take from their own per-IP bucket (api_auth.c); requests with a
     * valid connect session from the per-IP one, so bogus tokens cannot use up valid ones' budget.
     */
    if (!c->authenticated && !api_authenticate(c, r->auth))
        return;
    /* the OAuth callback is unauthenticated: the per-IP bucket bounds it (writes: a DELETE) */
    if ((c->by_session || (r->flags & API_PAGE)) &&
        api_rate_limited(c, deps->rl_ip, http_req_client_ip(req)))
        return;
    if (c->env_id != 0 && !c->by_session) {
        char key[32];

        (void)snprintf(key, sizeof key, "env:%lld", (long long)c->env_id);
        if (api_rate_limited(c, deps->rl_env, key))
            return;
    }
    api_op_begin(c, r->op);
    if ((r->flags & API_JSON_BODY) && !parse_body(c))
        return;
    if (r->flags & API_OFFLOAD) {
        offload(c, r->handler);
        return;
    }
    r->handler(c);
}

bool
api_precheck(struct http_req *req, void *deps)
{
    struct api_ctx *c = xcalloc(1, sizeof *c);
    const struct api_route *r;
    bool method_mismatch, ok;

    c->deps = deps;
    c->req = req;
    c->at_headers = true;
    r = route_find(http_req_method(req), http_req_path(req), c, &method_mismatch);
    /* unknown routes and bodies on routes without one are refused later, without a body */
    if (r == NULL || r->auth == AUTH_NONE) {
        api_ctx_free(c);
        return true;
    }
    ok = api_authenticate(c, r->auth);
    if (!ok) {
        api_ctx_free(c);
        return false;
    }
    /* dispatch goes on with this context: the credentials are not checked twice */
    c->authenticated = true;
    http_req_set_app_data(req, c, ctx_free_cb);
    return true;
}

void
api_health(struct api_ctx *c)
{
    api_reply(c, 200, json_pack("{s:s}", "result", "ok"));
}
