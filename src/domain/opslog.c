/*
 * opslog.c - the operations log's queue, background writer and retention (see opslog.h).
 *
 * The queue is a ring of struct store_op (owned strings) under one mutex: emit copies the
 * strings before taking it, so the critical section is a struct copy. The writer takes up to
 * OPSLOG_BATCH rows at a time, appends them in one transaction, and every prune interval
 * deletes OPSLOG_PRUNE_BATCH rows at a time (between two write batches, so writes never wait
 * behind a long delete) until nothing is left to prune.
 */
#include "domain/opslog.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/rand.h>

#include "core/log.h"
#include "util/json.h"
#include "util/clock.h"
#include "util/xalloc.h"

/* Rows per write transaction. */
#define OPSLOG_BATCH 512
/* Rows per prune transaction (short: a delete holds the write lock). */
#define OPSLOG_PRUNE_BATCH 1000
/* The writer wakes at least this often (a partial batch waits at most this long). */
#define OPSLOG_FLUSH_MS 200
/* At most one "queue full" warning per this interval. */
#define OPSLOG_WARN_INTERVAL_MS 10000

struct opslog {
    struct opslog_opts o;
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* the writer waits for work */
    pthread_cond_t done_cv; /* opslog_sync waits for the writer */
    struct store_op *ring;
    size_t head, n;  /* oldest at head */
    uint64_t queued; /* rows ever queued */
    uint64_t taken;  /* rows the writer finished with (written or failed) */
    bool stop;
    pthread_t thr;
};

static struct opslog *g_log;
static _Atomic uint64_t g_dropped;
static _Atomic uint64_t g_written;
static _Atomic int64_t g_last_warn;

static const char hexd[] = "0123456789abcdef";

void
opslog_id_bound(int64_t ms, char out[OPSLOG_ID_LEN])
{
    uint64_t t = ms < 0 ? 0 : (uint64_t)ms;

    for (int i = 11; i >= 0; i--) {
        out[i] = hexd[t & 0xf];
        t >>= 4;
    }
    memset(out + 12, '0', 14);
    out[26] = '\0';
}

void
opslog_new_id(char id[OPSLOG_ID_LEN])
{
    unsigned char r[7] = {0};

    opslog_id_bound(latch_now_ms(), id);
    (void)RAND_bytes(r, sizeof r);
    for (size_t i = 0; i < sizeof r; i++) {
        id[12 + 2 * i] = hexd[r[i] >> 4];
        id[13 + 2 * i] = hexd[r[i] & 0xf];
    }
}

bool
opslog_id_valid(const char *s)
{
    size_t i;

    if (s == NULL)
        return false;
    for (i = 0; s[i] != '\0'; i++)
        if (i >= 26 || strchr(hexd, s[i]) == NULL)
            return false;
    return i == 26;
}

static char *
dup0(const char *s)
{
    return s != NULL ? xstrdup(s) : NULL;
}

static void
warn_dropped(void)
{
    int64_t now = latch_now_ms();
    int64_t last = atomic_load_explicit(&g_last_warn, memory_order_relaxed);

    if (now - last < OPSLOG_WARN_INTERVAL_MS ||
        !atomic_compare_exchange_strong(&g_last_warn, &last, now))
        return;
    log_warn("operations log queue full: operations dropped", "dropped_total=%llu",
             (unsigned long long)atomic_load(&g_dropped));
}

bool
opslog_emit(const struct store_op *op)
{
    struct opslog *l = g_log;
    struct store_op c;
    bool ok = false;

    if (l == NULL || op == NULL || op->id == NULL || op->kind == NULL)
        return false;
    c.id = xstrdup(op->id);
    c.env_id = op->env_id;
    c.at = op->at != 0 ? op->at : latch_now_ms();
    c.kind = xstrdup(op->kind);
    c.success = op->success;
    c.error = dup0(op->error);
    c.integration = dup0(op->integration);
    c.provider = dup0(op->provider);
    c.connection_id = dup0(op->connection_id);
    c.end_user_id = dup0(op->end_user_id);
    c.duration_ms = op->duration_ms;
    c.detail_json = dup0(op->detail_json);
    pthread_mutex_lock(&l->mu);
    if (!l->stop && l->n < l->o.queue_max) {
        l->ring[(l->head + l->n) % l->o.queue_max] = c;
        l->n++;
        l->queued++;
        ok = true;
        if (l->n == OPSLOG_BATCH)
            pthread_cond_signal(&l->cv);
    }
    pthread_mutex_unlock(&l->mu);
    if (!ok) {
        store_op_clear(&c);
        atomic_fetch_add(&g_dropped, 1);
        warn_dropped();
    }
    return ok;
}

