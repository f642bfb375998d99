/*
 * test_cluster.c - the cluster as a client sees it: one bin/shoal-coordinator
 * in front of three bin/shoal-shard processes on loopback, driven through the
 * client library (client/shoal_client.h) and, in one test, through the CLI
 * (bin/shoal). Covers issue 6's process tests: recall on siftsmall (default
 * and exact), upsert moving an id and delete removing it across a restart of
 * every process, a SIGKILLed shard giving partial answers that name it and
 * complete ones after its restart, a SIGKILLed coordinator coming back with
 * its catalog, bad requests answered with errors while the coordinator keeps
 * serving, the k-NN graph against exact neighbours, and write intents left
 * in a killed coordinator's catalog re-driven (stale copies deleted) when it
 * starts again; and issue 9's shard faults during writes: a frozen shard
 * holding up only the writes that touch it, a delete during an outage
 * completed when the shard is back (counts agree, few log lines), and a
 * collection dropped on one shard re-created by the coordinator.
 *
 * Every test starts its own cluster: data dirs and logs in a fresh folder
 * under $SHOAL_TMP (removed afterwards), each process on a fixed free port
 * below the ephemeral range (s_free_port in tests/test_support.h says why);
 * a restarted process gets its old endpoint and data dir back.
 * Children die with the test (tests/test_support.h). Every wait for a state
 * change is bounded polling; no timing is asserted.
 *
 * Environment: SHOAL_BIN (folder of the programs, default "bin"),
 * SHOAL_DATASETS (default ../shared/datasets; siftsmall is needed, tests skip
 * without it), SHOAL_TMP (default /tmp).
 */
#include "client/shoal_client.h"
#include "coordinator/catalog.h"
#include "common/groundtruth.h"
#include "common/log.h"
#include "common/topk.h"
#include "common/vecfile.h"
#include "net/wire.h"
#include "shard/hnsw.h" /* the build defaults the coordinator fills in */
#include "tests/test_support.h"

#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define S_PATH_MAX        S_SUPPORT_PATH_MAX
#define S_NSHARDS         3
#define S_START_WAIT_S    60.0   /* a process must be ready within this */
#define S_STOP_WAIT_S     60.0   /* and exit within this after a signal */
#define S_POLL_WAIT_S     30.0   /* a state change (shard up again) must show within this */
#define S_POLL_MS         50     /* between polls */
#define S_TIMEOUT_MS      60000  /* client calls: loads and graph chunks on two busy cores */
#define S_POLL_TIMEOUT_MS 5000   /* client calls while polling a process that may be down */
#define S_PING_MS         "100"  /* coordinator --ping-interval-ms */
#define S_DOWN_MS         "1000" /* coordinator --down-after-ms */
#define S_K               10

/* ------------------------------------------------------------------------ */
/* Scratch folder                                                           */
/* ------------------------------------------------------------------------ */

static void s_setup(void)
{
    shoal_log_init_from_env(); /* the catalog opened in-process logs too */
    s_process_suite_init("test_cluster");
}

TestSuite(cluster, .init = s_setup, .fini = s_process_suite_fini, .timeout = 300);

/* ------------------------------------------------------------------------ */
/* The cluster                                                              */
/* ------------------------------------------------------------------------ */

/* One server process (tests/test_support.h). */
typedef s_server_t s_proc_t;

typedef struct {
    s_proc_t coord;                   /* bin/shoal-coordinator */
    s_proc_t shards[S_NSHARDS];       /* bin/shoal-shard */
    char shard_list[S_NSHARDS * 256]; /* --shards: their endpoints, comma-separated */
    char deadline_ms[16];             /* --deadline-ms */
    char down_ms[16];                 /* --down-after-ms */
    char route_macs[16];              /* --route-inline-macs, when not empty */
    char sub_batch[16];               /* --sub-batch-max, when not empty */
} s_cluster_t;

/*
 * Starts p from argv (its --listen value is p's old endpoint on a restart) and
 * checks that a restarted process got its old endpoint back.
 */
static void s_proc_start(s_proc_t *p, char *const argv[])
{
    char before[sizeof p->endpoint];
    snprintf(before, sizeof before, "%s", p->endpoint);
    p->pid =
        s_server_start(argv, p->ready, p->log, S_START_WAIT_S, p->endpoint, sizeof p->endpoint);
    if (before[0])
        cr_assert_str_eq(p->endpoint, before, "%s restarted on another endpoint", argv[0]);
}

/* p's old endpoint on a restart, else a fixed free port (s_free_port says why). */
static void s_listen(const s_proc_t *p, char *buf, size_t cap)
{
    if (p->endpoint[0]) {
        snprintf(buf, cap, "%s", p->endpoint);
        return;
    }
    int port = s_free_port();
    cr_assert(port > 0, "no free port below the ephemeral range");
    snprintf(buf, cap, "tcp://127.0.0.1:%d", port);
}

static void s_shard_start(s_proc_t *p)
{
    char bin[S_PATH_MAX], listen[sizeof p->endpoint];
    s_bin(bin, "shoal-shard");
    s_listen(p, listen, sizeof listen);
    char *argv[] = {bin,      "--listen",  listen, "--data-dir", p->data_dir, "--ready-file",
                    p->ready, "--threads", "1",    NULL};
    s_proc_start(p, argv);
}

static void s_coord_start(s_cluster_t *cl)
{
    s_proc_t *p = &cl->coord;
    char bin[S_PATH_MAX], listen[sizeof p->endpoint];
    s_bin(bin, "shoal-coordinator");
    s_listen(p, listen, sizeof listen);
    char *argv[] = {bin,         "--listen",           listen,          "--data-dir",
                    p->data_dir, "--shards",           cl->shard_list,  "--ready-file",
                    p->ready,    "--ping-interval-ms", S_PING_MS,       "--down-after-ms",
                    cl->down_ms, "--deadline-ms",      cl->deadline_ms, NULL,
                    NULL,        NULL,                 NULL,            NULL};
    size_t argc = 15;
    if (cl->route_macs[0]) {
        argv[argc++] = "--route-inline-macs";
        argv[argc++] = cl->route_macs;
    }
    if (cl->sub_batch[0]) {
        argv[argc++] = "--sub-batch-max";
        argv[argc++] = cl->sub_batch;
    }
    s_proc_start(p, argv);
}

/* SIGTERM: the process must exit 0. */
static void s_proc_stop(s_proc_t *p)
{
    int status = s_server_signal(p->pid, SIGTERM, S_STOP_WAIT_S, p->log);
    p->pid = 0;
    if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        char *log = s_slurp(p->log);
        cr_assert_fail("%s did not exit 0 after SIGTERM (status 0x%x):\n%s", p->log, status, log);
    }
}

static void s_proc_kill9(s_proc_t *p)
{
    int status = s_server_signal(p->pid, SIGKILL, S_STOP_WAIT_S, p->log);
    p->pid = 0;
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
}

static shoal_client_t *s_client(const s_cluster_t *cl, int timeout_ms)
{
    shoal_err_t err;
    shoal_client_t *c = shoal_client_new(cl->coord.endpoint, timeout_ms, &err);
    cr_assert_not_null(c, "client for %s: %s", cl->coord.endpoint, err.msg);
    return c;
}

/*
 * Waits (bounded polling) until the coordinator can write to every shard:
 * create touches every shard and is refused with SHOAL_EUNAVAIL while one is
 * not (yet) up. The probe collection is dropped again.
 */
static void s_wait_shards_up(const s_cluster_t *cl)
{
    shoal_client_t *c = s_client(cl, S_POLL_TIMEOUT_MS);
    shoal_create_opts_t opts = {.nlist = 4};
    shoal_err_t err;
    double end = s_now() + S_POLL_WAIT_S;
    int rc;
    while ((rc = shoal_client_create_ivf(c, "probe_up", 4, SHOAL_METRIC_L2, &opts, &err)) != 0) {
        cr_assert(rc == SHOAL_EUNAVAIL || rc == SHOAL_ETIMEOUT, "create probe_up: %s (%s)", err.msg,
                  shoal_errname(rc));
        cr_assert_lt(s_now(), end, "the coordinator still cannot reach every shard: %s", err.msg);
        s_sleep_ms(S_POLL_MS);
    }
    rc = shoal_client_drop(c, "probe_up", &err);
    cr_assert_eq(rc, 0, "drop probe_up: %s", err.msg);
    shoal_client_destroy(&c);
}

/*
 * Starts three shards and the coordinator; deadline_ms and down_ms are the
 * coordinator's --deadline-ms and --down-after-ms.
 */
static void s_cluster_start_down(s_cluster_t *cl, unsigned deadline_ms, const char *down_ms)
{
    memset(cl, 0, sizeof *cl);
    snprintf(cl->deadline_ms, sizeof cl->deadline_ms, "%u", deadline_ms);
    snprintf(cl->down_ms, sizeof cl->down_ms, "%s", down_ms);
    size_t off = 0;
    for (int i = 0; i < S_NSHARDS; i++) {
        char name[32];
        snprintf(name, sizeof name, "shard%d", i);
        s_server_init(&cl->shards[i], name);
        s_shard_start(&cl->shards[i]);
        int len = snprintf(cl->shard_list + off, sizeof cl->shard_list - off, "%s%s", i ? "," : "",
                           cl->shards[i].endpoint);
        cr_assert(len > 0 && (size_t)len < sizeof cl->shard_list - off);
        off += (size_t)len;
    }
    s_server_init(&cl->coord, "coord");
    s_coord_start(cl);
    s_wait_shards_up(cl);
}

/* s_cluster_start_down with the usual --down-after-ms. */
static void s_cluster_start(s_cluster_t *cl, unsigned deadline_ms)
{
    s_cluster_start_down(cl, deadline_ms, S_DOWN_MS);
}

/* ------------------------------------------------------------------------ */
/* siftsmall                                                                */
/* ------------------------------------------------------------------------ */

/* siftsmall, with its file paths for the CLI (tests/test_support.h). */
typedef s_dataset_t s_sift_t;

static void s_sift_load(s_sift_t *s)
{
    s_dataset_load(s, "siftsmall", S_K);
}

static const float *s_row(const s_sift_t *s, uint64_t id)
{
    return s->base + id * s->dim;
}

/*
 * Creates coll with copts (nlist, R, W...), trains it on the first n base
 * rows and inserts them (ids = row numbers) in batches of 1000.
 */
static void s_load_with(shoal_client_t *c, const char *coll, const s_sift_t *s, size_t n,
                        const shoal_create_opts_t *copts)
{
    shoal_err_t err;
    int rc = shoal_client_create_ivf(c, coll, s->dim, SHOAL_METRIC_L2, copts, &err);
    cr_assert_eq(rc, 0, "create %s: %s", coll, err.msg);
    char *text = NULL;
    rc = shoal_client_train(c, coll, s->base, n, s->dim, NULL, &text, &err);
    cr_assert_eq(rc, 0, "train %s: %s", coll, err.msg);
    cr_log_info("train %s: %s", coll, text ? text : "");
    free(text);
    uint64_t *ids = malloc(n * sizeof *ids);
    cr_assert_not_null(ids);
    for (size_t i = 0; i < n; i++)
        ids[i] = i;
    for (size_t start = 0; start < n; start += 1000) {
        size_t m = n - start < 1000 ? n - start : 1000;
        rc = shoal_client_insert(c, coll, ids + start, s->base + start * s->dim, m, s->dim, NULL,
                                 &err);
        cr_assert_eq(rc, 0, "insert rows %zu.. into %s: %s", start, coll, err.msg);
    }
    free(ids);
}

/* s_load_with one copy of each list (nlist lists). */
static void s_load(shoal_client_t *c, const char *coll, const s_sift_t *s, size_t n, size_t nlist)
{
    shoal_create_opts_t copts = {.nlist = nlist};
    s_load_with(c, coll, s, n, &copts);
}

/*
 * A test's start: siftsmall into s, the cluster started with deadline_ms and
 * its first n rows (0: all) loaded into coll with nlist lists. Returns a
 * client of the coordinator (s_finish() ends both).
 */
static shoal_client_t *s_start_loaded(s_sift_t *s, s_cluster_t *cl, unsigned deadline_ms,
                                      const char *coll, size_t n, size_t nlist)
{
    s_sift_load(s);
    s_cluster_start(cl, deadline_ms);
    shoal_client_t *c = s_client(cl, S_TIMEOUT_MS);
    s_load(c, coll, s, n ? n : s->n, nlist);
    return c;
}

/* A test's end: the client destroyed, siftsmall freed. */
static void s_finish(shoal_client_t **c, s_sift_t *s)
{
    shoal_client_destroy(c);
    s_dataset_free(s);
}

/* A search that must succeed; info gets partial / missing / fanout. */
static void s_search(shoal_client_t *c, const char *coll, const float *q, size_t nq, size_t dim,
                     wire_mode_t mode, size_t nprobe, uint64_t **ids, float **dists,
                     shoal_search_info_t *info)
{
    shoal_search_opts_t opts = {.k = S_K, .mode = mode, .nprobe = nprobe};
    shoal_err_t err;
    memset(info, 0, sizeof *info);
    int rc = shoal_client_search_ex(c, coll, q, nq, dim, &opts, ids, dists, info, &err);
    cr_assert_eq(rc, 0, "search %s (mode %d, nprobe %zu): %s", coll, (int)mode, nprobe, err.msg);
}

/* Recall@10 of a complete default search (the collection's nprobe, the shards' ef). */
static double s_default_recall(shoal_client_t *c, const char *coll, const s_sift_t *s)
{
    uint64_t *ids = NULL;
    shoal_search_info_t info;
    s_search(c, coll, s->queries, s->nq, s->dim, WIRE_MODE_AUTO, 0, &ids, NULL, &info);
    cr_assert_eq(info.partial, 0, "default search partial, missing %s", info.missing);
    double recall = gt_recall(ids, S_K, s->gt, s->gtk, s->nq, S_K);
    cr_log_info("%s: default recall@10 %.4f, shards per query %.2f", coll, recall,
                (double)info.fanout / (double)s->nq);
    free(ids);
    return recall;
}

