/*
 * fake_ninjaone.c: a fake NinjaOne (public API v2 + OAuth2 client-credentials token endpoint) for
 * latch's integration tests and benchmarks.
 *
 * Standalone test program: it links libmicrohttpd, jansson, libcrypto and pthread only, and uses
 * no project sources.  The behaviour it imitates is written down in /work/shared/ninjaone-api.md;
 * the flags, endpoints, fault modes and the byte generator are documented in
 * tests/fake_ninjaone/README.md.
 *
 * Threads: libmicrohttpd runs one thread per connection, so every handler below may run
 * concurrently (and a handler may sleep to inject a delay without blocking anyone else).  Shared
 * state is file-scope: counters, clock, token sequence and flags are C11 atomics; clients, faults,
 * the last token request and device renames are guarded by g_lock.  Access tokens are stateless
 * (an HMAC over sequence number, expiry, instance and scopes), so validating one needs no table
 * and memory stays bounded however many tokens are issued.
 */
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

/*
 * Bounds.  This is a test program outside src/, so its bounds live here rather than in
 * src/limits.h.
 */
#define FAKE_BODY_MAX (64u * 1024u)              /* request body cap, all routes but echo */
#define FAKE_ECHO_BODY_MAX (64u * 1024u * 1024u) /* request body cap for /v2/echo */
#define FAKE_ECHO_B64_MAX (8u * 1024u * 1024u)   /* echo bodies up to this go back as base64 */
#define FAKE_RESP_MAX (32u * 1024u * 1024u)      /* generated JSON response cap */
#define FAKE_FILE_MAX (1024u * 1024u)            /* --cert / --key / --clients file size */
#define FAKE_MAX_CLIENTS 256                     /* registered OAuth clients */
#define FAKE_ID_MAX 128                          /* client_id / client_secret length */
#define FAKE_FORM_MAX_FIELDS 64                  /* fields in a token request form */
#define FAKE_BASIC_MAX 1024                      /* decoded HTTP Basic credentials */
#define FAKE_SCOPE_STR_MAX 256                   /* granted scope string */
#define FAKE_DELAY_MAX_MS 120000L                /* fault delay_ms upper bound */
#define FAKE_STALL_MAX_MS 120000L                /* a stalled request is closed after this */
#define FAKE_HUGE_DEFAULT (10u * 1024u * 1024u)  /* fault "huge" body size */
#define FAKE_HUGE_MAX (1024ULL * 1024u * 1024u)  /* fault huge_bytes upper bound */
#define FAKE_BYTES_MAX (64ULL * 1024u * 1024u * 1024u) /* /v2/bytes?n= upper bound */
#define FAKE_BLOCK (64u * 1024u)                       /* content reader block size */
#define FAKE_PAGE_DEFAULT 100                          /* id-paged lists without pageSize */
#define FAKE_PAGE_MAX 1000   /* id-paged lists: larger pageSize is clamped */
#define FAKE_ACT_PAGE_MIN 10 /* activities pageSize range and default */
#define FAKE_ACT_PAGE_MAX 1000
#define FAKE_ACT_PAGE_DEFAULT 200
#define FAKE_REPORT_PAGE_DEFAULT 100 /* queries reports: pageSize default, max */
#define FAKE_REPORT_PAGE_MAX 1000
#define FAKE_LIFETIME_MAX (30 * 86400)  /* --token-lifetime upper bound */
#define FAKE_MAX_CONNECTIONS 1000       /* MHD connection limit */
#define FAKE_CONN_MEMORY (128u * 1024u) /* MHD per-connection memory (headers) */
#define FAKE_IDLE_TIMEOUT_S 300u        /* idle keep-alive connection timeout */
#define FAKE_NAME_MAX 200               /* PATCH device displayName length */

/* Seed data sizes. */
#define N_DEVICES 1115
#define N_ALERTS 40
#define N_ACTIVITIES 500
#define ACT_ID_BASE 4294967300LL /* > 2^32: activity ids are int64 */

#define TOK_RAW 32
#define TOK_B64 43
#define TOK_LEN (2 * TOK_B64 + 1)

/* ------------------------------------------------------------------------------------------ */
/* memory */

static void *
xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);

    if (p == NULL) {
        fputs("fake-ninjaone: out of memory\n", stderr);
        abort();
    }
    return p;
}

static void *
xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz ? sz : 1);

    if (p == NULL) {
        fputs("fake-ninjaone: out of memory\n", stderr);
        abort();
    }
    return p;
}

static void *
xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);

    if (q == NULL) {
        fputs("fake-ninjaone: out of memory\n", stderr);
        abort();
    }
    return q;
}

