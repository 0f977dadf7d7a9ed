#include "domain/oauth_code.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/latch_limits.h"
#include "crypto/vault.h"
#include "domain/catalog.h"
#include "domain/oauth_cc.h"
#include "net/netpolicy.h"
#include "util/b64.h"
#include "util/buf.h"
#include "util/xalloc.h"

static unsigned
hexval(char ch)
{
    return ch >= 'a' ? (unsigned)(ch - 'a' + 10) : (unsigned)(ch - '0');
}

void
oauth_pkce_challenge(const char *verifier, char challenge[OAUTH_PKCE_CHALLENGE_LEN + 1])
{
    char hex[65];
    unsigned char dig[32];
    char b64[48];
    size_t o = 0;

    vault_sha256_hex(verifier, strlen(verifier), hex);
    for (size_t i = 0; i < 32; i++)
        dig[i] = (unsigned char)(hexval(hex[2 * i]) << 4 | hexval(hex[2 * i + 1]));
    (void)b64_encode(dig, sizeof dig, b64, sizeof b64);
    /* base64url without padding (RFC 7636 appendix A) */
    for (size_t i = 0; b64[i] != '\0' && b64[i] != '=' && o < OAUTH_PKCE_CHALLENGE_LEN; i++)
        challenge[o++] = b64[i] == '+' ? '-' : b64[i] == '/' ? '_' : b64[i];
    challenge[o] = '\0';
}

void
oauth_pkce_new(char verifier[OAUTH_PKCE_VERIFIER_LEN + 1],
               char challenge[OAUTH_PKCE_CHALLENGE_LEN + 1])
{
    vault_random_hex(verifier, OAUTH_PKCE_VERIFIER_LEN / 2);
    oauth_pkce_challenge(verifier, challenge);
}

bool
oauth_scopes_ok(const char *s)
{
    bool prev_comma = true;

    if (s == NULL || s[0] == '\0' || strlen(s) > 1024)
        return false;
    for (const char *q = s; *q != '\0'; q++) {
        if (*q == ',') {
            if (prev_comma)
                return false;
            prev_comma = true;
            continue;
        }
        if (!((*q >= '0' && *q <= '9') || (*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') ||
              strchr(":/_.-", *q) != NULL))
            return false;
        prev_comma = false;
    }
    return !prev_comma;
}

/* The parameters the flow itself sets: never from the provider's extras or the user. */
static bool
reserved(const char *k)
{
    static const char *const names[] = {"client_id",      "redirect_uri",          "state",
                                        "code_challenge", "code_challenge_method", NULL};

    for (size_t i = 0; names[i] != NULL; i++)
        if (strcmp(k, names[i]) == 0)
            return true;
    return false;
}

latch_rc
oauth_authorize_url(const struct oauth_authorize_input *in, bool allow_http, char **out,
                    struct latch_err *err)
{
    const struct catalog_provider *p = in->provider;
    struct oauth_cc_input ci;
    char base[LATCH_MAX_URL_LEN];
    char host[256];
    struct buf q;
    json_t *params = json_object(); /* name -> value, in order */
    const char *k;
    json_t *v;
    latch_rc rc;

    *out = NULL;
    buf_init(&q, LATCH_MAX_URL_LEN);
    memset(&ci, 0, sizeof ci);
    ci.provider = p;
    ci.connection_config = in->connection_config;
    ci.client_id = in->client_id;
    ci.client_secret = "";
    if (p->authorization_url == NULL) {
        latch_err_set(err, "%s has no authorization URL.", catalog_display_name(p));
        rc = LATCH_E_INVAL;
        goto out;
    }
    rc = oauth_cc_eval(&ci, p->authorization_url, true, base, sizeof base, NULL, err);
    if (rc == LATCH_OK)
        rc = netpolicy_url_host(base, allow_http, host, sizeof host, err);
    if (rc != LATCH_OK)
        goto out;
    json_object_set_new(params, "response_type", json_string("code"));
    for (size_t i = 0; i < p->n_authorization_params; i++) {
        char val[1024];
        bool absent = false;

        if (reserved(p->authorization_params[i].key))
            continue;
        rc = oauth_cc_eval(&ci, p->authorization_params[i].value, false, val, sizeof val, &absent,
                           err);
        if (rc != LATCH_OK)
            goto out;
        if (!absent)
            json_object_set_new(params, p->authorization_params[i].key, json_string(val));
    }
    json_object_foreach((json_t *)(uintptr_t)in->extra_params, k, v)
    {
        if (reserved(k))
            continue;
        if (json_is_null(v))
            json_object_del(params, k);
        else if (json_is_string(v))
            json_object_set(params, k, v);
    }
    json_object_set_new(params, "client_id", json_string(in->client_id));
    json_object_set_new(params, "redirect_uri", json_string(in->redirect_uri));
    if (in->scopes != NULL && in->scopes[0] != '\0') {
        char *joined =
            oauth_cc_join_scopes(in->scopes, p->scope_separator ? p->scope_separator : " ");

        if (joined[0] != '\0')
            json_object_set_new(params, "scope", json_string(joined));
        free(joined);
    }
    json_object_set_new(params, "state", json_string(in->state));
    if (in->code_challenge != NULL) {
        json_object_set_new(params, "code_challenge", json_string(in->code_challenge));
        json_object_set_new(params, "code_challenge_method", json_string("S256"));
    }
    json_object_foreach(params, k, v)
    {
        if (rc == LATCH_OK)
            rc = oauth_cc_form_add(&q, k, json_string_value(v));
    }
    if (rc != LATCH_OK || strlen(base) + 1 + q.len >= LATCH_MAX_URL_LEN) {
        latch_err_set(err, "The authorization URL would be too long.");
        rc = LATCH_E_INVAL;
        goto out;
    }
    *out = xasprintf("%s%s%.*s", base, strchr(base, '?') != NULL ? "&" : "?", (int)q.len,
                     (const char *)q.data);
out:
    json_decref(params);
    buf_free(&q);
    return rc;
}
