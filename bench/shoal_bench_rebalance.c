/*
 * shoal_bench_rebalance.c - `make bench-rebalance`: what growing a cluster
 * online costs the searches that run through it, and how fast the lists
 * move to the new shard.
 *
 * Layout: the many-hosts harness (tests/test_hosts.h; needs root): 4 shard
 * hosts, one shard each, the coordinator on a fifth host, the benchmark's
 * client in the controller namespace, so that every request and every
 * copied row crosses a (virtual) network as it would between machines.
 * Shards 0..2 and the coordinator start (--threads 1 each); a collection
 * of --nlist lists at R = 1 gets --n generated rows (common/datagen.h,
 * ids = row numbers), trained on the first S_TRAIN_MAX of them (datagen's
 * rows are independent draws, so a prefix is a fair sample). Then one
 * client sends one query per request (k = S_K, --nprobe, mode auto, the
 * server's ef) in three phases:
 *   before  --queries requests, after an untimed warm-up;
 *   during  queries in a loop while shard 3 is started, added (shard_add)
 *           and the lists are rebalanced (at --rate MB/s, or the
 *           coordinator's rate), until the coordinator reports no move
 *           pending or running and no old copy left to drop;
 *   after   --queries requests again.
 * The rebalance is timed from its call until the moves are done (the stats
 * are polled every S_POLL_MS, so the end is up to that late); its rate is
 * the rows the coordinator's moves copied meanwhile (stats
 * moves.rows_copied) per second. recall@k before and after is that of the
 * phase's own answers against exact search over every list at that time.
 * The same client (one connection) serves all three phases, so a
 * difference between them is the cluster's, not the connection's.
 *
 * Output: key=value lines per phase and for the rebalance, and last
 *   RESULT rebalance vectors_per_s=.. seconds=.. moves=.. p50_before_ms=..
 *          p99_before_ms=.. p50_during_ms=.. p99_during_ms=.. p50_after_ms=..
 *          p99_after_ms=.. recall_before=.. recall_after=..
 * On 2 cores the five processes and the client share the CPUs, which the
 * numbers reflect. Where namespaces cannot be made (not root, no ip), it
 * says so and exits 0 without measuring.
 *
 * Run as `shoal-bench rebalance` (bench/shoal_bench.c's table).
 *
 * Exit codes: 0 success (or skipped), 2 usage error, 1 anything that failed
 * while running.
 */
#define _GNU_SOURCE /* setns, for tests/test_hosts.h; before every #include */

#include "bench/shoal_bench.h"
#include "bench/shoal_bench_hosts.h"

#include <czmq.h>

#include "client/shoal_client.h"
#include "common/datagen.h"
#include "common/error.h"
#include "common/topk.h"
#include "net/wire.h"
#include "tests/test_hosts.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define S_SHARDS           4 /* hosts 0..3 run shards, host 4 the coordinator */
#define S_FIRST_SHARDS     3 /* started with the cluster; the last one is the one added */
#define S_COORD_HOST       S_SHARDS
#define S_SHARD_PORT       7701
#define S_COORD_PORT       7700
#define S_COLL             "rebal"
#define S_K                10
#define S_TRAIN_MAX        65536 /* rows the centroids are trained on */
#define S_LOAD_BATCH       5000  /* rows per insert request while loading */
#define S_WARMUP           100   /* untimed queries before the first phase */
#define S_EXACT_BATCH      1000  /* queries per exact-search request, for recall */
#define S_READY_WAIT_S     60.0
#define S_STOP_WAIT_S      60.0
#define S_MOVES_WAIT_S     1800.0 /* a rebalance must finish within this */
#define S_PROGRESS_S       10.0   /* a progress line while moving, this often */
#define S_POLL_MS          50     /* between stats polls while the moves run */
#define S_TIMEOUT_MS       600000 /* the main client: training and loads on busy cores */
#define S_QUERY_TIMEOUT_MS 30000  /* the query client: a request slower than this failed */
#define S_PING_MS          "100"
#define S_DOWN_MS          "1000"
#define S_THREADS          "1"

