/*
 * outbound.h - every outbound HTTP call of latch: one libcurl multi handle on its own thread
 * (the shared instance), or driven by an HTTP loop thread (embedded: the proxy's, see below).
 *
 * Callers (pool threads) submit a job and return; the curl thread runs it and calls the done
 * callback on the curl thread. The callback must be short (copy what it needs, resume an MHD
 * connection, signal a condvar). A synchronous wrapper exists for the CLI and tests.
 *
 * Policy (applied to every job):
 * - https only, unless opts.allow_http; certificate verification always on; opts.ca_file adds
 *   a trusted CA bundle (LATCH_CA_FILE); opts.resolve is curl's "host:port:addr[,..]" list
 *   (LATCH_RESOLVE), separated by commas or spaces.
 * - no redirects unless the job asks; connect and total timeouts; response body capped
 *   (LATCH_E_TOO_LARGE past it, connection dropped).
 * - SSRF: the resolved address of every socket is checked (netpolicy.h) in
 *   CURLOPT_OPENSOCKETFUNCTION; loopback/private/link-local/metadata addresses are refused unless
 *   the operator pinned that host with opts.resolve or set opts.allow_private. A refused
 *   connect fails the job with LATCH_E_DENIED and no socket is opened.
 * - connections are reused per host (keep-alive pool of the multi handle).
 *
 * Threads: outbound_submit / outbound_fetch_sync / outbound_cancel are thread-safe.
 */
#ifndef LATCH_OUTBOUND_H
#define LATCH_OUTBOUND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/rc.h"

struct outbound;

struct outbound_opts {
    const char *resolve; /* LATCH_RESOLVE or NULL */
    const char *ca_file; /* LATCH_CA_FILE or NULL */
    bool allow_http;     /* tests only */
    bool allow_private;  /* operator: allow private/loopback destinations everywhere */
    unsigned max_jobs;   /* queue bound; 0 = LATCH_OUTBOUND_MAX_JOBS */
};

latch_rc outbound_start(const struct outbound_opts *o, struct outbound **out,
                        struct latch_err *err);
/*
 * Cancels pending jobs (their callbacks run with LATCH_E_UNAVAILABLE) and joins the thread;
 * later submissions fail with LATCH_E_UNAVAILABLE. ob stays valid until outbound_stop. Owner
 * thread; idempotent.
 */
void outbound_shutdown(struct outbound *ob);
/* outbound_shutdown, then frees. NULL is a no-op. */
void outbound_stop(struct outbound *ob);

/*
 * Embedded instance (the proxy's, one per HTTP loop thread; docs/internals/threading.md): its
 * own curl multi (so its own keep-alive pool) but no thread. The owner's event loop watches
 * outbound_embedded_fd (an epoll fd: readable when a socket of it or a wake-up is ready) and
 * calls outbound_embedded_run when it is readable (fd_ready) or when
 * outbound_embedded_timeout_ms has passed (0: run again before sleeping; -1: nothing due).
 * Every callback then runs on the owner's thread. Submitting, resuming and cancelling stay
 * thread-safe; from the owner's own thread they cost no system call. The policy (pins, CA
 * bundle, allow_http/private, queue bound) is parent's, borrowed: parent must outlive it.
 * attach/run/timeout and outbound_stop: the owner's thread only (stop also after the owner
 * ended). outbound_fetch_sync must not be called on the owner's thread.
 */
latch_rc outbound_start_embedded(const struct outbound *parent, struct outbound **out,
                                 struct latch_err *err);
void outbound_embedded_attach(struct outbound *ob);
int outbound_embedded_fd(const struct outbound *ob);
long outbound_embedded_timeout_ms(struct outbound *ob);
void outbound_embedded_run(struct outbound *ob, bool fd_ready);

struct outbound_header {
    const char *name;
    const char *value;
};

struct outbound_req {
    const char *method; /* "GET", "POST", ... */
    const char *url;    /* absolute; validated with curl_url() */
    const struct outbound_header *headers;
    size_t n_headers;
    const void *body; /* copied at submit */
    size_t body_len;
    long connect_timeout_ms; /* 0 = LATCH_OUTBOUND_CONNECT_TIMEOUT_MS */
    long timeout_ms;         /* total; 0 = LATCH_OUTBOUND_TOKEN_TIMEOUT_MS */
    long idle_timeout_ms;    /* abort when no byte moves for this long (s resolution);
                                0 = none. LATCH_E_TIMEOUT like the total timeout. */
    size_t max_response;     /* body cap; 0 = LATCH_MAX_TOKEN_RESPONSE */
    bool follow_redirects;   /* false for token calls */
};

struct outbound_resp {
    latch_rc rc; /* LATCH_OK if an HTTP response arrived (any status) */
    long status; /* HTTP status, 0 if none */
    char *body;  /* owned, NUL-terminated; may be NULL when empty */
    size_t body_len;
    char *content_type;  /* owned or NULL */
    char *retry_after;   /* owned or NULL: the Retry-After header */
    char **header_names; /* owned arrays of response headers (last response only) */
    char **header_values;
    size_t n_headers;
    double total_time_s;
    char error[256]; /* curl's message for rc != OK (no secrets: URLs are not included) */
};
void outbound_resp_clear(struct outbound_resp *r);

/* Called once on the curl thread; resp is owned by the callee (clear it when done). */
typedef void (*outbound_done_fn)(struct outbound_resp *resp, void *ud);

/* Copies req; LATCH_E_BUSY if the queue is full, LATCH_E_INVAL for a bad URL/method. */
latch_rc outbound_submit(struct outbound *ob, const struct outbound_req *req, outbound_done_fn done,
                         void *ud);
/* Blocking convenience (must not be called from the curl thread). */
latch_rc outbound_fetch_sync(struct outbound *ob, const struct outbound_req *req,
                             struct outbound_resp *out);

/* Counters for tests/metrics. */
uint64_t outbound_sockets_opened(const struct outbound *ob);
uint64_t outbound_sockets_denied(const struct outbound *ob);

/*
 * Streaming jobs (the proxy). on_headers is called once with status and headers (right before
 * the first on_data, before on_done, or at the end of the curl loop iteration in which the
 * header block completed, whichever comes first, so a consumer is woken once), on_data for
 * each body chunk (return false to pause; resume with outbound_stream_resume), on_done at the
 * end. on_body_read supplies the request body (return bytes, 0 = pause until
 * outbound_stream_resume, -1 = end). All callbacks run on the curl thread.
 */
struct outbound_stream;
struct outbound_stream_cbs {
    void (*on_headers)(void *ud, long status, char **names, char **values, size_t n);
    bool (*on_data)(void *ud, const char *data, size_t len);
    long (*on_body_read)(void *ud, char *buf, size_t max); /* NULL: use req->body */
    void (*on_done)(void *ud, latch_rc rc, const char *error);
};
latch_rc outbound_stream_start(struct outbound *ob, const struct outbound_req *req,
                               long long body_len, const struct outbound_stream_cbs *cbs, void *ud,
                               struct outbound_stream **out);
/* Any thread: wake a paused stream (data sink drained or body source refilled). */
void outbound_stream_resume(struct outbound_stream *st);
/* Any thread: abort; on_done still runs once (LATCH_E_UNAVAILABLE). */
void outbound_stream_cancel(struct outbound_stream *st);
/*
 * Drops the caller's reference (given by outbound_stream_start when out != NULL). Exactly once,
 * any thread, before or after on_done. Until then resume/cancel are safe; after on_done they
 * do nothing.
 */
void outbound_stream_release(struct outbound_stream *st);

#endif
