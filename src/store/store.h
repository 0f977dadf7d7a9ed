/*
 * store.h - persistence behind one interface; backends: SQLite (store_sqlite.c) and PostgreSQL
 * (store_pg.c).
 *
 * Handlers never see SQL. Secret columns (*_sealed) hold vault envelopes (see vault.h); the store
 * never encrypts or decrypts, it just keeps the text. JSON columns (*_json) hold compact JSON text
 * that the caller produced; the store does not parse it except for tag filters.
 * Times are milliseconds since the Unix epoch (int64); 0 means "none".
 *
 * Ownership: out-structs are filled with owned strings; release with the matching *_clear().
 * Lists return owned arrays; release with the matching *_list_free().
 * Threads: a struct store is thread-safe; each backend keeps per-thread handles internally
 * (SQLite: one connection per calling thread; PG: a bounded pool). Writes are transactions
 * (SQLite: BEGIN IMMEDIATE).
 * Errors: LATCH_E_NOT_FOUND, LATCH_E_CONFLICT (unique key / version), LATCH_E_DB,
 * LATCH_E_UNAVAILABLE.
 */
#ifndef LATCH_STORE_H
#define LATCH_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/rc.h"

struct store;

/* "sqlite:<path>" / a plain path, or "postgres://..." / a libpq conninfo ("host=... dbname=...") */
latch_rc store_open(const char *url, struct store **out, struct latch_err *err);
void store_close(struct store *s);
/* Applies numbered migrations (idempotent). Refuses a schema newer than this binary knows. */
latch_rc store_migrate(struct store *s, struct latch_err *err);
int store_schema_version(struct store *s);
/* Backend name: "sqlite" or "postgres". */
const char *store_backend(const struct store *s);

/* ---- meta: small key/value settings (key fingerprint, sealed index key, ...) ---- */
latch_rc store_meta_get(struct store *s, const char *key, char **value_out);
latch_rc store_meta_set(struct store *s, const char *key, const char *value);
/* Inserts only if the key is absent (first writer wins when nodes start together); LATCH_OK
 * either way: read the value back to learn which one won. */
latch_rc store_meta_add(struct store *s, const char *key, const char *value);

/* ---- environments and API keys ---- */
struct store_env {
    int64_t id;
    char *name;
    char *webhook_url;           /* NULL = none */
    char *webhook_url_secondary; /* NULL = none */
    char *webhook_key_sealed;    /* webhook signing key (UUID v4), sealed; AAD
                                    "environments:<id>:webhook_key" */
    bool on_auth_creation;       /* send auth webhooks for creation */
    bool on_auth_refresh_error;  /* send auth webhooks for refresh failures */
    int64_t created_at;
};
void store_env_clear(struct store_env *e);
latch_rc store_env_create(struct store *s, const char *name, struct store_env *out);
latch_rc store_env_get(struct store *s, int64_t id, struct store_env *out);
latch_rc store_env_get_by_name(struct store *s, const char *name, struct store_env *out);
latch_rc store_env_list(struct store *s, struct store_env **out, size_t *n);
void store_env_list_free(struct store_env *v, size_t n);
/* Updates webhook_url, webhook_url_secondary, webhook_key_sealed and the two flags from e. */
latch_rc store_env_update_webhooks(struct store *s, const struct store_env *e);

/* API secret keys are stored only as a keyed hash (32 bytes; see vault_index_hash). */
latch_rc store_apikey_add(struct store *s, int64_t env_id, const unsigned char hash[32],
                          const char *label);
/* Finds the environment of a key hash; LATCH_E_NOT_FOUND if none (or revoked). */
latch_rc store_apikey_lookup(struct store *s, const unsigned char hash[32], int64_t *env_id);
/* The same, and the key's label (owned, NULL when it has none; free). */
latch_rc store_apikey_find(struct store *s, const unsigned char hash[32], int64_t *env_id,
                           char **label);
latch_rc store_apikey_revoke_all(struct store *s, int64_t env_id);
latch_rc store_apikey_count(struct store *s, int64_t env_id, int64_t *n);

