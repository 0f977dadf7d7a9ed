/*
 * b64.c - strict base64 (RFC 4648 section 4: standard alphabet, '=' padding required).
 *
 * Decoding accepts exactly one spelling per byte string: length a multiple of 4, padding only
 * in the last quantum ("xx==" or "xxx="), unused trailing bits zero, no whitespace, no NUL.
 * Character mapping is branch-free (no table indexed by the data), because the inputs include
 * encryption keys; only the accept/reject decision is allowed to leak through timing.
 * Thread-safe, no allocation.
 */
#include "util/b64.h"

#include <stdint.h>

/* 0xff if a < b else 0 (a, b < 2^16). */
static unsigned int
ct_lt(unsigned int a, unsigned int b)
{
    return ((a - b) >> 16) & 0xffu;
}

/* 0xff if lo <= c <= hi else 0. */
static unsigned int
ct_range(unsigned int c, unsigned int lo, unsigned int hi)
{
    return ~ct_lt(c, lo) & ~ct_lt(hi, c) & 0xffu;
}

/* 0xff if a == b else 0. */
static unsigned int
ct_eq(unsigned int a, unsigned int b)
{
    return ct_range(a, b, b);
}

/* 6-bit value -> alphabet character. */
static char
enc_char(unsigned int x)
{
    unsigned int c;

    x &= 0x3fu;
    c = (ct_lt(x, 26) & (x + 'A')) | (ct_range(x, 26, 51) & (x - 26 + 'a')) |
        (ct_range(x, 52, 61) & (x - 52 + '0')) | (ct_eq(x, 62) & '+') | (ct_eq(x, 63) & '/');
    return (char)c;
}

/* Alphabet character -> 6-bit value, or 0xff if c is not in the alphabet. */
static unsigned int
dec_char(unsigned char ch)
{
    unsigned int c = ch;
    unsigned int upper = ct_range(c, 'A', 'Z');
    unsigned int lower = ct_range(c, 'a', 'z');
    unsigned int digit = ct_range(c, '0', '9');
    unsigned int plus = ct_eq(c, '+');
    unsigned int slash = ct_eq(c, '/');
    unsigned int valid = upper | lower | digit | plus | slash;
    unsigned int x = (upper & (c - 'A')) | (lower & (c - 'a' + 26)) | (digit & (c - '0' + 52)) |
                     (plus & 62u) | (slash & 63u);

    return (x & valid) | (~valid & 0xffu);
}

size_t
b64_encoded_size(size_t n)
{
    /* 0 means "too large to represent" (b64_encode then refuses) */
    if (n > (SIZE_MAX - 1) / 4 * 3 - 2)
        return 0;
    return (n + 2) / 3 * 4 + 1;
}

latch_rc
b64_encode(const void *in, size_t n, char *out, size_t out_size)
{
    const unsigned char *p = in;
    size_t need = b64_encoded_size(n);
    size_t i, o = 0;

    if (need == 0)
        return LATCH_E_TOO_LARGE;
    if (out == NULL || (n > 0 && in == NULL))
        return LATCH_E_INVAL;
    if (out_size < need)
        return LATCH_E_TOO_LARGE;

    for (i = 0; i + 3 <= n; i += 3) {
        unsigned int v = ((unsigned int)p[i] << 16) | ((unsigned int)p[i + 1] << 8) | p[i + 2];

        out[o++] = enc_char(v >> 18);
        out[o++] = enc_char(v >> 12);
        out[o++] = enc_char(v >> 6);
        out[o++] = enc_char(v);
    }
    if (n - i == 1) {
        unsigned int v = (unsigned int)p[i] << 16;

        out[o++] = enc_char(v >> 18);
        out[o++] = enc_char(v >> 12);
        out[o++] = '=';
        out[o++] = '=';
    } else if (n - i == 2) {
        unsigned int v = ((unsigned int)p[i] << 16) | ((unsigned int)p[i + 1] << 8);

        out[o++] = enc_char(v >> 18);
        out[o++] = enc_char(v >> 12);
        out[o++] = enc_char(v >> 6);
        out[o++] = '=';
    }
    out[o] = '\0';
    return LATCH_OK;
}

/*
 * Decodes exactly. out_size only has to hold the decoded bytes (the header's 3 * (len / 4) is
 * always enough); a result that does not fit is LATCH_E_TOO_LARGE and nothing useful is left in
 * out. On any error *out_len is 0.
 */
latch_rc
b64_decode(const char *in, size_t len, unsigned char *out, size_t out_size, size_t *out_len)
{
    const unsigned char *p = (const unsigned char *)in;
    size_t pad = 0, need, i, o = 0;
    unsigned int bad = 0;

    if (out_len != NULL)
        *out_len = 0;
    if (out_len == NULL || (len > 0 && (in == NULL || out == NULL)))
        return LATCH_E_INVAL;
    if (len == 0)
        return LATCH_OK;
    if (len % 4 != 0)
        return LATCH_E_INVAL;

    if (p[len - 1] == '=') {
        pad = 1;
        if (p[len - 2] == '=')
            pad = 2;
    }
    need = len / 4 * 3 - pad;
    if (need > out_size)
        return LATCH_E_TOO_LARGE;

    for (i = 0; i < len; i += 4) {
        int last = (i + 4 == len);
        unsigned int a = dec_char(p[i]);
        unsigned int b = dec_char(p[i + 1]);
        unsigned int c, d;

        bad |= (a | b) & 0x80u;
        if (last && pad == 2) {
            bad |= b & 0x0fu; /* 4 unused bits must be zero */
            if (bad != 0)
                return LATCH_E_INVAL;
            out[o++] = (unsigned char)((a << 2) | (b >> 4));
            break;
        }
        c = dec_char(p[i + 2]);
        bad |= c & 0x80u;
        if (last && pad == 1) {
            bad |= c & 0x03u; /* 2 unused bits must be zero */
            if (bad != 0)
                return LATCH_E_INVAL;
            out[o++] = (unsigned char)((a << 2) | (b >> 4));
            out[o++] = (unsigned char)(((b & 0x0fu) << 4) | (c >> 2));
            break;
        }
        d = dec_char(p[i + 3]);
        bad |= d & 0x80u;
        out[o++] = (unsigned char)((a << 2) | (b >> 4));
        out[o++] = (unsigned char)(((b & 0x0fu) << 4) | (c >> 2));
        out[o++] = (unsigned char)(((c & 0x03u) << 6) | d);
    }
    if (bad != 0)
        return LATCH_E_INVAL;
    *out_len = o;
    return LATCH_OK;
}
