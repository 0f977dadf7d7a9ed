/*
 * test_outbound.c - outbound HTTP against an in-process libmicrohttpd server on 127.0.0.1.
 *
 * Routes of the test server:
 *   /ping                 200 "pong"
 *   /echo?status=N        echoes the body; X-Method, X-Test-Echo (from X-Test), X-Got-CT
 *   /retry                429 with Retry-After: 120
 *   /sleep?ms=N           sleeps, then 200
 *   /big?n=N              N pattern bytes with Content-Length
 *   /chunked?n=N          N pattern bytes, chunked (no Content-Length)
 *   /upload               "len=L sum=S" of the request body
 *   /redirect?to=URL      302 to URL
 */
#include <sys/epoll.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <microhttpd.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "net/outbound.h"
#include "util/xalloc.h"

/* Proposed addition to outbound.h (implemented in outbound.c); harmless if already declared. */
void outbound_stream_release(struct outbound_stream *st);

#define BIG_STREAM_BYTES (50ULL * 1024 * 1024)
#define UPLOAD_BYTES (1024 * 1024)

static struct MHD_Daemon *srv;
static unsigned srv_port;
static atomic_uint srv_hits;

static unsigned char
pattern(uint64_t i)
{
    return (unsigned char)((i * 7 + 3) & 0xff);
}

/* ------------------------------------------------------------------------------------------ */
/* test server */

struct srv_req {
    char *body;
    size_t len, cap;
    uint64_t sum;
    uint64_t total;
};

static ssize_t
pattern_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    uint64_t n = *(uint64_t *)cls;
    size_t k;

    if (pos >= n)
        return MHD_CONTENT_READER_END_OF_STREAM;
    if (max > n - pos)
        max = (size_t)(n - pos);
    for (k = 0; k < max; k++)
        buf[k] = (char)pattern(pos + k);
    return (ssize_t)k;
}

static long
query_long(struct MHD_Connection *c, const char *key, long dflt)
{
    const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, key);

    return v != NULL ? strtol(v, NULL, 10) : dflt;
}

static enum MHD_Result
send_text(struct MHD_Connection *c, unsigned status, const char *text)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), (void *)(uintptr_t)text,
                                                             MHD_RESPMEM_MUST_COPY);
    enum MHD_Result ret;

    MHD_add_response_header(r, "Content-Type", "text/plain");
    ret = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result
handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
        const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
    struct srv_req *rq = *con_cls;
    struct MHD_Response *r;
    enum MHD_Result ret;

    (void)cls;
    (void)version;
    if (rq == NULL) {
        rq = xcalloc(1, sizeof *rq);
        *con_cls = rq;
        return MHD_YES;
    }
    if (*upload_size > 0) {
        for (size_t i = 0; i < *upload_size; i++)
            rq->sum += (unsigned char)upload[i];
        rq->total += *upload_size;
        if (strcmp(url, "/echo") == 0 && rq->len + *upload_size < 4 * 1024 * 1024) {
            if (rq->len + *upload_size > rq->cap) {
                rq->cap = (rq->len + *upload_size) * 2;
                rq->body = xrealloc(rq->body, rq->cap);
            }
            memcpy(rq->body + rq->len, upload, *upload_size);
            rq->len += *upload_size;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    atomic_fetch_add(&srv_hits, 1);

    if (strcmp(url, "/ping") == 0)
        return send_text(c, 200, "pong");
    if (strcmp(url, "/echo") == 0) {
        const char *xt = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Test");
        const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");

        r = MHD_create_response_from_buffer(rq->len, rq->body != NULL ? rq->body : (void *)"",
                                            MHD_RESPMEM_MUST_COPY);
        MHD_add_response_header(r, "Content-Type", "text/plain");
        MHD_add_response_header(r, "X-Method", method);
        MHD_add_response_header(r, "X-Got-CT", ct != NULL ? ct : "none");
        if (xt != NULL)
            MHD_add_response_header(r, "X-Test-Echo", xt);
        ret = MHD_queue_response(c, (unsigned)query_long(c, "status", 200), r);
        MHD_destroy_response(r);
        return ret;
    }
    if (strcmp(url, "/retry") == 0) {
        r = MHD_create_response_from_buffer(4, (void *)"slow", MHD_RESPMEM_PERSISTENT);
        MHD_add_response_header(r, "Retry-After", "120");
        ret = MHD_queue_response(c, 429, r);
        MHD_destroy_response(r);
        return ret;
    }
    if (strcmp(url, "/sleep") == 0) {
        usleep((useconds_t)query_long(c, "ms", 100) * 1000);
        return send_text(c, 200, "slept");
    }
    if (strcmp(url, "/big") == 0 || strcmp(url, "/chunked") == 0) {
        uint64_t *n = xmalloc(sizeof *n);

        *n = (uint64_t)query_long(c, "n", 0);
        r = MHD_create_response_from_callback(strcmp(url, "/big") == 0 ? *n : MHD_SIZE_UNKNOWN,
                                              32 * 1024, pattern_reader, n, free);
        ret = MHD_queue_response(c, 200, r);
        MHD_destroy_response(r);
        return ret;
    }
    if (strcmp(url, "/upload") == 0) {
        char text[128];

        snprintf(text, sizeof text, "len=%llu sum=%llu", (unsigned long long)rq->total,
                 (unsigned long long)rq->sum);
        return send_text(c, 200, text);
    }
    if (strcmp(url, "/redirect") == 0) {
        const char *to = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "to");

        r = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
        MHD_add_response_header(r, "Location", to != NULL ? to : "/ping");
        ret = MHD_queue_response(c, 302, r);
        MHD_destroy_response(r);
        return ret;
    }
    return send_text(c, 404, "no such route");
}

static void
completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode t)
{
    struct srv_req *rq = *con_cls;

    (void)cls;
    (void)c;
    (void)t;
    if (rq != NULL) {
        free(rq->body);
        free(rq);
    }
    *con_cls = NULL;
}

static int
group_setup(void **state)
{
    struct sockaddr_in sin;
    const union MHD_DaemonInfo *di;

    (void)state;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    srv = MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0,
        NULL, NULL, handler, NULL, MHD_OPTION_SOCK_ADDR, &sin, MHD_OPTION_NOTIFY_COMPLETED,
        completed, NULL, MHD_OPTION_CONNECTION_LIMIT, 1000U, MHD_OPTION_END);
    if (srv == NULL)
        return -1;
    di = MHD_get_daemon_info(srv, MHD_DAEMON_INFO_BIND_PORT);
    if (di == NULL || di->port == 0)
        return -1;
    srv_port = di->port;
    return 0;
}

