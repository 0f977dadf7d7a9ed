/*
 * http_server.c - the libmicrohttpd (0.9.75) adapter behind http_server.h.
 *
 * The per-request state machine, the threads that touch a request and the lifetime rules are
 * described in docs/internals/http_server.md; keep the two in step.
 *
 * Threads (docs/internals/threading.md): one event loop per thread, each owning one MHD daemon
 * in external-event mode, the connections it accepted and their slots (no lock); admission
 * counts for all daemons under srv->admit.mu.
 *
 * Locking: srv->mu (live list, stopping flag) may be taken before req->mu, never after.
 * MHD_suspend_connection/MHD_resume_connection are only called with req->mu held, so "is MHD
 * holding this connection suspended" (req->susp) is always exact: a resume can never precede
 * the suspend it undoes.
 */
#include "net/http_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <microhttpd.h>
#include <openssl/rand.h>

#include "core/metrics.h"
#include "core/latch_limits.h"
#include "core/log.h"
#include "net/trustproxy.h"
#include "util/buf.h"
#include "util/str.h"
#include "util/xalloc.h"

/* Longest client-supplied X-Request-Id we reuse (chars of [A-Za-z0-9._-]). */
#define HTTP_REQ_ID_MAX 64
/*
 * Block size of streaming responses (bytes asked from read_cb at most). MHD allocates and zeroes
 * it with each response, so a body of known small length gets a block its size (at least
 * HTTP_STREAM_BLOCK_MIN): a 352-byte proxied answer no longer pays for zeroing 32 KiB.
 */
#define HTTP_STREAM_BLOCK (32 * 1024)
#define HTTP_STREAM_BLOCK_MIN 1024
/*
 * A chunked upload that overflows the route's cap cannot be answered at once (MHD 0.9.75
 * refuses MHD_queue_response mid-upload), so we read and drop up to this many further bytes
 * to still answer 413; past it the connection is closed without an answer.
 */
#define HTTP_DISCARD_MAX (1024 * 1024)
/* Headers an application may add to one response. */
#define HTTP_MAX_RESP_HEADERS 64
/* Bytes of extra logfmt pairs per request line (http_req_log_kv). */
#define HTTP_LOG_KV_MAX 512
/* How long http_server_stop waits for dispatched requests before forcing them. */
#define HTTP_STOP_GRACE_MS 10000
/* Defaults for zero-valued options. */
#define HTTP_DEFAULT_CONN_LIMIT 1024
#define HTTP_DEFAULT_TIMEOUT_S 30
#define HTTP_DEFAULT_HEADER_TIMEOUT_S 10
#define HTTP_DEFAULT_BODY_TIMEOUT_S 30
#define HTTP_MIN_HEADER_LIMIT 4096
#define HTTP_MAX_POOL_THREADS 256
/* How often the reaper looks at connections that are still receiving a request. */
#define HTTP_REAP_PERIOD_MS 100

#define JSON_CTYPE "application/json; charset=utf-8"

static const char cors_expose[] =
    "Authorization, Etag, Content-Type, Content-Length, X-Nango-Signature, X-RateLimit-Limit, "
    "X-RateLimit-Remaining, X-RateLimit-Reset, X-Request-Id";
static const char cors_allow_methods[] = "GET,HEAD,PUT,PATCH,POST,DELETE";
static const char cors_allow_headers[] =
    "Authorization, Content-Type, Accept, Origin, X-Requested-With, Nango-Activity-Log-Id, "
    "Nango-Is-Dry-Run, Nango-Is-Sync, Provider-Config-Key, Connection-Id, Sentry-Trace, Baggage";

struct kv {
    char *k; /* owned */
    char *v; /* owned; may be NULL for a query flag */
};

enum req_state {
    RS_NEW,      /* allocated at the request line; headers not yet seen */
    RS_BODY,     /* buffering the body */
    RS_DISPATCH, /* inside the dispatcher */
    RS_WAIT_APP, /* dispatcher suspended; waiting for http_req_resume */
    RS_READY,    /* response complete; queue it at the next access-handler call */
    RS_SENDING,  /* response queued to MHD */
};

/* Why MHD currently holds the connection suspended (SUSP_NONE = not suspended). */
enum susp_reason { SUSP_NONE = 0, SUSP_APP, SUSP_SINK, SUSP_STREAM };

enum resp_kind { RESP_NONE = 0, RESP_BYTES, RESP_STREAM, RESP_UPGRADE };

struct http_req {
    struct http_server *srv;
    struct MHD_Connection *conn;
    pthread_mutex_t mu;
    atomic_int refs; /* MHD (until completion) + app (suspend..resume) + stream ctx */

    /* guarded by mu */
    enum req_state state;
    enum susp_reason susp;
    bool app_suspended; /* http_req_suspend was called */
    bool resumed;       /* http_req_resume was called */
    bool completed;     /* MHD is done with the connection's request; conn is dangling */
    bool body_kick;     /* http_req_body_resume arrived while not suspended */
    bool stream_kick;   /* http_req_stream_ready arrived while not suspended */
    bool force_end;     /* server stop gave up waiting: end streams with an error */

    /* loop thread only (set before dispatch; read-only for everyone during dispatch) */
    bool started;
    bool counted; /* in srv->live list */
    bool stream_in;
    bool body_streaming;
    bool too_large;
    bool over_budget;    /* the body did not fit the server's budget: 503 at the end */
    size_t body_charged; /* this request's share of srv->body_charged */
    bool sink_end_sent;
    struct conn_slot *slot; /* the connection's slot while MHD owes the completion callback */
    struct http_loop *loop; /* the loop thread that owns the connection */
    char *method;
    char *path;
    char *raw_target;
    char id[HTTP_REQ_ID_MAX + 1];
    char ip[INET6_ADDRSTRLEN];
    const char *route; /* static route pattern for metrics (http_req_set_route), or NULL */
    uint64_t start_us;
    struct kv *hdrs;
    size_t n_hdrs;
    struct kv *args;
    size_t n_args, args_total;
    size_t body_limit;
    struct buf body;
    unsigned long long bytes_in, bytes_out, discarded;
    http_body_sink_fn sink;
    void *sink_ud;

    /* pending response (guarded by mu until RS_SENDING) */
    unsigned status;
    enum resp_kind kind;
    char *resp_data; /* owned unless resp_static */
    const char *resp_static_data;
    size_t resp_len;
    char *ctype;     /* owned */
    bool close_conn; /* add "Connection: close" */
    bool resp_wipe;  /* resp_data holds secrets: wipe before free (NUL-terminated text) */
    struct kv *resp_hdrs;
    size_t n_resp_hdrs;
    http_stream_read_fn read_cb;
    void (*stream_free)(void *);
    void *stream_ud;
    long long stream_len;
    unsigned sent_status;

    void *app_data;
    void (*app_free)(void *);
    struct buf log_kv;

    struct http_req *live_prev, *live_next; /* guarded by srv->mu */
};

struct conn_slot;
struct http_server;

/*
 * Admission across the loops' daemons: each MHD daemon only sees its own connections, so the
 * global limit and the per-address limit are counted here, for all of them, in MHD's accept
 * policy callback (reserve) and its "closed" notification (release). Open addressing with
 * backward-shift deletion; at most conn_limit addresses are ever counted, the table has twice
 * as many entries, so it never fills. No table when the per-address limit is the global one.
 */
struct admit_key {
    unsigned char a[16];
    unsigned char len; /* 4 or 16; 0 = not an IP peer (not counted per address) */
};

struct admit_ent {
    struct admit_key k;
    unsigned n; /* 0 = free */
};

struct admit {
    pthread_mutex_t mu;
    unsigned total, limit, limit_ip;
    struct admit_ent *tab; /* NULL when limit_ip >= limit */
    size_t mask;
};

/*
 * One event loop per HTTP thread (docs/internals/threading.md). The thread owns one MHD daemon
 * in external-event mode (its epoll fd is watched by the loop's own epoll) and every
 * connection that daemon accepted: MHD callbacks, the slot list and the reaper's looks all run
 * here, so none of them takes a lock. Other threads reach the loop through MHD's ITC
 * through wake_fd: MHD 0.9.75 creates no ITC for a daemon without an internal thread, so
 * MHD_resume_connection only sets a flag that the loop's next MHD_run acts on; req_mhd_resume
 * wakes the loop (the eventfd, or just "kick" on the loop's own thread). cmd carries quiesce and
 * exit.
 */
enum { LOOP_CMD_QUIESCE = 1, LOOP_CMD_EXIT = 2 };

struct http_loop {
    struct http_server *srv;
    struct MHD_Daemon *d;
    int ep;      /* epoll: MHD's epoll fd and wake_fd */
    int wake_fd; /* eventfd: a connection was resumed, or cmd was set */
    atomic_int cmd;
    bool kick;           /* resumed from the loop's own thread: run MHD again before sleeping */
    int mhd_fd;          /* MHD's epoll fd, watched by ep */
    uint64_t mhd_due_us; /* MHD's next timeout (now_us clock) */
    bool quiesced;       /* guarded by srv->mu */
    bool started;
    pthread_t th;
    struct conn_slot *conns; /* this loop's open connections (loop thread only) */
    unsigned idx;
    void *hook_ctx; /* opts.loop_hooks->attach's context, or NULL */
    int hook_fd;
    uint64_t next_reap_us;
    /* the admission accept_policy just granted and STARTED has not claimed yet */
    bool pending;
    struct admit_key pending_key;
};

struct http_server {
    struct http_loop *loops;
    unsigned nloops;
    MHD_socket lfd; /* the listening socket all daemons share */
    struct admit admit;
    uint16_t port;
    struct http_loop_hooks hooks; /* attach == NULL: none */
    http_dispatch_fn dispatch;
    http_body_limit_fn body_limit;
    http_stream_body_fn stream_body;
    http_precheck_fn precheck;
    void *ud;
    struct trustproxy *trust; /* peers whose X-Forwarded-For is believed; NULL = none */
    size_t body_budget;       /* 0 = unlimited */
    char *upgrade_path;       /* owned; NULL = no connection upgrade */
    http_upgrade_check_fn upgrade_check;
    http_upgraded_fn upgraded;
    void *upgrade_ud;
    atomic_size_t upgraded_open; /* handed to the application, not yet closed by it */
    atomic_size_t body_charged;  /* bytes reserved by buffered bodies now */

    /* deadlines the loops' reaper enforces: see "connections still receiving" below */
    uint64_t header_timeout_us; /* first request of a connection */
    uint64_t idle_header_us;    /* kept-alive: max(header timeout, idle timeout) */
    uint64_t body_timeout_us;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stopping;
    size_t live; /* dispatched requests not yet freed */
    struct http_req *live_head;
};

/* The loop whose thread is running this code; NULL on every other thread. */
static _Thread_local struct http_loop *this_loop;

static void loop_wake(struct http_loop *lp);

/* With r->mu held: MHD_resume_connection, and the wake-up MHD does not give in external mode. */
static void
req_mhd_resume(struct http_req *r)
{
    MHD_resume_connection(r->conn);
    if (r->loop == NULL)
        return;
    if (r->loop == this_loop)
        r->loop->kick = true;
    else
        loop_wake(r->loop);
}

/* What the content reader needs; owned by the MHD response, freed by its free callback. */
struct stream_ctx {
    struct http_req *r; /* holds one reference */
    http_stream_read_fn read_cb;
    void (*free_cb)(void *);
    void *ud;
};

