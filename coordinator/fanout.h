/*
 * fanout.h - the arithmetic of a fanned-out search, with no sockets in it:
 * which shard gets which queries (the plan), and the merge of the shards'
 * per-query top-k lists into one answer.
 *
 * Plan: a query probes nprobe lists (kmeans_assign's output); each list has
 * an owning shard (the placement). The query goes to the distinct shards
 * owning its lists, and each shard gets one sub-batch: the indexes of the
 * queries routed to it, ascending. A shard that holds several of a query's
 * lists still gets the query once (a shard searches its whole local index).
 *
 * Merge: the answer of query q is the k best (distance, id) pairs over every
 * shard's list for q, ties by smaller id, each id at most once (the nearer
 * copy wins: an id is on two shards only in the window of an interrupted
 * upsert, see catalog.h), padded with TOPK_ID_NONE / +INFINITY. Shards'
 * lists may arrive in any order and at any time; the result is the same.
 *
 * Thread-safety: a plan or merge object belongs to one thread.
 * Ownership: fanout_plan_t / fanout_merge_t are filled by their _build /
 * _init and freed by their _fini; arrays handed in are read only during the
 * call.
 */
#ifndef SHOAL_FANOUT_H
#define SHOAL_FANOUT_H

#include "common/error.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    size_t nshards;       /* as given */
    size_t nq;            /* queries planned */
    size_t *counts;       /* nshards: queries routed to shard s */
    uint32_t **queries;   /* nshards: queries[s] = counts[s] query indexes, ascending (NULL if 0) */
    uint64_t fanout;      /* sum over queries of the shards each goes to */
    uint32_t *per_query;  /* nq: shards query q goes to (for the fan-out histogram) */
} fanout_plan_t;

/*
 * Builds the plan for nq queries whose probed lists are lists[q*nprobe ..]
 * (each < nlist), with owners[l] the shard of list l (each < nshards).
 * SHOAL_EINVAL for a list or owner out of range (named), SHOAL_ENOMEM.
 */
int fanout_plan_build(const uint32_t *lists, size_t nq, size_t nprobe, const uint32_t *owners,
                      size_t nlist, size_t nshards, fanout_plan_t *plan, shoal_err_t *err);
void fanout_plan_fini(fanout_plan_t *plan);

/*
 * Copies the rows of the queries routed to shard s (plan->queries[s]) from
 * queries (nq x dim) into out (counts[s] x dim, the caller's).
 */
void fanout_gather(const fanout_plan_t *plan, size_t s, const float *queries, size_t dim,
                   float *out);

/* The running answer of nq queries x k. */
typedef struct {
    size_t nq, k;
    uint64_t *ids;        /* nq x k, best first, TOPK_ID_NONE padding */
    float *dists;         /* nq x k, +INFINITY padding */
    uint64_t *scratch_ids;/* k merge slots, then an id hash set of 2k..4k slots */
    float *scratch_dists; /* k */
} fanout_merge_t;

/* An empty answer (every slot padding). SHOAL_EINVAL for k 0, SHOAL_ENOMEM. */
int fanout_merge_init(fanout_merge_t *m, size_t nq, size_t k, shoal_err_t *err);
void fanout_merge_fini(fanout_merge_t *m);

/*
 * Folds one shard's reply into the answer: for i < n, row i of ids/dists
 * (kk entries each, best first as a shard returns them, padding allowed) is
 * a candidate list for query qidx[i]. kk may differ from k.
 */
void fanout_merge_add(fanout_merge_t *m, const uint32_t *qidx, size_t n, const uint64_t *ids,
                      const float *dists, size_t kk);

#ifdef __cplusplus
}
#endif

#endif
