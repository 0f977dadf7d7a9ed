#include "api/api_validate.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "api/api.h"
#include "domain/catalog.h"
#include "core/latch_limits.h"

static bool
str_len_ok(json_t *v, size_t min, size_t max)
{
    return json_is_string(v) && json_string_length(v) >= min && json_string_length(v) <= max &&
           strlen(json_string_value(v)) == json_string_length(v);
}

static bool
email_ok(const char *s)
{
    const char *at = strchr(s, '@');

    return strlen(s) >= 5 && at != NULL && at != s && strchr(at + 1, '.') != NULL &&
           strchr(at + 1, '@') == NULL && strpbrk(s, " \t\r\n") == NULL;
}

json_t *
apiv_organization(json_t *v, const char *field, json_t *errors)
{
    static const char *const allowed[] = {"id", "display_name", NULL};
    const char *const path[] = {field, NULL};
    size_t before = json_array_size(errors);

    if (!json_is_object(v)) {
        api_issue(errors, "invalid_type", "Expected an object", path);
        return NULL;
    }
    api_strict_keys(v, allowed, path, errors);
    if (!str_len_ok(json_object_get(v, "id"), 0, LATCH_MAX_ID_LEN)) {
        const char *const p[] = {field, "id", NULL};

        api_issue(errors, "invalid_type", "Expected a string of at most 255 characters", p);
    }
    if (json_object_get(v, "display_name") != NULL &&
        !str_len_ok(json_object_get(v, "display_name"), 0, LATCH_MAX_ID_LEN)) {
        const char *const p[] = {field, "display_name", NULL};

        api_issue(errors, "invalid_type", "Expected a string of at most 255 characters", p);
    }
    if (json_array_size(errors) > before)
        return NULL;
    return json_pack("{s:O, s:O}", "id", json_object_get(v, "id"), "display_name",
                     json_object_get(v, "display_name") ? json_object_get(v, "display_name")
                                                        : json_null());
}

json_t *
apiv_tags(json_t *v, const char *field, json_t *errors)
{
    const char *const path[] = {field, NULL};
    json_t *out;
    const char *k;
    json_t *val;
    size_t before = json_array_size(errors);

    if (!json_is_object(v)) {
        api_issue(errors, "invalid_type", "Expected an object of strings", path);
        return NULL;
    }
    if (json_object_size(v) > LATCH_MAX_TAGS)
        api_issue(errors, "too_big", "At most 10 tags are allowed", path);
    out = json_object();
    json_object_foreach(v, k, val)
    {
        char low[LATCH_MAX_TAG_KEY_LEN + 1];
        size_t n = strlen(k);
        bool ok = n >= 1 && n <= LATCH_MAX_TAG_KEY_LEN && isalpha((unsigned char)k[0]);

        for (size_t i = 0; ok && i < n; i++) {
            unsigned char ch = (unsigned char)k[i];

            if (!isalnum(ch) && ch != '_' && ch != '-' && ch != '.' && ch != '/')
                ok = false;
        }
        if (!ok) {
            api_issue(errors, "invalid_string",
                      "Tag keys must start with a letter and contain only letters, digits, "
                      "_ - . / (at most 64 characters)",
                      path);
            continue;
        }
        for (size_t i = 0; i <= n; i++)
            low[i] = (char)tolower((unsigned char)k[i]);
        if (json_object_get(out, low) != NULL) {
            api_issue(errors, "custom", "Duplicate tag key (keys are case-insensitive)", path);
            continue;
        }
        if (!str_len_ok(val, 1, LATCH_MAX_TAG_VALUE_LEN)) {
            const char *const p[] = {field, k, NULL};

            api_issue(errors, "invalid_type", "Tag values must be strings of 1 to 255 characters",
                      p);
            continue;
        }
        if (strcmp(low, "end_user_email") == 0 && !email_ok(json_string_value(val))) {
            const char *const p[] = {field, k, NULL};

            api_issue(errors, "invalid_string", "end_user_email must be an email", p);
            continue;
        }
        json_object_set(out, low, val);
    }
    if (json_array_size(errors) > before) {
        json_decref(out);
        return NULL;
    }
    return out;
}

