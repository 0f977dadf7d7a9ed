/*
 * test_netpolicy.c - SSRF policy tables: hostile hostnames/URLs must be refused, normal names
 * accepted, and the connect-time address check must classify v4/v6/embedded-v4 correctly.
 */
#include <sys/socket.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "net/netpolicy.h"

/* A host as the caller would check it: either a bare hostname or the host part of a URL. */
struct hostile {
    const char *input;
    bool is_url;
};

static const struct hostile hostile[] = {
    /* empty, overlong, shape */
    {"", false},
    {".", false},
    {"..", false},
    {"localhost", false},
    {"com", false},
    {"example", false},
    {".example.com", false},
    {"example..com", false},
    {"example.com.", false},
    {"api.ninjarmm.com.", false},
    {"-example.com", false},
    {"example-.com", false},
    {"a.-b.com", false},
    {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.com", false}, /* 64 */
    {"a.b.c", false}, /* 1-letter TLD */
    /* IPv4 literals in every notation resolvers accept */
    {"127.0.0.1", false},
    {"127.1", false},
    {"127.0.1", false},
    {"0x7f.1", false},
    {"0x7f000001", false},
    {"2130706433", false},
    {"0177.0.0.1", false},
    {"017700000001", false},
    {"0", false},
    {"0.0.0.0", false},
    {"169.254.169.254", false},
    {"1.0x7f", false},
    {"10.0.0.1", false},
    {"192.168.1.1", false},
    {"1.1.1.1", false},
    /* IPv6 literals, bracketed and mapped */
    {"::1", false},
    {"[::1]", false},
    {"[::ffff:127.0.0.1]", false},
    {"::ffff:7f00:1", false},
    {"[fe80::1%25eth0]", false},
    {"fe80::1%eth0", false},
    {"[64:ff9b::a9fe:a9fe]", false},
    /* userinfo, ports, paths */
    {"user@example.com", false},
    {"example.com@evil.com", false},
    {"eu.ninjarmm.com@169.254.169.254", false},
    {"example.com:443", false},
    {"example.com:22", false},
    {"example.com/path", false},
    {"example.com\\evil.com", false},
    {"example.com?x=1", false},
    {"example.com#frag", false},
    /* percent-encoding, CRLF, whitespace, control */
    {"ex%61mple.com", false},
    {"%31%32%37.0.0.1", false},
    {"example.com%00.evil.com", false},
    {"example.com\r\nHost: evil.com", false},
    {"example.com\n", false},
    {" example.com", false},
    {"example.com ", false},
    {"exa mple.com", false},
    {"example.com\t", false},
    {"exam\x01ple.com", false},
    {"exam_ple.com", false},
    /* IDN: punycode and raw unicode homoglyphs */
    {"xn--80ak6aa92e.com", false},
    {"XN--80ak6aa92e.com", false},
    {"api.xn--nnjarmm-9ya.com", false},
    {"ab--cd.com", false},
    {"\xd0\xb0pple.com", false},    /* Cyrillic a */
    {"ninj\xc9\x91rmm.com", false}, /* Latin alpha */
    {"example\xe3\x80\x82"
     "com",
     false}, /* ideographic full stop */
    {"example\xef\xbc\x8e"
     "com",
     false}, /* fullwidth full stop */
    {"ex\xc2\xad"
     "ample.com",
     false}, /* soft hyphen */
    /* look-alike suffixes are syntactically fine; the exact enum match rejects them. These
     * are URL forms that must fail here. */
    {"https://127.0.0.1/", true},
    {"https://127.1/", true},
    {"https://0x7f.1/", true},
    {"https://2130706433/", true},
    {"https://0177.0.0.1/", true},
    {"https://1.0x7f/", true},
    {"https://[::1]/", true},
    {"https://[::ffff:169.254.169.254]/", true},
    {"https://[fe80::1%25eth0]/", true},
    {"https://user@eu.ninjarmm.com/", true},
    {"https://eu.ninjarmm.com:x@evil.com/", true},
    {"https://eu.ninjarmm.com\\@evil.com/", true},
    {"https://eu.ninjarmm.com./", true},
    {"https://ex%61mple.com/", true},
    {"https://%31%32%37.0.0.1/", true},
    {"https://example.com\r\n/", true},
    {"https:/example.com/", true},
    {"https:///example.com/", true},
    {"https:\\\\example.com/", true},
    {"http://example.com/", true}, /* http not allowed */
    {"ftp://example.com/", true},
    {"file:///etc/passwd", true},
    {"gopher://example.com/", true},
    {"//example.com/", true},
    {"example.com", true},
    {"https://", true},
    {"https://:443/", true},
    {"https://xn--80ak6aa92e.com/", true},
    {"https://localhost/", true},
    {"https://169.254.169.254/latest/meta-data/", true},
    {"", true},
};

static const char *const good_hosts[] = {
    "example.com",
    "app.ninjarmm.com",
    "eu.ninjarmm.com",
    "oc.ninjarmm.com",
    "ca.ninjarmm.com",
    "us2.ninjarmm.com",
    "API.Example.COM",
    "a-b.c-d.example.org",
    "1.2.3.example.com",
    "127.0.0.1.nip.io", /* syntax ok: the connect-time address check refuses it */
    "x.io",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.com", /* 63 */
};

static void
test_hostile_rejected(void **state)
{
    (void)state;
    assert_true(sizeof hostile / sizeof hostile[0] >= 60);
    for (size_t i = 0; i < sizeof hostile / sizeof hostile[0]; i++) {
        const struct hostile *h = &hostile[i];
        struct latch_err err = {{0}};
        latch_rc rc;

        if (h->is_url) {
            char host[256];

            rc = netpolicy_url_host(h->input, false, host, sizeof host, &err);
            if (rc == LATCH_OK)
                rc = netpolicy_check_hostname(host, &err);
        } else {
            rc = netpolicy_check_hostname(h->input, &err);
        }
        if (rc == LATCH_OK)
            fail_msg("accepted hostile input #%zu: '%s'", i, h->input);
        assert_int_equal(rc, LATCH_E_INVAL);
        assert_true(err.msg[0] != '\0');
    }
}

static void
test_overlong_rejected(void **state)
{
    char name[400];
    struct latch_err err = {{0}};

    (void)state;
    /* 254 characters of valid labels */
    memset(name, 'a', sizeof name);
    for (size_t i = 10; i < 254; i += 11)
        name[i] = '.';
    name[250] = '.';
    name[251] = 'c';
    name[252] = 'o';
    name[253] = 'm';
    name[254] = '\0';
    assert_int_equal(netpolicy_check_hostname(name, &err), LATCH_E_INVAL);
    assert_non_null(strstr(err.msg, "longer"));
    /* 253 is fine */
    memmove(name, name + 1, 254);
    assert_int_equal(strlen(name), 253);
    assert_int_equal(netpolicy_check_hostname(name, &err), LATCH_OK);
    assert_int_equal(netpolicy_check_hostname(NULL, &err), LATCH_E_INVAL);
}

static void
test_good_accepted(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof good_hosts / sizeof good_hosts[0]; i++) {
        struct latch_err err = {{0}};
        latch_rc rc = netpolicy_check_hostname(good_hosts[i], &err);

        if (rc != LATCH_OK)
            fail_msg("rejected good host '%s': %s", good_hosts[i], err.msg);
    }
}

