/*
 * store.h - a shard's collections, durable: the layer between the shard's
 * sockets (shard/server.c) and its algorithms.
 *
 * Storage per collection (f32 | f16 | sq8, common/quant.h). An f32 collection
 * holds its vectors twice in RAM: an HNSW graph (shard/hnsw.h) for approximate
 * search, and the exact engine (gpu/knn.h: GPU when present, CPU otherwise)
 * for exact search and large batches. An f16 or sq8 collection holds one copy
 * in RAM, the graph's codes: the walk runs on codes and re-ranks its best
 * candidates in float32 read from RocksDB, exact search scans the codes with
 * their error bound and re-scores in float32 only the rows that could be in
 * the top-k (hnsw_exact_search), and get / list export read RocksDB. sq8's
 * quantizer (per-dimension min/max) comes with the collection's first insert
 * batch (the coordinator's, trained at `train`), or is trained on that batch
 * when none came, and is written in that batch's RocksDB write, with the
 * "C/" record. RocksDB (net/kv.h) holds what survives a crash:
 *   - every insert and delete batch is written to RocksDB (WAL on, fsync when
 *     opts.sync) and only then applied to the indexes and acknowledged, so an
 *     acknowledged write survives kill -9;
 *   - each write batch gets the next sequence number; the HNSW graph is
 *     checkpointed (hnsw_save) in the background every checkpoint_every
 *     inserts or checkpoint_secs seconds, and at close, tagged with the last
 *     sequence number it covers;
 *   - opening loads the newest valid checkpoint and replays only the writes
 *     after it; a corrupt checkpoint is detected, skipped with a warning, and
 *     the graph is rebuilt from the stored vectors.
 * Every persisted record carries a magic number and a format version; a data
 * dir written by an incompatible version is refused with a clear message.
 * A stored vector that fails its checks at open (malformed record, or a row
 * vec_check refuses) does not stop the open: it is moved to a quarantine key
 * range, logged once with its collection and id, counted in stats
 * (quarantined), and the rest is served.
 *
 * Vectors given to insert and search pass vec_check (common/vec_check), the
 * rule the shard server also applies where a request enters the process.
 * The store's own call (shard_check_vector) is the guard for its direct
 * callers (tests, tools): through the server a bad row never gets here.
 *
 * Disk space: before every write (create, drop, insert, delete, checkpoint)
 * the data dir's free space is read (statvfs); a write that would leave less
 * than opts.min_free_bytes free is refused with SHOAL_EIO, nothing written,
 * and counted. RocksDB itself never runs out of space that way (it aborts on
 * some out-of-space paths), reads keep working, and writes resume by
 * themselves once space is freed. Opening a data dir that is already under
 * the reserve opens RocksDB read-only (searches, gets and stats served); the
 * first write after space is back reopens it for writing. A RocksDB write
 * that fails with an I/O error anyway has the database reopened before the
 * next write, which clears RocksDB's stopped state.
 * docs/architecture.md ("Shard persistence") describes the key layout.
 *
 * IVF lists. Every stored vector carries the IVF list the coordinator routed
 * it to (WIRE_LIST_NONE when inserted without one), persisted with it. Per
 * list the store counts its vectors (in memory, rebuilt at open), exports
 * them in chunks behind a cursor (a prefix scan of the list's membership key
 * range; the cursor names the last id returned, so it survives restarts) and
 * drops them through the normal delete path. These serve replica repair,
 * rebuilding a wiped shard and moving lists between shards.
 *
 * Search modes: WIRE_MODE_HNSW, WIRE_MODE_EXACT, and WIRE_MODE_AUTO, which
 * uses the exact engine when it runs on a GPU and the batch has at least
 * opts.exact_min_batch queries (or when the collection is so small that exact
 * search is as cheap as the graph), HNSW otherwise. The reply says which ran.
 *
 * Thread-safety: one writer thread calls create, drop, insert, delete,
 * list_drop, checkpoint, snapshot and snapshot_drop; any number of threads
 * call search, get, stats, list_counts and list_export at the same time
 * (list_export holds the write lock for one chunk: it reads RocksDB, which a
 * write may reopen). A search that starts after an insert returned sees its
 * vectors.
 *
 * Ownership: shard_store_open returns a store the caller closes with
 * shard_store_close(&store), which checkpoints every collection first.
 */
#ifndef SHOAL_SHARD_STORE_H
#define SHOAL_SHARD_STORE_H

#include "common/distance.h"
#include "common/error.h"
#include "common/quant.h"
#include "net/wire_types.h"