/* ---- integrations (provider configs) ---- */
struct store_integration {
    int64_t id;
    int64_t env_id;
    char *unique_key;
    char *provider;
    char *display_name; /* NULL = none */
    char *oauth_scopes; /* comma-separated, NULL = none */
    bool forward_webhooks;
    char *custom_json; /* NULL = none */
    int64_t created_at;
    int64_t updated_at;
    /* the OAuth app's credentials {type, client_id, client_secret, scopes, webhook_secret},
       sealed; AAD bound to env + unique_key (domain/creds.h); NULL = none */
    char *credentials_sealed;
};
void store_integration_clear(struct store_integration *i);
/* LATCH_E_CONFLICT if unique_key exists in the environment. Sets i->id, created_at, updated_at. */
latch_rc store_integration_create(struct store *s, struct store_integration *i);
latch_rc store_integration_get(struct store *s, int64_t env_id, const char *unique_key,
                               struct store_integration *out);
latch_rc store_integration_list(struct store *s, int64_t env_id, struct store_integration **out,
                                size_t *n);
void store_integration_list_free(struct store_integration *v, size_t n);
struct store_connection;
/*
 * Re-seals one connection's credentials for a rename: before is the row as sealed (owner fields,
 * credentials_sealed), after the same row under its new key; *new_sealed is owned.
 */
typedef latch_rc (*store_rebind_fn)(const struct store_connection *before,
                                    const struct store_connection *after, char **new_sealed,
                                    void *ud);
/*
 * Updates every mutable field of i (found by i->id within i->env_id), incl. unique_key. A new
 * unique_key cascades to its connections' provider_config_key, which their credentials are bound
 * to: in the same transaction, rebind re-seals each of them (compare-and-swap; their refresh
 * leases are released so that a refresh in flight re-seals its token for the new key, see
 * refresher.c). A row rebind cannot open (LATCH_E_CRYPTO: already unreadable) is left as it is;
 * any other failure rolls the rename back. rebind may be NULL only when no connection holds
 * credentials (store tests).
 */
latch_rc store_integration_update(struct store *s, struct store_integration *i,
                                  store_rebind_fn rebind, void *ud);
/* Deletes the integration and its connections. */
latch_rc store_integration_delete(struct store *s, int64_t env_id, const char *unique_key);

/* ---- connections ---- */
struct store_connection {
    int64_t id;
    int64_t env_id;
    char *uid; /* random UUID fixed at creation; binds the ciphertext (AAD) */
    char *connection_id;
    char *provider_config_key; /* integration unique_key */
    char *provider;
    char *credentials_sealed;     /* AAD: the owner binding of domain/creds.h */
    char *connection_config_json; /* "{}" default */
    char *metadata_json;          /* NULL = null */
    char *tags_json;              /* "{}" default */
    char *end_user_json;          /* NULL = none */
    char *webhook_url_override;   /* NULL = none */
    int64_t expires_at;           /* token expiry; 0 = none */
    int64_t created_at;
    int64_t updated_at;
    int64_t last_fetched_at;
    int64_t last_refresh_success;
    int64_t last_refresh_failure;
    int64_t next_refresh_at; /* back-off: no refresh attempt before this */
    int refresh_attempts;
    bool needs_reauth;     /* terminal refresh failure */
    char *auth_error_json; /* NULL = no error; {"type":..,"description":..,"log_id":..} */
    int64_t version;       /* bumped on every credentials write */
};
void store_connection_clear(struct store_connection *c);
/* dst = an owned deep copy of src (dst's previous contents are not freed). */
void store_connection_copy(struct store_connection *dst, const struct store_connection *src);

/*
 * The connection write clock (process-wide, for the hot cache of reads: domain/credcache.h).
 * Every committed write transaction that changed a connection row ticks it: the row layer
 * classifies each statement it runs (store.c, conn_write_scope) as changing no connection, one
 * connection (by row id) or possibly any (deletes, integration renames, statements not yet
 * classified), and ticks after the commit. So: read store_conn_clock() before reading a row;
 * later, store_conn_unchanged_since(row id, that clock) is false if any write that may have
 * changed the row committed after it (false positives possible: row ids share 4096 slots).
 * Touches (last_fetched_at) and refresh leases do not tick. Other processes' writes are not
 * seen: see store_connection_stamp.
 */
