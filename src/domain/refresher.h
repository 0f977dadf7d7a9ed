/*
 * refresher.h - always-fresh tokens.
 *
 * refresher_get_fresh returns a connection with a token that has comfortable life left,
 * refreshing it first when needed. Exactly one token request per connection per refresh:
 * in-process single-flight (all concurrent callers wait on one flight) plus the store's refresh
 * lease with owner and version (one refresher across processes/nodes; a stale writer can never
 * overwrite a newer token). Failures are classified: terminal ones mark the connection as
 * needing re-authorisation (one `refresh` failure webhook, no more token requests until the
 * user re-links); transient ones back off with jitter (REFRESH_BACKOFF meanwhile;
 * a still-valid token keeps being served). A background thread renews tokens of connections in
 * use shortly before they expire, so callers rarely wait.
 *
 * Ownership: struct refresher (refresher_start) borrows what struct refresher_opts names; all of it
 * must outlive the refresher (refresher_stop first). The node id is copied.
 * Threads: refresher_get_fresh from any thread. The done callback runs either synchronously
 * (return value true: result in *now) or later on a worker or the curl thread (return false).
 */
#ifndef LATCH_REFRESHER_H
#define LATCH_REFRESHER_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "util/rc.h"
#include "store/store.h"

struct catalog;
struct oauth_cc;
struct refresher;
struct vault;
struct webhook;
struct worker;

/* What the refresher uses (borrowed; see Ownership above). */
struct refresher_opts {
    struct store *store;
    struct vault *vault;           /* opens and seals credentials */
    const struct catalog *catalog; /* the provider's token_expiration_buffer */
    struct worker *worker;         /* lease attempts, off the caller's thread */
    struct oauth_cc *oauth_cc;     /* the token requests */
    struct webhook *webhook;       /* the `refresh` failure webhook */
    const char *node_id;           /* prefix of lease owners (copied; at most 32 chars) */
    int margin_s;                  /* refresh this long before expiry (config default) */
    bool margin_override;          /* margin_s was set explicitly: it wins over providers */
    int backoff_ms;                /* first back-off after a transient failure; doubles */
    int lease_ms;                  /* the store's refresh lease */
    bool background_refresh;       /* renew tokens of connections in use before they expire */
    /* the hot cache of reads (domain/credcache.h); 0 entries or bytes: no cache */
    size_t cache_entries;
    size_t cache_bytes;
    int cache_max_age_s; /* 0: no age bound */
    /*
     * Check every cached hit against the row's stamp (store_connection_stamp): on for a database
     * other processes write (PostgreSQL), where this node cannot see their writes.
     */
    bool cache_revalidate;
};

/* How a refresher_get_fresh call ended. The REST layer turns these into HTTP answers. */
enum refresh_outcome {
    REFRESH_OK = 0,            /* conn and creds hold a token with life left */
    REFRESH_NOT_FOUND,         /* no such connection (or it was deleted meanwhile) */
    REFRESH_STORE_UNAVAILABLE, /* the store failed: try again */
    REFRESH_CREDS_UNREADABLE,  /* the stored credentials do not decrypt with the configured keys */
    REFRESH_NEEDS_REAUTH,      /* terminal failure: the user must re-link (conn set if known) */
    REFRESH_BACKOFF,           /* a recent attempt failed transiently; no new one yet (conn set) */
    REFRESH_IN_PROGRESS,       /* another process's refresh of it takes too long: try again */
    REFRESH_SHUTTING_DOWN,     /* latch stops while another process refreshes it: try again */
};

struct refresh_result {
    enum refresh_outcome outcome;
    char message[320]; /* outcome != REFRESH_OK: what happened, for people ("" = nothing to add) */
    struct store_connection conn; /* the row (owned; cleared by refresh_result_clear) */
    json_t *creds;                /* opened credentials (owned) */
    char op_id[27]; /* the refresh operation (operations log) when a token request was made */
    /*
     * refresher_get_fresh_ex only: the hot cache's prepared answer of the variant asked for
     * (owned, NUL-terminated, wiped by refresh_result_clear; creds is then NULL), and, on a hit,
     * the cache serial of the row and credentials in conn (0: a miss or no cache; see
     * refresher_keep_body).
     */
    char *body;
    size_t body_len;
    uint64_t cache_serial;
};
void refresh_result_clear(struct refresh_result *r);

typedef void (*refresher_done_fn)(struct refresh_result *r, void *ud);

latch_rc refresher_start(const struct refresher_opts *o, struct refresher **out);
/*
 * First step of shutdown (any thread, before the HTTP server drains): callers waiting for
 * another process's refresh lease keep waiting for at most within_ms more, then get
 * REFRESH_SHUTTING_DOWN instead of waiting for the lease to expire. Flights whose own token
 * request is in progress finish normally.
 */
void refresher_drain(struct refresher *r, int64_t within_ms);
/*
 * Last steps of shutdown. refresher_halt stops the background thread (flights waiting for a
 * foreign lease are no longer polled); the object stays valid for callbacks still due (worker
 * jobs finishing token exchanges). refresher_stop halts if needed and frees. Both NULL-safe.
 */
void refresher_halt(struct refresher *r);
void refresher_stop(struct refresher *r);

/*
 * Returns true if *now holds the answer (done is not called); false if done will be called
 * later exactly once (it owns *r until it returns).
 */
/* force: 0 (false) = only when needed, 1 (true) = forced, REFRESH_FORCE_401 = forced after the
 * upstream answered 401 (the operations log records why). */
#define REFRESH_FORCE_401 2
bool refresher_get_fresh(struct refresher *rf, int64_t env_id, const char *provider_config_key,
                         const char *connection_id, int force, refresher_done_fn done, void *ud,
                         struct refresh_result *now);

/*
 * refresher_get_fresh for a token read whose answer the hot cache may keep: body_variant
 * (0..CREDCACHE_BODY_VARIANTS-1, the query shape) selects the prepared answer a hit may return
 * in now->body instead of conn + creds. Never with force.
 */
bool refresher_get_fresh_ex(struct refresher *rf, int64_t env_id, const char *provider_config_key,
                            const char *connection_id, int force, int body_variant,
                            refresher_done_fn done, void *ud, struct refresh_result *now);
/*
 * Keeps text (the serialised answer built from r->conn and r->creds of a REFRESH_OK result with
 * r->cache_serial != 0) as the prepared answer of body_variant; copied, the caller wipes its own.
 */
void refresher_keep_body(struct refresher *rf, const struct refresh_result *r, int body_variant,
                         const char *text, size_t len);

/* Counters (tests/metrics). */
uint64_t refresher_token_requests(const struct refresher *rf);
/* The hot cache's counters and sizes (all zero when it is off). */
struct credcache_stats;
void refresher_cache_stats(const struct refresher *rf, struct credcache_stats *out);

#endif