struct url_case {
    const char *url;
    bool allow_http;
    latch_rc rc;
    const char *host;
};

static const struct url_case url_cases[] = {
    {"https://eu.ninjarmm.com/ws/oauth/token", false, LATCH_OK, "eu.ninjarmm.com"},
    {"https://eu.ninjarmm.com:8443/x?y=1#z", false, LATCH_OK, "eu.ninjarmm.com"},
    {"HTTPS://App.NinjaRMM.com", false, LATCH_OK, "App.NinjaRMM.com"},
    {"http://fake.test:8080/", true, LATCH_OK, "fake.test"},
    {"http://fake.test:8080/", false, LATCH_E_INVAL, ""},
    {"https://u:p@eu.ninjarmm.com/", false, LATCH_E_INVAL, ""},
    {"https://:p@eu.ninjarmm.com/", false, LATCH_E_INVAL, ""},
    {"https://eu.ninjarmm.com:99999/", false, LATCH_E_INVAL, ""},
    {"ws://eu.ninjarmm.com/", false, LATCH_E_INVAL, ""},
    {"/relative/path", false, LATCH_E_INVAL, ""},
};

static void
test_url_host(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof url_cases / sizeof url_cases[0]; i++) {
        const struct url_case *c = &url_cases[i];
        struct latch_err err = {{0}};
        char host[256];
        latch_rc rc = netpolicy_url_host(c->url, c->allow_http, host, sizeof host, &err);

        if (rc != c->rc)
            fail_msg("'%s': rc %d, want %d (%s)", c->url, rc, c->rc, err.msg);
        assert_string_equal(host, c->host);
    }
}

static void
test_url_host_small_buffer(void **state)
{
    char host[8];
    struct latch_err err = {{0}};

    (void)state;
    assert_int_equal(netpolicy_url_host("https://eu.ninjarmm.com/", false, host, sizeof host, &err),
                     LATCH_E_INVAL);
    assert_string_equal(host, "");
    assert_int_equal(netpolicy_url_host(NULL, false, host, sizeof host, &err), LATCH_E_INVAL);
}

struct addr_case {
    const char *addr;
    bool internal;
};

