/*
 * gpu_check.c - shoal-gpu-check (make gpu-check): the GPU exact k-NN engine
 * against the CPU engine (flat_search), and both timed.
 *
 * Needs only the C compiler, the CUDA libraries and shoal's common core (no
 * ZeroMQ, RocksDB or Criterion), so it runs on a bare GPU host.
 *
 * Part 1, edge cases: odd dimensions, tiny and block-boundary row counts, k
 * above the row count, k = 1024 (the kernel's limit) and 1025 (CPU fallback),
 * a memory budget so small that every search runs many query and row tiles,
 * and add / upsert / remove through the front against a reference store.
 * Part 2, the table: uniform and clustered (datagen) data, L2 / IP / cosine,
 * k in {1, 10, 100, 1000}, nq in {1, 100, 10000}, base sizes up to --max-n,
 * fp32 and fp16 rows. Every GPU output buffer is poisoned (NaN distances,
 * 0xFF.. ids) before the search. Each case is checked on a reference subset of
 * queries (all of them for small bases):
 *   - ids: every GPU id outside the CPU's top k must be a tie, its exact
 *     distance within tolerance of the CPU's k-th ("ties"); anything else is a
 *     miss (fp32: must be 0; fp16: recall >= 0.99);
 *   - distances: position by position within tolerance of the CPU's (fp32),
 *     and each returned distance equal to the exact distance of its id;
 *   - structure, on every query: no NaN, no padding while rows remain, ids in
 *     range, distances non-decreasing, no id twice.
 * Timing: GPU qps (after a warm-up search), CPU qps (flat_search on the
 * reference subset), the GEMM's TFLOP/s and the select kernels' share of
 * device time (knn_cuda profiling), and, when PyTorch with CUDA is there, the
 * same search in torch (gpu/torch_ref.py) and shoal's ratio to it.
 *
 * fp32 answers must equal the CPU engine's bit for bit (ids, order and
 * distances: the "differ" count), since the front re-scores the device's
 * candidates with the CPU's kernels (gpu/knn_exact.h).
 *
 * Part 3 (--headline, --graph N; make gpu-validate runs them): the issue's
 * target shape, 10,000 queries x 1M x 128, k = 10, uniform and clustered:
 * qps, TFLOP/s against cuBLAS SGEMM's own rate on the engine's tile shape
 * measured in the same run, nq = 1 as GB/s of rows read against the device's
 * copy bandwidth, torch (addmm + topk) and Faiss GPU when importable, fp16
 * recall@10; and the k-NN graph of N rows timed, a sample checked against the
 * CPU. Each prints a "RESULT gpu-validate ..." line.
 *
 * The last line: RESULT gpu qps=... tflops=... ratio_vs_torch=... max_id_mismatch=...
 * Exit status 1 when any case fails. Without a GPU: the reason, then
 * "RESULT gpu skipped=no_device", status 0.
 */
#include "common/datagen.h"
#include "common/distance.h"
#include "common/error.h"
#include "common/flat.h"
#include "common/log.h"
#include "common/topk.h"
#include "gpu/gpu.h"
#include "gpu/knn.h"
#ifdef SHOAL_HAVE_CUDA
#include "gpu/knn_cuda.h"
#endif

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NQ_MAX 10000
#define S_THREADS_MAX 64

typedef struct {
    size_t max_n;             /* largest base size */
    size_t dim;               /* dimension of the table's data */
    const char *device;       /* device string for the GPU engines */
    double ref_flop;          /* CPU reference work per case, in flop */
    int quick;                /* sizes up to 100,000 only */
    int no_torch;             /* skip the torch comparison */
    int skip_edge;            /* skip part 1 */
    const char *torch_script; /* path of torch_ref.py */
    uint64_t seed;            /* data seed */
    int headline;             /* part 3's target shape only */
    size_t graph_n;           /* part 3's k-NN graph of this many rows only (0 = not) */
} s_opts_t;

static int s_failed;           /* cases that failed */
static size_t s_max_mismatch;  /* largest unexplained id mismatch count, fp32 */

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t s_max_sz(size_t a, size_t b)
{
    return a > b ? a : b;
}

static size_t s_min_sz(size_t a, size_t b)
{
    return a < b ? a : b;
}

static void *s_xmalloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "gpu-check: out of memory (%zu bytes)\n", bytes);
        exit(2);
    }
    return p;
}

static size_t s_cores(void)
{
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    c = c < 1 ? 1 : c;
    return c > S_THREADS_MAX ? S_THREADS_MAX : (size_t)c;
}

/* ------------------------------------------------------------------------ */
/* Data                                                                     */
/* ------------------------------------------------------------------------ */

typedef struct {
    const datagen_t *gen; /* clustered, or NULL for uniform [0, 1) */
    unsigned stream;      /* datagen stream */
    uint64_t seed;        /* uniform: seed */
    size_t first, n, dim; /* rows [first, first + n) */
    float *out;           /* n x dim */
} s_gen_job_t;

static void *s_gen_run(void *arg)
{
    s_gen_job_t *job = arg;
    if (job->gen) {
        datagen_fill(job->gen, job->stream, job->first, job->n, job->out);
        return NULL;
    }
    shoal_rng_t rng;
    shoal_rng_seed(&rng, job->seed * 1000003u + job->first);
    for (size_t i = 0; i < job->n * job->dim; i++)
        job->out[i] = (float)shoal_rng_uniform(&rng);
    return NULL;
}

/* n x dim rows of uniform [0, 1) (gen NULL) or clustered data, on all cores. */
/* The clustered generator (datagen) for o's dim and seed, or NULL for uniform data. */
static datagen_t *s_gen_new(const s_opts_t *o, int clustered)
{
    if (!clustered)
        return NULL;
    datagen_params_t gp = {.dim = o->dim, .seed = o->seed};
    shoal_err_t err;
    datagen_t *gen = datagen_new(&gp, &err);
    if (!gen) {
        fprintf(stderr, "gpu-check: datagen: %s\n", err.msg);
        exit(2);
    }
    return gen;
}

static void s_generate(const datagen_t *gen, unsigned stream, uint64_t seed, size_t n, size_t dim,
                       float *out)
{
    size_t nt = s_cores();
    if (nt > n)
        nt = n ? n : 1;
    s_gen_job_t jobs[S_THREADS_MAX];
    pthread_t tids[S_THREADS_MAX];
    for (size_t t = 0; t < nt; t++) {
        size_t a = n * t / nt, b = n * (t + 1) / nt;
        jobs[t] = (s_gen_job_t){gen, stream, seed + stream, a, b - a, dim, out + a * dim};
        if (pthread_create(&tids[t], NULL, s_gen_run, &jobs[t]) != 0) {
            s_gen_run(&jobs[t]);
            tids[t] = 0;
        }
    }
    for (size_t t = 0; t < nt; t++)
        if (tids[t])
            pthread_join(tids[t], NULL);
}

/* ------------------------------------------------------------------------ */
/* Comparison                                                               */
/* ------------------------------------------------------------------------ */

