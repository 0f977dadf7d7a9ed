/*
 * api_oauth.c - OAUTH2's authorization-code flow, as @nangohq/frontend drives it (the popup):
 *
 *   GET /oauth/connect/:key?connect_session_token=...&ws_client_id=...&params[x]=...
 *       The link checks every link route makes (api_link.h), the integration's app credentials,
 *       then a state row (store: oauth_states; the state is 256 random bits, kept only as a keyed
 *       hash, single-use, 10 minutes, bound to the session, integration, connection and
 *       WebSocket client; the PKCE verifier and the connection config sealed in it), and a 302 to
 *       the provider's authorization URL (domain/oauth_code.h).
 *   GET /oauth/callback?code=...&state=...   (or ?error=...&state=...)
 *       Takes the state row (one DELETE ... RETURNING: a replayed state finds nothing), then the
 *       code is exchanged on the curl thread (oauth_cc with the authorization_code grant), and the
 *       connection stored on a worker (link_store: session consumed, sealed, auth webhook).
 *
 * Both answer a small HTML page (strict CSP with a per-response nonce) that posts the outcome to
 * window.opener at latch's own origin and closes itself, and tell the WebSocket client
 * (api_deps.ws_publish) in Nango's message shapes. Every error before or after the redirect is
 * such a page (API_PAGE: api_oauth_page_error), never JSON in the popup.
 * Threads: both routes are API_OFFLOAD (worker threads); the exchange's follow-up runs on a
 * worker thread too (oauth_cc.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/api_link.h"
#include "core/config.h"
#include "core/latch_limits.h"
#include "core/log.h"
#include "crypto/vault.h"
#include "domain/catalog.h"
#include "domain/creds.h"
#include "domain/oauth_cc.h"
#include "domain/oauth_code.h"
#include "util/buf.h"
#include "util/clock.h"
#include "util/json.h"
#include "util/str.h"
#include "util/xalloc.h"

/* The longest authorization URL latch sends a browser to (many scopes make long URLs). */
#define OAUTH_MAX_AUTHORIZE_URL 8192
#define OAUTH_MAX_EXTRA_PARAMS 20

/* ---- the page ---- */

static void
html_escape(struct buf *b, const char *s)
{
    for (; s != NULL && *s != '\0'; s++) {
        switch (*s) {
        case '<':
            (void)buf_puts(b, "&lt;");
            break;
        case '>':
            (void)buf_puts(b, "&gt;");
            break;
        case '&':
            (void)buf_puts(b, "&amp;");
            break;
        case '"':
            (void)buf_puts(b, "&quot;");
            break;
        case '\'':
            (void)buf_puts(b, "&#39;");
            break;
        default:
            (void)buf_append(b, s, 1);
        }
    }
}

/* JSON text safe inside <script type="application/json">: no '<', '>' or '&' left as such. */
static void
json_for_script(struct buf *b, const json_t *j)
{
    char *t = json_dumps(j, JSON_COMPACT | JSON_ESCAPE_SLASH);

    for (const char *s = t; s != NULL && *s != '\0'; s++) {
        if (*s == '<')
            (void)buf_puts(b, "\\u003c");
        else if (*s == '>')
            (void)buf_puts(b, "\\u003e");
        else if (*s == '&')
            (void)buf_puts(b, "\\u0026");
        else
            (void)buf_append(b, s, 1);
    }
    free(t);
}

/* scheme://host[:port] of LATCH_PUBLIC_URL: where the Connect UI runs (postMessage target). */
static void
public_origin(const struct config *cfg, char *out, size_t n)
{
    const char *u = cfg->public_url;
    const char *sep = strstr(u, "://");
    const char *end = sep != NULL ? strchr(sep + 3, '/') : NULL;
    size_t len = end != NULL ? (size_t)(end - u) : strlen(u);

    (void)snprintf(out, n, "%.*s", (int)len, u);
}

static const char page_css[] =
    "body{font-family:system-ui,sans-serif;margin:0;padding:2rem;color:#1a1a1a;background:#fff}"
    "main{max-width:32rem;margin:0 auto}h1{font-size:1.25rem}"
    "@media (prefers-color-scheme:dark){body{color:#eee;background:#141414}}";

