/*
 * shoal_bench_exact.c - `shoal-bench exact`: exact search at nq = 1 on a
 * compressed graph's codes (hnsw_exact_search: scan the codes, re-score in
 * float32 only what the error bound cannot rule out) against the float32
 * exact engine (common/flat.h, the CPU engine an f32 collection uses), on the
 * same base, the same queries and one thread each, in one run.
 *
 * A query at nq = 1 is bound by memory: the float32 scan reads 4 dim bytes a
 * row, the sq8 scan dim bytes (f16: 2 dim) plus the few rows it re-scores,
 * which come from the base array here (RocksDB's block cache on a shard).
 * Prints, per storage kind:
 *   exact storage=<s> n=<n> dim=<d> queries=<q> qps=<codes> flat_qps=<f32>
 *         ratio=<codes/f32> rescored_per_query=<r> same_results=<1|0>
 * same_results: every query's ids and distances equal the engine's.
 * Timings are medians of --repeat passes (default 3) over all queries.
 */
#include "bench/shoal_bench.h"

#include "common/flat.h"
#include "common/quant.h"
#include "common/vecfile.h"
#include "shard/hnsw.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *base, *queries;
    shoal_metric_t metric;
    size_t k, nq, repeat, threads;
} s_opts_t;

static void s_usage(FILE *out)
{
    fprintf(out, "usage: shoal-bench exact --base F --queries Q [--metric l2|ip|cosine] [--k K]\n"
                 "                         [--nq N] [--repeat R] [--threads T]\n"
                 "Exact k-NN one query at a time: f16 and sq8 codes with their error bound\n"
                 "against the float32 engine (one thread each). --threads: graph build only.\n");
}

static int s_other(const char *opt, const char *val, void *ctx)
{
    s_opts_t *o = ctx;
    if (!strcmp(opt, "--base"))
        o->base = val;
    else if (!strcmp(opt, "--queries"))
        o->queries = val;
    else if (!strcmp(opt, "--metric"))
        return bench_parse_metric("exact", val, &o->metric);
    else
        return 1;
    return 0;
}

static int s_parse(int argc, char **argv, void *opts)
{
    s_opts_t *o = opts;
    *o = (s_opts_t){.metric = SHOAL_METRIC_L2, .k = 10, .nq = 200, .repeat = 3};
    bench_opt_t table[] = {{"--k", 1, 1024, &o->k, NULL},
                           {"--nq", 1, 100000, &o->nq, NULL},
                           {"--repeat", 1, 100, &o->repeat, NULL},
                           {"--threads", 0, 1024, &o->threads, NULL}};
    int rc = bench_parse_args("exact", argc, argv, table, 4, s_other, o);
    if (rc == 0 && (!o->base || !o->queries)) {
        fprintf(stderr, "shoal-bench exact: --base and --queries are required\n");
        return -1;
    }
    return rc;
}

typedef struct {
    const float *base;
    size_t n, dim;
} s_rows_t;

static int s_row(uint64_t id, float *out, void *ctx)
{
    const s_rows_t *r = ctx;
    if (id >= r->n)
        return SHOAL_ENOTFOUND;
    memcpy(out, r->base + id * r->dim, r->dim * sizeof *out);
    return 0;
}