typedef struct {
    size_t ties;       /* GPU ids outside the CPU's top k at a tie: accepted */
    size_t misses;     /* GPU ids outside the CPU's top k, not at a tie */
    size_t differ;     /* positions whose (id, distance) bits differ from the CPU's */
    size_t bad_dist;   /* distances off the CPU's (position) or off their id's exact one */
    size_t structure;  /* NaN, padding with rows left, id out of range, order, repeats */
    double recall;     /* fraction of the CPU's ids found */
} s_cmp_t;

static int s_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Row of id: ids are row numbers when map is NULL, else looked up in map. */
static size_t s_row(const flat_store_t *map, const flat_view_t *v, uint64_t id)
{
    if (map)
        return flat_store_row(map, id);
    return id < v->n ? (size_t)id : FLAT_NO_ROW;
}

static float s_exact(const flat_view_t *v, const float *q, size_t row)
{
    const float *x = v->vecs + row * v->dim;
    if (v->metric == SHOAL_METRIC_L2)
        return dist_l2sq(q, x, v->dim);
    if (v->metric == SHOAL_METRIC_IP)
        return -dist_dot(q, x, v->dim);
    return 1.0f - dist_dot(q, x, v->dim);
}

/*
 * Compares GPU results (nq x k) with the CPU's for the first nref queries.
 * Ids are row numbers of the view, or looked up in map. queries are as given (normalised here
 * for cosine). fp16: no position-wise distance check (misses shift positions).
 */
static s_cmp_t s_compare(const flat_store_t *map, const flat_view_t *v, const float *queries, size_t nq, size_t nref,
                         size_t k, const uint64_t *gi, const float *gd, const uint64_t *ri,
                         const float *rd, float xmax, int fp16)
{
    s_cmp_t c = {0};
    const size_t dim = v->dim;
    size_t want = 0, found = 0;
    float *qn = s_xmalloc(dim * sizeof(float));
    uint64_t *sorted = s_xmalloc(k * sizeof(uint64_t));
    const size_t real_k = k < v->n ? k : v->n;
    /* Structure on every query while the work stays bounded. */
    size_t nstruct = nq;
    if (nstruct * k > ((size_t)20 << 20))
        nstruct = s_max_sz(nref, ((size_t)20 << 20) / k);
    for (size_t q = 0; q < nstruct && q < nq; q++) {
        const uint64_t *g = gi + q * k;
        const float *d = gd + q * k;
        for (size_t j = 0; j < k; j++) {
            if (isnan(d[j]))
                c.structure++;
            if (j < real_k) {
                if (s_row(map, v, g[j]) == FLAT_NO_ROW)
                    c.structure++;
            } else if (g[j] != TOPK_ID_NONE || !isinf(d[j])) {
                c.structure++;
            }
            if (j > 0 && d[j] < d[j - 1])
                c.structure++;
        }
        memcpy(sorted, g, real_k * sizeof(uint64_t));
        qsort(sorted, real_k, sizeof(uint64_t), s_cmp_u64);
        for (size_t j = 1; j < real_k; j++)
            if (sorted[j] == sorted[j - 1])
                c.structure++;
    }
    for (size_t q = 0; q < nref; q++) {
        const uint64_t *g = gi + q * k, *r = ri + q * k;
        const float *d = gd + q * k, *e = rd + q * k;
        const float *qv = queries + q * dim;
        if (v->metric == SHOAL_METRIC_COSINE) {
            memcpy(qn, qv, dim * sizeof(float));
            dist_normalize(qn, dim);
            qv = qn;
        }
        float qsq = dist_norm_sq(qv, dim);
        float tol = v->metric == SHOAL_METRIC_COSINE ? 4e-5f : 2e-5f * (qsq + xmax) + 1e-6f;
        memcpy(sorted, r, real_k * sizeof(uint64_t));
        qsort(sorted, real_k, sizeof(uint64_t), s_cmp_u64);
        for (size_t j = 0; j < k; j++)
            c.differ += g[j] != r[j] || memcmp(&d[j], &e[j], sizeof(float)) != 0;
        for (size_t j = 0; j < real_k; j++) {
            size_t row = s_row(map, v, g[j]);
            if (row == FLAT_NO_ROW)
                continue; /* counted above */
            want++;
            float ex = s_exact(v, qv, row);
            if (fabsf(ex - d[j]) > tol)
                c.bad_dist++;
            if (!fp16 && fabsf(d[j] - e[j]) > tol)
                c.bad_dist++;
            if (bsearch(&g[j], sorted, real_k, sizeof(uint64_t), s_cmp_u64)) {
                found++;
            } else if (ex <= e[real_k - 1] + tol) {
                c.ties++;
                found++;
            } else {
                c.misses++;
            }
        }
    }
    c.recall = want ? (double)found / (double)want : 1.0;
    free(qn);
    free(sorted);
    return c;
}

/* ------------------------------------------------------------------------ */
/* One case                                                                 */
/* ------------------------------------------------------------------------ */

typedef struct {
    double gpu_qps;   /* queries per second, GPU engine */
    double tflops;    /* GEMM rate (profiled run) */
    double sel_share; /* select kernels' share of GEMM + select device time */
    s_cmp_t cmp;      /* comparison with the CPU */
    int ok;           /* passed */
} s_result_t;

static void s_poison(uint64_t *ids, float *dists, size_t n)
{
    memset(ids, 0xff, n * sizeof(uint64_t));
    for (size_t i = 0; i < n; i++)
        dists[i] = NAN;
}

/*
 * Searches nq queries on engine e and compares the first nref with the CPU's
 * (ri, rd: nref x k). timing: also measure qps and the profile.
 */
