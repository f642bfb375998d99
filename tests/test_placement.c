/*
 * test_placement.c - IVF lists onto shards (coordinator/placement.h): the
 * balance bound on uniform and Zipf list sizes, replicas on distinct shards,
 * every list owned exactly `replicas` times, a locality score clearly better
 * than a random placement of the same balance on clustered centroids, the
 * one-shard case, and bad input. Nothing here asserts a timing.
 */
#include "common/datagen.h"
#include "common/error.h"
#include "common/log.h"
#include "coordinator/placement.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

TestSuite(placement, .init = shoal_log_init_from_env);

/* Clustered centroids, as k-means on real embeddings gives: points of a
 * datagen mixture with fewer components than lists. */
static float *s_centroids(size_t nlist, size_t dim, size_t clusters, uint64_t seed)
{
    datagen_params_t p = {.dim = dim, .clusters = clusters, .seed = seed};
    shoal_err_t err;
    datagen_t *gen = datagen_new(&p, &err);
    cr_assert_not_null(gen, "%s", err.msg);
    float *c = malloc(nlist * dim * sizeof(float));
    cr_assert_not_null(c);
    datagen_fill(gen, DATAGEN_STREAM_BASE, 0, nlist, c);
    datagen_destroy(&gen);
    return c;
}

static void s_shuffle_u64(uint64_t *v, size_t n, shoal_rng_t *rng)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(shoal_rng_uniform(rng) * (double)i) % i;
        uint64_t t = v[i - 1];
        v[i - 1] = v[j];
        v[j] = t;
    }
}

/* Zipf sizes scale / rank^s, ranks shuffled over the lists. */
static uint64_t *s_zipf(size_t nlist, double s, double scale, uint64_t seed)
{
    uint64_t *sizes = malloc(nlist * sizeof(uint64_t));
    for (size_t i = 0; i < nlist; i++)
        sizes[i] = (uint64_t)(scale / pow((double)(i + 1), s)) + 1;
    shoal_rng_t rng;
    shoal_rng_seed(&rng, seed);
    s_shuffle_u64(sizes, nlist, &rng);
    return sizes;
}

/*
 * Checks a placement: valid owners, each list exactly `replicas` times on
 * distinct shards, totals as reported, and max <= mean + replicas * largest.
 */
static void s_check(const uint32_t *owners, const uint64_t *sizes, size_t nlist, size_t nshards,
                    size_t replicas, const placement_report_t *rp)
{
    shoal_err_t err;
    cr_assert_eq(placement_check(owners, nlist, nshards, replicas, &err), 0, "%s", err.msg);
    uint64_t *totals = calloc(nshards, sizeof(uint64_t));
    uint64_t total = 0, largest = 0;
    for (size_t i = 0; i < nlist; i++) {
        uint64_t size = sizes ? sizes[i] : 1;
        total += size;
        largest = size > largest ? size : largest;
        for (size_t r = 0; r < replicas; r++) {
            uint32_t s = owners[i * replicas + r];
            for (size_t q = 0; q < r; q++)
                cr_assert_neq(owners[i * replicas + q], s, "list %zu twice on shard %u", i, s);
            totals[s] += size;
        }
    }
    uint64_t mx = 0, sum = 0;
    for (size_t s = 0; s < nshards; s++) {
        mx = totals[s] > mx ? totals[s] : mx;
        sum += totals[s];
        if (rp->shard_totals)
            cr_assert_eq(rp->shard_totals[s], totals[s], "shard %zu", s);
    }
    cr_assert_eq(sum, total * replicas, "every list is owned exactly %zu times", replicas);
    cr_assert_eq(rp->max_total, mx);
    cr_assert_eq(rp->largest_list, largest);
    double mean = (double)sum / (double)nshards;
    cr_assert_float_eq(rp->mean_total, mean, 1e-9 * mean + 1e-9);
    cr_assert_leq((double)mx, mean + (double)replicas * (double)largest,
                  "max %llu > mean %.1f + %zu x largest %llu", (unsigned long long)mx, mean,
                  replicas, (unsigned long long)largest);
    free(totals);
}

