/*
 * fuzz_http.c - latch's request handling end to end, in-process: a real app (app_start: SQLite
 * store in a temp dir, vault, outbound, refresher, webhook worker, libmicrohttpd) listening on
 * 127.0.0.1, fed one HTTP/1.1 request per input over TCP. This reaches what the unit-level
 * targets cannot: MHD's request parsing and percent-decoding, the query checks of api.c, the
 * params[...] callback of POST /oauth2/auth/:key, tags[...] filters, form and other non-JSON
 * bodies, request headers, and every route's JSON body handling.
 *
 * Input: byte 0 = route (routes[] below, index mod the table size), byte 1 = flags:
 *   bits 0-1 auth: secret key / connect-session token / unknown UUID v4 key / none
 *   bits 2-3 Content-Type: application/json / x-www-form-urlencoded / none / text/plain
 *   bit 4    raw: request-target and header bytes go out unencoded (only CR and LF are encoded),
 *            to exercise MHD; otherwise bytes that are not URL characters are percent-encoded
 *   bits 5-7 method: 0-4 the route's, 5 HEAD, 6 OPTIONS, 7 PUT
 * then: <suffix appended to the route path> ["\n" <header lines "Name: value">...] "\n\n"
 * <body>. "$S" anywhere is replaced with the valid connect-session token. Framing is the
 * harness's: it drops Content-Length, Connection and Host lines of the input and sends its own;
 * a "Transfer-Encoding: chunked" line makes it send the body in chunks (other Transfer-Encoding
 * lines are dropped); Expect passes (1xx interim answers are skipped).
 *
 * State: the fixtures (integration ninjaone-rmm, connection fuzz-conn, one connect session) are
 * checked in the store after every input and re-created through the API when an input deleted,
 * renamed or used them up, so each input sees the same starting point as far as they go.
 * Nothing leaves the machine: the NinjaOne hosts are pinned (LATCH_RESOLVE) to 127.0.0.1:443,
 * where nothing should listen (a refused connect: 502); webhook URLs in bodies are rewritten to
 * a pinned host the same way; LATCH_PROXY_BASE_URL_OVERRIDE stays off.
 *
 * Invariants: a response arrives within FH_TIMEOUT_MS and is well-formed HTTP (Content-Length
 * matches, chunked decodes); latch's own answers (X-Request-Id) are never 5xx except the
 * documented upstream failures (502/504 upstream_unreachable, upstream_timeout,
 * client_credentials_fetch_error; 503 busy); every latch 4xx/5xx is a JSON
 * {"error":{"code","message"}}, every JSON 2xx body parses; the secret key never appears in a
 * response (in any case, %-encoded or \u-escaped), unless the input itself carried it somewhere
 * else than the Authorization header. Answers from MHD itself (malformed requests) are 4xx, or
 * 501/505. A request whose bytes were sent cleanly (no raw mode) must get an answer, unless it
 * may exhaust MHD's per-connection memory pool (mhd_pool_tight).
 *
 * The app runs for the life of the process and is stopped by an atexit handler (LeakSanitizer
 * then sees no live threads), which also removes the temp dir. FH_LOG_LEVEL=debug|info|warn in
 * the environment shows latch's log (default error).
 */
#include <sys/socket.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "app.h"
#include "core/config.h"
#include "fuzz.h"
#include "net/http_server.h"
#include "core/latch_limits.h"
#include "core/log.h"
#include "store/store.h"
#include "util/buf.h"
#include "util/str.h"
#include "util/xalloc.h"
#include "crypto/vault.h"
#include "util/clock.h"

/* a hang is a bug: latch's own outbound timeouts are 1 s here, MHD's idle timeout 1 s */
#define FH_TIMEOUT_MS 5000
#define FH_MAX_INPUT (64 * 1024)
#define FH_MAX_REQUEST (256 * 1024)
#define FH_MAX_RESPONSE (32 * 1024 * 1024)
#define FH_MAX_HEADER_LINES 64
/* no byte of an answer for this long: a request MHD may drop (mhd_pool_tight) was dropped */
#define FH_QUIET_MS 100

/* the data dir: /tmp/FH_DIR_PREFIX<pid>.XXXXXX */
#define FH_DIR_PREFIX "latch-fuzz-http."

#define FIX_INTEGRATION "ninjaone-rmm"
#define FIX_CONNECTION "fuzz-conn"
#define WEBHOOK_SINK "https://webhook.invalid/hook"
/* every host latch may reach in this setup, pinned to a loopback port with no listener */
#define FH_RESOLVE                                                                                 \
    "app.ninjarmm.com:443:127.0.0.1,us2.ninjarmm.com:443:127.0.0.1,"                               \
    "eu.ninjarmm.com:443:127.0.0.1,ca.ninjarmm.com:443:127.0.0.1,"                                 \
    "oc.ninjarmm.com:443:127.0.0.1,webhook.invalid:443:127.0.0.1"

struct route {
    const char *method;
    const char *path; /* the input's suffix is appended; "" = the suffix is the whole path */
};

