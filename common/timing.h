/*
 * timing.h - the one monotonic clock and the one percentile rule: seconds
 * since an arbitrary start (CLOCK_MONOTONIC, so never stepped by NTP or an
 * operator), and nearest-rank percentiles of sorted samples (the same rule
 * as hnswlib_bench.cpp, so the benches' p50/p99 compare).
 *
 * The servers' loops time themselves with czmq's zclock_usecs (also
 * monotonic, in integer microseconds) because their deadlines are poll
 * timeouts in those units; everything else uses this. Stateless, so
 * thread-safe.
 */
#ifndef SHOAL_TIMING_H
#define SHOAL_TIMING_H

#include <stddef.h>

/* Monotonic seconds (CLOCK_MONOTONIC); only differences mean anything. */
double timing_now(void);

/* qsort comparator for doubles, ascending (NaN is not expected). */
int timing_cmp_double(const void *a, const void *b);

/*
 * The 1-based nearest rank of percentile p (0 < p <= 1) among n >= 1 sorted
 * samples: ceil(p * n), clamped to [1, n].
 */
size_t timing_rank(size_t n, double p);

/* Nearest-rank percentile p (0 < p <= 1) of n >= 1 ascending values. */
double timing_percentile(const double *sorted, size_t n, double p);

#endif