/*
 * The popup's page: says what happened in words, and (when opened by a window) posts result to
 * the opener at latch's origin, then closes. result is borrowed.
 */
static void
render_page(struct api_ctx *c, unsigned status, bool ok, const char *message, json_t *result)
{
    struct buf b;
    char nonce[33];
    char origin[512];
    char csp[256];
    json_t *data;

    vault_random_hex(nonce, 16);
    public_origin(c->deps->cfg, origin, sizeof origin);
    data = json_pack("{s:s, s:O}", "origin", origin, "message", result);
    buf_init(&b, 64 * 1024);
    (void)buf_puts(&b, "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                       "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
                       "<title>");
    (void)buf_puts(&b, ok ? "Connected" : "Connection failed");
    (void)buf_puts(&b, "</title><style nonce=\"");
    (void)buf_puts(&b, nonce);
    (void)buf_puts(&b, "\">");
    (void)buf_puts(&b, page_css);
    (void)buf_puts(&b, "</style></head><body><main><h1>");
    (void)buf_puts(&b, ok ? "Connected" : "The connection did not complete");
    (void)buf_puts(&b, "</h1><p id=\"msg\">");
    html_escape(&b, message);
    (void)buf_puts(&b, "</p><p>You can close this window.</p></main>"
                       "<script type=\"application/json\" id=\"latch-result\">");
    json_for_script(&b, data);
    (void)buf_puts(&b, "</script><script nonce=\"");
    (void)buf_puts(&b, nonce);
    (void)buf_puts(&b, "\">(function(){var d=JSON.parse(document.getElementById('latch-result')"
                       ".textContent);if(window.opener){try{window.opener.postMessage(d.message,"
                       "d.origin);}catch(e){}setTimeout(function(){window.close();},300);}})();"
                       "</script></body></html>\n");
    (void)snprintf(csp, sizeof csp,
                   "default-src 'none'; script-src 'nonce-%s'; style-src 'nonce-%s'; "
                   "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
                   nonce, nonce);
    http_resp_header(c->req, "Content-Security-Policy", csp);
    http_resp_header(c->req, "Cache-Control", "no-store");
    http_resp_header(c->req, "X-Frame-Options", "DENY");
    http_resp_bytes(c->req, status, "text/html; charset=utf-8", b.data, b.len, false);
    buf_free(&b);
    json_decref(data);
}

/* Nango's WebSocket message to the client that started the flow, when there is one. */
static void
ws_tell(struct api_ctx *c, json_t *msg)
{
    char *t;

    if (c->ws_client_id[0] == '\0' || c->deps->ws_publish == NULL) {
        json_decref(msg);
        return;
    }
    t = json_dumps(msg, JSON_COMPACT);
    if (t != NULL && c->deps->ws_publish(c->deps->ws_ctx, c->ws_client_id, t) != LATCH_OK)
        log_info("oauth ws", "ws_client_id unknown here or gone; the page reports instead");
    free(t);
    json_decref(msg);
}

static json_t *
str_or_null(const char *s)
{
    return s != NULL && s[0] != '\0' ? json_string(s) : json_null();
}

/* 1..max characters of [A-Za-z0-9] and extra. */
static bool
chars_ok(const char *s, size_t n, size_t max, const char *extra)
{
    if (s == NULL || n == 0 || n > max)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'z') ||
              (s[i] >= 'A' && s[i] <= 'Z') || (s[i] != '\0' && strchr(extra, s[i]) != NULL)))
            return false;
    return true;
}

/* A ws_client_id as the hub makes them: short, [A-Za-z0-9_-]. */
static bool
ws_id_ok(const char *s)
{
    return s != NULL && chars_ok(s, strlen(s), 71, "-_");
}