/* Append only: the seed corpus refers to routes by index. */
static const struct route routes[] = {
    {"GET", "/health"},
    {"GET", "/ui/"},
    {"GET", "/ui/app.js"},
    {"GET", "/providers"},
    {"GET", "/providers/ninjaone-rmm"},
    {"GET", "/integrations"},
    {"POST", "/integrations"},
    {"GET", "/integrations/" FIX_INTEGRATION},
    {"PATCH", "/integrations/" FIX_INTEGRATION},
    {"DELETE", "/integrations/" FIX_INTEGRATION},
    {"GET", "/connections"},
    {"POST", "/connections"},
    {"GET", "/connections/" FIX_CONNECTION},
    {"PATCH", "/connections/" FIX_CONNECTION},
    {"DELETE", "/connections/" FIX_CONNECTION},
    {"POST", "/connections/metadata"},
    {"PATCH", "/connections/metadata"},
    {"GET", "/connection"},
    {"POST", "/connection"},
    {"GET", "/connection/" FIX_CONNECTION},
    {"POST", "/connection/" FIX_CONNECTION "/metadata"},
    {"PATCH", "/connection/" FIX_CONNECTION "/metadata"},
    {"POST", "/connect/sessions"},
    {"POST", "/connect/sessions/reconnect"},
    {"GET", "/connect/session"},
    {"DELETE", "/connect/session"},
    {"POST", "/oauth2/auth/" FIX_INTEGRATION},
    {"GET", "/proxy/v2/organizations"},
    {"POST", "/proxy/v2/devices"},
    {"GET", ""},
    {"POST", ""},
    {"DELETE", "/connection/" FIX_CONNECTION},
};
#define N_ROUTES (sizeof routes / sizeof routes[0])

static struct {
    bool ready;
    char dir[64];
    struct config cfg;
    struct app app;
    int64_t env_id;
    uint16_t port;
    char key[37];     /* the secret key of the dev environment */
    char key_low[37]; /* the same in lower case, for has_key() */
    char session[96]; /* a valid connect-session token */
} h;

struct resp {
    char *raw; /* owned, NUL-terminated */
    size_t len;
    bool timed_out;
    bool gave_up; /* quiet_ms passed without a byte */
    bool complete;
    unsigned status;
    size_t off;     /* start of the final response (after 1xx interim responses) */
    size_t hdr_len; /* from off, bytes up to and including the blank line; 0 if none */
    char *body;     /* owned, de-chunked */
    size_t body_len;
};

static void
resp_free(struct resp *r)
{
    free(r->raw);
    free(r->body);
    memset(r, 0, sizeof *r);
}

static int64_t
mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- response parsing ---- */

/* Value of header name in the header block (first match, case-insensitive), copied to out. */
static bool
resp_header(const struct resp *r, const char *name, char *out, size_t outsz)
{
    size_t nl = strlen(name);
    const char *base = r->raw + r->off;
    const char *p = memchr(base, '\n', r->hdr_len);

    while (p != NULL && (size_t)(p - base) + 1 < r->hdr_len) {
        const char *line = p + 1;
        const char *end = memchr(line, '\n', r->hdr_len - (size_t)(line - base));

        if (end == NULL)
            break;
        if ((size_t)(end - line) > nl && strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            size_t n;

            while (v < end && (*v == ' ' || *v == '\t'))
                v++;
            n = (size_t)(end - v);
            while (n > 0 && (v[n - 1] == '\r' || v[n - 1] == ' ' || v[n - 1] == '\t'))
                n--;
            if (n >= outsz)
                n = outsz - 1;
            memcpy(out, v, n);
            out[n] = '\0';
            return true;
        }
        p = end;
    }
    return false;
}

/* Decodes a chunked body; false if malformed or incomplete. */
static bool
dechunk(const char *p, size_t n, struct buf *out)
{
    size_t i = 0;

    for (;;) {
        size_t sz = 0, digits = 0;
        const char *crlf;

        while (i < n && latch_hexval(p[i]) >= 0 && digits < 16) {
            sz = sz * 16 + (size_t)latch_hexval(p[i]);
            i++;
            digits++;
        }
        if (digits == 0)
            return false;
        crlf = i < n ? memchr(p + i, '\n', n - i) : NULL; /* chunk extensions are skipped */
        if (crlf == NULL)
            return false;
        i = (size_t)(crlf - p) + 1;
        if (sz == 0)
            return true; /* trailers, if any, are not checked */
        if (sz > n - i || n - i - sz < 2 || p[i + sz] != '\r' || p[i + sz + 1] != '\n')
            return false;
        if (buf_append(out, p + i, sz) != LATCH_OK)
            return false;
        i += sz + 2;
    }
}

/*
 * Parses what arrived so far, skipping interim 1xx responses (Expect: 100-continue). Sets
 * complete when the response is whole (or at EOF); returns false if it is malformed. Not strict:
 * bytes after a whole response are ignored (MHD may read a raw request as two).
 */
