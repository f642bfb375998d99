/*
 * shoal_bench_cluster.c - `shoal-bench cluster`: one bin/shoal-coordinator in
 * front of --shards bin/shoal-shard processes, against the same data in one
 * in-process HNSW (shard/hnsw.h), at the same recall@k.
 *
 * Where the processes run:
 *   - by default, on loopback: children of this program on 127.0.0.1,
 *     ephemeral ports, their output on this program's stdout/stderr;
 *   - with --hosts, on the many-hosts harness (tests/test_hosts.h; needs
 *     root): one network namespace per shard (hosts 0..S-1, port 7701 each)
 *     and one for the coordinator (host S, port 7700), the ports
 *     `shoal-bench replication` uses; the client talks to the coordinator
 *     from the controller namespace, so every request crosses a veth pair
 *     and a bridge. The shards start one after another (each waited for),
 *     the collection's create is retried while the coordinator has not heard
 *     from every shard, and each process's output is copied to stderr when
 *     the cluster is gone. Every host still shares this machine's cores.
 *   Nothing else differs between the two: the same load, sweep, measurement
 *   and in-process comparison.
 *
 * What is compared, and how:
 *   - Both sides hold the same base (ids = row numbers) with the same M and
 *     ef_construction. The cluster's collection is trained on an evenly
 *     strided sample of the base (--train-sample rows) and loaded through the
 *     client library in batches of --batch, checkpointed, and searched only
 *     once the coordinator's background calibration of it is done (line
 *     calibration_wait_s); the in-process index is built with
 *     hnsw_insert_batch on --threads threads.
 *   - Threads: T = --threads (default: online cores) in total. Shard i gets
 *     --threads T/S (+1 for the first T%S shards), at least 1 each, so the
 *     shards' sum is T unless T < S (then it is S, which the output says). The
 *     coordinator gets --threads T for k-means and routing (routing runs
 *     before the shards work on a batch, so the two do not overlap much). The
 *     in-process side builds and batch-searches on T threads and
 *     single-searches on one.
 *   - The operating point: the smallest setting reaching --target. For the
 *     cluster, nprobe of --nprobe-list ascending and, for each, ef of
 *     --ef-list ascending: the cluster's recall@k over every query (mode
 *     hnsw, batches of --nbatch); the first pair reaching --target ends the
 *     sweep (the smallest nprobe, then the smallest ef: fewest shards, then
 *     least work; throughput from a single sweep pass is too noisy to choose
 *     by). An nprobe whose recall stops growing with ef moves on to the next.
 *     The in-process side takes the first ef reaching --target. When a side
 *     never reaches it, its most accurate setting is used and the output says
 *     so.
 *   - At those settings, --reps repetitions (after one untimed warm-up) of:
 *     batch throughput (cluster: the first --nbatch queries in one search
 *     request; in-process: the same queries on T threads in parallel), and
 *     single-query throughput and p50/p99 latency (every query, one request
 *     at a time from one client thread; in-process: one thread). Within a
 *     repetition each pass is repeated until S_MIN_PASS_S has passed (so a
 *     fast in-process pass is not timed over a few milliseconds); latencies
 *     come from the first pass. Reported values are medians over the
 *     repetitions; shards_per_query is the coordinator's fan-out (the reply's
 *     fanout / queries) for the batch. Then the hops of a single query
 *     (s_cluster_hops): pings of the coordinator and of shard 0, and the
 *     queries sent straight to shard 0; and the footprint (resident memory
 *     and data-dir bytes of the shards and the coordinator, per vector).
 *
 * Output: key=value lines, a side-by-side table, and last
 *   RESULT cluster recall=.. batch_qps_ratio_vs_inprocess=..
 *          single_qps_ratio_vs_inprocess=.. shards_per_query=..
 *          network=loopback|hosts
 * (ratios: cluster / in-process, > 1 means the cluster is faster; network
 * last, so that readers of the earlier keys are unaffected).
 *
 * The processes get SIGKILL if the benchmark dies (bench_child_t on
 * loopback; with --hosts, PR_SET_PDEATHSIG and the harness's exit and signal
 * cleanup, which also deletes the namespaces); scratch data lives under
 * $SHOAL_TMP (default /tmp) and is removed.
 *
 * Exit codes: 0 success, 2 usage error, 1 anything that failed while running.
 */
#define _GNU_SOURCE /* setns, for tests/test_hosts.h; before every #include */

#include "bench/shoal_bench.h"
#include "bench/shoal_bench_hosts.h"

#include <czmq.h>

#include "client/shoal_client.h"
#include "common/distance.h"
#include "common/error.h"
#include "common/groundtruth.h"
#include "common/parfor.h"
#include "common/vecfile.h"
#include "shard/hnsw.h"
#include "tests/test_hosts.h"

#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_SHARDS_MAX          64
#define S_SHARDS_DEFAULT      4
#define S_THREADS_MAX         1024
#define S_LIST_MAX            32     /* values in --ef-list / --nprobe-list */
#define S_K_DEFAULT           10
#define S_BATCH_DEFAULT       10000  /* vectors per insert request */
#define S_NBATCH_DEFAULT      1000   /* queries per batch search request */
#define S_REPS_DEFAULT        5
#define S_MIN_PASS_S          0.5    /* a timed measurement repeats its pass this long */
#define S_TRAIN_DEFAULT       50000  /* sample rows for k-means */
#define S_TARGET_DEFAULT      0.95
#define S_EF_LIST_DEFAULT     "10,12,14,16,18,20,22,24,28,32,40,48,64,96,128,192,256,384,512"
#define S_NPROBE_LIST_DEFAULT "2,4,8,16,32"
#define S_PLATEAU             0.001  /* recall gain below which a sweep stops */
#define S_READY_WAIT_S        600.0
#define S_STOP_WAIT_S         600.0
#define S_CALIB_POLL_MS       500    /* polls of the calibration's progress */
#define S_CALL_TIMEOUT_MS     600000 /* one client call (training, big inserts) */
#define S_DEADLINE_MS         600000 /* searches: never partial because of a deadline */
#define S_COLL                "bench"
/* --hosts: every host has its own port space, so one port serves every shard */
#define S_HOSTS_SHARD_PORT    7701
#define S_HOSTS_COORD_PORT    7700
/* --hosts: the harness runs at most HOSTS_PROCS_MAX processes, one is the coordinator */
#define S_HOSTS_SHARDS_MAX    (HOSTS_PROCS_MAX - 1)

