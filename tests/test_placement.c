/*
 * test_placement.c - IVF lists onto shards (coordinator/placement.h): the
 * balance bound on uniform and Zipf list sizes, replicas on distinct shards,
 * every list owned exactly `replicas` times, a locality score clearly better
 * than a random placement of the same balance on clustered centroids, the
 * one-shard case, and bad input. The rebalance planner: scale-out and drains
 * replayed move by move (each valid in turn, the result the one reported),
 * balance, locality against a fresh placement, pins, the move cap, nothing to
 * do, bad input. Nothing here asserts a timing.
 */
#include "common/datagen.h"
#include "common/error.h"
#include "common/log.h"
#include "coordinator/placement.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
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

/* ------------------------------------------------------------------------ */
/* Rebalance                                                                */
/* ------------------------------------------------------------------------ */

/* Largest total over every shard / mean over the allowed ones (placement.h). */
static double s_imbalance(const uint32_t *owners, const uint64_t *sizes, size_t nlist,
                          size_t nshards, size_t replicas, const uint8_t *allowed)
{
    uint64_t *totals = calloc(nshards, sizeof(uint64_t)), mx = 0, sum = 0;
    for (size_t i = 0; i < nlist; i++)
        for (size_t r = 0; r < replicas; r++)
            totals[owners[i * replicas + r]] += sizes ? sizes[i] : 1;
    size_t nallowed = 0;
    for (size_t s = 0; s < nshards; s++) {
        mx = totals[s] > mx ? totals[s] : mx;
        sum += totals[s];
        nallowed += allowed[s];
    }
    free(totals);
    return (double)mx / ((double)sum / (double)nallowed);
}

static size_t s_slots_on(const uint32_t *owners, size_t nslots, uint32_t shard)
{
    size_t n = 0;
    for (size_t t = 0; t < nslots; t++)
        n += owners[t] == shard;
    return n;
}

/* The outcome of one rebalance, checked by s_rebalance. */
typedef struct {
    uint32_t *owners;          /* new owners, nlist x replicas */
    placement_move_t *moves;   /* as returned */
    size_t nmoves;             /* as returned */
    placement_plan_report_t rp; /* as returned */
} s_plan_out_t;

static void s_plan_out_free(s_plan_out_t *out)
{
    free(out->owners);
    free(out->moves);
}

/*
 * Rebalances and checks the plan by replaying it on a copy of owners: each
 * move's from is the slot's owner at its turn, its to an allowed shard with
 * no replica of the list, the slot not pinned; the end is new_owners, and
 * the report agrees with what the moves did.
 */
static s_plan_out_t s_rebalance(const float *c, size_t nlist, size_t dim, const uint64_t *sizes,
                                size_t nshards, size_t replicas, const uint32_t *owners,
                                const uint8_t *allowed, const uint8_t *pinned, size_t max_moves)
{
    size_t nslots = nlist * replicas;
    s_plan_out_t out = {.owners = malloc(nslots * sizeof(uint32_t))};
    shoal_err_t err;
    cr_assert_eq(placement_rebalance(c, nlist, dim, SHOAL_METRIC_L2, sizes, nshards, replicas,
                                     owners, allowed, pinned, 1.1, 8, max_moves, out.owners,
                                     &out.moves, &out.nmoves, &out.rp, &err), 0, "%s", err.msg);
    cr_assert_eq(placement_check(out.owners, nlist, nshards, replicas, &err), 0, "%s", err.msg);
    cr_assert_eq(out.rp.nmoves, out.nmoves);
    cr_assert_eq(out.moves == NULL, out.nmoves == 0, "moves NULL exactly when there are none");
    if (max_moves)
        cr_assert_leq(out.nmoves, max_moves);

    uint32_t *replay = malloc(nslots * sizeof(uint32_t));
    memcpy(replay, owners, nslots * sizeof(uint32_t));
    uint64_t vectors = 0;
    for (size_t t = 0; t < out.nmoves; t++) {
        const placement_move_t *m = &out.moves[t];
        cr_assert_lt(m->list, nlist, "move %zu", t);
        cr_assert_lt(m->replica, replicas, "move %zu", t);
        size_t slot = (size_t)m->list * replicas + m->replica;
        cr_assert_eq(replay[slot], m->from, "move %zu: list %u replica %u is on shard %u, not "
                     "%u", t, m->list, m->replica, replay[slot], m->from);
        cr_assert(pinned == NULL || !pinned[slot], "move %zu moves a pinned slot", t);
        cr_assert_lt(m->to, nshards, "move %zu", t);
        cr_assert(allowed[m->to], "move %zu goes to shard %u, which may not hold lists", t,
                  m->to);
        for (size_t r = 0; r < replicas; r++)
            cr_assert_neq(replay[(size_t)m->list * replicas + r], m->to, "move %zu: shard %u "
                          "holds list %u already", t, m->to, m->list);
        cr_assert_eq(m->vectors, sizes ? sizes[m->list] : 1, "move %zu", t);
        replay[slot] = m->to;
        vectors += m->vectors;
    }
    cr_assert_eq(memcmp(replay, out.owners, nslots * sizeof(uint32_t)), 0,
                 "the moves replayed give new_owners");
    cr_assert_eq(out.rp.vectors_moved, vectors);
    cr_assert_float_eq(out.rp.imbalance_before,
                       s_imbalance(owners, sizes, nlist, nshards, replicas, allowed), 1e-9);
    cr_assert_float_eq(out.rp.imbalance_after,
                       s_imbalance(out.owners, sizes, nlist, nshards, replicas, allowed), 1e-9);
    double spq;
    cr_assert_eq(placement_locality(c, nlist, dim, SHOAL_METRIC_L2, out.owners, nshards,
                                    replicas, 8, &spq, &err), 0, "%s", err.msg);
    cr_assert_float_eq(out.rp.spq_after, spq, 1e-9);
    free(replay);
    return out;
}

