/*
 * knn_exact.c - a device's candidates to the CPU engine's exact answer: the
 * proof that the candidates hold the top k, the re-score with the CPU's pair
 * kernels, and the CPU for queries the proof does not cover. See knn_exact.h.
 */
#include "gpu/knn_exact.h"

#include "common/parfor.h"
#include "common/topk.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define S_THREADS_MAX 64
#define S_WORK_PER_THREAD (1u << 20) /* multiply-adds that pay for starting a thread */

size_t knn_exact_candidates(size_t k, size_t k_max, size_t n)
{
    size_t extra = k / 4 > KNN_EXACT_EXTRA_MIN ? k / 4 : KNN_EXACT_EXTRA_MIN;
    size_t kc = k + extra;
    if (kc > k_max)
        kc = k_max;
    if (kc > n)
        kc = n;
    return kc < k ? k : kc;
}

float knn_exact_slack(size_t dim, float d, float s)
{
    /* The CPU's bound (common/flat.c, flat_search: "How far the scan's
     * distance d can be from the documented one"), with S an upper bound. */
    const float c = (float)(dim + 8) * FLT_EPSILON;
    return c * (s + fabsf(d)) + (float)(dim + 8) * FLT_MIN;
}

int knn_exact_proven(const float *cd, size_t kc, size_t found, size_t k, size_t dim, float qn,
                     float xmax, float *upper)
{
    const float s = qn + xmax;
    if (found < k) {
        *upper = INFINITY; /* fewer rows than k: every one is in */
        return 1;
    }
    /* Sorted: a NaN row (-INFINITY) among the first k is at the front. */
    if (cd[0] == -INFINITY) {
        *upper = INFINITY;
        return found < kc;
    }
    *upper = cd[k - 1] + knn_exact_slack(dim, cd[k - 1], s);
    if (found < kc)
        return 1; /* the device had no more rows to give */
    const float lower = cd[kc - 1] - knn_exact_slack(dim, cd[kc - 1], s);
    /* Strict: an outside row at exactly U with a smaller id would win the tie. */
    return lower > *upper;
}

/* ------------------------------------------------------------------------ */
/* Re-score, threaded by query                                              */
/* ------------------------------------------------------------------------ */

typedef struct {
    const flat_store_t *store; /* rows and the id -> row map */
    const float *queries;      /* nq x dim, as the caller gave them */
    const uint64_t *cand;      /* kc per query */
    const float *cdist;        /* kc per query, or NULL (fp16: no proof) */
    size_t kc, k;              /* candidates and results per query */
    size_t q_begin, q_end;     /* this thread's queries */
    float xmax;                /* largest |x|^2 held */
    uint64_t *ids;             /* k per query */
    float *dists;              /* k per query, or NULL */
    unsigned char *fallback;   /* per query: 1 = the proof failed, CPU it */
    int rc;                    /* SHOAL_ENOMEM or 0 */
} s_job_t;

/* The documented distance, as common/flat.c's s_exact computes it. */
static float s_exact(const dist_kernels_t *kern, shoal_metric_t metric, const float *q,
                     const float *x, size_t dim)
{
    if (metric == SHOAL_METRIC_L2)
        return kern->l2sq(q, x, dim);
    if (metric == SHOAL_METRIC_IP)
        return -kern->dot(q, x, dim);
    return 1.0f - kern->dot(q, x, dim);
}

static double s_norm_sq(const float *v, size_t dim)
{
    double s = 0.0;
    for (size_t i = 0; i < dim; i++)
        s += (double)v[i] * v[i];
    return s;
}

/* One query: prove, then re-score the candidates that may matter into a heap of k. */
static void s_rescore_one(const s_job_t *job, size_t q, const float *qv, topk_item_t *items)
{
    const flat_view_t v = flat_store_view(job->store);
    const uint64_t *cand = job->cand + q * job->kc;
    const float *cd = job->cdist ? job->cdist + q * job->kc : NULL;
    size_t found = 0;
    while (found < job->kc && cand[found] != TOPK_ID_NONE)
        found++;
    float upper = INFINITY, s = 0.0f;
    if (cd) {
        s = v.metric == SHOAL_METRIC_COSINE ? 1.0f : (float)s_norm_sq(qv, v.dim);
        if (!knn_exact_proven(cd, job->kc, found, job->k, v.dim, s, job->xmax, &upper)) {
            job->fallback[q] = 1;
            return;
        }
        s += job->xmax;
    }
    topk_heap_t heap;
    topk_heap_init(&heap, items, job->k);
    for (size_t c = 0; c < found; c++) {
        if (cd && cd[c] - knn_exact_slack(v.dim, cd[c], s) > upper)
            break; /* sorted by scan distance, so lo only grows from here */
        size_t row = flat_store_row(job->store, cand[c]);
        if (row == FLAT_NO_ROW)
            continue; /* cannot happen: writers are serialised with searches */
        topk_heap_push(&heap, s_exact(dist_kernels(), v.metric, qv, v.vecs + row * v.dim, v.dim),
                       cand[c]);
    }
    topk_heap_extract(&heap, job->dists ? job->dists + q * job->k : NULL, job->ids + q * job->k);
}

