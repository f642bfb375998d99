/*
 * test_flat.c - the flat store (add, upsert, remove and its row moves, input
 * checks) and exact search against groundtruth.h's independent brute force,
 * on every path, tiling and thread count, and on siftsmall's shipped ground
 * truth where present.
 *
 * Comparing two float computations: neighbours whose true distances differ
 * by less than the rounding error may come out in either order. So where our
 * id at position j differs from the reference's, both ids' distances are
 * recomputed in double and must be equal within S_TIE_REL of the magnitudes
 * involved (for L2 the distances, for IP |q| |x|, for cosine 1). Returned
 * distances must be within S_DIST_REL of the double-precision ones.
 */
#include "common/datagen.h"
#include "common/distance.h"
#include "common/flat.h"
#include "common/groundtruth.h"
#include "common/topk.h"
#include "common/vecfile.h"
#include "tests/test_support.h"

#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define S_TIE_REL  1e-5
#define S_DIST_REL 1e-4

/* Stored ids are not row numbers, so a mix-up of the two shows. */
#define S_ID(row)  (1000u + 7u * (uint64_t)(row))
#define S_ROW(id)  ((size_t)(((id)-1000u) / 7u))

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */
/* ------------------------------------------------------------------------ */

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

/* A store holding base under ids S_ID(row), added in two batches. */
static flat_store_t *s_store_of(const float *base, size_t n, size_t dim, shoal_metric_t metric)
{
    shoal_err_t err;
    flat_store_t *store = flat_store_new(dim, metric, &err);
    cr_assert_not_null(store, "%s", err.msg);
    uint64_t *ids = malloc(n * sizeof(uint64_t));
    cr_assert_not_null(ids);
    for (size_t i = 0; i < n; i++)
        ids[i] = S_ID(i);
    size_t half = n / 2;
    cr_assert_eq(flat_store_add(store, ids, base, half, &err), SHOAL_OK, "%s", err.msg);
    cr_assert_eq(flat_store_add(store, ids + half, base + half * dim, n - half, &err), SHOAL_OK,
                 "%s", err.msg);
    cr_assert_eq(flat_store_count(store), n);
    free(ids);
    return store;
}

/*
 * Checks our answer (store ids) against the reference (row numbers), both
 * nq x k with the given strides, up to ties; and our distances.
 */
