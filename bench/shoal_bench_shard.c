/*
 * shoal_bench_shard.c - `shoal-bench shard`: one real bin/shoal-shard, driven
 * through its socket by the client library, against the same work done
 * in-process.
 *
 * What is measured, and how:
 *   - insert_vps: the base inserted through the socket in batches of --batch
 *     (client insert calls, one after the other; each is acknowledged only
 *     when durable, the shard runs with --sync on and its background
 *     checkpoints). Vectors / wall time of all the calls.
 *   - socket qps: the queries one at a time through the socket (mode hnsw,
 *     --ef, --k), after an untimed warm-up pass; in-process qps: the same
 *     queries one at a time with hnsw_search on an index built here with the
 *     same M / ef_construction on --threads threads.
 *     socket_overhead_ratio = in-process qps / socket qps (> 1: the socket,
 *     the codec and the server's hand-offs cost that factor).
 *   - restart_s: the shard is stopped with SIGTERM (which checkpoints; that
 *     time is stop_s), started again, and timed from the spawn until the
 *     ready file exists and the first search has been answered.
 *   - rebuild_s: what a restart without a checkpoint would at least pay:
 *     hnsw_insert_batch of the same vectors in-process on --threads threads
 *     (the in-process index above; reading the vectors back from RocksDB is
 *     not counted, so the speedup is a lower bound).
 *     restart_speedup = rebuild_s / restart_s.
 *
 * Output: key=value lines, last
 *   RESULT shard insert_vps=.. socket_overhead_ratio=.. restart_speedup=..
 *
 * Exit codes: 0 success, 2 usage error, 1 anything that failed while running.
 */
#include "bench/shoal_bench.h"

#include <czmq.h>

#include "client/shoal_client.h"
#include "common/distance.h"
#include "common/error.h"
#include "common/groundtruth.h"
#include "common/vecfile.h"
#include "shard/hnsw.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_THREADS_MAX     1024
#define S_BATCH_DEFAULT   10000
#define S_EF_DEFAULT      64
#define S_K_DEFAULT       10
#define S_WARMUP_MAX      200    /* queries of the untimed warm-up pass */
#define S_READY_WAIT_S    1800.0 /* a start (recovery of a large set) may take this long */
#define S_STOP_WAIT_S     1800.0 /* a stop (final checkpoint) may take this long */
#define S_CALL_TIMEOUT_MS 600000 /* one client call */

typedef struct {
    const char *base;       /* --base */
    const char *queries;    /* --queries */
    const char *gt;         /* --gt (optional) */
    const char *shard_bin;  /* --shard-bin (default: next to this program) */
    size_t n;               /* --n: first n base rows (0 = all) */
    size_t batch;           /* --batch */
    size_t ef;              /* --ef */
    size_t threads;         /* --threads (0 = online cores) */
    size_t k;               /* --k */
    size_t M;               /* --M */
    size_t ef_construction; /* --ef-construction */
} shard_bench_opts_t;

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: shoal-bench shard --base F --queries Q [--gt G] [--n N] [--batch B]\n"
            "                         [--ef E] [--threads T] [--k K] [--M M]\n"
            "                         [--ef-construction E] [--shard-bin PATH]\n"
            "\n"
            "Starts bin/shoal-shard on a free port with a temporary data dir (sync on),\n"
            "inserts the base through the socket, searches the queries one at a time\n"
            "through the socket and in-process, stops and restarts the shard, and prints\n"
            "  RESULT shard insert_vps=.. socket_overhead_ratio=.. restart_speedup=..\n"
            "\n"
            "  --base F             base vectors (.fvecs, .bvecs or .npy); ids = row numbers\n"
            "  --queries Q          query vectors, same dimension\n"
            "  --gt G               exact neighbours (.ivecs) for recall (optional)\n"
            "  --n N                use the first N base rows (default: all; recall then\n"
            "                       needs N = all rows)\n"
            "  --batch B            vectors per insert request (default %d)\n"
            "  --ef E               HNSW search candidates (default %d)\n"
            "  --threads T          shard threads and in-process build threads\n"
            "                       (default: every online core)\n"
            "  --k K                neighbours per query (default %d)\n"
            "  --M M                links per node (default %d)\n"
            "  --ef-construction E  build candidates (default %d)\n"
            "  --shard-bin PATH     the shoal-shard binary (default: next to shoal-bench)\n"
            "\n"
            "Temporary data goes under $SHOAL_TMP (default /tmp) and is removed.\n",
            S_BATCH_DEFAULT, S_EF_DEFAULT, S_K_DEFAULT, HNSW_M_DEFAULT,
            HNSW_EF_CONSTRUCTION_DEFAULT);
}

