/*
 * test_trustproxy.c - LATCH_TRUSTED_PROXIES: list parsing, CIDR matching, and which
 * X-Forwarded-For entry is the client (right-most untrusted; spoofed entries to its left ignored).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "net/trustproxy.h"

static struct trustproxy *
parse_ok(const char *list)
{
    struct trustproxy *t = NULL;
    struct latch_err err = {0};

    assert_int_equal(trustproxy_parse(list, &t, &err), LATCH_OK);
    return t;
}

static void
test_parse(void **state)
{
    static const char *const bad[] = {"10.0.0.0/33", "::1/129",     "10.0.0.1/",
                                      "10.0.0.1/x",  "example.com", "10.0.0",
                                      "1.2.3.4/8/8", "300.1.1.1",   "10.0.0.0/-1"};
    struct trustproxy *t = NULL;
    struct latch_err err = {0};

    (void)state;
    assert_null(parse_ok(NULL));
    assert_null(parse_ok(""));
    assert_null(parse_ok(" , "));
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(trustproxy_parse(bad[i], &t, &err), LATCH_E_INVAL);
        assert_null(t);
    }
    t = parse_ok("10.0.0.0/8, 192.168.1.7 ::1,fd00::/8");
    assert_true(trustproxy_contains(t, "10.200.3.4"));
    assert_true(trustproxy_contains(t, "192.168.1.7"));
    assert_false(trustproxy_contains(t, "192.168.1.8"));
    assert_false(trustproxy_contains(t, "11.0.0.1"));
    assert_true(trustproxy_contains(t, "::1"));
    assert_true(trustproxy_contains(t, "fd12::5"));
    assert_false(trustproxy_contains(t, "fe80::1"));
    assert_false(trustproxy_contains(t, "garbage"));
    trustproxy_free(t);
    t = parse_ok("0.0.0.0/0");
    assert_true(trustproxy_contains(t, "203.0.113.9"));
    assert_false(trustproxy_contains(t, "2001:db8::1")); /* a v4 block never matches v6 */
    trustproxy_free(t);
}

struct client_case {
    const char *peer, *xff, *want;
};

static void
test_client(void **state)
{
    static const struct client_case cases[] = {
        /* untrusted peer: X-Forwarded-For is ignored, whatever it says */
        {"198.51.100.1", "203.0.113.5", "198.51.100.1"},
        /* trusted peer: the entry it appended */
        {"10.0.0.1", "203.0.113.5", "203.0.113.5"},
        /* a spoofed entry to the left of the real one is ignored */
        {"10.0.0.1", "1.1.1.1, 203.0.113.5", "203.0.113.5"},
        /* a chain of trusted proxies is skipped */
        {"10.0.0.1", "1.1.1.1, 203.0.113.5, 10.0.0.9,10.1.2.3", "203.0.113.5"},
        /* everyone trusted: the left-most */
        {"10.0.0.1", "10.0.0.7, 10.0.0.8", "10.0.0.7"},
        /* a port, brackets, IPv6, canonical text */
        {"10.0.0.1", "203.0.113.5:4711", "203.0.113.5"},
        {"10.0.0.1", "[2001:DB8::0:1]:443", "2001:db8::1"},
        {"10.0.0.1", "2001:db8:0::2", "2001:db8::2"},
        {"10.0.0.1", "::ffff:203.0.113.5", "203.0.113.5"},
        /* garbage where the client should be: the last trusted address */
        {"10.0.0.1", "203.0.113.5, unknown", "10.0.0.1"},
        {"10.0.0.1", "203.0.113.5, unknown, 10.0.0.3", "10.0.0.3"},
        {"10.0.0.1", "", "10.0.0.1"},
        {"10.0.0.1", ",", "10.0.0.1"},
        {"10.0.0.1", NULL, "10.0.0.1"},
        /* an over-long entry is garbage, not truncated into an address */
        {"10.0.0.1", "203.0.113.5                                                             x",
         "10.0.0.1"},
    };
    struct trustproxy *t = parse_ok("10.0.0.0/8");
    char out[64];

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        trustproxy_client(t, cases[i].peer, cases[i].xff, out, sizeof out);
        if (strcmp(out, cases[i].want) != 0)
            fail_msg("peer %s xff \"%s\": got %s, want %s", cases[i].peer,
                     cases[i].xff ? cases[i].xff : "(null)", out, cases[i].want);
    }
    /* no list: always the peer */
    trustproxy_client(NULL, "10.0.0.1", "203.0.113.5", out, sizeof out);
    assert_string_equal(out, "10.0.0.1");
    trustproxy_free(t);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_client),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
