/*
 * fields.c - validation of connection_config and credentials values against their catalogue
 * field (catalog_field_validate, declared in catalog.h): length, control characters, enum,
 * pattern (PCRE2 with the catalogue's ReDoS limits) and format (hostname, uuid, email, uri),
 * then the shape of the place the value lands in a URL template (catalog_compute_lands): a host
 * part takes DNS labels, a path part one plain segment, whatever the field's own pattern allows.
 */
#include "domain/fields.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "domain/catalog.h"

/* Longest value catalog_field_validate accepts, in bytes. */
#define CATALOG_MAX_VALUE_LEN 1024

static bool
is_alnum(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
}

static bool
is_hex(char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

bool
fields_hostname_ok(const char *s, size_t n)
{
    size_t i, label = 0;

    if (n == 0 || n > 253)
        return false;
    for (i = 0; i < n; i++) {
        char ch = s[i];

        if (ch == '.') {
            if (label == 0 || s[i - 1] == '-')
                return false;
            label = 0;
            continue;
        }
        if (!is_alnum(ch) && ch != '-')
            return false;
        if (ch == '-' && label == 0)
            return false;
        if (++label > 63)
            return false;
    }
    return label > 0 && s[n - 1] != '-';
}

static bool
uuid_ok(const char *s, size_t n)
{
    size_t i;

    if (n != 36)
        return false;
    for (i = 0; i < n; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return false;
        } else if (!is_hex(s[i])) {
            return false;
        }
    }
    return true;
}

static bool
email_ok(const char *s, size_t n)
{
    const char *at = memchr(s, '@', n);
    size_t i, local;

    if (at == NULL)
        return false;
    local = (size_t)(at - s);
    if (local == 0 || local > 64 || s[0] == '.' || s[local - 1] == '.')
        return false;
    for (i = 0; i < local; i++) {
        char ch = s[i];

        if (ch == '.' && s[i + 1] == '.')
            return false;
        if (!is_alnum(ch) && strchr(".!#$%&'*+/=?^_`{|}~-", ch) == NULL)
            return false;
    }
    return memchr(at + 1, '.', n - local - 1) != NULL && fields_hostname_ok(at + 1, n - local - 1);
}

/* An absolute http(s) URL with a non-empty host, the way `new URL()` would need it. */
static bool
uri_ok(const char *s, size_t n)
{
    size_t i, a, host_b, host_e;

    if (n > 8 && strncasecmp(s, "https://", 8) == 0)
        a = 8;
    else if (n > 7 && strncasecmp(s, "http://", 7) == 0)
        a = 7;
    else
        return false;
    for (i = 0; i < n; i++)
        if (strchr(" \"<>\\^`{|}", s[i]) != NULL)
            return false;
    host_b = a;
    for (i = a; i < n && s[i] != '/' && s[i] != '?' && s[i] != '#'; i++)
        if (s[i] == '@')
            host_b = i + 1;
    host_e = i;
    if (host_b < host_e && s[host_b] == '[') {
        for (i = host_b + 1; i < host_e && s[i] != ']'; i++)
            if (!is_hex(s[i]) && s[i] != ':' && s[i] != '.')
                return false;
        if (i >= host_e || i == host_b + 1)
            return false;
        i++;
    } else {
        for (i = host_b; i < host_e && s[i] != ':'; i++)
            if (!is_alnum(s[i]) && strchr(".-_~%", s[i]) == NULL)
                return false;
        if (i == host_b)
            return false;
    }
    if (i < host_e) {
        size_t digits = 0;
        long port = 0;

        if (s[i] != ':')
            return false;
        for (i++; i < host_e; i++, digits++) {
            if (s[i] < '0' || s[i] > '9' || digits >= 5)
                return false;
            port = port * 10 + (s[i] - '0');
        }
        if (port > 65535)
            return false;
    }
    return true;
}

