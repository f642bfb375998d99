/*
 * shoal_bench.c - bin/shoal-bench: data generation and benchmarks.
 *
 *   shoal-bench gen        clustered data + exact ground truth as vecs files
 *   shoal-bench distances  distance kernels: vectors per second per kernel
 *   shoal-bench hnsw       HNSW index: build, memory, recall/qps/latency per ef
 *   shoal-bench flat       CPU exact k-NN: qps, GEMM throughput, recall
 *   shoal-bench exact      exact search at nq = 1 on f16/sq8 codes vs the float32 engine
 *   shoal-bench shard      a shoal-shard process: inserts, socket overhead, restart
 *   shoal-bench cluster    coordinator + shards against one in-process HNSW
 *   shoal-bench chaos      kill -9 / restart while writing; every acked write checked
 *   shoal-bench leak       RSS growth of a cluster under mixed load
 *   shoal-bench replication  R = 1 against R = 2 on namespace hosts (root)
 *   shoal-bench rebalance  a shard added under searches: latency, move rate (root)
 *
 * Later issues add further subcommands.
 */
#include "bench/shoal_bench.h"
#include "common/log.h"
#include "common/parfor.h"
#include "net/wire.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <limits.h>
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const struct {
    const char *name;
    int (*main)(int argc, char **argv);
    const char *summary;
} s_commands[] = {
    {"gen", bench_gen_main, "generate clustered vectors, queries and exact ground truth"},
    {"distances", bench_distances_main, "distance kernels: vectors/s, scalar vs SIMD"},
    {"hnsw", bench_hnsw_main, "HNSW index: build time, memory, recall/qps/latency per ef"},
    {"flat", bench_flat_main, "CPU exact k-NN: qps, GEMM gflops, recall (kernels or GEMM)"},
    {"exact", bench_exact_main, "exact k-NN at nq = 1 on f16/sq8 codes vs the float32 engine"},
    {"shard", bench_shard_main, "shoal-shard over its socket: insert rate, socket cost, restart"},
    {"cluster", bench_cluster_main, "coordinator + shards vs one in-process HNSW, same recall"},
    {"chaos", bench_chaos_main, "kill -9 and restart processes while writing; verify every ack"},
    {"leak", bench_leak_main, "mixed load from two clients; RSS growth per process"},
    {"replication", bench_replication_main,
     "R = 1 against R = 2 on namespace hosts: throughput, wiped-shard rebuild (root)"},
    {"rebalance", bench_rebalance_main, "a 4th shard added and rebalanced under searches (root)"},
};

#define S_NCOMMANDS (sizeof s_commands / sizeof s_commands[0])

static void s_usage(FILE *out)
{
    fprintf(out, "usage: shoal-bench COMMAND [options]   (shoal-bench COMMAND --help)\n\n");
    for (size_t i = 0; i < S_NCOMMANDS; i++)
        fprintf(out, "  %-10s %s\n", s_commands[i].name, s_commands[i].summary);
}

/*
 * Parses a whole decimal number for option `name`, with an optional k/m/g
 * suffix (x1000 each) when suffixes is non-zero. Prints why on failure.
 */
static int s_parse_number(const char *name, const char *text, int suffixes,
                          unsigned long long *out)
{
    if (!text || !*text || !isdigit((unsigned char)text[0])) {
        fprintf(stderr, "shoal-bench: %s: expected a number, got \"%s\"\n", name,
                text ? text : "");
        return -1;
    }
    errno = 0;
    char *end = NULL;
    unsigned long long value = strtoull(text, &end, 10);
    unsigned long long scale = 1;
    if (suffixes && (*end == 'k' || *end == 'K'))
        scale = 1000ULL, end++;
    else if (suffixes && (*end == 'm' || *end == 'M'))
        scale = 1000000ULL, end++;
    else if (suffixes && (*end == 'g' || *end == 'G'))
        scale = 1000000000ULL, end++;
    if (errno || *end || value > ULLONG_MAX / scale) {
        fprintf(stderr, "shoal-bench: %s: \"%s\" is not a valid number\n", name, text);
        return -1;
    }
    *out = value * scale;
    return 0;
}

