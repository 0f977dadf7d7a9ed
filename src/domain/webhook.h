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
 * Threads: webhook_auth_event / webhook_kick from any thread.
 */
#ifndef LATCH_WEBHOOK_H
#define LATCH_WEBHOOK_H

#include <stdbool.h>

#include "core/rc.h"
#include "store/store.h"

struct app;
struct webhook;

latch_rc webhook_start(struct app *a, struct webhook **out);
void webhook_stop(struct webhook *w);
/* Wakes the delivery thread (new rows). NULL-safe. */
void webhook_kick(struct webhook *w);

/*
 * operation: "creation", "override" or "refresh". conn gives ids, tags, end user and the
 * per-connection override URL; url_override (e.g. the connect session's) wins over both.
 * err_type/err_desc only when !success. No URL configured -> LATCH_OK, nothing queued.
 */
latch_rc webhook_auth_event(struct app *a, const struct store_env *env,
                            const struct store_connection *conn, const char *operation,
                            bool success, const char *err_type, const char *err_desc,
                            const char *url_override);

/* Same for a link attempt that failed before any connection existed. */
latch_rc webhook_auth_failure(struct app *a, const struct store_env *env,
                              const char *provider_config_key, const char *provider,
                              const char *connection_id, const char *end_user_json,
                              const char *tags_json, const char *operation, const char *err_type,
                              const char *err_desc, const char *url_override);

#endif
