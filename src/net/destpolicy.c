/*
 * destpolicy.c - where outbound transfers may connect and whom they trust: the LATCH_RESOLVE pins
 * (the only way to reach an internal address without LATCH_ALLOW_PRIVATE) and the CA bundle
 * (system bundle + LATCH_CA_FILE). netpolicy.c says which addresses are internal; this file
 * holds the configuration that makes exceptions and the trust anchors; outbound.c asks both.
 */
#include "net/destpolicy.h"

#include <sys/socket.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <curl/curl.h>

#include "core/log.h"
#include "net/netpolicy.h"
#include "util/buf.h"
#include "util/str.h"
#include "util/xalloc.h"

/*
 * LATCH_RESOLVE: text length, entries, addresses per entry. Large enough for a test that pins
 * every host of the whole catalogue at once; the pin array grows as entries come (1.3 KiB each).
 */
#define DESTPOLICY_MAX_RESOLVE_LEN (256 * 1024)
#define DESTPOLICY_MAX_PINS 4096
#define DESTPOLICY_MAX_PIN_ADDRS 8
/* LATCH_CA_FILE and the system bundle, each. */
#define DESTPOLICY_MAX_CA_BYTES (8 * 1024 * 1024)
#define DESTPOLICY_SYSTEM_CA "/etc/ssl/certs/ca-certificates.crt"
#define DESTPOLICY_HOST_MAX 256

struct pin {
    char host[DESTPOLICY_HOST_MAX];
    long port;
    size_t n_addrs;
    struct sockaddr_storage addrs[DESTPOLICY_MAX_PIN_ADDRS];
};

struct destpolicy {
    bool allow_private;
    struct pin *pins;
    size_t n_pins;
    struct curl_slist *resolve;
    char *ca_pem; /* system bundle + LATCH_CA_FILE, or NULL to use curl's default */
    size_t ca_len;
    char *ca_path; /* ca_pem written to a private temp file (curl caches the parsed store) */
};

bool
destpolicy_parse_addr(const char *s, struct sockaddr_storage *ss)
{
    char tmp[64];
    size_t n = strlen(s);

    memset(ss, 0, sizeof *ss);
    if (n >= 2 && s[0] == '[' && s[n - 1] == ']') {
        if (n - 2 >= sizeof tmp)
            return false;
        memcpy(tmp, s + 1, n - 2);
        tmp[n - 2] = '\0';
        s = tmp;
    }
    {
        struct sockaddr_in *in = (struct sockaddr_in *)(void *)ss;

        if (inet_pton(AF_INET, s, &in->sin_addr) == 1) {
            in->sin_family = AF_INET;
            return true;
        }
    }
    {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)(void *)ss;

        if (inet_pton(AF_INET6, s, &in6->sin6_addr) == 1) {
            in6->sin6_family = AF_INET6;
            return true;
        }
    }
    return false;
}

static bool
same_addr(const struct sockaddr_storage *pin, const struct sockaddr *sa)
{
    if (pin->ss_family != sa->sa_family)
        return false;
    if (sa->sa_family == AF_INET)
        return memcmp(&((const struct sockaddr_in *)(const void *)pin)->sin_addr,
                      &((const struct sockaddr_in *)(const void *)sa)->sin_addr,
                      sizeof(struct in_addr)) == 0;
    if (sa->sa_family == AF_INET6)
        return memcmp(&((const struct sockaddr_in6 *)(const void *)pin)->sin6_addr,
                      &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr,
                      sizeof(struct in6_addr)) == 0;
    return false;
}

static bool
resolve_host_ok(const char *h)
{
    size_t n = strlen(h);

    if (n == 0 || n >= DESTPOLICY_HOST_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)h[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.' || c == '_'))
            return false;
    }
    return true;
}

/*
 * Parses curl's "host:port:addr[,addr]..." entries separated by commas or spaces. A token that
 * is a bare address continues the previous entry. Fills p->pins and p->resolve.
 */