void
api_oauth_page_error(struct api_ctx *c, unsigned status, const char *code, const char *message)
{
    json_t *result;

    /* errors before the handler ran (authentication): what the connect URL names */
    if (strncmp(http_req_path(c->req), "/oauth/connect/", 15) == 0) {
        const char *ws = http_req_query(c->req, "ws_client_id");

        if (c->ws_client_id[0] == '\0' && ws_id_ok(ws))
            latch_strlcpy(c->ws_client_id, ws, sizeof c->ws_client_id);
        if (c->page_key[0] == '\0' && c->params[0] != NULL)
            latch_strlcpy(c->page_key, c->params[0], sizeof c->page_key);
    }
    ws_tell(c, json_pack("{s:s, s:o, s:o, s:s, s:s}", "message_type", "error",
                         "provider_config_key", str_or_null(c->page_key), "connection_id",
                         str_or_null(c->page_conn_id), "error_type", code, "error_desc", message));
    result = json_pack("{s:s, s:s, s:b, s:o, s:o, s:{s:s, s:s}}", "source", "latch", "type",
                       "oauth_result", "success", 0, "providerConfigKey", str_or_null(c->page_key),
                       "connectionId", str_or_null(c->page_conn_id), "error", "type", code,
                       "message", message);
    render_page(c, status, false, message, result);
    json_decref(result);
}

/* link_job.stored: the connection is stored; tell the WebSocket client and the opener. */
static void
oauth_stored(struct link_job *j, bool created)
{
    struct api_ctx *c = j->c;
    char msg[400];
    json_t *result;

    (void)created;
    ws_tell(c, json_pack("{s:s, s:s, s:s, s:b}", "message_type", "success", "provider_config_key",
                         j->integ.unique_key, "connection_id", j->connection_id, "is_pending", 0));
    (void)snprintf(msg, sizeof msg, "Your %s account is connected.", catalog_display_name(j->p));
    result =
        json_pack("{s:s, s:s, s:b, s:s, s:s}", "source", "latch", "type", "oauth_result", "success",
                  1, "providerConfigKey", j->integ.unique_key, "connectionId", j->connection_id);
    render_page(c, 200, true, msg, result);
    json_decref(result);
}

/* ---- GET /oauth/connect/:key ---- */

struct extra_probe {
    json_t *params; /* authorization_params[...] */
    bool bad;
    bool overrides; /* credentials[...]: client overrides */
};

static bool
param_key_ok(const char *k, size_t n)
{
    return chars_ok(k, n, 64, "_-.");
}

static bool
extra_cb(const char *k, const char *v, void *ud)
{
    struct extra_probe *x = ud;
    size_t n = strlen(k);

    if (strncmp(k, "credentials[", 12) == 0) {
        x->overrides = true;
        return true;
    }
    if (strncmp(k, "authorization_params[", 21) != 0)
        return true;
    if (n < 23 || k[n - 1] != ']' || !param_key_ok(k + 21, n - 22) || v == NULL ||
        strlen(v) > 1024 || !latch_utf8_clean(v) ||
        json_object_size(x->params) >= OAUTH_MAX_EXTRA_PARAMS) {
        x->bad = true;
        return true;
    }
    {
        char name[65];

        memcpy(name, k + 21, n - 22);
        name[n - 22] = '\0';
        /* Nango's "undefined": leave the provider's parameter out */
        json_object_set_new(x->params, name,
                            strcmp(v, "undefined") == 0 ? json_null() : json_string(v));
    }
    return true;
}

/* The integration's app credentials (owned), or NULL when it has none or they do not open. */
static json_t *
app_credentials(struct api_ctx *c, const struct store_integration *i)
{
    json_t *cr = NULL;
    char *aad;

    if (i->credentials_sealed == NULL)
        return NULL;
    aad = creds_app_aad(i->env_id, i->unique_key);
    if (creds_open_aad(c->deps->vault, aad, i->credentials_sealed, &cr) != LATCH_OK)
        cr = NULL;
    free(aad);
    if (cr != NULL && (!json_is_string(json_object_get(cr, "client_id")) ||
                       !json_is_string(json_object_get(cr, "client_secret")))) {
        creds_free(cr);
        cr = NULL;
    }
    return cr;
}

/* The scopes to ask for: the integration's, else the provider's default_scopes (owned). */
static char *
scopes_for(const struct link_job *j)
{
    struct buf b;

    if (j->integ.oauth_scopes != NULL && j->integ.oauth_scopes[0] != '\0')
        return xstrdup(j->integ.oauth_scopes);
    buf_init(&b, 4096);
    for (size_t i = 0; i < j->p->n_default_scopes; i++) {
        if (j->p->default_scopes[i] == NULL)
            continue;
        if (b.len > 0)
            (void)buf_puts(&b, ",");
        (void)buf_puts(&b, j->p->default_scopes[i]);
    }
    {
        char *s = buf_steal(&b, NULL);

        return s != NULL ? s : xstrdup("");
    }
}

