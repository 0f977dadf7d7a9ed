/*
 * fuzz_b64.c - util/b64: strict decoding must be exactly the inverse of encoding.
 *
 * Invariants: (1) decode(x) succeeds => encode(decode(x)) == x (one spelling per byte string);
 * (2) decode(encode(x)) == x for every x; (3) the encoded length is b64_encoded_size(n) - 1;
 * (4) out buffers are exact-size heap blocks (ASan sees any overrun) and one byte too small
 * gives LATCH_E_TOO_LARGE.
 */
#include <string.h>

#include "fuzz.h"
#include "util/b64.h"

static void
check_decode(const uint8_t *data, size_t size)
{
    size_t cap = size / 4 * 3;
    unsigned char *out = malloc(cap > 0 ? cap : 1);
    size_t n = 99;
    latch_rc rc;

    FUZZ_CHECK(out != NULL);
    rc = b64_decode((const char *)data, size, out, cap, &n);
    if (rc != LATCH_OK) {
        FUZZ_CHECK(n == 0);
        goto out;
    }
    FUZZ_CHECK(n <= cap);
    {
        size_t esz = b64_encoded_size(n);
        char *enc = malloc(esz);

        FUZZ_CHECK(enc != NULL);
        FUZZ_CHECK(b64_encode(out, n, enc, esz) == LATCH_OK);
        FUZZ_CHECK(strlen(enc) == size && memcmp(enc, data, size) == 0);
        free(enc);
    }
    if (n > 0) {
        /* exactly-sized output works, one byte less does not */
        unsigned char *exact = malloc(n);
        size_t m = 0;

        FUZZ_CHECK(exact != NULL);
        FUZZ_CHECK(b64_decode((const char *)data, size, exact, n, &m) == LATCH_OK && m == n);
        FUZZ_CHECK(memcmp(exact, out, n) == 0);
        FUZZ_CHECK(b64_decode((const char *)data, size, exact, n - 1, &m) == LATCH_E_TOO_LARGE);
        free(exact);
    }
out:
    free(out);
}

static void
check_encode(const uint8_t *data, size_t size)
{
    size_t esz = b64_encoded_size(size);
    char *enc;
    unsigned char *back;
    size_t n = 0;

    FUZZ_CHECK(esz == (size + 2) / 3 * 4 + 1);
    enc = malloc(esz);
    FUZZ_CHECK(enc != NULL);
    FUZZ_CHECK(b64_encode(data, size, enc, esz - 1) == LATCH_E_TOO_LARGE);
    FUZZ_CHECK(b64_encode(data, size, enc, esz) == LATCH_OK);
    FUZZ_CHECK(strlen(enc) == esz - 1);
    back = malloc(size > 0 ? size : 1);
    FUZZ_CHECK(back != NULL);
    FUZZ_CHECK(b64_decode(enc, esz - 1, back, size, &n) == LATCH_OK);
    FUZZ_CHECK(n == size && (size == 0 || memcmp(back, data, size) == 0));
    free(back);
    free(enc);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_decode(data, size);
    check_encode(data, size);
    return 0;
}
