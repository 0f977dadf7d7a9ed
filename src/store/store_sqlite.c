/*
 * store_sqlite.c - the SQLite backend of store.h (see docs/internals/store.md).
 *
 * Threads: a mutex-protected pool of sqlite3 connections (opened NOMUTEX), each used by one
 * thread at a time: every operation takes a connection, runs, and gives it back. So each calling
 * thread effectively has its own connection, and the pool grows to the number of threads that
 * call the store at once (capped by STORE_SQLITE_MAX_CONNS; past it callers wait).
 * Statements are prepared once per connection (SQLITE_PREPARE_PERSISTENT), cached by enum st_id,
 * and reset + unbound after each use. Writes run in BEGIN IMMEDIATE ... COMMIT; the busy handler
 * (busy_timeout) retries a locked database for STORE_SQLITE_BUSY_MS before LATCH_E_BUSY.
 * Only bound parameters reach SQL; bound values are never logged.
 */
#include "store/store_backend.h"

#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <sqlite3.h>

#include "core/latch_limits.h"
#include "core/log.h"
#include "util/buf.h"
#include "util/xalloc.h"

#include "store/store_sqlite_schema.h"
#include "util/clock.h"

/* Connections per store (one per concurrently calling thread); callers wait past it. */
#define STORE_SQLITE_MAX_CONNS 64
/* How long a writer waits for the database lock before LATCH_E_BUSY. */
#define STORE_SQLITE_BUSY_MS 5000
/* Rows read per batch by store_reseal_all (each batch is written in one short transaction). */
#define STORE_RESEAL_BATCH 100
/* Bounds on list filters (integration keys, tag pairs) bound as one JSON array each. */
#define STORE_MAX_FILTER_KEYS 100
#define STORE_MAX_FILTER_TAGS 64

/* ---- statements ---- */

enum st_id {
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_USER_VERSION,
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
    ST_CONN_FIND,
    ST_CONN_INSERT,
    ST_CONN_REPLACE,
    ST_CONN_GET,
    ST_CONN_GET_ENV_ID,
    ST_CONN_GET_ROW,
    ST_CONN_LIST,
    ST_CONN_DELETE,
    ST_CONN_SET_META,
    ST_CONN_PATCH,
    ST_CONN_TOUCH,
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
    "custom_json, "                                                                                \
    "created_at, updated_at"
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
    [ST_KEY_LOOKUP] = "SELECT env_id FROM api_keys WHERE key_hash = ?1 AND revoked_at = 0",
    [ST_KEY_REVOKE] = "UPDATE api_keys SET revoked_at = ?2 WHERE env_id = ?1 AND revoked_at = 0",
    [ST_KEY_COUNT] = "SELECT count(*) FROM api_keys WHERE env_id = ?1 AND revoked_at = 0",
    [ST_INT_INSERT] = "INSERT INTO integrations(env_id, unique_key, provider, display_name, "
                      "oauth_scopes, forward_webhooks, custom_json, created_at, updated_at) "
                      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8) RETURNING id",
    [ST_INT_GET] = "SELECT " INT_COLS " FROM integrations WHERE env_id = ?1 AND unique_key = ?2",
    [ST_INT_LIST] = "SELECT " INT_COLS " FROM integrations WHERE env_id = ?1 ORDER BY id",
    [ST_INT_UPDATE] = "UPDATE integrations SET unique_key = ?3, provider = ?4, display_name = ?5, "
                      "oauth_scopes = ?6, forward_webhooks = ?7, custom_json = ?8, "
                      "updated_at = ?9 WHERE id = ?1 AND env_id = ?2",
    [ST_INT_DELETE] = "DELETE FROM integrations WHERE env_id = ?1 AND unique_key = ?2",
    [ST_INT_PROVIDER] = "SELECT provider FROM integrations WHERE env_id = ?1 AND unique_key = ?2",
    [ST_CONN_FIND] = "SELECT id, uid FROM connections "
                     "WHERE env_id = ?1 AND provider_config_key = ?2 AND connection_id = ?3",
    [ST_CONN_INSERT] =
        "INSERT INTO connections(env_id, uid, connection_id, provider_config_key, provider, "
        "credentials_sealed, connection_config_json, metadata_json, tags_json, end_user_json, "
        "webhook_url_override, expires_at, created_at, updated_at) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, COALESCE(?7, '{}'), ?8, COALESCE(?9, '{}'), ?10, "
        "NULLIF(?11, ''), ?12, ?13, ?13) RETURNING id",
    [ST_CONN_REPLACE] =
        "UPDATE connections SET provider = COALESCE(?2, provider), credentials_sealed = ?3, "
        "connection_config_json = COALESCE(?4, '{}'), expires_at = ?5, "
        "metadata_json = COALESCE(?6, metadata_json), tags_json = COALESCE(?7, tags_json), "
        "end_user_json = COALESCE(?8, end_user_json), "
        "webhook_url_override = " OVERRIDE_EXPR(
            "?9") ", "
                  "next_refresh_at = 0, refresh_attempts = 0, needs_reauth = 0, auth_error_json = "
                  "NULL, "
                  "version = version + 1, updated_at = ?10 WHERE id = ?1",
    [ST_CONN_GET] =
        "SELECT " CONN_COLS("c.credentials_sealed") " FROM connections c "
                                                    "WHERE c.env_id = ?1 AND c.provider_config_key "
                                                    "= ?2 AND c.connection_id = ?3",
    [ST_CONN_GET_ENV_ID] =
        "SELECT " CONN_COLS("c.credentials_sealed") " FROM connections c "
                                                    "WHERE c.env_id = ?1 AND c.id = ?2",
    [ST_CONN_GET_ROW] = "SELECT " CONN_COLS("c.credentials_sealed") " FROM connections c "
                                                                    "WHERE c.id = ?1",
    /*
     * ?1 env, ?2 connection_id, ?3 search, ?4 end user id, ?5 end user org id,
     * ?6 JSON array of integration keys, ?7 JSON array of [key, value] tag pairs (all must
     * match), ?8 limit, ?9 offset. A NULL parameter disables its filter.
     */
    [ST_CONN_LIST] = "SELECT " CONN_COLS(
        "NULL") " FROM connections c WHERE c.env_id = ?1 "
                "AND (?2 IS NULL OR c.connection_id = ?2) "
                "AND (?3 IS NULL "
                "  OR instr(lower(c.connection_id), lower(?3)) > 0 "
                "  OR instr(lower(json_extract(c.end_user_json, '$.id')), lower(?3)) > 0 "
                "  OR instr(lower(json_extract(c.end_user_json, '$.email')), lower(?3)) > 0 "
                "  OR instr(lower(json_extract(c.end_user_json, '$.display_name')), lower(?3)) > 0 "
                "  OR instr(lower(json_extract(c.end_user_json, '$.organization.id')), lower(?3)) "
                "> 0) "
                "AND (?4 IS NULL OR json_extract(c.end_user_json, '$.id') = ?4) "
                "AND (?5 IS NULL OR json_extract(c.end_user_json, '$.organization.id') = ?5) "
                "AND (?6 IS NULL OR c.provider_config_key IN (SELECT k.value FROM json_each(?6) "
                "k)) "
                "AND (?7 IS NULL OR NOT EXISTS (SELECT 1 FROM json_each(?7) f WHERE NOT EXISTS ("
                "  SELECT 1 FROM json_each(c.tags_json) t WHERE t.type = 'text' "
                "  AND t.key = json_extract(f.value, '$[0]') AND t.value = json_extract(f.value, "
                "'$[1]'))))"
                " ORDER BY c.created_at DESC, c.id DESC LIMIT ?8 OFFSET ?9",
    [ST_CONN_DELETE] = "DELETE FROM connections "
                       "WHERE env_id = ?1 AND provider_config_key = ?2 AND connection_id = ?3",
    [ST_CONN_SET_META] = "UPDATE connections SET metadata_json = ?2, updated_at = ?3 WHERE id = ?1",
    [ST_CONN_PATCH] = "UPDATE connections SET tags_json = COALESCE(?2, tags_json), "
                      "end_user_json = COALESCE(?3, end_user_json), "
                      "webhook_url_override = " OVERRIDE_EXPR("?4") ", updated_at = ?5 "
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
    [ST_WH_INSERT] = "INSERT INTO webhook_outbox(env_id, url, body, next_attempt_at, created_at) "
                     "VALUES (?1, ?2, ?3, ?4, ?4) RETURNING id",
    [ST_WH_CLAIM] = "UPDATE webhook_outbox SET claim_owner = ?1, claim_until = ?2 + ?3 "
                    "WHERE id IN (SELECT id FROM webhook_outbox WHERE state = 'pending' "
                    "AND next_attempt_at <= ?2 AND (claim_owner IS NULL OR claim_until <= ?2) "
                    "ORDER BY next_attempt_at, id LIMIT ?4) "
                    "RETURNING id, env_id, url, body, attempts, next_attempt_at, created_at",
    [ST_WH_DONE] = "DELETE FROM webhook_outbox WHERE id = ?1",
    [ST_WH_RETRY] = "UPDATE webhook_outbox SET attempts = attempts + 1, last_error = ?3, "
                    "state = CASE WHEN ?4 THEN 'dead' ELSE 'pending' END, "
                    "next_attempt_at = CASE WHEN ?4 THEN next_attempt_at ELSE ?2 END, "
                    "claim_owner = NULL, claim_until = 0 WHERE id = ?1",
    [ST_WH_PENDING] = "SELECT count(*) FROM webhook_outbox WHERE state = 'pending'",
    [ST_RS_CONN_SCAN] = "SELECT id, uid, credentials_sealed FROM connections "
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
};

