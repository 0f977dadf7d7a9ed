/*
 * dialect.h - private seam between the row layer (store.c) and the SQL dialects (store_sqlite.c,
 * store_pg.c), plus the raw-row description used by store_export.c. Nothing outside src/store
 * includes this file. See docs/internals/store.md ("Row layer and dialects").
 *
 * The row layer holds every piece of logic that is the same for all databases: argument and JSON
 * checks, filter building, row mappers, list collection, upsert, lease/refresh guards, reseal.
 * A dialect provides only primitives: a connection pool, numbered statements (enum st_id, one
 * SQL text table per dialect) run with typed binds, a cursor with typed column getters,
 * transactions, the rows-changed count and the mapping of its errors to latch_rc; plus the few
 * operations whose mechanics truly differ (migrations, integrity check, bulk touch, raw
 * export/import scans).
 *
 * Ownership: dialect->open returns an owned handle (void *db); dialect->close releases it
 * (close(NULL) is a no-op). acquire lends a struct db_conn until release. A db_conn has at most
 * one open cursor: exec opens it, end (or the next exec, or release) closes it. Text and hash
 * binds are borrowed until end. Borrowed column text (col_text) is valid until the next
 * next/end/exec on that connection; col_str returns an owned copy (free).
 * Threads: every function except open/close may be called from any thread concurrently; a
 * db_conn is used by the one thread that acquired it. open/close are called by one thread while
 * no other thread uses the store.
 * Errors: every latch_rc comes from the dialect's own mapping (unique violation -> CONFLICT,
 * foreign key -> NOT_FOUND, check/data -> INVAL, lock/timeout -> BUSY, connection -> UNAVAILABLE,
 * else DB); bound values are never logged.
 */
#ifndef LATCH_STORE_DIALECT_H
#define LATCH_STORE_DIALECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "store/store.h"

/* ---- statements: one id per SQL text; each dialect has st_sql[ST__COUNT] (NULL = unused) ---- */

enum st_id {
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_USER_VERSION, /* sqlite only */
    ST_META_GET,
    ST_META_SET,
    ST_META_ADD,
    ST_ENV_INSERT,
    ST_ENV_GET,
    ST_ENV_GET_NAME,
    ST_ENV_LIST,
    ST_ENV_UPDATE,
    ST_KEY_ADD,
    ST_KEY_LOOKUP,
    ST_KEY_REVOKE,
    ST_KEY_COUNT,
    ST_INT_INSERT,
    ST_INT_GET,
    ST_INT_LIST,
    ST_INT_UPDATE,
    ST_INT_DELETE,
    ST_INT_PROVIDER,
    ST_INT_KEY,
    ST_CONN_INSERT,
    ST_CONN_LOCK,
    ST_CONN_REPLACE,
    ST_CONN_GET,
    ST_CONN_GET_ENV_ID,
    ST_CONN_GET_ROW,
    ST_CONN_LIST,
    ST_CONN_DELETE,
    ST_CONN_SET_META,
    ST_CONN_PATCH,
    ST_CONN_TOUCH,
    ST_CONN_TOUCH_MANY, /* postgres only */
    ST_CONN_SET_PROVIDER,
    ST_CONN_EXISTS,
    ST_CONN_LEASE,
    ST_CONN_RELEASE,
    ST_CONN_DONE,
    ST_CONN_FAILED,
    ST_CONN_DUE,
    ST_CONN_REBIND_SCAN,
    ST_CONN_REBIND_CAS,
    ST_CONN_STAMP, /* store_connection_stamp */
    ST_SESS_INSERT,
    ST_SESS_GET,
    ST_SESS_BUMP,
    ST_SESS_DELETE,
    ST_SESS_PURGE,
    ST_WH_INSERT,
    ST_WH_CLAIM,
    ST_WH_DONE,
    ST_WH_RETRY,
    ST_WH_PENDING,
    ST_WH_OLDEST,
    ST_OPS_INSERT,
    ST_OPS_GET,
    ST_OPS_LIST,
    ST_OPS_NTH,
    ST_OPS_PRUNE,
    ST_OPS_COUNT,
    ST_RS_CONN_SCAN,
    ST_RS_CONN_CAS,
    ST_RS_ENV_SCAN,
    ST_RS_ENV_CAS,
    ST_RS_META_SCAN,
    ST_RS_META_CAS,
    /* migration 4: admin accounts and their sessions (dashboard), API key management */
    ST_ADM_INSERT,
    ST_ADM_GET_EMAIL,
    ST_ADM_LIST,
    ST_ADM_DELETE,
    ST_ADM_FAILED,
    ST_ADM_LOCK,
    ST_ADM_OK,
    ST_ASESS_INSERT,
    ST_ASESS_GET,
    ST_ASESS_TOUCH,
    ST_ASESS_DELETE,
    ST_ASESS_PURGE,
    ST_KEY_LIST,
    ST_KEY_REVOKE_ONE,
    ST_KEY_LABEL,
    /* migration 5: OAuth2 authorization code */
    ST_OST_INSERT,
    ST_OST_TAKE,
    ST_OST_PURGE,
    ST_RS_INT_SCAN,
    ST_RS_INT_CAS,
    ST__COUNT
};