/*
 * Exact results against the ground truth: every query's 10 ids are distinct
 * and each is in the true top 10 or ties with its 10th distance (squared L2
 * of integer-valued SIFT vectors: ties are exact).
 */
static void s_assert_exact(const s_sift_t *s, const uint64_t *ids)
{
    size_t ties = 0;
    for (size_t q = 0; q < s->nq; q++) {
        const float *qv = s->queries + q * s->dim;
        const int32_t *truth = s->gt + q * s->gtk;
        double kth = s_true_dist(SHOAL_METRIC_L2, qv, s_row(s, (uint64_t)truth[S_K - 1]), s->dim);
        for (size_t j = 0; j < S_K; j++) {
            uint64_t id = ids[q * S_K + j];
            cr_assert_lt(id, s->n, "query %zu rank %zu: id %lu", q, j, (unsigned long)id);
            for (size_t i = 0; i < j; i++)
                cr_assert_neq(ids[q * S_K + i], id, "query %zu: id %lu twice", q,
                              (unsigned long)id);
            int in_truth = 0;
            for (size_t t = 0; t < S_K; t++)
                in_truth |= (uint64_t)truth[t] == id;
            if (in_truth)
                continue;
            double d = s_true_dist(SHOAL_METRIC_L2, qv, s_row(s, id), s->dim);
            cr_assert_leq(d, kth * (1 + 1e-9) + 1e-6,
                          "query %zu rank %zu: id %lu (distance %.1f) is not in the true top 10 "
                          "(10th distance %.1f)",
                          q, j, (unsigned long)id, d, kth);
            ties++;
        }
    }
    cr_log_info("exact search: all %zu queries exact (%zu ties at the 10th distance)", s->nq, ties);
}

/* Exact search over every list (mode exact, nprobe = nlist), checked against the truth. */
static void s_check_exact(shoal_client_t *c, const char *coll, const s_sift_t *s, size_t nlist)
{
    uint64_t *ids = NULL;
    shoal_search_info_t info;
    s_search(c, coll, s->queries, s->nq, s->dim, WIRE_MODE_EXACT, nlist, &ids, NULL, &info);
    cr_assert_eq(info.partial, 0, "exact search partial, missing %s", info.missing);
    cr_assert_eq(info.used, WIRE_MODE_EXACT);
    s_assert_exact(s, ids);
    free(ids);
}

/*
 * Polls a search until it answers completely (every shard up and answering),
 * for at most S_POLL_WAIT_S; client calls get a short timeout meanwhile.
 */
static void s_wait_complete(shoal_client_t *c, const char *coll, const s_sift_t *s, size_t nlist)
{
    shoal_client_set_timeout(c, S_POLL_TIMEOUT_MS);
    shoal_search_opts_t opts = {.k = S_K, .mode = WIRE_MODE_EXACT, .nprobe = nlist};
    double end = s_now() + S_POLL_WAIT_S;
    char last[SHOAL_ERR_MSG_MAX + WIRE_MISSING_MAX] = "";
    while (1) {
        uint64_t *ids = NULL;
        shoal_search_info_t info;
        shoal_err_t err;
        int rc =
            shoal_client_search_ex(c, coll, s->queries, 1, s->dim, &opts, &ids, NULL, &info, &err);
        free(ids);
        if (rc == 0 && !info.partial)
            break;
        snprintf(last, sizeof last, "%s", rc ? err.msg : info.missing);
        cr_assert_lt(s_now(), end, "no complete answer after %.0f s (last: %s)", S_POLL_WAIT_S,
                     last);
        s_sleep_ms(S_POLL_MS);
    }
    shoal_client_set_timeout(c, S_TIMEOUT_MS);
}

/* A client talking to shard p directly (the shard speaks the same protocol). */
static shoal_client_t *s_shard_client(const s_proc_t *p)
{
    shoal_err_t err;
    shoal_client_t *c = shoal_client_new(p->endpoint, S_TIMEOUT_MS, &err);
    cr_assert_not_null(c, "client for shard %s: %s", p->endpoint, err.msg);
    return c;
}

/* One number at path in the coordinator's stats (asserts it is there). */
static double s_coord_stat(shoal_client_t *c, const char *path)
{
    void *info = NULL;
    size_t len = 0;
    char *text = NULL;
    shoal_err_t err;
    int rc = shoal_client_stats(c, NULL, &text, &info, &len, &err);
    cr_assert_eq(rc, 0, "stats: %s", err.msg);
    double value = -1;
    rc = wire_info_lookup(info, len, path, &value);
    cr_assert_eq(rc, 0, "stats have no %s: %s", path, text ? text : "");
    free(info);
    free(text);
    return value;
}

/* The collection's count from the coordinator's stats ("collections.NAME.count"). */
static double s_count(shoal_client_t *c, const char *coll)
{
    char path[128];
    snprintf(path, sizeof path, "collections.%s.count", coll);
    return s_coord_stat(c, path);
}

/* ------------------------------------------------------------------------ */
/* 1. Recall                                                                */
/* ------------------------------------------------------------------------ */

#define S_NLIST 64

Test(cluster, siftsmall_recall_default_and_exact)
{
    s_sift_t s;
    s_cluster_t cl;
    shoal_client_t *c = s_start_loaded(&s, &cl, 20000, "sift", 0, S_NLIST);

    double recall = s_default_recall(c, "sift", &s);
    cr_assert_geq(recall, 0.95, "default recall@10 %.4f", recall);
    s_check_exact(c, "sift", &s, S_NLIST);

    s_finish(&c, &s);
}

/*
 * A collection created with storage sq8 through the coordinator: its shards
 * keep the codes only, and the cluster answers as for f32: default recall
 * at the floor, exact mode exact; the coordinator's status names the storage.
 */
Test(cluster, sq8_collection_recall_and_exact)
{
    s_sift_t s;
    s_cluster_t cl;
    s_sift_load(&s);
    s_cluster_start(&cl, 20000);
    shoal_client_t *c = s_client(&cl, S_TIMEOUT_MS);
    shoal_create_opts_t copts = {.nlist = S_NLIST, .storage = "sq8"};
    s_load_with(c, "sift8", &s, s.n, &copts);
    double recall = s_default_recall(c, "sift8", &s);
    cr_assert_geq(recall, 0.95, "sq8 default recall@10 %.4f", recall);
    s_check_exact(c, "sift8", &s, S_NLIST);
    char *info = NULL;
    shoal_err_t err;
    cr_assert_eq(shoal_client_stats(c, "sift8", &info, NULL, NULL, &err), 0, "%s", err.msg);
    cr_assert(info && strstr(info, "\"storage\": \"sq8\""), "status: %s", info ? info : "");
    free(info);
    /* Every shard encodes with the coordinator's quantizer (trained at train,
     * sent with the inserts), not one of its own first rows: one CRC. */
    double crc[S_NSHARDS];
    for (size_t sh = 0; sh < S_NSHARDS; sh++) {
        shoal_client_t *sc = s_shard_client(&cl.shards[sh]);
        void *sinfo = NULL;
        size_t slen = 0;
        cr_assert_eq(shoal_client_stats(sc, "sift8", NULL, &sinfo, &slen, &err), 0, "%s", err.msg);
        cr_assert_eq(wire_info_lookup(sinfo, slen, "collections.sift8.quantizer_crc32", &crc[sh]),
                     0, "shard %zu stats lack quantizer_crc32", sh);
        cr_assert_neq(crc[sh], 0, "shard %zu has no quantizer", sh);
        cr_assert_eq(crc[sh], crc[0], "shard %zu's quantizer differs from shard 0's", sh);
        free(sinfo);
        shoal_client_destroy(&sc);
    }
    shoal_create_opts_t bad = {.nlist = S_NLIST, .storage = "f8"};
    cr_assert_eq(shoal_client_create_ivf(c, "bad", s.dim, SHOAL_METRIC_L2, &bad, &err),
                 SHOAL_EINVAL);
    s_finish(&c, &s);
}

/*
 * Routing on the routing thread (coord_route.c) and sub-batches sent over
 * several turns of the loop give the answers of one plan sent at once: the
 * coordinator restarted with --route-inline-macs 1 (every batch to the
 * thread) and --sub-batch-max 7 (each shard's share in requests of 7
 * queries, one per shard per turn) answers siftsmall's queries, default and exact, with the
 * same ids and distances as with the default (100 queries x 64 lists x 128
 * are routed on the loop), and so does a knn_graph chunk; an insert routed
 * there lands in the right lists (each row is its own exact nearest).
 */
Test(cluster, routing_thread_and_sub_batches_answer_as_one_plan_sent_at_once)
{
    s_sift_t s;
    s_cluster_t cl;
    shoal_client_t *c = s_start_loaded(&s, &cl, 20000, "sift", 0, S_NLIST);
    uint64_t *ids[2][2] = {{NULL}};
    float *dists[2][2] = {{NULL}};
    uint64_t *graph[2] = {NULL};
    shoal_search_info_t info;
    for (int run = 0; run < 2; run++) {
        if (run == 1) {
            shoal_client_destroy(&c);
            s_proc_stop(&cl.coord);
            snprintf(cl.route_macs, sizeof cl.route_macs, "1");
            snprintf(cl.sub_batch, sizeof cl.sub_batch, "7");
            s_coord_start(&cl);
            s_wait_shards_up(&cl);
            c = s_client(&cl, S_TIMEOUT_MS);
        }
        s_search(c, "sift", s.queries, s.nq, s.dim, WIRE_MODE_AUTO, 0, &ids[run][0],
                 &dists[run][0], &info);
        cr_assert_eq(info.partial, 0);
        s_search(c, "sift", s.queries, s.nq, s.dim, WIRE_MODE_EXACT, 0, &ids[run][1],
                 &dists[run][1], &info);
        cr_assert_eq(info.partial, 0);
        shoal_search_opts_t gopts = {.k = S_K};
        shoal_knn_chunk_t chunk;
        shoal_err_t err;
        int rc = shoal_client_knn_graph(c, "sift", &gopts, 500, NULL, &chunk, &err);
        cr_assert_eq(rc, 0, "knn_graph: %s", err.msg);
        cr_assert_eq(chunk.n, 500);
        cr_assert_eq(chunk.partial, 0);
        graph[run] = malloc(chunk.n * S_K * sizeof *graph[run]);
        cr_assert_not_null(graph[run]);
        memcpy(graph[run], chunk.ids, chunk.n * S_K * sizeof *graph[run]);
        shoal_knn_chunk_fini(&chunk);
    }
    for (int m = 0; m < 2; m++)
        for (size_t i = 0; i < s.nq * S_K; i++) {
            cr_assert_eq(ids[0][m][i], ids[1][m][i], "mode %d, result %zu", m, i);
            cr_assert_eq(dists[0][m][i], dists[1][m][i], "mode %d, result %zu", m, i);
        }
    cr_assert_eq(memcmp(graph[0], graph[1], 500 * S_K * sizeof *graph[0]), 0,
                 "knn_graph rows differ");
    double recall = gt_recall(ids[1][0], S_K, s.gt, s.gtk, s.nq, S_K);
    cr_assert_geq(recall, 0.95, "default recall@10 %.4f on the routing thread", recall);
    /* an insert routed on the thread: the queries themselves, found exactly */
    uint64_t *qids = malloc(s.nq * sizeof *qids);
    cr_assert_not_null(qids);
    for (size_t i = 0; i < s.nq; i++)
        qids[i] = 5000000 + i;
    shoal_err_t err;
    cr_assert_eq(shoal_client_insert(c, "sift", qids, s.queries, s.nq, s.dim, NULL, &err), 0,
                 "insert routed on the thread: %s", err.msg);
    uint64_t *found = NULL;
    float *fd = NULL;
    s_search(c, "sift", s.queries, s.nq, s.dim, WIRE_MODE_EXACT, 0, &found, &fd, &info);
    for (size_t i = 0; i < s.nq; i++) {
        cr_assert_eq(found[i * S_K], qids[i], "query %zu: its own copy is not first", i);
        cr_assert_eq(fd[i * S_K], 0.0f);
    }
    cr_assert_eq(s_count(c, "sift"), (double)(s.n + s.nq));
    free(qids);
    free(found);
    free(fd);
    for (int r = 0; r < 2; r++) {
        free(ids[r][0]);
        free(ids[r][1]);
        free(dists[r][0]);
        free(dists[r][1]);
        free(graph[r]);
    }
    s_proc_stop(&cl.coord);
    s_finish(&c, &s);
}

/* ------------------------------------------------------------------------ */
/* 2. Upsert and delete, across a restart of every process                  */
/* ------------------------------------------------------------------------ */

#define S_SMALL_N     2000
#define S_SMALL_NLIST 32

/* The row (of the first n) farthest from row id. */
static uint64_t s_farthest(const s_sift_t *s, uint64_t id, size_t n)
{
    uint64_t best = id;
    double best_d = -1;
    for (uint64_t i = 0; i < n; i++) {
        double d = s_true_dist(SHOAL_METRIC_L2, s_row(s, id), s_row(s, i), s->dim);
        if (d > best_d) {
            best_d = d;
            best = i;
        }
    }
    return best;
}

static int s_has(const uint64_t *ids, size_t k, uint64_t id)
{
    for (size_t j = 0; j < k; j++)
        if (ids[j] == id)
            return 1;
    return 0;
}

/* Searches q with the default options and exactly over every list; returns both rows. */
static void s_search_both(shoal_client_t *c, const char *coll, const float *q, size_t dim,
                          uint64_t out[2][S_K], float dists[2][S_K])
{
    for (int exact = 0; exact < 2; exact++) {
        uint64_t *ids = NULL;
        float *d = NULL;
        shoal_search_info_t info;
        s_search(c, coll, q, 1, dim, exact ? WIRE_MODE_EXACT : WIRE_MODE_AUTO,
                 exact ? S_SMALL_NLIST : 0, &ids, &d, &info);
        cr_assert_eq(info.partial, 0, "partial answer, missing %s", info.missing);
        memcpy(out[exact], ids, sizeof out[exact]);
        memcpy(dists[exact], d, sizeof dists[exact]);
        free(ids);
        free(d);
    }
}

