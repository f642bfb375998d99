/*
 * quant_impl.h - private to common/quant*.c: the kernel tables of each
 * implementation, and what their batch loops share.
 *
 * As with distance_impl.h: each SIMD implementation lives in its own file,
 * compiled for its instruction set (a target pragma in the file, which also
 * covers F16C, on top of the distance files' -m flags in the Makefile); they
 * export nothing but their table, and quant.c hands a table out only after
 * checking that the CPU can run it.
 *
 * Rules every table follows (tests/test_quant.c checks them against the
 * scalar table): any dim >= 1; no read past the last code of a row or the
 * last float of the query; no alignment required; f16 conversions bit-exact
 * with quant_f16_from_float / quant_f16_to_float.
 */
#ifndef SHOAL_QUANT_IMPL_H
#define SHOAL_QUANT_IMPL_H

#include "common/quant.h"

#include <stddef.h>

extern const quant_kernels_t quant_kernels_scalar_table; /* quant.c */
extern const quant_kernels_t quant_kernels_avx2_table;   /* quant_avx2.c */
extern const quant_kernels_t quant_kernels_avx512_table; /* quant_avx512.c */

/*
 * The batch kernels work on rows row, row + quarter, row + 2 quarter and
 * row + 3 quarter together, four long sequential streams (distance_avx2.c's
 * header says why); this puts their four results where they belong.
 */
static inline void quant_store_quarters(float *out, size_t row, size_t quarter, const float sums[4])
{
    out[row] = sums[0];
    out[row + quarter] = sums[1];
    out[row + 2 * quarter] = sums[2];
    out[row + 3 * quarter] = sums[3];
}

#endif
