/*
 * shoal_bench_hnsw.c - `shoal-bench hnsw`: build shoal's HNSW index over a base
 * file, then measure recall, throughput and latency over a sweep of ef.
 *
 * bench/hnswlib_bench.cpp is the same benchmark for hnswlib, with the same
 * options, loading and output, so bench/run_hnsw.sh can put the two side by
 * side. Keep the two in step: a change to how one measures is made to both.
 *
 * What is measured, and why this way:
 *   - build: hnsw_insert_batch over every row on --threads threads (ids are row
 *     numbers, so the ground truth's ids can be compared directly); build_s is
 *     the wall time of that one call.
 *   - search: one query at a time on one thread, as a shard serves a single
 *     client request; batching would hide per-query latency. Each query is
 *     timed alone (p50/p99 latency); qps is queries / wall time of the pass.
 *   - a warm-up pass at the largest ef runs first and is not counted, so the
 *     first timed ef does not pay for page faults and cold caches.
 *   - --repeat R runs each ef's pass R times and prints the median qps (and
 *     the latencies of the median pass); cpu_qps is queries / the searching
 *     thread's CPU time (CLOCK_THREAD_CPUTIME_ID), which on a machine shared
 *     with other work leaves out the time the thread was not running (it
 *     still pays for caches the others evict).
 *   - recall@k is gt_recall against the given ground truth (its first k ids).
 *   - --storage f16|sq8: the graph holds codes and is walked on them; the
 *     final pool (--rerank, default 2k) is re-scored in float32 from
 *     the base rows, which this program keeps in its own array as a shard
 *     keeps them on disk (their bytes are not in bytes_per_vector, which is
 *     the graph's). sq8's quantizer is trained on the whole base (per
 *     dimension min/max) before the build, as the coordinator will train one
 *     per collection; the training time is not in build_s. --rerank none
 *     returns the code distances, to show what re-ranking buys.
 *   - with --delete-frac F: after the sweep, ids 0 .. F*n-1 are deleted with
 *     hnsw_delete_batch in batches of --delete-batch B (delete_s is the wall
 *     time of all the batches), the graph is checked (hnsw_validate), and
 *     the sweep runs again against exact neighbours among the remaining rows
 *     (gt_knn, not the --gt file). hnswlib has no counterpart (it only marks
 *     deletes), so bench/hnswlib_bench.cpp has no such option.
 *
 * Output (key=value, one line each, for scripts):
 *   n=.. dim=.. queries=.. metric=.. M=.. ef_construction=.. threads=.. k=..
 *   storage=.. rerank=..
 *   build_s=.. bytes_per_vector=.. codes=.. links=.. ids=.. other=..  (per vector)
 *   ef=.. recall@K=.. qps=.. p50_us=.. p99_us=.. cpu_qps=.. runs=..   (one line per ef)
 *   with --delete-frac:
 *   delete_frac=.. delete_batch=.. deleted=.. delete_s=.. deletes_per_s=..
 *   after_delete ef=.. recall@K=.. qps=.. p50_us=.. p99_us=..  (one per ef)
 *
 * Exit codes: 0 success, 2 usage error, 1 anything that failed while running.
 */
#include "bench/shoal_bench.h"
#include "common/distance.h"
#include "common/error.h"
#include "common/groundtruth.h"
#include "common/quant.h"
#include "common/topk.h"
#include "common/vecfile.h"
#include "shard/hnsw.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define S_THREADS_MAX          1024
#define S_K_DEFAULT            10
#define S_K_MAX                4096
#define S_EFS_MAX              64 /* values in one --ef list */
#define S_DELETE_BATCH_DEFAULT 1000
#define S_DELETE_BATCH_MAX     1000000000
#define S_REPEAT_MAX           101

static const size_t s_efs_default[] = {10, 20, 40, 80, 160, 320};

