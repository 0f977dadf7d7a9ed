#include "api/ui_assets.h"

#include <string.h>

const struct ui_asset *
ui_asset_find(const char *path)
{
    for (const struct ui_asset *a = ui_assets; a->path != NULL; a++)
        if (strcmp(a->path, path) == 0)
            return a;
    return NULL;
}
