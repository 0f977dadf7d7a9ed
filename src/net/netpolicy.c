/*
 * netpolicy.c - SSRF policy: which hostnames and addresses latch may connect to.
 *
 * Two independent layers (see netpolicy.h and docs/internals/outbound.md):
 *
 * 1. netpolicy_check_hostname() is a syntax gate for hostnames that came from user input. It
 *    accepts only plain ASCII LDH DNS names with an alphabetic top-level label, so that no IP
 *    literal in any notation that a resolver or URL parser might accept (127.1, 0x7f.1,
 *    2130706433, 0177.0.0.1, 1.0x7f, [::1], ...) can get through. IDN is rejected by policy:
 *    non-ASCII bytes and punycode/ACE labels ("xn--", or any label with "--" at positions 3-4)
 *    are refused, because look-alike names are a phishing/SSRF aid and no supported provider
 *    needs them.
 *
 * 2. netpolicy_addr_is_internal() looks at the address a socket is about to connect to. It is
 *    the layer that actually stops SSRF (DNS names can resolve anywhere, DNS can rebind); it
 *    runs for every connect in outbound.c.
 *
 * Everything here is pure and thread-safe.
 */
#include "net/netpolicy.h"

#include <sys/socket.h>
#include <sys/types.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>

#include <curl/curl.h>

#include "util/str.h"

/* RFC 1035: a name is at most 253 characters in text form, a label at most 63. */
#define NETPOLICY_MAX_HOST 253
#define NETPOLICY_MAX_LABEL 63

struct v4_net {
    uint32_t net;
    unsigned prefix;
};

#define V4(a, b, c, d) (((uint32_t)(a) << 24) | ((uint32_t)(b) << 16) | ((uint32_t)(c) << 8) | (d))

/* IPv4 ranges never acceptable as a destination (IANA special-purpose registry and friends). */
static const struct v4_net v4_denied[] = {
    {V4(0, 0, 0, 0), 8},         /* "this network" */
    {V4(10, 0, 0, 0), 8},        /* RFC 1918 */
    {V4(100, 64, 0, 0), 10},     /* CGNAT, RFC 6598 */
    {V4(127, 0, 0, 0), 8},       /* loopback */
    {V4(169, 254, 0, 0), 16},    /* link-local, cloud metadata 169.254.169.254 */
    {V4(172, 16, 0, 0), 12},     /* RFC 1918 */
    {V4(192, 0, 0, 0), 24},      /* IETF protocol assignments */
    {V4(192, 0, 2, 0), 24},      /* TEST-NET-1 */
    {V4(192, 88, 99, 0), 24},    /* deprecated 6to4 relay anycast */
    {V4(192, 168, 0, 0), 16},    /* RFC 1918 */
    {V4(198, 18, 0, 0), 15},     /* benchmarking */
    {V4(198, 51, 100, 0), 24},   /* TEST-NET-2 */
    {V4(203, 0, 113, 0), 24},    /* TEST-NET-3 */
    {V4(224, 0, 0, 0), 4},       /* multicast */
    {V4(240, 0, 0, 0), 4},       /* reserved, includes 255.255.255.255 */
    {V4(255, 255, 255, 255), 32} /* broadcast (covered above; kept for clarity) */
};

static bool
v4_is_internal(uint32_t a)
{
    for (size_t i = 0; i < sizeof v4_denied / sizeof v4_denied[0]; i++) {
        unsigned p = v4_denied[i].prefix;
        uint32_t mask = p == 0 ? 0 : (uint32_t)(0xffffffffu << (32 - p));

        if ((a & mask) == v4_denied[i].net)
            return true;
    }
    return false;
}

static uint32_t
v4_at(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static bool
all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != 0)
            return false;
    return true;
}

/* True if the first `bits` bits of a equal those of prefix (16 bytes each). */
static bool
v6_prefix(const uint8_t *a, const uint8_t *prefix, unsigned bits)
{
    unsigned full = bits / 8, rest = bits % 8;

    if (memcmp(a, prefix, full) != 0)
        return false;
    if (rest == 0)
        return true;
    return ((a[full] ^ prefix[full]) & (uint8_t)(0xff << (8 - rest))) == 0;
}

