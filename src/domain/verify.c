/*
 * verify.c - the provider's proxy.verification request with new credentials (see verify.h).
 */
#include "domain/verify.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/latch_limits.h"
#include "core/log.h"
#include "core/worker.h"
#include "domain/catalog.h"
#include "domain/proxyauth.h"
#include "domain/tmpl.h"
#include "net/outbound.h"
#include "util/str.h"
#include "util/xalloc.h"

struct verify_job {
    struct worker *worker;
    const struct catalog_provider *p;
    verify_done_fn done;
    void *ud;
    struct verify_result res;
};

static void
set(struct verify_result *r, enum verify_outcome o, bool terminal, const char *reason,
    const char *msg)
{
    r->outcome = o;
    r->terminal = terminal;
    latch_strlcpy(r->reason, reason, sizeof r->reason);
    latch_strlcpy(r->message, msg, sizeof r->message);
}

static void
append(char *dst, size_t size, const char *s)
{
    size_t n = strlen(dst);

    if (n + 1 < size)
        latch_strlcpy(dst + n, s, size - n);
}

/* Titles of the connection_config fields, "subdomain or host" when there are none. */
static void
config_titles(const struct catalog_provider *p, char *out, size_t out_size)
{
    out[0] = '\0';
    for (size_t i = 0; i < p->n_connection_config; i++) {
        const struct catalog_field *f = &p->connection_config[i];
        const char *t = f->title != NULL && f->title[0] != '\0' ? f->title : f->name;

        if (f->hidden || f->automated)
            continue;
        if (out[0] != '\0')
            append(out, out_size, ", ");
        append(out, out_size, t);
    }
    if (out[0] == '\0')
        latch_strlcpy(out, "subdomain or host", out_size);
}

static const char *
what_creds(const struct catalog_provider *p)
{
    if (p->auth_mode != NULL && strcmp(p->auth_mode, "BASIC") == 0)
        return "credentials (user name and password)";
    if (p->auth_mode != NULL && strcmp(p->auth_mode, "API_KEY") == 0)
        return "key";
    return "credentials";
}

/* The provider's own connect guide (docs_connect, else setup_guide_url, else docs), or NULL. */
static const char *
guide(const struct catalog_provider *p)
{
    if (p->docs_connect != NULL && p->docs_connect[0] != '\0')
        return p->docs_connect;
    if (p->setup_guide_url != NULL && p->setup_guide_url[0] != '\0')
        return p->setup_guide_url;
    return p->docs != NULL && p->docs[0] != '\0' ? p->docs : NULL;
}

void
verify_classify(const struct catalog_provider *p, const struct outbound_resp *resp,
                struct verify_result *r)
{
    const char *dn = catalog_display_name(p);
    char msg[640], fields[160];

