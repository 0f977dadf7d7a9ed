/*
 * test_credcache.c - the hot cache of reads: hits give back the row and the credentials, bounds
 * by count and by bytes (over all shards) evict the least recently used entries and wipe them,
 * drops and rejects count as invalidations, old entries age out, a put under an older write clock
 * never replaces a newer entry, and many threads reading and writing at once keep the counts
 * consistent.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <sys/mman.h>
#include <stdatomic.h>

#include "crypto/secmem.h"
#include "domain/credcache.h"
#include "util/xalloc.h"

/*
 * secmem stand-ins (this program links them instead of crypto/secmem.c): count the secret
 * buffers released and check each held credentials, so a cache that freed its secrets any other
 * way (or not at all) fails the wipe assertions below.
 */
static atomic_size_t secrets_alloc, secrets_wiped;

void *
secmem_alloc(size_t n)
{
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    assert_true(p != MAP_FAILED);
    atomic_fetch_add(&secrets_alloc, 1);
    return p;
}

void
secmem_free(void *p, size_t n)
{
    if (p == NULL)
        return;
    if (strstr(p, "access_token") != NULL)
        atomic_fetch_add(&secrets_wiped, 1);
    explicit_bzero(p, n);
    (void)munmap(p, n);
}

static void
mk_row(struct store_connection *r, int64_t id, const char *cid)
{
    memset(r, 0, sizeof *r);
    r->id = id;
    r->env_id = 1;
    r->uid = xstrdup("uid");
    r->connection_id = xstrdup(cid);
    r->provider_config_key = xstrdup("int1");
    r->provider = xstrdup("ninjaone");
    r->credentials_sealed = xstrdup("sealed");
    r->version = 1;
}

static void
put(struct credcache *cc, int64_t id, const char *cid, const char *token, uint64_t clock)
{
    struct store_connection r;
    char text[128];

    (void)snprintf(text, sizeof text, "{\"type\":\"OAUTH2\",\"access_token\":\"%s\"}", token);
    mk_row(&r, id, cid);
    credcache_put(cc, &r, text, strlen(text), clock, 1000);
    store_connection_clear(&r);
}

/* The token of cid's entry, or NULL on a miss (into buf). */
static const char *
get(struct credcache *cc, const char *cid, char *buf, size_t n, uint64_t *clock)
{
    struct store_connection r;
    json_t *creds = NULL;
    uint64_t ck = 0;

    if (!credcache_get(cc, 1, "int1", cid, 1000, &r, &creds, &ck))
        return NULL;
    assert_null(r.credentials_sealed); /* the sealed column is never kept */
    assert_string_equal(r.connection_id, cid);
    (void)snprintf(buf, n, "%s", json_string_value(json_object_get(creds, "access_token")));
    if (clock != NULL)
        *clock = ck;
    json_decref(creds);
    store_connection_clear(&r);
    return buf;
}

static void
test_hit_miss_and_replace(void **state)
{
    struct credcache_opts o = {64, 1 << 22, 0};
    struct credcache *cc = credcache_new(&o);
    struct credcache_stats st;
    char buf[64];
    uint64_t clock = 0;

    (void)state;
    assert_null(get(cc, "a", buf, sizeof buf, NULL));
    put(cc, 1, "a", "tok-1", 5);
    assert_string_equal(get(cc, "a", buf, sizeof buf, &clock), "tok-1");
    assert_int_equal(clock, 5);
    /* an older read never replaces a newer entry */
    put(cc, 1, "a", "tok-old", 4);
    assert_string_equal(get(cc, "a", buf, sizeof buf, NULL), "tok-1");
    put(cc, 1, "a", "tok-2", 6);
    assert_string_equal(get(cc, "a", buf, sizeof buf, NULL), "tok-2");
    credcache_stats(cc, &st);
    assert_int_equal(st.hits, 3);
    assert_int_equal(st.misses, 1);
    assert_int_equal(st.entries, 1);
    assert_true(st.wiped > 0); /* the replaced entry's pages */
    credcache_drop(cc, 1, "int1", "a");
    assert_null(get(cc, "a", buf, sizeof buf, NULL));
    put(cc, 1, "a", "tok-3", 7);
    credcache_reject(cc, 1, "int1", "a");
    credcache_stats(cc, &st);
    assert_int_equal(st.invalidations, 2);
    assert_int_equal(st.entries, 0);
    assert_int_equal(st.bytes, 0);
    credcache_free(cc);
    /* off */
    o.max_entries = 0;
    assert_null(credcache_new(&o));
    assert_null(get(NULL, "a", buf, sizeof buf, NULL));
}

