/*
 * catalog_link.h - whether latch can link a provider (internal to src/domain: the loader calls
 * it once per provider; everyone else reads catalog_provider.linkable).
 * Threads: pure.
 */
#ifndef LATCH_CATALOG_LINK_H
#define LATCH_CATALOG_LINK_H

#include <stdbool.h>
#include <stddef.h>

struct catalog_provider;

/*
 * True when latch can link p; otherwise false with a sentence for people in reason. The
 * provider's fields, token and proxy members must be built.
 */
bool catalog_assess_linkable(const struct catalog_provider *p, char *reason, size_t reason_size);

/*
 * An OAUTH2 (authorization code) provider whose connections latch can hold and refresh when they
 * are imported (POST /connections with OAUTH2 credentials): a token URL (or refresh_url) and a
 * proxy base URL, a token request latch can send. Integrations of such providers may be created
 * even while the provider is not linkable through the Connect UI.
 */
bool catalog_oauth2_importable(const struct catalog_provider *p);

#endif