static latch_rc
parse_resolve(struct destpolicy *ob, const char *spec, struct latch_err *err)
{
    char *copy = NULL, *p;
    struct pin *cur = NULL;
    size_t cap = 0;
    latch_rc rc = LATCH_E_INVAL;

    if (strlen(spec) > DESTPOLICY_MAX_RESOLVE_LEN) {
        latch_err_set(err, "LATCH_RESOLVE is longer than %d bytes", DESTPOLICY_MAX_RESOLVE_LEN);
        goto out;
    }
    copy = xstrdup(spec);
    p = copy;
    for (;;) {
        char *tok, *c1, *c2;
        struct sockaddr_storage ss;
        const char *errstr = NULL;

        p += strspn(p, ", \t\r\n");
        if (*p == '\0')
            break;
        tok = p;
        p += strcspn(p, ", \t\r\n");
        if (*p != '\0')
            *p++ = '\0';

        if (destpolicy_parse_addr(tok, &ss)) {
            if (cur == NULL) {
                latch_err_set(err, "LATCH_RESOLVE: address without host:port entry");
                goto out;
            }
            if (cur->n_addrs >= DESTPOLICY_MAX_PIN_ADDRS) {
                latch_err_set(err, "LATCH_RESOLVE: too many addresses for one entry");
                goto out;
            }
            cur->addrs[cur->n_addrs++] = ss;
            continue;
        }
        c1 = strchr(tok, ':');
        c2 = c1 != NULL ? strchr(c1 + 1, ':') : NULL;
        if (c1 == NULL || c2 == NULL) {
            latch_err_set(err, "LATCH_RESOLVE: entry is not host:port:address");
            goto out;
        }
        *c1 = '\0';
        *c2 = '\0';
        if (!resolve_host_ok(tok)) {
            latch_err_set(err, "LATCH_RESOLVE: bad host in entry (+/- forms are not supported)");
            goto out;
        }
        if (ob->n_pins >= DESTPOLICY_MAX_PINS) {
            latch_err_set(err, "LATCH_RESOLVE: more than %d entries", DESTPOLICY_MAX_PINS);
            goto out;
        }
        if (ob->n_pins == cap) {
            cap = cap == 0 ? 16 : cap * 2;
            ob->pins = xrealloc(ob->pins, cap * sizeof *ob->pins);
        }
        cur = &ob->pins[ob->n_pins];
        memset(cur, 0, sizeof *cur);
        latch_strlcpy(cur->host, tok, sizeof cur->host);
        cur->port = (long)latch_strtonum(c1 + 1, 1, 65535, &errstr);
        if (errstr != NULL) {
            latch_err_set(err, "LATCH_RESOLVE: bad port for %s", cur->host);
            goto out;
        }
        if (!destpolicy_parse_addr(c2 + 1, &cur->addrs[0])) {
            latch_err_set(err, "LATCH_RESOLVE: bad address for %s", cur->host);
            goto out;
        }
        cur->n_addrs = 1;
        ob->n_pins++;
    }

    /* normalised entries for CURLOPT_RESOLVE */
    for (size_t i = 0; i < ob->n_pins; i++) {
        struct buf b;
        struct curl_slist *nl;
        char *s;

        buf_init(&b, 4096);
        (void)buf_printf(&b, "%s:%ld:", ob->pins[i].host, ob->pins[i].port);
        for (size_t k = 0; k < ob->pins[i].n_addrs; k++) {
            const struct sockaddr_storage *ss = &ob->pins[i].addrs[k];
            char a[INET6_ADDRSTRLEN];

            if (ss->ss_family == AF_INET) {
                inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)ss)->sin_addr, a,
                          sizeof a);
                (void)buf_printf(&b, "%s%s", k ? "," : "", a);
            } else {
                inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)ss)->sin6_addr, a,
                          sizeof a);
                (void)buf_printf(&b, "%s[%s]", k ? "," : "", a);
            }
        }
        s = buf_steal(&b, NULL);
        nl = curl_slist_append(ob->resolve, s);
        free(s);
        if (nl == NULL) {
            rc = LATCH_E_NOMEM;
            latch_err_set(err, "curl_slist_append failed");
            goto out;
        }
        ob->resolve = nl;
    }
    rc = LATCH_OK;
out:
    free(copy);
    return rc;
}

static latch_rc
read_file_capped(const char *path, struct buf *b, struct latch_err *err)
{
    int fd = -1;
    latch_rc rc = LATCH_E_IO;
    char chunk[16384];

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        latch_err_set(err, "cannot open %s: %s", path, strerror(errno));
        goto out;
    }
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof chunk);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            latch_err_set(err, "cannot read %s: %s", path, strerror(errno));
            goto out;
        }
        if (n == 0)
            break;
        if (buf_append(b, chunk, (size_t)n) != LATCH_OK) {
            rc = LATCH_E_TOO_LARGE;
            latch_err_set(err, "%s is larger than %d bytes", path, DESTPOLICY_MAX_CA_BYTES);
            goto out;
        }
    }
    rc = LATCH_OK;
out:
    if (fd >= 0)
        close(fd);
    return rc;
}

/*
 * CA trust = system bundle + LATCH_CA_FILE, concatenated in memory for CURLOPT_CAINFO_BLOB
 * (the blob replaces curl's default bundle, so the system bundle must be in it too).
 */
