#include "api/ui_assets.h"

#include <stdio.h>
#include <string.h>

#include "net/http_server.h"

const struct ui_asset *
ui_asset_find(const char *path)
{
    return ui_asset_find_in(ui_assets, path);
}

const struct ui_asset *
ui_asset_find_in(const struct ui_asset *table, const char *path)
{
    for (const struct ui_asset *a = table; a->path != NULL; a++)
        if (strcmp(a->path, path) == 0)
            return a;
    return NULL;
}

bool
ui_asset_path(const char *rest, char path[128])
{
    if (rest[0] == '\0')
        rest = "index.html";
    if (strlen(rest) > 100 || strstr(rest, "..") != NULL || strchr(rest, '/') != NULL)
        return false;
    (void)snprintf(path, 128, "/%s", rest);
    return true;
}

void
ui_asset_send(struct http_req *req, const struct ui_asset *a)
{
    const char *inm = http_req_header(req, "If-None-Match");

    http_resp_header(req, "ETag", a->etag);
    http_resp_header(req, "Cache-Control", "no-cache");
    if (inm != NULL && strcmp(inm, a->etag) == 0) {
        http_resp_bytes(req, 304, a->mime, "", 0, true);
        return;
    }
    http_resp_bytes(req, 200, a->mime, a->bytes, a->len, true);
}