static bool
resp_parse(struct resp *r, bool head, bool strict, bool eof)
{
    const char *s, *end;
    char v[64];
    bool chunked = false, has_cl = false;
    unsigned long long cl = 0;
    size_t n, avail;

    r->complete = false;
    for (;;) {
        s = r->raw + r->off;
        n = r->len - r->off;
        end = n >= 4 ? memmem(s, n, "\r\n\r\n", 4) : NULL;
        if (end == NULL)
            return !eof || r->len == 0;
        r->hdr_len = (size_t)(end - s) + 4;
        if (n < 12 || memcmp(s, "HTTP/1.", 7) != 0 || s[8] != ' ')
            return false;
        if (s[9] < '1' || s[9] > '5' || s[10] < '0' || s[10] > '9' || s[11] < '0' || s[11] > '9')
            return false;
        r->status =
            (unsigned)(s[9] - '0') * 100 + (unsigned)(s[10] - '0') * 10 + (unsigned)(s[11] - '0');
        if (r->status >= 200 || r->status == 101)
            break;
        r->off += r->hdr_len;
        r->hdr_len = 0;
    }
    if (resp_header(r, "Transfer-Encoding", v, sizeof v))
        chunked = strcasecmp(v, "chunked") == 0;
    if (resp_header(r, "Content-Length", v, sizeof v)) {
        const char *e = NULL;

        cl = (unsigned long long)latch_strtonum(v, 0, FH_MAX_RESPONSE, &e);
        if (e != NULL)
            return false;
        has_cl = true;
    }
    avail = n - r->hdr_len;
    free(r->body);
    r->body = NULL;
    r->body_len = 0;
    if (head || r->status < 200 || r->status == 204 || r->status == 304) {
        r->complete = true;
        return true;
    }
    if (chunked) {
        struct buf b;
        bool ok;

        buf_init(&b, FH_MAX_RESPONSE);
        ok = dechunk(s + r->hdr_len, avail, &b);
        if (ok) {
            r->body = buf_steal(&b, &r->body_len);
            r->complete = true;
            return true;
        }
        buf_free(&b);
        return !eof;
    }
    if (has_cl) {
        if (avail < cl)
            return !eof;
        if (avail > cl && strict) /* Connection: close: nothing may follow the body */
            return false;
        avail = (size_t)cl;
    } else if (!eof) {
        return true;
    }
    r->body = xmemdup(s + r->hdr_len, avail + 1);
    r->body[avail] = '\0';
    r->body_len = avail;
    r->complete = true;
    return true;
}

/* ---- the client ---- */

/*
 * Sends req and reads the response until it is complete or the server closes. Returns false if
 * the response is malformed. r->timed_out when nothing more came for FH_TIMEOUT_MS in total.
 * quiet_ms > 0: give up (r->gave_up) when not a byte came back for that long; the request may
 * be one MHD drops silently after its idle timeout (see mhd_pool_tight).
 */
static bool
roundtrip(const char *req, size_t req_len, bool head, bool strict, int quiet_ms, struct resp *r)
{
    struct sockaddr_in sa;
    struct linger lg = {1, 0};
    int64_t start = mono_ms(), deadline = start + FH_TIMEOUT_MS;
    size_t sent = 0, cap = 64 * 1024;
    bool ok = true, eof = false;
    int fd;

    memset(r, 0, sizeof *r);
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    FUZZ_CHECK(fd >= 0);
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons(h.port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        /* libFuzzer's timer signal may interrupt it: the connect goes on, wait for it */
        struct pollfd pfd = {fd, POLLOUT, 0};
        int soerr = errno;
        socklen_t sl = sizeof soerr;

        if (soerr == EINTR) {
            while (poll(&pfd, 1, FH_TIMEOUT_MS) < 0 && errno == EINTR)
                continue;
            if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0)
                soerr = errno;
        }
        if (soerr != 0 && soerr != EINTR) {
            (void)fprintf(stderr, "fuzz_http: connect: %s\n", strerror(soerr));
            FUZZ_CHECK(!"cannot connect to latch");
        }
    }
    r->raw = xmalloc(cap + 1);
    while (sent < req_len || !eof) {
        struct pollfd pfd = {fd, 0, 0};
        int64_t left = deadline - mono_ms();
        int n;

        if (left <= 0) {
            r->timed_out = true;
            break;
        }
        if (quiet_ms > 0 && r->len == 0) {
            int64_t q = start + quiet_ms - mono_ms();

            if (q <= 0) {
                r->gave_up = true;
                break;
            }
            if (q < left)
                left = q;
        }
        pfd.events = (short)(POLLIN | (sent < req_len ? POLLOUT : 0));
        n = poll(&pfd, 1, (int)left);
        if (n < 0 && errno == EINTR)
            continue;
        FUZZ_CHECK(n >= 0);
        if (n == 0)
            continue;
        if ((pfd.revents & POLLOUT) && sent < req_len) {
            ssize_t w = send(fd, req + sent, req_len - sent, MSG_NOSIGNAL);

            if (w > 0)
                sent += (size_t)w;
            else if (w < 0 && errno != EAGAIN && errno != EINTR)
                sent = req_len; /* the server closed early (e.g. 413 before the body) */
        }
        if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t rd;

            if (r->len == cap) {
                FUZZ_CHECK(cap < FH_MAX_RESPONSE);
                cap *= 2;
                r->raw = xrealloc(r->raw, cap + 1);
            }
            rd = recv(fd, r->raw + r->len, cap - r->len, 0);
            if (rd > 0) {
                r->len += (size_t)rd;
                r->raw[r->len] = '\0';
                if (!resp_parse(r, head, strict, false)) {
                    ok = false;
                    break;
                }
                if (r->complete)
                    break;
            } else if (rd == 0 || (errno != EAGAIN && errno != EINTR)) {
                eof = true;
                sent = req_len;
            }
        }
    }
    r->raw[r->len] = '\0';
    if (ok && !r->complete && !r->timed_out && !r->gave_up)
        ok = resp_parse(r, head, strict, true);
    /* abortive close: the server closed first, so no TIME_WAIT piles up on its side */
    (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    (void)close(fd);
    return ok;
}

