/*
 * b64.h - strict base64 (RFC 4648 standard alphabet, padding required, no whitespace).
 * Thread-safe, no allocation except where noted.
 */
#ifndef LATCH_B64_H
#define LATCH_B64_H

#include <stddef.h>

#include "util/rc.h"

/* Encoded length including the terminating NUL. */
size_t b64_encoded_size(size_t n);
/* Writes NUL-terminated base64 into out (out_size >= b64_encoded_size(n)). */
latch_rc b64_encode(const void *in, size_t n, char *out, size_t out_size);
/*
 * Decodes exactly; rejects bad characters, bad padding, non-zero trailing bits, whitespace.
 * *out_len gets the decoded length. out_size must be >= 3 * (len / 4).
 */
latch_rc b64_decode(const char *in, size_t len, unsigned char *out, size_t out_size,
                    size_t *out_len);

#endif
