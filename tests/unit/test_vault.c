/*
 * test_vault.c - vault: envelopes, tampering, AAD binding, key sources, rotation, lazy reload,
 * fingerprints, index hash, helpers.
 */
#include <sys/stat.h>
#include <sys/wait.h>
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/evp.h>

#include "util/b64.h"
#include "util/xalloc.h"
#include "crypto/vault.h"

struct fx {
    char dir[64];
    char keyfile[128];
};

static int
setup(void **state)
{
    struct fx *f = xcalloc(1, sizeof *f);

    snprintf(f->dir, sizeof f->dir, "/tmp/latch-vault-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(f->keyfile, sizeof f->keyfile, "%s/keys", f->dir);
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    struct fx *f = *state;
    DIR *d = opendir(f->dir);
    struct dirent *de;
    char p[512];

    while (d != NULL && (de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        snprintf(p, sizeof p, "%s/%s", f->dir, de->d_name);
        unlink(p);
    }
    if (d != NULL)
        closedir(d);
    rmdir(f->dir);
    free(f);
    return 0;
}

static void
fill_key(unsigned char k[VAULT_KEY_LEN], unsigned char seed)
{
    size_t i;

    for (i = 0; i < VAULT_KEY_LEN; i++)
        k[i] = (unsigned char)(seed * 31 + i * 7 + 1);
}

static struct vault *
vault_from_seed(unsigned char seed)
{
    unsigned char k[1][VAULT_KEY_LEN];
    struct vault *v = NULL;

    fill_key(k[0], seed);
    assert_int_equal(vault_new_from_keys((const unsigned char(*)[VAULT_KEY_LEN])k, 1, &v),
                     LATCH_OK);
    assert_non_null(v);
    return v;
}

static void
write_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

static size_t
count_key_lines(const char *path)
{
    FILE *fp = fopen(path, "r");
    char line[256];
    size_t n = 0;

    assert_non_null(fp);
    while (fgets(line, sizeof line, fp) != NULL)
        if (line[0] != '#' && line[0] != '\n')
            n++;
    fclose(fp);
    return n;
}

static void
assert_mode_0600(const char *path)
{
    struct stat st;

    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
}

static void
assert_opens_to(struct vault *v, const char *aad, const char *env, const char *want)
{
    unsigned char *pt = NULL;
    size_t n = 0;

    assert_int_equal(vault_open(v, aad, env, &pt, &n), LATCH_OK);
    assert_int_equal(n, strlen(want));
    assert_memory_equal(pt, want, n);
    vault_plain_free(pt, n);
}

static void
assert_open_fails(struct vault *v, const char *aad, const char *env, latch_rc want)
{
    unsigned char *pt = (unsigned char *)1;
    size_t n = 99;

    assert_int_equal(vault_open(v, aad, env, &pt, &n), want);
    assert_null(pt);
    assert_int_equal(n, 0);
}

static char *
envelope_kid_of(const char *env, char out[VAULT_KID_LEN + 1])
{
    assert_int_equal(vault_envelope_kid(env, out), LATCH_OK);
    return out;
}

/* ---- seal / open ---- */

static void
test_round_trip(void **state)
{
    static const struct {
        const char *aad;
        size_t len;
    } cases[] = {{"connections:1:credentials", 0},
                 {"t:r:c", 1},
                 {"", 15},
                 {NULL, 16},
                 {"x", 17},
                 {"a:b:c", 1000},
                 {"configs:9:oauth_client_secret", 65536}};
    struct vault *v = vault_from_seed(1);
    char kid[VAULT_KID_LEN + 1], ekid[VAULT_KID_LEN + 1];
    size_t i, j;

    (void)state;
    vault_primary_kid(v, kid);
    assert_int_equal(strlen(kid), VAULT_KID_LEN);
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        unsigned char *in = xmalloc(cases[i].len + 1), *pt = NULL;
        char *env = NULL, *env2 = NULL;
        char head[16];
        size_t n = 0;

        for (j = 0; j < cases[i].len; j++)
            in[j] = (unsigned char)(j * 13 + i); /* includes NUL bytes */
        assert_int_equal(vault_seal(v, cases[i].aad, in, cases[i].len, &env), LATCH_OK);
        assert_non_null(env);
        snprintf(head, sizeof head, "v2.%s.", kid);
        assert_memory_equal(env, head, strlen(head));
        assert_string_equal(envelope_kid_of(env, ekid), kid);
        /* v2.kid.iv(16).tag(24).ct */
        assert_int_equal(env[3 + 8], '.');
        assert_int_equal(env[3 + 8 + 1 + 16], '.');
        assert_int_equal(env[3 + 8 + 1 + 16 + 1 + 24], '.');
        assert_int_equal(strlen(env),
                         3 + 8 + 1 + 16 + 1 + 24 + 1 + b64_encoded_size(cases[i].len) - 1);

        assert_int_equal(vault_open(v, cases[i].aad, env, &pt, &n), LATCH_OK);
        assert_int_equal(n, cases[i].len);
        assert_memory_equal(pt, in, n);
        assert_int_equal(pt[n], '\0');
        vault_plain_free(pt, n);

        /* random IV: sealing twice gives different envelopes */
        assert_int_equal(vault_seal(v, cases[i].aad, in, cases[i].len, &env2), LATCH_OK);
        assert_string_not_equal(env, env2);
        free(env);
        free(env2);
        free(in);
    }
    vault_free(v);
}

/* Decrypts an envelope with plain OpenSSL and the documented AAD: pins the wire format. */
static void
test_envelope_interop(void **state)
{
    unsigned char k[1][VAULT_KEY_LEN], iv[12], tag[16], ct[64], pt[64];
    const char *aad = "connections:5:credentials", *msg = "interop plaintext";
    struct vault *v;
    EVP_CIPHER_CTX *ctx;
    char *env = NULL, kid[9], full_aad[128];
    size_t n = 0, ctlen = 0;
    int outl = 0, fin = 0;

    (void)state;
    fill_key(k[0], 30);
    assert_int_equal(vault_new_from_keys((const unsigned char(*)[VAULT_KEY_LEN])k, 1, &v),
                     LATCH_OK);
    vault_primary_kid(v, kid);
    assert_int_equal(vault_seal(v, aad, msg, strlen(msg), &env), LATCH_OK);
    assert_int_equal(b64_decode(env + 12, 16, iv, sizeof iv, &n), LATCH_OK);
    assert_int_equal(n, 12);
    assert_int_equal(b64_decode(env + 29, 24, tag, sizeof tag, &n), LATCH_OK);
    assert_int_equal(n, 16);
    assert_int_equal(b64_decode(env + 54, strlen(env + 54), ct, sizeof ct, &ctlen), LATCH_OK);
    assert_int_equal(ctlen, strlen(msg));
    snprintf(full_aad, sizeof full_aad, "latch:v2:%s:%s", kid, aad);

    ctx = EVP_CIPHER_CTX_new();
    assert_non_null(ctx);
    assert_int_equal(EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, k[0], iv), 1);
    assert_int_equal(
        EVP_DecryptUpdate(ctx, NULL, &outl, (const unsigned char *)full_aad, (int)strlen(full_aad)),
        1);
    assert_int_equal(EVP_DecryptUpdate(ctx, pt, &outl, ct, (int)ctlen), 1);
    assert_int_equal(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, 16, tag), 1);
    assert_int_equal(EVP_DecryptFinal_ex(ctx, pt + outl, &fin), 1);
    assert_int_equal(outl + fin, (int)strlen(msg));
    assert_memory_equal(pt, msg, strlen(msg));
    EVP_CIPHER_CTX_free(ctx);
    free(env);
    vault_free(v);
}

