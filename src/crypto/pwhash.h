/*
 * pwhash.h - password hashing for admin accounts: scrypt (RFC 7914) through OpenSSL 3's EVP_KDF
 * "SCRYPT" (memory-hard; Argon2 needs OpenSSL 3.2, we build on 3.0).
 *
 * The stored string is self-describing, so the cost can be raised later without a migration:
 *     scrypt$ln=<log2 N>,r=<r>,p=<p>$<salt, base64>$<32-byte key, base64>
 * Each hash has its own 16-byte random salt. pwhash_verify re-derives with the string's own
 * parameters and compares in constant time; pwhash_dummy_verify costs the same for an unknown
 * account, so the time of an answer does not tell whether an email exists.
 *
 * Ownership: pwhash_make returns an owned string (free). Threads: any thread; no state.
 * Memory: about 128 * r * N bytes per call (128 MiB at the defaults).
 */
#ifndef LATCH_PWHASH_H
#define LATCH_PWHASH_H

#include <stdbool.h>
#include <stddef.h>

#include "util/rc.h"

#define PWHASH_LOG2_N 17 /* N = 131072 */
#define PWHASH_R 8
#define PWHASH_P 1
/* Passwords are at least this long (bytes) and at most PWHASH_MAX_LEN. */
#define PWHASH_MIN_LEN 12
#define PWHASH_MAX_LEN 1024

latch_rc pwhash_make(const char *password, char **out);
/* LATCH_OK with *match set; LATCH_E_INVAL for a string this module did not write. */
latch_rc pwhash_verify(const char *password, const char *encoded, bool *match);
/* The same work as a verify against a real hash, for unknown accounts; always no match. */
void pwhash_dummy_verify(const char *password);

#endif