static void s_place(const float *c, size_t nlist, size_t dim, const uint64_t *sizes,
                    size_t nshards, size_t replicas, uint32_t *owners, placement_report_t *rp)
{
    shoal_err_t err;
    uint64_t *totals = malloc(nshards * sizeof(uint64_t));
    *rp = (placement_report_t){.shard_totals = totals};
    cr_assert_eq(placement_assign(c, nlist, dim, SHOAL_METRIC_L2, sizes, nshards, replicas, owners,
                                  rp, &err), 0, "%s", err.msg);
    s_check(owners, sizes, nlist, nshards, replicas, rp);
    rp->shard_totals = NULL;
    free(totals);
}

/* ------------------------------------------------------------------------ */

Test(placement, uniform_sizes_balance_within_ten_percent)
{
    const size_t nlist = 1024, dim = 32;
    float *c = s_centroids(nlist, dim, 16, 1);
    uint64_t *sizes = malloc(nlist * sizeof(uint64_t));
    shoal_rng_t rng;
    shoal_rng_seed(&rng, 2);
    for (size_t i = 0; i < nlist; i++)
        sizes[i] = 800 + (uint64_t)(shoal_rng_uniform(&rng) * 400.0);
    uint32_t *owners = malloc(nlist * 3 * sizeof(uint32_t));
    size_t shard_counts[] = {2, 3, 8, 16, 50};
    for (size_t t = 0; t < 5; t++) {
        for (size_t replicas = 1; replicas <= 3 && replicas <= shard_counts[t]; replicas++) {
            placement_report_t rp;
            s_place(c, nlist, dim, sizes, shard_counts[t], replicas, owners, &rp);
            cr_assert_leq(rp.imbalance, 1.1, "%zu shards x %zu: max/mean %.4f", shard_counts[t],
                          replicas, rp.imbalance);
        }
    }
    free(owners);
    free(sizes);
    free(c);
}

Test(placement, zipf_sizes_keep_the_bound)
{
    const size_t nlist = 2048, dim = 16;
    float *c = s_centroids(nlist, dim, 32, 3);
    uint32_t *owners = malloc(nlist * 3 * sizeof(uint32_t));
    double exps[] = {0.5, 1.0, 1.5};
    for (size_t e = 0; e < 3; e++) {
        uint64_t *sizes = s_zipf(nlist, exps[e], 1e6, 10 + e);
        for (size_t replicas = 1; replicas <= 3; replicas++) {
            placement_report_t rp;
            s_place(c, nlist, dim, sizes, 8, replicas, owners, &rp);
            cr_log_info("zipf s=%.1f, 8 shards x %zu: max/mean %.3f (largest list / mean "
                        "%.3f)", exps[e], replicas, rp.imbalance,
                        (double)rp.largest_list * (double)replicas / rp.mean_total);
            /* With s = 0.5 the largest list is ~1/8 of a shard's share and the cut
             * does much better than the worst-case bound. */
            if (exps[e] == 0.5)
                cr_assert_leq(rp.imbalance, 1.1, "max/mean %.4f", rp.imbalance);
        }
        free(sizes);
    }
    free(owners);
    free(c);
}

Test(placement, replicas_on_distinct_shards)
{
    const size_t nlist = 300, dim = 8;
    float *c = s_centroids(nlist, dim, 10, 4);
    uint32_t *owners = malloc(nlist * 7 * sizeof(uint32_t));
    for (size_t nshards = 1; nshards <= 7; nshards++) {
        for (size_t replicas = 1; replicas <= nshards; replicas++) {
            placement_report_t rp;
            s_place(c, nlist, dim, NULL, nshards, replicas, owners, &rp);
        }
    }
    /* The checker catches two replicas on one shard. */
    placement_report_t rp;
    s_place(c, nlist, dim, NULL, 5, 3, owners, &rp);
    owners[17 * 3 + 2] = owners[17 * 3 + 0];
    shoal_err_t err;
    cr_assert_eq(placement_check(owners, nlist, 5, 3, &err), SHOAL_EINTERNAL);
    cr_assert_not_null(strstr(err.msg, "list 17"), "%s", err.msg);
    owners[17 * 3 + 2] = 5;
    cr_assert_eq(placement_check(owners, nlist, 5, 3, &err), SHOAL_EINTERNAL);
    free(owners);
    free(c);
}

