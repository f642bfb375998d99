/*
 * flat.h - the exact k-NN engine's CPU side: a flat store of vectors and an
 * exact search over it.
 *
 * The store keeps vectors contiguous (row after row, dim floats each) so that a
 * batch of queries against it is one matrix product: for a tile of queries Q
 * and a tile of stored rows X, Q X^T is one cblas_sgemm (OpenBLAS), and
 *     L2:      |q|^2 + |x|^2 - 2 q.x   (|x|^2 kept per row, |q|^2 per query)
 *     IP:      -q.x
 *     cosine:  1 - q.x                 (rows normalised on add, queries on search)
 * A fused pass then keeps, per query, every row that may be among its k best
 * given the GEMM form's rounding error (a bound that grows with |q|^2 + |x|^2,
 * derived in flat.c), and re-scores those with distance.h's pair kernels.
 * Few queries skip the GEMM and run distance.h's batch kernels instead (the
 * switch point, FLAT_GEMM_MIN_QUERIES, was measured, see docs/performance.md),
 * with the same re-scoring. Either way a search returns the top k by the
 * pair kernels' distance (L2: sum (q_i - x_i)^2), ties broken by id: the same
 * ids and distances on every path, also among near-duplicates.
 *
 * Memory stays bounded whatever nq is: distances are computed one tile at a
 * time, tiles sized from a budget (flat_search_opts_t.mem_budget) and never
 * larger than the search needs. A calling thread keeps up to
 * FLAT_SCRATCH_KEEP_MAX bytes of tiles and candidate lists between searches.
 *
 * Rows move: removing a row moves the last row into its place, keeping the
 * store dense for the GEMM. flat_store_remove reports the move so a mirror
 * (the GPU copy, gpu/knn.c) can apply the same one.
 *
 * Builds without OpenBLAS (SHOAL_NO_BLAS, as on a GPU host that has only the
 * CUDA toolkit): the batch path then uses the SIMD kernels for every query.
 *
 * Validation: vectors are checked where they enter a process (vec_check.h).
 * flat_store_add (vec_check_rows) and flat_search (vec_check_engine_query)
 * run that same one check as the library's guard for direct callers (tests,
 * benches, the exact engine's GPU front): nothing inside re-checks.
 *
 * Thread-safety: a store is not locked; the caller serialises writers against
 * everything else. flat_search only reads and runs its own threads (none
 * for small GEMM searches, see FLAT_THREAD_WORK_DEFAULT); any number of threads
 * may search the same store at once.
 */
#ifndef SHOAL_FLAT_H
#define SHOAL_FLAT_H

#include "common/distance.h"
#include "common/error.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FLAT_K_MAX 65536                      /* largest k a search accepts */
#define FLAT_MEM_BUDGET_DEFAULT (256u << 20) /* bytes for distance tiles, all threads */
#define FLAT_NO_ROW SIZE_MAX
/* Batches of at least this many queries take the GEMM path. Measured on
 * 100k x 128, k=10, 2 cores: the kernels win up to 16 queries (2-3x at 1-8),
 * the two are even at 32-48, GEMM wins from 64 (table: docs/performance.md). */
#define FLAT_GEMM_MIN_QUERIES 32
/* Multiply-adds (nq * n * dim) every thread of a GEMM search gets at least;
 * a smaller search runs on fewer threads, down to the calling thread alone
 * (no thread started). Below this, starting a thread, its sgemm packing and
 * merging its lists cost more than its share of the scan saves. On siftsmall
 * (10k x 128), k=10, 2 cores, one thread beat two at 100 queries (1.3e8
 * multiply-adds: 4.9 vs 7.0 ms). The kernel path (few queries, bound by
 * memory) is not limited by this. */
#define FLAT_THREAD_WORK_DEFAULT ((size_t)1 << 26)
/* Bytes of tile buffers a thread that calls flat_search keeps between calls
 * (freed when it exits), so that repeated small searches do not fault in
 * fresh pages every time; larger tiles are allocated and freed per call. */
#define FLAT_SCRATCH_KEEP_MAX (16u << 20)

typedef struct flat_store flat_store_t;

/* Read-only view of a store's rows, for searching and for mirroring. */
typedef struct {
    const float *vecs;     /* n x dim, normalised for cosine */
    const uint64_t *ids;   /* n caller ids */
    const float *norms_sq; /* n squared norms |x|^2 */
    size_t n;              /* rows */
    size_t dim;            /* floats per row */
    shoal_metric_t metric; /* metric the rows were stored for */
} flat_view_t;

typedef struct {
    size_t threads;     /* at most this many; 0 = every online core */
    size_t mem_budget;  /* bytes for distance tiles; 0 = FLAT_MEM_BUDGET_DEFAULT */
    int force_path;     /* 0 = choose; 1 = always kernels+heap; 2 = always GEMM */
    size_t thread_work; /* GEMM: least multiply-adds per thread; 0 = FLAT_THREAD_WORK_DEFAULT */
} flat_search_opts_t;

/* Creates an empty store for vectors of dim floats. NULL on error. */
flat_store_t *flat_store_new(size_t dim, shoal_metric_t metric, shoal_err_t *err);

/* Frees; NULL-safe; sets *store_p to NULL. */
void flat_store_destroy(flat_store_t **store_p);

/*
 * Adds n vectors (row after row) under ids. An id already present has its row
 * overwritten in place (upsert). Non-finite values, or a zero vector under
 * cosine, are SHOAL_EINVAL and nothing is added. Ids must not be TOPK_ID_NONE.
 * New ids are appended as consecutive rows after the current last one;
 * overwritten rows keep their place (a mirror re-copies both).
 */
int flat_store_add(flat_store_t *store, const uint64_t *ids, const float *vecs, size_t n,
                   shoal_err_t *err);

/*
 * Removes id. Returns SHOAL_ENOTFOUND when it is absent. When the store's last
 * row was moved into the freed row, *moved_from / *moved_to say so; otherwise
 * both are FLAT_NO_ROW. Either pointer may be NULL.
 */
int flat_store_remove(flat_store_t *store, uint64_t id, size_t *moved_from, size_t *moved_to,
                      shoal_err_t *err);

/* Row of id, or FLAT_NO_ROW. */
size_t flat_store_row(const flat_store_t *store, uint64_t id);

size_t flat_store_count(const flat_store_t *store);
size_t flat_store_dim(const flat_store_t *store);
shoal_metric_t flat_store_metric(const flat_store_t *store);

/* Bytes held (rows, ids, norms, id map). */
size_t flat_store_bytes(const flat_store_t *store);

/* The rows as they are now; valid until the next add or remove. */
flat_view_t flat_store_view(const flat_store_t *store);

/*
 * Exact k nearest rows of view for each of nq queries, by distance.h's pair
 * kernels (the distances returned): ids[q*k ..] and
 * dists[q*k ..] best first (ties by id), padded with TOPK_ID_NONE / +INFINITY
 * when k > n. dists may be NULL. opts may be NULL (defaults).
 * k in 1..FLAT_K_MAX; non-finite queries are SHOAL_EINVAL.
 */
int flat_search(const flat_view_t *view, const float *queries, size_t nq, size_t k,
                const flat_search_opts_t *opts, uint64_t *ids, float *dists, shoal_err_t *err);

/* Non-zero when this build computes the batch path with OpenBLAS. */
int flat_have_blas(void);

#ifdef __cplusplus
}
#endif

#endif
