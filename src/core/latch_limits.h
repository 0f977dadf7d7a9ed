/*
 * latch_limits.h - the only home of latch's hard bounds (SQLite's sqliteLimit.h idea).
 *
 * Each bound can be overridden at build time with -D. Every size an outsider controls is
 * checked against one of these before memory is allocated for it.
 */
#ifndef LATCH_LATCH_LIMITS_H
#define LATCH_LATCH_LIMITS_H

/* Request body accepted by JSON API routes. Nango allows 75 MB; credentials are tiny. */
#ifndef LATCH_MAX_JSON_BODY
#define LATCH_MAX_JSON_BODY (1024 * 1024)
#endif

/* Bytes MHD may use per connection for the request line and headers (413/431 past it). */
#ifndef LATCH_MAX_HEADER_BYTES
#define LATCH_MAX_HEADER_BYTES (32 * 1024)
#endif

/* Request body forwarded by the proxy (streamed, so this only bounds abuse). */
#ifndef LATCH_MAX_PROXY_BODY
#define LATCH_MAX_PROXY_BODY (256LL * 1024 * 1024)
#endif

/* JSON nesting accepted in request bodies. */
#ifndef LATCH_MAX_JSON_DEPTH
#define LATCH_MAX_JSON_DEPTH 32
#endif

/* Token endpoint response body. */
#ifndef LATCH_MAX_TOKEN_RESPONSE
#define LATCH_MAX_TOKEN_RESPONSE (64 * 1024)
#endif

/* Webhook receiver response we bother to read. */
#ifndef LATCH_MAX_WEBHOOK_RESPONSE
#define LATCH_MAX_WEBHOOK_RESPONSE (16 * 1024)
#endif

/* Strings in the API. */
#define LATCH_MAX_ID_LEN 255        /* connection_id, end_user.id, unique_key */
#define LATCH_MAX_TOKEN_LEN 4096    /* access token (Nango: 1..4096) */
#define LATCH_MAX_CLIENT_ID_LEN 255 /* Nango: 1..255 */
#define LATCH_MAX_CLIENT_SECRET_LEN 2048
#define LATCH_MAX_URL_LEN 2048
#define LATCH_MAX_TAGS 10
#define LATCH_MAX_TAG_KEY_LEN 64
#define LATCH_MAX_TAG_VALUE_LEN 255
#define LATCH_MAX_METADATA_BYTES (64 * 1024)
#define LATCH_MAX_QUERY_PARAMS 64
#define LATCH_MAX_LIST_LIMIT 10000

/* Provider catalogue (operator-supplied file; bounded anyway). */
#define LATCH_MAX_CATALOG_BYTES (16 * 1024 * 1024)
#define LATCH_MAX_CATALOG_NODES 2000000
#define LATCH_MAX_PROVIDERS 5000

/* ${...} template interpreter. */
#define LATCH_MAX_TMPL_OUTPUT 4096
#define LATCH_MAX_TMPL_DEPTH 8

/* Connect sessions. */
#define LATCH_CONNECT_SESSION_TTL_S (30 * 60)
#define LATCH_MAX_CONNECT_ATTEMPTS 20

/* Outbound HTTP. */
#define LATCH_OUTBOUND_CONNECT_TIMEOUT_MS 5000
#define LATCH_OUTBOUND_TOKEN_TIMEOUT_MS 15000
#define LATCH_OUTBOUND_MAX_JOBS 10000

/* Rate limiting: distinct keys (environments, client IPs) tracked at once. */
#define LATCH_RATELIMIT_MAX_KEYS 65536

/* Proxy. */
#define LATCH_TIMER_MAX_PENDING 100000
/* threads and queue for blocking follow-up work off the curl thread (worker.h) */
#define LATCH_WORKER_THREADS 2
#define LATCH_WORKER_MAX_JOBS 10000
/* last_fetched_at updates written in one transaction */
#define LATCH_STORE_TOUCH_BATCH 1000
/* per direction, per proxied request */
#define LATCH_PROXY_RING_BYTES (64 * 1024)
/* request bodies up to this are buffered, so that a retry can replay them */
#define LATCH_PROXY_BUFFERED_BODY (1024 * 1024)
#define LATCH_PROXY_MAX_RETRIES 10
#define LATCH_PROXY_MAX_RETRY_WAIT_MS 30000
/* 401 bodies inspected for not_authenticated */
#define LATCH_PROXY_ERROR_CAPTURE (64 * 1024)
#define LATCH_PROXY_MAX_HEADERS 64
/* a streaming response may last this long */
#define LATCH_PROXY_MAX_STREAM_MS (6L * 3600 * 1000)

#endif
