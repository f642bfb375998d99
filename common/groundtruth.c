/*
 * groundtruth.c - exact k-NN by tiled brute force on parfor.h's threads.
 *
 * Work split: queries are cut into blocks of up to S_QUERY_BLOCK; each thread
 * owns a contiguous range of blocks, so threads share nothing but read-only
 * inputs and write disjoint output rows. The result therefore does not depend
 * on the number of threads: each query's heap sees every base row, and
 * topk.h's total order (distance, then id) makes the kept set unique.
 *
 * Tiling: for one query block, the base is walked in blocks of rows sized to
 * S_TILE_BYTES (about half a typical L2), and every query of the block is run
 * against the base block while it is in cache. Per query and base block one
 * batch kernel call computes the distances into a row buffer, which then feeds
 * the query's heap; a candidate that cannot beat the heap's bound is dropped
 * without a call.
 *
 * Cosine: the queries are normalised into a copy and 1/|x| is precomputed per
 * base row (0 for a zero row), so d = 1 - dot(q/|q|, x) / |x| costs one dot
 * product; a zero query or row gives d = 1, as distance.h specifies.
 */
#include "common/groundtruth.h"
#include "common/parfor.h"
#include "common/topk.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Queries per block (fewer when k is so large that their heaps would not fit
 * in S_HEAP_BYTES). */
#define S_QUERY_BLOCK 32
/* Budget for one base block. */
#define S_TILE_BYTES (256 * 1024)
/* Budget for the heaps of one query block. */
#define S_HEAP_BYTES (1024 * 1024)
/* Threads are capped: more would only add memory. */
#define S_THREADS_MAX 256

/* What every worker reads. */
typedef struct {
    const float *base;          /* n x dim */
    size_t n;                   /* base rows */
    const float *queries;       /* nq x dim (normalised copy for cosine) */
    size_t nq;                  /* queries */
    size_t dim;                 /* values per row */
    shoal_metric_t metric;      /* which distance */
    size_t k;                   /* results per query */
    size_t keep;                /* min(k, n): heap capacity */
    const float *inv_norms;     /* n: 1/|x| per base row (cosine only, else NULL) */
    const dist_kernels_t *kern; /* the batch kernels */
    size_t query_block;         /* queries per block */
    size_t base_block;          /* base rows per block */
    uint64_t *ids;              /* nq x k output */
    float *dists;               /* nq x k output, or NULL */
} knn_job_t;

/* One thread's share and its private buffers. */
typedef struct {
    const knn_job_t *job; /* shared, read-only */
    size_t block_first;   /* first query block */
    size_t block_last;    /* one past the last query block */
    float *row;           /* base_block distances */
    topk_item_t *items;   /* query_block x keep heap storage */
    topk_heap_t *heaps;   /* query_block heaps */
} knn_worker_t;

/* ------------------------------------------------------------------------ */
/* The hot path                                                             */
/* ------------------------------------------------------------------------ */

/* Distances of one query against base rows [b0, b0 + bn) into heap. */
static void s_scan_block(const knn_job_t *job, const float *query, size_t b0, size_t bn, float *row,
                         topk_heap_t *heap)
{
    const float *rows = job->base + b0 * job->dim;
    if (job->metric == SHOAL_METRIC_L2)
        job->kern->l2sq_batch(query, rows, bn, job->dim, job->dim, row);
    else
        job->kern->dot_batch(query, rows, bn, job->dim, job->dim, row);

    if (job->metric == SHOAL_METRIC_IP) {
        for (size_t r = 0; r < bn; r++)
            row[r] = -row[r];
    } else if (job->metric == SHOAL_METRIC_COSINE) {
        const float *inv = job->inv_norms + b0;
        for (size_t r = 0; r < bn; r++)
            row[r] = 1.0f - row[r] * inv[r];
    }

    /* Ids grow along the scan, so a tie with the bound never wins; "<=" keeps
     * this correct without relying on that. */
    float bound = topk_heap_bound(heap);
    for (size_t r = 0; r < bn; r++) {
        if (row[r] <= bound && topk_heap_push(heap, row[r], b0 + r))
            bound = topk_heap_bound(heap);
    }
}

static void s_run_block(knn_worker_t *w, size_t block)
{
    const knn_job_t *job = w->job;
    size_t q0 = block * job->query_block;
    size_t qn = job->nq - q0 < job->query_block ? job->nq - q0 : job->query_block;

    for (size_t qi = 0; qi < qn; qi++)
        topk_heap_init(&w->heaps[qi], w->items + qi * job->keep, job->keep);

    for (size_t b0 = 0; b0 < job->n; b0 += job->base_block) {
        size_t bn = job->n - b0 < job->base_block ? job->n - b0 : job->base_block;
        for (size_t qi = 0; qi < qn; qi++)
            s_scan_block(job, job->queries + (q0 + qi) * job->dim, b0, bn, w->row, &w->heaps[qi]);
    }

    for (size_t qi = 0; qi < qn; qi++) {
        uint64_t *ids = job->ids + (q0 + qi) * job->k;
        float *dists = job->dists ? job->dists + (q0 + qi) * job->k : NULL;
        topk_heap_extract(&w->heaps[qi], dists, ids);
        /* The heap held min(k, n); pad the rest as topk.h does. */
        for (size_t j = job->keep; j < job->k; j++) {
            ids[j] = TOPK_ID_NONE;
            if (dists)
                dists[j] = INFINITY;
        }
    }
}

