/*
 * hnsw.h - the shard's approximate index: a Hierarchical Navigable Small World
 * graph (Malkov & Yashunin, "Efficient and robust approximate nearest neighbor
 * search using Hierarchical Navigable Small World graphs", TPAMI 2018).
 *
 * Parameters are named as in the paper: M links per node on layers >= 1,
 * M0 = 2*M on layer 0, ef_construction while inserting, ef while searching;
 * levels are drawn with mL = 1/ln(M); new links and pruning both use the
 * paper's neighbour-selection heuristic (its Algorithm 4).
 *
 * Ids are the caller's uint64 ids (any value but HNSW_ID_NONE); internally
 * nodes live in dense slots, and a deleted node's slot is reused.
 * The index has no fixed capacity: it grows as vectors arrive.
 * Vectors are copied in. Cosine vectors are normalised on insert and queries
 * on search, after which cosine distance is 1 - dot.
 *
 * Storage (params.storage): a node keeps its vector as float32 (the default),
 * as IEEE binary16 (f16, half the bytes) or as one byte per component (sq8,
 * a quarter; common/quant.h has the formats and kernels). A compressed graph
 * is walked on its codes (the query is folded with the quantizer once per
 * search) and, when the caller gives it a source of float32 rows
 * (hnsw_search_opts_t.rerank_fn), re-ranks the best `rerank` candidates of
 * the walk exactly; without a source it returns the code distances. The
 * index never holds the float32 originals of a compressed graph: the shard
 * keeps them on disk, the benchmark in its own array.
 *
 * Deletion is real: the node is unlinked from every neighbour, the neighbours
 * that lost a link are reconnected among themselves with the same heuristic,
 * and its slot is freed for reuse; a deleted id is never returned. Deletes
 * are cheapest in batches (hnsw_delete_batch), which share one pass over the
 * index.
 *
 * Thread-safety (what may run together):
 *   - hnsw_search, hnsw_search_with, hnsw_get, hnsw_contains, hnsw_count,
 *     hnsw_stats, hnsw_sq8: with each other and with hnsw_insert /
 *     hnsw_insert_batch (per-node link locks); a search's re-rank callback
 *     runs with no lock of the index held;
 *   - hnsw_delete, hnsw_delete_batch, hnsw_save, hnsw_validate: exclusive
 *     (they take the index's write lock and wait for the calls above);
 *   - hnsw_save_shared: with searches, for a caller that keeps every writer
 *     out itself (the shard's store: its write mutex);
 *   - a search that starts after an insert returned sees that vector.
 *
 * Validation: vectors are checked where they enter the shard (the server,
 * then the store, both vec_check.h). hnsw_prepare's finite / zero check on
 * each inserted row and query is the index's guard for direct callers
 * (tests, benches); hnsw_io checks rows loaded from a file (a boundary).
 *
 * Ownership: hnsw_new / hnsw_load return an index the caller frees with
 * hnsw_destroy(&index). The index keeps its own copy of an sq8 quantizer.
 */
#ifndef SHOAL_HNSW_H
#define SHOAL_HNSW_H

#include "common/distance.h"
#include "common/error.h"
#include "common/quant.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HNSW_ID_NONE UINT64_MAX

#define HNSW_M_DEFAULT 16
#define HNSW_M_MIN 2
#define HNSW_M_MAX 128
#define HNSW_EF_CONSTRUCTION_DEFAULT 200
#define HNSW_EF_CONSTRUCTION_MIN 1
#define HNSW_EF_CONSTRUCTION_MAX 4096
#define HNSW_EF_DEFAULT 64
#define HNSW_EF_MIN 1
#define HNSW_EF_MAX 65536
/* Largest k of hnsw_search and hnsw_exact_search: a search keeps max(ef, k)
   candidates, so k is bounded as ef is. */