/* get of id from "sift": it holds want (dim floats, bit for bit), or (want NULL) is absent. */
static void s_assert_get(shoal_client_t *c, uint64_t id, const float *want, size_t dim)
{
    uint8_t *found = NULL;
    float *vecs = NULL;
    size_t got_dim = 0;
    shoal_err_t err;
    int rc = shoal_client_get(c, "sift", &id, 1, &found, &vecs, &got_dim, &err);
    cr_assert_eq(rc, 0, "get %lu: %s", (unsigned long)id, err.msg);
    if (want) {
        cr_assert_eq(got_dim, dim);
        cr_assert_eq(found[0], 1, "upserted id %lu not found by get", (unsigned long)id);
        cr_assert(memcmp(vecs, want, dim * sizeof(float)) == 0, "id %lu: stored vector differs",
                  (unsigned long)id);
    } else {
        cr_assert_eq(found[0], 0, "deleted id %lu still found by get", (unsigned long)id);
    }
    free(found);
    free(vecs);
}

/* id holds now_vec (bit for bit) and is found with it first at distance 0, not with old_vec. */
static void s_assert_moved(shoal_client_t *c, uint64_t id, const float *old_vec,
                           const float *now_vec, size_t dim)
{
    s_assert_get(c, id, now_vec, dim);
    uint64_t ids[2][S_K];
    float dists[2][S_K];
    s_search_both(c, "sift", now_vec, dim, ids, dists);
    for (int m = 0; m < 2; m++) {
        cr_assert_eq(ids[m][0], id, "%s search with the new vector: first is %lu, not %lu",
                     m ? "exact" : "default", (unsigned long)ids[m][0], (unsigned long)id);
        cr_assert_lt(fabsf(dists[m][0]), 1e-3f, "id %lu at distance %g", (unsigned long)id,
                     dists[m][0]);
    }
    s_search_both(c, "sift", old_vec, dim, ids, dists);
    for (int m = 0; m < 2; m++)
        cr_assert(!s_has(ids[m], S_K, id), "%s search with the old vector still returns %lu",
                  m ? "exact" : "default", (unsigned long)id);
}

/* id is gone: get does not find it, searches with either vector do not return it. */
static void s_assert_gone(shoal_client_t *c, uint64_t id, const float *old_vec,
                          const float *last_vec, size_t dim)
{
    s_assert_get(c, id, NULL, dim);
    uint64_t ids[2][S_K];
    float dists[2][S_K];
    const float *vs[2] = {old_vec, last_vec};
    for (int v = 0; v < 2; v++) {
        s_search_both(c, "sift", vs[v], dim, ids, dists);
        for (int m = 0; m < 2; m++)
            cr_assert(!s_has(ids[m], S_K, id), "%s search with its %s vector returns deleted %lu",
                      m ? "exact" : "default", v ? "last" : "old", (unsigned long)id);
    }
}

Test(cluster, upsert_moves_an_id_and_delete_removes_it_across_restarts)
{
    s_sift_t s;
    s_cluster_t cl;
    shoal_client_t *c = s_start_loaded(&s, &cl, 20000, "sift", S_SMALL_N, S_SMALL_NLIST);
    size_t dim = s.dim;

    /*
     * moved: upserted with a point near the row farthest from it (another
     * list), offset so that no stored vector equals it. gone: upserted the
     * same way, then deleted.
     */
    const uint64_t moved = 7, gone = 11;
    float *vecs = malloc(2 * dim * sizeof *vecs);
    cr_assert_not_null(vecs);
    uint64_t far_moved = s_farthest(&s, moved, S_SMALL_N),
             far_gone = s_farthest(&s, gone, S_SMALL_N);
    for (size_t d = 0; d < dim; d++) {
        vecs[d] = s_row(&s, far_moved)[d] + 1.0f;
        vecs[dim + d] = s_row(&s, far_gone)[d] + 2.0f;
    }
    uint64_t up_ids[2] = {moved, gone};
    shoal_err_t err;
    int rc = shoal_client_insert(c, "sift", up_ids, vecs, 2, dim, NULL, &err);
    cr_assert_eq(rc, 0, "upsert: %s", err.msg);
    s_assert_moved(c, moved, s_row(&s, moved), vecs, dim);
    s_assert_moved(c, gone, s_row(&s, gone), vecs + dim, dim);

    size_t deleted = 99;
    rc = shoal_client_delete(c, "sift", &gone, 1, &deleted, NULL, &err);
    cr_assert_eq(rc, 0, "delete: %s", err.msg);
    cr_assert_eq(deleted, 1);
    s_assert_gone(c, gone, s_row(&s, gone), vecs + dim, dim);
    s_assert_moved(c, moved, s_row(&s, moved), vecs, dim);
    rc = shoal_client_delete(c, "sift", &gone, 1, &deleted, NULL, &err);
    cr_assert_eq(rc, 0, "second delete: %s", err.msg);
    cr_assert_eq(deleted, 0, "a second delete of %lu counted %zu", (unsigned long)gone, deleted);
    shoal_client_destroy(&c);

    /* every process stopped cleanly and started again on its data */
    s_proc_stop(&cl.coord);
    for (int i = 0; i < S_NSHARDS; i++)
        s_proc_stop(&cl.shards[i]);
    for (int i = 0; i < S_NSHARDS; i++)
        s_shard_start(&cl.shards[i]);
    s_coord_start(&cl);
    c = s_client(&cl, S_TIMEOUT_MS);
    s_wait_complete(c, "sift", &s, S_SMALL_NLIST);

    s_assert_moved(c, moved, s_row(&s, moved), vecs, dim);
    s_assert_gone(c, gone, s_row(&s, gone), vecs + dim, dim);

    shoal_client_destroy(&c);
    free(vecs);
    s_dataset_free(&s);
}

/* ------------------------------------------------------------------------ */
/* 3. A shard killed                                                        */
/* ------------------------------------------------------------------------ */

Test(cluster, killed_shard_gives_partial_answers_naming_it_then_recovers)
{
    s_sift_t s;
    s_cluster_t cl;
    shoal_client_t *c = s_start_loaded(&s, &cl, 3000, "sift", 0, S_NLIST);
    s_check_exact(c, "sift", &s, S_NLIST);

    s_proc_t *victim = &cl.shards[1];
    s_proc_kill9(victim);

    /*
     * Every list probed, so every query needs every shard. The first search
     * may wait for the deadline (the shard not yet marked down), later ones
     * not; all must answer, partial, naming exactly the dead shard, with the
     * live shards' results (about two thirds of the true neighbours).
     */
    for (int round = 0; round < 3; round++) {
        uint64_t *ids = NULL;
        shoal_search_info_t info;
        s_search(c, "sift", s.queries, s.nq, s.dim, WIRE_MODE_EXACT, S_NLIST, &ids, NULL, &info);
        cr_assert_eq(info.partial, 1, "round %d: a shard is dead but the answer is complete",
                     round);
        cr_assert_str_eq(info.missing, victim->endpoint,
                         "round %d: missing \"%s\", expected \"%s\"", round, info.missing,
                         victim->endpoint);
        for (size_t i = 0; i < s.nq * S_K; i++)
            cr_assert_lt(ids[i], s.n, "round %d: result %zu is id %lu", round, i,
                         (unsigned long)ids[i]);
        double recall = gt_recall(ids, S_K, s.gt, s.gtk, s.nq, S_K);
        cr_log_info("round %d with %s dead: recall@10 %.4f", round, victim->endpoint, recall);
        cr_assert_geq(recall, 0.3, "round %d: partial recall@10 %.4f", round, recall);
        free(ids);
    }
    /* the default search answers too; when partial, it names only the dead shard */
    uint64_t *ids = NULL;
    shoal_search_info_t info;
    s_search(c, "sift", s.queries, s.nq, s.dim, WIRE_MODE_AUTO, 0, &ids, NULL, &info);
    if (info.partial)
        cr_assert_str_eq(info.missing, victim->endpoint);
    free(ids);

    s_shard_start(victim);
    s_wait_complete(c, "sift", &s, S_NLIST);
    s_check_exact(c, "sift", &s, S_NLIST);
    double recall = s_default_recall(c, "sift", &s);
    cr_assert_geq(recall, 0.95, "default recall@10 after the shard's restart %.4f", recall);

    s_finish(&c, &s);
}

/* ------------------------------------------------------------------------ */
/* 4. The coordinator killed                                                */
/* ------------------------------------------------------------------------ */

/*
 * Same answers: distances equal rank by rank, and the same ids except where a
 * tie with the 10th distance lets another id in.
 */
static void s_assert_same_answers(const uint64_t *ids_a, const float *d_a, const uint64_t *ids_b,
                                  const float *d_b, size_t nq)
{
    for (size_t q = 0; q < nq; q++) {
        const uint64_t *ra = ids_a + q * S_K, *rb = ids_b + q * S_K;
        const float *da = d_a + q * S_K, *db = d_b + q * S_K;
        for (size_t j = 0; j < S_K; j++) {
            cr_assert(fabsf(da[j] - db[j]) <= 1e-4f * fabsf(da[j]) + 1e-3f,
                      "query %zu rank %zu: distance %g before, %g after", q, j, da[j], db[j]);
            if (da[j] == da[S_K - 1])
                continue;
            cr_assert(s_has(rb, S_K, ra[j]), "query %zu: id %lu (rank %zu) no longer returned", q,
                      (unsigned long)ra[j], j);
        }
    }
}

Test(cluster, coordinator_sigkill_keeps_catalog_and_answers)
{
    s_sift_t s;
    s_cluster_t cl;
    shoal_client_t *c = s_start_loaded(&s, &cl, 20000, "sift", 0, S_NLIST);
    cr_assert_eq(s_count(c, "sift"), (double)s.n);

    uint64_t *ids[2][2] = {{NULL, NULL}, {NULL, NULL}};
    float *dists[2][2] = {{NULL, NULL}, {NULL, NULL}};
    shoal_search_info_t info;
    for (int after = 0; after < 2; after++) {
        if (after) {
            shoal_client_destroy(&c);
            s_proc_kill9(&cl.coord);
            s_coord_start(&cl);
            c = s_client(&cl, S_TIMEOUT_MS);
            s_wait_complete(c, "sift", &s, S_NLIST);
            cr_assert_eq(s_count(c, "sift"), (double)s.n);
        }
        s_search(c, "sift", s.queries, s.nq, s.dim, WIRE_MODE_AUTO, 0, &ids[after][0],
                 &dists[after][0], &info);
        cr_assert_eq(info.partial, 0, "partial, missing %s", info.missing);
        s_search(c, "sift", s.queries, s.nq, s.dim, WIRE_MODE_EXACT, S_NLIST, &ids[after][1],
                 &dists[after][1], &info);
        cr_assert_eq(info.partial, 0, "partial, missing %s", info.missing);
    }
    for (int m = 0; m < 2; m++)
        s_assert_same_answers(ids[0][m], dists[0][m], ids[1][m], dists[1][m], s.nq);
    double recall = gt_recall(ids[1][0], S_K, s.gt, s.gtk, s.nq, S_K);
    cr_assert_geq(recall, 0.95, "default recall@10 after the restart %.4f", recall);
    s_assert_exact(&s, ids[1][1]);

    for (int a = 0; a < 2; a++)
        for (int m = 0; m < 2; m++) {
            free(ids[a][m]);
            free(dists[a][m]);
        }
    s_finish(&c, &s);
}

/* ------------------------------------------------------------------------ */
/* 5. Bad requests                                                          */
/* ------------------------------------------------------------------------ */

#define S_BAD_N     500
#define S_BAD_NLIST 16
#define S_KNOWN_ID  42

/* After a bad request: the coordinator still answers a ping and finds a stored row. */
static void s_assert_serving(shoal_client_t *c, const s_sift_t *s)
{
    shoal_err_t err;
    int rc = shoal_client_ping(c, NULL, NULL, &err);
    cr_assert_eq(rc, 0, "ping after a bad request: %s", err.msg);
    uint64_t *ids = NULL;
    float *dists = NULL;
    shoal_search_info_t info;
    s_search(c, "c", s_row(s, S_KNOWN_ID), 1, s->dim, WIRE_MODE_EXACT, S_BAD_NLIST, &ids, &dists,
             &info);
    cr_assert_eq(ids[0], S_KNOWN_ID, "after a bad request row %d finds %lu", S_KNOWN_ID,
                 (unsigned long)ids[0]);
    cr_assert_lt(fabsf(dists[0]), 1e-3f);
    free(ids);
    free(dists);
}

/* A search expected to fail with code; needle (may be NULL) must be in the message. */
static void s_expect_search(shoal_client_t *c, const s_sift_t *s, const char *coll, const float *q,
                            size_t dim, const shoal_search_opts_t *opts, int code,
                            const char *needle, const char *what)
{
    uint64_t *ids = NULL;
    shoal_err_t err;
    int rc = shoal_client_search(c, coll, q, 1, dim, opts, &ids, NULL, NULL, &err);
    cr_assert_eq(rc, code, "%s: got %s (%s), expected %s", what, shoal_errname(rc),
                 rc ? err.msg : "", shoal_errname(code));
    cr_assert_null(ids, "%s: ids returned with an error", what);
    if (needle)
        cr_assert(strstr(err.msg, needle), "%s: message \"%s\" lacks \"%s\"", what, err.msg,
                  needle);
    s_assert_serving(c, s);
}

/* A search request's frames as copies a test may damage (tests/test_support.h). */
static void s_raw_search(s_raw_t *raw, const float *q, size_t dim)
{
    wire_request_t req;
    s_request_start(&req, WIRE_OP_SEARCH, 777, "c");
    req.n = 1;
    req.dim = dim;
    req.vecs = q;
    req.k = S_K;
    s_raw_from_req(&req, raw);
}

/*
 * Sends raw (then frees it) and expects an error reply with code, addressed to
 * op and rid (what the header map gives: docs/protocol.md section 6).
 */
