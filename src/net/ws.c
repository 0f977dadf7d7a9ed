/*
 * ws.c - the WebSocket hub behind ws.h: one thread, one epoll set, libwslay framing.
 *
 * Who touches what:
 * - h->mu guards the id table, the adoption queue, the publish queue, the counters and the
 *   stopping flag. Any thread takes it (adopt, publish, count, handshake); the hub thread takes it
 *   to move clients in and out of the table.
 * - A client's socket, wslay context and deadlines belong to the hub thread alone. Other threads
 *   only ever read the id (immutable) and set c->outbox (under h->mu).
 * - A client is freed by the hub thread only, after it left the table (under h->mu), so a
 *   publisher holding h->mu never sees a freed client.
 * See docs/internals/ws.md.
 */
#include "net/ws.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <wslay/wslay.h>

#include "core/log.h"
#include "util/b64.h"
#include "util/xalloc.h"

#define WS_DEFAULT_MAX_CLIENTS 1000
#define WS_DEFAULT_IDLE_S 60
#define WS_DEFAULT_MAX_AGE_S 900
/* How long a closing socket may take to answer our close frame before it is dropped. */
#define WS_CLOSE_WAIT_MS 5000
/* The hub thread looks at deadlines at least this often. */
#define WS_TICK_MS 250
/* Bytes of one message latch sends (Nango's success/error shapes are far smaller). */
#define WS_MAX_OUT_MSG (16 * 1024)
#define WS_EPOLL_BATCH 64
/*
 * Frames waiting in a socket's wslay queue. A client that pings without reading the pongs
 * would grow it without end; past this it is dropped.
 */
#define WS_MAX_QUEUED 64

static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

struct ws_client {
    struct ws_hub *hub;
    int fd;
    char id[WS_CLIENT_ID_SIZE];
    wslay_event_context_ptr ctx;
    void (*release)(void *);
    void *release_ud;
    unsigned char *extra; /* bytes MHD read past the head; consumed before the socket */
    size_t extra_len, extra_off;

    /* hub thread only */
    uint64_t start_ms, last_rx_ms, last_ping_ms, close_at_ms;
    bool closing;          /* closing: dropped at close_at_ms at the latest */
    bool close_queued;     /* our close frame is queued (or sent) */
    bool close_after_send; /* a published message: close once it is out (wslay sends control
                              frames before data frames, so the close cannot be queued with it) */
    bool refused;          /* over max_clients at adoption: closed at once, never counted */
    bool in_epoll;
    uint32_t events; /* registered epoll events */

    /* guarded by hub->mu */
    bool in_table;
    char *outbox;            /* published message, waiting for the hub thread */
    struct ws_client *chain; /* id table bucket */
    struct ws_client *qnext; /* adoption queue or publish queue */

    /* hub thread only: the list of held clients */
    struct ws_client *prev, *next;
};

struct ws_hub {
    unsigned max_clients;
    uint64_t idle_ms, max_age_ms, ping_ms;
    int epfd, evfd;
    pthread_t thread;
    bool thread_started;

    pthread_mutex_t mu;
    bool stopping;               /* shutdown asked: close everything, refuse the rest */
    bool quit;                   /* ws_hub_stop: the thread ends */
    struct ws_client **table;    /* id -> client, n_buckets chains */
    size_t n_buckets;            /* power of two */
    struct ws_client *adopt_q;   /* handed over, not yet seen by the thread */
    struct ws_client *publish_q; /* with an outbox */
    size_t pending;              /* adopted but not yet released (what max_clients bounds) */
    atomic_size_t held;          /* sockets the thread holds (ws_hub_count) */

    struct ws_client *clients; /* hub thread only */
};

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

static uint64_t
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void
wake(struct ws_hub *h)
{
    uint64_t one = 1;

    if (write(h->evfd, &one, sizeof one) < 0 && errno != EAGAIN)
        log_warn("ws: cannot wake the hub thread", "errno=%d", errno);
}

/* ---------------------------------------------------------------------------------------- */
/* ids and the table (h->mu held) */

static void
id_generate(char out[WS_CLIENT_ID_SIZE])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char b[16];
    size_t o = 0;

    if (RAND_bytes(b, (int)sizeof b) != 1)
        abort();                                  /* no randomness: an id must never be guessable */
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    for (size_t i = 0; i < sizeof b; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[b[i] >> 4];
        out[o++] = hex[b[i] & 15];
    }
    out[o] = '\0';
}

