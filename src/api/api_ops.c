/*
 * api_ops.c - the operations log at the REST layer (latch extension; docs/api.md,
 * "Operations log"):
 *
 *  - the operation of a request: routes that create one (struct api_route.op) get an id at
 *    dispatch, returned at once in X-Latch-Operation-Id; handlers add what they learn
 *    (api_op_conn, api_op_error, api_op_detail); the row is queued (opslog_emit) when the request
 *    is finished, with its outcome and duration;
 *  - the read API: GET /latch/operations (filters, cursor pagination) and
 *    GET /latch/operations/:id, secret-key auth, scoped to the key's environment.
 *
 * Nothing secret goes in: ids, codes, sizes and statuses only (leak.test.mjs checks it).
 * Threads: a request's operation is touched by one thread at a time (the one running the
 * request); its row is emitted from the pool thread that finishes the request.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/api.h"
#include "core/latch_limits.h"
#include "core/metrics.h"
#include "domain/opslog.h"
#include "util/clock.h"
#include "util/json.h"
#include "util/xalloc.h"

/* Default and largest page of GET /latch/operations. */
#define OPS_PAGE_DEFAULT 100
#define OPS_PAGE_MAX 1000
/* Longest value of one recorded field (ids and keys are at most LATCH_MAX_ID_LEN). */
#define OPS_FIELD_MAX 256

struct api_op {
    char id[OPSLOG_ID_LEN];
    const char *kind; /* static */
    const char *what; /* static: management routes */
    int64_t at;
    uint64_t t0_us;
    char *integration, *provider, *connection_id, *end_user_id, *error;
    json_t *detail; /* object */
};

static void
set_str(char **dst, const char *v)
{
    free(*dst);
    *dst = NULL;
    if (v != NULL && v[0] != '\0')
        *dst = strndup(v, OPS_FIELD_MAX);
}

void
api_op_begin(struct api_ctx *c, const char *op)
{
    struct api_op *o;

    if (op == NULL || c->op != NULL || c->env_id == 0 || !opslog_enabled())
        return;
    o = xcalloc(1, sizeof *o);
    opslog_new_id(o->id);
    o->at = latch_now_ms();
    o->t0_us = http_req_start_us(c->req);
    o->detail = json_object();
    if (strcmp(op, "link") == 0) {
        o->kind = c->by_session && c->session.connection_row_id != 0 ? "reconnect" : "link";
    } else if (strcmp(op, "proxy") == 0) {
        o->kind = "proxy";
    } else {
        o->kind = "management";
        o->what = op;
        json_object_set_new(o->detail, "what", json_string(op));
        /* who: the connect session, or the secret key by its label (never the key itself) */
        if (c->by_session) {
            json_object_set_new(o->detail, "actor", json_string("connect_session"));
        } else {
            json_object_set_new(o->detail, "actor", json_string("secret_key"));
            if (c->key_label[0] != '\0')
                json_object_set_new(o->detail, "key_label", json_string(c->key_label));
        }
    }
    if (c->by_session && c->session.end_user_json != NULL) {
        json_t *eu = latch_json_col(c->session.end_user_json);

        set_str(&o->end_user_id, json_string_value(json_object_get(eu, "id")));
        json_decref(eu);
    }
    c->op = o;
    http_resp_header(c->req, "X-Latch-Operation-Id", o->id);
}

void
api_op_conn(struct api_ctx *c, const char *integration, const char *provider,
            const char *connection_id)
{
    if (c->op == NULL)
        return;
    if (integration != NULL)
        set_str(&c->op->integration, integration);
    if (provider != NULL)
        set_str(&c->op->provider, provider);
    if (connection_id != NULL)
        set_str(&c->op->connection_id, connection_id);
}

void
api_op_error(struct api_ctx *c, const char *code)
{
    if (c->op != NULL && c->op->error == NULL)
        set_str(&c->op->error, code);
}

void
api_op_detail(struct api_ctx *c, const char *key, json_t *value)
{
    if (c->op == NULL || value == NULL) {
        json_decref(value);
        return;
    }
    json_object_set_new(c->op->detail, key, value);
}

void
api_op_target(struct api_ctx *c, const char *method, const char *endpoint)
{
    size_t n;

    if (c->op == NULL)
        return;
    n = strcspn(endpoint, "?#");
    if (n > OPS_FIELD_MAX)
        n = OPS_FIELD_MAX;
    json_object_set_new(c->op->detail, "method", json_string(method));
    json_object_set_new(c->op->detail, "endpoint", json_stringn(endpoint, n));
}

void
api_op_upstream(struct api_ctx *c, long status, int retries, bool refreshed)
{
    if (c->op == NULL)
        return;
    json_object_set_new(c->op->detail, "upstream_status", json_integer(status));
    json_object_set_new(c->op->detail, "retries", json_integer(retries < 0 ? 0 : retries));
    if (refreshed)
        json_object_set_new(c->op->detail, "refreshed_after_401", json_true());
}

const char *
api_op_id(const struct api_ctx *c)
{
    return c->op != NULL ? c->op->id : NULL;
}

