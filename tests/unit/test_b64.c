/*
 * test_b64.c - strict base64 codec: RFC 4648 vectors, round trips, rejects.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>

#include <cmocka.h>

#include "util/b64.h"

struct vec {
    const char *plain;
    const char *enc;
};

/* RFC 4648 section 10 */
static const struct vec rfc_vectors[] = {
    {"", ""},
    {"f", "Zg=="},
    {"fo", "Zm8="},
    {"foo", "Zm9v"},
    {"foob", "Zm9vYg=="},
    {"fooba", "Zm9vYmE="},
    {"foobar", "Zm9vYmFy"},
};

static void
test_rfc_vectors(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < sizeof rfc_vectors / sizeof rfc_vectors[0]; i++) {
        const struct vec *t = &rfc_vectors[i];
        size_t plen = strlen(t->plain), elen = strlen(t->enc), n = 99;
        char enc[32];
        unsigned char dec[32];

        assert_int_equal(b64_encoded_size(plen), elen + 1);
        assert_int_equal(b64_encode(t->plain, plen, enc, sizeof enc), LATCH_OK);
        assert_string_equal(enc, t->enc);
        assert_int_equal(b64_decode(t->enc, elen, dec, sizeof dec, &n), LATCH_OK);
        assert_int_equal(n, plen);
        assert_memory_equal(dec, t->plain, plen);
    }
}

static void
test_alphabet_edges(void **state)
{
    static const unsigned char all_ones[3] = {0xff, 0xff, 0xff};
    static const unsigned char mix[6] = {0xfb, 0xff, 0xbf, 0x00, 0x10, 0x83};
    unsigned char dec[8];
    char enc[16];
    size_t n = 0;

    (void)state;
    assert_int_equal(b64_encode(all_ones, 3, enc, sizeof enc), LATCH_OK);
    assert_string_equal(enc, "////");
    assert_int_equal(b64_encode(mix, 6, enc, sizeof enc), LATCH_OK);
    assert_string_equal(enc, "+/+/ABCD");
    assert_int_equal(b64_decode("+/+/ABCD", 8, dec, sizeof dec, &n), LATCH_OK);
    assert_int_equal(n, 6);
    assert_memory_equal(dec, mix, 6);
    assert_int_equal(b64_decode("AZaz09+/", 8, dec, sizeof dec, &n), LATCH_OK);
    assert_int_equal(n, 6);
}

static void
test_round_trip_all_lengths(void **state)
{
    unsigned char in[64], dec[64];
    char enc[128];
    size_t len, i, n;

    (void)state;
    for (len = 0; len <= 64; len++) {
        for (i = 0; i < len; i++)
            in[i] = (unsigned char)(i * 37 + len * 11 + 0x80);
        assert_int_equal(b64_encode(in, len, enc, sizeof enc), LATCH_OK);
        assert_int_equal(strlen(enc) + 1, b64_encoded_size(len));
        assert_int_equal(strlen(enc) % 4, 0);
        n = 12345;
        /* the header's documented bound is always enough */
        assert_int_equal(b64_decode(enc, strlen(enc), dec, 3 * (strlen(enc) / 4), &n), LATCH_OK);
        assert_int_equal(n, len);
        assert_memory_equal(dec, in, len);
    }
}

static void
test_encode_buffer_too_small(void **state)
{
    char enc[9];

    (void)state;
    assert_int_equal(b64_encode("foobar", 6, enc, 8), LATCH_E_TOO_LARGE); /* needs 9 */
    assert_int_equal(b64_encode("foobar", 6, enc, 9), LATCH_OK);
    assert_string_equal(enc, "Zm9vYmFy");
}

static void
test_decode_buffer_too_small(void **state)
{
    unsigned char dec[8];
    size_t n = 7;

    (void)state;
    assert_int_equal(b64_decode("Zm9vYmFy", 8, dec, 5, &n), LATCH_E_TOO_LARGE);
    assert_int_equal(n, 0);
    assert_int_equal(b64_decode("Zm9vYg==", 8, dec, 4, &n), LATCH_OK);
    assert_int_equal(n, 4);
}

