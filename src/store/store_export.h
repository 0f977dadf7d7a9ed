/*
 * store_export.h - `latch export` / `latch import`: a JSON-lines dump of every table row, to move
 * a deployment between backends (SQLite <-> PostgreSQL) or to back it up.
 *
 * Format (one JSON object per line, UTF-8):
 *   {"latch_export":1,"schema_version":N}                      first line
 *   {"table":"<name>","row":{"<column>":<value>,...}}           one line per row
 *   {"end":true,"rows":<count>}                                 last line (truncation check)
 * Tables come parents first (meta, environments, api_keys, integrations, connections,
 * connect_sessions, webhook_outbox); schema_migrations is not exported (the target has its own).
 * Values: integers, strings, true/false, null; 32-byte hashes as 64 hex digits. Ciphertexts
 * (*_sealed) are copied verbatim: their AADs use connection uids, environment ids and meta keys,
 * which are all kept, so they stay valid under the same encryption key. The dump holds no
 * plaintext secret but it does hold every sealed credential: treat it like the database.
 *
 * Ownership: the caller owns the FILE (opened, closed, flushed by the caller).
 * Threads: run while nothing else writes to the store (export reads in batches, without one
 * snapshot: a concurrent writer could make the dump inconsistent).
 */
#ifndef LATCH_STORE_EXPORT_H
#define LATCH_STORE_EXPORT_H

#include <stdio.h>

#include "util/rc.h"
#include "store/store.h"

/* Version of the dump format (the "latch_export" field). */
#define STORE_EXPORT_FORMAT 1

/* Writes every row of s to out. */
latch_rc store_export(struct store *s, FILE *out, struct latch_err *err);

/*
 * Reads a dump into s, which must be migrated and empty (no meta, no environment: run it before
 * the first `latch serve`); LATCH_E_CONFLICT otherwise. The dump's schema version must equal the
 * store's. All or nothing: one transaction.
 */
latch_rc store_import(struct store *s, FILE *in, struct latch_err *err);

#endif