static const struct addr_case addr_cases[] = {
    /* IPv4 internal */
    {"0.0.0.0", true},
    {"0.1.2.3", true},
    {"10.0.0.1", true},
    {"10.255.255.255", true},
    {"100.64.0.1", true},
    {"100.127.255.254", true},
    {"127.0.0.1", true},
    {"127.255.255.255", true},
    {"169.254.169.254", true},
    {"169.254.0.1", true},
    {"172.16.0.1", true},
    {"172.31.255.255", true},
    {"192.0.0.8", true},
    {"192.0.2.1", true},
    {"192.168.0.1", true},
    {"198.18.0.1", true},
    {"198.19.255.255", true},
    {"198.51.100.7", true},
    {"203.0.113.9", true},
    {"224.0.0.1", true},
    {"239.255.255.250", true},
    {"240.0.0.1", true},
    {"255.255.255.255", true},
    /* IPv4 public (boundaries included) */
    {"1.1.1.1", false},
    {"8.8.8.8", false},
    {"9.255.255.255", false},
    {"11.0.0.0", false},
    {"100.63.255.255", false},
    {"100.128.0.0", false},
    {"126.255.255.255", false},
    {"128.0.0.1", false},
    {"169.253.255.255", false},
    {"169.255.0.0", false},
    {"172.15.255.255", false},
    {"172.32.0.0", false},
    {"192.0.1.1", false},
    {"192.167.255.255", false},
    {"192.169.0.0", false},
    {"198.17.255.255", false},
    {"198.20.0.0", false},
    {"203.0.114.1", false},
    {"223.255.255.255", false},
    {"34.120.1.2", false},
    /* IPv6 internal */
    {"::", true},
    {"::1", true},
    {"fe80::1", true},
    {"febf:ffff::1", true},
    {"fec0::1", true},
    {"fc00::1", true},
    {"fd12:3456::1", true},
    {"ff02::1", true},
    {"ff0e::1", true},
    {"2001:db8::1", true},
    {"2001:db8:ffff::1", true},
    {"2001::1", true},             /* Teredo */
    {"2001:0:4136:e378::1", true}, /* Teredo */
    {"100::1", true},
    {"3fff::1", true},
    /* v4-mapped / translated / compatible */
    {"::ffff:127.0.0.1", true},
    {"::ffff:10.1.2.3", true},
    {"::ffff:169.254.169.254", true},
    {"::ffff:0:127.0.0.1", true},
    {"::127.0.0.1", true},
    {"::10.0.0.1", true},
    {"::ffff:8.8.8.8", false},
    {"::8.8.8.8", false},
    /* NAT64 */
    {"64:ff9b::127.0.0.1", true},
    {"64:ff9b::a9fe:a9fe", true},
    {"64:ff9b::c0a8:101", true},
    {"64:ff9b::8.8.8.8", false},
    {"64:ff9b:1::8.8.8.8", true},
    /* 6to4 */
    {"2002:7f00:1::1", true},
    {"2002:a00:1::", true},
    {"2002:a9fe:a9fe::1", true},
    {"2002:808:808::1", false},
    /* public v6 */
    {"2606:4700:4700::1111", false},
    {"2a00:1450:4001:80b::200e", false},
    {"2001:4860:4860::8888", false},
    {"2400:cb00::1", false},
};

static void
test_addr_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof addr_cases / sizeof addr_cases[0]; i++) {
        const struct addr_case *c = &addr_cases[i];
        bool got;

        if (strchr(c->addr, ':') != NULL) {
            struct sockaddr_in6 s6;

            memset(&s6, 0, sizeof s6);
            s6.sin6_family = AF_INET6;
            s6.sin6_port = htons(443);
            assert_int_equal(inet_pton(AF_INET6, c->addr, &s6.sin6_addr), 1);
            got = netpolicy_addr_is_internal((const struct sockaddr *)&s6, sizeof s6);
        } else {
            struct sockaddr_in s4;

            memset(&s4, 0, sizeof s4);
            s4.sin_family = AF_INET;
            s4.sin_port = htons(443);
            assert_int_equal(inet_pton(AF_INET, c->addr, &s4.sin_addr), 1);
            got = netpolicy_addr_is_internal((const struct sockaddr *)&s4, sizeof s4);
        }
        if (got != c->internal)
            fail_msg("%s: internal=%d, want %d", c->addr, got, c->internal);
    }
}

static void
test_addr_odd(void **state)
{
    struct sockaddr_in s4;
    struct sockaddr_storage ss;

    (void)state;
    memset(&s4, 0, sizeof s4);
    s4.sin_family = AF_INET;
    assert_int_equal(inet_pton(AF_INET, "8.8.8.8", &s4.sin_addr), 1);
    assert_false(netpolicy_addr_is_internal((const struct sockaddr *)&s4, sizeof s4));
    /* truncated length, unknown family, NULL: refused */
    assert_true(netpolicy_addr_is_internal((const struct sockaddr *)&s4, 4));
    memset(&ss, 0, sizeof ss);
    ss.ss_family = AF_UNIX;
    assert_true(netpolicy_addr_is_internal((const struct sockaddr *)&ss, sizeof ss));
    assert_true(netpolicy_addr_is_internal(NULL, 0));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hostile_rejected),
        cmocka_unit_test(test_overlong_rejected),
        cmocka_unit_test(test_good_accepted),
        cmocka_unit_test(test_url_host),
        cmocka_unit_test(test_url_host_small_buffer),
        cmocka_unit_test(test_addr_table),
        cmocka_unit_test(test_addr_odd),
    };
    int rc;

    curl_global_init(CURL_GLOBAL_DEFAULT);
    rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
