#include "domain/credcache.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crypto/secmem.h"
#include "util/xalloc.h"

struct cc_entry {
    struct cc_entry *chain;       /* hash bucket */
    struct cc_entry *prev, *next; /* LRU: head = most recent */
    uint64_t hash;
    struct store_connection row; /* credentials_sealed NULL */
    uint64_t clock;
    int64_t born_ms;
    char *plain; /* secmem: the credentials JSON text, NUL-terminated */
    size_t plain_len, plain_cap;
    uint64_t serial; /* new on every put and touch: names exactly this row (+ credentials) */
    char *body[CREDCACHE_BODY_VARIANTS]; /* secmem: prepared answers (NULL: none yet) */
    size_t body_len[CREDCACHE_BODY_VARIANTS], body_cap[CREDCACHE_BODY_VARIANTS];
    size_t bytes;     /* what the entry counts against max_bytes */
    _Atomic int refs; /* the table's (while linked) + readers parsing plain outside the lock */
};

struct cc_shard {
    pthread_mutex_t mu;
    struct cc_entry **buckets;
    size_t n_buckets; /* power of two */
    struct cc_entry *head, *tail;
    size_t entries, bytes;
};

struct credcache {
    struct credcache_opts o;
    _Atomic size_t n_entries, n_bytes; /* all shards: the bounds are global */
    size_t page;
    struct cc_shard shards[CREDCACHE_SHARDS];
    _Atomic uint64_t hits, misses, evictions, invalidations, wiped;
    _Atomic uint64_t serial_next, body_hits;
};

/* FNV-1a over the key parts; the separators keep ("a","bc") apart from ("ab","c"). */
static uint64_t
key_hash(int64_t env_id, const char *pck, const char *cid)
{
    uint64_t h = 1469598103934665603ULL;
    const unsigned char *p;

    for (size_t i = 0; i < sizeof env_id; i++) {
        h ^= (uint64_t)((env_id >> (8 * i)) & 0xff);
        h *= 1099511628211ULL;
    }
    for (p = (const unsigned char *)pck; *p != '\0'; p++) {
        h ^= *p;
        h *= 1099511628211ULL;
    }
    h ^= 0xff;
    h *= 1099511628211ULL;
    for (p = (const unsigned char *)cid; *p != '\0'; p++) {
        h ^= *p;
        h *= 1099511628211ULL;
    }
    return h;
}

static bool
key_eq(const struct cc_entry *e, uint64_t h, int64_t env_id, const char *pck, const char *cid)
{
    return e->hash == h && e->row.env_id == env_id &&
           strcmp(e->row.provider_config_key, pck) == 0 && strcmp(e->row.connection_id, cid) == 0;
}

static struct cc_shard *
shard_of(struct credcache *cc, uint64_t h)
{
    return &cc->shards[(h >> 56) % CREDCACHE_SHARDS];
}

static size_t
str_bytes(const char *s)
{
    return s != NULL ? strlen(s) + 1 : 0;
}

static size_t
row_bytes(const struct store_connection *r)
{
    return sizeof(struct cc_entry) + str_bytes(r->uid) + str_bytes(r->connection_id) +
           str_bytes(r->provider_config_key) + str_bytes(r->provider) +
           str_bytes(r->connection_config_json) + str_bytes(r->metadata_json) +
           str_bytes(r->tags_json) + str_bytes(r->end_user_json) +
           str_bytes(r->webhook_url_override) + str_bytes(r->auth_error_json);
}

struct credcache *
credcache_new(const struct credcache_opts *o)
{
    struct credcache *cc;
    long page = sysconf(_SC_PAGESIZE);

    if (o == NULL || o->max_entries == 0 || o->max_bytes == 0)
        return NULL;
    cc = xcalloc(1, sizeof *cc);
    cc->o = *o;
    cc->page = page > 0 ? (size_t)page : 4096;
    for (size_t i = 0; i < CREDCACHE_SHARDS; i++) {
        struct cc_shard *s = &cc->shards[i];
        size_t nb = 8;

        while (nb < o->max_entries / CREDCACHE_SHARDS * 2 && nb < ((size_t)1 << 20))
            nb *= 2;
        pthread_mutex_init(&s->mu, NULL);
        s->n_buckets = nb;
        s->buckets = xcalloc(nb, sizeof(struct cc_entry *));
    }
    return cc;
}

