/*
 * store_sqlite.c - the SQLite dialect of the store (see dialect.h, docs/internals/store.md).
 *
 * Threads: a mutex-protected pool of sqlite3 connections (opened NOMUTEX), each used by one
 * thread at a time: every operation takes a connection, runs, and gives it back. So each calling
 * thread effectively has its own connection, and the pool grows to the number of threads that
 * call the store at once (capped by STORE_SQLITE_MAX_CONNS; past it callers wait).
 * Statements are prepared once per connection (SQLITE_PREPARE_PERSISTENT), cached by enum st_id,
 * and reset + unbound after each use. Writes run in BEGIN IMMEDIATE ... COMMIT; the busy handler
 * (busy_timeout) retries a locked database for STORE_SQLITE_BUSY_MS before LATCH_E_BUSY.
 * Only bound parameters reach SQL; bound values are never logged.
 * Ownership: sq_open returns an owned struct sq_store (sq_close frees it); connections belong to
 * the pool and are lent by sq_acquire until sq_release.
 */
#include "store/dialect.h"

#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <sqlite3.h>

#include "core/log.h"
#include "util/buf.h"
#include "util/xalloc.h"

#include "store/store_sqlite_schema.h"
#include "util/clock.h"

/* Connections per store (one per concurrently calling thread); callers wait past it. */
#define STORE_SQLITE_MAX_CONNS 64
/* How long a writer waits for the database lock before LATCH_E_BUSY. */
#define STORE_SQLITE_BUSY_MS 5000

/* ---- statements (column lists and OVERRIDE_EXPR: dialect.h) ---- */

/*
 * The effective last_fetched_at of connections row T (a table name or alias): touches go to the
 * narrow connection_activity table (migration 2), creation/import values stay in the row.
 * One primary-key lookup per row.
 */
#define FETCHED_EXPR(T)                                                                            \
    "max(" T ".last_fetched_at, COALESCE((SELECT a.last_fetched_at FROM connection_activity a "    \
    "WHERE a.conn_id = " T ".id), 0))"
/* The effective last_fetched_at of connections alias c. */
#define C_FETCHED FETCHED_EXPR("c")

/* Connection rows: with credentials (reads) or without (lists). */
#define CONN_SELECT "SELECT " CONN_COLS("c.credentials_sealed", C_FETCHED) " FROM connections c "
#define CONN_LIST_SELECT "SELECT " CONN_COLS("NULL", C_FETCHED) " FROM connections c "
#define OVERRIDE_4 OVERRIDE_EXPR("?4")
#define OVERRIDE_9 OVERRIDE_EXPR("?9")
/* The list filter (parameters: see ST_CONN_LIST). */
#define CONN_LIST_WHERE                                                                            \
    "WHERE c.env_id = ?1 AND (?2 IS NULL OR c.connection_id = ?2) "                                \
    "AND (?3 IS NULL OR instr(lower(c.connection_id), lower(?3)) > 0 "                             \
    "  OR instr(lower(json_extract(c.end_user_json, '$.id')), lower(?3)) > 0 "                     \
    "  OR instr(lower(json_extract(c.end_user_json, '$.email')), lower(?3)) > 0 "                  \
    "  OR instr(lower(json_extract(c.end_user_json, '$.display_name')), lower(?3)) > 0 "           \
    "  OR instr(lower(json_extract(c.end_user_json, '$.organization.id')), lower(?3)) > 0) "       \
    "AND (?4 IS NULL OR json_extract(c.end_user_json, '$.id') = ?4) "                              \
    "AND (?5 IS NULL OR json_extract(c.end_user_json, '$.organization.id') = ?5) "                 \
    "AND (?6 IS NULL OR c.provider_config_key IN (SELECT k.value FROM json_each(?6) k)) "          \
    "AND (?7 IS NULL OR NOT EXISTS (SELECT 1 FROM json_each(?7) f WHERE NOT EXISTS ("              \
    "  SELECT 1 FROM json_each(c.tags_json) t WHERE t.type = 'text' "                              \
    "  AND t.key = json_extract(f.value, '$[0]') AND t.value = json_extract(f.value, '$[1]'))))"