static uint64_t
now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void
lock(pthread_mutex_t *m)
{
    if (pthread_mutex_lock(m) != 0)
        abort();
}

static void
unlock(pthread_mutex_t *m)
{
    if (pthread_mutex_unlock(m) != 0)
        abort();
}

/*
 * Per connection (MHD's socket context; MHD thread of the connection only): the request whose
 * completion callback MHD still owes. libmicrohttpd 0.9.75 drops a request without calling it
 * when the request line's query arguments exhaust the connection's memory pool (some 500
 * "a=b&" in a 2 KiB URL): the request made in on_uri would leak. The connection's close
 * releases it instead.
 *
 * The slot is also what the loop's reaper sees of a connection (its fd and phase; loop thread
 * only). It is on the loop's conns from MHD's "started" notification to its "closed" one, which
 * MHD sends before it closes the socket, so the reaper never touches a reused descriptor.
 */
/*
 * What a connection is waiting for, as far as the reaper is concerned. PH_IDLE and PH_BODY are
 * watched for a client that shut its write side: a body (or a next request) that can no longer
 * arrive. MHD 0.9.75 notices such an EOF only at its idle timeout when it arrives after the head
 * was parsed, or on a kept-alive connection.
 */
enum conn_phase {
    PH_IDLE, /* before or between requests (MHD's idle timeout covers it) */
    PH_BODY, /* reading a buffered request body */
    PH_BUSY, /* dispatched, streaming, or answering: not the reaper's business */
};

struct conn_slot {
    struct http_req *cur;

    /* the connection's loop thread only */
    struct http_loop *lp; /* NULL when MHD gave no descriptor: never reaped */
    struct admit_key key; /* admission held, released when the connection closes */
    bool admitted;
    MHD_socket fd;
    enum conn_phase phase;
    unsigned long long progress; /* body bytes taken so far */
    unsigned long long eof_at;   /* progress when the reaper first saw EOF */
    uint64_t deadline_us;        /* PH_IDLE / PH_BODY must end before this (now_us clock) */
    bool served;                 /* a request was answered: later heads wait as kept-alive */
    bool eof_seen;
    bool reaped;   /* shut down by the reaper; MHD closes it */
    bool upgraded; /* handed to the application (pool thread only): never PH_IDLE again */
    struct conn_slot *prev, *next;
};

/* Enters phase ph; its deadline is counted from from_us (PH_IDLE: now; PH_BODY: request line). */
static void
slot_set(struct conn_slot *cs, enum conn_phase ph, uint64_t from_us)
{
    struct http_server *s;

    if (cs == NULL || cs->lp == NULL)
        return;
    s = cs->lp->srv;
    cs->phase = ph;
    cs->eof_seen = false;
    if (ph == PH_IDLE)
        cs->deadline_us = from_us + (cs->served ? s->idle_header_us : s->header_timeout_us);
    else if (ph == PH_BODY)
        cs->deadline_us = from_us + s->body_timeout_us;
}

static void
slot_progress(struct conn_slot *cs, size_t n)
{
    if (cs != NULL)
        cs->progress += n;
}

/* ---------------------------------------------------------------------------------------- */
/* request lifetime */

static void
kv_free_array(struct kv *a, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(a[i].k);
        free(a[i].v);
    }
    free(a);
}

/* Drops the pending response; returns the stream free callback the caller must run unlocked. */
static void
resp_clear_locked(struct http_req *r, void (**free_fn)(void *), void **free_ud)
{
    *free_fn = NULL;
    *free_ud = NULL;
    if (r->kind == RESP_STREAM) {
        *free_fn = r->stream_free;
        *free_ud = r->stream_ud;
    }
    if (r->resp_wipe && r->resp_data != NULL)
        explicit_bzero(r->resp_data, r->resp_len);
    free(r->resp_data);
    r->resp_data = NULL;
    r->resp_wipe = false;
    r->resp_static_data = NULL;
    r->resp_len = 0;
    r->read_cb = NULL;
    r->stream_free = NULL;
    r->stream_ud = NULL;
    r->kind = RESP_NONE;
    r->status = 0;
    free(r->ctype);
    r->ctype = NULL;
}

static void req_id_generate(char *out);
static void client_ip(struct MHD_Connection *conn, char *out, size_t out_size);

/* Loop thread, at the request line (headers not parsed yet; client address known). */
static struct http_req *
req_new(struct http_server *s, struct MHD_Connection *conn, const char *uri)
{
    struct http_req *r = xcalloc(1, sizeof *r);

    r->srv = s;
    r->conn = conn;
    if (pthread_mutex_init(&r->mu, NULL) != 0)
        abort();
    atomic_init(&r->refs, 1);
    r->state = RS_NEW;
    r->raw_target = xstrdup(uri != NULL ? uri : "");
    r->start_us = now_us();
    req_id_generate(r->id); /* replaced by a sane client X-Request-Id once headers are in */
    client_ip(conn, r->ip, sizeof r->ip);
    buf_init(&r->body, 0);
    buf_init(&r->log_kv, HTTP_LOG_KV_MAX);
    return r;
}

static void
req_release(struct http_req *r)
{
    struct http_server *s = r->srv;
    void (*sfree)(void *);
    void *sud;

    if (atomic_fetch_sub(&r->refs, 1) != 1)
        return;
    if (r->body_charged > 0)
        atomic_fetch_sub(&s->body_charged, r->body_charged);
    if (r->counted) {
        lock(&s->mu);
        if (r->live_prev != NULL)
            r->live_prev->live_next = r->live_next;
        else
            s->live_head = r->live_next;
        if (r->live_next != NULL)
            r->live_next->live_prev = r->live_prev;
        s->live--;
        pthread_cond_broadcast(&s->cv);
        unlock(&s->mu);
    }
    resp_clear_locked(r, &sfree, &sud);
    if (sfree != NULL)
        sfree(sud);
    if (r->app_free != NULL)
        r->app_free(r->app_data);
    kv_free_array(r->hdrs, r->n_hdrs);
    kv_free_array(r->args, r->n_args);
    kv_free_array(r->resp_hdrs, r->n_resp_hdrs);
    buf_free(&r->body);
    buf_free(&r->log_kv);
    free(r->method);
    free(r->path);
    free(r->raw_target);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

/* ---------------------------------------------------------------------------------------- */
/* request parsing (first access-handler call) */

static bool
req_id_sane(const char *s)
{
    size_t n = 0;

    if (s == NULL || *s == '\0')
        return false;
    for (; s[n] != '\0'; n++) {
        unsigned char c = (unsigned char)s[n];

        if (n >= HTTP_REQ_ID_MAX)
            return false;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

static void
random_fill(unsigned char *b, size_t len)
{
    if (RAND_bytes(b, (int)len) == 1)
        return;
    for (size_t got = 0; got < len;) {
        ssize_t n = getrandom(b + got, len - got, 0);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            abort(); /* no randomness at all: nothing sane to do */
        }
        got += (size_t)n;
    }
}

/*
 * Request ids are for correlating logs, not secrets: a per-thread splitmix64 sequence from a
 * random seed (distinct within a thread; across threads a clash needs two random 64-bit
 * starting points to land within a few million steps of each other). It spares every request a
 * DRBG call and the getpid() OpenSSL makes in it.
 */
static void
req_id_generate(char *out)
{
    static const char hex[] = "0123456789abcdef";
    static _Thread_local uint64_t state;
    static _Thread_local bool seeded;
    uint64_t z;

    if (!seeded) {
        random_fill((unsigned char *)&state, sizeof state);
        seeded = true;
    }
    z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    for (int i = 0; i < 16; i++)
        out[i] = hex[(z >> (60 - 4 * i)) & 15];
    out[16] = '\0';
}

static void
client_ip(struct MHD_Connection *conn, char *out, size_t out_size)
{
    const union MHD_ConnectionInfo *ci;
    const struct sockaddr *sa;

    latch_strlcpy(out, "-", out_size);
    ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (ci == NULL || ci->client_addr == NULL)
        return;
    sa = ci->client_addr;
    if (sa->sa_family == AF_INET) {
        struct sockaddr_in sin;

        memcpy(&sin, sa, sizeof sin);
        (void)inet_ntop(AF_INET, &sin.sin_addr, out, (socklen_t)out_size);
    } else if (sa->sa_family == AF_INET6) {
        struct sockaddr_in6 sin6;

        memcpy(&sin6, sa, sizeof sin6);
        if (IN6_IS_ADDR_V4MAPPED(&sin6.sin6_addr))
            (void)inet_ntop(AF_INET, &sin6.sin6_addr.s6_addr[12], out, (socklen_t)out_size);
        else
            (void)inet_ntop(AF_INET6, &sin6.sin6_addr, out, (socklen_t)out_size);
    }
}

struct collect_ctx {
    struct kv *a;
    size_t n, cap, total, max;
};

static enum MHD_Result
collect_kv(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    struct collect_ctx *c = cls;

    (void)kind;
    c->total++;
    if (c->n >= c->max)
        return MHD_YES; /* keep counting */
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 16;
        if (c->cap > c->max)
            c->cap = c->max;
        c->a = xrealloc(c->a, c->cap * sizeof *c->a);
    }
    c->a[c->n].k = xstrdup(key != NULL ? key : "");
    c->a[c->n].v = value != NULL ? xstrdup(value) : NULL;
    c->n++;
    return MHD_YES;
}

static bool
xff_join(const char *name, const char *value, void *ud)
{
    struct buf *b = ud;

    if (strcasecmp(name, "X-Forwarded-For") == 0)
        (void)buf_printf(b, "%s%s", b->len > 0 ? "," : "", value);
    return true;
}

/*
 * Behind a trusted reverse proxy the client is named by X-Forwarded-For (trustproxy.h); the
 * socket peer goes to the log line as peer=. Per-IP connection limits stay on the peer (MHD).
 */
static void
req_forwarded_client(struct http_req *r)
{
    struct buf xff;
    char peer[sizeof r->ip];

    buf_init(&xff, LATCH_MAX_HEADER_BYTES);
    http_req_headers_foreach(r, xff_join, &xff);
    if (xff.len > 0) {
        latch_strlcpy(peer, r->ip, sizeof peer);
        trustproxy_client(r->srv->trust, peer, xff.data, r->ip, sizeof r->ip);
        if (strcmp(peer, r->ip) != 0)
            http_req_log_kv(r, "peer", peer);
    }
    buf_free(&xff);
}

static void
req_fill(struct http_req *r, const char *url, const char *method)
{
    struct collect_ctx c;
    const char *rid;

    r->started = true;
    r->method = xstrdup(method != NULL ? method : "");
    r->path = xstrdup(url != NULL ? url : "");

    memset(&c, 0, sizeof c);
    c.max = (size_t)-1; /* headers are already bounded by the connection memory limit */
    (void)MHD_get_connection_values(r->conn, MHD_HEADER_KIND, collect_kv, &c);
    r->hdrs = c.a;
    r->n_hdrs = c.n;

    memset(&c, 0, sizeof c);
    c.max = LATCH_MAX_QUERY_PARAMS;
    (void)MHD_get_connection_values(r->conn, MHD_GET_ARGUMENT_KIND, collect_kv, &c);
    r->args = c.a;
    r->n_args = c.n;
    r->args_total = c.total;

    rid = http_req_header(r, "X-Request-Id");
    if (req_id_sane(rid))
        latch_strlcpy(r->id, rid, sizeof r->id);
    if (r->srv->trust != NULL)
        req_forwarded_client(r);
}

/* ---------------------------------------------------------------------------------------- */
/* responses */

static bool
header_name_ok(const char *s)
{
    if (s == NULL || *s == '\0')
        return false;
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;

        if (c <= 0x20 || c >= 0x7f || strchr("()<>@,;:\\\"/[]?={}", c) != NULL)
            return false;
    }
    return true;
}

