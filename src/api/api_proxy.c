/*
 * api_proxy.c - ALL /proxy/<endpoint>: calls the provider's API with the connection's fresh
 * token, streaming bodies both ways with bounded memory.
 *
 * Life of a proxied request (struct proxy, reference-counted, one mutex):
 *   pool thread   dispatch at the headers: validate, set the upload sink, suspend, ask the
 *                 refresher for a fresh token (may answer at once or later on the curl thread)
 *   token ready   build the upstream URL from the provider's proxy.base_url and the connection's
 *                 validated config, start an outbound stream (attempt)
 *   curl thread   on_headers decides: stream to the client (any final status, 201 stays 201),
 *                 discard and retry (429/5xx/Retry-On when the caller asked with Retries), or
 *                 capture a 401 to see whether the token was rejected (then refresh once, on
 *                 a worker thread: it reads the store, retry once); on_data fills a small ring
 *                 buffer, pausing curl when it is full
 *   pool thread   the streaming response's read callback drains the ring and unpauses curl
 * Request bodies up to LATCH_PROXY_BUFFERED_BODY are buffered (so retries can replay them);
 * larger or chunked bodies stream through a second ring and are never retried.
 * No lock is held while calling into http_server or outbound (they have their own locks).
 */
#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/api.h"
#include "core/config.h"
#include "domain/catalog.h"
#include "domain/proxyauth.h"
#include "core/latch_limits.h"
#include "core/log.h"
#include "net/netpolicy.h"
#include "net/outbound.h"
#include "domain/refresher.h"
#include "core/timer.h"
#include "core/worker.h"
#include "domain/tmpl.h"
#include "util/buf.h"
#include "util/json.h"
#include "util/str.h"
#include "util/xalloc.h"
#include "util/clock.h"

#define PROXY_RETRY_BASE_MS 1000

struct ring {
    char *buf;
    size_t cap; /* allocated */
    size_t head;
    size_t len;
};

enum body_mode { BODY_NONE, BODY_BUFFERED, BODY_STREAM };
enum resp_mode { RESP_PENDING, RESP_STREAM, RESP_DISCARD, RESP_CAPTURE, RESP_DONE };

#define PROXY_MAX_ZOMBIES 4 /* streams parked in zombies while borrowed */

struct proxy {
    pthread_mutex_t mu;
    int refs;
    struct api_deps *deps;
    struct http_req *req; /* valid until the MHD side is finished (see mhd_done) */
    struct api_ctx *c;
    bool mhd_done; /* response finished or client gone: never touch req again */
    /* request */
    char *method;
    char *endpoint;
    char *pck;
    char *cid;
    int64_t env_id;
    const struct catalog_provider *provider;
    char *base_override;
    char **hnames;
    char **hvalues;
    size_t nh;
    int retries_left;
    int retry_on[16];
    size_t n_retry_on;
    int64_t deadline_ms;
    /* body */
    enum body_mode body_mode;
    struct buf body;
    bool body_complete;
    bool upstream_wanted; /* token ready, waiting for the buffered body */
    struct ring up;
    bool up_eof;
    bool up_mhd_paused;
    bool up_curl_waiting;
    /* credentials on the request (the provider's templates) and target */
    struct proxy_auth auth;
    bool accept_plain; /* the "accept" header is the caller's plain Accept (yields to the
                          provider's) */
    json_t *cfg;
    char *url;
    bool refreshed_once;
    int attempt;
    /*
     * Where attempts run: the outbound of the HTTP loop that owns the client connection (app.c
     * makes http_req_loop_ctx that loop's embedded outbound), so the transfer's callbacks run
     * on the thread that serves the client; the shared one when the loop has none.
     */
    struct outbound *ob;
    /* current upstream attempt */
    struct outbound_stream *st;
    enum resp_mode mode;
    long status;
    char *retry_after;
    struct buf capture;
    char *capture_type;
    struct ring down;
    bool down_done;
    bool down_error;
    bool curl_paused;
    bool reader_waiting;
    int done_attempt; /* last attempt whose on_done ran */
    /*
     * Threads other than the curl thread resume or cancel st outside the lock, so on_done must
     * not drop the caller's reference while such a call is under way: they borrow st (under the
     * lock), and a stream finished meanwhile is parked in zombies until the last borrow ends.
     */
    int st_borrows;
    struct outbound_stream *zombies[PROXY_MAX_ZOMBIES];
    size_t n_zombies;
};

/* ---- small ring buffer ---- */

static void
ring_free(struct ring *r)
{
    free(r->buf);
    memset(r, 0, sizeof *r);
}

