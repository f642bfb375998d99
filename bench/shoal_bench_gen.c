/*
 * shoal_bench_gen.c - `shoal-bench gen`: clustered vectors, queries and their
 * exact ground truth, written as TEXMEX vecs files.
 *
 *   DIR/base.fvecs         n x dim      stream DATAGEN_STREAM_BASE
 *   DIR/query.fvecs        queries x dim stream DATAGEN_STREAM_QUERY
 *   DIR/groundtruth.ivecs  queries x k  exact neighbours, best first (int32 ids)
 *
 * The same options give byte-identical files on every run and machine with the
 * same binary: datagen's points depend only on (seed, stream, index), and the
 * ground truth breaks distance ties by id. Generation is split over threads
 * only for speed.
 *
 * Exit codes: 0 success, 2 usage error, 1 anything that failed while running.
 */
#include "bench/shoal_bench.h"
#include "common/datagen.h"
#include "common/distance.h"
#include "common/error.h"
#include "common/groundtruth.h"
#include "common/parfor.h"
#include "common/vecfile.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Below this many values a single thread generates everything. */
#define S_PARALLEL_MIN_VALUES (1u << 20)
#define S_THREADS_MAX         1024

typedef struct {
    size_t n;              /* --n: base vectors */
    size_t dim;            /* --dim */
    size_t queries;        /* --queries */
    size_t k;              /* --k: neighbours per query */
    uint64_t seed;         /* --seed */
    int have_seed;         /* --seed was given: it is required */
    shoal_metric_t metric; /* --metric */
    int normalize;         /* --normalize */
    size_t clusters;       /* --clusters (0 = datagen's default) */
    size_t intrinsic_dim;  /* --intrinsic-dim (0 = datagen's default) */
    size_t threads;        /* --threads (0 = every online core) */
    const char *out;       /* --out: borrowed from argv */
} gen_opts_t;

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: shoal-bench gen --n N --dim D --queries Q --k K --seed S --out DIR\n"
            "                       [--metric l2|ip|cosine] [--normalize] [--clusters C]\n"
            "                       [--intrinsic-dim R] [--threads T]\n"
            "\n"
            "Writes DIR/base.fvecs, DIR/query.fvecs and DIR/groundtruth.ivecs: clustered\n"
            "vectors of low intrinsic dimension and their exact K nearest neighbours.\n"
            "\n"
            "  --n N              base vectors (1..%d; ids are int32)\n"
            "  --dim D            dimension (1..%d)\n"
            "  --queries Q        query vectors, drawn apart from the base\n"
            "  --k K              neighbours per query (1..N)\n"
            "  --seed S           everything follows from it\n"
            "  --metric M         l2 (default), ip or cosine\n"
            "  --normalize        scale every vector to unit length\n"
            "  --clusters C       mixture components (default %d)\n"
            "  --intrinsic-dim R  subspace dimension (default D/8 in 2..32)\n"
            "  --threads T        worker threads (default: every online core)\n"
            "  --out DIR          output folder, created if missing\n",
            INT32_MAX, DATAGEN_DIM_MAX, DATAGEN_CLUSTERS_DEFAULT);
}

/* ------------------------------------------------------------------------ */
/* Options                                                                  */
/* ------------------------------------------------------------------------ */

/* The options that are not numbers; bench_other_fn. ctx: the gen_opts_t. */
static int s_parse_other(const char *opt, const char *val, void *ctx)
{
    gen_opts_t *o = ctx;
    if (!strcmp(opt, "--seed")) {
        o->have_seed = 1;
        return bench_parse_u64(opt, val, &o->seed);
    }
    if (!strcmp(opt, "--metric"))
        return bench_parse_metric("gen", val, &o->metric);
    if (!strcmp(opt, "--out")) {
        if (!*val) {
            fprintf(stderr, "shoal-bench gen: --out: expected a folder name\n");
            return -1;
        }
        o->out = val;
        return 0;
    }
    return 1;
}

