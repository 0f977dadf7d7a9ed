/*
 * pwhash.c - scrypt password hashes (see pwhash.h).
 */
#include "crypto/pwhash.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "util/b64.h"
#include "util/xalloc.h"

#define SALT_LEN 16
#define KEY_LEN 32
/* the largest cost a stored string may ask for (a tampered row must not exhaust memory) */
#define MAX_LOG2_N 20
#define MAX_R 16
#define MAX_P 4

static latch_rc
derive(const char *password, const unsigned char *salt, size_t salt_len, unsigned ln, unsigned r,
       unsigned p, unsigned char out[KEY_LEN])
{
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "SCRYPT", NULL);
    EVP_KDF_CTX *ctx = NULL;
    uint64_t n = (uint64_t)1 << ln;
    uint32_t rr = r, pp = p;
    /* 128 * r * N for V plus 256 * r (+ p blocks); ask for twice that as headroom */
    uint64_t maxmem = (uint64_t)256 * r * n + ((uint64_t)1 << 20);
    OSSL_PARAM params[7], *q = params;
    latch_rc rc = LATCH_E_INTERNAL;

    if (kdf == NULL)
        return LATCH_E_INTERNAL;
    ctx = EVP_KDF_CTX_new(kdf);
    EVP_KDF_free(kdf);
    if (ctx == NULL)
        return LATCH_E_INTERNAL;
    *q++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_PASSWORD, (void *)(uintptr_t)password,
                                             strlen(password));
    *q++ =
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)(uintptr_t)salt, salt_len);
    *q++ = OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_N, &n);
    *q++ = OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_R, &rr);
    *q++ = OSSL_PARAM_construct_uint32(OSSL_KDF_PARAM_SCRYPT_P, &pp);
    *q++ = OSSL_PARAM_construct_uint64(OSSL_KDF_PARAM_SCRYPT_MAXMEM, &maxmem);
    *q = OSSL_PARAM_construct_end();
    if (EVP_KDF_derive(ctx, out, KEY_LEN, params) == 1)
        rc = LATCH_OK;
    EVP_KDF_CTX_free(ctx);
    return rc;
}

latch_rc
pwhash_make(const char *password, char **out)
{
    unsigned char salt[SALT_LEN], key[KEY_LEN];
    char salt_b64[32], key_b64[48];
    latch_rc rc;

    *out = NULL;
    if (password == NULL || strlen(password) > PWHASH_MAX_LEN)
        return LATCH_E_INVAL;
    if (RAND_bytes(salt, sizeof salt) != 1)
        return LATCH_E_INTERNAL;
    rc = derive(password, salt, sizeof salt, PWHASH_LOG2_N, PWHASH_R, PWHASH_P, key);
    if (rc == LATCH_OK)
        rc = b64_encode(salt, sizeof salt, salt_b64, sizeof salt_b64);
    if (rc == LATCH_OK)
        rc = b64_encode(key, sizeof key, key_b64, sizeof key_b64);
    if (rc == LATCH_OK)
        *out = xasprintf("scrypt$ln=%d,r=%d,p=%d$%s$%s", PWHASH_LOG2_N, PWHASH_R, PWHASH_P,
                         salt_b64, key_b64);
    OPENSSL_cleanse(key, sizeof key);
    return rc;
}

/* Reads an unsigned decimal at *s (at most 6 digits), then expects the character end. */
static bool
parse_uint(const char **s, char end, unsigned *out)
{
    unsigned v = 0;
    int n = 0;

    while (**s >= '0' && **s <= '9' && n < 6) {
        v = v * 10 + (unsigned)(**s - '0');
        (*s)++;
        n++;
    }
    if (n == 0 || **s != end)
        return false;
    (*s)++;
    *out = v;
    return true;
}

/* Copies base64 characters up to end (or the string's end when end is 0) into out[64]. */
static bool
parse_b64(const char **s, char end, char out[64])
{
    size_t n = 0;

    while (**s != end && **s != '\0' && n < 63) {
        char c = **s;

        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '+' || c == '/' || c == '='))
            return false;
        out[n++] = c;
        (*s)++;
    }
    out[n] = '\0';
    if (n == 0 || **s != end)
        return false;
    if (end != '\0')
        (*s)++;
    return true;
}

/* "scrypt$ln=L,r=R,p=P$salt$key" */
static bool
parse(const char *s, unsigned *ln, unsigned *r, unsigned *p, char salt[64], char key[64])
{
    if (strncmp(s, "scrypt$ln=", 10) != 0)
        return false;
    s += 10;
    if (!parse_uint(&s, ',', ln) || strncmp(s, "r=", 2) != 0)
        return false;
    s += 2;
    if (!parse_uint(&s, ',', r) || strncmp(s, "p=", 2) != 0)
        return false;
    s += 2;
    return parse_uint(&s, '$', p) && parse_b64(&s, '$', salt) && parse_b64(&s, '\0', key);
}

latch_rc
pwhash_verify(const char *password, const char *encoded, bool *match)
{
    unsigned ln, r, p;
    char salt_b64[64], key_b64[64];
    unsigned char salt[48], want[48], got[KEY_LEN];
    size_t salt_len = 0, want_len = 0;
    latch_rc rc;

    *match = false;
    if (password == NULL || encoded == NULL || strlen(password) > PWHASH_MAX_LEN)
        return LATCH_E_INVAL;
    if (!parse(encoded, &ln, &r, &p, salt_b64, key_b64))
        return LATCH_E_INVAL;
    if (ln < 10 || ln > MAX_LOG2_N || r < 1 || r > MAX_R || p < 1 || p > MAX_P)
        return LATCH_E_INVAL;
    if (b64_decode(salt_b64, strlen(salt_b64), salt, sizeof salt, &salt_len) != LATCH_OK ||
        b64_decode(key_b64, strlen(key_b64), want, sizeof want, &want_len) != LATCH_OK ||
        salt_len < 8 || want_len != KEY_LEN)
        return LATCH_E_INVAL;
    rc = derive(password, salt, salt_len, ln, r, p, got);
    if (rc == LATCH_OK)
        *match = CRYPTO_memcmp(got, want, KEY_LEN) == 0;
    OPENSSL_cleanse(got, sizeof got);
    return rc;
}

void
pwhash_dummy_verify(const char *password)
{
    static const unsigned char salt[SALT_LEN] = "latch-no-account";
    unsigned char got[KEY_LEN];

    if (password == NULL || strlen(password) > PWHASH_MAX_LEN)
        return;
    (void)derive(password, salt, sizeof salt, PWHASH_LOG2_N, PWHASH_R, PWHASH_P, got);
    OPENSSL_cleanse(got, sizeof got);
}