static char *
xstrndup(const char *s, size_t n)
{
    char *p = xmalloc(n + 1);

    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static char *
xstrdup(const char *s)
{
    return xstrndup(s, strlen(s));
}

/* ------------------------------------------------------------------------------------------ */
/* capped string builder */

struct sbuf {
    char *p;
    size_t len;
    size_t cap;
    size_t max;
    bool overflow;
};

static void
sb_init(struct sbuf *b, size_t max)
{
    b->p = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
    b->overflow = false;
}

static void
sb_free(struct sbuf *b)
{
    free(b->p);
    sb_init(b, b->max);
}

static bool
sb_reserve(struct sbuf *b, size_t extra)
{
    size_t need, ncap;

    if (b->overflow)
        return false;
    if (extra > b->max - b->len) {
        b->overflow = true;
        return false;
    }
    need = b->len + extra + 1;
    if (need <= b->cap)
        return true;
    ncap = b->cap ? b->cap : 256;
    while (ncap < need)
        ncap *= 2;
    if (ncap > b->max + 1)
        ncap = b->max + 1;
    b->p = xrealloc(b->p, ncap);
    b->cap = ncap;
    return true;
}

static void
sb_add(struct sbuf *b, const void *s, size_t n)
{
    if (!sb_reserve(b, n))
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void
sb_puts(struct sbuf *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

static void
sb_putc(struct sbuf *b, char ch)
{
    sb_add(b, &ch, 1);
}

__attribute__((format(printf, 2, 3))) static void
sb_printf(struct sbuf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->overflow = true;
        return;
    }
    if (!sb_reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Appends s as a JSON string literal (quotes included).  s is UTF-8; bytes >= 0x80 pass. */
static void
sb_json_str(struct sbuf *b, const char *s)
{
    const unsigned char *p;

    sb_putc(b, '"');
    for (p = (const unsigned char *)s; *p != '\0'; p++) {
        switch (*p) {
        case '"':
            sb_puts(b, "\\\"");
            break;
        case '\\':
            sb_puts(b, "\\\\");
            break;
        case '\n':
            sb_puts(b, "\\n");
            break;
        case '\r':
            sb_puts(b, "\\r");
            break;
        case '\t':
            sb_puts(b, "\\t");
            break;
        default:
            if (*p < 0x20)
                sb_printf(b, "\\u%04x", (unsigned)*p);
            else
                sb_putc(b, (char)*p);
        }
    }
    sb_putc(b, '"');
}

enum ts_style { TS_FRAC, TS_INT, TS_EXP };

/*
 * Appends an epoch-seconds JSON number.  TS_FRAC: 1716223344.12, TS_INT: 1716223344,
 * TS_EXP: Java Double.toString form, 1.7068848123E9.  Written as text, never through a double.
 */
static void
sb_epoch(struct sbuf *b, int64_t secs, unsigned millis, enum ts_style style)
{
    char frac[8] = "";
    char digits[48];
    size_t n;
    int secs_len;

    millis %= 1000u;
    if (millis > 0) {
        snprintf(frac, sizeof frac, "%03u", millis);
        n = strlen(frac);
        while (n > 0 && frac[n - 1] == '0')
            frac[--n] = '\0';
    }
    switch (style) {
    case TS_INT:
        sb_printf(b, "%" PRId64, secs);
        return;
    case TS_FRAC:
        sb_printf(b, "%" PRId64 ".%s", secs, frac[0] != '\0' ? frac : "0");
        return;
    case TS_EXP:
        secs_len = snprintf(digits, sizeof digits, "%" PRId64, secs);
        if (secs_len < 1 || secs < 0) {
            sb_printf(b, "%" PRId64, secs);
            return;
        }
        snprintf(digits, sizeof digits, "%" PRId64 "%s", secs, frac);
        n = strlen(digits);
        while (n > 2 && digits[n - 1] == '0')
            digits[--n] = '\0';
        sb_printf(b, "%c.%sE%d", digits[0], n > 1 ? digits + 1 : "0", secs_len - 1);
        return;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* small parsers and encoders */

/* Strict decimal: optional '-', digits only, whole string, within [min, max]. */
static bool
parse_ll(const char *s, long long min, long long max, long long *out)
{
    char *end = NULL;
    long long v;

    if (s == NULL || (*s != '-' && (*s < '0' || *s > '9')))
        return false;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
        return false;
    *out = v;
    return true;
}

static int
b64_val(int ch, bool url)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == (url ? '-' : '+'))
        return 62;
    if (ch == (url ? '_' : '/'))
        return 63;
    return -1;
}

/* Decodes base64 (url: base64url).  Trailing '=' padding is accepted and ignored. */
static bool
b64_decode(const char *in, size_t n, bool url, unsigned char *out, size_t outmax, size_t *outlen)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0, i;

    while (n > 0 && in[n - 1] == '=')
        n--;
    for (i = 0; i < n; i++) {
        int v = b64_val((unsigned char)in[i], url);

        if (v < 0)
            return false;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o >= outmax)
                return false;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1u;
        }
    }
    if (bits >= 6)
        return false;
    *outlen = o;
    return true;
}

/* out must hold 4 * ((n + 2) / 3) + 1 bytes.  base64url output is unpadded. */
static size_t
b64_encode(const unsigned char *in, size_t n, bool url, char *out)
{
    static const char std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    static const char urlsafe[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const char *a = url ? urlsafe : std;
    size_t i, o = 0;

    for (i = 0; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];

        out[o++] = a[(v >> 18) & 63];
        out[o++] = a[(v >> 12) & 63];
        out[o++] = a[(v >> 6) & 63];
        out[o++] = a[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;

        out[o++] = a[(v >> 18) & 63];
        out[o++] = a[(v >> 12) & 63];
        if (!url) {
            out[o++] = '=';
            out[o++] = '=';
        }
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;

        out[o++] = a[(v >> 18) & 63];
        out[o++] = a[(v >> 12) & 63];
        out[o++] = a[(v >> 6) & 63];
        if (!url)
            out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}

static int
hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/*
 * application/x-www-form-urlencoded decoding of s[0..n): '+' is a space, %XX a byte.  Returns
 * an owned string, or NULL on a bad escape or an encoded NUL.
 */
static char *
form_decode(const char *s, size_t n)
{
    char *out = xmalloc(n + 1);
    size_t i, o = 0;

    for (i = 0; i < n; i++) {
        if (s[i] == '+') {
            out[o++] = ' ';
        } else if (s[i] == '%') {
            int hi, lo;

            if (i + 2 >= n) {
                free(out);
                return NULL;
            }
            hi = hexval((unsigned char)s[i + 1]);
            lo = hexval((unsigned char)s[i + 2]);
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
                free(out);
                return NULL;
            }
            out[o++] = (char)(hi << 4 | lo);
            i += 2;
        } else if (s[i] == '\0') {
            free(out);
            return NULL;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    return out;
}

struct form_field {
    char *key;
    char *val;
};

struct form {
    struct form_field f[FAKE_FORM_MAX_FIELDS];
    size_t n;
};

static void
form_free(struct form *f)
{
    size_t i;

    for (i = 0; i < f->n; i++) {
        free(f->f[i].key);
        free(f->f[i].val);
    }
    f->n = 0;
}

/* Parses a form body.  Returns NULL or a static error text. */
static const char *
form_parse(const char *body, size_t len, struct form *f)
{
    size_t i = 0;

    f->n = 0;
    while (i < len) {
        size_t j = i, eq;
        const char *seg = body + i;

        while (j < len && body[j] != '&')
            j++;
        if (j > i) {
            size_t seglen = j - i;

            if (f->n == FAKE_FORM_MAX_FIELDS)
                return "too many form fields";
            for (eq = 0; eq < seglen && seg[eq] != '='; eq++)
                ;
            f->f[f->n].key = form_decode(seg, eq);
            f->f[f->n].val = eq < seglen ? form_decode(seg + eq + 1, seglen - eq - 1) : xstrdup("");
            if (f->f[f->n].key == NULL || f->f[f->n].val == NULL) {
                free(f->f[f->n].key);
                free(f->f[f->n].val);
                return "malformed percent-encoding in form body";
            }
            f->n++;
        }
        i = j + 1;
    }
    return NULL;
}

/* Returns the last value of key, and how many times it occurs. */
static const char *
form_get(const struct form *f, const char *key, int *count)
{
    const char *v = NULL;
    size_t i;
    int c = 0;

    for (i = 0; i < f->n; i++) {
        if (strcmp(f->f[i].key, key) == 0) {
            v = f->f[i].val;
            c++;
        }
    }
    if (count != NULL)
        *count = c;
    return v;
}

static uint64_t
mix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

/* Deterministic version-4-shaped UUID for (kind, id). */
static void
fmt_uuid(char *out, size_t outlen, uint64_t kind, uint64_t id)
{
    uint64_t a = mix64(kind * 1000003u + id);
    uint64_t c = mix64(a ^ (id << 1));

    snprintf(out, outlen, "%08" PRIx64 "-%04" PRIx64 "-4%03" PRIx64 "-%04" PRIx64 "-%012" PRIx64,
             a >> 32, (a >> 16) & 0xffffu, a & 0xfffu, 0x8000u | ((c >> 48) & 0x3fffu),
             (uint64_t)(c & 0xffffffffffffULL));
}

/* ------------------------------------------------------------------------------------------ */
/* instances, scopes, clients */

static const char *const k_hosts[] = {
    "app.ninjarmm.com", "us2.ninjarmm.com", "eu.ninjarmm.com", "ca.ninjarmm.com", "oc.ninjarmm.com",
};
#define N_HOSTS ((int)(sizeof k_hosts / sizeof k_hosts[0]))

static const char *const k_scopes[] = {"monitoring", "management", "control", "offline_access"};
#define N_SCOPES ((int)(sizeof k_scopes / sizeof k_scopes[0]))
#define SCOPE_MONITORING 1u
#define SCOPE_MANAGEMENT 2u

/* "eu", "eu.ninjarmm.com", "EU.NinjaRMM.com:8443" -> index, or -1. */
static int
instance_parse(const char *s, size_t n)
{
    static const char *const shortk[] = {"app", "us2", "eu", "ca", "oc"};
    const char *colon = memchr(s, ':', n);
    int i;

    if (colon != NULL)
        n = (size_t)(colon - s);
    if (n == 2 && strncasecmp(s, "us", 2) == 0)
        return 0;
    for (i = 0; i < N_HOSTS; i++) {
        if (strlen(k_hosts[i]) == n && strncasecmp(s, k_hosts[i], n) == 0)
            return i;
        if (strlen(shortk[i]) == n && strncasecmp(s, shortk[i], n) == 0)
            return i;
    }
    return -1;
}

static int
scope_index(const char *s, size_t n)
{
    int i;

    for (i = 0; i < N_SCOPES; i++) {
        if (strlen(k_scopes[i]) == n && memcmp(s, k_scopes[i], n) == 0)
            return i;
    }
    return -1;
}

/* "monitoring management", "monitoring,management" -> bitmask; false on an unknown name. */
static bool
scopes_parse_list(const char *s, unsigned *out, char *err, size_t errlen)
{
    unsigned m = 0;

    while (*s != '\0') {
        size_t n = strcspn(s, ", ");

        if (n > 0) {
            int k = scope_index(s, n);

            if (k < 0) {
                snprintf(err, errlen, "unknown scope '%.*s'", (int)(n > 64 ? 64 : n), s);
                return false;
            }
            m |= 1u << k;
        }
        s += n;
        if (*s != '\0')
            s++;
    }
    *out = m;
    return true;
}

static void
scopes_join(unsigned m, char *out, size_t outlen)
{
    int i;
    size_t o = 0;

    out[0] = '\0';
    for (i = 0; i < N_SCOPES; i++) {
        if ((m & (1u << i)) != 0) {
            int w = snprintf(out + o, outlen - o, "%s%s", o ? " " : "", k_scopes[i]);

            if (w < 0 || (size_t)w >= outlen - o)
                return;
            o += (size_t)w;
        }
    }
}

struct client {
    char id[FAKE_ID_MAX + 1];
    char secret[FAKE_ID_MAX + 1];
    int inst;
    unsigned scopes;
};

/* ------------------------------------------------------------------------------------------ */
/* shared state */

enum fault_mode {
    FM_NONE,
    FM_DELAY,
    FM_STATUS,
    FM_MALFORMED,
    FM_HUGE,
    FM_RESET,
    FM_STALL,
    FM_TRUNCATE,
    FM_ECHO,
};
static const char *const k_fault_modes[] = {"none",  "delay", "status",   "malformed", "huge",
                                            "reset", "stall", "truncate", "echo"};
#define N_FAULT_MODES ((int)(sizeof k_fault_modes / sizeof k_fault_modes[0]))

enum fault_target { FT_TOKEN, FT_API, N_FAULT_TARGETS };
static const char *const k_fault_targets[] = {"token", "api"};

struct fault {
    enum fault_mode mode;
    long delay_ms;
    unsigned status;
    char retry_after[32];
    long remaining; /* requests left; -1 = until cleared */
    unsigned long hits;
    char *body; /* owned; NULL = default body */
    uint64_t huge_bytes;
    bool after_grant; /* token: run a code/refresh grant first, then the fault (a lost answer) */
};

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static struct client g_clients[FAKE_MAX_CLIENTS]; /* g_lock */
static size_t g_nclients;                         /* g_lock */
static struct fault g_faults[N_FAULT_TARGETS];    /* g_lock */
static char *g_last_token_req;                    /* g_lock; JSON text */
static char *g_dev_rename[N_DEVICES];             /* g_lock; PATCH displayName */

static atomic_ullong g_token_requests;
static atomic_ullong g_token_ok;
static atomic_ullong g_api_requests;
static atomic_llong g_connections; /* minus connections whose first request was /__fake/ */
static atomic_ullong g_data_connections;
static atomic_llong g_active_connections;
static atomic_ullong g_tokens_issued;
static atomic_ullong g_control_requests;
static atomic_ullong g_other_requests;
static atomic_ullong g_next_seq = 1;
static atomic_ullong g_min_seq;
static atomic_llong g_clock_offset;
static atomic_int g_lifetime = 3600;
static atomic_bool g_stopping;
static atomic_uint g_reset_gen;

static unsigned char g_key[32]; /* HMAC key for tokens; written once before the daemon starts */
static int g_lifetime_default = 3600;
static bool g_tls = true;
static int g_default_inst = -1;
static bool g_verbose;

static int64_t
fake_now(void)
{
    return (int64_t)time(NULL) + atomic_load(&g_clock_offset);
}

static bool
client_add(const struct client *c, char *err, size_t errlen)
{
    size_t i;
    bool ok = true;

    pthread_mutex_lock(&g_lock);
    for (i = 0; i < g_nclients; i++) {
        if (strcmp(g_clients[i].id, c->id) == 0)
            break;
    }
    if (i == g_nclients) {
        if (g_nclients == FAKE_MAX_CLIENTS) {
            snprintf(err, errlen, "too many clients (max %d)", FAKE_MAX_CLIENTS);
            ok = false;
            goto out;
        }
        g_nclients++;
    }
    g_clients[i] = *c;
out:
    pthread_mutex_unlock(&g_lock);
    return ok;
}

static bool
client_find(const char *id, struct client *out)
{
    size_t i;
    bool found = false;

    pthread_mutex_lock(&g_lock);
    for (i = 0; i < g_nclients; i++) {
        if (strcmp(g_clients[i].id, id) == 0) {
            *out = g_clients[i];
            found = true;
            break;
        }
    }
    pthread_mutex_unlock(&g_lock);
    return found;
}

static bool
client_field_ok(const char *s)
{
    size_t n = strlen(s), i;

    if (n == 0 || n > FAKE_ID_MAX)
        return false;
    for (i = 0; i < n; i++) {
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
            return false;
    }
    return true;
}

/* Fills c from {"client_id","client_secret","instance","scopes":[...]|"a b"}. */
static bool
client_from_json(const json_t *o, struct client *c, char *err, size_t errlen)
{
    const char *id = json_string_value(json_object_get(o, "client_id"));
    const char *secret = json_string_value(json_object_get(o, "client_secret"));
    const char *inst = json_string_value(json_object_get(o, "instance"));
    const json_t *sc = json_object_get(o, "scopes");

    memset(c, 0, sizeof *c);
    if (!json_is_object(o) || id == NULL || secret == NULL || inst == NULL) {
        snprintf(err, errlen, "client needs string client_id, client_secret and instance");
        return false;
    }
    if (!client_field_ok(id) || !client_field_ok(secret)) {
        snprintf(err, errlen, "client_id/client_secret must be 1..%d printable ASCII chars",
                 FAKE_ID_MAX);
        return false;
    }
    c->inst = instance_parse(inst, strlen(inst));
    if (c->inst < 0) {
        snprintf(err, errlen, "unknown instance '%.64s'", inst);
        return false;
    }
    memcpy(c->id, id, strlen(id) + 1);
    memcpy(c->secret, secret, strlen(secret) + 1);
    if (json_is_string(sc)) {
        return scopes_parse_list(json_string_value(sc), &c->scopes, err, errlen);
    } else if (json_is_array(sc)) {
        size_t i;
        const json_t *v;

        json_array_foreach(sc, i, v)
        {
            const char *s = json_string_value(v);
            int k = s != NULL ? scope_index(s, strlen(s)) : -1;

            if (k < 0) {
                snprintf(err, errlen, "unknown scope in client %s", id);
                return false;
            }
            c->scopes |= 1u << k;
        }
        return true;
    } else if (sc == NULL) {
        c->scopes = SCOPE_MONITORING;
        return true;
    }
    snprintf(err, errlen, "scopes must be an array or a string");
    return false;
}

/* --client id:secret:instance:scopes */
static bool
client_from_arg(const char *arg, struct client *c, char *err, size_t errlen)
{
    const char *p1 = strchr(arg, ':');
    const char *p2 = p1 ? strchr(p1 + 1, ':') : NULL;
    const char *p3 = p2 ? strchr(p2 + 1, ':') : NULL;
    char *id = NULL, *secret = NULL, *inst = NULL;
    bool ok = false;

    memset(c, 0, sizeof *c);
    if (p1 == NULL || p2 == NULL) {
        snprintf(err, errlen, "--client wants id:secret:instance[:scopes]");
        return false;
    }
    id = xstrndup(arg, (size_t)(p1 - arg));
    secret = xstrndup(p1 + 1, (size_t)(p2 - p1 - 1));
    inst = p3 ? xstrndup(p2 + 1, (size_t)(p3 - p2 - 1)) : xstrdup(p2 + 1);
    if (!client_field_ok(id) || !client_field_ok(secret)) {
        snprintf(err, errlen, "client_id/client_secret must be 1..%d printable ASCII chars",
                 FAKE_ID_MAX);
        goto out;
    }
    c->inst = instance_parse(inst, strlen(inst));
    if (c->inst < 0) {
        snprintf(err, errlen, "unknown instance '%.64s'", inst);
        goto out;
    }
    memcpy(c->id, id, strlen(id) + 1);
    memcpy(c->secret, secret, strlen(secret) + 1);
    if (p3 != NULL)
        ok = scopes_parse_list(p3 + 1, &c->scopes, err, errlen);
    else {
        c->scopes = SCOPE_MONITORING;
        ok = true;
    }
out:
    free(id);
    free(secret);
    free(inst);
    return ok;
}

/* ------------------------------------------------------------------------------------------ */
/* tokens: <b64url(32-byte masked payload)>.<b64url(HMAC-SHA256(key, payload))> */

static void
put_u64(unsigned char *p, uint64_t v)
{
    int i;

    for (i = 7; i >= 0; i--) {
        p[i] = (unsigned char)(v & 0xffu);
        v >>= 8;
    }
}

static uint64_t
get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    int i;

    for (i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static void
token_tag(const unsigned char *raw, unsigned char *tag)
{
    unsigned int taglen = 0;

    if (HMAC(EVP_sha256(), g_key, (int)sizeof g_key, raw, TOK_RAW, tag, &taglen) == NULL ||
        taglen != 32) {
        fputs("fake-ninjaone: HMAC failed\n", stderr);
        abort();
    }
}

/*
 * Payload: 14 random bytes, then seq(8) exp(8) instance(1) scopes(1) XORed with a mask derived
 * from the random bytes, so tokens look opaque and share no prefix.
 */
static void
token_mask(unsigned char *raw)
{
    unsigned char in[15], mask[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    int i;

    in[0] = 'M';
    memcpy(in + 1, raw, 14);
    if (HMAC(EVP_sha256(), g_key, (int)sizeof g_key, in, sizeof in, mask, &len) == NULL ||
        len < 18) {
        fputs("fake-ninjaone: HMAC failed\n", stderr);
        abort();
    }
    for (i = 0; i < 18; i++)
        raw[14 + i] ^= mask[i];
}

static void
token_issue(int inst, unsigned scopes, int64_t exp, char *out)
{
    unsigned char raw[TOK_RAW], tag[EVP_MAX_MD_SIZE];
    uint64_t seq = atomic_fetch_add(&g_next_seq, 1);

    if (RAND_bytes(raw, 14) != 1) {
        fputs("fake-ninjaone: RAND_bytes failed\n", stderr);
        abort();
    }
    put_u64(raw + 14, seq);
    put_u64(raw + 22, (uint64_t)exp);
    raw[30] = (unsigned char)inst;
    raw[31] = (unsigned char)scopes;
    token_mask(raw);
    token_tag(raw, tag);
    b64_encode(raw, TOK_RAW, true, out);
    out[TOK_B64] = '.';
    b64_encode(tag, 32, true, out + TOK_B64 + 1);
    atomic_fetch_add(&g_tokens_issued, 1);
}

/* True when tok is a live token issued for instance inst; *scopes gets its grant. */
static bool
token_check(const char *tok, size_t len, int inst, unsigned *scopes)
{
    unsigned char raw[TOK_RAW + 4], tag[TOK_RAW + 4], want[EVP_MAX_MD_SIZE];
    char canon[TOK_B64 + 4];
    size_t n1 = 0, n2 = 0;

    if (len != TOK_LEN || tok[TOK_B64] != '.')
        return false;
    if (!b64_decode(tok, TOK_B64, true, raw, sizeof raw, &n1) || n1 != TOK_RAW ||
        !b64_decode(tok + TOK_B64 + 1, TOK_B64, true, tag, sizeof tag, &n2) || n2 != 32)
        return false;
    /* Reject non-canonical spellings (dropped low bits in the last character). */
    b64_encode(raw, TOK_RAW, true, canon);
    if (memcmp(canon, tok, TOK_B64) != 0)
        return false;
    b64_encode(tag, 32, true, canon);
    if (memcmp(canon, tok + TOK_B64 + 1, TOK_B64) != 0)
        return false;
    token_tag(raw, want);
    if (CRYPTO_memcmp(want, tag, 32) != 0)
        return false;
    token_mask(raw);
    if (get_u64(raw + 14) < atomic_load(&g_min_seq))
        return false;
    if ((int64_t)get_u64(raw + 22) <= fake_now())
        return false;
    if (raw[30] != (unsigned char)inst)
        return false;
    *scopes = raw[31];
    return true;
}

/* ------------------------------------------------------------------------------------------ */
/* per-request context */

enum rkind { RK_OTHER, RK_TOKEN, RK_API, RK_CONTROL };

struct req {
    char *raw_uri; /* owned; as sent, before unescaping */
    bool started;
    bool responded;
    enum rkind kind;
    struct fault fault; /* picked when the request arrived; FM_NONE if none */
    size_t cap;
    bool too_large;
    char *body; /* owned; NUL-terminated */
    size_t body_len;
    size_t body_alloc;
    uint64_t body_total;
    EVP_MD_CTX *sha; /* echo only */
    unsigned gen;
    unsigned status; /* queued status, for the verbose log */
    char method[16];
};

static _Thread_local struct req *t_cur;

static void
req_free(struct req *r)
{
    if (r == NULL)
        return;
    free(r->raw_uri);
    free(r->body);
    free(r->fault.body);
    EVP_MD_CTX_free(r->sha);
    free(r);
}

static void
req_body_add(struct req *r, const char *data, size_t n)
{
    r->body_total += n;
    if (r->too_large)
        return;
    if (r->body_total > r->cap) {
        r->too_large = true;
        free(r->body);
        r->body = NULL;
        r->body_len = 0;
        r->body_alloc = 0;
        return;
    }
    if (r->sha != NULL)
        EVP_DigestUpdate(r->sha, data, n);
    if (r->body_len + n + 1 > r->body_alloc) {
        size_t na = r->body_alloc ? r->body_alloc : 4096;

        while (na < r->body_len + n + 1)
            na *= 2;
        if (na > r->cap + 1)
            na = r->cap + 1;
        r->body = xrealloc(r->body, na);
        r->body_alloc = na;
    }
    memcpy(r->body + r->body_len, data, n);
    r->body_len += n;
    r->body[r->body_len] = '\0';
}

static bool
fault_pick(enum fault_target t, struct fault *out)
{
    struct fault *f = &g_faults[t];
    bool hit = false;

    pthread_mutex_lock(&g_lock);
    if (f->mode != FM_NONE) {
        *out = *f;
        out->body = f->body ? xstrdup(f->body) : NULL;
        f->hits++;
        hit = true;
        if (f->remaining > 0 && --f->remaining == 0) {
            free(f->body);
            memset(f, 0, sizeof *f);
        }
    }
    pthread_mutex_unlock(&g_lock);
    return hit;
}

/* ------------------------------------------------------------------------------------------ */
/* responses */

struct hdr {
    const char *name;
    const char *value;
};

static const char *
reason(unsigned status)
{
    switch (status) {
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 413:
        return "Payload Too Large";
    case 421:
        return "Misdirected Request";
    case 429:
        return "Too Many Requests";
    case 500:
        return "Internal Server Error";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Error";
    }
}

static enum MHD_Result
queue(struct MHD_Connection *c, unsigned status, struct MHD_Response *resp, const char *ctype,
      const struct hdr *hdrs, size_t nhdrs)
{
    enum MHD_Result ret;
    size_t i;

    if (ctype != NULL)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_SERVER, "nginx");
    for (i = 0; i < nhdrs; i++)
        MHD_add_response_header(resp, hdrs[i].name, hdrs[i].value);
    ret = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    if (t_cur != NULL) {
        t_cur->status = status;
        t_cur->responded = true;
    }
    return ret;
}

/* Takes ownership of body (malloc'd; NULL allowed when len is 0). */
static enum MHD_Result
respond_buf(struct MHD_Connection *c, unsigned status, char *body, size_t len, const char *ctype,
            const struct hdr *hdrs, size_t nhdrs)
{
    struct MHD_Response *resp;

    if (body == NULL || len == 0) {
        free(body);
        body = NULL;
        resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    } else {
        resp = MHD_create_response_from_buffer_with_free_callback(len, body, free);
    }
    if (resp == NULL) {
        free(body);
        return MHD_NO;
    }
    return queue(c, status, resp, ctype, hdrs, nhdrs);
}

static void
incident_id(char *out, size_t outlen)
{
    static const char alnum[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    unsigned char rnd[10];
    char tail[8];
    int i;

    if (RAND_bytes(rnd, sizeof rnd) != 1)
        memset(rnd, 7, sizeof rnd);
    for (i = 0; i < 6; i++)
        tail[i] = alnum[rnd[4 + i] % (sizeof alnum - 1)];
    tail[6] = '\0';
    snprintf(out, outlen, "WEB_MGMT_SERVICE-%02x%02x%02x%02x-%" PRId64 "-%s", rnd[0], rnd[1],
             rnd[2], rnd[3], (int64_t)time(NULL), tail);
}

static enum MHD_Result respond_sb(struct MHD_Connection *c, unsigned status, struct sbuf *b,
                                  const char *ctype, const struct hdr *hdrs, size_t nhdrs);

/* {"resultCode":"FAILURE","errorMessage":msg,"incidentId":...} */
static enum MHD_Result
respond_failure(struct MHD_Connection *c, unsigned status, const char *msg)
{
    struct sbuf b;
    char inc[96], dflt[64];

    if (msg == NULL) {
        snprintf(dflt, sizeof dflt, "HTTP %u %s", status, reason(status));
        msg = dflt;
    }
    incident_id(inc, sizeof inc);
    sb_init(&b, 4096);
    sb_puts(&b, "{\"resultCode\":\"FAILURE\",\"errorMessage\":");
    sb_json_str(&b, msg);
    sb_printf(&b, ",\"incidentId\":\"%s\"}", inc);
    return respond_buf(c, status, b.p, b.len, "application/json", NULL, 0);
}

static enum MHD_Result
respond_sb(struct MHD_Connection *c, unsigned status, struct sbuf *b, const char *ctype,
           const struct hdr *hdrs, size_t nhdrs)
{
    if (b->overflow) {
        sb_free(b);
        return respond_failure(c, 500, "response too large for the fake");
    }
    return respond_buf(c, status, b->p, b->len, ctype, hdrs, nhdrs);
}

static enum MHD_Result
respond_json(struct MHD_Connection *c, unsigned status, const char *json, const struct hdr *hdrs,
             size_t nhdrs)
{
    return respond_buf(c, status, xstrdup(json), strlen(json), "application/json", hdrs, nhdrs);
}

/* {"error":error,"error_description":desc} (OAuth dialect), with Cache-Control: no-store. */
static enum MHD_Result
respond_oauth_error(struct MHD_Connection *c, unsigned status, const char *error, const char *desc,
                    bool basic)
{
    struct hdr h[3] = {{"Cache-Control", "no-store"},
                       {"Pragma", "no-cache"},
                       {"WWW-Authenticate", "Basic realm=\"ninjaone\""}};
    struct sbuf b;

    sb_init(&b, 4096);
    sb_puts(&b, "{\"error\":");
    sb_json_str(&b, error);
    if (desc != NULL) {
        sb_puts(&b, ",\"error_description\":");
        sb_json_str(&b, desc);
    }
    sb_putc(&b, '}');
    return respond_sb(c, status, &b, "application/json", h, basic && status == 401 ? 3 : 2);
}

static enum MHD_Result
respond_jansson(struct MHD_Connection *c, unsigned status, json_t *o)
{
    char *s = json_dumps(o, JSON_COMPACT);

    json_decref(o);
    if (s == NULL)
        return respond_failure(c, 500, "JSON encoding failed");
    return respond_buf(c, status, s, strlen(s), "application/json", NULL, 0);
}

/* Host header -> instance index, or g_default_inst, or -1. */
static int
request_instance(struct MHD_Connection *c)
{
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
    int i = h != NULL ? instance_parse(h, strlen(h)) : -1;

    return i >= 0 ? i : g_default_inst;
}

static enum MHD_Result
respond_misdirected(struct MHD_Connection *c)
{
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
    char desc[256];

    snprintf(desc, sizeof desc, "Host '%.100s' is not a NinjaOne instance served by this fake",
             h ? h : "");
    return respond_oauth_error(c, 421, "misdirected_request", desc, false);
}

static const char *
qarg(struct MHD_Connection *c, const char *name)
{
    return MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, name);
}

/* ------------------------------------------------------------------------------------------ */
/* waiting (delay and stall faults) */

enum wait_end { WAIT_ELAPSED, WAIT_ABORTED, WAIT_HANGUP };

static long
ms_since(const struct timespec *t0)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long)((t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000);
}

/*
 * Sleeps ms milliseconds in 100 ms slices.  Ends early on shutdown or /__fake/reset
 * (WAIT_ABORTED), or, when fd >= 0, when the peer hangs up (WAIT_HANGUP).
 */
static enum wait_end
wait_ms(long ms, int fd, unsigned gen)
{
    struct timespec t0;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        long el = ms_since(&t0), slice;

        if (el >= ms)
            return WAIT_ELAPSED;
        if (atomic_load(&g_stopping) || atomic_load(&g_reset_gen) != gen)
            return WAIT_ABORTED;
        slice = ms - el > 100 ? 100 : ms - el;
        if (fd >= 0) {
            struct pollfd p = {.fd = fd, .events = POLLRDHUP, .revents = 0};

            if (poll(&p, 1, (int)slice) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)))
                return WAIT_HANGUP;
        } else {
            poll(NULL, 0, (int)slice);
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* generated bodies: /v2/bytes and the "huge" fault */

struct gen_state {
    uint64_t n;
    uint64_t fail_at; /* abort the connection once this many bytes went out; UINT64_MAX = never */
    bool huge;
};

/* byte i of /v2/bytes: ((i * 2654435761) mod 2^64 >> 13) & 0xff; it depends on i mod 2^21 only. */
#define GEN_PERIOD (1u << 21)
static unsigned char g_gen_table[GEN_PERIOD]; /* written once before the daemon starts */

static void
gen_init(void)
{
    uint64_t i;

    for (i = 0; i < GEN_PERIOD; i++)
        g_gen_table[i] = (unsigned char)((i * 2654435761u) >> 13);
}

static const char k_huge_prefix[] = "{\"access_token\":\"";
static const char k_huge_suffix[] = "\",\"token_type\":\"Bearer\",\"expires_in\":3600}";

static ssize_t
gen_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    const struct gen_state *g = cls;
    uint64_t left;
    size_t k, j;

    if (pos >= g->fail_at)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    if (pos >= g->n)
        return MHD_CONTENT_READER_END_OF_STREAM;
    left = (g->fail_at < g->n ? g->fail_at : g->n) - pos;
    k = left < max ? (size_t)left : max;
    if (!g->huge) {
        for (j = 0; j < k;) {
            size_t off = (size_t)(pos + j) & (GEN_PERIOD - 1), run = GEN_PERIOD - off;

            if (run > k - j)
                run = k - j;
            memcpy(buf + j, g_gen_table + off, run);
            j += run;
        }
    } else {
        uint64_t pre = sizeof k_huge_prefix - 1, suf = sizeof k_huge_suffix - 1;

        for (j = 0; j < k; j++) {
            uint64_t i = pos + j;

            if (i < pre)
                buf[j] = k_huge_prefix[i];
            else if (i >= g->n - suf)
                buf[j] = k_huge_suffix[i - (g->n - suf)];
            else
                buf[j] = 'A';
        }
    }
    return (ssize_t)k;
}

/*
 * Streams n generated bytes (huge: a JSON token body of n bytes; else the /v2/bytes sequence).
 * fail_at < n closes the connection after fail_at bytes of body.
 */
static enum MHD_Result
respond_generated(struct MHD_Connection *c, uint64_t n, uint64_t fail_at, bool huge, bool chunked,
                  const char *ctype)
{
    struct gen_state *g = xcalloc(1, sizeof *g);
    struct MHD_Response *resp;

    g->n = n;
    g->fail_at = fail_at;
    g->huge = huge;
    resp = MHD_create_response_from_callback(chunked ? MHD_SIZE_UNKNOWN : n, FAKE_BLOCK, gen_reader,
                                             g, free);
    if (resp == NULL) {
        free(g);
        return MHD_NO;
    }
    return queue(c, 200, resp, ctype, NULL, 0);
}

/* ------------------------------------------------------------------------------------------ */
/* faults */

/*
 * Applies r->fault.  Returns true when the fault decided the outcome (*ret is set: a queued
 * response or MHD_NO to close the connection); false to continue normally (delay, none).
 */
static bool
fault_apply(struct MHD_Connection *c, struct req *r, enum fault_target t, enum MHD_Result *ret)
{
    const struct fault *f = &r->fault;
    const union MHD_ConnectionInfo *ci;
    struct hdr h[1];
    size_t nh = 0;
    int fd = -1;

    switch (f->mode) {
    case FM_NONE:
        return false;
    case FM_DELAY:
        wait_ms(f->delay_ms, -1, r->gen);
        return false;
    case FM_STATUS:
        if (f->delay_ms > 0)
            wait_ms(f->delay_ms, -1, r->gen);
        if (f->retry_after[0] != '\0') {
            h[0].name = "Retry-After";
            h[0].value = f->retry_after;
            nh = 1;
        }
        if (f->body != NULL) {
            *ret = respond_buf(c, f->status, xstrdup(f->body), strlen(f->body), "application/json",
                               h, nh);
        } else if (t == FT_TOKEN) {
            struct sbuf b;
            const char *err = f->status == 429   ? "too_many_requests"
                              : f->status >= 500 ? "server_error"
                                                 : "fault_injected";

            sb_init(&b, 4096);
            sb_printf(&b, "{\"error\":\"%s\",\"error_description\":\"Injected fault: HTTP %u %s\"}",
                      err, f->status, reason(f->status));
            *ret = respond_sb(c, f->status, &b, "application/json", h, nh);
        } else {
            struct sbuf b;
            char inc[96];

            incident_id(inc, sizeof inc);
            sb_init(&b, 4096);
            sb_printf(&b,
                      "{\"resultCode\":\"FAILURE\",\"errorMessage\":\"HTTP %u %s\","
                      "\"incidentId\":\"%s\"}",
                      f->status, reason(f->status), inc);
            *ret = respond_sb(c, f->status, &b, "application/json", h, nh);
        }
        return true;
    case FM_MALFORMED:
        *ret = respond_json(c, 200, "{\"access_token\": ", NULL, 0);
        return true;
    case FM_ECHO: {
        /* a buggy or hostile endpoint that quotes the request it got (body and Authorization) */
        struct sbuf b;
        const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");

        sb_init(&b, 2 * (r->body_len + 1024));
        sb_printf(&b, "{\"error\":\"invalid_request\",\"error_description\":");
        sb_json_str(&b, r->body != NULL ? r->body : "");
        sb_printf(&b, ",\"authorization\":");
        sb_json_str(&b, auth != NULL ? auth : "");
        sb_printf(&b, ",\"message\":");
        sb_json_str(&b, r->body != NULL ? r->body : "");
        sb_printf(&b, "}");
        *ret = respond_sb(c, f->status, &b, "application/json", NULL, 0);
        return true;
    }
    case FM_HUGE:
        *ret = respond_generated(c, f->huge_bytes, UINT64_MAX, true, false, "application/json");
        return true;
    case FM_TRUNCATE:
        /* Headers promise 1000 bytes; 12 are sent, then the connection is closed. */
        *ret = respond_generated(c, 1000, 12, true, false, "application/json");
        return true;
    case FM_RESET:
        *ret = MHD_NO;
        return true;
    case FM_STALL:
        ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (ci != NULL)
            fd = ci->connect_fd;
        wait_ms(f->delay_ms > 0 ? f->delay_ms : FAKE_STALL_MAX_MS, fd, r->gen);
        *ret = MHD_NO;
        return true;
    }
    return false;
}

/* ------------------------------------------------------------------------------------------ */
/* token endpoint */

enum grant_kind { GR_CC, GR_CODE, GR_REFRESH };

struct tok_outcome {
    enum grant_kind grant;
    char code[257]; /* GR_CODE: the code; GR_REFRESH: the refresh token */
    char client_id[FAKE_ID_MAX + 1];
    char redirect_uri[1025]; /* GR_CODE */
    char verifier[129];      /* GR_CODE: code_verifier ("" = none) */
    unsigned status;
    const char *error; /* NULL on success */
    char desc[192];
    bool basic;
    int inst;
    unsigned scopes;
    char scope_str[FAKE_SCOPE_STR_MAX];
};

static void
tok_fail(struct tok_outcome *o, unsigned status, const char *error, const char *desc)
{
    o->status = status;
    o->error = error;
    snprintf(o->desc, sizeof o->desc, "%s", desc);
}

/* ------------------------------------------------------------------------------------------ */
/* authorization code flow: codes and refresh tokens */

#define FAKE_MAX_CODES 1024      /* outstanding authorization codes */
#define FAKE_MAX_REFRESH 16384   /* live refresh tokens (oldest dropped when full) */
#define FAKE_CODE_LIFETIME_S 600 /* an authorization code is valid for 10 minutes */
#define FAKE_URI_MAX 1024        /* redirect_uri length */
#define FAKE_RTOK_LEN 43         /* refresh token / code: 32 random bytes, base64url */

/* The first member of every entry of the code and refresh-token tables. */
struct slot {
    bool live;
    uint64_t seq; /* insertion order: the oldest is dropped when the table is full */
};

struct code_ent {
    struct slot h;
    char code[FAKE_RTOK_LEN + 1];
    char client_id[FAKE_ID_MAX + 1];
    char redirect_uri[FAKE_URI_MAX + 1];
    char challenge[FAKE_RTOK_LEN + 1]; /* "" = no PKCE */
    int inst;
    unsigned scopes;
    int64_t expires; /* fake_now() seconds */
};

struct rtok_ent {
    struct slot h;
    char token[FAKE_RTOK_LEN + 1];
    char client_id[FAKE_ID_MAX + 1];
    int inst;
    unsigned scopes;
};

static struct code_ent g_codes[FAKE_MAX_CODES];   /* g_lock */
static struct rtok_ent g_rtoks[FAKE_MAX_REFRESH]; /* g_lock */
static uint64_t g_slot_seq;                       /* g_lock */
static atomic_bool g_authorize_deny;              /* /__fake/authorize {"deny":true} */
static atomic_ullong g_code_grants;               /* authorization_code grants answered 200 */
static atomic_ullong g_refresh_grants;            /* refresh_token grant requests evaluated */
static atomic_ullong g_refresh_grants_ok;         /* refresh_token grants answered 200 */

static void
random_b64url(char out[FAKE_RTOK_LEN + 1])
{
    unsigned char raw[32];
    char enc[48];

    if (RAND_bytes(raw, sizeof raw) != 1) {
        fputs("fake-ninjaone: RAND_bytes failed\n", stderr);
        abort();
    }
    b64_encode(raw, sizeof raw, true, enc);
    memcpy(out, enc, FAKE_RTOK_LEN);
    out[FAKE_RTOK_LEN] = '\0';
}

/* base64url(SHA-256(verifier)) == challenge (RFC 7636 S256). */
static bool
pkce_ok(const char *verifier, const char *challenge)
{
    unsigned char md[32];
    unsigned mdlen = 0;
    char enc[FAKE_RTOK_LEN + 8];
    size_t n = verifier != NULL ? strlen(verifier) : 0;

    if (n < 43 || n > 128)
        return false;
    if (EVP_Digest(verifier, n, md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen != 32)
        return false;
    b64_encode(md, 32, true, enc);
    enc[FAKE_RTOK_LEN] = '\0';
    return strlen(challenge) == FAKE_RTOK_LEN && CRYPTO_memcmp(enc, challenge, FAKE_RTOK_LEN) == 0;
}

/*
 * A free entry of a table whose entries start with struct slot, else the oldest (g_lock held);
 * marks it live with the next sequence number.
 */
static size_t
slot_take_locked(void *table, size_t n, size_t size)
{
    size_t pick = 0;
    uint64_t oldest = UINT64_MAX;
    struct slot *sl;

    for (size_t i = 0; i < n; i++) {
        sl = (struct slot *)(void *)((char *)table + i * size);
        if (!sl->live) {
            pick = i;
            break;
        }
        if (sl->seq < oldest) {
            oldest = sl->seq;
            pick = i;
        }
    }
    sl = (struct slot *)(void *)((char *)table + pick * size);
    memset(sl, 0, size);
    sl->live = true;
    sl->seq = ++g_slot_seq;
    return pick;
}

/* Records a new refresh token (g_lock held). */
static void
rtok_add_locked(const char *client_id, int inst, unsigned scopes, char out[FAKE_RTOK_LEN + 1])
{
    size_t slot = slot_take_locked(g_rtoks, FAKE_MAX_REFRESH, sizeof g_rtoks[0]);

    random_b64url(out);
    memcpy(g_rtoks[slot].token, out, FAKE_RTOK_LEN + 1);
    snprintf(g_rtoks[slot].client_id, sizeof g_rtoks[slot].client_id, "%s", client_id);
    g_rtoks[slot].inst = inst;
    g_rtoks[slot].scopes = scopes;
}

/* Appends k=v (form-encoded) to a query string being built. */
static void
sb_query(struct sbuf *b, const char *k, const char *v)
{
    static const char hex[] = "0123456789ABCDEF";

    sb_putc(b, b->len > 0 && memchr(b->p, '?', b->len) != NULL ? '&' : '?');
    sb_puts(b, k);
    sb_putc(b, '=');
    for (const unsigned char *s = (const unsigned char *)v; *s != '\0'; s++) {
        if ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
            *s == '-' || *s == '.' || *s == '_' || *s == '~') {
            sb_putc(b, (char)*s);
        } else {
            sb_putc(b, '%');
            sb_putc(b, hex[*s >> 4]);
            sb_putc(b, hex[*s & 15]);
        }
    }
}

/* 302 to uri?k1=v1[&k2=v2][&state=...]. */
static enum MHD_Result
authorize_redirect(struct MHD_Connection *c, const char *uri, const char *k1, const char *v1,
                   const char *k2, const char *v2, const char *state)
{
    struct sbuf b;
    struct hdr h[2] = {{"Location", NULL}, {"Cache-Control", "no-store"}};
    enum MHD_Result ret;

    sb_init(&b, FAKE_URI_MAX * 4);
    sb_puts(&b, uri);
    sb_query(&b, k1, v1);
    if (k2 != NULL)
        sb_query(&b, k2, v2);
    if (state != NULL)
        sb_query(&b, "state", state);
    sb_putc(&b, '\0');
    h[0].value = b.p;
    ret = respond_buf(c, 302, NULL, 0, NULL, h, 2);
    sb_free(&b);
    return ret;
}

/* 302 to redirect_uri with the given error (and state when known). */
static enum MHD_Result
authorize_redirect_error(struct MHD_Connection *c, const char *redirect_uri, const char *error,
                         const char *desc, const char *state)
{
    return authorize_redirect(c, redirect_uri, "error", error, "error_description", desc, state);
}

/*
 * GET /ws/oauth/authorize: the user approves at once (or denies, /__fake/authorize {"deny":true}).
 * An unknown client or an unusable redirect_uri never redirects (like NinjaOne, which sends the
 * browser to its own error page): 302 to /ws/oauth/error?error=...
 */
static enum MHD_Result
authorize_finish(struct MHD_Connection *c, const char *method)
{
    const char *cid = qarg(c, "client_id"), *ruri = qarg(c, "redirect_uri");
    const char *rtype = qarg(c, "response_type"), *scope = qarg(c, "scope");
    const char *state = qarg(c, "state"), *chal = qarg(c, "code_challenge");
    const char *cm = qarg(c, "code_challenge_method");
    int inst = request_instance(c);
    struct client cl;
    unsigned scopes = 0;
    struct code_ent e;

    if (inst < 0)
        return respond_misdirected(c);
    if (strcmp(method, "GET") != 0)
        return respond_failure(c, 405, NULL);
    if (cid == NULL || !client_find(cid, &cl) || cl.inst != inst || ruri == NULL ||
        strlen(ruri) > FAKE_URI_MAX ||
        (strncmp(ruri, "https://", 8) != 0 && strncmp(ruri, "http://127.", 11) != 0 &&
         strncmp(ruri, "http://localhost", 16) != 0) ||
        strchr(ruri, '#') != NULL) {
        struct hdr eh[1] = {{"Location",
                             "/ws/oauth/error?error=unauthorized_client&error_description="
                             "Invalid+client+or+redirect_uri"}};

        return respond_buf(c, 302, NULL, 0, NULL, eh, 1);
    }
    if (rtype == NULL || strcmp(rtype, "code") != 0)
        return authorize_redirect_error(c, ruri, "unsupported_response_type",
                                        "Only response_type=code is supported", state);
    if (chal != NULL && (cm == NULL || strcmp(cm, "S256") != 0 || strlen(chal) != FAKE_RTOK_LEN))
        return authorize_redirect_error(c, ruri, "invalid_request",
                                        "code_challenge_method must be S256", state);
    for (const char *s = scope != NULL ? scope : ""; *s != '\0';) {
        size_t n = strcspn(s, " ");

        if (n > 0) {
            int k = scope_index(s, n);

            /* offline_access is granted to every interactive client */
            if (k < 0 ||
                (strcmp(k_scopes[k], "offline_access") != 0 && (cl.scopes & (1u << k)) == 0))
                return authorize_redirect_error(c, ruri, "invalid_scope",
                                                "A requested scope is not allowed for this client",
                                                state);
            scopes |= 1u << k;
        }
        s += n;
        while (*s == ' ')
            s++;
    }
    if (atomic_load(&g_authorize_deny))
        return authorize_redirect_error(c, ruri, "access_denied", "The user denied access", state);
    if (scopes == 0)
        scopes = cl.scopes;
    memset(&e, 0, sizeof e);
    random_b64url(e.code);
    snprintf(e.client_id, sizeof e.client_id, "%s", cid);
    snprintf(e.redirect_uri, sizeof e.redirect_uri, "%s", ruri);
    snprintf(e.challenge, sizeof e.challenge, "%s", chal != NULL ? chal : "");
    e.inst = inst;
    e.scopes = scopes;
    e.expires = fake_now() + FAKE_CODE_LIFETIME_S;
    pthread_mutex_lock(&g_lock);
    {
        size_t slot = slot_take_locked(g_codes, FAKE_MAX_CODES, sizeof g_codes[0]);

        e.h = g_codes[slot].h;
        g_codes[slot] = e;
    }
    pthread_mutex_unlock(&g_lock);
    return authorize_redirect(c, ruri, "code", e.code, NULL, NULL, state);
}

/*
 * The authorization_code and refresh_token grants, run after faults were applied (a faulted
 * request consumes nothing). On success fills o->scopes/scope_str and *rt (a new refresh token,
 * "" when offline_access was not granted); else tok_fail.
 */
static void
grant_run(struct tok_outcome *o, char rt[FAKE_RTOK_LEN + 1])
{
    rt[0] = '\0';
    if (o->grant == GR_CODE) {
        struct code_ent *e = NULL;

        pthread_mutex_lock(&g_lock);
        for (size_t i = 0; i < FAKE_MAX_CODES; i++)
            if (g_codes[i].h.live && strcmp(g_codes[i].code, o->code) == 0) {
                e = &g_codes[i];
                break;
            }
        if (e == NULL || e->expires < fake_now() || strcmp(e->client_id, o->client_id) != 0 ||
            e->inst != o->inst) {
            tok_fail(o, 400, "invalid_grant", "Invalid authorization code");
        } else if (strcmp(e->redirect_uri, o->redirect_uri) != 0) {
            tok_fail(o, 400, "invalid_grant", "redirect_uri does not match");
        } else if (e->challenge[0] != '\0' && !pkce_ok(o->verifier, e->challenge)) {
            tok_fail(o, 400, "invalid_grant", "PKCE verification failed");
        } else {
            o->scopes = e->scopes;
            if ((e->scopes & (1u << 3)) != 0)
                rtok_add_locked(o->client_id, o->inst, e->scopes, rt);
        }
        if (e != NULL)
            e->h.live = false; /* single use, whatever the outcome */
        pthread_mutex_unlock(&g_lock);
        if (o->error == NULL)
            atomic_fetch_add(&g_code_grants, 1);
    } else {
        struct rtok_ent *e = NULL;

        atomic_fetch_add(&g_refresh_grants, 1);
        pthread_mutex_lock(&g_lock);
        for (size_t i = 0; i < FAKE_MAX_REFRESH; i++)
            if (g_rtoks[i].h.live && strcmp(g_rtoks[i].token, o->code) == 0) {
                e = &g_rtoks[i];
                break;
            }
        if (e == NULL || strcmp(e->client_id, o->client_id) != 0 || e->inst != o->inst) {
            tok_fail(o, 400, "invalid_grant", "Invalid refresh token");
        } else {
            unsigned sc = e->scopes;

            e->h.live = false; /* rotation: each refresh token is used once */
            o->scopes = sc;
            rtok_add_locked(o->client_id, o->inst, sc, rt);
        }
        pthread_mutex_unlock(&g_lock);
        if (o->error == NULL)
            atomic_fetch_add(&g_refresh_grants_ok, 1);
    }
    if (o->error == NULL)
        scopes_join(o->scopes, o->scope_str, sizeof o->scope_str);
}

/* POST /__fake/revoke-refresh {"client_id":"..."}: every refresh token of the client dies. */
static enum MHD_Result
ctl_revoke_refresh(struct MHD_Connection *c, struct req *r)
{
    json_t *o = json_loadb(r->body ? r->body : "", r->body_len, 0, NULL);
    const char *cid = json_string_value(json_object_get(o, "client_id"));
    long n = 0;

    pthread_mutex_lock(&g_lock);
    for (size_t i = 0; i < FAKE_MAX_REFRESH; i++)
        if (g_rtoks[i].h.live && (cid == NULL || strcmp(g_rtoks[i].client_id, cid) == 0)) {
            g_rtoks[i].h.live = false;
            n++;
        }
    pthread_mutex_unlock(&g_lock);
    json_decref(o);
    return respond_jansson(c, 200, json_pack("{s:b,s:i}", "ok", 1, "revoked", (int)n));
}

/* POST /__fake/authorize {"deny":bool}: the user's answer on the authorize page. */
static enum MHD_Result
ctl_authorize(struct MHD_Connection *c, struct req *r, bool post)
{
    if (post) {
        json_t *o = json_loadb(r->body ? r->body : "", r->body_len, 0, NULL);
        json_t *d = json_object_get(o, "deny");

        if (!json_is_boolean(d)) {
            json_decref(o);
            return respond_json(c, 400, "{\"error\":\"deny must be a boolean\"}", NULL, 0);
        }
        atomic_store(&g_authorize_deny, json_is_true(d));
        json_decref(o);
    }
    return respond_jansson(c, 200, json_pack("{s:b}", "deny", atomic_load(&g_authorize_deny)));
}

static json_t *
jstr(const char *s)
{
    json_t *v;

    if (s == NULL)
        return json_null();
    v = json_string(s);
    return v != NULL ? v : json_string("<invalid utf-8>");
}

/* Splits "Basic <b64(urlenc(id):urlenc(secret))>".  Returns false when malformed. */
static bool
basic_parse(const char *hdr, char **id, char **secret)
{
    unsigned char dec[FAKE_BASIC_MAX + 1];
    size_t n = 0;
    const char *p = hdr + 5;
    const char *colon;

    *id = NULL;
    *secret = NULL;
    while (*p == ' ')
        p++;
    if (!b64_decode(p, strlen(p), false, dec, FAKE_BASIC_MAX, &n))
        return false;
    if (memchr(dec, '\0', n) != NULL)
        return false;
    dec[n] = '\0';
    colon = strchr((const char *)dec, ':');
    if (colon == NULL)
        return false;
    *id = form_decode((const char *)dec, (size_t)(colon - (const char *)dec));
    *secret = form_decode(colon + 1, n - (size_t)(colon - (const char *)dec) - 1);
    if (*id == NULL || *secret == NULL) {
        free(*id);
        free(*secret);
        *id = NULL;
        *secret = NULL;
        return false;
    }
    return true;
}

static bool
ctype_is_form(const char *ct)
{
    static const char want[] = "application/x-www-form-urlencoded";
    size_t n = sizeof want - 1;

    if (ct == NULL || strncasecmp(ct, want, n) != 0)
        return false;
    return ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ';
}

/*
 * Decides the outcome of a token request (without issuing anything) and records its shape for
 * GET /__fake/last-token-request.
 */
static void
token_evaluate(struct MHD_Connection *c, struct req *r, const char *method, int inst,
               struct tok_outcome *o)
{
    json_t *rec = json_object(), *jform = NULL, *keys = NULL;
    struct form f = {.n = 0};
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
    const char *authz = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    const char *ferr, *grant, *scope, *bid;
    char *basic_id = NULL, *basic_secret = NULL;
    const char *cid = NULL, *csecret = NULL;
    static const char *const single[] = {"grant_type", "client_id", "client_secret", "scope"};
    struct client cl;
    bool found = false, secret_ok = false, inst_ok = false;
    size_t i;
    int cnt;

    memset(o, 0, sizeof *o);
    o->status = 200;
    o->inst = inst;
    json_object_set_new(rec, "method", jstr(method));
    json_object_set_new(rec, "path", jstr(r->raw_uri));
    {
        const char *hh = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Host");

        json_object_set_new(rec, "host_header", jstr(hh));
        json_object_set_new(rec, "host", hh ? json_stringn(hh, strcspn(hh, ":")) : json_null());
    }
    json_object_set_new(rec, "content_type", jstr(ct));
    json_object_set_new(rec, "accept",
                        jstr(MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Accept")));
    json_object_set_new(rec, "user_agent",
                        jstr(MHD_lookup_connection_value(c, MHD_HEADER_KIND, "User-Agent")));
    json_object_set_new(rec, "body_len", json_integer((json_int_t)r->body_total));
    o->basic = authz != NULL && strncasecmp(authz, "Basic ", 6) == 0;
    json_object_set_new(rec, "basic", json_boolean(o->basic));
    json_object_set_new(rec, "basic_auth", json_boolean(o->basic));
    if (authz != NULL) {
        json_t *scheme = json_stringn(authz, strcspn(authz, " "));

        json_object_set_new(rec, "authorization_scheme", scheme ? scheme : json_string("?"));
    } else {
        json_object_set_new(rec, "authorization_scheme", json_null());
    }

    if (strcmp(method, "POST") != 0) {
        tok_fail(o, 405, "invalid_request", "HTTP method not allowed; use POST");
        goto done;
    }
    if (r->too_large) {
        tok_fail(o, 413, "invalid_request", "Request body too large");
        goto done;
    }
    if (!ctype_is_form(ct)) {
        tok_fail(o, 400, "invalid_request",
                 "Content-Type must be application/x-www-form-urlencoded");
        goto done;
    }
    ferr = form_parse(r->body ? r->body : "", r->body_len, &f);
    if (ferr != NULL) {
        json_object_set_new(rec, "form_error", json_string(ferr));
        tok_fail(o, 400, "invalid_request", ferr);
        goto done;
    }
    jform = json_object();
    keys = json_array();
    for (i = 0; i < f.n; i++) {
        bool secret = strcmp(f.f[i].key, "client_secret") == 0 ||
                      strcmp(f.f[i].key, "refresh_token") == 0 ||
                      strcmp(f.f[i].key, "code_verifier") == 0;

        json_array_append_new(keys, jstr(f.f[i].key));
        json_object_set_new(jform, f.f[i].key,
                            secret ? json_string("<redacted>") : jstr(f.f[i].val));
    }
    json_object_set_new(rec, "form", jform);
    json_object_set_new(rec, "form_keys", keys);
    for (i = 0; i < sizeof single / sizeof single[0]; i++) {
        form_get(&f, single[i], &cnt);
        if (cnt > 1) {
            char d[96];

            snprintf(d, sizeof d, "Duplicate parameter: %s", single[i]);
            tok_fail(o, 400, "invalid_request", d);
            goto done;
        }
    }

    if (o->basic) {
        bid = form_get(&f, "client_id", NULL);
        if (!basic_parse(authz, &basic_id, &basic_secret)) {
            tok_fail(o, 401, "invalid_client", "Malformed HTTP Basic credentials");
            goto done;
        }
        json_object_set_new(rec, "basic_client_id", jstr(basic_id));
        if (form_get(&f, "client_secret", NULL) != NULL) {
            tok_fail(o, 400, "invalid_request",
                     "Multiple client authentication methods (Basic and client_secret)");
            goto done;
        }
        if (bid != NULL && strcmp(bid, basic_id) != 0) {
            tok_fail(o, 400, "invalid_request", "client_id does not match Basic credentials");
            goto done;
        }
        cid = basic_id;
        csecret = basic_secret;
    } else {
        cid = form_get(&f, "client_id", NULL);
        csecret = form_get(&f, "client_secret", NULL);
    }
    if (cid != NULL)
        found = client_find(cid, &cl);
    if (found && csecret != NULL) {
        size_t a = strlen(csecret), b = strlen(cl.secret);

        secret_ok = a == b && CRYPTO_memcmp(csecret, cl.secret, a) == 0;
    }
    inst_ok = found && cl.inst == inst;
    json_object_set_new(rec, "client_known", json_boolean(found));
    json_object_set_new(rec, "secret_ok", json_boolean(secret_ok));
    json_object_set_new(rec, "instance_ok", json_boolean(inst_ok));
    if (!found || !secret_ok || !inst_ok) {
        tok_fail(o, 401, "invalid_client", "Invalid client credentials");
        goto done;
    }

    grant = form_get(&f, "grant_type", NULL);
    if (grant == NULL || grant[0] == '\0') {
        tok_fail(o, 400, "invalid_request", "Missing grant_type parameter");
        goto done;
    }
    json_object_set_new(rec, "grant_type", jstr(grant));
    if (strcmp(grant, "authorization_code") == 0 || strcmp(grant, "refresh_token") == 0) {
        bool code = grant[0] == 'a';
        const char *v = form_get(&f, code ? "code" : "refresh_token", &cnt);
        const char *ru = form_get(&f, "redirect_uri", NULL);
        const char *ver = form_get(&f, "code_verifier", NULL);

        o->grant = code ? GR_CODE : GR_REFRESH;
        snprintf(o->client_id, sizeof o->client_id, "%s", cid);
        if (v == NULL || v[0] == '\0' || cnt > 1 || (code && ru == NULL)) {
            tok_fail(o, 400, "invalid_request",
                     code ? "Missing code or redirect_uri" : "Missing refresh_token");
            goto done;
        }
        if (strlen(v) >= sizeof o->code || (ru != NULL && strlen(ru) >= sizeof o->redirect_uri) ||
            (ver != NULL && strlen(ver) >= sizeof o->verifier)) {
            tok_fail(o, 400, "invalid_grant",
                     code ? "Invalid authorization code" : "Invalid refresh token");
            goto done;
        }
        snprintf(o->code, sizeof o->code, "%s", v);
        snprintf(o->redirect_uri, sizeof o->redirect_uri, "%s", ru != NULL ? ru : "");
        snprintf(o->verifier, sizeof o->verifier, "%s", ver != NULL ? ver : "");
        goto done;
    }
    if (strcmp(grant, "client_credentials") != 0) {
        tok_fail(o, 400, "unsupported_grant_type", "Unsupported grant type");
        goto done;
    }

    scope = form_get(&f, "scope", NULL);
    o->scopes = 0;
    if (scope != NULL) {
        const char *s = scope;
        size_t so = 0;

        while (*s != '\0') {
            size_t n = strcspn(s, " ");

            if (n > 0) {
                int k = scope_index(s, n);
                char d[160];

                if (k < 0 || (cl.scopes & (1u << k)) == 0) {
                    snprintf(d, sizeof d, "Scope '%.*s' is not allowed for this client",
                             (int)(n > 64 ? 64 : n), s);
                    tok_fail(o, 400, "invalid_scope", d);
                    goto done;
                }
                if ((o->scopes & (1u << k)) == 0) {
                    int w = snprintf(o->scope_str + so, sizeof o->scope_str - so, "%s%s",
                                     so ? " " : "", k_scopes[k]);

                    if (w > 0 && (size_t)w < sizeof o->scope_str - so)
                        so += (size_t)w;
                    o->scopes |= 1u << k;
                }
            }
            s += n;
            while (*s == ' ')
                s++;
        }
    }
    if (o->scopes == 0) {
        o->scopes = cl.scopes;
        scopes_join(cl.scopes, o->scope_str, sizeof o->scope_str);
    }

done:
    json_object_set_new(rec, "outcome_status", json_integer(o->status));
    json_object_set_new(rec, "outcome_error", jstr(o->error));
    json_object_set_new(rec, "fault", json_string(k_fault_modes[r->fault.mode]));
    {
        char *s = json_dumps(rec, JSON_COMPACT);

        pthread_mutex_lock(&g_lock);
        free(g_last_token_req);
        g_last_token_req = s;
        pthread_mutex_unlock(&g_lock);
    }
    json_decref(rec);
    form_free(&f);
    free(basic_id);
    free(basic_secret);
}

static enum MHD_Result
token_finish(struct MHD_Connection *c, struct req *r, const char *method)
{
    struct tok_outcome o;
    struct hdr h[2] = {{"Cache-Control", "no-store"}, {"Pragma", "no-cache"}};
    enum MHD_Result ret;
    char tok[TOK_LEN + 1];
    char rt[FAKE_RTOK_LEN + 1] = "";
    bool granted = false;
    int64_t exp;
    int life;
    struct sbuf b;
    int inst = request_instance(c);

    if (inst < 0)
        return respond_misdirected(c);
    token_evaluate(c, r, method, inst, &o);
    if (o.error == NULL && o.grant != GR_CC && r->fault.after_grant) {
        /* the grant is consumed, then the answer is delayed or lost */
        grant_run(&o, rt);
        granted = true;
    }
    if (fault_apply(c, r, FT_TOKEN, &ret))
        return ret;
    if (o.error != NULL) {
        if (o.status == 405) {
            struct hdr a[1] = {{"Allow", "POST"}};
            struct sbuf eb;

            sb_init(&eb, 1024);
            sb_printf(&eb, "{\"error\":\"%s\",\"error_description\":", o.error);
            sb_json_str(&eb, o.desc);
            sb_putc(&eb, '}');
            return respond_sb(c, 405, &eb, "application/json", a, 1);
        }
        return respond_oauth_error(c, o.status, o.error, o.desc, o.basic);
    }
    if (o.grant != GR_CC && !granted) {
        grant_run(&o, rt);
        if (o.error != NULL)
            return respond_oauth_error(c, o.status, o.error, o.desc, o.basic);
    }
    life = atomic_load(&g_lifetime);
    exp = fake_now() + life;
    token_issue(inst, o.scopes, exp, tok);
    atomic_fetch_add(&g_token_ok, 1);
    sb_init(&b, 4096);
    sb_printf(&b, "{\"access_token\":\"%s\",\"token_type\":\"Bearer\",\"expires_in\":%d,\"scope\":",
              tok, life);
    sb_json_str(&b, o.scope_str);
    if (rt[0] != '\0')
        sb_printf(&b, ",\"refresh_token\":\"%s\"", rt);
    sb_putc(&b, '}');
    return respond_sb(c, 200, &b, "application/json", h, 2);
}

static enum MHD_Result
wellknown(struct MHD_Connection *c)
{
    const char *host = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
    const char *scheme = g_tls ? "https" : "http";
    struct sbuf b;
    char base[256];

    if (request_instance(c) < 0)
        return respond_misdirected(c);
    if (host == NULL)
        host = k_hosts[request_instance(c)];
    snprintf(base, sizeof base, "%s://%.200s", scheme, host);
    sb_init(&b, 8192);
    sb_printf(&b,
              "{\"issuer\":\"%s/\",\"authorization_endpoint\":\"%s/ws/oauth/authorize\","
              "\"token_endpoint\":\"%s/ws/oauth/token\","
              "\"revocation_endpoint\":\"%s/ws/oauth/revoke\","
              "\"response_types_supported\":[\"code\"],"
              "\"grant_types_supported\":[\"authorization_code\",\"client_credentials\","
              "\"refresh_token\"],"
              "\"token_endpoint_auth_methods_supported\":[\"client_secret_basic\","
              "\"client_secret_post\"],"
              "\"code_challenge_methods_supported\":[\"S256\"],"
              "\"scopes_supported\":[\"monitoring\"]}",
              base, base, base, base);
    return respond_sb(c, 200, &b, "application/json", NULL, 0);
}

/* ------------------------------------------------------------------------------------------ */
/* seed data */

struct org_def {
    int id;
    const char *name;
    const char *desc;
    const char *approval;
    const char *domain;
};

static const struct org_def k_orgs[] = {
    {1, "Acme Corp", "", "AUTOMATIC", "acme.local"},
    {7, "Globex", "MSP client", "MANUAL", "globex.local"},
    {12, "Initech \"\xc3\x96sterreich\" GmbH", "Line 1\nLine 2 \\ backslash", "AUTOMATIC",
     "initech.local"},
};
#define N_ORGS ((int)(sizeof k_orgs / sizeof k_orgs[0]))
#define N_LOCATIONS (N_ORGS * 2)

static const char *const k_node_class[] = {
    "WINDOWS_WORKSTATION", "WINDOWS_WORKSTATION", "WINDOWS_SERVER",  "MAC",
    "LINUX_SERVER",        "WINDOWS_WORKSTATION", "VMWARE_VM_GUEST", "LINUX_WORKSTATION",
    "HYPERV_VMM_HOST",
};
static const char *const k_node_prefix[] = {"WS", "WS", "SRV", "MAC", "LNX",
                                            "WS", "VM", "LWS", "HV"};
#define N_CLASSES ((int)(sizeof k_node_class / sizeof k_node_class[0]))

static int
dev_id(int i)
{
    return 17 + 3 * i;
}

static int
dev_index(long long id)
{
    if (id < 17 || (id - 17) % 3 != 0 || (id - 17) / 3 >= N_DEVICES)
        return -1;
    return (int)((id - 17) / 3);
}

static int
dev_org(int i)
{
    static const unsigned char m[5] = {0, 0, 0, 1, 2};

    return m[i % 5];
}

static int
loc_id(int org, int k)
{
    return k_orgs[org].id * 100 + k + 1;
}

static int
dev_loc(int i)
{
    return loc_id(dev_org(i), (i / 5) % 2);
}

static int
dev_policy(int i)
{
    const char *cls = k_node_class[i % N_CLASSES];

    if (strncmp(cls, "WINDOWS_WORKSTATION", 19) == 0)
        return i % 10 == 0 ? 15 : 12;
    if (strcmp(cls, "MAC") == 0)
        return 14;
    return 13;
}

static int
org_index(long long id)
{
    int k;

    for (k = 0; k < N_ORGS; k++) {
        if (k_orgs[k].id == id)
            return k;
    }
    return -1;
}

static void
write_location(struct sbuf *b, int org, int k)
{
    sb_printf(b,
              "{\"id\":%d,\"name\":\"%s\",\"address\":\"%d Main Street\",\"description\":\"\","
              "\"userData\":{},\"tags\":[],\"organizationId\":%d}",
              loc_id(org, k), k == 0 ? "HQ" : "Branch Office", 100 + k, k_orgs[org].id);
}

static void
write_org(struct sbuf *b, int k, bool detailed)
{
    const struct org_def *o = &k_orgs[k];

    sb_printf(b, "{\"id\":%d,\"name\":", o->id);
    sb_json_str(b, o->name);
    sb_puts(b, ",\"description\":");
    sb_json_str(b, o->desc);
    sb_printf(b, ",\"nodeApprovalMode\":\"%s\",\"userData\":{},\"tags\":[]", o->approval);
    if (detailed) {
        static const char *const products[] = {"trayicon", "splashtop", "teamviewer", "backup",
                                               "psa"};
        size_t p;

        sb_puts(b, ",\"locations\":[");
        write_location(b, k, 0);
        sb_putc(b, ',');
        write_location(b, k, 1);
        sb_puts(b, "],\"policies\":[{\"nodeRoleId\":1,\"policyId\":12},"
                   "{\"nodeRoleId\":2,\"policyId\":13}],\"settings\":{");
        for (p = 0; p < sizeof products / sizeof products[0]; p++) {
            sb_printf(b,
                      "%s\"%s\":{\"product\":\"%s\",\"enabled\":%s,\"targets\":[],"
                      "\"options\":{}}",
                      p ? "," : "", products[p], products[p], p == 0 ? "true" : "false");
        }
        sb_putc(b, '}');
    }
    sb_putc(b, '}');
}

static void
dev_display_name(int i, char *out, size_t outlen)
{
    const char *ren;

    pthread_mutex_lock(&g_lock);
    ren = g_dev_rename[i];
    if (ren != NULL)
        snprintf(out, outlen, "%s", ren);
    pthread_mutex_unlock(&g_lock);
    if (ren == NULL)
        snprintf(out, outlen, "%s-%d", k_node_prefix[i % N_CLASSES], dev_id(i));
}

static void
write_device(struct sbuf *b, int i, bool detailed)
{
    static const enum ts_style styles[3] = {TS_FRAC, TS_INT, TS_EXP};
    const struct org_def *o = &k_orgs[dev_org(i)];
    const char *prefix = k_node_prefix[i % N_CLASSES];
    int id = dev_id(i);
    char uid[64], name[FAKE_NAME_MAX + 8], lower[8];
    size_t k;
    int64_t created = 1697635063 + (int64_t)i * 3607;
    int64_t contact = 1716223344 + (int64_t)i * 13;

    fmt_uuid(uid, sizeof uid, 1, (uint64_t)id);
    dev_display_name(i, name, sizeof name);
    sb_printf(b,
              "{\"id\":%d,\"uid\":\"%s\",\"parentDeviceId\":null,\"organizationId\":%d,"
              "\"locationId\":%d,\"nodeClass\":\"%s\",\"nodeRoleId\":%d,\"rolePolicyId\":%d,"
              "\"policyId\":%s,\"approvalStatus\":\"%s\",\"offline\":%s,\"displayName\":",
              id, uid, o->id, dev_loc(i), k_node_class[i % N_CLASSES], i % N_CLASSES + 1,
              dev_policy(i), i % 10 == 3 ? "15" : "null", i % 50 == 49 ? "PENDING" : "APPROVED",
              i % 4 == 0 ? "true" : "false");
    sb_json_str(b, name);
    for (k = 0; k < sizeof lower - 1 && prefix[k] != '\0'; k++)
        lower[k] = (char)(prefix[k] >= 'A' && prefix[k] <= 'Z' ? prefix[k] + 32 : prefix[k]);
    lower[k] = '\0';
    sb_printf(b, ",\"systemName\":\"%s-%d\",\"dnsName\":\"%s-%d.%s\",\"netbiosName\":\"%s-%d\"",
              prefix, id, lower, id, o->domain, prefix, id);
    sb_puts(b, ",\"created\":");
    sb_epoch(b, created, (unsigned)(i * 151), styles[i % 3]);
    sb_puts(b, ",\"lastContact\":");
    sb_epoch(b, contact, (unsigned)(i * 37), styles[(i + 1) % 3]);
    sb_puts(b, ",\"lastUpdate\":");
    sb_epoch(b, contact + 6, (unsigned)(i * 71), styles[(i + 2) % 3]);
    sb_puts(b, ",\"userData\":{},\"tags\":[]");
    if (i % 97 == 5) {
        sb_puts(b, ",\"maintenance\":{\"status\":\"IN_MAINTENANCE\",\"start\":");
        sb_epoch(b, contact - 600, 0, TS_FRAC);
        sb_puts(b, ",\"end\":");
        sb_epoch(b, contact + 3000, 500, TS_EXP);
        sb_putc(b, '}');
    }
    if (detailed) {
        uint64_t h = mix64((uint64_t)id);

        sb_printf(b,
                  ",\"ipAddresses\":[\"10.%d.%d.%d\"],\"macAddresses\":[\"00:16:3e:%02x:%02x:"
                  "%02x\"],\"publicIP\":\"203.0.113.%d\",\"notes\":[],\"deviceType\":\"AGENT\"",
                  dev_org(i) + 1, (id >> 8) & 0xff, id & 0xff, (unsigned)(h & 0xff),
                  (unsigned)((h >> 8) & 0xff), (unsigned)((h >> 16) & 0xff), id % 250 + 1);
        sb_printf(b,
                  ",\"os\":{\"manufacturer\":\"%s\",\"name\":\"%s\",\"architecture\":\"64-bit\","
                  "\"buildNumber\":\"%d\",\"releaseId\":\"23H2\",\"servicePackMajorVersion\":0,"
                  "\"language\":\"en-US\",\"needsReboot\":%s}",
                  prefix[0] == 'M' ? "Apple Inc." : "Microsoft Corporation",
                  prefix[0] == 'M' ? "macOS 14.5" : "Windows 11 Pro", 22631 + i % 3,
                  i % 7 == 0 ? "true" : "false");
        sb_printf(b,
                  ",\"system\":{\"name\":\"%s-%d\",\"manufacturer\":\"Dell Inc.\","
                  "\"model\":\"OptiPlex 7090\",\"biosSerialNumber\":\"SN%08" PRIX64 "\","
                  "\"serialNumber\":\"SN%08" PRIX64 "\",\"domain\":\"%s\",\"domainRole\":"
                  "\"MEMBER_WORKSTATION\",\"numberOfProcessors\":1,\"totalPhysicalMemory\":"
                  "17179869184,\"virtualMachine\":%s,\"chassisType\":\"DESKTOP\"}",
                  prefix, id, h >> 32, h >> 32, o->domain, i % N_CLASSES == 6 ? "true" : "false");
        sb_puts(b, ",\"lastLoggedInUser\":\"CORP\\\\jdoe\"");
    }
    sb_putc(b, '}');
}

static const char *const k_alert_sources[] = {
    "CONDITION_AGENT_CPU", "CONDITION_AGENT_MEMORY",
    "AGENT_OFFLINE",       "CONDITION_AGENT_DISK_FREE_SPACE",
    "CONDITION",
};

static void
write_alert(struct sbuf *b, int k)
{
    static const char *const prio[] = {"HIGH", "MEDIUM", "LOW", "NONE"};
    static const char *const sev[] = {"MAJOR", "MODERATE", "MINOR", "CRITICAL"};
    const char *src = k_alert_sources[k % 5];
    char uid[64], cfg[64];
    int dev = dev_id((k * 97) % N_DEVICES);
    int64_t t = 1716220000 + (int64_t)k * 900;

    fmt_uuid(uid, sizeof uid, 2, (uint64_t)k);
    fmt_uuid(cfg, sizeof cfg, 3, (uint64_t)(k % 5));
    sb_printf(b, "{\"uid\":\"%s\",\"deviceId\":%d,\"message\":\"%s on device %d\",\"createTime\":",
              uid, dev, src, dev);
    sb_epoch(b, t, 500, k % 2 ? TS_EXP : TS_FRAC);
    sb_puts(b, ",\"updateTime\":");
    sb_epoch(b, t + 100, 0, k % 3 ? TS_FRAC : TS_EXP);
    sb_printf(b,
              ",\"sourceType\":\"%s\",\"sourceConfigUid\":\"%s\",\"sourceName\":\"%s\","
              "\"subject\":\"Alert %d\",\"userId\":null,\"psaTicketId\":null,"
              "\"ticketTemplateId\":null,\"data\":{\"message\":{\"code\":\"alert_%d\","
              "\"params\":{}}},\"priority\":\"%s\",\"severity\":\"%s\",\"conditionName\":\"%s\","
              "\"conditionHealthStatus\":\"UNHEALTHY\",\"useGlobalHealthStatus\":true}",
              src, cfg, src, k, k, prio[k % 4], sev[k % 4], src);
}

static long long
act_id(int k)
{
    return ACT_ID_BASE + 3LL * k;
}

static void
write_activity(struct sbuf *b, int k)
{
    static const char *const types[] = {"MONITOR", "SYSTEM", "ACTIONSET", "CONDITION"};
    static const char *const codes[] = {"SYSTEM_REBOOTED", "NODE_AUTHENTICATED", "AGENT_INSTALLED",
                                        "CUSTOM_SNMP_TRAP_RECEIVED", "UNDOCUMENTED_STATUS_CODE"};
    int64_t t = 1747946704 - (int64_t)(N_ACTIVITIES - 1 - k) * 61;

    sb_printf(b, "{\"id\":%lld,\"activityTime\":", act_id(k));
    sb_epoch(b, t, k % 4 == 0 ? (unsigned)(k * 13) : 0, k % 4 == 0 ? TS_EXP : TS_INT);
    sb_printf(b,
              ",\"deviceId\":%d,\"severity\":\"NONE\",\"priority\":\"NONE\","
              "\"activityType\":\"%s\",\"statusCode\":\"%s\",\"status\":\"%s\","
              "\"activityResult\":\"%s\",\"message\":\"Activity %d\",\"type\":\"%s\","
              "\"data\":{\"message\":{\"code\":\"act_%d\",\"params\":{}}}}",
              dev_id((k * 7) % N_DEVICES), types[k % 4], codes[k % 5], codes[k % 5],
              k % 9 == 0 ? "FAILURE" : "SUCCESS", k, types[k % 4], k % 5);
}

/* ------------------------------------------------------------------------------------------ */
/* API routes */

enum api_route {
    AR_NONE,
    AR_ORGS,
    AR_ORGS_DET,
    AR_ORG,
    AR_ORG_DEVICES,
    AR_ORG_LOCATIONS,
    AR_LOCATIONS,
    AR_DEVICES,
    AR_DEVICES_DET,
    AR_DEVICE,
    AR_DEVICE_SCRIPT_RUN,
    AR_ALERTS,
    AR_ACTIVITIES,
    AR_POLICIES,
    AR_DEVICE_HEALTH,
    AR_ECHO,
    AR_BYTES,
};

/* "/v2/x" or "/api/v2/x" -> "x"; NULL otherwise. */
static const char *
api_sub(const char *url)
{
    if (strncmp(url, "/v2/", 4) == 0)
        return url + 4;
    if (strncmp(url, "/api/v2/", 8) == 0)
        return url + 8;
    return NULL;
}

static bool
seg_eq(const char *s, size_t n, const char *lit)
{
    return strlen(lit) == n && memcmp(s, lit, n) == 0;
}

static bool
seg_id(const char *s, size_t n, long long *id)
{
    char tmp[16];

    if (n == 0 || n >= sizeof tmp)
        return false;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    return tmp[0] != '-' && parse_ll(tmp, 0, INT32_MAX, id);
}

static enum api_route
api_route_parse(const char *sub, long long *id)
{
    const char *seg[5];
    size_t len[5], n = 0;
    const char *p = sub;

    if (strcmp(sub, "echo") == 0 || strncmp(sub, "echo/", 5) == 0)
        return AR_ECHO;
    while (n < 5) {
        size_t l = strcspn(p, "/");

        seg[n] = p;
        len[n] = l;
        n++;
        if (p[l] == '\0')
            break;
        p += l + 1;
    }
    if (n == 5)
        return AR_NONE;
    if (n == 1) {
        if (seg_eq(seg[0], len[0], "organizations"))
            return AR_ORGS;
        if (seg_eq(seg[0], len[0], "organizations-detailed"))
            return AR_ORGS_DET;
        if (seg_eq(seg[0], len[0], "locations"))
            return AR_LOCATIONS;
        if (seg_eq(seg[0], len[0], "devices"))
            return AR_DEVICES;
        if (seg_eq(seg[0], len[0], "devices-detailed"))
            return AR_DEVICES_DET;
        if (seg_eq(seg[0], len[0], "alerts"))
            return AR_ALERTS;
        if (seg_eq(seg[0], len[0], "activities"))
            return AR_ACTIVITIES;
        if (seg_eq(seg[0], len[0], "policies"))
            return AR_POLICIES;
        if (seg_eq(seg[0], len[0], "bytes"))
            return AR_BYTES;
        return AR_NONE;
    }
    if (n == 2 && seg_eq(seg[0], len[0], "queries") && seg_eq(seg[1], len[1], "device-health"))
        return AR_DEVICE_HEALTH;
    if (seg_eq(seg[0], len[0], "organization") && seg_id(seg[1], len[1], id)) {
        if (n == 2)
            return AR_ORG;
        if (n == 3 && seg_eq(seg[2], len[2], "devices"))
            return AR_ORG_DEVICES;
        if (n == 3 && seg_eq(seg[2], len[2], "locations"))
            return AR_ORG_LOCATIONS;
        return AR_NONE;
    }
    if (seg_eq(seg[0], len[0], "device") && seg_id(seg[1], len[1], id)) {
        if (n == 2)
            return AR_DEVICE;
        if (n == 4 && seg_eq(seg[2], len[2], "script") && seg_eq(seg[3], len[3], "run"))
            return AR_DEVICE_SCRIPT_RUN;
    }
    return AR_NONE;
}

/* pageSize/after for id-paged lists.  Returns false (and a 400 message) on junk. */
static bool
page_params(struct MHD_Connection *c, long long *size, long long *after, const char **err)
{
    const char *ps = qarg(c, "pageSize"), *af = qarg(c, "after");

    *size = FAKE_PAGE_DEFAULT;
    *after = 0;
    if (ps != NULL && !parse_ll(ps, 1, INT32_MAX, size)) {
        *err = "Invalid pageSize";
        return false;
    }
    if (*size > FAKE_PAGE_MAX)
        *size = FAKE_PAGE_MAX;
    if (af != NULL && !parse_ll(af, 0, INT64_MAX, after)) {
        *err = "Invalid after";
        return false;
    }
    return true;
}

/* df filter: "org = 8", "org=8", "org eq 8", "loc = 3".  Anything else is ignored. */
static void
df_parse(const char *df, long long *org, long long *loc)
{
    const char *p = df;
    long long *dst = NULL;
    char num[24];
    size_t n;

    *org = -1;
    *loc = -1;
    if (df == NULL)
        return;
    while (*p == ' ')
        p++;
    if (strncmp(p, "org", 3) == 0) {
        dst = org;
        p += 3;
    } else if (strncmp(p, "loc", 3) == 0) {
        dst = loc;
        p += 3;
    } else {
        return;
    }
    while (*p == ' ')
        p++;
    if (*p == '=')
        p++;
    else if (strncmp(p, "eq", 2) == 0)
        p += 2;
    else
        return;
    while (*p == ' ')
        p++;
    n = strspn(p, "0123456789");
    if (n == 0 || n >= sizeof num || p[n + strspn(p + n, " ")] != '\0')
        return;
    memcpy(num, p, n);
    num[n] = '\0';
    parse_ll(num, 0, INT64_MAX, dst);
}

static enum MHD_Result
api_devices(struct MHD_Connection *c, bool detailed, long long only_org)
{
    long long size, after, org = -1, loc = -1;
    const char *err = NULL;
    struct sbuf b;
    int i, n = 0;

    if (!page_params(c, &size, &after, &err))
        return respond_failure(c, 400, err);
    if (only_org < 0)
        df_parse(qarg(c, "df"), &org, &loc);
    else
        org = only_org;
    sb_init(&b, FAKE_RESP_MAX);
    sb_putc(&b, '[');
    for (i = 0; i < N_DEVICES && n < size; i++) {
        if (dev_id(i) <= after)
            continue;
        if (org >= 0 && k_orgs[dev_org(i)].id != org)
            continue;
        if (loc >= 0 && dev_loc(i) != loc)
            continue;
        if (n++ > 0)
            sb_putc(&b, ',');
        write_device(&b, i, detailed);
    }
    sb_putc(&b, ']');
    return respond_sb(c, 200, &b, "application/json", NULL, 0);
}

static enum MHD_Result
api_orgs(struct MHD_Connection *c, bool detailed)
{
    long long size, after;
    const char *err = NULL;
    struct sbuf b;
    int k, n = 0;

    if (!page_params(c, &size, &after, &err))
        return respond_failure(c, 400, err);
    sb_init(&b, FAKE_RESP_MAX);
    sb_putc(&b, '[');
    for (k = 0; k < N_ORGS && n < size; k++) {
        if (k_orgs[k].id <= after)
            continue;
        if (n++ > 0)
            sb_putc(&b, ',');
        write_org(&b, k, detailed);
    }
    sb_putc(&b, ']');
    return respond_sb(c, 200, &b, "application/json", NULL, 0);
}

static enum MHD_Result
api_locations(struct MHD_Connection *c, long long only_org)
{
    long long size = FAKE_PAGE_MAX, after = 0;
    const char *err = NULL;
    struct sbuf b;
    int j, n = 0;

    if (only_org < 0 && !page_params(c, &size, &after, &err))
        return respond_failure(c, 400, err);
    sb_init(&b, FAKE_RESP_MAX);
    sb_putc(&b, '[');
    for (j = 0; j < N_LOCATIONS && n < size; j++) {
        int org = j / 2;

        if (loc_id(org, j % 2) <= after)
            continue;
        if (only_org >= 0 && k_orgs[org].id != only_org)
            continue;
        if (n++ > 0)
            sb_putc(&b, ',');
        write_location(&b, org, j % 2);
    }
    sb_putc(&b, ']');
    return respond_sb(c, 200, &b, "application/json", NULL, 0);
}

static enum MHD_Result
api_alerts(struct MHD_Connection *c)
{
    const char *src = qarg(c, "sourceType");
    struct sbuf b;
    int k, n = 0;

    sb_init(&b, FAKE_RESP_MAX);
    sb_putc(&b, '[');
    for (k = 0; k < N_ALERTS; k++) {
        if (src != NULL && strcmp(src, k_alert_sources[k % 5]) != 0)
            continue;
        if (n++ > 0)
            sb_putc(&b, ',');
        write_alert(&b, k);
    }
    sb_putc(&b, ']');
    return respond_sb(c, 200, &b, "application/json", NULL, 0);
}

static enum MHD_Result
api_activities(struct MHD_Connection *c)
{
    const char *ps = qarg(c, "pageSize"), *ot = qarg(c, "olderThan"), *nt = qarg(c, "newerThan");
    long long size = FAKE_ACT_PAGE_DEFAULT, older = INT64_MAX, newer = -1;
    struct sbuf b;
    int k, lo, hi, n = 0;

    if (ps != NULL && !parse_ll(ps, FAKE_ACT_PAGE_MIN, FAKE_ACT_PAGE_MAX, &size))
        return respond_failure(c, 400, "pageSize must be between 10 and 1000");
    if (ot != NULL && !parse_ll(ot, 0, INT64_MAX, &older))
        return respond_failure(c, 400, "Invalid olderThan");
    if (nt != NULL && !parse_ll(nt, 0, INT64_MAX, &newer))
        return respond_failure(c, 400, "Invalid newerThan");
    /* The window [lo, hi] of activity indexes, output newest first. */
    hi = N_ACTIVITIES - 1;
    while (hi >= 0 && act_id(hi) >= older)
        hi--;
    lo = 0;
    while (lo < N_ACTIVITIES && act_id(lo) <= newer)
        lo++;
    if (nt != NULL && ot == NULL) {
        /* Incremental sync: the pageSize activities just after newerThan. */
        if (hi - lo + 1 > size)
            hi = lo + (int)size - 1;
    }
    sb_init(&b, FAKE_RESP_MAX);
    sb_printf(&b, "{\"lastActivityId\":%lld,\"activities\":[", act_id(N_ACTIVITIES - 1));
    for (k = hi; k >= lo && n < size; k--) {
        if (n++ > 0)
            sb_putc(&b, ',');
        write_activity(&b, k);
    }
    sb_puts(&b, "]}");
    return respond_sb(c, 200, &b, "application/json", NULL, 0);
}

static enum MHD_Result
api_policies(struct MHD_Connection *c)
{
    struct sbuf b;

    sb_init(&b, 8192);
    sb_puts(&b, "[{\"id\":12,\"parentPolicyId\":null,\"name\":\"Windows Workstations\","
                "\"description\":\"\",\"nodeClass\":\"WINDOWS_WORKSTATION\",\"updated\":"
                "1716000000.0,\"nodeClassDefault\":true},"
                "{\"id\":13,\"parentPolicyId\":null,\"name\":\"Servers\",\"description\":"
                "\"Default server policy\",\"nodeClass\":\"WINDOWS_SERVER\",\"updated\":"
                "1.7160012345E9,\"nodeClassDefault\":true},"
                "{\"id\":14,\"parentPolicyId\":null,\"name\":\"Macs\",\"description\":\"\","
                "\"nodeClass\":\"MAC\",\"updated\":1716002000,\"nodeClassDefault\":true},"
                "{\"id\":15,\"parentPolicyId\":12,\"name\":\"Windows Workstations - Strict\","
                "\"description\":\"Child policy\",\"nodeClass\":\"WINDOWS_WORKSTATION\","
                "\"updated\":1716003000.25,\"nodeClassDefault\":false}]");
    return respond_sb(c, 200, &b, "application/json", NULL, 0);
}

/* Cursor names are base64url("dh:<offset>:<pageSize>"). */
static enum MHD_Result
api_device_health(struct MHD_Connection *c)
{
    static const char *const status[] = {"HEALTHY", "HEALTHY", "NEEDS_ATTENTION", "UNHEALTHY"};
    const char *cur = qarg(c, "cursor"), *ps = qarg(c, "pageSize");
    long long off = 0, size = FAKE_REPORT_PAGE_DEFAULT;
    struct sbuf b;
    int i, n;

    if (ps != NULL && !parse_ll(ps, 1, INT32_MAX, &size))
        return respond_failure(c, 400, "Invalid pageSize");
    if (size > FAKE_REPORT_PAGE_MAX)
        size = FAKE_REPORT_PAGE_MAX;
    if (cur != NULL) {
        unsigned char dec[64];
        size_t dl = 0;
        char *c1, *c2;
        long long csize;

        if (strlen(cur) > 80 || !b64_decode(cur, strlen(cur), true, dec, sizeof dec - 1, &dl))
            return respond_failure(c, 400, "Invalid cursor");
        dec[dl] = '\0';
        c1 = strchr((char *)dec, ':');
        c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (strncmp((char *)dec, "dh:", 3) != 0 || c2 == NULL)
            return respond_failure(c, 400, "Invalid cursor");
        *c2 = '\0';
        if (!parse_ll(c1 + 1, 0, N_DEVICES, &off) ||
            !parse_ll(c2 + 1, 1, FAKE_REPORT_PAGE_MAX, &csize))
            return respond_failure(c, 400, "Invalid cursor");
        if (ps == NULL)
            size = csize;
    }
    n = (int)(N_DEVICES - off < size ? N_DEVICES - off : size);
    sb_init(&b, FAKE_RESP_MAX);
    if (off + n < N_DEVICES) {
        char plain[64], name[96];
        int pl = snprintf(plain, sizeof plain, "dh:%lld:%lld", off + n, size);

        b64_encode((const unsigned char *)plain, (size_t)pl, true, name);
        sb_printf(&b,
                  "{\"cursor\":{\"name\":\"%s\",\"offset\":%lld,\"count\":%d,\"expires\":", name,
                  off, n);
        sb_epoch(&b, fake_now() + 3600, 0, TS_FRAC);
        sb_puts(&b, "},\"results\":[");
    } else {
        sb_puts(&b, "{\"cursor\":null,\"results\":[");
    }
    for (i = (int)off; i < off + n; i++) {
        sb_printf(&b,
                  "%s{\"deviceId\":%d,\"parentDeviceId\":null,\"organizationId\":%d,"
                  "\"status\":\"%s\",\"activeThreatsCount\":%d,\"quarantinedThreatsCount\":0,"
                  "\"blockedThreatsCount\":0,\"failedOSPatchesCount\":%d,"
                  "\"pendingOSPatchesCount\":%d,\"failedSoftwarePatchesCount\":0,"
                  "\"pendingSoftwarePatchesCount\":%d,\"pendingRebootReason\":%s,"
                  "\"alertsCount\":%d,\"activeJobsCount\":0,\"offline\":%s,"
                  "\"productsInstallationStatuses\":{},\"timestamp\":",
                  i > off ? "," : "", dev_id(i), k_orgs[dev_org(i)].id, status[i % 4],
                  i % 4 == 3 ? 1 : 0, i % 11 == 0 ? 2 : 0, i % 3, i % 5,
                  i % 7 == 0 ? "\"OS_PATCH_INSTALLATION\"" : "null", i % 4 == 3 ? 1 : 0,
                  i % 4 == 0 ? "true" : "false");
        sb_epoch(&b, 1716223344 + (int64_t)i, (unsigned)i, i % 2 ? TS_EXP : TS_FRAC);
        sb_putc(&b, '}');
    }
    sb_puts(&b, "]}");
    return respond_sb(c, 200, &b, "application/json", NULL, 0);
}

static enum MHD_Result
api_device_get(struct MHD_Connection *c, int i)
{
    struct sbuf b;

    sb_init(&b, FAKE_RESP_MAX);
    write_device(&b, i, true);
    return respond_sb(c, 200, &b, "application/json", NULL, 0);
}

static enum MHD_Result
respond_error_message(struct MHD_Connection *c, unsigned status, const char *code)
{
    struct sbuf b;

    sb_init(&b, 1024);
    sb_puts(&b, "{\"errorMessage\":{\"code\":");
    sb_json_str(&b, code);
    sb_puts(&b, ",\"params\":{}}}");
    return respond_sb(c, status, &b, "application/json", NULL, 0);
}

static enum MHD_Result
api_device_patch(struct MHD_Connection *c, struct req *r, int i)
{
    json_error_t jerr;
    json_t *o = json_loadb(r->body ? r->body : "", r->body_len, 0, &jerr);
    const json_t *dn;
    enum MHD_Result ret;

    if (!json_is_object(o)) {
        json_decref(o);
        return respond_error_message(c, 400, "invalid_request_body");
    }
    dn = json_object_get(o, "displayName");
    if (dn != NULL) {
        const char *s = json_string_value(dn);

        if (s == NULL || s[0] == '\0' || strlen(s) > FAKE_NAME_MAX) {
            json_decref(o);
            return respond_error_message(c, 400, "invalid_display_name");
        }
        pthread_mutex_lock(&g_lock);
        free(g_dev_rename[i]);
        g_dev_rename[i] = xstrdup(s);
        pthread_mutex_unlock(&g_lock);
    }
    json_decref(o);
    ret = respond_buf(c, 204, NULL, 0, NULL, NULL, 0);
    return ret;
}

struct echo_iter {
    json_t *obj;
};

static enum MHD_Result
echo_hdr_iter(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    struct echo_iter *it = cls;
    char lk[256];
    size_t i;
    const json_t *old;

    (void)kind;
    for (i = 0; i < sizeof lk - 1 && key[i] != '\0'; i++)
        lk[i] = (char)((key[i] >= 'A' && key[i] <= 'Z') ? key[i] + 32 : key[i]);
    lk[i] = '\0';
    if (value == NULL)
        value = "";
    old = json_object_get(it->obj, lk);
    if (old != NULL && json_string_value(old) != NULL) {
        struct sbuf b;

        sb_init(&b, FAKE_CONN_MEMORY);
        sb_puts(&b, json_string_value(old));
        sb_puts(&b, ", ");
        sb_puts(&b, value);
        json_object_set_new(it->obj, lk, jstr(b.p != NULL ? b.p : ""));
        sb_free(&b);
    } else {
        json_object_set_new(it->obj, lk, jstr(value));
    }
    return MHD_YES;
}

static enum MHD_Result
echo_resp_hdr_iter(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    struct MHD_Response *resp = cls;
    const char *colon;
    char name[128];
    size_t n;

    (void)kind;
    if (strcmp(key, "h") != 0 || value == NULL)
        return MHD_YES;
    colon = strchr(value, ':');
    if (colon == NULL || colon == value || (size_t)(colon - value) >= sizeof name)
        return MHD_YES;
    n = (size_t)(colon - value);
    memcpy(name, value, n);
    name[n] = '\0';
    colon++;
    while (*colon == ' ')
        colon++;
    MHD_add_response_header(resp, name, colon);
    return MHD_YES;
}

static enum MHD_Result
api_echo(struct MHD_Connection *c, struct req *r, const char *method, unsigned scopes)
{
    const char *st = qarg(c, "status"), *raw = qarg(c, "raw");
    const char *q = strchr(r->raw_uri, '?');
    long long status = strcmp(method, "POST") == 0 ? 201 : 200;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    char hex[2 * EVP_MAX_MD_SIZE + 1], sc[FAKE_SCOPE_STR_MAX];
    struct MHD_Response *resp;
    struct echo_iter it;
    json_t *o, *h;
    char *out;
    size_t outlen;
    unsigned i;

    if (st != NULL && !parse_ll(st, 200, 599, &status))
        return respond_failure(c, 400, "status must be 200..599");
    if (EVP_DigestFinal_ex(r->sha, md, &mdlen) != 1)
        return respond_failure(c, 500, "sha256 failed");
    for (i = 0; i < mdlen; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    hex[2 * mdlen] = '\0';

    if (status == 204 || status == 304) {
        out = NULL;
        outlen = 0;
    } else if (raw != NULL && strcmp(raw, "1") == 0) {
        out = r->body;
        outlen = r->body_len;
        r->body = NULL;
        r->body_len = 0;
    } else {
        o = json_object();
        json_object_set_new(o, "method", jstr(method));
        json_object_set_new(
            o, "path", q ? json_stringn(r->raw_uri, (size_t)(q - r->raw_uri)) : jstr(r->raw_uri));
        if (json_object_get(o, "path") == NULL)
            json_object_set_new(o, "path", json_string("<invalid utf-8>"));
        json_object_set_new(o, "query", jstr(q ? q + 1 : ""));
        h = json_object();
        it.obj = h;
        MHD_get_connection_values(c, MHD_HEADER_KIND, echo_hdr_iter, &it);
        json_object_set_new(o, "headers", h);
        json_object_set_new(o, "body_len", json_integer((json_int_t)r->body_len));
        json_object_set_new(o, "body_sha256", json_string(hex));
        if (r->body_len <= FAKE_ECHO_B64_MAX) {
            char *b64 = xmalloc(4 * ((r->body_len + 2) / 3) + 1);

            b64_encode((const unsigned char *)(r->body ? r->body : ""), r->body_len, false, b64);
            json_object_set_new(o, "body_base64", json_string(b64));
            free(b64);
        } else {
            json_object_set_new(o, "body_base64", json_null());
        }
        scopes_join(scopes, sc, sizeof sc);
        json_object_set_new(o, "token_scope", json_string(sc));
        json_object_set_new(o, "instance", json_string(k_hosts[request_instance(c)]));
        out = json_dumps(o, JSON_COMPACT);
        json_decref(o);
        if (out == NULL)
            return respond_failure(c, 500, "JSON encoding failed");
        outlen = strlen(out);
    }
    if (out == NULL || outlen == 0) {
        free(out);
        out = NULL;
        resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    } else {
        resp = MHD_create_response_from_buffer_with_free_callback(outlen, out, free);
    }
    if (resp == NULL) {
        free(out);
        return MHD_NO;
    }
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, echo_resp_hdr_iter, resp);
    if (raw != NULL && strcmp(raw, "1") == 0) {
        const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");

        return queue(c, (unsigned)status, resp, ct ? ct : "application/octet-stream", NULL, 0);
    }
    return queue(c, (unsigned)status, resp, outlen ? "application/json" : NULL, NULL, 0);
}

static enum MHD_Result
api_bytes(struct MHD_Connection *c)
{
    const char *ns = qarg(c, "n"), *ch = qarg(c, "chunked"), *fa = qarg(c, "fail_at");
    long long n, fail_at = -1;

    if (ns == NULL || !parse_ll(ns, 0, (long long)FAKE_BYTES_MAX, &n))
        return respond_failure(c, 400, "n must be 0..68719476736");
    if (fa != NULL && !parse_ll(fa, 0, (long long)FAKE_BYTES_MAX, &fail_at))
        return respond_failure(c, 400, "fail_at must be 0..68719476736");
    return respond_generated(c, (uint64_t)n, fail_at < 0 ? UINT64_MAX : (uint64_t)fail_at, false,
                             ch != NULL && strcmp(ch, "1") == 0, "application/octet-stream");
}

static enum MHD_Result
respond_insufficient(struct MHD_Connection *c)
{
    return respond_json(c, 401,
                        "{\"error\":\"insufficient_privileges\",\"error_description\":"
                        "\"Insufficient privileges\"}",
                        NULL, 0);
}

static enum MHD_Result
api_finish(struct MHD_Connection *c, struct req *r, const char *url, const char *method)
{
    const char *sub = api_sub(url);
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    const char *authz, *tok;
    enum api_route rt;
    unsigned need = SCOPE_MONITORING, scopes = 0;
    long long id = -1;
    enum MHD_Result ret;
    int inst, i;

    if (fault_apply(c, r, FT_API, &ret))
        return ret;
    if (r->too_large)
        return respond_failure(c, 413, NULL);
    rt = api_route_parse(sub, &id);
    if (rt == AR_NONE)
        return respond_failure(c, 404, NULL);
    switch (rt) {
    case AR_ECHO:
    case AR_BYTES:
        need = 0;
        break;
    case AR_DEVICE:
        if (strcmp(method, "PATCH") == 0)
            need = SCOPE_MANAGEMENT;
        else if (!get)
            return respond_failure(c, 405, NULL);
        break;
    case AR_DEVICE_SCRIPT_RUN:
        if (strcmp(method, "POST") != 0)
            return respond_failure(c, 405, NULL);
        need = SCOPE_MANAGEMENT;
        break;
    default:
        if (!get)
            return respond_failure(c, 405, NULL);
    }
    if (rt == AR_BYTES && !get)
        return respond_failure(c, 405, NULL);

    inst = request_instance(c);
    if (inst < 0)
        return respond_misdirected(c);
    authz = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (authz == NULL || strncasecmp(authz, "Bearer ", 7) != 0)
        goto unauth;
    tok = authz + 7;
    while (*tok == ' ')
        tok++;
    if (!token_check(tok, strlen(tok), inst, &scopes))
        goto unauth;
    if ((scopes & need) != need)
        return respond_insufficient(c);

    switch (rt) {
    case AR_ORGS:
        return api_orgs(c, false);
    case AR_ORGS_DET:
        return api_orgs(c, true);
    case AR_ORG:
        i = org_index(id);
        if (i < 0)
            return respond_failure(c, 404, "Organization not found");
        {
            struct sbuf b;

            sb_init(&b, FAKE_RESP_MAX);
            write_org(&b, i, true);
            return respond_sb(c, 200, &b, "application/json", NULL, 0);
        }
    case AR_ORG_DEVICES:
        if (org_index(id) < 0)
            return respond_failure(c, 404, "Organization not found");
        return api_devices(c, false, id);
    case AR_ORG_LOCATIONS:
        if (org_index(id) < 0)
            return respond_failure(c, 404, "Organization not found");
        return api_locations(c, id);
    case AR_LOCATIONS:
        return api_locations(c, -1);
    case AR_DEVICES:
        return api_devices(c, false, -1);
    case AR_DEVICES_DET:
        return api_devices(c, true, -1);
    case AR_DEVICE:
        i = dev_index(id);
        if (i < 0)
            return respond_failure(c, 404, "A device with the provided nodeId was not found");
        return get ? api_device_get(c, i) : api_device_patch(c, r, i);
    case AR_DEVICE_SCRIPT_RUN:
        if (dev_index(id) < 0)
            return respond_failure(c, 404, "A device with the provided nodeId was not found");
        return respond_json(c, 403,
                            "{\"error\":\"user_context_required\",\"error_description\":"
                            "\"Access key does not have user context which is required for "
                            "this request\",\"error_code\":5}",
                            NULL, 0);
    case AR_ALERTS:
        return api_alerts(c);
    case AR_ACTIVITIES:
        return api_activities(c);
    case AR_POLICIES:
        return api_policies(c);
    case AR_DEVICE_HEALTH:
        return api_device_health(c);
    case AR_ECHO:
        return api_echo(c, r, method, scopes);
    case AR_BYTES:
        return api_bytes(c);
    case AR_NONE:
        break;
    }
    return respond_failure(c, 404, NULL);

unauth:
    return respond_json(c, 401,
                        "{\"error\":\"not_authenticated\",\"error_description\":"
                        "\"Invalid credentials\",\"error_code\":10}",
                        NULL, 0);
}

/* ------------------------------------------------------------------------------------------ */
/* control endpoints: /__fake/... */

static enum MHD_Result
ctl_stats(struct MHD_Connection *c)
{
    struct sbuf b;

    sb_init(&b, 4096);
    sb_printf(&b,
              "{\"token_requests\":%llu,\"token_requests_ok\":%llu,\"api_requests\":%llu,"
              "\"connections\":%lld,\"data_connections\":%llu,\"active_connections\":%lld,"
              "\"tokens_issued\":%llu,\"control_requests\":%llu,\"other_requests\":%llu,"
              "\"code_grants\":%llu,\"refresh_grants\":%llu,\"refresh_grants_ok\":%llu}",
              atomic_load(&g_token_requests), atomic_load(&g_token_ok),
              atomic_load(&g_api_requests),
              atomic_load(&g_connections) > 0 ? (long long)atomic_load(&g_connections) : 0LL,
              atomic_load(&g_data_connections), atomic_load(&g_active_connections),
              atomic_load(&g_tokens_issued), atomic_load(&g_control_requests),
              atomic_load(&g_other_requests), atomic_load(&g_code_grants),
              atomic_load(&g_refresh_grants), atomic_load(&g_refresh_grants_ok));
    return respond_sb(c, 200, &b, "application/json", NULL, 0);
}

static json_t *
faults_json(void)
{
    json_t *o = json_object();
    int t;

    pthread_mutex_lock(&g_lock);
    for (t = 0; t < N_FAULT_TARGETS; t++) {
        const struct fault *f = &g_faults[t];

        json_object_set_new(
            o, k_fault_targets[t],
            json_pack("{s:s,s:I,s:i,s:s,s:I,s:I,s:I,s:o}", "mode", k_fault_modes[f->mode],
                      "delay_ms", (json_int_t)f->delay_ms, "status", (int)f->status, "retry_after",
                      f->retry_after, "count", (json_int_t)(f->remaining < 0 ? 0 : f->remaining),
                      "hits", (json_int_t)f->hits, "huge_bytes", (json_int_t)f->huge_bytes, "body",
                      f->body ? json_string(f->body) : json_null()));
    }
    pthread_mutex_unlock(&g_lock);
    return o;
}

static void
faults_clear_locked(void)
{
    int t;

    for (t = 0; t < N_FAULT_TARGETS; t++) {
        free(g_faults[t].body);
        memset(&g_faults[t], 0, sizeof g_faults[t]);
    }
}

static enum MHD_Result
ctl_fault(struct MHD_Connection *c, struct req *r)
{
    json_error_t jerr;
    json_t *o = json_loadb(r->body ? r->body : "", r->body_len, 0, &jerr);
    const char *target, *mode;
    const json_t *v;
    struct fault f;
    int t, m, t0, t1;
    char msg[160];

    memset(&f, 0, sizeof f);
    if (!json_is_object(o)) {
        snprintf(msg, sizeof msg, "body must be a JSON object");
        goto bad;
    }
    target = json_string_value(json_object_get(o, "target"));
    mode = json_string_value(json_object_get(o, "mode"));
    if (target == NULL)
        target = "all";
    if (strcmp(target, "all") == 0) {
        t0 = 0;
        t1 = N_FAULT_TARGETS - 1;
    } else if (strcmp(target, "token") == 0) {
        t0 = t1 = FT_TOKEN;
    } else if (strcmp(target, "api") == 0) {
        t0 = t1 = FT_API;
    } else {
        snprintf(msg, sizeof msg, "target must be token, api or all");
        goto bad;
    }
    for (m = 0; mode != NULL && m < N_FAULT_MODES; m++) {
        if (strcmp(mode, k_fault_modes[m]) == 0)
            break;
    }
    if (mode == NULL || m == N_FAULT_MODES) {
        snprintf(msg, sizeof msg,
                 "mode must be none|delay|status|malformed|huge|reset|stall|truncate|echo");
        goto bad;
    }
    f.mode = (enum fault_mode)m;
    f.status = 500;
    f.huge_bytes = FAKE_HUGE_DEFAULT;
    f.remaining = -1;
    v = json_object_get(o, "delay_ms");
    if (v != NULL) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) > FAKE_DELAY_MAX_MS) {
            snprintf(msg, sizeof msg, "delay_ms must be 0..%ld", FAKE_DELAY_MAX_MS);
            goto bad;
        }
        f.delay_ms = (long)json_integer_value(v);
    }
    v = json_object_get(o, "status");
    if (v != NULL) {
        if (!json_is_integer(v) || json_integer_value(v) < 200 || json_integer_value(v) > 599) {
            snprintf(msg, sizeof msg, "status must be 200..599");
            goto bad;
        }
        f.status = (unsigned)json_integer_value(v);
    }
    v = json_object_get(o, "retry_after");
    if (json_is_string(v)) {
        snprintf(f.retry_after, sizeof f.retry_after, "%s", json_string_value(v));
    } else if (json_is_integer(v)) {
        snprintf(f.retry_after, sizeof f.retry_after, "%" JSON_INTEGER_FORMAT,
                 json_integer_value(v));
    } else if (v != NULL && !json_is_null(v)) {
        snprintf(msg, sizeof msg, "retry_after must be a string or an integer");
        goto bad;
    }
    f.after_grant = json_is_true(json_object_get(o, "after_grant"));
    v = json_object_get(o, "count");
    if (v != NULL) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 ||
            json_integer_value(v) > 1000000000) {
            snprintf(msg, sizeof msg, "count must be a non-negative integer");
            goto bad;
        }
        f.remaining = json_integer_value(v) == 0 ? -1 : (long)json_integer_value(v);
    }
    v = json_object_get(o, "huge_bytes");
    if (v != NULL) {
        if (!json_is_integer(v) || json_integer_value(v) < 64 ||
            (uint64_t)json_integer_value(v) > FAKE_HUGE_MAX) {
            snprintf(msg, sizeof msg, "huge_bytes must be 64..%llu",
                     (unsigned long long)FAKE_HUGE_MAX);
            goto bad;
        }
        f.huge_bytes = (uint64_t)json_integer_value(v);
    }
    v = json_object_get(o, "body");
    if (v != NULL && !json_is_null(v) && !json_is_string(v)) {
        snprintf(msg, sizeof msg, "body must be a string");
        goto bad;
    }
    pthread_mutex_lock(&g_lock);
    for (t = t0; t <= t1; t++) {
        free(g_faults[t].body);
        g_faults[t] = f;
        g_faults[t].body = json_is_string(v) ? xstrdup(json_string_value(v)) : NULL;
        if (f.mode == FM_NONE)
            memset(&g_faults[t], 0, sizeof g_faults[t]);
    }
    pthread_mutex_unlock(&g_lock);
    json_decref(o);
    return respond_jansson(c, 200, json_pack("{s:b,s:o}", "ok", 1, "faults", faults_json()));

bad:
    json_decref(o);
    return respond_jansson(c, 400, json_pack("{s:s}", "error", msg));
}