/* A request from the harness itself (fixtures): expects `want`, returns the parsed body. */
static json_t *
api_call(const char *method, const char *path, const char *body, unsigned want)
{
    struct buf b;
    struct resp r;
    json_t *j = NULL;
    char *req;
    size_t len;

    buf_init(&b, FH_MAX_REQUEST);
    (void)buf_printf(&b,
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n%s",
                     method, path, h.key, strlen(body), body);
    req = buf_steal(&b, &len);
    FUZZ_CHECK(roundtrip(req, len, false, true, 0, &r));
    free(req);
    if (r.status != want || !r.complete)
        (void)fprintf(stderr, "fuzz_http: setup %s %s: %.400s\n", method, path, r.raw);
    FUZZ_CHECK(r.status == want && r.complete);
    if (r.body_len > 0)
        j = json_loadb(r.body, r.body_len, 0, NULL);
    resp_free(&r);
    return j;
}

/* ---- fixtures ---- */

static void
ensure_fixtures(void)
{
    struct store_integration integ;
    struct store_connection conn;
    struct store_session sess;
    unsigned char hash[32];
    latch_rc rc;

    memset(&integ, 0, sizeof integ);
    rc = store_integration_get(h.app.store, h.env_id, FIX_INTEGRATION, &integ);
    store_integration_clear(&integ);
    FUZZ_CHECK(rc == LATCH_OK || rc == LATCH_E_NOT_FOUND);
    if (rc == LATCH_E_NOT_FOUND)
        json_decref(api_call(
            "POST", "/integrations",
            "{\"provider\":\"ninjaone-rmm\",\"unique_key\":\"" FIX_INTEGRATION "\"}", 200));

    memset(&conn, 0, sizeof conn);
    rc = store_connection_get(h.app.store, h.env_id, FIX_INTEGRATION, FIX_CONNECTION, &conn);
    store_connection_clear(&conn);
    FUZZ_CHECK(rc == LATCH_OK || rc == LATCH_E_NOT_FOUND);
    if (rc == LATCH_E_NOT_FOUND)
        json_decref(api_call(
            "POST", "/connections",
            "{\"provider_config_key\":\"" FIX_INTEGRATION "\",\"connection_id\":\"" FIX_CONNECTION
            "\",\"connection_config\":{\"instance\":\"eu.ninjarmm.com\"},"
            "\"end_user\":{\"id\":\"fuzz-user\",\"email\":\"fuzz@example.com\"},"
            "\"tags\":{\"team\":\"fuzz\"},\"metadata\":{\"k\":\"v\"},"
            "\"credentials\":{\"type\":\"OAUTH2_CC\",\"token\":\"fuzz-access-token\","
            "\"client_id\":\"fuzzclient0001\",\"client_secret\":\"fuzzsecret0001\","
            "\"expires_at\":\"2099-01-01T00:00:00.000Z\"}}",
            201));

    memset(&sess, 0, sizeof sess);
    rc = LATCH_E_NOT_FOUND;
    if (h.session[0] != '\0') {
        vault_index_hash(h.app.vault, h.session, hash);
        rc = store_session_get_by_hash(h.app.store, hash, &sess);
    }
    FUZZ_CHECK(rc == LATCH_OK || rc == LATCH_E_NOT_FOUND);
    if (rc == LATCH_E_NOT_FOUND || sess.attempts >= LATCH_MAX_CONNECT_ATTEMPTS ||
        sess.expires_at < latch_now_ms() + 60 * 1000) {
        json_t *j = api_call("POST", "/connect/sessions",
                             "{\"end_user\":{\"id\":\"fuzz-user\",\"email\":\"fuzz@example.com\"},"
                             "\"organization\":{\"id\":\"fuzz-org\"},\"tags\":{\"team\":\"fuzz\"}}",
                             201);
        const char *tok = json_string_value(json_object_get(json_object_get(j, "data"), "token"));

        FUZZ_CHECK(tok != NULL && strlen(tok) < sizeof h.session);
        latch_strlcpy(h.session, tok, sizeof h.session);
        json_decref(j);
    }
    store_session_clear(&sess);
}

/* ---- setup and teardown ---- */

static void
remove_dir(const char *dir)
{
    static const char *const files[] = {"latch.db", "latch.db-wal", "latch.db-shm", "latch.key",
                                        NULL};

    for (size_t i = 0; files[i] != NULL; i++) {
        char p[PATH_MAX];
        int n = snprintf(p, sizeof p, "%s/%s", dir, files[i]);

        if (n < 0 || (size_t)n >= sizeof p)
            continue; /* cannot name it: a longer dir than this program ever makes */
        (void)unlink(p);
    }
    (void)rmdir(dir);
}