/* 0 = fine, 1 = control character, 2 = not UTF-8. */
static int
scan_text(const unsigned char *s, size_t n)
{
    size_t i = 0;

    while (i < n) {
        unsigned char ch = s[i];
        uint32_t cp;
        size_t k, extra;

        if (ch < 0x80) {
            if (ch < 0x20 || ch == 0x7f)
                return 1;
            i++;
            continue;
        }
        if (ch >= 0xc2 && ch <= 0xdf) {
            extra = 1;
            cp = ch & 0x1f;
        } else if (ch >= 0xe0 && ch <= 0xef) {
            extra = 2;
            cp = ch & 0x0f;
        } else if (ch >= 0xf0 && ch <= 0xf4) {
            extra = 3;
            cp = ch & 0x07;
        } else {
            return 2;
        }
        if (n - i <= extra)
            return 2;
        for (k = 1; k <= extra; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return 2;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((extra == 2 && cp < 0x800) || (extra == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return 2;
        if (cp >= 0x80 && cp <= 0x9f)
            return 1;
        i += extra + 1;
    }
    return 0;
}

static latch_rc
enum_error(const struct catalog_field *f, const char *title, struct latch_err *err)
{
    char list[sizeof err->msg];
    size_t used = 0, i;

    list[0] = '\0';
    for (i = 0; i < f->n_enum; i++) {
        const char *v = f->enum_values[i] != NULL ? f->enum_values[i] : "";
        int w = snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", v);

        if (w < 0 || (size_t)w >= sizeof list - used - 4) {
            list[used] = '\0';
            (void)snprintf(list + used, sizeof list - used, "%s...", i ? ", " : "");
            break;
        }
        used += (size_t)w;
    }
    latch_err_set(err, "%s must be one of: %s", title, list);
    return LATCH_E_INVAL;
}

/* ---- where a value lands in a URL template ---- */

/* DNS labels of letters, digits, '-' and '_' joined by single dots (a host or a part of one). */
static bool
host_part_ok(const char *s, size_t n)
{
    size_t label = 0;

    if (n == 0 || n > 253)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '.') {
            if (label == 0)
                return false;
            label = 0;
            continue;
        }
        if (!is_alnum(s[i]) && s[i] != '-' && s[i] != '_')
            return false;
        if (++label > 63)
            return false;
    }
    return label > 0;
}

/* One path segment: not empty, not "." or "..", nothing that ends or escapes a segment. */
static bool
segment_ok(const char *s, size_t n)
{
    if (n == 0 || (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];

        if (ch <= 0x20 || ch == 0x7f || strchr("/\\?#%", ch) != NULL)
            return false;
    }
    return true;
}

/* host[:port][/segment...], optionally one trailing '/'. */
static bool
hostpath_ok(const char *s, size_t n, bool trailing_slash)
{
    size_t h = 0, i;

    while (h < n && s[h] != ':' && s[h] != '/')
        h++;
    if (!host_part_ok(s, h))
        return false;
    i = h;
    if (i < n && s[i] == ':') {
        size_t d = ++i;

        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == d || i - d > 5)
            return false;
    }
    while (i < n) {
        size_t st;

        if (s[i] != '/')
            return false;
        st = ++i;
        while (i < n && s[i] != '/')
            i++;
        if (i == st && i == n && trailing_slash)
            return true;
        if (!segment_ok(s + st, i - st))
            return false;
    }
    return true;
}

static latch_rc
lands_validate(const struct catalog_field *f, const char *title, const char *v, size_t n,
               struct latch_err *err)
{
    if ((f->lands & CATALOG_LANDS_URL) != 0) {
        size_t sk = strncasecmp(v, "https://", 8) == 0  ? 8
                    : strncasecmp(v, "http://", 7) == 0 ? 7
                                                        : 0;

        if (sk == 0 || !hostpath_ok(v + sk, n - sk, true)) {
            latch_err_set(err,
                          "%s must be an address such as https://host.example.com/path: a host "
                          "name, an optional port and plain path segments",
                          title);
            return LATCH_E_INVAL;
        }
    }
    if ((f->lands & CATALOG_LANDS_HOSTPATH) != 0 && !hostpath_ok(v, n, false)) {
        latch_err_set(err,
                      "%s must be a host name such as host.example.com, optionally with a port "
                      "and plain path segments, with no scheme, '@', '?', '#' or '\\'",
                      title);
        return LATCH_E_INVAL;
    }
    if ((f->lands & CATALOG_LANDS_HOST) != 0 && !host_part_ok(v, n)) {
        latch_err_set(err,
                      "%s becomes part of the provider's host name: use only letters, digits, "
                      "'-' and '.'",
                      title);
        return LATCH_E_INVAL;
    }
    if ((f->lands & CATALOG_LANDS_PATH) != 0 && !segment_ok(v, n)) {
        latch_err_set(err,
                      "%s becomes one segment of the provider's URL path: it must not contain "
                      "'/', '\\', '?', '#', '%%' or spaces, nor be '.' or '..'",
                      title);
        return LATCH_E_INVAL;
    }
    return LATCH_OK;
}

