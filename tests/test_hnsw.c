/*
 * test_hnsw.c - the HNSW index: recall against exact search on real and
 * generated data (L2, cosine, inner product), deletion one by one and in
 * batches (no deleted id ever returned, recall of the rest against exact
 * search, slot reuse, absent and repeated ids, deleting everything, the
 * entry point and whole top levels), filtered search, searches running
 * during a multi-threaded insert, upsert, save/load round trips and a table
 * of corrupted blobs, and argument checks.
 *
 * Real data comes from $SHOAL_DATASETS (default ../shared/datasets); tests
 * that need it skip, saying so, when it is absent. Builds use 2 threads so the
 * suite stays quick on 2 cores and under sanitizers. Nothing here asserts a
 * timing.
 */
#include "common/datagen.h"
#include "common/distance.h"
#include "common/groundtruth.h"
#include "common/quant.h"
#include "common/topk.h"
#include "common/vecfile.h"
#include "shard/hnsw.h"

#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define S_SEED    20240611ULL
#define S_THREADS 2

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */
/* ------------------------------------------------------------------------ */

static const char *s_datasets(void)
{
    const char *dir = getenv("SHOAL_DATASETS");
    return dir && *dir ? dir : "../shared/datasets";
}

/* Non-zero when DIR/sub exists. */
static int s_have(const char *sub)
{
    char dir[1024];
    struct stat st;
    snprintf(dir, sizeof dir, "%s/%s", s_datasets(), sub);
    return stat(dir, &st) == 0 && S_ISDIR(st.st_mode);
}

#define S_NEED(sub)                                                                                \
    do {                                                                                           \
        if (!s_have(sub)) {                                                                        \
            cr_skip_test("%s/%s not found (set SHOAL_DATASETS to the shared datasets folder): "    \
                         "real-data recall not checked",                                           \
                         s_datasets(), sub);                                                       \
            return;                                                                                \
        }                                                                                          \
    } while (0)

static void *s_load(const char *sub, const char *name, int ints, size_t *n, size_t *dim)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s/%s", s_datasets(), sub, name);
    shoal_err_t err;
    void *data = ints ? (void *)vecfile_load_i32(path, n, dim, &err)
                      : (void *)vecfile_load_f32(path, n, dim, &err);
    cr_assert_not_null(data, "loading %s: %s", path, err.msg);
    return data;
}

static float *s_gen(size_t n, size_t dim, unsigned stream, int normalize, uint64_t seed)
{
    shoal_err_t err;
    datagen_params_t p = {.dim = dim, .normalize = normalize, .seed = seed};
    datagen_t *g = datagen_new(&p, &err);
    cr_assert_not_null(g, "%s", err.msg);
    float *out = malloc(n * dim * sizeof(float));
    cr_assert_not_null(out);
    datagen_fill(g, stream, 0, n, out);
    datagen_destroy(&g);
    return out;
}

static hnsw_t *s_new(size_t dim, shoal_metric_t metric)
{
    shoal_err_t err;
    hnsw_params_t p = {.dim = dim, .metric = metric, .seed = S_SEED};
    hnsw_t *ix = hnsw_new(&p, &err);
    cr_assert_not_null(ix, "hnsw_new: %s", err.msg);
    return ix;
}

/* An index over rows 0..n-1 of base, with ids equal to row numbers. */
static hnsw_t *s_build(const float *base, size_t n, size_t dim, shoal_metric_t metric)
{
    hnsw_t *ix = s_new(dim, metric);
    uint64_t *ids = malloc(n * sizeof *ids);
    for (size_t i = 0; i < n; i++)
        ids[i] = i;
    shoal_err_t err;
    int rc = hnsw_insert_batch(ix, ids, base, n, S_THREADS, &err);
    cr_assert_eq(rc, 0, "hnsw_insert_batch: %s", err.msg);
    cr_assert_eq(hnsw_count(ix), n);
    free(ids);
    return ix;
}

static void s_search_all(const hnsw_t *ix, const float *queries, size_t nq, size_t dim, size_t k,
                         size_t ef, hnsw_filter_fn filter, void *arg, uint64_t *ids)
{
    float *dists = malloc(k * sizeof *dists);
    for (size_t q = 0; q < nq; q++) {
        shoal_err_t err;
        int n = hnsw_search(ix, queries + q * dim, k, ef, filter, arg, ids + q * k, dists, &err);
        cr_assert_geq(n, 0, "hnsw_search: %s", err.msg);
        for (int i = 1; i < n; i++)
            cr_assert_leq(dists[i - 1], dists[i], "results out of order");
    }
    free(dists);
}

static void s_validate(const hnsw_t *ix)
{
    shoal_err_t err;
    int rc = hnsw_validate(ix, &err);
    cr_assert_eq(rc, 0, "hnsw_validate: %s", err.msg);
}

/* Converts uint64 truth (gt_knn) to the int32 rows gt_recall wants, through map. */
static int32_t *s_truth32(const uint64_t *ids, size_t n, const uint64_t *map)
{
    int32_t *t = malloc(n * sizeof *t);
    for (size_t i = 0; i < n; i++)
        t[i] = ids[i] == TOPK_ID_NONE ? -1 : (int32_t)(map ? map[ids[i]] : ids[i]);
    return t;
}

/* Recall of the index on real data with shipped ground truth. */
static double s_real_recall(const char *sub, const char *base_name, const char *query_name,
                            const char *gt_name, shoal_metric_t metric, size_t ef)
{
    size_t n, dim, nq, qdim, ngt, gt_k;
    float *base = s_load(sub, base_name, 0, &n, &dim);
    float *queries = s_load(sub, query_name, 0, &nq, &qdim);
    int32_t *truth = s_load(sub, gt_name, 1, &ngt, &gt_k);
    cr_assert_eq(qdim, dim);
    cr_assert_eq(ngt, nq);
    hnsw_t *ix = s_build(base, n, dim, metric);
    s_validate(ix);
    const size_t k = 10;
    uint64_t *ids = malloc(nq * k * sizeof *ids);
    s_search_all(ix, queries, nq, dim, k, ef, NULL, NULL, ids);
    double recall = gt_recall(ids, k, truth, gt_k, nq, k);
    hnsw_stats_t st;
    hnsw_stats(ix, &st);
    cr_log_info("%s: recall@10 = %.4f at ef %zu; %zu vectors, max level %d, %.1f bytes/vector", sub,
                recall, ef, st.count, st.max_level, st.bytes_per_vector);
    fprintf(stderr, "%s: recall@10 = %.4f at ef %zu; %.1f bytes/vector\n", sub, recall, ef,
            st.bytes_per_vector);
    hnsw_destroy(&ix);
    cr_assert_null(ix);
    free(base);
    free(queries);
    free(truth);
    free(ids);
    return recall;
}

/* ------------------------------------------------------------------------ */
/* Recall                                                                   */
/* ------------------------------------------------------------------------ */

Test(hnsw, recall_siftsmall_l2)
{
    S_NEED("siftsmall");
    double r = s_real_recall("siftsmall", "siftsmall_base.fvecs", "siftsmall_query.fvecs",
                             "siftsmall_groundtruth.ivecs", SHOAL_METRIC_L2, 128);
    cr_assert_geq(r, 0.95, "siftsmall recall@10 %.4f < 0.95", r);
}

Test(hnsw, recall_glove50_cosine)
{
    S_NEED("glove50");
    double r = s_real_recall("glove50", "glove50_base.fvecs", "glove50_query.fvecs",
                             "glove50_groundtruth_angular.ivecs", SHOAL_METRIC_COSINE, 128);
    cr_assert_geq(r, 0.95, "glove50 recall@10 %.4f < 0.95", r);
}

Test(hnsw, recall_generated_ip)
{
    const size_t n = 10000, nq = 200, dim = 64, k = 10;
    float *base = s_gen(n, dim, DATAGEN_STREAM_BASE, 0, 7);
    float *queries = s_gen(nq, dim, DATAGEN_STREAM_QUERY, 0, 7);
    uint64_t *gt = malloc(nq * k * sizeof *gt);
    shoal_err_t err;
    cr_assert_eq(gt_knn(base, n, queries, nq, dim, SHOAL_METRIC_IP, k, S_THREADS, gt, NULL, &err),
                 0, "%s", err.msg);
    int32_t *truth = s_truth32(gt, nq * k, NULL);
    hnsw_t *ix = s_build(base, n, dim, SHOAL_METRIC_IP);
    s_validate(ix);
    uint64_t *ids = malloc(nq * k * sizeof *ids);
    s_search_all(ix, queries, nq, dim, k, 128, NULL, NULL, ids);
    double r = gt_recall(ids, k, truth, k, nq, k);
    fprintf(stderr, "generated ip: recall@10 = %.4f at ef 128\n", r);
    cr_assert_geq(r, 0.90, "inner-product recall@10 %.4f < 0.90", r);
    hnsw_destroy(&ix);
    free(base);
    free(queries);
    free(gt);
    free(truth);
    free(ids);
}

/* One thread, same seed, same inserts: the same graph, so the same answers. */
Test(hnsw, single_thread_builds_are_reproducible)
{
    const size_t n = 1500, dim = 16, nq = 20, k = 10;
    float *base = s_gen(n, dim, DATAGEN_STREAM_BASE, 0, 3);
    float *queries = s_gen(nq, dim, DATAGEN_STREAM_QUERY, 0, 3);
    uint64_t ids_a[20 * 10], ids_b[20 * 10];
    hnsw_t *ix[2];
    for (int b = 0; b < 2; b++) {
        ix[b] = s_new(dim, SHOAL_METRIC_L2);
        for (size_t i = 0; i < n; i++)
            cr_assert_eq(hnsw_insert(ix[b], i, base + i * dim, NULL), 0);
    }
    s_search_all(ix[0], queries, nq, dim, k, 20, NULL, NULL, ids_a);
    s_search_all(ix[1], queries, nq, dim, k, 20, NULL, NULL, ids_b);
    cr_assert_arr_eq(ids_a, ids_b, sizeof ids_a);
    hnsw_destroy(&ix[0]);
    hnsw_destroy(&ix[1]);
    free(base);
    free(queries);
}

/* ------------------------------------------------------------------------ */
/* Deletion                                                                 */
/* ------------------------------------------------------------------------ */

/* Exact top-k over the rows with live[row] set, as original row numbers. */
static int32_t *s_truth_live(const float *base, size_t n, const unsigned char *live,
                             const float *queries, size_t nq, size_t dim, shoal_metric_t metric,
                             size_t k)
{
    float *sub = malloc(n * dim * sizeof *sub);
    uint64_t *map = malloc(n * sizeof *map);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (live[i]) {
            memcpy(sub + m * dim, base + i * dim, dim * sizeof(float));
            map[m++] = i;
        }
    }
    uint64_t *gt = malloc(nq * k * sizeof *gt);
    shoal_err_t err;
    cr_assert_eq(gt_knn(sub, m, queries, nq, dim, metric, k, S_THREADS, gt, NULL, &err), 0, "%s",
                 err.msg);
    int32_t *truth = s_truth32(gt, nq * k, map);
    free(sub);
    free(map);
    free(gt);
    return truth;
}