/* Session defaults (integrations_config_defaults[key].authorization_params) under the user's. */
static json_t *
extra_params_for(struct api_ctx *c, const char *key, json_t *user)
{
    json_t *cd = latch_json_col(c->session.config_defaults_json);
    json_t *d = json_object_get(json_object_get(json_object_get(cd, "defaults"), key),
                                "authorization_params");
    json_t *out = json_object();
    const char *k;
    json_t *v;

    json_object_foreach(d, k, v)
    {
        if (json_is_string(v) && param_key_ok(k, strlen(k)) && json_string_length(v) <= 1024)
            json_object_set(out, k, v);
    }
    json_object_update(out, user);
    json_decref(cd);
    return out;
}

/* Stores the state row; false when answered. */
static bool
save_state(struct api_ctx *c, struct link_job *j, const char *state, const char *verifier)
{
    struct store_oauth_state st;
    char hex[65];
    char *aad;
    json_t *payload;
    latch_rc rc;

    memset(&st, 0, sizeof st);
    vault_index_hash(c->deps->vault, state, st.state_hash);
    for (size_t i = 0; i < 32; i++)
        (void)snprintf(hex + 2 * i, 3, "%02x", st.state_hash[i]);
    aad = xasprintf("oauth_states:v1:%s", hex);
    payload = json_pack("{s:o, s:O, s:s, s:b}", "v", str_or_null(verifier), "cfg", j->cfg, "uid",
                        j->uid, "existing", j->existing);
    rc = creds_seal_aad(c->deps->vault, aad, payload, &st.payload_sealed);
    creds_free(payload);
    free(aad);
    if (rc != LATCH_OK) {
        api_store_unavailable(c);
        return false;
    }
    st.env_id = c->env_id;
    memcpy(st.session_hash, c->session.token_hash, 32);
    st.integration = j->integ.unique_key;
    st.connection_id = j->connection_id;
    st.ws_client_id = c->ws_client_id[0] != '\0' ? c->ws_client_id : NULL;
    st.expires_at = latch_now_ms() + (int64_t)c->deps->cfg->oauth_state_ttl_s * 1000;
    (void)store_oauth_state_purge_expired(c->deps->store, latch_now_ms());
    rc = store_oauth_state_create(c->deps->store, &st);
    free(st.payload_sealed);
    if (rc != LATCH_OK) {
        api_store_unavailable(c);
        return false;
    }
    return true;
}