static void
state_reset(void)
{
    int i;

    pthread_mutex_lock(&g_lock);
    faults_clear_locked();
    free(g_last_token_req);
    g_last_token_req = NULL;
    for (i = 0; i < N_DEVICES; i++) {
        free(g_dev_rename[i]);
        g_dev_rename[i] = NULL;
    }
    pthread_mutex_unlock(&g_lock);
    atomic_store(&g_token_requests, 0);
    atomic_store(&g_token_ok, 0);
    atomic_store(&g_api_requests, 0);
    atomic_store(&g_connections, 0);
    atomic_store(&g_data_connections, 0);
    atomic_store(&g_tokens_issued, 0);
    atomic_store(&g_control_requests, 0);
    atomic_store(&g_other_requests, 0);
    atomic_store(&g_code_grants, 0);
    atomic_store(&g_refresh_grants, 0);
    atomic_store(&g_refresh_grants_ok, 0);
    atomic_store(&g_authorize_deny, false);
    atomic_store(&g_min_seq, atomic_load(&g_next_seq));
    atomic_store(&g_clock_offset, 0);
    atomic_store(&g_lifetime, g_lifetime_default);
    atomic_fetch_add(&g_reset_gen, 1);
}

static enum MHD_Result
ctl_clients(struct MHD_Connection *c, struct req *r, bool post)
{
    json_error_t jerr;
    json_t *o, *arr;
    struct client cl;
    char err[160];
    size_t i;

    if (!post) {
        arr = json_array();
        pthread_mutex_lock(&g_lock);
        for (i = 0; i < g_nclients; i++) {
            char sc[FAKE_SCOPE_STR_MAX];

            scopes_join(g_clients[i].scopes, sc, sizeof sc);
            json_array_append_new(arr,
                                  json_pack("{s:s,s:s,s:s}", "client_id", g_clients[i].id,
                                            "instance", k_hosts[g_clients[i].inst], "scopes", sc));
        }
        pthread_mutex_unlock(&g_lock);
        return respond_jansson(c, 200, arr);
    }
    o = json_loadb(r->body ? r->body : "", r->body_len, 0, &jerr);
    if (!client_from_json(o, &cl, err, sizeof err) || !client_add(&cl, err, sizeof err)) {
        json_decref(o);
        return respond_jansson(c, 400, json_pack("{s:s}", "error", err));
    }
    json_decref(o);
    return respond_json(c, 201, "{\"ok\":true}", NULL, 0);
}

