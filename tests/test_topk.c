/*
 * test_topk.c - the bounded heap and the k-way merge against a full sort of
 * every candidate, with many exact distance ties so the id tie-break matters.
 */
#include "common/topk.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t s_state;

static uint64_t s_rand(void)
{
    s_state ^= s_state << 13;
    s_state ^= s_state >> 7;
    s_state ^= s_state << 17;
    return s_state;
}

static int s_cmp_items(const void *a, const void *b)
{
    const topk_item_t *x = a, *y = b;
    if (topk_better(x->dist, x->id, y->dist, y->id))
        return -1;
    if (topk_better(y->dist, y->id, x->dist, x->id))
        return 1;
    return 0;
}

/* n candidates with distinct ids; distances drawn from `levels` values so ties abound. */
static topk_item_t *s_make_candidates(size_t n, unsigned levels)
{
    topk_item_t *c = malloc(n * sizeof *c);
    cr_assert_not_null(c);
    for (size_t i = 0; i < n; i++) {
        c[i].dist = (float)(s_rand() % levels) * 0.5f;
        c[i].id = s_rand() % 1000000007ULL * 1000ULL + i; /* distinct, unordered */
    }
    return c;
}

Test(topk, heap_matches_full_sort_with_ties)
{
    s_state = 0x9E3779B97F4A7C15ULL;
    const size_t sizes[] = {1, 2, 7, 100, 1000};
    const size_t ks[] = {1, 3, 10, 100, 1000, 1500};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
            size_t n = sizes[si], k = ks[ki];
            topk_item_t *cand = s_make_candidates(n, 5);
            topk_item_t *storage = malloc(k * sizeof *storage);
            float *dists = malloc(k * sizeof *dists);
            uint64_t *ids = malloc(k * sizeof *ids);
            topk_heap_t heap;
            topk_heap_init(&heap, storage, k);
            for (size_t i = 0; i < n; i++)
                topk_heap_push(&heap, cand[i].dist, cand[i].id);
            size_t kept = n < k ? n : k;
            if (heap.count == k)
                cr_assert_eq(topk_heap_bound(&heap), heap.items[0].dist);
            else
                cr_assert(isinf(topk_heap_bound(&heap)));
            size_t found = topk_heap_extract(&heap, dists, ids);
            cr_assert_eq(found, kept, "n=%zu k=%zu: found %zu", n, k, found);
            cr_assert_eq(heap.count, 0);

            qsort(cand, n, sizeof *cand, s_cmp_items);
            for (size_t i = 0; i < kept; i++) {
                cr_assert_eq(ids[i], cand[i].id, "n=%zu k=%zu rank %zu: id %llu, expected %llu",
                             n, k, i, (unsigned long long)ids[i],
                             (unsigned long long)cand[i].id);
                cr_assert_eq(dists[i], cand[i].dist);
            }
            for (size_t i = kept; i < k; i++) {
                cr_assert_eq(ids[i], TOPK_ID_NONE);
                cr_assert(isinf(dists[i]) && dists[i] > 0);
            }
            free(cand);
            free(storage);
            free(dists);
            free(ids);
        }
    }
}

Test(topk, heap_result_is_independent_of_arrival_order)
{
    s_state = 12345;
    const size_t n = 500, k = 37;
    topk_item_t *cand = s_make_candidates(n, 3);
    topk_item_t storage[37];
    uint64_t first[37], again[37];
    topk_heap_t heap;
    topk_heap_init(&heap, storage, k);
    for (size_t i = 0; i < n; i++)
        topk_heap_push(&heap, cand[i].dist, cand[i].id);
    topk_heap_extract(&heap, NULL, first);

    /* Same candidates, reversed, into the reset heap. */
    topk_heap_reset(&heap);
    for (size_t i = n; i-- > 0;)
        topk_heap_push(&heap, cand[i].dist, cand[i].id);
    topk_heap_extract(&heap, NULL, again);
    cr_assert_arr_eq(first, again, sizeof first);
    free(cand);
}

Test(topk, push_reports_whether_kept)
{
    topk_item_t storage[2];
    topk_heap_t heap;
    topk_heap_init(&heap, storage, 2);
    cr_assert_eq(topk_heap_push(&heap, 5.0f, 10), 1);
    cr_assert_eq(topk_heap_push(&heap, 3.0f, 11), 1);
    cr_assert_eq(topk_heap_push(&heap, 6.0f, 12), 0, "worse than both kept");
    cr_assert_eq(topk_heap_push(&heap, 5.0f, 13), 0, "ties the worst with a larger id");
    cr_assert_eq(topk_heap_push(&heap, 5.0f, 9), 1, "ties the worst with a smaller id");
    cr_assert_eq(topk_heap_bound(&heap), 5.0f);
    uint64_t ids[2];
    float dists[2];
    cr_assert_eq(topk_heap_extract(&heap, dists, ids), 2);
    cr_assert_eq(ids[0], 11);
    cr_assert_eq(ids[1], 9);
}

