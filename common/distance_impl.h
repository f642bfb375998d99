/*
 * distance_impl.h - private to common/distance*.c: the kernel tables of each
 * implementation.
 *
 * Each SIMD implementation lives in its own file, built with its own -m flags
 * (see the Makefile), so that no other code is compiled for instructions the
 * CPU may lack. Those files export nothing but their table; distance.c is the
 * only reader, and hands a table out only after checking that the CPU can run
 * it. Calling through a table the CPU does not support dies with SIGILL.
 *
 * Rules every table follows (the tests check them against the scalar table):
 *   - any dim >= 1, and no read past a[dim-1] or b[dim-1];
 *   - no alignment required;
 *   - cosine's last step, 1 - dot / sqrt(|a|^2 |b|^2), is done in double so
 *     that the product of the norms cannot overflow or underflow a float.
 */
#ifndef SHOAL_DISTANCE_IMPL_H
#define SHOAL_DISTANCE_IMPL_H

#include "common/distance.h"

#include <math.h>

extern const dist_kernels_t dist_kernels_scalar_table; /* distance.c */
extern const dist_kernels_t dist_kernels_avx2_table;   /* distance_avx2.c */
extern const dist_kernels_t dist_kernels_avx512_table; /* distance_avx512.c */

/*
 * The cosine distance from the three sums of one pass; shared so that every
 * implementation finishes the same way. 1 when either vector is zero: such a
 * vector has no direction, and 1 is the distance of an orthogonal one.
 */
static inline float dist_cosine_finish(float dot, float norm_sq_a, float norm_sq_b)
{
    if (norm_sq_a == 0.0f || norm_sq_b == 0.0f)
        return 1.0f;
    double denom = sqrt((double)norm_sq_a * (double)norm_sq_b);
    return (float)(1.0 - (double)dot / denom);
}

/*
 * The batch kernels work on rows row, row + quarter, row + 2 quarter and
 * row + 3 quarter together (see distance_avx2.c for why); this puts their four
 * results where they belong.
 */
static inline void dist_store_quarters(float *out, size_t row, size_t quarter, const float sums[4])
{
    out[row] = sums[0];
    out[row + quarter] = sums[1];
    out[row + 2 * quarter] = sums[2];
    out[row + 3 * quarter] = sums[3];
}

#endif
