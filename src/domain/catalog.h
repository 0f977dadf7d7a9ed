/*
 * catalog.h - the provider catalogue, loaded from a Nango-format providers.yaml with libyaml into
 * immutable structs.
 *
 * latch embeds its own catalogue (providers/providers.yaml); LATCH_PROVIDERS_FILE loads another,
 * and the full upstream file of @nangohq/providers must load. Every `pattern:` is compiled with
 * PCRE2 (UTF, match/depth limits) at load. In latch's own catalogue (catalog_load_buffer /
 * catalog_load_default) a bad pattern is a load error; in an operator file (catalog_load_file) it
 * is logged and that field then refuses every value (upstream 0.71.10 has one such pattern).
 * Aliases/anchors are rejected and the node count is capped (no billion laughs).
 *
 * Ownership: struct catalog owns every provider and string in it; all pointers returned are
 * borrowed for the catalogue's lifetime. Threads: after load, everything is read-only and
 * thread-safe (PCRE2 match data is per call).
 */
#ifndef LATCH_CATALOG_H
#define LATCH_CATALOG_H

#include <stdbool.h>
#include <stddef.h>

#include "util/rc.h"

struct catalog;

struct catalog_kv {
    const char *key;
    const char *value; /* template text (scalars are kept as their YAML text) */
};

/* One field of connection_config or credentials. */
struct catalog_field {
    const char *name; /* "instance", "client_id" */
    const char *type; /* "string" (default) */
    const char *title;
    const char *description;
    const char *example;
    const char *pattern; /* NULL = none */
    const char *format;  /* hostname, uri, uuid, email, or NULL */
    const char *const *enum_values;
    size_t n_enum;
    int order; /* -1 = unset */
    bool secret;
    bool optional;
    bool automated;
    bool hidden;
    const char *default_value;
    const char *doc_section;
    const char *prefix;
    const char *suffix;
    void *re_; /* compiled pattern (private) */
};

struct catalog_provider {
    const char *name; /* key in the YAML, e.g. "ninjaone-rmm" */
    const char *display_name;
    const char *auth_mode;                 /* "OAUTH2_CC", "API_KEY", "BASIC", "OAUTH2", ... */
    const char *token_url;                 /* template or NULL */
    const char *scope_separator;           /* NULL = " " */
    const char *token_request_auth_method; /* NULL (body), "basic", "custom", ... */
    const char *body_format;               /* NULL = form, "json", "query" */
    const struct catalog_kv *token_params;
    size_t n_token_params;
    const char *proxy_base_url; /* template or NULL */
    const struct catalog_kv *proxy_headers;
    size_t n_proxy_headers;
    const struct catalog_kv *proxy_query;
    size_t n_proxy_query;
    const char *proxy_retry_after; /* header name, or NULL */
    const char *proxy_retry_at;
    const char *proxy_retry_error_codes;    /* "429,5xx" as text, or NULL */
    const char *const *proxy_allowed_hosts; /* hosts Base-Url-Override may use */
    size_t n_proxy_allowed_hosts;
    const char *docs;
    const char *docs_connect;
    const char *setup_guide_url;
    int token_expiration_buffer_s; /* refresh margin, -1 = default */
    int default_expires_in_s;      /* when the token response has no expires_in, -1 = default */
    const struct catalog_field *connection_config;
    size_t n_connection_config;
    const struct catalog_field *credentials;
    size_t n_credentials;
    const char *json; /* the whole entry as compact JSON (for GET /providers/:name) */
};

/* Loads YAML text; name is used in error messages. */
latch_rc catalog_load_buffer(const char *yaml, size_t len, const char *name, struct catalog **out,
                             struct latch_err *err);
latch_rc catalog_load_file(const char *path, struct catalog **out, struct latch_err *err);
/* latch's own catalogue, embedded at build time. */
latch_rc catalog_load_default(struct catalog **out, struct latch_err *err);
void catalog_free(struct catalog *c);

size_t catalog_count(const struct catalog *c);
const struct catalog_provider *catalog_at(const struct catalog *c, size_t i);
const struct catalog_provider *catalog_find(const struct catalog *c, const char *name);

const struct catalog_field *catalog_find_field(const struct catalog_field *fields, size_t n,
                                               const char *name);
/*
 * Validates one value against its field: length <= 1024, no control characters, enum (exact,
 * case-sensitive), pattern (PCRE2, searched like JS RegExp.test: anchors come from the pattern),
 * format. Returns LATCH_OK or
 * LATCH_E_INVAL with a human message in err (naming the field's title, never echoing the value
 * of a secret field).
 */
latch_rc catalog_field_validate(const struct catalog_field *f, const char *value,
                                struct latch_err *err);

#endif
