/*
 * test_cli.c - bin/shoal as a user runs it, and the client library's
 * coordinator calls, without a coordinator: --help everywhere, bad command
 * lines rejected with one line naming the problem, an unreachable endpoint
 * reported as a timeout; then against a real bin/shoal-shard (which serves
 * create, insert, search, get, delete, stats, drop and ping): the CLI's
 * load / search / delete / status round trip with exact recall, and the
 * library's search_ex (never partial at a shard), train and knn_graph (a
 * shard answers with its error for ops it does not serve); and the cluster
 * growth commands (shard add / drain / remove, rebalance, status's moves
 * line) against a fake coordinator in a thread of the test, which answers
 * with the info maps of docs/protocol.md 11.9.
 *
 * Shards start on an ephemeral port and report it through --ready-file
 * (tests/test_support.h); children die with the test (PR_SET_PDEATHSIG) and
 * are killed in the teardown. End-to-end tests through the coordinator live elsewhere.
 *
 * Environment: SHOAL_BIN (folder of shoal and shoal-shard, default "bin"),
 * SHOAL_TMP (scratch, default /tmp).
 */
#include "client/shoal_client.h"
#include "common/datagen.h"
#include "common/groundtruth.h"
#include "common/topk.h"
#include "common/vecfile.h"
#include "net/wire.h"
#include "tests/test_support.h"

#include <criterion/criterion.h>
#include <czmq.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define S_PATH_MAX     1024
#define S_START_WAIT_S 60.0  /* a shard must be ready within this */
#define S_RUN_WAIT_S   120.0 /* a CLI run must end within this */
#define S_TIMEOUT_MS   20000 /* client calls */
#define S_DIM          16
#define S_N            500
#define S_NQ           20
#define S_K            10

/* ------------------------------------------------------------------------ */
/* Scratch folder and child processes                                       */
/* ------------------------------------------------------------------------ */

static char s_endpoint[256]; /* the shard's, once started */

static void s_setup(void)
{
    s_process_suite_init("test_cli");
    s_endpoint[0] = '\0';
}

TestSuite(cli, .init = s_setup, .fini = s_process_suite_fini, .timeout = 240);

/* ------------------------------------------------------------------------ */
/* Running bin/shoal                                                        */
/* ------------------------------------------------------------------------ */

typedef struct {
    int status; /* exit status (-1 when killed by a signal) */
    char *out;  /* stdout (malloc'd) */
    char *err;  /* stderr (malloc'd) */
} s_run_t;

static void s_run_fini(s_run_t *r)
{
    free(r->out);
    free(r->err);
    memset(r, 0, sizeof *r);
}

/* Runs bin/shoal with args (NULL-terminated) and collects its output. */
static s_run_t s_shoalv(const char *const *args)
{
    char bin[S_PATH_MAX], out[S_PATH_MAX], err[S_PATH_MAX];
    s_bin(bin, "shoal");
    s_scratch_path(out, "cli.out");
    s_scratch_path(err, "cli.err");
    char *argv[64];
    char *head[] = {bin};
    s_argv_fill(argv, 64, head, 1, args);
    int status = s_run_to_end(argv, out, err, S_RUN_WAIT_S);
    s_run_t r;
    r.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.out = s_slurp(out);
    r.err = s_slurp(err);
    return r;
}

/* s_shoalv with the arguments listed, NULL last. */
static s_run_t s_shoal(const char *first, ...)
{
    const char *args[64];
    size_t n = 0;
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a; a = va_arg(ap, const char *)) {
        cr_assert_lt(n, 63);
        args[n++] = a;
    }
    va_end(ap);
    args[n] = NULL;
    return s_shoalv(args);
}

/* Lines in text (a last line without '\n' counts). */
static size_t s_lines(const char *text)
{
    size_t n = 0;
    for (const char *p = text; *p; p++)
        if (*p == '\n' || p[1] == '\0')
            n++;
    return n;
}

/* The run failed with exactly one stderr line starting with prefix and containing what. */
static void s_expect_failure(const s_run_t *r, const char *prefix, const char *what)
{
    cr_expect_neq(r->status, 0, "exit status 0 (stderr: %s)", r->err);
    cr_expect_neq(r->status, -1, "killed by a signal (stderr: %s)", r->err);
    cr_expect_eq(s_lines(r->err), 1, "stderr is not one line: \"%s\"", r->err);
    cr_expect(strncmp(r->err, prefix, strlen(prefix)) == 0,
              "stderr \"%s\" does not start with \"%s\"", r->err, prefix);
    cr_expect_not_null(strstr(r->err, what), "stderr \"%s\" does not mention \"%s\"", r->err, what);
}

/* The value of "key=" in a key=value line as a double; fails when absent. */
static double s_value(const char *line, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "%s=", key);
    const char *p = line;
    while ((p = strstr(p, pat)) != NULL) {
        if (p == line || p[-1] == ' ')
            return strtod(p + strlen(pat), NULL);
        p++;
    }
    cr_assert_fail("no %s in \"%s\"", key, line);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Help and bad command lines                                               */
/* ------------------------------------------------------------------------ */

static const char *const s_command_names[] = {"create", "train", "load",   "search",
                                              "delete", "get",   "status", "knn-graph",
                                              "drop",   "ping",  "shard",  "rebalance"};