static const char *const st_sql[ST__COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_USER_VERSION] = "PRAGMA user_version",
    [ST_META_GET] = "SELECT value FROM meta WHERE key = ?1",
    [ST_META_ADD] = "INSERT INTO meta(key, value) VALUES (?1, ?2) ON CONFLICT(key) DO NOTHING",
    [ST_META_SET] = "INSERT INTO meta(key, value) VALUES (?1, ?2) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    [ST_ENV_INSERT] = "INSERT INTO environments(name, created_at) VALUES (?1, ?2) "
                      "RETURNING " ENV_COLS,
    [ST_ENV_GET] = "SELECT " ENV_COLS " FROM environments WHERE id = ?1",
    [ST_ENV_GET_NAME] = "SELECT " ENV_COLS " FROM environments WHERE name = ?1",
    [ST_ENV_LIST] = "SELECT " ENV_COLS " FROM environments ORDER BY id",
    [ST_ENV_UPDATE] = "UPDATE environments SET webhook_url = ?2, webhook_url_secondary = ?3, "
                      "webhook_key_sealed = ?4, on_auth_creation = ?5, on_auth_refresh_error = ?6 "
                      "WHERE id = ?1",
    [ST_KEY_ADD] = "INSERT INTO api_keys(env_id, key_hash, label, created_at) "
                   "VALUES (?1, ?2, ?3, ?4)",
    [ST_KEY_LOOKUP] = "SELECT env_id, label FROM api_keys WHERE key_hash = ?1 AND revoked_at = 0",
    [ST_KEY_REVOKE] = "UPDATE api_keys SET revoked_at = ?2 WHERE env_id = ?1 AND revoked_at = 0",
    [ST_KEY_COUNT] = "SELECT count(*) FROM api_keys WHERE env_id = ?1 AND revoked_at = 0",
    [ST_INT_INSERT] = "INSERT INTO integrations(env_id, unique_key, provider, display_name, "
                      "oauth_scopes, forward_webhooks, custom_json, created_at, updated_at, "
                      "credentials_sealed) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9) "
                      "RETURNING id",
    [ST_INT_GET] = "SELECT " INT_COLS " FROM integrations WHERE env_id = ?1 AND unique_key = ?2",
    [ST_INT_LIST] = "SELECT " INT_COLS " FROM integrations WHERE env_id = ?1 ORDER BY id",
    [ST_INT_UPDATE] = "UPDATE integrations SET unique_key = ?3, provider = ?4, display_name = ?5, "
                      "oauth_scopes = ?6, forward_webhooks = ?7, custom_json = ?8, "
                      "updated_at = ?9, credentials_sealed = ?10 WHERE id = ?1 AND env_id = ?2",
    [ST_INT_DELETE] = "DELETE FROM integrations WHERE env_id = ?1 AND unique_key = ?2",
    [ST_INT_KEY] = "SELECT unique_key FROM integrations WHERE id = ?1 AND env_id = ?2",
    [ST_INT_PROVIDER] = "SELECT provider FROM integrations WHERE env_id = ?1 AND unique_key = ?2",
    /* BEGIN IMMEDIATE holds the write lock: nothing to lock row by row. */
    [ST_CONN_LOCK] = "SELECT id, uid FROM connections "
                     "WHERE env_id = ?1 AND provider_config_key = ?2 AND connection_id = ?3",
    [ST_CONN_INSERT] =
        "INSERT INTO connections(env_id, uid, connection_id, provider_config_key, provider, "
        "credentials_sealed, connection_config_json, metadata_json, tags_json, end_user_json, "
        "webhook_url_override, expires_at, created_at, updated_at) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, COALESCE(?7, '{}'), ?8, COALESCE(?9, '{}'), ?10, "
        "NULLIF(?11, ''), ?12, ?13, ?13) "
        "ON CONFLICT(env_id, provider_config_key, connection_id) DO NOTHING RETURNING id",
    [ST_CONN_REPLACE] =
        "UPDATE connections SET provider = COALESCE(?2, provider), credentials_sealed = ?3, "
        "connection_config_json = COALESCE(?4, '{}'), expires_at = ?5, "
        "metadata_json = COALESCE(?6, metadata_json), tags_json = COALESCE(?7, tags_json), "
        "end_user_json = COALESCE(?8, end_user_json), webhook_url_override = " OVERRIDE_9 ", "
        "next_refresh_at = 0, refresh_attempts = 0, needs_reauth = 0, auth_error_json = NULL, "
        "version = version + 1, updated_at = ?10 WHERE id = ?1",
    [ST_CONN_GET] =
        CONN_SELECT "WHERE c.env_id = ?1 AND c.provider_config_key = ?2 AND c.connection_id = ?3",
    [ST_CONN_GET_ENV_ID] = CONN_SELECT "WHERE c.env_id = ?1 AND c.id = ?2",
    [ST_CONN_GET_ROW] = CONN_SELECT "WHERE c.id = ?1",
    /*
     * ?1 env, ?2 connection_id, ?3 search, ?4 end user id, ?5 end user org id,
     * ?6 JSON array of integration keys, ?7 JSON array of [key, value] tag pairs (all must
     * match), ?8 limit, ?9 offset. A NULL parameter disables its filter.
     */
    [ST_CONN_LIST] = CONN_LIST_SELECT CONN_LIST_WHERE
    " ORDER BY c.created_at DESC, c.id DESC LIMIT ?8 OFFSET ?9",
    [ST_CONN_DELETE] = "DELETE FROM connections "
                       "WHERE env_id = ?1 AND provider_config_key = ?2 AND connection_id = ?3",
    /* updated_at never takes the same value twice: the hot cache's stamp compares it */
    [ST_CONN_SET_META] = "UPDATE connections SET metadata_json = ?2, "
                         "updated_at = max(?3, updated_at + 1) WHERE id = ?1",
    [ST_CONN_PATCH] = "UPDATE connections SET tags_json = COALESCE(?2, tags_json), "
                      "end_user_json = COALESCE(?3, end_user_json), "
                      "webhook_url_override = " OVERRIDE_4 ", updated_at = max(?5, updated_at + 1) "
                      "WHERE id = ?1",
    /* Writes only the narrow activity row; a gone connection changes nothing (no FK error). */
    [ST_CONN_TOUCH] = "INSERT INTO connection_activity(conn_id, last_fetched_at) SELECT ?1, ?2 "
                      "WHERE EXISTS (SELECT 1 FROM connections WHERE id = ?1) "
                      "ON CONFLICT(conn_id) DO UPDATE "
                      "SET last_fetched_at = max(last_fetched_at, excluded.last_fetched_at)",
    [ST_CONN_SET_PROVIDER] = "UPDATE connections SET provider = ?3 "
                             "WHERE env_id = ?1 AND provider_config_key = ?2 AND provider != ?3",
    [ST_CONN_EXISTS] = "SELECT 1 FROM connections WHERE id = ?1",
    [ST_CONN_LEASE] = "UPDATE connections SET lease_owner = ?2, lease_until = ?3 WHERE id = ?1 "
                      "AND (lease_owner IS NULL OR lease_until <= ?4 OR lease_owner = ?2) "
                      "RETURNING version",
    [ST_CONN_RELEASE] = "UPDATE connections SET lease_owner = NULL, lease_until = 0 "
                        "WHERE id = ?1 AND lease_owner = ?2",
    [ST_CONN_DONE] = "UPDATE connections SET credentials_sealed = ?4, expires_at = ?5, "
                     "last_refresh_success = ?6, updated_at = ?6, auth_error_json = NULL, "
                     "next_refresh_at = 0, refresh_attempts = 0, needs_reauth = 0, "
                     "version = version + 1, lease_owner = NULL, lease_until = 0 "
                     "WHERE id = ?1 AND version = ?2 AND lease_owner = ?3 RETURNING version",
    [ST_CONN_FAILED] = "UPDATE connections SET refresh_attempts = refresh_attempts + 1, "
                       "auth_error_json = ?3, next_refresh_at = ?4, needs_reauth = ?5, "
                       "last_refresh_failure = ?6, lease_owner = NULL, lease_until = 0 "
                       "WHERE id = ?1 AND lease_owner = ?2",
    [ST_CONN_DUE] = "SELECT c.id, c.env_id FROM connections c "
                    "WHERE c.expires_at != 0 AND c.expires_at < ?1 AND c.needs_reauth = 0 "
                    "AND (c.next_refresh_at = 0 OR c.next_refresh_at <= ?3) "
                    "AND (c.lease_owner IS NULL OR c.lease_until <= ?3) "
                    "AND " C_FETCHED " >= ?2 "
                    "ORDER BY c.expires_at, c.id LIMIT ?4",
    [ST_CONN_REBIND_SCAN] = "SELECT id, uid, connection_id, credentials_sealed FROM connections "
                            "WHERE env_id = ?1 AND provider_config_key = ?2 "
                            "AND credentials_sealed IS NOT NULL ORDER BY id",
    [ST_CONN_REBIND_CAS] = "UPDATE connections SET credentials_sealed = ?2, lease_owner = NULL, "
                           "lease_until = 0 WHERE id = ?1 AND credentials_sealed = ?3",
    [ST_CONN_STAMP] = "SELECT id, version, updated_at, expires_at, refresh_attempts, "
                      "last_refresh_failure, next_refresh_at, needs_reauth, provider "
                      "FROM connections "
                      "WHERE env_id = ?1 AND provider_config_key = ?2 AND connection_id = ?3",
    [ST_SESS_INSERT] =
        "INSERT INTO connect_sessions(env_id, token_hash, end_user_json, organization_json, "
        "allowed_integrations_json, config_defaults_json, tags_json, webhook_url_override, "
        "connection_row_id, expires_at, attempts, created_at) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) RETURNING id",
    [ST_SESS_GET] = "SELECT " SESS_COLS " FROM connect_sessions WHERE token_hash = ?1",
    [ST_SESS_BUMP] = "UPDATE connect_sessions SET attempts = attempts + 1 WHERE id = ?1 "
                     "RETURNING attempts",
    [ST_SESS_DELETE] = "DELETE FROM connect_sessions WHERE id = ?1",
    [ST_SESS_PURGE] = "DELETE FROM connect_sessions WHERE expires_at <= ?1",
    [ST_OST_INSERT] = "INSERT INTO oauth_states(state_hash, env_id, session_hash, integration, "
                      "connection_id, ws_client_id, payload_sealed, expires_at, created_at) "
                      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) RETURNING id",
    /* the take is the claim: of two callbacks with one state, one deletes the row */
    [ST_OST_TAKE] = "DELETE FROM oauth_states WHERE state_hash = ?1 RETURNING " OST_COLS,
    [ST_OST_PURGE] = "DELETE FROM oauth_states WHERE expires_at <= ?1",
    [ST_RS_INT_SCAN] = "SELECT id, credentials_sealed, env_id, unique_key FROM integrations "
                       "WHERE id > ?1 AND credentials_sealed IS NOT NULL ORDER BY id LIMIT ?2",
    [ST_RS_INT_CAS] = "UPDATE integrations SET credentials_sealed = ?2 "
                      "WHERE id = ?1 AND credentials_sealed = ?3",
    [ST_WH_INSERT] = "INSERT INTO webhook_outbox(env_id, url, body, next_attempt_at, created_at) "
                     "VALUES (?1, ?2, ?3, ?4, ?4) RETURNING id",
    [ST_WH_CLAIM] = "UPDATE webhook_outbox SET claim_owner = ?1, claim_until = ?2 + ?3 "
                    "WHERE id IN (SELECT id FROM webhook_outbox WHERE state = 'pending' "
                    "AND next_attempt_at <= ?2 AND (claim_owner IS NULL OR claim_until <= ?2) "
                    "ORDER BY next_attempt_at, id LIMIT ?4) "
                    "RETURNING " WH_COLS,
    [ST_WH_DONE] = "DELETE FROM webhook_outbox WHERE id = ?1",
    [ST_WH_RETRY] = "UPDATE webhook_outbox SET attempts = attempts + 1, last_error = ?3, "
                    "state = CASE WHEN ?4 THEN 'dead' ELSE 'pending' END, "
                    "next_attempt_at = CASE WHEN ?4 THEN next_attempt_at ELSE ?2 END, "
                    "claim_owner = NULL, claim_until = 0 WHERE id = ?1",
    [ST_WH_PENDING] = "SELECT count(*) FROM webhook_outbox WHERE state = 'pending'",
    [ST_WH_OLDEST] =
        "SELECT COALESCE(min(created_at), 0) FROM webhook_outbox WHERE state = 'pending'",
    [ST_OPS_INSERT] = "INSERT INTO operations(" OPS_COLS ") "
                      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    [ST_OPS_GET] = "SELECT " OPS_COLS " FROM operations WHERE env_id = ?1 AND id = ?2",
    /*
     * ?1 env, ?2 connection_id, ?3 integration, ?4 kind, ?5 outcome, ?6 id >= (time from),
     * ?7 id < (time to, or the cursor), ?8 limit. A NULL parameter disables its filter.
     */
    [ST_OPS_LIST] = "SELECT " OPS_COLS " FROM operations WHERE env_id = ?1 "
                    "AND (?2 IS NULL OR connection_id = ?2) AND (?3 IS NULL OR integration = ?3) "
                    "AND (?4 IS NULL OR kind = ?4) AND (?5 IS NULL OR outcome = ?5) "
                    "AND id >= COALESCE(?6, '') AND (?7 IS NULL OR id < ?7) "
                    "ORDER BY id DESC LIMIT ?8",
    [ST_OPS_NTH] = "SELECT id FROM operations ORDER BY id DESC LIMIT 1 OFFSET ?1",
    [ST_OPS_PRUNE] = "DELETE FROM operations WHERE id IN "
                     "(SELECT id FROM operations WHERE id < ?1 ORDER BY id LIMIT ?2)",
    [ST_OPS_COUNT] = "SELECT count(*) FROM operations",
    [ST_RS_CONN_SCAN] = "SELECT id, uid, credentials_sealed, env_id, provider_config_key, "
                        "connection_id FROM connections "
                        "WHERE id > ?1 AND credentials_sealed IS NOT NULL ORDER BY id LIMIT ?2",
    [ST_RS_CONN_CAS] = "UPDATE connections SET credentials_sealed = ?2 "
                       "WHERE id = ?1 AND credentials_sealed = ?3",
    [ST_RS_ENV_SCAN] = "SELECT id, webhook_key_sealed FROM environments "
                       "WHERE id > ?1 AND webhook_key_sealed IS NOT NULL ORDER BY id LIMIT ?2",
    [ST_RS_ENV_CAS] = "UPDATE environments SET webhook_key_sealed = ?2 "
                      "WHERE id = ?1 AND webhook_key_sealed = ?3",
    /* Sealed meta rows are exactly those whose key starts with "sealed:". */
    [ST_RS_META_SCAN] = "SELECT key, value FROM meta WHERE key > ?1 "
                        "AND substr(key, 1, 7) = 'sealed:' ORDER BY key LIMIT ?2",
    [ST_RS_META_CAS] = "UPDATE meta SET value = ?2 WHERE key = ?1 AND value = ?3",
    [ST_ADM_INSERT] = "INSERT INTO admin_users(email, password_hash, created_at) "
                      "VALUES (?1, ?2, ?3) RETURNING id",
    [ST_ADM_GET_EMAIL] = "SELECT " ADM_COLS " FROM admin_users WHERE email = ?1",
    [ST_ADM_LIST] = "SELECT " ADM_COLS " FROM admin_users ORDER BY email",
    [ST_ADM_DELETE] = "DELETE FROM admin_users WHERE email = ?1",
    [ST_ADM_FAILED] = "UPDATE admin_users SET failed_attempts = failed_attempts + 1 "
                      "WHERE id = ?1 RETURNING failed_attempts",
    [ST_ADM_LOCK] = "UPDATE admin_users SET locked_until = ?2 WHERE id = ?1",
    [ST_ADM_OK] = "UPDATE admin_users SET failed_attempts = 0, locked_until = 0, "
                  "last_login_at = ?2 WHERE id = ?1",
    [ST_ASESS_INSERT] = "INSERT INTO admin_sessions(admin_id, token_hash, created_at, "
                        "last_seen_at, expires_at) VALUES (?1, ?2, ?3, ?3, ?4) RETURNING id",
    [ST_ASESS_GET] = "SELECT " ASESS_COLS " FROM admin_sessions s "
                     "JOIN admin_users a ON a.id = s.admin_id WHERE s.token_hash = ?1",
    [ST_ASESS_TOUCH] = "UPDATE admin_sessions SET last_seen_at = ?2 WHERE id = ?1",
    [ST_ASESS_DELETE] = "DELETE FROM admin_sessions WHERE token_hash = ?1",
    [ST_ASESS_PURGE] = "DELETE FROM admin_sessions WHERE expires_at <= ?1 OR last_seen_at <= ?2",
    [ST_KEY_LIST] = "SELECT " KEY_COLS " FROM api_keys WHERE env_id = ?1 ORDER BY id",
    [ST_KEY_REVOKE_ONE] = "UPDATE api_keys SET revoked_at = ?3 "
                          "WHERE env_id = ?1 AND id = ?2 AND revoked_at = 0",
    [ST_KEY_LABEL] = "UPDATE api_keys SET label = ?3 WHERE env_id = ?1 AND id = ?2",
};
/* ---- connection pool ---- */