static int
group_teardown(void **state)
{
    (void)state;
    MHD_stop_daemon(srv);
    curl_global_cleanup();
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* helpers */

static struct outbound *
start_ob(bool allow_private, bool allow_http, const char *resolve, unsigned max_jobs)
{
    struct outbound_opts o = {0};
    struct outbound *ob = NULL;
    struct latch_err err = {{0}};

    o.allow_private = allow_private;
    o.allow_http = allow_http;
    o.resolve = resolve;
    o.max_jobs = max_jobs;
    if (outbound_start(&o, &ob, &err) != LATCH_OK)
        fail_msg("outbound_start: %s", err.msg);
    return ob;
}

static char *
url_for(const char *host, const char *path)
{
    static _Thread_local char u[512];

    snprintf(u, sizeof u, "http://%s:%u%s", host, srv_port, path);
    return u;
}

static const char *
resp_header(const struct outbound_resp *r, const char *name)
{
    for (size_t i = 0; i < r->n_headers; i++)
        if (strcasecmp(r->header_names[i], name) == 0)
            return r->header_values[i];
    return NULL;
}

static latch_rc
fetch(struct outbound *ob, const char *method, const char *url, struct outbound_resp *resp)
{
    struct outbound_req req = {0};

    req.method = method;
    req.url = url;
    return outbound_fetch_sync(ob, &req, resp);
}

/* ------------------------------------------------------------------------------------------ */
/* plain requests */

static void
test_roundtrip(void **state)
{
    struct outbound *ob = start_ob(true, true, NULL, 0);
    struct outbound_resp r;
    struct outbound_req req = {0};
    static const char body[] = "hello \0 world"; /* embedded NUL survives */

    (void)state;
    assert_int_equal(fetch(ob, "GET", url_for("127.0.0.1", "/ping"), &r), LATCH_OK);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 4);
    assert_memory_equal(r.body, "pong", 4);
    assert_string_equal(r.content_type, "text/plain");
    assert_string_equal(r.error, "");
    assert_true(r.total_time_s >= 0);
    outbound_resp_clear(&r);

    for (size_t m = 0; m < 3; m++) {
        const char *methods[] = {"POST", "PUT", "PATCH"};

        req.method = methods[m];
        req.url = url_for("127.0.0.1", "/echo");
        req.body = body;
        req.body_len = sizeof body;
        assert_int_equal(outbound_fetch_sync(ob, &req, &r), LATCH_OK);
        assert_int_equal(r.status, 200);
        assert_int_equal(r.body_len, sizeof body);
        assert_memory_equal(r.body, body, sizeof body);
        assert_string_equal(resp_header(&r, "X-Method"), methods[m]);
        /* no implicit application/x-www-form-urlencoded */
        assert_string_equal(resp_header(&r, "X-Got-CT"), "none");
        outbound_resp_clear(&r);
    }

    assert_int_equal(fetch(ob, "DELETE", url_for("127.0.0.1", "/echo"), &r), LATCH_OK);
    assert_string_equal(resp_header(&r, "X-Method"), "DELETE");
    assert_null(r.body);
    outbound_resp_clear(&r);

    assert_int_equal(fetch(ob, "HEAD", url_for("127.0.0.1", "/ping"), &r), LATCH_OK);
    assert_int_equal(r.status, 200);
    assert_null(r.body);
    outbound_resp_clear(&r);

    /* empty POST */
    memset(&req, 0, sizeof req);
    req.method = "POST";
    req.url = url_for("127.0.0.1", "/echo");
    assert_int_equal(outbound_fetch_sync(ob, &req, &r), LATCH_OK);
    assert_string_equal(resp_header(&r, "X-Method"), "POST");
    assert_string_equal(resp_header(&r, "X-Got-CT"), "none");
    assert_int_equal(r.body_len, 0);
    outbound_resp_clear(&r);
    outbound_stop(ob);
}

static void
test_headers(void **state)
{
    struct outbound *ob = start_ob(true, true, NULL, 0);
    struct outbound_header h[] = {
        {"X-Test", "hello there"}, {"Content-Type", "application/json"}, {"X-Empty", ""}};
    struct outbound_req req = {0};
    struct outbound_resp r;

    (void)state;
    req.method = "POST";
    req.url = url_for("127.0.0.1", "/echo");
    req.headers = h;
    req.n_headers = 3;
    req.body = "{}";
    req.body_len = 2;
    assert_int_equal(outbound_fetch_sync(ob, &req, &r), LATCH_OK);
    assert_string_equal(resp_header(&r, "X-Test-Echo"), "hello there");
    assert_string_equal(resp_header(&r, "X-Got-CT"), "application/json");
    assert_string_equal(resp_header(&r, "Content-Type"), "text/plain");
    assert_string_equal(r.content_type, "text/plain");
    assert_true(r.n_headers >= 4);
    outbound_resp_clear(&r);
    outbound_stop(ob);
}

static void
test_status_passthrough(void **state)
{
    struct outbound *ob = start_ob(true, true, NULL, 0);
    const long codes[] = {200, 201, 204, 400, 404, 500, 503};

    (void)state;
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        char path[64];
        struct outbound_resp r;

        snprintf(path, sizeof path, "/echo?status=%ld", codes[i]);
        assert_int_equal(fetch(ob, "GET", url_for("127.0.0.1", path), &r), LATCH_OK);
        assert_int_equal(r.rc, LATCH_OK);
        assert_int_equal(r.status, codes[i]);
        outbound_resp_clear(&r);
    }
    outbound_stop(ob);
}

static void
test_retry_after(void **state)
{
    struct outbound *ob = start_ob(true, true, NULL, 0);
    struct outbound_resp r;

    (void)state;
    assert_int_equal(fetch(ob, "GET", url_for("127.0.0.1", "/retry"), &r), LATCH_OK);
    assert_int_equal(r.status, 429);
    assert_non_null(r.retry_after);
    assert_string_equal(r.retry_after, "120");
    assert_int_equal(r.body_len, 4);
    outbound_resp_clear(&r);
    outbound_stop(ob);
}