/* Appends all n bytes, growing past the soft cap if needed (callers pause their producer). */
static void
ring_put(struct ring *r, const char *d, size_t n)
{
    size_t tail, first;

    if (r->len + n > r->cap) {
        size_t ncap = r->cap ? r->cap : 16 * 1024;
        char *nb;

        while (ncap < r->len + n)
            ncap *= 2;
        nb = xmalloc(ncap);
        if (r->len > 0) {
            first = r->cap - r->head < r->len ? r->cap - r->head : r->len;
            memcpy(nb, r->buf + r->head, first);
            memcpy(nb + first, r->buf, r->len - first);
        }
        free(r->buf);
        r->buf = nb;
        r->cap = ncap;
        r->head = 0;
    }
    tail = (r->head + r->len) % r->cap;
    first = r->cap - tail < n ? r->cap - tail : n;
    memcpy(r->buf + tail, d, first);
    memcpy(r->buf, d + first, n - first);
    r->len += n;
}

static size_t
ring_get(struct ring *r, char *out, size_t max)
{
    size_t n = r->len < max ? r->len : max;
    size_t first;

    if (n == 0)
        return 0;
    first = r->cap - r->head < n ? r->cap - r->head : n;
    memcpy(out, r->buf + r->head, first);
    memcpy(out + first, r->buf, n - first);
    r->head = (r->head + n) % r->cap;
    r->len -= n;
    if (r->len == 0)
        r->head = 0;
    return n;
}

/* ---- lifetime ---- */

/* With px->mu held: the current stream, safe to use outside the lock until st_return. */
static struct outbound_stream *
st_borrow(struct proxy *px)
{
    if (px->st != NULL)
        px->st_borrows++;
    return px->st;
}

static void
st_return(struct proxy *px, struct outbound_stream *st)
{
    struct outbound_stream *z[PROXY_MAX_ZOMBIES];
    size_t nz = 0;

    if (st == NULL)
        return;
    pthread_mutex_lock(&px->mu);
    if (--px->st_borrows == 0) {
        nz = px->n_zombies;
        memcpy(z, px->zombies, nz * sizeof(struct outbound_stream *));
        px->n_zombies = 0;
    }
    pthread_mutex_unlock(&px->mu);
    for (size_t i = 0; i < nz; i++)
        outbound_stream_release(z[i]);
}

/* With px->mu held: drop the caller's reference now, or when the last borrow ends. */
static bool
st_retire_locked(struct proxy *px, struct outbound_stream *st)
{
    if (st == NULL || px->st_borrows == 0 || px->n_zombies >= PROXY_MAX_ZOMBIES)
        return st != NULL; /* caller releases now */
    px->zombies[px->n_zombies++] = st;
    return false;
}

static void
proxy_unref(struct proxy *px)
{
    bool last;

    pthread_mutex_lock(&px->mu);
    last = --px->refs == 0;
    pthread_mutex_unlock(&px->mu);
    if (!last)
        return;
    for (size_t i = 0; i < px->n_zombies; i++)
        outbound_stream_release(px->zombies[i]);
    free(px->method);
    free(px->endpoint);
    free(px->pck);
    free(px->cid);
    free(px->base_override);
    for (size_t i = 0; i < px->nh; i++) {
        free(px->hnames[i]);
        free(px->hvalues[i]);
    }
    free(px->hnames);
    free(px->hvalues);
    buf_free(&px->body);
    ring_free(&px->up);
    ring_free(&px->down);
    proxy_auth_clear(&px->auth);
    json_decref(px->cfg);
    free(px->url);
    free(px->retry_after);
    buf_free(&px->capture);
    free(px->capture_type);
    pthread_mutex_destroy(&px->mu);
    free(px);
}

static void
proxy_ref(struct proxy *px)
{
    pthread_mutex_lock(&px->mu);
    px->refs++;
    pthread_mutex_unlock(&px->mu);
}

/*
 * Answers with a complete (non-streamed) response and resumes the request. Takes the MHD side
 * away from the proxy: after this, req is never touched again.
 */
static void
finish_plain(struct proxy *px, unsigned status, const char *code, const char *message,
             const char *reason)
{
    struct http_req *req;
    json_t *e;

    pthread_mutex_lock(&px->mu);
    req = px->mhd_done ? NULL : px->req;
    px->mhd_done = true;
    px->mode = RESP_DONE;
    pthread_mutex_unlock(&px->mu);
    if (req == NULL)
        return;
    api_op_error(px->c, code);
    e = json_pack("{s:s, s:s}", "code", code, "message", message);
    if (reason != NULL)
        json_object_set_new(e, "reason", json_string(reason));
    http_req_log_kv(req, "err", code);
    http_resp_json(req, status, json_pack("{s:o}", "error", e));
    http_req_resume(req);
    proxy_unref(px); /* the MHD side's reference */
}

/* ---- header helpers ---- */

static bool
hop_by_hop(const char *n)
{
    static const char *const hop[] = {"connection",
                                      "keep-alive",
                                      "proxy-authenticate",
                                      "proxy-authorization",
                                      "te",
                                      "trailer",
                                      "trailers",
                                      "transfer-encoding",
                                      "upgrade",
                                      "content-length",
                                      "host",
                                      NULL};

    for (size_t i = 0; hop[i] != NULL; i++)
        if (strcasecmp(n, hop[i]) == 0)
            return true;
    return false;
}

/*
 * Upstream response headers that would act on latch's own origin, where the proxied response is
 * served: cookies (set for latch's host) and Clear-Site-Data (would wipe the Connect UI's state).
 */
