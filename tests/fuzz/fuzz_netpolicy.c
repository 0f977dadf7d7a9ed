/*
 * fuzz_netpolicy.c - the SSRF gate: netpolicy_check_hostname, netpolicy_url_host and
 * netpolicy_addr_is_internal on arbitrary bytes.
 *
 * Invariants:
 * - an accepted hostname is plain LDH text with a dot, no trailing dot, and is not an IP
 *   address in any notation glibc's inet_aton (decimal, octal, hex, short forms) or inet_pton
 *   understands;
 * - an extracted URL host is NUL-terminated, non-empty, and has no '@' (no userinfo);
 * - addresses: every range of a small independent reference list (loopback, RFC 1918, CGNAT,
 *   link-local/metadata, documentation, multicast, reserved) is internal, and a v4 address is
 *   internal iff its v4-mapped and NAT64 IPv6 forms are; truncated sockaddrs are refused.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <strings.h>

#include "fuzz.h"
#include "net/netpolicy.h"

struct v4range {
    uint32_t net;
    unsigned bits;
};

/* IANA special-purpose ranges that must never be a token endpoint. */
static const struct v4range must_block[] = {
    {0x00000000u, 8},  {0x0a000000u, 8},  {0x64400000u, 10}, {0x7f000000u, 8},  {0xa9fe0000u, 16},
    {0xac100000u, 12}, {0xc0000000u, 24}, {0xc0000200u, 24}, {0xc0a80000u, 16}, {0xc6120000u, 15},
    {0xc6336400u, 24}, {0xcb007100u, 24}, {0xe0000000u, 4},  {0xf0000000u, 4},
};

static bool
ref_internal(uint32_t a)
{
    for (size_t i = 0; i < sizeof must_block / sizeof must_block[0]; i++) {
        uint32_t mask = 0xffffffffu << (32 - must_block[i].bits);

        if ((a & mask) == must_block[i].net)
            return true;
    }
    return false;
}

static bool
v4_internal(uint32_t a)
{
    struct sockaddr_in sin;

    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(a);
    return netpolicy_addr_is_internal((const struct sockaddr *)&sin, sizeof sin);
}

static bool
v6_internal(const uint8_t a[16], socklen_t len)
{
    struct sockaddr_in6 sin6;

    memset(&sin6, 0, sizeof sin6);
    sin6.sin6_family = AF_INET6;
    memcpy(sin6.sin6_addr.s6_addr, a, 16);
    return netpolicy_addr_is_internal((const struct sockaddr *)&sin6, len);
}

static void
check_addrs(const uint8_t *data, size_t size)
{
    if (size >= 4) {
        uint32_t a = ((uint32_t)data[0] << 24) | ((uint32_t)data[1] << 16) |
                     ((uint32_t)data[2] << 8) | data[3];
        uint8_t mapped[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        uint8_t nat64[16] = {0, 0x64, 0xff, 0x9b};
        bool in4 = v4_internal(a);

        memcpy(mapped + 12, data, 4);
        memcpy(nat64 + 12, data, 4);
        if (ref_internal(a))
            FUZZ_CHECK(in4);
        FUZZ_CHECK(v6_internal(mapped, sizeof(struct sockaddr_in6)) == in4);
        if (in4)
            FUZZ_CHECK(v6_internal(nat64, sizeof(struct sockaddr_in6)));
        /* truncated sockaddr_in: refused */
        {
            struct sockaddr_in sin;

            memset(&sin, 0, sizeof sin);
            sin.sin_family = AF_INET;
            sin.sin_addr.s_addr = htonl(a);
            FUZZ_CHECK(netpolicy_addr_is_internal((const struct sockaddr *)&sin,
                                                  (socklen_t)(data[0] % sizeof sin)));
        }
    }
    if (size >= 16) {
        bool in6 = v6_internal(data, sizeof(struct sockaddr_in6));

        FUZZ_CHECK(v6_internal(data, (socklen_t)(sizeof(struct sockaddr_in6) - 1)));
        /* ::1, ::, fe80::/10, fc00::/7, ff00::/8 */
        if ((data[0] & 0xfe) == 0xfc || data[0] == 0xff ||
            (data[0] == 0xfe && (data[1] & 0xc0) == 0x80))
            FUZZ_CHECK(in6);
        {
            static const uint8_t zero15[15];

            if (memcmp(data, zero15, 15) == 0 && data[15] <= 1)
                FUZZ_CHECK(in6);
        }
    }
}

static void
check_hostname(const char *s)
{
    struct latch_err err;
    struct in_addr a4;
    struct in6_addr a6;
    size_t len = strlen(s);

    latch_err_clear(&err);
    if (netpolicy_check_hostname(s, &err) != LATCH_OK) {
        FUZZ_CHECK(err.msg[0] != '\0');
        return;
    }
    FUZZ_CHECK(len > 0 && s[len - 1] != '.' && strchr(s, '.') != NULL);
    FUZZ_CHECK(strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.") ==
               len);
    FUZZ_CHECK(inet_aton(s, &a4) == 0);
    FUZZ_CHECK(inet_pton(AF_INET6, s, &a6) != 1);
}

static void
check_url(const char *s, bool allow_http)
{
    char host[256];
    struct latch_err err;

    memset(host, 'X', sizeof host);
    latch_err_clear(&err);
    if (netpolicy_url_host(s, allow_http, host, sizeof host, &err) != LATCH_OK) {
        FUZZ_CHECK(host[0] == '\0');
        return;
    }
    FUZZ_CHECK(memchr(host, '\0', sizeof host) != NULL);
    FUZZ_CHECK(host[0] != '\0' && strchr(host, '@') == NULL);
    FUZZ_CHECK(strncasecmp(s, "https://", 8) == 0 ||
               (allow_http && strncasecmp(s, "http://", 7) == 0));
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s;

    if (size > 4096)
        return 0;
    check_addrs(data, size);
    s = malloc(size + 1);
    FUZZ_CHECK(s != NULL);
    memcpy(s, data, size);
    s[size] = '\0';
    check_hostname(s);
    check_url(s, size > 0 && (data[0] & 1u));
    free(s);
    return 0;
}