static bool
header_value_ok(const char *s)
{
    if (s == NULL)
        return false;
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;

        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return false;
    }
    return true;
}

/* Names the adapter sets itself or MHD manages; an application's copy is dropped. */
static bool
header_reserved(const char *name)
{
    static const char *const reserved[] = {
        "X-Request-Id",
        "Access-Control-Allow-Origin",
        "Access-Control-Expose-Headers",
        "X-Content-Type-Options",
        "Referrer-Policy",
        "Content-Length",
        "Transfer-Encoding",
        "Connection",
        "Keep-Alive",
        "Date",
    };

    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++)
        if (strcasecmp(name, reserved[i]) == 0)
            return true;
    return false;
}

/* With r->mu held: may a response be set now? Clears an earlier one (returned for freeing). */
static bool
resp_begin_locked(struct http_req *r, void (**free_fn)(void *), void **free_ud)
{
    *free_fn = NULL;
    *free_ud = NULL;
    if (r->state == RS_SENDING || r->completed) {
        log_warn("response after the request finished", "req=%s", r->id);
        return false;
    }
    if (r->kind != RESP_NONE) {
        log_warn("response set twice; keeping the last", "req=%s", r->id);
        resp_clear_locked(r, free_fn, free_ud);
    }
    return true;
}

static unsigned
status_sane(unsigned status)
{
    return (status >= 100 && status <= 599) ? status : 500;
}

/*
 * Takes ownership of owned (else borrows static_data forever); ctype is copied. wipe: owned
 * holds secrets and is cleared before it is freed.
 */
static void
resp_set_bytes_ex(struct http_req *r, unsigned status, const char *ctype, char *owned,
                  const char *static_data, size_t len, bool wipe)
{
    char *ct = ctype != NULL ? xstrdup(ctype) : NULL;
    void (*ffn)(void *);
    void *fud;
    bool ok;

    lock(&r->mu);
    ok = resp_begin_locked(r, &ffn, &fud);
    if (ok) {
        r->status = status_sane(status);
        r->kind = RESP_BYTES;
        r->resp_data = owned;
        r->resp_static_data = static_data;
        r->resp_len = len;
        r->resp_wipe = wipe && owned != NULL;
        r->ctype = ct;
    }
    unlock(&r->mu);
    if (!ok) {
        if (wipe && owned != NULL)
            explicit_bzero(owned, len);
        free(owned);
        free(ct);
    }
    if (ffn != NULL)
        ffn(fud);
}

static void
resp_set_bytes(struct http_req *r, unsigned status, const char *ctype, char *owned,
               const char *static_data, size_t len)
{
    resp_set_bytes_ex(r, status, ctype, owned, static_data, len, false);
}

/* MHD's free callback for a response buffer that held secrets (NUL-terminated JSON text). */
static void
free_wiped(void *p)
{
    if (p == NULL)
        return;
    explicit_bzero(p, strlen(p));
    free(p);
}

/* JSON text of v in a fresh xmalloc'd buffer; NULL on failure. wipe: clear the scratch too. */
static char *
json_dump_owned(const json_t *v, size_t *len, bool wipe)
{
    char first[4096];
    size_t n, m;
    char *out;

    if (v == NULL)
        return NULL;
    /* one pass for the usual small answer; a second only when it does not fit */
    n = json_dumpb(v, first, sizeof first, JSON_COMPACT | JSON_ENCODE_ANY);
    if (n == 0)
        return NULL;
    out = xmalloc(n + 1);
    if (n <= sizeof first) {
        memcpy(out, first, n);
        out[n] = '\0';
        *len = n;
        if (wipe)
            explicit_bzero(first, n);
        return out;
    }
    if (wipe)
        explicit_bzero(first, sizeof first);
    m = json_dumpb(v, out, n, JSON_COMPACT | JSON_ENCODE_ANY);
    if (m != n) {
        explicit_bzero(out, n + 1);
        free(out);
        return NULL;
    }
    out[n] = '\0';
    *len = n;
    return out;
}

static const char internal_error_body[] =
    "{\"error\":{\"code\":\"internal_error\",\"message\":\"Internal server error\"}}";

void
http_resp_json_secret(struct http_req *r, unsigned status, json_t *body)
{
    size_t len = 0;
    char *s = json_dump_owned(body, &len, true);

    json_decref(body);
    if (s == NULL) {
        log_error("cannot serialise JSON response", "req=%s", r->id);
        resp_set_bytes(r, 500, JSON_CTYPE, NULL, internal_error_body,
                       sizeof internal_error_body - 1);
        return;
    }
    resp_set_bytes_ex(r, status, JSON_CTYPE, s, NULL, len, true);
}

void
http_resp_bytes_secret(struct http_req *r, unsigned status, const char *content_type, char *owned,
                       size_t len)
{
    if (content_type != NULL && !header_value_ok(content_type))
        content_type = NULL;
    resp_set_bytes_ex(r, status, content_type, owned, NULL, len, true);
}

void
http_resp_json(struct http_req *r, unsigned status, json_t *body)
{
    size_t len = 0;
    char *s = json_dump_owned(body, &len, false);

    json_decref(body);
    if (s == NULL) {
        log_error("cannot serialise JSON response", "req=%s", r->id);
        resp_set_bytes(r, 500, JSON_CTYPE, NULL, internal_error_body,
                       sizeof internal_error_body - 1);
        return;
    }
    resp_set_bytes(r, status, JSON_CTYPE, s, NULL, len);
}

void
http_resp_error(struct http_req *r, unsigned status, const char *code, const char *message)
{
    /* messages may quote client input: never let invalid UTF-8 turn a 4xx into a 500 */
    char *c = latch_utf8_sanitize(code != NULL ? code : "error");
    char *m = latch_utf8_sanitize(message);
    json_t *j = json_pack("{s:{s:s,s:s}}", "error", "code", c, "message", m);

    free(c);
    free(m);
    http_resp_json(r, status, j);
}

void
http_resp_bytes(struct http_req *r, unsigned status, const char *content_type, const void *data,
                size_t len, bool is_static)
{
    char *copy = NULL;

    if (content_type != NULL && !header_value_ok(content_type))
        content_type = NULL;
    if (!is_static) {
        copy = xmalloc(len + 1);
        if (len > 0)
            memcpy(copy, data, len);
        copy[len] = '\0';
    }
    resp_set_bytes(r, status, content_type, copy, is_static ? data : NULL, len);
}

void
http_resp_header(struct http_req *r, const char *name, const char *value)
{
    if (!header_name_ok(name) || !header_value_ok(value)) {
        log_warn("invalid response header dropped", "req=%s", r->id);
        return;
    }
    if (header_reserved(name)) {
        log_debug("reserved response header dropped", "req=%s", r->id);
        return;
    }
    lock(&r->mu);
    if (r->state == RS_SENDING || r->completed) {
        unlock(&r->mu);
        log_warn("response header after the response was sent", "req=%s", r->id);
        return;
    }
    if (r->n_resp_hdrs >= HTTP_MAX_RESP_HEADERS) {
        unlock(&r->mu);
        log_warn("too many response headers; dropped", "req=%s", r->id);
        return;
    }
    r->resp_hdrs = xrealloc(r->resp_hdrs, (r->n_resp_hdrs + 1) * sizeof *r->resp_hdrs);
    r->resp_hdrs[r->n_resp_hdrs].k = xstrdup(name);
    r->resp_hdrs[r->n_resp_hdrs].v = xstrdup(value);
    r->n_resp_hdrs++;
    unlock(&r->mu);
}

void
http_resp_stream(struct http_req *r, unsigned status, long long total_len,
                 http_stream_read_fn read_cb, void (*free_cb)(void *), void *ud)
{
    void (*ffn)(void *);
    void *fud;
    bool ok;

    lock(&r->mu);
    ok = read_cb != NULL && resp_begin_locked(r, &ffn, &fud);
    if (ok) {
        r->status = status_sane(status);
        r->kind = RESP_STREAM;
        r->read_cb = read_cb;
        r->stream_free = free_cb;
        r->stream_ud = ud;
        r->stream_len = total_len;
    }
    unlock(&r->mu);
    if (ok && ffn != NULL)
        ffn(fud);
    if (!ok && free_cb != NULL)
        free_cb(ud);
}

static void
add_header(struct MHD_Response *resp, const char *name, const char *value)
{
    if (MHD_add_response_header(resp, name, value) != MHD_YES)
        log_warn("MHD refused a response header", "name=%s", name);
}

static void
add_common_headers(struct MHD_Response *resp, const struct http_req *r)
{
    add_header(resp, "X-Request-Id", r->id);
    add_header(resp, "Access-Control-Allow-Origin", "*");
    add_header(resp, "Access-Control-Expose-Headers", cors_expose);
    add_header(resp, "X-Content-Type-Options", "nosniff");
    add_header(resp, "Referrer-Policy", "no-referrer");
}

static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max);

/* The block MHD allocates for a streamed body of len bytes (-1: unknown). */
static size_t
stream_block(long long len)
{
    if (len < 0 || len >= HTTP_STREAM_BLOCK)
        return HTTP_STREAM_BLOCK;
    if (len < HTTP_STREAM_BLOCK_MIN)
        return HTTP_STREAM_BLOCK_MIN;
    return (size_t)len;
}
static void stream_ctx_free(void *cls);

/* An upgraded connection the application holds; freed by http_upgraded_close. */
struct http_upgraded {
    struct http_server *srv;
    struct http_loop *loop; /* the loop whose daemon owns the connection */
    struct MHD_UpgradeResponseHandle *urh;
};

/* The loop thread, after the 101 went out: the socket now belongs to the application. */
static void
on_mhd_upgraded(void *cls, struct MHD_Connection *conn, void *con_cls, const char *extra_in,
                size_t extra_in_size, MHD_socket sock, struct MHD_UpgradeResponseHandle *urh)
{
    struct http_server *s = cls;
    struct http_upgraded *u = xmalloc(sizeof *u);

    (void)conn;
    (void)con_cls;
    u->srv = s;
    u->loop = this_loop;
    u->urh = urh;
    atomic_fetch_add(&s->upgraded_open, 1);
    s->upgraded(s->upgrade_ud, u, (int)sock, extra_in, extra_in_size);
}

void
http_upgraded_close(struct http_upgraded *u)
{
    if (u == NULL)
        return;
    if (MHD_upgrade_action(u->urh, MHD_UPGRADE_ACTION_CLOSE) != MHD_YES)
        log_warn("MHD refused to close an upgraded connection", "fd=-");
    /* MHD finishes the close at its daemon's next MHD_run: wake that loop (external events) */
    if (u->loop != NULL && u->loop != this_loop)
        loop_wake(u->loop);
    else if (u->loop != NULL)
        u->loop->kick = true;
    atomic_fetch_sub(&u->srv->upgraded_open, 1);
    free(u);
}

