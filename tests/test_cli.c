/*
 * test_cli.c - bin/shoal as a user runs it, and the client library's
 * coordinator calls, without a coordinator: --help everywhere, bad command
 * lines rejected with one line naming the problem, an unreachable endpoint
 * reported as a timeout; then against a real bin/shoal-shard (which serves
 * create, insert, search, get, delete, stats, drop and ping): the CLI's
 * load / search / delete / status round trip with exact recall, and the
 * library's search_ex (never partial at a shard), train and knn_graph (a
 * shard answers with its error for ops it does not serve).
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
#include "common/wire.h"
#include "tests/test_support.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
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

static const char *const s_command_names[] = {"create", "train",  "load",      "search", "delete",
                                              "get",    "status", "knn-graph", "drop",   "ping"};

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
