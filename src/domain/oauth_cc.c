#include "domain/oauth_cc.h"

#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

#include "domain/catalog.h"
#include "domain/creds.h"
#include "core/latch_limits.h"
#include "core/log.h"
#include "net/netpolicy.h"
#include "store/store.h"
#include "net/outbound.h"
#include "domain/tmpl.h"
#include "util/b64.h"
#include "util/buf.h"
#include "util/str.h"
#include "util/timefmt.h"
#include "util/xalloc.h"
#include "core/worker.h"
#include "util/clock.h"

/* Largest token lifetime we believe (10 years); anything beyond is treated as garbage. */
#define OCC_MAX_EXPIRES_IN_S (10LL * 365 * 24 * 3600)

static const char *
cfg_lookup(const char *name, void *ud)
{
    const json_t *cfg = ud;
    const char *key = name;

    if (strncmp(name, "connectionConfig.", 17) == 0)
        key = name + 17;
    else if (strncmp(name, "connection_config.", 18) == 0)
        key = name + 18;
    else
        return NULL;
    return json_string_value(json_object_get(cfg, key));
}

void
oauth_cc_request_clear(struct oauth_cc_request *r)
{
    free(r->url);
    if (r->body != NULL) {
        explicit_bzero(r->body, r->body_len);
        free(r->body);
    }
    free(r->content_type);
    if (r->authorization != NULL) {
        explicit_bzero(r->authorization, strlen(r->authorization));
        free(r->authorization);
    }
    memset(r, 0, sizeof *r);
}

static latch_rc
form_add(struct buf *b, const char *k, const char *v)
{
    static const char hex[] = "0123456789ABCDEF";
    latch_rc rc = LATCH_OK;
    const char *parts[2] = {k, v};

    if (b->len > 0)
        rc = buf_append(b, "&", 1);
    for (int p = 0; p < 2 && rc == LATCH_OK; p++) {
        if (p == 1)
            rc = buf_append(b, "=", 1);
        for (const unsigned char *s = (const unsigned char *)parts[p]; *s && rc == LATCH_OK; s++) {
            if ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
                *s == '-' || *s == '.' || *s == '_' || *s == '~') {
                rc = buf_append(b, s, 1);
            } else {
                char e[3] = {'%', hex[*s >> 4], hex[*s & 15]};

                rc = buf_append(b, e, 3);
            }
        }
    }
    return rc;
}

/* "a, b,c" split on commas, trimmed, joined by sep. */
static char *
join_scopes(const char *scopes, const char *sep)
{
    struct buf b;
    const char *p = scopes;

    buf_init(&b, 4096);
    while (*p != '\0') {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        const char *s = p;

        while (n > 0 && (*s == ' ' || *s == '\t')) {
            s++;
            n--;
        }
        while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
            n--;
        if (n > 0) {
            if (b.len > 0)
                (void)buf_puts(&b, sep);
            (void)buf_append(&b, s, n);
        }
        p = end ? end + 1 : p + strlen(p);
    }
    return buf_steal(&b, NULL);
}

latch_rc
oauth_cc_build(const struct oauth_cc_input *in, bool allow_http, struct oauth_cc_request *out,
               struct latch_err *err)
{
    const struct catalog_provider *p = in->provider;
    char url[LATCH_MAX_URL_LEN];
    char host[256];
    struct buf body;
    json_t *jbody = NULL;
    const char *method = p->token_request_auth_method;
    bool json_fmt = p->body_format != NULL && strcmp(p->body_format, "json") == 0;
    const char *scopes = json_string_value(json_object_get(in->connection_config, "oauth_scopes"));
    latch_rc rc;

    memset(out, 0, sizeof *out);
    buf_init(&body, 64 * 1024);
    if (p->token_url == NULL) {
        latch_err_set(err, "The provider %s has no token URL.", p->name);
        rc = LATCH_E_INVAL;
        goto out;
    }
    if (p->body_format != NULL && strcmp(p->body_format, "query") == 0) {
        latch_err_set(err, "Token requests with body_format query are not supported yet.");
        rc = LATCH_E_INVAL;
        goto out;
    }
    rc = tmpl_eval(p->token_url, cfg_lookup, (void *)(uintptr_t)in->connection_config,
                   TMPL_URL_ENCODE, url, sizeof url, err);
    if (rc != LATCH_OK)
        goto out;
    rc = netpolicy_url_host(url, allow_http, host, sizeof host, err);
    if (rc == LATCH_OK)
        rc = netpolicy_check_hostname(host, err);
    if (rc != LATCH_OK)
        goto out;

