/*
 * store_export.c - JSON-lines export/import of every store row (see store_export.h), plus the
 * shared table description (store_tables) and value codec the backends use for raw rows.
 */
#include "store/store_export.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "store/dialect.h"
#include "util/buf.h"
#include "util/xalloc.h"
#include "util/str.h"

/* Longest line accepted by import (a row: metadata is <= 64 KiB, webhook bodies are small). */
#define STORE_EXPORT_MAX_LINE (8 * 1024 * 1024)

#define N(a) (sizeof(a) / sizeof((a)[0]))

static const struct store_col cols_meta[] = {
    {"key", STORE_COL_TEXT},
    {"value", STORE_COL_TEXT},
};
static const struct store_col cols_env[] = {
    {"id", STORE_COL_INT},
    {"name", STORE_COL_TEXT},
    {"webhook_url", STORE_COL_TEXT},
    {"webhook_url_secondary", STORE_COL_TEXT},
    {"webhook_key_sealed", STORE_COL_TEXT},
    {"on_auth_creation", STORE_COL_BOOL},
    {"on_auth_refresh_error", STORE_COL_BOOL},
    {"created_at", STORE_COL_INT},
};
static const struct store_col cols_keys[] = {
    {"id", STORE_COL_INT},     {"env_id", STORE_COL_INT},     {"key_hash", STORE_COL_HASH},
    {"label", STORE_COL_TEXT}, {"created_at", STORE_COL_INT}, {"revoked_at", STORE_COL_INT},
};
static const struct store_col cols_int[] = {
    {"id", STORE_COL_INT},
    {"env_id", STORE_COL_INT},
    {"unique_key", STORE_COL_TEXT},
    {"provider", STORE_COL_TEXT},
    {"display_name", STORE_COL_TEXT},
    {"oauth_scopes", STORE_COL_TEXT},
    {"forward_webhooks", STORE_COL_BOOL},
    {"custom_json", STORE_COL_TEXT},
    {"created_at", STORE_COL_INT},
    {"updated_at", STORE_COL_INT},
    {"credentials_sealed", STORE_COL_TEXT},
};
static const struct store_col cols_conn[] = {
    {"id", STORE_COL_INT},
    {"env_id", STORE_COL_INT},
    {"uid", STORE_COL_TEXT},
    {"connection_id", STORE_COL_TEXT},
    {"provider_config_key", STORE_COL_TEXT},
    {"provider", STORE_COL_TEXT},
    {"credentials_sealed", STORE_COL_TEXT},
    {"connection_config_json", STORE_COL_TEXT},
    {"metadata_json", STORE_COL_TEXT},
    {"tags_json", STORE_COL_TEXT},
    {"end_user_json", STORE_COL_TEXT},
    {"webhook_url_override", STORE_COL_TEXT},
    {"expires_at", STORE_COL_INT},
    {"created_at", STORE_COL_INT},
    {"updated_at", STORE_COL_INT},
    {"last_fetched_at", STORE_COL_INT},
    {"last_refresh_success", STORE_COL_INT},
    {"last_refresh_failure", STORE_COL_INT},
    {"next_refresh_at", STORE_COL_INT},
    {"refresh_attempts", STORE_COL_INT},
    {"needs_reauth", STORE_COL_BOOL},
    {"auth_error_json", STORE_COL_TEXT},
    {"version", STORE_COL_INT},
    {"lease_owner", STORE_COL_TEXT},
    {"lease_until", STORE_COL_INT},
};
static const struct store_col cols_sess[] = {
    {"id", STORE_COL_INT},
    {"env_id", STORE_COL_INT},
    {"token_hash", STORE_COL_HASH},
    {"end_user_json", STORE_COL_TEXT},
    {"organization_json", STORE_COL_TEXT},
    {"allowed_integrations_json", STORE_COL_TEXT},
    {"config_defaults_json", STORE_COL_TEXT},
    {"tags_json", STORE_COL_TEXT},
    {"webhook_url_override", STORE_COL_TEXT},
    {"connection_row_id", STORE_COL_INT},
    {"expires_at", STORE_COL_INT},
    {"attempts", STORE_COL_INT},
    {"created_at", STORE_COL_INT},
};
static const struct store_col cols_wh[] = {
    {"id", STORE_COL_INT},          {"env_id", STORE_COL_INT},
    {"url", STORE_COL_TEXT},        {"body", STORE_COL_TEXT},
    {"attempts", STORE_COL_INT},    {"next_attempt_at", STORE_COL_INT},
    {"state", STORE_COL_TEXT},      {"claim_owner", STORE_COL_TEXT},
    {"claim_until", STORE_COL_INT}, {"last_error", STORE_COL_TEXT},
    {"created_at", STORE_COL_INT},
};

