/*
 * fuzz_webhook_sign.c - what the webhook sender signs and how: vault_hmac_sha256_hex and
 * vault_sha256_hex over arbitrary bytes, and the sorted compact JSON dump webhook.c queues.
 *
 * Input: byte 0 = key length (0..63), then the key, then the message.
 * Invariants: both digests equal OpenSSL's one-shot HMAC()/SHA256() as lower-case hex; the
 * legacy signature is SHA-256(key || body); when the message is JSON, the sorted compact dump
 * (JSON_COMPACT | JSON_SORT_KEYS, as webhook.c queues it) reparses to an equal value, is
 * byte-identical when dumped again (receivers verify the exact bytes) and holds no raw control
 * characters.
 */
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "fuzz.h"
#include "crypto/vault.h"

static void
to_hex(const unsigned char *d, size_t n, char *out)
{
    static const char hx[] = "0123456789abcdef";

    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hx[d[i] >> 4];
        out[2 * i + 1] = hx[d[i] & 15];
    }
    out[2 * n] = '\0';
}

/* The queued body: sorted compact dump, stable across a reparse. */
static void
check_dump(const char *body, size_t len)
{
    json_t *doc = json_loadb(body, len, JSON_DECODE_ANY, NULL);
    char *d1, *d2;
    json_t *back;

    if (doc == NULL)
        return;
    d1 = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    FUZZ_CHECK(d1 != NULL);
    for (const unsigned char *p = (const unsigned char *)d1; *p != '\0'; p++)
        FUZZ_CHECK(*p >= 0x20);
    back = json_loads(d1, JSON_DECODE_ANY, NULL);
    FUZZ_CHECK(back != NULL && json_equal(back, doc));
    d2 = json_dumps(back, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    FUZZ_CHECK(d2 != NULL && strcmp(d1, d2) == 0);
    free(d2);
    free(d1);
    json_decref(back);
    json_decref(doc);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t klen;
    const uint8_t *key, *msg;
    size_t mlen;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    char ours[65], ref[65];
    unsigned char *cat;

    if (size < 1 || size > 64 * 1024)
        return 0;
    klen = data[0] & 63u;
    if (klen > size - 1)
        klen = size - 1;
    key = data + 1;
    msg = data + 1 + klen;
    mlen = size - 1 - klen;

    memset(ours, 'X', sizeof ours);
    vault_hmac_sha256_hex(key, klen, msg, mlen, ours);
    FUZZ_CHECK(HMAC(EVP_sha256(), klen > 0 ? key : (const uint8_t *)"", (int)klen, msg, mlen, md,
                    &mdlen) != NULL &&
               mdlen == 32);
    to_hex(md, 32, ref);
    FUZZ_CHECK(memcmp(ours, ref, 65) == 0);

    memset(ours, 'X', sizeof ours);
    cat = malloc(klen + mlen + 1);
    FUZZ_CHECK(cat != NULL);
    memcpy(cat, key, klen);
    memcpy(cat + klen, msg, mlen);
    vault_sha256_hex(cat, klen + mlen, ours);
    SHA256(cat, klen + mlen, md);
    to_hex(md, 32, ref);
    FUZZ_CHECK(memcmp(ours, ref, 65) == 0);
    free(cat);

    check_dump((const char *)msg, mlen);
    return 0;
}
