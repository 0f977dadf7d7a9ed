/*
 * store_sqlite_schema.h - numbered SQLite migrations, included only by store_sqlite.c.
 *
 * Migration N brings a database from version N-1 to N. store_migrate applies the missing ones in
 * one BEGIN IMMEDIATE transaction, records each in schema_migrations and sets PRAGMA
 * user_version (the authoritative version). Never edit a released migration: append a new one.
 * A database whose user_version is above STORE_SQLITE_SCHEMA_VERSION is refused.
 *
 * Conventions: STRICT tables; times are INTEGER ms since the epoch (0 = none); booleans are
 * INTEGER 0/1; JSON columns are TEXT; secret columns end in _sealed (vault envelopes, never
 * plaintext); hashes are 32-byte BLOBs. JSON is validated by the row layer (store.c) before
 * writing, not by CHECK (json_valid(...)): SQLite 3.40 treats json_valid in the schema as unsafe
 * under trusted_schema=OFF, and we keep trusted_schema off.
 */
#ifndef LATCH_STORE_SQLITE_SCHEMA_H
#define LATCH_STORE_SQLITE_SCHEMA_H

struct store_sqlite_step {
    int version; /* the migration this statement belongs to */
    const char *sql;
};

/* One statement per entry (keeps every literal under the C99 4095-byte minimum). */
static const struct store_sqlite_step store_sqlite_migrations[] = {
    /* ---- 1: initial schema ---- */
    {1, "CREATE TABLE schema_migrations ("
        "  version INTEGER PRIMARY KEY,"
        "  applied_at INTEGER NOT NULL"
        ") STRICT;"},
    {1, "CREATE TABLE meta ("
        "  key TEXT PRIMARY KEY,"
        "  value TEXT NOT NULL"
        ") STRICT;"},
    {1,
     "CREATE TABLE environments ("
     "  id INTEGER PRIMARY KEY,"
     "  name TEXT NOT NULL UNIQUE,"
     "  webhook_url TEXT,"
     "  webhook_url_secondary TEXT,"
     "  webhook_key_sealed TEXT,"
     "  on_auth_creation INTEGER NOT NULL DEFAULT 0 CHECK (on_auth_creation IN (0, 1)),"
     "  on_auth_refresh_error INTEGER NOT NULL DEFAULT 0 CHECK (on_auth_refresh_error IN (0, 1)),"
     "  created_at INTEGER NOT NULL"
     ") STRICT;"},
    {1, "CREATE TABLE api_keys ("
        "  id INTEGER PRIMARY KEY,"
        "  env_id INTEGER NOT NULL REFERENCES environments(id) ON DELETE CASCADE,"
        "  key_hash BLOB NOT NULL CHECK (length(key_hash) = 32),"
        "  label TEXT,"
        "  created_at INTEGER NOT NULL,"
        "  revoked_at INTEGER NOT NULL DEFAULT 0"
        ") STRICT;"},
    {1, "CREATE UNIQUE INDEX api_keys_hash ON api_keys(key_hash);"},
    {1, "CREATE INDEX api_keys_env ON api_keys(env_id);"},
    {1, "CREATE TABLE integrations ("
        "  id INTEGER PRIMARY KEY,"
        "  env_id INTEGER NOT NULL REFERENCES environments(id) ON DELETE CASCADE,"
        "  unique_key TEXT NOT NULL,"
        "  provider TEXT NOT NULL,"
        "  display_name TEXT,"
        "  oauth_scopes TEXT,"
        "  forward_webhooks INTEGER NOT NULL DEFAULT 0 CHECK (forward_webhooks IN (0, 1)),"
        "  custom_json TEXT,"
        "  created_at INTEGER NOT NULL,"
        "  updated_at INTEGER NOT NULL"
        ") STRICT;"},
    {1, "CREATE UNIQUE INDEX integrations_env_key ON integrations(env_id, unique_key);"},
    /*
     * A connection belongs to an integration through (env_id, provider_config_key): deleting the
     * integration deletes its connections, renaming its unique_key renames them.
     */
    {1, "CREATE TABLE connections ("
        "  id INTEGER PRIMARY KEY,"
        "  env_id INTEGER NOT NULL,"
        "  uid TEXT NOT NULL UNIQUE,"
        "  connection_id TEXT NOT NULL,"
        "  provider_config_key TEXT NOT NULL,"
        "  provider TEXT NOT NULL,"
        "  credentials_sealed TEXT,"
        "  connection_config_json TEXT NOT NULL DEFAULT '{}',"
        "  metadata_json TEXT,"
        "  tags_json TEXT NOT NULL DEFAULT '{}',"
        "  end_user_json TEXT,"
        "  webhook_url_override TEXT,"
        "  expires_at INTEGER NOT NULL DEFAULT 0,"
        "  created_at INTEGER NOT NULL,"
        "  updated_at INTEGER NOT NULL,"
        "  last_fetched_at INTEGER NOT NULL DEFAULT 0,"
        "  last_refresh_success INTEGER NOT NULL DEFAULT 0,"
        "  last_refresh_failure INTEGER NOT NULL DEFAULT 0,"
        "  next_refresh_at INTEGER NOT NULL DEFAULT 0,"
        "  refresh_attempts INTEGER NOT NULL DEFAULT 0,"
        "  needs_reauth INTEGER NOT NULL DEFAULT 0 CHECK (needs_reauth IN (0, 1)),"
        "  auth_error_json TEXT,"
        "  version INTEGER NOT NULL DEFAULT 1,"
        "  lease_owner TEXT,"
        "  lease_until INTEGER NOT NULL DEFAULT 0,"
        "  FOREIGN KEY (env_id, provider_config_key) REFERENCES integrations(env_id, unique_key)"
        "    ON DELETE CASCADE ON UPDATE CASCADE"
        ") STRICT;"},
    {1, "CREATE UNIQUE INDEX connections_key ON connections(env_id, provider_config_key, "
        "connection_id);"},
    {1, "CREATE INDEX connections_env_created ON connections(env_id, created_at DESC, id DESC);"},
    {1, "CREATE INDEX connections_expiry ON connections(expires_at) WHERE expires_at != 0;"},
    {1, "CREATE TABLE connect_sessions ("
        "  id INTEGER PRIMARY KEY,"
        "  env_id INTEGER NOT NULL REFERENCES environments(id) ON DELETE CASCADE,"
        "  token_hash BLOB NOT NULL CHECK (length(token_hash) = 32),"
        "  end_user_json TEXT,"
        "  organization_json TEXT,"
        "  allowed_integrations_json TEXT,"
        "  config_defaults_json TEXT,"
        "  tags_json TEXT,"
        "  webhook_url_override TEXT,"
        "  connection_row_id INTEGER NOT NULL DEFAULT 0,"
        "  expires_at INTEGER NOT NULL,"
        "  attempts INTEGER NOT NULL DEFAULT 0,"
        "  created_at INTEGER NOT NULL"
        ") STRICT;"},
    {1, "CREATE UNIQUE INDEX connect_sessions_hash ON connect_sessions(token_hash);"},
    {1, "CREATE INDEX connect_sessions_expiry ON connect_sessions(expires_at);"},
    {1, "CREATE INDEX connect_sessions_env ON connect_sessions(env_id);"},
    {1, "CREATE TABLE webhook_outbox ("
        "  id INTEGER PRIMARY KEY,"
        "  env_id INTEGER NOT NULL REFERENCES environments(id) ON DELETE CASCADE,"
        "  url TEXT NOT NULL,"
        "  body TEXT NOT NULL,"
        "  attempts INTEGER NOT NULL DEFAULT 0,"
        "  next_attempt_at INTEGER NOT NULL,"
        "  state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'dead')),"
        "  claim_owner TEXT,"
        "  claim_until INTEGER NOT NULL DEFAULT 0,"
        "  last_error TEXT,"
        "  created_at INTEGER NOT NULL"
        ") STRICT;"},
    {1, "CREATE INDEX webhook_outbox_due ON webhook_outbox(state, next_attempt_at);"},
    {1, "CREATE INDEX webhook_outbox_env ON webhook_outbox(env_id);"},
    /*
     * ---- 2: connection_activity ----
     * last_fetched_at touches (one per token read, batched by the refresher) land in this narrow
     * table instead of rewriting the wide connections row. connections.last_fetched_at stays (it
     * holds the value from creation or import); the effective value is the larger of the two.
     */
    {2, "CREATE TABLE connection_activity ("
        "  conn_id INTEGER PRIMARY KEY REFERENCES connections(id) ON DELETE CASCADE,"
        "  last_fetched_at INTEGER NOT NULL"
        ") STRICT;"},
    /*
     * ---- 3: operations log ----
     * Append-only; pruned by age and rows in the background (opslog.c). Ids are time-ordered
     * text, so id order is time order and a time bound is an id bound. No foreign key: a log
     * row outlives what it names, and a batch insert must not fail for a deleted environment.
     */
    {3, "CREATE TABLE operations ("
        "  id TEXT PRIMARY KEY,"
        "  env_id INTEGER NOT NULL,"
        "  at INTEGER NOT NULL,"
        "  kind TEXT NOT NULL,"
        "  outcome TEXT NOT NULL CHECK (outcome IN ('success', 'failure')),"
        "  error TEXT,"
        "  integration TEXT,"
        "  provider TEXT,"
        "  connection_id TEXT,"
        "  end_user_id TEXT,"
        "  duration_ms INTEGER NOT NULL DEFAULT 0,"
        "  detail_json TEXT"
        ") STRICT;"},
    {3, "CREATE INDEX operations_env ON operations(env_id, id);"},
    {3, "CREATE INDEX operations_env_conn ON operations(env_id, connection_id, id);"},
    /*
     * ---- 4: admin accounts and sessions (the dashboard at /admin) ----
     * (3 is the operations log.) password_hash is a self-describing scrypt string (see
     * crypto/pwhash.h); session tokens are stored only as a keyed hash, like connect sessions.
     */
    {4, "CREATE TABLE admin_users ("
        "  id INTEGER PRIMARY KEY,"
        "  email TEXT NOT NULL UNIQUE,"
        "  password_hash TEXT NOT NULL,"
        "  failed_attempts INTEGER NOT NULL DEFAULT 0,"
        "  locked_until INTEGER NOT NULL DEFAULT 0,"
        "  last_login_at INTEGER NOT NULL DEFAULT 0,"
        "  created_at INTEGER NOT NULL"
        ") STRICT;"},
    {4, "CREATE TABLE admin_sessions ("
        "  id INTEGER PRIMARY KEY,"
        "  admin_id INTEGER NOT NULL REFERENCES admin_users(id) ON DELETE CASCADE,"
        "  token_hash BLOB NOT NULL UNIQUE CHECK (length(token_hash) = 32),"
        "  created_at INTEGER NOT NULL,"
        "  last_seen_at INTEGER NOT NULL,"
        "  expires_at INTEGER NOT NULL"
        ") STRICT;"},
    {4, "CREATE INDEX admin_sessions_admin ON admin_sessions(admin_id);"},
    /*
     * ---- 5: OAuth2 authorization code (issue 13) ----
     * The integration's app credentials (client id/secret/scopes), sealed like connection
     * secrets (AAD bound to env + unique_key, domain/creds.h). oauth_states: one row per
     * authorization in flight, found by the keyed hash of its `state`, taken (deleted) once by
     * the callback; payload_sealed holds the PKCE verifier and the connection config.
     */
    {5, "ALTER TABLE integrations ADD COLUMN credentials_sealed TEXT;"},
    {5, "CREATE TABLE oauth_states ("
        "  id INTEGER PRIMARY KEY,"
        "  state_hash BLOB NOT NULL UNIQUE CHECK (length(state_hash) = 32),"
        "  env_id INTEGER NOT NULL REFERENCES environments(id) ON DELETE CASCADE,"
        "  session_hash BLOB NOT NULL CHECK (length(session_hash) = 32),"
        "  integration TEXT NOT NULL,"
        "  connection_id TEXT NOT NULL,"
        "  ws_client_id TEXT,"
        "  payload_sealed TEXT NOT NULL,"
        "  expires_at INTEGER NOT NULL,"
        "  created_at INTEGER NOT NULL"
        ") STRICT;"},
    {5, "CREATE INDEX oauth_states_expiry ON oauth_states(expires_at);"},
};

/* The highest migration this binary knows. */
#define STORE_SQLITE_SCHEMA_VERSION 5

#endif
