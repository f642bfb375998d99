/*
 * quant_avx2.c - AVX2 + FMA + F16C kernels for f16 and sq8 codes, 8
 * components per register.
 *
 * Built for AVX2, FMA and F16C (vcvtph2ps, vcvtps2ph) by the pragma below,
 * and nothing else in shoal is, so this file holds only kernels; quant.c
 * hands the table out only on a CPU that reports all three.
 *
 * Same shape as distance_avx2.c (read that file's comment first): several
 * accumulators, unaligned loads, and batch kernels that take four rows a
 * quarter of the batch apart so that each is one sequential stream. What
 * differs is the load: 8 halves (16 bytes) through vcvtph2ps, or 8 codes
 * (8 bytes) through vpmovzxbd + vcvtdq2ps. A row's last dim % 8 codes are
 * copied into a zeroed 8-wide buffer first (AVX2 has no masked 8- or 16-bit
 * load), so nothing past the row is read; the query side of the tail is a
 * masked load, whose zero lanes make the padded codes contribute nothing.
 *
 * Per component, sq8 costs one more instruction than f32 (the conversion):
 * l2 is vfnmadd (shifted - scale c) then vfmadd (diff^2 + acc), dot one
 * vfmadd (weighted c + acc). Two template functions per kind, forced
 * inline, hold each loop once; the `op` they take is a constant in every
 * caller, so each kernel compiles to its own straight loop.
 */
#include "common/quant_impl.h"

#include <immintrin.h>
#include <stdint.h>
#include <string.h>

/*
 * The instruction set is set here, for every function below, and not only by
 * the Makefile's -mavx2 -mfma: F16C is not among those flags, and a file that
 * states its own target builds the same whatever flags reach it. clang and
 * gcc spell it differently.
 */
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC target("avx2,fma,f16c")
#else
#error "quant_avx2.c needs gcc or clang (target pragmas)"
#endif

#define S_INLINE static inline __attribute__((always_inline))

enum { S_L2 = 0, S_DOT = 1 };

