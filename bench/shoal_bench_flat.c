/*
 * shoal_bench_flat.c - `shoal-bench flat`: the CPU exact k-NN engine
 * (common/flat.h) on a vecs file: queries per second, GEMM throughput, recall.
 *
 * The base is added to a flat store with ids = row numbers; the queries are
 * repeated or cut to --nq; one untimed call warms caches, thread stacks and
 * OpenBLAS, then one timed flat_search runs over all nq queries. Recall is
 * against --gt when given (it must then be 1.0 up to exact ties: this is an
 * exact search). With --reps R the timed search runs R times and the median
 * is reported. gflops counts the GEMM part only, 2 * nq * n * dim, so on the
 * kernel path it is the rate the SIMD kernels reach on the same work.
 *
 * Output, one line:
 *   nq=... n=... dim=... k=... metric=... threads=... path=gemm|kernels
 *   seconds=... qps=... gflops=... [recall@K=...]
 *
 * Exit codes: 0 success, 2 usage error, 1 anything that failed while running.
 */
#include "bench/shoal_bench.h"
#include "common/distance.h"
#include "common/error.h"
#include "common/flat.h"
#include "common/groundtruth.h"
#include "common/vecfile.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_THREADS_MAX  1024
#define S_NQ_MAX       100000000
#define S_REPS_MAX     101

typedef struct {
    const char *base;      /* --base: borrowed from argv */
    const char *queries;   /* --queries */
    const char *gt;        /* --gt, or NULL */
    size_t nq;             /* --nq; 0 = as many as the file has */
    size_t k;              /* --k */
    size_t threads;        /* --threads; 0 = every online core */
    shoal_metric_t metric; /* --metric */
    int path;              /* --path: flat_search_opts_t.force_path */
    size_t mem_budget;     /* --mem-mib in bytes; 0 = the default */
    size_t reps;           /* --reps: timed searches, the median is reported */
} flat_opts_t;

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: shoal-bench flat --base F --queries Q [--gt G] [--nq N] [--k K]\n"
            "                        [--threads T] [--metric l2|ip|cosine]\n"
            "                        [--path auto|kernels|gemm] [--mem-mib M] [--reps R]\n"
            "\n"
            "Exact k-NN of the CPU engine: adds F to a flat store (ids = row numbers)\n"
            "and times one search of N queries (Q repeated or cut to N) after a warm-up.\n"
            "\n"
            "  --base F       base vectors (.fvecs, .bvecs, .npy)\n"
            "  --queries Q    query vectors, same dimension\n"
            "  --gt G         ground truth (.ivecs) for recall@K\n"
            "  --nq N         queries per search (default: all of Q)\n"
            "  --k K          neighbours per query (1..%d, default 10)\n"
            "  --threads T    worker threads (default: every online core)\n"
            "  --metric M     l2 (default), ip or cosine\n"
            "  --path P       auto (default: by batch size), kernels or gemm\n"
            "  --mem-mib M    memory budget for tiles and heaps (default %u)\n"
            "  --reps R       timed searches, the median is reported (default 1)\n",
            FLAT_K_MAX, (unsigned)(FLAT_MEM_BUDGET_DEFAULT >> 20));
}

/* The options that are not numbers; bench_other_fn. */
static int s_parse_other(const char *opt, const char *val, void *ctx)
{
    flat_opts_t *o = ctx;
    if (!strcmp(opt, "--base")) {
        o->base = val;
    } else if (!strcmp(opt, "--queries")) {
        o->queries = val;
    } else if (!strcmp(opt, "--gt")) {
        o->gt = val;
    } else if (!strcmp(opt, "--metric")) {
        return bench_parse_metric("flat", val, &o->metric);
    } else if (!strcmp(opt, "--path")) {
        if (!strcmp(val, "auto"))
            o->path = 0;
        else if (!strcmp(val, "kernels"))
            o->path = 1;
        else if (!strcmp(val, "gemm"))
            o->path = 2;
        else {
            fprintf(stderr,
                    "shoal-bench flat: --path: expected auto, kernels or gemm, got \"%s\"\n", val);
            return -1;
        }
    } else {
        return 1;
    }
    return 0;
}

/* Returns 0, 1 for --help, or -1 after printing one line on stderr. */
static int s_parse(int argc, char **argv, void *opts)
{
    flat_opts_t *o = opts;
    memset(o, 0, sizeof *o);
    o->k = 10;
    o->reps = 1;
    o->metric = SHOAL_METRIC_L2;
    size_t mem_mib = 0;
    const bench_opt_t sizes[] = {
        {"--nq", 1, S_NQ_MAX, &o->nq, NULL},
        {"--k", 1, FLAT_K_MAX, &o->k, NULL},
        {"--threads", 0, S_THREADS_MAX, &o->threads, NULL},
        {"--mem-mib", 1, 1u << 20, &mem_mib, NULL},
        {"--reps", 1, S_REPS_MAX, &o->reps, NULL},
    };
    int rc = bench_parse_args("flat", argc, argv, sizes, sizeof sizes / sizeof sizes[0],
                              s_parse_other, o);
    if (rc != 0)
        return rc;
    o->mem_budget = mem_mib << 20;
    const char *missing = !o->base ? "--base" : !o->queries ? "--queries" : NULL;
    if (missing) {
        fprintf(stderr, "shoal-bench flat: %s is required (see shoal-bench flat --help)\n",
                missing);
        return -1;
    }
    return 0;
}