static bool
acts_on_origin(const char *n)
{
    return strcasecmp(n, "set-cookie") == 0 || strcasecmp(n, "set-cookie2") == 0 ||
           strcasecmp(n, "clear-site-data") == 0;
}

/*
 * Upstream bytes are served from latch's origin: a sandboxed document gets a unique opaque
 * origin and runs no script, so an upstream HTML page can never act as latch (read the Connect
 * UI's storage, call the API with the browser's session). Added to upstream's own CSP, if any:
 * a browser enforces both.
 */
static void
sandbox_upstream(struct http_req *req)
{
    http_resp_header(req, "Content-Security-Policy", "sandbox");
}

static bool
has_header(const struct proxy *px, const char *name)
{
    for (size_t i = 0; i < px->nh; i++)
        if (strcasecmp(px->hnames[i], name) == 0)
            return true;
    return false;
}

static void
add_header(struct proxy *px, const char *name, const char *value)
{
    for (size_t i = 0; i < px->nh; i++) {
        if (strcasecmp(px->hnames[i], name) == 0) {
            free(px->hvalues[i]);
            px->hvalues[i] = xstrdup(value);
            return;
        }
    }
    if (px->nh >= LATCH_PROXY_MAX_HEADERS)
        return;
    px->hnames = xrealloc(px->hnames, (px->nh + 1) * sizeof *px->hnames);
    px->hvalues = xrealloc(px->hvalues, (px->nh + 1) * sizeof *px->hvalues);
    px->hnames[px->nh] = xstrdup(name);
    px->hvalues[px->nh] = xstrdup(value);
    px->nh++;
}

struct hdr_walk {
    struct proxy *px;
    const char *ct;
    const char *accept;
};

static bool
collect_cb(const char *name, const char *value, void *ud)
{
    struct hdr_walk *w = ud;
    char lower[128];
    size_t n = strlen(name);

    if (n <= 12 || n - 12 >= sizeof lower || strncasecmp(name, "nango-proxy-", 12) != 0)
        return true;
    for (size_t i = 12; i <= n; i++)
        lower[i - 12] = (char)tolower((unsigned char)name[i]);
    /* the caller's credentials and cookies never go upstream */
    if (strcmp(lower, "authorization") == 0 || strcmp(lower, "cookie") == 0 || hop_by_hop(lower))
        return true;
    add_header(w->px, lower, value);
    return true;
}

/* ---- the upstream attempt ---- */

static void start_attempt(struct proxy *px);
static void refresh_then_retry(struct proxy *px);

static bool
status_retryable(struct proxy *px, long status)
{
    for (size_t i = 0; i < px->n_retry_on; i++)
        if (px->retry_on[i] == status)
            return true;
    return status == 429 || status >= 500;
}

static const char *
find_header(char **names, char **values, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcasecmp(names[i], name) == 0)
            return values[i];
    return NULL;
}

static long
stream_read(void *ud, char *buf, size_t max)
{
    struct proxy *px = ud;
    size_t n;
    bool unpause = false;
    struct outbound_stream *st = NULL;
    long ret;

    pthread_mutex_lock(&px->mu);
    n = ring_get(&px->down, buf, max);
    if (n > 0) {
        if (px->curl_paused && px->down.len < LATCH_PROXY_RING_BYTES / 2) {
            px->curl_paused = false;
            unpause = true;
            st = st_borrow(px);
        }
        ret = (long)n;
    } else if (px->down_done) {
        ret = px->down_error ? -2 : -1;
    } else {
        px->reader_waiting = true;
        ret = 0;
    }
    pthread_mutex_unlock(&px->mu);
    if (unpause && st != NULL)
        outbound_stream_resume(st);
    st_return(px, st);
    return ret;
}

static void
stream_free(void *ud)
{
    struct proxy *px = ud;
    struct outbound_stream *st;
    bool cancel;

    pthread_mutex_lock(&px->mu);
    px->mhd_done = true;
    cancel = !px->down_done;
    st = cancel ? st_borrow(px) : NULL;
    pthread_mutex_unlock(&px->mu);
    if (st != NULL)
        outbound_stream_cancel(st); /* client went away: stop the upstream transfer */
    st_return(px, st);
    proxy_unref(px); /* the MHD side's reference */
}