/*
 * ---- column lists: written once, read by the row mappers in store.c in this order ----
 * Adding a column: add it here and to the mapper (store.c), then to the INSERT/UPDATE text and
 * a migration of each dialect.
 */
#define ENV_COLS                                                                                   \
    "id, name, webhook_url, webhook_url_secondary, webhook_key_sealed, on_auth_creation, "         \
    "on_auth_refresh_error, created_at"
#define INT_COLS                                                                                   \
    "id, env_id, unique_key, provider, display_name, oauth_scopes, forward_webhooks, "             \
    "custom_json, created_at, updated_at, credentials_sealed"
/*
 * Connections alias c. CRED: the credentials expression (the column, or NULL for lists).
 * FETCHED: the dialect's effective last_fetched_at of c (max of the row and connection_activity).
 */
#define CONN_COLS(CRED, FETCHED)                                                                   \
    "c.id, c.env_id, c.uid, c.connection_id, c.provider_config_key, c.provider, " CRED ", "        \
    "c.connection_config_json, c.metadata_json, c.tags_json, c.end_user_json, "                    \
    "c.webhook_url_override, c.expires_at, c.created_at, c.updated_at, " FETCHED ", "              \
    "c.last_refresh_success, c.last_refresh_failure, c.next_refresh_at, c.refresh_attempts, "      \
    "c.needs_reauth, c.auth_error_json, c.version"
#define SESS_COLS                                                                                  \
    "id, env_id, token_hash, end_user_json, organization_json, allowed_integrations_json, "        \
    "config_defaults_json, tags_json, webhook_url_override, connection_row_id, expires_at, "       \
    "attempts, created_at"
#define OST_COLS                                                                                   \
    "id, state_hash, env_id, session_hash, integration, connection_id, ws_client_id, "             \
    "payload_sealed, expires_at, created_at"
#define WH_COLS "id, env_id, url, body, attempts, next_attempt_at, created_at"
#define ADM_COLS                                                                                   \
    "id, email, password_hash, failed_attempts, locked_until, last_login_at, created_at"
/* admin_sessions s joined with admin_users a */
#define ASESS_COLS "s.id, s.admin_id, a.email, s.created_at, s.last_seen_at, s.expires_at"
#define KEY_COLS "id, env_id, label, created_at, revoked_at"
#define OPS_COLS                                                                                   \
    "id, env_id, at, kind, outcome, error, integration, provider, connection_id, end_user_id, "    \
    "duration_ms, detail_json"
/* webhook_url_override: NULL leaves it, '' clears it, anything else sets it (parameter P). */
#define OVERRIDE_EXPR(P)                                                                           \
    "CASE WHEN " P " IS NULL THEN webhook_url_override WHEN " P " = '' THEN NULL ELSE " P " END"

/* ---- typed binds ---- */

/* Parameters of one statement (the most any statement takes). */
#define DB_MAX_PARAMS 16

/*
 * One bound value. type: 't' text (s; NULL binds SQL NULL), 'i' int64 (i), 'B' bool (i is 0/1),
 * 'h' 32-byte hash blob (h). Pointers are borrowed until the cursor ends.
 */