static const struct store_col cols_ops[] = {
    {"id", STORE_COL_TEXT},
    {"env_id", STORE_COL_INT},
    {"at", STORE_COL_INT},
    {"kind", STORE_COL_TEXT},
    {"outcome", STORE_COL_TEXT},
    {"error", STORE_COL_TEXT},
    {"integration", STORE_COL_TEXT},
    {"provider", STORE_COL_TEXT},
    {"connection_id", STORE_COL_TEXT},
    {"end_user_id", STORE_COL_TEXT},
    {"duration_ms", STORE_COL_INT},
    {"detail_json", STORE_COL_TEXT},
};

const struct store_table store_tables[] = {
    {"meta", cols_meta, N(cols_meta), false},
    {"environments", cols_env, N(cols_env), true},
    {"api_keys", cols_keys, N(cols_keys), true},
    {"integrations", cols_int, N(cols_int), true},
    {"connections", cols_conn, N(cols_conn), true},
    {"connect_sessions", cols_sess, N(cols_sess), true},
    {"webhook_outbox", cols_wh, N(cols_wh), true},
    {"operations", cols_ops, N(cols_ops), false},
};

latch_rc
store_table_cols(struct buf *b, const struct store_table *t, const char *fetched_expr)
{
    latch_rc rc = LATCH_OK;

    for (size_t i = 0; i < t->ncols && rc == LATCH_OK; i++) {
        const char *col = t->cols[i].name;

        if (fetched_expr != NULL && strcmp(t->name, "connections") == 0 &&
            strcmp(col, "last_fetched_at") == 0)
            col = fetched_expr;
        rc = buf_printf(b, "%s%s", i ? ", " : "", col);
    }
    return rc;
}
const size_t store_ntables = N(store_tables);

latch_rc
store_val_get(const struct store_col *col, json_t *row, struct store_val *out)
{
    json_t *v = json_object_get(row, col->name);

    memset(out, 0, sizeof *out);
    if (v == NULL || json_is_null(v)) {
        out->null = true;
        return LATCH_OK;
    }
    switch (col->type) {
    case STORE_COL_INT:
        if (!json_is_integer(v))
            return LATCH_E_INVAL;
        out->i = (int64_t)json_integer_value(v);
        return LATCH_OK;
    case STORE_COL_BOOL:
        if (!json_is_boolean(v))
            return LATCH_E_INVAL;
        out->i = json_is_true(v) ? 1 : 0;
        return LATCH_OK;
    case STORE_COL_TEXT:
        if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
            return LATCH_E_INVAL; /* no embedded NUL */
        out->s = json_string_value(v);
        return LATCH_OK;
    case STORE_COL_HASH: {
        const char *s = json_string_value(v);

        if (s == NULL || strlen(s) != 64)
            return LATCH_E_INVAL;
        for (int i = 0; i < 32; i++) {
            int a = latch_hexval(s[2 * i]), b = latch_hexval(s[2 * i + 1]);

            if (a < 0 || b < 0)
                return LATCH_E_INVAL;
            out->h[i] = (unsigned char)(a << 4 | b);
        }
        return LATCH_OK;
    }
    }
    return LATCH_E_INVAL;
}

latch_rc
store_val_put(const struct store_col *col, json_t *row, const struct store_val *v)
{
    static const char hex[] = "0123456789abcdef";
    json_t *j = NULL;
    char h[65];

    if (v->null) {
        j = json_null();
    } else {
        switch (col->type) {
        case STORE_COL_INT:
            j = json_integer((json_int_t)v->i);
            break;
        case STORE_COL_BOOL:
            j = json_boolean(v->i != 0);
            break;
        case STORE_COL_TEXT:
            j = v->s != NULL ? json_string(v->s) : NULL; /* NULL: not UTF-8 */
            break;
        case STORE_COL_HASH:
            for (int i = 0; i < 32; i++) {
                h[2 * i] = hex[v->h[i] >> 4];
                h[2 * i + 1] = hex[v->h[i] & 15];
            }
            h[64] = '\0';
            j = json_string(h);
            break;
        }
    }
    if (j == NULL)
        return LATCH_E_INVAL;
    return json_object_set_new(row, col->name, j) == 0 ? LATCH_OK : LATCH_E_NOMEM;
}

