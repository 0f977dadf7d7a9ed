/*
 * vault.c - encryption at rest: AES-256-GCM envelopes, keyring with rotation, keyed hashes.
 *
 * Contract: crypto/vault.h and docs/internals/vault.md. Key file I/O: crypto/keyfile.c; secure
 * memory: crypto/secmem.c.
 *
 * Locking: v->lock (rwlock, writer-preferring) guards v->ring and the index key. v->reload_mu
 * serialises everything that reads or writes the key file and guards v->stamp; the ring pointer
 * is only ever replaced while holding reload_mu *and* the write lock, so code holding reload_mu
 * may read v->ring without taking v->lock.
 */
#include "crypto/vault.h"

#include <sys/stat.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "core/log.h"
#include "crypto/keyfile.h"
#include "crypto/secmem.h"
#include "util/b64.h"
#include "util/clock.h"
#include "util/xalloc.h"

/*
 * Bounds local to the vault (candidates for limits.h).
 * VAULT_MAX_ENVELOPE: envelope text accepted by vault_open / produced by vault_seal.
 * VAULT_MAX_AAD: caller AAD length ("<table>:<row>:<column>" is far shorter).
 * VAULT_MAX_KEYS: keys in one ring (key file lines plus the env key).
 * VAULT_MTIME_CHECK_MS: how often vault_seal may stat the key file.
 */
#define VAULT_MAX_ENVELOPE (1024 * 1024)
#define VAULT_MAX_AAD 4096
#define VAULT_MAX_KEYS 256
#define VAULT_MTIME_CHECK_MS 1000

#define IV_LEN 12
#define TAG_LEN 16
#define IV_B64_LEN 16
#define TAG_B64_LEN 24
#define KEY_B64_LEN 44
#define AAD_PREFIX "latch:v2:"
#define AAD_PREFIX_LEN (sizeof AAD_PREFIX - 1 + VAULT_KID_LEN + 1)
#define ENV_HEAD_LEN (3 + VAULT_KID_LEN + 1 + IV_B64_LEN + 1 + TAG_B64_LEN + 1)
#define KID_LABEL "latch key id v1"
#define FP_LABEL "latch key fingerprint v1"
#define KEY_LEN_MSG "encryption key must be base64 of 32 bytes"

struct vkey {
    unsigned char key[VAULT_KEY_LEN];
    char kid[VAULT_KID_LEN + 1];
    char fp[65];
    bool from_env;
};

/* Lives in secure (mlock'ed, wiped) memory. */
struct ring {
    size_t n;
    size_t primary;
    struct vkey keys[VAULT_MAX_KEYS];
};

struct vault {
    pthread_rwlock_t lock;
    struct ring *ring;        /* secure memory; guarded by lock (see top) */
    unsigned char *index_key; /* secure memory, VAULT_KEY_LEN bytes; guarded by lock */
    bool has_index_key;

    pthread_mutex_t reload_mu;
    struct keyfile_stamp stamp;      /* key file as last loaded; guarded by reload_mu */
    _Atomic long long next_check_ms; /* monotonic ms before which seal does not stat */

    char *key_file; /* owned, or NULL; immutable */
    bool created;   /* immutable */

    EVP_CIPHER *cipher; /* AES-256-GCM, fetched once */
    EVP_MAC *mac;       /* HMAC, fetched once */
};

/* ---- small helpers ---- */

static _Noreturn void
crypto_fatal(const char *what)
{
    log_error("crypto library failure", "op=%s", what);
    abort();
}

static void
hex_encode(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    size_t i;

    for (i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 0x0f];
    }
    out[2 * n] = '\0';
}