Test(hnsw, delete_then_reinsert_siftsmall, .timeout = 240)
{
    S_NEED("siftsmall");
    size_t n, dim, nq, qdim;
    float *base = s_load("siftsmall", "siftsmall_base.fvecs", 0, &n, &dim);
    float *queries = s_load("siftsmall", "siftsmall_query.fvecs", 0, &nq, &qdim);
    hnsw_t *ix = s_build(base, n, dim, SHOAL_METRIC_L2);
    unsigned char *live = malloc(n);
    memset(live, 1, n);
    shoal_err_t err;

    /* 10%: every tenth id. */
    for (size_t i = 0; i < n; i += 10) {
        cr_assert_eq(hnsw_delete(ix, i, &err), 0, "delete %zu: %s", i, err.msg);
        live[i] = 0;
    }
    cr_assert_eq(hnsw_count(ix), n - n / 10);
    s_validate(ix);
    const size_t kbig = 100;
    uint64_t *ids = malloc(nq * kbig * sizeof *ids);
    const size_t efs[] = {1, 10, 100, 400};
    for (size_t e = 0; e < sizeof efs / sizeof *efs; e++) {
        s_search_all(ix, queries, nq, dim, kbig, efs[e], NULL, NULL, ids);
        for (size_t i = 0; i < nq * kbig; i++) {
            cr_assert(ids[i] != HNSW_ID_NONE, "fewer than %zu results at ef %zu", kbig, efs[e]);
            cr_assert(ids[i] < n && live[ids[i]], "deleted id %llu returned at ef %zu",
                      (unsigned long long)ids[i], efs[e]);
        }
    }
    for (size_t i = 0; i < n; i += 10)
        cr_assert(!hnsw_contains(ix, i));
    int32_t *truth = s_truth_live(base, n, live, queries, nq, dim, SHOAL_METRIC_L2, 10);
    s_search_all(ix, queries, nq, dim, 10, 128, NULL, NULL, ids);
    double r1 = gt_recall(ids, 10, truth, 10, nq, 10);
    fprintf(stderr, "siftsmall after deleting 10%%: recall@10 = %.4f\n", r1);
    cr_assert_geq(r1, 0.93, "recall after deleting 10%%: %.4f", r1);

    /* Then half of the rest, and put them back. */
    hnsw_stats_t st;
    for (size_t i = 1; i < n; i += 2)
        cr_assert_eq(hnsw_delete(ix, i, &err), 0, "delete %zu: %s", i, err.msg);
    s_validate(ix);
    hnsw_stats(ix, &st);
    cr_assert_eq(st.count, n / 2 - n / 10);
    s_search_all(ix, queries, nq, dim, 10, 128, NULL, NULL, ids);
    for (size_t i = 0; i < nq * 10; i++)
        cr_assert(ids[i] % 2 == 0 && ids[i] % 10 != 0, "deleted id %llu returned",
                  (unsigned long long)ids[i]);
    for (size_t i = 1; i < n; i += 2)
        cr_assert_eq(hnsw_insert(ix, i, base + i * dim, &err), 0, "%s", err.msg);
    s_validate(ix);
    hnsw_stats(ix, &st);
    cr_assert_eq(st.count, n - n / 10);
    cr_assert_leq(st.slots, n, "slots grew to %zu instead of being reused", st.slots);
    cr_assert_eq(st.free_slots, n / 10);
    s_search_all(ix, queries, nq, dim, 10, 128, NULL, NULL, ids);
    double r2 = gt_recall(ids, 10, truth, 10, nq, 10);
    fprintf(stderr, "siftsmall after deleting 50%% and re-inserting: recall@10 = %.4f\n", r2);
    cr_assert_geq(r2, 0.95, "recall after re-inserting: %.4f", r2);

    /* Everything goes, then the index works again from empty. */
    for (size_t i = 0; i < n; i++) {
        if (hnsw_contains(ix, i))
            cr_assert_eq(hnsw_delete(ix, i, &err), 0, "%s", err.msg);
    }
    cr_assert_eq(hnsw_count(ix), 0);
    s_validate(ix);
    float d;
    uint64_t id;
    cr_assert_eq(hnsw_search(ix, queries, 1, 10, NULL, NULL, &id, &d, NULL), 0);
    cr_assert_eq(id, HNSW_ID_NONE);
    cr_assert_eq(hnsw_insert(ix, 77, base, &err), 0);
    cr_assert_eq(hnsw_search(ix, base, 1, 10, NULL, NULL, &id, &d, NULL), 1);
    cr_assert_eq(id, 77);
    s_validate(ix);

    hnsw_destroy(&ix);
    free(base);
    free(queries);
    free(live);
    free(ids);
    free(truth);
}

/* ------------------------------------------------------------------------ */
/* Batch deletion                                                           */
/* ------------------------------------------------------------------------ */

/*
 * Deletes list[0..n) in batches of `batch`, checking after every batch that
 * each id was counted and the graph is valid; clears live[] for them.
 */
static void s_delete_in_batches(hnsw_t *ix, const uint64_t *list, size_t n, size_t batch,
                                unsigned char *live)
{
    for (size_t at = 0; at < n; at += batch) {
        size_t len = n - at < batch ? n - at : batch;
        size_t deleted = 0;
        shoal_err_t err;
        int rc = hnsw_delete_batch(ix, list + at, len, &deleted, &err);
        cr_assert_eq(rc, 0, "hnsw_delete_batch at %zu: %s", at, err.msg);
        cr_assert_eq(deleted, len, "batch at %zu: %zu deleted, expected %zu", at, deleted, len);
        s_validate(ix);
        for (size_t i = 0; i < len; i++)
            live[list[at + i]] = 0;
    }
}

/* Recall@10 at ef 128 against exact search over the live rows; no deleted id returned. */
static double s_live_recall(const hnsw_t *ix, const float *base, size_t n,
                            const unsigned char *live, const float *queries, size_t nq, size_t dim)
{
    const size_t k = 10;
    int32_t *truth = s_truth_live(base, n, live, queries, nq, dim, SHOAL_METRIC_L2, k);
    uint64_t *ids = malloc(nq * k * sizeof *ids);
    s_search_all(ix, queries, nq, dim, k, 128, NULL, NULL, ids);
    for (size_t i = 0; i < nq * k; i++)
        cr_assert(ids[i] < n && live[ids[i]], "deleted or unknown id %llu returned",
                  (unsigned long long)ids[i]);
    double r = gt_recall(ids, k, truth, k, nq, k);
    free(truth);
    free(ids);
    return r;
}

/*
 * siftsmall: 10% deleted in batches of `batch` (0 = all at once), then more
 * to reach 50%, then all put back; recall against exact search at each step.
 */
static void s_batch_delete_siftsmall(size_t batch)
{
    size_t n, dim, nq, qdim;
    float *base = s_load("siftsmall", "siftsmall_base.fvecs", 0, &n, &dim);
    float *queries = s_load("siftsmall", "siftsmall_query.fvecs", 0, &nq, &qdim);
    hnsw_t *ix = s_build(base, n, dim, SHOAL_METRIC_L2);
    unsigned char *live = malloc(n);
    memset(live, 1, n);
    uint64_t *first = malloc(n * sizeof *first), *second = malloc(n * sizeof *second);
    size_t nfirst = 0, nsecond = 0;
    for (size_t i = 0; i < n; i++) {
        if (i % 10 == 0)
            first[nfirst++] = i;
        else if (i % 2 == 1 && i % 10 != 9)
            second[nsecond++] = i; /* 1, 3, 5, 7 of each ten: 40% */
    }

    s_delete_in_batches(ix, first, nfirst, batch ? batch : nfirst, live);
    cr_assert_eq(hnsw_count(ix), n - nfirst);
    double r10 = s_live_recall(ix, base, n, live, queries, nq, dim);
    s_delete_in_batches(ix, second, nsecond, batch ? batch : nsecond, live);
    cr_assert_eq(hnsw_count(ix), n / 2);
    double r50 = s_live_recall(ix, base, n, live, queries, nq, dim);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(hnsw_contains(ix, i), live[i], "id %zu: contains %d, live %d", i,
                     hnsw_contains(ix, i), live[i]);

    hnsw_stats_t st;
    hnsw_stats(ix, &st);
    cr_assert_eq(st.free_slots, n / 2);
    cr_assert_eq(st.deletes, n / 2);
    shoal_err_t err;
    for (size_t i = 0; i < n; i++) {
        if (!live[i])
            cr_assert_eq(hnsw_insert(ix, i, base + i * dim, &err), 0, "%s", err.msg);
    }
    memset(live, 1, n);
    s_validate(ix);
    hnsw_stats(ix, &st);
    cr_assert_eq(st.count, n);
    cr_assert_eq(st.slots, n, "slots grew to %zu instead of being reused", st.slots);
    cr_assert_eq(st.free_slots, 0);
    double rback = s_live_recall(ix, base, n, live, queries, nq, dim);
    char label[32];
    snprintf(label, sizeof label, batch ? "batches of %zu" : "one batch", batch);
    fprintf(stderr,
            "siftsmall, deleted in %s: recall@10 = %.4f after 10%%, %.4f after 50%%, "
            "%.4f re-inserted\n",
            label, r10, r50, rback);
    cr_assert_geq(r10, 0.93, "batch %zu: recall after deleting 10%%: %.4f", batch, r10);
    cr_assert_geq(r50, 0.93, "batch %zu: recall after deleting 50%%: %.4f", batch, r50);
    cr_assert_geq(rback, 0.95, "batch %zu: recall after re-inserting: %.4f", batch, rback);

    hnsw_destroy(&ix);
    free(base);
    free(queries);
    free(live);
    free(first);
    free(second);
}

Test(hnsw, batch_delete_siftsmall_by_1, .timeout = 240)
{
    S_NEED("siftsmall");
    s_batch_delete_siftsmall(1);
}

Test(hnsw, batch_delete_siftsmall_by_37, .timeout = 240)
{
    S_NEED("siftsmall");
    s_batch_delete_siftsmall(37);
}

Test(hnsw, batch_delete_siftsmall_by_1000, .timeout = 240)
{
    S_NEED("siftsmall");
    s_batch_delete_siftsmall(1000);
}

Test(hnsw, batch_delete_siftsmall_at_once, .timeout = 240)
{
    S_NEED("siftsmall");
    s_batch_delete_siftsmall(0);
}

Test(hnsw, batch_delete_counts_present_ids_once)
{
    const size_t n = 500, dim = 8;
    float *base = s_gen(n, dim, DATAGEN_STREAM_BASE, 0, 19);
    hnsw_t *ix = s_build(base, n, dim, SHOAL_METRIC_L2);
    shoal_err_t err;
    size_t deleted = 99;

    uint64_t mixed[] = {1, 2, 2, 999999, HNSW_ID_NONE, 3, 1, 500, 2};
    cr_assert_eq(hnsw_delete_batch(ix, mixed, sizeof mixed / sizeof *mixed, &deleted, &err), 0,
                 "%s", err.msg);
    cr_assert_eq(deleted, 3);
    cr_assert_eq(hnsw_count(ix), n - 3);
    s_validate(ix);
    /* Again: all absent now, nothing deleted, not an error. */
    cr_assert_eq(hnsw_delete_batch(ix, mixed, sizeof mixed / sizeof *mixed, &deleted, &err), 0);
    cr_assert_eq(deleted, 0);
    cr_assert_eq(hnsw_delete(ix, 2, &err), SHOAL_ENOTFOUND);
    /* deleted may be NULL; an empty batch is fine; NULL ids are not. */
    uint64_t more[] = {10, 11};
    cr_assert_eq(hnsw_delete_batch(ix, more, 2, NULL, &err), 0, "%s", err.msg);
    cr_assert_eq(hnsw_count(ix), n - 5);
    cr_assert_eq(hnsw_delete_batch(ix, more, 0, &deleted, &err), 0);
    cr_assert_eq(deleted, 0);
    cr_assert_eq(hnsw_delete_batch(ix, NULL, 3, &deleted, &err), SHOAL_EINVAL);
    cr_assert_eq(hnsw_delete_batch(NULL, more, 2, &deleted, &err), SHOAL_EINVAL);
    for (size_t i = 0; i < 12; i++)
        cr_assert_eq(hnsw_contains(ix, i), !(i >= 1 && i <= 3) && i != 10 && i != 11, "id %zu", i);
    s_validate(ix);
    hnsw_destroy(&ix);
    free(base);
}

/* Empty after deleting everything (at once, or in batches of 37), then usable again. */
Test(hnsw, batch_delete_everything)
{
    const size_t n = 2000, dim = 16;
    float *base = s_gen(n, dim, DATAGEN_STREAM_BASE, 0, 23);
    float *queries = s_gen(10, dim, DATAGEN_STREAM_QUERY, 0, 23);
    for (int variant = 0; variant < 2; variant++) {
        hnsw_t *ix = s_build(base, n, dim, SHOAL_METRIC_L2);
        /* Every id, in a shuffled order, with some listed twice. */
        uint64_t *all = malloc((n + n / 10) * sizeof *all);
        for (size_t i = 0; i < n; i++)
            all[i] = i;
        shoal_rng_t rng;
        shoal_rng_seed(&rng, 29);
        for (size_t i = n - 1; i > 0; i--) {
            size_t j = shoal_rng_next(&rng) % (i + 1);
            uint64_t t = all[i];
            all[i] = all[j];
            all[j] = t;
        }
        for (size_t i = 0; i < n / 10; i++)
            all[n + i] = all[i * 7];
        size_t total = n + n / 10, batch = variant == 0 ? total : 37, sum = 0;
        shoal_err_t err;
        for (size_t at = 0; at < total; at += batch) {
            size_t len = total - at < batch ? total - at : batch, deleted;
            cr_assert_eq(hnsw_delete_batch(ix, all + at, len, &deleted, &err), 0, "%s", err.msg);
            sum += deleted;
            s_validate(ix);
        }
        cr_assert_eq(sum, n);
        cr_assert_eq(hnsw_count(ix), 0);
        hnsw_stats_t st;
        hnsw_stats(ix, &st);
        cr_assert_eq(st.max_level, -1);
        cr_assert_eq(st.free_slots, n);
        uint64_t ids[5];
        float dists[5];
        cr_assert_eq(hnsw_search(ix, queries, 5, 10, NULL, NULL, ids, dists, &err), 0);
        for (int i = 0; i < 5; i++) {
            cr_assert_eq(ids[i], HNSW_ID_NONE);
            cr_assert(isinf(dists[i]));
        }
        /* New inserts reuse the slots, and are found. */
        for (size_t i = 0; i < 300; i++)
            cr_assert_eq(hnsw_insert(ix, 5000 + i, base + i * dim, &err), 0, "%s", err.msg);
        s_validate(ix);
        hnsw_stats(ix, &st);
        cr_assert_eq(st.count, 300);
        cr_assert_eq(st.slots, n);
        for (size_t i = 0; i < 300; i += 7) {
            cr_assert_eq(hnsw_search(ix, base + i * dim, 1, 32, NULL, NULL, ids, dists, NULL), 1);
            cr_assert_eq(ids[0], 5000 + i);
        }
        hnsw_destroy(&ix);
        free(all);
    }
    free(base);
    free(queries);
}

