/*
 * test_tmpl.c - the ${...} template interpreter: substitution, `||` fallbacks, base64(),
 * URL encoding, every error path, the bounds, and a garbage-input loop (run under ASan).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/latch_limits.h"
#include "util/rc.h"
#include "domain/tmpl.h"

#define NINJA_TOKEN_URL                                                                            \
    "https://${connectionConfig.instance}/ws/oauth/token || "                                      \
    "https://app.ninjarmm.com/ws/oauth/token"
#define NINJA_BASE_URL "https://${connectionConfig.instance} || https://app.ninjarmm.com"

struct vars {
    const char *const *kv; /* name, value, name, value, ..., NULL */
    int calls;
};

static const char *
lookup(const char *name, void *ud)
{
    struct vars *v = ud;
    size_t i;

    v->calls++;
    for (i = 0; v->kv[i] != NULL; i += 2)
        if (strcmp(v->kv[i], name) == 0)
            return v->kv[i + 1];
    return NULL;
}

static const char *const no_vars[] = {NULL};
static const char *const std_vars[] = {
    "connectionConfig.instance",
    "eu.ninjarmm.com",
    "credentials.username",
    "user",
    "credentials.password",
    "pass",
    "credentials.empty",
    "",
    "apiKey",
    "k3y",
    "odd",
    "a b/c@d?e=f&g+h%",
    "unicode",
    "caf\xc3\xa9",
    NULL,
};

struct ok_case {
    const char *tmpl;
    unsigned flags;
    const char *want;
};

static const struct ok_case ok_cases[] = {
    {NINJA_TOKEN_URL, 0, "https://eu.ninjarmm.com/ws/oauth/token"},
    {NINJA_BASE_URL, 0, "https://eu.ninjarmm.com"},
    {NINJA_BASE_URL, TMPL_URL_ENCODE, "https://eu.ninjarmm.com"},
    {"plain text", 0, "plain text"},
    {"", 0, ""},
    {"  padded  ", 0, "padded"},
    {"${apiKey}", 0, "k3y"},
    {"Bearer ${apiKey}", 0, "Bearer k3y"},
    {"${ apiKey }", 0, "k3y"},
    {"${apiKey}${apiKey}", 0, "k3yk3y"},
    {"Basic ${base64(${credentials.username}:${credentials.password})}", 0, "Basic dXNlcjpwYXNz"},
    {"${base64(literal)}", 0, "bGl0ZXJhbA=="},
    {"${base64()}", 0, ""},
    {"${base64(${base64(${credentials.username})})}", 0, "ZFhObGNnPT0="},
    {"${base64(${credentials.username}/token:${credentials.password})}", 0, "dXNlci90b2tlbjpwYXNz"},
    /* || inside function arguments */
    {"${base64(${nope} || ${credentials.username})}", 0, "dXNlcg=="},
    /* three alternatives: the first complete one wins, each is trimmed */
    {"${a}/x || ${b}/y || last", 0, "last"},
    {"${a}/x || ${apiKey}/y || last", 0, "k3y/y"},
    {"${apiKey}/x || ${b}/y || last", 0, "k3y/x"},
    /* an empty value counts as unset */
    {"${credentials.empty} || fallback", 0, "fallback"},
    /* partially resolved alternative is not used */
    {"${apiKey}-${nope} || other", 0, "other"},
    /* URL encoding applies to values only, never to literal text */
    {"https://h/${odd}?q=1 ", TMPL_URL_ENCODE, "https://h/a%20b%2Fc%40d%3Fe%3Df%26g%2Bh%25?q=1"},
    {"https://h/${odd}", 0, "https://h/a b/c@d?e=f&g+h%"},
    {"${unicode}", TMPL_URL_ENCODE, "caf%C3%A9"},
    {"${base64(${credentials.username}:${credentials.password})}", TMPL_URL_ENCODE, "dXNlcjpwYXNz"},
    {"${base64(\?\?>)}", TMPL_URL_ENCODE, "Pz8%2B"},
    /* lone $, braces and parens outside ${} are literal text */
    {"a$b {c} (d) $", 0, "a$b {c} (d) $"},
    {"{\"k\": \"${apiKey}\"}", 0, "{\"k\": \"k3y\"}"},
};