static enum MHD_Result
ctl_config(struct MHD_Connection *c, struct req *r, bool post)
{
    if (post) {
        json_error_t jerr;
        json_t *o = json_loadb(r->body ? r->body : "", r->body_len, 0, &jerr);
        const json_t *v;

        if (!json_is_object(o)) {
            json_decref(o);
            return respond_json(c, 400, "{\"error\":\"body must be a JSON object\"}", NULL, 0);
        }
        v = json_object_get(o, "token_lifetime");
        if (v != NULL && (!json_is_integer(v) || json_integer_value(v) < 1 ||
                          json_integer_value(v) > FAKE_LIFETIME_MAX)) {
            json_decref(o);
            return respond_json(c, 400, "{\"error\":\"token_lifetime must be 1..2592000\"}", NULL,
                                0);
        }
        if (v != NULL)
            atomic_store(&g_lifetime, (int)json_integer_value(v));
        v = json_object_get(o, "clock_offset");
        if (json_is_integer(v))
            atomic_store(&g_clock_offset, (long long)json_integer_value(v));
        v = json_object_get(o, "clock_advance");
        if (json_is_integer(v))
            atomic_fetch_add(&g_clock_offset, (long long)json_integer_value(v));
        json_decref(o);
    }
    return respond_jansson(c, 200,
                           json_pack("{s:i,s:I,s:I,s:b}", "token_lifetime",
                                     atomic_load(&g_lifetime), "clock_offset",
                                     (json_int_t)atomic_load(&g_clock_offset), "now",
                                     (json_int_t)fake_now(), "tls", g_tls));
}

