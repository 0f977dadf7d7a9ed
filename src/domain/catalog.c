/*
 * catalog.c - the provider catalogue: Nango-format providers.yaml -> immutable structs.
 *
 * Loading runs in three steps:
 *  1. libyaml's event parser feeds a small builder that makes a jansson tree. Anchors, aliases
 *     and unknown tags are refused, and nodes, nesting depth and bytes are capped before any
 *     of them costs memory. Plain scalars are typed (true/false -> boolean, null/~ -> null,
 *     decimal integers -> number); quoted scalars stay strings.
 *  2. Each top-level entry becomes a struct catalog_provider. Strings are borrowed from the
 *     jansson tree (kept, never modified after load); arrays and converted scalars live in an
 *     arena owned by the catalogue.
 *  3. Every `pattern:` is compiled with PCRE2 (JIT when available); a bad one fails the load.
 *
 * Validation follows the Connect UI of Nango: patterns are JavaScript regexes tested with
 * RegExp.prototype.test, which searches (unanchored) - the patterns carry their own ^...$. The
 * validators themselves (catalog_field_validate) are in fields.c.
 *
 * Threads: load/free from one thread; everything else is read-only and thread-safe (the PCRE2
 * match context is shared read-only, match data is per call).
 */
#include "domain/catalog.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <yaml.h>

#include "core/latch_limits.h"
#include "domain/catalog_link.h"
#include "domain/fields.h"
#include "core/log.h"
#include "util/buf.h"
#include "util/xalloc.h"

/* YAML nesting accepted (Nango's file needs 7). */
#define CATALOG_MAX_DEPTH 64
/* Longest `pattern:` accepted. */
#define CATALOG_MAX_PATTERN_LEN 4096
/* PCRE2 ReDoS guards: backtracking steps, backtracking depth, heap KiB per match. */
#define CATALOG_RE_MATCH_LIMIT 100000
#define CATALOG_RE_DEPTH_LIMIT 1000
#define CATALOG_RE_HEAP_LIMIT_KIB 4096
/* Upper bound of token_expiration_buffer / default_expires_in (one year, in seconds). */
#define CATALOG_MAX_SECONDS (365 * 24 * 3600)

#define CATALOG_ARENA_CHUNK (64 * 1024)

extern const unsigned char catalog_default_yaml[];
extern const size_t catalog_default_yaml_len;
extern const unsigned char catalog_upstream_yaml[];
extern const size_t catalog_upstream_yaml_len;
extern const char catalog_source_text[];

/* Longest alias chain followed (Nango's file needs 1). */
#define CATALOG_MAX_ALIAS_DEPTH 8

struct arena_chunk {
    struct arena_chunk *next;
    size_t used;
    size_t cap;
    _Alignas(max_align_t) unsigned char data[];
};

struct catalog {
    struct arena_chunk *arena;
    json_t *root; /* owned while building; freed once every string is copied into the arena */
    struct catalog_provider *providers;
    size_t n_providers;
    const struct catalog_provider **by_name; /* sorted, for bsearch */
    pcre2_match_context *mctx;
    struct catalog_re *res;
    const char *origin;
};

/* ---- arena ---------------------------------------------------------------------------- */

static void *
arena_alloc(struct catalog *c, size_t n)
{
    struct arena_chunk *ch = c->arena;
    size_t a = _Alignof(max_align_t);
    void *p;

    n = (n + a - 1) & ~(a - 1);
    if (n == 0)
        n = a;
    if (ch == NULL || ch->cap - ch->used < n) {
        size_t cap = n > CATALOG_ARENA_CHUNK ? n : CATALOG_ARENA_CHUNK;

        ch = xcalloc(1, sizeof *ch + cap);
        ch->cap = cap;
        ch->next = c->arena;
        c->arena = ch;
    }
    p = ch->data + ch->used;
    ch->used += n;
    return p;
}

