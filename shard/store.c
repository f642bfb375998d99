/*
 * store.c - a shard's collections: opening and closing the store, the
 * collection table, the write path (create, drop, insert, delete), reads
 * (get, dim, stats) and the background checkpointer. Search lives in
 * store_search.c, checkpoints and recovery in store_persist.c;
 * store_private.h describes the key layout and the locks.
 *
 * The write path, for every insert and delete batch:
 *   1. validate everything (nothing is written for a bad batch);
 *   2. one RocksDB write batch: the vectors (or their deletion), one op-log
 *      entry listing the ids, and the new sequence number; fsync'd when
 *      opts.sync. From here the write survives kill -9;
 *   3. apply it to the exact engine (under the collection's engine lock)
 *      and to the HNSW graph (which locks itself; searches keep running);
 *   4. return: a search that starts now sees the write.
 * If step 3 fails (out of memory), the write is durable but not searchable
 * until the next open; the error says so.
 *
 * Every RocksDB write goes through shard_kv_write, which first checks the
 * data dir's free space against the reserve (opts.min_free_bytes). Why a
 * reserve rather than handling "No space left on device": RocksDB asserts
 * (aborting the process) on some of its out-of-space paths, and a database
 * that hit one stops taking writes until it is reopened. Keeping RocksDB from
 * ever filling the disk avoids both; the reserve also leaves room for its
 * memtable flushes and compactions, which write without asking us.
 *
 * Checkpoints. The graph is serialised under write_mu, which every writer
 * of a graph takes, so hnsw_save_shared only needs the graph's read lock:
 * searches go on during a checkpoint (a few hundred ms per million 128-d
 * vectors in memory, plus the RocksDB writes: seconds at a million), and
 * writes wait for write_mu. The background thread checkpoints a collection once it has
 * checkpoint_every changed vectors, or checkpoint_secs after its last
 * checkpoint when it has any change; close checkpoints whatever changed.
 */
#define _GNU_SOURCE /* pthread_rwlockattr_setkind_np: writers must not starve */

#include "shard/store_private.h"

#include "common/log.h"
#include "common/parfor.h"
#include "common/timing.h"
#include "common/topk.h"
#include "common/vec_check.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */
/* ------------------------------------------------------------------------ */

static void s_rwlock_init_writer_first(pthread_rwlock_t *lock)
{
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(lock, &attr);
    pthread_rwlockattr_destroy(&attr);
}

/* Names: 1..WIRE_NAME_MAX of [A-Za-z0-9_.-], as the wire protocol allows. */
static int s_check_name(const char *name, shoal_err_t *err)
{
    if (!name || !*name)
        return shoal_err_set(err, SHOAL_EINVAL, "collection name is empty");
    size_t len = strlen(name);
    if (len > WIRE_NAME_MAX)
        return shoal_err_set(err, SHOAL_EINVAL, "collection name has %zu characters, at most %d",
                             len, WIRE_NAME_MAX);
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-'))
            return shoal_err_set(err, SHOAL_EINVAL,
                                 "collection name \"%s\": character %zu is not one of "
                                 "[A-Za-z0-9_.-]",
                                 name, i);
    }
    return 0;
}

shard_coll_t *shard_coll_find(shard_store_t *store, const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < store->ncolls; i++)
        if (strcmp(store->colls[i]->name, name) == 0)
            return store->colls[i];
    return NULL;
}

/* Looks a collection up, with the not-found message every entry point uses. */
static shard_coll_t *s_find_or_fail(shard_store_t *store, const char *name, shoal_err_t *err)
{
    if (s_check_name(name, err))
        return NULL;
    shard_coll_t *coll = shard_coll_find(store, name);
    if (!coll)
        shoal_err_set(err, SHOAL_ENOTFOUND, "collection \"%s\" not found", name);
    return coll;
}

shard_coll_t *shard_coll_find_or_fail(shard_store_t *store, const char *name, shoal_err_t *err)
{
    return s_find_or_fail(store, name, err);
}

/* ------------------------------------------------------------------------ */
/* Keys                                                                     */
/* ------------------------------------------------------------------------ */

size_t shard_key_coll(uint8_t *out, const char *name)
{
    size_t len = strlen(name);
    out[0] = 'C';
    out[1] = '/';
    memcpy(out + 2, name, len);
    return 2 + len;
}

void shard_batch_put_seq(kv_batch_t *batch, uint64_t seq)
{
    shard_seq_rec_t rec = {.magic = SHARD_SEQ_MAGIC, .version = SHARD_RECORD_VERSION, .seq = seq};
    kv_batch_put(batch, "S", 1, &rec, sizeof rec);
}

/* ------------------------------------------------------------------------ */
/* Collections in memory                                                    */
/* ------------------------------------------------------------------------ */

static shard_coll_t *s_coll_new(const char *name)
{
    shard_coll_t *coll = calloc(1, sizeof *coll);
    if (!coll)
        return NULL;
    snprintf(coll->name, sizeof coll->name, "%s", name);
    s_rwlock_init_writer_first(&coll->engine_lock);
    pthread_mutex_init(&coll->lists_mu, NULL);
    coll->checkpoint_time = timing_now();
    return coll;
}

static void s_coll_destroy(shard_coll_t **coll_p)
{
    if (!*coll_p)
        return;
    shard_coll_t *coll = *coll_p;
    hnsw_destroy(&coll->hnsw);
    knn_engine_destroy(&coll->engine);
    quant_sq8_destroy(&coll->sq8);
    pthread_rwlock_destroy(&coll->engine_lock);
    shard_lists_fini(coll);
    pthread_mutex_destroy(&coll->lists_mu);
    free(coll);
    *coll_p = NULL;
}

/* A new empty graph for coll's parameters (and quantizer). */
static hnsw_t *s_graph_new(const shard_coll_t *coll, shoal_err_t *err)
{
    /* Same seed for a name every time: a rebuild draws the same levels. */
    uint64_t seed = 0x73686f616cULL;
    for (const char *p = coll->name; *p; p++)
        seed = seed * 1099511628211ULL ^ (uint8_t)*p;
    hnsw_params_t hp = {.dim = coll->dim,
                        .metric = coll->metric,
                        .M = coll->M,
                        .ef_construction = coll->ef_construction,
                        .seed = seed,
                        .storage = coll->storage,
                        .sq8 = coll->sq8};
    return hnsw_new(&hp, err);
}

int shard_coll_make_indexes(shard_store_t *store, shard_coll_t *coll, shoal_err_t *err)
{
    coll->hnsw = s_graph_new(coll, err);
    if (!coll->hnsw)
        return err ? err->code : SHOAL_ENOMEM;
    coll->on_gpu = 0;
    if (coll->storage != QUANT_F32)
        return 0; /* one copy in RAM: the graph's codes serve exact search too */
    knn_params_t kp = {.dim = coll->dim,
                       .metric = coll->metric,
                       .device = store->device,
                       .threads = store->opts.threads};
    coll->engine = knn_engine_new(&kp, err);
    if (!coll->engine) {
        hnsw_destroy(&coll->hnsw);
        return err ? err->code : SHOAL_ENOMEM;
    }
    knn_info_t info;
    knn_engine_info(coll->engine, &info);
    coll->on_gpu = info.on_gpu;
    return 0;
}

/* Deletes a collection's vector, log, checkpoint, quarantine and membership key ranges. */
static void s_batch_clear_ranges(kv_batch_t *batch, const char *name)
{
    static const char tags[5] = {SHARD_TAG_VEC, 'L', 'K', SHARD_TAG_QUARANTINE, SHARD_TAG_MEMBER};
    uint8_t key[SHARD_KEY_MAX], end[SHARD_KEY_MAX];
    for (int t = 0; t < 5; t++) {
        size_t klen = kvkeys_prefix(key, tags[t], name);
        size_t elen = kvkeys_range_end(end, tags[t], name);
        kv_batch_delete_range(batch, key, klen, end, elen);
    }
}

/* Appends coll to the table (caller holds write_mu; takes colls_lock). */
static int s_table_add(shard_store_t *store, shard_coll_t *coll)
{
    pthread_rwlock_wrlock(&store->colls_lock);
    int rc = 0;
    if (store->ncolls == store->colls_cap) {
        size_t cap = store->colls_cap ? 2 * store->colls_cap : 8;
        shard_coll_t **grown = realloc(store->colls, cap * sizeof *grown);
        if (!grown)
            rc = SHOAL_ENOMEM;
        else {
            store->colls = grown;
            store->colls_cap = cap;
        }
    }
    if (rc == 0)
        store->colls[store->ncolls++] = coll;
    pthread_rwlock_unlock(&store->colls_lock);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Disk space and the write gate                                            */
/* ------------------------------------------------------------------------ */

static int s_free_bytes(const char *dir, uint64_t *free_bytes)
{
    struct statvfs sv;
    if (statvfs(dir, &sv) != 0)
        return -1;
    *free_bytes = (uint64_t)sv.f_bavail * (uint64_t)sv.f_frsize;
    return 0;
}

/*
 * Bytes of RocksDB write-ahead log files ("*.log") in dir: what RocksDB
 * still has to write once more, as a table file, when it flushes the
 * memtable (or recovers at open) before it can delete them.
 */
static uint64_t s_wal_bytes(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    uint64_t total = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        struct stat st;
        if (len > 4 && strcmp(e->d_name + len - 4, ".log") == 0 &&
            fstatat(dirfd(d), e->d_name, &st, 0) == 0)
            total += (uint64_t)st.st_size;
    }
    closedir(d);
    return total;
}

/*
 * shard_space_check without the count and the log (the open asks it too).
 * The need is the write itself plus the log not yet flushed: both become a
 * table file before the log's space comes back.
 */