static void
test_bound_by_count(void **state)
{
    struct credcache_opts o = {CREDCACHE_SHARDS, 1 << 24, 0};
    struct credcache *cc = credcache_new(&o);
    struct credcache_stats st;
    char cid[32], buf[64];
    size_t w0 = atomic_load(&secrets_wiped);

    (void)state;
    for (int i = 0; i < 200; i++) {
        (void)snprintf(cid, sizeof cid, "c%d", i);
        put(cc, i + 1, cid, "tok", 1);
    }
    credcache_stats(cc, &st);
    assert_int_equal(st.entries, CREDCACHE_SHARDS);
    /* every evicted entry's secrets went through secmem_free, which wipes */
    assert_int_equal(atomic_load(&secrets_wiped), w0 + st.evictions);
    assert_int_equal(st.entries + st.evictions, 200);
    assert_non_null(get(cc, "c199", buf, sizeof buf, NULL)); /* the newest stays */
    assert_true(st.wiped >= st.evictions * 4096 / 2); /* every evicted page went through secmem */
    credcache_free(cc);
    /* and the rest at credcache_free (shutdown) */
    assert_int_equal(atomic_load(&secrets_wiped), w0 + 200);
}

static void
test_bound_by_bytes(void **state)
{
    /* room for about 32 entries (one secmem page + the row each) */
    struct credcache_opts o = {100000, 32 * 5000, 0};
    struct credcache *cc = credcache_new(&o);
    struct credcache_stats st;
    char cid[32], buf[64];

    (void)state;
    for (int i = 0; i < 500; i++) {
        (void)snprintf(cid, sizeof cid, "c%d", i);
        put(cc, i + 1, cid, "tok", 1);
    }
    credcache_stats(cc, &st);
    assert_true(st.bytes <= o.max_bytes);
    assert_true(st.entries <= 37 && st.entries >= 30);
    assert_int_equal(st.entries + st.evictions, 500);
    /* the most recent key is still there */
    assert_non_null(get(cc, "c499", buf, sizeof buf, NULL));
    /* a credential larger than a quarter of the budget is not cached */
    {
        static char big[50000];
        struct store_connection r;

        memset(big, 'x', sizeof big - 1);
        memcpy(big, "{\"access_token\":\"", 17);
        memcpy(big + sizeof big - 3, "\"}", 3);
        mk_row(&r, 9999, "big");
        credcache_put(cc, &r, big, strlen(big), 1, 1000);
        store_connection_clear(&r);
        assert_null(get(cc, "big", buf, sizeof buf, NULL));
    }
    credcache_free(cc);
}

static void
test_max_age(void **state)
{
    struct credcache_opts o = {64, 1 << 22, 500};
    struct credcache *cc = credcache_new(&o);
    struct store_connection r;
    json_t *creds = NULL;
    uint64_t clock;

    (void)state;
    put(cc, 1, "a", "tok", 1); /* born at 1000 */
    assert_true(credcache_get(cc, 1, "int1", "a", 1499, &r, &creds, &clock));
    json_decref(creds);
    store_connection_clear(&r);
    assert_false(credcache_get(cc, 1, "int1", "a", 1500, &r, &creds, &clock));
    assert_null(creds);
    credcache_free(cc);
}

static void
test_touch(void **state)
{
    struct credcache_opts o = {64, 1 << 22, 0};
    struct credcache *cc = credcache_new(&o);
    struct store_connection r;
    json_t *creds = NULL;
    uint64_t clock;

    (void)state;
    put(cc, 1, "a", "tok", 1);
    credcache_touch(cc, 1, "int1", "a", 777);
    assert_true(credcache_get(cc, 1, "int1", "a", 1000, &r, &creds, &clock));
    assert_int_equal(r.last_fetched_at, 777);
    json_decref(creds);
    store_connection_clear(&r);
    credcache_free(cc);
}