/* A crash (abort) skips teardown: remove the dirs of fuzz_http processes that are gone. */
static void
remove_stale_dirs(void)
{
    DIR *d = opendir("/tmp");
    struct dirent *de;

    if (d == NULL)
        return;
    while ((de = readdir(d)) != NULL) {
        const char *errstr = NULL;
        char pid[16], p[PATH_MAX];
        const char *dot;
        long long v;

        if (strncmp(de->d_name, FH_DIR_PREFIX, strlen(FH_DIR_PREFIX)) != 0)
            continue;
        dot = strchr(de->d_name + strlen(FH_DIR_PREFIX), '.');
        if (dot == NULL || (size_t)(dot - de->d_name) - strlen(FH_DIR_PREFIX) >= sizeof pid)
            continue;
        latch_strlcpy(pid, de->d_name + strlen(FH_DIR_PREFIX),
                      (size_t)(dot - de->d_name) - strlen(FH_DIR_PREFIX) + 1);
        v = latch_strtonum(pid, 1, INT_MAX, &errstr);
        if (errstr != NULL || kill((pid_t)v, 0) == 0 || errno != ESRCH)
            continue;
        (void)snprintf(p, sizeof p, "/tmp/%s", de->d_name);
        remove_dir(p);
    }
    (void)closedir(d);
}

static void
teardown(void)
{
    if (!h.ready)
        return;
    h.ready = false;
    app_stop(&h.app);
    config_free(&h.cfg);
    curl_global_cleanup();
    remove_dir(h.dir);
    explicit_bzero(h.key, sizeof h.key);
    explicit_bzero(h.key_low, sizeof h.key_low);
}

static void
set_env(const char *name, const char *value)
{
    FUZZ_CHECK(setenv(name, value, 1) == 0);
}

static void
setup(void)
{
    struct latch_err err;
    struct store_env dev;
    char p[128];
    const char *lvl = getenv("FH_LOG_LEVEL");
    int lv;

    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    json_object_seed(0x1a7c4);
    remove_stale_dirs();
    (void)snprintf(h.dir, sizeof h.dir, "/tmp/%s%ld.XXXXXX", FH_DIR_PREFIX, (long)getpid());
    FUZZ_CHECK(mkdtemp(h.dir) != NULL);

    /* only the settings below: nothing from the caller's LATCH_* environment */
    for (;;) {
        char name[128];
        size_t i;
        bool found = false;

        for (i = 0; environ[i] != NULL; i++) {
            const char *eq = strchr(environ[i], '=');

            if (strncmp(environ[i], "LATCH_", 6) == 0 && eq != NULL &&
                (size_t)(eq - environ[i]) < sizeof name) {
                memcpy(name, environ[i], (size_t)(eq - environ[i]));
                name[eq - environ[i]] = '\0';
                found = true;
                break;
            }
        }
        if (!found)
            break;
        FUZZ_CHECK(unsetenv(name) == 0);
    }
    (void)snprintf(p, sizeof p, "%s/latch.db", h.dir);
    set_env("LATCH_DATABASE_URL", p);
    (void)snprintf(p, sizeof p, "%s/latch.key", h.dir);
    set_env("LATCH_KEY_FILE", p);
    set_env("LATCH_BIND", "127.0.0.1");
    set_env("LATCH_PORT", "0");
    set_env("LATCH_PUBLIC_URL", "http://127.0.0.1:9");
    set_env("LATCH_LOG_LEVEL", lvl != NULL ? lvl : "error");
    set_env("LATCH_THREADS", "2");
    set_env("LATCH_CONNECTION_TIMEOUT_S", "1");
    set_env("LATCH_RESOLVE", FH_RESOLVE);
    set_env("LATCH_TOKEN_TIMEOUT_MS", "1000");
    set_env("LATCH_PROXY_TIMEOUT_MS", "1000");
    set_env("LATCH_WEBHOOK_TIMEOUT_MS", "1000");
    set_env("LATCH_WEBHOOK_MAX_ATTEMPTS", "1");
    set_env("LATCH_RATE_LIMIT_ENV", "10000000");
    set_env("LATCH_RATE_LIMIT_IP", "10000000");

    latch_err_clear(&err);
    if (config_load(&h.cfg, &err) != LATCH_OK) {
        (void)fprintf(stderr, "fuzz_http: config: %s\n", err.msg);
        FUZZ_CHECK(!"config_load failed");
    }
    lv = log_level_parse(h.cfg.log_level);
    FUZZ_CHECK(lv >= 0);
    log_min_level = (enum log_level)lv;
    if (app_start(&h.app, &h.cfg, &err) != LATCH_OK) {
        (void)fprintf(stderr, "fuzz_http: app_start: %s\n", err.msg);
        FUZZ_CHECK(!"app_start failed");
    }
    h.ready = true;
    FUZZ_CHECK(atexit(teardown) == 0);
    h.port = http_server_port(h.app.http);
    FUZZ_CHECK(h.port != 0);
    memset(&dev, 0, sizeof dev);
    FUZZ_CHECK(store_env_get_by_name(h.app.store, "dev", &dev) == LATCH_OK);
    h.env_id = dev.id;
    store_env_clear(&dev);
    FUZZ_CHECK(app_ensure_secret_key(&h.app, h.env_id, h.key) == LATCH_OK);
    FUZZ_CHECK(strlen(h.key) == 36); /* a fresh store: the key was just created */
    for (size_t i = 0; i < sizeof h.key; i++)
        h.key_low[i] = (char)(h.key[i] >= 'A' && h.key[i] <= 'Z' ? h.key[i] | 0x20 : h.key[i]);
    ensure_fixtures();
}

/* ---- building the request ---- */