static void s_check(const float *base, size_t n, const float *queries, size_t nq, size_t dim,
                    shoal_metric_t metric, size_t k, const uint64_t *ids, const float *dists,
                    const uint64_t *ref, size_t ref_stride, const char *what)
{
    for (size_t q = 0; q < nq; q++) {
        const float *qv = queries + q * dim;
        for (size_t j = 0; j < k; j++) {
            uint64_t id = ids[q * k + j];
            uint64_t want = ref[q * ref_stride + j];
            if (want == TOPK_ID_NONE) {
                cr_assert_eq(id, TOPK_ID_NONE, "%s: query %zu pos %zu: expected padding", what,
                             q, j);
                cr_assert(isinf(dists[q * k + j]) && dists[q * k + j] > 0);
                continue;
            }
            cr_assert(id != TOPK_ID_NONE && id >= 1000 && (id - 1000) % 7 == 0 &&
                          S_ROW(id) < n,
                      "%s: query %zu pos %zu: id %llu is not a stored id", what, q, j,
                      (unsigned long long)id);
            const float *xv = base + S_ROW(id) * dim;
            double d = s_true_dist(metric, qv, xv, dim);
            if (S_ROW(id) != want) {
                const float *wv = base + want * dim;
                double dw = s_true_dist(metric, qv, wv, dim);
                double mag = fmax(s_magnitude(metric, qv, xv, dim, d),
                                  s_magnitude(metric, qv, wv, dim, dw));
                cr_assert(fabs(d - dw) <= S_TIE_REL * mag,
                          "%s: query %zu pos %zu: row %zu (d=%.9g) where the reference has "
                          "row %llu (d=%.9g)",
                          what, q, j, S_ROW(id), d, (unsigned long long)want, dw);
            }
            double mag = fmax(s_magnitude(metric, qv, xv, dim, d), 1e-30);
            cr_assert(fabs((double)dists[q * k + j] - d) <= S_DIST_REL * mag,
                      "%s: query %zu pos %zu: distance %.9g, exact %.9g", what, q, j,
                      (double)dists[q * k + j], d);
            for (size_t i = 0; i < j; i++)
                cr_assert_neq(ids[q * k + i], id, "%s: query %zu: id twice", what, q);
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Search against the brute force                                           */
/* ------------------------------------------------------------------------ */

static void s_check_metric(shoal_metric_t metric)
{
    const size_t n = 3000, dim = 24, max_nq = 300, max_k = 1000;
    const size_t ks[] = {1, 10, 100, 1000};
    const size_t nqs[] = {1, 7, 300};
    float *base = s_generate(dim, 41, DATAGEN_STREAM_BASE, n);
    float *queries = s_generate(dim, 41, DATAGEN_STREAM_QUERY, max_nq);
    uint64_t *ref = malloc(max_nq * max_k * sizeof(uint64_t));
    uint64_t *ids = malloc(max_nq * max_k * sizeof(uint64_t));
    float *dists = malloc(max_nq * max_k * sizeof(float));
    cr_assert(ref && ids && dists);
    shoal_err_t err;
    cr_assert_eq(gt_knn(base, n, queries, max_nq, dim, metric, max_k, 2, ref, NULL, &err),
                 SHOAL_OK, "%s", err.msg);
    flat_store_t *store = s_store_of(base, n, dim, metric);
    flat_view_t view = flat_store_view(store);

    for (size_t ki = 0; ki < 4; ki++) {
        for (size_t qi = 0; qi < 3; qi++) {
            for (int path = 0; path <= 2; path++) {
                flat_search_opts_t opts = {.threads = 2, .force_path = path, .thread_work = 1};
                cr_assert_eq(flat_search(&view, queries, nqs[qi], ks[ki], &opts, ids, dists,
                                         &err),
                             SHOAL_OK, "%s", err.msg);
                char what[96];
                snprintf(what, sizeof what, "%s k=%zu nq=%zu path=%d",
                         shoal_metric_name(metric), ks[ki], nqs[qi], path);
                s_check(base, n, queries, nqs[qi], dim, metric, ks[ki], ids, dists, ref, max_k,
                        what);
            }
        }
    }
    flat_store_destroy(&store);
    cr_assert_null(store);
    free(ref);
    free(ids);
    free(dists);
    free(base);
    free(queries);
}

Test(flat, matches_brute_force_l2)
{
    s_check_metric(SHOAL_METRIC_L2);
}

Test(flat, matches_brute_force_ip)
{
    s_check_metric(SHOAL_METRIC_IP);
}

Test(flat, matches_brute_force_cosine)
{
    s_check_metric(SHOAL_METRIC_COSINE);
}

/* Search with opts into fresh arrays (the caller frees them). */
static void s_search(const flat_view_t *view, const float *queries, size_t nq, size_t k,
                     flat_search_opts_t opts, uint64_t **ids, float **dists)
{
    *ids = malloc(nq * k * sizeof(uint64_t));
    *dists = malloc(nq * k * sizeof(float));
    cr_assert(*ids && *dists);
    shoal_err_t err;
    cr_assert_eq(flat_search(view, queries, nq, k, &opts, *ids, *dists, &err), SHOAL_OK, "%s",
                 err.msg);
}

Test(flat, tiling_and_threads_do_not_change_answers)
{
    /* 20,000 rows: enough for 3 threads to split the rows on the kernel path. */
    const size_t n = 20000, dim = 16, nq = 300, k = 10;
    float *base = s_generate(dim, 5, DATAGEN_STREAM_BASE, n);
    float *queries = s_generate(dim, 5, DATAGEN_STREAM_QUERY, nq);
    for (shoal_metric_t m = SHOAL_METRIC_L2; m <= SHOAL_METRIC_COSINE; m++) {
        flat_store_t *store = s_store_of(base, n, dim, m);
        flat_view_t view = flat_store_view(store);
        for (int path = 1; path <= 2; path++) {
            uint64_t *ids1, *ids2;
            float *d1, *d2;
            s_search(&view, queries, nq, k, (flat_search_opts_t){.threads = 1, .force_path = path},
                     &ids1, &d1);
            const flat_search_opts_t variants[] = {
                {.threads = 3, .force_path = path, .thread_work = 1},
                {.threads = 1, .mem_budget = 64 << 10, .force_path = path},
                {.threads = 3, .mem_budget = 64 << 10, .force_path = path, .thread_work = 1},
            };
            for (size_t v = 0; v < 3; v++) {
                s_search(&view, queries, nq, k, variants[v], &ids2, &d2);
                cr_assert(memcmp(ids1, ids2, nq * k * sizeof(uint64_t)) == 0,
                          "%s path %d variant %zu: ids differ", shoal_metric_name(m), path, v);
                cr_assert(memcmp(d1, d2, nq * k * sizeof(float)) == 0,
                          "%s path %d variant %zu: distances differ", shoal_metric_name(m), path,
                          v);
                free(ids2);
                free(d2);
            }
            free(ids1);
            free(d1);
        }
        flat_store_destroy(&store);
    }
    free(base);
    free(queries);
}

Test(flat, large_batches_split_by_query_tiles)
{
    /* Batches of several full query tiles per thread are split by queries. */
    const size_t n = 1500, dim = 8, nq = 2500, k = 5;
    float *base = s_generate(dim, 9, DATAGEN_STREAM_BASE, n);
    float *queries = s_generate(dim, 9, DATAGEN_STREAM_QUERY, nq);
    uint64_t *ref = malloc(nq * k * sizeof(uint64_t));
    cr_assert_not_null(ref);
    cr_assert_eq(gt_knn(base, n, queries, nq, dim, SHOAL_METRIC_L2, k, 2, ref, NULL, NULL), 0);
    flat_store_t *store = s_store_of(base, n, dim, SHOAL_METRIC_L2);
    flat_view_t view = flat_store_view(store);
    const flat_search_opts_t variants[] = {
        {.threads = 1, .force_path = 2},
        {.threads = 1, .force_path = 2, .mem_budget = 64 << 10},
        {.threads = 2, .thread_work = 1},
    };
    for (size_t v = 0; v < 3; v++) {
        uint64_t *ids;
        float *dists;
        s_search(&view, queries, nq, k, variants[v], &ids, &dists);
        s_check(base, n, queries, nq, dim, SHOAL_METRIC_L2, k, ids, dists, ref, k, "query split");
        free(ids);
        free(dists);
    }
    flat_store_destroy(&store);
    free(ref);
    free(base);
    free(queries);
}

/* Searches a store from a thread of its own, which keeps tile memory until it
 * exits (the sanitizer build checks that it is freed then). */
typedef struct {
    const flat_view_t *view;
    const float *queries;
    size_t nq, k;
    uint64_t *ids;
    float *dists;
    int rc;
} search_arg_t;

static void *s_search_thread(void *arg)
{
    search_arg_t *a = arg;
    flat_search_opts_t opts = {.threads = 2};
    a->rc = flat_search(a->view, a->queries, a->nq, a->k, &opts, a->ids, a->dists, NULL);
    return NULL;
}

Test(flat, small_searches_on_one_thread_match_threaded)
{
    /* Small enough that the GEMM path runs on the calling thread alone by
     * default; the same search forced onto 2 and 3 threads must give the same
     * bytes, for
     * every path, and so must searches that reuse, grow and outgrow the tile
     * memory the calling thread keeps, and a search from another thread. */
    const size_t n = 9000, dim = 32, max_nq = 200, k = 10;
    const size_t nqs[] = {1, 40, 200, 3};
    float *base = s_generate(dim, 17, DATAGEN_STREAM_BASE, n);
    float *queries = s_generate(dim, 17, DATAGEN_STREAM_QUERY, max_nq);
    flat_store_t *store = s_store_of(base, n, dim, SHOAL_METRIC_L2);
    flat_view_t view = flat_store_view(store);
    for (size_t i = 0; i < sizeof nqs / sizeof nqs[0]; i++) {
        size_t nq = nqs[i];
        cr_assert_lt(nq * n * dim, FLAT_THREAD_WORK_DEFAULT * 2, "one GEMM thread by default");
        for (int path = 0; path <= 2; path++) {
            uint64_t *ids1, *ids2;
            float *d1, *d2;
            s_search(&view, queries, nq, k, (flat_search_opts_t){.threads = 2, .force_path = path},
                     &ids1, &d1);
            for (size_t threads = 2; threads <= 3; threads++) {
                s_search(&view, queries, nq, k,
                         (flat_search_opts_t){
                             .threads = threads, .force_path = path, .thread_work = 1},
                         &ids2, &d2);
                cr_assert(memcmp(ids1, ids2, nq * k * sizeof(uint64_t)) == 0,
                          "nq=%zu path %d threads %zu: ids differ", nq, path, threads);
                cr_assert(memcmp(d1, d2, nq * k * sizeof(float)) == 0,
                          "nq=%zu path %d threads %zu: distances differ", nq, path, threads);
                free(ids2);
                free(d2);
            }
            if (path == 0) {
                search_arg_t a = {&view, queries, nq, k, malloc(nq * k * sizeof(uint64_t)),
                                  malloc(nq * k * sizeof(float)), -1};
                cr_assert(a.ids && a.dists);
                pthread_t thread;
                cr_assert_eq(pthread_create(&thread, NULL, s_search_thread, &a), 0);
                cr_assert_eq(pthread_join(thread, NULL), 0);
                cr_assert_eq(a.rc, SHOAL_OK);
                cr_assert(memcmp(ids1, a.ids, nq * k * sizeof(uint64_t)) == 0);
                cr_assert(memcmp(d1, a.dists, nq * k * sizeof(float)) == 0);
                free(a.ids);
                free(a.dists);
            }
            free(ids1);
            free(d1);
        }
    }
    flat_store_destroy(&store);
    free(base);
    free(queries);
}

Test(flat, k_larger_than_n_is_padded)
{
    const float base[4 * 2] = {0, 0, 1, 0, 2, 0, 3, 0};
    const float query[2] = {2.9f, 0};
    flat_store_t *store = s_store_of(base, 4, 2, SHOAL_METRIC_L2);
    flat_view_t view = flat_store_view(store);
    for (int path = 0; path <= 2; path++) {
        uint64_t ids[7];
        float dists[7];
        flat_search_opts_t opts = {.force_path = path};
        cr_assert_eq(flat_search(&view, query, 1, 7, &opts, ids, dists, NULL), SHOAL_OK);
        const size_t rows[4] = {3, 2, 1, 0};
        for (size_t j = 0; j < 4; j++) {
            cr_assert_eq(ids[j], S_ID(rows[j]));
            double want = (2.9 - (double)rows[j]) * (2.9 - (double)rows[j]);
            cr_assert_float_eq(dists[j], want, 1e-5);
        }
        for (size_t j = 4; j < 7; j++) {
            cr_assert_eq(ids[j], TOPK_ID_NONE);
            cr_assert(isinf(dists[j]) && dists[j] > 0);
        }
        /* dists is optional */
        cr_assert_eq(flat_search(&view, query, 1, 7, &opts, ids, NULL, NULL), SHOAL_OK);
        cr_assert_eq(ids[0], S_ID(3));
    }
    flat_store_destroy(&store);

    /* An empty store pads everything. */
    store = flat_store_new(2, SHOAL_METRIC_L2, NULL);
    view = flat_store_view(store);
    uint64_t ids[3];
    cr_assert_eq(flat_search(&view, query, 1, 3, NULL, ids, NULL, NULL), SHOAL_OK);
    cr_assert(ids[0] == TOPK_ID_NONE && ids[2] == TOPK_ID_NONE);
    flat_store_destroy(&store);
}

Test(flat, exact_ties_break_by_id)
{
    /* Rows 1, 3 and 4 are the same point, stored under descending ids. */
    const float base[5 * 2] = {5, 5, 1, 2, 9, 9, 1, 2, 1, 2};
    const uint64_t ids_in[5] = {50, 40, 30, 20, 10};
    for (int path = 0; path <= 2; path++) {
        flat_store_t *store = flat_store_new(2, SHOAL_METRIC_L2, NULL);
        cr_assert_eq(flat_store_add(store, ids_in, base, 5, NULL), SHOAL_OK);
        flat_view_t view = flat_store_view(store);
        uint64_t ids[2];
        flat_search_opts_t opts = {.force_path = path};
        cr_assert_eq(flat_search(&view, base + 2, 1, 2, &opts, ids, NULL, NULL), SHOAL_OK);
        cr_assert(ids[0] == 10 && ids[1] == 20, "path %d: %llu %llu", path,
                  (unsigned long long)ids[0], (unsigned long long)ids[1]);
        flat_store_destroy(&store);
    }
}

Test(flat, cosine_zero_query_is_at_distance_one)
{
    const float base[3 * 2] = {1, 0, 0, 2, -3, 0};
    const float zero[2] = {0, 0};
    flat_store_t *store = s_store_of(base, 3, 2, SHOAL_METRIC_COSINE);
    flat_view_t view = flat_store_view(store);
    uint64_t ids[3];
    float dists[3];
    cr_assert_eq(flat_search(&view, zero, 1, 3, NULL, ids, dists, NULL), SHOAL_OK);
    for (size_t j = 0; j < 3; j++) {
        cr_assert_eq(ids[j], S_ID(j));
        cr_assert_float_eq(dists[j], 1.0f, 1e-6);
    }
    /* Rows were normalised on the way in. */
    cr_assert_float_eq(view.norms_sq[2], 1.0f, 1e-6);
    cr_assert_float_eq(view.vecs[4], -1.0f, 1e-6);
    flat_store_destroy(&store);
}

/* ------------------------------------------------------------------------ */
/* Real data                                                                */
/* ------------------------------------------------------------------------ */

/*
 * An independent reference: every distance in double precision with plain
 * loops, all rows sorted by (distance, row) with qsort. Shares no code with the
 * engine (no SIMD kernels, no heaps, no GEMM).
 */
typedef struct {
    double dist; /* exact distance */
    size_t row;  /* base row */
} s_ref_item_t;

static int s_cmp_ref(const void *a, const void *b)
{
    const s_ref_item_t *x = a, *y = b;
    if (x->dist != y->dist)
        return x->dist < y->dist ? -1 : 1;
    return x->row < y->row ? -1 : x->row > y->row;
}

static void s_scalar_knn(const float *base, size_t n, const float *queries, size_t nq,
                         size_t dim, shoal_metric_t metric, size_t k, uint64_t *rows)
{
    s_ref_item_t *all = malloc(n * sizeof *all);
    cr_assert_not_null(all);
    for (size_t q = 0; q < nq; q++) {
        for (size_t r = 0; r < n; r++) {
            all[r].dist = s_true_dist(metric, queries + q * dim, base + r * dim, dim);
            all[r].row = r;
        }
        qsort(all, n, sizeof *all, s_cmp_ref);
        for (size_t j = 0; j < k; j++)
            rows[q * k + j] = j < n ? all[j].row : TOPK_ID_NONE;
    }
    free(all);
}

Test(flat, matches_scalar_double_reference)
{
    const size_t n = 1200;
    const struct {
        size_t dim, nq, k;
    } cases[] = {{33, 1, 1000}, {33, 100, 10}, {33, 5000, 10}, {5, 5000, 1}, {128, 64, 1000}};
    const shoal_metric_t metrics[] = {SHOAL_METRIC_L2, SHOAL_METRIC_IP, SHOAL_METRIC_COSINE};
    for (size_t m = 0; m < 3; m++) {
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
            size_t dim = cases[c].dim, nq = cases[c].nq, k = cases[c].k;
            float *base = s_generate(dim, 40 + c, DATAGEN_STREAM_BASE, n);
            float *queries = s_generate(dim, 40 + c, DATAGEN_STREAM_QUERY, nq);
            flat_store_t *store = s_store_of(base, n, dim, metrics[m]);
            flat_view_t view = flat_store_view(store);
            uint64_t *ids = malloc(nq * k * sizeof *ids);
            uint64_t *ref = malloc(nq * k * sizeof *ref);
            float *dists = malloc(nq * k * sizeof *dists);
            cr_assert(ids && ref && dists);
            shoal_err_t err;
            cr_assert_eq(flat_search(&view, queries, nq, k, NULL, ids, dists, &err), SHOAL_OK,
                         "%s", err.msg);
            s_scalar_knn(base, n, queries, nq, dim, metrics[m], k, ref);
            char what[96];
            snprintf(what, sizeof what, "%s dim %zu nq %zu k %zu vs scalar reference",
                     shoal_metric_name(metrics[m]), dim, nq, k);
            s_check(base, n, queries, nq, dim, metrics[m], k, ids, dists, ref, k, what);
            flat_store_destroy(&store);
            free(ids);
            free(ref);
            free(dists);
            free(base);
            free(queries);
        }
    }
}

/*
 * recall@100 = 1.0 against a dataset's shipped ground truth on every path: an
 * id missing from the shipped list is accepted only when its exact distance
 * ties the shipped 100th neighbour's (the list had to choose among ties too).
 */
static void s_check_dataset(const char *sub)
{
    const size_t k = 100;
    s_dataset_t ds;
    s_dataset_load(&ds, sub, k);
    const float *base = ds.base, *queries = ds.queries;
    const int32_t *truth = ds.gt;
    size_t n = ds.n, dim = ds.dim, nq = ds.nq, gt_k = ds.gtk;
    shoal_metric_t metric = ds.metric;
    shoal_err_t err;

    flat_store_t *store = s_store_of(base, n, dim, metric);
    flat_view_t view = flat_store_view(store);
    uint64_t *ids = malloc(nq * k * sizeof(uint64_t));
    float *dists = malloc(nq * k * sizeof(float));
    cr_assert(ids && dists);
    for (int p = 0; p <= 2; p++) {
        flat_search_opts_t opts = {.force_path = p};
        cr_assert_eq(flat_search(&view, queries, nq, k, &opts, ids, dists, &err), SHOAL_OK, "%s",
                     err.msg);
        size_t hits = 0;
        for (size_t q = 0; q < nq; q++) {
            const float *qv = queries + q * dim;
            const int32_t *t = truth + q * gt_k;
            double last = s_true_dist(metric, qv, base + (size_t)t[k - 1] * dim, dim);
            for (size_t j = 0; j < k; j++) {
                size_t row = S_ROW(ids[q * k + j]);
                cr_assert_lt(row, n);
                int listed = 0;
                for (size_t i = 0; i < k && !listed; i++)
                    listed = (size_t)t[i] == row;
                if (!listed) {
                    double d = s_true_dist(metric, qv, base + row * dim, dim);
                    cr_assert(d <= last + 1e-6 * fmax(fabs(last), 1e-12),
                              "%s path %d query %zu: row %zu (d=%.9g) is not among the true "
                              "100 (100th d=%.9g)",
                              sub, p, q, row, d, last);
                }
                /* a hit is a row not already returned for this query */
                int repeated = 0;
                for (size_t i = 0; i < j && !repeated; i++)
                    repeated = S_ROW(ids[q * k + i]) == row;
                hits += !repeated;
            }
        }
        cr_assert_eq(hits, nq * k, "%s path %d: recall@100 below 1 (repeated rows)", sub, p);
    }
    flat_store_destroy(&store);
    free(ids);
    free(dists);
    s_dataset_free(&ds);
}

Test(flat, siftsmall_recall_is_one)
{
    s_check_dataset("siftsmall");
}

Test(flat, glove50_cosine_recall_is_one)
{
    s_check_dataset("glove50");
}

/* ------------------------------------------------------------------------ */
/* Near-duplicates: exact is exact on every path                            */
/* ------------------------------------------------------------------------ */

/*
 * The GEMM form |q|^2 + |x|^2 - 2 q.x rounds at the size of the norms, so it
 * cannot order vectors that are closer together than that (issue 9, bug 6:
 * batches of 32 or more missed the query's own row). The contract checked
 * here: on every path and batch size, a search returns the top k by the
 * distance it reports (distance.h's pair kernels; what s_documented_knn
 * computes by brute force), ties by id, bit for bit.
 */

/* The distance flat_search documents: the pair kernel on the stored row (and,
 * for cosine, on the normalised query). */
static float s_documented_dist(shoal_metric_t metric, const float *q, const float *x, size_t dim)
{
    const dist_kernels_t *kern = dist_kernels();
    if (metric == SHOAL_METRIC_L2)
        return kern->l2sq(q, x, dim);
    if (metric == SHOAL_METRIC_IP)
        return -kern->dot(q, x, dim);
    return 1.0f - kern->dot(q, x, dim);
}

/* Brute force over every row of view: the k best by (documented distance, id),
 * kept by insertion into a sorted list (no heap, no GEMM, no tiling). */
static void s_documented_knn(const flat_view_t *view, const float *queries, size_t nq, size_t k,
                             uint64_t *ids, float *dists)
{
    const size_t dim = view->dim;
    float *q = malloc(dim * sizeof(float));
    cr_assert_not_null(q);
    for (size_t qi = 0; qi < nq; qi++) {
        memcpy(q, queries + qi * dim, dim * sizeof(float));
        if (view->metric == SHOAL_METRIC_COSINE)
            cr_assert_eq(dist_normalize(q, dim), 0);
        uint64_t *oi = ids + qi * k;
        float *od = dists + qi * k;
        size_t count = 0;
        for (size_t r = 0; r < view->n; r++) {
            float d = s_documented_dist(view->metric, q, view->vecs + r * dim, dim);
            uint64_t id = view->ids[r];
            size_t pos = count;
            while (pos > 0 && (d < od[pos - 1] || (d == od[pos - 1] && id < oi[pos - 1])))
                pos--;
            if (pos >= k)
                continue;
            size_t last = count < k ? count : k - 1;
            memmove(oi + pos + 1, oi + pos, (last - pos) * sizeof(uint64_t));
            memmove(od + pos + 1, od + pos, (last - pos) * sizeof(float));
            oi[pos] = id;
            od[pos] = d;
            if (count < k)
                count++;
        }
        for (size_t j = count; j < k; j++) {
            oi[j] = TOPK_ID_NONE;
            od[j] = INFINITY;
        }
    }
    free(q);
}

/* nq queries searched in batches of `batch` with opts; ids / dists are nq x k. */
static void s_search_batches(const flat_view_t *view, const float *queries, size_t nq, size_t k,
                             size_t batch, flat_search_opts_t opts, uint64_t *ids, float *dists)
{
    shoal_err_t err;
    for (size_t q0 = 0; q0 < nq; q0 += batch) {
        size_t bn = nq - q0 < batch ? nq - q0 : batch;
        cr_assert_eq(flat_search(view, queries + q0 * view->dim, bn, k, &opts, ids + q0 * k,
                                 dists + q0 * k, &err),
                     SHOAL_OK, "%s", err.msg);
    }
}

/* Our answer equals the documented brute force, ids and distances bit for bit. */
static void s_check_documented(const uint64_t *ids, const float *dists, const uint64_t *want_ids,
                               const float *want_dists, size_t nq, size_t k, const char *what)
{
    for (size_t q = 0; q < nq; q++)
        for (size_t j = 0; j < k; j++)
            cr_assert(ids[q * k + j] == want_ids[q * k + j] &&
                          dists[q * k + j] == want_dists[q * k + j],
                      "%s: query %zu pos %zu: id %llu d=%.9g, the true top-%zu has id %llu "
                      "d=%.9g",
                      what, q, j, (unsigned long long)ids[q * k + j], (double)dists[q * k + j],
                      k, (unsigned long long)want_ids[q * k + j],
                      (double)want_dists[q * k + j]);
}

/* The k best rows of base for each query in double precision, ties by row
 * (rows are stored in id order in these tests, so that is by id). */
static s_ref_item_t *s_double_knn(const float *base, size_t n, const float *queries, size_t nq,
                                  size_t dim, shoal_metric_t metric, size_t k)
{
    s_ref_item_t *all = malloc(n * sizeof *all), *best = malloc(nq * k * sizeof *best);
    cr_assert(all && best && k <= n);
    for (size_t q = 0; q < nq; q++) {
        for (size_t r = 0; r < n; r++) {
            all[r].dist = s_true_dist(metric, queries + q * dim, base + r * dim, dim);
            all[r].row = r;
        }
        qsort(all, n, sizeof *all, s_cmp_ref);
        memcpy(best + q * k, all, k * sizeof *best);
    }
    free(all);
    return best;
}

/*
 * Our answer (ids, nq x k) against the double-precision brute force (ref,
 * nq x ref_k, rows of base, which are the store's rows): the same rows,
 * except where the two distances tie within S_TIE_REL (float cannot order
 * those).
 */
static void s_check_double(const flat_store_t *store, const float *base, const float *queries,
                           size_t nq, size_t k, const uint64_t *ids, const s_ref_item_t *ref,
                           size_t ref_k, const char *what)
{
    flat_view_t view = flat_store_view(store);
    const size_t dim = view.dim;
    for (size_t q = 0; q < nq; q++) {
        const float *qv = queries + q * dim;
        for (size_t j = 0; j < k; j++) {
            const s_ref_item_t *want = &ref[q * ref_k + j];
            uint64_t id = ids[q * k + j];
            size_t row = flat_store_row(store, id);
            cr_assert_neq(row, FLAT_NO_ROW, "%s: query %zu pos %zu: id %llu not stored", what, q,
                          j, (unsigned long long)id);
            if (row == want->row)
                continue;
            double d = s_true_dist(view.metric, qv, base + row * dim, dim);
            double mag = fmax(s_magnitude(view.metric, qv, base + row * dim, dim, d),
                              s_magnitude(view.metric, qv, base + want->row * dim, dim,
                                          want->dist));
            cr_assert(fabs(d - want->dist) <= S_TIE_REL * mag,
                      "%s: query %zu pos %zu: row %zu (d=%.12g) where the double reference has "
                      "row %zu (d=%.12g)",
                      what, q, j, row, d, want->row, want->dist);
        }
    }
}

/* Batch sizes around the GEMM switch (FLAT_GEMM_MIN_QUERIES). */
static const size_t s_batches[] = {31, 32, 64, 100};

/*
 * The reported data: 87,971 dim-16 rows in +-10 whose neighbouring ids are
 * near-duplicates (squared distance ~1.7e-4 at squared norms ~800); ids
 * 14700..14799 searched as queries, k = 3.
 */
Test(flat, repro_near_duplicates_exact_in_every_batch_size)
{
    char dir[S_SUPPORT_PATH_MAX], base_path[S_SUPPORT_PATH_MAX], ids_path[S_SUPPORT_PATH_MAX];
    s_join(dir, s_datasets(), "../repro/exact_near_duplicates");
    s_join(base_path, dir, "base.fvecs");
    s_join(ids_path, dir, "ids.ivecs");
    struct stat st;
    if (stat(base_path, &st) != 0 || stat(ids_path, &st) != 0)
        cr_skip_test("%s not found (set SHOAL_DATASETS): repro skipped", dir);
    shoal_err_t err;
    size_t n, dim, nid, one;
    float *base = vecfile_load_f32(base_path, &n, &dim, &err);
    cr_assert_not_null(base, "%s", err.msg);
    int32_t *file_ids = vecfile_load_i32(ids_path, &nid, &one, &err);
    cr_assert_not_null(file_ids, "%s", err.msg);
    cr_assert(nid == n && one == 1, "%zu ids of dim %zu for %zu rows", nid, one, n);
    uint64_t *ids_in = malloc(n * sizeof(uint64_t));
    cr_assert_not_null(ids_in);
    for (size_t r = 0; r < n; r++) {
        cr_assert_geq(file_ids[r], 0);
        ids_in[r] = (uint64_t)file_ids[r];
        cr_assert(r == 0 || ids_in[r] > ids_in[r - 1], "ids ascend with rows");
    }
    flat_store_t *store = flat_store_new(dim, SHOAL_METRIC_L2, &err);
    cr_assert_not_null(store, "%s", err.msg);
    cr_assert_eq(flat_store_add(store, ids_in, base, n, &err), SHOAL_OK, "%s", err.msg);
    flat_view_t view = flat_store_view(store);

    /* The ids of 14700..14799 that are stored (14761 is not). */
    enum { IDS = 100, K = 3 };
    float *queries = malloc(IDS * dim * sizeof(float));
    uint64_t own[IDS];
    cr_assert_not_null(queries);
    size_t nq = 0;
    for (uint64_t id = 14700; id < 14700 + IDS; id++) {
        size_t row = flat_store_row(store, id);
        if (row == FLAT_NO_ROW)
            continue;
        own[nq] = id;
        memcpy(queries + nq++ * dim, base + row * dim, dim * sizeof(float));
    }
    cr_assert_geq(nq, 96);
    uint64_t want_ids[IDS * K], ids[IDS * K];
    float want_d[IDS * K], dists[IDS * K];
    s_documented_knn(&view, queries, nq, K, want_ids, want_d);
    s_ref_item_t *ref = s_double_knn(base, n, queries, nq, dim, SHOAL_METRIC_L2, K);
    for (size_t b = 0; b < sizeof s_batches / sizeof s_batches[0]; b++) {
        s_search_batches(&view, queries, nq, K, s_batches[b], (flat_search_opts_t){.threads = 2},
                         ids, dists);
        char what[64];
        snprintf(what, sizeof what, "repro, batches of %zu", s_batches[b]);
        size_t missed = 0;
        for (size_t q = 0; q < nq; q++)
            missed += ids[q * K] != own[q] || dists[q * K] != 0.0f;
        cr_assert_eq(missed, 0, "%s: %zu of %zu queries do not find themselves first at 0", what,
                     missed, nq);
        s_check_documented(ids, dists, want_ids, want_d, nq, K, what);
        s_check_double(store, base, queries, nq, K, ids, ref, K, what);
    }
    free(ref);
    flat_store_destroy(&store);
    free(queries);
    free(ids_in);
    free(file_ids);
    free(base);
}

/*
 * Generated near-duplicates, so the checks run without the repro data:
 * clusters of 5 to 35 rows (one of 400, more than a query keeps candidates
 * for) around centres uniform in +-10, members a few ulps of the components
 * apart. Rows are stored cluster after cluster.
 */
#define S_DUP_DIM 16
#define S_DUP_N   9000
#define S_DUP_BIG 400

static float *s_near_duplicates(void)
{
    float *v = malloc(S_DUP_N * S_DUP_DIM * sizeof(float));
    cr_assert_not_null(v);
    shoal_rng_t rng;
    shoal_rng_seed(&rng, 906);
    float centre[S_DUP_DIM];
    size_t left = 0;
    for (size_t r = 0, c = 0; r < S_DUP_N; r++, left--) {
        if (left == 0) {
            for (size_t d = 0; d < S_DUP_DIM; d++)
                centre[d] = (float)(20.0 * shoal_rng_uniform(&rng) - 10.0);
            left = c == 0 ? S_DUP_BIG : 5 + 5 * (c % 7);
            c++;
        }
        for (size_t d = 0; d < S_DUP_DIM; d++)
            v[r * S_DUP_DIM + d] = centre[d] + (float)(1e-5 * shoal_rng_normal(&rng));
    }
    return v;
}

/* 100 stored rows as queries, 4 of them in the big cluster. */
enum { S_DUP_NQ = 100 };

static float *s_near_duplicate_queries(const float *base)
{
    float *q = malloc(S_DUP_NQ * S_DUP_DIM * sizeof(float));
    cr_assert_not_null(q);
    for (size_t i = 0; i < S_DUP_NQ; i++)
        memcpy(q + i * S_DUP_DIM, base + (i * 89 % S_DUP_N) * S_DUP_DIM,
               S_DUP_DIM * sizeof(float));
    return q;
}

static void s_check_near_duplicates(shoal_metric_t metric)
{
    float *base = s_near_duplicates();
    float *queries = s_near_duplicate_queries(base);
    flat_store_t *store = s_store_of(base, S_DUP_N, S_DUP_DIM, metric);
    flat_view_t view = flat_store_view(store);
    const size_t ks[] = {1, 3, 10};
    enum { KMAX = 10 };
    uint64_t want_ids[S_DUP_NQ * KMAX], ids[S_DUP_NQ * KMAX];
    float want_d[S_DUP_NQ * KMAX], dists[S_DUP_NQ * KMAX];
    s_ref_item_t *ref = s_double_knn(base, S_DUP_N, queries, S_DUP_NQ, S_DUP_DIM, metric, KMAX);
    for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
        size_t k = ks[ki];
        s_documented_knn(&view, queries, S_DUP_NQ, k, want_ids, want_d);
        for (size_t b = 0; b < sizeof s_batches / sizeof s_batches[0]; b++) {
            s_search_batches(&view, queries, S_DUP_NQ, k, s_batches[b],
                             (flat_search_opts_t){.threads = 2, .thread_work = 1}, ids, dists);
            char what[80];
            snprintf(what, sizeof what, "%s k=%zu batches of %zu", shoal_metric_name(metric), k,
                     s_batches[b]);
            if (metric == SHOAL_METRIC_L2)
                for (size_t q = 0; q < S_DUP_NQ; q++)
                    cr_assert(ids[q * k] == S_ID(q * 89 % S_DUP_N) && dists[q * k] == 0.0f,
                              "%s: query %zu is not first at 0 (id %llu d=%.9g)", what, q,
                              (unsigned long long)ids[q * k], (double)dists[q * k]);
            s_check_documented(ids, dists, want_ids, want_d, S_DUP_NQ, k, what);
            s_check_double(store, base, queries, S_DUP_NQ, k, ids, ref, KMAX, what);
        }
    }
    free(ref);
    flat_store_destroy(&store);
    free(queries);
    free(base);
}

Test(flat, near_duplicates_exact_l2)
{
    s_check_near_duplicates(SHOAL_METRIC_L2);
}

Test(flat, near_duplicates_exact_ip)
{
    s_check_near_duplicates(SHOAL_METRIC_IP);
}

Test(flat, near_duplicates_exact_cosine)
{
    s_check_near_duplicates(SHOAL_METRIC_COSINE);
}

/* The kernel path and the GEMM path give the same bytes on the same input,
 * on one thread and on several, whatever the tiles. */
Test(flat, kernel_and_gemm_paths_agree_bit_for_bit)
{
    float *base = s_near_duplicates();
    float *queries = s_near_duplicate_queries(base);
    enum { K = 10 };
    for (shoal_metric_t m = SHOAL_METRIC_L2; m <= SHOAL_METRIC_COSINE; m++) {
        flat_store_t *store = s_store_of(base, S_DUP_N, S_DUP_DIM, m);
        flat_view_t view = flat_store_view(store);
        uint64_t ids1[S_DUP_NQ * K], ids2[S_DUP_NQ * K];
        float d1[S_DUP_NQ * K], d2[S_DUP_NQ * K];
        s_search_batches(&view, queries, S_DUP_NQ, K, S_DUP_NQ,
                         (flat_search_opts_t){.threads = 1, .force_path = 1}, ids1, d1);
        const flat_search_opts_t variants[] = {
            {.threads = 1, .force_path = 2},
            {.threads = 2, .force_path = 2, .thread_work = 1},
            {.threads = 1, .force_path = 2, .mem_budget = 64 << 10},
            {.threads = 2, .force_path = 1},
        };
        for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
            s_search_batches(&view, queries, S_DUP_NQ, K, S_DUP_NQ, variants[v], ids2, d2);
            cr_assert(memcmp(ids1, ids2, sizeof ids1) == 0, "%s variant %zu: ids differ",
                      shoal_metric_name(m), v);
            cr_assert(memcmp(d1, d2, sizeof d1) == 0, "%s variant %zu: distances differ",
                      shoal_metric_name(m), v);
        }
        flat_store_destroy(&store);
    }
    free(queries);
    free(base);
}