static struct catalog_field *
lands_field(struct catalog_provider *p, const char *name, size_t n)
{
    char key[128];
    const char *fname = NULL;
    const struct catalog_field *f;
    bool cred = false;

    if (n >= sizeof key)
        return NULL;
    memcpy(key, name, n);
    key[n] = '\0';
    if (strncmp(key, "connectionConfig.", 17) == 0) {
        fname = key + 17;
    } else if (strncmp(key, "credentials.", 12) == 0) {
        fname = key + 12;
        cred = true;
    } else if (strcmp(key, "apiKey") == 0 || strcmp(key, "username") == 0 ||
               strcmp(key, "password") == 0) {
        fname = key;
        cred = true;
    } else {
        return NULL;
    }
    f = cred ? catalog_find_field(p->credentials, p->n_credentials, fname)
             : catalog_find_field(p->connection_config, p->n_connection_config, fname);
    /* the fields live in the catalogue's arena: writable while the loader builds p */
    return (struct catalog_field *)(uintptr_t)f;
}

/* Index of the '}' closing the "${" at t[i], or n when unbalanced. */
static size_t
placeholder_end(const char *t, size_t i, size_t n)
{
    int depth = 0;

    for (; i < n; i++) {
        if (t[i] == '$' && i + 1 < n && t[i + 1] == '{') {
            depth++;
            i++;
        } else if (t[i] == '}' && --depth == 0) {
            return i;
        }
    }
    return n;
}

/* Marks the fields one alternative of a URL template uses; path_only for endpoint templates. */
static void
lands_scan_alt(struct catalog_provider *p, const char *t, size_t n, bool path_only)
{
    size_t auth = 0, auth_end = 0, path_end = n, i;
    bool scheme = false;

    if (!path_only) {
        if (n >= 8 && strncasecmp(t, "https://", 8) == 0)
            auth = 8;
        else if (n >= 7 && strncasecmp(t, "http://", 7) == 0)
            auth = 7;
        scheme = auth > 0;
        for (auth_end = auth; auth_end < n && !strchr("/?#", t[auth_end]); auth_end++)
            if (t[auth_end] == '$' && auth_end + 1 < n && t[auth_end + 1] == '{')
                auth_end = placeholder_end(t, auth_end, n);
        if (auth_end > n)
            auth_end = n;
    }
    for (i = auth_end; i < n && t[i] != '?' && t[i] != '#'; i++)
        if (t[i] == '$' && i + 1 < n && t[i + 1] == '{')
            i = placeholder_end(t, i, n);
    path_end = i < n ? i : n;
    for (i = 0; i + 1 < n; i++) {
        struct catalog_field *f;
        size_t e;

        if (t[i] != '$' || t[i + 1] != '{')
            continue;
        e = placeholder_end(t, i, n);
        if (e >= n)
            return;
        f = lands_field(p, t + i + 2, e - i - 2);
        if (f != NULL) {
            if (!path_only && !scheme && i == 0)
                f->lands |= CATALOG_LANDS_URL;
            else if (!path_only && i < auth_end)
                f->lands |=
                    i == auth && e + 1 == auth_end ? CATALOG_LANDS_HOSTPATH : CATALOG_LANDS_HOST;
            else if (i < path_end)
                f->lands |= CATALOG_LANDS_PATH;
        }
        i = e;
    }
}

/* Every " || " alternative of a URL template. */
static void
lands_scan(struct catalog_provider *p, const char *t, bool path_only)
{
    while (t != NULL && *t != '\0') {
        const char *bar = strstr(t, "||");
        size_t n = bar != NULL ? (size_t)(bar - t) : strlen(t);

        while (*t == ' ' && n > 0) {
            t++;
            n--;
        }
        while (n > 0 && t[n - 1] == ' ')
            n--;
        lands_scan_alt(p, t, n, path_only);
        t = bar != NULL ? bar + 2 : NULL;
    }
}

void
catalog_compute_lands(struct catalog_provider *p)
{
    lands_scan(p, p->proxy_base_url, false);
    lands_scan(p, p->token_url, false);
    lands_scan(p, p->verification_base_url_override, false);
    for (size_t i = 0; i < p->n_verification_endpoints; i++)
        lands_scan(p, p->verification_endpoints[i], true);
}

/*
 * prefix/suffix are what the form shows around the input ("https://" acme ".zendesk.com"): a
 * value that repeats one (a pasted whole address) would be doubled in the URL, so it is refused
 * with words that say what to type.
 */
static bool
affixes_ok(const struct catalog_field *f, const char *title, const char *v, size_t n,
           struct latch_err *err)
{
    size_t pl = f->prefix != NULL ? strlen(f->prefix) : 0;
    size_t sl = f->suffix != NULL ? strlen(f->suffix) : 0;

    if ((pl > 0 && n >= pl && strncasecmp(v, f->prefix, pl) == 0) ||
        (sl > 0 && n >= sl && strcasecmp(v + n - sl, f->suffix) == 0)) {
        latch_err_set(
            err, "%s: enter only the part between \"%s\" and \"%s\", not the whole address", title,
            f->prefix != NULL ? f->prefix : "", f->suffix != NULL ? f->suffix : "");
        return false;
    }
    return true;
}