static bool
kid_valid(const char *s, size_t len)
{
    size_t i;

    if (len != VAULT_KID_LEN)
        return false;
    for (i = 0; i < len; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

/* HMAC-SHA256 via the fetched EVP_MAC (or a one-shot fetch when mac is NULL). */
static void
hmac_sha256(EVP_MAC *mac, const void *key, size_t klen, const void *msg, size_t mlen,
            unsigned char out[32])
{
    static const unsigned char empty = 0;
    static char digest[] = "SHA256";
    EVP_MAC_CTX *ctx = NULL;
    OSSL_PARAM params[2];
    size_t outl = 0;

    if (klen == 0)
        key = &empty;
    if (mlen == 0)
        msg = &empty;
    if (mac == NULL) {
        if (EVP_Q_mac(NULL, "HMAC", NULL, digest, NULL, key, klen, msg, mlen, out, 32, &outl) ==
                NULL ||
            outl != 32)
            crypto_fatal("EVP_Q_mac");
        return;
    }
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0);
    params[1] = OSSL_PARAM_construct_end();
    ctx = EVP_MAC_CTX_new(mac);
    if (ctx == NULL || EVP_MAC_init(ctx, key, klen, params) != 1 ||
        EVP_MAC_update(ctx, msg, mlen) != 1 || EVP_MAC_final(ctx, out, &outl, 32) != 1 ||
        outl != 32)
        crypto_fatal("EVP_MAC");
    EVP_MAC_CTX_free(ctx);
}

static void
vkey_init(EVP_MAC *mac, struct vkey *k, const unsigned char key[VAULT_KEY_LEN], bool from_env)
{
    unsigned char h[32];

    memcpy(k->key, key, VAULT_KEY_LEN);
    hmac_sha256(mac, key, VAULT_KEY_LEN, KID_LABEL, sizeof KID_LABEL - 1, h);
    hex_encode(h, VAULT_KID_LEN / 2, k->kid);
    hmac_sha256(mac, key, VAULT_KEY_LEN, FP_LABEL, sizeof FP_LABEL - 1, h);
    hex_encode(h, 32, k->fp);
    k->from_env = from_env;
    OPENSSL_cleanse(h, sizeof h);
}

/* Strict: exactly base64 of 32 bytes. */
static bool
key_decode(const char *s, size_t len, unsigned char key[VAULT_KEY_LEN])
{
    unsigned char tmp[48];
    size_t n = 0;
    bool ok = false;

    if (len <= KEY_B64_LEN + 4 && b64_decode(s, len, tmp, sizeof tmp, &n) == LATCH_OK &&
        n == VAULT_KEY_LEN) {
        memcpy(key, tmp, VAULT_KEY_LEN);
        ok = true;
    }
    OPENSSL_cleanse(tmp, sizeof tmp);
    return ok;
}

/* ---- keyring ---- */

static struct ring *
ring_new(void)
{
    return secmem_alloc(sizeof(struct ring));
}

static void
ring_free(struct ring *r)
{
    secmem_free(r, sizeof(struct ring));
}

static const struct vkey *
ring_find(const struct ring *r, const char *kid)
{
    size_t i;

    for (i = 0; i < r->n; i++)
        if (memcmp(r->keys[i].kid, kid, VAULT_KID_LEN) == 0)
            return &r->keys[i];
    return NULL;
}

static const struct vkey *
ring_env_key(const struct ring *r)
{
    size_t i;

    for (i = 0; i < r->n; i++)
        if (r->keys[i].from_env)
            return &r->keys[i];
    return NULL;
}

/* Adds a key (deduplicating identical keys); *idx gets its slot. */
static latch_rc
ring_add(EVP_MAC *mac, struct ring *r, const unsigned char key[VAULT_KEY_LEN], bool from_env,
         size_t *idx, struct latch_err *err)
{
    struct vkey *k;
    size_t i;

    if (r->n == VAULT_MAX_KEYS) {
        latch_err_set(err, "too many encryption keys (max %d)", VAULT_MAX_KEYS);
        return LATCH_E_TOO_LARGE;
    }
    k = &r->keys[r->n];
    vkey_init(mac, k, key, from_env);
    for (i = 0; i < r->n; i++) {
        if (memcmp(r->keys[i].kid, k->kid, VAULT_KID_LEN) != 0)
            continue;
        if (CRYPTO_memcmp(r->keys[i].key, key, VAULT_KEY_LEN) != 0) {
            OPENSSL_cleanse(k, sizeof *k);
            latch_err_set(err, "two different encryption keys share key id %s", r->keys[i].kid);
            return LATCH_E_CONFLICT;
        }
        r->keys[i].from_env = r->keys[i].from_env || from_env;
        OPENSSL_cleanse(k, sizeof *k);
        *idx = i;
        return LATCH_OK;
    }
    *idx = r->n++;
    return LATCH_OK;
}

/*
 * Iterates the lines of key-file text. Returns false at the end. *line / *llen: the line with
 * surrounding blanks trimmed; *raw / *rawlen: the line as written, without its '\n'.
 */
static bool
next_line(const char *text, size_t len, size_t *pos, const char **line, size_t *llen,
          const char **raw, size_t *rawlen)
{
    size_t s = *pos, e, a, b;

    if (s >= len)
        return false;
    e = s;
    while (e < len && text[e] != '\n')
        e++;
    *pos = e < len ? e + 1 : e;
    *raw = text + s;
    *rawlen = e - s;
    a = s;
    b = e;
    while (a < b && (text[a] == ' ' || text[a] == '\t' || text[a] == '\r'))
        a++;
    while (b > a && (text[b - 1] == ' ' || text[b - 1] == '\t' || text[b - 1] == '\r'))
        b--;
    *line = text + a;
    *llen = b - a;
    return true;
}

static bool
is_key_line(const char *line, size_t llen)
{
    return llen > 0 && line[0] != '#';
}

/*
 * Builds a ring from key-file text (may be NULL) plus an optional env key (primary). Without an
 * env key, the last key line is primary.
 */
static latch_rc
ring_build(EVP_MAC *mac, const unsigned char *env_key, const char *path, const char *text,
           size_t len, struct ring **out, struct latch_err *err)
{
    struct ring *r = ring_new();
    const char *line, *raw;
    size_t pos = 0, llen, rawlen, lineno = 0, idx = 0, last = SIZE_MAX;
    unsigned char key[VAULT_KEY_LEN];
    latch_rc rc = LATCH_OK;

    *out = NULL;
    while (text != NULL && next_line(text, len, &pos, &line, &llen, &raw, &rawlen)) {
        lineno++;
        if (!is_key_line(line, llen))
            continue;
        if (!key_decode(line, llen, key)) {
            latch_err_set(err, "key file %s line %zu: " KEY_LEN_MSG, path, lineno);
            rc = LATCH_E_INVAL;
            goto out;
        }
        rc = ring_add(mac, r, key, false, &idx, err);
        if (rc != LATCH_OK)
            goto out;
        last = idx;
    }
    if (env_key != NULL) {
        rc = ring_add(mac, r, env_key, true, &idx, err);
        if (rc != LATCH_OK)
            goto out;
        last = idx;
    }
    if (last == SIZE_MAX) {
        latch_err_set(err, "key file %s holds no encryption key", path != NULL ? path : "-");
        rc = LATCH_E_INVAL;
        goto out;
    }
    r->primary = last;
out:
    OPENSSL_cleanse(key, sizeof key);
    if (rc != LATCH_OK) {
        ring_free(r);
        return rc;
    }
    *out = r;
    return LATCH_OK;
}

/* ---- reload ---- */

/* Caller holds reload_mu. Re-reads the key file and swaps in the new ring. */
static latch_rc
reload_locked(struct vault *v, struct latch_err *err)
{
    const struct vkey *env = ring_env_key(v->ring);
    struct keyfile_stamp stamp = {0};
    struct ring *r = NULL, *old;
    char *text = NULL;
    size_t len = 0;
    latch_rc rc;

    rc = keyfile_read(v->key_file, &text, &len, &stamp, err);
    if (rc != LATCH_OK)
        return rc;
    rc = ring_build(v->mac, env != NULL ? env->key : NULL, v->key_file, text, len, &r, err);
    secmem_free(text, KEYFILE_BUF_LEN);
    v->stamp = stamp; /* even on a parse error: do not retry until the file changes again */
    if (rc != LATCH_OK)
        return rc;
    pthread_rwlock_wrlock(&v->lock);
    old = v->ring;
    v->ring = r;
    pthread_rwlock_unlock(&v->lock);
    ring_free(old);
    log_info("encryption keys loaded", "keys=%zu primary=%s", r->n, r->keys[r->primary].kid);
    return LATCH_OK;
}

/* Caller holds reload_mu. Reloads if the key file differs from what was loaded. */
static void
reload_if_changed_locked(struct vault *v)
{
    struct latch_err e = {{0}};
    struct stat st;
    latch_rc rc;

    if (stat(v->key_file, &st) != 0 || keyfile_stamp_same(&v->stamp, &st))
        return; /* a vanished key file never drops keys we hold */
    rc = reload_locked(v, &e);
    if (rc != LATCH_OK) {
        keyfile_stamp_set(&v->stamp, &st);
        log_warn("key file reload failed; keeping current keys", "rc=%d", (int)rc);
        log_warn(e.msg, "rc=%d", (int)rc);
    }
}

static void
reload_if_changed(struct vault *v)
{
    pthread_mutex_lock(&v->reload_mu);
    reload_if_changed_locked(v);
    pthread_mutex_unlock(&v->reload_mu);
}

/* vault_seal: at most one stat per VAULT_MTIME_CHECK_MS across all threads. */
static void
maybe_check_file(struct vault *v)
{
    long long now, next;

    if (v->key_file == NULL)
        return;
    now = latch_mono_ms();
    next = atomic_load(&v->next_check_ms);
    if (now < next)
        return;
    if (!atomic_compare_exchange_strong(&v->next_check_ms, &next, now + VAULT_MTIME_CHECK_MS))
        return; /* another thread does this round's check */
    reload_if_changed(v);
}

/* ---- construction ---- */

static struct vault *
vault_alloc(void)
{
    struct vault *v = xcalloc(1, sizeof *v);
    pthread_rwlockattr_t attr;

    pthread_rwlockattr_init(&attr);
    /* keep a steady stream of seals from starving a reload */
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&v->lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    pthread_mutex_init(&v->reload_mu, NULL);
    atomic_init(&v->next_check_ms, latch_mono_ms() + VAULT_MTIME_CHECK_MS);
    v->index_key = secmem_alloc(VAULT_KEY_LEN);
    v->cipher = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    v->mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (v->cipher == NULL || v->mac == NULL || EVP_CIPHER_get_iv_length(v->cipher) != IV_LEN ||
        EVP_CIPHER_get_key_length(v->cipher) != VAULT_KEY_LEN)
        crypto_fatal("EVP_CIPHER_fetch AES-256-GCM / EVP_MAC_fetch HMAC");
    return v;
}

latch_rc
vault_new(const struct vault_opts *o, struct vault **out, struct latch_err *err)
{
    struct vault *v = NULL;
    unsigned char *env_key = NULL;
    char *text = NULL;
    size_t len = 0;
    latch_rc rc = LATCH_OK;

    if (out != NULL)
        *out = NULL;
    if (o == NULL || out == NULL) {
        latch_err_set(err, "vault_new: no options");
        return LATCH_E_INVAL;
    }
    if (o->env_key_b64 == NULL && o->key_file == NULL) {
        latch_err_set(err, "no encryption key configured: set LATCH_ENCRYPTION_KEY or a key file");
        return LATCH_E_INVAL;
    }
    v = vault_alloc();
    if (o->env_key_b64 != NULL) {
        env_key = secmem_alloc(VAULT_KEY_LEN);
        if (!key_decode(o->env_key_b64, strnlen(o->env_key_b64, KEY_B64_LEN + 8), env_key)) {
            latch_err_set(err, "LATCH_ENCRYPTION_KEY: " KEY_LEN_MSG);
            rc = LATCH_E_INVAL;
            goto out;
        }
    }
    if (o->key_file != NULL) {
        if (o->key_file[0] == '\0' || strlen(o->key_file) >= KEYFILE_MAX_PATH) {
            latch_err_set(err, "invalid key file path");
            rc = LATCH_E_INVAL;
            goto out;
        }
        v->key_file = xstrdup(o->key_file);
        rc = keyfile_read(v->key_file, &text, &len, &v->stamp, err);
        if (rc == LATCH_E_NOT_FOUND && env_key == NULL && o->create_key_file) {
            rc = keyfile_create(v->key_file, err);
            if (rc == LATCH_OK)
                v->created = true;
            else if (rc != LATCH_E_CONFLICT) /* CONFLICT: another process just created it */
                goto out;
            rc = keyfile_read(v->key_file, &text, &len, &v->stamp, err);
        } else if (rc == LATCH_E_NOT_FOUND && env_key != NULL) {
            rc = LATCH_OK; /* env key alone; the file may appear later (reload) */
        } else if (rc == LATCH_E_NOT_FOUND) {
            latch_err_set(err, "key file %s does not exist and may not be created", v->key_file);
        }
        if (rc != LATCH_OK)
            goto out;
    }
    rc = ring_build(v->mac, env_key, v->key_file, text, len, &v->ring, err);
out:
    secmem_free(text, KEYFILE_BUF_LEN);
    secmem_free(env_key, VAULT_KEY_LEN);
    if (rc != LATCH_OK) {
        vault_free(v);
        return rc;
    }
    *out = v;
    return LATCH_OK;
}

latch_rc
vault_new_from_keys(const unsigned char (*keys)[VAULT_KEY_LEN], size_t n, struct vault **out)
{
    struct vault *v;
    struct ring *r;
    size_t i, idx = 0;
    latch_rc rc;

    if (out == NULL)
        return LATCH_E_INVAL;
    *out = NULL;
    if (keys == NULL || n == 0 || n > VAULT_MAX_KEYS)
        return LATCH_E_INVAL;
    v = vault_alloc();
    r = ring_new();
    for (i = 0; i < n; i++) {
        rc = ring_add(v->mac, r, keys[i], false, &idx, NULL);
        if (rc != LATCH_OK) {
            ring_free(r);
            vault_free(v);
            return rc;
        }
    }
    r->primary = idx;
    v->ring = r;
    *out = v;
    return LATCH_OK;
}

void
vault_free(struct vault *v)
{
    if (v == NULL)
        return;
    ring_free(v->ring);
    secmem_free(v->index_key, VAULT_KEY_LEN);
    EVP_CIPHER_free(v->cipher);
    EVP_MAC_free(v->mac);
    pthread_mutex_destroy(&v->reload_mu);
    pthread_rwlock_destroy(&v->lock);
    free(v->key_file);
    free(v);
}

bool
vault_key_file_created(const struct vault *v)
{
    return v != NULL && v->created;
}

/* ---- keyring queries ---- */

void
vault_primary_kid(struct vault *v, char out[VAULT_KID_LEN + 1])
{
    pthread_rwlock_rdlock(&v->lock);
    memcpy(out, v->ring->keys[v->ring->primary].kid, VAULT_KID_LEN + 1);
    pthread_rwlock_unlock(&v->lock);
}

void
vault_primary_fingerprint(struct vault *v, char out[65])
{
    pthread_rwlock_rdlock(&v->lock);
    memcpy(out, v->ring->keys[v->ring->primary].fp, 65);
    pthread_rwlock_unlock(&v->lock);
}

bool
vault_has_fingerprint(struct vault *v, const char *fingerprint_hex)
{
    bool found = false;
    size_t i;

    if (fingerprint_hex == NULL || strnlen(fingerprint_hex, 65) != 64)
        return false;
    pthread_rwlock_rdlock(&v->lock);
    for (i = 0; i < v->ring->n; i++)
        if (CRYPTO_memcmp(v->ring->keys[i].fp, fingerprint_hex, 64) == 0)
            found = true;
    pthread_rwlock_unlock(&v->lock);
    return found;
}

bool
vault_has_kid(struct vault *v, const char *kid)
{
    bool found;

    if (kid == NULL || !kid_valid(kid, strnlen(kid, VAULT_KID_LEN + 1)))
        return false;
    pthread_rwlock_rdlock(&v->lock);
    found = ring_find(v->ring, kid) != NULL;
    pthread_rwlock_unlock(&v->lock);
    return found;
}

/* ---- seal / open ---- */

/*
 * One AES-256-GCM operation. AAD = "latch:v2:<kid>:" || aad. enc: fills tag; decrypt: checks
 * tag (set just before Final). Any failure is LATCH_E_CRYPTO.
 */
static latch_rc
gcm_crypt(const EVP_CIPHER *cipher, int enc, const unsigned char *key,
          const unsigned char iv[IV_LEN], const char *kid, const char *aad, size_t aadlen,
          const unsigned char *in, size_t inlen, unsigned char *out, unsigned char tag[TAG_LEN])
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    char prefix[AAD_PREFIX_LEN + 1];
    latch_rc rc = LATCH_E_CRYPTO;
    int n = 0, fin = 0;

    if (ctx == NULL)
        goto out;
    if (snprintf(prefix, sizeof prefix, "%s%.8s:", AAD_PREFIX, kid) != (int)AAD_PREFIX_LEN)
        goto out;
    if (EVP_CipherInit_ex2(ctx, cipher, key, iv, enc, NULL) != 1)
        goto out;
    if (EVP_CipherUpdate(ctx, NULL, &n, (const unsigned char *)prefix, (int)AAD_PREFIX_LEN) != 1)
        goto out;
    if (aadlen > 0 && EVP_CipherUpdate(ctx, NULL, &n, (const unsigned char *)aad, (int)aadlen) != 1)
        goto out;
    n = 0;
    if (inlen > 0 &&
        (EVP_CipherUpdate(ctx, out, &n, in, (int)inlen) != 1 || n < 0 || (size_t)n > inlen))
        goto out;
    if (!enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, TAG_LEN, tag) != 1)
        goto out;
    if (EVP_CipherFinal_ex(ctx, out + n, &fin) != 1 || (size_t)n + (size_t)fin != inlen)
        goto out;
    if (enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, TAG_LEN, tag) != 1)
        goto out;
    rc = LATCH_OK;