struct db_val {
    char type;
    int64_t i;
    const char *s;
    const unsigned char *h;
};
struct db_params {
    int n;
    struct db_val v[DB_MAX_PARAMS];
};

/*
 * A pooled connection with its (single) cursor. Each dialect defines it in its own .c file; the
 * row layer only holds pointers to it.
 */
struct db_conn;

/*
 * ---- raw rows, for export/import (store_export.c) ----
 * store_tables[] describes every exported table once, for all dialects: same table and column
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
 * Appends "name, name, ..." of t's columns. fetched_expr: for a SELECT (export), the dialect's
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

struct dialect {
    const char *name; /* "sqlite", "postgres" */

    /* ---- whole-database operations ---- */
    /* target: a file path (sqlite) or a conninfo/URL (postgres). */
    latch_rc (*open)(const char *target, void **db_out, struct latch_err *err);
    void (*close)(void *db);
    latch_rc (*migrate)(void *db, struct latch_err *err);
    int (*schema_version)(void *db);
    latch_rc (*integrity_check)(void *db, struct latch_err *err);
    /*
     * Up to LATCH_STORE_TOUCH_BATCH touches (ST_CONN_TOUCH semantics) in one transaction; gone
     * rows are skipped. NULL: the row layer runs ST_CONN_TOUCH per id in one transaction.
     */
    latch_rc (*touch_many)(void *db, const int64_t *ids, size_t n, int64_t last_fetched_at);
    /* Every row of t in key order (batched; no long transaction). */
    latch_rc (*raw_scan)(void *db, const struct store_table *t, store_raw_scan_fn fn, void *ud);
    /*
     * Inserts rows verbatim (ids kept) in one transaction into a database whose meta and
     * environments tables are empty (LATCH_E_CONFLICT otherwise); all or nothing.
     */
    latch_rc (*raw_import)(void *db, store_raw_next_fn next, void *ud, struct latch_err *err);

    /* ---- connections and transactions ---- */
    /* Lends a connection (waits for one; LATCH_E_BUSY / UNAVAILABLE when none can be had). */
    latch_rc (*acquire)(void *db, struct db_conn **out);
    /* Gives it back (NULL is a no-op); closes its cursor, rolls back an open transaction. */
    void (*release)(struct db_conn *c);
    /* A write transaction (sqlite: BEGIN IMMEDIATE; postgres: BEGIN, READ COMMITTED). */
    latch_rc (*begin)(struct db_conn *c);
    /* On failure the transaction is rolled back. */
    latch_rc (*commit)(struct db_conn *c);
    /* Rolls back an open transaction; a no-op outside one. */
    void (*rollback)(struct db_conn *c);

    /* ---- statements and the cursor ---- */
    /*
     * Runs statement id with p (prepared once per connection, cached by id). The cursor is
     * then open: next walks the rows, changes counts them, end closes it. On error the cursor
     * is closed.
     */
    latch_rc (*exec)(struct db_conn *c, enum st_id id, const struct db_params *p);
    /* Moves to the next row: *row false at the end. */
    latch_rc (*next)(struct db_conn *c, bool *row);
    /* Runs the statement to completion (rows left are skipped); rows it changed. */
    int64_t (*changes)(struct db_conn *c);
    /* Closes the cursor (resets and unbinds the statement); no-op when none is open. */
    void (*end)(struct db_conn *c);

    /* Column getters on the current row; a NULL reads as 0 / NULL / false. */
    bool (*col_null)(struct db_conn *c, int col);
    int64_t (*col_i64)(struct db_conn *c, int col);
    bool (*col_bool)(struct db_conn *c, int col);
    const char *(*col_text)(struct db_conn *c, int col); /* borrowed */
    char *(*col_str)(struct db_conn *c, int col);        /* owned copy */
    /* Exactly 32 bytes into h (false, h zeroed, otherwise). */
    bool (*col_hash)(struct db_conn *c, int col, unsigned char h[32]);
};

struct store {
    const struct dialect *d;
    void *db;
};

/* The dialects. libpq is a required dependency, so the PostgreSQL dialect is always built. */
extern const struct dialect store_sqlite_dialect;
extern const struct dialect store_pg_dialect;

#endif