int bench_parse_size(const char *name, const char *text, size_t min, size_t max, size_t *out)
{
    unsigned long long value;
    if (s_parse_number(name, text, 1, &value) != 0)
        return -1;
    if (value < min || value > max) {
        fprintf(stderr, "shoal-bench: %s: %llu is out of range [%zu, %zu]\n", name, value, min,
                max);
        return -1;
    }
    *out = (size_t)value;
    return 0;
}

int bench_parse_u64(const char *name, const char *text, uint64_t *out)
{
    unsigned long long value;
    if (s_parse_number(name, text, 0, &value) != 0)
        return -1;
    *out = (uint64_t)value;
    return 0;
}

size_t bench_threads(size_t threads)
{
    return threads > 0 ? threads : parfor_cores();
}

int bench_parse_metric(const char *cmd, const char *text, shoal_metric_t *metric)
{
    if (shoal_metric_parse(text, metric) == 0)
        return 0;
    fprintf(stderr, "shoal-bench %s: --metric: expected l2, ip or cosine, got \"%s\"\n", cmd, text);
    return -1;
}

/* ------------------------------------------------------------------------ */
/* The frame every subcommand shares                                        */
/* ------------------------------------------------------------------------ */

int bench_parse_args(const char *cmd, int argc, char **argv, const bench_opt_t *opts, size_t nopts,
                     bench_other_fn *other, void *ctx)
{
    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i];
        if (!strcmp(opt, "--help") || !strcmp(opt, "-h"))
            return 1;
        const bench_opt_t *known = NULL;
        for (size_t j = 0; j < nopts && !known; j++)
            if (!strcmp(opt, opts[j].name))
                known = &opts[j];
        if (known && !known->value) {
            *known->given = 1;
            continue;
        }
        if (strncmp(opt, "--", 2) != 0) {
            fprintf(stderr, "shoal-bench %s: unexpected argument \"%s\"\n", cmd, opt);
            return -1;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "shoal-bench %s: %s needs a value\n", cmd, opt);
            return -1;
        }
        const char *val = argv[++i];
        int rc;
        if (known) {
            /* bench_parse_size prints its own one-line reason. */
            rc = bench_parse_size(opt, val, known->min, known->max, known->value);
            if (rc == 0 && known->given)
                *known->given = 1;
        } else {
            rc = other ? other(opt, val, ctx) : 1;
        }
        if (rc > 0)
            fprintf(stderr, "shoal-bench %s: unknown option %s\n", cmd, opt);
        if (rc != 0)
            return -1;
    }
    return 0;
}

int bench_command_main(const char *cmd, int argc, char **argv, void *opts,
                       int (*parse)(int argc, char **argv, void *opts), void (*usage)(FILE *out),
                       int (*run)(const void *opts, shoal_err_t *err))
{
    int parsed = parse(argc, argv, opts);
    if (parsed == 1) {
        usage(stdout);
        return 0;
    }
    if (parsed != 0)
        return BENCH_EXIT_USAGE;

    shoal_err_t err;
    shoal_err_clear(&err);
    if (run(opts, &err) != SHOAL_OK) {
        fprintf(stderr, "shoal-bench %s: %s\n", cmd,
                err.msg[0] ? err.msg : shoal_strerror(err.code));
        return BENCH_EXIT_RUNTIME;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Server processes                                                         */
/* ------------------------------------------------------------------------ */

void bench_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

void bench_remove_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return;
    if (!S_ISDIR(st.st_mode)) {
        unlink(path);
        return;
    }
    DIR *dir = opendir(path);
    if (dir) {
        struct dirent *e;
        while ((e = readdir(dir)) != NULL) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            char child[BENCH_PATH_MAX];
            int len = snprintf(child, sizeof child, "%s/%s", path, e->d_name);
            if (len > 0 && len < BENCH_PATH_MAX)
                bench_remove_tree(child);
        }
        closedir(dir);
    }
    rmdir(path);
}