static size_t s_min_size(size_t a, size_t b)
{
    return a < b ? a : b;
}

/*
 * The flat benchmark: load base and queries, add, time the repeated searches
 * and print one line with the rates and recall. Long because it is one linear
 * script (load, add, time, report) sharing its buffers and one cleanup path.
 */
static int s_run(const void *opts, shoal_err_t *err)
{
    const flat_opts_t *o = opts;
    float *base = NULL, *file_queries = NULL, *queries = NULL, *dists = NULL;
    int32_t *truth = NULL;
    uint64_t *ids = NULL, *row_ids = NULL;
    flat_store_t *store = NULL;
    size_t n, dim, nfile, qdim, ntruth = 0, truth_k = 0;
    int rc = SHOAL_OK;

    base = vecfile_load_f32(o->base, &n, &dim, err);
    if (!base) {
        rc = shoal_err_prefix(err, "--base");
        goto fail;
    }
    file_queries = vecfile_load_f32(o->queries, &nfile, &qdim, err);
    if (!file_queries) {
        rc = shoal_err_prefix(err, "--queries");
        goto fail;
    }
    if (qdim != dim) {
        rc = shoal_err_set(err, SHOAL_EDIM, "--queries: dim %zu, expected %zu (as --base)", qdim,
                           dim);
        goto fail;
    }
    if (o->gt) {
        truth = vecfile_load_i32(o->gt, &ntruth, &truth_k, err);
        if (!truth) {
            rc = shoal_err_prefix(err, "--gt");
            goto fail;
        }
        if (ntruth < s_min_size(nfile, o->nq ? o->nq : nfile) || truth_k < o->k) {
            rc = shoal_err_set(err, SHOAL_EINVAL,
                               "--gt: %zu rows of %zu ids, need %zu rows of >= %zu (--k)", ntruth,
                               truth_k, s_min_size(nfile, o->nq ? o->nq : nfile), o->k);
            goto fail;
        }
    }

    /* Queries: the file's, repeated or cut to nq (sizes bounded by the option
     * ranges and the files, so the products fit). */
    size_t nq = o->nq ? o->nq : nfile;
    queries = malloc(nq * dim * sizeof(float));
    ids = malloc(nq * o->k * sizeof(uint64_t));
    dists = malloc(nq * o->k * sizeof(float));
    row_ids = malloc(n * sizeof(uint64_t));
    if (!queries || !ids || !dists || !row_ids) {
        rc = shoal_err_set(err, SHOAL_ENOMEM, "out of memory for %zu queries", nq);
        goto fail;
    }
    for (size_t q = 0; q < nq; q++)
        memcpy(queries + q * dim, file_queries + (q % nfile) * dim, dim * sizeof(float));
    for (size_t i = 0; i < n; i++)
        row_ids[i] = i;

    store = flat_store_new(dim, o->metric, err);
    if (!store) {
        rc = err->code;
        goto fail;
    }
    double t0 = timing_now();
    rc = flat_store_add(store, row_ids, base, n, err);
    if (rc != SHOAL_OK)
        goto fail;
    double add_s = timing_now() - t0;

    flat_view_t view = flat_store_view(store);
    flat_search_opts_t sopts = {
        .threads = o->threads, .mem_budget = o->mem_budget, .force_path = o->path};
    rc = flat_search(&view, queries, nq, o->k, &sopts, ids, dists, err);
    if (rc != SHOAL_OK)
        goto fail;
    double times[S_REPS_MAX];
    for (size_t r = 0; r < o->reps; r++) {
        t0 = timing_now();
        rc = flat_search(&view, queries, nq, o->k, &sopts, ids, dists, err);
        if (rc != SHOAL_OK)
            goto fail;
        times[r] = timing_now() - t0;
    }
    qsort(times, o->reps, sizeof times[0], timing_cmp_double);
    double search_s = times[o->reps / 2];

    int gemm = o->path == 2 || (o->path == 0 && nq >= FLAT_GEMM_MIN_QUERIES);
    double flops = 2.0 * (double)nq * (double)n * (double)dim;
    printf("nq=%zu n=%zu dim=%zu k=%zu metric=%s threads=%zu path=%s blas=%s add_s=%.3f "
           "seconds=%.6f qps=%.1f gflops=%.2f",
           nq, n, dim, o->k, shoal_metric_name(o->metric), o->threads,
           gemm ? "gemm" : "kernels", flat_have_blas() ? "openblas" : "none", add_s, search_s,
           (double)nq / search_s, flops / search_s * 1e-9);
    if (truth) {
        /* Repeated queries have the same answers: measure the distinct ones. */
        size_t nmeasure = nq < nfile ? nq : nfile;
        printf(" recall@%zu=%.4f", o->k, gt_recall(ids, o->k, truth, truth_k, nmeasure, o->k));
    }
    printf("\n");

fail:
    flat_store_destroy(&store);
    free(row_ids);
    free(dists);
    free(ids);
    free(queries);
    free(truth);
    free(file_queries);
    free(base);
    return rc;
}

int bench_flat_main(int argc, char **argv)
{
    flat_opts_t opts;
    return bench_command_main("flat", argc, argv, &opts, s_parse, s_usage, s_run);
}
