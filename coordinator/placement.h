/*
 * placement.h - which shards hold which IVF lists.
 *
 * Two goals pull apart: every shard should hold about the same number of
 * vectors (size balance), and the lists a query probes - the centroids
 * nearest to it, hence near each other - should sit on few shards (fan-out is
 * what limits scale). placement_assign serves both in two steps:
 *
 *  1. Order: the lists are put in a line by recursive bisection of their
 *     centroids. A set is projected on its principal direction (power
 *     iteration on the centroids' covariance), sorted, and cut in two halves
 *     by count; each half is ordered the same way, its direction oriented
 *     along its parent's so that the end of the left half meets the start of
 *     the right one. Lists close in the line are close in space.
 *  2. Cut: the line is cut into nshards contiguous segments whose totals (sum
 *     of list sizes) are as equal as the granularity allows: boundary j goes
 *     where the prefix total is nearest j/nshards of the whole, then single
 *     boundary moves that lower the larger of two neighbours are made while
 *     any helps. Each segment total is thus at most mean + largest list.
 *
 * Replicas: replica r (0 <= r < replicas) of a list on primary shard s lives
 * on shard (s + r) mod nshards. The shifts are distinct, so no shard holds two
 * copies of a list, and each replica layer keeps the primary layer's locality
 * and balance. A shard's total over all replicas is at most
 * replicas * (mean_segment + largest list), i.e. mean + replicas * largest.
 *
 * Locality score: the expected number of distinct shards a query touches when
 * it probes its nprobe nearest lists, estimated with the centroids themselves
 * as queries (at most PLACEMENT_SCORE_QUERIES_MAX of them, evenly spaced),
 * counting replica 0's shards. (With the shifted replicas, reading every list
 * from replica r instead gives the same count.) Lower is better; 1 is ideal.
 *
 * Cost: ordering is O(nlist log nlist * dim * PLACEMENT_POWER_ITERS); the
 * score is one exact k-NN search of <= 2048 centroids against all of them.
 *
 * Thread-safety: all functions are reentrant. No ZeroMQ or storage here.
 */
#ifndef SHOAL_PLACEMENT_H
#define SHOAL_PLACEMENT_H

#include "common/distance.h"
#include "common/error.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PLACEMENT_POWER_ITERS 12          /* power-iteration steps per bisection */
#define PLACEMENT_SCORE_QUERIES_MAX 2048  /* centroids used as queries by the score */
#define PLACEMENT_SCORE_NPROBES 3         /* entries of placement_report_t.locality */
#define PLACEMENT_SHARDS_MAX 65536        /* a sanity bound on nshards */

/* What a placement looks like. shard_totals is optional and the caller's. */
typedef struct {
    uint64_t *shard_totals;  /* in: NULL or nshards slots; out: each shard's total,
                                every replica counting */
    uint64_t max_total;      /* largest shard total */
    uint64_t min_total;      /* smallest shard total */
    double mean_total;       /* replicas * sum(list_sizes) / nshards */
    double imbalance;        /* max_total / mean_total (1 = perfect; 1 when all empty) */
    uint64_t largest_list;   /* the largest list size, for the stated bound */
    size_t locality_nprobe[PLACEMENT_SCORE_NPROBES]; /* 1, 4, 16, each capped at nlist */
    double locality[PLACEMENT_SCORE_NPROBES];        /* distinct shards per query for each */
    size_t locality_queries; /* centroids used as queries */
} placement_report_t;

/*
 * Places nlist lists (centroids: nlist x dim; list_sizes: nlist, NULL = all
 * equal) on nshards shards with replicas copies each: owners[i*replicas + r]
 * is the shard of list i's replica r (r = 0 the primary). report may be NULL.
 * SHOAL_EINVAL for dim/nlist/nshards/replicas 0, replicas > nshards, nshards
 * > PLACEMENT_SHARDS_MAX, non-finite centroids (named), or sizes whose sum
 * overflows.
 */
int placement_assign(const float *centroids, size_t nlist, size_t dim, shoal_metric_t metric,
                     const uint64_t *list_sizes, size_t nshards, size_t replicas,
                     uint32_t *owners, placement_report_t *report, shoal_err_t *err);

/*
 * The locality score (above) of any placement: owners as placement_assign
 * writes it. Lets tests and tools compare placements.
 */
int placement_locality(const float *centroids, size_t nlist, size_t dim, shoal_metric_t metric,
                       const uint32_t *owners, size_t nshards, size_t replicas, size_t nprobe,
                       double *shards_per_query, shoal_err_t *err);

/*
 * Invariant check: every owner < nshards, and each list's replicas on
 * distinct shards. 0, or SHOAL_EINTERNAL naming the first list that fails.
 */
int placement_check(const uint32_t *owners, size_t nlist, size_t nshards, size_t replicas,
                    shoal_err_t *err);

#ifdef __cplusplus
}
#endif

#endif
