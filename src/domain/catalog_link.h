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

#endif