static uint64_t *s_random_sizes(size_t nlist, uint64_t lo, uint64_t hi, uint64_t seed)
{
    uint64_t *sizes = malloc(nlist * sizeof(uint64_t));
    shoal_rng_t rng;
    shoal_rng_seed(&rng, seed);
    for (size_t i = 0; i < nlist; i++)
        sizes[i] = lo + (uint64_t)(shoal_rng_uniform(&rng) * (double)(hi - lo));
    return sizes;
}

static void s_log_plan(const char *what, const s_plan_out_t *out, const uint64_t *sizes,
                       size_t nlist, size_t replicas)
{
    uint64_t all = 0;
    for (size_t i = 0; i < nlist; i++)
        all += sizes ? sizes[i] : 1;
    cr_log_info("%s: %zu moves, %.1f%% of the vectors, max/mean %.3f -> %.3f, shards per "
                "query %.2f -> %.2f (fresh %.2f)", what, out->nmoves,
                100.0 * (double)out->rp.vectors_moved / (double)(all * replicas),
                out->rp.imbalance_before, out->rp.imbalance_after, out->rp.spq_before,
                out->rp.spq_after, out->rp.spq_fresh);
}

Test(placement, rebalance_three_to_four_shards)
{
    const size_t nlist = 256, dim = 32;
    float *c = s_centroids(nlist, dim, 16, 21);
    uint64_t *sizes = s_random_sizes(nlist, 500, 1500, 22);
    uint32_t owners[256], fresh[256];
    uint8_t allowed[4] = {1, 1, 1, 1};
    placement_report_t rp;
    s_place(c, nlist, dim, sizes, 3, 1, owners, &rp); /* shard 3 is new and empty */
    s_place(c, nlist, dim, sizes, 4, 1, fresh, &rp);
    size_t differ = 0;
    for (size_t i = 0; i < nlist; i++)
        differ += owners[i] != fresh[i];

    s_plan_out_t out = s_rebalance(c, nlist, dim, sizes, 4, 1, owners, allowed, NULL, 0);
    s_log_plan("3 -> 4 shards", &out, sizes, nlist, 1);
    cr_log_info("a fresh placement moves %zu lists", differ);
    cr_assert_leq(out.rp.imbalance_after, 1.1 + 1e-9);
    cr_assert_leq(out.rp.spq_after, 1.1 * out.rp.spq_fresh, "%.3f vs fresh %.3f",
                  out.rp.spq_after, out.rp.spq_fresh);
    cr_assert_lt(out.nmoves, differ / 2, "%zu moves, fresh %zu", out.nmoves, differ);
    cr_assert_gt(s_slots_on(out.owners, nlist, 3), 0);
    double spq;
    shoal_err_t err;
    cr_assert_eq(placement_locality(c, nlist, dim, SHOAL_METRIC_L2, fresh, 4, 1, 8, &spq, &err),
                 0, "%s", err.msg);
    cr_assert_float_eq(out.rp.spq_fresh, spq, 1e-9);
    cr_assert_eq(placement_locality(c, nlist, dim, SHOAL_METRIC_L2, owners, 4, 1, 8, &spq, &err),
                 0, "%s", err.msg);
    cr_assert_float_eq(out.rp.spq_before, spq, 1e-9);
    s_plan_out_free(&out);
    free(sizes);
    free(c);
}

