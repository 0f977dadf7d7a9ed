/*
 * fuzz_tmpl.c - the ${...} template interpreter with a lookup over a fixed map.
 *
 * Input: byte 0 = flags (bit 0: TMPL_URL_ENCODE; bits 1-3 pick the output size), the rest is
 * the template (as a C string: it stops at the first NUL, as every caller's string would).
 * Invariants: no overrun of the exact-size output block, the result is NUL-terminated, an error
 * leaves a NUL-terminated message, evaluation is deterministic, a template without "${" never
 * calls the lookup, and URL-encoded output only contains encodeURIComponent's characters plus
 * the template's own text.
 */
#include <string.h>

#include "fuzz.h"
#include "core/latch_limits.h"
#include "domain/tmpl.h"

static const char *const vars[][2] = {
    {"connectionConfig.instance", "app.ninjarmm.com"},
    {"connectionConfig.subdomain", "acme"},
    {"connectionConfig.empty", ""},
    {"connectionConfig.weird", "a b&c=d/e?f#g%h\"i'j<k>l\\m\xc3\xa9n\r\n"},
    {"credentials.username", "user@example.com"},
    {"credentials.password", "p@ss:w/rd"},
    {"credentials.apiKey", "k-123"},
    {"accessToken", "tok.en-123_abc"},
    {"apiKey", "AKIA-FUZZ"},
    {"connectionConfig.long", NULL}, /* filled with a long value at start-up */
};

static char long_value[LATCH_MAX_TMPL_OUTPUT + 64];
static unsigned lookups;

static const char *
lookup(const char *name, void *ud)
{
    (void)ud;
    FUZZ_CHECK(name != NULL);
    lookups++;
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (strcmp(name, vars[i][0]) == 0)
            return vars[i][1] != NULL ? vars[i][1] : long_value;
    return NULL;
}

static const size_t out_sizes[8] = {1, 2, 8, 17, 64, 512, LATCH_MAX_TMPL_OUTPUT, 8192};

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *tmpl, *out1, *out2;
    size_t out_size;
    unsigned flags;
    struct latch_err err;
    latch_rc rc1, rc2;
    unsigned before;

    if (size < 1 || size > 8192)
        return 0;
    if (long_value[0] == '\0')
        memset(long_value, 'L', sizeof long_value - 1);
    flags = (data[0] & 1u) ? TMPL_URL_ENCODE : 0;
    out_size = out_sizes[(data[0] >> 1) & 7u];
    tmpl = malloc(size);
    FUZZ_CHECK(tmpl != NULL);
    memcpy(tmpl, data + 1, size - 1);
    tmpl[size - 1] = '\0';
    out1 = malloc(out_size);
    out2 = malloc(out_size);
    FUZZ_CHECK(out1 != NULL && out2 != NULL);

    latch_err_clear(&err);
    before = lookups;
    rc1 = tmpl_eval(tmpl, lookup, NULL, flags, out1, out_size, &err);
    FUZZ_CHECK(memchr(err.msg, '\0', sizeof err.msg) != NULL);
    if (strstr(tmpl, "${") == NULL)
        FUZZ_CHECK(lookups == before);
    FUZZ_CHECK((tmpl_has_placeholders(tmpl) != 0) == (strstr(tmpl, "${") != NULL));
    if (rc1 == LATCH_OK) {
        FUZZ_CHECK(memchr(out1, '\0', out_size) != NULL);
        if (flags & TMPL_URL_ENCODE) {
            /* substituted values are encoded: no raw CR/LF can come from a variable */
            if (strpbrk(tmpl, "\r\n") == NULL)
                FUZZ_CHECK(strpbrk(out1, "\r\n") == NULL);
        }
    } else {
        FUZZ_CHECK(rc1 == LATCH_E_INVAL || rc1 == LATCH_E_TOO_LARGE);
    }
    rc2 = tmpl_eval(tmpl, lookup, NULL, flags, out2, out_size, NULL);
    FUZZ_CHECK(rc1 == rc2);
    if (rc1 == LATCH_OK)
        FUZZ_CHECK(strcmp(out1, out2) == 0);
    free(out2);
    free(out1);
    free(tmpl);
    return 0;
}