typedef struct {
    const char *base;        /* --base */
    const char *queries;     /* --queries */
    const char *gt;          /* --gt */
    const char *coord_bin;   /* --coordinator-bin (default: next to this program) */
    const char *shard_bin;   /* --shard-bin (default: next to this program) */
    size_t shards;           /* --shards */
    size_t threads;          /* --threads (0 = online cores) */
    size_t nlist;            /* --nlist (0 = the coordinator's default) */
    size_t k;                /* --k */
    size_t M;                /* --M */
    size_t ef_construction;  /* --ef-construction */
    size_t batch;            /* --batch: vectors per insert request */
    size_t nbatch;           /* --nbatch: queries per batch search */
    size_t reps;             /* --reps */
    size_t train_sample;     /* --train-sample */
    double target;           /* --target recall@k */
    size_t efs[S_LIST_MAX];  /* --ef-list, ascending */
    size_t nefs;
    size_t nprobes[S_LIST_MAX]; /* --nprobe-list, ascending */
    size_t nnprobes;
    int hosts;                  /* --hosts: run the processes on namespace hosts */
} cluster_bench_opts_t;

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: shoal-bench cluster --base F --queries Q --gt G [--shards S] [--threads T]\n"
            "                           [--nlist N] [--coordinator-bin PATH] [--shard-bin PATH]\n"
            "                           [--hosts] [options]\n"
            "\n"
            "Starts S shoal-shard processes and one shoal-coordinator (on loopback, or on\n"
            "namespace hosts with --hosts), loads the base through the client library, and\n"
            "compares the cluster with one in-process HNSW of the same data at the same\n"
            "recall@k: batch and single-query throughput, p50/p99 latency, shards touched\n"
            "per query. Last line:\n"
            "  RESULT cluster recall=.. batch_qps_ratio_vs_inprocess=..\n"
            "         single_qps_ratio_vs_inprocess=.. shards_per_query=..\n"
            "         network=loopback|hosts\n"
            "\n"
            "  --base F              base vectors (.fvecs, .bvecs or .npy); ids = row numbers\n"
            "  --queries Q           query vectors, same dimension\n"
            "  --gt G                exact neighbours (.ivecs), at least k per query\n"
            "  --shards S            shard processes (default %d)\n"
            "  --threads T           total threads: the shards' --threads sum to T (at least\n"
            "                        1 each), in-process build and batch search use T\n"
            "                        (default: every online core)\n"
            "  --nlist N             IVF lists (default: the coordinator's)\n"
            "  --k K                 neighbours per query (default %d)\n"
            "  --M M                 links per node (default %d)\n"
            "  --ef-construction E   build candidates (default %d)\n"
            "  --batch B             vectors per insert request (default %d)\n"
            "  --nbatch B            queries per batch search request (default %d)\n"
            "  --reps R              timed repetitions; medians are reported (default %d)\n"
            "  --train-sample N      rows k-means trains on (default %d, at most the base)\n"
            "  --target R            recall@k both sides must reach (default %.2f)\n"
            "  --ef-list A,B,..      ef values swept, ascending (default %s)\n"
            "  --nprobe-list A,B,..  nprobe values swept, ascending (default %s)\n"
            "  --coordinator-bin P   the shoal-coordinator binary (default: next to shoal-bench)\n"
            "  --shard-bin P         the shoal-shard binary (default: next to shoal-bench)\n"
            "  --hosts               run each shard and the coordinator on a host of its own:\n"
            "                        S+1 network namespaces joined by veth pairs and a bridge\n"
            "                        (tests/test_hosts.h; needs root; at most %d shards),\n"
            "                        the client in a controller namespace; shards on port\n"
            "                        %d, the coordinator on %d. The hosts share this\n"
            "                        machine's cores. Default: processes on loopback\n"
            "\n"
            "Scratch data goes under $SHOAL_TMP (default /tmp) and is removed.\n",
            S_SHARDS_DEFAULT, S_K_DEFAULT, HNSW_M_DEFAULT, HNSW_EF_CONSTRUCTION_DEFAULT,
            S_BATCH_DEFAULT, S_NBATCH_DEFAULT, S_REPS_DEFAULT, S_TRAIN_DEFAULT, S_TARGET_DEFAULT,
            S_EF_LIST_DEFAULT, S_NPROBE_LIST_DEFAULT, S_HOSTS_SHARDS_MAX, S_HOSTS_SHARD_PORT,
            S_HOSTS_COORD_PORT);
}

/* "16,32,64" into out (strictly ascending, each in [min, max]); prints why on error. */
static int s_parse_list(const char *name, const char *text, size_t min, size_t max, size_t *out,
                        size_t *count)
{
    char buf[512];
    if (strlen(text) >= sizeof buf) {
        fprintf(stderr, "shoal-bench cluster: %s: list longer than %zu characters\n", name,
                sizeof buf - 1);
        return -1;
    }
    snprintf(buf, sizeof buf, "%s", text);
    *count = 0;
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (*count == S_LIST_MAX) {
            fprintf(stderr, "shoal-bench cluster: %s: more than %d values\n", name, S_LIST_MAX);
            return -1;
        }
        size_t v;
        if (bench_parse_size(name, tok, min, max, &v) != 0)
            return -1;
        if (*count > 0 && v <= out[*count - 1]) {
            fprintf(stderr, "shoal-bench cluster: %s: values must be ascending, got %zu after %zu\n",
                    name, v, out[*count - 1]);
            return -1;
        }
        out[(*count)++] = v;
    }
    if (*count == 0) {
        fprintf(stderr, "shoal-bench cluster: %s: expected a comma-separated list\n", name);
        return -1;
    }
    return 0;
}

/* The options that are not single numbers; bench_other_fn. ctx: the options. */
static int s_parse_other(const char *opt, const char *val, void *ctx)
{
    cluster_bench_opts_t *o = ctx;
    if (!strcmp(opt, "--base")) {
        o->base = val;
    } else if (!strcmp(opt, "--queries")) {
        o->queries = val;
    } else if (!strcmp(opt, "--gt")) {
        o->gt = val;
    } else if (!strcmp(opt, "--coordinator-bin")) {
        o->coord_bin = val;
    } else if (!strcmp(opt, "--shard-bin")) {
        o->shard_bin = val;
    } else if (!strcmp(opt, "--ef-list")) {
        return s_parse_list(opt, val, HNSW_EF_MIN, HNSW_EF_MAX, o->efs, &o->nefs);
    } else if (!strcmp(opt, "--nprobe-list")) {
        return s_parse_list(opt, val, 1, 1u << 20, o->nprobes, &o->nnprobes);
    } else if (!strcmp(opt, "--target")) {
        char *end = NULL;
        errno = 0;
        double t = strtod(val, &end);
        if (errno || end == val || *end || !(t > 0.0 && t <= 1.0)) {
            fprintf(stderr, "shoal-bench cluster: --target: expected a recall in (0, 1], got "
                            "\"%s\"\n",
                    val);
            return -1;
        }
        o->target = t;
    } else {
        return 1;
    }
    return 0;
}

