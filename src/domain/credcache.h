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
/* prepared answers per entry, one per query shape that changes the body (refresh_token=0/1) */
#define CREDCACHE_BODY_VARIANTS 2

struct credcache;

struct credcache_opts {
    size_t max_entries; /* 0: no cache (credcache_new returns NULL) */
    size_t max_bytes;
    int64_t max_age_ms; /* entries older than this are misses (0 = no age bound) */
};

struct credcache_stats {
    uint64_t hits, misses, evictions, invalidations;
    uint64_t entries, bytes;
    uint64_t wiped;     /* secmem bytes wiped and released (evictions, drops, replacements) */
    uint64_t body_hits; /* hits answered with a prepared answer (also counted in hits) */
};

/* What credcache_get_ex also reads: the prepared answer of one variant, and the entry's serial. */
struct credcache_hit {
    int variant;              /* in: 0..CREDCACHE_BODY_VARIANTS-1, or -1 for none */
    int64_t body_min_fetched; /* in: no body when the row's last_fetched_at is older than this */
    char *body;               /* out: owned NUL-terminated copy (wipe before free), or NULL */
    size_t body_len;
    uint64_t serial; /* out (hit): names the entry's row and credentials, for _put_body/_touch_ex */
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
 * credcache_get that may answer with the prepared answer of hit->variant instead: then
 * hit->body is set and *creds stays NULL (nothing parsed). hit->serial is set on every hit.
 */
bool credcache_get_ex(struct credcache *cc, int64_t env_id, const char *provider_config_key,
                      const char *connection_id, int64_t now_ms, struct store_connection *row,
                      json_t **creds, uint64_t *clock, struct credcache_hit *hit);
/*
 * Inserts or replaces the entry of row's key: row (credentials_sealed is not kept), the
 * credentials JSON text (copied into secmem; the caller wipes its own copy), clock
 * (store_conn_clock() read before row was read). An entry put under an older clock never
 * replaces one put under a newer clock.
 */
uint64_t credcache_put(struct credcache *cc, const struct store_connection *row, const char *text,
                       size_t len, uint64_t clock, int64_t now_ms);
/*
 * Returns the new entry's serial (0: not cached). A prepared answer (the serialised response of
 * a token read, built from exactly that row and those credentials) may then be attached with
 * credcache_put_body: copied into secmem, counted in the byte bound, wiped with the entry. It
 * attaches only while the entry still has that serial: a put or touch since (any change of the
 * row it quotes) gives the entry a new serial, and a body built from the old one is dropped.
 */
void credcache_put_body(struct credcache *cc, int64_t env_id, const char *provider_config_key,
                        const char *connection_id, uint64_t serial, int variant, const char *text,
                        size_t len);
/*
 * Sets the entry's last_fetched_at (the refresher's bulk touch bookkeeping) when it moves forward
 * and the entry still has serial (0: any); its prepared answers (which quote it) are dropped and
 * it gets a new serial, returned (0: nothing changed).
 */
uint64_t credcache_touch_ex(struct credcache *cc, int64_t env_id, const char *provider_config_key,
                            const char *connection_id, uint64_t serial, int64_t last_fetched_at);
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