static void
test_timeout(void **state)
{
    struct outbound *ob = start_ob(true, true, NULL, 0);
    struct outbound_req req = {0};
    struct outbound_resp r;
    struct timespec t0, t1;
    double el;

    (void)state;
    req.method = "GET";
    req.url = url_for("127.0.0.1", "/sleep?ms=1500&secret=hunter2");
    req.timeout_ms = 200;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(outbound_fetch_sync(ob, &req, &r), LATCH_E_TIMEOUT);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    el = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    /* under 0.8 s: curl's own deadline (CURLMOPT_TIMERFUNCTION) fired, not the loop's 1 s
     * fallback wake-up */
    assert_true(el < 0.8);
    assert_int_equal(r.rc, LATCH_E_TIMEOUT);
    assert_true(r.error[0] != '\0');
    assert_null(strstr(r.error, "hunter2"));
    assert_null(strstr(r.error, "?"));
    assert_non_null(strstr(r.error, "127.0.0.1"));
    assert_null(r.body);
    outbound_resp_clear(&r);
    outbound_stop(ob);
}

static void
test_response_cap(void **state)
{
    struct outbound *ob = start_ob(true, true, NULL, 0);
    struct outbound_req req = {0};
    struct outbound_resp r;
    const char *paths[] = {"/big?n=100000", "/chunked?n=100000"};

    (void)state;
    req.method = "GET";
    req.max_response = 1000;
    for (size_t i = 0; i < 2; i++) {
        req.url = url_for("127.0.0.1", paths[i]);
        assert_int_equal(outbound_fetch_sync(ob, &req, &r), LATCH_E_TOO_LARGE);
        assert_null(r.body);
        outbound_resp_clear(&r);
    }
    /* exactly at the cap is fine */
    req.url = url_for("127.0.0.1", "/chunked?n=1000");
    assert_int_equal(outbound_fetch_sync(ob, &req, &r), LATCH_OK);
    assert_int_equal(r.body_len, 1000);
    for (size_t i = 0; i < 1000; i++)
        assert_int_equal((unsigned char)r.body[i], pattern(i));
    outbound_resp_clear(&r);
    outbound_stop(ob);
}

static void
test_conn_refused(void **state)
{
    struct outbound *ob = start_ob(true, true, NULL, 0);
    struct sockaddr_in sin;
    socklen_t sl = sizeof sin;
    struct outbound_resp r;
    char url[128];
    int fd;

    (void)state;
    /* a port that was just free */
    fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
    close(fd);
    snprintf(url, sizeof url, "http://127.0.0.1:%u/x?token=abc", ntohs(sin.sin_port));
    assert_int_equal(fetch(ob, "GET", url, &r), LATCH_E_UNAVAILABLE);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.error, "127.0.0.1"));
    assert_null(strstr(r.error, "token"));
    outbound_resp_clear(&r);
    outbound_stop(ob);
}

/* ------------------------------------------------------------------------------------------ */
/* policy */

static void
test_ssrf_denied(void **state)
{
    struct outbound *ob = start_ob(false, true, NULL, 0);
    unsigned hits = atomic_load(&srv_hits);
    const char *hosts[] = {"127.0.0.1",          "localhost", "[::1]",
                           "[::ffff:127.0.0.1]", "127.1",     "2130706433"};
    struct outbound_resp r;

    (void)state;
    for (size_t i = 0; i < sizeof hosts / sizeof hosts[0]; i++) {
        assert_int_equal(fetch(ob, "GET", url_for(hosts[i], "/ping"), &r), LATCH_E_DENIED);
        assert_string_equal(r.error, "destination address not allowed");
        assert_int_equal(r.status, 0);
        outbound_resp_clear(&r);
    }
    assert_int_equal(outbound_sockets_opened(ob), 0);
    assert_true(outbound_sockets_denied(ob) >= sizeof hosts / sizeof hosts[0]);
    assert_int_equal(atomic_load(&srv_hits), hits);
    outbound_stop(ob);
}

static void
test_ssrf_pinned(void **state)
{
    char resolve[128], to[256], path[300];
    struct outbound *ob;
    struct outbound_req req = {0};
    struct outbound_resp r;

    (void)state;
    snprintf(resolve, sizeof resolve, "other.example:1:10.0.0.1, testhost.example:%u:127.0.0.1",
             srv_port);
    ob = start_ob(false, true, resolve, 0);

    assert_int_equal(fetch(ob, "GET", url_for("testhost.example", "/ping"), &r), LATCH_OK);
    assert_int_equal(r.status, 200);
    assert_memory_equal(r.body, "pong", 4);
    outbound_resp_clear(&r);
    assert_int_equal(outbound_sockets_opened(ob), 1);
    assert_int_equal(outbound_sockets_denied(ob), 0);

    /* the same address under its own name is not pinned */
    assert_int_equal(fetch(ob, "GET", url_for("127.0.0.1", "/ping"), &r), LATCH_E_DENIED);
    outbound_resp_clear(&r);

    /* a redirect from the pinned host to an unpinned internal one is judged on its own */
    snprintf(to, sizeof to, "http://127.0.0.1:%u/ping", srv_port);
    snprintf(path, sizeof path, "/redirect?to=%s", to);
    req.method = "GET";
    req.url = url_for("testhost.example", path);
    req.follow_redirects = true;
    assert_int_equal(outbound_fetch_sync(ob, &req, &r), LATCH_E_DENIED);
    outbound_resp_clear(&r);

    /* without follow_redirects the 302 itself is the answer */
    req.follow_redirects = false;
    assert_int_equal(outbound_fetch_sync(ob, &req, &r), LATCH_OK);
    assert_int_equal(r.status, 302);
    outbound_resp_clear(&r);

    /* redirect within the pinned host is fine */
    snprintf(path, sizeof path, "/redirect?to=/ping");
    req.url = url_for("testhost.example", path);
    req.follow_redirects = true;
    assert_int_equal(outbound_fetch_sync(ob, &req, &r), LATCH_OK);
    assert_int_equal(r.status, 200);
    assert_memory_equal(r.body, "pong", 4);
    outbound_resp_clear(&r);
    outbound_stop(ob);
}

