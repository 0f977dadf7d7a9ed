#include "domain/oauth_cc.h"

#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "domain/catalog.h"
#include "domain/creds.h"
#include "domain/proxyauth.h"
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

struct cfg_ctx {
    const struct catalog_provider *p;
    const struct oauth_cc_input *in;
    bool url; /* the template is the token URL: values must fit where they land */
    bool bad;
    struct latch_err err;
};

/* ${credentials.x} (and the shorthands): the user's value, else the field's hidden default. */
static const char *
cred_lookup(struct cfg_ctx *x, const char *key)
{
    const struct catalog_field *f = catalog_find_field(x->p->credentials, x->p->n_credentials, key);
    const char *v = json_string_value(json_object_get(x->in->credentials, key));

    if (x->in->credentials == NULL) {
        if (strcmp(key, "client_id") == 0)
            v = x->in->client_id;
        else if (strcmp(key, "client_secret") == 0)
            v = x->in->client_secret;
    }
    if ((v == NULL || v[0] == '\0') && f != NULL && f->default_value != NULL)
        return f->default_value;
    if (v == NULL || v[0] == '\0')
        return NULL;
    if (f != NULL && x->url && catalog_field_validate_place(f, v, &x->err) != LATCH_OK) {
        x->bad = true;
        return NULL;
    }
    return v;
}

static const char *
cfg_lookup(const char *name, void *ud)
{
    struct cfg_ctx *x = ud;
    const char *key = name;
    const struct catalog_field *f;
    const char *v;

    if (x->bad)
        return NULL;
    if (strncmp(name, "credentials.", 12) == 0)
        return cred_lookup(x, name + 12);
    if (strcmp(name, "apiKey") == 0 || strcmp(name, "username") == 0 ||
        strcmp(name, "password") == 0)
        return cred_lookup(x, name);
    if (strncmp(name, "connectionConfig.", 17) == 0)
        key = name + 17;
    else if (strncmp(name, "connection_config.", 18) == 0)
        key = name + 18;
    else
        return NULL;
    v = json_string_value(json_object_get(x->in->connection_config, key));
    if (v == NULL)
        return NULL;
    f = catalog_find_field(x->p->connection_config, x->p->n_connection_config, key);
    if (f != NULL) {
        /* pattern, enum, format and the shape of where it lands (host, path) */
        if (catalog_field_validate(f, v, &x->err) != LATCH_OK) {
            x->bad = true;
            return NULL;
        }
    } else if (x->url && strpbrk(v, "/\\?#@%: \t\r\n") != NULL) {
        /* an undeclared value (a token response's metadata) never adds a host or path part */
        latch_err_set(&x->err, "The connection's %s cannot be placed in the token URL.", key);
        x->bad = true;
        return NULL;
    }
    return v;
}

/*
 * Evaluates one template of the token request. *absent (when not NULL) is set instead of failing
 * when a variable has no value: Nango leaves such a parameter or header out.
 */
static latch_rc
cfg_eval(const struct oauth_cc_input *in, const char *tmpl, bool url, char *out, size_t out_size,
         bool *absent, struct latch_err *err)
{
    struct cfg_ctx x = {in->provider, in, url, false, {{0}}};
    latch_rc rc = tmpl_eval(tmpl, cfg_lookup, &x,
                            url ? TMPL_URL_ENCODE | TMPL_URL_RAW_AUTHORITY : 0, out, out_size, err);

    if (x.bad) {
        latch_err_set(err, "%s", x.err.msg);
        explicit_bzero(out, out_size);
        return LATCH_E_INVAL;
    }
    if (absent != NULL) {
        *absent = rc != LATCH_OK && strncmp(err->msg, "missing parameter", 17) == 0;
        if (*absent)
            return LATCH_OK;
    }
    return rc;
}

