/*
 * store_backend.h - private seam between store.c and the storage backends (store_sqlite.c,
 * store_pg.c) and store_export.c. Nothing outside the store modules includes this file.
 *
 * A backend fills one static const struct store_ops. Every operation of store.h has one function
 * pointer here with the same arguments, except that `struct store *` becomes the backend's own
 * `void *impl` (what ops->open returned). store.c does the URL parsing, the forwarding, and the
 * helpers shared by all backends (*_clear, *_list_free, latch_now_ms); backends never free the
 * caller's out-structs except through those helpers.
 *
 * Ownership: ops->open returns an owned impl; ops->close releases it (close(NULL) is a no-op).
 * Threads: every operation except open/close must be callable from any thread concurrently
 * (the backend keeps per-thread or pooled handles). open/close are called by one thread while
 * no other thread uses the store.
 */
#ifndef LATCH_STORE_BACKEND_H
#define LATCH_STORE_BACKEND_H

#include <jansson.h>

#include "store/store.h"

/*
 * ---- raw rows, for export/import (store_export.c) ----
 * store_tables[] describes every exported table once, for all backends: same table and column
 * names everywhere. Column 0 is the key rows are ordered by (id, or key for meta). A raw row is
 * a JSON object {column: value}: INT -> integer, TEXT -> string, BOOL -> true/false, HASH
 * (32-byte blob) -> 64 lower-case hex digits; NULL -> null.
 */
struct buf;

enum store_col_type { STORE_COL_INT, STORE_COL_TEXT, STORE_COL_BOOL, STORE_COL_HASH };
struct store_col {
    const char *name;
    enum store_col_type type;
};
struct store_table {
    const char *name;
    const struct store_col *cols;
    size_t ncols;
    bool has_id; /* column 0 is an integer identity "id" (PG resets its sequence on import) */
};
/* In dependency order (parents first). Defined in store_export.c. */
extern const struct store_table store_tables[];
extern const size_t store_ntables;

/* One decoded value of a raw row; s / h point into the JSON row (borrowed). */
struct store_val {
    bool null;
    int64_t i; /* INT, BOOL (0/1) */
    const char *s;
    unsigned char h[32];
};
/* Decodes column col of row (missing = null); LATCH_E_INVAL on a type mismatch. */
latch_rc store_val_get(const struct store_col *col, json_t *row, struct store_val *out);
/* Sets column col of row from v (for scans); LATCH_E_INVAL if text is not UTF-8. */
latch_rc store_val_put(const struct store_col *col, json_t *row, const struct store_val *v);
/*
 * Appends "name, name, ..." of t's columns. fetched_expr: for a SELECT (export), the backend's
 * expression of the effective connections.last_fetched_at (touches live in connection_activity;
 * an import writes the value back into the column); NULL for an INSERT.
 */
latch_rc store_table_cols(struct buf *b, const struct store_table *t, const char *fetched_expr);

/* Scan callback: row is borrowed for the call. A non-OK return stops the scan with that code. */
typedef latch_rc (*store_raw_scan_fn)(const struct store_table *t, json_t *row, void *ud);
/*
 * Import source: sets *t and *row (owned by the source, valid until the next call) for the next
 * row, or *row = NULL at the end.
 */
typedef latch_rc (*store_raw_next_fn)(const struct store_table **t, json_t **row, void *ud);

struct store_ops {
    const char *name; /* "sqlite", "postgres" */

    /* target: a file path (sqlite) or a conninfo/URL (postgres). */
    latch_rc (*open)(const char *target, void **impl_out, struct latch_err *err);
    void (*close)(void *impl);
    latch_rc (*migrate)(void *impl, struct latch_err *err);
    int (*schema_version)(void *impl);

    latch_rc (*meta_get)(void *impl, const char *key, char **value_out);
    latch_rc (*meta_set)(void *impl, const char *key, const char *value);
    latch_rc (*meta_add)(void *impl, const char *key, const char *value);

    latch_rc (*env_create)(void *impl, const char *name, struct store_env *out);
    latch_rc (*env_get)(void *impl, int64_t id, struct store_env *out);
    latch_rc (*env_get_by_name)(void *impl, const char *name, struct store_env *out);
    latch_rc (*env_list)(void *impl, struct store_env **out, size_t *n);
    latch_rc (*env_update_webhooks)(void *impl, const struct store_env *e);

    latch_rc (*apikey_add)(void *impl, int64_t env_id, const unsigned char hash[32],
                           const char *label);
    latch_rc (*apikey_lookup)(void *impl, const unsigned char hash[32], int64_t *env_id);
    latch_rc (*apikey_revoke_all)(void *impl, int64_t env_id);
    latch_rc (*apikey_count)(void *impl, int64_t env_id, int64_t *n);