Test(placement, rebalance_drain_one_of_four)
{
    const size_t nlist = 256, dim = 32;
    float *c = s_centroids(nlist, dim, 16, 23);
    uint64_t *sizes = s_random_sizes(nlist, 500, 1500, 24);
    uint32_t owners[256];
    uint8_t allowed[4] = {1, 1, 0, 1};
    placement_report_t rp;
    s_place(c, nlist, dim, sizes, 4, 1, owners, &rp);
    size_t on_drained = s_slots_on(owners, nlist, 2);

    s_plan_out_t out = s_rebalance(c, nlist, dim, sizes, 4, 1, owners, allowed, NULL, 0);
    s_log_plan("drain 1 of 4 shards", &out, sizes, nlist, 1);
    cr_assert_eq(s_slots_on(out.owners, nlist, 2), 0, "the drained shard is empty");
    cr_assert_eq(out.nmoves, on_drained, "only the drained shard's lists move");
    cr_assert_leq(out.rp.imbalance_after, 1.1 + 1e-9);
    cr_assert_leq(out.rp.spq_after, 1.1 * out.rp.spq_fresh, "%.3f vs fresh %.3f",
                  out.rp.spq_after, out.rp.spq_fresh);
    s_plan_out_free(&out);
    free(sizes);
    free(c);
}

Test(placement, rebalance_drain_with_replicas)
{
    const size_t nlist = 240, dim = 16, nshards = 5;
    float *c = s_centroids(nlist, dim, 12, 25);
    uint64_t *sizes = s_random_sizes(nlist, 100, 300, 26);
    uint32_t *owners = malloc(nlist * 3 * sizeof(uint32_t));
    uint8_t allowed[5] = {1, 0, 1, 1, 1};
    for (size_t replicas = 2; replicas <= 3; replicas++) {
        for (int by_count = 0; by_count <= 1; by_count++) {
            const uint64_t *sz = by_count ? NULL : sizes;
            placement_report_t rp;
            s_place(c, nlist, dim, sz, nshards, replicas, owners, &rp);
            s_plan_out_t out = s_rebalance(c, nlist, dim, sz, nshards, replicas, owners,
                                           allowed, NULL, 0);
            char what[64];
            snprintf(what, sizeof(what), "drain 1 of 5, %zu replicas%s", replicas,
                     by_count ? ", by count" : "");
            s_log_plan(what, &out, sz, nlist, replicas);
            cr_assert_eq(s_slots_on(out.owners, nlist * replicas, 1), 0);
            cr_assert_leq(out.rp.imbalance_after, 1.1 + 1e-9, "%zu replicas: %.3f", replicas,
                          out.rp.imbalance_after);
            s_plan_out_free(&out);
        }
    }
    free(owners);
    free(sizes);
    free(c);
}

Test(placement, rebalance_leaves_pinned_slots)
{
    const size_t nlist = 120, dim = 8, nshards = 4, replicas = 2;
    float *c = s_centroids(nlist, dim, 8, 27);
    uint32_t owners[240];
    uint8_t allowed[4] = {1, 1, 1, 0}, pinned[240] = {0};
    placement_report_t rp;
    s_place(c, nlist, dim, NULL, nshards, replicas, owners, &rp);
    size_t held = SIZE_MAX, other = SIZE_MAX;
    for (size_t t = 0; t < nlist * replicas; t++) {
        if (owners[t] == 3 && held == SIZE_MAX)
            held = t;
        else if (owners[t] == 0 && other == SIZE_MAX)
            other = t;
    }
    pinned[held] = pinned[other] = 1;
    s_plan_out_t out = s_rebalance(c, nlist, dim, NULL, nshards, replicas, owners, allowed,
                                   pinned, 0);
    cr_assert_eq(out.owners[held], 3, "the pinned slot stays on the drained shard");
    cr_assert_eq(out.owners[other], 0);
    cr_assert_eq(s_slots_on(out.owners, nlist * replicas, 3), 1, "all else left shard 3");
    s_plan_out_free(&out);
    free(c);
}