#define HNSW_K_MAX HNSW_EF_MAX
#define HNSW_DIM_MAX 65536
/*
 * Candidates re-scored in float32 (hnsw_search_opts_t.rerank). The default,
 * 0, is HNSW_RERANK_FACTOR * k: on siftsmall, glove50 and a generated
 * 200,000 x 128 set (intrinsic dimension 64) a pool of 1.5 k already gave
 * the recall of re-ranking the whole ef list (docs/performance.md), and each
 * re-scored candidate is a row read from the caller (on a shard, RocksDB).
 */
#define HNSW_RERANK_FACTOR 2
#define HNSW_RERANK_MIN    1
#define HNSW_RERANK_MAX    HNSW_EF_MAX

/*
 * sq8's quantizer: either the caller's (params.sq8, copied, so the caller
 * may free it after hnsw_new; the coordinator will ship one per collection,
 * trained at `train`, so that every shard and replica encodes alike), or,
 * when params.sq8 is NULL, trained by the first hnsw_insert_batch on its own
 * rows (after normalising them, for cosine). Training from the first batch
 * is for a graph built in one go (the benchmark, tests); vectors inserted
 * later outside the trained range are clamped, which costs recall, so a
 * long-lived collection should pass a quantizer trained on a sample of it.
 * Until a quantizer exists, hnsw_insert on an sq8 index is SHOAL_EINVAL.
 * For cosine, the quantizer must be trained on unit rows: rows are
 * normalised before they are encoded.
 */
typedef struct {
    size_t dim;             /* values per vector, 1..HNSW_DIM_MAX */
    shoal_metric_t metric;  /* L2, IP or cosine */
    size_t M;               /* links per node on layers >= 1; 0 = HNSW_M_DEFAULT */
    size_t ef_construction; /* candidate list while inserting; 0 = default */
    uint64_t seed;          /* level draws; same seed + same inserts = same graph (1 thread) */
    quant_kind_t storage;   /* QUANT_F32 (0: the default), QUANT_F16 or QUANT_SQ8 */
    const quant_sq8_t *sq8; /* sq8 only: the quantizer (copied), or NULL (see above) */
} hnsw_params_t;

typedef struct hnsw hnsw_t;

/* Keep-or-skip callback for filtered search: non-zero keeps id. */
typedef int (*hnsw_filter_fn)(uint64_t id, void *arg);

/*
 * Float32 row source for re-ranking: copies id's original vector (dim floats,
 * as inserted; the index normalises it for cosine) to out. Returns 0,
 * SHOAL_ENOTFOUND to drop the candidate (deleted since the walk), or another
 * negative code, which ends the search with that code. Called without any
 * of the index's locks held, from the searching thread.
 */
typedef int (*hnsw_rerank_fn)(uint64_t id, float *out, void *ctx);

/* What one search asks for (hnsw_search_with). Zero fields take defaults. */
typedef struct {
    size_t k;                 /* results wanted, >= 1 */
    size_t ef;                /* candidate list, HNSW_EF_MIN..HNSW_EF_MAX; searched with max(ef, k) */
    hnsw_filter_fn filter;    /* may be NULL: see hnsw_search */
    void *filter_arg;         /* passed to filter */
    size_t rerank;            /* pool re-scored in float32: 0 = HNSW_RERANK_FACTOR * k, else
                               * HNSW_RERANK_MIN..MAX; raised to k, cut to max(ef, k) */
    hnsw_rerank_fn rerank_fn; /* float32 rows; NULL = return the code distances */
    void *rerank_ctx;         /* passed to rerank_fn */
    int *busy;                /* non-NULL: do not wait while a writer holds or waits for the
                               * whole index (a checkpoint's save, an upsert, a delete):
                               * *busy = 1 and nothing searched then, else *busy = 0 */
} hnsw_search_opts_t;

