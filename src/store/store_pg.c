/*
 * store_pg.c - the PostgreSQL dialect of the store (see dialect.h, docs/internals/store_pg.md).
 *
 * Threads: a bounded pool (STORE_PG_POOL_SIZE) of PGconn, mutex + condvar; an operation takes a
 * connection, runs, gives it back, so a PGconn is only ever used by one thread at a time.
 * Statements are PQprepare'd lazily, once per connection, and cached by enum st_id; values only
 * ever travel as parameters (PQexecPrepared / PQexecParams), never inside SQL text.
 * Availability: connections are opened with connect_timeout (added when the URL has none) and
 * get a statement_timeout; a broken connection is dropped and reopened on next use, and a stale
 * pooled connection (the server restarted while it sat idle) is retried once, transparently,
 * when the very first statement of an operation fails. While the server is down every call
 * fails fast with LATCH_E_UNAVAILABLE; it succeeds again once the server is back.
 * Writes run in BEGIN ... COMMIT (READ COMMITTED); the cross-node primitives (lease, version
 * check, outbox claim, CAS) are single guarded UPDATEs, which PostgreSQL re-checks against the
 * newest row version, so two nodes never both win. Bound values are never logged.
 * Ownership: pg_open returns an owned struct pg_store (pg_close frees it); pool slots belong to
 * the pool and are lent by pg_acquire until pg_release.
 */
#include "store/dialect.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <libpq-fe.h>

#include "core/log.h"
#include "util/clock.h"
#include "util/buf.h"
#include "util/xalloc.h"

#include "store/store_pg_schema.h"
#include "util/str.h"

/* Connections per store (per latch node); callers wait past it. */
#define STORE_PG_POOL_SIZE 16
/* How long a caller waits for a free pooled connection before LATCH_E_BUSY. */
#define STORE_PG_ACQUIRE_TIMEOUT_MS 15000
/* connect_timeout (seconds) added when the URL sets none. */
#define STORE_PG_CONNECT_TIMEOUT_S "3"
/* Per-statement limits set on every session (ms). */
#define STORE_PG_STATEMENT_TIMEOUT_MS "15000"
#define STORE_PG_LOCK_TIMEOUT_MS "5000"
#define STORE_PG_IDLE_TX_TIMEOUT_MS "60000"
/* After a failed connect, new connects fail at once for this long (fail fast, no stampede). */
#define STORE_PG_RETRY_AFTER_MS 250
/* Statements a batched touch tries while connections are deleted under it (see touch_many). */
#define STORE_PG_TOUCH_TRIES 3
/* Session advisory lock key serialising migrations across nodes ("latchmig"). */
#define STORE_PG_MIGRATE_LOCK "7809644905012013415"
/* Rows per batch for raw scans. */
#define STORE_RAW_BATCH 500
/* Parameters of one statement. */
#define PG_MAX_PARAMS DB_MAX_PARAMS
/* Columns of one raw (export/import) row: the widest table, connections, has 25. */
#define PG_MAX_RAW_COLS 32
/* Longest dynamic SQL text (raw import/scan; identifiers from store_tables only). */
#define PG_MAX_RAW_SQL 2048

/* ---- statements (column lists and OVERRIDE_EXPR: dialect.h) ---- */

/*
 * The effective last_fetched_at of connections row T (a table name or alias): touches go to the
 * narrow connection_activity table (migration 2), creation/import values stay in the row.
 * One primary-key lookup per row; GREATEST ignores the NULL of a missing activity row.
 */
#define FETCHED_EXPR(T)                                                                            \
    "GREATEST(" T ".last_fetched_at, (SELECT a.last_fetched_at FROM connection_activity a "        \
    "WHERE a.conn_id = " T ".id))"
/* The effective last_fetched_at of connections alias c. */
#define C_FETCHED FETCHED_EXPR("c")

/* Connection rows: with credentials (reads) or without (lists). */
#define CONN_SELECT "SELECT " CONN_COLS("c.credentials_sealed", C_FETCHED) " FROM connections c "
#define CONN_LIST_SELECT "SELECT " CONN_COLS("NULL", C_FETCHED) " FROM connections c "
#define OVERRIDE_4 OVERRIDE_EXPR("$4::text")
#define OVERRIDE_9 OVERRIDE_EXPR("$9::text")
/* The list filter (parameters: see ST_CONN_LIST). */
#define CONN_LIST_WHERE                                                                            \
    "WHERE c.env_id = $1::bigint AND ($2::text IS NULL OR c.connection_id = $2::text) "            \
    "AND ($3::text IS NULL OR strpos(lower(c.connection_id), lower($3::text)) > 0 "                \
    "  OR strpos(lower(c.end_user_json::jsonb ->> 'id'), lower($3::text)) > 0 "                    \
    "  OR strpos(lower(c.end_user_json::jsonb ->> 'email'), lower($3::text)) > 0 "                 \
    "  OR strpos(lower(c.end_user_json::jsonb ->> 'display_name'), lower($3::text)) > 0 "          \
    "  OR strpos(lower(c.end_user_json::jsonb #>> '{organization,id}'), lower($3::text)) > 0) "    \
    "AND ($4::text IS NULL OR (c.end_user_json::jsonb ->> 'id') = $4::text) "                      \
    "AND ($5::text IS NULL OR (c.end_user_json::jsonb #>> '{organization,id}') = $5::text) "       \
    "AND ($6::jsonb IS NULL OR c.provider_config_key = "                                           \
    "  ANY (ARRAY(SELECT jsonb_array_elements_text($6::jsonb)))) "                                 \
    "AND ($7::jsonb IS NULL OR NOT EXISTS (SELECT 1 FROM jsonb_array_elements($7::jsonb) f "       \
    "  WHERE NOT (c.tags_json::jsonb @> jsonb_build_object(f ->> 0, f ->> 1)))) "

