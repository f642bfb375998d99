/*
 * kv.h - a thin wrapper over RocksDB's C API: open a database directory, write
 * atomic batches, point reads, and iteration over a key prefix.
 *
 * Why a wrapper: RocksDB reports errors as malloc'd strings through an errptr
 * argument; every call here converts that string at the call site into a
 * shoal_err_t naming what was being done ("rocksdb write (3 ops): IO error: ..."),
 * frees it, and returns a shoal code. Callers never see RocksDB types.
 *
 * Options kv_open sets: create_if_missing (when asked), paranoid checks (a
 * corrupt file is an error at open, not a silent loss), a 64 MiB LRU block
 * cache with bloom filters, LZ4 compression when the library was built with it
 * (falls back to none otherwise), two background jobs. The write-ahead log is
 * always on; kv_write's sync flag decides whether the WAL is fsync'd before the
 * call returns (without it a process crash loses nothing, a power loss may lose
 * the last writes).
 *
 * Keys and values are byte strings; the order is bytewise (memcmp), so
 * big-endian integers in keys sort numerically.
 *
 * Thread-safety: a kv_t may be used from several threads at once (RocksDB is
 * thread-safe for reads and writes). A kv_batch_t and a kv_iter_t belong to
 * one thread.
 *
 * Ownership: kv_open returns a handle freed by kv_close(&kv); batches and
 * iterators are freed by their _destroy and must be destroyed before the kv
 * they were made for is closed. kv_get's value is malloc'd and the caller's to
 * free(). Iterator key/value views are borrowed: valid until the next
 * seek/next/destroy.
 */
#ifndef SHOAL_KV_H
#define SHOAL_KV_H

#include "common/error.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KV_BLOCK_CACHE_BYTES (64u << 20)

typedef struct kv kv_t;
typedef struct kv_batch kv_batch_t;
typedef struct kv_iter kv_iter_t;

/*
 * Opens (creating the directory's database when create_if_missing) the
 * database in dir. NULL on error: SHOAL_EIO (e.g. another process holds its
 * lock), SHOAL_ECORRUPT (RocksDB found corruption), SHOAL_ENOTFOUND (absent
 * and not created), SHOAL_ENOMEM.
 */
kv_t *kv_open(const char *dir, int create_if_missing, shoal_err_t *err);

/*
 * Opens an existing database read-only: the WAL is replayed into memory and
 * nothing is written, so this works where kv_open cannot (a full disk).
 * Reads and iteration work as usual; every write fails (SHOAL_EUNSUPPORTED).
 * NULL on error, with kv_open's codes.
 */
kv_t *kv_open_read_only(const char *dir, shoal_err_t *err);

/* Non-zero when kv was opened by kv_open_read_only. */
int kv_is_read_only(const kv_t *kv);

/* Closes and frees; NULL-safe; sets *kv_p to NULL. */
void kv_close(kv_t **kv_p);

/* The directory it was opened on (borrowed, valid until kv_close). */
const char *kv_dir(const kv_t *kv);

/* ------------------------------------------------------------------------ */
/* Write batches: applied atomically by kv_write                            */
/* ------------------------------------------------------------------------ */

/* An empty batch; NULL on OOM. */
kv_batch_t *kv_batch_new(void);
void kv_batch_destroy(kv_batch_t **batch_p);

/* Queue operations (the bytes are copied into the batch). */
void kv_batch_put(kv_batch_t *batch, const void *key, size_t klen, const void *val, size_t vlen);
void kv_batch_delete(kv_batch_t *batch, const void *key, size_t klen);
/* Deletes every key in [begin, end). */
void kv_batch_delete_range(kv_batch_t *batch, const void *begin, size_t blen, const void *end,
                           size_t elen);

/* Operations queued so far. */
size_t kv_batch_count(const kv_batch_t *batch);
/* Bytes of the batch's representation (keys + values + overhead). */
size_t kv_batch_bytes(const kv_batch_t *batch);
/* Empties the batch for reuse. */
void kv_batch_clear(kv_batch_t *batch);

/*
 * Applies batch atomically (all or nothing, also across a crash). With sync
 * the WAL is fsync'd before returning. The batch is left as it was.
 */
int kv_write(kv_t *kv, kv_batch_t *batch, int sync, shoal_err_t *err);

/* One put, as a batch of one. */
int kv_put(kv_t *kv, const void *key, size_t klen, const void *val, size_t vlen, int sync,
           shoal_err_t *err);

/*
 * Reads key: *val gets a malloc'd copy (the caller frees; a zero-length value
 * still gets a 1-byte allocation) and *vlen its length. SHOAL_ENOTFOUND (err
 * left untouched, since absence is an answer, not a failure) when absent.
 */
int kv_get(kv_t *kv, const void *key, size_t klen, void **val, size_t *vlen, shoal_err_t *err);

/* *empty = 1 when the database holds no key at all (a format check's first question). */
int kv_is_empty(kv_t *kv, int *empty, shoal_err_t *err);

/* Flushes the memtable to SST files and waits (before a backup, in tests). */
int kv_flush(kv_t *kv, shoal_err_t *err);

/*
 * Writes a consistent copy of the database into dir, which must not exist
 * (its parent must): RocksDB's checkpoint, which flushes the memtable, then
 * hard-links the table files (copies them when dir is on another
 * filesystem) and copies the small ones (MANIFEST, OPTIONS, CURRENT). The
 * copy holds every write kv_write returned from before the call, and opens
 * with kv_open as a database of its own; taking it blocks no reader, and
 * writes made meanwhile may or may not be in it (callers that need a cut
 * hold their writers). A dir inside the database's own directory is
 * tolerated: RocksDB only ever deletes the files it named itself there.
 * SHOAL_EEXIST when dir exists, SHOAL_EUNSUPPORTED on a read-only kv,
 * SHOAL_EIO (a full disk, a missing parent) otherwise; RocksDB removes its
 * partial copy on failure.
 */
int kv_checkpoint(kv_t *kv, const char *dir, shoal_err_t *err);

/* ------------------------------------------------------------------------ */
/* Iteration over the keys that start with a prefix, in key order           */
/* ------------------------------------------------------------------------ */

/*
 * An iterator over keys starting with prefix (plen may be 0: every key),
 * positioned at the first one. Bulk scans do not fill the block cache. NULL
 * on OOM. The view is a consistent snapshot taken at creation.
 */
kv_iter_t *kv_iter_new(kv_t *kv, const void *prefix, size_t plen, shoal_err_t *err);
void kv_iter_destroy(kv_iter_t **iter_p);

/* Moves to the first key >= key (keys outside the prefix end the iteration). */
void kv_iter_seek(kv_iter_t *iter, const void *key, size_t klen);
/* Non-zero while positioned on a key with the prefix. */
int kv_iter_valid(const kv_iter_t *iter);
void kv_iter_next(kv_iter_t *iter);
/* Borrowed views of the current entry (valid until the next move). */
const void *kv_iter_key(const kv_iter_t *iter, size_t *klen);
const void *kv_iter_value(const kv_iter_t *iter, size_t *vlen);
/*
 * 0, or the error that ended the iteration early (I/O, corruption). Call once
 * kv_iter_valid returns 0 to tell "end" from "failed".
 */
int kv_iter_status(const kv_iter_t *iter, shoal_err_t *err);

#ifdef __cplusplus
}
#endif

#endif
