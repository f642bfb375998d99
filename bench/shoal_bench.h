/*
 * shoal_bench.h - private to bin/shoal-bench: one entry point per subcommand,
 * and the option-parsing helpers they share. Each subcommand lives in its own
 * file (shoal_bench_<name>.c) and prints its results as key=value pairs so
 * scripts (make bench-*) can read them.
 */
#ifndef SHOAL_BENCH_H
#define SHOAL_BENCH_H

#include "client/shoal_client.h"
#include "common/distance.h"
#include "common/error.h"
#include "common/timing.h" /* the benches' clock and percentiles */

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

/* Exit codes of every subcommand (0 is success). */
#define BENCH_EXIT_RUNTIME 1 /* something failed while running */
#define BENCH_EXIT_USAGE   2 /* bad options */

/* Subcommands: argv[0] is the subcommand's name. Return the process exit code. */
int bench_gen_main(int argc, char **argv);
int bench_distances_main(int argc, char **argv);
int bench_hnsw_main(int argc, char **argv);
int bench_flat_main(int argc, char **argv);
int bench_exact_main(int argc, char **argv);
int bench_shard_main(int argc, char **argv);
int bench_cluster_main(int argc, char **argv);
int bench_chaos_main(int argc, char **argv);
int bench_leak_main(int argc, char **argv);
int bench_replication_main(int argc, char **argv);
int bench_rebalance_main(int argc, char **argv);

/*
 * Parses a whole decimal number in [min, max] for option `name` (e.g. "--n").
 * Accepts k/m/g suffixes (x1000) for convenience ("1m" = 1000000).
 * On error prints "shoal-bench: --n: ..." to stderr and returns -1.
 */
int bench_parse_size(const char *name, const char *text, size_t min, size_t max, size_t *out);
int bench_parse_u64(const char *name, const char *text, uint64_t *out);

/* threads, or every online core when threads is 0. */
size_t bench_threads(size_t threads);

/*
 * --metric for subcommand cmd: l2, ip or cosine into *metric. On error prints
 * "shoal-bench CMD: --metric: ..." to stderr and returns -1.
 */
int bench_parse_metric(const char *cmd, const char *text, shoal_metric_t *metric);

/*
 * One option of a subcommand's table: a whole number in [min, max] (as
 * bench_parse_size reads it) into *value or, with value NULL, a flag that
 * takes no value. *given, when not NULL, is set to 1 when the option appears.
 */
typedef struct {
    const char *name; /* "--n" */
    size_t min, max;  /* accepted range of the number */
    size_t *value;    /* where the number goes; NULL for a flag */
    int *given;       /* set to 1 when present; may be NULL, not for a flag */
} bench_opt_t;

/*
 * Handles an option not in the table: 0 when taken, -1 after printing why it
 * is wrong, 1 when it is not one of the subcommand's options.
 */
typedef int(bench_other_fn)(const char *opt, const char *val, void *ctx);

/*
 * Reads argv[1..] of subcommand cmd ("flat"): options of the table opts, and
 * other options "--name value" through other(opt, val, ctx) (other may be
 * NULL). Returns 1 at --help or -h, 0 when every option was read, or -1 after
 * printing one line on stderr ("shoal-bench CMD: ...").
 */
int bench_parse_args(const char *cmd, int argc, char **argv, const bench_opt_t *opts, size_t nopts,
                     bench_other_fn *other, void *ctx);

/*
 * The frame of a subcommand: parse(argc, argv, opts); at 1 prints usage on
 * stdout and returns 0, at -1 returns 2 (usage error); then run(opts, err),
 * which on failure prints "shoal-bench CMD: <err.msg>" and returns 1.
 * opts is the subcommand's options struct, filled by parse and read by run.
 */
int bench_command_main(const char *cmd, int argc, char **argv, void *opts,
                       int (*parse)(int argc, char **argv, void *opts), void (*usage)(FILE *out),
                       int (*run)(const void *opts, shoal_err_t *err));

/* ------------------------------------------------------------------------ */
/* Server processes (shard, cluster): start, wait for ready, stop           */
/* ------------------------------------------------------------------------ */

#define BENCH_PATH_MAX 4096

/* Sleeps ms milliseconds (resumed after signals). */
void bench_sleep_ms(long ms);

/* Removes path and everything under it; errors are ignored (scratch data). */
void bench_remove_tree(const char *path);

/*
 * The program `name` ("shoal-shard") into out (BENCH_PATH_MAX bytes): given
 * when not NULL, else next to this program (/proc/self/exe). flag names the
 * option for messages ("--shard-bin"). Fails when it is not executable.
 */
int bench_find_bin(const char *given, const char *name, const char *flag, char *out,
                   shoal_err_t *err);

/*
 * One server child process. Started with a --ready-file: once that file
 * exists, its first line is the bound endpoint. The child gets SIGKILL when
 * the benchmark dies (PR_SET_PDEATHSIG), so none is ever left behind.
 */
typedef struct {
    char name[64];              /* for messages: "shard 2" */
    char ready[BENCH_PATH_MAX]; /* the ready file (argv must name it too) */
    pid_t pid;                  /* running child, or 0 */
    char endpoint[256];         /* read from the ready file by bench_child_wait_ready */
} bench_child_t;

/* Removes c->ready, then forks and execs argv (argv[0]: the binary's path). */
int bench_child_spawn(bench_child_t *c, char *const argv[], shoal_err_t *err);

/* Waits up to wait_s for the ready file and reads c->endpoint from it. */
int bench_child_wait_ready(bench_child_t *c, double wait_s, shoal_err_t *err);

/* SIGTERM, then waits up to wait_s (then SIGKILL); 0 when it exited 0. */
int bench_child_stop(bench_child_t *c, double wait_s, shoal_err_t *err);

/* SIGKILL and reap; NULL-safe for a child that is not running. */
void bench_child_kill(bench_child_t *c);

/* One number at path in the stats of the server behind client (coll may be
 * NULL: the server's own); SHOAL_EFORMAT when the stats have no such path. */
int bench_stat(shoal_client_t *client, const char *coll, const char *path, double *value,
               shoal_err_t *err);

#endif
