/*
 * catalog_link.c - which providers this latch can link, and why not.
 *
 * A provider is linkable when
 *  - its auth mode is one latch links (catalog_mode_linkable),
 *  - Nango does not complete its connections with a step latch does not run (a post-connection
 *    script, additional steps, a client certificate, a GET token request, an XML body),
 *  - and every template latch evaluates for it (token_url, token_params, token_headers,
 *    proxy.base_url, proxy.headers, proxy.query) has an alternative whose inputs latch can
 *    supply: a declared connection_config field the user fills in (not an `automated` one that a
 *    script fills), a credential of the mode, or the access token of a token mode.
 * The templates are checked by evaluating them with a probe lookup, so the checker and the
 * interpreter cannot disagree on the grammar.
 */
#include "domain/catalog_link.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "domain/catalog.h"
#include "domain/tmpl.h"
#include "net/netpolicy.h"

static const char *const linkable_modes[] = {"OAUTH2", "OAUTH2_CC", "API_KEY",
                                             "BASIC",  "TWO_STEP",  NULL};

bool
catalog_mode_linkable(const char *auth_mode)
{
    if (auth_mode == NULL)
        return false;
    for (size_t i = 0; linkable_modes[i] != NULL; i++)
        if (strcmp(auth_mode, linkable_modes[i]) == 0)
            return true;
    return false;
}

static bool
mode_is(const struct catalog_provider *p, const char *m)
{
    return p->auth_mode != NULL && strcmp(p->auth_mode, m) == 0;
}

/* OAUTH2: a config key the flow itself fills (redirect_uri_metadata, token_response_metadata). */
static bool
from_flow(const struct catalog_provider *p, const char *name)
{
    for (size_t i = 0; i < p->n_redirect_uri_metadata; i++)
        if (p->redirect_uri_metadata[i] != NULL && strcmp(p->redirect_uri_metadata[i], name) == 0)
            return true;
    for (size_t i = 0; i < p->n_token_response_metadata; i++)
        if (p->token_response_metadata[i] != NULL &&
            strcmp(p->token_response_metadata[i], name) == 0)
            return true;
    return false;
}

/* Can the user (or latch) supply this connection_config field? */
static bool
config_suppliable(const struct catalog_provider *p, const char *name)
{
    const struct catalog_field *f =
        catalog_find_field(p->connection_config, p->n_connection_config, name);

    if (mode_is(p, "OAUTH2") && from_flow(p, name))
        return true; /* filled from the callback or the token response (api_oauth.c) */
    if (f == NULL)
        return strcmp(name, "oauth_scopes") == 0;
    /* automated (a script fills it) or hidden (the user never sees it): only a non-empty default */
    return !(f->automated || f->hidden) ||
           (f->default_value != NULL && f->default_value[0] != '\0');
}

static bool
credential_suppliable(const struct catalog_provider *p, const char *name)
{
    if (catalog_find_field(p->credentials, p->n_credentials, name) != NULL)
        return true;
    if (mode_is(p, "API_KEY"))
        return strcmp(name, "apiKey") == 0;
    if (mode_is(p, "BASIC"))
        return strcmp(name, "username") == 0 || strcmp(name, "password") == 0;
    if (mode_is(p, "OAUTH2_CC"))
        return strcmp(name, "client_id") == 0 || strcmp(name, "client_secret") == 0;
    return false;
}

static const char *
probe(const char *name, void *ud)
{
    const struct catalog_provider *p = ud;
    bool ok = false;

    if (strncmp(name, "connectionConfig.", 17) == 0)
        ok = config_suppliable(p, name + 17);
    else if (strncmp(name, "credentials.", 12) == 0)
        ok = credential_suppliable(p, name + 12);
    else if (strcmp(name, "apiKey") == 0)
        ok = mode_is(p, "API_KEY");
    else if (strcmp(name, "username") == 0 || strcmp(name, "password") == 0)
        ok = mode_is(p, "BASIC");
    else if (strcmp(name, "accessToken") == 0 || strcmp(name, "access_token") == 0)
        ok = mode_is(p, "OAUTH2_CC") || mode_is(p, "TWO_STEP") || mode_is(p, "OAUTH2");
    return ok ? "x" : NULL;
}

/* NULL when tmpl has an alternative latch can fill in; else what is missing, in reason. */
static bool
template_ok(const struct catalog_provider *p, const char *tmpl, const char *where, char *reason,
            size_t reason_size)
{
    char out[8192];
    struct latch_err err;

    if (tmpl == NULL)
        return true;
    latch_err_clear(&err);
    if (tmpl_eval(tmpl, probe, (void *)(uintptr_t)p, 0, out, sizeof out, &err) == LATCH_OK)
        return true;
    if (strncmp(err.msg, "missing parameter: ", 19) == 0)
        (void)snprintf(reason, reason_size,
                       "Its %s needs ${%s}, which Nango fills in with a step latch does not run.",
                       where, err.msg + 19);
    else
        (void)snprintf(reason, reason_size,
                       "Its %s uses a template feature latch does not support (%s).", where,
                       err.msg);
    return false;
}

