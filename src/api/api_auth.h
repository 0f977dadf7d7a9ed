/*
 * api_auth.h - who is calling and how often: authentication of API requests (secret key as
 * "Authorization: Bearer <uuid v4>", connect session token by header or ?connect_session_token=),
 * the secret-key cache in front of the store, and the token-bucket rate limits with Nango's
 * X-RateLimit-* headers and the 429 tarpit. Used by api_dispatch (api.c) only.
 *
 * Ownership: struct authcache is owned by the app (authcache_new/authcache_free); the functions
 * below borrow the request context. Threads: MHD pool threads (authentication and rate limits
 * run before a handler is offloaded); the cache has its own mutex; new/free from the owner.
 */
#ifndef LATCH_API_AUTH_H
#define LATCH_API_AUTH_H

#include <stdbool.h>

#include "api/api.h"

struct authcache;
struct ratelimit;

struct authcache *authcache_new(void);
void authcache_free(struct authcache *ac); /* NULL-safe */

/*
 * Authenticates c->req as mode says; on success sets c->env_id (and c->session, c->by_session
 * for a connect session) and returns true; else answers 401/503 and returns false.
 */
bool api_authenticate(struct api_ctx *c, enum api_auth mode);
/*
 * Takes a token from rl's bucket for key and sets the X-RateLimit-* headers. Returns true when
 * the request was refused (429 answered, delayed by LATCH_RATE_LIMIT_DELAY_MS). rl may be NULL.
 */
bool api_rate_limited(struct api_ctx *c, struct ratelimit *rl, const char *key);

#endif