static void
test_bad_opts(void **state)
{
    const char *bad_resolve[] = {"nonsense",          "host:80", "host:0:1.2.3.4",
                                 "host:80:999.1.1.1", "1.2.3.4", "+host:80:1.2.3.4",
                                 "ho st:80:1.2.3.4"};
    struct outbound_opts o = {0};
    struct outbound *ob = NULL;
    struct latch_err err = {{0}};
    char tmp[] = "/tmp/latch_test_ca_XXXXXX";
    int fd;

    (void)state;
    for (size_t i = 0; i < sizeof bad_resolve / sizeof bad_resolve[0]; i++) {
        o.resolve = bad_resolve[i];
        if (outbound_start(&o, &ob, &err) != LATCH_E_INVAL)
            fail_msg("resolve '%s' accepted", bad_resolve[i]);
        assert_null(ob);
    }
    o.resolve = "a.example:443:1.2.3.4,5.6.7.8 b.example:80:[::1]";
    assert_int_equal(outbound_start(&o, &ob, &err), LATCH_OK);
    outbound_stop(ob);
    ob = NULL;
    o.resolve = NULL;

    o.ca_file = "/nonexistent/ca.pem";
    assert_int_not_equal(outbound_start(&o, &ob, &err), LATCH_OK);
    assert_null(ob);
    fd = mkstemp(tmp);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "not a certificate\n", 18), 18);
    close(fd);
    o.ca_file = tmp;
    assert_int_equal(outbound_start(&o, &ob, &err), LATCH_E_INVAL);
    unlink(tmp);
    o.ca_file = "/etc/ssl/certs/ca-certificates.crt";
    if (access(o.ca_file, R_OK) == 0) {
        assert_int_equal(outbound_start(&o, &ob, &err), LATCH_OK);
        outbound_stop(ob);
    }
    outbound_stop(NULL);
}

static void
test_submit_rejects(void **state)
{
    struct outbound *https_only = start_ob(true, false, NULL, 0);
    struct outbound *ob = start_ob(true, true, NULL, 0);
    struct outbound_header crlf[] = {{"X-A", "b\r\nX-Evil: 1"}};
    struct outbound_header lf[] = {{"X-A", "b\nc"}};
    struct outbound_header badname[] = {{"X-A:", "b"}};
    struct outbound_header spacename[] = {{"X A", "b"}};
    struct outbound_header crname[] = {{"X-A\r\nX-B", "b"}};
    struct outbound_header emptyname[] = {{"", "b"}};
    struct outbound_header nullval[] = {{"X-A", NULL}};
    struct {
        struct outbound *ob;
        const char *method;
        const char *url;
        const struct outbound_header *h;
    } cases[] = {
        {https_only, "GET", "http://example.com/", NULL},
        {https_only, "GET", "HTTP://example.com/", NULL},
        {https_only, "GET", "ftp://example.com/", NULL},
        {ob, "GET", "file:///etc/passwd", NULL},
        {ob, "GET", "gopher://example.com/", NULL},
        {ob, "GET", "/relative", NULL},
        {ob, "GET", "http://user:pw@example.com/", NULL},
        {ob, "GET", "", NULL},
        {ob, "GET", NULL, NULL},
        {ob, "get", "http://example.com/", NULL},
        {ob, "G ET", "http://example.com/", NULL},
        {ob, "GET\r\n", "http://example.com/", NULL},
        {ob, "", "http://example.com/", NULL},
        {ob, NULL, "http://example.com/", NULL},
        {ob, "GET", "http://example.com/", crlf},
        {ob, "GET", "http://example.com/", lf},
        {ob, "GET", "http://example.com/", badname},
        {ob, "GET", "http://example.com/", spacename},
        {ob, "GET", "http://example.com/", crname},
        {ob, "GET", "http://example.com/", emptyname},
        {ob, "GET", "http://example.com/", nullval},
    };

    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct outbound_req req = {0};
        struct outbound_resp r;
        latch_rc rc;

        req.method = cases[i].method;
        req.url = cases[i].url;
        req.headers = cases[i].h;
        req.n_headers = cases[i].h != NULL ? 1 : 0;
        rc = outbound_submit(cases[i].ob, &req, NULL, NULL);
        if (rc != LATCH_E_INVAL)
            fail_msg("case %zu: submit rc %d", i, rc);
        assert_int_equal(outbound_fetch_sync(cases[i].ob, &req, &r), LATCH_E_INVAL);
        assert_int_equal(r.rc, LATCH_E_INVAL);
        assert_true(r.error[0] != '\0');
        /* the header value is never echoed into the error */
        assert_null(strstr(r.error, "Evil"));
        outbound_resp_clear(&r);
    }
    assert_int_equal(outbound_sockets_opened(https_only), 0);
    assert_int_equal(outbound_sockets_opened(ob), 0);
    outbound_stop(https_only);
    outbound_stop(ob);
}

/* ------------------------------------------------------------------------------------------ */
/* concurrency and bounds */

struct counter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    unsigned done, ok, failed;
    latch_rc last_rc;
};

static void
count_done(struct outbound_resp *resp, void *ud)
{
    struct counter *c = ud;

    pthread_mutex_lock(&c->mu);
    if (resp->rc == LATCH_OK && resp->status == 200 && resp->body_len == 4 &&
        memcmp(resp->body, "pong", 4) == 0)
        c->ok++;
    else
        c->failed++;
    c->last_rc = resp->rc;
    c->done++;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    outbound_resp_clear(resp);
}

static void
counter_wait(struct counter *c, unsigned n)
{
    struct timespec dl;

    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 60;
    pthread_mutex_lock(&c->mu);
    while (c->done < n)
        if (pthread_cond_timedwait(&c->cv, &c->mu, &dl) != 0)
            break;
    pthread_mutex_unlock(&c->mu);
}

static void
test_concurrent(void **state)
{
    struct outbound *ob = start_ob(true, true, NULL, 0);
    struct counter c = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, LATCH_OK};
    struct outbound_req req = {0};

    (void)state;
    req.method = "GET";
    req.url = url_for("127.0.0.1", "/ping");
    for (int i = 0; i < 200; i++)
        assert_int_equal(outbound_submit(ob, &req, count_done, &c), LATCH_OK);
    counter_wait(&c, 200);
    assert_int_equal(c.done, 200);
    assert_int_equal(c.ok, 200);
    assert_int_equal(c.failed, 0);
    /* keep-alive: once the pool is warm, further requests open no new socket */
    {
        uint64_t opened = outbound_sockets_opened(ob);

        for (int i = 0; i < 20; i++) {
            struct outbound_resp r;

            assert_int_equal(outbound_fetch_sync(ob, &req, &r), LATCH_OK);
            assert_int_equal(r.status, 200);
            outbound_resp_clear(&r);
        }
        assert_true(outbound_sockets_opened(ob) == opened);
    }
    outbound_stop(ob);
}