static bool
kv_ok(const struct catalog_provider *p, const struct catalog_kv *kv, size_t n, const char *where,
      char *reason, size_t reason_size)
{
    char w[160];

    for (size_t i = 0; i < n; i++) {
        (void)snprintf(w, sizeof w, "%s.%s", where, kv[i].key);
        if (!template_ok(p, kv[i].value, w, reason, reason_size))
            return false;
    }
    return true;
}

/* A field the user fills in whose definition no value can satisfy: false, with the reason. */
static bool
fields_satisfiable(const struct catalog_field *fs, size_t n, char *reason, size_t reason_size)
{
    for (size_t i = 0; i < n; i++) {
        const struct catalog_field *f = &fs[i];
        const char *t = f->title != NULL && f->title[0] != '\0' ? f->title : f->name;
        struct latch_err err;

        if (f->hidden || f->automated)
            continue;
        if (f->pattern != NULL && f->re_ == NULL) {
            (void)snprintf(reason, reason_size,
                           "Nango's pattern for %.60s is not a valid regular expression, so no "
                           "value could be checked.",
                           t);
            return false;
        }
        if ((f->lands & (CATALOG_LANDS_HOSTPATH | CATALOG_LANDS_URL)) != 0 && f->n_enum == 0) {
            /* a host of its own: some plain host name must pass the field's own pattern */
            const char *const probes[] = {f->example, "example.com", "host.example.com",
                                          "https://example.com", "https://host.example.com"};
            bool any = false;

            for (size_t k = 0; k < sizeof probes / sizeof probes[0]; k++) {
                if (probes[k] == NULL)
                    continue;
                latch_err_clear(&err);
                if (catalog_field_validate(f, probes[k], &err) == LATCH_OK) {
                    any = true;
                    break;
                }
            }
            if (!any) {
                (void)snprintf(reason, reason_size,
                               "No host name satisfies Nango's definition of %.60s: its pattern "
                               "and the provider's URL template contradict each other.",
                               t);
                return false;
            }
        }
    }
    return true;
}

/* A fixed base URL must name a host latch may reach (not a placeholder such as my-private-api). */
static bool
fixed_base_ok(const struct catalog_provider *p, char *reason, size_t reason_size)
{
    char host[256];
    struct latch_err err;

    if (tmpl_has_placeholders(p->proxy_base_url))
        return true;
    latch_err_clear(&err);
    if (netpolicy_url_host(p->proxy_base_url, true, host, sizeof host, &err) == LATCH_OK &&
        netpolicy_check_hostname(host, &err) == LATCH_OK)
        return true;
    (void)snprintf(reason, reason_size,
                   "Its base URL %.80s is a placeholder, not a public host name (%.100s).",
                   p->proxy_base_url, err.msg);
    return false;
}

/*
 * OAUTH2: the authorization-code flow latch runs (api_oauth.c) is the standard one: the user's
 * consent at authorization_url, the code back at latch's callback as ?code=&state=, one token
 * request. Entries whose flow Nango bends (another callback parameter, an installation, a
 * fragment, URL replacements, encoding exceptions) are not linkable, each with its reason.
 */
static bool
oauth2_flow_ok(const struct catalog_provider *p, char *reason, size_t reason_size)
{
    static const struct {
        const char *needle;
        const char *why;
    } bends[] = {
        {"\"installation\":", "Its accounts are linked by installing an app (an installation "
                              "flow), not by the standard OAuth2 consent latch runs."},
        {"\"authorization_code_param_in_callback\":",
         "Its callback carries the authorization code under a non-standard parameter, which "
         "latch's callback does not read."},
        {"\"authorization_code_param_in_webhook\":",
         "It delivers the authorization code by webhook, a flow latch does not run."},
        {"\"authorization_url_fragment\":",
         "Its authorization URL needs a fragment part, a non-standard flow latch does not run."},
        {"\"authorization_url_replacements\":",
         "Its authorization URL needs text replacements after templating, which latch does not "
         "do."},
        {"\"authorization_url_skip_encode\":",
         "Its authorization URL must carry some values unencoded, which latch does not do."},
        {"\"authorization_url_skip_empty\":",
         "Its authorization URL leaves out parameters that are empty, which latch does not do."},
        {"\"decode_url\":true", "Its authorization URL must be URL-decoded after building, "
                                "which latch does not do."},
        {"\"alternate_access_token_response_path\":",
         "Its token response puts the user's token at a non-standard path (a second token), "
         "which latch does not read."},
        {"\"connection_configuration\":",
         "Nango fills its connection configuration from the provider's API after the token, a "
         "step latch does not run."},
        {"\"integration_config\":",
         "Its integration needs settings beyond the OAuth app's credentials, which latch does "
         "not keep."},
    };

    if (p->authorization_url == NULL) {
        (void)snprintf(reason, reason_size, "It has no authorization URL to send the user to.");
        return false;
    }
    for (size_t i = 0; i < sizeof bends / sizeof bends[0]; i++) {
        if (strstr(p->json, bends[i].needle) != NULL) {
            (void)snprintf(reason, reason_size, "%s", bends[i].why);
            return false;
        }
    }
    if (!template_ok(p, p->authorization_url, "authorization_url", reason, reason_size) ||
        !kv_ok(p, p->authorization_params, p->n_authorization_params, "authorization_params",
               reason, reason_size))
        return false;
    return true;
}