/* Locality against a random placement with exactly the same shard totals:
 * equal list sizes, and the owner rows permuted over the lists. */
Test(placement, locality_beats_random_placement)
{
    const size_t nlist = 1024, dim = 32, nshards = 16;
    float *c = s_centroids(nlist, dim, 24, 6);
    uint32_t *owners = malloc(nlist * 2 * sizeof(uint32_t));
    uint32_t *random = malloc(nlist * 2 * sizeof(uint32_t));
    for (size_t replicas = 1; replicas <= 2; replicas++) {
        placement_report_t rp;
        s_place(c, nlist, dim, NULL, nshards, replicas, owners, &rp);
        cr_assert_float_eq(rp.imbalance, 1.0, 1e-9);
        uint64_t *perm = malloc(nlist * sizeof(uint64_t));
        for (size_t i = 0; i < nlist; i++)
            perm[i] = i;
        shoal_rng_t rng;
        shoal_rng_seed(&rng, 77);
        s_shuffle_u64(perm, nlist, &rng);
        for (size_t i = 0; i < nlist; i++)
            memcpy(random + i * replicas, owners + perm[i] * replicas,
                   replicas * sizeof(uint32_t));
        for (size_t t = 0; t < PLACEMENT_SCORE_NPROBES; t++) {
            size_t np = rp.locality_nprobe[t];
            double mine, theirs;
            shoal_err_t err;
            cr_assert_eq(placement_locality(c, nlist, dim, SHOAL_METRIC_L2, owners, nshards,
                                            replicas, np, &mine, &err), 0, "%s", err.msg);
            cr_assert_float_eq(mine, rp.locality[t], 1e-9);
            cr_assert_eq(placement_locality(c, nlist, dim, SHOAL_METRIC_L2, random, nshards,
                                            replicas, np, &theirs, &err), 0, "%s", err.msg);
            cr_log_info("%zu lists on %zu shards x %zu, nprobe %zu: %.2f shards per query, "
                        "random %.2f", nlist, nshards, replicas, np, mine, theirs);
            cr_assert_float_eq(rp.locality[0], 1.0, 1e-9, "nprobe 1 touches one shard");
            if (np >= 4)
                cr_assert_lt(mine, 0.6 * theirs, "nprobe %zu: %.2f vs random %.2f", np, mine,
                             theirs);
        }
        free(perm);
    }
    free(random);
    free(owners);
    free(c);
}

Test(placement, cosine_and_ip_centroids)
{
    const size_t nlist = 512, dim = 16, nshards = 8;
    float *c = s_centroids(nlist, dim, 16, 12);
    uint32_t owners[512];
    shoal_metric_t metrics[] = {SHOAL_METRIC_COSINE, SHOAL_METRIC_IP};
    for (size_t m = 0; m < 2; m++) {
        placement_report_t rp = {0};
        shoal_err_t err;
        cr_assert_eq(placement_assign(c, nlist, dim, metrics[m], NULL, nshards, 1, owners, &rp,
                                      &err), 0, "%s", err.msg);
        cr_assert_float_eq(rp.imbalance, 1.0, 1e-9);
        cr_assert_lt(rp.locality[2], 0.6 * nshards, "%s: %.2f shards at nprobe 16",
                     shoal_metric_name(metrics[m]), rp.locality[2]);
    }
    free(c);
}