static const char *const st_sql[ST__COUNT] = {
    [ST_BEGIN] = "BEGIN",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_META_GET] = "SELECT value FROM meta WHERE key = $1::text",
    [ST_META_ADD] = "INSERT INTO meta(key, value) VALUES ($1::text, $2::text) "
                    "ON CONFLICT (key) DO NOTHING",
    [ST_META_SET] = "INSERT INTO meta(key, value) VALUES ($1::text, $2::text) "
                    "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
    [ST_ENV_INSERT] = "INSERT INTO environments(name, created_at) VALUES ($1::text, $2::bigint) "
                      "RETURNING " ENV_COLS,
    [ST_ENV_GET] = "SELECT " ENV_COLS " FROM environments WHERE id = $1::bigint",
    [ST_ENV_GET_NAME] = "SELECT " ENV_COLS " FROM environments WHERE name = $1::text",
    [ST_ENV_LIST] = "SELECT " ENV_COLS " FROM environments ORDER BY id",
    [ST_ENV_UPDATE] = "UPDATE environments SET webhook_url = $2::text, "
                      "webhook_url_secondary = $3::text, webhook_key_sealed = $4::text, "
                      "on_auth_creation = $5::boolean, on_auth_refresh_error = $6::boolean "
                      "WHERE id = $1::bigint",
    [ST_KEY_ADD] = "INSERT INTO api_keys(env_id, key_hash, label, created_at) "
                   "VALUES ($1::bigint, $2::bytea, $3::text, $4::bigint)",
    [ST_KEY_LOOKUP] =
        "SELECT env_id, label FROM api_keys WHERE key_hash = $1::bytea AND revoked_at = 0",
    [ST_KEY_REVOKE] = "UPDATE api_keys SET revoked_at = $2::bigint "
                      "WHERE env_id = $1::bigint AND revoked_at = 0",
    [ST_KEY_COUNT] = "SELECT count(*) FROM api_keys WHERE env_id = $1::bigint AND revoked_at = 0",
    [ST_INT_INSERT] = "INSERT INTO integrations(env_id, unique_key, provider, display_name, "
                      "oauth_scopes, forward_webhooks, custom_json, created_at, updated_at, "
                      "credentials_sealed) VALUES ($1::bigint, $2::text, $3::text, $4::text, "
                      "$5::text, $6::boolean, "
                      "$7::text, $8::bigint, $8::bigint, $9::text) RETURNING id",
    [ST_INT_GET] = "SELECT " INT_COLS " FROM integrations "
                   "WHERE env_id = $1::bigint AND unique_key = $2::text",
    [ST_INT_LIST] = "SELECT " INT_COLS " FROM integrations WHERE env_id = $1::bigint ORDER BY id",
    [ST_INT_UPDATE] = "UPDATE integrations SET unique_key = $3::text, provider = $4::text, "
                      "display_name = $5::text, oauth_scopes = $6::text, "
                      "forward_webhooks = $7::boolean, custom_json = $8::text, "
                      "updated_at = $9::bigint, credentials_sealed = $10::text "
                      "WHERE id = $1::bigint AND env_id = $2::bigint",
    [ST_INT_DELETE] =
        "DELETE FROM integrations WHERE env_id = $1::bigint AND unique_key = $2::text",
    /* FOR UPDATE: the old key stays the old key until the rename commits. */
    [ST_INT_KEY] = "SELECT unique_key FROM integrations "
                   "WHERE id = $1::bigint AND env_id = $2::bigint FOR UPDATE",
    /* FOR KEY SHARE: the integration cannot be deleted or renamed before the insert
       commits. */
    [ST_INT_PROVIDER] = "SELECT provider FROM integrations "
                        "WHERE env_id = $1::bigint AND unique_key = $2::text FOR KEY SHARE",
    /* Insert unless the key exists (then no row comes back and the caller replaces). */
    [ST_CONN_INSERT] =
        "INSERT INTO connections(env_id, uid, connection_id, provider_config_key, provider, "
        "credentials_sealed, connection_config_json, metadata_json, tags_json, end_user_json, "
        "webhook_url_override, expires_at, created_at, updated_at) "
        "VALUES ($1::bigint, $2::text, $3::text, $4::text, $5::text, $6::text, "
        "COALESCE($7::text, '{}'), $8::text, COALESCE($9::text, '{}'), $10::text, "
        "NULLIF($11::text, ''), $12::bigint, $13::bigint, $13::bigint) "
        "ON CONFLICT (env_id, provider_config_key, connection_id) DO NOTHING RETURNING id",
    [ST_CONN_LOCK] = "SELECT id, uid FROM connections WHERE env_id = $1::bigint "
                     "AND provider_config_key = $2::text AND connection_id = $3::text FOR UPDATE",
    [ST_CONN_REPLACE] =
        "UPDATE connections SET provider = COALESCE($2::text, provider), "
        "credentials_sealed = $3::text, connection_config_json = COALESCE($4::text, '{}'), "
        "expires_at = $5::bigint, metadata_json = COALESCE($6::text, metadata_json), "
        "tags_json = COALESCE($7::text, tags_json), "
        "end_user_json = COALESCE($8::text, end_user_json), webhook_url_override = " OVERRIDE_9 ", "
        "next_refresh_at = 0, refresh_attempts = 0, needs_reauth = false, auth_error_json = NULL, "
        "version = version + 1, updated_at = $10::bigint WHERE id = $1::bigint",
    [ST_CONN_GET] = CONN_SELECT "WHERE c.env_id = $1::bigint AND c.provider_config_key = $2::text "
                                "AND c.connection_id = $3::text",
    [ST_CONN_GET_ENV_ID] = CONN_SELECT "WHERE c.env_id = $1::bigint AND c.id = $2::bigint",
    [ST_CONN_GET_ROW] = CONN_SELECT "WHERE c.id = $1::bigint",
    /*
     * $1 env, $2 connection_id, $3 search, $4 end user id, $5 end user org id,
     * $6 JSON array of integration keys, $7 JSON array of [key, value] tag pairs (all must
     * match, as JSON strings), $8 limit, $9 offset. A NULL parameter disables its filter.
     */
    [ST_CONN_LIST] = CONN_LIST_SELECT CONN_LIST_WHERE
    "ORDER BY c.created_at DESC, c.id DESC LIMIT $8::bigint OFFSET $9::bigint",
    [ST_CONN_DELETE] = "DELETE FROM connections WHERE env_id = $1::bigint "
                       "AND provider_config_key = $2::text AND connection_id = $3::text",
    /* updated_at never takes the same value twice: the hot cache's stamp compares it */
    [ST_CONN_SET_META] = "UPDATE connections SET metadata_json = $2::text, "
                         "updated_at = GREATEST($3::bigint, updated_at + 1) WHERE id = $1::bigint",
    [ST_CONN_PATCH] = "UPDATE connections SET tags_json = COALESCE($2::text, tags_json), "
                      "end_user_json = COALESCE($3::text, end_user_json), "
                      "webhook_url_override = " OVERRIDE_4 ", "
                      "updated_at = GREATEST($5::bigint, updated_at + 1) WHERE id = $1::bigint",
    /*
     * Touches write only the narrow activity row. Gone connections are skipped; one deleted
     * after the statement's snapshot fails the foreign key (23503, retried by the caller).
     * No FOR KEY SHARE on connections: locking would dirty the wide row's page every time.
     */
    [ST_CONN_TOUCH] = "INSERT INTO connection_activity(conn_id, last_fetched_at) "
                      "SELECT $1::bigint, $2::bigint "
                      "WHERE EXISTS (SELECT 1 FROM connections WHERE id = $1::bigint) "
                      "ON CONFLICT (conn_id) DO UPDATE SET last_fetched_at = "
                      "GREATEST(connection_activity.last_fetched_at, EXCLUDED.last_fetched_at)",
    /* DISTINCT: ON CONFLICT DO UPDATE refuses to touch one row twice in a statement. */
    [ST_CONN_TOUCH_MANY] = "INSERT INTO connection_activity(conn_id, last_fetched_at) "
                           "SELECT DISTINCT u.id, $2::bigint FROM unnest($1::bigint[]) AS u(id) "
                           "WHERE EXISTS (SELECT 1 FROM connections c WHERE c.id = u.id) "
                           "ON CONFLICT (conn_id) DO UPDATE SET last_fetched_at = "
                           "GREATEST(connection_activity.last_fetched_at, "
                           "EXCLUDED.last_fetched_at)",
    [ST_CONN_SET_PROVIDER] = "UPDATE connections SET provider = $3::text WHERE env_id = $1::bigint "
                             "AND provider_config_key = $2::text AND provider <> $3::text",
    [ST_CONN_EXISTS] = "SELECT 1 FROM connections WHERE id = $1::bigint",
    [ST_CONN_LEASE] = "UPDATE connections SET lease_owner = $2::text, lease_until = $3::bigint "
                      "WHERE id = $1::bigint AND (lease_owner IS NULL OR lease_until <= $4::bigint "
                      "OR lease_owner = $2::text) RETURNING version",
    [ST_CONN_RELEASE] = "UPDATE connections SET lease_owner = NULL, lease_until = 0 "
                        "WHERE id = $1::bigint AND lease_owner = $2::text",
    [ST_CONN_DONE] = "UPDATE connections SET credentials_sealed = $4::text, "
                     "expires_at = $5::bigint, last_refresh_success = $6::bigint, "
                     "updated_at = $6::bigint, auth_error_json = NULL, next_refresh_at = 0, "
                     "refresh_attempts = 0, needs_reauth = false, version = version + 1, "
                     "lease_owner = NULL, lease_until = 0 WHERE id = $1::bigint "
                     "AND version = $2::bigint AND lease_owner = $3::text RETURNING version",
    [ST_CONN_FAILED] = "UPDATE connections SET refresh_attempts = refresh_attempts + 1, "
                       "auth_error_json = $3::text, next_refresh_at = $4::bigint, "
                       "needs_reauth = $5::boolean, last_refresh_failure = $6::bigint, "
                       "lease_owner = NULL, lease_until = 0 "
                       "WHERE id = $1::bigint AND lease_owner = $2::text",
    [ST_CONN_DUE] = "SELECT c.id, c.env_id FROM connections c WHERE c.expires_at <> 0 "
                    "AND c.expires_at < $1::bigint AND NOT c.needs_reauth "
                    "AND (c.next_refresh_at = 0 OR c.next_refresh_at <= $3::bigint) "
                    "AND (c.lease_owner IS NULL OR c.lease_until <= $3::bigint) "
                    "AND " C_FETCHED " >= $2::bigint "
                    "ORDER BY c.expires_at, c.id LIMIT $4::bigint",
    /* FOR UPDATE (the cascade holds them already): no refresh commits between read and CAS. */
    [ST_CONN_REBIND_SCAN] = "SELECT id, uid, connection_id, credentials_sealed FROM connections "
                            "WHERE env_id = $1::bigint AND provider_config_key = $2::text "
                            "AND credentials_sealed IS NOT NULL ORDER BY id FOR UPDATE",
    [ST_CONN_REBIND_CAS] = "UPDATE connections SET credentials_sealed = $2::text, "
                           "lease_owner = NULL, lease_until = 0 "
                           "WHERE id = $1::bigint AND credentials_sealed = $3::text",
    [ST_CONN_STAMP] = "SELECT id, version, updated_at, expires_at, refresh_attempts, "
                      "last_refresh_failure, next_refresh_at, needs_reauth, provider "
                      "FROM connections WHERE env_id = $1::bigint "
                      "AND provider_config_key = $2::text AND connection_id = $3::text",
    [ST_SESS_INSERT] =
        "INSERT INTO connect_sessions(env_id, token_hash, end_user_json, "
        "organization_json, "
        "allowed_integrations_json, config_defaults_json, tags_json, webhook_url_override, "
        "connection_row_id, expires_at, attempts, created_at) "
        "VALUES ($1::bigint, $2::bytea, $3::text, $4::text, $5::text, $6::text, $7::text, "
        "$8::text, $9::bigint, $10::bigint, $11::integer, $12::bigint) RETURNING id",
    [ST_SESS_GET] = "SELECT " SESS_COLS " FROM connect_sessions WHERE token_hash = $1::bytea",
    [ST_SESS_BUMP] = "UPDATE connect_sessions SET attempts = attempts + 1 WHERE id = $1::bigint "
                     "RETURNING attempts",
    [ST_SESS_DELETE] = "DELETE FROM connect_sessions WHERE id = $1::bigint",
    [ST_SESS_PURGE] = "DELETE FROM connect_sessions WHERE expires_at <= $1::bigint",
    [ST_OST_INSERT] = "INSERT INTO oauth_states(state_hash, env_id, session_hash, integration, "
                      "connection_id, ws_client_id, payload_sealed, expires_at, created_at) "
                      "VALUES ($1::bytea, $2::bigint, $3::bytea, $4::text, $5::text, $6::text, "
                      "$7::text, $8::bigint, $9::bigint) RETURNING id",
    [ST_OST_TAKE] = "DELETE FROM oauth_states WHERE state_hash = $1::bytea RETURNING " OST_COLS,
    [ST_OST_PURGE] = "DELETE FROM oauth_states WHERE expires_at <= $1::bigint",
    [ST_RS_INT_SCAN] = "SELECT id, credentials_sealed, env_id, unique_key FROM integrations "
                       "WHERE id > $1::bigint AND credentials_sealed IS NOT NULL ORDER BY id "
                       "LIMIT $2::bigint",
    [ST_RS_INT_CAS] = "UPDATE integrations SET credentials_sealed = $2::text "
                      "WHERE id = $1::bigint AND credentials_sealed = $3::text",
    [ST_WH_INSERT] = "INSERT INTO webhook_outbox(env_id, url, body, next_attempt_at, created_at) "
                     "VALUES ($1::bigint, $2::text, $3::text, $4::bigint, $4::bigint) RETURNING id",
    /* SKIP LOCKED: concurrent claimers (other nodes) pass over rows being claimed right
       now. */
    [ST_WH_CLAIM] = "UPDATE webhook_outbox SET claim_owner = $1::text, claim_until = $2::bigint + "
                    "$3::bigint "
                    "WHERE id IN (SELECT id FROM webhook_outbox WHERE state = 'pending' "
                    "AND next_attempt_at <= $2::bigint AND (claim_owner IS NULL OR claim_until <= "
                    "$2::bigint) "
                    "ORDER BY next_attempt_at, id LIMIT $4::bigint FOR UPDATE SKIP LOCKED) "
                    "RETURNING " WH_COLS,
    [ST_WH_DONE] = "DELETE FROM webhook_outbox WHERE id = $1::bigint",
    [ST_WH_RETRY] = "UPDATE webhook_outbox SET attempts = attempts + 1, last_error = $3::text, "
                    "state = CASE WHEN $4::boolean THEN 'dead' ELSE 'pending' END, "
                    "next_attempt_at = CASE WHEN $4::boolean THEN next_attempt_at "
                    "ELSE $2::bigint END, claim_owner = NULL, claim_until = 0 "
                    "WHERE id = $1::bigint",
    [ST_WH_PENDING] = "SELECT count(*) FROM webhook_outbox WHERE state = 'pending'",
    [ST_WH_OLDEST] =
        "SELECT COALESCE(min(created_at), 0) FROM webhook_outbox WHERE state = 'pending'",
    [ST_OPS_INSERT] = "INSERT INTO operations(" OPS_COLS ") "
                      "VALUES ($1::text, $2::bigint, $3::bigint, $4::text, $5::text, $6::text, "
                      "$7::text, $8::text, $9::text, $10::text, $11::bigint, $12::text)",
    [ST_OPS_GET] =
        "SELECT " OPS_COLS " FROM operations WHERE env_id = $1::bigint AND id = $2::text",
    /*
     * $1 env, $2 connection_id, $3 integration, $4 kind, $5 outcome, $6 id >= (time from),
     * $7 id < (time to, or the cursor), $8 limit. A NULL parameter disables its filter.
     */
    [ST_OPS_LIST] = "SELECT " OPS_COLS " FROM operations WHERE env_id = $1::bigint "
                    "AND ($2::text IS NULL OR connection_id = $2::text) "
                    "AND ($3::text IS NULL OR integration = $3::text) "
                    "AND ($4::text IS NULL OR kind = $4::text) "
                    "AND ($5::text IS NULL OR outcome = $5::text) "
                    "AND id >= COALESCE($6::text, '') AND ($7::text IS NULL OR id < $7::text) "
                    "ORDER BY id DESC LIMIT $8::bigint",
    [ST_OPS_NTH] = "SELECT id FROM operations ORDER BY id DESC LIMIT 1 OFFSET $1::bigint",
    [ST_OPS_PRUNE] = "DELETE FROM operations WHERE id IN "
                     "(SELECT id FROM operations WHERE id < $1::text ORDER BY id LIMIT $2::bigint)",
    [ST_OPS_COUNT] = "SELECT count(*) FROM operations",
    [ST_RS_CONN_SCAN] = "SELECT id, uid, credentials_sealed, env_id, provider_config_key, "
                        "connection_id FROM connections WHERE id > $1::bigint "
                        "AND credentials_sealed IS NOT NULL ORDER BY id LIMIT $2::bigint",
    [ST_RS_CONN_CAS] = "UPDATE connections SET credentials_sealed = $2::text "
                       "WHERE id = $1::bigint AND credentials_sealed = $3::text",
    [ST_RS_ENV_SCAN] = "SELECT id, webhook_key_sealed FROM environments WHERE id > $1::bigint "
                       "AND webhook_key_sealed IS NOT NULL ORDER BY id LIMIT $2::bigint",
    [ST_RS_ENV_CAS] = "UPDATE environments SET webhook_key_sealed = $2::text "
                      "WHERE id = $1::bigint AND webhook_key_sealed = $3::text",
    /* Sealed meta rows are exactly those whose key starts with "sealed:"; byte order. */
    [ST_RS_META_SCAN] = "SELECT key, value FROM meta WHERE key COLLATE \"C\" > $1::text "
                        "AND substr(key, 1, 7) = 'sealed:' ORDER BY key COLLATE \"C\" "
                        "LIMIT $2::bigint",
    [ST_RS_META_CAS] = "UPDATE meta SET value = $2::text WHERE key = $1::text AND value = $3::text",
    [ST_ADM_INSERT] = "INSERT INTO admin_users(email, password_hash, created_at) "
                      "VALUES ($1::text, $2::text, $3::bigint) RETURNING id",
    [ST_ADM_GET_EMAIL] = "SELECT " ADM_COLS " FROM admin_users WHERE email = $1::text",
    [ST_ADM_LIST] = "SELECT " ADM_COLS " FROM admin_users ORDER BY email",
    [ST_ADM_DELETE] = "DELETE FROM admin_users WHERE email = $1::text",
    [ST_ADM_FAILED] = "UPDATE admin_users SET failed_attempts = failed_attempts + 1 "
                      "WHERE id = $1::bigint RETURNING failed_attempts",
    [ST_ADM_LOCK] = "UPDATE admin_users SET locked_until = $2::bigint WHERE id = $1::bigint",
    [ST_ADM_OK] = "UPDATE admin_users SET failed_attempts = 0, locked_until = 0, "
                  "last_login_at = $2::bigint WHERE id = $1::bigint",
    [ST_ASESS_INSERT] = "INSERT INTO admin_sessions(admin_id, token_hash, created_at, "
                        "last_seen_at, expires_at) VALUES ($1::bigint, $2::bytea, $3::bigint, "
                        "$3::bigint, $4::bigint) RETURNING id",
    [ST_ASESS_GET] = "SELECT " ASESS_COLS " FROM admin_sessions s "
                     "JOIN admin_users a ON a.id = s.admin_id WHERE s.token_hash = $1::bytea",
    [ST_ASESS_TOUCH] = "UPDATE admin_sessions SET last_seen_at = $2::bigint WHERE id = $1::bigint",
    [ST_ASESS_DELETE] = "DELETE FROM admin_sessions WHERE token_hash = $1::bytea",
    [ST_ASESS_PURGE] = "DELETE FROM admin_sessions WHERE expires_at <= $1::bigint "
                       "OR last_seen_at <= $2::bigint",
    [ST_KEY_LIST] = "SELECT " KEY_COLS " FROM api_keys WHERE env_id = $1::bigint ORDER BY id",
    [ST_KEY_REVOKE_ONE] = "UPDATE api_keys SET revoked_at = $3::bigint "
                          "WHERE env_id = $1::bigint AND id = $2::bigint AND revoked_at = 0",
    [ST_KEY_LABEL] = "UPDATE api_keys SET label = $3::text "
                     "WHERE env_id = $1::bigint AND id = $2::bigint",
};

