/*
 * kv.c - the RocksDB wrapper (see kv.h).
 *
 * Every RocksDB call that can fail hands back an errptr string; s_take_error
 * converts it on the spot into a shoal_err_t that says what was being done,
 * picks a code from RocksDB's status prefix ("Corruption:", "IO error:", ...)
 * and frees the string. Nothing else here is clever.
 */
#include "net/kv.h"

#include <rocksdb/c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct kv {
    rocksdb_t *db;                              /* the open database */
    rocksdb_options_t *options;                 /* options it was opened with */
    rocksdb_block_based_table_options_t *table; /* block cache + bloom filter */
    rocksdb_cache_t *cache;                     /* the LRU block cache */
    rocksdb_writeoptions_t *write_async;        /* WAL on, no fsync */
    rocksdb_writeoptions_t *write_sync;         /* WAL on, fsync before returning */
    rocksdb_readoptions_t *read;                /* point reads */
    char *dir;                                  /* directory, for messages */
    int read_only;                              /* opened by kv_open_read_only */
};

struct kv_batch {
    rocksdb_writebatch_t *wb; /* the RocksDB batch */
};

struct kv_iter {
    rocksdb_iterator_t *it;         /* the RocksDB iterator */
    rocksdb_readoptions_t *read;    /* its options (own: they hold the upper bound) */
    const rocksdb_snapshot_t *snap; /* snapshot the scan reads */
    rocksdb_t *db;                  /* to release the snapshot */
    unsigned char *prefix;          /* the prefix, copied */
    size_t plen;                    /* its length */
    unsigned char *upper;           /* exclusive upper bound (prefix + 1), or NULL */
    size_t ulen;                    /* its length */
};

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */
/* ------------------------------------------------------------------------ */

/* The shoal code for a RocksDB status message, from its standard prefix. */
static int s_code_of(const char *msg)
{
    if (strncmp(msg, "Corruption", 10) == 0)
        return SHOAL_ECORRUPT;
    if (strncmp(msg, "Invalid argument", 16) == 0) {
        /* "Invalid argument: <dir>/CURRENT: does not exist (create_if_missing is false)" */
        if (strstr(msg, "does not exist"))
            return SHOAL_ENOTFOUND;
        return SHOAL_EINVAL;
    }
    if (strncmp(msg, "Not implemented", 15) == 0)
        return SHOAL_EUNSUPPORTED;
    if (strncmp(msg, "NotFound", 8) == 0)
        return SHOAL_ENOTFOUND;
    return SHOAL_EIO;
}

/* Converts and frees *errptr; returns the code (0 when there was no error). */
static int s_take_error(char **errptr, shoal_err_t *err, const char *what)
{
    if (!*errptr)
        return 0;
    int code = s_code_of(*errptr);
    shoal_err_set(err, code, "rocksdb %s: %s", what, *errptr);
    rocksdb_free(*errptr);
    *errptr = NULL;
    return code;
}

/* ------------------------------------------------------------------------ */
/* Open / close                                                             */
/* ------------------------------------------------------------------------ */

/* Options with everything but compression set; compression is tried after. */
static int s_make_options(kv_t *kv, int create_if_missing, int compression)
{
    kv->options = rocksdb_options_create();
    kv->table = rocksdb_block_based_options_create();
    kv->cache = rocksdb_cache_create_lru(KV_BLOCK_CACHE_BYTES);
    if (!kv->options || !kv->table || !kv->cache)
        return -1;
    rocksdb_block_based_options_set_block_cache(kv->table, kv->cache);
    rocksdb_block_based_options_set_filter_policy(kv->table, rocksdb_filterpolicy_create_bloom(10));
    rocksdb_options_set_block_based_table_factory(kv->options, kv->table);
    rocksdb_options_set_create_if_missing(kv->options, create_if_missing ? 1 : 0);
    rocksdb_options_set_paranoid_checks(kv->options, 1);
    rocksdb_options_set_max_background_jobs(kv->options, 2);
    rocksdb_options_set_keep_log_file_num(kv->options, 4);
    rocksdb_options_set_compression(kv->options, compression);
    return 0;
}

static void s_free_options(kv_t *kv)
{
    if (kv->options)
        rocksdb_options_destroy(kv->options);
    if (kv->table)
        rocksdb_block_based_options_destroy(kv->table);
    if (kv->cache)
        rocksdb_cache_destroy(kv->cache);
    kv->options = NULL;
    kv->table = NULL;
    kv->cache = NULL;
}

