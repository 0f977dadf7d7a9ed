/*
 * fuzz_catalog.c - the provider catalogue loader (libyaml -> structs, PCRE2 patterns) and the
 * per-field validator.
 *
 * Input: the first line is a value, the rest is providers.yaml text. When the YAML loads, every
 * provider is looked up by name, its JSON form must parse, and the value (and each field's own
 * example/default) is validated against every connection_config and credentials field.
 * Invariants: no crash/leak/UB; a value accepted by a field with an enum is one of the enum
 * values; a value accepted by a "hostname" field holds only letters, digits, '-' and '.'; no
 * accepted value holds control characters; error messages are NUL-terminated.
 */
#include <string.h>

#include <jansson.h>

#include "domain/catalog.h"
#include "fuzz.h"

static void
check_field(const struct catalog_field *f, const char *value)
{
    struct latch_err err;
    latch_rc rc;

    latch_err_clear(&err);
    rc = catalog_field_validate(f, value, &err);
    FUZZ_CHECK(memchr(err.msg, '\0', sizeof err.msg) != NULL);
    if (rc != LATCH_OK) {
        FUZZ_CHECK(rc == LATCH_E_INVAL || rc == LATCH_E_NOMEM);
        return;
    }
    if (value[0] == '\0')
        return; /* optional field left empty */
    for (const unsigned char *p = (const unsigned char *)value; *p != '\0'; p++)
        FUZZ_CHECK(*p >= 0x20 && *p != 0x7f);
    if (f->n_enum > 0) {
        bool found = false;

        for (size_t i = 0; i < f->n_enum; i++)
            if (f->enum_values[i] != NULL && strcmp(f->enum_values[i], value) == 0)
                found = true;
        FUZZ_CHECK(found);
    }
    if (f->format != NULL && strcmp(f->format, "hostname") == 0)
        FUZZ_CHECK(strspn(value, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                 "0123456789-.") == strlen(value));
}

static void
check_fields(const struct catalog_field *fields, size_t n, const char *value)
{
    for (size_t i = 0; i < n; i++) {
        const struct catalog_field *f = &fields[i];

        FUZZ_CHECK(f->name != NULL);
        FUZZ_CHECK(catalog_find_field(fields, n, f->name) != NULL);
        check_field(f, value);
        if (f->example != NULL)
            check_field(f, f->example);
        if (f->default_value != NULL)
            check_field(f, f->default_value);
        for (size_t k = 0; k < f->n_enum; k++)
            if (f->enum_values[k] != NULL)
                check_field(f, f->enum_values[k]);
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    size_t vlen = nl != NULL ? (size_t)(nl - data) : size;
    char *value;
    struct catalog *c = NULL;
    struct latch_err err;
    latch_rc rc;

    if (size > 256 * 1024)
        return 0;
    value = malloc(vlen + 1);
    FUZZ_CHECK(value != NULL);
    memcpy(value, data, vlen);
    value[vlen] = '\0';
    latch_err_clear(&err);
    rc = catalog_load_buffer(nl != NULL ? (const char *)nl + 1 : "",
                             nl != NULL ? size - vlen - 1 : 0, "fuzz.yaml", &c, &err);
    FUZZ_CHECK(memchr(err.msg, '\0', sizeof err.msg) != NULL);
    if (rc != LATCH_OK) {
        FUZZ_CHECK(c == NULL);
        goto out;
    }
    FUZZ_CHECK(c != NULL);
    for (size_t i = 0; i < catalog_count(c); i++) {
        const struct catalog_provider *p = catalog_at(c, i);
        json_t *j;

        FUZZ_CHECK(p != NULL && p->name != NULL);
        FUZZ_CHECK(catalog_find(c, p->name) == p);
        if (p->json != NULL) {
            j = json_loads(p->json, 0, NULL);
            FUZZ_CHECK(j != NULL);
            json_decref(j);
        }
        check_fields(p->connection_config, p->n_connection_config, value);
        check_fields(p->credentials, p->n_credentials, value);
    }
    FUZZ_CHECK(catalog_at(c, catalog_count(c)) == NULL);
    catalog_free(c);
out:
    free(value);
    return 0;
}