/* Writer thread: one batch (rows moved out of the ring under the lock). */
static void
write_batch(struct opslog *l, struct store_op *v, size_t k)
{
    latch_rc rc = store_ops_append(l->o.store, v, k);

    if (rc == LATCH_E_BUSY || rc == LATCH_E_UNAVAILABLE)
        rc = store_ops_append(l->o.store, v, k); /* once more, then give up on them */
    if (rc == LATCH_OK) {
        atomic_fetch_add(&g_written, k);
    } else {
        atomic_fetch_add(&g_dropped, k);
        log_warn("operations log write failed", "rows=%zu rc=%s", k, latch_strerror(rc));
    }
    for (size_t i = 0; i < k; i++)
        store_op_clear(&v[i]);
}

/* One prune batch; true while there is more to prune. */
static bool
prune_step(struct opslog *l)
{
    char cut[OPSLOG_ID_LEN];
    int64_t deleted = 0;
    latch_rc rc;

    opslog_id_bound(latch_now_ms() - l->o.retention_ms, cut);
    rc = store_ops_prune(l->o.store, cut, l->o.max_rows, OPSLOG_PRUNE_BATCH, &deleted);
    if (rc != LATCH_OK) {
        log_warn("operations log prune failed", "rc=%s", latch_strerror(rc));
        return false;
    }
    return deleted == OPSLOG_PRUNE_BATCH;
}

static void *
writer_main(void *arg)
{
    struct opslog *l = arg;
    struct store_op *v = xcalloc(OPSLOG_BATCH, sizeof *v);
    int64_t next_prune = latch_now_ms();
    bool pruning = false;

    pthread_mutex_lock(&l->mu);
    for (;;) {
        size_t k = 0;

        if (l->n == 0 && !l->stop && !pruning) {
            struct timespec ts;

            (void)clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += (long)OPSLOG_FLUSH_MS * 1000000L;
            ts.tv_sec += ts.tv_nsec / 1000000000L;
            ts.tv_nsec %= 1000000000L;
            (void)pthread_cond_timedwait(&l->cv, &l->mu, &ts);
        }
        while (k < OPSLOG_BATCH && l->n > 0) {
            v[k++] = l->ring[l->head];
            l->head = (l->head + 1) % l->o.queue_max;
            l->n--;
        }
        if (k == 0 && l->stop)
            break;
        pthread_mutex_unlock(&l->mu);
        if (k > 0)
            write_batch(l, v, k);
        if (!pruning && latch_now_ms() >= next_prune) {
            pruning = true;
            next_prune = latch_now_ms() + l->o.prune_interval_ms;
        }
        if (pruning)
            pruning = prune_step(l);
        pthread_mutex_lock(&l->mu);
        l->taken += k;
        pthread_cond_broadcast(&l->done_cv);
    }
    pthread_mutex_unlock(&l->mu);
    free(v);
    return NULL;
}

latch_rc
opslog_start(const struct opslog_opts *o)
{
    struct opslog *l;

    if (g_log != NULL || o == NULL || o->store == NULL || o->queue_max == 0)
        return LATCH_E_INVAL;
    l = xcalloc(1, sizeof *l);
    l->o = *o;
    if (l->o.prune_interval_ms <= 0)
        l->o.prune_interval_ms = 10000;
    l->ring = xcalloc(o->queue_max, sizeof *l->ring);
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    pthread_cond_init(&l->done_cv, NULL);
    if (pthread_create(&l->thr, NULL, writer_main, l) != 0) {
        free(l->ring);
        free(l);
        return LATCH_E_INTERNAL;
    }
    g_log = l;
    return LATCH_OK;
}

