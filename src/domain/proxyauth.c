/*
 * proxyauth.c - the provider's own templates applied to a request (see proxyauth.h).
 *
 * Template inputs are looked up through pa_lookup, which is also where they are checked: a
 * connection_config value must belong to a declared field and pass that field's validation
 * (an undeclared key never shapes a request), a credential must be free of control characters.
 * A value that fails makes the whole build fail with the field's message, before any socket.
 */
#include "domain/proxyauth.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/latch_limits.h"
#include "domain/catalog.h"
#include "domain/tmpl.h"
#include "net/netpolicy.h"
#include "util/b64.h"
#include "util/buf.h"
#include "util/xalloc.h"

#define PA_MAX_VALUE 8192

struct pa_ctx {
    const struct catalog_provider *p;
    const json_t *cfg;
    const json_t *creds;
    bool bad;
    struct latch_err err;
};

bool
proxy_auth_header_value_ok(const char *v)
{
    for (const unsigned char *s = (const unsigned char *)v; *s != '\0'; s++)
        if ((*s < 0x20 && *s != '\t') || *s == 0x7f)
            return false;
    return true;
}

static bool
mode_is(const struct catalog_provider *p, const char *m)
{
    return p->auth_mode != NULL && strcmp(p->auth_mode, m) == 0;
}

static const char *
cfg_value(struct pa_ctx *x, const char *key)
{
    const struct catalog_field *f =
        catalog_find_field(x->p->connection_config, x->p->n_connection_config, key);
    const char *v;

    if (f == NULL)
        return NULL; /* undeclared keys never shape a request */
    v = json_string_value(json_object_get(x->cfg, key));
    if ((v == NULL || v[0] == '\0') && f->default_value != NULL)
        return f->default_value; /* hidden default values */
    if (v == NULL || v[0] == '\0')
        return NULL;
    if (catalog_field_validate(f, v, &x->err) != LATCH_OK) {
        x->bad = true;
        return NULL;
    }
    return v;
}

static const char *
cred_value(struct pa_ctx *x, const char *key)
{
    const struct catalog_field *f = catalog_find_field(x->p->credentials, x->p->n_credentials, key);
    const char *v = json_string_value(json_object_get(x->creds, key));

    if ((v == NULL || v[0] == '\0') && f != NULL && f->default_value != NULL)
        return f->default_value;
    if (v == NULL || v[0] == '\0')
        return NULL;
    if (strlen(v) > PA_MAX_VALUE || !proxy_auth_header_value_ok(v)) {
        latch_err_set(&x->err, "The stored %s contains characters that cannot be sent.",
                      f != NULL && f->title != NULL && f->title[0] ? f->title : key);
        x->bad = true;
        return NULL;
    }
    /* a credential the URL templates use (telegram's bot${apiKey}) must fit its place there */
    if (f != NULL && f->lands != 0 && catalog_field_validate(f, v, &x->err) != LATCH_OK) {
        x->bad = true;
        return NULL;
    }
    return v;
}

static const char *
pa_lookup(const char *name, void *ud)
{
    struct pa_ctx *x = ud;

    if (x->bad)
        return NULL;
    if (strncmp(name, "connectionConfig.", 17) == 0)
        return cfg_value(x, name + 17);
    if (strncmp(name, "credentials.", 12) == 0)
        return cred_value(x, name + 12);
    if (strcmp(name, "apiKey") == 0 || strcmp(name, "username") == 0 ||
        strcmp(name, "password") == 0)
        return cred_value(x, name);
    if (strcmp(name, "accessToken") == 0 || strcmp(name, "access_token") == 0) {
        const char *t = cred_value(x, "token");

        return t != NULL ? t : cred_value(x, "access_token");
    }
    return NULL;
}

static latch_rc
eval(struct pa_ctx *x, const char *tmpl, unsigned flags, char *out, size_t out_size,
     struct latch_err *err)
{
    latch_rc rc;

    x->bad = false;
    latch_err_clear(&x->err);
    rc = tmpl_eval(tmpl, pa_lookup, x, flags, out, out_size, err);
    if (x->bad) {
        latch_err_set(err, "%s", x->err.msg);
        explicit_bzero(out, out_size);
        return LATCH_E_INVAL;
    }
    return rc;
}