/* The prepared answer of a variant for cid, or NULL (then creds were parsed); into buf. */
static const char *
get_body(struct credcache *cc, const char *cid, int variant, int64_t min_fetched, char *buf,
         size_t n, uint64_t *serial)
{
    struct store_connection r;
    json_t *creds = NULL;
    uint64_t ck = 0;
    struct credcache_hit hit = {variant, min_fetched, NULL, 0, 0};
    const char *out = NULL;

    if (!credcache_get_ex(cc, 1, "int1", cid, 1000, &r, &creds, &ck, &hit))
        return NULL;
    if (serial != NULL)
        *serial = hit.serial;
    if (hit.body != NULL) {
        assert_null(creds); /* nothing parsed */
        assert_int_equal(hit.body_len, strlen(hit.body));
        (void)snprintf(buf, n, "%s", hit.body);
        free(hit.body);
        out = buf;
    } else {
        assert_non_null(creds);
        (void)snprintf(buf, n, "-");
        out = buf;
    }
    json_decref(creds);
    store_connection_clear(&r);
    return out;
}

static void
test_prepared_body(void **state)
{
    struct credcache_opts o = {64, 1 << 22, 0};
    struct credcache *cc = credcache_new(&o);
    struct store_connection r;
    struct credcache_stats st;
    char buf[64];
    uint64_t s1, s2, s3, b0;

    (void)state;
    mk_row(&r, 1, "a");
    s1 = credcache_put(cc, &r, "{\"t\":1}", 7, 1, 1000);
    assert_true(s1 != 0);
    credcache_stats(cc, &st);
    b0 = st.bytes;
    /* no body yet: the credentials are parsed */
    assert_string_equal(get_body(cc, "a", 0, 0, buf, sizeof buf, &s2), "-");
    assert_true(s2 == s1);
    credcache_put_body(cc, 1, "int1", "a", s1, 0, "BODY0", 5);
    credcache_put_body(cc, 1, "int1", "a", s1, 1, "BODY1", 5);
    credcache_put_body(cc, 1, "int1", "a", s1, 2, "BAD", 3); /* no such variant */
    credcache_stats(cc, &st);
    assert_true(st.bytes == b0 + 2 * (size_t)sysconf(_SC_PAGESIZE)); /* counted in the bound */
    assert_string_equal(get_body(cc, "a", 0, 0, buf, sizeof buf, NULL), "BODY0");
    assert_string_equal(get_body(cc, "a", 1, 0, buf, sizeof buf, NULL), "BODY1");
    assert_string_equal(get_body(cc, "a", -1, 0, buf, sizeof buf, NULL), "-");
    /* a row whose last_fetched_at will move (older than asked): no body */
    assert_string_equal(get_body(cc, "a", 0, 1, buf, sizeof buf, NULL), "-");
    credcache_stats(cc, &st);
    assert_int_equal(st.body_hits, 2);

    /* a touch moves last_fetched_at, which the body quotes: the bodies go, the serial moves */
    s2 = credcache_touch_ex(cc, 1, "int1", "a", s1, 500);
    assert_true(s2 != 0 && s2 != s1);
    credcache_stats(cc, &st);
    assert_true(st.bytes == b0);
    assert_string_equal(get_body(cc, "a", 0, 0, buf, sizeof buf, NULL), "-");
    /* a body built from the row before the touch does not attach */
    credcache_put_body(cc, 1, "int1", "a", s1, 0, "OLD", 3);
    assert_string_equal(get_body(cc, "a", 0, 0, buf, sizeof buf, NULL), "-");
    /* a touch under a stale serial changes nothing */
    assert_true(credcache_touch_ex(cc, 1, "int1", "a", s1, 900) == 0);
    credcache_put_body(cc, 1, "int1", "a", s2, 0, "NEW", 3);
    assert_string_equal(get_body(cc, "a", 0, 0, buf, sizeof buf, NULL), "NEW");

    /* a new put (a re-read after a write) replaces the entry and its bodies */
    s3 = credcache_put(cc, &r, "{\"t\":2}", 7, 2, 1000);
    assert_true(s3 != 0 && s3 != s2);
    assert_string_equal(get_body(cc, "a", 0, 0, buf, sizeof buf, NULL), "-");
    credcache_put_body(cc, 1, "int1", "a", s2, 0, "STALE", 5);
    assert_string_equal(get_body(cc, "a", 0, 0, buf, sizeof buf, NULL), "-");
    credcache_put_body(cc, 1, "int1", "a", s3, 0, "BODY", 4);
    assert_string_equal(get_body(cc, "a", 0, 0, buf, sizeof buf, NULL), "BODY");

    /* drop wipes the body with the entry; nothing is left in the bounds */
    credcache_drop(cc, 1, "int1", "a");
    assert_null(get_body(cc, "a", 0, 0, buf, sizeof buf, NULL));
    credcache_stats(cc, &st);
    assert_int_equal(st.bytes, 0);
    assert_int_equal(st.entries, 0);
    store_connection_clear(&r);
    credcache_free(cc);
}

