/*
 * fuzz_token_response.c - oauth_cc_parse on a hostile token endpoint's answer (arbitrary
 * status, content type, Retry-After and body), with the real ninjaone-rmm provider.
 *
 * Input: byte 0 picks the status (or takes it raw), byte 1 the transport result, byte 2 the
 * default lifetime; then "content-type\nretry-after\n" and the body.
 * Invariants: the result message/reason are NUL-terminated printable ASCII (they reach logs,
 * webhooks and the Connect UI) and never hold the client secret or any piece of it, even when
 * the upstream body echoes it (only registered OAuth2 error codes are taken from upstream); OCC_OK
 * <=> credentials present, only for a 2xx with a non-empty token of at most LATCH_MAX_TOKEN_LEN
 * bytes, with a future expiry; the credentials seal and reopen (the path a link takes next).
 */
#include <string.h>

#include <jansson.h>

#include "domain/catalog.h"
#include "domain/creds.h"
#include "fuzz.h"
#include "core/latch_limits.h"
#include "core/log.h"
#include "domain/oauth_cc.h"
#include "net/outbound.h"
#include "store/store.h"
#include "crypto/vault.h"
#include "util/clock.h"

#define CANARY_SECRET "CANARY-client-secret-7f3a9c"

static struct catalog *cat;
static const struct catalog_provider *prov;
static json_t *cfg;
static struct vault *vault;

static void
setup(void)
{
    static const unsigned char key[1][VAULT_KEY_LEN] = {{7}};
    struct latch_err err;

    log_min_level = LOG_LVL_ERROR;
    FUZZ_CHECK(catalog_load_default(&cat, &err) == LATCH_OK);
    prov = catalog_find(cat, "ninjaone-rmm");
    FUZZ_CHECK(prov != NULL);
    cfg = json_pack("{s:s, s:s}", "instance", "app.ninjarmm.com", "oauth_scopes",
                    "monitoring management control");
    FUZZ_CHECK(cfg != NULL);
    FUZZ_CHECK(vault_new_from_keys(key, 1, &vault) == LATCH_OK);
}

static const long statuses[16] = {200, 200, 201, 204, 299, 301, 400, 401,
                                  403, 408, 429, 500, 502, 503, 0,   -1};
static const latch_rc rcs[8] = {LATCH_OK,          LATCH_OK,           LATCH_OK,
                                LATCH_OK,          LATCH_E_TIMEOUT,    LATCH_E_DENIED,
                                LATCH_E_TOO_LARGE, LATCH_E_UNAVAILABLE};
static const int defaults[4] = {3600, 1, 0, 86400};

static char *
take_line(const uint8_t **p, size_t *n)
{
    const uint8_t *nl = memchr(*p, '\n', *n);
    size_t len = nl != NULL ? (size_t)(nl - *p) : *n;
    char *s = malloc(len + 1);

    FUZZ_CHECK(s != NULL);
    memcpy(s, *p, len);
    s[len] = '\0';
    *p += nl != NULL ? len + 1 : len;
    *n -= nl != NULL ? len + 1 : len;
    return s;
}

static void
check_text(const char *s, size_t cap)
{
    const char *end = memchr(s, '\0', cap);

    FUZZ_CHECK(end != NULL);
    for (const char *p = s; p < end; p++)
        FUZZ_CHECK(*p >= 0x20 && *p < 0x7f);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct outbound_resp resp;
    struct oauth_cc_input in;
    struct oauth_cc_result res;
    const uint8_t *p;
    size_t n;

    if (cat == NULL)
        setup();
    if (size < 3 || size > LATCH_MAX_TOKEN_RESPONSE + 512)
        return 0;
    memset(&resp, 0, sizeof resp);
    resp.status = statuses[data[0] & 15u];
    if (resp.status < 0)
        resp.status = (long)(data[0] >> 4) * 37 + 100;
    resp.rc = rcs[data[1] & 7u];
    p = data + 3;
    n = size - 3;
    resp.content_type = take_line(&p, &n);
    resp.retry_after = take_line(&p, &n);
    /* outbound hands over a NUL-terminated owned copy; NULL when empty */
    if (n > 0) {
        resp.body = malloc(n + 1);
        FUZZ_CHECK(resp.body != NULL);
        memcpy(resp.body, p, n);
        resp.body[n] = '\0';
        resp.body_len = n;
    }

    memset(&in, 0, sizeof in);
    in.provider = prov;
    in.connection_config = cfg;
    in.client_id = "fuzz-client-id";
    in.client_secret = CANARY_SECRET;
    oauth_cc_parse(&resp, &in, defaults[data[2] & 3u] > 0 ? defaults[data[2] & 3u] : 3600, &res);

    check_text(res.reason, sizeof res.reason);
    check_text(res.message, sizeof res.message);
    FUZZ_CHECK(strstr(res.message, "CANARY") == NULL);
    FUZZ_CHECK(strstr(res.reason, "CANARY") == NULL);
    if (res.outcome == OCC_OK) {
        json_t *tok;
        char *sealed = NULL;
        json_t *back = NULL;
        const struct creds_owner owner = {1, "integration", "connection",
                                          "00000000-0000-4000-8000-000000000000"};

        FUZZ_CHECK(resp.rc == LATCH_OK && resp.status >= 200 && resp.status < 300);
        FUZZ_CHECK(json_is_object(res.creds));
        tok = json_object_get(res.creds, "token");
        FUZZ_CHECK(json_is_string(tok) && json_string_length(tok) > 0 &&
                   json_string_length(tok) <= LATCH_MAX_TOKEN_LEN);
        FUZZ_CHECK(res.expires_at > latch_now_ms());
        FUZZ_CHECK(creds_seal(vault, &owner, res.creds, &sealed) == LATCH_OK);
        FUZZ_CHECK(creds_open(vault, &owner, sealed, &back) == LATCH_OK);
        FUZZ_CHECK(json_equal(back, res.creds));
        creds_free(back);
        free(sealed);
    } else {
        FUZZ_CHECK(res.creds == NULL);
        FUZZ_CHECK(res.reason[0] != '\0');
    }
    oauth_cc_result_clear(&res);
    FUZZ_CHECK(res.creds == NULL);
    free(resp.body);
    free(resp.content_type);
    free(resp.retry_after);
    return 0;
}
