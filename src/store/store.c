/*
 * store.c - the row layer of store.h: picks a dialect from the URL and implements every
 * operation once, on top of the dialect primitives (dialect.h): argument and JSON checks, the
 * list filter, the row mappers, list collection, upsert, the lease/refresh guards and the
 * reseal scan. The dialects (store_sqlite.c, store_pg.c) only run numbered statements.
 * See docs/internals/store.md.
 *
 * Ownership: see store.h. Threads: every function except store_open/store_close may be called
 * from any thread; each operation borrows one pooled connection for its duration.
 */
#include "store/store.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/latch_limits.h"
#include "core/metrics.h"
#include "store/dialect.h"
#include "util/clock.h"
#include "util/str.h"
#include "util/xalloc.h"

/* Longest database URL / path accepted (PATH_MAX on Linux). */
#define STORE_MAX_URL_LEN 4096
/* Rows read per batch by store_reseal_all (each batch is written in one short transaction). */
#define STORE_RESEAL_BATCH 100
/* Bounds on list filters (integration keys, tag pairs) bound as one JSON array each. */
#define STORE_MAX_FILTER_KEYS 100
#define STORE_MAX_FILTER_TAGS 64

/* libpq conninfo keywords that mark a "key=value ..." string as a PostgreSQL target. */
static const char *const pg_conninfo_prefixes[] = {
    "host=", "hostaddr=", "dbname=", "user=", "port=", "service=", "password=", "sslmode=",
};

static bool
has_prefix(const char *s, const char *p)
{
    return strncmp(s, p, strlen(p)) == 0;
}

static bool
is_postgres_target(const char *url)
{
    if (has_prefix(url, "postgres://") || has_prefix(url, "postgresql://"))
        return true;
    for (size_t i = 0; i < sizeof pg_conninfo_prefixes / sizeof pg_conninfo_prefixes[0]; i++)
        if (has_prefix(url, pg_conninfo_prefixes[i]))
            return true;
    return false;
}

latch_rc
store_open(const char *url, struct store **out, struct latch_err *err)
{
    const struct dialect *d = NULL;
    const char *target = url;
    void *db = NULL;
    struct store *s;
    latch_rc rc;

    *out = NULL;
    if (url == NULL || url[0] == '\0') {
        latch_err_set(err, "store: empty database url");
        return LATCH_E_INVAL;
    }
    if (strlen(url) >= STORE_MAX_URL_LEN) {
        latch_err_set(err, "store: database url too long");
        return LATCH_E_INVAL;
    }
    if (is_postgres_target(url)) {
        /* The whole URL / conninfo goes to libpq (expand_dbname=1); see store_pg.c. */
        d = &store_pg_dialect;
    } else if (has_prefix(url, "sqlite://")) {
        d = &store_sqlite_dialect;
        target = url + strlen("sqlite://");
    } else if (has_prefix(url, "sqlite:")) {
        d = &store_sqlite_dialect;
        target = url + strlen("sqlite:");
    } else if (strstr(url, "://") != NULL) {
        latch_err_set(err, "store: unsupported database url scheme");
        return LATCH_E_INVAL;
    } else {
        d = &store_sqlite_dialect;
    }
    if (target[0] == '\0') {
        latch_err_set(err, "store: empty database path");
        return LATCH_E_INVAL;
    }

    rc = d->open(target, &db, err);
    if (rc != LATCH_OK)
        return rc;
    s = xcalloc(1, sizeof *s);
    s->d = d;
    s->db = db;
    *out = s;
    return LATCH_OK;
}

void
store_close(struct store *s)
{
    if (s == NULL)
        return;
    s->d->close(s->db);
    free(s);
}

latch_rc
store_migrate(struct store *s, struct latch_err *err)
{
    return s->d->migrate(s->db, err);
}

int
store_schema_version(struct store *s)
{
    return s->d->schema_version(s->db);
}

const char *
store_backend(const struct store *s)
{
    return s->d->name;
}

latch_rc
store_integrity_check(struct store *s, struct latch_err *err)
{
    return s->d->integrity_check(s->db, err);
}

/* ---- statement helpers (on top of the dialect primitives) ---- */

/* ---- the connection write clock (store.h: store_conn_clock) ---- */

#define CONN_CLOCK_SLOTS 4096
#define CONN_PENDING_MAX 16

static _Atomic uint64_t conn_clock;                       /* ticks once per committed write */
static _Atomic uint64_t conn_clock_all;                   /* last tick of a write to any row */
static _Atomic uint64_t conn_clock_row[CONN_CLOCK_SLOTS]; /* last tick per row-id slot */

/* Connection rows the current thread's open transaction changed (a db_conn is one thread's). */
static _Thread_local struct {
    int64_t ids[CONN_PENDING_MAX];
    size_t n;
    bool all;
} conn_pending;

enum conn_scope { SCOPE_NONE, SCOPE_ROW, SCOPE_ALL };

/*
 * What statement id may change in connections: nothing, the row whose id is parameter 1, or any
 * row. Every statement not listed is SCOPE_ALL, so that a new write can never leave a stale
 * cached read behind by being forgotten here: at worst it empties the cache.
 */
static enum conn_scope
conn_write_scope(enum st_id id)
{
    switch (id) {
    case ST_CONN_REPLACE:
    case ST_CONN_SET_META:
    case ST_CONN_PATCH:
    case ST_CONN_DONE:
    case ST_CONN_FAILED:
    case ST_CONN_REBIND_CAS:
    case ST_RS_CONN_CAS:
        return SCOPE_ROW;
    /* reads, and writes that leave what a token read answers unchanged */
    case ST_BEGIN:
    case ST_COMMIT:
    case ST_ROLLBACK:
    case ST_USER_VERSION:
    case ST_META_GET:
    case ST_META_SET:
    case ST_META_ADD:
    case ST_ENV_INSERT:
    case ST_ENV_GET:
    case ST_ENV_GET_NAME:
    case ST_ENV_LIST:
    case ST_ENV_UPDATE:
    case ST_KEY_ADD:
    case ST_KEY_LOOKUP:
    case ST_KEY_REVOKE:
    case ST_KEY_COUNT:
    case ST_INT_INSERT:
    case ST_INT_GET:
    case ST_INT_LIST:
    case ST_INT_PROVIDER:
    case ST_INT_KEY:
    case ST_CONN_LOCK:
    case ST_CONN_INSERT: /* a new row id: no cached read can hold it */
    case ST_CONN_GET:
    case ST_CONN_GET_ENV_ID:
    case ST_CONN_GET_ROW:
    case ST_CONN_LIST:
    case ST_CONN_TOUCH:
    case ST_CONN_TOUCH_MANY:
    case ST_CONN_EXISTS:
    case ST_CONN_LEASE:
    case ST_CONN_RELEASE:
    case ST_CONN_DUE:
    case ST_CONN_REBIND_SCAN:
    case ST_CONN_STAMP:
    case ST_SESS_INSERT:
    case ST_SESS_GET:
    case ST_SESS_BUMP:
    case ST_SESS_DELETE:
    case ST_SESS_PURGE:
    case ST_WH_INSERT:
    case ST_WH_CLAIM:
    case ST_WH_DONE:
    case ST_WH_RETRY:
    case ST_WH_PENDING:
    case ST_WH_OLDEST:
    case ST_OPS_INSERT:
    case ST_OPS_GET:
    case ST_OPS_LIST:
    case ST_OPS_NTH:
    case ST_OPS_PRUNE:
    case ST_OPS_COUNT:
    case ST_RS_CONN_SCAN:
    case ST_RS_ENV_SCAN:
    case ST_RS_ENV_CAS:
    case ST_RS_META_SCAN:
    case ST_RS_META_CAS:
    case ST_ADM_INSERT:
    case ST_ADM_GET_EMAIL:
    case ST_ADM_LIST:
    case ST_ADM_DELETE:
    case ST_ADM_FAILED:
    case ST_ADM_LOCK:
    case ST_ADM_OK:
    case ST_ASESS_INSERT:
    case ST_ASESS_GET:
    case ST_ASESS_TOUCH:
    case ST_ASESS_DELETE:
    case ST_ASESS_PURGE:
    case ST_KEY_LIST:
    case ST_KEY_REVOKE_ONE:
    case ST_KEY_LABEL:
    case ST_OST_INSERT: /* OAuth states and integration app credentials: no token read shows them */
    case ST_OST_TAKE:
    case ST_OST_PURGE:
    case ST_RS_INT_SCAN:
    case ST_RS_INT_CAS:
        return SCOPE_NONE;
    default:
        return SCOPE_ALL; /* ST_CONN_DELETE, ST_CONN_SET_PROVIDER, ST_INT_UPDATE, ST_INT_DELETE */
    }
}

static void
conn_note(enum st_id id, const struct db_params *p)
{
    switch (conn_write_scope(id)) {
    case SCOPE_NONE:
        return;
    case SCOPE_ROW:
        if (p->n > 0 && p->v[0].type == 'i' && conn_pending.n < CONN_PENDING_MAX) {
            conn_pending.ids[conn_pending.n++] = p->v[0].i;
            return;
        }
        break;
    case SCOPE_ALL:
        break;
    }
    conn_pending.all = true;
}

static void
clock_raise(_Atomic uint64_t *slot, uint64_t t)
{
    uint64_t cur = atomic_load(slot);

    while (cur < t && !atomic_compare_exchange_weak(slot, &cur, t))
        ;
}

/* After a commit (or its failure: a spurious tick only costs cache misses). */
static void
conn_flush(void)
{
    uint64_t t;

    if (conn_pending.n == 0 && !conn_pending.all)
        return;
    t = atomic_fetch_add(&conn_clock, 1) + 1;
    if (conn_pending.all)
        clock_raise(&conn_clock_all, t);
    for (size_t i = 0; i < conn_pending.n; i++)
        clock_raise(&conn_clock_row[(uint64_t)conn_pending.ids[i] % CONN_CLOCK_SLOTS], t);
    conn_pending.n = 0;
    conn_pending.all = false;
}