static void
on_headers(void *ud, long status, char **names, char **values, size_t n)
{
    struct proxy *px = ud;
    struct http_req *req = NULL;
    const char *cl;
    long long total = -1;

    api_metrics_upstream(px->provider->name, status, http_req_start_us(px->c->req));
    pthread_mutex_lock(&px->mu);
    px->status = status;
    free(px->retry_after);
    px->retry_after = NULL;
    if (status == 401 && !px->refreshed_once) {
        const char *ct = find_header(names, values, n, "content-type");

        px->mode = RESP_CAPTURE;
        buf_reset(&px->capture);
        free(px->capture_type);
        px->capture_type = ct ? xstrdup(ct) : NULL;
    } else if (px->retries_left > 0 && status_retryable(px, status) &&
               px->body_mode != BODY_STREAM) {
        const char *ra = find_header(names, values, n, "retry-after");

        px->mode = RESP_DISCARD;
        px->retry_after = ra ? xstrdup(ra) : NULL;
    } else if (!px->mhd_done) {
        px->mode = RESP_STREAM;
        req = px->req;
        px->up_eof = true; /* the request is resumed: the sink sees no more upload bytes */
    } else {
        px->mode = RESP_DISCARD;
    }
    pthread_mutex_unlock(&px->mu);
    if (req == NULL)
        return;
    api_op_upstream(px->c, status, px->attempt - 1, px->refreshed_once);
    for (size_t i = 0; i < n; i++) {
        if (hop_by_hop(names[i]) || strncasecmp(names[i], "access-control-", 15) == 0 ||
            acts_on_origin(names[i]))
            continue;
        http_resp_header(req, names[i], values[i]);
    }
    sandbox_upstream(req);
    cl = find_header(names, values, n, "content-length");
    if (cl != NULL) {
        const char *e = NULL;
        long long v = latch_strtonum(cl, 0, (long long)1 << 50, &e);

        if (e == NULL)
            total = v;
    }
    if (status == 204 || status == 304 || strcmp(px->method, "HEAD") == 0)
        total = 0;
    http_resp_stream(req, (unsigned)status, total, stream_read, stream_free, px);
    http_req_resume(req);
    /* the MHD side's reference now belongs to the stream (stream_free drops it) */
}

static bool
on_data(void *ud, const char *data, size_t len)
{
    struct proxy *px = ud;
    struct http_req *wake = NULL;
    bool more = true;

    pthread_mutex_lock(&px->mu);
    switch (px->mode) {
    case RESP_CAPTURE:
        (void)buf_append(&px->capture, data, len); /* capped; excess ignored */
        break;
    case RESP_STREAM:
        if (px->mhd_done)
            break;
        ring_put(&px->down, data, len);
        if (px->down.len >= LATCH_PROXY_RING_BYTES) {
            px->curl_paused = true;
            more = false;
        }
        if (px->reader_waiting) {
            px->reader_waiting = false;
            wake = px->req;
        }
        break;
    default:
        break;
    }
    pthread_mutex_unlock(&px->mu);
    if (wake != NULL)
        http_req_stream_ready(wake);
    return more;
}

static long
on_body_read(void *ud, char *out, size_t max)
{
    struct proxy *px = ud;
    struct http_req *resume = NULL;
    long ret;
    size_t n;

    pthread_mutex_lock(&px->mu);
    n = ring_get(&px->up, out, max);
    if (n > 0) {
        ret = (long)n;
        if (px->up_mhd_paused && !px->mhd_done) {
            px->up_mhd_paused = false;
            resume = px->req;
        }
    } else if (px->up_eof) {
        ret = -1;
    } else {
        px->up_curl_waiting = true;
        ret = 0;
    }
    pthread_mutex_unlock(&px->mu);
    if (resume != NULL)
        http_req_body_resume(resume);
    return ret;
}

static int64_t
retry_wait_ms(struct proxy *px)
{
    int64_t w = PROXY_RETRY_BASE_MS;

    if (px->retry_after != NULL) {
        const char *e = NULL;
        long long s = latch_strtonum(px->retry_after, 0, 86400, &e);

        if (e == NULL)
            w = s * 1000;
        else {
            struct tm tm;

            memset(&tm, 0, sizeof tm);
            if (strptime(px->retry_after, "%a, %d %b %Y %H:%M:%S GMT", &tm) != NULL)
                w = (int64_t)timegm(&tm) * 1000 - latch_now_ms();
        }
    } else {
        for (int i = 1; i < px->attempt && w < LATCH_PROXY_MAX_RETRY_WAIT_MS; i++)
            w *= 2;
    }
    if (w < 0)
        w = 0;
    if (w > LATCH_PROXY_MAX_RETRY_WAIT_MS)
        w = LATCH_PROXY_MAX_RETRY_WAIT_MS;
    return w;
}

static void
retry_timer(void *ud)
{
    struct proxy *px = ud;

    start_attempt(px);
    proxy_unref(px); /* the timer's reference */
}

static void
schedule_retry(struct proxy *px)
{
    int64_t wait = retry_wait_ms(px);

    if (latch_now_ms() + wait >= px->deadline_ms) {
        finish_plain(px, 504, "upstream_timeout",
                     "The provider did not answer successfully before the proxy timeout.", NULL);
        return;
    }
    proxy_ref(px);
    if (timer_after(px->deps->timer, wait, retry_timer, px) != LATCH_OK) {
        proxy_unref(px);
        finish_plain(px, 503, "busy", "latch is too busy to retry this request.", NULL);
    }
}

