/*
 * api_link.h - the steps every link route shares (api_connect.c), for the OAUTH2 popup routes
 * (api_oauth.c): the checks before credentials (integration, mode, session rules, connection
 * config), the target connection and attempt budget, the storing step (session consumed, sealed
 * row, auth webhook) and the failure answer (failure webhook). On API_PAGE routes the answers go
 * through api_ctx.page_error / link_job.stored instead of JSON.
 * Threads: as the handlers (pool or worker threads); a job belongs to one request.
 */
#ifndef LATCH_API_LINK_H
#define LATCH_API_LINK_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "api/api.h"
#include "domain/oauth_cc.h"

struct catalog_provider;

struct link_job {
    struct api_ctx *c;
    struct store_integration integ;
    const struct catalog_provider *p;
    json_t *cfg;
    char *connection_id;
    char uid[37];
    bool existing;
    char *client_id;
    char *client_secret;
    json_t *creds; /* API_KEY/BASIC: the credentials being verified; TWO_STEP: the user's fields */
    json_t *token_creds; /* OAUTH2_CC/TWO_STEP: the new token's credentials, being verified */
    int64_t expires_at;  /* of token_creds */
    /* OAUTH2 (api_oauth.c): answers a stored link instead of the JSON answer; NULL = JSON */
    void (*stored)(struct link_job *j, bool created);
};

void link_job_free(struct link_job *j);
/* Integration, mode, session rules, connection config (params[...]); NULL when answered. */
struct link_job *link_begin(struct api_ctx *c, const char *mode);
/* Which connection (reconnect sessions: theirs), and the attempt budget; false when answered. */
bool link_target(struct link_job *j);
/* Stores the connection (creds borrowed), webhooks, answers; latch is stolen. */
void link_store(struct link_job *j, const json_t *creds, int64_t expires_at, json_t *latch);
/* The HTTP status of a failed token exchange: 504 timeout, 502 upstream, else 400. */
unsigned link_status_for(enum oauth_cc_outcome o);
/* A failed link: the failure webhook, then the error answer. */
void link_answer_failure(struct link_job *j, unsigned status, const char *code, const char *message,
                         const char *reason);

#endif