uint64_t
store_conn_clock(void)
{
    return atomic_load(&conn_clock);
}

bool
store_conn_unchanged_since(int64_t id, uint64_t clock)
{
    return atomic_load(&conn_clock_all) <= clock &&
           atomic_load(&conn_clock_row[(uint64_t)id % CONN_CLOCK_SLOTS]) <= clock;
}

static latch_rc
tx_exec(const struct dialect *d, struct db_conn *c, enum st_id id, const struct db_params *p)
{
    conn_note(id, p);
    return d->exec(c, id, p);
}

static latch_rc
tx_begin(const struct dialect *d, struct db_conn *c)
{
    conn_pending.n = 0;
    conn_pending.all = false;
    return d->begin(c);
}

static latch_rc
tx_commit(const struct dialect *d, struct db_conn *c)
{
    latch_rc rc = d->commit(c);

    conn_flush();
    return rc;
}

/*
 * Fills p from fmt: 't' const char * (NULL = SQL NULL), 'i' int64_t, 'B' int as bool,
 * 'h' const unsigned char * of 32 bytes. false on a format error (a programming error).
 */
static bool
vparams(struct db_params *p, const char *fmt, va_list ap)
{
    p->n = 0;
    for (const char *f = fmt; *f != '\0'; f++) {
        struct db_val *v;

        if (p->n >= DB_MAX_PARAMS)
            return false;
        v = &p->v[p->n++];
        v->type = *f;
        v->i = 0;
        v->s = NULL;
        v->h = NULL;
        switch (*f) {
        case 't':
            v->s = va_arg(ap, const char *);
            break;
        case 'i':
            v->i = va_arg(ap, int64_t);
            break;
        case 'B':
            v->i = va_arg(ap, int) != 0 ? 1 : 0;
            break;
        case 'h':
            v->h = va_arg(ap, const unsigned char *);
            break;
        default:
            return false;
        }
    }
    return true;
}

/* Store latency for /metrics: one statement (read) or one transaction (write). */
static void
observe(bool write, uint64_t t0)
{
    metrics_observe_us(MF_STORE_DURATION, write ? "op=\"write\"" : "op=\"read\"",
                       latch_mono_us() - t0);
}

/* Runs statement id on c with the arguments of fmt; the cursor is left open (see dialect.h). */
static latch_rc
q_exec(const struct dialect *d, struct db_conn *c, enum st_id id, const char *fmt, ...)
{
    struct db_params p;
    va_list ap;
    bool ok;

    va_start(ap, fmt);
    ok = vparams(&p, fmt, ap);
    va_end(ap);
    if (!ok)
        return LATCH_E_INTERNAL;
    return tx_exec(d, c, id, &p);
}

/* Moves to the first (next) row; rc_none when there is none. */
static latch_rc
q_row(const struct dialect *d, struct db_conn *c, latch_rc rc_none)
{
    latch_rc rc;
    bool row;

    rc = d->next(c, &row);
    if (rc == LATCH_OK && !row)
        rc = rc_none;
    return rc;
}

/* Reads the rest of a RETURNING statement so its changes are complete, then closes it. */
static latch_rc
q_finish(const struct dialect *d, struct db_conn *c)
{
    latch_rc rc = LATCH_OK;
    bool row = true;

    while (row && rc == LATCH_OK)
        rc = d->next(c, &row);
    d->end(c);
    return rc;
}

/* Maps the current row of c into out. */
typedef void (*row_read_fn)(const struct dialect *d, struct db_conn *c, void *out);

/*
 * One statement on a pooled connection. Reads (write = false) run alone, writes in one
 * transaction. The first row, if any, goes through read (may be NULL) into out; no row is
 * rc_none (LATCH_OK to accept it). *changes (may be NULL) gets the rows changed.
 */
static latch_rc
vrun1(struct store *s, bool write, enum st_id id, latch_rc rc_none, row_read_fn read, void *out,
      int64_t *changes, const char *fmt, va_list ap)
{
    const struct dialect *d = s->d;
    struct db_conn *c = NULL;
    struct db_params p;
    latch_rc rc;
    bool row = false;

    uint64_t t0 = latch_mono_us();

    if (changes != NULL)
        *changes = 0;
    if (!vparams(&p, fmt, ap))
        return LATCH_E_INTERNAL;
    rc = d->acquire(s->db, &c);
    if (rc != LATCH_OK)
        return rc;
    if (write)
        rc = tx_begin(d, c);
    if (rc != LATCH_OK)
        goto out;
    rc = tx_exec(d, c, id, &p);
    if (rc != LATCH_OK)
        goto out;
    rc = d->next(c, &row);
    if (rc == LATCH_OK && !row)
        rc = rc_none;
    if (rc != LATCH_OK)
        goto out;
    if (row && read != NULL)
        read(d, c, out);
    if (changes != NULL)
        *changes = d->changes(c);
    if (write)
        rc = q_finish(d, c);
    d->end(c);
    if (rc == LATCH_OK && write)
        rc = tx_commit(d, c);
out:
    d->end(c);
    if (write && rc != LATCH_OK)
        d->rollback(c);
    d->release(c);
    observe(write, t0);
    return rc;
}

static latch_rc
read1(struct store *s, enum st_id id, row_read_fn read, void *out, const char *fmt, ...)
{
    va_list ap;
    latch_rc rc;

    va_start(ap, fmt);
    rc = vrun1(s, false, id, LATCH_E_NOT_FOUND, read, out, NULL, fmt, ap);
    va_end(ap);
    return rc;
}

/* One write statement in its own transaction; *changes (may be NULL) gets the row count. */
static latch_rc
write1(struct store *s, enum st_id id, int64_t *changes, const char *fmt, ...)
{
    va_list ap;
    latch_rc rc;

    va_start(ap, fmt);
    rc = vrun1(s, true, id, LATCH_OK, NULL, NULL, changes, fmt, ap);
    va_end(ap);
    return rc;
}

/* A write that must hit a row: NOT_FOUND when it changed none. */
static latch_rc
write_hit(struct store *s, enum st_id id, const char *fmt, ...)
{
    int64_t changes = 0;
    va_list ap;
    latch_rc rc;

    va_start(ap, fmt);
    rc = vrun1(s, true, id, LATCH_OK, NULL, NULL, &changes, fmt, ap);
    va_end(ap);
    if (rc == LATCH_OK && changes == 0)
        rc = LATCH_E_NOT_FOUND;
    return rc;
}

