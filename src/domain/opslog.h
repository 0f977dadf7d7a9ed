/*
 * opslog.h - the operations log: what latch did for whom (links, reconnects, refreshes, proxy
 * calls, webhook deliveries, management changes), kept in the store (table operations) for
 * support and the admin dashboard. See docs/internals/opslog.md.
 *
 * Writing never slows or blocks a request thread: opslog_emit copies the operation into a
 * bounded in-memory queue (a few hundred nanoseconds under a mutex that is never held across
 * I/O) and returns; one background thread drains the queue in batches (one transaction, one
 * fsync per batch) and prunes old rows by age and count in small batches. When the queue is
 * full the operation is dropped and counted (opslog_dropped, /metrics), with a rate-limited
 * warning: losing a log line under overload is better than making the request wait for disk.
 *
 * Ids are 26 lower-case hex digits: 12 of the start time in ms, 14 random. They sort by time,
 * so a time bound is an id bound (opslog_id_bound) and the newest-first order is id order.
 *
 * The log is process-wide, like the logger: every layer from domain up records with one call.
 * Nothing secret goes in: no bodies, header values, tokens or secrets; callers pass ids, codes,
 * sizes and statuses only.
 * Threads: every function may be called from any thread; opslog_start/stop from one thread
 * while no other thread emits.
 */
#ifndef LATCH_OPSLOG_H
#define LATCH_OPSLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

/* 26 hex digits and a NUL. */
#define OPSLOG_ID_LEN 27

struct opslog_opts {
    struct store *store;       /* borrowed; outlives the log (opslog_stop first) */
    size_t queue_max;          /* operations waiting for the writer */
    int64_t retention_ms;      /* rows older than this are pruned */
    int64_t max_rows;          /* at most this many rows are kept */
    int64_t prune_interval_ms; /* how often retention runs */
};

/* Starts the writer. Until then (or with the log off) opslog_emit drops nothing and keeps nothing.
 */
latch_rc opslog_start(const struct opslog_opts *o);
/* Writes what is queued, stops the writer. NULL-safe, idempotent. */
void opslog_stop(void);
/* True between opslog_start and opslog_stop. */
bool opslog_enabled(void);

/* A new id, for an operation starting now (also works while the log is off). */
void opslog_new_id(char id[OPSLOG_ID_LEN]);
/* The id bound of a time: every id of an operation started at or after ms sorts >= it. */
void opslog_id_bound(int64_t ms, char out[OPSLOG_ID_LEN]);
/* True if s has the shape of an id (26 lower-case hex digits). */
bool opslog_id_valid(const char *s);

/*
 * Queues a copy of op (op->id and op->kind required; op->at 0 = now). Never blocks on I/O.
 * Returns false when it was dropped (queue full, log off, bad op).
 */
bool opslog_emit(const struct store_op *op);

/*
 * A webhook delivery attempt: begin copies the names (type, operation, connection, integration,
 * provider: never the body's other fields) out of the outbox body; end records the attempt with
 * the receiver's status (0 if none), an error name for a failed transfer, the attempt number and
 * the next retry (0 = none: delivered or given up).
 */
struct opslog_webhook {
    char id[OPSLOG_ID_LEN];
    int64_t env_id;
    uint64_t t0_us;
    char *names_json; /* {"type","operation","connection_id","integration","provider"} */
};
void opslog_webhook_begin(struct opslog_webhook *w, int64_t env_id, const char *body);
void opslog_webhook_end(struct opslog_webhook *w, long status, const char *error, int attempt,
                        int64_t next_retry_at);

/* For /metrics and tests. */
uint64_t opslog_dropped(void);
uint64_t opslog_written(void);
size_t opslog_depth(void);
/* Blocks until everything queued before the call is in the store (tests, shutdown). */
void opslog_sync(void);

#endif