void
api_oauth_connect(struct api_ctx *c)
{
    const char *ws = http_req_query(c->req, "ws_client_id");
    const char *user_scope = http_req_query(c->req, "user_scope");
    struct extra_probe x = {json_object(), false, false};
    struct link_job *j = NULL;
    json_t *app = NULL, *extra = NULL;
    char *scopes = NULL, *url = NULL;
    char state[65], verifier[OAUTH_PKCE_VERIFIER_LEN + 1], challenge[OAUTH_PKCE_CHALLENGE_LEN + 1];
    struct oauth_authorize_input ai;
    struct latch_err err;

    latch_strlcpy(c->page_key, c->params[0], sizeof c->page_key);
    if (ws != NULL && !ws_id_ok(ws)) {
        api_error(c, 400, "invalid_query_params", "The ws_client_id is not one latch issued.");
        goto out;
    }
    if (ws != NULL)
        latch_strlcpy(c->ws_client_id, ws, sizeof c->ws_client_id);
    http_req_query_foreach(c->req, extra_cb, &x);
    if (x.overrides) {
        api_error(c, 400, "invalid_query_params",
                  "latch does not take OAuth client overrides from the browser: the integration's "
                  "app credentials are used.");
        goto out;
    }
    if (x.bad) {
        api_error(c, 400, "invalid_query_params",
                  "An authorization parameter is invalid (name: letters, digits, _-. up to 64; "
                  "value: text up to 1024 characters; at most 20).");
        goto out;
    }
    if (user_scope != NULL && user_scope[0] != '\0' && !oauth_scopes_ok(user_scope)) {
        api_error(
            c, 400, "invalid_query_params",
            "user_scope must be scopes separated by commas (letters, digits and :/_.- only).");
        goto out;
    }
    j = link_begin(c, "OAUTH2");
    if (j == NULL)
        goto out;
    latch_strlcpy(c->page_provider, catalog_display_name(j->p), sizeof c->page_provider);
    app = app_credentials(c, &j->integ);
    if (app == NULL) {
        char msg[800];

        (void)snprintf(msg, sizeof msg,
                       "The integration %.200s has no OAuth app credentials (client ID and secret) "
                       "for %.100s yet. Add them with PATCH /integrations/%.200s.",
                       j->integ.unique_key, catalog_display_name(j->p), j->integ.unique_key);
        api_error(c, 400, "invalid_provider_config", msg);
        goto out;
    }
    if (!link_target(j))
        goto out;
    latch_strlcpy(c->page_conn_id, j->connection_id, sizeof c->page_conn_id);
    scopes = scopes_for(j);
    if (user_scope != NULL && user_scope[0] != '\0')
        json_object_set_new(x.params, "user_scope", json_string(user_scope));
    extra = extra_params_for(c, j->integ.unique_key, x.params);
    vault_random_hex(state, 32);
    if (!j->p->disable_pkce)
        oauth_pkce_new(verifier, challenge);
    memset(&ai, 0, sizeof ai);
    ai.provider = j->p;
    ai.connection_config = j->cfg;
    ai.client_id = json_string_value(json_object_get(app, "client_id"));
    ai.redirect_uri = c->deps->cfg->oauth_callback_url;
    ai.scopes = scopes;
    ai.state = state;
    ai.code_challenge = j->p->disable_pkce ? NULL : challenge;
    ai.extra_params = extra;
    latch_err_clear(&err);
    if (oauth_authorize_url(&ai, c->deps->cfg->allow_http, &url, &err) != LATCH_OK ||
        strlen(url) > OAUTH_MAX_AUTHORIZE_URL) {
        char msg[400];

        (void)snprintf(msg, sizeof msg, "latch could not build %.100s's authorization URL: %.250s",
                       catalog_display_name(j->p), url != NULL ? "it is too long" : err.msg);
        api_error(c, 400, "invalid_connection_config", msg);
        goto out;
    }
    if (!save_state(c, j, state, j->p->disable_pkce ? NULL : verifier))
        goto out;
    api_op_detail(c, "step", json_string("authorize"));
    http_resp_header(c->req, "Location", url);
    http_resp_header(c->req, "Cache-Control", "no-store");
    http_resp_bytes(c->req, 302, "text/plain; charset=utf-8", "", 0, true);
out:
    explicit_bzero(state, sizeof state);
    explicit_bzero(verifier, sizeof verifier);
    if (url != NULL) {
        explicit_bzero(url, strlen(url));
        free(url);
    }
    free(scopes);
    json_decref(extra);
    json_decref(x.params);
    creds_free(app);
    if (j != NULL)
        link_job_free(j);
}

/* ---- GET /oauth/callback ---- */

/* Copies the provider's redirect_uri_metadata query parameters into the connection config. */
static void
redirect_metadata(struct api_ctx *c, struct link_job *j)
{
    for (size_t i = 0; i < j->p->n_redirect_uri_metadata; i++) {
        const char *k = j->p->redirect_uri_metadata[i];
        const char *v = k != NULL ? http_req_query(c->req, k) : NULL;

        if (v != NULL && v[0] != '\0' && strlen(v) <= LATCH_MAX_ID_LEN && latch_utf8_clean(v))
            json_object_set_new(j->cfg, k, json_string(v));
    }
}

/* The provider's token_response_metadata paths of the token response, into the config. */
static void
token_metadata(struct link_job *j, const json_t *creds)
{
    json_t *raw = json_object_get(creds, "raw");

    for (size_t i = 0; i < j->p->n_token_response_metadata; i++) {
        const char *path = j->p->token_response_metadata[i];
        json_t *v = oauth_cc_json_path(raw, path);

        /* scalars only, strings bounded */
        if ((json_is_string(v) && json_string_length(v) <= 1024) || json_is_integer(v) ||
            json_is_real(v) || json_is_boolean(v))
            json_object_set(j->cfg, path, v);
    }
}

