/*
 * ui_assets.h - the Connect UI files (everything in web/), embedded at build time by
 * cmake/embed.cmake. Immutable data; thread-safe.
 */
#ifndef LATCH_UI_ASSETS_H
#define LATCH_UI_ASSETS_H

#include <stddef.h>

struct ui_asset {
    const char *path; /* "/index.html" */
    const char *mime;
    const unsigned char *bytes;
    size_t len;
    const char *etag; /* quoted, e.g. "\"3fa4...\"" */
};

/* Terminated by an entry with path == NULL. */
extern const struct ui_asset ui_assets[];
/* The admin dashboard (everything in web-admin/), the same way. */
extern const struct ui_asset admin_assets[];

/* Returns the Connect UI asset for an exact path, or NULL. */
const struct ui_asset *ui_asset_find(const char *path);
/* The same in another table (admin_assets). */
const struct ui_asset *ui_asset_find_in(const struct ui_asset *table, const char *path);

#endif