static int s_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median of v[0..n) (sorted in place). */
static double s_median(double *v, size_t n)
{
    qsort(v, n, sizeof *v, s_cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/*
 * The exact-search benchmark: time the flat f32 scan, then each compressed
 * storage's exact search on the same queries, printing one line per storage.
 * Long because it is one linear script of timed passes sharing its buffers and
 * one cleanup path.
 */
static int s_run(const void *opts, shoal_err_t *err)
{
    const s_opts_t *o = opts;
    size_t n = 0, dim = 0, nq = 0, qdim = 0;
    float *base = vecfile_load_f32(o->base, &n, &dim, err);
    float *queries = base ? vecfile_load_f32(o->queries, &nq, &qdim, err) : NULL;
    if (!base || !queries) {
        free(base);
        return err ? err->code : SHOAL_EIO;
    }
    if (qdim != dim) {
        free(base);
        free(queries);
        return shoal_err_set(err, SHOAL_EDIM, "--queries: dim %zu, --base %zu", qdim, dim);
    }
    if (nq > o->nq)
        nq = o->nq;
    size_t k = o->k;
    uint64_t *ids = malloc(n * sizeof *ids), *want = malloc(nq * k * sizeof *want);
    uint64_t *got = malloc(k * sizeof *got);
    float *wantd = malloc(nq * k * sizeof *wantd), *gotd = malloc(k * sizeof *gotd);
    double *secs = malloc(o->repeat * sizeof *secs);
    flat_store_t *flat = flat_store_new(dim, o->metric, err);
    int rc = 0;
    if (!ids || !want || !got || !wantd || !gotd || !secs || !flat) {
        rc = flat ? shoal_err_set(err, SHOAL_ENOMEM, "out of memory") : err->code;
        goto done;
    }
    for (size_t i = 0; i < n; i++)
        ids[i] = i;
    if ((rc = flat_store_add(flat, ids, base, n, err)) != 0)
        goto done;
    flat_view_t view = flat_store_view(flat);
    flat_search_opts_t fo = {.threads = 1};
    for (size_t r = 0; r < o->repeat; r++) {
        double t0 = timing_now();
        for (size_t q = 0; q < nq && rc == 0; q++)
            rc = flat_search(&view, queries + q * dim, 1, k, &fo, want + q * k, wantd + q * k,
                             err);
        secs[r] = timing_now() - t0;
    }
    if (rc)
        goto done;
    double flat_qps = (double)nq / s_median(secs, o->repeat);
    s_rows_t rows = {.base = base, .n = n, .dim = dim};
    for (quant_kind_t kind = QUANT_F16; kind <= QUANT_SQ8 && rc == 0; kind++) {
        /* M as a shard's default (the block stride the scan walks); a small
         * ef_construction, since only the stored codes matter here. */
        hnsw_params_t hp = {
            .dim = dim, .metric = o->metric, .storage = kind, .ef_construction = 16};
        hnsw_t *ix = hnsw_new(&hp, err);
        if (!ix || (rc = hnsw_insert_batch(ix, ids, base, n, bench_threads(o->threads), err))) {
            rc = ix ? rc : err->code;
            hnsw_destroy(&ix);
            break;
        }
        hnsw_search_opts_t so = {.k = k, .rerank_fn = s_row, .rerank_ctx = &rows};
        size_t rescored = 0, same = 1;
        for (size_t r = 0; r < o->repeat && rc == 0; r++) {
            double t0 = timing_now();
            for (size_t q = 0; q < nq; q++) {
                size_t one = 0;
                int got_n = hnsw_exact_search(ix, queries + q * dim, &so, got, gotd, &one, err);
                if (got_n < 0) {
                    rc = got_n;
                    break;
                }
                if (r == 0) {
                    rescored += one;
                    same &= !memcmp(got, want + q * k, k * sizeof *got) &&
                            !memcmp(gotd, wantd + q * k, k * sizeof *gotd);
                }
            }
            secs[r] = timing_now() - t0;
        }
        if (rc == 0) {
            double qps = (double)nq / s_median(secs, o->repeat);
            printf("exact storage=%s n=%zu dim=%zu queries=%zu qps=%.1f flat_qps=%.1f ratio=%.2f "
                   "rescored_per_query=%.1f same_results=%zu\n",
                   quant_kind_name(kind), n, dim, nq, qps, flat_qps, qps / flat_qps,
                   (double)rescored / (double)nq, same);
            fflush(stdout);
        }
        hnsw_destroy(&ix);
    }
done:
    flat_store_destroy(&flat);
    free(base);
    free(queries);
    free(ids);
    free(want);
    free(got);
    free(wantd);
    free(gotd);
    free(secs);
    return rc;
}

int bench_exact_main(int argc, char **argv)
{
    s_opts_t opts;
    return bench_command_main("exact", argc, argv, &opts, s_parse, s_usage, s_run);
}