static void s_expect_raw(shoal_client_t *c, const s_sift_t *s, s_raw_t *raw, int code, wire_op_t op,
                         uint64_t rid, const char *needle, const char *what)
{
    shoal_frames_t *reply;
    shoal_err_t err;
    int rc = s_raw_call(c, raw, &reply, &err);
    cr_assert_eq(rc, 0, "%s: no reply: %s", what, err.msg);
    wire_reply_t rep;
    s_reply_decode(reply, &rep, what);
    cr_assert_eq(rep.code, code, "%s: got %s (%s), expected %s", what, shoal_errname(rep.code),
                 rep.msg, shoal_errname(code));
    if (needle)
        cr_assert(strstr(rep.msg, needle), "%s: message \"%s\" lacks \"%s\"", what, rep.msg,
                  needle);
    cr_assert_eq(rep.op, op, "%s: reply op %d, expected %d", what, (int)rep.op, (int)op);
    cr_assert_eq(rep.rid, rid, "%s: reply rid %llu, expected %llu", what,
                 (unsigned long long)rep.rid, (unsigned long long)rid);
    wire_reply_fini(&rep);
    shoal_frames_destroy(&reply);
    s_raw_fini(raw);
    s_assert_serving(c, s);
}

Test(cluster, bad_requests_get_errors_and_the_coordinator_keeps_serving)
{
    s_sift_t s;
    s_cluster_t cl;
    shoal_client_t *c = s_start_loaded(&s, &cl, 20000, "c", S_BAD_N, S_BAD_NLIST);
    size_t dim = s.dim;
    s_assert_serving(c, &s);
    const float *q = s_row(&s, S_KNOWN_ID);
    shoal_err_t err;
    int rc;

    /* wrong dim: search and insert */
    shoal_search_opts_t opts = {.k = S_K};
    s_expect_search(c, &s, "c", q, dim / 2, &opts, SHOAL_EDIM, "128", "search with half the dim");
    uint64_t new_ids[2] = {S_BAD_N + 1, S_BAD_N + 2};
    float *two = malloc(2 * dim * sizeof *two);
    cr_assert_not_null(two);
    memcpy(two, s_row(&s, S_BAD_N + 1), dim * sizeof *two);
    memcpy(two + dim, s_row(&s, S_BAD_N + 2), dim * sizeof *two);
    rc = shoal_client_insert(c, "c", new_ids, two, 2, dim / 2, NULL, &err);
    cr_assert_eq(rc, SHOAL_EDIM, "insert with half the dim: %s (%s)", shoal_errname(rc), err.msg);
    s_assert_serving(c, &s);

    /* unknown collection */
    s_expect_search(c, &s, "nosuch", q, dim, &opts, SHOAL_ENOTFOUND, "nosuch",
                    "search an unknown collection");
    rc = shoal_client_insert(c, "nosuch", new_ids, two, 2, dim, NULL, &err);
    cr_assert_eq(rc, SHOAL_ENOTFOUND, "insert into an unknown collection: %s (%s)",
                 shoal_errname(rc), err.msg);
    s_assert_serving(c, &s);

    /* k = 0, k over the limit, nprobe over nlist */
    opts.k = 0;
    s_expect_search(c, &s, "c", q, dim, &opts, SHOAL_EINVAL, NULL, "k = 0");
    opts.k = WIRE_MAX_K_DEFAULT + 1;
    s_expect_search(c, &s, "c", q, dim, &opts, SHOAL_ELIMIT, NULL, "k over the limit");
    opts.k = S_K;
    opts.nprobe = S_BAD_NLIST + 1;
    s_expect_search(c, &s, "c", q, dim, &opts, SHOAL_EINVAL, "nprobe", "nprobe over nlist");
    opts.nprobe = 0;
    /* ef beyond the index's bound: a limit, like k (docs/protocol.md section 7) */
    opts.ef = 100000;
    s_expect_search(c, &s, "c", q, dim, &opts, SHOAL_ELIMIT, "\"ef\" must be 1..65536",
                    "ef over the limit");
    opts.ef = 0;

    /* NaN in a query and in an insert (row 1): nothing inserted */
    float *bad = malloc(dim * sizeof *bad);
    cr_assert_not_null(bad);
    memcpy(bad, q, dim * sizeof *bad);
    bad[3] = NAN;
    s_expect_search(c, &s, "c", bad, dim, &opts, SHOAL_EINVAL, NULL, "NaN in a query");
    two[dim + 5] = NAN;
    rc = shoal_client_insert(c, "c", new_ids, two, 2, dim, NULL, &err);
    cr_assert_eq(rc, SHOAL_EINVAL, "NaN in an insert: %s (%s)", shoal_errname(rc), err.msg);
    s_assert_serving(c, &s);
    uint8_t *found = NULL;
    float *vecs = NULL;
    size_t got_dim = 0;
    rc = shoal_client_get(c, "c", new_ids, 2, &found, &vecs, &got_dim, &err);
    cr_assert_eq(rc, 0, "get: %s", err.msg);
    cr_assert(found[0] == 0 && found[1] == 0, "a batch with a NaN was partly inserted");
    free(found);
    free(vecs);

    /* train twice; an untrained collection; training on fewer rows than nlist */
    rc = shoal_client_train(c, "c", s.base, S_BAD_N, dim, NULL, NULL, &err);
    cr_assert_eq(rc, SHOAL_EEXIST, "second train: %s (%s)", shoal_errname(rc), err.msg);
    s_assert_serving(c, &s);
    shoal_create_opts_t copts = {.nlist = S_BAD_NLIST};
    rc = shoal_client_create_ivf(c, "untrained", dim, SHOAL_METRIC_L2, &copts, &err);
    cr_assert_eq(rc, 0, "create untrained: %s", err.msg);
    /* the shards' build defaults, filled in by the coordinator (11.2) */
    cr_assert_eq(s_stat(c, "collections.untrained.M"), HNSW_M_DEFAULT);
    cr_assert_eq(s_stat(c, "collections.untrained.ef_construction"), HNSW_EF_CONSTRUCTION_DEFAULT);
    /* fewer rows than nlist cannot train it, so they cannot be inserted (11.7) */
    rc = shoal_client_insert(c, "untrained", new_ids, s_row(&s, S_BAD_N + 1), 2, dim, NULL, &err);
    cr_assert_eq(rc, SHOAL_EINVAL, "insert 2 rows untrained: %s (%s)", shoal_errname(rc), err.msg);
    cr_assert(strstr(err.msg, "not trained"), "%s", err.msg);
    /* An untrained collection holds nothing (inserts need centroids), so a
     * search is answered, with every slot padding, rather than refused. */
    uint64_t *ids = NULL;
    rc = shoal_client_search(c, "untrained", q, 1, dim, &opts, &ids, NULL, NULL, &err);
    cr_assert_eq(rc, 0, "search on an untrained collection: %s (%s)", shoal_errname(rc), err.msg);
    for (size_t j = 0; j < opts.k; j++)
        cr_assert_eq(ids[j], TOPK_ID_NONE, "untrained collection returned id %llu",
                     (unsigned long long)ids[j]);
    free(ids);
    s_assert_serving(c, &s);
    rc = shoal_client_train(c, "untrained", s.base, S_BAD_NLIST - 1, dim, NULL, NULL, &err);
    cr_assert_eq(rc, SHOAL_EINVAL, "train on %d rows for nlist %d: %s (%s)", S_BAD_NLIST - 1,
                 S_BAD_NLIST, shoal_errname(rc), err.msg);
    s_assert_serving(c, &s);
    rc = shoal_client_train(c, "untrained", s.base, S_BAD_N, dim, NULL, NULL, &err);
    cr_assert_eq(rc, 0, "train after the refused one: %s", err.msg);
    /* a write at the coordinator has no one sequence number: seq 0 (11.7) */
    uint64_t seq = 99;
    rc = shoal_client_insert(c, "untrained", new_ids, s_row(&s, S_BAD_N + 1), 2, dim, &seq, &err);
    cr_assert_eq(rc, 0, "insert once trained: %s", err.msg);
    cr_assert_eq(seq, 0, "insert at the coordinator: seq %llu", (unsigned long long)seq);
    size_t deleted = 0;
    seq = 99;
    rc = shoal_client_delete(c, "untrained", new_ids, 2, &deleted, &seq, &err);
    cr_assert_eq(rc, 0, "delete: %s", err.msg);
    cr_assert_eq(deleted, 2);
    cr_assert_eq(seq, 0, "delete at the coordinator: seq %llu", (unsigned long long)seq);

    /* malformed frames */
    s_raw_t raw;
    s_raw_search(&raw, q, dim);
    memset(raw.data[0], 0xc1, raw.size[0] < 4 ? raw.size[0] : 4); /* 0xc1: never valid msgpack */
    s_expect_raw(c, &s, &raw, SHOAL_EPROTO, WIRE_OP_NONE, 0, NULL, "garbage header");
    s_raw_search(&raw, q, dim);
    raw.size[0] /= 2;
    s_expect_raw(c, &s, &raw, SHOAL_EPROTO, WIRE_OP_NONE, 0, NULL, "truncated header");
    s_raw_search(&raw, q, dim);
    cr_assert_geq(raw.count, 2);
    raw.size[1] -= sizeof(float);
    s_expect_raw(c, &s, &raw, SHOAL_EPROTO, WIRE_OP_SEARCH, 777, "frame 1",
                 "query frame one float short");
    s_raw_search(&raw, q, dim);
    raw.data[0][raw.size[0]++] = 0xc0; /* s_raw_from_req leaves a byte of room */
    s_expect_raw(c, &s, &raw, SHOAL_EPROTO, WIRE_OP_SEARCH, 777, "trailing",
                 "a byte after the header map");
    /* unknown op: the op string "search" renamed in place (same length, still msgpack) */
    s_raw_search(&raw, q, dim);
    const char *op = "\xa6search";
    size_t at = 0;
    while (at + 7 <= raw.size[0] && memcmp(raw.data[0] + at, op, 7) != 0)
        at++;
    cr_assert_leq(at + 7, raw.size[0], "no op string in the encoded header");
    memcpy(raw.data[0] + at + 1, "frobni", 6);
    s_expect_raw(c, &s, &raw, SHOAL_EPROTO, WIRE_OP_NONE, 777, "frobni", "unknown op");

    /* none of it changed the collection */
    cr_assert_eq(s_count(c, "c"), (double)S_BAD_N);

    free(bad);
    free(two);
    s_finish(&c, &s);
}

/* ------------------------------------------------------------------------ */
/* 6. k-NN graph                                                            */
/* ------------------------------------------------------------------------ */

Test(cluster, knn_graph_matches_exact_neighbours)
{
    s_sift_t s;
    s_cluster_t cl;
    shoal_client_t *c = s_start_loaded(&s, &cl, 30000, "sift", 0, S_NLIST);

    uint64_t *graph = malloc(s.n * S_K * sizeof *graph);
    uint8_t *seen = calloc(s.n, 1);
    cr_assert(graph && seen);
    shoal_search_opts_t opts = {.k = S_K};
    char cursor[WIRE_CURSOR_MAX + 1] = "";
    size_t rows = 0, chunks = 0;
    do {
        shoal_knn_chunk_t chunk;
        shoal_err_t err;
        int rc = shoal_client_knn_graph(c, "sift", &opts, 0, cursor, &chunk, &err);
        cr_assert_eq(rc, 0, "knn_graph chunk %zu: %s", chunks, err.msg);
        cr_assert_eq(chunk.partial, 0, "chunk %zu partial, missing %s", chunks, chunk.missing);
        cr_assert_eq(chunk.k, S_K);
        cr_assert_eq(chunk.total, s.n, "total %lu", (unsigned long)chunk.total);
        for (size_t r = 0; r < chunk.n; r++) {
            uint64_t qid = chunk.qids[r];
            cr_assert_lt(qid, s.n, "row id %lu", (unsigned long)qid);
            cr_assert_eq(seen[qid], 0, "row %lu appears twice", (unsigned long)qid);
            seen[qid] = 1;
            const uint64_t *row = chunk.ids + r * S_K;
            cr_assert(!s_has(row, S_K, qid), "row %lu lists itself", (unsigned long)qid);
            memcpy(graph + qid * S_K, row, S_K * sizeof *row);
        }
        rows += chunk.n;
        chunks++;
        snprintf(cursor, sizeof cursor, "%s", chunk.cursor);
        shoal_knn_chunk_fini(&chunk);
        cr_assert_leq(chunks, s.n + 1, "the cursor never ends");
    } while (cursor[0]);
    cr_assert_eq(rows, s.n, "%zu rows in %zu chunks for %zu stored ids", rows, chunks, s.n);

    /* exact neighbours: k + 1 over the base, each row's own id dropped (else the last) */
    uint64_t *exact = malloc(s.n * (S_K + 1) * sizeof *exact);
    int32_t *truth = malloc(s.n * S_K * sizeof *truth);
    cr_assert(exact && truth);
    shoal_err_t err;
    int rc =
        gt_knn(s.base, s.n, s.base, s.n, s.dim, SHOAL_METRIC_L2, S_K + 1, 2, exact, NULL, &err);
    cr_assert_eq(rc, 0, "gt_knn: %s", err.msg);
    for (size_t i = 0; i < s.n; i++) {
        size_t out = 0;
        for (size_t j = 0; j <= S_K && out < S_K; j++)
            if (exact[i * (S_K + 1) + j] != i)
                truth[i * S_K + out++] = (int32_t)exact[i * (S_K + 1) + j];
    }
    double recall = gt_recall(graph, S_K, truth, S_K, s.n, S_K);
    cr_log_info("knn_graph: %zu rows in %zu chunks, recall@10 %.4f", rows, chunks, recall);
    cr_assert_geq(recall, 0.95, "knn_graph recall@10 %.4f", recall);

    free(exact);
    free(truth);
    free(graph);
    free(seen);
    s_finish(&c, &s);
}

/* ------------------------------------------------------------------------ */
/* 7. The CLI                                                               */
/* ------------------------------------------------------------------------ */