/* Returns 0, 1 for --help, or -1 after printing one line on stderr. */
static int s_parse(int argc, char **argv, void *opts)
{
    cluster_bench_opts_t *o = opts;
    memset(o, 0, sizeof *o);
    o->shards = S_SHARDS_DEFAULT;
    o->k = S_K_DEFAULT;
    o->M = HNSW_M_DEFAULT;
    o->ef_construction = HNSW_EF_CONSTRUCTION_DEFAULT;
    o->batch = S_BATCH_DEFAULT;
    o->nbatch = S_NBATCH_DEFAULT;
    o->reps = S_REPS_DEFAULT;
    o->train_sample = S_TRAIN_DEFAULT;
    o->target = S_TARGET_DEFAULT;
    if (s_parse_list("--ef-list", S_EF_LIST_DEFAULT, 1, HNSW_EF_MAX, o->efs, &o->nefs) != 0 ||
        s_parse_list("--nprobe-list", S_NPROBE_LIST_DEFAULT, 1, 1u << 20, o->nprobes,
                     &o->nnprobes) != 0)
        return -1;
    const bench_opt_t sizes[] = {
        {"--shards", 1, S_SHARDS_MAX, &o->shards, NULL},
        {"--threads", 0, S_THREADS_MAX, &o->threads, NULL},
        {"--nlist", 0, 1u << 20, &o->nlist, NULL},
        {"--k", 1, 4096, &o->k, NULL},
        {"--M", HNSW_M_MIN, HNSW_M_MAX, &o->M, NULL},
        {"--ef-construction", HNSW_EF_CONSTRUCTION_MIN, HNSW_EF_CONSTRUCTION_MAX,
         &o->ef_construction, NULL},
        {"--batch", 1, 10000000, &o->batch, NULL},
        {"--nbatch", 1, 1000000, &o->nbatch, NULL},
        {"--reps", 1, 100, &o->reps, NULL},
        {"--train-sample", 1, (size_t)1 << 32, &o->train_sample, NULL},
        {"--hosts", 0, 0, NULL, &o->hosts},
    };
    int rc = bench_parse_args("cluster", argc, argv, sizes, sizeof sizes / sizeof sizes[0],
                              s_parse_other, o);
    if (rc != 0)
        return rc;
    const char *missing = !o->base ? "--base" : !o->queries ? "--queries" : !o->gt ? "--gt" : NULL;
    if (missing) {
        fprintf(stderr, "shoal-bench cluster: %s is required (see shoal-bench cluster --help)\n",
                missing);
        return -1;
    }
    if (o->hosts && o->shards > S_HOSTS_SHARDS_MAX) {
        fprintf(stderr, "shoal-bench cluster: --shards: at most %d with --hosts, got %zu\n",
                S_HOSTS_SHARDS_MAX, o->shards);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* The cluster's processes                                                  */
/* ------------------------------------------------------------------------ */

typedef struct {
    char dir[BENCH_PATH_MAX - 64];          /* scratch folder ("" = none made) */
    char shard_bin[BENCH_PATH_MAX];         /* shoal-shard */
    char coord_bin[BENCH_PATH_MAX];         /* shoal-coordinator */
    size_t nshards;                         /* shard processes */
    size_t shard_threads[S_SHARDS_MAX];     /* --threads of each shard */
    bench_child_t shards[S_SHARDS_MAX];     /* loopback: the shard processes */
    bench_child_t coord;                    /* loopback: the coordinator */
    hosts_t *hosts;                         /* --hosts: the harness (NULL = loopback) */
    bench_node_t shard_nodes[S_SHARDS_MAX]; /* --hosts: shard i on host i */
    bench_node_t coord_node;                /* --hosts: the coordinator on host nshards */
} s_cluster_t;

/* The coordinator's endpoint for clients (borrowed from c). */
static const char *s_cluster_endpoint(const s_cluster_t *c)
{
    return c->hosts ? c->coord_node.listen : c->coord.endpoint;
}

/* Shard i's endpoint, as the coordinator's --shards lists it (borrowed from c). */
static const char *s_cluster_shard_endpoint(const s_cluster_t *c, size_t i)
{
    return c->hosts ? c->shard_nodes[i].listen : c->shards[i].endpoint;
}

/* The shards' endpoints, comma-separated, into list (size bytes). */
static int s_cluster_shard_list(const s_cluster_t *c, char *list, size_t size, shoal_err_t *err)
{
    size_t used = 0;
    list[0] = '\0';
    for (size_t i = 0; i < c->nshards; i++) {
        int len = snprintf(list + used, size - used, "%s%s", i ? "," : "",
                           s_cluster_shard_endpoint(c, i));
        if (len < 0 || (size_t)len >= size - used)
            return shoal_err_set(err, SHOAL_ELIMIT, "the shards' endpoints exceed %zu bytes",
                                 size - 1);
        used += (size_t)len;
    }
    return 0;
}

/* Shard i's --threads: T split as evenly as possible, at least 1 each. */
static size_t s_shard_threads(size_t total, size_t nshards, size_t i)
{
    size_t t = total / nshards + (i < total % nshards ? 1 : 0);
    return t ? t : 1;
}

/* Loopback: starts every shard (in parallel), waits until all are ready, then the coordinator. */
static int s_cluster_start_loopback(s_cluster_t *c, size_t threads, shoal_err_t *err)
{
    char data_dir[BENCH_PATH_MAX], nthreads[32];
    for (size_t i = 0; i < c->nshards; i++) {
        bench_child_t *sh = &c->shards[i];
        snprintf(sh->name, sizeof sh->name, "shard %zu", i);
        snprintf(sh->ready, sizeof sh->ready, "%s/shard%zu.ready", c->dir, i);
        snprintf(data_dir, sizeof data_dir, "%s/shard%zu", c->dir, i);
        snprintf(nthreads, sizeof nthreads, "%zu", c->shard_threads[i]);
        char *argv[] = {c->shard_bin, "--listen",   "tcp://127.0.0.1:*", "--data-dir",
                        data_dir,     "--ready-file", sh->ready,         "--threads",
                        nthreads,     "--log-level", "warn",             NULL};
        int rc = bench_child_spawn(sh, argv, err);
        if (rc != 0)
            return rc;
    }
    for (size_t i = 0; i < c->nshards; i++) {
        int rc = bench_child_wait_ready(&c->shards[i], S_READY_WAIT_S, err);
        if (rc != 0)
            return rc;
    }
    char list[S_SHARDS_MAX * 64];
    int rc = s_cluster_shard_list(c, list, sizeof list, err);
    if (rc != 0)
        return rc;
    bench_child_t *co = &c->coord;
    snprintf(co->name, sizeof co->name, "the coordinator");
    snprintf(co->ready, sizeof co->ready, "%s/coordinator.ready", c->dir);
    snprintf(data_dir, sizeof data_dir, "%s/coordinator", c->dir);
    snprintf(nthreads, sizeof nthreads, "%zu", threads);
    char *argv[] = {c->coord_bin, "--listen",     "tcp://127.0.0.1:*", "--data-dir",
                    data_dir,     "--shards",     list,                "--ready-file",
                    co->ready,    "--threads",    nthreads,            "--log-level",
                    "warn",       NULL};
    rc = bench_child_spawn(co, argv, err);
    return rc != 0 ? rc : bench_child_wait_ready(co, S_READY_WAIT_S, err);
}

/*
 * --hosts: the same programs and options as on loopback, each listening on
 * its host's address; the shards start one after another (bench_node_start
 * waits for each), then the coordinator on the last host.
 */
static int s_cluster_start_hosts(s_cluster_t *c, size_t threads, shoal_err_t *err)
{
    char nthreads[32];
    for (size_t i = 0; i < c->nshards; i++) {
        bench_node_t *n = &c->shard_nodes[i];
        char name[32];
        snprintf(name, sizeof name, "shard%zu", i);
        bench_node_init(c->hosts, n, c->dir, name, i, S_HOSTS_SHARD_PORT);
        snprintf(nthreads, sizeof nthreads, "%zu", c->shard_threads[i]);
        char *argv[] = {c->shard_bin, "--listen",     n->listen, "--data-dir",
                        n->data_dir,  "--ready-file", n->ready,  "--threads",
                        nthreads,     "--log-level",  "warn",    NULL};
        int rc = bench_node_start(c->hosts, n, argv, S_READY_WAIT_S, err);
        if (rc != 0)
            return shoal_err_prefix(err, "shard %zu", i);
    }
    char list[S_SHARDS_MAX * 64];
    int rc = s_cluster_shard_list(c, list, sizeof list, err);
    if (rc != 0)
        return rc;
    bench_node_t *co = &c->coord_node;
    bench_node_init(c->hosts, co, c->dir, "coordinator", c->nshards, S_HOSTS_COORD_PORT);
    snprintf(nthreads, sizeof nthreads, "%zu", threads);
    char *argv[] = {c->coord_bin, "--listen",    co->listen,     "--data-dir", co->data_dir,
                    "--shards",   list,          "--ready-file", co->ready,    "--threads",
                    nthreads,     "--log-level", "warn",         NULL};
    rc = bench_node_start(c->hosts, co, argv, S_READY_WAIT_S, err);
    return rc != 0 ? shoal_err_prefix(err, "the coordinator") : 0;
}

/*
 * With hosts: one namespace host per shard and one for the coordinator, and
 * this thread moved into the controller's namespace, so that the client's
 * ZeroMQ threads (made at the first shoal_client_new) live there
 * (hosts_enter_controller's contract). Prints where the cluster runs.
 */
static int s_cluster_network(s_cluster_t *c, int hosts, shoal_err_t *err)
{
    if (!hosts) {
        printf("network: loopback (processes of this machine on 127.0.0.1)\n");
        fflush(stdout);
        return 0;
    }
    if (!(c->hosts = hosts_up(c->nshards + 1, err)))
        return err->code ? err->code : SHOAL_EINTERNAL;
    int rc = hosts_enter_controller(c->hosts, err);
    if (rc != 0)
        return rc;
    printf("network: hosts (%zu shard hosts + a coordinator host, namespaces %s*; the client on "
           "the controller, %s; every host shares this machine's cores)\n",
           c->nshards, hosts_prefix(c->hosts), hosts_controller_addr(c->hosts));
    fflush(stdout);
    return 0;
}

static int s_cluster_start(s_cluster_t *c, size_t threads, shoal_err_t *err)
{
    return c->hosts ? s_cluster_start_hosts(c, threads, err)
                    : s_cluster_start_loopback(c, threads, err);
}

/* ------------------------------------------------------------------------ */
/* Footprint: what the cluster's processes hold in RAM and on disk          */
/* ------------------------------------------------------------------------ */

/* Process i (shard i, the coordinator at i == nshards): its pid and data dir. */
static pid_t s_cluster_proc(const s_cluster_t *c, size_t i, char *data_dir, size_t size)
{
    if (c->hosts) {
        const bench_node_t *n = i == c->nshards ? &c->coord_node : &c->shard_nodes[i];
        snprintf(data_dir, size, "%s", n->data_dir);
        return n->pid;
    }
    if (i == c->nshards)
        snprintf(data_dir, size, "%s/coordinator", c->dir);
    else
        snprintf(data_dir, size, "%s/shard%zu", c->dir, i);
    return i == c->nshards ? c->coord.pid : c->shards[i].pid;
}

/* Resident memory of pid in bytes (/proc/PID/status VmRSS); 0 when unreadable. */
static uint64_t s_rss_bytes(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    unsigned long long kb = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %llu kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return (uint64_t)kb * 1024;
}

static uint64_t s_du_total; /* nftw's callback has no context argument */

static int s_du_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)path;
    (void)ftw;
    if (flag == FTW_F)
        s_du_total += (uint64_t)st->st_blocks * 512;
    return 0;
}