static enum MHD_Result
control_finish(struct MHD_Connection *c, struct req *r, const char *url, const char *method)
{
    const char *name = url + strlen("/__fake/");
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    bool post = strcmp(method, "POST") == 0;

    if (r->too_large)
        return respond_json(c, 413, "{\"error\":\"body too large\"}", NULL, 0);
    if (strcmp(name, "stats") == 0 && get)
        return ctl_stats(c);
    if (strcmp(name, "health") == 0 && get)
        return respond_json(c, 200, "{\"ok\":true}", NULL, 0);
    if (strcmp(name, "reset") == 0 && post) {
        state_reset();
        return respond_json(c, 200, "{\"ok\":true}", NULL, 0);
    }
    if (strcmp(name, "fault") == 0 && post)
        return ctl_fault(c, r);
    if (strcmp(name, "fault") == 0 && get)
        return respond_jansson(c, 200, faults_json());
    if (strcmp(name, "expire-all") == 0 && post) {
        atomic_store(&g_min_seq, atomic_load(&g_next_seq));
        return respond_json(c, 200, "{\"ok\":true}", NULL, 0);
    }
    if (strcmp(name, "revoke-refresh") == 0 && post)
        return ctl_revoke_refresh(c, r);
    if (strcmp(name, "authorize") == 0 && (post || get))
        return ctl_authorize(c, r, post);
    if (strcmp(name, "clients") == 0 && (post || get))
        return ctl_clients(c, r, post);
    if (strcmp(name, "config") == 0 && (post || get))
        return ctl_config(c, r, post);
    if (strcmp(name, "last-token-request") == 0 && get) {
        char *s;

        pthread_mutex_lock(&g_lock);
        s = g_last_token_req ? xstrdup(g_last_token_req) : NULL;
        pthread_mutex_unlock(&g_lock);
        if (s == NULL)
            return respond_json(c, 200, "null", NULL, 0);
        return respond_buf(c, 200, s, strlen(s), "application/json", NULL, 0);
    }
    return respond_json(c, 404, "{\"error\":\"unknown control endpoint or method\"}", NULL, 0);
}