/* ---- connection pool ---- */

struct sq_conn {
    sqlite3 *db;
    sqlite3_stmt *st[ST__COUNT];
    struct sq_conn *next;
};

struct sq_store {
    char *path;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct sq_conn *idle; /* LIFO of connections not in use */
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
conn_close(struct sq_conn *c)
{
    if (c == NULL)
        return;
    for (int i = 0; i < ST__COUNT; i++)
        sqlite3_finalize(c->st[i]);
    sqlite3_close_v2(c->db);
    free(c);
}

static latch_rc
conn_open(const char *path, struct sq_conn **out, struct latch_err *err)
{
    const int flags =
        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE;
    struct sq_conn *c;
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
conn_acquire(struct sq_store *q, struct sq_conn **out)
{
    struct sq_conn *c = NULL;
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
    *out = c;
    return LATCH_OK;
}

static void
conn_release(struct sq_store *q, struct sq_conn *c)
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
 * Binds ?1..?n from fmt: 't' const char * (NULL binds NULL), 'i' int64_t, 'B' int as 0/1,
 * 'h' const unsigned char * of 32 bytes. Bound text/blobs are borrowed (SQLITE_STATIC): they must
 * stay valid until q_done.
 */
static int
vbindf(sqlite3_stmt *st, const char *fmt, va_list ap)
{
    int src = SQLITE_OK;
    int idx = 1;

    /* Catches a format that does not match the statement (a programming error). */
    if ((size_t)sqlite3_bind_parameter_count(st) != strlen(fmt))
        return SQLITE_MISUSE;
    for (const char *p = fmt; *p != '\0' && src == SQLITE_OK; p++, idx++) {
        switch (*p) {
        case 't': {
            const char *v = va_arg(ap, const char *);

            src = v != NULL ? sqlite3_bind_text(st, idx, v, -1, SQLITE_STATIC)
                            : sqlite3_bind_null(st, idx);
            break;
        }
        case 'i':
            src = sqlite3_bind_int64(st, idx, (sqlite3_int64)va_arg(ap, int64_t));
            break;
        case 'B':
            src = sqlite3_bind_int(st, idx, va_arg(ap, int) != 0 ? 1 : 0);
            break;
        case 'h':
            src = sqlite3_bind_blob(st, idx, va_arg(ap, const unsigned char *), 32, SQLITE_STATIC);
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
stmt_get(struct sq_conn *c, enum st_id id, sqlite3_stmt **out)
{
    int src;

    *out = NULL;
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

/* Gets the cached statement id of c and binds the arguments (see vbindf). */
static latch_rc
q_prepare(struct sq_conn *c, enum st_id id, sqlite3_stmt **out, const char *fmt, ...)
{
    va_list ap;
    latch_rc rc;
    int src;

    rc = stmt_get(c, id, out);
    if (rc != LATCH_OK)
        return rc;
    *out = NULL;
    va_start(ap, fmt);
    src = vbindf(c->st[id], fmt, ap);
    va_end(ap);
    if (src != SQLITE_OK) {
        q_done(c->st[id]);
        return sq_fail(c->db, src, "bind");
    }
    *out = c->st[id];
    return LATCH_OK;
}

/* Steps once: LATCH_OK with *row telling whether a row is available, or the mapped error. */
static latch_rc
q_step(struct sq_conn *c, sqlite3_stmt *st, bool *row)
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

/* Runs a statement to completion (rows, if any, are discarded); *changes gets the row count. */
static latch_rc
q_exec(struct sq_conn *c, enum st_id id, int *changes, const char *fmt, ...)
{
    sqlite3_stmt *st = NULL;
    va_list ap;
    latch_rc rc;
    bool row = true;
    int src;

    if (changes != NULL)
        *changes = 0;
    rc = stmt_get(c, id, &st);
    if (rc != LATCH_OK)
        return rc;
    va_start(ap, fmt);
    src = vbindf(st, fmt, ap);
    va_end(ap);
    if (src != SQLITE_OK) {
        rc = sq_fail(c->db, src, "bind");
        goto out;
    }
    while (row) {
        rc = q_step(c, st, &row);
        if (rc != LATCH_OK)
            goto out;
    }
    if (changes != NULL)
        *changes = sqlite3_changes(c->db);
out:
    q_done(st);
    return rc;
}

/* Reads the rest of a RETURNING statement so its changes are complete before COMMIT. */
static latch_rc
q_finish(struct sq_conn *c, sqlite3_stmt *st)
{
    latch_rc rc = LATCH_OK;
    bool row = true;

    while (row && rc == LATCH_OK)
        rc = q_step(c, st, &row);
    return rc;
}

static latch_rc
tx_begin(struct sq_conn *c)
{
    return q_exec(c, ST_BEGIN, NULL, "");
}

static latch_rc
tx_commit(struct sq_conn *c)
{
    latch_rc rc = q_exec(c, ST_COMMIT, NULL, "");

    if (rc != LATCH_OK && !sqlite3_get_autocommit(c->db))
        (void)q_exec(c, ST_ROLLBACK, NULL, "");
    return rc;
}

static void
tx_rollback(struct sq_conn *c)
{
    if (!sqlite3_get_autocommit(c->db))
        (void)q_exec(c, ST_ROLLBACK, NULL, "");
}

static char *
col_str(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);

    if (t == NULL)
        return NULL;
    return xmemdup(t, (size_t)sqlite3_column_bytes(st, i) + 1);
}

/*
 * True if s is NULL or well-formed JSON (any value). The schema cannot check this itself:
 * json_valid() in a CHECK is "unsafe" under trusted_schema=OFF in SQLite 3.40.
 */
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

static int64_t
col_i64(sqlite3_stmt *st, int i)
{
    return (int64_t)sqlite3_column_int64(st, i);
}

/*
 * One write statement in its own BEGIN IMMEDIATE transaction. *changes (may be NULL) gets the
 * number of rows changed.
 */
static latch_rc
write1(struct sq_store *q, enum st_id id, int *changes, const char *fmt, ...)
{
    struct sq_conn *c = NULL;
    sqlite3_stmt *st = NULL;
    latch_rc rc;
    va_list ap;
    bool row = true;
    int src;

    if (changes != NULL)
        *changes = 0;
    rc = conn_acquire(q, &c);
    if (rc != LATCH_OK)
        return rc;
    rc = tx_begin(c);
    if (rc != LATCH_OK)
        goto out;
    rc = stmt_get(c, id, &st);
    if (rc != LATCH_OK)
        goto out;
    va_start(ap, fmt);
    src = vbindf(st, fmt, ap);
    va_end(ap);
    if (src != SQLITE_OK) {
        rc = sq_fail(c->db, src, "bind");
        goto out;
    }
    while (row) {
        rc = q_step(c, st, &row);
        if (rc != LATCH_OK)
            goto out;
    }
    if (changes != NULL)
        *changes = sqlite3_changes(c->db);
    q_done(st);
    st = NULL;
    rc = tx_commit(c);
out:
    q_done(st);
    if (rc != LATCH_OK)
        tx_rollback(c);
    conn_release(q, c);
    return rc;
}

/* ---- open / close / migrate ---- */

static void
sq_close(void *impl)
{
    struct sq_store *q = impl;
    struct sq_conn *c, *next;
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
    struct sq_conn *c = NULL;
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
user_version(struct sq_conn *c, int *v)
{
    sqlite3_stmt *st = NULL;
    latch_rc rc;
    bool row;

    *v = -1;
    rc = q_prepare(c, ST_USER_VERSION, &st, "");
    if (rc != LATCH_OK)
        return rc;
    rc = q_step(c, st, &row);
    if (rc == LATCH_OK && row)
        *v = sqlite3_column_int(st, 0);
    else if (rc == LATCH_OK)
        rc = LATCH_E_DB;
    q_done(st);
    return rc;
}

static latch_rc
sq_migrate(void *impl, struct latch_err *err)
{
    struct sq_store *q = impl;
    struct sq_conn *c = NULL;
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
    rc = tx_begin(c);
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
    rc = tx_commit(c);
    if (rc != LATCH_OK) {
        latch_err_set(err, "store: migrate commit: %s", sqlite3_errmsg(c->db));
        goto out;
    }
    log_info("store: schema migrated", "from=%d to=%d", cur, STORE_SQLITE_SCHEMA_VERSION);
out:
    sqlite3_finalize(ins);
    tx_rollback(c);
    conn_release(q, c);
    return rc;
}

static int
sq_schema_version(void *impl)
{
    struct sq_store *q = impl;
    struct sq_conn *c = NULL;
    int v = -1;

    if (conn_acquire(q, &c) != LATCH_OK)
        return -1;
    (void)user_version(c, &v);
    conn_release(q, c);
    return v;
}

/* ---- meta ---- */

static latch_rc
sq_meta_get(void *impl, const char *key, char **value_out)
{
    struct sq_store *q = impl;
    struct sq_conn *c = NULL;
    sqlite3_stmt *st = NULL;
    latch_rc rc;
    bool row;

    *value_out = NULL;
    if (key == NULL)
        return LATCH_E_INVAL;
    rc = conn_acquire(q, &c);
    if (rc != LATCH_OK)
        return rc;
    rc = q_prepare(c, ST_META_GET, &st, "t", key);
    if (rc != LATCH_OK)
        goto out;
    rc = q_step(c, st, &row);
    if (rc == LATCH_OK && !row)
        rc = LATCH_E_NOT_FOUND;
    if (rc == LATCH_OK)
        *value_out = col_str(st, 0);
out:
    q_done(st);
    conn_release(q, c);
    return rc;
}

static latch_rc
sq_meta_set(void *impl, const char *key, const char *value)
{
    if (key == NULL || value == NULL)
        return LATCH_E_INVAL;
    return write1(impl, ST_META_SET, NULL, "tt", key, value);
}

static latch_rc
sq_meta_add(void *impl, const char *key, const char *value)
{
    if (key == NULL || value == NULL)
        return LATCH_E_INVAL;
    return write1(impl, ST_META_ADD, NULL, "tt", key, value);
}

/* ---- environments ---- */

static void
env_read(sqlite3_stmt *st, struct store_env *e)
{
    memset(e, 0, sizeof *e);
    e->id = col_i64(st, 0);
    e->name = col_str(st, 1);
    e->webhook_url = col_str(st, 2);
    e->webhook_url_secondary = col_str(st, 3);
    e->webhook_key_sealed = col_str(st, 4);
    e->on_auth_creation = sqlite3_column_int(st, 5) != 0;
    e->on_auth_refresh_error = sqlite3_column_int(st, 6) != 0;
    e->created_at = col_i64(st, 7);
}

static latch_rc
sq_env_create(void *impl, const char *name, struct store_env *out)
{
    struct sq_store *q = impl;
    struct sq_conn *c = NULL;
    sqlite3_stmt *st = NULL;
    struct store_env e;
    latch_rc rc;
    bool row;

    memset(&e, 0, sizeof e);
    if (out != NULL)
        memset(out, 0, sizeof *out);
    if (name == NULL || name[0] == '\0')
        return LATCH_E_INVAL;
    rc = conn_acquire(q, &c);
    if (rc != LATCH_OK)
        return rc;
    rc = tx_begin(c);
    if (rc != LATCH_OK)
        goto out;
    rc = q_prepare(c, ST_ENV_INSERT, &st, "ti", name, latch_now_ms());
    if (rc != LATCH_OK)
        goto out;
    rc = q_step(c, st, &row);
    if (rc == LATCH_OK && !row)
        rc = LATCH_E_DB;
    if (rc != LATCH_OK)
        goto out;
    env_read(st, &e);
    rc = q_finish(c, st);
    q_done(st);
    st = NULL;
    if (rc == LATCH_OK)
        rc = tx_commit(c);
out:
    q_done(st);
    tx_rollback(c);
    conn_release(q, c);
    if (rc == LATCH_OK && out != NULL)
        *out = e;
    else
        store_env_clear(&e);
    return rc;
}

static latch_rc
env_get_one(struct sq_store *q, enum st_id id, const char *fmt, int64_t num, const char *text,
            struct store_env *out)
{
    struct sq_conn *c = NULL;
    sqlite3_stmt *st = NULL;
    latch_rc rc;
    bool row;

    rc = conn_acquire(q, &c);
    if (rc != LATCH_OK)
        return rc;
    if (fmt[0] == 'i')
        rc = q_prepare(c, id, &st, "i", num);
    else
        rc = q_prepare(c, id, &st, "t", text);
    if (rc != LATCH_OK)
        goto out;
    rc = q_step(c, st, &row);
    if (rc == LATCH_OK && !row)
        rc = LATCH_E_NOT_FOUND;
    if (rc == LATCH_OK)
        env_read(st, out);
out:
    q_done(st);
    conn_release(q, c);
    return rc;
}

static latch_rc
sq_env_get(void *impl, int64_t id, struct store_env *out)
{
    memset(out, 0, sizeof *out);
    return env_get_one(impl, ST_ENV_GET, "i", id, NULL, out);
}

static latch_rc
sq_env_get_by_name(void *impl, const char *name, struct store_env *out)
{
    memset(out, 0, sizeof *out);
    if (name == NULL)
        return LATCH_E_INVAL;
    return env_get_one(impl, ST_ENV_GET_NAME, "t", 0, name, out);
}

/* Grows a list array so that index n is valid. */
static void *
grow(void *v, size_t *cap, size_t n, size_t elem)
{
    if (n < *cap)
        return v;
    *cap = *cap == 0 ? 8 : *cap * 2;
    v = xrealloc(v, *cap * elem);
    memset((char *)v + n * elem, 0, (*cap - n) * elem);
    return v;
}

static latch_rc
sq_env_list(void *impl, struct store_env **out, size_t *n)
{
    struct sq_store *q = impl;
    struct sq_conn *c = NULL;
    sqlite3_stmt *st = NULL;
    struct store_env *v = NULL;
    size_t cap = 0, cnt = 0;
    latch_rc rc;
    bool row = true;

    *out = NULL;
    *n = 0;
    rc = conn_acquire(q, &c);
    if (rc != LATCH_OK)
        return rc;
    rc = q_prepare(c, ST_ENV_LIST, &st, "");
    while (rc == LATCH_OK) {
        rc = q_step(c, st, &row);
        if (rc != LATCH_OK || !row)
            break;
        v = grow(v, &cap, cnt, sizeof *v);
        env_read(st, &v[cnt++]);
    }
    q_done(st);
    conn_release(q, c);
    if (rc != LATCH_OK) {
        store_env_list_free(v, cnt);
        return rc;
    }
    *out = v;
    *n = cnt;
    return LATCH_OK;
}

static latch_rc
sq_env_update_webhooks(void *impl, const struct store_env *e)
{
    latch_rc rc;
    int changes;

    if (e == NULL)
        return LATCH_E_INVAL;
    rc = write1(impl, ST_ENV_UPDATE, &changes, "itttBB", e->id, e->webhook_url,
                e->webhook_url_secondary, e->webhook_key_sealed, (int)e->on_auth_creation,
                (int)e->on_auth_refresh_error);
    if (rc == LATCH_OK && changes == 0)
        rc = LATCH_E_NOT_FOUND;
    return rc;
}

/* ---- API keys ---- */

static latch_rc
sq_apikey_add(void *impl, int64_t env_id, const unsigned char hash[32], const char *label)
{
    if (hash == NULL)
        return LATCH_E_INVAL;
    return write1(impl, ST_KEY_ADD, NULL, "ihti", env_id, hash, label, latch_now_ms());
}

/* SELECT returning one int64 in column 0; NOT_FOUND if no row. */
static latch_rc
read_i64(struct sq_store *q, enum st_id id, int64_t *val, const char *fmt, int64_t a,
         const unsigned char *h)
{
    struct sq_conn *c = NULL;
    sqlite3_stmt *st = NULL;
    latch_rc rc;
    bool row;

    rc = conn_acquire(q, &c);
    if (rc != LATCH_OK)
        return rc;
    if (fmt[0] == 'h')
        rc = q_prepare(c, id, &st, "h", h);
    else if (fmt[0] == 'i')
        rc = q_prepare(c, id, &st, "i", a);
    else
        rc = q_prepare(c, id, &st, "");
    if (rc != LATCH_OK)
        goto out;
    rc = q_step(c, st, &row);
    if (rc == LATCH_OK && !row)
        rc = LATCH_E_NOT_FOUND;
    if (rc == LATCH_OK)
        *val = col_i64(st, 0);
out:
    q_done(st);
    conn_release(q, c);
    return rc;
}

static latch_rc
sq_apikey_lookup(void *impl, const unsigned char hash[32], int64_t *env_id)
{
    *env_id = 0;
    if (hash == NULL)
        return LATCH_E_INVAL;
    return read_i64(impl, ST_KEY_LOOKUP, env_id, "h", 0, hash);
}

static latch_rc
sq_apikey_revoke_all(void *impl, int64_t env_id)
{
    return write1(impl, ST_KEY_REVOKE, NULL, "ii", env_id, latch_now_ms());
}

static latch_rc
sq_apikey_count(void *impl, int64_t env_id, int64_t *n)
{
    *n = 0;
    return read_i64(impl, ST_KEY_COUNT, n, "i", env_id, NULL);
}

/* ---- integrations ---- */

static void
int_read(sqlite3_stmt *st, struct store_integration *i)
{
    memset(i, 0, sizeof *i);
    i->id = col_i64(st, 0);
    i->env_id = col_i64(st, 1);
    i->unique_key = col_str(st, 2);
    i->provider = col_str(st, 3);
    i->display_name = col_str(st, 4);
    i->oauth_scopes = col_str(st, 5);
    i->forward_webhooks = sqlite3_column_int(st, 6) != 0;
    i->custom_json = col_str(st, 7);
    i->created_at = col_i64(st, 8);
    i->updated_at = col_i64(st, 9);
}

static latch_rc
sq_integration_create(void *impl, struct store_integration *i)
{
    struct sq_store *q = impl;
    struct sq_conn *c = NULL;
    sqlite3_stmt *st = NULL;
    int64_t now = latch_now_ms(), id = 0;
    latch_rc rc;
    bool row;

    if (i == NULL || i->unique_key == NULL || i->provider == NULL || !json_ok(i->custom_json))
        return LATCH_E_INVAL;
    rc = conn_acquire(q, &c);
    if (rc != LATCH_OK)
        return rc;
    rc = tx_begin(c);
    if (rc != LATCH_OK)
        goto out;
    rc = q_prepare(c, ST_INT_INSERT, &st, "ittttBti", i->env_id, i->unique_key, i->provider,
                   i->display_name, i->oauth_scopes, (int)i->forward_webhooks, i->custom_json, now);
    if (rc != LATCH_OK)
        goto out;
    rc = q_step(c, st, &row);
    if (rc == LATCH_OK && !row)
        rc = LATCH_E_DB;
    if (rc != LATCH_OK)
        goto out;
    id = col_i64(st, 0);
    rc = q_finish(c, st);
    q_done(st);
    st = NULL;
    if (rc == LATCH_OK)
        rc = tx_commit(c);
out:
    q_done(st);
    tx_rollback(c);
    conn_release(q, c);
    if (rc == LATCH_OK) {
        i->id = id;
        i->created_at = now;
        i->updated_at = now;
    }
    return rc;
}

static latch_rc
sq_integration_get(void *impl, int64_t env_id, const char *unique_key,
                   struct store_integration *out)
{
    struct sq_store *q = impl;
    struct sq_conn *c = NULL;
    sqlite3_stmt *st = NULL;
    latch_rc rc;
    bool row;

    memset(out, 0, sizeof *out);
    if (unique_key == NULL)
        return LATCH_E_INVAL;
    rc = conn_acquire(q, &c);
    if (rc != LATCH_OK)
        return rc;
    rc = q_prepare(c, ST_INT_GET, &st, "it", env_id, unique_key);
    if (rc != LATCH_OK)
        goto out;
    rc = q_step(c, st, &row);
    if (rc == LATCH_OK && !row)
        rc = LATCH_E_NOT_FOUND;
    if (rc == LATCH_OK)
        int_read(st, out);
out:
    q_done(st);
    conn_release(q, c);
    return rc;
}

static latch_rc
sq_integration_list(void *impl, int64_t env_id, struct store_integration **out, size_t *n)
{
    struct sq_store *q = impl;
    struct sq_conn *c = NULL;
    sqlite3_stmt *st = NULL;
    struct store_integration *v = NULL;
    size_t cap = 0, cnt = 0;
    latch_rc rc;
    bool row = true;

    *out = NULL;
    *n = 0;
    rc = conn_acquire(q, &c);
    if (rc != LATCH_OK)
        return rc;
    rc = q_prepare(c, ST_INT_LIST, &st, "i", env_id);
    while (rc == LATCH_OK) {
        rc = q_step(c, st, &row);
        if (rc != LATCH_OK || !row)
            break;
        v = grow(v, &cap, cnt, sizeof *v);
        int_read(st, &v[cnt++]);
    }
    q_done(st);
    conn_release(q, c);
    if (rc != LATCH_OK) {
        store_integration_list_free(v, cnt);
        return rc;
    }
    *out = v;
    *n = cnt;
    return LATCH_OK;
}

static latch_rc
sq_integration_update(void *impl, struct store_integration *i)
{
    struct sq_store *q = impl;
    struct sq_conn *c = NULL;
    int64_t now = latch_now_ms();
    latch_rc rc;
    int changes = 0;

    if (i == NULL || i->unique_key == NULL || i->provider == NULL || !json_ok(i->custom_json))
        return LATCH_E_INVAL;
    rc = conn_acquire(q, &c);
    if (rc != LATCH_OK)
        return rc;
    rc = tx_begin(c);
    if (rc != LATCH_OK)
        goto out;
    /* Renaming unique_key cascades to connections.provider_config_key (ON UPDATE CASCADE). */
    rc = q_exec(c, ST_INT_UPDATE, &changes, "iittttBti", i->id, i->env_id, i->unique_key,
                i->provider, i->display_name, i->oauth_scopes, (int)i->forward_webhooks,
                i->custom_json, now);
    if (rc == LATCH_OK && changes == 0)
        rc = LATCH_E_NOT_FOUND;
    if (rc != LATCH_OK)
        goto out;
    /* connections.provider is a copy of the integration's provider: keep it in step. */
    rc = q_exec(c, ST_CONN_SET_PROVIDER, NULL, "itt", i->env_id, i->unique_key, i->provider);
    if (rc != LATCH_OK)
        goto out;
    rc = tx_commit(c);
out:
    tx_rollback(c);
    conn_release(q, c);
    if (rc == LATCH_OK)
        i->updated_at = now;
    return rc;
}

static latch_rc
sq_integration_delete(void *impl, int64_t env_id, const char *unique_key)
{
    latch_rc rc;
    int changes;

    if (unique_key == NULL)
        return LATCH_E_INVAL;
    /* Its connections go with it (ON DELETE CASCADE). */
    rc = write1(impl, ST_INT_DELETE, &changes, "it", env_id, unique_key);
    if (rc == LATCH_OK && changes == 0)
        rc = LATCH_E_NOT_FOUND;
    return rc;
}

/* ---- connections ---- */

static void
conn_read(sqlite3_stmt *st, struct store_connection *c)
{
    memset(c, 0, sizeof *c);
    c->id = col_i64(st, 0);
    c->env_id = col_i64(st, 1);
    c->uid = col_str(st, 2);
    c->connection_id = col_str(st, 3);
    c->provider_config_key = col_str(st, 4);
    c->provider = col_str(st, 5);
    c->credentials_sealed = col_str(st, 6);
    c->connection_config_json = col_str(st, 7);
    c->metadata_json = col_str(st, 8);
    c->tags_json = col_str(st, 9);
    c->end_user_json = col_str(st, 10);
    c->webhook_url_override = col_str(st, 11);
    c->expires_at = col_i64(st, 12);
    c->created_at = col_i64(st, 13);
    c->updated_at = col_i64(st, 14);
    c->last_fetched_at = col_i64(st, 15);
    c->last_refresh_success = col_i64(st, 16);
    c->last_refresh_failure = col_i64(st, 17);
    c->next_refresh_at = col_i64(st, 18);
    c->refresh_attempts = sqlite3_column_int(st, 19);
    c->needs_reauth = sqlite3_column_int(st, 20) != 0;
    c->auth_error_json = col_str(st, 21);
    c->version = col_i64(st, 22);
}

/* Reads one connection row with a prepared, bound statement; NOT_FOUND if none. */
static latch_rc
conn_fetch(struct sq_conn *c, sqlite3_stmt *st, struct store_connection *out)
{
    latch_rc rc;
    bool row;

    rc = q_step(c, st, &row);
    if (rc == LATCH_OK && !row)
        rc = LATCH_E_NOT_FOUND;
    if (rc == LATCH_OK)
        conn_read(st, out);
    q_done(st);
    return rc;
}

static latch_rc
sq_connection_upsert(void *impl, struct store_connection *c, bool *created)
{
    struct sq_store *q = impl;
    struct sq_conn *k = NULL;
    sqlite3_stmt *st = NULL;
    struct store_connection got;
    int64_t now = latch_now_ms(), id = 0;
    char *provider = NULL;
    latch_rc rc;
    bool row, is_new = false;

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
    rc = tx_begin(k);
    if (rc != LATCH_OK)
        goto out;

    rc =
        q_prepare(k, ST_CONN_FIND, &st, "itt", c->env_id, c->provider_config_key, c->connection_id);
    if (rc != LATCH_OK)
        goto out;
    rc = q_step(k, st, &row);
    if (rc != LATCH_OK)
        goto out;
    if (row) {
        const char *uid = (const char *)sqlite3_column_text(st, 1);

        id = col_i64(st, 0);
        if (uid == NULL || strcmp(uid, c->uid) != 0) {
            /* The caller sealed for another uid: writing would make the row unreadable. */
            rc = LATCH_E_CONFLICT;
            goto out;
        }
    }
    q_done(st);
    st = NULL;

    if (id != 0) {
        int changes = 0;

        rc = q_exec(k, ST_CONN_REPLACE, &changes, "itttitttti", id, c->provider,
                    c->credentials_sealed, c->connection_config_json, c->expires_at,
                    c->metadata_json, c->tags_json, c->end_user_json, c->webhook_url_override, now);
        if (rc == LATCH_OK && changes != 1)
            rc = LATCH_E_DB;
        if (rc != LATCH_OK)
            goto out;
    } else {
        /* The integration must exist; it also supplies provider when the caller has none. */
        rc = q_prepare(k, ST_INT_PROVIDER, &st, "it", c->env_id, c->provider_config_key);
        if (rc != LATCH_OK)
            goto out;
        rc = q_step(k, st, &row);
        if (rc == LATCH_OK && !row)
            rc = LATCH_E_NOT_FOUND;
        if (rc != LATCH_OK)
            goto out;
        provider = c->provider != NULL ? xstrdup(c->provider) : col_str(st, 0);
        q_done(st);
        st = NULL;

        rc = q_prepare(k, ST_CONN_INSERT, &st, "ittttttttttii", c->env_id, c->uid, c->connection_id,
                       c->provider_config_key, provider, c->credentials_sealed,
                       c->connection_config_json, c->metadata_json, c->tags_json, c->end_user_json,
                       c->webhook_url_override, c->expires_at, now);
        if (rc != LATCH_OK)
            goto out;
        rc = q_step(k, st, &row);
        if (rc == LATCH_OK && !row)
            rc = LATCH_E_DB;
        if (rc != LATCH_OK)
            goto out;
        id = col_i64(st, 0);
        rc = q_finish(k, st);
        if (rc != LATCH_OK)
            goto out;
        q_done(st);
        st = NULL;
        is_new = true;
    }

    rc = q_prepare(k, ST_CONN_GET_ROW, &st, "i", id);
    if (rc != LATCH_OK)
        goto out;
    rc = conn_fetch(k, st, &got);
    st = NULL;
    if (rc != LATCH_OK)
        goto out;
    rc = tx_commit(k);
out:
    q_done(st);
    tx_rollback(k);
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
sq_connection_get(void *impl, int64_t env_id, const char *provider_config_key,
                  const char *connection_id, struct store_connection *out)
{
    struct sq_store *q = impl;
    struct sq_conn *c = NULL;
    sqlite3_stmt *st = NULL;
    latch_rc rc;

    memset(out, 0, sizeof *out);
    if (provider_config_key == NULL || connection_id == NULL)
        return LATCH_E_INVAL;
    rc = conn_acquire(q, &c);
    if (rc != LATCH_OK)
        return rc;
    rc = q_prepare(c, ST_CONN_GET, &st, "itt", env_id, provider_config_key, connection_id);
    if (rc == LATCH_OK)
        rc = conn_fetch(c, st, out);
    conn_release(q, c);
    return rc;
}

static latch_rc
sq_connection_get_by_id(void *impl, int64_t env_id, int64_t id, struct store_connection *out)
{
    struct sq_store *q = impl;
    struct sq_conn *c = NULL;
    sqlite3_stmt *st = NULL;
    latch_rc rc;

    memset(out, 0, sizeof *out);
    rc = conn_acquire(q, &c);
    if (rc != LATCH_OK)
        return rc;
    rc = q_prepare(c, ST_CONN_GET_ENV_ID, &st, "ii", env_id, id);
    if (rc == LATCH_OK)
        rc = conn_fetch(c, st, out);
    conn_release(q, c);
    return rc;
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
sq_connection_list(void *impl, int64_t env_id, const struct store_conn_filter *f,
                   struct store_connection **out, size_t *n)
{
    struct sq_store *q = impl;
    struct sq_conn *c = NULL;
    sqlite3_stmt *st = NULL;
    struct store_connection *v = NULL;
    char *keys = NULL, *tags = NULL;
    size_t cap = 0, cnt = 0;
    latch_rc rc;
    bool row = true;

    *out = NULL;
    *n = 0;
    if (f == NULL || f->limit < 1 || f->limit > LATCH_MAX_LIST_LIMIT || f->offset < 0)
        return LATCH_E_INVAL;
    rc = filter_json(f, &keys, &tags);
    if (rc != LATCH_OK)
        return rc;
    rc = conn_acquire(q, &c);
    if (rc != LATCH_OK)
        goto out;
    rc = q_prepare(c, ST_CONN_LIST, &st, "ittttttii", env_id, f->connection_id, f->search,
                   f->end_user_id, f->end_user_org_id, keys, tags, f->limit, f->offset);
    while (rc == LATCH_OK) {
        rc = q_step(c, st, &row);
        if (rc != LATCH_OK || !row)
            break;
        v = grow(v, &cap, cnt, sizeof *v);
        conn_read(st, &v[cnt++]);
    }
    q_done(st);
    conn_release(q, c);
out:
    free(keys);
    free(tags);
    if (rc != LATCH_OK) {
        store_connection_list_free(v, cnt);
        return rc;
    }
    *out = v;
    *n = cnt;
    return LATCH_OK;
}

static latch_rc
sq_connection_delete(void *impl, int64_t env_id, const char *provider_config_key,
                     const char *connection_id)
{
    latch_rc rc;
    int changes;

    if (provider_config_key == NULL || connection_id == NULL)
        return LATCH_E_INVAL;
    rc = write1(impl, ST_CONN_DELETE, &changes, "itt", env_id, provider_config_key, connection_id);
    if (rc == LATCH_OK && changes == 0)
        rc = LATCH_E_NOT_FOUND;
    return rc;
}

static latch_rc
sq_connection_set_metadata(void *impl, int64_t id, const char *metadata_json)
{
    latch_rc rc;
    int changes;

    if (!json_ok(metadata_json))
        return LATCH_E_INVAL;
    rc = write1(impl, ST_CONN_SET_META, &changes, "iti", id, metadata_json, latch_now_ms());
    if (rc == LATCH_OK && changes == 0)
        rc = LATCH_E_NOT_FOUND;
    return rc;
}

static latch_rc
sq_connection_patch(void *impl, int64_t id, const char *tags_json, const char *end_user_json,
                    const char *webhook_url_override)
{
    latch_rc rc;
    int changes;

    if (!json_ok(tags_json) || !json_ok(end_user_json))
        return LATCH_E_INVAL;
    rc = write1(impl, ST_CONN_PATCH, &changes, "ittti", id, tags_json, end_user_json,
                webhook_url_override, latch_now_ms());
    if (rc == LATCH_OK && changes == 0)
        rc = LATCH_E_NOT_FOUND;
    return rc;
}

static latch_rc
sq_connection_touch(void *impl, int64_t id, int64_t last_fetched_at)
{
    latch_rc rc;
    int changes;

    rc = write1(impl, ST_CONN_TOUCH, &changes, "ii", id, last_fetched_at);
    if (rc == LATCH_OK && changes == 0)
        rc = LATCH_E_NOT_FOUND;
    return rc;
}

static latch_rc
sq_connection_touch_many(void *impl, const int64_t *ids, size_t n, int64_t last_fetched_at)
{
    struct sq_store *q = impl;
    struct sq_conn *c = NULL;
    latch_rc rc;

    rc = conn_acquire(q, &c);
    if (rc != LATCH_OK)
        return rc;
    rc = tx_begin(c);
    for (size_t i = 0; i < n && rc == LATCH_OK; i++)
        rc = q_exec(c, ST_CONN_TOUCH, NULL, "ii", ids[i], last_fetched_at);
    if (rc == LATCH_OK)
        rc = tx_commit(c);
    else
        tx_rollback(c);
    conn_release(q, c);
    return rc;
}

/* After a guarded UPDATE changed nothing: NOT_FOUND if the row is gone, else CONFLICT. */
static latch_rc
conn_miss(struct sq_conn *c, int64_t id)
{
    sqlite3_stmt *st = NULL;
    latch_rc rc;
    bool row;

    rc = q_prepare(c, ST_CONN_EXISTS, &st, "i", id);
    if (rc != LATCH_OK)
        return rc;
    rc = q_step(c, st, &row);
    q_done(st);
    if (rc != LATCH_OK)
        return rc;
    return row ? LATCH_E_CONFLICT : LATCH_E_NOT_FOUND;
}

/*
 * Runs a guarded UPDATE (optionally RETURNING one int64 into *ret) in a transaction; when it
 * changes no row, tells NOT_FOUND from CONFLICT in the same transaction.
 */
static latch_rc
guarded_update(struct sq_store *q, int64_t id, enum st_id sid, int64_t *ret, const char *fmt, ...)
{
    struct sq_conn *c = NULL;
    sqlite3_stmt *st = NULL;
    va_list ap;
    latch_rc rc;
    bool row, hit = false;
    int src;

    rc = conn_acquire(q, &c);
    if (rc != LATCH_OK)
        return rc;
    rc = tx_begin(c);
    if (rc != LATCH_OK)
        goto out;
    rc = stmt_get(c, sid, &st);
    if (rc != LATCH_OK)
        goto out;
    va_start(ap, fmt);
    src = vbindf(st, fmt, ap);
    va_end(ap);
    if (src != SQLITE_OK) {
        rc = sq_fail(c->db, src, "bind");
        goto out;
    }
    rc = q_step(c, st, &row);
    if (rc != LATCH_OK)
        goto out;
    if (ret != NULL) {
        hit = row;
        if (row)
            *ret = col_i64(st, 0);
        rc = q_finish(c, st);
    } else {
        hit = sqlite3_changes(c->db) > 0;
    }
    q_done(st);
    st = NULL;
    if (rc != LATCH_OK)
        goto out;
    if (!hit) {
        rc = conn_miss(c, id);
        goto out;
    }
    rc = tx_commit(c);
out:
    q_done(st);
    tx_rollback(c);
    conn_release(q, c);
    return rc;
}

static latch_rc
sq_connection_lease(void *impl, int64_t id, const char *owner, int64_t ttl_ms, int64_t *version_out)
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
sq_connection_lease_release(void *impl, int64_t id, const char *owner)
{
    if (owner == NULL)
        return LATCH_E_INVAL;
    return guarded_update(impl, id, ST_CONN_RELEASE, NULL, "it", id, owner);
}

static latch_rc
sq_connection_refresh_done(void *impl, int64_t id, const char *owner, int64_t expected_version,
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
sq_connection_refresh_failed(void *impl, int64_t id, const char *owner, const char *auth_error_json,
                             int64_t next_refresh_at, bool needs_reauth)
{
    if (owner == NULL || !json_ok(auth_error_json))
        return LATCH_E_INVAL;
    return guarded_update(impl, id, ST_CONN_FAILED, NULL, "ittiBi", id, owner, auth_error_json,
                          next_refresh_at, (int)needs_reauth, latch_now_ms());
}

static latch_rc
sq_connection_due_for_refresh(void *impl, int64_t before, int64_t used_since, size_t max,
                              int64_t **ids_out, int64_t **env_ids_out, size_t *n)
{
    struct sq_store *q = impl;
    struct sq_conn *c = NULL;
    sqlite3_stmt *st = NULL;
    int64_t *ids = NULL, *envs = NULL;
    size_t cnt = 0;
    latch_rc rc;
    bool row = true;

    *ids_out = NULL;
    *env_ids_out = NULL;
    *n = 0;
    if (max == 0)
        return LATCH_OK;
    if (max > LATCH_MAX_LIST_LIMIT)
        max = LATCH_MAX_LIST_LIMIT;
    rc = conn_acquire(q, &c);
    if (rc != LATCH_OK)
        return rc;
    ids = xcalloc(max, sizeof *ids);
    envs = xcalloc(max, sizeof *envs);
    rc = q_prepare(c, ST_CONN_DUE, &st, "iiii", before, used_since, latch_now_ms(), (int64_t)max);
    while (rc == LATCH_OK && cnt < max) {
        rc = q_step(c, st, &row);
        if (rc != LATCH_OK || !row)
            break;
        ids[cnt] = col_i64(st, 0);
        envs[cnt] = col_i64(st, 1);
        cnt++;
    }
    q_done(st);
    conn_release(q, c);
    if (rc != LATCH_OK || cnt == 0) {
        free(ids);
        free(envs);
        return rc;
    }
    *ids_out = ids;
    *env_ids_out = envs;
    *n = cnt;
    return LATCH_OK;
}

/* ---- connect sessions ---- */

static void
sess_read(sqlite3_stmt *st, struct store_session *x)
{
    const void *h;

    memset(x, 0, sizeof *x);
    x->id = col_i64(st, 0);
    x->env_id = col_i64(st, 1);
    h = sqlite3_column_blob(st, 2);
    if (h != NULL && sqlite3_column_bytes(st, 2) == 32)
        memcpy(x->token_hash, h, 32);
    x->end_user_json = col_str(st, 3);
    x->organization_json = col_str(st, 4);
    x->allowed_integrations_json = col_str(st, 5);
    x->config_defaults_json = col_str(st, 6);
    x->tags_json = col_str(st, 7);
    x->webhook_url_override = col_str(st, 8);
    x->connection_row_id = col_i64(st, 9);
    x->expires_at = col_i64(st, 10);
    x->attempts = sqlite3_column_int(st, 11);
    x->created_at = col_i64(st, 12);
}

/* INSERT ... RETURNING id in a transaction. */
static latch_rc
insert_returning(struct sq_store *q, enum st_id sid, int64_t *id_out, const char *fmt, ...)
{
    struct sq_conn *c = NULL;
    sqlite3_stmt *st = NULL;
    va_list ap;
    latch_rc rc;
    bool row;
    int src;

    rc = conn_acquire(q, &c);
    if (rc != LATCH_OK)
        return rc;
    rc = tx_begin(c);
    if (rc != LATCH_OK)
        goto out;
    rc = stmt_get(c, sid, &st);
    if (rc != LATCH_OK)
        goto out;
    va_start(ap, fmt);
    src = vbindf(st, fmt, ap);
    va_end(ap);
    if (src != SQLITE_OK) {
        rc = sq_fail(c->db, src, "bind");
        goto out;
    }
    rc = q_step(c, st, &row);
    if (rc == LATCH_OK && !row)
        rc = LATCH_E_DB;
    if (rc != LATCH_OK)
        goto out;
    *id_out = col_i64(st, 0);
    rc = q_finish(c, st);
    q_done(st);
    st = NULL;
    if (rc == LATCH_OK)
        rc = tx_commit(c);
out:
    q_done(st);
    tx_rollback(c);
    conn_release(q, c);
    return rc;
}

static latch_rc
sq_session_create(void *impl, struct store_session *x)
{
    int64_t id = 0, created;
    latch_rc rc;

    if (x == NULL || !json_ok(x->end_user_json) || !json_ok(x->organization_json) ||
        !json_ok(x->allowed_integrations_json) || !json_ok(x->config_defaults_json) ||
        !json_ok(x->tags_json))
        return LATCH_E_INVAL;
    created = x->created_at != 0 ? x->created_at : latch_now_ms();
    rc = insert_returning(impl, ST_SESS_INSERT, &id, "ihttttttiiii", x->env_id, x->token_hash,
                          x->end_user_json, x->organization_json, x->allowed_integrations_json,
                          x->config_defaults_json, x->tags_json, x->webhook_url_override,
                          x->connection_row_id, x->expires_at, (int64_t)x->attempts, created);
    if (rc == LATCH_OK) {
        x->id = id;
        x->created_at = created;
    }
    return rc;
}

static latch_rc
sq_session_get_by_hash(void *impl, const unsigned char hash[32], struct store_session *out)
{
    struct sq_store *q = impl;
    struct sq_conn *c = NULL;
    sqlite3_stmt *st = NULL;
    latch_rc rc;
    bool row;

    memset(out, 0, sizeof *out);
    if (hash == NULL)
        return LATCH_E_INVAL;
    rc = conn_acquire(q, &c);
    if (rc != LATCH_OK)
        return rc;
    rc = q_prepare(c, ST_SESS_GET, &st, "h", hash);
    if (rc != LATCH_OK)
        goto out;
    rc = q_step(c, st, &row);
    if (rc == LATCH_OK && !row)
        rc = LATCH_E_NOT_FOUND;
    if (rc == LATCH_OK)
        sess_read(st, out);
out:
    q_done(st);
    conn_release(q, c);
    return rc;
}

static latch_rc
sq_session_bump_attempts(void *impl, int64_t id, int *attempts)
{
    struct sq_store *q = impl;
    struct sq_conn *c = NULL;
    sqlite3_stmt *st = NULL;
    latch_rc rc;
    bool row;
    int n = 0;

    rc = conn_acquire(q, &c);
    if (rc != LATCH_OK)
        return rc;
    rc = tx_begin(c);
    if (rc != LATCH_OK)
        goto out;
    rc = q_prepare(c, ST_SESS_BUMP, &st, "i", id);
    if (rc != LATCH_OK)
        goto out;
    rc = q_step(c, st, &row);
    if (rc == LATCH_OK && !row)
        rc = LATCH_E_NOT_FOUND;
    if (rc != LATCH_OK)
        goto out;
    n = sqlite3_column_int(st, 0);
    rc = q_finish(c, st);
    q_done(st);
    st = NULL;
    if (rc == LATCH_OK)
        rc = tx_commit(c);
out:
    q_done(st);
    tx_rollback(c);
    conn_release(q, c);
    if (rc == LATCH_OK && attempts != NULL)
        *attempts = n;
    return rc;
}

static latch_rc
sq_session_delete(void *impl, int64_t id)
{
    latch_rc rc;
    int changes;

    rc = write1(impl, ST_SESS_DELETE, &changes, "i", id);
    if (rc == LATCH_OK && changes == 0)
        rc = LATCH_E_NOT_FOUND;
    return rc;
}

static latch_rc
sq_session_purge_expired(void *impl, int64_t now)
{
    return write1(impl, ST_SESS_PURGE, NULL, "i", now);
}

/* ---- webhook outbox ---- */

static latch_rc
sq_webhook_enqueue(void *impl, int64_t env_id, const char *url, const char *body, int64_t *id_out)
{
    int64_t id = 0;
    latch_rc rc;

    if (url == NULL || body == NULL)
        return LATCH_E_INVAL;
    rc = insert_returning(impl, ST_WH_INSERT, &id, "itti", env_id, url, body, latch_now_ms());
    if (rc == LATCH_OK && id_out != NULL)
        *id_out = id;
    return rc;
}

static latch_rc
sq_webhook_claim(void *impl, const char *owner, int64_t now, int64_t lease_ms, size_t max,
                 struct store_webhook **out, size_t *n)
{
    struct sq_store *q = impl;
    struct sq_conn *c = NULL;
    sqlite3_stmt *st = NULL;
    struct store_webhook *v = NULL;
    size_t cap = 0, cnt = 0;
    latch_rc rc;
    bool row = true;

    *out = NULL;
    *n = 0;
    if (owner == NULL || owner[0] == '\0' || lease_ms <= 0)
        return LATCH_E_INVAL;
    if (max == 0)
        return LATCH_OK;
    if (max > LATCH_MAX_LIST_LIMIT)
        max = LATCH_MAX_LIST_LIMIT;
    rc = conn_acquire(q, &c);
    if (rc != LATCH_OK)
        return rc;
    rc = tx_begin(c);
    if (rc != LATCH_OK)
        goto out;
    rc = q_prepare(c, ST_WH_CLAIM, &st, "tiii", owner, now, lease_ms, (int64_t)max);
    while (rc == LATCH_OK) {
        struct store_webhook *w;

        rc = q_step(c, st, &row);
        if (rc != LATCH_OK || !row)
            break;
        v = grow(v, &cap, cnt, sizeof *v);
        w = &v[cnt++];
        w->id = col_i64(st, 0);
        w->env_id = col_i64(st, 1);
        w->url = col_str(st, 2);
        w->body = col_str(st, 3);
        w->attempts = sqlite3_column_int(st, 4);
        w->next_attempt_at = col_i64(st, 5);
        w->created_at = col_i64(st, 6);
    }
    q_done(st);
    st = NULL;
    if (rc == LATCH_OK)
        rc = tx_commit(c);
out:
    q_done(st);
    tx_rollback(c);
    conn_release(q, c);
    if (rc != LATCH_OK) {
        store_webhook_list_free(v, cnt);
        return rc;
    }
    *out = v;
    *n = cnt;
    return LATCH_OK;
}

static latch_rc
sq_webhook_done(void *impl, int64_t id)
{
    latch_rc rc;
    int changes;

    rc = write1(impl, ST_WH_DONE, &changes, "i", id);
    if (rc == LATCH_OK && changes == 0)
        rc = LATCH_E_NOT_FOUND;
    return rc;
}

static latch_rc
sq_webhook_retry(void *impl, int64_t id, int64_t next_attempt_at, const char *last_error,
                 bool give_up)
{
    latch_rc rc;
    int changes;

    rc = write1(impl, ST_WH_RETRY, &changes, "iitB", id, next_attempt_at, last_error, (int)give_up);
    if (rc == LATCH_OK && changes == 0)
        rc = LATCH_E_NOT_FOUND;
    return rc;
}

static latch_rc
sq_webhook_pending_count(void *impl, int64_t *n)
{
    *n = 0;
    return read_i64(impl, ST_WH_PENDING, n, "", 0, NULL);
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
rs_scan(struct sq_conn *c, const struct rs_source *src, int64_t *last_id, char **last_key,
        struct rs_item *v, size_t *n)
{
    sqlite3_stmt *st = NULL;
    latch_rc rc;
    bool row = true;

    *n = 0;
    if (src->scan == ST_RS_META_SCAN)
        rc = q_prepare(c, src->scan, &st, "ti", *last_key != NULL ? *last_key : "",
                       (int64_t)STORE_RESEAL_BATCH);
    else
        rc = q_prepare(c, src->scan, &st, "ii", *last_id, (int64_t)STORE_RESEAL_BATCH);
    while (rc == LATCH_OK && *n < STORE_RESEAL_BATCH) {
        struct rs_item *it = &v[*n];

        rc = q_step(c, st, &row);
        if (rc != LATCH_OK || !row)
            break;
        if (src->scan == ST_RS_CONN_SCAN) {
            it->id = col_i64(st, 0);
            it->row = col_str(st, 1);
            it->sealed = col_str(st, 2);
        } else if (src->scan == ST_RS_ENV_SCAN) {
            it->id = col_i64(st, 0);
            it->row = xasprintf("%" PRId64, it->id);
            it->sealed = col_str(st, 1);
        } else {
            it->row = col_str(st, 0);
            it->sealed = col_str(st, 1);
        }
        (*n)++;
    }
    q_done(st);
    if (rc == LATCH_OK && *n > 0) {
        *last_id = v[*n - 1].id;
        free(*last_key);
        *last_key = xstrdup(v[*n - 1].row);
    }
    return rc;
}

static latch_rc
sq_reseal_all(void *impl, store_reseal_fn fn, void *ud, size_t *rewritten)
{
    struct sq_store *q = impl;
    struct sq_conn *c = NULL;
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

            rc = rs_scan(c, src, &last_id, &last_key, v, &n);
            if (rc != LATCH_OK || n == 0)
                break;
            /* Crypto happens here, outside any transaction: the server keeps writing. */
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
                rc = tx_begin(c);
                for (size_t i = 0; i < n && rc == LATCH_OK; i++) {
                    int changes = 0;

                    if (v[i].resealed == NULL)
                        continue;
                    if (src->cas == ST_RS_META_CAS)
                        rc = q_exec(c, src->cas, &changes, "ttt", v[i].row, v[i].resealed,
                                    v[i].sealed);
                    else
                        rc = q_exec(c, src->cas, &changes, "itt", v[i].id, v[i].resealed,
                                    v[i].sealed);
                    if (rc == LATCH_OK && changes > 0)
                        count++;
                }
                if (rc == LATCH_OK) {
                    rc = tx_commit(c);
                } else {
                    tx_rollback(c);
                }
            }
            rs_items_free(v, n);
            if (rc != LATCH_OK || n < STORE_RESEAL_BATCH)
                break;
        }
        free(last_key);
    }
    tx_rollback(c);
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
sq_integrity_check(void *impl, struct latch_err *err)
{
    struct sq_store *q = impl;
    struct sq_conn *c = NULL;
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
    struct sq_conn *c = NULL;
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
                        v.i = col_i64(st, col);
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
                    last_id = col_i64(st, 0);
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
raw_insert_row(struct sq_conn *c, sqlite3_stmt *st, const struct store_table *t, json_t *row)
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
    struct sq_conn *c = NULL;
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
    rc = tx_begin(c);
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
    rc = tx_commit(c);
out:
    for (size_t i = 0; i < sizeof ins / sizeof ins[0]; i++)
        sqlite3_finalize(ins[i]);
    sqlite3_finalize(st);
    if (c != NULL)
        tx_rollback(c);
    conn_release(q, c);
    buf_free(&sql);
    return rc;
}

const struct store_ops store_sqlite_ops = {
    .name = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .migrate = sq_migrate,
    .schema_version = sq_schema_version,
    .meta_get = sq_meta_get,
    .meta_set = sq_meta_set,
    .meta_add = sq_meta_add,
    .env_create = sq_env_create,
    .env_get = sq_env_get,
    .env_get_by_name = sq_env_get_by_name,
    .env_list = sq_env_list,
    .env_update_webhooks = sq_env_update_webhooks,
    .apikey_add = sq_apikey_add,
    .apikey_lookup = sq_apikey_lookup,
    .apikey_revoke_all = sq_apikey_revoke_all,
    .apikey_count = sq_apikey_count,
    .integration_create = sq_integration_create,
    .integration_get = sq_integration_get,
    .integration_list = sq_integration_list,
    .integration_update = sq_integration_update,
    .integration_delete = sq_integration_delete,
    .connection_upsert = sq_connection_upsert,
    .connection_get = sq_connection_get,
    .connection_get_by_id = sq_connection_get_by_id,
    .connection_list = sq_connection_list,
    .connection_delete = sq_connection_delete,
    .connection_set_metadata = sq_connection_set_metadata,
    .connection_patch = sq_connection_patch,
    .connection_touch = sq_connection_touch,
    .connection_touch_many = sq_connection_touch_many,
    .connection_lease = sq_connection_lease,
    .connection_lease_release = sq_connection_lease_release,
    .connection_refresh_done = sq_connection_refresh_done,
    .connection_refresh_failed = sq_connection_refresh_failed,
    .connection_due_for_refresh = sq_connection_due_for_refresh,
    .session_create = sq_session_create,
    .session_get_by_hash = sq_session_get_by_hash,
    .session_bump_attempts = sq_session_bump_attempts,
    .session_delete = sq_session_delete,
    .session_purge_expired = sq_session_purge_expired,
    .webhook_enqueue = sq_webhook_enqueue,
    .webhook_claim = sq_webhook_claim,
    .webhook_done = sq_webhook_done,
    .webhook_retry = sq_webhook_retry,
    .webhook_pending_count = sq_webhook_pending_count,
    .reseal_all = sq_reseal_all,
    .integrity_check = sq_integrity_check,
    .raw_scan = sq_raw_scan,
    .raw_import = sq_raw_import,
};