bool
opslog_enabled(void)
{
    return g_log != NULL;
}

void
opslog_sync(void)
{
    struct opslog *l = g_log;
    uint64_t target;

    if (l == NULL)
        return;
    pthread_mutex_lock(&l->mu);
    target = l->queued;
    pthread_cond_signal(&l->cv);
    while (l->taken < target && !l->stop)
        pthread_cond_wait(&l->done_cv, &l->mu);
    pthread_mutex_unlock(&l->mu);
}

void
opslog_stop(void)
{
    struct opslog *l = g_log;

    if (l == NULL)
        return;
    pthread_mutex_lock(&l->mu);
    l->stop = true; /* the writer drains what is queued, then leaves */
    pthread_cond_broadcast(&l->cv);
    pthread_cond_broadcast(&l->done_cv);
    pthread_mutex_unlock(&l->mu);
    pthread_join(l->thr, NULL);
    g_log = NULL;
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
    pthread_cond_destroy(&l->done_cv);
    free(l->ring);
    free(l);
}

uint64_t
opslog_dropped(void)
{
    return atomic_load(&g_dropped);
}

uint64_t
opslog_written(void)
{
    return atomic_load(&g_written);
}

size_t
opslog_depth(void)
{
    struct opslog *l = g_log;
    size_t n;

    if (l == NULL)
        return 0;
    pthread_mutex_lock(&l->mu);
    n = l->n;
    pthread_mutex_unlock(&l->mu);
    return n;
}

void
opslog_webhook_begin(struct opslog_webhook *w, int64_t env_id, const char *body)
{
    json_t *b = latch_json_col(body);
    json_t *n = json_object();
    static const char *const keys[][2] = {
        {"type", "type"},
        {"operation", "operation"},
        {"connectionId", "connection_id"},
        {"providerConfigKey", "integration"},
        {"provider", "provider"},
    };

    memset(w, 0, sizeof *w);
    if (g_log == NULL) {
        json_decref(b);
        json_decref(n);
        return;
    }
    opslog_new_id(w->id);
    w->env_id = env_id;
    w->t0_us = latch_mono_us();
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const char *v = json_string_value(json_object_get(b, keys[i][0]));

        if (v != NULL)
            json_object_set_new(n, keys[i][1], json_string(v));
    }
    w->names_json = latch_json_dump(n);
    json_decref(n);
    json_decref(b);
}

void
opslog_webhook_end(struct opslog_webhook *w, long status, const char *error, int attempt,
                   int64_t next_retry_at)
{
    json_t *n, *d;
    struct store_op op;
    char code[32];
    bool ok = error == NULL && status >= 200 && status < 300;

    if (w->names_json == NULL)
        return;
    n = latch_json_col(w->names_json);
    d = json_pack("{s:I, s:i}", "status", (json_int_t)status, "attempt", attempt);
    json_object_set(d, "type", json_object_get(n, "type"));
    json_object_set(d, "operation", json_object_get(n, "operation"));
    if (next_retry_at != 0)
        json_object_set_new(d, "next_retry_at", json_integer(next_retry_at));
    else
        json_object_set_new(d, "next_retry_at", json_null());
    memset(&op, 0, sizeof op);
    op.id = w->id;
    op.env_id = w->env_id;
    op.kind = (char *)(uintptr_t) "webhook";
    op.success = ok;
    if (!ok) {
        (void)snprintf(code, sizeof code, "%s", error != NULL ? error : "");
        if (error == NULL)
            (void)snprintf(code, sizeof code, "http_%ld", status);
        op.error = code;
    }
    op.connection_id = (char *)(uintptr_t)json_string_value(json_object_get(n, "connection_id"));
    op.integration = (char *)(uintptr_t)json_string_value(json_object_get(n, "integration"));
    op.provider = (char *)(uintptr_t)json_string_value(json_object_get(n, "provider"));
    op.duration_ms = (int64_t)((latch_mono_us() - w->t0_us) / 1000);
    op.detail_json = latch_json_dump(d);
    (void)opslog_emit(&op);
    free(op.detail_json);
    json_decref(d);
    json_decref(n);
    free(w->names_json);
    w->names_json = NULL;
}
