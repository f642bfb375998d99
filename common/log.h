/*
 * log.h - levelled, timestamped log lines on stderr.
 *
 * One line per call, written with a single write(2) so lines from several
 * threads or processes never interleave mid-line:
 *     2026-11-21T10:04:05.123Z shoal-shard[4242] INFO  listening on tcp://...
 * The level comes from shoal_log_set_level() (a --log-level flag) or, when no
 * flag was given, from the SHOAL_LOG_LEVEL environment variable; default info.
 *
 * Thread-safety: all functions may be called from any thread; the level and
 * ident are meant to be set once at start-up before threads exist.
 */
#ifndef SHOAL_LOG_H
#define SHOAL_LOG_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    SHOAL_LOG_DEBUG = 0,
    SHOAL_LOG_INFO = 1,
    SHOAL_LOG_WARN = 2,
    SHOAL_LOG_ERROR = 3,
    SHOAL_LOG_OFF = 4,
} shoal_log_level_t;

/* Sets the program name shown on every line (borrowed: must outlive logging). */
void shoal_log_set_ident(const char *ident);

/* Sets the lowest level that is printed. */
void shoal_log_set_level(shoal_log_level_t level);

shoal_log_level_t shoal_log_get_level(void);

/*
 * Parses "debug", "info", "warn", "error" or "off" (case-insensitive).
 * Returns 0 and stores the level, or SHOAL_EINVAL for anything else.
 */
int shoal_log_parse_level(const char *text, shoal_log_level_t *level);

/*
 * Applies SHOAL_LOG_LEVEL from the environment when it is set and valid; an
 * invalid value is reported with one warning line and ignored.
 */
void shoal_log_init_from_env(void);

void shoal_log(shoal_log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * Lower-case on purpose: <syslog.h> (pulled in by czmq) already defines
 * LOG_DEBUG and LOG_INFO as priority numbers.
 */
#define log_debug(...) shoal_log(SHOAL_LOG_DEBUG, __VA_ARGS__)
#define log_info(...)  shoal_log(SHOAL_LOG_INFO, __VA_ARGS__)
#define log_warn(...)  shoal_log(SHOAL_LOG_WARN, __VA_ARGS__)
#define log_error(...) shoal_log(SHOAL_LOG_ERROR, __VA_ARGS__)

#ifdef __cplusplus
}
#endif

#endif