static s_result_t s_run_case(knn_engine_t *e, const flat_store_t *map, const flat_view_t *v,
                             const float *queries, size_t nq, size_t nref, size_t k, int fp16,
                             float xmax, const uint64_t *ri, const float *rd, int timing)
{
    s_result_t res = {0};
    shoal_err_t err;
    shoal_err_clear(&err);
    uint64_t *gi = s_xmalloc(nq * k * sizeof(uint64_t));
    float *gd = s_xmalloc(nq * k * sizeof(float));
    s_poison(gi, gd, nq * k);
    if (knn_engine_search(e, queries, nq, k, gi, gd, &err) < 0) {
        printf("  search failed: %s\n", err.msg);
        res.cmp.structure = 1;
        free(gi);
        free(gd);
        return res;
    }
    res.cmp = s_compare(map, v, queries, nq, nref, k, gi, gd, ri, rd, xmax, fp16);
    res.ok = res.cmp.structure == 0 && res.cmp.bad_dist == 0 &&
             (fp16 ? res.cmp.recall >= 0.99 : res.cmp.misses == 0 && res.cmp.differ == 0);
    if (timing) {
        int reps = 0;
        double t0 = s_now(), t = 0;
        do {
            s_poison(gi, gd, nq * k);
            if (knn_engine_search(e, queries, nq, k, gi, gd, &err) < 0)
                break;
            reps++;
            t = s_now() - t0;
        } while (t < 0.3 && reps < 200);
        res.gpu_qps = reps ? (double)nq * reps / t : 0;
        /* The timed runs must still be right (no stale state between searches). */
        s_cmp_t again = s_compare(map, v, queries, nq, s_min_sz(nref, 10), k, gi, gd, ri, rd, xmax,
                                  fp16);
        if (again.structure || again.bad_dist || (!fp16 && (again.misses || again.differ)))
            res.ok = 0;
        knn_info_t info;
        knn_engine_info(e, &info);
        if (strstr(info.reason, "lost")) {
            printf("  the engine fell back to the CPU: %s\n", info.reason);
            res.ok = 0;
        }
#ifdef SHOAL_HAVE_CUDA
        knn_cuda_t *cu = knn_engine_cuda(e);
        if (cu && k <= KNN_K_MAX_GPU) {
            knn_cuda_stats_t st;
            knn_cuda_set_profiling(cu, 1);
            knn_cuda_stats_reset(cu);
            knn_engine_search(e, queries, nq, k, gi, gd, &err);
            knn_cuda_stats(cu, &st);
            knn_cuda_set_profiling(cu, 0);
            res.tflops = st.gemm_ms > 0 ? st.gemm_flop / (st.gemm_ms * 1e-3) / 1e12 : 0;
            double dev = st.gemm_ms + st.select_ms;
            res.sel_share = dev > 0 ? st.select_ms / dev : 0;
        }
#endif
    }
    free(gi);
    free(gd);
    return res;
}

/* CPU reference: the first nref queries; returns the seconds taken. */
static double s_reference(const flat_view_t *v, const float *queries, size_t nref, size_t k,
                          uint64_t *ri, float *rd)
{
    shoal_err_t err;
    shoal_err_clear(&err);
    double t0 = s_now();
    if (flat_search(v, queries, nref, k, NULL, ri, rd, &err) < 0) {
        fprintf(stderr, "gpu-check: CPU reference failed: %s\n", err.msg);
        exit(2);
    }
    return s_now() - t0;
}

/* Squared norms of n rows and their maximum. */
static float s_norms(const float *vecs, size_t n, size_t dim, float *norms)
{
    float mx = 0;
    for (size_t i = 0; i < n; i++) {
        norms[i] = dist_norm_sq(vecs + i * dim, dim);
        mx = norms[i] > mx ? norms[i] : mx;
    }
    return mx;
}

/*
 * The CPU reference's rows: base itself for L2 and IP; for cosine, the rows
 * as a flat store holds them, since flat_store_add normalises what it is
 * given (as the engine's store will) and normalising rows again does not
 * always give the same bits. *store_p: the store to destroy, or NULL.
 */
static flat_view_t s_ref_view(const float *base, const uint64_t *ids, float *norms, size_t n,
                              size_t dim, shoal_metric_t metric, flat_store_t **store_p,
                              float *xmax)
{
    *store_p = NULL;
    if (metric != SHOAL_METRIC_COSINE) {
        *xmax = s_norms(base, n, dim, norms);
        return (flat_view_t){base, ids, norms, n, dim, metric};
    }
    shoal_err_t err;
    shoal_err_clear(&err);
    flat_store_t *st = flat_store_new(dim, metric, &err);
    if (!st || flat_store_add(st, ids, base, n, &err) < 0) {
        fprintf(stderr, "gpu-check: reference store: %s\n", err.msg);
        exit(2);
    }
    flat_view_t v = flat_store_view(st);
    *xmax = 0;
    for (size_t i = 0; i < v.n; i++)
        *xmax = v.norms_sq[i] > *xmax ? v.norms_sq[i] : *xmax;
    *store_p = st;
    return v;
}

static knn_engine_t *s_engine(const char *device, size_t dim, shoal_metric_t metric, int fp16,
                              size_t budget)
{
    knn_params_t p = {.dim = dim, .metric = metric, .device = device, .fp16 = fp16,
                      .mem_budget = budget};
    shoal_err_t err;
    shoal_err_clear(&err);
    knn_engine_t *e = knn_engine_new(&p, &err);
    if (!e) {
        fprintf(stderr, "gpu-check: engine on %s: %s\n", device, err.msg);
        exit(2);
    }
    knn_info_t info;
    knn_engine_info(e, &info);
    if (!info.on_gpu && strcmp(device, "cpu") != 0) {
        fprintf(stderr, "gpu-check: engine on %s is not on a GPU: %s\n", device, info.reason);
        exit(2);
    }
    return e;
}

static void s_add(knn_engine_t *e, const uint64_t *ids, const float *vecs, size_t n)
{
    shoal_err_t err;
    shoal_err_clear(&err);
    if (knn_engine_add(e, ids, vecs, n, &err) < 0) {
        fprintf(stderr, "gpu-check: add: %s\n", err.msg);
        exit(2);
    }
    knn_info_t info;
    knn_engine_info(e, &info);
    if (!info.on_gpu && info.ndevices == 0 && strstr(info.reason, "lost")) {
        fprintf(stderr, "gpu-check: the GPU engine was lost during add: %s\n", info.reason);
        exit(2);
    }
}

/* ------------------------------------------------------------------------ */
/* Part 1: edge cases                                                       */
/* ------------------------------------------------------------------------ */