static bool
id_sane(const char *s)
{
    size_t n = 0;

    for (; s[n] != '\0'; n++) {
        if (n >= WS_CLIENT_ID_SIZE - 1)
            return false;
        if (n == 8 || n == 13 || n == 18 || n == 23) {
            if (s[n] != '-')
                return false;
        } else if (!((s[n] >= '0' && s[n] <= '9') || (s[n] >= 'a' && s[n] <= 'f'))) {
            return false;
        }
    }
    return n == WS_CLIENT_ID_SIZE - 1;
}

static size_t
id_bucket(const struct ws_hub *h, const char *id)
{
    uint64_t x = 1469598103934665603ULL; /* FNV-1a */

    for (; *id != '\0'; id++) {
        x ^= (unsigned char)*id;
        x *= 1099511628211ULL;
    }
    return (size_t)(x & (h->n_buckets - 1));
}

static struct ws_client *
table_find(const struct ws_hub *h, const char *id)
{
    for (struct ws_client *c = h->table[id_bucket(h, id)]; c != NULL; c = c->chain)
        if (strcmp(c->id, id) == 0)
            return c;
    return NULL;
}

static void
table_add(struct ws_hub *h, struct ws_client *c)
{
    size_t b = id_bucket(h, c->id);

    c->chain = h->table[b];
    h->table[b] = c;
    c->in_table = true;
}

static void
table_remove(struct ws_hub *h, struct ws_client *c)
{
    struct ws_client **pp = &h->table[id_bucket(h, c->id)];

    if (!c->in_table)
        return;
    while (*pp != NULL && *pp != c)
        pp = &(*pp)->chain;
    if (*pp == c)
        *pp = c->chain;
    c->chain = NULL;
    c->in_table = false;
}

/* ---------------------------------------------------------------------------------------- */
/* wslay callbacks (hub thread) */

static ssize_t
cb_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *ud)
{
    struct ws_client *c = ud;
    ssize_t n;

    (void)flags;
    if (c->extra_off < c->extra_len) {
        size_t k = c->extra_len - c->extra_off;

        if (k > len)
            k = len;
        memcpy(buf, c->extra + c->extra_off, k);
        c->extra_off += k;
        return (ssize_t)k;
    }
    do
        n = recv(c->fd, buf, len, 0);
    while (n < 0 && errno == EINTR);
    if (n > 0)
        return n;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    else
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE); /* EOF or reset */
    return -1;
}

static ssize_t
cb_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags, void *ud)
{
    struct ws_client *c = ud;
    ssize_t n;

    do
        n = send(c->fd, data, len, MSG_NOSIGNAL | ((flags & WSLAY_MSG_MORE) ? MSG_MORE : 0));
    while (n < 0 && errno == EINTR);
    if (n >= 0)
        return n;
    if (errno == EAGAIN || errno == EWOULDBLOCK)
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    else
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
}

static void
cb_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg, void *ud)
{
    struct ws_client *c = ud;

    (void)ctx;
    (void)arg;
    /* any frame (a pong included) proves the client alive; its content is not used */
    c->last_rx_ms = now_ms();
}

static const struct wslay_event_callbacks ws_callbacks = {
    .recv_callback = cb_recv,
    .send_callback = cb_send,
    .on_msg_recv_callback = cb_msg,
};

/* ---------------------------------------------------------------------------------------- */
/* the hub thread */

static void
client_free(struct ws_client *c)
{
    if (c->ctx != NULL)
        wslay_event_context_free(c->ctx);
    free(c->extra);
    free(c->outbox);
    free(c);
}

