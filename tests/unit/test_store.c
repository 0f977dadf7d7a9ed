/*
 * test_store.c - store contract tests, run against both backends.
 *
 * Built as is: SQLite (a real file in a mkdtemp dir). Included by test_store_pg.c with
 * STORE_TEST_PG defined: the same tests against PostgreSQL. That variant starts a throwaway
 * server with tests/pg/start-pg (in a mkdtemp dir; $LATCH_SOURCE_DIR locates the script) for the
 * whole group, gives every test a fresh schema, and stops the server at the end. Missing
 * PostgreSQL binaries make the group setup fail (never a silent skip).
 */
#include <sys/stat.h>

#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>
#ifdef STORE_TEST_PG
#include <libpq-fe.h>
#endif

#include "core/latch_limits.h"
#include "store/store.h"
#include "store/store_export.h"
#include "util/str.h"
#include "util/xalloc.h"
#include "util/clock.h"

/* The schema version this binary migrates to (both backends). */
#define STORE_TEST_SCHEMA 5
/* What else a rollback to schema 1 must undo (SQLite also keeps the version in a pragma). */
#ifdef STORE_TEST_PG
#define ROLLBACK_TO_V1_TAIL                                                                        \
    " DROP TABLE operations; DELETE FROM schema_migrations WHERE version = 3; DROP TABLE "         \
    "oauth_states; ALTER TABLE integrations DROP COLUMN credentials_sealed;"
#else
#define ROLLBACK_TO_V1_TAIL                                                                        \
    " DROP TABLE operations; DELETE FROM schema_migrations WHERE version = 3; DROP TABLE "         \
    "oauth_states; ALTER TABLE integrations DROP COLUMN credentials_sealed; PRAGMA "               \
    "user_version = 1;"
#endif

struct fx {
    char dir[64];
    char path[128];
    char url[300]; /* what store_open got */
    struct store *s;
    int64_t env;
};

#ifdef STORE_TEST_PG
/* The throwaway server of this test group. */
static char pg_dir[64];
static char pg_url[256];

/* URL of database db on the group's server. */
static void
pg_url_for(char *out, size_t n, const char *db)
{
    (void)snprintf(out, n, "postgresql://postgres@/%s?host=%s", db, pg_dir);
}

static void
pg_quiet(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

/* Runs parameterless SQL on database db of the group's server (test plumbing). */
static int
pg_admin(const char *db, const char *sql)
{
    char url[300];
    PGconn *pg;
    PGresult *r;
    int ok;

    pg_url_for(url, sizeof url, db);
    pg = PQconnectdb(url);
    if (PQstatus(pg) != CONNECTION_OK) {
        print_error("pg_admin: %s", PQerrorMessage(pg));
        PQfinish(pg);
        return -1;
    }
    (void)PQsetNoticeProcessor(pg, pg_quiet, NULL);
    r = PQexec(pg, sql);
    ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok)
        print_error("pg_admin: %s: %s", sql, PQerrorMessage(pg));
    PQclear(r);
    PQfinish(pg);
    return ok ? 0 : -1;
}

/* Runs tests/pg/<script> <pg_dir> [arg]; the last stdout line goes to out (may be NULL). */
static int
pg_script(const char *script, const char *arg, char *out, size_t n)
{
    const char *src = getenv("LATCH_SOURCE_DIR");
    char cmd[512], line[512];
    FILE *p;
    int st;

    (void)snprintf(cmd, sizeof cmd, "'%s/tests/pg/%s' '%s' %s", src != NULL ? src : ".", script,
                   pg_dir, arg != NULL ? arg : "");
    p = popen(cmd, "r");
    if (p == NULL)
        return -1;
    if (out != NULL)
        out[0] = '\0';
    while (fgets(line, sizeof line, p) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        if (out != NULL && line[0] != '\0')
            (void)latch_strlcpy(out, line, n);
    }
    st = pclose(p);
    if (st != 0)
        print_error("%s failed (exit status %d): is PostgreSQL installed? "
                    "(scripts/install-deps installs the 'postgresql' package)\n",
                    cmd, st);
    return st == 0 ? 0 : -1;
}

static int
group_setup(void **state)
{
    (void)state;
    (void)snprintf(pg_dir, sizeof pg_dir, "/tmp/latch_pg_XXXXXX");
    if (mkdtemp(pg_dir) == NULL)
        return -1;
    if (pg_script("start-pg", NULL, pg_url, sizeof pg_url) != 0 || pg_url[0] == '\0') {
        print_error("cannot start a PostgreSQL server for the store tests\n");
        (void)pg_script("stop-pg", "--rm", NULL, 0);
        return -1;
    }
    return 0;
}

static int
group_teardown(void **state)
{
    (void)state;
    return pg_script("stop-pg", "--rm", NULL, 0);
}
#endif

static void
rm_files(const char *path)
{
    char p[512];

    (void)unlink(path);
    (void)snprintf(p, sizeof p, "%s-wal", path);
    (void)unlink(p);
    (void)snprintf(p, sizeof p, "%s-shm", path);
    (void)unlink(p);
}

static int teardown(void **state);

static int
setup(void **state)
{
    struct fx *f = xcalloc(1, sizeof *f);
    struct latch_err err;
    struct store_env e;
    char url[300];

    (void)snprintf(f->dir, sizeof f->dir, "/tmp/latch_store_XXXXXX");
    *state = f;
    if (mkdtemp(f->dir) == NULL)
        return -1;
    (void)snprintf(f->path, sizeof f->path, "%s/latch.db", f->dir);
#ifdef STORE_TEST_PG
    /* A fresh, empty schema for every test. */
    if (pg_admin("latch", "DROP SCHEMA public CASCADE; CREATE SCHEMA public;") != 0)
        return -1;
    (void)snprintf(f->url, sizeof f->url, "%s", pg_url);
#else
    (void)snprintf(f->url, sizeof f->url, "sqlite:%s", f->path);
#endif
    (void)snprintf(url, sizeof url, "%s", f->url);
    latch_err_clear(&err);
    if (store_open(url, &f->s, &err) != LATCH_OK || store_migrate(f->s, &err) != LATCH_OK ||
        store_env_create(f->s, "dev", &e) != LATCH_OK) {
        print_error("setup: %s\n", err.msg);
        (void)teardown(state);
        return -1;
    }
    f->env = e.id;
    store_env_clear(&e);
    return 0;
}

static int
teardown(void **state)
{
    struct fx *f = *state;

    store_close(f->s);
    rm_files(f->path);
    (void)rmdir(f->dir);
    free(f);
    return 0;
}

static void
add_integration(struct store *s, int64_t env, const char *key)
{
    struct store_integration i;

    memset(&i, 0, sizeof i);
    i.env_id = env;
    i.unique_key = xstrdup(key);
    i.provider = xstrdup("ninjaone");
    assert_int_equal(store_integration_create(s, &i), LATCH_OK);
    assert_true(i.id > 0);
    store_integration_clear(&i);
}

/* Inserts a connection; returns its row id. end_user / tags may be NULL. */
static int64_t
add_conn(struct store *s, int64_t env, const char *key, const char *cid, const char *end_user,
         const char *tags)
{
    struct store_connection c;
    bool created = false;
    int64_t id;
    char uid[96];

    (void)snprintf(uid, sizeof uid, "uid-%s-%s", key, cid);
    memset(&c, 0, sizeof c);
    c.env_id = env;
    c.uid = xstrdup(uid);
    c.connection_id = xstrdup(cid);
    c.provider_config_key = xstrdup(key);
    c.credentials_sealed = xstrdup("sealed-1");
    c.end_user_json = end_user != NULL ? xstrdup(end_user) : NULL;
    c.tags_json = tags != NULL ? xstrdup(tags) : NULL;
    c.expires_at = 0;
    assert_int_equal(store_connection_upsert(s, &c, &created), LATCH_OK);
    assert_true(created);
    id = c.id;
    store_connection_clear(&c);
    return id;
}

/* Runs sql (one or more statements) on the fixture's database, behind the store's back. */
static void
db_exec(struct fx *f, const char *sql)
{
#ifdef STORE_TEST_PG
    (void)f;
    assert_int_equal(pg_admin("latch", sql), 0);
#else
    sqlite3 *db = NULL;
    char *msg = NULL;

    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("db_exec: %s: %s", sql, msg != NULL ? msg : "?");
    sqlite3_close(db);
#endif
}

/* Asserts that connection_activity holds want rows for connection row id. */
static void
assert_activity_rows(struct fx *f, int64_t id, int want)
{
    char sql[256];

#ifdef STORE_TEST_PG
    (void)snprintf(sql, sizeof sql,
                   "DO $$ BEGIN IF (SELECT count(*) FROM connection_activity WHERE conn_id = %lld) "
                   "<> %d THEN RAISE 'activity rows'; END IF; END $$",
                   (long long)id, want);
    db_exec(f, sql);
#else
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;

    (void)snprintf(sql, sizeof sql, "SELECT count(*) FROM connection_activity WHERE conn_id = %lld",
                   (long long)id);
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), want);
    sqlite3_finalize(st);
    sqlite3_close(db);
#endif
}

/* ---- open, migrate, file ---- */

static void
test_open_urls(void **state)
{
    struct fx *f = *state;
    struct store *s = NULL;
    struct latch_err err;
    static const struct {
        const char *url;
        latch_rc want;
    } bad[] = {
        /* PostgreSQL targets reach the libpq backend: no server there, so unavailable. */
        {"postgresql:///latch?host=/nonexistent-latch-dir", LATCH_E_UNAVAILABLE},
        {"postgres://u@/latch?host=/nonexistent-latch-dir&connect_timeout=1", LATCH_E_UNAVAILABLE},
        {"host=/nonexistent-latch-dir dbname=latch", LATCH_E_UNAVAILABLE},
        {"host=/nonexistent-latch-dir dbname=latch bogus_option=1", LATCH_E_INVAL},
        {"postgresql://[::1/latch", LATCH_E_INVAL},
        {"mysql://localhost/x", LATCH_E_INVAL},
        {"", LATCH_E_INVAL},
        {"sqlite:", LATCH_E_INVAL},
        {":memory:", LATCH_E_INVAL},
        {"/nonexistent-dir-latch/x/y.db", LATCH_E_UNAVAILABLE},
    };

    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        latch_err_clear(&err);
        assert_int_equal(store_open(bad[i].url, &s, &err), bad[i].want);
        assert_null(s);
        assert_true(err.msg[0] != '\0');
    }
    assert_int_equal(store_open("postgresql:///latch?host=/nonexistent-latch-dir", &s, &err),
                     LATCH_E_UNAVAILABLE);
    assert_non_null(strstr(err.msg, "postgres"));

#ifdef STORE_TEST_PG
    assert_int_equal(store_open(f->url, &s, &err), LATCH_OK);
    assert_string_equal(store_backend(s), "postgres");
#else
    /* A plain path opens the same file as "sqlite:<path>". */
    assert_int_equal(store_open(f->path, &s, &err), LATCH_OK);
    assert_string_equal(store_backend(s), "sqlite");
#endif
    assert_int_equal(store_schema_version(s), STORE_TEST_SCHEMA);
    store_close(s);
    store_close(NULL);
}

static void
test_migrate_idempotent_and_newer_refused(void **state)
{
    struct fx *f = *state;
    struct store *s = NULL;
    struct latch_err err;
    sqlite3 *db = NULL;
    struct store_env e;

    assert_int_equal(store_schema_version(f->s), STORE_TEST_SCHEMA);
    assert_int_equal(store_migrate(f->s, &err), LATCH_OK);
    assert_int_equal(store_migrate(f->s, &err), LATCH_OK);
    assert_int_equal(store_schema_version(f->s), STORE_TEST_SCHEMA);
    /* Data survives a re-migrate. */
    assert_int_equal(store_env_get(f->s, f->env, &e), LATCH_OK);
    store_env_clear(&e);

    /* Simulate a database written by a newer binary. */
#ifdef STORE_TEST_PG
    (void)db;
    assert_int_equal(pg_admin("latch", "INSERT INTO schema_migrations VALUES (7, 0)"), 0);
#else
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version = 7", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
#endif

    assert_int_equal(store_open(f->url, &s, &err), LATCH_OK);
    assert_int_equal(store_schema_version(s), 7);
    latch_err_clear(&err);
    assert_int_equal(store_migrate(s, &err), LATCH_E_INVAL);
    assert_non_null(strstr(err.msg, "newer"));
    store_close(s);
}