static void
test_busy(void **state)
{
    struct outbound *ob = start_ob(true, true, NULL, 2);
    struct counter c = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, LATCH_OK};
    struct outbound_req req = {0};
    struct outbound_resp r;

    (void)state;
    req.method = "GET";
    req.url = url_for("127.0.0.1", "/sleep?ms=300");
    assert_int_equal(outbound_submit(ob, &req, count_done, &c), LATCH_OK);
    assert_int_equal(outbound_submit(ob, &req, count_done, &c), LATCH_OK);
    assert_int_equal(outbound_submit(ob, &req, count_done, &c), LATCH_E_BUSY);
    assert_int_equal(outbound_fetch_sync(ob, &req, &r), LATCH_E_BUSY);
    outbound_resp_clear(&r);
    counter_wait(&c, 2);
    assert_int_equal(c.done, 2);
    /* the bound frees up as jobs complete */
    req.url = url_for("127.0.0.1", "/ping");
    assert_int_equal(fetch(ob, "GET", req.url, &r), LATCH_OK);
    outbound_resp_clear(&r);
    outbound_stop(ob);
}

static void
test_stop_fails_pending(void **state)
{
    struct outbound *ob = start_ob(true, true, NULL, 0);
    struct counter c = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, LATCH_OK};
    struct outbound_req req = {0};

    (void)state;
    req.method = "GET";
    req.url = url_for("127.0.0.1", "/sleep?ms=800");
    for (int i = 0; i < 5; i++)
        assert_int_equal(outbound_submit(ob, &req, count_done, &c), LATCH_OK);
    usleep(100 * 1000);
    outbound_stop(ob);
    /* every callback ran before outbound_stop returned */
    assert_int_equal(c.done, 5);
    assert_int_equal(c.failed, 5);
    assert_int_equal(c.last_rc, LATCH_E_UNAVAILABLE);
}

/* ------------------------------------------------------------------------------------------ */
/* streaming */

struct sink {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct outbound_stream *st;
    uint64_t got;
    uint64_t bad_bytes;
    size_t max_chunk;
    unsigned chunks, pauses, calls_while_paused, done_calls, header_calls;
    long status;
    bool paused, done, quit;
    latch_rc rc;
    char error[256];
    unsigned pause_every;
    uint64_t cancel_after;
};

static void
sink_headers(void *ud, long status, char **names, char **values, size_t n)
{
    struct sink *s = ud;

    (void)names;
    (void)values;
    (void)n;
    pthread_mutex_lock(&s->mu);
    s->status = status;
    s->header_calls++;
    pthread_mutex_unlock(&s->mu);
}

static bool
sink_data(void *ud, const char *data, size_t len)
{
    struct sink *s = ud;
    bool more = true;

    pthread_mutex_lock(&s->mu);
    if (s->paused)
        s->calls_while_paused++;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)data[i] != pattern(s->got + i))
            s->bad_bytes++;
    s->got += len;
    if (len > s->max_chunk)
        s->max_chunk = len;
    s->chunks++;
    if (s->pause_every > 0 && s->chunks % s->pause_every == 0) {
        s->paused = true;
        s->pauses++;
        more = false;
        pthread_cond_broadcast(&s->cv);
    }
    if (s->cancel_after > 0 && s->got >= s->cancel_after && s->st != NULL) {
        s->cancel_after = 0;
        outbound_stream_cancel(s->st);
    }
    pthread_mutex_unlock(&s->mu);
    return more;
}

static void
sink_done(void *ud, latch_rc rc, const char *error)
{
    struct sink *s = ud;

    pthread_mutex_lock(&s->mu);
    s->done_calls++;
    s->done = true;
    s->rc = rc;
    snprintf(s->error, sizeof s->error, "%s", error != NULL ? error : "");
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* The "network side" of the sink: drains and resumes from another thread. */
static void *
resumer_main(void *arg)
{
    struct sink *s = arg;

    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->paused && !s->done && !s->quit)
            pthread_cond_wait(&s->cv, &s->mu);
        if (s->done || s->quit)
            break;
        s->paused = false;
        pthread_mutex_unlock(&s->mu);
        outbound_stream_resume(s->st);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static void
sink_wait_done(struct sink *s)
{
    struct timespec dl;

    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 120;
    pthread_mutex_lock(&s->mu);
    while (!s->done)
        if (pthread_cond_timedwait(&s->cv, &s->mu, &dl) != 0)
            break;
    pthread_mutex_unlock(&s->mu);
}

static void
sink_init(struct sink *s)
{
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
}

static void
sink_destroy(struct sink *s)
{
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
}

static const struct outbound_stream_cbs sink_cbs = {sink_headers, sink_data, NULL, sink_done};

static void
test_stream_download(void **state)
{
    struct outbound *ob = start_ob(true, true, NULL, 0);
    struct outbound_req req = {0};
    struct sink s;
    pthread_t th;
    char path[64];

    (void)state;
    sink_init(&s);
    s.pause_every = 4;
    snprintf(path, sizeof path, "/big?n=%llu", (unsigned long long)BIG_STREAM_BYTES);
    req.method = "GET";
    req.url = url_for("127.0.0.1", path);
    req.timeout_ms = 120000;
    pthread_mutex_lock(&s.mu);
    assert_int_equal(outbound_stream_start(ob, &req, 0, &sink_cbs, &s, &s.st), LATCH_OK);
    pthread_mutex_unlock(&s.mu);
    assert_non_null(s.st);
    assert_int_equal(pthread_create(&th, NULL, resumer_main, &s), 0);
    sink_wait_done(&s);
    pthread_join(th, NULL);

    assert_true(s.done);
    assert_int_equal(s.rc, LATCH_OK);
    assert_int_equal(s.done_calls, 1);
    assert_int_equal(s.header_calls, 1);
    assert_int_equal(s.status, 200);
    assert_true(s.got == BIG_STREAM_BYTES);
    assert_true(s.bad_bytes == 0);
    /* back-pressure held: nothing arrived while the sink was full, chunks stay small */
    assert_int_equal(s.calls_while_paused, 0);
    assert_true(s.pauses > 100);
    assert_true(s.max_chunk <= CURL_MAX_WRITE_SIZE);

    /* resume/cancel after on_done are harmless while the handle is held */
    outbound_stream_resume(s.st);
    outbound_stream_cancel(s.st);
    outbound_stream_release(s.st);
    sink_destroy(&s);
    outbound_stop(ob);
}

/* a full queue refuses a stream at once, with or without a handle, and runs no callback */
static void
test_stream_busy(void **state)
{
    struct outbound *ob = start_ob(true, true, NULL, 1);
    struct counter c = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, LATCH_OK};
    struct outbound_req req = {0};
    struct outbound_stream *st = NULL;
    struct sink s;

    (void)state;
    sink_init(&s);
    req.method = "GET";
    req.url = url_for("127.0.0.1", "/sleep?ms=300");
    assert_int_equal(outbound_submit(ob, &req, count_done, &c), LATCH_OK);
    assert_int_equal(outbound_stream_start(ob, &req, 0, &sink_cbs, &s, &st), LATCH_E_BUSY);
    assert_null(st);
    assert_int_equal(outbound_stream_start(ob, &req, 0, &sink_cbs, &s, NULL), LATCH_E_BUSY);
    counter_wait(&c, 1);
    assert_int_equal(c.done, 1);
    outbound_stop(ob);
    assert_int_equal(s.done_calls, 0);
    assert_int_equal(s.header_calls, 0);
    sink_destroy(&s);
}