/*
 * Loop thread, inside the access handler: hands the pending response to MHD. After the state
 * becomes RS_SENDING no other thread writes the response fields, so they are read unlocked.
 */
static enum MHD_Result
queue_pending(struct http_req *r)
{
    struct MHD_Response *resp = NULL;
    bool has_ctype = false;
    enum MHD_Result ret;

    lock(&r->mu);
    if (r->kind == RESP_NONE) {
        log_error("dispatcher produced no response", "req=%s", r->id);
        r->kind = RESP_BYTES;
        r->status = 500;
        r->resp_static_data = internal_error_body;
        r->resp_len = sizeof internal_error_body - 1;
        r->ctype = xstrdup(JSON_CTYPE);
    }
    r->state = RS_SENDING;
    unlock(&r->mu);

    if (r->kind == RESP_STREAM) {
        struct stream_ctx *sc = xmalloc(sizeof *sc);

        sc->r = r;
        sc->read_cb = r->read_cb;
        sc->free_cb = r->stream_free;
        sc->ud = r->stream_ud;
        atomic_fetch_add(&r->refs, 1);
        /* ownership of ud moves to sc */
        r->stream_free = NULL;
        r->stream_ud = NULL;
        r->read_cb = NULL;
        r->kind = RESP_BYTES; /* nothing left to free here */
        r->resp_len = 0;
        resp = MHD_create_response_from_callback(
            r->stream_len < 0 ? MHD_SIZE_UNKNOWN : (uint64_t)r->stream_len,
            stream_block(r->stream_len), stream_reader, sc, stream_ctx_free);
        if (resp == NULL) {
            stream_ctx_free(sc);
            return MHD_NO;
        }
    } else if (r->kind == RESP_UPGRADE) {
        resp = MHD_create_response_for_upgrade(on_mhd_upgraded, r->srv);
        if (resp == NULL)
            return MHD_NO;
        add_header(resp, "Connection", "Upgrade");
    } else if (r->resp_data != NULL) {
        resp = MHD_create_response_from_buffer_with_free_callback(r->resp_len, r->resp_data,
                                                                  r->resp_wipe ? free_wiped : free);
        if (resp == NULL)
            return MHD_NO;
        r->resp_data = NULL; /* MHD frees it */
        r->bytes_out = r->resp_len;
    } else {
        const char *p = r->resp_static_data != NULL ? r->resp_static_data : "";

        resp = MHD_create_response_from_buffer(r->resp_len, (void *)(uintptr_t)p,
                                               MHD_RESPMEM_PERSISTENT);
        if (resp == NULL)
            return MHD_NO;
        r->bytes_out = r->resp_len;
    }
    for (size_t i = 0; i < r->n_resp_hdrs; i++) {
        if (strcasecmp(r->resp_hdrs[i].k, "Content-Type") == 0)
            has_ctype = true;
        add_header(resp, r->resp_hdrs[i].k, r->resp_hdrs[i].v);
    }
    if (!has_ctype && r->ctype != NULL)
        add_header(resp, "Content-Type", r->ctype);
    add_common_headers(resp, r);
    if (r->close_conn)
        add_header(resp, "Connection", "close");
    if (strcmp(r->method, MHD_HTTP_METHOD_HEAD) == 0)
        r->bytes_out = 0;
    r->sent_status = r->status;
    ret = MHD_queue_response(r->conn, r->status, resp);
    MHD_destroy_response(resp);
    if (ret != MHD_YES)
        log_warn("MHD refused the response", "req=%s status=%u", r->id, r->status);
    return ret;
}

/* Loop thread, before dispatch: answer right away with a JSON error (no dispatch). */
static enum MHD_Result
respond_now(struct http_req *r, unsigned status, const char *code, const char *message)
{
    http_resp_error(r, status, code, message);
    return queue_pending(r);
}

/*
 * The preflight answer is queued at the final access-handler call, not now: MHD 0.9.75 closes
 * the connection after a response queued before the (empty) body was read, and browsers send
 * the real request right after the preflight.
 */
static enum MHD_Result
respond_preflight(struct http_req *r)
{
    resp_set_bytes(r, 204, NULL, NULL, "", 0);
    http_resp_header(r, "Access-Control-Allow-Methods", cors_allow_methods);
    http_resp_header(r, "Access-Control-Allow-Headers", cors_allow_headers);
    http_resp_header(r, "Access-Control-Max-Age", "600");
    lock(&r->mu);
    r->state = RS_READY;
    unlock(&r->mu);
    return MHD_YES;
}

/* ---------------------------------------------------------------------------------------- */
/* streaming responses */

/* Loop thread (MHD calls it with the connection active, so r and r->conn are valid). */
static ssize_t
stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct stream_ctx *sc = cls;
    struct http_req *r = sc->r;

    (void)pos;
    for (;;) {
        long n;

        lock(&r->mu);
        r->stream_kick = false;
        if (r->force_end) {
            unlock(&r->mu);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        unlock(&r->mu);
        n = sc->read_cb(sc->ud, buf, max);
        if (n > 0) {
            if ((unsigned long)n > max)
                return MHD_CONTENT_READER_END_WITH_ERROR;
            r->bytes_out += (unsigned long long)n;
            return (ssize_t)n;
        }
        if (n == -1)
            return MHD_CONTENT_READER_END_OF_STREAM;
        if (n < 0)
            return MHD_CONTENT_READER_END_WITH_ERROR;
        /* no data yet: park the connection unless the producer already signalled */
        lock(&r->mu);
        if (r->stream_kick) {
            unlock(&r->mu);
            continue;
        }
        r->susp = SUSP_STREAM;
        MHD_suspend_connection(r->conn);
        unlock(&r->mu);
        return 0;
    }
}

static void
stream_ctx_free(void *cls)
{
    struct stream_ctx *sc = cls;

    if (sc->free_cb != NULL)
        sc->free_cb(sc->ud);
    req_release(sc->r);
    free(sc);
}

void
http_req_stream_ready(struct http_req *r)
{
    lock(&r->mu);
    if (r->susp == SUSP_STREAM && !r->completed) {
        r->susp = SUSP_NONE;
        req_mhd_resume(r);
    } else {
        r->stream_kick = true;
    }
    unlock(&r->mu);
}

/* ---------------------------------------------------------------------------------------- */
/* suspend / resume */

void
http_req_suspend(struct http_req *r)
{
    lock(&r->mu);
    if (r->state != RS_DISPATCH || r->app_suspended) {
        unlock(&r->mu);
        log_error("http_req_suspend outside dispatch or twice", "req=%s", r->id);
        return;
    }
    r->app_suspended = true;
    atomic_fetch_add(&r->refs, 1); /* the application's reference, dropped by resume */
    unlock(&r->mu);
}

void
http_req_resume(struct http_req *r)
{
    lock(&r->mu);
    if (!r->app_suspended || r->resumed) {
        unlock(&r->mu);
        log_error("http_req_resume without suspend or twice", "req=%s", r->id);
        return;
    }
    r->resumed = true;
    if (!r->completed && r->state == RS_WAIT_APP) {
        r->state = RS_READY;
        /* SUSP_SINK too: the rest of the upload is then drained and dropped */
        if (r->susp == SUSP_APP || r->susp == SUSP_SINK) {
            r->susp = SUSP_NONE;
            req_mhd_resume(r);
        }
    }
    /* RS_DISPATCH: the loop thread sees resumed when dispatch returns and queues directly */
    unlock(&r->mu);
    req_release(r);
}

/* ---------------------------------------------------------------------------------------- */
/* streaming request bodies */

void
http_req_set_body_sink(struct http_req *r, http_body_sink_fn sink, void *ud)
{
    if (!r->stream_in) {
        log_error("body sink on a buffered request", "req=%s", r->id);
        return;
    }
    r->sink = sink;
    r->sink_ud = ud;
}

void
http_req_body_resume(struct http_req *r)
{
    lock(&r->mu);
    if (r->susp == SUSP_SINK && !r->completed) {
        r->susp = SUSP_NONE;
        req_mhd_resume(r);
    } else {
        r->body_kick = true;
    }
    unlock(&r->mu);
}

/*
 * Loop thread: offer data (NULL = end of body) to the sink. Returns true when consumed (or
 * dropped because the application already answered), false when the connection was suspended
 * with the bytes left unconsumed.
 */
static bool
feed_sink(struct http_req *r, const char *data, size_t *uds)
{
    size_t n = uds != NULL ? *uds : 0;

    for (;;) {
        if (r->sink(r->sink_ud, data, n))
            break;
        lock(&r->mu);
        if (r->resumed) { /* answered meanwhile: the sink is off limits now */
            unlock(&r->mu);
            break;
        }
        if (r->body_kick) {
            r->body_kick = false;
            unlock(&r->mu);
            continue;
        }
        r->susp = SUSP_SINK;
        MHD_suspend_connection(r->conn);
        unlock(&r->mu);
        return false;
    }
    if (uds != NULL) {
        r->bytes_in += n;
        *uds = 0;
    } else {
        r->sink_end_sent = true;
    }
    return true;
}

/* ---------------------------------------------------------------------------------------- */
/* the access handler */

static enum MHD_Result
dispatch_now(struct http_server *s, struct http_req *r)
{
    slot_set(r->slot, PH_BUSY, 0);
    lock(&s->mu);
    if (s->stopping) {
        unlock(&s->mu);
        r->close_conn = true;
        return respond_now(r, 503, "server_shutting_down", "The server is shutting down");
    }
    s->live++;
    r->counted = true;
    r->live_prev = NULL;
    r->live_next = s->live_head;
    if (s->live_head != NULL)
        s->live_head->live_prev = r;
    s->live_head = r;
    unlock(&s->mu);

    lock(&r->mu);
    r->state = RS_DISPATCH;
    unlock(&r->mu);

    s->dispatch(r, s->ud);

    lock(&r->mu);
    if (r->app_suspended && !r->resumed) {
        r->state = RS_WAIT_APP;
        if (!r->body_streaming) {
            r->susp = SUSP_APP;
            MHD_suspend_connection(r->conn);
        }
        unlock(&r->mu);
        return MHD_YES;
    }
    r->state = RS_READY;
    unlock(&r->mu);
    /* also fine for a streamed upload at its headers: MHD then discards the body */
    return queue_pending(r);
}

static bool
server_stopping(struct http_server *s)
{
    bool v;

    lock(&s->mu);
    v = s->stopping;
    unlock(&s->mu);
    return v;
}

/*
 * Message framing a front proxy could read differently from MHD (request smuggling): more than
 * one Content-Length (MHD 0.9.75 takes the first), Content-Length together with
 * Transfer-Encoding (MHD keeps the connection alive), a Transfer-Encoding other than one plain
 * "chunked", or chunked on HTTP/1.0. Returns why, or NULL when the framing is unambiguous.
 * Like nginx, these get 400 and the connection is closed: the bytes after the head cannot be
 * trusted to start the next request.
 */