Test(cli, help_everywhere)
{
    s_run_t r = s_shoal("--help", NULL);
    cr_expect_eq(r.status, 0);
    cr_expect_not_null(strstr(r.out, "usage: shoal"), "top-level help: %s", r.out);
    for (size_t i = 0; i < sizeof s_command_names / sizeof s_command_names[0]; i++)
        cr_expect_not_null(strstr(r.out, s_command_names[i]), "help lacks %s", s_command_names[i]);
    s_run_fini(&r);

    for (size_t i = 0; i < sizeof s_command_names / sizeof s_command_names[0]; i++) {
        char want[64];
        snprintf(want, sizeof want, "usage: shoal %s", s_command_names[i]);
        r = s_shoal(s_command_names[i], "--help", NULL);
        cr_expect_eq(r.status, 0, "%s --help: status %d", s_command_names[i], r.status);
        cr_expect(strncmp(r.out, want, strlen(want)) == 0, "%s --help printed \"%s\"",
                  s_command_names[i], r.out);
        cr_expect_str_empty(r.err, "%s --help wrote to stderr: %s", s_command_names[i], r.err);
        s_run_fini(&r);
    }
    /* -h after other arguments, and --help on a command whose other arguments are wrong */
    r = s_shoal("search", "coll", "-h", NULL);
    cr_expect_eq(r.status, 0);
    s_run_fini(&r);
    r = s_shoal("create", "--dim", "zz", "--help", NULL);
    cr_expect_eq(r.status, 0);
    s_run_fini(&r);
}