json_t *
apiv_end_user(json_t *v, const char *field, json_t *errors)
{
    static const char *const allowed[] = {"id",   "email",        "display_name",
                                          "tags", "organization", NULL};
    const char *const path[] = {field, NULL};
    size_t before = json_array_size(errors);
    json_t *out, *tags = NULL, *org = NULL;

    if (!json_is_object(v)) {
        api_issue(errors, "invalid_type", "Expected an object", path);
        return NULL;
    }
    api_strict_keys(v, allowed, path, errors);
    if (!str_len_ok(json_object_get(v, "id"), 1, LATCH_MAX_ID_LEN)) {
        const char *const p[] = {field, "id", NULL};

        api_issue(errors, "invalid_type",
                  json_object_get(v, "id") == NULL
                      ? "Invalid input: expected string, received undefined"
                      : "Expected a string of 1 to 255 characters",
                  p);
    }
    if (json_object_get(v, "email") != NULL && !json_is_null(json_object_get(v, "email")) &&
        (!str_len_ok(json_object_get(v, "email"), 5, LATCH_MAX_ID_LEN) ||
         !email_ok(json_string_value(json_object_get(v, "email"))))) {
        const char *const p[] = {field, "email", NULL};

        api_issue(errors, "invalid_string", "Invalid email", p);
    }
    if (json_object_get(v, "display_name") != NULL &&
        !json_is_null(json_object_get(v, "display_name")) &&
        !str_len_ok(json_object_get(v, "display_name"), 0, LATCH_MAX_ID_LEN)) {
        const char *const p[] = {field, "display_name", NULL};

        api_issue(errors, "invalid_type", "Expected a string of at most 255 characters", p);
    }
    if (json_object_get(v, "tags") != NULL && !json_is_null(json_object_get(v, "tags"))) {
        char f[64];

        (void)snprintf(f, sizeof f, "%s.tags", field);
        tags = apiv_tags(json_object_get(v, "tags"), f, errors);
    }
    if (json_object_get(v, "organization") != NULL &&
        !json_is_null(json_object_get(v, "organization")))
        org = apiv_organization(json_object_get(v, "organization"), "organization", errors);
    if (json_array_size(errors) > before) {
        json_decref(tags);
        json_decref(org);
        return NULL;
    }
    out = json_pack("{s:O}", "id", json_object_get(v, "id"));
    json_object_set_new(out, "email",
                        json_is_string(json_object_get(v, "email"))
                            ? json_deep_copy(json_object_get(v, "email"))
                            : json_null());
    json_object_set_new(out, "display_name",
                        json_is_string(json_object_get(v, "display_name"))
                            ? json_deep_copy(json_object_get(v, "display_name"))
                            : json_null());
    json_object_set_new(out, "tags", tags != NULL ? tags : json_null());
    json_object_set_new(out, "organization", org != NULL ? org : json_null());
    return out;
}

json_t *
apiv_tags_from_end_user(const json_t *end_user, const json_t *organization)
{
    json_t *t = json_object();
    const json_t *org = organization;

    if (json_is_object(end_user)) {
        json_t *v = json_object_get(end_user, "id");

        if (json_is_string(v))
            json_object_set(t, "end_user_id", v);
        v = json_object_get(end_user, "email");
        if (json_is_string(v) && email_ok(json_string_value(v)))
            json_object_set(t, "end_user_email", v);
        v = json_object_get(end_user, "display_name");
        if (json_is_string(v) && json_string_length(v) > 0)
            json_object_set(t, "end_user_display_name", v);
        if (org == NULL || json_is_null(org))
            org = json_object_get(end_user, "organization");
    }
    if (json_is_object(org)) {
        json_t *v = json_object_get(org, "id");

        if (json_is_string(v) && json_string_length(v) > 0)
            json_object_set(t, "organization_id", v);
        v = json_object_get(org, "display_name");
        if (json_is_string(v) && json_string_length(v) > 0)
            json_object_set(t, "organization_display_name", v);
    }
    return t;
}

bool
apiv_webhook_url(json_t *v, const char *field, json_t *errors)
{
    const char *const path[] = {field, NULL};
    const char *s = json_string_value(v);

    if (!json_is_string(v) || json_string_length(v) > LATCH_MAX_URL_LEN) {
        api_issue(errors, "invalid_type", "Expected a URL string", path);
        return false;
    }
    if (s[0] == '\0')
        return true;
    if ((strncmp(s, "https://", 8) != 0 && strncmp(s, "http://", 7) != 0) ||
        strpbrk(s, " \t\r\n") != NULL || strlen(s) != json_string_length(v)) {
        api_issue(errors, "invalid_string", "Invalid url", path);
        return false;
    }
    return true;
}

json_t *
apiv_connection_config(const struct catalog_provider *p, json_t *cfg, const char *prefix,
                       bool require_declared, json_t *errors)
{
    size_t before = json_array_size(errors);
    json_t *out = json_object();
    const char *k;
    json_t *v;

    if (cfg != NULL && !json_is_object(cfg)) {
        const char *const path[] = {prefix, NULL};

        api_issue(errors, "invalid_type", "Expected an object", path);
        json_decref(out);
        return NULL;
    }
    json_object_foreach(cfg, k, v)
    {
        const struct catalog_field *f =
            catalog_find_field(p->connection_config, p->n_connection_config, k);
        const char *const path[] = {prefix, k, NULL};

        if (f == NULL) {
            /* undeclared keys: keep harmless strings/numbers/bools (Nango keeps them) */
            if (strlen(k) > 64 || json_is_object(v) || json_is_array(v) ||
                (json_is_string(v) && json_string_length(v) > 1024)) {
                api_issue(errors, "custom", "Unsupported connection_config value", path);
                continue;
            }
            json_object_set(out, k, v);
            continue;
        }
        if (!json_is_string(v)) {
            api_issue(errors, "invalid_type", "Expected a string", path);
            continue;
        }
        {
            struct latch_err err;

            latch_err_clear(&err);
            if (strlen(json_string_value(v)) != json_string_length(v) ||
                catalog_field_validate(f, json_string_value(v), &err) != LATCH_OK) {
                api_issue(errors, "invalid_string", err.msg[0] ? err.msg : "Invalid value", path);
                continue;
            }
        }
        json_object_set(out, k, v);
    }
    if (require_declared) {
        for (size_t i = 0; i < p->n_connection_config; i++) {
            const struct catalog_field *f = &p->connection_config[i];

            if (!f->optional && !f->automated && f->default_value == NULL &&
                json_object_get(out, f->name) == NULL) {
                const char *const path[] = {prefix, f->name, NULL};
                char msg[200];

                (void)snprintf(msg, sizeof msg, "%s is required", f->title ? f->title : f->name);
                api_issue(errors, "invalid_type", msg, path);
            }
        }
    }
    if (json_array_size(errors) > before) {
        json_decref(out);
        return NULL;
    }
    return out;
}