/* ---- export ---- */

struct export_ctx {
    FILE *out;
    size_t rows;
};

static latch_rc
write_line(FILE *out, json_t *obj)
{
    if (json_dumpf(obj, out, JSON_COMPACT) != 0 || fputc('\n', out) == EOF)
        return LATCH_E_IO;
    return LATCH_OK;
}

static latch_rc
export_row(const struct store_table *t, json_t *row, void *ud)
{
    struct export_ctx *x = ud;
    json_t *line = json_object();
    latch_rc rc = LATCH_E_NOMEM;

    if (json_object_set_new(line, "table", json_string(t->name)) == 0 &&
        json_object_set(line, "row", row) == 0)
        rc = write_line(x->out, line);
    json_decref(line);
    if (rc == LATCH_OK)
        x->rows++;
    return rc;
}

latch_rc
store_export(struct store *s, FILE *out, struct latch_err *err)
{
    struct export_ctx x = {out, 0};
    json_t *head = NULL;
    latch_rc rc;
    int ver = store_schema_version(s);

    if (ver <= 0) {
        latch_err_set(err, "export: cannot read the schema version (migrate first)");
        return ver < 0 ? LATCH_E_UNAVAILABLE : LATCH_E_INVAL;
    }
    head = json_pack("{s:i,s:i}", "latch_export", STORE_EXPORT_FORMAT, "schema_version", ver);
    rc = head != NULL ? write_line(out, head) : LATCH_E_NOMEM;
    json_decref(head);
    for (size_t i = 0; i < store_ntables && rc == LATCH_OK; i++) {
        rc = s->d->raw_scan(s->db, &store_tables[i], export_row, &x);
        if (rc != LATCH_OK)
            latch_err_set(err, "export: table %s: %s", store_tables[i].name, latch_strerror(rc));
    }
    if (rc == LATCH_OK) {
        json_t *end = json_pack("{s:b,s:I}", "end", 1, "rows", (json_int_t)x.rows);

        rc = end != NULL ? write_line(out, end) : LATCH_E_NOMEM;
        json_decref(end);
    }
    if (rc == LATCH_OK && fflush(out) != 0)
        rc = LATCH_E_IO;
    if (rc == LATCH_E_IO)
        latch_err_set(err, "export: write failed");
    return rc;
}

/* ---- import ---- */

struct import_ctx {
    FILE *in;
    struct buf line;
    json_t *cur; /* the last parsed line (owned) */
    size_t lineno;
    size_t rows;
    bool ended;
    struct latch_err *err;
};

/* Reads one line into x->line (without the newline); false at EOF before any byte. */
static latch_rc
read_line(struct import_ctx *x, bool *got)
{
    char chunk[4096];

    *got = false;
    buf_reset(&x->line);
    while (fgets(chunk, sizeof chunk, x->in) != NULL) {
        size_t n = strlen(chunk);
        bool eol = n > 0 && chunk[n - 1] == '\n';

        *got = true;
        if (eol)
            n--;
        if (buf_append(&x->line, chunk, n) != LATCH_OK) {
            latch_err_set(x->err, "import: line %zu is too long", x->lineno + 1);
            return LATCH_E_TOO_LARGE;
        }
        if (eol)
            break;
    }
    if (ferror(x->in)) {
        latch_err_set(x->err, "import: read failed");
        return LATCH_E_IO;
    }
    if (*got)
        x->lineno++;
    return LATCH_OK;
}

static latch_rc
parse_line(struct import_ctx *x, bool *got)
{
    json_error_t je;
    latch_rc rc;

    json_decref(x->cur);
    x->cur = NULL;
    rc = read_line(x, got);
    if (rc != LATCH_OK || !*got)
        return rc;
    x->cur = json_loadb(x->line.data != NULL ? x->line.data : "", x->line.len,
                        JSON_REJECT_DUPLICATES, &je);
    if (!json_is_object(x->cur)) {
        latch_err_set(x->err, "import: line %zu is not a JSON object", x->lineno);
        return LATCH_E_INVAL;
    }
    return LATCH_OK;
}