/* ------------------------------------------------------------------------------------------ */
/* MHD glue */

struct conn_ctx {
    bool seen; /* carried a request */
    bool data; /* carried a non-control request */
};

static void
conn_notify(void *cls, struct MHD_Connection *c, void **socket_context,
            enum MHD_ConnectionNotificationCode toe)
{
    (void)cls;
    (void)c;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        *socket_context = xcalloc(1, sizeof(struct conn_ctx));
        atomic_fetch_add(&g_connections, 1);
        atomic_fetch_add(&g_active_connections, 1);
    } else {
        free(*socket_context);
        *socket_context = NULL;
        atomic_fetch_sub(&g_active_connections, 1);
    }
}

static void *
uri_logger(void *cls, const char *uri, struct MHD_Connection *c)
{
    struct req *r = xcalloc(1, sizeof *r);

    (void)cls;
    (void)c;
    r->raw_uri = xstrdup(uri);
    r->gen = atomic_load(&g_reset_gen);
    return r;
}

static void
req_completed(void *cls, struct MHD_Connection *c, void **con_cls,
              enum MHD_RequestTerminationCode toe)
{
    struct req *r = *con_cls;

    (void)cls;
    (void)c;
    if (g_verbose && r != NULL)
        fprintf(stderr, "fake-ninjaone: %s %s -> %u%s\n", r->method, r->raw_uri, r->status,
                toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " (terminated)");
    req_free(r);
    *con_cls = NULL;
}

