/*
 * test_fanout.c - the fan-out arithmetic: plans checked against a brute-force
 * reference on random placements (each query goes exactly to the shards
 * owning its probed lists, once, in ascending order; per-query counts and the
 * fan-out sum), the gather of sub-batches, and the merge checked against a
 * brute-force reference (all rows concatenated, each id kept once at its
 * smallest distance, sorted by (distance, id), first k) with random arrival
 * orders, ids duplicated across shards, distance ties, padding anywhere in a
 * row and kk different from k; plus the errors (list or owner out of range,
 * k 0).
 */
#include "common/log.h"
#include "common/topk.h"
#include "coordinator/fanout.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

TestSuite(fanout, .init = shoal_log_init_from_env);

/* A small deterministic generator (xorshift64*), so failures replay. */
static uint64_t s_rng = 88172645463325252ull;

static uint64_t s_next(void)
{
    s_rng ^= s_rng >> 12;
    s_rng ^= s_rng << 25;
    s_rng ^= s_rng >> 27;
    return s_rng * 2685821657736338717ull;
}

static size_t s_below(size_t n)
{
    return (size_t)(s_next() % n);
}

static void s_shuffle(size_t *a, size_t n)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = s_below(i);
        size_t t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}

/* ------------------------------------------------------------------------ */
/* Plan                                                                     */
/* ------------------------------------------------------------------------ */

/* Checks plan against the definition, query by query and shard by shard. */
static void s_check_plan(const fanout_plan_t *plan, const uint32_t *lists, size_t nq, size_t nprobe,
                         const uint32_t *owners, size_t nshards)
{
    cr_assert_eq(plan->nq, nq);
    cr_assert_eq(plan->nshards, nshards);
    uint64_t fanout = 0;
    size_t *expect_counts = calloc(nshards + 1, sizeof *expect_counts);
    char *goes = calloc(nshards + 1, 1);
    for (size_t q = 0; q < nq; q++) {
        memset(goes, 0, nshards + 1);
        size_t distinct = 0;
        for (size_t p = 0; p < nprobe; p++) {
            uint32_t s = owners[lists[q * nprobe + p]];
            if (!goes[s]) {
                goes[s] = 1;
                distinct++;
            }
        }
        cr_assert_eq(plan->per_query[q], distinct, "query %zu: %u shards, expected %zu", q,
                     plan->per_query[q], distinct);
        fanout += distinct;
        /* q is in exactly the sub-batches of the shards it goes to. */
        for (size_t s = 0; s < nshards; s++) {
            int found = 0;
            for (size_t i = 0; i < plan->counts[s]; i++)
                found += plan->queries[s][i] == q;
            cr_assert_eq(found, goes[s], "query %zu appears %d times for shard %zu", q, found, s);
            expect_counts[s] += goes[s];
        }
    }
    cr_assert_eq(plan->fanout, fanout);
    for (size_t s = 0; s < nshards; s++) {
        cr_assert_eq(plan->counts[s], expect_counts[s], "shard %zu", s);
        if (plan->counts[s] == 0)
            cr_assert_null(plan->queries[s]);
        for (size_t i = 1; i < plan->counts[s]; i++)
            cr_assert_lt(plan->queries[s][i - 1], plan->queries[s][i], "shard %zu ascending", s);
    }
    free(expect_counts);
    free(goes);
}

Test(fanout, plan_matches_reference_on_random_placements)
{
    for (int trial = 0; trial < 60; trial++) {
        size_t nq = s_below(50);
        size_t nlist = 1 + s_below(40);
        size_t nprobe = s_below(nlist + 3); /* may exceed nlist: lists repeat */
        size_t nshards = 1 + s_below(9);
        uint32_t *owners = malloc(nlist * sizeof *owners);
        uint32_t *lists = malloc((nq * nprobe + 1) * sizeof *lists);
        /* Some trials leave shards without lists. */
        size_t used = trial % 3 == 0 ? 1 + s_below(nshards) : nshards;
        for (size_t l = 0; l < nlist; l++)
            owners[l] = (uint32_t)s_below(used);
        for (size_t i = 0; i < nq * nprobe; i++)
            lists[i] = (uint32_t)s_below(nlist);
        fanout_plan_t plan;
        shoal_err_t err;
        cr_assert_eq(fanout_plan_build(lists, nq, nprobe, owners, nlist, nshards, &plan, &err), 0,
                     "%s", err.msg);
        s_check_plan(&plan, lists, nq, nprobe, owners, nshards);
        fanout_plan_fini(&plan);
        cr_assert_null(plan.counts);
        fanout_plan_fini(&plan); /* twice is harmless */
        free(owners);
        free(lists);
    }
}

