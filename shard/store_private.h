/*
 * store_private.h - what the shard store's files share: the store and
 * collection structures, the on-disk key layout and record formats, and the
 * small helpers (CRC-32) they all use; their id sets are common/idmap's.
 *
 * The store is split by lifecycle stage:
 *   store.c          open/close, the collection table, create/drop,
 *                    insert/delete/get, stats, the background checkpointer;
 *   store_search.c   search: mode choice, threads, filters;
 *   store_persist.c  record codecs, CRC-32, writing checkpoints and loading a
 *                    collection at open (checkpoint + log replay, or rebuild);
 *   store_lists.c    IVF lists: the per-list counts, list_counts, list_export,
 *                    list_drop.
 *
 * Key layout (docs/architecture.md, "Shard persistence"). Keys are bytes,
 * ordered by memcmp; integers inside keys are big-endian so they sort
 * numerically; collection names are 1..WIRE_NAME_MAX of [A-Za-z0-9_.-] (never
 * NUL), so "<name>\0" ends a name unambiguously and a name's keys form one
 * contiguous range [T/<name>\0, T/<name>\1).
 *
 *   "F"                           format record: "SHOALDB1", version, created
 *   "S"                           last sequence number given to a write batch
 *   "C/<name>"                    collection: dim, metric, M, ef_construction;
 *                                 version 2 adds the storage kind and the sq8
 *                                 quantizer's record (once trained)
 *   "V/<name>\0<id u64 BE>"       one vector: header (magic, version, seq of the
 *                                 write that stored it, its IVF list) + dim float32
 *   "M/<name>\0<list u32 BE><id u64 BE>"
 *                                 list membership, empty value: one per "V/" row,
 *                                 so one list's rows are one contiguous key range
 *                                 (export is a prefix scan in id order)
 *   "L/<name>\0<seq u64 BE>"      op log entry: insert|delete + n + n ids; only
 *                                 entries newer than the checkpoint are kept
 *   "K/<name>\0"                  checkpoint header: seq covered, blob length,
 *                                 CRC-32 of the blob, chunk count and base
 *   "K/<name>\0<chunk u32 BE>"    checkpoint chunk: <= 32 MiB of hnsw_save output
 *   "Q/<name>\0<id u64 BE>"       a quarantined vector: a "V/" record that failed
 *                                 its checks at open, moved here as it was
 *
 * "V/" is the truth and "M/" an index of it, always written in the same batch
 * (insert: the new key, and the old one's deletion when an upsert moves the
 * id to another list; delete: the deletion). Readers of "M/" still check each
 * row's "V/" record (list_export, list_drop) and skip a key whose row is gone
 * or names another list: a "V/" record too malformed to say its list moves to
 * quarantine with its "M/" key left behind.
 *
 * Values are little-endian fixed layouts (the structs below, static_assert'ed;
 * the host must be little-endian, which is checked at compile time).
 *
 * Checkpoint chunks alternate between two numbering bases, 0 and 2^31: a new
 * checkpoint writes its chunks under the base the current header does not
 * use, then one batch switches the header to them and deletes the old base's
 * chunks and the log entries the new checkpoint covers. A crash at any point
 * leaves either the old checkpoint or the new one whole.
 *
 * Locks, outermost first:
 *   write_mu          serialises every write: create, drop, insert, delete,
 *                     checkpoint (the API's writer thread and the background
 *                     checkpointer both take it);
 *   colls_lock        the collection table: searches, gets and stats hold it
 *                     for reading for their whole run, so drop (which holds
 *                     it for writing while unlinking) never frees a
 *                     collection under them;
 *   coll->engine_lock the exact engine: searches read, add/remove write;
 *   ckpt_mu           the background thread's wake-up condition only.
 * The HNSW index locks itself (hnsw.h).
 */
#ifndef SHOAL_SHARD_STORE_PRIVATE_H
#define SHOAL_SHARD_STORE_PRIVATE_H

#include "common/error.h"
#include "common/idmap.h"
#include "net/kv.h"
#include "net/kvkeys.h"
#include "net/wire.h"
#include "gpu/knn.h"
#include "shard/hnsw.h"
#include "shard/store.h"

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the store's records are little-endian structs: port the codecs first");

/* ------------------------------------------------------------------------ */
/* Formats                                                                  */
/* ------------------------------------------------------------------------ */

