/*
 * kvkeys.h - what the catalog's and the shard store's RocksDB layouts share:
 * tagged keys and the format record's first check.
 *
 * Tagged keys. Both databases group a collection's records under
 * "<tag>/<name>\0", a one-letter tag, then the collection name and a NUL
 * (names hold no NUL, so one collection's range never runs into another's
 * whose name extends it), followed by big-endian integers so the bytewise
 * order kv.h iterates in is the numeric order. "<tag>/<name>\1" is above
 * every key of that range: the end of a range delete. What each tag means is
 * each layout's own (catalog.c's and store_private.h's headers).
 *
 * The format record. Each database has an "F" record that starts with an
 * 8-byte magic and a little-endian u32 version. kvkeys_format_get does the
 * part both open paths share: read "F", tell an empty database (the caller
 * writes its record) from a foreign one (keys but no record, or the wrong
 * magic). Which versions are read, the record's length and how a new record
 * is written (the catalog alone, the store with its sequence record) differ,
 * and stay with the callers.
 *
 * Stateless; the key builders write into the caller's buffer, which must
 * hold 3 + strlen(name) + 12 bytes.
 */
#ifndef SHOAL_KVKEYS_H
#define SHOAL_KVKEYS_H

#include "common/error.h"
#include "net/kv.h"

#include <stddef.h>
#include <stdint.h>

/* Big-endian integers, for keys (they sort numerically). */
void kvkeys_put_be32(uint8_t *p, uint32_t v);
void kvkeys_put_be64(uint8_t *p, uint64_t v);
uint32_t kvkeys_get_be32(const uint8_t *p);
uint64_t kvkeys_get_be64(const uint8_t *p);

/* "<tag>/<name>\0"; returns the length (3 + strlen(name)). */
size_t kvkeys_prefix(uint8_t *out, char tag, const char *name);
/* "<tag>/<name>\1": above every key that starts with the prefix. */
size_t kvkeys_range_end(uint8_t *out, char tag, const char *name);
/* The prefix, then v as a big-endian u32. */
size_t kvkeys_u32(uint8_t *out, char tag, const char *name, uint32_t v);
/* The prefix, then v as a big-endian u64. */
size_t kvkeys_u64(uint8_t *out, char tag, const char *name, uint64_t v);
/* The prefix, then a big-endian u32 and a big-endian u64 (a list, an id). */
size_t kvkeys_u32_u64(uint8_t *out, char tag, const char *name, uint32_t a, uint64_t b);

/* How a database's "F" record is recognised, and how messages name it. */
typedef struct {
    const char *magic;   /* the 8 bytes the record starts with (no NUL stored) */
    size_t min_bytes;    /* a shorter record counts as one without the magic (>= 8) */
    const char *what;    /* "catalog" / "data dir": messages start "<what> <dir>" */
    const char *missing; /* what a foreign database lacks, e.g. "a format record" */
    const char *owner;   /* the guess, e.g. "a coordinator catalog" */
} kvkeys_format_t;

/*
 * Reads kv's "F" record. 0 with *val (malloc'd, the caller's to free) and
 * *vlen when it has at least fmt->min_bytes and starts with fmt->magic;
 * SHOAL_ENOTFOUND when the database is empty (the caller writes its record);
 * SHOAL_EFORMAT "<what> <dir> holds a database without <missing> (not
 * <owner>?)" when it has keys but no record, or "<what> <dir>: format record
 * has no "<magic>" magic (not <owner>?)"; kv's own errors as they come.
 */
int kvkeys_format_get(kv_t *kv, const kvkeys_format_t *fmt, void **val, size_t *vlen,
                      shoal_err_t *err);

#endif