/* Worker thread: the code exchange is done; store or refuse, answer, resume. */
static void
callback_done(struct oauth_cc_result *res, void *ud)
{
    struct link_job *j = ud;
    struct api_ctx *c = j->c;

    if (res->outcome == OCC_OK) {
        token_metadata(j, res->creds);
        link_store(j, res->creds, res->expires_at,
                   json_pack("{s:b, s:s}", "verified", 1, "verification", "token request"));
    } else {
        char msg[480];

        (void)snprintf(msg, sizeof msg, "%s did not give latch a token for this authorization: %s",
                       catalog_display_name(j->p), res->message);
        link_answer_failure(j, link_status_for(res->outcome), "token_exchange_failed", msg,
                            res->reason);
    }
    api_resume(c);
    link_job_free(j);
}

/* The provider's refusal (?error=...): in words, with the failure webhook. */
static void
provider_refused(struct link_job *j, const char *error)
{
    char msg[400];
    const char *name = catalog_display_name(j->p);

    if (strcmp(error, "access_denied") == 0) {
        (void)snprintf(msg, sizeof msg,
                       "Access was declined in %s, so nothing was connected. To connect the "
                       "account, start again and allow access.",
                       name);
        link_answer_failure(j, 400, "access_denied", msg, "access_denied");
        return;
    }
    {
        char code[48];
        size_t o = 0;

        /* the code is upstream text: kept to [a-z_] and short */
        for (const char *s = error; *s != '\0' && o + 1 < sizeof code; s++)
            if ((*s >= 'a' && *s <= 'z') || *s == '_')
                code[o++] = *s;
        code[o] = '\0';
        (void)snprintf(
            msg, sizeof msg,
            "%s refused the authorization (%s). Check the app's settings in %s (redirect "
            "URI, scopes) and start again.",
            name, o > 0 ? code : "unknown error", name);
        link_answer_failure(j, 400, "authorization_error", msg, o > 0 ? code : "unknown");
    }
}