out:
    EVP_CIPHER_CTX_free(ctx);
    return rc;
}

struct envelope {
    char kid[VAULT_KID_LEN + 1];
    unsigned char iv[IV_LEN];
    unsigned char tag[TAG_LEN];
    const char *ct_b64; /* borrowed from the envelope text */
    size_t ct_b64_len;
};

/* Strict parse of "v2.<kid>.<iv>.<tag>.<ct>" (len bytes, already bounded). */
static latch_rc
envelope_parse(const char *s, size_t len, struct envelope *e)
{
    const char *part[5];
    size_t plen[5], i, k = 0, start = 0, n = 0;

    for (i = 0; i <= len; i++) {
        if (i < len && s[i] != '.')
            continue;
        if (k == 5)
            return LATCH_E_INVAL; /* too many parts */
        part[k] = s + start;
        plen[k] = i - start;
        k++;
        start = i + 1;
    }
    if (k != 5)
        return LATCH_E_INVAL;
    if (plen[0] != 2 || memcmp(part[0], "v2", 2) != 0)
        return LATCH_E_INVAL;
    if (!kid_valid(part[1], plen[1]))
        return LATCH_E_INVAL;
    memcpy(e->kid, part[1], VAULT_KID_LEN);
    e->kid[VAULT_KID_LEN] = '\0';
    if (plen[2] != IV_B64_LEN || b64_decode(part[2], plen[2], e->iv, IV_LEN, &n) != LATCH_OK ||
        n != IV_LEN)
        return LATCH_E_INVAL;
    if (plen[3] != TAG_B64_LEN || b64_decode(part[3], plen[3], e->tag, TAG_LEN, &n) != LATCH_OK ||
        n != TAG_LEN)
        return LATCH_E_INVAL;
    if (plen[4] % 4 != 0)
        return LATCH_E_INVAL;
    e->ct_b64 = part[4];
    e->ct_b64_len = plen[4];
    return LATCH_OK;
}