static bool
v6_is_internal(const uint8_t *a)
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static const uint8_t translated[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0};
    static const uint8_t nat64[16] = {0x00, 0x64, 0xff, 0x9b};
    static const uint8_t nat64_local[16] = {0x00, 0x64, 0xff, 0x9b, 0x00, 0x01};
    static const uint8_t sixtofour[16] = {0x20, 0x02};
    static const uint8_t ietf[16] = {0x20, 0x01};
    static const uint8_t doc[16] = {0x20, 0x01, 0x0d, 0xb8};
    static const uint8_t doc2[16] = {0x3f, 0xff};
    static const uint8_t global[16] = {0x20};

    /* ::/96: unspecified, loopback and the deprecated v4-compatible form (::a.b.c.d) */
    if (all_zero(a, 12))
        return v4_is_internal(v4_at(a + 12));
    /* ::ffff:a.b.c.d (v4-mapped) and ::ffff:0:a.b.c.d (SIIT v4-translated) */
    if (memcmp(a, mapped, 12) == 0 || memcmp(a, translated, 12) == 0)
        return v4_is_internal(v4_at(a + 12));
    /* 64:ff9b::/96 well-known NAT64 prefix: judge the embedded v4 */
    if (v6_prefix(a, nat64, 96))
        return v4_is_internal(v4_at(a + 12));
    /* 64:ff9b:1::/48 local-use NAT64 (RFC 8215): operator-internal by definition */
    if (v6_prefix(a, nat64_local, 48))
        return true;
    /* 2002::/16 6to4: bytes 2..5 are the v4 address */
    if (v6_prefix(a, sixtofour, 16))
        return v4_is_internal(v4_at(a + 2));
    /* 2001::/23 IETF protocol assignments, includes Teredo 2001::/32 and benchmarking */
    if (v6_prefix(a, ietf, 23))
        return true;
    /* 2001:db8::/32 and 3fff::/20 documentation */
    if (v6_prefix(a, doc, 32) || v6_prefix(a, doc2, 20))
        return true;
    /*
     * Everything else outside global unicast 2000::/3 is refused: fe80::/10 link-local,
     * fec0::/10 site-local, fc00::/7 ULA, ff00::/8 multicast, 100::/64 discard, and
     * unallocated space.
     */
    if (!v6_prefix(a, global, 3))
        return true;
    return false;
}

bool
netpolicy_addr_is_internal(const struct sockaddr *sa, socklen_t len)
{
    if (sa == NULL)
        return true;
    if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;

        return v4_is_internal(ntohl(in->sin_addr.s_addr));
    }
    if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;

        return v6_is_internal(in6->sin6_addr.s6_addr);
    }
    /* unknown family or truncated address: refuse */
    return true;
}

