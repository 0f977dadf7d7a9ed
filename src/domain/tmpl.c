/*
 * tmpl.c - the ${...} template interpreter (see tmpl.h for the grammar).
 *
 * One recursive-descent pass both checks the syntax of the whole template and evaluates it
 * straight into the caller's buffer. Each alternative of a `||` list is evaluated in turn:
 * an alternative that hits an unset variable is rolled back (the output length is reset to
 * where it started) and the rest of it is only parsed. Alternatives after the chosen one
 * are parsed too, so a syntax error anywhere is reported whatever the input values are.
 *
 * Recursion depth is bounded by LATCH_MAX_TMPL_DEPTH (each "${" is one level), input by
 * TMPL_MAX_INPUT and output by out_size. No global state: thread-safe.
 */
#include "domain/tmpl.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/latch_limits.h"
#include "util/b64.h"
#include "util/xalloc.h"

/* Longest template accepted (tmpl.h promises 4096). */
#define TMPL_MAX_INPUT 4096
/* Longest variable or function name inside ${...}. */
#define TMPL_MAX_NAME 128

struct tp {
    const char *s;
    size_t len;
    size_t pos;
    tmpl_lookup_fn lookup;
    void *ud;
    char *out;
    size_t out_size;
    size_t out_len;
    int depth;
    bool raw_authority; /* TMPL_URL_RAW_AUTHORITY */
    size_t alt_mark;    /* out_len where the current top-level alternative's output began */
    bool have_missing;
    char missing[TMPL_MAX_NAME + 1];
    struct latch_err *err;
};

static latch_rc parse_template(struct tp *p, bool top, bool emit, bool encode, bool *resolved);

static bool
is_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
}

static bool
is_space(char c)
{
    return c == ' ' || c == '\t';
}

static bool
at(const struct tp *p, size_t off, char c)
{
    return p->pos + off < p->len && p->s[p->pos + off] == c;
}

static bool
at_alt_sep(const struct tp *p)
{
    return at(p, 0, '|') && at(p, 1, '|');
}

static bool
at_placeholder(const struct tp *p)
{
    return at(p, 0, '$') && at(p, 1, '{');
}

/*
 * encodeURIComponent keeps A-Z a-z 0-9 - _ . ! ~ * ' ( ) and escapes every other byte; ':' is
 * kept too (Nango substitutes values raw: telegram's bot${apiKey} has one): in a path or query it
 * is plain data (RFC 3986), and a value that lands in a host was checked for that place first
 * (catalog_field_validate: DNS labels only).
 */
static bool
uri_unreserved(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.' || c == '!' || c == '~' || c == '*' || c == '\'' || c == '(' ||
           c == ')' || c == ':';
}

/*
 * True for a top-level placeholder that begins its alternative's output or follows only its
 * "http://" / "https://": with TMPL_URL_RAW_AUTHORITY its value (a whole base URL, or a
 * host[:port][/path] such as adoxx-cc's "yourcompany.com:8000/ADOXX") goes in as is.
 */
static bool
authority_start(const struct tp *p)
{
    const char *o = p->out + p->alt_mark;
    size_t n = p->out_len - p->alt_mark;

    if (!p->raw_authority || p->depth != 1)
        return false;
    return n == 0 || (n == 7 && strncasecmp(o, "http://", 7) == 0) ||
           (n == 8 && strncasecmp(o, "https://", 8) == 0);
}

static latch_rc
too_large(struct tp *p)
{
    latch_err_set(p->err, "template output exceeds %zu bytes", p->out_size - 1);
    return LATCH_E_TOO_LARGE;
}

static latch_rc
emit_bytes(struct tp *p, const char *d, size_t n, bool encode)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t i;

    if (!encode) {
        if (n >= p->out_size - p->out_len)
            return too_large(p);
        memcpy(p->out + p->out_len, d, n);
        p->out_len += n;
        p->out[p->out_len] = '\0';
        return LATCH_OK;
    }
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)d[i];
        size_t need = uri_unreserved(c) ? 1 : 3;

        if (need >= p->out_size - p->out_len)
            return too_large(p);
        if (need == 1) {
            p->out[p->out_len++] = (char)c;
        } else {
            p->out[p->out_len++] = '%';
            p->out[p->out_len++] = hex[c >> 4];
            p->out[p->out_len++] = hex[c & 0x0f];
        }
    }
    p->out[p->out_len] = '\0';
    return LATCH_OK;
}

static void
rollback(struct tp *p, size_t mark)
{
    if (p->out_len > mark)
        explicit_bzero(p->out + mark, p->out_len - mark);
    p->out_len = mark;
    p->out[mark] = '\0';
}