static void
on_done(void *ud, latch_rc rc, const char *error)
{
    struct proxy *px = ud;
    struct http_req *wake = NULL;
    enum resp_mode mode;
    struct outbound_stream *st;

    pthread_mutex_lock(&px->mu);
    mode = px->mode;
    st = px->st;
    px->st = NULL;
    if (!st_retire_locked(px, st))
        st = NULL; /* released by the last borrower */
    px->done_attempt = px->attempt;
    if (mode == RESP_STREAM) {
        px->down_done = true;
        px->down_error = rc != LATCH_OK;
        if (px->reader_waiting && !px->mhd_done) {
            px->reader_waiting = false;
            wake = px->req;
        }
    }
    pthread_mutex_unlock(&px->mu);
    if (st != NULL)
        outbound_stream_release(st);
    if (wake != NULL)
        http_req_stream_ready(wake);

    switch (mode) {
    case RESP_STREAM:
        if (rc != LATCH_OK)
            log_warn("proxy stream aborted", "rc=%s", latch_strerror(rc));
        break;
    case RESP_DISCARD:
        px->retries_left--;
        schedule_retry(px);
        break;
    case RESP_CAPTURE: {
        const char *body = px->capture.data ? px->capture.data : "";

        if (rc == LATCH_OK && strstr(body, "not_authenticated") != NULL) {
            refresh_then_retry(px);
        } else {
            /* not a token problem (e.g. insufficient_privileges): the caller sees it as is */
            struct http_req *req;

            pthread_mutex_lock(&px->mu);
            req = px->mhd_done ? NULL : px->req;
            px->mhd_done = true;
            pthread_mutex_unlock(&px->mu);
            if (req != NULL) {
                sandbox_upstream(req);
                http_resp_bytes(req, 401, px->capture_type ? px->capture_type : "application/json",
                                body, px->capture.len, false);
                http_req_resume(req);
                proxy_unref(px);
            }
        }
        break;
    }
    case RESP_PENDING:
        /* no response at all: network error or timeout */
        if (px->retries_left > 0 && rc != LATCH_E_TIMEOUT && rc != LATCH_E_DENIED &&
            px->body_mode != BODY_STREAM) {
            px->retries_left--;
            schedule_retry(px);
        } else if (rc == LATCH_E_TIMEOUT) {
            finish_plain(px, 504, "upstream_timeout", "The provider did not answer in time.", NULL);
        } else if (rc == LATCH_E_DENIED) {
            finish_plain(px, 400, "base_url_not_allowed",
                         "latch's outbound policy refused the upstream address.", NULL);
        } else {
            char msg[320];

            (void)snprintf(msg, sizeof msg, "Could not reach the provider: %s",
                           error ? error : latch_strerror(rc));
            finish_plain(px, 502, "upstream_unreachable", msg, NULL);
        }
        break;
    case RESP_DONE:
        break;
    }
    proxy_unref(px); /* the attempt's reference */
}