/* Evaluates every string leaf of a nested token parameter in place; absent ones are removed. */
static latch_rc
eval_object(const struct oauth_cc_input *in, json_t *obj, int depth, struct latch_err *err)
{
    const char *k;
    json_t *v;
    void *tmp;

    if (depth > 8) {
        latch_err_set(err, "A token parameter is nested too deeply.");
        return LATCH_E_INVAL;
    }
    json_object_foreach_safe(obj, tmp, k, v)
    {
        latch_rc rc = LATCH_OK;

        if (json_is_object(v)) {
            rc = eval_object(in, v, depth + 1, err);
        } else if (json_is_string(v)) {
            char val[1024];
            bool absent = false;

            rc = cfg_eval(in, json_string_value(v), false, val, sizeof val, &absent, err);
            if (rc == LATCH_OK && absent)
                json_object_del(obj, k);
            else if (rc == LATCH_OK)
                json_object_set_new(obj, k, json_string(val));
            explicit_bzero(val, sizeof val);
        }
        if (rc != LATCH_OK)
            return rc;
    }
    return LATCH_OK;
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
    for (size_t i = 0; i < r->n_headers; i++) {
        free(r->hnames[i]);
        explicit_bzero(r->hvalues[i], strlen(r->hvalues[i]));
        free(r->hvalues[i]);
    }
    memset(r, 0, sizeof *r);
}

latch_rc
oauth_cc_eval(const struct oauth_cc_input *in, const char *tmpl, bool url, char *out,
              size_t out_size, bool *absent, struct latch_err *err)
{
    return cfg_eval(in, tmpl, url, out, out_size, absent, err);
}

latch_rc
oauth_cc_form_add(struct buf *b, const char *k, const char *v)
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

char *
oauth_cc_join_scopes(const char *scopes, const char *sep)
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

static bool
has_token_param(const struct catalog_provider *p, const char *k)
{
    for (size_t i = 0; i < p->n_token_params; i++)
        if (strcmp(p->token_params[i].key, k) == 0)
            return true;
    return false;
}

/* OAUTH2: the authorization-code grant's own parameters (jbody for JSON, else form). */
static latch_rc
add_grant(const struct oauth_cc_input *in, json_t *jbody, struct buf *form)
{
    const struct oauth_cc_grant *g = in->grant;
    const char *kv[8];
    size_t n = 0;
    latch_rc rc = LATCH_OK;

    if (!has_token_param(in->provider, "grant_type")) {
        kv[n++] = "grant_type";
        kv[n++] = "authorization_code";
    }
    kv[n++] = "code";
    kv[n++] = g->code;
    kv[n++] = "redirect_uri";
    kv[n++] = g->redirect_uri;
    if (g->code_verifier != NULL) {
        kv[n++] = "code_verifier";
        kv[n++] = g->code_verifier;
    }
    for (size_t i = 0; i + 1 < n && rc == LATCH_OK; i += 2) {
        if (jbody != NULL)
            json_object_set_new(jbody, kv[i], json_string(kv[i + 1]));
        else
            rc = oauth_cc_form_add(form, kv[i], kv[i + 1]);
    }
    return rc;
}

/*
 * Parameters a refresh sets itself (grant_type, refresh_token) or that belong to the code
 * exchange only (token_params used as the fallback for refresh_params).
 */