static void s_edge_cases(const s_opts_t *o)
{
    static const struct {
        size_t dim, n;
    } shapes[] = {{1, 7}, {3, 500}, {100, 4097}, {129, 9000}, {128, 1}, {64, 8193}};
    static const struct {
        size_t k, nq;
    } searches[] = {{1, 1}, {10, 33}, {1024, 33}, {1025, 5}, {100, 5000}};
    const size_t budgets[] = {0, (size_t)1 << 20};
    const shoal_metric_t metrics[] = {SHOAL_METRIC_L2, SHOAL_METRIC_IP, SHOAL_METRIC_COSINE};
    size_t cases = 0, failed = 0;
    printf("== part 1: edge cases (odd dims, tiny n, k = 1024 / 1025, tiny budget)\n");
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const size_t dim = shapes[si].dim, n = shapes[si].n;
        float *base = s_xmalloc(n * dim * sizeof(float));
        float *qs = s_xmalloc(5000 * dim * sizeof(float));
        float *norms = s_xmalloc(n * sizeof(float));
        uint64_t *ids = s_xmalloc(n * sizeof(uint64_t));
        for (size_t i = 0; i < n; i++)
            ids[i] = i;
        for (int m = 0; m < 3; m++) {
            s_generate(NULL, 0, o->seed + si, n, dim, base);
            s_generate(NULL, 1, o->seed + si, 5000, dim, qs);
            /* Duplicate rows: exact ties across block and tile boundaries. */
            for (size_t i = 0; i + 4096 < n && i < 64; i++)
                memcpy(base + (i + 4096) * dim, base + i * dim, dim * sizeof(float));
            flat_store_t *ref = NULL;
            float xmax = 0;
            flat_view_t v = s_ref_view(base, ids, norms, n, dim, metrics[m], &ref, &xmax);
            for (size_t b = 0; b < 2; b++)
                for (int fp16 = 0; fp16 < 2; fp16++) {
                    knn_engine_t *e = s_engine(o->device, dim, metrics[m], fp16, budgets[b]);
                    s_add(e, ids, base, n);
                    for (size_t qi = 0; qi < sizeof searches / sizeof searches[0]; qi++) {
                        size_t k = searches[qi].k, nq = searches[qi].nq;
                        uint64_t *ri = s_xmalloc(nq * k * sizeof(uint64_t));
                        float *rd = s_xmalloc(nq * k * sizeof(float));
                        s_reference(&v, qs, nq, k, ri, rd);
                        /* fp16 on 1..3 dims has too few bits to rank: only structure. */
                        int f16 = fp16;
                        s_result_t r = s_run_case(e, NULL, &v, qs, nq, nq, k, f16, xmax, ri, rd,
                                                  0);
                        if (fp16 && dim < 8)
                            r.ok = r.cmp.structure == 0 && r.cmp.bad_dist == 0;
                        cases++;
                        if (!r.ok) {
                            failed++;
                            printf("  FAIL %-6s dim %3zu n %5zu budget %7zu %s k %4zu nq %4zu: "
                                   "misses %zu ties %zu bad_dist %zu structure %zu recall "
                                   "%.4f\n",
                                   shoal_metric_name(metrics[m]), dim, n, budgets[b],
                                   fp16 ? "fp16" : "fp32", k, nq, r.cmp.misses, r.cmp.ties,
                                   r.cmp.bad_dist, r.cmp.structure, r.cmp.recall);
                        }
                        if (!fp16 && r.cmp.misses > s_max_mismatch)
                            s_max_mismatch = r.cmp.misses;
                        free(ri);
                        free(rd);
                    }
                    knn_engine_destroy(&e);
                }
            flat_store_destroy(&ref);
        }
        free(base);
        free(qs);
        free(norms);
        free(ids);
    }
    printf("  %zu edge searches, %zu failed\n", cases, failed);
    s_failed += (int)failed;
}

/*
 * Add / upsert / remove through the front, then search, against a reference
 * store given the same operations: the GPU mirror must follow every move.
 * Long because it is one linear script of operations and checks per case,
 * each step depending on the state the previous one left.
 */
static void s_mutations(const s_opts_t *o)
{
    const size_t dim = 32, n = 20000, nq = 100;
    const shoal_metric_t metrics[] = {SHOAL_METRIC_L2, SHOAL_METRIC_IP, SHOAL_METRIC_COSINE};
    const size_t budgets[] = {0, (size_t)1 << 20};
    size_t cases = 0, failed = 0;
    printf("== part 1b: add / upsert / remove through the front\n");
    float *vecs = s_xmalloc(n * dim * sizeof(float));
    float *up = s_xmalloc(3000 * dim * sizeof(float));
    float *more = s_xmalloc(2000 * dim * sizeof(float));
    float *qs = s_xmalloc(nq * dim * sizeof(float));
    uint64_t *ids = s_xmalloc(n * sizeof(uint64_t));
    uint64_t *upid = s_xmalloc(3000 * sizeof(uint64_t));
    uint64_t *rm = s_xmalloc(5100 * sizeof(uint64_t));
    uint64_t *mid = s_xmalloc(2000 * sizeof(uint64_t));
    s_generate(NULL, 0, o->seed + 77, n, dim, vecs);
    s_generate(NULL, 2, o->seed + 77, 3000, dim, up);
    s_generate(NULL, 3, o->seed + 77, 2000, dim, more);
    s_generate(NULL, 1, o->seed + 77, nq, dim, qs);
    for (size_t i = 0; i < n; i++)
        ids[i] = i * 11 + 5;
    for (size_t i = 0; i < 3000; i++)
        upid[i] = ids[(i * 7) % n];
    upid[2999] = upid[0]; /* the same id twice in one batch */
    for (size_t i = 0; i < 5000; i++)
        rm[i] = ids[(i * 4 + 1) % n];
    for (size_t i = 5000; i < 5100; i++)
        rm[i] = 999999999 + i; /* absent */
    for (size_t i = 0; i < 2000; i++)
        mid[i] = i < 500 ? rm[i] : 777777777 + i;

    for (int m = 0; m < 3; m++)
        for (size_t b = 0; b < 2; b++)
            for (int fp16 = 0; fp16 < 2; fp16++) {
                shoal_err_t err;
                shoal_err_clear(&err);
                knn_engine_t *e = s_engine(o->device, dim, metrics[m], fp16, budgets[b]);
                flat_store_t *ref = flat_store_new(dim, metrics[m], &err);
                size_t removed = 0;
                s_add(e, ids, vecs, n);
                flat_store_add(ref, ids, vecs, n, &err);
                s_add(e, upid, up, 3000);
                flat_store_add(ref, upid, up, 3000, &err);
                if (knn_engine_remove(e, rm, 5100, &removed, &err) < 0 || removed != 5000) {
                    printf("  FAIL remove: %zu removed (want 5000) %s\n", removed, err.msg);
                    failed++;
                }
                for (size_t i = 0; i < 5100; i++)
                    flat_store_remove(ref, rm[i], NULL, NULL, NULL);
                s_add(e, mid, more, 2000);
                flat_store_add(ref, mid, more, 2000, &err);
                /* A second round of removals right after the adds. */
                if (knn_engine_remove(e, rm + 1000, 100, &removed, &err) < 0) {
                    printf("  FAIL remove: %s\n", err.msg);
                    failed++;
                }
                for (size_t i = 1000; i < 1100; i++)
                    flat_store_remove(ref, rm[i], NULL, NULL, NULL);
                flat_view_t v = flat_store_view(ref);
                float *norms = s_xmalloc(v.n * sizeof(float));
                float xmax = s_norms(v.vecs, v.n, dim, norms);
                free(norms);
                if (knn_engine_count(e) != v.n) {
                    printf("  FAIL count %zu, reference %zu\n", knn_engine_count(e), v.n);
                    failed++;
                }
                const size_t ks[] = {10, 1024};
                for (int ki = 0; ki < 2; ki++) {
                    size_t k = ks[ki];
                    uint64_t *ri = s_xmalloc(nq * k * sizeof(uint64_t));
                    float *rd = s_xmalloc(nq * k * sizeof(float));
                    s_reference(&v, qs, nq, k, ri, rd);
                    s_result_t r = s_run_case(e, ref, &v, qs, nq, nq, k, fp16, xmax, ri, rd, 0);
                    cases++;
                    if (!r.ok) {
                        failed++;
                        printf("  FAIL %-6s budget %7zu %s k %4zu: misses %zu ties %zu bad_dist "
                               "%zu structure %zu recall %.4f\n",
                               shoal_metric_name(metrics[m]), budgets[b], fp16 ? "fp16" : "fp32",
                               k, r.cmp.misses, r.cmp.ties, r.cmp.bad_dist, r.cmp.structure,
                               r.cmp.recall);
                    }
                    if (!fp16 && r.cmp.misses > s_max_mismatch)
                        s_max_mismatch = r.cmp.misses;
                    free(ri);
                    free(rd);
                }
                flat_store_destroy(&ref);
                knn_engine_destroy(&e);
            }
    printf("  %zu mutation searches, %zu failed\n", cases, failed);
    s_failed += (int)failed;
    free(vecs);
    free(up);
    free(more);
    free(qs);
    free(ids);
    free(upid);
    free(rm);
    free(mid);
}