static void
test_null_aad_equals_empty(void **state)
{
    struct vault *v = vault_from_seed(2);
    char *env = NULL;

    (void)state;
    assert_int_equal(vault_seal(v, NULL, "hello", 5, &env), LATCH_OK);
    assert_opens_to(v, "", env, "hello");
    assert_open_fails(v, "x", env, LATCH_E_CRYPTO);
    free(env);
    vault_free(v);
}

/* Replaces the character at position pos with a different valid character of the same class. */
static void
flip(char *s, size_t pos)
{
    if (s[pos] >= '0' && s[pos] <= '9')
        s[pos] = s[pos] == '9' ? '0' : (char)(s[pos] + 1);
    else if (s[pos] >= 'a' && s[pos] <= 'f')
        s[pos] = s[pos] == 'f' ? '0' : (char)(s[pos] + 1);
    else
        s[pos] = s[pos] == 'A' ? 'B' : 'A';
}

static void
test_tampering(void **state)
{
    const char *aad = "connections:42:credentials";
    const char *secret = "{\"access_token\":\"s3cr3t-token-value\"}";
    struct vault *v = vault_from_seed(3);
    static const struct {
        const char *what;
        size_t pos;
    } spots[] = {
        {"kid", 3},
        {"kid last", 3 + 7},
        {"iv", 3 + 9},
        {"iv mid", 3 + 9 + 7},
        {"tag", 3 + 9 + 17},
        {"tag mid", 3 + 9 + 17 + 10},
        {"ct", 3 + 9 + 17 + 25},
        {"ct mid", 3 + 9 + 17 + 25 + 20},
    };
    char *env = NULL;
    size_t i;

    (void)state;
    assert_int_equal(vault_seal(v, aad, secret, strlen(secret), &env), LATCH_OK);
    assert_opens_to(v, aad, env, secret);
    for (i = 0; i < sizeof spots / sizeof spots[0]; i++) {
        char *t = xstrdup(env);

        flip(t, spots[i].pos);
        assert_string_not_equal(t, env);
        if (vault_open(v, aad, t, &(unsigned char *){NULL}, &(size_t){0}) != LATCH_E_CRYPTO)
            fail_msg("tampered %s accepted", spots[i].what);
        assert_open_fails(v, aad, t, LATCH_E_CRYPTO);
        free(t);
    }
    /* structural damage */
    {
        char buf[512];
        const char *bad[] = {"", "v2", "v2....", "v1.", "garbage"};

        for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
            assert_open_fails(v, aad, bad[i], LATCH_E_CRYPTO);
        snprintf(buf, sizeof buf, "v3%s", env + 2); /* version */
        assert_open_fails(v, aad, buf, LATCH_E_CRYPTO);
        snprintf(buf, sizeof buf, "%s.AAAA", env); /* extra part */
        assert_open_fails(v, aad, buf, LATCH_E_CRYPTO);
        snprintf(buf, sizeof buf, "%s", env);
        buf[strlen(buf) - 4] = '\0'; /* truncated ciphertext */
        assert_open_fails(v, aad, buf, LATCH_E_CRYPTO);
        snprintf(buf, sizeof buf, "%sAAAA", env); /* extended ciphertext */
        assert_open_fails(v, aad, buf, LATCH_E_CRYPTO);
        snprintf(buf, sizeof buf, "%s", env);
        buf[3] = 'A'; /* upper-case kid is not a kid */
        assert_open_fails(v, aad, buf, LATCH_E_CRYPTO);
        assert_int_equal(vault_envelope_kid(buf, (char[9]){0}), LATCH_E_INVAL);
        snprintf(buf, sizeof buf, "%s", env);
        buf[strlen(buf) - 1] = ' '; /* whitespace in base64 */
        assert_open_fails(v, aad, buf, LATCH_E_CRYPTO);
    }
    /* oversize */
    {
        size_t big = 1024 * 1024 + 10;
        char *huge = xmalloc(big + 1);

        memset(huge, 'A', big);
        memcpy(huge, env, strlen(env));
        huge[big] = '\0';
        assert_open_fails(v, aad, huge, LATCH_E_TOO_LARGE);
        free(huge);
    }
    free(env);
    vault_free(v);
}