/* A write ... RETURNING in a transaction; its first row goes through read; no row: rc_none. */
static latch_rc
write_ret(struct store *s, enum st_id id, latch_rc rc_none, row_read_fn read, void *out,
          const char *fmt, ...)
{
    va_list ap;
    latch_rc rc;

    va_start(ap, fmt);
    rc = vrun1(s, true, id, rc_none, read, out, NULL, fmt, ap);
    va_end(ap);
    return rc;
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

/* A list: rows mapped by read into elements of size elem. */
struct list {
    void *v;
    size_t n, cap;
};

/*
 * Runs statement id (in a transaction when write) and collects every row into l (owned by the
 * caller, also on error: free the n elements read).
 */
static latch_rc
vlist(struct store *s, bool write, enum st_id id, row_read_fn read, size_t elem, struct list *l,
      const char *fmt, va_list ap)
{
    const struct dialect *d = s->d;
    struct db_conn *c = NULL;
    struct db_params p;
    latch_rc rc;
    bool row = true;

    uint64_t t0 = latch_mono_us();

    if (!vparams(&p, fmt, ap))
        return LATCH_E_INTERNAL;
    rc = d->acquire(s->db, &c);
    if (rc != LATCH_OK)
        return rc;
    if (write)
        rc = tx_begin(d, c);
    if (rc == LATCH_OK)
        rc = tx_exec(d, c, id, &p);
    while (rc == LATCH_OK) {
        rc = d->next(c, &row);
        if (rc != LATCH_OK || !row)
            break;
        l->v = grow(l->v, &l->cap, l->n, elem);
        read(d, c, (char *)l->v + l->n * elem);
        l->n++;
    }
    d->end(c);
    if (rc == LATCH_OK && write)
        rc = tx_commit(d, c);
    if (write && rc != LATCH_OK)
        d->rollback(c);
    d->release(c);
    observe(write, t0);
    return rc;
}

static latch_rc
list(struct store *s, bool write, enum st_id id, row_read_fn read, size_t elem, struct list *l,
     const char *fmt, ...)
{
    va_list ap;
    latch_rc rc;

    va_start(ap, fmt);
    rc = vlist(s, write, id, read, elem, l, fmt, ap);
    va_end(ap);
    return rc;
}

/*
 * True if s is NULL or well-formed JSON (any value). The schema cannot check this itself:
 * json_valid() in a CHECK is "unsafe" under trusted_schema=OFF in SQLite 3.40, and PostgreSQL
 * keeps JSON as text (see store_pg.md).
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

/* ---- small row mappers ---- */

static void
read_i64(const struct dialect *d, struct db_conn *c, void *out)
{
    *(int64_t *)out = d->col_i64(c, 0);
}

static void
read_int(const struct dialect *d, struct db_conn *c, void *out)
{
    *(int *)out = (int)d->col_i64(c, 0);
}

static void
read_str(const struct dialect *d, struct db_conn *c, void *out)
{
    *(char **)out = d->col_str(c, 0);
}

/* ---- meta ---- */

latch_rc
store_meta_get(struct store *s, const char *key, char **value_out)
{
    *value_out = NULL;
    if (key == NULL)
        return LATCH_E_INVAL;
    return read1(s, ST_META_GET, read_str, value_out, "t", key);
}

latch_rc
store_meta_set(struct store *s, const char *key, const char *value)
{
    if (key == NULL || value == NULL)
        return LATCH_E_INVAL;
    return write1(s, ST_META_SET, NULL, "tt", key, value);
}

latch_rc
store_meta_add(struct store *s, const char *key, const char *value)
{
    if (key == NULL || value == NULL)
        return LATCH_E_INVAL;
    return write1(s, ST_META_ADD, NULL, "tt", key, value);
}

/* ---- environments ---- */

void
store_env_clear(struct store_env *e)
{
    if (e == NULL)
        return;
    free(e->name);
    free(e->webhook_url);
    free(e->webhook_url_secondary);
    free(e->webhook_key_sealed);
    memset(e, 0, sizeof *e);
}

/* ENV_COLS */
static void
env_read(const struct dialect *d, struct db_conn *c, void *out)
{
    struct store_env *e = out;

    memset(e, 0, sizeof *e);
    e->id = d->col_i64(c, 0);
    e->name = d->col_str(c, 1);
    e->webhook_url = d->col_str(c, 2);
    e->webhook_url_secondary = d->col_str(c, 3);
    e->webhook_key_sealed = d->col_str(c, 4);
    e->on_auth_creation = d->col_bool(c, 5);
    e->on_auth_refresh_error = d->col_bool(c, 6);
    e->created_at = d->col_i64(c, 7);
}

latch_rc
store_env_create(struct store *s, const char *name, struct store_env *out)
{
    struct store_env e;
    latch_rc rc;

    memset(&e, 0, sizeof e);
    if (out != NULL)
        memset(out, 0, sizeof *out);
    if (name == NULL || name[0] == '\0')
        return LATCH_E_INVAL;
    rc = write_ret(s, ST_ENV_INSERT, LATCH_E_DB, env_read, &e, "ti", name, latch_now_ms());
    if (rc == LATCH_OK && out != NULL)
        *out = e;
    else
        store_env_clear(&e);
    return rc;
}

latch_rc
store_env_get(struct store *s, int64_t id, struct store_env *out)
{
    memset(out, 0, sizeof *out);
    return read1(s, ST_ENV_GET, env_read, out, "i", id);
}

latch_rc
store_env_get_by_name(struct store *s, const char *name, struct store_env *out)
{
    memset(out, 0, sizeof *out);
    if (name == NULL)
        return LATCH_E_INVAL;
    return read1(s, ST_ENV_GET_NAME, env_read, out, "t", name);
}

latch_rc
store_env_list(struct store *s, struct store_env **out, size_t *n)
{
    struct list l = {NULL, 0, 0};
    latch_rc rc;

    *out = NULL;
    *n = 0;
    rc = list(s, false, ST_ENV_LIST, env_read, sizeof **out, &l, "");
    if (rc != LATCH_OK) {
        store_env_list_free(l.v, l.n);
        return rc;
    }
    *out = l.v;
    *n = l.n;
    return LATCH_OK;
}

void
store_env_list_free(struct store_env *v, size_t n)
{
    if (v == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        store_env_clear(&v[i]);
    free(v);
}

latch_rc
store_env_update_webhooks(struct store *s, const struct store_env *e)
{
    if (e == NULL)
        return LATCH_E_INVAL;
    return write_hit(s, ST_ENV_UPDATE, "itttBB", e->id, e->webhook_url, e->webhook_url_secondary,
                     e->webhook_key_sealed, (int)e->on_auth_creation,
                     (int)e->on_auth_refresh_error);
}

/* ---- API keys ---- */

latch_rc
store_apikey_add(struct store *s, int64_t env_id, const unsigned char hash[32], const char *label)
{
    if (hash == NULL)
        return LATCH_E_INVAL;
    return write1(s, ST_KEY_ADD, NULL, "ihti", env_id, hash, label, latch_now_ms());
}

latch_rc
store_apikey_lookup(struct store *s, const unsigned char hash[32], int64_t *env_id)
{
    *env_id = 0;
    if (hash == NULL)
        return LATCH_E_INVAL;
    return read1(s, ST_KEY_LOOKUP, read_i64, env_id, "h", hash);
}

/* ST_KEY_LOOKUP: env_id, label */
struct key_found {
    int64_t env_id;
    char *label;
};

static void
key_found_read(const struct dialect *d, struct db_conn *c, void *out)
{
    struct key_found *k = out;

    k->env_id = d->col_i64(c, 0);
    k->label = d->col_str(c, 1);
}

latch_rc
store_apikey_find(struct store *s, const unsigned char hash[32], int64_t *env_id, char **label)
{
    struct key_found k = {0, NULL};
    latch_rc rc;

    *env_id = 0;
    *label = NULL;
    if (hash == NULL)
        return LATCH_E_INVAL;
    rc = read1(s, ST_KEY_LOOKUP, key_found_read, &k, "h", hash);
    if (rc == LATCH_OK) {
        *env_id = k.env_id;
        *label = k.label;
    } else {
        free(k.label);
    }
    return rc;
}

latch_rc
store_apikey_revoke_all(struct store *s, int64_t env_id)
{
    return write1(s, ST_KEY_REVOKE, NULL, "ii", env_id, latch_now_ms());
}

latch_rc
store_apikey_count(struct store *s, int64_t env_id, int64_t *n)
{
    *n = 0;
    return read1(s, ST_KEY_COUNT, read_i64, n, "i", env_id);
}

/* ---- integrations ---- */

void
store_integration_clear(struct store_integration *i)
{
    if (i == NULL)
        return;
    free(i->unique_key);
    free(i->provider);
    free(i->display_name);
    free(i->oauth_scopes);
    free(i->custom_json);
    free(i->credentials_sealed);
    memset(i, 0, sizeof *i);
}

/* INT_COLS */
static void
int_read(const struct dialect *d, struct db_conn *c, void *out)
{
    struct store_integration *i = out;

    memset(i, 0, sizeof *i);
    i->id = d->col_i64(c, 0);
    i->env_id = d->col_i64(c, 1);
    i->unique_key = d->col_str(c, 2);
    i->provider = d->col_str(c, 3);
    i->display_name = d->col_str(c, 4);
    i->oauth_scopes = d->col_str(c, 5);
    i->forward_webhooks = d->col_bool(c, 6);
    i->custom_json = d->col_str(c, 7);
    i->created_at = d->col_i64(c, 8);
    i->updated_at = d->col_i64(c, 9);
    i->credentials_sealed = d->col_str(c, 10);
}

static bool
int_ok(const struct store_integration *i)
{
    return i != NULL && i->unique_key != NULL && i->provider != NULL && json_ok(i->custom_json);
}

latch_rc
store_integration_create(struct store *s, struct store_integration *i)
{
    int64_t now = latch_now_ms(), id = 0;
    latch_rc rc;

    if (!int_ok(i))
        return LATCH_E_INVAL;
    rc = write_ret(s, ST_INT_INSERT, LATCH_E_DB, read_i64, &id, "ittttBtit", i->env_id,
                   i->unique_key, i->provider, i->display_name, i->oauth_scopes,
                   (int)i->forward_webhooks, i->custom_json, now, i->credentials_sealed);
    if (rc == LATCH_OK) {
        i->id = id;
        i->created_at = now;
        i->updated_at = now;
    }
    return rc;
}

latch_rc
store_integration_get(struct store *s, int64_t env_id, const char *unique_key,
                      struct store_integration *out)
{
    memset(out, 0, sizeof *out);
    if (unique_key == NULL)
        return LATCH_E_INVAL;
    return read1(s, ST_INT_GET, int_read, out, "it", env_id, unique_key);
}

latch_rc
store_integration_list(struct store *s, int64_t env_id, struct store_integration **out, size_t *n)
{
    struct list l = {NULL, 0, 0};
    latch_rc rc;

    *out = NULL;
    *n = 0;
    rc = list(s, false, ST_INT_LIST, int_read, sizeof **out, &l, "i", env_id);
    if (rc != LATCH_OK) {
        store_integration_list_free(l.v, l.n);
        return rc;
    }
    *out = l.v;
    *n = l.n;
    return LATCH_OK;
}

void
store_integration_list_free(struct store_integration *v, size_t n)
{
    if (v == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        store_integration_clear(&v[i]);
    free(v);
}

/* Runs a statement whose rows are not needed on c; *changes (may be NULL) gets the row count. */
static latch_rc
q_cmd(const struct dialect *d, struct db_conn *c, enum st_id id, int64_t *changes, const char *fmt,
      ...)
{
    struct db_params p;
    va_list ap;
    latch_rc rc;
    bool ok;

    if (changes != NULL)
        *changes = 0;
    va_start(ap, fmt);
    ok = vparams(&p, fmt, ap);
    va_end(ap);
    if (!ok)
        return LATCH_E_INTERNAL;
    rc = tx_exec(d, c, id, &p);
    if (rc != LATCH_OK)
        return rc;
    if (changes != NULL)
        *changes = d->changes(c);
    else
        (void)d->changes(c);
    d->end(c);
    return LATCH_OK;
}

/*
 * After a rename (old_key -> i->unique_key, in the caller's transaction): re-seals the
 * credentials of the integration's connections, which were bound to old_key.
 */
static latch_rc
rebind_connections(const struct dialect *d, struct db_conn *c, const struct store_integration *i,
                   const char *old_key, store_rebind_fn rebind, void *ud)
{
    struct store_connection *v = NULL;
    size_t n = 0, cap = 0;
    bool row = true;
    latch_rc rc;

    rc = q_exec(d, c, ST_CONN_REBIND_SCAN, "it", i->env_id, i->unique_key);
    while (rc == LATCH_OK) {
        rc = d->next(c, &row);
        if (rc != LATCH_OK || !row)
            break;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            v = xrealloc(v, cap * sizeof *v);
        }
        memset(&v[n], 0, sizeof v[n]);
        v[n].id = d->col_i64(c, 0);
        v[n].env_id = i->env_id;
        v[n].uid = d->col_str(c, 1);
        v[n].connection_id = d->col_str(c, 2);
        v[n].credentials_sealed = d->col_str(c, 3);
        n++;
    }
    d->end(c);
    if (rc == LATCH_OK && n > 0 && rebind == NULL)
        rc = LATCH_E_INVAL;
    for (size_t k = 0; k < n && rc == LATCH_OK; k++) {
        struct store_connection before = v[k], after = v[k];
        char *sealed = NULL;
        int64_t changes = 0;

        if (v[k].uid == NULL || v[k].connection_id == NULL || v[k].credentials_sealed == NULL)
            continue;
        before.provider_config_key = (char *)(uintptr_t)old_key;
        after.provider_config_key = i->unique_key;
        rc = rebind(&before, &after, &sealed, ud);
        if (rc == LATCH_E_CRYPTO) {
            rc = LATCH_OK; /* unreadable before the rename too: nothing to carry over */
            continue;
        }
        /* the rows are ours until commit (SQLite: the write lock; PG: FOR UPDATE) */
        if (rc == LATCH_OK)
            rc = q_cmd(d, c, ST_CONN_REBIND_CAS, &changes, "itt", v[k].id, sealed,
                       v[k].credentials_sealed);
        if (rc == LATCH_OK && changes == 0)
            rc = LATCH_E_CONFLICT;
        free(sealed);
    }
    for (size_t k = 0; k < n; k++) {
        v[k].provider_config_key = NULL;
        store_connection_clear(&v[k]);
    }
    free(v);
    return rc;
}

latch_rc
store_integration_update(struct store *s, struct store_integration *i, store_rebind_fn rebind,
                         void *ud)
{
    const struct dialect *d = s->d;
    struct db_conn *c = NULL;
    int64_t now = latch_now_ms(), changes = 0;
    char *old_key = NULL;
    latch_rc rc;

    if (!int_ok(i))
        return LATCH_E_INVAL;
    rc = d->acquire(s->db, &c);
    if (rc != LATCH_OK)
        return rc;
    rc = tx_begin(d, c);
    if (rc != LATCH_OK)
        goto out;
    rc = q_exec(d, c, ST_INT_KEY, "ii", i->id, i->env_id);
    if (rc == LATCH_OK)
        rc = q_row(d, c, LATCH_E_NOT_FOUND);
    if (rc == LATCH_OK)
        old_key = d->col_str(c, 0);
    d->end(c);
    if (rc == LATCH_OK && old_key == NULL)
        rc = LATCH_E_DB;
    if (rc != LATCH_OK)
        goto out;
    /* Renaming unique_key cascades to connections.provider_config_key (ON UPDATE CASCADE). */
    rc = q_cmd(d, c, ST_INT_UPDATE, &changes, "iittttBtit", i->id, i->env_id, i->unique_key,
               i->provider, i->display_name, i->oauth_scopes, (int)i->forward_webhooks,
               i->custom_json, now, i->credentials_sealed);
    if (rc == LATCH_OK && changes == 0)
        rc = LATCH_E_NOT_FOUND;
    if (rc != LATCH_OK)
        goto out;
    /* The credentials are bound to the key (domain/creds.h): re-seal them in this transaction. */
    if (strcmp(old_key, i->unique_key) != 0)
        rc = rebind_connections(d, c, i, old_key, rebind, ud);
    /* connections.provider is a copy of the integration's provider: keep it in step. */
    if (rc == LATCH_OK)
        rc = q_cmd(d, c, ST_CONN_SET_PROVIDER, NULL, "itt", i->env_id, i->unique_key, i->provider);
    if (rc == LATCH_OK)
        rc = tx_commit(d, c);
out:
    if (rc != LATCH_OK)
        d->rollback(c);
    d->release(c);
    free(old_key);
    if (rc == LATCH_OK)
        i->updated_at = now;
    return rc;
}

latch_rc
store_integration_delete(struct store *s, int64_t env_id, const char *unique_key)
{
    if (unique_key == NULL)
        return LATCH_E_INVAL;
    /* Its connections go with it (ON DELETE CASCADE). */
    return write_hit(s, ST_INT_DELETE, "it", env_id, unique_key);
}

/* ---- connections ---- */

void
store_connection_clear(struct store_connection *c)
{
    if (c == NULL)
        return;
    free(c->uid);
    free(c->connection_id);
    free(c->provider_config_key);
    free(c->provider);
    if (c->credentials_sealed != NULL) {
        /* Sealed, so not secret by itself; wiped anyway as a habit. */
        explicit_bzero(c->credentials_sealed, strlen(c->credentials_sealed));
        free(c->credentials_sealed);
    }
    free(c->connection_config_json);
    free(c->metadata_json);
    free(c->tags_json);
    free(c->end_user_json);
    free(c->webhook_url_override);
    free(c->auth_error_json);
    memset(c, 0, sizeof *c);
}

static char *
dup_or_null(const char *s)
{
    return s != NULL ? xstrdup(s) : NULL;
}

void
store_connection_copy(struct store_connection *dst, const struct store_connection *src)
{
    *dst = *src;
    dst->uid = dup_or_null(src->uid);
    dst->connection_id = dup_or_null(src->connection_id);
    dst->provider_config_key = dup_or_null(src->provider_config_key);
    dst->provider = dup_or_null(src->provider);
    dst->credentials_sealed = dup_or_null(src->credentials_sealed);
    dst->connection_config_json = dup_or_null(src->connection_config_json);
    dst->metadata_json = dup_or_null(src->metadata_json);
    dst->tags_json = dup_or_null(src->tags_json);
    dst->end_user_json = dup_or_null(src->end_user_json);
    dst->webhook_url_override = dup_or_null(src->webhook_url_override);
    dst->auth_error_json = dup_or_null(src->auth_error_json);
}

/* ST_CONN_STAMP */
static void
stamp_read(const struct dialect *d, struct db_conn *c, void *out)
{
    struct store_conn_stamp *st = out;
    const char *prov = d->col_text(c, 8);

    st->id = d->col_i64(c, 0);
    st->version = d->col_i64(c, 1);
    st->updated_at = d->col_i64(c, 2);
    st->expires_at = d->col_i64(c, 3);
    st->refresh_attempts = d->col_i64(c, 4);
    st->last_refresh_failure = d->col_i64(c, 5);
    st->next_refresh_at = d->col_i64(c, 6);
    st->needs_reauth = d->col_bool(c, 7);
    latch_strlcpy(st->provider, prov != NULL ? prov : "", sizeof st->provider);
}

latch_rc
store_connection_stamp(struct store *s, int64_t env_id, const char *provider_config_key,
                       const char *connection_id, struct store_conn_stamp *out)
{
    memset(out, 0, sizeof *out);
    if (provider_config_key == NULL || connection_id == NULL)
        return LATCH_E_INVAL;
    return read1(s, ST_CONN_STAMP, stamp_read, out, "itt", env_id, provider_config_key,
                 connection_id);
}

bool
store_conn_stamp_matches(const struct store_conn_stamp *st, const struct store_connection *row)
{
    char prov[sizeof st->provider];

    latch_strlcpy(prov, row->provider != NULL ? row->provider : "", sizeof prov);
    return st->id == row->id && st->version == row->version && st->updated_at == row->updated_at &&
           st->expires_at == row->expires_at && st->refresh_attempts == row->refresh_attempts &&
           st->last_refresh_failure == row->last_refresh_failure &&
           st->next_refresh_at == row->next_refresh_at && st->needs_reauth == row->needs_reauth &&
           strcmp(st->provider, prov) == 0;
}

/* CONN_COLS */
static void
conn_read(const struct dialect *d, struct db_conn *k, void *out)
{
    struct store_connection *c = out;

    memset(c, 0, sizeof *c);
    c->id = d->col_i64(k, 0);
    c->env_id = d->col_i64(k, 1);
    c->uid = d->col_str(k, 2);
    c->connection_id = d->col_str(k, 3);
    c->provider_config_key = d->col_str(k, 4);
    c->provider = d->col_str(k, 5);
    c->credentials_sealed = d->col_str(k, 6);
    c->connection_config_json = d->col_str(k, 7);
    c->metadata_json = d->col_str(k, 8);
    c->tags_json = d->col_str(k, 9);
    c->end_user_json = d->col_str(k, 10);
    c->webhook_url_override = d->col_str(k, 11);
    c->expires_at = d->col_i64(k, 12);
    c->created_at = d->col_i64(k, 13);
    c->updated_at = d->col_i64(k, 14);
    c->last_fetched_at = d->col_i64(k, 15);
    c->last_refresh_success = d->col_i64(k, 16);
    c->last_refresh_failure = d->col_i64(k, 17);
    c->next_refresh_at = d->col_i64(k, 18);
    c->refresh_attempts = (int)d->col_i64(k, 19);
    c->needs_reauth = d->col_bool(k, 20);
    c->auth_error_json = d->col_str(k, 21);
    c->version = d->col_i64(k, 22);
}

/*
 * Insert, or replace by (env_id, provider_config_key, connection_id), in one transaction:
 * 1. read the integration's provider (it must exist; postgres: FOR KEY SHARE);
 * 2. INSERT ... ON CONFLICT (key) DO NOTHING RETURNING id;
 * 3. no row: the key exists (on postgres possibly inserted a moment ago by another node), so
 *    lock it (postgres: FOR UPDATE), check the uid, and replace;
 * 4. read the stored row back.
 */
latch_rc
store_connection_upsert(struct store *s, struct store_connection *c, bool *created)
{
    const struct dialect *d = s->d;
    struct db_conn *k = NULL;
    struct store_connection got;
    int64_t now = latch_now_ms(), id = 0;
    char *provider = NULL;
    latch_rc rc;
    bool row = false, is_new = false;

    memset(&got, 0, sizeof got);
    if (created != NULL)
        *created = false;
    if (c == NULL || c->uid == NULL || c->connection_id == NULL || c->provider_config_key == NULL)
        return LATCH_E_INVAL;
    if (!json_ok(c->connection_config_json) || !json_ok(c->metadata_json) ||
        !json_ok(c->tags_json) || !json_ok(c->end_user_json))
        return LATCH_E_INVAL;
    rc = d->acquire(s->db, &k);
    if (rc != LATCH_OK)
        return rc;
    rc = tx_begin(d, k);
    if (rc != LATCH_OK)
        goto out;

    /* The integration must exist; it also supplies provider when the caller has none. */
    rc = q_exec(d, k, ST_INT_PROVIDER, "it", c->env_id, c->provider_config_key);
    if (rc == LATCH_OK)
        rc = q_row(d, k, LATCH_E_NOT_FOUND);
    if (rc != LATCH_OK)
        goto out;
    provider = c->provider != NULL ? xstrdup(c->provider) : d->col_str(k, 0);
    d->end(k);

    /* Insert, or learn that the key exists. */
    rc = q_exec(d, k, ST_CONN_INSERT, "ittttttttttii", c->env_id, c->uid, c->connection_id,
                c->provider_config_key, provider, c->credentials_sealed, c->connection_config_json,
                c->metadata_json, c->tags_json, c->end_user_json, c->webhook_url_override,
                c->expires_at, now);
    if (rc == LATCH_OK)
        rc = d->next(k, &row);
    if (rc != LATCH_OK)
        goto out;
    if (row) {
        id = d->col_i64(k, 0);
        is_new = true;
    }
    rc = q_finish(d, k);
    if (rc != LATCH_OK)
        goto out;

    if (!is_new) {
        const char *uid;
        int64_t changes = 0;

        rc = q_exec(d, k, ST_CONN_LOCK, "itt", c->env_id, c->provider_config_key, c->connection_id);
        if (rc == LATCH_OK) /* deleted between our insert and our lock: caller retries */
            rc = q_row(d, k, LATCH_E_CONFLICT);
        if (rc != LATCH_OK)
            goto out;
        id = d->col_i64(k, 0);
        uid = d->col_text(k, 1);
        if (uid == NULL || strcmp(uid, c->uid) != 0) {
            /* The caller sealed for another uid: writing would make the row unreadable. */
            rc = LATCH_E_CONFLICT;
            goto out;
        }
        d->end(k);
        rc = q_cmd(d, k, ST_CONN_REPLACE, &changes, "itttitttti", id, c->provider,
                   c->credentials_sealed, c->connection_config_json, c->expires_at,
                   c->metadata_json, c->tags_json, c->end_user_json, c->webhook_url_override, now);
        if (rc == LATCH_OK && changes != 1)
            rc = LATCH_E_DB;
        if (rc != LATCH_OK)
            goto out;
    }

    rc = q_exec(d, k, ST_CONN_GET_ROW, "i", id);
    if (rc == LATCH_OK)
        rc = q_row(d, k, LATCH_E_DB);
    if (rc != LATCH_OK)
        goto out;
    conn_read(d, k, &got);
    d->end(k);
    rc = tx_commit(d, k);
out:
    d->end(k);
    if (rc != LATCH_OK)
        d->rollback(k);
    d->release(k);
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

latch_rc
store_connection_get(struct store *s, int64_t env_id, const char *provider_config_key,
                     const char *connection_id, struct store_connection *out)
{
    memset(out, 0, sizeof *out);
    if (provider_config_key == NULL || connection_id == NULL)
        return LATCH_E_INVAL;
    return read1(s, ST_CONN_GET, conn_read, out, "itt", env_id, provider_config_key, connection_id);
}

latch_rc
store_connection_get_by_id(struct store *s, int64_t env_id, int64_t id,
                           struct store_connection *out)
{
    memset(out, 0, sizeof *out);
    return read1(s, ST_CONN_GET_ENV_ID, conn_read, out, "ii", env_id, id);
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

latch_rc
store_connection_list(struct store *s, int64_t env_id, const struct store_conn_filter *f,
                      struct store_connection **out, size_t *n)
{
    struct list l = {NULL, 0, 0};
    char *keys = NULL, *tags = NULL;
    latch_rc rc;

    *out = NULL;
    *n = 0;
    if (f == NULL || f->limit < 1 || f->limit > LATCH_MAX_LIST_LIMIT || f->offset < 0)
        return LATCH_E_INVAL;
    rc = filter_json(f, &keys, &tags);
    if (rc != LATCH_OK)
        return rc;
    rc = list(s, false, ST_CONN_LIST, conn_read, sizeof **out, &l, "ittttttii", env_id,
              f->connection_id, f->search, f->end_user_id, f->end_user_org_id, keys, tags, f->limit,
              f->offset);
    free(keys);
    free(tags);
    if (rc != LATCH_OK) {
        store_connection_list_free(l.v, l.n);
        return rc;
    }
    *out = l.v;
    *n = l.n;
    return LATCH_OK;
}

void
store_connection_list_free(struct store_connection *v, size_t n)
{
    if (v == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        store_connection_clear(&v[i]);
    free(v);
}

latch_rc
store_connection_delete(struct store *s, int64_t env_id, const char *provider_config_key,
                        const char *connection_id)
{
    if (provider_config_key == NULL || connection_id == NULL)
        return LATCH_E_INVAL;
    return write_hit(s, ST_CONN_DELETE, "itt", env_id, provider_config_key, connection_id);
}

latch_rc
store_connection_set_metadata(struct store *s, int64_t id, const char *metadata_json)
{
    if (!json_ok(metadata_json))
        return LATCH_E_INVAL;
    return write_hit(s, ST_CONN_SET_META, "iti", id, metadata_json, latch_now_ms());
}

latch_rc
store_connection_patch(struct store *s, int64_t id, const char *tags_json,
                       const char *end_user_json, const char *webhook_url_override)
{
    if (!json_ok(tags_json) || !json_ok(end_user_json))
        return LATCH_E_INVAL;
    return write_hit(s, ST_CONN_PATCH, "ittti", id, tags_json, end_user_json, webhook_url_override,
                     latch_now_ms());
}

/* A gone row changes nothing (postgres: a row deleted meanwhile fails the FK): NOT_FOUND. */
latch_rc
store_connection_touch(struct store *s, int64_t id, int64_t last_fetched_at)
{
    return write_hit(s, ST_CONN_TOUCH, "ii", id, last_fetched_at);
}

latch_rc
store_connection_touch_many(struct store *s, const int64_t *ids, size_t n, int64_t last_fetched_at)
{
    const struct dialect *d = s->d;
    struct db_conn *c = NULL;
    latch_rc rc;

    if (n == 0)
        return LATCH_OK;
    if (ids == NULL || n > LATCH_STORE_TOUCH_BATCH)
        return LATCH_E_INVAL;
    if (d->touch_many != NULL)
        return d->touch_many(s->db, ids, n, last_fetched_at);
    rc = d->acquire(s->db, &c);
    if (rc != LATCH_OK)
        return rc;
    rc = tx_begin(d, c);
    for (size_t i = 0; i < n && rc == LATCH_OK; i++)
        rc = q_cmd(d, c, ST_CONN_TOUCH, NULL, "ii", ids[i], last_fetched_at);
    if (rc == LATCH_OK)
        rc = tx_commit(d, c);
    else
        d->rollback(c);
    d->release(c);
    return rc;
}

/*
 * Runs a guarded UPDATE (optionally RETURNING one int64 into *ret) in a transaction; when it
 * changes no row, tells NOT_FOUND (row gone) from CONFLICT (guard failed) in the same
 * transaction.
 */
static latch_rc
guarded_update(struct store *s, int64_t id, enum st_id sid, int64_t *ret, const char *fmt, ...)
{
    const struct dialect *d = s->d;
    struct db_conn *c = NULL;
    struct db_params p;
    va_list ap;
    latch_rc rc;
    bool ok, row = false, hit = false;

    va_start(ap, fmt);
    ok = vparams(&p, fmt, ap);
    va_end(ap);
    if (!ok)
        return LATCH_E_INTERNAL;
    rc = d->acquire(s->db, &c);
    if (rc != LATCH_OK)
        return rc;
    rc = tx_begin(d, c);
    if (rc == LATCH_OK)
        rc = tx_exec(d, c, sid, &p);
    if (rc != LATCH_OK)
        goto out;
    if (ret != NULL) {
        rc = d->next(c, &row);
        hit = rc == LATCH_OK && row;
        if (hit)
            *ret = d->col_i64(c, 0);
        if (rc == LATCH_OK)
            rc = q_finish(d, c);
    } else {
        hit = d->changes(c) > 0;
    }
    d->end(c);
    if (rc != LATCH_OK)
        goto out;
    if (!hit) {
        rc = q_exec(d, c, ST_CONN_EXISTS, "i", id);
        if (rc == LATCH_OK)
            rc = d->next(c, &row);
        if (rc == LATCH_OK)
            rc = row ? LATCH_E_CONFLICT : LATCH_E_NOT_FOUND;
        goto out;
    }
    rc = tx_commit(d, c);
out:
    d->end(c);
    if (rc != LATCH_OK)
        d->rollback(c);
    d->release(c);
    return rc;
}

latch_rc
store_connection_lease(struct store *s, int64_t id, const char *owner, int64_t ttl_ms,
                       int64_t *version_out)
{
    int64_t now = latch_now_ms(), version = 0;
    latch_rc rc;

    if (owner == NULL || owner[0] == '\0' || ttl_ms <= 0)
        return LATCH_E_INVAL;
    rc = guarded_update(s, id, ST_CONN_LEASE, &version, "itii", id, owner, now + ttl_ms, now);
    if (rc == LATCH_OK && version_out != NULL)
        *version_out = version;
    return rc;
}

latch_rc
store_connection_lease_release(struct store *s, int64_t id, const char *owner)
{
    if (owner == NULL)
        return LATCH_E_INVAL;
    return guarded_update(s, id, ST_CONN_RELEASE, NULL, "it", id, owner);
}

latch_rc
store_connection_refresh_done(struct store *s, int64_t id, const char *owner,
                              int64_t expected_version, const char *credentials_sealed,
                              int64_t expires_at, int64_t *new_version)
{
    int64_t version = 0;
    latch_rc rc;

    if (owner == NULL || credentials_sealed == NULL)
        return LATCH_E_INVAL;
    rc = guarded_update(s, id, ST_CONN_DONE, &version, "iittii", id, expected_version, owner,
                        credentials_sealed, expires_at, latch_now_ms());
    if (rc == LATCH_OK && new_version != NULL)
        *new_version = version;
    return rc;
}

latch_rc
store_connection_refresh_failed(struct store *s, int64_t id, const char *owner,
                                const char *auth_error_json, int64_t next_refresh_at,
                                bool needs_reauth)
{
    if (owner == NULL || !json_ok(auth_error_json))
        return LATCH_E_INVAL;
    return guarded_update(s, id, ST_CONN_FAILED, NULL, "ittiBi", id, owner, auth_error_json,
                          next_refresh_at, (int)needs_reauth, latch_now_ms());
}

struct due_row {
    int64_t id, env_id;
};

static void
due_read(const struct dialect *d, struct db_conn *c, void *out)
{
    struct due_row *r = out;

    r->id = d->col_i64(c, 0);
    r->env_id = d->col_i64(c, 1);
}

latch_rc
store_connection_due_for_refresh(struct store *s, int64_t before, int64_t used_since, size_t max,
                                 int64_t **ids_out, int64_t **env_ids_out, size_t *n)
{
    struct list l = {NULL, 0, 0};
    struct due_row *v;
    int64_t *ids, *envs;
    latch_rc rc;

    *ids_out = NULL;
    *env_ids_out = NULL;
    *n = 0;
    if (max == 0)
        return LATCH_OK;
    if (max > LATCH_MAX_LIST_LIMIT)
        max = LATCH_MAX_LIST_LIMIT;
    rc = list(s, false, ST_CONN_DUE, due_read, sizeof *v, &l, "iiii", before, used_since,
              latch_now_ms(), (int64_t)max);
    v = l.v;
    if (rc != LATCH_OK || l.n == 0) {
        free(v);
        return rc;
    }
    ids = xcalloc(l.n, sizeof *ids);
    envs = xcalloc(l.n, sizeof *envs);
    for (size_t i = 0; i < l.n; i++) {
        ids[i] = v[i].id;
        envs[i] = v[i].env_id;
    }
    free(v);
    *ids_out = ids;
    *env_ids_out = envs;
    *n = l.n;
    return LATCH_OK;
}

/* ---- connect sessions ---- */

void
store_session_clear(struct store_session *x)
{
    if (x == NULL)
        return;
    free(x->end_user_json);
    free(x->organization_json);
    free(x->allowed_integrations_json);
    free(x->config_defaults_json);
    free(x->tags_json);
    free(x->webhook_url_override);
    memset(x, 0, sizeof *x);
}

/* SESS_COLS */
static void
sess_read(const struct dialect *d, struct db_conn *c, void *out)
{
    struct store_session *x = out;

    memset(x, 0, sizeof *x);
    x->id = d->col_i64(c, 0);
    x->env_id = d->col_i64(c, 1);
    (void)d->col_hash(c, 2, x->token_hash);
    x->end_user_json = d->col_str(c, 3);
    x->organization_json = d->col_str(c, 4);
    x->allowed_integrations_json = d->col_str(c, 5);
    x->config_defaults_json = d->col_str(c, 6);
    x->tags_json = d->col_str(c, 7);
    x->webhook_url_override = d->col_str(c, 8);
    x->connection_row_id = d->col_i64(c, 9);
    x->expires_at = d->col_i64(c, 10);
    x->attempts = (int)d->col_i64(c, 11);
    x->created_at = d->col_i64(c, 12);
}

latch_rc
store_session_create(struct store *s, struct store_session *x)
{
    int64_t id = 0, created;
    latch_rc rc;

    if (x == NULL || !json_ok(x->end_user_json) || !json_ok(x->organization_json) ||
        !json_ok(x->allowed_integrations_json) || !json_ok(x->config_defaults_json) ||
        !json_ok(x->tags_json))
        return LATCH_E_INVAL;
    created = x->created_at != 0 ? x->created_at : latch_now_ms();
    rc = write_ret(s, ST_SESS_INSERT, LATCH_E_DB, read_i64, &id, "ihttttttiiii", x->env_id,
                   x->token_hash, x->end_user_json, x->organization_json,
                   x->allowed_integrations_json, x->config_defaults_json, x->tags_json,
                   x->webhook_url_override, x->connection_row_id, x->expires_at,
                   (int64_t)x->attempts, created);
    if (rc == LATCH_OK) {
        x->id = id;
        x->created_at = created;
    }
    return rc;
}

latch_rc
store_session_get_by_hash(struct store *s, const unsigned char hash[32], struct store_session *out)
{
    memset(out, 0, sizeof *out);
    if (hash == NULL)
        return LATCH_E_INVAL;
    return read1(s, ST_SESS_GET, sess_read, out, "h", hash);
}

latch_rc
store_session_bump_attempts(struct store *s, int64_t id, int *attempts)
{
    latch_rc rc;
    int n = 0;

    rc = write_ret(s, ST_SESS_BUMP, LATCH_E_NOT_FOUND, read_int, &n, "i", id);
    if (rc == LATCH_OK && attempts != NULL)
        *attempts = n;
    return rc;
}

latch_rc
store_session_delete(struct store *s, int64_t id)
{
    return write_hit(s, ST_SESS_DELETE, "i", id);
}

latch_rc
store_session_purge_expired(struct store *s, int64_t now)
{
    return write1(s, ST_SESS_PURGE, NULL, "i", now);
}

/* ---- OAuth2 authorization states ---- */

void
store_oauth_state_clear(struct store_oauth_state *x)
{
    if (x == NULL)
        return;
    free(x->integration);
    free(x->connection_id);
    free(x->ws_client_id);
    free(x->payload_sealed);
    memset(x, 0, sizeof *x);
}

/* OST_COLS */
static void
ost_read(const struct dialect *d, struct db_conn *c, void *out)
{
    struct store_oauth_state *x = out;

    memset(x, 0, sizeof *x);
    x->id = d->col_i64(c, 0);
    (void)d->col_hash(c, 1, x->state_hash);
    x->env_id = d->col_i64(c, 2);
    (void)d->col_hash(c, 3, x->session_hash);
    x->integration = d->col_str(c, 4);
    x->connection_id = d->col_str(c, 5);
    x->ws_client_id = d->col_str(c, 6);
    x->payload_sealed = d->col_str(c, 7);
    x->expires_at = d->col_i64(c, 8);
    x->created_at = d->col_i64(c, 9);
}

latch_rc
store_oauth_state_create(struct store *s, struct store_oauth_state *x)
{
    int64_t id = 0, now = latch_now_ms();
    latch_rc rc;

    if (x == NULL || x->integration == NULL || x->connection_id == NULL ||
        x->payload_sealed == NULL)
        return LATCH_E_INVAL;
    rc = write_ret(s, ST_OST_INSERT, LATCH_E_DB, read_i64, &id, "hihttttii", x->state_hash,
                   x->env_id, x->session_hash, x->integration, x->connection_id, x->ws_client_id,
                   x->payload_sealed, x->expires_at, now);
    if (rc == LATCH_OK) {
        x->id = id;
        x->created_at = now;
    }
    return rc;
}

latch_rc
store_oauth_state_take(struct store *s, const unsigned char hash[32], struct store_oauth_state *out)
{
    memset(out, 0, sizeof *out);
    if (hash == NULL)
        return LATCH_E_INVAL;
    return write_ret(s, ST_OST_TAKE, LATCH_E_NOT_FOUND, ost_read, out, "h", hash);
}

latch_rc
store_oauth_state_purge_expired(struct store *s, int64_t now)
{
    return write1(s, ST_OST_PURGE, NULL, "i", now);
}

/* ---- webhook outbox ---- */

void
store_webhook_clear(struct store_webhook *w)
{
    if (w == NULL)
        return;
    free(w->url);
    free(w->body);
    memset(w, 0, sizeof *w);
}

/* WH_COLS */
static void
wh_read(const struct dialect *d, struct db_conn *c, void *out)
{
    struct store_webhook *w = out;

    memset(w, 0, sizeof *w);
    w->id = d->col_i64(c, 0);
    w->env_id = d->col_i64(c, 1);
    w->url = d->col_str(c, 2);
    w->body = d->col_str(c, 3);
    w->attempts = (int)d->col_i64(c, 4);
    w->next_attempt_at = d->col_i64(c, 5);
    w->created_at = d->col_i64(c, 6);
}

latch_rc
store_webhook_enqueue(struct store *s, int64_t env_id, const char *url, const char *body,
                      int64_t *id_out)
{
    int64_t id = 0;
    latch_rc rc;

    if (url == NULL || body == NULL)
        return LATCH_E_INVAL;
    rc = write_ret(s, ST_WH_INSERT, LATCH_E_DB, read_i64, &id, "itti", env_id, url, body,
                   latch_now_ms());
    if (rc == LATCH_OK && id_out != NULL)
        *id_out = id;
    return rc;
}

latch_rc
store_webhook_claim(struct store *s, const char *owner, int64_t now, int64_t lease_ms, size_t max,
                    struct store_webhook **out, size_t *n)
{
    struct list l = {NULL, 0, 0};
    latch_rc rc;

    *out = NULL;
    *n = 0;
    if (owner == NULL || owner[0] == '\0' || lease_ms <= 0)
        return LATCH_E_INVAL;
    if (max == 0)
        return LATCH_OK;
    if (max > LATCH_MAX_LIST_LIMIT)
        max = LATCH_MAX_LIST_LIMIT;
    /* One write transaction: the claim UPDATE ... RETURNING (postgres: SKIP LOCKED). */
    rc = list(s, true, ST_WH_CLAIM, wh_read, sizeof **out, &l, "tiii", owner, now, lease_ms,
              (int64_t)max);
    if (rc != LATCH_OK) {
        store_webhook_list_free(l.v, l.n);
        return rc;
    }
    *out = l.v;
    *n = l.n;
    return LATCH_OK;
}

void
store_webhook_list_free(struct store_webhook *v, size_t n)
{
    if (v == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        store_webhook_clear(&v[i]);
    free(v);
}

latch_rc
store_webhook_done(struct store *s, int64_t id)
{
    return write_hit(s, ST_WH_DONE, "i", id);
}

latch_rc
store_webhook_retry(struct store *s, int64_t id, int64_t next_attempt_at, const char *last_error,
                    bool give_up)
{
    return write_hit(s, ST_WH_RETRY, "iitB", id, next_attempt_at, last_error, (int)give_up);
}

latch_rc
store_webhook_pending_count(struct store *s, int64_t *n)
{
    *n = 0;
    return read1(s, ST_WH_PENDING, read_i64, n, "");
}

latch_rc
store_connection_reseal(struct store *s, int64_t id, const char *old_sealed, const char *new_sealed)
{
    int64_t changes = 0;
    latch_rc rc;

    if (old_sealed == NULL || new_sealed == NULL)
        return LATCH_E_INVAL;
    rc = write1(s, ST_RS_CONN_CAS, &changes, "itt", id, new_sealed, old_sealed);
    if (rc != LATCH_OK || changes > 0)
        return rc;
    rc = read1(s, ST_CONN_EXISTS, NULL, NULL, "i", id);
    return rc == LATCH_OK ? LATCH_E_CONFLICT : rc;
}

latch_rc
store_webhook_oldest_pending(struct store *s, int64_t *created_at)
{
    *created_at = 0;
    return read1(s, ST_WH_OLDEST, read_i64, created_at, "");
}

/* ---- operations log ---- */

void
store_op_clear(struct store_op *o)
{
    if (o == NULL)
        return;
    free(o->id);
    free(o->kind);
    free(o->error);
    free(o->integration);
    free(o->provider);
    free(o->connection_id);
    free(o->end_user_id);
    free(o->detail_json);
    memset(o, 0, sizeof *o);
}

/* OPS_COLS */
static void
op_read(const struct dialect *d, struct db_conn *c, void *out)
{
    struct store_op *o = out;
    const char *outcome;

    memset(o, 0, sizeof *o);
    o->id = d->col_str(c, 0);
    o->env_id = d->col_i64(c, 1);
    o->at = d->col_i64(c, 2);
    o->kind = d->col_str(c, 3);
    outcome = d->col_text(c, 4);
    o->success = outcome != NULL && strcmp(outcome, "success") == 0;
    o->error = d->col_str(c, 5);
    o->integration = d->col_str(c, 6);
    o->provider = d->col_str(c, 7);
    o->connection_id = d->col_str(c, 8);
    o->end_user_id = d->col_str(c, 9);
    o->duration_ms = d->col_i64(c, 10);
    o->detail_json = d->col_str(c, 11);
}

latch_rc
store_ops_append(struct store *s, const struct store_op *v, size_t n)
{
    const struct dialect *d = s->d;
    struct db_conn *c = NULL;
    latch_rc rc;

    if (n == 0)
        return LATCH_OK;
    for (size_t i = 0; i < n; i++)
        if (v[i].id == NULL || v[i].kind == NULL || !json_ok(v[i].detail_json))
            return LATCH_E_INVAL;
    uint64_t t0 = latch_mono_us();

    rc = d->acquire(s->db, &c);
    if (rc != LATCH_OK)
        return rc;
    rc = tx_begin(d, c);
    /* one transaction (one fsync) per batch: the writer's whole point */
    for (size_t i = 0; i < n && rc == LATCH_OK; i++) {
        const struct store_op *o = &v[i];

        rc = q_exec(d, c, ST_OPS_INSERT, "tiitttttttit", o->id, o->env_id, o->at, o->kind,
                    o->success ? "success" : "failure", o->error, o->integration, o->provider,
                    o->connection_id, o->end_user_id, o->duration_ms, o->detail_json);
        if (rc == LATCH_OK)
            (void)d->changes(c);
        d->end(c);
    }
    if (rc == LATCH_OK)
        rc = tx_commit(d, c);
    if (rc != LATCH_OK)
        d->rollback(c);
    d->release(c);
    observe(true, t0);
    return rc;
}

latch_rc
store_ops_get(struct store *s, int64_t env_id, const char *id, struct store_op *out)
{
    memset(out, 0, sizeof *out);
    if (id == NULL)
        return LATCH_E_INVAL;
    return read1(s, ST_OPS_GET, op_read, out, "it", env_id, id);
}

latch_rc
store_ops_list(struct store *s, int64_t env_id, const struct store_op_filter *f,
               struct store_op **out, size_t *n)
{
    struct list l = {NULL, 0, 0};
    const char *outcome = NULL;
    latch_rc rc;

    *out = NULL;
    *n = 0;
    if (f == NULL || f->limit < 1 || f->limit > LATCH_MAX_LIST_LIMIT)
        return LATCH_E_INVAL;
    if (f->outcome > 0)
        outcome = "success";
    else if (f->outcome < 0)
        outcome = "failure";
    rc = list(s, false, ST_OPS_LIST, op_read, sizeof **out, &l, "itttttti", env_id,
              f->connection_id, f->integration, f->kind, outcome, f->id_min, f->id_below, f->limit);
    if (rc != LATCH_OK) {
        store_ops_list_free(l.v, l.n);
        return rc;
    }
    *out = l.v;
    *n = l.n;
    return LATCH_OK;
}

void
store_ops_list_free(struct store_op *v, size_t n)
{
    if (v == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        store_op_clear(&v[i]);
    free(v);
}

latch_rc
store_ops_prune(struct store *s, const char *id_below, int64_t max_rows, int64_t batch,
                int64_t *deleted)
{
    char *nth = NULL;
    const char *cut = id_below;
    latch_rc rc = LATCH_OK;

    *deleted = 0;
    if (batch < 1 || max_rows < 0)
        return LATCH_E_INVAL;
    if (max_rows > 0) {
        /* the max_rows-th newest id: everything older goes */
        rc = read1(s, ST_OPS_NTH, read_str, &nth, "i", max_rows - 1);
        if (rc == LATCH_E_NOT_FOUND)
            rc = LATCH_OK; /* fewer rows than that */
        if (rc != LATCH_OK)
            return rc;
        if (nth != NULL && (cut == NULL || strcmp(nth, cut) > 0))
            cut = nth;
    }
    if (cut != NULL)
        rc = write1(s, ST_OPS_PRUNE, deleted, "ti", cut, batch);
    free(nth);
    return rc;
}

latch_rc
store_ops_count(struct store *s, int64_t *n)
{
    *n = 0;
    return read1(s, ST_OPS_COUNT, read_i64, n, "");
}

/* ---- key rotation ---- */

struct rs_item {
    int64_t id;     /* connections / environments row id */
    char *row;      /* uid, id as text, or meta key */
    char *sealed;   /* current value */
    char *resealed; /* from fn, or NULL */
    /* connections: the owner the credentials are bound to */
    int64_t env_id;
    char *pck;
    char *cid;
};

/* A sealed column: scan reads (key, row, sealed) after a cursor, cas swaps one value. */
struct rs_source {
    const char *table;
    const char *column; /* as used in the AAD */
    enum st_id scan;
    enum st_id cas;
    bool by_key; /* keyed by text (meta) rather than by id */
};

static const struct rs_source rs_sources[] = {
    {"connections", "credentials", ST_RS_CONN_SCAN, ST_RS_CONN_CAS, false},
    {"environments", "webhook_key", ST_RS_ENV_SCAN, ST_RS_ENV_CAS, false},
    /* an OAuth app's credentials: bound to env + unique_key (ref.env_id, provider_config_key) */
    {"integrations", "credentials", ST_RS_INT_SCAN, ST_RS_INT_CAS, false},
    {"meta", "value", ST_RS_META_SCAN, ST_RS_META_CAS, true},
};

static void
rs_items_free(struct rs_item *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i].row);
        free(v[i].sealed);
        free(v[i].resealed);
        free(v[i].pck);
        free(v[i].cid);
        memset(&v[i], 0, sizeof v[i]);
    }
}

/* Reads the next batch after the cursor (*last_id or *last_key) without holding a transaction. */
static latch_rc
rs_scan(const struct dialect *d, struct db_conn *c, const struct rs_source *src, int64_t *last_id,
        char **last_key, struct rs_item *v, size_t *n)
{
    latch_rc rc;
    bool row = true;

    *n = 0;
    if (src->by_key)
        rc = q_exec(d, c, src->scan, "ti", *last_key != NULL ? *last_key : "",
                    (int64_t)STORE_RESEAL_BATCH);
    else
        rc = q_exec(d, c, src->scan, "ii", *last_id, (int64_t)STORE_RESEAL_BATCH);
    while (rc == LATCH_OK && *n < STORE_RESEAL_BATCH) {
        struct rs_item *it = &v[*n];

        rc = d->next(c, &row);
        if (rc != LATCH_OK || !row)
            break;
        if (src->scan == ST_RS_CONN_SCAN) {
            it->id = d->col_i64(c, 0);
            it->row = d->col_str(c, 1);
            it->sealed = d->col_str(c, 2);
            it->env_id = d->col_i64(c, 3);
            it->pck = d->col_str(c, 4);
            it->cid = d->col_str(c, 5);
        } else if (src->scan == ST_RS_INT_SCAN) {
            it->id = d->col_i64(c, 0);
            it->row = xasprintf("%" PRId64, it->id);
            it->sealed = d->col_str(c, 1);
            it->env_id = d->col_i64(c, 2);
            it->pck = d->col_str(c, 3);
        } else if (src->scan == ST_RS_ENV_SCAN) {
            it->id = d->col_i64(c, 0);
            it->row = xasprintf("%" PRId64, it->id);
            it->sealed = d->col_str(c, 1);
        } else {
            it->row = d->col_str(c, 0);
            it->sealed = d->col_str(c, 1);
        }
        (*n)++;
    }
    d->end(c);
    if (rc == LATCH_OK && *n > 0) {
        *last_id = v[*n - 1].id;
        free(*last_key);
        *last_key = xstrdup(v[*n - 1].row);
    }
    return rc;
}

latch_rc
store_reseal_all(struct store *s, store_reseal_fn fn, void *ud, size_t *rewritten)
{
    const struct dialect *d = s->d;
    struct db_conn *c = NULL;
    struct rs_item *v;
    size_t count = 0;
    latch_rc rc, first_fn_err = LATCH_OK;

    if (rewritten != NULL)
        *rewritten = 0;
    if (fn == NULL)
        return LATCH_E_INVAL;
    v = xcalloc(STORE_RESEAL_BATCH, sizeof *v);
    rc = d->acquire(s->db, &c);
    if (rc != LATCH_OK) {
        free(v);
        return rc;
    }
    for (size_t k = 0; k < sizeof rs_sources / sizeof rs_sources[0] && rc == LATCH_OK; k++) {
        const struct rs_source *src = &rs_sources[k];
        int64_t last_id = 0;
        char *last_key = NULL;

        for (;;) {
            size_t n = 0, todo = 0;

            rc = rs_scan(d, c, src, &last_id, &last_key, v, &n);
            if (rc != LATCH_OK || n == 0)
                break;
            /* Crypto happens here, outside any transaction: the server keeps writing. */
            for (size_t i = 0; i < n; i++) {
                struct store_sealed_ref ref = {src->table,  v[i].row, src->column, v[i].sealed,
                                               v[i].env_id, v[i].pck, v[i].cid};
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
                rc = tx_begin(d, c);
                for (size_t i = 0; i < n && rc == LATCH_OK; i++) {
                    int64_t changes = 0;

                    if (v[i].resealed == NULL)
                        continue;
                    if (src->by_key)
                        rc = q_cmd(d, c, src->cas, &changes, "ttt", v[i].row, v[i].resealed,
                                   v[i].sealed);
                    else
                        rc = q_cmd(d, c, src->cas, &changes, "itt", v[i].id, v[i].resealed,
                                   v[i].sealed);
                    if (rc == LATCH_OK && changes > 0)
                        count++;
                }
                if (rc == LATCH_OK)
                    rc = tx_commit(d, c);
                else
                    d->rollback(c);
            }
            rs_items_free(v, n);
            if (rc != LATCH_OK || n < STORE_RESEAL_BATCH)
                break;
        }
        free(last_key);
    }
    d->rollback(c);
    d->release(c);
    free(v);
    if (rc == LATCH_OK)
        rc = first_fn_err;
    if (rewritten != NULL)
        *rewritten = count;
    return rc;
}

/* ---- API key management ---- */

/* KEY_COLS */
static void
key_read(const struct dialect *d, struct db_conn *c, void *out)
{
    struct store_apikey *k = out;

    memset(k, 0, sizeof *k);
    k->id = d->col_i64(c, 0);
    k->env_id = d->col_i64(c, 1);
    k->label = d->col_str(c, 2);
    k->created_at = d->col_i64(c, 3);
    k->revoked_at = d->col_i64(c, 4);
}

latch_rc
store_apikey_list(struct store *s, int64_t env_id, struct store_apikey **out, size_t *n)
{
    struct list l = {0};
    latch_rc rc = list(s, false, ST_KEY_LIST, key_read, sizeof **out, &l, "i", env_id);

    *out = NULL;
    *n = 0;
    if (rc != LATCH_OK) {
        store_apikey_list_free(l.v, l.n);
        return rc;
    }
    *out = l.v;
    *n = l.n;
    return LATCH_OK;
}

void
store_apikey_list_free(struct store_apikey *v, size_t n)
{
    if (v == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        free(v[i].label);
    free(v);
}

latch_rc
store_apikey_revoke(struct store *s, int64_t env_id, int64_t id)
{
    return write_hit(s, ST_KEY_REVOKE_ONE, "iii", env_id, id, latch_now_ms());
}

latch_rc
store_apikey_set_label(struct store *s, int64_t env_id, int64_t id, const char *label)
{
    return write_hit(s, ST_KEY_LABEL, "iit", env_id, id, label);
}

/* ---- admin accounts ---- */

void
store_admin_clear(struct store_admin *a)
{
    if (a == NULL)
        return;
    free(a->email);
    if (a->password_hash != NULL)
        explicit_bzero(a->password_hash, strlen(a->password_hash));
    free(a->password_hash);
    memset(a, 0, sizeof *a);
}

/* ADM_COLS */
static void
adm_read(const struct dialect *d, struct db_conn *c, void *out)
{
    struct store_admin *a = out;

    memset(a, 0, sizeof *a);
    a->id = d->col_i64(c, 0);
    a->email = d->col_str(c, 1);
    a->password_hash = d->col_str(c, 2);
    a->failed_attempts = (int)d->col_i64(c, 3);
    a->locked_until = d->col_i64(c, 4);
    a->last_login_at = d->col_i64(c, 5);
    a->created_at = d->col_i64(c, 6);
}

latch_rc
store_admin_create(struct store *s, const char *email, const char *password_hash, int64_t *id_out)
{
    int64_t id = 0;
    latch_rc rc;

    if (email == NULL || password_hash == NULL)
        return LATCH_E_INVAL;
    rc = write_ret(s, ST_ADM_INSERT, LATCH_E_DB, read_i64, &id, "tti", email, password_hash,
                   latch_now_ms());
    if (id_out != NULL)
        *id_out = rc == LATCH_OK ? id : 0;
    return rc;
}

latch_rc
store_admin_get_by_email(struct store *s, const char *email, struct store_admin *out)
{
    memset(out, 0, sizeof *out);
    if (email == NULL)
        return LATCH_E_INVAL;
    return read1(s, ST_ADM_GET_EMAIL, adm_read, out, "t", email);
}

latch_rc
store_admin_list(struct store *s, struct store_admin **out, size_t *n)
{
    struct list l = {0};
    latch_rc rc = list(s, false, ST_ADM_LIST, adm_read, sizeof **out, &l, "");

    *out = NULL;
    *n = 0;
    if (rc != LATCH_OK) {
        store_admin_list_free(l.v, l.n);
        return rc;
    }
    *out = l.v;
    *n = l.n;
    return LATCH_OK;
}

void
store_admin_list_free(struct store_admin *v, size_t n)
{
    if (v == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        store_admin_clear(&v[i]);
    free(v);
}

latch_rc
store_admin_delete(struct store *s, const char *email)
{
    if (email == NULL)
        return LATCH_E_INVAL;
    return write_hit(s, ST_ADM_DELETE, "t", email);
}

latch_rc
store_admin_login_failed(struct store *s, int64_t id, int *attempts)
{
    int64_t n = 0;
    latch_rc rc = write_ret(s, ST_ADM_FAILED, LATCH_E_NOT_FOUND, read_i64, &n, "i", id);

    *attempts = (int)n;
    return rc;
}

latch_rc
store_admin_lock(struct store *s, int64_t id, int64_t locked_until)
{
    return write_hit(s, ST_ADM_LOCK, "ii", id, locked_until);
}

latch_rc
store_admin_login_ok(struct store *s, int64_t id, int64_t now)
{
    return write_hit(s, ST_ADM_OK, "ii", id, now);
}

/* ---- admin sessions ---- */

void
store_admin_session_clear(struct store_admin_session *x)
{
    if (x == NULL)
        return;
    free(x->email);
    memset(x, 0, sizeof *x);
}

/* ASESS_COLS */
static void
asess_read(const struct dialect *d, struct db_conn *c, void *out)
{
    struct store_admin_session *x = out;

    memset(x, 0, sizeof *x);
    x->id = d->col_i64(c, 0);
    x->admin_id = d->col_i64(c, 1);
    x->email = d->col_str(c, 2);
    x->created_at = d->col_i64(c, 3);
    x->last_seen_at = d->col_i64(c, 4);
    x->expires_at = d->col_i64(c, 5);
}

latch_rc
store_admin_session_create(struct store *s, int64_t admin_id, const unsigned char hash[32],
                           int64_t now, int64_t expires_at)
{
    int64_t id = 0;

    if (hash == NULL)
        return LATCH_E_INVAL;
    return write_ret(s, ST_ASESS_INSERT, LATCH_E_DB, read_i64, &id, "ihii", admin_id, hash, now,
                     expires_at);
}

latch_rc
store_admin_session_get(struct store *s, const unsigned char hash[32],
                        struct store_admin_session *out)
{
    memset(out, 0, sizeof *out);
    if (hash == NULL)
        return LATCH_E_INVAL;
    return read1(s, ST_ASESS_GET, asess_read, out, "h", hash);
}

latch_rc
store_admin_session_touch(struct store *s, int64_t id, int64_t now)
{
    return write1(s, ST_ASESS_TOUCH, NULL, "ii", id, now);
}

latch_rc
store_admin_session_delete(struct store *s, const unsigned char hash[32])
{
    if (hash == NULL)
        return LATCH_E_INVAL;
    return write1(s, ST_ASESS_DELETE, NULL, "h", hash);
}

latch_rc
store_admin_session_purge(struct store *s, int64_t now, int64_t idle_before)
{
    return write1(s, ST_ASESS_PURGE, NULL, "ii", now, idle_before);
}