/* ------------------------------------------------------------------------ */
/* Part 2: the table, and torch                                             */
/* ------------------------------------------------------------------------ */

/* Writes rows x cols float32 as a .npy file (version 1.0). */
static int s_write_npy(const char *path, const float *data, size_t rows, size_t cols)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    char header[128];
    int len = snprintf(header, sizeof header,
                       "{'descr': '<f4', 'fortran_order': False, 'shape': (%zu, %zu), }", rows,
                       cols);
    /* magic (6) + version (2) + header length (2) + header, padded to 64, ending '\n'. */
    int total = 10 + len + 1;
    int pad = (64 - total % 64) % 64;
    unsigned short hl = (unsigned short)(len + pad + 1);
    fwrite("\x93NUMPY\x01\x00", 1, 8, f);
    unsigned char hlb[2] = {(unsigned char)(hl & 0xff), (unsigned char)(hl >> 8)};
    fwrite(hlb, 1, 2, f);
    fwrite(header, 1, (size_t)len, f);
    for (int i = 0; i < pad; i++)
        fputc(' ', f);
    fputc('\n', f);
    size_t w = fwrite(data, sizeof(float), rows * cols, f);
    return fclose(f) == 0 && w == rows * cols ? 0 : -1;
}

static int s_torch_available(void)
{
    return system("python3 -c \"import torch; assert torch.cuda.is_available()\" "
                  ">/dev/null 2>&1") == 0;
}

/*
 * Runs torch_ref.py on the data; returns torch's qps, or 0 with the reason
 * printed. faiss_qps non-NULL: Faiss too (0 when it cannot run).
 */
static double s_torch_qps(const s_opts_t *o, const float *base, size_t n, const float *qs,
                          size_t nq, size_t dim, size_t k, double *faiss_qps)
{
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char bp[512], qp[512], cmd[2048], line[256];
    snprintf(bp, sizeof bp, "%s/shoal-gpu-check-%d-base.npy", tmp, (int)getpid());
    snprintf(qp, sizeof qp, "%s/shoal-gpu-check-%d-queries.npy", tmp, (int)getpid());
    double qps = 0;
    if (s_write_npy(bp, base, n, dim) < 0 || s_write_npy(qp, qs, nq, dim) < 0) {
        printf("  torch: cannot write %s / %s\n", bp, qp);
        goto done;
    }
    snprintf(cmd, sizeof cmd, "python3 %s %s %s %zu l2%s 2>&1", o->torch_script, bp, qp, k,
             faiss_qps ? " --faiss" : "");
    if (faiss_qps)
        *faiss_qps = 0;
    FILE *p = popen(cmd, "r");
    if (!p) {
        printf("  torch: cannot run %s\n", cmd);
        goto done;
    }
    while (fgets(line, sizeof line, p)) {
        double v;
        if (sscanf(line, "qps=%lf", &v) == 1)
            qps = v;
        else if (faiss_qps && sscanf(line, "faiss_qps=%lf", &v) == 1)
            *faiss_qps = v;
        else
            printf("  torch: %s", line);
    }
    pclose(p);
done:
    unlink(bp);
    unlink(qp);
    return qps;
}

typedef struct {
    double qps;          /* headline case: GPU qps */
    double tflops;       /* its GEMM rate */
    double torch_qps;    /* torch on the same case, 0 if not run */
    int have;            /* a headline case ran */
} s_headline_t;

/*
 * Part 2: the GPU against the CPU over every size, distribution, metric,
 * precision, k and nq, one table row per case, and the headline case noted.
 * Long because it is one table of cases: the nested loops walk the case grid
 * and splitting them would scatter the shared buffers and CPU references.
 */
