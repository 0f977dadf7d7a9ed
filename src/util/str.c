#include "util/str.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

#include "util/xalloc.h"

size_t
latch_strlcpy(char *dst, const char *src, size_t size)
{
    size_t len = strlen(src);

    if (size > 0) {
        size_t n = len >= size ? size - 1 : len;

        memcpy(dst, src, n);
        dst[n] = '\0';
    }
    return len;
}

long long
latch_strtonum(const char *s, long long minval, long long maxval, const char **errstr)
{
    char *end = NULL;
    long long v;

    *errstr = NULL;
    if (s == NULL || *s == '\0' || minval > maxval) {
        *errstr = "invalid";
        return 0;
    }
    /* no leading space or plus, as JS/zod coercion would not accept them either */
    if (!(*s == '-' || (*s >= '0' && *s <= '9'))) {
        *errstr = "invalid";
        return 0;
    }
    errno = 0;
    v = strtoll(s, &end, 10);
    if (end == s || *end != '\0') {
        *errstr = "invalid";
        return 0;
    }
    if ((v == LLONG_MIN && errno == ERANGE) || v < minval) {
        *errstr = "too small";
        return 0;
    }
    if ((v == LLONG_MAX && errno == ERANGE) || v > maxval) {
        *errstr = "too large";
        return 0;
    }
    return v;
}

int
latch_hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

bool
latch_str_has_prefix_ci(const char *s, const char *prefix)
{
    return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

/* Length of the valid UTF-8 sequence at p (1..4), or 0 if invalid. */
static size_t
utf8_seq(const unsigned char *p)
{
    size_t n;
    unsigned int cp;

    if (p[0] < 0x80)
        return 1;
    if (p[0] >= 0xc2 && p[0] <= 0xdf)
        n = 2, cp = p[0] & 0x1f;
    else if (p[0] >= 0xe0 && p[0] <= 0xef)
        n = 3, cp = p[0] & 0x0f;
    else if (p[0] >= 0xf0 && p[0] <= 0xf4)
        n = 4, cp = p[0] & 0x07;
    else
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

bool
latch_utf8_clean(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;

    while (*p != '\0') {
        size_t n = utf8_seq(p);

        if (n == 0 || (n == 1 && (*p < 0x20 || *p == 0x7f)))
            return false;
        p += n;
    }
    return true;
}

char *
latch_utf8_sanitize(const char *s)
{
    const unsigned char *p = (const unsigned char *)(s != NULL ? s : "");
    size_t len = strlen((const char *)p);
    char *out = xmalloc(len + 1);
    size_t o = 0;

    while (*p != '\0') {
        size_t n = utf8_seq(p);

        if (n == 0 || (n == 1 && (*p < 0x20 || *p == 0x7f))) {
            out[o++] = '?';
            p++;
            continue;
        }
        memcpy(out + o, p, n);
        o += n;
        p += n;
    }
    out[o] = '\0';
    return out;
}

bool
latch_mem_equal_ct(const void *a, const void *b, size_t n)
{
    return CRYPTO_memcmp(a, b, n) == 0;
}