static void
test_stream_cancel(void **state)
{
    struct outbound *ob = start_ob(true, true, NULL, 0);
    struct outbound_req req = {0};
    struct sink s;
    char path[64];

    (void)state;
    /* cancel from inside on_data, mid-body */
    sink_init(&s);
    s.cancel_after = 1024 * 1024;
    snprintf(path, sizeof path, "/big?n=%llu", (unsigned long long)BIG_STREAM_BYTES);
    req.method = "GET";
    req.url = url_for("127.0.0.1", path);
    req.timeout_ms = 60000;
    pthread_mutex_lock(&s.mu);
    assert_int_equal(outbound_stream_start(ob, &req, 0, &sink_cbs, &s, &s.st), LATCH_OK);
    pthread_mutex_unlock(&s.mu);
    sink_wait_done(&s);
    assert_int_equal(s.rc, LATCH_E_UNAVAILABLE);
    assert_int_equal(s.done_calls, 1);
    assert_true(s.got < BIG_STREAM_BYTES);
    outbound_stream_cancel(s.st);
    outbound_stream_release(s.st);
    sink_destroy(&s);

    /* cancel from another thread while the server is still thinking */
    sink_init(&s);
    req.url = url_for("127.0.0.1", "/sleep?ms=700");
    assert_int_equal(outbound_stream_start(ob, &req, 0, &sink_cbs, &s, &s.st), LATCH_OK);
    usleep(50 * 1000);
    outbound_stream_cancel(s.st);
    outbound_stream_cancel(s.st);
    sink_wait_done(&s);
    assert_int_equal(s.rc, LATCH_E_UNAVAILABLE);
    assert_int_equal(s.done_calls, 1);
    assert_int_equal(s.header_calls, 0);
    outbound_stream_release(s.st);
    sink_destroy(&s);

    /* a stream without a handle (out == NULL) runs to completion on its own */
    sink_init(&s);
    req.url = url_for("127.0.0.1", "/ping");
    assert_int_equal(outbound_stream_start(ob, &req, 0, &sink_cbs, &s, NULL), LATCH_OK);
    sink_wait_done(&s);
    assert_int_equal(s.rc, LATCH_OK);
    assert_int_equal(s.got, 4);
    sink_destroy(&s);

    /* an active stream is ended by outbound_stop with on_done(UNAVAILABLE) */
    sink_init(&s);
    req.url = url_for("127.0.0.1", "/sleep?ms=700");
    assert_int_equal(outbound_stream_start(ob, &req, 0, &sink_cbs, &s, &s.st), LATCH_OK);
    usleep(50 * 1000);
    outbound_stop(ob);
    assert_int_equal(s.done_calls, 1);
    assert_int_equal(s.rc, LATCH_E_UNAVAILABLE);
    outbound_stream_release(s.st);
    sink_destroy(&s);
}

/* Upload source: produces UPLOAD_BYTES of pattern, pausing every few reads. */
struct source {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct outbound_stream *st;
    uint64_t sent, sum;
    unsigned reads, pauses;
    bool paused, stop;
    struct sink *resp;
};

static struct source *the_source;

static long
upload_read(void *ud, char *buf, size_t max)
{
    struct source *src = the_source;
    size_t n;
    long ret;

    (void)ud;
    pthread_mutex_lock(&src->mu);
    src->reads++;
    if (src->sent >= UPLOAD_BYTES) {
        ret = -1;
        goto out;
    }
    if (src->reads % 5 == 0 && !src->paused) {
        src->paused = true;
        src->pauses++;
        pthread_cond_broadcast(&src->cv);
        ret = 0;
        goto out;
    }
    n = max < 10000 ? max : 10000;
    if (n > UPLOAD_BYTES - src->sent)
        n = (size_t)(UPLOAD_BYTES - src->sent);
    for (size_t i = 0; i < n; i++) {
        buf[i] = (char)pattern(src->sent + i);
        src->sum += pattern(src->sent + i);
    }
    src->sent += n;
    ret = (long)n;
out:
    pthread_mutex_unlock(&src->mu);
    return ret;
}

static void *
source_resumer(void *arg)
{
    struct source *src = arg;

    pthread_mutex_lock(&src->mu);
    for (;;) {
        while (!src->paused && !src->stop)
            pthread_cond_wait(&src->cv, &src->mu);
        if (src->stop)
            break;
        src->paused = false;
        pthread_mutex_unlock(&src->mu);
        usleep(1000);
        outbound_stream_resume(src->st);
        pthread_mutex_lock(&src->mu);
    }
    pthread_mutex_unlock(&src->mu);
    return NULL;
}