#define SHARD_FORMAT_MAGIC   "SHOALDB1" /* 8 bytes, no NUL stored */
/*
 * The data dir as a whole. 2: vector records carry their IVF list and "M/"
 * keys exist. A version-1 dir is read and upgraded at open (each collection's
 * version-1 rows get list WIRE_LIST_NONE, are rewritten as version 2 with their
 * "M/" key, and then "F" says 2), so a build that knows no lists refuses it
 * rather than quarantining rows it cannot read.
 */
#define SHARD_FORMAT_VERSION    2u
#define SHARD_FORMAT_VERSION_V1 1u

/* Record magics (little-endian u32 of four ASCII letters) and versions. */
#define SHARD_SEQ_MAGIC      0x51455353u /* "SSEQ" */
#define SHARD_COLL_MAGIC     0x4c4f4353u /* "SCOL" */
#define SHARD_VEC_MAGIC      0x43455653u /* "SVEC" */
#define SHARD_LOG_MAGIC      0x474f4c53u /* "SLOG" */
#define SHARD_CKPT_MAGIC     0x54504b53u /* "SKPT" */
#define SHARD_RECORD_VERSION 1u
/* "V/" records: 1 = shard_vec_hdr_t (no list), 2 = shard_vec_hdr2_t. */
#define SHARD_VEC_VERSION_V1 1u
#define SHARD_VEC_VERSION    2u

/* The tags of a collection's key ranges (drop clears them all). */
#define SHARD_TAG_VEC        'V'
#define SHARD_TAG_QUARANTINE 'Q'
#define SHARD_TAG_MEMBER     'M'

#define SHARD_LOG_INSERT 1u
#define SHARD_LOG_DELETE 2u

/* Checkpoint pieces: RocksDB handles large values, but a bounded piece keeps
 * the memtable and the save buffer bounded too. */
#define SHARD_CHUNK_BYTES     (32u << 20)
#define SHARD_CHUNK_BASE_HIGH 0x80000000u /* the second numbering base */

/*
 * Test hook: the chunk size of checkpoints written from now on (0 restores
 * SHARD_CHUNK_BYTES), so tests exercise many chunks with small graphs. The
 * header records the size each checkpoint was written with.
 */
void shard_store_set_chunk_bytes(size_t bytes);

/* "F": 24 bytes. */
typedef struct {
    char magic[8];         /* SHARD_FORMAT_MAGIC */
    uint32_t version;      /* SHARD_FORMAT_VERSION */
    uint32_t reserved;     /* 0 */
    uint64_t created_unix; /* seconds since the epoch when the dir was made */
} shard_format_rec_t;
static_assert(sizeof(shard_format_rec_t) == 24, "format record layout");

/* "S": 16 bytes. */
typedef struct {
    uint32_t magic;   /* SHARD_SEQ_MAGIC */
    uint32_t version; /* SHARD_RECORD_VERSION */
    uint64_t seq;     /* last sequence number written */
} shard_seq_rec_t;
static_assert(sizeof(shard_seq_rec_t) == 16, "seq record layout");

/*
 * "C/<name>": 32 bytes (version 1, f32 storage), or, version 2
 * (SHARD_COLL_VERSION), these 32 bytes, then u32 storage (quant_kind_t),
 * u32 qlen, then qlen bytes of the sq8 quantizer's record (common/quant.h;
 * 0 for f32 and f16, and for sq8 before its first insert trained it).
 */
#define SHARD_COLL_VERSION_V1 1u
#define SHARD_COLL_VERSION    2u
typedef struct {
    uint32_t magic;           /* SHARD_COLL_MAGIC */
    uint32_t version;         /* SHARD_RECORD_VERSION */
    uint32_t dim;             /* floats per vector */
    uint32_t metric;          /* shoal_metric_t */
    uint32_t M;               /* HNSW links per node (resolved, never 0) */
    uint32_t ef_construction; /* HNSW build candidates (resolved) */
    uint64_t created_seq;     /* store sequence number when it was created */
} shard_coll_rec_t;
static_assert(sizeof(shard_coll_rec_t) == 32, "collection record layout");

