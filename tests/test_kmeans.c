/*
 * test_kmeans.c - k-means training and routing (coordinator/kmeans.h): the
 * objective never increases and ends near the true centres' on separated
 * blobs, k-means++ beats random seeding on a skewed set, runs are
 * deterministic for a seed and bit-identical for any thread count, no
 * centroid is left empty, cosine and IP centroids are unit length, bad input
 * is named, and kmeans_assign equals a brute-force nearest-centroid search
 * (groundtruth.h). Nothing here asserts a timing.
 */
#include "common/datagen.h"
#include "common/distance.h"
#include "common/error.h"
#include "common/groundtruth.h"
#include "common/log.h"
#include "coordinator/kmeans.h"
#include "gpu/gpu.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

TestSuite(kmeans, .init = shoal_log_init_from_env);

/* n points in k Gaussian blobs (std sigma) around centres of std sep; point i
 * belongs to blob i % k. centres (k x dim) may be NULL. */
static float *s_blobs(size_t n, size_t dim, size_t k, double sep, double sigma, uint64_t seed,
                      float *centres_out)
{
    shoal_rng_t rng;
    shoal_rng_seed(&rng, seed);
    float *centres = malloc(k * dim * sizeof(float));
    float *x = malloc(n * dim * sizeof(float));
    cr_assert(centres && x);
    for (size_t i = 0; i < k * dim; i++)
        centres[i] = (float)(shoal_rng_normal(&rng) * sep);
    for (size_t i = 0; i < n; i++)
        for (size_t d = 0; d < dim; d++)
            x[i * dim + d] = centres[(i % k) * dim + d] + (float)(shoal_rng_normal(&rng) * sigma);
    if (centres_out)
        memcpy(centres_out, centres, k * dim * sizeof(float));
    free(centres);
    return x;
}

static float *s_datagen(size_t n, size_t dim, size_t clusters, uint64_t seed)
{
    datagen_params_t p = {.dim = dim, .clusters = clusters, .seed = seed};
    shoal_err_t err;
    datagen_t *gen = datagen_new(&p, &err);
    cr_assert_not_null(gen, "%s", err.msg);
    float *x = malloc(n * dim * sizeof(float));
    cr_assert_not_null(x);
    datagen_fill(gen, DATAGEN_STREAM_BASE, 0, n, x);
    datagen_destroy(&gen);
    return x;
}

static void s_assert_monotone(const kmeans_result_t *r)
{
    cr_assert_geq(r->iters, 1);
    for (size_t t = 1; t < r->iters; t++)
        cr_assert_leq(r->objectives[t],
                      r->objectives[t - 1] + 1e-6 * fabs(r->objectives[t - 1]) + 1e-9,
                      "objective rose at iteration %zu: %.9g -> %.9g", t + 1,
                      r->objectives[t - 1], r->objectives[t]);
    cr_assert_eq(r->objective, r->objectives[r->iters - 1]);
}

static void s_assert_sizes(const uint64_t *sizes, size_t nlist, size_t n)
{
    uint64_t sum = 0;
    for (size_t j = 0; j < nlist; j++) {
        cr_assert_geq(sizes[j], 1, "centroid %zu is empty", j);
        sum += sizes[j];
    }
    cr_assert_eq(sum, n);
}

/* ------------------------------------------------------------------------ */

Test(kmeans, blobs_reach_true_centres_objective)
{
    const size_t n = 4000, dim = 16, k = 10;
    float truth[10 * 16];
    float *x = s_blobs(n, dim, k, 10.0, 1.0, 7, truth);
    double true_obj = 0.0;
    for (size_t i = 0; i < n; i++)
        true_obj += dist_l2sq(x + i * dim, truth + (i % k) * dim, dim);

    float c[10 * 16];
    uint64_t sizes[10];
    double objs[KMEANS_MAX_ITERS_DEFAULT];
    for (uint64_t seed = 0; seed < 4; seed++) {
        kmeans_result_t r = {.sizes = sizes, .objectives = objs};
        kmeans_opts_t o = {.seed = seed, .device = "cpu", .threads = 2};
        shoal_err_t err;
        cr_assert_eq(kmeans_train(x, n, dim, SHOAL_METRIC_L2, k, &o, c, &r, &err), 0, "%s",
                     err.msg);
        s_assert_monotone(&r);
        s_assert_sizes(sizes, k, n);
        cr_assert_leq(r.objective, 1.02 * true_obj, "objective %.6g vs true centres %.6g",
                      r.objective, true_obj);
        /* Every true centre has a trained centroid close to it. */
        for (size_t b = 0; b < k; b++) {
            float best = INFINITY;
            for (size_t j = 0; j < k; j++) {
                float d = dist_l2sq(truth + b * dim, c + j * dim, dim);
                best = d < best ? d : best;
            }
            cr_assert_lt(best, 1.0f, "blob %zu has no centroid near it (%.3g)", b, best);
        }
    }
    free(x);
}