static void
test_fresh_db_migrates_from_zero(void **state)
{
    struct fx *f = *state;
    struct store *s = NULL;
    struct latch_err err;
    char path[300];
    struct stat sb;
    int64_t n = -1;

#ifdef STORE_TEST_PG
    (void)sb;
    (void)f;
    assert_int_equal(pg_admin("postgres", "DROP DATABASE IF EXISTS fresh"), 0);
    assert_int_equal(pg_admin("postgres", "CREATE DATABASE fresh"), 0);
    pg_url_for(path, sizeof path, "fresh");
#else
    (void)snprintf(path, sizeof path, "%s/fresh.db", f->dir);
#endif
    assert_int_equal(store_open(path, &s, &err), LATCH_OK);
    assert_int_equal(store_schema_version(s), 0);
    assert_int_equal(store_migrate(s, &err), LATCH_OK);
    assert_int_equal(store_schema_version(s), STORE_TEST_SCHEMA);
    assert_int_equal(store_webhook_pending_count(s, &n), LATCH_OK);
    assert_int_equal(n, 0);
#ifndef STORE_TEST_PG
    /* The database and its WAL are private to the owner. */
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
#endif
    store_close(s);
#ifdef STORE_TEST_PG
    assert_int_equal(pg_admin("postgres", "DROP DATABASE fresh"), 0);
#else
    rm_files(path);
#endif
}