/* Hub thread: done with this socket. Leaves the table, the epoll set and the list; releases. */
static void
client_drop(struct ws_hub *h, struct ws_client *c, const char *why)
{
    lock(&h->mu);
    table_remove(h, c);
    if (c->outbox != NULL) { /* published meanwhile: still on the publish queue */
        struct ws_client **pp = &h->publish_q;

        while (*pp != NULL && *pp != c)
            pp = &(*pp)->qnext;
        if (*pp == c)
            *pp = c->qnext;
    }
    if (!c->refused)
        h->pending--;
    unlock(&h->mu);
    if (c->in_epoll)
        (void)epoll_ctl(h->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else if (h->clients == c)
        h->clients = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    atomic_fetch_sub(&h->held, 1);
    log_debug("ws client closed", "id=%s reason=%s", c->id, why);
    c->release(c->release_ud); /* the socket is closed by its owner from here on */
    client_free(c);
}

/* Hub thread: the socket has WS_CLOSE_WAIT_MS left to finish. */
static void
client_closing(struct ws_client *c)
{
    if (!c->closing) {
        c->closing = true;
        c->close_at_ms = now_ms() + WS_CLOSE_WAIT_MS;
    }
}

/* Hub thread: queues a close frame (once) and gives the peer WS_CLOSE_WAIT_MS to answer. */
static void
client_close(struct ws_client *c, uint16_t code, const char *reason)
{
    if (!c->close_queued) {
        (void)wslay_event_queue_close(c->ctx, code, (const uint8_t *)reason, strlen(reason));
        c->close_queued = true;
    }
    client_closing(c);
}

/* Hub thread: sends what wslay has queued, reads what arrived; false when the socket is done. */
static bool
client_pump(struct ws_client *c, bool readable)
{
    if (readable && wslay_event_want_read(c->ctx) && wslay_event_recv(c->ctx) != 0)
        return false;
    if (wslay_event_want_write(c->ctx) && wslay_event_send(c->ctx) != 0)
        return false;
    if (wslay_event_get_queued_msg_count(c->ctx) > WS_MAX_QUEUED) {
        log_info("ws client dropped: it does not read what it asks for", "id=%s", c->id);
        return false;
    }
    if (c->close_after_send && wslay_event_get_queued_msg_count(c->ctx) == 0) {
        c->close_after_send = false;
        client_close(c, 1000, "done");
        if (wslay_event_want_write(c->ctx) && wslay_event_send(c->ctx) != 0)
            return false;
    }
    /* closed both ways (close frames exchanged), or a close sent after reading stopped */
    return wslay_event_want_read(c->ctx) || wslay_event_want_write(c->ctx);
}

static void
client_watch(struct ws_hub *h, struct ws_client *c)
{
    struct epoll_event ev = {0};
    uint32_t want = 0;

    /* level-triggered: only what wslay still wants, or a half-closed peer would spin us */
    if (wslay_event_want_read(c->ctx))
        want |= EPOLLIN | EPOLLRDHUP;
    if (wslay_event_want_write(c->ctx))
        want |= EPOLLOUT;
    if (c->in_epoll && want == c->events)
        return;
    ev.events = want;
    ev.data.ptr = c;
    if (epoll_ctl(h->epfd, c->in_epoll ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &ev) == 0) {
        c->in_epoll = true;
        c->events = want;
    }
}

static bool
queue_text(struct ws_client *c, const char *text)
{
    struct wslay_event_msg m = {
        .opcode = WSLAY_TEXT_FRAME,
        .msg = (const uint8_t *)text,
        .msg_length = strlen(text),
    };

    return wslay_event_queue_msg(c->ctx, &m) == 0;
}

/* Hub thread: a newly adopted socket joins (or is refused). */
static void
client_start(struct ws_hub *h, struct ws_client *c, bool stopping)
{
    char ack[128];
    int fl = fcntl(c->fd, F_GETFL);

    c->hub = h;
    c->start_ms = c->last_rx_ms = c->last_ping_ms = now_ms();
    c->next = h->clients;
    if (h->clients != NULL)
        h->clients->prev = c;
    h->clients = c;
    atomic_fetch_add(&h->held, 1);
    if (fl < 0 || fcntl(c->fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
        wslay_event_context_server_init(&c->ctx, &ws_callbacks, c) != 0) {
        c->ctx = NULL;
        client_drop(h, c, "setup_failed");
        return;
    }
    wslay_event_config_set_max_recv_msg_length(c->ctx, WS_MAX_CLIENT_MSG);
    if (stopping || c->refused) {
        client_close(c, c->refused ? 1008 : 1001,
                     c->refused ? "try again later" : "server stopping");
    } else {
        (void)snprintf(ack, sizeof ack,
                       "{\"message_type\":\"connection_ack\",\"ws_client_id\":\"%s\"}", c->id);
        if (!queue_text(c, ack)) {
            client_drop(h, c, "queue_failed");
            return;
        }
        lock(&h->mu);
        table_add(h, c);
        unlock(&h->mu);
    }
    if (!client_pump(c, c->extra_len > 0)) {
        client_drop(h, c, "peer_gone");
        return;
    }
    client_watch(h, c);
    log_debug("ws client connected", "id=%s", c->id);
}

/* Hub thread: takes the queues (adoptions, publications) and applies them. */
static bool
drain_queues(struct ws_hub *h)
{
    struct ws_client *aq, *pq;
    bool stopping, quit;
    uint64_t v;

    while (read(h->evfd, &v, sizeof v) > 0)
        ;
    lock(&h->mu);
    aq = h->adopt_q;
    pq = h->publish_q;
    h->adopt_q = NULL;
    h->publish_q = NULL;
    stopping = h->stopping;
    quit = h->quit;
    unlock(&h->mu);

    /* the queue is last-in first: restore arrival order so acks follow handshakes */
    {
        struct ws_client *rev = NULL;

        while (aq != NULL) {
            struct ws_client *n = aq->qnext;

            aq->qnext = rev;
            rev = aq;
            aq = n;
        }
        aq = rev;
    }
    while (aq != NULL) {
        struct ws_client *c = aq;

        aq = c->qnext;
        c->qnext = NULL;
        client_start(h, c, stopping);
    }
    while (pq != NULL) {
        struct ws_client *c = pq;
        char *msg;

        pq = c->qnext;
        c->qnext = NULL;
        lock(&h->mu);
        msg = c->outbox;
        c->outbox = NULL;
        unlock(&h->mu);
        if (msg != NULL && !c->closing) {
            if (queue_text(c, msg)) {
                c->close_after_send = true;
                client_closing(c);
            } else {
                client_close(c, 1011, "cannot send");
            }
        }
        free(msg);
        if (!client_pump(c, false))
            client_drop(h, c, "peer_gone");
        else
            client_watch(h, c);
    }
    if (stopping) {
        struct ws_client *n;

        for (struct ws_client *c = h->clients; c != NULL; c = n) {
            n = c->next;
            client_close(c, 1001, "server stopping");
            /* one attempt to send the close frame; nobody waits for the answer */
            (void)client_pump(c, false);
            client_drop(h, c, "server_stopping");
        }
    }
    return !quit;
}

/* Hub thread: deadlines (idle, age, close wait) and pings. */
static void
sweep(struct ws_hub *h)
{
    uint64_t now = now_ms();
    struct ws_client *n;

    for (struct ws_client *c = h->clients; c != NULL; c = n) {
        n = c->next;
        if (c->closing) {
            if (now >= c->close_at_ms)
                client_drop(h, c, "close_timeout");
            continue;
        }
        if (now - c->last_rx_ms >= h->idle_ms)
            client_close(c, 1001, "idle");
        else if (now - c->start_ms >= h->max_age_ms)
            client_close(c, 1001, "too old");
        else if (now - c->last_ping_ms >= h->ping_ms) {
            struct wslay_event_msg m = {.opcode = WSLAY_PING, .msg = NULL, .msg_length = 0};

            (void)wslay_event_queue_msg(c->ctx, &m);
            c->last_ping_ms = now;
        }
        if (c->closing) {
            /* nobody owes this client a message any more: forget its id */
            lock(&h->mu);
            table_remove(h, c);
            unlock(&h->mu);
        }
        if (!client_pump(c, false))
            client_drop(h, c, "peer_gone");
        else
            client_watch(h, c);
    }
}

static void *
hub_main(void *arg)
{
    struct ws_hub *h = arg;
    struct epoll_event evs[WS_EPOLL_BATCH];
    uint64_t next_sweep = now_ms() + WS_TICK_MS;

    for (;;) {
        uint64_t now = now_ms();
        int timeout = now >= next_sweep ? 0 : (int)(next_sweep - now);
        int n = epoll_wait(h->epfd, evs, WS_EPOLL_BATCH, timeout);
        bool woken = false;

        if (n < 0 && errno != EINTR) {
            log_error("ws: epoll_wait failed", "errno=%d", errno);
            break;
        }
        /* a client is only dropped while its own event is handled; the queues come after */
        for (int i = 0; i < n; i++) {
            struct ws_client *c = evs[i].data.ptr;

            if (c == NULL) {
                woken = true;
                continue;
            }
            if (!client_pump(c,
                             (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0))
                client_drop(h, c, wslay_event_get_close_received(c->ctx) ? "closed" : "peer_gone");
            else
                client_watch(h, c);
        }
        if (woken && !drain_queues(h))
            break;
        if (now_ms() >= next_sweep) {
            sweep(h);
            next_sweep = now_ms() + WS_TICK_MS;
        }
    }
    while (h->clients != NULL)
        client_drop(h, h->clients, "server_stopping");
    return NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* public */

latch_rc
ws_hub_start(const struct ws_hub_opts *o, struct ws_hub **out, struct latch_err *err)
{
    struct ws_hub *h = xcalloc(1, sizeof *h);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    unsigned idle_s, age_s;

    *out = NULL;
    h->max_clients = o != NULL && o->max_clients != 0 ? o->max_clients : WS_DEFAULT_MAX_CLIENTS;
    idle_s = o != NULL && o->idle_s != 0 ? o->idle_s : WS_DEFAULT_IDLE_S;
    age_s = o != NULL && o->max_age_s != 0 ? o->max_age_s : WS_DEFAULT_MAX_AGE_S;
    h->idle_ms = (uint64_t)idle_s * 1000u;
    h->max_age_ms = (uint64_t)age_s * 1000u;
    h->ping_ms = h->idle_ms / 3 > 0 ? h->idle_ms / 3 : 1;
    for (h->n_buckets = 64; h->n_buckets < (size_t)h->max_clients * 2; h->n_buckets *= 2)
        ;
    h->table = xcalloc(h->n_buckets, sizeof(struct ws_client *));
    atomic_init(&h->held, 0);
    if (pthread_mutex_init(&h->mu, NULL) != 0)
        abort();
    h->epfd = epoll_create1(EPOLL_CLOEXEC);
    h->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (h->epfd < 0 || h->evfd < 0 || epoll_ctl(h->epfd, EPOLL_CTL_ADD, h->evfd, &ev) != 0) {
        latch_err_set(err, "ws: cannot create the hub's epoll set");
        goto fail;
    }
    if (pthread_create(&h->thread, NULL, hub_main, h) != 0) {
        latch_err_set(err, "ws: cannot start the hub thread");
        goto fail;
    }
    h->thread_started = true;
    log_info("websocket hub started", "max_clients=%u idle_s=%u max_age_s=%u", h->max_clients,
             idle_s, age_s);
    *out = h;
    return LATCH_OK;
fail:
    if (h->epfd >= 0)
        close(h->epfd);
    if (h->evfd >= 0)
        close(h->evfd);
    pthread_mutex_destroy(&h->mu);
    free(h->table);
    free(h);
    return LATCH_E_IO;
}

void
ws_hub_shutdown(struct ws_hub *h)
{
    if (h == NULL)
        return;
    lock(&h->mu);
    h->stopping = true;
    unlock(&h->mu);
    wake(h);
}

void
ws_hub_stop(struct ws_hub *h)
{
    if (h == NULL)
        return;
    lock(&h->mu);
    h->stopping = true;
    h->quit = true;
    unlock(&h->mu);
    wake(h);
    if (h->thread_started)
        pthread_join(h->thread, NULL);
    /* adoptions after the thread's last look (none once the HTTP server is stopped) */
    while (h->adopt_q != NULL) {
        struct ws_client *c = h->adopt_q;

        h->adopt_q = c->qnext;
        c->release(c->release_ud);
        client_free(c);
    }
    close(h->epfd);
    close(h->evfd);
    pthread_mutex_destroy(&h->mu);
    free(h->table);
    free(h);
}

latch_rc
ws_hub_publish(struct ws_hub *h, const char *ws_client_id, const char *json)
{
    struct ws_client *c;
    size_t len;

    if (h == NULL || ws_client_id == NULL || !id_sane(ws_client_id) || json == NULL)
        return LATCH_E_INVAL;
    len = strlen(json);
    if (len == 0 || len > WS_MAX_OUT_MSG)
        return LATCH_E_INVAL;
    lock(&h->mu);
    c = table_find(h, ws_client_id);
    if (c == NULL || h->stopping) {
        unlock(&h->mu);
        return LATCH_E_NOT_FOUND;
    }
    /* one message per client, as Nango: the id is gone once a message is on its way */
    table_remove(h, c);
    c->outbox = xstrdup(json);
    c->qnext = h->publish_q;
    h->publish_q = c;
    unlock(&h->mu);
    wake(h);
    return LATCH_OK;
}

size_t
ws_hub_count(const struct ws_hub *h)
{
    return h != NULL ? atomic_load(&h->held) : 0;
}

/* True when the comma-separated header value has token (case-insensitive). */
static bool
header_has_token(const char *v, const char *token)
{
    size_t tl = strlen(token);

    while (v != NULL && *v != '\0') {
        const char *e;
        size_t n;

        while (*v == ' ' || *v == '\t' || *v == ',')
            v++;
        e = strchr(v, ',');
        n = e != NULL ? (size_t)(e - v) : strlen(v);
        while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
            n--;
        if (n == tl && strncasecmp(v, token, tl) == 0)
            return true;
        v = e;
    }
    return false;
}

static bool
accept_value(const char *key, char accept[WS_ACCEPT_SIZE])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    bool ok = m != NULL && EVP_DigestInit_ex(m, EVP_sha1(), NULL) == 1 &&
              EVP_DigestUpdate(m, key, strlen(key)) == 1 &&
              EVP_DigestUpdate(m, ws_guid, sizeof ws_guid - 1) == 1 &&
              EVP_DigestFinal_ex(m, md, &mdlen) == 1 && mdlen == 20;

    EVP_MD_CTX_free(m);
    return ok && b64_encode(md, mdlen, accept, WS_ACCEPT_SIZE) == LATCH_OK;
}

unsigned
ws_hub_handshake(struct ws_hub *h, const struct ws_handshake *hs, char accept[WS_ACCEPT_SIZE],
                 const char **code, const char **message)
{
    unsigned char raw[24];
    size_t raw_len = 0;
    bool full, stopping;

    *code = "invalid_request";
    if (hs->method == NULL || strcmp(hs->method, "GET") != 0) {
        *message = "A WebSocket handshake must be a GET request.";
        return 400;
    }
    if (hs->has_body) {
        *message = "A WebSocket handshake carries no body.";
        return 400;
    }
    if (!header_has_token(hs->upgrade, "websocket")) {
        *message = "Only an upgrade to \"websocket\" is offered here.";
        return 400;
    }
    if (!header_has_token(hs->connection, "upgrade")) {
        *message = "The Connection header must contain \"Upgrade\".";
        return 400;
    }
    if (hs->version == NULL || strcmp(hs->version, "13") != 0) {
        *code = "unsupported_websocket_version";
        *message = "Only WebSocket version 13 is supported (Sec-WebSocket-Version: 13).";
        return 426;
    }
    if (hs->key == NULL || strlen(hs->key) != 24 ||
        b64_decode(hs->key, 24, raw, sizeof raw, &raw_len) != LATCH_OK || raw_len != 16) {
        *message = "Sec-WebSocket-Key must be 16 bytes in base64.";
        return 400;
    }
    if (h == NULL) {
        *code = "server_shutting_down";
        *message = "The WebSocket endpoint is not running.";
        return 503;
    }
    lock(&h->mu);
    full = h->pending >= h->max_clients;
    stopping = h->stopping;
    unlock(&h->mu);
    if (stopping) {
        *code = "server_shutting_down";
        *message = "The server is shutting down; connect again in a moment.";
        return 503;
    }
    if (full) {
        *code = "too_many_websockets";
        *message = "Too many WebSocket clients are connected; try again in a moment.";
        return 503;
    }
    if (!accept_value(hs->key, accept)) {
        *code = "internal_error";
        *message = "Cannot compute the handshake answer.";
        return 500;
    }
    *code = NULL;
    *message = NULL;
    return 0;
}

void
ws_hub_adopt(struct ws_hub *h, int fd, const char *extra, size_t extra_len, void (*release)(void *),
             void *release_ud)
{
    struct ws_client *c = xcalloc(1, sizeof *c);
    bool refuse;

    c->fd = fd;
    c->release = release;
    c->release_ud = release_ud;
    if (extra_len > 0) {
        c->extra = xmalloc(extra_len);
        memcpy(c->extra, extra, extra_len);
        c->extra_len = extra_len;
    }
    lock(&h->mu);
    refuse = h->pending >= h->max_clients;
    c->refused = refuse;
    do
        id_generate(c->id);
    while (table_find(h, c->id) != NULL);
    if (!refuse)
        h->pending++;
    /* refused ones still go through the thread, which releases them (never from here) */
    c->qnext = h->adopt_q;
    h->adopt_q = c;
    unlock(&h->mu);
    if (refuse)
        log_warn("ws: client refused (max clients)", "max=%u", h->max_clients);
    wake(h);
}