/* kv_open and kv_open_read_only: the same options, another RocksDB entry point. */
static kv_t *s_open(const char *dir, int create_if_missing, int read_only, shoal_err_t *err)
{
    if (!dir || !*dir) {
        shoal_err_set(err, SHOAL_EINVAL, "kv_open: no directory given");
        return NULL;
    }
    kv_t *kv = calloc(1, sizeof *kv);
    if (!kv || !(kv->dir = strdup(dir))) {
        shoal_err_set(err, SHOAL_ENOMEM, "kv_open %s: out of memory", dir);
        goto fail;
    }
    /* LZ4 first; a library built without it refuses the option at open
     * ("Compression type LZ4 is not linked with the binary"), then none. */
    const int kinds[2] = {rocksdb_lz4_compression, rocksdb_no_compression};
    for (int i = 0; i < 2 && !kv->db; i++) {
        if (s_make_options(kv, create_if_missing, kinds[i])) {
            shoal_err_set(err, SHOAL_ENOMEM, "kv_open %s: out of memory", dir);
            goto fail;
        }
        char *errptr = NULL;
        /* Read-only: the WAL is replayed into memory and nothing is written
         * (no flush, no new MANIFEST), so it opens on a full disk. */
        kv->db = read_only ? rocksdb_open_for_read_only(kv->options, dir, 0, &errptr)
                           : rocksdb_open(kv->options, dir, &errptr);
        if (errptr && i == 0 && strstr(errptr, "not linked")) {
            rocksdb_free(errptr);
            s_free_options(kv);
            continue;
        }
        if (s_take_error(&errptr, err, read_only ? "open read-only" : "open") != 0) {
            shoal_err_prefix(err, "%s", dir);
            goto fail;
        }
    }
    kv->write_async = rocksdb_writeoptions_create();
    kv->write_sync = rocksdb_writeoptions_create();
    kv->read = rocksdb_readoptions_create();
    if (!kv->db || !kv->write_async || !kv->write_sync || !kv->read) {
        shoal_err_set(err, SHOAL_ENOMEM, "kv_open %s: out of memory", dir);
        goto fail;
    }
    rocksdb_writeoptions_set_sync(kv->write_async, 0);
    rocksdb_writeoptions_disable_WAL(kv->write_async, 0);
    rocksdb_writeoptions_set_sync(kv->write_sync, 1);
    rocksdb_writeoptions_disable_WAL(kv->write_sync, 0);
    rocksdb_readoptions_set_verify_checksums(kv->read, 1);
    kv->read_only = read_only;
    return kv;

fail:
    kv_close(&kv);
    return NULL;
}

kv_t *kv_open(const char *dir, int create_if_missing, shoal_err_t *err)
{
    return s_open(dir, create_if_missing, 0, err);
}

kv_t *kv_open_read_only(const char *dir, shoal_err_t *err)
{
    return s_open(dir, 0, 1, err);
}

int kv_is_read_only(const kv_t *kv)
{
    return kv->read_only;
}

void kv_close(kv_t **kv_p)
{
    if (!kv_p || !*kv_p)
        return;
    kv_t *kv = *kv_p;
    if (kv->db)
        rocksdb_close(kv->db);
    if (kv->write_async)
        rocksdb_writeoptions_destroy(kv->write_async);
    if (kv->write_sync)
        rocksdb_writeoptions_destroy(kv->write_sync);
    if (kv->read)
        rocksdb_readoptions_destroy(kv->read);
    s_free_options(kv);
    free(kv->dir);
    free(kv);
    *kv_p = NULL;
}

const char *kv_dir(const kv_t *kv)
{
    return kv->dir;
}

/* ------------------------------------------------------------------------ */
/* Batches and writes                                                       */
/* ------------------------------------------------------------------------ */

kv_batch_t *kv_batch_new(void)
{
    kv_batch_t *batch = calloc(1, sizeof *batch);
    if (!batch)
        return NULL;
    batch->wb = rocksdb_writebatch_create();
    if (!batch->wb) {
        free(batch);
        return NULL;
    }
    return batch;
}

void kv_batch_destroy(kv_batch_t **batch_p)
{
    if (!batch_p || !*batch_p)
        return;
    rocksdb_writebatch_destroy((*batch_p)->wb);
    free(*batch_p);
    *batch_p = NULL;
}

