#include "api/ui_assets.h"

#include <string.h>

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