static void s_worker_main(void *arg)
{
    knn_worker_t *w = arg;
    for (size_t b = w->block_first; b < w->block_last; b++)
        s_run_block(w, b);
}

/* ------------------------------------------------------------------------ */
/* Setting up                                                               */
/* ------------------------------------------------------------------------ */

static int s_mul_overflows(size_t a, size_t b, size_t *out)
{
    if (a && b > SIZE_MAX / a)
        return 1;
    *out = a * b;
    return 0;
}

/* Index of the first non-finite value among count, or count when all are. */
static size_t s_find_nonfinite(const float *v, size_t count)
{
    for (size_t i = 0; i < count; i++)
        if (!isfinite(v[i]))
            return i;
    return count;
}

static int s_check_args(const float *base, size_t n, const float *queries, size_t nq, size_t dim,
                        shoal_metric_t metric, size_t k, const uint64_t *ids, shoal_err_t *err)
{
    if (!base || !queries || !ids)
        return shoal_err_set(err, SHOAL_EINVAL, "gt_knn: base, queries and ids must not be NULL");
    if (n < 1 || nq < 1 || dim < 1 || k < 1)
        return shoal_err_set(err, SHOAL_EINVAL,
                             "gt_knn: n, nq, dim and k must be >= 1, got n=%zu nq=%zu dim=%zu "
                             "k=%zu",
                             n, nq, dim, k);
    if (metric != SHOAL_METRIC_L2 && metric != SHOAL_METRIC_IP && metric != SHOAL_METRIC_COSINE)
        return shoal_err_set(err, SHOAL_EINVAL, "gt_knn: unknown metric %d", (int)metric);
    size_t size;
    if (s_mul_overflows(n, dim, &size) || s_mul_overflows(size, sizeof(float), &size) ||
        s_mul_overflows(nq, dim, &size) || s_mul_overflows(size, sizeof(float), &size) ||
        s_mul_overflows(nq, k, &size) || s_mul_overflows(size, sizeof(uint64_t), &size))
        return shoal_err_set(err, SHOAL_EINVAL,
                             "gt_knn: sizes overflow (n=%zu nq=%zu dim=%zu k=%zu)", n, nq, dim, k);
    /* NaN has no place in topk's order, and inf - inf is NaN. */
    size_t bad = s_find_nonfinite(base, n * dim);
    if (bad < n * dim)
        return shoal_err_set(err, SHOAL_EINVAL, "gt_knn: base row %zu has a non-finite value",
                             bad / dim);
    bad = s_find_nonfinite(queries, nq * dim);
    if (bad < nq * dim)
        return shoal_err_set(err, SHOAL_EINVAL, "gt_knn: query %zu has a non-finite value",
                             bad / dim);
    return SHOAL_OK;
}

/*
 * Normalised copies of the queries and 1/|x| of each base row, in double so a
 * row's norm does not depend on the SIMD summation order.
 */
static int s_prepare_cosine(const float *base, size_t n, const float *queries, size_t nq,
                            size_t dim, float **queries_out, float **inv_out, shoal_err_t *err)
{
    float *copy = malloc(nq * dim * sizeof(float));
    float *inv = malloc(n * sizeof(float));
    if (!copy || !inv) {
        free(copy);
        free(inv);
        return shoal_err_set(err, SHOAL_ENOMEM, "gt_knn: out of memory for cosine norms");
    }
    for (size_t q = 0; q < nq; q++) {
        const float *src = queries + q * dim;
        float *dst = copy + q * dim;
        double sum = 0.0;
        for (size_t d = 0; d < dim; d++)
            sum += (double)src[d] * src[d];
        double scale = sum > 0 ? 1.0 / sqrt(sum) : 0.0;
        for (size_t d = 0; d < dim; d++)
            dst[d] = (float)(src[d] * scale);
    }
    for (size_t i = 0; i < n; i++) {
        const float *x = base + i * dim;
        double sum = 0.0;
        for (size_t d = 0; d < dim; d++)
            sum += (double)x[d] * x[d];
        inv[i] = sum > 0 ? (float)(1.0 / sqrt(sum)) : 0.0f;
    }
    *queries_out = copy;
    *inv_out = inv;
    return SHOAL_OK;
}

