/*
 * api_providers.c - GET /providers, GET /providers/:provider, the Connect UI assets and the
 * public integration object shared by api_integrations.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "api/api_format.h"
#include "core/config.h"
#include "domain/catalog.h"
#include "api/ui_assets.h"
#include "util/xalloc.h"

json_t *
api_provider_json(struct api_deps *a, const struct catalog_provider *p)
{
    json_t *o = json_loads(p->json, 0, NULL);
    char *logo;

    if (o == NULL)
        o = json_object();
    json_object_set_new(o, "name", json_string(p->name));
    logo = xasprintf("%s/ui/logo-%s.svg", a->cfg->public_url, p->name);
    json_object_set_new(o, "logo_url", json_string(logo));
    free(logo);
    /* latch's extension (Nango's fields above are unchanged): can this latch link it? */
    if (p->linkable)
        json_object_set_new(o, "latch", json_pack("{s:b}", "linkable", 1));
    else
        json_object_set_new(o, "latch",
                            json_pack("{s:b, s:s}", "linkable", 0, "reason",
                                      p->unlinkable_reason ? p->unlinkable_reason : ""));
    return o;
}

void
api_providers_list(struct api_ctx *c)
{
    const struct catalog *cat = c->deps->catalog;
    const char *search = http_req_query(c->req, "search");
    json_t *arr = json_array();

    for (size_t i = 0; i < catalog_count(cat); i++) {
        const struct catalog_provider *p = catalog_at(cat, i);

        if (search != NULL && search[0] != '\0' && strcasestr(p->name, search) == NULL &&
            (p->display_name == NULL || strcasestr(p->display_name, search) == NULL))
            continue;
        json_array_append_new(arr, api_provider_json(c->deps, p));
    }
    api_reply(c, 200, json_pack("{s:o}", "data", arr));
}

void
api_provider_get(struct api_ctx *c)
{
    const struct catalog_provider *p = catalog_find(c->deps->catalog, c->params[0]);

    if (p == NULL) {
        char msg[320];

        (void)snprintf(msg, sizeof msg, "Unknown provider %.255s", c->params[0]);
        api_error(c, 404, "not_found", msg);
        return;
    }
    api_reply(c, 200, json_pack("{s:o}", "data", api_provider_json(c->deps, p)));
}

void
api_ui_asset(struct api_ctx *c)
{
    const char *rest = c->params[0];
    char path[128];
    const struct ui_asset *a;

    if (rest == NULL) {
        /* "/ui" -> "/ui/" so that the page's relative asset URLs resolve */
        const char *q = strchr(http_req_raw_target(c->req), '?');
        char *loc = xasprintf("/ui/%s", q != NULL && strlen(q) < 2048 ? q : "");

        http_resp_header(c->req, "Location", loc);
        free(loc);
        http_resp_bytes(c->req, 301, "text/plain", "", 0, true);
        return;
    }
    if (!ui_asset_path(rest, path)) {
        api_error(c, 404, "not_found", "Unknown asset.");
        return;
    }
    a = ui_asset_find(path);
    if (a == NULL && strncmp(rest, "logo-", 5) == 0)
        a = ui_asset_find("/logo-default.svg");
    if (a == NULL) {
        api_error(c, 404, "not_found", "Unknown asset.");
        return;
    }
    if (strstr(a->mime, "text/html") != NULL) {
        /* no inline script or style, ever; the UI may call only latch's own API */
        http_resp_header(c->req, "Content-Security-Policy",
                         "default-src 'self'; script-src 'self'; style-src 'self'; "
                         "img-src 'self' data:; connect-src 'self'; base-uri 'none'; "
                         "form-action 'none'; frame-ancestors *");
    }
    ui_asset_send(c->req, a);
}