latch_rc
catalog_field_validate(const struct catalog_field *f, const char *value, struct latch_err *err)
{
    const char *title;
    size_t n, i;
    int bad;

    if (f == NULL) {
        latch_err_set(err, "unknown field");
        return LATCH_E_INVAL;
    }
    title = f->title != NULL && f->title[0] != '\0' ? f->title
            : f->name != NULL                       ? f->name
                                                    : "value";
    if (value == NULL)
        value = "";
    n = strnlen(value, CATALOG_MAX_VALUE_LEN + 1);
    if (n > CATALOG_MAX_VALUE_LEN) {
        latch_err_set(err, "%s is too long (at most %d characters)", title, CATALOG_MAX_VALUE_LEN);
        return LATCH_E_INVAL;
    }
    if (n == 0) {
        if (f->optional)
            return LATCH_OK;
        latch_err_set(err, "%s is required", title);
        return LATCH_E_INVAL;
    }
    bad = scan_text((const unsigned char *)value, n);
    if (bad == 1) {
        latch_err_set(err, "%s must not contain control characters such as line breaks", title);
        return LATCH_E_INVAL;
    }
    if (bad == 2) {
        latch_err_set(err, "%s is not valid UTF-8 text", title);
        return LATCH_E_INVAL;
    }
    if (f->n_enum > 0) {
        for (i = 0; i < f->n_enum; i++)
            if (f->enum_values[i] != NULL && strcmp(f->enum_values[i], value) == 0)
                break;
        if (i == f->n_enum)
            return enum_error(f, title, err);
    }
    if (f->format != NULL) {
        bool ok = true;
        const char *what = NULL;

        if (strcmp(f->format, "hostname") == 0) {
            ok = fields_hostname_ok(value, n);
            what = "a host name such as app.ninjarmm.com";
        } else if (strcmp(f->format, "uri") == 0) {
            ok = uri_ok(value, n);
            what = "an absolute http:// or https:// URL";
        } else if (strcmp(f->format, "uuid") == 0) {
            ok = uuid_ok(value, n);
            what = "a UUID";
        } else if (strcmp(f->format, "email") == 0) {
            ok = email_ok(value, n);
            what = "an email address";
        }
        if (!ok) {
            latch_err_set(err, "%s must be %s", title, what);
            return LATCH_E_INVAL;
        }
    }
    if (f->pattern != NULL && f->re_ == NULL) {
        latch_err_set(err, "%s cannot be checked: its pattern in the provider catalogue is invalid",
                      title);
        return LATCH_E_INVAL;
    }
    if (f->re_ != NULL) {
        const struct catalog_re *re = f->re_;
        pcre2_match_data *md = pcre2_match_data_create_from_pattern(re->code, NULL);
        int mrc;

        if (md == NULL) {
            latch_err_set(err, "%s could not be checked (out of memory)", title);
            return LATCH_E_NOMEM;
        }
        /* JS RegExp.test(): an unanchored search */
        mrc = pcre2_match(re->code, (PCRE2_SPTR)value, n, 0, 0, md, re->mctx);
        pcre2_match_data_free(md);
        if (mrc == PCRE2_ERROR_NOMATCH) {
            latch_err_set(err, "%s has an invalid format", title);
            return LATCH_E_INVAL;
        }
        if (mrc < 0) {
            latch_err_set(err, "%s could not be checked against its pattern", title);
            return LATCH_E_INVAL;
        }
    }
    if (!affixes_ok(f, title, value, n, err))
        return LATCH_E_INVAL;
    if (f->lands != 0)
        return lands_validate(f, title, value, n, err);
    return LATCH_OK;
}

latch_rc
catalog_field_validate_place(const struct catalog_field *f, const char *value,
                             struct latch_err *err)
{
    const char *title = f->title != NULL && f->title[0] != '\0' ? f->title : f->name;
    size_t n = strnlen(value, CATALOG_MAX_VALUE_LEN + 1);

    if (n > CATALOG_MAX_VALUE_LEN && f->lands != 0) {
        latch_err_set(err, "%s is too long (at most %d characters)", title, CATALOG_MAX_VALUE_LEN);
        return LATCH_E_INVAL;
    }
    for (const unsigned char *s = (const unsigned char *)value; *s != '\0'; s++) {
        if ((*s < 0x20 && *s != '\t') || *s == 0x7f) {
            latch_err_set(err, "%s must not contain control characters such as line breaks", title);
            return LATCH_E_INVAL;
        }
    }
    if (n == 0 || f->lands == 0)
        return LATCH_OK;
    return lands_validate(f, title, value, n, err);
}
