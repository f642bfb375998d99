/*
 * test_store.c - the shard store, in process: create / insert / search in
 * every mode / get / delete / drop round trips, the error codes and messages,
 * exact search against brute force, siftsmall recall, and persistence:
 * a clean close reopens from the checkpoint with identical results, an
 * abandoned store replays its log and keeps every acknowledged write, a
 * corrupt checkpoint is detected and rebuilt from the vectors, a data dir of
 * another format version is refused, the background checkpointer runs.
 *
 * Data dirs are made with mkdtemp under $SHOAL_TMP (or /tmp) and removed at
 * the end of each test. Real data comes from $SHOAL_DATASETS (default
 * ../shared/datasets); the tests that need it skip, saying so, when it is
 * absent. Timings are printed (cr_log_info), never asserted. The exact engine
 * runs on the CPU unless SHOAL_STORE_DEVICE names another device ("auto").
 */
#define _XOPEN_SOURCE 700 /* nftw */

#include "common/datagen.h"
#include "common/groundtruth.h"
#include "net/kv.h"
#include "common/log.h"
#include "common/topk.h"
#include "common/vecfile.h"
#include "shard/store.h"
#include "shard/store_private.h" /* the chunk-size test hook */

#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define S_THREADS 2
#define S_SEED    77001ULL

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */
/* ------------------------------------------------------------------------ */

static char s_dir[1024];

static void s_mkdir_tmp(void)
{
    shoal_log_init_from_env();
    const char *base = getenv("SHOAL_TMP");
    if (!base || !*base)
        base = "/tmp";
    mkdir(base, 0755);
    snprintf(s_dir, sizeof s_dir, "%s/test_store-XXXXXX", base);
    cr_assert_not_null(mkdtemp(s_dir), "mkdtemp %s failed", s_dir);
}

static int s_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void s_rm_tmp(void)
{
    if (s_dir[0])
        nftw(s_dir, s_rm_one, 16, FTW_DEPTH | FTW_PHYS);
    s_dir[0] = 0;
}

static shard_store_opts_t s_opts(void)
{
    /* SHOAL_STORE_DEVICE=auto runs the suite on a GPU host's engine. */
    const char *device = getenv("SHOAL_STORE_DEVICE");
    shard_store_opts_t o = {.data_dir = s_dir,
                            .device = device && *device ? device : "cpu",
                            .threads = S_THREADS,
                            .sync = 0,
                            .checkpoint_every = 100000000,
                            .checkpoint_secs = 3600,
                            .hnsw_ef_construction = 100};
    return o;
}

static shard_store_t *s_open_with(const shard_store_opts_t *o)
{
    shoal_err_t err;
    shoal_err_clear(&err);
    shard_store_t *st = shard_store_open(o, &err);
    cr_assert_not_null(st, "open %s: %s", s_dir, err.msg);
    return st;
}

static shard_store_t *s_open(void)
{
    shard_store_opts_t o = s_opts();
    return s_open_with(&o);
}

/* n clustered vectors of dim from stream (base / query). Caller frees. */
static float *s_data(size_t n, size_t dim, unsigned stream, int normalize)
{
    datagen_params_t p = {.dim = dim, .seed = S_SEED, .normalize = normalize};
    shoal_err_t err;
    datagen_t *g = datagen_new(&p, &err);
    cr_assert_not_null(g, "datagen: %s", err.msg);
    float *v = malloc(n * dim * sizeof *v);
    cr_assert_not_null(v);
    datagen_fill(g, stream, 0, n, v);
    datagen_destroy(&g);
    return v;
}

static uint64_t *s_seq_ids(size_t n, uint64_t first)
{
    uint64_t *ids = malloc((n ? n : 1) * sizeof *ids);
    cr_assert_not_null(ids);
    for (size_t i = 0; i < n; i++)
        ids[i] = first + i;
    return ids;
}

static void s_create(shard_store_t *st, const char *name, size_t dim, shoal_metric_t metric)
{
    shoal_err_t err;
    int rc = shard_store_create(st, name, dim, metric, 0, 0, &err);
    cr_assert_eq(rc, 0, "create %s: %s", name, err.msg);
}

static void s_insert(shard_store_t *st, const char *name, const uint64_t *ids, const float *v,
                     size_t n, size_t dim)
{
    shoal_err_t err;
    int rc = shard_store_insert(st, name, ids, v, n, dim, NULL, &err);
    cr_assert_eq(rc, 0, "insert into %s: %s", name, err.msg);
}

static shard_coll_stats_t s_stats(shard_store_t *st, const char *name)
{
    shard_coll_stats_t *out = NULL, copy;
    size_t count = 0;
    shoal_err_t err;
    int rc = shard_store_stats(st, name, &out, &count, &err);
    cr_assert_eq(rc, 0, "stats: %s", err.msg);
    cr_assert_eq(count, 1);
    copy = out[0];
    free(out);
    return copy;
}

static void s_search(shard_store_t *st, const char *name, const float *q, size_t nq, size_t dim,
                     size_t k, wire_mode_t mode, size_t ef, const uint64_t *filter, size_t nfilter,
                     uint64_t *ids, float *dists, wire_mode_t *used)
{
    shoal_err_t err;
    int rc = shard_store_search(st, name, q, nq, dim, k, mode, ef, filter, nfilter, ids, dists,
                                used, &err);
    cr_assert_eq(rc, 0, "search %s: %s", name, err.msg);
}

static double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Stderr captured into a file while a store logs (the log writes fd 2). */
static int s_saved_fd = -1;
static char s_cap_path[1100];

static void s_capture_begin(void)
{
    snprintf(s_cap_path, sizeof s_cap_path, "%s.log", s_dir);
    int fd = open(s_cap_path, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    cr_assert_geq(fd, 0);
    fflush(stderr);
    s_saved_fd = dup(2);
    dup2(fd, 2);
    close(fd);
}

/* Ends the capture; returns what was logged (malloc'd). */
static char *s_capture_end(void)
{
    fflush(stderr);
    dup2(s_saved_fd, 2);
    close(s_saved_fd);
    FILE *f = fopen(s_cap_path, "rb");
    cr_assert_not_null(f);
    char *buf = calloc(1, 1 << 16);
    size_t n = fread(buf, 1, (1 << 16) - 1, f);
    buf[n] = 0;
    fclose(f);
    remove(s_cap_path);
    return buf;
}

static const char *s_datasets(void)
{
    const char *dir = getenv("SHOAL_DATASETS");
    return dir && *dir ? dir : "../shared/datasets";
}

/* siftsmall's base, queries and ground truth (checked to agree), from SHOAL_DATASETS. */
typedef struct {
    char path[1024]; /* the base file, named when it is absent */
    float *base, *queries;
    int32_t *gt;
    size_t n, dim, nq, gdim;
} s_sift_t;

/* 1 when loaded (the caller frees the three arrays), 0 when the data set is absent. */
static int s_sift_load(s_sift_t *s)
{
    memset(s, 0, sizeof *s);
    snprintf(s->path, sizeof s->path, "%s/siftsmall/siftsmall_base.fvecs", s_datasets());
    if (access(s->path, R_OK) != 0)
        return 0;
    char path[1024];
    shoal_err_t err;
    size_t qdim = 0, gn = 0;
    s->base = vecfile_load_f32(s->path, &s->n, &s->dim, &err);
    cr_assert_not_null(s->base, "%s", err.msg);
    snprintf(path, sizeof path, "%s/siftsmall/siftsmall_query.fvecs", s_datasets());
    s->queries = vecfile_load_f32(path, &s->nq, &qdim, &err);
    cr_assert_not_null(s->queries, "%s", err.msg);
    snprintf(path, sizeof path, "%s/siftsmall/siftsmall_groundtruth.ivecs", s_datasets());
    s->gt = vecfile_load_i32(path, &gn, &s->gdim, &err);
    cr_assert_not_null(s->gt, "%s", err.msg);
    cr_assert_eq(qdim, s->dim);
    cr_assert_eq(gn, s->nq);
    return 1;
}

TestSuite(store, .init = s_mkdir_tmp, .fini = s_rm_tmp);

/* ------------------------------------------------------------------------ */
/* Round trips                                                              */
/* ------------------------------------------------------------------------ */

Test(store, create_insert_search_get_in_every_mode)
{
    const size_t n = 3000, dim = 16, k = 5;
    shard_store_t *st = s_open();
    s_create(st, "docs", dim, SHOAL_METRIC_L2);
    float *v = s_data(n, dim, DATAGEN_STREAM_BASE, 0);
    uint64_t *ids = s_seq_ids(n, 1000);
    for (size_t b = 0; b < n; b += 500)
        s_insert(st, "docs", ids + b, v + b * dim, 500, dim);

    cr_assert_eq(s_stats(st, "docs").count, n);
    size_t got_dim = 0;
    cr_assert_eq(shard_store_dim(st, "docs", &got_dim, NULL), 0);
    cr_assert_eq(got_dim, dim);

    /* Stored vectors as queries: each finds itself first, at distance 0. */
    const size_t nq = 40;
    uint64_t rid[40 * 5];
    float rd[40 * 5];
    const wire_mode_t modes[3] = {WIRE_MODE_HNSW, WIRE_MODE_EXACT, WIRE_MODE_AUTO};
    for (int m = 0; m < 3; m++) {
        wire_mode_t used = (wire_mode_t)-1;
        s_search(st, "docs", v + 100 * dim, nq, dim, k, modes[m], 0, NULL, 0, rid, rd, &used);
        if (modes[m] != WIRE_MODE_AUTO)
            cr_assert_eq(used, modes[m]);
        else
            cr_assert(used == WIRE_MODE_HNSW || used == WIRE_MODE_EXACT);
        for (size_t q = 0; q < nq; q++) {
            cr_assert_eq(rid[q * k], 1100 + q, "mode %d query %zu: got id %llu", modes[m], q,
                         (unsigned long long)rid[q * k]);
            cr_assert_float_eq(rd[q * k], 0.0f, 1e-3);
            for (size_t j = 1; j < k; j++)
                cr_assert_leq(rd[q * k + j - 1], rd[q * k + j]);
        }
    }

    /* get: found flags and the exact floats; absent ids give zeros. */
    uint64_t gids[3] = {1000, 999999, 1000 + n - 1};
    uint8_t found[3];
    float out[3 * 16];
    cr_assert_eq(shard_store_get(st, "docs", gids, 3, found, out, NULL), 0);
    cr_assert_eq(found[0], 1);
    cr_assert_eq(found[1], 0);
    cr_assert_eq(found[2], 1);
    cr_assert_eq(memcmp(out, v, dim * sizeof(float)), 0);
    cr_assert_eq(memcmp(out + 2 * dim, v + (n - 1) * dim, dim * sizeof(float)), 0);
    for (size_t j = 0; j < dim; j++)
        cr_assert_eq(out[dim + j], 0.0f);

    /* k larger than the collection pads. */
    shard_store_t *st2 = st;
    s_create(st2, "tiny", 4, SHOAL_METRIC_L2);
    float tv[8] = {1, 0, 0, 0, 0, 1, 0, 0};
    uint64_t tid[2] = {1, 2};
    s_insert(st2, "tiny", tid, tv, 2, 4);
    uint64_t pid[4];
    float pd[4];
    for (int m = 0; m < 3; m++) {
        s_search(st2, "tiny", tv, 1, 4, 4, modes[m], 0, NULL, 0, pid, pd, NULL);
        cr_assert_eq(pid[0], 1);
        cr_assert_eq(pid[1], 2);
        cr_assert_eq(pid[2], TOPK_ID_NONE);
        cr_assert(isinf(pd[3]));
    }
    shard_store_close(&st);
    cr_assert_null(st);
    free(v);
    free(ids);
}

Test(store, errors_name_the_problem)
{
    shard_store_t *st = s_open();
    shoal_err_t err;
    const size_t dim = 8;
    s_create(st, "a", dim, SHOAL_METRIC_L2);
    float v[4 * 8];
    for (size_t i = 0; i < 4 * dim; i++)
        v[i] = (float)i;
    uint64_t ids[4] = {1, 2, 3, 4};
    uint64_t rid[4];
    float rd[4];
    uint8_t found[4];

    /* Unknown collection, on every entry point. */
    cr_assert_eq(shard_store_insert(st, "nope", ids, v, 4, dim, NULL, &err), SHOAL_ENOTFOUND);
    cr_assert(strstr(err.msg, "\"nope\""), "%s", err.msg);
    cr_assert_eq(shard_store_search(st, "nope", v, 1, dim, 1, WIRE_MODE_AUTO, 0, NULL, 0, rid, rd,
                                    NULL, &err),
                 SHOAL_ENOTFOUND);
    cr_assert_eq(shard_store_get(st, "nope", ids, 1, found, v, &err), SHOAL_ENOTFOUND);
    cr_assert_eq(shard_store_delete(st, "nope", ids, 1, NULL, NULL, &err), SHOAL_ENOTFOUND);
    cr_assert_eq(shard_store_drop(st, "nope", &err), SHOAL_ENOTFOUND);
    cr_assert_eq(shard_store_checkpoint(st, "nope", &err), SHOAL_ENOTFOUND);
    shard_coll_stats_t *sv = NULL;
    size_t sc = 0;
    cr_assert_eq(shard_store_stats(st, "nope", &sv, &sc, &err), SHOAL_ENOTFOUND);

    /* Dimension mismatch names both. */
    cr_assert_eq(shard_store_insert(st, "a", ids, v, 1, 96, NULL, &err), SHOAL_EDIM);
    cr_assert(strstr(err.msg, "expected dim 8, got 96"), "%s", err.msg);
    cr_assert(strstr(err.msg, "\"a\""), "%s", err.msg);
    cr_assert_eq(
        shard_store_search(st, "a", v, 1, 4, 1, WIRE_MODE_HNSW, 0, NULL, 0, rid, rd, NULL, &err),
        SHOAL_EDIM);
    cr_assert(strstr(err.msg, "expected dim 8, got 4"), "%s", err.msg);

    /* A NaN in row 2 refuses the whole batch and names row and column. */
    v[2 * dim + 5] = NAN;
    cr_assert_eq(shard_store_insert(st, "a", ids, v, 4, dim, NULL, &err), SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "row 2 column 5"), "%s", err.msg);
    cr_assert_eq(s_stats(st, "a").count, 0);
    cr_assert_eq(s_stats(st, "a").last_seq, 0);
    v[2 * dim + 5] = INFINITY;
    cr_assert_eq(
        shard_store_search(st, "a", v, 4, dim, 1, WIRE_MODE_EXACT, 0, NULL, 0, rid, rd, NULL, &err),
        SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "query 2"), "%s", err.msg);
    v[2 * dim + 5] = 1.0f;

    /* Reserved id, k, ef, names, metric. */
    uint64_t bad_id = UINT64_MAX;
    cr_assert_eq(shard_store_insert(st, "a", &bad_id, v, 1, dim, NULL, &err), SHOAL_EINVAL);
    cr_assert_eq(
        shard_store_search(st, "a", v, 1, dim, 0, WIRE_MODE_AUTO, 0, NULL, 0, rid, rd, NULL, &err),
        SHOAL_EINVAL);
    cr_assert_eq(shard_store_search(st, "a", v, 1, dim, 1, WIRE_MODE_AUTO, 1000000, NULL, 0, rid,
                                    rd, NULL, &err),
                 SHOAL_ELIMIT);
    cr_assert_eq(shard_store_create(st, "a", dim, SHOAL_METRIC_L2, 0, 0, &err), SHOAL_EEXIST);
    cr_assert(strstr(err.msg, "\"a\""), "%s", err.msg);
    cr_assert_eq(shard_store_create(st, "bad/name", dim, SHOAL_METRIC_L2, 0, 0, &err),
                 SHOAL_EINVAL);
    cr_assert_eq(shard_store_create(st, "", dim, SHOAL_METRIC_L2, 0, 0, &err), SHOAL_EINVAL);
    cr_assert_eq(shard_store_create(st, "d0", 0, SHOAL_METRIC_L2, 0, 0, &err), SHOAL_EINVAL);
    cr_assert_eq(shard_store_create(st, "m1", 4, SHOAL_METRIC_L2, 1, 0, &err), SHOAL_EINVAL);
    cr_assert_eq(shard_store_create(st, "x", 4, (shoal_metric_t)9, 0, 0, &err), SHOAL_EINVAL);

    /* Cosine: a zero vector has no direction, as data or as a query. */
    s_create(st, "cos", 4, SHOAL_METRIC_COSINE);
    float zero[8] = {1, 2, 3, 4, 0, 0, 0, 0};
    uint64_t zid[2] = {1, 2};
    cr_assert_eq(shard_store_insert(st, "cos", zid, zero, 2, 4, NULL, &err), SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "row 1"), "%s", err.msg);
    cr_assert_eq(shard_store_search(st, "cos", zero + 4, 1, 4, 1, WIRE_MODE_HNSW, 0, NULL, 0, rid,
                                    rd, NULL, &err),
                 SHOAL_EINVAL);

    /* An empty batch is fine and writes nothing. */
    uint64_t seq = 99;
    cr_assert_eq(shard_store_insert(st, "a", ids, v, 0, dim, &seq, &err), 0);
    cr_assert_eq(seq, 0);
    shard_store_close(&st);
}

