/*
 * store_pg.c - the PostgreSQL backend of store.h (see docs/internals/store_pg.md).
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
 */
#include "store/store_backend.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <libpq-fe.h>

#include "core/latch_limits.h"
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
/* Rows per batch for reseal and raw scans. */
#define STORE_RESEAL_BATCH 100
#define STORE_RAW_BATCH 500
/* Bounds on list filters (integration keys, tag pairs) bound as one JSON array each. */
#define STORE_MAX_FILTER_KEYS 100
#define STORE_MAX_FILTER_TAGS 64
/* Parameters of one statement. */
#define PG_MAX_PARAMS 16
/* Columns of one raw (export/import) row: the widest table, connections, has 25. */
#define PG_MAX_RAW_COLS 32
/* Longest dynamic SQL text (raw import/scan; identifiers from store_tables only). */
#define PG_MAX_RAW_SQL 2048

/* ---- statements ---- */

enum st_id {
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
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
    ST_CONN_TOUCH_MANY,
    ST_CONN_SET_PROVIDER,
    ST_CONN_EXISTS,
    ST_CONN_LEASE,
    ST_CONN_RELEASE,
    ST_CONN_DONE,
    ST_CONN_FAILED,
    ST_CONN_DUE,
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
    ST_RS_CONN_SCAN,
    ST_RS_CONN_CAS,
    ST_RS_ENV_SCAN,
    ST_RS_ENV_CAS,
    ST_RS_META_SCAN,
    ST_RS_META_CAS,
    ST__COUNT
};

#define ENV_COLS                                                                                   \
    "id, name, webhook_url, webhook_url_secondary, webhook_key_sealed, on_auth_creation, "         \
    "on_auth_refresh_error, created_at"
#define INT_COLS                                                                                   \
    "id, env_id, unique_key, provider, display_name, oauth_scopes, forward_webhooks, "             \
    "custom_json, created_at, updated_at"
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
/* CRED is the credentials column expression: the column itself, or NULL for lists. */
#define CONN_COLS(CRED)                                                                            \
    "c.id, c.env_id, c.uid, c.connection_id, c.provider_config_key, c.provider, " CRED ", "        \
    "c.connection_config_json, c.metadata_json, c.tags_json, c.end_user_json, "                    \
    "c.webhook_url_override, c.expires_at, c.created_at, c.updated_at, " C_FETCHED ", "            \
    "c.last_refresh_success, c.last_refresh_failure, c.next_refresh_at, c.refresh_attempts, "      \
    "c.needs_reauth, c.auth_error_json, c.version"
#define SESS_COLS                                                                                  \
    "id, env_id, token_hash, end_user_json, organization_json, allowed_integrations_json, "        \
    "config_defaults_json, tags_json, webhook_url_override, connection_row_id, expires_at, "       \
    "attempts, created_at"
/* webhook_url_override: NULL leaves it, '' clears it, anything else sets it (parameter P). */
#define OVERRIDE_EXPR(P)                                                                           \
    "CASE WHEN " P " IS NULL THEN webhook_url_override WHEN " P " = '' THEN NULL ELSE " P " END"
/* Case-insensitive substring test of a text expression against $3. */
#define SEARCH_IN(E) "strpos(lower(" E "), lower($3::text)) > 0"

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
    [ST_KEY_LOOKUP] = "SELECT env_id FROM api_keys WHERE key_hash = $1::bytea AND revoked_at = 0",
    [ST_KEY_REVOKE] = "UPDATE api_keys SET revoked_at = $2::bigint "
                      "WHERE env_id = $1::bigint AND revoked_at = 0",
    [ST_KEY_COUNT] = "SELECT count(*) FROM api_keys WHERE env_id = $1::bigint AND revoked_at = 0",
    [ST_INT_INSERT] = "INSERT INTO integrations(env_id, unique_key, provider, display_name, "
                      "oauth_scopes, forward_webhooks, custom_json, created_at, updated_at) "
                      "VALUES ($1::bigint, $2::text, $3::text, $4::text, $5::text, $6::boolean, "
                      "$7::text, $8::bigint, $8::bigint) RETURNING id",
    [ST_INT_GET] = "SELECT " INT_COLS " FROM integrations "
                   "WHERE env_id = $1::bigint AND unique_key = $2::text",
    [ST_INT_LIST] = "SELECT " INT_COLS " FROM integrations WHERE env_id = $1::bigint ORDER BY id",
    [ST_INT_UPDATE] = "UPDATE integrations SET unique_key = $3::text, provider = $4::text, "
                      "display_name = $5::text, oauth_scopes = $6::text, "
                      "forward_webhooks = $7::boolean, custom_json = $8::text, "
                      "updated_at = $9::bigint WHERE id = $1::bigint AND env_id = $2::bigint",
    [ST_INT_DELETE] =
        "DELETE FROM integrations WHERE env_id = $1::bigint AND unique_key = $2::text",
    /* FOR KEY SHARE: the integration cannot be deleted or renamed before the insert
       commits. */
    [ST_INT_PROVIDER] = "SELECT provider FROM integrations "
                        "WHERE env_id = $1::bigint AND unique_key = $2::text FOR KEY SHARE",
    /* Insert unless the key exists (then no row comes back and the caller replaces). */
    [ST_CONN_INSERT] =
        "INSERT INTO connections(env_id, uid, connection_id, provider_config_key, "
        "provider, "
        "credentials_sealed, connection_config_json, metadata_json, tags_json, "
        "end_user_json, "
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
        "end_user_json = COALESCE($8::text, end_user_json), "
        "webhook_url_override = " OVERRIDE_EXPR(
            "$9::text") ", next_refresh_at = 0, "
                        "refresh_attempts = 0, needs_reauth = false, auth_error_json = "
                        "NULL, "
                        "version = version + 1, updated_at = $10::bigint WHERE id = "
                        "$1::bigint",
    [ST_CONN_GET] = "SELECT " CONN_COLS("c.credentials_sealed") " FROM connections c "
                                                                "WHERE c.env_id = $1::bigint AND "
                                                                "c.provider_config_key = $2::text "
                                                                "AND c.connection_id = $3::text",
    [ST_CONN_GET_ENV_ID] = "SELECT " CONN_COLS(
        "c.credentials_sealed") " FROM connections c "
                                "WHERE c.env_id = $1::bigint AND c.id = $2::bigint",
    [ST_CONN_GET_ROW] = "SELECT " CONN_COLS("c.credentials_sealed") " FROM connections c "
                                                                    "WHERE c.id = $1::bigint",
    /*
     * $1 env, $2 connection_id, $3 search, $4 end user id, $5 end user org id,
     * $6 JSON array of integration keys, $7 JSON array of [key, value] tag pairs (all must
     * match, as JSON strings), $8 limit, $9 offset. A NULL parameter disables its filter.
     */
    [ST_CONN_LIST] = "SELECT " CONN_COLS(
        "NULL") " FROM connections c WHERE c.env_id = $1::bigint "
                "AND ($2::text IS NULL OR c.connection_id = $2::text) "
                "AND ($3::text IS NULL OR " SEARCH_IN(
                    "c.connection_id") " "
                                       "  OR " SEARCH_IN(
                                           "c.end_user_json::jsonb ->> "
                                           "'id'") " "
                                                   "  OR " SEARCH_IN(
                                                       "c.end_user_json::"
                                                       "jsonb ->> "
                                                       "'email'") " "
                                                                  "  "
                                                                  "OR"
                                                                  " " SEARCH_IN(
                                                                      "c."
                                                                      "en"
                                                                      "d_"
                                                                      "us"
                                                                      "er"
                                                                      "_j"
                                                                      "so"
                                                                      "n:"
                                                                      ":j"
                                                                      "so"
                                                                      "nb"
                                                                      " -"
                                                                      ">>"
                                                                      " '"
                                                                      "di"
                                                                      "sp"
                                                                      "la"
                                                                      "y_"
                                                                      "na"
                                                                      "me"
                                                                      "'") " "
                                                                           "  OR " SEARCH_IN(
                                                                               "c.end_user_json::"
                                                                               "jsonb #>> "
                                                                               "'{organization,id}"
                                                                               "'") ") "
                                                                                    "AND ($4::text "
                                                                                    "IS NULL OR "
                                                                                    "(c.end_user_"
                                                                                    "json::jsonb "
                                                                                    "->> 'id') = "
                                                                                    "$4::text) "
                                                                                    "AND ($5::text "
                                                                                    "IS NULL OR "
                                                                                    "(c.end_user_"
                                                                                    "json::jsonb "
                                                                                    "#>> "
                                                                                    "'{"
                                                                                    "organization,"
                                                                                    "id}') = "
                                                                                    "$5::text) "
                                                                                    "AND "
                                                                                    "($6::jsonb IS "
                                                                                    "NULL OR "
                                                                                    "c.provider_"
                                                                                    "config_key = "
                                                                                    "  ANY "
                                                                                    "(ARRAY(SELECT "
                                                                                    "jsonb_array_"
                                                                                    "elements_text("
                                                                                    "$6::jsonb)))) "
                                                                                    "AND "
                                                                                    "($7::jsonb IS "
                                                                                    "NULL OR NOT "
                                                                                    "EXISTS "
                                                                                    "(SELECT 1 "
                                                                                    "FROM "
                                                                                    "jsonb_array_"
                                                                                    "elements($7::"
                                                                                    "jsonb) f "
                                                                                    "  WHERE NOT "
                                                                                    "(c.tags_json::"
                                                                                    "jsonb @> "
                                                                                    "jsonb_build_"
                                                                                    "object(f ->> "
                                                                                    "0, f ->> "
                                                                                    "1)))) "
                                                                                    "ORDER BY "
                                                                                    "c.created_at "
                                                                                    "DESC, c.id "
                                                                                    "DESC LIMIT "
                                                                                    "$8::bigint "
                                                                                    "OFFSET "
                                                                                    "$9::bigint",
    [ST_CONN_DELETE] = "DELETE FROM connections WHERE env_id = $1::bigint "
                       "AND provider_config_key = $2::text AND connection_id = $3::text",
    [ST_CONN_SET_META] = "UPDATE connections SET metadata_json = $2::text, updated_at = $3::bigint "
                         "WHERE id = $1::bigint",
    [ST_CONN_PATCH] = "UPDATE connections SET tags_json = COALESCE($2::text, tags_json), "
                      "end_user_json = COALESCE($3::text, end_user_json), "
                      "webhook_url_override = " OVERRIDE_EXPR(
                          "$4::text") ", "
                                      "updated_at = $5::bigint WHERE id = $1::bigint",
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
                    "RETURNING id, env_id, url, body, attempts, next_attempt_at, created_at",
    [ST_WH_DONE] = "DELETE FROM webhook_outbox WHERE id = $1::bigint",
    [ST_WH_RETRY] = "UPDATE webhook_outbox SET attempts = attempts + 1, last_error = $3::text, "
                    "state = CASE WHEN $4::boolean THEN 'dead' ELSE 'pending' END, "
                    "next_attempt_at = CASE WHEN $4::boolean THEN next_attempt_at "
                    "ELSE $2::bigint END, claim_owner = NULL, claim_until = 0 "
                    "WHERE id = $1::bigint",
    [ST_WH_PENDING] = "SELECT count(*) FROM webhook_outbox WHERE state = 'pending'",
    [ST_RS_CONN_SCAN] = "SELECT id, uid, credentials_sealed FROM connections WHERE id > $1::bigint "
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
};