/* Runs bin/shoal -c ENDPOINT args...; must exit 0; returns its output (caller frees). */
static char *s_cli(const s_cluster_t *cl, const char *const *args)
{
    char bin[S_PATH_MAX], out_path[S_PATH_MAX];
    s_bin(bin, "shoal");
    s_scratch_path(out_path, "cli.out");
    char *argv[32];
    char *head[] = {bin, "-c", (char *)cl->coord.endpoint};
    s_argv_fill(argv, 32, head, 3, args);
    int status = s_run_to_end(argv, out_path, out_path, 240);
    char *out = s_slurp(out_path);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "shoal %s failed (status 0x%x):\n%s",
              args[0], status, out);
    return out;
}

Test(cluster, cli_loads_and_searches_siftsmall)
{
    s_sift_t s;
    s_sift_load(&s);
    s_cluster_t cl;
    s_cluster_start(&cl, 20000);

    const char *create[] = {"create", "sift",    "--dim", "128", "--metric",
                            "l2",     "--nlist", "64",    NULL};
    free(s_cli(&cl, create));
    const char *train[] = {"train", "sift", s.base_path, NULL};
    free(s_cli(&cl, train));
    const char *load[] = {"load", "sift", s.base_path, "--batch", "1000", NULL};
    free(s_cli(&cl, load));
    const char *search[] = {"search", "sift", s.query_path, "-k", "10", "--gt", s.gt_path, NULL};
    char *out = s_cli(&cl, search);

    /* the key=value line */
    const char *line = strstr(out, "recall@10=");
    cr_assert_not_null(line, "no recall@10= in the search output:\n%s", out);
    while (line > out && line[-1] != '\n')
        line--;
    size_t len = strcspn(line, "\n");
    char kv[1024];
    snprintf(kv, sizeof kv, "%.*s", (int)(len < sizeof kv ? len : sizeof kv - 1), line);
    double recall = strtod(strstr(kv, "recall@10=") + strlen("recall@10="), NULL);
    cr_log_info("shoal search: %s", kv);
    cr_assert_geq(recall, 0.95, "CLI recall@10 %.4f in \"%s\"", recall, kv);
    const char *keys[] = {"qps=", "p50_ms=", "p95_ms=", "p99_ms=", "shards_per_query="};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        cr_assert(strstr(kv, keys[i]), "\"%s\" lacks %s", kv, keys[i]);
    cr_assert_null(strstr(kv, "partial=1"), "\"%s\": partial", kv);
    free(out);

    /* and the client sees what the CLI loaded */
    shoal_client_t *c = s_client(&cl, S_TIMEOUT_MS);
    cr_assert_eq(s_count(c, "sift"), (double)s.n);
    s_finish(&c, &s);
}

/* ------------------------------------------------------------------------ */
/* 8. Interrupted writes re-driven at start-up                              */
/* ------------------------------------------------------------------------ */

#define S_REDRIVE_X      5         /* a stored id: a stale copy planted on another shard */
#define S_REDRIVE_Y      1000000   /* an id the map never had: copies planted on two shards */
#define S_REDRIVE_Y_ROW  6         /* the row whose vector Y's copies get */


/* found flag of id in "sift" on the server c talks to (a shard or the coordinator). */
static int s_found(shoal_client_t *c, uint64_t id, const char *where)
{
    uint8_t *found = NULL;
    float *vecs = NULL;
    size_t got_dim = 0;
    shoal_err_t err;
    int rc = shoal_client_get(c, "sift", &id, 1, &found, &vecs, &got_dim, &err);
    cr_assert_eq(rc, 0, "get %lu from %s: %s", (unsigned long)id, where, err.msg);
    int f = found[0];
    free(found);
    free(vecs);
    return f;
}

/* Inserts id with vec into "sift" on shard p, behind the coordinator's back. */
static void s_plant(s_proc_t *p, uint64_t id, const float *vec, size_t dim)
{
    shoal_client_t *sc = s_shard_client(p);
    shoal_err_t err;
    int rc = shoal_client_insert(sc, "sift", &id, vec, 1, dim, NULL, &err);
    cr_assert_eq(rc, 0, "insert %lu on shard %s: %s", (unsigned long)id, p->endpoint, err.msg);
    cr_assert_eq(s_found(sc, id, p->endpoint), 1, "planted id %lu not on shard %s",
                 (unsigned long)id, p->endpoint);
    shoal_client_destroy(&sc);
}

/* The coordinator's top-level "pending_intents". */
static double s_pending_intents(shoal_client_t *c)
{
    return s_coord_stat(c, "pending_intents");
}

/*
 * Two interrupted upserts, written into the catalog of a SIGKILLed
 * coordinator as if it had crashed between sending to the shards and deleting
 * stale copies: X moved from list L2 (shard B) to L (shard A, where the map has
 * it) with its old copy still on B; Y (never in the map) with copies on A and
 * B. The restarted coordinator must delete exactly the stale copies.
 */
Test(cluster, coordinator_restart_redrives_interrupted_writes)
{
    s_sift_t s;
    s_cluster_t cl;
    shoal_client_t *c = s_start_loaded(&s, &cl, 20000, "sift", S_SMALL_N, S_SMALL_NLIST);
    size_t dim = s.dim;
    const uint64_t x = S_REDRIVE_X, y = S_REDRIVE_Y;
    const float *xvec = s_row(&s, x), *yvec = s_row(&s, S_REDRIVE_Y_ROW);
    shoal_client_destroy(&c);
    s_proc_kill9(&cl.coord);

    /* X's list and owner, another shard's list, from the coordinator's catalog */
    shoal_err_t err;
    catalog_t *cat = catalog_open(cl.coord.data_dir, &err);
    cr_assert_not_null(cat, "catalog_open %s: %s", cl.coord.data_dir, err.msg);
    cr_assert_eq(catalog_shard_count(cat), S_NSHARDS);
    for (size_t i = 0; i < S_NSHARDS; i++)
        cr_assert_str_eq(catalog_shard(cat, i), cl.shards[i].endpoint, "catalog shard %zu", i);
    const catalog_coll_t *coll = catalog_find(cat, "sift");
    cr_assert_not_null(coll, "no collection sift in the catalog");
    cr_assert(coll->trained, "sift not trained in the catalog");
    cr_assert_eq(coll->nlist, S_SMALL_NLIST);
    uint32_t lists[2] = {0, 0};
    uint64_t lookup_ids[2] = {x, y};
    int rc = catalog_lookup(cat, "sift", lookup_ids, 2, lists, &err);
    cr_assert_eq(rc, 0, "catalog_lookup: %s", err.msg);
    uint32_t l = lists[0];
    cr_assert_lt(l, coll->nlist, "id %lu not in the map", (unsigned long)x);
    cr_assert_eq(lists[1], CATALOG_LIST_NONE, "id %lu in the map", (unsigned long)y);
    uint32_t a = coll->owners[l], l2 = CATALOG_LIST_NONE;
    for (uint32_t i = 0; i < coll->nlist && l2 == CATALOG_LIST_NONE; i++)
        if (coll->owners[i] != a)
            l2 = i;
    cr_assert_neq(l2, CATALOG_LIST_NONE, "every list is on shard %u", a);
    uint32_t b = coll->owners[l2];
    cr_assert(a < S_NSHARDS && b < S_NSHARDS);
    s_proc_t *shard_a = &cl.shards[a], *shard_b = &cl.shards[b];
    cr_log_info("id %lu: list %u on shard %u; stale copy in list %u on shard %u",
                (unsigned long)x, l, a, l2, b);

    /* the stale copies, then the intents that name them */
    shoal_client_t *ca = s_shard_client(shard_a), *cb = s_shard_client(shard_b);
    cr_assert_eq(s_found(cb, x, shard_b->endpoint), 0, "id %lu already on shard %u",
                 (unsigned long)x, b);
    cr_assert_eq(s_found(ca, x, shard_a->endpoint), 1, "id %lu not on its shard %u",
                 (unsigned long)x, a);
    s_plant(shard_b, x, xvec, dim);
    s_plant(shard_a, y, yvec, dim);
    s_plant(shard_b, y, yvec, dim);
    uint64_t txn[2] = {0, 0};
    rc = catalog_intent_put(cat, "sift", &x, &l2, &l, 1, &txn[0], &err);
    cr_assert_eq(rc, 0, "intent for %lu: %s", (unsigned long)x, err.msg);
    rc = catalog_intent_put(cat, "sift", &y, &l2, &l, 1, &txn[1], &err);
    cr_assert_eq(rc, 0, "intent for %lu: %s", (unsigned long)y, err.msg);
    catalog_intent_t *intents = NULL;
    size_t nintents = 0;
    rc = catalog_intents(cat, "sift", &intents, &nintents, &err);
    cr_assert_eq(rc, 0, "catalog_intents: %s", err.msg);
    cr_assert_eq(nintents, 2, "%zu intents stored", nintents);
    catalog_intents_free(intents, nintents);
    catalog_close(&cat);

    /* the restarted coordinator re-drives them (bounded polling) */
    s_coord_start(&cl);
    c = s_client(&cl, S_POLL_TIMEOUT_MS);
    double end = s_now() + S_POLL_WAIT_S, pending;
    while ((pending = s_pending_intents(c)) != 0) {
        cr_assert_lt(s_now(), end, "%.0f intents still pending after %.0f s", pending,
                     S_POLL_WAIT_S);
        s_sleep_ms(S_POLL_MS);
    }
    shoal_client_set_timeout(c, S_TIMEOUT_MS);
    s_wait_complete(c, "sift", &s, S_SMALL_NLIST);

    /* X: the stale copy gone from B, the live one kept on A, found once */
    cr_assert_eq(s_found(cb, x, shard_b->endpoint), 0, "stale copy of %lu still on shard %u",
                 (unsigned long)x, b);
    cr_assert_eq(s_found(ca, x, shard_a->endpoint), 1, "id %lu lost from its shard %u",
                 (unsigned long)x, a);
    cr_assert_eq(s_found(c, x, "the coordinator"), 1, "the coordinator lost id %lu",
                 (unsigned long)x);
    uint64_t *ids = NULL;
    float *dists = NULL;
    shoal_search_info_t info;
    s_search(c, "sift", xvec, 1, dim, WIRE_MODE_EXACT, S_SMALL_NLIST, &ids, &dists, &info);
    cr_assert_eq(info.partial, 0, "partial, missing %s", info.missing);
    size_t times = 0;
    for (size_t j = 0; j < S_K; j++)
        times += ids[j] == x;
    cr_assert_eq(times, 1, "exact search with row %lu returns it %zu times", (unsigned long)x,
                 times);
    free(ids);
    free(dists);

    /* Y: gone from both shards, never returned */
    cr_assert_eq(s_found(ca, y, shard_a->endpoint), 0, "unmapped id %lu still on shard %u",
                 (unsigned long)y, a);
    cr_assert_eq(s_found(cb, y, shard_b->endpoint), 0, "unmapped id %lu still on shard %u",
                 (unsigned long)y, b);
    cr_assert_eq(s_found(c, y, "the coordinator"), 0, "the coordinator finds unmapped %lu",
                 (unsigned long)y);
    s_search(c, "sift", yvec, 1, dim, WIRE_MODE_EXACT, S_SMALL_NLIST, &ids, &dists, &info);
    cr_assert_eq(info.partial, 0, "partial, missing %s", info.missing);
    cr_assert(!s_has(ids, S_K, y), "exact search returns unmapped id %lu", (unsigned long)y);
    free(ids);
    free(dists);

    shoal_client_destroy(&ca);
    shoal_client_destroy(&cb);
    s_finish(&c, &s);
}

/* ------------------------------------------------------------------------ */
/* 9. Shard faults during writes (issue 9: bugs 4, 5, 7, 8)                 */
/* ------------------------------------------------------------------------ */

#define S_FAULT_BATCH    100    /* rows per batch in the fault tests */
#define S_FAULT_HANG_ID  100000 /* first id of the batch sent to the frozen shard */
#define S_FAULT_OK_ID    200000 /* first id of the batch sent to the healthy shards */
#define S_FAULT_DOWN_MS  "15000" /* --down-after-ms: the frozen shard's writes hang this long */
#define S_FAULT_FAST_MS  10000  /* client timeout of a write that must not wait for that */
#define S_FAULT_SLOW_MS  50000  /* client timeout of the write that hangs (write timeout 60 s) */
#define S_FAULT_DELETES  400    /* ids deleted while a shard is frozen */
#define S_FAULT_LOG_MAX  3      /* re-drive lines a shard outage may log (warn level) */


/* The count of "sift" that shard i reports (-1: the shard has no such collection). */
static double s_shard_count(const s_cluster_t *cl, int i)
{
    shoal_client_t *sc = s_shard_client(&cl->shards[i]);
    double v = s_stat_or(sc, "collections.sift.count", -1);
    shoal_client_destroy(&sc);
    return v;
}

/* Sum of the shards' counts of "sift". */
static double s_shards_total(const s_cluster_t *cl)
{
    double total = 0;
    for (int i = 0; i < S_NSHARDS; i++) {
        double v = s_shard_count(cl, i);
        cr_assert_geq(v, 0, "shard %d has no collection sift", i);
        total += v;
    }
    return total;
}

/* where[id] = the shard holding row id of ids 0..n-1 (asked of each shard directly). */
static void s_where(const s_cluster_t *cl, size_t n, int *where)
{
    uint64_t *ids = malloc(n * sizeof *ids);
    cr_assert_not_null(ids);
    for (size_t i = 0; i < n; i++) {
        ids[i] = i;
        where[i] = -1;
    }
    for (int sh = 0; sh < S_NSHARDS; sh++) {
        shoal_client_t *sc = s_shard_client(&cl->shards[sh]);
        uint8_t *found = NULL;
        float *vecs = NULL;
        size_t got_dim = 0;
        shoal_err_t err;
        int rc = shoal_client_get(sc, "sift", ids, n, &found, &vecs, &got_dim, &err);
        cr_assert_eq(rc, 0, "get from shard %d: %s", sh, err.msg);
        for (size_t i = 0; i < n; i++)
            if (found[i])
                where[i] = sh;
        free(found);
        free(vecs);
        shoal_client_destroy(&sc);
    }
    free(ids);
}

