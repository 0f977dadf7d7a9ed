/*
 * test_ws.c - the WebSocket hub without libmicrohttpd: one end of a socketpair is adopted as an
 * upgraded socket, the other end is a libwslay client. Covers what no public API can trigger
 * from outside yet (ws_hub_publish reaching the right client, then the close), the handshake
 * check (RFC 6455's own example), shutdown, and the release contract.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/rand.h>
#include <wslay/wslay.h>

#include "core/log.h"
#include "net/ws.h"

#define MAX_MSGS 8

/* One fake browser: the client end of a socketpair, with its own wslay client context. */
struct peer {
    int fd;     /* client end */
    int hub_fd; /* adopted end; closed by release */
    wslay_event_context_ptr ctx;
    char *msgs[MAX_MSGS];
    size_t n_msgs;
    int close_code; /* 0 until a close frame arrived */
    atomic_int released;
};

static ssize_t
peer_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *ud)
{
    struct peer *p = ud;
    ssize_t n = recv(p->fd, buf, len, 0);

    (void)flags;
    if (n > 0)
        return n;
    wslay_event_set_error(ctx, n < 0 && errno == EAGAIN ? WSLAY_ERR_WOULDBLOCK
                                                        : WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
}

static ssize_t
peer_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags, void *ud)
{
    struct peer *p = ud;
    ssize_t n = send(p->fd, data, len, MSG_NOSIGNAL);

    (void)flags;
    if (n >= 0)
        return n;
    wslay_event_set_error(ctx, errno == EAGAIN ? WSLAY_ERR_WOULDBLOCK : WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
}

static int
peer_genmask(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *ud)
{
    (void)ctx;
    (void)ud;
    return RAND_bytes(buf, (int)len) == 1 ? 0 : -1;
}

static void
peer_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg, void *ud)
{
    struct peer *p = ud;

    (void)ctx;
    if (getenv("WS_DEBUG"))
        fprintf(stderr, "peer fd=%d opcode=%d len=%zu code=%u\n", p->fd, arg->opcode,
                arg->msg_length, arg->status_code);
    if (arg->opcode == WSLAY_TEXT_FRAME && p->n_msgs < MAX_MSGS) {
        char *m = malloc(arg->msg_length + 1);

        memcpy(m, arg->msg, arg->msg_length);
        m[arg->msg_length] = '\0';
        p->msgs[p->n_msgs++] = m;
    } else if (arg->opcode == WSLAY_CONNECTION_CLOSE) {
        p->close_code = arg->status_code;
    }
}

static const struct wslay_event_callbacks peer_cbs = {
    .recv_callback = peer_recv,
    .send_callback = peer_send,
    .genmask_callback = peer_genmask,
    .on_msg_recv_callback = peer_msg,
};

static void
peer_release(void *ud)
{
    struct peer *p = ud;

    if (getenv("WS_DEBUG"))
        fprintf(stderr, "release %p fd=%d\n", (void *)p, p->hub_fd);
    close(p->hub_fd); /* what http_upgraded_close does through MHD */
    atomic_store(&p->released, 1);
}