typedef struct {
    const char *base;       /* --base: borrowed from argv */
    const char *queries;    /* --queries: borrowed from argv */
    const char *gt;         /* --gt: borrowed from argv */
    shoal_metric_t metric;  /* --metric */
    size_t M;               /* --M */
    size_t ef_construction; /* --ef-construction */
    size_t efs[S_EFS_MAX];  /* --ef list, in the order given */
    size_t nefs;            /* values in efs */
    size_t threads;         /* --threads for the build (0 = every online core) */
    size_t k;               /* --k */
    uint64_t seed;          /* --seed */
    double delete_frac;     /* --delete-frac: share of ids to delete after the sweep; 0 = none */
    size_t delete_batch;    /* --delete-batch: ids per hnsw_delete_batch call */
    quant_kind_t storage;   /* --storage */
    size_t rerank;          /* --rerank: pool re-scored in float32; 0 = the default, 2k */
    int no_rerank;          /* --rerank none: code distances only */
    size_t repeat;          /* --repeat: passes per ef, the median reported */
    const char *save;       /* --save: write the built index here (hnsw_save) */
    const char *load;       /* --load: read it from here (hnsw_load) instead of building */
} hnsw_bench_opts_t;

/* The float32 rows a compressed graph re-ranks from: the base, by row number. */
typedef struct {
    const float *base; /* n rows of dim floats */
    size_t n;          /* rows */
    size_t dim;        /* floats per row */
} s_rows_t;

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: shoal-bench hnsw --base F --queries Q --gt G [--metric l2|ip|cosine]\n"
            "                        [--M M] [--ef-construction E] [--ef 10,20,...]\n"
            "                        [--threads T] [--k K] [--seed S]\n"
            "                        [--delete-frac F [--delete-batch B]]\n"
            "                        [--storage f32|f16|sq8] [--rerank N|none] [--repeat R]\n"
            "                        [--save FILE | --load FILE]\n"
            "\n"
            "Builds shoal's HNSW index over F on T threads, then for each ef runs the\n"
            "queries one at a time on one thread and prints recall@K, qps and latency.\n"
            "\n"
            "  --base F             base vectors (.fvecs, .bvecs or .npy); ids = row numbers\n"
            "  --queries Q          query vectors, same formats and dimension\n"
            "  --gt G               exact neighbours of each query (.ivecs, >= K per row)\n"
            "  --metric M           l2 (default), ip or cosine\n"
            "  --M M                links per node (default %d, %d..%d)\n"
            "  --ef-construction E  build candidate list (default %d)\n"
            "  --ef LIST            search candidate lists, comma-separated\n"
            "                       (default 10,20,40,80,160,320)\n"
            "  --threads T          build threads (default: every online core)\n"
            "  --k K                neighbours per query (default %d)\n"
            "  --seed S             level draws (default 0)\n"
            "  --delete-frac F      then delete ids 0 .. F*n-1 (0 <= F < 1), time it, and\n"
            "                       sweep again against exact search over the rest\n"
            "  --delete-batch B     ids per hnsw_delete_batch call (default %d)\n"
            "  --storage S          how the graph stores vectors: f32 (default), f16, sq8\n"
            "  --rerank N|none      f16/sq8: candidates re-scored in float32 from the base\n"
            "                       (default %d k, at most max(k, ef)); none: code distances\n"
            "  --repeat R           passes per ef; the median is printed (default 1)\n"
            "  --save FILE          write the built index to FILE\n"
            "  --load FILE          load the index from FILE (saved from the same --base)\n"
            "                       instead of building it; build_s is then the load time\n",
            HNSW_M_DEFAULT, HNSW_M_MIN, HNSW_M_MAX, HNSW_EF_CONSTRUCTION_DEFAULT, S_K_DEFAULT,
            S_DELETE_BATCH_DEFAULT, HNSW_RERANK_FACTOR);
}

/* ------------------------------------------------------------------------ */
/* Options                                                                  */
/* ------------------------------------------------------------------------ */

/* "10,20,40" into o->efs. Prints why and returns -1 on a bad list. */
static int s_parse_efs(const char *opt, const char *text, hnsw_bench_opts_t *o)
{
    o->nefs = 0;
    const char *p = text;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char item[32];
        if (len == 0 || len >= sizeof item) {
            fprintf(stderr,
                    "shoal-bench hnsw: %s: expected numbers separated by commas, got \"%s\"\n", opt,
                    text);
            return -1;
        }
        if (o->nefs == S_EFS_MAX) {
            fprintf(stderr, "shoal-bench hnsw: %s: at most %d values\n", opt, S_EFS_MAX);
            return -1;
        }
        memcpy(item, p, len);
        item[len] = '\0';
        if (bench_parse_size(opt, item, HNSW_EF_MIN, HNSW_EF_MAX, &o->efs[o->nefs]) != 0)
            return -1;
        o->nefs++;
        if (!comma)
            return 0;
        p = comma + 1;
    }
}

