/*
 * outbound.c - every outbound HTTP call: one libcurl multi handle driven by one thread.
 *
 * Thread model (docs/internals/outbound.md has the long version):
 * - Any thread builds a job (validates the request, creates and configures the easy handle),
 *   then appends it to ob->incoming under ob->mu and writes ob->wake_fd (an eventfd).
 * - The curl thread is an epoll loop driving curl's socket API: curl tells it which sockets to
 *   watch (on_socket) and when to time out (on_timer); each ready socket gets one
 *   curl_multi_socket_action, so a wake-up costs O(ready transfers), not O(all transfers) as
 *   curl_multi_perform/curl_multi_poll would. Loop: { take incoming + control requests;
 *   epoll_wait; socket actions; due timeout; drain CURLMSG_DONE }. Every libcurl callback and
 *   every user callback (done, on_headers, on_data, on_body_read, on_done) runs on the curl
 *   thread.
 * - Streams are paused/resumed/cancelled by flagging the job under ob->mu and pushing it on the
 *   control list; the curl thread acts on it (curl_easy_pause / remove handle).
 *
 * SSRF: every socket the multi handle opens goes through on_opensocket(), which refuses
 * internal addresses (netpolicy_addr_is_internal) unless allow_private is set or the host:port
 * being connected to (taken from the effective URL, so redirects are judged by their own host)
 * is pinned in opts.resolve *and* the address is one of the pinned addresses (the pins, the
 * allow_private switch and the CA bundle are net/destpolicy.c's). on_prereq()
 * checks the connected peer again before each request (covers reused connections).
 */
#include "net/outbound.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <curl/curl.h>

#include "core/latch_limits.h"
#include "core/log.h"
#include "net/destpolicy.h"
#include "net/netpolicy.h"
#include "util/buf.h"
#include "util/clock.h"
#include "util/str.h"
#include "util/xalloc.h"

/*
 * Local bounds (to be moved to limits.h by the lead).
 */
/* Request headers per job and their total size in bytes. */
#define OUTBOUND_MAX_REQ_HEADERS 128
#define OUTBOUND_MAX_REQ_HEADER_BYTES (64 * 1024)
/* Response headers kept per job and their total size (curl itself caps a line at 100 KiB). */
#define OUTBOUND_MAX_RESP_HEADERS 200
#define OUTBOUND_MAX_RESP_HEADER_BYTES (64 * 1024)
/* Absolute URL length accepted for an outbound request (proxy paths + queries). */
#define OUTBOUND_MAX_URL_LEN 8192
/* Redirects followed when a job asks for it. */
#define OUTBOUND_MAX_REDIRS 3L
/* Connection pool of the multi handle. */
#define OUTBOUND_MAX_HOST_CONNECTIONS 1024L
#define OUTBOUND_MAX_CONNECTS 2048L
#define OUTBOUND_CONN_MAXAGE_S 60L
/* Longest sleep of the curl thread when idle (curl's own timers cut it short). */
#define OUTBOUND_POLL_MS 1000
#define OUTBOUND_EPOLL_EVENTS 256

#define OUTBOUND_HOST_MAX 256

#ifndef LATCH_VERSION
#define LATCH_VERSION "dev"
#endif

struct outbound {
    CURLM *multi;
    pthread_t thread;    /* the curl thread, or the embedded instance's owner */
    bool thread_started; /* own thread running */
    bool embedded;       /* no thread: the owner's loop calls outbound_embedded_run */
    bool has_owner;      /* embedded: outbound_embedded_attach ran (thread = owner) */
    bool kick;           /* embedded, owner thread only: work was queued from the owner */
    bool policy_borrowed;
    int epoll_fd; /* curl's sockets + wake_fd */
    int wake_fd;  /* eventfd: new jobs, control requests, shutdown */

    /* immutable after outbound_start */
    bool allow_http;
    unsigned max_jobs;
    struct destpolicy *policy; /* pins, private addresses, CA bundle */

    /* protected by mu */
    pthread_mutex_t mu;
    struct outbound_stream *in_head, *in_tail; /* submitted, not yet added to the multi */
    struct outbound_stream *ctl_head;          /* streams with a resume/cancel request */
    unsigned n_jobs;                           /* queued + running */
    bool stopping;

    /* curl thread only */
    struct outbound_stream *active;      /* added to the multi */
    int64_t timeout_at;                  /* monotonic ms of curl's next timeout, -1 = none */
    struct outbound_stream *hdr_pending; /* header block complete, on_headers not yet called */

    _Atomic uint64_t sockets_opened;
    _Atomic uint64_t sockets_denied;
};

/*
 * One transfer. Plain jobs (outbound_submit) and streams (outbound_stream_start) share this
 * struct; the public name is the stream's.
 */
struct outbound_stream {
    struct outbound *ob;
    CURL *easy;
    atomic_int refs; /* the job itself (dropped after its final callback) + stream handle */
    bool is_stream;

    /* list links */
    struct outbound_stream *in_next;             /* incoming queue (mu) */
    struct outbound_stream *ctl_next;            /* control list (mu) */
    struct outbound_stream *run_next;            /* control batch (curl thread) */
    struct outbound_stream *act_prev, *act_next; /* active list (curl thread) */

    /* protected by ob->mu */
    bool in_ctl;
    bool cancel_req;
    bool resume_req;
    bool finished;

    /* curl thread only after submit */
    bool active;
    bool run_cancel, run_resume;
    char host[OUTBOUND_HOST_MAX];
    char *body; /* request body copy (wiped on free) */
    size_t body_len;
    struct curl_slist *req_headers;
    bool follow;
    size_t max_response;
    struct buf resp_body;
    char **h_names, **h_values;
    size_t h_n, h_cap, h_bytes;
    long h_status;
    bool body_started;
    bool too_large;
    bool denied;
    char errbuf[CURL_ERROR_SIZE];
    outbound_done_fn done;
    void *ud;

    /* streams */
    struct outbound_stream_cbs cbs;
    uint64_t streamed;
    bool headers_sent, want_pause, recv_paused, send_paused;
    bool hdr_queued; /* on ob->hdr_pending (holds a reference) */
    struct outbound_stream *hdr_next;
};

/* ------------------------------------------------------------------------------------------ */
/* helpers */

static void
slist_free_wiped(struct curl_slist *l)
{
    for (struct curl_slist *p = l; p != NULL; p = p->next)
        explicit_bzero(p->data, strlen(p->data));
    curl_slist_free_all(l);
}

static void
hdrs_clear(struct outbound_stream *j)
{
    for (size_t i = 0; i < j->h_n; i++) {
        free(j->h_names[i]);
        free(j->h_values[i]);
    }
    j->h_n = 0;
    j->h_bytes = 0;
}