Test(fanout, plan_small_example)
{
    /* 4 lists on 3 shards: lists 0,1 -> shard 0; 2 -> shard 2; 3 -> shard 1. */
    uint32_t owners[] = {0, 0, 2, 1};
    uint32_t lists[] = {0, 1, /* q0: shard 0 only */
                        2, 3, /* q1: shards 2, 1 */
                        1, 2, /* q2: shards 0, 2 */
                        3, 3 /* q3: shard 1 */};
    fanout_plan_t plan;
    shoal_err_t err;
    cr_assert_eq(fanout_plan_build(lists, 4, 2, owners, 4, 3, &plan, &err), 0, "%s", err.msg);
    cr_assert_eq(plan.counts[0], 2);
    cr_assert_eq(plan.queries[0][0], 0);
    cr_assert_eq(plan.queries[0][1], 2);
    cr_assert_eq(plan.counts[1], 2);
    cr_assert_eq(plan.queries[1][0], 1);
    cr_assert_eq(plan.queries[1][1], 3);
    cr_assert_eq(plan.counts[2], 2);
    cr_assert_eq(plan.queries[2][0], 1);
    cr_assert_eq(plan.queries[2][1], 2);
    cr_assert_eq(plan.per_query[0], 1);
    cr_assert_eq(plan.per_query[1], 2);
    cr_assert_eq(plan.per_query[2], 2);
    cr_assert_eq(plan.per_query[3], 1);
    cr_assert_eq(plan.fanout, 6);

    /* Gather copies each shard's rows in its order. */
    enum { DIM = 3 };
    float queries[4 * DIM];
    for (size_t i = 0; i < 4 * DIM; i++)
        queries[i] = (float)i;
    for (size_t s = 0; s < 3; s++) {
        float out[4 * DIM];
        memset(out, 0, sizeof out);
        fanout_gather(&plan, s, queries, DIM, out);
        for (size_t i = 0; i < plan.counts[s]; i++)
            for (size_t d = 0; d < DIM; d++)
                cr_assert_eq(out[i * DIM + d], queries[plan.queries[s][i] * DIM + d]);
    }
    fanout_plan_fini(&plan);
}

Test(fanout, plan_empty_and_errors)
{
    fanout_plan_t plan;
    shoal_err_t err;
    uint32_t owners[] = {0, 1};
    cr_assert_eq(fanout_plan_build(NULL, 0, 2, owners, 2, 2, &plan, &err), 0, "%s", err.msg);
    cr_assert_eq(plan.fanout, 0);
    cr_assert_eq(plan.counts[0], 0);
    cr_assert_eq(plan.counts[1], 0);
    fanout_plan_fini(&plan);

    uint32_t lists[] = {0, 5};
    cr_assert_eq(fanout_plan_build(lists, 1, 2, owners, 2, 2, &plan, &err), SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "list 5"), "%s", err.msg);
    fanout_plan_fini(&plan);

    uint32_t bad_owners[] = {0, 2};
    uint32_t ok_lists[] = {0, 1};
    cr_assert_eq(fanout_plan_build(ok_lists, 1, 2, bad_owners, 2, 2, &plan, &err), SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "shard 2"), "%s", err.msg);
    fanout_plan_fini(&plan);
}

Test(fanout, gather_random)
{
    enum { NQ = 37, DIM = 5, NLIST = 12, NPROBE = 3, NSHARDS = 4 };
    uint32_t owners[NLIST], lists[NQ * NPROBE];
    for (size_t l = 0; l < NLIST; l++)
        owners[l] = (uint32_t)s_below(NSHARDS);
    for (size_t i = 0; i < NQ * NPROBE; i++)
        lists[i] = (uint32_t)s_below(NLIST);
    float queries[NQ * DIM];
    for (size_t i = 0; i < NQ * DIM; i++)
        queries[i] = (float)s_below(1000) / 7.0f;
    fanout_plan_t plan;
    shoal_err_t err;
    cr_assert_eq(fanout_plan_build(lists, NQ, NPROBE, owners, NLIST, NSHARDS, &plan, &err), 0);
    for (size_t s = 0; s < NSHARDS; s++) {
        float out[NQ * DIM];
        fanout_gather(&plan, s, queries, DIM, out);
        for (size_t i = 0; i < plan.counts[s]; i++)
            cr_assert_eq(
                memcmp(out + i * DIM, queries + plan.queries[s][i] * DIM, DIM * sizeof(float)), 0);
    }
    fanout_plan_fini(&plan);
}

/* ------------------------------------------------------------------------ */
/* Merge                                                                    */
/* ------------------------------------------------------------------------ */

typedef struct {
    float dist;
    uint64_t id;
} s_pair_t;