static int s_space_left(shard_store_t *store, uint64_t bytes, shoal_err_t *err)
{
    uint64_t free_bytes = 0;
    if (s_free_bytes(store->data_dir, &free_bytes) != 0)
        return shoal_err_set(err, SHOAL_EIO, "data dir %s: cannot read its free space: %s",
                             store->data_dir, strerror(errno));
    uint64_t reserve = store->opts.min_free_bytes;
    uint64_t wal = s_wal_bytes(store->data_dir);
    uint64_t need = bytes + wal;
    if (free_bytes >= reserve && free_bytes - reserve >= need)
        return 0;
    /* The reason first: a long data dir path may be cut off at the end. */
    return shoal_err_set(err, SHOAL_EIO,
                         "writes refused until space is freed: %llu bytes free, %llu to write "
                         "(%llu of it log to flush), under the reserve of %llu "
                         "(--min-free-bytes) on data dir %s",
                         (unsigned long long)free_bytes, (unsigned long long)need,
                         (unsigned long long)wal, (unsigned long long)reserve, store->data_dir);
}

int shard_space_check(shard_store_t *store, uint64_t bytes, shoal_err_t *err)
{
    shoal_err_t why;
    shoal_err_clear(&why);
    int rc = s_space_left(store, bytes, &why);
    if (rc) {
        atomic_fetch_add(&store->writes_refused, 1);
        if (!atomic_exchange(&store->space_low, 1))
            log_warn("%s", why.msg);
        return shoal_err_set(err, rc, "%s", why.msg);
    }
    if (atomic_exchange(&store->space_low, 0))
        log_info("data dir %s: free space is above the reserve again; writes resume",
                 store->data_dir);
    return 0;
}

/* Closes the database and opens it for writing; when that fails, read-only
 * again, so reads of a later open still work (caller holds write_mu). */
static int s_reopen(shard_store_t *store, shoal_err_t *err)
{
    pthread_rwlock_wrlock(&store->kv_lock);
    kv_close(&store->kv);
    store->kv = kv_open(store->data_dir, 0, err);
    if (!store->kv) {
        shoal_err_t ro_err;
        shoal_err_clear(&ro_err);
        store->kv = kv_open_read_only(store->data_dir, &ro_err);
        atomic_store(&store->read_only, store->kv != NULL);
        store->reopen = store->kv == NULL;
        pthread_rwlock_unlock(&store->kv_lock);
        shoal_err_prefix(err, "data dir %s: reopening the database for writing", store->data_dir);
        log_error("%s", err ? err->msg : "reopen failed");
        return err ? err->code : SHOAL_EIO;
    }
    pthread_rwlock_unlock(&store->kv_lock);
    atomic_store(&store->read_only, 0);
    store->reopen = 0;
    log_info("data dir %s: database reopened for writing", store->data_dir);
    return 0;
}

int shard_kv_write(shard_store_t *store, kv_batch_t *batch, int sync, shoal_err_t *err)
{
    int rc = shard_space_check(store, kv_batch_bytes(batch), err);
    if (rc)
        return rc;
    if ((atomic_load(&store->read_only) || store->reopen || !store->kv) &&
        (rc = s_reopen(store, err)) != 0)
        return rc;
    rc = kv_write(store->kv, batch, sync, err);
    /* After some I/O errors (a failed WAL write, a full disk) RocksDB
     * refuses every write until it is reopened; the next write does that. */
    if (rc == SHOAL_EIO)
        store->reopen = 1;
    return rc;
}

void shard_store_disk_stats(shard_store_t *store, shard_disk_stats_t *out)
{
    memset(out, 0, sizeof *out);
    if (!store)
        return;
    if (s_free_bytes(store->data_dir, &out->free_bytes) != 0)
        out->free_bytes = 0;
    out->min_free_bytes = store->opts.min_free_bytes;
    out->writes_refused = atomic_load(&store->writes_refused);
    out->read_only = atomic_load(&store->read_only);
}

/* ------------------------------------------------------------------------ */
/* Background checkpointer                                                  */
/* ------------------------------------------------------------------------ */

static int s_due(const shard_store_t *store, const shard_coll_t *coll, double now)
{
    return coll->dirty && (coll->changes >= store->opts.checkpoint_every ||
                           now - coll->checkpoint_time >= store->opts.checkpoint_secs);
}

/* Checkpoints every due collection, one per hold of write_mu so writers get
 * in between. */
static void s_checkpoint_due(shard_store_t *store)
{
    for (;;) {
        pthread_mutex_lock(&store->write_mu);
        shard_coll_t *due = NULL;
        double now = timing_now();
        for (size_t i = 0; i < store->ncolls && !due; i++)
            if (s_due(store, store->colls[i], now))
                due = store->colls[i];
        if (due) {
            shoal_err_t err;
            shoal_err_clear(&err);
            if (shard_checkpoint_coll(store, due, &err) != 0) {
                log_warn("background checkpoint of \"%s\" failed: %s", due->name, err.msg);
                /* Try again a full period later, not in a tight loop. */
                due->checkpoint_time = now;
                due->changes = 0;
            }
        }
        pthread_mutex_unlock(&store->write_mu);
        if (!due)
            return;
    }
}

static void *s_ckpt_main(void *arg)
{
    shard_store_t *store = arg;
    double tick = store->opts.checkpoint_secs < 1.0 ? store->opts.checkpoint_secs : 1.0;
    pthread_mutex_lock(&store->ckpt_mu);
    while (!store->ckpt_stop) {
        if (!store->ckpt_wake) {
            struct timespec until;
            clock_gettime(CLOCK_MONOTONIC, &until);
            double t = (double)until.tv_sec + (double)until.tv_nsec * 1e-9 + tick;
            until.tv_sec = (time_t)t;
            until.tv_nsec = (long)((t - (double)until.tv_sec) * 1e9);
            pthread_cond_timedwait(&store->ckpt_cond, &store->ckpt_mu, &until);
        }
        if (store->ckpt_stop)
            break;
        store->ckpt_wake = 0;
        pthread_mutex_unlock(&store->ckpt_mu);
        s_checkpoint_due(store);
        pthread_mutex_lock(&store->ckpt_mu);
    }
    pthread_mutex_unlock(&store->ckpt_mu);
    return NULL;
}

static void s_ckpt_poke(shard_store_t *store)
{
    pthread_mutex_lock(&store->ckpt_mu);
    store->ckpt_wake = 1;
    pthread_cond_signal(&store->ckpt_cond);
    pthread_mutex_unlock(&store->ckpt_mu);
}

static void s_ckpt_stop(shard_store_t *store)
{
    if (!store->ckpt_running)
        return;
    pthread_mutex_lock(&store->ckpt_mu);
    store->ckpt_stop = 1;
    pthread_cond_signal(&store->ckpt_cond);
    pthread_mutex_unlock(&store->ckpt_mu);
    pthread_join(store->ckpt_thread, NULL);
    store->ckpt_running = 0;
}

/* ------------------------------------------------------------------------ */
/* Open                                                                     */
/* ------------------------------------------------------------------------ */

/* Checks the format record, or writes one into an empty directory. */
static int s_check_format(shard_store_t *store, shoal_err_t *err)
{
    static const kvkeys_format_t fmt = {.magic = SHARD_FORMAT_MAGIC,
                                        .min_bytes = 12,
                                        .what = "data dir",
                                        .missing = "a shoal format record",
                                        .owner = "a shard's data dir"};
    void *val = NULL;
    size_t vlen = 0;
    int rc = kvkeys_format_get(store->kv, &fmt, &val, &vlen, err);
    if (rc == SHOAL_ENOTFOUND) {
        shard_format_rec_t rec = {.version = SHARD_FORMAT_VERSION,
                                  .created_unix = (uint64_t)time(NULL)};
        memcpy(rec.magic, SHARD_FORMAT_MAGIC, sizeof rec.magic);
        kv_batch_t *batch = kv_batch_new();
        if (!batch)
            return shoal_err_set(err, SHOAL_ENOMEM, "out of memory");
        kv_batch_put(batch, "F", 1, &rec, sizeof rec);
        shard_batch_put_seq(batch, 0);
        rc = shard_kv_write(store, batch, 1, err);
        kv_batch_destroy(&batch);
        if (rc == 0)
            log_info("data dir %s: new shard store (format version %u)", store->data_dir,
                     SHARD_FORMAT_VERSION);
        store->format_found = SHARD_FORMAT_VERSION;
        return rc;
    }
    if (rc)
        return rc;
    shard_format_rec_t rec;
    memset(&rec, 0, sizeof rec);
    memcpy(&rec, val, vlen < sizeof rec ? vlen : sizeof rec);
    free(val);
    if (rec.version != SHARD_FORMAT_VERSION && rec.version != SHARD_FORMAT_VERSION_V1)
        return shoal_err_set(err, SHOAL_EUNSUPPORTED,
                             "data dir %s has format version %u; this build reads format "
                             "version %u (upgraded at open) or %u only",
                             store->data_dir, rec.version, SHARD_FORMAT_VERSION_V1,
                             SHARD_FORMAT_VERSION);
    store->format_found = rec.version;
    if (vlen != sizeof rec)
        return shoal_err_set(err, SHOAL_ECORRUPT,
                             "data dir %s: format record has %zu bytes, expected %zu",
                             store->data_dir, vlen, sizeof rec);
    return 0;
}

/*
 * After a version-1 dir's collections are loaded (and their rows upgraded,
 * store_persist.c): "F" says version 2, keeping its created time. Left at 1
 * when an upgrade write failed or the database is read-only: the next open
 * upgrades what is left.
 */