static void
job_release_resources(struct outbound_stream *j)
{
    if (j->easy != NULL) {
        curl_easy_cleanup(j->easy);
        j->easy = NULL;
    }
    slist_free_wiped(j->req_headers);
    j->req_headers = NULL;
    if (j->body != NULL) {
        explicit_bzero(j->body, j->body_len);
        free(j->body);
        j->body = NULL;
    }
    buf_free(&j->resp_body);
    hdrs_clear(j);
    free(j->h_names);
    free(j->h_values);
    j->h_names = NULL;
    j->h_values = NULL;
    j->h_cap = 0;
}

static void
job_ref(struct outbound_stream *j)
{
    atomic_fetch_add(&j->refs, 1);
}

static void
job_unref(struct outbound_stream *j)
{
    if (atomic_fetch_sub(&j->refs, 1) == 1) {
        job_release_resources(j);
        free(j);
    }
}

static bool
is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool
method_ok(const char *m)
{
    size_t n = 0;

    if (m == NULL)
        return false;
    for (; m[n] != '\0'; n++)
        if (m[n] < 'A' || m[n] > 'Z')
            return false;
    return n >= 1 && n <= 16;
}

static bool
header_value_ok(const char *v)
{
    for (; *v != '\0'; v++) {
        unsigned char c = (unsigned char)*v;

        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return false;
    }
    return true;
}

/* ------------------------------------------------------------------------------------------ */
/* SSRF checks (curl thread) */