#include <stddef.h>
#include <stdint.h>

#define SHARD_CHECKPOINT_EVERY_DEFAULT 100000 /* inserts */
#define SHARD_CHECKPOINT_SECS_DEFAULT 300.0
#define SHARD_EXACT_MIN_BATCH_DEFAULT 1024    /* queries; see docs/performance.md */
/* Free space kept on the data dir's filesystem: above RocksDB's memtable
 * (64 MiB, flushed as one file) with room for a compaction's output. */
#define SHARD_MIN_FREE_BYTES_DEFAULT (256u << 20)

typedef struct {
    const char *data_dir;      /* RocksDB directory (created if absent) */
    const char *device;        /* exact engine: "auto", "cpu", "gpu:0,1" */
    size_t threads;            /* threads for index builds and batch searches; 0 = all cores */
    int sync;                  /* non-zero: fsync the WAL before acknowledging a write */
    size_t checkpoint_every;   /* inserts between checkpoints; 0 = default */
    double checkpoint_secs;    /* seconds between checkpoints with writes; 0 = default */
    size_t exact_min_batch;    /* auto mode: smallest batch sent to a GPU exact engine; 0 = default */
    size_t hnsw_M;             /* default M for new collections; 0 = HNSW_M_DEFAULT */
    size_t hnsw_ef_construction; /* default; 0 = HNSW default */
    size_t hnsw_ef;            /* default search ef; 0 = HNSW_EF_DEFAULT */
    size_t min_free_bytes;     /* writes refused under this much free space; 0 = default */
} shard_store_opts_t;

typedef struct shard_store shard_store_t;

/* Per-collection figures for stats. */
typedef struct {
    char name[WIRE_NAME_MAX + 1]; /* collection name */
    size_t dim;                   /* vector dimension */
    shoal_metric_t metric;        /* distance */
    size_t M, ef_construction;    /* HNSW parameters */
    size_t count;                 /* live vectors */
    size_t deleted;               /* ids deleted since the store opened */
    size_t hnsw_bytes;            /* memory of the graph */
    quant_kind_t storage;         /* f32 | f16 | sq8 */
    uint32_t quantizer_crc;       /* sq8: CRC-32 of its quantizer's record (replicas given the
                                   * coordinator's agree); 0 when it has none yet */
    /* the graph's bytes by what they hold (they add up to hnsw_bytes): */
    size_t bytes_codes;           /* stored rows or codes */
    size_t bytes_links;           /* links */
    size_t bytes_ids;             /* ids and the id map */
    size_t bytes_other;           /* headers, padding, scratch, quantizer */
    size_t exact_bytes;           /* host memory of the exact engine */
    size_t device_bytes;          /* GPU memory of the exact engine */
    int on_gpu;                   /* exact engine runs on GPUs */
    uint64_t last_seq;            /* newest write applied */
    uint64_t checkpoint_seq;      /* newest write covered by the stored checkpoint */
    int loaded_from_checkpoint;   /* 1 when opening loaded the graph rather than rebuilding */
    size_t replayed;              /* writes replayed after the checkpoint at open */
    size_t quarantined;           /* stored rows held in quarantine (bad at some open) */
} shard_coll_stats_t;

/* The data dir's space, for stats. */
typedef struct {
    uint64_t free_bytes;     /* free space now (statvfs; 0 when it cannot be read) */
    uint64_t min_free_bytes; /* the reserve writes keep */
    uint64_t writes_refused; /* writes refused for space since open */
    int read_only;           /* RocksDB is open read-only (opened under the reserve) */
} shard_disk_stats_t;

/* Opens (creating if needed) and recovers every collection. NULL on error. */
shard_store_t *shard_store_open(const shard_store_opts_t *opts, shoal_err_t *err);

/* Checkpoints every collection, stops background work, closes; NULL-safe. */
void shard_store_close(shard_store_t **store_p);

/* Closes without the final checkpoint (tests of recovery; a second signal). */
void shard_store_abandon(shard_store_t **store_p);

/* A collection's parameters (shard_store_create_with). Zero M / ef_construction: defaults. */
typedef struct {
    size_t dim;              /* vector dimension */
    shoal_metric_t metric;   /* distance */
    size_t M;                /* HNSW links per node; 0 = the store's default */
    size_t ef_construction;  /* HNSW build candidates; 0 = the store's default */
    quant_kind_t storage;    /* f32 (0, the default), f16 or sq8 (see the top of the file) */
} shard_coll_params_t;

