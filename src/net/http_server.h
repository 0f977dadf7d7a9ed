/*
 * http_server.h - the thin adapter over libmicrohttpd. Nothing else includes microhttpd.h.
 *
 * The server runs one event loop per thread (docs/internals/threading.md), each driving its own
 * MHD daemon and the connections it accepted. For each complete request (headers + body, body
 * capped by the route's limit) it calls the dispatcher once, on a loop thread. The dispatcher fills
 * a response (http_resp_*) and returns, or calls http_req_suspend() and returns; some other thread
 * then fills the response and calls http_req_resume() (this is how outbound calls avoid holding a
 * loop thread). Every response gets X-Request-Id and the CORS headers; one logfmt line per request
 * is written when it completes.
 *
 * Ownership: struct http_req is owned by the server; it is valid from the dispatch call until
 * the response is sent. Strings returned by http_req_* are borrowed for that lifetime.
 * Threads: http_req_* and http_resp_* may be called by one thread at a time per request
 * (the loop thread during dispatch, or the resuming thread while suspended).
 */
#ifndef LATCH_HTTP_SERVER_H
#define LATCH_HTTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "util/rc.h"

struct http_server;
struct http_req;

/* Called once per complete request on a loop thread. */
typedef void (*http_dispatch_fn)(struct http_req *req, void *ud);
/*
 * Called after headers arrive and before the body is read, to learn the body cap for this
 * method+path (0 = no body allowed). Bodies beyond it get 413 without being buffered.
 */
typedef size_t (*http_body_limit_fn)(const char *method, const char *path, void *ud);
/*
 * Optional streaming sink for large bodies (the proxy). If it returns true for a request, the
 * body is not buffered: the dispatcher is called right after the headers, and body bytes are
 * delivered with http_req_set_body_sink(). Return false to buffer as usual.
 */
typedef bool (*http_stream_body_fn)(const char *method, const char *path, void *ud);
/*
 * Optional check at the headers of a request that announces a body, before any of it is read
 * (credentials): return true to go on, or set an error response (http_resp_*) and return false;
 * the response is then sent at once, the body is never read and the connection is closed.
 * Request accessors work. App data set here is dropped when the check fails and kept for
 * dispatch when it passes (so dispatch need not redo the work, e.g. the authentication).
 */
typedef bool (*http_precheck_fn)(struct http_req *req, void *ud);

/*
 * Connection upgrade (the WebSocket endpoint). A GET for exactly upgrade_path that carries an
 * Upgrade header is not dispatched: upgrade_check runs at its headers on the connection's loop
 * thread. It either adds the 101's headers with http_resp_header (Upgrade, Connection,
 * Sec-WebSocket-Accept) and returns true, or sets an error response (http_resp_error) and
 * returns false; the error goes out with Connection: close. Other requests for upgrade_path
 * (a plain GET) are dispatched as usual. Once MHD has sent the 101, upgraded runs on the
 * loop thread with the socket and the bytes MHD read past the request head (extra, borrowed for the
 * call); it must not block. From then on the application does all I/O on fd but never closes it:
 * it calls http_upgraded_close(u) exactly once, from any thread, and MHD closes the socket. An
 * upgraded connection keeps counting against conn_limit and conn_limit_ip, and MHD's idle
 * timeout and the header/body deadlines no longer apply to it. Every upgraded connection must
 * be closed before http_server_stop (MHD frees u when it stops). The log line of the request
 * (status 101) is written when MHD is done with it.
 */
struct http_upgraded;
typedef bool (*http_upgrade_check_fn)(struct http_req *req, void *ud);
typedef void (*http_upgraded_fn)(void *ud, struct http_upgraded *u, int fd, const char *extra,
                                 size_t extra_len);
/* Any thread, once per upgraded connection: MHD closes its socket. */
void http_upgraded_close(struct http_upgraded *u);

/*
 * Optional: work each loop thread drives next to its connections (app.c: a per-loop outbound
 * for the proxy). attach runs on the loop thread before it serves and returns the loop's
 * context (NULL: none, the loop runs without it). fd is watched for input; run is called on
 * the loop thread when fd was readable (fd_ready) or timeout_ms (-1: none, 0: at once) passed.
 * detach runs on the loop thread when the server stops, after its requests were answered or
 * forced and before MHD closes the connections.
 */