Test(placement, rebalance_max_moves_caps_the_plan)
{
    const size_t nlist = 200, dim = 16;
    float *c = s_centroids(nlist, dim, 10, 28);
    uint64_t *sizes = s_random_sizes(nlist, 50, 150, 29);
    uint32_t owners[200];
    uint8_t drain[4] = {0, 1, 1, 1}, all[4] = {1, 1, 1, 1};
    placement_report_t rp;
    s_place(c, nlist, dim, sizes, 4, 1, owners, &rp);
    /* Drained slots come first. */
    s_plan_out_t out = s_rebalance(c, nlist, dim, sizes, 4, 1, owners, drain, NULL, 5);
    cr_assert_eq(out.nmoves, 5);
    for (size_t t = 0; t < out.nmoves; t++)
        cr_assert_eq(out.moves[t].from, 0, "move %zu leaves the drained shard", t);
    cr_assert_eq(s_slots_on(out.owners, nlist, 0), s_slots_on(owners, nlist, 0) - 5);
    s_plan_out_free(&out);
    /* Scale-out: the moves made are the most useful ones, so each lowers the
     * imbalance already. */
    s_place(c, nlist, dim, sizes, 3, 1, owners, &rp);
    s_plan_out_t whole = s_rebalance(c, nlist, dim, sizes, 4, 1, owners, all, NULL, 0);
    cr_assert_gt(whole.nmoves, 3);
    out = s_rebalance(c, nlist, dim, sizes, 4, 1, owners, all, NULL, 3);
    cr_assert_eq(out.nmoves, 3);
    cr_assert_lt(out.rp.imbalance_after, out.rp.imbalance_before);
    s_plan_out_free(&out);
    s_plan_out_free(&whole);
    free(sizes);
    free(c);
}

/* A list larger than the slack: the plan gets as close as it can (the
 * list's shard ends holding it alone) and stops. */
Test(placement, rebalance_giant_list_gets_as_close_as_it_can)
{
    const size_t nlist = 100, dim = 8;
    float *c = s_centroids(nlist, dim, 8, 32);
    uint64_t *sizes = s_random_sizes(nlist, 90, 110, 33);
    sizes[41] = 4000; /* the mean over 5 shards is ~2800 */
    uint32_t owners[100];
    uint8_t allowed[5] = {1, 1, 1, 1, 1};
    placement_report_t rp;
    s_place(c, nlist, dim, sizes, 4, 1, owners, &rp);
    s_plan_out_t out = s_rebalance(c, nlist, dim, sizes, 5, 1, owners, allowed, NULL, 0);
    uint64_t sum = 0;
    for (size_t i = 0; i < nlist; i++)
        sum += sizes[i];
    cr_assert_float_eq(out.rp.imbalance_after, 4000.0 / ((double)sum / 5.0), 1e-9,
                       "max/mean %.3f", out.rp.imbalance_after);
    cr_assert_eq(s_slots_on(out.owners, nlist, out.owners[41]), 1);
    s_plan_out_free(&out);
    free(sizes);
    free(c);
}

Test(placement, rebalance_nothing_to_do)
{
    const size_t nlist = 128, dim = 8, replicas = 2;
    float *c = s_centroids(nlist, dim, 8, 30);
    uint64_t *sizes = s_random_sizes(nlist, 500, 600, 31);
    uint32_t owners[256];
    uint8_t allowed[4] = {1, 1, 1, 1};
    placement_report_t rp;
    s_place(c, nlist, dim, sizes, 4, replicas, owners, &rp);
    cr_assert_leq(rp.imbalance, 1.1);
    s_plan_out_t out = s_rebalance(c, nlist, dim, sizes, 4, replicas, owners, allowed, NULL, 0);
    cr_assert_eq(out.nmoves, 0);
    cr_assert_null(out.moves);
    cr_assert_float_eq(out.rp.imbalance_after, out.rp.imbalance_before, 1e-12);
    cr_assert_float_eq(out.rp.spq_after, out.rp.spq_before, 1e-12);
    cr_assert_gt(out.rp.spq_fresh, 0.0, "the report is filled");
    s_plan_out_free(&out);
    free(sizes);
    free(c);
}