latch_rc
proxy_auth_eval(const struct catalog_provider *p, const json_t *cfg, const json_t *creds,
                const char *tmpl, unsigned flags, char *out, size_t out_size, struct latch_err *err)
{
    struct pa_ctx x = {p, cfg, creds, false, {{0}}};

    return eval(&x, tmpl, flags, out, out_size, err);
}

void
proxy_auth_clear(struct proxy_auth *a)
{
    free(a->base_url);
    for (size_t i = 0; i < a->n_headers; i++) {
        free(a->names[i]);
        explicit_bzero(a->values[i], strlen(a->values[i]));
        free(a->values[i]);
    }
    if (a->query != NULL) {
        explicit_bzero(a->query, strlen(a->query));
        free(a->query);
    }
    memset(a, 0, sizeof *a);
}

/* Nango's TWO_STEP: no default Bearer when a proxy header carries ${accessToken} itself. */
static bool
uses_access_token(const struct catalog_provider *p)
{
    for (size_t i = 0; i < p->n_proxy_headers; i++)
        if (strstr(p->proxy_headers[i].value, "${accessToken}") != NULL)
            return true;
    return false;
}

static bool
header_name_ok(const char *n)
{
    if (n == NULL || n[0] == '\0' || strlen(n) > 128)
        return false;
    for (const char *s = n; *s != '\0'; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              strchr("!#$%&'*+-.^_`|~", *s) != NULL))
            return false;
    return true;
}

static latch_rc
add_header(struct proxy_auth *a, const char *name, const char *value, struct latch_err *err)
{
    if (!header_name_ok(name)) {
        latch_err_set(err, "The provider definition has an invalid header name.");
        return LATCH_E_INVAL;
    }
    if (!proxy_auth_header_value_ok(value)) {
        latch_err_set(err, "The %s header would contain a line break or control character.", name);
        return LATCH_E_INVAL;
    }
    if (a->n_headers >= PROXY_AUTH_MAX_HEADERS) {
        latch_err_set(err, "The provider definition has too many headers.");
        return LATCH_E_TOO_LARGE;
    }
    a->names[a->n_headers] = xstrdup(name);
    a->values[a->n_headers] = xstrdup(value);
    a->n_headers++;
    return LATCH_OK;
}

static void
url_encode_to(struct buf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";

    for (const unsigned char *c = (const unsigned char *)s; *c != '\0'; c++) {
        if ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
            *c == '-' || *c == '.' || *c == '_' || *c == '~') {
            (void)buf_append(b, c, 1);
        } else {
            char e[3] = {'%', hex[*c >> 4], hex[*c & 15]};

            (void)buf_append(b, e, 3);
        }
    }
}

/* The whole template is one ${...} (the value is the URL itself, e.g. an ACCESS_URL). */
static bool
is_whole_variable(const char *t)
{
    size_t n;

    while (*t == ' ')
        t++;
    n = strlen(t);
    while (n > 0 && t[n - 1] == ' ')
        n--;
    return n > 3 && strncmp(t, "${", 2) == 0 && t[n - 1] == '}' &&
           memchr(t + 2, '}', n - 3) == NULL && strstr(t, "||") == NULL;
}

static latch_rc
build_base(struct pa_ctx *x, bool allow_http, struct proxy_auth *out, struct latch_err *err)
{
    char base[LATCH_MAX_URL_LEN];
    char host[256];
    size_t bl;
    latch_rc rc;
    bool whole = is_whole_variable(x->p->proxy_base_url);

    rc = eval(x, x->p->proxy_base_url, whole ? 0 : TMPL_URL_ENCODE | TMPL_URL_RAW_AUTHORITY, base,
              sizeof base, err);
    if (rc != LATCH_OK)
        return rc;
    if (whole && (!proxy_auth_header_value_ok(base) || strpbrk(base, " ?#\\") != NULL)) {
        latch_err_set(err, "The base URL of the connection is not a plain https URL.");
        return LATCH_E_INVAL;
    }
    rc = netpolicy_url_host(base, allow_http, host, sizeof host, err);
    if (rc == LATCH_OK)
        rc = netpolicy_check_hostname(host, err);
    if (rc != LATCH_OK)
        return rc;
    bl = strlen(base);
    while (bl > 0 && base[bl - 1] == '/')
        base[--bl] = '\0';
    out->base_url = xstrdup(base);
    return LATCH_OK;
}