static void
test_kid_swap_between_ring_keys(void **state)
{
    unsigned char k[2][VAULT_KEY_LEN];
    struct vault *v = NULL;
    char *env = NULL, *t;
    char kid0[9], kid1[9];
    struct vault *only0;

    (void)state;
    fill_key(k[0], 10);
    fill_key(k[1], 11);
    assert_int_equal(vault_new_from_keys((const unsigned char(*)[VAULT_KEY_LEN])k, 2, &v),
                     LATCH_OK);
    only0 = vault_from_seed(10);
    vault_primary_kid(only0, kid0);
    vault_primary_kid(v, kid1);
    assert_string_not_equal(kid0, kid1);
    assert_true(vault_has_kid(v, kid0));
    assert_true(vault_has_kid(v, kid1));
    assert_int_equal(vault_seal(v, "a", "payload", 7, &env), LATCH_OK);
    assert_memory_equal(env + 3, kid1, 8); /* keys[n-1] is primary */
    /* relabel the envelope as the other (known) key: AAD prefix and key both mismatch */
    t = xstrdup(env);
    memcpy(t + 3, kid0, 8);
    assert_open_fails(v, "a", t, LATCH_E_CRYPTO);
    free(t);
    free(env);
    vault_free(only0);
    vault_free(v);
}

static void
test_row_swap_fails(void **state)
{
    struct vault *v = vault_from_seed(4);
    char *row1 = NULL, *row2 = NULL;

    (void)state;
    assert_int_equal(vault_seal(v, "connections:1:credentials", "alice", 5, &row1), LATCH_OK);
    assert_int_equal(vault_seal(v, "connections:2:credentials", "mallory", 7, &row2), LATCH_OK);
    assert_opens_to(v, "connections:1:credentials", row1, "alice");
    assert_opens_to(v, "connections:2:credentials", row2, "mallory");
    /* swap the rows' ciphertexts */
    assert_open_fails(v, "connections:1:credentials", row2, LATCH_E_CRYPTO);
    assert_open_fails(v, "connections:2:credentials", row1, LATCH_E_CRYPTO);
    /* swap the column */
    assert_open_fails(v, "connections:1:metadata", row1, LATCH_E_CRYPTO);
    free(row1);
    free(row2);
    vault_free(v);
}

