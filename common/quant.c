/*
 * quant.c - see quant.h. Storage kind names, the scalar reference (f16
 * conversions and kernels), the choice of kernel table, the sq8 quantizer and
 * its record, a query's precomputation, and the error bounds.
 *
 * Like distance.c's, the scalar kernels are the plainest loops, one float
 * accumulator summed in index order (ISO C mode: no contraction into FMAs),
 * and they are what the SIMD tables are tested against.
 *
 * Encoding, decoding, training and the bounds work in double: none of them is
 * an inner loop, and double makes their rounding small enough to be covered
 * by the margins quant.h states (2^-21 of a step, two u of a distance).
 */
#include "common/quant.h"
#include "common/log.h"
#include "common/quant_impl.h"

#include <assert.h>
#include <cpuid.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* float's unit roundoff, 2^-24. */
#define S_U 0x1p-24

/* The encoder's margin on half a step: |e_i| <= scale_i (1/2 + 2^-21). */
#define S_HALF_STEP (0.5 + 0x1p-21)

/* binary16 rounding: |x - X| <= 2^-11 |X| for normal X, 2^-25 below 2^-14. */
#define S_F16_REL 0x1p-11
#define S_F16_ABS 0x1p-25

static_assert(sizeof(float) == 4, "the record stores floats as 4-byte IEEE binary32");

/* ------------------------------------------------------------------------ */
/* Storage kinds                                                            */
/* ------------------------------------------------------------------------ */

static const char *const s_kind_names[QUANT_KIND_COUNT] = {"f32", "f16", "sq8"};

const char *quant_kind_name(quant_kind_t kind)
{
    if ((unsigned)kind >= QUANT_KIND_COUNT)
        return "?";
    return s_kind_names[kind];
}

int quant_kind_parse(const char *text, quant_kind_t *kind, shoal_err_t *err)
{
    if (!text)
        return shoal_err_set(err, SHOAL_EINVAL, "storage is missing; expected f32|f16|sq8");
    for (int k = 0; k < QUANT_KIND_COUNT; k++) {
        if (strcasecmp(text, s_kind_names[k]) == 0) {
            *kind = (quant_kind_t)k;
            return SHOAL_OK;
        }
    }
    return shoal_err_set(err, SHOAL_EINVAL, "storage \"%.64s\" is not one of f32|f16|sq8", text);
}

size_t quant_code_bytes(quant_kind_t kind, size_t dim)
{
    switch (kind) {
    case QUANT_F32:
        return 4 * dim;
    case QUANT_F16:
        return 2 * dim;
    case QUANT_SQ8:
        return dim;
    case QUANT_KIND_COUNT:
        break;
    }
    assert(!"quant_code_bytes: invalid kind");
    return 0;
}

/* ------------------------------------------------------------------------ */
/* f16: the scalar reference conversions                                    */
/* ------------------------------------------------------------------------ */

/*
 * binary32: 1 sign, 8 exponent (bias 127), 23 mantissa bits; binary16: 1, 5
 * (bias 15), 10. Magnitudes are compared as integers, which orders them like
 * the values they encode.
 */
uint16_t quant_f16_from_float(float value)
{
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    uint32_t sign = (bits >> 16) & 0x8000u;
    uint32_t mag = bits & 0x7fffffffu;

    if (mag >= 0x7f800000u) {
        if (mag == 0x7f800000u)
            return (uint16_t)(sign | 0x7c00u);
        /* NaN: quiet bit set, the top 9 payload bits kept (as vcvtps2ph). */
        return (uint16_t)(sign | 0x7e00u | ((mag >> 13) & 0x3ffu));
    }
    /* 65520 is halfway between 65504 and 2^16; the tie goes to the even one, 2^16 = inf. */
    if (mag >= 0x477ff000u)
        return (uint16_t)(sign | 0x7c00u);
    if (mag >= 0x38800000u) {
        /* A normal half: re-bias the exponent (127 - 15 = 112), keep 10 mantissa bits. */
        uint32_t half = (mag >> 13) - (112u << 10);
        uint32_t rest = mag & 0x1fffu;
        if (rest > 0x1000u || (rest == 0x1000u && (half & 1u)))
            half++; /* a carry into the exponent is the right answer */
        return (uint16_t)(sign | half);
    }
    /* At most 2^-25, half the smallest subnormal: rounds to zero (2^-25 ties to even 0). */
    if (mag <= 0x33000000u)
        return (uint16_t)sign;
    /* A subnormal half counts units of 2^-24: mantissa * 2^(exp - 150 + 24). */
    uint32_t exp = mag >> 23;
    uint32_t mant = (mag & 0x7fffffu) | 0x800000u;
    unsigned shift = 126u - exp; /* 14..24 */
    uint32_t half = mant >> shift;
    uint32_t rest = mant & ((1u << shift) - 1u), halfway = 1u << (shift - 1u);
    if (rest > halfway || (rest == halfway && (half & 1u)))
        half++; /* 0x3ff + 1 = 0x400 is the smallest normal: right again */
    return (uint16_t)(sign | half);
}