void kv_batch_put(kv_batch_t *batch, const void *key, size_t klen, const void *val, size_t vlen)
{
    rocksdb_writebatch_put(batch->wb, key, klen, val, vlen);
}

void kv_batch_delete(kv_batch_t *batch, const void *key, size_t klen)
{
    rocksdb_writebatch_delete(batch->wb, key, klen);
}

void kv_batch_delete_range(kv_batch_t *batch, const void *begin, size_t blen, const void *end,
                           size_t elen)
{
    rocksdb_writebatch_delete_range(batch->wb, begin, blen, end, elen);
}

size_t kv_batch_count(const kv_batch_t *batch)
{
    return (size_t)rocksdb_writebatch_count(batch->wb);
}

size_t kv_batch_bytes(const kv_batch_t *batch)
{
    size_t size = 0;
    rocksdb_writebatch_data(batch->wb, &size);
    return size;
}

void kv_batch_clear(kv_batch_t *batch)
{
    rocksdb_writebatch_clear(batch->wb);
}

int kv_write(kv_t *kv, kv_batch_t *batch, int sync, shoal_err_t *err)
{
    char *errptr = NULL;
    rocksdb_write(kv->db, sync ? kv->write_sync : kv->write_async, batch->wb, &errptr);
    if (errptr) {
        char what[64];
        snprintf(what, sizeof what, "write (%zu ops%s)", kv_batch_count(batch),
                 sync ? ", sync" : "");
        return s_take_error(&errptr, err, what);
    }
    return 0;
}

int kv_put(kv_t *kv, const void *key, size_t klen, const void *val, size_t vlen, int sync,
           shoal_err_t *err)
{
    char *errptr = NULL;
    rocksdb_put(kv->db, sync ? kv->write_sync : kv->write_async, key, klen, val, vlen, &errptr);
    return s_take_error(&errptr, err, "put");
}

int kv_get(kv_t *kv, const void *key, size_t klen, void **val, size_t *vlen, shoal_err_t *err)
{
    *val = NULL;
    *vlen = 0;
    char *errptr = NULL;
    rocksdb_pinnableslice_t *slice = rocksdb_get_pinned(kv->db, kv->read, key, klen, &errptr);
    if (errptr)
        return s_take_error(&errptr, err, "get");
    if (!slice)
        return SHOAL_ENOTFOUND;
    size_t len = 0;
    const char *data = rocksdb_pinnableslice_value(slice, &len);
    void *copy = malloc(len ? len : 1);
    if (!copy) {
        rocksdb_pinnableslice_destroy(slice);
        return shoal_err_set(err, SHOAL_ENOMEM, "rocksdb get: out of memory for %zu bytes", len);
    }
    if (len)
        memcpy(copy, data, len);
    rocksdb_pinnableslice_destroy(slice);
    *val = copy;
    *vlen = len;
    return 0;
}

int kv_is_empty(kv_t *kv, int *empty, shoal_err_t *err)
{
    kv_iter_t *it = kv_iter_new(kv, NULL, 0, err);
    if (!it)
        return err ? err->code : SHOAL_ENOMEM;
    *empty = !kv_iter_valid(it);
    int rc = kv_iter_status(it, err);
    kv_iter_destroy(&it);
    return rc;
}

int kv_flush(kv_t *kv, shoal_err_t *err)
{
    rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
    if (!fo)
        return shoal_err_set(err, SHOAL_ENOMEM, "rocksdb flush: out of memory");
    rocksdb_flushoptions_set_wait(fo, 1);
    char *errptr = NULL;
    rocksdb_flush(kv->db, fo, &errptr);
    rocksdb_flushoptions_destroy(fo);
    return s_take_error(&errptr, err, "flush");
}