/* Returns 0, 1 for --help, or -1 after printing one line on stderr. */
static int s_parse(int argc, char **argv, void *opts)
{
    gen_opts_t *o = opts;
    int have_n = 0, have_dim = 0, have_queries = 0, have_k = 0;
    memset(o, 0, sizeof *o);
    o->metric = SHOAL_METRIC_L2;
    const bench_opt_t sizes[] = {
        {"--n", 1, INT32_MAX, &o->n, &have_n},
        {"--dim", 1, DATAGEN_DIM_MAX, &o->dim, &have_dim},
        {"--queries", 1, INT32_MAX, &o->queries, &have_queries},
        {"--k", 1, INT32_MAX, &o->k, &have_k},
        {"--clusters", 1, DATAGEN_CLUSTERS_MAX, &o->clusters, NULL},
        {"--intrinsic-dim", 1, DATAGEN_INTRINSIC_DIM_MAX, &o->intrinsic_dim, NULL},
        {"--threads", 0, S_THREADS_MAX, &o->threads, NULL},
        {"--normalize", 0, 0, NULL, &o->normalize},
    };
    int rc = bench_parse_args("gen", argc, argv, sizes, sizeof sizes / sizeof sizes[0],
                              s_parse_other, o);
    if (rc != 0)
        return rc;

    const char *missing = !have_n         ? "--n"
                          : !have_dim     ? "--dim"
                          : !have_queries ? "--queries"
                          : !have_k       ? "--k"
                          : !o->have_seed ? "--seed"
                          : !o->out       ? "--out"
                                          : NULL;
    if (missing) {
        fprintf(stderr, "shoal-bench gen: %s is required (see shoal-bench gen --help)\n", missing);
        return -1;
    }
    if (o->k > o->n) {
        fprintf(stderr, "shoal-bench gen: --k %zu is larger than --n %zu\n", o->k, o->n);
        return -1;
    }
    if (o->intrinsic_dim > o->dim) {
        fprintf(stderr, "shoal-bench gen: --intrinsic-dim %zu is larger than --dim %zu\n",
                o->intrinsic_dim, o->dim);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Work                                                                     */
/* ------------------------------------------------------------------------ */

/* mkdir -p: creates every missing folder on the way to path. */
static int s_make_dirs(const char *path, shoal_err_t *err)
{
    size_t len = strlen(path);
    char *copy = malloc(len + 1);
    if (!copy)
        return shoal_err_set(err, SHOAL_ENOMEM, "out of memory");
    memcpy(copy, path, len + 1);
    int rc = SHOAL_OK;
    for (size_t i = 1; i <= len; i++) {
        if (copy[i] != '/' && copy[i] != '\0')
            continue;
        char saved = copy[i];
        copy[i] = '\0';
        struct stat st;
        if (mkdir(copy, 0777) != 0 &&
            !(errno == EEXIST && stat(copy, &st) == 0 && S_ISDIR(st.st_mode))) {
            rc = shoal_err_set(err, SHOAL_EIO, "cannot create folder %s: %s", copy,
                               errno == EEXIST ? "a file is in the way" : strerror(errno));
            break;
        }
        copy[i] = saved;
    }
    free(copy);
    return rc;
}

typedef struct {
    const datagen_t *gen; /* shared, read-only */
    unsigned stream;      /* DATAGEN_STREAM_* */
    size_t first;         /* first point of this share */
    size_t count;         /* points in this share */
    float *out;           /* where point `first` goes */
} fill_share_t;

static void s_fill_main(void *arg)
{
    fill_share_t *s = arg;
    datagen_fill(s->gen, s->stream, s->first, s->count, s->out);
}

/* Points [0, n) of stream into out, over up to `threads` threads. */
static int s_fill_parallel(const datagen_t *gen, unsigned stream, size_t n, size_t dim,
                           size_t threads, float *out, shoal_err_t *err)
{
    if (threads > n)
        threads = n;
    if (threads <= 1 || n * dim < S_PARALLEL_MIN_VALUES) {
        datagen_fill(gen, stream, 0, n, out);
        return SHOAL_OK;
    }
    fill_share_t *shares = calloc(threads, sizeof *shares);
    if (!shares)
        return shoal_err_set(err, SHOAL_ENOMEM, "out of memory for %zu threads", threads);
    for (size_t t = 0; t < threads; t++) {
        size_t first = parfor_split(n, threads, t);
        shares[t] = (fill_share_t){.gen = gen,
                                   .stream = stream,
                                   .first = first,
                                   .count = parfor_split(n, threads, t + 1) - first,
                                   .out = out + first * dim};
    }
    parfor_each(shares, sizeof *shares, threads, s_fill_main);
    free(shares);
    return SHOAL_OK;
}

/* Joins dir and name into a new string; NULL when out of memory. */
static char *s_path_join(const char *dir, const char *name)
{
    size_t dlen = strlen(dir), nlen = strlen(name);
    char *path = malloc(dlen + 1 + nlen + 1);
    if (!path)
        return NULL;
    memcpy(path, dir, dlen);
    path[dlen] = '/';
    memcpy(path + dlen + 1, name, nlen + 1);
    return path;
}

static int s_write(const char *dir, const char *name, const void *data, size_t rows, size_t cols,
                   int is_ids, shoal_err_t *err)
{
    char *path = s_path_join(dir, name);
    if (!path)
        return shoal_err_set(err, SHOAL_ENOMEM, "out of memory");
    int rc = is_ids ? vecfile_write_ivecs(path, data, rows, cols, err)
                    : vecfile_write_fvecs(path, data, rows, cols, err);
    free(path);
    return rc;
}

static int s_run(const void *opts, shoal_err_t *err)
{
    const gen_opts_t *o = opts;
    datagen_t *gen = NULL;
    float *base = NULL, *queries = NULL;
    uint64_t *ids = NULL;
    int32_t *ids32 = NULL;
    int rc;

    size_t threads = bench_threads(o->threads);

    rc = s_make_dirs(o->out, err);
    if (rc != SHOAL_OK)
        goto fail;

    datagen_params_t params = {
        .dim = o->dim,
        .intrinsic_dim = o->intrinsic_dim,
        .clusters = o->clusters,
        .normalize = o->normalize,
        .seed = o->seed,
    };
    gen = datagen_new(&params, err);
    if (!gen) {
        rc = err->code;
        goto fail;
    }

    /* n, queries <= INT32_MAX and dim <= 65536: these products fit in 64 bits. */
    base = malloc(o->n * o->dim * sizeof(float));
    queries = malloc(o->queries * o->dim * sizeof(float));
    ids = malloc(o->queries * o->k * sizeof(uint64_t));
    ids32 = malloc(o->queries * o->k * sizeof(int32_t));
    if (!base || !queries || !ids || !ids32) {
        rc = shoal_err_set(err, SHOAL_ENOMEM, "out of memory for %zu x %zu vectors", o->n, o->dim);
        goto fail;
    }

    double t0 = timing_now();
    rc = s_fill_parallel(gen, DATAGEN_STREAM_BASE, o->n, o->dim, threads, base, err);
    if (rc == SHOAL_OK)
        rc = s_fill_parallel(gen, DATAGEN_STREAM_QUERY, o->queries, o->dim, threads, queries, err);
    if (rc != SHOAL_OK)
        goto fail;
    double gen_s = timing_now() - t0;

    t0 = timing_now();
    rc = gt_knn(base, o->n, queries, o->queries, o->dim, o->metric, o->k, threads, ids, NULL, err);
    if (rc != SHOAL_OK)
        goto fail;
    double gt_s = timing_now() - t0;
    /* k <= n <= INT32_MAX: every id is a real row number that fits. */
    for (size_t i = 0; i < o->queries * o->k; i++)
        ids32[i] = (int32_t)ids[i];

    rc = s_write(o->out, "base.fvecs", base, o->n, o->dim, 0, err);
    if (rc == SHOAL_OK)
        rc = s_write(o->out, "query.fvecs", queries, o->queries, o->dim, 0, err);
    if (rc == SHOAL_OK)
        rc = s_write(o->out, "groundtruth.ivecs", ids32, o->queries, o->k, 1, err);
    if (rc != SHOAL_OK)
        goto fail;

    printf("n=%zu dim=%zu queries=%zu k=%zu metric=%s seed=%llu gen_s=%.3f gt_s=%.3f out=%s\n",
           o->n, o->dim, o->queries, o->k, shoal_metric_name(o->metric),
           (unsigned long long)o->seed, gen_s, gt_s, o->out);

fail:
    free(ids32);
    free(ids);
    free(queries);
    free(base);
    datagen_destroy(&gen);
    return rc;
}

int bench_gen_main(int argc, char **argv)
{
    gen_opts_t opts;
    return bench_command_main("gen", argc, argv, &opts, s_parse, s_usage, s_run);
}