latch_rc
vault_seal(struct vault *v, const char *aad, const void *pt, size_t ptlen, char **out)
{
    unsigned char iv[IV_LEN], tag[TAG_LEN];
    char kid[VAULT_KID_LEN + 1];
    unsigned char *ct = NULL;
    char *env = NULL;
    size_t aadlen, ct_b64_size, total, o;
    latch_rc rc;

    if (out != NULL)
        *out = NULL;
    if (v == NULL || out == NULL || (ptlen > 0 && pt == NULL))
        return LATCH_E_INVAL;
    if (aad == NULL)
        aad = "";
    aadlen = strnlen(aad, VAULT_MAX_AAD + 1);
    if (aadlen > VAULT_MAX_AAD)
        return LATCH_E_TOO_LARGE;
    if (ptlen > VAULT_MAX_ENVELOPE)
        return LATCH_E_TOO_LARGE;
    ct_b64_size = b64_encoded_size(ptlen); /* includes NUL */
    total = ENV_HEAD_LEN + ct_b64_size;
    if (total - 1 > VAULT_MAX_ENVELOPE)
        return LATCH_E_TOO_LARGE;

    maybe_check_file(v);
    if (RAND_bytes(iv, IV_LEN) != 1)
        return LATCH_E_CRYPTO;
    ct = xmalloc(ptlen > 0 ? ptlen : 1);
    pthread_rwlock_rdlock(&v->lock);
    {
        const struct vkey *k = &v->ring->keys[v->ring->primary];

        memcpy(kid, k->kid, sizeof kid);
        rc = gcm_crypt(v->cipher, 1, k->key, iv, kid, aad, aadlen, pt, ptlen, ct, tag);
    }
    pthread_rwlock_unlock(&v->lock);
    if (rc != LATCH_OK)
        goto out;

    env = xmalloc(total);
    /* NOLINTNEXTLINE(bugprone-not-null-terminated-result): prefix; b64_encode writes the NUL */
    memcpy(env, "v2.", 3);
    memcpy(env + 3, kid, VAULT_KID_LEN);
    o = 3 + VAULT_KID_LEN;
    env[o++] = '.';
    rc = b64_encode(iv, IV_LEN, env + o, total - o);
    if (rc != LATCH_OK)
        goto out;
    o += IV_B64_LEN;
    env[o++] = '.';
    rc = b64_encode(tag, TAG_LEN, env + o, total - o);
    if (rc != LATCH_OK)
        goto out;
    o += TAG_B64_LEN;
    env[o++] = '.';
    rc = b64_encode(ct, ptlen, env + o, total - o);
    if (rc != LATCH_OK)
        goto out;
    *out = env;
    env = NULL;
out:
    if (rc != LATCH_OK)
        rc = LATCH_E_CRYPTO;
    OPENSSL_cleanse(ct, ptlen > 0 ? ptlen : 1);
    free(ct);
    free(env);
    return rc;
}