Test(kmeans, objective_monotone_on_datagen_mixture)
{
    const size_t n = 6000, dim = 32, nlist = 40;
    float *x = s_datagen(n, dim, nlist, 3);
    float *c = malloc(nlist * dim * sizeof(float));
    uint64_t sizes[40];
    double objs[50];
    for (int init = 0; init < 2; init++) {
        kmeans_result_t r = {.sizes = sizes, .objectives = objs};
        kmeans_opts_t o = {.seed = 5, .device = "cpu", .threads = 2, .max_iters = 50,
                           .init = (kmeans_init_t)init};
        shoal_err_t err;
        cr_assert_eq(kmeans_train(x, n, dim, SHOAL_METRIC_L2, nlist, &o, c, &r, &err), 0, "%s",
                     err.msg);
        s_assert_monotone(&r);
        s_assert_sizes(sizes, nlist, n);
        cr_assert_lt(objs[r.iters - 1], objs[0], "Lloyd made no progress");
    }
    free(c);
    free(x);
}

Test(kmeans, deterministic_for_a_seed)
{
    const size_t n = 3000, dim = 24, nlist = 32;
    float *x = s_datagen(n, dim, 50, 11);
    float *a = malloc(nlist * dim * sizeof(float));
    float *b = malloc(nlist * dim * sizeof(float));
    float *d = malloc(nlist * dim * sizeof(float));
    kmeans_opts_t o = {.seed = 42, .device = "cpu", .threads = 2};
    kmeans_result_t ra = {0}, rb = {0};
    shoal_err_t err;
    cr_assert_eq(kmeans_train(x, n, dim, SHOAL_METRIC_L2, nlist, &o, a, &ra, &err), 0);
    cr_assert_eq(kmeans_train(x, n, dim, SHOAL_METRIC_L2, nlist, &o, b, &rb, &err), 0);
    cr_assert_eq(memcmp(a, b, nlist * dim * sizeof(float)), 0, "same seed, other centroids");
    cr_assert_eq(ra.iters, rb.iters);
    cr_assert_eq(ra.objective, rb.objective);
    o.seed = 43;
    cr_assert_eq(kmeans_train(x, n, dim, SHOAL_METRIC_L2, nlist, &o, d, NULL, &err), 0);
    cr_assert_neq(memcmp(a, d, nlist * dim * sizeof(float)), 0, "the seed has no effect");
    free(a);
    free(b);
    free(d);
    free(x);
}

/* Seeding splits the rows over threads but adds their costs in a fixed chunk
 * order, so the thread count must not change a bit of the centroids: after
 * seeding plus one update (max_iters 1, seeding's work dominates) and after a
 * full run. n is not a multiple of any chunk size, so the last chunk is short
 * and three threads get unequal shares. */
Test(kmeans, centroids_identical_for_any_thread_count)
{
    const size_t n = 5003, dim = 16, nlist = 24;
    float *x = s_datagen(n, dim, 30, 17);
    float *ref = malloc(nlist * dim * sizeof(float));
    float *c = malloc(nlist * dim * sizeof(float));
    cr_assert(ref && c);
    const shoal_metric_t metrics[] = {SHOAL_METRIC_L2, SHOAL_METRIC_IP, SHOAL_METRIC_COSINE};
    const size_t iters[] = {1, 0};
    for (size_t m = 0; m < 3; m++) {
        for (size_t it = 0; it < 2; it++) {
            double ref_obj = 0.0;
            for (size_t threads = 1; threads <= 3; threads++) {
                kmeans_opts_t o = {.seed = 8, .device = "cpu", .threads = threads,
                                   .max_iters = iters[it]};
                kmeans_result_t r = {0};
                shoal_err_t err;
                float *out = threads == 1 ? ref : c;
                cr_assert_eq(kmeans_train(x, n, dim, metrics[m], nlist, &o, out, &r, &err), 0,
                             "%s", err.msg);
                if (threads == 1) {
                    ref_obj = r.objective;
                    continue;
                }
                cr_assert_eq(memcmp(ref, c, nlist * dim * sizeof(float)), 0,
                             "%s, max_iters %zu: threads %zu gives other centroids than 1",
                             shoal_metric_name(metrics[m]), iters[it], threads);
                cr_assert_eq(r.objective, ref_obj);
            }
        }
    }
    free(ref);
    free(c);
    free(x);
}

