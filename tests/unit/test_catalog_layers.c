/*
 * test_catalog_layers.c - the built-in catalogue as the build makes it: Nango's upstream file
 * with latch's overlay over it (overlay entries win), aliases resolved, linkability computed
 * once per provider. Prints the numbers (providers, linkable per mode, unlinkable reasons).
 * When the build could not fetch the upstream file, only the overlay-only checks run.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "domain/catalog.h"
#include "util/rc.h"

static bool
have_upstream(void)
{
    return strstr(catalog_builtin_origin(), "@nangohq/providers") != NULL;
}

static void
test_layers(void **state)
{
    struct catalog *c = NULL;
    struct latch_err err = {{0}};
    const struct catalog_provider *p;
    size_t n_link = 0;
    static const char *const modes[] = {"OAUTH2_CC", "API_KEY", "BASIC", "TWO_STEP", NULL};

    (void)state;
    assert_int_equal(catalog_load_default(&c, &err), LATCH_OK);
    assert_string_equal(catalog_origin(c), catalog_builtin_origin());
    /* the overlay's NinjaOne entry wins: its refresh margin is latch's own key */
    p = catalog_find(c, "ninjaone-rmm");
    assert_non_null(p);
    assert_int_equal(p->token_expiration_buffer_s, 900);
    assert_true(p->linkable);
    if (!have_upstream()) {
        print_message("built without Nango's catalogue: %zu providers\n", catalog_count(c));
        catalog_free(c);
        skip();
    }
    assert_int_equal(catalog_count(c), 1013);
    /* alias resolved: microsoft-intune is microsoft-oauth2-cc with its own name */
    p = catalog_find(c, "microsoft-intune");
    assert_non_null(p);
    assert_string_equal(p->auth_mode, "OAUTH2_CC");
    assert_string_equal(p->display_name, "Microsoft Intune");
    assert_non_null(p->token_url);
    assert_null(strstr(p->json, "\"alias\""));
    /* needs Nango's post-connection script */
    p = catalog_find(c, "sophos-central");
    assert_false(p->linkable);
    assert_non_null(strstr(p->unlinkable_reason, "post-connection script"));
    /* OAUTH2 (authorization code) is linked, but xero needs Nango's post-connection script */
    p = catalog_find(c, "xero");
    assert_false(p->linkable);
    assert_non_null(strstr(p->unlinkable_reason, "post-connection script"));
    p = catalog_find(c, "ninjaone-rmm-oauth2");
    assert_non_null(p);
    assert_true(p->linkable);
    assert_string_equal(p->display_name, "NinjaOne RMM (OAuth2)");
    assert_int_equal(p->connection_config[0].n_enum, 5);
    for (size_t m = 0; modes[m] != NULL; m++) {
        size_t all = 0, yes = 0;

        for (size_t i = 0; i < catalog_count(c); i++) {
            p = catalog_at(c, i);
            if (p->auth_mode == NULL || strcmp(p->auth_mode, modes[m]) != 0)
                continue;
            all++;
            yes += p->linkable ? 1 : 0;
        }
        print_message("%-9s %3zu of %3zu linkable\n", modes[m], yes, all);
    }
    for (size_t i = 0; i < catalog_count(c); i++) {
        p = catalog_at(c, i);
        if (p->linkable) {
            n_link++;
            assert_null(p->unlinkable_reason);
        } else {
            assert_non_null(p->unlinkable_reason);
            if (catalog_mode_linkable(p->auth_mode))
                print_message("not linkable: %s (%s): %s\n", p->name, p->auth_mode,
                              p->unlinkable_reason);
        }
    }
    print_message("%zu of %zu providers linkable\n", n_link, catalog_count(c));
    catalog_free(c);
}

static void
test_alias_errors(void **state)
{
    struct catalog *c = NULL;
    struct latch_err err = {{0}};
    static const char dangling[] = "a:\n  alias: nope\n  display_name: A\n";
    static const char loop[] = "a:\n  alias: b\nb:\n  alias: a\n";
    static const char chain[] = "base:\n  display_name: Base\n  auth_mode: API_KEY\n"
                                "mid:\n  alias: base\n  display_name: Mid\n"
                                "top:\n  alias: mid\n";

    (void)state;
    assert_int_equal(catalog_load_buffer(dangling, sizeof dangling - 1, "t", &c, &err),
                     LATCH_E_INVAL);
    assert_non_null(strstr(err.msg, "names no provider"));
    assert_int_equal(catalog_load_buffer(loop, sizeof loop - 1, "t", &c, &err), LATCH_E_INVAL);
    assert_int_equal(catalog_load_buffer(chain, sizeof chain - 1, "t", &c, &err), LATCH_OK);
    assert_string_equal(catalog_find(c, "top")->display_name, "Mid");
    assert_string_equal(catalog_find(c, "top")->auth_mode, "API_KEY");
    catalog_free(c);
}

static void
test_overlay_wins(void **state)
{
    struct catalog *c = NULL;
    struct latch_err err = {{0}};
    static const char base[] = "p:\n  display_name: Upstream\n  auth_mode: API_KEY\n"
                               "q:\n  display_name: Q\n  auth_mode: OAUTH2\n";
    static const char over[] = "p:\n  display_name: Overlay\n  auth_mode: BASIC\n";

    (void)state;
    assert_int_equal(catalog_load_layers(base, sizeof base - 1, "base", over, sizeof over - 1,
                                         "over", "test origin", &c, &err),
                     LATCH_OK);
    assert_int_equal(catalog_count(c), 2);
    assert_string_equal(catalog_find(c, "p")->display_name, "Overlay");
    assert_string_equal(catalog_find(c, "p")->auth_mode, "BASIC");
    assert_false(catalog_find(c, "q")->linkable);
    assert_string_equal(catalog_origin(c), "test origin");
    catalog_free(c);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layers),
        cmocka_unit_test(test_alias_errors),
        cmocka_unit_test(test_overlay_wins),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