int kv_checkpoint(kv_t *kv, const char *dir, shoal_err_t *err)
{
    if (kv->read_only)
        return shoal_err_set(err, SHOAL_EUNSUPPORTED,
                             "rocksdb checkpoint of %s: the database is open read-only", kv->dir);
    struct stat st;
    if (stat(dir, &st) == 0)
        return shoal_err_set(err, SHOAL_EEXIST, "rocksdb checkpoint of %s: %s exists", kv->dir,
                             dir);
    char what[64 + 2 * 256];
    snprintf(what, sizeof what, "checkpoint of %.256s into %.256s", kv->dir, dir);
    char *errptr = NULL;
    rocksdb_checkpoint_t *cp = rocksdb_checkpoint_object_create(kv->db, &errptr);
    if (errptr || !cp) {
        if (!errptr)
            return shoal_err_set(err, SHOAL_ENOMEM, "rocksdb %s: out of memory", what);
        return s_take_error(&errptr, err, what);
    }
    /* log_size_for_flush 0: always flush first, so the copy needs no WAL replay. */
    rocksdb_checkpoint_create(cp, dir, 0, &errptr);
    rocksdb_checkpoint_object_destroy(cp);
    return s_take_error(&errptr, err, what);
}

/* ------------------------------------------------------------------------ */
/* Prefix iteration                                                         */
/* ------------------------------------------------------------------------ */

kv_iter_t *kv_iter_new(kv_t *kv, const void *prefix, size_t plen, shoal_err_t *err)
{
    kv_iter_t *iter = calloc(1, sizeof *iter);
    if (!iter)
        goto oom;
    iter->db = kv->db;
    iter->plen = plen;
    iter->prefix = malloc(plen ? plen : 1);
    iter->read = rocksdb_readoptions_create();
    if (!iter->prefix || !iter->read)
        goto oom;
    if (plen)
        memcpy(iter->prefix, prefix, plen);
    /* The smallest key greater than every key with the prefix: drop trailing
     * 0xff bytes, then increment the last byte. An all-0xff prefix has none;
     * kv_iter_valid's prefix check ends the scan then. */
    size_t ulen = plen;
    while (ulen > 0 && iter->prefix[ulen - 1] == 0xff)
        ulen--;
    if (ulen > 0) {
        iter->upper = malloc(ulen);
        if (!iter->upper)
            goto oom;
        memcpy(iter->upper, iter->prefix, ulen);
        iter->upper[ulen - 1]++;
        iter->ulen = ulen;
        rocksdb_readoptions_set_iterate_upper_bound(iter->read, (const char *)iter->upper, ulen);
    }
    rocksdb_readoptions_set_fill_cache(iter->read, 0);
    rocksdb_readoptions_set_verify_checksums(iter->read, 1);
    iter->snap = rocksdb_create_snapshot(kv->db);
    rocksdb_readoptions_set_snapshot(iter->read, iter->snap);
    iter->it = rocksdb_create_iterator(kv->db, iter->read);
    if (!iter->it)
        goto oom;
    rocksdb_iter_seek(iter->it, (const char *)iter->prefix, plen);
    return iter;

oom:
    shoal_err_set(err, SHOAL_ENOMEM, "rocksdb iterator: out of memory");
    kv_iter_destroy(&iter);
    return NULL;
}

void kv_iter_destroy(kv_iter_t **iter_p)
{
    if (!iter_p || !*iter_p)
        return;
    kv_iter_t *iter = *iter_p;
    if (iter->it)
        rocksdb_iter_destroy(iter->it);
    if (iter->snap)
        rocksdb_release_snapshot(iter->db, iter->snap);
    if (iter->read)
        rocksdb_readoptions_destroy(iter->read);
    free(iter->prefix);
    free(iter->upper);
    free(iter);
    *iter_p = NULL;
}

void kv_iter_seek(kv_iter_t *iter, const void *key, size_t klen)
{
    rocksdb_iter_seek(iter->it, key, klen);
}

int kv_iter_valid(const kv_iter_t *iter)
{
    if (!rocksdb_iter_valid(iter->it))
        return 0;
    size_t klen = 0;
    const char *key = rocksdb_iter_key(iter->it, &klen);
    return klen >= iter->plen && memcmp(key, iter->prefix, iter->plen) == 0;
}

void kv_iter_next(kv_iter_t *iter)
{
    rocksdb_iter_next(iter->it);
}

const void *kv_iter_key(const kv_iter_t *iter, size_t *klen)
{
    return rocksdb_iter_key(iter->it, klen);
}

const void *kv_iter_value(const kv_iter_t *iter, size_t *vlen)
{
    return rocksdb_iter_value(iter->it, vlen);
}

int kv_iter_status(const kv_iter_t *iter, shoal_err_t *err)
{
    char *errptr = NULL;
    rocksdb_iter_get_error(iter->it, &errptr);
    return s_take_error(&errptr, err, "iterate");
}