latch_rc
proxy_auth_build(const struct catalog_provider *p, const json_t *cfg, const json_t *creds,
                 bool allow_http, struct proxy_auth *out, struct latch_err *err)
{
    struct pa_ctx x = {p, cfg, creds, false, {{0}}};
    char *v = xmalloc(PA_MAX_VALUE);
    bool have_auth = false;
    struct buf q;
    latch_rc rc = LATCH_OK;

    memset(out, 0, sizeof *out);
    buf_init(&q, LATCH_MAX_URL_LEN);
    if (p->proxy_base_url != NULL)
        rc = build_base(&x, allow_http, out, err);
    for (size_t i = 0; i < p->n_proxy_headers && rc == LATCH_OK; i++) {
        rc = eval(&x, p->proxy_headers[i].value, 0, v, PA_MAX_VALUE, err);
        if (rc == LATCH_OK)
            rc = add_header(out, p->proxy_headers[i].key, v, err);
        if (strcasecmp(p->proxy_headers[i].key, "authorization") == 0)
            have_auth = true;
    }
    if (rc == LATCH_OK && !have_auth && mode_is(p, "BASIC")) {
        const char *u = pa_lookup("username", &x);
        const char *pw = x.bad ? NULL : pa_lookup("password", &x);
        size_t n, esz;
        char *pair, *enc;

        if (x.bad) {
            latch_err_set(err, "%s", x.err.msg);
            rc = LATCH_E_INVAL;
            goto out;
        }
        n = strlen(u ? u : "") + 1 + strlen(pw ? pw : "");
        pair = xmalloc(n + 1);
        esz = b64_encoded_size(n);
        enc = xmalloc(esz);
        (void)snprintf(pair, n + 1, "%s:%s", u ? u : "", pw ? pw : "");
        (void)b64_encode(pair, n, enc, esz);
        (void)snprintf(v, PA_MAX_VALUE, "Basic %s", enc);
        explicit_bzero(pair, n);
        explicit_bzero(enc, esz);
        free(pair);
        free(enc);
        rc = add_header(out, "Authorization", v, err);
    } else if (rc == LATCH_OK && !have_auth &&
               (mode_is(p, "OAUTH2_CC") || mode_is(p, "OAUTH2") ||
                (mode_is(p, "TWO_STEP") && !uses_access_token(p)))) {
        const char *t = pa_lookup("accessToken", &x);

        if (t == NULL) {
            latch_err_set(err, "%s", x.bad ? x.err.msg : "The connection has no access token.");
            rc = LATCH_E_INVAL;
            goto out;
        }
        (void)snprintf(v, PA_MAX_VALUE, "Bearer %s", t);
        rc = add_header(out, "Authorization", v, err);
    }
    for (size_t i = 0; i < p->n_proxy_query && rc == LATCH_OK; i++) {
        rc = eval(&x, p->proxy_query[i].value, TMPL_URL_ENCODE, v, PA_MAX_VALUE, err);
        if (rc != LATCH_OK)
            break;
        if (q.len > 0)
            (void)buf_append(&q, "&", 1);
        url_encode_to(&q, p->proxy_query[i].key);
        (void)buf_append(&q, "=", 1);
        if (buf_puts(&q, v) != LATCH_OK) {
            latch_err_set(err, "The provider's query parameters are too long.");
            rc = LATCH_E_TOO_LARGE;
        }
    }
    if (rc == LATCH_OK && q.len > 0)
        out->query = buf_steal(&q, NULL);
out:
    explicit_bzero(v, PA_MAX_VALUE);
    free(v);
    if (q.data != NULL)
        explicit_bzero(q.data, q.len);
    buf_free(&q);
    if (rc != LATCH_OK)
        proxy_auth_clear(out);
    return rc;
}

bool
proxy_auth_has_header(const struct proxy_auth *a, const char *name)
{
    for (size_t i = 0; i < a->n_headers; i++)
        if (strcasecmp(a->names[i], name) == 0)
            return true;
    return false;
}