/* Bytes a directory tree takes on disk (allocated blocks). */
static uint64_t s_du_bytes(const char *dir)
{
    s_du_total = 0;
    nftw(dir, s_du_one, 16, FTW_PHYS);
    return s_du_total;
}

/*
 * The capacity model's per-vector lines, measured on this cluster holding
 * n vectors: the shards' resident memory and data dirs summed, and the
 * coordinator's, printed as `footprint: ...`. Resident memory includes
 * each process's RocksDB block cache and memtables, so per vector it falls
 * as shards grow (docs/scaling.md).
 */
static void s_cluster_footprint(const s_cluster_t *c, size_t n)
{
    uint64_t rss = 0, disk = 0;
    char dir[BENCH_PATH_MAX];
    for (size_t i = 0; i < c->nshards; i++) {
        pid_t pid = s_cluster_proc(c, i, dir, sizeof dir);
        rss += pid ? s_rss_bytes(pid) : 0;
        disk += s_du_bytes(dir);
    }
    pid_t cpid = s_cluster_proc(c, c->nshards, dir, sizeof dir);
    uint64_t crss = cpid ? s_rss_bytes(cpid) : 0, cdisk = s_du_bytes(dir);
    double per = n ? (double)n : 1.0;
    printf("footprint: vectors=%zu shard_rss_mb=%.1f shard_rss_bytes_per_vector=%.0f "
           "shard_disk_mb=%.1f shard_disk_bytes_per_vector=%.0f coordinator_rss_mb=%.1f "
           "coordinator_disk_bytes_per_id=%.1f\n",
           n, (double)rss / 1e6, (double)rss / per, (double)disk / 1e6, (double)disk / per,
           (double)crss / 1e6, (double)cdisk / per);
    fflush(stdout);
}

/* --hosts: node i (shard i, or the coordinator at i == nshards) and its name for messages. */
static bench_node_t *s_cluster_node(s_cluster_t *c, size_t i, char name[32])
{
    if (i == c->nshards) {
        snprintf(name, 32, "the coordinator");
        return &c->coord_node;
    }
    snprintf(name, 32, "shard %zu", i);
    return &c->shard_nodes[i];
}

