/*
 * timing.c - the monotonic clock and nearest-rank percentiles of timing.h.
 */
#include "common/timing.h"

#include <math.h>
#include <time.h>

double timing_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int timing_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

size_t timing_rank(size_t n, double p)
{
    size_t rank = (size_t)ceil(p * (double)n);
    return rank < 1 ? 1 : rank > n ? n : rank;
}

double timing_percentile(const double *sorted, size_t n, double p)
{
    return sorted[timing_rank(n, p) - 1];
}