Test(store, exact_mode_recall_is_one)
{
    const size_t n = 4000, dim = 32, nq = 60, k = 10;
    const shoal_metric_t metrics[3] = {SHOAL_METRIC_L2, SHOAL_METRIC_IP, SHOAL_METRIC_COSINE};
    const char *names[3] = {"l2", "ip", "cos"};
    shard_store_t *st = s_open();
    float *base = s_data(n, dim, DATAGEN_STREAM_BASE, 0);
    float *qs = s_data(nq, dim, DATAGEN_STREAM_QUERY, 0);
    uint64_t *ids = s_seq_ids(n, 0);
    uint64_t *got = malloc(nq * k * sizeof *got), *truth = malloc(nq * k * sizeof *truth);
    float *gd = malloc(nq * k * sizeof *gd);
    int32_t *truth32 = malloc(nq * k * sizeof *truth32);
    for (int m = 0; m < 3; m++) {
        s_create(st, names[m], dim, metrics[m]);
        s_insert(st, names[m], ids, base, n, dim);
        cr_assert_eq(gt_knn(base, n, qs, nq, dim, metrics[m], k, S_THREADS, truth, NULL, NULL), 0);
        for (size_t i = 0; i < nq * k; i++)
            truth32[i] = (int32_t)truth[i];
        wire_mode_t used;
        s_search(st, names[m], qs, nq, dim, k, WIRE_MODE_EXACT, 0, NULL, 0, got, gd, &used);
        cr_assert_eq(used, WIRE_MODE_EXACT);
        double r = gt_recall(got, k, truth32, k, nq, k);
        cr_assert_float_eq(r, 1.0, 1e-12, "%s: exact recall %.4f", names[m], r);
        /* The graph is approximate but good here. */
        s_search(st, names[m], qs, nq, dim, k, WIRE_MODE_HNSW, 128, NULL, 0, got, gd, &used);
        r = gt_recall(got, k, truth32, k, nq, k);
        cr_assert_geq(r, 0.9, "%s: hnsw recall %.4f", names[m], r);
    }
    shard_store_close(&st);
    free(base);
    free(qs);
    free(ids);
    free(got);
    free(truth);
    free(truth32);
    free(gd);
}

Test(store, delete_skips_absent_and_is_never_returned)
{
    const size_t n = 2000, dim = 16, k = 10;
    shard_store_t *st = s_open();
    s_create(st, "d", dim, SHOAL_METRIC_L2);
    float *v = s_data(n, dim, DATAGEN_STREAM_BASE, 0);
    uint64_t *ids = s_seq_ids(n, 0);
    s_insert(st, "d", ids, v, n, dim);

    /* Even ids below 1000, plus absent ids and a repeat. */
    uint64_t del[503];
    size_t nd = 0;
    for (uint64_t i = 0; i < 1000; i += 2)
        del[nd++] = i;
    del[nd++] = 5000000;
    del[nd++] = 0;
    del[nd++] = 7777777;
    size_t deleted = 0;
    uint64_t seq = 0;
    shoal_err_t err;
    cr_assert_eq(shard_store_delete(st, "d", del, nd, &deleted, &seq, &err), 0, "%s", err.msg);
    cr_assert_eq(deleted, 500);
    cr_assert_gt(seq, 0);
    shard_coll_stats_t s = s_stats(st, "d");
    cr_assert_eq(s.count, n - 500);
    cr_assert_eq(s.deleted, 500);
    /* Deleting them again removes nothing and writes nothing. */
    uint64_t seq2 = 0;
    cr_assert_eq(shard_store_delete(st, "d", del, nd, &deleted, &seq2, &err), 0);
    cr_assert_eq(deleted, 0);
    cr_assert_eq(seq2, seq);

    uint64_t *rid = malloc(200 * k * sizeof *rid);
    float *rd = malloc(200 * k * sizeof *rd);
    for (int m = 0; m < 2; m++) {
        wire_mode_t mode = m ? WIRE_MODE_EXACT : WIRE_MODE_HNSW;
        s_search(st, "d", v, 200, dim, k, mode, 0, NULL, 0, rid, rd, NULL);
        for (size_t i = 0; i < 200 * k; i++)
            cr_assert(rid[i] >= 1000 || rid[i] % 2 == 1, "mode %d returned deleted id %llu", mode,
                      (unsigned long long)rid[i]);
    }
    uint8_t found[2];
    float out[2 * 16];
    uint64_t g[2] = {4, 5};
    shard_store_get(st, "d", g, 2, found, out, NULL);
    cr_assert_eq(found[0], 0);
    cr_assert_eq(found[1], 1);
    shard_store_close(&st);
    free(v);
    free(ids);
    free(rid);
    free(rd);
}

Test(store, upsert_replaces)
{
    const size_t dim = 4;
    shard_store_t *st = s_open();
    s_create(st, "u", dim, SHOAL_METRIC_L2);
    float a[4] = {1, 2, 3, 4}, b[4] = {-5, 6, -7, 8};
    uint64_t id = 7;
    s_insert(st, "u", &id, a, 1, dim);
    s_insert(st, "u", &id, b, 1, dim);
    /* Within one batch the last row of an id wins. */
    float two[8] = {9, 9, 9, 9, 0.5f, 0.25f, 0.125f, 1};
    uint64_t twice[2] = {8, 8};
    s_insert(st, "u", twice, two, 2, dim);
    cr_assert_eq(s_stats(st, "u").count, 2);

    uint8_t found[2];
    float out[8];
    uint64_t g[2] = {7, 8};
    shard_store_get(st, "u", g, 2, found, out, NULL);
    cr_assert_eq(memcmp(out, b, sizeof b), 0);
    cr_assert_eq(memcmp(out + 4, two + 4, 4 * sizeof(float)), 0);
    uint64_t rid[2];
    float rd[2];
    for (int m = 0; m < 2; m++) {
        s_search(st, "u", b, 1, dim, 2, m ? WIRE_MODE_EXACT : WIRE_MODE_HNSW, 0, NULL, 0, rid, rd,
                 NULL);
        cr_assert_eq(rid[0], 7);
        cr_assert_float_eq(rd[0], 0.0f, 1e-6);
    }
    /* Replayed after an abandon, the last write still wins. */
    shard_store_abandon(&st);
    st = s_open();
    shard_store_get(st, "u", g, 2, found, out, NULL);
    cr_assert_eq(found[0], 1);
    cr_assert_eq(memcmp(out, b, sizeof b), 0);
    cr_assert_eq(memcmp(out + 4, two + 4, 4 * sizeof(float)), 0);
    cr_assert_eq(s_stats(st, "u").count, 2);
    shard_store_close(&st);
}