static const char *
framing_problem(const struct http_req *r, const char *version)
{
    size_t n_cl = 0, n_te = 0;
    const char *te = NULL;

    for (size_t i = 0; i < r->n_hdrs; i++) {
        if (strcasecmp(r->hdrs[i].k, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0)
            n_cl++;
        else if (strcasecmp(r->hdrs[i].k, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
            n_te++;
            te = r->hdrs[i].v != NULL ? r->hdrs[i].v : "";
        }
    }
    if (n_cl > 1)
        return "Duplicate Content-Length header";
    if (n_te == 0)
        return NULL;
    if (n_cl > 0)
        return "Content-Length and Transfer-Encoding must not be sent together";
    if (n_te > 1 || strcasecmp(te, "chunked") != 0)
        return "Unsupported Transfer-Encoding (only a single \"chunked\" is accepted)";
    if (version == NULL || strcmp(version, MHD_HTTP_VERSION_1_1) != 0)
        return "Transfer-Encoding requires HTTP/1.1";
    return NULL;
}

static bool body_charge(struct http_req *r, size_t want);
static enum MHD_Result respond_busy(struct http_req *r);

/*
 * A GET for upgrade_path asking for an upgrade: the application's check answers, never the
 * dispatcher. The 101 is queued at the final access-handler call, as the preflight is.
 */
static enum MHD_Result
on_upgrade_request(struct http_server *s, struct http_req *r)
{
    void (*ffn)(void *) = NULL;
    void *fud = NULL;

    if (!s->upgrade_check(r, s->upgrade_ud)) {
        r->close_conn = true;
        lock(&r->mu);
        if (r->kind == RESP_NONE) {
            unlock(&r->mu);
            return respond_now(r, 400, "invalid_request", "Connection upgrade refused");
        }
        unlock(&r->mu);
        return queue_pending(r);
    }
    lock(&r->mu);
    if (r->kind != RESP_NONE) {
        log_warn("upgrade check set a response and accepted; upgrading", "req=%s", r->id);
        resp_clear_locked(r, &ffn, &fud);
    }
    r->kind = RESP_UPGRADE;
    r->status = MHD_HTTP_SWITCHING_PROTOCOLS;
    r->state = RS_READY;
    unlock(&r->mu);
    if (ffn != NULL)
        ffn(fud);
    slot_set(r->slot, PH_BUSY, 0);
    if (r->slot != NULL)
        r->slot->upgraded = true;
    return MHD_YES;
}

static enum MHD_Result
on_first_call(struct http_server *s, struct http_req *r, const char *url, const char *method,
              const char *version)
{
    const char *cl, *why;
    size_t announced = 0; /* Content-Length, once checked against the route's limit */

    req_fill(r, url, method);
    if (server_stopping(s)) {
        r->close_conn = true;
        return respond_now(r, 503, "server_shutting_down", "The server is shutting down");
    }
    why = framing_problem(r, version);
    if (why != NULL) {
        r->close_conn = true;
        return respond_now(r, 400, "invalid_request", why);
    }
    if (strcmp(r->method, MHD_HTTP_METHOD_OPTIONS) == 0 &&
        http_req_header(r, "Access-Control-Request-Method") != NULL)
        return respond_preflight(r);
    if (s->upgrade_path != NULL && strcmp(r->method, MHD_HTTP_METHOD_GET) == 0 &&
        strcmp(r->path, s->upgrade_path) == 0 &&
        http_req_header(r, MHD_HTTP_HEADER_UPGRADE) != NULL) {
        if (version == NULL || strcmp(version, MHD_HTTP_VERSION_1_1) != 0) {
            r->close_conn = true;
            return respond_now(r, 400, "invalid_request", "A connection upgrade needs HTTP/1.1");
        }
        return on_upgrade_request(s, r);
    }

    r->body_limit = s->body_limit != NULL ? s->body_limit(r->method, r->path, s->ud) : 0;
    cl = http_req_header(r, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl != NULL) {
        const char *errstr = NULL;
        long long v = latch_strtonum(cl, 0, LLONG_MAX, &errstr);

        if (errstr != NULL && strcmp(errstr, "too large") != 0)
            return respond_now(r, 400, "invalid_request", "Invalid Content-Length");
        if (errstr != NULL || (unsigned long long)v > (unsigned long long)r->body_limit)
            return respond_now(r, 413, "payload_too_large", "Request body too large");
        announced = (size_t)v;
    }
    if (s->precheck != NULL &&
        (announced > 0 || http_req_header(r, MHD_HTTP_HEADER_TRANSFER_ENCODING) != NULL)) {
        bool go_on = s->precheck(r, s->ud);

        if (!go_on) {
            http_req_set_app_data(r, NULL, NULL);
            r->close_conn = true;
            return queue_pending(r); /* the body is never read */
        }
    }
    if (s->stream_body != NULL && s->stream_body(r->method, r->path, s->ud)) {
        r->stream_in = true;
        r->body_streaming = true;
        return dispatch_now(s, r);
    }
    if (announced > 0 && !body_charge(r, announced)) {
        r->close_conn = true;
        return respond_busy(r);
    }
    buf_init(&r->body, r->body_limit);
    slot_set(r->slot, PH_BODY, r->start_us);
    lock(&r->mu);
    r->state = RS_BODY;
    unlock(&r->mu);
    return MHD_YES;
}

/*
 * Reserves room for a buffered body of want bytes in total (this request's earlier share
 * included) against the server's budget. False when it does not fit.
 */
static bool
body_charge(struct http_req *r, size_t want)
{
    struct http_server *s = r->srv;
    size_t cur, add;

    if (want <= r->body_charged)
        return true;
    if (want > r->body_limit)
        want = r->body_limit; /* more is refused as 413 anyway */
    add = want - r->body_charged;
    if (s->body_budget == 0) {
        r->body_charged = want;
        atomic_fetch_add(&s->body_charged, add);
        return true;
    }
    cur = atomic_load(&s->body_charged);
    do {
        if (cur > s->body_budget || add > s->body_budget - cur)
            return false;
    } while (!atomic_compare_exchange_weak(&s->body_charged, &cur, cur + add));
    r->body_charged = want;
    return true;
}

/* 503 for a body that does not fit the budget (the client may retry shortly). */
static enum MHD_Result
respond_busy(struct http_req *r)
{
    log_warn("request body budget exhausted", "req=%s", r->id);
    http_resp_header(r, "Retry-After", "1");
    return respond_now(r, 503, "server_busy",
                       "Too many request bodies in flight; retry after the Retry-After delay");
}

/* Drops upload bytes nobody will read; closes the connection past HTTP_DISCARD_MAX. */
static enum MHD_Result
discard_upload(struct http_req *r, size_t *uds)
{
    r->discarded += *uds;
    *uds = 0;
    if (r->discarded > HTTP_DISCARD_MAX) {
        log_warn("oversized upload; closing", "req=%s bytes_in=%llu", r->id, r->bytes_in);
        return MHD_NO;
    }
    return MHD_YES;
}

static enum MHD_Result
on_body_buffered(struct http_server *s, struct http_req *r, const char *data, size_t *uds)
{
    if (*uds > 0) {
        r->bytes_in += *uds;
        slot_progress(r->slot, *uds);
        if (!r->too_large && !r->over_budget && r->body.len + *uds > r->body_charged &&
            !body_charge(r, r->body.len + *uds)) {
            r->over_budget = true; /* chunked: no Content-Length was reserved */
            buf_free(&r->body);
        }
        if (!r->too_large && !r->over_budget && buf_append(&r->body, data, *uds) != LATCH_OK) {
            r->too_large = true;
            buf_free(&r->body);
        }
        if (r->too_large || r->over_budget)
            return discard_upload(r, uds);
        *uds = 0;
        return MHD_YES;
    }
    slot_set(r->slot, PH_BUSY, 0);
    if (r->too_large)
        return respond_now(r, 413, "payload_too_large", "Request body too large");
    if (r->over_budget) {
        r->close_conn = true;
        return respond_busy(r);
    }
    return dispatch_now(s, r);
}

static enum MHD_Result
on_body_streamed(struct http_req *r, const char *data, size_t *uds)
{
    bool resumed;
    enum req_state st;

    lock(&r->mu);
    resumed = r->resumed;
    st = r->state;
    unlock(&r->mu);

    if (!r->body_streaming)
        return st == RS_READY ? queue_pending(r) : MHD_YES;
    if (*uds > 0) {
        if (*uds > r->body_limit || r->bytes_in > r->body_limit - *uds) {
            log_warn("oversized streamed upload; closing", "req=%s bytes_in=%llu", r->id,
                     r->bytes_in);
            return MHD_NO;
        }
        if (resumed || r->sink == NULL) { /* nobody wants the bytes: drop them */
            r->bytes_in += *uds;
            *uds = 0;
            return MHD_YES;
        }
        (void)feed_sink(r, data, uds);
        return MHD_YES;
    }
    /* end of the upload */
    if (!resumed && r->sink != NULL && !r->sink_end_sent && !feed_sink(r, NULL, NULL))
        return MHD_YES; /* paused; called again with *uds == 0 after http_req_body_resume */
    r->body_streaming = false;
    lock(&r->mu);
    if (r->state == RS_READY) {
        unlock(&r->mu);
        return queue_pending(r);
    }
    if (r->state == RS_WAIT_APP) {
        r->susp = SUSP_APP;
        MHD_suspend_connection(r->conn);
    }
    unlock(&r->mu);
    return MHD_YES;
}

static enum MHD_Result
on_access(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
          const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
    struct http_server *s = cls;
    struct http_req *r = *con_cls;
    enum req_state st;

    if (r == NULL) { /* the URI callback always runs first; be defensive anyway */
        r = req_new(s, conn, url);
        *con_cls = r;
    }
    if (!r->started)
        return on_first_call(s, r, url, method, version);
    if (r->stream_in)
        return on_body_streamed(r, upload_data, upload_data_size);

    lock(&r->mu);
    st = r->state;
    unlock(&r->mu);
    switch (st) {
    case RS_BODY:
        return on_body_buffered(s, r, upload_data, upload_data_size);
    case RS_READY:
        if (*upload_data_size > 0) { /* a body on a preflight: nobody reads it */
            r->bytes_in += *upload_data_size;
            return discard_upload(r, upload_data_size);
        }
        return queue_pending(r);
    default:
        /* not expected (suspended connections are not processed); ignore */
        log_debug("spurious access-handler call", "req=%s", r->id);
        return MHD_YES;
    }
}

/* ---------------------------------------------------------------------------------------- */
/* MHD callbacks: connection, URI, completion, logger */

static void log_request(struct http_req *r, enum MHD_RequestTerminationCode toe);

/*
 * The end of a request: unlinks it from its connection's slot, marks it completed, logs it and
 * drops MHD's reference. MHD's thread of the connection only.
 */
static void
req_finish(struct http_req *r, enum MHD_RequestTerminationCode toe)
{
    if (r->slot != NULL && r->slot->cur == r) {
        r->slot->cur = NULL;
        /* a kept-alive connection waits for its next request */
        r->slot->served = true;
        if (!r->slot->upgraded)
            slot_set(r->slot, PH_IDLE, now_us());
    }
    r->slot = NULL;
    lock(&r->mu);
    r->completed = true;
    r->susp = SUSP_NONE;
    unlock(&r->mu);
    log_request(r, toe);
    req_release(r);
}

/* ---------------------------------------------------------------------------------------- */
/* admission: the global and per-address connection limits over every loop's daemon */

static size_t
admit_hash(const struct admit_key *k)
{
    uint32_t h = 2166136261u; /* FNV-1a */

    for (unsigned i = 0; i < k->len; i++)
        h = (h ^ k->a[i]) * 16777619u;
    return h;
}

static bool
admit_key_eq(const struct admit_key *x, const struct admit_key *y)
{
    return x->len == y->len && memcmp(x->a, y->a, x->len) == 0;
}

/* With a->mu held: the entry of k, or the free entry where it would go. */
static size_t
admit_find(const struct admit *a, const struct admit_key *k)
{
    size_t i = admit_hash(k) & a->mask;

    while (a->tab[i].n != 0 && !admit_key_eq(&a->tab[i].k, k))
        i = (i + 1) & a->mask;
    return i;
}

static bool
admit_take(struct admit *a, const struct admit_key *k)
{
    bool ok = false;

    lock(&a->mu);
    if (a->total >= a->limit)
        goto out;
    if (a->tab != NULL && k->len != 0) {
        size_t i = admit_find(a, k);

        if (a->tab[i].n >= a->limit_ip)
            goto out;
        a->tab[i].k = *k;
        a->tab[i].n++;
    }
    a->total++;
    ok = true;
out:
    unlock(&a->mu);
    return ok;
}

static void
admit_give(struct admit *a, const struct admit_key *k)
{
    lock(&a->mu);
    a->total--;
    if (a->tab != NULL && k->len != 0) {
        size_t i = admit_find(a, k);

        if (a->tab[i].n > 1)
            a->tab[i].n--;
        else if (a->tab[i].n == 1) {
            /* backward-shift deletion: later entries of the same probe run move up */
            size_t j = i;

            a->tab[i].n = 0;
            for (;;) {
                size_t h;

                j = (j + 1) & a->mask;
                if (a->tab[j].n == 0)
                    break;
                h = admit_hash(&a->tab[j].k) & a->mask;
                /* the entry at j may fill the hole at i unless its home lies in (i, j] */
                if (i <= j ? (h > i && h <= j) : (h > i || h <= j))
                    continue;
                a->tab[i] = a->tab[j];
                a->tab[j].n = 0;
                i = j;
            }
        }
    }
    unlock(&a->mu);
}

static void
admit_key_of(const struct sockaddr *sa, socklen_t len, struct admit_key *k)
{
    memset(k, 0, sizeof *k);
    if (sa == NULL)
        return;
    if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        memcpy(k->a, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
        k->len = 4;
    } else if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        memcpy(k->a, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
        k->len = 16;
    }
}

/* The loop's thread, inside MHD_run, when the daemon accepted a socket. */
static void
loop_drop_pending(struct http_loop *lp)
{
    if (lp->pending) {
        lp->pending = false;
        admit_give(&lp->srv->admit, &lp->pending_key);
    }
}

static enum MHD_Result
on_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
    struct http_loop *lp = cls;
    struct admit_key k;

    /*
     * MHD calls "started" right after this, on this thread, unless the connection could not
     * be set up; an admission nobody claimed is given back at the next accept or after MHD_run.
     */
    loop_drop_pending(lp);
    admit_key_of(addr, addrlen, &k);
    if (!admit_take(&lp->srv->admit, &k))
        return MHD_NO;
    lp->pending = true;
    lp->pending_key = k;
    return MHD_YES;
}

static void
on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
              enum MHD_ConnectionNotificationCode code)
{
    struct conn_slot *cs = *socket_context;
    struct http_loop *lp = cls;

    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);

        cs = xcalloc(1, sizeof *cs);
        metrics_conn_add(1);
        if (lp->pending) {
            cs->admitted = true;
            cs->key = lp->pending_key;
            lp->pending = false;
        }
        cs->fd = ci != NULL ? ci->connect_fd : MHD_INVALID_SOCKET;
        cs->phase = PH_IDLE;
        cs->deadline_us = now_us() + lp->srv->header_timeout_us;
        if (cs->fd != MHD_INVALID_SOCKET) {
            cs->lp = lp;
            cs->next = lp->conns;
            if (lp->conns != NULL)
                lp->conns->prev = cs;
            lp->conns = cs;
        }
        *socket_context = cs;
        return;
    }
    *socket_context = NULL;
    if (cs == NULL)
        return;
    /* MHD closes the socket after this notification: the reaper must forget the fd first */
    if (cs->lp != NULL) {
        if (cs->prev != NULL)
            cs->prev->next = cs->next;
        else
            lp->conns = cs->next;
        if (cs->next != NULL)
            cs->next->prev = cs->prev;
    }
    if (cs->cur != NULL) /* dropped by MHD without its completion callback */
        req_finish(cs->cur, MHD_REQUEST_TERMINATED_WITH_ERROR);
    if (cs->admitted)
        admit_give(&lp->srv->admit, &cs->key);
    metrics_conn_add(-1);
    free(cs);
}