/* The options that are not numbers; bench_other_fn. ctx: the shard_bench_opts_t. */
static int s_parse_other(const char *opt, const char *val, void *ctx)
{
    shard_bench_opts_t *o = ctx;
    if (!strcmp(opt, "--base"))
        o->base = val;
    else if (!strcmp(opt, "--queries"))
        o->queries = val;
    else if (!strcmp(opt, "--gt"))
        o->gt = val;
    else if (!strcmp(opt, "--shard-bin"))
        o->shard_bin = val;
    else
        return 1;
    return 0;
}

/* Returns 0, 1 for --help, or -1 after printing one line on stderr. */
static int s_parse(int argc, char **argv, void *opts)
{
    shard_bench_opts_t *o = opts;
    memset(o, 0, sizeof *o);
    o->batch = S_BATCH_DEFAULT;
    o->ef = S_EF_DEFAULT;
    o->k = S_K_DEFAULT;
    o->M = HNSW_M_DEFAULT;
    o->ef_construction = HNSW_EF_CONSTRUCTION_DEFAULT;
    const bench_opt_t sizes[] = {
        {"--n", 0, (size_t)1 << 40, &o->n, NULL},
        {"--batch", 1, 10000000, &o->batch, NULL},
        {"--ef", HNSW_EF_MIN, HNSW_EF_MAX, &o->ef, NULL},
        {"--threads", 0, S_THREADS_MAX, &o->threads, NULL},
        {"--k", 1, 4096, &o->k, NULL},
        {"--M", HNSW_M_MIN, HNSW_M_MAX, &o->M, NULL},
        {"--ef-construction", HNSW_EF_CONSTRUCTION_MIN, HNSW_EF_CONSTRUCTION_MAX,
         &o->ef_construction, NULL},
    };
    int rc = bench_parse_args("shard", argc, argv, sizes, sizeof sizes / sizeof sizes[0],
                              s_parse_other, o);
    if (rc != 0)
        return rc;
    const char *missing = !o->base ? "--base" : !o->queries ? "--queries" : NULL;
    if (missing) {
        fprintf(stderr, "shoal-bench shard: %s is required (see shoal-bench shard --help)\n",
                missing);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* The shard process                                                        */
/* ------------------------------------------------------------------------ */

typedef struct {
    char bin[BENCH_PATH_MAX];      /* shoal-shard */
    char dir[BENCH_PATH_MAX - 64]; /* scratch folder: data/ and ready (room for those names) */
    char data_dir[BENCH_PATH_MAX]; /* --data-dir */
    char threads[32];              /* --threads */
    bench_child_t proc;            /* the process; proc.ready is --ready-file */
} s_shard_t;

/* Starts the shard and waits for its ready file. */
static int s_shard_start(s_shard_t *sh, shoal_err_t *err)
{
    char *argv[] = {sh->bin,      "--listen",  "tcp://127.0.0.1:*", "--data-dir",
                    sh->data_dir, "--ready-file", sh->proc.ready,   "--threads",
                    sh->threads,  "--sync",    "on",                "--log-level",
                    "warn",       NULL};
    int rc = bench_child_spawn(&sh->proc, argv, err);
    return rc != 0 ? rc : bench_child_wait_ready(&sh->proc, S_READY_WAIT_S, err);
}

/* ------------------------------------------------------------------------ */
/* Measuring                                                                */
/* ------------------------------------------------------------------------ */

/* Queries one at a time through the socket; found[q*k..], lat[q] seconds. */
static int s_socket_pass(shoal_client_t *client, const float *queries, size_t nq, size_t dim,
                         const shard_bench_opts_t *o, uint64_t *found, double *lat, double *wall_s,
                         shoal_err_t *err)
{
    shoal_search_opts_t sopts = {.k = o->k, .mode = WIRE_MODE_HNSW, .ef = o->ef};
    double start = timing_now();
    for (size_t q = 0; q < nq; q++) {
        uint64_t *ids = NULL;
        double t0 = timing_now();
        int rc = shoal_client_search(client, "bench", queries + q * dim, 1, dim, &sopts, &ids, NULL,
                                     NULL, err);
        if (lat)
            lat[q] = timing_now() - t0;
        if (rc != 0)
            return shoal_err_prefix(err, "socket search %zu", q);
        if (found)
            memcpy(found + q * o->k, ids, o->k * sizeof *ids);
        free(ids);
    }
    *wall_s = timing_now() - start;
    return 0;
}

static int s_inprocess_pass(const hnsw_t *index, const float *queries, size_t nq, size_t dim,
                            const shard_bench_opts_t *o, uint64_t *found, float *dists, double *lat,
                            double *wall_s, shoal_err_t *err)
{
    double start = timing_now();
    for (size_t q = 0; q < nq; q++) {
        double t0 = timing_now();
        int got = hnsw_search(index, queries + q * dim, o->k, o->ef, NULL, NULL, found + q * o->k,
                              dists + q * o->k, err);
        if (lat)
            lat[q] = timing_now() - t0;
        if (got < 0)
            return shoal_err_prefix(err, "in-process search %zu", q);
    }
    *wall_s = timing_now() - start;
    return 0;
}

static void s_print_recall(const char *label, const uint64_t *found, const int32_t *gt, size_t gtk,
                           size_t nq, size_t k)
{
    if (gt)
        printf("%s_recall@%zu=%.4f\n", label, k, gt_recall(found, k, gt, gtk, nq, k));
}

/*
 * The shard benchmark: start a shard, insert and search through its socket, the
 * same in-process, then stop, restart and search again, printing each phase's
 * numbers. Long because it is one linear script of phases sharing one set of
 * buffers and one cleanup path; each phase's work is already in a helper.
 */
static int s_run(const void *opts, shoal_err_t *err)
{
    const shard_bench_opts_t *o = opts;
    vecfile_t *vf = NULL;
    float *base = NULL, *queries = NULL, *dists = NULL;
    int32_t *gt = NULL;
    uint64_t *ids = NULL, *found = NULL, *found2 = NULL;
    double *lat = NULL;
    hnsw_t *index = NULL;
    shoal_client_t *client = NULL;
    s_shard_t sh;
    memset(&sh, 0, sizeof sh);
    int rc;

    /* Ctrl-C should stop the benchmark, not be swallowed by czmq's handler. */
    zsys_handler_set(NULL);
    size_t threads = bench_threads(o->threads);
    snprintf(sh.proc.name, sizeof sh.proc.name, "the shard");
    rc = bench_find_bin(o->shard_bin, "shoal-shard", "--shard-bin", sh.bin, err);
    if (rc != 0)
        return rc;

    vf = vecfile_open(o->base, err);
    if (!vf)
        return shoal_err_prefix(err, "--base");
    size_t rows = vecfile_count(vf), dim = vecfile_dim(vf);
    size_t n = o->n && o->n < rows ? o->n : rows;
    base = malloc(n * dim * sizeof *base);
    ids = malloc(n * sizeof *ids);
    if (!base || !ids) {
        rc = shoal_err_set(err, SHOAL_ENOMEM, "no memory for %zu vectors", n);
        goto done;
    }
    rc = vecfile_read_f32(vf, 0, n, base, err);
    vecfile_close(&vf);
    if (rc != 0)
        goto done;
    for (size_t i = 0; i < n; i++)
        ids[i] = i;
    size_t nq, qdim, ngt = 0, gtk = 0;
    queries = vecfile_load_f32(o->queries, &nq, &qdim, err);
    if (!queries) {
        rc = shoal_err_prefix(err, "--queries");
        goto done;
    }
    if (qdim != dim) {
        rc = shoal_err_set(err, SHOAL_EDIM, "--queries: dim %zu, expected %zu", qdim, dim);
        goto done;
    }
    if (o->gt && n == rows) {
        gt = vecfile_load_i32(o->gt, &ngt, &gtk, err);
        if (!gt) {
            rc = shoal_err_prefix(err, "--gt");
            goto done;
        }
        if (ngt != nq || gtk < o->k) {
            rc = shoal_err_set(err, SHOAL_EINVAL, "--gt: %zu x %zu ids, need %zu x >= %zu", ngt,
                               gtk, nq, o->k);
            goto done;
        }
    } else if (o->gt) {
        printf("recall=skipped (--n %zu < %zu rows: the ground truth is for the whole file)\n", n,
               rows);
    }
    found = malloc(nq * o->k * sizeof *found);
    found2 = malloc(nq * o->k * sizeof *found2);
    dists = malloc(nq * o->k * sizeof *dists);
    lat = malloc(nq * sizeof *lat);
    if (!found || !found2 || !dists || !lat) {
        rc = shoal_err_set(err, SHOAL_ENOMEM, "no memory for %zu queries", nq);
        goto done;
    }
    printf("n=%zu dim=%zu queries=%zu batch=%zu threads=%zu M=%zu ef_construction=%zu ef=%zu "
           "k=%zu sync=on\n",
           n, dim, nq, o->batch, threads, o->M, o->ef_construction, o->ef, o->k);
    fflush(stdout);

    /* Scratch folder and the first start. */
    const char *root = getenv("SHOAL_TMP");
    snprintf(sh.dir, sizeof sh.dir, "%s/shoal-bench-shard.XXXXXX", root && *root ? root : "/tmp");
    if (!mkdtemp(sh.dir)) {
        rc = shoal_err_set(err, SHOAL_EIO, "mkdtemp %s: %s", sh.dir, strerror(errno));
        sh.dir[0] = '\0';
        goto done;
    }
    snprintf(sh.data_dir, sizeof sh.data_dir, "%s/data", sh.dir);
    snprintf(sh.proc.ready, sizeof sh.proc.ready, "%s/ready", sh.dir);
    snprintf(sh.threads, sizeof sh.threads, "%zu", threads);
    rc = s_shard_start(&sh, err);
    if (rc != 0)
        goto done;
    client = shoal_client_new(sh.proc.endpoint, S_CALL_TIMEOUT_MS, err);
    if (!client) {
        rc = err->code ? err->code : SHOAL_EINTERNAL;
        goto done;
    }
    rc = shoal_client_create(client, "bench", dim, SHOAL_METRIC_L2, o->M, o->ef_construction, err);
    if (rc != 0)
        goto done;

    /* Insert through the socket. */
    double t0 = timing_now();
    for (size_t at = 0; at < n; at += o->batch) {
        size_t m = n - at < o->batch ? n - at : o->batch;
        rc = shoal_client_insert(client, "bench", ids + at, base + at * dim, m, dim, NULL, err);
        if (rc != 0) {
            shoal_err_prefix(err, "insert of rows %zu..%zu", at, at + m - 1);
            goto done;
        }
    }
    double insert_s = timing_now() - t0;
    double insert_vps = (double)n / insert_s;
    printf("insert_s=%.3f insert_vps=%.1f\n", insert_s, insert_vps);
    fflush(stdout);
    /* A checkpoint now, so no background one competes with the timed searches. */
    rc = shoal_client_checkpoint(client, "bench", err);
    if (rc != 0)
        goto done;

    /* Search through the socket. */
    size_t warm = nq < S_WARMUP_MAX ? nq : S_WARMUP_MAX;
    double wall_s;
    rc = s_socket_pass(client, queries, warm, dim, o, NULL, NULL, &wall_s, err);
    if (rc == 0)
        rc = s_socket_pass(client, queries, nq, dim, o, found, lat, &wall_s, err);
    if (rc != 0)
        goto done;
    double socket_qps = (double)nq / wall_s;
    qsort(lat, nq, sizeof *lat, timing_cmp_double);
    printf("socket_qps=%.1f socket_p50_us=%.1f socket_p99_us=%.1f\n", socket_qps,
           timing_percentile(lat, nq, 0.50) * 1e6, timing_percentile(lat, nq, 0.99) * 1e6);
    s_print_recall("socket", found, gt, gtk, nq, o->k);
    fflush(stdout);

    /* The same in-process: build (this is also rebuild_s), then search. */
    hnsw_params_t params = {
        .dim = dim, .metric = SHOAL_METRIC_L2, .M = o->M, .ef_construction = o->ef_construction};
    index = hnsw_new(&params, err);
    if (!index) {
        rc = err->code ? err->code : SHOAL_EINTERNAL;
        goto done;
    }
    t0 = timing_now();
    rc = hnsw_insert_batch(index, ids, base, n, threads, err);
    double rebuild_s = timing_now() - t0;
    if (rc != 0)
        goto done;
    rc = s_inprocess_pass(index, queries, warm, dim, o, found2, dists, NULL, &wall_s, err);
    if (rc == 0)
        rc = s_inprocess_pass(index, queries, nq, dim, o, found2, dists, lat, &wall_s, err);
    if (rc != 0)
        goto done;
    double inproc_qps = (double)nq / wall_s;
    qsort(lat, nq, sizeof *lat, timing_cmp_double);
    printf("inprocess_build_s=%.3f inprocess_qps=%.1f inprocess_p50_us=%.1f "
           "inprocess_p99_us=%.1f\n",
           rebuild_s, inproc_qps, timing_percentile(lat, nq, 0.50) * 1e6,
           timing_percentile(lat, nq, 0.99) * 1e6);
    s_print_recall("inprocess", found2, gt, gtk, nq, o->k);
    fflush(stdout);
    hnsw_destroy(&index);

    /* Stop (final checkpoint), restart, first search answered. */
    shoal_client_destroy(&client);
    t0 = timing_now();
    rc = bench_child_stop(&sh.proc, S_STOP_WAIT_S, err);
    if (rc != 0)
        goto done;
    double stop_s = timing_now() - t0;
    t0 = timing_now();
    rc = s_shard_start(&sh, err);
    if (rc != 0)
        goto done;
    client = shoal_client_new(sh.proc.endpoint, S_CALL_TIMEOUT_MS, err);
    if (!client) {
        rc = err->code ? err->code : SHOAL_EINTERNAL;
        goto done;
    }
    rc = s_socket_pass(client, queries, 1, dim, o, found2, NULL, &wall_s, err);
    if (rc != 0)
        goto done;
    double restart_s = timing_now() - t0;
    void *info = NULL;
    size_t info_len = 0;
    double loaded = -1, replayed = -1;
    if (shoal_client_stats(client, "bench", NULL, &info, &info_len, err) == 0) {
        wire_info_lookup(info, info_len, "collections.bench.loaded_from_checkpoint", &loaded);
        wire_info_lookup(info, info_len, "collections.bench.replayed", &replayed);
        free(info);
    }
    int same = memcmp(found, found2, o->k * sizeof *found) == 0;
    printf("stop_s=%.3f restart_s=%.3f loaded_from_checkpoint=%.0f replayed=%.0f "
           "first_result_same=%d\n",
           stop_s, restart_s, loaded, replayed, same);
    printf("rebuild_s=%.3f (in-process hnsw_insert_batch of the same %zu vectors on %zu threads)\n",
           rebuild_s, n, threads);
    shoal_client_destroy(&client);
    rc = bench_child_stop(&sh.proc, S_STOP_WAIT_S, err);
    if (rc != 0)
        goto done;

    printf("RESULT shard insert_vps=%.1f socket_overhead_ratio=%.3f restart_speedup=%.2f\n",
           insert_vps, inproc_qps / socket_qps, rebuild_s / restart_s);
    fflush(stdout);

done:
    shoal_client_destroy(&client);
    bench_child_kill(&sh.proc);
    if (sh.dir[0])
        bench_remove_tree(sh.dir);
    hnsw_destroy(&index);
    vecfile_close(&vf);
    free(lat);
    free(dists);
    free(found);
    free(found2);
    free(gt);
    free(queries);
    free(ids);
    free(base);
    return rc;
}

int bench_shard_main(int argc, char **argv)
{
    shard_bench_opts_t opts;
    return bench_command_main("shard", argc, argv, &opts, s_parse, s_usage, s_run);
}
