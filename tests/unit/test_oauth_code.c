/*
 * test_oauth_code.c - the pure pieces of the OAuth2 authorization-code flow (domain/oauth_code.h)
 * and its token request (oauth_cc with a grant): PKCE S256 against RFC 7636's own example, the
 * scope list rule, the authorization URL built from a definition (templates checked where they
 * land, authorization_params, scope_separator, the protocol's own parameters never overridden),
 * the code exchange body and the OAUTH2 credentials parsed from the token response.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "domain/catalog.h"
#include "domain/oauth_cc.h"
#include "domain/oauth_code.h"
#include "net/outbound.h"
#include "util/rc.h"

static const char yaml[] =
    "acme:\n"
    "  display_name: Acme\n"
    "  auth_mode: OAUTH2\n"
    "  authorization_url: https://${connectionConfig.subdomain}.acme.example/oauth/authorize\n"
    "  token_url: https://${connectionConfig.subdomain}.acme.example/oauth/token\n"
    "  scope_separator: '+'\n"
    "  authorization_params:\n"
    "    access_type: offline\n"
    "    prompt: consent\n"
    "    state: not-this\n"
    "  token_params:\n"
    "    grant_type: authorization_code\n"
    "  default_scopes: [read, write]\n"
    "  proxy:\n"
    "    base_url: https://${connectionConfig.subdomain}.acme.example\n"
    "  connection_config:\n"
    "    subdomain:\n"
    "      type: string\n"
    "      title: Subdomain\n"
    "      pattern: '^[a-z0-9-]+$'\n"
    "nopkce:\n"
    "  display_name: No PKCE\n"
    "  auth_mode: OAUTH2\n"
    "  authorization_url: https://nopkce.example/authorize?tenant=common\n"
    "  token_url: https://nopkce.example/token\n"
    "  token_request_auth_method: basic\n"
    "  disable_pkce: true\n"
    "  proxy:\n"
    "    base_url: https://api.nopkce.example\n"
    "bent:\n"
    "  auth_mode: OAUTH2\n"
    "  authorization_url: https://bent.example/authorize\n"
    "  token_url: https://bent.example/token\n"
    "  authorization_code_param_in_callback: other_code\n"
    "  proxy:\n"
    "    base_url: https://api.bent.example\n";

static struct catalog *cat;

static int
setup(void **state)
{
    struct latch_err err = {{0}};

    (void)state;
    if (catalog_load_buffer(yaml, strlen(yaml), "t.yaml", &cat, &err) != LATCH_OK) {
        print_error("load: %s\n", err.msg);
        return -1;
    }
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    catalog_free(cat);
    return 0;
}

/* S256 = base64url(SHA-256(verifier)), unpadded (value computed by node's crypto). */
static void
test_pkce(void **state)
{
    char ch[OAUTH_PKCE_CHALLENGE_LEN + 1];
    char v[OAUTH_PKCE_VERIFIER_LEN + 1], c1[OAUTH_PKCE_CHALLENGE_LEN + 1];
    char v2[OAUTH_PKCE_VERIFIER_LEN + 1], c2[OAUTH_PKCE_CHALLENGE_LEN + 1];

    (void)state;
    oauth_pkce_challenge("dBjftJeZ4CVP-mJ92K9CMrdbPOmP-9O6CWXWPkOwXi-Xx", ch);
    assert_string_equal(ch, "9LpR-DX4uRm0IRtVENlfQ66d-SEBxy8MvcM41VCeDAQ");
    oauth_pkce_new(v, c1);
    oauth_pkce_new(v2, c2);
    assert_int_equal(strlen(v), 64);
    assert_int_equal(strspn(v, "0123456789abcdef"), 64);
    assert_int_equal(strlen(c1), 43);
    assert_string_not_equal(v, v2);
    oauth_pkce_challenge(v, ch);
    assert_string_equal(ch, c1);
}

static void
test_scopes_rule(void **state)
{
    (void)state;
    assert_true(oauth_scopes_ok("read"));
    assert_true(oauth_scopes_ok("read,write,https://x.example/a.b_c-d:e"));
    assert_false(oauth_scopes_ok(""));
    assert_false(oauth_scopes_ok("a b"));
    assert_false(oauth_scopes_ok("a,,b"));
    assert_false(oauth_scopes_ok(",a"));
    assert_false(oauth_scopes_ok("a,"));
    assert_false(oauth_scopes_ok("a&b"));
    assert_false(oauth_scopes_ok(NULL));
}