static void
peer_open(struct peer *p, struct ws_hub *h, const char *extra, size_t extra_len)
{
    int sv[2];

    memset(p, 0, sizeof *p);
    atomic_init(&p->released, 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    p->fd = sv[0];
    p->hub_fd = sv[1];
    assert_int_equal(fcntl(p->fd, F_SETFL, O_NONBLOCK), 0);
    assert_int_equal(wslay_event_context_client_init(&p->ctx, &peer_cbs, p), 0);
    ws_hub_adopt(h, p->hub_fd, extra, extra_len, peer_release, p);
}

static void
peer_free(struct peer *p)
{
    for (size_t i = 0; i < p->n_msgs; i++)
        free(p->msgs[i]);
    wslay_event_context_free(p->ctx);
    close(p->fd);
}

static long
mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Pumps the client until cond holds or ms (wall clock) pass; true if it held. */
static bool
peer_until(struct peer *p, bool (*cond)(const struct peer *), int ms)
{
    long end = mono_ms() + ms;

    while (mono_ms() < end) {
        struct pollfd pfd = {.fd = p->fd, .events = POLLIN};

        if (wslay_event_want_write(p->ctx))
            (void)wslay_event_send(p->ctx);
        if (!wslay_event_want_read(p->ctx))
            (void)poll(NULL, 0, 10); /* at EOF poll returns at once: wait for real */
        else if (poll(&pfd, 1, 20) > 0)
            (void)wslay_event_recv(p->ctx);
        if (cond(p))
            return true;
    }
    return cond(p);
}

static bool
got_ack(const struct peer *p)
{
    return p->n_msgs >= 1;
}

static bool
got_two(const struct peer *p)
{
    return p->n_msgs >= 2;
}

static bool
got_close(const struct peer *p)
{
    return p->close_code != 0;
}

static bool
released(const struct peer *p)
{
    return atomic_load(&((struct peer *)(uintptr_t)p)->released) != 0;
}

/* The ack's id (checked for Nango's shape); copied into id. */
static void
ack_id(const struct peer *p, char id[WS_CLIENT_ID_SIZE])
{
    json_error_t e;
    json_t *j = json_loads(p->msgs[0], 0, &e);
    const char *s;

    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "message_type")), "connection_ack");
    assert_int_equal(json_object_size(j), 2);
    s = json_string_value(json_object_get(j, "ws_client_id"));
    assert_non_null(s);
    assert_int_equal(strlen(s), WS_CLIENT_ID_SIZE - 1);
    assert_int_equal(s[14], '4'); /* UUID version 4 */
    memcpy(id, s, WS_CLIENT_ID_SIZE);
    json_decref(j);
}

static struct ws_hub *
hub(unsigned max_clients, unsigned idle_s)
{
    struct ws_hub_opts o = {.max_clients = max_clients, .idle_s = idle_s};
    struct ws_hub *h = NULL;
    struct latch_err err = {0};

    assert_int_equal(ws_hub_start(&o, &h, &err), LATCH_OK);
    return h;
}

static void
test_publish_reaches_the_right_client(void **state)
{
    struct ws_hub *h = hub(0, 0);
    struct peer a, b;
    char ida[WS_CLIENT_ID_SIZE], idb[WS_CLIENT_ID_SIZE];
    const char *msg = "{\"message_type\":\"success\",\"provider_config_key\":\"k\","
                      "\"connection_id\":\"c\",\"is_pending\":false}";

    (void)state;
    peer_open(&a, h, NULL, 0);
    peer_open(&b, h, NULL, 0);
    assert_true(peer_until(&a, got_ack, 5000));
    assert_true(peer_until(&b, got_ack, 5000));
    ack_id(&a, ida);
    ack_id(&b, idb);
    assert_string_not_equal(ida, idb);
    assert_int_equal(ws_hub_count(h), 2);

    assert_int_equal(ws_hub_publish(h, idb, msg), LATCH_OK);
    /* a second message for the same client: it is already on its way out */
    assert_int_equal(ws_hub_publish(h, idb, msg), LATCH_E_NOT_FOUND);
    assert_true(peer_until(&b, got_two, 5000));
    assert_string_equal(b.msgs[1], msg);
    /* then the hub closes, as Nango does; answering the close releases the socket */
    assert_true(peer_until(&b, got_close, 5000));
    assert_int_equal(b.close_code, 1000);
    assert_true(peer_until(&b, released, 5000));

    /* the other client got nothing and is still held */
    (void)peer_until(&a, got_two, 300);
    assert_int_equal(a.n_msgs, 1);
    assert_int_equal(a.close_code, 0);
    assert_false(released(&a));
    assert_int_equal(ws_hub_count(h), 1);

    ws_hub_stop(h);
    assert_true(released(&a));
    peer_free(&a);
    peer_free(&b);
}

static void
test_publish_refusals(void **state)
{
    struct ws_hub *h = hub(0, 0);

    (void)state;
    assert_int_equal(ws_hub_publish(h, "00000000-0000-4000-8000-000000000000", "{}"),
                     LATCH_E_NOT_FOUND);
    assert_int_equal(ws_hub_publish(h, "not-an-id", "{}"), LATCH_E_INVAL);
    assert_int_equal(ws_hub_publish(h, "00000000-0000-4000-8000-00000000000G", "{}"),
                     LATCH_E_INVAL);
    assert_int_equal(ws_hub_publish(h, "00000000-0000-4000-8000-000000000000", ""), LATCH_E_INVAL);
    assert_int_equal(ws_hub_publish(h, NULL, "{}"), LATCH_E_INVAL);
    assert_int_equal(ws_hub_publish(NULL, "00000000-0000-4000-8000-000000000000", "{}"),
                     LATCH_E_INVAL);
    ws_hub_stop(h);
}