/* ---- connection pool ---- */

struct pg_store;

/* A pool slot with its cursor. */
struct db_conn {
    PGconn *pg; /* NULL: not connected (reconnects on next use) */
    bool prepared[ST__COUNT];
    bool reused;        /* connected before this acquisition (may be stale) */
    unsigned nq;        /* statements sent during this acquisition */
    struct pg_store *q; /* the pool it belongs to */
    PGresult *res;      /* the open cursor's result, or NULL */
    int row;            /* the cursor's current row (-1 before the first) */
    struct db_conn *next;
};

struct pg_store {
    /* Connection parameters for PQconnectdbParams (expand_dbname=1): owned strings. */
    const char *kw[16];
    char *val[16];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct db_conn *idle; /* LIFO of connections not in use */
    size_t nconns;        /* slots created, idle or in use */
    int64_t retry_after;  /* no new connect before this (ms, monotonic); under mu */
};

/* Parameters of one statement, built from a format (see pset). */
struct pg_params {
    int n;
    const char *v[PG_MAX_PARAMS];
    int len[PG_MAX_PARAMS];
    int fmt[PG_MAX_PARAMS];
    char num[PG_MAX_PARAMS][24];
};

static void
notice_ignore(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

/*
 * Maps a failed result (or a broken connection) to latch_rc and logs the unexpected ones. Only
 * the SQLSTATE and the primary message of non-data errors are logged: details can quote values.
 */
static latch_rc
pg_fail(PGconn *pg, const PGresult *res, const char *op)
{
    const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = res != NULL ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    char q[256];

    if (pg == NULL || PQstatus(pg) == CONNECTION_BAD) {
        log_warn("store: postgres connection lost", "op=%s err=%s", op,
                 log_quote(q, sizeof q, pg != NULL ? PQerrorMessage(pg) : "not connected"));
        return LATCH_E_UNAVAILABLE;
    }
    if (state == NULL) {
        log_warn("store: postgres error", "op=%s err=%s", op,
                 log_quote(q, sizeof q, PQerrorMessage(pg)));
        return LATCH_E_DB;
    }
    if (strcmp(state, "23505") == 0)
        return LATCH_E_CONFLICT; /* unique_violation */
    if (strcmp(state, "23503") == 0)
        return LATCH_E_NOT_FOUND; /* foreign_key_violation: the parent row is missing */
    if (strncmp(state, "23", 2) == 0 || strncmp(state, "22", 2) == 0) {
        /* integrity / data exception: the caller passed a value the schema rejects */
        log_debug("store: postgres rejected a value", "op=%s sqlstate=%s", op, state);
        return LATCH_E_INVAL;
    }
    log_warn("store: postgres error", "op=%s sqlstate=%s err=%s", op, state,
             log_quote(q, sizeof q, msg != NULL ? msg : "?"));
    if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0 || strcmp(state, "55P03") == 0 ||
        strcmp(state, "57014") == 0)
        return LATCH_E_BUSY; /* serialization, deadlock, lock or statement timeout */
    if (strncmp(state, "08", 2) == 0 || strncmp(state, "57P", 3) == 0 ||
        strncmp(state, "53", 2) == 0)
        return LATCH_E_UNAVAILABLE; /* connection, shutdown, too many connections / resources */
    return LATCH_E_DB;
}