/* A fraction in [0, 1) for opt. Prints why and returns -1 when it is not one. */
static int s_parse_frac(const char *opt, const char *text, double *out)
{
    char *end;
    double v = strtod(text, &end);
    if (end == text || *end != '\0' || !(v >= 0.0 && v < 1.0)) {
        fprintf(stderr, "shoal-bench hnsw: %s: expected a number in [0, 1), got \"%s\"\n", opt,
                text);
        return -1;
    }
    *out = v;
    return 0;
}

/* The options that are not numbers; bench_other_fn. ctx: the hnsw_bench_opts_t. */
static int s_parse_other(const char *opt, const char *val, void *ctx)
{
    hnsw_bench_opts_t *o = ctx;
    if (!strcmp(opt, "--ef"))
        return s_parse_efs(opt, val, o);
    if (!strcmp(opt, "--delete-frac"))
        return s_parse_frac(opt, val, &o->delete_frac);
    if (!strcmp(opt, "--seed"))
        return bench_parse_u64(opt, val, &o->seed);
    if (!strcmp(opt, "--metric"))
        return bench_parse_metric("hnsw", val, &o->metric);
    if (!strcmp(opt, "--storage")) {
        shoal_err_t err;
        if (quant_kind_parse(val, &o->storage, &err) != 0) {
            fprintf(stderr, "shoal-bench hnsw: --storage: %s\n", err.msg);
            return -1;
        }
        return 0;
    }
    if (!strcmp(opt, "--rerank")) {
        if (!strcmp(val, "none")) {
            o->no_rerank = 1;
            return 0;
        }
        o->no_rerank = 0;
        return bench_parse_size(opt, val, HNSW_RERANK_MIN, HNSW_RERANK_MAX, &o->rerank);
    }
    const char **file = !strcmp(opt, "--base")      ? &o->base
                        : !strcmp(opt, "--queries") ? &o->queries
                        : !strcmp(opt, "--gt")      ? &o->gt
                        : !strcmp(opt, "--save")    ? &o->save
                        : !strcmp(opt, "--load")    ? &o->load
                                                    : NULL;
    if (!file)
        return 1;
    if (!*val) {
        fprintf(stderr, "shoal-bench hnsw: %s: expected a file name\n", opt);
        return -1;
    }
    *file = val;
    return 0;
}