Test(store, filter_returns_only_allowed_ids)
{
    const size_t n = 5000, dim = 16, nq = 30, k = 10;
    shard_store_t *st = s_open();
    s_create(st, "f", dim, SHOAL_METRIC_L2);
    float *v = s_data(n, dim, DATAGEN_STREAM_BASE, 0);
    float *qs = s_data(nq, dim, DATAGEN_STREAM_QUERY, 0);
    uint64_t *ids = s_seq_ids(n, 0);
    s_insert(st, "f", ids, v, n, dim);

    /* Every 25th id (200 of them), repeated, plus ids that do not exist. */
    size_t nf = 0;
    uint64_t *filter = malloc(1000 * sizeof *filter);
    for (uint64_t i = 0; i < n; i += 25)
        filter[nf++] = i;
    filter[nf++] = 25;
    filter[nf++] = 123456789;

    /* Brute force over the allowed rows. */
    size_t nsub = 0;
    float *sub = malloc(n * dim * sizeof *sub);
    for (size_t i = 0; i < n; i += 25)
        memcpy(sub + nsub++ * dim, v + i * dim, dim * sizeof(float));
    uint64_t *truth = malloc(nq * k * sizeof *truth);
    int32_t *truth32 = malloc(nq * k * sizeof *truth32);
    cr_assert_eq(gt_knn(sub, nsub, qs, nq, dim, SHOAL_METRIC_L2, k, S_THREADS, truth, NULL, NULL),
                 0);
    for (size_t i = 0; i < nq * k; i++)
        truth32[i] = (int32_t)(truth[i] * 25);

    uint64_t *rid = malloc(nq * k * sizeof *rid);
    float *rd = malloc(nq * k * sizeof *rd);
    const wire_mode_t modes[3] = {WIRE_MODE_HNSW, WIRE_MODE_EXACT, WIRE_MODE_AUTO};
    for (int m = 0; m < 3; m++) {
        wire_mode_t used;
        s_search(st, "f", qs, nq, dim, k, modes[m], 200, filter, nf, rid, rd, &used);
        for (size_t i = 0; i < nq * k; i++)
            cr_assert(rid[i] != TOPK_ID_NONE && rid[i] % 25 == 0, "mode %d: id %llu is not allowed",
                      modes[m], (unsigned long long)rid[i]);
        double r = gt_recall(rid, k, truth32, k, nq, k);
        if (used == WIRE_MODE_EXACT)
            cr_assert_float_eq(r, 1.0, 1e-12, "mode %d (exact): recall %.4f", modes[m], r);
        else
            cr_assert_geq(r, 0.8, "mode %d (hnsw): recall %.4f", modes[m], r);
    }
    /* A short allow-list in auto mode runs exact over it. */
    wire_mode_t used;
    s_search(st, "f", qs, nq, dim, k, WIRE_MODE_AUTO, 0, filter, nf, rid, rd, &used);
    cr_assert_eq(used, WIRE_MODE_EXACT);
    /* An allow-list of absent ids finds nothing. */
    uint64_t none[2] = {99999999, 88888888};
    s_search(st, "f", qs, 1, dim, k, WIRE_MODE_EXACT, 0, none, 2, rid, rd, NULL);
    cr_assert_eq(rid[0], TOPK_ID_NONE);
    shard_store_close(&st);
    free(v);
    free(qs);
    free(ids);
    free(filter);
    free(sub);
    free(truth);
    free(truth32);
    free(rid);
    free(rd);
}

Test(store, drop_then_recreate)
{
    shard_store_t *st = s_open();
    s_create(st, "x", 8, SHOAL_METRIC_L2);
    float *v = s_data(300, 8, DATAGEN_STREAM_BASE, 0);
    uint64_t *ids = s_seq_ids(300, 0);
    s_insert(st, "x", ids, v, 300, 8);
    cr_assert_eq(shard_store_checkpoint(st, "x", NULL), 0);
    s_insert(st, "x", ids, v, 10, 8);
    shoal_err_t err;
    cr_assert_eq(shard_store_drop(st, "x", &err), 0, "%s", err.msg);
    uint64_t rid[1];
    float rd[1];
    cr_assert_eq(
        shard_store_search(st, "x", v, 1, 8, 1, WIRE_MODE_AUTO, 0, NULL, 0, rid, rd, NULL, &err),
        SHOAL_ENOTFOUND);
    /* Same name, other shape: nothing of the old one comes back. */
    s_create(st, "x", 4, SHOAL_METRIC_COSINE);
    cr_assert_eq(s_stats(st, "x").count, 0);
    float *w = s_data(50, 4, DATAGEN_STREAM_BASE, 1);
    s_insert(st, "x", ids, w, 50, 4);
    shard_store_close(&st);

    st = s_open();
    shard_coll_stats_t s = s_stats(st, "x");
    cr_assert_eq(s.dim, 4);
    cr_assert_eq(s.metric, SHOAL_METRIC_COSINE);
    cr_assert_eq(s.count, 50);
    cr_assert_eq(s.loaded_from_checkpoint, 1);
    shard_coll_stats_t *all = NULL;
    size_t count = 0;
    cr_assert_eq(shard_store_stats(st, NULL, &all, &count, NULL), 0);
    cr_assert_eq(count, 1);
    free(all);
    cr_assert_eq(shard_store_drop(st, "x", NULL), 0);
    shard_store_close(&st);
    st = s_open();
    cr_assert_eq(shard_store_stats(st, "", &all, &count, NULL), 0);
    cr_assert_eq(count, 0);
    free(all);
    shard_store_close(&st);
    free(v);
    free(w);
    free(ids);
}

/* ------------------------------------------------------------------------ */
/* Persistence                                                              */
/* ------------------------------------------------------------------------ */

Test(store, abandon_replays_the_log)
{
    const size_t n = 2000, dim = 24;
    shard_store_t *st = s_open();
    s_create(st, "r", dim, SHOAL_METRIC_L2);
    s_create(st, "other", 4, SHOAL_METRIC_IP);
    float *v = s_data(n + 500, dim, DATAGEN_STREAM_BASE, 0);
    uint64_t *ids = s_seq_ids(n + 500, 0);
    for (size_t b = 0; b < n; b += 250)
        s_insert(st, "r", ids + b, v + b * dim, 250, dim);
    shoal_err_t err;
    cr_assert_eq(shard_store_checkpoint(st, NULL, &err), 0, "%s", err.msg);
    uint64_t ckpt_seq = s_stats(st, "r").checkpoint_seq;
    cr_assert_gt(ckpt_seq, 0);

    /* After the checkpoint: new ids, an upsert of old ones with new values
     * (the vectors of rows n.. under ids 0..99), deletes of old and new ids,
     * and a re-insert of a deleted id. */
    s_insert(st, "r", ids + n, v + n * dim, 400, dim);
    s_insert(st, "r", ids, v + (n + 400) * dim, 100, dim);
    uint64_t del[60];
    for (size_t i = 0; i < 50; i++)
        del[i] = 1000 + i; /* in the checkpoint */
    for (size_t i = 0; i < 10; i++)
        del[50 + i] = n + i; /* written after it */
    size_t deleted = 0;
    cr_assert_eq(shard_store_delete(st, "r", del, 60, &deleted, NULL, &err), 0, "%s", err.msg);
    cr_assert_eq(deleted, 60);
    s_insert(st, "r", &ids[1000], v + 1000 * dim, 1, dim);
    float o[4] = {1, 2, 3, 4};
    uint64_t oid = 1;
    s_insert(st, "other", &oid, o, 1, 4);
    size_t expect = n + 400 - 60 + 1;
    cr_assert_eq(s_stats(st, "r").count, expect);
    uint64_t last = s_stats(st, "r").last_seq;
    shard_store_abandon(&st);

    st = s_open();
    shard_coll_stats_t s = s_stats(st, "r");
    cr_assert_eq(s.loaded_from_checkpoint, 1);
    cr_assert_eq(s.replayed, 4, "replayed %zu entries, expected 4", s.replayed);
    cr_assert_eq(s.count, expect);
    cr_assert_eq(s.checkpoint_seq, ckpt_seq);
    cr_assert_geq(s.last_seq, last - 1);
    shard_coll_stats_t so = s_stats(st, "other");
    cr_assert_eq(so.count, 1);
    cr_assert_eq(so.loaded_from_checkpoint, 1);

    /* Every acknowledged id is there with its last vector; deleted ones not. */
    size_t total = n + 400;
    uint8_t *found = malloc(total);
    float *out = malloc(total * dim * sizeof *out);
    cr_assert_eq(shard_store_get(st, "r", ids, total, found, out, NULL), 0);
    for (size_t i = 0; i < total; i++) {
        int is_deleted = (i > 1000 && i < 1050) || (i >= n && i < n + 10);
        cr_assert_eq(found[i], !is_deleted, "id %zu found %d", i, found[i]);
        if (is_deleted)
            continue;
        const float *want = i < 100 ? v + (n + 400 + i) * dim : v + i * dim;
        cr_assert_eq(memcmp(out + i * dim, want, dim * sizeof(float)), 0, "id %zu differs", i);
    }
    /* The graph agrees: each live vector finds itself. */
    uint64_t rid[1];
    float rd[1];
    for (size_t i = 0; i < total; i += 37) {
        if (!found[i])
            continue;
        s_search(st, "r", out + i * dim, 1, dim, 1, WIRE_MODE_HNSW, 64, NULL, 0, rid, rd, NULL);
        cr_assert_eq(rid[0], i);
    }
    /* Writes continue after the replay and survive a clean close. */
    s_insert(st, "r", &ids[n + 450], v + (n + 450) * dim, 1, dim);
    shard_store_close(&st);
    st = s_open();
    s = s_stats(st, "r");
    cr_assert_eq(s.count, expect + 1);
    cr_assert_eq(s.replayed, 0);
    cr_assert_eq(s.loaded_from_checkpoint, 1);
    shard_store_close(&st);
    free(found);
    free(out);
    free(v);
    free(ids);
}

/* Damages collection name's checkpoint: how = 0 flips a bit of its first
 * chunk, 1 a bit of the header's CRC, 2 sets the header's seq past the
 * store's. */
static void s_corrupt_checkpoint(const char *name, int how)
{
    int header = how != 0;
    shoal_err_t err;
    kv_t *kv = kv_open(s_dir, 0, &err);
    cr_assert_not_null(kv, "kv_open: %s", err.msg);
    char prefix[80];
    size_t plen = (size_t)snprintf(prefix, sizeof prefix, "K/%s", name) + 1; /* with the NUL */
    kv_iter_t *it = kv_iter_new(kv, prefix, plen, &err);
    cr_assert_not_null(it);
    int done = 0;
    for (; kv_iter_valid(it) && !done; kv_iter_next(it)) {
        size_t klen = 0, vlen = 0;
        const void *key = kv_iter_key(it, &klen);
        const void *val = kv_iter_value(it, &vlen);
        if ((klen == plen) != (header != 0))
            continue;
        uint8_t *copy = malloc(vlen);
        memcpy(copy, val, vlen);
        if (how == 1)
            copy[24] ^= 0x5a; /* a byte of the CRC-32 */
        else if (how == 2)
            copy[13] = 0x40; /* seq += 2^40 */
        else
            copy[vlen / 2] ^= 0x01;
        char *k = malloc(klen);
        memcpy(k, key, klen);
        cr_assert_eq(kv_put(kv, k, klen, copy, vlen, 1, &err), 0, "%s", err.msg);
        free(copy);
        free(k);
        done = 1;
    }
    cr_assert(done, "no checkpoint %s found for \"%s\"", header ? "header" : "chunk", name);
    kv_iter_destroy(&it);
    kv_close(&kv);
}