/* Management: the integration and connection a write named (path, query or body). */
static void
fill_names(struct api_ctx *c, struct api_op *o)
{
    bool integ_route = strncmp(o->what, "integration.", 12) == 0;
    bool conn_route = strncmp(o->what, "connection.", 11) == 0;
    const char *v;

    if (o->integration == NULL) {
        v = integ_route ? c->params[0] : http_req_query(c->req, "provider_config_key");
        if (v == NULL && json_is_object(c->body))
            v = json_string_value(
                json_object_get(c->body, integ_route ? "unique_key" : "provider_config_key"));
        set_str(&o->integration, v);
    }
    if (o->connection_id == NULL) {
        v = conn_route ? c->params[0] : NULL;
        if (v == NULL && json_is_object(c->body))
            v = json_string_value(json_object_get(c->body, "connection_id"));
        set_str(&o->connection_id, v);
    }
}

void
api_op_finish(struct api_ctx *c)
{
    struct api_op *o = c->op;
    unsigned status;
    struct store_op row;

    if (o == NULL)
        return;
    c->op = NULL;
    status = http_req_status(c->req);
    if (o->error == NULL && (status == 0 || status >= 400)) {
        char code[32];

        (void)snprintf(code, sizeof code, status == 0 ? "client_closed" : "http_%u", status);
        set_str(&o->error, code);
    }
    /*
     * Names from the request itself (path, query, body) only when it succeeded: a refused
     * request may carry anything in them, even a secret pasted into the wrong field.
     */
    if (o->what != NULL && status != 0 && status < 400)
        fill_names(c, o);
    json_object_set_new(o->detail, "status", json_integer(status));
    if (strcmp(o->kind, "proxy") == 0) {
        json_object_set_new(o->detail, "bytes_in",
                            json_integer((json_int_t)http_req_bytes_in(c->req)));
        json_object_set_new(o->detail, "bytes_out",
                            json_integer((json_int_t)http_req_bytes_out(c->req)));
    }
    memset(&row, 0, sizeof row);
    row.id = o->id;
    row.env_id = c->env_id;
    row.at = o->at;
    row.kind = (char *)(uintptr_t)o->kind;
    row.success = status != 0 && status < 400;
    row.error = o->error;
    row.integration = o->integration;
    row.provider = o->provider;
    row.connection_id = o->connection_id;
    row.end_user_id = o->end_user_id;
    row.duration_ms = (int64_t)((latch_mono_us() - o->t0_us) / 1000);
    row.detail_json = latch_json_dump(o->detail);
    (void)opslog_emit(&row);
    free(row.detail_json);
    free(o->integration);
    free(o->provider);
    free(o->connection_id);
    free(o->end_user_id);
    free(o->error);
    json_decref(o->detail);
    free(o);
}

/* ---- read API ---- */

static json_t *
op_json(const struct store_op *o)
{
    json_t *j = json_pack("{s:s, s:o, s:s, s:s, s:o, s:o, s:o, s:o, s:o, s:I}", "id", o->id,
                          "started_at", api_time_json(o->at, false), "kind", o->kind, "outcome",
                          o->success ? "success" : "failure", "error",
                          o->error ? json_string(o->error) : json_null(), "integration",
                          o->integration ? json_string(o->integration) : json_null(), "provider",
                          o->provider ? json_string(o->provider) : json_null(), "connection_id",
                          o->connection_id ? json_string(o->connection_id) : json_null(),
                          "end_user_id", o->end_user_id ? json_string(o->end_user_id) : json_null(),
                          "duration_ms", (json_int_t)o->duration_ms);
    json_t *d = latch_json_col(o->detail_json);

    json_object_set_new(j, "details", json_is_object(d) ? d : json_object());
    if (!json_is_object(d))
        json_decref(d);
    return j;
}

/* "1700000000000" (ms) or "2026-01-02T03:04:05(.123)Z"; false when it is neither. */
static bool
parse_time(const char *s, int64_t *ms)
{
    struct tm tm;
    const char *p;
    int64_t frac = 0;

    if (s[0] != '\0' && strspn(s, "0123456789") == strlen(s) && strlen(s) <= 15) {
        *ms = strtoll(s, NULL, 10);
        return true;
    }
    memset(&tm, 0, sizeof tm);
    p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (p == NULL)
        return false;
    if (*p == '.') {
        int digits = 0;

        for (p++; isdigit((unsigned char)*p); p++, digits++)
            if (digits < 3)
                frac = frac * 10 + (*p - '0');
        for (; digits < 3; digits++)
            frac *= 10;
    }
    if (strcmp(p, "Z") != 0 && strcmp(p, "+00:00") != 0)
        return false;
    *ms = (int64_t)timegm(&tm) * 1000 + frac;
    return *ms >= 0;
}

static bool
query_ok(const char *k, const char *v, void *ud)
{
    static const char *const allowed[] = {
        "connection_id",
        "integration",
        "provider_config_key",
        "kind",
        "outcome",
        "from",
        "to",
        "cursor",
        "limit",
        NULL,
    };
    bool *bad = ud;

    (void)v;
    for (size_t i = 0; allowed[i] != NULL; i++)
        if (strcmp(k, allowed[i]) == 0)
            return true;
    *bad = true;
    return false;
}