static void
start_attempt(struct proxy *px)
{
    struct outbound_header *h;
    struct outbound_req rq;
    struct outbound_stream_cbs cbs = {on_headers, on_data, NULL, on_done};
    size_t nh = 0;
    int64_t left = px->deadline_ms - latch_now_ms();
    struct outbound_stream *st = NULL;
    bool unpause;
    int me;
    latch_rc rc;

    if (left <= 0) {
        finish_plain(px, 504, "upstream_timeout", "The proxy timeout elapsed.", NULL);
        return;
    }
    h = xcalloc(px->nh + px->auth.n_headers + 1, sizeof *h);
    /*
     * A plain Accept (an HTTP client's default, not a Nango-Proxy-Accept) yields to
     * the provider's own Accept template, as Nango forwards only Nango-Proxy- headers.
     */
    for (size_t i = 0; i < px->nh; i++) {
        if (px->accept_plain && strcasecmp(px->hnames[i], "accept") == 0 &&
            proxy_auth_has_header(&px->auth, "accept"))
            continue;
        h[nh++] = (struct outbound_header){px->hnames[i], px->hvalues[i]};
    }
    /*
     * The provider's own headers (proxy.headers templates, the mode's Authorization): a header
     * the caller set wins, except Authorization, which is always the connection's.
     */
    for (size_t i = 0; i < px->auth.n_headers; i++) {
        bool set_by_caller = false;

        for (size_t k = 0; k < px->nh; k++)
            if (strcasecmp(px->hnames[k], px->auth.names[i]) == 0 &&
                !(px->accept_plain && strcasecmp(px->hnames[k], "accept") == 0))
                set_by_caller = true;
        if (!set_by_caller || strcasecmp(px->auth.names[i], "authorization") == 0)
            h[nh++] = (struct outbound_header){px->auth.names[i], px->auth.values[i]};
    }
    memset(&rq, 0, sizeof rq);
    rq.method = px->method;
    rq.url = px->url;
    rq.headers = h;
    rq.n_headers = nh;
    /*
     * The proxy timeout is an idle timeout: no byte for that long (waiting for the headers, or a
     * stalled body) fails the attempt. A body that keeps flowing may last up to 6 h, so a 1 GB
     * download is not cut at 60 s, and no per-request timer is needed.
     */
    rq.timeout_ms = LATCH_PROXY_MAX_STREAM_MS;
    rq.idle_timeout_ms = px->deps->cfg->proxy_timeout_ms;
    rq.follow_redirects = false;
    if (px->body_mode == BODY_BUFFERED) {
        rq.body = px->body.data ? px->body.data : "";
        rq.body_len = px->body.len;
    } else if (px->body_mode == BODY_STREAM) {
        cbs.on_body_read = on_body_read;
    }
    pthread_mutex_lock(&px->mu);
    px->mode = RESP_PENDING;
    me = ++px->attempt;
    px->refs++; /* the attempt's reference, dropped in on_done */
    px->refs++; /* ours: on_done may answer and drop every other reference before we return */
    pthread_mutex_unlock(&px->mu);
    rc = outbound_stream_start(px->ob, &rq,
                               px->body_mode == BODY_STREAM     ? -1
                               : px->body_mode == BODY_BUFFERED ? (long long)px->body.len
                                                                : 0,
                               &cbs, px, &st);
    free(h);
    if (rc != LATCH_OK) {
        proxy_unref(px);
        /* NOLINTNEXTLINE(clang-analyzer-unix.Malloc): refcounted; this function holds a ref */
        finish_plain(px, rc == LATCH_E_BUSY ? 503 : 400,
                     rc == LATCH_E_BUSY ? "busy" : "invalid_proxy_request",
                     rc == LATCH_E_BUSY ? "latch is too busy; try again."
                                        : "The upstream request could not be built.",
                     NULL);
        /* NOLINTNEXTLINE(clang-analyzer-unix.Malloc): refcounted; this is the last reference */
        proxy_unref(px);
        return;
    }
    /*
     * Attempts run one after another, but the next one may start from this attempt's on_done
     * (401 refresh, retry) on the curl thread before this thread gets here: compare with this
     * attempt's own number, never with px->attempt.
     */
    pthread_mutex_lock(&px->mu);
    if (px->done_attempt >= me) {
        /* on_done already ran for this attempt: nothing to keep */
        pthread_mutex_unlock(&px->mu);
        outbound_stream_release(st);
        proxy_unref(px);
        return;
    }
    px->st = st;
    /* the reader may have drained a paused transfer before st was known */
    unpause = px->curl_paused && px->down.len < LATCH_PROXY_RING_BYTES / 2;
    if (unpause) {
        px->curl_paused = false;
        st = st_borrow(px);
    }
    pthread_mutex_unlock(&px->mu);
    if (unpause) {
        outbound_stream_resume(st);
        st_return(px, st);
    }
    proxy_unref(px);
}

/* ---- token and URL ---- */

static bool
build_target(struct proxy *px, struct latch_err *err)
{
    char base[LATCH_MAX_URL_LEN];
    char host[256];
    const char *ep = px->endpoint;
    const char *q = px->auth.query;
    size_t bl;

    if (px->base_override != NULL) {
        latch_strlcpy(base, px->base_override, sizeof base);
    } else if (px->auth.base_url == NULL) {
        latch_err_set(err, "The provider has no proxy base URL.");
        return false;
    } else {
        latch_strlcpy(base, px->auth.base_url, sizeof base);
    }
    if (netpolicy_url_host(base, px->deps->cfg->allow_http, host, sizeof host, err) != LATCH_OK ||
        netpolicy_check_hostname(host, err) != LATCH_OK)
        return false;
    if (px->base_override != NULL) {
        bool ok = false;

        for (size_t i = 0; i < px->provider->n_proxy_allowed_hosts; i++)
            if (strcasecmp(host, px->provider->proxy_allowed_hosts[i]) == 0)
                ok = true;
        if (!ok) {
            latch_err_set(err, "Base-Url-Override host %s is not allowed for this provider.", host);
            return false;
        }
        if (!netpolicy_url_default_port(base)) {
            /* allowed_hosts names hosts, not services: another port is another server */
            latch_err_set(err, "Base-Url-Override must use the default port of its scheme.");
            return false;
        }
    }
    bl = strlen(base);
    while (bl > 0 && base[bl - 1] == '/')
        base[--bl] = '\0';
    while (*ep == '/')
        ep++;
    free(px->url);
    /* the provider's proxy.query (e.g. an API key parameter) joins the caller's query */
    px->url = xasprintf("%s/%s%s%s", base, ep, q != NULL ? (strchr(ep, '?') ? "&" : "?") : "",
                        q != NULL ? q : "");
    if (strlen(px->url) > 8000) {
        latch_err_set(err, "The upstream URL is too long.");
        return false;
    }
    return true;
}