/* An f32 collection (shard_store_create_with's shorthand). */
int shard_store_create(shard_store_t *store, const char *name, size_t dim,
                       shoal_metric_t metric, size_t M, size_t ef_construction,
                       shoal_err_t *err);

/*
 * Creates a collection; SHOAL_EEXIST when the name is taken, SHOAL_EINVAL
 * naming a bad parameter. An sq8 collection's quantizer is trained on its
 * first insert batch and persisted with it.
 */
int shard_store_create_with(shard_store_t *store, const char *name, const shard_coll_params_t *p,
                            shoal_err_t *err);

int shard_store_drop(shard_store_t *store, const char *name, shoal_err_t *err);

/*
 * Inserts (upserts) n vectors of dim floats. dim must be the collection's
 * (SHOAL_EDIM otherwise, naming both); a row vec_check refuses is
 * SHOAL_EINVAL naming the row. Durable (per opts.sync) and searchable when it returns.
 * *seq (may be NULL) receives the batch's sequence number.
 */
int shard_store_insert(shard_store_t *store, const char *name, const uint64_t *ids,
                       const float *vecs, size_t n, size_t dim, uint64_t *seq, shoal_err_t *err);

/*
 * shard_store_insert with each row's IVF list: lists (NULL: every row
 * WIRE_LIST_NONE) has n entries. An upsert that gives an id another list
 * moves it to that list.
 */
int shard_store_insert_lists(shard_store_t *store, const char *name, const uint64_t *ids,
                             const float *vecs, const uint32_t *lists, size_t n, size_t dim,
                             uint64_t *seq, shoal_err_t *err);

/*
 * shard_store_insert_lists with the collection's sq8 quantizer record (qrec,
 * qlen bytes; NULL: none): an sq8 collection that has no quantizer yet takes
 * this one (SHOAL_ECORRUPT / EINVAL when it does not read or has another dim)
 * instead of training one on the batch; otherwise it is ignored.
 */
int shard_store_insert_quantized(shard_store_t *store, const char *name, const uint64_t *ids,
                                 const float *vecs, const uint32_t *lists, size_t n, size_t dim,
                                 const uint8_t *qrec, size_t qlen, uint64_t *seq, shoal_err_t *err);

/* Deletes n ids; absent ids are skipped. *deleted and *seq may be NULL. */
int shard_store_delete(shard_store_t *store, const char *name, const uint64_t *ids, size_t n,
                       size_t *deleted, uint64_t *seq, shoal_err_t *err);

/* Largest k of shard_store_search (1..SHARD_STORE_K_MAX; above it
   SHOAL_ELIMIT): what HNSW and the exact engine both take (store_search.c
   checks that at compile time). */
#define SHARD_STORE_K_MAX 65536

/*
 * Searches nq queries (dim floats each) for k results each into ids / dists
 * (nq x k, best first, padded with TOPK_ID_NONE / +INFINITY), k in
 * 1..SHARD_STORE_K_MAX. ef = 0 uses the default. filter (nfilter ids, may
 * be NULL) restricts results to those ids. *used (may be NULL) receives the
 * mode that ran.
 */
int shard_store_search(shard_store_t *store, const char *name, const float *queries, size_t nq,
                       size_t dim, size_t k, wire_mode_t mode, size_t ef,
                       const uint64_t *filter, size_t nfilter, uint64_t *ids, float *dists,
                       wire_mode_t *used, shoal_err_t *err);

/*
 * shard_store_search of one query for a thread that must not block (the
 * server's loop): it runs only when it is quick, a graph walk of an f32
 * collection with no filter and an ef (after the default) of at most
 * ef_max, and only when no lock it needs is held or wanted by a writer.
 * Otherwise nothing is searched, *deferred = 1 and 0 is returned: run
 * shard_store_search where waiting is fine. The request's own errors
 * (unknown collection, dim, a bad query, k) are returned as there.
 */
int shard_store_search_quick(shard_store_t *store, const char *name, const float *query,
                             size_t dim, size_t k, wire_mode_t mode, size_t ef, size_t ef_max,
                             uint64_t *ids, float *dists, wire_mode_t *used, int *deferred,
                             shoal_err_t *err);

/* Copies the stored vectors of n ids into vecs (n x dim; zeros where absent). */
int shard_store_get(shard_store_t *store, const char *name, const uint64_t *ids, size_t n,
                    uint8_t *found, float *vecs, shoal_err_t *err);

/* The collection's dimension, or SHOAL_ENOTFOUND. */
int shard_store_dim(shard_store_t *store, const char *name, size_t *dim, shoal_err_t *err);