/* One large blob and 15 small far ones: random seeding mostly lands in the
 * large blob and Lloyd cannot carry centroids across the gaps. */
Test(kmeans, plusplus_beats_random_on_skewed_set)
{
    const size_t dim = 8, big = 3000, small = 15, per = 20, n = big + small * per, nlist = 16;
    float *x = malloc(n * dim * sizeof(float));
    shoal_rng_t rng;
    shoal_rng_seed(&rng, 99);
    for (size_t i = 0; i < big * dim; i++)
        x[i] = (float)shoal_rng_normal(&rng);
    for (size_t s = 0; s < small; s++) {
        float centre[8];
        for (size_t d = 0; d < dim; d++)
            centre[d] = (float)(shoal_rng_normal(&rng) * 30.0);
        for (size_t p = 0; p < per; p++)
            for (size_t d = 0; d < dim; d++)
                x[(big + s * per + p) * dim + d] =
                    centre[d] + (float)(0.5 * shoal_rng_normal(&rng));
    }
    float c[16 * 8];
    double sum[2] = {0, 0};
    const int runs = 5;
    for (int init = 0; init < 2; init++) {
        for (int s = 0; s < runs; s++) {
            kmeans_opts_t o = {.seed = 1000 + (uint64_t)s, .device = "cpu", .threads = 2,
                               .init = (kmeans_init_t)init};
            kmeans_result_t r = {0};
            shoal_err_t err;
            cr_assert_eq(kmeans_train(x, n, dim, SHOAL_METRIC_L2, nlist, &o, c, &r, &err), 0);
            sum[init] += r.objective;
        }
    }
    cr_log_info("skewed set: mean objective k-means++ %.6g, random %.6g", sum[0] / runs,
                sum[1] / runs);
    cr_assert_lt(sum[KMEANS_INIT_PLUSPLUS], 0.5 * sum[KMEANS_INIT_RANDOM],
                 "k-means++ %.6g vs random %.6g", sum[0] / runs, sum[1] / runs);
    free(x);
}

/* Many copies of one row: seeded centroids coincide, ties leave clusters
 * empty, and the split rule must refill every one of them. */
Test(kmeans, empty_clusters_are_split)
{
    const size_t dim = 4, n = 200, nlist = 8;
    float *x = malloc(n * dim * sizeof(float));
    shoal_rng_t rng;
    shoal_rng_seed(&rng, 5);
    for (size_t i = 0; i < n; i++)
        for (size_t d = 0; d < dim; d++)
            x[i * dim + d] = i < 190 ? 1.0f : (float)shoal_rng_normal(&rng) * 5.0f;
    size_t splits = 0;
    for (uint64_t seed = 0; seed < 4; seed++) {
        float c[8 * 4];
        uint64_t sizes[8];
        double objs[KMEANS_MAX_ITERS_DEFAULT];
        kmeans_result_t r = {.sizes = sizes, .objectives = objs};
        kmeans_opts_t o = {.seed = seed, .device = "cpu", .threads = 1,
                           .init = KMEANS_INIT_RANDOM};
        shoal_err_t err;
        cr_assert_eq(kmeans_train(x, n, dim, SHOAL_METRIC_L2, nlist, &o, c, &r, &err), 0, "%s",
                     err.msg);
        s_assert_sizes(sizes, nlist, n);
        s_assert_monotone(&r);
        splits += r.empty_splits;
    }
    cr_assert_gt(splits, 0, "no empty cluster arose: the test set is not doing its job");
    free(x);
}

static void s_check_unit_run(shoal_metric_t metric)
{
    const size_t n = 3000, dim = 32, nlist = 24;
    float *x = s_datagen(n, dim, 30, 21);
    /* Give rows unequal lengths so that cosine's normalisation matters. */
    for (size_t i = 0; i < n; i++)
        for (size_t d = 0; d < dim; d++)
            x[i * dim + d] *= 0.5f + (float)(i % 7);
    float *c = malloc(nlist * dim * sizeof(float));
    uint64_t sizes[24];
    double objs[KMEANS_MAX_ITERS_DEFAULT];
    for (int init = 0; init < 2; init++) {
        kmeans_result_t r = {.sizes = sizes, .objectives = objs};
        kmeans_opts_t o = {.seed = 3, .device = "cpu", .threads = 2,
                           .init = (kmeans_init_t)init};
        shoal_err_t err;
        cr_assert_eq(kmeans_train(x, n, dim, metric, nlist, &o, c, &r, &err), 0, "%s", err.msg);
        for (size_t j = 0; j < nlist; j++) {
            float norm = sqrtf(dist_norm_sq(c + j * dim, dim));
            cr_assert_float_eq(norm, 1.0f, 1e-4f, "%s centroid %zu has norm %g",
                               shoal_metric_name(metric), j, norm);
        }
        s_assert_monotone(&r);
        s_assert_sizes(sizes, nlist, n);
    }
    free(c);
    free(x);
}

