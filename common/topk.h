/*
 * topk.h - keeping the k best (distance, id) pairs, and merging sorted lists.
 *
 * Order: a pair is better than another when its distance is smaller, or the
 * distances are equal and its id is smaller. This total order makes every
 * result deterministic: the same candidates give the same k, in the same order,
 * whatever order they arrived in. Distances are never NaN (inputs are checked
 * before they reach a search).
 *
 * topk_heap_t is a bounded max-heap: its root is the worst pair kept, so a
 * candidate that is not better than the root is rejected in O(1), and an
 * accepted one costs O(log k). The caller provides the storage (k items), so
 * per-query heaps can live in one preallocated block.
 *
 * topk_merge() merges L lists, each sorted best first, into the best k, with a
 * heap over the list heads: O(k log L). It does not remove duplicate ids.
 *
 * Result arrays that hold fewer than k answers are padded with
 * TOPK_ID_NONE / +INFINITY.
 *
 * Thread-safety: a heap belongs to one thread; merge is pure.
 */
#ifndef SHOAL_TOPK_H
#define SHOAL_TOPK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TOPK_ID_NONE UINT64_MAX

/* Most lists one topk_merge call takes (one per shard or per device). */
#define TOPK_MERGE_MAX_LISTS 4096

typedef struct {
    float dist;  /* smaller is nearer (see distance.h) */
    uint64_t id; /* caller's id; breaks ties, smaller first */
} topk_item_t;

/* Non-zero when (da, ia) is strictly better than (db, ib) in the order above. */
static inline int topk_better(float da, uint64_t ia, float db, uint64_t ib)
{
    return da < db || (da == db && ia < ib);
}

typedef struct {
    topk_item_t *items; /* caller's storage for k items; items[0] is the worst kept */
    size_t k;           /* capacity: how many pairs are kept */
    size_t count;       /* how many are kept now (<= k) */
} topk_heap_t;

/* Starts an empty heap keeping k >= 1 pairs in storage (k items, borrowed). */
void topk_heap_init(topk_heap_t *heap, topk_item_t *storage, size_t k);

/* Empties the heap, keeping its storage and k. */
void topk_heap_reset(topk_heap_t *heap);

/* Offers a candidate. Returns 1 when it was kept, 0 when rejected. */
int topk_heap_push(topk_heap_t *heap, float dist, uint64_t id);

/*
 * The distance a candidate must beat (or tie, with a smaller id) to be kept:
 * the worst kept distance when the heap is full, +INFINITY before.
 */
float topk_heap_bound(const topk_heap_t *heap);

/*
 * Sorts the kept pairs best first into dists[0..k) and ids[0..k) (either may be
 * NULL), padding past count with +INFINITY / TOPK_ID_NONE. Consumes the heap:
 * it is empty afterwards. Returns the number of real pairs written.
 */
size_t topk_heap_extract(topk_heap_t *heap, float *dists, uint64_t *ids);

/*
 * Merges nlists (<= TOPK_MERGE_MAX_LISTS, a programmer's bound: callers merge
 * per shard or per device) lists into the best k. Each list's length must fit
 * in 32 bits. List j has lens[j] pairs in dists[j][]
 * and ids[j][], sorted best first (padding entries with id TOPK_ID_NONE are
 * ignored, so padded result rows can be passed as they are). Writes k pairs to
 * out_dists / out_ids, padded as above. Returns the number of real pairs.
 * Returns 0 without writing when k is 0.
 */
size_t topk_merge(const float *const *dists, const uint64_t *const *ids, const size_t *lens,
                  size_t nlists, size_t k, float *out_dists, uint64_t *out_ids);

#ifdef __cplusplus
}
#endif

#endif