struct http_loop_hooks {
    void *(*attach)(unsigned idx, void *ud);
    int (*fd)(void *ctx);
    long (*timeout_ms)(void *ctx);
    void (*run)(void *ctx, bool fd_ready);
    void (*detach)(void *ctx);
    void *ud;
};

struct http_server_opts {
    const char *bind_addr;   /* "127.0.0.1" or "0.0.0.0"; NULL = all */
    uint16_t port;           /* 0 = ephemeral; read back with http_server_port() */
    unsigned threads;        /* pool size; 0 = number of CPUs */
    unsigned conn_limit;     /* max concurrent connections */
    unsigned conn_timeout_s; /* idle keep-alive timeout */
    unsigned conn_limit_ip;  /* max concurrent connections per client address; 0 = conn_limit */
    /*
     * Addresses/CIDR blocks of reverse proxies whose X-Forwarded-For names the client
     * (trustproxy.h); http_req_client_ip() then gives that client. NULL = trust no one.
     */
    const char *trusted_proxies;
    /*
     * Deadlines MHD's idle timeout cannot give (it restarts at every byte): the request head
     * must be complete within header_timeout_s of the connection's start (of the previous
     * response on a kept-alive connection, then at least conn_timeout_s), a buffered body within
     * body_timeout_s of the request line. Past them the connection is closed. 0 = 10 s / 30 s.
     */
    unsigned header_timeout_s;
    unsigned body_timeout_s;
    size_t header_limit; /* bytes for request line + headers */
    http_dispatch_fn dispatch;
    http_body_limit_fn body_limit;
    http_stream_body_fn stream_body;          /* may be NULL */
    http_precheck_fn precheck;                /* may be NULL */
    const struct http_loop_hooks *loop_hooks; /* may be NULL; copied */
    /*
     * Bytes all buffered request bodies together may hold (0 = no limit). A body that does not
     * fit gets 503 with Retry-After: at the headers when Content-Length is announced, at its end
     * for chunked uploads (the excess is read and dropped, as for 413).
     */
    size_t body_budget;
    void *ud;
    /* Connection upgrade (see http_upgrade_check_fn); off when upgrade_path is NULL. */
    const char *upgrade_path; /* copied */
    http_upgrade_check_fn upgrade_check;
    http_upgraded_fn upgraded;
    void *upgrade_ud;
};

latch_rc http_server_start(const struct http_server_opts *o, struct http_server **out,
                           struct latch_err *err);
uint16_t http_server_port(const struct http_server *s);
/*
 * Stops accepting, waits (up to 10 s) for in-flight requests, including suspended ones - so the
 * application must always resume what it suspended - then frees. NULL is a no-op.
 */
void http_server_stop(struct http_server *s);

/* ---- request accessors (borrowed strings) ---- */
const char *http_req_method(const struct http_req *r);
/* Path without the query string, percent-decoded by MHD. */
const char *http_req_path(const struct http_req *r);
/* The raw request target as received (path + "?" + query), for the proxy. */
const char *http_req_raw_target(const struct http_req *r);
/* Case-insensitive header lookup; NULL if absent. */
const char *http_req_header(const struct http_req *r, const char *name);
/* Calls cb for every request header, in arrival order; stop by returning false. */
void http_req_headers_foreach(const struct http_req *r,
                              bool (*cb)(const char *name, const char *value, void *ud), void *ud);
/* First value of a query argument (decoded); NULL if absent. */
const char *http_req_query(const struct http_req *r, const char *name);
/* Every query argument in order (decoded key and value; value may be NULL for "?flag"). */
void http_req_query_foreach(const struct http_req *r,
                            bool (*cb)(const char *key, const char *value, void *ud), void *ud);