Test(kmeans, cosine_centroids_are_unit_length)
{
    s_check_unit_run(SHOAL_METRIC_COSINE);
}

Test(kmeans, ip_centroids_are_unit_length)
{
    s_check_unit_run(SHOAL_METRIC_IP);
}

Test(kmeans, errors_are_named)
{
    float x[10 * 4];
    for (size_t i = 0; i < 40; i++)
        x[i] = (float)i;
    float c[11 * 4];
    shoal_err_t err;
    cr_assert_eq(kmeans_train(x, 10, 4, SHOAL_METRIC_L2, 0, NULL, c, NULL, &err), SHOAL_EINVAL);
    cr_assert_not_null(strstr(err.msg, "nlist 0"), "%s", err.msg);
    cr_assert_eq(kmeans_train(x, 10, 4, SHOAL_METRIC_L2, 11, NULL, c, NULL, &err), SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "nlist 11") && strstr(err.msg, "n 10"), "%s", err.msg);
    cr_assert_eq(kmeans_train(x, 10, 0, SHOAL_METRIC_L2, 2, NULL, c, NULL, &err), SHOAL_EINVAL);
    cr_assert_not_null(strstr(err.msg, "dim"), "%s", err.msg);
    x[7 * 4 + 2] = NAN;
    cr_assert_eq(kmeans_train(x, 10, 4, SHOAL_METRIC_L2, 2, NULL, c, NULL, &err), SHOAL_EINVAL);
    cr_assert_not_null(strstr(err.msg, "row 7"), "%s", err.msg);
    x[7 * 4 + 2] = INFINITY;
    cr_assert_eq(kmeans_train(x, 10, 4, SHOAL_METRIC_L2, 2, NULL, c, NULL, &err), SHOAL_EINVAL);
    x[7 * 4 + 2] = 1.0f;
    memset(x + 3 * 4, 0, 4 * sizeof(float));
    cr_assert_eq(kmeans_train(x, 10, 4, SHOAL_METRIC_COSINE, 2, NULL, c, NULL, &err),
                 SHOAL_EINVAL);
    cr_assert_not_null(strstr(err.msg, "row 3"), "%s", err.msg);
    /* The zero row is fine under L2 and IP. */
    kmeans_opts_t o = {.device = "cpu", .threads = 1};
    cr_assert_eq(kmeans_train(x, 10, 4, SHOAL_METRIC_L2, 2, &o, c, NULL, &err), 0, "%s",
                 err.msg);
    cr_assert_eq(kmeans_train(x, 10, 4, SHOAL_METRIC_IP, 2, &o, c, NULL, &err), 0, "%s",
                 err.msg);
    o.device = "gpu:banana";
    cr_assert_eq(kmeans_train(x, 10, 4, SHOAL_METRIC_L2, 2, &o, c, NULL, &err), SHOAL_EINVAL);
    /* nlist = n is allowed: every row its own centroid. */
    o.device = "cpu";
    uint64_t sizes[10];
    kmeans_result_t r = {.sizes = sizes};
    cr_assert_eq(kmeans_train(x, 10, 4, SHOAL_METRIC_L2, 10, &o, c, &r, &err), 0, "%s",
                 err.msg);
    s_assert_sizes(sizes, 10, 10);
    cr_assert_float_eq(r.objective, 0.0, 1e-6);

    uint32_t lists[4];
    cr_assert_eq(kmeans_assign(c, 10, x, 1, 4, SHOAL_METRIC_L2, 0, "cpu", lists, &err),
                 SHOAL_EINVAL);
    cr_assert_eq(kmeans_assign(c, 10, x, 1, 4, SHOAL_METRIC_L2, 11, "cpu", lists, &err),
                 SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "nprobe 11") && strstr(err.msg, "nlist 10"), "%s", err.msg);
}

/* kmeans_assign against groundtruth.h's brute force, nprobe 1 and 4. Rows may
 * differ only where the brute force has two distances equal to rounding. */