/* Polls (bounded) until the coordinator has no pending intent. */
static void s_wait_no_intents(shoal_client_t *c)
{
    double end = s_now() + S_POLL_WAIT_S, pending;
    while ((pending = s_pending_intents(c)) != 0) {
        cr_assert_lt(s_now(), end, "%.0f intents still pending after %.0f s", pending,
                     S_POLL_WAIT_S);
        s_sleep_ms(S_POLL_MS);
    }
}

/* Polls (bounded) until the coordinator's count of "sift" equals the shards' sum; returns it. */
static double s_wait_counts_agree(const s_cluster_t *cl, shoal_client_t *c)
{
    double end = s_now() + S_POLL_WAIT_S, mine, theirs;
    while ((mine = s_count(c, "sift")) != (theirs = s_shards_total(cl))) {
        cr_assert_lt(s_now(), end, "the coordinator counts %.0f, the shards hold %.0f", mine,
                     theirs);
        s_sleep_ms(S_POLL_MS);
    }
    return mine;
}

/* How many of ids 0..n-1 the coordinator finds. */
static size_t s_found_count(shoal_client_t *c, uint64_t first, size_t n)
{
    uint64_t *ids = malloc(n * sizeof *ids);
    cr_assert_not_null(ids);
    for (size_t i = 0; i < n; i++)
        ids[i] = first + i;
    uint8_t *found = NULL;
    float *vecs = NULL;
    size_t got_dim = 0, hits = 0;
    shoal_err_t err;
    int rc = shoal_client_get(c, "sift", ids, n, &found, &vecs, &got_dim, &err);
    cr_assert_eq(rc, 0, "get %zu ids from the coordinator: %s", n, err.msg);
    for (size_t i = 0; i < n; i++)
        hits += found[i] != 0;
    free(found);
    free(vecs);
    free(ids);
    return hits;
}

/* The insert a second client runs while the test goes on (it hangs on a frozen shard). */
typedef struct {
    const char *endpoint;  /* the coordinator */
    const uint64_t *ids;   /* n */
    const float *vecs;     /* n x dim */
    size_t n, dim;
    int rc;                /* its result */
    shoal_err_t err;       /* and message */
} s_bg_insert_t;

static void *s_bg_insert_main(void *arg)
{
    s_bg_insert_t *bg = arg;
    shoal_client_t *c = shoal_client_new(bg->endpoint, S_FAULT_SLOW_MS, &bg->err);
    if (!c) {
        bg->rc = bg->err.code ? bg->err.code : SHOAL_EINTERNAL;
        return NULL;
    }
    bg->rc = shoal_client_insert(c, "sift", bg->ids, bg->vecs, bg->n, bg->dim, NULL, &bg->err);
    shoal_client_destroy(&c);
    return NULL;
}

/* Copies up to S_FAULT_BATCH rows whose shard is (or, want_on 0: is not) victim; ids from first. */
static size_t s_pick_rows(const s_sift_t *s, const int *where, size_t n, int victim, int want_on,
                          uint64_t first, uint64_t *ids, float *vecs)
{
    size_t m = 0;
    for (size_t i = 0; i < n && m < S_FAULT_BATCH; i++) {
        if ((where[i] == victim) != want_on || where[i] < 0)
            continue;
        ids[m] = first + m;
        memcpy(vecs + m * s->dim, s_row(s, i), s->dim * sizeof(float));
        m++;
    }
    return m;
}

/*
 * Bug 4: with one shard frozen (SIGSTOP) and an insert hanging on it, an
 * insert routed only to the other shards is answered at once (before the
 * frozen shard is even marked down, 15 s); the hanging insert ends with
 * SHOAL_EUNAVAIL when it is marked down (not at the 60 s write timeout),
 * nothing acknowledged; after SIGCONT its intent is re-driven and the
 * coordinator's count equals the shards'.
 */
Test(cluster, frozen_shard_holds_up_only_the_writes_that_touch_it)
{
    s_sift_t s;
    s_cluster_t cl;
    s_sift_load(&s);
    s_cluster_start_down(&cl, 20000, S_FAULT_DOWN_MS);
    shoal_client_t *c = s_client(&cl, S_TIMEOUT_MS);
    s_load(c, "sift", &s, S_SMALL_N, S_SMALL_NLIST);
    int *where = malloc(S_SMALL_N * sizeof *where);
    uint64_t hang_ids[S_FAULT_BATCH], ok_ids[S_FAULT_BATCH];
    float *hang_vecs = malloc(S_FAULT_BATCH * s.dim * sizeof(float));
    float *ok_vecs = malloc(S_FAULT_BATCH * s.dim * sizeof(float));
    cr_assert(where && hang_vecs && ok_vecs);
    s_where(&cl, S_SMALL_N, where);
    const int victim = 2;
    /* the same vectors under new ids route to the same lists, so to the same shards */
    size_t nhang = s_pick_rows(&s, where, S_SMALL_N, victim, 1, S_FAULT_HANG_ID, hang_ids, hang_vecs);
    size_t nok = s_pick_rows(&s, where, S_SMALL_N, victim, 0, S_FAULT_OK_ID, ok_ids, ok_vecs);
    cr_assert(nhang > 0 && nok > 0, "rows on shard %d: %zu, elsewhere: %zu", victim, nhang, nok);

    cr_assert_eq(kill(cl.shards[victim].pid, SIGSTOP), 0);
    s_bg_insert_t bg = {.endpoint = cl.coord.endpoint, .ids = hang_ids, .vecs = hang_vecs,
                        .n = nhang, .dim = s.dim};
    pthread_t thread;
    cr_assert_eq(pthread_create(&thread, NULL, s_bg_insert_main, &bg), 0);
    /* wait (bounded) until the coordinator holds that insert: inflight counts this stats too */
    shoal_client_set_timeout(c, S_POLL_TIMEOUT_MS);
    double end = s_now() + S_POLL_WAIT_S;
    while (s_stat_or(c, "inflight", -1) < 2) {
        cr_assert_lt(s_now(), end, "the insert to the frozen shard never reached the coordinator");
        s_sleep_ms(S_POLL_MS);
    }

    shoal_client_t *fast = s_client(&cl, S_FAULT_FAST_MS);
    shoal_err_t err;
    int rc = shoal_client_insert(fast, "sift", ok_ids, ok_vecs, nok, s.dim, NULL, &err);
    cr_assert_eq(rc, 0, "an insert to healthy shards waited behind the frozen one: %s (%s)",
                 err.msg, shoal_errname(rc));
    shoal_client_destroy(&fast);

    pthread_join(thread, NULL);
    cr_assert_eq(bg.rc, SHOAL_EUNAVAIL, "the hanging insert ended with %s: %s",
                 shoal_errname(bg.rc), bg.err.msg);
    cr_assert(strstr(bg.err.msg, "marked down") && strstr(bg.err.msg, "nothing was acknowledged"),
              "message: %s", bg.err.msg);
    cr_assert(strstr(bg.err.msg, cl.shards[victim].endpoint), "message: %s", bg.err.msg);

    cr_assert_eq(kill(cl.shards[victim].pid, SIGCONT), 0);
    s_wait_no_intents(c);
    shoal_client_set_timeout(c, S_TIMEOUT_MS);
    double count = s_wait_counts_agree(&cl, c);
    cr_assert_eq(count, (double)(S_SMALL_N + nok), "count %.0f", count);
    cr_assert_eq(s_found_count(c, S_FAULT_OK_ID, nok), nok);
    cr_assert_eq(s_found_count(c, S_FAULT_HANG_ID, nhang), 0);
    s_wait_complete(c, "sift", &s, S_SMALL_NLIST);

    free(where);
    free(hang_vecs);
    free(ok_vecs);
    s_proc_stop(&cl.coord); /* exits 0: under ASan, nothing leaked */
    s_finish(&c, &s);
}

/*
 * A shard restarted before it was ever marked down (systemd brings a killed
 * shard back within a second): the insert that went to its old process is
 * answered SHOAL_EUNAVAIL naming the restart as soon as the new process
 * answers a ping (its first_rid, docs/protocol.md), not at the 60 s write
 * timeout (the client gives up at 50 s), nothing acknowledged; its intent is
 * then undone and the counts agree.
 */
Test(cluster, insert_lost_in_a_quick_shard_restart_fails_at_once)
{
    s_sift_t s;
    s_cluster_t cl;
    s_sift_load(&s);
    s_cluster_start_down(&cl, 20000, S_FAULT_DOWN_MS);
    shoal_client_t *c = s_client(&cl, S_TIMEOUT_MS);
    s_load(c, "sift", &s, S_SMALL_N, S_SMALL_NLIST);
    int *where = malloc(S_SMALL_N * sizeof *where);
    uint64_t ids[S_FAULT_BATCH];
    float *vecs = malloc(S_FAULT_BATCH * s.dim * sizeof(float));
    cr_assert(where && vecs);
    s_where(&cl, S_SMALL_N, where);
    const int victim = 1;
    size_t n = s_pick_rows(&s, where, S_SMALL_N, victim, 1, S_FAULT_HANG_ID, ids, vecs);
    cr_assert(n > 0, "no rows on shard %d", victim);

    /* frozen, the old process takes the insert into its socket buffer and never runs it */
    cr_assert_eq(kill(cl.shards[victim].pid, SIGSTOP), 0);
    s_bg_insert_t bg = {.endpoint = cl.coord.endpoint, .ids = ids, .vecs = vecs, .n = n,
                        .dim = s.dim};
    pthread_t thread;
    cr_assert_eq(pthread_create(&thread, NULL, s_bg_insert_main, &bg), 0);
    shoal_client_set_timeout(c, S_POLL_TIMEOUT_MS);
    double end = s_now() + S_POLL_WAIT_S;
    while (s_stat_or(c, "inflight", -1) < 2) {
        cr_assert_lt(s_now(), end, "the insert never reached the coordinator");
        s_sleep_ms(S_POLL_MS);
    }
    s_proc_kill9(&cl.shards[victim]);
    s_shard_start(&cl.shards[victim]);

    pthread_join(thread, NULL);
    cr_assert_eq(bg.rc, SHOAL_EUNAVAIL, "the insert ended with %s: %s", shoal_errname(bg.rc),
                 bg.err.msg);
    cr_assert(strstr(bg.err.msg, "restarted") && strstr(bg.err.msg, "nothing was acknowledged"),
              "message: %s", bg.err.msg);
    cr_assert(strstr(bg.err.msg, cl.shards[victim].endpoint), "message: %s", bg.err.msg);

    s_wait_no_intents(c);
    shoal_client_set_timeout(c, S_TIMEOUT_MS);
    double count = s_wait_counts_agree(&cl, c);
    cr_assert_eq(count, (double)S_SMALL_N, "count %.0f", count);
    cr_assert_eq(s_found_count(c, S_FAULT_HANG_ID, n), 0);
    s_wait_complete(c, "sift", &s, S_SMALL_NLIST);

    free(where);
    free(vecs);
    s_proc_stop(&cl.coord);
    s_finish(&c, &s);
}

/* Lines of path that contain needle; *with_word counts those that also contain word. */
static size_t s_log_lines(const char *path, const char *needle, const char *word, size_t *with_word)
{
    char *text = s_slurp(path);
    cr_assert_not_null(text, "cannot read %s", path);
    size_t n = 0;
    *with_word = 0;
    for (char *line = text; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        if (strstr(line, needle)) {
            n++;
            if (strstr(line, word))
                (*with_word)++;
            cr_log_info("log: %s", line);
        }
        line = nl ? nl + 1 : NULL;
    }
    free(text);
    return n;
}

/*
 * Bugs 5 and 8: a delete spread over every shard while one is frozen fails
 * (the frozen shard is marked down), but completes when the shard is back:
 * after the re-drive, the coordinator's count, the shards' counts and the ids
 * found agree. The outage (5 s, pings every 100 ms) logs a handful of
 * re-drive lines, labelled "delete".
 */
Test(cluster, delete_during_a_shard_outage_completes_when_it_is_back)
{
    s_sift_t s;
    s_cluster_t cl;
    shoal_client_t *c = s_start_loaded(&s, &cl, 20000, "sift", S_SMALL_N, S_SMALL_NLIST);
    const int victim = 1;
    uint64_t ids[S_FAULT_DELETES];
    for (size_t i = 0; i < S_FAULT_DELETES; i++)
        ids[i] = i; /* rows spread over every shard (s_where would show it) */

    cr_assert_eq(kill(cl.shards[victim].pid, SIGSTOP), 0);
    shoal_err_t err;
    int rc = shoal_client_delete(c, "sift", ids, S_FAULT_DELETES, NULL, NULL, &err);
    cr_assert_neq(rc, 0, "a delete touching a frozen shard succeeded");
    cr_log_info("delete with shard %d frozen: %s (%s)", victim, err.msg, shoal_errname(rc));
    s_sleep_ms(5000); /* the outage goes on: the re-drive must not log it over and over */
    cr_assert_eq(kill(cl.shards[victim].pid, SIGCONT), 0);

    shoal_client_set_timeout(c, S_POLL_TIMEOUT_MS);
    s_wait_no_intents(c);
    shoal_client_set_timeout(c, S_TIMEOUT_MS);
    double count = s_wait_counts_agree(&cl, c);
    cr_assert_eq(count, (double)(S_SMALL_N - S_FAULT_DELETES), "count %.0f", count);
    cr_assert_eq(s_found_count(c, 0, S_SMALL_N), S_SMALL_N - S_FAULT_DELETES);
    cr_assert_eq(s_found_count(c, 0, S_FAULT_DELETES), 0);
    s_wait_complete(c, "sift", &s, S_SMALL_NLIST);

    size_t labelled = 0;
    size_t lines = s_log_lines(cl.coord.log, "re-drive", "delete", &labelled);
    cr_assert_leq(lines, S_FAULT_LOG_MAX, "%zu re-drive lines for one outage", lines);
    cr_assert_geq(labelled, 1, "no re-drive line says \"delete\"");
    s_proc_stop(&cl.coord);
    s_finish(&c, &s);
}

