/*
 * test_oauth_cc.c - the OAUTH2 refresh_token request and its answer (oauth_cc_build/parse with
 * oauth_cc_input.refresh_token): refresh_url and refresh_params with their fallbacks, client auth
 * in the body or Basic, no scope; rotation kept or carried over; invalid_grant and invalid_client
 * terminal, 5xx/429/timeouts transient; the stored credentials carried over.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "domain/catalog.h"
#include "domain/creds.h"
#include "domain/oauth_cc.h"
#include "net/outbound.h"
#include "util/rc.h"

static const struct catalog_kv token_params[] = {{"grant_type", "authorization_code"},
                                                 {"audience", "api"}};
static const struct catalog_kv refresh_params[] = {{"grant_type", "refresh_token"},
                                                   {"resource", "${connectionConfig.instance}"}};

static struct catalog_provider
provider(void)
{
    struct catalog_provider p;

    memset(&p, 0, sizeof p);
    p.name = "ninjaone-rmm-oauth2";
    p.display_name = "NinjaOne RMM (OAuth2)";
    p.auth_mode = "OAUTH2";
    p.token_url = "https://${connectionConfig.instance}/ws/oauth/token";
    p.token_params = token_params;
    p.n_token_params = 2;
    p.token_expiration_buffer_s = -1;
    p.default_expires_in_s = -1;
    p.token_expires_in_ms = -1;
    return p;
}

static void
input(struct oauth_cc_input *in, const struct catalog_provider *p, json_t *cfg, const json_t *prior)
{
    memset(in, 0, sizeof *in);
    in->provider = p;
    in->connection_config = cfg;
    in->client_id = "cid-123";
    in->client_secret = "s3cr&t";
    in->refresh_token = "old-rt/+=";
    in->prior = prior;
}

static void
refresh_body_fallback_token_params(void **state)
{
    struct catalog_provider p = provider();
    json_t *cfg = json_pack("{s:s, s:s}", "instance", "eu.ninjarmm.com", "oauth_scopes",
                            "monitoring,offline_access");
    struct oauth_cc_input in;
    struct oauth_cc_request rq;
    struct latch_err err;

    (void)state;
    input(&in, &p, cfg, NULL);
    assert_int_equal(oauth_cc_build(&in, false, &rq, &err), LATCH_OK);
    assert_string_equal(rq.url, "https://eu.ninjarmm.com/ws/oauth/token");
    /* grant and token first, the client in the body, token_params minus their grant, no scope */
    assert_string_equal(rq.body, "grant_type=refresh_token&refresh_token=old-rt%2F%2B%3D&"
                                 "client_id=cid-123&client_secret=s3cr%26t&audience=api");
    assert_null(rq.authorization);
    assert_string_equal(rq.content_type, "application/x-www-form-urlencoded");
    oauth_cc_request_clear(&rq);
    json_decref(cfg);
}

static void
refresh_url_params_basic(void **state)
{
    struct catalog_provider p = provider();
    json_t *cfg = json_pack("{s:s}", "instance", "eu.ninjarmm.com");
    struct oauth_cc_input in;
    struct oauth_cc_request rq;
    struct latch_err err;

    (void)state;
    p.refresh_url = "https://${connectionConfig.instance}/oauth/refresh";
    p.refresh_params = refresh_params;
    p.n_refresh_params = 2;
    p.token_request_auth_method = "basic";
    input(&in, &p, cfg, NULL);
    assert_int_equal(oauth_cc_build(&in, false, &rq, &err), LATCH_OK);
    assert_string_equal(rq.url, "https://eu.ninjarmm.com/oauth/refresh");
    assert_string_equal(rq.body, "grant_type=refresh_token&refresh_token=old-rt%2F%2B%3D&"
                                 "resource=eu.ninjarmm.com");
    assert_non_null(rq.authorization);
    assert_string_equal(rq.authorization, "Basic Y2lkLTEyMzpzM2NyJnQ="); /* cid-123:s3cr&t */
    oauth_cc_request_clear(&rq);

    /* JSON bodies carry the same fields */
    p.body_format = "json";
    assert_int_equal(oauth_cc_build(&in, false, &rq, &err), LATCH_OK);
    assert_string_equal(rq.body, "{\"grant_type\":\"refresh_token\",\"refresh_token\":"
                                 "\"old-rt/+=\",\"resource\":\"eu.ninjarmm.com\"}");
    oauth_cc_request_clear(&rq);

    /* an instance outside the field's rules never reaches a URL */
    json_object_set_new(cfg, "instance", json_string("evil.example/x"));
    p.body_format = NULL;
    assert_int_not_equal(oauth_cc_build(&in, false, &rq, &err), LATCH_OK);
    json_decref(cfg);
}

static void
answer(long status, const char *body, const char *retry_after, struct outbound_resp *r)
{
    memset(r, 0, sizeof *r);
    r->rc = LATCH_OK;
    r->status = status;
    r->body = (char *)(uintptr_t)body;
    r->body_len = strlen(body);
    r->retry_after = (char *)(uintptr_t)retry_after;
}

