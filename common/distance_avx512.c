/*
 * distance_avx512.c - AVX-512F kernels, 16 floats per register.
 *
 * Built with -mavx512f -mavx2 -mfma, and only kernels live here; distance.c
 * hands the table out after checking the CPU. Only AVX-512F instructions are
 * used (no DQ/BW/VL), so every AVX-512 CPU can run them.
 *
 * Same shape as distance_avx2.c (read that file's comment first): several
 * accumulators per loop, unaligned loads, four rows a quarter of the batch
 * apart per step in the batch kernels. The tail is simpler here: AVX-512
 * loads take a lane mask (_mm512_maskz_loadu_ps), masked-off lanes read as
 * zero and are never accessed, so the last dim % 16 floats cost one masked
 * load and no table.
 *
 * On AMD Zen 4, which runs a 512-bit operation as two 256-bit halves, these
 * kernels measured within a few per cent of AVX2 (either way, depending on the
 * kernel and on where the data sits). They are kept for cores with full-width
 * 512-bit units, where half the instructions should mean more speed, and
 * SHOAL_SIMD=avx2 picks the other on a machine where it wins.
 */
#include "common/distance_impl.h"

#include <immintrin.h>

#if !defined(__AVX512F__) || !defined(__AVX2__) || !defined(__FMA__)
#error "distance_avx512.c must be built with -mavx512f -mavx2 -mfma (see the Makefile)"
#endif

/* Mask of the first `rest` lanes, 0 <= rest <= 16. */
static inline __mmask16 s_mask_first(size_t rest)
{
    return (__mmask16)((1u << rest) - 1u);
}

/* The sum of the two 256-bit halves (AVX-512F only: extractf32x8 needs DQ). */
static inline __m256 s_fold(__m512 v)
{
    __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
    return _mm256_add_ps(_mm512_castps512_ps256(v), hi);
}

static inline float s_hsum(__m512 v)
{
    __m256 half = s_fold(v);
    __m128 sum = _mm_add_ps(_mm256_castps256_ps128(half), _mm256_extractf128_ps(half, 1));
    sum = _mm_add_ps(sum, _mm_movehl_ps(sum, sum));
    sum = _mm_add_ss(sum, _mm_movehdup_ps(sum));
    return _mm_cvtss_f32(sum);
}

/* The four horizontal sums {sum a, sum b, sum c, sum d}, in one register. */
static inline __m128 s_hsum4(__m512 a, __m512 b, __m512 c, __m512 d)
{
    /* Within each 128-bit half: [a01 a23 b01 b23], then [a0123 b0123 c0123 d0123]. */
    __m256 ab = _mm256_hadd_ps(s_fold(a), s_fold(b));
    __m256 cd = _mm256_hadd_ps(s_fold(c), s_fold(d));
    __m256 abcd = _mm256_hadd_ps(ab, cd);
    return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

/* acc + (x - q)^2, lane by lane. */
static inline __m512 s_add_sq_diff(__m512 acc, __m512 x, __m512 q)
{
    __m512 diff = _mm512_sub_ps(x, q);
    return _mm512_fmadd_ps(diff, diff, acc);
}

/* ------------------------------------------------------------------------ */
/* One pair                                                                 */
/* ------------------------------------------------------------------------ */

static float s_l2sq_avx512(const float *a, const float *b, size_t dim)
{
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    __m512 acc2 = _mm512_setzero_ps(), acc3 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 64 <= dim; i += 64) {
        acc0 = s_add_sq_diff(acc0, _mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i));
        acc1 = s_add_sq_diff(acc1, _mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16));
        acc2 = s_add_sq_diff(acc2, _mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32));
        acc3 = s_add_sq_diff(acc3, _mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48));
    }
    for (; i + 16 <= dim; i += 16)
        acc0 = s_add_sq_diff(acc0, _mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i));
    if (i < dim) {
        __mmask16 mask = s_mask_first(dim - i);
        acc1 = s_add_sq_diff(acc1, _mm512_maskz_loadu_ps(mask, a + i),
                             _mm512_maskz_loadu_ps(mask, b + i));
    }
    return s_hsum(_mm512_add_ps(_mm512_add_ps(acc0, acc1), _mm512_add_ps(acc2, acc3)));
}

static float s_dot_avx512(const float *a, const float *b, size_t dim)
{
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    __m512 acc2 = _mm512_setzero_ps(), acc3 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 64 <= dim; i += 64) {
        acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), acc1);
        acc2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32), acc2);
        acc3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48), acc3);
    }
    for (; i + 16 <= dim; i += 16)
        acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
    if (i < dim) {
        __mmask16 mask = s_mask_first(dim - i);
        acc1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, a + i),
                               _mm512_maskz_loadu_ps(mask, b + i), acc1);
    }
    return s_hsum(_mm512_add_ps(_mm512_add_ps(acc0, acc1), _mm512_add_ps(acc2, acc3)));
}

