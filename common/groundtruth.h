/*
 * groundtruth.h - exact k nearest neighbours by brute force, on all cores.
 *
 * The reference that tests and benchmarks measure recall against. It is written
 * for being right first and fast second: every query is compared with every
 * base vector using the SIMD kernels of distance.h, candidates go through
 * topk.h's heaps (so ties are broken by id, smaller first), and the work is
 * tiled (a block of queries against a block of base rows) so a base block stays
 * in cache while a query block streams over it. The GEMM-based engine of the
 * exact k-NN issue is the fast path for production; this module stays small.
 *
 * Metrics follow distance.h: L2 -> squared L2, IP -> negated dot, cosine ->
 * 1 - cos (norms computed here; inputs need not be normalised).
 *
 * Ids are row numbers of base (0 .. n-1). When k > n, rows are padded with
 * TOPK_ID_NONE / +INFINITY.
 *
 * Validation: gt_knn refuses non-finite base rows and queries itself, as the
 * guard for its direct callers (tests, benches); zero cosine rows are
 * accepted, which vec_check would not, so its rule is finite only.
 *
 * Thread-safety: pure; spawns and joins its own threads.
 */
#ifndef SHOAL_GROUNDTRUTH_H
#define SHOAL_GROUNDTRUTH_H

#include "common/distance.h"
#include "common/error.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * For each of the nq queries (row after row, dim floats each), the k nearest of
 * the n base rows: ids[q*k .. q*k+k) and dists[q*k ..) best first. dists may be
 * NULL. threads = 0 uses every online core.
 */
int gt_knn(const float *base, size_t n, const float *queries, size_t nq, size_t dim,
           shoal_metric_t metric, size_t k, size_t threads, uint64_t *ids, float *dists,
           shoal_err_t *err);

/*
 * Recall@k of found (nq rows of `found_stride` ids, best first) against truth
 * (nq rows of `truth_stride` ids): the mean over queries of
 * |found[0..k) ∩ truth[0..k)| / k. Both strides must be >= k. Ids
 * TOPK_ID_NONE (and negative truth ids) never match; an id repeated in found
 * counts once. Returns 0 when nq or k is 0.
 */
double gt_recall(const uint64_t *found, size_t found_stride, const int32_t *truth,
                 size_t truth_stride, size_t nq, size_t k);

#ifdef __cplusplus
}
#endif

#endif
