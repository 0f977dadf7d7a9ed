/*
 * oauth_cc.h - the token exchanges of OAUTH2_CC (client credentials) and TWO_STEP (a templated
 * token request from the user's credentials), exactly as a provider definition says: token_url
 * template, token_params, token_headers (${credentials.x}, hidden default values, base64(...)),
 * scope_separator, client auth in body or Basic, body_format (form or json; json also when a
 * token header says so), token_response paths (token, token_expiration as seconds, milliseconds
 * with expires_in_unit, or a date with token_expiration_strategy expireAt). Used both when an
 * account is linked and when its token is refreshed.
 *
 * The same code refreshes OAUTH2 (authorization code) connections: grant_type=refresh_token
 * with refresh_url/refresh_params (oauth_cc_input.refresh_token), answering Nango's OAUTH2
 * credentials {type, access_token, refresh_token, expires_at, raw} (a rotated refresh token
 * replaces the old one; without one in the answer the old one is kept).
 *
 * oauth_cc_build validates everything and produces the request without touching the network;
 * oauth_cc_exchange runs it through outbound (curl thread) and classifies the outcome.
 * Ownership: struct oauth_cc (oauth_cc_new) borrows the outbound and the worker it is given; they
 * must outlive it. Its owner (app.c) frees it with oauth_cc_free after outbound and the worker
 * have stopped. It is immutable after oauth_cc_new.
 * Threads: build/parse are pure; exchange may be called from any thread. The response is
 * classified on the curl thread and the callback runs on a worker thread (worker.h), so the
 * callback may block on the store; only when the worker queue is full does it run on the curl
 * thread.
 */
#ifndef LATCH_OAUTH_CC_H
#define LATCH_OAUTH_CC_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "util/rc.h"

struct catalog_provider;
struct oauth_cc;
struct outbound;
struct outbound_resp;
struct worker;

/* OAUTH2's authorization-code grant (api_oauth.c): what the callback brought back. */
struct oauth_cc_grant {
    const char *code;
    const char *redirect_uri;
    const char *code_verifier; /* PKCE; NULL when the provider disables it */
};

struct oauth_cc_input {
    const struct catalog_provider *provider;
    const json_t *connection_config; /* borrowed object: instance, oauth_scopes, ... */
    const char *client_id;           /* OAUTH2_CC; "" for TWO_STEP */
    const char *client_secret;       /* OAUTH2_CC; "" for TWO_STEP */
    const json_t *credentials; /* TWO_STEP: the user's credential fields (borrowed); else NULL */
    /*
     * OAUTH2 (authorization code) refresh: the stored refresh token; NULL for every other
     * request. The request is then grant_type=refresh_token to refresh_url (else token_url) with
     * refresh_params (else token_params without their grant), client auth as for the token
     * request, and no scope.
     */
    const char *refresh_token;
    const json_t *prior; /* refresh: the stored OAUTH2 credentials, carried over (borrowed) */
    /* OAUTH2: the authorization code to exchange (borrowed), else NULL. The body gets
       grant_type=authorization_code (unless token_params set one), code, redirect_uri and
       code_verifier, no scope; the result is Nango's OAUTH2 credentials {type, access_token,
       refresh_token, expires_at, raw}. */
    const struct oauth_cc_grant *grant;
};

enum oauth_cc_outcome {
    OCC_OK = 0,
    OCC_INVALID_CLIENT, /* wrong id/secret, or wrong instance/region (terminal) */
    OCC_INVALID_SCOPE,  /* the app lacks a requested scope (terminal) */
    OCC_TIMEOUT,        /* transient */
    OCC_UNREACHABLE,    /* transient: DNS, connect, TLS */
    OCC_BAD_RESPONSE,   /* 2xx but not a token response, or too large (transient) */
    OCC_UPSTREAM,       /* other error status; terminal unless 5xx/429 */
    OCC_DENIED,         /* refused by latch's outbound policy (terminal) */
    OCC_INVALID_INPUT,  /* template/URL could not be built (terminal) */
    OCC_INVALID_GRANT,  /* refresh: the refresh token was revoked, expired or reused (terminal) */
};