latch_rc
vault_open(struct vault *v, const char *aad, const char *envelope, unsigned char **pt_out,
           size_t *ptlen)
{
    struct envelope e;
    unsigned char *ct = NULL, *pt = NULL;
    size_t aadlen, envlen, ctlen = 0, attempt;
    bool found = false;
    latch_rc rc = LATCH_E_CRYPTO;

    if (pt_out != NULL)
        *pt_out = NULL;
    if (ptlen != NULL)
        *ptlen = 0;
    if (v == NULL || envelope == NULL || pt_out == NULL || ptlen == NULL)
        return LATCH_E_INVAL;
    if (aad == NULL)
        aad = "";
    aadlen = strnlen(aad, VAULT_MAX_AAD + 1);
    if (aadlen > VAULT_MAX_AAD)
        return LATCH_E_TOO_LARGE;
    envlen = strnlen(envelope, VAULT_MAX_ENVELOPE + 1);
    if (envlen > VAULT_MAX_ENVELOPE)
        return LATCH_E_TOO_LARGE;
    /* a malformed envelope is as good as a tampered one */
    if (envelope_parse(envelope, envlen, &e) != LATCH_OK)
        return LATCH_E_CRYPTO;
    ct = xmalloc(e.ct_b64_len / 4 * 3 + 1);
    if (b64_decode(e.ct_b64, e.ct_b64_len, ct, e.ct_b64_len / 4 * 3 + 1, &ctlen) != LATCH_OK)
        goto out;
    pt = xmalloc(ctlen + 1);
    for (attempt = 0; attempt < 2; attempt++) {
        pthread_rwlock_rdlock(&v->lock);
        {
            const struct vkey *k = ring_find(v->ring, e.kid);

            if (k != NULL) {
                found = true;
                rc =
                    gcm_crypt(v->cipher, 0, k->key, e.iv, e.kid, aad, aadlen, ct, ctlen, pt, e.tag);
            }
        }
        pthread_rwlock_unlock(&v->lock);
        if (found || v->key_file == NULL || attempt > 0)
            break;
        reload_if_changed(v); /* unknown key id: maybe another process rotated */
    }
    if (!found) {
        log_warn("envelope names an unknown key id", "kid=%s", e.kid);
        rc = LATCH_E_CRYPTO;
    }
out:
    free(ct);
    if (rc != LATCH_OK) {
        if (pt != NULL)
            OPENSSL_cleanse(pt, ctlen + 1);
        free(pt);
        return LATCH_E_CRYPTO;
    }
    pt[ctlen] = '\0';
    *pt_out = pt;
    *ptlen = ctlen;
    return LATCH_OK;
}

