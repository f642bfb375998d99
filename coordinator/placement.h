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
 * Rebalancing (placement_rebalance). When shards are added or drained, or
 * lists grew unevenly, a fresh placement_assign would move most slots (a slot
 * is one replica of one list). The planner looks for few single-slot moves,
 * each valid when applied in order after the ones before it. Its goals, in
 * order: (1) every slot that is not pinned leaves the shards that may not hold
 * lists; (2) the largest shard total ends at most target_imbalance x the mean
 * (the ceiling; mean = replicas * sum of sizes / allowed shards), with as few
 * moves, then vectors, as it finds; (3) shards per query stays within
 * PLACEMENT_LOCALITY_SLACK of a fresh placement's. It builds two plans and
 * keeps one:
 *
 *  (a) Local moves. Each list and its PLACEMENT_REBALANCE_NEIGHBOURS nearest
 *      lists (exact k-NN of the centroids) form a group, and the cost of a
 *      placement is the sum over groups of (distinct shards - 1): the
 *      connectivity metric of hypergraph partitioning, which is what shards
 *      per query counts. A move's gain is how much it lowers that cost, per
 *      replica layer. Drained slots go first, lists in breadth-first order of
 *      the neighbour graph from the drained region's border, each to the
 *      allowed shard where it fits under the ceiling with the most groups
 *      (else the least loaded): the region is shared out in a few pieces that
 *      follow their neighbours. Then, while a shard is above the ceiling, the
 *      largest gives one slot to a shard that stays under it. What it gives is
 *      first chosen as one region: grown from PLACEMENT_REGION_SEEDS seeds by
 *      greedy graph growing (METIS's initial partitioning) to the weight of
 *      its excess, the one with the fewest edges to the rest of the shard
 *      kept; the region's slots go first, then a slot whose move alone brings
 *      the shard under the ceiling (one move), then the best gain, the heavier
 *      on ties. The destination is the fitting shard with the best gain (the
 *      least loaded when no neighbour's shard fits). When nothing fits (a
 *      list larger than the slack), the largest shard may still give a slot to
 *      one that ends below it; a shard that no move helps is left.
 *  (b) The fresh placement, relabelled: placement_assign over the allowed
 *      shards, its shards mapped onto current ones by greedy largest overlap
 *      (slots in common), then the differing slots moved, then (a)'s balance
 *      step for what pinned slots left over. Per list the moves are a set
 *      difference (kept shards keep their slots), so any order is valid.
 *
 * Kept: the plan that leaves fewer drained slots behind, then meets the
 * target (else the lower imbalance), then meets the locality goal, then has
 * fewer moves, then fewer vectors; if neither meets the locality goal, (b).
 * max_moves cuts both plans: drained slots first, then each step's most
 * useful balance move.
 *
 * Measured (clustered datagen centroids, sizes uniform in [500, 1500],
 * nprobe 8; (a)'s shards per query / fresh's, mean over seeds, and how often
 * (a) misses 1.1 so that (b) is taken): 256 lists 3 -> 4 shards, 1.03, 7 of
 * 40, 45 moves against (b)'s 85 and the ~126 slots a fresh placement
 * changes; with 2 replicas 1.01, 2 of 30, 88 moves against 128; 1024 lists
 * 8 -> 10, 0.95, 0 of 10, 121 moves against 308; drain 1 of 4 (256 lists),
 * 0.94, 0 of 20, and only the drained lists move; drain 1 of 8 with 2
 * replicas (1024 lists), 0.95, 0 of 10; drain 1 of 5 with 2 replicas (240
 * lists), 1.07, 7 of 20. Rejected on these sweeps: counting neighbours on a
 * shard instead of groups (the same with one replica, worse with two or
 * three: 0.95 -> 0.98 for the drain of 1 in 8); filling drain targets only up
 * to the mean (the region cut in more pieces: drain 1 of 4 at 0.99, 1 of 5
 * with 2 replicas at 1.11); single slots without regions (3 -> 4 at 1.08, 6
 * of 20 missed; with 2 replicas 1.00 and 1 move fewer); a third plan, (a)
 * without regions, kept when (a) misses (saved 1 of 40 and 1 of 30).
 *
 * Bounds: with replicas = 1, every list at most (target - 1) x mean, and no
 * pins, (a) always meets the target: the least loaded allowed shard is at most
 * the mean, so any list fits there. Otherwise it gets as close as the greedy
 * finds. Each balance move lowers the sorted vector of shard totals, so the
 * loop ends; a guard stops it at 4 x nlist x replicas steps anyway.
 *
 * Cost of a plan: the neighbour search, O(nlist^2 * dim) in the CPU k-NN
 * engine (BLAS), dominates at scale; then the score (above), one
 * placement_assign, the relabelling O(nlist R^2 log(nlist R^2)) (R =
 * replicas), O(nshards * R) per drained slot, and per balance move O(nshards
 * * R) plus the source's slots x (1 + reverse neighbours) x k; a region costs
 * PLACEMENT_REGION_SEEDS x its edges x log(its edges). With nothing to do only
 * the score and the fresh placement run. Measured on 2 busy cores: 4096
 * lists, dim 128, 56 -> 64 shards or a drain of 1 in 64, 0.2 to 0.35 s
 * (R = 1 to 3), a third of it the fresh placement; 65,536 lists, dim 32,
 * 3584 -> 4096 shards, 15 s, two thirds of it the exact neighbour search
 * (one engine thread per core; the planning proper is 2%).
 *
 * Validation: centroids come from k-means, finite (and non-zero under
 * cosine) by construction. Each entry point checks them once with the one
 * vector check (vec_check_rows) as the guard for direct callers; nothing
 * inside re-checks.
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
#define PLACEMENT_REBALANCE_NEIGHBOURS 8  /* nearest lists behind a list's affinity */
#define PLACEMENT_LOCALITY_SLACK 1.1      /* rebalanced shards per query / a fresh placement's */
#define PLACEMENT_REGION_SEEDS 16         /* regions grown to choose what a shard gives away */

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

/* One planned move of a list replica (a slot) from one shard to another. */
typedef struct {
    uint32_t list, replica; /* the slot: owners[list * replicas + replica] */
    uint32_t from, to;      /* shard indexes */
    uint64_t vectors;       /* the list's size (list_sizes[list]; 1 when list_sizes is NULL) */
} placement_move_t;

/* What a rebalance plan does. Imbalance is the largest total over every
 * shard (allowed or not) / the mean over the allowed shards. */
typedef struct {
    double imbalance_before; /* of the current placement */
    double imbalance_after;  /* of the planned one */
    double spq_before;       /* shards per query (placement_locality at nprobe): current */
    double spq_after;        /* the planned placement */
    double spq_fresh;        /* a fresh placement_assign over the allowed shards */
    uint64_t vectors_moved;  /* sum of the moves' vectors */
    size_t nmoves;           /* moves planned */
} placement_plan_report_t;

/*
 * Plans moves from the placement `owners` (nlist x replicas, each < nshards,
 * a list's replicas on distinct shards) towards balance under
 * target_imbalance (>= 1, e.g. 1.1), keeping locality (above).
 *   allowed: nshards flags, 1 = may hold lists (NULL = all); a shard with 0 is
 *            drained: each slot there that is not pinned moves.
 *   pinned:  nlist x replicas flags or NULL: slots that must not move now (a
 *            pinned slot on a drained shard stays; the caller retries later).
 *   list_sizes: NULL or all zero = every list weighs 1.
 *   nprobe:  for the locality score, capped at nlist.
 *   max_moves: 0 = no limit; else drained slots first, then balance moves.
 * Out: new_owners (the caller's, nlist x replicas; may be owners itself) =
 * owners with the moves applied; *moves (malloc'd, the caller frees; NULL
 * when *nmoves is 0) in execution order, one at a time: each move's `from`
 * is the slot's owner after the moves before it, and its `to` holds no
 * replica of the list then. report may be NULL. Nothing to do (balanced,
 * nothing drained): 0 moves, new_owners = owners.
 * SHOAL_EINVAL, named: dim/nlist/nshards/replicas 0, bad owners, fewer
 * allowed shards than replicas, target_imbalance < 1, nprobe 0, non-finite
 * centroids, sizes whose sum overflows. Reentrant; runs in well under a
 * second for 4096 lists on 64 shards (see the cost above).
 */
int placement_rebalance(const float *centroids, size_t nlist, size_t dim, shoal_metric_t metric,
                        const uint64_t *list_sizes, size_t nshards, size_t replicas,
                        const uint32_t *owners, const uint8_t *allowed, const uint8_t *pinned,
                        double target_imbalance, size_t nprobe, size_t max_moves,
                        uint32_t *new_owners, placement_move_t **moves, size_t *nmoves,
                        placement_plan_report_t *report, shoal_err_t *err);

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