/* Appends p[0..n) with "$S" replaced by the session token. */
static void
append_subst(struct buf *b, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '$' && i + 1 < n && p[i + 1] == 'S') {
            (void)buf_puts(b, h.session);
            i++;
        } else {
            (void)buf_append(b, &p[i], 1);
        }
    }
}

static bool
url_char(uint8_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("-._~!$&'()*+,;=:@/?%[]", c) != NULL);
}

/* The request target: path, then the suffix (encoded unless raw). */
static void
append_target(struct buf *b, const char *path, const char *suffix, size_t n, bool raw)
{
    (void)buf_puts(b, path);
    if (path[0] == '\0' && (n == 0 || suffix[0] != '/'))
        (void)buf_puts(b, "/");
    for (size_t i = 0; i < n; i++) {
        uint8_t c = (uint8_t)suffix[i];

        if (raw ? (c != '\r' && c != '\n') : url_char(c))
            (void)buf_append(b, &suffix[i], 1);
        else
            (void)buf_printf(b, "%%%02X", c);
    }
}

static bool
framing_header(const char *name, size_t n)
{
    static const char *const names[] = {"content-length", "transfer-encoding", "connection", "host",
                                        NULL};

    while (n > 0 && (name[n - 1] == ' ' || name[n - 1] == '\t'))
        n--;
    for (size_t i = 0; names[i] != NULL; i++)
        if (strlen(names[i]) == n && strncasecmp(name, names[i], n) == 0)
            return true;
    return false;
}

static bool
token_char(uint8_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* True if the line is "Transfer-Encoding: chunked" (any case, spaces around the value). */
static bool
te_chunked(const char *line, size_t len, size_t nlen)
{
    const char *v = line + nlen + 1;
    size_t vl = len - nlen - 1;

    if (nlen != 17 || strncasecmp(line, "transfer-encoding", 17) != 0)
        return false;
    while (vl > 0 && (*v == ' ' || *v == '\t')) {
        v++;
        vl--;
    }
    while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t' || v[vl - 1] == '\r'))
        vl--;
    return vl == 7 && strncasecmp(v, "chunked", 7) == 0;
}

/*
 * The input's header lines (already substituted), one per '\n'. Framing stays the harness's:
 * Content-Length, Connection and Host lines are dropped, Transfer-Encoding too unless it is
 * exactly chunked (then *chunked is set and the harness frames the body so).
 */
static void
append_headers(struct buf *b, const char *p, size_t n, bool raw, bool *chunked)
{
    size_t i = 0;
    int count = 0;

    while (i < n && count < FH_MAX_HEADER_LINES) {
        const char *line = p + i;
        const char *nl = memchr(line, '\n', n - i);
        size_t len = nl != NULL ? (size_t)(nl - line) : n - i;
        const char *colon = memchr(line, ':', len);
        size_t nlen = colon != NULL ? (size_t)(colon - line) : 0;
        bool ok = nlen > 0;

        i += len + 1;
        for (size_t k = 0; ok && !raw && k < nlen; k++)
            ok = token_char((uint8_t)line[k]);
        if (ok && !*chunked && te_chunked(line, len, nlen)) {
            (void)buf_puts(b, "Transfer-Encoding: chunked\r\n");
            *chunked = true;
            continue;
        }
        if (!ok || framing_header(line, nlen))
            continue;
        for (size_t k = 0; k < len; k++) {
            uint8_t c = (uint8_t)line[k];

            if (c == '\r' || (!raw && ((c < 0x20 && c != '\t') || c == 0x7f)))
                continue;
            (void)buf_append(b, &line[k], 1);
        }
        (void)buf_puts(b, "\r\n");
        count++;
    }
}

/* Rewrites every non-empty string webhook_url(_override) to WEBHOOK_SINK; true if changed. */
static bool
rewrite_webhooks(json_t *v)
{
    bool changed = false;

    if (json_is_object(v)) {
        const char *k;
        json_t *x;

        json_object_foreach(v, k, x)
        {
            if ((strcmp(k, "webhook_url") == 0 || strcmp(k, "webhook_url_override") == 0) &&
                json_is_string(x) && json_string_length(x) > 0 &&
                strcmp(json_string_value(x), WEBHOOK_SINK) != 0) {
                json_object_set_new(v, k, json_string(WEBHOOK_SINK));
                changed = true;
            } else if (rewrite_webhooks(x)) {
                changed = true;
            }
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *x;

        json_array_foreach(v, i, x) if (rewrite_webhooks(x)) changed = true;
    }
    return changed;
}

/*
 * The body as latch will parse it, with webhook URLs pointed at the sink so that no input makes
 * latch deliver a webhook off the machine.
 */
static void
sanitize_body(struct buf *body)
{
    json_t *j;

    if (body->len == 0)
        return;
    j = json_loadb(body->data, body->len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, NULL);
    if (j == NULL)
        return;
    if (rewrite_webhooks(j)) {
        char *s = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);

        FUZZ_CHECK(s != NULL);
        buf_reset(body);
        (void)buf_puts(body, s);
        free(s);
    }
    json_decref(j);
}

/* ---- checking the response ---- */

/*
 * True if the secret key occurs in p[0..n), ignoring ASCII case and seeing through %XX and
 * \u00XX escapes. A plain loop, not memmem: libFuzzer learns the needles of intercepted
 * memmem/strstr calls and would soon paste the key into inputs.
 */
static bool
has_key(const char *p, size_t n)
{
    size_t kl = strlen(h.key_low), m = 0;
    char *d = xmalloc(n + 1);
    bool found = false;

    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)p[i];

        if (c == '%' && i + 2 < n && latch_hexval(p[i + 1]) >= 0 && latch_hexval(p[i + 2]) >= 0) {
            c = latch_hexval(p[i + 1]) * 16 + latch_hexval(p[i + 2]);
            i += 2;
        } else if (c == '\\' && i + 5 < n && p[i + 1] == 'u' && p[i + 2] == '0' &&
                   p[i + 3] == '0' && latch_hexval(p[i + 4]) >= 0 && latch_hexval(p[i + 5]) >= 0) {
            c = latch_hexval(p[i + 4]) * 16 + latch_hexval(p[i + 5]);
            i += 5;
        }
        d[m++] = (char)(c >= 'A' && c <= 'Z' ? c | 0x20 : c);
    }
    for (size_t i = 0; !found && i + kl <= m; i++) {
        size_t k = 0;

        while (k < kl && d[i + k] == h.key_low[k])
            k++;
        found = k == kl;
    }
    free(d);
    return found;
}

