/*
 * ui_assets.h - the Connect UI files (everything in web/), embedded at build time by
 * cmake/embed.cmake. Immutable data; thread-safe.
 */
#ifndef LATCH_UI_ASSETS_H
#define LATCH_UI_ASSETS_H

#include <stdbool.h>
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

/*
 * The table path ("/name") of the last URL segment rest ("" = "/index.html") into path; false
 * when rest is not a name an asset can have (over 100 bytes, "..", a "/"): answer 404.
 */
bool ui_asset_path(const char *rest, char path[128]);

struct http_req;
/* Answers a (ETag, Cache-Control: no-cache; 304 when If-None-Match matches). */
void ui_asset_send(struct http_req *req, const struct ui_asset *a);

#endif
