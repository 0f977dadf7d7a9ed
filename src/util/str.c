#include "util/str.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

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

bool
latch_str_has_prefix_ci(const char *s, const char *prefix)
{
    return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

bool
latch_mem_equal_ct(const void *a, const void *b, size_t n)
{
    return CRYPTO_memcmp(a, b, n) == 0;
}
