/*
 * distance_avx2.c - AVX2 + FMA kernels, 8 floats per register.
 *
 * Built with -mavx2 -mfma and nothing else in shoal is, so this file holds
 * only kernels; distance.c hands its table out after checking the CPU.
 *
 * Shape of every kernel:
 *   - the main loop keeps several independent accumulators: an FMA has a
 *     latency of about four cycles and two can start per cycle, so a single
 *     accumulator would leave most of the FMA units idle;
 *   - the last dim % 8 floats are read with _mm256_maskload_ps, whose masked-off
 *     lanes are never touched (no fault, no read past the end of the vector),
 *     so any dim works with exactly-sized buffers and no scalar tail loop;
 *   - loads are unaligned (loadu): vectors come from callers, mmap'd files and
 *     rows with odd strides, and on current cores an unaligned load that
 *     happens to be aligned costs nothing extra.
 *
 * The batch kernels compare one query with four rows at a time. Each query
 * load then feeds four FMAs instead of one: 1.25 loads per FMA instead of 2,
 * and loads, not arithmetic, are what limit a one-pair kernel on data in cache.
 * The four rows are not neighbours but a quarter of the batch apart (row,
 * row + n/4, row + n/2, row + 3n/4), so that each of them is one long
 * sequential stream through memory. Neighbouring rows were tried first: they
 * make four short interleaved streams (one row each, then a jump over the
 * other three), which the hardware prefetcher follows badly. On the AMD EPYC
 * where this was measured, that version ran at half the speed of the one-pair
 * loop once the rows came from L3 or DRAM, and software prefetching did not
 * recover it. Rows a quarter apart beat the one-pair loop from L2, L3 and DRAM alike. The n % 4
 * rows left over at the end go through the pair kernels.
 */
#include "common/distance_impl.h"

#include <immintrin.h>
#include <stdint.h>

#if !defined(__AVX2__) || !defined(__FMA__)
#error "distance_avx2.c must be built with -mavx2 -mfma (see the Makefile)"
#endif

/* Eight -1s, eight 0s: the 8 ints from s_tail_mask + 8 - r select the first r lanes. */
static const int32_t s_tail_mask[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

/* Mask for a maskload of the first `rest` floats, 0 <= rest <= 8. */
static inline __m256i s_mask_first(size_t rest)
{
    return _mm256_loadu_si256((const __m256i *)(s_tail_mask + 8 - rest));
}

static inline float s_hsum(__m256 v)
{
    __m128 sum = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    sum = _mm_add_ps(sum, _mm_movehl_ps(sum, sum));
    sum = _mm_add_ss(sum, _mm_movehdup_ps(sum));
    return _mm_cvtss_f32(sum);
}

/* acc + (x - q)^2, lane by lane. */
static inline __m256 s_add_sq_diff(__m256 acc, __m256 x, __m256 q)
{
    __m256 diff = _mm256_sub_ps(x, q);
    return _mm256_fmadd_ps(diff, diff, acc);
}

/* The four horizontal sums {sum a, sum b, sum c, sum d}, in one register. */
static inline __m128 s_hsum4(__m256 a, __m256 b, __m256 c, __m256 d)
{
    /* Within each 128-bit half: [a01 a23 b01 b23], then [a0123 b0123 c0123 d0123]. */
    __m256 ab = _mm256_hadd_ps(a, b);
    __m256 cd = _mm256_hadd_ps(c, d);
    __m256 abcd = _mm256_hadd_ps(ab, cd);
    return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

/* ------------------------------------------------------------------------ */
/* One pair                                                                 */
/* ------------------------------------------------------------------------ */

static float s_l2sq_avx2(const float *a, const float *b, size_t dim)
{
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    __m256 acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= dim; i += 32) {
        acc0 = s_add_sq_diff(acc0, _mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
        acc1 = s_add_sq_diff(acc1, _mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8));
        acc2 = s_add_sq_diff(acc2, _mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16));
        acc3 = s_add_sq_diff(acc3, _mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24));
    }
    for (; i + 8 <= dim; i += 8)
        acc0 = s_add_sq_diff(acc0, _mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
    if (i < dim) {
        __m256i mask = s_mask_first(dim - i);
        acc1 =
            s_add_sq_diff(acc1, _mm256_maskload_ps(a + i, mask), _mm256_maskload_ps(b + i, mask));
    }
    return s_hsum(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
}

static float s_dot_avx2(const float *a, const float *b, size_t dim)
{
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    __m256 acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= dim; i += 32) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
        acc2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), acc2);
        acc3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), acc3);
    }
    for (; i + 8 <= dim; i += 8)
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    if (i < dim) {
        __m256i mask = s_mask_first(dim - i);
        acc1 =
            _mm256_fmadd_ps(_mm256_maskload_ps(a + i, mask), _mm256_maskload_ps(b + i, mask), acc1);
    }
    return s_hsum(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
}