/* Cache-sized blocks: queries per block (their heaps within S_HEAP_BYTES), base rows per tile
 * (within S_TILE_BYTES); returns the number of query blocks. */
static size_t s_size_blocks(knn_job_t *job, size_t heap_bytes)
{
    job->query_block = S_HEAP_BYTES / heap_bytes;
    job->query_block = job->query_block < 1               ? 1
                       : job->query_block > S_QUERY_BLOCK ? S_QUERY_BLOCK
                                                          : job->query_block;
    job->base_block = S_TILE_BYTES / (job->dim * sizeof(float));
    job->base_block = job->base_block < 1 ? 1 : job->base_block > job->n ? job->n : job->base_block;
    return (job->nq + job->query_block - 1) / job->query_block;
}

/* The threads to run: asked (0: every core), at most S_THREADS_MAX and one per query block. */
static size_t s_threads(size_t threads, size_t nblocks)
{
    if (threads == 0)
        threads = parfor_cores();
    if (threads > S_THREADS_MAX)
        threads = S_THREADS_MAX;
    if (threads > nblocks)
        threads = nblocks;
    return threads;
}

int gt_knn(const float *base, size_t n, const float *queries, size_t nq, size_t dim,
           shoal_metric_t metric, size_t k, size_t threads, uint64_t *ids, float *dists,
           shoal_err_t *err)
{
    float *cos_queries = NULL;
    float *inv_norms = NULL;
    knn_worker_t *workers = NULL;
    size_t nworkers = 0;
    int rc = s_check_args(base, n, queries, nq, dim, metric, k, ids, err);
    if (rc != SHOAL_OK)
        return rc;

    knn_job_t job = {
        .base = base,
        .n = n,
        .queries = queries,
        .nq = nq,
        .dim = dim,
        .metric = metric,
        .k = k,
        .keep = k < n ? k : n,
        .kern = dist_kernels(),
        .ids = ids,
        .dists = dists,
    };
    if (metric == SHOAL_METRIC_COSINE) {
        rc = s_prepare_cosine(base, n, queries, nq, dim, &cos_queries, &inv_norms, err);
        if (rc != SHOAL_OK)
            goto fail;
        job.queries = cos_queries;
        job.inv_norms = inv_norms;
    }

    /* keep <= n and n * dim * 4 fits, so keep * sizeof(topk_item_t) does too. */
    size_t heap_bytes = job.keep * sizeof(topk_item_t);
    size_t nblocks = s_size_blocks(&job, heap_bytes);
    threads = s_threads(threads, nblocks);

    workers = calloc(threads, sizeof *workers);
    if (!workers)
        goto fail_nomem;
    for (nworkers = 0; nworkers < threads; nworkers++) {
        knn_worker_t *w = &workers[nworkers];
        w->job = &job;
        w->block_first = parfor_split(nblocks, threads, nworkers);
        w->block_last = parfor_split(nblocks, threads, nworkers + 1);
        w->row = malloc(job.base_block * sizeof(float));
        w->items = malloc(job.query_block * heap_bytes);
        w->heaps = malloc(job.query_block * sizeof(topk_heap_t));
        if (!w->row || !w->items || !w->heaps) {
            nworkers++; /* so its buffers are freed below */
            goto fail_nomem;
        }
    }

    parfor_each(workers, sizeof *workers, nworkers, s_worker_main);
    rc = SHOAL_OK;
    goto done;

fail_nomem:
    rc = shoal_err_set(err, SHOAL_ENOMEM, "gt_knn: out of memory for %zu worker buffers", threads);
fail:
done:
    for (size_t t = 0; t < nworkers; t++) {
        free(workers[t].row);
        free(workers[t].items);
        free(workers[t].heaps);
    }
    free(workers);
    free(cos_queries);
    free(inv_norms);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Recall                                                                   */
/* ------------------------------------------------------------------------ */

double gt_recall(const uint64_t *found, size_t found_stride, const int32_t *truth,
                 size_t truth_stride, size_t nq, size_t k)
{
    if (nq == 0 || k == 0 || !found || !truth)
        return 0.0;
    size_t hits = 0;
    for (size_t q = 0; q < nq; q++) {
        const uint64_t *f = found + q * found_stride;
        const int32_t *t = truth + q * truth_stride;
        for (size_t i = 0; i < k; i++) {
            if (f[i] == TOPK_ID_NONE)
                continue;
            /* An id listed twice in found counts once. */
            int seen = 0;
            for (size_t j = 0; j < i && !seen; j++)
                seen = f[j] == f[i];
            if (seen)
                continue;
            for (size_t j = 0; j < k; j++) {
                if (t[j] >= 0 && (uint64_t)t[j] == f[i]) {
                    hits++;
                    break;
                }
            }
        }
    }
    return (double)hits / ((double)nq * (double)k);
}
