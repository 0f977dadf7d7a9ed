/*
 * catalog.h - the provider catalogue, loaded from a Nango-format providers.yaml with libyaml into
 * immutable structs.
 *
 * latch embeds Nango's catalogue (@nangohq/providers, fetched at build time) with its own
 * overlay (providers/providers.yaml) merged over it; LATCH_PROVIDERS_FILE loads another file
 * instead. `alias:` entries are resolved at load (the alias's own keys over its target's), and
 * each provider's linkability (catalog_provider.linkable) is computed once, at load. Every
 * `pattern:` is compiled with PCRE2 (UTF, match/depth limits) at load. In latch's own catalogue
 * (catalog_load_buffer / catalog_load_default) a bad pattern is a load error; in an operator file
 * (catalog_load_file) it is logged and that field then refuses every value (upstream 0.71.10 has
 * one such pattern). Aliases/anchors are rejected and the node count is capped (no billion laughs).
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
    unsigned lands; /* CATALOG_LANDS_*: where the provider's URL templates put the value */
    void *re_;      /* compiled pattern (private) */
};

/*
 * Where a field's value lands in the provider's URL templates (proxy.base_url, token_url,
 * proxy.verification base_url_override and endpoints), computed at load time. A value that
 * lands in a host or a path must have that shape whatever the field's pattern says
 * (catalog_field_validate): it can then never move a request to another host or path.
 */
enum {
    CATALOG_LANDS_HOST = 1 << 0, /* inside the host ("${x}.zendesk.com"): DNS labels */
    CATALOG_LANDS_HOSTPATH =
        1 << 1,                 /* the whole authority ("https://${x}/..."): host[:port][/seg...] */
    CATALOG_LANDS_URL = 1 << 2, /* the whole base ("${x}/api"): http(s)://host[:port][/seg...] */
    CATALOG_LANDS_PATH = 1 << 3, /* inside the path: one segment, never '.' or '..' */
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
    const char *refresh_url; /* OAUTH2 refresh_token grant: template, NULL = token_url */
    const struct catalog_kv *refresh_params; /* NULL = token_params without grant_type */
    size_t n_refresh_params;
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
    /* token requests beyond OAUTH2_CC's basics (TWO_STEP, variants) */
    const struct catalog_kv *token_headers;
    size_t n_token_headers;
    const char *token_request_method;      /* NULL = POST */
    const char *token_response_token;      /* field path, NULL = access_token */
    const char *token_response_expiration; /* field path, NULL = expires_in */
    const char *token_expiration_strategy; /* "expireIn" (default) or "expireAt" */
    long long token_expires_in_ms;         /* fixed token lifetime, -1 = unset */
    const char *expires_in_unit;           /* NULL (seconds) or "milliseconds" */
    /* proxy.verification: the request that proves new credentials work */
    const char *verification_method; /* NULL = GET */
    const char *const *verification_endpoints;
    size_t n_verification_endpoints;
    const struct catalog_kv *verification_headers;
    size_t n_verification_headers;
    const char *verification_base_url_override;
    const char *verification_data; /* compact JSON body, or NULL */
    /* OAUTH2 (authorization code): the user's consent at authorization_url (api_oauth.c) */
    const char *authorization_url; /* template or NULL */
    const struct catalog_kv *authorization_params;
    size_t n_authorization_params;
    const char *const *default_scopes; /* when the integration names none */
    size_t n_default_scopes;
    const char *authorization_method;           /* "header": client auth by Basic, else body */
    bool disable_pkce;                          /* no PKCE S256 (the provider rejects it) */
    const char *const *token_response_metadata; /* token response paths kept in the config */
    size_t n_token_response_metadata;
    const char *const *redirect_uri_metadata; /* callback query parameters kept in the config */
    size_t n_redirect_uri_metadata;
    /* steps Nango runs around a connection that latch does not */
    const char *post_connection_script;
    const char *credentials_verification_script;
    /* computed at load: can this latch link it? */
    bool linkable;
    const char *unlinkable_reason; /* for people; NULL when linkable */
};

/* The auth modes latch links (what catalog_provider.linkable is computed against). */
/* Computes lands for every field of p from its URL templates (the loader calls it). */
void catalog_compute_lands(struct catalog_provider *p);

bool catalog_mode_linkable(const char *auth_mode);
/* A provider's name for people: display_name, else its key. */
const char *catalog_display_name(const struct catalog_provider *p);
/* Where this catalogue came from and under which licence, for `latch version` and logs. */
const char *catalog_origin(const struct catalog *c);

/* Loads YAML text; name is used in error messages. */
latch_rc catalog_load_buffer(const char *yaml, size_t len, const char *name, struct catalog **out,
                             struct latch_err *err);
latch_rc catalog_load_file(const char *path, struct catalog **out, struct latch_err *err);
/*
 * The built-in catalogue: Nango's @nangohq/providers file embedded at build time (when the build
 * fetched it) with latch's own providers/providers.yaml deep-merged over it (an overlay entry
 * overrides upstream's of the same name key by key: objects merge, lists and scalars replace),
 * aliases resolved. Without the upstream file: latch's own.
 */
latch_rc catalog_load_default(struct catalog **out, struct latch_err *err);
/*
 * Loads base (may be NULL: overlay alone) with overlay merged over it. Patterns of base fail
 * closed (logged), patterns of an overlay-only load fail the load. origin is copied.
 */
latch_rc catalog_load_layers(const char *base, size_t base_len, const char *base_name,
                             const char *overlay, size_t overlay_len, const char *overlay_name,
                             const char *origin, struct catalog **out, struct latch_err *err);
/* What the built-in catalogue is made of (set by the build: cmake/upstream_catalog.cmake). */
const char *catalog_builtin_origin(void);
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
/*
 * Only what keeps a request where the definition puts it: no control characters (a header),
 * and the shape of where the value lands in a URL (CATALOG_LANDS_*). For imported credentials,
 * which Nango takes without checking them against the field's pattern.
 */
latch_rc catalog_field_validate_place(const struct catalog_field *f, const char *value,
                                      struct latch_err *err);

#endif
