/*
 * metrics.c - the lock-free series table and the text exposition (see metrics.h).
 */
#include "core/metrics.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* Series slots (power of two); labels longer than METRICS_LABELS_MAX are cut. */
#define METRICS_SLOTS 2048
#define METRICS_LABELS_MAX 192
#define METRICS_MAX_GAUGES 16

/* Histogram bucket upper bounds, microseconds (0.5 ms .. 10 s) and their text in seconds. */
static const uint64_t bounds_us[] = {500,    1000,   2500,   5000,    10000,   25000,   50000,
                                     100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000};
static const char *const bounds_txt[] = {"0.0005", "0.001", "0.0025", "0.005", "0.01",
                                         "0.025",  "0.05",  "0.1",    "0.25",  "0.5",
                                         "1",      "2.5",   "5",      "10"};
#define NB (sizeof bounds_us / sizeof bounds_us[0])

static const struct {
    const char *name;
    const char *help;
    bool histogram;
} fam[MF__COUNT] = {
    [MF_HTTP_REQUESTS] = {"latch_http_requests_total", "HTTP requests answered, by route pattern",
                          false},
    [MF_HTTP_DURATION] = {"latch_http_request_duration_seconds",
                          "HTTP request latency (first byte in to last byte out)", true},
    [MF_UPSTREAM_REQUESTS] = {"latch_upstream_requests_total",
                              "Proxied upstream calls by provider and upstream status (0: none)",
                              false},
    [MF_UPSTREAM_DURATION] = {"latch_upstream_request_duration_seconds",
                              "Proxied upstream latency until the response headers", true},
    [MF_REFRESHES] = {"latch_token_refreshes_total", "Token requests of refreshes by outcome",
                      false},
    [MF_STORE_DURATION] = {"latch_store_operation_duration_seconds",
                           "Store operation latency (read: one statement; write: a transaction)",
                           true},
    [MF_WEBHOOK_DELIVERIES] = {"latch_webhook_deliveries_total",
                               "Webhook delivery attempts by outcome", false},
};

struct slot {
    _Atomic int state; /* 0 free, 1 being claimed, 2 ready */
    int family;
    uint64_t hash;
    char labels[METRICS_LABELS_MAX];
    _Atomic uint64_t count;
    _Atomic uint64_t sum_us;
    _Atomic uint64_t bucket[NB]; /* non-cumulative; summed when rendered */
};

static struct slot slots[METRICS_SLOTS];
static _Atomic uint64_t series_dropped;
static _Atomic int64_t open_conns;

static struct {
    const char *name, *help;
    metrics_gauge_cb fn;
    void *ud;
} gauges[METRICS_MAX_GAUGES];
static _Atomic int n_gauges;