/*
 * Bug 7: a collection dropped on one shard behind the coordinator's back:
 * searches answer partial naming that shard (not SHOAL_ENOTFOUND), and the
 * coordinator re-creates it there within a bounded wait, after which searches
 * are complete again. (Its vectors are gone: R = 1 keeps no replica.)
 */
Test(cluster, collection_dropped_on_a_shard_is_recreated)
{
    s_sift_t s;
    s_cluster_t cl;
    shoal_client_t *c = s_start_loaded(&s, &cl, 20000, "sift", S_SMALL_N, S_SMALL_NLIST);
    const int victim = 0;
    shoal_client_t *sc = s_shard_client(&cl.shards[victim]);
    shoal_err_t err;
    int rc = shoal_client_drop(sc, "sift", &err);
    cr_assert_eq(rc, 0, "drop on shard %d: %s", victim, err.msg);
    cr_assert_eq(s_shard_count(&cl, victim), -1, "shard %d still has sift", victim);

    uint64_t *ids = NULL;
    shoal_search_info_t info;
    s_search(c, "sift", s.queries, s.nq, s.dim, WIRE_MODE_EXACT, S_SMALL_NLIST, &ids, NULL, &info);
    free(ids);
    cr_assert_eq(info.partial, 1, "a shard lacks the collection but the answer is complete");
    cr_assert_str_eq(info.missing, cl.shards[victim].endpoint);

    double end = s_now() + S_POLL_WAIT_S;
    while (s_shard_count(&cl, victim) < 0) {
        cr_assert_lt(s_now(), end, "shard %d still lacks sift after %.0f s", victim,
                     S_POLL_WAIT_S);
        s_sleep_ms(S_POLL_MS);
    }
    s_wait_complete(c, "sift", &s, S_SMALL_NLIST);
    cr_assert_geq(s_stat_or(c, "repairs", -1), 1);
    size_t named = 0;
    size_t lines = s_log_lines(cl.coord.log, "re-created collection", cl.shards[victim].endpoint,
                               &named);
    cr_assert_geq(named, 1, "%zu repair lines, none names the shard", lines);
    shoal_client_destroy(&sc);
    s_proc_stop(&cl.coord);
    s_finish(&c, &s);
}

/* ------------------------------------------------------------------------ */
/* Shards know their lists                                                  */
/* ------------------------------------------------------------------------ */

/* 1 when shard sh holds a replica of list l of coll. */
static int s_holds_list(const catalog_coll_t *coll, uint32_t l, size_t sh)
{
    for (uint32_t r = 0; r < coll->replication; r++)
        if (catalog_owner(coll, l, r) == sh)
            return 1;
    return 0;
}

/*
 * Every shard's per-list counts (list_counts) against the catalog: a shard
 * counts exactly the non-empty lists it holds a replica of, each with the
 * catalog's count. Returns the vectors counted over all shards.
 */
static uint64_t s_assert_lists_match(const s_cluster_t *cl, const catalog_coll_t *coll)
{
    shoal_err_t err;
    uint64_t total = 0;
    for (size_t sh = 0; sh < S_NSHARDS; sh++) {
        shoal_client_t *sc = s_shard_client(&cl->shards[sh]);
        uint32_t *lists = NULL;
        uint64_t *counts = NULL;
        size_t n = 0;
        cr_assert_eq(shoal_client_list_counts(sc, coll->name, &lists, &counts, &n, &err), 0, "%s",
                     err.msg);
        size_t held = 0;
        for (uint32_t l = 0; l < coll->nlist; l++)
            held += s_holds_list(coll, l, sh) && coll->list_counts[l] > 0;
        cr_assert_eq(n, held, "shard %zu counts %zu lists, the catalog places %zu there", sh, n,
                     held);
        for (size_t i = 0; i < n; i++) {
            cr_assert(lists[i] < coll->nlist && s_holds_list(coll, lists[i], sh),
                      "shard %zu holds list %u, not one of its replicas", sh, lists[i]);
            cr_assert_eq(counts[i], coll->list_counts[lists[i]],
                         "shard %zu list %u: %llu vectors, the catalog %llu", sh, lists[i],
                         (unsigned long long)counts[i],
                         (unsigned long long)coll->list_counts[lists[i]]);
            total += counts[i];
        }
        free(lists);
        free(counts);
        shoal_client_destroy(&sc);
    }
    return total;
}

Test(cluster, shard_list_counts_agree_with_the_catalog)
{
    s_sift_t s;
    s_cluster_t cl;
    shoal_client_t *c = s_start_loaded(&s, &cl, 20000, "sift", S_SMALL_N, S_SMALL_NLIST);
    size_t dim = s.dim;
    /* Upserts that move ids to other lists (rows far from them), and deletes. */
    uint64_t moved[20];
    float *vecs = malloc(20 * dim * sizeof *vecs);
    cr_assert_not_null(vecs);
    for (size_t i = 0; i < 20; i++) {
        moved[i] = 3 * i;
        memcpy(vecs + i * dim, s_row(&s, s_farthest(&s, moved[i], S_SMALL_N)), dim * sizeof *vecs);
        vecs[i * dim] += 0.5f;
    }
    shoal_err_t err;
    cr_assert_eq(shoal_client_insert(c, "sift", moved, vecs, 20, dim, NULL, &err), 0, "%s",
                 err.msg);
    uint64_t del[10];
    for (size_t i = 0; i < 10; i++)
        del[i] = 1000 + 7 * i;
    size_t deleted = 0;
    cr_assert_eq(shoal_client_delete(c, "sift", del, 10, &deleted, NULL, &err), 0, "%s", err.msg);
    cr_assert_eq(deleted, 10);
    shoal_client_destroy(&c);
    s_proc_stop(&cl.coord);

    catalog_t *cat = catalog_open(cl.coord.data_dir, &err);
    cr_assert_not_null(cat, "catalog_open %s: %s", cl.coord.data_dir, err.msg);
    const catalog_coll_t *coll = catalog_find(cat, "sift");
    cr_assert_not_null(coll);
    cr_assert(coll->trained);
    uint64_t total = s_assert_lists_match(&cl, coll);
    cr_assert_eq(total, S_SMALL_N - 10);
    cr_assert_eq(coll->count, S_SMALL_N - 10);
    catalog_close(&cat);
    free(vecs);
    s_dataset_free(&s);
}

/* ------------------------------------------------------------------------ */
/* Replication on loopback (the namespace-host suite: tests/test_replication.c) */
/* ------------------------------------------------------------------------ */

#define S_REPL_NEW      200    /* rows inserted (new ids) while a shard is down */
#define S_REPL_NEW_ID   500000 /* their first id */
#define S_REPL_MOVED    20     /* ids moved to far lists while it is down */
#define S_REPL_DELETED  20     /* ids deleted while it is down */
#define S_REPL_WAIT_S   90.0   /* the repair must finish within this */

/* s_load_with R copies of each list and write quorum W. */
static void s_load_replicated(shoal_client_t *c, const char *coll, const s_sift_t *s, size_t n,
                              size_t nlist, size_t R, size_t W)
{
    shoal_create_opts_t copts = {.nlist = nlist, .replication = R, .write_quorum = W};
    s_load_with(c, coll, s, n, &copts);
}

/* Polls (bounded) until no replica is stale or fenced and every shard is up. */
static void s_wait_in_sync(shoal_client_t *c)
{
    double end = s_now() + S_REPL_WAIT_S;
    for (;;) {
        double pending = s_stat_or(c, "repair.pending", -1);
        double fenced = s_stat_or(c, "repair.fenced_shards", -1);
        double up = s_stat_or(c, "shards_up", -1);
        if (pending == 0 && fenced == 0 && up == S_NSHARDS)
            return;
        cr_assert_lt(s_now(), end, "not in sync after %.0f s: %.0f stale lists, %.0f fenced, %.0f up",
                     S_REPL_WAIT_S, pending, fenced, up);
        s_sleep_ms(S_POLL_MS);
    }
}

/* How many of the shards but skip (-1: none) hold id in coll (asked directly). */
static int s_copies(const s_cluster_t *cl, const char *coll, uint64_t id, int skip)
{
    int copies = 0;
    for (int sh = 0; sh < S_NSHARDS; sh++) {
        if (sh == skip)
            continue;
        shoal_client_t *sc = s_shard_client(&cl->shards[sh]);
        uint8_t *found = NULL;
        float *vecs = NULL;
        size_t got_dim = 0;
        shoal_err_t err;
        int rc = shoal_client_get(sc, coll, &id, 1, &found, &vecs, &got_dim, &err);
        cr_assert_eq(rc, 0, "get from shard %d: %s", sh, err.msg);
        copies += found[0] != 0;
        free(found);
        free(vecs);
        shoal_client_destroy(&sc);
    }
    return copies;
}

/*
 * R = 2 over three shards, one killed (-9): searches stay complete with the
 * recall they had; W = 1 inserts, upserts that move ids and deletes are
 * acknowledged; a W = 2 insert that needs the dead shard is refused whole.
 * After the restart the repair rebuilds the lists it missed: every shard's
 * per-list counts equal the catalog's for each list it holds a replica of,
 * new and moved ids live on exactly two shards, deleted ones on none.
 */
Test(cluster, replicated_collection_survives_a_lost_shard)
{
    s_sift_t s;
    s_cluster_t cl;
    s_sift_load(&s);
    s_cluster_start(&cl, 5000);
    size_t dim = s.dim;
    shoal_client_t *c = s_client(&cl, S_TIMEOUT_MS);
    s_load_replicated(c, "sift", &s, s.n, S_SMALL_NLIST, 2, 1);
    s_load_replicated(c, "strict", &s, S_SMALL_N, 16, 2, 2);
    cr_assert_eq(s_stat(c, "collections.sift.replication"), 2);
    double recall = s_default_recall(c, "sift", &s);

    s_proc_kill9(&cl.shards[1]);
    /* Before and after it is marked down: complete answers, the same recall. */
    cr_assert_geq(s_default_recall(c, "sift", &s), recall - 0.005);
    double end = s_now() + S_POLL_WAIT_S;
    while (s_stat_or(c, "shards_up", -1) != S_NSHARDS - 1) {
        cr_assert_lt(s_now(), end, "the killed shard is never marked down");
        s_sleep_ms(S_POLL_MS);
    }
    cr_assert_geq(s_default_recall(c, "sift", &s), recall - 0.005);

    /* W = 1: new ids, moved ids, deletes are acknowledged. */
    shoal_err_t err;
    uint64_t ids[S_REPL_NEW];
    for (size_t i = 0; i < S_REPL_NEW; i++)
        ids[i] = S_REPL_NEW_ID + i;
    cr_assert_eq(shoal_client_insert(c, "sift", ids, s.base, S_REPL_NEW, dim, NULL, &err), 0,
                 "%s", err.msg);
    uint64_t moved[S_REPL_MOVED];
    float *mvecs = malloc(S_REPL_MOVED * dim * sizeof *mvecs);
    cr_assert_not_null(mvecs);
    for (size_t i = 0; i < S_REPL_MOVED; i++) {
        moved[i] = 2000 + 13 * i;
        memcpy(mvecs + i * dim, s_row(&s, s_farthest(&s, moved[i], S_SMALL_N)), dim * sizeof *mvecs);
        mvecs[i * dim] += 0.5f;
    }
    cr_assert_eq(shoal_client_insert(c, "sift", moved, mvecs, S_REPL_MOVED, dim, NULL, &err), 0,
                 "%s", err.msg);
    uint64_t del[S_REPL_DELETED];
    for (size_t i = 0; i < S_REPL_DELETED; i++)
        del[i] = 5000 + 11 * i;
    size_t deleted = 0;
    cr_assert_eq(shoal_client_delete(c, "sift", del, S_REPL_DELETED, &deleted, NULL, &err), 0,
                 "%s", err.msg);
    cr_assert_eq(deleted, S_REPL_DELETED);
    cr_assert_gt(s_stat(c, "collections.sift.stale_lists"), 0);
    /* Read your writes: the deleted ids are gone from the answers, the new ones found. */
    uint64_t *res = NULL;
    shoal_search_info_t info;
    s_search(c, "sift", s.base + del[0] * dim, 1, dim, WIRE_MODE_EXACT, S_SMALL_NLIST, &res, NULL,
             &info);
    cr_assert_eq(info.partial, 0);
    cr_assert(!s_has(res, S_K, del[0]), "deleted id %llu still found",
              (unsigned long long)del[0]);
    free(res);
    cr_assert_eq(s_found_count(c, S_REPL_NEW_ID, S_REPL_NEW), S_REPL_NEW);
    /* The writes changed the answers (copies of base rows, deletes): the recall to keep. */
    double recall_w = s_default_recall(c, "sift", &s);

    /* W = 2: lists with a replica on the dead shard refuse the batch, nothing written. */
    int rc = shoal_client_insert(c, "strict", ids, s.base, S_REPL_NEW, dim, NULL, &err);
    cr_assert_eq(rc, SHOAL_EUNAVAIL, "W = 2 with a replica down: %s (%s)", err.msg,
                 shoal_errname(rc));
    cr_assert(strstr(err.msg, "write quorum is 2") && strstr(err.msg, "nothing was written"),
              "message: %s", err.msg);
    for (size_t i = 0; i < S_REPL_NEW; i += 17)
        cr_assert_eq(s_copies(&cl, "strict", ids[i], 1), 0, "refused id %llu was written",
                     (unsigned long long)ids[i]);

    /* Back: repaired, then W = 2 writes succeed. */
    s_shard_start(&cl.shards[1]);
    s_wait_in_sync(c);
    /* the shard missed known writes: caught up on them, nothing copied whole */
    cr_assert_gt(s_stat(c, "repair.lists_caught_up"), 0);
    cr_assert_eq(s_stat(c, "repair.rows_copied"), 0);
    const char *check[] = {"check", "sift", NULL};
    char *out = s_cli(&cl, check);
    cr_assert(strstr(out, "lists=32 replicas=2 agree=32 differ=0 stale=0"), "shoal check: %s", out);
    free(out);
    cr_assert_eq(shoal_client_insert(c, "strict", ids, s.base, S_REPL_NEW, dim, NULL, &err), 0,
                 "%s", err.msg);
    cr_assert_geq(s_default_recall(c, "sift", &s), recall_w - 0.005);
    for (size_t i = 0; i < S_REPL_MOVED; i++)
        cr_assert_eq(s_copies(&cl, "sift", moved[i], -1), 2, "moved id %llu",
                     (unsigned long long)moved[i]);
    for (size_t i = 0; i < S_REPL_DELETED; i++)
        cr_assert_eq(s_copies(&cl, "sift", del[i], -1), 0, "deleted id %llu",
                     (unsigned long long)del[i]);
    for (size_t i = 0; i < S_REPL_NEW; i += 17)
        cr_assert_eq(s_copies(&cl, "sift", ids[i], -1), 2, "new id %llu", (unsigned long long)ids[i]);
    /* A frozen shard: its sub-queries are hedged to the other replicas, answers complete. */
    cr_assert_eq(kill(cl.shards[2].pid, SIGSTOP), 0);
    double hedged = s_stat(c, "hedged");
    cr_assert_geq(s_default_recall(c, "sift", &s), recall_w - 0.005);
    cr_assert_gt(s_stat(c, "hedged"), hedged);
    cr_assert_eq(kill(cl.shards[2].pid, SIGCONT), 0);
    s_wait_in_sync(c);
    shoal_client_destroy(&c);
    s_proc_stop(&cl.coord);

    /* Every replica of every list holds what the catalog counts. */
    catalog_t *cat = catalog_open(cl.coord.data_dir, &err);
    cr_assert_not_null(cat, "catalog_open %s: %s", cl.coord.data_dir, err.msg);
    const catalog_coll_t *coll = catalog_find(cat, "sift");
    cr_assert(coll && coll->replication == 2 && coll->nstale == 0);
    uint64_t total = s_assert_lists_match(&cl, coll);
    cr_assert_eq(coll->count, s.n + S_REPL_NEW - S_REPL_DELETED);
    cr_assert_eq(total, 2 * coll->count);
    catalog_close(&cat);
    free(mvecs);
    s_dataset_free(&s);
}