static int s_upgrade_format(shard_store_t *store, shoal_err_t *err)
{
    if (store->format_found == SHARD_FORMAT_VERSION || store->upgrade_failed ||
        atomic_load(&store->read_only))
        return 0;
    void *val = NULL;
    size_t vlen = 0;
    int rc = kv_get(store->kv, "F", 1, &val, &vlen, err);
    if (rc)
        return rc;
    shard_format_rec_t rec;
    memset(&rec, 0, sizeof rec);
    memcpy(&rec, val, vlen < sizeof rec ? vlen : sizeof rec);
    free(val);
    rec.version = SHARD_FORMAT_VERSION;
    kv_batch_t *batch = kv_batch_new();
    if (!batch)
        return shoal_err_set(err, SHOAL_ENOMEM, "out of memory");
    kv_batch_put(batch, "F", 1, &rec, sizeof rec);
    shoal_err_t why;
    shoal_err_clear(&why);
    rc = shard_kv_write(store, batch, 1, &why);
    kv_batch_destroy(&batch);
    if (rc) {
        /* Not fatal: the rows are upgraded; the next open writes "F" again. */
        log_warn("data dir %s: format record left at version %u: %s", store->data_dir,
                 SHARD_FORMAT_VERSION_V1, why.msg);
        return 0;
    }
    log_info("data dir %s: upgraded from format version %u to %u (rows carry their IVF list)",
             store->data_dir, SHARD_FORMAT_VERSION_V1, SHARD_FORMAT_VERSION);
    store->format_found = SHARD_FORMAT_VERSION;
    return 0;
}

static int s_read_seq(shard_store_t *store, shoal_err_t *err)
{
    void *val = NULL;
    size_t vlen = 0;
    int rc = kv_get(store->kv, "S", 1, &val, &vlen, err);
    if (rc == SHOAL_ENOTFOUND)
        return shoal_err_set(err, SHOAL_ECORRUPT, "data dir %s: sequence record \"S\" is missing",
                             store->data_dir);
    if (rc)
        return rc;
    shard_seq_rec_t rec;
    int ok = vlen == sizeof rec;
    if (ok) {
        memcpy(&rec, val, sizeof rec);
        ok = rec.magic == SHARD_SEQ_MAGIC && rec.version == SHARD_RECORD_VERSION;
    }
    free(val);
    if (!ok)
        return shoal_err_set(err, SHOAL_ECORRUPT,
                             "data dir %s: sequence record is malformed (%zu bytes)",
                             store->data_dir, vlen);
    atomic_store(&store->seq, rec.seq);
    return 0;
}

/* Loads every "C/<name>" collection. */
static int s_load_collections(shard_store_t *store, shoal_err_t *err)
{
    kv_iter_t *it = kv_iter_new(store->kv, "C/", 2, err);
    if (!it)
        return err ? err->code : SHOAL_ENOMEM;
    int rc = 0;
    for (; rc == 0 && kv_iter_valid(it); kv_iter_next(it)) {
        size_t klen = 0, vlen = 0;
        const char *key = kv_iter_key(it, &klen);
        const void *val = kv_iter_value(it, &vlen);
        char name[WIRE_NAME_MAX + 1];
        if (klen - 2 > WIRE_NAME_MAX) {
            rc =
                shoal_err_set(err, SHOAL_ECORRUPT, "collection key of %zu bytes is too long", klen);
            break;
        }
        memcpy(name, key + 2, klen - 2);
        name[klen - 2] = 0;
        if ((rc = s_check_name(name, err)) != 0) {
            rc = shoal_err_prefix(err, "stored collection key");
            break;
        }
        shard_coll_t *coll = s_coll_new(name);
        if (!coll) {
            rc = shoal_err_set(err, SHOAL_ENOMEM, "out of memory");
            break;
        }
        double t0 = timing_now();
        rc = shard_coll_decode(coll, val, vlen, err);
        if (rc == 0)
            rc = shard_coll_load(store, coll, err);
        if (rc == 0)
            rc = s_table_add(store, coll);
        if (rc) {
            shoal_err_prefix(err, "loading collection \"%s\"", name);
            s_coll_destroy(&coll);
            break;
        }
        log_info("collection \"%s\": %zu vectors, graph %s (%zu writes replayed) in %.2f s",
                 coll->name, hnsw_count(coll->hnsw),
                 coll->loaded_from_checkpoint ? "loaded from checkpoint" : "rebuilt",
                 coll->replayed, timing_now() - t0);
    }
    if (rc == 0)
        rc = kv_iter_status(it, err);
    kv_iter_destroy(&it);
    return rc;
}

/* Finds out where exact engines run, with a probe engine of one dimension,
 * so that a bad device string fails at open rather than at the first create. */
static int s_probe_devices(shard_store_t *store, shoal_err_t *err)
{
    knn_params_t kp = {.dim = 1, .metric = SHOAL_METRIC_L2, .device = store->device, .threads = 1};
    knn_engine_t *probe = knn_engine_new(&kp, err);
    if (!probe)
        return shoal_err_prefix(err, "exact engine on device \"%s\"", store->device);
    knn_info_t info;
    knn_engine_info(probe, &info);
    store->ndevices = info.on_gpu ? info.ndevices : 0;
    for (int i = 0; i < store->ndevices && i < KNN_DEVICES_MAX; i++)
        store->devices[i] = info.devices[i];
    knn_engine_destroy(&probe);
    return 0;
}

/* mkdir -p: RocksDB creates the data dir itself but not its parents. */
static int s_mkdirs(const char *dir, shoal_err_t *err)
{
    char path[4096];
    size_t len = strlen(dir);
    if (len >= sizeof path)
        return shoal_err_set(err, SHOAL_EINVAL, "data dir path has %zu characters, at most %zu",
                             len, sizeof path - 1);
    memcpy(path, dir, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (path[i] != '/' && path[i] != 0)
            continue;
        char saved = path[i];
        path[i] = 0;
        if (mkdir(path, 0755) != 0 && errno != EEXIST)
            return shoal_err_set(err, SHOAL_EIO, "data dir %s: cannot create %s: %s", dir, path,
                                 strerror(errno));
        path[i] = saved;
    }
    return 0;
}

/*
 * Opens RocksDB: for writing, or read-only when the data dir is under the
 * reserve once the log to recover is counted, since a writable open writes
 * (a new MANIFEST, the recovered log flushed to a table) and RocksDB may
 * abort when that runs out of space. The first write after space is back
 * reopens it (shard_kv_write).
 */
static int s_open_kv(shard_store_t *store, shoal_err_t *err)
{
    shoal_err_t why;
    shoal_err_clear(&why);
    if (s_space_left(store, 0, &why) == 0) {
        store->kv = kv_open(store->data_dir, 1, err);
        return store->kv ? 0 : (err ? err->code : SHOAL_EIO);
    }
    store->kv = kv_open_read_only(store->data_dir, err);
    if (!store->kv)
        return shoal_err_prefix(err, "%s; opening read-only instead", why.msg);
    atomic_store(&store->read_only, 1);
    atomic_store(&store->space_low, 1);
    log_warn("%s; opened the database read-only (searches, gets and stats are served)", why.msg);
    return 0;
}

static void s_free(shard_store_t *store)
{
    for (size_t i = 0; i < store->ncolls; i++)
        s_coll_destroy(&store->colls[i]);
    free(store->colls);
    kv_close(&store->kv);
    pthread_mutex_destroy(&store->write_mu);
    pthread_rwlock_destroy(&store->colls_lock);
    pthread_rwlock_destroy(&store->kv_lock);
    pthread_mutex_destroy(&store->ckpt_mu);
    pthread_cond_destroy(&store->ckpt_cond);
    free(store->data_dir);
    free(store->device);
    free(store);
}

/* Stage 1 of open: the store's locks and the checkpointer's condition (on the monotonic clock). */
static void s_store_init_locks(shard_store_t *store)
{
    pthread_mutex_init(&store->write_mu, NULL);
    s_rwlock_init_writer_first(&store->colls_lock);
    s_rwlock_init_writer_first(&store->kv_lock);
    pthread_mutex_init(&store->ckpt_mu, NULL);
    pthread_condattr_t cattr;
    pthread_condattr_init(&cattr);
    pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC);
    pthread_cond_init(&store->ckpt_cond, &cattr);
    pthread_condattr_destroy(&cattr);
}

/* Stage 2 of open: fill the options' zero fields with defaults, then check the HNSW ranges. */
static int s_store_opts_check(shard_store_opts_t *o, shoal_err_t *err)
{
    if (o->threads == 0)
        o->threads = parfor_cores();
    if (o->checkpoint_every == 0)
        o->checkpoint_every = SHARD_CHECKPOINT_EVERY_DEFAULT;
    if (!(o->checkpoint_secs > 0))
        o->checkpoint_secs = SHARD_CHECKPOINT_SECS_DEFAULT;
    if (o->exact_min_batch == 0)
        o->exact_min_batch = SHARD_EXACT_MIN_BATCH_DEFAULT;
    if (o->hnsw_M == 0)
        o->hnsw_M = HNSW_M_DEFAULT;
    if (o->hnsw_ef_construction == 0)
        o->hnsw_ef_construction = HNSW_EF_CONSTRUCTION_DEFAULT;
    if (o->hnsw_ef == 0)
        o->hnsw_ef = HNSW_EF_DEFAULT;
    if (o->min_free_bytes == 0)
        o->min_free_bytes = SHARD_MIN_FREE_BYTES_DEFAULT;
    if (o->hnsw_M < HNSW_M_MIN || o->hnsw_M > HNSW_M_MAX)
        return shoal_err_set(err, SHOAL_EINVAL, "hnsw M must be in %d..%d, got %zu", HNSW_M_MIN,
                             HNSW_M_MAX, o->hnsw_M);
    if (o->hnsw_ef_construction > HNSW_EF_CONSTRUCTION_MAX)
        return shoal_err_set(err, SHOAL_EINVAL, "hnsw ef_construction must be in %d..%d, got %zu",
                             HNSW_EF_CONSTRUCTION_MIN, HNSW_EF_CONSTRUCTION_MAX,
                             o->hnsw_ef_construction);
    if (o->hnsw_ef > HNSW_EF_MAX)
        return shoal_err_set(err, SHOAL_EINVAL, "hnsw ef must be in %d..%d, got %zu", HNSW_EF_MIN,
                             HNSW_EF_MAX, o->hnsw_ef);
    return 0;
}