static int s_pair_cmp(const void *a, const void *b)
{
    const s_pair_t *x = a, *y = b;
    if (topk_better(x->dist, x->id, y->dist, y->id))
        return -1;
    if (topk_better(y->dist, y->id, x->dist, x->id))
        return 1;
    return 0;
}

/*
 * The reference answer of one query: every non-padding pair of its rows,
 * each id once at its smallest distance, sorted, first k, padded.
 */
static void s_reference(const s_pair_t *all, size_t n, size_t k, uint64_t *ids, float *dists)
{
    s_pair_t *uniq = malloc((n + 1) * sizeof *uniq);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (all[i].id == TOPK_ID_NONE)
            continue;
        size_t j = 0;
        while (j < m && uniq[j].id != all[i].id)
            j++;
        if (j == m)
            uniq[m++] = all[i];
        else if (all[i].dist < uniq[j].dist)
            uniq[j].dist = all[i].dist;
    }
    qsort(uniq, m, sizeof *uniq, s_pair_cmp);
    for (size_t i = 0; i < k; i++) {
        ids[i] = i < m ? uniq[i].id : TOPK_ID_NONE;
        dists[i] = i < m ? uniq[i].dist : INFINITY;
    }
    free(uniq);
}

/* One shard's reply: n rows of kk for the queries in qidx. */
typedef struct {
    size_t n, kk;
    uint32_t *qidx;
    uint64_t *ids;
    float *dists;
} s_reply_t;

/*
 * Random replies: each shard answers a random subset of the queries with a
 * row of up to kk distinct ids from a small range (so shards share ids, with
 * different distances), distances on a coarse grid (so ties happen), sorted,
 * padded at the end; with pad_inside, padding entries are also scattered
 * between the real ones.
 */
static void s_make_replies(s_reply_t *rep, size_t nshards, size_t nq, size_t kk, int pad_inside)
{
    for (size_t s = 0; s < nshards; s++) {
        s_reply_t *r = &rep[s];
        r->kk = kk;
        r->qidx = malloc((nq + 1) * sizeof *r->qidx);
        r->ids = malloc((nq * kk + 1) * sizeof *r->ids);
        r->dists = malloc((nq * kk + 1) * sizeof *r->dists);
        r->n = 0;
        for (size_t q = 0; q < nq; q++) {
            if (s_below(4) == 0)
                continue; /* this shard does not hold the query */
            size_t row = r->n++;
            r->qidx[row] = (uint32_t)q;
            size_t real = s_below(kk + 1);
            s_pair_t *pairs = malloc((kk + 1) * sizeof *pairs);
            size_t m = 0;
            while (m < real) {
                uint64_t id = s_below(3 * kk + 5);
                int dup = 0;
                for (size_t j = 0; j < m; j++)
                    dup |= pairs[j].id == id;
                if (dup)
                    continue;
                pairs[m].id = id;
                pairs[m].dist = (float)s_below(8) * 0.25f - 0.5f;
                m++;
            }
            qsort(pairs, m, sizeof *pairs, s_pair_cmp);
            uint64_t *ids = r->ids + row * kk;
            float *dists = r->dists + row * kk;
            size_t at = 0;
            for (size_t j = 0; j < m; j++) {
                while (pad_inside && at < kk - (m - j) && s_below(3) == 0) {
                    ids[at] = TOPK_ID_NONE;
                    dists[at++] = INFINITY;
                }
                ids[at] = pairs[j].id;
                dists[at++] = pairs[j].dist;
            }
            for (; at < kk; at++) {
                ids[at] = TOPK_ID_NONE;
                dists[at] = INFINITY;
            }
            free(pairs);
        }
    }
}

static void s_free_replies(s_reply_t *rep, size_t nshards)
{
    for (size_t s = 0; s < nshards; s++) {
        free(rep[s].qidx);
        free(rep[s].ids);
        free(rep[s].dists);
    }
}

