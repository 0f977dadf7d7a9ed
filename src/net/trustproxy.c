#include "net/trustproxy.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util/str.h"
#include "util/xalloc.h"

#define TRUSTPROXY_MAX_BLOCKS 64
#define TRUSTPROXY_MAX_HOPS 32 /* X-Forwarded-For entries examined, right to left */
#define ADDR_TEXT_MAX 64

struct block {
    uint8_t a[16]; /* IPv6, or v4-mapped ::ffff:a.b.c.d */
    unsigned bits;
};

struct trustproxy {
    size_t n;
    struct block b[TRUSTPROXY_MAX_BLOCKS];
};

/* Parses one bare address (no port, no brackets) into 16 bytes; *v4 tells which family. */
static bool
addr_parse(const char *s, uint8_t a[16], bool *v4)
{
    struct in_addr in4;

    if (inet_pton(AF_INET, s, &in4) == 1) {
        memset(a, 0, 10);
        a[10] = 0xff;
        a[11] = 0xff;
        memcpy(a + 12, &in4, 4);
        *v4 = true;
        return true;
    }
    *v4 = false;
    return inet_pton(AF_INET6, s, a) == 1;
}

static bool
prefix_equal(const uint8_t *a, const uint8_t *p, unsigned bits)
{
    unsigned full = bits / 8, rest = bits % 8;

    if (memcmp(a, p, full) != 0)
        return false;
    return rest == 0 || ((a[full] ^ p[full]) & (uint8_t)(0xff << (8 - rest))) == 0;
}

static bool
contains(const struct trustproxy *t, const uint8_t a[16])
{
    if (t == NULL)
        return false;
    for (size_t i = 0; i < t->n; i++)
        if (prefix_equal(a, t->b[i].a, t->b[i].bits))
            return true;
    return false;
}

static latch_rc
block_parse(const char *tok, struct block *b, struct latch_err *err)
{
    char s[ADDR_TEXT_MAX];
    char *slash;
    bool v4;
    unsigned bits;

    if (latch_strlcpy(s, tok, sizeof s) >= sizeof s) {
        latch_err_set(err, "LATCH_TRUSTED_PROXIES: entry too long");
        return LATCH_E_INVAL;
    }
    slash = strchr(s, '/');
    if (slash != NULL)
        *slash++ = '\0';
    if (!addr_parse(s, b->a, &v4)) {
        latch_err_set(err, "LATCH_TRUSTED_PROXIES: \"%s\" is not an IP address", s);
        return LATCH_E_INVAL;
    }
    bits = v4 ? 32 : 128;
    if (slash != NULL) {
        const char *e = NULL;
        long long n = latch_strtonum(slash, 0, bits, &e);

        if (e != NULL) {
            latch_err_set(err, "LATCH_TRUSTED_PROXIES: bad prefix length /%s for %s", slash, s);
            return LATCH_E_INVAL;
        }
        bits = (unsigned)n;
    }
    b->bits = v4 ? bits + 96 : bits;
    return LATCH_OK;
}

latch_rc
trustproxy_parse(const char *list, struct trustproxy **out, struct latch_err *err)
{
    struct trustproxy *t;
    const char *p = list;

    *out = NULL;
    if (list == NULL)
        return LATCH_OK;
    t = xcalloc(1, sizeof *t);
    while (*p != '\0') {
        char tok[ADDR_TEXT_MAX];
        size_t n = strcspn(p, ", \t");

        if (n == 0) {
            p++;
            continue;
        }
        if (t->n == TRUSTPROXY_MAX_BLOCKS) {
            latch_err_set(err, "LATCH_TRUSTED_PROXIES: more than %d entries",
                          TRUSTPROXY_MAX_BLOCKS);
            free(t);
            return LATCH_E_INVAL;
        }
        if (n >= sizeof tok) {
            latch_err_set(err, "LATCH_TRUSTED_PROXIES: entry too long");
            free(t);
            return LATCH_E_INVAL;
        }
        memcpy(tok, p, n);
        tok[n] = '\0';
        if (block_parse(tok, &t->b[t->n], err) != LATCH_OK) {
            free(t);
            return LATCH_E_INVAL;
        }
        t->n++;
        p += n;
    }
    if (t->n == 0) {
        free(t);
        return LATCH_OK;
    }
    *out = t;
    return LATCH_OK;
}

void
trustproxy_free(struct trustproxy *t)
{
    free(t);
}

bool
trustproxy_contains(const struct trustproxy *t, const char *ip)
{
    uint8_t a[16];
    bool v4;

    return ip != NULL && addr_parse(ip, a, &v4) && contains(t, a);
}

/*
 * One X-Forwarded-For entry (trimmed) into 16 bytes: a bare address, "[v6]", "[v6]:port" or
 * "v4:port" (some proxies append the port).
 */
static bool
entry_parse(const char *s, size_t n, uint8_t a[16])
{
    char e[ADDR_TEXT_MAX];
    char *colon;
    bool v4;

    while (n > 0 && (*s == ' ' || *s == '\t')) {
        s++;
        n--;
    }
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    if (n == 0 || n >= sizeof e)
        return false;
    memcpy(e, s, n);
    e[n] = '\0';
    if (e[0] == '[') {
        char *close = strchr(e, ']');

        if (close == NULL || (close[1] != '\0' && close[1] != ':'))
            return false;
        *close = '\0';
        return inet_pton(AF_INET6, e + 1, a) == 1;
    }
    colon = strchr(e, ':');
    if (colon != NULL && strchr(colon + 1, ':') == NULL)
        *colon = '\0'; /* v4:port */
    return addr_parse(e, a, &v4);
}

static void
addr_text(const uint8_t a[16], char *out, size_t out_size)
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

    if (memcmp(a, mapped, 12) == 0)
        (void)inet_ntop(AF_INET, a + 12, out, (socklen_t)out_size);
    else
        (void)inet_ntop(AF_INET6, a, out, (socklen_t)out_size);
}

void
trustproxy_client(const struct trustproxy *t, const char *peer, const char *xff, char *out,
                  size_t out_size)
{
    uint8_t cur[16], a[16];
    bool v4;
    size_t end;

    latch_strlcpy(out, peer != NULL ? peer : "-", out_size);
    if (t == NULL || xff == NULL || peer == NULL || !addr_parse(peer, cur, &v4) ||
        !contains(t, cur))
        return;
    end = strlen(xff);
    for (int hops = 0; hops < TRUSTPROXY_MAX_HOPS && end > 0; hops++) {
        size_t start = end;

        while (start > 0 && xff[start - 1] != ',')
            start--;
        if (!entry_parse(xff + start, end - start, a))
            break; /* a trusted proxy wrote garbage: keep the last trusted address */
        memcpy(cur, a, sizeof cur);
        if (!contains(t, cur))
            break;
        end = start > 0 ? start - 1 : 0;
    }
    addr_text(cur, out, out_size);
}