    if (json_fmt)
        jbody = json_object();
    if (method != NULL && strcmp(method, "basic") == 0) {
        size_t n = strlen(in->client_id) + 1 + strlen(in->client_secret);
        char *pair = xmalloc(n + 1);
        size_t esz = b64_encoded_size(n);
        char *enc = xmalloc(esz);

        (void)snprintf(pair, n + 1, "%s:%s", in->client_id, in->client_secret);
        (void)b64_encode(pair, n, enc, esz);
        out->authorization = xasprintf("Basic %s", enc);
        explicit_bzero(pair, n);
        explicit_bzero(enc, esz);
        free(pair);
        free(enc);
    } else {
        const char *kid = "client_id", *ksec = "client_secret";

        if (method != NULL && strcmp(method, "custom") == 0) {
            kid = "username";
            ksec = "password";
        }
        if (json_fmt) {
            json_object_set_new(jbody, kid, json_string(in->client_id));
            if (in->client_secret[0] != '\0')
                json_object_set_new(jbody, ksec, json_string(in->client_secret));
        } else {
            rc = form_add(&body, kid, in->client_id);
            if (rc == LATCH_OK && in->client_secret[0] != '\0')
                rc = form_add(&body, ksec, in->client_secret);
        }
    }
    for (size_t i = 0; i < p->n_token_params && rc == LATCH_OK; i++) {
        char val[1024];

        rc = tmpl_eval(p->token_params[i].value, cfg_lookup,
                       (void *)(uintptr_t)in->connection_config, 0, val, sizeof val, err);
        if (rc != LATCH_OK)
            break;
        if (json_fmt)
            json_object_set_new(jbody, p->token_params[i].key, json_string(val));
        else
            rc = form_add(&body, p->token_params[i].key, val);
    }
    if (rc == LATCH_OK && scopes != NULL && scopes[0] != '\0') {
        char *joined = join_scopes(scopes, p->scope_separator ? p->scope_separator : " ");

        if (joined[0] != '\0') {
            if (json_fmt)
                json_object_set_new(jbody, "scope", json_string(joined));
            else
                rc = form_add(&body, "scope", joined);
        }
        free(joined);
    }
    if (rc != LATCH_OK)
        goto out;
    if (json_fmt) {
        char *t = json_dumps(jbody, JSON_COMPACT);

        out->body = t != NULL ? t : xstrdup("{}");
        out->body_len = strlen(out->body);
        out->content_type = xstrdup("application/json");
    } else {
        out->body = buf_steal(&body, &out->body_len);
        out->content_type = xstrdup("application/x-www-form-urlencoded");
    }
    out->url = xstrdup(url);
out:
    if (jbody != NULL)
        creds_free(jbody);
    buf_free(&body);
    if (rc != LATCH_OK)
        oauth_cc_request_clear(out);
    return rc;
}

void
oauth_cc_result_clear(struct oauth_cc_result *r)
{
    creds_free(r->creds);
    r->creds = NULL;
}

static void
set_fail(struct oauth_cc_result *out, enum oauth_cc_outcome o, bool terminal, const char *reason,
         const char *msg)
{
    out->outcome = o;
    out->terminal = terminal;
    latch_strlcpy(out->reason, reason, sizeof out->reason);
    latch_strlcpy(out->message, msg, sizeof out->message);
}

/* Copies at most n printable ASCII chars of s (upstream text goes into messages and logs). */
static void
clean_copy(char *dst, size_t dsz, const char *s, size_t n)
{
    size_t o = 0;

    for (size_t i = 0; s != NULL && s[i] != '\0' && i < n && o + 1 < dsz; i++)
        dst[o++] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    dst[o] = '\0';
}

/*
 * The error codes of RFC 6749 (5.2 token endpoint, 4.1.2.1 authorization endpoint). Upstream
 * text reaches API errors, webhooks, the outbox and the connection's stored error only as one of
 * these codes: a token endpoint may quote the request it got (the client secret, form-encoded,
 * JSON-escaped or in a Basic header) in error_description or even in error, and no redaction
 * can know every encoding, so no other upstream text is kept. NULL if code is not one of them.
 */
static const char *
registered_error(const char *code)
{
    static const char *const codes[] = {
        "invalid_request",        "invalid_client",
        "invalid_grant",          "unauthorized_client",
        "invalid_scope",          "access_denied",
        "unsupported_grant_type", "unsupported_response_type",
        "server_error",           "temporarily_unavailable",
    };

    for (size_t i = 0; code != NULL && i < sizeof codes / sizeof codes[0]; i++)
        if (strcmp(code, codes[i]) == 0)
            return codes[i];
    return NULL;
}

static int64_t
parse_retry_after(const char *v)
{
    const char *e = NULL;
    long long s;

    if (v == NULL)
        return 0;
    s = latch_strtonum(v, 0, 3600, &e);
    return e == NULL ? s * 1000 : 0;
}

