/*
 * test_groundtruth.c - exact k-NN against a naive double-precision brute
 * force, thread-count independence, padding, argument checks, recall, and the
 * shipped ground truth of real data sets (siftsmall, glove50) where present.
 *
 * Comparing a float computation with a double one: two neighbours whose true
 * distances differ by less than the float rounding error may come out in
 * either order. So position j of our answer is accepted when its true (double)
 * distance equals the reference's j-th distance within S_TIE_REL of the
 * magnitudes involved: for L2 the distances themselves, for IP |q| |x|, for
 * cosine 1. Anything else is a wrong answer.
 */
#include "common/datagen.h"
#include "common/distance.h"
#include "common/groundtruth.h"
#include "common/topk.h"
#include "common/vecfile.h"
#include "tests/test_support.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Distances within this much (relative to the magnitudes) count as a tie. */
#define S_TIE_REL 1e-6
/* Our float distances must be within this much of the exact ones. */
#define S_DIST_REL 1e-5

/* ------------------------------------------------------------------------ */
/* Reference                                                                */
/* ------------------------------------------------------------------------ */

typedef struct {
    double dist;
    uint64_t id;
} ref_item_t;

static int s_cmp_ref(const void *pa, const void *pb)
{
    const ref_item_t *a = pa, *b = pb;
    if (a->dist != b->dist)
        return a->dist < b->dist ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

/* The k best of every query in double, sorted by (distance, id). */
static ref_item_t *s_ref_knn(const float *base, size_t n, const float *queries, size_t nq,
                             size_t dim, shoal_metric_t metric, size_t k)
{
    ref_item_t *all = malloc(n * sizeof *all);
    ref_item_t *out = malloc(nq * k * sizeof *out);
    cr_assert(all && out);
    for (size_t q = 0; q < nq; q++) {
        for (size_t i = 0; i < n; i++) {
            all[i].dist = s_true_dist(metric, queries + q * dim, base + i * dim, dim);
            all[i].id = i;
        }
        qsort(all, n, sizeof *all, s_cmp_ref);
        memcpy(out + q * k, all, k * sizeof *out);
    }
    free(all);
    return out;
}

/*
 * Checks ids/dists (nq x k) against the reference (nq x ref_k, ref_k >= k):
 * valid distinct ids, each position's true distance tied with the reference's
 * at that position, and our float distance close to it.
 */
static void s_check_against_ref(const float *base, size_t n, const float *queries, size_t nq,
                                size_t dim, shoal_metric_t metric, size_t k, const uint64_t *ids,
                                const float *dists, const ref_item_t *ref, size_t ref_k,
                                const char *what)
{
    for (size_t q = 0; q < nq; q++) {
        const float *qv = queries + q * dim;
        for (size_t j = 0; j < k; j++) {
            uint64_t id = ids[q * k + j];
            const ref_item_t *r = &ref[q * ref_k + j];
            cr_assert(id < n, "%s: query %zu pos %zu: id %llu out of range", what, q, j,
                      (unsigned long long)id);
            for (size_t i = 0; i < j; i++)
                cr_assert_neq(ids[q * k + i], id, "%s: query %zu: id %llu twice", what, q,
                              (unsigned long long)id);
            const float *xv = base + id * dim;
            double d = s_true_dist(metric, qv, xv, dim);
            double mag = fmax(s_magnitude(metric, qv, xv, dim, d),
                              s_magnitude(metric, qv, base + r->id * dim, dim, r->dist));
            if (id != r->id)
                cr_assert(fabs(d - r->dist) <= S_TIE_REL * mag,
                          "%s: query %zu pos %zu: id %llu (d=%.9g) where the reference has "
                          "%llu (d=%.9g)",
                          what, q, j, (unsigned long long)id, d, (unsigned long long)r->id,
                          r->dist);
            if (dists)
                cr_assert(fabs((double)dists[q * k + j] - r->dist) <= S_DIST_REL * mag,
                          "%s: query %zu pos %zu: distance %.9g, exact %.9g", what, q, j,
                          (double)dists[q * k + j], r->dist);
        }
    }
}

/* n points of a stream of a fresh generator (the caller frees them). */
static float *s_generate(size_t dim, uint64_t seed, unsigned stream, size_t n)
{
    datagen_params_t p = {.dim = dim, .seed = seed};
    shoal_err_t err;
    datagen_t *gen = datagen_new(&p, &err);
    cr_assert_not_null(gen, "%s", err.msg);
    float *v = malloc(n * dim * sizeof(float));
    cr_assert_not_null(v);
    datagen_fill(gen, stream, 0, n, v);
    datagen_destroy(&gen);
    return v;
}

/* ------------------------------------------------------------------------ */
/* Against the reference                                                    */
/* ------------------------------------------------------------------------ */

static void s_check_generated(size_t dim)
{
    const size_t n = 3000, nq = 50, max_k = 100;
    const size_t ks[] = {1, 10, 100};
    const shoal_metric_t metrics[] = {SHOAL_METRIC_L2, SHOAL_METRIC_IP, SHOAL_METRIC_COSINE};
    float *base = s_generate(dim, 31, DATAGEN_STREAM_BASE, n);
    float *queries = s_generate(dim, 31, DATAGEN_STREAM_QUERY, nq);
    uint64_t *ids = malloc(nq * max_k * sizeof(uint64_t));
    float *dists = malloc(nq * max_k * sizeof(float));
    cr_assert(ids && dists);

    for (size_t m = 0; m < 3; m++) {
        ref_item_t *ref = s_ref_knn(base, n, queries, nq, dim, metrics[m], max_k);
        for (size_t t = 0; t < 3; t++) {
            shoal_err_t err;
            int rc = gt_knn(base, n, queries, nq, dim, metrics[m], ks[t], 2, ids, dists, &err);
            cr_assert_eq(rc, SHOAL_OK, "%s", err.msg);
            char what[64];
            snprintf(what, sizeof what, "dim %zu %s k %zu", dim, shoal_metric_name(metrics[m]),
                     ks[t]);
            s_check_against_ref(base, n, queries, nq, dim, metrics[m], ks[t], ids, dists, ref,
                                max_k, what);
        }
        free(ref);
    }
    free(ids);
    free(dists);
    free(base);
    free(queries);
}

Test(groundtruth, matches_brute_force_dim37)
{
    s_check_generated(37);
}

Test(groundtruth, matches_brute_force_dim128)
{
    s_check_generated(128);
}

Test(groundtruth, thread_count_does_not_change_answers)
{
    /* 200 queries = 7 blocks of 32, so 3 and 7 threads really split the work. */
    const size_t n = 2500, nq = 200, dim = 20, k = 16;
    float *base = s_generate(dim, 8, DATAGEN_STREAM_BASE, n);
    float *queries = s_generate(dim, 8, DATAGEN_STREAM_QUERY, nq);
    const size_t threads[] = {3, 7, 0, 64};
    uint64_t *ids1 = malloc(nq * k * sizeof(uint64_t));
    uint64_t *ids2 = malloc(nq * k * sizeof(uint64_t));
    float *d1 = malloc(nq * k * sizeof(float));
    float *d2 = malloc(nq * k * sizeof(float));
    cr_assert(ids1 && ids2 && d1 && d2);
    for (shoal_metric_t m = SHOAL_METRIC_L2; m <= SHOAL_METRIC_COSINE; m++) {
        cr_assert_eq(gt_knn(base, n, queries, nq, dim, m, k, 1, ids1, d1, NULL), SHOAL_OK);
        for (size_t t = 0; t < sizeof threads / sizeof threads[0]; t++) {
            cr_assert_eq(gt_knn(base, n, queries, nq, dim, m, k, threads[t], ids2, d2, NULL),
                         SHOAL_OK);
            cr_assert(memcmp(ids1, ids2, nq * k * sizeof(uint64_t)) == 0,
                      "%s: threads 1 and %zu differ", shoal_metric_name(m), threads[t]);
            cr_assert(memcmp(d1, d2, nq * k * sizeof(float)) == 0);
        }
    }
    /* dists is optional and does not change ids. */
    cr_assert_eq(gt_knn(base, n, queries, nq, dim, SHOAL_METRIC_COSINE, k, 3, ids2, NULL, NULL),
                 SHOAL_OK);
    cr_assert(memcmp(ids1, ids2, nq * k * sizeof(uint64_t)) == 0);
    free(ids1);
    free(ids2);
    free(d1);
    free(d2);
    free(base);
    free(queries);
}

Test(groundtruth, k_larger_than_n_is_padded)
{
    const size_t n = 5, dim = 3, k = 8;
    const float base[5 * 3] = {0, 0, 0, 1, 0, 0, 2, 0, 0, 3, 0, 0, 4, 0, 0};
    const float query[2 * 3] = {3.9f, 0, 0, -1, 0, 0};
    uint64_t ids[2 * 8];
    float dists[2 * 8];
    cr_assert_eq(gt_knn(base, n, query, 2, dim, SHOAL_METRIC_L2, k, 0, ids, dists, NULL), SHOAL_OK);
    const uint64_t want0[5] = {4, 3, 2, 1, 0}, want1[5] = {0, 1, 2, 3, 4};
    for (size_t j = 0; j < 5; j++) {
        cr_assert_eq(ids[j], want0[j]);
        cr_assert_eq(ids[k + j], want1[j]);
        cr_assert_float_eq(dists[k + j], (float)((j + 1) * (j + 1)), 1e-6);
    }
    for (size_t j = 5; j < k; j++) {
        cr_assert_eq(ids[j], TOPK_ID_NONE);
        cr_assert_eq(ids[k + j], TOPK_ID_NONE);
        cr_assert(isinf(dists[j]) && dists[j] > 0);
    }
}

Test(groundtruth, exact_ties_break_by_id)
{
    /* Rows 2, 5 and 9 are the same point; the query is that point. */
    const size_t n = 12, dim = 4;
    float base[12 * 4];
    for (size_t i = 0; i < n * dim; i++)
        base[i] = (float)((i * 7) % 11);
    memcpy(base + 5 * dim, base + 2 * dim, dim * sizeof(float));
    memcpy(base + 9 * dim, base + 2 * dim, dim * sizeof(float));
    uint64_t ids[3];
    for (shoal_metric_t m = SHOAL_METRIC_L2; m <= SHOAL_METRIC_COSINE; m++) {
        if (m == SHOAL_METRIC_IP)
            continue; /* the nearest under IP is not the point itself */
        cr_assert_eq(gt_knn(base, n, base + 2 * dim, 1, dim, m, 3, 1, ids, NULL, NULL), 0);
        cr_assert(ids[0] == 2 && ids[1] == 5 && ids[2] == 9, "%s: %llu %llu %llu",
                  shoal_metric_name(m), (unsigned long long)ids[0], (unsigned long long)ids[1],
                  (unsigned long long)ids[2]);
    }
}

Test(groundtruth, cosine_zero_vectors)
{
    /* A zero row is at distance 1 from everything; a zero query sees every row
     * at distance 1, so it gets the first k ids in order. */
    const size_t dim = 2;
    const float base[4 * 2] = {1, 0, 0, 0, -1, 0, 0, 1};
    const float queries[2 * 2] = {1, 0.1f, 0, 0};
    uint64_t ids[2 * 4];
    float dists[2 * 4];
    cr_assert_eq(gt_knn(base, 4, queries, 2, dim, SHOAL_METRIC_COSINE, 4, 1, ids, dists, NULL), 0);
    cr_assert(ids[0] == 0 && ids[1] == 3 && ids[2] == 1 && ids[3] == 2);
    cr_assert_float_eq(dists[2], 1.0f, 1e-6);
    for (size_t j = 0; j < 4; j++) {
        cr_assert_eq(ids[4 + j], j);
        cr_assert_float_eq(dists[4 + j], 1.0f, 1e-6);
    }
}

Test(groundtruth, bad_arguments)
{
    const float v[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    uint64_t ids[8];
    shoal_err_t err;
    cr_assert_eq(gt_knn(v, 4, v, 1, 2, SHOAL_METRIC_L2, 0, 1, ids, NULL, &err), SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "k") != NULL);
    cr_assert_eq(gt_knn(v, 4, v, 1, 0, SHOAL_METRIC_L2, 1, 1, ids, NULL, &err), SHOAL_EINVAL);
    cr_assert_eq(gt_knn(v, 0, v, 1, 2, SHOAL_METRIC_L2, 1, 1, ids, NULL, &err), SHOAL_EINVAL);
    cr_assert_eq(gt_knn(v, 4, v, 0, 2, SHOAL_METRIC_L2, 1, 1, ids, NULL, &err), SHOAL_EINVAL);
    cr_assert_eq(gt_knn(NULL, 4, v, 1, 2, SHOAL_METRIC_L2, 1, 1, ids, NULL, &err), SHOAL_EINVAL);
    cr_assert_eq(gt_knn(v, 4, NULL, 1, 2, SHOAL_METRIC_L2, 1, 1, ids, NULL, &err), SHOAL_EINVAL);
    cr_assert_eq(gt_knn(v, 4, v, 1, 2, SHOAL_METRIC_L2, 1, 1, NULL, NULL, &err), SHOAL_EINVAL);
    cr_assert_eq(gt_knn(v, 4, v, 1, 2, (shoal_metric_t)7, 1, 1, ids, NULL, &err), SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "metric") != NULL);
    /* Sizes whose byte counts overflow are refused before anything is read. */
    cr_assert_eq(gt_knn(v, SIZE_MAX / 2, v, 1, 4, SHOAL_METRIC_L2, 1, 1, ids, NULL, &err),
                 SHOAL_EINVAL);
    cr_assert_eq(gt_knn(v, 4, v, 2, 2, SHOAL_METRIC_L2, SIZE_MAX / 4, 1, ids, NULL, &err),
                 SHOAL_EINVAL);
    /* Non-finite inputs have no place in the order. */
    float bad[8];
    memcpy(bad, v, sizeof bad);
    bad[5] = NAN;
    cr_assert_eq(gt_knn(bad, 4, v, 1, 2, SHOAL_METRIC_L2, 1, 1, ids, NULL, &err), SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "row 2") != NULL, "%s", err.msg);
    bad[5] = INFINITY;
    cr_assert_eq(gt_knn(v, 4, bad, 4, 2, SHOAL_METRIC_IP, 1, 1, ids, NULL, &err), SHOAL_EINVAL);
    /* err is optional */
    cr_assert_eq(gt_knn(v, 4, v, 1, 2, SHOAL_METRIC_L2, 0, 1, ids, NULL, NULL), SHOAL_EINVAL);
}