/* Each must be rejected (LATCH_E_INVAL). */
static const char *const rejects[] = {
    "Zg",         /* missing padding */
    "Zg=",        /* short padding */
    "Zm9",        /* length not a multiple of 4 */
    "Zg===",      /* extra padding */
    "Zg==Zg==",   /* padding in the middle */
    "Zm8=Zm8=",   /* padding in the middle */
    "Z===",       /* three pads */
    "====",       /* only pads */
    "=Zg=",       /* leading pad */
    "Zm=v",       /* pad then data */
    "Zh==",       /* non-zero trailing bits (4 unused) */
    "Zm9=",       /* non-zero trailing bits (2 unused) */
    "Zm9v ",      /* trailing space (length 5) */
    "Zm9 v",      /* embedded space */
    " Zm9",       /* leading space */
    "Zm9v\nYmFy", /* newline */
    "Zm9\tv",     /* tab */
    "Zm9vYmF\r",  /* CR */
    "Zm9-",       /* base64url char */
    "Zm9_",       /* base64url char */
    "Zm9.",       /* dot */
    "Zm9\x80",    /* high byte */
    "Zm9\xff",    /* high byte */
    "Zm9*",       /* punctuation */
};

static void
test_rejects(void **state)
{
    unsigned char dec[64];
    size_t i, n;

    (void)state;
    for (i = 0; i < sizeof rejects / sizeof rejects[0]; i++) {
        n = 77;
        if (b64_decode(rejects[i], strlen(rejects[i]), dec, sizeof dec, &n) != LATCH_E_INVAL)
            fail_msg("accepted invalid base64 #%zu \"%s\"", i, rejects[i]);
        assert_int_equal(n, 0);
    }
}

static void
test_embedded_nul(void **state)
{
    static const char with_nul[8] = {'Z', 'm', '9', 'v', 'Y', '\0', 'F', 'y'};
    static const char nul_pad[4] = {'Z', 'g', '=', '\0'};
    unsigned char dec[16];
    size_t n = 5;

    (void)state;
    assert_int_equal(b64_decode(with_nul, 8, dec, sizeof dec, &n), LATCH_E_INVAL);
    assert_int_equal(n, 0);
    assert_int_equal(b64_decode(nul_pad, 4, dec, sizeof dec, &n), LATCH_E_INVAL);
}

static void
test_every_byte_value(void **state)
{
    /* exactly 64 byte values are in the alphabet; '=' only as padding */
    unsigned char dec[8];
    char in[5];
    size_t n;
    int c, accepted = 0;

    (void)state;
    for (c = 0; c < 256; c++) {
        in[0] = 'A';
        in[1] = 'A';
        in[2] = 'A';
        in[3] = (char)c;
        in[4] = '\0';
        if (b64_decode(in, 4, dec, sizeof dec, &n) == LATCH_OK) {
            if (c == '=')
                continue; /* "AAA=" is valid padding */
            accepted++;
            assert_int_equal(n, 3);
        }
    }
    assert_int_equal(accepted, 64);
}

static void
test_null_args(void **state)
{
    unsigned char dec[4];
    size_t n = 3;

    (void)state;
    assert_int_equal(b64_decode("", 0, NULL, 0, &n), LATCH_OK);
    assert_int_equal(n, 0);
    assert_int_equal(b64_decode("Zg==", 4, dec, sizeof dec, NULL), LATCH_E_INVAL);
    assert_int_equal(b64_encode(NULL, 3, (char *)dec, sizeof dec), LATCH_E_INVAL);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc_vectors),
        cmocka_unit_test(test_alphabet_edges),
        cmocka_unit_test(test_round_trip_all_lengths),
        cmocka_unit_test(test_encode_buffer_too_small),
        cmocka_unit_test(test_decode_buffer_too_small),
        cmocka_unit_test(test_rejects),
        cmocka_unit_test(test_embedded_nul),
        cmocka_unit_test(test_every_byte_value),
        cmocka_unit_test(test_null_args),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