void
vault_plain_free(void *pt, size_t len)
{
    if (pt == NULL)
        return;
    OPENSSL_cleanse(pt, len);
    free(pt);
}

latch_rc
vault_envelope_kid(const char *envelope, char out[VAULT_KID_LEN + 1])
{
    struct envelope e;
    size_t len;

    if (envelope == NULL || out == NULL)
        return LATCH_E_INVAL;
    len = strnlen(envelope, VAULT_MAX_ENVELOPE + 1);
    if (len > VAULT_MAX_ENVELOPE || envelope_parse(envelope, len, &e) != LATCH_OK)
        return LATCH_E_INVAL;
    memcpy(out, e.kid, VAULT_KID_LEN + 1);
    return LATCH_OK;
}

/* ---- index hash ---- */

void
vault_set_index_key(struct vault *v, const unsigned char key[VAULT_KEY_LEN])
{
    pthread_rwlock_wrlock(&v->lock);
    memcpy(v->index_key, key, VAULT_KEY_LEN);
    v->has_index_key = true;
    pthread_rwlock_unlock(&v->lock);
}

void
vault_index_hash(struct vault *v, const char *s, unsigned char out[32])
{
    pthread_rwlock_rdlock(&v->lock);
    if (!v->has_index_key || s == NULL) {
        pthread_rwlock_unlock(&v->lock);
        log_error("programming error: vault_index_hash without index key or input",
                  "has_index_key=%d", (int)v->has_index_key);
        abort();
    }
    hmac_sha256(v->mac, v->index_key, VAULT_KEY_LEN, s, strlen(s), out);
    pthread_rwlock_unlock(&v->lock);
}