/* "V/<name>\0<id>", version 1 (read, never written): this header, then dim float32. */
typedef struct {
    uint32_t magic;   /* SHARD_VEC_MAGIC */
    uint32_t version; /* SHARD_VEC_VERSION_V1 */
    uint64_t seq;     /* the write batch that stored this vector */
} shard_vec_hdr_t;
static_assert(sizeof(shard_vec_hdr_t) == 16, "vector header layout");

/* "V/<name>\0<id>", version 2: this header, then dim float32. */
typedef struct {
    uint32_t magic;    /* SHARD_VEC_MAGIC */
    uint32_t version;  /* SHARD_VEC_VERSION */
    uint64_t seq;      /* the write batch that stored this vector */
    uint32_t list;     /* its IVF list, WIRE_LIST_NONE when inserted without one */
    uint32_t reserved; /* 0 */
} shard_vec_hdr2_t;
static_assert(sizeof(shard_vec_hdr2_t) == 24, "vector header (version 2) layout");

/* "L/<name>\0<seq>": this header, then n uint64 ids. */
typedef struct {
    uint32_t magic;    /* SHARD_LOG_MAGIC */
    uint32_t version;  /* SHARD_RECORD_VERSION */
    uint32_t op;       /* SHARD_LOG_INSERT or SHARD_LOG_DELETE */
    uint32_t reserved; /* 0 */
    uint64_t n;        /* ids that follow */
} shard_log_hdr_t;
static_assert(sizeof(shard_log_hdr_t) == 24, "log header layout");

/* "K/<name>\0": 40 bytes. */
typedef struct {
    uint32_t magic;       /* SHARD_CKPT_MAGIC */
    uint32_t version;     /* SHARD_RECORD_VERSION */
    uint64_t seq;         /* every write with seq <= this is in the blob */
    uint64_t blob_len;    /* bytes of hnsw_save output */
    uint32_t crc32;       /* CRC-32 (IEEE) of those bytes */
    uint32_t nchunks;     /* ceil(blob_len / chunk_bytes) */
    uint32_t chunk_base;  /* 0 or SHARD_CHUNK_BASE_HIGH: chunk i is key base + i */
    uint32_t chunk_bytes; /* size of every chunk but the last */
} shard_ckpt_rec_t;
static_assert(sizeof(shard_ckpt_rec_t) == 40, "checkpoint header layout");

/* Longest key: "M/" + name + NUL + u32 + u64. */
#define SHARD_KEY_MAX (2 + WIRE_NAME_MAX + 1 + 4 + 8)

/* ------------------------------------------------------------------------ */
/* In memory                                                                */
/* ------------------------------------------------------------------------ */

/*
 * Vectors per IVF list, for list_counts without a scan: sorted by list (a
 * shard holds some hundreds of lists per collection, and a new list is rare
 * next to the rows that update a count), lists with count 0 removed.
 * Rebuilt at open from the "V/" scan; updated after each write is durable.
 */
typedef struct {
    uint32_t *lists;  /* ascending */
    uint64_t *counts; /* counts[i] vectors in lists[i], never 0 */
    size_t n;         /* lists in use */
    size_t cap;       /* allocated */
} shard_list_counts_t;

typedef struct {
    char name[WIRE_NAME_MAX + 1]; /* collection name */
    size_t dim;                   /* floats per vector */
    shoal_metric_t metric;        /* distance */
    size_t M;                     /* HNSW links per node */
    size_t ef_construction;       /* HNSW build candidates */
    uint64_t created_seq;         /* the store's sequence number at its create ("C/") */
    quant_kind_t storage;         /* how the graph keeps the vectors (f32 | f16 | sq8) */
    quant_sq8_t *sq8;             /* sq8: the quantizer (owned), NULL until the first insert */
    hnsw_t *hnsw;                 /* the graph (locks itself); for f16 / sq8 the only copy
                                   * in RAM: float32 rows are read from RocksDB ("V/") */
    knn_engine_t *engine;         /* f32 only: the exact engine, under engine_lock; NULL for
                                   * f16 / sq8, whose exact search scans the graph's codes */
    pthread_rwlock_t engine_lock; /* searches read, add/remove write */
    int on_gpu;                   /* the engine runs on GPUs */

    /* Persistence state; written under the store's write_mu. */
    int has_checkpoint;     /* a valid checkpoint header is stored */
    uint32_t chunk_base;    /* its chunk numbering base */
    int dirty;              /* changed since the stored checkpoint */
    size_t changes;         /* vectors inserted + deleted since then */
    double checkpoint_time; /* monotonic seconds of the last checkpoint (or open) */

    /* Figures for stats, read without write_mu. */
    _Atomic uint64_t last_seq;       /* newest write applied */
    _Atomic uint64_t checkpoint_seq; /* newest write in the stored checkpoint */
    _Atomic size_t deleted;          /* ids deleted since open */
    int loaded_from_checkpoint;      /* set once at open */
    size_t replayed;                 /* set once at open */
    size_t quarantined;              /* rows in its "Q/" range; set once at open */

    /* Per-list counts: written under write_mu and lists_mu, read under lists_mu. */
    pthread_mutex_t lists_mu;          /* guards list_counts */
    shard_list_counts_t list_counts;   /* vectors per list */
} shard_coll_t;