/* The collection's dimension and metric (metric may be NULL), or SHOAL_ENOTFOUND. */
int shard_store_shape(shard_store_t *store, const char *name, size_t *dim, shoal_metric_t *metric,
                      shoal_err_t *err);

/* Checkpoints one collection (name) or all (name NULL or ""), now. */
int shard_store_checkpoint(shard_store_t *store, const char *name, shoal_err_t *err);

/*
 * Stats of one collection (name) or all (NULL / ""): *out is a malloc'd array
 * of *count entries that the caller frees.
 */
int shard_store_stats(shard_store_t *store, const char *name, shard_coll_stats_t **out,
                      size_t *count, shoal_err_t *err);

/*
 * The collection's lists with at least one vector, ascending, and their
 * counts: *lists and *counts are malloc'd arrays of *n entries the caller
 * frees (NULL when *n is 0).
 */
int shard_store_list_counts(shard_store_t *store, const char *name, uint32_t **lists,
                            uint64_t **counts, size_t *n, shoal_err_t *err);

/*
 * One chunk of list's rows in id order: up to limit (>= 1) ids and their
 * stored vectors, bit for bit as inserted, into ids (limit) and vecs (limit x
 * the collection's dim); *n receives the rows. cursor "" (or NULL) starts at
 * the list's first id, else it is a previous call's next for the same list
 * (SHOAL_EINVAL otherwise). next (WIRE_CURSOR_MAX + 1 bytes) receives the
 * cursor to go on with; *done is 1 when no rows followed this chunk (a chunk
 * of limit rows may be followed by an empty one with done). Rows written
 * during a walk may or may not be seen, by id order.
 */
int shard_store_list_export(shard_store_t *store, const char *name, uint32_t list,
                            const char *cursor, size_t limit, uint64_t *ids, float *vecs,
                            size_t *n, char *next, int *done, shoal_err_t *err);

/*
 * Deletes every vector of list, as one delete batch (log entry, graph and
 * exact engine kept consistent). *removed and *seq may be NULL.
 */
int shard_store_list_drop(shard_store_t *store, const char *name, uint32_t list, size_t *removed,
                          uint64_t *seq, shoal_err_t *err);

/* ------------------------------------------------------------------------ */
/* Snapshots (docs/protocol.md 4.13-4.14)                                   */
/* ------------------------------------------------------------------------ */

/* Where snapshots live, under the data dir: <data_dir>/SHARD_SNAPSHOTS_DIR/<name>. */
#define SHARD_SNAPSHOTS_DIR "snapshots"

/* What shard_store_snapshot did. */
typedef struct {
    char dir[4096];             /* the snapshot's directory */
    uint64_t seq;               /* the last write sequence number the copy holds */
    size_t collections;         /* collections in it */
    size_t graphs_checkpointed; /* graphs checkpointed first (changed since their last one) */
    double ms;                  /* how long writes were held */
} shard_snapshot_info_t;

/*
 * Copies the whole database to <data_dir>/snapshots/<name> (a RocksDB
 * checkpoint: hard links where the filesystem allows), a writer call: it
 * holds every write while it runs. Each collection whose graph changed since
 * its stored checkpoint is checkpointed first, so the copy loads every graph
 * as it is now (no replay, which could build a different graph) and answers
 * searches exactly as this store does. name must pass
 * wire_snapshot_name_check (SHOAL_EINVAL). SHOAL_EEXIST when the directory
 * exists; SHOAL_EIO under the free-space reserve or when the copy fails
 * (nothing is left behind then). info (may be NULL) says what was done.
 * Why inside the data dir: RocksDB deletes only the files it named itself
 * in its directory, so a subdirectory is safe there, and the snapshot stays
 * on the data dir's filesystem, where hard links work.
 */
int shard_store_snapshot(shard_store_t *store, const char *name, shard_snapshot_info_t *info,
                         shoal_err_t *err);

/*
 * Removes <data_dir>/snapshots/<name> and everything in it (a writer call).
 * *removed (may be NULL) is 1 when it existed, 0 when not (not an error).
 */
int shard_store_snapshot_drop(shard_store_t *store, const char *name, int *removed,
                              shoal_err_t *err);

/* The data dir's space figures (any thread). */
void shard_store_disk_stats(shard_store_t *store, shard_disk_stats_t *out);

/* GPU devices the exact engines use (for process stats): writes up to max. */
int shard_store_devices(shard_store_t *store, int *devices, int max);

#endif