uint64_t store_conn_clock(void);
bool store_conn_unchanged_since(int64_t id, uint64_t clock);

/*
 * The few small columns that change whenever a connection's token read would answer differently
 * (no credentials, no JSON columns): a cheap check that a cached row is still current on a
 * database other processes write too (PostgreSQL). updated_at moves on every metadata and patch
 * write (strictly: never twice to the same value), version on every credentials write,
 * refresh_attempts/last_refresh_failure on every failed refresh.
 */
struct store_conn_stamp {
    int64_t id, version, updated_at, expires_at, refresh_attempts, last_refresh_failure,
        next_refresh_at;
    bool needs_reauth;
    char provider[128]; /* truncated; compared as such */
};
latch_rc store_connection_stamp(struct store *s, int64_t env_id, const char *provider_config_key,
                                const char *connection_id, struct store_conn_stamp *out);
/* true when row (as read) matches stamp. */
bool store_conn_stamp_matches(const struct store_conn_stamp *st,
                              const struct store_connection *row);

/*
 * Insert or replace by (env_id, provider_config_key, connection_id). On replace, credentials,
 * connection_config, expires_at are replaced; metadata/tags/end_user/webhook_url_override are
 * replaced only when non-NULL in c; refresh state is reset; version bumped. *created tells which.
 * The caller must seal credentials with the final uid: when c->uid is NULL the store assigns
 * none; use store_connection_get first to learn an existing uid (see api code). On return c holds
 * the stored row.
 */
latch_rc store_connection_upsert(struct store *s, struct store_connection *c, bool *created);
latch_rc store_connection_get(struct store *s, int64_t env_id, const char *provider_config_key,
                              const char *connection_id, struct store_connection *out);
latch_rc store_connection_get_by_id(struct store *s, int64_t env_id, int64_t id,
                                    struct store_connection *out);

struct store_conn_filter {
    const char *connection_id; /* exact, or NULL */
    const char *search;        /* substring of connection_id or end user id/email/name */
    const char *end_user_id;
    const char *end_user_org_id;
    const char *const *integration_keys; /* NULL or array of n_integration_keys */
    size_t n_integration_keys;
    const char *const *tag_keys; /* AND of exact tag matches (keys lower-case) */
    const char *const *tag_values;
    size_t n_tags;
    int64_t limit; /* 1..LATCH_MAX_LIST_LIMIT */
    int64_t offset;
};
/* Ordered created_at DESC, id DESC. Credentials are not loaded (credentials_sealed = NULL). */
latch_rc store_connection_list(struct store *s, int64_t env_id, const struct store_conn_filter *f,
                               struct store_connection **out, size_t *n);
void store_connection_list_free(struct store_connection *v, size_t n);
latch_rc store_connection_delete(struct store *s, int64_t env_id, const char *provider_config_key,
                                 const char *connection_id);
latch_rc store_connection_set_metadata(struct store *s, int64_t id, const char *metadata_json);
/* Any NULL argument leaves that field unchanged; "" for webhook_url_override clears it. */
latch_rc store_connection_patch(struct store *s, int64_t id, const char *tags_json,
                                const char *end_user_json, const char *webhook_url_override);
latch_rc store_connection_touch(struct store *s, int64_t id, int64_t last_fetched_at);
/*
 * Replaces credentials_sealed by new_sealed only if it still equals old_sealed (compare-and-swap;
 * version untouched): re-sealing the same credentials under a new AAD or key never overwrites a
 * token written meanwhile. LATCH_E_CONFLICT if the value changed, LATCH_E_NOT_FOUND if gone.
 */
latch_rc store_connection_reseal(struct store *s, int64_t id, const char *old_sealed,
                                 const char *new_sealed);
/*
 * The same for up to LATCH_STORE_TOUCH_BATCH rows in one transaction (one fsync); ids of rows
 * that are gone are skipped. last_fetched_at never moves back.
 */