void
api_operations_list(struct api_ctx *c)
{
    static const char *const kinds[] = {"link",    "reconnect",  "refresh", "proxy",
                                        "webhook", "management", NULL};
    struct store_op_filter f;
    struct store_op *v = NULL;
    const char *q;
    char lo[OPSLOG_ID_LEN], hi[OPSLOG_ID_LEN];
    size_t n = 0;
    int64_t t;
    bool bad = false;
    json_t *data;

    memset(&f, 0, sizeof f);
    f.limit = OPS_PAGE_DEFAULT;
    http_req_query_foreach(c->req, query_ok, &bad);
    if (bad) {
        api_error(c, 400, "invalid_query_params",
                  "Unknown query parameter (connection_id, integration, kind, outcome, from, to, "
                  "cursor, limit).");
        return;
    }
    f.connection_id = http_req_query(c->req, "connection_id");
    f.integration = http_req_query(c->req, "integration");
    if (f.integration == NULL)
        f.integration = http_req_query(c->req, "provider_config_key");
    f.kind = http_req_query(c->req, "kind");
    if (f.kind != NULL) {
        bool known = false;

        for (size_t i = 0; kinds[i] != NULL; i++)
            known = known || strcmp(kinds[i], f.kind) == 0;
        if (!known) {
            api_error(c, 400, "invalid_query_params",
                      "kind must be link, reconnect, refresh, proxy, webhook or management.");
            return;
        }
    }
    q = http_req_query(c->req, "outcome");
    if (q != NULL) {
        if (strcmp(q, "success") == 0)
            f.outcome = 1;
        else if (strcmp(q, "failure") == 0)
            f.outcome = -1;
        else {
            api_error(c, 400, "invalid_query_params", "outcome must be success or failure.");
            return;
        }
    }
    q = http_req_query(c->req, "from");
    if (q != NULL) {
        if (!parse_time(q, &t)) {
            api_error(c, 400, "invalid_query_params",
                      "from must be an ISO 8601 UTC time or milliseconds since the epoch.");
            return;
        }
        opslog_id_bound(t, lo);
        f.id_min = lo;
    }
    q = http_req_query(c->req, "to");
    if (q != NULL) {
        if (!parse_time(q, &t)) {
            api_error(c, 400, "invalid_query_params",
                      "to must be an ISO 8601 UTC time or milliseconds since the epoch.");
            return;
        }
        opslog_id_bound(t + 1, hi); /* to is inclusive */
        f.id_below = hi;
    }
    q = http_req_query(c->req, "cursor");
    if (q != NULL) {
        if (!opslog_id_valid(q)) {
            api_error(c, 400, "invalid_query_params", "Invalid cursor.");
            return;
        }
        if (f.id_below == NULL || strcmp(q, f.id_below) < 0)
            f.id_below = q;
    }
    q = http_req_query(c->req, "limit");
    if (q != NULL) {
        char *end = NULL;
        long long l = strtoll(q, &end, 10);

        if (end == q || *end != '\0' || l < 1 || l > OPS_PAGE_MAX) {
            api_error(c, 400, "invalid_query_params", "limit must be 1..1000.");
            return;
        }
        f.limit = l;
    }
    if (store_ops_list(c->deps->store, c->env_id, &f, &v, &n) != LATCH_OK) {
        api_store_unavailable(c);
        return;
    }
    data = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(data, op_json(&v[i]));
    api_reply(c, 200,
              json_pack("{s:o, s:o}", "data", data, "next_cursor",
                        n == (size_t)f.limit ? json_string(v[n - 1].id) : json_null()));
    store_ops_list_free(v, n);
}

void
api_operation_get(struct api_ctx *c)
{
    struct store_op o;
    latch_rc rc;

    if (!opslog_id_valid(c->params[0])) {
        api_error(c, 404, "unknown_operation", "No operation with this id.");
        return;
    }
    rc = store_ops_get(c->deps->store, c->env_id, c->params[0], &o);
    if (rc == LATCH_E_NOT_FOUND) {
        api_error(c, 404, "unknown_operation", "No operation with this id.");
        return;
    }
    if (rc != LATCH_OK) {
        api_store_unavailable(c);
        return;
    }
    api_reply(c, 200, json_pack("{s:o}", "data", op_json(&o)));
    store_op_clear(&o);
}

void
api_metrics_upstream(const char *provider, long status, uint64_t t0_us)
{
    char st[16], l[160];

    (void)snprintf(st, sizeof st, "%ld", status);
    metrics_add(MF_UPSTREAM_REQUESTS,
                metrics_labels(l, sizeof l, "provider", provider, "status", st, (const char *)NULL),
                1);
    metrics_observe_us(MF_UPSTREAM_DURATION,
                       metrics_labels(l, sizeof l, "provider", provider, (const char *)NULL),
                       latch_mono_us() - t0_us);
}
