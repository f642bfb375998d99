/*
 * knn_exact.h - private: how the exact engine turns a device's candidates
 * into the CPU engine's answer, bit for bit (gpu/knn.c uses it; plain C, so
 * the Criterion suites check it without a GPU).
 *
 * The contract. A device scan (cuBLAS GEMM, or fp16 rows) ranks rows by the
 * GEMM form of the distance (|q|^2 + |x|^2 - 2 q.x, -q.x, 1 - q.x), which
 * for L2 cancels: its error scales with the norms, not the distance, exactly
 * as the CPU's own GEMM scan (common/flat.c, "Candidates"). The CPU answer is
 * the top k by the documented distance, the pair kernels' (dist_kernels()),
 * ties by id. So the device returns kc > k candidates ordered by the scan
 * distance (ties by id), and here:
 *   1. proof: with S = |q|^2 + max |x|^2 and the CPU's error bound
 *      slack(d) = (dim + 8) FLT_EPSILON (S + |d|) + (dim + 8) FLT_MIN,
 *      a row outside the candidates has a scan distance >= the kc-th's d_c,
 *      so its exact distance is >= L = d_c - slack(d_c) (d - slack(d) grows
 *      with d); the k-th best exact distance is <= U = d_k + slack(d_k). When
 *      L > U no row outside can be in the top k. When the candidates are all
 *      the rows the scan saw (fewer than kc came back), it holds trivially.
 *   2. re-score: the candidates whose lo = d - slack(d) <= U are re-scored
 *      with the CPU's pair kernels and sorted by (distance, id); the first k
 *      are the CPU's answer, distances included, on the same machine.
 *   3. a query whose proof fails (a cluster of near-duplicates wider than
 *      the candidates) is answered by the CPU engine itself.
 * Why the CPU's slack also covers a device scan (u = FLT_EPSILON / 2, first
 * order, L2): the device sums |q|^2 itself in fp32, any order (gamma_dim
 * |q|^2 more than the CPU's scan, whose |q|^2 is summed in double), and
 * cuBLAS's q.x has the same gamma_dim bound in any order, with or without
 * FMA (no TF32: the math mode is CUBLAS_DEFAULT_MATH), so scan vs true
 * distance is within (2 dim + 4) u S + u |d|, the pair kernel's within
 * (dim + 2) u |d|; the slack, (dim + 8) FLT_EPSILON = (2 dim + 16) u times
 * (S + |d|), is above both together. IP has no |q|^2 term; cosine adds the
 * device's scaling of q by 1 / sqrtf (about (dim / 2 + 2) u), still inside.
 * TF32 or fp16 candidates would need a bound of their own (fp16: below).
 *
 * The re-score runs on the host because only the host's pair kernels give
 * the CPU's bits: the SIMD kernel is chosen at run time (AVX2, AVX-512,
 * scalar) and each sums in its own order. It costs nq x (k + near ties) x dim
 * multiply-adds, what the CPU engine spends on its own final re-score.
 *
 * A NaN scan distance (the GEMM form overflowing: |q|^2 + |x|^2 = inf, and
 * 2 q.x = inf) says nothing about the row, so the device ranks it first, as
 * -INFINITY (fmaxf(NaN, 0) used to rank it as 0, a perfect match): it is
 * always re-scored, and one in the first k makes U infinite, so the proof
 * holds only when the candidates are every row, else the CPU answers the
 * query. (The CPU's own GEMM scan drops such a row, a NaN failing every
 * compare; its kernel path, used for few queries, scores it exactly.)
 *
 * fp16 rows: the scan's error is fp16 rounding, not bounded by the slack, so
 * no proof: the kc candidates are re-scored and the best k kept (recall, not
 * exactness; knn.h says so).
 *
 * Thread-safety: the functions are pure but for knn_exact_rescore, which
 * reads the store (the caller holds writers off) and starts threads.
 */
#ifndef SHOAL_KNN_EXACT_H
#define SHOAL_KNN_EXACT_H

#include "common/distance.h"
#include "common/error.h"
#include "common/flat.h"

#include <stddef.h>
#include <stdint.h>

/* Extra candidates beyond k, at least: near ties at the k-th rarely need more. */
#define KNN_EXACT_EXTRA_MIN 32

/*
 * Candidates to ask the device for: k + max(k / 4, KNN_EXACT_EXTRA_MIN),
 * at most k_max and at most n (the rows held), at least k.
 */
size_t knn_exact_candidates(size_t k, size_t k_max, size_t n);

/* The scan's error bound for a scan distance d, with s = |q|^2 + |x|^2 (an upper bound). */
float knn_exact_slack(size_t dim, float d, float s);

/*
 * Step 1 for one query: cd[0..kc) the scan distances of its candidates, best
 * first (+INFINITY padding past found), k <= kc; qn = |q|^2 (1 for cosine),
 * xmax = the largest |x|^2 held. Returns 1 when the candidates provably hold
 * the top k, else 0; *upper gets U (every candidate with lo <= U is re-scored).
 */
int knn_exact_proven(const float *cd, size_t kc, size_t found, size_t k, size_t dim, float qn,
                     float xmax, float *upper);

/*
 * Steps 2-3 for nq queries. cand: kc ids per query from the device, best
 * first by scan distance, TOPK_ID_NONE padding; cdist: their scan distances
 * (NULL with fp16: re-score every candidate, no proof); xmax: an upper bound
 * of every |x|^2 held (the front keeps it). Writes k ids and
 * distances (dists may be NULL) per query; queries whose proof fails are
 * searched by flat_search. threads: 0 = every core. Returns 0 or SHOAL_ENOMEM /
 * flat_search's error; *fallbacks (may be NULL) gets the queries sent to the CPU.
 */
int knn_exact_rescore(const flat_store_t *store, const float *queries, size_t nq,
                      const uint64_t *cand, const float *cdist, size_t kc, size_t k,
                      float xmax, size_t threads, size_t mem_budget, uint64_t *ids,
                      float *dists, size_t *fallbacks, shoal_err_t *err);

#endif