/* The cursor: CUR_FIRST is a row stepped to by exec and not yet handed out by next. */
enum cur_state { CUR_DONE, CUR_FIRST, CUR_ROW };

struct sq_store;

struct db_conn {
    sqlite3 *db;
    sqlite3_stmt *st[ST__COUNT]; /* prepared on first use */
    struct sq_store *q;          /* the pool it belongs to */
    sqlite3_stmt *cur;           /* the open cursor (one of st[]), or NULL */
    enum cur_state state;
    int64_t changes; /* rows changed by the cursor's statement, once it is done */
    struct db_conn *next;
};

struct sq_store {
    char *path;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct db_conn *idle; /* LIFO of connections not in use */
    size_t nconns;        /* open connections, idle or in use */
};

/*
 * Maps a SQLite result code to latch_rc and logs the unexpected ones. op names the operation;
 * the message may quote SQL text or schema names, never bound values.
 */
static latch_rc
sq_fail(sqlite3 *db, int src, const char *op)
{
    char q[256];
    int prim = src & 0xff;

    switch (src) {
    case SQLITE_CONSTRAINT_UNIQUE:
    case SQLITE_CONSTRAINT_PRIMARYKEY:
        return LATCH_E_CONFLICT;
    case SQLITE_CONSTRAINT_FOREIGNKEY:
        return LATCH_E_NOT_FOUND; /* the parent row (environment, integration) is missing */
    default:
        break;
    }
    if (prim == SQLITE_CONSTRAINT) {
        /* CHECK / NOT NULL: the caller passed a value the schema rejects (e.g. invalid JSON). */
        log_debug("store: constraint failed", "op=%s code=%d err=%s", op, src,
                  log_quote(q, sizeof q, db != NULL ? sqlite3_errmsg(db) : sqlite3_errstr(src)));
        return LATCH_E_INVAL;
    }
    log_warn("store: sqlite error", "op=%s code=%d err=%s", op, src,
             log_quote(q, sizeof q, db != NULL ? sqlite3_errmsg(db) : sqlite3_errstr(src)));
    if (prim == SQLITE_BUSY || prim == SQLITE_LOCKED)
        return LATCH_E_BUSY;
    if (prim == SQLITE_CANTOPEN)
        return LATCH_E_UNAVAILABLE;
    return LATCH_E_DB;
}

