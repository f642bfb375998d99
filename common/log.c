/*
 * log.c - see log.h. Formats a whole line in a stack buffer, then writes it.
 */
#include "common/log.h"
#include "common/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static const char *s_ident = "shoal";
static shoal_log_level_t s_level = SHOAL_LOG_INFO;

static const char *const s_level_names[] = {"debug", "info", "warn", "error", "off"};
static const char *const s_level_tags[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};

void shoal_log_set_ident(const char *ident)
{
    s_ident = ident ? ident : "shoal";
}

void shoal_log_set_level(shoal_log_level_t level)
{
    if (level >= SHOAL_LOG_DEBUG && level <= SHOAL_LOG_OFF)
        s_level = level;
}

shoal_log_level_t shoal_log_get_level(void)
{
    return s_level;
}

int shoal_log_parse_level(const char *text, shoal_log_level_t *level)
{
    if (!text)
        return SHOAL_EINVAL;
    for (int i = SHOAL_LOG_DEBUG; i <= SHOAL_LOG_OFF; i++) {
        if (strcasecmp(text, s_level_names[i]) == 0) {
            *level = (shoal_log_level_t)i;
            return SHOAL_OK;
        }
    }
    return SHOAL_EINVAL;
}

void shoal_log_init_from_env(void)
{
    const char *text = getenv("SHOAL_LOG_LEVEL");
    if (!text || !*text)
        return;
    shoal_log_level_t level;
    if (shoal_log_parse_level(text, &level) == SHOAL_OK)
        s_level = level;
    else
        log_warn("SHOAL_LOG_LEVEL=\"%s\" is not one of debug|info|warn|error|off; ignored", text);
}

void shoal_log(shoal_log_level_t level, const char *fmt, ...)
{
    if (level < s_level || level >= SHOAL_LOG_OFF)
        return;

    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct tm tm;
    gmtime_r(&now.tv_sec, &tm);

    char line[2048];
    int len = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s[%ld] %s ",
                       tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                       tm.tm_sec, now.tv_nsec / 1000000L, s_ident, (long)getpid(),
                       s_level_tags[level]);
    if (len < 0)
        return;
    if ((size_t)len < sizeof line) {
        va_list ap;
        va_start(ap, fmt);
        int more = vsnprintf(line + len, sizeof line - (size_t)len, fmt, ap);
        va_end(ap);
        if (more > 0)
            len += more;
    }
    /* A cut line still ends with a newline. */
    if ((size_t)len >= sizeof line - 1)
        len = (int)sizeof line - 2;
    line[len++] = '\n';

    ssize_t off = 0;
    while (off < len) {
        ssize_t put = write(STDERR_FILENO, line + off, (size_t)(len - off));
        if (put <= 0)
            break;
        off += put;
    }
}