static void
test_prepared_body_bound(void **state)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    /* room for the entry (one page + row) and one more page, not two */
    struct credcache_opts o = {64, 8 * page, 0};
    struct credcache *cc = credcache_new(&o);
    struct store_connection r;
    struct credcache_stats st;
    char buf[64];
    char *big = xmalloc(2 * page);
    uint64_t s1;

    (void)state;
    memset(big, 'x', 2 * page);
    big[2 * page - 1] = '\0';
    mk_row(&r, 1, "a");
    s1 = credcache_put(cc, &r, "{\"t\":1}", 7, 1, 1000);
    assert_true(s1 != 0);
    /* an entry may hold at most a quarter of the bytes: a 2-page body does not fit */
    credcache_put_body(cc, 1, "int1", "a", s1, 0, big, 2 * page - 1);
    assert_string_equal(get_body(cc, "a", 0, 0, buf, sizeof buf, NULL), "-");
    credcache_stats(cc, &st);
    assert_true(st.bytes <= o.max_bytes);
    free(big);
    store_connection_clear(&r);
    credcache_free(cc);
}

static struct credcache *shared;

static void *
hammer(void *arg)
{
    int t = (int)(intptr_t)arg;
    char cid[32], buf[64], tok[32];

    for (int i = 0; i < 3000; i++) {
        int k = (i * 7 + t) % 300;

        (void)snprintf(cid, sizeof cid, "c%d", k);
        (void)snprintf(tok, sizeof tok, "tok-%d", k);
        if (i % 3 == 0)
            put(shared, k + 1, cid, tok, (uint64_t)i);
        else if (i % 17 == 0)
            credcache_drop(shared, 1, "int1", cid);
        else if (i % 5 == 1) {
            uint64_t serial = 0;
            const char *b = get_body(shared, cid, 0, 0, buf, sizeof buf, &serial);

            if (b != NULL && strcmp(b, "-") != 0)
                assert_string_equal(b, tok); /* never another key's prepared answer */
            else if (b != NULL)
                credcache_put_body(shared, 1, "int1", cid, serial, 0, tok, strlen(tok));
        } else if (get(shared, cid, buf, sizeof buf, NULL) != NULL)
            assert_string_equal(buf, tok); /* never another key's credentials */
    }
    return NULL;
}

static void
test_threads(void **state)
{
    struct credcache_opts o = {128, 1 << 22, 0};
    pthread_t th[8];
    struct credcache_stats st;

    (void)state;
    shared = credcache_new(&o);
    for (int i = 0; i < 8; i++)
        assert_int_equal(pthread_create(&th[i], NULL, hammer, (void *)(intptr_t)i), 0);
    for (int i = 0; i < 8; i++)
        pthread_join(th[i], NULL);
    credcache_stats(shared, &st);
    assert_true(st.entries <= 128);
    assert_true(st.bytes <= o.max_bytes);
    assert_true(st.hits + st.misses > 0);
    credcache_free(shared);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hit_miss_and_replace),
        cmocka_unit_test(test_bound_by_count),
        cmocka_unit_test(test_bound_by_bytes),
        cmocka_unit_test(test_max_age),
        cmocka_unit_test(test_touch),
        cmocka_unit_test(test_prepared_body),
        cmocka_unit_test(test_prepared_body_bound),
        cmocka_unit_test(test_threads),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