static latch_rc
exec_sql(sqlite3 *db, const char *sql, const char *op, struct latch_err *err)
{
    char *msg = NULL;
    int src;

    src = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (src != SQLITE_OK) {
        latch_err_set(err, "store: %s: %s", op, msg != NULL ? msg : sqlite3_errstr(src));
        sqlite3_free(msg);
        return sq_fail(db, src, op);
    }
    return LATCH_OK;
}

static void
conn_close(struct db_conn *c)
{
    if (c == NULL)
        return;
    for (int i = 0; i < ST__COUNT; i++)
        sqlite3_finalize(c->st[i]);
    sqlite3_close_v2(c->db);
    free(c);
}

static latch_rc
conn_open(const char *path, struct db_conn **out, struct latch_err *err)
{
    const int flags =
        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE;
    struct db_conn *c;
    latch_rc rc;
    int src;

    *out = NULL;
    c = xcalloc(1, sizeof *c);
    src = sqlite3_open_v2(path, &c->db, flags, NULL);
    if (src != SQLITE_OK) {
        latch_err_set(err, "store: cannot open sqlite database: %s",
                      c->db != NULL ? sqlite3_errmsg(c->db) : sqlite3_errstr(src));
        (void)sq_fail(c->db, src, "open");
        rc = LATCH_E_UNAVAILABLE;
        goto out;
    }
    (void)sqlite3_extended_result_codes(c->db, 1);
    (void)sqlite3_db_config(c->db, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)NULL);
    (void)sqlite3_db_config(c->db, SQLITE_DBCONFIG_ENABLE_LOAD_EXTENSION, 0, (int *)NULL);
    (void)sqlite3_db_config(c->db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, (int *)NULL);
    (void)sqlite3_busy_timeout(c->db, STORE_SQLITE_BUSY_MS);
    rc = exec_sql(c->db,
                  "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; "
                  "PRAGMA trusted_schema=OFF;",
                  "pragmas", err);
    if (rc != LATCH_OK)
        goto out;
    *out = c;
    c = NULL;
out:
    conn_close(c);
    return rc;
}