static void
test_ok_cases(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < sizeof ok_cases / sizeof ok_cases[0]; i++) {
        struct vars v = {std_vars, 0};
        struct latch_err err = {{0}};
        char out[512];
        latch_rc rc;

        memset(out, 'Z', sizeof out);
        rc = tmpl_eval(ok_cases[i].tmpl, lookup, &v, ok_cases[i].flags, out, sizeof out, &err);
        if (rc != LATCH_OK)
            print_error("case %zu (%s): rc=%d err=%s\n", i, ok_cases[i].tmpl, rc, err.msg);
        assert_int_equal(rc, LATCH_OK);
        if (strcmp(out, ok_cases[i].want) != 0)
            print_error("case %zu (%s): got '%s'\n", i, ok_cases[i].tmpl, out);
        assert_string_equal(out, ok_cases[i].want);
    }
}

static void
test_ninjaone_without_instance(void **state)
{
    struct vars v = {no_vars, 0};
    struct latch_err err = {{0}};
    char out[256];

    (void)state;
    assert_int_equal(tmpl_eval(NINJA_TOKEN_URL, lookup, &v, TMPL_URL_ENCODE, out, sizeof out, &err),
                     LATCH_OK);
    assert_string_equal(out, "https://app.ninjarmm.com/ws/oauth/token");
    assert_int_equal(tmpl_eval(NINJA_BASE_URL, lookup, &v, 0, out, sizeof out, &err), LATCH_OK);
    assert_string_equal(out, "https://app.ninjarmm.com");
    /* a NULL lookup is "nothing is set" */
    assert_int_equal(tmpl_eval(NINJA_BASE_URL, NULL, NULL, 0, out, sizeof out, &err), LATCH_OK);
    assert_string_equal(out, "https://app.ninjarmm.com");
}

static void
test_skipped_alternatives_are_not_looked_up(void **state)
{
    struct vars v = {std_vars, 0};
    struct latch_err err = {{0}};
    char out[64];

    (void)state;
    assert_int_equal(
        tmpl_eval("${apiKey} || ${odd} || ${unicode}", lookup, &v, 0, out, sizeof out, &err),
        LATCH_OK);
    assert_string_equal(out, "k3y");
    assert_int_equal(v.calls, 1);
}

struct err_case {
    const char *tmpl;
    latch_rc rc;
    const char *msg_has;
};

static const struct err_case err_cases[] = {
    {"https://${connectionConfig.instance", LATCH_E_INVAL, "unterminated ${"},
    {"${", LATCH_E_INVAL, "unterminated ${"},
    {"abc ${apiKey", LATCH_E_INVAL, "unterminated"},
    {"${base64(${apiKey})", LATCH_E_INVAL, "unterminated"},
    {"${base64(${apiKey}", LATCH_E_INVAL, "unterminated"},
    {"${base64(x", LATCH_E_INVAL, "unterminated"},
    {"${}", LATCH_E_INVAL, "empty"},
    {"${ }", LATCH_E_INVAL, "empty"},
    {"${sha256(x)}", LATCH_E_INVAL, "unknown function 'sha256'"},
    {"${now:YYYY-MM-DD}", LATCH_E_INVAL, "unsupported"},
    {"${a b}", LATCH_E_INVAL, "expected }"},
    {"${a|b}", LATCH_E_INVAL, "expected }"},
    {"${base64(a}b)}", LATCH_E_INVAL, "unexpected }"},
    {"${base64(a,b)}", LATCH_E_INVAL, "one argument"},
    {"${base64(a) x}", LATCH_E_INVAL, "expected }"},
    {"${${apiKey}}", LATCH_E_INVAL, "unexpected character"},
    /* a syntax error in an alternative that is never taken is still an error */
    {"${apiKey} || ${", LATCH_E_INVAL, "unterminated"},
    {"${apiKey} || ${md5(x)}", LATCH_E_INVAL, "unknown function"},
    /* missing parameters: the message names the first variable that was unset */
    {"https://${connectionConfig.region}/x", LATCH_E_INVAL,
     "missing parameter: connectionConfig.region"},
    {"${first} || ${second}", LATCH_E_INVAL, "missing parameter: first"},
    {"${base64(${credentials.username}:${credentials.nope})}", LATCH_E_INVAL,
     "missing parameter: credentials.nope"},
    {"${credentials.empty}", LATCH_E_INVAL, "missing parameter: credentials.empty"},
    {"${base64(${nope} || ${credentials.username})}/${region}", LATCH_E_INVAL,
     "missing parameter: region"},
    {"${a} || ${base64(${b} || ${c})} || x${d}", LATCH_E_INVAL, "missing parameter: a"},
};

