/*
 * json.h - small jansson helpers for JSON kept as text (store columns, error records).
 * Thread-safe (jansson objects are not shared). Every returned value is owned by the caller:
 * json_t* is a new reference (json_decref), char* is malloc'd (free).
 */
#ifndef LATCH_UTIL_JSON_H
#define LATCH_UTIL_JSON_H

#include <jansson.h>

/* Loads a JSON text column; a new reference, json_null() for NULL or unparsable text. */
json_t *latch_json_col(const char *text);
/* Compact dump (any value, not only objects); "null" if jansson fails. */
char *latch_json_dump(const json_t *v);

#endif