#ifndef STORE_TEST_PG
static void
test_file_mode_0600(void **state)
{
    struct fx *f = *state;
    struct stat sb;
    char wal[160];

    assert_int_equal(stat(f->path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
    /* setup() wrote, so the WAL exists (journal_mode=WAL took effect) and is private too. */
    (void)snprintf(wal, sizeof wal, "%s-wal", f->path);
    assert_int_equal(stat(wal, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0600);
}
#endif

static void
test_integrity_ok(void **state)
{
    struct fx *f = *state;
    struct latch_err err;

    add_integration(f->s, f->env, "ninja");
    (void)add_conn(f->s, f->env, "ninja", "c1", NULL, NULL);
    latch_err_clear(&err);
    assert_int_equal(store_integrity_check(f->s, &err), LATCH_OK);
}

/* ---- meta, environments, api keys ---- */

static void
test_meta(void **state)
{
    struct fx *f = *state;
    char *v = NULL;

    assert_int_equal(store_meta_get(f->s, "fingerprint", &v), LATCH_E_NOT_FOUND);
    assert_null(v);
    assert_int_equal(store_meta_set(f->s, "fingerprint", "abc"), LATCH_OK);
    assert_int_equal(store_meta_get(f->s, "fingerprint", &v), LATCH_OK);
    assert_string_equal(v, "abc");
    free(v);
    assert_int_equal(store_meta_set(f->s, "fingerprint", "def"), LATCH_OK);
    assert_int_equal(store_meta_get(f->s, "fingerprint", &v), LATCH_OK);
    assert_string_equal(v, "def");
    free(v);
}

static void
test_environments(void **state)
{
    struct fx *f = *state;
    struct store_env e, g, *list = NULL;
    size_t n = 0;

    assert_int_equal(store_env_create(f->s, "dev", &e), LATCH_E_CONFLICT);
    assert_int_equal(store_env_create(f->s, "prod", &e), LATCH_OK);
    assert_true(e.id > f->env);
    assert_string_equal(e.name, "prod");
    assert_null(e.webhook_url);
    assert_false(e.on_auth_creation);
    assert_true(e.created_at > 0);

    free(e.webhook_url);
    e.webhook_url = xstrdup("https://example.com/hook");
    e.webhook_key_sealed = xstrdup("v2.sealed");
    e.on_auth_creation = true;
    assert_int_equal(store_env_update_webhooks(f->s, &e), LATCH_OK);
    assert_int_equal(store_env_get(f->s, e.id, &g), LATCH_OK);
    assert_string_equal(g.webhook_url, "https://example.com/hook");
    assert_null(g.webhook_url_secondary);
    assert_string_equal(g.webhook_key_sealed, "v2.sealed");
    assert_true(g.on_auth_creation);
    assert_false(g.on_auth_refresh_error);
    store_env_clear(&g);

    assert_int_equal(store_env_get_by_name(f->s, "prod", &g), LATCH_OK);
    assert_int_equal(g.id, e.id);
    store_env_clear(&g);
    assert_int_equal(store_env_get_by_name(f->s, "nope", &g), LATCH_E_NOT_FOUND);
    assert_int_equal(store_env_get(f->s, 9999, &g), LATCH_E_NOT_FOUND);

    assert_int_equal(store_env_list(f->s, &list, &n), LATCH_OK);
    assert_int_equal(n, 2);
    assert_string_equal(list[0].name, "dev");
    assert_string_equal(list[1].name, "prod");
    store_env_list_free(list, n);

    e.id = 9999;
    assert_int_equal(store_env_update_webhooks(f->s, &e), LATCH_E_NOT_FOUND);
    store_env_clear(&e);
}

static void
test_apikeys(void **state)
{
    struct fx *f = *state;
    unsigned char h1[32], h2[32], h3[32];
    int64_t env = 0, n = -1;

    memset(h1, 1, sizeof h1);
    memset(h2, 2, sizeof h2);
    memset(h3, 3, sizeof h3);
    assert_int_equal(store_apikey_lookup(f->s, h1, &env), LATCH_E_NOT_FOUND);
    assert_int_equal(store_apikey_add(f->s, f->env, h1, "default"), LATCH_OK);
    assert_int_equal(store_apikey_add(f->s, f->env, h2, NULL), LATCH_OK);
    assert_int_equal(store_apikey_add(f->s, f->env, h1, "dup"), LATCH_E_CONFLICT);
    assert_int_equal(store_apikey_add(f->s, 4242, h3, "no env"), LATCH_E_NOT_FOUND);
    assert_int_equal(store_apikey_lookup(f->s, h1, &env), LATCH_OK);
    assert_int_equal(env, f->env);
    assert_int_equal(store_apikey_count(f->s, f->env, &n), LATCH_OK);
    assert_int_equal(n, 2);
    assert_int_equal(store_apikey_revoke_all(f->s, f->env), LATCH_OK);
    assert_int_equal(store_apikey_lookup(f->s, h1, &env), LATCH_E_NOT_FOUND);
    assert_int_equal(store_apikey_lookup(f->s, h2, &env), LATCH_E_NOT_FOUND);
    assert_int_equal(store_apikey_count(f->s, f->env, &n), LATCH_OK);
    assert_int_equal(n, 0);
}

/* ---- integrations ---- */

/* A store_rebind_fn that records the binding it was asked to move (no crypto in store tests). */
static latch_rc
rebind_mark(const struct store_connection *before, const struct store_connection *after,
            char **new_sealed, void *ud)
{
    (*(int *)ud)++;
    assert_int_equal(before->id, after->id);
    assert_string_equal(before->uid, after->uid);
    *new_sealed =
        xasprintf("%s|rebound:%s->%s:%s", before->credentials_sealed, before->provider_config_key,
                  after->provider_config_key, after->connection_id);
    return LATCH_OK;
}

static void
test_integrations(void **state)
{
    struct fx *f = *state;
    struct store_integration i, g, *list = NULL;
    struct store_connection c;
    size_t n = 0;
    int rebinds = 0;

    memset(&i, 0, sizeof i);
    i.env_id = f->env;
    i.unique_key = xstrdup("ninja");
    i.provider = xstrdup("ninjaone");
    i.display_name = xstrdup("NinjaOne");
    i.oauth_scopes = xstrdup("monitoring,management");
    i.forward_webhooks = true;
    i.custom_json = xstrdup("{\"a\":1}");
    assert_int_equal(store_integration_create(f->s, &i), LATCH_OK);
    assert_true(i.id > 0 && i.created_at > 0 && i.updated_at == i.created_at);
    assert_int_equal(store_integration_create(f->s, &i), LATCH_E_CONFLICT);

    /* Invalid JSON is rejected by the schema. */
    memset(&g, 0, sizeof g);
    g.env_id = f->env;
    g.unique_key = xstrdup("bad");
    g.provider = xstrdup("x");
    g.custom_json = xstrdup("{not json");
    assert_int_equal(store_integration_create(f->s, &g), LATCH_E_INVAL);
    store_integration_clear(&g);

    assert_int_equal(store_integration_get(f->s, f->env, "ninja", &g), LATCH_OK);
    assert_int_equal(g.id, i.id);
    assert_string_equal(g.provider, "ninjaone");
    assert_string_equal(g.display_name, "NinjaOne");
    assert_string_equal(g.oauth_scopes, "monitoring,management");
    assert_true(g.forward_webhooks);
    assert_string_equal(g.custom_json, "{\"a\":1}");
    store_integration_clear(&g);
    assert_int_equal(store_integration_get(f->s, f->env, "nope", &g), LATCH_E_NOT_FOUND);

    add_integration(f->s, f->env, "other");
    assert_int_equal(store_integration_list(f->s, f->env, &list, &n), LATCH_OK);
    assert_int_equal(n, 2);
    assert_string_equal(list[0].unique_key, "ninja");
    assert_string_equal(list[1].unique_key, "other");
    store_integration_list_free(list, n);

    /* Rename: the connections follow. Renaming onto an existing key conflicts. */
    (void)add_conn(f->s, f->env, "ninja", "c1", NULL, NULL);
    free(i.unique_key);
    i.unique_key = xstrdup("other");
    assert_int_equal(store_integration_update(f->s, &i, NULL, NULL), LATCH_E_CONFLICT);
    free(i.unique_key);
    i.unique_key = xstrdup("ninja2");
    free(i.display_name);
    i.display_name = NULL;
    free(i.provider);
    i.provider = xstrdup("ninjaone-eu");
    assert_int_equal(store_integration_update(f->s, &i, rebind_mark, &rebinds), LATCH_OK);
    assert_int_equal(rebinds, 1);
    assert_int_equal(store_integration_get(f->s, f->env, "ninja2", &g), LATCH_OK);
    assert_null(g.display_name);
    store_integration_clear(&g);
    assert_int_equal(store_connection_get(f->s, f->env, "ninja2", "c1", &c), LATCH_OK);
    assert_string_equal(c.provider, "ninjaone-eu");
    /* re-sealed for the new key in the rename's transaction */
    assert_non_null(strstr(c.credentials_sealed, "|rebound:ninja->ninja2:c1"));
    store_connection_clear(&c);
    assert_int_equal(store_connection_get(f->s, f->env, "ninja", "c1", &c), LATCH_E_NOT_FOUND);

    i.id = 9999;
    assert_int_equal(store_integration_update(f->s, &i, NULL, NULL), LATCH_E_NOT_FOUND);

    /* Delete cascades to connections. */
    assert_int_equal(store_integration_delete(f->s, f->env, "ninja2"), LATCH_OK);
    assert_int_equal(store_connection_get(f->s, f->env, "ninja2", "c1", &c), LATCH_E_NOT_FOUND);
    assert_int_equal(store_integration_delete(f->s, f->env, "ninja2"), LATCH_E_NOT_FOUND);
    store_integration_clear(&i);
}

/* ---- connections ---- */

static void
test_connection_upsert(void **state)
{
    struct fx *f = *state;
    struct store_connection c, g;
    bool created = true;
    int64_t id, created_at;

    add_integration(f->s, f->env, "ninja");
    memset(&c, 0, sizeof c);
    c.env_id = f->env;
    c.connection_id = xstrdup("acme");
    c.provider_config_key = xstrdup("ninja");
    c.credentials_sealed = xstrdup("sealed-A");
    /* No uid: the store does not invent one. */
    assert_int_equal(store_connection_upsert(f->s, &c, &created), LATCH_E_INVAL);

    c.uid = xstrdup("11111111-1111-4111-8111-111111111111");
    c.metadata_json = xstrdup("{\"m\":1}");
    c.tags_json = xstrdup("{\"team\":\"a\"}");
    c.end_user_json = xstrdup("{\"id\":\"u1\"}");
    c.webhook_url_override = xstrdup("https://h.example/x");
    c.expires_at = 5000;
    assert_int_equal(store_connection_upsert(f->s, &c, &created), LATCH_OK);
    assert_true(created);
    assert_true(c.id > 0);
    assert_int_equal(c.version, 1);
    assert_string_equal(c.provider, "ninjaone"); /* from the integration */
    assert_string_equal(c.connection_config_json, "{}");
    assert_string_equal(c.credentials_sealed, "sealed-A");
    assert_true(c.created_at > 0);
    id = c.id;
    created_at = c.created_at;

    /* Replace: same uid, NULL metadata/tags/end user/override are kept; version bumps. */
    free(c.credentials_sealed);
    c.credentials_sealed = xstrdup("sealed-B");
    free(c.metadata_json);
    c.metadata_json = NULL;
    free(c.tags_json);
    c.tags_json = NULL;
    free(c.end_user_json);
    c.end_user_json = NULL;
    free(c.webhook_url_override);
    c.webhook_url_override = NULL;
    free(c.connection_config_json);
    c.connection_config_json = xstrdup("{\"instance\":\"eu\"}");
    c.expires_at = 9000;
    assert_int_equal(store_connection_upsert(f->s, &c, &created), LATCH_OK);
    assert_false(created);
    assert_int_equal(c.id, id);
    assert_int_equal(c.version, 2);
    assert_int_equal(c.created_at, created_at);
    assert_string_equal(c.uid, "11111111-1111-4111-8111-111111111111");
    assert_string_equal(c.credentials_sealed, "sealed-B");
    assert_string_equal(c.metadata_json, "{\"m\":1}");
    assert_string_equal(c.tags_json, "{\"team\":\"a\"}");
    assert_string_equal(c.end_user_json, "{\"id\":\"u1\"}");
    assert_string_equal(c.webhook_url_override, "https://h.example/x");
    assert_string_equal(c.connection_config_json, "{\"instance\":\"eu\"}");
    assert_int_equal(c.expires_at, 9000);

    /* A different uid for the same key would orphan the ciphertext: conflict, nothing written. */
    free(c.uid);
    c.uid = xstrdup("22222222-2222-4222-8222-222222222222");
    free(c.credentials_sealed);
    c.credentials_sealed = xstrdup("sealed-C");
    assert_int_equal(store_connection_upsert(f->s, &c, &created), LATCH_E_CONFLICT);
    assert_int_equal(store_connection_get(f->s, f->env, "ninja", "acme", &g), LATCH_OK);
    assert_string_equal(g.credentials_sealed, "sealed-B");
    assert_int_equal(g.version, 2);
    store_connection_clear(&g);

    /* The same uid twice under another key: unique uid conflict. */
    free(c.connection_id);
    c.connection_id = xstrdup("acme2");
    free(c.uid);
    c.uid = xstrdup("11111111-1111-4111-8111-111111111111");
    assert_int_equal(store_connection_upsert(f->s, &c, &created), LATCH_E_CONFLICT);

    /* Unknown integration. */
    free(c.provider_config_key);
    c.provider_config_key = xstrdup("missing");
    free(c.uid);
    c.uid = xstrdup("33333333-3333-4333-8333-333333333333");
    assert_int_equal(store_connection_upsert(f->s, &c, &created), LATCH_E_NOT_FOUND);

    /* Invalid JSON. */
    free(c.provider_config_key);
    c.provider_config_key = xstrdup("ninja");
    free(c.tags_json);
    c.tags_json = xstrdup("{");
    assert_int_equal(store_connection_upsert(f->s, &c, &created), LATCH_E_INVAL);
    store_connection_clear(&c);

    assert_int_equal(store_connection_get_by_id(f->s, f->env, id, &g), LATCH_OK);
    assert_string_equal(g.connection_id, "acme");
    store_connection_clear(&g);
    assert_int_equal(store_connection_get_by_id(f->s, f->env + 1, id, &g), LATCH_E_NOT_FOUND);
}

struct list_case {
    const char *name;
    struct store_conn_filter f;
    const char *want; /* connection ids in order, comma-separated */
};

static void
check_list(struct store *s, int64_t env, const struct list_case *lc)
{
    struct store_connection *v = NULL;
    char got[256] = "";
    size_t n = 0, off = 0;

    assert_int_equal(store_connection_list(s, env, &lc->f, &v, &n), LATCH_OK);
    for (size_t i = 0; i < n; i++) {
        assert_null(v[i].credentials_sealed);
        off +=
            (size_t)snprintf(got + off, sizeof got - off, "%s%s", i ? "," : "", v[i].connection_id);
        assert_true(off < sizeof got);
    }
    store_connection_list_free(v, n);
    if (strcmp(got, lc->want) != 0)
        fail_msg("case %s: got [%s] want [%s]", lc->name, got, lc->want);
}

static void
test_connection_list_filters(void **state)
{
    struct fx *f = *state;
    static const char *const k_ninja[] = {"ninja"};
    static const char *const k_both[] = {"ninja", "other"};
    static const char *const k_none[] = {"zzz"};
    static const char *const t_team[] = {"team"};
    static const char *const v_a[] = {"a"};
    static const char *const t_two[] = {"team", "tier"};
    static const char *const v_two[] = {"a", "gold"};
    static const char *const v_tier_only[] = {"gold"};
    static const char *const t_tier[] = {"tier"};
    const struct list_case cases[] = {
        {"all", {.limit = 100}, "c5,c4,c3,c2,c1"},
        {"limit", {.limit = 2}, "c5,c4"},
        {"offset", {.limit = 2, .offset = 2}, "c3,c2"},
        {"offset past end", {.limit = 2, .offset = 10}, ""},
        {"exact id", {.connection_id = "c3", .limit = 100}, "c3"},
        {"search id", {.search = "C2", .limit = 100}, "c2"},
        {"search email", {.search = "ACME.COM", .limit = 100}, "c2,c1"},
        {"search name", {.search = "bob", .limit = 100}, "c3"},
        {"search org", {.search = "org-9", .limit = 100}, "c3"},
        {"search end user id", {.search = "user-4", .limit = 100}, "c4"},
        {"search none", {.search = "zzz", .limit = 100}, ""},
        {"end user id", {.end_user_id = "user-1", .limit = 100}, "c1"},
        {"org id", {.end_user_org_id = "org-9", .limit = 100}, "c3"},
        {"integration",
         {.integration_keys = k_ninja, .n_integration_keys = 1, .limit = 100},
         "c4,c3,c2,c1"},
        {"integrations",
         {.integration_keys = k_both, .n_integration_keys = 2, .limit = 100},
         "c5,c4,c3,c2,c1"},
        {"integration none",
         {.integration_keys = k_none, .n_integration_keys = 1, .limit = 100},
         ""},
        {"tag", {.tag_keys = t_team, .tag_values = v_a, .n_tags = 1, .limit = 100}, "c5,c2,c1"},
        {"tags AND", {.tag_keys = t_two, .tag_values = v_two, .n_tags = 2, .limit = 100}, "c2"},
        {"tag tier",
         {.tag_keys = t_tier, .tag_values = v_tier_only, .n_tags = 1, .limit = 100},
         "c3,c2"},
        {"combined",
         {.search = "acme",
          .tag_keys = t_team,
          .tag_values = v_a,
          .n_tags = 1,
          .integration_keys = k_ninja,
          .n_integration_keys = 1,
          .limit = 1},
         "c2"},
    };
    struct store_conn_filter bad = {.limit = 0};
    struct store_connection *v = NULL;
    size_t n = 0;

    add_integration(f->s, f->env, "ninja");
    add_integration(f->s, f->env, "other");
    (void)add_conn(f->s, f->env, "ninja", "c1", "{\"id\":\"user-1\",\"email\":\"one@acme.com\"}",
                   "{\"team\":\"a\"}");
    (void)add_conn(f->s, f->env, "ninja", "c2",
                   "{\"id\":\"user-2\",\"email\":\"two@Acme.com\",\"display_name\":\"Al\"}",
                   "{\"team\":\"a\",\"tier\":\"gold\"}");
    (void)add_conn(
        f->s, f->env, "ninja", "c3",
        "{\"id\":\"user-3\",\"display_name\":\"Bob\",\"organization\":{\"id\":\"org-9\"}}",
        "{\"team\":\"b\",\"tier\":\"gold\"}");
    (void)add_conn(f->s, f->env, "ninja", "c4", "{\"id\":\"user-4\"}", NULL);
    (void)add_conn(f->s, f->env, "other", "c5", NULL, "{\"team\":\"a\"}");

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_list(f->s, f->env, &cases[i]);

    /* Another environment sees nothing. */
    assert_int_equal(store_connection_list(f->s, f->env + 1, &cases[0].f, &v, &n), LATCH_OK);
    assert_int_equal(n, 0);
    store_connection_list_free(v, n);

    assert_int_equal(store_connection_list(f->s, f->env, &bad, &v, &n), LATCH_E_INVAL);
    bad.limit = LATCH_MAX_LIST_LIMIT + 1;
    assert_int_equal(store_connection_list(f->s, f->env, &bad, &v, &n), LATCH_E_INVAL);
}

static void
test_connection_delete_metadata_patch_touch(void **state)
{
    struct fx *f = *state;
    struct store_connection g;
    int64_t id;

    add_integration(f->s, f->env, "ninja");
    id = add_conn(f->s, f->env, "ninja", "c1", "{\"id\":\"u\"}", "{\"a\":\"1\"}");

    assert_int_equal(store_connection_set_metadata(f->s, id, "{\"k\":[1,2]}"), LATCH_OK);
    assert_int_equal(store_connection_patch(f->s, id, NULL, NULL, "https://o.example"), LATCH_OK);
    assert_int_equal(store_connection_touch(f->s, id, 777), LATCH_OK);
    assert_int_equal(store_connection_touch(f->s, id, 500), LATCH_OK); /* never goes back */
    assert_int_equal(store_connection_get(f->s, f->env, "ninja", "c1", &g), LATCH_OK);
    assert_string_equal(g.metadata_json, "{\"k\":[1,2]}");
    assert_string_equal(g.tags_json, "{\"a\":\"1\"}");
    assert_string_equal(g.end_user_json, "{\"id\":\"u\"}");
    assert_string_equal(g.webhook_url_override, "https://o.example");
    assert_int_equal(g.last_fetched_at, 777);
    assert_int_equal(g.version, 1); /* metadata/patch are not credential writes */
    store_connection_clear(&g);

    assert_int_equal(store_connection_patch(f->s, id, "{\"b\":\"2\"}", "{\"id\":\"v\"}", ""),
                     LATCH_OK);
    assert_int_equal(store_connection_set_metadata(f->s, id, NULL), LATCH_OK);
    assert_int_equal(store_connection_get(f->s, f->env, "ninja", "c1", &g), LATCH_OK);
    assert_null(g.metadata_json);
    assert_string_equal(g.tags_json, "{\"b\":\"2\"}");
    assert_string_equal(g.end_user_json, "{\"id\":\"v\"}");
    assert_null(g.webhook_url_override);
    store_connection_clear(&g);

    assert_int_equal(store_connection_set_metadata(f->s, id, "not json"), LATCH_E_INVAL);
    assert_int_equal(store_connection_set_metadata(f->s, 9999, "{}"), LATCH_E_NOT_FOUND);
    assert_int_equal(store_connection_patch(f->s, 9999, NULL, NULL, NULL), LATCH_E_NOT_FOUND);
    assert_int_equal(store_connection_touch(f->s, 9999, 1), LATCH_E_NOT_FOUND);
    {
        /* batched: one transaction, gone rows skipped, never backwards, bounded */
        int64_t id2 = add_conn(f->s, f->env, "ninja", "c2", NULL, NULL);
        int64_t ids[] = {id, 9999, id2};
        int64_t *many = calloc(LATCH_STORE_TOUCH_BATCH + 1, sizeof *many);

        assert_int_equal(store_connection_touch_many(f->s, ids, 3, 888), LATCH_OK);
        assert_int_equal(store_connection_touch_many(f->s, ids, 1, 100), LATCH_OK);
        assert_int_equal(store_connection_touch_many(f->s, ids, 0, 100), LATCH_OK);
        assert_non_null(many);
        assert_int_equal(store_connection_touch_many(f->s, many, LATCH_STORE_TOUCH_BATCH + 1, 1),
                         LATCH_E_INVAL);
        free(many);
        assert_int_equal(store_connection_get(f->s, f->env, "ninja", "c1", &g), LATCH_OK);
        assert_int_equal(g.last_fetched_at, 888);
        store_connection_clear(&g);
        assert_int_equal(store_connection_get(f->s, f->env, "ninja", "c2", &g), LATCH_OK);
        assert_int_equal(g.last_fetched_at, 888);
        store_connection_clear(&g);
        /* Touches live in connection_activity; deleting the connection deletes its row. */
        assert_activity_rows(f, id2, 1);
        assert_int_equal(store_connection_delete(f->s, f->env, "ninja", "c2"), LATCH_OK);
        assert_activity_rows(f, id2, 0);
        /* A batch naming the deleted row still succeeds and does not bring its activity back. */
        assert_int_equal(store_connection_touch_many(f->s, ids, 3, 999), LATCH_OK);
        assert_activity_rows(f, id2, 0);
        assert_int_equal(store_connection_touch(f->s, id2, 1000), LATCH_E_NOT_FOUND);
        assert_activity_rows(f, id2, 0);
        assert_int_equal(store_connection_get_by_id(f->s, f->env, id, &g), LATCH_OK);
        assert_int_equal(g.last_fetched_at, 999);
        store_connection_clear(&g);
        /* Duplicate ids in one batch are fine. */
        ids[1] = id;
        ids[2] = id;
        assert_int_equal(store_connection_touch_many(f->s, ids, 3, 1001), LATCH_OK);
        assert_int_equal(store_connection_get(f->s, f->env, "ninja", "c1", &g), LATCH_OK);
        assert_int_equal(g.last_fetched_at, 1001);
        store_connection_clear(&g);
        assert_activity_rows(f, id, 1);
    }

    assert_int_equal(store_connection_delete(f->s, f->env, "ninja", "c1"), LATCH_OK);
    assert_int_equal(store_connection_delete(f->s, f->env, "ninja", "c1"), LATCH_E_NOT_FOUND);
    assert_int_equal(store_connection_get(f->s, f->env, "ninja", "c1", &g), LATCH_E_NOT_FOUND);
}

/* ---- leases and refresh ---- */

static void
test_lease(void **state)
{
    struct fx *f = *state;
    int64_t id, v = 0;

    add_integration(f->s, f->env, "ninja");
    id = add_conn(f->s, f->env, "ninja", "c1", NULL, NULL);

    assert_int_equal(store_connection_lease(f->s, id, "A", 60000, &v), LATCH_OK);
    assert_int_equal(v, 1);
    assert_int_equal(store_connection_lease(f->s, id, "B", 60000, &v), LATCH_E_CONFLICT);
    assert_int_equal(store_connection_lease(f->s, id, "A", 60000, &v), LATCH_OK); /* renew */
    assert_int_equal(store_connection_lease_release(f->s, id, "B"), LATCH_E_CONFLICT);
    assert_int_equal(store_connection_lease_release(f->s, id, "A"), LATCH_OK);
    assert_int_equal(store_connection_lease(f->s, id, "B", 60000, &v), LATCH_OK);
    assert_int_equal(store_connection_lease_release(f->s, id, "B"), LATCH_OK);

    /* An expired lease lets another owner in. */
    assert_int_equal(store_connection_lease(f->s, id, "A", 1, &v), LATCH_OK);
    usleep(20 * 1000);
    assert_int_equal(store_connection_lease(f->s, id, "B", 60000, &v), LATCH_OK);

    assert_int_equal(store_connection_lease(f->s, 9999, "A", 1000, &v), LATCH_E_NOT_FOUND);
    assert_int_equal(store_connection_lease_release(f->s, 9999, "A"), LATCH_E_NOT_FOUND);
    assert_int_equal(store_connection_lease(f->s, id, "A", 0, &v), LATCH_E_INVAL);
    assert_int_equal(store_connection_lease(f->s, id, NULL, 10, &v), LATCH_E_INVAL);
}

static void
test_refresh_done_and_failed(void **state)
{
    struct fx *f = *state;
    struct store_connection g;
    int64_t id, v = 0, nv = 0;

    add_integration(f->s, f->env, "ninja");
    id = add_conn(f->s, f->env, "ninja", "c1", NULL, NULL);

    /* Without the lease: conflict. */
    assert_int_equal(store_connection_refresh_done(f->s, id, "A", 1, "new", 100, &nv),
                     LATCH_E_CONFLICT);

    /* Failure: attempts, error, back-off, needs_reauth; lease released. */
    assert_int_equal(store_connection_lease(f->s, id, "A", 60000, &v), LATCH_OK);
    assert_int_equal(store_connection_refresh_failed(f->s, id, "B", "{\"type\":\"x\"}", 50, false),
                     LATCH_E_CONFLICT);
    assert_int_equal(store_connection_refresh_failed(f->s, id, "A", "{\"type\":\"x\"}", 50, false),
                     LATCH_OK);
    assert_int_equal(store_connection_lease(f->s, id, "A", 60000, &v), LATCH_OK);
    assert_int_equal(store_connection_refresh_failed(f->s, id, "A", "{\"type\":\"y\"}", 70, true),
                     LATCH_OK);
    assert_int_equal(store_connection_get_by_id(f->s, f->env, id, &g), LATCH_OK);
    assert_int_equal(g.refresh_attempts, 2);
    assert_string_equal(g.auth_error_json, "{\"type\":\"y\"}");
    assert_int_equal(g.next_refresh_at, 70);
    assert_true(g.needs_reauth);
    assert_true(g.last_refresh_failure > 0);
    assert_int_equal(g.version, 1);
    store_connection_clear(&g);
    assert_int_equal(store_connection_lease(f->s, id, "B", 60000, &v), LATCH_OK); /* released */

    /* Stale version: conflict, nothing overwritten. */
    assert_int_equal(store_connection_refresh_done(f->s, id, "B", 0, "stale", 100, &nv),
                     LATCH_E_CONFLICT);
    assert_int_equal(store_connection_refresh_done(f->s, id, "B", v, "fresh", 12345, &nv),
                     LATCH_OK);
    assert_int_equal(nv, v + 1);
    /* Same version again (a second, late writer): conflict. */
    assert_int_equal(store_connection_lease(f->s, id, "B", 60000, &v), LATCH_OK);
    assert_int_equal(store_connection_refresh_done(f->s, id, "B", nv - 1, "late", 1, &nv),
                     LATCH_E_CONFLICT);
    assert_int_equal(store_connection_get_by_id(f->s, f->env, id, &g), LATCH_OK);
    assert_string_equal(g.credentials_sealed, "fresh");
    assert_int_equal(g.expires_at, 12345);
    assert_int_equal(g.version, 2);
    assert_int_equal(g.refresh_attempts, 0);
    assert_null(g.auth_error_json);
    assert_int_equal(g.next_refresh_at, 0);
    assert_false(g.needs_reauth);
    assert_true(g.last_refresh_success > 0);
    store_connection_clear(&g);
    assert_int_equal(store_connection_refresh_done(f->s, 9999, "B", 1, "x", 1, &nv),
                     LATCH_E_NOT_FOUND);
}

static void
test_due_for_refresh(void **state)
{
    struct fx *f = *state;
    int64_t a, b, c, d, e, v, *ids = NULL, *envs = NULL;
    int64_t now = latch_now_ms();
    size_t n = 0;

    add_integration(f->s, f->env, "ninja");
    a = add_conn(f->s, f->env, "ninja", "a", NULL, NULL);   /* due */
    b = add_conn(f->s, f->env, "ninja", "b", NULL, NULL);   /* not used recently */
    c = add_conn(f->s, f->env, "ninja", "c", NULL, NULL);   /* needs reauth */
    d = add_conn(f->s, f->env, "ninja", "d", NULL, NULL);   /* backed off */
    e = add_conn(f->s, f->env, "ninja", "e", NULL, NULL);   /* expires later */
    (void)add_conn(f->s, f->env, "ninja", "f", NULL, NULL); /* no expiry */

    int64_t all[] = {a, b, c, d, e};
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(store_connection_lease(f->s, all[i], "w", 60000, &v), LATCH_OK);
        assert_int_equal(store_connection_refresh_done(f->s, all[i], "w", v, "s",
                                                       all[i] == e ? now + 3600000 : now + 1000,
                                                       &v),
                         LATCH_OK);
        assert_int_equal(store_connection_touch(f->s, all[i], all[i] == b ? 10 : now), LATCH_OK);
    }
    assert_int_equal(store_connection_lease(f->s, c, "w", 60000, &v), LATCH_OK);
    assert_int_equal(store_connection_refresh_failed(f->s, c, "w", "{}", 0, true), LATCH_OK);
    assert_int_equal(store_connection_lease(f->s, d, "w", 60000, &v), LATCH_OK);
    assert_int_equal(store_connection_refresh_failed(f->s, d, "w", "{}", now + 600000, false),
                     LATCH_OK);

    assert_int_equal(
        store_connection_due_for_refresh(f->s, now + 60000, now - 60000, 10, &ids, &envs, &n),
        LATCH_OK);
    assert_int_equal(n, 1);
    assert_int_equal(ids[0], a);
    assert_int_equal(envs[0], f->env);
    free(ids);
    free(envs);

    /* A row being refreshed (leased) is skipped. */
    assert_int_equal(store_connection_lease(f->s, a, "w", 60000, &v), LATCH_OK);
    assert_int_equal(
        store_connection_due_for_refresh(f->s, now + 60000, now - 60000, 10, &ids, &envs, &n),
        LATCH_OK);
    assert_int_equal(n, 0);
    assert_null(ids);
    assert_int_equal(store_connection_lease_release(f->s, a, "w"), LATCH_OK);

    /* Wider window: a and e; max bounds the answer. */
    assert_int_equal(
        store_connection_due_for_refresh(f->s, now + 7200000, now - 60000, 10, &ids, &envs, &n),
        LATCH_OK);
    assert_int_equal(n, 2);
    assert_int_equal(ids[0], a);
    assert_int_equal(ids[1], e);
    free(ids);
    free(envs);
    assert_int_equal(
        store_connection_due_for_refresh(f->s, now + 7200000, now - 60000, 1, &ids, &envs, &n),
        LATCH_OK);
    assert_int_equal(n, 1);
    free(ids);
    free(envs);

    /* A touch makes b recently used, so due; an older touch does not undo that. */
    assert_int_equal(store_connection_touch_many(f->s, &b, 1, now), LATCH_OK);
    assert_int_equal(store_connection_touch(f->s, b, 10), LATCH_OK);
    assert_int_equal(
        store_connection_due_for_refresh(f->s, now + 60000, now - 60000, 10, &ids, &envs, &n),
        LATCH_OK);
    assert_int_equal(n, 2);
    assert_true((ids[0] == a && ids[1] == b) || (ids[0] == b && ids[1] == a));
    free(ids);
    free(envs);
}

/*
 * A database at schema version 1 (last_fetched_at only in connections, no connection_activity)
 * migrates to 2 and keeps the value: reads, the due list and touches all see it.
 */
static void
test_migrate_from_v1_keeps_last_fetched(void **state)
{
    struct fx *f = *state;
    struct store *s = NULL;
    struct store_connection g;
    struct latch_err err;
    int64_t id, v = 0, *ids = NULL, *envs = NULL;
    int64_t now = latch_now_ms();
    size_t n = 0;
    char sql[640];

    add_integration(f->s, f->env, "ninja");
    id = add_conn(f->s, f->env, "ninja", "old", NULL, NULL);
    assert_int_equal(store_connection_lease(f->s, id, "w", 60000, &v), LATCH_OK);
    assert_int_equal(store_connection_refresh_done(f->s, id, "w", v, "s", now + 1000, &v),
                     LATCH_OK);
    assert_int_equal(store_connection_touch(f->s, id, 5), LATCH_OK);

    /* Roll the database back to what a version-1 binary wrote. */
    (void)snprintf(sql, sizeof sql,
                   "DROP TABLE connection_activity; DROP TABLE admin_sessions; DROP TABLE "
                   "admin_users; DELETE FROM schema_migrations WHERE version >= 2; UPDATE "
                   "connections SET last_fetched_at = %lld;%s",
                   (long long)now, ROLLBACK_TO_V1_TAIL);
    db_exec(f, sql);

    assert_int_equal(store_open(f->url, &s, &err), LATCH_OK);
    assert_int_equal(store_schema_version(s), 1);
    latch_err_clear(&err);
    assert_int_equal(store_migrate(s, &err), LATCH_OK);
    assert_int_equal(store_schema_version(s), STORE_TEST_SCHEMA);
    assert_activity_rows(f, id, 0);
    assert_int_equal(store_connection_get_by_id(s, f->env, id, &g), LATCH_OK);
    assert_int_equal(g.last_fetched_at, now);
    store_connection_clear(&g);
    assert_int_equal(
        store_connection_due_for_refresh(s, now + 60000, now - 60000, 10, &ids, &envs, &n),
        LATCH_OK);
    assert_int_equal(n, 1);
    assert_int_equal(ids[0], id);
    free(ids);
    free(envs);

    /* The effective value is the larger of the column and the activity row. */
    assert_int_equal(store_connection_touch(s, id, now - 1000), LATCH_OK);
    assert_int_equal(store_connection_get(s, f->env, "ninja", "old", &g), LATCH_OK);
    assert_int_equal(g.last_fetched_at, now);
    store_connection_clear(&g);
    assert_int_equal(store_connection_touch_many(s, &id, 1, now + 5), LATCH_OK);
    assert_int_equal(store_connection_get(s, f->env, "ninja", "old", &g), LATCH_OK);
    assert_int_equal(g.last_fetched_at, now + 5);
    store_connection_clear(&g);
    assert_activity_rows(f, id, 1);
    store_close(s);
}

/* ---- OAuth2 states: taken once, even by two takers at the same time ---- */

static void
test_oauth_states(void **state)
{
    struct fx *f = *state;
    struct store_oauth_state x, g;
    unsigned char h[32], h2[32], sh[32];
    int64_t now = latch_now_ms();

    memset(h, 0x11, sizeof h);
    memset(h2, 0x22, sizeof h2);
    memset(sh, 0x33, sizeof sh);
    memset(&x, 0, sizeof x);
    memcpy(x.state_hash, h, 32);
    memcpy(x.session_hash, sh, 32);
    x.env_id = f->env;
    x.integration = "ninja";
    x.connection_id = "c-1";
    x.ws_client_id = "ws-1";
    x.payload_sealed = "v1.sealed";
    x.expires_at = now + 600000;
    assert_int_equal(store_oauth_state_create(f->s, &x), LATCH_OK);
    assert_true(x.id > 0);
    assert_int_not_equal(store_oauth_state_create(f->s, &x), LATCH_OK); /* same hash */
    assert_int_equal(store_oauth_state_take(f->s, h2, &g), LATCH_E_NOT_FOUND);
    assert_int_equal(store_oauth_state_take(f->s, h, &g), LATCH_OK);
    assert_int_equal(g.env_id, f->env);
    assert_memory_equal(g.session_hash, sh, 32);
    assert_string_equal(g.integration, "ninja");
    assert_string_equal(g.connection_id, "c-1");
    assert_string_equal(g.ws_client_id, "ws-1");
    assert_string_equal(g.payload_sealed, "v1.sealed");
    assert_int_equal(g.expires_at, now + 600000);
    store_oauth_state_clear(&g);
    /* single use: the second take finds nothing */
    assert_int_equal(store_oauth_state_take(f->s, h, &g), LATCH_E_NOT_FOUND);
    /* expired rows are purged; live ones stay */
    memcpy(x.state_hash, h2, 32);
    x.ws_client_id = NULL;
    x.expires_at = now - 1;
    assert_int_equal(store_oauth_state_create(f->s, &x), LATCH_OK);
    memcpy(x.state_hash, h, 32);
    x.expires_at = now + 600000;
    assert_int_equal(store_oauth_state_create(f->s, &x), LATCH_OK);
    assert_int_equal(store_oauth_state_purge_expired(f->s, now), LATCH_OK);
    assert_int_equal(store_oauth_state_take(f->s, h2, &g), LATCH_E_NOT_FOUND);
    assert_int_equal(store_oauth_state_take(f->s, h, &g), LATCH_OK);
    assert_null(g.ws_client_id);
    store_oauth_state_clear(&g);
}

/* ---- sessions ---- */

static void
test_sessions(void **state)
{
    struct fx *f = *state;
    struct store_session x, g;
    unsigned char h[32], h2[32];
    int attempts = 0;
    int64_t now = latch_now_ms();

    memset(h, 0xab, sizeof h);
    memset(h2, 0xcd, sizeof h2);
    memset(&x, 0, sizeof x);
    x.env_id = f->env;
    memcpy(x.token_hash, h, 32);
    x.end_user_json = xstrdup("{\"id\":\"u\"}");
    x.allowed_integrations_json = xstrdup("[\"ninja\"]");
    x.expires_at = now + 60000;
    assert_int_equal(store_session_create(f->s, &x), LATCH_OK);
    assert_true(x.id > 0 && x.created_at > 0);
    assert_int_equal(store_session_create(f->s, &x), LATCH_E_CONFLICT); /* same hash */

    assert_int_equal(store_session_get_by_hash(f->s, h, &g), LATCH_OK);
    assert_int_equal(g.id, x.id);
    assert_memory_equal(g.token_hash, h, 32);
    assert_string_equal(g.end_user_json, "{\"id\":\"u\"}");
    assert_string_equal(g.allowed_integrations_json, "[\"ninja\"]");
    assert_null(g.organization_json);
    assert_int_equal(g.expires_at, now + 60000);
    store_session_clear(&g);
    assert_int_equal(store_session_get_by_hash(f->s, h2, &g), LATCH_E_NOT_FOUND);

    assert_int_equal(store_session_bump_attempts(f->s, x.id, &attempts), LATCH_OK);
    assert_int_equal(attempts, 1);
    assert_int_equal(store_session_bump_attempts(f->s, x.id, &attempts), LATCH_OK);
    assert_int_equal(attempts, 2);
    assert_int_equal(store_session_bump_attempts(f->s, 9999, &attempts), LATCH_E_NOT_FOUND);

    /* An expired one is returned by get, and purged by purge. */
    store_session_clear(&x);
    memset(&x, 0, sizeof x);
    x.env_id = f->env;
    memcpy(x.token_hash, h2, 32);
    x.expires_at = now - 1;
    assert_int_equal(store_session_create(f->s, &x), LATCH_OK);
    assert_int_equal(store_session_get_by_hash(f->s, h2, &g), LATCH_OK);
    store_session_clear(&g);
    assert_int_equal(store_session_purge_expired(f->s, now), LATCH_OK);
    assert_int_equal(store_session_get_by_hash(f->s, h2, &g), LATCH_E_NOT_FOUND);
    assert_int_equal(store_session_get_by_hash(f->s, h, &g), LATCH_OK);
    assert_int_equal(store_session_delete(f->s, g.id), LATCH_OK);
    assert_int_equal(store_session_delete(f->s, g.id), LATCH_E_NOT_FOUND);
    store_session_clear(&g);
    store_session_clear(&x);
}

/* ---- webhook outbox ---- */

static void
test_outbox(void **state)
{
    struct fx *f = *state;
    struct store_webhook *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    int64_t id1, id2, id3, n = -1, now;

    assert_int_equal(store_webhook_enqueue(f->s, f->env, "https://h/1", "{\"n\":1}", &id1),
                     LATCH_OK);
    assert_int_equal(store_webhook_enqueue(f->s, f->env, "https://h/2", "{\"n\":2}", &id2),
                     LATCH_OK);
    assert_int_equal(store_webhook_enqueue(f->s, f->env, "https://h/3", "{\"n\":3}", &id3),
                     LATCH_OK);
    assert_int_equal(store_webhook_enqueue(f->s, 4242, "https://h/x", "{}", NULL),
                     LATCH_E_NOT_FOUND);
    assert_int_equal(store_webhook_pending_count(f->s, &n), LATCH_OK);
    assert_int_equal(n, 3);
    now = latch_now_ms();

    /* Two claimers never get the same row. */
    assert_int_equal(store_webhook_claim(f->s, "w1", now, 30000, 2, &a, &na), LATCH_OK);
    assert_int_equal(store_webhook_claim(f->s, "w2", now, 30000, 10, &b, &nb), LATCH_OK);
    assert_int_equal(na, 2);
    assert_int_equal(nb, 1);
    for (size_t i = 0; i < na; i++)
        for (size_t j = 0; j < nb; j++)
            assert_true(a[i].id != b[j].id);
    assert_int_equal(b[0].id, id3);
    assert_string_equal(b[0].url, "https://h/3");
    assert_string_equal(b[0].body, "{\"n\":3}");
    assert_int_equal(b[0].attempts, 0);
    store_webhook_list_free(b, nb);
    b = NULL;
    assert_int_equal(store_webhook_claim(f->s, "w3", now, 30000, 10, &b, &nb), LATCH_OK);
    assert_int_equal(nb, 0);
    store_webhook_list_free(b, nb);

    /* Done removes; retry reschedules; give_up marks dead. */
    assert_int_equal(store_webhook_done(f->s, id1), LATCH_OK);
    assert_int_equal(store_webhook_done(f->s, id1), LATCH_E_NOT_FOUND);
    assert_int_equal(store_webhook_retry(f->s, id2, now + 1000, "HTTP 500", false), LATCH_OK);
    assert_int_equal(store_webhook_retry(f->s, id3, 0, "HTTP 410", true), LATCH_OK);
    assert_int_equal(store_webhook_retry(f->s, 9999, 0, "x", true), LATCH_E_NOT_FOUND);
    assert_int_equal(store_webhook_pending_count(f->s, &n), LATCH_OK);
    assert_int_equal(n, 1);

    /* Not due yet; then due (the claim was released by retry). */
    assert_int_equal(store_webhook_claim(f->s, "w1", now + 500, 30000, 10, &b, &nb), LATCH_OK);
    assert_int_equal(nb, 0);
    store_webhook_list_free(b, nb);
    assert_int_equal(store_webhook_claim(f->s, "w1", now + 1000, 30000, 10, &b, &nb), LATCH_OK);
    assert_int_equal(nb, 1);
    assert_int_equal(b[0].id, id2);
    assert_int_equal(b[0].attempts, 1);
    assert_int_equal(b[0].next_attempt_at, now + 1000);
    store_webhook_list_free(b, nb);

    /* A claim that expired can be taken over. */
    assert_int_equal(store_webhook_claim(f->s, "w2", now + 1000 + 30000, 30000, 10, &b, &nb),
                     LATCH_OK);
    assert_int_equal(nb, 1);
    assert_int_equal(b[0].id, id2);
    store_webhook_list_free(b, nb);
    store_webhook_list_free(a, na);
}

/* ---- key rotation ---- */

struct reseal_ctx {
    struct store *s;
    int64_t env;
    const char *race_uid; /* when seen, a concurrent refresh rewrites this row first */
    int64_t race_id;
    size_t calls;
    size_t meta_calls;
};

static latch_rc
reseal_cb(const struct store_sealed_ref *ref, char **new_sealed, void *ud)
{
    struct reseal_ctx *x = ud;
    int64_t v = 0;

    x->calls++;
    if (strcmp(ref->table, "meta") == 0) {
        x->meta_calls++;
        assert_string_equal(ref->column, "value");
        assert_true(strncmp(ref->row, "sealed:", 7) == 0);
    } else if (strcmp(ref->table, "connections") == 0) {
        assert_string_equal(ref->column, "credentials");
        if (x->race_uid != NULL && strcmp(ref->row, x->race_uid) == 0) {
            assert_int_equal(store_connection_lease(x->s, x->race_id, "refresher", 60000, &v),
                             LATCH_OK);
            assert_int_equal(
                store_connection_refresh_done(x->s, x->race_id, "refresher", v, "refreshed", 1, &v),
                LATCH_OK);
        }
    } else {
        assert_string_equal(ref->table, "environments");
        assert_string_equal(ref->column, "webhook_key");
    }
    if (strncmp(ref->sealed, "new:", 4) == 0) {
        *new_sealed = NULL; /* already current */
        return LATCH_OK;
    }
    *new_sealed = xasprintf("new:%s", ref->sealed);
    return LATCH_OK;
}

static void
test_reseal_all_cas(void **state)
{
    struct fx *f = *state;
    struct reseal_ctx x;
    struct store_connection g;
    struct store_env e;
    char cid[32], *v = NULL;
    size_t rewritten = 0;
    int64_t race_id = 0;
    const size_t nconn = 130; /* more than one batch */

    add_integration(f->s, f->env, "ninja");
    for (size_t i = 0; i < nconn; i++) {
        (void)snprintf(cid, sizeof cid, "c%zu", i);
        int64_t id = add_conn(f->s, f->env, "ninja", cid, NULL, NULL);
        if (i == 120)
            race_id = id;
    }
    assert_int_equal(store_env_get(f->s, f->env, &e), LATCH_OK);
    e.webhook_key_sealed = xstrdup("envkey");
    assert_int_equal(store_env_update_webhooks(f->s, &e), LATCH_OK);
    store_env_clear(&e);
    assert_int_equal(store_meta_set(f->s, "sealed:x", "mx"), LATCH_OK);
    assert_int_equal(store_meta_set(f->s, "sealed:index_key", "ik"), LATCH_OK);
    assert_int_equal(store_meta_set(f->s, "index_key", "not-sealed"), LATCH_OK);
    assert_int_equal(store_meta_set(f->s, "fingerprint", "plain"), LATCH_OK);

    memset(&x, 0, sizeof x);
    x.s = f->s;
    x.env = f->env;
    x.race_uid = "uid-ninja-c120";
    x.race_id = race_id;
    assert_int_equal(store_reseal_all(f->s, reseal_cb, &x, &rewritten), LATCH_OK);
    /* All connections but the raced one, plus the env key and two meta rows. */
    assert_int_equal(rewritten, nconn - 1 + 1 + 2);
    assert_int_equal(x.calls, nconn + 1 + 2);
    assert_int_equal(x.meta_calls, 2);

    assert_int_equal(store_connection_get_by_id(f->s, f->env, race_id, &g), LATCH_OK);
    assert_string_equal(g.credentials_sealed, "refreshed"); /* the refresh was not overwritten */
    store_connection_clear(&g);
    assert_int_equal(store_connection_get(f->s, f->env, "ninja", "c0", &g), LATCH_OK);
    assert_string_equal(g.credentials_sealed, "new:sealed-1");
    assert_int_equal(g.version, 1); /* resealing is not a credentials change */
    store_connection_clear(&g);
    assert_int_equal(store_env_get(f->s, f->env, &e), LATCH_OK);
    assert_string_equal(e.webhook_key_sealed, "new:envkey");
    store_env_clear(&e);
    assert_int_equal(store_meta_get(f->s, "sealed:x", &v), LATCH_OK);
    assert_string_equal(v, "new:mx");
    free(v);
    assert_int_equal(store_meta_get(f->s, "sealed:index_key", &v), LATCH_OK);
    assert_string_equal(v, "new:ik");
    free(v);
    assert_int_equal(store_meta_get(f->s, "fingerprint", &v), LATCH_OK);
    assert_string_equal(v, "plain");
    free(v);
    assert_int_equal(store_meta_get(f->s, "index_key", &v), LATCH_OK);
    assert_string_equal(v, "not-sealed");
    free(v);

    /* Second pass: only the raced row still needs work. */
    x.race_uid = NULL;
    x.calls = 0;
    assert_int_equal(store_reseal_all(f->s, reseal_cb, &x, &rewritten), LATCH_OK);
    assert_int_equal(rewritten, 1);
}

/* ---- concurrency ---- */

#define CONC_THREADS 8
#define CONC_WRITES 8

struct conc {
    struct store *s;
    struct store *s2; /* a second pool on the same database: "another node" */
    int64_t id;
    pthread_mutex_t mu;
    int64_t seen[CONC_THREADS * CONC_WRITES + 2];
    int failures;
};

struct conc_arg {
    struct conc *c;
    int n;
};

static void *
conc_worker(void *p)
{
    struct conc_arg *a = p;
    struct conc *c = a->c;
    char owner[16], cred[32];
    int done = 0, spins = 0;

    struct store *s = (a->n & 1) != 0 ? c->s2 : c->s;

    (void)snprintf(owner, sizeof owner, "w%d", a->n);
    while (done < CONC_WRITES && spins < 200000) {
        int64_t v = 0, nv = 0;
        latch_rc rc;

        spins++;
        rc = store_connection_lease(s, c->id, owner, 60000, &v);
        if (rc == LATCH_E_CONFLICT) {
            usleep(100);
            continue;
        }
        if (rc != LATCH_OK)
            goto fail;
        (void)snprintf(cred, sizeof cred, "cred-%d-%d", a->n, done);
        rc = store_connection_refresh_done(s, c->id, owner, v, cred, 1, &nv);
        if (rc != LATCH_OK || nv != v + 1)
            goto fail;
        /* A late duplicate of the same write must be refused. */
        if (store_connection_refresh_done(s, c->id, owner, v, "dup", 1, &nv) != LATCH_E_CONFLICT)
            goto fail;
        pthread_mutex_lock(&c->mu);
        if (nv >= 0 && nv < (int64_t)(sizeof c->seen / sizeof c->seen[0]))
            c->seen[nv]++;
        pthread_mutex_unlock(&c->mu);
        done++;
    }
    if (done == CONC_WRITES)
        return NULL;
fail:
    pthread_mutex_lock(&c->mu);
    c->failures++;
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

static void
test_concurrent_refresh(void **state)
{
    struct fx *f = *state;
    pthread_t th[CONC_THREADS];
    struct conc_arg args[CONC_THREADS];
    struct store_connection g;
    struct conc *c = xcalloc(1, sizeof *c);
    const int64_t total = CONC_THREADS * CONC_WRITES;

    struct latch_err err;

    add_integration(f->s, f->env, "ninja");
    c->s = f->s;
    latch_err_clear(&err);
    assert_int_equal(store_open(f->url, &c->s2, &err), LATCH_OK);
    c->id = add_conn(f->s, f->env, "ninja", "hot", NULL, NULL);
    pthread_mutex_init(&c->mu, NULL);
    for (int i = 0; i < CONC_THREADS; i++) {
        args[i].c = c;
        args[i].n = i;
        assert_int_equal(pthread_create(&th[i], NULL, conc_worker, &args[i]), 0);
    }
    for (int i = 0; i < CONC_THREADS; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(c->failures, 0);
    /* Every version 2..total+1 was produced exactly once: no lost or doubled update. */
    for (int64_t v = 2; v <= total + 1; v++)
        assert_int_equal(c->seen[v], 1);
    assert_int_equal(store_connection_get_by_id(f->s, f->env, c->id, &g), LATCH_OK);
    assert_int_equal(g.version, total + 1);
    assert_non_null(strstr(g.credentials_sealed, "cred-"));
    store_connection_clear(&g);
    store_close(c->s2);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* ---- export / import (SQLite -> target -> SQLite) ---- */

/* Fills s with one row of every kind (every column set where possible). */
static void
fill_store(struct store *s)
{
    struct store_env e;
    struct store_integration i;
    struct store_connection c;
    struct store_session x;
    unsigned char h[32];
    int64_t v = 0, wid = 0;
    bool created = false;

    assert_int_equal(store_meta_set(s, "key_fingerprint", "fp-123"), LATCH_OK);
    assert_int_equal(store_meta_set(s, "sealed:index_key", "v1.sealed-index-key"), LATCH_OK);
    assert_int_equal(store_env_create(s, "dev", &e), LATCH_OK);
    e.webhook_url = xstrdup("https://hooks.example/a");
    e.webhook_key_sealed = xstrdup("v1.sealed-webhook-key");
    e.on_auth_refresh_error = true;
    assert_int_equal(store_env_update_webhooks(s, &e), LATCH_OK);
    memset(h, 0x5a, sizeof h);
    assert_int_equal(store_apikey_add(s, e.id, h, "default"), LATCH_OK);
    memset(&i, 0, sizeof i);
    i.env_id = e.id;
    i.unique_key = xstrdup("ninja");
    i.provider = xstrdup("ninjaone");
    i.display_name = xstrdup("Ninja \u00e9t\u00e9");
    i.forward_webhooks = true;
    i.custom_json = xstrdup("{\"k\":[1,2,{\"x\":null}]}");
    assert_int_equal(store_integration_create(s, &i), LATCH_OK);
    store_integration_clear(&i);
    memset(&c, 0, sizeof c);
    c.env_id = e.id;
    c.uid = xstrdup("44444444-4444-4444-8444-444444444444");
    c.connection_id = xstrdup("acme");
    c.provider_config_key = xstrdup("ninja");
    c.credentials_sealed = xstrdup("v1.AAAA.sealed-credentials");
    c.metadata_json = xstrdup("{\"m\":\"\\u00fc\"}");
    c.tags_json = xstrdup("{\"team\":\"a\"}");
    c.end_user_json = xstrdup("{\"id\":\"u1\",\"email\":\"u@acme.com\"}");
    c.webhook_url_override = xstrdup("https://hooks.example/o");
    c.expires_at = 1234567;
    assert_int_equal(store_connection_upsert(s, &c, &created), LATCH_OK);
    assert_int_equal(store_connection_lease(s, c.id, "w", 60000, &v), LATCH_OK);
    assert_int_equal(
        store_connection_refresh_done(s, c.id, "w", v, "v1.BBBB.refreshed", 7654321, &v), LATCH_OK);
    assert_int_equal(store_connection_touch(s, c.id, 999), LATCH_OK);
    store_connection_clear(&c);
    memset(&x, 0, sizeof x);
    x.env_id = e.id;
    memset(x.token_hash, 0xc3, 32);
    x.end_user_json = xstrdup("{\"id\":\"u1\"}");
    x.expires_at = latch_now_ms() + 600000;
    assert_int_equal(store_session_create(s, &x), LATCH_OK);
    store_session_clear(&x);
    assert_int_equal(store_webhook_enqueue(s, e.id, "https://hooks.example/a", "{\"n\":1}", &wid),
                     LATCH_OK);
    assert_int_equal(store_webhook_retry(s, wid, 42, "HTTP 500", false), LATCH_OK);
    {
        struct store_op o = {.id = "0000000000ff-aa",
                             .env_id = e.id,
                             .at = 255,
                             .kind = "proxy",
                             .success = true,
                             .integration = "ninja",
                             .provider = "ninjaone",
                             .connection_id = "acme",
                             .duration_ms = 12,
                             .detail_json = "{\"method\":\"GET\"}"};

        assert_int_equal(store_ops_append(s, &o, 1), LATCH_OK);
    }
    store_env_clear(&e);
}

/* Exports s into a fresh temporary file (rewound); the caller fcloses it. */
static FILE *
export_tmp(struct store *s)
{
    struct latch_err err;
    FILE *fp = tmpfile();

    assert_non_null(fp);
    latch_err_clear(&err);
    if (store_export(s, fp, &err) != LATCH_OK)
        fail_msg("export: %s", err.msg);
    rewind(fp);
    return fp;
}

static char *
slurp(FILE *fp)
{
    char *v = xcalloc(1, 1 << 20);
    size_t n = fread(v, 1, (1 << 20) - 1, fp);

    assert_true(n > 0 && n < (1 << 20) - 1);
    rewind(fp);
    return v;
}

static struct store *
open_migrated(const char *url)
{
    struct store *s = NULL;
    struct latch_err err;

    latch_err_clear(&err);
    if (store_open(url, &s, &err) != LATCH_OK || store_migrate(s, &err) != LATCH_OK)
        fail_msg("open %s: %s", url, err.msg);
    return s;
}

static void
test_export_import_roundtrip(void **state)
{
    struct fx *f = *state;
    struct store *src, *mid, *dst;
    struct latch_err err;
    struct store_connection g;
    struct store_session x;
    struct store_env e;
    unsigned char h[32];
    char url[300], *t1, *t2, *t3, *v = NULL;
    int64_t env = 0, n = 0, cid;
    FILE *d1, *d2, *d3, *bad;

    (void)snprintf(url, sizeof url, "sqlite:%s/src.db", f->dir);
    src = open_migrated(url);
    fill_store(src);
    d1 = export_tmp(src);
    t1 = slurp(d1);
    assert_non_null(strstr(t1, "{\"latch_export\":1,\"schema_version\":5}\n"));
    assert_non_null(strstr(t1, "\"table\":\"connections\""));
    assert_non_null(strstr(t1, "\"credentials_sealed\":\"v1.BBBB.refreshed\""));
    assert_non_null(strstr(t1, "\"end\":true,\"rows\":9}"));
    assert_non_null(strstr(t1, "\"table\":\"operations\""));

    /* The middle hop: PostgreSQL in the PG variant, another SQLite file otherwise. */
#ifdef STORE_TEST_PG
    assert_int_equal(pg_admin("postgres", "DROP DATABASE IF EXISTS roundtrip"), 0);
    assert_int_equal(pg_admin("postgres", "CREATE DATABASE roundtrip"), 0);
    pg_url_for(url, sizeof url, "roundtrip");
#else
    (void)snprintf(url, sizeof url, "sqlite:%s/mid.db", f->dir);
#endif
    mid = open_migrated(url);
    latch_err_clear(&err);
    if (store_import(mid, d1, &err) != LATCH_OK)
        fail_msg("import: %s", err.msg);
    /* A second import into the now non-empty store is refused, and so is one into f->s. */
    rewind(d1);
    assert_int_equal(store_import(mid, d1, &err), LATCH_E_CONFLICT);
    rewind(d1);
    assert_int_equal(store_import(f->s, d1, &err), LATCH_E_CONFLICT);
    d2 = export_tmp(mid);
    t2 = slurp(d2);
    assert_string_equal(t1, t2); /* byte-identical dump from the other backend */

    /* The imported store works: new rows continue after the imported ids. */
    assert_int_equal(store_env_create(mid, "prod", &e), LATCH_OK);
    assert_true(e.id > 1);
    store_env_clear(&e);
    assert_int_equal(store_connection_get(mid, 1, "ninja", "acme", &g), LATCH_OK);
    assert_string_equal(g.uid, "44444444-4444-4444-8444-444444444444");
    assert_int_equal(g.version, 2);
    store_connection_clear(&g);

    (void)snprintf(url, sizeof url, "sqlite:%s/dst.db", f->dir);
    dst = open_migrated(url);
    if (store_import(dst, d2, &err) != LATCH_OK)
        fail_msg("import back: %s", err.msg);
    d3 = export_tmp(dst);
    t3 = slurp(d3);
    assert_string_equal(t1, t3);

    /* Spot checks through the store API on the far end. */
    assert_int_equal(store_meta_get(dst, "sealed:index_key", &v), LATCH_OK);
    assert_string_equal(v, "v1.sealed-index-key");
    free(v);
    memset(h, 0x5a, sizeof h);
    assert_int_equal(store_apikey_lookup(dst, h, &env), LATCH_OK);
    assert_int_equal(store_connection_get(dst, env, "ninja", "acme", &g), LATCH_OK);
    assert_string_equal(g.credentials_sealed, "v1.BBBB.refreshed");
    assert_string_equal(g.metadata_json, "{\"m\":\"\\u00fc\"}");
    assert_int_equal(g.expires_at, 7654321);
    assert_int_equal(g.last_fetched_at, 999);
    cid = g.id;
    store_connection_clear(&g);
    /* Imported into connections.last_fetched_at: an older touch does not lower it. */
    assert_int_equal(store_connection_touch(dst, cid, 500), LATCH_OK);
    assert_int_equal(store_connection_get(dst, env, "ninja", "acme", &g), LATCH_OK);
    assert_int_equal(g.last_fetched_at, 999);
    store_connection_clear(&g);
    memset(h, 0xc3, sizeof h);
    assert_int_equal(store_session_get_by_hash(dst, h, &x), LATCH_OK);
    assert_string_equal(x.end_user_json, "{\"id\":\"u1\"}");
    store_session_clear(&x);
    assert_int_equal(store_webhook_pending_count(dst, &n), LATCH_OK);
    assert_int_equal(n, 1);
    /* The composite foreign key survived: deleting the integration cascades. */
    assert_int_equal(store_integration_delete(dst, env, "ninja"), LATCH_OK);
    assert_int_equal(store_connection_get(dst, env, "ninja", "acme", &g), LATCH_E_NOT_FOUND);

    /* A truncated dump is refused and nothing is written (all or nothing). */
    store_close(dst);
    (void)snprintf(url, sizeof url, "%s/dst.db", f->dir);
    rm_files(url);
    (void)snprintf(url, sizeof url, "sqlite:%s/dst.db", f->dir);
    dst = open_migrated(url);
    bad = tmpfile();
    assert_non_null(bad);
    assert_true(fwrite(t1, 1, strlen(t1) - 30, bad) > 0);
    rewind(bad);
    latch_err_clear(&err);
    assert_int_equal(store_import(dst, bad, &err), LATCH_E_INVAL);
    assert_true(err.msg[0] != '\0');
    assert_int_equal(store_meta_get(dst, "sealed:index_key", &v), LATCH_E_NOT_FOUND);
    fclose(bad);
    /* So is a row with a column this schema does not have, or of the wrong type. */
    static const char *const bad_dumps[] = {
        "{\"latch_export\":1,\"schema_version\":5}\n"
        "{\"table\":\"meta\",\"row\":{\"key\":\"a\",\"value\":\"b\",\"extra\":1}}\n"
        "{\"end\":true,\"rows\":1}\n",
        "{\"latch_export\":1,\"schema_version\":5}\n"
        "{\"table\":\"environments\",\"row\":{\"id\":\"1\",\"name\":\"dev\"}}\n"
        "{\"end\":true,\"rows\":1}\n",
        "{\"latch_export\":1,\"schema_version\":9}\n{\"end\":true,\"rows\":0}\n",
        "{\"latch_export\":1,\"schema_version\":0}\n{\"end\":true,\"rows\":0}\n",
        "{\"table\":\"meta\",\"row\":{}}\n",
    };
    for (size_t i = 0; i < sizeof bad_dumps / sizeof bad_dumps[0]; i++) {
        bad = tmpfile();
        assert_non_null(bad);
        assert_true(fputs(bad_dumps[i], bad) >= 0);
        rewind(bad);
        latch_err_clear(&err);
        assert_int_equal(store_import(dst, bad, &err), LATCH_E_INVAL);
        assert_true(err.msg[0] != '\0');
        fclose(bad);
    }
    assert_int_equal(store_meta_get(dst, "a", &v), LATCH_E_NOT_FOUND);
    /* a dump from schema 1 (same exported tables and columns) still imports */
    bad = tmpfile();
    assert_non_null(bad);
    assert_true(fputs("{\"latch_export\":1,\"schema_version\":1}\n"
                      "{\"table\":\"meta\",\"row\":{\"key\":\"a\",\"value\":\"b\"}}\n"
                      "{\"end\":true,\"rows\":1}\n",
                      bad) >= 0);
    rewind(bad);
    latch_err_clear(&err);
    assert_int_equal(store_import(dst, bad, &err), LATCH_OK);
    fclose(bad);
    assert_int_equal(store_meta_get(dst, "a", &v), LATCH_OK);
    free(v);

    fclose(d1);
    fclose(d2);
    fclose(d3);
    free(t1);
    free(t2);
    free(t3);
    store_close(src);
    store_close(mid);
    store_close(dst);
    (void)snprintf(url, sizeof url, "%s/src.db", f->dir);
    rm_files(url);
    (void)snprintf(url, sizeof url, "%s/dst.db", f->dir);
    rm_files(url);
#ifdef STORE_TEST_PG
    assert_int_equal(pg_admin("postgres", "DROP DATABASE roundtrip"), 0);
#else
    (void)snprintf(url, sizeof url, "%s/mid.db", f->dir);
    rm_files(url);
#endif
}

#ifdef STORE_TEST_PG
/* ---- PostgreSQL only: several nodes, outages ---- */

#define MIGRATORS 6

struct migrator {
    const char *url;
    latch_rc rc;
    char msg[256];
};

static void *
migrate_worker(void *p)
{
    struct migrator *m = p;
    struct store *s = NULL;
    struct latch_err err;

    latch_err_clear(&err);
    m->rc = store_open(m->url, &s, &err);
    if (m->rc == LATCH_OK)
        m->rc = store_migrate(s, &err);
    (void)snprintf(m->msg, sizeof m->msg, "%s", err.msg);
    store_close(s);
    return NULL;
}

static void
test_pg_nodes_migrate_together(void **state)
{
    struct migrator m[MIGRATORS];
    pthread_t th[MIGRATORS];
    struct store *s;
    struct store_env e;
    char url[300];

    (void)state;
    assert_int_equal(pg_admin("postgres", "DROP DATABASE IF EXISTS multi"), 0);
    assert_int_equal(pg_admin("postgres", "CREATE DATABASE multi"), 0);
    pg_url_for(url, sizeof url, "multi");
    for (int i = 0; i < MIGRATORS; i++) {
        m[i].url = url;
        assert_int_equal(pthread_create(&th[i], NULL, migrate_worker, &m[i]), 0);
    }
    for (int i = 0; i < MIGRATORS; i++) {
        pthread_join(th[i], NULL);
        if (m[i].rc != LATCH_OK)
            fail_msg("node %d: %s", i, m[i].msg);
    }
    s = open_migrated(url);
    assert_int_equal(store_schema_version(s), STORE_TEST_SCHEMA);
    /*
     * Each migration recorded once: the others waited on the lock and found it done. (Counted
     * against the distinct versions, not a number: migration 3 may not exist on this branch.)
     */
    assert_int_equal(pg_admin("multi", "DO $$ BEGIN IF (SELECT count(*) FROM schema_migrations) "
                                       "<> 5 THEN RAISE 'dup'; END IF; END $$"),
                     0);
    assert_int_equal(store_env_create(s, "dev", &e), LATCH_OK);
    store_env_clear(&e);
    store_close(s);
    assert_int_equal(pg_admin("postgres", "DROP DATABASE multi"), 0);
}

#define CLAIM_EVENTS 60

struct claimer {
    struct store *s;
    char owner[8];
    int64_t got[CLAIM_EVENTS];
    size_t n;
    latch_rc rc;
};

static void *
claim_worker(void *p)
{
    struct claimer *c = p;

    for (int round = 0; round < 100 && c->rc == LATCH_OK; round++) {
        struct store_webhook *v = NULL;
        size_t n = 0;

        c->rc = store_webhook_claim(c->s, c->owner, latch_now_ms(), 60000, 3, &v, &n);
        for (size_t i = 0; i < n && c->n < CLAIM_EVENTS; i++)
            c->got[c->n++] = v[i].id;
        store_webhook_list_free(v, n);
    }
    return NULL;
}

static void
test_pg_two_nodes(void **state)
{
    struct fx *f = *state;
    struct store *b = open_migrated(f->url);
    struct claimer ca, cb;
    pthread_t ta, tb;
    struct store_session x, g;
    struct store_webhook *v = NULL;
    int seen[CLAIM_EVENTS + 1];
    int64_t id, ver = 0, first = 0;
    size_t n = 0;

    add_integration(f->s, f->env, "ninja");
    id = add_conn(f->s, f->env, "ninja", "c1", NULL, NULL);

    /* The refresh lease is shared: node A holds it, node B is refused, then takes over. */
    assert_int_equal(store_connection_lease(f->s, id, "nodeA:1", 60000, &ver), LATCH_OK);
    assert_int_equal(store_connection_lease(b, id, "nodeB:1", 60000, &ver), LATCH_E_CONFLICT);
    assert_int_equal(store_connection_refresh_done(b, id, "nodeB:1", ver, "x", 1, &ver),
                     LATCH_E_CONFLICT);
    assert_int_equal(store_connection_refresh_done(f->s, id, "nodeA:1", ver, "fromA", 5, &ver),
                     LATCH_OK);
    assert_int_equal(store_connection_lease(b, id, "nodeB:1", 60000, &ver), LATCH_OK);
    assert_int_equal(ver, 2);
    assert_int_equal(store_connection_lease_release(b, id, "nodeB:1"), LATCH_OK);

    /* A session made on A is usable on B. */
    memset(&x, 0, sizeof x);
    x.env_id = f->env;
    memset(x.token_hash, 0x11, 32);
    x.expires_at = latch_now_ms() + 60000;
    assert_int_equal(store_session_create(f->s, &x), LATCH_OK);
    assert_int_equal(store_session_get_by_hash(b, x.token_hash, &g), LATCH_OK);
    assert_int_equal(g.id, x.id);
    store_session_clear(&g);

    /* Outbox: two nodes claiming concurrently get disjoint sets covering every event. */
    for (int i = 0; i < CLAIM_EVENTS; i++) {
        assert_int_equal(store_webhook_enqueue(f->s, f->env, "https://h/x", "{}", &id), LATCH_OK);
        if (i == 0)
            first = id;
    }
    memset(&ca, 0, sizeof ca);
    memset(&cb, 0, sizeof cb);
    ca.s = f->s;
    cb.s = b;
    (void)snprintf(ca.owner, sizeof ca.owner, "A");
    (void)snprintf(cb.owner, sizeof cb.owner, "B");
    assert_int_equal(pthread_create(&ta, NULL, claim_worker, &ca), 0);
    assert_int_equal(pthread_create(&tb, NULL, claim_worker, &cb), 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    assert_int_equal(ca.rc, LATCH_OK);
    assert_int_equal(cb.rc, LATCH_OK);
    assert_int_equal(ca.n + cb.n, CLAIM_EVENTS);
    memset(seen, 0, sizeof seen);
    for (size_t i = 0; i < ca.n; i++)
        seen[ca.got[i] - first]++;
    for (size_t i = 0; i < cb.n; i++)
        seen[cb.got[i] - first]++;
    for (int i = 0; i < CLAIM_EVENTS; i++)
        assert_int_equal(seen[i], 1);
    /* A dead node's claims come back after the claim lease. */
    assert_int_equal(store_webhook_claim(b, "B", latch_now_ms() + 61000, 1000, 100, &v, &n),
                     LATCH_OK);
    assert_int_equal(n, CLAIM_EVENTS);
    store_webhook_list_free(v, n);
    store_close(b);
}

static void
test_pg_outage_and_recovery(void **state)
{
    struct fx *f = *state;
    struct store_env e;
    char line[256];
    int64_t t0, dt;
    latch_rc rc;

    assert_int_equal(store_env_get(f->s, f->env, &e), LATCH_OK);
    store_env_clear(&e);
    assert_int_equal(pg_script("stop-pg", NULL, NULL, 0), 0);

    /* Down: every call fails fast with UNAVAILABLE, the pooled session included. */
    for (int i = 0; i < 5; i++) {
        t0 = latch_now_ms();
        rc = store_env_get(f->s, f->env, &e);
        dt = latch_now_ms() - t0;
        assert_int_equal(rc, LATCH_E_UNAVAILABLE);
        assert_true(dt < 1000);
        assert_int_equal(store_meta_set(f->s, "k", "v"), LATCH_E_UNAVAILABLE);
    }

    /* Back: the same store works again, without reopening. */
    assert_int_equal(pg_script("start-pg", NULL, line, sizeof line), 0);
    assert_string_equal(line, pg_url);
    usleep(300 * 1000); /* past the fail-fast window after the last refused connect */
    assert_int_equal(store_env_get(f->s, f->env, &e), LATCH_OK);
    store_env_clear(&e);
    assert_int_equal(store_meta_set(f->s, "k", "v"), LATCH_OK);

    /* A restart while idle: the stale pooled session is replaced transparently. */
    assert_int_equal(pg_script("stop-pg", NULL, NULL, 0), 0);
    assert_int_equal(pg_script("start-pg", NULL, line, sizeof line), 0);
    assert_int_equal(store_env_get(f->s, f->env, &e), LATCH_OK);
    store_env_clear(&e);
}
#endif

/* An operation with id "<12 hex ms>-<tag>" at ms, in env. */
static void
op_add(struct store *s, int64_t env, int64_t ms, const char *tag, char *kind, bool ok, char *conn)
{
    char id[64];
    struct store_op o;

    (void)snprintf(id, sizeof id, "%012llx-%s", (unsigned long long)ms, tag);
    memset(&o, 0, sizeof o);
    o.id = id;
    o.env_id = env;
    o.at = ms;
    o.kind = kind;
    o.success = ok;
    o.error = ok ? NULL : "upstream_error";
    o.integration = "ninja";
    o.connection_id = conn;
    o.detail_json = "{\"status\":200}";
    assert_int_equal(store_ops_append(s, &o, 1), LATCH_OK);
}

static void
test_operations(void **state)
{
    struct fx *f = *state;
    struct store_op_filter flt;
    struct store_op *v = NULL, o, batch[3];
    size_t n = 0;
    int64_t cnt = 0, del = 0;

    /* a batch is all or nothing: a duplicate id in it refuses every row */
    memset(batch, 0, sizeof batch);
    for (int i = 0; i < 3; i++) {
        batch[i].id = i == 2 ? "000000000001-a" : (i == 0 ? "000000000001-a" : "000000000001-b");
        batch[i].env_id = f->env;
        batch[i].kind = "proxy";
    }
    assert_int_equal(store_ops_append(f->s, batch, 3), LATCH_E_CONFLICT);
    assert_int_equal(store_ops_count(f->s, &cnt), LATCH_OK);
    assert_int_equal(cnt, 0);
    batch[0].detail_json = "{not json";
    assert_int_equal(store_ops_append(f->s, batch, 1), LATCH_E_INVAL);

    for (int i = 1; i <= 10; i++)
        op_add(f->s, f->env, 1000 * i, "x", i % 2 ? "proxy" : "refresh", i != 4,
               i <= 5 ? "c1" : "c2");
    op_add(f->s, f->env + 1000, 5500, "other", "proxy", true, "c1");

    memset(&o, 0, sizeof o);
    assert_int_equal(store_ops_get(f->s, f->env, "000000000fa0-x", &o), LATCH_OK);
    assert_string_equal(o.kind, "refresh");
    assert_false(o.success);
    assert_string_equal(o.error, "upstream_error");
    assert_string_equal(o.connection_id, "c1");
    assert_string_equal(o.detail_json, "{\"status\":200}");
    assert_int_equal(o.at, 4000);
    store_op_clear(&o);
    /* scoped to the environment */
    assert_int_equal(store_ops_get(f->s, f->env, "00000000157c-other", &o), LATCH_E_NOT_FOUND);

    /* newest first, a page, then the next page from the cursor (the last id) */
    memset(&flt, 0, sizeof flt);
    flt.limit = 4;
    assert_int_equal(store_ops_list(f->s, f->env, &flt, &v, &n), LATCH_OK);
    assert_int_equal(n, 4);
    assert_string_equal(v[0].id, "000000002710-x");
    assert_string_equal(v[3].id, "000000001b58-x");
    flt.id_below = "000000001b58-x";
    store_ops_list_free(v, n);
    assert_int_equal(store_ops_list(f->s, f->env, &flt, &v, &n), LATCH_OK);
    assert_int_equal(n, 4);
    assert_string_equal(v[0].id, "000000001770-x");
    store_ops_list_free(v, n);

    /* filters: connection, kind, outcome, time range */
    memset(&flt, 0, sizeof flt);
    flt.limit = 100;
    flt.connection_id = "c1";
    flt.kind = "refresh";
    assert_int_equal(store_ops_list(f->s, f->env, &flt, &v, &n), LATCH_OK);
    assert_int_equal(n, 2); /* 2000, 4000 */
    store_ops_list_free(v, n);
    flt.outcome = -1;
    assert_int_equal(store_ops_list(f->s, f->env, &flt, &v, &n), LATCH_OK);
    assert_int_equal(n, 1);
    assert_int_equal(v[0].at, 4000);
    store_ops_list_free(v, n);
    memset(&flt, 0, sizeof flt);
    flt.limit = 100;
    flt.integration = "nope";
    assert_int_equal(store_ops_list(f->s, f->env, &flt, &v, &n), LATCH_OK);
    assert_int_equal(n, 0);
    store_ops_list_free(v, n);
    flt.integration = "ninja";
    flt.id_min = "000000000bb8";   /* >= 3000 ms */
    flt.id_below = "000000001b58"; /* < 7000 ms */
    assert_int_equal(store_ops_list(f->s, f->env, &flt, &v, &n), LATCH_OK);
    assert_int_equal(n, 4);
    store_ops_list_free(v, n);
    flt.limit = 0;
    assert_int_equal(store_ops_list(f->s, f->env, &flt, &v, &n), LATCH_E_INVAL);

    /* retention: by age (before 3000 ms), then by rows (keep the newest 5), in batches */
    assert_int_equal(store_ops_prune(f->s, "000000000bb8", 0, 100, &del), LATCH_OK);
    assert_int_equal(del, 2);
    assert_int_equal(store_ops_prune(f->s, NULL, 5, 2, &del), LATCH_OK);
    assert_int_equal(del, 2);
    assert_int_equal(store_ops_prune(f->s, NULL, 5, 2, &del), LATCH_OK);
    assert_int_equal(del, 2);
    assert_int_equal(store_ops_prune(f->s, NULL, 5, 2, &del), LATCH_OK);
    assert_int_equal(del, 0);
    assert_int_equal(store_ops_count(f->s, &cnt), LATCH_OK);
    assert_int_equal(cnt, 5);
    /* the newest survive */
    assert_int_equal(store_ops_get(f->s, f->env, "000000002710-x", &o), LATCH_OK);
    store_op_clear(&o);
    assert_int_equal(store_ops_get(f->s, f->env, "000000001388-x", &o), LATCH_E_NOT_FOUND);
}

/*
 * The connection write clock (store.h: the hot cache's invalidation): every write that changes
 * what a token read answers ticks the row (or every row), touches and leases do not, and the
 * stamp moves with metadata writes even twice in one millisecond.
 */
static void
test_conn_write_clock(void **state)
{
    struct fx *f = *state;
    struct store_conn_stamp st1, st2;
    struct store_connection c;
    int64_t id, other, v = 0;
    uint64_t t;

    add_integration(f->s, f->env, "int1");
    id = add_conn(f->s, f->env, "int1", "c1", NULL, NULL);
    other = add_conn(f->s, f->env, "int1", "c2", NULL, NULL);
    t = store_conn_clock();
    assert_true(store_conn_unchanged_since(id, t));
    assert_int_equal(store_connection_touch(f->s, id, 12345), LATCH_OK);
    assert_int_equal(store_connection_lease(f->s, id, "n:1", 1000, &v), LATCH_OK);
    assert_int_equal(store_connection_lease_release(f->s, id, "n:1"), LATCH_OK);
    assert_true(store_conn_unchanged_since(id, t));
    /* a write to another row leaves this one valid */
    assert_int_equal(store_connection_set_metadata(f->s, other, "{\"a\":1}"), LATCH_OK);
    assert_true(store_conn_unchanged_since(id, t));
    assert_false(store_conn_unchanged_since(other, t));

    assert_int_equal(store_connection_stamp(f->s, f->env, "int1", "c1", &st1), LATCH_OK);
    assert_int_equal(store_connection_get(f->s, f->env, "int1", "c1", &c), LATCH_OK);
    assert_true(store_conn_stamp_matches(&st1, &c));
    assert_int_equal(store_connection_set_metadata(f->s, id, "{\"a\":1}"), LATCH_OK);
    assert_false(store_conn_unchanged_since(id, t));
    t = store_conn_clock();
    assert_int_equal(store_connection_set_metadata(f->s, id, "{\"a\":2}"), LATCH_OK);
    assert_int_equal(store_connection_stamp(f->s, f->env, "int1", "c1", &st2), LATCH_OK);
    assert_true(st2.updated_at > st1.updated_at);
    assert_false(store_conn_stamp_matches(&st2, &c));
    assert_false(store_conn_unchanged_since(id, t));
    store_connection_clear(&c);

    t = store_conn_clock();
    assert_int_equal(store_connection_patch(f->s, id, "{\"k\":\"v\"}", NULL, NULL), LATCH_OK);
    assert_false(store_conn_unchanged_since(id, t));
    t = store_conn_clock();
    assert_int_equal(store_connection_lease(f->s, id, "n:1", 1000, &v), LATCH_OK);
    assert_int_equal(store_connection_refresh_failed(f->s, id, "n:1", NULL, 0, true), LATCH_OK);
    assert_false(store_conn_unchanged_since(id, t));
    t = store_conn_clock();
    assert_int_equal(store_connection_lease(f->s, id, "n:1", 1000, &v), LATCH_OK);
    assert_int_equal(store_connection_refresh_done(f->s, id, "n:1", v, "sealed-2", 0, NULL),
                     LATCH_OK);
    assert_false(store_conn_unchanged_since(id, t));
    t = store_conn_clock();
    assert_int_equal(store_connection_reseal(f->s, id, "sealed-2", "sealed-3"), LATCH_OK);
    assert_false(store_conn_unchanged_since(id, t));
    /* a delete by key may hit any cached row */
    t = store_conn_clock();
    assert_int_equal(store_connection_delete(f->s, f->env, "int1", "c2"), LATCH_OK);
    assert_false(store_conn_unchanged_since(id, t));
    assert_int_equal(store_connection_stamp(f->s, f->env, "int1", "c2", &st1), LATCH_E_NOT_FOUND);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_open_urls),
        T(test_conn_write_clock),
        T(test_migrate_idempotent_and_newer_refused),
        T(test_fresh_db_migrates_from_zero),
#ifndef STORE_TEST_PG
        T(test_file_mode_0600),
#endif
        T(test_integrity_ok),
        T(test_meta),
        T(test_environments),
        T(test_apikeys),
        T(test_integrations),
        T(test_connection_upsert),
        T(test_connection_list_filters),
        T(test_connection_delete_metadata_patch_touch),
        T(test_lease),
        T(test_refresh_done_and_failed),
        T(test_due_for_refresh),
        T(test_migrate_from_v1_keeps_last_fetched),
        T(test_sessions),
        T(test_oauth_states),
        T(test_outbox),
        T(test_reseal_all_cas),
        T(test_concurrent_refresh),
        T(test_export_import_roundtrip),
        T(test_operations),
#ifdef STORE_TEST_PG
        T(test_pg_nodes_migrate_together),
        T(test_pg_two_nodes),
        T(test_pg_outage_and_recovery),
#endif
    };

#ifdef STORE_TEST_PG
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
#else
    return cmocka_run_group_tests(tests, NULL, NULL);
#endif
}