static char *
build(const char *provider, json_t *cfg, json_t *extra, const char *scopes, const char *challenge,
      latch_rc want, struct latch_err *err)
{
    struct oauth_authorize_input in;
    char *url = NULL;
    latch_rc rc;

    memset(&in, 0, sizeof in);
    in.provider = catalog_find(cat, provider);
    assert_non_null(in.provider);
    in.connection_config = cfg;
    in.client_id = "client 1";
    in.redirect_uri = "https://latch.example/oauth/callback";
    in.scopes = scopes;
    in.state = "st4te";
    in.code_challenge = challenge;
    in.extra_params = extra;
    latch_err_clear(err);
    rc = oauth_authorize_url(&in, false, &url, err);
    if (rc != want)
        print_error("%s: rc=%d (%s) url=%s\n", provider, rc, err->msg, url ? url : "-");
    assert_int_equal(rc, want);
    return url;
}

static void
test_authorize_url(void **state)
{
    struct latch_err err;
    json_t *cfg = json_pack("{s:s}", "subdomain", "team-1");
    json_t *extra = json_pack("{s:s, s:n, s:s, s:s}", "login_hint", "a@b.example", "prompt",
                              "redirect_uri", "https://evil.example/", "client_id", "evil");
    char *url;

    (void)state;
    url = build("acme", cfg, extra, "read,offline", "CHAL", LATCH_OK, &err);
    assert_string_equal(url, "https://team-1.acme.example/oauth/authorize?response_type=code&"
                             "access_type=offline&login_hint=a%40b.example&client_id=client%201&"
                             "redirect_uri=https%3A%2F%2Flatch.example%2Foauth%2Fcallback&"
                             "scope=read%2Boffline&state=st4te&code_challenge=CHAL&"
                             "code_challenge_method=S256");
    free(url);
    json_decref(extra);
    /* no PKCE, a query already in the URL, no scopes */
    url = build("nopkce", cfg, NULL, NULL, NULL, LATCH_OK, &err);
    assert_string_equal(url, "https://nopkce.example/authorize?tenant=common&response_type=code&"
                             "client_id=client%201&redirect_uri=https%3A%2F%2Flatch.example%2F"
                             "oauth%2Fcallback&state=st4te");
    free(url);
    json_decref(cfg);
    /* a value that would move the host is refused before any URL exists */
    cfg = json_pack("{s:s}", "subdomain", "evil.example/x");
    url = build("acme", cfg, NULL, NULL, "CHAL", LATCH_E_INVAL, &err);
    assert_null(url);
    json_decref(cfg);
    cfg = json_object();
    url = build("acme", cfg, NULL, NULL, "CHAL", LATCH_E_INVAL, &err);
    assert_null(url);
    json_decref(cfg);
}

static void
test_linkability(void **state)
{
    const struct catalog_provider *p;

    (void)state;
    p = catalog_find(cat, "acme");
    assert_true(p->linkable);
    assert_int_equal(p->n_default_scopes, 2);
    assert_false(p->disable_pkce);
    p = catalog_find(cat, "nopkce");
    assert_true(p->linkable);
    assert_true(p->disable_pkce);
    p = catalog_find(cat, "bent");
    assert_false(p->linkable);
    assert_non_null(strstr(p->unlinkable_reason, "non-standard parameter"));
}

