/*
 * error.c - status codes, their names, and the fixed-buffer error object.
 */
#include "common/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Indexed by -code; the order must follow the enum in error.h. */
static const struct {
    const char *name;
    const char *text;
} s_codes[] = {
    {"ok", "success"},
    {"enomem", "out of memory"},
    {"einval", "invalid argument"},
    {"eio", "input/output error"},
    {"eformat", "bad format"},
    {"edim", "dimension mismatch"},
    {"enotfound", "not found"},
    {"eexist", "already exists"},
    {"enodev", "no GPU device"},
    {"elimit", "limit exceeded"},
    {"eproto", "protocol error"},
    {"ecorrupt", "corrupt data"},
    {"eunsupported", "not supported"},
    {"etimeout", "timed out"},
    {"eunavail", "unavailable"},
    {"einternal", "internal error"},
    {"egpu", "GPU library error"},
};

#define S_NCODES (sizeof s_codes / sizeof s_codes[0])

const char *shoal_strerror(int code)
{
    if (code > 0 || (size_t)-code >= S_NCODES)
        return "unknown error";
    return s_codes[-code].text;
}

const char *shoal_errname(int code)
{
    if (code > 0 || (size_t)-code >= S_NCODES)
        return "eunknown";
    return s_codes[-code].name;
}

void shoal_err_clear(shoal_err_t *err)
{
    if (!err)
        return;
    err->code = SHOAL_OK;
    err->msg[0] = '\0';
}

int shoal_err_set(shoal_err_t *err, int code, const char *fmt, ...)
{
    if (!err)
        return code;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return code;
}

int shoal_err_prefix(shoal_err_t *err, const char *fmt, ...)
{
    if (!err)
        return SHOAL_EINTERNAL;
    char prefix[SHOAL_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(prefix, sizeof prefix - 2, fmt, ap);
    va_end(ap);
    if (len < 0)
        return err->code;
    size_t plen = strlen(prefix);
    memcpy(prefix + plen, ": ", 3);
    plen += 2;

    /* Shift the old message right by plen (cut at the end), then put the prefix in front. */
    size_t mlen = strlen(err->msg);
    if (plen + mlen >= sizeof err->msg)
        mlen = sizeof err->msg - 1 - plen;
    memmove(err->msg + plen, err->msg, mlen);
    err->msg[plen + mlen] = '\0';
    memcpy(err->msg, prefix, plen);
    return err->code;
}