typedef struct {
    size_t count;            /* live vectors */
    size_t slots;            /* slots allocated (live + free) */
    size_t free_slots;       /* slots freed by deletes, awaiting reuse */
    size_t deletes;          /* deletes since creation or load */
    int max_level;           /* top layer of the graph; -1 when empty */
    size_t M;                /* parameters in effect */
    size_t M0;
    size_t ef_construction;
    size_t bytes;            /* memory held by the index, all of it */
    double bytes_per_vector; /* bytes / count (0 when empty) */
    quant_kind_t storage;    /* how vectors are stored */
    /* bytes split by what they hold (they add up to bytes): */
    size_t bytes_codes;      /* stored vectors (float32 rows or codes), every slot */
    size_t bytes_links;      /* layer-0 counts and links in the blocks, upper link arrays */
    size_t bytes_ids;        /* ids in the node headers and the id map */
    size_t bytes_other;      /* the rest: node headers, block padding, directory, free list,
                              * search scratch (visited tags), quantizer, the index itself */
} hnsw_stats_t;

/* Creates an empty index. NULL on bad parameters (err names the field) or OOM. */
hnsw_t *hnsw_new(const hnsw_params_t *params, shoal_err_t *err);

/* Frees; NULL-safe; sets *index_p to NULL. */
void hnsw_destroy(hnsw_t **index_p);

/*
 * Inserts vec (dim floats) under id. An id already present is replaced
 * (upsert). Non-finite values -> SHOAL_EINVAL; a zero vector with cosine ->
 * SHOAL_EINVAL; f16 storage: a value that overflows binary16 (|v| >= 65520,
 * after normalising) -> SHOAL_EINVAL; sq8 storage with no quantizer yet ->
 * SHOAL_EINVAL. Safe concurrently with searches and other inserts.
 */
int hnsw_insert(hnsw_t *index, uint64_t id, const float *vec, shoal_err_t *err);

/*
 * Inserts n vectors (row after row) on `threads` threads (0 = all cores).
 * Every vector is checked before any is inserted, so a bad one inserts none.
 * On an sq8 index with no quantizer, trains one from these rows first.
 */
int hnsw_insert_batch(hnsw_t *index, const uint64_t *ids, const float *vecs, size_t n,
                      size_t threads, shoal_err_t *err);

/*
 * Removes id: unlinks its node, repairs its neighbours' links, frees its slot.
 * SHOAL_ENOTFOUND when id is not present. A batch of one.
 */
int hnsw_delete(hnsw_t *index, uint64_t id, shoal_err_t *err);

/*
 * Removes every id of ids[0..n) that is present, as one operation: finding
 * the deleted nodes' in-neighbours takes one pass over the index for the
 * whole batch (a pass per id with hnsw_delete), and each neighbour is
 * repaired once. Absent ids are skipped and not counted; an id listed twice
 * counts once. *deleted (may be NULL) gets how many were removed. Exclusive,
 * like hnsw_delete. On failure (SHOAL_ENOMEM) none is removed.
 */
int hnsw_delete_batch(hnsw_t *index, const uint64_t *ids, size_t n, size_t *deleted,
                      shoal_err_t *err);

/*
 * The k nearest live vectors to query, best first (ties by id), searching with
 * a candidate list of max(ef, k). filter (may be NULL) is applied during the
 * walk: rejected nodes are still traversed but never returned. Writes k ids
 * and dists (padded with HNSW_ID_NONE / +INFINITY). Returns the number found
 * (>= 0) or a negative error code.
 */
int hnsw_search(const hnsw_t *index, const float *query, size_t k, size_t ef,
                hnsw_filter_fn filter, void *filter_arg, uint64_t *ids, float *dists,
                shoal_err_t *err);

/*
 * hnsw_search with every option: opts->k, ->ef, ->filter as above; on a
 * compressed graph with opts->rerank_fn, the `rerank` nearest candidates by
 * code distance are fetched through rerank_fn and re-scored in float32 and
 * the best k of those are returned with exact distances (a candidate the
 * source reports SHOAL_ENOTFOUND is dropped). Without rerank_fn, or on f32
 * storage (whose distances are already exact; rerank_fn is then never
 * called), the walk's own distances are returned. Same return as hnsw_search;
 * with opts->busy, 0 and ids / dists untouched when *busy says it would wait.
 */
int hnsw_search_with(const hnsw_t *index, const float *query, const hnsw_search_opts_t *opts,
                     uint64_t *ids, float *dists, shoal_err_t *err);