struct shard_store {
    shard_store_opts_t opts; /* resolved options (strings point at the copies below) */
    char *data_dir;          /* copy of opts.data_dir */
    char *device;            /* copy of opts.device */
    kv_t *kv;                /* the RocksDB (replaced, under write_mu and kv_lock, by a reopen) */
    pthread_rwlock_t kv_lock; /* readers outside write_mu (re-ranking, get) read-lock it */
    _Atomic uint64_t seq;    /* last sequence number written (mirror of "S") */

    /* Disk space (shard_kv_write). */
    _Atomic int read_only;           /* kv is open read-only: reopen before a write */
    int reopen;                      /* a write failed with an I/O error: reopen first */
    _Atomic uint64_t writes_refused; /* writes refused under the reserve */
    _Atomic int space_low;           /* the last check refused (logs each change once) */

    pthread_mutex_t write_mu;    /* serialises writes (see the top of this file) */
    pthread_rwlock_t colls_lock; /* the table below */
    shard_coll_t **colls;        /* collections, in creation/load order */
    size_t ncolls;               /* in use */
    size_t colls_cap;            /* allocated */

    /* Format upgrade at open (SHARD_FORMAT_VERSION's comment). */
    uint32_t format_found; /* "F"'s version as found at open */
    int upgrade_failed;    /* a version-1 row could not be rewritten: "F" stays 1 */

    int devices[KNN_DEVICES_MAX]; /* GPUs the engines use */
    int ndevices;                 /* how many */

    pthread_t ckpt_thread;    /* the background checkpointer */
    int ckpt_running;         /* the thread was started */
    pthread_mutex_t ckpt_mu;  /* guards stop / wake */
    pthread_cond_t ckpt_cond; /* signalled on stop and when a collection is due */
    int ckpt_stop;            /* the thread should exit */
    int ckpt_wake;            /* a collection reached checkpoint_every */
};

/* ------------------------------------------------------------------------ */
/* Helpers shared by the store's files                                      */
/* ------------------------------------------------------------------------ */

/* The collection called name, or NULL. Caller holds write_mu or colls_lock. */
shard_coll_t *shard_coll_find(shard_store_t *store, const char *name);
/* The same after checking the name; NULL with EINVAL / ENOTFOUND in err. */
shard_coll_t *shard_coll_find_or_fail(shard_store_t *store, const char *name, shoal_err_t *err);

/*
 * Keys. Each writes into out (SHARD_KEY_MAX bytes) and returns the length.
 * The tagged ones, "T/<name>\0" and the big-endian integers after it, are
 * net/kvkeys' (the catalog's layout shares them): kvkeys_prefix, kvkeys_u32,
 * kvkeys_u64, kvkeys_range_end ("T/<name>\1"); a member key "M/" is
 * kvkeys_u32_u64(out, SHARD_TAG_MEMBER, name, list, id). Only "C/<name>"
 * (no NUL: the collection record) is the store's own.
 */
size_t shard_key_coll(uint8_t *out, const char *name); /* C/<name> */
/* T/<name>\0<BE64>, under the name the store's tests build "V/" and "L/" keys by. */
static inline size_t shard_key_u64(uint8_t *out, char tag, const char *name, uint64_t v)
{
    return kvkeys_u64(out, tag, name, v);
}

/*
 * The data dir's free space against the reserve: 0 when a write of about
 * bytes leaves at least opts.min_free_bytes free, else SHOAL_EIO saying so,
 * counted in writes_refused. Any thread.
 */