/* ------------------------------------------------------------------------ */
/* Recall                                                                   */
/* ------------------------------------------------------------------------ */

Test(groundtruth, recall_hand_made)
{
    const int32_t truth[2 * 4] = {1, 2, 3, 4, 10, 11, 12, 13};
    const uint64_t all[2 * 4] = {4, 3, 2, 1, 10, 11, 12, 13};
    cr_assert_float_eq(gt_recall(all, 4, truth, 4, 2, 4), 1.0, 1e-12);

    const uint64_t half[2 * 3] = {1, 9, 2, 13, 12, 7};
    /* k = 2: query 0 has {1, 9} vs {1, 2}: 1/2; query 1 {13, 12} vs {10, 11}: 0. */
    cr_assert_float_eq(gt_recall(half, 3, truth, 4, 2, 2), 0.25, 1e-12);
    /* k = 3: {1, 9, 2} vs {1, 2, 3}: 2/3; {13, 12, 7} vs {10, 11, 12}: 1/3. */
    cr_assert_float_eq(gt_recall(half, 3, truth, 4, 2, 3), (2.0 / 3 + 1.0 / 3) / 2, 1e-12);

    /* Padding never matches, even against padding-like truth. */
    const int32_t neg[3] = {-1, 0, 1};
    const uint64_t padded[3] = {TOPK_ID_NONE, 1, TOPK_ID_NONE};
    cr_assert_float_eq(gt_recall(padded, 3, neg, 3, 1, 3), 1.0 / 3, 1e-12);
    /* A repeated id counts once. */
    const uint64_t dup[3] = {0, 0, 0};
    cr_assert_float_eq(gt_recall(dup, 3, neg, 3, 1, 3), 1.0 / 3, 1e-12);
    /* Nothing to measure. */
    cr_assert_float_eq(gt_recall(all, 4, truth, 4, 0, 4), 0.0, 1e-12);
}