static bool
is_alpha(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool
is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* Names the first byte that makes host unacceptable, or NULL. */
static const char *
bad_char_reason(unsigned char c)
{
    if (c >= 0x80)
        return "non-ASCII byte (IDN names are not allowed)";
    if (c < 0x20 || c == 0x7f)
        return "control character";
    if (c == ' ' || c == '\t')
        return "whitespace";
    switch (c) {
    case '%':
        return "percent-encoding";
    case '@':
        return "userinfo ('@')";
    case ':':
        return "port or IPv6 literal (':')";
    case '[':
    case ']':
        return "IP literal ('[' or ']')";
    case '/':
    case '\\':
    case '?':
    case '#':
        return "path, query or fragment character";
    default:
        break;
    }
    if (is_alpha(c) || is_digit(c) || c == '-' || c == '.')
        return NULL;
    return "character outside letters, digits, '-' and '.'";
}

latch_rc
netpolicy_check_hostname(const char *host, struct latch_err *err)
{
    size_t len, start, ndots = 0;

    if (host == NULL || host[0] == '\0') {
        latch_err_set(err, "hostname is empty");
        return LATCH_E_INVAL;
    }
    len = strnlen(host, NETPOLICY_MAX_HOST + 1);
    if (len > NETPOLICY_MAX_HOST) {
        latch_err_set(err, "hostname is longer than %d bytes", NETPOLICY_MAX_HOST);
        return LATCH_E_INVAL;
    }
    for (size_t i = 0; i < len; i++) {
        const char *why = bad_char_reason((unsigned char)host[i]);

        if (why != NULL) {
            latch_err_set(err, "hostname contains a %s at offset %zu", why, i);
            return LATCH_E_INVAL;
        }
    }
    if (host[len - 1] == '.') {
        latch_err_set(err, "hostname must not end with a dot");
        return LATCH_E_INVAL;
    }

    start = 0;
    for (size_t i = 0; i <= len; i++) {
        size_t llen;
        const char *label;

        if (i < len && host[i] != '.')
            continue;
        label = host + start;
        llen = i - start;
        if (llen == 0) {
            latch_err_set(err, "hostname has an empty label (leading or double dot)");
            return LATCH_E_INVAL;
        }
        if (llen > NETPOLICY_MAX_LABEL) {
            latch_err_set(err, "hostname label is longer than %d bytes", NETPOLICY_MAX_LABEL);
            return LATCH_E_INVAL;
        }
        if (label[0] == '-' || label[llen - 1] == '-') {
            latch_err_set(err, "hostname label starts or ends with '-'");
            return LATCH_E_INVAL;
        }
        /* "xn--" (punycode) and every other reserved "??--" ACE form (RFC 5891 4.2.3.1) */
        if (llen >= 4 && label[2] == '-' && label[3] == '-') {
            latch_err_set(err, "hostname label is punycode/IDN ('xn--'), not allowed by policy");
            return LATCH_E_INVAL;
        }
        if (i == len) {
            /* top-level label: real TLDs are alphabetic; this rules out every numeric form */
            if (llen < 2) {
                latch_err_set(err, "top-level label must be at least 2 letters");
                return LATCH_E_INVAL;
            }
            for (size_t k = 0; k < llen; k++) {
                if (!is_alpha((unsigned char)label[k])) {
                    latch_err_set(err, "top-level label must be letters only (IP addresses and "
                                       "numeric forms are not allowed)");
                    return LATCH_E_INVAL;
                }
            }
        } else {
            ndots++;
        }
        start = i + 1;
    }
    if (ndots == 0) {
        latch_err_set(err, "hostname must contain a dot (single-label names are not allowed)");
        return LATCH_E_INVAL;
    }
    return LATCH_OK;
}

/*
 * The authority part as written (between "scheme://" and the first '/', '?' or '#'), used only
 * to refuse forms curl would silently normalise ("https:/x", percent-encoded hosts, '\').
 * The host itself always comes from curl_url().
 */
static latch_rc
check_raw_authority(const char *url, struct latch_err *err)
{
    const char *p = strstr(url, "://");
    const char *end;

    if (p == NULL) {
        latch_err_set(err, "URL must be absolute (scheme://host)");
        return LATCH_E_INVAL;
    }
    for (const char *s = url; s < p; s++) {
        if (!is_alpha((unsigned char)*s)) {
            latch_err_set(err, "URL scheme is malformed");
            return LATCH_E_INVAL;
        }
    }
    p += 3;
    if (*p == '/' || *p == '\\') {
        latch_err_set(err, "URL has too many slashes after the scheme");
        return LATCH_E_INVAL;
    }
    end = p + strcspn(p, "/?#");
    for (const char *s = p; s < end; s++) {
        if (*s == '%' || *s == '\\') {
            latch_err_set(err, "URL host must not be percent-encoded or contain '\\'");
            return LATCH_E_INVAL;
        }
    }
    return LATCH_OK;
}

latch_rc
netpolicy_url_host(const char *url, bool allow_http, char *out, size_t out_size,
                   struct latch_err *err)
{
    CURLU *u = NULL;
    CURLUcode uc;
    char *scheme = NULL, *user = NULL, *pass = NULL, *host = NULL, *zone = NULL;
    latch_rc rc = LATCH_E_INVAL;

    if (out != NULL && out_size > 0)
        out[0] = '\0';
    if (url == NULL || out == NULL || out_size == 0) {
        latch_err_set(err, "no URL");
        goto out;
    }
    if (check_raw_authority(url, err) != LATCH_OK)
        goto out;
    u = curl_url();
    if (u == NULL) {
        rc = LATCH_E_NOMEM;
        latch_err_set(err, "curl_url() failed");
        goto out;
    }
    uc = curl_url_set(u, CURLUPART_URL, url, 0);
    if (uc != CURLUE_OK) {
        latch_err_set(err, "malformed URL: %s", curl_url_strerror(uc));
        goto out;
    }
    if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK) {
        latch_err_set(err, "URL has no scheme");
        goto out;
    }
    if (strcmp(scheme, "https") != 0 && !(allow_http && strcmp(scheme, "http") == 0)) {
        latch_err_set(err, "URL scheme must be https%s", allow_http ? " or http" : "");
        goto out;
    }
    uc = curl_url_get(u, CURLUPART_USER, &user, 0);
    if (uc != CURLUE_NO_USER) {
        latch_err_set(err, "URL must not contain user information");
        goto out;
    }
    uc = curl_url_get(u, CURLUPART_PASSWORD, &pass, 0);
    if (uc != CURLUE_NO_PASSWORD) {
        latch_err_set(err, "URL must not contain user information");
        goto out;
    }
    uc = curl_url_get(u, CURLUPART_ZONEID, &zone, 0);
    if (uc == CURLUE_OK) {
        latch_err_set(err, "URL must not contain an IPv6 zone id");
        goto out;
    }
    uc = curl_url_get(u, CURLUPART_HOST, &host, 0);
    if (uc != CURLUE_OK || host == NULL || host[0] == '\0') {
        latch_err_set(err, "URL has no host");
        goto out;
    }
    if (latch_strlcpy(out, host, out_size) >= out_size) {
        out[0] = '\0';
        latch_err_set(err, "URL host is too long");
        goto out;
    }
    rc = LATCH_OK;
out:
    curl_free(scheme);
    curl_free(user);
    curl_free(pass);
    curl_free(zone);
    curl_free(host);
    curl_url_cleanup(u);
    return rc;
}

bool
netpolicy_url_default_port(const char *url)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *port = NULL;
    bool ok = false;
    CURLUcode uc;

    if (u == NULL || url == NULL || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK)
        goto out;
    uc = curl_url_get(u, CURLUPART_PORT, &port, 0);
    if (uc == CURLUE_NO_PORT)
        ok = true;
    else if (uc == CURLUE_OK)
        ok = (strcmp(scheme, "https") == 0 && strcmp(port, "443") == 0) ||
             (strcmp(scheme, "http") == 0 && strcmp(port, "80") == 0);
out:
    curl_free(scheme);
    curl_free(port);
    curl_url_cleanup(u);
    return ok;
}
