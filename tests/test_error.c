/*
 * test_error.c - error codes, the fixed-buffer error object, and log lines.
 */
#include "common/error.h"
#include "common/log.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

Test(error, every_code_has_a_distinct_name_and_text)
{
    const int codes[] = {SHOAL_OK,        SHOAL_ENOMEM,  SHOAL_EINVAL,   SHOAL_EIO,
                         SHOAL_EFORMAT,   SHOAL_EDIM,    SHOAL_ENOTFOUND, SHOAL_EEXIST,
                         SHOAL_ENODEV,    SHOAL_ELIMIT,  SHOAL_EPROTO,   SHOAL_ECORRUPT,
                         SHOAL_EUNSUPPORTED, SHOAL_ETIMEOUT, SHOAL_EUNAVAIL, SHOAL_EINTERNAL,
                         SHOAL_EGPU};
    size_t n = sizeof codes / sizeof codes[0];
    for (size_t i = 0; i < n; i++) {
        cr_assert_str_neq(shoal_strerror(codes[i]), "unknown error", "code %d", codes[i]);
        for (size_t j = 0; j < i; j++)
            cr_assert_str_neq(shoal_errname(codes[i]), shoal_errname(codes[j]));
    }
    cr_assert_str_eq(shoal_errname(SHOAL_EDIM), "edim");
    cr_assert_str_eq(shoal_strerror(-999), "unknown error");
    cr_assert_str_eq(shoal_strerror(7), "unknown error");
    cr_assert_str_eq(shoal_errname(-999), "eunknown");
}

Test(error, set_formats_and_returns_the_code)
{
    shoal_err_t err;
    shoal_err_clear(&err);
    cr_assert_eq(err.code, SHOAL_OK);
    cr_assert_str_eq(err.msg, "");
    int rc = shoal_err_set(&err, SHOAL_EDIM, "collection \"%s\": expected dim %d, got %d", "x",
                           128, 96);
    cr_assert_eq(rc, SHOAL_EDIM);
    cr_assert_eq(err.code, SHOAL_EDIM);
    cr_assert_str_eq(err.msg, "collection \"x\": expected dim 128, got 96");
    cr_assert_eq(shoal_err_set(NULL, SHOAL_EIO, "ignored"), SHOAL_EIO, "NULL err is allowed");
}

Test(error, long_messages_are_cut_not_overflowed)
{
    shoal_err_t err;
    char big[1000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    shoal_err_set(&err, SHOAL_EINVAL, "%s", big);
    cr_assert_eq(strlen(err.msg), SHOAL_ERR_MSG_MAX - 1);
    shoal_err_prefix(&err, "%s", big);
    cr_assert_eq(strlen(err.msg), SHOAL_ERR_MSG_MAX - 1);
    cr_assert_eq(err.code, SHOAL_EINVAL);
}

Test(error, prefix_adds_context_and_keeps_the_code)
{
    shoal_err_t err;
    shoal_err_set(&err, SHOAL_ENOTFOUND, "no such id 7");
    cr_assert_eq(shoal_err_prefix(&err, "collection \"%s\"", "docs"), SHOAL_ENOTFOUND);
    cr_assert_str_eq(err.msg, "collection \"docs\": no such id 7");
}

Test(log, parse_level)
{
    shoal_log_level_t level;
    cr_assert_eq(shoal_log_parse_level("debug", &level), SHOAL_OK);
    cr_assert_eq(level, SHOAL_LOG_DEBUG);
    cr_assert_eq(shoal_log_parse_level("WARN", &level), SHOAL_OK);
    cr_assert_eq(level, SHOAL_LOG_WARN);
    cr_assert_eq(shoal_log_parse_level("off", &level), SHOAL_OK);
    cr_assert_eq(level, SHOAL_LOG_OFF);
    cr_assert_eq(shoal_log_parse_level("loud", &level), SHOAL_EINVAL);
    cr_assert_eq(shoal_log_parse_level(NULL, &level), SHOAL_EINVAL);
}

/* Runs fn with stderr sent to a temporary file and returns what was written. */
static char *s_capture_stderr(void (*fn)(void))
{
    char path[] = "/tmp/shoal-test-log-XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    fn();
    dup2(saved, STDERR_FILENO);
    close(saved);
    off_t size = lseek(fd, 0, SEEK_END);
    char *text = calloc((size_t)size + 1, 1);
    cr_assert_eq(pread(fd, text, (size_t)size, 0), size);
    close(fd);
    unlink(path);
    return text;
}

static void s_log_some(void)
{
    shoal_log_set_ident("test-log");
    shoal_log_set_level(SHOAL_LOG_INFO);
    log_debug("hidden %d", 1);
    log_info("shown %d", 2);
    log_error("also shown");
    shoal_log_set_level(SHOAL_LOG_OFF);
    log_error("hidden when off");
}

Test(log, lines_have_time_ident_level_and_respect_the_level)
{
    char *text = s_capture_stderr(s_log_some);
    cr_assert_null(strstr(text, "hidden"), "got: %s", text);
    cr_assert_not_null(strstr(text, "INFO  shown 2\n"), "got: %s", text);
    cr_assert_not_null(strstr(text, "ERROR also shown\n"), "got: %s", text);
    cr_assert_not_null(strstr(text, "test-log["), "got: %s", text);
    /* ISO-8601 UTC timestamp at the start of the line: 2026-11-21T10:04:05.123Z */
    cr_assert_eq(text[4], '-');
    cr_assert_eq(text[10], 'T');
    cr_assert_eq(text[23], 'Z');
    free(text);
}

static void s_log_from_env(void)
{
    shoal_log_set_level(SHOAL_LOG_INFO);
    setenv("SHOAL_LOG_LEVEL", "error", 1);
    shoal_log_init_from_env();
    log_warn("suppressed by env");
    log_error("kept by env");
    setenv("SHOAL_LOG_LEVEL", "bogus", 1);
    shoal_log_init_from_env();
}

Test(log, level_from_environment)
{
    char *text = s_capture_stderr(s_log_from_env);
    cr_assert_null(strstr(text, "suppressed"), "got: %s", text);
    cr_assert_not_null(strstr(text, "kept by env"), "got: %s", text);
    cr_assert_eq(shoal_log_get_level(), SHOAL_LOG_ERROR, "an invalid value keeps the level");
    free(text);
}
