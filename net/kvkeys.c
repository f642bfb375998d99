/*
 * kvkeys.c - tagged keys and the format record's first check (see kvkeys.h).
 */
#include "net/kvkeys.h"

#include <stdlib.h>
#include <string.h>

void kvkeys_put_be32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (24 - 8 * i));
}

void kvkeys_put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (56 - 8 * i));
}

uint32_t kvkeys_get_be32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v = (v << 8) | p[i];
    return v;
}

uint64_t kvkeys_get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

size_t kvkeys_prefix(uint8_t *out, char tag, const char *name)
{
    size_t len = strlen(name);
    out[0] = (uint8_t)tag;
    out[1] = '/';
    memcpy(out + 2, name, len);
    out[2 + len] = 0;
    return 3 + len;
}

size_t kvkeys_range_end(uint8_t *out, char tag, const char *name)
{
    size_t len = kvkeys_prefix(out, tag, name);
    out[len - 1] = 1;
    return len;
}

size_t kvkeys_u32(uint8_t *out, char tag, const char *name, uint32_t v)
{
    size_t len = kvkeys_prefix(out, tag, name);
    kvkeys_put_be32(out + len, v);
    return len + 4;
}

size_t kvkeys_u64(uint8_t *out, char tag, const char *name, uint64_t v)
{
    size_t len = kvkeys_prefix(out, tag, name);
    kvkeys_put_be64(out + len, v);
    return len + 8;
}

size_t kvkeys_u32_u64(uint8_t *out, char tag, const char *name, uint32_t a, uint64_t b)
{
    size_t len = kvkeys_u32(out, tag, name, a);
    kvkeys_put_be64(out + len, b);
    return len + 8;
}

int kvkeys_format_get(kv_t *kv, const kvkeys_format_t *fmt, void **val, size_t *vlen,
                      shoal_err_t *err)
{
    *val = NULL;
    *vlen = 0;
    int rc = kv_get(kv, "F", 1, val, vlen, err);
    if (rc == SHOAL_ENOTFOUND) {
        /* A database with keys but no format record was not written by us. */
        int empty = 0;
        rc = kv_is_empty(kv, &empty, err);
        if (rc)
            return rc;
        if (!empty)
            return shoal_err_set(err, SHOAL_EFORMAT, "%s %s holds a database without %s (not %s?)",
                                 fmt->what, kv_dir(kv), fmt->missing, fmt->owner);
        return SHOAL_ENOTFOUND;
    }
    if (rc)
        return rc;
    if (*vlen < fmt->min_bytes || memcmp(*val, fmt->magic, 8) != 0) {
        free(*val);
        *val = NULL;
        return shoal_err_set(err, SHOAL_EFORMAT,
                             "%s %s: format record has no \"%s\" magic (not %s?)", fmt->what,
                             kv_dir(kv), fmt->magic, fmt->owner);
    }
    return 0;
}