int bench_find_bin(const char *given, const char *name, const char *flag, char *out,
                   shoal_err_t *err)
{
    int len;
    if (given) {
        len = snprintf(out, BENCH_PATH_MAX, "%s", given);
    } else {
        char self[BENCH_PATH_MAX];
        ssize_t got = readlink("/proc/self/exe", self, sizeof self - 1);
        if (got <= 0)
            return shoal_err_set(err, SHOAL_EIO, "cannot find this program's folder; use %s",
                                 flag);
        self[got] = '\0';
        char *slash = strrchr(self, '/');
        if (slash)
            *slash = '\0';
        len = snprintf(out, BENCH_PATH_MAX, "%s/%s", self, name);
    }
    if (len < 0 || len >= BENCH_PATH_MAX)
        return shoal_err_set(err, SHOAL_EINVAL, "%s: path longer than %d bytes", flag,
                             BENCH_PATH_MAX - 1);
    if (access(out, X_OK) != 0)
        return shoal_err_set(err, SHOAL_ENOTFOUND, "%s is not an executable (%s)", out, flag);
    return 0;
}

int bench_child_spawn(bench_child_t *c, char *const argv[], shoal_err_t *err)
{
    unlink(c->ready);
    c->endpoint[0] = '\0';
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        return shoal_err_set(err, SHOAL_EIO, "%s: fork: %s", c->name, strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the benchmark */
        if (getppid() != parent)
            _exit(127);
        execv(argv[0], argv);
        _exit(127);
    }
    c->pid = pid;
    return 0;
}

int bench_child_wait_ready(bench_child_t *c, double wait_s, shoal_err_t *err)
{
    double end = timing_now() + wait_s;
    while (access(c->ready, R_OK) != 0) {
        int status;
        if (c->pid <= 0)
            return shoal_err_set(err, SHOAL_EUNAVAIL, "%s is not running", c->name);
        if (waitpid(c->pid, &status, WNOHANG) == c->pid) {
            c->pid = 0;
            return shoal_err_set(err, SHOAL_EUNAVAIL,
                                 "%s exited before it was ready (status 0x%x)", c->name, status);
        }
        if (timing_now() > end)
            return shoal_err_set(err, SHOAL_ETIMEOUT, "%s not ready after %.0f s", c->name,
                                 wait_s);
        bench_sleep_ms(2);
    }
    FILE *f = fopen(c->ready, "r");
    if (!f || !fgets(c->endpoint, sizeof c->endpoint, f)) {
        if (f)
            fclose(f);
        return shoal_err_set(err, SHOAL_EIO, "%s: cannot read %s", c->name, c->ready);
    }
    fclose(f);
    c->endpoint[strcspn(c->endpoint, "\r\n")] = '\0';
    return 0;
}

int bench_child_stop(bench_child_t *c, double wait_s, shoal_err_t *err)
{
    if (c->pid <= 0)
        return 0;
    kill(c->pid, SIGTERM);
    double end = timing_now() + wait_s;
    int status = 0;
    while (waitpid(c->pid, &status, WNOHANG) != c->pid) {
        if (timing_now() > end) {
            kill(c->pid, SIGKILL);
            waitpid(c->pid, &status, 0);
            c->pid = 0;
            return shoal_err_set(err, SHOAL_ETIMEOUT, "%s did not stop in %.0f s", c->name,
                                 wait_s);
        }
        bench_sleep_ms(2);
    }
    c->pid = 0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return shoal_err_set(err, SHOAL_EUNAVAIL, "%s stopped with status 0x%x", c->name,
                             status);
    return 0;
}

void bench_child_kill(bench_child_t *c)
{
    if (c && c->pid > 0) {
        kill(c->pid, SIGKILL);
        waitpid(c->pid, NULL, 0);
        c->pid = 0;
    }
}

int main(int argc, char **argv)
{
    shoal_log_set_ident("shoal-bench");
    shoal_log_init_from_env();
    if (argc < 2) {
        s_usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        s_usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < S_NCOMMANDS; i++)
        if (!strcmp(argv[1], s_commands[i].name))
            return s_commands[i].main(argc - 1, argv + 1);
    fprintf(stderr, "shoal-bench: unknown command \"%s\"\n", argv[1]);
    s_usage(stderr);
    return 2;
}

int bench_stat(shoal_client_t *client, const char *coll, const char *path, double *value,
               shoal_err_t *err)
{
    void *info = NULL;
    size_t len = 0;
    int rc = shoal_client_stats(client, coll, NULL, &info, &len, err);
    if (rc == 0 && wire_info_lookup(info, len, path, value) != 0)
        rc = shoal_err_set(err, SHOAL_EFORMAT, "stats of %s have no \"%s\"",
                           shoal_client_endpoint(client), path);
    free(info);
    return rc;
}