float quant_f16_to_float(uint16_t half)
{
    uint32_t sign = (uint32_t)(half & 0x8000u) << 16;
    uint32_t exp = (half >> 10) & 0x1fu, mant = half & 0x3ffu, bits;
    if (exp == 0x1fu) {
        /* inf, or a NaN made quiet with its payload kept (as vcvtph2ps). */
        bits = sign | 0x7f800000u | (mant ? 0x400000u | (mant << 13) : 0u);
    } else if (exp != 0) {
        bits = sign | ((exp + 112u) << 23) | (mant << 13);
    } else if (mant == 0) {
        bits = sign;
    } else {
        /* Subnormal: mant * 2^-24, normalised; a float holds it exactly. */
        exp = 113u;
        while (!(mant & 0x400u)) {
            mant <<= 1;
            exp--;
        }
        bits = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
    }
    float value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

/* ------------------------------------------------------------------------ */
/* Scalar reference kernels                                                 */
/* ------------------------------------------------------------------------ */

static void s_f32_to_f16_scalar(const float *in, size_t count, uint16_t *out)
{
    for (size_t i = 0; i < count; i++)
        out[i] = quant_f16_from_float(in[i]);
}

static void s_f16_to_f32_scalar(const uint16_t *in, size_t count, float *out)
{
    for (size_t i = 0; i < count; i++)
        out[i] = quant_f16_to_float(in[i]);
}

static float s_f16_l2sq_scalar(const float *query, const uint16_t *code, size_t dim)
{
    float sum = 0.0f;
    for (size_t i = 0; i < dim; i++) {
        float diff = query[i] - quant_f16_to_float(code[i]);
        sum += diff * diff;
    }
    return sum;
}

static float s_f16_dot_scalar(const float *query, const uint16_t *code, size_t dim)
{
    float sum = 0.0f;
    for (size_t i = 0; i < dim; i++)
        sum += query[i] * quant_f16_to_float(code[i]);
    return sum;
}

static void s_f16_l2sq_batch_scalar(const float *query, const uint16_t *codes, size_t n, size_t dim,
                                    size_t stride, float *out)
{
    for (size_t row = 0; row < n; row++)
        out[row] = s_f16_l2sq_scalar(query, codes + row * stride, dim);
}

static void s_f16_dot_batch_scalar(const float *query, const uint16_t *codes, size_t n, size_t dim,
                                   size_t stride, float *out)
{
    for (size_t row = 0; row < n; row++)
        out[row] = s_f16_dot_scalar(query, codes + row * stride, dim);
}

static float s_sq8_l2sq_scalar(const quant_sq8_query_t *pq, const uint8_t *code)
{
    float sum = 0.0f;
    for (size_t i = 0; i < pq->dim; i++) {
        float diff = pq->shifted[i] - pq->scale[i] * (float)code[i];
        sum += diff * diff;
    }
    return sum;
}

static float s_sq8_dot_scalar(const quant_sq8_query_t *pq, const uint8_t *code)
{
    float sum = 0.0f;
    for (size_t i = 0; i < pq->dim; i++)
        sum += pq->weighted[i] * (float)code[i];
    return pq->dot_offset + sum;
}

static void s_sq8_l2sq_batch_scalar(const quant_sq8_query_t *pq, const uint8_t *codes, size_t n,
                                    size_t stride, float *out)
{
    for (size_t row = 0; row < n; row++)
        out[row] = s_sq8_l2sq_scalar(pq, codes + row * stride);
}

static void s_sq8_dot_batch_scalar(const quant_sq8_query_t *pq, const uint8_t *codes, size_t n,
                                   size_t stride, float *out)
{
    for (size_t row = 0; row < n; row++)
        out[row] = s_sq8_dot_scalar(pq, codes + row * stride);
}

/* The code difference is exact in int; one rounding each for the product and the sum. */
static float s_sq8_sym_l2sq_scalar(const float *scale, const uint8_t *a, const uint8_t *b,
                                   size_t dim)
{
    float sum = 0.0f;
    for (size_t i = 0; i < dim; i++) {
        float step = scale[i] * (float)((int)a[i] - (int)b[i]);
        sum += step * step;
    }
    return sum;
}

const quant_kernels_t quant_kernels_scalar_table = {
    .name = "scalar",
    .impl = DIST_IMPL_SCALAR,
    .f32_to_f16 = s_f32_to_f16_scalar,
    .f16_to_f32 = s_f16_to_f32_scalar,
    .f16_l2sq = s_f16_l2sq_scalar,
    .f16_dot = s_f16_dot_scalar,
    .f16_l2sq_batch = s_f16_l2sq_batch_scalar,
    .f16_dot_batch = s_f16_dot_batch_scalar,
    .sq8_l2sq = s_sq8_l2sq_scalar,
    .sq8_dot = s_sq8_dot_scalar,
    .sq8_l2sq_batch = s_sq8_l2sq_batch_scalar,
    .sq8_dot_batch = s_sq8_dot_batch_scalar,
    .sq8_sym_l2sq = s_sq8_sym_l2sq_scalar,
};

/* ------------------------------------------------------------------------ */
/* Choosing an implementation                                               */
/* ------------------------------------------------------------------------ */

/* Indexed by dist_impl_t. */
static const quant_kernels_t *const s_tables[DIST_IMPL_COUNT] = {
    &quant_kernels_scalar_table,
    &quant_kernels_avx2_table,
    &quant_kernels_avx512_table,
};

/*
 * F16C (CPUID.1:ECX bit 29). AVX2 does not imply it, and a hypervisor may
 * hide it while showing AVX2, so the AVX2 table needs it checked on its own.
 * The AVX-512 table converts with AVX-512F's own vcvtph2ps/vcvtps2ph forms.
 * The OS's saving of YMM/ZMM state is already part of distance.c's check.
 */
static int s_cpu_has_f16c(void)
{
    unsigned eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx))
        return 0;
    return (ecx & bit_F16C) != 0;
}

