/*
 * credcache.h - the hot cache of reads: decrypted credentials of recently read connections, so
 * that a cached token read or a proxied request skips the store read, the AES-GCM opening and the
 * JSON parse of the envelope.
 *
 * An entry is keyed by (env_id, provider_config_key, connection_id) and holds a copy of the
 * connection row without its sealed column (credentials_sealed = NULL) plus the plaintext
 * credentials JSON text in secmem pages (locked, left out of core dumps, wiped before release).
 * Each entry remembers the store's connection write clock read before its row was read
 * (store_conn_clock); the caller checks it against store_conn_unchanged_since on every hit, so
 * that any write committed on this node after that read (see store.h) turns the entry into a
 * miss. Entries older than max_age_ms are misses too (a bound for writes this node cannot see).
 *
 * Bounds: at most max_entries entries and max_bytes bytes (the secmem pages, page-rounded, plus
 * the row's strings) over all CREDCACHE_SHARDS shards together; a put into a full cache evicts
 * (and wipes) the least recently used entries of its own shard (an approximate LRU: the shard of
 * the key decides), and is not cached when that shard has none left. A credential larger than a
 * quarter of max_bytes is not cached.
 *
 * Ownership: struct credcache is owned by its creator (credcache_free wipes every entry).
 * credcache_get fills owned copies. Threads: every function from any thread (one mutex per
 * shard, held for a hash lookup and a copy; no I/O under it).
 */
#ifndef LATCH_CREDCACHE_H
#define LATCH_CREDCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "store/store.h"

#define CREDCACHE_SHARDS 16

struct credcache;

struct credcache_opts {
    size_t max_entries; /* 0: no cache (credcache_new returns NULL) */
    size_t max_bytes;
    int64_t max_age_ms; /* entries older than this are misses (0 = no age bound) */
};

struct credcache_stats {
    uint64_t hits, misses, evictions, invalidations;
    uint64_t entries, bytes;
    uint64_t wiped; /* secmem bytes wiped and released (evictions, drops, replacements) */
};

/* NULL when o->max_entries or o->max_bytes is 0 (caching off); every function takes NULL. */
struct credcache *credcache_new(const struct credcache_opts *o);
/* Wipes and frees every entry, then the cache. NULL-safe. */
void credcache_free(struct credcache *cc);

/*
 * On a hit fills *row (owned copy; credentials_sealed NULL), *creds (new reference; free with
 * creds_free) and *clock (the write clock the entry was read under) and returns true. A miss
 * (absent, or older than max_age_ms: then dropped) returns false and leaves the outputs zeroed.
 */
bool credcache_get(struct credcache *cc, int64_t env_id, const char *provider_config_key,
                   const char *connection_id, int64_t now_ms, struct store_connection *row,
                   json_t **creds, uint64_t *clock);
/*
 * Inserts or replaces the entry of row's key: row (credentials_sealed is not kept), the
 * credentials JSON text (copied into secmem; the caller wipes its own copy), clock
 * (store_conn_clock() read before row was read). An entry put under an older clock never
 * replaces one put under a newer clock.
 */
void credcache_put(struct credcache *cc, const struct store_connection *row, const char *text,
                   size_t len, uint64_t clock, int64_t now_ms);
/* Sets the entry's last_fetched_at (the refresher's bulk touch bookkeeping). */
void credcache_touch(struct credcache *cc, int64_t env_id, const char *provider_config_key,
                     const char *connection_id, int64_t last_fetched_at);
/* Drops (and wipes) one entry; counted as an invalidation when it existed. */
void credcache_drop(struct credcache *cc, int64_t env_id, const char *provider_config_key,
                    const char *connection_id);
/* A hit the caller found stale: drops it and counts it as a miss and an invalidation. */
void credcache_reject(struct credcache *cc, int64_t env_id, const char *provider_config_key,
                      const char *connection_id);
/* Drops every entry. */
void credcache_clear(struct credcache *cc);
/* Counters and sizes (zero for NULL). */
void credcache_stats(struct credcache *cc, struct credcache_stats *out);

#endif