latch_rc store_connection_touch_many(struct store *s, const int64_t *ids, size_t n,
                                     int64_t last_fetched_at);

/*
 * Refresh lease: at most one owner per connection at a time, across threads and nodes.
 * Acquire succeeds if the lease is free or expired; returns LATCH_E_CONFLICT if held by another
 * live owner. The lease is released by store_connection_refresh_done/failed or by expiry.
 */
latch_rc store_connection_lease(struct store *s, int64_t id, const char *owner, int64_t ttl_ms,
                                int64_t *version_out);
latch_rc store_connection_lease_release(struct store *s, int64_t id, const char *owner);
/*
 * Writes new credentials only if the row's version still equals expected_version and the lease
 * is held by owner (LATCH_E_CONFLICT otherwise: a stale writer never overwrites a newer token).
 * Clears errors and back-off, bumps version, releases the lease.
 */
latch_rc store_connection_refresh_done(struct store *s, int64_t id, const char *owner,
                                       int64_t expected_version, const char *credentials_sealed,
                                       int64_t expires_at, int64_t *new_version);
/* Records a failed refresh: error json, next_refresh_at, attempts+1, needs_reauth; releases. */
latch_rc store_connection_refresh_failed(struct store *s, int64_t id, const char *owner,
                                         const char *auth_error_json, int64_t next_refresh_at,
                                         bool needs_reauth);
/* Connections whose token expires before `before` and were fetched since `used_since`. */
latch_rc store_connection_due_for_refresh(struct store *s, int64_t before, int64_t used_since,
                                          size_t max, int64_t **ids_out, int64_t **env_ids_out,
                                          size_t *n);

/* ---- connect sessions ---- */
struct store_session {
    int64_t id;
    int64_t env_id;
    unsigned char token_hash[32];
    char *end_user_json;             /* NULL = none */
    char *organization_json;         /* NULL = none */
    char *allowed_integrations_json; /* NULL = all */
    char *config_defaults_json;      /* NULL = none */
    char *tags_json;                 /* NULL = none */
    char *webhook_url_override;      /* NULL = none */
    int64_t connection_row_id;       /* reconnect sessions: connections.id; 0 otherwise */
    int64_t expires_at;
    int attempts;
    int64_t created_at;
};
void store_session_clear(struct store_session *x);
latch_rc store_session_create(struct store *s, struct store_session *x);
/* NOT_FOUND if unknown; expired sessions are returned (caller checks expires_at). */
latch_rc store_session_get_by_hash(struct store *s, const unsigned char hash[32],
                                   struct store_session *out);
/* Atomically increments attempts and returns the new count. */
latch_rc store_session_bump_attempts(struct store *s, int64_t id, int *attempts);
latch_rc store_session_delete(struct store *s, int64_t id);
latch_rc store_session_purge_expired(struct store *s, int64_t now);

/* ---- OAuth2 authorization states (one per authorization in flight; api_oauth.c) ---- */
struct store_oauth_state {
    int64_t id;
    unsigned char state_hash[32]; /* keyed hash of the state (vault_index_hash) */
    int64_t env_id;
    unsigned char session_hash[32]; /* the connect session's token hash */
    char *integration;              /* unique_key */
    char *connection_id;
    char *ws_client_id;   /* NULL = none */
    char *payload_sealed; /* PKCE verifier, connection config, ...; AAD "oauth_states:<hash>" */
    int64_t expires_at;
    int64_t created_at;
};
void store_oauth_state_clear(struct store_oauth_state *x);
latch_rc store_oauth_state_create(struct store *s, struct store_oauth_state *x);
/*
 * Finds and deletes the state in one statement: of two callbacks with the same state only one
 * gets the row (LATCH_E_NOT_FOUND for the other). Expired rows are returned: the caller checks.
 */
latch_rc store_oauth_state_take(struct store *s, const unsigned char hash[32],
                                struct store_oauth_state *out);
latch_rc store_oauth_state_purge_expired(struct store *s, int64_t now);