/*
 * Node levels and the entry point's id, read from a saved blob (the format
 * is documented in shard/hnsw_io.c): levels[i] for ids[i], n of them.
 */
static size_t s_levels(const hnsw_t *ix, uint64_t *ids, int *levels, uint64_t *entry_id)
{
    uint8_t *blob;
    size_t len;
    shoal_err_t err;
    cr_assert_eq(hnsw_save_buffer(ix, &blob, &len, &err), 0, "%s", err.msg);
    uint32_t dim, entry;
    uint64_t nodes;
    memcpy(&dim, blob + 16, 4);
    memcpy(&nodes, blob + 48, 8);
    memcpy(&entry, blob + 56, 4);
    uint32_t record_len; /* the quantizer's: 0 for f32 */
    memcpy(&record_len, blob + 72, 4);
    size_t pos = 76 + record_len;
    for (uint64_t r = 0; r < nodes; r++) {
        uint32_t level;
        memcpy(&ids[r], blob + pos, 8);
        memcpy(&level, blob + pos + 8, 4);
        levels[r] = (int)level;
        if (r == entry)
            *entry_id = ids[r];
        pos += 12 + (size_t)dim * 4;
        for (uint32_t lc = 0; lc <= level; lc++) {
            uint32_t count;
            memcpy(&count, blob + pos, 4);
            pos += 4 + (size_t)count * 4;
        }
    }
    cr_assert_eq(pos, len);
    free(blob);
    return (size_t)nodes;
}

/* The entry point alone, then every node of the top level at once, down to layer 0. */
Test(hnsw, batch_delete_entry_point_and_top_levels)
{
    const size_t n = 3000, dim = 16, nq = 50;
    float *base = s_gen(n, dim, DATAGEN_STREAM_BASE, 0, 31);
    float *queries = s_gen(nq, dim, DATAGEN_STREAM_QUERY, 0, 31);
    shoal_err_t err;
    /* M = 4 gives several levels. */
    hnsw_params_t p = {.dim = dim, .metric = SHOAL_METRIC_L2, .M = 4, .seed = S_SEED};
    hnsw_t *ix = hnsw_new(&p, &err);
    cr_assert_not_null(ix, "%s", err.msg);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(hnsw_insert(ix, i, base + i * dim, &err), 0, "%s", err.msg);
    unsigned char *live = malloc(n);
    memset(live, 1, n);
    uint64_t *ids = malloc(n * sizeof *ids), *top = malloc(n * sizeof *top);
    int *levels = malloc(n * sizeof *levels);
    uint64_t entry;

    size_t m = s_levels(ix, ids, levels, &entry);
    hnsw_stats_t st;
    hnsw_stats(ix, &st);
    int max_level = st.max_level;
    cr_assert_geq(max_level, 2, "M = 4 should give several levels, got %d", max_level);
    size_t deleted;
    cr_assert_eq(hnsw_delete_batch(ix, &entry, 1, &deleted, &err), 0, "%s", err.msg);
    cr_assert_eq(deleted, 1);
    live[entry] = 0;
    s_validate(ix);
    cr_assert(!hnsw_contains(ix, entry));

    while (max_level > 0) {
        m = s_levels(ix, ids, levels, &entry);
        size_t ntop = 0;
        for (size_t i = 0; i < m; i++) {
            if (levels[i] == max_level)
                top[ntop++] = ids[i];
        }
        cr_assert_gt(ntop, 0);
        cr_assert_eq(hnsw_delete_batch(ix, top, ntop, &deleted, &err), 0, "%s", err.msg);
        cr_assert_eq(deleted, ntop);
        for (size_t i = 0; i < ntop; i++)
            live[top[i]] = 0;
        s_validate(ix);
        hnsw_stats(ix, &st);
        cr_assert_lt(st.max_level, max_level, "the top level %d is still there", max_level);
        max_level = st.max_level;
        double r = s_live_recall(ix, base, n, live, queries, nq, dim);
        cr_assert_geq(r, 0.90, "recall %.4f with the top at level %d", r, max_level);
    }
    cr_assert_eq(max_level, 0);
    cr_assert_gt(hnsw_count(ix), n / 2);

    hnsw_destroy(&ix);
    free(base);
    free(queries);
    free(live);
    free(ids);
    free(top);
    free(levels);
}

/* ------------------------------------------------------------------------ */
/* Filter                                                                   */
/* ------------------------------------------------------------------------ */

static int s_even(uint64_t id, void *arg)
{
    (void)arg;
    return id % 2 == 0;
}

Test(hnsw, filtered_search_keeps_only_passing_ids)
{
    const size_t n = 6000, nq = 100, dim = 32, k = 10;
    float *base = s_gen(n, dim, DATAGEN_STREAM_BASE, 0, 11);
    float *queries = s_gen(nq, dim, DATAGEN_STREAM_QUERY, 0, 11);
    hnsw_t *ix = s_build(base, n, dim, SHOAL_METRIC_L2);
    unsigned char *even = malloc(n);
    for (size_t i = 0; i < n; i++)
        even[i] = i % 2 == 0;
    int32_t *truth = s_truth_live(base, n, even, queries, nq, dim, SHOAL_METRIC_L2, k);
    uint64_t *ids = malloc(nq * k * sizeof *ids);
    s_search_all(ix, queries, nq, dim, k, 64, s_even, NULL, ids);
    for (size_t i = 0; i < nq * k; i++)
        cr_assert(ids[i] != HNSW_ID_NONE && ids[i] % 2 == 0, "id %llu does not pass the filter",
                  (unsigned long long)ids[i]);
    double r = gt_recall(ids, k, truth, k, nq, k);
    fprintf(stderr, "filtered (even ids): recall@10 = %.4f at ef 64\n", r);
    cr_assert_geq(r, 0.90, "filtered recall %.4f", r);
    hnsw_destroy(&ix);
    free(base);
    free(queries);
    free(even);
    free(truth);
    free(ids);
}

/* ------------------------------------------------------------------------ */
/* Concurrency                                                              */
/* ------------------------------------------------------------------------ */

typedef struct {
    hnsw_t *ix;
    const float *queries;
    size_t nq, dim, n;
    atomic_int *done;
    size_t searches; /* out */
    int bad;         /* out: first problem seen, 0 when none */
} s_searcher_t;

static void *s_searcher(void *arg)
{
    s_searcher_t *s = arg;
    uint64_t ids[10];
    float dists[10];
    for (size_t q = 0; !atomic_load(s->done) || s->searches < 20; q = (q + 1) % s->nq) {
        int n = hnsw_search(s->ix, s->queries + q * s->dim, 10, 32, NULL, NULL, ids, dists, NULL);
        s->searches++;
        if (n < 0) {
            s->bad = 1;
            break;
        }
        for (int i = 0; i < n; i++) {
            if (ids[i] >= s->n || !isfinite(dists[i]) || (i && dists[i - 1] > dists[i]))
                s->bad = 2;
        }
        for (int i = n; i < 10; i++) {
            if (ids[i] != HNSW_ID_NONE)
                s->bad = 3;
        }
        if (s->bad)
            break;
    }
    return NULL;
}

Test(hnsw, searches_during_batch_insert)
{
    const size_t n = 6000, first = 500, nq = 100, dim = 48, k = 10;
    float *base = s_gen(n, dim, DATAGEN_STREAM_BASE, 0, 5);
    float *queries = s_gen(nq, dim, DATAGEN_STREAM_QUERY, 0, 5);
    uint64_t *all = malloc(n * sizeof *all);
    for (size_t i = 0; i < n; i++)
        all[i] = i;
    hnsw_t *ix = s_new(dim, SHOAL_METRIC_L2);
    shoal_err_t err;
    cr_assert_eq(hnsw_insert_batch(ix, all, base, first, 1, &err), 0, "%s", err.msg);

    atomic_int done;
    atomic_init(&done, 0);
    s_searcher_t s[2];
    pthread_t t[2];
    for (int i = 0; i < 2; i++) {
        s[i] = (s_searcher_t){
            .ix = ix, .queries = queries, .nq = nq, .dim = dim, .n = n, .done = &done};
        cr_assert_eq(pthread_create(&t[i], NULL, s_searcher, &s[i]), 0);
    }
    int rc = hnsw_insert_batch(ix, all + first, base + first * dim, n - first, S_THREADS, &err);
    atomic_store(&done, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    cr_assert_eq(rc, 0, "%s", err.msg);
    for (int i = 0; i < 2; i++)
        cr_assert_eq(s[i].bad, 0, "searcher %d saw a bad result (%d)", i, s[i].bad);
    cr_assert_eq(hnsw_count(ix), n);
    s_validate(ix);

    /* Every id inserted during the concurrent searches is findable: a query
     * equal to its vector returns the id itself, at distance 0. */
    for (size_t i = 0; i < n; i++) {
        uint64_t self;
        float d0;
        cr_assert_eq(hnsw_search(ix, base + i * dim, 1, 64, NULL, NULL, &self, &d0, &err), 1,
                     "%s", err.msg);
        cr_assert_eq(self, all[i], "exact-match query for id %zu returned %llu", i,
                     (unsigned long long)self);
        cr_assert_float_eq(d0, 0.0f, 1e-6);
    }

    uint64_t *gt = malloc(nq * k * sizeof *gt);
    cr_assert_eq(gt_knn(base, n, queries, nq, dim, SHOAL_METRIC_L2, k, S_THREADS, gt, NULL, &err),
                 0);
    int32_t *truth = s_truth32(gt, nq * k, NULL);
    uint64_t *ids = malloc(nq * k * sizeof *ids);
    s_search_all(ix, queries, nq, dim, k, 128, NULL, NULL, ids);
    double r = gt_recall(ids, k, truth, k, nq, k);
    fprintf(stderr, "after concurrent insert: recall@10 = %.4f (%zu + %zu searches ran)\n", r,
            s[0].searches, s[1].searches);
    cr_assert_geq(r, 0.95, "recall after a concurrent build %.4f", r);

    /* A search after an insert returned sees the vector: a fresh one from
     * the data's distribution, and an outlier far from everything (which
     * keeps a way in even though the heuristic prunes all its back-links). */
    uint64_t id;
    float dist;
    cr_assert_eq(hnsw_insert(ix, 123456789, queries + 3 * dim, &err), 0, "%s", err.msg);
    cr_assert_eq(hnsw_search(ix, queries + 3 * dim, 1, 32, NULL, NULL, &id, &dist, &err), 1);
    cr_assert_eq(id, 123456789);
    cr_assert_float_eq(dist, 0.0f, 1e-6);
    float v[48];
    for (size_t d = 0; d < dim; d++)
        v[d] = 100.0f + (float)d;
    cr_assert_eq(hnsw_insert(ix, 987654321, v, &err), 0, "%s", err.msg);
    cr_assert_eq(hnsw_search(ix, v, 1, 128, NULL, NULL, &id, &dist, &err), 1);
    cr_assert_eq(id, 987654321);
    cr_assert_float_eq(dist, 0.0f, 1e-3);

    hnsw_destroy(&ix);
    free(base);
    free(queries);
    free(all);
    free(gt);
    free(truth);
    free(ids);
}

/* Many threads insert while the index grows through several chunks. */
Test(hnsw, batch_insert_grows_under_threads)
{
    const size_t n = 5000, dim = 8;
    float *base = s_gen(n, dim, DATAGEN_STREAM_BASE, 0, 9);
    uint64_t *ids = malloc(n * sizeof *ids);
    for (size_t i = 0; i < n; i++)
        ids[i] = 1000000 + i * 7;
    hnsw_t *ix = s_new(dim, SHOAL_METRIC_L2);
    shoal_err_t err;
    cr_assert_eq(hnsw_insert_batch(ix, ids, base, n, 4, &err), 0, "%s", err.msg);
    cr_assert_eq(hnsw_count(ix), n);
    s_validate(ix);
    float v[8];
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(hnsw_get(ix, ids[i], v, &err), 0);
        cr_assert_arr_eq(v, base + i * dim, sizeof v);
        uint64_t id;
        float d;
        cr_assert_eq(hnsw_search(ix, v, 1, 32, NULL, NULL, &id, &d, NULL), 1);
        cr_assert_eq(id, ids[i], "exact-match query for id %llu returned %llu",
                     (unsigned long long)ids[i], (unsigned long long)id);
        cr_assert_float_eq(d, 0.0f, 1e-6);
    }
    hnsw_destroy(&ix);
    free(base);
    free(ids);
}