static void s_table(const s_opts_t *o, s_headline_t *hl)
{
    static const size_t all_sizes[] = {1000, 100000, 1000000, 10000000};
    const size_t ks[] = {1, 10, 100, 1000};
    const size_t nqs[] = {1, 100, NQ_MAX};
    const shoal_metric_t metrics[] = {SHOAL_METRIC_L2, SHOAL_METRIC_IP, SHOAL_METRIC_COSINE};
    const size_t dim = o->dim;
    size_t largest = 0;
    for (size_t s = 0; s < 4; s++)
        if (all_sizes[s] <= o->max_n && (!o->quick || all_sizes[s] <= 100000))
            largest = all_sizes[s];
    int torch = !o->no_torch && s_torch_available();
    printf("== part 2: GPU vs CPU (dim %zu; torch %s)\n", dim,
           torch ? "available" : "not available");
    printf("%9s %-9s %-6s %-4s %4s %5s | %10s %10s %7s | %6s %5s | %5s %5s %5s %5s %6s | %s\n",
           "n", "data", "metric", "mode", "k", "nq", "gpu_qps", "cpu_qps", "speedup", "TF/s",
           "sel%", "nref", "ties", "miss", "bad_d", "recall", "status");

    for (size_t s = 0; s < 4; s++) {
        const size_t n = all_sizes[s];
        if (n > largest)
            continue;
        float *base = s_xmalloc(n * dim * sizeof(float));
        float *qs = s_xmalloc(NQ_MAX * dim * sizeof(float));
        float *norms = s_xmalloc(n * sizeof(float));
        uint64_t *ids = s_xmalloc(n * sizeof(uint64_t));
        for (size_t i = 0; i < n; i++)
            ids[i] = i;
        size_t nref_max = (size_t)(o->ref_flop / (2.0 * (double)n * (double)dim));
        nref_max = s_min_sz(s_max_sz(nref_max, 10), NQ_MAX);
        for (int clustered = 0; clustered < 2; clustered++) {
            datagen_t *gen = s_gen_new(o, clustered);
            double tg = s_now();
            s_generate(gen, DATAGEN_STREAM_BASE, o->seed, n, dim, base);
            s_generate(gen, DATAGEN_STREAM_QUERY, o->seed, NQ_MAX, dim, qs);
            tg = s_now() - tg;
            for (int m = 0; m < 3; m++) {
                const shoal_metric_t metric = metrics[m];
                flat_store_t *ref = NULL;
                float xmax = 0;
                flat_view_t v = s_ref_view(base, ids, norms, n, dim, metric, &ref, &xmax);
                /* CPU references and timings, shared by both modes. */
                uint64_t *ri[4][3];
                float *rd[4][3];
                double cpu_qps[4][3];
                size_t nref[3];
                for (int qi = 0; qi < 3; qi++) {
                    nref[qi] = s_min_sz(nqs[qi], nref_max);
                    for (int ki = 0; ki < 4; ki++) {
                        ri[ki][qi] = s_xmalloc(nref[qi] * ks[ki] * sizeof(uint64_t));
                        rd[ki][qi] = s_xmalloc(nref[qi] * ks[ki] * sizeof(float));
                        double t = s_reference(&v, qs, nref[qi], ks[ki], ri[ki][qi], rd[ki][qi]);
                        cpu_qps[ki][qi] = t > 0 ? (double)nref[qi] / t : 0;
                    }
                }
                for (int fp16 = 0; fp16 < 2; fp16++) {
                    knn_engine_t *e = s_engine(o->device, dim, metric, fp16, 0);
                    double ta = s_now();
                    s_add(e, ids, base, n);
                    ta = s_now() - ta;
                    if (n == largest && m == 0 && fp16 == 0)
                        printf("  (n %zu %s: generated in %.1f s, added to the GPU engine in "
                               "%.1f s)\n",
                               n, clustered ? "clustered" : "uniform", tg, ta);
                    for (int ki = 0; ki < 4; ki++)
                        for (int qi = 0; qi < 3; qi++) {
                            size_t k = ks[ki], nq = nqs[qi];
                            s_result_t r = s_run_case(e, NULL, &v, qs, nq, nref[qi], k, fp16,
                                                      xmax, ri[ki][qi], rd[ki][qi], 1);
                            if (!r.ok)
                                s_failed++;
                            if (!fp16 && r.cmp.misses > s_max_mismatch)
                                s_max_mismatch = r.cmp.misses;
                            printf("%9zu %-9s %-6s %-4s %4zu %5zu | %10.1f %10.1f %7.1f | %6.2f "
                                   "%5.1f | %5zu %5zu %5zu %5zu %6.4f | %s\n",
                                   n, clustered ? "clustered" : "uniform",
                                   shoal_metric_name(metric), fp16 ? "fp16" : "fp32", k, nq,
                                   r.gpu_qps, cpu_qps[ki][qi],
                                   cpu_qps[ki][qi] > 0 ? r.gpu_qps / cpu_qps[ki][qi] : 0,
                                   r.tflops, 100.0 * r.sel_share, nref[qi], r.cmp.ties,
                                   r.cmp.misses, r.cmp.bad_dist + r.cmp.structure, r.cmp.recall,
                                   r.ok ? "ok" : "FAIL");
                            fflush(stdout);
                            /* Headline: largest n, uniform, L2, fp32, k 100, nq 10000. */
                            if (n == largest && !clustered && metric == SHOAL_METRIC_L2 &&
                                !fp16 && k == 100 && nq == NQ_MAX) {
                                hl->have = 1;
                                hl->qps = r.gpu_qps;
                                hl->tflops = r.tflops;
                                if (torch)
                                    hl->torch_qps = s_torch_qps(o, base, n, qs, nq, dim, k, NULL);
                                if (hl->torch_qps > 0)
                                    printf("  torch on this case: %.1f qps; shoal / torch = "
                                           "%.2f\n",
                                           hl->torch_qps, hl->qps / hl->torch_qps);
                            }
                        }
                    knn_engine_destroy(&e);
                }
                for (int qi = 0; qi < 3; qi++)
                    for (int ki = 0; ki < 4; ki++) {
                        free(ri[ki][qi]);
                        free(rd[ki][qi]);
                    }
                flat_store_destroy(&ref);
            }
            datagen_destroy(&gen);
        }
        free(base);
        free(qs);
        free(norms);
        free(ids);
    }
}

/* ------------------------------------------------------------------------ */
/* Part 3: the targets (make gpu-validate): the headline shape, the graph    */
/* ------------------------------------------------------------------------ */

#define S_HEAD_NQ 10000      /* the batch */
#define S_HEAD_K 10          /* and k */
#define S_HEAD_REF 200       /* queries checked bit for bit against the CPU */
#define S_GRAPH_TILE 65536   /* rows per knn_engine_graph call */
#define S_PEAK_M 4096        /* SGEMM peak shape: the engine's query tile ... */
#define S_PEAK_N 131072      /* ... and a row tile of a 2 GiB budget */

/* Seconds per knn_engine_search(nq, k) after a warm-up call, or -1. */
static double s_time_search(knn_engine_t *e, const float *qs, size_t nq, size_t k,
                            uint64_t *ids, float *dists)
{
    shoal_err_t err;
    shoal_err_clear(&err);
    if (knn_engine_search(e, qs, nq, k, ids, dists, &err) < 0) {
        printf("  search failed: %s\n", err.msg);
        return -1;
    }
    int reps = 0;
    double t0 = s_now(), t = 0;
    do {
        if (knn_engine_search(e, qs, nq, k, ids, dists, &err) < 0)
            return -1;
        reps++;
        t = s_now() - t0;
    } while (t < 1.0 && reps < 50);
    return t / reps;
}

/* The first device of e, for the peak measurements; -1 on the CPU. */
static int s_first_device(const knn_engine_t *e)
{
    knn_info_t info;
    knn_engine_info(e, &info);
    return info.on_gpu && info.ndevices > 0 ? info.devices[0] : -1;
}

typedef struct {
    double sgemm_tflops; /* cuBLAS SGEMM on the engine's tile shape, same run */
    double copy_gbps;    /* device-to-device copy bandwidth, same run */
} s_peaks_t;

static s_peaks_t s_peaks(int dev, size_t n, size_t dim)
{
    s_peaks_t pk = {0, 0};
#ifdef SHOAL_HAVE_CUDA
    shoal_err_t err;
    shoal_err_clear(&err);
    if (dev >= 0) {
        pk.sgemm_tflops = knn_cuda_sgemm_tflops(dev, S_PEAK_M, s_min_sz(n, S_PEAK_N), dim, &err);
        pk.copy_gbps = knn_cuda_copy_gbps(dev, (size_t)1 << 30, &err);
        if (pk.sgemm_tflops < 0 || pk.copy_gbps < 0)
            printf("  peaks: %s\n", err.msg);
    }
#else
    (void)dev;
    (void)n;
    (void)dim;
#endif
    return pk;
}

static double s_pct(double a, double b)
{
    return a > 0 && b > 0 ? 100.0 * a / b : 0.0;
}