static void
test_wrong_key_fails(void **state)
{
    struct vault *a = vault_from_seed(5), *b = vault_from_seed(6);
    char *env = NULL;

    (void)state;
    assert_int_equal(vault_seal(a, "t:1:c", "secret", 6, &env), LATCH_OK);
    assert_open_fails(b, "t:1:c", env, LATCH_E_CRYPTO);
    assert_opens_to(a, "t:1:c", env, "secret");
    free(env);
    vault_free(a);
    vault_free(b);
}

/* ---- key sources ---- */

static void
test_key_file_created_0600_and_reloaded(void **state)
{
    struct fx *f = *state;
    struct vault_opts o = {.key_file = f->keyfile, .create_key_file = true};
    struct latch_err err = {{0}};
    struct vault *v = NULL, *v2 = NULL;
    char kid[9], kid2[9], *env = NULL;

    umask(022);
    assert_int_equal(vault_new(&o, &v, &err), LATCH_OK);
    assert_true(vault_key_file_created(v));
    assert_mode_0600(f->keyfile);
    assert_int_equal(count_key_lines(f->keyfile), 1);
    vault_primary_kid(v, kid);
    assert_int_equal(vault_seal(v, "a", "persist", 7, &env), LATCH_OK);

    /* second start: same file, not created again, same key */
    assert_int_equal(vault_new(&o, &v2, &err), LATCH_OK);
    assert_false(vault_key_file_created(v2));
    vault_primary_kid(v2, kid2);
    assert_string_equal(kid, kid2);
    assert_opens_to(v2, "a", env, "persist");
    free(env);
    vault_free(v);
    vault_free(v2);
}

static void
test_key_file_missing_no_create(void **state)
{
    struct fx *f = *state;
    struct vault_opts o = {.key_file = f->keyfile, .create_key_file = false};
    struct latch_err err = {{0}};
    struct vault *v = (struct vault *)1;

    assert_int_equal(vault_new(&o, &v, &err), LATCH_E_NOT_FOUND);
    assert_null(v);
    assert_non_null(strstr(err.msg, "does not exist"));
    assert_int_equal(access(f->keyfile, F_OK), -1);
    o.key_file = NULL;
    assert_int_equal(vault_new(&o, &v, &err), LATCH_E_INVAL);
}

static void
test_key_file_insecure_rejected(void **state)
{
    struct fx *f = *state;
    static const mode_t modes[] = {0644, 0640, 0604, 0660, 0606, 0610};
    struct vault_opts o = {.key_file = f->keyfile, .create_key_file = true};
    struct latch_err err;
    struct vault *v = NULL;
    char line[64], key[45];
    size_t i;

    vault_new_key_b64(key);
    snprintf(line, sizeof line, "%s\n", key);
    for (i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        write_file(f->keyfile, line, modes[i]);
        err.msg[0] = '\0';
        assert_int_equal(vault_new(&o, &v, &err), LATCH_E_DENIED);
        assert_null(v);
        assert_non_null(strstr(err.msg, "group or others"));
    }
    /* the same file becomes usable once private */
    assert_int_equal(chmod(f->keyfile, 0600), 0);
    assert_int_equal(vault_new(&o, &v, &err), LATCH_OK);
    assert_false(vault_key_file_created(v));
    vault_free(v);
    assert_int_equal(chmod(f->keyfile, 0400), 0);
    assert_int_equal(vault_new(&o, &v, &err), LATCH_OK);
    vault_free(v);
}

static void
test_key_file_format(void **state)
{
    struct fx *f = *state;
    struct vault_opts o = {.key_file = f->keyfile};
    struct latch_err err = {{0}};
    unsigned char k[2][VAULT_KEY_LEN];
    char b0[45], b1[45], text[512], kid_last[9], kid[9];
    struct vault *v = NULL, *ref = NULL;

    (void)state;
    fill_key(k[0], 20);
    fill_key(k[1], 21);
    assert_int_equal(b64_encode(k[0], 32, b0, sizeof b0), LATCH_OK);
    assert_int_equal(b64_encode(k[1], 32, b1, sizeof b1), LATCH_OK);
    ref = vault_from_seed(21);
    vault_primary_kid(ref, kid_last);
    snprintf(text, sizeof text, "# comment\n\n  %s  \r\n# another\n%s\n\n", b0, b1);
    write_file(f->keyfile, text, 0600);
    assert_int_equal(vault_new(&o, &v, &err), LATCH_OK);
    vault_primary_kid(v, kid);
    assert_string_equal(kid, kid_last); /* last key line is primary */
    vault_free(v);

    /* a bad line is reported with its number */
    snprintf(text, sizeof text, "# comment\n%s\nnot-a-key\n", b0);
    write_file(f->keyfile, text, 0600);
    assert_int_equal(vault_new(&o, &v, &err), LATCH_E_INVAL);
    assert_non_null(strstr(err.msg, "line 3"));
    assert_non_null(strstr(err.msg, "encryption key must be base64 of 32 bytes"));

    /* only comments */
    write_file(f->keyfile, "# nothing here\n", 0600);
    assert_int_equal(vault_new(&o, &v, &err), LATCH_E_INVAL);
    vault_free(ref);
}