/* ------------------------------------------------------------------------ */
/* Upsert                                                                   */
/* ------------------------------------------------------------------------ */

Test(hnsw, upsert_replaces_the_vector)
{
    const size_t n = 500, dim = 16;
    float *base = s_gen(n, dim, DATAGEN_STREAM_BASE, 0, 13);
    hnsw_t *ix = s_build(base, n, dim, SHOAL_METRIC_L2);
    float v[16], out[16];
    for (size_t d = 0; d < dim; d++)
        v[d] = -50.0f - (float)d;
    shoal_err_t err;
    cr_assert_eq(hnsw_insert(ix, 42, v, &err), 0, "%s", err.msg);
    cr_assert_eq(hnsw_count(ix), n);
    cr_assert_eq(hnsw_get(ix, 42, out, &err), 0);
    cr_assert_arr_eq(out, v, sizeof v);
    uint64_t id[2];
    float dist[2];
    cr_assert_eq(hnsw_search(ix, v, 2, 32, NULL, NULL, id, dist, NULL), 2);
    cr_assert_eq(id[0], 42);
    cr_assert_float_eq(dist[0], 0.0f, 1e-6);
    /* The old vector is gone: searching for it does not find 42 at 0. */
    cr_assert_eq(hnsw_search(ix, base + 42 * dim, 1, 32, NULL, NULL, id, dist, NULL), 1);
    cr_assert(id[0] != 42);
    /* Upserts inside a batch too. */
    uint64_t ids[3] = {1, 2, 3};
    cr_assert_eq(hnsw_insert_batch(ix, ids, base + 10 * dim, 3, 2, &err), 0, "%s", err.msg);
    cr_assert_eq(hnsw_count(ix), n);
    cr_assert_eq(hnsw_get(ix, 2, out, NULL), 0);
    cr_assert_arr_eq(out, base + 11 * dim, sizeof out);
    s_validate(ix);
    hnsw_destroy(&ix);
    free(base);
}

Test(hnsw, cosine_stores_normalised)
{
    hnsw_t *ix = s_new(3, SHOAL_METRIC_COSINE);
    float v[3] = {3, 0, 4}, out[3];
    cr_assert_eq(hnsw_insert(ix, 1, v, NULL), 0);
    cr_assert_eq(hnsw_get(ix, 1, out, NULL), 0);
    cr_assert_float_eq(out[0], 0.6f, 1e-6);
    cr_assert_float_eq(out[2], 0.8f, 1e-6);
    float q[3] = {30, 0, 40};
    uint64_t id;
    float d;
    cr_assert_eq(hnsw_search(ix, q, 1, 4, NULL, NULL, &id, &d, NULL), 1);
    cr_assert_float_eq(d, 0.0f, 1e-6);
    float zero[3] = {0, 0, 0};
    shoal_err_t err;
    cr_assert_eq(hnsw_insert(ix, 2, zero, &err), SHOAL_EINVAL);
    cr_assert_eq(hnsw_count(ix), 1);
    hnsw_destroy(&ix);
}

/* ------------------------------------------------------------------------ */
/* Save / load                                                              */
/* ------------------------------------------------------------------------ */

/* A small index with free slots, saved. */
static hnsw_t *s_saved(uint8_t **blob, size_t *len, float **queries_out, size_t *dim_out)
{
    const size_t n = 1200, dim = 12;
    float *base = s_gen(n, dim, DATAGEN_STREAM_BASE, 0, 17);
    hnsw_t *ix = s_build(base, n, dim, SHOAL_METRIC_L2);
    for (size_t i = 0; i < n; i += 9)
        cr_assert_eq(hnsw_delete(ix, i, NULL), 0);
    shoal_err_t err;
    cr_assert_eq(hnsw_save_buffer(ix, blob, len, &err), 0, "%s", err.msg);
    free(base);
    if (queries_out)
        *queries_out = s_gen(50, dim, DATAGEN_STREAM_QUERY, 0, 17);
    if (dim_out)
        *dim_out = dim;
    return ix;
}

Test(hnsw, save_load_round_trip)
{
    uint8_t *blob;
    size_t len, dim;
    float *queries;
    hnsw_t *ix = s_saved(&blob, &len, &queries, &dim);
    shoal_err_t err;
    hnsw_t *back = hnsw_load(blob, len, &err);
    cr_assert_not_null(back, "hnsw_load: %s", err.msg);
    s_validate(back);
    cr_assert_eq(hnsw_count(back), hnsw_count(ix));
    cr_assert_eq(hnsw_dim(back), dim);
    cr_assert_eq(hnsw_metric(back), SHOAL_METRIC_L2);
    hnsw_stats_t a, b;
    hnsw_stats(ix, &a);
    hnsw_stats(back, &b);
    cr_assert_eq(a.max_level, b.max_level);
    cr_assert_eq(b.slots, b.count, "free slots are compacted on save");
    for (size_t q = 0; q < 50; q++) {
        uint64_t i1[20], i2[20];
        float d1[20], d2[20];
        int n1 = hnsw_search(ix, queries + q * dim, 20, 40, NULL, NULL, i1, d1, NULL);
        int n2 = hnsw_search(back, queries + q * dim, 20, 40, NULL, NULL, i2, d2, NULL);
        cr_assert_eq(n1, n2);
        cr_assert_arr_eq(i1, i2, sizeof i1);
        cr_assert_arr_eq(d1, d2, sizeof d1);
    }
    /* Saving the loaded index gives the same bytes. */
    uint8_t *blob2;
    size_t len2;
    cr_assert_eq(hnsw_save_buffer(back, &blob2, &len2, NULL), 0);
    cr_assert_eq(len2, len);
    cr_assert_arr_eq(blob2, blob, len);
    /* And it keeps working: inserts and deletes. */
    cr_assert_eq(hnsw_delete(back, 5, NULL), 0);
    cr_assert_eq(hnsw_insert(back, 5, queries, NULL), 0);
    s_validate(back);
    free(blob2);
    /* An empty index round-trips too. */
    hnsw_t *empty = s_new(4, SHOAL_METRIC_IP);
    cr_assert_eq(hnsw_save_buffer(empty, &blob2, &len2, NULL), 0);
    hnsw_t *eback = hnsw_load(blob2, len2, &err);
    cr_assert_not_null(eback, "%s", err.msg);
    cr_assert_eq(hnsw_count(eback), 0);
    hnsw_destroy(&eback);
    hnsw_destroy(&empty);
    free(blob2);
    hnsw_destroy(&back);
    hnsw_destroy(&ix);
    free(blob);
    free(queries);
}

static int s_failing_write(void *ctx, const void *data, size_t len)
{
    (void)data;
    size_t *budget = ctx;
    if (len > *budget)
        return SHOAL_EIO;
    *budget -= len;
    return 0;
}

Test(hnsw, save_reports_write_errors)
{
    uint8_t *blob;
    size_t len;
    hnsw_t *ix = s_saved(&blob, &len, NULL, NULL);
    size_t budget = 100;
    shoal_err_t err;
    cr_assert_eq(hnsw_save(ix, s_failing_write, &budget, &err), SHOAL_EIO);
    cr_assert_neq(err.msg[0], '\0');
    hnsw_destroy(&ix);
    free(blob);
}

/* Loads a modified copy and expects NULL with code. */
static void s_expect_bad(const uint8_t *blob, size_t len, int code, const char *what)
{
    shoal_err_t err;
    shoal_err_clear(&err);
    uint8_t *copy = malloc(len ? len : 1);
    memcpy(copy, blob, len);
    hnsw_t *ix = hnsw_load(copy, len, &err);
    cr_assert_null(ix, "%s: loaded", what);
    cr_assert_eq(err.code, code, "%s: code %d (%s), expected %d", what, err.code, err.msg, code);
    cr_assert_neq(err.msg[0], '\0');
    free(copy);
}

static void s_set32(uint8_t *b, size_t off, uint32_t v)
{
    memcpy(b + off, &v, 4);
}

static void s_set64(uint8_t *b, size_t off, uint64_t v)
{
    memcpy(b + off, &v, 8);
}