static latch_rc
conn_acquire(struct sq_store *q, struct db_conn **out)
{
    struct db_conn *c = NULL;
    struct latch_err err;
    latch_rc rc;

    pthread_mutex_lock(&q->mu);
    while (q->idle == NULL && q->nconns >= STORE_SQLITE_MAX_CONNS)
        pthread_cond_wait(&q->cv, &q->mu);
    if (q->idle != NULL) {
        c = q->idle;
        q->idle = c->next;
        c->next = NULL;
        pthread_mutex_unlock(&q->mu);
        c->q = q;
        *out = c;
        return LATCH_OK;
    }
    q->nconns++;
    pthread_mutex_unlock(&q->mu);

    latch_err_clear(&err);
    rc = conn_open(q->path, &c, &err);
    if (rc != LATCH_OK) {
        log_warn("store: cannot open connection", "rc=%d", (int)rc);
        pthread_mutex_lock(&q->mu);
        q->nconns--;
        pthread_cond_signal(&q->cv);
        pthread_mutex_unlock(&q->mu);
        return rc;
    }
    c->q = q;
    *out = c;
    return LATCH_OK;
}

static void
conn_release(struct sq_store *q, struct db_conn *c)
{
    if (c == NULL)
        return;
    /* Safety net: never hand out a connection with an open transaction. */
    if (!sqlite3_get_autocommit(c->db))
        (void)sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
    pthread_mutex_lock(&q->mu);
    c->next = q->idle;
    q->idle = c;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

/* ---- statement helpers ---- */

/*
 * Binds ?1..?n from p. Bound text/blobs are borrowed (SQLITE_STATIC): they must stay valid until
 * the cursor ends.
 */
static int
bind_params(sqlite3_stmt *st, const struct db_params *p)
{
    int src = SQLITE_OK;

    /* Catches arguments that do not match the statement (a programming error). */
    if (sqlite3_bind_parameter_count(st) != p->n)
        return SQLITE_MISUSE;
    for (int k = 0; k < p->n && src == SQLITE_OK; k++) {
        const struct db_val *v = &p->v[k];
        int idx = k + 1;

        switch (v->type) {
        case 't':
            src = v->s != NULL ? sqlite3_bind_text(st, idx, v->s, -1, SQLITE_STATIC)
                               : sqlite3_bind_null(st, idx);
            break;
        case 'i':
            src = sqlite3_bind_int64(st, idx, (sqlite3_int64)v->i);
            break;
        case 'B':
            src = sqlite3_bind_int(st, idx, v->i != 0 ? 1 : 0);
            break;
        case 'h':
            src = sqlite3_bind_blob(st, idx, v->h, 32, SQLITE_STATIC);
            break;
        default:
            src = SQLITE_MISUSE;
            break;
        }
    }
    return src;
}

static void
q_done(sqlite3_stmt *st)
{
    if (st == NULL)
        return;
    (void)sqlite3_reset(st);
    (void)sqlite3_clear_bindings(st);
}

/* Gets the cached statement id of c, preparing it on first use. */
static latch_rc
stmt_get(struct db_conn *c, enum st_id id, sqlite3_stmt **out)
{
    int src;

    *out = NULL;
    if (st_sql[id] == NULL)
        return LATCH_E_INTERNAL; /* not a statement of this dialect */
    if (c->st[id] == NULL) {
        src =
            sqlite3_prepare_v3(c->db, st_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &c->st[id], NULL);
        if (src != SQLITE_OK) {
            c->st[id] = NULL;
            return sq_fail(c->db, src, "prepare");
        }
    }
    *out = c->st[id];
    return LATCH_OK;
}

/* Steps once: LATCH_OK with *row telling whether a row is available, or the mapped error. */
static latch_rc
q_step(struct db_conn *c, sqlite3_stmt *st, bool *row)
{
    int src = sqlite3_step(st);

    *row = false;
    if (src == SQLITE_ROW) {
        *row = true;
        return LATCH_OK;
    }
    if (src == SQLITE_DONE)
        return LATCH_OK;
    if ((src & 0xff) != SQLITE_CONSTRAINT) {
        char sql[160];

        /* Statement text has only placeholders, so it is safe to log. */
        log_debug("store: step failed", "sql=%s", log_quote(sql, sizeof sql, sqlite3_sql(st)));
    }
    return sq_fail(c->db, src, "step");
}

/* ---- the cursor ---- */

static void
sq_end(struct db_conn *c)
{
    if (c == NULL || c->cur == NULL)
        return;
    q_done(c->cur);
    c->cur = NULL;
    c->state = CUR_DONE;
}

/*
 * Binds and takes the first step, which runs the statement's writes (a RETURNING statement
 * does all of them there); its row, if any, is handed out by the first sq_next.
 */
static latch_rc
sq_exec(struct db_conn *c, enum st_id id, const struct db_params *p)
{
    sqlite3_stmt *st = NULL;
    latch_rc rc;
    bool row;
    int src;

    sq_end(c);
    c->changes = 0;
    rc = stmt_get(c, id, &st);
    if (rc != LATCH_OK)
        return rc;
    src = bind_params(st, p);
    if (src != SQLITE_OK) {
        q_done(st);
        return sq_fail(c->db, src, "bind");
    }
    rc = q_step(c, st, &row);
    if (rc != LATCH_OK) {
        q_done(st);
        return rc;
    }
    c->cur = st;
    c->state = row ? CUR_FIRST : CUR_DONE;
    if (!row)
        c->changes = sqlite3_changes(c->db);
    return LATCH_OK;
}

static latch_rc
sq_next(struct db_conn *c, bool *row)
{
    latch_rc rc;

    *row = false;
    if (c->cur == NULL || c->state == CUR_DONE)
        return LATCH_OK;
    if (c->state == CUR_FIRST) {
        c->state = CUR_ROW;
        *row = true;
        return LATCH_OK;
    }
    rc = q_step(c, c->cur, row);
    if (rc != LATCH_OK || !*row) {
        c->state = CUR_DONE;
        if (rc == LATCH_OK)
            c->changes = sqlite3_changes(c->db);
    }
    return rc;
}

static int64_t
sq_changes(struct db_conn *c)
{
    bool row = true;

    /* A later step can fail only for RETURNING statements; their callers read with sq_next. */
    while (row) {
        if (sq_next(c, &row) != LATCH_OK)
            break;
    }
    return c->changes;
}

static bool
sq_col_null(struct db_conn *c, int col)
{
    return sqlite3_column_type(c->cur, col) == SQLITE_NULL;
}

static int64_t
sq_col_i64(struct db_conn *c, int col)
{
    return (int64_t)sqlite3_column_int64(c->cur, col);
}

static bool
sq_col_bool(struct db_conn *c, int col)
{
    return sqlite3_column_int(c->cur, col) != 0;
}

static const char *
sq_col_text(struct db_conn *c, int col)
{
    return (const char *)sqlite3_column_text(c->cur, col);
}

static char *
col_str(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);

    if (t == NULL)
        return NULL;
    return xmemdup(t, (size_t)sqlite3_column_bytes(st, i) + 1);
}