/* True if connecting this job to sa is acceptable. */
static bool
addr_allowed(struct outbound_stream *j, const struct sockaddr *sa, socklen_t len)
{
    struct outbound *ob = j->ob;
    char *eff = NULL, *host = NULL, *port = NULL;
    CURLU *u = NULL;
    bool ok = false;

    if (destpolicy_addr_open(ob->policy, sa, len))
        return true;
    if (!destpolicy_has_pins(ob->policy))
        return false;
    /* the host being connected now: the effective URL is updated before a redirect connects */
    if (curl_easy_getinfo(j->easy, CURLINFO_EFFECTIVE_URL, &eff) != CURLE_OK || eff == NULL)
        return false;
    u = curl_url();
    if (u == NULL || curl_url_set(u, CURLUPART_URL, eff, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK)
        goto out;
    ok = destpolicy_addr_pinned(ob->policy, host, port, sa);
out:
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
    return ok;
}

/* Counts and logs a refused destination. host is the job's URL host (not a redirect's). */
static void
note_denied(struct outbound_stream *j, const struct sockaddr *sa)
{
    char q[OUTBOUND_HOST_MAX + 8];
    char a[INET6_ADDRSTRLEN] = "?";

    atomic_fetch_add(&j->ob->sockets_denied, 1);
    j->denied = true;
    if (sa != NULL && sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, a, sizeof a);
    else if (sa != NULL && sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, a,
                  sizeof a);
    log_warn("outbound destination denied", "host=%s addr=%s", log_quote(q, sizeof q, j->host), a);
}

static curl_socket_t
on_opensocket(void *clientp, curlsocktype purpose, struct curl_sockaddr *a)
{
    struct outbound_stream *j = clientp;
    curl_socket_t fd;

    if (purpose != CURLSOCKTYPE_IPCXN || !addr_allowed(j, &a->addr, (socklen_t)a->addrlen)) {
        note_denied(j, &a->addr);
        return CURL_SOCKET_BAD;
    }
    fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
    if (fd >= 0)
        atomic_fetch_add(&j->ob->sockets_opened, 1);
    return fd;
}

static int
on_prereq(void *clientp, char *primary_ip, char *local_ip, int primary_port, int local_port)
{
    struct outbound_stream *j = clientp;
    struct sockaddr_storage ss;

    (void)local_ip;
    (void)primary_port;
    (void)local_port;
    if (primary_ip == NULL || !destpolicy_parse_addr(primary_ip, &ss) ||
        !addr_allowed(j, (const struct sockaddr *)&ss, sizeof ss)) {
        note_denied(j, primary_ip != NULL ? (const struct sockaddr *)&ss : NULL);
        return CURL_PREREQFUNC_ABORT;
    }
    return CURL_PREREQFUNC_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* transfer callbacks (curl thread) */

static void
deliver_headers(struct outbound_stream *j)
{
    j->headers_sent = true;
    if (j->cbs.on_headers != NULL)
        j->cbs.on_headers(j->ud, j->h_status, j->h_names, j->h_values, j->h_n);
}

static bool
has_header(const struct outbound_stream *j, const char *name)
{
    for (size_t i = 0; i < j->h_n; i++)
        if (strcasecmp(j->h_names[i], name) == 0)
            return true;
    return false;
}

/* A header block is the final one unless curl is going to follow it or it is 1xx. */
static bool
block_is_final(const struct outbound_stream *j)
{
    long s = j->h_status;

    if (s >= 100 && s < 200)
        return false;
    if (j->follow && (s == 301 || s == 302 || s == 303 || s == 307 || s == 308) &&
        has_header(j, "Location"))
        return false;
    return true;
}

static long
parse_status_line(const char *p, size_t n)
{
    size_t i = 0;
    long v = 0;

    while (i < n && p[i] != ' ')
        i++;
    while (i < n && p[i] == ' ')
        i++;
    for (size_t k = 0; k < 3; k++, i++) {
        if (i >= n || p[i] < '0' || p[i] > '9')
            return 0;
        v = v * 10 + (p[i] - '0');
    }
    return v;
}

static size_t
on_header(char *ptr, size_t size, size_t nitems, void *ud)
{
    struct outbound_stream *j = ud;
    size_t n = size * nitems, len = n, nlen, vstart, vend;
    const char *colon;

    while (len > 0 && (ptr[len - 1] == '\r' || ptr[len - 1] == '\n'))
        len--;
    if (len >= 5 && memcmp(ptr, "HTTP/", 5) == 0) {
        hdrs_clear(j);
        j->h_status = parse_status_line(ptr, len);
        j->body_started = false;
        return n;
    }
    if (j->body_started)
        return n; /* trailers: not part of the header block we report */
    if (len == 0) {
        if (j->is_stream && !j->headers_sent && !j->hdr_queued && block_is_final(j)) {
            /* deliver with the first body bytes (usually in this same read), at the end, or
             * at the end of this loop iteration: one wake-up of the consumer, not two */
            job_ref(j);
            j->hdr_queued = true;
            j->hdr_next = j->ob->hdr_pending;
            j->ob->hdr_pending = j;
        }
        return n;
    }
    if (ptr[0] == ' ' || ptr[0] == '\t') {
        /* obsolete line folding: append to the previous value */
        if (j->h_n > 0) {
            struct buf b;

            if (j->h_bytes + len > OUTBOUND_MAX_RESP_HEADER_BYTES)
                goto too_large;
            buf_init(&b, OUTBOUND_MAX_RESP_HEADER_BYTES);
            (void)buf_puts(&b, j->h_values[j->h_n - 1]);
            (void)buf_append(&b, ptr, len);
            free(j->h_values[j->h_n - 1]);
            j->h_values[j->h_n - 1] = buf_steal(&b, NULL);
            j->h_bytes += len;
        }
        return n;
    }
    colon = memchr(ptr, ':', len);
    if (colon == NULL)
        return n;
    nlen = (size_t)(colon - ptr);
    vstart = nlen + 1;
    while (vstart < len && (ptr[vstart] == ' ' || ptr[vstart] == '\t'))
        vstart++;
    vend = len;
    while (vend > vstart && (ptr[vend - 1] == ' ' || ptr[vend - 1] == '\t'))
        vend--;
    if (nlen == 0)
        return n;
    if (j->h_n >= OUTBOUND_MAX_RESP_HEADERS || j->h_bytes + len > OUTBOUND_MAX_RESP_HEADER_BYTES)
        goto too_large;
    if (j->h_n == j->h_cap) {
        size_t nc = j->h_cap ? j->h_cap * 2 : 16;

        j->h_names = xrealloc(j->h_names, nc * sizeof *j->h_names);
        j->h_values = xrealloc(j->h_values, nc * sizeof *j->h_values);
        j->h_cap = nc;
    }
    j->h_names[j->h_n] = xstrndup(ptr, nlen);
    j->h_values[j->h_n] = xstrndup(ptr + vstart, vend - vstart);
    j->h_n++;
    j->h_bytes += len;
    return n;
too_large:
    j->too_large = true;
    return 0; /* aborts the transfer (CURLE_WRITE_ERROR) */
}

static size_t
on_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct outbound_stream *j = ud;
    size_t n = size * nmemb;

    j->body_started = true;
    if (!j->is_stream) {
        if (buf_append(&j->resp_body, ptr, n) != LATCH_OK) {
            j->too_large = true;
            return 0;
        }
        return n;
    }
    if (j->want_pause) {
        /* curl keeps this chunk and hands it to us again after curl_easy_pause(CONT) */
        j->recv_paused = true;
        return CURL_WRITEFUNC_PAUSE;
    }
    if (!j->headers_sent)
        deliver_headers(j);
    if (j->max_response > 0 && (n > j->max_response || j->streamed > j->max_response - n)) {
        j->too_large = true;
        return 0;
    }
    j->streamed += n;
    if (j->cbs.on_data != NULL && !j->cbs.on_data(j->ud, ptr, n))
        j->want_pause = true;
    return n;
}

static size_t
on_read(char *buffer, size_t size, size_t nitems, void *ud)
{
    struct outbound_stream *j = ud;
    size_t max = size * nitems;
    long r;

    if (j->cbs.on_body_read == NULL)
        return CURL_READFUNC_ABORT;
    r = j->cbs.on_body_read(j->ud, buffer, max);
    if (r == 0) {
        j->send_paused = true;
        return CURL_READFUNC_PAUSE;
    }
    if (r == -1)
        return 0;
    if (r < 0 || (size_t)r > max)
        return CURL_READFUNC_ABORT;
    return (size_t)r;
}

/* ------------------------------------------------------------------------------------------ */
/* job construction (any thread) */

#define SETOPT(e, opt, val)                                                                        \
    do {                                                                                           \
        if (cc == CURLE_OK)                                                                        \
            cc = curl_easy_setopt((e), (opt), (val));                                              \
    } while (0)

static latch_rc
build_headers(struct outbound_stream *j, const struct outbound_req *req, bool has_body,
              struct latch_err *err)
{
    size_t total = 0;
    bool have_ct = false, have_expect = false;

    if (req->n_headers > OUTBOUND_MAX_REQ_HEADERS) {
        latch_err_set(err, "too many request headers (max %d)", OUTBOUND_MAX_REQ_HEADERS);
        return LATCH_E_INVAL;
    }
    if (req->n_headers > 0 && req->headers == NULL) {
        latch_err_set(err, "n_headers set without headers");
        return LATCH_E_INVAL;
    }
    for (size_t i = 0; i < req->n_headers; i++) {
        const char *name = req->headers[i].name, *value = req->headers[i].value;
        struct curl_slist *nl;
        char *line;

        if (name == NULL || value == NULL || name[0] == '\0') {
            latch_err_set(err, "request header %zu has no name or value", i);
            return LATCH_E_INVAL;
        }
        for (const char *p = name; *p != '\0'; p++) {
            if (!is_tchar((unsigned char)*p)) {
                latch_err_set(err, "request header %zu: invalid character in name", i);
                return LATCH_E_INVAL;
            }
        }
        /* the value is never echoed: it may be a credential */
        if (!header_value_ok(value)) {
            latch_err_set(err, "request header %zu: control character (CR/LF) in value", i);
            return LATCH_E_INVAL;
        }
        total += strlen(name) + strlen(value) + 4;
        if (total > OUTBOUND_MAX_REQ_HEADER_BYTES) {
            latch_err_set(err, "request headers exceed %d bytes", OUTBOUND_MAX_REQ_HEADER_BYTES);
            return LATCH_E_INVAL;
        }
        if (strcasecmp(name, "Content-Type") == 0)
            have_ct = true;
        if (strcasecmp(name, "Expect") == 0)
            have_expect = true;
        /* curl sends "Name;" as an empty header; "Name:" would remove it */
        line = value[0] == '\0' ? xasprintf("%s;", name) : xasprintf("%s: %s", name, value);
        nl = curl_slist_append(j->req_headers, line);
        explicit_bzero(line, strlen(line));
        free(line);
        if (nl == NULL) {
            latch_err_set(err, "curl_slist_append failed");
            return LATCH_E_NOMEM;
        }
        j->req_headers = nl;
    }
    {
        /* no implicit form Content-Type, no 100-continue round trip */
        const char *extra[2] = {NULL, NULL};

        if (has_body && !have_ct)
            extra[0] = "Content-Type:";
        if (!have_expect)
            extra[1] = "Expect:";
        for (size_t i = 0; i < 2; i++) {
            struct curl_slist *nl;

            if (extra[i] == NULL)
                continue;
            nl = curl_slist_append(j->req_headers, extra[i]);
            if (nl == NULL) {
                latch_err_set(err, "curl_slist_append failed");
                return LATCH_E_NOMEM;
            }
            j->req_headers = nl;
        }
    }
    return LATCH_OK;
}

/*
 * Validates req and builds a job with a configured easy handle. body_len/has_read apply to
 * streams (on_body_read set); plain jobs use req->body.
 */
static latch_rc
job_new(struct outbound *ob, const struct outbound_req *req, const struct outbound_stream_cbs *cbs,
        long long stream_body_len, struct outbound_stream **out, struct latch_err *err)
{
    struct outbound_stream *j = NULL;
    CURLcode cc = CURLE_OK;
    latch_rc rc = LATCH_E_INVAL;
    bool streamed_body = cbs != NULL && cbs->on_body_read != NULL;
    bool has_body;
    const char *protos;
    size_t ca_len = 0;
    CURL *e;

    *out = NULL;
    if (req == NULL || req->url == NULL) {
        latch_err_set(err, "no request or URL");
        goto out;
    }
    if (!method_ok(req->method)) {
        latch_err_set(err, "bad HTTP method");
        goto out;
    }
    if (strlen(req->url) > OUTBOUND_MAX_URL_LEN) {
        latch_err_set(err, "URL longer than %d bytes", OUTBOUND_MAX_URL_LEN);
        goto out;
    }
    if (req->body_len > 0 && req->body == NULL) {
        latch_err_set(err, "body_len set without body");
        goto out;
    }
    if (streamed_body && stream_body_len < -1) {
        latch_err_set(err, "bad stream body length");
        goto out;
    }

    j = xcalloc(1, sizeof *j);
    j->ob = ob;
    atomic_init(&j->refs, 1);
    j->is_stream = cbs != NULL;
    j->follow = req->follow_redirects;
    buf_init(&j->resp_body, req->max_response ? req->max_response : LATCH_MAX_TOKEN_RESPONSE);
    j->max_response = req->max_response;
    if (cbs != NULL)
        j->cbs = *cbs;

    if (netpolicy_url_host(req->url, ob->allow_http, j->host, sizeof j->host, err) != LATCH_OK)
        goto out;

    has_body = streamed_body ? stream_body_len != 0 : req->body_len > 0;
    rc = build_headers(j, req, has_body || strcmp(req->method, "POST") == 0, err);
    if (rc != LATCH_OK)
        goto out;
    rc = LATCH_E_INTERNAL;

    e = curl_easy_init();
    if (e == NULL) {
        latch_err_set(err, "curl_easy_init failed");
        goto out;
    }
    j->easy = e;
    protos = ob->allow_http ? "http,https" : "https";

    SETOPT(e, CURLOPT_URL, req->url);
    SETOPT(e, CURLOPT_PROTOCOLS_STR, protos);
    SETOPT(e, CURLOPT_REDIR_PROTOCOLS_STR, protos);
    SETOPT(e, CURLOPT_FOLLOWLOCATION, req->follow_redirects ? 1L : 0L);
    SETOPT(e, CURLOPT_MAXREDIRS, req->follow_redirects ? OUTBOUND_MAX_REDIRS : 0L);
    SETOPT(e, CURLOPT_NOSIGNAL, 1L);
    SETOPT(e, CURLOPT_CONNECTTIMEOUT_MS,
           req->connect_timeout_ms > 0 ? req->connect_timeout_ms
                                       : (long)LATCH_OUTBOUND_CONNECT_TIMEOUT_MS);
    SETOPT(e, CURLOPT_TIMEOUT_MS,
           req->timeout_ms > 0 ? req->timeout_ms : (long)LATCH_OUTBOUND_TOKEN_TIMEOUT_MS);
    if (req->idle_timeout_ms > 0) {
        SETOPT(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
        SETOPT(e, CURLOPT_LOW_SPEED_TIME,
               req->idle_timeout_ms < 1000 ? 1L : (req->idle_timeout_ms + 999) / 1000);
    }
    SETOPT(e, CURLOPT_SSL_VERIFYPEER, 1L);
    SETOPT(e, CURLOPT_SSL_VERIFYHOST, 2L);
    SETOPT(e, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
    /*
     * No CA directory: with a CApath (Debian's curl sets /etc/ssl/certs by default) curl will not
     * cache the parsed CA store, and OpenSSL 3 then spends ~15 ms of CPU per new connection.
     */
    SETOPT(e, CURLOPT_CAPATH, NULL);
    SETOPT(e, CURLOPT_CA_CACHE_TIMEOUT, 86400L);
    if (destpolicy_ca_path(ob->policy) != NULL) {
        SETOPT(e, CURLOPT_CAINFO, destpolicy_ca_path(ob->policy));
    } else if (destpolicy_ca_pem(ob->policy, &ca_len) != NULL) {
        struct curl_blob blob = {(void *)(uintptr_t)destpolicy_ca_pem(ob->policy, &ca_len), ca_len,
                                 CURL_BLOB_NOCOPY};

        SETOPT(e, CURLOPT_CAINFO_BLOB, &blob);
    }
    /* environment proxies would defeat the connect-time address check */
    SETOPT(e, CURLOPT_PROXY, "");
    if (destpolicy_resolve(ob->policy) != NULL)
        SETOPT(e, CURLOPT_RESOLVE, destpolicy_resolve(ob->policy));
    SETOPT(e, CURLOPT_OPENSOCKETFUNCTION, on_opensocket);
    SETOPT(e, CURLOPT_OPENSOCKETDATA, j);
    SETOPT(e, CURLOPT_PREREQFUNCTION, on_prereq);
    SETOPT(e, CURLOPT_PREREQDATA, j);
    SETOPT(e, CURLOPT_PRIVATE, j);
    SETOPT(e, CURLOPT_ERRORBUFFER, j->errbuf);
    SETOPT(e, CURLOPT_WRITEFUNCTION, on_write);
    SETOPT(e, CURLOPT_WRITEDATA, j);
    SETOPT(e, CURLOPT_HEADERFUNCTION, on_header);
    SETOPT(e, CURLOPT_HEADERDATA, j);
    SETOPT(e, CURLOPT_HTTPHEADER, j->req_headers);
    SETOPT(e, CURLOPT_USERAGENT, "latch/" LATCH_VERSION);
    SETOPT(e, CURLOPT_MAXAGE_CONN, OUTBOUND_CONN_MAXAGE_S);
    SETOPT(e, CURLOPT_TCP_KEEPALIVE, 1L);
    if (!j->is_stream)
        SETOPT(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)j->resp_body.max);
    else
        /* 7.88's HTTP/2 pause handling is young; streams stay on HTTP/1.1 */
        SETOPT(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);

    if (strcmp(req->method, "HEAD") == 0) {
        SETOPT(e, CURLOPT_NOBODY, 1L);
    } else if (has_body || strcmp(req->method, "POST") == 0) {
        SETOPT(e, CURLOPT_POST, 1L);
        if (streamed_body) {
            SETOPT(e, CURLOPT_READFUNCTION, on_read);
            SETOPT(e, CURLOPT_READDATA, j);
            SETOPT(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)stream_body_len);
        } else {
            j->body = req->body_len > 0 ? xmemdup(req->body, req->body_len) : xstrdup("");
            j->body_len = req->body_len;
            SETOPT(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)j->body_len);
            SETOPT(e, CURLOPT_POSTFIELDS, j->body);
        }
        if (strcmp(req->method, "POST") != 0)
            SETOPT(e, CURLOPT_CUSTOMREQUEST, req->method);
    } else if (strcmp(req->method, "GET") == 0) {
        SETOPT(e, CURLOPT_HTTPGET, 1L);
    } else {
        SETOPT(e, CURLOPT_CUSTOMREQUEST, req->method);
    }
    if (cc != CURLE_OK) {
        latch_err_set(err, "curl_easy_setopt: %s", curl_easy_strerror(cc));
        goto out;
    }
    *out = j;
    j = NULL;
    rc = LATCH_OK;
out:
    if (j != NULL)
        job_unref(j);
    return rc;
}

