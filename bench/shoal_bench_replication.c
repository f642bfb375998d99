/*
 * shoal_bench_replication.c - `make bench-replication`: what keeping every
 * IVF list on two shards (R=2) costs against one copy (R=1), and how fast a
 * wiped shard is rebuilt from its replicas.
 *
 * Layout: the many-hosts harness (tests/test_hosts.h; needs root): 4 shard
 * hosts, one shard each, the coordinator on a fifth host, the benchmark's
 * clients in the controller namespace, so that every request crosses a
 * (virtual) network as it would between machines. For R in {1, 2}, a fresh
 * cluster (new data dirs) gets the base rows (ids = row numbers) in a
 * collection of --nlist lists, W = 1, trained on the whole base, and then:
 *   insert   --insert-reps times, a new collection loaded with the base in
 *            requests of --batch rows (training untimed), then dropped:
 *            rows/s;
 *   batch    every query in one search request (k, --nprobe, mode auto),
 *            repeated for at least S_MIN_PASS_S: queries/s;
 *   single   every query one request at a time from one client: queries/s;
 *   clients  the same from --clients client threads at once: queries/s;
 * each over --reps repetitions, after one untimed warm-up pass; reported
 * values are medians. recall@k is printed next to each R (both should
 * agree: a replica holds the same rows).
 * Then, at R=2, --repair-reps times (shards 1, 2, 3, ...): a shard is
 * kill -9'd, its data dir removed, and restarted on the same endpoint once
 * the coordinator reports it down (--down-after-ms); timed from its restart
 * until the coordinator reports every shard up, no stale list, no repair
 * running and no shard fenced. Rebuild rate: rows the
 * coordinator's repairs copied in that time (stats repair.rows_copied) per
 * second; the coordinator's own rate of its last list (repair.rows_per_s)
 * is printed next to it.
 *
 * Output: key=value lines per R, the ratios, and last
 *   RESULT replication r2_vs_r1_batch_qps=.. r2_vs_r1_single_qps=..
 *          r2_vs_r1_insert=.. repair_vectors_per_s=..
 * (ratios R=2 / R=1; single is the one-client figure). On 2 cores the five
 * processes and the clients share the CPUs, which the numbers reflect.
 *
 * Run as `shoal-bench replication` (bench/shoal_bench.c's table).
 *
 * Exit codes: 0 success, 2 usage error, 1 anything that failed while running.
 */
#define _GNU_SOURCE /* setns, for tests/test_hosts.h; before every #include */

#include "bench/shoal_bench.h"
#include "bench/shoal_bench_hosts.h"

#include <czmq.h>

#include "client/shoal_client.h"
#include "common/error.h"
#include "common/groundtruth.h"
#include "common/vecfile.h"
#include "net/wire.h"
#include "tests/test_hosts.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define S_SHARDS        4
#define S_COORD_HOST    S_SHARDS /* hosts 0..3 run shards, host 4 the coordinator */
#define S_SHARD_PORT    7701
#define S_COORD_PORT    7700
#define S_COLL          "bench"
#define S_INSERT_COLL   "bench_insert"
#define S_READY_WAIT_S  60.0
#define S_STOP_WAIT_S   60.0
#define S_REPAIR_WAIT_S 600.0  /* a rebuild must finish within this */
#define S_POLL_MS       20     /* between stats polls while timing a repair */
#define S_TIMEOUT_MS    600000 /* client calls: training and loads on busy cores */
#define S_MIN_PASS_S    0.5    /* a timed search measurement repeats its pass this long */
#define S_CLIENTS_MAX   64
#define S_PING_MS       "100"
#define S_DOWN_MS       "1000"

