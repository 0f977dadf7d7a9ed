/*
 * fields.h - what the catalogue loader (catalog.c) and the field validators (fields.c) share:
 * the compiled-pattern type behind catalog_field.re_ and the hostname check. Internal to
 * src/domain; everyone else validates through catalog_field_validate (catalog.h).
 * Ownership: struct catalog_re lives in the catalogue's arena; the catalogue owns code and
 * frees it (catalog_free). Threads: pure functions; a compiled pattern is read-only after load
 * and may be matched from any thread (pcre2 match data is per call).
 */
#ifndef LATCH_FIELDS_H
#define LATCH_FIELDS_H

#include <stdbool.h>
#include <stddef.h>

#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <pcre2.h>

/* A compiled pattern: what catalog_field.re_ points to. */
struct catalog_re {
    pcre2_code *code;
    pcre2_match_context *mctx; /* borrowed from the catalogue */
    struct catalog_re *next;
};

/* Nango's ^[a-zA-Z0-9.-]+$ plus RFC 1123 shape: labels 1..63, no '-' at a label's ends. */
bool fields_hostname_ok(const char *s, size_t n);

#endif
