/*
 * log.h - one logfmt line per event, to stderr.
 *
 *   ts=2026-11-29T00:00:00.123Z lvl=info req=7f3a... msg="token refreshed" conn=...
 *
 * The level is checked before any argument is evaluated. Never pass a secret to these
 * functions: latch logs ids, codes and sizes, never credentials or tokens.
 * Thread-safe: each line is written with one write(2).
 */
#ifndef LATCH_LOG_H
#define LATCH_LOG_H

enum log_level { LOG_LVL_DEBUG = 0, LOG_LVL_INFO, LOG_LVL_WARN, LOG_LVL_ERROR };

extern enum log_level log_min_level;

/* Parses "debug|info|warn|error"; returns -1 if unknown. */
int log_level_parse(const char *s);

/*
 * fmt is the logfmt tail after msg, e.g. log_info("started", "port=%d", port).
 * msg is quoted by the logger; values in fmt must already be logfmt-safe (use log_quote).
 */
void log_write(enum log_level lvl, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_debug(msg, ...)                                                                        \
    do {                                                                                           \
        if (log_min_level <= LOG_LVL_DEBUG)                                                        \
            log_write(LOG_LVL_DEBUG, msg, __VA_ARGS__);                                            \
    } while (0)
#define log_info(msg, ...)                                                                         \
    do {                                                                                           \
        if (log_min_level <= LOG_LVL_INFO)                                                         \
            log_write(LOG_LVL_INFO, msg, __VA_ARGS__);                                             \
    } while (0)
#define log_warn(msg, ...)                                                                         \
    do {                                                                                           \
        if (log_min_level <= LOG_LVL_WARN)                                                         \
            log_write(LOG_LVL_WARN, msg, __VA_ARGS__);                                             \
    } while (0)
#define log_error(msg, ...) log_write(LOG_LVL_ERROR, msg, __VA_ARGS__)

/*
 * Makes s safe as a logfmt value: wraps in quotes, escapes quotes/backslashes, replaces control
 * bytes, truncates to out_size. Returns out.
 */
const char *log_quote(char *out, unsigned long out_size, const char *s);

#endif
