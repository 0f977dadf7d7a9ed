/*
 * ws.h - the WebSocket hub that @nangohq/frontend's auth() listens on (Nango's wire protocol).
 *
 * A browser opens ws(s)://<latch>/<path>; the hub answers the handshake, sends
 * {"message_type":"connection_ack","ws_client_id":"<id>"} and keeps the socket until the
 * client closes it, an idle/absolute deadline passes, or the hub stops. Later some other part of
 * latch (the OAuth callback) calls ws_hub_publish() with that ws_client_id and a JSON message
 * (Nango's "success" / "error" shapes, built by the caller); the hub sends it and then closes the
 * socket as Nango does. Framing is libwslay's; the HTTP upgrade is libmicrohttpd's.
 *
 * Delivery is node-local: a ws_client_id is only known to the node that holds the socket.
 *
 * Ownership: ws_hub_start copies what it needs from the options; the hub owns one thread and
 * every upgraded socket; ws_hub_stop closes them all, joins the thread and frees.
 * Threads: ws_hub_publish and ws_hub_count from any thread; start/stop from the owner (app.c).
 */
#ifndef LATCH_WS_H
#define LATCH_WS_H

#include <stdbool.h>
#include <stddef.h>

#include "util/rc.h"

struct ws_hub;

struct ws_hub_opts {
    unsigned max_clients; /* sockets held at once; more get a close frame at once. 0 = 1000 */
    unsigned idle_s;      /* closed after this long without a frame from the client. 0 = 600 */
};

latch_rc ws_hub_start(const struct ws_hub_opts *o, struct ws_hub **out, struct latch_err *err);
/* NULL is a no-op. */
void ws_hub_stop(struct ws_hub *h);

/*
 * Sends json (a complete JSON text, copied) to the client with this id, then closes the socket.
 * LATCH_E_NOT_FOUND if no such client is connected to this node; LATCH_E_INVAL for a malformed id.
 */
latch_rc ws_hub_publish(struct ws_hub *h, const char *ws_client_id, const char *json);

/* Sockets held now (for /metrics and tests). */
size_t ws_hub_count(const struct ws_hub *h);

#endif