static void
entry_unref(struct credcache *cc, struct cc_entry *e)
{
    if (atomic_fetch_sub(&e->refs, 1) > 1)
        return; /* a reader still parses it; the last one frees */
    atomic_fetch_add_explicit(&cc->wiped, e->plain_cap, memory_order_relaxed);
    secmem_free(e->plain, e->plain_cap); /* wipes */
    for (int v = 0; v < CREDCACHE_BODY_VARIANTS; v++) {
        if (e->body[v] == NULL)
            continue;
        atomic_fetch_add_explicit(&cc->wiped, e->body_cap[v], memory_order_relaxed);
        secmem_free(e->body[v], e->body_cap[v]);
    }
    store_connection_clear(&e->row);
    free(e);
}

/* Unlinks e from its bucket and the LRU list; the caller unrefs it. */
static void
unlink_locked(struct credcache *cc, struct cc_shard *s, struct cc_entry *e)
{
    struct cc_entry **pp = &s->buckets[e->hash & (s->n_buckets - 1)];

    while (*pp != e)
        pp = &(*pp)->chain;
    *pp = e->chain;
    if (e->prev != NULL)
        e->prev->next = e->next;
    else
        s->head = e->next;
    if (e->next != NULL)
        e->next->prev = e->prev;
    else
        s->tail = e->prev;
    s->entries--;
    s->bytes -= e->bytes;
    atomic_fetch_sub(&cc->n_entries, 1);
    atomic_fetch_sub(&cc->n_bytes, e->bytes);
}

static void
to_front_locked(struct cc_shard *s, struct cc_entry *e)
{
    if (s->head == e)
        return;
    e->prev->next = e->next;
    if (e->next != NULL)
        e->next->prev = e->prev;
    else
        s->tail = e->prev;
    e->prev = NULL;
    e->next = s->head;
    s->head->prev = e;
    s->head = e;
}

static struct cc_entry *
find_locked(struct cc_shard *s, uint64_t h, int64_t env_id, const char *pck, const char *cid)
{
    struct cc_entry *e = s->buckets[h & (s->n_buckets - 1)];

    while (e != NULL && !key_eq(e, h, env_id, pck, cid))
        e = e->chain;
    return e;
}

void
credcache_free(struct credcache *cc)
{
    if (cc == NULL)
        return;
    credcache_clear(cc);
    for (size_t i = 0; i < CREDCACHE_SHARDS; i++) {
        pthread_mutex_destroy(&cc->shards[i].mu);
        free(cc->shards[i].buckets);
    }
    free(cc);
}

bool
credcache_get_ex(struct credcache *cc, int64_t env_id, const char *pck, const char *cid,
                 int64_t now_ms, struct store_connection *row, json_t **creds, uint64_t *clock,
                 struct credcache_hit *hit)
{
    struct cc_shard *s;
    struct cc_entry *e, *stale = NULL;
    uint64_t h;
    char *body = NULL;

    memset(row, 0, sizeof *row);
    *creds = NULL;
    *clock = 0;
    if (hit != NULL) {
        hit->body = NULL;
        hit->body_len = 0;
        hit->serial = 0;
    }
    if (cc == NULL || pck == NULL || cid == NULL)
        return false;
    h = key_hash(env_id, pck, cid);
    s = shard_of(cc, h);
    pthread_mutex_lock(&s->mu);
    e = find_locked(s, h, env_id, pck, cid);
    if (e != NULL && cc->o.max_age_ms > 0 && now_ms - e->born_ms >= cc->o.max_age_ms) {
        unlink_locked(cc, s, e);
        stale = e;
        e = NULL;
    }
    if (e != NULL) {
        store_connection_copy(row, &e->row);
        *clock = e->clock;
        to_front_locked(s, e);
        if (hit != NULL) {
            int v = hit->variant;

            hit->serial = e->serial;
            if (v >= 0 && v < CREDCACHE_BODY_VARIANTS && e->body[v] != NULL &&
                e->row.last_fetched_at >= hit->body_min_fetched) {
                /* the prepared answer: copied under the lock (it may be dropped by a touch) */
                body = xmalloc(e->body_len[v] + 1);
                memcpy(body, e->body[v], e->body_len[v] + 1);
                hit->body_len = e->body_len[v];
            }
        }
        if (body == NULL)
            atomic_fetch_add(&e->refs, 1); /* parsed below, outside the lock */
    }
    pthread_mutex_unlock(&s->mu);
    if (stale != NULL)
        entry_unref(cc, stale);
    if (body != NULL) {
        hit->body = body;
        atomic_fetch_add_explicit(&cc->hits, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&cc->body_hits, 1, memory_order_relaxed);
        return true;
    }
    if (e != NULL) {
        *creds = json_loadb(e->plain, e->plain_len, 0, NULL); /* plain is never written again */
        entry_unref(cc, e);
        if (*creds == NULL)
            store_connection_clear(row);
    }
    if (*creds == NULL) {
        if (hit != NULL)
            hit->serial = 0;
        atomic_fetch_add_explicit(&cc->misses, 1, memory_order_relaxed);
        return false;
    }
    atomic_fetch_add_explicit(&cc->hits, 1, memory_order_relaxed);
    return true;
}