    r->status = resp->status;
    if (resp->rc == LATCH_E_TIMEOUT) {
        (void)snprintf(msg, sizeof msg, "%s did not answer in time. Try again in a moment.", dn);
        set(r, VERIFY_TIMEOUT, false, "timeout", msg);
        return;
    }
    if (resp->rc == LATCH_E_DENIED) {
        (void)snprintf(msg, sizeof msg, "latch's outbound policy refused the address of %s's API.",
                       dn);
        set(r, VERIFY_DENIED, true, "denied", msg);
        return;
    }
    if (resp->rc != LATCH_OK && resp->rc != LATCH_E_TOO_LARGE) {
        (void)snprintf(msg, sizeof msg,
                       "Could not reach %s (network or TLS error). Try again in a moment.", dn);
        set(r, VERIFY_UNREACHABLE, false, "unreachable", msg);
        return;
    }
    if (resp->status >= 200 && resp->status < 300) {
        (void)snprintf(msg, sizeof msg, "%s accepted the %s.", dn, what_creds(p));
        set(r, VERIFY_OK, false, "verified", msg);
        return;
    }
    if (resp->status == 401 || resp->status == 403) {
        (void)snprintf(msg, sizeof msg,
                       "%s rejected the %s (HTTP %ld): the key was rejected. Check that you "
                       "copied it completely and that it is still active, then try again.%s%s",
                       dn, what_creds(p), resp->status, guide(p) ? " Setup guide: " : "",
                       guide(p) ? guide(p) : "");
        set(r, VERIFY_REJECTED, true, "rejected", msg);
        return;
    }
    if (resp->status == 404) {
        config_titles(p, fields, sizeof fields);
        (void)snprintf(msg, sizeof msg,
                       "%s answered 404 Not Found: check the subdomain/host (%s) of your "
                       "account, then try again.%s%s",
                       dn, fields, guide(p) ? " Setup guide: " : "", guide(p) ? guide(p) : "");
        set(r, VERIFY_NOT_FOUND, true, "not_found", msg);
        return;
    }
    {
        bool transient = resp->status >= 500 || resp->status == 429 || resp->status == 408;

        (void)snprintf(msg, sizeof msg, "%s answered HTTP %ld when latch checked the %s.%s", dn,
                       resp->status, what_creds(p), transient ? " Try again in a moment." : "");
        set(r, VERIFY_UPSTREAM, !transient, "upstream_error", msg);
    }
}

/* True if one of hdrs[0..n) is called name (case-insensitive). */
static bool
hdrs_have(const struct outbound_header *hdrs, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(hdrs[i].name, name) == 0)
            return true;
    return false;
}

static void
job_finish(void *ud)
{
    struct verify_job *j = ud;

    j->done(&j->res, j->ud);
    free(j);
}

static void
job_done(struct outbound_resp *resp, void *ud)
{
    struct verify_job *j = ud;

    verify_classify(j->p, resp, &j->res);
    log_info("credentials verified", "provider=%s outcome=%s status=%ld dur_ms=%.1f", j->p->name,
             j->res.reason, resp->status, resp->total_time_s * 1000.0);
    outbound_resp_clear(resp);
    worker_run(j->worker, job_finish, j);
}