/*
 * Exact search over the graph's own storage (no walk): the k nearest live
 * vectors by float32 distance, best first, ties by id, exactly what a float32
 * brute-force scan returns. f32: a scan of the rows. f16 / sq8: a scan of the
 * codes whose error bound (common/quant.h) selects every row that could be
 * in the true top-k, each re-scored through opts->rerank_fn (required: else
 * SHOAL_EINVAL). Uses opts->k, ->filter, ->rerank_fn, ->rerank_ctx; ef and
 * rerank are ignored. *rescored (may be NULL) receives how many rows the
 * source was asked for. hnsw_exact.c says how and what it costs. Same
 * return as hnsw_search.
 */
int hnsw_exact_search(const hnsw_t *index, const float *query, const hnsw_search_opts_t *opts,
                      uint64_t *ids, float *dists, size_t *rescored, shoal_err_t *err);

/* Non-zero when id is present. */
int hnsw_contains(const hnsw_t *index, uint64_t id);

/*
 * Copies id's stored vector (normalised, for cosine) to out. SHOAL_ENOTFOUND.
 * On f16 or sq8 storage this is the decoded code, so approximate: within
 * binary16 rounding (f16) or half a quantizer step per component (sq8) of
 * what was inserted; the exact vector lives with the caller.
 */
int hnsw_get(const hnsw_t *index, uint64_t id, float *out, shoal_err_t *err);

size_t hnsw_count(const hnsw_t *index);
size_t hnsw_dim(const hnsw_t *index);
shoal_metric_t hnsw_metric(const hnsw_t *index);
quant_kind_t hnsw_storage(const hnsw_t *index);
/* sq8 storage: the quantizer, borrowed for the index's lifetime; else NULL. */
const quant_sq8_t *hnsw_sq8(const hnsw_t *index);
void hnsw_stats(const hnsw_t *index, hnsw_stats_t *stats);

/*
 * Serialises the whole index through write (called with consecutive pieces;
 * returns 0 or a negative code, which aborts the save). The format starts
 * with a header: magic, format version, endianness marker, dim, metric,
 * parameters, counts, storage kind; then the sq8 quantizer's record, then
 * the nodes with their codes. hnsw_io.c has the layout (version 2; version 1
 * files, float32 only, still load); docs/architecture.md describes it.
 */
typedef int (*hnsw_write_fn)(void *ctx, const void *data, size_t len);
int hnsw_save(const hnsw_t *index, hnsw_write_fn write, void *ctx, shoal_err_t *err);

/*
 * hnsw_save under the index's read lock, so searches go on while a large
 * graph is serialised (at a million vectors that is seconds with the
 * writes). The caller must keep every writer out for the whole call: no
 * insert, delete, validate or sq8 training may run meanwhile; the read lock
 * alone does not stop inserts (they take it too). Same output and return.
 */
int hnsw_save_shared(const hnsw_t *index, hnsw_write_fn write, void *ctx, shoal_err_t *err);

/* Convenience: the serialised index in one malloc'd buffer (the caller frees). */
int hnsw_save_buffer(const hnsw_t *index, uint8_t **blob, size_t *len, shoal_err_t *err);

/*
 * Rebuilds an index from a blob written by hnsw_save. Every count, offset and
 * link is checked against the blob's size and the format's rules: a corrupt or
 * crafted blob gives NULL with SHOAL_ECORRUPT (or SHOAL_EUNSUPPORTED for an
 * unknown version) and never a crash or an over-read; so does a corrupt
 * quantizer record (SHOAL_ECORRUPT naming it).
 */
hnsw_t *hnsw_load(const void *blob, size_t len, shoal_err_t *err);

/*
 * Checks the graph's invariants: link counts within M / M0, no link to a free
 * slot or to itself, no duplicate links, every node's links on a layer point
 * to nodes that reach that layer, the entry point is live and at the top
 * level, the id map and the slots agree. Returns 0 or SHOAL_EINTERNAL naming
 * the first broken invariant.
 */
int hnsw_validate(const hnsw_t *index, shoal_err_t *err);

#ifdef __cplusplus
}
#endif

#endif