/* One pass: the dot product and both squared norms share each pair of loads. */
static float s_cosine_avx512(const float *a, const float *b, size_t dim)
{
    __m512 dot0 = _mm512_setzero_ps(), dot1 = _mm512_setzero_ps();
    __m512 na0 = _mm512_setzero_ps(), na1 = _mm512_setzero_ps();
    __m512 nb0 = _mm512_setzero_ps(), nb1 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= dim; i += 32) {
        __m512 a0 = _mm512_loadu_ps(a + i), b0 = _mm512_loadu_ps(b + i);
        __m512 a1 = _mm512_loadu_ps(a + i + 16), b1 = _mm512_loadu_ps(b + i + 16);
        dot0 = _mm512_fmadd_ps(a0, b0, dot0);
        na0 = _mm512_fmadd_ps(a0, a0, na0);
        nb0 = _mm512_fmadd_ps(b0, b0, nb0);
        dot1 = _mm512_fmadd_ps(a1, b1, dot1);
        na1 = _mm512_fmadd_ps(a1, a1, na1);
        nb1 = _mm512_fmadd_ps(b1, b1, nb1);
    }
    if (i + 16 <= dim) {
        __m512 a0 = _mm512_loadu_ps(a + i), b0 = _mm512_loadu_ps(b + i);
        dot0 = _mm512_fmadd_ps(a0, b0, dot0);
        na0 = _mm512_fmadd_ps(a0, a0, na0);
        nb0 = _mm512_fmadd_ps(b0, b0, nb0);
        i += 16;
    }
    if (i < dim) {
        __mmask16 mask = s_mask_first(dim - i);
        __m512 a1 = _mm512_maskz_loadu_ps(mask, a + i), b1 = _mm512_maskz_loadu_ps(mask, b + i);
        dot1 = _mm512_fmadd_ps(a1, b1, dot1);
        na1 = _mm512_fmadd_ps(a1, a1, na1);
        nb1 = _mm512_fmadd_ps(b1, b1, nb1);
    }
    return dist_cosine_finish(s_hsum(_mm512_add_ps(dot0, dot1)), s_hsum(_mm512_add_ps(na0, na1)),
                              s_hsum(_mm512_add_ps(nb0, nb1)));
}

/* ------------------------------------------------------------------------ */
/* One query against many rows                                              */
/* ------------------------------------------------------------------------ */

/* Four rows a quarter of the batch apart, two accumulators each. */
static void s_l2sq_batch_avx512(const float *query, const float *base, size_t n, size_t dim,
                                size_t stride, float *out)
{
    size_t quarter = n / 4;
    for (size_t row = 0; row < quarter; row++) {
        const float *r0 = base + row * stride, *r1 = r0 + quarter * stride;
        const float *r2 = r1 + quarter * stride, *r3 = r2 + quarter * stride;
        __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
        __m512 s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
        __m512 t0 = _mm512_setzero_ps(), t1 = _mm512_setzero_ps();
        __m512 t2 = _mm512_setzero_ps(), t3 = _mm512_setzero_ps();
        size_t i = 0;
        for (; i + 32 <= dim; i += 32) {
            __m512 q = _mm512_loadu_ps(query + i), p = _mm512_loadu_ps(query + i + 16);
            s0 = s_add_sq_diff(s0, _mm512_loadu_ps(r0 + i), q);
            s1 = s_add_sq_diff(s1, _mm512_loadu_ps(r1 + i), q);
            s2 = s_add_sq_diff(s2, _mm512_loadu_ps(r2 + i), q);
            s3 = s_add_sq_diff(s3, _mm512_loadu_ps(r3 + i), q);
            t0 = s_add_sq_diff(t0, _mm512_loadu_ps(r0 + i + 16), p);
            t1 = s_add_sq_diff(t1, _mm512_loadu_ps(r1 + i + 16), p);
            t2 = s_add_sq_diff(t2, _mm512_loadu_ps(r2 + i + 16), p);
            t3 = s_add_sq_diff(t3, _mm512_loadu_ps(r3 + i + 16), p);
        }
        if (i + 16 <= dim) {
            __m512 q = _mm512_loadu_ps(query + i);
            s0 = s_add_sq_diff(s0, _mm512_loadu_ps(r0 + i), q);
            s1 = s_add_sq_diff(s1, _mm512_loadu_ps(r1 + i), q);
            s2 = s_add_sq_diff(s2, _mm512_loadu_ps(r2 + i), q);
            s3 = s_add_sq_diff(s3, _mm512_loadu_ps(r3 + i), q);
            i += 16;
        }
        if (i < dim) {
            __mmask16 mask = s_mask_first(dim - i);
            __m512 q = _mm512_maskz_loadu_ps(mask, query + i);
            t0 = s_add_sq_diff(t0, _mm512_maskz_loadu_ps(mask, r0 + i), q);
            t1 = s_add_sq_diff(t1, _mm512_maskz_loadu_ps(mask, r1 + i), q);
            t2 = s_add_sq_diff(t2, _mm512_maskz_loadu_ps(mask, r2 + i), q);
            t3 = s_add_sq_diff(t3, _mm512_maskz_loadu_ps(mask, r3 + i), q);
        }
        float sums[4];
        _mm_storeu_ps(sums, s_hsum4(_mm512_add_ps(s0, t0), _mm512_add_ps(s1, t1),
                                    _mm512_add_ps(s2, t2), _mm512_add_ps(s3, t3)));
        dist_store_quarters(out, row, quarter, sums);
    }
    for (size_t row = 4 * quarter; row < n; row++)
        out[row] = s_l2sq_avx512(query, base + row * stride, dim);
}