/* Closes the session of c (the slot stays in the pool and reconnects on next use). */
static void
conn_drop(struct db_conn *c)
{
    if (c->pg != NULL)
        PQfinish(c->pg);
    c->pg = NULL;
    memset(c->prepared, 0, sizeof c->prepared);
}

/* Runs one parameterless utility statement (session setup, migrations). */
static latch_rc
exec_plain(PGconn *pg, const char *sql, const char *op, struct latch_err *err)
{
    PGresult *r = PQexecParams(pg, sql, 0, NULL, NULL, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    latch_rc rc = LATCH_OK;

    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        const char *m = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);

        latch_err_set(err, "store: %s: %s", op, m != NULL ? m : PQerrorMessage(pg));
        rc = pg_fail(pg, r, op);
    }
    PQclear(r);
    return rc;
}

/* Opens a session with the store's parameters and sets the per-session limits. */
static latch_rc
session_open(struct pg_store *q, PGconn **out, struct latch_err *err)
{
    static const char *const setup_kw[] = {"statement_timeout", "lock_timeout",
                                           "idle_in_transaction_session_timeout"};
    static const char *const setup_val[] = {STORE_PG_STATEMENT_TIMEOUT_MS, STORE_PG_LOCK_TIMEOUT_MS,
                                            STORE_PG_IDLE_TX_TIMEOUT_MS};
    const char *const *vals = (const char *const *)q->val;
    PGconn *pg;
    latch_rc rc = LATCH_OK;

    *out = NULL;
    pg = PQconnectdbParams(q->kw, vals, 1);
    if (pg == NULL) {
        latch_err_set(err, "store: cannot allocate a postgres connection");
        return LATCH_E_NOMEM;
    }
    if (PQstatus(pg) != CONNECTION_OK) {
        char *m = xstrdup(PQerrorMessage(pg));
        size_t l = strlen(m);

        while (l > 0 && (m[l - 1] == '\n' || m[l - 1] == ' '))
            m[--l] = '\0';
        latch_err_set(err, "store: cannot connect to postgres: %s", m);
        free(m);
        PQfinish(pg);
        return LATCH_E_UNAVAILABLE;
    }
    (void)PQsetNoticeProcessor(pg, notice_ignore, NULL);
    for (size_t i = 0; i < sizeof setup_kw / sizeof setup_kw[0] && rc == LATCH_OK; i++) {
        const char *pv[2] = {setup_kw[i], setup_val[i]};
        PGresult *r = PQexecParams(pg, "SELECT set_config($1::text, $2::text, false)", 2, NULL, pv,
                                   NULL, NULL, 0);

        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            latch_err_set(err, "store: postgres session setup failed");
            rc = pg_fail(pg, r, "session setup");
        }
        PQclear(r);
    }
    if (rc != LATCH_OK) {
        PQfinish(pg);
        return rc;
    }
    *out = pg;
    return LATCH_OK;
}