static void
parse_rotation_and_carry_over(void **state)
{
    struct catalog_provider p = provider();
    json_t *cfg = json_object();
    json_t *prior =
        json_pack("{s:s, s:s, s:s, s:{s:s}}", "type", "OAUTH2", "access_token", "old-at",
                  "refresh_token", "old-rt", "config_override", "client_id", "own-id");
    struct oauth_cc_input in;
    struct outbound_resp r;
    struct oauth_cc_result res;

    (void)state;
    input(&in, &p, cfg, prior);
    answer(200, "{\"access_token\":\"new-at\",\"refresh_token\":\"new-rt\",\"expires_in\":3600}",
           NULL, &r);
    oauth_cc_parse(&r, &in, 1800, &res);
    assert_int_equal(res.outcome, OCC_OK);
    assert_true(res.rotated);
    assert_string_equal(json_string_value(json_object_get(res.creds, "type")), "OAUTH2");
    assert_string_equal(json_string_value(json_object_get(res.creds, "access_token")), "new-at");
    assert_string_equal(json_string_value(json_object_get(res.creds, "refresh_token")), "new-rt");
    assert_non_null(json_object_get(res.creds, "expires_at"));
    assert_non_null(json_object_get(res.creds, "raw"));
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(res.creds, "config_override"), "client_id")),
                        "own-id");
    oauth_cc_result_clear(&res);

    /* no refresh_token in the answer: the stored one is kept */
    answer(200, "{\"access_token\":\"new-at2\",\"expires_in\":60}", NULL, &r);
    oauth_cc_parse(&r, &in, 1800, &res);
    assert_int_equal(res.outcome, OCC_OK);
    assert_false(res.rotated);
    assert_string_equal(json_string_value(json_object_get(res.creds, "refresh_token")),
                        "old-rt/+=");
    oauth_cc_result_clear(&res);
    json_decref(prior);
    json_decref(cfg);
}

static void
parse_classification(void **state)
{
    static const struct {
        long status;
        const char *body;
        enum oauth_cc_outcome outcome;
        bool terminal;
        const char *reason;
    } cases[] = {
        {400, "{\"error\":\"invalid_grant\",\"error_description\":\"Invalid refresh token\"}",
         OCC_INVALID_GRANT, true, "invalid_grant"},
        {401, "{\"error\":\"invalid_client\"}", OCC_INVALID_CLIENT, true, "invalid_client"},
        {400, "{\"error\":\"unauthorized_client\"}", OCC_INVALID_CLIENT, true, "invalid_client"},
        {503, "{\"error\":\"temporarily_unavailable\"}", OCC_UPSTREAM, false, "upstream_error"},
        {500, "oops", OCC_UPSTREAM, false, "upstream_error"},
        {429, "{\"error\":\"invalid_grant\"}", OCC_UPSTREAM, false, "upstream_error"},
        {502, "{\"error\":\"invalid_client\"}", OCC_UPSTREAM, false, "upstream_error"},
        {429, "", OCC_UPSTREAM, false, "upstream_error"},
        {200, "{\"refresh_token\":\"x\"}", OCC_BAD_RESPONSE, false, "bad_response"},
    };
    struct catalog_provider p = provider();
    json_t *cfg = json_object();
    struct oauth_cc_input in;
    struct outbound_resp r;
    struct oauth_cc_result res;

    (void)state;
    input(&in, &p, cfg, NULL);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        answer(cases[i].status, cases[i].body, "7", &r);
        oauth_cc_parse(&r, &in, 1800, &res);
        assert_int_equal(res.outcome, cases[i].outcome);
        assert_int_equal(res.terminal, cases[i].terminal);
        assert_string_equal(res.reason, cases[i].reason);
        assert_null(res.creds);
        /* in the provider's words; no upstream free text */
        assert_true(res.message[0] != '\0');
        assert_null(strstr(res.message, "Invalid refresh token"));
        oauth_cc_result_clear(&res);
    }
    answer(400, "{\"error\":\"invalid_grant\"}", NULL, &r);
    oauth_cc_parse(&r, &in, 1800, &res);
    assert_non_null(strstr(res.message, "NinjaOne RMM (OAuth2) refused the refresh token"));
    assert_non_null(strstr(res.message, "reconnect"));
    answer(503, "", "7", &r);
    oauth_cc_parse(&r, &in, 1800, &res);
    assert_int_equal(res.retry_after_ms, 7000);
    memset(&r, 0, sizeof r);
    r.rc = LATCH_E_TIMEOUT;
    oauth_cc_parse(&r, &in, 1800, &res);
    assert_int_equal(res.outcome, OCC_TIMEOUT);
    assert_false(res.terminal);
    r.rc = LATCH_E_UNAVAILABLE;
    oauth_cc_parse(&r, &in, 1800, &res);
    assert_int_equal(res.outcome, OCC_UNREACHABLE);
    assert_false(res.terminal);
    json_decref(cfg);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(refresh_body_fallback_token_params),
        cmocka_unit_test(refresh_url_params_basic),
        cmocka_unit_test(parse_rotation_and_carry_over),
        cmocka_unit_test(parse_classification),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