Test(store, corrupt_checkpoint_is_rebuilt)
{
    const size_t n = 1500, dim = 16;
    shard_store_t *st = s_open();
    s_create(st, "c", dim, SHOAL_METRIC_L2);
    float *v = s_data(n, dim, DATAGEN_STREAM_BASE, 0);
    uint64_t *ids = s_seq_ids(n, 0);
    s_insert(st, "c", ids, v, n, dim);
    shard_store_close(&st);

    for (int how = 0; how < 3; how++) {
        s_corrupt_checkpoint("c", how);
        shoal_log_set_level(SHOAL_LOG_WARN);
        s_capture_begin();
        st = s_open();
        char *log = s_capture_end();
        cr_assert(strstr(log, "checkpoint not usable"), "no warning logged: %s", log);
        cr_assert(strstr(log, how == 2 ? "beyond the store's last seq" : "CRC-32"), "%s", log);
        free(log);
        shard_coll_stats_t s = s_stats(st, "c");
        cr_assert_eq(s.loaded_from_checkpoint, 0);
        cr_assert_eq(s.count, n);
        uint8_t *found = malloc(n);
        float *out = malloc(n * dim * sizeof *out);
        cr_assert_eq(shard_store_get(st, "c", ids, n, found, out, NULL), 0);
        for (size_t i = 0; i < n; i++)
            cr_assert_eq(found[i], 1);
        cr_assert_eq(memcmp(out, v, n * dim * sizeof(float)), 0);
        free(found);
        free(out);
        /* The close checkpoints the rebuilt graph; the next open loads it. */
        shard_store_close(&st);
        st = s_open();
        cr_assert_eq(s_stats(st, "c").loaded_from_checkpoint, 1);
        shard_store_close(&st);
    }
    free(v);
    free(ids);
}

Test(store, wrong_format_version_is_refused)
{
    shard_store_t *st = s_open();
    s_create(st, "a", 4, SHOAL_METRIC_L2);
    shard_store_close(&st);

    shoal_err_t err;
    kv_t *kv = kv_open(s_dir, 0, &err);
    cr_assert_not_null(kv);
    void *val = NULL;
    size_t vlen = 0;
    cr_assert_eq(kv_get(kv, "F", 1, &val, &vlen, &err), 0);
    cr_assert_eq(vlen, 24);
    cr_assert_eq(memcmp(val, "SHOALDB1", 8), 0);
    uint32_t version = 99;
    memcpy((uint8_t *)val + 8, &version, 4);
    cr_assert_eq(kv_put(kv, "F", 1, val, vlen, 1, &err), 0);
    free(val);
    kv_close(&kv);

    shard_store_opts_t o = s_opts();
    st = shard_store_open(&o, &err);
    cr_assert_null(st);
    cr_assert_eq(err.code, SHOAL_EUNSUPPORTED);
    cr_assert(strstr(err.msg, "version 99"), "%s", err.msg);
    cr_assert(strstr(err.msg, "version 1"), "%s", err.msg);

    /* A data dir whose parents do not exist yet is created. */
    char nested[1200];
    snprintf(nested, sizeof nested, "%s/a/b/c", s_dir);
    o.data_dir = nested;
    st = shard_store_open(&o, &err);
    cr_assert_not_null(st, "%s", err.msg);
    shard_store_close(&st);
    o.data_dir = s_dir;

    /* A RocksDB that shoal did not write is refused too. */
    s_rm_tmp();
    s_mkdir_tmp();
    kv = kv_open(s_dir, 1, &err);
    cr_assert_not_null(kv);
    cr_assert_eq(kv_put(kv, "hello", 5, "world", 5, 1, &err), 0);
    kv_close(&kv);
    st = shard_store_open(&o, &err);
    cr_assert_null(st);
    cr_assert_eq(err.code, SHOAL_EFORMAT, "%s", err.msg);
}

Test(store, background_checkpoint_runs)
{
    shard_store_opts_t o = s_opts();
    o.checkpoint_every = 200;
    o.checkpoint_secs = 0.2;
    shard_store_t *st = s_open_with(&o);
    s_create(st, "b", 8, SHOAL_METRIC_L2);
    float *v = s_data(600, 8, DATAGEN_STREAM_BASE, 0);
    uint64_t *ids = s_seq_ids(600, 0);
    for (size_t b = 0; b < 600; b += 100)
        s_insert(st, "b", ids + b, v + b * 8, 100, 8);
    uint64_t last = s_stats(st, "b").last_seq;
    double t0 = s_now();
    while (s_stats(st, "b").checkpoint_seq < last && s_now() - t0 < 20)
        nanosleep(&(struct timespec){.tv_nsec = 20000000}, NULL);
    cr_assert_eq(s_stats(st, "b").checkpoint_seq, last);
    /* The background checkpoint is what the next open loads. */
    shard_store_abandon(&st);
    st = s_open();
    shard_coll_stats_t s = s_stats(st, "b");
    cr_assert_eq(s.loaded_from_checkpoint, 1);
    cr_assert_eq(s.replayed, 0);
    cr_assert_eq(s.count, 600);
    shard_store_close(&st);
    free(v);
    free(ids);
}

/* ------------------------------------------------------------------------ */
/* siftsmall                                                                */
/* ------------------------------------------------------------------------ */

Test(store, siftsmall_recall_and_reopen)
{
    s_sift_t sift;
    if (!s_sift_load(&sift)) {
        cr_skip_test("%s not found (set SHOAL_DATASETS to the shared datasets folder): "
                     "siftsmall recall and reopen not checked",
                     sift.path);
        return;
    }
    float *base = sift.base, *qs = sift.queries;
    int32_t *gt = sift.gt;
    size_t n = sift.n, dim = sift.dim, nq = sift.nq, gdim = sift.gdim;
    const size_t k = 10;

    shard_store_opts_t o = s_opts();
    o.hnsw_ef_construction = 200;
    shard_store_t *st = s_open_with(&o);
    s_create(st, "sift", dim, SHOAL_METRIC_L2);
    uint64_t *ids = s_seq_ids(n, 0);
    double t0 = s_now();
    for (size_t b = 0; b < n; b += 1000) {
        size_t m = n - b < 1000 ? n - b : 1000;
        s_insert(st, "sift", ids + b, base + b * dim, m, dim);
    }
    double t_insert = s_now() - t0;

    uint64_t *rid = malloc(nq * k * sizeof *rid), *rid2 = malloc(nq * k * sizeof *rid2);
    float *rd = malloc(nq * k * sizeof *rd), *rd2 = malloc(nq * k * sizeof *rd2);
    s_search(st, "sift", qs, nq, dim, k, WIRE_MODE_EXACT, 0, NULL, 0, rid, rd, NULL);
    double r_exact = gt_recall(rid, k, gt, gdim, nq, k);
    cr_assert_float_eq(r_exact, 1.0, 1e-12, "exact recall@10 %.4f", r_exact);
    s_search(st, "sift", qs, nq, dim, k, WIRE_MODE_HNSW, 128, NULL, 0, rid, rd, NULL);
    double r_hnsw = gt_recall(rid, k, gt, gdim, nq, k);
    cr_assert_geq(r_hnsw, 0.95, "hnsw recall@10 %.4f < 0.95", r_hnsw);

    t0 = s_now();
    shard_store_close(&st);
    double t_close = s_now() - t0;

    /* Reopen: the graph comes from the checkpoint; results are identical. */
    t0 = s_now();
    st = s_open_with(&o);
    double t_load = s_now() - t0;
    shard_coll_stats_t s = s_stats(st, "sift");
    cr_assert_eq(s.loaded_from_checkpoint, 1);
    cr_assert_eq(s.replayed, 0);
    cr_assert_eq(s.count, n);
    s_search(st, "sift", qs, nq, dim, k, WIRE_MODE_HNSW, 128, NULL, 0, rid2, rd2, NULL);
    cr_assert_eq(memcmp(rid, rid2, nq * k * sizeof *rid), 0, "ids differ after reopen");
    cr_assert_eq(memcmp(rd, rd2, nq * k * sizeof *rd), 0, "distances differ after reopen");
    shard_store_abandon(&st);

    /* The same data dir without a usable checkpoint: a full rebuild. */
    s_corrupt_checkpoint("sift", 1);
    shoal_log_set_level(SHOAL_LOG_ERROR);
    t0 = s_now();
    st = s_open_with(&o);
    double t_rebuild = s_now() - t0;
    s = s_stats(st, "sift");
    cr_assert_eq(s.loaded_from_checkpoint, 0);
    s_search(st, "sift", qs, nq, dim, k, WIRE_MODE_HNSW, 128, NULL, 0, rid2, rd2, NULL);
    double r_rebuilt = gt_recall(rid2, k, gt, gdim, nq, k);
    cr_assert_geq(r_rebuilt, 0.95, "rebuilt hnsw recall@10 %.4f", r_rebuilt);
    shard_store_abandon(&st);

    cr_log_info("siftsmall: insert %.2f s (10 batches), recall@10 hnsw %.4f exact %.4f; "
                "close (checkpoint) %.3f s; open from checkpoint %.3f s; open with rebuild "
                "%.3f s (%.1fx)",
                t_insert, r_hnsw, r_exact, t_close, t_load, t_rebuild, t_rebuild / t_load);
    fprintf(stderr,
            "test_store: siftsmall open from checkpoint %.3f s, open with rebuild %.3f s "
            "(%.1fx); insert %.2f s; close %.3f s\n",
            t_load, t_rebuild, t_rebuild / t_load, t_insert, t_close);
    free(base);
    free(qs);
    free(gt);
    free(ids);
    free(rid);
    free(rid2);
    free(rd);
    free(rd2);
}

/* ------------------------------------------------------------------------ */
/* Checkpoint layout and concurrency                                        */
/* ------------------------------------------------------------------------ */

/* Keys under prefix (plen bytes) whose length is klen (0: any). */
static size_t s_count_keys(const char *prefix, size_t plen, size_t klen)
{
    shoal_err_t err;
    kv_t *kv = kv_open(s_dir, 0, &err);
    cr_assert_not_null(kv, "%s", err.msg);
    kv_iter_t *it = kv_iter_new(kv, prefix, plen, &err);
    size_t n = 0;
    for (; kv_iter_valid(it); kv_iter_next(it)) {
        size_t len = 0;
        kv_iter_key(it, &len);
        n += klen == 0 || len == klen;
    }
    kv_iter_destroy(&it);
    kv_close(&kv);
    return n;
}

Test(store, checkpoint_in_many_chunks_replaces_the_old_one)
{
    const size_t n = 1200, dim = 8;
    shard_store_set_chunk_bytes(4096);
    shard_store_t *st = s_open();
    s_create(st, "m", dim, SHOAL_METRIC_L2);
    float *v = s_data(n, dim, DATAGEN_STREAM_BASE, 0);
    uint64_t *ids = s_seq_ids(n, 0);
    for (size_t b = 0; b < n / 2; b += 100)
        s_insert(st, "m", ids + b, v + b * dim, 100, dim);
    cr_assert_eq(shard_store_checkpoint(st, "m", NULL), 0);
    for (size_t b = n / 2; b < n; b += 100)
        s_insert(st, "m", ids + b, v + b * dim, 100, dim);
    uint64_t del = 3;
    cr_assert_eq(shard_store_delete(st, "m", &del, 1, NULL, NULL, NULL), 0);
    uint64_t rid[20];
    float rd[20], rd2[20];
    s_search(st, "m", v, 2, dim, 10, WIRE_MODE_HNSW, 0, NULL, 0, rid, rd, NULL);
    /* Close writes the second checkpoint under the other chunk base. */
    shard_store_close(&st);

    /* Exactly the new chunks remain, and no covered log entry. */
    size_t hlen = 2 + 1 + 1; /* "K/m\0" */
    size_t nchunks = s_count_keys("K/m", hlen, hlen + 4);
    cr_assert_gt(nchunks, 10, "only %zu chunks of 4096 bytes", nchunks);
    cr_assert_eq(s_count_keys("K/m", hlen, hlen), 1);
    cr_assert_eq(s_count_keys("L/m", hlen, 0), 0);

    st = s_open();
    shard_coll_stats_t s = s_stats(st, "m");
    cr_assert_eq(s.loaded_from_checkpoint, 1);
    cr_assert_eq(s.replayed, 0);
    cr_assert_eq(s.count, n - 1);
    uint64_t rid2[20];
    s_search(st, "m", v, 2, dim, 10, WIRE_MODE_HNSW, 0, NULL, 0, rid2, rd2, NULL);
    cr_assert_eq(memcmp(rid, rid2, sizeof rid), 0);
    cr_assert_eq(memcmp(rd, rd2, sizeof rd), 0);
    /* A missing chunk is detected like a damaged one. */
    shard_store_abandon(&st);
    shoal_err_t err;
    kv_t *kv = kv_open(s_dir, 0, &err);
    kv_iter_t *it = kv_iter_new(kv, "K/m", hlen, &err);
    kv_iter_next(it); /* past the header */
    kv_iter_next(it); /* second chunk */
    size_t klen = 0;
    const void *key = kv_iter_key(it, &klen);
    char k[16];
    memcpy(k, key, klen);
    kv_iter_destroy(&it);
    kv_batch_t *b = kv_batch_new();
    kv_batch_delete(b, k, klen);
    cr_assert_eq(kv_write(kv, b, 1, &err), 0);
    kv_batch_destroy(&b);
    kv_close(&kv);
    shoal_log_set_level(SHOAL_LOG_WARN);
    s_capture_begin();
    st = s_open();
    char *log = s_capture_end();
    cr_assert(strstr(log, "chunk 1 of"), "%s", log);
    free(log);
    cr_assert_eq(s_stats(st, "m").loaded_from_checkpoint, 0);
    cr_assert_eq(s_stats(st, "m").count, n - 1);
    shard_store_close(&st);
    shard_store_set_chunk_bytes(0);
    free(v);
    free(ids);
}

