#include "core/ratelimit.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/latch_limits.h"
#include "util/clock.h"
#include "util/str.h"
#include "util/xalloc.h"

#define RL_SHARDS 16
#define RL_KEY_MAX 64

struct bucket {
    char key[RL_KEY_MAX];
    double tokens;
    int64_t last_ms;
    bool used;
};

struct shard {
    pthread_mutex_t mu;
    struct bucket *slots; /* open addressing */
    size_t n;
    size_t cap;
};

struct ratelimit {
    double rate;
    double burst;
    struct shard shards[RL_SHARDS];
};

static uint64_t
hash_key(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */

    for (; *s != '\0'; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

struct ratelimit *
ratelimit_new(double rate, double burst)
{
    struct ratelimit *rl = xcalloc(1, sizeof *rl);

    rl->rate = rate;
    rl->burst = burst < 1 ? 1 : burst;
    for (int i = 0; i < RL_SHARDS; i++) {
        pthread_mutex_init(&rl->shards[i].mu, NULL);
        rl->shards[i].cap = LATCH_RATELIMIT_MAX_KEYS / RL_SHARDS;
        rl->shards[i].slots = xcalloc(rl->shards[i].cap, sizeof(struct bucket));
    }
    return rl;
}

void
ratelimit_free(struct ratelimit *rl)
{
    if (rl == NULL)
        return;
    for (int i = 0; i < RL_SHARDS; i++) {
        pthread_mutex_destroy(&rl->shards[i].mu);
        free(rl->shards[i].slots);
    }
    free(rl);
}

/* Drops buckets that are full again (idle): they carry no state worth keeping. */
static void
sweep(struct ratelimit *rl, struct shard *sh, int64_t now)
{
    struct bucket *old = sh->slots;
    size_t cap = sh->cap;

    sh->slots = xcalloc(cap, sizeof(struct bucket));
    sh->n = 0;
    for (size_t i = 0; i < cap; i++) {
        double t;

        if (!old[i].used)
            continue;
        t = old[i].tokens + (double)(now - old[i].last_ms) / 1000.0 * rl->rate;
        if (t >= rl->burst || sh->n >= cap / 2)
            continue;
        for (size_t j = hash_key(old[i].key) % cap;; j = (j + 1) % cap) {
            if (!sh->slots[j].used) {
                sh->slots[j] = old[i];
                sh->n++;
                break;
            }
        }
    }
    free(old);
}

void
ratelimit_take(struct ratelimit *rl, const char *key, struct ratelimit_verdict *v)
{
    uint64_t h = hash_key(key);
    struct shard *sh = &rl->shards[h % RL_SHARDS];
    int64_t now = latch_mono_ms();
    struct bucket *b = NULL;
    double missing;

    memset(v, 0, sizeof *v);
    v->allowed = true;
    v->limit = (unsigned)rl->burst;
    if (rl->rate <= 0) {
        v->remaining = v->limit;
        return;
    }
    pthread_mutex_lock(&sh->mu);
    if (sh->n * 4 >= sh->cap * 3)
        sweep(rl, sh, now);
    for (size_t i = (h / RL_SHARDS) % sh->cap;; i = (i + 1) % sh->cap) {
        struct bucket *s = &sh->slots[i];

        if (!s->used) {
            s->used = true;
            latch_strlcpy(s->key, key, sizeof s->key);
            s->tokens = rl->burst;
            s->last_ms = now;
            sh->n++;
            b = s;
            break;
        }
        if (strncmp(s->key, key, sizeof s->key - 1) == 0) {
            b = s;
            break;
        }
    }
    b->tokens += (double)(now - b->last_ms) / 1000.0 * rl->rate;
    if (b->tokens > rl->burst)
        b->tokens = rl->burst;
    b->last_ms = now;
    if (b->tokens >= 1.0) {
        b->tokens -= 1.0;
    } else {
        v->allowed = false;
        v->retry_after_s = (unsigned)ceil((1.0 - b->tokens) / rl->rate);
        if (v->retry_after_s == 0)
            v->retry_after_s = 1;
    }
    v->remaining = (unsigned)b->tokens;
    missing = rl->burst - b->tokens;
    v->reset_s = (unsigned)ceil(missing / rl->rate);
    pthread_mutex_unlock(&sh->mu);
}