static void
token_ready(struct proxy *px, struct refresh_result *r)
{
    struct latch_err err;
    const char *mode;
    bool token_mode, go;

    if (r->outcome == REFRESH_NOT_FOUND) {
        finish_plain(px, 404, "unknown_connection",
                     "No connection matches Connection-Id and Provider-Config-Key.", NULL);
        return;
    }
    if (r->outcome != REFRESH_OK) {
        const char *code, *msg;
        unsigned status = api_refresh_error(r, &code, &msg);

        finish_plain(px, status, code, msg, NULL);
        return;
    }
    mode = px->provider->auth_mode != NULL ? px->provider->auth_mode : "";
    token_mode = strcmp(mode, "API_KEY") != 0 && strcmp(mode, "BASIC") != 0;
    if (token_mode && json_string_value(json_object_get(r->creds, "token")) == NULL &&
        json_string_value(json_object_get(r->creds, "access_token")) == NULL) {
        finish_plain(px, 424, "invalid_credentials", "The connection has no access token.", NULL);
        return;
    }
    json_decref(px->cfg);
    px->cfg = latch_json_col(r->conn.connection_config_json);
    latch_err_clear(&err);
    proxy_auth_clear(&px->auth);
    /* every template input is validated here, before any socket (proxyauth.h) */
    if (proxy_auth_build(px->provider, px->cfg, r->creds, px->deps->cfg->allow_http, &px->auth,
                         &err) != LATCH_OK ||
        !build_target(px, &err)) {
        finish_plain(px, 400, "invalid_proxy_target", err.msg, NULL);
        return;
    }
    /* a key or password has nothing to refresh: the provider's 401 goes to the caller as is */
    if (!token_mode)
        px->refreshed_once = true;
    pthread_mutex_lock(&px->mu);
    go = px->body_mode != BODY_BUFFERED || px->body_complete;
    if (!go)
        px->upstream_wanted = true;
    pthread_mutex_unlock(&px->mu);
    if (go)
        start_attempt(px);
}

/* refresher_done_fn for the first token and for the one refreshed after a 401 */
static void
token_cb(struct refresh_result *r, void *ud)
{
    token_ready(ud, r);
}

/*
 * Worker thread (or the curl thread when the worker queue is full): the forced refresh after a
 * 401. refresher_get_fresh starts with a store read, and a store read on the curl thread would
 * hold up every other upstream transfer (the same reason oauth_cc hands its follow-up to the
 * worker). The answer comes here (synchronous) or through token_cb (worker or curl thread).
 */
static void
refresh_job(void *ud)
{
    struct proxy *px = ud;
    struct refresh_result now;

    if (refresher_get_fresh(px->deps->refresher, px->env_id, px->pck, px->cid, REFRESH_FORCE_401,
                            token_cb, px, &now)) {
        token_ready(px, &now);
        refresh_result_clear(&now);
    }
    proxy_unref(px); /* the job's reference */
}

/* Curl thread (on_done of the attempt that got the 401). */
static void
refresh_then_retry(struct proxy *px)
{
    px->refreshed_once = true;
    proxy_ref(px); /* the job's: px outlives the attempt's reference dropped by on_done */
    worker_run(px->deps->worker, refresh_job, px);
}

/* ---- upload sink (pool thread) ---- */

static bool
body_sink(void *ud, const char *data, size_t len)
{
    struct proxy *px = ud;
    bool start = false, resume_curl = false;
    struct outbound_stream *st;
    bool ret = true;

    pthread_mutex_lock(&px->mu);
    if (px->body_mode == BODY_BUFFERED) {
        if (data == NULL) {
            px->body_complete = true;
            start = px->upstream_wanted;
            px->upstream_wanted = false;
        } else if (buf_append(&px->body, data, len) != LATCH_OK) {
            /* more than Content-Length promised: drop the excess; upstream gets what was promised
             */
        }
    } else {
        if (data == NULL) {
            px->up_eof = true;
        } else if (px->up.len >= LATCH_PROXY_RING_BYTES) {
            px->up_mhd_paused = true;
            ret = false; /* not consumed: offered again after http_req_body_resume */
        } else {
            ring_put(&px->up, data, len);
        }
        if (ret && px->up_curl_waiting) {
            px->up_curl_waiting = false;
            resume_curl = true;
        }
    }
    st = resume_curl ? st_borrow(px) : NULL;
    pthread_mutex_unlock(&px->mu);
    if (st != NULL)
        outbound_stream_resume(st);
    st_return(px, st);
    if (start)
        start_attempt(px);
    return ret;
}

/* ---- the handler ---- */

static void
headers_error(struct api_ctx *c, const char *const *paths, size_t n)
{
    json_t *errs = json_array();

    for (size_t i = 0; i < n; i++) {
        const char *const p[] = {paths[i], NULL};

        api_issue(errs, "invalid_type", "Invalid input: expected string, received undefined", p);
    }
    api_error_list(c, 400, "invalid_headers", "Invalid request headers", errs);
}