void
oauth_cc_parse(const struct outbound_resp *resp, const struct oauth_cc_input *in,
               int default_expires_in_s, struct oauth_cc_result *out)
{
    json_t *j = NULL;
    const char *token;
    json_t *ei;
    long long expires_in = default_expires_in_s;
    char msg[320];

    memset(out, 0, sizeof *out);
    out->status = resp->status;
    out->retry_after_ms = parse_retry_after(resp->retry_after);
    if (resp->rc == LATCH_E_TIMEOUT) {
        set_fail(out, OCC_TIMEOUT, false, "timeout",
                 "NinjaOne did not answer in time. Try again in a moment.");
        return;
    }
    if (resp->rc == LATCH_E_DENIED) {
        set_fail(out, OCC_DENIED, true, "denied",
                 "latch's outbound policy refused the token endpoint's address.");
        return;
    }
    if (resp->rc == LATCH_E_TOO_LARGE) {
        set_fail(out, OCC_BAD_RESPONSE, false, "bad_response",
                 "The token endpoint answered with an oversized response.");
        return;
    }
    if (resp->rc != LATCH_OK) {
        set_fail(out, OCC_UNREACHABLE, false, "unreachable",
                 "Could not reach the token endpoint (network or TLS error). Try again.");
        return;
    }
    if (resp->body != NULL && resp->body_len > 0)
        j = json_loadb(resp->body, resp->body_len, 0, NULL);
    if (resp->status < 200 || resp->status >= 300) {
        const char *code = registered_error(json_string_value(json_object_get(j, "error")));

        if (code != NULL &&
            (strcmp(code, "invalid_client") == 0 || strcmp(code, "unauthorized_client") == 0 ||
             strcmp(code, "invalid_grant") == 0 || strcmp(code, "access_denied") == 0)) {
            (void)snprintf(msg, sizeof msg,
                           "The provider rejected the Client ID and Client Secret (%s). Check "
                           "both values and that the instance (region) is where the app was "
                           "created.",
                           code);
            set_fail(out, OCC_INVALID_CLIENT, true, "invalid_client", msg);
        } else if (code != NULL && strcmp(code, "invalid_scope") == 0) {
            const char *sc =
                json_string_value(json_object_get(in->connection_config, "oauth_scopes"));
            char c_sc[120];

            clean_copy(c_sc, sizeof c_sc, sc, 100);
            (void)snprintf(msg, sizeof msg,
                           "The client app is not allowed the requested scopes%s%s%s. Add them "
                           "to the app (Administration > Apps > API) and try again.",
                           sc ? " (" : "", sc ? c_sc : "", sc ? ")" : "");
            set_fail(out, OCC_INVALID_SCOPE, true, "invalid_scope", msg);
        } else {
            bool transient = resp->status >= 500 || resp->status == 429 || resp->status == 408;

            /* error_description and any unregistered code are upstream free text: dropped */
            (void)snprintf(msg, sizeof msg, "The token endpoint answered HTTP %ld%s%s.%s",
                           resp->status, code ? ": " : "", code ? code : "",
                           transient ? " Try again in a moment." : "");
            set_fail(out, OCC_UPSTREAM, !transient, "upstream_error", msg);
        }
        goto out;
    }
    token = json_string_value(json_object_get(j, "access_token"));
    if (token == NULL)
        token = json_string_value(json_object_get(json_object_get(j, "data"), "token"));
    if (token == NULL)
        token = json_string_value(json_object_get(j, "jwt"));
    if (!json_is_object(j) || token == NULL || token[0] == '\0' ||
        strlen(token) > LATCH_MAX_TOKEN_LEN) {
        set_fail(out, OCC_BAD_RESPONSE, false, "bad_response",
                 "The token endpoint answered, but not with a valid token response.");
        goto out;
    }
    ei = json_object_get(j, "expires_in");
    if (json_is_integer(ei)) {
        expires_in = json_integer_value(ei);
    } else if (json_is_real(ei)) {
        double d = json_real_value(ei);

        /* range-check before converting: a double outside long long is undefined behaviour */
        if (d > 0 && d <= (double)OCC_MAX_EXPIRES_IN_S)
            expires_in = (long long)d;
    } else if (json_is_string(ei)) {
        const char *e = NULL;
        long long v = latch_strtonum(json_string_value(ei), 0, OCC_MAX_EXPIRES_IN_S, &e);

        if (e == NULL)
            expires_in = v;
    }
    if (expires_in <= 0 || expires_in > OCC_MAX_EXPIRES_IN_S)
        expires_in = default_expires_in_s;
    out->expires_at = latch_now_ms() + expires_in * 1000;
    {
        char when[40];

        latch_fmt_time(out->expires_at, false, when);
        out->creds = json_pack("{s:s, s:s, s:s, s:s, s:s, s:O}", "type", "OAUTH2_CC", "token",
                               token, "client_id", in->client_id, "client_secret",
                               in->client_secret, "expires_at", when, "raw", j);
    }
    out->outcome = OCC_OK;
    latch_strlcpy(out->reason, "ok", sizeof out->reason);
out:
    creds_free(j);
}