static int s_cpu_supports(dist_impl_t impl)
{
    if ((unsigned)impl >= DIST_IMPL_COUNT || !dist_kernels_get(impl))
        return 0;
    return impl != DIST_IMPL_AVX2 || s_cpu_has_f16c();
}

static pthread_once_t s_choose_once = PTHREAD_ONCE_INIT;
static const quant_kernels_t *s_chosen; /* written once under s_choose_once */

/*
 * distance.c has already weighed the CPU and SHOAL_SIMD; following its choice
 * keeps one implementation per process for both modules and one place that
 * reads the variable.
 */
static void s_choose_kernels(void)
{
    dist_impl_t impl = dist_kernels()->impl;
    if (!s_cpu_supports(impl)) {
        log_warn("quant kernels: the CPU has %s but not F16C; using scalar", dist_kernels()->name);
        impl = DIST_IMPL_SCALAR;
    }
    s_chosen = s_tables[impl];
    log_debug("quant kernels: %s", s_chosen->name);
}

const quant_kernels_t *quant_kernels(void)
{
    pthread_once(&s_choose_once, s_choose_kernels);
    return s_chosen;
}

const quant_kernels_t *quant_kernels_get(dist_impl_t impl)
{
    if (!s_cpu_supports(impl))
        return NULL;
    return s_tables[impl];
}

float quant_distance(shoal_metric_t metric, float raw)
{
    switch (metric) {
    case SHOAL_METRIC_L2:
        return raw;
    case SHOAL_METRIC_IP:
        return -raw;
    case SHOAL_METRIC_COSINE:
        return 1.0f - raw;
    }
    /* Metrics are parsed and checked at every boundary; this is a bug. */
    assert(!"quant_distance: invalid metric");
    return NAN;
}

/* ------------------------------------------------------------------------ */
/* f16 rows                                                                 */
/* ------------------------------------------------------------------------ */

int quant_f16_encode(const float *rows, size_t n, size_t dim, uint16_t *codes, shoal_err_t *err)
{
    for (size_t row = 0; row < n; row++) {
        for (size_t i = 0; i < dim; i++) {
            float v = rows[row * dim + i];
            if (!isfinite(v))
                return shoal_err_set(err, SHOAL_EINVAL, "row %zu dim %zu is not finite (%s)", row,
                                     i, isnan(v) ? "nan" : "inf");
            if (fabsf(v) >= QUANT_F16_OVERFLOW)
                return shoal_err_set(err, SHOAL_EINVAL,
                                     "row %zu dim %zu: %g overflows f16 (largest %g)", row, i,
                                     (double)v, (double)QUANT_F16_MAX);
        }
    }
    quant_kernels()->f32_to_f16(rows, n * dim, codes);
    return SHOAL_OK;
}

void quant_f16_decode(const uint16_t *codes, size_t count, float *out)
{
    quant_kernels()->f16_to_f32(codes, count, out);
}

/* ------------------------------------------------------------------------ */
/* sq8 quantizer                                                            */
/* ------------------------------------------------------------------------ */

struct quant_sq8 {
    size_t dim;        /* components per row */
    float *offset;     /* dim floats: each dimension's trained minimum */
    float *scale;      /* dim floats: its step, 0 for a constant dimension */
    double *inv_scale; /* dim doubles: 1 / scale, 0 where scale is 0 (for encoding) */
    float err_norm;    /* |h|_2 with h_i = scale_i (1/2 + 2^-21), rounded up */
};

/* The smallest float >= v (v finite or +inf). */
static float s_float_up(double v)
{
    float f = (float)v;
    if ((double)f < v)
        f = nextafterf(f, INFINITY);
    return f;
}