/* ------------------------------------------------------------------------ */
/* Real data with shipped ground truth                                      */
/* ------------------------------------------------------------------------ */

/*
 * Recall@100 of our exact search against the shipped top-100 must be 1.0,
 * except that an id of ours missing from the shipped list is accepted when its
 * true distance ties the shipped 100th neighbour's (the shipped list had to
 * pick one of the tied points too).
 */
static void s_check_real(const char *sub)
{
    const size_t k = 100;
    s_dataset_t ds;
    s_dataset_load(&ds, sub, k);
    const float *base = ds.base, *queries = ds.queries;
    const int32_t *truth = ds.gt;
    size_t n = ds.n, dim = ds.dim, nq = ds.nq, gt_k = ds.gtk;
    shoal_metric_t metric = ds.metric;

    uint64_t *ids = malloc(nq * k * sizeof(uint64_t));
    cr_assert_not_null(ids);
    shoal_err_t err;
    cr_assert_eq(gt_knn(base, n, queries, nq, dim, metric, k, 0, ids, NULL, &err), SHOAL_OK, "%s",
                 err.msg);

    size_t hits = 0, ties = 0;
    for (size_t q = 0; q < nq; q++) {
        const float *qv = queries + q * dim;
        const int32_t *t = truth + q * gt_k;
        cr_assert(t[k - 1] >= 0 && (size_t)t[k - 1] < n);
        double last = s_true_dist(metric, qv, base + (size_t)t[k - 1] * dim, dim);
        for (size_t j = 0; j < k; j++) {
            uint64_t id = ids[q * k + j];
            int found = 0;
            for (size_t i = 0; i < k && !found; i++)
                found = t[i] >= 0 && (uint64_t)t[i] == id;
            if (found) {
                hits++;
                continue;
            }
            cr_assert(id < n);
            double d = s_true_dist(metric, qv, base + id * dim, dim);
            cr_assert(fabs(d - last) <= S_TIE_REL * fmax(fabs(d), fabs(last)),
                      "%s query %zu: our id %llu (d=%.9g) is not in the shipped top-%zu, whose "
                      "last has d=%.9g",
                      sub, q, (unsigned long long)id, d, k, last);
            hits++;
            ties++;
        }
    }
    double recall = (double)hits / (double)(nq * k);
    cr_assert_float_eq(recall, 1.0, 1e-12, "%s: recall@%zu %.6f", sub, k, recall);
    /* Where no tie was needed, gt_recall says the same. */
    if (ties == 0)
        cr_assert_float_eq(gt_recall(ids, k, truth, gt_k, nq, k), 1.0, 1e-12);
    free(ids);
    s_dataset_free(&ds);
}

Test(groundtruth, siftsmall_shipped_truth)
{
    s_check_real("siftsmall");
}

Test(groundtruth, glove50_shipped_truth)
{
    s_check_real("glove50");
}