static char *
arena_strndup(struct catalog *c, const char *s, size_t n)
{
    char *p = arena_alloc(c, n + 1);

    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

static void
arena_free(struct arena_chunk *ch)
{
    while (ch != NULL) {
        struct arena_chunk *next = ch->next;

        free(ch);
        ch = next;
    }
}

/* ---- YAML -> jansson ----------------------------------------------------------------- */

struct frame {
    json_t *node; /* borrowed: the parent (or root) holds it */
    char *key;    /* owned: pending key of a mapping */
};

struct builder {
    const char *name;
    struct latch_err *err;
    json_t *root;
    size_t nodes;
    int docs;
    int top;
    struct frame stack[CATALOG_MAX_DEPTH];
};

static latch_rc
bfail(struct builder *b, latch_rc rc, const yaml_mark_t *mark, const char *what)
{
    if (mark != NULL)
        latch_err_set(b->err, "%s:%zu:%zu: %s", b->name, mark->line + 1, mark->column + 1, what);
    else
        latch_err_set(b->err, "%s: %s", b->name, what);
    return rc;
}

/* Accepts no tag, or the standard tag that matches the node kind. */
static bool
tag_ok(const yaml_char_t *tag, const char *std)
{
    return tag == NULL || strcmp((const char *)tag, std) == 0 ||
           strcmp((const char *)tag, "!") == 0;
}

static bool
is_yaml_int(const char *s, size_t n)
{
    size_t i = 0;

    if (n > 0 && s[0] == '-')
        i = 1;
    if (i >= n || n - i > 15)
        return false;
    if (s[i] == '0' && n - i > 1)
        return false;
    for (; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

static bool
text_in(const char *s, size_t n, const char *const *set)
{
    for (; *set != NULL; set++)
        if (strlen(*set) == n && memcmp(*set, s, n) == 0)
            return true;
    return false;
}

static json_t *
scalar_to_json(const yaml_event_t *ev)
{
    static const char *const trues[] = {"true", "True", "TRUE", NULL};
    static const char *const falses[] = {"false", "False", "FALSE", NULL};
    static const char *const nulls[] = {"", "~", "null", "Null", "NULL", NULL};
    const char *s = (const char *)ev->data.scalar.value;
    size_t n = ev->data.scalar.length;

    if (ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE && ev->data.scalar.tag == NULL) {
        if (text_in(s, n, trues))
            return json_true();
        if (text_in(s, n, falses))
            return json_false();
        if (text_in(s, n, nulls))
            return json_null();
        if (is_yaml_int(s, n)) {
            long long v = 0;
            size_t i = s[0] == '-' ? 1 : 0;

            for (; i < n; i++)
                v = v * 10 + (s[i] - '0');
            return json_integer(s[0] == '-' ? -v : v);
        }
    }
    return json_stringn(s, n);
}

/* Adds v (stolen) to the current container, or makes it the root. */
static latch_rc
add_value(struct builder *b, json_t *v, const yaml_mark_t *mark)
{
    struct frame *f;
    char msg[160];

    if (b->top == 0) {
        if (b->root != NULL) {
            json_decref(v);
            return bfail(b, LATCH_E_INVAL, mark, "more than one document");
        }
        b->root = v;
        return LATCH_OK;
    }
    f = &b->stack[b->top - 1];
    if (json_is_array(f->node)) {
        json_array_append_new(f->node, v);
        return LATCH_OK;
    }
    if (f->key == NULL) {
        json_decref(v);
        return bfail(b, LATCH_E_INVAL, mark, "mapping keys must be plain text");
    }
    if (json_object_get(f->node, f->key) != NULL) {
        json_decref(v);
        (void)snprintf(msg, sizeof msg, "duplicate key '%.100s'", f->key);
        return bfail(b, LATCH_E_INVAL, mark, msg);
    }
    json_object_set_new(f->node, f->key, v);
    free(f->key);
    f->key = NULL;
    return LATCH_OK;
}

static latch_rc
count_node(struct builder *b, const yaml_mark_t *mark, const yaml_char_t *anchor)
{
    if (anchor != NULL)
        return bfail(b, LATCH_E_INVAL, mark, "YAML anchors and aliases are not supported");
    if (++b->nodes > LATCH_MAX_CATALOG_NODES)
        return bfail(b, LATCH_E_TOO_LARGE, mark, "too many YAML nodes");
    return LATCH_OK;
}

static latch_rc
on_event(struct builder *b, const yaml_event_t *ev)
{
    const yaml_mark_t *mark = &ev->start_mark;
    struct frame *f;
    json_t *v;
    latch_rc rc;

    switch (ev->type) {
    case YAML_NO_EVENT:
    case YAML_STREAM_START_EVENT:
    case YAML_STREAM_END_EVENT:
    case YAML_DOCUMENT_END_EVENT:
        return LATCH_OK;
    case YAML_DOCUMENT_START_EVENT:
        if (++b->docs > 1)
            return bfail(b, LATCH_E_INVAL, mark, "more than one document");
        return LATCH_OK;
    case YAML_ALIAS_EVENT:
        return bfail(b, LATCH_E_INVAL, mark, "YAML anchors and aliases are not supported");
    case YAML_SCALAR_EVENT:
        rc = count_node(b, mark, ev->data.scalar.anchor);
        if (rc != LATCH_OK)
            return rc;
        if (!tag_ok(ev->data.scalar.tag, YAML_STR_TAG))
            return bfail(b, LATCH_E_INVAL, mark, "YAML tags are not supported");
        if (memchr(ev->data.scalar.value, '\0', ev->data.scalar.length) != NULL)
            return bfail(b, LATCH_E_INVAL, mark, "NUL character in a scalar");
        f = b->top > 0 ? &b->stack[b->top - 1] : NULL;
        if (f != NULL && json_is_object(f->node) && f->key == NULL) {
            f->key = xstrndup((const char *)ev->data.scalar.value, ev->data.scalar.length);
            return LATCH_OK;
        }
        v = scalar_to_json(ev);
        if (v == NULL)
            return bfail(b, LATCH_E_INVAL, mark, "scalar is not valid UTF-8");
        return add_value(b, v, mark);
    case YAML_SEQUENCE_START_EVENT:
    case YAML_MAPPING_START_EVENT: {
        bool seq = ev->type == YAML_SEQUENCE_START_EVENT;

        rc = count_node(b, mark,
                        seq ? ev->data.sequence_start.anchor : ev->data.mapping_start.anchor);
        if (rc != LATCH_OK)
            return rc;
        if (!tag_ok(seq ? ev->data.sequence_start.tag : ev->data.mapping_start.tag,
                    seq ? YAML_SEQ_TAG : YAML_MAP_TAG))
            return bfail(b, LATCH_E_INVAL, mark, "YAML tags are not supported");
        if (b->top >= CATALOG_MAX_DEPTH)
            return bfail(b, LATCH_E_TOO_LARGE, mark, "YAML nested too deeply");
        v = seq ? json_array() : json_object();
        if (v == NULL)
            return bfail(b, LATCH_E_NOMEM, mark, "out of memory");
        rc = add_value(b, v, mark);
        if (rc != LATCH_OK)
            return rc;
        b->stack[b->top].node = v;
        b->stack[b->top].key = NULL;
        b->top++;
        return LATCH_OK;
    }
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        if (b->top == 0)
            return bfail(b, LATCH_E_INTERNAL, mark, "unbalanced YAML events");
        b->top--;
        free(b->stack[b->top].key);
        b->stack[b->top].key = NULL;
        return LATCH_OK;
    }
    return bfail(b, LATCH_E_INVAL, mark, "unexpected YAML event");
}

static latch_rc
yaml_to_json(const char *yaml, size_t len, const char *name, json_t **out, struct latch_err *err)
{
    yaml_parser_t parser;
    struct builder *b;
    latch_rc rc = LATCH_OK;
    bool done = false;
    int i;

    *out = NULL;
    b = xcalloc(1, sizeof *b);
    b->name = name;
    b->err = err;
    if (yaml_parser_initialize(&parser) == 0) {
        free(b);
        latch_err_set(err, "%s: cannot initialise the YAML parser", name);
        return LATCH_E_NOMEM;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, len);
    while (!done) {
        yaml_event_t ev;

        if (yaml_parser_parse(&parser, &ev) == 0) {
            char msg[200];

            (void)snprintf(msg, sizeof msg, "YAML error: %s%s%s",
                           parser.problem ? parser.problem : "unknown", parser.context ? " " : "",
                           parser.context ? parser.context : "");
            rc = bfail(b, LATCH_E_INVAL, &parser.problem_mark, msg);
            break;
        }
        done = ev.type == YAML_STREAM_END_EVENT;
        rc = on_event(b, &ev);
        yaml_event_delete(&ev);
        if (rc != LATCH_OK)
            break;
    }
    yaml_parser_delete(&parser);
    for (i = 0; i < b->top; i++)
        free(b->stack[i].key);
    if (rc == LATCH_OK)
        *out = b->root;
    else
        json_decref(b->root);
    free(b);
    return rc;
}

/* ---- jansson -> structs -------------------------------------------------------------- */

struct loader {
    struct catalog *c;
    bool strict;          /* a pattern that does not compile fails the load */
    const char *name;     /* of the file */
    const char *provider; /* being built */
    struct latch_err *err;
};

static latch_rc lfail(struct loader *l, latch_rc rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static latch_rc
lfail(struct loader *l, latch_rc rc, const char *fmt, ...)
{
    char msg[200];
    va_list ap;

    va_start(ap, fmt);
    (void)vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    latch_err_set(l->err, "%s: provider '%.60s': %s", l->name, l->provider, msg);
    return rc;
}

/* Text of any JSON value: scalars as their YAML text, containers as compact JSON. */
static const char *
text_of(struct catalog *c, const json_t *v)
{
    char tmp[32];
    char *dump;
    const char *r;

    if (v == NULL || json_is_null(v))
        return NULL;
    if (json_is_string(v))
        return arena_strndup(c, json_string_value(v), json_string_length(v));
    if (json_is_true(v))
        return "true";
    if (json_is_false(v))
        return "false";
    if (json_is_integer(v)) {
        (void)snprintf(tmp, sizeof tmp, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return arena_strndup(c, tmp, strlen(tmp));
    }
    dump = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (dump == NULL)
        return NULL;
    r = arena_strndup(c, dump, strlen(dump));
    free(dump);
    return r;
}

/* A scalar member as text; NULL when absent, null, or a container. */
static const char *
get_scalar(struct catalog *c, const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);

    if (v == NULL || json_is_object(v) || json_is_array(v))
        return NULL;
    return text_of(c, v);
}

static latch_rc
build_kv(struct loader *l, const json_t *obj, const char *what, const struct catalog_kv **out,
         size_t *n_out)
{
    struct catalog_kv *kv;
    const char *key;
    json_t *v;
    size_t i = 0;

    *out = NULL;
    *n_out = 0;
    if (obj == NULL || json_is_null(obj))
        return LATCH_OK;
    if (!json_is_object(obj))
        return lfail(l, LATCH_E_INVAL, "%s must be a mapping", what);
    if (json_object_size(obj) == 0)
        return LATCH_OK;
    kv = arena_alloc(l->c, json_object_size(obj) * sizeof *kv);
    json_object_foreach((json_t *)(uintptr_t)obj, key, v)
    {
        const char *t = text_of(l->c, v);

        kv[i].key = arena_strndup(l->c, key, strlen(key));
        kv[i].value = t != NULL ? t : "";
        i++;
    }
    *out = kv;
    *n_out = i;
    return LATCH_OK;
}

/* A list of strings (a lone scalar counts as a list of one). */
static latch_rc
build_list(struct loader *l, const json_t *v, const char *what, const char *const **out,
           size_t *n_out)
{
    const char **arr;
    size_t i, n;

    *out = NULL;
    *n_out = 0;
    if (v == NULL || json_is_null(v))
        return LATCH_OK;
    if (json_is_object(v))
        return lfail(l, LATCH_E_INVAL, "%s must be a list", what);
    if (!json_is_array(v)) {
        arr = arena_alloc(l->c, sizeof *arr);
        arr[0] = text_of(l->c, v);
        *out = arr;
        *n_out = 1;
        return LATCH_OK;
    }
    n = json_array_size(v);
    if (n == 0)
        return LATCH_OK;
    arr = arena_alloc(l->c, n * sizeof *arr);
    for (i = 0; i < n; i++) {
        const json_t *e = json_array_get(v, i);

        if (json_is_object(e) || json_is_array(e) || json_is_null(e))
            return lfail(l, LATCH_E_INVAL, "%s must be a list of plain values", what);
        arr[i] = text_of(l->c, e);
    }
    *out = arr;
    *n_out = n;
    return LATCH_OK;
}

static latch_rc
get_seconds(struct loader *l, const json_t *obj, const char *key, int *out)
{
    const json_t *v = json_object_get(obj, key);
    json_int_t s;

    *out = -1;
    if (v == NULL || json_is_null(v))
        return LATCH_OK;
    if (!json_is_integer(v))
        return lfail(l, LATCH_E_INVAL, "%s must be a whole number of seconds", key);
    s = json_integer_value(v);
    if (s < 0 || s > CATALOG_MAX_SECONDS)
        return lfail(l, LATCH_E_INVAL, "%s must be between 0 and %d", key, CATALOG_MAX_SECONDS);
    *out = (int)s;
    return LATCH_OK;
}

static latch_rc
compile_pattern(struct loader *l, struct catalog_field *f, const char *section)
{
    struct catalog_re *re;
    pcre2_code *code;
    PCRE2_SIZE erroff = 0;
    int errcode = 0;
    size_t n = strlen(f->pattern);

    if (n > CATALOG_MAX_PATTERN_LEN)
        return lfail(l, LATCH_E_INVAL, "%s.%s: pattern longer than %d bytes", section, f->name,
                     CATALOG_MAX_PATTERN_LEN);
    /*
     * JavaScript flavour: `$` only at the very end, `[]`/`[^]` as in JS, \u and \x as in JS.
     */
    code = pcre2_compile((PCRE2_SPTR)f->pattern, n,
                         PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | PCRE2_DOLLAR_ENDONLY |
                             PCRE2_ALLOW_EMPTY_CLASS | PCRE2_ALT_BSUX,
                         &errcode, &erroff, NULL);
    if (code == NULL) {
        PCRE2_UCHAR msg[120];
        char qn[120], qp[80], qf[120], qm[140], path[100];

        if (pcre2_get_error_message(errcode, msg, sizeof msg) < 0)
            (void)snprintf((char *)msg, sizeof msg, "error %d", errcode);
        (void)snprintf(path, sizeof path, "%s.%s", section, f->name);
        if (l->strict)
            return lfail(l, LATCH_E_INVAL, "%s.%s: pattern does not compile: %s (at offset %zu)",
                         section, f->name, (const char *)msg, (size_t)erroff);
        /*
         * Nango's own file ships patterns that JavaScript rejects as well (freshteam in
         * @nangohq/providers 0.71.10). Such a field fails closed: re_ stays NULL and
         * catalog_field_validate refuses every value for it.
         */
        log_warn("provider pattern does not compile; the field will refuse every value",
                 "file=%s provider=%s field=%s error=%s offset=%zu",
                 log_quote(qn, sizeof qn, l->name), log_quote(qp, sizeof qp, l->provider),
                 log_quote(qf, sizeof qf, path), log_quote(qm, sizeof qm, (const char *)msg),
                 (size_t)erroff);
        return LATCH_OK;
    }
    (void)pcre2_jit_compile(code, PCRE2_JIT_COMPLETE); /* falls back to the interpreter */
    re = arena_alloc(l->c, sizeof *re);
    re->code = code;
    re->mctx = l->c->mctx;
    re->next = l->c->res;
    l->c->res = re;
    f->re_ = re;
    return LATCH_OK;
}

static latch_rc
build_fields(struct loader *l, const json_t *obj, const char *section,
             const struct catalog_field **out, size_t *n_out)
{
    struct catalog_field *fields;
    const char *fname;
    json_t *fo;
    size_t i = 0;
    latch_rc rc;

    *out = NULL;
    *n_out = 0;
    if (obj == NULL || json_is_null(obj))
        return LATCH_OK;
    if (!json_is_object(obj))
        return lfail(l, LATCH_E_INVAL, "%s must be a mapping", section);
    if (json_object_size(obj) == 0)
        return LATCH_OK;
    fields = arena_alloc(l->c, json_object_size(obj) * sizeof *fields);
    json_object_foreach((json_t *)(uintptr_t)obj, fname, fo)
    {
        struct catalog_field *f = &fields[i++];
        const json_t *v;
        char what[160];

        memset(f, 0, sizeof *f);
        f->name = arena_strndup(l->c, fname, strlen(fname));
        f->order = -1;
        if (!json_is_object(fo))
            return lfail(l, LATCH_E_INVAL, "%s.%s must be a mapping", section, fname);
        f->type = get_scalar(l->c, fo, "type");
        if (f->type == NULL)
            f->type = "string";
        f->title = get_scalar(l->c, fo, "title");
        f->description = get_scalar(l->c, fo, "description");
        f->example = get_scalar(l->c, fo, "example");
        f->format = get_scalar(l->c, fo, "format");
        f->default_value = get_scalar(l->c, fo, "default_value");
        f->doc_section = get_scalar(l->c, fo, "doc_section");
        f->prefix = get_scalar(l->c, fo, "prefix");
        f->suffix = get_scalar(l->c, fo, "suffix");
        f->secret = json_is_true(json_object_get(fo, "secret"));
        f->optional = json_is_true(json_object_get(fo, "optional"));
        f->automated = json_is_true(json_object_get(fo, "automated"));
        f->hidden = json_is_true(json_object_get(fo, "hidden"));
        v = json_object_get(fo, "order");
        if (json_is_integer(v) && json_integer_value(v) >= 0 && json_integer_value(v) < 1000000)
            f->order = (int)json_integer_value(v);
        (void)snprintf(what, sizeof what, "%s.%s.enum", section, fname);
        rc = build_list(l, json_object_get(fo, "enum"), what, &f->enum_values, &f->n_enum);
        if (rc != LATCH_OK)
            return rc;
        v = json_object_get(fo, "pattern");
        if (v != NULL && !json_is_null(v)) {
            if (!json_is_string(v))
                return lfail(l, LATCH_E_INVAL, "%s.%s: pattern must be text", section, fname);
            f->pattern = arena_strndup(l->c, json_string_value(v), json_string_length(v));
            rc = compile_pattern(l, f, section);
            if (rc != LATCH_OK)
                return rc;
        }
    }
    *out = fields;
    *n_out = i;
    return LATCH_OK;
}

/* proxy.retry.at / .after: a header name or a list of them (the first is used). */
static const char *
first_text(struct catalog *c, const json_t *v)
{
    if (json_is_array(v))
        v = json_array_get(v, 0);
    if (v == NULL || json_is_object(v) || json_is_array(v))
        return NULL;
    return text_of(c, v);
}

static latch_rc
build_proxy(struct loader *l, struct catalog_provider *p, const json_t *proxy)
{
    const json_t *retry, *codes, *ver;
    size_t i;
    latch_rc rc;

    if (proxy == NULL || json_is_null(proxy))
        return LATCH_OK;
    if (!json_is_object(proxy))
        return lfail(l, LATCH_E_INVAL, "proxy must be a mapping");
    p->proxy_base_url = get_scalar(l->c, proxy, "base_url");
    rc = build_kv(l, json_object_get(proxy, "headers"), "proxy.headers", &p->proxy_headers,
                  &p->n_proxy_headers);
    if (rc != LATCH_OK)
        return rc;
    rc = build_kv(l, json_object_get(proxy, "query"), "proxy.query", &p->proxy_query,
                  &p->n_proxy_query);
    if (rc != LATCH_OK)
        return rc;
    rc = build_list(l, json_object_get(proxy, "allowed_hosts"), "proxy.allowed_hosts",
                    &p->proxy_allowed_hosts, &p->n_proxy_allowed_hosts);
    if (rc != LATCH_OK)
        return rc;
    for (i = 0; i < p->n_proxy_allowed_hosts; i++) {
        const char *h = p->proxy_allowed_hosts[i];

        if (h == NULL || !fields_hostname_ok(h, strlen(h)))
            return lfail(l, LATCH_E_INVAL, "proxy.allowed_hosts[%zu] is not a host name", i);
    }
    ver = json_object_get(proxy, "verification");
    if (json_is_object(ver)) {
        p->verification_method = get_scalar(l->c, ver, "method");
        p->verification_base_url_override = get_scalar(l->c, ver, "base_url_override");
        rc = build_list(l, json_object_get(ver, "endpoints"), "proxy.verification.endpoints",
                        &p->verification_endpoints, &p->n_verification_endpoints);
        if (rc != LATCH_OK)
            return rc;
        rc = build_kv(l, json_object_get(ver, "headers"), "proxy.verification.headers",
                      &p->verification_headers, &p->n_verification_headers);
        if (rc != LATCH_OK)
            return rc;
        if (json_object_get(ver, "data") != NULL && !json_is_null(json_object_get(ver, "data")))
            p->verification_data = text_of(l->c, json_object_get(ver, "data"));
    }
    retry = json_object_get(proxy, "retry");
    if (!json_is_object(retry))
        return LATCH_OK;
    p->proxy_retry_after = first_text(l->c, json_object_get(retry, "after"));
    p->proxy_retry_at = first_text(l->c, json_object_get(retry, "at"));
    codes = json_object_get(retry, "error_code");
    if (json_is_array(codes)) {
        struct buf b;
        const json_t *e;

        buf_init(&b, 1024);
        json_array_foreach(codes, i, e)
        {
            const char *t = json_is_array(e) || json_is_object(e) ? NULL : text_of(l->c, e);

            if (t == NULL)
                continue;
            if ((b.len > 0 && buf_puts(&b, ",") != LATCH_OK) || buf_puts(&b, t) != LATCH_OK) {
                buf_free(&b);
                return lfail(l, LATCH_E_TOO_LARGE, "proxy.retry.error_code is too long");
            }
        }
        if (b.len > 0)
            p->proxy_retry_error_codes = arena_strndup(l->c, b.data, b.len);
        buf_free(&b);
    } else if (codes != NULL && !json_is_object(codes)) {
        p->proxy_retry_error_codes = text_of(l->c, codes);
    }
    return LATCH_OK;
}

static latch_rc
build_provider(struct loader *l, struct catalog_provider *p, const char *name, const json_t *e)
{
    char *dump;
    const json_t *v;
    char reason[400];
    latch_rc rc;

    memset(p, 0, sizeof *p);
    p->name = arena_strndup(l->c, name, strlen(name));
    l->provider = p->name;
    if (!json_is_object(e))
        return lfail(l, LATCH_E_INVAL, "entry must be a mapping");
    p->display_name = get_scalar(l->c, e, "display_name");
    p->auth_mode = get_scalar(l->c, e, "auth_mode");
    p->token_url = get_scalar(l->c, e, "token_url");
    p->scope_separator = get_scalar(l->c, e, "scope_separator");
    p->token_request_auth_method = get_scalar(l->c, e, "token_request_auth_method");
    p->body_format = get_scalar(l->c, e, "body_format");
    p->docs = get_scalar(l->c, e, "docs");
    p->docs_connect = get_scalar(l->c, e, "docs_connect");
    p->setup_guide_url = get_scalar(l->c, e, "setup_guide_url");
    rc = build_kv(l, json_object_get(e, "token_params"), "token_params", &p->token_params,
                  &p->n_token_params);
    if (rc != LATCH_OK)
        return rc;
    p->refresh_url = get_scalar(l->c, e, "refresh_url");
    rc = build_kv(l, json_object_get(e, "refresh_params"), "refresh_params", &p->refresh_params,
                  &p->n_refresh_params);
    if (rc != LATCH_OK)
        return rc;
    rc = build_kv(l, json_object_get(e, "token_headers"), "token_headers", &p->token_headers,
                  &p->n_token_headers);
    if (rc != LATCH_OK)
        return rc;
    p->token_request_method = get_scalar(l->c, e, "token_request_method");
    p->authorization_url = get_scalar(l->c, e, "authorization_url");
    rc = build_kv(l, json_object_get(e, "authorization_params"), "authorization_params",
                  &p->authorization_params, &p->n_authorization_params);
    if (rc == LATCH_OK)
        rc = build_list(l, json_object_get(e, "default_scopes"), "default_scopes",
                        &p->default_scopes, &p->n_default_scopes);
    if (rc == LATCH_OK)
        rc = build_list(l, json_object_get(e, "token_response_metadata"), "token_response_metadata",
                        &p->token_response_metadata, &p->n_token_response_metadata);
    if (rc == LATCH_OK)
        rc = build_list(l, json_object_get(e, "redirect_uri_metadata"), "redirect_uri_metadata",
                        &p->redirect_uri_metadata, &p->n_redirect_uri_metadata);
    if (rc != LATCH_OK)
        return rc;
    p->authorization_method = get_scalar(l->c, e, "authorization_method");
    p->disable_pkce = json_is_true(json_object_get(e, "disable_pkce"));
    p->expires_in_unit = get_scalar(l->c, e, "expires_in_unit");
    p->post_connection_script = get_scalar(l->c, e, "post_connection_script");
    p->credentials_verification_script = get_scalar(l->c, e, "credentials_verification_script");
    p->token_expires_in_ms = -1;
    v = json_object_get(e, "token_expires_in_ms");
    if (json_is_integer(v) && json_integer_value(v) > 0 &&
        json_integer_value(v) <= (json_int_t)CATALOG_MAX_SECONDS * 1000)
        p->token_expires_in_ms = json_integer_value(v);
    v = json_object_get(e, "token_response");
    if (json_is_object(v)) {
        p->token_response_token = get_scalar(l->c, v, "token");
        if (p->token_response_token != NULL && p->token_response_token[0] == '\0')
            p->token_response_token = NULL;
        p->token_response_expiration = get_scalar(l->c, v, "token_expiration");
        p->token_expiration_strategy = get_scalar(l->c, v, "token_expiration_strategy");
    }
    rc = build_proxy(l, p, json_object_get(e, "proxy"));
    if (rc != LATCH_OK)
        return rc;
    rc = get_seconds(l, e, "token_expiration_buffer", &p->token_expiration_buffer_s);
    if (rc != LATCH_OK)
        return rc;
    rc = get_seconds(l, e, "default_expires_in", &p->default_expires_in_s);
    if (rc != LATCH_OK)
        return rc;
    rc = build_fields(l, json_object_get(e, "connection_config"), "connection_config",
                      &p->connection_config, &p->n_connection_config);
    if (rc != LATCH_OK)
        return rc;
    rc = build_fields(l, json_object_get(e, "credentials"), "credentials", &p->credentials,
                      &p->n_credentials);
    if (rc != LATCH_OK)
        return rc;
    catalog_compute_lands(p);
    dump = json_dumps(e, JSON_COMPACT);
    if (dump == NULL)
        return lfail(l, LATCH_E_INTERNAL, "cannot serialise the entry as JSON");
    p->json = arena_strndup(l->c, dump, strlen(dump));
    free(dump);
    p->linkable = catalog_assess_linkable(p, reason, sizeof reason);
    if (!p->linkable)
        p->unlinkable_reason = arena_strndup(l->c, reason, strlen(reason));
    return LATCH_OK;
}

static int
cmp_provider(const void *a, const void *b)
{
    const struct catalog_provider *const *pa = a;
    const struct catalog_provider *const *pb = b;

    return strcmp((*pa)->name, (*pb)->name);
}

/* YAML text -> a mapping of provider entries (*root owned). */
static latch_rc
parse_root(const char *yaml, size_t len, const char *name, json_t **root, struct latch_err *err)
{
    latch_rc rc;

    *root = NULL;
    if (yaml == NULL) {
        latch_err_set(err, "%s: no data", name);
        return LATCH_E_INVAL;
    }
    if (len > LATCH_MAX_CATALOG_BYTES) {
        latch_err_set(err, "%s: larger than %d bytes", name, LATCH_MAX_CATALOG_BYTES);
        return LATCH_E_TOO_LARGE;
    }
    rc = yaml_to_json(yaml, len, name, root, err);
    if (rc != LATCH_OK)
        return rc;
    if (!json_is_object(*root)) {
        latch_err_set(err, "%s: the top level must be a mapping of provider names", name);
        json_decref(*root);
        *root = NULL;
        return LATCH_E_INVAL;
    }
    return LATCH_OK;
}

/*
 * Nango's `alias: other`: the entry is other's entry with the alias's own keys over it (a
 * shallow merge, as Nango's getProvider does). Chains are followed up to
 * CATALOG_MAX_ALIAS_DEPTH; a dangling or circular alias fails the load.
 */
static latch_rc
resolve_aliases(json_t *root, const char *name, struct latch_err *err)
{
    for (int pass = 0; pass <= CATALOG_MAX_ALIAS_DEPTH; pass++) {
        const char *key;
        json_t *entry;
        size_t pending = 0, done = 0;
        json_t *keys = json_array();

        json_object_foreach(root, key, entry) if (json_is_object(entry) &&
                                                  json_object_get(entry, "alias") != NULL)
            json_array_append_new(keys, json_string(key));
        for (size_t i = 0; i < json_array_size(keys); i++) {
            const char *k = json_string_value(json_array_get(keys, i));
            json_t *e = json_object_get(root, k);
            const char *target = json_string_value(json_object_get(e, "alias"));
            json_t *base = target != NULL ? json_object_get(root, target) : NULL;
            json_t *merged;

            if (!json_is_object(base) || strcmp(target, k) == 0) {
                latch_err_set(err, "%s: provider '%.60s': alias '%.60s' names no provider", name, k,
                              target != NULL ? target : "(not text)");
                json_decref(keys);
                return LATCH_E_INVAL;
            }
            if (json_object_get(base, "alias") != NULL) {
                pending++; /* its target first, in a later pass */
                continue;
            }
            merged = json_deep_copy(base);
            json_object_update(merged, e);
            json_object_del(merged, "alias");
            json_object_set_new(root, k, merged);
            done++;
        }
        json_decref(keys);
        if (pending == 0)
            return LATCH_OK;
        if (done == 0)
            break;
    }
    latch_err_set(err, "%s: aliases nested too deeply or circular", name);
    return LATCH_E_INVAL;
}

/*
 * Builds the catalogue from a resolved root (stolen). Patterns fail the load when strict, or
 * when the entry's name is in strict_names (latch's overlay); otherwise they fail closed.
 */
static latch_rc
build_catalog(json_t *root, const char *name, bool strict, const json_t *strict_names,
              const char *origin, struct catalog **out, struct latch_err *err)
{
    struct catalog *c = xcalloc(1, sizeof *c);
    struct loader l;
    const char *pname;
    json_t *entry;
    size_t i = 0, n;
    latch_rc rc = LATCH_OK;

    c->root = root;
    n = json_object_size(c->root);
    if (n > LATCH_MAX_PROVIDERS) {
        latch_err_set(err, "%s: more than %d providers", name, LATCH_MAX_PROVIDERS);
        rc = LATCH_E_TOO_LARGE;
        goto out;
    }
    c->mctx = pcre2_match_context_create(NULL);
    if (c->mctx == NULL) {
        rc = LATCH_E_NOMEM;
        goto out;
    }
    (void)pcre2_set_match_limit(c->mctx, CATALOG_RE_MATCH_LIMIT);
    (void)pcre2_set_depth_limit(c->mctx, CATALOG_RE_DEPTH_LIMIT);
    (void)pcre2_set_heap_limit(c->mctx, CATALOG_RE_HEAP_LIMIT_KIB);
    c->origin = arena_strndup(c, origin, strlen(origin));
    c->providers = arena_alloc(c, (n ? n : 1) * sizeof *c->providers);
    c->by_name = arena_alloc(c, (n ? n : 1) * sizeof(const struct catalog_provider *));
    l.c = c;
    l.name = name;
    l.err = err;
    json_object_foreach(c->root, pname, entry)
    {
        l.strict = strict || json_object_get(strict_names, pname) != NULL;
        rc = build_provider(&l, &c->providers[i], pname, entry);
        if (rc != LATCH_OK)
            goto out;
        c->by_name[i] = &c->providers[i];
        i++;
    }
    c->n_providers = i;
    qsort(c->by_name, c->n_providers, sizeof(const struct catalog_provider *), cmp_provider);
    /* every string the providers keep lives in the arena now: the parsed tree (several MB for
     * Nango's whole catalogue) is not needed after the load */
    json_decref(c->root);
    c->root = NULL;
    *out = c;
    c = NULL;
out:
    catalog_free(c);
    return rc;
}

static latch_rc
load(const char *yaml, size_t len, const char *name, bool strict, struct catalog **out,
     struct latch_err *err)
{
    json_t *root = NULL;
    char origin[300];
    latch_rc rc;

    if (out == NULL)
        return LATCH_E_INVAL;
    *out = NULL;
    if (name == NULL)
        name = "providers.yaml";
    rc = parse_root(yaml, len, name, &root, err);
    if (rc == LATCH_OK)
        rc = resolve_aliases(root, name, err);
    if (rc != LATCH_OK) {
        json_decref(root);
        return rc;
    }
    (void)snprintf(origin, sizeof origin, "%s", name);
    return build_catalog(root, name, strict, NULL, origin, out, err);
}

/*
 * dst[key] = src deep-merged over dst[key]: objects merge member by member (so upstream's
 * proxy.verification survives an overlay entry that refines zendesk-api-key's fields); arrays and
 * scalars of src replace. Depth is bounded by the YAML loader's nesting limit.
 */
static void
deep_merge(json_t *dst, const char *key, json_t *src)
{
    json_t *d = json_object_get(dst, key);
    const char *k;
    json_t *v;

    if (!json_is_object(d) || !json_is_object(src)) {
        json_object_set(dst, key, src);
        return;
    }
    json_object_foreach(src, k, v) deep_merge(d, k, v);
}

latch_rc
catalog_load_layers(const char *base, size_t base_len, const char *base_name, const char *overlay,
                    size_t overlay_len, const char *overlay_name, const char *origin,
                    struct catalog **out, struct latch_err *err)
{
    json_t *root = NULL, *over = NULL;
    latch_rc rc;

    if (out == NULL)
        return LATCH_E_INVAL;
    *out = NULL;
    if (base_name == NULL)
        base_name = "providers.yaml (upstream)";
    if (overlay_name == NULL)
        overlay_name = "providers.yaml";
    if (origin == NULL)
        origin = overlay_name;
    rc = parse_root(overlay, overlay_len, overlay_name, &over, err);
    if (rc != LATCH_OK)
        return rc;
    if (base == NULL || base_len == 0) {
        rc = resolve_aliases(over, overlay_name, err);
        if (rc != LATCH_OK) {
            json_decref(over);
            return rc;
        }
        return build_catalog(over, overlay_name, true, NULL, origin, out, err);
    }
    rc = parse_root(base, base_len, base_name, &root, err);
    if (rc != LATCH_OK) {
        json_decref(over);
        return rc;
    }
    /* overlay entries are deep-merged over upstream entries of the same name */
    {
        const char *k;
        json_t *e;

        json_object_foreach(over, k, e) deep_merge(root, k, e);
    }
    rc = resolve_aliases(root, base_name, err);
    if (rc == LATCH_OK)
        rc = build_catalog(root, base_name, false, over, origin, out, err);
    else
        json_decref(root);
    json_decref(over);
    return rc;
}

/* In-memory catalogues (latch's own, tests): a pattern that does not compile fails the load. */
latch_rc
catalog_load_buffer(const char *yaml, size_t len, const char *name, struct catalog **out,
                    struct latch_err *err)
{
    return load(yaml, len, name, true, out, err);
}

/*
 * Operator files (LATCH_PROVIDERS_FILE), typically Nango's own providers.yaml: one broken
 * pattern upstream must not stop latch, so such a field is logged and fails closed instead.
 */
latch_rc
catalog_load_file(const char *path, struct catalog **out, struct latch_err *err)
{
    FILE *fp = NULL;
    char *data = NULL;
    size_t len = 0;
    latch_rc rc;

    if (out == NULL || path == NULL)
        return LATCH_E_INVAL;
    *out = NULL;
    fp = fopen(path, "rb");
    if (fp == NULL) {
        latch_err_set(err, "%s: cannot open", path);
        rc = LATCH_E_IO;
        goto out;
    }
    data = xmalloc((size_t)LATCH_MAX_CATALOG_BYTES + 1);
    len = fread(data, 1, (size_t)LATCH_MAX_CATALOG_BYTES + 1, fp);
    if (ferror(fp)) {
        latch_err_set(err, "%s: read error", path);
        rc = LATCH_E_IO;
        goto out;
    }
    if (len > LATCH_MAX_CATALOG_BYTES) {
        latch_err_set(err, "%s: larger than %d bytes", path, LATCH_MAX_CATALOG_BYTES);
        rc = LATCH_E_TOO_LARGE;
        goto out;
    }
    rc = load(data, len, path, false, out, err);
out:
    free(data);
    if (fp != NULL)
        (void)fclose(fp);
    return rc;
}

latch_rc
catalog_load_default(struct catalog **out, struct latch_err *err)
{
    return catalog_load_layers((const char *)catalog_upstream_yaml, catalog_upstream_yaml_len,
                               "@nangohq/providers providers.yaml (built in)",
                               (const char *)catalog_default_yaml, catalog_default_yaml_len,
                               "providers.yaml (built in)", catalog_source_text, out, err);
}

const char *
catalog_builtin_origin(void)
{
    return catalog_source_text;
}

const char *
catalog_origin(const struct catalog *c)
{
    return c != NULL && c->origin != NULL ? c->origin : "";
}

const char *
catalog_display_name(const struct catalog_provider *p)
{
    if (p == NULL)
        return "the provider";
    return p->display_name != NULL && p->display_name[0] != '\0' ? p->display_name : p->name;
}

void
catalog_free(struct catalog *c)
{
    struct catalog_re *re;

    if (c == NULL)
        return;
    for (re = c->res; re != NULL; re = re->next)
        pcre2_code_free(re->code);
    pcre2_match_context_free(c->mctx);
    json_decref(c->root);
    arena_free(c->arena);
    free(c);
}

size_t
catalog_count(const struct catalog *c)
{
    return c != NULL ? c->n_providers : 0;
}

const struct catalog_provider *
catalog_at(const struct catalog *c, size_t i)
{
    if (c == NULL || i >= c->n_providers)
        return NULL;
    return &c->providers[i];
}

const struct catalog_provider *
catalog_find(const struct catalog *c, const char *name)
{
    struct catalog_provider key;
    const struct catalog_provider *kp = &key;
    const struct catalog_provider *const *hit;

    if (c == NULL || name == NULL || c->n_providers == 0)
        return NULL;
    key.name = name;
    hit = bsearch(&kp, c->by_name, c->n_providers, sizeof(const struct catalog_provider *),
                  cmp_provider);
    return hit != NULL ? *hit : NULL;
}

const struct catalog_field *
catalog_find_field(const struct catalog_field *fields, size_t n, const char *name)
{
    size_t i;

    if (fields == NULL || name == NULL)
        return NULL;
    for (i = 0; i < n; i++)
        if (strcmp(fields[i].name, name) == 0)
            return &fields[i];
    return NULL;
}