/* Eight -1s, eight 0s: the 8 ints from s_tail_mask + 8 - r select the first r lanes. */
static const int32_t s_tail_mask[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

/* Mask for a maskload of the first `rest` floats, 0 <= rest <= 8. */
S_INLINE __m256i s_mask_first(size_t rest)
{
    return _mm256_loadu_si256((const __m256i *)(s_tail_mask + 8 - rest));
}

S_INLINE float s_hsum(__m256 v)
{
    __m128 sum = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    sum = _mm_add_ps(sum, _mm_movehl_ps(sum, sum));
    sum = _mm_add_ss(sum, _mm_movehdup_ps(sum));
    return _mm_cvtss_f32(sum);
}

/* The four horizontal sums {sum a, sum b, sum c, sum d}, in one register. */
S_INLINE __m128 s_hsum4(__m256 a, __m256 b, __m256 c, __m256 d)
{
    __m256 ab = _mm256_hadd_ps(a, b);
    __m256 cd = _mm256_hadd_ps(c, d);
    __m256 abcd = _mm256_hadd_ps(ab, cd);
    return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

/* ------------------------------------------------------------------------ */
/* Loads                                                                    */
/* ------------------------------------------------------------------------ */

/* 8 halves at p, as floats. */
S_INLINE __m256 s_load_f16(const uint16_t *p)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

/* The first rest < 8 halves at p, then zeros. */
S_INLINE __m256 s_load_f16_tail(const uint16_t *p, size_t rest)
{
    uint16_t buf[8] = {0};
    memcpy(buf, p, rest * sizeof(uint16_t));
    return s_load_f16(buf);
}

/* 8 codes at p, as floats. */
S_INLINE __m256 s_load_u8(const uint8_t *p)
{
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}

/* The first rest < 8 codes at p, then zeros. */
S_INLINE __m256 s_load_u8_tail(const uint8_t *p, size_t rest)
{
    uint8_t buf[8] = {0};
    memcpy(buf, p, rest);
    return s_load_u8(buf);
}

/* ------------------------------------------------------------------------ */
/* One step of each kernel                                                  */
/* ------------------------------------------------------------------------ */

/* f16: x decoded, q the query; acc + (x - q)^2 or acc + x q. */
S_INLINE __m256 s_f16_step(int op, __m256 acc, __m256 x, __m256 q)
{
    if (op == S_L2) {
        __m256 diff = _mm256_sub_ps(x, q);
        return _mm256_fmadd_ps(diff, diff, acc);
    }
    return _mm256_fmadd_ps(x, q, acc);
}

/*
 * sq8: c the codes, a the query's shifted (l2) or weighted (dot) values;
 * acc + (shifted - scale c)^2 or acc + weighted c. dot never uses scale, and
 * its load is dropped as dead code.
 */
S_INLINE __m256 s_sq8_step(int op, __m256 acc, __m256 c, __m256 a, __m256 scale)
{
    if (op == S_L2) {
        __m256 diff = _mm256_fnmadd_ps(scale, c, a);
        return _mm256_fmadd_ps(diff, diff, acc);
    }
    return _mm256_fmadd_ps(a, c, acc);
}

/* ------------------------------------------------------------------------ */
/* f16                                                                      */
/* ------------------------------------------------------------------------ */

static void s_f32_to_f16_avx2(const float *in, size_t count, uint16_t *out)
{
    size_t i = 0;
    for (; i + 8 <= count; i += 8)
        _mm_storeu_si128((__m128i *)(out + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < count; i++)
        out[i] = quant_f16_from_float(in[i]);
}

static void s_f16_to_f32_avx2(const uint16_t *in, size_t count, float *out)
{
    size_t i = 0;
    for (; i + 8 <= count; i += 8)
        _mm256_storeu_ps(out + i, s_load_f16(in + i));
    for (; i < count; i++)
        out[i] = quant_f16_to_float(in[i]);
}

S_INLINE float s_f16_pair(int op, const float *query, const uint16_t *code, size_t dim)
{
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    __m256 acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= dim; i += 32) {
        acc0 = s_f16_step(op, acc0, s_load_f16(code + i), _mm256_loadu_ps(query + i));
        acc1 = s_f16_step(op, acc1, s_load_f16(code + i + 8), _mm256_loadu_ps(query + i + 8));
        acc2 = s_f16_step(op, acc2, s_load_f16(code + i + 16), _mm256_loadu_ps(query + i + 16));
        acc3 = s_f16_step(op, acc3, s_load_f16(code + i + 24), _mm256_loadu_ps(query + i + 24));
    }
    for (; i + 8 <= dim; i += 8)
        acc0 = s_f16_step(op, acc0, s_load_f16(code + i), _mm256_loadu_ps(query + i));
    if (i < dim)
        acc1 = s_f16_step(op, acc1, s_load_f16_tail(code + i, dim - i),
                          _mm256_maskload_ps(query + i, s_mask_first(dim - i)));
    return s_hsum(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
}

/* Four rows a quarter of the batch apart, two accumulators each. */
S_INLINE void s_f16_batch(int op, const float *query, const uint16_t *codes, size_t n, size_t dim,
                          size_t stride, float *out)
{
    size_t quarter = n / 4;
    for (size_t row = 0; row < quarter; row++) {
        const uint16_t *r0 = codes + row * stride, *r1 = r0 + quarter * stride;
        const uint16_t *r2 = r1 + quarter * stride, *r3 = r2 + quarter * stride;
        __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
        __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
        __m256 t0 = _mm256_setzero_ps(), t1 = _mm256_setzero_ps();
        __m256 t2 = _mm256_setzero_ps(), t3 = _mm256_setzero_ps();
        size_t i = 0;
        for (; i + 16 <= dim; i += 16) {
            __m256 q = _mm256_loadu_ps(query + i), p = _mm256_loadu_ps(query + i + 8);
            s0 = s_f16_step(op, s0, s_load_f16(r0 + i), q);
            s1 = s_f16_step(op, s1, s_load_f16(r1 + i), q);
            s2 = s_f16_step(op, s2, s_load_f16(r2 + i), q);
            s3 = s_f16_step(op, s3, s_load_f16(r3 + i), q);
            t0 = s_f16_step(op, t0, s_load_f16(r0 + i + 8), p);
            t1 = s_f16_step(op, t1, s_load_f16(r1 + i + 8), p);
            t2 = s_f16_step(op, t2, s_load_f16(r2 + i + 8), p);
            t3 = s_f16_step(op, t3, s_load_f16(r3 + i + 8), p);
        }
        if (i + 8 <= dim) {
            __m256 q = _mm256_loadu_ps(query + i);
            s0 = s_f16_step(op, s0, s_load_f16(r0 + i), q);
            s1 = s_f16_step(op, s1, s_load_f16(r1 + i), q);
            s2 = s_f16_step(op, s2, s_load_f16(r2 + i), q);
            s3 = s_f16_step(op, s3, s_load_f16(r3 + i), q);
            i += 8;
        }
        if (i < dim) {
            size_t rest = dim - i;
            __m256 q = _mm256_maskload_ps(query + i, s_mask_first(rest));
            t0 = s_f16_step(op, t0, s_load_f16_tail(r0 + i, rest), q);
            t1 = s_f16_step(op, t1, s_load_f16_tail(r1 + i, rest), q);
            t2 = s_f16_step(op, t2, s_load_f16_tail(r2 + i, rest), q);
            t3 = s_f16_step(op, t3, s_load_f16_tail(r3 + i, rest), q);
        }
        float sums[4];
        _mm_storeu_ps(sums, s_hsum4(_mm256_add_ps(s0, t0), _mm256_add_ps(s1, t1),
                                    _mm256_add_ps(s2, t2), _mm256_add_ps(s3, t3)));
        quant_store_quarters(out, row, quarter, sums);
    }
    for (size_t row = 4 * quarter; row < n; row++)
        out[row] = s_f16_pair(op, query, codes + row * stride, dim);
}

static float s_f16_l2sq_avx2(const float *query, const uint16_t *code, size_t dim)
{
    return s_f16_pair(S_L2, query, code, dim);
}

static float s_f16_dot_avx2(const float *query, const uint16_t *code, size_t dim)
{
    return s_f16_pair(S_DOT, query, code, dim);
}

static void s_f16_l2sq_batch_avx2(const float *query, const uint16_t *codes, size_t n, size_t dim,
                                  size_t stride, float *out)
{
    s_f16_batch(S_L2, query, codes, n, dim, stride, out);
}

static void s_f16_dot_batch_avx2(const float *query, const uint16_t *codes, size_t n, size_t dim,
                                 size_t stride, float *out)
{
    s_f16_batch(S_DOT, query, codes, n, dim, stride, out);
}

/* ------------------------------------------------------------------------ */
/* sq8                                                                      */
/* ------------------------------------------------------------------------ */

S_INLINE float s_sq8_pair(int op, const quant_sq8_query_t *pq, const uint8_t *code)
{
    const float *a = op == S_L2 ? pq->shifted : pq->weighted, *scale = pq->scale;
    size_t dim = pq->dim;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    __m256 acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= dim; i += 32) {
        acc0 = s_sq8_step(op, acc0, s_load_u8(code + i), _mm256_loadu_ps(a + i),
                          _mm256_loadu_ps(scale + i));
        acc1 = s_sq8_step(op, acc1, s_load_u8(code + i + 8), _mm256_loadu_ps(a + i + 8),
                          _mm256_loadu_ps(scale + i + 8));
        acc2 = s_sq8_step(op, acc2, s_load_u8(code + i + 16), _mm256_loadu_ps(a + i + 16),
                          _mm256_loadu_ps(scale + i + 16));
        acc3 = s_sq8_step(op, acc3, s_load_u8(code + i + 24), _mm256_loadu_ps(a + i + 24),
                          _mm256_loadu_ps(scale + i + 24));
    }
    for (; i + 8 <= dim; i += 8)
        acc0 = s_sq8_step(op, acc0, s_load_u8(code + i), _mm256_loadu_ps(a + i),
                          _mm256_loadu_ps(scale + i));
    if (i < dim) {
        __m256i mask = s_mask_first(dim - i);
        acc1 = s_sq8_step(op, acc1, s_load_u8_tail(code + i, dim - i),
                          _mm256_maskload_ps(a + i, mask), _mm256_maskload_ps(scale + i, mask));
    }
    float sum = s_hsum(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
    return op == S_L2 ? sum : pq->dot_offset + sum;
}

/* Four rows a quarter of the batch apart; the query's loads are shared by all four. */
S_INLINE void s_sq8_batch(int op, const quant_sq8_query_t *pq, const uint8_t *codes, size_t n,
                          size_t stride, float *out)
{
    const float *a = op == S_L2 ? pq->shifted : pq->weighted, *scale = pq->scale;
    size_t dim = pq->dim, quarter = n / 4;
    for (size_t row = 0; row < quarter; row++) {
        const uint8_t *r0 = codes + row * stride, *r1 = r0 + quarter * stride;
        const uint8_t *r2 = r1 + quarter * stride, *r3 = r2 + quarter * stride;
        __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
        __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
        __m256 t0 = _mm256_setzero_ps(), t1 = _mm256_setzero_ps();
        __m256 t2 = _mm256_setzero_ps(), t3 = _mm256_setzero_ps();
        size_t i = 0;
        for (; i + 16 <= dim; i += 16) {
            __m256 av = _mm256_loadu_ps(a + i), sv = _mm256_loadu_ps(scale + i);
            __m256 aw = _mm256_loadu_ps(a + i + 8), sw = _mm256_loadu_ps(scale + i + 8);
            s0 = s_sq8_step(op, s0, s_load_u8(r0 + i), av, sv);
            s1 = s_sq8_step(op, s1, s_load_u8(r1 + i), av, sv);
            s2 = s_sq8_step(op, s2, s_load_u8(r2 + i), av, sv);
            s3 = s_sq8_step(op, s3, s_load_u8(r3 + i), av, sv);
            t0 = s_sq8_step(op, t0, s_load_u8(r0 + i + 8), aw, sw);
            t1 = s_sq8_step(op, t1, s_load_u8(r1 + i + 8), aw, sw);
            t2 = s_sq8_step(op, t2, s_load_u8(r2 + i + 8), aw, sw);
            t3 = s_sq8_step(op, t3, s_load_u8(r3 + i + 8), aw, sw);
        }
        if (i + 8 <= dim) {
            __m256 av = _mm256_loadu_ps(a + i), sv = _mm256_loadu_ps(scale + i);
            s0 = s_sq8_step(op, s0, s_load_u8(r0 + i), av, sv);
            s1 = s_sq8_step(op, s1, s_load_u8(r1 + i), av, sv);
            s2 = s_sq8_step(op, s2, s_load_u8(r2 + i), av, sv);
            s3 = s_sq8_step(op, s3, s_load_u8(r3 + i), av, sv);
            i += 8;
        }
        if (i < dim) {
            size_t rest = dim - i;
            __m256i mask = s_mask_first(rest);
            __m256 av = _mm256_maskload_ps(a + i, mask), sv = _mm256_maskload_ps(scale + i, mask);
            t0 = s_sq8_step(op, t0, s_load_u8_tail(r0 + i, rest), av, sv);
            t1 = s_sq8_step(op, t1, s_load_u8_tail(r1 + i, rest), av, sv);
            t2 = s_sq8_step(op, t2, s_load_u8_tail(r2 + i, rest), av, sv);
            t3 = s_sq8_step(op, t3, s_load_u8_tail(r3 + i, rest), av, sv);
        }
        float sums[4];
        _mm_storeu_ps(sums, s_hsum4(_mm256_add_ps(s0, t0), _mm256_add_ps(s1, t1),
                                    _mm256_add_ps(s2, t2), _mm256_add_ps(s3, t3)));
        if (op == S_DOT)
            for (int k = 0; k < 4; k++)
                sums[k] += pq->dot_offset;
        quant_store_quarters(out, row, quarter, sums);
    }
    for (size_t row = 4 * quarter; row < n; row++)
        out[row] = s_sq8_pair(op, pq, codes + row * stride);
}

static float s_sq8_l2sq_avx2(const quant_sq8_query_t *pq, const uint8_t *code)
{
    return s_sq8_pair(S_L2, pq, code);
}

static float s_sq8_dot_avx2(const quant_sq8_query_t *pq, const uint8_t *code)
{
    return s_sq8_pair(S_DOT, pq, code);
}

static void s_sq8_l2sq_batch_avx2(const quant_sq8_query_t *pq, const uint8_t *codes, size_t n,
                                  size_t stride, float *out)
{
    s_sq8_batch(S_L2, pq, codes, n, stride, out);
}

static void s_sq8_dot_batch_avx2(const quant_sq8_query_t *pq, const uint8_t *codes, size_t n,
                                 size_t stride, float *out)
{
    s_sq8_batch(S_DOT, pq, codes, n, stride, out);
}

/* scale (a - b) for 8 codes: the difference is exact in int32. */
S_INLINE __m256 s_sym_step(const float *scale, const uint8_t *a, const uint8_t *b)
{
    __m256i da = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)a));
    __m256i db = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)b));
    return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(da, db)), _mm256_loadu_ps(scale));
}