static bool
upstream_failure(unsigned status, const char *code)
{
    if (status == 502 || status == 504)
        return strcmp(code, "upstream_unreachable") == 0 || strcmp(code, "upstream_timeout") == 0 ||
               strcmp(code, "client_credentials_fetch_error") == 0;
    if (status == 503)
        return strcmp(code, "busy") == 0;
    return false;
}

static void
fail(const char *why, const char *req, size_t req_len, const struct resp *r)
{
    (void)fprintf(stderr, "fuzz_http: %s\n--- request (%zu bytes)\n", why, req_len);
    (void)fwrite(req, 1, req_len < 4096 ? req_len : 4096, stderr);
    (void)fprintf(stderr, "\n--- response (%zu bytes)\n", r->len);
    if (r->raw != NULL)
        (void)fwrite(r->raw, 1, r->len < 4096 ? r->len : 4096, stderr);
    (void)fprintf(stderr, "\n");
}

/* What was sent, as check_response needs it. */
struct sent {
    const char *req;
    size_t len;
    bool raw;         /* raw mode: MHD may refuse or drop the request */
    bool head;        /* HEAD: no body */
    bool key_echo_ok; /* the input itself carried the secret key */
    bool pool_tight;  /* MHD's per-connection pool may run out (see mhd_pool_tight) */
};

/*
 * libmicrohttpd 0.9.75 parses every query argument and header into a record in the connection's
 * memory pool (LATCH_MAX_HEADER_BYTES). Many tiny arguments ("?&&&&...": some 50 bytes of pool
 * per input byte) exhaust it; MHD then wants to answer 431 but cannot, and closes the
 * connection. Estimate generously when that may happen.
 */
static bool
mhd_pool_tight(const char *req, size_t len)
{
    const char *end = memmem(req, len, "\r\n\r\n", 4);
    size_t head = end != NULL ? (size_t)(end - req) : len, records = 0;

    for (size_t i = 0; i < head; i++)
        records += req[i] == '&' || req[i] == '\n';
    /* measured: ~470 "a=b&" (a 2 KiB head) already exhaust 32 KiB; allow a wide margin */
    return 2 * head + 96 * records > LATCH_MAX_HEADER_BYTES;
}

static void
check_response(const struct sent *q, bool parsed, const struct resp *r)
{
    const char *req = q->req;
    size_t req_len = q->len;
    bool raw = q->raw, head = q->head;
    char rid[80], ctype[128];
    bool latch, is_json;
    const char *code = "";
    json_t *j = NULL;

#define CHECK(cond, why)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fail(why, req, req_len, r);                                                            \
            FUZZ_CHECK(cond);                                                                      \
        }                                                                                          \
    } while (0)

    CHECK(!r->timed_out, "no complete response in time (hang)");
    CHECK(parsed, "malformed HTTP response");
    if (r->len == 0) {
        /* MHD may drop a connection whose request it cannot parse; a clean one gets an answer */
        CHECK(raw || q->pool_tight, "connection closed without a response");
        return;
    }
    CHECK(r->complete, "truncated response");

    /* the secret key never goes back to the client (unless the input carried it elsewhere) */
    CHECK(q->key_echo_ok || !has_key(r->raw, r->len), "the secret key is in the response");

    latch = resp_header(r, "X-Request-Id", rid, sizeof rid);
    if (!latch) {
        /* MHD's own answer to a request it refused to parse */
        CHECK(raw || r->status < 500, "MHD refused a clean request with 5xx");
        CHECK((r->status >= 400 && r->status < 500) || r->status == 501 || r->status == 505,
              "unexpected status from MHD");
        return;
    }
    ctype[0] = '\0';
    (void)resp_header(r, "Content-Type", ctype, sizeof ctype);
    is_json = latch_str_has_prefix_ci(ctype, "application/json");
    if (!head && r->body_len > 0 && is_json) {
        j = json_loadb(r->body, r->body_len, JSON_DECODE_ANY, NULL);
        CHECK(j != NULL, "a JSON response does not parse");
    }
    if (r->status >= 400) {
        json_t *e = json_object_get(j, "error");

        if (!head) {
            CHECK(is_json, "an error response is not JSON");
            CHECK(json_is_object(e), "an error response has no error object");
            CHECK(json_is_string(json_object_get(e, "code")), "error.code is not a string");
            CHECK(json_is_string(json_object_get(e, "message")), "error.message is not a string");
            code = json_string_value(json_object_get(e, "code"));
        }
        /* HEAD has no body to tell the code: the GET twin of the input checks it */
        CHECK(r->status < 500 || (!head && upstream_failure(r->status, code)) ||
                  (head && r->status >= 502 && r->status <= 504),
              "latch answered 5xx");
    }
    CHECK(r->status >= 200 || r->status == 101, "unexpected 1xx");
    json_decref(j);