static latch_rc
syntax(struct tp *p, const char *what)
{
    latch_err_set(p->err, "template: %s at offset %zu", what, p->pos);
    return LATCH_E_INVAL;
}

static latch_rc
unterminated(struct tp *p, size_t start)
{
    latch_err_set(p->err, "template: unterminated ${ at offset %zu", start);
    return LATCH_E_INVAL;
}

static void
skip_spaces(struct tp *p)
{
    while (p->pos < p->len && is_space(p->s[p->pos]))
        p->pos++;
}

/* base64(arg): arg is evaluated in place, then replaced by its encoding. */
static latch_rc
call_base64(struct tp *p, size_t start, bool emit, bool encode, bool *ok)
{
    size_t mark = p->out_len;
    bool resolved = true;
    latch_rc rc;

    rc = parse_template(p, false, emit, false, &resolved);
    if (rc != LATCH_OK)
        return rc;
    if (p->pos >= p->len)
        return unterminated(p, start);
    if (p->s[p->pos] == ',')
        return syntax(p, "base64() takes exactly one argument");
    p->pos++; /* ')' */
    if (!emit)
        return LATCH_OK;
    if (!resolved) {
        *ok = false;
        rollback(p, mark);
        return LATCH_OK;
    }
    {
        size_t n = p->out_len - mark;
        size_t enc_size = b64_encoded_size(n);
        char *raw = xmemdup(p->out + mark, n ? n : 1);
        char *enc = xmalloc(enc_size);

        rollback(p, mark);
        rc = b64_encode(raw, n, enc, enc_size);
        if (rc == LATCH_OK)
            rc = emit_bytes(p, enc, strlen(enc), encode);
        else
            latch_err_set(p->err, "template: base64 failed");
        explicit_bzero(raw, n ? n : 1);
        explicit_bzero(enc, enc_size);
        free(raw);
        free(enc);
    }
    return rc;
}

/* At "${": parses one placeholder; clears *ok when a variable it needs is unset. */
static latch_rc
parse_placeholder(struct tp *p, bool emit, bool encode, bool *ok)
{
    size_t start = p->pos;
    char name[TMPL_MAX_NAME + 1];
    size_t name_start, name_len;
    latch_rc rc = LATCH_OK;

    if (p->depth >= LATCH_MAX_TMPL_DEPTH) {
        latch_err_set(p->err, "template: nesting deeper than %d at offset %zu",
                      LATCH_MAX_TMPL_DEPTH, start);
        return LATCH_E_TOO_LARGE;
    }
    p->depth++;
    p->pos += 2;
    skip_spaces(p);
    name_start = p->pos;
    while (p->pos < p->len && is_name_char(p->s[p->pos]))
        p->pos++;
    name_len = p->pos - name_start;
    if (name_len == 0) {
        if (p->pos >= p->len)
            rc = unterminated(p, start);
        else if (p->s[p->pos] == '}')
            rc = syntax(p, "empty ${}");
        else
            rc = syntax(p, "unexpected character in ${...}");
        goto out;
    }
    if (name_len > TMPL_MAX_NAME) {
        rc = syntax(p, "name too long in ${...}");
        goto out;
    }
    memcpy(name, p->s + name_start, name_len);
    name[name_len] = '\0';
    skip_spaces(p);
    if (p->pos >= p->len) {
        rc = unterminated(p, start);
        goto out;
    }
    if (p->s[p->pos] == '(') {
        if (strcmp(name, "base64") != 0) {
            latch_err_set(p->err, "template: unknown function '%s' at offset %zu", name,
                          name_start);
            rc = LATCH_E_INVAL;
            goto out;
        }
        p->pos++;
        rc = call_base64(p, start, emit, encode, ok);
        if (rc != LATCH_OK)
            goto out;
        skip_spaces(p);
        if (p->pos >= p->len) {
            rc = unterminated(p, start);
            goto out;
        }
    } else if (p->s[p->pos] == '}' && emit) {
        const char *v = p->lookup != NULL ? p->lookup(name, p->ud) : NULL;

        if (v == NULL || v[0] == '\0') {
            *ok = false;
            if (!p->have_missing) {
                p->have_missing = true;
                memcpy(p->missing, name, name_len + 1);
            }
        } else {
            rc = emit_bytes(p, v, strlen(v), encode && !authority_start(p));
            if (rc != LATCH_OK)
                goto out;
        }
    }
    if (p->s[p->pos] != '}') {
        rc = syntax(p, p->s[p->pos] == ':' ? "unsupported expression in ${...}"
                                           : "expected } to close ${");
        goto out;
    }
    p->pos++;
out:
    p->depth--;
    return rc;
}