Test(placement, one_shard_and_few_lists)
{
    float c[5 * 3] = {0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 1, 1};
    uint64_t sizes[5] = {10, 20, 30, 40, 50};
    uint32_t owners[5 * 4];
    placement_report_t rp;
    s_place(c, 5, 3, sizes, 1, 1, owners, &rp);
    for (size_t i = 0; i < 5; i++)
        cr_assert_eq(owners[i], 0);
    cr_assert_float_eq(rp.imbalance, 1.0, 1e-12);
    for (size_t t = 0; t < PLACEMENT_SCORE_NPROBES; t++) {
        cr_assert_float_eq(rp.locality[t], 1.0, 1e-12);
        cr_assert_leq(rp.locality_nprobe[t], 5);
    }
    /* Fewer lists than shards: some shards are empty, the bound still holds. */
    s_place(c, 5, 3, sizes, 8, 1, owners, &rp);
    cr_assert_eq(rp.min_total, 0);
    s_place(c, 5, 3, sizes, 8, 4, owners, &rp);
    /* All sizes zero: lists are spread by count. */
    uint64_t zeros[5] = {0};
    s_place(c, 5, 3, zeros, 5, 1, owners, &rp);
    for (size_t i = 0; i < 5; i++)
        for (size_t j = 0; j < i; j++)
            cr_assert_neq(owners[i], owners[j], "lists %zu and %zu share a shard", i, j);
}

Test(placement, bad_input)
{
    float c[4 * 2] = {0, 0, 1, 0, 0, 1, 1, 1};
    uint32_t owners[4 * 3];
    shoal_err_t err;
    cr_assert_eq(placement_assign(c, 4, 2, SHOAL_METRIC_L2, NULL, 2, 3, owners, NULL, &err),
                 SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "replicas 3") && strstr(err.msg, "nshards 2"), "%s", err.msg);
    cr_assert_eq(placement_assign(c, 4, 2, SHOAL_METRIC_L2, NULL, 0, 1, owners, NULL, &err),
                 SHOAL_EINVAL);
    cr_assert_eq(placement_assign(c, 4, 2, SHOAL_METRIC_L2, NULL, 2, 0, owners, NULL, &err),
                 SHOAL_EINVAL);
    cr_assert_eq(placement_assign(c, 0, 2, SHOAL_METRIC_L2, NULL, 2, 1, owners, NULL, &err),
                 SHOAL_EINVAL);
    cr_assert_eq(placement_assign(c, 4, 0, SHOAL_METRIC_L2, NULL, 2, 1, owners, NULL, &err),
                 SHOAL_EINVAL);
    cr_assert_eq(placement_assign(c, 4, 2, SHOAL_METRIC_L2, NULL, 2, 1, NULL, NULL, &err),
                 SHOAL_EINVAL);
    cr_assert_eq(placement_assign(NULL, 4, 2, SHOAL_METRIC_L2, NULL, 2, 1, owners, NULL, &err),
                 SHOAL_EINVAL);
    c[5] = NAN;
    cr_assert_eq(placement_assign(c, 4, 2, SHOAL_METRIC_L2, NULL, 2, 1, owners, NULL, &err),
                 SHOAL_EINVAL);
    cr_assert_not_null(strstr(err.msg, "centroid 2"), "%s", err.msg);
    c[5] = 1;
    cr_assert_eq(placement_assign(c, 4, 2, SHOAL_METRIC_COSINE, NULL, 2, 1, owners, NULL, &err),
                 SHOAL_EINVAL, "the zero centroid 0 has no direction");
    uint64_t huge[4] = {UINT64_MAX / 2, UINT64_MAX / 2, 5, 5};
    cr_assert_eq(placement_assign(c, 4, 2, SHOAL_METRIC_L2, huge, 2, 1, owners, NULL, &err),
                 SHOAL_EINVAL);
    cr_assert_not_null(strstr(err.msg, "overflow"), "%s", err.msg);
    cr_assert_eq(placement_assign(c, 4, 2, SHOAL_METRIC_L2, NULL, 2, 1, owners, NULL, &err), 0,
                 "%s", err.msg);
    double score;
    cr_assert_eq(placement_locality(c, 4, 2, SHOAL_METRIC_L2, owners, 2, 1, 5, &score, &err),
                 SHOAL_EINVAL);
    owners[1] = 9;
    cr_assert_eq(placement_locality(c, 4, 2, SHOAL_METRIC_L2, owners, 2, 1, 2, &score, &err),
                 SHOAL_EINVAL);
}
