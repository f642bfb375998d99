/*
 * vec_check.h - the one check a vector must pass to be stored or searched.
 *
 * A vector is valid under a metric when every component is finite, and
 *   - under L2 and IP its squared norm fits a float (else |q|^2 + |x|^2 and
 *     the dot products of the GEMM form overflow, and a stored row would
 *     poison every distance to it);
 *   - under cosine it is not all zero (it has no direction to normalise).
 * Queries follow the same rule, so a query that could not be stored is not
 * searched either.
 *
 * Where it runs: once where a vector enters a process (the coordinator's and
 * the shard's request handlers, before anything is written) and where stored
 * rows are loaded from disk. The inner layers' calls (the shard store, flat
 * store, exact engine, k-means, placement) guard their direct callers, and
 * their suites pin those errors; through a server a bad row stops at the
 * boundary. Each is this one function, so the rule is said once.
 *
 * Thread-safety: pure functions.
 */
#ifndef SHOAL_VEC_CHECK_H
#define SHOAL_VEC_CHECK_H

#include "common/distance.h"
#include "common/error.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Checks one vector of dim floats under metric. 0, or SHOAL_EINVAL with a
 * message that completes a sentence whose subject is the row ("column 3 is
 * not finite (NaN)", "has squared norm ..."), so callers name the row in
 * front of it (vec_check_rows does).
 */
int vec_check(shoal_metric_t metric, const float *v, size_t dim, shoal_err_t *err);

/*
 * vec_check, except that a zero vector under cosine passes: the exact
 * engine's own guard for its direct callers (k-means, ground truth), which
 * search with any finite query; a zero cosine query is at distance 1 from
 * every row there. Request handlers use vec_check.
 */
int vec_check_engine_query(shoal_metric_t metric, const float *v, size_t dim, shoal_err_t *err);

/*
 * vec_check on each of n rows of dim floats at vecs. The message names the
 * first bad row: "<who>: <what> <i>" and, when ids is not NULL,
 * " (id <ids[i]>)", then vec_check's message. 0 or SHOAL_EINVAL.
 */
int vec_check_rows(const char *who, const char *what, const float *vecs, size_t n, size_t dim,
                   shoal_metric_t metric, const uint64_t *ids, shoal_err_t *err);

/*
 * Only the first part of the rule, every component finite, on n rows, with
 * vec_check_rows' message. For a boundary whose layer below applies the whole
 * rule with its own message: the shard server's insert (the store then says
 * which row's norm is too large or zero, "row i"). 0 or SHOAL_EINVAL.
 */
int vec_check_finite_rows(const char *who, const char *what, const float *vecs, size_t n,
                          size_t dim, const uint64_t *ids, shoal_err_t *err);

#ifdef __cplusplus
}
#endif

#endif