static void
test_error_cases(void **state)
{
    size_t i;

    (void)state;
    for (i = 0; i < sizeof err_cases / sizeof err_cases[0]; i++) {
        struct vars v = {std_vars, 0};
        struct latch_err err = {{0}};
        char out[256];
        latch_rc rc;

        rc = tmpl_eval(err_cases[i].tmpl, lookup, &v, 0, out, sizeof out, &err);
        if (rc != err_cases[i].rc || strstr(err.msg, err_cases[i].msg_has) == NULL)
            print_error("case %zu (%s): rc=%d err=%s\n", i, err_cases[i].tmpl, rc, err.msg);
        assert_int_equal(rc, err_cases[i].rc);
        assert_non_null(strstr(err.msg, err_cases[i].msg_has));
        /* nothing half-built is left in the output */
        assert_string_equal(out, "");
    }
}

static void
test_bad_arguments(void **state)
{
    struct latch_err err = {{0}};
    char out[16];

    (void)state;
    assert_int_equal(tmpl_eval(NULL, lookup, NULL, 0, out, sizeof out, &err), LATCH_E_INVAL);
    assert_int_equal(tmpl_eval("x", lookup, NULL, 0, NULL, 0, &err), LATCH_E_INVAL);
    assert_int_equal(tmpl_eval("x", lookup, NULL, 0, out, 0, &err), LATCH_E_INVAL);
    /* err may be NULL */
    assert_int_equal(tmpl_eval("${", NULL, NULL, 0, out, sizeof out, NULL), LATCH_E_INVAL);
}

static void
test_output_bound(void **state)
{
    struct vars v = {std_vars, 0};
    struct latch_err err = {{0}};
    char out[8];

    (void)state;
    /* exactly fits: 7 bytes + NUL */
    assert_int_equal(tmpl_eval("1234567", lookup, &v, 0, out, sizeof out, &err), LATCH_OK);
    assert_string_equal(out, "1234567");
    assert_int_equal(tmpl_eval("12345678", lookup, &v, 0, out, sizeof out, &err),
                     LATCH_E_TOO_LARGE);
    assert_string_equal(out, "");
    assert_int_equal(tmpl_eval("12345${apiKey}", lookup, &v, 0, out, sizeof out, &err),
                     LATCH_E_TOO_LARGE);
    /* percent-encoding triples the size of a value */
    assert_int_equal(tmpl_eval("${odd}", lookup, &v, TMPL_URL_ENCODE, out, sizeof out, &err),
                     LATCH_E_TOO_LARGE);
    assert_int_equal(tmpl_eval("${base64(${odd})}", lookup, &v, 0, out, sizeof out, &err),
                     LATCH_E_TOO_LARGE);
    assert_non_null(strstr(err.msg, "exceeds"));
    assert_int_equal(tmpl_eval("x", lookup, &v, 0, out, 1, &err), LATCH_E_TOO_LARGE);
    assert_int_equal(tmpl_eval("", lookup, &v, 0, out, 1, &err), LATCH_OK);
}

static void
test_input_bound(void **state)
{
    static char big[4096 + 2];
    struct latch_err err = {{0}};
    char out[16];

    (void)state;
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(tmpl_eval(big, NULL, NULL, 0, out, sizeof out, &err), LATCH_E_TOO_LARGE);
    big[4096] = '\0';
    /* 4096 bytes are accepted as input (and then the output bound hits) */
    assert_int_equal(tmpl_eval(big, NULL, NULL, 0, out, sizeof out, &err), LATCH_E_TOO_LARGE);
    assert_non_null(strstr(err.msg, "exceeds"));
}