/* Merges the replies in a random order and compares with the reference. */
static void s_check_merge(const s_reply_t *rep, size_t nshards, size_t nq, size_t k)
{
    fanout_merge_t m;
    shoal_err_t err;
    cr_assert_eq(fanout_merge_init(&m, nq, k, &err), 0, "%s", err.msg);
    size_t order[16];
    for (size_t s = 0; s < nshards; s++)
        order[s] = s;
    s_shuffle(order, nshards);
    for (size_t i = 0; i < nshards; i++) {
        const s_reply_t *r = &rep[order[i]];
        fanout_merge_add(&m, r->qidx, r->n, r->ids, r->dists, r->kk);
    }

    uint64_t *want_ids = malloc(k * sizeof *want_ids);
    float *want_dists = malloc(k * sizeof *want_dists);
    for (size_t q = 0; q < nq; q++) {
        size_t cap = 1;
        for (size_t s = 0; s < nshards; s++)
            cap += rep[s].n * rep[s].kk;
        s_pair_t *all = malloc(cap * sizeof *all);
        size_t n = 0;
        for (size_t s = 0; s < nshards; s++)
            for (size_t row = 0; row < rep[s].n; row++)
                if (rep[s].qidx[row] == q)
                    for (size_t j = 0; j < rep[s].kk; j++) {
                        all[n].id = rep[s].ids[row * rep[s].kk + j];
                        all[n++].dist = rep[s].dists[row * rep[s].kk + j];
                    }
        s_reference(all, n, k, want_ids, want_dists);
        for (size_t j = 0; j < k; j++) {
            cr_assert_eq(m.ids[q * k + j], want_ids[j], "query %zu slot %zu: id %llu, want %llu", q,
                         j, (unsigned long long)m.ids[q * k + j], (unsigned long long)want_ids[j]);
            cr_assert_eq(m.dists[q * k + j], want_dists[j], "query %zu slot %zu", q, j);
        }
        free(all);
    }
    free(want_ids);
    free(want_dists);
    fanout_merge_fini(&m);
    cr_assert_null(m.ids);
}

Test(fanout, merge_matches_reference)
{
    for (int trial = 0; trial < 80; trial++) {
        size_t nshards = 1 + s_below(6);
        size_t nq = 1 + s_below(12);
        size_t k = 1 + s_below(12);
        /* kk below, equal to and above k. */
        size_t kk = trial % 3 == 0 ? k : 1 + s_below(2 * k + 3);
        s_reply_t rep[16];
        s_make_replies(rep, nshards, nq, kk, trial % 2);
        s_check_merge(rep, nshards, nq, k);
        /* The same replies in another order give the same answer. */
        s_check_merge(rep, nshards, nq, k);
        s_free_replies(rep, nshards);
    }
}

Test(fanout, merge_mixed_kk_per_shard)
{
    enum { NQ = 5, K = 6 };
    s_reply_t rep[3];
    s_make_replies(&rep[0], 1, NQ, 2, 0);
    s_make_replies(&rep[1], 1, NQ, 6, 1);
    s_make_replies(&rep[2], 1, NQ, 15, 0);
    for (int i = 0; i < 4; i++)
        s_check_merge(rep, 3, NQ, K);
    s_free_replies(rep, 3);
}

Test(fanout, merge_duplicates_keep_nearer_copy)
{
    fanout_merge_t m;
    shoal_err_t err;
    cr_assert_eq(fanout_merge_init(&m, 2, 3, &err), 0);
    for (size_t i = 0; i < 6; i++) {
        cr_assert_eq(m.ids[i], TOPK_ID_NONE);
        cr_assert(isinf(m.dists[i]) && m.dists[i] > 0);
    }
    uint32_t q1[] = {1};
    uint64_t a_ids[] = {7, 9, TOPK_ID_NONE, TOPK_ID_NONE};
    float a_d[] = {0.5f, 0.7f, INFINITY, INFINITY};
    fanout_merge_add(&m, q1, 1, a_ids, a_d, 4);
    /* Shard b has 9 nearer and 7 farther; 3 ties 7's old distance with a larger id. */
    uint64_t b_ids[] = {9, 3, 7};
    float b_d[] = {0.1f, 0.5f, 0.9f};
    fanout_merge_add(&m, q1, 1, b_ids, b_d, 3);
    cr_assert_eq(m.ids[3], 9);
    cr_assert_eq(m.dists[3], 0.1f);
    cr_assert_eq(m.ids[4], 3); /* (0.5, 3) before (0.5, 7) */
    cr_assert_eq(m.ids[5], 7);
    cr_assert_eq(m.dists[5], 0.5f);
    /* Query 0 untouched; out-of-range query indexes are ignored. */
    cr_assert_eq(m.ids[0], TOPK_ID_NONE);
    uint32_t q9[] = {9};
    fanout_merge_add(&m, q9, 1, b_ids, b_d, 3);
    /* A row of padding changes nothing. */
    uint64_t pad[] = {TOPK_ID_NONE};
    float padd[] = {INFINITY};
    fanout_merge_add(&m, q1, 1, pad, padd, 1);
    cr_assert_eq(m.ids[3], 9);
    cr_assert_eq(m.ids[5], 7);
    fanout_merge_fini(&m);
    fanout_merge_fini(&m);

    cr_assert_eq(fanout_merge_init(&m, 2, 0, &err), SHOAL_EINVAL);
    fanout_merge_fini(&m);
}

Test(fanout, merge_large_k_many_shards)
{
    enum { NQ = 3 };
    s_reply_t rep[8];
    size_t k = 300;
    s_make_replies(rep, 8, NQ, 250, 1);
    s_check_merge(rep, 8, NQ, k);
    s_free_replies(rep, 8);
}