Test(hnsw, load_rejects_corrupt_blobs, .timeout = 240)
{
    uint8_t *blob;
    size_t len, dim;
    hnsw_t *ix = s_saved(&blob, &len, NULL, &dim);
    uint8_t *b = malloc(len);

    /* Truncation: every 7 bytes through the header and the first records,
     * then sampled through the body, and the last bytes. */
    for (size_t cut = 0; cut < len; cut += (cut < 2048 ? 7 : len / 300 + 1))
        s_expect_bad(blob, cut, SHOAL_ECORRUPT, "truncated");
    for (size_t cut = len - 16; cut < len; cut++)
        s_expect_bad(blob, cut, SHOAL_ECORRUPT, "truncated at the end");
    /* Trailing garbage. */
    uint8_t *longer = malloc(len + 4);
    memcpy(longer, blob, len);
    memset(longer + len, 0, 4);
    s_expect_bad(longer, len + 4, SHOAL_ECORRUPT, "trailing bytes");
    free(longer);

    struct {
        size_t off;
        int wide; /* 4 or 8 bytes */
        uint64_t value;
        int code;
        const char *what;
    } table[] = {
        {0, 8, 0x5858585858585858ULL, SHOAL_ECORRUPT, "magic"},
        {8, 4, 4, SHOAL_EUNSUPPORTED, "version 4"},
        {8, 4, 0, SHOAL_EUNSUPPORTED, "version 0"},
        {12, 4, 0x04030201, SHOAL_EUNSUPPORTED, "other byte order"},
        {12, 4, 0xdeadbeef, SHOAL_ECORRUPT, "endianness garbage"},
        {16, 4, 0, SHOAL_ECORRUPT, "dim 0"},
        {16, 4, 1u << 20, SHOAL_ECORRUPT, "dim huge"},
        {16, 4, 11, SHOAL_ECORRUPT, "dim off by one"},
        {20, 4, 3, SHOAL_ECORRUPT, "metric 3"},
        {24, 4, 1, SHOAL_ECORRUPT, "M 1"},
        {24, 4, 1000, SHOAL_ECORRUPT, "M 1000"},
        {28, 4, 31, SHOAL_ECORRUPT, "M0 not 2M"},
        {32, 4, 0, SHOAL_ECORRUPT, "ef_construction 0"},
        {36, 4, 65, SHOAL_ECORRUPT, "max level 65"},
        {36, 4, (uint32_t)-2, SHOAL_ECORRUPT, "max level -2"},
        {36, 4, 0, SHOAL_ECORRUPT, "max level lower than a node's"},
        {48, 8, UINT64_MAX, SHOAL_ECORRUPT, "nodes overflow"},
        {48, 8, (uint64_t)1 << 61, SHOAL_ECORRUPT, "nodes * size overflows"},
        {48, 8, 0, SHOAL_ECORRUPT, "nodes 0 with an entry"},
        {48, 8, 3, SHOAL_ECORRUPT, "nodes too few"},
        {56, 4, 0xfffffff0u, SHOAL_ECORRUPT, "entry past nodes"},
        {56, 4, HNSW_ID_NONE & 0xffffffffu, SHOAL_ECORRUPT, "no entry with nodes"},
        {60, 4, 7, SHOAL_ECORRUPT, "storage 7"},
        {60, 4, QUANT_SQ8, SHOAL_ECORRUPT, "sq8 storage without a quantizer"},
        {64, 8, 1, SHOAL_ECORRUPT, "reserved"},
    };
    for (size_t t = 0; t < sizeof table / sizeof *table; t++) {
        memcpy(b, blob, len);
        if (table[t].wide == 8)
            s_set64(b, table[t].off, table[t].value);
        else
            s_set32(b, table[t].off, (uint32_t)table[t].value);
        s_expect_bad(b, len, table[t].code, table[t].what);
    }

    /* After the header, the quantizer's length (0 for f32) at 72; node 0's
     * record: id at 76, level at 84, vector at 88, then layer 0. */
    const size_t rec = 76, links0 = rec + 12 + dim * 4;
    uint32_t nodes;
    memcpy(&nodes, blob + 48, 4);
    uint32_t count0;
    memcpy(&count0, blob + links0, 4);
    cr_assert_gt(count0, 1);

    memcpy(b, blob, len);
    s_set32(b, links0 + 4, nodes);
    s_expect_bad(b, len, SHOAL_ECORRUPT, "link past the nodes");
    memcpy(b, blob, len);
    s_set32(b, links0 + 4, 0);
    s_expect_bad(b, len, SHOAL_ECORRUPT, "link to itself");
    memcpy(b, blob, len);
    uint32_t other;
    memcpy(&other, b + links0 + 8, 4);
    s_set32(b, links0 + 4, other);
    s_expect_bad(b, len, SHOAL_ECORRUPT, "duplicate link");
    memcpy(b, blob, len);
    s_set32(b, links0, 33);
    s_expect_bad(b, len, SHOAL_ECORRUPT, "more links than M0");
    memcpy(b, blob, len);
    s_set32(b, links0, 0xffffffffu);
    s_expect_bad(b, len, SHOAL_ECORRUPT, "link count overflow");
    memcpy(b, blob, len);
    s_set32(b, rec + 8, 64);
    s_expect_bad(b, len, SHOAL_ECORRUPT, "node level above max level");
    memcpy(b, blob, len);
    s_set64(b, rec, HNSW_ID_NONE);
    s_expect_bad(b, len, SHOAL_ECORRUPT, "reserved id");
    memcpy(b, blob, len);
    float nan = NAN;
    memcpy(b + rec + 12, &nan, 4);
    s_expect_bad(b, len, SHOAL_ECORRUPT, "NaN in a vector");
    /* Node 1's id made equal to node 0's. */
    size_t rec1 = links0 + 4 + count0 * 4;
    uint32_t level0;
    memcpy(&level0, blob + rec + 8, 4);
    if (level0 == 0) {
        memcpy(b, blob, len);
        memcpy(b + rec1, blob + rec, 8);
        s_expect_bad(b, len, SHOAL_ECORRUPT, "duplicate id");
    }

    /* Random damage never crashes: each result is NULL or a valid index. */
    shoal_rng_t rng;
    shoal_rng_seed(&rng, 99);
    for (int round = 0; round < 400; round++) {
        memcpy(b, blob, len);
        int flips = 1 + (int)(shoal_rng_next(&rng) % 4);
        for (int f = 0; f < flips; f++)
            b[shoal_rng_next(&rng) % len] ^= (uint8_t)(1u << (shoal_rng_next(&rng) % 8));
        shoal_err_t err;
        hnsw_t *got = hnsw_load(b, len, &err);
        if (got) {
            s_validate(got);
            uint64_t id[5];
            float d[5];
            float q[12] = {0};
            cr_assert_geq(hnsw_search(got, q, 5, 10, NULL, NULL, id, d, NULL), 0);
            hnsw_destroy(&got);
        } else {
            cr_assert(err.code == SHOAL_ECORRUPT || err.code == SHOAL_EUNSUPPORTED,
                      "round %d: code %d (%s)", round, err.code, err.msg);
        }
    }
    free(b);
    free(blob);
    hnsw_destroy(&ix);
}

/* ------------------------------------------------------------------------ */
/* Bad input                                                                */
/* ------------------------------------------------------------------------ */

Test(hnsw, rejects_bad_parameters)
{
    shoal_err_t err;
    hnsw_params_t p = {.dim = 8, .metric = SHOAL_METRIC_L2, .M = 1};
    cr_assert_null(hnsw_new(&p, &err));
    cr_assert_eq(err.code, SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "M") != NULL, "%s", err.msg);
    p = (hnsw_params_t){.dim = 0, .metric = SHOAL_METRIC_L2};
    cr_assert_null(hnsw_new(&p, &err));
    cr_assert(strstr(err.msg, "dim") != NULL, "%s", err.msg);
    p = (hnsw_params_t){.dim = HNSW_DIM_MAX + 1, .metric = SHOAL_METRIC_L2};
    cr_assert_null(hnsw_new(&p, &err));
    p = (hnsw_params_t){.dim = 8, .metric = (shoal_metric_t)7};
    cr_assert_null(hnsw_new(&p, &err));
    cr_assert(strstr(err.msg, "metric") != NULL, "%s", err.msg);
    p = (hnsw_params_t){.dim = 8, .metric = SHOAL_METRIC_L2, .M = HNSW_M_MAX + 1};
    cr_assert_null(hnsw_new(&p, &err));
    p = (hnsw_params_t){.dim = 8, .ef_construction = HNSW_EF_CONSTRUCTION_MAX + 1};
    cr_assert_null(hnsw_new(&p, &err));
    cr_assert(strstr(err.msg, "ef_construction") != NULL, "%s", err.msg);
    cr_assert_null(hnsw_new(NULL, &err));
    hnsw_destroy(NULL);
    hnsw_t *none = NULL;
    hnsw_destroy(&none);
}

Test(hnsw, rejects_bad_input)
{
    const size_t dim = 4;
    hnsw_t *ix = s_new(dim, SHOAL_METRIC_L2);
    shoal_err_t err;
    float good[4] = {1, 2, 3, 4};
    float bad[4] = {1, NAN, 3, 4};
    float inf[4] = {1, 2, INFINITY, 4};
    cr_assert_eq(hnsw_insert(ix, 1, bad, &err), SHOAL_EINVAL);
    cr_assert_eq(hnsw_insert(ix, 1, inf, &err), SHOAL_EINVAL);
    cr_assert_eq(hnsw_insert(ix, HNSW_ID_NONE, good, &err), SHOAL_EINVAL);
    cr_assert_eq(hnsw_count(ix), 0);
    float rows[3 * 4] = {1, 1, 1, 1, 2, 2, 2, 2, 3, 3, -INFINITY, 3};
    uint64_t ids[3] = {1, 2, 3};
    cr_assert_eq(hnsw_insert_batch(ix, ids, rows, 3, 2, &err), SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "row 2") != NULL, "%s", err.msg);
    cr_assert_eq(hnsw_count(ix), 0, "a bad row must insert none");
    cr_assert_eq(hnsw_delete(ix, 9, &err), SHOAL_ENOTFOUND);

    uint64_t id[2];
    float d[2];
    cr_assert_eq(hnsw_search(ix, good, 2, 10, NULL, NULL, id, d, &err), 0);
    cr_assert_eq(id[0], HNSW_ID_NONE);
    cr_assert(isinf(d[1]));
    cr_assert_eq(hnsw_insert(ix, 1, good, &err), 0);
    cr_assert_eq(hnsw_search(ix, good, 0, 10, NULL, NULL, id, d, &err), SHOAL_EINVAL);
    cr_assert_eq(hnsw_search(ix, good, 1, 0, NULL, NULL, id, d, &err), SHOAL_EINVAL);
    cr_assert_eq(hnsw_search(ix, bad, 1, 10, NULL, NULL, id, d, &err), SHOAL_EINVAL);
    cr_assert_eq(hnsw_search(ix, good, 2, 10, NULL, NULL, id, d, &err), 1);
    cr_assert_eq(id[0], 1);
    cr_assert_eq(id[1], HNSW_ID_NONE);
    cr_assert_eq(hnsw_get(ix, 2, good, &err), SHOAL_ENOTFOUND);
    cr_assert_eq(hnsw_delete(ix, 2, &err), SHOAL_ENOTFOUND);
    cr_assert_eq(hnsw_delete(ix, 1, &err), 0);
    cr_assert_eq(hnsw_delete(ix, 1, &err), SHOAL_ENOTFOUND);
    s_validate(ix);
    cr_assert_null(hnsw_load(NULL, 0, &err));
    cr_assert_eq(err.code, SHOAL_ECORRUPT);
    hnsw_destroy(&ix);
}

Test(hnsw, small_m_and_tiny_graphs)
{
    /* M = 2 (M0 = 4) and a handful of points: every point still found. */
    shoal_err_t err;
    hnsw_params_t p = {
        .dim = 2, .metric = SHOAL_METRIC_L2, .M = 2, .ef_construction = 4, .seed = 1};
    hnsw_t *ix = hnsw_new(&p, &err);
    cr_assert_not_null(ix, "%s", err.msg);
    for (uint64_t i = 0; i < 200; i++) {
        float v[2] = {(float)(i % 20), (float)(i / 20)};
        cr_assert_eq(hnsw_insert(ix, i, v, &err), 0, "%s", err.msg);
    }
    s_validate(ix);
    for (uint64_t i = 0; i < 200; i += 3) {
        float v[2] = {(float)(i % 20), (float)(i / 20)};
        uint64_t id;
        float d;
        cr_assert_eq(hnsw_search(ix, v, 1, 64, NULL, NULL, &id, &d, NULL), 1);
        cr_assert_eq(id, i);
    }
    for (uint64_t i = 0; i < 200; i += 2)
        cr_assert_eq(hnsw_delete(ix, i, &err), 0, "%s", err.msg);
    s_validate(ix);
    hnsw_destroy(&ix);
}

/* ------------------------------------------------------------------------ */
/* Compressed storage (f16, sq8)                                            */
/* ------------------------------------------------------------------------ */

/* The float32 rows re-ranking reads: the test's base, by row number. */
typedef struct {
    const float *base; /* n rows */
    size_t n;          /* rows */
    size_t dim;        /* floats per row */
    size_t calls;      /* rows handed out */
    int fail_with;     /* non-zero: every call returns this instead */
} s_rows_t;

static int s_row(uint64_t id, float *out, void *ctx)
{
    s_rows_t *rows = ctx;
    if (rows->fail_with)
        return rows->fail_with;
    if (id >= rows->n)
        return SHOAL_ENOTFOUND;
    memcpy(out, rows->base + id * rows->dim, rows->dim * sizeof(float));
    rows->calls++;
    return 0;
}

/* An index of storage kind over base (ids = row numbers); sq8 may be NULL (trained by the batch). */
static hnsw_t *s_build_kind(const float *base, size_t n, size_t dim, shoal_metric_t metric,
                            quant_kind_t storage, const quant_sq8_t *sq8)
{
    shoal_err_t err;
    hnsw_params_t p = {
        .dim = dim, .metric = metric, .seed = S_SEED, .storage = storage, .sq8 = sq8};
    hnsw_t *ix = hnsw_new(&p, &err);
    cr_assert_not_null(ix, "hnsw_new: %s", err.msg);
    uint64_t *ids = malloc(n * sizeof *ids);
    for (size_t i = 0; i < n; i++)
        ids[i] = i;
    cr_assert_eq(hnsw_insert_batch(ix, ids, base, n, S_THREADS, &err), 0, "%s", err.msg);
    free(ids);
    s_validate(ix);
    cr_assert_eq(hnsw_storage(ix), storage);
    return ix;
}

/*
 * recall@10 of ix at ef against truth (gt_k ids per row), re-ranked from
 * rows (NULL: the code distances). Results must come best first.
 */
static double s_kind_recall(const hnsw_t *ix, const float *queries, size_t nq, size_t dim,
                            const int32_t *truth, size_t gt_k, size_t ef, s_rows_t *rows)
{
    const size_t k = 10;
    uint64_t *ids = malloc(nq * k * sizeof *ids);
    float dists[10];
    hnsw_search_opts_t o = {.k = k, .ef = ef, .rerank_fn = rows ? s_row : NULL, .rerank_ctx = rows};
    for (size_t q = 0; q < nq; q++) {
        shoal_err_t err;
        int n = hnsw_search_with(ix, queries + q * dim, &o, ids + q * k, dists, &err);
        cr_assert_eq(n, (int)k, "hnsw_search_with: %d %s", n, n < 0 ? err.msg : "");
        for (size_t i = 1; i < k; i++)
            cr_assert_leq(dists[i - 1], dists[i], "results out of order");
    }
    double r = gt_recall(ids, k, truth, gt_k, nq, k);
    free(ids);
    return r;
}