static void *
on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    struct http_req *r = req_new(cls, conn, uri);

    r->loop = this_loop;
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    struct conn_slot *cs = ci != NULL ? ci->socket_context : NULL;

    if (cs != NULL) {
        if (cs->cur != NULL) /* the previous request on this connection was dropped too */
            req_finish(cs->cur, MHD_REQUEST_TERMINATED_WITH_ERROR);
        cs->cur = r;
        r->slot = cs;
    }
    return r;
}

static const char *
term_name(enum MHD_RequestTerminationCode toe)
{
    switch (toe) {
    case MHD_REQUEST_TERMINATED_COMPLETED_OK:
        return NULL;
    case MHD_REQUEST_TERMINATED_WITH_ERROR:
        return "error";
    case MHD_REQUEST_TERMINATED_TIMEOUT_REACHED:
        return "timeout";
    case MHD_REQUEST_TERMINATED_DAEMON_SHUTDOWN:
        return "shutdown";
    case MHD_REQUEST_TERMINATED_READ_ERROR:
        return "read_error";
    case MHD_REQUEST_TERMINATED_CLIENT_ABORT:
        return "client_abort";
    }
    return "unknown";
}

static bool
token_safe(const char *s)
{
    if (s == NULL || *s == '\0')
        return false;
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.'))
            return false;
    }
    return true;
}

/* Request count and latency by route pattern (never the raw path: bounded labels). */
static void
record_metrics(const struct http_req *r, uint64_t dur_us)
{
    static const char *const methods[] = {"GET",    "POST",    "PUT",  "PATCH",
                                          "DELETE", "OPTIONS", "HEAD", NULL};
    const char *m = "other";
    char status[8], labels[256];

    for (size_t i = 0; methods[i] != NULL; i++)
        if (r->method != NULL && strcmp(r->method, methods[i]) == 0)
            m = methods[i];
    (void)snprintf(status, sizeof status, "%u", r->sent_status);
    metrics_labels(labels, sizeof labels, "route", r->route != NULL ? r->route : "unmatched",
                   "method", m, "status", status, (const char *)NULL);
    metrics_add(MF_HTTP_REQUESTS, labels, 1);
    metrics_observe_us(MF_HTTP_DURATION, labels, dur_us);
}

/* Loop thread, at completion; takes r->mu (the application may still add log pairs). */
static void
log_request(struct http_req *r, enum MHD_RequestTerminationCode toe)
{
    char qpath[512], qmethod[64], term[32];
    const char *tn = term_name(toe);
    uint64_t dur_us = now_us() - r->start_us;
    double dur_ms = (double)dur_us / 1000.0;

    log_quote(qpath, sizeof qpath, r->path != NULL ? r->path : "");
    if (token_safe(r->method))
        latch_strlcpy(qmethod, r->method, sizeof qmethod);
    else
        log_quote(qmethod, sizeof qmethod, r->method != NULL ? r->method : "");
    record_metrics(r, dur_us);
    term[0] = '\0';
    if (tn != NULL)
        (void)snprintf(term, sizeof term, " term=%s", tn);
    lock(&r->mu);
    log_info("request",
             "req=%s method=%s path=%s status=%u dur_ms=%.2f bytes_in=%llu bytes_out=%llu "
             "ip=%s%s%s",
             r->id[0] != '\0' ? r->id : "-", qmethod, qpath, r->sent_status, dur_ms, r->bytes_in,
             r->bytes_out, r->ip[0] != '\0' ? r->ip : "-", term,
             r->log_kv.data != NULL ? r->log_kv.data : "");
    unlock(&r->mu);
}

static void
on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
             enum MHD_RequestTerminationCode toe)
{
    struct http_req *r = *con_cls;

    (void)cls;
    (void)conn;
    if (r == NULL)
        return;
    *con_cls = NULL;
    req_finish(r, toe);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

static void
on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char msg[512], q[600];
    size_t n;

    (void)cls;
    (void)vsnprintf(msg, sizeof msg, fmt, ap);
    n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    log_warn("libmicrohttpd", "detail=%s", log_quote(q, sizeof q, msg));
}

/* ---------------------------------------------------------------------------------------- */
/* the reaper: connections still receiving a request (part of each loop) */

static void deadline_after_ms(struct timespec *ts, long ms);

/*
 * True when the peer has shut its write side and every byte it sent has been read: recv with
 * MSG_PEEK then reports 0 (end of stream) instead of EAGAIN or data.
 */
static bool
peer_finished_sending(MHD_socket fd)
{
    char c;
    ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);

    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

/*
 * Ends a connection whose request can no longer complete. MHD 0.9.75 has no "close this
 * connection" call outside its callbacks, so the socket is shut down both ways: MHD's epoll
 * sees the hang-up at the loop's next MHD_run, closes the connection (completion callback with
 * an error) and frees the slot. The socket itself stays open until MHD closes it.
 */
static void
reap(struct conn_slot *cs, const char *why)
{
    cs->reaped = true;
    (void)shutdown(cs->fd, SHUT_RDWR);
    log_info("closing connection", "reason=%s fd=%d", why, (int)cs->fd);
}

static void
reaper_pass(struct http_loop *lp, uint64_t now)
{
    for (struct conn_slot *cs = lp->conns; cs != NULL; cs = cs->next) {
        if (cs->reaped || cs->phase == PH_BUSY)
            continue;
        if (now >= cs->deadline_us) {
            reap(cs, cs->phase == PH_BODY ? "body_timeout" : "header_timeout");
            continue;
        }
        if (!peer_finished_sending(cs->fd)) {
            cs->eof_seen = false;
            continue;
        }
        /*
         * End of stream with a body still owed, or between requests (no further request can
         * come). Two looks in a row without progress, so that bytes MHD has read but not yet
         * handed over never count.
         */
        if (cs->eof_seen && cs->eof_at == cs->progress)
            reap(cs, cs->phase == PH_BODY ? "client_closed_mid_body" : "client_closed");
        else {
            cs->eof_seen = true;
            cs->eof_at = cs->progress;
        }
    }
}

/* ---------------------------------------------------------------------------------------- */
/* the loops */

static void
loop_wake(struct http_loop *lp)
{
    uint64_t one = 1;

    /* EAGAIN: the counter is full, so the loop has a wake-up pending anyway */
    if (write(lp->wake_fd, &one, sizeof one) < 0 && errno != EAGAIN)
        log_warn("http loop: cannot wake a loop thread", "errno=%d", errno);
}

static void
loop_post(struct http_loop *lp, int cmd)
{
    atomic_fetch_or(&lp->cmd, cmd);
    loop_wake(lp);
}

/*
 * How long the loop may sleep: MHD's own timeout (also kept as mhd_due_us, when MHD must run even
 * if none of its sockets is ready), the hook's, the reaper's next look; -1 = until woken.
 */
