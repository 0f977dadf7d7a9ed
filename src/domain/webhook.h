/*
 * webhook.h - Nango-compatible auth webhooks, delivered from a durable outbox.
 *
 * webhook_auth_event builds the body (keys sorted, compact, no secrets) and writes it to the
 * store's outbox in the caller's thread: once it returns LATCH_OK the event survives a crash or
 * restart. A delivery thread claims due rows (a lease, so several nodes never send the same row at
 * once), signs each body (X-Nango-Hmac-Sha256 = hex HMAC-SHA256(env signing key, body); legacy
 * X-Nango-Signature = hex SHA-256(key + body)), POSTs it through outbound, and on 5xx, 429,
 * timeouts and network errors retries with exponential back-off up to the configured attempts.
 * Other statuses (3xx, 4xx) are final. Delivery is at-least-once.
 * Ownership: struct webhook (webhook_start) borrows the store, vault, catalogue and outbound it is
 * given; they must outlive it (webhook_stop first). The node id is copied.
 * Threads: webhook_auth_event / webhook_auth_failure / webhook_kick from any thread;
 * start/stop from the owner (app.c).
 */
#ifndef LATCH_WEBHOOK_H
#define LATCH_WEBHOOK_H

#include <stdbool.h>

#include "util/rc.h"
#include "store/store.h"

struct catalog;
struct outbound;
struct vault;
struct webhook;

/* What the outbox and its delivery thread use (borrowed; see Ownership above). */
struct webhook_opts {
    struct store *store;           /* the outbox, environments (signing keys) */
    struct vault *vault;           /* opens the signing keys */
    const struct catalog *catalog; /* authMode of the provider in bodies */
    struct outbound *outbound;     /* delivers */
    const char *node_id;           /* lease owner of claimed rows (copied; at most 32 chars) */
    int timeout_ms;                /* per delivery */
    int max_attempts;              /* deliveries of one row before giving up */
    int backoff_ms;                /* first retry delay; doubles */
    bool no_legacy_signature;      /* omit X-Nango-Signature (SHA-256(key||body)) */
};

latch_rc webhook_start(const struct webhook_opts *o, struct webhook **out);
/*
 * Shutdown, in two steps. webhook_halt stops the delivery thread; the object stays valid for
 * webhook_auth_event calls still due (worker jobs), whose rows wait in the outbox for the next
 * start. webhook_stop halts if needed and frees. Both NULL-safe.
 */
void webhook_halt(struct webhook *w);
void webhook_stop(struct webhook *w);
/* Wakes the delivery thread (new rows). NULL-safe. */
void webhook_kick(struct webhook *w);

/*
 * operation: "creation", "override" or "refresh". conn gives ids, tags, end user and the
 * per-connection override URL; url_override (e.g. the connect session's) wins over both.
 * err_type/err_desc only when !success. No URL configured -> LATCH_OK, nothing queued.
 */
latch_rc webhook_auth_event(struct webhook *w, const struct store_env *env,
                            const struct store_connection *conn, const char *operation,
                            bool success, const char *err_type, const char *err_desc,
                            const char *url_override);

/* Same for a link attempt that failed before any connection existed. */
latch_rc webhook_auth_failure(struct webhook *w, const struct store_env *env,
                              const char *provider_config_key, const char *provider,
                              const char *connection_id, const char *end_user_json,
                              const char *tags_json, const char *operation, const char *err_type,
                              const char *err_desc, const char *url_override);

#endif