/* ------------------------------------------------------------------------ */
/* Options                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct {
    const char *coord_bin; /* --coordinator-bin */
    const char *shard_bin; /* --shard-bin */
    size_t n;              /* --n: base rows */
    size_t dim;            /* --dim */
    size_t nlist;          /* --nlist */
    size_t nprobe;         /* --nprobe */
    size_t nq;             /* --queries: requests per fixed phase, and the query set */
    size_t rate_mb;        /* --rate: the moves' copy rate in MB/s; 0 = the coordinator's */
    size_t seed;           /* --seed: the generator's */
    int keep;              /* --keep: leave data and logs */
} s_opts_t;

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: shoal-bench rebalance [options]\n"
            "\n"
            "On 4 shard hosts and a coordinator host (network namespaces; needs root):\n"
            "3 shards loaded with generated rows, then a 4th shard added and the lists\n"
            "rebalanced onto it while one client searches one query per request.\n"
            "Latency before, during and after the moves, their rate, recall@10 before\n"
            "and after. Skipped (exit 0) where namespaces cannot be made. Last line:\n"
            "  RESULT rebalance vectors_per_s=.. seconds=.. moves=.. p50_before_ms=..\n"
            "         p99_before_ms=.. p50_during_ms=.. p99_during_ms=.. p50_after_ms=..\n"
            "         p99_after_ms=.. recall_before=.. recall_after=..\n"
            "\n"
            "  --n N                 base rows (default 200000)\n"
            "  --dim D               dimension (default 64)\n"
            "  --nlist N             IVF lists (default 64)\n"
            "  --nprobe N            lists probed per query (default 8; at most --nlist)\n"
            "  --queries N           queries per timed phase (default 1000)\n"
            "  --rate MB             the moves' copy rate in MB/s (default 0: the\n"
            "                        coordinator's)\n"
            "  --seed S              the generator's seed (default 1)\n"
            "  --coordinator-bin P   the shoal-coordinator binary (default: next to this one)\n"
            "  --shard-bin P         the shoal-shard binary (default: next to this one)\n"
            "  --keep                keep data and logs under $SHOAL_TMP/shoal-rebal-PID\n");
}