static float s_sq8_sym_l2sq_avx2(const float *scale, const uint8_t *a, const uint8_t *b, size_t dim)
{
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= dim; i += 16) {
        __m256 step0 = s_sym_step(scale + i, a + i, b + i);
        __m256 step1 = s_sym_step(scale + i + 8, a + i + 8, b + i + 8);
        acc0 = _mm256_fmadd_ps(step0, step0, acc0);
        acc1 = _mm256_fmadd_ps(step1, step1, acc1);
    }
    if (i + 8 <= dim) {
        __m256 step = s_sym_step(scale + i, a + i, b + i);
        acc0 = _mm256_fmadd_ps(step, step, acc0);
        i += 8;
    }
    if (i < dim) {
        size_t rest = dim - i;
        /* Both tails zero-padded: padded lanes differ by 0, and their scale is masked to 0. */
        __m256 diff = _mm256_sub_ps(s_load_u8_tail(a + i, rest), s_load_u8_tail(b + i, rest));
        __m256 step = _mm256_mul_ps(diff, _mm256_maskload_ps(scale + i, s_mask_first(rest)));
        acc1 = _mm256_fmadd_ps(step, step, acc1);
    }
    return s_hsum(_mm256_add_ps(acc0, acc1));
}

const quant_kernels_t quant_kernels_avx2_table = {
    .name = "avx2",
    .impl = DIST_IMPL_AVX2,
    .f32_to_f16 = s_f32_to_f16_avx2,
    .f16_to_f32 = s_f16_to_f32_avx2,
    .f16_l2sq = s_f16_l2sq_avx2,
    .f16_dot = s_f16_dot_avx2,
    .f16_l2sq_batch = s_f16_l2sq_batch_avx2,
    .f16_dot_batch = s_f16_dot_batch_avx2,
    .sq8_l2sq = s_sq8_l2sq_avx2,
    .sq8_dot = s_sq8_dot_avx2,
    .sq8_l2sq_batch = s_sq8_l2sq_batch_avx2,
    .sq8_dot_batch = s_sq8_dot_batch_avx2,
    .sq8_sym_l2sq = s_sq8_sym_l2sq_avx2,
};

#if defined(__clang__)
#pragma clang attribute pop
#endif