#undef CHECK
}

/* ---- the target ---- */

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const struct route *rt;
    struct buf rest, body, reqb;
    const uint8_t *p;
    const char *method;
    const char *head_end, *nl;
    size_t n, head_len, suffix_len;
    char *req;
    size_t req_len;
    struct resp r;
    struct sent sent;
    unsigned auth, ctype, mbits;
    bool raw, head, parsed, key_in_input, chunked = false;
    static const char *const ctypes[] = {"application/json", "application/x-www-form-urlencoded",
                                         NULL, "text/plain"};

    if (!h.ready)
        setup();
    if (size < 2 || size > FH_MAX_INPUT)
        return 0;
    rt = &routes[data[0] % N_ROUTES];
    auth = data[1] & 3u;
    ctype = (data[1] >> 2) & 3u;
    raw = ((data[1] >> 4) & 1u) != 0;
    mbits = (unsigned)data[1] >> 5;
    method = mbits <= 4 ? rt->method : mbits == 5 ? "HEAD" : mbits == 6 ? "OPTIONS" : "PUT";
    head = strcmp(method, "HEAD") == 0;
    p = data + 2;
    n = size - 2;

    /* substitute first: the token may appear anywhere */
    buf_init(&rest, FH_MAX_REQUEST);
    append_subst(&rest, p, n);
    if (rest.data == NULL)
        (void)buf_puts(&rest, "");
    key_in_input = has_key(rest.data, rest.len);
    head_end = memmem(rest.data, rest.len, "\n\n", 2);
    head_len = head_end != NULL ? (size_t)(head_end - rest.data) : rest.len;
    buf_init(&body, FH_MAX_REQUEST);
    if (head_end != NULL)
        (void)buf_append(&body, head_end + 2, rest.len - head_len - 2);
    sanitize_body(&body);
    nl = memchr(rest.data, '\n', head_len);
    suffix_len = nl != NULL ? (size_t)(nl - rest.data) : head_len;

    buf_init(&reqb, FH_MAX_REQUEST);
    (void)buf_printf(&reqb, "%s ", method);
    append_target(&reqb, rt->path, rest.data, suffix_len, raw);
    (void)buf_puts(&reqb, " HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    switch (auth) {
    case 0:
        (void)buf_printf(&reqb, "Authorization: Bearer %s\r\n", h.key);
        break;
    case 1:
        (void)buf_printf(&reqb, "Authorization: Bearer %s\r\n", h.session);
        break;
    case 2:
        (void)buf_puts(&reqb, "Authorization: Bearer 6f1c2a9e-3b7d-4c1e-9a52-0d8e7b6c5a41\r\n");
        break;
    default:
        break;
    }
    if (ctypes[ctype] != NULL)
        (void)buf_printf(&reqb, "Content-Type: %s\r\n", ctypes[ctype]);
    if (nl != NULL)
        append_headers(&reqb, nl + 1, head_len - suffix_len - 1, raw, &chunked);
    if (!chunked && (body.len > 0 || strcmp(method, "POST") == 0 || strcmp(method, "PATCH") == 0 ||
                     strcmp(method, "PUT") == 0))
        (void)buf_printf(&reqb, "Content-Length: %zu\r\n", body.len);
    (void)buf_puts(&reqb, "Connection: close\r\n\r\n");
    if (chunked) {
        /* two chunks when there is more than one byte, to split the body mid-way */
        size_t cut[3] = {0, body.len / 2, body.len};

        for (int k = 0; k < 2; k++) {
            size_t len = cut[k + 1] - cut[k];

            if (len == 0)
                continue;
            (void)buf_printf(&reqb, "%zx\r\n", len);
            (void)buf_append(&reqb, body.data + cut[k], len);
            (void)buf_puts(&reqb, "\r\n");
        }
        (void)buf_puts(&reqb, "0\r\n\r\n");
    } else if (body.len > 0) {
        (void)buf_append(&reqb, body.data, body.len);
    }
    req = buf_steal(&reqb, &req_len);
    buf_free(&rest);
    buf_free(&body);

    sent.req = req;
    sent.len = req_len;
    sent.raw = raw;
    sent.head = head;
    sent.key_echo_ok = key_in_input;
    sent.pool_tight = mhd_pool_tight(req, req_len);
    /* latch answers in milliseconds; do not wait out MHD's idle timeout on a dropped request */
    parsed = roundtrip(req, req_len, head, !raw, sent.pool_tight ? FH_QUIET_MS : 0, &r);
    check_response(&sent, parsed, &r);
    resp_free(&r);
    free(req);
    ensure_fixtures();
    return 0;
}