/* ------------------------------------------------------------------------ */
/* Options                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct {
    const char *base, *queries, *gt; /* --base, --queries, --gt (.fvecs / .ivecs) */
    const char *coord_bin;           /* --coordinator-bin */
    const char *shard_bin;           /* --shard-bin */
    size_t nlist;                    /* --nlist */
    size_t nprobe;                   /* --nprobe */
    size_t k;                        /* --k */
    size_t batch;                    /* --batch: rows per insert request */
    size_t reps;                     /* --reps: search repetitions */
    size_t insert_reps;              /* --insert-reps */
    size_t repair_reps;              /* --repair-reps */
    size_t clients;                  /* --clients: concurrent single-query clients */
    size_t threads;                  /* --threads: search threads per shard */
    int keep;                        /* --keep: leave data and logs */
} s_opts_t;

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: shoal-bench replication --base F --queries F --gt F [options]\n"
            "\n"
            "On 4 shard hosts and a coordinator host (network namespaces; needs root):\n"
            "insert, batch-search and single-query throughput at R=1 and R=2, and the\n"
            "rebuild rate of a wiped shard at R=2. Last line:\n"
            "  RESULT replication r2_vs_r1_batch_qps=.. r2_vs_r1_single_qps=..\n"
            "         r2_vs_r1_insert=.. repair_vectors_per_s=..\n"
            "\n"
            "  --base F              base vectors (.fvecs; ids = row numbers)\n"
            "  --queries F           queries (.fvecs)\n"
            "  --gt F                their exact neighbours (.ivecs), for recall\n"
            "  --nlist N             IVF lists (default 32)\n"
            "  --nprobe N            lists probed per query (default 8)\n"
            "  --k K                 results per query (default 10)\n"
            "  --batch B             rows per insert request (default 100)\n"
            "  --reps N              search repetitions, medians reported (default 5)\n"
            "  --insert-reps N       loads timed per R (default 3)\n"
            "  --repair-reps N       wiped-shard rebuilds timed (default 3)\n"
            "  --clients N           concurrent single-query clients (default 4)\n"
            "  --threads N           search threads per shard (default 1)\n"
            "  --coordinator-bin P   the shoal-coordinator binary (default: next to this one)\n"
            "  --shard-bin P         the shoal-shard binary (default: next to this one)\n"
            "  --keep                keep data and logs under $SHOAL_TMP/shoal-repl-PID\n");
}

/* The options that are not single numbers; bench_other_fn. ctx: the options. */
static int s_parse_other(const char *opt, const char *val, void *ctx)
{
    s_opts_t *o = ctx;
    if (!strcmp(opt, "--base"))
        o->base = val;
    else if (!strcmp(opt, "--queries"))
        o->queries = val;
    else if (!strcmp(opt, "--gt"))
        o->gt = val;
    else if (!strcmp(opt, "--coordinator-bin"))
        o->coord_bin = val;
    else if (!strcmp(opt, "--shard-bin"))
        o->shard_bin = val;
    else
        return 1;
    return 0;
}