/* ------------------------------------------------------------------------ */
/* Store                                                                    */
/* ------------------------------------------------------------------------ */

/* Every stored id maps to its row and back; the count matches. */
static void s_check_store(const flat_store_t *store)
{
    flat_view_t view = flat_store_view(store);
    cr_assert_eq(view.n, flat_store_count(store));
    for (size_t r = 0; r < view.n; r++)
        cr_assert_eq(flat_store_row(store, view.ids[r]), r, "row %zu", r);
}

Test(flat, add_upsert_remove_round_trips)
{
    const size_t dim = 3;
    shoal_err_t err;
    flat_store_t *store = flat_store_new(dim, SHOAL_METRIC_L2, &err);
    cr_assert_not_null(store);
    cr_assert_eq(flat_store_dim(store), dim);
    cr_assert_eq(flat_store_metric(store), SHOAL_METRIC_L2);
    cr_assert_eq(flat_store_count(store), 0);

    /* 1,000 rows: the row arrays and the id map both grow several times. */
    enum { N = 1000 };
    static float vecs[N * 3];
    static uint64_t ids[N];
    for (size_t i = 0; i < N; i++) {
        ids[i] = (uint64_t)i * 1000003u; /* sparse ids */
        for (size_t d = 0; d < dim; d++)
            vecs[i * dim + d] = (float)(i + d);
    }
    for (size_t i = 0; i < N; i += 100)
        cr_assert_eq(flat_store_add(store, ids + i, vecs + i * dim, 100, &err), SHOAL_OK, "%s",
                     err.msg);
    cr_assert_eq(flat_store_count(store), N);
    cr_assert_gt(flat_store_bytes(store), N * dim * sizeof(float));
    s_check_store(store);
    for (size_t i = 0; i < N; i++)
        cr_assert_eq(flat_store_row(store, ids[i]), i);
    cr_assert_eq(flat_store_row(store, 5), FLAT_NO_ROW);

    /* Upsert overwrites in place: same row, new vector and norm. */
    const float moved[3] = {-1, -2, -2};
    cr_assert_eq(flat_store_add(store, &ids[10], moved, 1, &err), SHOAL_OK);
    cr_assert_eq(flat_store_count(store), N);
    flat_view_t view = flat_store_view(store);
    cr_assert_eq(flat_store_row(store, ids[10]), 10);
    cr_assert(memcmp(view.vecs + 10 * dim, moved, sizeof moved) == 0);
    cr_assert_float_eq(view.norms_sq[10], 9.0f, 1e-6);

    /* Remove from the middle: the last row moves into the hole. */
    size_t from, to;
    cr_assert_eq(flat_store_remove(store, ids[10], &from, &to, &err), SHOAL_OK);
    cr_assert_eq(from, N - 1);
    cr_assert_eq(to, 10);
    cr_assert_eq(flat_store_row(store, ids[N - 1]), 10);
    cr_assert_eq(flat_store_row(store, ids[10]), FLAT_NO_ROW);
    view = flat_store_view(store);
    cr_assert(memcmp(view.vecs + 10 * dim, vecs + (N - 1) * dim, dim * sizeof(float)) == 0);
    cr_assert_eq(flat_store_count(store), N - 1);
    s_check_store(store);

    /* Remove the last row: nothing moves. */
    uint64_t last_id = view.ids[N - 2];
    cr_assert_eq(flat_store_remove(store, last_id, &from, &to, &err), SHOAL_OK);
    cr_assert_eq(from, FLAT_NO_ROW);
    cr_assert_eq(to, FLAT_NO_ROW);
    cr_assert_eq(flat_store_remove(store, last_id, NULL, NULL, &err), SHOAL_ENOTFOUND);
    cr_assert(strstr(err.msg, "not stored") != NULL, "%s", err.msg);

    /* Remove most of the rest in a scattered order (exercises the map's
     * backward shift), checking the map after each batch. */
    for (size_t i = 0; i < N; i += 3) {
        if (flat_store_row(store, ids[i]) == FLAT_NO_ROW)
            continue;
        cr_assert_eq(flat_store_remove(store, ids[i], &from, &to, NULL), SHOAL_OK);
        if (from != FLAT_NO_ROW) {
            /* The moved id's row is the reported one. */
            view = flat_store_view(store);
            cr_assert_eq(flat_store_row(store, view.ids[to]), to);
            cr_assert_eq(from, flat_store_count(store));
        }
    }
    s_check_store(store);

    /* Removed ids are never returned; re-adding brings one back. */
    view = flat_store_view(store);
    size_t count = flat_store_count(store);
    uint64_t *found = malloc(count * sizeof(uint64_t));
    cr_assert_not_null(found);
    cr_assert_eq(flat_search(&view, vecs, 1, count, NULL, found, NULL, NULL), SHOAL_OK);
    for (size_t j = 0; j < count; j++) {
        cr_assert_neq(found[j], TOPK_ID_NONE);
        size_t i = (size_t)(found[j] / 1000003u);
        cr_assert(i % 3 != 0 && i != 10 && found[j] != last_id, "removed id %llu returned",
                  (unsigned long long)found[j]);
    }
    free(found);
    cr_assert_eq(flat_store_add(store, &ids[0], vecs, 1, NULL), SHOAL_OK);
    cr_assert_eq(flat_store_row(store, ids[0]), count);
    view = flat_store_view(store);
    uint64_t best;
    cr_assert_eq(flat_search(&view, vecs, 1, 1, NULL, &best, NULL, NULL), SHOAL_OK);
    cr_assert_eq(best, ids[0]);
    s_check_store(store);

    flat_store_destroy(&store);
    cr_assert_null(store);
    flat_store_destroy(&store); /* NULL-safe */
    flat_store_destroy(NULL);
}

