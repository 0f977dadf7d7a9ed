/*
 * tmpl.h - the bounded interpreter for Nango's ${...} templates.
 *
 * Grammar (what providers.yaml uses):
 *   template := alt ( "||" alt )*          -- first alternative whose placeholders all resolve
 *   alt      := ( text | "${" expr "}" )*
 *   expr     := name | call                -- name: connectionConfig.x, credentials.x, accessToken,
 *   call     := ident "(" args ")"         --   apiKey, ... (dotted identifiers)
 *   args     := template ( "," template )* -- e.g.
 * ${base64(${credentials.username}:${credentials.password})} Functions: base64(x) (standard base64
 * of the concatenated argument), now (ISO time) is not supported on purpose. A lookup of
 * "connectionConfig.instance" is passed to the callback verbatim; the callback returns NULL (or "")
 * when the variable is unset. Alternatives: each side is trimmed; an alternative is used when every
 * placeholder in it resolved to a non-empty value; if none does, LATCH_E_INVAL with a "missing
 * parameter" message naming the first unresolved variable.
 *
 * Bounds: output <= out_size (LATCH_E_TOO_LARGE), nesting <= LATCH_MAX_TMPL_DEPTH, input
 * <= 4096 bytes. Pure and thread-safe.
 */
#ifndef LATCH_TMPL_H
#define LATCH_TMPL_H

#include <stddef.h>

#include "util/rc.h"

typedef const char *(*tmpl_lookup_fn)(const char *name, void *ud);

enum {
    TMPL_URL_ENCODE =
        1 << 0, /* percent-encode substituted values (encodeURIComponent, keeping :) */
    /*
     * With TMPL_URL_ENCODE: a value that starts the URL or directly follows its http(s):// goes
     * in unencoded (a whole base URL, a host[:port][/path]). Only for callers that validated such
     * values for that place (catalog_field_validate with CATALOG_LANDS_URL / _HOSTPATH).
     */
    TMPL_URL_RAW_AUTHORITY = 1 << 1,
};

latch_rc tmpl_eval(const char *tmpl, tmpl_lookup_fn lookup, void *ud, unsigned flags, char *out,
                   size_t out_size, struct latch_err *err);

/* True if the template mentions ${...} at all. */
int tmpl_has_placeholders(const char *tmpl);

#endif