/* Any thread: makes the curl thread's epoll_wait return. */
static void
wake(struct outbound *ob)
{
    uint64_t one = 1;

    /* queued by the embedded instance's own loop thread: no system call, no wake-up */
    if (ob->embedded && ob->has_owner && pthread_equal(pthread_self(), ob->thread)) {
        ob->kick = true;
        return;
    }
    /* EAGAIN means the counter is already non-zero: the thread will wake anyway */
    if (write(ob->wake_fd, &one, sizeof one) < 0 && errno != EAGAIN)
        log_error("outbound wake-up failed", "errno=%d", errno);
}

/* Queues a built job; on failure the job is left to the caller. */
static latch_rc
job_enqueue(struct outbound *ob, struct outbound_stream *j, struct latch_err *err)
{
    latch_rc rc = LATCH_OK;

    pthread_mutex_lock(&ob->mu);
    if (ob->stopping) {
        latch_err_set(err, "outbound is shutting down");
        rc = LATCH_E_UNAVAILABLE;
    } else if (ob->n_jobs >= ob->max_jobs) {
        latch_err_set(err, "outbound queue full (%u jobs)", ob->max_jobs);
        rc = LATCH_E_BUSY;
    } else {
        ob->n_jobs++;
        j->in_next = NULL;
        if (ob->in_tail != NULL)
            ob->in_tail->in_next = j;
        else
            ob->in_head = j;
        ob->in_tail = j;
    }
    pthread_mutex_unlock(&ob->mu);
    if (rc == LATCH_OK)
        wake(ob);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* completion (curl thread) */

/* Copies curl's message without URLs or queries (they may carry secrets). */
static void
clean_error(char *dst, size_t size, const char *host, const char *msg)
{
    struct buf b;
    const char *p = msg;

    buf_init(&b, size > 0 ? size - 1 : 0);
    (void)buf_printf(&b, "%s: ", host);
    while (*p != '\0') {
        size_t wl = strcspn(p, " ");
        bool secret = false;

        for (size_t i = 0; i < wl; i++)
            if (p[i] == '?' || (i + 2 < wl && memcmp(p + i, "://", 3) == 0))
                secret = true;
        if (secret) {
            (void)buf_puts(&b, "<url>");
        } else {
            for (size_t i = 0; i < wl; i++) {
                char c = (unsigned char)p[i] < 0x20 || p[i] == 0x7f ? ' ' : p[i];

                if (buf_append(&b, &c, 1) != LATCH_OK)
                    break;
            }
        }
        p += wl;
        while (*p == ' ') {
            (void)buf_append(&b, " ", 1);
            p++;
        }
    }
    latch_strlcpy(dst, b.data != NULL ? b.data : "", size);
    buf_free(&b);
}

static latch_rc
map_result(struct outbound_stream *j, CURLcode res, char *msg, size_t msg_size)
{
    const char *text = j->errbuf[0] != '\0' ? j->errbuf : curl_easy_strerror(res);

    msg[0] = '\0';
    if (res == CURLE_OK && !j->too_large)
        return LATCH_OK;
    if (j->too_large || res == CURLE_FILESIZE_EXCEEDED) {
        (void)snprintf(msg, msg_size, "%s: response too large", j->host);
        return LATCH_E_TOO_LARGE;
    }
    if (j->denied) {
        latch_strlcpy(msg, "destination address not allowed", msg_size);
        return LATCH_E_DENIED;
    }
    clean_error(msg, msg_size, j->host, text);
    switch (res) {
    case CURLE_OPERATION_TIMEDOUT:
        return LATCH_E_TIMEOUT;
    case CURLE_UNSUPPORTED_PROTOCOL:
        return LATCH_E_DENIED; /* a redirect to a scheme we do not allow */
    case CURLE_TOO_MANY_REDIRECTS:
        return LATCH_E_UPSTREAM;
    case CURLE_URL_MALFORMAT:
    case CURLE_BAD_FUNCTION_ARGUMENT:
    case CURLE_UNKNOWN_OPTION:
    case CURLE_NOT_BUILT_IN:
        return LATCH_E_INTERNAL;
    default:
        /* resolve, connect, TLS, send/recv, empty reply, ...: the network */
        return LATCH_E_UNAVAILABLE;
    }
}

static void
active_unlink(struct outbound *ob, struct outbound_stream *j)
{
    if (!j->active)
        return;
    curl_multi_remove_handle(ob->multi, j->easy);
    if (j->act_prev != NULL)
        j->act_prev->act_next = j->act_next;
    else
        ob->active = j->act_next;
    if (j->act_next != NULL)
        j->act_next->act_prev = j->act_prev;
    j->act_prev = j->act_next = NULL;
    j->active = false;
}

static char *
header_dup(const struct outbound_stream *j, const char *name)
{
    for (size_t i = 0; i < j->h_n; i++)
        if (strcasecmp(j->h_names[i], name) == 0)
            return xstrdup(j->h_values[i]);
    return NULL;
}

/*
 * Ends a job: forced_rc != LATCH_OK overrides curl's result (cancel, shutdown, add failure).
 * Runs the user callback, then drops the job's reference.
 */
static void
job_finish(struct outbound *ob, struct outbound_stream *j, CURLcode res, latch_rc forced_rc,
           const char *forced_msg)
{
    char msg[OUTBOUND_HOST_MAX + 256];
    latch_rc rc;

    active_unlink(ob, j);
    if (forced_rc != LATCH_OK) {
        rc = forced_rc;
        (void)snprintf(msg, sizeof msg, "%s: %s", j->host, forced_msg);
    } else {
        rc = map_result(j, res, msg, sizeof msg);
    }
    if (rc != LATCH_OK)
        log_debug("outbound job failed", "rc=%d", (int)rc);

    pthread_mutex_lock(&ob->mu);
    j->finished = true;
    ob->n_jobs--;
    pthread_mutex_unlock(&ob->mu);

    if (j->is_stream) {
        if (rc == LATCH_OK && !j->headers_sent)
            deliver_headers(j);
        if (j->cbs.on_done != NULL)
            j->cbs.on_done(j->ud, rc, rc == LATCH_OK ? NULL : msg);
    } else {
        struct outbound_resp resp;

        memset(&resp, 0, sizeof resp);
        resp.rc = rc;
        if (j->easy != NULL && (rc == LATCH_OK || j->h_status != 0)) {
            long status = 0;
            double t = 0;

            curl_easy_getinfo(j->easy, CURLINFO_RESPONSE_CODE, &status);
            curl_easy_getinfo(j->easy, CURLINFO_TOTAL_TIME, &t);
            resp.status = status;
            resp.total_time_s = t;
        }
        if (rc == LATCH_OK) {
            if (j->resp_body.len > 0)
                resp.body = buf_steal(&j->resp_body, &resp.body_len);
            resp.content_type = header_dup(j, "Content-Type");
            resp.retry_after = header_dup(j, "Retry-After");
            resp.header_names = j->h_names;
            resp.header_values = j->h_values;
            resp.n_headers = j->h_n;
            j->h_names = j->h_values = NULL;
            j->h_n = j->h_cap = 0;
        }
        latch_strlcpy(resp.error, msg, sizeof resp.error);
        if (j->done != NULL)
            j->done(&resp, j->ud);
        else
            outbound_resp_clear(&resp);
    }
    job_release_resources(j);
    job_unref(j);
}

static void
drain_done(struct outbound *ob)
{
    CURLMsg *m;
    int left;

    while ((m = curl_multi_info_read(ob->multi, &left)) != NULL) {
        char *priv = NULL;
        CURLcode res;

        if (m->msg != CURLMSG_DONE)
            continue;
        res = m->data.result;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
        if (priv != NULL)
            job_finish(ob, (struct outbound_stream *)(void *)priv, res, LATCH_OK, NULL);
    }
}

static void
add_job(struct outbound *ob, struct outbound_stream *j)
{
    CURLMcode mc = curl_multi_add_handle(ob->multi, j->easy);

    if (mc != CURLM_OK) {
        job_finish(ob, j, CURLE_OK, LATCH_E_INTERNAL, curl_multi_strerror(mc));
        return;
    }
    j->active = true;
    j->act_prev = NULL;
    j->act_next = ob->active;
    if (ob->active != NULL)
        ob->active->act_prev = j;
    ob->active = j;
}

static void
run_control(struct outbound *ob, struct outbound_stream *j)
{
    if (!j->active)
        return; /* already finished */
    if (j->run_cancel) {
        job_finish(ob, j, CURLE_OK, LATCH_E_UNAVAILABLE, "cancelled");
        return;
    }
    if (j->run_resume) {
        bool paused = j->recv_paused || j->send_paused;
        CURLcode cc;

        j->want_pause = false;
        j->recv_paused = j->send_paused = false;
        if (paused) {
            /* may call on_write right away with the data held back while paused */
            cc = curl_easy_pause(j->easy, CURLPAUSE_CONT);
            if (cc != CURLE_OK && j->active)
                job_finish(ob, j, cc, LATCH_OK, NULL);
        }
    }
}

/* curl's CURLMOPT_SOCKETFUNCTION: mirror its interest in a socket into the epoll set. */
static int
on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    struct outbound *ob = userp;
    struct epoll_event ev;

    (void)easy;
    (void)socketp;
    if (what == CURL_POLL_REMOVE) {
        /* ENOENT/EBADF: already gone (closed fds leave the set by themselves) */
        (void)epoll_ctl(ob->epoll_fd, EPOLL_CTL_DEL, fd, NULL);
        return 0;
    }
    memset(&ev, 0, sizeof ev);
    ev.events = ((what & CURL_POLL_IN) ? EPOLLIN : 0U) | ((what & CURL_POLL_OUT) ? EPOLLOUT : 0U);
    ev.data.fd = fd;
    if (epoll_ctl(ob->epoll_fd, EPOLL_CTL_MOD, fd, &ev) != 0 &&
        (errno != ENOENT || epoll_ctl(ob->epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0)) {
        log_error("outbound epoll_ctl failed", "errno=%d", errno);
        return -1; /* curl fails the transfers on this socket */
    }
    return 0;
}

/* curl's CURLMOPT_TIMERFUNCTION: remember when to call socket_action(CURL_SOCKET_TIMEOUT). */
static int
on_timer(CURLM *multi, long timeout_ms, void *userp)
{
    struct outbound *ob = userp;

    (void)multi;
    ob->timeout_at = timeout_ms < 0 ? -1 : latch_mono_ms() + timeout_ms;
    return 0;
}

/* Calls on_headers for header blocks that completed in this iteration without body bytes. */
static void
flush_headers(struct outbound *ob)
{
    struct outbound_stream *j = ob->hdr_pending, *next;

    ob->hdr_pending = NULL;
    for (; j != NULL; j = next) {
        next = j->hdr_next;
        j->hdr_next = NULL;
        j->hdr_queued = false;
        if (j->active && !j->headers_sent)
            deliver_headers(j);
        /* the list's reference */
        /* NOLINTNEXTLINE(clang-analyzer-unix.Malloc): refcounted; j still had this ref */
        job_unref(j);
    }
}

/*
 * Waits for sockets, the wake-up fd or curl's timeout, lets curl act on what is ready, then
 * hands over completed header blocks and finished transfers.
 */
/*
 * One look at the sockets: blocking (own thread, up to curl's timeout) or not (embedded; and
 * only when the owner's loop saw the epoll fd readable, poll_fds).
 */
static void
wait_and_act(struct outbound *ob, bool block, bool poll_fds)
{
    struct epoll_event evs[OUTBOUND_EPOLL_EVENTS];
    int64_t wait_ms = OUTBOUND_POLL_MS;
    int running = 0, n = 0;

    if (ob->timeout_at >= 0) {
        int64_t left = ob->timeout_at - latch_mono_ms();

        wait_ms = left < 0 ? 0 : left < OUTBOUND_POLL_MS ? left : OUTBOUND_POLL_MS;
    }
    if (!block)
        wait_ms = 0;
    if (block || poll_fds)
        n = epoll_wait(ob->epoll_fd, evs, OUTBOUND_EPOLL_EVENTS, (int)wait_ms);
    for (int i = 0; i < n; i++) {
        int mask = 0;

        if (evs[i].data.fd == ob->wake_fd) {
            uint64_t cnt;

            (void)!read(ob->wake_fd, &cnt, sizeof cnt);
            continue;
        }
        /* as curl's own poll does: an error or hang-up makes the socket readable and
         * writable, so the transfer's next recv/send reports what happened (a bare
         * CURL_CSELECT_ERR would only say "select/poll returned error") */
        if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
            mask |= CURL_CSELECT_IN;
        if (evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
            mask |= CURL_CSELECT_OUT;
        curl_multi_socket_action(ob->multi, evs[i].data.fd, mask, &running);
    }
    if (ob->timeout_at >= 0 && latch_mono_ms() >= ob->timeout_at) {
        ob->timeout_at = -1;
        curl_multi_socket_action(ob->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    }
    /* before the next iteration's control requests, so a cancel cannot overtake a finish */
    flush_headers(ob);
    drain_done(ob);
}

/*
 * One turn of the loop: new jobs, control requests, then the sockets (wait_and_act). False once
 * stopping: the caller then ends the active jobs (finish_all).
 */
static bool
loop_turn(struct outbound *ob, bool block, bool poll_fds)
{
    {
        struct outbound_stream *in, *run = NULL, **run_tail = &run;
        bool stop;

        pthread_mutex_lock(&ob->mu);
        in = ob->in_head;
        ob->in_head = ob->in_tail = NULL;
        while (ob->ctl_head != NULL) {
            struct outbound_stream *c = ob->ctl_head;

            ob->ctl_head = c->ctl_next;
            c->ctl_next = NULL;
            c->in_ctl = false;
            c->run_cancel = c->cancel_req;
            c->run_resume = c->resume_req;
            c->resume_req = false;
            c->run_next = NULL;
            *run_tail = c;
            run_tail = &c->run_next;
        }
        stop = ob->stopping;
        pthread_mutex_unlock(&ob->mu);

        while (in != NULL) {
            struct outbound_stream *next = in->in_next;

            in->in_next = NULL;
            if (stop)
                job_finish(ob, in, CURLE_OK, LATCH_E_UNAVAILABLE, "shutting down");
            else
                add_job(ob, in);
            in = next;
        }
        while (run != NULL) {
            struct outbound_stream *next = run->run_next;

            if (!stop)
                run_control(ob, run);
            /* the control list's reference: it kept run alive if run_control dropped the job's */
            /* NOLINTNEXTLINE(clang-analyzer-unix.Malloc): refcounted; run still had this ref */
            job_unref(run);
            run = next;
        }
        if (stop)
            return false;
        wait_and_act(ob, block, poll_fds);
    }
    return true;
}

static void
finish_all(struct outbound *ob)
{
    while (ob->active != NULL)
        job_finish(ob, ob->active, CURLE_OK, LATCH_E_UNAVAILABLE, "shutting down");
    flush_headers(ob); /* only drops the list's references: nothing is active any more */
}

static void *
curl_thread_main(void *arg)
{
    struct outbound *ob = arg;

    while (loop_turn(ob, true, true))
        ;
    finish_all(ob);
    return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* public API */

/* Everything but the policy and the thread. */
static latch_rc
outbound_new(struct outbound **out, struct latch_err *err)
{
    struct outbound *ob = xcalloc(1, sizeof *ob);

    *out = ob;
    pthread_mutex_init(&ob->mu, NULL);
    ob->timeout_at = -1;
    ob->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    ob->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (ob->epoll_fd < 0 || ob->wake_fd < 0) {
        latch_err_set(err, "epoll/eventfd: errno %d", errno);
        goto fail;
    }
    {
        struct epoll_event ev;

        memset(&ev, 0, sizeof ev);
        ev.events = EPOLLIN;
        ev.data.fd = ob->wake_fd;
        if (epoll_ctl(ob->epoll_fd, EPOLL_CTL_ADD, ob->wake_fd, &ev) != 0) {
            latch_err_set(err, "epoll_ctl: errno %d", errno);
            goto fail;
        }
    }
    atomic_init(&ob->sockets_opened, 0);
    atomic_init(&ob->sockets_denied, 0);
    ob->multi = curl_multi_init();
    if (ob->multi == NULL) {
        latch_err_set(err, "curl_multi_init failed");
        goto fail;
    }
    curl_multi_setopt(ob->multi, CURLMOPT_MAX_HOST_CONNECTIONS, OUTBOUND_MAX_HOST_CONNECTIONS);
    curl_multi_setopt(ob->multi, CURLMOPT_MAXCONNECTS, OUTBOUND_MAX_CONNECTS);
    curl_multi_setopt(ob->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(ob->multi, CURLMOPT_SOCKETDATA, ob);
    curl_multi_setopt(ob->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(ob->multi, CURLMOPT_TIMERDATA, ob);
    return LATCH_OK;
fail:
    return LATCH_E_INTERNAL;
}

latch_rc
outbound_start(const struct outbound_opts *o, struct outbound **out, struct latch_err *err)
{
    struct outbound *ob;
    latch_rc rc = LATCH_E_INTERNAL;

    *out = NULL;
    if (outbound_new(&ob, err) != LATCH_OK)
        goto fail;
    ob->allow_http = o != NULL && o->allow_http;
    ob->max_jobs = o != NULL && o->max_jobs > 0 ? o->max_jobs : LATCH_OUTBOUND_MAX_JOBS;
    {
        struct destpolicy_opts po = {o != NULL ? o->resolve : NULL, o != NULL ? o->ca_file : NULL,
                                     o != NULL && o->allow_private};

        rc = destpolicy_new(&po, &ob->policy, err);
        if (rc != LATCH_OK)
            goto fail;
    }
    rc = LATCH_E_INTERNAL;
    if (pthread_create(&ob->thread, NULL, curl_thread_main, ob) != 0) {
        latch_err_set(err, "pthread_create failed");
        goto fail;
    }
    ob->thread_started = true;
    log_info("outbound started", "pins=%zu extra_ca=%d allow_http=%d allow_private=%d",
             destpolicy_n_pins(ob->policy), destpolicy_ca_pem(ob->policy, NULL) != NULL,
             ob->allow_http, destpolicy_allow_private(ob->policy));
    *out = ob;
    return LATCH_OK;
fail:
    outbound_stop(ob);
    return rc;
}

latch_rc
outbound_start_embedded(const struct outbound *parent, struct outbound **out, struct latch_err *err)
{
    struct outbound *ob;

    *out = NULL;
    if (outbound_new(&ob, err) != LATCH_OK) {
        outbound_stop(ob);
        return LATCH_E_INTERNAL;
    }
    ob->embedded = true;
    ob->allow_http = parent->allow_http;
    ob->max_jobs = parent->max_jobs;
    ob->policy = parent->policy;
    ob->policy_borrowed = true;
    *out = ob;
    return LATCH_OK;
}

void
outbound_embedded_attach(struct outbound *ob)
{
    ob->thread = pthread_self();
    ob->has_owner = true;
}

int
outbound_embedded_fd(const struct outbound *ob)
{
    return ob->epoll_fd;
}

long
outbound_embedded_timeout_ms(struct outbound *ob)
{
    int64_t left;

    if (ob->kick)
        return 0;
    if (ob->timeout_at < 0)
        return -1;
    left = ob->timeout_at - latch_mono_ms();
    return left <= 0 ? 0 : left > INT32_MAX ? INT32_MAX : (long)left;
}

void
outbound_embedded_run(struct outbound *ob, bool fd_ready)
{
    ob->kick = false;
    if (!loop_turn(ob, false, fd_ready))
        finish_all(ob);
}

void
outbound_shutdown(struct outbound *ob)
{
    if (ob == NULL)
        return;
    pthread_mutex_lock(&ob->mu);
    ob->stopping = true;
    pthread_mutex_unlock(&ob->mu);
    if (ob->embedded && ob->multi != NULL) {
        /* the owner's thread (or no thread any more): fail what is queued and what runs */
        (void)loop_turn(ob, false, false);
        finish_all(ob);
    }
    if (ob->thread_started) {
        wake(ob);
        pthread_join(ob->thread, NULL);
        ob->thread_started = false;
    }
}

void
outbound_stop(struct outbound *ob)
{
    if (ob == NULL)
        return;
    outbound_shutdown(ob);
    if (ob->multi != NULL)
        curl_multi_cleanup(ob->multi); /* may still call on_socket: close the fds after */
    if (ob->wake_fd >= 0)
        (void)close(ob->wake_fd);
    if (ob->epoll_fd >= 0)
        (void)close(ob->epoll_fd);
    if (!ob->policy_borrowed)
        destpolicy_free(ob->policy);
    pthread_mutex_destroy(&ob->mu);
    free(ob);
}

void
outbound_resp_clear(struct outbound_resp *r)
{
    if (r == NULL)
        return;
    if (r->body != NULL) {
        /* token responses carry secrets */
        explicit_bzero(r->body, r->body_len);
        free(r->body);
    }
    free(r->content_type);
    free(r->retry_after);
    for (size_t i = 0; i < r->n_headers; i++) {
        free(r->header_names[i]);
        if (r->header_values[i] != NULL) {
            explicit_bzero(r->header_values[i], strlen(r->header_values[i]));
            free(r->header_values[i]);
        }
    }
    free(r->header_names);
    free(r->header_values);
    memset(r, 0, sizeof *r);
}

static latch_rc
submit_err(struct outbound *ob, const struct outbound_req *req, outbound_done_fn done, void *ud,
           struct latch_err *err)
{
    struct outbound_stream *j = NULL;
    latch_rc rc;

    if (ob == NULL) {
        latch_err_set(err, "no outbound");
        return LATCH_E_INVAL;
    }
    rc = job_new(ob, req, NULL, 0, &j, err);
    if (rc != LATCH_OK)
        return rc;
    j->done = done;
    j->ud = ud;
    rc = job_enqueue(ob, j, err);
    if (rc != LATCH_OK)
        job_unref(j);
    return rc;
}

latch_rc
outbound_submit(struct outbound *ob, const struct outbound_req *req, outbound_done_fn done,
                void *ud)
{
    struct latch_err err = {{0}};
    latch_rc rc = submit_err(ob, req, done, ud, &err);

    if (rc != LATCH_OK)
        log_debug("outbound submit refused", "rc=%d", (int)rc);
    return rc;
}

struct sync_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    struct outbound_resp *out;
};

static void
sync_done(struct outbound_resp *resp, void *ud)
{
    struct sync_wait *w = ud;

    pthread_mutex_lock(&w->mu);
    *w->out = *resp; /* takes ownership of resp's allocations */
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

latch_rc
outbound_fetch_sync(struct outbound *ob, const struct outbound_req *req, struct outbound_resp *out)
{
    struct sync_wait w;
    struct latch_err err = {{0}};
    latch_rc rc;

    memset(out, 0, sizeof *out);
    if (ob != NULL && (ob->thread_started || ob->has_owner) &&
        pthread_equal(pthread_self(), ob->thread)) {
        out->rc = LATCH_E_INTERNAL;
        latch_strlcpy(out->error, "outbound_fetch_sync called on the curl thread",
                      sizeof out->error);
        return out->rc;
    }
    memset(&w, 0, sizeof w);
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    w.out = out;
    rc = submit_err(ob, req, sync_done, &w, &err);
    if (rc != LATCH_OK) {
        out->rc = rc;
        latch_strlcpy(out->error, err.msg, sizeof out->error);
    } else {
        pthread_mutex_lock(&w.mu);
        while (!w.done)
            pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
        rc = out->rc;
    }
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
    return rc;
}

uint64_t
outbound_sockets_opened(const struct outbound *ob)
{
    return atomic_load(&ob->sockets_opened);
}

uint64_t
outbound_sockets_denied(const struct outbound *ob)
{
    return atomic_load(&ob->sockets_denied);
}

/* ------------------------------------------------------------------------------------------ */
/* streams */

/*
 * Proposed for outbound.h: drops the caller's reference taken by outbound_stream_start (when
 * out != NULL). Call exactly once, from any thread, before or after on_done; st must not be
 * used afterwards. Until then resume/cancel on st stay safe even after on_done has run.
 */
void outbound_stream_release(struct outbound_stream *st);

latch_rc
outbound_stream_start(struct outbound *ob, const struct outbound_req *req, long long body_len,
                      const struct outbound_stream_cbs *cbs, void *ud, struct outbound_stream **out)
{
    struct outbound_stream *j = NULL;
    struct latch_err err = {{0}};
    latch_rc rc;

    if (out != NULL)
        *out = NULL;
    if (ob == NULL || cbs == NULL)
        return LATCH_E_INVAL;
    rc = job_new(ob, req, cbs, body_len, &j, &err);
    if (rc != LATCH_OK) {
        log_debug("outbound stream refused", "rc=%d", (int)rc);
        return rc;
    }
    j->ud = ud;
    if (out != NULL)
        job_ref(j); /* the caller's handle */
    rc = job_enqueue(ob, j, &err);
    if (rc != LATCH_OK) {
        /* never queued: no other thread has seen j, so it is freed whatever its count */
        job_release_resources(j);
        free(j);
        return rc;
    }
    if (out != NULL)
        *out = j;
    return LATCH_OK;
}

static void
stream_control(struct outbound_stream *st, bool cancel)
{
    struct outbound *ob;
    bool want_wake = false;

    if (st == NULL)
        return;
    ob = st->ob;
    pthread_mutex_lock(&ob->mu);
    if (!st->finished && !ob->stopping) {
        if (cancel)
            st->cancel_req = true;
        else
            st->resume_req = true;
        if (!st->in_ctl) {
            st->in_ctl = true;
            job_ref(st); /* the control list's reference */
            st->ctl_next = ob->ctl_head;
            ob->ctl_head = st;
        }
        want_wake = true;
    }
    pthread_mutex_unlock(&ob->mu);
    if (want_wake)
        wake(ob);
}

void
outbound_stream_resume(struct outbound_stream *st)
{
    stream_control(st, false);
}

void
outbound_stream_cancel(struct outbound_stream *st)
{
    stream_control(st, true);
}

void
outbound_stream_release(struct outbound_stream *st)
{
    if (st != NULL)
        job_unref(st);
}