static char *
sq_col_str(struct db_conn *c, int col)
{
    return col_str(c->cur, col);
}

static bool
sq_col_hash(struct db_conn *c, int col, unsigned char h[32])
{
    const void *b = sqlite3_column_blob(c->cur, col);

    memset(h, 0, 32);
    if (b == NULL || sqlite3_column_bytes(c->cur, col) != 32)
        return false;
    memcpy(h, b, 32);
    return true;
}

/* Runs a parameterless statement of this dialect to completion. */
static latch_rc
q_run0(struct db_conn *c, enum st_id id)
{
    struct db_params p = {0};
    latch_rc rc = sq_exec(c, id, &p);

    (void)sq_changes(c);
    sq_end(c);
    return rc;
}

static latch_rc
sq_begin(struct db_conn *c)
{
    return q_run0(c, ST_BEGIN);
}

static latch_rc
sq_commit(struct db_conn *c)
{
    latch_rc rc = q_run0(c, ST_COMMIT);

    if (rc != LATCH_OK && !sqlite3_get_autocommit(c->db))
        (void)q_run0(c, ST_ROLLBACK);
    return rc;
}

static void
sq_rollback(struct db_conn *c)
{
    if (c != NULL && !sqlite3_get_autocommit(c->db))
        (void)q_run0(c, ST_ROLLBACK);
}

static latch_rc
sq_acquire(void *db, struct db_conn **out)
{
    return conn_acquire(db, out);
}

static void
sq_release(struct db_conn *c)
{
    if (c == NULL)
        return;
    sq_end(c);
    conn_release(c->q, c);
}

/* ---- open / close / migrate ---- */

static void
sq_close(void *impl)
{
    struct sq_store *q = impl;
    struct db_conn *c, *next;
    size_t closed = 0;

    if (q == NULL)
        return;
    for (c = q->idle; c != NULL; c = next) {
        next = c->next;
        conn_close(c);
        closed++;
    }
    if (closed != q->nconns)
        log_warn("store: closed while connections were in use", "open=%zu closed=%zu", q->nconns,
                 closed);
    pthread_cond_destroy(&q->cv);
    pthread_mutex_destroy(&q->mu);
    free(q->path);
    free(q);
}

static latch_rc
sq_open(const char *path, void **impl_out, struct latch_err *err)
{
    struct sq_store *q = NULL;
    struct db_conn *c = NULL;
    struct stat sb;
    latch_rc rc;
    int fd;

    *impl_out = NULL;
    if (strcmp(path, ":memory:") == 0) {
        latch_err_set(err, "store: in-memory sqlite is not supported (one connection per thread)");
        return LATCH_E_INVAL;
    }
    /* Create the file ourselves so that it (and the -wal/-shm files SQLite derives) is 0600. */
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        latch_err_set(err, "store: cannot open %s: %s", path, strerror(errno));
        return LATCH_E_UNAVAILABLE;
    }
    if (fstat(fd, &sb) == 0 && (sb.st_mode & 077) != 0)
        log_warn("store: database file is readable by others; chmod 600 it", "mode=%03o",
                 (unsigned)(sb.st_mode & 0777));
    (void)close(fd);

    q = xcalloc(1, sizeof *q);
    q->path = xstrdup(path);
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);

    /* Open one connection now so that a bad path or file fails at startup. */
    rc = conn_open(path, &c, err);
    if (rc != LATCH_OK)
        goto out;
    q->idle = c;
    q->nconns = 1;
    *impl_out = q;
    q = NULL;
out:
    sq_close(q);
    return rc;
}

static latch_rc
user_version(struct db_conn *c, int *v)
{
    struct db_params p = {0};
    latch_rc rc;
    bool row = false;

    *v = -1;
    rc = sq_exec(c, ST_USER_VERSION, &p);
    if (rc == LATCH_OK)
        rc = sq_next(c, &row);
    if (rc == LATCH_OK && row)
        *v = sqlite3_column_int(c->cur, 0);
    else if (rc == LATCH_OK)
        rc = LATCH_E_DB;
    sq_end(c);
    return rc;
}

static latch_rc
sq_migrate(void *impl, struct latch_err *err)
{
    struct sq_store *q = impl;
    struct db_conn *c = NULL;
    sqlite3_stmt *ins = NULL;
    char pragma[64];
    latch_rc rc;
    int cur, src;
    int64_t now = latch_now_ms();

    rc = conn_acquire(q, &c);
    if (rc != LATCH_OK) {
        latch_err_set(err, "store: cannot open a connection");
        return rc;
    }
    rc = sq_begin(c);
    if (rc != LATCH_OK) {
        latch_err_set(err, "store: cannot begin migration: %s", sqlite3_errmsg(c->db));
        goto out;
    }
    rc = user_version(c, &cur);
    if (rc != LATCH_OK) {
        latch_err_set(err, "store: cannot read schema version: %s", sqlite3_errmsg(c->db));
        goto out;
    }
    if (cur > STORE_SQLITE_SCHEMA_VERSION) {
        latch_err_set(err,
                      "store: database schema version %d is newer than this binary knows (%d); "
                      "upgrade latch",
                      cur, STORE_SQLITE_SCHEMA_VERSION);
        rc = LATCH_E_INVAL;
        goto out;
    }
    if (cur == STORE_SQLITE_SCHEMA_VERSION)
        goto out; /* nothing to do; the read-only transaction is rolled back */

    for (size_t i = 0; i < sizeof store_sqlite_migrations / sizeof store_sqlite_migrations[0];
         i++) {
        if (store_sqlite_migrations[i].version <= cur)
            continue;
        rc = exec_sql(c->db, store_sqlite_migrations[i].sql, "migrate", err);
        if (rc != LATCH_OK)
            goto out;
    }
    src = sqlite3_prepare_v2(c->db,
                             "INSERT INTO schema_migrations(version, applied_at) VALUES (?1, ?2)",
                             -1, &ins, NULL);
    if (src != SQLITE_OK) {
        latch_err_set(err, "store: migrate: %s", sqlite3_errmsg(c->db));
        rc = sq_fail(c->db, src, "migrate");
        goto out;
    }
    for (int v = cur + 1; v <= STORE_SQLITE_SCHEMA_VERSION; v++) {
        (void)sqlite3_bind_int(ins, 1, v);
        (void)sqlite3_bind_int64(ins, 2, (sqlite3_int64)now);
        src = sqlite3_step(ins);
        (void)sqlite3_reset(ins);
        if (src != SQLITE_DONE) {
            latch_err_set(err, "store: migrate: %s", sqlite3_errmsg(c->db));
            rc = sq_fail(c->db, src, "migrate");
            goto out;
        }
    }
    /* An integer we own, not input: safe to format (PRAGMA takes no parameters). */
    (void)snprintf(pragma, sizeof pragma, "PRAGMA user_version = %d", STORE_SQLITE_SCHEMA_VERSION);
    rc = exec_sql(c->db, pragma, "migrate", err);
    if (rc != LATCH_OK)
        goto out;
    rc = sq_commit(c);
    if (rc != LATCH_OK) {
        latch_err_set(err, "store: migrate commit: %s", sqlite3_errmsg(c->db));
        goto out;
    }
    log_info("store: schema migrated", "from=%d to=%d", cur, STORE_SQLITE_SCHEMA_VERSION);
out:
    sqlite3_finalize(ins);
    sq_rollback(c);
    conn_release(q, c);
    return rc;
}