static int s_parse(int argc, char **argv, void *opts)
{
    s_opts_t *o = opts;
    *o = (s_opts_t){.nlist = 32,
                    .nprobe = 8,
                    .k = 10,
                    .batch = 100,
                    .reps = 5,
                    .insert_reps = 3,
                    .repair_reps = 3,
                    .clients = 4,
                    .threads = 1};
    const bench_opt_t table[] = {
        {"--nlist", 1, 1u << 20, &o->nlist, NULL},
        {"--nprobe", 1, 1u << 20, &o->nprobe, NULL},
        {"--k", 1, 4096, &o->k, NULL},
        {"--batch", 1, 1000000, &o->batch, NULL},
        {"--reps", 1, 1000, &o->reps, NULL},
        {"--insert-reps", 1, 100, &o->insert_reps, NULL},
        {"--repair-reps", 1, 100, &o->repair_reps, NULL},
        {"--clients", 1, S_CLIENTS_MAX, &o->clients, NULL},
        {"--threads", 1, 1024, &o->threads, NULL},
        {"--keep", 0, 0, NULL, &o->keep},
    };
    int rc = bench_parse_args("replication", argc, argv, table, sizeof table / sizeof table[0],
                              s_parse_other, o);
    if (rc != 0)
        return rc;
    if (!o->base || !o->queries || !o->gt) {
        fprintf(stderr, "shoal-bench replication: --base, --queries and --gt are required\n");
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Processes on hosts                                                       */
/* ------------------------------------------------------------------------ */

/* Everything one run holds. */
typedef struct {
    const s_opts_t *o;
    hosts_t *hosts;
    char dir[BENCH_PATH_MAX - 64];  /* scratch: $SHOAL_TMP/shoal-repl-PID */
    char shard_bin[BENCH_PATH_MAX]; /* programs */
    char coord_bin[BENCH_PATH_MAX];
    bench_node_t shards[S_SHARDS], coord;
    char shard_list[S_SHARDS * 64]; /* --shards */
    float *base, *queries;          /* n x dim, nq x dim */
    size_t n, nq, dim;
    int32_t *gt; /* nq x gtk */
    size_t gtk;
    uint64_t *ids;     /* 0..n-1 */
    shoal_client_t *c; /* the main thread's client of the coordinator */
} s_ctx_t;

static int s_shard_start(s_ctx_t *x, bench_node_t *n, shoal_err_t *err)
{
    char threads[24];
    snprintf(threads, sizeof threads, "%zu", x->o->threads);
    char *argv[] = {x->shard_bin,   "--listen", n->listen,   "--data-dir", n->data_dir,
                    "--ready-file", n->ready,   "--threads", threads,      NULL};
    return bench_node_start(x->hosts, n, argv, S_READY_WAIT_S, err);
}

/* Short failure detection, as in tests/test_replication.c. */
static int s_coord_start(s_ctx_t *x, shoal_err_t *err)
{
    bench_node_t *n = &x->coord;
    char *argv[] = {
        x->coord_bin, "--listen",        n->listen,      "--data-dir", n->data_dir,
        "--shards",   x->shard_list,     "--ready-file", n->ready,     "--ping-interval-ms",
        S_PING_MS,    "--down-after-ms", S_DOWN_MS,      NULL};
    return bench_node_start(x->hosts, n, argv, S_READY_WAIT_S, err);
}

/* A fresh cluster for replication r: new data dirs under <scratch>/r<r>. */
static int s_cluster_start(s_ctx_t *x, size_t r, shoal_err_t *err)
{
    char dir[BENCH_PATH_MAX - 32]; /* room for "/<name>.ready" in the node's paths */
    snprintf(dir, sizeof dir, "%s/r%zu", x->dir, r);
    mkdir(dir, 0755);
    x->shard_list[0] = '\0';
    for (size_t i = 0; i < S_SHARDS; i++) {
        char name[16];
        snprintf(name, sizeof name, "shard%zu", i);
        bench_node_init(x->hosts, &x->shards[i], dir, name, i, S_SHARD_PORT);
        int rc = s_shard_start(x, &x->shards[i], err);
        if (rc != 0)
            return rc;
        size_t len = strlen(x->shard_list);
        snprintf(x->shard_list + len, sizeof x->shard_list - len, "%s%s", i ? "," : "",
                 x->shards[i].listen);
    }
    bench_node_init(x->hosts, &x->coord, dir, "coord", S_COORD_HOST, S_COORD_PORT);
    int rc = s_coord_start(x, err);
    if (rc != 0)
        return rc;
    x->c = shoal_client_new(x->coord.listen, S_TIMEOUT_MS, err);
    return x->c ? 0 : err->code;
}

/* SIGTERM to every process (SIGKILL after S_STOP_WAIT_S); the client closed. */
static void s_cluster_stop(s_ctx_t *x)
{
    shoal_client_destroy(&x->c);
    if (x->coord.pid > 0)
        hosts_stop(x->hosts, x->coord.pid, S_STOP_WAIT_S, NULL);
    x->coord.pid = 0;
    for (size_t i = 0; i < S_SHARDS; i++) {
        if (x->shards[i].pid > 0)
            hosts_stop(x->hosts, x->shards[i].pid, S_STOP_WAIT_S, NULL);
        x->shards[i].pid = 0;
    }
}

/* ------------------------------------------------------------------------ */
/* Stats                                                                    */
/* ------------------------------------------------------------------------ */

/*
 * Numbers from one stats reply of the coordinator (every collection): for
 * each i < n, *values[i] gets the number at paths[i], NAN when absent.
 */
static int s_stats(shoal_client_t *c, size_t n, const char *const *paths, double *values,
                   shoal_err_t *err)
{
    void *info = NULL;
    size_t len = 0;
    int rc = shoal_client_stats(c, NULL, NULL, &info, &len, err);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < n; i++)
        if (wire_info_lookup(info, len, paths[i], &values[i]) != 0)
            values[i] = NAN;
    free(info);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Loading and inserting                                                    */
/* ------------------------------------------------------------------------ */

/*
 * Creates coll at replication r (W = 1; retried while the coordinator has
 * not heard from every shard), trains it on the base, inserts the base in
 * requests of --batch rows: *insert_s is the inserts' time.
 */
static int s_load(s_ctx_t *x, const char *coll, size_t r, double *insert_s, shoal_err_t *err)
{
    shoal_create_opts_t copts = {.nlist = x->o->nlist, .replication = r, .write_quorum = 1};
    int rc = bench_create_retry(x->c, coll, x->dim, SHOAL_METRIC_L2, &copts, S_READY_WAIT_S, err);
    if (rc != 0)
        return rc;
    rc = shoal_client_train(x->c, coll, x->base, x->n, x->dim, NULL, NULL, err);
    if (rc != 0)
        return shoal_err_prefix(err, "train %s", coll);
    double t0 = timing_now();
    for (size_t at = 0; at < x->n; at += x->o->batch) {
        size_t m = x->n - at < x->o->batch ? x->n - at : x->o->batch;
        rc = shoal_client_insert(x->c, coll, x->ids + at, x->base + at * x->dim, m, x->dim, NULL,
                                 err);
        if (rc != 0)
            return shoal_err_prefix(err, "insert into %s of rows %zu..", coll, at);
    }
    *insert_s = timing_now() - t0;
    return 0;
}

static double s_median(double *v, size_t n)
{
    qsort(v, n, sizeof *v, timing_cmp_double);
    return timing_percentile(v, n, 0.5);
}

/* Rows/s of --insert-reps loads of a fresh collection at replication r (median). */
static int s_insert_rate(s_ctx_t *x, size_t r, double *vps, shoal_err_t *err)
{
    double rates[100];
    for (size_t i = 0; i < x->o->insert_reps; i++) {
        double s = 0;
        int rc = s_load(x, S_INSERT_COLL, r, &s, err);
        if (rc == 0 && (rc = shoal_client_drop(x->c, S_INSERT_COLL, err)) != 0)
            shoal_err_prefix(err, "drop %s", S_INSERT_COLL);
        if (rc != 0)
            return rc;
        rates[i] = (double)x->n / s;
    }
    *vps = s_median(rates, x->o->insert_reps);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Searching                                                                */
/* ------------------------------------------------------------------------ */

/* Queries [from, to) one request at a time (to - from == 1) or in one request; *ids for recall. */
static int s_search(shoal_client_t *c, const s_ctx_t *x, size_t from, size_t to, uint64_t *found,
                    shoal_err_t *err)
{
    shoal_search_opts_t opts = {.k = x->o->k, .nprobe = x->o->nprobe};
    uint64_t *ids = NULL;
    int rc = shoal_client_search(c, S_COLL, x->queries + from * x->dim, to - from, x->dim, &opts,
                                 &ids, NULL, NULL, err);
    if (rc != 0)
        return rc;
    if (found)
        memcpy(found + from * x->o->k, ids, (to - from) * x->o->k * sizeof *ids);
    free(ids);
    return 0;
}

/* One pass: every query in one request (batch) or one by one: queries done, or < 0. */
static int s_pass(shoal_client_t *c, const s_ctx_t *x, int batch, uint64_t *found, shoal_err_t *err)
{
    if (batch)
        return s_search(c, x, 0, x->nq, found, err);
    for (size_t q = 0; q < x->nq; q++) {
        int rc = s_search(c, x, q, q + 1, found, err);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* Queries/s of passes repeated for at least S_MIN_PASS_S. */
static int s_timed_passes(shoal_client_t *c, const s_ctx_t *x, int batch, double *qps,
                          shoal_err_t *err)
{
    size_t done = 0;
    double t0 = timing_now(), t = t0;
    while (t - t0 < S_MIN_PASS_S) {
        int rc = s_pass(c, x, batch, NULL, err);
        if (rc != 0)
            return rc;
        done += x->nq;
        t = timing_now();
    }
    *qps = (double)done / (t - t0);
    return 0;
}

/* One concurrent client: its own connection, S_MIN_PASS_S of single queries. */
typedef struct {
    const s_ctx_t *x;
    pthread_t thread;
    size_t done;                 /* queries answered */
    int rc;                      /* 0 or the first error */
    char msg[SHOAL_ERR_MSG_MAX]; /* its message */
} s_client_t;

static void *s_client_run(void *arg)
{
    s_client_t *cl = arg;
    shoal_err_t err;
    shoal_client_t *c = shoal_client_new(cl->x->coord.listen, S_TIMEOUT_MS, &err);
    if (!c) {
        cl->rc = err.code;
        snprintf(cl->msg, sizeof cl->msg, "%s", err.msg);
        return NULL;
    }
    double t0 = timing_now();
    while (cl->rc == 0 && timing_now() - t0 < S_MIN_PASS_S) {
        if ((cl->rc = s_pass(c, cl->x, 0, NULL, &err)) != 0)
            snprintf(cl->msg, sizeof cl->msg, "%s", err.msg);
        else
            cl->done += cl->x->nq;
    }
    shoal_client_destroy(&c);
    return NULL;
}

/* Queries/s of --clients threads each searching one query at a time. */
static int s_concurrent(const s_ctx_t *x, double *qps, shoal_err_t *err)
{
    s_client_t cls[S_CLIENTS_MAX];
    size_t n = x->o->clients;
    memset(cls, 0, sizeof cls);
    double t0 = timing_now();
    for (size_t i = 0; i < n; i++) {
        cls[i].x = x;
        if (pthread_create(&cls[i].thread, NULL, s_client_run, &cls[i]) != 0) {
            for (size_t j = 0; j < i; j++)
                pthread_join(cls[j].thread, NULL);
            return shoal_err_set(err, SHOAL_EIO, "pthread_create failed");
        }
    }
    size_t done = 0;
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        pthread_join(cls[i].thread, NULL);
        done += cls[i].done;
        if (cls[i].rc != 0 && rc == 0)
            rc = shoal_err_set(err, cls[i].rc, "client %zu: %s", i, cls[i].msg);
    }
    *qps = (double)done / (timing_now() - t0);
    return rc;
}

/* What one R measured (medians). */
typedef struct {
    double insert_vps, batch_qps, single_qps, clients_qps, recall;
} s_side_t;

/* Recall, then --reps repetitions of batch, single and concurrent throughput. */
static int s_search_side(s_ctx_t *x, s_side_t *side, shoal_err_t *err)
{
    uint64_t *found = malloc(x->nq * x->o->k * sizeof *found);
    if (!found)
        return shoal_err_set(err, SHOAL_ENOMEM, "no memory for %zu results", x->nq * x->o->k);
    /* the untimed warm-up pass gives the recall */
    int rc = s_pass(x->c, x, 1, found, err);
    if (rc == 0)
        side->recall = gt_recall(found, x->o->k, x->gt, x->gtk, x->nq, x->o->k);
    free(found);
    double batch[1000], single[1000], clients[1000];
    for (size_t i = 0; rc == 0 && i < x->o->reps; i++) {
        rc = s_timed_passes(x->c, x, 1, &batch[i], err);
        if (rc == 0)
            rc = s_timed_passes(x->c, x, 0, &single[i], err);
        if (rc == 0)
            rc = s_concurrent(x, &clients[i], err);
    }
    if (rc != 0)
        return shoal_err_prefix(err, "search");
    side->batch_qps = s_median(batch, x->o->reps);
    side->single_qps = s_median(single, x->o->reps);
    side->clients_qps = s_median(clients, x->o->reps);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Repair                                                                   */
/* ------------------------------------------------------------------------ */

/*
 * Wipes shard s (kill -9, data dir removed, restarted once seen down) and waits
 * until the coordinator has copied rows and reports every shard up, no
 * stale list, no repair running and no shard fenced: *vps is rows copied
 * per second since the restart, *last_vps the coordinator's rate of its
 * last list.
 */
static int s_repair_once(s_ctx_t *x, size_t s, double *vps, double *rows, double *last_vps,
                         shoal_err_t *err)
{
    static const char *const paths[] = {"repair.rows_copied",
                                        "repair.rows_per_s",
                                        "shards_up",
                                        "collections." S_COLL ".stale_lists",
                                        "collections." S_COLL ".repairing",
                                        "repair.fenced_shards"};
    double v[6];
    int rc = s_stats(x->c, 6, paths, v, err);
    if (rc != 0)
        return shoal_err_prefix(err, "stats");
    if (isnan(v[0]))
        return shoal_err_set(err, SHOAL_EPROTO,
                             "the coordinator's stats have no repair.rows_copied");
    double before = v[0];
    hosts_kill9(x->hosts, x->shards[s].pid);
    x->shards[s].pid = 0;
    bench_remove_tree(x->shards[s].data_dir);
    /* restarted once the coordinator has seen it down, so that it verifies the shard when it
       is back (a shard back sooner is not noticed when no write touches it) */
    double t_down = timing_now();
    while ((rc = s_stats(x->c, 6, paths, v, err)) == 0 && v[2] != S_SHARDS - 1) {
        if (timing_now() - t_down > S_READY_WAIT_S)
            return shoal_err_set(err, SHOAL_ETIMEOUT, "shard %zu not seen down after %.0f s", s,
                                 S_READY_WAIT_S);
        bench_sleep_ms(S_POLL_MS);
    }
    if (rc != 0)
        return shoal_err_prefix(err, "stats");
    if ((rc = s_shard_start(x, &x->shards[s], err)) != 0)
        return rc;
    double t0 = timing_now();
    while (1) {
        if ((rc = s_stats(x->c, 6, paths, v, err)) != 0)
            return shoal_err_prefix(err, "stats");
        /* a fenced shard serves no reads yet: not rebuilt until the fence lifts */
        if (v[0] > before && v[2] == S_SHARDS && v[3] == 0 && v[4] == 0 && !(v[5] > 0))
            break;
        if (timing_now() - t0 > S_REPAIR_WAIT_S)
            return shoal_err_set(err, SHOAL_ETIMEOUT,
                                 "shard %zu not rebuilt after %.0f s (rows copied %g, shards up "
                                 "%g, stale lists %g, repairing %g)",
                                 s, S_REPAIR_WAIT_S, v[0] - before, v[2], v[3], v[4]);
        bench_sleep_ms(S_POLL_MS);
    }
    double took = timing_now() - t0;
    *rows = v[0] - before;
    *vps = *rows / took;
    *last_vps = v[1];
    printf("repair shard=%zu rows=%.0f seconds=%.3f vectors_per_s=%.1f "
           "coordinator_last_list_rows_per_s=%.1f\n",
           s, *rows, took, *vps, v[1]);
    fflush(stdout);
    return 0;
}

/* --repair-reps rebuilds of shards 1, 2, 3, 0, 1, ...: median rows/s into *vps. */
static int s_repair(s_ctx_t *x, double *vps, shoal_err_t *err)
{
    double rates[100], rows = 0, last = 0;
    for (size_t i = 0; i < x->o->repair_reps; i++) {
        int rc = s_repair_once(x, (i + 1) % S_SHARDS, &rates[i], &rows, &last, err);
        if (rc != 0)
            return rc;
    }
    *vps = s_median(rates, x->o->repair_reps);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* The run                                                                  */
/* ------------------------------------------------------------------------ */

static int s_load_data(s_ctx_t *x, shoal_err_t *err)
{
    const s_opts_t *o = x->o;
    size_t qdim = 0, ngt = 0;
    if (!(x->base = vecfile_load_f32(o->base, &x->n, &x->dim, err)))
        return shoal_err_prefix(err, "--base");
    if (!(x->queries = vecfile_load_f32(o->queries, &x->nq, &qdim, err)))
        return shoal_err_prefix(err, "--queries");
    if (qdim != x->dim)
        return shoal_err_set(err, SHOAL_EDIM, "--queries: dim %zu, expected %zu", qdim, x->dim);
    if (!(x->gt = vecfile_load_i32(o->gt, &ngt, &x->gtk, err)))
        return shoal_err_prefix(err, "--gt");
    if (ngt != x->nq || x->gtk < o->k)
        return shoal_err_set(err, SHOAL_EINVAL, "--gt: %zu x %zu ids, need %zu x >= %zu", ngt,
                             x->gtk, x->nq, o->k);
    if (!(x->ids = malloc(x->n * sizeof *x->ids)))
        return shoal_err_set(err, SHOAL_ENOMEM, "no memory for %zu ids", x->n);
    for (size_t i = 0; i < x->n; i++)
        x->ids[i] = i;
    return 0;
}

/* One R: a fresh cluster, the collection loaded, inserts and searches timed; at R=2 repairs. */
static int s_side(s_ctx_t *x, size_t r, s_side_t *side, double *repair_vps, shoal_err_t *err)
{
    int rc = s_cluster_start(x, r, err);
    double load_s = 0;
    if (rc == 0)
        rc = s_load(x, S_COLL, r, &load_s, err);
    if (rc == 0)
        rc = shoal_client_checkpoint(x->c, S_COLL, err);
    if (rc == 0)
        rc = s_insert_rate(x, r, &side->insert_vps, err);
    if (rc == 0)
        rc = s_search_side(x, side, err);
    if (rc == 0 && r > 1)
        rc = s_repair(x, repair_vps, err);
    s_cluster_stop(x);
    if (rc != 0)
        return shoal_err_prefix(err, "R=%zu", r);
    printf("r=%zu n=%zu nq=%zu nlist=%zu nprobe=%zu k=%zu recall=%.4f insert_vps=%.1f "
           "batch_qps=%.1f single_qps=%.1f clients=%zu clients_qps=%.1f\n",
           r, x->n, x->nq, x->o->nlist, x->o->nprobe, x->o->k, side->recall, side->insert_vps,
           side->batch_qps, side->single_qps, x->o->clients, side->clients_qps);
    fflush(stdout);
    return 0;
}

static int s_run_in(s_ctx_t *x, shoal_err_t *err)
{
    int rc = s_load_data(x, err);
    if (rc != 0)
        return rc;
    if ((rc = hosts_enter_controller(x->hosts, err)) != 0)
        return rc;
    s_side_t one = {0}, two = {0};
    double repair_vps = 0;
    if ((rc = s_side(x, 1, &one, NULL, err)) != 0 || (rc = s_side(x, 2, &two, &repair_vps, err)))
        return rc;
    printf("r2_vs_r1_clients_qps=%.3f (%zu clients)\n", two.clients_qps / one.clients_qps,
           x->o->clients);
    printf("RESULT replication r2_vs_r1_batch_qps=%.3f r2_vs_r1_single_qps=%.3f "
           "r2_vs_r1_insert=%.3f repair_vectors_per_s=%.0f\n",
           two.batch_qps / one.batch_qps, two.single_qps / one.single_qps,
           two.insert_vps / one.insert_vps, repair_vps);
    return 0;
}

static int s_run(const void *opts, shoal_err_t *err)
{
    s_ctx_t x;
    memset(&x, 0, sizeof x);
    x.o = opts;
    int rc = bench_find_bin(x.o->shard_bin, "shoal-shard", "--shard-bin", x.shard_bin, err);
    if (rc == 0)
        rc = bench_find_bin(x.o->coord_bin, "shoal-coordinator", "--coordinator-bin", x.coord_bin,
                            err);
    if (rc != 0)
        return rc;
    /* keep the harness's SIGINT/SIGTERM cleanup: czmq would replace it at first use */
    zsys_handler_set(NULL);
    if (!(x.hosts = hosts_up(S_SHARDS + 1, err)))
        return err->code;
    const char *tmp = getenv("SHOAL_TMP");
    snprintf(x.dir, sizeof x.dir, "%s/shoal-repl-%ld", tmp && *tmp ? tmp : "/tmp", (long)getpid());
    mkdir(x.dir, 0755);
    printf("replication: 4 shard hosts + a coordinator host (%s*), scratch %s\n",
           hosts_prefix(x.hosts), x.dir);
    fflush(stdout);
    rc = s_run_in(&x, err);
    hosts_down(&x.hosts);
    if (rc == 0 && !x.o->keep)
        bench_remove_tree(x.dir);
    else
        printf("replication: data and logs kept in %s\n", x.dir);
    free(x.base);
    free(x.queries);
    free(x.gt);
    free(x.ids);
    return rc;
}

int bench_replication_main(int argc, char **argv)
{
    s_opts_t opts;
    return bench_command_main("replication", argc, argv, &opts, s_parse, s_usage, s_run);
}