bool
catalog_assess_linkable(const struct catalog_provider *p, char *reason, size_t reason_size)
{
    bool token_mode = mode_is(p, "OAUTH2_CC") || mode_is(p, "TWO_STEP") || mode_is(p, "OAUTH2");

    if (!catalog_mode_linkable(p->auth_mode)) {
        char modes[96] = "";

        for (size_t i = 0; linkable_modes[i] != NULL; i++) {
            if (i > 0)
                (void)strncat(modes, linkable_modes[i + 1] == NULL ? " and " : ", ",
                              sizeof modes - strlen(modes) - 1);
            (void)strncat(modes, linkable_modes[i], sizeof modes - strlen(modes) - 1);
        }
        (void)snprintf(reason, reason_size, "Its auth mode %.40s is not one latch links (%s).",
                       p->auth_mode != NULL ? p->auth_mode : "(none)", modes);
        return false;
    }
    if (p->post_connection_script != NULL) {
        (void)snprintf(reason, reason_size,
                       "Nango completes its connections with a post-connection script (%.80s), "
                       "which latch does not run.",
                       p->post_connection_script);
        return false;
    }
    if (strstr(p->json, "\"additional_steps\"") != NULL) {
        (void)snprintf(reason, reason_size,
                       "Its connections need additional steps after the credentials, which latch "
                       "does not run.");
        return false;
    }
    if (strstr(p->json, "\"require_client_certificate\":true") != NULL) {
        (void)snprintf(reason, reason_size,
                       "It needs a client certificate (mutual TLS), which latch does not send.");
        return false;
    }
    if (mode_is(p, "OAUTH2") && !oauth2_flow_ok(p, reason, reason_size))
        return false;
    if (token_mode && p->token_url == NULL) {
        (void)snprintf(reason, reason_size, "It has no token URL to ask for a token at.");
        return false;
    }
    if (token_mode && p->token_request_method != NULL &&
        strcmp(p->token_request_method, "POST") != 0) {
        (void)snprintf(reason, reason_size,
                       "Its token request is a %.16s request; latch sends token requests as POST.",
                       p->token_request_method);
        return false;
    }
    if (token_mode && p->body_format != NULL && strcmp(p->body_format, "form") != 0 &&
        strcmp(p->body_format, "json") != 0) {
        (void)snprintf(reason, reason_size,
                       "Its token request body is %.16s; latch sends form or JSON bodies.",
                       p->body_format);
        return false;
    }
    if (token_mode && p->token_request_auth_method != NULL &&
        strcmp(p->token_request_auth_method, "basic") != 0 &&
        strcmp(p->token_request_auth_method, "custom") != 0) {
        (void)snprintf(reason, reason_size,
                       "Its token request authenticates with %.32s, which latch does not do.",
                       p->token_request_auth_method);
        return false;
    }
    if (p->proxy_base_url == NULL) {
        (void)snprintf(reason, reason_size, "It has no proxy base URL to send requests to.");
        return false;
    }
    if (!template_ok(p, p->proxy_base_url, "proxy.base_url", reason, reason_size) ||
        !fixed_base_ok(p, reason, reason_size))
        return false;
    if (!fields_satisfiable(p->connection_config, p->n_connection_config, reason, reason_size) ||
        !fields_satisfiable(p->credentials, p->n_credentials, reason, reason_size))
        return false;
    if (token_mode && !template_ok(p, p->token_url, "token_url", reason, reason_size))
        return false;
    if (token_mode &&
        (!kv_ok(p, p->token_params, p->n_token_params, "token_params", reason, reason_size) ||
         !kv_ok(p, p->token_headers, p->n_token_headers, "token_headers", reason, reason_size)))
        return false;
    if (!kv_ok(p, p->proxy_headers, p->n_proxy_headers, "proxy.headers", reason, reason_size) ||
        !kv_ok(p, p->proxy_query, p->n_proxy_query, "proxy.query", reason, reason_size))
        return false;
    reason[0] = '\0';
    return true;
}