Test(flat, duplicate_ids_in_one_batch_last_wins)
{
    const uint64_t ids[4] = {7, 8, 7, 7};
    const float vecs[4 * 2] = {1, 1, 2, 2, 3, 3, 4, 4};
    flat_store_t *store = flat_store_new(2, SHOAL_METRIC_IP, NULL);
    cr_assert_eq(flat_store_add(store, ids, vecs, 4, NULL), SHOAL_OK);
    cr_assert_eq(flat_store_count(store), 2);
    flat_view_t view = flat_store_view(store);
    size_t row = flat_store_row(store, 7);
    cr_assert_eq(view.vecs[row * 2], 4.0f);
    cr_assert_eq(view.vecs[flat_store_row(store, 8) * 2], 2.0f);
    flat_store_destroy(&store);
}

Test(flat, bad_inputs)
{
    shoal_err_t err;
    cr_assert_null(flat_store_new(0, SHOAL_METRIC_L2, &err));
    cr_assert_eq(err.code, SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "dim") != NULL);
    cr_assert_null(flat_store_new(4, (shoal_metric_t)9, &err));
    cr_assert(strstr(err.msg, "metric") != NULL);

    flat_store_t *store = flat_store_new(2, SHOAL_METRIC_COSINE, &err);
    const uint64_t ids[3] = {1, 2, 3};
    float vecs[3 * 2] = {1, 2, 3, 4, 5, 6};

    vecs[3] = NAN;
    cr_assert_eq(flat_store_add(store, ids, vecs, 3, &err), SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "row 1 column 1") != NULL, "%s", err.msg);
    vecs[3] = INFINITY;
    cr_assert_eq(flat_store_add(store, ids, vecs, 3, &err), SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "row 1 column 1") != NULL, "%s", err.msg);
    vecs[3] = 4;
    vecs[4] = vecs[5] = 0;
    cr_assert_eq(flat_store_add(store, ids, vecs, 3, &err), SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "row 2") != NULL && strstr(err.msg, "zero") != NULL, "%s",
              err.msg);
    vecs[4] = 5;
    const uint64_t bad_ids[3] = {1, TOPK_ID_NONE, 3};
    cr_assert_eq(flat_store_add(store, bad_ids, vecs, 3, &err), SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "row 1") != NULL && strstr(err.msg, "reserved") != NULL, "%s",
              err.msg);
    /* A failed add adds nothing. */
    cr_assert_eq(flat_store_count(store), 0);
    cr_assert_eq(flat_store_add(store, ids, NULL, 3, &err), SHOAL_EINVAL);
    cr_assert_eq(flat_store_add(NULL, ids, vecs, 3, &err), SHOAL_EINVAL);
    cr_assert_eq(flat_store_add(store, ids, vecs, 3, &err), SHOAL_OK);
    cr_assert_eq(flat_store_remove(store, 99, NULL, NULL, &err), SHOAL_ENOTFOUND);
    cr_assert(strstr(err.msg, "99") != NULL);

    flat_view_t view = flat_store_view(store);
    uint64_t out[4];
    const float q[2] = {1, 0};
    cr_assert_eq(flat_search(&view, q, 1, 0, NULL, out, NULL, &err), SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "k must be") != NULL, "%s", err.msg);
    cr_assert_eq(flat_search(&view, q, 1, FLAT_K_MAX + 1, NULL, out, NULL, &err), SHOAL_EINVAL);
    const float nanq[2 * 2] = {1, 0, 0, NAN};
    cr_assert_eq(flat_search(&view, nanq, 2, 1, NULL, out, NULL, &err), SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "query 1 column 1") != NULL, "%s", err.msg);
    const float infq[2] = {-INFINITY, 0};
    cr_assert_eq(flat_search(&view, infq, 1, 1, NULL, out, NULL, &err), SHOAL_EINVAL);
    cr_assert_eq(flat_search(&view, q, 1, 1, NULL, NULL, NULL, &err), SHOAL_EINVAL);
    cr_assert_eq(flat_search(NULL, q, 1, 1, NULL, out, NULL, &err), SHOAL_EINVAL);
    flat_search_opts_t opts = {.force_path = 3};
    cr_assert_eq(flat_search(&view, q, 1, 1, &opts, out, NULL, &err), SHOAL_EINVAL);
    flat_view_t bad = view;
    bad.dim = 0;
    cr_assert_eq(flat_search(&bad, q, 1, 1, NULL, out, NULL, &err), SHOAL_EINVAL);
    /* Sizes whose byte counts overflow are refused before anything is read. */
    cr_assert_eq(flat_search(&view, q, SIZE_MAX / 2, 1, NULL, out, NULL, &err), SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "overflow") != NULL, "%s", err.msg);
    flat_store_destroy(&store);

    /* L2: a squared norm past FLT_MAX would overflow the GEMM form. */
    store = flat_store_new(2, SHOAL_METRIC_L2, NULL);
    const float huge[2] = {3e19f, 3e19f};
    cr_assert_eq(flat_store_add(store, ids, huge, 1, &err), SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "squared norm") != NULL, "%s", err.msg);
    /* A zero vector is fine under L2. */
    const float zero[2] = {0, 0};
    cr_assert_eq(flat_store_add(store, ids, zero, 1, &err), SHOAL_OK);
    flat_store_destroy(&store);
}