/* Returns 0, 1 for --help, or -1 after printing one line on stderr. */
static int s_parse(int argc, char **argv, void *opts)
{
    hnsw_bench_opts_t *o = opts;
    memset(o, 0, sizeof *o);
    o->metric = SHOAL_METRIC_L2;
    o->M = HNSW_M_DEFAULT;
    o->ef_construction = HNSW_EF_CONSTRUCTION_DEFAULT;
    o->k = S_K_DEFAULT;
    o->delete_batch = S_DELETE_BATCH_DEFAULT;
    o->repeat = 1;
    o->nefs = sizeof s_efs_default / sizeof s_efs_default[0];
    memcpy(o->efs, s_efs_default, sizeof s_efs_default);

    const bench_opt_t sizes[] = {
        {"--M", HNSW_M_MIN, HNSW_M_MAX, &o->M, NULL},
        {"--ef-construction", HNSW_EF_CONSTRUCTION_MIN, HNSW_EF_CONSTRUCTION_MAX,
         &o->ef_construction, NULL},
        {"--threads", 0, S_THREADS_MAX, &o->threads, NULL},
        {"--k", 1, S_K_MAX, &o->k, NULL},
        {"--delete-batch", 1, S_DELETE_BATCH_MAX, &o->delete_batch, NULL},
        {"--repeat", 1, S_REPEAT_MAX, &o->repeat, NULL},
    };
    int rc = bench_parse_args("hnsw", argc, argv, sizes, sizeof sizes / sizeof sizes[0],
                              s_parse_other, o);
    if (rc != 0)
        return rc;

    const char *missing = !o->base ? "--base" : !o->queries ? "--queries" : !o->gt ? "--gt" : NULL;
    if (missing) {
        fprintf(stderr, "shoal-bench hnsw: %s is required (see shoal-bench hnsw --help)\n",
                missing);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Measuring                                                                */
/* ------------------------------------------------------------------------ */

/*
 * Every query once, in order, one at a time, at ef: found ids into
 * found[q*k ..), each query's latency in seconds into lat (may be NULL), the
 * pass's wall time into *wall_s.
 */
/* rerank_fn for compressed graphs: row id of the base. */
static int s_row(uint64_t id, float *out, void *ctx)
{
    const s_rows_t *rows = ctx;
    if (id >= rows->n)
        return SHOAL_ENOTFOUND;
    memcpy(out, rows->base + id * rows->dim, rows->dim * sizeof(float));
    return 0;
}

/* The calling thread's CPU time in seconds. */
static double s_thread_cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int s_search_pass(const hnsw_t *index, const hnsw_bench_opts_t *o, const s_rows_t *rows,
                         const float *queries, size_t nq, size_t dim, size_t ef, uint64_t *found,
                         float *dists, double *lat, double *wall_s, double *cpu_s,
                         shoal_err_t *err)
{
    size_t k = o->k;
    hnsw_search_opts_t so = {.k = k, .ef = ef, .rerank = o->rerank};
    if (rows && !o->no_rerank) {
        so.rerank_fn = s_row;
        so.rerank_ctx = (void *)rows;
    }
    double start = timing_now(), cpu0 = s_thread_cpu();
    for (size_t q = 0; q < nq; q++) {
        double t0 = timing_now();
        int got = hnsw_search_with(index, queries + q * dim, &so, found + q * k, dists + q * k, err);
        double t1 = timing_now();
        if (got < 0)
            return shoal_err_prefix(err, "query %zu at ef %zu", q, ef);
        if (lat)
            lat[q] = t1 - t0;
    }
    *wall_s = timing_now() - start;
    *cpu_s = s_thread_cpu() - cpu0;
    return SHOAL_OK;
}

/* Buffers one sweep uses. */
typedef struct {
    uint64_t *found; /* nq * k ids */
    float *dists;    /* nq * k distances */
    double *lat;     /* nq latencies */
    double *lat_all; /* repeat * nq latencies: each pass's, sorted */
} s_sweep_bufs_t;

/* Index of the median of v[0..n) (the lower one for even n), v untouched. */
static size_t s_median_at(const double *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        size_t below = 0, same = 0;
        for (size_t j = 0; j < n; j++) {
            below += v[j] < v[i];
            same += v[j] == v[i];
        }
        if (below <= (n - 1) / 2 && (n - 1) / 2 < below + same)
            return i;
    }
    return 0;
}

/* Every ef of o in order: one line per ef, starting with prefix. */
static int s_sweep(const hnsw_t *index, const hnsw_bench_opts_t *o, const s_rows_t *rows,
                   const float *queries, size_t nq, size_t dim, const int32_t *gt, size_t gtdim,
                   const char *prefix, s_sweep_bufs_t *b, shoal_err_t *err)
{
    for (size_t e = 0; e < o->nefs; e++) {
        double qps[S_REPEAT_MAX], cpu_qps[S_REPEAT_MAX];
        for (size_t r = 0; r < o->repeat; r++) {
            double wall_s = 0, cpu_s = 0;
            int rc = s_search_pass(index, o, rows, queries, nq, dim, o->efs[e], b->found,
                                   b->dists, b->lat, &wall_s, &cpu_s, err);
            if (rc != SHOAL_OK)
                return rc;
            qps[r] = (double)nq / wall_s;
            cpu_qps[r] = cpu_s > 0 ? (double)nq / cpu_s : 0.0;
            qsort(b->lat, nq, sizeof *b->lat, timing_cmp_double);
            memcpy(b->lat_all + r * nq, b->lat, nq * sizeof *b->lat);
        }
        /* Every pass gives the same answers: recall is the last one's. */
        double recall = gt_recall(b->found, o->k, gt, gtdim, nq, o->k);
        size_t med = s_median_at(qps, o->repeat);
        const double *lat = b->lat_all + med * nq;
        printf("%sef=%zu recall@%zu=%.4f qps=%.1f p50_us=%.1f p99_us=%.1f cpu_qps=%.1f runs=%zu\n",
               prefix, o->efs[e], o->k, recall, qps[med], timing_percentile(lat, nq, 0.50) * 1e6,
               timing_percentile(lat, nq, 0.99) * 1e6, cpu_qps[s_median_at(cpu_qps, o->repeat)],
               o->repeat);
        fflush(stdout);
    }
    return SHOAL_OK;
}

/*
 * --delete-frac: deletes ids 0 .. F*n-1 (ids[] holds 0..n-1) in batches,
 * checks the graph, and sweeps again against exact search over base rows
 * F*n .. n-1 (whose ids are their row numbers).
 */
static int s_delete_and_sweep(hnsw_t *index, const hnsw_bench_opts_t *o, const float *base,
                              const uint64_t *ids, size_t n, const float *queries, size_t nq,
                              size_t dim, size_t threads, s_sweep_bufs_t *b, shoal_err_t *err)
{
    size_t nd = (size_t)(o->delete_frac * (double)n);
    double t0 = timing_now();
    for (size_t at = 0; at < nd; at += o->delete_batch) {
        size_t len = nd - at < o->delete_batch ? nd - at : o->delete_batch;
        size_t deleted = 0;
        int rc = hnsw_delete_batch(index, ids + at, len, &deleted, err);
        if (rc != SHOAL_OK)
            return shoal_err_prefix(err, "deleting ids %zu..%zu", at, at + len - 1);
        if (deleted != len)
            return shoal_err_set(err, SHOAL_EINTERNAL,
                                 "deleting ids %zu..%zu: %zu deleted, expected %zu", at,
                                 at + len - 1, deleted, len);
    }
    double delete_s = timing_now() - t0;
    printf("delete_frac=%.3f delete_batch=%zu deleted=%zu delete_s=%.3f deletes_per_s=%.1f\n",
           o->delete_frac, o->delete_batch, nd, delete_s,
           delete_s > 0 ? (double)nd / delete_s : 0.0);
    fflush(stdout);
    int rc = hnsw_validate(index, err);
    if (rc != SHOAL_OK)
        return shoal_err_prefix(err, "after deleting %zu ids", nd);
    if (nd == n)
        return SHOAL_OK;

    uint64_t *exact = malloc(nq * o->k * sizeof *exact);
    int32_t *gt = malloc(nq * o->k * sizeof *gt);
    if (!exact || !gt) {
        rc = shoal_err_set(err, SHOAL_ENOMEM, "out of memory for the exact neighbours");
        goto done;
    }
    rc = gt_knn(base + nd * dim, n - nd, queries, nq, dim, o->metric, o->k, threads, exact, NULL,
                err);
    if (rc != SHOAL_OK) {
        shoal_err_prefix(err, "exact neighbours among the remaining %zu", n - nd);
        goto done;
    }
    for (size_t i = 0; i < nq * o->k; i++) /* rows from nd on: row r has id nd + r */
        gt[i] = exact[i] == TOPK_ID_NONE ? -1 : (int32_t)(exact[i] + nd);
    s_rows_t rows = {.base = base, .n = n, .dim = dim};
    rc = s_sweep(index, o, o->storage == QUANT_F32 ? NULL : &rows, queries, nq, dim, gt, o->k,
                 "after_delete ", b, err);
done:
    free(exact);
    free(gt);
    return rc;
}

/*
 * sq8's quantizer from the base rows (unit rows for cosine, as the index
 * stores them). Trained here rather than by the index's first batch so that
 * the program shows the shape the shard will have: a quantizer given.
 */
static int s_train(const hnsw_bench_opts_t *o, const float *base, size_t n, size_t dim,
                   quant_sq8_t **sq8, shoal_err_t *err)
{
    float *unit = NULL;
    if (o->metric == SHOAL_METRIC_COSINE) {
        unit = malloc(n * dim * sizeof(float));
        if (!unit)
            return shoal_err_set(err, SHOAL_ENOMEM, "out of memory training sq8");
        memcpy(unit, base, n * dim * sizeof(float));
        for (size_t i = 0; i < n; i++)
            dist_normalize(unit + i * dim, dim);
    }
    *sq8 = quant_sq8_train(unit ? unit : base, n, dim, err);
    free(unit);
    return *sq8 ? SHOAL_OK : shoal_err_prefix(err, "training sq8 on --base");
}

/* hnsw_save callback: ctx is the FILE. */
static int s_file_write(void *ctx, const void *data, size_t len)
{
    return fwrite(data, 1, len, ctx) == len ? 0 : SHOAL_EIO;
}

static int s_save_index(const hnsw_t *index, const char *path, shoal_err_t *err)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return shoal_err_set(err, SHOAL_EIO, "--save %s: cannot create it", path);
    int rc = hnsw_save(index, s_file_write, f, err);
    if (fclose(f) != 0 && rc == 0)
        rc = shoal_err_set(err, SHOAL_EIO, "--save %s: closing it failed", path);
    return rc ? shoal_err_prefix(err, "--save %s", path) : SHOAL_OK;
}

