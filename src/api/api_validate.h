/*
 * api_validate.h - validators for the request objects shared by several routes (end_user,
 * organization, tags, webhook_url_override, connection_config), producing zod-like issues.
 * Pure; thread-safe. Returned json_t values are new references.
 */
#ifndef LATCH_API_VALIDATE_H
#define LATCH_API_VALIDATE_H

#include <stdbool.h>

#include <jansson.h>

struct catalog_provider;

/* end_user: {id, email?, display_name?, tags?, organization?}; returns a normalised copy or NULL.
 */
json_t *apiv_end_user(json_t *v, const char *field, json_t *errors);
/* organization: {id, display_name?} */
json_t *apiv_organization(json_t *v, const char *field, json_t *errors);
/* tags: <=10 keys, key ^[a-zA-Z][a-zA-Z0-9_\-./]*$ <=64 (lower-cased), values 1..255 strings. */
json_t *apiv_tags(json_t *v, const char *field, json_t *errors);
/* Tags derived from an end user (+ organization), Nango's buildTagsFromEndUser. */
json_t *apiv_tags_from_end_user(const json_t *end_user, const json_t *organization);
/* "" or an absolute http(s) URL; returns true if valid. */
bool apiv_webhook_url(json_t *v, const char *field, json_t *errors);
/*
 * Validates connection_config values against the provider definition before any URL is built:
 * every declared field (enum, pattern, format), unknown keys kept only if they are strings of
 * sane size (oauth_scopes is latch/Nango internal). Adds issues with path [prefix, name].
 * Returns a normalised object (new) or NULL on error.
 */
json_t *apiv_connection_config(const struct catalog_provider *p, json_t *cfg, const char *prefix,
                               bool require_declared, json_t *errors);

#endif