static latch_rc
load_ca(struct destpolicy *ob, const char *ca_file, struct latch_err *err)
{
    struct buf b;
    const char *sys = DESTPOLICY_SYSTEM_CA;
    const curl_version_info_data *vi = curl_version_info(CURLVERSION_NOW);
    struct latch_err e2;
    size_t sys_len;
    latch_rc rc;

    buf_init(&b, 2 * (size_t)DESTPOLICY_MAX_CA_BYTES + 2);
    if (vi != NULL && vi->age >= CURLVERSION_SEVENTH && vi->cainfo != NULL)
        sys = vi->cainfo;
    b.max = DESTPOLICY_MAX_CA_BYTES;
    if (read_file_capped(sys, &b, &e2) != LATCH_OK) {
        char q[300];

        log_warn("system CA bundle unreadable; trusting LATCH_CA_FILE only", "err=%s",
                 log_quote(q, sizeof q, e2.msg));
        buf_reset(&b);
    }
    sys_len = b.len;
    b.max = 2 * (size_t)DESTPOLICY_MAX_CA_BYTES + 2;
    (void)buf_puts(&b, "\n");
    {
        struct buf extra;

        buf_init(&extra, DESTPOLICY_MAX_CA_BYTES);
        rc = read_file_capped(ca_file, &extra, err);
        if (rc == LATCH_OK &&
            (extra.data == NULL || strstr(extra.data, "-----BEGIN CERTIFICATE-----") == NULL)) {
            latch_err_set(err, "LATCH_CA_FILE %s holds no PEM certificate", ca_file);
            rc = LATCH_E_INVAL;
        }
        if (rc == LATCH_OK)
            rc = buf_append(&b, extra.data, extra.len);
        buf_free(&extra);
    }
    if (rc != LATCH_OK) {
        buf_free(&b);
        return rc;
    }
    log_info("outbound CA bundle loaded", "system_bytes=%zu total_bytes=%zu", sys_len, b.len);
    ob->ca_pem = buf_steal(&b, &ob->ca_len);
    {
        /*
         * CURLOPT_CAINFO_BLOB is parsed again for every new connection (~15 ms for the system
         * bundle); a file path lets curl cache the parsed store on the multi handle
         * (CURLOPT_CA_CACHE_TIMEOUT), which matters when hundreds of connections open at once.
         */
        const char *tmp = getenv("TMPDIR");
        char *path = xasprintf("%s/latch-ca-XXXXXX", tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
        int fd = mkstemp(path);
        size_t off = 0;

        while (fd >= 0 && off < ob->ca_len) {
            ssize_t w = write(fd, ob->ca_pem + off, ob->ca_len - off);

            if (w <= 0)
                break;
            off += (size_t)w;
        }
        if (fd >= 0 && off == ob->ca_len && fsync(fd) == 0) {
            ob->ca_path = path;
        } else {
            log_warn("cannot write the CA bundle file; using the in-memory bundle", "%s", "");
            if (fd >= 0)
                (void)unlink(path);
            free(path);
        }
        if (fd >= 0)
            close(fd);
    }
    return LATCH_OK;
}

latch_rc
destpolicy_new(const struct destpolicy_opts *o, struct destpolicy **out, struct latch_err *err)
{
    struct destpolicy *p = xcalloc(1, sizeof *p);
    latch_rc rc = LATCH_OK;

    *out = NULL;
    p->allow_private = o->allow_private;
    if (o->resolve != NULL && o->resolve[0] != '\0')
        rc = parse_resolve(p, o->resolve, err);
    if (rc == LATCH_OK && o->ca_file != NULL && o->ca_file[0] != '\0')
        rc = load_ca(p, o->ca_file, err);
    if (rc != LATCH_OK) {
        destpolicy_free(p);
        return rc;
    }
    *out = p;
    return LATCH_OK;
}

void
destpolicy_free(struct destpolicy *p)
{
    if (p == NULL)
        return;
    curl_slist_free_all(p->resolve);
    free(p->pins);
    free(p->ca_pem);
    if (p->ca_path != NULL) {
        (void)unlink(p->ca_path);
        free(p->ca_path);
    }
    free(p);
}

bool
destpolicy_addr_open(const struct destpolicy *p, const struct sockaddr *sa, socklen_t len)
{
    return p->allow_private || !netpolicy_addr_is_internal(sa, len);
}

bool
destpolicy_has_pins(const struct destpolicy *p)
{
    return p->n_pins > 0;
}

bool
destpolicy_addr_pinned(const struct destpolicy *p, const char *host, const char *port,
                       const struct sockaddr *sa)
{
    for (size_t i = 0; i < p->n_pins; i++) {
        const struct pin *pn = &p->pins[i];
        char pbuf[16];

        (void)snprintf(pbuf, sizeof pbuf, "%ld", pn->port);
        if (strcasecmp(pn->host, host) != 0 || strcmp(pbuf, port) != 0)
            continue;
        for (size_t k = 0; k < pn->n_addrs; k++)
            if (same_addr(&pn->addrs[k], sa))
                return true;
    }
    return false;
}

struct curl_slist *
destpolicy_resolve(const struct destpolicy *p)
{
    return p->resolve;
}

const char *
destpolicy_ca_path(const struct destpolicy *p)
{
    return p->ca_path;
}

const char *
destpolicy_ca_pem(const struct destpolicy *p, size_t *len)
{
    if (len != NULL)
        *len = p->ca_len;
    return p->ca_pem;
}

size_t
destpolicy_n_pins(const struct destpolicy *p)
{
    return p->n_pins;
}

bool
destpolicy_allow_private(const struct destpolicy *p)
{
    return p->allow_private;
}
