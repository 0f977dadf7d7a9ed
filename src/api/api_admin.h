/*
 * api_admin.h - the admin dashboard's JSON API under /admin/api/ (shared by api_admin.c, which
 * signs in and guards, and api_admin_env.c, which answers the per-environment routes).
 *
 * Every route but login needs a session cookie; every method but GET/HEAD also needs the CSRF
 * token (X-CSRF-Token) bound to that session. Answers are JSON: {"data": ...} or
 * {"error":{"code","message"}}. No answer ever carries a stored secret (credentials, webhook
 * signing key, API secret keys); a new API secret key is returned once by the call creating it.
 * Threads: handlers run on worker threads (the route is API_OFFLOAD).
 */
#ifndef LATCH_API_ADMIN_H
#define LATCH_API_ADMIN_H

#include "api/api.h"

/* A handler of one /admin/api route; admin is the signed-in account's email. */
typedef void (*admin_fn)(struct api_ctx *c, const char *admin);

/* Per-environment routes (api_admin_env.c); c->env_id is set, c->params[] hold the captures. */
void adm_environments(struct api_ctx *c, const char *admin);
void adm_providers(struct api_ctx *c, const char *admin);
void adm_integrations(struct api_ctx *c, const char *admin);
void adm_integration_create(struct api_ctx *c, const char *admin);
void adm_integration_patch(struct api_ctx *c, const char *admin);
void adm_integration_delete(struct api_ctx *c, const char *admin);
void adm_connections(struct api_ctx *c, const char *admin);
void adm_connection_get(struct api_ctx *c, const char *admin);
void adm_connection_delete(struct api_ctx *c, const char *admin);
void adm_connection_history(struct api_ctx *c, const char *admin);
void adm_connect_link(struct api_ctx *c, const char *admin);
void adm_settings(struct api_ctx *c, const char *admin);
void adm_settings_patch(struct api_ctx *c, const char *admin);
void adm_webhook_test(struct api_ctx *c, const char *admin);
void adm_keys(struct api_ctx *c, const char *admin);
void adm_key_create(struct api_ctx *c, const char *admin);
void adm_key_patch(struct api_ctx *c, const char *admin);
void adm_key_revoke(struct api_ctx *c, const char *admin);
void adm_operations(struct api_ctx *c, const char *admin);

#endif