static int
sq_schema_version(void *impl)
{
    struct sq_store *q = impl;
    struct db_conn *c = NULL;
    int v = -1;

    if (conn_acquire(q, &c) != LATCH_OK)
        return -1;
    (void)user_version(c, &v);
    conn_release(q, c);
    return v;
}

/* ---- integrity ---- */

static latch_rc
sq_integrity_check(void *impl, struct latch_err *err)
{
    struct sq_store *q = impl;
    struct db_conn *c = NULL;
    sqlite3_stmt *st = NULL;
    latch_rc rc;
    int src;

    rc = conn_acquire(q, &c);
    if (rc != LATCH_OK) {
        latch_err_set(err, "store: cannot open a connection");
        return rc;
    }
    src = sqlite3_prepare_v2(c->db, "PRAGMA integrity_check", -1, &st, NULL);
    if (src == SQLITE_OK)
        src = sqlite3_step(st);
    if (src != SQLITE_ROW) {
        latch_err_set(err, "store: integrity_check: %s", sqlite3_errmsg(c->db));
        rc = sq_fail(c->db, src, "integrity_check");
        goto out;
    }
    if (sqlite3_column_text(st, 0) == NULL ||
        strcmp((const char *)sqlite3_column_text(st, 0), "ok") != 0) {
        latch_err_set(err, "store: integrity_check: %s",
                      sqlite3_column_text(st, 0) != NULL ? (const char *)sqlite3_column_text(st, 0)
                                                         : "(null)");
        rc = LATCH_E_DB;
        goto out;
    }
    sqlite3_finalize(st);
    st = NULL;

    src = sqlite3_prepare_v2(c->db, "PRAGMA foreign_key_check", -1, &st, NULL);
    if (src == SQLITE_OK)
        src = sqlite3_step(st);
    if (src == SQLITE_ROW) {
        const unsigned char *t = sqlite3_column_text(st, 0);

        latch_err_set(err, "store: foreign key violation in table %s",
                      t != NULL ? (const char *)t : "?");
        rc = LATCH_E_DB;
        goto out;
    }
    if (src != SQLITE_DONE) {
        latch_err_set(err, "store: foreign_key_check: %s", sqlite3_errmsg(c->db));
        rc = sq_fail(c->db, src, "foreign_key_check");
        goto out;
    }
out:
    sqlite3_finalize(st);
    conn_release(q, c);
    return rc;
}

/* ---- raw rows (export / import) ---- */

/* Longest dynamic SQL text (identifiers from store_tables only). */
#define STORE_SQLITE_MAX_RAW_SQL 2048
/* Rows read per batch by raw_scan. */
#define STORE_SQLITE_RAW_BATCH 500

static latch_rc
sq_raw_scan(void *impl, const struct store_table *t, store_raw_scan_fn fn, void *ud)
{
    struct sq_store *q = impl;
    struct db_conn *c = NULL;
    sqlite3_stmt *st = NULL;
    struct buf sql;
    int64_t last_id = 0;
    char *last_key = xstrdup("");
    latch_rc rc;
    const bool by_id = t->cols[0].type == STORE_COL_INT;

    /* The SQL holds identifiers from store_tables only; the cursor value is bound. */
    buf_init(&sql, STORE_SQLITE_MAX_RAW_SQL);
    rc = buf_puts(&sql, "SELECT ");
    if (rc == LATCH_OK)
        rc = store_table_cols(&sql, t, FETCHED_EXPR("connections"));
    if (rc == LATCH_OK)
        rc = buf_printf(&sql, " FROM %s WHERE %s > ?1 ORDER BY %s LIMIT %d", t->name,
                        t->cols[0].name, t->cols[0].name, STORE_SQLITE_RAW_BATCH);
    if (rc != LATCH_OK)
        goto out;
    rc = conn_acquire(q, &c);
    if (rc != LATCH_OK)
        goto out;
    if (sqlite3_prepare_v2(c->db, sql.data, -1, &st, NULL) != SQLITE_OK) {
        rc = sq_fail(c->db, sqlite3_errcode(c->db), "raw scan");
        goto out;
    }
    for (;;) {
        int rows = 0;
        bool row = true;

        (void)sqlite3_reset(st);
        if (by_id)
            (void)sqlite3_bind_int64(st, 1, (sqlite3_int64)last_id);
        else
            (void)sqlite3_bind_text(st, 1, last_key, -1, SQLITE_TRANSIENT);
        while (rc == LATCH_OK) {
            json_t *obj;

            rc = q_step(c, st, &row);
            if (rc != LATCH_OK || !row)
                break;
            obj = json_object();
            for (size_t k = 0; k < t->ncols && rc == LATCH_OK; k++) {
                struct store_val v;
                int col = (int)k;

                memset(&v, 0, sizeof v);
                v.null = sqlite3_column_type(st, col) == SQLITE_NULL;
                if (!v.null) {
                    switch (t->cols[k].type) {
                    case STORE_COL_INT:
                    case STORE_COL_BOOL:
                        v.i = (int64_t)sqlite3_column_int64(st, col);
                        break;
                    case STORE_COL_TEXT:
                        v.s = (const char *)sqlite3_column_text(st, col);
                        break;
                    case STORE_COL_HASH:
                        if (sqlite3_column_bytes(st, col) != 32)
                            rc = LATCH_E_DB;
                        else
                            memcpy(v.h, sqlite3_column_blob(st, col), 32);
                        break;
                    }
                }
                if (rc == LATCH_OK)
                    rc = store_val_put(&t->cols[k], obj, &v);
            }
            if (rc == LATCH_OK) {
                if (by_id) {
                    last_id = (int64_t)sqlite3_column_int64(st, 0);
                } else {
                    free(last_key);
                    last_key = col_str(st, 0);
                }
                rc = fn(t, obj, ud);
            }
            json_decref(obj);
            rows++;
        }
        if (rc != LATCH_OK || rows < STORE_SQLITE_RAW_BATCH)
            break;
    }
out:
    sqlite3_finalize(st);
    conn_release(q, c);
    buf_free(&sql);
    free(last_key);
    return rc;
}