/* ---- rotation ---- */

latch_rc
vault_rotate_add_key(struct vault *v, char new_kid[VAULT_KID_LEN + 1], struct latch_err *err)
{
    struct keyfile_stamp stamp = {0};
    struct ring *check = NULL;
    char *text = NULL, *nt = NULL;
    char key[45];
    size_t len = 0, nlen;
    latch_rc rc;

    key[0] = '\0';
    if (v == NULL || new_kid == NULL)
        return LATCH_E_INVAL;
    if (v->key_file == NULL) {
        latch_err_set(err, "key rotation needs a key file; with LATCH_ENCRYPTION_KEY alone, set "
                           "it to a new key and list the old one in the key file");
        return LATCH_E_INVAL;
    }
    pthread_mutex_lock(&v->reload_mu);
    if (ring_env_key(v->ring) != NULL) {
        latch_err_set(err, "the primary key comes from LATCH_ENCRYPTION_KEY: set it to a new key "
                           "and append the old one to the key file instead");
        rc = LATCH_E_CONFLICT;
        goto out;
    }
    rc = keyfile_read(v->key_file, &text, &len, &stamp, err);
    if (rc != LATCH_OK)
        goto out;
    /* validate what is there before adding to it */
    rc = ring_build(v->mac, NULL, v->key_file, text, len, &check, err);
    if (rc != LATCH_OK)
        goto out;
    if (check->n >= VAULT_MAX_KEYS) {
        latch_err_set(err, "too many encryption keys (max %d); retire one first", VAULT_MAX_KEYS);
        rc = LATCH_E_TOO_LARGE;
        goto out;
    }
    vault_new_key_b64(key);
    if (len + 1 + KEY_B64_LEN + 1 > KEYFILE_MAX_BYTES) {
        latch_err_set(err, "key file %s would exceed %d bytes", v->key_file, KEYFILE_MAX_BYTES);
        rc = LATCH_E_TOO_LARGE;
        goto out;
    }
    nt = secmem_alloc(KEYFILE_BUF_LEN);
    memcpy(nt, text, len);
    nlen = len;
    if (nlen > 0 && nt[nlen - 1] != '\n')
        nt[nlen++] = '\n';
    memcpy(nt + nlen, key, KEY_B64_LEN);
    nlen += KEY_B64_LEN;
    nt[nlen++] = '\n';
    rc = keyfile_rewrite(v->key_file, nt, nlen, err);
    if (rc != LATCH_OK)
        goto out;
    rc = reload_locked(v, err);
    if (rc != LATCH_OK)
        goto out;
    memcpy(new_kid, v->ring->keys[v->ring->primary].kid, VAULT_KID_LEN + 1);
    log_info("encryption key rotated", "kid=%s", new_kid);
out:
    pthread_mutex_unlock(&v->reload_mu);
    OPENSSL_cleanse(key, sizeof key);
    ring_free(check);
    secmem_free(text, KEYFILE_BUF_LEN);
    secmem_free(nt, KEYFILE_BUF_LEN);
    return rc;
}