static void
test_env_key(void **state)
{
    static const struct {
        const char *b64;
        latch_rc want;
    } cases[] = {
        {"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", LATCH_OK},
        {"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGx0e", LATCH_E_INVAL},     /* 30 bytes */
        {"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd", LATCH_E_INVAL},     /* 30 bytes */
        {"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg==", LATCH_E_INVAL}, /* 31 bytes */
        {"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g", LATCH_E_INVAL}, /* 33 bytes */
        {"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUm", LATCH_E_INVAL},
        {"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8", LATCH_E_INVAL},    /* no padding */
        {"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n", LATCH_E_INVAL}, /* newline */
        {" AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", LATCH_E_INVAL},  /* space */
        {"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8-", LATCH_E_INVAL},   /* url alphabet */
        {"", LATCH_E_INVAL},
        {"0123456789abcdef0123456789abcdef", LATCH_E_INVAL}, /* 32 chars, not 32 bytes */
    };
    struct latch_err err;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct vault_opts o = {.env_key_b64 = cases[i].b64};
        struct vault *v = NULL;

        err.msg[0] = '\0';
        if (vault_new(&o, &v, &err) != cases[i].want)
            fail_msg("env key case %zu: unexpected result", i);
        if (cases[i].want == LATCH_OK) {
            char *env = NULL;

            assert_non_null(v);
            assert_false(vault_key_file_created(v));
            assert_int_equal(vault_seal(v, "a", "x", 1, &env), LATCH_OK);
            assert_opens_to(v, "a", env, "x");
            free(env);
            vault_free(v);
        } else {
            assert_null(v);
            assert_non_null(strstr(err.msg, "encryption key must be base64 of 32 bytes"));
        }
    }
}

static void
test_env_key_with_key_file(void **state)
{
    struct fx *f = *state;
    const char *env_b64 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    struct vault_opts file_only = {.key_file = f->keyfile, .create_key_file = true};
    struct vault_opts both = {.env_key_b64 = env_b64, .key_file = f->keyfile};
    struct latch_err err = {{0}};
    struct vault *old = NULL, *v = NULL, *envonly = NULL;
    struct vault_opts eo = {.env_key_b64 = env_b64};
    char *env_old = NULL, *env_new = NULL, kid_env[9], kid[9], newkid[9];

    /* the old key lives in the file; the new one comes from the environment */
    assert_int_equal(vault_new(&file_only, &old, &err), LATCH_OK);
    assert_int_equal(vault_seal(old, "a", "old", 3, &env_old), LATCH_OK);
    assert_int_equal(vault_new(&both, &v, &err), LATCH_OK);
    assert_int_equal(vault_new(&eo, &envonly, &err), LATCH_OK);
    vault_primary_kid(envonly, kid_env);
    vault_primary_kid(v, kid);
    assert_string_equal(kid, kid_env); /* env key is primary */
    assert_opens_to(v, "a", env_old, "old");
    assert_int_equal(vault_seal(v, "a", "new", 3, &env_new), LATCH_OK);
    assert_opens_to(envonly, "a", env_new, "new");
    /* in-place rotation is refused while the primary comes from the environment */
    assert_int_equal(vault_rotate_add_key(v, newkid, &err), LATCH_E_CONFLICT);
    assert_int_equal(vault_retire_key(v, kid_env, &err), LATCH_E_CONFLICT);
    /* env alone cannot rotate either */
    assert_int_equal(vault_rotate_add_key(envonly, newkid, &err), LATCH_E_INVAL);
    free(env_old);
    free(env_new);
    vault_free(old);
    vault_free(v);
    vault_free(envonly);
}

/* ---- rotation ---- */

