/*
 * placement_private.h - what placement.c (placing lists from scratch) and
 * placement_rebalance.c (moving them) share: the argument checks, the
 * assignment itself, and the locality probe. Not part of placement.h's
 * contract; the same thread rules (reentrant, no ZeroMQ or storage).
 */
#ifndef SHOAL_PLACEMENT_PRIVATE_H
#define SHOAL_PLACEMENT_PRIVATE_H

#include "common/distance.h"
#include "common/error.h"

#include <stddef.h>
#include <stdint.h>

/* SHOAL_EINVAL (prefixed fn) for nlist/dim 0, and for a centroid vec_check refuses
   (non-finite, a squared norm a float cannot hold under L2/IP, zero under cosine). */
int placement_check_centroids(const char *fn, const float *centroids, size_t nlist, size_t dim,
                              shoal_metric_t metric, shoal_err_t *err);

/* SHOAL_EINVAL for nshards 0 or above PLACEMENT_SHARDS_MAX, replicas outside 1..nshards. */
int placement_check_shards(const char *fn, size_t nshards, size_t replicas, shoal_err_t *err);

/*
 * Sum of list_sizes (0 when NULL) and the largest, refused when the sum of
 * `replicas` copies would overflow a shard total.
 */
int placement_sum_sizes(const char *fn, const uint64_t *list_sizes, size_t nlist, size_t replicas,
                        uint64_t *total_out, uint64_t *largest_out, shoal_err_t *err);

/*
 * Order and cut (placement.h) into owners; totals (nshards, zeroed by the
 * caller) gets each shard's total. The caller has checked the arguments.
 * by_count: balance the number of lists, not their sizes.
 */
int placement_assign_into(const char *fn, const float *centroids, size_t nlist, size_t dim,
                          const uint64_t *list_sizes, int by_count, size_t nshards,
                          size_t replicas, uint32_t *owners, uint64_t *totals, shoal_err_t *err);

/*
 * The k nearest centroids of up to nq_max evenly spaced centroids (all of
 * them when nq_max >= nlist): *found (caller frees) is *nq_out x k, with the
 * CPU engine (placing lists never claims a GPU).
 */
int placement_probe(const float *centroids, size_t nlist, size_t dim, shoal_metric_t metric,
                    size_t nq_max, size_t k, size_t *nq_out, uint64_t **found_out,
                    shoal_err_t *err);

/*
 * Mean over the nq rows of found (stride k) of the distinct replica-0 shards
 * among the first nprobe entries. stamp: nshards scratch.
 */
double placement_distinct(const uint64_t *found, size_t nq, size_t k, size_t nprobe,
                          const uint32_t *owners, size_t replicas, uint32_t *stamp,
                          size_t nshards);

#endif