static void s_check_assign(shoal_metric_t metric, size_t nprobe)
{
    const size_t dim = 24, nlist = 64, n = 700;
    float *all = s_datagen(nlist + n, dim, 20, 77);
    const float *cent = all, *vecs = all + nlist * dim;
    uint32_t *lists = malloc(n * nprobe * sizeof(uint32_t));
    uint64_t *ids = malloc(n * nprobe * sizeof(uint64_t));
    float *dists = malloc(n * (nprobe + 1) * sizeof(float));
    uint64_t *ids1 = malloc(n * (nprobe + 1) * sizeof(uint64_t));
    shoal_err_t err;
    cr_assert_eq(kmeans_assign(cent, nlist, vecs, n, dim, metric, nprobe, "cpu", lists, &err), 0,
                 "%s", err.msg);
    cr_assert_eq(gt_knn(cent, nlist, vecs, n, dim, metric, nprobe, 2, ids, NULL, &err), 0);
    cr_assert_eq(gt_knn(cent, nlist, vecs, n, dim, metric, nprobe + 1, 2, ids1, dists, &err), 0);
    size_t differ = 0;
    for (size_t i = 0; i < n; i++) {
        for (size_t t = 0; t < nprobe; t++) {
            if (lists[i * nprobe + t] == ids[i * nprobe + t])
                continue;
            /* Accept only a near-tie at this rank or the next. */
            const float *d = dists + i * (nprobe + 1);
            float tol = 1e-5f * (1.0f + fabsf(d[t]));
            int tie = (t > 0 && d[t] - d[t - 1] <= tol) || d[t + 1] - d[t] <= tol;
            cr_assert(tie, "%s row %zu rank %zu: list %u, brute force %llu",
                      shoal_metric_name(metric), i, t, lists[i * nprobe + t],
                      (unsigned long long)ids[i * nprobe + t]);
            differ++;
        }
    }
    cr_assert_leq(differ, n * nprobe / 100, "too many near-ties (%zu)", differ);
    free(lists);
    free(ids);
    free(ids1);
    free(dists);
    free(all);
}

Test(kmeans, assign_matches_brute_force)
{
    shoal_metric_t metrics[] = {SHOAL_METRIC_L2, SHOAL_METRIC_IP, SHOAL_METRIC_COSINE};
    for (size_t m = 0; m < 3; m++) {
        s_check_assign(metrics[m], 1);
        s_check_assign(metrics[m], 4);
    }
}

/* Routing after training: each sample row goes to the centroid the final
 * partition would give it at most a near-tie away, and every list is used. */
Test(kmeans, assign_after_train_uses_every_list)
{
    const size_t n = 5000, dim = 16, nlist = 50;
    float *x = s_datagen(n, dim, 60, 8);
    float *c = malloc(nlist * dim * sizeof(float));
    uint32_t *lists = malloc(n * sizeof(uint32_t));
    shoal_err_t err;
    kmeans_opts_t o = {.seed = 2, .device = "cpu", .threads = 2};
    cr_assert_eq(kmeans_train(x, n, dim, SHOAL_METRIC_L2, nlist, &o, c, NULL, &err), 0);
    cr_assert_eq(kmeans_assign(c, nlist, x, n, dim, SHOAL_METRIC_L2, 1, "cpu", lists, &err), 0);
    size_t used[50] = {0};
    for (size_t i = 0; i < n; i++) {
        cr_assert_lt(lists[i], nlist);
        used[lists[i]]++;
    }
    for (size_t j = 0; j < nlist; j++)
        cr_assert_gt(used[j], 0, "list %zu receives no sample row", j);
    free(lists);
    free(c);
    free(x);
}

/* On a machine with a GPU, training there reaches the CPU's objective. */
Test(kmeans, gpu_matches_cpu)
{
    shoal_err_t err;
    if (gpu_device_count(&err) <= 0)
        cr_skip_test("no GPU");
    const size_t n = 20000, dim = 64, nlist = 100;
    float *x = s_datagen(n, dim, 100, 4);
    float *a = malloc(nlist * dim * sizeof(float));
    float *b = malloc(nlist * dim * sizeof(float));
    kmeans_result_t ra = {0}, rb = {0};
    kmeans_opts_t o = {.seed = 9, .device = "cpu", .threads = 2};
    cr_assert_eq(kmeans_train(x, n, dim, SHOAL_METRIC_L2, nlist, &o, a, &ra, &err), 0);
    o.device = "gpu:0";
    cr_assert_eq(kmeans_train(x, n, dim, SHOAL_METRIC_L2, nlist, &o, b, &rb, &err), 0, "%s",
                 err.msg);
    cr_assert_leq(fabs(ra.objective - rb.objective), 1e-2 * ra.objective,
                  "cpu %.6g gpu %.6g", ra.objective, rb.objective);
    free(a);
    free(b);
    free(x);
}