static void
test_rotation_and_retire(void **state)
{
    struct fx *f = *state;
    struct vault_opts o = {.key_file = f->keyfile, .create_key_file = true};
    struct latch_err err = {{0}};
    struct vault *v = NULL;
    char kid_a[9], kid_b[9], kid_c[9], prim[9], ek[9];
    char fp_a[65], fp_b[65];
    char *env_a = NULL, *env_b = NULL;

    (void)state;
    assert_int_equal(vault_new(&o, &v, &err), LATCH_OK);
    vault_primary_kid(v, kid_a);
    vault_primary_fingerprint(v, fp_a);
    assert_int_equal(vault_seal(v, "t:1:c", "under A", 7, &env_a), LATCH_OK);
    assert_string_equal(envelope_kid_of(env_a, ek), kid_a);

    assert_int_equal(vault_rotate_add_key(v, kid_b, &err), LATCH_OK);
    assert_string_not_equal(kid_a, kid_b);
    vault_primary_kid(v, prim);
    assert_string_equal(prim, kid_b);
    vault_primary_fingerprint(v, fp_b);
    assert_string_not_equal(fp_a, fp_b);
    assert_true(vault_has_fingerprint(v, fp_a)); /* old key retained */
    assert_true(vault_has_kid(v, kid_a));
    assert_mode_0600(f->keyfile);
    assert_int_equal(count_key_lines(f->keyfile), 2);

    /* old envelopes still open; new seals use B */
    assert_opens_to(v, "t:1:c", env_a, "under A");
    assert_int_equal(vault_seal(v, "t:1:c", "under B", 7, &env_b), LATCH_OK);
    assert_string_equal(envelope_kid_of(env_b, ek), kid_b);
    assert_opens_to(v, "t:1:c", env_b, "under B");

    /* retire: the primary is refused, unknown ids are not found, A can go */
    assert_int_equal(vault_retire_key(v, kid_b, &err), LATCH_E_CONFLICT);
    assert_non_null(strstr(err.msg, "primary"));
    assert_int_equal(vault_retire_key(v, "00000000", &err), LATCH_E_NOT_FOUND);
    assert_int_equal(vault_retire_key(v, "not-a-kid", &err), LATCH_E_INVAL);
    assert_int_equal(vault_rotate_add_key(v, kid_c, &err), LATCH_OK);
    assert_int_equal(vault_retire_key(v, kid_a, &err), LATCH_OK);
    assert_false(vault_has_kid(v, kid_a));
    assert_false(vault_has_fingerprint(v, fp_a));
    assert_true(vault_has_kid(v, kid_b));
    assert_int_equal(count_key_lines(f->keyfile), 2);
    assert_mode_0600(f->keyfile);
    assert_open_fails(v, "t:1:c", env_a, LATCH_E_CRYPTO);
    assert_opens_to(v, "t:1:c", env_b, "under B");
    /* B is no longer primary, so it may be retired now */
    assert_int_equal(vault_retire_key(v, kid_b, &err), LATCH_OK);
    assert_int_equal(count_key_lines(f->keyfile), 1);
    vault_primary_kid(v, prim);
    assert_string_equal(prim, kid_c);
    free(env_a);
    free(env_b);
    vault_free(v);
}

static void
test_rotation_needs_key_file(void **state)
{
    struct vault *v = vault_from_seed(7);
    struct latch_err err = {{0}};
    char kid[9];

    (void)state;
    assert_int_equal(vault_rotate_add_key(v, kid, &err), LATCH_E_INVAL);
    assert_int_equal(vault_retire_key(v, "01234567", &err), LATCH_E_INVAL);
    vault_free(v);
}

static void
test_lazy_reload_unknown_kid(void **state)
{
    struct fx *f = *state;
    struct vault_opts o = {.key_file = f->keyfile, .create_key_file = true};
    struct latch_err err = {{0}};
    struct vault *a = NULL, *b = NULL;
    char kid0[9], kid_new[9], prim[9];
    char *env = NULL;

    (void)state;
    assert_int_equal(vault_new(&o, &a, &err), LATCH_OK);
    assert_int_equal(vault_new(&o, &b, &err), LATCH_OK); /* e.g. `latch keys rotate` */
    vault_primary_kid(a, kid0);
    assert_int_equal(vault_rotate_add_key(b, kid_new, &err), LATCH_OK);
    assert_false(vault_has_kid(a, kid_new));
    assert_int_equal(vault_seal(b, "t:7:c", "from b", 6, &env), LATCH_OK);
    assert_memory_equal(env + 3, kid_new, 8);
    /* a does not know kid_new yet: the open re-reads the key file */
    assert_opens_to(a, "t:7:c", env, "from b");
    assert_true(vault_has_kid(a, kid_new));
    vault_primary_kid(a, prim);
    assert_string_equal(prim, kid_new);
    assert_true(vault_has_kid(a, kid0));
    free(env);
    vault_free(a);
    vault_free(b);
}