static bool
text_sink_data(void *ud, const char *data, size_t len)
{
    struct sink *s = ud;

    pthread_mutex_lock(&s->mu);
    if (s->got + len < sizeof s->error) {
        memcpy(s->error + s->got, data, len);
        s->error[s->got + len] = '\0';
    }
    s->got += len;
    pthread_mutex_unlock(&s->mu);
    return true;
}

static void
text_sink_done(void *ud, latch_rc rc, const char *error)
{
    struct sink *s = ud;

    (void)error;
    pthread_mutex_lock(&s->mu);
    s->done_calls++;
    s->done = true;
    s->rc = rc;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void
test_stream_upload(void **state)
{
    struct outbound *ob = start_ob(true, true, NULL, 0);
    const struct outbound_stream_cbs cbs = {sink_headers, text_sink_data, upload_read,
                                            text_sink_done};
    const long long lens[] = {UPLOAD_BYTES, -1};

    (void)state;
    for (size_t k = 0; k < 2; k++) {
        struct outbound_req req = {0};
        struct source src;
        struct sink s;
        pthread_t th;
        char want[128];

        memset(&src, 0, sizeof src);
        pthread_mutex_init(&src.mu, NULL);
        pthread_cond_init(&src.cv, NULL);
        the_source = &src;
        sink_init(&s);
        req.method = k == 0 ? "POST" : "PUT";
        req.url = url_for("127.0.0.1", "/upload");
        req.timeout_ms = 30000;
        pthread_mutex_lock(&src.mu);
        assert_int_equal(outbound_stream_start(ob, &req, lens[k], &cbs, &s, &src.st), LATCH_OK);
        pthread_mutex_unlock(&src.mu);
        assert_int_equal(pthread_create(&th, NULL, source_resumer, &src), 0);
        sink_wait_done(&s);
        pthread_mutex_lock(&src.mu);
        src.stop = true;
        pthread_cond_broadcast(&src.cv);
        pthread_mutex_unlock(&src.mu);
        pthread_join(th, NULL);

        assert_int_equal(s.rc, LATCH_OK);
        assert_int_equal(s.status, 200);
        assert_true(src.pauses > 5);
        snprintf(want, sizeof want, "len=%d sum=%llu", UPLOAD_BYTES, (unsigned long long)src.sum);
        assert_string_equal(s.error, want);
        outbound_stream_release(src.st);
        sink_destroy(&s);
        pthread_cond_destroy(&src.cv);
        pthread_mutex_destroy(&src.mu);
    }
    outbound_stop(ob);
}

/* ------------------------------------------------------------------------------------------ */
/* TLS: LATCH_CA_FILE adds a private CA next to the system bundle */

static X509 *
make_cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key, bool ca)
{
    X509 *x = X509_new();
    X509_NAME *name;
    X509V3_CTX ctx;
    X509_EXTENSION *ext;

    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), ca ? 1 : 2);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, key);
    name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, issuer != NULL ? X509_get_subject_name(issuer) : name);
    X509V3_set_ctx(&ctx, issuer != NULL ? issuer : x, x, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_basic_constraints,
                              ca ? "critical,CA:TRUE" : "CA:FALSE");
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    if (ca) {
        ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign");
    } else {
        ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_alt_name, "DNS:tls.example");
    }
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    X509_sign(x, issuer_key != NULL ? issuer_key : key, EVP_sha256());
    return x;
}

static char *
bio_string(BIO *b)
{
    char *p = NULL;
    long n = BIO_get_mem_data(b, &p);
    char *s = xmalloc((size_t)n + 1);

    memcpy(s, p, (size_t)n);
    s[n] = '\0';
    return s;
}

static void
test_tls_extra_ca(void **state)
{
    EVP_PKEY *ca_key = EVP_EC_gen("P-256"), *key = EVP_EC_gen("P-256");
    X509 *ca = make_cert(ca_key, "latch test CA", NULL, NULL, true);
    X509 *leaf = make_cert(key, "tls.example", ca, ca_key, false);
    BIO *b_cert = BIO_new(BIO_s_mem()), *b_key = BIO_new(BIO_s_mem()), *b_ca = BIO_new(BIO_s_mem());
    char *cert_pem, *key_pem, *ca_pem;
    char ca_path[] = "/tmp/latch_test_ca_XXXXXX";
    struct MHD_Daemon *d;
    struct sockaddr_in sin;
    const union MHD_DaemonInfo *di;
    char resolve[128], url[128];
    struct outbound_opts o = {0};
    struct outbound *ob = NULL;
    struct latch_err err = {{0}};
    struct outbound_resp r;
    int fd;

    (void)state;
    assert_non_null(ca_key);
    assert_non_null(key);
    PEM_write_bio_X509(b_cert, leaf);
    PEM_write_bio_PrivateKey(b_key, key, NULL, NULL, 0, NULL, NULL);
    PEM_write_bio_X509(b_ca, ca);
    cert_pem = bio_string(b_cert);
    key_pem = bio_string(b_key);
    ca_pem = bio_string(b_ca);
    fd = mkstemp(ca_path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, ca_pem, strlen(ca_pem)), (ssize_t)strlen(ca_pem));
    close(fd);

    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                             MHD_USE_TLS | MHD_USE_ERROR_LOG,
                         0, NULL, NULL, handler, NULL, MHD_OPTION_SOCK_ADDR, &sin,
                         MHD_OPTION_NOTIFY_COMPLETED, completed, NULL, MHD_OPTION_HTTPS_MEM_KEY,
                         key_pem, MHD_OPTION_HTTPS_MEM_CERT, cert_pem, MHD_OPTION_END);
    assert_non_null(d);
    di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    snprintf(resolve, sizeof resolve, "tls.example:%u:127.0.0.1", di->port);
    snprintf(url, sizeof url, "https://tls.example:%u/ping", di->port);

    /* https-only, no private addresses except the pin: the production shape */
    o.resolve = resolve;
    o.ca_file = ca_path;
    assert_int_equal(outbound_start(&o, &ob, &err), LATCH_OK);
    assert_int_equal(fetch(ob, "GET", url, &r), LATCH_OK);
    assert_int_equal(r.status, 200);
    assert_memory_equal(r.body, "pong", 4);
    outbound_resp_clear(&r);
    outbound_stop(ob);

    /* without the extra CA the same server is not trusted */
    o.ca_file = NULL;
    assert_int_equal(outbound_start(&o, &ob, &err), LATCH_OK);
    assert_int_equal(fetch(ob, "GET", url, &r), LATCH_E_UNAVAILABLE);
    assert_non_null(strstr(r.error, "tls.example"));
    outbound_resp_clear(&r);
    outbound_stop(ob);

    MHD_stop_daemon(d);
    unlink(ca_path);
    free(cert_pem);
    free(key_pem);
    free(ca_pem);
    BIO_free(b_cert);
    BIO_free(b_key);
    BIO_free(b_ca);
    X509_free(leaf);
    X509_free(ca);
    EVP_PKEY_free(key);
    EVP_PKEY_free(ca_key);
}