typedef struct {
    shard_store_t *st;      /* the store */
    const float *v;         /* vectors that may be present */
    size_t dim;             /* their dim */
    atomic_int stop;        /* set by the writer when done */
    atomic_size_t searches; /* searches completed */
    atomic_int failures;    /* calls that returned an error */
} s_reader_t;

static void *s_reader_main(void *arg)
{
    s_reader_t *r = arg;
    uint64_t rid[8 * 5];
    float rd[8 * 5];
    uint8_t found[4];
    float out[4 * 16];
    uint64_t g[4] = {0, 1, 2, 3};
    const wire_mode_t modes[3] = {WIRE_MODE_HNSW, WIRE_MODE_EXACT, WIRE_MODE_AUTO};
    for (size_t i = 0; !atomic_load(&r->stop); i++) {
        shoal_err_t err;
        uint64_t filter[3] = {1, 2, 500};
        int rc = shard_store_search(r->st, "cc", r->v + (i % 100) * r->dim, 8, r->dim, 5,
                                    modes[i % 3], 0, i % 4 == 0 ? filter : NULL, i % 4 == 0 ? 3 : 0,
                                    rid, rd, NULL, &err);
        rc |= shard_store_get(r->st, "cc", g, 4, found, out, &err);
        shard_coll_stats_t *sv = NULL;
        size_t sc = 0;
        rc |= shard_store_stats(r->st, NULL, &sv, &sc, &err);
        free(sv);
        if (rc && atomic_fetch_add(&r->failures, 1) == 0)
            fprintf(stderr, "reader: %s\n", err.msg);
        atomic_fetch_add(&r->searches, 1);
    }
    return NULL;
}

Test(store, searches_run_during_writes_and_see_them)
{
    const size_t n = 3000, dim = 16;
    shard_store_opts_t o = s_opts();
    o.checkpoint_every = 700; /* the background thread checkpoints meanwhile */
    shard_store_t *st = s_open_with(&o);
    s_create(st, "cc", dim, SHOAL_METRIC_L2);
    float *v = s_data(n, dim, DATAGEN_STREAM_BASE, 0);
    uint64_t *ids = s_seq_ids(n, 0);
    s_insert(st, "cc", ids, v, 100, dim);

    s_reader_t r = {.st = st, .v = v, .dim = dim};
    pthread_t readers[2];
    for (int i = 0; i < 2; i++)
        cr_assert_eq(pthread_create(&readers[i], NULL, s_reader_main, &r), 0);
    for (size_t b = 100; b < n; b += 100) {
        s_insert(st, "cc", ids + b, v + b * dim, 100, dim);
        /* Read-your-writes: the batch's vectors are found as soon as the
         * insert returns, by the graph and by the exact engine. */
        uint64_t rid[2];
        float rd[2];
        s_search(st, "cc", v + (b + 50) * dim, 1, dim, 1, WIRE_MODE_HNSW, 0, NULL, 0, rid, rd,
                 NULL);
        cr_assert_eq(rid[0], b + 50);
        s_search(st, "cc", v + (b + 51) * dim, 1, dim, 1, WIRE_MODE_EXACT, 0, NULL, 0, rid, rd,
                 NULL);
        cr_assert_eq(rid[0], b + 51);
        if (b % 500 == 0) {
            uint64_t del[10];
            for (size_t i = 0; i < 10; i++)
                del[i] = b - 100 + i;
            cr_assert_eq(shard_store_delete(st, "cc", del, 10, NULL, NULL, NULL), 0);
        }
    }
    atomic_store(&r.stop, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(readers[i], NULL);
    cr_assert_eq(atomic_load(&r.failures), 0);
    cr_assert_gt(atomic_load(&r.searches), 0);
    shard_coll_stats_t s = s_stats(st, "cc");
    cr_assert_eq(s.count, n - 10 * (n / 500 - 1 + (n % 500 != 0)));
    cr_assert_gt(s.checkpoint_seq, 0, "the background checkpointer never ran");
    shard_store_close(&st);
    free(v);
    free(ids);
}

/* ------------------------------------------------------------------------ */
/* Bad rows: refused before the write, quarantined at open                  */
/* ------------------------------------------------------------------------ */

Test(store, huge_rows_are_refused_and_nothing_is_written)
{
    const size_t dim = 4;
    shard_store_t *st = s_open();
    s_create(st, "v", dim, SHOAL_METRIC_L2);
    s_create(st, "w", dim, SHOAL_METRIC_IP);
    /* Row 0 is fine, row 1 finite but with a squared norm of 4e40. */
    float rows[2 * 4] = {0.5f, 0.25f, 0.0f, 1.0f, 1e20f, 1e20f, 1e20f, 1e20f};
    uint64_t ids[2] = {7, 8};
    const char *names[2] = {"v", "w"};
    for (int c = 0; c < 2; c++) {
        shoal_err_t err;
        shoal_err_clear(&err);
        int rc = shard_store_insert(st, names[c], ids, rows, 2, dim, NULL, &err);
        cr_assert_eq(rc, SHOAL_EINVAL, "%s: got %d: %s", names[c], rc, err.msg);
        cr_assert(strstr(err.msg, "row 1"), "%s", err.msg);
        cr_assert(strstr(err.msg, "squared norm"), "%s", err.msg);
        cr_assert_eq(s_stats(st, names[c]).count, 0);
        uint8_t found[2] = {1, 1};
        float out[2 * 4];
        cr_assert_eq(shard_store_get(st, names[c], ids, 2, found, out, NULL), 0);
        cr_assert(!found[0] && !found[1], "a row of the refused batch is there");
    }
    /* As after kill -9: no final checkpoint, the next open replays. */
    shard_store_abandon(&st);
    cr_assert_eq(s_count_keys("V/", 2, 0), 0, "a refused row reached RocksDB");
    cr_assert_eq(s_count_keys("L/", 2, 0), 0, "a refused batch was logged");
    st = s_open();
    cr_assert_eq(s_stats(st, "v").count, 0);
    cr_assert_eq(s_stats(st, "w").count, 0);
    shard_store_close(&st);
}

/* Writes a "V/" record for id of name directly: dim floats of value, or,
 * with short_by > 0, a record that many bytes too short. */
static void s_plant_row(const char *name, uint64_t id, size_t dim, float value, size_t short_by)
{
    shoal_err_t err;
    kv_t *kv = kv_open(s_dir, 0, &err);
    cr_assert_not_null(kv, "kv_open: %s", err.msg);
    uint8_t key[SHARD_KEY_MAX];
    size_t klen = shard_key_u64(key, 'V', name, id);
    size_t vlen = sizeof(shard_vec_hdr_t) + dim * sizeof(float);
    uint8_t *val = malloc(vlen);
    cr_assert_not_null(val);
    shard_vec_hdr_t hdr = {.magic = SHARD_VEC_MAGIC, .version = SHARD_RECORD_VERSION, .seq = 1};
    memcpy(val, &hdr, sizeof hdr);
    for (size_t j = 0; j < dim; j++)
        memcpy(val + sizeof hdr + j * sizeof(float), &value, sizeof(float));
    cr_assert_eq(kv_put(kv, key, klen, val, vlen - short_by, 1, &err), 0, "%s", err.msg);
    free(val);
    kv_close(&kv);
}

Test(store, bad_stored_rows_are_quarantined_and_the_rest_served)
{
    const size_t n = 200, dim = 8;
    shard_store_t *st = s_open();
    s_create(st, "q", dim, SHOAL_METRIC_L2);
    float *v = s_data(n, dim, DATAGEN_STREAM_BASE, 0);
    uint64_t *ids = s_seq_ids(n, 0);
    s_insert(st, "q", ids, v, n, dim);
    shard_store_close(&st); /* the checkpoint holds ids 0..n-1 */

    /* Id 5 overwritten with a huge row (the checkpoint still has its old
     * one), id 1000 new and huge, id 1001 a record 4 bytes short. */
    s_plant_row("q", 5, dim, 1e20f, 0);
    s_plant_row("q", 1000, dim, 1e20f, 0);
    s_plant_row("q", 1001, dim, 0.5f, 4);

    shoal_log_set_level(SHOAL_LOG_WARN);
    s_capture_begin();
    st = s_open();
    char *log = s_capture_end();
    const char *lines[3] = {"stored vector 5 has squared norm", "stored vector 1000 has squared",
                            "stored vector 1001 has"};
    for (int i = 0; i < 3; i++) {
        const char *at = strstr(log, lines[i]);
        cr_assert(at, "no line \"%s\" in:\n%s", lines[i], log);
        cr_assert(!strstr(at + 1, lines[i]), "\"%s\" logged twice:\n%s", lines[i], log);
    }
    cr_assert(strstr(log, "collection \"q\""), "%s", log);
    free(log);

    shard_coll_stats_t s = s_stats(st, "q");
    cr_assert_eq(s.count, n - 1);
    cr_assert_eq(s.quarantined, 3);
    uint64_t bad[3] = {5, 1000, 1001};
    uint8_t found[3];
    float out[3 * 8];
    cr_assert_eq(shard_store_get(st, "q", bad, 3, found, out, NULL), 0);
    cr_assert(!found[0] && !found[1] && !found[2], "a quarantined row is served");
    /* The rest answers: every other row finds itself, exactly and in the graph. */
    for (int mode = 0; mode < 2; mode++) {
        uint64_t got[200];
        float dist[200];
        s_search(st, "q", v, n, dim, 1, mode ? WIRE_MODE_EXACT : WIRE_MODE_HNSW, 0, NULL, 0, got,
                 dist, NULL);
        size_t self = 0;
        for (size_t i = 0; i < n; i++) {
            cr_assert_neq(got[i], 5, "quarantined id 5 found");
            self += got[i] == ids[i];
        }
        cr_assert_geq(self, n - 1 - (mode ? 0 : 2), "mode %d: %zu of %zu rows find themselves",
                      mode, self, n - 1);
    }
    /* Writes work; the id can be written again (a new, good row). */
    s_insert(st, "q", &ids[5], v + 5 * dim, 1, dim);
    cr_assert_eq(s_stats(st, "q").count, n);
    shard_store_close(&st);

    /* Moved, not skipped: the rows sit in the quarantine range, the next
     * open logs no id again and counts them still. */
    cr_assert_eq(s_count_keys("Q/q", 4, 0), 3);
    s_capture_begin();
    st = s_open();
    log = s_capture_end();
    cr_assert(!strstr(log, "stored vector"), "logged again:\n%s", log);
    free(log);
    s = s_stats(st, "q");
    cr_assert_eq(s.count, n);
    cr_assert_eq(s.quarantined, 3);
    /* Drop clears the quarantine with the rest. */
    cr_assert_eq(shard_store_drop(st, "q", NULL), 0);
    shard_store_close(&st);
    cr_assert_eq(s_count_keys("Q/q", 4, 0), 0);
    free(v);
    free(ids);
}

/* ------------------------------------------------------------------------ */
/* Disk space reserve                                                       */
/* ------------------------------------------------------------------------ */

Test(store, under_the_reserve_writes_are_refused_and_reads_served)
{
    const size_t n = 300, dim = 8;
    shard_store_t *st = s_open();
    s_create(st, "d", dim, SHOAL_METRIC_L2);
    float *v = s_data(n, dim, DATAGEN_STREAM_BASE, 0);
    uint64_t *ids = s_seq_ids(n, 0);
    s_insert(st, "d", ids, v, n - 100, dim);
    shard_store_abandon(&st); /* the last rows only in the WAL and log */

    /* A reserve no disk has: the store opens read-only and serves reads. */
    shard_store_opts_t o = s_opts();
    o.min_free_bytes = (size_t)1 << 60;
    shoal_log_set_level(SHOAL_LOG_WARN);
    s_capture_begin();
    st = s_open_with(&o);
    char *log = s_capture_end();
    cr_assert(strstr(log, "opened the database read-only"), "%s", log);
    free(log);
    shard_disk_stats_t disk;
    shard_store_disk_stats(st, &disk);
    cr_assert_eq(disk.read_only, 1);
    cr_assert_eq(disk.min_free_bytes, (uint64_t)1 << 60);
    cr_assert_gt(disk.free_bytes, 0);
    cr_assert_eq(s_stats(st, "d").count, n - 100);
    uint64_t got[8];
    float dist[8];
    s_search(st, "d", v, 8, dim, 1, WIRE_MODE_EXACT, 0, NULL, 0, got, dist, NULL);
    for (size_t i = 0; i < 8; i++)
        cr_assert_eq(got[i], ids[i]);

    /* Every kind of write is refused, naming the reserve, and counted. */
    shoal_err_t err;
    shoal_err_clear(&err);
    int rc = shard_store_insert(st, "d", ids + n - 100, v + (n - 100) * dim, 100, dim, NULL, &err);
    cr_assert_eq(rc, SHOAL_EIO, "insert: %d %s", rc, err.msg);
    cr_assert(strstr(err.msg, "--min-free-bytes") && strstr(err.msg, "insert into \"d\""), "%s",
              err.msg);
    rc = shard_store_delete(st, "d", ids, 1, NULL, NULL, &err);
    cr_assert_eq(rc, SHOAL_EIO, "delete: %d %s", rc, err.msg);
    rc = shard_store_create(st, "e", dim, SHOAL_METRIC_L2, 0, 0, &err);
    cr_assert_eq(rc, SHOAL_EIO, "create: %d %s", rc, err.msg);
    rc = shard_store_checkpoint(st, "d", &err);
    cr_assert_eq(rc, SHOAL_EIO, "checkpoint: %d %s", rc, err.msg);
    shard_store_disk_stats(st, &disk);
    cr_assert_eq(disk.writes_refused, 4);
    cr_assert_eq(s_stats(st, "d").count, n - 100);
    shard_store_close(&st); /* its checkpoint is refused too, and logged */

    /* A normal reserve: writable again, nothing lost. */
    st = s_open();
    shard_store_disk_stats(st, &disk);
    cr_assert_eq(disk.read_only, 0);
    cr_assert_eq(disk.writes_refused, 0);
    s_insert(st, "d", ids + n - 100, v + (n - 100) * dim, 100, dim);
    cr_assert_eq(s_stats(st, "d").count, n);
    shard_store_close(&st);
    free(v);
    free(ids);
}

Test(store, malformed_log_entry_rebuilds_the_graph)
{
    const size_t n = 300, dim = 8;
    shard_store_t *st = s_open();
    s_create(st, "g", dim, SHOAL_METRIC_L2);
    float *v = s_data(n, dim, DATAGEN_STREAM_BASE, 0);
    uint64_t *ids = s_seq_ids(n, 0);
    s_insert(st, "g", ids, v, 200, dim);
    shoal_err_t err;
    cr_assert_eq(shard_store_checkpoint(st, "g", &err), 0, "%s", err.msg);
    s_insert(st, "g", ids + 200, v + 200 * dim, 100, dim);
    uint64_t seq = s_stats(st, "g").last_seq;
    shard_store_abandon(&st); /* the last batch only in the log */

    /* Its log entry cut to 3 bytes. */
    kv_t *kv = kv_open(s_dir, 0, &err);
    cr_assert_not_null(kv, "%s", err.msg);
    uint8_t key[SHARD_KEY_MAX];
    cr_assert_eq(kv_put(kv, key, shard_key_u64(key, 'L', "g", seq), "bad", 3, 1, &err), 0);
    kv_close(&kv);

    shoal_log_set_level(SHOAL_LOG_WARN);
    s_capture_begin();
    st = s_open();
    char *log = s_capture_end();
    cr_assert(strstr(log, "op log not usable (log entry"), "%s", log);
    free(log);
    shard_coll_stats_t s = s_stats(st, "g");
    cr_assert_eq(s.loaded_from_checkpoint, 0);
    cr_assert_eq(s.count, n);
    uint64_t got[300];
    float dist[300];
    s_search(st, "g", v, n, dim, 1, WIRE_MODE_HNSW, 0, NULL, 0, got, dist, NULL);
    size_t self = 0;
    for (size_t i = 0; i < n; i++)
        self += got[i] == ids[i];
    cr_assert_geq(self, n - 3, "%zu of %zu rows find themselves", self, n);
    /* The close's checkpoint covers the bad entry, and deletes it. */
    shard_store_close(&st);
    st = s_open();
    cr_assert_eq(s_stats(st, "g").loaded_from_checkpoint, 1);
    cr_assert_eq(s_stats(st, "g").count, n);
    shard_store_close(&st);
    free(v);
    free(ids);
}

/* ------------------------------------------------------------------------ */
/* IVF lists                                                                */
/* ------------------------------------------------------------------------ */

/* The count of list in name's list_counts (0 when absent); asserts ascending order. */
static uint64_t s_list_count(shard_store_t *st, const char *name, uint32_t list)
{
    uint32_t *lists = NULL;
    uint64_t *counts = NULL;
    size_t n = 0;
    shoal_err_t err;
    cr_assert_eq(shard_store_list_counts(st, name, &lists, &counts, &n, &err), 0, "%s", err.msg);
    uint64_t found = 0;
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            cr_assert_gt(lists[i], lists[i - 1], "list_counts is sorted by list");
        cr_assert_gt(counts[i], 0, "a list with no vector is not listed");
        if (lists[i] == list)
            found = counts[i];
    }
    free(lists);
    free(counts);
    return found;
}