static void
test_reload_on_mtime_change(void **state)
{
    struct fx *f = *state;
    struct vault_opts o = {.key_file = f->keyfile, .create_key_file = true};
    struct latch_err err = {{0}};
    struct vault *a = NULL, *b = NULL;
    char kid0[9], kid_new[9], ek[9];
    char *env = NULL;

    (void)state;
    assert_int_equal(vault_new(&o, &a, &err), LATCH_OK);
    assert_int_equal(vault_new(&o, &b, &err), LATCH_OK);
    vault_primary_kid(a, kid0);
    assert_int_equal(vault_rotate_add_key(b, kid_new, &err), LATCH_OK);
    /* within the first second a still seals with the old primary (no stat yet) */
    assert_int_equal(vault_seal(a, "x", "1", 1, &env), LATCH_OK);
    assert_string_equal(envelope_kid_of(env, ek), kid0);
    free(env);
    usleep(1100 * 1000);
    assert_int_equal(vault_seal(a, "x", "2", 1, &env), LATCH_OK);
    assert_string_equal(envelope_kid_of(env, ek), kid_new);
    assert_opens_to(b, "x", env, "2");
    free(env);
    vault_free(a);
    vault_free(b);
}

/* ---- fingerprints, index hash ---- */

static bool
is_lower_hex(const char *s, size_t n)
{
    size_t i;

    if (strlen(s) != n)
        return false;
    for (i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

static void
test_fingerprint(void **state)
{
    struct vault *a1 = vault_from_seed(8), *a2 = vault_from_seed(8), *b = vault_from_seed(9);
    char fa1[65], fa2[65], fb[65], ka[9], kb[9];

    (void)state;
    vault_primary_fingerprint(a1, fa1);
    vault_primary_fingerprint(a2, fa2);
    vault_primary_fingerprint(b, fb);
    assert_true(is_lower_hex(fa1, 64));
    assert_string_equal(fa1, fa2);
    assert_string_not_equal(fa1, fb);
    assert_true(vault_has_fingerprint(a1, fa1));
    assert_false(vault_has_fingerprint(a1, fb));
    assert_false(vault_has_fingerprint(a1, "abc"));
    assert_false(vault_has_fingerprint(a1, NULL));
    vault_primary_kid(a1, ka);
    vault_primary_kid(b, kb);
    assert_true(is_lower_hex(ka, 8));
    assert_string_not_equal(ka, kb);
    /* the fingerprint is not the key id's source string */
    assert_memory_not_equal(fa1, ka, 8);
    vault_free(a1);
    vault_free(a2);
    vault_free(b);
}

static void
test_fingerprint_and_kid_vectors(void **state)
{
    /* kid = first 8 hex of HMAC-SHA256(key, "latch key id v1"), fp = full HMAC(key, "... fp v1") */
    unsigned char k[1][VAULT_KEY_LEN];
    struct vault *v;
    char kid[9], fp[65], want[65];

    (void)state;
    fill_key(k[0], 12);
    assert_int_equal(vault_new_from_keys((const unsigned char(*)[VAULT_KEY_LEN])k, 1, &v),
                     LATCH_OK);
    vault_primary_kid(v, kid);
    vault_primary_fingerprint(v, fp);
    vault_hmac_sha256_hex(k[0], 32, "latch key id v1", 15, want);
    assert_memory_equal(kid, want, 8);
    vault_hmac_sha256_hex(k[0], 32, "latch key fingerprint v1", 24, want);
    assert_string_equal(fp, want);
    vault_free(v);
}

static void
test_index_hash(void **state)
{
    unsigned char ik1[VAULT_KEY_LEN], ik2[VAULT_KEY_LEN];
    unsigned char h1[32], h2[32], h3[32], h4[32];
    struct vault *v = vault_from_seed(13), *w = vault_from_seed(14);
    char hex[65], want[65];
    size_t i;

    (void)state;
    fill_key(ik1, 100);
    fill_key(ik2, 101);
    vault_set_index_key(v, ik1);
    vault_set_index_key(w, ik1);
    vault_index_hash(v, "sk_live_abc", h1);
    vault_index_hash(v, "sk_live_abc", h2);
    assert_memory_equal(h1, h2, 32); /* deterministic */
    vault_index_hash(w, "sk_live_abc", h2);
    assert_memory_equal(h1, h2, 32); /* independent of the encryption key */
    vault_index_hash(v, "sk_live_abd", h3);
    assert_memory_not_equal(h1, h3, 32);
    vault_set_index_key(w, ik2);
    vault_index_hash(w, "sk_live_abc", h4);
    assert_memory_not_equal(h1, h4, 32); /* key-dependent */
    /* it is plain HMAC-SHA256(index_key, s) */
    for (i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", h1[i]);
    vault_hmac_sha256_hex(ik1, 32, "sk_live_abc", 11, want);
    assert_string_equal(hex, want);
    vault_free(v);
    vault_free(w);
}

static void
test_index_hash_without_key_aborts(void **state)
{
    pid_t pid;
    int status = 0;

    (void)state;
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct vault *v = vault_from_seed(15);
        unsigned char h[32];
        int devnull = open("/dev/null", O_WRONLY);

        if (devnull >= 0)
            dup2(devnull, STDERR_FILENO);
        vault_index_hash(v, "x", h);
        _exit(0); /* not reached */
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);
}

/* ---- helpers ---- */

static void
test_helpers(void **state)
{
    char u1[37], u2[37], hex[129], key[45], h[65];
    unsigned char raw[64];
    size_t n = 0, i;

    (void)state;
    vault_uuid_v4(u1);
    vault_uuid_v4(u2);
    assert_int_equal(strlen(u1), 36);
    assert_string_not_equal(u1, u2);
    for (i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23)
            assert_int_equal(u1[i], '-');
        else
            assert_true((u1[i] >= '0' && u1[i] <= '9') || (u1[i] >= 'a' && u1[i] <= 'f'));
    }
    assert_int_equal(u1[14], '4');
    assert_non_null(strchr("89ab", u1[19]));

    vault_random_hex(hex, 64);
    assert_true(is_lower_hex(hex, 128));
    vault_random_hex(hex, 16);
    assert_true(is_lower_hex(hex, 32));
    vault_random_hex(hex, 0);
    assert_string_equal(hex, "");

    vault_new_key_b64(key);
    assert_int_equal(strlen(key), 44);
    assert_int_equal(b64_decode(key, 44, raw, sizeof raw, &n), LATCH_OK);
    assert_int_equal(n, 32);

    /* RFC 4231 test case 2 */
    vault_hmac_sha256_hex("Jefe", 4, "what do ya want for nothing?", 28, h);
    assert_string_equal(h, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    /* FIPS 180-2 "abc" and the empty string */
    vault_sha256_hex("abc", 3, h);
    assert_string_equal(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    vault_sha256_hex(NULL, 0, h);
    assert_string_equal(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

/* ---- threads ---- */

struct worker {
    struct vault *v;
    int id;
    int failures;
};

static void *
worker_main(void *arg)
{
    struct worker *w = arg;
    char aad[32], msg[32];
    int i;

    for (i = 0; i < 200; i++) {
        char *env = NULL;
        unsigned char *pt = NULL;
        size_t n = 0;

        snprintf(aad, sizeof aad, "t:%d:%d", w->id, i);
        snprintf(msg, sizeof msg, "m%d-%d", w->id, i);
        if (vault_seal(w->v, aad, msg, strlen(msg), &env) != LATCH_OK) {
            w->failures++;
            continue;
        }
        if (vault_open(w->v, aad, env, &pt, &n) != LATCH_OK || n != strlen(msg) ||
            memcmp(pt, msg, n) != 0)
            w->failures++;
        vault_plain_free(pt, n);
        free(env);
    }
    return NULL;
}

static void
test_threads_with_rotation(void **state)
{
    struct fx *f = *state;
    struct vault_opts o = {.key_file = f->keyfile, .create_key_file = true};
    struct latch_err err = {{0}};
    struct worker w[4];
    pthread_t th[4];
    struct vault *v = NULL;
    char kid[9];
    int i;

    assert_int_equal(vault_new(&o, &v, &err), LATCH_OK);
    for (i = 0; i < 4; i++) {
        w[i] = (struct worker){.v = v, .id = i};
        assert_int_equal(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
    }
    for (i = 0; i < 3; i++)
        assert_int_equal(vault_rotate_add_key(v, kid, &err), LATCH_OK);
    for (i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(w[i].failures, 0);
    }
    assert_int_equal(count_key_lines(f->keyfile), 4);
    vault_free(v);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_envelope_interop),
        cmocka_unit_test(test_null_aad_equals_empty),
        cmocka_unit_test(test_tampering),
        cmocka_unit_test(test_kid_swap_between_ring_keys),
        cmocka_unit_test(test_row_swap_fails),
        cmocka_unit_test(test_wrong_key_fails),
        cmocka_unit_test_setup_teardown(test_key_file_created_0600_and_reloaded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_file_missing_no_create, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_file_insecure_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_file_format, setup, teardown),
        cmocka_unit_test(test_env_key),
        cmocka_unit_test_setup_teardown(test_env_key_with_key_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rotation_and_retire, setup, teardown),
        cmocka_unit_test(test_rotation_needs_key_file),
        cmocka_unit_test_setup_teardown(test_lazy_reload_unknown_kid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reload_on_mtime_change, setup, teardown),
        cmocka_unit_test(test_fingerprint),
        cmocka_unit_test(test_fingerprint_and_kid_vectors),
        cmocka_unit_test(test_index_hash),
        cmocka_unit_test(test_index_hash_without_key_aborts),
        cmocka_unit_test(test_helpers),
        cmocka_unit_test_setup_teardown(test_threads_with_rotation, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