/* ------------------------------------------------------------------------ */
/* Recall targets (the coordinator's calibration, coord_calib.c)            */
/* ------------------------------------------------------------------------ */

/*
 * How far below its target a search at a recall target may land on held-out
 * queries: the calibration measures on stored vectors moved off the data
 * (docs/operations.md: within 0.01 of held-out queries on siftsmall).
 */
#define S_CALIB_TOL     0.02
#define S_CALIB_WAIT_S  60.0 /* the background calibration of 10,000 vectors is done within */

/* A search of every query at recall target: its held-out recall@10; info gets the setting. */
static int s_search_recall(shoal_client_t *c, const s_sift_t *s, double target, double *recall,
                           shoal_search_info_t *info, shoal_err_t *err)
{
    shoal_search_opts_t opts = {.k = S_K, .recall = target};
    uint64_t *ids = NULL;
    memset(info, 0, sizeof *info);
    int rc = shoal_client_search_ex(c, "sift", s->queries, s->nq, s->dim, &opts, &ids, NULL, info,
                                    err);
    if (rc == 0)
        *recall = gt_recall(ids, S_K, s->gt, s->gtk, s->nq, S_K);
    free(ids);
    return rc;
}

Test(cluster, recall_targets_run_at_the_calibrated_setting)
{
    s_sift_t s;
    s_cluster_t cl;
    shoal_client_t *c = s_start_loaded(&s, &cl, 20000, "sift", 0, S_NLIST);
    shoal_err_t err;
    double recall = 0;
    shoal_search_info_t info;

    /* Until the background calibration is done, a recall target is refused, saying why. */
    double end = s_now() + S_CALIB_WAIT_S;
    int rc;
    while ((rc = s_search_recall(c, &s, 0.9, &recall, &info, &err)) != 0) {
        cr_assert_eq(rc, SHOAL_EUNAVAIL, "%s", err.msg);
        cr_assert(strstr(err.msg, "not calibrated"), "%s", err.msg);
        cr_assert_lt(s_now(), end, "not calibrated after %.0f s: %s", S_CALIB_WAIT_S, err.msg);
        s_sleep_ms(S_POLL_MS * 4);
    }
    /* Calibrated at the count it has: none running, none due. */
    cr_assert_eq(s_coord_stat(c, "collections.sift.calibration.running"), 0);
    cr_assert_eq(s_coord_stat(c, "collections.sift.calibration.due"), 0);
    cr_assert_eq(s_coord_stat(c, "collections.sift.calibration.count"), s_count(c, "sift"));
    /* Each target: a setting whose calibrated recall reaches it, and held-out queries
       within the tolerance; a higher target costs at least as much. */
    const double targets[] = {0.9, 0.95, 0.99};
    double cost_before = 0;
    for (size_t i = 0; i < 3; i++) {
        cr_assert_eq(s_search_recall(c, &s, targets[i], &recall, &info, &err), 0, "%s",
                     err.msg);
        cr_log_info("target %.2f: nprobe %u ef %u, calibrated %.4f, held-out recall@10 %.4f",
                    targets[i], info.nprobe, info.ef, info.recall, recall);
        cr_assert(info.nprobe >= 1 && info.nprobe <= S_NLIST && info.ef >= S_K,
                  "target %.2f ran nprobe %u ef %u", targets[i], info.nprobe, info.ef);
        cr_assert_geq(info.recall, targets[i], "target %.2f: calibrated recall %.4f",
                      targets[i], info.recall);
        cr_assert_geq(recall, targets[i] - S_CALIB_TOL, "target %.2f: held-out recall %.4f",
                      targets[i], recall);
        double cost = (double)info.fanout / (double)s.nq * info.ef;
        cr_assert_geq(cost, cost_before, "target %.2f costs less than a lower one", targets[i]);
        cost_before = cost;
    }
    /* Out of (0, 1]: refused (by the client library before anything is sent; the
       coordinator's decoder refuses the same, tests/test_wire.c). */
    const double bad[] = {1.5, -0.1};
    for (size_t i = 0; i < 2; i++) {
        uint64_t *ids = NULL;
        shoal_search_opts_t o = {.k = S_K, .recall = bad[i]};
        rc = shoal_client_search(c, "sift", s.queries, 1, s.dim, &o, &ids, NULL, NULL, &err);
        cr_assert_eq(rc, SHOAL_EINVAL, "recall %g: %s", bad[i], err.msg);
        cr_assert(strstr(err.msg, "recall"), "%s", err.msg);
        cr_assert_null(ids);
    }

    /* A collection too small to calibrate says so. */
    s_load(c, "tiny", &s, 500, 8);
    uint64_t *ids = NULL;
    shoal_search_opts_t tiny = {.k = S_K, .recall = 0.9};
    rc = shoal_client_search(c, "tiny", s.queries, 1, s.dim, &tiny, &ids, NULL, NULL, &err);
    cr_assert_eq(rc, SHOAL_EUNAVAIL, "a tiny collection: %s", err.msg);
    cr_assert(strstr(err.msg, "calibration needs"), "%s", err.msg);
    cr_assert_eq(s_coord_stat(c, "collections.tiny.calibration.due"), 0, "too small: never due");
    cr_assert_eq(s_coord_stat(c, "collections.tiny.calibration.points"), 0);

    /* The table is in the catalog: right after a restart the same setting runs. */
    uint32_t np = info.nprobe, ef = info.ef;
    shoal_client_destroy(&c);
    s_proc_stop(&cl.coord);
    s_coord_start(&cl);
    c = s_client(&cl, S_TIMEOUT_MS);
    s_wait_complete(c, "sift", &s, S_NLIST);
    cr_assert_eq(s_search_recall(c, &s, 0.99, &recall, &info, &err), 0,
                 "after a restart: %s", err.msg);
    cr_assert(info.nprobe == np && info.ef == ef, "after a restart: nprobe %u ef %u, was %u %u",
              info.nprobe, info.ef, np, ef);
    s_finish(&c, &s);
}

/*
 * More lists than the calibration samples queries (200): each list's share
 * rounds to nothing, and the shares must still add up (a collection with
 * nlist 1,024 once never calibrated: "0 sampled queries, 50 needed").
 */
Test(cluster, recall_targets_calibrate_with_more_lists_than_sampled_queries)
{
    const size_t nlist = 1024;
    s_sift_t s;
    s_cluster_t cl;
    shoal_client_t *c = s_start_loaded(&s, &cl, 20000, "sift", 0, nlist);
    shoal_err_t err;
    double recall = 0, end = s_now() + S_CALIB_WAIT_S;
    shoal_search_info_t info;
    int rc;
    while ((rc = s_search_recall(c, &s, 0.9, &recall, &info, &err)) != 0) {
        cr_assert_eq(rc, SHOAL_EUNAVAIL, "%s", err.msg);
        cr_assert_lt(s_now(), end, "nlist %zu: not calibrated after %.0f s: %s", nlist,
                     S_CALIB_WAIT_S, err.msg);
        s_sleep_ms(S_POLL_MS * 4);
    }
    cr_log_info("nlist %zu, target 0.90: nprobe %u ef %u, calibrated %.4f, held-out %.4f", nlist,
                info.nprobe, info.ef, info.recall, recall);
    cr_assert(info.nprobe >= 1 && info.nprobe <= nlist, "nprobe %u", info.nprobe);
    cr_assert_geq(info.recall, 0.9);
    cr_assert_geq(recall, 0.9 - S_CALIB_TOL, "held-out recall %.4f", recall);
    s_finish(&c, &s);
}

/* ------------------------------------------------------------------------ */
/* Online recall telemetry (coord_recall.c)                                 */
/* ------------------------------------------------------------------------ */

/* Every query of siftsmall, one request each, at nprobe / ef: its recall@10 (shipped truth). */
static double s_recall_one_by_one(shoal_client_t *c, const s_sift_t *s, size_t nprobe, size_t ef)
{
    uint64_t *all = malloc(s->nq * S_K * sizeof *all);
    cr_assert_not_null(all);
    shoal_search_opts_t o = {.k = S_K, .mode = WIRE_MODE_HNSW, .nprobe = nprobe, .ef = ef};
    for (size_t q = 0; q < s->nq; q++) {
        uint64_t *ids = NULL;
        shoal_err_t err;
        int rc = shoal_client_search(c, "sift", s->queries + q * s->dim, 1, s->dim, &o, &ids,
                                     NULL, NULL, &err);
        cr_assert_eq(rc, 0, "query %zu: %s", q, err.msg);
        memcpy(all + q * S_K, ids, S_K * sizeof *ids);
        free(ids);
    }
    double r = gt_recall(all, S_K, s->gt, s->gtk, s->nq, S_K);
    free(all);
    return r;
}

/* Polls (bounded) until the estimate of "sift" was measured on `total` queries; its values. */
static void s_wait_estimate(shoal_client_t *c, double total, double *recall, double *ci)
{
    double end = s_now() + 120, got = 0;
    while (1) {
        void *info = NULL;
        size_t len = 0;
        shoal_err_t err;
        cr_assert_eq(shoal_client_stats(c, "sift", NULL, &info, &len, &err), 0, "%s", err.msg);
        got = -1;
        wire_info_lookup(info, len, "collections.sift.recall_estimate.total", &got);
        if (got >= total) {
            cr_assert_eq(wire_info_lookup(info, len, "collections.sift.recall_estimate.recall",
                                          recall), 0);
            cr_assert_eq(wire_info_lookup(info, len, "collections.sift.recall_estimate.ci95", ci),
                         0);
            free(info);
            return;
        }
        free(info);
        cr_assert_lt(s_now(), end, "the estimate has %.0f samples after 120 s, %.0f wanted", got,
                     total);
        s_sleep_ms(S_POLL_MS * 4);
    }
}

Test(cluster, recall_estimate_follows_the_searches_clients_run)
{
    /* Every search sampled (the default is 0.5 %), so the test needs few of them, and
       checked as fast as they come (the default paces the checks to 2 % of the time). */
    setenv("SHOAL_RECALL_SAMPLE", "1", 1);
    setenv("SHOAL_RECALL_BUDGET", "1", 1);
    s_sift_t s;
    s_cluster_t cl;
    shoal_client_t *c = s_start_loaded(&s, &cl, 20000, "sift", 0, S_NLIST);
    unsetenv("SHOAL_RECALL_SAMPLE");
    unsetenv("SHOAL_RECALL_BUDGET");

    double high = s_recall_one_by_one(c, &s, 16, 128), est = 0, ci = 0;
    s_wait_estimate(c, (double)s.nq, &est, &ci);
    cr_log_info("ef 128: recall@10 %.4f measured, %.4f +- %.4f estimated", high, est, ci);
    cr_assert(fabs(est - high) <= ci + 0.005, "estimate %.4f +- %.4f, measured %.4f", est, ci,
              high);

    /* A deliberately low ef: the estimate drops, and matches within its interval once its
       window (256 samples) holds only these searches. */
    double low = 0;
    for (int pass = 0; pass < 3; pass++)
        low = s_recall_one_by_one(c, &s, 1, 10);
    /* A sample that finds the queue full is dropped: wait for a window's worth. */
    s_wait_estimate(c, (double)s.nq + 256, &est, &ci);
    cr_log_info("ef 10, nprobe 1: recall@10 %.4f measured, %.4f +- %.4f estimated", low, est, ci);
    cr_assert_lt(low, high - 0.02, "the low ef did not lower recall (%.4f vs %.4f)", low, high);
    cr_assert(fabs(est - low) <= ci + 0.005, "estimate %.4f +- %.4f, measured %.4f", est, ci,
              low);
    s_finish(&c, &s);
}