static void
build_nested(char *dst, size_t size, int levels)
{
    size_t n = 0;
    int i;

    for (i = 0; i < levels; i++)
        n += (size_t)snprintf(dst + n, size - n, "${base64(");
    n += (size_t)snprintf(dst + n, size - n, "${apiKey}");
    for (i = 0; i < levels; i++)
        n += (size_t)snprintf(dst + n, size - n, ")}");
}

static void
test_depth_bound(void **state)
{
    struct vars v = {std_vars, 0};
    struct latch_err err = {{0}};
    char t[512], out[1024];

    (void)state;
    /* levels + 1 placeholders deep */
    build_nested(t, sizeof t, LATCH_MAX_TMPL_DEPTH - 1);
    assert_int_equal(tmpl_eval(t, lookup, &v, 0, out, sizeof out, &err), LATCH_OK);
    build_nested(t, sizeof t, LATCH_MAX_TMPL_DEPTH);
    assert_int_equal(tmpl_eval(t, lookup, &v, 0, out, sizeof out, &err), LATCH_E_TOO_LARGE);
    assert_non_null(strstr(err.msg, "nesting"));
}

static void
test_has_placeholders(void **state)
{
    (void)state;
    assert_true(tmpl_has_placeholders(NINJA_BASE_URL));
    assert_true(tmpl_has_placeholders("${"));
    assert_false(tmpl_has_placeholders("https://app.ninjarmm.com"));
    assert_false(tmpl_has_placeholders("$ {x}"));
    assert_false(tmpl_has_placeholders(""));
    assert_false(tmpl_has_placeholders(NULL));
}

/* xorshift: deterministic, no rand() */
static uint32_t
next_rand(uint32_t *s)
{
    uint32_t x = *s;

    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *s = x;
    return x;
}

static void
test_garbage_does_not_crash(void **state)
{
    static const char *const pieces[] = {
        "${", "}",    "(",         ")",         ",", "||", "|",    "$",  "base64", "apiKey", "odd",
        " ",  "nope", "${base64(", "${apiKey}", "x", ":",  "\xff", "\t", "${now:", "{",
    };
    uint32_t seed = 0x2545f491u;
    int iter;

    (void)state;
    for (iter = 0; iter < 200000; iter++) {
        struct vars v = {std_vars, 0};
        struct latch_err err = {{0}};
        char t[160], out[64];
        size_t n = 0, len;
        int k, parts = (int)(next_rand(&seed) % 16);
        latch_rc rc;

        for (k = 0; k < parts; k++) {
            const char *pc;

            if (next_rand(&seed) % 4 == 0) {
                /* a raw byte, anything but NUL */
                t[n++] = (char)(1 + next_rand(&seed) % 255);
                continue;
            }
            pc = pieces[next_rand(&seed) % (sizeof pieces / sizeof pieces[0])];
            len = strlen(pc);
            if (n + len >= sizeof t - 1)
                break;
            memcpy(t + n, pc, len);
            n += len;
        }
        t[n] = '\0';
        rc = tmpl_eval(t, lookup, &v, next_rand(&seed) % 2 ? TMPL_URL_ENCODE : 0, out,
                       1 + next_rand(&seed) % sizeof out, &err);
        assert_true(rc == LATCH_OK || rc == LATCH_E_INVAL || rc == LATCH_E_TOO_LARGE);
        if (rc != LATCH_OK)
            assert_string_equal(out, "");
        else
            assert_true(strlen(out) < sizeof out);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ok_cases),
        cmocka_unit_test(test_ninjaone_without_instance),
        cmocka_unit_test(test_skipped_alternatives_are_not_looked_up),
        cmocka_unit_test(test_error_cases),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_output_bound),
        cmocka_unit_test(test_input_bound),
        cmocka_unit_test(test_depth_bound),
        cmocka_unit_test(test_has_placeholders),
        cmocka_unit_test(test_garbage_does_not_crash),
    };

    return cmocka_run_group_tests_name("tmpl", tests, NULL, NULL);
}