/* The largest float <= v. */
static float s_float_down(double v)
{
    float f = (float)v;
    if ((double)f > v)
        f = nextafterf(f, -INFINITY);
    return f;
}

/*
 * Whether one dimension's offset and scale can be used: 0, or -1 with the
 * reason in why. The top of the range must fit a float, or decoding code 255
 * would give infinity.
 */
static int s_check_dim(float offset, float scale, char *why, size_t cap)
{
    if (!isfinite(offset)) {
        snprintf(why, cap, "offset %g is not finite", (double)offset);
        return -1;
    }
    if (!isfinite(scale)) {
        snprintf(why, cap, "scale %g is not finite", (double)scale);
        return -1;
    }
    if (signbit(scale)) {
        snprintf(why, cap, "scale %g is negative", (double)scale);
        return -1;
    }
    double top = (double)offset + 255.0 * (double)scale;
    if (top > FLT_MAX) {
        snprintf(why, cap, "range top offset + 255 scale = %g does not fit a float", top);
        return -1;
    }
    return 0;
}

/* An empty quantizer of dimension dim, or NULL. */
static quant_sq8_t *s_sq8_alloc(size_t dim)
{
    quant_sq8_t *sq = calloc(1, sizeof *sq);
    if (!sq)
        return NULL;
    sq->dim = dim;
    sq->offset = malloc(dim * sizeof(float));
    sq->scale = malloc(dim * sizeof(float));
    sq->inv_scale = malloc(dim * sizeof(double));
    if (!sq->offset || !sq->scale || !sq->inv_scale)
        quant_sq8_destroy(&sq);
    return sq;
}

/* Fills the derived fields once offset and scale are set. */
static void s_sq8_finish(quant_sq8_t *sq)
{
    double sum = 0.0;
    for (size_t i = 0; i < sq->dim; i++) {
        double scale = sq->scale[i];
        sq->inv_scale[i] = scale > 0.0 ? 1.0 / scale : 0.0;
        double half = scale * S_HALF_STEP;
        sum += half * half;
    }
    /* A double sum of dim <= 2^16 squares is within 2^-37 of the exact one. */
    sq->err_norm = s_float_up(sqrt(sum) * (1.0 + 0x1p-30));
}

quant_sq8_t *quant_sq8_new(const float *offset, const float *scale, size_t dim, shoal_err_t *err)
{
    if (dim < 1 || dim > QUANT_DIM_MAX) {
        shoal_err_set(err, SHOAL_EINVAL, "sq8 quantizer: dim %zu outside 1..%d", dim,
                      QUANT_DIM_MAX);
        return NULL;
    }
    char why[160];
    for (size_t i = 0; i < dim; i++) {
        if (s_check_dim(offset[i], scale[i], why, sizeof why) != 0) {
            shoal_err_set(err, SHOAL_EINVAL, "sq8 quantizer: dim %zu: %s", i, why);
            return NULL;
        }
    }
    quant_sq8_t *sq = s_sq8_alloc(dim);
    if (!sq) {
        shoal_err_set(err, SHOAL_ENOMEM, "sq8 quantizer: out of memory for dim %zu", dim);
        return NULL;
    }
    memcpy(sq->offset, offset, dim * sizeof(float));
    memcpy(sq->scale, scale, dim * sizeof(float));
    s_sq8_finish(sq);
    return sq;
}

/*
 * The step for a range [lo, hi]: (hi - lo) / 255, rounded to a float and then
 * raised, ulp by ulp, until lo + 255 step >= hi. Without the raise a tiny
 * range could round to a zero step and leave hi a whole range from its code.
 */
static float s_scale_for(float lo, float hi)
{
    if (!(hi > lo))
        return 0.0f;
    float scale = (float)(((double)hi - (double)lo) / 255.0);
    while ((double)lo + 255.0 * (double)scale < (double)hi)
        scale = nextafterf(scale, INFINITY);
    return scale;
}

quant_sq8_t *quant_sq8_train(const float *rows, size_t n, size_t dim, shoal_err_t *err)
{
    if (n == 0) {
        shoal_err_set(err, SHOAL_EINVAL, "sq8 training needs at least 1 row, got 0");
        return NULL;
    }
    if (dim < 1 || dim > QUANT_DIM_MAX) {
        shoal_err_set(err, SHOAL_EINVAL, "sq8 training: dim %zu outside 1..%d", dim, QUANT_DIM_MAX);
        return NULL;
    }
    quant_sq8_t *sq = s_sq8_alloc(dim);
    float *hi = malloc(dim * sizeof(float));
    if (!sq || !hi) {
        shoal_err_set(err, SHOAL_ENOMEM, "sq8 training: out of memory for dim %zu", dim);
        goto fail;
    }
    /* offset holds the running minimum. */
    for (size_t row = 0; row < n; row++) {
        const float *v = rows + row * dim;
        for (size_t i = 0; i < dim; i++) {
            if (!isfinite(v[i])) {
                shoal_err_set(err, SHOAL_EINVAL, "sq8 training: row %zu dim %zu is not finite (%s)",
                              row, i, isnan(v[i]) ? "nan" : "inf");
                goto fail;
            }
            if (row == 0 || v[i] < sq->offset[i])
                sq->offset[i] = v[i];
            if (row == 0 || v[i] > hi[i])
                hi[i] = v[i];
        }
    }
    char why[160];
    for (size_t i = 0; i < dim; i++) {
        sq->scale[i] = s_scale_for(sq->offset[i], hi[i]);
        if (s_check_dim(sq->offset[i], sq->scale[i], why, sizeof why) != 0) {
            shoal_err_set(err, SHOAL_EINVAL, "sq8 training: dim %zu: range [%g, %g]: %s", i,
                          (double)sq->offset[i], (double)hi[i], why);
            goto fail;
        }
    }
    free(hi);
    s_sq8_finish(sq);
    return sq;

fail:
    free(hi);
    quant_sq8_destroy(&sq);
    return NULL;
}