/* ---- webhook outbox (durable; at-least-once) ---- */
struct store_webhook {
    int64_t id;
    int64_t env_id;
    char *url;
    char *body; /* exact bytes to POST (no secrets) */
    int attempts;
    int64_t next_attempt_at;
    int64_t created_at;
};
void store_webhook_clear(struct store_webhook *w);
latch_rc store_webhook_enqueue(struct store *s, int64_t env_id, const char *url, const char *body,
                               int64_t *id_out);
/*
 * Claims up to max due rows (next_attempt_at <= now and not claimed by a live owner) for
 * lease_ms; returns owned array.
 */
latch_rc store_webhook_claim(struct store *s, const char *owner, int64_t now, int64_t lease_ms,
                             size_t max, struct store_webhook **out, size_t *n);
void store_webhook_list_free(struct store_webhook *v, size_t n);
latch_rc store_webhook_done(struct store *s, int64_t id);
/* Reschedules (attempts+1) or, when give_up, marks it dead (kept for inspection). */
latch_rc store_webhook_retry(struct store *s, int64_t id, int64_t next_attempt_at,
                             const char *last_error, bool give_up);
latch_rc store_webhook_pending_count(struct store *s, int64_t *n);
/* created_at of the oldest pending row (0 = none): the queue's age, for /metrics. */
latch_rc store_webhook_oldest_pending(struct store *s, int64_t *created_at);

/* ---- operations log (append-only; see docs/internals/opslog.md) ---- */
/*
 * One operation: a link, reconnect, refresh, proxy call, webhook delivery attempt or management
 * change. Never holds bodies, header values, tokens or secrets (the caller's duty; the leak test
 * checks it). Ids are time-ordered text (opslog.h): ordering and time bounds go by id.
 */
struct store_op {
    char *id; /* unique, time-ordered (sorts as its start time) */
    int64_t env_id;
    int64_t at;          /* start, ms since the epoch */
    char *kind;          /* link, reconnect, refresh, proxy, webhook, management */
    bool success;        /* outcome */
    char *error;         /* error code; NULL = none */
    char *integration;   /* integration unique_key; NULL = none */
    char *provider;      /* NULL = none */
    char *connection_id; /* NULL = none */
    char *end_user_id;   /* NULL = none */
    int64_t duration_ms;
    char *detail_json; /* small JSON object of kind-specific fields; NULL = none */
};
void store_op_clear(struct store_op *o);
/* Inserts n rows in one transaction (all or nothing); LATCH_E_CONFLICT on a duplicate id. */
latch_rc store_ops_append(struct store *s, const struct store_op *v, size_t n);
latch_rc store_ops_get(struct store *s, int64_t env_id, const char *id, struct store_op *out);
struct store_op_filter {
    const char *connection_id; /* exact, or NULL */
    const char *integration;   /* exact, or NULL */
    const char *kind;          /* exact, or NULL */
    int outcome;               /* 0 any, 1 success, -1 failure */
    const char *id_min;        /* id >= id_min (a time bound), or NULL */
    const char *id_below;      /* id < id_below (a time bound or the cursor), or NULL */
    int64_t limit;             /* 1..LATCH_MAX_LIST_LIMIT */
};
/* Newest first (id DESC). */
latch_rc store_ops_list(struct store *s, int64_t env_id, const struct store_op_filter *f,
                        struct store_op **out, size_t *n);
void store_ops_list_free(struct store_op *v, size_t n);
/*
 * Retention: deletes at most batch of the oldest rows that are older than id_below (NULL = no
 * age bound) or beyond the newest max_rows (0 = no row bound), in one short transaction.
 * *deleted gets the count; call again while it equals batch.
 */
latch_rc store_ops_prune(struct store *s, const char *id_below, int64_t max_rows, int64_t batch,
                         int64_t *deleted);
latch_rc store_ops_count(struct store *s, int64_t *n);