/* fp16 rows on the same data: recall@k of the first nref queries against the CPU's. */
static void s_headline_fp16(const s_opts_t *o, const flat_view_t *v, const float *qs,
                            const uint64_t *ri, const float *rd, size_t nref, float xmax,
                            const char *data)
{
    const size_t k = S_HEAD_K;
    knn_engine_t *e = s_engine(o->device, v->dim, v->metric, 1, 0);
    s_add(e, v->ids, v->vecs, v->n);
    s_result_t r = s_run_case(e, NULL, v, qs, S_HEAD_NQ, nref, k, 1, xmax, ri, rd, 1);
    if (!r.ok)
        s_failed++;
    printf("RESULT gpu-validate fp16 data=%s n=%zu nq=%d k=%zu qps=%.1f recall10=%.4f status=%s\n",
           data, v->n, S_HEAD_NQ, k, r.gpu_qps, r.cmp.recall, r.ok ? "ok" : "FAIL");
    knn_engine_destroy(&e);
}

/*
 * The batch again with the row tiles alternating over two streams
 * (knn_cuda_set_overlap), checked like the first; its qps, or 0 on the CPU.
 */
static double s_overlap_qps(knn_engine_t *e, const flat_view_t *v, const float *qs,
                            const uint64_t *ri, const float *rd, size_t nref, float xmax,
                            uint64_t *gi, float *gd, size_t *differ)
{
    *differ = 0;
#ifdef SHOAL_HAVE_CUDA
    knn_cuda_t *cu = knn_engine_cuda(e);
    if (!cu)
        return 0;
    knn_cuda_set_overlap(cu, 1);
    double sec = s_time_search(e, qs, S_HEAD_NQ, S_HEAD_K, gi, gd);
    s_cmp_t c = s_compare(NULL, v, qs, S_HEAD_NQ, nref, S_HEAD_K, gi, gd, ri, rd, xmax, 0);
    knn_cuda_set_overlap(cu, 0);
    *differ = c.differ + c.structure + (sec <= 0);
    return sec > 0 ? S_HEAD_NQ / sec : 0;
#else
    (void)e, (void)v, (void)qs, (void)ri, (void)rd, (void)nref, (void)xmax, (void)gi, (void)gd;
    return 0;
#endif
}

/* One data set of the headline: fp32 batch and nq = 1 timings, checks, peers. */
static void s_headline_case(const s_opts_t *o, const flat_view_t *v, const float *qs,
                            int clustered, float xmax)
{
    const size_t n = v->n, dim = v->dim, nq = S_HEAD_NQ, k = S_HEAD_K;
    const size_t nref = s_min_sz(S_HEAD_REF, nq);
    const char *data = clustered ? "clustered" : "uniform";
    uint64_t *ri = s_xmalloc(nref * k * sizeof(uint64_t)), *gi = s_xmalloc(nq * k * 8);
    float *rd = s_xmalloc(nref * k * sizeof(float)), *gd = s_xmalloc(nq * k * sizeof(float));
    s_reference(v, qs, nref, k, ri, rd);
    knn_engine_t *e = s_engine(o->device, dim, v->metric, 0, 0);
    s_add(e, v->ids, v->vecs, n);
    double sec = s_time_search(e, qs, nq, k, gi, gd);
    s_cmp_t c = s_compare(NULL, v, qs, nq, nref, k, gi, gd, ri, rd, xmax, 0);
    double sec1 = s_time_search(e, qs, 1, k, gi, gd);
    size_t odiff = 0;
    double oqps = s_overlap_qps(e, v, qs, ri, rd, nref, xmax, gi, gd, &odiff);
    s_peaks_t pk = s_peaks(s_first_device(e), n, dim);
    double tflops = sec > 0 ? 2.0 * nq * n * dim / sec / 1e12 : 0;
    double gbps = sec1 > 0 ? (double)n * dim * sizeof(float) / sec1 / 1e9 : 0;
    double torch = 0, faiss = 0;
    if (!clustered && !o->no_torch && s_torch_available())
        torch = s_torch_qps(o, v->vecs, n, qs, nq, dim, k, &faiss);
    int ok = sec > 0 && sec1 > 0 && c.structure == 0 && c.differ == 0 && odiff == 0;
    s_failed += !ok;
    printf("RESULT gpu-validate headline data=%s n=%zu dim=%zu nq=%zu k=%zu qps=%.1f "
           "tflops=%.2f sgemm_tflops=%.2f pct_sgemm=%.1f torch_qps=%.1f ratio_vs_torch=%.2f "
           "faiss_qps=%.1f nq1_ms=%.3f nq1_gbps=%.1f copy_gbps=%.1f pct_copy=%.1f "
           "checked=%zu differ=%zu cpu_fallbacks=%zu overlap_qps=%.1f overlap_differ=%zu "
           "status=%s\n",
           data, n, dim, nq, k, sec > 0 ? nq / sec : 0, tflops, pk.sgemm_tflops,
           s_pct(tflops, pk.sgemm_tflops), torch, torch > 0 && sec > 0 ? nq / sec / torch : 0,
           faiss, sec1 * 1e3, gbps, pk.copy_gbps, s_pct(gbps, pk.copy_gbps), nref, c.differ,
           knn_engine_fallbacks(e), oqps, odiff, ok ? "ok" : "FAIL");
    fflush(stdout);
    knn_engine_destroy(&e);
    s_headline_fp16(o, v, qs, ri, rd, nref, xmax, data);
    free(ri);
    free(rd);
    free(gi);
    free(gd);
}

/* The target shape: 10,000 queries x min(max_n, 1M) x dim, k = 10, L2. */
static void s_headline(const s_opts_t *o)
{
    const size_t n = s_min_sz(o->max_n, 1000000), dim = o->dim;
    float *base = s_xmalloc(n * dim * sizeof(float)), *norms = s_xmalloc(n * sizeof(float));
    float *qs = s_xmalloc(S_HEAD_NQ * dim * sizeof(float));
    uint64_t *ids = s_xmalloc(n * sizeof(uint64_t));
    for (size_t i = 0; i < n; i++)
        ids[i] = i;
    printf("== part 3: the targets (n %zu, dim %zu, nq %d, k %d, L2)\n", n, dim, S_HEAD_NQ,
           S_HEAD_K);
    for (int clustered = 0; clustered < 2; clustered++) {
        datagen_t *gen = s_gen_new(o, clustered);
        s_generate(gen, DATAGEN_STREAM_BASE, o->seed, n, dim, base);
        s_generate(gen, DATAGEN_STREAM_QUERY, o->seed, S_HEAD_NQ, dim, qs);
        float xmax = s_norms(base, n, dim, norms);
        flat_view_t v = {base, ids, norms, n, dim, SHOAL_METRIC_L2};
        s_headline_case(o, &v, qs, clustered, xmax);
        datagen_destroy(&gen);
    }
    free(base);
    free(norms);
    free(qs);
    free(ids);
}