/*
 * One alternative: text and placeholders up to "||", the end, or (inside function arguments)
 * ',' or ')'. Literal whitespace at both ends of an alternative is trimmed.
 */
static latch_rc
parse_alt(struct tp *p, bool top, bool emit, bool encode, bool *ok)
{
    bool first = true;
    latch_rc rc;

    for (;;) {
        size_t b, e;

        if (p->pos >= p->len || at_alt_sep(p))
            return LATCH_OK;
        if (!top && (p->s[p->pos] == ',' || p->s[p->pos] == ')'))
            return LATCH_OK;
        if (at_placeholder(p)) {
            rc = parse_placeholder(p, emit && *ok, encode, ok);
            if (rc != LATCH_OK)
                return rc;
            first = false;
            continue;
        }
        b = p->pos;
        while (p->pos < p->len && !at_placeholder(p) && !at_alt_sep(p)) {
            char c = p->s[p->pos];

            if (!top && (c == ',' || c == ')'))
                break;
            if (!top && c == '}')
                return syntax(p, "unexpected } inside function arguments");
            p->pos++;
        }
        e = p->pos;
        if (first)
            while (b < e && is_space(p->s[b]))
                b++;
        if (p->pos >= p->len || at_alt_sep(p) ||
            (!top && (p->s[p->pos] == ',' || p->s[p->pos] == ')')))
            while (e > b && is_space(p->s[e - 1]))
                e--;
        if (emit && *ok && e > b) {
            rc = emit_bytes(p, p->s + b, e - b, false);
            if (rc != LATCH_OK)
                return rc;
        }
        first = false;
    }
}

/* alt ( "||" alt )*: *resolved says whether some alternative had all its variables set. */
static latch_rc
parse_template(struct tp *p, bool top, bool emit, bool encode, bool *resolved)
{
    bool chosen = false;
    bool had_missing = p->have_missing;
    latch_rc rc;

    for (;;) {
        size_t mark = p->out_len;
        bool ok = true;
        bool live = emit && !chosen;

        if (top)
            p->alt_mark = mark;
        rc = parse_alt(p, top, live, encode, &ok);
        if (rc != LATCH_OK)
            return rc;
        if (live) {
            if (ok)
                chosen = true;
            else
                rollback(p, mark);
        }
        if (!at_alt_sep(p))
            break;
        p->pos += 2;
    }
    /* a variable that a later alternative made up for is not the one to report */
    if (chosen && !had_missing)
        p->have_missing = false;
    *resolved = emit ? chosen : true;
    return LATCH_OK;
}

latch_rc
tmpl_eval(const char *tmpl, tmpl_lookup_fn lookup, void *ud, unsigned flags, char *out,
          size_t out_size, struct latch_err *err)
{
    struct tp p;
    bool resolved = false;
    latch_rc rc;

    if (out == NULL || out_size == 0) {
        latch_err_set(err, "template: no output buffer");
        return LATCH_E_INVAL;
    }
    out[0] = '\0';
    if (tmpl == NULL) {
        latch_err_set(err, "template: missing");
        return LATCH_E_INVAL;
    }
    memset(&p, 0, sizeof p);
    p.s = tmpl;
    p.len = strnlen(tmpl, TMPL_MAX_INPUT + 1);
    if (p.len > TMPL_MAX_INPUT) {
        latch_err_set(err, "template longer than %d bytes", TMPL_MAX_INPUT);
        return LATCH_E_TOO_LARGE;
    }
    p.lookup = lookup;
    p.ud = ud;
    p.out = out;
    p.out_size = out_size;
    p.err = err;
    p.raw_authority = (flags & TMPL_URL_RAW_AUTHORITY) != 0;

    rc = parse_template(&p, true, true, (flags & TMPL_URL_ENCODE) != 0, &resolved);
    if (rc != LATCH_OK)
        goto out;
    if (p.pos != p.len) {
        /* parse_template stops only at the end at top level; anything else is a bug */
        rc = syntax(&p, "unexpected input");
        goto out;
    }
    if (!resolved) {
        latch_err_set(err, "missing parameter: %s", p.have_missing ? p.missing : "(unknown)");
        rc = LATCH_E_INVAL;
        goto out;
    }
out:
    if (rc != LATCH_OK)
        rollback(&p, 0);
    return rc;
}

int
tmpl_has_placeholders(const char *tmpl)
{
    return tmpl != NULL && strstr(tmpl, "${") != NULL;
}