/* Makes sure c has a live session (fail fast while the server is known to be down). */
static latch_rc
conn_ensure(struct pg_store *q, struct db_conn *c)
{
    struct latch_err err;
    int64_t now;
    latch_rc rc;

    if (c->pg != NULL && PQstatus(c->pg) == CONNECTION_OK)
        return LATCH_OK;
    conn_drop(c);
    now = latch_mono_ms();
    pthread_mutex_lock(&q->mu);
    if (now < q->retry_after) {
        pthread_mutex_unlock(&q->mu);
        return LATCH_E_UNAVAILABLE;
    }
    pthread_mutex_unlock(&q->mu);
    latch_err_clear(&err);
    rc = session_open(q, &c->pg, &err);
    pthread_mutex_lock(&q->mu);
    q->retry_after = rc == LATCH_OK ? 0 : latch_mono_ms() + STORE_PG_RETRY_AFTER_MS;
    pthread_mutex_unlock(&q->mu);
    if (rc != LATCH_OK) {
        char m[256];

        log_warn("store: postgres unavailable", "err=%s", log_quote(m, sizeof m, err.msg));
    }
    return rc;
}

static latch_rc
conn_acquire(struct pg_store *q, struct db_conn **out)
{
    struct db_conn *c = NULL;
    struct timespec deadline;
    int w = 0;

    *out = NULL;
    (void)clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += STORE_PG_ACQUIRE_TIMEOUT_MS / 1000;
    pthread_mutex_lock(&q->mu);
    while (q->idle == NULL && q->nconns >= STORE_PG_POOL_SIZE && w != ETIMEDOUT)
        w = pthread_cond_timedwait(&q->cv, &q->mu, &deadline);
    if (q->idle != NULL) {
        c = q->idle;
        q->idle = c->next;
        c->next = NULL;
    } else if (q->nconns < STORE_PG_POOL_SIZE) {
        c = xcalloc(1, sizeof *c);
        q->nconns++;
    }
    pthread_mutex_unlock(&q->mu);
    if (c == NULL) {
        log_warn("store: postgres pool exhausted", "size=%d", STORE_PG_POOL_SIZE);
        return LATCH_E_BUSY;
    }
    c->reused = c->pg != NULL;
    c->nq = 0;
    c->q = q;
    c->res = NULL;
    c->row = -1;
    *out = c;
    return LATCH_OK;
}

static void
conn_release(struct pg_store *q, struct db_conn *c)
{
    if (c == NULL)
        return;
    if (c->pg != NULL && PQstatus(c->pg) != CONNECTION_OK) {
        conn_drop(c);
    } else if (c->pg != NULL && PQtransactionStatus(c->pg) != PQTRANS_IDLE) {
        /* Safety net: never hand out a connection with an open transaction. */
        PGresult *r = PQexecParams(c->pg, "ROLLBACK", 0, NULL, NULL, NULL, NULL, 0);

        if (PQresultStatus(r) != PGRES_COMMAND_OK || PQtransactionStatus(c->pg) != PQTRANS_IDLE)
            conn_drop(c);
        PQclear(r);
    }
    pthread_mutex_lock(&q->mu);
    c->next = q->idle;
    q->idle = c;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

/* ---- statement helpers ---- */

/*
 * Fills pp from p: 't' text (NULL = SQL NULL), 'i' int64 (decimal), 'B' boolean, 'h' 32 bytes
 * (binary bytea). Text values are borrowed.
 */
static bool
pset(struct pg_params *pp, const struct db_params *p)
{
    memset(pp, 0, sizeof *pp);
    if (p->n > PG_MAX_PARAMS)
        return false;
    for (int k = 0; k < p->n; k++) {
        const struct db_val *v = &p->v[k];

        switch (v->type) {
        case 't':
            pp->v[k] = v->s;
            break;
        case 'i':
            (void)snprintf(pp->num[k], sizeof pp->num[k], "%" PRId64, v->i);
            pp->v[k] = pp->num[k];
            break;
        case 'B':
            pp->v[k] = v->i != 0 ? "true" : "false";
            break;
        case 'h':
            pp->v[k] = (const char *)v->h;
            pp->len[k] = 32;
            pp->fmt[k] = 1;
            break;
        default:
            return false;
        }
        pp->n++;
    }
    return true;
}

/*
 * Runs prepared statement id on c with the parameters in p. On success *res holds the result
 * (PGRES_COMMAND_OK or PGRES_TUPLES_OK; caller PQclears). When the first statement of an
 * acquisition fails because a pooled session went stale, it reconnects and tries once more:
 * that statement cannot have run (it is BEGIN or a read).
 */
static latch_rc
q_run(struct pg_store *q, struct db_conn *c, enum st_id id, PGresult **res,
      const struct pg_params *p)
{
    char name[16];
    latch_rc rc = LATCH_OK;

    *res = NULL;
    if (st_sql[id] == NULL)
        return LATCH_E_INTERNAL; /* not a statement of this dialect */
    (void)snprintf(name, sizeof name, "l%d", (int)id);
    for (int attempt = 0;; attempt++) {
        PGresult *r = NULL;
        ExecStatusType st;

        rc = conn_ensure(q, c);
        if (rc != LATCH_OK)
            break;
        if (!c->prepared[id]) {
            r = PQprepare(c->pg, name, st_sql[id], 0, NULL);
            if (PQresultStatus(r) != PGRES_COMMAND_OK) {
                rc = pg_fail(c->pg, r, "prepare");
                PQclear(r);
                goto failed;
            }
            PQclear(r);
            c->prepared[id] = true;
        }
        r = PQexecPrepared(c->pg, name, p->n, p->v, p->len, p->fmt, 0);
        st = PQresultStatus(r);
        if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
            c->nq++;
            *res = r;
            return LATCH_OK;
        }
        rc = pg_fail(c->pg, r, "exec");
        if (rc == LATCH_E_DB) {
            char sql[160];

            log_debug("store: statement failed", "sql=%s", log_quote(sql, sizeof sql, st_sql[id]));
        }
        PQclear(r);
    failed:
        if (rc == LATCH_E_UNAVAILABLE && c->nq == 0 && c->reused && attempt == 0) {
            conn_drop(c);
            c->reused = false;
            continue;
        }
        break;
    }
    c->nq++;
    return rc;
}

/* Rolls back an open transaction (no-op otherwise); a failure drops the session. */
static void
tx_rollback(struct db_conn *c)
{
    if (c == NULL || c->pg == NULL || PQstatus(c->pg) != CONNECTION_OK)
        return;
    if (PQtransactionStatus(c->pg) == PQTRANS_IDLE)
        return;
    {
        PGresult *r = PQexecParams(c->pg, "ROLLBACK", 0, NULL, NULL, NULL, NULL, 0);

        if (PQresultStatus(r) != PGRES_COMMAND_OK)
            conn_drop(c);
        PQclear(r);
    }
}

static char *
col_str(const PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col))
        return NULL;
    return xstrdup(PQgetvalue(r, row, col));
}

static int64_t
col_i64(const PGresult *r, int row, int col)
{
    if (PQgetisnull(r, row, col))
        return 0;
    return (int64_t)strtoll(PQgetvalue(r, row, col), NULL, 10);
}

static bool
col_bool(const PGresult *r, int row, int col)
{
    return !PQgetisnull(r, row, col) && PQgetvalue(r, row, col)[0] == 't';
}

/* A bytea column in text form ("\x" + hex) of exactly 32 bytes into h; false otherwise. */
static bool
col_hash(const PGresult *r, int row, int col, unsigned char h[32])
{
    const char *v;

    memset(h, 0, 32);
    if (PQgetisnull(r, row, col))
        return false;
    v = PQgetvalue(r, row, col);
    if (PQgetlength(r, row, col) != 66 || v[0] != '\\' || v[1] != 'x')
        return false;
    for (int i = 0; i < 32; i++) {
        int a = latch_hexval(v[2 + 2 * i]), b = latch_hexval(v[3 + 2 * i]);

        if (a < 0 || b < 0)
            return false;
        h[i] = (unsigned char)(a << 4 | b);
    }
    return true;
}

/* ---- the cursor: the whole result of the last statement (text format) ---- */

static void
pg_end(struct db_conn *c)
{
    if (c == NULL)
        return;
    PQclear(c->res);
    c->res = NULL;
    c->row = -1;
}

static latch_rc
pg_exec(struct db_conn *c, enum st_id id, const struct db_params *p)
{
    struct pg_params pp;

    pg_end(c);
    if (!pset(&pp, p))
        return LATCH_E_INTERNAL;
    return q_run(c->q, c, id, &c->res, &pp);
}