static void s_dot_batch_avx512(const float *query, const float *base, size_t n, size_t dim,
                               size_t stride, float *out)
{
    size_t quarter = n / 4;
    for (size_t row = 0; row < quarter; row++) {
        const float *r0 = base + row * stride, *r1 = r0 + quarter * stride;
        const float *r2 = r1 + quarter * stride, *r3 = r2 + quarter * stride;
        __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
        __m512 s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
        __m512 t0 = _mm512_setzero_ps(), t1 = _mm512_setzero_ps();
        __m512 t2 = _mm512_setzero_ps(), t3 = _mm512_setzero_ps();
        size_t i = 0;
        for (; i + 32 <= dim; i += 32) {
            __m512 q = _mm512_loadu_ps(query + i), p = _mm512_loadu_ps(query + i + 16);
            s0 = _mm512_fmadd_ps(_mm512_loadu_ps(r0 + i), q, s0);
            s1 = _mm512_fmadd_ps(_mm512_loadu_ps(r1 + i), q, s1);
            s2 = _mm512_fmadd_ps(_mm512_loadu_ps(r2 + i), q, s2);
            s3 = _mm512_fmadd_ps(_mm512_loadu_ps(r3 + i), q, s3);
            t0 = _mm512_fmadd_ps(_mm512_loadu_ps(r0 + i + 16), p, t0);
            t1 = _mm512_fmadd_ps(_mm512_loadu_ps(r1 + i + 16), p, t1);
            t2 = _mm512_fmadd_ps(_mm512_loadu_ps(r2 + i + 16), p, t2);
            t3 = _mm512_fmadd_ps(_mm512_loadu_ps(r3 + i + 16), p, t3);
        }
        if (i + 16 <= dim) {
            __m512 q = _mm512_loadu_ps(query + i);
            s0 = _mm512_fmadd_ps(_mm512_loadu_ps(r0 + i), q, s0);
            s1 = _mm512_fmadd_ps(_mm512_loadu_ps(r1 + i), q, s1);
            s2 = _mm512_fmadd_ps(_mm512_loadu_ps(r2 + i), q, s2);
            s3 = _mm512_fmadd_ps(_mm512_loadu_ps(r3 + i), q, s3);
            i += 16;
        }
        if (i < dim) {
            __mmask16 mask = s_mask_first(dim - i);
            __m512 q = _mm512_maskz_loadu_ps(mask, query + i);
            t0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, r0 + i), q, t0);
            t1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, r1 + i), q, t1);
            t2 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, r2 + i), q, t2);
            t3 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, r3 + i), q, t3);
        }
        float sums[4];
        _mm_storeu_ps(sums, s_hsum4(_mm512_add_ps(s0, t0), _mm512_add_ps(s1, t1),
                                    _mm512_add_ps(s2, t2), _mm512_add_ps(s3, t3)));
        dist_store_quarters(out, row, quarter, sums);
    }
    for (size_t row = 4 * quarter; row < n; row++)
        out[row] = s_dot_avx512(query, base + row * stride, dim);
}

const dist_kernels_t dist_kernels_avx512_table = {
    .name = "avx512",
    .impl = DIST_IMPL_AVX512,
    .l2sq = s_l2sq_avx512,
    .dot = s_dot_avx512,
    .cosine = s_cosine_avx512,
    .l2sq_batch = s_l2sq_batch_avx512,
    .dot_batch = s_dot_batch_avx512,
};