/*
 * One pass over both vectors: the dot product and both squared norms share
 * each pair of loads. Two sets of three accumulators keep six FMA chains busy.
 */
static float s_cosine_avx2(const float *a, const float *b, size_t dim)
{
    __m256 dot0 = _mm256_setzero_ps(), dot1 = _mm256_setzero_ps();
    __m256 na0 = _mm256_setzero_ps(), na1 = _mm256_setzero_ps();
    __m256 nb0 = _mm256_setzero_ps(), nb1 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= dim; i += 16) {
        __m256 a0 = _mm256_loadu_ps(a + i), b0 = _mm256_loadu_ps(b + i);
        __m256 a1 = _mm256_loadu_ps(a + i + 8), b1 = _mm256_loadu_ps(b + i + 8);
        dot0 = _mm256_fmadd_ps(a0, b0, dot0);
        na0 = _mm256_fmadd_ps(a0, a0, na0);
        nb0 = _mm256_fmadd_ps(b0, b0, nb0);
        dot1 = _mm256_fmadd_ps(a1, b1, dot1);
        na1 = _mm256_fmadd_ps(a1, a1, na1);
        nb1 = _mm256_fmadd_ps(b1, b1, nb1);
    }
    if (i + 8 <= dim) {
        __m256 a0 = _mm256_loadu_ps(a + i), b0 = _mm256_loadu_ps(b + i);
        dot0 = _mm256_fmadd_ps(a0, b0, dot0);
        na0 = _mm256_fmadd_ps(a0, a0, na0);
        nb0 = _mm256_fmadd_ps(b0, b0, nb0);
        i += 8;
    }
    if (i < dim) {
        __m256i mask = s_mask_first(dim - i);
        __m256 a1 = _mm256_maskload_ps(a + i, mask), b1 = _mm256_maskload_ps(b + i, mask);
        dot1 = _mm256_fmadd_ps(a1, b1, dot1);
        na1 = _mm256_fmadd_ps(a1, a1, na1);
        nb1 = _mm256_fmadd_ps(b1, b1, nb1);
    }
    return dist_cosine_finish(s_hsum(_mm256_add_ps(dot0, dot1)), s_hsum(_mm256_add_ps(na0, na1)),
                              s_hsum(_mm256_add_ps(nb0, nb1)));
}

/* ------------------------------------------------------------------------ */
/* One query against many rows                                              */
/* ------------------------------------------------------------------------ */

/*
 * Four rows a quarter of the batch apart, two accumulators each: eight FMA
 * chains, and every query load is shared by the four rows.
 */
static void s_l2sq_batch_avx2(const float *query, const float *base, size_t n, size_t dim,
                              size_t stride, float *out)
{
    size_t quarter = n / 4;
    for (size_t row = 0; row < quarter; row++) {
        const float *r0 = base + row * stride, *r1 = r0 + quarter * stride;
        const float *r2 = r1 + quarter * stride, *r3 = r2 + quarter * stride;
        __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
        __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
        __m256 t0 = _mm256_setzero_ps(), t1 = _mm256_setzero_ps();
        __m256 t2 = _mm256_setzero_ps(), t3 = _mm256_setzero_ps();
        size_t i = 0;
        for (; i + 16 <= dim; i += 16) {
            __m256 q = _mm256_loadu_ps(query + i), p = _mm256_loadu_ps(query + i + 8);
            s0 = s_add_sq_diff(s0, _mm256_loadu_ps(r0 + i), q);
            s1 = s_add_sq_diff(s1, _mm256_loadu_ps(r1 + i), q);
            s2 = s_add_sq_diff(s2, _mm256_loadu_ps(r2 + i), q);
            s3 = s_add_sq_diff(s3, _mm256_loadu_ps(r3 + i), q);
            t0 = s_add_sq_diff(t0, _mm256_loadu_ps(r0 + i + 8), p);
            t1 = s_add_sq_diff(t1, _mm256_loadu_ps(r1 + i + 8), p);
            t2 = s_add_sq_diff(t2, _mm256_loadu_ps(r2 + i + 8), p);
            t3 = s_add_sq_diff(t3, _mm256_loadu_ps(r3 + i + 8), p);
        }
        if (i + 8 <= dim) {
            __m256 q = _mm256_loadu_ps(query + i);
            s0 = s_add_sq_diff(s0, _mm256_loadu_ps(r0 + i), q);
            s1 = s_add_sq_diff(s1, _mm256_loadu_ps(r1 + i), q);
            s2 = s_add_sq_diff(s2, _mm256_loadu_ps(r2 + i), q);
            s3 = s_add_sq_diff(s3, _mm256_loadu_ps(r3 + i), q);
            i += 8;
        }
        if (i < dim) {
            __m256i mask = s_mask_first(dim - i);
            __m256 q = _mm256_maskload_ps(query + i, mask);
            t0 = s_add_sq_diff(t0, _mm256_maskload_ps(r0 + i, mask), q);
            t1 = s_add_sq_diff(t1, _mm256_maskload_ps(r1 + i, mask), q);
            t2 = s_add_sq_diff(t2, _mm256_maskload_ps(r2 + i, mask), q);
            t3 = s_add_sq_diff(t3, _mm256_maskload_ps(r3 + i, mask), q);
        }
        float sums[4];
        _mm_storeu_ps(sums, s_hsum4(_mm256_add_ps(s0, t0), _mm256_add_ps(s1, t1),
                                    _mm256_add_ps(s2, t2), _mm256_add_ps(s3, t3)));
        dist_store_quarters(out, row, quarter, sums);
    }
    for (size_t row = 4 * quarter; row < n; row++)
        out[row] = s_l2sq_avx2(query, base + row * stride, dim);
}