static bool
refresh_param_skipped(const char *key)
{
    static const char *const skip[] = {"grant_type", "refresh_token", "code", "redirect_uri",
                                       "code_verifier"};

    for (size_t i = 0; i < sizeof skip / sizeof skip[0]; i++)
        if (strcmp(key, skip[i]) == 0)
            return true;
    return false;
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
    bool refresh = in->refresh_token != NULL;
    bool two_step = !refresh && p->auth_mode != NULL && strcmp(p->auth_mode, "TWO_STEP") == 0;
    const struct catalog_kv *params = p->token_params;
    size_t n_params = p->n_token_params;
    const char *url_tmpl = p->token_url;
    /* Nango's TWO_STEP bodies are JSON unless body_format says form */
    bool form_fmt = p->body_format != NULL && strcmp(p->body_format, "form") == 0;
    const char *scopes = json_string_value(json_object_get(in->connection_config, "oauth_scopes"));
    latch_rc rc;

    memset(out, 0, sizeof *out);
    buf_init(&body, 64 * 1024);
    if (refresh) {
        if (p->refresh_url != NULL)
            url_tmpl = p->refresh_url;
        if (p->n_refresh_params > 0) {
            params = p->refresh_params;
            n_params = p->n_refresh_params;
        }
        scopes = NULL; /* a refresh keeps the granted scopes */
    }
    if (url_tmpl == NULL) {
        latch_err_set(err, "The provider %s has no token URL.", p->name);
        rc = LATCH_E_INVAL;
        goto out;
    }
    if (p->body_format != NULL && strcmp(p->body_format, "query") == 0) {
        latch_err_set(err, "Token requests with body_format query are not supported yet.");
        rc = LATCH_E_INVAL;
        goto out;
    }
    rc = cfg_eval(in, url_tmpl, true, url, sizeof url, NULL, err);
    if (rc != LATCH_OK)
        goto out;
    rc = netpolicy_url_host(url, allow_http, host, sizeof host, err);
    if (rc == LATCH_OK)
        rc = netpolicy_check_hostname(host, err);
    if (rc != LATCH_OK)
        goto out;

    /* token_headers: evaluated first, a JSON content-type among them makes the body JSON */
    for (size_t i = 0; i < p->n_token_headers && rc == LATCH_OK; i++) {
        char val[2048];
        bool absent = false;

        rc = cfg_eval(in, p->token_headers[i].value, false, val, sizeof val, &absent, err);
        if (rc != LATCH_OK || absent)
            continue;
        if (!proxy_auth_header_value_ok(val) || out->n_headers >= OCC_MAX_TOKEN_HEADERS) {
            latch_err_set(err, "The token request header %s cannot be sent.",
                          p->token_headers[i].key);
            explicit_bzero(val, sizeof val);
            rc = LATCH_E_INVAL;
            break;
        }
        if (strcasecmp(p->token_headers[i].key, "content-type") == 0 && strstr(val, "json") != NULL)
            json_fmt = true;
        if (strcasecmp(p->token_headers[i].key, "content-type") == 0 &&
            strstr(val, "x-www-form-urlencoded") != NULL)
            json_fmt = false;
        out->hnames[out->n_headers] = xstrdup(p->token_headers[i].key);
        out->hvalues[out->n_headers] = xstrdup(val);
        out->n_headers++;
        explicit_bzero(val, sizeof val);
    }
    if (rc != LATCH_OK)
        goto out;
    if (two_step && !form_fmt)
        json_fmt = true;
    for (size_t i = 0; i < n_params; i++)
        if (params[i].value != NULL && params[i].value[0] == '{')
            json_fmt = true; /* a nested parameter object (tableau's credentials) */
    if (json_fmt)
        jbody = json_object();
    if (refresh) {
        if (json_fmt) {
            json_object_set_new(jbody, "grant_type", json_string("refresh_token"));
            json_object_set_new(jbody, "refresh_token", json_string(in->refresh_token));
        } else {
            rc = oauth_cc_form_add(&body, "grant_type", "refresh_token");
            if (rc == LATCH_OK)
                rc = oauth_cc_form_add(&body, "refresh_token", in->refresh_token);
        }
    }
    if (two_step) {
        /* TWO_STEP: the body is token_params alone (they name the user's credentials) */
    } else if ((method != NULL && strcmp(method, "basic") == 0) ||
               ((in->grant != NULL || refresh) && p->authorization_method != NULL &&
                strcmp(p->authorization_method, "header") == 0)) {
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
            rc = oauth_cc_form_add(&body, kid, in->client_id);
            if (rc == LATCH_OK && in->client_secret[0] != '\0')
                rc = oauth_cc_form_add(&body, ksec, in->client_secret);
        }
    }
    for (size_t i = 0; i < n_params && rc == LATCH_OK; i++) {
        char val[1024];

        bool absent = false;

        if (refresh && refresh_param_skipped(params[i].key))
            continue;

        if (json_fmt && params[i].value != NULL && params[i].value[0] == '{') {
            json_t *obj = json_loads(params[i].value, 0, NULL);

            rc = json_is_object(obj) ? eval_object(in, obj, 0, err) : LATCH_E_INVAL;
            if (rc == LATCH_OK)
                json_object_set(jbody, params[i].key, obj);
            else if (!json_is_object(obj))
                latch_err_set(err, "The token parameter %s is not valid JSON.", params[i].key);
            creds_free(obj);
            if (rc != LATCH_OK)
                break;
            continue;
        }
        rc = cfg_eval(in, params[i].value, false, val, sizeof val, &absent, err);
        if (rc != LATCH_OK)
            break;
        if (absent)
            continue;
        if (json_fmt)
            json_object_set_new(jbody, params[i].key, json_string(val));
        else
            rc = oauth_cc_form_add(&body, params[i].key, val);
    }
    if (rc == LATCH_OK && in->grant != NULL)
        rc = add_grant(in, json_fmt ? jbody : NULL, &body);
    if (rc == LATCH_OK && in->grant == NULL && scopes != NULL && scopes[0] != '\0') {
        char *joined = oauth_cc_join_scopes(scopes, p->scope_separator ? p->scope_separator : " ");

        if (joined[0] != '\0') {
            if (json_fmt)
                json_object_set_new(jbody, "scope", json_string(joined));
            else
                rc = oauth_cc_form_add(&body, "scope", joined);
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

json_t *
oauth_cc_json_path(json_t *j, const char *path)
{
    char part[128];

    while (j != NULL && path != NULL && *path != '\0') {
        const char *dot = strchr(path, '.');
        size_t n = dot != NULL ? (size_t)(dot - path) : strlen(path);

        if (n == 0 || n >= sizeof part)
            return NULL;
        memcpy(part, path, n);
        part[n] = '\0';
        j = json_object_get(j, part);
        path = dot != NULL ? dot + 1 : NULL;
    }
    return j;
}

/* A number as JSON integer, real or decimal string; false when none in 0..max. */
static bool
json_number(json_t *v, long long max, long long *out)
{
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
    } else if (json_is_real(v)) {
        double d = json_real_value(v);

        /* range-check before converting: a double outside long long is undefined behaviour */
        if (!(d > 0 && d <= (double)max))
            return false;
        *out = (long long)d;
    } else if (json_is_string(v)) {
        const char *e = NULL;

        *out = latch_strtonum(json_string_value(v), 0, max, &e);
        if (e != NULL)
            return false;
    } else {
        return false;
    }
    return *out > 0 && *out <= max;
}

/*
 * When the token expires (ms since the epoch), from the provider's token_response: seconds (or
 * milliseconds with expires_in_unit) to live, or with token_expiration_strategy expireAt a date
 * (ISO 8601) or an epoch time; 0 when the answer says nothing usable.
 */
static int64_t
token_expiry(const struct catalog_provider *p, json_t *j, int64_t now)
{
    json_t *v = oauth_cc_json_path(
        j, p->token_response_expiration != NULL ? p->token_response_expiration : "expires_in");
    bool ms = p->expires_in_unit != NULL && strcmp(p->expires_in_unit, "milliseconds") == 0;
    long long n;

    if (p->token_expiration_strategy != NULL &&
        strcmp(p->token_expiration_strategy, "expireAt") == 0) {
        if (json_is_string(v)) {
            struct tm tm;
            const char *r;

            memset(&tm, 0, sizeof tm);
            r = strptime(json_string_value(v), "%Y-%m-%dT%H:%M:%S", &tm);
            if (r == NULL)
                r = strptime(json_string_value(v), "%Y-%m-%d %H:%M:%S", &tm);
            if (r != NULL)
                return (int64_t)timegm(&tm) * 1000;
        }
        if (json_number(v, 100000000000000LL, &n))
            return n > 100000000000LL ? n : n * 1000; /* ms or s since the epoch */
        return 0;
    }
    if (!json_number(v, ms ? OCC_MAX_EXPIRES_IN_S * 1000 : OCC_MAX_EXPIRES_IN_S, &n))
        return 0;
    return now + (ms ? n : n * 1000);
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
    long long expires_in = default_expires_in_s;
    char msg[320];

    memset(out, 0, sizeof *out);
    out->status = resp->status;
    out->retry_after_ms = parse_retry_after(resp->retry_after);
    if (resp->rc == LATCH_E_TIMEOUT) {
        (void)snprintf(msg, sizeof msg, "%s did not answer in time. Try again in a moment.",
                       catalog_display_name(in->provider));
        set_fail(out, OCC_TIMEOUT, false, "timeout", msg);
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
        /* a busy or failing server is transient whatever its body says */
        bool busy = resp->status >= 500 || resp->status == 429 || resp->status == 408;

        if (busy && in->refresh_token != NULL)
            code = NULL;
        if (in->refresh_token != NULL && code != NULL &&
            (strcmp(code, "invalid_grant") == 0 || strcmp(code, "access_denied") == 0)) {
            (void)snprintf(msg, sizeof msg,
                           "%s refused the refresh token (%s): it was revoked, has expired or "
                           "was already used. The user must reconnect the account.",
                           catalog_display_name(in->provider), code);
            set_fail(out, OCC_INVALID_GRANT, true, "invalid_grant", msg);
            goto out;
        }
        if (in->refresh_token != NULL && code != NULL &&
            (strcmp(code, "invalid_client") == 0 || strcmp(code, "unauthorized_client") == 0)) {
            (void)snprintf(msg, sizeof msg,
                           "%s rejected the integration's Client ID and Client Secret (%s) when "
                           "refreshing the token. Check the app credentials of the integration, "
                           "then have the user reconnect the account.",
                           catalog_display_name(in->provider), code);
            set_fail(out, OCC_INVALID_CLIENT, true, "invalid_client", msg);
            goto out;
        }
        if (code != NULL && in->grant != NULL && strcmp(code, "invalid_grant") == 0) {
            (void)snprintf(msg, sizeof msg,
                           "%s refused the authorization code (invalid_grant): it was already "
                           "used, has expired, or was issued for another redirect URI. Start the "
                           "connection again.",
                           catalog_display_name(in->provider));
            set_fail(out, OCC_INVALID_CLIENT, true, "invalid_grant", msg);
        } else if (code != NULL &&
                   (strcmp(code, "invalid_client") == 0 ||
                    strcmp(code, "unauthorized_client") == 0 ||
                    strcmp(code, "invalid_grant") == 0 || strcmp(code, "access_denied") == 0)) {
            if (in->credentials != NULL)
                (void)snprintf(msg, sizeof msg,
                               "%s rejected the credentials (%s). Check each value and the "
                               "server or region they belong to.",
                               catalog_display_name(in->provider), code);
            else
                (void)snprintf(msg, sizeof msg,
                               "%s rejected the Client ID and Client Secret (%s). Check "
                               "both values and that the instance (region) is where the app was "
                               "created.",
                               catalog_display_name(in->provider), code);
            set_fail(out, OCC_INVALID_CLIENT, true, "invalid_client", msg);
        } else if (code != NULL && strcmp(code, "invalid_scope") == 0) {
            const char *sc =
                json_string_value(json_object_get(in->connection_config, "oauth_scopes"));
            char c_sc[120];

            clean_copy(c_sc, sizeof c_sc, sc, 100);
            (void)snprintf(msg, sizeof msg,
                           "The client app is not allowed the requested scopes%s%s%s. Add them "
                           "to the app in %s and try again.",
                           sc ? " (" : "", sc ? c_sc : "", sc ? ")" : "",
                           catalog_display_name(in->provider));
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
    if (in->provider->token_response_token != NULL) {
        token = json_string_value(oauth_cc_json_path(j, in->provider->token_response_token));
    } else {
        token = json_string_value(json_object_get(j, "access_token"));
        if (token == NULL)
            token = json_string_value(json_object_get(json_object_get(j, "data"), "token"));
        if (token == NULL)
            token = json_string_value(json_object_get(j, "jwt"));
    }
    if (!json_is_object(j) || token == NULL || token[0] == '\0' ||
        strlen(token) > LATCH_MAX_TOKEN_LEN) {
        set_fail(out, OCC_BAD_RESPONSE, false, "bad_response",
                 "The token endpoint answered, but not with a valid token response.");
        goto out;
    }
    {
        int64_t now_ms = latch_now_ms();
        char when[40];

        out->expires_at = token_expiry(in->provider, j, now_ms);
        if (out->expires_at <= now_ms || out->expires_at > now_ms + OCC_MAX_EXPIRES_IN_S * 1000)
            out->expires_at = now_ms + expires_in * 1000;
        latch_fmt_time(out->expires_at, false, when);
        if (in->grant != NULL || in->refresh_token != NULL) {
            /* Nango's OAuth2Credentials: no expires_at when the answer names no lifetime; a
               refresh carries the stored object over, and its refresh token unless rotated */
            const char *rt = json_string_value(json_object_get(j, "refresh_token"));
            bool rt_ok = rt != NULL && rt[0] != '\0' && strlen(rt) <= LATCH_MAX_TOKEN_LEN;

            out->expires_at = token_expiry(in->provider, j, now_ms);
            if (out->expires_at > now_ms + OCC_MAX_EXPIRES_IN_S * 1000)
                out->expires_at = 0;
            if (out->expires_at <= now_ms && in->provider->default_expires_in_s > 0)
                out->expires_at = now_ms + (int64_t)in->provider->default_expires_in_s * 1000;
            out->creds = in->refresh_token != NULL && json_is_object(in->prior)
                             ? json_deep_copy(in->prior)
                             : json_object();
            json_object_set_new(out->creds, "type", json_string("OAUTH2"));
            json_object_set_new(out->creds, "access_token", json_string(token));
            json_object_set(out->creds, "raw", j);
            out->rotated = in->refresh_token != NULL && rt_ok;
            if (rt_ok)
                json_object_set_new(out->creds, "refresh_token", json_string(rt));
            else if (in->refresh_token != NULL)
                json_object_set_new(out->creds, "refresh_token", json_string(in->refresh_token));
            json_object_del(out->creds, "expires_at");
            if (out->expires_at > now_ms) {
                latch_fmt_time(out->expires_at, false, when);
                json_object_set_new(out->creds, "expires_at", json_string(when));
            } else {
                out->expires_at = 0;
            }
        } else if (in->credentials != NULL) {
            /* Nango's TwoStepCredentials: the user's fields, the token, expires_at, raw */
            const char *k;
            json_t *v;

            out->creds = json_object();
            json_object_foreach((json_t *)(uintptr_t)in->credentials, k, v)
            {
                if (json_is_string(v))
                    json_object_set(out->creds, k, v);
            }
            json_object_set_new(out->creds, "type", json_string("TWO_STEP"));
            json_object_set_new(out->creds, "token", json_string(token));
            json_object_set_new(out->creds, "expires_at", json_string(when));
            json_object_set(out->creds, "raw", j);
        } else {
            out->creds = json_pack("{s:s, s:s, s:s, s:s, s:s, s:O}", "type", "OAUTH2_CC", "token",
                                   token, "client_id", in->client_id, "client_secret",
                                   in->client_secret, "expires_at", when, "raw", j);
        }
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
    json_t *credentials;         /* TWO_STEP: a copy of the user's fields (creds_free), else NULL */
    struct oauth_cc_grant grant; /* OAUTH2: owned copies (has_grant) */
    char *refresh_token;         /* OAUTH2 refresh: a copy (wiped), else NULL */
    json_t *prior;               /* OAUTH2 refresh: a copy of the stored credentials */
    bool has_grant;
    const struct catalog_provider *provider;
    int default_expires_in_s;
    struct oauth_cc_result res;
};

/* Worker thread (or the curl thread when the worker is full): the caller's follow-up. */
/* Releases a job and wipes the secrets it holds (its result is cleared by the caller). */
static void
exchange_job_free(struct exchange_job *j)
{
    json_decref(j->cfg);
    free(j->client_id);
    explicit_bzero(j->client_secret, strlen(j->client_secret));
    free(j->client_secret);
    creds_free(j->credentials);
    if (j->refresh_token != NULL)
        explicit_bzero(j->refresh_token, strlen(j->refresh_token));
    free(j->refresh_token);
    creds_free(j->prior);
    if (j->has_grant) {
        explicit_bzero((char *)(uintptr_t)j->grant.code, strlen(j->grant.code));
        free((char *)(uintptr_t)j->grant.code);
        free((char *)(uintptr_t)j->grant.redirect_uri);
        if (j->grant.code_verifier != NULL) {
            explicit_bzero((char *)(uintptr_t)j->grant.code_verifier,
                           strlen(j->grant.code_verifier));
            free((char *)(uintptr_t)j->grant.code_verifier);
        }
    }
    free(j);
}

static void
exchange_finish(void *ud)
{
    struct exchange_job *j = ud;

    j->done(&j->res, j->ud);
    oauth_cc_result_clear(&j->res);
    exchange_job_free(j);
}

/*
 * Curl thread: classify the answer, then hand the caller's follow-up (a store write with an
 * fsync, webhooks) to the worker, so that no other upstream transfer waits for it.
 */
static void
exchange_done(struct outbound_resp *resp, void *ud)
{
    struct exchange_job *j = ud;
    struct oauth_cc_input in = {
        j->provider,    j->cfg,           j->client_id, j->client_secret,
        j->credentials, j->refresh_token, j->prior,     j->has_grant ? &j->grant : NULL};

    oauth_cc_parse(resp, &in, j->default_expires_in_s, &j->res);
    log_info("token request", "provider=%s outcome=%s status=%ld dur_ms=%.1f", j->provider->name,
             j->res.reason, resp->status, resp->total_time_s * 1000.0);
    outbound_resp_clear(resp);
    worker_run(j->worker, exchange_finish, j);
}

static bool
req_has_header(const struct oauth_cc_request *rq, const char *name)
{
    for (size_t i = 0; i < rq->n_headers; i++)
        if (strcasecmp(rq->hnames[i], name) == 0)
            return true;
    return false;
}

latch_rc
oauth_cc_exchange(struct oauth_cc *oc, const struct oauth_cc_input *in, oauth_cc_done_fn done,
                  void *ud, struct oauth_cc_result *res_err)
{
    struct oauth_cc_request rq;
    struct latch_err err;
    struct outbound_header hdrs[3 + OCC_MAX_TOKEN_HEADERS];
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
    /* the provider's token_headers win over latch's defaults of the same name */
    if (!req_has_header(&rq, "content-type"))
        hdrs[nh++] = (struct outbound_header){"Content-Type", rq.content_type};
    if (!req_has_header(&rq, "accept"))
        hdrs[nh++] = (struct outbound_header){"Accept", "application/json"};
    if (rq.authorization != NULL && !req_has_header(&rq, "authorization"))
        hdrs[nh++] = (struct outbound_header){"Authorization", rq.authorization};
    for (size_t i = 0; i < rq.n_headers; i++)
        hdrs[nh++] = (struct outbound_header){rq.hnames[i], rq.hvalues[i]};
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
    j->credentials = in->credentials != NULL ? json_deep_copy(in->credentials) : NULL;
    j->refresh_token = in->refresh_token != NULL ? xstrdup(in->refresh_token) : NULL;
    j->prior = in->prior != NULL ? json_deep_copy(in->prior) : NULL;
    if (in->grant != NULL) {
        j->has_grant = true;
        j->grant.code = xstrdup(in->grant->code);
        j->grant.redirect_uri = xstrdup(in->grant->redirect_uri);
        j->grant.code_verifier =
            in->grant->code_verifier != NULL ? xstrdup(in->grant->code_verifier) : NULL;
    }
    j->provider = in->provider;
    j->default_expires_in_s = in->provider->default_expires_in_s > 0
                                  ? in->provider->default_expires_in_s
                                  : oc->o.default_expires_in_s;
    rc = outbound_submit(oc->o.outbound, &req, exchange_done, j);
    oauth_cc_request_clear(&rq);
    if (rc != LATCH_OK) {
        exchange_job_free(j);
        set_fail(res_err, rc == LATCH_E_BUSY ? OCC_UNREACHABLE : OCC_INVALID_INPUT,
                 rc != LATCH_E_BUSY, rc == LATCH_E_BUSY ? "busy" : "invalid_input",
                 rc == LATCH_E_BUSY ? "latch is too busy to reach the provider; try again."
                                    : "The token request could not be built.");
    }
    return rc;
}