static void
test_client_close_releases(void **state)
{
    struct ws_hub *h = hub(0, 0);
    struct peer a;
    char id[WS_CLIENT_ID_SIZE];

    (void)state;
    peer_open(&a, h, NULL, 0);
    assert_true(peer_until(&a, got_ack, 5000));
    ack_id(&a, id);
    assert_int_equal(wslay_event_queue_close(a.ctx, 1000, NULL, 0), 0);
    assert_true(peer_until(&a, released, 5000));
    assert_int_equal(a.close_code, 1000); /* the hub answered the close */
    assert_int_equal(ws_hub_count(h), 0);
    assert_int_equal(ws_hub_publish(h, id, "{}"), LATCH_E_NOT_FOUND);
    ws_hub_stop(h);
    peer_free(&a);
}

/* Bytes MHD read past the head are the client's first bytes: here a masked close frame. */
static void
test_extra_bytes_come_first(void **state)
{
    struct ws_hub *h = hub(0, 0);
    struct peer a;
    /* FIN+close, masked, 2-byte payload 1000 (0x03e8) under mask 01 02 03 04 */
    const char frame[] = {(char)0x88, (char)0x82, 1, 2, 3, 4, (char)(0x03 ^ 1), (char)(0xe8 ^ 2)};

    (void)state;
    peer_open(&a, h, frame, sizeof frame);
    assert_true(peer_until(&a, released, 5000));
    assert_int_equal(a.close_code, 1000);
    ws_hub_stop(h);
    peer_free(&a);
}

static void
test_max_clients_and_shutdown(void **state)
{
    struct ws_hub *h = hub(2, 0);
    struct peer p[3];
    char accept[WS_ACCEPT_SIZE];
    const char *code, *message;
    struct ws_handshake hs = {.method = "GET",
                              .upgrade = "websocket",
                              .connection = "Upgrade",
                              .version = "13",
                              .key = "dGhlIHNhbXBsZSBub25jZQ=="};

    (void)state;
    peer_open(&p[0], h, NULL, 0);
    peer_open(&p[1], h, NULL, 0);
    assert_true(peer_until(&p[0], got_ack, 5000));
    assert_true(peer_until(&p[1], got_ack, 5000));
    /* full: the handshake says 503, and an adoption past the check is refused (1008: libwslay, like
     * other strict peers, rejects the newer 1013) */
    assert_int_equal(ws_hub_handshake(h, &hs, accept, &code, &message), 503);
    assert_string_equal(code, "too_many_websockets");
    peer_open(&p[2], h, NULL, 0);
    assert_true(peer_until(&p[2], released, 5000));
    assert_int_equal(p[2].n_msgs, 0);
    assert_int_equal(p[2].close_code, 1008);
    assert_int_equal(ws_hub_count(h), 2);

    /* shutdown: everyone gets 1001 and is released; handshakes get 503 */
    ws_hub_shutdown(h);
    assert_true(peer_until(&p[0], released, 5000));
    assert_true(peer_until(&p[1], released, 5000));
    assert_true(peer_until(&p[0], got_close, 1000));
    assert_int_equal(p[0].close_code, 1001);
    assert_int_equal(ws_hub_handshake(h, &hs, accept, &code, &message), 503);
    assert_string_equal(code, "server_shutting_down");
    ws_hub_stop(h);
    for (int i = 0; i < 3; i++)
        peer_free(&p[i]);
}