bool
credcache_get(struct credcache *cc, int64_t env_id, const char *pck, const char *cid,
              int64_t now_ms, struct store_connection *row, json_t **creds, uint64_t *clock)
{
    return credcache_get_ex(cc, env_id, pck, cid, now_ms, row, creds, clock, NULL);
}

/* Would one more entry of bytes exceed a bound? */
static bool
over(struct credcache *cc, size_t bytes)
{
    return atomic_load(&cc->n_entries) + 1 > cc->o.max_entries ||
           atomic_load(&cc->n_bytes) + bytes > cc->o.max_bytes;
}

/* Unlinks s's least recently used entries while over(bytes); returns them chained onto list. */
static struct cc_entry *
evict_locked(struct credcache *cc, struct cc_shard *s, size_t bytes, struct cc_entry *list)
{
    while (s->tail != NULL && over(cc, bytes)) {
        struct cc_entry *v = s->tail;

        unlink_locked(cc, s, v);
        v->chain = list;
        list = v;
        atomic_fetch_add_explicit(&cc->evictions, 1, memory_order_relaxed);
    }
    return list;
}

/* Takes one entry and bytes from the global budget; false (nothing taken) when they do not fit. */
static bool
reserve(struct credcache *cc, size_t bytes)
{
    if (atomic_fetch_add(&cc->n_entries, 1) + 1 > cc->o.max_entries) {
        atomic_fetch_sub(&cc->n_entries, 1);
        return false;
    }
    if (atomic_fetch_add(&cc->n_bytes, bytes) + bytes > cc->o.max_bytes) {
        atomic_fetch_sub(&cc->n_bytes, bytes);
        atomic_fetch_sub(&cc->n_entries, 1);
        return false;
    }
    return true;
}

uint64_t
credcache_put(struct credcache *cc, const struct store_connection *row, const char *text,
              size_t len, uint64_t clock, int64_t now_ms)
{
    struct cc_shard *s;
    struct cc_entry *e, *old, *evicted = NULL;
    uint64_t h, serial = 0;

    if (cc == NULL || row == NULL || text == NULL || row->provider_config_key == NULL ||
        row->connection_id == NULL)
        return 0;
    e = xcalloc(1, sizeof *e);
    atomic_init(&e->refs, 1);
    e->plain_cap = (len + 1 + cc->page - 1) / cc->page * cc->page;
    e->plain = secmem_alloc(e->plain_cap);
    memcpy(e->plain, text, len);
    e->plain_len = len;
    store_connection_copy(&e->row, row);
    if (e->row.credentials_sealed != NULL) {
        free(e->row.credentials_sealed);
        e->row.credentials_sealed = NULL;
    }
    e->hash = h = key_hash(row->env_id, row->provider_config_key, row->connection_id);
    e->clock = clock;
    e->born_ms = now_ms;
    e->serial = atomic_fetch_add(&cc->serial_next, 1) + 1;
    e->bytes = e->plain_cap + row_bytes(&e->row);
    if (e->bytes > cc->o.max_bytes / 4) {
        entry_unref(cc, e);
        return 0;
    }
    s = shard_of(cc, h);
    pthread_mutex_lock(&s->mu);
    old = find_locked(s, h, row->env_id, row->provider_config_key, row->connection_id);
    if (old != NULL && old->clock > clock) {
        /* a newer read already put its entry: keep it */
        pthread_mutex_unlock(&s->mu);
        entry_unref(cc, e);
        return 0;
    }
    if (old != NULL)
        unlink_locked(cc, s, old);
    /* evict least recently used entries until e fits; wiped outside the lock */
    evicted = evict_locked(cc, s, e->bytes, NULL);
    for (size_t i = 1; i < CREDCACHE_SHARDS && over(cc, e->bytes); i++) {
        /* this shard ran dry: take from the others (trylock: never wait holding a lock) */
        struct cc_shard *o = &cc->shards[(size_t)(s - cc->shards + i) % CREDCACHE_SHARDS];

        if (pthread_mutex_trylock(&o->mu) == 0) {
            evicted = evict_locked(cc, o, e->bytes, evicted);
            pthread_mutex_unlock(&o->mu);
        }
    }
    /* reserve the room (another shard's put may have taken it meanwhile) */
    if (reserve(cc, e->bytes)) {
        e->chain = s->buckets[h & (s->n_buckets - 1)];
        s->buckets[h & (s->n_buckets - 1)] = e;
        e->next = s->head;
        if (s->head != NULL)
            s->head->prev = e;
        s->head = e;
        if (s->tail == NULL)
            s->tail = e;
        s->entries++;
        s->bytes += e->bytes;
        serial = e->serial;
        e = NULL;
    }
    pthread_mutex_unlock(&s->mu);
    if (e != NULL) /* full, and nothing left to evict: not cached */
        entry_unref(cc, e);
    if (old != NULL)
        entry_unref(cc, old);
    while (evicted != NULL) {
        struct cc_entry *n = evicted->chain;

        entry_unref(cc, evicted);
        evicted = n;
    }
    return serial;
}