/* The options that are not numbers; bench_other_fn. ctx: the options. */
static int s_parse_other(const char *opt, const char *val, void *ctx)
{
    s_opts_t *o = ctx;
    if (!strcmp(opt, "--coordinator-bin"))
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
    *o = (s_opts_t){.n = 200000, .dim = 64, .nlist = 64, .nprobe = 8, .nq = 1000, .seed = 1};
    const bench_opt_t table[] = {
        {"--n", 1, 100000000, &o->n, NULL},
        {"--dim", 1, 4096, &o->dim, NULL},
        {"--nlist", 1, 65536, &o->nlist, NULL},
        {"--nprobe", 1, 65536, &o->nprobe, NULL},
        {"--queries", 1, 100000, &o->nq, NULL},
        {"--rate", 0, UINT32_MAX, &o->rate_mb, NULL},
        {"--seed", 0, SIZE_MAX, &o->seed, NULL},
        {"--keep", 0, 0, NULL, &o->keep},
    };
    int rc = bench_parse_args("rebalance", argc, argv, table, sizeof table / sizeof table[0],
                              s_parse_other, o);
    if (rc != 0)
        return rc;
    if (o->nprobe > o->nlist) {
        fprintf(stderr, "shoal-bench rebalance: --nprobe %zu is above --nlist %zu\n", o->nprobe,
                o->nlist);
        return -1;
    }
    if (o->n < o->nlist) {
        fprintf(stderr, "shoal-bench rebalance: --n %zu rows cannot train --nlist %zu lists\n",
                o->n, o->nlist);
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
    char dir[BENCH_PATH_MAX - 64];  /* scratch: $SHOAL_TMP/shoal-rebal-PID */
    char shard_bin[BENCH_PATH_MAX]; /* programs */
    char coord_bin[BENCH_PATH_MAX];
    bench_node_t shards[S_SHARDS], coord;
    char shard_list[S_SHARDS * 64]; /* --shards: the first S_FIRST_SHARDS */
    float *base;                    /* n x dim */
    float *queries;                 /* nq x dim */
    shoal_client_t *c;              /* the main thread's: load, stats, growth, exact search */
    shoal_client_t *q;              /* the timed queries' (one thread at a time) */
} s_ctx_t;

static int s_shard_start(s_ctx_t *x, size_t i, shoal_err_t *err)
{
    bench_node_t *n = &x->shards[i];
    char *argv[] = {x->shard_bin,   "--listen", n->listen,   "--data-dir", n->data_dir,
                    "--ready-file", n->ready,   "--threads", S_THREADS,    NULL};
    return bench_node_start(x->hosts, n, argv, S_READY_WAIT_S, err);
}

/* Short failure detection, as in the replication benchmark: the added shard is seen up soon. */
static int s_coord_start(s_ctx_t *x, shoal_err_t *err)
{
    bench_node_t *n = &x->coord;
    char *argv[] = {x->coord_bin, "--listen",        n->listen,     "--data-dir",
                    n->data_dir,  "--shards",        x->shard_list, "--ready-file",
                    n->ready,     "--threads",       S_THREADS,     "--ping-interval-ms",
                    S_PING_MS,    "--down-after-ms", S_DOWN_MS,     NULL};
    return bench_node_start(x->hosts, n, argv, S_READY_WAIT_S, err);
}

/*
 * Names every node, starts the first S_FIRST_SHARDS shards and the
 * coordinator (which knows only those), and connects both clients.
 */
static int s_cluster_start(s_ctx_t *x, shoal_err_t *err)
{
    for (size_t i = 0; i < S_SHARDS; i++) {
        char name[16];
        snprintf(name, sizeof name, "shard%zu", i);
        bench_node_init(x->hosts, &x->shards[i], x->dir, name, i, S_SHARD_PORT);
    }
    bench_node_init(x->hosts, &x->coord, x->dir, "coord", S_COORD_HOST, S_COORD_PORT);
    x->shard_list[0] = '\0';
    for (size_t i = 0; i < S_FIRST_SHARDS; i++) {
        int rc = s_shard_start(x, i, err);
        if (rc != 0)
            return rc;
        size_t len = strlen(x->shard_list);
        snprintf(x->shard_list + len, sizeof x->shard_list - len, "%s%s", i ? "," : "",
                 x->shards[i].listen);
    }
    int rc = s_coord_start(x, err);
    if (rc != 0)
        return rc;
    if (!(x->c = shoal_client_new(x->coord.listen, S_TIMEOUT_MS, err)))
        return err->code;
    x->q = shoal_client_new(x->coord.listen, S_QUERY_TIMEOUT_MS, err);
    return x->q ? 0 : err->code;
}

/* SIGTERM to every process (SIGKILL after S_STOP_WAIT_S); the clients closed. */
static void s_cluster_stop(s_ctx_t *x)
{
    shoal_client_destroy(&x->q);
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
/* Data and loading                                                         */
/* ------------------------------------------------------------------------ */

/* The base and the queries, from the generator seeded with --seed. */
static int s_data_make(s_ctx_t *x, shoal_err_t *err)
{
    const s_opts_t *o = x->o;
    datagen_params_t gp = {.dim = o->dim, .seed = o->seed};
    datagen_t *gen = datagen_new(&gp, err);
    if (!gen)
        return shoal_err_prefix(err, "datagen");
    x->base = malloc(o->n * o->dim * sizeof *x->base);
    x->queries = malloc(o->nq * o->dim * sizeof *x->queries);
    int rc = 0;
    if (!x->base || !x->queries)
        rc = shoal_err_set(err, SHOAL_ENOMEM, "no memory for %zu + %zu rows of dim %zu", o->n,
                           o->nq, o->dim);
    if (rc == 0) {
        datagen_fill(gen, DATAGEN_STREAM_BASE, 0, o->n, x->base);
        datagen_fill(gen, DATAGEN_STREAM_QUERY, 0, o->nq, x->queries);
    }
    datagen_destroy(&gen);
    return rc;
}

/*
 * Creates the collection (R = 1; retried while the coordinator has not heard
 * from every shard), trains it, inserts the base in S_LOAD_BATCH-row
 * requests and checkpoints, so that no checkpoint of the load falls into a
 * timed phase.
 */
static int s_load(s_ctx_t *x, shoal_err_t *err)
{
    const s_opts_t *o = x->o;
    shoal_create_opts_t copts = {.nlist = o->nlist, .replication = 1, .write_quorum = 1};
    int rc = bench_create_retry(x->c, S_COLL, o->dim, SHOAL_METRIC_L2, &copts, S_READY_WAIT_S, err);
    if (rc != 0)
        return rc;
    double t0 = timing_now();
    size_t ntrain = o->n < S_TRAIN_MAX ? o->n : S_TRAIN_MAX;
    if ((rc = shoal_client_train(x->c, S_COLL, x->base, ntrain, o->dim, NULL, NULL, err)) != 0)
        return shoal_err_prefix(err, "train %s", S_COLL);
    double t1 = timing_now();
    uint64_t ids[S_LOAD_BATCH];
    for (size_t at = 0; at < o->n; at += S_LOAD_BATCH) {
        size_t m = o->n - at < S_LOAD_BATCH ? o->n - at : S_LOAD_BATCH;
        for (size_t i = 0; i < m; i++)
            ids[i] = at + i;
        rc = shoal_client_insert(x->c, S_COLL, ids, x->base + at * o->dim, m, o->dim, NULL, err);
        if (rc != 0)
            return shoal_err_prefix(err, "insert of rows %zu..", at);
    }
    double t2 = timing_now();
    if ((rc = shoal_client_checkpoint(x->c, S_COLL, err)) != 0)
        return shoal_err_prefix(err, "checkpoint %s", S_COLL);
    printf("load n=%zu dim=%zu nlist=%zu shards=%d train_rows=%zu train_s=%.2f insert_s=%.2f "
           "insert_vps=%.0f\n",
           o->n, o->dim, o->nlist, S_FIRST_SHARDS, ntrain, t1 - t0, t2 - t1,
           (double)o->n / (t2 - t1));
    fflush(stdout);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Stats                                                                    */
/* ------------------------------------------------------------------------ */

/* The coordinator's "moves" numbers this benchmark reads, in this order. */
static const char *const s_move_paths[] = {
    "moves.pending",    "moves.running", "moves.orphans", "moves.rows_copied",
    "moves.rows_per_s", "moves.aborted", "moves.done",    "moves.current.eta_s"};
enum {
    S_PENDING,
    S_RUNNING,
    S_ORPHANS,
    S_ROWS_COPIED,
    S_ROWS_PER_S,
    S_ABORTED,
    S_DONE,
    S_ETA_S,
    S_NMOVE_STATS
};

/*
 * The numbers at s_move_paths from one stats reply of the coordinator into
 * v (NAN where absent: "current" exists only while a move runs). A reply
 * without the counters that say when the moves are done is an error.
 */
static int s_move_stats(s_ctx_t *x, double v[S_NMOVE_STATS], shoal_err_t *err)
{
    void *info = NULL;
    size_t len = 0;
    int rc = shoal_client_stats(x->c, NULL, NULL, &info, &len, err);
    if (rc != 0)
        return shoal_err_prefix(err, "stats");
    for (size_t i = 0; i < S_NMOVE_STATS; i++)
        if (wire_info_lookup(info, len, s_move_paths[i], &v[i]) != 0)
            v[i] = NAN;
    free(info);
    for (size_t i = S_PENDING; i <= S_ROWS_COPIED; i++)
        if (isnan(v[i]))
            return shoal_err_set(err, SHOAL_EPROTO, "the coordinator's stats have no %s",
                                 s_move_paths[i]);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Timed queries                                                            */
/* ------------------------------------------------------------------------ */

/* Latencies of one phase's requests. */
typedef struct {
    double *ms;                  /* one per answered request (grown) */
    size_t n, cap;               /* answered; room */
    size_t failed;               /* requests that got an error (not in ms) */
    size_t partial;              /* answered without every shard (in ms) */
    char why[SHOAL_ERR_MSG_MAX + 32]; /* the first failure: "query Q: <message>" */
} s_lat_t;

static void s_lat_fini(s_lat_t *lat)
{
    free(lat->ms);
    memset(lat, 0, sizeof *lat);
}

static int s_lat_add(s_lat_t *lat, double ms)
{
    if (lat->n == lat->cap) {
        size_t cap = lat->cap ? 2 * lat->cap : 1024;
        double *grown = realloc(lat->ms, cap * sizeof *grown);
        if (!grown)
            return SHOAL_ENOMEM;
        lat->ms = grown;
        lat->cap = cap;
    }
    lat->ms[lat->n++] = ms;
    return 0;
}

/*
 * Query q as one request through c, timed into lat; its ids into found (S_K,
 * may be NULL). A failed request is counted, not fatal: the phases measure
 * what searches see while lists move, failures included. Returns 0, or
 * SHOAL_ENOMEM when the latency could not be kept.
 */
static int s_query(shoal_client_t *c, const s_ctx_t *x, size_t q, uint64_t *found, s_lat_t *lat)
{
    size_t dim = x->o->dim;
    shoal_search_opts_t opts = {.k = S_K, .nprobe = x->o->nprobe};
    shoal_search_info_t info;
    uint64_t *ids = NULL;
    shoal_err_t err;
    double t0 = timing_now();
    int rc = shoal_client_search_ex(c, S_COLL, x->queries + q * dim, 1, dim, &opts, &ids, NULL,
                                    &info, &err);
    double ms = (timing_now() - t0) * 1e3;
    if (rc != 0) {
        if (lat->failed++ == 0)
            snprintf(lat->why, sizeof lat->why, "query %zu: %s", q, err.msg);
        return 0;
    }
    lat->partial += info.partial != 0;
    if (found)
        memcpy(found, ids, S_K * sizeof *ids);
    free(ids);
    return s_lat_add(lat, ms);
}

/* Every query once, one request each, through x->q; the answers into found (nq x S_K). */
static int s_phase_fixed(s_ctx_t *x, s_lat_t *lat, uint64_t *found, shoal_err_t *err)
{
    for (size_t q = 0; q < x->o->nq; q++) {
        for (size_t i = 0; i < S_K; i++)
            found[q * S_K + i] = TOPK_ID_NONE; /* what a failed request found */
        if (s_query(x->q, x, q, found + q * S_K, lat) != 0)
            return shoal_err_set(err, SHOAL_ENOMEM, "no memory for %zu latencies", lat->n + 1);
    }
    return 0;
}

/* Untimed queries first: connection, caches and the shards' threads warmed. */
static void s_warm_up(s_ctx_t *x)
{
    s_lat_t lat;
    memset(&lat, 0, sizeof lat);
    size_t n = x->o->nq < S_WARMUP ? x->o->nq : S_WARMUP;
    for (size_t q = 0; q < n; q++)
        s_query(x->q, x, q, NULL, &lat);
    s_lat_fini(&lat);
}

/*
 * recall@S_K of found (nq x S_K) against exact search over every list now
 * (mode exact, nprobe = nlist), in S_EXACT_BATCH-query requests.
 */
static int s_recall(s_ctx_t *x, const uint64_t *found, double *recall, shoal_err_t *err)
{
    const s_opts_t *o = x->o;
    shoal_search_opts_t exact = {.k = S_K, .mode = WIRE_MODE_EXACT, .nprobe = o->nlist};
    size_t hit = 0;
    for (size_t at = 0; at < o->nq; at += S_EXACT_BATCH) {
        size_t m = o->nq - at < S_EXACT_BATCH ? o->nq - at : S_EXACT_BATCH;
        uint64_t *truth = NULL;
        int rc = shoal_client_search(x->c, S_COLL, x->queries + at * o->dim, m, o->dim, &exact,
                                     &truth, NULL, NULL, err);
        if (rc != 0)
            return shoal_err_prefix(err, "exact search of queries %zu..", at);
        for (size_t q = 0; q < m; q++) {
            const uint64_t *f = found + (at + q) * S_K, *t = truth + q * S_K;
            for (size_t i = 0; i < S_K; i++)
                for (size_t j = 0; f[i] != TOPK_ID_NONE && j < S_K; j++)
                    if (f[i] == t[j]) {
                        hit++;
                        break;
                    }
        }
        free(truth);
    }
    *recall = (double)hit / (double)(o->nq * S_K);
    return 0;
}

/* p50 and p99 of a phase (sorts lat->ms); NAN when nothing was answered. */
static void s_lat_summary(s_lat_t *lat, double *p50, double *p99)
{
    *p50 = *p99 = NAN;
    if (lat->n == 0)
        return;
    qsort(lat->ms, lat->n, sizeof *lat->ms, timing_cmp_double);
    *p50 = timing_percentile(lat->ms, lat->n, 0.50);
    *p99 = timing_percentile(lat->ms, lat->n, 0.99);
}

static void s_lat_print(const char *phase, s_lat_t *lat, double *p50, double *p99)
{
    s_lat_summary(lat, p50, p99);
    double max = lat->n ? lat->ms[lat->n - 1] : NAN;
    printf("phase=%s requests=%zu failed=%zu partial=%zu p50_ms=%.3f p99_ms=%.3f max_ms=%.3f\n",
           phase, lat->n + lat->failed, lat->failed, lat->partial, *p50, *p99, max);
    if (lat->failed)
        printf("phase=%s first_failure=\"%s\"\n", phase, lat->why);
    fflush(stdout);
}

/* ------------------------------------------------------------------------ */
/* Growth                                                                   */
/* ------------------------------------------------------------------------ */

/* The query loop of the during phase: x->q's thread until stop. */
typedef struct {
    const s_ctx_t *x;
    pthread_t thread;
    atomic_int stop; /* set by the main thread once the moves are done */
    s_lat_t lat;     /* what it measured */
    int rc;          /* 0, or SHOAL_ENOMEM */
} s_stream_t;

static void *s_stream_run(void *arg)
{
    s_stream_t *s = arg;
    for (size_t i = 0; s->rc == 0 && !atomic_load(&s->stop); i++)
        s->rc = s_query(s->x->q, s->x, i % s->x->o->nq, NULL, &s->lat);
    return NULL;
}

/* What the growth did and measured. */
typedef struct {
    double moves, vectors;        /* planned (the rebalance reply) */
    double imb_before, imb_after; /* max / mean vectors per shard, as planned */
    double spq_before, spq_after; /* shards a query touches, as planned */
    double seconds;               /* the rebalance call until the moves were done */
    double rows_copied;           /* stats moves.rows_copied over that time */
    double coord_rows_per_s;      /* the coordinator's own rate (moves.rows_per_s) */
    double aborted;               /* moves given up (moves.aborted) */
    s_lat_t lat;                  /* the searches meanwhile */
} s_growth_t;

/* Reads the rebalance reply's plan summary into g. */
static int s_plan_read(const void *info, size_t len, s_growth_t *g, shoal_err_t *err)
{
    const char *paths[] = {"moves",
                           "vectors",
                           "imbalance_before",
                           "imbalance_after",
                           "shards_per_query_before",
                           "shards_per_query_after"};
    double *values[] = {&g->moves,     &g->vectors,    &g->imb_before,
                        &g->imb_after, &g->spq_before, &g->spq_after};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++)
        if (wire_info_lookup(info, len, paths[i], values[i]) != 0)
            return shoal_err_set(err, SHOAL_EPROTO, "the rebalance reply has no %s", paths[i]);
    return 0;
}

/*
 * Polls the coordinator until no move is pending or running and no old copy
 * is left; v gets the last stats. t0: when the rebalance was called.
 */
static int s_moves_wait(s_ctx_t *x, double t0, double v[S_NMOVE_STATS], shoal_err_t *err)
{
    double next_progress = t0 + S_PROGRESS_S;
    while (1) {
        int rc = s_move_stats(x, v, err);
        if (rc != 0)
            return rc;
        if (v[S_PENDING] == 0 && v[S_RUNNING] == 0 && v[S_ORPHANS] == 0)
            return 0;
        double now = timing_now();
        if (now - t0 > S_MOVES_WAIT_S)
            return shoal_err_set(err, SHOAL_ETIMEOUT,
                                 "moves not done after %.0f s (pending %g, running %g, old "
                                 "copies %g, done %g, aborted %g)",
                                 S_MOVES_WAIT_S, v[S_PENDING], v[S_RUNNING], v[S_ORPHANS],
                                 v[S_DONE], v[S_ABORTED]);
        if (now >= next_progress) {
            printf("moving t=%.0fs done=%g pending=%g running=%g old_copies=%g rows_copied=%.0f "
                   "current_eta_s=%.1f\n",
                   now - t0, v[S_DONE], v[S_PENDING], v[S_RUNNING], v[S_ORPHANS], v[S_ROWS_COPIED],
                   v[S_ETA_S]);
            fflush(stdout);
            next_progress += S_PROGRESS_S;
        }
        bench_sleep_ms(S_POLL_MS);
    }
}

/* The last shard started and added, the lists rebalanced, the moves waited for. */
static int s_grow_steps(s_ctx_t *x, s_growth_t *g, shoal_err_t *err)
{
    int rc = s_shard_start(x, S_SHARDS - 1, err);
    if (rc != 0)
        return shoal_err_prefix(err, "start the new shard");
    const char *ep = x->shards[S_SHARDS - 1].listen;
    if ((rc = shoal_client_shard(x->c, WIRE_OP_SHARD_ADD, ep, NULL, NULL, NULL, err)) != 0)
        return shoal_err_prefix(err, "shard add %s", ep);
    double v[S_NMOVE_STATS];
    if ((rc = s_move_stats(x, v, err)) != 0)
        return rc;
    double rows_before = v[S_ROWS_COPIED];
    void *info = NULL;
    size_t len = 0;
    double t0 = timing_now();
    rc = shoal_client_rebalance(x->c, 0, 0, (uint32_t)x->o->rate_mb, NULL, &info, &len, err);
    if (rc != 0)
        return shoal_err_prefix(err, "rebalance");
    rc = s_plan_read(info, len, g, err);
    free(info);
    if (rc != 0)
        return rc;
    printf("rebalance planned moves=%.0f vectors=%.0f imbalance_before=%.3f imbalance_after=%.3f "
           "shards_per_query_before=%.2f shards_per_query_after=%.2f\n",
           g->moves, g->vectors, g->imb_before, g->imb_after, g->spq_before, g->spq_after);
    fflush(stdout);
    if ((rc = s_moves_wait(x, t0, v, err)) != 0)
        return rc;
    g->seconds = timing_now() - t0;
    g->rows_copied = v[S_ROWS_COPIED] - rows_before;
    g->coord_rows_per_s = v[S_ROWS_PER_S];
    g->aborted = v[S_ABORTED];
    return 0;
}

/* The during phase: the query loop runs on x->q's thread while the cluster grows. */
static int s_grow(s_ctx_t *x, s_growth_t *g, shoal_err_t *err)
{
    s_stream_t st;
    memset(&st, 0, sizeof st);
    st.x = x;
    atomic_init(&st.stop, 0);
    if (pthread_create(&st.thread, NULL, s_stream_run, &st) != 0)
        return shoal_err_set(err, SHOAL_EIO, "pthread_create failed");
    int rc = s_grow_steps(x, g, err);
    atomic_store(&st.stop, 1);
    pthread_join(st.thread, NULL);
    g->lat = st.lat; /* the latencies are g's now */
    if (rc == 0 && st.rc != 0)
        rc = shoal_err_set(err, SHOAL_ENOMEM, "no memory for %zu latencies", st.lat.n + 1);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* The run                                                                  */
/* ------------------------------------------------------------------------ */

/* Everything the RESULT line reports, besides the growth. */
typedef struct {
    s_lat_t before, after;
    double recall_before, recall_after;
    double p50[3], p99[3]; /* before, during, after */
} s_report_t;

static void s_report_print(const s_ctx_t *x, const s_growth_t *g, const s_report_t *r)
{
    double vps = g->seconds > 0 ? g->rows_copied / g->seconds : NAN;
    printf("rebalance moves=%.0f vectors=%.0f rows_copied=%.0f seconds=%.3f vectors_per_s=%.1f "
           "coordinator_rows_per_s=%.1f aborted=%.0f rate_mb=%zu imbalance_before=%.3f "
           "imbalance_after=%.3f\n",
           g->moves, g->vectors, g->rows_copied, g->seconds, vps, g->coord_rows_per_s, g->aborted,
           x->o->rate_mb, g->imb_before, g->imb_after);
    printf("recall_before=%.4f recall_after=%.4f k=%d nprobe=%zu nlist=%zu queries=%zu\n",
           r->recall_before, r->recall_after, S_K, x->o->nprobe, x->o->nlist, x->o->nq);
    printf("RESULT rebalance vectors_per_s=%.0f seconds=%.3f moves=%.0f p50_before_ms=%.3f "
           "p99_before_ms=%.3f p50_during_ms=%.3f p99_during_ms=%.3f p50_after_ms=%.3f "
           "p99_after_ms=%.3f recall_before=%.4f recall_after=%.4f\n",
           vps, g->seconds, g->moves, r->p50[0], r->p99[0], r->p50[1], r->p99[1], r->p50[2],
           r->p99[2], r->recall_before, r->recall_after);
    fflush(stdout);
}

/* The phases on a loaded cluster; found: nq x S_K scratch for the answers. */
static int s_phases(s_ctx_t *x, s_growth_t *g, s_report_t *r, uint64_t *found, shoal_err_t *err)
{
    s_warm_up(x);
    int rc = s_phase_fixed(x, &r->before, found, err);
    if (rc == 0)
        rc = s_recall(x, found, &r->recall_before, err);
    if (rc != 0)
        return shoal_err_prefix(err, "before");
    s_lat_print("before", &r->before, &r->p50[0], &r->p99[0]);
    if ((rc = s_grow(x, g, err)) != 0)
        return shoal_err_prefix(err, "during");
    s_lat_print("during", &g->lat, &r->p50[1], &r->p99[1]);
    rc = s_phase_fixed(x, &r->after, found, err);
    if (rc == 0)
        rc = s_recall(x, found, &r->recall_after, err);
    if (rc != 0)
        return shoal_err_prefix(err, "after");
    s_lat_print("after", &r->after, &r->p50[2], &r->p99[2]);
    s_report_print(x, g, r);
    return 0;
}

static int s_run_in(s_ctx_t *x, shoal_err_t *err)
{
    s_growth_t g;
    s_report_t r;
    memset(&g, 0, sizeof g);
    memset(&r, 0, sizeof r);
    uint64_t *found = malloc(x->o->nq * S_K * sizeof *found);
    int rc = found ? 0 : shoal_err_set(err, SHOAL_ENOMEM, "no memory for %zu answers", x->o->nq);
    if (rc == 0)
        rc = s_data_make(x, err);
    if (rc == 0)
        rc = hosts_enter_controller(x->hosts, err);
    if (rc == 0)
        rc = s_cluster_start(x, err);
    if (rc == 0)
        rc = s_load(x, err);
    if (rc == 0)
        rc = s_phases(x, &g, &r, found, err);
    s_cluster_stop(x);
    s_lat_fini(&r.before);
    s_lat_fini(&r.after);
    s_lat_fini(&g.lat);
    free(found);
    return rc;
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
    if (!(x.hosts = hosts_up(S_SHARDS + 1, err))) {
        if (err->code != SHOAL_EUNSUPPORTED)
            return err->code;
        printf("rebalance: skipped: %s\n", err->msg);
        return 0;
    }
    const char *tmp = getenv("SHOAL_TMP");
    snprintf(x.dir, sizeof x.dir, "%s/shoal-rebal-%ld", tmp && *tmp ? tmp : "/tmp", (long)getpid());
    mkdir(x.dir, 0755);
    printf("rebalance: %d shard hosts (one added) + a coordinator host (%s*), scratch %s\n",
           S_SHARDS, hosts_prefix(x.hosts), x.dir);
    fflush(stdout);
    rc = s_run_in(&x, err);
    hosts_down(&x.hosts);
    if (rc == 0 && !x.o->keep)
        bench_remove_tree(x.dir);
    else
        printf("rebalance: data and logs kept in %s\n", x.dir);
    free(x.base);
    free(x.queries);
    return rc;
}

int bench_rebalance_main(int argc, char **argv)
{
    s_opts_t opts;
    return bench_command_main("rebalance", argc, argv, &opts, s_parse, s_usage, s_run);
}