/* A peer that answers no ping is dropped after idle_s (the hub pings every third of it). */
static void
test_idle_drop(void **state)
{
    struct ws_hub *h = hub(0, 1);
    struct peer a;
    struct timespec t0, t1;

    (void)state;
    peer_open(&a, h, NULL, 0);
    assert_true(peer_until(&a, got_ack, 5000));
    clock_gettime(CLOCK_MONOTONIC, &t0);
    /* never read again, so never pong: wait for the release only */
    for (int i = 0; i < 500 && !released(&a); i++)
        (void)poll(NULL, 0, 20);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_true(released(&a));
    assert_true((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000 >= 500);
    ws_hub_stop(h);
    peer_free(&a);
}

/* A peer that pings and never reads the pongs: dropped, not buffered for without end. */
static void
test_ping_flood_dropped(void **state)
{
    struct ws_hub *h = hub(0, 0);
    struct peer a;
    uint8_t payload[125];
    long end;

    (void)state;
    memset(payload, 'p', sizeof payload);
    peer_open(&a, h, NULL, 0);
    assert_true(peer_until(&a, got_ack, 5000));
    end = mono_ms() + 20000;
    while (!released(&a) && mono_ms() < end) {
        struct wslay_event_msg m = {
            .opcode = WSLAY_PING, .msg = payload, .msg_length = sizeof payload};

        if (wslay_event_get_queued_msg_count(a.ctx) < 256)
            (void)wslay_event_queue_msg(a.ctx, &m);
        if (wslay_event_send(a.ctx) != 0)
            break; /* the hub closed: EPIPE */
        if (wslay_event_get_queued_msg_count(a.ctx) >= 256)
            (void)poll(NULL, 0, 5);
    }
    for (int i = 0; i < 500 && !released(&a); i++)
        (void)poll(NULL, 0, 10);
    assert_true(released(&a));
    assert_int_equal(ws_hub_count(h), 0);
    ws_hub_stop(h);
    peer_free(&a);
}

static void
test_handshake_check(void **state)
{
    struct ws_hub *h = hub(0, 0);
    char accept[WS_ACCEPT_SIZE];
    const char *code, *message;
    struct ws_handshake ok = {.method = "GET",
                              .upgrade = "websocket",
                              .connection = "keep-alive, Upgrade",
                              .version = "13",
                              .key = "dGhlIHNhbXBsZSBub25jZQ=="};
    struct ws_handshake bad;

    (void)state;
    /* RFC 6455 section 1.3's example */
    assert_int_equal(ws_hub_handshake(h, &ok, accept, &code, &message), 0);
    assert_string_equal(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");

    bad = ok;
    bad.method = "POST";
    assert_int_equal(ws_hub_handshake(h, &bad, accept, &code, &message), 400);
    bad = ok;
    bad.upgrade = "h2c";
    assert_int_equal(ws_hub_handshake(h, &bad, accept, &code, &message), 400);
    bad = ok;
    bad.upgrade = NULL;
    assert_int_equal(ws_hub_handshake(h, &bad, accept, &code, &message), 400);
    bad = ok;
    bad.connection = "close";
    assert_int_equal(ws_hub_handshake(h, &bad, accept, &code, &message), 400);
    bad = ok;
    bad.connection = "upgrades";
    assert_int_equal(ws_hub_handshake(h, &bad, accept, &code, &message), 400);
    bad = ok;
    bad.version = "8";
    assert_int_equal(ws_hub_handshake(h, &bad, accept, &code, &message), 426);
    bad = ok;
    bad.key = "dGhlIHNhbXBsZSBub25jZQ"; /* no padding */
    assert_int_equal(ws_hub_handshake(h, &bad, accept, &code, &message), 400);
    bad = ok;
    bad.key = "dGhlIHNhbXBsZSBub25jZXg="; /* 17 bytes */
    assert_int_equal(ws_hub_handshake(h, &bad, accept, &code, &message), 400);
    bad = ok;
    bad.key = NULL;
    assert_int_equal(ws_hub_handshake(h, &bad, accept, &code, &message), 400);
    bad = ok;
    bad.has_body = true;
    assert_int_equal(ws_hub_handshake(h, &bad, accept, &code, &message), 400);
    assert_int_equal(ws_hub_handshake(NULL, &ok, accept, &code, &message), 503);
    ws_hub_stop(h);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_publish_reaches_the_right_client),
        cmocka_unit_test(test_publish_refusals),
        cmocka_unit_test(test_client_close_releases),
        cmocka_unit_test(test_extra_bytes_come_first),
        cmocka_unit_test(test_max_clients_and_shutdown),
        cmocka_unit_test(test_idle_drop),
        cmocka_unit_test(test_ping_flood_dropped),
        cmocka_unit_test(test_handshake_check),
    };

    signal(SIGPIPE, SIG_IGN);
    if (getenv("LATCH_LOG_LEVEL") != NULL)
        log_min_level = (enum log_level)log_level_parse(getenv("LATCH_LOG_LEVEL"));
    return cmocka_run_group_tests_name("ws", tests, NULL, NULL);
}