    latch_rc (*integration_create)(void *impl, struct store_integration *i);
    latch_rc (*integration_get)(void *impl, int64_t env_id, const char *unique_key,
                                struct store_integration *out);
    latch_rc (*integration_list)(void *impl, int64_t env_id, struct store_integration **out,
                                 size_t *n);
    latch_rc (*integration_update)(void *impl, struct store_integration *i);
    latch_rc (*integration_delete)(void *impl, int64_t env_id, const char *unique_key);

    latch_rc (*connection_upsert)(void *impl, struct store_connection *c, bool *created);
    latch_rc (*connection_get)(void *impl, int64_t env_id, const char *provider_config_key,
                               const char *connection_id, struct store_connection *out);
    latch_rc (*connection_get_by_id)(void *impl, int64_t env_id, int64_t id,
                                     struct store_connection *out);
    latch_rc (*connection_list)(void *impl, int64_t env_id, const struct store_conn_filter *f,
                                struct store_connection **out, size_t *n);
    latch_rc (*connection_delete)(void *impl, int64_t env_id, const char *provider_config_key,
                                  const char *connection_id);
    latch_rc (*connection_set_metadata)(void *impl, int64_t id, const char *metadata_json);
    latch_rc (*connection_patch)(void *impl, int64_t id, const char *tags_json,
                                 const char *end_user_json, const char *webhook_url_override);
    latch_rc (*connection_touch)(void *impl, int64_t id, int64_t last_fetched_at);
    latch_rc (*connection_touch_many)(void *impl, const int64_t *ids, size_t n,
                                      int64_t last_fetched_at);
    latch_rc (*connection_lease)(void *impl, int64_t id, const char *owner, int64_t ttl_ms,
                                 int64_t *version_out);
    latch_rc (*connection_lease_release)(void *impl, int64_t id, const char *owner);
    latch_rc (*connection_refresh_done)(void *impl, int64_t id, const char *owner,
                                        int64_t expected_version, const char *credentials_sealed,
                                        int64_t expires_at, int64_t *new_version);
    latch_rc (*connection_refresh_failed)(void *impl, int64_t id, const char *owner,
                                          const char *auth_error_json, int64_t next_refresh_at,
                                          bool needs_reauth);
    latch_rc (*connection_due_for_refresh)(void *impl, int64_t before, int64_t used_since,
                                           size_t max, int64_t **ids_out, int64_t **env_ids_out,
                                           size_t *n);

    latch_rc (*session_create)(void *impl, struct store_session *x);
    latch_rc (*session_get_by_hash)(void *impl, const unsigned char hash[32],
                                    struct store_session *out);
    latch_rc (*session_bump_attempts)(void *impl, int64_t id, int *attempts);
    latch_rc (*session_delete)(void *impl, int64_t id);
    latch_rc (*session_purge_expired)(void *impl, int64_t now);

    latch_rc (*webhook_enqueue)(void *impl, int64_t env_id, const char *url, const char *body,
                                int64_t *id_out);
    latch_rc (*webhook_claim)(void *impl, const char *owner, int64_t now, int64_t lease_ms,
                              size_t max, struct store_webhook **out, size_t *n);
    latch_rc (*webhook_done)(void *impl, int64_t id);
    latch_rc (*webhook_retry)(void *impl, int64_t id, int64_t next_attempt_at,
                              const char *last_error, bool give_up);
    latch_rc (*webhook_pending_count)(void *impl, int64_t *n);

    latch_rc (*reseal_all)(void *impl, store_reseal_fn fn, void *ud, size_t *rewritten);
    latch_rc (*integrity_check)(void *impl, struct latch_err *err);

    /* Every row of t in key order (batched; no long transaction). */
    latch_rc (*raw_scan)(void *impl, const struct store_table *t, store_raw_scan_fn fn, void *ud);
    /*
     * Inserts rows verbatim (ids kept) in one transaction into a database whose meta and
     * environments tables are empty (LATCH_E_CONFLICT otherwise); all or nothing.
     */
    latch_rc (*raw_import)(void *impl, store_raw_next_fn next, void *ud, struct latch_err *err);
};

struct store {
    const struct store_ops *ops;
    void *impl;
};

/* Backends. libpq is a required dependency, so the PostgreSQL backend is always built. */
extern const struct store_ops store_sqlite_ops;
extern const struct store_ops store_pg_ops;

#endif
