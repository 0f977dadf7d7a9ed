/*
 * fuzz_vault_envelope.c - vault_open / vault_envelope_kid on hostile envelopes (a stolen or
 * edited database), with a fixed two-key ring.
 *
 * Input byte 0 picks a mode; the rest is the payload.
 *   0: the payload is an envelope text: open must not crash; open OK implies envelope_kid OK
 *      with the same key id; envelope_kid failing implies open fails.
 *   1: seal the payload, open it again: same bytes; the envelope names the primary key.
 *   2: seal a fixed secret, then edit the envelope text with the payload (pairs of position,
 *      byte): any change at all must make open fail (strict base64 + GCM + AAD over the kid).
 *   3: seal under AAD "connections:1:credentials", open under the payload as AAD: success iff
 *      the AADs are equal (row swaps are caught).
 */
#include <string.h>

#include "fuzz.h"
#include "core/log.h"
#include "crypto/vault.h"

#define FIXED_AAD "connections:1:credentials"
#define FIXED_SECRET "{\"client_secret\":\"s3cr3t-canary\",\"token\":\"tok\"}"

static struct vault *vault;

static void
setup(void)
{
    static const unsigned char keys[2][VAULT_KEY_LEN] = {
        {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16,
         17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32},
        {0xa5, 0x5a, 0xa5, 0x5a, 0xa5, 0x5a, 0xa5, 0x5a, 0xa5, 0x5a, 0xa5,
         0x5a, 0xa5, 0x5a, 0xa5, 0x5a, 0xa5, 0x5a, 0xa5, 0x5a, 0xa5, 0x5a,
         0xa5, 0x5a, 0xa5, 0x5a, 0xa5, 0x5a, 0xa5, 0x5a, 0xa5, 0x5a},
    };

    log_min_level = LOG_LVL_ERROR; /* "unknown key id" warnings are expected here */
    FUZZ_CHECK(vault_new_from_keys(keys, 2, &vault) == LATCH_OK);
}

static char *
cstr(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);

    FUZZ_CHECK(s != NULL);
    memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

static void
mode_open(const char *env)
{
    unsigned char *pt = NULL;
    size_t ptlen = 0;
    char kid[VAULT_KID_LEN + 1];
    latch_rc orc = vault_open(vault, FIXED_AAD, env, &pt, &ptlen);
    latch_rc krc = vault_envelope_kid(env, kid);

    if (orc == LATCH_OK) {
        FUZZ_CHECK(pt != NULL && pt[ptlen] == '\0');
        FUZZ_CHECK(krc == LATCH_OK && vault_has_kid(vault, kid));
        vault_plain_free(pt, ptlen);
    } else {
        FUZZ_CHECK(pt == NULL && ptlen == 0);
    }
    if (krc != LATCH_OK)
        FUZZ_CHECK(orc != LATCH_OK);
}

static void
mode_roundtrip(const uint8_t *data, size_t size)
{
    char *env = NULL;
    unsigned char *pt = NULL;
    size_t ptlen = 0;
    char kid[VAULT_KID_LEN + 1], primary[VAULT_KID_LEN + 1];

    FUZZ_CHECK(vault_seal(vault, FIXED_AAD, data, size, &env) == LATCH_OK);
    FUZZ_CHECK(vault_open(vault, FIXED_AAD, env, &pt, &ptlen) == LATCH_OK);
    FUZZ_CHECK(ptlen == size && (size == 0 || memcmp(pt, data, size) == 0));
    FUZZ_CHECK(vault_envelope_kid(env, kid) == LATCH_OK);
    vault_primary_kid(vault, primary);
    FUZZ_CHECK(strcmp(kid, primary) == 0);
    vault_plain_free(pt, ptlen);
    free(env);
}

static void
mode_tamper(const uint8_t *data, size_t size)
{
    char *env = NULL;
    char *orig;
    size_t len;
    unsigned char *pt = NULL;
    size_t ptlen = 0;
    latch_rc rc;

    FUZZ_CHECK(vault_seal(vault, FIXED_AAD, FIXED_SECRET, strlen(FIXED_SECRET), &env) == LATCH_OK);
    len = strlen(env);
    orig = cstr((const uint8_t *)env, len);
    for (size_t i = 0; i + 1 < size; i += 2) {
        size_t pos = data[i] % (len + 1);

        if (pos == len)
            env[len - 1 - (data[i + 1] % len)] = '\0'; /* truncate */
        else if (env[pos] != '\0')
            env[pos] = (char)(data[i + 1] != 0 ? data[i + 1] : '.');
    }
    rc = vault_open(vault, FIXED_AAD, env, &pt, &ptlen);
    if (strcmp(env, orig) != 0) {
        FUZZ_CHECK(rc != LATCH_OK);
    } else {
        FUZZ_CHECK(rc == LATCH_OK && ptlen == strlen(FIXED_SECRET));
        FUZZ_CHECK(memcmp(pt, FIXED_SECRET, ptlen) == 0);
        vault_plain_free(pt, ptlen);
    }
    free(orig);
    free(env);
}

static void
mode_aad(const char *aad)
{
    char *env = NULL;
    unsigned char *pt = NULL;
    size_t ptlen = 0;
    latch_rc rc;

    FUZZ_CHECK(vault_seal(vault, FIXED_AAD, "x", 1, &env) == LATCH_OK);
    rc = vault_open(vault, aad, env, &pt, &ptlen);
    FUZZ_CHECK((rc == LATCH_OK) == (strcmp(aad, FIXED_AAD) == 0));
    vault_plain_free(pt, ptlen);
    free(env);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s;

    if (vault == NULL)
        setup();
    if (size < 1 || size > 64 * 1024)
        return 0;
    s = cstr(data + 1, size - 1);
    switch (data[0] & 3u) {
    case 0:
        mode_open(s);
        break;
    case 1:
        mode_roundtrip(data + 1, size - 1);
        break;
    case 2:
        mode_tamper(data + 1, size - 1);
        break;
    default:
        mode_aad(s);
        break;
    }
    free(s);
    return 0;
}