/* Splits candidates into nlists sorted lists, merges, and compares with the sort. */
static void s_check_merge(size_t n, size_t nlists, size_t k, size_t pad)
{
    topk_item_t *cand = s_make_candidates(n, 4);
    float **dists = calloc(nlists, sizeof *dists);
    uint64_t **ids = calloc(nlists, sizeof *ids);
    size_t *lens = calloc(nlists, sizeof *lens);
    size_t *fill = calloc(nlists, sizeof *fill);
    size_t *owner = malloc(n * sizeof *owner);
    for (size_t i = 0; i < n; i++) {
        owner[i] = s_rand() % nlists;
        lens[owner[i]]++;
    }
    /* Each list is sorted best first and then padded, like a shard's result row. */
    for (size_t j = 0; j < nlists; j++) {
        lens[j] += pad;
        dists[j] = malloc((lens[j] + 1) * sizeof **dists);
        ids[j] = malloc((lens[j] + 1) * sizeof **ids);
    }
    qsort(cand, n, sizeof *cand, s_cmp_items);
    for (size_t i = 0; i < n; i++) {
        size_t j = owner[i];
        dists[j][fill[j]] = cand[i].dist;
        ids[j][fill[j]] = cand[i].id;
        fill[j]++;
    }
    for (size_t j = 0; j < nlists; j++)
        for (size_t p = fill[j]; p < lens[j]; p++) {
            dists[j][p] = INFINITY;
            ids[j][p] = TOPK_ID_NONE;
        }

    float *out_d = malloc((k + 1) * sizeof *out_d);
    uint64_t *out_i = malloc((k + 1) * sizeof *out_i);
    size_t found = topk_merge((const float *const *)dists, (const uint64_t *const *)ids, lens,
                              nlists, k, out_d, out_i);
    size_t expect = n < k ? n : k;
    cr_assert_eq(found, expect, "n=%zu lists=%zu k=%zu: found %zu", n, nlists, k, found);
    for (size_t i = 0; i < expect; i++) {
        cr_assert_eq(out_i[i], cand[i].id, "n=%zu lists=%zu k=%zu rank %zu", n, nlists, k, i);
        cr_assert_eq(out_d[i], cand[i].dist);
    }
    for (size_t i = expect; i < k; i++)
        cr_assert_eq(out_i[i], TOPK_ID_NONE);

    for (size_t j = 0; j < nlists; j++) {
        free(dists[j]);
        free(ids[j]);
    }
    free(dists);
    free(ids);
    free(lens);
    free(fill);
    free(owner);
    free(cand);
    free(out_d);
    free(out_i);
}

Test(topk, merge_matches_full_sort)
{
    s_state = 0xDEADBEEFCAFEULL;
    const size_t lists[] = {1, 2, 3, 8, 65, 300};
    const size_t ks[] = {1, 10, 100, 2000};
    for (size_t li = 0; li < sizeof lists / sizeof lists[0]; li++)
        for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
            s_check_merge(1000, lists[li], ks[ki], 0);
            s_check_merge(1000, lists[li], ks[ki], 3);
        }
}

Test(topk, merge_of_empty_and_padded_lists)
{
    float pad_d[3] = {INFINITY, INFINITY, INFINITY};
    uint64_t pad_i[3] = {TOPK_ID_NONE, TOPK_ID_NONE, TOPK_ID_NONE};
    float real_d[2] = {1.0f, 1.0f};
    uint64_t real_i[2] = {4, 8};
    const float *d[3] = {pad_d, real_d, pad_d};
    const uint64_t *i[3] = {pad_i, real_i, pad_i};
    size_t lens[3] = {3, 2, 0};
    float out_d[4];
    uint64_t out_i[4];
    cr_assert_eq(topk_merge(d, i, lens, 3, 4, out_d, out_i), 2);
    cr_assert_eq(out_i[0], 4);
    cr_assert_eq(out_i[1], 8);
    cr_assert_eq(out_i[2], TOPK_ID_NONE);
    cr_assert_eq(out_i[3], TOPK_ID_NONE);
    cr_assert_eq(topk_merge(d, i, lens, 0, 4, out_d, out_i), 0, "no lists");
    cr_assert_eq(out_i[0], TOPK_ID_NONE);
    cr_assert_eq(topk_merge(d, i, lens, 3, 0, out_d, out_i), 0, "k = 0");
}
