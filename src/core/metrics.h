/*
 * metrics.h - process-wide counters and histograms for Prometheus (/metrics, text format 0.0.4).
 *
 * A series is a family plus its label text (route="/proxy/:any",method="GET",status="200"),
 * found in a fixed open-addressing table: the first use of a label set claims a slot with one
 * compare-and-swap, every later update is relaxed atomic adds on that slot. No lock anywhere on
 * the recording path, so any thread (request, curl, worker, store) records without waiting; the
 * table is bounded (label values come from fixed sets: route patterns, methods, statuses,
 * catalogue providers), and a full table counts the updates it had to drop
 * (latch_metrics_series_dropped_total). Atomics rather than per-thread shards: with a handful of
 * cores the cache-line traffic of one relaxed add per event is far below a request's cost.
 *
 * Gauges that are read rather than counted (queue depths, ages) are callbacks run at scrape time.
 * Threads: every function from any thread; metrics_gauge_fn before the scrape server starts.
 */
#ifndef LATCH_METRICS_H
#define LATCH_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "util/buf.h"

enum metrics_family {
    MF_HTTP_REQUESTS,      /* counter {route,method,status} */
    MF_HTTP_DURATION,      /* histogram {route,method,status} */
    MF_UPSTREAM_REQUESTS,  /* counter {provider,status} */
    MF_UPSTREAM_DURATION,  /* histogram {provider} */
    MF_REFRESHES,          /* counter {outcome,why} */
    MF_STORE_DURATION,     /* histogram {op} */
    MF_WEBHOOK_DELIVERIES, /* counter {outcome} */
    MF__COUNT
};

/* Adds n to a counter series. labels: preformatted, escaped label text (metrics_labels). */
void metrics_add(enum metrics_family f, const char *labels, uint64_t n);
/* Records one observation of us microseconds in a histogram series. */
void metrics_observe_us(enum metrics_family f, const char *labels, uint64_t us);
/*
 * Formats label pairs (NULL-terminated name, value, name, value, ...) into out, escaping values
 * as the text format wants; truncates long values.
 */
const char *metrics_labels(char *out, size_t size, ...);

/* Open HTTP connections (the server adds +1/-1). */
void metrics_conn_add(int delta);

/* A gauge read at scrape time. */
typedef double (*metrics_gauge_cb)(void *ud);
void metrics_gauge_fn(const char *name, const char *help, metrics_gauge_cb fn, void *ud);

/* The whole exposition, appended to b. */
void metrics_render(struct buf *b);

#endif
