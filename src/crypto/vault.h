/*
 * vault.h - encryption at rest (AES-256-GCM via OpenSSL 3 EVP) and keyed lookup hashes.
 *
 * Keys are base64 of 32 bytes (the NANGO_ENCRYPTION_KEY format). A vault holds a keyring:
 * the primary key (used to seal) plus older keys (used to open during/after rotation). Each key
 * has a key id: the first 8 hex digits of HMAC-SHA256(key, "latch key id v1").
 *
 * Envelope text (what the store keeps), all base64 standard alphabet:
 *     v2.<kid>.<iv:12 bytes>.<tag:16 bytes>.<ciphertext>
 * The AAD passed by the caller binds the ciphertext to its place, by convention
 * "<table>:<row uid or id>:<column>"; the vault prefixes "latch:v2:<kid>:" so that the envelope
 * header cannot be swapped either. Opening with a different AAD (a row swap) fails with
 * LATCH_E_CRYPTO, as does any tampering or an unknown key.
 *
 * Key sources, in order: LATCH_ENCRYPTION_KEY (one key, primary) and/or a key file (one base64
 * key per line; the last line is the primary unless the env key is set; mode 0600; created with
 * a fresh random key when missing and creation is allowed). When a sealed value names a key id the
 * keyring lacks, the vault re-reads the key file once (so `latch keys rotate` run by another
 * process is picked up by running servers); it also re-reads the file when its mtime changes
 * (checked at most once per second), so new seals use the new primary.
 *
 * Index hash: API secret keys and connect-session tokens are stored only as
 * HMAC-SHA256(index_key, value). The index key is random, generated once, and kept sealed in the
 * store (meta "sealed:index_key"), so rotating the encryption key does not invalidate stored
 * hashes.
 *
 * Threads: all functions are thread-safe (an internal rwlock guards the keyring).
 * Secrets: key bytes live in mlock'ed memory, wiped on free. Plaintext returned by vault_open is
 * owned by the caller and must be released with vault_plain_free (wipes it).
 */
#ifndef LATCH_VAULT_H
#define LATCH_VAULT_H

#include <stdbool.h>
#include <stddef.h>

#include "util/rc.h"

#define VAULT_KEY_LEN 32
#define VAULT_KID_LEN 8 /* hex chars */

struct vault;

struct vault_opts {
    const char *env_key_b64; /* LATCH_ENCRYPTION_KEY, or NULL */
    const char *key_file;    /* path, or NULL */
    bool create_key_file; /* create key_file (0600) with a random key if missing and no env key */
};

latch_rc vault_new(const struct vault_opts *o, struct vault **out, struct latch_err *err);
/* A vault from raw keys (tests); keys[n-1] is primary. */
latch_rc vault_new_from_keys(const unsigned char (*keys)[VAULT_KEY_LEN], size_t n,
                             struct vault **out);
void vault_free(struct vault *v);
/* True if vault_new created the key file just now (first start). */
bool vault_key_file_created(const struct vault *v);

/* Primary key id (8 hex chars + NUL). */
void vault_primary_kid(struct vault *v, char out[VAULT_KID_LEN + 1]);
/* Fingerprint of the primary key for the store: hex HMAC-SHA256(key, "latch key fingerprint v1").
 */
void vault_primary_fingerprint(struct vault *v, char out[65]);
/* True if any key in the ring has this fingerprint. */
bool vault_has_fingerprint(struct vault *v, const char *fingerprint_hex);
/* True if the ring holds key id kid. */
bool vault_has_kid(struct vault *v, const char *kid);

/* Seals plaintext under the primary key; *out is an owned NUL-terminated envelope. */
latch_rc vault_seal(struct vault *v, const char *aad, const void *pt, size_t ptlen, char **out);
/* Opens an envelope; *pt_out owned (NUL-terminated extra byte, not counted in *ptlen). */
latch_rc vault_open(struct vault *v, const char *aad, const char *envelope, unsigned char **pt_out,
                    size_t *ptlen);
void vault_plain_free(void *pt, size_t len);
/* Key id of an envelope (no decryption); LATCH_E_INVAL if malformed. */
latch_rc vault_envelope_kid(const char *envelope, char out[VAULT_KID_LEN + 1]);

/* ---- index hash ---- */
/* Installs the 32-byte index key (after the caller unsealed it from the store). */
void vault_set_index_key(struct vault *v, const unsigned char key[VAULT_KEY_LEN]);
/* HMAC-SHA256(index_key, s). The index key must be set. */
void vault_index_hash(struct vault *v, const char *s, unsigned char out[32]);

/* ---- rotation (used by `latch keys rotate`) ---- */
/*
 * Generates a new random key, appends it to the key file atomically (temp + rename, 0600) and
 * makes it primary. Requires a key file (LATCH_ENCRYPTION_KEY alone cannot be rotated in place:
 * the operator sets LATCH_ENCRYPTION_KEY to the new key and lists the old one in the key file).
 */
latch_rc vault_rotate_add_key(struct vault *v, char new_kid[VAULT_KID_LEN + 1],
                              struct latch_err *err);
/* Removes a non-primary key from the key file and the ring. */
latch_rc vault_retire_key(struct vault *v, const char *kid, struct latch_err *err);

/* ---- helpers ---- */
/* 16 random bytes formatted as a UUID v4 (lower case, 36 chars + NUL). */
void vault_uuid_v4(char out[37]);
/* n random bytes as lower-case hex (2n chars + NUL). n <= 64. */
void vault_random_hex(char *out, size_t n);
/* Fresh random key as base64 (44 chars + NUL). */
void vault_new_key_b64(char out[45]);
/* HMAC-SHA256 hex of msg under key (webhook signatures); out 65 bytes. */
void vault_hmac_sha256_hex(const void *key, size_t keylen, const void *msg, size_t msglen,
                           char out[65]);
/* SHA-256 hex (legacy X-Nango-Signature). */
void vault_sha256_hex(const void *msg, size_t msglen, char out[65]);

#endif