/* The whole file into memory, then hnsw_load. NULL with err set. */
static hnsw_t *s_load_index(const char *path, shoal_err_t *err)
{
    hnsw_t *index = NULL;
    uint8_t *blob = NULL;
    FILE *f = fopen(path, "rb");
    long len = -1;
    if (f && fseek(f, 0, SEEK_END) == 0)
        len = ftell(f);
    if (!f || len < 0 || fseek(f, 0, SEEK_SET) != 0) {
        shoal_err_set(err, SHOAL_EIO, "cannot read %s", path);
        goto done;
    }
    blob = malloc(len ? (size_t)len : 1);
    if (!blob || fread(blob, 1, (size_t)len, f) != (size_t)len) {
        shoal_err_set(err, blob ? SHOAL_EIO : SHOAL_ENOMEM, "reading %s", path);
        goto done;
    }
    index = hnsw_load(blob, (size_t)len, err);
done:
    if (f)
        fclose(f);
    free(blob);
    return index;
}

/*
 * The HNSW benchmark: load the data, build (or load) the index, report its
 * size, then sweep ef and optionally delete and sweep again. Long because it
 * is one linear script of phases sharing one set of buffers and one cleanup
 * path; each phase's work is already in a helper.
 */
static int s_run(const void *opts, shoal_err_t *err)
{
    const hnsw_bench_opts_t *o = opts;
    float *base = NULL, *queries = NULL, *dists = NULL;
    int32_t *gt = NULL;
    uint64_t *ids = NULL, *found = NULL;
    double *lat = NULL, *lat_all = NULL;
    hnsw_t *index = NULL;
    quant_sq8_t *sq8 = NULL;
    int rc;

    size_t threads = bench_threads(o->threads);

    size_t n, dim, nq, qdim, ngt, gtdim;
    base = vecfile_load_f32(o->base, &n, &dim, err);
    if (!base) {
        rc = shoal_err_prefix(err, "--base");
        goto fail;
    }
    queries = vecfile_load_f32(o->queries, &nq, &qdim, err);
    if (!queries) {
        rc = shoal_err_prefix(err, "--queries");
        goto fail;
    }
    gt = vecfile_load_i32(o->gt, &ngt, &gtdim, err);
    if (!gt) {
        rc = shoal_err_prefix(err, "--gt");
        goto fail;
    }
    if (qdim != dim) {
        rc = shoal_err_set(err, SHOAL_EDIM, "--queries %s: dim %zu, expected %zu as in %s",
                           o->queries, qdim, dim, o->base);
        goto fail;
    }
    if (ngt != nq) {
        rc = shoal_err_set(err, SHOAL_EINVAL, "--gt %s: %zu rows, expected %zu (one per query)",
                           o->gt, ngt, nq);
        goto fail;
    }
    if (gtdim < o->k) {
        rc = shoal_err_set(err, SHOAL_EINVAL, "--gt %s: %zu ids per row, --k needs %zu", o->gt,
                           gtdim, o->k);
        goto fail;
    }

    ids = malloc(n * sizeof *ids);
    found = malloc(nq * o->k * sizeof *found);
    dists = malloc(nq * o->k * sizeof *dists);
    lat = malloc(nq * sizeof *lat);
    lat_all = malloc(o->repeat * nq * sizeof *lat_all);
    if (!ids || !found || !dists || !lat || !lat_all) {
        rc = shoal_err_set(err, SHOAL_ENOMEM, "out of memory for %zu vectors", n);
        goto fail;
    }
    for (size_t i = 0; i < n; i++)
        ids[i] = i;

    printf("n=%zu dim=%zu queries=%zu metric=%s M=%zu ef_construction=%zu threads=%zu k=%zu\n", n,
           dim, nq, shoal_metric_name(o->metric), o->M, o->ef_construction, threads, o->k);
    if (o->storage == QUANT_F32 || o->no_rerank)
        printf("storage=%s rerank=none\n", quant_kind_name(o->storage));
    else if (o->rerank)
        printf("storage=%s rerank=%zu\n", quant_kind_name(o->storage), o->rerank);
    else
        printf("storage=%s rerank=%dk\n", quant_kind_name(o->storage), HNSW_RERANK_FACTOR);
    fflush(stdout);

    if (o->storage == QUANT_SQ8 && !o->load) {
        rc = s_train(o, base, n, dim, &sq8, err);
        if (rc != SHOAL_OK)
            goto fail;
    }
    hnsw_params_t params = {
        .dim = dim,
        .metric = o->metric,
        .M = o->M,
        .ef_construction = o->ef_construction,
        .seed = o->seed,
        .storage = o->storage,
        .sq8 = sq8,
    };
    index = hnsw_new(&params, err);
    if (!index) {
        rc = err->code ? err->code : SHOAL_EINTERNAL;
        goto fail;
    }
    double t0 = timing_now();
    if (o->load) {
        hnsw_destroy(&index);
        index = s_load_index(o->load, err);
        rc = index ? SHOAL_OK : err->code ? err->code : SHOAL_EINTERNAL;
    } else {
        rc = hnsw_insert_batch(index, ids, base, n, threads, err);
    }
    double build_s = timing_now() - t0;
    if (rc != SHOAL_OK) {
        shoal_err_prefix(err, "%s %s", o->load ? "loading" : "building from",
                         o->load ? o->load : o->base);
        goto fail;
    }
    if (o->load && (hnsw_storage(index) != o->storage || hnsw_dim(index) != dim)) {
        rc = shoal_err_set(err, SHOAL_EINVAL, "--load %s: storage %s dim %zu, expected %s dim %zu",
                           o->load, quant_kind_name(hnsw_storage(index)), hnsw_dim(index),
                           quant_kind_name(o->storage), dim);
        goto fail;
    }
    if (o->save && (rc = s_save_index(index, o->save, err)) != SHOAL_OK)
        goto fail;
    hnsw_stats_t stats;
    hnsw_stats(index, &stats);
    double per = stats.count ? 1.0 / (double)stats.count : 0.0;
    printf("build_s=%.3f bytes_per_vector=%.1f codes=%.1f links=%.1f ids=%.1f other=%.1f\n", build_s,
           stats.bytes_per_vector, (double)stats.bytes_codes * per,
           (double)stats.bytes_links * per, (double)stats.bytes_ids * per,
           (double)stats.bytes_other * per);
    fflush(stdout);

    /* An f32 index holds its own copy: the base is then needed only for the
     * exact neighbours after deleting. A compressed one re-ranks from it. */
    if (o->delete_frac == 0 && o->storage == QUANT_F32) {
        free(base);
        base = NULL;
    }
    s_rows_t rows = {.base = base, .n = n, .dim = dim};
    const s_rows_t *source = o->storage == QUANT_F32 ? NULL : &rows;

    size_t ef_max = 0;
    for (size_t e = 0; e < o->nefs; e++)
        ef_max = o->efs[e] > ef_max ? o->efs[e] : ef_max;
    double wall_s = 0, cpu_s = 0;
    rc = s_search_pass(index, o, source, queries, nq, dim, ef_max, found, dists, NULL, &wall_s,
                       &cpu_s, err);
    if (rc != SHOAL_OK)
        goto fail;

    s_sweep_bufs_t bufs = {.found = found, .dists = dists, .lat = lat, .lat_all = lat_all};
    rc = s_sweep(index, o, source, queries, nq, dim, gt, gtdim, "", &bufs, err);
    if (rc == SHOAL_OK && o->delete_frac > 0)
        rc = s_delete_and_sweep(index, o, base, ids, n, queries, nq, dim, threads, &bufs, err);

fail:
    hnsw_destroy(&index);
    quant_sq8_destroy(&sq8);
    free(lat);
    free(lat_all);
    free(dists);
    free(found);
    free(ids);
    free(gt);
    free(queries);
    free(base);
    return rc;
}

int bench_hnsw_main(int argc, char **argv)
{
    hnsw_bench_opts_t opts;
    return bench_command_main("hnsw", argc, argv, &opts, s_parse, s_usage, s_run);
}