/* ------------------------------------------------------------------------------------------ */
/* embedded instances (the proxy's, driven by an HTTP loop thread) */

struct emb_done {
    int calls;
    long status;
    latch_rc rc;
    bool on_owner;
    pthread_t owner;
};

static void
emb_done_cb(struct outbound_resp *resp, void *ud)
{
    struct emb_done *d = ud;

    d->calls++;
    d->status = resp->status;
    d->rc = resp->rc;
    d->on_owner = pthread_equal(pthread_self(), d->owner);
    outbound_resp_clear(resp);
}

/* The owner's loop, as http_server's: sleep on the instance's fd, run when ready or due. */
static void
emb_drive(struct outbound *eo, int ep, const struct emb_done *d)
{
    for (int i = 0; i < 2000 && d->calls == 0; i++) {
        struct epoll_event ev;
        long t = outbound_embedded_timeout_ms(eo);
        int n = epoll_wait(ep, &ev, 1, t < 0 || t > 100 ? 100 : (int)t);

        outbound_embedded_run(eo, n > 0);
    }
}

struct emb_sub {
    struct outbound *eo;
    struct emb_done *d;
};

static void *
emb_submit_thread(void *arg)
{
    struct emb_sub *es = arg;
    struct outbound_req req = {0};

    req.method = "GET";
    req.url = url_for("127.0.0.1", "/ping");
    if (outbound_submit(es->eo, &req, emb_done_cb, es->d) != LATCH_OK)
        es->d->calls = -1;
    return NULL;
}

static void
test_embedded(void **state)
{
    struct outbound *parent = start_ob(true, true, NULL, 0);
    struct outbound *eo = NULL;
    struct latch_err err = {{0}};
    struct outbound_req req = {0};
    struct outbound_resp r;
    struct epoll_event ev = {0};
    int ep;

    (void)state;
    assert_int_equal(outbound_start_embedded(parent, &eo, &err), LATCH_OK);
    outbound_embedded_attach(eo);
    ep = epoll_create1(EPOLL_CLOEXEC);
    assert_true(ep >= 0);
    ev.events = EPOLLIN;
    assert_int_equal(epoll_ctl(ep, EPOLL_CTL_ADD, outbound_embedded_fd(eo), &ev), 0);
    /* nothing due: the owner may sleep until woken */
    assert_int_equal(outbound_embedded_timeout_ms(eo), -1);

    req.method = "GET";
    req.url = url_for("127.0.0.1", "/ping");
    for (int i = 0; i < 10; i++) {
        struct emb_done d = {0};

        d.owner = pthread_self();
        assert_int_equal(outbound_submit(eo, &req, emb_done_cb, &d), LATCH_OK);
        /* queued by the owner: no wake-up needed, but the owner must run before it sleeps */
        assert_int_equal(outbound_embedded_timeout_ms(eo), 0);
        emb_drive(eo, ep, &d);
        assert_int_equal(d.calls, 1);
        assert_int_equal(d.rc, LATCH_OK);
        assert_int_equal(d.status, 200);
        assert_true(d.on_owner); /* every callback on the owner's thread */
    }
    /* its own keep-alive pool: ten requests in a row, one connection */
    assert_int_equal(outbound_sockets_opened(eo), 1);
    assert_int_equal(outbound_sockets_opened(parent), 0);

    /* submitted from another thread: the eventfd wakes the owner's epoll */
    {
        struct emb_done d = {0};
        struct emb_sub es = {eo, &d};
        pthread_t th;

        d.owner = pthread_self();
        assert_int_equal(pthread_create(&th, NULL, emb_submit_thread, &es), 0);
        pthread_join(th, NULL);
        assert_int_equal(epoll_wait(ep, &ev, 1, 5000), 1);
        emb_drive(eo, ep, &d);
        assert_int_equal(d.calls, 1);
        assert_int_equal(d.status, 200);
        assert_true(d.on_owner);
    }

    /* a blocking fetch on the owner's thread would wait for itself */
    assert_int_equal(outbound_fetch_sync(eo, &req, &r), LATCH_E_INTERNAL);
    outbound_resp_clear(&r);

    /* shutdown on the owner: what is queued fails there, later submits fail */
    {
        struct emb_done d = {0};

        d.owner = pthread_self();
        assert_int_equal(outbound_submit(eo, &req, emb_done_cb, &d), LATCH_OK);
        outbound_shutdown(eo);
        assert_int_equal(d.calls, 1);
        assert_int_equal(d.rc, LATCH_E_UNAVAILABLE);
        assert_true(d.on_owner);
        assert_int_equal(outbound_submit(eo, &req, emb_done_cb, &d), LATCH_E_UNAVAILABLE);
    }
    close(ep);
    outbound_stop(eo);
    outbound_stop(parent); /* after the embedded one: it borrowed the policy */
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_headers),
        cmocka_unit_test(test_status_passthrough),
        cmocka_unit_test(test_retry_after),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_response_cap),
        cmocka_unit_test(test_conn_refused),
        cmocka_unit_test(test_ssrf_denied),
        cmocka_unit_test(test_ssrf_pinned),
        cmocka_unit_test(test_bad_opts),
        cmocka_unit_test(test_submit_rejects),
        cmocka_unit_test(test_concurrent),
        cmocka_unit_test(test_busy),
        cmocka_unit_test(test_stop_fails_pending),
        cmocka_unit_test(test_stream_download),
        cmocka_unit_test(test_stream_cancel),
        cmocka_unit_test(test_stream_busy),
        cmocka_unit_test(test_stream_upload),
        cmocka_unit_test(test_tls_extra_ca),
        cmocka_unit_test(test_embedded),
    };

    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