/* The k-NN graph of n uniform rows, k = 10, in tiles; a sample checked bit for bit. */
static void s_graph(const s_opts_t *o)
{
    const size_t n = o->graph_n, dim = o->dim, k = S_HEAD_K;
    float *base = s_xmalloc(n * dim * sizeof(float)), *norms = s_xmalloc(n * sizeof(float));
    uint64_t *ids = s_xmalloc(n * sizeof(uint64_t)), *gi = s_xmalloc(n * k * sizeof(uint64_t));
    float *gd = s_xmalloc(n * k * sizeof(float));
    for (size_t i = 0; i < n; i++)
        ids[i] = i;
    s_generate(NULL, DATAGEN_STREAM_BASE, o->seed, n, dim, base);
    float xmax = s_norms(base, n, dim, norms);
    knn_engine_t *e = s_engine(o->device, dim, SHOAL_METRIC_L2, 0, 0);
    s_add(e, ids, base, n);
    shoal_err_t err;
    shoal_err_clear(&err);
    int ok = 1;
    double t0 = s_now();
    for (size_t first = 0; first < n && ok; first += S_GRAPH_TILE) {
        size_t count = s_min_sz(S_GRAPH_TILE, n - first);
        if (knn_engine_graph(e, first, count, k, gi + first * k, gd + first * k, &err) < 0) {
            printf("  knn_engine_graph: %s\n", err.msg);
            ok = 0;
        }
    }
    double sec = s_now() - t0;
    /* Rows were added in id order, so row r is id r: check every (n/20)-th row. */
    flat_view_t v = {base, ids, norms, n, dim, SHOAL_METRIC_L2};
    size_t differ = 0, checked = 0;
    for (size_t r = 0; r < n && ok; r += s_max_sz(1, n / 20), checked++) {
        uint64_t ri[S_HEAD_K];
        float rd[S_HEAD_K];
        s_reference(&v, base + r * dim, 1, k, ri, rd);
        s_cmp_t c = s_compare(NULL, &v, base + r * dim, 1, 1, k, gi + r * k, gd + r * k, ri, rd,
                              xmax, 0);
        differ += c.differ + c.structure;
    }
    ok = ok && differ == 0;
    s_failed += !ok;
    printf("RESULT gpu-validate knn_graph n=%zu dim=%zu k=%zu seconds=%.2f checked=%zu "
           "differ=%zu cpu_fallbacks=%zu status=%s\n",
           n, dim, k, sec, checked, differ, knn_engine_fallbacks(e), ok ? "ok" : "FAIL");
    knn_engine_destroy(&e);
    free(base);
    free(norms);
    free(ids);
    free(gi);
    free(gd);
}

/* ------------------------------------------------------------------------ */
/* Main                                                                     */
/* ------------------------------------------------------------------------ */

static void s_usage(void)
{
    fprintf(stderr,
            "usage: shoal-gpu-check [--max-n N] [--quick] [--dim D] [--devices auto|gpu:0,1]\n"
            "                       [--ref-gflop G] [--no-torch] [--skip-edge] [--seed S]\n"
            "                       [--torch-script PATH] [--headline] [--graph N]\n"
            "  --max-n N       largest base size of the table (1000 .. 10000000; default 10M)\n"
            "  --quick         sizes up to 100,000\n"
            "  --ref-gflop G   CPU reference work per case (default 400): fewer reference\n"
            "                  queries at large n\n"
            "  --devices cpu   the same checks on the CPU engine (tests the checker itself)\n"
            "  --headline      only the targets: 10,000 x min(max-n, 1M) x dim, k 10, against\n"
            "                  cuBLAS SGEMM, copy bandwidth, torch and Faiss; fp16 recall\n"
            "  --graph N       only the k-NN graph of N rows, k 10, timed\n");
}

/* Fills o from the command line; 0, or 2 after printing the usage. */
static int s_parse_args(int argc, char **argv, s_opts_t *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--quick"))
            o->quick = 1;
        else if (!strcmp(a, "--no-torch"))
            o->no_torch = 1;
        else if (!strcmp(a, "--skip-edge"))
            o->skip_edge = 1;
        else if (!strcmp(a, "--headline"))
            o->headline = 1;
        else if (!strcmp(a, "--graph") && val)
            o->graph_n = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(a, "--max-n") && val)
            o->max_n = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(a, "--dim") && val)
            o->dim = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(a, "--devices") && val)
            o->device = argv[++i];
        else if (!strcmp(a, "--ref-gflop") && val)
            o->ref_flop = strtod(argv[++i], NULL) * 1e9;
        else if (!strcmp(a, "--seed") && val)
            o->seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(a, "--torch-script") && val)
            o->torch_script = argv[++i];
        else
            return s_usage(), 2;
    }
    if (o->dim < 1 || o->max_n < 1000 || (o->graph_n && o->graph_n < S_HEAD_K))
        return s_usage(), 2;
    return 0;
}

int main(int argc, char **argv)
{
    s_opts_t o = {
        .max_n = 10000000,
        .dim = 128,
        .device = "auto",
        .ref_flop = 400e9,
        .torch_script = "gpu/torch_ref.py",
        .seed = 20261121,
    };
    shoal_log_init_from_env();
    if (s_parse_args(argc, argv, &o) != 0)
        return 2;

    printf("shoal-gpu-check: %s; CPU side: %s\n", gpu_build_info(),
           flat_have_blas() ? "OpenBLAS" : "SIMD kernels (no BLAS)");
    shoal_err_t err;
    shoal_err_clear(&err);
    int count = gpu_device_count(&err);
    /* --devices cpu runs the whole harness on the CPU engine: a check of the
     * checker on machines without a GPU. */
    if (count < 0 && strcmp(o.device, "cpu") != 0) {
        printf("gpu-check: %s\n", err.msg);
        printf("RESULT gpu skipped=no_device\n");
        return 0;
    }
    for (int d = 0; d < count; d++) {
        gpu_device_info_t info;
        if (gpu_device_info(d, &info, &err) == 0)
            printf("GPU %d: %s, %.1f GiB, compute capability %d.%d\n", d, info.name,
                   (double)info.total_bytes / (1u << 30), info.cc_major, info.cc_minor);
    }
    printf("devices for the engine: %s\n", o.device);

    double t0 = s_now();
    if (o.headline || o.graph_n) {
        if (o.headline)
            s_headline(&o);
        if (o.graph_n)
            s_graph(&o);
        printf("gpu-check: %d failed case(s), %.0f s\n", s_failed, s_now() - t0);
        return s_failed ? 1 : 0;
    }
    if (!o.skip_edge) {
        s_edge_cases(&o);
        s_mutations(&o);
    }
    s_headline_t hl = {0};
    s_table(&o, &hl);
    printf("gpu-check: %d failed case(s), %.0f s\n", s_failed, s_now() - t0);

    char ratio[32];
    if (hl.torch_qps > 0)
        snprintf(ratio, sizeof ratio, "%.2f", hl.qps / hl.torch_qps);
    else
        snprintf(ratio, sizeof ratio, "n/a");
    printf("RESULT gpu qps=%.1f tflops=%.2f ratio_vs_torch=%s max_id_mismatch=%zu%s\n",
           hl.have ? hl.qps : 0.0, hl.have ? hl.tflops : 0.0, ratio, s_max_mismatch,
           s_failed ? " failed=1" : "");
    return s_failed ? 1 : 0;
}
