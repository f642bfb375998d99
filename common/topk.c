/*
 * topk.c - bounded heap and k-way merge of (distance, id) pairs. See topk.h.
 *
 * The heap is a binary max-heap under topk_better's order, so items[0] is the
 * worst pair kept and the rejection test for a new candidate is one compare.
 * Extraction pops the worst repeatedly and fills the output from the back,
 * which sorts in place without extra memory.
 */
#include "common/topk.h"

#include <assert.h>
#include <math.h>

/* Non-zero when item a is worse than item b (so belongs nearer the root). */
static inline int s_worse(const topk_item_t *a, const topk_item_t *b)
{
    return topk_better(b->dist, b->id, a->dist, a->id);
}

static void s_sift_down(topk_item_t *items, size_t count, size_t at)
{
    topk_item_t moving = items[at];
    for (;;) {
        size_t child = 2 * at + 1;
        if (child >= count)
            break;
        if (child + 1 < count && s_worse(&items[child + 1], &items[child]))
            child++;
        if (!s_worse(&items[child], &moving))
            break;
        items[at] = items[child];
        at = child;
    }
    items[at] = moving;
}

static void s_sift_up(topk_item_t *items, size_t at)
{
    topk_item_t moving = items[at];
    while (at > 0) {
        size_t parent = (at - 1) / 2;
        if (!s_worse(&moving, &items[parent]))
            break;
        items[at] = items[parent];
        at = parent;
    }
    items[at] = moving;
}

void topk_heap_init(topk_heap_t *heap, topk_item_t *storage, size_t k)
{
    heap->items = storage;
    heap->k = k;
    heap->count = 0;
}

void topk_heap_reset(topk_heap_t *heap)
{
    heap->count = 0;
}

int topk_heap_push(topk_heap_t *heap, float dist, uint64_t id)
{
    if (heap->count < heap->k) {
        heap->items[heap->count].dist = dist;
        heap->items[heap->count].id = id;
        s_sift_up(heap->items, heap->count);
        heap->count++;
        return 1;
    }
    if (heap->k == 0 || !topk_better(dist, id, heap->items[0].dist, heap->items[0].id))
        return 0;
    heap->items[0].dist = dist;
    heap->items[0].id = id;
    s_sift_down(heap->items, heap->count, 0);
    return 1;
}

float topk_heap_bound(const topk_heap_t *heap)
{
    if (heap->count < heap->k || heap->k == 0)
        return INFINITY;
    return heap->items[0].dist;
}

size_t topk_heap_extract(topk_heap_t *heap, float *dists, uint64_t *ids)
{
    size_t found = heap->count;
    for (size_t i = found; i < heap->k; i++) {
        if (dists)
            dists[i] = INFINITY;
        if (ids)
            ids[i] = TOPK_ID_NONE;
    }
    /* Pop the worst into the last free slot until the heap is empty. */
    while (heap->count > 0) {
        size_t last = --heap->count;
        if (dists)
            dists[last] = heap->items[0].dist;
        if (ids)
            ids[last] = heap->items[0].id;
        heap->items[0] = heap->items[last];
        s_sift_down(heap->items, heap->count, 0);
    }
    return found;
}

/* ------------------------------------------------------------------------ */
/* k-way merge                                                              */
/* ------------------------------------------------------------------------ */

/* A list head in the merge heap: the list's index and its read position. */
typedef struct {
    uint32_t list; /* which input list */
    uint32_t pos;  /* next unread position in that list */
} s_head_t;

typedef struct {
    const float *const *dists;
    const uint64_t *const *ids;
    const size_t *lens;
} s_lists_t;

/* A list is exhausted at its end or at its first padding entry. */
static inline int s_head_valid(const s_lists_t *in, const s_head_t *h)
{
    return h->pos < in->lens[h->list] && in->ids[h->list][h->pos] != TOPK_ID_NONE;
}

/* Non-zero when head a's current pair is better than head b's. */
static inline int s_head_better(const s_lists_t *in, const s_head_t *a, const s_head_t *b)
{
    return topk_better(in->dists[a->list][a->pos], in->ids[a->list][a->pos],
                       in->dists[b->list][b->pos], in->ids[b->list][b->pos]);
}

/* Min-heap of heads: heads[0] holds the best current pair. */
static void s_heads_sift_down(const s_lists_t *in, s_head_t *heads, size_t count, size_t at)
{
    s_head_t moving = heads[at];
    for (;;) {
        size_t child = 2 * at + 1;
        if (child >= count)
            break;
        if (child + 1 < count && s_head_better(in, &heads[child + 1], &heads[child]))
            child++;
        if (!s_head_better(in, &heads[child], &moving))
            break;
        heads[at] = heads[child];
        at = child;
    }
    heads[at] = moving;
}

size_t topk_merge(const float *const *dists, const uint64_t *const *ids, const size_t *lens,
                  size_t nlists, size_t k, float *out_dists, uint64_t *out_ids)
{
    /* The heads live on the stack (8 bytes each): no allocation, no failure path. */
    assert(nlists <= TOPK_MERGE_MAX_LISTS && "callers bound the number of lists");
    if (k == 0)
        return 0;
    s_lists_t in = {dists, ids, lens};
    s_head_t heads[TOPK_MERGE_MAX_LISTS];
    size_t count = 0;
    for (size_t j = 0; j < nlists; j++) {
        s_head_t h = {(uint32_t)j, 0};
        if (s_head_valid(&in, &h))
            heads[count++] = h;
    }
    for (size_t i = count / 2; i-- > 0;)
        s_heads_sift_down(&in, heads, count, i);

    size_t found = 0;
    while (found < k && count > 0) {
        s_head_t *best = &heads[0];
        out_dists[found] = dists[best->list][best->pos];
        out_ids[found] = ids[best->list][best->pos];
        found++;
        best->pos++;
        if (!s_head_valid(&in, best))
            heads[0] = heads[--count];
        if (count > 0)
            s_heads_sift_down(&in, heads, count, 0);
    }
    for (size_t i = found; i < k; i++) {
        out_dists[i] = INFINITY;
        out_ids[i] = TOPK_ID_NONE;
    }
    return found;
}