static latch_rc
pg_next(struct db_conn *c, bool *row)
{
    *row = false;
    if (c->res == NULL || c->row + 1 >= PQntuples(c->res))
        return LATCH_OK;
    c->row++;
    *row = true;
    return LATCH_OK;
}

static int64_t
pg_changes(struct db_conn *c)
{
    if (c->res == NULL)
        return 0;
    return strtoll(PQcmdTuples(c->res), NULL, 10);
}

static bool
pg_col_null(struct db_conn *c, int col)
{
    return PQgetisnull(c->res, c->row, col) != 0;
}

static int64_t
pg_col_i64(struct db_conn *c, int col)
{
    return col_i64(c->res, c->row, col);
}

static bool
pg_col_bool(struct db_conn *c, int col)
{
    return col_bool(c->res, c->row, col);
}

static const char *
pg_col_text(struct db_conn *c, int col)
{
    if (PQgetisnull(c->res, c->row, col))
        return NULL;
    return PQgetvalue(c->res, c->row, col);
}

static char *
pg_col_str(struct db_conn *c, int col)
{
    return col_str(c->res, c->row, col);
}

static bool
pg_col_hash(struct db_conn *c, int col, unsigned char h[32])
{
    return col_hash(c->res, c->row, col, h);
}

/* Runs a parameterless statement of this dialect (BEGIN, COMMIT). */
static latch_rc
q_run0(struct db_conn *c, enum st_id id)
{
    struct db_params p = {0};
    latch_rc rc = pg_exec(c, id, &p);

    pg_end(c);
    return rc;
}

static latch_rc
pg_begin(struct db_conn *c)
{
    return q_run0(c, ST_BEGIN);
}

static latch_rc
pg_commit(struct db_conn *c)
{
    return q_run0(c, ST_COMMIT);
}

static void
pg_rollback(struct db_conn *c)
{
    pg_end(c);
    tx_rollback(c);
}

static latch_rc
pg_acquire(void *db, struct db_conn **out)
{
    return conn_acquire(db, out);
}

static void
pg_release(struct db_conn *c)
{
    if (c == NULL)
        return;
    pg_end(c);
    conn_release(c->q, c);
}

/* A pooled connection with a live session, for the utility operations (migrate, import...). */
static latch_rc
acquire_live(struct pg_store *q, struct db_conn **out, struct latch_err *err)
{
    latch_rc rc = conn_acquire(q, out);

    if (rc == LATCH_OK)
        rc = conn_ensure(q, *out);
    if (rc != LATCH_OK)
        latch_err_set(err, "store: cannot open a postgres connection");
    return rc;
}

/* ---- open / close ---- */

static void
pg_close(void *impl)
{
    struct pg_store *q = impl;
    struct db_conn *c, *next;
    size_t closed = 0;

    if (q == NULL)
        return;
    for (c = q->idle; c != NULL; c = next) {
        next = c->next;
        conn_drop(c);
        free(c);
        closed++;
    }
    if (closed != q->nconns)
        log_warn("store: closed while connections were in use", "open=%zu closed=%zu", q->nconns,
                 closed);
    for (size_t i = 0; i < sizeof q->val / sizeof q->val[0]; i++)
        free(q->val[i]);
    pthread_cond_destroy(&q->cv);
    pthread_mutex_destroy(&q->mu);
    free(q);
}

static bool
is_local_host(const char *h)
{
    return h[0] == '\0' || h[0] == '/' || h[0] == '@' || strcmp(h, "localhost") == 0 ||
           strncmp(h, "127.", 4) == 0 || strcmp(h, "::1") == 0;
}

/* True if any host of a comma-separated list is remote (not a socket, not loopback). */
static bool
has_remote_host(const char *hosts)
{
    char one[256];
    const char *p = hosts;

    while (*p != '\0') {
        size_t n = strcspn(p, ",");

        if (n >= sizeof one)
            return true;
        memcpy(one, p, n);
        one[n] = '\0';
        if (!is_local_host(one))
            return true;
        p += n;
        if (*p == ',')
            p++;
    }
    return false;
}

static void
kw_add(struct pg_store *q, size_t *n, const char *k, const char *v)
{
    q->kw[*n] = k;
    q->val[*n] = xstrdup(v);
    (*n)++;
}

static latch_rc
pg_open(const char *target, void **impl_out, struct latch_err *err)
{
    struct pg_store *q = NULL;
    struct db_conn *c = NULL;
    PQconninfoOption *opts = NULL;
    char *perr = NULL;
    const char *host = NULL, *hostaddr = NULL;
    bool have_sslmode = false;
    pthread_condattr_t ca;
    size_t n = 0;
    latch_rc rc;

    *impl_out = NULL;
    if (!PQisthreadsafe()) {
        latch_err_set(err, "store: libpq is not thread-safe");
        return LATCH_E_INTERNAL;
    }
    /* Parse only to validate and inspect (host, sslmode); libpq does the real expansion. */
    opts = PQconninfoParse(target, &perr);
    if (opts == NULL) {
        latch_err_set(err, "store: invalid postgres url: %s",
                      perr != NULL ? perr : "out of memory");
        PQfreemem(perr);
        return LATCH_E_INVAL;
    }
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++) {
        if (o->val == NULL)
            continue;
        if (strcmp(o->keyword, "host") == 0)
            host = o->val;
        else if (strcmp(o->keyword, "hostaddr") == 0)
            hostaddr = o->val;
        else if (strcmp(o->keyword, "sslmode") == 0)
            have_sslmode = true;
    }

    q = xcalloc(1, sizeof *q);
    pthread_mutex_init(&q->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&q->cv, &ca);
    pthread_condattr_destroy(&ca);
    /*
     * Keywords are processed in order and the last one wins: defaults come first, then the
     * expanded URL (dbname with expand_dbname=1), so the URL may override every default.
     */
    kw_add(q, &n, "connect_timeout", STORE_PG_CONNECT_TIMEOUT_S);
    kw_add(q, &n, "application_name", "latch");
    kw_add(q, &n, "keepalives", "1");
    kw_add(q, &n, "keepalives_idle", "30");
    kw_add(q, &n, "keepalives_interval", "10");
    kw_add(q, &n, "keepalives_count", "3");
    /* Remote hosts: verify the server certificate unless the URL or PGSSLMODE says otherwise. */
    if (!have_sslmode && getenv("PGSSLMODE") == NULL &&
        ((host != NULL && has_remote_host(host)) || (host == NULL && hostaddr != NULL)))
        kw_add(q, &n, "sslmode", "verify-full");
    kw_add(q, &n, "dbname", target);
    q->kw[n] = NULL;
    q->val[n] = NULL;
    PQconninfoFree(opts);

    /* One session now, so that a bad URL or an unreachable server fails at startup. */
    c = xcalloc(1, sizeof *c);
    rc = session_open(q, &c->pg, err);
    if (rc != LATCH_OK) {
        free(c);
        goto out;
    }
    q->idle = c;
    q->nconns = 1;
    *impl_out = q;
    q = NULL;
out:
    pg_close(q);
    return rc;
}

/* ---- migrate ---- */