static latch_rc
import_next(const struct store_table **t, json_t **row, void *ud)
{
    struct import_ctx *x = ud;
    const char *name;
    latch_rc rc;
    bool got;

    *t = NULL;
    *row = NULL;
    rc = parse_line(x, &got);
    if (rc != LATCH_OK)
        return rc;
    if (!got) {
        latch_err_set(x->err, "import: the dump is truncated (no end line)");
        return LATCH_E_INVAL;
    }
    if (json_is_true(json_object_get(x->cur, "end"))) {
        json_t *n = json_object_get(x->cur, "rows");

        if (!json_is_integer(n) || (size_t)json_integer_value(n) != x->rows) {
            latch_err_set(
                x->err, "import: row count mismatch (dump says %" JSON_INTEGER_FORMAT ", read %zu)",
                json_is_integer(n) ? json_integer_value(n) : (json_int_t)-1, x->rows);
            return LATCH_E_INVAL;
        }
        rc = read_line(x, &got);
        if (rc == LATCH_OK && got) {
            latch_err_set(x->err, "import: data after the end line");
            return LATCH_E_INVAL;
        }
        x->ended = true;
        return rc;
    }
    name = json_string_value(json_object_get(x->cur, "table"));
    if (name == NULL || !json_is_object(json_object_get(x->cur, "row")) ||
        json_object_size(x->cur) != 2) {
        latch_err_set(x->err, "import: line %zu is not a {table,row} object", x->lineno);
        return LATCH_E_INVAL;
    }
    for (size_t i = 0; i < store_ntables; i++)
        if (strcmp(store_tables[i].name, name) == 0)
            *t = &store_tables[i];
    if (*t == NULL) {
        latch_err_set(x->err, "import: line %zu: unknown table", x->lineno);
        return LATCH_E_INVAL;
    }
    *row = json_object_get(x->cur, "row");
    /* Every key must be a column: a row from another schema is refused, not half-imported. */
    for (void *it = json_object_iter(*row); it != NULL; it = json_object_iter_next(*row, it)) {
        const char *key = json_object_iter_key(it);
        bool known = false;

        for (size_t k = 0; k < (*t)->ncols && !known; k++)
            known = strcmp((*t)->cols[k].name, key) == 0;
        if (!known) {
            latch_err_set(x->err, "import: line %zu: unknown column for table %s", x->lineno, name);
            return LATCH_E_INVAL;
        }
    }
    x->rows++;
    return LATCH_OK;
}

/*
 * The oldest schema whose dumps import as they are: dumps hold the exported tables and columns
 * only, and every migration since this version left those unchanged (schema 2 added
 * connection_activity, which is not exported: its values travel in connections.last_fetched_at).
 * Raise it when a migration changes an exported table.
 */
#define STORE_EXPORT_OLDEST_SCHEMA 1

latch_rc
store_import(struct store *s, FILE *in, struct latch_err *err)
{
    struct import_ctx x;
    json_t *fmt, *ver;
    latch_rc rc;
    bool got;
    int cur = store_schema_version(s);

    memset(&x, 0, sizeof x);
    x.in = in;
    x.err = err;
    buf_init(&x.line, STORE_EXPORT_MAX_LINE);
    latch_err_clear(err);
    rc = parse_line(&x, &got);
    if (rc != LATCH_OK)
        goto out;
    fmt = got ? json_object_get(x.cur, "latch_export") : NULL;
    ver = got ? json_object_get(x.cur, "schema_version") : NULL;
    if (!json_is_integer(fmt) || json_integer_value(fmt) != STORE_EXPORT_FORMAT ||
        !json_is_integer(ver)) {
        latch_err_set(err, "import: not a latch export (format %d)", STORE_EXPORT_FORMAT);
        rc = LATCH_E_INVAL;
        goto out;
    }
    if (cur <= 0 || json_integer_value(ver) < STORE_EXPORT_OLDEST_SCHEMA ||
        json_integer_value(ver) > cur) {
        latch_err_set(err,
                      "import: the dump has schema version %" JSON_INTEGER_FORMAT
                      ", the database %d (migrate it, or use a matching latch)",
                      json_integer_value(ver), cur);
        rc = LATCH_E_INVAL;
        goto out;
    }
    rc = s->d->raw_import(s->db, import_next, &x, err);
    if (rc == LATCH_OK && !x.ended)
        rc = LATCH_E_INTERNAL;
out:
    json_decref(x.cur);
    buf_free(&x.line);
    return rc;
}