bool
verify_start(const struct verify_opts *o, const struct catalog_provider *p, const json_t *cfg,
             const json_t *creds, verify_done_fn done, void *ud, struct verify_result *now)
{
    struct proxy_auth pa;
    struct latch_err err;
    struct outbound_header hdrs[PROXY_AUTH_MAX_HEADERS + 4];
    struct outbound_req req;
    char ep[1024], base[LATCH_MAX_URL_LEN], vh[1024];
    char *url = NULL;
    char *hvals[PROXY_AUTH_MAX_HEADERS] = {0};
    size_t nh = 0, nhv = 0;
    struct verify_job *j;
    latch_rc rc;

    memset(now, 0, sizeof *now);
    latch_err_clear(&err);
    if (p->n_verification_endpoints == 0 || p->verification_endpoints[0] == NULL) {
        latch_strlcpy(now->endpoint, "none defined", sizeof now->endpoint);
        set(now, VERIFY_NONE, false, "none",
            p->credentials_verification_script != NULL
                ? "Not checked: Nango checks these credentials with a script, which latch does "
                  "not run."
                : "Not checked: the provider definition has no verification request.");
        return false;
    }
    latch_strlcpy(now->endpoint, p->verification_endpoints[0], sizeof now->endpoint);
    if (proxy_auth_build(p, cfg, creds, o->allow_http, &pa, &err) != LATCH_OK) {
        set(now, VERIFY_INVALID_INPUT, true, "invalid_input", err.msg);
        return false;
    }
    base[0] = '\0';
    if (p->verification_base_url_override != NULL) {
        rc = proxy_auth_eval(p, cfg, creds, p->verification_base_url_override,
                             TMPL_URL_ENCODE | TMPL_URL_RAW_AUTHORITY, base, sizeof base, &err);
        if (rc != LATCH_OK) {
            set(now, VERIFY_INVALID_INPUT, true, "invalid_input", err.msg);
            proxy_auth_clear(&pa);
            return false;
        }
    } else if (pa.base_url != NULL) {
        latch_strlcpy(base, pa.base_url, sizeof base);
    }
    rc = proxy_auth_eval(p, cfg, creds, p->verification_endpoints[0], TMPL_URL_ENCODE, ep,
                         sizeof ep, &err);
    if (rc != LATCH_OK || base[0] == '\0') {
        set(now, VERIFY_INVALID_INPUT, true, "invalid_input",
            rc != LATCH_OK ? err.msg : "The provider has no base URL to verify against.");
        proxy_auth_clear(&pa);
        return false;
    }
    {
        const char *e = ep;
        size_t bl = strlen(base);

        while (*e == '/')
            e++;
        while (bl > 0 && base[bl - 1] == '/')
            base[--bl] = '\0';
        url = xasprintf("%s/%s%s%s", base, e, pa.query ? (strchr(e, '?') ? "&" : "?") : "",
                        pa.query ? pa.query : "");
    }
    for (size_t i = 0; i < pa.n_headers; i++) {
        bool overridden = false;

        for (size_t k = 0; k < p->n_verification_headers; k++)
            if (strcasecmp(p->verification_headers[k].key, pa.names[i]) == 0)
                overridden = true;
        if (!overridden)
            hdrs[nh++] = (struct outbound_header){pa.names[i], pa.values[i]};
    }
    for (size_t k = 0; k < p->n_verification_headers && nhv < PROXY_AUTH_MAX_HEADERS &&
                       nh < PROXY_AUTH_MAX_HEADERS + 2;
         k++) {
        if (proxy_auth_eval(p, cfg, creds, p->verification_headers[k].value, 0, vh, sizeof vh,
                            &err) != LATCH_OK ||
            !proxy_auth_header_value_ok(vh))
            continue;
        hvals[nhv] = xstrdup(vh);
        hdrs[nh++] = (struct outbound_header){p->verification_headers[k].key, hvals[nhv]};
        nhv++;
    }
    explicit_bzero(vh, sizeof vh);
    /* the provider's own Accept / Content-Type (proxy.headers, verification.headers) win */
    if (!hdrs_have(hdrs, nh, "accept"))
        hdrs[nh++] = (struct outbound_header){"Accept", "application/json"};
    memset(&req, 0, sizeof req);
    req.method = p->verification_method != NULL ? p->verification_method : "GET";
    req.url = url;
    req.headers = hdrs;
    req.n_headers = nh;
    if (p->verification_data != NULL && strcmp(req.method, "GET") != 0) {
        req.body = p->verification_data;
        req.body_len = strlen(p->verification_data);
        if (!hdrs_have(hdrs, nh, "content-type"))
            hdrs[nh++] = (struct outbound_header){"Content-Type", "application/json"};
        req.n_headers = nh;
    }
    req.timeout_ms = o->timeout_ms;
    req.max_response = LATCH_MAX_TOKEN_RESPONSE;
    req.follow_redirects = false;
    j = xcalloc(1, sizeof *j);
    j->worker = o->worker;
    j->p = p;
    j->done = done;
    j->ud = ud;
    j->res = *now;
    rc = outbound_submit(o->outbound, &req, job_done, j);
    explicit_bzero(url, strlen(url));
    free(url);
    for (size_t i = 0; i < nhv; i++) {
        explicit_bzero(hvals[i], strlen(hvals[i]));
        free(hvals[i]);
    }
    proxy_auth_clear(&pa);
    if (rc != LATCH_OK) {
        free(j);
        set(now, rc == LATCH_E_BUSY ? VERIFY_UNREACHABLE : VERIFY_INVALID_INPUT, rc != LATCH_E_BUSY,
            rc == LATCH_E_BUSY ? "busy" : "invalid_input",
            rc == LATCH_E_BUSY ? "latch is too busy to reach the provider; try again."
                               : "The verification request could not be built.");
        return false;
    }
    return true;
}