/* Reads max(schema_migrations.version), 0 when the table does not exist. */
static latch_rc
read_version(PGconn *pg, int *v)
{
    PGresult *r;
    latch_rc rc = LATCH_OK;

    *v = -1;
    r = PQexecParams(pg, "SELECT to_regclass('schema_migrations') IS NOT NULL", 0, NULL, NULL, NULL,
                     NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        rc = pg_fail(pg, r, "schema version");
        PQclear(r);
        return rc;
    }
    if (PQgetvalue(r, 0, 0)[0] != 't') {
        PQclear(r);
        *v = 0;
        return LATCH_OK;
    }
    PQclear(r);
    r = PQexecParams(pg, "SELECT COALESCE(max(version), 0) FROM schema_migrations", 0, NULL, NULL,
                     NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
        rc = pg_fail(pg, r, "schema version");
    else
        *v = (int)strtol(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return rc;
}

static latch_rc
pg_migrate(void *impl, struct latch_err *err)
{
    struct pg_store *q = impl;
    struct db_conn *c = NULL;
    bool locked = false;
    latch_rc rc;
    int cur = -1;

    rc = acquire_live(q, &c, err);
    if (rc != LATCH_OK)
        goto out;
    /*
     * Several nodes may start together: a session advisory lock serialises them, and the
     * losers find the work done. Released explicitly (or by the session ending).
     */
    rc = exec_plain(c->pg, "SELECT pg_advisory_lock(" STORE_PG_MIGRATE_LOCK ")", "migrate lock",
                    err);
    if (rc != LATCH_OK)
        goto out;
    locked = true;
    rc = exec_plain(c->pg, "BEGIN", "migrate", err);
    if (rc == LATCH_OK)
        rc = exec_plain(c->pg, "SET LOCAL statement_timeout = 0", "migrate", err);
    if (rc == LATCH_OK)
        rc = exec_plain(c->pg,
                        "CREATE TABLE IF NOT EXISTS schema_migrations ("
                        "  version integer PRIMARY KEY,"
                        "  applied_at bigint NOT NULL)",
                        "migrate", err);
    if (rc != LATCH_OK)
        goto out;
    rc = read_version(c->pg, &cur);
    if (rc != LATCH_OK) {
        latch_err_set(err, "store: cannot read schema version");
        goto out;
    }
    if (cur > STORE_PG_SCHEMA_VERSION) {
        latch_err_set(err,
                      "store: database schema version %d is newer than this binary knows (%d); "
                      "upgrade latch",
                      cur, STORE_PG_SCHEMA_VERSION);
        rc = LATCH_E_INVAL;
        goto out;
    }
    for (size_t i = 0; i < sizeof store_pg_migrations / sizeof store_pg_migrations[0]; i++) {
        if (store_pg_migrations[i].version <= cur)
            continue;
        rc = exec_plain(c->pg, store_pg_migrations[i].sql, "migrate", err);
        if (rc != LATCH_OK)
            goto out;
    }
    for (int v = cur + 1; v <= STORE_PG_SCHEMA_VERSION; v++) {
        char vs[16], ts[24];
        const char *pv[2] = {vs, ts};
        PGresult *r;

        (void)snprintf(vs, sizeof vs, "%d", v);
        (void)snprintf(ts, sizeof ts, "%" PRId64, latch_now_ms());
        r = PQexecParams(c->pg,
                         "INSERT INTO schema_migrations(version, applied_at) "
                         "VALUES ($1::integer, $2::bigint)",
                         2, NULL, pv, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            latch_err_set(err, "store: migrate: cannot record version %d", v);
            rc = pg_fail(c->pg, r, "migrate");
        }
        PQclear(r);
        if (rc != LATCH_OK)
            goto out;
    }
    rc = exec_plain(c->pg, "COMMIT", "migrate commit", err);
    if (rc == LATCH_OK && cur < STORE_PG_SCHEMA_VERSION)
        log_info("store: schema migrated", "backend=postgres from=%d to=%d", cur,
                 STORE_PG_SCHEMA_VERSION);
out:
    if (c != NULL && c->pg != NULL) {
        struct latch_err ignored;

        tx_rollback(c);
        if (locked && c->pg != NULL &&
            exec_plain(c->pg, "SELECT pg_advisory_unlock(" STORE_PG_MIGRATE_LOCK ")",
                       "migrate unlock", &ignored) != LATCH_OK)
            conn_drop(c); /* ending the session releases the lock */
    }
    conn_release(q, c);
    return rc;
}

static int
pg_schema_version(void *impl)
{
    struct pg_store *q = impl;
    struct db_conn *c = NULL;
    int v = -1;

    if (conn_acquire(q, &c) != LATCH_OK)
        return -1;
    if (conn_ensure(q, c) == LATCH_OK && read_version(c->pg, &v) != LATCH_OK)
        v = -1;
    conn_release(q, c);
    return v;
}

/* ---- bulk touch ---- */

/* One touch_many statement in its own transaction. */
static latch_rc
touch_many_once(struct pg_store *q, const char *arr, int64_t last_fetched_at)
{
    struct db_params p = {2, {{'t', 0, arr, NULL}, {'i', last_fetched_at, NULL, NULL}}};
    struct db_conn *c = NULL;
    latch_rc rc;

    rc = conn_acquire(q, &c);
    if (rc != LATCH_OK)
        return rc;
    rc = pg_begin(c);
    if (rc == LATCH_OK)
        rc = pg_exec(c, ST_CONN_TOUCH_MANY, &p);
    pg_end(c);
    if (rc == LATCH_OK)
        rc = pg_commit(c);
    if (rc != LATCH_OK)
        pg_rollback(c);
    pg_release(c);
    return rc;
}

/* One statement with the ids as an array literal ({1,2,3}: digits and commas only). */
static latch_rc
pg_touch_many(void *db, const int64_t *ids, size_t n, int64_t last_fetched_at)
{
    struct buf arr;
    char num[24];
    latch_rc rc;

    buf_init(&arr, n * sizeof num + 2);
    (void)buf_append(&arr, "{", 1);
    for (size_t i = 0; i < n; i++) {
        int len = snprintf(num, sizeof num, "%s%lld", i ? "," : "", (long long)ids[i]);

        (void)buf_append(&arr, num, (size_t)len);
    }
    (void)buf_append(&arr, "}", 1);
    /*
     * NOT_FOUND is a foreign-key failure: a connection deleted after the statement's snapshot.
     * The next statement's snapshot no longer sees it, so a retry skips it.
     */
    rc = LATCH_E_NOT_FOUND;
    for (int attempt = 0; attempt < STORE_PG_TOUCH_TRIES && rc == LATCH_E_NOT_FOUND; attempt++)
        rc = touch_many_once(db, arr.data, last_fetched_at);
    buf_free(&arr);
    return rc;
}

/* ---- integrity ---- */

static latch_rc
pg_integrity_check(void *impl, struct latch_err *err)
{
    struct pg_store *q = impl;
    struct db_conn *c = NULL;
    latch_rc rc;
    int v = -1;

    rc = acquire_live(q, &c, err);
    if (rc != LATCH_OK)
        goto out;
    rc = exec_plain(c->pg, "SELECT 1", "integrity_check", err);
    if (rc != LATCH_OK)
        goto out;
    rc = read_version(c->pg, &v);
    if (rc != LATCH_OK) {
        latch_err_set(err, "store: cannot read schema version");
        goto out;
    }
    if (v != STORE_PG_SCHEMA_VERSION) {
        latch_err_set(err, "store: schema version is %d, this binary expects %d", v,
                      STORE_PG_SCHEMA_VERSION);
        rc = LATCH_E_DB;
    }
out:
    conn_release(q, c);
    return rc;
}

/* ---- raw rows (export / import) ---- */

static latch_rc
pg_raw_scan(void *impl, const struct store_table *t, store_raw_scan_fn fn, void *ud)
{
    struct pg_store *q = impl;
    struct db_conn *c = NULL;
    struct buf sql;
    PGresult *r = NULL;
    char *last = NULL;
    latch_rc rc;
    const bool by_id = t->cols[0].type == STORE_COL_INT;

    /* The SQL holds identifiers from store_tables only; the cursor value is a parameter. */
    buf_init(&sql, PG_MAX_RAW_SQL);
    rc = buf_puts(&sql, "SELECT ");
    if (rc == LATCH_OK)
        rc = store_table_cols(&sql, t, FETCHED_EXPR("connections"));
    if (rc == LATCH_OK)
        rc = buf_printf(&sql,
                        by_id ? " FROM %s WHERE %s > $1::bigint ORDER BY %s LIMIT %d"
                              : " FROM %s WHERE %s COLLATE \"C\" > $1::text ORDER BY %s COLLATE "
                                "\"C\" LIMIT %d",
                        t->name, t->cols[0].name, t->cols[0].name, STORE_RAW_BATCH);
    if (rc != LATCH_OK)
        goto out;
    rc = conn_acquire(q, &c);
    if (rc != LATCH_OK)
        goto out;
    last = xstrdup(by_id ? "0" : "");
    for (;;) {
        const char *pv[1] = {last};
        int rows;

        rc = conn_ensure(q, c);
        if (rc != LATCH_OK)
            break;
        r = PQexecParams(c->pg, sql.data, 1, NULL, pv, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            rc = pg_fail(c->pg, r, "raw scan");
            break;
        }
        rows = PQntuples(r);
        for (int i = 0; i < rows && rc == LATCH_OK; i++) {
            json_t *row = json_object();

            for (size_t k = 0; k < t->ncols && rc == LATCH_OK; k++) {
                struct store_val v;

                memset(&v, 0, sizeof v);
                v.null = PQgetisnull(r, i, (int)k) != 0;
                if (!v.null) {
                    switch (t->cols[k].type) {
                    case STORE_COL_INT:
                        v.i = col_i64(r, i, (int)k);
                        break;
                    case STORE_COL_BOOL:
                        v.i = col_bool(r, i, (int)k) ? 1 : 0;
                        break;
                    case STORE_COL_TEXT:
                        v.s = PQgetvalue(r, i, (int)k);
                        break;
                    case STORE_COL_HASH:
                        if (!col_hash(r, i, (int)k, v.h))
                            rc = LATCH_E_DB;
                        break;
                    }
                }
                if (rc == LATCH_OK)
                    rc = store_val_put(&t->cols[k], row, &v);
            }
            if (rc == LATCH_OK)
                rc = fn(t, row, ud);
            json_decref(row);
        }
        if (rc == LATCH_OK && rows > 0) {
            free(last);
            last = xstrdup(PQgetvalue(r, rows - 1, 0));
        }
        PQclear(r);
        r = NULL;
        if (rc != LATCH_OK || rows < STORE_RAW_BATCH)
            break;
    }
out:
    PQclear(r);
    free(last);
    conn_release(q, c);
    buf_free(&sql);
    return rc;
}

/* Inserts one raw row of t with the prepared INSERT named ins. */
static latch_rc
raw_insert_row(PGconn *pg, const struct store_table *t, const char *ins, json_t *row)
{
    const char *vals[PG_MAX_RAW_COLS];
    int lens[PG_MAX_RAW_COLS], fmts[PG_MAX_RAW_COLS];
    char nums[PG_MAX_RAW_COLS][24];
    struct store_val v[PG_MAX_RAW_COLS];
    PGresult *r;
    latch_rc rc = LATCH_OK;

    if (!json_is_object(row) || t->ncols > PG_MAX_RAW_COLS)
        return LATCH_E_INVAL;
    for (size_t k = 0; k < t->ncols; k++) {
        rc = store_val_get(&t->cols[k], row, &v[k]);
        if (rc != LATCH_OK)
            return rc;
        lens[k] = 0;
        fmts[k] = 0;
        if (v[k].null) {
            vals[k] = NULL;
            continue;
        }
        switch (t->cols[k].type) {
        case STORE_COL_INT:
            (void)snprintf(nums[k], sizeof nums[k], "%" PRId64, v[k].i);
            vals[k] = nums[k];
            break;
        case STORE_COL_BOOL:
            vals[k] = v[k].i != 0 ? "true" : "false";
            break;
        case STORE_COL_TEXT:
            vals[k] = v[k].s;
            break;
        case STORE_COL_HASH:
            vals[k] = (const char *)v[k].h;
            lens[k] = 32;
            fmts[k] = 1;
            break;
        }
    }
    r = PQexecPrepared(pg, ins, (int)t->ncols, vals, lens, fmts, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        rc = pg_fail(pg, r, "raw import");
    PQclear(r);
    return rc;
}

static latch_rc
pg_raw_import(void *impl, store_raw_next_fn next, void *ud, struct latch_err *err)
{
    struct pg_store *q = impl;
    struct db_conn *c = NULL;
    struct buf sql;
    PGresult *r = NULL;
    bool prepared[32];
    latch_rc rc;

    memset(prepared, 0, sizeof prepared);
    buf_init(&sql, PG_MAX_RAW_SQL);
    rc = acquire_live(q, &c, err);
    if (rc != LATCH_OK)
        goto out;
    /* Prepared names below are per import; start from a clean session (no stale cache). */
    rc = exec_plain(c->pg, "BEGIN", "import", err);
    if (rc != LATCH_OK)
        goto out;
    rc = exec_plain(c->pg, "SET LOCAL statement_timeout = 0", "import", err);
    if (rc != LATCH_OK)
        goto out;
    r = PQexecParams(c->pg,
                     "SELECT (SELECT count(*) FROM meta) + (SELECT count(*) FROM environments)", 0,
                     NULL, NULL, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        latch_err_set(err, "store: import: cannot inspect the target database");
        rc = pg_fail(c->pg, r, "import");
        goto out;
    }
    if (strcmp(PQgetvalue(r, 0, 0), "0") != 0) {
        latch_err_set(err, "store: import needs an empty database (it already holds data)");
        rc = LATCH_E_CONFLICT;
        goto out;
    }
    PQclear(r);
    r = NULL;
    for (size_t nrows = 0;; nrows++) {
        const struct store_table *t = NULL;
        json_t *row = NULL;
        size_t ti;
        char name[32];

        rc = next(&t, &row, ud);
        if (rc != LATCH_OK) {
            if (err->msg[0] == '\0')
                latch_err_set(err, "store: import: bad input near row %zu", nrows + 1);
            goto out;
        }
        if (row == NULL)
            break;
        ti = (size_t)(t - store_tables);
        if (ti >= store_ntables || ti >= sizeof prepared) {
            rc = LATCH_E_INVAL;
            goto out;
        }
        (void)snprintf(name, sizeof name, "imp%zu", ti);
        if (!prepared[ti]) {
            buf_reset(&sql);
            rc = buf_printf(&sql, "INSERT INTO %s (", t->name);
            if (rc == LATCH_OK)
                rc = store_table_cols(&sql, t, NULL);
            if (rc == LATCH_OK)
                rc = buf_puts(&sql, ") OVERRIDING SYSTEM VALUE VALUES (");
            for (size_t k = 0; k < t->ncols && rc == LATCH_OK; k++)
                rc = buf_printf(&sql, "%s$%zu", k ? ", " : "", k + 1);
            if (rc == LATCH_OK)
                rc = buf_puts(&sql, ")");
            if (rc != LATCH_OK)
                goto out;
            r = PQprepare(c->pg, name, sql.data, 0, NULL);
            if (PQresultStatus(r) != PGRES_COMMAND_OK) {
                latch_err_set(err, "store: import: cannot prepare insert into %s", t->name);
                rc = pg_fail(c->pg, r, "import");
                goto out;
            }
            PQclear(r);
            r = NULL;
            prepared[ti] = true;
        }
        rc = raw_insert_row(c->pg, t, name, row);
        if (rc != LATCH_OK) {
            latch_err_set(err, "store: import: row %zu (table %s) refused: %s", nrows + 1, t->name,
                          latch_strerror(rc));
            goto out;
        }
    }
    /* Identity columns do not move on explicit ids: continue after the highest one. */
    for (size_t i = 0; i < store_ntables; i++) {
        const struct store_table *t = &store_tables[i];

        if (!t->has_id)
            continue;
        buf_reset(&sql);
        rc = buf_printf(&sql,
                        "SELECT setval(pg_get_serial_sequence('%s', 'id'), "
                        "COALESCE((SELECT max(id) FROM %s), 0) + 1, false)",
                        t->name, t->name);
        if (rc == LATCH_OK)
            rc = exec_plain(c->pg, sql.data, "import sequences", err);
        if (rc != LATCH_OK)
            goto out;
    }
    rc = exec_plain(c->pg, "COMMIT", "import commit", err);
out:
    PQclear(r);
    if (c != NULL && c->pg != NULL) {
        tx_rollback(c);
        /* The import's prepared statements are not in c->prepared: end the session cleanly. */
        conn_drop(c);
    }
    conn_release(q, c);
    buf_free(&sql);
    return rc;
}

const struct dialect store_pg_dialect = {
    .name = "postgres",
    .open = pg_open,
    .close = pg_close,
    .migrate = pg_migrate,
    .schema_version = pg_schema_version,
    .integrity_check = pg_integrity_check,
    .touch_many = pg_touch_many,
    .raw_scan = pg_raw_scan,
    .raw_import = pg_raw_import,
    .acquire = pg_acquire,
    .release = pg_release,
    .begin = pg_begin,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .exec = pg_exec,
    .next = pg_next,
    .changes = pg_changes,
    .end = pg_end,
    .col_null = pg_col_null,
    .col_i64 = pg_col_i64,
    .col_bool = pg_col_bool,
    .col_text = pg_col_text,
    .col_str = pg_col_str,
    .col_hash = pg_col_hash,
};