latch_rc
vault_retire_key(struct vault *v, const char *kid, struct latch_err *err)
{
    struct keyfile_stamp stamp = {0};
    struct ring *fresh = NULL;
    const struct vkey *env;
    const char *line, *raw;
    char *text = NULL, *nt = NULL;
    size_t len = 0, nlen = 0, pos = 0, llen, rawlen;
    bool found = false;
    latch_rc rc;

    if (v == NULL || kid == NULL || !kid_valid(kid, strnlen(kid, VAULT_KID_LEN + 1))) {
        latch_err_set(err, "invalid key id");
        return LATCH_E_INVAL;
    }
    if (v->key_file == NULL) {
        latch_err_set(err, "retiring a key needs a key file");
        return LATCH_E_INVAL;
    }
    pthread_mutex_lock(&v->reload_mu);
    rc = keyfile_read(v->key_file, &text, &len, &stamp, err);
    if (rc != LATCH_OK)
        goto out;
    env = ring_env_key(v->ring);
    rc = ring_build(v->mac, env != NULL ? env->key : NULL, v->key_file, text, len, &fresh, err);
    if (rc != LATCH_OK)
        goto out;
    if (memcmp(fresh->keys[fresh->primary].kid, kid, VAULT_KID_LEN) == 0) {
        latch_err_set(err, "key %s is the primary key; rotate to a new key before retiring it",
                      kid);
        rc = LATCH_E_CONFLICT;
        goto out;
    }
    nt = secmem_alloc(KEYFILE_BUF_LEN);
    while (next_line(text, len, &pos, &line, &llen, &raw, &rawlen)) {
        if (is_key_line(line, llen)) {
            struct vkey k;
            unsigned char kb[VAULT_KEY_LEN];
            bool match = false;

            if (key_decode(line, llen, kb)) {
                vkey_init(v->mac, &k, kb, false);
                match = memcmp(k.kid, kid, VAULT_KID_LEN) == 0;
                OPENSSL_cleanse(&k, sizeof k);
            }
            OPENSSL_cleanse(kb, sizeof kb);
            if (match) {
                found = true;
                continue;
            }
        }
        memcpy(nt + nlen, raw, rawlen);
        nlen += rawlen;
        nt[nlen++] = '\n';
    }
    if (!found) {
        latch_err_set(err, "key %s is not in key file %s", kid, v->key_file);
        rc = LATCH_E_NOT_FOUND;
        goto out;
    }
    rc = keyfile_rewrite(v->key_file, nt, nlen, err);
    if (rc != LATCH_OK)
        goto out;
    rc = reload_locked(v, err);
    if (rc == LATCH_OK)
        log_info("encryption key retired", "kid=%s", kid);
out:
    pthread_mutex_unlock(&v->reload_mu);
    ring_free(fresh);
    secmem_free(text, KEYFILE_BUF_LEN);
    secmem_free(nt, KEYFILE_BUF_LEN);
    return rc;
}

/* ---- helpers ---- */

static void
random_or_die(unsigned char *p, size_t n)
{
    if (RAND_bytes(p, (int)n) != 1)
        crypto_fatal("RAND_bytes");
}

void
vault_uuid_v4(char out[37])
{
    unsigned char b[16];
    char h[33];
    size_t i, o = 0;

    random_or_die(b, sizeof b);
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    hex_encode(b, sizeof b, h);
    for (i = 0; i < 32; i++) {
        if (i == 8 || i == 12 || i == 16 || i == 20)
            out[o++] = '-';
        out[o++] = h[i];
    }
    out[o] = '\0';
}

void
vault_random_hex(char *out, size_t n)
{
    unsigned char b[64];

    if (n > sizeof b) {
        log_error("programming error: vault_random_hex", "n=%zu max=%zu", n, sizeof b);
        abort();
    }
    random_or_die(b, n);
    hex_encode(b, n, out);
    OPENSSL_cleanse(b, sizeof b);
}

void
vault_new_key_b64(char out[45])
{
    unsigned char k[VAULT_KEY_LEN];

    random_or_die(k, sizeof k);
    if (b64_encode(k, sizeof k, out, 45) != LATCH_OK)
        crypto_fatal("b64_encode");
    OPENSSL_cleanse(k, sizeof k);
}

void
vault_hmac_sha256_hex(const void *key, size_t keylen, const void *msg, size_t msglen, char out[65])
{
    unsigned char h[32];

    hmac_sha256(NULL, key, keylen, msg, msglen, h);
    hex_encode(h, sizeof h, out);
}

void
vault_sha256_hex(const void *msg, size_t msglen, char out[65])
{
    static const unsigned char empty = 0;
    unsigned char h[EVP_MAX_MD_SIZE];
    unsigned int n = 0;

    if (EVP_Digest(msglen > 0 ? msg : &empty, msglen, h, &n, EVP_sha256(), NULL) != 1 || n != 32)
        crypto_fatal("EVP_Digest sha256");
    hex_encode(h, 32, out);
}