struct oauth_cc_result {
    enum oauth_cc_outcome outcome;
    bool terminal;          /* retrying with the same credentials cannot help */
    json_t *creds;          /* OCC_OK: the credentials object (owned; creds_free) */
    bool rotated;           /* refresh, OCC_OK: the answer carried a new refresh token */
    int64_t expires_at;     /* OCC_OK: ms */
    long status;            /* upstream HTTP status, 0 if none */
    int64_t retry_after_ms; /* from Retry-After, 0 if none */
    char reason[32];        /* invalid_client, invalid_scope, timeout, unreachable, ... */
    char message[320];      /* human, actionable, never contains a secret */
};

#define OCC_MAX_TOKEN_HEADERS 16

struct oauth_cc_request {
    char *url;
    char *body; /* owned; contains the secret: wiped by oauth_cc_request_clear */
    size_t body_len;
    char *content_type;  /* owned */
    char *authorization; /* owned "Basic ..." or NULL */
    /* the provider's token_headers, evaluated (owned; values may hold secrets: wiped) */
    char *hnames[OCC_MAX_TOKEN_HEADERS];
    char *hvalues[OCC_MAX_TOKEN_HEADERS];
    size_t n_headers;
};
void oauth_cc_request_clear(struct oauth_cc_request *r);

/*
 * Evaluates one of the provider's templates with the input's connection config and credentials,
 * checked as for the token request (url: values must fit where they land in a URL). *absent
 * (when not NULL) is set instead of failing when a variable has no value.
 */
latch_rc oauth_cc_eval(const struct oauth_cc_input *in, const char *tmpl, bool url, char *out,
                       size_t out_size, bool *absent, struct latch_err *err);
/* Appends k=v, form-encoded (RFC 3986 unreserved kept), with '&' when b is not empty. */
struct buf;
latch_rc oauth_cc_form_add(struct buf *b, const char *k, const char *v);
/* The value at a dotted path ("tokens.access.token") of a JSON object (borrowed), or NULL. */
json_t *oauth_cc_json_path(json_t *j, const char *path);
/* "a, b,c": split on commas, trimmed, joined by sep (owned). */
char *oauth_cc_join_scopes(const char *scopes, const char *sep);

/* Builds the token request. LATCH_E_INVAL with a human message in err. */
latch_rc oauth_cc_build(const struct oauth_cc_input *in, bool allow_http,
                        struct oauth_cc_request *out, struct latch_err *err);

/*
 * Classifies a token response. default_expires_in_s is used when the response has no
 * expires_in (provider default_expires_in, else the config default).
 */
void oauth_cc_parse(const struct outbound_resp *resp, const struct oauth_cc_input *in,
                    int default_expires_in_s, struct oauth_cc_result *out);
void oauth_cc_result_clear(struct oauth_cc_result *r);

/* What an exchange needs besides its input (borrowed; see Ownership above). */
struct oauth_cc_opts {
    struct outbound *outbound; /* runs the token request (curl thread) */
    struct worker *worker;     /* runs the caller's follow-up */
    bool allow_http;           /* LATCH_ALLOW_HTTP: http:// token URLs (tests only) */
    int timeout_ms;            /* per token request */
    int default_expires_in_s;  /* when neither the response nor the provider says */
};
/* Never NULL (allocation failure aborts). */
struct oauth_cc *oauth_cc_new(const struct oauth_cc_opts *o);
void oauth_cc_free(struct oauth_cc *oc); /* NULL-safe */

typedef void (*oauth_cc_done_fn)(struct oauth_cc_result *res, void *ud);

/*
 * Builds and submits the exchange. On LATCH_OK, done runs exactly once later (worker thread) and
 * owns res until it returns (res is cleared afterwards; steal res->creds by setting it NULL).
 * On error nothing is submitted and res_err describes why (outcome set).
 */
latch_rc oauth_cc_exchange(struct oauth_cc *oc, const struct oauth_cc_input *in,
                           oauth_cc_done_fn done, void *ud, struct oauth_cc_result *res_err);

#endif
