/*
 * test_pwhash.c - scrypt password hashes: an independent vector (Node's crypto.scryptSync),
 * round trip, per-hash salt, wrong passwords, tampered and malformed strings, cost caps.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "crypto/pwhash.h"

/* node -e 'crypto.scryptSync("correct horse battery", "saltsaltsaltsalt", 32, {N:1024,r:8,p:1})' */
static const char vector[] = "scrypt$ln=10,r=8,p=1$c2FsdHNhbHRzYWx0c2FsdA==$"
                             "fXnS5Awj6eMC+z1SbPBpyxEKbW7GHGyuCeVjw7IJSMI=";

static void
test_vector(void **state)
{
    bool ok = false;

    (void)state;
    assert_int_equal(pwhash_verify("correct horse battery", vector, &ok), LATCH_OK);
    assert_true(ok);
    assert_int_equal(pwhash_verify("correct horse batterz", vector, &ok), LATCH_OK);
    assert_false(ok);
}

static void
test_round_trip(void **state)
{
    char *a = NULL, *b = NULL;
    bool ok = false;

    (void)state;
    assert_int_equal(pwhash_make("a long enough password", &a), LATCH_OK);
    assert_int_equal(pwhash_make("a long enough password", &b), LATCH_OK);
    assert_non_null(strstr(a, "scrypt$ln=17,r=8,p=1$"));
    assert_string_not_equal(a, b); /* a salt per hash */
    assert_int_equal(pwhash_verify("a long enough password", a, &ok), LATCH_OK);
    assert_true(ok);
    assert_int_equal(pwhash_verify("a long enough passwore", a, &ok), LATCH_OK);
    assert_false(ok);
    free(a);
    free(b);
}

static void
test_malformed(void **state)
{
    static const char *const bad[] = {
        "",
        "scrypt$ln=10,r=8,p=1$c2FsdHNhbHRzYWx0c2FsdA==",
        "bcrypt$ln=10,r=8,p=1$c2FsdHNhbHRzYWx0c2FsdA==$fXnS5Awj6eMC+"
        "z1SbPBpyxEKbW7GHGyuCeVjw7IJSMI=",
        "scrypt$ln=30,r=8,p=1$c2FsdHNhbHRzYWx0c2FsdA==$fXnS5Awj6eMC+"
        "z1SbPBpyxEKbW7GHGyuCeVjw7IJSMI=",
        "scrypt$ln=10,r=99,p=1$c2FsdHNhbHRzYWx0c2FsdA==$fXnS5Awj6eMC+"
        "z1SbPBpyxEKbW7GHGyuCeVjw7IJSMI=",
        "scrypt$ln=10,r=8,p=1$c2FsdHNhbHRzYWx0c2FsdA==$fXnS5Awj6eMC+z1SbPBpyxEKbW7GHGyuCeVjw7IJSMI="
        "x!",
        "scrypt$ln=10,r=8,p=1$c2FsdHNhbHRzYWx0c2FsdA==$AAAA",
        "scrypt$ln=,r=8,p=1$c2FsdHNhbHRzYWx0c2FsdA==$fXnS5Awj6eMC+z1SbPBpyxEKbW7GHGyuCeVjw7IJSMI=",
    };
    bool ok = true;

    (void)state;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(pwhash_verify("correct horse battery", bad[i], &ok), LATCH_E_INVAL);
        assert_false(ok);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vector),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_malformed),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