/* Floors for recall@10 at ef 128: re-ranked, and on code distances alone. */
typedef struct {
    quant_kind_t storage;
    double reranked; /* with the float32 rows */
    double codes;    /* without */
} s_floor_t;

/* Every kind on one data set: recall with and without re-ranking against the floors. */
static void s_kinds_recall(const char *name, const float *base, size_t n, const float *queries,
                           size_t nq, size_t dim, shoal_metric_t metric, const int32_t *truth,
                           size_t gt_k, const s_floor_t *floors, size_t nfloors, int give_sq8)
{
    for (size_t f = 0; f < nfloors; f++) {
        quant_sq8_t *sq8 = NULL;
        if (give_sq8 && floors[f].storage == QUANT_SQ8) {
            /* As the coordinator will: trained apart, on the rows as stored. */
            float *unit = malloc(n * dim * sizeof *unit);
            memcpy(unit, base, n * dim * sizeof *unit);
            if (metric == SHOAL_METRIC_COSINE)
                for (size_t i = 0; i < n; i++)
                    dist_normalize(unit + i * dim, dim);
            shoal_err_t err;
            sq8 = quant_sq8_train(unit, n, dim, &err);
            cr_assert_not_null(sq8, "%s", err.msg);
            free(unit);
        }
        hnsw_t *ix = s_build_kind(base, n, dim, metric, floors[f].storage, sq8);
        quant_sq8_destroy(&sq8); /* the index keeps its own copy */
        s_rows_t rows = {.base = base, .n = n, .dim = dim};
        double rr = s_kind_recall(ix, queries, nq, dim, truth, gt_k, 128, &rows);
        double rc = s_kind_recall(ix, queries, nq, dim, truth, gt_k, 128, NULL);
        hnsw_stats_t st;
        hnsw_stats(ix, &st);
        fprintf(stderr,
                "%s %s: recall@10 at ef 128 = %.4f re-ranked, %.4f on codes; %.1f bytes/vector "
                "(codes %.1f)\n",
                name, quant_kind_name(floors[f].storage), rr, rc, st.bytes_per_vector,
                (double)st.bytes_codes / (double)st.count);
        cr_assert_geq(rr, floors[f].reranked, "%s %s: re-ranked recall %.4f < %.2f", name,
                      quant_kind_name(floors[f].storage), rr, floors[f].reranked);
        cr_assert_geq(rc, floors[f].codes, "%s %s: code recall %.4f < %.2f", name,
                      quant_kind_name(floors[f].storage), rc, floors[f].codes);
        hnsw_destroy(&ix);
    }
}

Test(hnsw, compressed_recall_siftsmall_l2, .timeout = 240)
{
    S_NEED("siftsmall");
    size_t n, dim, nq, qdim, ngt, gt_k;
    float *base = s_load("siftsmall", "siftsmall_base.fvecs", 0, &n, &dim);
    float *queries = s_load("siftsmall", "siftsmall_query.fvecs", 0, &nq, &qdim);
    int32_t *truth = s_load("siftsmall", "siftsmall_groundtruth.ivecs", 1, &ngt, &gt_k);
    const s_floor_t floors[] = {{QUANT_F16, 0.99, 0.99}, {QUANT_SQ8, 0.99, 0.90}};
    /* sq8's quantizer is trained by the first batch here. */
    s_kinds_recall("siftsmall l2", base, n, queries, nq, dim, SHOAL_METRIC_L2, truth, gt_k, floors,
                   2, 0);
    free(base);
    free(queries);
    free(truth);
}

Test(hnsw, compressed_recall_glove50_cosine, .timeout = 240)
{
    S_NEED("glove50");
    size_t n, dim, nq, qdim, ngt, gt_k;
    float *base = s_load("glove50", "glove50_base.fvecs", 0, &n, &dim);
    float *queries = s_load("glove50", "glove50_query.fvecs", 0, &nq, &qdim);
    int32_t *truth = s_load("glove50", "glove50_groundtruth_angular.ivecs", 1, &ngt, &gt_k);
    const s_floor_t floors[] = {{QUANT_F16, 0.95, 0.95}, {QUANT_SQ8, 0.95, 0.80}};
    /* sq8's quantizer is given, trained on unit rows. */
    s_kinds_recall("glove50 cosine", base, n, queries, nq, dim, SHOAL_METRIC_COSINE, truth, gt_k,
                   floors, 2, 1);
    free(base);
    free(queries);
    free(truth);
}

/* Generated data, every metric, against exact search (gt_knn). */
Test(hnsw, compressed_recall_generated_all_metrics, .timeout = 240)
{
    const size_t n = 5000, nq = 100, dim = 32, k = 10;
    const shoal_metric_t metrics[] = {SHOAL_METRIC_L2, SHOAL_METRIC_IP, SHOAL_METRIC_COSINE};
    const s_floor_t floors[] = {{QUANT_F16, 0.95, 0.95}, {QUANT_SQ8, 0.95, 0.75}};
    for (size_t m = 0; m < 3; m++) {
        int unit = metrics[m] == SHOAL_METRIC_COSINE;
        float *base = s_gen(n, dim, DATAGEN_STREAM_BASE, unit, 41);
        float *queries = s_gen(nq, dim, DATAGEN_STREAM_QUERY, unit, 41);
        uint64_t *gt = malloc(nq * k * sizeof *gt);
        shoal_err_t err;
        cr_assert_eq(gt_knn(base, n, queries, nq, dim, metrics[m], k, S_THREADS, gt, NULL, &err),
                     0, "%s", err.msg);
        int32_t *truth = s_truth32(gt, nq * k, NULL);
        char name[32];
        snprintf(name, sizeof name, "generated %s", shoal_metric_name(metrics[m]));
        s_kinds_recall(name, base, n, queries, nq, dim, metrics[m], truth, k, floors, 2, m == 1);
        free(base);
        free(queries);
        free(gt);
        free(truth);
    }
}

/* Re-ranking: the pool is what is asked, exact distances, and the source's errors. */
Test(hnsw, compressed_rerank_pool_and_source_errors)
{
    const size_t n = 2000, dim = 16, k = 5;
    float *base = s_gen(n, dim, DATAGEN_STREAM_BASE, 0, 43);
    float *queries = s_gen(10, dim, DATAGEN_STREAM_QUERY, 0, 43);
    hnsw_t *ix = s_build_kind(base, n, dim, SHOAL_METRIC_L2, QUANT_SQ8, NULL);
    s_rows_t rows = {.base = base, .n = n, .dim = dim};
    uint64_t ids[8];
    float d[8];
    shoal_err_t err;
    hnsw_search_opts_t o = {.k = k, .ef = 40, .rerank = 12, .rerank_fn = s_row, .rerank_ctx = &rows};
    cr_assert_eq(hnsw_search_with(ix, queries, &o, ids, d, &err), (int)k, "%s", err.msg);
    cr_assert_eq(rows.calls, 12, "re-scored %zu rows, asked 12", rows.calls);
    for (size_t i = 0; i < k; i++) {
        float exact = 0;
        for (size_t j = 0; j < dim; j++) {
            float t = queries[j] - base[ids[i] * dim + j];
            exact += t * t;
        }
        cr_assert_float_eq(d[i], exact, 1e-3f * (1 + exact), "distance %zu not exact", i);
    }
    /* Default pool HNSW_RERANK_FACTOR k; one over max(ef, k) is cut to it; one under k is
     * raised to k. */
    rows.calls = 0;
    o.rerank = 0;
    cr_assert_eq(hnsw_search_with(ix, queries, &o, ids, d, &err), (int)k);
    cr_assert_eq(rows.calls, HNSW_RERANK_FACTOR * k);
    rows.calls = 0;
    o.rerank = 1000;
    cr_assert_eq(hnsw_search_with(ix, queries, &o, ids, d, &err), (int)k);
    cr_assert_eq(rows.calls, 40);
    rows.calls = 0;
    o.rerank = 1;
    cr_assert_eq(hnsw_search_with(ix, queries, &o, ids, d, &err), (int)k);
    cr_assert_eq(rows.calls, k);
    o.rerank = HNSW_RERANK_MAX + 1;
    cr_assert_eq(hnsw_search_with(ix, queries, &o, ids, d, &err), SHOAL_EINVAL);
    /* A source that no longer has the rows drops them; one that fails ends the search. */
    o.rerank = 0;
    rows.fail_with = SHOAL_ENOTFOUND;
    cr_assert_eq(hnsw_search_with(ix, queries, &o, ids, d, &err), 0);
    cr_assert_eq(ids[0], HNSW_ID_NONE);
    rows.fail_with = SHOAL_EIO;
    cr_assert_eq(hnsw_search_with(ix, queries, &o, ids, d, &err), SHOAL_EIO);
    cr_assert(strstr(err.msg, "re-rank") != NULL, "%s", err.msg);
    /* f32 never calls the source: its distances are exact already. */
    hnsw_t *f32 = s_build_kind(base, 300, dim, SHOAL_METRIC_L2, QUANT_F32, NULL);
    rows.fail_with = SHOAL_EIO;
    cr_assert_eq(hnsw_search_with(f32, queries, &o, ids, d, &err), (int)k, "%s", err.msg);
    hnsw_destroy(&f32);
    hnsw_destroy(&ix);
    free(base);
    free(queries);
}

/* hnsw_get decodes: within half a step of sq8's grid, binary16 rounding for f16. */
Test(hnsw, compressed_get_is_the_decoded_vector)
{
    const size_t n = 500, dim = 24;
    float *base = s_gen(n, dim, DATAGEN_STREAM_BASE, 0, 47);
    for (int kind = QUANT_F16; kind <= QUANT_SQ8; kind++) {
        hnsw_t *ix = s_build_kind(base, n, dim, SHOAL_METRIC_L2, (quant_kind_t)kind, NULL);
        const quant_sq8_t *sq8 = hnsw_sq8(ix);
        cr_assert((kind == QUANT_SQ8) == (sq8 != NULL));
        float out[24];
        for (size_t i = 0; i < n; i += 7) {
            cr_assert_eq(hnsw_get(ix, i, out, NULL), 0);
            for (size_t j = 0; j < dim; j++) {
                float x = base[i * dim + j];
                float tol = kind == QUANT_F16 ? fabsf(x) * 0x1p-11f + 0x1p-25f
                                              : quant_sq8_scale(sq8)[j] * 0.5001f + 1e-6f;
                cr_assert_leq(fabsf(out[j] - x), tol, "%s id %zu dim %zu: %g for %g",
                              quant_kind_name((quant_kind_t)kind), i, j, out[j], x);
            }
        }
        hnsw_destroy(&ix);
    }
    free(base);
}

/* bytes by component add up, and the codes are what the kind says. */
Test(hnsw, compressed_stats_by_component)
{
    const size_t n = 3000, dim = 128;
    float *base = s_gen(n, dim, DATAGEN_STREAM_BASE, 0, 53);
    size_t block[QUANT_KIND_COUNT];
    for (int kind = QUANT_F32; kind < QUANT_KIND_COUNT; kind++) {
        hnsw_t *ix = s_build_kind(base, n, dim, SHOAL_METRIC_L2, (quant_kind_t)kind, NULL);
        hnsw_stats_t st;
        hnsw_stats(ix, &st);
        cr_assert_eq(st.storage, (quant_kind_t)kind);
        cr_assert_eq(st.bytes_codes + st.bytes_links + st.bytes_ids + st.bytes_other, st.bytes);
        cr_assert_eq(st.bytes_codes % quant_code_bytes((quant_kind_t)kind, dim), 0);
        cr_assert_geq(st.bytes_codes, n * quant_code_bytes((quant_kind_t)kind, dim));
        block[kind] = (size_t)st.bytes_per_vector;
        fprintf(stderr, "%s dim %zu: %.1f bytes/vector: codes %.1f links %.1f ids %.1f other %.1f\n",
                quant_kind_name((quant_kind_t)kind), dim, st.bytes_per_vector,
                (double)st.bytes_codes / n, (double)st.bytes_links / n, (double)st.bytes_ids / n,
                (double)st.bytes_other / n);
        hnsw_destroy(&ix);
    }
    cr_assert_lt(block[QUANT_SQ8], block[QUANT_F16]);
    cr_assert_lt(block[QUANT_F16], block[QUANT_F32]);
    free(base);
}