void
api_oauth_callback(struct api_ctx *c)
{
    const char *state = http_req_query(c->req, "state");
    const char *code = http_req_query(c->req, "code");
    const char *error = http_req_query(c->req, "error");
    struct store_oauth_state st;
    struct link_job *j = NULL;
    json_t *payload = NULL, *app = NULL;
    struct oauth_cc_input in;
    struct oauth_cc_grant grant;
    struct oauth_cc_result res_err;
    unsigned char hash[32];
    char hex[65];
    char *aad;
    latch_rc rc;

    memset(&st, 0, sizeof st);
    if (state == NULL || state[0] == '\0' || strlen(state) > 256) {
        api_error(c, 400, "invalid_state",
                  "This page needs the state the provider sends back. Start the connection again "
                  "from the app.");
        return;
    }
    vault_index_hash(c->deps->vault, state, hash);
    rc = store_oauth_state_take(c->deps->store, hash, &st);
    if (rc == LATCH_E_NOT_FOUND) {
        api_error(c, 400, "invalid_state",
                  "This authorization is unknown or was already used, so nothing was connected. "
                  "Start the connection again from the app.");
        return;
    }
    if (rc != LATCH_OK) {
        api_store_unavailable(c);
        return;
    }
    if (st.ws_client_id != NULL)
        latch_strlcpy(c->ws_client_id, st.ws_client_id, sizeof c->ws_client_id);
    latch_strlcpy(c->page_key, st.integration, sizeof c->page_key);
    latch_strlcpy(c->page_conn_id, st.connection_id, sizeof c->page_conn_id);
    if (st.expires_at <= latch_now_ms()) {
        char m[200];

        (void)snprintf(m, sizeof m,
                       "This authorization took longer than %d seconds and expired, so nothing "
                       "was connected. Start the connection again from the app.",
                       c->deps->cfg->oauth_state_ttl_s);
        api_error(c, 400, "expired_state", m);
        goto out;
    }
    /* the session it was started with: still there (single use), same environment */
    if (store_session_get_by_hash(c->deps->store, st.session_hash, &c->session) != LATCH_OK ||
        c->session.env_id != st.env_id || c->session.expires_at <= latch_now_ms()) {
        api_error(c, 400, "connect_session_expired",
                  "The connect session this authorization belongs to has ended (used or expired). "
                  "Ask the app for a new connect link.");
        goto out;
    }
    c->env_id = st.env_id;
    c->by_session = true;
    api_op_begin(c, "link");
    for (size_t i = 0; i < 32; i++)
        (void)snprintf(hex + 2 * i, 3, "%02x", hash[i]);
    aad = xasprintf("oauth_states:v1:%s", hex);
    rc = creds_open_aad(c->deps->vault, aad, st.payload_sealed, &payload);
    free(aad);
    if (rc != LATCH_OK) {
        api_error(c, 400, "invalid_state",
                  "This authorization's saved details cannot be read (latch's key changed?). "
                  "Start the connection again from the app.");
        goto out;
    }
    j = xcalloc(1, sizeof *j);
    j->c = c;
    if (store_integration_get(c->deps->store, c->env_id, st.integration, &j->integ) != LATCH_OK ||
        (j->p = catalog_find(c->deps->catalog, j->integ.provider)) == NULL ||
        j->p->auth_mode == NULL || strcmp(j->p->auth_mode, "OAUTH2") != 0 || !j->p->linkable) {
        api_error(c, 400, "unknown_provider_config",
                  "The integration this authorization was for no longer exists or changed. Start "
                  "the connection again from the app.");
        goto out;
    }
    latch_strlcpy(c->page_provider, catalog_display_name(j->p), sizeof c->page_provider);
    j->connection_id = xstrdup(st.connection_id);
    {
        const char *uid = json_string_value(json_object_get(payload, "uid"));

        latch_strlcpy(j->uid, uid != NULL ? uid : "", sizeof j->uid);
    }
    j->existing = json_is_true(json_object_get(payload, "existing"));
    j->cfg = json_deep_copy(json_object_get(payload, "cfg"));
    if (!json_is_object(j->cfg) || j->uid[0] == '\0') {
        api_error(c, 400, "invalid_state", "This authorization's saved details are incomplete.");
        goto out;
    }
    j->stored = oauth_stored;
    api_op_conn(c, j->integ.unique_key, j->integ.provider, j->connection_id);
    if (error != NULL) {
        provider_refused(j, error);
        goto out;
    }
    if (code == NULL || code[0] == '\0' || strlen(code) > LATCH_MAX_TOKEN_LEN) {
        link_answer_failure(j, 400, "missing_code",
                            "The provider came back without an authorization code. Start the "
                            "connection again.",
                            "missing_code");
        goto out;
    }
    app = app_credentials(c, &j->integ);
    if (app == NULL) {
        link_answer_failure(j, 400, "invalid_provider_config",
                            "The integration's OAuth app credentials are gone. Add them again and "
                            "start the connection again.",
                            "missing_app_credentials");
        goto out;
    }
    redirect_metadata(c, j);
    j->client_id = xstrdup(json_string_value(json_object_get(app, "client_id")));
    j->client_secret = xstrdup(json_string_value(json_object_get(app, "client_secret")));
    memset(&in, 0, sizeof in);
    grant.code = code;
    grant.redirect_uri = c->deps->cfg->oauth_callback_url;
    grant.code_verifier = json_string_value(json_object_get(payload, "v"));
    in.provider = j->p;
    in.connection_config = j->cfg;
    in.client_id = j->client_id;
    in.client_secret = j->client_secret;
    in.grant = &grant;
    /* defer first: the exchange may complete (and resume) before this thread goes on */
    api_defer(c);
    if (oauth_cc_exchange(c->deps->oauth_cc, &in, callback_done, j, &res_err) != LATCH_OK) {
        char msg[480];

        (void)snprintf(msg, sizeof msg, "latch could not ask %s for a token: %s",
                       catalog_display_name(j->p), res_err.message);
        link_answer_failure(j, link_status_for(res_err.outcome), "token_exchange_failed", msg,
                            res_err.reason);
        api_resume(c);
        goto out;
    }
    j = NULL; /* owned by the exchange */
out:
    creds_free(payload);
    creds_free(app);
    if (j != NULL)
        link_job_free(j);
    store_oauth_state_clear(&st);
}