/* Binds and inserts one raw row of t with st (an INSERT of all of t's columns). */
static latch_rc
raw_insert_row(struct db_conn *c, sqlite3_stmt *st, const struct store_table *t, json_t *row)
{
    latch_rc rc = LATCH_OK;
    int src = SQLITE_OK;
    bool more = true;

    if (!json_is_object(row))
        return LATCH_E_INVAL;
    (void)sqlite3_reset(st);
    (void)sqlite3_clear_bindings(st);
    for (size_t k = 0; k < t->ncols && src == SQLITE_OK; k++) {
        struct store_val v;
        int idx = (int)k + 1;

        rc = store_val_get(&t->cols[k], row, &v);
        if (rc != LATCH_OK)
            return rc;
        if (v.null) {
            src = sqlite3_bind_null(st, idx);
            continue;
        }
        switch (t->cols[k].type) {
        case STORE_COL_INT:
        case STORE_COL_BOOL:
            src = sqlite3_bind_int64(st, idx, (sqlite3_int64)v.i);
            break;
        case STORE_COL_TEXT:
            src = sqlite3_bind_text(st, idx, v.s, -1, SQLITE_TRANSIENT);
            break;
        case STORE_COL_HASH:
            src = sqlite3_bind_blob(st, idx, v.h, 32, SQLITE_TRANSIENT);
            break;
        }
    }
    if (src != SQLITE_OK)
        return sq_fail(c->db, src, "raw import bind");
    while (more && rc == LATCH_OK)
        rc = q_step(c, st, &more);
    (void)sqlite3_reset(st);
    return rc;
}

static latch_rc
sq_raw_import(void *impl, store_raw_next_fn next, void *ud, struct latch_err *err)
{
    struct sq_store *q = impl;
    struct db_conn *c = NULL;
    sqlite3_stmt *ins[16];
    sqlite3_stmt *st = NULL;
    struct buf sql;
    latch_rc rc;
    bool row;

    memset(ins, 0, sizeof ins);
    buf_init(&sql, STORE_SQLITE_MAX_RAW_SQL);
    rc = conn_acquire(q, &c);
    if (rc != LATCH_OK) {
        latch_err_set(err, "store: cannot open a connection");
        goto out;
    }
    rc = sq_begin(c);
    if (rc != LATCH_OK)
        goto out;
    if (sqlite3_prepare_v2(c->db,
                           "SELECT (SELECT count(*) FROM meta) + (SELECT count(*) FROM "
                           "environments)",
                           -1, &st, NULL) != SQLITE_OK) {
        rc = sq_fail(c->db, sqlite3_errcode(c->db), "import");
        goto out;
    }
    rc = q_step(c, st, &row);
    if (rc == LATCH_OK && (!row || sqlite3_column_int64(st, 0) != 0)) {
        latch_err_set(err, "store: import needs an empty database (it already holds data)");
        rc = LATCH_E_CONFLICT;
    }
    sqlite3_finalize(st);
    st = NULL;
    if (rc != LATCH_OK)
        goto out;
    for (size_t nrows = 0;; nrows++) {
        const struct store_table *t = NULL;
        json_t *obj = NULL;
        size_t ti;

        rc = next(&t, &obj, ud);
        if (rc != LATCH_OK) {
            if (err->msg[0] == '\0')
                latch_err_set(err, "store: import: bad input near row %zu", nrows + 1);
            goto out;
        }
        if (obj == NULL)
            break;
        ti = (size_t)(t - store_tables);
        if (ti >= store_ntables || ti >= sizeof ins / sizeof ins[0]) {
            rc = LATCH_E_INVAL;
            goto out;
        }
        if (ins[ti] == NULL) {
            buf_reset(&sql);
            rc = buf_printf(&sql, "INSERT INTO %s (", t->name);
            if (rc == LATCH_OK)
                rc = store_table_cols(&sql, t, NULL);
            if (rc == LATCH_OK)
                rc = buf_puts(&sql, ") VALUES (");
            for (size_t k = 0; k < t->ncols && rc == LATCH_OK; k++)
                rc = buf_printf(&sql, "%s?%zu", k ? ", " : "", k + 1);
            if (rc == LATCH_OK)
                rc = buf_puts(&sql, ")");
            if (rc != LATCH_OK)
                goto out;
            if (sqlite3_prepare_v2(c->db, sql.data, -1, &ins[ti], NULL) != SQLITE_OK) {
                latch_err_set(err, "store: import: cannot prepare insert into %s", t->name);
                rc = sq_fail(c->db, sqlite3_errcode(c->db), "import");
                goto out;
            }
        }
        rc = raw_insert_row(c, ins[ti], t, obj);
        if (rc != LATCH_OK) {
            latch_err_set(err, "store: import: row %zu (table %s) refused: %s", nrows + 1, t->name,
                          latch_strerror(rc));
            goto out;
        }
    }
    rc = sq_commit(c);
out:
    for (size_t i = 0; i < sizeof ins / sizeof ins[0]; i++)
        sqlite3_finalize(ins[i]);
    sqlite3_finalize(st);
    if (c != NULL)
        sq_rollback(c);
    conn_release(q, c);
    buf_free(&sql);
    return rc;
}

const struct dialect store_sqlite_dialect = {
    .name = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .migrate = sq_migrate,
    .schema_version = sq_schema_version,
    .integrity_check = sq_integrity_check,
    .touch_many = NULL, /* ST_CONN_TOUCH per id in one BEGIN IMMEDIATE (store.c) */
    .raw_scan = sq_raw_scan,
    .raw_import = sq_raw_import,
    .acquire = sq_acquire,
    .release = sq_release,
    .begin = sq_begin,
    .commit = sq_commit,
    .rollback = sq_rollback,
    .exec = sq_exec,
    .next = sq_next,
    .changes = sq_changes,
    .end = sq_end,
    .col_null = sq_col_null,
    .col_i64 = sq_col_i64,
    .col_bool = sq_col_bool,
    .col_text = sq_col_text,
    .col_str = sq_col_str,
    .col_hash = sq_col_hash,
};