struct oauth_cc {
    struct oauth_cc_opts o;
};

struct oauth_cc *
oauth_cc_new(const struct oauth_cc_opts *o)
{
    struct oauth_cc *oc = xcalloc(1, sizeof *oc);

    oc->o = *o;
    return oc;
}

void
oauth_cc_free(struct oauth_cc *oc)
{
    free(oc);
}

struct exchange_job {
    struct worker *worker;
    oauth_cc_done_fn done;
    void *ud;
    json_t *cfg;
    char *client_id;
    char *client_secret;
    const struct catalog_provider *provider;
    int default_expires_in_s;
    struct oauth_cc_result res;
};

/* Worker thread (or the curl thread when the worker is full): the caller's follow-up. */
static void
exchange_finish(void *ud)
{
    struct exchange_job *j = ud;

    j->done(&j->res, j->ud);
    oauth_cc_result_clear(&j->res);
    json_decref(j->cfg);
    free(j->client_id);
    explicit_bzero(j->client_secret, strlen(j->client_secret));
    free(j->client_secret);
    free(j);
}

/*
 * Curl thread: classify the answer, then hand the caller's follow-up (a store write with an
 * fsync, webhooks) to the worker, so that no other upstream transfer waits for it.
 */
static void
exchange_done(struct outbound_resp *resp, void *ud)
{
    struct exchange_job *j = ud;
    struct oauth_cc_input in = {j->provider, j->cfg, j->client_id, j->client_secret};

    oauth_cc_parse(resp, &in, j->default_expires_in_s, &j->res);
    log_info("token request", "provider=%s outcome=%s status=%ld dur_ms=%.1f", j->provider->name,
             j->res.reason, resp->status, resp->total_time_s * 1000.0);
    outbound_resp_clear(resp);
    worker_run(j->worker, exchange_finish, j);
}

latch_rc
oauth_cc_exchange(struct oauth_cc *oc, const struct oauth_cc_input *in, oauth_cc_done_fn done,
                  void *ud, struct oauth_cc_result *res_err)
{
    struct oauth_cc_request rq;
    struct latch_err err;
    struct outbound_header hdrs[3];
    size_t nh = 0;
    struct outbound_req req;
    struct exchange_job *j;
    latch_rc rc;

    memset(res_err, 0, sizeof *res_err);
    latch_err_clear(&err);
    rc = oauth_cc_build(in, oc->o.allow_http, &rq, &err);
    if (rc != LATCH_OK) {
        set_fail(res_err, OCC_INVALID_INPUT, true, "invalid_input", err.msg);
        return rc;
    }
    hdrs[nh++] = (struct outbound_header){"Content-Type", rq.content_type};
    hdrs[nh++] = (struct outbound_header){"Accept", "application/json"};
    if (rq.authorization != NULL)
        hdrs[nh++] = (struct outbound_header){"Authorization", rq.authorization};
    memset(&req, 0, sizeof req);
    req.method = "POST";
    req.url = rq.url;
    req.headers = hdrs;
    req.n_headers = nh;
    req.body = rq.body;
    req.body_len = rq.body_len;
    req.timeout_ms = oc->o.timeout_ms;
    req.max_response = LATCH_MAX_TOKEN_RESPONSE;
    req.follow_redirects = false;

    j = xcalloc(1, sizeof *j);
    j->worker = oc->o.worker;
    j->done = done;
    j->ud = ud;
    j->cfg = json_deep_copy(in->connection_config);
    j->client_id = xstrdup(in->client_id);
    j->client_secret = xstrdup(in->client_secret);
    j->provider = in->provider;
    j->default_expires_in_s = in->provider->default_expires_in_s > 0
                                  ? in->provider->default_expires_in_s
                                  : oc->o.default_expires_in_s;
    rc = outbound_submit(oc->o.outbound, &req, exchange_done, j);
    oauth_cc_request_clear(&rq);
    if (rc != LATCH_OK) {
        json_decref(j->cfg);
        free(j->client_id);
        explicit_bzero(j->client_secret, strlen(j->client_secret));
        free(j->client_secret);
        free(j);
        set_fail(res_err, rc == LATCH_E_BUSY ? OCC_UNREACHABLE : OCC_INVALID_INPUT,
                 rc != LATCH_E_BUSY, rc == LATCH_E_BUSY ? "busy" : "invalid_input",
                 rc == LATCH_E_BUSY ? "latch is too busy to reach the provider; try again."
                                    : "The token request could not be built.");
    }
    return rc;
}