Test(cli, bad_command_lines)
{
    struct {
        const char *argv[10]; /* NULL-terminated */
        const char *prefix;   /* stderr starts with */
        const char *what;     /* and mentions */
    } cases[] = {
        {{NULL}, "shoal: ", "no command"},
        {{"frobnicate", NULL}, "shoal: ", "unknown command \"frobnicate\""},
        {{"--verbose", "ping", NULL}, "shoal: ", "unknown option \"--verbose\""},
        {{"-c", NULL}, "shoal: ", "needs a value"},
        {{"-t", "soon", "ping", NULL}, "shoal: ", "--timeout-ms"},
        {{"create", "c", "--metric", "l2", NULL}, "shoal: create: ", "--dim is required"},
        {{"create", "c", "--dim", "12x", "--metric", "l2", NULL}, "shoal: create: ", "--dim"},
        {{"create", "c", "--dim", "-3", "--metric", "l2", NULL}, "shoal: create: ", "--dim"},
        {{"create", "c", "--dim", "8", "--metric", "manhattan", NULL},
         "shoal: create: ",
         "manhattan"},
        {{"create", "c", "--dim", "8", "--metric", "l2", "--nlist", "0", NULL},
         "shoal: create: ",
         "--nlist"},
        {{"create", "--dim", "8", "--metric", "l2", NULL}, "shoal: create: ", "NAME"},
        {{"create", "c", "d", "--dim", "8", "--metric", "l2", NULL},
         "shoal: create: ",
         "unexpected argument \"d\""},
        {{"train", "c", NULL}, "shoal: train: ", "SAMPLE_FILE"},
        {{"train", "c", "s.fvecs", "--init", "kmeans", NULL}, "shoal: train: ", "--init"},
        {{"load", "c", "/nonexistent/base.fvecs", NULL}, "shoal: load: ", "base.fvecs"},
        {{"load", "c", "x.fvecs", "--batch", "0", NULL}, "shoal: load: ", "--batch"},
        {{"load", "c", "x.fvecs", "--bogus", "1", NULL}, "shoal: load: ", "unknown option"},
        {{"search", "c", "q.fvecs", "-k", NULL}, "shoal: search: ", "-k needs a value"},
        {{"search", "c", "q.fvecs", "-k", "ten", NULL}, "shoal: search: ", "-k"},
        {{"search", "c", "q.fvecs", "--mode", "fast", NULL}, "shoal: search: ", "--mode"},
        {{"search", "c", "q.fvecs", "--deadline-ms", "99999999999999999999", NULL},
         "shoal: search: ",
         "--deadline-ms"},
        {{"delete", "c", NULL}, "shoal: delete: ", "--ids is required"},
        {{"delete", "c", "--ids", "1,x", NULL}, "shoal: delete: ", "--ids"},
        {{"delete", "c", "--ids", "9-3", NULL}, "shoal: delete: ", "backwards"},
        {{"delete", "c", "--ids", "18446744073709551615", NULL}, "shoal: delete: ", "--ids"},
        {{"knn-graph", "c", "--out", "g.ivecs", NULL}, "shoal: knn-graph: ", "-k is required"},
        {{"knn-graph", "c", "-k", "5", NULL}, "shoal: knn-graph: ", "--out is required"},
        {{"knn-graph", "c", "-k", "5", "--out", "g.fvecs", NULL}, "shoal: knn-graph: ", ".ivecs"},
        {{"drop", NULL}, "shoal: drop: ", "NAME"},
        {{"ping", "extra", NULL}, "shoal: ping: ", "unexpected argument"},
        {{"shard", NULL}, "shoal: shard: ", "add|drain|remove"},
        {{"shard", "add", NULL}, "shoal: shard: ", "ENDPOINT"},
        {{"shard", "grow", "tcp://h4:7702", NULL}, "shoal: shard: ", "unknown subcommand \"grow\""},
        {{"rebalance", "--max-moves", "ten", NULL}, "shoal: rebalance: ", "--max-moves"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        /* point at an unreachable server: no case may get as far as sending */
        const char *args[16] = {"-c", "tcp://127.0.0.1:1", "-t", "100"};
        for (size_t j = 0; cases[i].argv[j]; j++)
            args[4 + j] = cases[i].argv[j];
        s_run_t r = s_shoalv(args);
        s_expect_failure(&r, cases[i].prefix, cases[i].what);
        cr_expect_str_empty(r.out, "case %zu printed on stdout: %s", i, r.out);
        cr_expect_null(strstr(r.err, "timed out"), "case %zu got as far as the network: %s", i,
                       r.err);
        s_run_fini(&r);
    }
}

Test(cli, cluster_command_lines_are_usage_errors)
{
    struct {
        const char *argv[8]; /* NULL-terminated */
        const char *what;    /* stderr mentions */
    } cases[] = {
        {{"shard", "add", "tcp://h4:7702", "--wait", NULL}, "--wait goes with drain only"},
        {{"shard", "remove", "tcp://h4:7702", "--wait", NULL}, "--wait goes with drain only"},
        {{"shard", "drain", "tcp://h4:7702", "--wait=1", NULL}, "--wait takes no value"},
        {{"shard", "drain", "tcp://h4:7702", "tcp://h5:7702", NULL}, "unexpected argument"},
        {{"shard", "add", "tcp://h4:7702\t", NULL}, "printable ASCII"},
        {{"rebalance", "--max-moves", "0", NULL}, "--max-moves"},
        {{"rebalance", "--max-moves", "4294967296", NULL}, "--max-moves"},
        {{"rebalance", "--max-moves", "-3", NULL}, "--max-moves"},
        {{"rebalance", "--rate", "fast", NULL}, "--rate"},
        {{"rebalance", "--rate", "", NULL}, "--rate"},
        {{"rebalance", "--rate", NULL}, "--rate needs a value"},
        {{"rebalance", "--dry-run", "--wait", NULL}, "--wait does not go with --dry-run"},
        {{"rebalance", "--now", NULL}, "unknown option \"--now\""},
        {{"rebalance", "now", NULL}, "unexpected argument \"now\""},
    };
    char long_endpoint[300];
    memset(long_endpoint, 'e', 256);
    long_endpoint[256] = '\0';
    for (size_t i = 0; i < sizeof cases / sizeof cases[0] + 1; i++) {
        const char *args[16] = {"-c", "tcp://127.0.0.1:1", "-t", "100"};
        const char *what = "ENDPOINT has 256 bytes";
        if (i < sizeof cases / sizeof cases[0]) {
            for (size_t j = 0; cases[i].argv[j]; j++)
                args[4 + j] = cases[i].argv[j];
            what = cases[i].what;
        } else {
            args[4] = "shard";
            args[5] = "drain";
            args[6] = long_endpoint;
        }
        const char *prefix = !strcmp(args[4], "shard") ? "shoal: shard: " : "shoal: rebalance: ";
        s_run_t r = s_shoalv(args);
        s_expect_failure(&r, prefix, what);
        cr_expect_eq(r.status, 2, "case %zu: a usage error exits 2, not %d (%s)", i, r.status,
                     r.err);
        cr_expect_str_empty(r.out, "case %zu printed on stdout: %s", i, r.out);
        s_run_fini(&r);
    }
}

Test(cli, unreachable_endpoint_times_out)
{
    s_run_t r = s_shoal("-c", "tcp://127.0.0.1:1", "--timeout-ms", "300", "ping", NULL);
    s_expect_failure(&r, "shoal: ping: ", "timed out");
    cr_expect_not_null(strstr(r.err, "tcp://127.0.0.1:1"), "%s", r.err);
    s_run_fini(&r);

    /* the environment variable is used when -c is absent */
    setenv("SHOAL_COORDINATOR", "tcp://127.0.0.1:1", 1);
    r = s_shoal("-t", "200", "status", NULL);
    unsetenv("SHOAL_COORDINATOR");
    s_expect_failure(&r, "shoal: status: ", "tcp://127.0.0.1:1");
    s_run_fini(&r);
}

/* ------------------------------------------------------------------------ */
/* Against a real shard                                                     */
/* ------------------------------------------------------------------------ */

static void s_shard_start(void)
{
    char bin[S_PATH_MAX], data[S_PATH_MAX], ready[S_PATH_MAX], log[S_PATH_MAX];
    s_bin(bin, "shoal-shard");
    s_scratch_path(data, "shard.data");
    s_scratch_path(ready, "shard.ready");
    s_scratch_path(log, "shard.log");
    char *argv[] = {bin,          "--listen",  "tcp://127.0.0.1:*",
                    "--data-dir", data,        "--ready-file",
                    ready,        "--threads", "2",
                    NULL};
    s_server_start(argv, ready, log, S_START_WAIT_S, s_endpoint, sizeof s_endpoint);
}

static float *s_random(size_t n, size_t dim, uint64_t seed)
{
    float *v = malloc(n * dim * sizeof *v);
    cr_assert_not_null(v);
    shoal_rng_t rng;
    shoal_rng_seed(&rng, seed);
    for (size_t i = 0; i < n * dim; i++)
        v[i] = (float)(shoal_rng_uniform(&rng) * 2.0 - 1.0);
    return v;
}

Test(cli, library_calls_against_a_shard)
{
    s_shard_start();
    shoal_err_t err;
    shoal_client_t *client = shoal_client_new(s_endpoint, S_TIMEOUT_MS, &err);
    cr_assert_not_null(client, "%s", err.msg);

    shoal_create_opts_t copts = {0};
    cr_assert_eq(shoal_client_create_ivf(client, "lib", S_DIM, SHOAL_METRIC_L2, &copts, &err), 0,
                 "%s", err.msg);
    float *base = s_random(S_N, S_DIM, 7);
    uint64_t *ids = malloc(S_N * sizeof *ids);
    cr_assert_not_null(ids);
    for (size_t i = 0; i < S_N; i++)
        ids[i] = 1000 + i;
    cr_assert_eq(shoal_client_insert(client, "lib", ids, base, S_N, S_DIM, NULL, &err), 0, "%s",
                 err.msg);

    /* search_ex, exact: each stored vector finds itself first; a shard is never partial */
    shoal_search_opts_t sopts;
    memset(&sopts, 0, sizeof sopts);
    sopts.k = S_K;
    sopts.mode = WIRE_MODE_EXACT;
    sopts.deadline_ms = 5000; /* a shard ignores it */
    uint64_t *found = NULL;
    float *dists = NULL;
    shoal_search_info_t info;
    memset(&info, 0xAB, sizeof info);
    cr_assert_eq(shoal_client_search_ex(client, "lib", base, S_NQ, S_DIM, &sopts, &found, &dists,
                                        &info, &err),
                 0, "%s", err.msg);
    cr_expect_eq(info.used, WIRE_MODE_EXACT);
    cr_expect_eq(info.partial, 0);
    cr_expect_str_empty(info.missing);
    for (size_t q = 0; q < S_NQ; q++) {
        cr_expect_eq(found[q * S_K], ids[q], "query %zu: first result %llu", q,
                     (unsigned long long)found[q * S_K]);
        cr_expect_leq(dists[q * S_K], 1e-4f);
    }
    free(found);
    free(dists);

    /* the old entry point gives the same ids and the mode */
    wire_mode_t used = WIRE_MODE_AUTO;
    cr_assert_eq(
        shoal_client_search(client, "lib", base, 1, S_DIM, &sopts, &found, NULL, &used, &err), 0,
        "%s", err.msg);
    cr_expect_eq(found[0], ids[0]);
    cr_expect_eq(used, WIRE_MODE_EXACT);
    free(found);

    /* train and knn_graph are the coordinator's: the shard says so, and keeps serving */
    char *text = (char *)"unchanged";
    shoal_train_opts_t topts = {0, 5, 42};
    int rc = shoal_client_train(client, "lib", base, S_N, S_DIM, &topts, &text, &err);
    cr_expect_lt(rc, 0);
    cr_expect_eq(rc, err.code);
    cr_expect_neq(rc, SHOAL_ETIMEOUT, "%s", err.msg);
    cr_expect_null(text);
    cr_expect_not_null(strstr(err.msg, "train"), "%s", err.msg);

    shoal_knn_chunk_t chunk;
    memset(&chunk, 0xAB, sizeof chunk);
    rc = shoal_client_knn_graph(client, "lib", &sopts, 100, NULL, &chunk, &err);
    cr_expect_lt(rc, 0);
    cr_expect_neq(rc, SHOAL_ETIMEOUT, "%s", err.msg);
    cr_expect_not_null(strstr(err.msg, "knn_graph"), "%s", err.msg);
    cr_expect_eq(chunk.n, 0);
    cr_expect_null(chunk.qids);
    shoal_knn_chunk_fini(&chunk); /* safe on a failed call */

    /* a cursor longer than the protocol allows is refused before sending */
    char cursor[WIRE_CURSOR_MAX + 8];
    memset(cursor, 'c', sizeof cursor - 1);
    cursor[sizeof cursor - 1] = '\0';
    cr_expect_eq(shoal_client_knn_graph(client, "lib", &sopts, 0, cursor, &chunk, &err),
                 SHOAL_EINVAL);

    /* the cluster ops are the coordinator's too; a bad op or endpoint is not sent */
    void *map = (void *)"unchanged";
    size_t map_len = 99;
    text = (char *)"unchanged";
    rc = shoal_client_shard(client, WIRE_OP_SHARD_ADD, "tcp://127.0.0.1:9", &text, &map, &map_len,
                            &err);
    cr_expect_eq(rc, SHOAL_EUNSUPPORTED, "%s", err.msg);
    cr_expect_not_null(strstr(err.msg, "shard_add"), "%s", err.msg);
    cr_expect_null(text);
    cr_expect_null(map);
    cr_expect_eq(map_len, 0);
    rc = shoal_client_rebalance(client, 1, 0, 0, NULL, NULL, NULL, &err);
    cr_expect_eq(rc, SHOAL_EUNSUPPORTED, "%s", err.msg);
    cr_expect_not_null(strstr(err.msg, "rebalance"), "%s", err.msg);
    cr_expect_eq(shoal_client_shard(client, WIRE_OP_STATS, "tcp://h:1", NULL, NULL, NULL, &err),
                 SHOAL_EINVAL);
    cr_expect_eq(shoal_client_shard(client, WIRE_OP_SHARD_DRAIN, "", NULL, NULL, NULL, &err),
                 SHOAL_EINVAL);
    cr_expect_eq(shoal_client_shard(client, WIRE_OP_SHARD_DRAIN, NULL, NULL, NULL, NULL, &err),
                 SHOAL_EINVAL);
    cr_expect_eq(
        shoal_client_shard(client, WIRE_OP_SHARD_REMOVE, "tcp://h:1\n", NULL, NULL, NULL, &err),
        SHOAL_EINVAL);
    cr_expect_not_null(strstr(err.msg, "endpoint"), "%s", err.msg);

    cr_expect_eq(shoal_client_ping(client, NULL, NULL, &err), 0, "%s", err.msg);
    shoal_client_destroy(&client);
    free(base);
    free(ids);
}

Test(cli, commands_against_a_shard)
{
    s_shard_start();
    char base_path[S_PATH_MAX], query_path[S_PATH_MAX], gt_path[S_PATH_MAX], out_path[S_PATH_MAX];
    char ids_path[S_PATH_MAX], graph_path[S_PATH_MAX];
    s_scratch_path(base_path, "base.fvecs");
    s_scratch_path(query_path, "query.fvecs");
    s_scratch_path(gt_path, "gt.ivecs");
    s_scratch_path(out_path, "out.ivecs");
    s_scratch_path(ids_path, "ids.txt");
    s_scratch_path(graph_path, "graph.ivecs");

    float *base = s_random(S_N, S_DIM, 11);
    float *queries = s_random(S_NQ, S_DIM, 12);
    shoal_err_t err;
    cr_assert_eq(vecfile_write_fvecs(base_path, base, S_N, S_DIM, &err), 0, "%s", err.msg);
    cr_assert_eq(vecfile_write_fvecs(query_path, queries, S_NQ, S_DIM, &err), 0, "%s", err.msg);
    /* the truth in ids the load gives: ids-start 100 + row */
    uint64_t truth64[S_NQ * S_K];
    int32_t truth[S_NQ * S_K];
    cr_assert_eq(
        gt_knn(base, S_N, queries, S_NQ, S_DIM, SHOAL_METRIC_L2, S_K, 1, truth64, NULL, &err), 0,
        "%s", err.msg);
    for (size_t i = 0; i < S_NQ * S_K; i++)
        truth[i] = (int32_t)(truth64[i] + 100);
    cr_assert_eq(vecfile_write_ivecs(gt_path, truth, S_NQ, S_K, &err), 0, "%s", err.msg);

    const char *ep = s_endpoint;
    s_run_t r = s_shoal("-c", ep, "ping", NULL);
    cr_expect_eq(r.status, 0, "%s", r.err);
    cr_expect(strncmp(r.out, "pong ", 5) == 0, "%s", r.out);
    s_run_fini(&r);

    r = s_shoal("-c", ep, "create", "docs", "--dim", "16", "--metric", "l2", NULL);
    cr_expect_eq(r.status, 0, "%s", r.err);
    s_run_fini(&r);
    r = s_shoal("-c", ep, "create", "docs", "--dim", "16", "--metric", "l2", NULL);
    s_expect_failure(&r, "shoal: create: ", "docs"); /* exists already */
    s_run_fini(&r);

    r = s_shoal("-c", ep, "load", "docs", base_path, "--ids-start", "100", "--batch", "64", NULL);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_expect_eq(s_lines(r.out), 1, "%s", r.out);
    cr_expect_eq(s_value(r.out, "loaded"), S_N, "%s", r.out);
    s_value(r.out, "vps");
    s_run_fini(&r);

    /* exact search with the truth: recall 1, no partial answer */
    r = s_shoal("-c", ep, "search", "docs", query_path, "-k", "10", "--mode", "exact", "--gt",
                gt_path, "--out", out_path, NULL);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_expect_eq(s_lines(r.out), 1, "%s", r.out);
    cr_expect_eq(s_value(r.out, "queries"), S_NQ, "%s", r.out);
    cr_expect_eq(s_value(r.out, "k"), 10, "%s", r.out);
    cr_expect_eq(s_value(r.out, "recall@10"), 1.0, "%s", r.out);
    cr_expect_geq(s_value(r.out, "p99_ms"), s_value(r.out, "p50_ms"), "%s", r.out);
    s_value(r.out, "qps");
    s_value(r.out, "shards_per_query");
    cr_expect_null(strstr(r.out, "partial"), "%s", r.out);
    s_run_fini(&r);
    size_t on = 0, od = 0;
    int32_t *outs = vecfile_load_i32(out_path, &on, &od, &err);
    cr_assert_not_null(outs, "%s", err.msg);
    cr_expect_eq(on, S_NQ);
    cr_expect_eq(od, S_K);
    for (size_t q = 0; q < S_NQ; q++)
        cr_expect_eq(outs[q * S_K], truth[q * S_K], "query %zu", q);
    free(outs);

    /* batched requests; k above what is stored is padded with -1 in --out */
    r = s_shoal("-c", ep, "search", "docs", query_path, "-k", "600", "--batch", "7", "--mode",
                "exact", "--out", out_path, NULL);
    cr_assert_eq(r.status, 0, "%s", r.err);
    cr_expect_null(strstr(r.out, "recall"), "%s", r.out);
    s_run_fini(&r);
    outs = vecfile_load_i32(out_path, &on, &od, &err);
    cr_assert_not_null(outs, "%s", err.msg);
    cr_assert_eq(on, S_NQ);
    cr_assert_eq(od, 600);
    for (size_t q = 0; q < S_NQ; q++) {
        /* every stored id once, in 100..599, then padding */
        uint8_t seen[S_N] = {0};
        for (size_t j = 0; j < 600; j++) {
            int32_t id = outs[q * 600 + j];
            if (j >= S_N) {
                cr_expect_eq(id, -1, "query %zu slot %zu: %d, not padding", q, j, id);
                continue;
            }
            cr_assert(id >= 100 && id < 100 + S_N, "query %zu slot %zu: id %d", q, j, id);
            cr_expect_eq(seen[id - 100], 0, "query %zu: id %d twice", q, id);
            seen[id - 100] = 1;
        }
    }
    free(outs);

    /* a file of the wrong dimension: the server's error, one line */
    char wrong_path[S_PATH_MAX];
    s_scratch_path(wrong_path, "wrong.fvecs");
    cr_assert_eq(vecfile_write_fvecs(wrong_path, base, 10, 8, &err), 0, "%s", err.msg);
    r = s_shoal("-c", ep, "load", "docs", wrong_path, NULL);
    s_expect_failure(&r, "shoal: load: ", "dim");
    s_run_fini(&r);
    r = s_shoal("-c", ep, "search", "docs", query_path, "--gt", wrong_path, NULL);
    s_expect_failure(&r, "shoal: search: ", "wrong.fvecs");
    s_run_fini(&r);

    /* delete from a list and from a file */
    r = s_shoal("-c", ep, "delete", "docs", "--ids", "100-109,110,99999", NULL);
    cr_expect_eq(r.status, 0, "%s", r.err);
    cr_expect_eq(s_value(r.out, "deleted"), 11, "%s", r.out);
    s_run_fini(&r);
    FILE *f = fopen(ids_path, "w");
    cr_assert_not_null(f);
    fputs("# ids to delete\n120\n\n121\n 122 \n", f);
    fclose(f);
    r = s_shoal("-c", ep, "delete", "docs", "--ids", ids_path, NULL);
    cr_expect_eq(r.status, 0, "%s", r.err);
    cr_expect_eq(s_value(r.out, "deleted"), 3, "%s", r.out);
    s_run_fini(&r);
    f = fopen(ids_path, "w");
    cr_assert_not_null(f);
    fputs("123\nabc\n", f);
    fclose(f);
    r = s_shoal("-c", ep, "delete", "docs", "--ids", ids_path, NULL);
    s_expect_failure(&r, "shoal: delete: ", "line 2");
    s_run_fini(&r);

    r = s_shoal("-c", ep, "get", "docs", "--ids", "100,200", NULL);
    cr_expect_eq(r.status, 0, "%s", r.err);
    cr_expect_not_null(strstr(r.out, "100 found=0\n"), "%s", r.out);
    cr_expect_not_null(strstr(r.out, "200 found=1 "), "%s", r.out);
    s_run_fini(&r);

    r = s_shoal("-c", ep, "status", NULL);
    cr_expect_eq(r.status, 0, "%s", r.err);
    cr_expect_eq(r.out[0], '{', "%s", r.out);
    cr_expect_eq(s_lines(r.out), 1, "%s", r.out);
    s_run_fini(&r);

    /* knn-graph is the coordinator's: one line, no output files left behind */
    r = s_shoal("-c", ep, "knn-graph", "docs", "-k", "5", "--out", graph_path, NULL);
    s_expect_failure(&r, "shoal: knn-graph: ", "knn_graph");
    s_run_fini(&r);
    cr_expect_neq(access(graph_path, F_OK), 0);
    char rows_path[S_PATH_MAX + 8];
    snprintf(rows_path, sizeof rows_path, "%s.rows", graph_path);
    cr_expect_neq(access(rows_path, F_OK), 0);

    r = s_shoal("-c", ep, "drop", "docs", NULL);
    cr_expect_eq(r.status, 0, "%s", r.err);
    s_run_fini(&r);
    r = s_shoal("-c", ep, "search", "docs", query_path, NULL);
    s_expect_failure(&r, "shoal: search: ", "docs");
    s_run_fini(&r);

    free(base);
    free(queries);
}

/* ------------------------------------------------------------------------ */
/* Cluster growth against a fake coordinator                                */
/* ------------------------------------------------------------------------ */

/*
 * A coordinator's side of the cluster ops and of stats' "moves" map, no more:
 * a thread with a ROUTER socket answers each request with canned info maps
 * (docs/protocol.md 11.9). Moves "run" one per stats request: each stats
 * reply shows the next planned move running, and it is done (or, with
 * abort_last, the last one aborted) by the next request.
 */
typedef struct {
    zsock_t *router;        /* owned by the thread once it runs */
    char endpoint[64];      /* where the CLI connects */
    volatile int stop;      /* set by the test to end the thread */
    pthread_t thread;       /* the server */
    uint64_t left;          /* moves still to run */
    uint64_t done, aborted; /* moves finished since the fake started */
    uint64_t rows_copied;   /* rows those moves copied */
    int abort_last;         /* the last move of the run aborts */
    uint64_t stats_asked;   /* stats requests answered */
} s_fake_t;

/* The rebalance plan (with dry_run) or none: two moves of docs' lists. */
static void s_fake_plan_entry(wire_info_t *info, uint64_t list, const char *from)
{
    wire_info_map(info, 6);
    wire_info_key(info, "coll");
    wire_info_str(info, "docs");
    wire_info_key(info, "list");
    wire_info_u64(info, list);
    wire_info_key(info, "replica");
    wire_info_u64(info, 0);
    wire_info_key(info, "from");
    wire_info_str(info, from);
    wire_info_key(info, "to");
    wire_info_str(info, "tcp://h4:7702");
    wire_info_key(info, "vectors");
    wire_info_u64(info, 1000 + list);
}

static void s_fake_stats(s_fake_t *f, wire_info_t *info)
{
    int running = f->left > 0;
    wire_info_map(info, 2);
    wire_info_key(info, "role");
    wire_info_str(info, "coordinator");
    wire_info_key(info, "moves");
    wire_info_map(info, running ? 8 : 7);
    wire_info_key(info, "pending");
    wire_info_u64(info, running ? f->left - 1 : 0);
    wire_info_key(info, "running");
    wire_info_u64(info, running ? 1 : 0);
    wire_info_key(info, "done");
    wire_info_u64(info, f->done);
    wire_info_key(info, "aborted");
    wire_info_u64(info, f->aborted);
    wire_info_key(info, "rows_copied");
    wire_info_u64(info, f->rows_copied);
    wire_info_key(info, "rows_per_s");
    wire_info_f64(info, 2000.0);
    wire_info_key(info, "rate_mb");
    wire_info_u64(info, 40);
    if (running) {
        wire_info_key(info, "current");
        wire_info_map(info, 8);
        wire_info_key(info, "coll");
        wire_info_str(info, "docs");
        wire_info_key(info, "list");
        wire_info_u64(info, 5);
        wire_info_key(info, "replica");
        wire_info_u64(info, 0);
        wire_info_key(info, "from");
        wire_info_str(info, "tcp://h1:7702");
        wire_info_key(info, "to");
        wire_info_str(info, "tcp://h4:7702");
        wire_info_key(info, "copied");
        wire_info_u64(info, 250);
        wire_info_key(info, "vectors");
        wire_info_u64(info, 1000);
        wire_info_key(info, "eta_s");
        wire_info_f64(info, 12.4);
        /* the move this reply shows is over by the next request */
        f->left--;
        f->rows_copied += 1000;
        if (f->left == 0 && f->abort_last)
            f->aborted++;
        else
            f->done++;
    }
}

/* Fills info for req; returns 0 or the error code (msg filled) to answer with. */
static int s_fake_answer(s_fake_t *f, const wire_request_t *req, wire_info_t *info, char *msg,
                         size_t cap)
{
    switch (req->op) {
    case WIRE_OP_STATS:
        f->stats_asked++;
        s_fake_stats(f, info);
        return 0;
    case WIRE_OP_SHARD_ADD:
        wire_info_map(info, 3);
        wire_info_key(info, "endpoint");
        wire_info_str(info, req->endpoint);
        wire_info_key(info, "index");
        wire_info_u64(info, 3);
        wire_info_key(info, "shards");
        wire_info_u64(info, 4);
        return 0;
    case WIRE_OP_SHARD_DRAIN:
        f->left = 3;
        wire_info_map(info, 3);
        wire_info_key(info, "endpoint");
        wire_info_str(info, req->endpoint);
        wire_info_key(info, "moves");
        wire_info_u64(info, 3);
        wire_info_key(info, "vectors");
        wire_info_u64(info, 52113);
        return 0;
    case WIRE_OP_SHARD_REMOVE:
        if (strstr(req->endpoint, "busy")) {
            snprintf(msg, cap, "shard %s still holds 3 lists: drain it first", req->endpoint);
            return SHOAL_EINVAL;
        }
        wire_info_map(info, 2);
        wire_info_key(info, "endpoint");
        wire_info_str(info, req->endpoint);
        wire_info_key(info, "shards");
        wire_info_u64(info, 3);
        return 0;
    case WIRE_OP_REBALANCE:
        if (!req->dry_run) {
            f->left = 2;
            f->abort_last = req->rate_mb == 13; /* the test's way to ask for an abort */
        }
        wire_info_map(info, 9);
        wire_info_key(info, "dry_run");
        wire_info_u64(info, req->dry_run);
        wire_info_key(info, "moves");
        wire_info_u64(info, 2);
        wire_info_key(info, "vectors");
        wire_info_u64(info, 2011);
        wire_info_key(info, "imbalance_before");
        wire_info_f64(info, 1.5);
        wire_info_key(info, "imbalance_after");
        wire_info_f64(info, 1.0625);
        wire_info_key(info, "shards_per_query_before");
        wire_info_f64(info, 3.25);
        wire_info_key(info, "shards_per_query_after");
        wire_info_f64(info, 3.5);
        wire_info_key(info, "shards_per_query_fresh");
        wire_info_f64(info, 3.125);
        wire_info_key(info, "plan");
        wire_info_array(info, req->dry_run ? 2 : 0);
        if (req->dry_run) {
            s_fake_plan_entry(info, 5, "tcp://h1:7702");
            s_fake_plan_entry(info, 11, "tcp://h2:7702");
        }
        return 0;
    default:
        snprintf(msg, cap, "the fake coordinator does not serve %s", wire_op_name(req->op));
        return SHOAL_EUNSUPPORTED;
    }
}

/* Answers one message: identity, then the request's frames. */
static void s_fake_serve(s_fake_t *f, zmsg_t *msg)
{
    zframe_t *id = zmsg_pop(msg);
    wire_frames_t in;
    memset(&in, 0, sizeof in);
    for (zframe_t *fr = zmsg_first(msg); fr && in.count < WIRE_FRAMES_MAX; fr = zmsg_next(msg)) {
        in.data[in.count] = zframe_data(fr);
        in.size[in.count++] = zframe_size(fr);
    }
    wire_request_t req;
    wire_reply_t rep;
    shoal_err_t err;
    wire_info_t *info = wire_info_new();
    char msg_text[WIRE_MSG_MAX] = "";
    int rc = wire_request_decode(&in, NULL, &req, &err);
    if (rc == 0)
        rc = s_fake_answer(f, &req, info, msg_text, sizeof msg_text);
    if (rc != 0) {
        wire_reply_error(&rep, req.op, req.rid, rc, msg_text[0] ? msg_text : err.msg);
    } else {
        wire_reply_init(&rep);
        rep.op = req.op;
        rep.rid = req.rid;
        rep.info = wire_info_data(info);
        rep.info_len = wire_info_len(info);
    }
    wire_frames_t out;
    if (wire_reply_encode(&rep, &out, &err) == 0) {
        zmsg_t *reply = zmsg_new();
        zmsg_append(reply, &id);
        for (size_t i = 0; i < out.count; i++)
            zmsg_addmem(reply, out.data[i], out.size[i]);
        zmsg_send(&reply, f->router);
        wire_frames_fini(&out);
    }
    zframe_destroy(&id);
    wire_info_destroy(&info);
    wire_request_fini(&req);
}

static void *s_fake_run(void *arg)
{
    s_fake_t *f = arg;
    zsock_set_rcvtimeo(f->router, 50);
    while (!f->stop) {
        zmsg_t *msg = zmsg_recv(f->router);
        if (!msg)
            continue; /* the timeout: look at stop again */
        s_fake_serve(f, msg);
        zmsg_destroy(&msg);
    }
    return NULL;
}

static void s_fake_start(s_fake_t *f)
{
    memset(f, 0, sizeof *f);
    f->router = zsock_new(ZMQ_ROUTER);
    cr_assert_not_null(f->router);
    int port = zsock_bind(f->router, "tcp://127.0.0.1:*");
    cr_assert_gt(port, 0);
    snprintf(f->endpoint, sizeof f->endpoint, "tcp://127.0.0.1:%d", port);
    cr_assert_eq(pthread_create(&f->thread, NULL, s_fake_run, f), 0);
}

static void s_fake_stop(s_fake_t *f)
{
    f->stop = 1;
    pthread_join(f->thread, NULL);
    zsock_destroy(&f->router);
}

/* Lines `shoal status` prints (2 while moves are under way). */
static size_t s_status_lines(const char *ep)
{
    s_run_t r = s_shoal("-c", ep, "status", NULL);
    cr_expect_eq(r.status, 0, "%s", r.err);
    size_t n = s_lines(r.out);
    s_run_fini(&r);
    return n;
}

Test(cli, cluster_commands_against_a_fake_coordinator)
{
    s_fake_t f;
    s_fake_start(&f);
    const char *ep = f.endpoint;

    s_run_t r = s_shoal("-c", ep, "shard", "add", "tcp://h4:7702", NULL);
    cr_expect_eq(r.status, 0, "%s", r.err);
    cr_expect_str_eq(r.out, "added tcp://h4:7702 as shard 3 of 4\n");
    s_run_fini(&r);

    r = s_shoal("-c", ep, "shard", "remove", "tcp://h2:7702", NULL);
    cr_expect_eq(r.status, 0, "%s", r.err);
    cr_expect_str_eq(r.out, "removed tcp://h2:7702 (3 shards serve)\n");
    s_run_fini(&r);

    /* the coordinator's refusal is the error line, exit status 1 */
    r = s_shoal("-c", ep, "shard", "remove", "tcp://busy:7702", NULL);
    s_expect_failure(&r, "shoal: shard: ", "still holds 3 lists: drain it first");
    cr_expect_eq(r.status, 1);
    s_run_fini(&r);

    /* status with nothing moving: one line, as before */
    r = s_shoal("-c", ep, "status", NULL);
    cr_expect_eq(r.status, 0, "%s", r.err);
    cr_expect_eq(s_lines(r.out), 1, "%s", r.out);
    cr_expect_eq(r.out[0], '{', "%s", r.out);
    s_run_fini(&r);

    /* drain without --wait answers at once; status then shows the moves */
    r = s_shoal("-c", ep, "shard", "drain", "tcp://h2:7702", NULL);
    cr_expect_eq(r.status, 0, "%s", r.err);
    cr_expect_str_eq(r.out, "draining tcp://h2:7702: 3 moves, 52,113 vectors\n");
    s_run_fini(&r);
    r = s_shoal("-c", ep, "status", NULL);
    cr_expect_eq(r.status, 0, "%s", r.err);
    cr_expect_eq(s_lines(r.out), 2, "%s", r.out);
    const char *second = strchr(r.out, '\n') + 1;
    cr_expect_str_eq(second, "moves: running docs 5/0 tcp://h1:7702 -> tcp://h4:7702 250/1000 "
                             "(eta 12s), 2 pending, 0 done\n");
    s_run_fini(&r);
    /* status with NAME keeps to its one line */
    r = s_shoal("-c", ep, "status", "docs", NULL);
    cr_expect_eq(s_lines(r.out), 1, "%s", r.out);
    s_run_fini(&r);

    /* each stats request ends one of the fake's moves: let the drain's run out */
    size_t lines = 2;
    for (int i = 0; i < 10 && lines > 1; i++)
        lines = s_status_lines(ep);
    cr_expect_eq(lines, 1, "the moves are over");

    /* drain --wait: progress on stderr (not a terminal here: plain lines), the end on stdout */
    r = s_shoal("-c", ep, "shard", "drain", "tcp://h2:7702", "--wait", NULL);
    cr_expect_eq(r.status, 0, "%s", r.err);
    cr_expect_str_eq(r.out, "draining tcp://h2:7702: 3 moves, 52,113 vectors\n"
                            "drained tcp://h2:7702: 3 moves done, 0 aborted\n");
    cr_expect(
        strncmp(r.err, "drain: 0/3 moves, docs 5 tcp://h1:7702 -> tcp://h4:7702 250/1000", 60) == 0,
        "%s", r.err);
    cr_expect_null(strchr(r.err, '\r'), "no carriage returns off a terminal: %s", r.err);
    s_run_fini(&r);

    /* rebalance --dry-run: the summary and the plan */
    r = s_shoal("-c", ep, "rebalance", "--dry-run", "--max-moves", "2", NULL);
    cr_expect_eq(r.status, 0, "%s", r.err);
    cr_expect_str_eq(r.out,
                     "moves=2 vectors=2011 imbalance=1.500->1.062 shards_per_query=3.25->3.50 "
                     "(fresh 3.12)\n"
                     "docs 5/0 tcp://h1:7702 -> tcp://h4:7702 1005\n"
                     "docs 11/0 tcp://h2:7702 -> tcp://h4:7702 1011\n");
    s_run_fini(&r);
    cr_expect_eq(s_status_lines(ep), 1, "a dry run moves nothing");

    /* rebalance --wait: done when nothing is pending or running */
    r = s_shoal("-c", ep, "rebalance", "--wait", "--rate", "40", NULL);
    cr_expect_eq(r.status, 0, "%s", r.err);
    cr_expect_not_null(strstr(r.out, "moves=2 vectors=2011 "), "%s", r.out);
    cr_expect_not_null(strstr(r.out, "\nrebalanced: 2 moves done, 0 aborted\n"), "%s", r.out);
    s_run_fini(&r);

    /* a move that aborts makes the wait fail */
    r = s_shoal("-c", ep, "rebalance", "--wait", "--rate", "13", NULL);
    cr_expect_eq(r.status, 1, "%s", r.err);
    cr_expect_not_null(strstr(r.out, "rebalanced: 1 moves done, 1 aborted\n"), "%s", r.out);
    cr_expect_not_null(strstr(r.err, "shoal: rebalance: 1 of 2 moves aborted"), "%s", r.err);
    s_run_fini(&r);

    /* the library hands out the map; lookups reach the plan's entries */
    shoal_err_t err;
    shoal_client_t *client = shoal_client_new(ep, S_TIMEOUT_MS, &err);
    cr_assert_not_null(client, "%s", err.msg);
    char *text = NULL;
    void *info = NULL;
    size_t len = 0;
    cr_assert_eq(shoal_client_rebalance(client, 1, 5, 0, &text, &info, &len, &err), 0, "%s",
                 err.msg);
    cr_expect_not_null(strstr(text, "\"plan\": [{\"coll\": \"docs\", \"list\": 5,"), "%s", text);
    size_t n = 0;
    cr_expect_eq(wire_info_lookup_len(info, len, "plan", &n), 0);
    cr_expect_eq(n, 2);
    double v = 0;
    cr_expect_eq(wire_info_lookup(info, len, "plan.1.vectors", &v), 0);
    cr_expect_eq(v, 1011.0);
    free(text);
    free(info);
    cr_assert_eq(
        shoal_client_shard(client, WIRE_OP_SHARD_ADD, "tcp://h5:7702", &text, NULL, NULL, &err), 0,
        "%s", err.msg);
    cr_expect_str_eq(text, "{\"endpoint\": \"tcp://h5:7702\", \"index\": 3, \"shards\": 4}");
    free(text);
    text = (char *)"unchanged";
    cr_expect_eq(
        shoal_client_shard(client, WIRE_OP_SHARD_REMOVE, "tcp://busy:1", &text, NULL, NULL, &err),
        SHOAL_EINVAL);
    cr_expect_str_eq(err.msg, "shard tcp://busy:1 still holds 3 lists: drain it first");
    cr_expect_null(text);
    shoal_client_destroy(&client);
    s_fake_stop(&f);
}