/* ---- connection pool ---- */

struct pg_conn {
    PGconn *pg; /* NULL: not connected (reconnects on next use) */
    bool prepared[ST__COUNT];
    bool reused; /* connected before this acquisition (may be stale) */
    unsigned nq; /* statements sent during this acquisition */
    struct pg_conn *next;
};

struct pg_store {
    /* Connection parameters for PQconnectdbParams (expand_dbname=1): owned strings. */
    const char *kw[16];
    char *val[16];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct pg_conn *idle; /* LIFO of connections not in use */
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
conn_drop(struct pg_conn *c)
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
conn_ensure(struct pg_store *q, struct pg_conn *c)
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
conn_acquire(struct pg_store *q, struct pg_conn **out)
{
    struct pg_conn *c = NULL;
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
    *out = c;
    return LATCH_OK;
}

static void
conn_release(struct pg_store *q, struct pg_conn *c)
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
 * Fills p from fmt: 't' const char * (NULL = SQL NULL), 'i' int64_t, 'B' int as boolean,
 * 'h' const unsigned char * of 32 bytes (binary bytea). Text values are borrowed.
 */
static bool
pset(struct pg_params *p, const char *fmt, va_list ap)
{
    memset(p, 0, sizeof *p);
    for (const char *f = fmt; *f != '\0'; f++) {
        int k = p->n;

        if (k >= PG_MAX_PARAMS)
            return false;
        switch (*f) {
        case 't':
            p->v[k] = va_arg(ap, const char *);
            break;
        case 'i':
            (void)snprintf(p->num[k], sizeof p->num[k], "%" PRId64, va_arg(ap, int64_t));
            p->v[k] = p->num[k];
            break;
        case 'B':
            p->v[k] = va_arg(ap, int) != 0 ? "true" : "false";
            break;
        case 'h':
            p->v[k] = (const char *)va_arg(ap, const unsigned char *);
            p->len[k] = 32;
            p->fmt[k] = 1;
            break;
        default:
            return false;
        }
        p->n++;
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
q_run(struct pg_store *q, struct pg_conn *c, enum st_id id, PGresult **res,
      const struct pg_params *p)
{
    char name[16];
    latch_rc rc = LATCH_OK;

    *res = NULL;
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

static latch_rc
q_exec(struct pg_store *q, struct pg_conn *c, enum st_id id, PGresult **res, const char *fmt, ...)
{
    struct pg_params p;
    va_list ap;
    bool ok;

    va_start(ap, fmt);
    ok = pset(&p, fmt, ap);
    va_end(ap);
    if (!ok) {
        *res = NULL;
        return LATCH_E_INTERNAL;
    }
    return q_run(q, c, id, res, &p);
}

/* Runs a statement whose rows are not needed; *changes (may be NULL) gets the row count. */
static latch_rc
q_cmd(struct pg_store *q, struct pg_conn *c, enum st_id id, int64_t *changes, const char *fmt, ...)
{
    struct pg_params p;
    PGresult *r = NULL;
    va_list ap;
    latch_rc rc;
    bool ok;

    va_start(ap, fmt);
    ok = pset(&p, fmt, ap);
    va_end(ap);
    if (!ok)
        return LATCH_E_INTERNAL;
    rc = q_run(q, c, id, &r, &p);
    if (rc == LATCH_OK && changes != NULL)
        *changes = strtoll(PQcmdTuples(r), NULL, 10);
    PQclear(r);
    return rc;
}

static latch_rc
tx_begin(struct pg_store *q, struct pg_conn *c)
{
    return q_cmd(q, c, ST_BEGIN, NULL, "");
}

static latch_rc
tx_commit(struct pg_store *q, struct pg_conn *c)
{
    return q_cmd(q, c, ST_COMMIT, NULL, "");
}

/* Rolls back an open transaction (no-op otherwise); a failure drops the session. */
static void
tx_rollback(struct pg_store *q, struct pg_conn *c)
{
    (void)q;
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

/*
 * One statement on a pooled connection: reads run alone; writes (write = true) run in
 * BEGIN ... COMMIT. *res (may be NULL) gets the result, *changes the affected row count.
 */
static latch_rc
run1(struct pg_store *q, bool write, enum st_id id, PGresult **res, int64_t *changes,
     const char *fmt, ...)
{
    struct pg_conn *c = NULL;
    struct pg_params p;
    PGresult *r = NULL;
    va_list ap;
    latch_rc rc;
    bool ok;

    if (res != NULL)
        *res = NULL;
    if (changes != NULL)
        *changes = 0;
    va_start(ap, fmt);
    ok = pset(&p, fmt, ap);
    va_end(ap);
    if (!ok)
        return LATCH_E_INTERNAL;
    rc = conn_acquire(q, &c);
    if (rc != LATCH_OK)
        return rc;
    if (write)
        rc = tx_begin(q, c);
    if (rc == LATCH_OK)
        rc = q_run(q, c, id, &r, &p);
    if (rc == LATCH_OK && write)
        rc = tx_commit(q, c);
    tx_rollback(q, c);
    conn_release(q, c);
    if (rc != LATCH_OK) {
        PQclear(r);
        return rc;
    }
    if (changes != NULL)
        *changes = strtoll(PQcmdTuples(r), NULL, 10);
    if (res != NULL)
        *res = r;
    else
        PQclear(r);
    return LATCH_OK;
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

/* True if s is NULL or well-formed JSON (same check as the SQLite backend). */
static bool
json_ok(const char *s)
{
    json_t *j;

    if (s == NULL)
        return true;
    j = json_loads(s, JSON_DECODE_ANY, NULL);
    if (j == NULL)
        return false;
    json_decref(j);
    return true;
}

/* ---- open / close ---- */

static void
pg_close(void *impl)
{
    struct pg_store *q = impl;
    struct pg_conn *c, *next;
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
    struct pg_conn *c = NULL;
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
    struct pg_conn *c = NULL;
    bool locked = false;
    latch_rc rc;
    int cur = -1;

    rc = conn_acquire(q, &c);
    if (rc == LATCH_OK)
        rc = conn_ensure(q, c);
    if (rc != LATCH_OK) {
        latch_err_set(err, "store: cannot open a postgres connection");
        goto out;
    }
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

        tx_rollback(q, c);
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
    struct pg_conn *c = NULL;
    int v = -1;

    if (conn_acquire(q, &c) != LATCH_OK)
        return -1;
    if (conn_ensure(q, c) == LATCH_OK && read_version(c->pg, &v) != LATCH_OK)
        v = -1;
    conn_release(q, c);
    return v;
}

/* ---- meta ---- */

static latch_rc
pg_meta_get(void *impl, const char *key, char **value_out)
{
    PGresult *r = NULL;
    latch_rc rc;

    *value_out = NULL;
    if (key == NULL)
        return LATCH_E_INVAL;
    rc = run1(impl, false, ST_META_GET, &r, NULL, "t", key);
    if (rc == LATCH_OK && PQntuples(r) == 0)
        rc = LATCH_E_NOT_FOUND;
    if (rc == LATCH_OK)
        *value_out = col_str(r, 0, 0);
    PQclear(r);
    return rc;
}

static latch_rc
pg_meta_set(void *impl, const char *key, const char *value)
{
    if (key == NULL || value == NULL)
        return LATCH_E_INVAL;
    return run1(impl, true, ST_META_SET, NULL, NULL, "tt", key, value);
}

static latch_rc
pg_meta_add(void *impl, const char *key, const char *value)
{
    if (key == NULL || value == NULL)
        return LATCH_E_INVAL;
    return run1(impl, true, ST_META_ADD, NULL, NULL, "tt", key, value);
}

/* ---- environments ---- */

static void
env_read(const PGresult *r, int i, struct store_env *e)
{
    memset(e, 0, sizeof *e);
    e->id = col_i64(r, i, 0);
    e->name = col_str(r, i, 1);
    e->webhook_url = col_str(r, i, 2);
    e->webhook_url_secondary = col_str(r, i, 3);
    e->webhook_key_sealed = col_str(r, i, 4);
    e->on_auth_creation = col_bool(r, i, 5);
    e->on_auth_refresh_error = col_bool(r, i, 6);
    e->created_at = col_i64(r, i, 7);
}

static latch_rc
pg_env_create(void *impl, const char *name, struct store_env *out)
{
    PGresult *r = NULL;
    latch_rc rc;

    if (out != NULL)
        memset(out, 0, sizeof *out);
    if (name == NULL || name[0] == '\0')
        return LATCH_E_INVAL;
    rc = run1(impl, true, ST_ENV_INSERT, &r, NULL, "ti", name, latch_now_ms());
    if (rc == LATCH_OK && PQntuples(r) != 1)
        rc = LATCH_E_DB;
    if (rc == LATCH_OK && out != NULL)
        env_read(r, 0, out);
    PQclear(r);
    return rc;
}

static latch_rc
pg_env_get(void *impl, int64_t id, struct store_env *out)
{
    PGresult *r = NULL;
    latch_rc rc;

    memset(out, 0, sizeof *out);
    rc = run1(impl, false, ST_ENV_GET, &r, NULL, "i", id);
    if (rc == LATCH_OK && PQntuples(r) == 0)
        rc = LATCH_E_NOT_FOUND;
    if (rc == LATCH_OK)
        env_read(r, 0, out);
    PQclear(r);
    return rc;
}

static latch_rc
pg_env_get_by_name(void *impl, const char *name, struct store_env *out)
{
    PGresult *r = NULL;
    latch_rc rc;

    memset(out, 0, sizeof *out);
    if (name == NULL)
        return LATCH_E_INVAL;
    rc = run1(impl, false, ST_ENV_GET_NAME, &r, NULL, "t", name);
    if (rc == LATCH_OK && PQntuples(r) == 0)
        rc = LATCH_E_NOT_FOUND;
    if (rc == LATCH_OK)
        env_read(r, 0, out);
    PQclear(r);
    return rc;
}

static latch_rc
pg_env_list(void *impl, struct store_env **out, size_t *n)
{
    PGresult *r = NULL;
    latch_rc rc;
    int rows;

    *out = NULL;
    *n = 0;
    rc = run1(impl, false, ST_ENV_LIST, &r, NULL, "");
    if (rc != LATCH_OK)
        return rc;
    rows = PQntuples(r);
    if (rows > 0) {
        *out = xcalloc((size_t)rows, sizeof **out);
        for (int i = 0; i < rows; i++)
            env_read(r, i, &(*out)[i]);
        *n = (size_t)rows;
    }
    PQclear(r);
    return LATCH_OK;
}

static latch_rc
pg_env_update_webhooks(void *impl, const struct store_env *e)
{
    int64_t changes = 0;
    latch_rc rc;

    if (e == NULL)
        return LATCH_E_INVAL;
    rc = run1(impl, true, ST_ENV_UPDATE, NULL, &changes, "itttBB", e->id, e->webhook_url,
              e->webhook_url_secondary, e->webhook_key_sealed, (int)e->on_auth_creation,
              (int)e->on_auth_refresh_error);
    if (rc == LATCH_OK && changes == 0)
        rc = LATCH_E_NOT_FOUND;
    return rc;
}

/* ---- API keys ---- */

static latch_rc
pg_apikey_add(void *impl, int64_t env_id, const unsigned char hash[32], const char *label)
{
    if (hash == NULL)
        return LATCH_E_INVAL;
    return run1(impl, true, ST_KEY_ADD, NULL, NULL, "ihti", env_id, hash, label, latch_now_ms());
}

static latch_rc
pg_apikey_lookup(void *impl, const unsigned char hash[32], int64_t *env_id)
{
    PGresult *r = NULL;
    latch_rc rc;

    *env_id = 0;
    if (hash == NULL)
        return LATCH_E_INVAL;
    rc = run1(impl, false, ST_KEY_LOOKUP, &r, NULL, "h", hash);
    if (rc == LATCH_OK && PQntuples(r) == 0)
        rc = LATCH_E_NOT_FOUND;
    if (rc == LATCH_OK)
        *env_id = col_i64(r, 0, 0);
    PQclear(r);
    return rc;
}

static latch_rc
pg_apikey_revoke_all(void *impl, int64_t env_id)
{
    return run1(impl, true, ST_KEY_REVOKE, NULL, NULL, "ii", env_id, latch_now_ms());
}

/* SELECT count(*)-style statement: one int64 in row 0 column 0. */
static latch_rc
read_count(struct pg_store *q, enum st_id id, int64_t *n, const char *fmt, int64_t a)
{
    PGresult *r = NULL;
    latch_rc rc;

    *n = 0;
    if (fmt[0] == 'i')
        rc = run1(q, false, id, &r, NULL, "i", a);
    else
        rc = run1(q, false, id, &r, NULL, "");
    if (rc == LATCH_OK && PQntuples(r) != 1)
        rc = LATCH_E_DB;
    if (rc == LATCH_OK)
        *n = col_i64(r, 0, 0);
    PQclear(r);
    return rc;
}

static latch_rc
pg_apikey_count(void *impl, int64_t env_id, int64_t *n)
{
    return read_count(impl, ST_KEY_COUNT, n, "i", env_id);
}

/* ---- integrations ---- */

static void
int_read(const PGresult *r, int row, struct store_integration *i)
{
    memset(i, 0, sizeof *i);
    i->id = col_i64(r, row, 0);
    i->env_id = col_i64(r, row, 1);
    i->unique_key = col_str(r, row, 2);
    i->provider = col_str(r, row, 3);
    i->display_name = col_str(r, row, 4);
    i->oauth_scopes = col_str(r, row, 5);
    i->forward_webhooks = col_bool(r, row, 6);
    i->custom_json = col_str(r, row, 7);
    i->created_at = col_i64(r, row, 8);
    i->updated_at = col_i64(r, row, 9);
}

static latch_rc
pg_integration_create(void *impl, struct store_integration *i)
{
    PGresult *r = NULL;
    int64_t now = latch_now_ms();
    latch_rc rc;

    if (i == NULL || i->unique_key == NULL || i->provider == NULL || !json_ok(i->custom_json))
        return LATCH_E_INVAL;
    rc =
        run1(impl, true, ST_INT_INSERT, &r, NULL, "ittttBti", i->env_id, i->unique_key, i->provider,
             i->display_name, i->oauth_scopes, (int)i->forward_webhooks, i->custom_json, now);
    if (rc == LATCH_OK && PQntuples(r) != 1)
        rc = LATCH_E_DB;
    if (rc == LATCH_OK) {
        i->id = col_i64(r, 0, 0);
        i->created_at = now;
        i->updated_at = now;
    }
    PQclear(r);
    return rc;
}

static latch_rc
pg_integration_get(void *impl, int64_t env_id, const char *unique_key,
                   struct store_integration *out)
{
    PGresult *r = NULL;
    latch_rc rc;

    memset(out, 0, sizeof *out);
    if (unique_key == NULL)
        return LATCH_E_INVAL;
    rc = run1(impl, false, ST_INT_GET, &r, NULL, "it", env_id, unique_key);
    if (rc == LATCH_OK && PQntuples(r) == 0)
        rc = LATCH_E_NOT_FOUND;
    if (rc == LATCH_OK)
        int_read(r, 0, out);
    PQclear(r);
    return rc;
}

static latch_rc
pg_integration_list(void *impl, int64_t env_id, struct store_integration **out, size_t *n)
{
    PGresult *r = NULL;
    latch_rc rc;
    int rows;

    *out = NULL;
    *n = 0;
    rc = run1(impl, false, ST_INT_LIST, &r, NULL, "i", env_id);
    if (rc != LATCH_OK)
        return rc;
    rows = PQntuples(r);
    if (rows > 0) {
        *out = xcalloc((size_t)rows, sizeof **out);
        for (int i = 0; i < rows; i++)
            int_read(r, i, &(*out)[i]);
        *n = (size_t)rows;
    }
    PQclear(r);
    return LATCH_OK;
}

static latch_rc
pg_integration_update(void *impl, struct store_integration *i)
{
    struct pg_store *q = impl;
    struct pg_conn *c = NULL;
    int64_t now = latch_now_ms(), changes = 0;
    latch_rc rc;

    if (i == NULL || i->unique_key == NULL || i->provider == NULL || !json_ok(i->custom_json))
        return LATCH_E_INVAL;
    rc = conn_acquire(q, &c);
    if (rc != LATCH_OK)
        return rc;
    rc = tx_begin(q, c);
    if (rc != LATCH_OK)
        goto out;
    /* Renaming unique_key cascades to connections.provider_config_key (ON UPDATE CASCADE). */
    rc = q_cmd(q, c, ST_INT_UPDATE, &changes, "iittttBti", i->id, i->env_id, i->unique_key,
               i->provider, i->display_name, i->oauth_scopes, (int)i->forward_webhooks,
               i->custom_json, now);
    if (rc == LATCH_OK && changes == 0)
        rc = LATCH_E_NOT_FOUND;
    if (rc != LATCH_OK)
        goto out;
    /* connections.provider is a copy of the integration's provider: keep it in step. */
    rc = q_cmd(q, c, ST_CONN_SET_PROVIDER, NULL, "itt", i->env_id, i->unique_key, i->provider);
    if (rc == LATCH_OK)
        rc = tx_commit(q, c);
out:
    tx_rollback(q, c);
    conn_release(q, c);
    if (rc == LATCH_OK)
        i->updated_at = now;
    return rc;
}

static latch_rc
pg_integration_delete(void *impl, int64_t env_id, const char *unique_key)
{
    int64_t changes = 0;
    latch_rc rc;

    if (unique_key == NULL)
        return LATCH_E_INVAL;
    /* Its connections go with it (ON DELETE CASCADE). */
    rc = run1(impl, true, ST_INT_DELETE, NULL, &changes, "it", env_id, unique_key);
    if (rc == LATCH_OK && changes == 0)
        rc = LATCH_E_NOT_FOUND;
    return rc;
}

/* ---- connections ---- */

static void
conn_read(const PGresult *r, int i, struct store_connection *c)
{
    memset(c, 0, sizeof *c);
    c->id = col_i64(r, i, 0);
    c->env_id = col_i64(r, i, 1);
    c->uid = col_str(r, i, 2);
    c->connection_id = col_str(r, i, 3);
    c->provider_config_key = col_str(r, i, 4);
    c->provider = col_str(r, i, 5);
    c->credentials_sealed = col_str(r, i, 6);
    c->connection_config_json = col_str(r, i, 7);
    c->metadata_json = col_str(r, i, 8);
    c->tags_json = col_str(r, i, 9);
    c->end_user_json = col_str(r, i, 10);
    c->webhook_url_override = col_str(r, i, 11);
    c->expires_at = col_i64(r, i, 12);
    c->created_at = col_i64(r, i, 13);
    c->updated_at = col_i64(r, i, 14);
    c->last_fetched_at = col_i64(r, i, 15);
    c->last_refresh_success = col_i64(r, i, 16);
    c->last_refresh_failure = col_i64(r, i, 17);
    c->next_refresh_at = col_i64(r, i, 18);
    c->refresh_attempts = (int)col_i64(r, i, 19);
    c->needs_reauth = col_bool(r, i, 20);
    c->auth_error_json = col_str(r, i, 21);
    c->version = col_i64(r, i, 22);
}

static latch_rc
pg_connection_upsert(void *impl, struct store_connection *c, bool *created)
{
    struct pg_store *q = impl;
    struct pg_conn *k = NULL;
    struct store_connection got;
    PGresult *r = NULL;
    int64_t now = latch_now_ms(), id = 0;
    char *provider = NULL;
    latch_rc rc;
    bool is_new = false;

    memset(&got, 0, sizeof got);
    if (created != NULL)
        *created = false;
    if (c == NULL || c->uid == NULL || c->connection_id == NULL || c->provider_config_key == NULL)
        return LATCH_E_INVAL;
    if (!json_ok(c->connection_config_json) || !json_ok(c->metadata_json) ||
        !json_ok(c->tags_json) || !json_ok(c->end_user_json))
        return LATCH_E_INVAL;
    rc = conn_acquire(q, &k);
    if (rc != LATCH_OK)
        return rc;
    rc = tx_begin(q, k);
    if (rc != LATCH_OK)
        goto out;

    /* The integration must exist; it also supplies provider when the caller has none. */
    rc = q_exec(q, k, ST_INT_PROVIDER, &r, "it", c->env_id, c->provider_config_key);
    if (rc == LATCH_OK && PQntuples(r) == 0)
        rc = LATCH_E_NOT_FOUND;
    if (rc != LATCH_OK)
        goto out;
    provider = c->provider != NULL ? xstrdup(c->provider) : col_str(r, 0, 0);
    PQclear(r);
    r = NULL;

    /* Insert, or learn that the key exists (a concurrent insert on another node included). */
    rc = q_exec(q, k, ST_CONN_INSERT, &r, "ittttttttttii", c->env_id, c->uid, c->connection_id,
                c->provider_config_key, provider, c->credentials_sealed, c->connection_config_json,
                c->metadata_json, c->tags_json, c->end_user_json, c->webhook_url_override,
                c->expires_at, now);
    if (rc != LATCH_OK)
        goto out;
    if (PQntuples(r) == 1) {
        id = col_i64(r, 0, 0);
        is_new = true;
    }
    PQclear(r);
    r = NULL;

    if (!is_new) {
        int64_t changes = 0;

        rc = q_exec(q, k, ST_CONN_LOCK, &r, "itt", c->env_id, c->provider_config_key,
                    c->connection_id);
        if (rc == LATCH_OK && PQntuples(r) == 0)
            rc = LATCH_E_CONFLICT; /* deleted between our insert and our lock: caller retries */
        if (rc != LATCH_OK)
            goto out;
        id = col_i64(r, 0, 0);
        if (PQgetisnull(r, 0, 1) || strcmp(PQgetvalue(r, 0, 1), c->uid) != 0) {
            /* The caller sealed for another uid: writing would make the row unreadable. */
            rc = LATCH_E_CONFLICT;
            goto out;
        }
        PQclear(r);
        r = NULL;
        rc = q_cmd(q, k, ST_CONN_REPLACE, &changes, "itttitttti", id, c->provider,
                   c->credentials_sealed, c->connection_config_json, c->expires_at,
                   c->metadata_json, c->tags_json, c->end_user_json, c->webhook_url_override, now);
        if (rc == LATCH_OK && changes != 1)
            rc = LATCH_E_DB;
        if (rc != LATCH_OK)
            goto out;
    }

    rc = q_exec(q, k, ST_CONN_GET_ROW, &r, "i", id);
    if (rc == LATCH_OK && PQntuples(r) != 1)
        rc = LATCH_E_DB;
    if (rc != LATCH_OK)
        goto out;
    conn_read(r, 0, &got);
    rc = tx_commit(q, k);
out:
    PQclear(r);
    tx_rollback(q, k);
    conn_release(q, k);
    free(provider);
    if (rc == LATCH_OK) {
        store_connection_clear(c);
        *c = got;
        if (created != NULL)
            *created = is_new;
    } else {
        store_connection_clear(&got);
    }
    return rc;
}

static latch_rc
conn_get1(struct pg_store *q, enum st_id id, struct store_connection *out, const char *fmt,
          int64_t a, int64_t b, const char *s1, const char *s2)
{
    PGresult *r = NULL;
    latch_rc rc;

    if (fmt[1] == 't')
        rc = run1(q, false, id, &r, NULL, "itt", a, s1, s2);
    else
        rc = run1(q, false, id, &r, NULL, "ii", a, b);
    if (rc == LATCH_OK && PQntuples(r) == 0)
        rc = LATCH_E_NOT_FOUND;
    if (rc == LATCH_OK)
        conn_read(r, 0, out);
    PQclear(r);
    return rc;
}

static latch_rc
pg_connection_get(void *impl, int64_t env_id, const char *provider_config_key,
                  const char *connection_id, struct store_connection *out)
{
    memset(out, 0, sizeof *out);
    if (provider_config_key == NULL || connection_id == NULL)
        return LATCH_E_INVAL;
    return conn_get1(impl, ST_CONN_GET, out, "itt", env_id, 0, provider_config_key, connection_id);
}

static latch_rc
pg_connection_get_by_id(void *impl, int64_t env_id, int64_t id, struct store_connection *out)
{
    memset(out, 0, sizeof *out);
    return conn_get1(impl, ST_CONN_GET_ENV_ID, out, "ii", env_id, id, NULL, NULL);
}

/* Builds the JSON parameters of the list filter; owned strings (free) or NULL = no filter. */
static latch_rc
filter_json(const struct store_conn_filter *f, char **keys_out, char **tags_out)
{
    json_t *a = NULL;
    latch_rc rc = LATCH_OK;

    *keys_out = NULL;
    *tags_out = NULL;
    if (f->n_integration_keys > 0) {
        if (f->integration_keys == NULL || f->n_integration_keys > STORE_MAX_FILTER_KEYS)
            return LATCH_E_INVAL;
        a = json_array();
        for (size_t i = 0; i < f->n_integration_keys; i++) {
            json_t *s = f->integration_keys[i] != NULL ? json_string(f->integration_keys[i]) : NULL;

            if (s == NULL || json_array_append_new(a, s) != 0) {
                rc = LATCH_E_INVAL;
                goto out;
            }
        }
        *keys_out = json_dumps(a, JSON_COMPACT);
        json_decref(a);
        a = NULL;
        if (*keys_out == NULL) {
            rc = LATCH_E_NOMEM;
            goto out;
        }
    }
    if (f->n_tags > 0) {
        if (f->tag_keys == NULL || f->tag_values == NULL || f->n_tags > STORE_MAX_FILTER_TAGS) {
            rc = LATCH_E_INVAL;
            goto out;
        }
        a = json_array();
        for (size_t i = 0; i < f->n_tags; i++) {
            json_t *pair;

            if (f->tag_keys[i] == NULL || f->tag_values[i] == NULL) {
                rc = LATCH_E_INVAL;
                goto out;
            }
            /* json_pack rejects invalid UTF-8 (returns NULL). */
            pair = json_pack("[ss]", f->tag_keys[i], f->tag_values[i]);
            if (pair == NULL || json_array_append_new(a, pair) != 0) {
                rc = LATCH_E_INVAL;
                goto out;
            }
        }
        *tags_out = json_dumps(a, JSON_COMPACT);
        if (*tags_out == NULL)
            rc = LATCH_E_NOMEM;
    }
out:
    json_decref(a);
    if (rc != LATCH_OK) {
        free(*keys_out);
        free(*tags_out);
        *keys_out = NULL;
        *tags_out = NULL;
    }
    return rc;
}

static latch_rc
pg_connection_list(void *impl, int64_t env_id, const struct store_conn_filter *f,
                   struct store_connection **out, size_t *n)
{
    PGresult *r = NULL;
    char *keys = NULL, *tags = NULL;
    latch_rc rc;
    int rows;

    *out = NULL;
    *n = 0;
    if (f == NULL || f->limit < 1 || f->limit > LATCH_MAX_LIST_LIMIT || f->offset < 0)
        return LATCH_E_INVAL;
    rc = filter_json(f, &keys, &tags);
    if (rc != LATCH_OK)
        return rc;
    rc = run1(impl, false, ST_CONN_LIST, &r, NULL, "ittttttii", env_id, f->connection_id, f->search,
              f->end_user_id, f->end_user_org_id, keys, tags, f->limit, f->offset);
    free(keys);
    free(tags);
    if (rc != LATCH_OK)
        return rc;
    rows = PQntuples(r);
    if (rows > 0) {
        *out = xcalloc((size_t)rows, sizeof **out);
        for (int i = 0; i < rows; i++)
            conn_read(r, i, &(*out)[i]);
        *n = (size_t)rows;
    }
    PQclear(r);
    return LATCH_OK;
}

/* A write that must hit one row: NOT_FOUND when it changed none. */
static latch_rc
write_hit(struct pg_store *q, enum st_id id, const char *fmt, int64_t a, int64_t b, const char *s1,
          const char *s2, const char *s3)
{
    int64_t changes = 0;
    latch_rc rc;

    if (strcmp(fmt, "itt") == 0)
        rc = run1(q, true, id, NULL, &changes, fmt, a, s1, s2);
    else if (strcmp(fmt, "iti") == 0)
        rc = run1(q, true, id, NULL, &changes, fmt, a, s1, b);
    else if (strcmp(fmt, "ittti") == 0)
        rc = run1(q, true, id, NULL, &changes, fmt, a, s1, s2, s3, b);
    else if (strcmp(fmt, "ii") == 0)
        rc = run1(q, true, id, NULL, &changes, fmt, a, b);
    else if (strcmp(fmt, "i") == 0)
        rc = run1(q, true, id, NULL, &changes, fmt, a);
    else
        return LATCH_E_INTERNAL;
    if (rc == LATCH_OK && changes == 0)
        rc = LATCH_E_NOT_FOUND;
    return rc;
}

static latch_rc
pg_connection_delete(void *impl, int64_t env_id, const char *provider_config_key,
                     const char *connection_id)
{
    if (provider_config_key == NULL || connection_id == NULL)
        return LATCH_E_INVAL;
    return write_hit(impl, ST_CONN_DELETE, "itt", env_id, 0, provider_config_key, connection_id,
                     NULL);
}

static latch_rc
pg_connection_set_metadata(void *impl, int64_t id, const char *metadata_json)
{
    if (!json_ok(metadata_json))
        return LATCH_E_INVAL;
    return write_hit(impl, ST_CONN_SET_META, "iti", id, latch_now_ms(), metadata_json, NULL, NULL);
}

static latch_rc
pg_connection_patch(void *impl, int64_t id, const char *tags_json, const char *end_user_json,
                    const char *webhook_url_override)
{
    if (!json_ok(tags_json) || !json_ok(end_user_json))
        return LATCH_E_INVAL;
    return write_hit(impl, ST_CONN_PATCH, "ittti", id, latch_now_ms(), tags_json, end_user_json,
                     webhook_url_override);
}

/* A foreign-key failure (the row was deleted meanwhile) is NOT_FOUND too. */
static latch_rc
pg_connection_touch(void *impl, int64_t id, int64_t last_fetched_at)
{
    return write_hit(impl, ST_CONN_TOUCH, "ii", id, last_fetched_at, NULL, NULL, NULL);
}

/* One statement with the ids as an array literal ({1,2,3}: digits and commas only). */
static latch_rc
pg_connection_touch_many(void *impl, const int64_t *ids, size_t n, int64_t last_fetched_at)
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
        rc = run1(impl, true, ST_CONN_TOUCH_MANY, NULL, NULL, "ti", arr.data, last_fetched_at);
    buf_free(&arr);
    return rc;
}

/*
 * Runs a guarded UPDATE (optionally RETURNING one int64 into *ret) in a transaction; when it
 * changes no row, tells NOT_FOUND (row gone) from CONFLICT (guard failed).
 */
static latch_rc
guarded_update(struct pg_store *q, int64_t id, enum st_id sid, int64_t *ret, const char *fmt, ...)
{
    struct pg_conn *c = NULL;
    struct pg_params p;
    PGresult *r = NULL;
    va_list ap;
    latch_rc rc;
    bool ok, hit = false;

    va_start(ap, fmt);
    ok = pset(&p, fmt, ap);
    va_end(ap);
    if (!ok)
        return LATCH_E_INTERNAL;
    rc = conn_acquire(q, &c);
    if (rc != LATCH_OK)
        return rc;
    rc = tx_begin(q, c);
    if (rc == LATCH_OK)
        rc = q_run(q, c, sid, &r, &p);
    if (rc != LATCH_OK)
        goto out;
    if (ret != NULL) {
        hit = PQntuples(r) > 0;
        if (hit)
            *ret = col_i64(r, 0, 0);
    } else {
        hit = strtoll(PQcmdTuples(r), NULL, 10) > 0;
    }
    PQclear(r);
    r = NULL;
    if (!hit) {
        rc = q_exec(q, c, ST_CONN_EXISTS, &r, "i", id);
        if (rc == LATCH_OK)
            rc = PQntuples(r) > 0 ? LATCH_E_CONFLICT : LATCH_E_NOT_FOUND;
        goto out;
    }
    rc = tx_commit(q, c);
out:
    PQclear(r);
    tx_rollback(q, c);
    conn_release(q, c);
    return rc;
}

static latch_rc
pg_connection_lease(void *impl, int64_t id, const char *owner, int64_t ttl_ms, int64_t *version_out)
{
    int64_t now = latch_now_ms(), version = 0;
    latch_rc rc;

    if (owner == NULL || owner[0] == '\0' || ttl_ms <= 0)
        return LATCH_E_INVAL;
    rc = guarded_update(impl, id, ST_CONN_LEASE, &version, "itii", id, owner, now + ttl_ms, now);
    if (rc == LATCH_OK && version_out != NULL)
        *version_out = version;
    return rc;
}

static latch_rc
pg_connection_lease_release(void *impl, int64_t id, const char *owner)
{
    if (owner == NULL)
        return LATCH_E_INVAL;
    return guarded_update(impl, id, ST_CONN_RELEASE, NULL, "it", id, owner);
}

static latch_rc
pg_connection_refresh_done(void *impl, int64_t id, const char *owner, int64_t expected_version,
                           const char *credentials_sealed, int64_t expires_at, int64_t *new_version)
{
    int64_t version = 0;
    latch_rc rc;

    if (owner == NULL || credentials_sealed == NULL)
        return LATCH_E_INVAL;
    rc = guarded_update(impl, id, ST_CONN_DONE, &version, "iittii", id, expected_version, owner,
                        credentials_sealed, expires_at, latch_now_ms());
    if (rc == LATCH_OK && new_version != NULL)
        *new_version = version;
    return rc;
}

static latch_rc
pg_connection_refresh_failed(void *impl, int64_t id, const char *owner, const char *auth_error_json,
                             int64_t next_refresh_at, bool needs_reauth)
{
    if (owner == NULL || !json_ok(auth_error_json))
        return LATCH_E_INVAL;
    return guarded_update(impl, id, ST_CONN_FAILED, NULL, "ittiBi", id, owner, auth_error_json,
                          next_refresh_at, (int)needs_reauth, latch_now_ms());
}

static latch_rc
pg_connection_due_for_refresh(void *impl, int64_t before, int64_t used_since, size_t max,
                              int64_t **ids_out, int64_t **env_ids_out, size_t *n)
{
    PGresult *r = NULL;
    int64_t *ids, *envs;
    latch_rc rc;
    int rows;

    *ids_out = NULL;
    *env_ids_out = NULL;
    *n = 0;
    if (max == 0)
        return LATCH_OK;
    if (max > LATCH_MAX_LIST_LIMIT)
        max = LATCH_MAX_LIST_LIMIT;
    rc = run1(impl, false, ST_CONN_DUE, &r, NULL, "iiii", before, used_since, latch_now_ms(),
              (int64_t)max);
    if (rc != LATCH_OK)
        return rc;
    rows = PQntuples(r);
    if (rows > 0) {
        ids = xcalloc((size_t)rows, sizeof *ids);
        envs = xcalloc((size_t)rows, sizeof *envs);
        for (int i = 0; i < rows; i++) {
            ids[i] = col_i64(r, i, 0);
            envs[i] = col_i64(r, i, 1);
        }
        *ids_out = ids;
        *env_ids_out = envs;
        *n = (size_t)rows;
    }
    PQclear(r);
    return LATCH_OK;
}

/* ---- connect sessions ---- */

static void
sess_read(const PGresult *r, int i, struct store_session *x)
{
    memset(x, 0, sizeof *x);
    x->id = col_i64(r, i, 0);
    x->env_id = col_i64(r, i, 1);
    (void)col_hash(r, i, 2, x->token_hash);
    x->end_user_json = col_str(r, i, 3);
    x->organization_json = col_str(r, i, 4);
    x->allowed_integrations_json = col_str(r, i, 5);
    x->config_defaults_json = col_str(r, i, 6);
    x->tags_json = col_str(r, i, 7);
    x->webhook_url_override = col_str(r, i, 8);
    x->connection_row_id = col_i64(r, i, 9);
    x->expires_at = col_i64(r, i, 10);
    x->attempts = (int)col_i64(r, i, 11);
    x->created_at = col_i64(r, i, 12);
}

static latch_rc
pg_session_create(void *impl, struct store_session *x)
{
    PGresult *r = NULL;
    int64_t created;
    latch_rc rc;

    if (x == NULL || !json_ok(x->end_user_json) || !json_ok(x->organization_json) ||
        !json_ok(x->allowed_integrations_json) || !json_ok(x->config_defaults_json) ||
        !json_ok(x->tags_json))
        return LATCH_E_INVAL;
    created = x->created_at != 0 ? x->created_at : latch_now_ms();
    rc = run1(impl, true, ST_SESS_INSERT, &r, NULL, "ihttttttiiii", x->env_id, x->token_hash,
              x->end_user_json, x->organization_json, x->allowed_integrations_json,
              x->config_defaults_json, x->tags_json, x->webhook_url_override, x->connection_row_id,
              x->expires_at, (int64_t)x->attempts, created);
    if (rc == LATCH_OK && PQntuples(r) != 1)
        rc = LATCH_E_DB;
    if (rc == LATCH_OK) {
        x->id = col_i64(r, 0, 0);
        x->created_at = created;
    }
    PQclear(r);
    return rc;
}

static latch_rc
pg_session_get_by_hash(void *impl, const unsigned char hash[32], struct store_session *out)
{
    PGresult *r = NULL;
    latch_rc rc;

    memset(out, 0, sizeof *out);
    if (hash == NULL)
        return LATCH_E_INVAL;
    rc = run1(impl, false, ST_SESS_GET, &r, NULL, "h", hash);
    if (rc == LATCH_OK && PQntuples(r) == 0)
        rc = LATCH_E_NOT_FOUND;
    if (rc == LATCH_OK)
        sess_read(r, 0, out);
    PQclear(r);
    return rc;
}

static latch_rc
pg_session_bump_attempts(void *impl, int64_t id, int *attempts)
{
    PGresult *r = NULL;
    latch_rc rc;

    rc = run1(impl, true, ST_SESS_BUMP, &r, NULL, "i", id);
    if (rc == LATCH_OK && PQntuples(r) == 0)
        rc = LATCH_E_NOT_FOUND;
    if (rc == LATCH_OK && attempts != NULL)
        *attempts = (int)col_i64(r, 0, 0);
    PQclear(r);
    return rc;
}

static latch_rc
pg_session_delete(void *impl, int64_t id)
{
    return write_hit(impl, ST_SESS_DELETE, "i", id, 0, NULL, NULL, NULL);
}

static latch_rc
pg_session_purge_expired(void *impl, int64_t now)
{
    return run1(impl, true, ST_SESS_PURGE, NULL, NULL, "i", now);
}

/* ---- webhook outbox ---- */

static latch_rc
pg_webhook_enqueue(void *impl, int64_t env_id, const char *url, const char *body, int64_t *id_out)
{
    PGresult *r = NULL;
    latch_rc rc;

    if (url == NULL || body == NULL)
        return LATCH_E_INVAL;
    rc = run1(impl, true, ST_WH_INSERT, &r, NULL, "itti", env_id, url, body, latch_now_ms());
    if (rc == LATCH_OK && PQntuples(r) != 1)
        rc = LATCH_E_DB;
    if (rc == LATCH_OK && id_out != NULL)
        *id_out = col_i64(r, 0, 0);
    PQclear(r);
    return rc;
}

static latch_rc
pg_webhook_claim(void *impl, const char *owner, int64_t now, int64_t lease_ms, size_t max,
                 struct store_webhook **out, size_t *n)
{
    PGresult *r = NULL;
    struct store_webhook *v;
    latch_rc rc;
    int rows;

    *out = NULL;
    *n = 0;
    if (owner == NULL || owner[0] == '\0' || lease_ms <= 0)
        return LATCH_E_INVAL;
    if (max == 0)
        return LATCH_OK;
    if (max > LATCH_MAX_LIST_LIMIT)
        max = LATCH_MAX_LIST_LIMIT;
    rc = run1(impl, true, ST_WH_CLAIM, &r, NULL, "tiii", owner, now, lease_ms, (int64_t)max);
    if (rc != LATCH_OK)
        return rc;
    rows = PQntuples(r);
    if (rows > 0) {
        v = xcalloc((size_t)rows, sizeof *v);
        for (int i = 0; i < rows; i++) {
            v[i].id = col_i64(r, i, 0);
            v[i].env_id = col_i64(r, i, 1);
            v[i].url = col_str(r, i, 2);
            v[i].body = col_str(r, i, 3);
            v[i].attempts = (int)col_i64(r, i, 4);
            v[i].next_attempt_at = col_i64(r, i, 5);
            v[i].created_at = col_i64(r, i, 6);
        }
        *out = v;
        *n = (size_t)rows;
    }
    PQclear(r);
    return LATCH_OK;
}

static latch_rc
pg_webhook_done(void *impl, int64_t id)
{
    return write_hit(impl, ST_WH_DONE, "i", id, 0, NULL, NULL, NULL);
}

static latch_rc
pg_webhook_retry(void *impl, int64_t id, int64_t next_attempt_at, const char *last_error,
                 bool give_up)
{
    int64_t changes = 0;
    latch_rc rc;

    rc = run1(impl, true, ST_WH_RETRY, NULL, &changes, "iitB", id, next_attempt_at, last_error,
              (int)give_up);
    if (rc == LATCH_OK && changes == 0)
        rc = LATCH_E_NOT_FOUND;
    return rc;
}

static latch_rc
pg_webhook_pending_count(void *impl, int64_t *n)
{
    return read_count(impl, ST_WH_PENDING, n, "", 0);
}

/* ---- key rotation ---- */

struct rs_item {
    int64_t id;     /* connections / environments row id */
    char *row;      /* uid, id as text, or meta key */
    char *sealed;   /* current value */
    char *resealed; /* from fn, or NULL */
};

struct rs_source {
    const char *table;
    const char *column; /* as used in the AAD */
    enum st_id scan;
    enum st_id cas;
};

static const struct rs_source rs_sources[] = {
    {"connections", "credentials", ST_RS_CONN_SCAN, ST_RS_CONN_CAS},
    {"environments", "webhook_key", ST_RS_ENV_SCAN, ST_RS_ENV_CAS},
    {"meta", "value", ST_RS_META_SCAN, ST_RS_META_CAS},
};

static void
rs_items_free(struct rs_item *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i].row);
        free(v[i].sealed);
        free(v[i].resealed);
        memset(&v[i], 0, sizeof v[i]);
    }
}

/* Reads the next batch after the cursor (*last_id or *last_key) without holding a transaction. */
static latch_rc
rs_scan(struct pg_store *q, struct pg_conn *c, const struct rs_source *src, int64_t *last_id,
        char **last_key, struct rs_item *v, size_t *n)
{
    PGresult *r = NULL;
    latch_rc rc;
    int rows;

    *n = 0;
    if (src->scan == ST_RS_META_SCAN)
        rc = q_exec(q, c, src->scan, &r, "ti", *last_key != NULL ? *last_key : "",
                    (int64_t)STORE_RESEAL_BATCH);
    else
        rc = q_exec(q, c, src->scan, &r, "ii", *last_id, (int64_t)STORE_RESEAL_BATCH);
    if (rc != LATCH_OK)
        return rc;
    rows = PQntuples(r);
    for (int i = 0; i < rows && *n < STORE_RESEAL_BATCH; i++) {
        struct rs_item *it = &v[*n];

        if (src->scan == ST_RS_CONN_SCAN) {
            it->id = col_i64(r, i, 0);
            it->row = col_str(r, i, 1);
            it->sealed = col_str(r, i, 2);
        } else if (src->scan == ST_RS_ENV_SCAN) {
            it->id = col_i64(r, i, 0);
            it->row = xasprintf("%" PRId64, it->id);
            it->sealed = col_str(r, i, 1);
        } else {
            it->row = col_str(r, i, 0);
            it->sealed = col_str(r, i, 1);
        }
        (*n)++;
    }
    PQclear(r);
    if (*n > 0) {
        *last_id = v[*n - 1].id;
        free(*last_key);
        *last_key = xstrdup(v[*n - 1].row);
    }
    return LATCH_OK;
}

static latch_rc
pg_reseal_all(void *impl, store_reseal_fn fn, void *ud, size_t *rewritten)
{
    struct pg_store *q = impl;
    struct pg_conn *c = NULL;
    struct rs_item *v;
    size_t count = 0;
    latch_rc rc, first_fn_err = LATCH_OK;

    if (rewritten != NULL)
        *rewritten = 0;
    if (fn == NULL)
        return LATCH_E_INVAL;
    v = xcalloc(STORE_RESEAL_BATCH, sizeof *v);
    rc = conn_acquire(q, &c);
    if (rc != LATCH_OK) {
        free(v);
        return rc;
    }
    for (size_t s = 0; s < sizeof rs_sources / sizeof rs_sources[0] && rc == LATCH_OK; s++) {
        const struct rs_source *src = &rs_sources[s];
        int64_t last_id = 0;
        char *last_key = NULL;

        for (;;) {
            size_t n = 0, todo = 0;

            rc = rs_scan(q, c, src, &last_id, &last_key, v, &n);
            if (rc != LATCH_OK || n == 0)
                break;
            /* Crypto happens here, outside any transaction: the other nodes keep writing. */
            for (size_t i = 0; i < n; i++) {
                struct store_sealed_ref ref = {src->table, v[i].row, src->column, v[i].sealed};
                latch_rc frc;

                if (v[i].row == NULL || v[i].sealed == NULL)
                    continue;
                frc = fn(&ref, &v[i].resealed, ud);
                if (frc != LATCH_OK) {
                    /* Keep going so every good row moves to the new key; report the failure. */
                    if (first_fn_err == LATCH_OK)
                        first_fn_err = frc;
                    free(v[i].resealed);
                    v[i].resealed = NULL;
                    continue;
                }
                if (v[i].resealed != NULL)
                    todo++;
            }
            if (todo > 0) {
                /* One short write transaction per batch; compare-and-swap per row. */
                rc = tx_begin(q, c);
                for (size_t i = 0; i < n && rc == LATCH_OK; i++) {
                    int64_t changes = 0;

                    if (v[i].resealed == NULL)
                        continue;
                    if (src->cas == ST_RS_META_CAS)
                        rc = q_cmd(q, c, src->cas, &changes, "ttt", v[i].row, v[i].resealed,
                                   v[i].sealed);
                    else
                        rc = q_cmd(q, c, src->cas, &changes, "itt", v[i].id, v[i].resealed,
                                   v[i].sealed);
                    if (rc == LATCH_OK && changes > 0)
                        count++;
                }
                if (rc == LATCH_OK)
                    rc = tx_commit(q, c);
                else
                    tx_rollback(q, c);
            }
            rs_items_free(v, n);
            if (rc != LATCH_OK || n < STORE_RESEAL_BATCH)
                break;
        }
        free(last_key);
    }
    tx_rollback(q, c);
    conn_release(q, c);
    free(v);
    if (rc == LATCH_OK)
        rc = first_fn_err;
    if (rewritten != NULL)
        *rewritten = count;
    return rc;
}

/* ---- integrity ---- */

static latch_rc
pg_integrity_check(void *impl, struct latch_err *err)
{
    struct pg_store *q = impl;
    struct pg_conn *c = NULL;
    latch_rc rc;
    int v = -1;

    rc = conn_acquire(q, &c);
    if (rc == LATCH_OK)
        rc = conn_ensure(q, c);
    if (rc != LATCH_OK) {
        latch_err_set(err, "store: cannot open a postgres connection");
        goto out;
    }
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
    struct pg_conn *c = NULL;
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
    struct pg_conn *c = NULL;
    struct buf sql;
    PGresult *r = NULL;
    bool prepared[32];
    latch_rc rc;

    memset(prepared, 0, sizeof prepared);
    buf_init(&sql, PG_MAX_RAW_SQL);
    rc = conn_acquire(q, &c);
    if (rc == LATCH_OK)
        rc = conn_ensure(q, c);
    if (rc != LATCH_OK) {
        latch_err_set(err, "store: cannot open a postgres connection");
        goto out;
    }
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
        tx_rollback(q, c);
        /* The import's prepared statements are not in c->prepared: end the session cleanly. */
        conn_drop(c);
    }
    conn_release(q, c);
    buf_free(&sql);
    return rc;
}

const struct store_ops store_pg_ops = {
    .name = "postgres",
    .open = pg_open,
    .close = pg_close,
    .migrate = pg_migrate,
    .schema_version = pg_schema_version,
    .meta_get = pg_meta_get,
    .meta_set = pg_meta_set,
    .meta_add = pg_meta_add,
    .env_create = pg_env_create,
    .env_get = pg_env_get,
    .env_get_by_name = pg_env_get_by_name,
    .env_list = pg_env_list,
    .env_update_webhooks = pg_env_update_webhooks,
    .apikey_add = pg_apikey_add,
    .apikey_lookup = pg_apikey_lookup,
    .apikey_revoke_all = pg_apikey_revoke_all,
    .apikey_count = pg_apikey_count,
    .integration_create = pg_integration_create,
    .integration_get = pg_integration_get,
    .integration_list = pg_integration_list,
    .integration_update = pg_integration_update,
    .integration_delete = pg_integration_delete,
    .connection_upsert = pg_connection_upsert,
    .connection_get = pg_connection_get,
    .connection_get_by_id = pg_connection_get_by_id,
    .connection_list = pg_connection_list,
    .connection_delete = pg_connection_delete,
    .connection_set_metadata = pg_connection_set_metadata,
    .connection_patch = pg_connection_patch,
    .connection_touch = pg_connection_touch,
    .connection_touch_many = pg_connection_touch_many,
    .connection_lease = pg_connection_lease,
    .connection_lease_release = pg_connection_lease_release,
    .connection_refresh_done = pg_connection_refresh_done,
    .connection_refresh_failed = pg_connection_refresh_failed,
    .connection_due_for_refresh = pg_connection_due_for_refresh,
    .session_create = pg_session_create,
    .session_get_by_hash = pg_session_get_by_hash,
    .session_bump_attempts = pg_session_bump_attempts,
    .session_delete = pg_session_delete,
    .session_purge_expired = pg_session_purge_expired,
    .webhook_enqueue = pg_webhook_enqueue,
    .webhook_claim = pg_webhook_claim,
    .webhook_done = pg_webhook_done,
    .webhook_retry = pg_webhook_retry,
    .webhook_pending_count = pg_webhook_pending_count,
    .reseal_all = pg_reseal_all,
    .integrity_check = pg_integrity_check,
    .raw_scan = pg_raw_scan,
    .raw_import = pg_raw_import,
};