shard_store_t *shard_store_open(const shard_store_opts_t *opts, shoal_err_t *err)
{
    if (!opts || !opts->data_dir || !*opts->data_dir) {
        shoal_err_set(err, SHOAL_EINVAL, "shard store: no data dir given");
        return NULL;
    }
    shard_store_t *store = calloc(1, sizeof *store);
    if (!store) {
        shoal_err_set(err, SHOAL_ENOMEM, "shard store: out of memory");
        return NULL;
    }
    s_store_init_locks(store);

    store->opts = *opts;
    store->data_dir = strdup(opts->data_dir);
    store->device = strdup(opts->device && *opts->device ? opts->device : "auto");
    if (!store->data_dir || !store->device) {
        shoal_err_set(err, SHOAL_ENOMEM, "shard store: out of memory");
        goto fail;
    }
    store->opts.data_dir = store->data_dir;
    store->opts.device = store->device;
    if (s_store_opts_check(&store->opts, err) != 0)
        goto fail;

    double t0 = timing_now();
    if (s_mkdirs(store->data_dir, err) || s_open_kv(store, err))
        goto fail;
    double t_kv = timing_now() - t0;
    if (s_check_format(store, err) || s_read_seq(store, err) || s_probe_devices(store, err) ||
        s_load_collections(store, err) || s_upgrade_format(store, err))
        goto fail;
    log_info("data dir %s open%s: %zu collections, seq %llu, in %.2f s (RocksDB open and WAL "
             "recovery %.2f s)",
             store->data_dir, atomic_load(&store->read_only) ? " read-only" : "", store->ncolls,
             (unsigned long long)atomic_load(&store->seq), timing_now() - t0, t_kv);

    if (pthread_create(&store->ckpt_thread, NULL, s_ckpt_main, store) != 0) {
        shoal_err_set(err, SHOAL_ENOMEM, "shard store: cannot start the checkpoint thread");
        goto fail;
    }
    store->ckpt_running = 1;
    return store;

fail:
    s_free(store);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Close                                                                    */
/* ------------------------------------------------------------------------ */

void shard_store_close(shard_store_t **store_p)
{
    if (!store_p || !*store_p)
        return;
    shard_store_t *store = *store_p;
    s_ckpt_stop(store);
    pthread_mutex_lock(&store->write_mu);
    for (size_t i = 0; i < store->ncolls; i++) {
        shard_coll_t *coll = store->colls[i];
        if (!coll->dirty)
            continue;
        shoal_err_t err;
        shoal_err_clear(&err);
        if (shard_checkpoint_coll(store, coll, &err) != 0)
            log_error("final checkpoint of \"%s\" failed (the next open replays its log): %s",
                      coll->name, err.msg);
    }
    /* Memtables to SST files now, so the next open need not replay the WAL
     * (a clean restart then costs the checkpoint load and little else). */
    shoal_err_t err;
    shoal_err_clear(&err);
    int writable = store->kv && !kv_is_read_only(store->kv); /* else nothing to flush */
    if (writable && s_space_left(store, 0, &err) != 0)
        log_warn("skipping the flush at close (the next open replays the WAL): %s", err.msg);
    else if (writable && kv_flush(store->kv, &err) != 0)
        log_warn("data dir %s: flush at close failed (the next open replays the WAL): %s",
                 store->data_dir, err.msg);
    pthread_mutex_unlock(&store->write_mu);
    s_free(store);
    *store_p = NULL;
}

void shard_store_abandon(shard_store_t **store_p)
{
    if (!store_p || !*store_p)
        return;
    s_ckpt_stop(*store_p);
    s_free(*store_p);
    *store_p = NULL;
}

/* ------------------------------------------------------------------------ */
/* Create / drop                                                            */
/* ------------------------------------------------------------------------ */

int shard_store_create(shard_store_t *store, const char *name, size_t dim, shoal_metric_t metric,
                       size_t M, size_t ef_construction, shoal_err_t *err)
{
    shard_coll_params_t p = {
        .dim = dim, .metric = metric, .M = M, .ef_construction = ef_construction};
    return shard_store_create_with(store, name, &p, err);
}

/*
 * Stage 1 of create: check the parameters (in this order: storage, store,
 * name, dim, metric, M, ef_construction) and resolve M and ef_construction's
 * zero to the store's defaults into *M_out and *ef_out.
 */
static int s_create_check(shard_store_t *store, const char *name, const shard_coll_params_t *p,
                          size_t *M_out, size_t *ef_out, shoal_err_t *err)
{
    size_t dim = p->dim, M = p->M, ef_construction = p->ef_construction;
    shoal_metric_t metric = p->metric;
    if (p->storage >= QUANT_KIND_COUNT)
        return shoal_err_set(err, SHOAL_EINVAL, "collection \"%s\": unknown storage %d",
                             name ? name : "(null)", (int)p->storage);
    if (!store)
        return shoal_err_set(err, SHOAL_EINVAL, "create: no store");
    int rc = s_check_name(name, err);
    if (rc)
        return rc;
    if (dim < 1 || dim > HNSW_DIM_MAX)
        return shoal_err_set(err, SHOAL_EINVAL, "collection \"%s\": dim must be in 1..%d, got %zu",
                             name, HNSW_DIM_MAX, dim);
    if (metric != SHOAL_METRIC_L2 && metric != SHOAL_METRIC_IP && metric != SHOAL_METRIC_COSINE)
        return shoal_err_set(err, SHOAL_EINVAL, "collection \"%s\": unknown metric %d", name,
                             (int)metric);
    if (M == 0)
        M = store->opts.hnsw_M;
    if (ef_construction == 0)
        ef_construction = store->opts.hnsw_ef_construction;
    if (M < HNSW_M_MIN || M > HNSW_M_MAX)
        return shoal_err_set(err, SHOAL_EINVAL, "collection \"%s\": M must be in %d..%d, got %zu",
                             name, HNSW_M_MIN, HNSW_M_MAX, M);
    if (ef_construction < HNSW_EF_CONSTRUCTION_MIN || ef_construction > HNSW_EF_CONSTRUCTION_MAX)
        return shoal_err_set(err, SHOAL_EINVAL,
                             "collection \"%s\": ef_construction must be in %d..%d, got %zu", name,
                             HNSW_EF_CONSTRUCTION_MIN, HNSW_EF_CONSTRUCTION_MAX, ef_construction);
    *M_out = M;
    *ef_out = ef_construction;
    return 0;
}

int shard_store_create_with(shard_store_t *store, const char *name, const shard_coll_params_t *p,
                            shoal_err_t *err)
{
    if (!p)
        return shoal_err_set(err, SHOAL_EINVAL, "create: no parameters");
    size_t dim = p->dim, M = 0, ef_construction = 0;
    shoal_metric_t metric = p->metric;
    int rc = s_create_check(store, name, p, &M, &ef_construction, err);
    if (rc)
        return rc;

    pthread_mutex_lock(&store->write_mu);
    shard_coll_t *coll = NULL;
    kv_batch_t *batch = NULL;
    if (shard_coll_find(store, name)) {
        rc = shoal_err_set(err, SHOAL_EEXIST, "collection \"%s\" exists already", name);
        goto done;
    }
    coll = s_coll_new(name);
    batch = kv_batch_new();
    if (!coll || !batch) {
        rc = shoal_err_set(err, SHOAL_ENOMEM, "create \"%s\": out of memory", name);
        goto done;
    }
    coll->dim = dim;
    coll->metric = metric;
    coll->M = M;
    coll->ef_construction = ef_construction;
    coll->storage = p->storage;
    if ((rc = shard_coll_make_indexes(store, coll, err)) != 0) {
        shoal_err_prefix(err, "collection \"%s\"", name);
        goto done;
    }
    uint64_t seq = atomic_load(&store->seq);
    coll->created_seq = seq;
    size_t rec_len = 0;
    uint8_t *rec = shard_coll_encode(coll, &rec_len);
    if (!rec) {
        rc = shoal_err_set(err, SHOAL_ENOMEM, "create \"%s\": out of memory", name);
        goto done;
    }
    uint8_t key[SHARD_KEY_MAX];
    kv_batch_put(batch, key, shard_key_coll(key, name), rec, rec_len);
    free(rec);
    /* Leftovers of an earlier collection of this name cannot exist (drop
     * removes them in the same batch as its record), but a create must never
     * resurrect them, so clear the ranges anyway: it costs three tombstones. */
    s_batch_clear_ranges(batch, name);
    /* A collection is rare and cheap to create: always durable at once. */
    if ((rc = shard_kv_write(store, batch, 1, err)) != 0) {
        shoal_err_prefix(err, "create \"%s\"", name);
        goto done;
    }
    atomic_store(&coll->last_seq, seq);
    coll->dirty = 1; /* so the first checkpoint records the (empty) graph */
    if ((rc = s_table_add(store, coll)) != 0) {
        shoal_err_set(err, rc, "create \"%s\": out of memory", name);
        goto done;
    }
    coll = NULL;
    log_info("collection \"%s\" created: dim %zu, %s, M %zu, ef_construction %zu", name, dim,
             shoal_metric_name(metric), M, ef_construction);
done:
    pthread_mutex_unlock(&store->write_mu);
    s_coll_destroy(&coll);
    kv_batch_destroy(&batch);
    return rc;
}

int shard_store_drop(shard_store_t *store, const char *name, shoal_err_t *err)
{
    if (!store)
        return shoal_err_set(err, SHOAL_EINVAL, "drop: no store");
    pthread_mutex_lock(&store->write_mu);
    int rc = 0;
    kv_batch_t *batch = NULL;
    shard_coll_t *coll = s_find_or_fail(store, name, err);
    if (!coll) {
        rc = err ? err->code : SHOAL_ENOTFOUND;
        goto done;
    }
    if (!(batch = kv_batch_new())) {
        rc = shoal_err_set(err, SHOAL_ENOMEM, "drop \"%s\": out of memory", name);
        goto done;
    }
    uint8_t key[SHARD_KEY_MAX];
    kv_batch_delete(batch, key, shard_key_coll(key, name));
    s_batch_clear_ranges(batch, name);
    if ((rc = shard_kv_write(store, batch, 1, err)) != 0) {
        shoal_err_prefix(err, "drop \"%s\"", name);
        goto done;
    }
    /* Unlink under the table's write lock: searches of it have finished and
     * no new one can find it. */
    pthread_rwlock_wrlock(&store->colls_lock);
    for (size_t i = 0; i < store->ncolls; i++) {
        if (store->colls[i] == coll) {
            memmove(&store->colls[i], &store->colls[i + 1],
                    (store->ncolls - i - 1) * sizeof *store->colls);
            store->ncolls--;
            break;
        }
    }
    pthread_rwlock_unlock(&store->colls_lock);
    log_info("collection \"%s\" dropped (%zu vectors)", name, hnsw_count(coll->hnsw));
    s_coll_destroy(&coll);
done:
    pthread_mutex_unlock(&store->write_mu);
    kv_batch_destroy(&batch);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Insert                                                                   */
/* ------------------------------------------------------------------------ */

int shard_check_vector(const shard_coll_t *coll, const char *what, size_t i, const float *v,
                       shoal_err_t *err)
{
    shoal_err_t why;
    shoal_err_clear(&why);
    int rc = vec_check(coll->metric, v, coll->dim, &why);
    if (rc != 0)
        return shoal_err_set(err, rc, "collection \"%s\": %s %zu %s", coll->name, what, i,
                             why.msg);
    return 0;
}

/* Checks every row: ids, finite values, cosine's non-zero vectors. */
static int s_check_rows(const shard_coll_t *coll, const uint64_t *ids, const float *vecs, size_t n,
                        shoal_err_t *err)
{
    for (size_t i = 0; i < n; i++) {
        if (ids[i] == HNSW_ID_NONE)
            return shoal_err_set(err, SHOAL_EINVAL,
                                 "collection \"%s\": row %zu: id %llu is reserved", coll->name, i,
                                 (unsigned long long)ids[i]);
        int rc = shard_check_vector(coll, "row", i, vecs + i * coll->dim, err);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/*
 * An id listed twice in one batch: the last row wins, as it would for two
 * batches in a row. Fills *keep (malloc'd, the rows to use, in order) when
 * there are duplicates, else leaves it NULL.
 */
static int s_dedupe(const uint64_t *ids, size_t n, size_t **keep, size_t *nkeep)
{
    *keep = NULL;
    *nkeep = n;
    if (n < 2)
        return 0;
    idmap_t set;
    uint8_t *last = malloc(n);
    if (!last || idmap_set_init(&set, n)) {
        free(last);
        return SHOAL_ENOMEM;
    }
    /* Walking from the end, an id's first sighting is its last row. */
    size_t unique = 0;
    for (size_t i = n; i-- > 0;) {
        last[i] = (uint8_t)idmap_add(&set, ids[i]);
        unique += last[i];
    }
    idmap_fini(&set);
    size_t *rows = unique == n ? NULL : malloc(unique * sizeof *rows);
    if (unique != n && !rows) {
        free(last);
        return SHOAL_ENOMEM;
    }
    if (rows) {
        size_t m = 0;
        for (size_t i = 0; i < n; i++)
            if (last[i])
                rows[m++] = i;
        *keep = rows;
        *nkeep = m;
    }
    free(last);
    return 0;
}

/* Queues the op-log entry for seq: header + ids. */
static int s_batch_put_log(kv_batch_t *batch, const char *name, uint64_t seq, uint32_t op,
                           const uint64_t *ids, size_t n)
{
    size_t vlen = sizeof(shard_log_hdr_t) + n * sizeof(uint64_t);
    uint8_t *val = malloc(vlen);
    if (!val)
        return SHOAL_ENOMEM;
    shard_log_hdr_t hdr = {
        .magic = SHARD_LOG_MAGIC, .version = SHARD_RECORD_VERSION, .op = op, .n = n};
    memcpy(val, &hdr, sizeof hdr);
    memcpy(val + sizeof hdr, ids, n * sizeof(uint64_t));
    uint8_t key[SHARD_KEY_MAX];
    kv_batch_put(batch, key, kvkeys_u64(key, 'L', name, seq), val, vlen);
    free(val);
    return 0;
}

/*
 * The stored list of each row already present (had[i] set; others left
 * alone): read from its "V/" record, since an upsert that changes an id's
 * list must delete its old "M/" key and count. Only ids the graph holds are
 * looked up, so a batch of new ids costs no read. Caller holds write_mu.
 */
static int s_read_old_lists(shard_store_t *store, shard_coll_t *coll, const uint64_t *ids,
                            size_t n, uint8_t *had, uint32_t *old, shoal_err_t *err)
{
    for (size_t i = 0; i < n; i++) {
        had[i] = 0;
        if (!hnsw_contains(coll->hnsw, ids[i]))
            continue;
        uint8_t key[SHARD_KEY_MAX];
        void *val = NULL;
        size_t vlen = 0;
        int rc = kv_get(store->kv, key, kvkeys_u64(key, SHARD_TAG_VEC, coll->name, ids[i]), &val,
                        &vlen, err);
        if (rc == SHOAL_ENOTFOUND)
            continue;
        if (rc)
            return shoal_err_prefix(err, "reading the stored row of id %llu",
                                    (unsigned long long)ids[i]);
        const uint8_t *vec = NULL;
        /* A record that no longer decodes has no list to move away from. */
        had[i] = shard_vec_decode(coll, ids[i], val, vlen, &vec, NULL, &old[i], NULL, NULL) == 0;
        free(val);
    }
    return 0;
}

/*
 * sq8, the collection's first insert batch: its quantizer is the one the
 * batch carries (qrec, qlen: the coordinator's, trained at `train` on the
 * collection's sample, so every shard and replica encodes alike), else one
 * trained on the batch itself (unit rows for cosine). It goes to *trained
 * and the "C/" record that holds it is queued into batch, so the rows and
 * their quantizer become durable together.
 */
static int s_sq8_first_batch(shard_coll_t *coll, const float *vecs, size_t n, const uint8_t *qrec,
                             size_t qlen, kv_batch_t *batch, quant_sq8_t **trained,
                             shoal_err_t *err)
{
    const float *rows = vecs;
    float *unit = NULL;
    if (qrec) {
        shoal_err_t qerr;
        if (!(*trained = quant_sq8_record_read(qrec, qlen, coll->dim, &qerr)))
            return shoal_err_set(err, qerr.code, "insert into \"%s\": the quantizer sent: %s",
                                 coll->name, qerr.msg);
        n = 0; /* nothing to train */
    }
    if (n && coll->metric == SHOAL_METRIC_COSINE) {
        if (!(unit = malloc(n * coll->dim * sizeof *unit)))
            return shoal_err_set(err, SHOAL_ENOMEM, "insert into \"%s\": out of memory",
                                 coll->name);
        memcpy(unit, vecs, n * coll->dim * sizeof *unit);
        for (size_t i = 0; i < n; i++)
            dist_normalize(unit + i * coll->dim, coll->dim); /* checked: not zero */
        rows = unit;
    }
    shoal_err_t qerr;
    if (!qrec)
        *trained = quant_sq8_train(rows, n, coll->dim, &qerr);
    free(unit);
    if (!*trained)
        return shoal_err_set(err, qerr.code, "insert into \"%s\": training sq8: %s", coll->name,
                             qerr.msg);
    coll->sq8 = *trained; /* for the encoder only; s_sq8_install keeps or undoes it */
    size_t len = 0;
    uint8_t *rec = shard_coll_encode(coll, &len);
    coll->sq8 = NULL;
    if (!rec) {
        quant_sq8_destroy(trained);
        return shoal_err_set(err, SHOAL_ENOMEM, "insert into \"%s\": out of memory", coll->name);
    }
    uint8_t key[SHARD_KEY_MAX];
    kv_batch_put(batch, key, shard_key_coll(key, coll->name), rec, len);
    free(rec);
    return 0;
}

/*
 * Once the first batch is durable: the collection takes the quantizer and a
 * new empty graph made with it replaces the one made without (under the
 * table's write lock: searches hold its read lock while they use the graph).
 */
static int s_sq8_install(shard_store_t *store, shard_coll_t *coll, quant_sq8_t **trained,
                         shoal_err_t *err)
{
    coll->sq8 = *trained;
    *trained = NULL;
    hnsw_t *fresh = s_graph_new(coll, err);
    if (!fresh) /* stored: the next open builds the graph with the quantizer */
        return shoal_err_prefix(err, "insert into \"%s\": stored, but not indexed until restart",
                                coll->name);
    pthread_rwlock_wrlock(&store->colls_lock);
    hnsw_t *old = coll->hnsw;
    coll->hnsw = fresh;
    pthread_rwlock_unlock(&store->colls_lock);
    hnsw_destroy(&old);
    return 0;
}

int shard_store_insert(shard_store_t *store, const char *name, const uint64_t *ids,
                       const float *vecs, size_t n, size_t dim, uint64_t *seq_out, shoal_err_t *err)
{
    return shard_store_insert_lists(store, name, ids, vecs, NULL, n, dim, seq_out, err);
}

int shard_store_insert_lists(shard_store_t *store, const char *name, const uint64_t *ids,
                             const float *vecs, const uint32_t *lists, size_t n, size_t dim,
                             uint64_t *seq_out, shoal_err_t *err)
{
    return shard_store_insert_quantized(store, name, ids, vecs, lists, n, dim, NULL, 0, seq_out,
                                        err);
}

/*
 * The rows an insert works on: the caller's arrays, or compacted copies of
 * them when an id repeats in the batch (the last occurrence wins). The
 * copies are owned here and freed by s_ins_rows_fini.
 */
typedef struct {
    const uint64_t *ids;   /* the rows' ids (the caller's or kids) */
    const float *vecs;     /* m x dim vectors (the caller's or kvecs) */
    const uint32_t *lists; /* the rows' IVF lists, or NULL for none */
    size_t m;              /* how many rows */
    size_t *keep;          /* s_dedupe's kept indexes, or NULL: no repeats */
    uint64_t *kids;        /* owned copy of the kept ids */
    float *kvecs;          /* owned copy of the kept vectors */
    uint32_t *klists;      /* owned copy of the kept lists */
} s_ins_rows_t;

static void s_ins_rows_fini(s_ins_rows_t *r)
{
    free(r->keep);
    free(r->kids);
    free(r->kvecs);
    free(r->klists);
}

/* Stage 1: drop repeated ids from the batch (last occurrence wins), copying the kept rows. */
static int s_ins_dedupe(s_ins_rows_t *r, const char *name, size_t n, size_t dim, shoal_err_t *err)
{
    int rc;
    r->m = n;
    if ((rc = s_dedupe(r->ids, n, &r->keep, &r->m)) != 0)
        return shoal_err_set(err, rc, "insert into \"%s\": out of memory", name);
    if (!r->keep)
        return 0;
    size_t m = r->m;
    r->kids = malloc(m * sizeof *r->kids);
    r->kvecs = malloc(m * dim * sizeof *r->kvecs);
    r->klists = r->lists ? malloc(m * sizeof *r->klists) : NULL;
    if (!r->kids || !r->kvecs || (r->lists && !r->klists))
        return shoal_err_set(err, SHOAL_ENOMEM, "insert into \"%s\": out of memory", name);
    for (size_t i = 0; i < m; i++) {
        r->kids[i] = r->ids[r->keep[i]];
        memcpy(r->kvecs + i * dim, r->vecs + r->keep[i] * dim, dim * sizeof *r->kvecs);
        if (r->lists)
            r->klists[i] = r->lists[r->keep[i]];
    }
    r->ids = r->kids;
    r->vecs = r->kvecs;
    r->lists = r->klists;
    return 0;
}

/* Stage 2 (of s_ins_write): put each row's "V/" record and "M/" key in the batch, and delete
 * the old "M/" key of an upsert that moves its row to another list. */
static void s_ins_batch_rows(kv_batch_t *batch, const char *name, const s_ins_rows_t *r, size_t dim,
                             uint64_t seq, const uint8_t *had, const uint32_t *old, uint8_t *val,
                             size_t vlen)
{
    uint8_t key[SHARD_KEY_MAX];
    for (size_t i = 0; i < r->m; i++) {
        uint32_t list = r->lists ? r->lists[i] : WIRE_LIST_NONE;
        shard_vec_hdr2_t hdr = {
            .magic = SHARD_VEC_MAGIC, .version = SHARD_VEC_VERSION, .seq = seq, .list = list};
        memcpy(val, &hdr, sizeof hdr);
        memcpy(val + sizeof hdr, r->vecs + i * dim, dim * sizeof(float));
        kv_batch_put(batch, key, kvkeys_u64(key, SHARD_TAG_VEC, name, r->ids[i]), val, vlen);
        kv_batch_put(batch, key, kvkeys_u32_u64(key, SHARD_TAG_MEMBER, name, list, r->ids[i]), "",
                     0);
        if (had[i] && old[i] != list)
            kv_batch_delete(batch, key,
                            kvkeys_u32_u64(key, SHARD_TAG_MEMBER, name, old[i], r->ids[i]));
    }
}

/*
 * Stage 3: build and write the insert's one batch: the rows, the log entry,
 * the sequence number and, for the first rows of an sq8 collection, its
 * quantizer (handed back in *trained, installed by the caller). Nothing is
 * written unless all of it is. *batch_p is the caller's to destroy.
 */
static int s_ins_write(shard_store_t *store, shard_coll_t *coll, const char *name,
                       const s_ins_rows_t *r, uint64_t seq, const uint8_t *had, const uint32_t *old,
                       const uint8_t *qrec, size_t qlen, kv_batch_t **batch_p,
                       quant_sq8_t **trained, shoal_err_t *err)
{
    int rc = 0;
    size_t dim = coll->dim;
    size_t vlen = sizeof(shard_vec_hdr2_t) + dim * sizeof(float);
    kv_batch_t *batch = *batch_p = kv_batch_new();
    uint8_t *val = malloc(vlen);
    if (!batch || !val) {
        rc = shoal_err_set(err, SHOAL_ENOMEM, "insert into \"%s\": out of memory", name);
        goto done;
    }
    s_ins_batch_rows(batch, name, r, dim, seq, had, old, val, vlen);
    if (s_batch_put_log(batch, name, seq, SHARD_LOG_INSERT, r->ids, r->m)) {
        rc = shoal_err_set(err, SHOAL_ENOMEM, "insert into \"%s\": out of memory", name);
        goto done;
    }
    shard_batch_put_seq(batch, seq);
    if (coll->storage == QUANT_SQ8 && !coll->sq8 &&
        (rc = s_sq8_first_batch(coll, r->vecs, r->m, qrec, qlen, batch, trained, err)) != 0)
        goto done;
    if ((rc = shard_kv_write(store, batch, store->opts.sync, err)) != 0)
        shoal_err_prefix(err, "insert into \"%s\"", name);
done:
    free(val);
    return rc;
}

/* Stage 4 (after the batch is written): move the rows' counts from their old lists to the new. */
static void s_ins_count_lists(shard_coll_t *coll, const char *name, const s_ins_rows_t *r,
                              const uint8_t *had, const uint32_t *old)
{
    for (size_t i = 0; i < r->m; i++) {
        uint32_t list = r->lists ? r->lists[i] : WIRE_LIST_NONE;
        if ((had[i] && shard_lists_add(coll, old[i], -1) != 0) ||
            shard_lists_add(coll, list, 1) != 0)
            log_error("insert into \"%s\": out of memory counting list %u (its count is low "
                      "until the next open)",
                      name, list);
    }
}

/* Stage 5: add the stored rows to the exact engine, then to the HNSW graph. */
static int s_ins_index(shard_store_t *store, shard_coll_t *coll, const char *name,
                       const s_ins_rows_t *r, shoal_err_t *err)
{
    int rc = 0;
    if (coll->engine) {
        pthread_rwlock_wrlock(&coll->engine_lock);
        rc = knn_engine_add(coll->engine, r->ids, r->vecs, r->m, err);
        pthread_rwlock_unlock(&coll->engine_lock);
    }
    if (rc == 0)
        rc = hnsw_insert_batch(coll->hnsw, r->ids, r->vecs, r->m, store->opts.threads, err);
    if (rc) {
        shoal_err_prefix(err, "insert into \"%s\": stored, but not indexed until restart", name);
        log_error("%s", err ? err->msg : "insert: indexing failed");
    }
    return rc;
}

/*
 * Checks, then stages: dedupe the batch, read the rows' old lists, write one
 * RocksDB batch (vectors, list keys, log entry, sequence number, and a
 * first sq8 quantizer), and only after it is written change the in-memory
 * state, the list counts and the indexes.
 */
int shard_store_insert_quantized(shard_store_t *store, const char *name, const uint64_t *ids,
                                 const float *vecs, const uint32_t *lists, size_t n, size_t dim,
                                 const uint8_t *qrec, size_t qlen, uint64_t *seq_out,
                                 shoal_err_t *err)
{
    if (!store || (n && (!ids || !vecs)))
        return shoal_err_set(err, SHOAL_EINVAL, "insert: NULL argument");
    pthread_mutex_lock(&store->write_mu);
    int rc = 0;
    kv_batch_t *batch = NULL;
    s_ins_rows_t rows = {.ids = ids, .vecs = vecs, .lists = lists};
    uint32_t *old = NULL;
    uint8_t *had = NULL;
    quant_sq8_t *trained = NULL;
    shard_coll_t *coll = s_find_or_fail(store, name, err);
    if (!coll) {
        rc = err ? err->code : SHOAL_ENOTFOUND;
        goto done;
    }
    if (dim != coll->dim) {
        rc = shoal_err_set(err, SHOAL_EDIM, "collection \"%s\": expected dim %zu, got %zu", name,
                           coll->dim, dim);
        goto done;
    }
    if ((rc = s_check_rows(coll, ids, vecs, n, err)) != 0)
        goto done;
    if (n == 0) {
        if (seq_out)
            *seq_out = atomic_load(&store->seq);
        goto done;
    }
    if ((rc = s_ins_dedupe(&rows, name, n, dim, err)) != 0)
        goto done;
    size_t m = rows.m;
    had = malloc(m);
    old = malloc(m * sizeof *old);
    if (!had || !old) {
        rc = shoal_err_set(err, SHOAL_ENOMEM, "insert into \"%s\": out of memory", name);
        goto done;
    }
    if ((rc = s_read_old_lists(store, coll, rows.ids, m, had, old, err)) != 0) {
        shoal_err_prefix(err, "insert into \"%s\"", name);
        goto done;
    }

    /* 1. RocksDB: vectors, list memberships, log entry, sequence number; one atomic batch. */
    uint64_t seq = atomic_load(&store->seq) + 1;
    if ((rc = s_ins_write(store, coll, name, &rows, seq, had, old, qrec, qlen, &batch, &trained,
                          err)) != 0)
        goto done;
    if (trained && (rc = s_sq8_install(store, coll, &trained, err)) != 0)
        goto done;
    atomic_store(&store->seq, seq);
    atomic_store(&coll->last_seq, seq);
    coll->dirty = 1;
    coll->changes += m;
    if (seq_out)
        *seq_out = seq;
    s_ins_count_lists(coll, name, &rows, had, old);

    /* 2. The indexes. */
    if ((rc = s_ins_index(store, coll, name, &rows, err)) != 0)
        goto done;
    if (coll->changes >= store->opts.checkpoint_every)
        s_ckpt_poke(store);
done:
    quant_sq8_destroy(&trained);
    pthread_mutex_unlock(&store->write_mu);
    kv_batch_destroy(&batch);
    s_ins_rows_fini(&rows);
    free(had);
    free(old);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Delete                                                                   */
/* ------------------------------------------------------------------------ */

int shard_store_delete(shard_store_t *store, const char *name, const uint64_t *ids, size_t n,
                       size_t *deleted, uint64_t *seq_out, shoal_err_t *err)
{
    if (deleted)
        *deleted = 0;
    if (!store || (n && !ids))
        return shoal_err_set(err, SHOAL_EINVAL, "delete: NULL argument");
    pthread_mutex_lock(&store->write_mu);
    int rc = 0;
    shard_coll_t *coll = s_find_or_fail(store, name, err);
    if (!coll)
        rc = err ? err->code : SHOAL_ENOTFOUND;
    else
        rc = shard_delete_locked(store, coll, ids, NULL, n, deleted, seq_out, err);
    pthread_mutex_unlock(&store->write_mu);
    return rc;
}

/* Stage 1: the ids of the batch that the graph holds, each once, with their lists if given. */
static size_t s_del_present(shard_coll_t *coll, const uint64_t *ids, const uint32_t *lists,
                            size_t n, idmap_t *seen, uint64_t *present, uint32_t *plists)
{
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (hnsw_contains(coll->hnsw, ids[i]) && idmap_add(seen, ids[i])) {
            present[m] = ids[i];
            if (lists)
                plists[m] = lists[i];
            m++;
        }
    }
    return m;
}

/* Stage 2: one batch with the log entry, each row's "V/" and known "M/" deletions, the seq. */
static int s_del_batch(kv_batch_t **batch_p, const char *name, uint64_t seq,
                       const uint64_t *present, const uint32_t *plists, const uint8_t *known,
                       size_t m, shoal_err_t *err)
{
    if (!(*batch_p = kv_batch_new()) ||
        s_batch_put_log(*batch_p, name, seq, SHARD_LOG_DELETE, present, m))
        return shoal_err_set(err, SHOAL_ENOMEM, "delete from \"%s\": out of memory", name);
    kv_batch_t *batch = *batch_p;
    uint8_t key[SHARD_KEY_MAX];
    for (size_t i = 0; i < m; i++) {
        kv_batch_delete(batch, key, kvkeys_u64(key, SHARD_TAG_VEC, name, present[i]));
        if (known[i])
            kv_batch_delete(batch, key,
                            kvkeys_u32_u64(key, SHARD_TAG_MEMBER, name, plists[i], present[i]));
    }
    shard_batch_put_seq(batch, seq);
    return 0;
}

/* Stage 3 (after the batch is written): remove the ids from the exact engine, then the graph. */
static int s_del_index(shard_coll_t *coll, const char *name, const uint64_t *present, size_t m,
                       size_t *removed, shoal_err_t *err)
{
    int rc = 0;
    if (coll->engine) {
        pthread_rwlock_wrlock(&coll->engine_lock);
        rc = knn_engine_remove(coll->engine, present, m, NULL, err);
        pthread_rwlock_unlock(&coll->engine_lock);
    }
    if (rc == 0)
        rc = hnsw_delete_batch(coll->hnsw, present, m, removed, err);
    if (rc) {
        shoal_err_prefix(err,
                         "delete from \"%s\": stored, but the indexes keep the ids until "
                         "restart: ",
                         name);
        log_error("%s", err ? err->msg : "delete: index update failed");
    }
    return rc;
}

int shard_delete_locked(shard_store_t *store, shard_coll_t *coll, const uint64_t *ids,
                        const uint32_t *lists, size_t n, size_t *deleted, uint64_t *seq_out,
                        shoal_err_t *err)
{
    if (deleted)
        *deleted = 0;
    const char *name = coll->name;
    int rc = 0;
    kv_batch_t *batch = NULL;
    uint64_t *present = NULL;
    uint32_t *plists = NULL;
    uint8_t *known = NULL;
    idmap_t seen = {0};
    /* Only ids that are present are logged and counted; an id listed twice
     * counts once. write_mu keeps the graph's membership still meanwhile. */
    present = malloc((n ? n : 1) * sizeof *present);
    plists = malloc((n ? n : 1) * sizeof *plists);
    known = malloc(n ? n : 1);
    if (!present || !plists || !known || idmap_set_init(&seen, n)) {
        rc = shoal_err_set(err, SHOAL_ENOMEM, "delete from \"%s\": out of memory", name);
        goto done;
    }
    size_t m = s_del_present(coll, ids, lists, n, &seen, present, plists);
    if (m == 0) {
        if (seq_out)
            *seq_out = atomic_load(&store->seq);
        goto done;
    }
    /* Each id's list, for its "M/" key and its count. */
    if (lists)
        memset(known, 1, m);
    else if ((rc = s_read_old_lists(store, coll, present, m, known, plists, err)) != 0) {
        shoal_err_prefix(err, "delete from \"%s\"", name);
        goto done;
    }

    uint64_t seq = atomic_load(&store->seq) + 1;
    if ((rc = s_del_batch(&batch, name, seq, present, plists, known, m, err)) != 0)
        goto done;
    if ((rc = shard_kv_write(store, batch, store->opts.sync, err)) != 0) {
        shoal_err_prefix(err, "delete from \"%s\"", name);
        goto done;
    }
    atomic_store(&store->seq, seq);
    atomic_store(&coll->last_seq, seq);
    coll->dirty = 1;
    coll->changes += m;
    if (seq_out)
        *seq_out = seq;
    for (size_t i = 0; i < m; i++)
        if (known[i])
            (void)shard_lists_add(coll, plists[i], -1); /* a decrement never allocates */

    size_t removed = 0;
    if ((rc = s_del_index(coll, name, present, m, &removed, err)) != 0)
        goto done;
    atomic_fetch_add(&coll->deleted, removed);
    if (deleted)
        *deleted = removed;
    if (coll->changes >= store->opts.checkpoint_every)
        s_ckpt_poke(store);
done:
    kv_batch_destroy(&batch);
    free(present);
    free(plists);
    free(known);
    idmap_fini(&seen);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Reads                                                                    */
/* ------------------------------------------------------------------------ */

int shard_store_get(shard_store_t *store, const char *name, const uint64_t *ids, size_t n,
                    uint8_t *found, float *vecs, shoal_err_t *err)
{
    if (!store || (n && (!ids || !found || !vecs)))
        return shoal_err_set(err, SHOAL_EINVAL, "get: NULL argument");
    pthread_rwlock_rdlock(&store->colls_lock);
    int rc = 0;
    shard_coll_t *coll = s_find_or_fail(store, name, err);
    if (!coll) {
        rc = err ? err->code : SHOAL_ENOTFOUND;
        goto done;
    }
    /* f32: the graph holds every live vector (normalised, for cosine); f16
     * and sq8: RocksDB holds the float32 rows, normalised here alike. */
    for (size_t i = 0; i < n; i++) {
        float *out = vecs + i * coll->dim;
        if (coll->storage == QUANT_F32)
            found[i] = hnsw_get(coll->hnsw, ids[i], out, NULL) == 0;
        else
            found[i] = hnsw_contains(coll->hnsw, ids[i]) &&
                       shard_row_read(store, coll, ids[i], out) == 0 &&
                       (coll->metric != SHOAL_METRIC_COSINE || dist_normalize(out, coll->dim) == 0);
        if (!found[i])
            memset(out, 0, coll->dim * sizeof *out);
    }
done:
    pthread_rwlock_unlock(&store->colls_lock);
    return rc;
}

int shard_store_dim(shard_store_t *store, const char *name, size_t *dim, shoal_err_t *err)
{
    return shard_store_shape(store, name, dim, NULL, err);
}

int shard_store_shape(shard_store_t *store, const char *name, size_t *dim, shoal_metric_t *metric,
                      shoal_err_t *err)
{
    if (!store || !dim)
        return shoal_err_set(err, SHOAL_EINVAL, "dim: NULL argument");
    pthread_rwlock_rdlock(&store->colls_lock);
    shard_coll_t *coll = s_find_or_fail(store, name, err);
    int rc = coll ? 0 : (err ? err->code : SHOAL_ENOTFOUND);
    if (coll) {
        *dim = coll->dim;
        if (metric)
            *metric = coll->metric;
    }
    pthread_rwlock_unlock(&store->colls_lock);
    return rc;
}

static void s_fill_stats(shard_coll_t *coll, shard_coll_stats_t *st)
{
    memset(st, 0, sizeof *st);
    snprintf(st->name, sizeof st->name, "%s", coll->name);
    st->dim = coll->dim;
    st->metric = coll->metric;
    st->M = coll->M;
    st->ef_construction = coll->ef_construction;
    hnsw_stats_t hs;
    hnsw_stats(coll->hnsw, &hs);
    st->count = hs.count;
    st->hnsw_bytes = hs.bytes;
    st->deleted = atomic_load(&coll->deleted);
    st->storage = coll->storage;
    st->quantizer_crc = 0;
    if (coll->sq8) {
        size_t len = 0;
        uint8_t *rec = shard_coll_encode(coll, &len);
        size_t qlen = quant_sq8_record_size(coll->dim); /* the record ends the "C/" value */
        if (rec && len >= qlen)
            st->quantizer_crc = shard_crc32(0, rec + len - qlen, qlen);
        free(rec);
    }
    st->bytes_codes = hs.bytes_codes;
    st->bytes_links = hs.bytes_links;
    st->bytes_ids = hs.bytes_ids;
    st->bytes_other = hs.bytes_other;
    knn_info_t info;
    memset(&info, 0, sizeof info);
    pthread_rwlock_rdlock(&coll->engine_lock);
    if (coll->engine)
        knn_engine_info(coll->engine, &info);
    pthread_rwlock_unlock(&coll->engine_lock);
    st->exact_bytes = info.host_bytes;
    st->device_bytes = info.device_bytes;
    st->on_gpu = info.on_gpu;
    st->last_seq = atomic_load(&coll->last_seq);
    st->checkpoint_seq = atomic_load(&coll->checkpoint_seq);
    st->loaded_from_checkpoint = coll->loaded_from_checkpoint;
    st->replayed = coll->replayed;
    st->quarantined = coll->quarantined;
}

int shard_store_stats(shard_store_t *store, const char *name, shard_coll_stats_t **out,
                      size_t *count, shoal_err_t *err)
{
    if (!store || !out || !count)
        return shoal_err_set(err, SHOAL_EINVAL, "stats: NULL argument");
    *out = NULL;
    *count = 0;
    pthread_rwlock_rdlock(&store->colls_lock);
    int rc = 0;
    if (name && *name) {
        shard_coll_t *coll = s_find_or_fail(store, name, err);
        if (!coll) {
            rc = err ? err->code : SHOAL_ENOTFOUND;
            goto done;
        }
        if (!(*out = malloc(sizeof **out))) {
            rc = shoal_err_set(err, SHOAL_ENOMEM, "stats: out of memory");
            goto done;
        }
        s_fill_stats(coll, *out);
        *count = 1;
        goto done;
    }
    *out = malloc((store->ncolls ? store->ncolls : 1) * sizeof **out);
    if (!*out) {
        rc = shoal_err_set(err, SHOAL_ENOMEM, "stats: out of memory");
        goto done;
    }
    for (size_t i = 0; i < store->ncolls; i++)
        s_fill_stats(store->colls[i], &(*out)[i]);
    *count = store->ncolls;
done:
    pthread_rwlock_unlock(&store->colls_lock);
    return rc;
}

int shard_store_devices(shard_store_t *store, int *devices, int max)
{
    if (!store)
        return 0;
    int n = store->ndevices < max ? store->ndevices : max;
    for (int i = 0; i < n; i++)
        devices[i] = store->devices[i];
    return n;
}

/* ------------------------------------------------------------------------ */
/* Checkpoint on request                                                    */
/* ------------------------------------------------------------------------ */

int shard_store_checkpoint(shard_store_t *store, const char *name, shoal_err_t *err)
{
    if (!store)
        return shoal_err_set(err, SHOAL_EINVAL, "checkpoint: no store");
    pthread_mutex_lock(&store->write_mu);
    int rc = 0;
    if (name && *name) {
        shard_coll_t *coll = s_find_or_fail(store, name, err);
        rc = coll ? shard_checkpoint_coll(store, coll, err) : (err ? err->code : SHOAL_ENOTFOUND);
    } else {
        for (size_t i = 0; i < store->ncolls && rc == 0; i++)
            rc = shard_checkpoint_coll(store, store->colls[i], err);
    }
    pthread_mutex_unlock(&store->write_mu);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Snapshots                                                                */
/* ------------------------------------------------------------------------ */

/* <data_dir>/snapshots/<name> (name NULL: the snapshots folder) into buf. */
static int s_snapshot_path(const shard_store_t *store, const char *name, char *buf, size_t cap,
                           shoal_err_t *err)
{
    int len = name ? snprintf(buf, cap, "%s/%s/%s", store->data_dir, SHARD_SNAPSHOTS_DIR, name)
                   : snprintf(buf, cap, "%s/%s", store->data_dir, SHARD_SNAPSHOTS_DIR);
    if (len < 0 || (size_t)len >= cap)
        return shoal_err_set(err, SHOAL_EINVAL, "snapshot: the path under data dir %s is too long",
                             store->data_dir);
    return 0;
}

/*
 * rm -r of a snapshot directory: RocksDB's checkpoints are flat (files
 * only), so one level of subfolders is all this descends. 0 or errno.
 */
static int s_remove_dir(const char *dir, int depth)
{
    DIR *d = opendir(dir);
    if (!d)
        return errno;
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char path[4096];
        int len = snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (len < 0 || (size_t)len >= sizeof path) {
            rc = ENAMETOOLONG;
            continue;
        }
        struct stat st;
        if (lstat(path, &st) != 0)
            continue;
        if (S_ISDIR(st.st_mode))
            rc = depth > 0 ? s_remove_dir(path, depth - 1) : EISDIR;
        else if (unlink(path) != 0)
            rc = errno;
    }
    closedir(d);
    if (rmdir(dir) != 0 && rc == 0)
        rc = errno;
    return rc;
}

int shard_store_snapshot(shard_store_t *store, const char *name, shard_snapshot_info_t *info,
                         shoal_err_t *err)
{
    shard_snapshot_info_t local;
    if (!info)
        info = &local;
    memset(info, 0, sizeof *info);
    if (!store)
        return shoal_err_set(err, SHOAL_EINVAL, "snapshot: no store");
    int rc = wire_snapshot_name_check("snapshot", name, strlen(name), err);
    char parent[4096];
    if (rc || (rc = s_snapshot_path(store, NULL, parent, sizeof parent, err)) ||
        (rc = s_snapshot_path(store, name, info->dir, sizeof info->dir, err)))
        return rc;
    double t0 = timing_now();
    pthread_mutex_lock(&store->write_mu);
    /* The reserve first: the graph checkpoints and the memtable flush write. */
    if ((rc = shard_space_check(store, 0, err)) != 0) {
        shoal_err_prefix(err, "snapshot \"%s\"", name);
        goto done;
    }
    struct stat st;
    if (stat(info->dir, &st) == 0) {
        rc = shoal_err_set(err, SHOAL_EEXIST, "snapshot \"%s\" exists on this shard (%s)", name,
                           info->dir);
        goto done;
    }
    if ((atomic_load(&store->read_only) || store->reopen || !store->kv) &&
        (rc = s_reopen(store, err)) != 0)
        goto done;
    for (size_t i = 0; i < store->ncolls; i++) {
        shard_coll_t *coll = store->colls[i];
        if (coll->has_checkpoint && !coll->dirty)
            continue;
        if ((rc = shard_checkpoint_coll(store, coll, err)) != 0) {
            shoal_err_prefix(err, "snapshot \"%s\"", name);
            goto done;
        }
        info->graphs_checkpointed++;
    }
    if (mkdir(parent, 0755) != 0 && errno != EEXIST) {
        rc = shoal_err_set(err, SHOAL_EIO, "snapshot \"%s\": making %s: %s", name, parent,
                           strerror(errno));
        goto done;
    }
    if ((rc = kv_checkpoint(store->kv, info->dir, err)) != 0) {
        shoal_err_prefix(err, "snapshot \"%s\"", name);
        if (rc == SHOAL_EIO)
            store->reopen = 1; /* a failed flush leaves RocksDB refusing writes */
        if (stat(info->dir, &st) == 0)
            (void)s_remove_dir(info->dir, 1); /* RocksDB cleans up; in case it could not */
        goto done;
    }
    info->seq = atomic_load(&store->seq);
    info->collections = store->ncolls;
    log_info("snapshot \"%s\": %zu collection(s) up to write %llu in %s", name,
             info->collections, (unsigned long long)info->seq, info->dir);
done:
    info->ms = (timing_now() - t0) * 1000.0;
    pthread_mutex_unlock(&store->write_mu);
    return rc;
}

int shard_store_snapshot_drop(shard_store_t *store, const char *name, int *removed,
                              shoal_err_t *err)
{
    if (removed)
        *removed = 0;
    if (!store)
        return shoal_err_set(err, SHOAL_EINVAL, "snapshot_drop: no store");
    char dir[4096];
    int rc = wire_snapshot_name_check("snapshot_drop", name, strlen(name), err);
    if (rc || (rc = s_snapshot_path(store, name, dir, sizeof dir, err)))
        return rc;
    pthread_mutex_lock(&store->write_mu);
    struct stat st;
    if (lstat(dir, &st) != 0) {
        pthread_mutex_unlock(&store->write_mu);
        return 0;
    }
    int e = S_ISDIR(st.st_mode) ? s_remove_dir(dir, 1) : ENOTDIR;
    pthread_mutex_unlock(&store->write_mu);
    if (e != 0)
        return shoal_err_set(err, SHOAL_EIO, "snapshot_drop: removing %s: %s", dir, strerror(e));
    if (removed)
        *removed = 1;
    log_info("snapshot \"%s\" removed (%s)", name, dir);
    return 0;
}