/*
 * Walks list in chunks of chunk rows, following the cursors, into ids (and
 * vecs, n x dim); returns the rows. Asserts the chunks are ascending and
 * that the walk ends with done.
 */
static size_t s_export_all(shard_store_t *st, const char *name, uint32_t list, size_t dim,
                           size_t chunk, uint64_t *ids, float *vecs, size_t cap)
{
    char cursor[WIRE_CURSOR_MAX + 1] = "", next[WIRE_CURSOR_MAX + 1];
    size_t total = 0;
    for (int calls = 0;; calls++) {
        cr_assert_lt(calls, 100000, "the walk does not end");
        cr_assert_leq(total + chunk, cap + chunk);
        uint64_t *cids = malloc(chunk * sizeof *cids);
        float *cvecs = malloc(chunk * dim * sizeof *cvecs);
        size_t n = 0;
        int done = 0;
        shoal_err_t err;
        int rc = shard_store_list_export(st, name, list, cursor, chunk, cids, cvecs, &n, next,
                                         &done, &err);
        cr_assert_eq(rc, 0, "export %s list %u: %s", name, list, err.msg);
        cr_assert_leq(n, chunk);
        cr_assert_leq(total + n, cap, "more rows than the list holds");
        for (size_t i = 0; i < n; i++) {
            if (total + i > 0)
                cr_assert_gt(cids[i], ids[total + i - 1], "rows come in id order");
            ids[total + i] = cids[i];
        }
        memcpy(vecs + total * dim, cvecs, n * dim * sizeof *cvecs);
        total += n;
        free(cids);
        free(cvecs);
        if (done)
            return total;
        cr_assert_gt(n, 0, "a chunk that is not the last has rows");
        memcpy(cursor, next, sizeof cursor);
    }
}

/* Asserts that list holds exactly the rows i of (ids, v) with want[i] set, bit for bit. */
static void s_check_list(shard_store_t *st, const char *name, uint32_t list, const uint64_t *ids,
                         const float *v, const uint32_t *lists, size_t n, size_t dim)
{
    uint64_t *got = malloc((n + 1) * sizeof *got);
    float *gvecs = malloc((n + 1) * dim * sizeof *gvecs);
    size_t m = s_export_all(st, name, list, dim, 7, got, gvecs, n);
    size_t expect = 0;
    for (size_t i = 0; i < n; i++)
        expect += lists[i] == list;
    cr_assert_eq(m, expect, "list %u: exported %zu rows, expected %zu", list, m, expect);
    cr_assert_eq(s_list_count(st, name, list), expect, "list %u: count", list);
    /* ids ascend in both; match each exported row to its source row. */
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (lists[i] != list)
            continue;
        cr_assert_eq(got[j], ids[i], "list %u row %zu: id %llu, expected %llu", list, j,
                     (unsigned long long)got[j], (unsigned long long)ids[i]);
        cr_assert_eq(memcmp(gvecs + j * dim, v + i * dim, dim * sizeof(float)), 0,
                     "list %u id %llu: the vector is not bit for bit the stored one", list,
                     (unsigned long long)ids[i]);
        j++;
    }
    free(got);
    free(gvecs);
}

Test(store, lists_are_persisted_counted_and_exported_in_chunks)
{
    const size_t n = 300, dim = 8;
    const uint32_t pick[5] = {0, 1, 2, 4000000000u, WIRE_LIST_NONE};
    shard_store_t *st = s_open();
    s_create(st, "l", dim, SHOAL_METRIC_COSINE);
    float *v = s_data(n, dim, DATAGEN_STREAM_BASE, 0);
    uint64_t *ids = s_seq_ids(n, 10);
    uint32_t *lists = malloc(n * sizeof *lists);
    for (size_t i = 0; i < n; i++)
        lists[i] = pick[(i * 7) % 5];
    shoal_err_t err;
    /* Rows 0..249 with lists, in three batches; rows 250.. without (list none). */
    for (size_t b = 0; b < 250; b += 100) {
        size_t m = b + 100 <= 250 ? 100 : 250 - b;
        cr_assert_eq(shard_store_insert_lists(st, "l", ids + b, v + b * dim, lists + b, m, dim,
                                              NULL, &err),
                     0, "%s", err.msg);
    }
    for (size_t i = 250; i < n; i++)
        lists[i] = WIRE_LIST_NONE;
    s_insert(st, "l", ids + 250, v + 250 * dim, n - 250, dim);

    for (int round = 0; round < 3; round++) {
        for (size_t p = 0; p < 5; p++)
            s_check_list(st, "l", pick[p], ids, v, lists, n, dim);
        cr_assert_eq(s_list_count(st, "l", 3), 0, "an unused list has no count");
        if (round == 0) {
            shard_store_close(&st); /* clean: checkpoint, flush */
        } else if (round == 1) {
            shard_store_abandon(&st); /* as after kill -9: the log is replayed */
        } else {
            break;
        }
        st = s_open();
    }

    /* Cursors: one list's cursor is refused for another, and garbage is refused. */
    uint64_t one;
    float vec[8];
    size_t got = 0;
    int done = 0;
    char next[WIRE_CURSOR_MAX + 1];
    cr_assert_eq(shard_store_list_export(st, "l", 1, "", 1, &one, vec, &got, next, &done, &err), 0,
                 "%s", err.msg);
    cr_assert_eq(got, 1);
    cr_assert_eq(done, 0);
    char cursor[WIRE_CURSOR_MAX + 1];
    memcpy(cursor, next, sizeof cursor);
    cr_assert_eq(shard_store_list_export(st, "l", 2, cursor, 1, &one, vec, &got, next, &done, &err),
                 SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "the cursor is for list 1"), "%s", err.msg);
    cr_assert_eq(
        shard_store_list_export(st, "l", 1, "s0.l3.i9", 1, &one, vec, &got, next, &done, &err),
        SHOAL_EINVAL);
    cr_assert_eq(shard_store_list_export(st, "l", 1, "", 0, &one, vec, &got, next, &done, &err),
                 SHOAL_EINVAL, "limit 0 is refused");
    cr_assert_eq(shard_store_list_export(st, "nope", 1, "", 1, &one, vec, &got, next, &done, &err),
                 SHOAL_ENOTFOUND);
    /* The cursor of the last row ends the walk at once. */
    cr_assert_eq(
        shard_store_list_export(st, "l", 3, "", 5, &one, vec, &got, next, &done, &err), 0, "%s",
        err.msg);
    cr_assert_eq(got, 0);
    cr_assert_eq(done, 1, "an empty list is done at once");
    shard_store_close(&st);
    free(v);
    free(ids);
    free(lists);
}