static uint64_t
hash_of(int f, const char *s)
{
    uint64_t h = 1469598103934665603ULL ^ (uint64_t)f;

    for (; *s != '\0'; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

/* The slot of (f, labels), claimed on first use; NULL when the table is full. */
static struct slot *
find(enum metrics_family f, const char *labels)
{
    char cut[METRICS_LABELS_MAX];
    uint64_t h;

    (void)snprintf(cut, sizeof cut, "%s", labels);
    h = hash_of((int)f, cut);
    for (size_t i = 0; i < METRICS_SLOTS; i++) {
        struct slot *s = &slots[(h + i) & (METRICS_SLOTS - 1)];
        int st = atomic_load_explicit(&s->state, memory_order_acquire);

        if (st == 0) {
            int zero = 0;

            if (atomic_compare_exchange_strong(&s->state, &zero, 1)) {
                s->family = (int)f;
                s->hash = h;
                memcpy(s->labels, cut, sizeof cut);
                atomic_store_explicit(&s->state, 2, memory_order_release);
                return s;
            }
            st = atomic_load_explicit(&s->state, memory_order_acquire);
        }
        while (st == 1) /* another thread is writing this slot's key: a few stores */
            st = atomic_load_explicit(&s->state, memory_order_acquire);
        if (s->hash == h && s->family == (int)f && strcmp(s->labels, cut) == 0)
            return s;
    }
    atomic_fetch_add_explicit(&series_dropped, 1, memory_order_relaxed);
    return NULL;
}

void
metrics_add(enum metrics_family f, const char *labels, uint64_t n)
{
    struct slot *s = find(f, labels);

    if (s != NULL)
        atomic_fetch_add_explicit(&s->count, n, memory_order_relaxed);
}

void
metrics_observe_us(enum metrics_family f, const char *labels, uint64_t us)
{
    struct slot *s = find(f, labels);
    size_t b = 0;

    if (s == NULL)
        return;
    while (b < NB && us > bounds_us[b])
        b++;
    if (b < NB)
        atomic_fetch_add_explicit(&s->bucket[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->sum_us, us, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->count, 1, memory_order_relaxed);
}

const char *
metrics_labels(char *out, size_t size, ...)
{
    va_list ap;
    size_t o = 0;
    const char *name;

    out[0] = '\0';
    va_start(ap, size);
    while ((name = va_arg(ap, const char *)) != NULL) {
        const char *v = va_arg(ap, const char *);
        int n = snprintf(out + o, size - o, "%s%s=\"", o > 0 ? "," : "", name);

        if (n < 0 || (size_t)n >= size - o)
            break;
        o += (size_t)n;
        for (; v != NULL && *v != '\0' && o + 3 < size; v++) {
            if (*v == '"' || *v == '\\') {
                out[o++] = '\\';
                out[o++] = *v;
            } else if (*v == '\n') {
                out[o++] = '\\';
                out[o++] = 'n';
            } else {
                out[o++] = *v;
            }
        }
        if (o + 1 >= size)
            break;
        out[o++] = '"';
        out[o] = '\0';
    }
    va_end(ap);
    return out;
}

void
metrics_conn_add(int delta)
{
    atomic_fetch_add_explicit(&open_conns, delta, memory_order_relaxed);
}

void
metrics_gauge_fn(const char *name, const char *help, metrics_gauge_cb fn, void *ud)
{
    int i = atomic_load(&n_gauges);

    if (i >= METRICS_MAX_GAUGES)
        return;
    gauges[i].name = name;
    gauges[i].help = help;
    gauges[i].fn = fn;
    gauges[i].ud = ud;
    atomic_store(&n_gauges, i + 1);
}

static void
render_hist(struct buf *b, const char *name, const struct slot *s)
{
    uint64_t cum = 0;
    const char *sep = s->labels[0] != '\0' ? "," : "";

    for (size_t i = 0; i < NB; i++) {
        cum += atomic_load_explicit(&s->bucket[i], memory_order_relaxed);
        (void)buf_printf(b, "%s_bucket{%s%sle=\"%s\"} %llu\n", name, s->labels, sep, bounds_txt[i],
                         (unsigned long long)cum);
    }
    /* +Inf is the count itself, read last so that it is never below a bucket */
    cum = atomic_load_explicit(&s->count, memory_order_relaxed);
    (void)buf_printf(b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, s->labels, sep,
                     (unsigned long long)cum);
    (void)buf_printf(b, "%s_sum{%s} %.6f\n", name, s->labels,
                     (double)atomic_load_explicit(&s->sum_us, memory_order_relaxed) / 1e6);
    (void)buf_printf(b, "%s_count{%s} %llu\n", name, s->labels, (unsigned long long)cum);
}

void
metrics_render(struct buf *b)
{
    int ng = atomic_load(&n_gauges);

    for (int f = 0; f < MF__COUNT; f++) {
        (void)buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", fam[f].name, fam[f].help, fam[f].name,
                         fam[f].histogram ? "histogram" : "counter");
        for (size_t i = 0; i < METRICS_SLOTS; i++) {
            const struct slot *s = &slots[i];

            if (atomic_load_explicit(&s->state, memory_order_acquire) != 2 || s->family != f)
                continue;
            if (fam[f].histogram)
                render_hist(b, fam[f].name, s);
            else
                (void)buf_printf(
                    b, "%s{%s} %llu\n", fam[f].name, s->labels,
                    (unsigned long long)atomic_load_explicit(&s->count, memory_order_relaxed));
        }
    }
    (void)buf_printf(b,
                     "# HELP latch_open_connections Open HTTP client connections\n"
                     "# TYPE latch_open_connections gauge\nlatch_open_connections %lld\n",
                     (long long)atomic_load(&open_conns));
    (void)buf_printf(b,
                     "# HELP latch_metrics_series_dropped_total Updates dropped: series table "
                     "full\n# TYPE latch_metrics_series_dropped_total counter\n"
                     "latch_metrics_series_dropped_total %llu\n",
                     (unsigned long long)atomic_load(&series_dropped));
    for (int i = 0; i < ng; i++)
        (void)buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", gauges[i].name,
                         gauges[i].help, gauges[i].name,
                         strstr(gauges[i].name, "_total") != NULL ? "counter" : "gauge",
                         gauges[i].name, gauges[i].fn(gauges[i].ud));
}
