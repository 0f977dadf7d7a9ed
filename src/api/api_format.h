/*
 * api_format.h - JSON shapes of the public API objects (Nango's formatters), shared by handlers.
 * Pure functions; thread-safe. Every returned json_t is a new reference.
 */
#ifndef LATCH_API_FORMAT_H
#define LATCH_API_FORMAT_H

#include <stdbool.h>

#include <jansson.h>

#include "store/store.h"

struct api_deps;
struct catalog_provider;

json_t *api_provider_json(struct api_deps *a, const struct catalog_provider *p);
/* Public integration object; include_* add the optional fields. */
json_t *api_integration_json(struct api_deps *a, const struct store_integration *i,
                             bool inc_webhook, bool inc_credentials);
/* Connection list item (no credentials). */
json_t *api_connection_list_item(const struct store_connection *c);
/*
 * Full connection (GET /connections/:id and POST /connections): credentials is a new reference
 * or NULL for {}; plus00 selects the top-level timestamp style.
 */
json_t *api_connection_full(const struct store_connection *c, json_t *credentials, bool plus00);
/* Nango's "errors" array from the connection's auth error. */
json_t *api_connection_errors(const struct store_connection *c);

#endif