/* --hosts: bench_child_stop's contract for node i: 0 when it exited 0. */
static int s_node_stop(s_cluster_t *c, size_t i, shoal_err_t *err)
{
    char name[32];
    bench_node_t *n = s_cluster_node(c, i, name);
    if (n->pid <= 0)
        return 0;
    int timed_out = 0;
    int status = hosts_stop(c->hosts, n->pid, S_STOP_WAIT_S, &timed_out);
    n->pid = 0;
    if (timed_out)
        return shoal_err_set(err, SHOAL_ETIMEOUT, "%s did not stop in %.0f s", name, S_STOP_WAIT_S);
    if (status < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return shoal_err_set(err, SHOAL_EUNAVAIL, "%s stopped with status 0x%x", name, status);
    return 0;
}

/* SIGTERM to the coordinator, then to every shard; the first failure is reported. */
static int s_cluster_stop(s_cluster_t *c, shoal_err_t *err)
{
    int rc = c->hosts ? s_node_stop(c, c->nshards, err)
                      : bench_child_stop(&c->coord, S_STOP_WAIT_S, err);
    for (size_t i = 0; i < c->nshards; i++) {
        shoal_err_t e2;
        shoal_err_clear(&e2);
        shoal_err_t *e = rc ? &e2 : err;
        int rc2 = c->hosts ? s_node_stop(c, i, e)
                           : bench_child_stop(&c->shards[i], S_STOP_WAIT_S, e);
        rc = rc ? rc : rc2;
    }
    return rc;
}

static void s_cluster_kill(s_cluster_t *c)
{
    if (c->hosts) {
        for (size_t i = 0; i <= c->nshards; i++) {
            char name[32];
            bench_node_t *n = s_cluster_node(c, i, name);
            if (n->pid > 0)
                hosts_kill9(c->hosts, n->pid);
            n->pid = 0;
        }
        return;
    }
    bench_child_kill(&c->coord);
    for (size_t i = 0; i < c->nshards; i++)
        bench_child_kill(&c->shards[i]);
}

/*
 * --hosts: each process's output (its node log) copied to stderr, where it
 * would have gone on loopback; empty logs are skipped. Before the scratch
 * folder is removed.
 */
static void s_cluster_dump_logs(s_cluster_t *c)
{
    if (!c->hosts)
        return;
    for (size_t i = 0; i <= c->nshards; i++) {
        char line[1024], name[32];
        const bench_node_t *n = s_cluster_node(c, i, name);
        FILE *f = n->log[0] ? fopen(n->log, "r") : NULL;
        if (!f)
            continue;
        int first = 1;
        while (fgets(line, sizeof line, f)) {
            if (first)
                fprintf(stderr, "--- %s (%s) output:\n", name, n->listen);
            first = 0;
            fputs(line, stderr);
        }
        fclose(f);
    }
    fflush(stderr);
}

/* ------------------------------------------------------------------------ */
/* Cluster passes                                                           */
/* ------------------------------------------------------------------------ */

typedef struct {
    const float *queries; /* nq x dim */
    size_t nq, dim, k;
} s_work_t;

/*
 * Every query in requests of `per` queries; found (nq x k, may be NULL) gets
 * the ids, *secs the wall time, *fanout the sum of shards asked.
 */
static int s_cluster_pass(shoal_client_t *client, const s_work_t *w, size_t per, size_t nprobe,
                          size_t ef, uint64_t *found, double *lat, double *secs, uint64_t *fanout,
                          shoal_err_t *err)
{
    shoal_search_opts_t sopts = {.k = w->k, .mode = WIRE_MODE_HNSW, .ef = ef, .nprobe = nprobe,
                                 .deadline_ms = S_DEADLINE_MS};
    *fanout = 0;
    double start = timing_now();
    for (size_t at = 0; at < w->nq; at += per) {
        size_t m = w->nq - at < per ? w->nq - at : per;
        uint64_t *ids = NULL;
        shoal_search_info_t info;
        double t0 = timing_now();
        int rc = shoal_client_search_ex(client, S_COLL, w->queries + at * w->dim, m, w->dim,
                                        &sopts, &ids, NULL, &info, err);
        if (lat)
            lat[at / per] = timing_now() - t0;
        if (rc != 0)
            return shoal_err_prefix(err, "cluster search of queries %zu..%zu", at, at + m - 1);
        if (info.partial) {
            free(ids);
            return shoal_err_set(err, SHOAL_EUNAVAIL,
                                 "cluster search of queries %zu..%zu: partial answer, "
                                 "missing shards %s",
                                 at, at + m - 1, info.missing);
        }
        *fanout += info.fanout;
        if (found)
            memcpy(found + at * w->k, ids, m * w->k * sizeof *ids);
        free(ids);
    }
    *secs = timing_now() - start;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* In-process passes                                                        */
/* ------------------------------------------------------------------------ */

typedef struct {
    const hnsw_t *index;
    const s_work_t *w;
    size_t ef;
    uint64_t *found;      /* nq x k */
    float *dists;         /* nq x k */
    atomic_size_t next;   /* next query to take */
    atomic_int failed;    /* set by the first thread that fails */
    shoal_err_t err;      /* that thread's error */
    pthread_mutex_t lock; /* guards err */
} s_parallel_t;

/* One parfor part: arg is its slot in s_inprocess_batch's parts[], which all hold p. */
static void s_parallel_worker(void *arg)
{
    s_parallel_t *p = *(s_parallel_t **)arg;
    const s_work_t *w = p->w;
    shoal_err_t err;
    shoal_err_clear(&err);
    for (;;) {
        size_t q = atomic_fetch_add(&p->next, 1);
        if (q >= w->nq || atomic_load(&p->failed))
            break;
        if (hnsw_search(p->index, w->queries + q * w->dim, w->k, p->ef, NULL, NULL,
                        p->found + q * w->k, p->dists + q * w->k, &err) < 0) {
            pthread_mutex_lock(&p->lock);
            if (!atomic_exchange(&p->failed, 1)) {
                p->err = err;
                shoal_err_prefix(&p->err, "in-process search %zu", q);
            }
            pthread_mutex_unlock(&p->lock);
            break;
        }
    }
}

/* Every query on `threads` threads in parallel; found gets the ids. */
static int s_inprocess_batch(const hnsw_t *index, const s_work_t *w, size_t ef, size_t threads,
                             uint64_t *found, float *dists, double *secs, shoal_err_t *err)
{
    s_parallel_t *parts[S_THREADS_MAX]; /* every part takes queries from the same p */
    s_parallel_t p = {.index = index, .w = w, .ef = ef, .found = found, .dists = dists};
    atomic_init(&p.next, 0);
    atomic_init(&p.failed, 0);
    shoal_err_clear(&p.err);
    pthread_mutex_init(&p.lock, NULL);
    for (size_t i = 0; i < threads; i++)
        parts[i] = &p;
    double start = timing_now();
    parfor_each(parts, sizeof parts[0], threads, s_parallel_worker);
    *secs = timing_now() - start;
    pthread_mutex_destroy(&p.lock);
    int rc = 0;
    if (atomic_load(&p.failed)) {
        *err = p.err;
        rc = p.err.code ? p.err.code : SHOAL_EINTERNAL;
    }
    return rc;
}

/* Every query one at a time on this thread; lat[q] its seconds. */
static int s_inprocess_single(const hnsw_t *index, const s_work_t *w, size_t ef, uint64_t *found,
                              float *dists, double *lat, double *secs, shoal_err_t *err)
{
    double start = timing_now();
    for (size_t q = 0; q < w->nq; q++) {
        double t0 = timing_now();
        int got = hnsw_search(index, w->queries + q * w->dim, w->k, ef, NULL, NULL,
                              found + q * w->k, dists + q * w->k, err);
        lat[q] = timing_now() - t0;
        if (got < 0)
            return shoal_err_prefix(err, "in-process search %zu", q);
    }
    *secs = timing_now() - start;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Results                                                                  */
/* ------------------------------------------------------------------------ */

/* One side at its operating point; throughputs and latencies are medians over reps. */
typedef struct {
    size_t nprobe;           /* cluster: lists probed (0 for in-process) */
    size_t ef;               /* HNSW candidates */
    int reached;             /* recall >= target */
    double recall;           /* recall@k over every query */
    double batch_qps;        /* queries/s, batches of nbatch */
    double single_qps;       /* queries/s, one per request / call */
    double p50_ms, p99_ms;   /* single-query latency */
    double shards_per_query; /* cluster: fan-out of the batch */
} s_side_t;

/* Median of n values (sorted in place). */
static double s_median(double *v, size_t n)
{
    qsort(v, n, sizeof *v, timing_cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Per-rep values for the medians. */
typedef struct {
    double batch_qps[100], single_qps[100], p50[100], p99[100];
} s_reps_t;

static void s_reps_finish(s_reps_t *r, size_t reps, s_side_t *side)
{
    side->batch_qps = s_median(r->batch_qps, reps);
    side->single_qps = s_median(r->single_qps, reps);
    side->p50_ms = s_median(r->p50, reps) * 1e3;
    side->p99_ms = s_median(r->p99, reps) * 1e3;
}

/* Latency percentiles of one pass (lat sorted in place). */
static void s_latency(double *lat, size_t n, double *p50, double *p99)
{
    qsort(lat, n, sizeof *lat, timing_cmp_double);
    *p50 = timing_percentile(lat, n, 0.50);
    *p99 = timing_percentile(lat, n, 0.99);
}

static void s_print_table(const cluster_bench_opts_t *o, const s_side_t *c, const s_side_t *p,
                          size_t nbatch)
{
    char cs[64], ps[64], row[64];
    snprintf(cs, sizeof cs, "nprobe=%zu ef=%zu", c->nprobe, c->ef);
    snprintf(ps, sizeof ps, "ef=%zu", p->ef);
    printf("\n%-28s %18s %18s %8s\n", "", "cluster", "in-process", "ratio");
    printf("%-28s %18s %18s\n", "setting", cs, ps);
    snprintf(row, sizeof row, "recall@%zu", o->k);
    printf("%-28s %18.4f %18.4f\n", row, c->recall, p->recall);
    snprintf(row, sizeof row, "batch qps (%zu/request)", nbatch);
    printf("%-28s %18.1f %18.1f %8.3f\n", row, c->batch_qps, p->batch_qps,
           c->batch_qps / p->batch_qps);
    printf("%-28s %18.1f %18.1f %8.3f\n", "single-query qps", c->single_qps, p->single_qps,
           c->single_qps / p->single_qps);
    printf("%-28s %18.3f %18.3f\n", "single-query p50 ms", c->p50_ms, p->p50_ms);
    printf("%-28s %18.3f %18.3f\n", "single-query p99 ms", c->p99_ms, p->p99_ms);
    printf("%-28s %18.2f %18s\n\n", "shards per query", c->shards_per_query, "1 (one index)");
}

/* ------------------------------------------------------------------------ */
/* The run                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct {
    const cluster_bench_opts_t *o;
    size_t threads;       /* T */
    size_t n, dim;        /* base */
    float *base;          /* n x dim */
    uint64_t *ids;        /* 0..n-1 */
    float *queries;       /* nq x dim */
    s_work_t all;         /* every query */
    s_work_t batch;       /* the first nbatch queries */
    int32_t *gt;          /* nq x gtk */
    size_t gtk;
    uint64_t *found;      /* nq x k */
    float *dists;         /* nq x k */
    double *lat;          /* 2 x nq: latencies of a pass, then scratch for repeats */
} s_ctx_t;

static double s_recall(const s_ctx_t *x)
{
    return gt_recall(x->found, x->o->k, x->gt, x->gtk, x->all.nq, x->o->k);
}

/* Loads base, queries and ground truth. */
static int s_load_data(s_ctx_t *x, shoal_err_t *err)
{
    const cluster_bench_opts_t *o = x->o;
    x->base = vecfile_load_f32(o->base, &x->n, &x->dim, err);
    if (!x->base)
        return shoal_err_prefix(err, "--base");
    size_t nq, qdim, ngt;
    float *queries = vecfile_load_f32(o->queries, &nq, &qdim, err);
    if (!queries)
        return shoal_err_prefix(err, "--queries");
    x->queries = queries;
    x->all = (s_work_t){.queries = queries, .nq = nq, .dim = qdim, .k = o->k};
    if (qdim != x->dim)
        return shoal_err_set(err, SHOAL_EDIM, "--queries: dim %zu, expected %zu", qdim, x->dim);
    x->batch = x->all;
    x->batch.nq = nq < o->nbatch ? nq : o->nbatch;
    x->gt = vecfile_load_i32(o->gt, &ngt, &x->gtk, err);
    if (!x->gt)
        return shoal_err_prefix(err, "--gt");
    if (ngt != nq || x->gtk < o->k)
        return shoal_err_set(err, SHOAL_EINVAL, "--gt: %zu x %zu ids, need %zu x >= %zu", ngt,
                             x->gtk, nq, o->k);
    x->ids = malloc(x->n * sizeof *x->ids);
    x->found = malloc(nq * o->k * sizeof *x->found);
    x->dists = malloc(nq * o->k * sizeof *x->dists);
    x->lat = malloc(2 * nq * sizeof *x->lat);
    if (!x->ids || !x->found || !x->dists || !x->lat)
        return shoal_err_set(err, SHOAL_ENOMEM, "no memory for %zu vectors and %zu queries", x->n,
                             nq);
    for (size_t i = 0; i < x->n; i++)
        x->ids[i] = i;
    return 0;
}

/*
 * Once a loaded collection's count settles, the coordinator calibrates it in
 * the background (coord_calib.c: an exact search over every list and a grid
 * of walks, seconds at 200,000 vectors, minutes at 10^6), on the same cores
 * as the shards. Timed passes run after it is done, or they would measure it
 * as much as the searches (at 200,000 on 1 shard the first repetitions ran
 * at a third of the later ones). Bounded: after S_READY_WAIT_S the bench
 * goes on and says so.
 */
static int s_calibration_wait(shoal_client_t *client, shoal_err_t *err)
{
    static const char *const paths[] = {"collections." S_COLL ".calibration.points",
                                        "collections." S_COLL ".calibration.running",
                                        "collections." S_COLL ".calibration.due"};
    double t0 = timing_now(), v[3] = {0, 1, 1};
    int done = 0;
    while (!done && timing_now() - t0 < S_READY_WAIT_S) {
        for (size_t i = 0; i < 3; i++)
            if (bench_stat(client, NULL, paths[i], &v[i], err) != 0)
                return shoal_err_prefix(err, "waiting for the calibration");
        done = v[0] > 0 && v[1] == 0 && v[2] == 0;
        if (!done)
            bench_sleep_ms(S_CALIB_POLL_MS);
    }
    printf("calibration_wait_s=%.1f calibrated=%d%s\n", timing_now() - t0, done,
           done ? "" : " (timed passes overlap the coordinator's calibration)");
    fflush(stdout);
    return 0;
}

/* Creates, trains on a strided sample, loads the base, checkpoints, waits for the calibration. */
static int s_cluster_load(s_ctx_t *x, shoal_client_t *client, shoal_err_t *err)
{
    const cluster_bench_opts_t *o = x->o;
    shoal_create_opts_t copts = {.nlist = o->nlist, .M = o->M,
                                 .ef_construction = o->ef_construction};
    int rc;
    /* on hosts the coordinator can be ready before it has heard from every shard */
    if (o->hosts)
        rc = bench_create_retry(client, S_COLL, x->dim, SHOAL_METRIC_L2, &copts, S_READY_WAIT_S,
                                err);
    else if ((rc = shoal_client_create_ivf(client, S_COLL, x->dim, SHOAL_METRIC_L2, &copts,
                                           err)) != 0)
        shoal_err_prefix(err, "create");
    if (rc != 0)
        return rc;

    size_t ns = o->train_sample < x->n ? o->train_sample : x->n;
    float *sample = malloc(ns * x->dim * sizeof *sample);
    if (!sample)
        return shoal_err_set(err, SHOAL_ENOMEM, "no memory for a %zu-row sample", ns);
    for (size_t i = 0; i < ns; i++)
        memcpy(sample + i * x->dim, x->base + (i * (x->n / ns)) * x->dim,
               x->dim * sizeof *sample);
    char *text = NULL;
    double t0 = timing_now();
    rc = shoal_client_train(client, S_COLL, sample, ns, x->dim, NULL, &text, err);
    double train_s = timing_now() - t0;
    free(sample);
    if (rc != 0)
        return shoal_err_prefix(err, "train on %zu rows", ns);
    printf("cluster_train_s=%.3f train_rows=%zu train: %s\n", train_s, ns, text ? text : "");
    free(text);
    fflush(stdout);

    t0 = timing_now();
    for (size_t at = 0; at < x->n; at += o->batch) {
        size_t m = x->n - at < o->batch ? x->n - at : o->batch;
        rc = shoal_client_insert(client, S_COLL, x->ids + at, x->base + at * x->dim, m, x->dim,
                                 NULL, err);
        if (rc != 0)
            return shoal_err_prefix(err, "insert of rows %zu..%zu", at, at + m - 1);
    }
    double load_s = timing_now() - t0;
    /* A checkpoint now, so that no background one competes with the timed searches. */
    rc = shoal_client_checkpoint(client, S_COLL, err);
    if (rc != 0)
        return shoal_err_prefix(err, "checkpoint");
    printf("cluster_load_s=%.3f cluster_load_vps=%.1f\n", load_s, (double)x->n / load_s);
    fflush(stdout);
    return s_calibration_wait(client, err);
}

/* Sweeps nprobe x ef; picks the cluster's operating point into *side. */
static int s_cluster_sweep(s_ctx_t *x, shoal_client_t *client, s_side_t *side, shoal_err_t *err)
{
    const cluster_bench_opts_t *o = x->o;
    memset(side, 0, sizeof *side);
    side->recall = -1.0;
    for (size_t pi = 0; pi < o->nnprobes && !side->reached; pi++) {
        double prev = -1.0;
        for (size_t ei = 0; ei < o->nefs; ei++) {
            double secs = 0;
            uint64_t fanout = 0;
            int rc = s_cluster_pass(client, &x->all, o->nbatch, o->nprobes[pi], o->efs[ei],
                                    x->found, NULL, &secs, &fanout, err);
            if (rc != 0)
                return rc;
            double recall = s_recall(x);
            printf("sweep cluster nprobe=%zu ef=%zu recall@%zu=%.4f qps=%.1f "
                   "shards_per_query=%.2f\n",
                   o->nprobes[pi], o->efs[ei], o->k, recall, (double)x->all.nq / secs,
                   (double)fanout / (double)x->all.nq);
            fflush(stdout);
            if (recall > side->recall) {
                side->nprobe = o->nprobes[pi];
                side->ef = o->efs[ei];
                side->recall = recall;
            }
            if (recall >= o->target) {
                side->reached = 1;
                break;
            }
            if (prev >= 0 && recall - prev < S_PLATEAU)
                break; /* this nprobe's lists hold no more of the neighbours */
            prev = recall;
        }
    }
    return 0;
}

static int s_cluster_measure(s_ctx_t *x, shoal_client_t *client, s_side_t *side,
                             shoal_err_t *err)
{
    const cluster_bench_opts_t *o = x->o;
    s_reps_t r;
    double secs, total;
    uint64_t fanout;
    /* Untimed warm-up of both kinds of request. */
    int rc = s_cluster_pass(client, &x->batch, x->batch.nq, side->nprobe, side->ef, NULL, NULL,
                            &secs, &fanout, err);
    if (rc == 0)
        rc = s_cluster_pass(client, &x->all, 1, side->nprobe, side->ef, NULL, x->lat, &secs,
                            &fanout, err);
    for (size_t i = 0; rc == 0 && i < o->reps; i++) {
        size_t passes = 0;
        for (total = 0.0; rc == 0 && total < S_MIN_PASS_S; total += secs, passes++)
            rc = s_cluster_pass(client, &x->batch, x->batch.nq, side->nprobe, side->ef, NULL,
                                NULL, &secs, &fanout, err);
        if (rc != 0)
            break;
        r.batch_qps[i] = (double)(passes * x->batch.nq) / total;
        side->shards_per_query = (double)fanout / (double)x->batch.nq;
        passes = 0;
        for (total = 0.0; rc == 0 && total < S_MIN_PASS_S; total += secs, passes++)
            rc = s_cluster_pass(client, &x->all, 1, side->nprobe, side->ef, NULL,
                                passes ? NULL : x->lat, &secs, &fanout, err);
        if (rc != 0)
            break;
        r.single_qps[i] = (double)(passes * x->all.nq) / total;
        s_latency(x->lat, x->all.nq, &r.p50[i], &r.p99[i]);
        printf("rep %zu cluster batch_qps=%.1f single_qps=%.1f p50_ms=%.3f p99_ms=%.3f\n", i,
               r.batch_qps[i], r.single_qps[i], r.p50[i] * 1e3, r.p99[i] * 1e3);
        fflush(stdout);
    }
    if (rc == 0)
        s_reps_finish(&r, o->reps, side);
    return rc;
}

/*
 * Where a single query's time goes, hop by hop, with every query once more:
 * a ping of the coordinator and of shard 0 (answered by their socket loops:
 * one ZeroMQ round trip each, nothing else) and the same single-query search
 * sent straight to shard 0 (its whole graph, at the cluster's ef). A query
 * through the cluster costs about the coordinator's round trip plus the
 * shard's search plus the coordinator's own work (routing, plan, merge):
 * printed as `hops: ...` with p50s in milliseconds.
 */
static int s_cluster_hops(s_ctx_t *x, const char *coord_ep, const char *shard_ep,
                          const s_side_t *side, shoal_err_t *err)
{
    shoal_client_t *ends[2] = {shoal_client_new(coord_ep, S_CALL_TIMEOUT_MS, err),
                               shoal_client_new(shard_ep, S_CALL_TIMEOUT_MS, err)};
    double p50[3] = {0, 0, 0}, p99;
    size_t nq = x->all.nq;
    int rc = ends[0] && ends[1] ? 0 : (err->code ? err->code : SHOAL_EINTERNAL);
    for (int e = 0; rc == 0 && e < 2; e++) {
        for (size_t i = 0; rc == 0 && i < nq; i++) {
            void *info = NULL;
            size_t len = 0;
            double t0 = timing_now();
            rc = shoal_client_ping(ends[e], &info, &len, err);
            x->lat[i] = timing_now() - t0;
            free(info);
        }
        if (rc == 0)
            s_latency(x->lat, nq, &p50[e], &p99);
    }
    shoal_search_opts_t sopts = {.k = x->all.k, .mode = WIRE_MODE_HNSW, .ef = side->ef};
    for (size_t i = 0; rc == 0 && i < nq; i++) {
        uint64_t *ids = NULL;
        double t0 = timing_now();
        rc = shoal_client_search(ends[1], S_COLL, x->all.queries + i * x->all.dim, 1, x->all.dim,
                                 &sopts, &ids, NULL, NULL, err);
        x->lat[i] = timing_now() - t0;
        free(ids);
    }
    if (rc == 0) {
        s_latency(x->lat, nq, &p50[2], &p99);
        printf("hops: ping_coordinator_p50_ms=%.3f ping_shard_p50_ms=%.3f "
               "shard_direct_search_p50_ms=%.3f cluster_single_p50_ms=%.3f\n",
               p50[0] * 1e3, p50[1] * 1e3, p50[2] * 1e3, side->p50_ms);
        fflush(stdout);
    }
    shoal_client_destroy(&ends[0]);
    shoal_client_destroy(&ends[1]);
    return rc ? shoal_err_prefix(err, "hops") : 0;
}

/* Builds the in-process index, sweeps ef and measures at the first reaching the target. */
static int s_inprocess_side(s_ctx_t *x, s_side_t *side, shoal_err_t *err)
{
    const cluster_bench_opts_t *o = x->o;
    hnsw_params_t params = {
        .dim = x->dim, .metric = SHOAL_METRIC_L2, .M = o->M, .ef_construction = o->ef_construction};
    hnsw_t *index = hnsw_new(&params, err);
    if (!index)
        return err->code ? err->code : SHOAL_EINTERNAL;
    double t0 = timing_now();
    int rc = hnsw_insert_batch(index, x->ids, x->base, x->n, x->threads, err);
    if (rc != 0)
        goto done;
    printf("inprocess_build_s=%.3f build_threads=%zu\n", timing_now() - t0, x->threads);
    fflush(stdout);

    memset(side, 0, sizeof *side);
    double secs, prev = -1.0;
    for (size_t ei = 0; ei < o->nefs; ei++) {
        rc = s_inprocess_batch(index, &x->all, o->efs[ei], x->threads, x->found, x->dists, &secs,
                               err);
        if (rc != 0)
            goto done;
        double recall = s_recall(x);
        printf("sweep inprocess ef=%zu recall@%zu=%.4f qps=%.1f\n", o->efs[ei], o->k, recall,
               (double)x->all.nq / secs);
        fflush(stdout);
        if (recall > side->recall || ei == 0) {
            side->ef = o->efs[ei];
            side->recall = recall;
        }
        if (recall >= o->target) {
            side->reached = 1;
            break;
        }
        if (prev >= 0 && recall - prev < S_PLATEAU)
            break;
        prev = recall;
    }

    s_reps_t r;
    rc = s_inprocess_batch(index, &x->batch, side->ef, x->threads, x->found, x->dists, &secs, err);
    if (rc == 0)
        rc = s_inprocess_single(index, &x->all, side->ef, x->found, x->dists, x->lat, &secs, err);
    for (size_t i = 0; rc == 0 && i < o->reps; i++) {
        size_t passes = 0;
        double total;
        for (total = 0.0; rc == 0 && total < S_MIN_PASS_S; total += secs, passes++)
            rc = s_inprocess_batch(index, &x->batch, side->ef, x->threads, x->found, x->dists,
                                   &secs, err);
        if (rc != 0)
            break;
        r.batch_qps[i] = (double)(passes * x->batch.nq) / total;
        passes = 0;
        for (total = 0.0; rc == 0 && total < S_MIN_PASS_S; total += secs, passes++)
            rc = s_inprocess_single(index, &x->all, side->ef, x->found, x->dists,
                                    passes ? x->lat + x->all.nq : x->lat, &secs, err);
        if (rc != 0)
            break;
        r.single_qps[i] = (double)(passes * x->all.nq) / total;
        s_latency(x->lat, x->all.nq, &r.p50[i], &r.p99[i]);
        printf("rep %zu inprocess batch_qps=%.1f single_qps=%.1f p50_ms=%.3f p99_ms=%.3f\n", i,
               r.batch_qps[i], r.single_qps[i], r.p50[i] * 1e3, r.p99[i] * 1e3);
        fflush(stdout);
    }
    if (rc == 0)
        s_reps_finish(&r, o->reps, side);
done:
    hnsw_destroy(&index);
    return rc;
}

/*
 * The cluster benchmark: start the cluster, load, sweep and measure it, stop it,
 * run the same in-process, then print the table and the RESULT line. Long
 * because it is one linear script of phases sharing one context and one
 * cleanup path; each phase's work is already in a helper.
 */
static int s_run(const void *opts, shoal_err_t *err)
{
    const cluster_bench_opts_t *o = opts;
    s_ctx_t x;
    memset(&x, 0, sizeof x);
    x.o = o;
    x.threads = bench_threads(o->threads);
    s_cluster_t *c = calloc(1, sizeof *c);
    shoal_client_t *client = NULL;
    s_side_t cs, ps;
    int rc;
    if (!c)
        return shoal_err_set(err, SHOAL_ENOMEM, "no memory for the cluster's state");

    /* Ctrl-C should stop the benchmark, not be swallowed by czmq's handler (which would
       also replace the hosts harness's cleanup at its first use). */
    zsys_handler_set(NULL);
    rc = bench_find_bin(o->shard_bin, "shoal-shard", "--shard-bin", c->shard_bin, err);
    if (rc == 0)
        rc = bench_find_bin(o->coord_bin, "shoal-coordinator", "--coordinator-bin", c->coord_bin,
                            err);
    if (rc == 0)
        rc = s_load_data(&x, err);
    if (rc != 0)
        goto done;

    c->nshards = o->shards;
    size_t shard_sum = 0;
    char split[S_SHARDS_MAX * 8] = "";
    for (size_t i = 0, used = 0; i < c->nshards; i++) {
        c->shard_threads[i] = s_shard_threads(x.threads, c->nshards, i);
        shard_sum += c->shard_threads[i];
        int len = snprintf(split + used, sizeof split - used, "%s%zu", i ? "," : "",
                           c->shard_threads[i]);
        used += len > 0 && (size_t)len < sizeof split - used ? (size_t)len : 0;
    }
    char nlist[32] = "default";
    if (o->nlist)
        snprintf(nlist, sizeof nlist, "%zu", o->nlist);
    printf("n=%zu dim=%zu queries=%zu batch_queries=%zu k=%zu M=%zu ef_construction=%zu "
           "shards=%zu nlist=%s target_recall=%.2f reps=%zu mode=hnsw\n",
           x.n, x.dim, x.all.nq, x.batch.nq, o->k, o->M, o->ef_construction, o->shards, nlist,
           o->target, o->reps);
    printf("threads: total T=%zu; shard --threads %s (sum %zu%s); coordinator --threads %zu "
           "(k-means, routing); in-process build and batch search on %zu threads, "
           "single-query on 1; cluster client: 1 thread\n",
           x.threads, split, shard_sum,
           shard_sum > x.threads ? ": T < shards, each shard needs at least 1" : " = T",
           x.threads, x.threads);
    fflush(stdout);

    const char *root = getenv("SHOAL_TMP");
    snprintf(c->dir, sizeof c->dir, "%s/shoal-bench-cluster.XXXXXX", root && *root ? root : "/tmp");
    if (!mkdtemp(c->dir)) {
        rc = shoal_err_set(err, SHOAL_EIO, "mkdtemp %s: %s", c->dir, strerror(errno));
        c->dir[0] = '\0';
        goto done;
    }
    rc = s_cluster_network(c, o->hosts, err);
    if (rc == 0)
        rc = s_cluster_start(c, x.threads, err);
    if (rc != 0)
        goto done;
    printf("cluster: coordinator %s, shards", s_cluster_endpoint(c));
    for (size_t i = 0; i < c->nshards; i++)
        printf(" %s", s_cluster_shard_endpoint(c, i));
    printf("\n");
    client = shoal_client_new(s_cluster_endpoint(c), S_CALL_TIMEOUT_MS, err);
    if (!client) {
        rc = err->code ? err->code : SHOAL_EINTERNAL;
        goto done;
    }
    rc = s_cluster_load(&x, client, err);
    if (rc == 0)
        rc = s_cluster_sweep(&x, client, &cs, err);
    if (rc == 0)
        rc = s_cluster_measure(&x, client, &cs, err);
    if (rc == 0)
        rc = s_cluster_hops(&x, s_cluster_endpoint(c), s_cluster_shard_endpoint(c, 0), &cs, err);
    if (rc != 0)
        goto done;
    s_cluster_footprint(c, x.n);
    shoal_client_destroy(&client);
    /* The in-process side runs alone: the cluster is stopped first. */
    rc = s_cluster_stop(c, err);
    if (rc != 0)
        goto done;

    rc = s_inprocess_side(&x, &ps, err);
    if (rc != 0)
        goto done;

    if (!cs.reached)
        printf("warning: the cluster did not reach recall@%zu >= %.2f (best %.4f); widen "
               "--nprobe-list / --ef-list\n",
               o->k, o->target, cs.recall);
    if (!ps.reached)
        printf("warning: in-process HNSW did not reach recall@%zu >= %.2f (best %.4f); widen "
               "--ef-list\n",
               o->k, o->target, ps.recall);
    s_print_table(o, &cs, &ps, x.batch.nq);
    printf("RESULT cluster recall=%.4f batch_qps_ratio_vs_inprocess=%.3f "
           "single_qps_ratio_vs_inprocess=%.3f shards_per_query=%.2f network=%s\n",
           cs.recall, cs.batch_qps / ps.batch_qps, cs.single_qps / ps.single_qps,
           cs.shards_per_query, o->hosts ? "hosts" : "loopback");
    fflush(stdout);

done:
    shoal_client_destroy(&client);
    s_cluster_kill(c);
    s_cluster_dump_logs(c);
    hosts_down(&c->hosts); /* NULL-safe; also puts this thread back in its namespace */
    if (c->dir[0])
        bench_remove_tree(c->dir);
    free(c);
    free(x.base);
    free(x.ids);
    free(x.queries);
    free(x.gt);
    free(x.found);
    free(x.dists);
    free(x.lat);
    return rc;
}

int bench_cluster_main(int argc, char **argv)
{
    cluster_bench_opts_t opts;
    return bench_command_main("cluster", argc, argv, &opts, s_parse, s_usage, s_run);
}