Test(placement, rebalance_bad_input)
{
    float c[6 * 2] = {0, 0, 1, 0, 0, 1, 1, 1, 2, 2, 3, 1};
    uint32_t owners[6 * 3] = {0, 1, 2, 1, 2, 3, 2, 3, 0, 3, 0, 1, 0, 1, 2, 1, 2, 3};
    uint32_t out[6 * 3];
    uint8_t allowed[4] = {1, 0, 1, 0};
    placement_move_t *moves = (placement_move_t *)1;
    size_t nmoves = 7;
    shoal_err_t err;
    cr_assert_eq(placement_rebalance(c, 6, 2, SHOAL_METRIC_L2, NULL, 4, 3, owners, allowed, NULL,
                                     1.1, 4, 0, out, &moves, &nmoves, NULL, &err), SHOAL_EINVAL);
    cr_assert_not_null(strstr(err.msg, "3 replicas need 3 shards that may hold lists, 2 may"),
                       "%s", err.msg);
    cr_assert_null(moves, "no moves on error");
    cr_assert_eq(nmoves, 0);
    allowed[1] = 1;
    owners[4 * 3 + 1] = 4; /* list 4, replica 1: no shard 4 */
    cr_assert_eq(placement_rebalance(c, 6, 2, SHOAL_METRIC_L2, NULL, 4, 3, owners, allowed, NULL,
                                     1.1, 4, 0, out, &moves, &nmoves, NULL, &err), SHOAL_EINVAL);
    cr_assert_not_null(strstr(err.msg, "list 4 replica 1 on shard 4"), "%s", err.msg);
    owners[4 * 3 + 1] = 0; /* list 4 is {0, 1, 2}: now twice on shard 0 */
    cr_assert_eq(placement_rebalance(c, 6, 2, SHOAL_METRIC_L2, NULL, 4, 3, owners, allowed, NULL,
                                     1.1, 4, 0, out, &moves, &nmoves, NULL, &err), SHOAL_EINVAL);
    cr_assert_not_null(strstr(err.msg, "list 4 has replicas 0 and 1 both on shard 0"), "%s",
                       err.msg);
    owners[4 * 3 + 1] = 1;
    cr_assert_eq(placement_rebalance(c, 6, 2, SHOAL_METRIC_L2, NULL, 4, 3, owners, allowed, NULL,
                                     0.9, 4, 0, out, &moves, &nmoves, NULL, &err), SHOAL_EINVAL);
    cr_assert_not_null(strstr(err.msg, "target_imbalance"), "%s", err.msg);
    cr_assert_eq(placement_rebalance(c, 6, 2, SHOAL_METRIC_L2, NULL, 4, 3, owners, allowed, NULL,
                                     NAN, 4, 0, out, &moves, &nmoves, NULL, &err), SHOAL_EINVAL);
    cr_assert_eq(placement_rebalance(c, 6, 2, SHOAL_METRIC_L2, NULL, 4, 3, owners, allowed, NULL,
                                     1.1, 0, 0, out, &moves, &nmoves, NULL, &err), SHOAL_EINVAL);
    cr_assert_not_null(strstr(err.msg, "nprobe"), "%s", err.msg);
    cr_assert_eq(placement_rebalance(c, 6, 2, SHOAL_METRIC_L2, NULL, 4, 0, owners, allowed, NULL,
                                     1.1, 4, 0, out, &moves, &nmoves, NULL, &err), SHOAL_EINVAL);
    cr_assert_eq(placement_rebalance(c, 6, 2, SHOAL_METRIC_L2, NULL, 0, 3, owners, allowed, NULL,
                                     1.1, 4, 0, out, &moves, &nmoves, NULL, &err), SHOAL_EINVAL);
    cr_assert_eq(placement_rebalance(c, 0, 2, SHOAL_METRIC_L2, NULL, 4, 3, owners, allowed, NULL,
                                     1.1, 4, 0, out, &moves, &nmoves, NULL, &err), SHOAL_EINVAL);
    c[7] = INFINITY;
    cr_assert_eq(placement_rebalance(c, 6, 2, SHOAL_METRIC_L2, NULL, 4, 3, owners, allowed, NULL,
                                     1.1, 4, 0, out, &moves, &nmoves, NULL, &err), SHOAL_EINVAL);
    cr_assert_not_null(strstr(err.msg, "centroid 3"), "%s", err.msg);
    c[7] = 1;
    /* The same input, well formed, plans; nprobe past nlist is capped. */
    cr_assert_eq(placement_rebalance(c, 6, 2, SHOAL_METRIC_L2, NULL, 4, 3, owners, allowed, NULL,
                                     1.1, 99, 0, out, &moves, &nmoves, NULL, &err), 0, "%s",
                 err.msg);
    cr_assert_eq(placement_check(out, 6, 4, 3, &err), 0, "%s", err.msg);
    free(moves);
}