Test(store, upsert_moves_lists_delete_and_list_drop_remove_members)
{
    const size_t n = 60, dim = 6;
    shard_store_t *st = s_open();
    s_create(st, "m", dim, SHOAL_METRIC_L2);
    float *v = s_data(2 * n, dim, DATAGEN_STREAM_BASE, 0);
    uint64_t *ids = s_seq_ids(n, 100);
    uint32_t *lists = malloc(n * sizeof *lists);
    for (size_t i = 0; i < n; i++)
        lists[i] = 1;
    shoal_err_t err;
    cr_assert_eq(shard_store_insert_lists(st, "m", ids, v, lists, n, dim, NULL, &err), 0, "%s",
                 err.msg);
    /* Upsert ids 100..109 into list 2 with new vectors (rows n.. of v). */
    float *now = malloc(n * dim * sizeof *now);
    memcpy(now, v, n * dim * sizeof *now);
    for (size_t i = 0; i < 10; i++) {
        lists[i] = 2;
        memcpy(now + i * dim, v + (n + i) * dim, dim * sizeof *now);
    }
    cr_assert_eq(shard_store_insert_lists(st, "m", ids, now, lists, 10, dim, NULL, &err), 0, "%s",
                 err.msg);
    /* An upsert into the same list keeps one membership. */
    cr_assert_eq(shard_store_insert_lists(st, "m", ids + 20, now + 20 * dim, lists + 20, 5, dim,
                                          NULL, &err),
                 0, "%s", err.msg);
    s_check_list(st, "m", 1, ids, now, lists, n, dim);
    s_check_list(st, "m", 2, ids, now, lists, n, dim);

    /* Delete 110..114 (list 1) and an absent id. */
    uint64_t del[6] = {110, 111, 112, 113, 114, 999};
    size_t deleted = 0;
    cr_assert_eq(shard_store_delete(st, "m", del, 6, &deleted, NULL, &err), 0, "%s", err.msg);
    cr_assert_eq(deleted, 5);
    for (size_t i = 10; i < 15; i++)
        lists[i] = 99; /* gone: in no list */
    s_check_list(st, "m", 1, ids, now, lists, n, dim);

    /* list_drop 2: its ten ids leave the graph, the exact engine and the store. */
    size_t removed = 0;
    uint64_t seq = 0;
    cr_assert_eq(shard_store_list_drop(st, "m", 2, &removed, &seq, &err), 0, "%s", err.msg);
    cr_assert_eq(removed, 10);
    cr_assert_gt(seq, 0);
    for (size_t i = 0; i < 10; i++)
        lists[i] = 99;
    cr_assert_eq(s_list_count(st, "m", 2), 0);
    cr_assert_eq(shard_store_list_drop(st, "m", 2, &removed, NULL, &err), 0, "%s", err.msg);
    cr_assert_eq(removed, 0, "dropping an empty list removes nothing");
    uint8_t found[10];
    float got[10 * 6];
    cr_assert_eq(shard_store_get(st, "m", ids, 10, found, got, &err), 0, "%s", err.msg);
    for (size_t i = 0; i < 10; i++)
        cr_assert_eq(found[i], 0, "id %llu was dropped with its list", (unsigned long long)ids[i]);
    const wire_mode_t modes[2] = {WIRE_MODE_HNSW, WIRE_MODE_EXACT};
    for (int m = 0; m < 2; m++) {
        uint64_t rid[60];
        float rd[60];
        s_search(st, "m", now, 1, dim, 60, modes[m], 100, NULL, 0, rid, rd, NULL);
        for (size_t i = 0; i < 60; i++)
            cr_assert(rid[i] == TOPK_ID_NONE || rid[i] >= 110,
                      "%s search returned dropped id %llu", wire_mode_name(modes[m]),
                      (unsigned long long)rid[i]);
    }

    /* After a kill -9-style reopen: the same lists, one membership key per row. */
    shard_store_abandon(&st);
    st = s_open();
    s_check_list(st, "m", 1, ids, now, lists, n, dim);
    cr_assert_eq(s_list_count(st, "m", 2), 0);
    shard_store_close(&st);
    cr_assert_eq(s_count_keys("M/m", 4, 0), n - 15, "one M/ key per stored row");

    /* Dropping the collection clears its membership keys too. */
    st = s_open();
    cr_assert_eq(shard_store_drop(st, "m", &err), 0, "%s", err.msg);
    shard_store_close(&st);
    cr_assert_eq(s_count_keys("M/m", 4, 0), 0);
    free(v);
    free(now);
    free(ids);
    free(lists);
}

Test(store, version_1_rows_are_read_as_list_none_and_upgraded)
{
    const size_t dim = 4;
    shard_store_t *st = s_open();
    s_create(st, "old", dim, SHOAL_METRIC_L2);
    shard_store_close(&st);
    /* Rows as a build before lists wrote them, and "F" at version 1. */
    for (uint64_t id = 1; id <= 5; id++)
        s_plant_row("old", id, dim, (float)id, 0);
    shoal_err_t err;
    kv_t *kv = kv_open(s_dir, 0, &err);
    cr_assert_not_null(kv, "%s", err.msg);
    void *val = NULL;
    size_t vlen = 0;
    cr_assert_eq(kv_get(kv, "F", 1, &val, &vlen, &err), 0);
    uint32_t version = 1;
    memcpy((uint8_t *)val + 8, &version, 4);
    cr_assert_eq(kv_put(kv, "F", 1, val, vlen, 1, &err), 0, "%s", err.msg);
    free(val);
    kv_close(&kv);

    for (int round = 0; round < 2; round++) {
        st = s_open();
        cr_assert_eq(s_list_count(st, "old", WIRE_LIST_NONE), 5);
        uint64_t ids[6];
        float vecs[6 * 4];
        size_t m = s_export_all(st, "old", WIRE_LIST_NONE, dim, 2, ids, vecs, 5);
        cr_assert_eq(m, 5);
        for (size_t i = 0; i < 5; i++) {
            cr_assert_eq(ids[i], i + 1);
            cr_assert_eq(vecs[i * dim], (float)(i + 1));
        }
        shard_store_close(&st);
        cr_assert_eq(s_count_keys("M/old", 6, 0), 5, "each upgraded row has its M/ key");
    }
    kv = kv_open(s_dir, 0, &err);
    cr_assert_not_null(kv, "%s", err.msg);
    cr_assert_eq(kv_get(kv, "F", 1, &val, &vlen, &err), 0);
    memcpy(&version, (uint8_t *)val + 8, 4);
    free(val);
    cr_assert_eq(version, SHARD_FORMAT_VERSION, "the format record was upgraded");
    /* The rows themselves are now version 2, with list none. */
    uint8_t key[SHARD_KEY_MAX];
    cr_assert_eq(kv_get(kv, key, shard_key_u64(key, 'V', "old", 3), &val, &vlen, &err), 0);
    shard_vec_hdr2_t hdr;
    cr_assert_eq(vlen, sizeof hdr + dim * sizeof(float));
    memcpy(&hdr, val, sizeof hdr);
    cr_assert_eq(hdr.version, SHARD_VEC_VERSION);
    cr_assert_eq(hdr.list, WIRE_LIST_NONE);
    free(val);
    kv_close(&kv);
}

/* ------------------------------------------------------------------------ */
/* Compressed storage (f16, sq8)                                            */
/* ------------------------------------------------------------------------ */

static void s_create_kind(shard_store_t *st, const char *name, size_t dim, shoal_metric_t metric,
                          quant_kind_t storage)
{
    shoal_err_t err;
    shard_coll_params_t p = {.dim = dim, .metric = metric, .storage = storage};
    int rc = shard_store_create_with(st, name, &p, &err);
    cr_assert_eq(rc, 0, "create %s: %s", name, err.msg);
}

/* recall@k of got against want (nq x k ids each): the share of want's ids got holds. */
static double s_overlap(const uint64_t *got, const uint64_t *want, size_t nq, size_t k)
{
    size_t hits = 0;
    for (size_t q = 0; q < nq; q++)
        for (size_t i = 0; i < k; i++)
            for (size_t j = 0; j < k; j++)
                hits += got[q * k + i] == want[q * k + j];
    return (double)hits / (double)(nq * k);
}

/*
 * One data set in an f32, an f16 and an sq8 collection: exact mode on the
 * codes gives the f32 engine's ids and distances; the graph, re-ranked from
 * RocksDB, reaches the recall floor; get returns the rows bit for bit;
 * stats say the storage and show fewer bytes; after a reopen (codes from the
 * checkpoint, nothing rebuilt) the answers are the same.
 */
static void s_kinds_round_trip(const char *what, const float *base, size_t n, const float *qs,
                               size_t nq, size_t dim, shoal_metric_t metric, const int32_t *gt,
                               size_t gdim, double floor)
{
    const size_t k = 10;
    static const char *names[3] = {"f32", "f16", "sq8"};
    shard_store_opts_t o = s_opts();
    shard_store_t *st = s_open_with(&o);
    uint64_t *ids = s_seq_ids(n, 0);
    for (int kind = 0; kind < 3; kind++) {
        s_create_kind(st, names[kind], dim, metric, (quant_kind_t)kind);
        for (size_t b = 0; b < n; b += 2500) /* several batches: sq8 trains on the first */
            s_insert(st, names[kind], ids + b, base + b * dim, n - b < 2500 ? n - b : 2500, dim);
    }
    size_t rk = nq * k;
    uint64_t *want = malloc(rk * sizeof *want), *got = malloc(rk * sizeof *got);
    float *wantd = malloc(rk * sizeof *wantd), *gotd = malloc(rk * sizeof *gotd);
    s_search(st, "f32", qs, nq, dim, k, WIRE_MODE_EXACT, 0, NULL, 0, want, wantd, NULL);
    for (int pass = 0; pass < 2; pass++) {
        for (int kind = 1; kind < 3; kind++) {
            wire_mode_t used;
            s_search(st, names[kind], qs, nq, dim, k, WIRE_MODE_EXACT, 0, NULL, 0, got, gotd,
                     &used);
            cr_assert_eq(used, WIRE_MODE_EXACT);
            for (size_t i = 0; i < rk; i++)
                cr_assert(got[i] == want[i] && gotd[i] == wantd[i],
                          "%s %s exact (pass %d): query %zu rank %zu: %llu %.9g, f32 engine %llu "
                          "%.9g",
                          what, names[kind], pass, i / k, i % k, (unsigned long long)got[i],
                          (double)gotd[i], (unsigned long long)want[i], (double)wantd[i]);
            s_search(st, names[kind], qs, nq, dim, k, WIRE_MODE_HNSW, 128, NULL, 0, got, gotd,
                     NULL);
            double r = gt ? gt_recall(got, k, gt, gdim, nq, k) : s_overlap(got, want, nq, k);
            cr_assert_geq(r, floor, "%s %s graph recall@10 %.4f < %.2f", what, names[kind], r,
                          floor);
            shard_coll_stats_t s = s_stats(st, names[kind]);
            cr_assert_eq(s.storage, (quant_kind_t)kind);
            cr_assert_eq(s.count, n);
            cr_assert_eq(s.exact_bytes, 0, "one copy in RAM: no exact engine");
            cr_assert_eq(s.bytes_codes + s.bytes_links + s.bytes_ids + s.bytes_other,
                         s.hnsw_bytes);
            if (pass == 1)
                cr_assert_eq(s.loaded_from_checkpoint, 1, "%s: the codes come from the checkpoint",
                             names[kind]);
            cr_log_info("%s %s (pass %d): graph recall@10 %.4f, %.1f bytes/vector in RAM "
                        "(codes %.1f)",
                        what, names[kind], pass, r, (double)s.hnsw_bytes / (double)n,
                        (double)s.bytes_codes / (double)n);
            /* get: the rows as inserted (unit length for cosine, as f32 gives them). */
            uint8_t found[4];
            float rows[4 * 2048], ref[4 * 2048];
            uint64_t some[4] = {0, 1, n / 2, n - 1};
            shoal_err_t err;
            cr_assert_eq(shard_store_get(st, names[kind], some, 4, found, rows, &err), 0, "%s",
                         err.msg);
            cr_assert_eq(shard_store_get(st, "f32", some, 4, found, ref, &err), 0, "%s", err.msg);
            cr_assert(dim <= 2048);
            cr_assert_eq(memcmp(rows, ref, 4 * dim * sizeof(float)), 0, "%s get differs",
                         names[kind]);
        }
        if (pass == 0) {
            shard_store_close(&st);
            st = s_open_with(&o);
        }
    }
    shard_store_close(&st);
    free(ids);
    free(want);
    free(got);
    free(wantd);
    free(gotd);
}