static int
loop_timeout_ms(struct http_loop *lp, uint64_t now)
{
    MHD_UNSIGNED_LONG_LONG mhd_ms = 0;
    long long ms = -1;

    lp->mhd_due_us = UINT64_MAX;
    if (MHD_get_timeout(lp->d, &mhd_ms) == MHD_YES) {
        ms = mhd_ms > INT_MAX ? INT_MAX : (long long)mhd_ms;
        lp->mhd_due_us = now + (uint64_t)ms * 1000u;
    }
    if (lp->kick)
        return 0;
    if (lp->hook_ctx != NULL) {
        long h = lp->srv->hooks.timeout_ms(lp->hook_ctx);

        if (h >= 0 && (ms < 0 || h < ms))
            ms = h > INT_MAX ? INT_MAX : h;
    }
    if (lp->conns != NULL) {
        long long reap_ms =
            lp->next_reap_us > now ? (long long)((lp->next_reap_us - now + 999) / 1000) : 0;

        if (ms < 0 || reap_ms < ms)
            ms = reap_ms;
    }
    return (int)ms;
}

static latch_rc loop_add_fd(int ep, int fd);

static void *
loop_main(void *arg)
{
    struct http_loop *lp = arg;
    struct http_server *s = lp->srv;
    struct epoll_event ev[4];
    bool hook_ready = false;
    bool mhd_ready = true; /* the first turn runs MHD */

    this_loop = lp;
    if (s->hooks.attach != NULL) {
        lp->hook_ctx = s->hooks.attach(lp->idx, s->hooks.ud);
        if (lp->hook_ctx != NULL) {
            lp->hook_fd = s->hooks.fd(lp->hook_ctx);
            if (loop_add_fd(lp->ep, lp->hook_fd) != LATCH_OK) {
                log_error("http loop: cannot watch the loop's outbound; the shared one serves",
                          "errno=%d", errno);
                s->hooks.detach(lp->hook_ctx);
                lp->hook_ctx = NULL;
            }
        }
    }
    for (;;) {
        int cmd = atomic_exchange(&lp->cmd, 0);
        uint64_t now;
        int n;

        if (cmd & LOOP_CMD_QUIESCE) {
            /* the shared listening socket is closed by http_server_stop, once */
            (void)MHD_quiesce_daemon(lp->d);
            lock(&s->mu);
            lp->quiesced = true;
            pthread_cond_broadcast(&s->cv);
            unlock(&s->mu);
        }
        if (cmd & LOOP_CMD_EXIT)
            break;
        /*
         * MHD runs when one of its sockets (or the wake-up) is ready, when its timeout is due, or
         * when a connection was resumed on this thread; the hook likewise. Each may give the
         * other work (the proxy's upstream answer resumes the client connection; a dispatch
         * starts a transfer), done in the same turn without sleeping: a few rounds, then the
         * epoll_wait (with timeout 0 if work is left) so that other sockets get their turn.
         */
        for (int round = 0; round < 4; round++) {
            bool did = false;

            if (mhd_ready || lp->kick || now_us() >= lp->mhd_due_us) {
                mhd_ready = false;
                lp->kick = false;
                (void)MHD_run(lp->d);
                loop_drop_pending(lp);
                did = true;
            }
            if (lp->hook_ctx != NULL && (hook_ready || s->hooks.timeout_ms(lp->hook_ctx) == 0)) {
                s->hooks.run(lp->hook_ctx, hook_ready);
                hook_ready = false;
                did = true;
            }
            if (!did ||
                (!lp->kick && (lp->hook_ctx == NULL || s->hooks.timeout_ms(lp->hook_ctx) != 0)))
                break;
        }
        now = now_us();
        if (lp->conns != NULL && now >= lp->next_reap_us) {
            reaper_pass(lp, now);
            lp->next_reap_us = now + HTTP_REAP_PERIOD_MS * 1000u;
        }
        n = epoll_wait(lp->ep, ev, (int)(sizeof ev / sizeof ev[0]), loop_timeout_ms(lp, now));
        for (int i = 0; i < n; i++)
            if (ev[i].data.fd == lp->mhd_fd)
                mhd_ready = true;
            else if (lp->hook_ctx != NULL && ev[i].data.fd == lp->hook_fd)
                hook_ready = true;
            else if (ev[i].data.fd == lp->wake_fd) {
                uint64_t v;

                mhd_ready = true; /* a connection was resumed from another thread */
                if (read(lp->wake_fd, &v, sizeof v) < 0 && errno != EAGAIN)
                    log_warn("http loop: cannot read its wake-up", "errno=%d", errno);
            }
    }
    if (lp->hook_ctx != NULL) {
        s->hooks.detach(lp->hook_ctx); /* its transfers end now: their callbacks run here */
        lp->hook_ctx = NULL;
    }
    return NULL;
}

static latch_rc
loop_add_fd(int ep, int fd)
{
    struct epoll_event ev;

    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0 ? LATCH_OK : LATCH_E_IO;
}

/* Before its thread runs, or after it was joined: MHD must not have the shared socket. */
static void
loop_close(struct http_loop *lp)
{
    if (lp->d != NULL) {
        if (!lp->quiesced)
            (void)MHD_quiesce_daemon(lp->d);
        MHD_stop_daemon(lp->d);
        lp->d = NULL;
    }
    if (lp->ep >= 0)
        close(lp->ep);
    if (lp->wake_fd >= 0)
        close(lp->wake_fd);
    lp->ep = lp->wake_fd = -1;
}

/* ---------------------------------------------------------------------------------------- */
/* server */

static void
server_free(struct http_server *s)
{
    free(s->loops);
    free(s->admit.tab);
    pthread_mutex_destroy(&s->admit.mu);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    trustproxy_free(s->trust);
    free(s->upgrade_path);
    free(s);
}

struct daemon_conf {
    unsigned flags;
    uint16_t port;
    size_t header_limit;
    unsigned conn_limit, timeout_s;
    const struct sockaddr_storage *ss;
};

/*
 * One loop's daemon: external events (MHD_USE_EPOLL, no internal thread; the ITC that
 * ALLOW_SUSPEND_RESUME brings lets other threads resume connections). The first daemon binds;
 * the others accept on its socket (lfd). Each daemon may hold conn_limit connections: the
 * global and per-address limits are the admission's (on_accept).
 */
static struct MHD_Daemon *
daemon_start(struct http_server *s, struct http_loop *lp, const struct daemon_conf *c)
{
    struct MHD_OptionItem sock_opt[2] = {{MHD_OPTION_END, 0, NULL}, {MHD_OPTION_END, 0, NULL}};

    if (s->lfd == MHD_INVALID_SOCKET) {
        sock_opt[0].option = MHD_OPTION_SOCK_ADDR;
        sock_opt[0].ptr_value = (void *)(uintptr_t)c->ss;
    } else {
        sock_opt[0].option = MHD_OPTION_LISTEN_SOCKET;
        sock_opt[0].value = (intptr_t)s->lfd;
    }
    /* the logger goes first so that MHD reports option errors through it */
    return MHD_start_daemon(
        c->flags, c->port, on_accept, lp, on_access, s, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log,
        (void *)s, MHD_OPTION_ARRAY, sock_opt, MHD_OPTION_CONNECTION_MEMORY_LIMIT, c->header_limit,
        MHD_OPTION_CONNECTION_LIMIT, c->conn_limit, MHD_OPTION_CONNECTION_TIMEOUT, c->timeout_s,
        MHD_OPTION_STRICT_FOR_CLIENT, (int)1, MHD_OPTION_URI_LOG_CALLBACK, on_uri, (void *)s,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, (void *)s, MHD_OPTION_NOTIFY_CONNECTION,
        on_connection, (void *)lp, MHD_OPTION_SIGPIPE_HANDLED_BY_APP, (int)1, MHD_OPTION_END);
}

static latch_rc
loop_open(struct http_server *s, struct http_loop *lp, const struct daemon_conf *c)
{
    const union MHD_DaemonInfo *di;

    lp->srv = s;
    lp->idx = (unsigned)(lp - s->loops);
    lp->hook_fd = -1;
    lp->mhd_fd = -1;
    lp->mhd_due_us = 0;
    atomic_init(&lp->cmd, 0);
    lp->ep = epoll_create1(EPOLL_CLOEXEC);
    lp->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (lp->ep < 0 || lp->wake_fd < 0)
        return LATCH_E_IO;
    lp->d = daemon_start(s, lp, c);
    if (lp->d == NULL)
        return LATCH_E_IO;
    if (s->lfd == MHD_INVALID_SOCKET) {
        di = MHD_get_daemon_info(lp->d, MHD_DAEMON_INFO_LISTEN_FD);
        if (di == NULL)
            return LATCH_E_IO;
        s->lfd = di->listen_fd;
    }
    di = MHD_get_daemon_info(lp->d, MHD_DAEMON_INFO_EPOLL_FD);
    if (di == NULL)
        return LATCH_E_IO;
    lp->mhd_fd = di->epoll_fd;
    if (loop_add_fd(lp->ep, lp->mhd_fd) != LATCH_OK || loop_add_fd(lp->ep, lp->wake_fd) != LATCH_OK)
        return LATCH_E_IO;
    return LATCH_OK;
}

static void
server_close_loops(struct http_server *s)
{
    for (unsigned i = 0; i < s->nloops; i++)
        if (s->loops[i].started) {
            loop_post(&s->loops[i], LOOP_CMD_EXIT);
            pthread_join(s->loops[i].th, NULL);
            s->loops[i].started = false;
        }
    for (unsigned i = 0; i < s->nloops; i++)
        loop_close(&s->loops[i]);
    if (s->lfd != MHD_INVALID_SOCKET)
        close(s->lfd);
    s->lfd = MHD_INVALID_SOCKET;
}

static void
admit_init(struct admit *a, unsigned limit, unsigned limit_ip)
{
    if (pthread_mutex_init(&a->mu, NULL) != 0)
        abort();
    a->limit = limit;
    a->limit_ip = limit_ip;
    if (limit_ip < limit) {
        size_t n = 16;

        while (n < 2 * (size_t)limit)
            n *= 2;
        a->tab = xcalloc(n, sizeof *a->tab);
        a->mask = n - 1;
    }
}