static void s_dot_batch_avx2(const float *query, const float *base, size_t n, size_t dim,
                             size_t stride, float *out)
{
    size_t quarter = n / 4;
    for (size_t row = 0; row < quarter; row++) {
        const float *r0 = base + row * stride, *r1 = r0 + quarter * stride;
        const float *r2 = r1 + quarter * stride, *r3 = r2 + quarter * stride;
        __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
        __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
        __m256 t0 = _mm256_setzero_ps(), t1 = _mm256_setzero_ps();
        __m256 t2 = _mm256_setzero_ps(), t3 = _mm256_setzero_ps();
        size_t i = 0;
        for (; i + 16 <= dim; i += 16) {
            __m256 q = _mm256_loadu_ps(query + i), p = _mm256_loadu_ps(query + i + 8);
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(r0 + i), q, s0);
            s1 = _mm256_fmadd_ps(_mm256_loadu_ps(r1 + i), q, s1);
            s2 = _mm256_fmadd_ps(_mm256_loadu_ps(r2 + i), q, s2);
            s3 = _mm256_fmadd_ps(_mm256_loadu_ps(r3 + i), q, s3);
            t0 = _mm256_fmadd_ps(_mm256_loadu_ps(r0 + i + 8), p, t0);
            t1 = _mm256_fmadd_ps(_mm256_loadu_ps(r1 + i + 8), p, t1);
            t2 = _mm256_fmadd_ps(_mm256_loadu_ps(r2 + i + 8), p, t2);
            t3 = _mm256_fmadd_ps(_mm256_loadu_ps(r3 + i + 8), p, t3);
        }
        if (i + 8 <= dim) {
            __m256 q = _mm256_loadu_ps(query + i);
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(r0 + i), q, s0);
            s1 = _mm256_fmadd_ps(_mm256_loadu_ps(r1 + i), q, s1);
            s2 = _mm256_fmadd_ps(_mm256_loadu_ps(r2 + i), q, s2);
            s3 = _mm256_fmadd_ps(_mm256_loadu_ps(r3 + i), q, s3);
            i += 8;
        }
        if (i < dim) {
            __m256i mask = s_mask_first(dim - i);
            __m256 q = _mm256_maskload_ps(query + i, mask);
            t0 = _mm256_fmadd_ps(_mm256_maskload_ps(r0 + i, mask), q, t0);
            t1 = _mm256_fmadd_ps(_mm256_maskload_ps(r1 + i, mask), q, t1);
            t2 = _mm256_fmadd_ps(_mm256_maskload_ps(r2 + i, mask), q, t2);
            t3 = _mm256_fmadd_ps(_mm256_maskload_ps(r3 + i, mask), q, t3);
        }
        float sums[4];
        _mm_storeu_ps(sums, s_hsum4(_mm256_add_ps(s0, t0), _mm256_add_ps(s1, t1),
                                    _mm256_add_ps(s2, t2), _mm256_add_ps(s3, t3)));
        dist_store_quarters(out, row, quarter, sums);
    }
    for (size_t row = 4 * quarter; row < n; row++)
        out[row] = s_dot_avx2(query, base + row * stride, dim);
}

const dist_kernels_t dist_kernels_avx2_table = {
    .name = "avx2",
    .impl = DIST_IMPL_AVX2,
    .l2sq = s_l2sq_avx2,
    .dot = s_dot_avx2,
    .cosine = s_cosine_avx2,
    .l2sq_batch = s_l2sq_batch_avx2,
    .dot_batch = s_dot_batch_avx2,
};