Test(store, compressed_storage_siftsmall_exact_recall_reopen, .timeout = 300)
{
    s_sift_t sift;
    if (!s_sift_load(&sift)) {
        cr_skip_test("%s not found (set SHOAL_DATASETS)", sift.path);
        return;
    }
    float *base = sift.base, *qs = sift.queries;
    int32_t *gt = sift.gt;
    size_t n = sift.n, dim = sift.dim, nq = sift.nq, gdim = sift.gdim;
    s_kinds_round_trip("siftsmall", base, n, qs, nq, dim, SHOAL_METRIC_L2, gt, gdim, 0.95);
    free(base);
    free(qs);
    free(gt);
}

Test(store, compressed_storage_cosine_and_ip_exact, .timeout = 300)
{
    const size_t n = 4000, dim = 48, nq = 30;
    float *base = s_data(n, dim, DATAGEN_STREAM_BASE, 0);
    float *qs = s_data(nq, dim, DATAGEN_STREAM_QUERY, 0);
    s_kinds_round_trip("cosine", base, n, qs, nq, dim, SHOAL_METRIC_COSINE, NULL, 0, 0.9);
    s_rm_tmp();
    s_mkdir_tmp();
    s_kinds_round_trip("ip", base, n, qs, nq, dim, SHOAL_METRIC_IP, NULL, 0, 0.9);
    free(base);
    free(qs);
}

Test(store, bad_storage_kind_is_refused)
{
    shard_store_t *st = s_open();
    shoal_err_t err;
    shard_coll_params_t p = {.dim = 8, .metric = SHOAL_METRIC_L2, .storage = (quant_kind_t)7};
    cr_assert_eq(shard_store_create_with(st, "x", &p, &err), SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "storage") != NULL, "%s", err.msg);
    shard_store_close(&st);
}

/* An sq8 collection takes the quantizer its first insert carries; a bad one writes nothing. */
Test(store, sq8_takes_the_quantizer_sent_with_the_first_insert)
{
    const size_t n = 300, dim = 8;
    shard_store_t *st = s_open();
    s_create_kind(st, "q", dim, SHOAL_METRIC_L2, QUANT_SQ8);
    float *v = s_data(n, dim, DATAGEN_STREAM_BASE, 0);
    uint64_t *ids = s_seq_ids(n, 0);
    shoal_err_t err;
    /* A quantizer of another dimension is refused and nothing is stored. */
    quant_sq8_t *other = quant_sq8_train(v, 10, 4, &err);
    cr_assert_not_null(other, "%s", err.msg);
    uint8_t bad[16 + 8 * 4];
    quant_sq8_record_write(other, bad);
    cr_assert_eq(shard_store_insert_quantized(st, "q", ids, v, NULL, n, dim, bad, sizeof bad, NULL,
                                              &err),
                 SHOAL_ECORRUPT);
    cr_assert_eq(s_stats(st, "q").count, 0);
    cr_assert_eq(s_stats(st, "q").quantizer_crc, 0);
    /* A quantizer trained on other rows (a wider range) is the one kept. */
    float *wide = malloc(n * dim * sizeof *wide);
    for (size_t i = 0; i < n * dim; i++)
        wide[i] = v[i] * 3.0f;
    quant_sq8_t *sent = quant_sq8_train(wide, n, dim, &err);
    cr_assert_not_null(sent, "%s", err.msg);
    uint8_t rec[16 + 8 * 8];
    quant_sq8_record_write(sent, rec);
    cr_assert_eq(shard_store_insert_quantized(st, "q", ids, v, NULL, n, dim, rec, sizeof rec, NULL,
                                              &err),
                 0, "%s", err.msg);
    uint32_t want = shard_crc32(0, rec, sizeof rec);
    cr_assert_eq(s_stats(st, "q").quantizer_crc, want);
    shard_store_close(&st);
    st = s_open();
    cr_assert_eq(s_stats(st, "q").quantizer_crc, want, "the quantizer survives a reopen");
    cr_assert_eq(s_stats(st, "q").count, n);
    shard_store_close(&st);
    quant_sq8_destroy(&other);
    quant_sq8_destroy(&sent);
    free(wide);
    free(v);
    free(ids);
}

/* ------------------------------------------------------------------------ */
/* Quick searches (the server's loop runs them itself)                      */
/* ------------------------------------------------------------------------ */

/*
 * A quick search answers a single query exactly as the plain graph search
 * does; what is not quick (exact mode, an ef over the bound, compressed
 * storage, a tiny collection auto sends to exact) is deferred with nothing
 * written; the request's own errors are returned as by a plain search.
 */
Test(store, quick_search_matches_the_plain_one_and_defers_what_is_not_quick)
{
    const size_t n = 3000, dim = 16, k = 10;
    shard_store_t *st = s_open();
    s_create(st, "f", dim, SHOAL_METRIC_L2);
    s_create_kind(st, "q", dim, SHOAL_METRIC_L2, QUANT_SQ8);
    float *v = s_data(n, dim, DATAGEN_STREAM_BASE, 0);
    float *queries = s_data(20, dim, DATAGEN_STREAM_QUERY, 0);
    uint64_t *ids = s_seq_ids(n, 1);
    s_insert(st, "f", ids, v, n, dim);
    s_insert(st, "q", ids, v, n, dim);

    shoal_err_t err;
    uint64_t want[10], got[10];
    float wd[10], gd[10];
    for (size_t qi = 0; qi < 20; qi++) {
        const float *q = queries + qi * dim;
        s_search(st, "f", q, 1, dim, k, WIRE_MODE_HNSW, 48, NULL, 0, want, wd, NULL);
        int deferred = -1;
        wire_mode_t used = WIRE_MODE_EXACT;
        cr_assert_eq(shard_store_search_quick(st, "f", q, dim, k, WIRE_MODE_AUTO, 48, 128, got,
                                              gd, &used, &deferred, &err),
                     0, "%s", err.msg);
        cr_assert_eq(deferred, 0, "query %zu was deferred", qi);
        cr_assert_eq(used, WIRE_MODE_HNSW);
        for (size_t i = 0; i < k; i++) {
            cr_assert_eq(got[i], want[i], "query %zu rank %zu", qi, i);
            cr_assert_eq(gd[i], wd[i], "query %zu rank %zu", qi, i);
        }
    }

    struct {
        const char *coll;
        wire_mode_t mode;
        size_t ef, ef_max;
    } defer[] = {
        {"f", WIRE_MODE_EXACT, 48, 128}, /* exact mode */
        {"f", WIRE_MODE_HNSW, 200, 128}, /* ef over the bound */
        {"f", WIRE_MODE_HNSW, 0, 8},     /* the default ef (64) over the bound */
        {"q", WIRE_MODE_HNSW, 48, 128},  /* sq8: re-ranks from RocksDB */
    };
    for (size_t c = 0; c < sizeof defer / sizeof defer[0]; c++) {
        int deferred = -1;
        for (size_t i = 0; i < k; i++)
            got[i] = 777;
        cr_assert_eq(shard_store_search_quick(st, defer[c].coll, queries, dim, k, defer[c].mode,
                                              defer[c].ef, defer[c].ef_max, got, gd, NULL,
                                              &deferred, &err),
                     0, "case %zu: %s", c, err.msg);
        cr_assert_eq(deferred, 1, "case %zu ran", c);
        for (size_t i = 0; i < k; i++)
            cr_assert_eq(got[i], 777, "case %zu wrote results", c);
    }

    int deferred = -1;
    cr_assert_eq(shard_store_search_quick(st, "nope", queries, dim, k, WIRE_MODE_AUTO, 48, 128,
                                          got, gd, NULL, &deferred, &err),
                 SHOAL_ENOTFOUND);
    cr_assert_eq(shard_store_search_quick(st, "f", queries, dim + 1, k, WIRE_MODE_AUTO, 48, 128,
                                          got, gd, NULL, &deferred, &err),
                 SHOAL_EDIM);
    float bad[16];
    memcpy(bad, queries, sizeof bad);
    bad[3] = NAN;
    cr_assert_eq(shard_store_search_quick(st, "f", bad, dim, k, WIRE_MODE_AUTO, 48, 128, got, gd,
                                          NULL, &deferred, &err),
                 SHOAL_EINVAL);
    shard_store_close(&st);
    free(v);
    free(queries);
    free(ids);
}

/*
 * A batch's queries are shared out over the store's threads (store_search.c):
 * every query's answer lands in its own row, the same as that query searched
 * alone, for graph walks and for the codes' exact scan.
 */
Test(store, batch_rows_match_each_query_searched_alone)
{
    const size_t n = 3000, dim = 16, k = 10, nq = 101;
    shard_store_t *st = s_open();
    s_create(st, "f", dim, SHOAL_METRIC_L2);
    s_create_kind(st, "q", dim, SHOAL_METRIC_L2, QUANT_SQ8);
    float *v = s_data(n, dim, DATAGEN_STREAM_BASE, 0);
    float *queries = s_data(nq, dim, DATAGEN_STREAM_QUERY, 0);
    uint64_t *ids = s_seq_ids(n, 1);
    s_insert(st, "f", ids, v, n, dim);
    s_insert(st, "q", ids, v, n, dim);

    const struct {
        const char *coll;
        wire_mode_t mode;
    } cases[] = {{"f", WIRE_MODE_HNSW}, {"q", WIRE_MODE_HNSW}, {"q", WIRE_MODE_EXACT}};
    uint64_t *batch = malloc(nq * k * sizeof *batch);
    float *bd = malloc(nq * k * sizeof *bd);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        for (size_t i = 0; i < nq * k; i++)
            batch[i] = 0;
        s_search(st, cases[c].coll, queries, nq, dim, k, cases[c].mode, 48, NULL, 0, batch, bd,
                 NULL);
        for (size_t qi = 0; qi < nq; qi++) {
            uint64_t one[10];
            float od[10];
            s_search(st, cases[c].coll, queries + qi * dim, 1, dim, k, cases[c].mode, 48, NULL, 0,
                     one, od, NULL);
            for (size_t i = 0; i < k; i++) {
                cr_assert_eq(batch[qi * k + i], one[i], "case %zu query %zu rank %zu", c, qi, i);
                cr_assert_eq(bd[qi * k + i], od[i], "case %zu query %zu rank %zu", c, qi, i);
            }
        }
    }
    free(batch);
    free(bd);
    free(ids);
    free(queries);
    free(v);
    shard_store_close(&st);
}