/* First call for a request: classify, count, pick a fault, reject oversized bodies early. */
static enum MHD_Result
req_begin(struct MHD_Connection *c, struct req *r, const char *url, const char *method)
{
    const union MHD_ConnectionInfo *ci;
    const char *cl;
    long long clen;

    snprintf(r->method, sizeof r->method, "%s", method);
    r->cap = FAKE_BODY_MAX;
    if (strcmp(url, "/ws/oauth/token") == 0) {
        r->kind = RK_TOKEN;
        atomic_fetch_add(&g_token_requests, 1);
        fault_pick(FT_TOKEN, &r->fault);
    } else if (api_sub(url) != NULL) {
        const char *sub = api_sub(url);

        r->kind = RK_API;
        atomic_fetch_add(&g_api_requests, 1);
        if (strcmp(sub, "echo") == 0 || strncmp(sub, "echo/", 5) == 0) {
            r->cap = FAKE_ECHO_BODY_MAX;
            r->sha = EVP_MD_CTX_new();
            if (r->sha == NULL || EVP_DigestInit_ex(r->sha, EVP_sha256(), NULL) != 1) {
                fputs("fake-ninjaone: sha256 init failed\n", stderr);
                abort();
            }
        }
        fault_pick(FT_API, &r->fault);
    } else if (strncmp(url, "/__fake/", 8) == 0) {
        r->kind = RK_CONTROL;
        atomic_fetch_add(&g_control_requests, 1);
    } else {
        r->kind = RK_OTHER;
        atomic_fetch_add(&g_other_requests, 1);
    }
    ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    if (ci != NULL && ci->socket_context != NULL) {
        struct conn_ctx *cc = ci->socket_context;

        /* The harness's own control connections do not count as connections. */
        if (!cc->seen && r->kind == RK_CONTROL)
            atomic_fetch_sub(&g_connections, 1);
        cc->seen = true;
        if (!cc->data && r->kind != RK_CONTROL) {
            cc->data = true;
            atomic_fetch_add(&g_data_connections, 1);
        }
    }
    cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl != NULL && parse_ll(cl, 0, INT64_MAX, &clen) && (uint64_t)clen > r->cap) {
        r->too_large = true;
        if (r->kind == RK_TOKEN)
            return respond_oauth_error(c, 413, "invalid_request", "Request body too large", false);
        return respond_failure(c, 413, NULL);
    }
    return MHD_YES;
}

