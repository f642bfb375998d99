/*
 * shoal_bench.h - private to bin/shoal-bench: one entry point per subcommand,
 * and the option-parsing helpers they share. Each subcommand lives in its own
 * file (shoal_bench_<name>.c) and prints its results as key=value pairs so
 * scripts (make bench-*) can read them.
 */
#ifndef SHOAL_BENCH_H
#define SHOAL_BENCH_H

#include <stddef.h>
#include <stdint.h>

/* Subcommands: argv[0] is the subcommand's name. Return the process exit code. */
int bench_gen_main(int argc, char **argv);
int bench_distances_main(int argc, char **argv);
int bench_hnsw_main(int argc, char **argv);
int bench_flat_main(int argc, char **argv);
int bench_shard_main(int argc, char **argv);

/*
 * Parses a whole decimal number in [min, max] for option `name` (e.g. "--n").
 * Accepts k/m/g suffixes (x1000) for convenience ("1m" = 1000000).
 * On error prints "shoal-bench: --n: ..." to stderr and returns -1.
 */
int bench_parse_size(const char *name, const char *text, size_t min, size_t max, size_t *out);
int bench_parse_u64(const char *name, const char *text, uint64_t *out);

/* Seconds from a monotonic clock. */
double bench_now(void);

#endif