void
api_proxy(struct api_ctx *c)
{
    const char *pck = http_req_header(c->req, "Provider-Config-Key");
    const char *cid = http_req_header(c->req, "Connection-Id");
    const char *v;
    const char *target = http_req_raw_target(c->req);
    struct store_integration integ;
    struct proxy *px;
    struct hdr_walk w;
    struct refresh_result now;
    long long clen = -1;

    if (pck == NULL || pck[0] == '\0' || cid == NULL || cid[0] == '\0') {
        const char *missing[2];
        size_t n = 0;

        if (pck == NULL || pck[0] == '\0')
            missing[n++] = "provider-config-key";
        if (cid == NULL || cid[0] == '\0')
            missing[n++] = "connection-id";
        headers_error(c, missing, n);
        return;
    }
    px = xcalloc(1, sizeof *px);
    pthread_mutex_init(&px->mu, NULL);
    px->refs = 1; /* the MHD side */
    px->deps = c->deps;
    px->req = c->req;
    px->ob = http_req_loop_ctx(c->req);
    if (px->ob == NULL)
        px->ob = c->deps->outbound;
    px->c = c;
    px->env_id = c->env_id;
    px->method = xstrdup(http_req_method(c->req));
    px->pck = xstrdup(pck);
    px->cid = xstrdup(cid);
    px->deadline_ms = latch_now_ms() + c->deps->cfg->proxy_timeout_ms;
    buf_init(&px->body, LATCH_PROXY_BUFFERED_BODY);
    buf_init(&px->capture, LATCH_PROXY_ERROR_CAPTURE);

    v = http_req_header(c->req, "Retries");
    if (v != NULL && v[0] != '\0') {
        const char *e = NULL;

        px->retries_left = (int)latch_strtonum(v, 0, LATCH_PROXY_MAX_RETRIES, &e);
        if (e != NULL) {
            api_error(c, 400, "invalid_headers", "Retries must be an integer from 0 to 10.");
            goto fail;
        }
    }
    v = http_req_header(c->req, "Retry-On");
    if (v != NULL && v[0] != '\0') {
        const char *p = v;

        while (*p != '\0') {
            char num[8];
            size_t n = strspn(p, "0123456789");
            const char *e = NULL;

            if (n == 0 || n > 3 || px->n_retry_on >= 16 || (p[n] != ',' && p[n] != '\0')) {
                api_error(c, 400, "invalid_headers",
                          "Retry-On must be a comma-separated list of status codes.");
                goto fail;
            }
            memcpy(num, p, n);
            num[n] = '\0';
            px->retry_on[px->n_retry_on++] = (int)latch_strtonum(num, 100, 599, &e);
            if (e != NULL) {
                api_error(c, 400, "invalid_headers", "Retry-On status codes must be 100-599.");
                goto fail;
            }
            p += n + (p[n] == ',');
        }
    }
    v = http_req_header(c->req, "Base-Url-Override");
    if (v != NULL && v[0] != '\0') {
        if (!c->deps->cfg->base_url_override) {
            api_error(
                c, 400, "base_url_override_disabled",
                "Base-Url-Override is disabled on this latch (LATCH_PROXY_BASE_URL_OVERRIDE).");
            goto fail;
        }
        px->base_override = xstrdup(v);
    }
    if (strncmp(target, "/proxy", 6) != 0 || strlen(target) > 7000) {
        api_error(c, 400, "invalid_proxy_target", "The endpoint is missing or too long.");
        goto fail;
    }
    px->endpoint = xstrdup(target + 6);
    api_op_target(c, px->method, px->endpoint);

    memset(&integ, 0, sizeof integ);
    if (store_integration_get(c->deps->store, c->env_id, pck, &integ) != LATCH_OK) {
        api_error(c, 404, "unknown_provider_config",
                  "Provider config not found for the given provider config key.");
        goto fail;
    }
    px->provider = catalog_find(c->deps->catalog, integ.provider);
    api_op_conn(c, integ.unique_key, integ.provider, cid); /* names of a known integration */
    store_integration_clear(&integ);
    if (px->provider == NULL) {
        api_error(c, 404, "unknown_provider_template", "The integration's provider is unknown.");
        goto fail;
    }
    w.px = px;
    w.ct = NULL;
    w.accept = NULL;
    http_req_headers_foreach(c->req, collect_cb, &w);
    v = http_req_header(c->req, "Content-Type");
    if (v != NULL && v[0] != '\0')
        add_header(px, "content-type", v);
    v = http_req_header(c->req, "Accept");
    if (v != NULL && v[0] != '\0' && !has_header(px, "accept")) {
        add_header(px, "accept", v);
        px->accept_plain = true;
    }

    v = http_req_header(c->req, "Content-Length");
    if (v != NULL) {
        const char *e = NULL;

        clen = latch_strtonum(v, 0, LATCH_MAX_PROXY_BODY, &e);
        if (e != NULL)
            clen = -1;
    }
    if (clen > 0 && clen <= LATCH_PROXY_BUFFERED_BODY)
        px->body_mode = BODY_BUFFERED;
    else if (clen > 0 || (clen < 0 && http_req_header(c->req, "Transfer-Encoding") != NULL))
        px->body_mode = BODY_STREAM;
    else
        px->body_mode = BODY_NONE;
    if (px->body_mode != BODY_NONE)
        http_req_set_body_sink(c->req, body_sink, px);
    http_req_log_kv(c->req, "proxy", px->provider->name);

    http_req_suspend(c->req);
    if (refresher_get_fresh(c->deps->refresher, c->env_id, pck, cid, false, token_cb, px, &now)) {
        token_ready(px, &now);
        refresh_result_clear(&now);
    }
    return;
fail:
    proxy_unref(px);
}