static void s_rescore_run(void *arg)
{
    s_job_t *job = arg;
    const size_t dim = flat_store_view(job->store).dim;
    const int cosine = flat_store_view(job->store).metric == SHOAL_METRIC_COSINE;
    topk_item_t *items = malloc(job->k * sizeof *items);
    float *qn = malloc(dim * sizeof(float));
    if (!items || !qn) {
        job->rc = SHOAL_ENOMEM;
    } else {
        for (size_t q = job->q_begin; q < job->q_end; q++) {
            const float *qv = job->queries + q * dim;
            if (cosine) {
                memcpy(qn, qv, dim * sizeof(float));
                (void)dist_normalize(qn, dim); /* as flat_search: a zero query stays zero */
                qv = qn;
            }
            s_rescore_one(job, q, qv, items);
        }
    }
    free(items);
    free(qn);
}

static size_t s_threads(size_t want, size_t nq, size_t work)
{
    if (want == 0)
        want = parfor_cores();
    size_t nt = work / S_WORK_PER_THREAD + 1;
    nt = nt < want ? nt : want;
    nt = nt < S_THREADS_MAX ? nt : S_THREADS_MAX;
    return nt < nq ? nt : nq;
}

/* The queries the proof did not cover, through flat_search, into place. */
static int s_fallback(const flat_store_t *store, const float *queries, size_t nq, size_t k,
                      size_t threads, size_t mem_budget, const unsigned char *fallback,
                      uint64_t *ids, float *dists, size_t *count, shoal_err_t *err)
{
    const flat_view_t v = flat_store_view(store);
    size_t m = 0;
    for (size_t q = 0; q < nq; q++)
        m += fallback[q];
    *count = m;
    if (m == 0)
        return SHOAL_OK;
    float *qs = malloc(m * v.dim * sizeof(float));
    uint64_t *fi = malloc(m * k * sizeof(uint64_t));
    float *fd = malloc(m * k * sizeof(float));
    int rc = SHOAL_OK;
    if (!qs || !fi || !fd) {
        rc = shoal_err_set(err, SHOAL_ENOMEM, "knn: out of memory for %zu CPU queries", m);
        goto done;
    }
    for (size_t q = 0, j = 0; q < nq; q++)
        if (fallback[q])
            memcpy(qs + j++ * v.dim, queries + q * v.dim, v.dim * sizeof(float));
    flat_search_opts_t opts = {.threads = threads, .mem_budget = mem_budget};
    rc = flat_search(&v, qs, m, k, &opts, fi, fd, err);
    if (rc < 0)
        goto done;
    for (size_t q = 0, j = 0; q < nq; q++) {
        if (!fallback[q])
            continue;
        memcpy(ids + q * k, fi + j * k, k * sizeof(uint64_t));
        if (dists)
            memcpy(dists + q * k, fd + j * k, k * sizeof(float));
        j++;
    }
done:
    free(qs);
    free(fi);
    free(fd);
    return rc;
}

int knn_exact_rescore(const flat_store_t *store, const float *queries, size_t nq,
                      const uint64_t *cand, const float *cdist, size_t kc, size_t k,
                      float xmax, size_t threads, size_t mem_budget, uint64_t *ids,
                      float *dists, size_t *fallbacks, shoal_err_t *err)
{
    const flat_view_t v = flat_store_view(store);
    size_t nfall = 0;
    if (fallbacks)
        *fallbacks = 0;
    if (nq == 0)
        return SHOAL_OK;
    unsigned char *fallback = calloc(nq, 1);
    if (!fallback)
        return shoal_err_set(err, SHOAL_ENOMEM, "knn: out of memory re-scoring %zu queries", nq);
    const size_t nt = s_threads(threads, nq, nq * kc * v.dim);
    s_job_t jobs[S_THREADS_MAX];
    for (size_t t = 0; t < nt; t++)
        jobs[t] = (s_job_t){.store = store, .queries = queries, .cand = cand, .cdist = cdist,
                            .kc = kc, .k = k, .q_begin = parfor_split(nq, nt, t),
                            .q_end = parfor_split(nq, nt, t + 1), .xmax = xmax, .ids = ids,
                            .dists = dists, .fallback = fallback};
    parfor_each(jobs, sizeof jobs[0], nt, s_rescore_run);
    int rc = SHOAL_OK;
    for (size_t t = 0; t < nt; t++)
        if (jobs[t].rc < 0)
            rc = shoal_err_set(err, SHOAL_ENOMEM, "knn: out of memory re-scoring candidates");
    if (rc == SHOAL_OK)
        rc = s_fallback(store, queries, nq, k, threads, mem_budget, fallback, ids, dists, &nfall,
                        err);
    if (fallbacks)
        *fallbacks = nfall;
    free(fallback);
    return rc;
}