static enum MHD_Result
req_finish(struct MHD_Connection *c, struct req *r, const char *url, const char *method)
{
    switch (r->kind) {
    case RK_TOKEN:
        return token_finish(c, r, method);
    case RK_API:
        return api_finish(c, r, url, method);
    case RK_CONTROL:
        return control_finish(c, r, url, method);
    case RK_OTHER:
        break;
    }
    if (strcmp(url, "/ws/oauth/authorize") == 0)
        return authorize_finish(c, method);
    if (strcmp(url, "/.well-known/oauth-authorization-server") == 0 &&
        (strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0))
        return wellknown(c);
    if (strcmp(url, "/oauth/token") == 0)
        return respond_failure(c, 405, NULL);
    return respond_failure(c, 404, NULL);
}

static enum MHD_Result
access_handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
               const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
    struct req *r = *con_cls;
    enum MHD_Result ret;

    (void)cls;
    (void)version;
    if (r == NULL) {
        r = xcalloc(1, sizeof *r);
        r->raw_uri = xstrdup(url);
        r->gen = atomic_load(&g_reset_gen);
        *con_cls = r;
    }
    t_cur = r;
    if (!r->started) {
        r->started = true;
        ret = req_begin(c, r, url, method);
        goto out;
    }
    if (r->responded) {
        *upload_size = 0;
        ret = MHD_YES;
        goto out;
    }
    if (*upload_size > 0) {
        req_body_add(r, upload, *upload_size);
        *upload_size = 0;
        ret = MHD_YES;
        goto out;
    }
    ret = req_finish(c, r, url, method);
out:
    t_cur = NULL;
    return ret;
}

__attribute__((format(printf, 2, 0))) static void
mhd_logger(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    fputs("fake-ninjaone: mhd: ", stderr);
    vfprintf(stderr, fmt, ap);
}

/* ------------------------------------------------------------------------------------------ */
/* startup */

static char *
read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    size_t n;

    if (f == NULL)
        return NULL;
    buf = xmalloc(FAKE_FILE_MAX + 1);
    n = fread(buf, 1, FAKE_FILE_MAX + 1, f);
    fclose(f);
    if (n > FAKE_FILE_MAX) {
        free(buf);
        errno = EFBIG;
        return NULL;
    }
    buf[n] = '\0';
    if (len != NULL)
        *len = n;
    return buf;
}

static bool
clients_load_file(const char *path, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr), *arr;
    const json_t *v;
    struct client cl;
    size_t i;
    bool ok = true;

    if (root == NULL) {
        snprintf(err, errlen, "%s:%d: %s", path, jerr.line, jerr.text);
        return false;
    }
    arr = json_is_array(root) ? root : json_object_get(root, "clients");
    if (!json_is_array(arr)) {
        snprintf(err, errlen, "%s: want an array of clients or {\"clients\":[...]}", path);
        ok = false;
        goto out;
    }
    json_array_foreach(arr, i, v)
    {
        if (!client_from_json(v, &cl, err, errlen) || !client_add(&cl, err, errlen)) {
            ok = false;
            goto out;
        }
    }
out:
    json_decref(root);
    return ok;
}

static void
usage(FILE *f)
{
    fputs("usage: fake-ninjaone [--port N] [--bind IPV4] [--cert FILE --key FILE | --http]\n"
          "                     [--token-lifetime SECONDS] [--clients FILE]\n"
          "                     [--client id:secret:instance[:scopes]]... [--default-instance "
          "HOST]\n"
          "                     [--verbose] [--exit-with-parent]\n"
          "Prints {\"port\":N} on stdout once listening (default 127.0.0.1).  See "
          "tests/fake_ninjaone/README.md.\n",
          f);
}

int
main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"port", required_argument, NULL, 'p'},
        {"cert", required_argument, NULL, 'c'},
        {"key", required_argument, NULL, 'k'},
        {"http", no_argument, NULL, 'H'},
        {"token-lifetime", required_argument, NULL, 'l'},
        {"clients", required_argument, NULL, 'C'},
        {"client", required_argument, NULL, 'a'},
        {"default-instance", required_argument, NULL, 'd'},
        {"verbose", no_argument, NULL, 'v'},
        {"exit-with-parent", no_argument, NULL, 'P'},
        {"bind", required_argument, NULL, 'b'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *cert_path = NULL, *key_path = NULL;
    char *cert = NULL, *key = NULL;
    struct MHD_OptionItem tls_opts[3];
    struct MHD_Daemon *d = NULL;
    const union MHD_DaemonInfo *di;
    struct sockaddr_in sa;
    struct client cl;
    struct rlimit rl;
    sigset_t set;
    long long v, port = 0;
    char err[256];
    int opt, sig, rc = 1, i;
    bool exit_with_parent = false;
    struct in_addr bind_addr = {.s_addr = htonl(INADDR_LOOPBACK)};
    unsigned flags;

    while ((opt = getopt_long(argc, argv, "p:c:k:Hl:C:a:d:vPb:h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'p':
            if (!parse_ll(optarg, 0, 65535, &port)) {
                fprintf(stderr, "fake-ninjaone: bad --port '%s'\n", optarg);
                return 2;
            }
            break;
        case 'c':
            cert_path = optarg;
            break;
        case 'k':
            key_path = optarg;
            break;
        case 'H':
            g_tls = false;
            break;
        case 'l':
            if (!parse_ll(optarg, 1, FAKE_LIFETIME_MAX, &v)) {
                fprintf(stderr, "fake-ninjaone: bad --token-lifetime '%s'\n", optarg);
                return 2;
            }
            g_lifetime_default = (int)v;
            atomic_store(&g_lifetime, (int)v);
            break;
        case 'C':
            if (!clients_load_file(optarg, err, sizeof err)) {
                fprintf(stderr, "fake-ninjaone: --clients: %s\n", err);
                return 2;
            }
            break;
        case 'a':
            if (!client_from_arg(optarg, &cl, err, sizeof err) ||
                !client_add(&cl, err, sizeof err)) {
                fprintf(stderr, "fake-ninjaone: --client: %s\n", err);
                return 2;
            }
            break;
        case 'd':
            g_default_inst = instance_parse(optarg, strlen(optarg));
            if (g_default_inst < 0) {
                fprintf(stderr, "fake-ninjaone: unknown --default-instance '%s'\n", optarg);
                return 2;
            }
            break;
        case 'v':
            g_verbose = true;
            break;
        case 'P':
            exit_with_parent = true;
            break;
        case 'b':
            if (inet_pton(AF_INET, optarg, &bind_addr) != 1) {
                fprintf(stderr, "fake-ninjaone: --bind wants an IPv4 address, not '%s'\n", optarg);
                return 2;
            }
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }
    if (g_tls && (cert_path == NULL || key_path == NULL)) {
        fputs("fake-ninjaone: --cert and --key are required (or --http)\n", stderr);
        return 2;
    }
    if (g_nclients == 0) {
        /* Same defaults as tests/integration/lib/fake.mjs. */
        static const char *const defaults[] = {
            "KTmhkNf1_dZZVPmIQTK_lH2DCNJ:q7Xv2Lw9Rk4Tn8Bz1Hc6Ym3Jd5Fs0Ga_Ue-Pi7Ko2Wr9Et4Qx1:eu:"
            "monitoring,management",
            "5I2PjdQI0qnFpp0sdgCnI00vOS9:xsJ_0VVVvIt6YvGP_an7viK83LTKeFngPT_tNCZBMhH5T7mloO:eu:"
            "monitoring",
            "kalVF2dla0MqlKoNu6etBBC1PKU:TV6_LGtyfJlMd9LX769CgarjgWqf0wJH9bZYnU7yFDMI0rT9zL:us2:"
            "monitoring,management",
        };

        for (i = 0; i < (int)(sizeof defaults / sizeof defaults[0]); i++) {
            if (!client_from_arg(defaults[i], &cl, err, sizeof err) ||
                !client_add(&cl, err, sizeof err)) {
                fprintf(stderr, "fake-ninjaone: default client: %s\n", err);
                return 1;
            }
        }
        fputs("fake-ninjaone: no clients given; registered the default test clients\n", stderr);
    }

    json_object_seed(0);
    gen_init();
    if (RAND_bytes(g_key, sizeof g_key) != 1) {
        fputs("fake-ninjaone: RAND_bytes failed\n", stderr);
        return 1;
    }
    memset(tls_opts, 0, sizeof tls_opts);
    tls_opts[0].option = MHD_OPTION_END;
    if (g_tls) {
        cert = read_file(cert_path, NULL);
        key = read_file(key_path, NULL);
        if (cert == NULL || key == NULL) {
            fprintf(stderr, "fake-ninjaone: cannot read %s: %s\n", cert ? key_path : cert_path,
                    strerror(errno));
            goto out;
        }
        tls_opts[0].option = MHD_OPTION_HTTPS_MEM_KEY;
        tls_opts[0].ptr_value = key;
        tls_opts[1].option = MHD_OPTION_HTTPS_MEM_CERT;
        tls_opts[1].ptr_value = cert;
        tls_opts[2].option = MHD_OPTION_END;
    }

    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    /* Optionally, do not outlive the test harness that started us. */
    if (exit_with_parent)
        prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr = bind_addr;
    flags = MHD_USE_POLL_INTERNAL_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ERROR_LOG;
    if (g_tls)
        flags |= MHD_USE_TLS;
    d = MHD_start_daemon(
        flags, (uint16_t)port, NULL, NULL, access_handler, NULL, MHD_OPTION_EXTERNAL_LOGGER,
        mhd_logger, NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa, MHD_OPTION_URI_LOG_CALLBACK,
        uri_logger, NULL, MHD_OPTION_NOTIFY_COMPLETED, req_completed, NULL,
        MHD_OPTION_NOTIFY_CONNECTION, conn_notify, NULL, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)FAKE_CONN_MEMORY, MHD_OPTION_CONNECTION_LIMIT, (unsigned int)FAKE_MAX_CONNECTIONS,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)FAKE_IDLE_TIMEOUT_S, MHD_OPTION_ARRAY,
        tls_opts, MHD_OPTION_END);
    if (d == NULL) {
        fputs("fake-ninjaone: MHD_start_daemon failed\n", stderr);
        goto out;
    }
    di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    if (di == NULL || di->port == 0) {
        fputs("fake-ninjaone: cannot determine the bound port\n", stderr);
        goto out;
    }
    printf("{\"port\":%u}\n", (unsigned)di->port);
    fflush(stdout);
    if (g_verbose) {
        char ab[INET_ADDRSTRLEN];

        inet_ntop(AF_INET, &bind_addr, ab, sizeof ab);
        fprintf(stderr, "fake-ninjaone: listening on %s:%u (%s)\n", ab, (unsigned)di->port,
                g_tls ? "https" : "http");
    }

    for (;;) {
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig == SIGINT || sig == SIGTERM || sig == SIGHUP)
            break;
    }
    rc = 0;
out:
    atomic_store(&g_stopping, true);
    if (d != NULL)
        MHD_stop_daemon(d);
    pthread_mutex_lock(&g_lock);
    faults_clear_locked();
    free(g_last_token_req);
    g_last_token_req = NULL;
    for (i = 0; i < N_DEVICES; i++) {
        free(g_dev_rename[i]);
        g_dev_rename[i] = NULL;
    }
    pthread_mutex_unlock(&g_lock);
    if (key != NULL)
        OPENSSL_cleanse(key, strlen(key));
    free(key);
    free(cert);
    return rc;
}