latch_rc
http_server_start(const struct http_server_opts *o, struct http_server **out, struct latch_err *err)
{
    struct sockaddr_storage ss;
    struct http_server *s;
    const char *addr;
    unsigned threads, conn_limit, conn_limit_ip, timeout_s, hdr_s, body_s;
    struct daemon_conf dc;
    const union MHD_DaemonInfo *di;

    *out = NULL;
    memset(&dc, 0, sizeof dc);
    dc.flags = MHD_USE_EPOLL | MHD_USE_ERROR_LOG | MHD_ALLOW_SUSPEND_RESUME;
    if (o == NULL || o->dispatch == NULL) {
        latch_err_set(err, "http_server_start: no dispatcher");
        return LATCH_E_INVAL;
    }
    memset(&ss, 0, sizeof ss);
    addr = o->bind_addr != NULL ? o->bind_addr : "0.0.0.0";
    {
        struct sockaddr_in sin;
        struct sockaddr_in6 sin6;

        memset(&sin, 0, sizeof sin);
        memset(&sin6, 0, sizeof sin6);
        if (inet_pton(AF_INET, addr, &sin.sin_addr) == 1) {
            sin.sin_family = AF_INET;
            sin.sin_port = htons(o->port);
            memcpy(&ss, &sin, sizeof sin);
        } else if (inet_pton(AF_INET6, addr, &sin6.sin6_addr) == 1) {
            sin6.sin6_family = AF_INET6;
            sin6.sin6_port = htons(o->port);
            memcpy(&ss, &sin6, sizeof sin6);
            dc.flags |= MHD_USE_IPv6;
        } else {
            latch_err_set(err, "http_server_start: bad bind address");
            return LATCH_E_INVAL;
        }
    }
    threads = o->threads;
    if (threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);

        threads = n > 0 ? (unsigned)n : 1;
    }
    if (threads > HTTP_MAX_POOL_THREADS)
        threads = HTTP_MAX_POOL_THREADS;
    conn_limit = o->conn_limit != 0 ? o->conn_limit : HTTP_DEFAULT_CONN_LIMIT;
    timeout_s = o->conn_timeout_s != 0 ? o->conn_timeout_s : HTTP_DEFAULT_TIMEOUT_S;
    conn_limit_ip =
        o->conn_limit_ip != 0 && o->conn_limit_ip < conn_limit ? o->conn_limit_ip : conn_limit;
    hdr_s = o->header_timeout_s != 0 ? o->header_timeout_s : HTTP_DEFAULT_HEADER_TIMEOUT_S;
    body_s = o->body_timeout_s != 0 ? o->body_timeout_s : HTTP_DEFAULT_BODY_TIMEOUT_S;
    dc.header_limit = o->header_limit != 0 ? o->header_limit : LATCH_MAX_HEADER_BYTES;
    if (dc.header_limit < HTTP_MIN_HEADER_LIMIT)
        dc.header_limit = HTTP_MIN_HEADER_LIMIT;
    dc.port = o->port;
    dc.conn_limit = conn_limit;
    dc.timeout_s = timeout_s;
    dc.ss = &ss;

    s = xcalloc(1, sizeof *s);
    if (trustproxy_parse(o->trusted_proxies, &s->trust, err) != LATCH_OK) {
        free(s);
        return LATCH_E_INVAL;
    }
    s->lfd = MHD_INVALID_SOCKET;
    s->dispatch = o->dispatch;
    s->body_limit = o->body_limit;
    s->stream_body = o->stream_body;
    s->precheck = o->precheck;
    if (o->loop_hooks != NULL && o->loop_hooks->attach != NULL)
        s->hooks = *o->loop_hooks;
    s->body_budget = o->body_budget;
    if (o->upgrade_path != NULL && o->upgrade_check != NULL && o->upgraded != NULL) {
        s->upgrade_path = xstrdup(o->upgrade_path);
        s->upgrade_check = o->upgrade_check;
        s->upgraded = o->upgraded;
        s->upgrade_ud = o->upgrade_ud;
        dc.flags |= MHD_ALLOW_UPGRADE;
    }
    atomic_init(&s->body_charged, 0);
    atomic_init(&s->upgraded_open, 0);
    s->ud = o->ud;
    s->header_timeout_us = (uint64_t)hdr_s * 1000000u;
    s->idle_header_us = (uint64_t)(hdr_s > timeout_s ? hdr_s : timeout_s) * 1000000u;
    s->body_timeout_us = (uint64_t)body_s * 1000000u;
    if (pthread_mutex_init(&s->mu, NULL) != 0 || pthread_cond_init(&s->cv, NULL) != 0)
        abort();
    admit_init(&s->admit, conn_limit, conn_limit_ip);
    s->loops = xcalloc(threads, sizeof *s->loops);
    s->nloops = threads;
    for (unsigned i = 0; i < threads; i++)
        s->loops[i].ep = s->loops[i].wake_fd = -1;
    for (unsigned i = 0; i < threads; i++)
        if (loop_open(s, &s->loops[i], &dc) != LATCH_OK) {
            latch_err_set(err, "cannot start HTTP server on %s:%u", addr, (unsigned)o->port);
            server_close_loops(s);
            server_free(s);
            return LATCH_E_IO;
        }
    di = MHD_get_daemon_info(s->loops[0].d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di != NULL ? di->port : o->port;
    for (unsigned i = 0; i < threads; i++) {
        if (pthread_create(&s->loops[i].th, NULL, loop_main, &s->loops[i]) != 0) {
            latch_err_set(err, "cannot start the HTTP loop threads");
            server_close_loops(s);
            server_free(s);
            return LATCH_E_IO;
        }
        s->loops[i].started = true;
    }
    log_info("http server started", "addr=%s port=%u threads=%u", addr, (unsigned)s->port, threads);
    *out = s;
    return LATCH_OK;
}

uint16_t
http_server_port(const struct http_server *s)
{
    return s != NULL ? s->port : 0;
}

static void
deadline_after_ms(struct timespec *ts, long ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static bool
wait_live_zero(struct http_server *s, long ms)
{
    struct timespec dl;

    deadline_after_ms(&dl, ms);
    while (s->live > 0)
        if (pthread_cond_timedwait(&s->cv, &s->mu, &dl) == ETIMEDOUT)
            break;
    return s->live == 0;
}

/* With s->mu held: every loop stopped accepting (bounded: a loop answers within one MHD_run). */
static void
wait_quiesced(struct http_server *s)
{
    struct timespec dl;

    deadline_after_ms(&dl, 2000);
    for (unsigned i = 0; i < s->nloops; i++)
        while (s->loops[i].started && !s->loops[i].quiesced)
            if (pthread_cond_timedwait(&s->cv, &s->mu, &dl) == ETIMEDOUT)
                return;
}

void
http_server_stop(struct http_server *s)
{
    bool clean;

    if (s == NULL)
        return;
    for (unsigned i = 0; i < s->nloops; i++)
        loop_post(&s->loops[i], LOOP_CMD_QUIESCE);
    lock(&s->mu);
    wait_quiesced(s);
    s->stopping = true;
    clean = wait_live_zero(s, HTTP_STOP_GRACE_MS);
    if (!clean) {
        /* MHD must not be stopped with suspended connections: wake them all with an error */
        log_error("http server stop: forcing unfinished requests", "live=%zu", s->live);
        for (struct http_req *r = s->live_head; r != NULL; r = r->live_next) {
            lock(&r->mu);
            r->force_end = true;
            if (!r->completed && r->state == RS_WAIT_APP) {
                void (*ffn)(void *) = NULL;
                void *fud = NULL;

                r->state = RS_READY;
                if (r->kind == RESP_STREAM)
                    resp_clear_locked(r, &ffn, &fud); /* leaked on purpose: app still runs */
                if (r->kind == RESP_NONE) {
                    r->kind = RESP_BYTES;
                    r->status = 503;
                    r->resp_static_data = internal_error_body;
                    r->resp_len = sizeof internal_error_body - 1;
                    r->ctype = xstrdup(JSON_CTYPE);
                }
            }
            if (!r->completed && r->susp != SUSP_NONE) {
                r->susp = SUSP_NONE;
                req_mhd_resume(r);
            }
            unlock(&r->mu);
        }
        /* give the loops a moment to process the resumed connections */
        (void)wait_live_zero(s, 200);
    }
    unlock(&s->mu);
    /* MHD frees upgraded connections the application still holds: give it time to close them */
    for (int i = 0; i < HTTP_STOP_GRACE_MS / 10 && atomic_load(&s->upgraded_open) > 0; i++)
        (void)nanosleep(&(struct timespec){.tv_nsec = 10 * 1000 * 1000}, NULL);
    if (atomic_load(&s->upgraded_open) > 0)
        log_error("http server stop: upgraded connections still open", "n=%zu",
                  atomic_load(&s->upgraded_open));
    server_close_loops(s);
    lock(&s->mu);
    clean = wait_live_zero(s, clean ? 0 : HTTP_STOP_GRACE_MS);
    unlock(&s->mu);
    if (!clean) {
        /* the application still holds requests; they point at s, so s must stay */
        log_error("http server stop: requests still held by the application; leaking server",
                  "live=%zu", s->live);
        return;
    }
    server_free(s);
}

/* ---------------------------------------------------------------------------------------- */
/* request accessors */

const char *
http_req_method(const struct http_req *r)
{
    return r->method;
}

const char *
http_req_path(const struct http_req *r)
{
    return r->path;
}

const char *
http_req_raw_target(const struct http_req *r)
{
    return r->raw_target;
}

const char *
http_req_header(const struct http_req *r, const char *name)
{
    for (size_t i = 0; i < r->n_hdrs; i++)
        if (strcasecmp(r->hdrs[i].k, name) == 0)
            return r->hdrs[i].v != NULL ? r->hdrs[i].v : "";
    return NULL;
}

void
http_req_headers_foreach(const struct http_req *r,
                         bool (*cb)(const char *name, const char *value, void *ud), void *ud)
{
    for (size_t i = 0; i < r->n_hdrs; i++)
        if (!cb(r->hdrs[i].k, r->hdrs[i].v != NULL ? r->hdrs[i].v : "", ud))
            return;
}

const char *
http_req_query(const struct http_req *r, const char *name)
{
    for (size_t i = 0; i < r->n_args; i++)
        if (strcmp(r->args[i].k, name) == 0)
            return r->args[i].v != NULL ? r->args[i].v : "";
    return NULL;
}

void
http_req_query_foreach(const struct http_req *r,
                       bool (*cb)(const char *key, const char *value, void *ud), void *ud)
{
    for (size_t i = 0; i < r->n_args; i++)
        if (!cb(r->args[i].k, r->args[i].v, ud))
            return;
}

size_t
http_req_query_count(const struct http_req *r)
{
    return r->args_total;
}

const char *
http_req_body(const struct http_req *r, size_t *len)
{
    if (len != NULL)
        *len = r->body.len;
    return r->body.data != NULL ? r->body.data : "";
}

const char *
http_req_id(const struct http_req *r)
{
    return r->id;
}

const char *
http_req_client_ip(const struct http_req *r)
{
    return r->ip;
}

uint64_t
http_req_start_us(const struct http_req *r)
{
    return r->start_us;
}

unsigned
http_req_status(const struct http_req *r)
{
    return r->sent_status;
}

uint64_t
http_req_bytes_in(const struct http_req *r)
{
    return r->bytes_in;
}

uint64_t
http_req_bytes_out(const struct http_req *r)
{
    return r->bytes_out;
}

void
http_req_set_route(struct http_req *r, const char *pattern)
{
    r->route = pattern;
}

void
http_req_set_app_data(struct http_req *r, void *data, void (*free_fn)(void *))
{
    if (r->app_free != NULL && r->app_data != data)
        r->app_free(r->app_data);
    r->app_data = data;
    r->app_free = free_fn;
}

void *
http_req_loop_ctx(const struct http_req *r)
{
    return r != NULL && r->loop != NULL ? r->loop->hook_ctx : NULL;
}

void *
http_req_app_data(const struct http_req *r)
{
    return r->app_data;
}

static bool
logfmt_value_safe(const char *s)
{
    if (*s == '\0')
        return false;
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;

        if (c <= 0x20 || c >= 0x7f || c == '"' || c == '=' || c == '\\')
            return false;
    }
    return true;
}

void
http_req_log_kv(struct http_req *r, const char *key, const char *value)
{
    char q[256];
    const char *v;

    if (!token_safe(key) || strlen(key) > 64)
        return;
    if (value == NULL)
        value = "";
    v = logfmt_value_safe(value) && strlen(value) < sizeof q ? value
                                                             : log_quote(q, sizeof q, value);
    lock(&r->mu);
    (void)buf_printf(&r->log_kv, " %s=%s", key, v);
    unlock(&r->mu);
}