void quant_sq8_destroy(quant_sq8_t **sq_p)
{
    if (!sq_p || !*sq_p)
        return;
    quant_sq8_t *sq = *sq_p;
    free(sq->offset);
    free(sq->scale);
    free(sq->inv_scale);
    free(sq);
    *sq_p = NULL;
}

size_t quant_sq8_dim(const quant_sq8_t *sq)
{
    return sq->dim;
}

const float *quant_sq8_offset(const quant_sq8_t *sq)
{
    return sq->offset;
}

const float *quant_sq8_scale(const quant_sq8_t *sq)
{
    return sq->scale;
}

float quant_sq8_err_norm(const quant_sq8_t *sq)
{
    return sq->err_norm;
}

/*
 * pos = (x - offset) / scale in double is within 2^-43 of the exact quotient
 * for |pos| <= 256 (three roundings of 2^-53), so rounding it leaves the code
 * within 1/2 + 2^-43 steps of x: inside S_HALF_STEP. A value is clamped when
 * pos is outside [-1/2, 255 + 1/2], where that stops holding.
 */
size_t quant_sq8_encode(const quant_sq8_t *sq, const float *rows, size_t n, uint8_t *codes,
                        uint8_t *clamped)
{
    size_t dim = sq->dim, nclamped = 0;
    for (size_t row = 0; row < n; row++) {
        const float *v = rows + row * dim;
        uint8_t *code = codes + row * dim;
        int row_clamped = 0;
        for (size_t i = 0; i < dim; i++) {
            double x = v[i];
            if (sq->scale[i] == 0.0f) {
                /* A constant dimension: code 0 decodes to the constant, exactly. */
                code[i] = 0;
                row_clamped |= x != (double)sq->offset[i];
                continue;
            }
            double pos = (x - (double)sq->offset[i]) * sq->inv_scale[i];
            row_clamped |= !(pos >= -0.5 && pos <= 255.5);
            if (!(pos > 0.0)) /* also NaN */
                code[i] = 0;
            else if (pos >= 255.0)
                code[i] = 255;
            else
                code[i] = (uint8_t)(pos + 0.5);
        }
        if (clamped)
            clamped[row] = (uint8_t)row_clamped;
        nclamped += (size_t)row_clamped;
    }
    return nclamped;
}

/* scale * code is exact in double (24 + 8 bits); one rounding to double, one to float. */
void quant_sq8_decode(const quant_sq8_t *sq, const uint8_t *codes, size_t n, float *rows)
{
    size_t dim = sq->dim;
    for (size_t row = 0; row < n; row++)
        for (size_t i = 0; i < dim; i++)
            rows[row * dim + i] =
                (float)((double)sq->offset[i] + (double)sq->scale[i] * codes[row * dim + i]);
}

/*
 * In double, scale * code is exact, the decoded value is off by at most 2^-53
 * of itself (none when the product is 0: a constant dimension stays exact)
 * and x - X by 2^-53 of itself; each component's error is widened by twice
 * that, and the norm by 2^-30, more than the sum and the square root can
 * lose: the result is never below the true |x - X|_2.
 */
float quant_sq8_residual(const quant_sq8_t *sq, const float *row, const uint8_t *code)
{
    double sum = 0.0;
    for (size_t i = 0; i < sq->dim; i++) {
        double step = (double)sq->scale[i] * code[i];
        double decoded = (double)sq->offset[i] + step;
        double e = fabs((double)row[i] - decoded) * (1.0 + 0x1p-52);
        if (step != 0.0)
            e += 0x1p-52 * fabs(decoded);
        sum += e * e;
    }
    return s_float_up(sqrt(sum) * (1.0 + 0x1p-30));
}

/* ------------------------------------------------------------------------ */
/* The sq8 record                                                           */
/* ------------------------------------------------------------------------ */