size_t http_req_query_count(const struct http_req *r);
/* The buffered body (NUL-terminated for convenience; may contain NULs). */
const char *http_req_body(const struct http_req *r, size_t *len);
const char *http_req_id(const struct http_req *r);
const char *http_req_client_ip(const struct http_req *r);
/* Monotonic start time in microseconds. */
uint64_t http_req_start_us(const struct http_req *r);
/* The status sent (0 before a response was queued, or when the client went away first). */
unsigned http_req_status(const struct http_req *r);
/* Body bytes received and response bytes sent so far. */
uint64_t http_req_bytes_in(const struct http_req *r);
uint64_t http_req_bytes_out(const struct http_req *r);
/* The route pattern of the request, for metrics labels (static string; default "unmatched"). */
void http_req_set_route(struct http_req *r, const char *pattern);

/* A per-request slot for the application (e.g. router captures, auth context). Freed with fn. */
void http_req_set_app_data(struct http_req *r, void *data, void (*free_fn)(void *));
void *http_req_app_data(const struct http_req *r);
/* Extra key=value pairs for the request's log line (logfmt-safe; copied). */
void http_req_log_kv(struct http_req *r, const char *key, const char *value);

/* ---- responses: exactly one per request ---- */
/* JSON body; takes ownership of body (json_decref'd). Content-Type application/json. */
void http_resp_json(struct http_req *r, unsigned status, json_t *body);
/*
 * The same for a body that carries secrets (decrypted credentials): every copy latch makes of
 * the serialised text is wiped before it is freed, including the response buffer after MHD sent
 * it. The caller still owns wiping what it kept.
 */
void http_resp_json_secret(struct http_req *r, unsigned status, json_t *body);
/* {"error":{"code":code,"message":message}} */
void http_resp_error(struct http_req *r, unsigned status, const char *code, const char *message);
/* Raw bytes; copied unless is_static (then borrowed forever). */
void http_resp_bytes(struct http_req *r, unsigned status, const char *content_type,
                     const void *data, size_t len, bool is_static);
/*
 * Secret bytes (a prepared answer carrying credentials): takes owned (xmalloc'd, NUL-terminated
 * text of len bytes without inner NULs) and wipes it before it is freed, after MHD sent it.
 */
void http_resp_bytes_secret(struct http_req *r, unsigned status, const char *content_type,
                            char *owned, size_t len);
/* Adds a header to the pending response; call before http_resp_* (headers are collected). */
void http_resp_header(struct http_req *r, const char *name, const char *value);

/*
 * Streaming response (the proxy): the server pulls bytes with read_cb from a loop thread.
 * read_cb returns bytes written into buf (>0), 0 when no data is ready yet (the server then
 * suspends the connection until http_req_stream_ready() is called), -1 at end of stream,
 * -2 on error (connection closed). free_cb is called once when the response is done.
 * total_len < 0 means unknown length (chunked).
 */
typedef long (*http_stream_read_fn)(void *ud, char *buf, size_t max);
void http_resp_stream(struct http_req *r, unsigned status, long long total_len,
                      http_stream_read_fn read_cb, void (*free_cb)(void *), void *ud);
/* The attach context of the loop that owns req's connection (http_loop_hooks); or NULL. */
void *http_req_loop_ctx(const struct http_req *req);

/* Any thread: wake a streaming response that returned 0. */
void http_req_stream_ready(struct http_req *r);

/* ---- asynchronous completion ---- */
/* During dispatch: the response will come later from another thread. */
void http_req_suspend(struct http_req *r);
/* Any thread, once, after http_resp_* was called for a suspended request. */
void http_req_resume(struct http_req *r);

/*
 * Streaming request bodies (only for requests accepted by stream_body): the server calls
 * sink(ud, data, len) for each chunk and sink(ud, NULL, 0) at the end. Returning false means "not
 * consumed": delivery pauses and the same bytes are offered again after http_req_body_resume().
 * Once the application has called http_req_resume the sink is never called again. A client that
 * disconnects mid-upload is NOT signalled to the sink: the application's own deadline covers it.
 * Set during dispatch.
 */
typedef bool (*http_body_sink_fn)(void *ud, const char *data, size_t len);
void http_req_set_body_sink(struct http_req *r, http_body_sink_fn sink, void *ud);
void http_req_body_resume(struct http_req *r);

#endif