/* ---- key rotation: every sealed column, one row at a time ---- */
struct store_sealed_ref {
    const char *table; /* "connections", "environments", "integrations", "meta" */
    const char *row;   /* uid / id / key as text, used in the AAD */
    const char *column;
    const char *sealed; /* current envelope */
    /* connections (integrations: env_id and provider_config_key = unique_key; else 0 / NULL):
       the owner the credentials are bound to */
    int64_t env_id;
    const char *provider_config_key;
    const char *connection_id;
};
/*
 * Calls reseal for every sealed value; if it returns LATCH_OK with *new_sealed set (owned), the
 * store writes it back only if the value is unchanged since read (compare-and-swap), so a
 * concurrent refresh is never overwritten. Counts rows rewritten.
 */
typedef latch_rc (*store_reseal_fn)(const struct store_sealed_ref *ref, char **new_sealed,
                                    void *ud);
latch_rc store_reseal_all(struct store *s, store_reseal_fn fn, void *ud, size_t *rewritten);

/* ---- API key management (the dashboard): keys are listed without their secret ---- */
struct store_apikey {
    int64_t id;
    int64_t env_id;
    char *label; /* NULL = none */
    int64_t created_at;
    int64_t revoked_at; /* 0 = live */
};
/* Every key of the environment, revoked ones included, by id. */
latch_rc store_apikey_list(struct store *s, int64_t env_id, struct store_apikey **out, size_t *n);
void store_apikey_list_free(struct store_apikey *v, size_t n);
/* LATCH_E_NOT_FOUND if no live key has that id in the environment. */
latch_rc store_apikey_revoke(struct store *s, int64_t env_id, int64_t id);
latch_rc store_apikey_set_label(struct store *s, int64_t env_id, int64_t id, const char *label);

/* ---- admin accounts and their sessions (the dashboard at /admin) ---- */
struct store_admin {
    int64_t id;
    char *email;         /* lower-case */
    char *password_hash; /* self-describing KDF string (crypto/pwhash.h) */
    int failed_attempts; /* consecutive wrong passwords */
    int64_t locked_until;
    int64_t last_login_at;
    int64_t created_at;
};
void store_admin_clear(struct store_admin *a);
/* LATCH_E_CONFLICT if the email exists. */
latch_rc store_admin_create(struct store *s, const char *email, const char *password_hash,
                            int64_t *id_out);
latch_rc store_admin_get_by_email(struct store *s, const char *email, struct store_admin *out);
latch_rc store_admin_list(struct store *s, struct store_admin **out, size_t *n);
void store_admin_list_free(struct store_admin *v, size_t n);
/* Deletes the account and its sessions; LATCH_E_NOT_FOUND if none. */
latch_rc store_admin_delete(struct store *s, const char *email);
/* A wrong password: failed_attempts + 1, returned in *attempts. */
latch_rc store_admin_login_failed(struct store *s, int64_t id, int *attempts);
latch_rc store_admin_lock(struct store *s, int64_t id, int64_t locked_until);
/* A right password: attempts and lock cleared, last_login_at = now. */
latch_rc store_admin_login_ok(struct store *s, int64_t id, int64_t now);

struct store_admin_session {
    int64_t id;
    int64_t admin_id;
    char *email; /* of the account */
    int64_t created_at;
    int64_t last_seen_at;
    int64_t expires_at;
};
void store_admin_session_clear(struct store_admin_session *x);
latch_rc store_admin_session_create(struct store *s, int64_t admin_id, const unsigned char hash[32],
                                    int64_t now, int64_t expires_at);
/* NOT_FOUND if unknown; expired sessions are returned (the caller checks). */
latch_rc store_admin_session_get(struct store *s, const unsigned char hash[32],
                                 struct store_admin_session *out);
latch_rc store_admin_session_touch(struct store *s, int64_t id, int64_t now);
latch_rc store_admin_session_delete(struct store *s, const unsigned char hash[32]);
/* Deletes sessions past expires_at (<= now) or idle since idle_before. */
latch_rc store_admin_session_purge(struct store *s, int64_t now, int64_t idle_before);

/* For crash/integrity tests and `latch doctor`. */
latch_rc store_integrity_check(struct store *s, struct latch_err *err);

#endif