/* An sq8 index over generated rows with some deleted, saved; ip so the dot paths run. */
static hnsw_t *s_saved_kind(quant_kind_t kind, uint8_t **blob, size_t *len, float **base_out)
{
    const size_t n = 1200, dim = 12;
    float *base = s_gen(n, dim, DATAGEN_STREAM_BASE, 0, 59);
    hnsw_t *ix = s_build_kind(base, n, dim, SHOAL_METRIC_IP, kind, NULL);
    for (size_t i = 0; i < n; i += 9)
        cr_assert_eq(hnsw_delete(ix, i, NULL), 0);
    s_validate(ix);
    shoal_err_t err;
    cr_assert_eq(hnsw_save_buffer(ix, blob, len, &err), 0, "%s", err.msg);
    *base_out = base;
    return ix;
}

Test(hnsw, compressed_save_load_round_trip)
{
    for (int kind = QUANT_F16; kind <= QUANT_SQ8; kind++) {
        uint8_t *blob, *blob2;
        size_t len, len2;
        float *base;
        hnsw_t *ix = s_saved_kind((quant_kind_t)kind, &blob, &len, &base);
        float *queries = s_gen(30, 12, DATAGEN_STREAM_QUERY, 0, 59);
        shoal_err_t err;
        hnsw_t *back = hnsw_load(blob, len, &err);
        cr_assert_not_null(back, "hnsw_load: %s", err.msg);
        s_validate(back);
        cr_assert_eq(hnsw_storage(back), (quant_kind_t)kind);
        cr_assert_eq(hnsw_count(back), hnsw_count(ix));
        if (kind == QUANT_SQ8) {
            /* The same quantizer, not a retrained one. */
            size_t rl = quant_sq8_record_size(12);
            uint8_t *r1 = malloc(rl), *r2 = malloc(rl);
            quant_sq8_record_write(hnsw_sq8(ix), r1);
            quant_sq8_record_write(hnsw_sq8(back), r2);
            cr_assert_arr_eq(r1, r2, rl);
            free(r1);
            free(r2);
        }
        s_rows_t rows = {.base = base, .n = 1200, .dim = 12};
        for (size_t q = 0; q < 30; q++) {
            uint64_t i1[10], i2[10];
            float d1[10], d2[10];
            for (int rr = 0; rr < 2; rr++) {
                hnsw_search_opts_t o = {.k = 10, .ef = 40, .rerank_fn = rr ? s_row : NULL,
                                        .rerank_ctx = &rows};
                int n1 = hnsw_search_with(ix, queries + q * 12, &o, i1, d1, NULL);
                int n2 = hnsw_search_with(back, queries + q * 12, &o, i2, d2, NULL);
                cr_assert_eq(n1, n2);
                cr_assert_arr_eq(i1, i2, sizeof i1);
                cr_assert_arr_eq(d1, d2, sizeof d1);
            }
        }
        float g1[12], g2[12];
        cr_assert_eq(hnsw_get(ix, 1, g1, NULL), 0);
        cr_assert_eq(hnsw_get(back, 1, g2, NULL), 0);
        cr_assert_arr_eq(g1, g2, sizeof g1);
        cr_assert_eq(hnsw_save_buffer(back, &blob2, &len2, NULL), 0);
        cr_assert_eq(len2, len);
        cr_assert_arr_eq(blob2, blob, len);
        /* And it keeps working: inserts and deletes on the loaded codes. */
        cr_assert_eq(hnsw_delete(back, 5, NULL), 0);
        cr_assert_eq(hnsw_insert(back, 5, queries, NULL), 0);
        s_validate(back);
        free(blob2);
        hnsw_destroy(&back);
        hnsw_destroy(&ix);
        free(blob);
        free(base);
        free(queries);
    }
    /* An empty sq8 index with no quantizer yet round-trips; it still trains on its first batch. */
    hnsw_params_t p = {.dim = 4, .metric = SHOAL_METRIC_L2, .storage = QUANT_SQ8};
    hnsw_t *empty = hnsw_new(&p, NULL);
    uint8_t *eb;
    size_t el;
    cr_assert_eq(hnsw_save_buffer(empty, &eb, &el, NULL), 0);
    shoal_err_t err;
    hnsw_t *eback = hnsw_load(eb, el, &err);
    cr_assert_not_null(eback, "%s", err.msg);
    cr_assert_null(hnsw_sq8(eback));
    float rows4[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    uint64_t ids2[2] = {1, 2};
    cr_assert_eq(hnsw_insert_batch(eback, ids2, rows4, 2, 1, &err), 0, "%s", err.msg);
    cr_assert_not_null(hnsw_sq8(eback));
    hnsw_destroy(&eback);
    hnsw_destroy(&empty);
    free(eb);
}

/* Format version 1 (float32, no quantizer part) still loads, and answers alike. */
Test(hnsw, version_1_files_still_load)
{
    uint8_t *blob;
    size_t len, dim;
    float *queries;
    hnsw_t *ix = s_saved(&blob, &len, &queries, &dim);
    /* A version 1 file is this one with version 1 and no quantizer length word. */
    uint8_t *v1 = malloc(len - 4);
    memcpy(v1, blob, 72);
    memcpy(v1 + 72, blob + 76, len - 76);
    uint32_t one = 1;
    memcpy(v1 + 8, &one, 4);
    shoal_err_t err;
    hnsw_t *back = hnsw_load(v1, len - 4, &err);
    cr_assert_not_null(back, "hnsw_load of version 1: %s", err.msg);
    cr_assert_eq(hnsw_storage(back), QUANT_F32);
    for (size_t q = 0; q < 20; q++) {
        uint64_t i1[10], i2[10];
        float d1[10], d2[10];
        cr_assert_eq(hnsw_search(ix, queries + q * dim, 10, 40, NULL, NULL, i1, d1, NULL), 10);
        cr_assert_eq(hnsw_search(back, queries + q * dim, 10, 40, NULL, NULL, i2, d2, NULL), 10);
        cr_assert_arr_eq(i1, i2, sizeof i1);
        cr_assert_arr_eq(d1, d2, sizeof d1);
    }
    /* Version 1 had no storage field: anything but 0 there is corrupt. */
    s_set32(v1, 60, QUANT_SQ8);
    s_expect_bad(v1, len - 4, SHOAL_ECORRUPT, "storage in a version 1 file");
    hnsw_destroy(&back);
    hnsw_destroy(&ix);
    free(v1);
    free(blob);
    free(queries);
}

Test(hnsw, compressed_load_rejects_corrupt_quantizer_and_codes, .timeout = 240)
{
    uint8_t *blob;
    size_t len;
    float *base;
    hnsw_t *ix = s_saved_kind(QUANT_SQ8, &blob, &len, &base);
    uint8_t *b = malloc(len);
    const size_t dim = 12, rec = 76; /* the quantizer record: after its length word at 72 */
    uint32_t rlen;
    memcpy(&rlen, blob + 72, 4);
    cr_assert_eq(rlen, quant_sq8_record_size(dim));

    for (size_t cut = 0; cut < rec + rlen + 40; cut++)
        s_expect_bad(blob, cut, SHOAL_ECORRUPT, "truncated in or near the quantizer");
    struct {
        size_t off;
        uint32_t value;
        const char *what;
    } table[] = {
        {72, 0, "no quantizer record with nodes"},
        {72, 8, "record length too short"},
        {72, (uint32_t)quant_sq8_record_size(dim) + 4, "record length too long"},
        {72, 0xfffffff0u, "record length past the blob"},
        {rec, 0x58585858u, "record magic"},
        {rec + 4, 9, "record version"},
        {rec + 8, 13, "record dim not the index's"},
        {rec + 12, 1, "record reserved field"},
        {rec + 16, 0x7fc00000u, "NaN offset"},
        {rec + 16 + 4 * dim, 0xbf800000u, "negative scale"},
        {rec + 16 + 4 * dim, 0x7f800000u, "infinite scale"},
        {60, QUANT_F16, "f16 storage with an sq8 record"},
        {60, QUANT_F32, "f32 storage with an sq8 record"},
    };
    for (size_t t = 0; t < sizeof table / sizeof *table; t++) {
        memcpy(b, blob, len);
        s_set32(b, table[t].off, table[t].value);
        s_expect_bad(b, len, SHOAL_ECORRUPT, table[t].what);
    }
    /* Random damage in the header, the record and the first nodes never crashes. */
    shoal_rng_t rng;
    shoal_rng_seed(&rng, 101);
    for (int round = 0; round < 300; round++) {
        memcpy(b, blob, len);
        b[shoal_rng_next(&rng) % (rec + rlen + 200)] ^= (uint8_t)(1u << (shoal_rng_next(&rng) % 8));
        shoal_err_t err;
        hnsw_t *got = hnsw_load(b, len, &err);
        if (got) {
            s_validate(got);
            hnsw_destroy(&got);
        } else {
            cr_assert(err.code == SHOAL_ECORRUPT || err.code == SHOAL_EUNSUPPORTED,
                      "round %d: code %d (%s)", round, err.code, err.msg);
        }
    }
    free(b);
    free(blob);
    free(base);
    hnsw_destroy(&ix);

    /* f16: a code that is infinity or NaN. */
    ix = s_saved_kind(QUANT_F16, &blob, &len, &base);
    const size_t node0 = 76; /* no quantizer record: id, level, then the halves */
    uint16_t inf = 0x7c00;
    memcpy(blob + node0 + 12 + 2, &inf, 2);
    s_expect_bad(blob, len, SHOAL_ECORRUPT, "infinite f16 code");
    free(blob);
    free(base);
    hnsw_destroy(&ix);
}

Test(hnsw, compressed_rejects_bad_input)
{
    shoal_err_t err;
    hnsw_params_t p = {.dim = 8, .metric = SHOAL_METRIC_L2, .storage = (quant_kind_t)3};
    cr_assert_null(hnsw_new(&p, &err));
    cr_assert_eq(err.code, SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "storage") != NULL, "%s", err.msg);
    p.storage = (quant_kind_t)-1;
    cr_assert_null(hnsw_new(&p, &err));
    cr_assert_eq(err.code, SHOAL_EINVAL);
    /* A quantizer of another dimension. */
    float rows[2 * 4] = {0, 1, 2, 3, 4, 5, 6, 7};
    quant_sq8_t *sq4 = quant_sq8_train(rows, 2, 4, &err);
    cr_assert_not_null(sq4);
    p = (hnsw_params_t){.dim = 8, .metric = SHOAL_METRIC_L2, .storage = QUANT_SQ8, .sq8 = sq4};
    cr_assert_null(hnsw_new(&p, &err));
    cr_assert_eq(err.code, SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "dim") != NULL, "%s", err.msg);
    quant_sq8_destroy(&sq4);
    /* sq8 with no quantizer: a single insert cannot train one. */
    p = (hnsw_params_t){.dim = 4, .metric = SHOAL_METRIC_L2, .storage = QUANT_SQ8};
    hnsw_t *ix = hnsw_new(&p, &err);
    cr_assert_not_null(ix, "%s", err.msg);
    cr_assert_eq(hnsw_insert(ix, 1, rows, &err), SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "quantizer") != NULL, "%s", err.msg);
    uint64_t ids[1];
    float d[1];
    cr_assert_eq(hnsw_search(ix, rows, 1, 10, NULL, NULL, ids, d, NULL), 0, "empty: none found");
    hnsw_destroy(&ix);
    /* f16: a value past binary16's range is refused, and a batch holding one inserts none. */
    p = (hnsw_params_t){.dim = 4, .metric = SHOAL_METRIC_L2, .storage = QUANT_F16};
    ix = hnsw_new(&p, &err);
    float big[8] = {1, 2, 3, 4, 1, 70000.0f, 3, 4};
    cr_assert_eq(hnsw_insert(ix, 1, big + 4, &err), SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "f16") != NULL, "%s", err.msg);
    uint64_t two[2] = {1, 2};
    cr_assert_eq(hnsw_insert_batch(ix, two, big, 2, 1, &err), SHOAL_EINVAL);
    cr_assert_eq(hnsw_count(ix), 0);
    /* ... but a query may be anything finite. */
    cr_assert_eq(hnsw_insert(ix, 1, big, &err), 0, "%s", err.msg);
    cr_assert_eq(hnsw_search(ix, big + 4, 1, 10, NULL, NULL, ids, d, &err), 1, "%s", err.msg);
    hnsw_destroy(&ix);
}

/* ------------------------------------------------------------------------ */
/* Exact search over the graph's storage                                   */
/* ------------------------------------------------------------------------ */