/* The code exchange: the grant's parameters, client auth per the definition, no scope. */
static void
test_code_exchange_request(void **state)
{
    struct oauth_cc_input in;
    struct oauth_cc_grant g = {"the code", "https://latch.example/oauth/callback", "verif"};
    struct oauth_cc_request rq;
    struct latch_err err = {{0}};
    json_t *cfg = json_pack("{s:s, s:s}", "subdomain", "team-1", "oauth_scopes", "read,write");

    (void)state;
    memset(&in, 0, sizeof in);
    in.provider = catalog_find(cat, "acme");
    in.connection_config = cfg;
    in.client_id = "cid";
    in.client_secret = "csec";
    in.grant = &g;
    assert_int_equal(oauth_cc_build(&in, false, &rq, &err), LATCH_OK);
    assert_string_equal(rq.url, "https://team-1.acme.example/oauth/token");
    assert_string_equal(rq.body,
                        "client_id=cid&client_secret=csec&grant_type=authorization_code&code=the%"
                        "20code&redirect_uri=https%3A%2F%2Flatch.example%2Foauth%2Fcallback&"
                        "code_verifier=verif");
    assert_null(rq.authorization);
    oauth_cc_request_clear(&rq);
    /* basic client auth, no PKCE: neither client_id nor code_verifier in the body */
    in.provider = catalog_find(cat, "nopkce");
    g.code_verifier = NULL;
    assert_int_equal(oauth_cc_build(&in, false, &rq, &err), LATCH_OK);
    assert_string_equal(rq.body, "grant_type=authorization_code&code=the%20code&redirect_uri="
                                 "https%3A%2F%2Flatch.example%2Foauth%2Fcallback");
    assert_string_equal(rq.authorization, "Basic Y2lkOmNzZWM=");
    oauth_cc_request_clear(&rq);
    json_decref(cfg);
}

static void
test_code_exchange_parse(void **state)
{
    static const char ok_body[] =
        "{\"access_token\":\"AT\",\"refresh_token\":\"RT\",\"expires_in\":3600,\"token_type\":"
        "\"Bearer\"}";
    static const char noexp_body[] = "{\"access_token\":\"AT2\"}";
    static const char grant_body[] = "{\"error\":\"invalid_grant\",\"error_description\":\"csec\"}";
    struct oauth_cc_grant g = {"c", "https://latch.example/oauth/callback", NULL};
    struct oauth_cc_input in;
    struct outbound_resp resp;
    struct oauth_cc_result res;
    json_t *cfg = json_object();

    (void)state;
    memset(&in, 0, sizeof in);
    in.provider = catalog_find(cat, "acme");
    in.connection_config = cfg;
    in.client_id = "cid";
    in.client_secret = "csec";
    in.grant = &g;
    memset(&resp, 0, sizeof resp);
    resp.status = 200;
    resp.body = (char *)(uintptr_t)ok_body;
    resp.body_len = strlen(ok_body);
    oauth_cc_parse(&resp, &in, 3600, &res);
    assert_int_equal(res.outcome, OCC_OK);
    assert_string_equal(json_string_value(json_object_get(res.creds, "type")), "OAUTH2");
    assert_string_equal(json_string_value(json_object_get(res.creds, "access_token")), "AT");
    assert_string_equal(json_string_value(json_object_get(res.creds, "refresh_token")), "RT");
    assert_non_null(json_object_get(res.creds, "expires_at"));
    assert_null(json_object_get(res.creds, "client_secret"));
    assert_true(res.expires_at > 0);
    oauth_cc_result_clear(&res);
    /* no lifetime: no expires_at (Nango's OAuth2Credentials) */
    resp.body = (char *)(uintptr_t)noexp_body;
    resp.body_len = strlen(noexp_body);
    oauth_cc_parse(&resp, &in, 3600, &res);
    assert_int_equal(res.outcome, OCC_OK);
    assert_null(json_object_get(res.creds, "expires_at"));
    assert_int_equal(res.expires_at, 0);
    oauth_cc_result_clear(&res);
    /* a refused code, in words, the upstream's text dropped */
    resp.status = 400;
    resp.body = (char *)(uintptr_t)grant_body;
    resp.body_len = strlen(grant_body);
    oauth_cc_parse(&resp, &in, 3600, &res);
    assert_int_equal(res.outcome, OCC_INVALID_CLIENT);
    assert_true(res.terminal);
    assert_string_equal(res.reason, "invalid_grant");
    assert_non_null(strstr(res.message, "Acme refused the authorization code"));
    assert_null(strstr(res.message, "csec"));
    oauth_cc_result_clear(&res);
    json_decref(cfg);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pkce),
        cmocka_unit_test(test_scopes_rule),
        cmocka_unit_test(test_authorize_url),
        cmocka_unit_test(test_linkability),
        cmocka_unit_test(test_code_exchange_request),
        cmocka_unit_test(test_code_exchange_parse),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
