/*
 * ws.h - the WebSocket hub that @nangohq/frontend's auth() listens on (Nango's wire protocol).
 *
 * A browser opens ws(s)://<latch>/<path>; the HTTP server's upgrade hook asks
 * ws_hub_handshake() whether to answer 101, then hands the upgraded socket to ws_hub_adopt().
 * The hub sends {"message_type":"connection_ack","ws_client_id":"<id>"} and keeps the socket
 * until the client closes it, an idle/absolute deadline passes, or the hub stops. Later some
 * other part of latch (the OAuth callback) calls ws_hub_publish() with that ws_client_id and a
 * JSON message (Nango's "success" / "error" shapes, built by the caller); the hub sends it and
 * then closes the socket as Nango does. Framing is libwslay's; the HTTP upgrade is
 * libmicrohttpd's (behind http_server.h); this module includes neither microhttpd.h nor
 * http_server.h, so a test can hand it one end of a socketpair.
 *
 * Delivery is node-local: a ws_client_id is only known to the node that holds the socket.
 * An id is a random UUID v4 (122 random bits from OpenSSL's RAND_bytes), as Nango's.
 *
 * Bounds: max_clients sockets at once (handshakes beyond it get 503), client messages and
 * frames of at most WS_MAX_CLIENT_MSG bytes (larger: close 1009), no frame (a pong counts) for
 * idle_s seconds: closed (the hub pings every idle_s/3, browsers answer by themselves), and
 * every socket closed after max_age_s whatever happens. Per-address limits are the HTTP
 * server's: an upgraded socket still counts as one of its connections.
 *
 * Ownership: ws_hub_start copies what it needs from the options; the hub owns one thread (one
 * epoll set over the sockets and an eventfd for wake-ups) and every adopted socket until it
 * calls that socket's release function. ws_hub_shutdown closes them all; ws_hub_stop joins the
 * thread and frees.
 * Threads: ws_hub_publish, ws_hub_count, ws_hub_handshake and ws_hub_adopt from any thread;
 * start/shutdown/stop from the owner (app.c).
 */
#ifndef LATCH_WS_H
#define LATCH_WS_H

#include <stdbool.h>
#include <stddef.h>

#include "util/rc.h"

/* Bytes of one message or frame a client may send (they need to send nothing but pongs). */
#define WS_MAX_CLIENT_MSG 1024
/* Sec-WebSocket-Accept: base64 of a SHA-1, plus the NUL. */
#define WS_ACCEPT_SIZE 29
/* A ws_client_id: a UUID in text form, plus the NUL. */
#define WS_CLIENT_ID_SIZE 37

struct ws_hub;

struct ws_hub_opts {
    unsigned max_clients; /* sockets held at once; more get 503 at the handshake. 0 = 1000 */
    unsigned idle_s;      /* closed after this long without a frame from the client. 0 = 60 */
    unsigned max_age_s;   /* closed this long after the handshake in any case. 0 = 900 */
};

latch_rc ws_hub_start(const struct ws_hub_opts *o, struct ws_hub **out, struct latch_err *err);
/*
 * Closes every socket (close frame 1001) and releases it; sockets adopted later are released
 * at once. Call before stopping the HTTP server that feeds the hub. NULL is a no-op.
 */
void ws_hub_shutdown(struct ws_hub *h);
/* Shuts down if not done yet, joins the thread, frees. NULL is a no-op. */
void ws_hub_stop(struct ws_hub *h);

/*
 * Sends json (a complete JSON text, copied) to the client with this id, then closes the socket.
 * LATCH_E_NOT_FOUND if no such client is connected to this node (or it already got a message);
 * LATCH_E_INVAL for a malformed id or message.
 */
latch_rc ws_hub_publish(struct ws_hub *h, const char *ws_client_id, const char *json);

/* Sockets held now (for /metrics and tests). */
size_t ws_hub_count(const struct ws_hub *h);

/* What the opening handshake carried (header values; NULL when absent). */
struct ws_handshake {
    const char *method;
    const char *upgrade;    /* Upgrade */
    const char *connection; /* Connection */
    const char *version;    /* Sec-WebSocket-Version */
    const char *key;        /* Sec-WebSocket-Key */
    bool has_body;          /* Content-Length or Transfer-Encoding present */
};

/*
 * Checks an opening handshake (RFC 6455 4.2.1) and the hub's room for one more client.
 * Returns 0 and writes the Sec-WebSocket-Accept value into accept, or the HTTP status to answer
 * (400 malformed, 426 wrong version: add "Sec-WebSocket-Version: 13", 503 full or stopping)
 * with *code and *message for the JSON error (static strings).
 */
unsigned ws_hub_handshake(struct ws_hub *h, const struct ws_handshake *hs,
                          char accept[WS_ACCEPT_SIZE], const char **code, const char **message);

/*
 * Takes over a socket whose 101 was sent; never blocks. extra: bytes already read from it
 * (copied). The hub never closes fd: it calls release(release_ud) exactly once, from its own
 * thread, when it is done with the socket (also when it refuses it: full or stopping).
 */
void ws_hub_adopt(struct ws_hub *h, int fd, const char *extra, size_t extra_len,
                  void (*release)(void *), void *release_ud);

#endif