/* The header as laid out on disk; written and read field by field, little-endian. */
typedef struct {
    uint32_t magic;    /* QUANT_SQ8_MAGIC */
    uint32_t version;  /* QUANT_SQ8_VERSION */
    uint32_t dim;      /* 1..QUANT_DIM_MAX */
    uint32_t reserved; /* 0 */
} s_sq8_header_t;

static_assert(sizeof(s_sq8_header_t) == QUANT_SQ8_HEADER_BYTES, "sq8 record header is 16 bytes");
static_assert(offsetof(s_sq8_header_t, dim) == 8, "sq8 record: dim at byte 8");
static_assert(offsetof(s_sq8_header_t, reserved) == 12, "sq8 record: reserved at byte 12");

static void s_put_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static uint32_t s_get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void s_put_float(uint8_t *p, float v)
{
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    s_put_le32(p, bits);
}

static float s_get_float(const uint8_t *p)
{
    uint32_t bits = s_get_le32(p);
    float v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

size_t quant_sq8_record_size(size_t dim)
{
    return QUANT_SQ8_HEADER_BYTES + 8 * dim;
}

void quant_sq8_record_write(const quant_sq8_t *sq, uint8_t *buf)
{
    size_t dim = sq->dim;
    s_put_le32(buf + offsetof(s_sq8_header_t, magic), QUANT_SQ8_MAGIC);
    s_put_le32(buf + offsetof(s_sq8_header_t, version), QUANT_SQ8_VERSION);
    s_put_le32(buf + offsetof(s_sq8_header_t, dim), (uint32_t)dim);
    s_put_le32(buf + offsetof(s_sq8_header_t, reserved), 0);
    uint8_t *offsets = buf + QUANT_SQ8_HEADER_BYTES, *scales = offsets + 4 * dim;
    for (size_t i = 0; i < dim; i++) {
        s_put_float(offsets + 4 * i, sq->offset[i]);
        s_put_float(scales + 4 * i, sq->scale[i]);
    }
}

quant_sq8_t *quant_sq8_record_read(const uint8_t *buf, size_t len, size_t expected_dim,
                                   shoal_err_t *err)
{
    if (!buf || len < QUANT_SQ8_HEADER_BYTES) {
        shoal_err_set(err, SHOAL_ECORRUPT, "sq8 record: %zu bytes, shorter than its %u-byte header",
                      buf ? len : 0, QUANT_SQ8_HEADER_BYTES);
        return NULL;
    }
    uint32_t magic = s_get_le32(buf + offsetof(s_sq8_header_t, magic));
    uint32_t version = s_get_le32(buf + offsetof(s_sq8_header_t, version));
    uint32_t dim = s_get_le32(buf + offsetof(s_sq8_header_t, dim));
    uint32_t reserved = s_get_le32(buf + offsetof(s_sq8_header_t, reserved));
    if (magic != QUANT_SQ8_MAGIC) {
        shoal_err_set(err, SHOAL_ECORRUPT, "sq8 record: magic 0x%08x, expected 0x%08x", magic,
                      QUANT_SQ8_MAGIC);
        return NULL;
    }
    if (version != QUANT_SQ8_VERSION) {
        shoal_err_set(err, SHOAL_ECORRUPT, "sq8 record: version %u, this build reads %u", version,
                      QUANT_SQ8_VERSION);
        return NULL;
    }
    if (reserved != 0) {
        shoal_err_set(err, SHOAL_ECORRUPT, "sq8 record: reserved field 0x%08x, expected 0",
                      reserved);
        return NULL;
    }
    if (dim < 1 || dim > QUANT_DIM_MAX) {
        shoal_err_set(err, SHOAL_ECORRUPT, "sq8 record: dim %u outside 1..%d", dim, QUANT_DIM_MAX);
        return NULL;
    }
    if (expected_dim != 0 && dim != expected_dim) {
        shoal_err_set(err, SHOAL_ECORRUPT, "sq8 record: dim %u, expected %zu", dim, expected_dim);
        return NULL;
    }
    /* dim <= 2^16, so the size cannot overflow. */
    if (len != quant_sq8_record_size(dim)) {
        shoal_err_set(err, SHOAL_ECORRUPT, "sq8 record: %zu bytes, expected %zu for dim %u", len,
                      quant_sq8_record_size(dim), dim);
        return NULL;
    }
    quant_sq8_t *sq = s_sq8_alloc(dim);
    if (!sq) {
        shoal_err_set(err, SHOAL_ENOMEM, "sq8 record: out of memory for dim %u", dim);
        return NULL;
    }
    const uint8_t *offsets = buf + QUANT_SQ8_HEADER_BYTES, *scales = offsets + 4 * (size_t)dim;
    char why[160];
    for (size_t i = 0; i < dim; i++) {
        sq->offset[i] = s_get_float(offsets + 4 * i);
        sq->scale[i] = s_get_float(scales + 4 * i);
        if (s_check_dim(sq->offset[i], sq->scale[i], why, sizeof why) != 0) {
            shoal_err_set(err, SHOAL_ECORRUPT, "sq8 record: dim %zu: %s", i, why);
            quant_sq8_destroy(&sq);
            return NULL;
        }
    }
    s_sq8_finish(sq);
    return sq;
}

/* ------------------------------------------------------------------------ */
/* sq8: a query's precomputation                                            */
/* ------------------------------------------------------------------------ */

int quant_sq8_query_init(quant_sq8_query_t *pq, const quant_sq8_t *sq, const float *query)
{
    memset(pq, 0, sizeof *pq);
    size_t dim = sq->dim;
    float *block = malloc(2 * dim * sizeof(float));
    if (!block)
        return SHOAL_ENOMEM;
    pq->dim = dim;
    pq->scale = sq->scale;
    pq->shifted = block;
    pq->weighted = block + dim;
    double dot_offset = 0.0;
    for (size_t i = 0; i < dim; i++) {
        pq->shifted[i] = query[i] - sq->offset[i];
        pq->weighted[i] = query[i] * sq->scale[i];
        dot_offset += (double)query[i] * (double)sq->offset[i];
    }
    pq->dot_offset = (float)dot_offset;
    return SHOAL_OK;
}

void quant_sq8_query_fini(quant_sq8_query_t *pq)
{
    if (!pq)
        return;
    free(pq->shifted); /* the block that also holds weighted */
    memset(pq, 0, sizeof *pq);
}

/* ------------------------------------------------------------------------ */
/* Error bounds                                                             */
/* ------------------------------------------------------------------------ */

/* gamma(n) = n u / (1 - n u): the relative error of n float roundings in a row. */
static double s_gamma(size_t n)
{
    double nu = (double)n * S_U;
    return nu / (1.0 - nu);
}

int quant_bound_init(quant_bound_t *b, quant_kind_t kind, const quant_sq8_t *sq,
                     shoal_metric_t metric, const float *query, size_t dim, float row_norm_max,
                     shoal_err_t *err)
{
    if ((unsigned)kind >= QUANT_KIND_COUNT || (unsigned)metric > SHOAL_METRIC_COSINE)
        return shoal_err_set(err, SHOAL_EINVAL, "quant bound: kind %d or metric %d invalid",
                             (int)kind, (int)metric);
    if (dim < 1 || dim > QUANT_DIM_MAX)
        return shoal_err_set(err, SHOAL_EINVAL, "quant bound: dim %zu outside 1..%d", dim,
                             QUANT_DIM_MAX);
    if (kind == QUANT_SQ8 && (!sq || sq->dim != dim))
        return shoal_err_set(err, SHOAL_EINVAL, "quant bound: sq8 needs its quantizer of dim %zu",
                             dim);
    int needs_norm = metric == SHOAL_METRIC_IP && kind != QUANT_SQ8;
    if (needs_norm && !(isfinite(row_norm_max) && row_norm_max > 0.0f))
        return shoal_err_set(err, SHOAL_EINVAL,
                             "quant bound: ip on %s needs a finite row norm bound > 0, got %g",
                             quant_kind_name(kind), (double)row_norm_max);

    memset(b, 0, sizeof *b);
    b->metric = metric;
    b->kind = kind;
    b->dim = dim;
    b->gamma_d = s_gamma(dim);
    b->gamma_g = s_gamma(dim + 4);

    double norm_sq = 0.0, l1 = 0.0;
    for (size_t i = 0; i < dim; i++) {
        norm_sq += (double)query[i] * query[i];
        l1 += fabs((double)query[i]);
    }
    /* Sums of non-negative doubles: 2^-37 of margin is plenty for dim <= 2^16. */
    b->q_norm = sqrt(norm_sq) * (1.0 + 0x1p-30);
    l1 *= 1.0 + 0x1p-30;

    /* Cosine rows are unit to within float rounding of the normalisation. */
    double rows = metric == SHOAL_METRIC_COSINE ? 1.0 + 2.0 * S_U : (double)row_norm_max;
    b->row_norm = rows;

    switch (kind) {
    case QUANT_F32:
        b->ip_code_slack = b->gamma_g * b->q_norm * rows;
        b->ip_mag = b->q_norm * rows;
        break;
    case QUANT_F16: {
        b->f16_rel = S_F16_REL;
        b->f16_abs = S_F16_ABS * sqrt((double)dim) * (1.0 + 0x1p-30);
        double decoded_norm = (rows + b->f16_abs) / (1.0 - S_F16_REL); /* R' >= |X| */
        b->ip_code_slack = b->gamma_g * b->q_norm * decoded_norm;
        b->ip_quant = S_F16_REL * b->q_norm * decoded_norm + S_F16_ABS * l1;
        b->ip_mag = b->q_norm * rows;
        break;
    }
    case QUANT_SQ8: {
        double half_sq = 0.0, spread_sq = 0.0, mag = 0.0, quant = 0.0;
        for (size_t i = 0; i < dim; i++) {
            double q = query[i], offset = sq->offset[i], scale = sq->scale[i];
            double half = scale * S_HALF_STEP, span = 255.0 * scale;
            double spread = fabs(q - offset) + span; /* g_i >= |q_i - X_i| */
            half_sq += half * half;
            spread_sq += spread * spread;
            mag += fabs(q) * fmax(fabs(offset), fabs(offset + span));
            quant += fabs(q) * half;
        }
        double margin = 1.0 + 0x1p-30;
        b->l2_eps = 3.01 * S_U * sqrt(spread_sq) * margin;
        b->l2_err = sqrt(half_sq) * margin + b->l2_eps;
        b->ip_mag = mag * margin;
        b->ip_code_slack = b->gamma_g * b->ip_mag;
        b->ip_quant = quant * margin;
        break;
    }
    case QUANT_KIND_COUNT:
        break;
    }
    return SHOAL_OK;
}

/* E' for L2: the row's own residual, f16's (which grows with |X|), or the constant. */
static double s_l2_err(const quant_bound_t *b, double t_hi, double row_err)
{
    if (row_err >= 0.0)
        return row_err + b->l2_eps;
    if (b->kind == QUANT_F16)
        return b->f16_rel * (b->q_norm + t_hi) + b->f16_abs;
    return b->l2_err;
}

/* W for IP and cosine: code kernel rounding + quantization + float32 rounding. */
static double s_ip_width(const quant_bound_t *b, double row_err)
{
    double quant = b->ip_quant;
    if (row_err >= 0.0)
        quant = b->q_norm > 0.0 ? b->q_norm * row_err : 0.0; /* no 0 * inf */
    double mag = b->kind == QUANT_SQ8 ? b->ip_mag + quant : b->ip_mag;
    return b->ip_code_slack + quant + b->gamma_d * mag;
}

/* row_err < 0: a row with nothing clamped. */
static void s_interval(const quant_bound_t *b, float approx, double row_err, float *lo, float *hi)
{
    double a = approx, g = b->gamma_g, low, high;
    if (b->metric == SHOAL_METRIC_L2) {
        double r = a > 0.0 ? a : 0.0;
        double t_lo = sqrt(r / (1.0 + g)), t_hi = sqrt(r / (1.0 - g));
        double e = s_l2_err(b, t_hi, row_err);
        double below = t_lo > e ? t_lo - e : 0.0;
        low = (1.0 - g) * below * below;
        high = (1.0 + g) * (t_hi + e) * (t_hi + e);
    } else {
        double w = s_ip_width(b, row_err);
        if (b->metric == SHOAL_METRIC_COSINE)
            w += S_U * fabs(a) + 3.0 * g;
        low = a - w;
        high = a + w;
    }
    *lo = s_float_down(low);
    *hi = s_float_up(high);
}

void quant_bound_interval(const quant_bound_t *b, float approx, float *lo, float *hi)
{
    s_interval(b, approx, -1.0, lo, hi);
}

void quant_bound_interval_row(const quant_bound_t *b, float approx, float row_err, float *lo,
                              float *hi)
{
    if (!(row_err >= 0.0f)) {
        /* Not a bound at all (negative or NaN): nothing can be ruled out. */
        *lo = b->metric == SHOAL_METRIC_L2 ? 0.0f : -INFINITY;
        *hi = INFINITY;
        return;
    }
    s_interval(b, approx, row_err, lo, hi);
}

/*
 * lo grows with approx, so "lo <= upper" is "approx <= A"; A solves lo = upper
 * (one float above, as lo was rounded down) with s_interval's formulas read
 * backwards. The result is pushed up by 2^-40
 * of itself, more than the double arithmetic can be off, then rounded up.
 */
float quant_bound_approx_limit(const quant_bound_t *b, float upper)
{
    /* A returned lo is rounded down: lo <= upper holds for exact values below the next float. */
    double u = nextafterf(upper, INFINITY), g = b->gamma_g, limit;
    if (b->metric == SHOAL_METRIC_L2) {
        if (u < 0.0)
            return -INFINITY;
        double v = sqrt(u / (1.0 - g)), t;
        if (b->kind == QUANT_F16) {
            /* t_lo - rel (|q| + rho t_lo) - abs <= v, with t_hi = rho t_lo */
            double rho = sqrt((1.0 + g) / (1.0 - g));
            t = (v + b->f16_rel * b->q_norm + b->f16_abs) / (1.0 - b->f16_rel * rho);
        } else {
            t = v + b->l2_err;
        }
        limit = (1.0 + g) * t * t;
    } else {
        double w = s_ip_width(b, -1.0);
        if (b->metric == SHOAL_METRIC_IP) {
            limit = u + w;
        } else {
            /* a - u |a| <= upper + w + 3 g */
            double rhs = u + w + 3.0 * g;
            limit = rhs >= 0.0 ? rhs / (1.0 - S_U) : rhs / (1.0 + S_U);
        }
    }
    return s_float_up(limit + fabs(limit) * 0x1p-40);
}