typedef struct {
    float d;
    uint64_t id;
} s_pair_t;

static int s_pair_cmp(const void *a, const void *b)
{
    const s_pair_t *x = a, *y = b;
    if (x->d != y->d)
        return x->d < y->d ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* The float32 brute-force top-k of query over base, as the graph scores rows. */
static void s_brute(const float *base, size_t n, size_t dim, shoal_metric_t metric,
                    const float *query, size_t k, uint64_t *ids, float *dists)
{
    const dist_kernels_t *kern = dist_kernels();
    float *q = malloc(dim * sizeof *q), *row = malloc(dim * sizeof *row);
    s_pair_t *all = malloc(n * sizeof *all);
    memcpy(q, query, dim * sizeof *q);
    if (metric == SHOAL_METRIC_COSINE)
        dist_normalize(q, dim);
    for (size_t i = 0; i < n; i++) {
        memcpy(row, base + i * dim, dim * sizeof *row);
        if (metric == SHOAL_METRIC_COSINE)
            dist_normalize(row, dim);
        float raw = metric == SHOAL_METRIC_L2 ? kern->l2sq(q, row, dim) : kern->dot(q, row, dim);
        all[i].d = metric == SHOAL_METRIC_L2 ? raw : metric == SHOAL_METRIC_IP ? -raw : 1.0f - raw;
        all[i].id = i;
    }
    qsort(all, n, sizeof *all, s_pair_cmp);
    for (size_t i = 0; i < k; i++)
        ids[i] = all[i].id, dists[i] = all[i].d;
    free(q);
    free(row);
    free(all);
}

/* ix's exact search equals the brute force; the bound re-scores under max_share of the rows. */
static void s_expect_exact(const hnsw_t *ix, const float *base, size_t n, const float *queries,
                           size_t nq, size_t dim, shoal_metric_t metric, double max_share,
                           const char *what)
{
    enum { K = 10 };
    s_rows_t rows = {.base = base, .n = n, .dim = dim};
    hnsw_search_opts_t o = {.k = K, .rerank_fn = s_row, .rerank_ctx = &rows};
    size_t rescored_sum = 0;
    for (size_t q = 0; q < nq; q++) {
        uint64_t ids[K], want_ids[K];
        float dists[K], want[K];
        size_t rescored = 0;
        shoal_err_t err;
        int got = hnsw_exact_search(ix, queries + q * dim, &o, ids, dists, &rescored, &err);
        cr_assert_eq(got, K, "%s: hnsw_exact_search: %d %s", what, got, got < 0 ? err.msg : "");
        s_brute(base, n, dim, metric, queries + q * dim, K, want_ids, want);
        for (size_t i = 0; i < K; i++) {
            cr_assert_eq(ids[i], want_ids[i], "%s: query %zu rank %zu: id %llu, brute force %llu",
                         what, q, i, (unsigned long long)ids[i], (unsigned long long)want_ids[i]);
            cr_assert_eq(dists[i], want[i], "%s: query %zu rank %zu: %.9g vs %.9g", what, q, i,
                         (double)dists[i], (double)want[i]);
        }
        rescored_sum += rescored;
    }
    if (hnsw_storage(ix) != QUANT_F32)
        cr_assert_lt((double)rescored_sum, max_share * (double)(nq * n), "%s: the bound re-scored %zu rows for %zu queries",
                     what, rescored_sum, nq);
    cr_log_info("%s: %.1f rows re-scored per query of %zu", what, (double)rescored_sum / nq, n);
}

Test(hnsw, exact_search_on_codes_is_exact, .timeout = 240)
{
    const size_t n = 3000, dim = 24, nq = 20;
    float *base = s_gen(n, dim, 1, 0, 77), *queries = s_gen(nq, dim, 2, 0, 77);
    const shoal_metric_t metrics[] = {SHOAL_METRIC_L2, SHOAL_METRIC_IP, SHOAL_METRIC_COSINE};
    const quant_kind_t kinds[] = {QUANT_F32, QUANT_F16, QUANT_SQ8};
    for (size_t m = 0; m < 3; m++) {
        for (size_t kk = 0; kk < 3; kk++) {
            hnsw_t *ix = s_build_kind(base, n, dim, metrics[m], kinds[kk], NULL);
            char what[64];
            snprintf(what, sizeof what, "%s %s", shoal_metric_name(metrics[m]),
                     quant_kind_name(kinds[kk]));
            s_expect_exact(ix, base, n, queries, nq, dim, metrics[m], 0.05, what);
            hnsw_destroy(&ix);
        }
    }
    free(base);
    free(queries);
}

Test(hnsw, exact_search_on_clamped_sq8_rows_and_after_reload, .timeout = 240)
{
    /* A quantizer trained on a shrunken copy of the data: most rows clamp,
     * so the search must use their own error bounds. */
    const size_t n = 2000, dim = 16, nq = 15;
    float *base = s_gen(n, dim, 3, 0, 5), *queries = s_gen(nq, dim, 4, 0, 5);
    float *small = malloc(200 * dim * sizeof *small);
    for (size_t i = 0; i < 200 * dim; i++)
        small[i] = base[i] * 0.5f;
    shoal_err_t err;
    quant_sq8_t *sq = quant_sq8_train(small, 200, dim, &err);
    cr_assert_not_null(sq, "%s", err.msg);
    hnsw_t *ix = s_build_kind(base, n, dim, SHOAL_METRIC_L2, QUANT_SQ8, sq);
    s_expect_exact(ix, base, n, queries, nq, dim, SHOAL_METRIC_L2, 0.5, "clamped sq8");
    uint8_t *blob = NULL;
    size_t len = 0;
    cr_assert_eq(hnsw_save_buffer(ix, &blob, &len, &err), 0, "%s", err.msg);
    hnsw_t *back = hnsw_load(blob, len, &err);
    cr_assert_not_null(back, "%s", err.msg);
    s_expect_exact(back, base, n, queries, nq, dim, SHOAL_METRIC_L2, 0.5,
                   "clamped sq8 reloaded");
    /* Without a row source a compressed graph cannot answer exactly. */
    hnsw_search_opts_t o = {.k = 5};
    uint64_t ids[5];
    float dists[5];
    cr_assert_eq(hnsw_exact_search(back, queries, &o, ids, dists, NULL, &err), SHOAL_EINVAL);
    hnsw_destroy(&ix);
    hnsw_destroy(&back);
    quant_sq8_destroy(&sq);
    free(blob);
    free(small);
    free(base);
    free(queries);
}

/* ------------------------------------------------------------------------ */
/* A search that must not wait (opts.busy)                                  */
/* ------------------------------------------------------------------------ */

/* A save whose first write holds on until the test lets it go. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int holding, release;
    const hnsw_t *ix;
    int shared; /* hnsw_save_shared instead of hnsw_save */
    int rc;
} s_held_save_t;

static int s_held_write(void *ctx, const void *data, size_t len)
{
    (void)data;
    (void)len;
    s_held_save_t *h = ctx;
    pthread_mutex_lock(&h->mu);
    h->holding = 1;
    pthread_cond_broadcast(&h->cv);
    while (!h->release)
        pthread_cond_wait(&h->cv, &h->mu);
    pthread_mutex_unlock(&h->mu);
    return 0;
}

static void *s_held_save_main(void *arg)
{
    s_held_save_t *h = arg;
    h->rc = h->shared ? hnsw_save_shared(h->ix, s_held_write, h, NULL)
                      : hnsw_save(h->ix, s_held_write, h, NULL);
    return NULL;
}

/* Starts h's save on a thread and returns once its first write holds it. */
static pthread_t s_held_save_start(s_held_save_t *h)
{
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, s_held_save_main, h), 0);
    pthread_mutex_lock(&h->mu);
    while (!h->holding)
        pthread_cond_wait(&h->cv, &h->mu);
    pthread_mutex_unlock(&h->mu);
    return t;
}

/* Lets h's save go on and waits for it; it must have succeeded. */
static void s_held_save_finish(s_held_save_t *h, pthread_t t)
{
    pthread_mutex_lock(&h->mu);
    h->release = 1;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
    pthread_join(t, NULL);
    cr_assert_eq(h->rc, 0);
}

Test(hnsw, busy_search_does_not_wait_for_a_save_and_then_matches)
{
    const size_t n = 2000, dim = 16, k = 10;
    float *base = s_gen(n, dim, DATAGEN_STREAM_BASE, 0, 3);
    hnsw_t *ix = s_build(base, n, dim, SHOAL_METRIC_L2);
    const float *q = base + 7 * dim;
    uint64_t want_ids[10], ids[10];
    float want_d[10], d[10];
    shoal_err_t err;
    cr_assert_eq(hnsw_search(ix, q, k, 64, NULL, NULL, want_ids, want_d, &err), (int)k, "%s",
                 err.msg);

    /* A save holds the index for writing: the search says busy and leaves ids alone. */
    s_held_save_t h = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .ix = ix};
    pthread_t t = s_held_save_start(&h);
    int busy = -1;
    hnsw_search_opts_t o = {.k = k, .ef = 64, .busy = &busy};
    for (size_t i = 0; i < k; i++)
        ids[i] = 424242;
    cr_assert_eq(hnsw_search_with(ix, q, &o, ids, d, &err), 0, "%s", err.msg);
    cr_assert_eq(busy, 1, "a search that must not wait ran while a save held the index");
    for (size_t i = 0; i < k; i++)
        cr_assert_eq(ids[i], 424242, "a busy search wrote its results");

    s_held_save_finish(&h, t);

    /* Free again: it runs and answers as a plain search. */
    cr_assert_eq(hnsw_search_with(ix, q, &o, ids, d, &err), (int)k, "%s", err.msg);
    cr_assert_eq(busy, 0);
    for (size_t i = 0; i < k; i++) {
        cr_assert_eq(ids[i], want_ids[i], "rank %zu", i);
        cr_assert_eq(d[i], want_d[i], "rank %zu", i);
    }
    hnsw_destroy(&ix);
    free(base);
}

/* A growing buffer as an hnsw_write_fn's target. */
typedef struct {
    uint8_t *data;
    size_t len;
} s_blob_t;

static int s_blob_write(void *ctx, const void *data, size_t len)
{
    s_blob_t *b = ctx;
    uint8_t *grown = realloc(b->data, b->len + len);
    if (!grown)
        return SHOAL_ENOMEM;
    memcpy(grown + b->len, data, len);
    b->data = grown;
    b->len += len;
    return 0;
}

/* A shared save (the caller keeps writers out) lets searches run meanwhile, and saves the same. */
Test(hnsw, shared_save_lets_searches_run_and_writes_the_same_blob)
{
    const size_t n = 2000, dim = 16, k = 10;
    float *base = s_gen(n, dim, DATAGEN_STREAM_BASE, 0, 5);
    hnsw_t *ix = s_build(base, n, dim, SHOAL_METRIC_L2);
    uint64_t want_ids[10], ids[10];
    float want_d[10], d[10];
    shoal_err_t err;
    cr_assert_eq(hnsw_search(ix, base + 11 * dim, k, 64, NULL, NULL, want_ids, want_d, &err),
                 (int)k, "%s", err.msg);

    s_held_save_t h = {.mu = PTHREAD_MUTEX_INITIALIZER,
                       .cv = PTHREAD_COND_INITIALIZER,
                       .ix = ix,
                       .shared = 1};
    pthread_t t = s_held_save_start(&h);
    int busy = -1;
    hnsw_search_opts_t o = {.k = k, .ef = 64, .busy = &busy};
    cr_assert_eq(hnsw_search_with(ix, base + 11 * dim, &o, ids, d, &err), (int)k, "%s", err.msg);
    cr_assert_eq(busy, 0, "a search waited for a shared save");
    for (size_t i = 0; i < k; i++)
        cr_assert_eq(ids[i], want_ids[i], "rank %zu", i);
    s_held_save_finish(&h, t);

    /* The same bytes as an exclusive save. */
    uint8_t *a = NULL, *b = NULL;
    size_t alen = 0, blen = 0;
    cr_assert_eq(hnsw_save_buffer(ix, &a, &alen, &err), 0, "%s", err.msg);
    s_blob_t sb = {0};
    cr_assert_eq(hnsw_save_shared(ix, s_blob_write, &sb, &err), 0, "%s", err.msg);
    b = sb.data;
    blen = sb.len;
    cr_assert_eq(alen, blen);
    cr_assert(memcmp(a, b, alen) == 0, "a shared save wrote other bytes");
    free(a);
    free(b);
    hnsw_destroy(&ix);
    free(base);
}
