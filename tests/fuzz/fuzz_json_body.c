/*
 * fuzz_json_body.c - the request-body validators of the API (api_validate.c and
 * api_strict_keys) on JSON parsed the way api.c parses bodies, with the ninjaone-rmm provider
 * of the embedded catalogue.
 *
 * Each validator runs on the whole document and on every member of a top-level object or array
 * (so wrong types reach every field). Invariants: a validator returns NULL iff it added issues;
 * every issue is {code, message, path[]} of strings and the error list serialises; an accepted
 * connection_config holds only values that pass catalog_field_validate again (for instance: one
 * of the enum hosts, never anything else) and the instance is present when required; accepted
 * tags are at most LATCH_MAX_TAGS lower-case keys; api_strict_keys adds exactly one issue per
 * unknown key.
 */
#include <string.h>

#include <jansson.h>

#include "api/api.h"
#include "api/api_validate.h"
#include "domain/catalog.h"
#include "fuzz.h"
#include "core/latch_limits.h"
#include "core/log.h"

static struct catalog *cat;
static const struct catalog_provider *prov;

static void
setup(void)
{
    struct latch_err err;

    log_min_level = LOG_LVL_ERROR;
    FUZZ_CHECK(catalog_load_default(&cat, &err) == LATCH_OK);
    prov = catalog_find(cat, "ninjaone-rmm");
    FUZZ_CHECK(prov != NULL);
}

static void
check_issues(json_t *errors, size_t from)
{
    size_t i;
    json_t *e;
    char *dump;

    json_array_foreach(errors, i, e)
    {
        json_t *path = json_object_get(e, "path");
        size_t k;
        json_t *seg;

        if (i < from)
            continue;
        FUZZ_CHECK(json_is_object(e));
        FUZZ_CHECK(json_is_string(json_object_get(e, "code")));
        FUZZ_CHECK(json_is_string(json_object_get(e, "message")));
        FUZZ_CHECK(json_is_array(path));
        json_array_foreach(path, k, seg) FUZZ_CHECK(json_is_string(seg));
    }
    dump = json_dumps(errors, JSON_COMPACT);
    FUZZ_CHECK(dump != NULL);
    free(dump);
}

/* The validator contract: NULL <=> issues were added. */
#define CHECK_CONTRACT(out, errors, before)                                                        \
    do {                                                                                           \
        FUZZ_CHECK(((out) == NULL) == (json_array_size(errors) > (before)));                       \
        check_issues(errors, before);                                                              \
    } while (0)

static void
check_config(json_t *v, bool require)
{
    json_t *errors = json_array();
    json_t *out = apiv_connection_config(prov, v, "connection_config", require, errors);
    const char *k;
    json_t *val;

    CHECK_CONTRACT(out, errors, 0);
    json_object_foreach(out, k, val)
    {
        const struct catalog_field *f =
            catalog_find_field(prov->connection_config, prov->n_connection_config, k);

        if (f == NULL) {
            FUZZ_CHECK(!json_is_object(val) && !json_is_array(val));
            continue;
        }
        FUZZ_CHECK(json_is_string(val));
        FUZZ_CHECK(strlen(json_string_value(val)) == json_string_length(val));
        FUZZ_CHECK(catalog_field_validate(f, json_string_value(val), NULL) == LATCH_OK);
        if (strcmp(k, "instance") == 0)
            FUZZ_CHECK(f->n_enum > 0);
    }
    if (out != NULL && require) {
        const struct catalog_field *inst =
            catalog_find_field(prov->connection_config, prov->n_connection_config, "instance");

        if (inst != NULL && !inst->optional && inst->default_value == NULL && !inst->automated)
            FUZZ_CHECK(json_is_string(json_object_get(out, "instance")));
    }
    json_decref(out);
    json_decref(errors);
}

static void
check_one(json_t *v)
{
    static const char *const allowed[] = {"end_user", "tags", "connection_config",
                                          "provider_config_key", NULL};
    const char *const root[] = {NULL};
    json_t *errors = json_array();
    json_t *out;
    size_t before;

    out = apiv_end_user(v, "end_user", errors);
    CHECK_CONTRACT(out, errors, 0);
    if (out != NULL) {
        FUZZ_CHECK(json_is_string(json_object_get(out, "id")));
        json_decref(apiv_tags_from_end_user(out, NULL));
    }
    json_decref(out);

    before = json_array_size(errors);
    out = apiv_organization(v, "organization", errors);
    CHECK_CONTRACT(out, errors, before);
    json_decref(out);

    before = json_array_size(errors);
    out = apiv_tags(v, "tags", errors);
    CHECK_CONTRACT(out, errors, before);
    if (out != NULL) {
        const char *k;
        json_t *val;

        FUZZ_CHECK(json_object_size(out) <= LATCH_MAX_TAGS);
        json_object_foreach(out, k, val)
        {
            for (const char *p = k; *p != '\0'; p++)
                FUZZ_CHECK(!(*p >= 'A' && *p <= 'Z'));
            FUZZ_CHECK(json_is_string(val) && json_string_length(val) >= 1 &&
                       json_string_length(val) <= LATCH_MAX_TAG_VALUE_LEN);
        }
    }
    json_decref(out);

    before = json_array_size(errors);
    {
        bool ok = apiv_webhook_url(v, "webhook_url_override", errors);

        FUZZ_CHECK(ok == (json_array_size(errors) == before));
        if (ok)
            FUZZ_CHECK(json_is_string(v));
    }

    if (json_is_object(v)) {
        size_t unknown = 0;
        const char *k;
        json_t *val;

        json_object_foreach(v, k, val)
        {
            bool known = false;

            for (size_t i = 0; allowed[i] != NULL; i++)
                if (strcmp(k, allowed[i]) == 0)
                    known = true;
            unknown += known ? 0 : 1;
        }
        before = json_array_size(errors);
        api_strict_keys(v, allowed, root, errors);
        FUZZ_CHECK(json_array_size(errors) - before == unknown);
    }
    check_issues(errors, 0);
    json_decref(errors);

    check_config(v, false);
    check_config(v, true);
    json_decref(apiv_tags_from_end_user(v, v));
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *doc;
    json_error_t jerr;

    if (cat == NULL)
        setup();
    if (size > 64 * 1024)
        return 0;
    doc = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (doc == NULL)
        return 0;
    check_one(doc);
    if (json_is_object(doc)) {
        const char *k;
        json_t *v;

        json_object_foreach(doc, k, v) check_one(v);
    } else if (json_is_array(doc)) {
        size_t i;
        json_t *v;

        json_array_foreach(doc, i, v) check_one(v);
    }
    json_decref(doc);
    return 0;
}