/* Detaches e's prepared answers (their bytes leave the bounds); the caller frees them unlocked. */
static void
bodies_detach_locked(struct credcache *cc, struct cc_shard *s, struct cc_entry *e, char **out,
                     size_t *caps)
{
    for (int v = 0; v < CREDCACHE_BODY_VARIANTS; v++) {
        out[v] = e->body[v];
        caps[v] = e->body_cap[v];
        if (e->body[v] == NULL)
            continue;
        e->bytes -= e->body_cap[v];
        s->bytes -= e->body_cap[v];
        atomic_fetch_sub(&cc->n_bytes, e->body_cap[v]);
        e->body[v] = NULL;
        e->body_len[v] = e->body_cap[v] = 0;
    }
}

static void
bodies_free(struct credcache *cc, char **b, const size_t *caps)
{
    for (int v = 0; v < CREDCACHE_BODY_VARIANTS; v++) {
        if (b[v] == NULL)
            continue;
        atomic_fetch_add_explicit(&cc->wiped, caps[v], memory_order_relaxed);
        secmem_free(b[v], caps[v]); /* wipes */
    }
}

void
credcache_put_body(struct credcache *cc, int64_t env_id, const char *pck, const char *cid,
                   uint64_t serial, int variant, const char *text, size_t len)
{
    struct cc_shard *s;
    struct cc_entry *e;
    uint64_t h;
    size_t cap;
    char *b;
    bool kept = false;

    if (cc == NULL || pck == NULL || cid == NULL || text == NULL || serial == 0 || variant < 0 ||
        variant >= CREDCACHE_BODY_VARIANTS)
        return;
    cap = (len + 1 + cc->page - 1) / cc->page * cc->page;
    if (cap > cc->o.max_bytes / 4)
        return;
    b = secmem_alloc(cap);
    memcpy(b, text, len);
    b[len] = '\0';
    h = key_hash(env_id, pck, cid);
    s = shard_of(cc, h);
    pthread_mutex_lock(&s->mu);
    e = find_locked(s, h, env_id, pck, cid);
    /* only onto the very row (and credentials) it was built from; within both bounds */
    if (e != NULL && e->serial == serial && e->body[variant] == NULL &&
        e->bytes + cap <= cc->o.max_bytes / 4) {
        if (atomic_fetch_add(&cc->n_bytes, cap) + cap <= cc->o.max_bytes) {
            e->body[variant] = b;
            e->body_len[variant] = len;
            e->body_cap[variant] = cap;
            e->bytes += cap;
            s->bytes += cap;
            kept = true;
        } else {
            atomic_fetch_sub(&cc->n_bytes, cap);
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (!kept)
        secmem_free(b, cap);
}

uint64_t
credcache_touch_ex(struct credcache *cc, int64_t env_id, const char *pck, const char *cid,
                   uint64_t serial, int64_t last_fetched_at)
{
    struct cc_shard *s;
    struct cc_entry *e;
    uint64_t h, out = 0;
    char *old[CREDCACHE_BODY_VARIANTS] = {NULL};
    size_t caps[CREDCACHE_BODY_VARIANTS] = {0};

    if (cc == NULL || pck == NULL || cid == NULL)
        return 0;
    h = key_hash(env_id, pck, cid);
    s = shard_of(cc, h);
    pthread_mutex_lock(&s->mu);
    e = find_locked(s, h, env_id, pck, cid);
    if (e != NULL && (serial == 0 || e->serial == serial) &&
        e->row.last_fetched_at < last_fetched_at) {
        /* the prepared answers quote last_fetched_at: they go, and the row gets a new name */
        e->row.last_fetched_at = last_fetched_at;
        bodies_detach_locked(cc, s, e, old, caps);
        e->serial = atomic_fetch_add(&cc->serial_next, 1) + 1;
        out = e->serial;
    }
    pthread_mutex_unlock(&s->mu);
    bodies_free(cc, old, caps);
    return out;
}

void
credcache_touch(struct credcache *cc, int64_t env_id, const char *pck, const char *cid,
                int64_t last_fetched_at)
{
    (void)credcache_touch_ex(cc, env_id, pck, cid, 0, last_fetched_at);
}

void
credcache_drop(struct credcache *cc, int64_t env_id, const char *pck, const char *cid)
{
    struct cc_shard *s;
    struct cc_entry *e;
    uint64_t h;

    if (cc == NULL || pck == NULL || cid == NULL)
        return;
    h = key_hash(env_id, pck, cid);
    s = shard_of(cc, h);
    pthread_mutex_lock(&s->mu);
    e = find_locked(s, h, env_id, pck, cid);
    if (e != NULL)
        unlink_locked(cc, s, e);
    pthread_mutex_unlock(&s->mu);
    if (e != NULL) {
        atomic_fetch_add_explicit(&cc->invalidations, 1, memory_order_relaxed);
        entry_unref(cc, e);
    }
}

void
credcache_reject(struct credcache *cc, int64_t env_id, const char *pck, const char *cid)
{
    if (cc == NULL)
        return;
    atomic_fetch_sub_explicit(&cc->hits, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&cc->misses, 1, memory_order_relaxed);
    credcache_drop(cc, env_id, pck, cid);
}

void
credcache_clear(struct credcache *cc)
{
    if (cc == NULL)
        return;
    for (size_t i = 0; i < CREDCACHE_SHARDS; i++) {
        struct cc_shard *s = &cc->shards[i];
        struct cc_entry *e;

        pthread_mutex_lock(&s->mu);
        e = s->head;
        s->head = s->tail = NULL;
        memset(s->buckets, 0, s->n_buckets * sizeof(struct cc_entry *));
        atomic_fetch_sub(&cc->n_entries, s->entries);
        atomic_fetch_sub(&cc->n_bytes, s->bytes);
        s->entries = s->bytes = 0;
        pthread_mutex_unlock(&s->mu);
        while (e != NULL) {
            struct cc_entry *n = e->next;

            entry_unref(cc, e);
            e = n;
        }
    }
}

void
credcache_stats(struct credcache *cc, struct credcache_stats *out)
{
    memset(out, 0, sizeof *out);
    if (cc == NULL)
        return;
    out->hits = atomic_load_explicit(&cc->hits, memory_order_relaxed);
    out->misses = atomic_load_explicit(&cc->misses, memory_order_relaxed);
    out->evictions = atomic_load_explicit(&cc->evictions, memory_order_relaxed);
    out->invalidations = atomic_load_explicit(&cc->invalidations, memory_order_relaxed);
    out->wiped = atomic_load_explicit(&cc->wiped, memory_order_relaxed);
    out->body_hits = atomic_load_explicit(&cc->body_hits, memory_order_relaxed);
    for (size_t i = 0; i < CREDCACHE_SHARDS; i++) {
        struct cc_shard *s = &cc->shards[i];

        pthread_mutex_lock(&s->mu);
        out->entries += s->entries;
        out->bytes += s->bytes;
        pthread_mutex_unlock(&s->mu);
    }
}