int shard_space_check(shard_store_t *store, uint64_t bytes, shoal_err_t *err);

/*
 * Every write of the store goes through here: shard_space_check on the
 * batch's size, a reopen for writing when the database is read-only or a
 * write failed with an I/O error before, then kv_write. Caller holds
 * write_mu (a reopen replaces store->kv) and prefixes err with what it was
 * writing.
 */
int shard_kv_write(shard_store_t *store, kv_batch_t *batch, int sync, shoal_err_t *err);

/* Queues the "S" record for seq into batch. */
void shard_batch_put_seq(kv_batch_t *batch, uint64_t seq);

/* CRC-32 (IEEE 802.3, reflected, the zlib one). crc = 0 to start. */
uint32_t shard_crc32(uint32_t crc, const void *data, size_t len);

/* ------------------------------------------------------------------------ */
/* store_lists.c                                                            */
/* ------------------------------------------------------------------------ */

/*
 * Adds delta (negative: removes) to list's count. Caller holds write_mu (or
 * owns coll alone, at open). 0, or SHOAL_ENOMEM when a new list's slot
 * cannot be allocated (the count is then low until the next open).
 */
int shard_lists_add(shard_coll_t *coll, uint32_t list, int64_t delta);
void shard_lists_fini(shard_coll_t *coll);

/*
 * Deletes n ids of coll with the write path of shard_store_delete (log entry,
 * "V/" and "M/" keys, indexes, counts); caller holds write_mu. lists (may be
 * NULL) are the ids' lists when the caller read them already.
 */
int shard_delete_locked(shard_store_t *store, shard_coll_t *coll, const uint64_t *ids,
                        const uint32_t *lists, size_t n, size_t *deleted, uint64_t *seq,
                        shoal_err_t *err);

/* ------------------------------------------------------------------------ */
/* store_persist.c                                                          */
/* ------------------------------------------------------------------------ */

/*
 * Decodes a "V/" value of either version for coll: *vec points at its dim
 * floats inside val, *seq (may be NULL) and *list (may be NULL; WIRE_LIST_NONE
 * for version 1) are set. *version (may be NULL) says which it was.
 */
int shard_vec_decode(const shard_coll_t *coll, uint64_t id, const uint8_t *val, size_t vlen,
                     const uint8_t **vec, uint64_t *seq, uint32_t *list, uint32_t *version,
                     shoal_err_t *err);

/*
 * Writes a checkpoint of coll covering every write up to the store's current
 * seq (see the top of this file). Caller holds write_mu.
 */
int shard_checkpoint_coll(shard_store_t *store, shard_coll_t *coll, shoal_err_t *err);

/*
 * At open: fills coll's indexes from the stored state (exact engine from the
 * vectors; graph from the checkpoint + log replay, or rebuilt) and sets its
 * persistence fields and figures.
 */
int shard_coll_load(shard_store_t *store, shard_coll_t *coll, shoal_err_t *err);

/* Decodes a "C/<name>" record's value (either version) into coll's parameters and quantizer. */
int shard_coll_decode(shard_coll_t *coll, const void *val, size_t vlen, shoal_err_t *err);

/* coll's "C/" record (version 2) in a malloc'd buffer; NULL on ENOMEM. */
uint8_t *shard_coll_encode(const shard_coll_t *coll, size_t *len);

/*
 * Copies id's float32 row, as inserted, from RocksDB into out (coll->dim
 * floats): 0, SHOAL_ENOTFOUND, or an error. Any thread (takes kv_lock).
 */
int shard_row_read(shard_store_t *store, const shard_coll_t *coll, uint64_t id, float *out);

/* shard_row_read as an hnsw re-rank source; ctx is a shard_row_ctx_t. */
typedef struct {
    shard_store_t *store;
    const shard_coll_t *coll;
} shard_row_ctx_t;
int shard_row_source(uint64_t id, float *out, void *ctx);

/* New empty indexes (graph and exact engine) for coll's parameters. */
int shard_coll_make_indexes(shard_store_t *store, shard_coll_t *coll, shoal_err_t *err);

/* One input vector v, the i-th "row" or "query" (what): vec_check under the
 * collection's metric, the message naming the collection and the row. */
int shard_check_vector(const shard_coll_t *coll, const char *what, size_t i, const float *v,
                       shoal_err_t *err);

#endif
