/*
 * test_quant.c - Criterion suite for common/quant.
 *
 * What is checked, and against what:
 *   - f16 conversions: every one of the 65,536 halves against a value
 *     computed from the definition, every halfway case between neighbouring
 *     halves, and a few million float bit patterns against an independent
 *     nearest-half search; the SIMD conversions bit for bit against scalar.
 *   - sq8: training (refusals, constant and tiny ranges), encoding within
 *     half a step, clamping, residuals, and the record (round trip, every
 *     corruption refused with SHOAL_ECORRUPT).
 *   - kernels: every implementation this CPU runs against the scalar
 *     reference, and the scalar one against double references, on dims
 *     1..300 and some large ones, misaligned, strided, in exactly-sized
 *     buffers (so that an AddressSanitizer build sees any over-read).
 *   - bounds: the interval contains the float32 distance computed by every
 *     distance.h implementation and in double, on random and adversarial
 *     rows (range edges, half-step points, clamped values, constant
 *     dimensions, f16 ties and subnormals); its width is at most the stated
 *     multiple of the step, and it is reached by rows built to reach it; an
 *     exact top-k through the bound equals float32 brute force.
 *
 * Tests that set SHOAL_SIMD rely on Criterion running each test in a process
 * of its own (its default): the implementation is chosen once per process.
 */
#include "common/datagen.h"
#include "common/distance.h"
#include "common/error.h"
#include "common/log.h"
#include "common/quant.h"

#include <criterion/criterion.h>

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */
/* ------------------------------------------------------------------------ */

/* xorshift64*: small, deterministic, good enough for test inputs. */
static uint64_t s_rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t s_rand_bits(void)
{
    s_rng_state ^= s_rng_state >> 12;
    s_rng_state ^= s_rng_state << 25;
    s_rng_state ^= s_rng_state >> 27;
    return s_rng_state * 0x2545f4914f6cdd1dULL;
}

static float s_rand_float(float lo, float hi)
{
    float unit = (float)(s_rand_bits() >> 40) / (float)(1 << 24); /* [0, 1) */
    return lo + (hi - lo) * unit;
}

static void s_fill(float *v, size_t count, float lo, float hi)
{
    for (size_t i = 0; i < count; i++)
        v[i] = s_rand_float(lo, hi);
}

/* Exactly `bytes` bytes, so ASan flags any access past the end. */
static void *s_alloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    cr_assert_not_null(p, "malloc of %zu bytes failed", bytes);
    return p;
}

static uint32_t s_bits(float v)
{
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    return bits;
}

static float s_from_bits(uint32_t bits)
{
    float v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

static const char *const s_impl_names[DIST_IMPL_COUNT] = {"scalar", "avx2", "avx512"};

/* A float sum is off by a few ulps of its terms' magnitudes; allow 1e-5 of it. */
static double s_tolerance(double magnitude)
{
    return 1e-5 * magnitude + 1e-6;
}

/* ------------------------------------------------------------------------ */
/* Storage kinds                                                            */
/* ------------------------------------------------------------------------ */

Test(quant, kind_names_and_parse)
{
    const char *names[QUANT_KIND_COUNT] = {"f32", "f16", "sq8"};
    for (int k = 0; k < QUANT_KIND_COUNT; k++) {
        cr_assert_str_eq(quant_kind_name((quant_kind_t)k), names[k]);
        quant_kind_t parsed = QUANT_KIND_COUNT;
        cr_assert_eq(quant_kind_parse(names[k], &parsed, NULL), SHOAL_OK);
        cr_assert_eq(parsed, (quant_kind_t)k);
    }
    quant_kind_t parsed;
    cr_assert_eq(quant_kind_parse("SQ8", &parsed, NULL), SHOAL_OK);
    cr_assert_eq(parsed, QUANT_SQ8);
    cr_assert_str_eq(quant_kind_name(QUANT_KIND_COUNT), "?");
    cr_assert_str_eq(quant_kind_name((quant_kind_t)-1), "?");

    const char *bad[] = {"", "f8", "sq4", "float32", " f32", "f16 ", "pq"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        shoal_err_t err;
        shoal_err_clear(&err);
        parsed = QUANT_F16;
        cr_assert_eq(quant_kind_parse(bad[i], &parsed, &err), SHOAL_EINVAL, "\"%s\"", bad[i]);
        cr_assert_eq(err.code, SHOAL_EINVAL);
        cr_assert_eq(parsed, QUANT_F16, "a failed parse must not store");
        char quoted[32];
        snprintf(quoted, sizeof quoted, "\"%s\"", bad[i]);
        cr_assert(strstr(err.msg, quoted) != NULL, "message must name %s: %s", quoted, err.msg);
    }
    cr_assert_eq(quant_kind_parse(NULL, &parsed, NULL), SHOAL_EINVAL);

    cr_assert_eq(quant_code_bytes(QUANT_F32, 128), 512);
    cr_assert_eq(quant_code_bytes(QUANT_F16, 128), 256);
    cr_assert_eq(quant_code_bytes(QUANT_SQ8, 128), 128);
}

/* ------------------------------------------------------------------------ */
/* f16 conversions                                                          */
/* ------------------------------------------------------------------------ */

/* A half's value from the definition of binary16. */
static double s_half_value(uint16_t h)
{
    int exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    double sign = (h & 0x8000) ? -1.0 : 1.0;
    if (exp == 31)
        return mant ? NAN : sign * INFINITY;
    if (exp == 0)
        return sign * ldexp(mant, -24);
    return sign * ldexp(1024 + mant, exp - 25);
}

/*
 * The nearest half to a finite float, found by binary search over the
 * positive halves (their values grow with their bits), ties to the even one:
 * independent of quant.c's bit manipulation.
 */
static uint16_t s_nearest_half(float v)
{
    uint16_t sign = signbit(v) ? 0x8000 : 0;
    double mag = fabs((double)v);
    if (mag >= 65520.0)
        return sign | 0x7c00;
    unsigned lo = 0, hi = 0x7bff; /* largest half with value <= mag is in [lo, hi] */
    while (lo < hi) {
        unsigned mid = (lo + hi + 1) / 2;
        if (s_half_value((uint16_t)mid) <= mag)
            lo = mid;
        else
            hi = mid - 1;
    }
    if (lo == 0x7bff)
        return sign | 0x7bff; /* in [65504, 65520): rounds down */
    double below = mag - s_half_value((uint16_t)lo);
    double above = s_half_value((uint16_t)(lo + 1)) - mag;
    unsigned pick = below < above ? lo : above < below ? lo + 1 : (lo % 2 == 0 ? lo : lo + 1);
    return (uint16_t)(sign | pick);
}

Test(quant, f16_every_half_decodes_and_round_trips)
{
    for (uint32_t h = 0; h <= 0xffff; h++) {
        float f = quant_f16_to_float((uint16_t)h);
        double want = s_half_value((uint16_t)h);
        if (isnan(want)) {
            cr_assert(isnan(f), "half 0x%04x must decode to NaN", h);
            /* quiet bit set, payload and sign kept, as vcvtph2ps */
            uint32_t bits = (h & 0x8000u) << 16 | 0x7fc00000u | (h & 0x3ffu) << 13;
            cr_assert_eq(s_bits(f), bits, "half 0x%04x: NaN bits 0x%08x", h, s_bits(f));
            cr_assert_eq(quant_f16_from_float(f), h | 0x200u, "NaN 0x%04x back", h);
            continue;
        }
        cr_assert_eq((double)f, want, "half 0x%04x: %.9g, expected %.9g", h, f, want);
        cr_assert_eq(signbit(f) != 0, (h & 0x8000) != 0, "half 0x%04x: sign", h);
        cr_assert_eq(quant_f16_from_float(f), h, "half 0x%04x does not round trip", h);
    }
}

Test(quant, f16_rounds_to_nearest_even)
{
    /* Every pair of neighbouring finite halves, both signs: the midpoint and a float either side.
     */
    for (uint32_t h = 0; h < 0x7bff; h++) {
        for (uint32_t sign = 0; sign <= 0x8000u; sign += 0x8000u) {
            float a = quant_f16_to_float((uint16_t)(sign | h));
            float b = quant_f16_to_float((uint16_t)(sign | (h + 1)));
            double exact_mid = ((double)a + (double)b) / 2.0;
            float mid = (float)exact_mid;
            cr_assert_eq((double)mid, exact_mid, "midpoint of 0x%04x must be a float", h);
            uint16_t even = (uint16_t)(sign | (h % 2 == 0 ? h : h + 1));
            cr_assert_eq(quant_f16_from_float(mid), even, "tie after 0x%04x", sign | h);
            cr_assert_eq(quant_f16_from_float(nextafterf(mid, a)), sign | h, "below tie 0x%04x", h);
            cr_assert_eq(quant_f16_from_float(nextafterf(mid, b)), sign | (h + 1),
                         "above tie 0x%04x", h);
        }
    }
    /* Overflow: the tie at 65520 goes to the even neighbour, 2^16, i.e. infinity. */
    cr_assert_eq(quant_f16_from_float(65504.0f), 0x7bff);
    cr_assert_eq(quant_f16_from_float(nextafterf(65520.0f, 0.0f)), 0x7bff);
    cr_assert_eq(quant_f16_from_float(65520.0f), 0x7c00);
    cr_assert_eq(quant_f16_from_float(-65520.0f), 0xfc00);
    cr_assert_eq(quant_f16_from_float(1e30f), 0x7c00);
    cr_assert_eq(quant_f16_from_float(INFINITY), 0x7c00);
    cr_assert_eq(quant_f16_from_float(-INFINITY), 0xfc00);
    /* Underflow: 2^-25 ties to 0, anything above it to the smallest subnormal. */
    cr_assert_eq(quant_f16_from_float(0x1p-25f), 0x0000);
    cr_assert_eq(quant_f16_from_float(nextafterf(0x1p-25f, 1.0f)), 0x0001);
    cr_assert_eq(quant_f16_from_float(0x1p-24f), 0x0001);
    cr_assert_eq(quant_f16_from_float(0x3p-25f), 0x0002); /* 1.5 units: ties to even 2 */
    cr_assert_eq(quant_f16_from_float(-0x1p-26f), 0x8000);
    cr_assert_eq(quant_f16_from_float(FLT_TRUE_MIN), 0x0000);
    cr_assert_eq(quant_f16_from_float(-0.0f), 0x8000);
    /* The subnormal/normal border: the largest subnormal rounds up into the smallest normal. */
    cr_assert_eq(quant_f16_from_float(nextafterf(0x1p-14f, 0.0f)), 0x0400);
    cr_assert_eq(quant_f16_to_float(0x03ff), 0x3ffp-24f);
    /* NaN stays NaN, quiet. */
    cr_assert_eq(quant_f16_from_float(NAN) & 0x7e00u, 0x7e00u);
    uint16_t snan = quant_f16_from_float(s_from_bits(0x7f800001u | (0x155u << 13)));
    cr_assert_eq(snan, 0x7e00u | 0x155u, "signalling NaN: 0x%04x", snan);
}

Test(quant, f16_random_floats_match_nearest_half)
{
    for (int i = 0; i < 400000; i++) {
        /* Exponents around binary16's range, where the interesting cases are. */
        uint32_t bits = (uint32_t)s_rand_bits();
        uint32_t exp = 96u + (uint32_t)(s_rand_bits() % 48u); /* 2^-31 .. 2^16 */
        bits = (bits & 0x807fffffu) | exp << 23;
        float v = s_from_bits(bits);
        uint16_t got = quant_f16_from_float(v), want = s_nearest_half(v);
        cr_assert_eq(got, want, "%a: 0x%04x, expected 0x%04x", (double)v, got, want);
    }
}

/* Float bit patterns for the conversion tests: specials, ties, random. */
static size_t s_conversion_inputs(float *out, size_t cap)
{
    size_t n = 0;
    const float specials[] = {0.0f,
                              -0.0f,
                              1.0f,
                              -1.0f,
                              65504.0f,
                              65520.0f,
                              -65520.0f,
                              65519.996f,
                              INFINITY,
                              -INFINITY,
                              NAN,
                              -NAN,
                              0x1p-24f,
                              0x1p-25f,
                              0x3p-25f,
                              0x1p-14f,
                              FLT_MIN,
                              FLT_TRUE_MIN,
                              FLT_MAX,
                              1e-8f,
                              s_from_bits(0x7f800001u),
                              s_from_bits(0xffbfffffu),
                              1.00048828125f};
    for (size_t i = 0; i < sizeof specials / sizeof specials[0] && n < cap; i++)
        out[n++] = specials[i];
    /* Every tie between neighbouring positive halves. */
    for (uint32_t h = 0; h < 0x7bff && n < cap; h++)
        out[n++] = (float)(((double)quant_f16_to_float((uint16_t)h) +
                            quant_f16_to_float((uint16_t)(h + 1))) /
                           2.0);
    while (n < cap) {
        uint32_t bits = (uint32_t)s_rand_bits();
        if (n % 2) /* half of them in binary16's exponent range */
            bits = (bits & 0x807fffffu) | (96u + (uint32_t)(s_rand_bits() % 48u)) << 23;
        out[n++] = s_from_bits(bits);
    }
    return n;
}

Test(quant, f16_simd_conversions_are_bit_exact)
{
    const quant_kernels_t *ref = quant_kernels_get(DIST_IMPL_SCALAR);
    size_t count = 1 << 20;
    float *in = s_alloc(count * sizeof(float)), *back = s_alloc(count * sizeof(float));
    uint16_t *want = s_alloc(count * sizeof(uint16_t)), *got = s_alloc(count * sizeof(uint16_t));
    s_conversion_inputs(in, count);
    ref->f32_to_f16(in, count, want);
    for (size_t i = 0; i < count; i++)
        cr_assert_eq(want[i], quant_f16_from_float(in[i]), "scalar table, input %zu", i);

    uint16_t *halves = s_alloc(65536 * sizeof(uint16_t));
    float *decoded_ref = s_alloc(65536 * sizeof(float));
    for (uint32_t h = 0; h <= 0xffff; h++)
        halves[h] = (uint16_t)h;
    ref->f16_to_f32(halves, 65536, decoded_ref);

    for (int impl = 0; impl < DIST_IMPL_COUNT; impl++) {
        const quant_kernels_t *k = quant_kernels_get((dist_impl_t)impl);
        if (!k)
            continue;
        k->f32_to_f16(in, count, got);
        for (size_t i = 0; i < count; i++)
            cr_assert_eq(got[i], want[i], "%s f32_to_f16 of 0x%08x: 0x%04x, expected 0x%04x",
                         k->name, s_bits(in[i]), got[i], want[i]);
        k->f16_to_f32(halves, 65536, back);
        for (size_t h = 0; h < 65536; h++)
            cr_assert_eq(s_bits(back[h]), s_bits(decoded_ref[h]), "%s f16_to_f32 of 0x%04zx",
                         k->name, h);
        /* Every short length, into exactly-sized buffers: the tails. */
        for (size_t len = 1; len <= 40; len++) {
            float *src = s_alloc(len * sizeof(float)), *dst = s_alloc(len * sizeof(float));
            uint16_t *mid = s_alloc(len * sizeof(uint16_t));
            memcpy(src, in + 1000 * len, len * sizeof(float));
            k->f32_to_f16(src, len, mid);
            k->f16_to_f32(mid, len, dst);
            for (size_t i = 0; i < len; i++) {
                cr_assert_eq(mid[i], want[1000 * len + i], "%s len %zu [%zu]", k->name, len, i);
                cr_assert_eq(s_bits(dst[i]), s_bits(quant_f16_to_float(mid[i])), "%s len %zu",
                             k->name, len);
            }
            free(src);
            free(dst);
            free(mid);
        }
    }
    free(in);
    free(back);
    free(want);
    free(got);
    free(halves);
    free(decoded_ref);
}

Test(quant, f16_encode_refuses_what_does_not_fit)
{
    const float ok[6] = {65519.99f, -65504.0f, 1e-7f, 0.0f, 3.14159f, -2.5e-6f};
    uint16_t codes[6];
    float back[6];
    cr_assert_eq(quant_f16_encode(ok, 2, 3, codes, NULL), SHOAL_OK);
    quant_f16_decode(codes, 6, back);
    for (int i = 0; i < 6; i++) {
        cr_assert_eq(codes[i], quant_f16_from_float(ok[i]));
        double err = fabs((double)back[i] - ok[i]);
        cr_assert_leq(err, 0x1p-11 * fabs((double)back[i]) + 0x1p-25, "[%d] %g -> %g", i,
                      (double)ok[i], (double)back[i]);
    }
    cr_assert_eq(codes[0], 0x7bff, "65519.99 rounds to the largest half");

    const float bad_values[] = {65520.0f, -70000.0f, INFINITY, -INFINITY, NAN};
    const char *why[] = {"overflows", "overflows", "not finite", "not finite", "not finite"};
    for (size_t b = 0; b < sizeof bad_values / sizeof bad_values[0]; b++) {
        float rows[6];
        memcpy(rows, ok, sizeof rows);
        rows[4] = bad_values[b]; /* row 1, dim 1 */
        uint16_t out[6];
        memset(out, 0xab, sizeof out);
        shoal_err_t err;
        cr_assert_eq(quant_f16_encode(rows, 2, 3, out, &err), SHOAL_EINVAL, "value %g",
                     (double)bad_values[b]);
        cr_assert(strstr(err.msg, "row 1 dim 1") != NULL, "message: %s", err.msg);
        cr_assert(strstr(err.msg, why[b]) != NULL, "message: %s", err.msg);
        for (int i = 0; i < 6; i++)
            cr_assert_eq(out[i], 0xabab, "nothing may be written on refusal");
    }
}

/* ------------------------------------------------------------------------ */
/* sq8 quantizer                                                            */
/* ------------------------------------------------------------------------ */

/*
 * n rows of dim floats with varied per-dimension ranges: offsets from -50 to
 * 50, widths from 0.01 to 100, every 7th dimension constant, every 11th a
 * range of a few ulps.
 */
static void s_fill_ranges(float *rows, size_t n, size_t dim)
{
    for (size_t i = 0; i < dim; i++) {
        float centre = s_rand_float(-50.0f, 50.0f);
        float width = powf(10.0f, s_rand_float(-2.0f, 2.0f));
        for (size_t r = 0; r < n; r++) {
            float v = centre + width * s_rand_float(-0.5f, 0.5f);
            if (i % 7 == 3)
                v = centre;
            else if (i % 11 == 5)
                v = nextafterf(centre, (float)(r % 3));
            rows[r * dim + i] = v;
        }
    }
}

/* The real value a code stands for, in double (exact: 24 + 8 bits). */
static double s_code_value(const quant_sq8_t *sq, size_t i, uint8_t c)
{
    return (double)quant_sq8_offset(sq)[i] + (double)quant_sq8_scale(sq)[i] * c;
}

Test(quant, sq8_train_refuses_bad_input)
{
    float rows[12] = {0};
    shoal_err_t err;
    cr_assert_null(quant_sq8_train(rows, 0, 4, &err));
    cr_assert_eq(err.code, SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "at least 1 row") != NULL, "%s", err.msg);
    cr_assert_null(quant_sq8_train(rows, 3, 0, &err));
    cr_assert_eq(err.code, SHOAL_EINVAL);
    cr_assert_null(quant_sq8_train(rows, 1, QUANT_DIM_MAX + 1, &err));
    cr_assert_eq(err.code, SHOAL_EINVAL);

    const float bad[] = {NAN, INFINITY, -INFINITY};
    for (size_t b = 0; b < 3; b++) {
        memset(rows, 0, sizeof rows);
        rows[2 * 4 + 3] = bad[b]; /* row 2, dim 3 */
        cr_assert_null(quant_sq8_train(rows, 3, 4, &err), "value %g", (double)bad[b]);
        cr_assert_eq(err.code, SHOAL_EINVAL);
        cr_assert(strstr(err.msg, "row 2 dim 3") != NULL, "message: %s", err.msg);
        cr_assert(strstr(err.msg, "not finite") != NULL, "message: %s", err.msg);
    }

    /* The widest range there is still decodes to finite values at both ends. */
    float wide[2] = {-FLT_MAX, FLT_MAX}, back[2];
    quant_sq8_t *sq = quant_sq8_train(wide, 2, 1, &err);
    cr_assert_not_null(sq, "%s", err.msg);
    uint8_t codes[2];
    cr_assert_eq(quant_sq8_encode(sq, wide, 2, codes, NULL), 0);
    cr_assert(codes[0] == 0 && codes[1] == 255);
    quant_sq8_decode(sq, codes, 2, back);
    cr_assert(isfinite(back[0]) && isfinite(back[1]), "%g %g", (double)back[0], (double)back[1]);
    quant_sq8_destroy(&sq);
}

Test(quant, sq8_one_row_and_constant_dimensions_are_exact)
{
    const float row[5] = {1.5f, -3.0f, 0.0f, 1e-30f, 12345.678f};
    quant_sq8_t *sq = quant_sq8_train(row, 1, 5, NULL);
    cr_assert_not_null(sq);
    uint8_t codes[5];
    float back[5];
    cr_assert_eq(quant_sq8_encode(sq, row, 1, codes, NULL), 0);
    quant_sq8_decode(sq, codes, 1, back);
    for (int i = 0; i < 5; i++) {
        cr_assert_eq(quant_sq8_scale(sq)[i], 0.0f);
        cr_assert_eq(codes[i], 0, "a constant dimension has code 0");
        cr_assert_eq(back[i], row[i], "a constant dimension decodes exactly");
    }
    cr_assert_eq(quant_sq8_err_norm(sq), 0.0f);
    cr_assert_eq(quant_sq8_residual(sq, row, codes), 0.0f);
    quant_sq8_destroy(&sq);
    cr_assert_null(sq);
    quant_sq8_destroy(&sq); /* NULL-safe */
    quant_sq8_destroy(NULL);
}

Test(quant, sq8_round_trip_within_half_a_step)
{
    const size_t dims[] = {1, 3, 16, 100, 128, 257};
    for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++) {
        size_t dim = dims[d], n = 300;
        float *rows = s_alloc(n * dim * sizeof(float)), *back = s_alloc(n * dim * sizeof(float));
        uint8_t *codes = s_alloc(n * dim), *clamped = s_alloc(n);
        s_fill_ranges(rows, n, dim);
        shoal_err_t err;
        quant_sq8_t *sq = quant_sq8_train(rows, n, dim, &err);
        cr_assert_not_null(sq, "%s", err.msg);
        cr_assert_eq(quant_sq8_dim(sq), dim);
        cr_assert_eq(quant_sq8_encode(sq, rows, n, codes, clamped), 0,
                     "training rows are never clamped");
        quant_sq8_decode(sq, codes, n, back);
        const float *offset = quant_sq8_offset(sq), *scale = quant_sq8_scale(sq);
        double half_sq = 0.0;
        for (size_t i = 0; i < dim; i++) {
            double half = scale[i] * (0.5 + 0x1p-21);
            half_sq += half * half;
            cr_assert_geq(scale[i], 0.0f);
        }
        cr_assert_geq((double)quant_sq8_err_norm(sq), sqrt(half_sq));
        cr_assert_leq((double)quant_sq8_err_norm(sq), sqrt(half_sq) * (1 + 1e-6));
        for (size_t r = 0; r < n; r++) {
            cr_assert_eq(clamped[r], 0);
            for (size_t i = 0; i < dim; i++) {
                double x = rows[r * dim + i], code_value = s_code_value(sq, i, codes[r * dim + i]);
                /* The code is the nearest one: within half a step. */
                cr_assert_leq(fabs(x - code_value), scale[i] * (0.5 + 0x1p-21),
                              "dim %zu row %zu: %.9g coded %u (%.9g), step %g", dim, r, x,
                              codes[r * dim + i], code_value, (double)scale[i]);
                /* decode is that value rounded once to float. */
                cr_assert_eq(back[r * dim + i], (float)code_value);
                if (scale[i] == 0.0f) {
                    cr_assert_eq(codes[r * dim + i], 0);
                    cr_assert_eq(back[r * dim + i], rows[r * dim + i]);
                }
            }
            float residual = quant_sq8_residual(sq, rows + r * dim, codes + r * dim);
            cr_assert_leq(residual, quant_sq8_err_norm(sq));
        }
        /* The ends of each range are the ends of the code range. */
        for (size_t i = 0; i < dim; i++) {
            if (scale[i] == 0.0f)
                continue;
            float lo = rows[i], hi = rows[i];
            for (size_t r = 1; r < n; r++) {
                lo = fminf(lo, rows[r * dim + i]);
                hi = fmaxf(hi, rows[r * dim + i]);
            }
            cr_assert_eq(offset[i], lo);
            cr_assert_geq((double)offset[i] + 255.0 * scale[i], (double)hi);
            cr_assert_leq((double)offset[i] + 255.0 * scale[i], (double)hi + 2.0 * scale[i]);
        }
        quant_sq8_destroy(&sq);
        free(rows);
        free(back);
        free(codes);
        free(clamped);
    }
}

Test(quant, sq8_clamps_outside_the_range_and_says_so)
{
    /* dim 0: [0, 255] (step 1); dim 1: constant 7; dim 2: [-1, 1]. */
    const float train[6] = {0.0f, 7.0f, -1.0f, 255.0f, 7.0f, 1.0f};
    quant_sq8_t *sq = quant_sq8_train(train, 2, 3, NULL);
    cr_assert_not_null(sq);
    cr_assert_eq(quant_sq8_scale(sq)[0], 1.0f);
    const float rows[] = {
        -0.49f, 7.0f, 0.0f,   /* within half a step of the range: not clamped */
        255.5f, 7.0f, 1.0f,   /* exactly half a step past the top: not clamped */
        -0.51f, 7.0f, 0.0f,   /* past half a step: clamped to code 0 */
        300.0f, 7.0f, 0.0f,   /* far above: clamped to 255 */
        10.0f,  7.5f, 0.0f,   /* another value in a constant dimension: clamped */
        10.0f,  7.0f, -40.0f, /* far below in dim 2 */
    };
    size_t n = 6;
    uint8_t codes[18], clamped[6];
    cr_assert_eq(quant_sq8_encode(sq, rows, n, codes, clamped), 4);
    const uint8_t want_clamped[6] = {0, 0, 1, 1, 1, 1};
    for (size_t r = 0; r < n; r++)
        cr_assert_eq(clamped[r], want_clamped[r], "row %zu", r);
    cr_assert_eq(codes[0], 0);
    cr_assert_eq(codes[3], 255);
    cr_assert_eq(codes[6], 0);
    cr_assert_eq(codes[9], 255);
    cr_assert_eq(codes[13], 0, "constant dimension: code 0 whatever the value");
    cr_assert_eq(codes[17], 0);
    cr_assert_eq(quant_sq8_encode(sq, rows, n, codes, NULL), 4, "clamped may be NULL");

    /* The residual bounds each row's true error, clamped or not, and not by much. */
    for (size_t r = 0; r < n; r++) {
        double exact = 0.0;
        for (size_t i = 0; i < 3; i++) {
            double e = rows[r * 3 + i] - s_code_value(sq, i, codes[r * 3 + i]);
            exact += e * e;
        }
        exact = sqrt(exact);
        float residual = quant_sq8_residual(sq, rows + r * 3, codes + r * 3);
        cr_assert_geq((double)residual, exact, "row %zu", r);
        cr_assert_leq((double)residual, exact * (1 + 1e-6) + 1e-12, "row %zu", r);
    }
    quant_sq8_destroy(&sq);
}

Test(quant, sq8_new_checks_its_arrays)
{
    const float offset[3] = {0.0f, -1.0f, 2.0f}, scale[3] = {1.0f, 0.0f, 0.5f};
    shoal_err_t err;
    quant_sq8_t *sq = quant_sq8_new(offset, scale, 3, &err);
    cr_assert_not_null(sq, "%s", err.msg);
    cr_assert_eq(memcmp(quant_sq8_offset(sq), offset, sizeof offset), 0);
    cr_assert_eq(memcmp(quant_sq8_scale(sq), scale, sizeof scale), 0);
    quant_sq8_destroy(&sq);

    struct {
        float offset, scale;
        const char *why;
    } bad[] = {
        {NAN, 1.0f, "offset"},         {INFINITY, 1.0f, "offset"}, {0.0f, NAN, "scale"},
        {0.0f, INFINITY, "scale"},     {0.0f, -1.0f, "negative"},  {0.0f, -0.0f, "negative"},
        {3e38f, 1e37f, "fit a float"},
    };
    for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
        float o[3], s[3];
        memcpy(o, offset, sizeof o);
        memcpy(s, scale, sizeof s);
        o[1] = bad[b].offset;
        s[1] = bad[b].scale;
        cr_assert_null(quant_sq8_new(o, s, 3, &err), "case %zu", b);
        cr_assert_eq(err.code, SHOAL_EINVAL);
        cr_assert(strstr(err.msg, "dim 1") != NULL, "case %zu: %s", b, err.msg);
        cr_assert(strstr(err.msg, bad[b].why) != NULL, "case %zu: %s", b, err.msg);
    }
    cr_assert_null(quant_sq8_new(offset, scale, 0, &err));
    cr_assert_eq(err.code, SHOAL_EINVAL);
}

/* ------------------------------------------------------------------------ */
/* The sq8 record                                                           */
/* ------------------------------------------------------------------------ */

/* A trained quantizer of dimension dim and its record (caller frees both). */
static quant_sq8_t *s_trained(size_t dim, uint8_t **record, size_t *len)
{
    size_t n = 50;
    float *rows = s_alloc(n * dim * sizeof(float));
    s_fill_ranges(rows, n, dim);
    quant_sq8_t *sq = quant_sq8_train(rows, n, dim, NULL);
    cr_assert_not_null(sq);
    free(rows);
    *len = quant_sq8_record_size(dim);
    *record = s_alloc(*len);
    quant_sq8_record_write(sq, *record);
    return sq;
}

static void s_put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

Test(quant, sq8_record_round_trip)
{
    size_t dim = 37, len;
    uint8_t *record;
    quant_sq8_t *sq = s_trained(dim, &record, &len);
    cr_assert_eq(len, 16 + 8 * dim);
    /* The layout quant.h documents. */
    cr_assert_eq(memcmp(record, "SQ8Q", 4), 0);
    const uint8_t version[4] = {1, 0, 0, 0}, dim_le[4] = {37, 0, 0, 0}, zero[4] = {0};
    cr_assert_eq(memcmp(record + 4, version, 4), 0);
    cr_assert_eq(memcmp(record + 8, dim_le, 4), 0);
    cr_assert_eq(memcmp(record + 12, zero, 4), 0);
    uint32_t first_scale = s_bits(quant_sq8_scale(sq)[0]);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(record[16 + 4 * dim + i], (uint8_t)(first_scale >> (8 * i)));

    const size_t expected[] = {dim, 0};
    for (size_t e = 0; e < 2; e++) {
        shoal_err_t err;
        quant_sq8_t *loaded = quant_sq8_record_read(record, len, expected[e], &err);
        cr_assert_not_null(loaded, "%s", err.msg);
        cr_assert_eq(quant_sq8_dim(loaded), dim);
        cr_assert_eq(memcmp(quant_sq8_offset(loaded), quant_sq8_offset(sq), dim * sizeof(float)),
                     0);
        cr_assert_eq(memcmp(quant_sq8_scale(loaded), quant_sq8_scale(sq), dim * sizeof(float)), 0);
        cr_assert_eq(quant_sq8_err_norm(loaded), quant_sq8_err_norm(sq));
        /* The same codes for the same rows. */
        float row[37];
        uint8_t a[37], b[37];
        s_fill(row, dim, -60.0f, 60.0f);
        quant_sq8_encode(sq, row, 1, a, NULL);
        quant_sq8_encode(loaded, row, 1, b, NULL);
        cr_assert_eq(memcmp(a, b, dim), 0);
        quant_sq8_destroy(&loaded);
    }
    quant_sq8_destroy(&sq);
    free(record);
}

/* Reads a corrupted copy; asserts ECORRUPT and that the message has `what`. */
static void s_expect_corrupt(const uint8_t *buf, size_t len, size_t expected_dim, const char *what,
                             const char *case_name)
{
    shoal_err_t err;
    shoal_err_clear(&err);
    quant_sq8_t *sq = quant_sq8_record_read(buf, len, expected_dim, &err);
    cr_assert_null(sq, "%s: accepted", case_name);
    cr_assert_eq(err.code, SHOAL_ECORRUPT, "%s: code %d (%s)", case_name, err.code, err.msg);
    cr_assert(strstr(err.msg, what) != NULL, "%s: message \"%s\" lacks \"%s\"", case_name, err.msg,
              what);
}

Test(quant, sq8_record_refuses_every_corruption)
{
    size_t dim = 8, len;
    uint8_t *record;
    quant_sq8_t *sq = s_trained(dim, &record, &len);
    uint8_t *copy = s_alloc(len + 64);

#define S_CORRUPT(what, name, edit)                                                                \
    do {                                                                                           \
        memcpy(copy, record, len);                                                                 \
        edit;                                                                                      \
        s_expect_corrupt(copy, len, dim, what, name);                                              \
    } while (0)

    S_CORRUPT("magic", "bad magic", copy[0] ^= 0x20);
    S_CORRUPT("version 2", "version", s_put_le32(copy + 4, 2));
    S_CORRUPT("version 0", "version 0", s_put_le32(copy + 4, 0));
    S_CORRUPT("reserved", "reserved", copy[13] = 1);
    S_CORRUPT("dim 0", "dim 0", s_put_le32(copy + 8, 0));
    S_CORRUPT("dim 70000", "dim too large", s_put_le32(copy + 8, 70000));
    S_CORRUPT("dim 4294967295", "dim huge", s_put_le32(copy + 8, 0xffffffffu));
    /* A count larger than the bytes behind it is never trusted. */
    S_CORRUPT("expected", "dim claims more", s_put_le32(copy + 8, 1000));
    S_CORRUPT("offset nan", "NaN offset", memcpy(copy + 16 + 4 * 3, &(float){NAN}, 4));
    S_CORRUPT("offset inf", "inf offset", memcpy(copy + 16, &(float){INFINITY}, 4));
    S_CORRUPT("scale inf", "inf scale", memcpy(copy + 16 + 4 * dim + 4, &(float){INFINITY}, 4));
    S_CORRUPT("scale nan", "NaN scale", memcpy(copy + 16 + 4 * dim, &(float){NAN}, 4));
    S_CORRUPT("negative", "negative scale", memcpy(copy + 16 + 4 * dim + 8, &(float){-0.5f}, 4));
    S_CORRUPT(
        "fit a float", "range top overflows",
        (memcpy(copy + 16, &(float){3e38f}, 4), memcpy(copy + 16 + 4 * dim, &(float){1e37f}, 4)));
#undef S_CORRUPT

    /* Lengths: truncated anywhere, trailing bytes, empty, NULL. */
    memcpy(copy, record, len);
    s_expect_corrupt(copy, len - 1, dim, "bytes, expected", "truncated by one");
    s_expect_corrupt(copy, len - 4 * dim, dim, "bytes, expected", "scales missing");
    s_expect_corrupt(copy, 15, dim, "header", "truncated header");
    s_expect_corrupt(copy, 0, dim, "header", "empty");
    s_expect_corrupt(NULL, len, dim, "header", "NULL buffer");
    memset(copy + len, 0, 64);
    s_expect_corrupt(copy, len + 1, dim, "bytes, expected", "trailing byte");
    /* A count larger than the bytes behind it, with no expected dim to catch it first. */
    s_put_le32(copy + 8, 1000);
    s_expect_corrupt(copy, len, 0, "bytes, expected", "dim claims more, any dim");
    s_put_le32(copy + 8, (uint32_t)dim);
    /* A record for another collection's dimension. */
    s_expect_corrupt(copy, len, dim + 1, "expected 9", "dim mismatch");

    /* The untouched record still reads. */
    quant_sq8_t *loaded = quant_sq8_record_read(record, len, dim, NULL);
    cr_assert_not_null(loaded);
    quant_sq8_destroy(&loaded);
    quant_sq8_destroy(&sq);
    free(record);
    free(copy);
}

/* ------------------------------------------------------------------------ */
/* Kernels: SIMD against scalar, scalar against double                      */
/* ------------------------------------------------------------------------ */

/* One query and n rows of dim components at the given stride, in both code kinds. */
typedef struct {
    size_t dim, n, stride;  /* shape */
    float *query_block;     /* dim + offset floats; query = block + offset */
    const float *query;     /* the query */
    float *rows;            /* n x dim floats the codes were made from */
    uint16_t *half_block;   /* f16 codes, exact size, + offset */
    const uint16_t *halves; /* (n - 1) stride + dim halves */
    uint8_t *code_block;    /* sq8 codes, exact size, + offset */
    const uint8_t *codes;   /* (n - 1) stride + dim codes */
    quant_sq8_t *sq;        /* trained on rows */
    quant_sq8_query_t pq;   /* the query against sq */
} kernel_case_t;

static void s_case_init(kernel_case_t *c, size_t dim, size_t n, size_t stride, size_t offset)
{
    memset(c, 0, sizeof *c);
    c->dim = dim;
    c->n = n;
    c->stride = stride;
    size_t count = (n - 1) * stride + dim;
    c->query_block = s_alloc((dim + offset) * sizeof(float));
    c->query = c->query_block + offset;
    s_fill(c->query_block + offset, dim, -1.5f, 1.5f);
    c->rows = s_alloc(n * dim * sizeof(float));
    s_fill(c->rows, n * dim, -1.0f, 1.0f);
    c->sq = quant_sq8_train(c->rows, n, dim, NULL);
    cr_assert_not_null(c->sq);
    c->half_block = s_alloc((count + offset) * sizeof(uint16_t));
    c->code_block = s_alloc(count + offset);
    memset(c->half_block, 0, (count + offset) * sizeof(uint16_t));
    memset(c->code_block, 0, count + offset);
    uint16_t *halves = c->half_block + offset;
    uint8_t *codes = c->code_block + offset;
    for (size_t r = 0; r < n; r++) {
        cr_assert_eq(quant_f16_encode(c->rows + r * dim, 1, dim, halves + r * stride, NULL), 0);
        quant_sq8_encode(c->sq, c->rows + r * dim, 1, codes + r * stride, NULL);
    }
    c->halves = halves;
    c->codes = codes;
    cr_assert_eq(quant_sq8_query_init(&c->pq, c->sq, c->query), SHOAL_OK);
}

static void s_case_fini(kernel_case_t *c)
{
    quant_sq8_query_fini(&c->pq);
    quant_sq8_destroy(&c->sq);
    free(c->query_block);
    free(c->rows);
    free(c->half_block);
    free(c->code_block);
}

/* Double references on the decoded row, with the magnitudes a float sum works at. */
typedef struct {
    double l2, dot;         /* exact values */
    double l2_mag, dot_mag; /* scale of the rounding in float kernels */
} ref_t;

static ref_t s_ref_f16(const float *q, const uint16_t *code, size_t dim)
{
    ref_t r = {0};
    for (size_t i = 0; i < dim; i++) {
        double x = quant_f16_to_float(code[i]), d = q[i] - x;
        r.l2 += d * d;
        r.dot += q[i] * x;
        r.dot_mag += fabs(q[i] * x);
    }
    r.l2_mag = r.l2;
    return r;
}

/* sq8: the kernels fold offset into the query, so their rounding scales with |q - offset|. */
static ref_t s_ref_sq8(const quant_sq8_query_t *pq, const quant_sq8_t *sq, const float *q,
                       const uint8_t *code)
{
    ref_t r = {0};
    const float *offset = quant_sq8_offset(sq), *scale = quant_sq8_scale(sq);
    for (size_t i = 0; i < pq->dim; i++) {
        double x = s_code_value(sq, i, code[i]), d = q[i] - x;
        double spread = fabs((double)q[i] - offset[i]) + 255.0 * scale[i];
        r.l2 += d * d;
        r.l2_mag += (fabs(d) + spread) * (fabs(d) + spread);
        r.dot += q[i] * x;
        r.dot_mag += fabs((double)pq->weighted[i] * code[i]);
    }
    r.dot_mag += fabs((double)pq->dot_offset);
    return r;
}

static void s_check_case(const quant_kernels_t *k, const kernel_case_t *c)
{
    const quant_kernels_t *ref = quant_kernels_get(DIST_IMPL_SCALAR);
    size_t n = c->n, dim = c->dim, stride = c->stride;
    float *out = s_alloc(n * sizeof(float));

    /* f16 */
    k->f16_l2sq_batch(c->query, c->halves, n, dim, stride, out);
    for (size_t r = 0; r < n; r++) {
        const uint16_t *code = c->halves + r * stride;
        ref_t want = s_ref_f16(c->query, code, dim);
        float pair = k->f16_l2sq(c->query, code, dim), scalar = ref->f16_l2sq(c->query, code, dim);
        cr_assert_leq(fabs(scalar - want.l2), s_tolerance(want.l2_mag), "scalar f16_l2sq dim %zu",
                      dim);
        cr_assert_leq(fabs(pair - scalar), s_tolerance(want.l2_mag),
                      "%s f16_l2sq dim %zu: %.9g vs %.9g", k->name, dim, pair, scalar);
        cr_assert_leq(fabs(out[r] - scalar), s_tolerance(want.l2_mag),
                      "%s f16_l2sq_batch n %zu dim %zu stride %zu row %zu: %.9g vs %.9g", k->name,
                      n, dim, stride, r, out[r], scalar);
    }
    k->f16_dot_batch(c->query, c->halves, n, dim, stride, out);
    for (size_t r = 0; r < n; r++) {
        const uint16_t *code = c->halves + r * stride;
        ref_t want = s_ref_f16(c->query, code, dim);
        float pair = k->f16_dot(c->query, code, dim), scalar = ref->f16_dot(c->query, code, dim);
        cr_assert_leq(fabs(scalar - want.dot), s_tolerance(want.dot_mag), "scalar f16_dot dim %zu",
                      dim);
        cr_assert_leq(fabs(pair - scalar), s_tolerance(want.dot_mag), "%s f16_dot dim %zu", k->name,
                      dim);
        cr_assert_leq(fabs(out[r] - scalar), s_tolerance(want.dot_mag),
                      "%s f16_dot_batch n %zu dim %zu stride %zu row %zu", k->name, n, dim, stride,
                      r);
    }

    /* sq8 */
    k->sq8_l2sq_batch(&c->pq, c->codes, n, stride, out);
    for (size_t r = 0; r < n; r++) {
        const uint8_t *code = c->codes + r * stride;
        ref_t want = s_ref_sq8(&c->pq, c->sq, c->query, code);
        float pair = k->sq8_l2sq(&c->pq, code), scalar = ref->sq8_l2sq(&c->pq, code);
        cr_assert_leq(fabs(scalar - want.l2), s_tolerance(want.l2_mag),
                      "scalar sq8_l2sq dim %zu: %.9g vs %.9g", dim, scalar, want.l2);
        cr_assert_leq(fabs(pair - scalar), s_tolerance(want.l2_mag),
                      "%s sq8_l2sq dim %zu: %.9g vs %.9g", k->name, dim, pair, scalar);
        cr_assert_leq(fabs(out[r] - scalar), s_tolerance(want.l2_mag),
                      "%s sq8_l2sq_batch n %zu dim %zu stride %zu row %zu: %.9g vs %.9g", k->name,
                      n, dim, stride, r, out[r], scalar);
    }
    k->sq8_dot_batch(&c->pq, c->codes, n, stride, out);
    for (size_t r = 0; r < n; r++) {
        const uint8_t *code = c->codes + r * stride;
        ref_t want = s_ref_sq8(&c->pq, c->sq, c->query, code);
        float pair = k->sq8_dot(&c->pq, code), scalar = ref->sq8_dot(&c->pq, code);
        cr_assert_leq(fabs(scalar - want.dot), s_tolerance(want.dot_mag),
                      "scalar sq8_dot dim %zu: %.9g vs %.9g", dim, scalar, want.dot);
        cr_assert_leq(fabs(pair - scalar), s_tolerance(want.dot_mag), "%s sq8_dot dim %zu", k->name,
                      dim);
        cr_assert_leq(fabs(out[r] - scalar), s_tolerance(want.dot_mag),
                      "%s sq8_dot_batch n %zu dim %zu stride %zu row %zu", k->name, n, dim, stride,
                      r);
    }

    /* sq8 code to code, between neighbouring rows */
    const float *scale = quant_sq8_scale(c->sq);
    for (size_t r = 0; r + 1 < n; r++) {
        const uint8_t *a = c->codes + r * stride, *b = c->codes + (r + 1) * stride;
        double want = 0.0;
        for (size_t i = 0; i < dim; i++) {
            double step = (double)scale[i] * ((int)a[i] - (int)b[i]);
            want += step * step;
        }
        float scalar = ref->sq8_sym_l2sq(scale, a, b, dim), got = k->sq8_sym_l2sq(scale, a, b, dim);
        cr_assert_leq(fabs(scalar - want), s_tolerance(want), "scalar sq8_sym_l2sq dim %zu", dim);
        cr_assert_leq(fabs(got - scalar), s_tolerance(want), "%s sq8_sym_l2sq dim %zu", k->name,
                      dim);
    }
    free(out);
}

/* Rows per batch: fewer than a block, one block, two blocks and three left over. */
static const size_t s_batch_rows[] = {3, 4, 11};

static void s_check_dim(const quant_kernels_t *k, size_t dim)
{
    for (size_t offset = 0; offset <= 1; offset++) {
        for (size_t b = 0; b < sizeof s_batch_rows / sizeof s_batch_rows[0]; b++) {
            for (size_t pad = 0; pad <= 3; pad += 3) {
                kernel_case_t c;
                s_case_init(&c, dim, s_batch_rows[b], dim + pad, offset);
                s_check_case(k, &c);
                s_case_fini(&c);
            }
        }
    }
}

static void s_check_impl(dist_impl_t impl)
{
    const quant_kernels_t *k = quant_kernels_get(impl);
    if (!k)
        cr_skip_test("this CPU does not support %s (with F16C)", s_impl_names[impl]);
    cr_assert_eq(k->impl, impl);
    cr_assert_str_eq(k->name, s_impl_names[impl]);
    for (size_t dim = 1; dim <= 300; dim++)
        s_check_dim(k, dim);
    const size_t large[] = {511, 512, 513, 1024, 4095};
    for (size_t i = 0; i < sizeof large / sizeof large[0]; i++)
        s_check_dim(k, large[i]);
}

/* The scalar table against itself still checks it against the double references. */
Test(quant, scalar_kernels_match_double_reference)
{
    s_check_impl(DIST_IMPL_SCALAR);
}

Test(quant, avx2_kernels_match_scalar)
{
    s_check_impl(DIST_IMPL_AVX2);
}

Test(quant, avx512_kernels_match_scalar)
{
    s_check_impl(DIST_IMPL_AVX512);
}

Test(quant, chosen_table_follows_distance)
{
    const quant_kernels_t *chosen = quant_kernels();
    cr_assert_not_null(chosen);
    cr_assert_eq(quant_kernels(), chosen, "the choice must not change");
    cr_assert_eq(quant_kernels_get(chosen->impl), chosen);
    cr_assert_not_null(quant_kernels_get(DIST_IMPL_SCALAR));
    cr_assert_null(quant_kernels_get(DIST_IMPL_COUNT));
    cr_assert_null(quant_kernels_get((dist_impl_t)-1));
    /* Whatever distance.h chose, unless this CPU lacks F16C. */
    const quant_kernels_t *same = quant_kernels_get(dist_kernels()->impl);
    cr_assert_eq(chosen, same ? same : quant_kernels_get(DIST_IMPL_SCALAR));
}

Test(quant, simd_env_forces_scalar)
{
    setenv("SHOAL_SIMD", "scalar", 1);
    cr_assert_eq(quant_kernels()->impl, DIST_IMPL_SCALAR);
}

Test(quant, sq8_query_fini_is_safe_twice)
{
    const float row[2] = {1.0f, 2.0f};
    quant_sq8_t *sq = quant_sq8_train(row, 1, 2, NULL);
    quant_sq8_query_t pq;
    cr_assert_eq(quant_sq8_query_init(&pq, sq, row), SHOAL_OK);
    quant_sq8_query_fini(&pq);
    cr_assert_null(pq.shifted);
    quant_sq8_query_fini(&pq);
    quant_sq8_query_fini(NULL);
    quant_sq8_destroy(&sq);
}

/* ------------------------------------------------------------------------ */
/* Bounds                                                                   */
/* ------------------------------------------------------------------------ */

static const shoal_metric_t s_metrics[] = {SHOAL_METRIC_L2, SHOAL_METRIC_IP, SHOAL_METRIC_COSINE};

/* Codes of every kind for one set of rows, and a way to get approx for a row. */
typedef struct {
    size_t dim, n;      /* shape */
    const float *rows;  /* n x dim originals (borrowed) */
    uint16_t *halves;   /* n x dim */
    uint8_t *codes;     /* n x dim */
    uint8_t *clamped;   /* n flags: sq8 row clamped */
    float *row_err;     /* n: quant_sq8_residual of each row */
    quant_sq8_t *sq;    /* the quantizer (trained by the caller) */
    float row_norm_max; /* the largest |x| among the rows, for IP on f16/f32 */
} coded_t;

static void s_coded_init(coded_t *c, const float *rows, size_t n, size_t dim, quant_sq8_t *sq)
{
    memset(c, 0, sizeof *c);
    c->dim = dim;
    c->n = n;
    c->rows = rows;
    c->sq = sq;
    c->halves = s_alloc(n * dim * sizeof(uint16_t));
    c->codes = s_alloc(n * dim);
    c->clamped = s_alloc(n);
    c->row_err = s_alloc(n * sizeof(float));
    shoal_err_t err;
    cr_assert_eq(quant_f16_encode(rows, n, dim, c->halves, &err), SHOAL_OK, "%s", err.msg);
    quant_sq8_encode(sq, rows, n, c->codes, c->clamped);
    double norm_max = 0.0;
    for (size_t r = 0; r < n; r++) {
        c->row_err[r] = quant_sq8_residual(sq, rows + r * dim, c->codes + r * dim);
        double norm = 0.0;
        for (size_t i = 0; i < dim; i++)
            norm += (double)rows[r * dim + i] * rows[r * dim + i];
        norm_max = fmax(norm_max, sqrt(norm));
    }
    c->row_norm_max = (float)(norm_max * (1 + 1e-6));
}

static void s_coded_fini(coded_t *c)
{
    free(c->halves);
    free(c->codes);
    free(c->clamped);
    free(c->row_err);
}

/* Raw kernel result for row r under kind, through table k. */
static float s_raw(const quant_kernels_t *k, const coded_t *c, quant_kind_t kind,
                   shoal_metric_t metric, const float *q, const quant_sq8_query_t *pq, size_t r,
                   const dist_kernels_t *f32)
{
    int l2 = metric == SHOAL_METRIC_L2;
    size_t dim = c->dim;
    switch (kind) {
    case QUANT_F32:
        return l2 ? f32->l2sq(q, c->rows + r * dim, dim) : f32->dot(q, c->rows + r * dim, dim);
    case QUANT_F16:
        return l2 ? k->f16_l2sq(q, c->halves + r * dim, dim)
                  : k->f16_dot(q, c->halves + r * dim, dim);
    case QUANT_SQ8:
        return l2 ? k->sq8_l2sq(pq, c->codes + r * dim) : k->sq8_dot(pq, c->codes + r * dim);
    case QUANT_KIND_COUNT:
        break;
    }
    cr_assert_fail("bad kind");
    return NAN;
}

/* The float32 distances the engines could compute for (q, x): every impl, both cosine forms. */
static size_t s_f32_distances(shoal_metric_t metric, const float *q, const float *x, size_t dim,
                              double *out)
{
    size_t n = 0;
    for (int impl = 0; impl < DIST_IMPL_COUNT; impl++) {
        const dist_kernels_t *k = dist_kernels_get((dist_impl_t)impl);
        if (!k)
            continue;
        switch (metric) {
        case SHOAL_METRIC_L2:
            out[n++] = k->l2sq(q, x, dim);
            break;
        case SHOAL_METRIC_IP:
            out[n++] = -k->dot(q, x, dim);
            break;
        case SHOAL_METRIC_COSINE:
            out[n++] = 1.0f - k->dot(q, x, dim);
            out[n++] = k->cosine(q, x, dim);
            break;
        }
    }
    /* And the exact one, in double. */
    double dot = 0.0, l2 = 0.0;
    for (size_t i = 0; i < dim; i++) {
        dot += (double)q[i] * x[i];
        l2 += ((double)q[i] - x[i]) * ((double)q[i] - x[i]);
    }
    out[n++] = metric == SHOAL_METRIC_L2 ? l2 : metric == SHOAL_METRIC_IP ? -dot : 1.0 - dot;
    return n;
}

typedef struct {
    size_t rows;          /* intervals checked */
    double width_rel;     /* sum of (hi - lo) / |F| over rows with F != 0 */
    size_t width_counted; /* rows in width_rel */
} bound_stats_t;

/* What the width of an sq8 interval may be, for one query. */
typedef struct {
    double scale_norm; /* |scale|_2: twice the half-steps' norm */
    double spread;     /* sum (|q_i - offset_i| + 255 scale_i)^2, for the kernel's eps */
    double abs_step;   /* sum |q_i| scale_i: the IP width */
    double mag;        /* sum |q_i| max |X_i|: the IP rounding magnitude */
    double g;          /* gamma(dim + 4) */
} step_t;

/*
 * The stated multiple of the step: L2 2 t |scale| + |scale|^2, IP
 * sum |q_i| scale_i, with 0.1% to spare, plus the rounding terms (G of the
 * magnitudes, the sq8 kernel's eps, the outward rounding of lo and hi).
 */
static double s_sq8_width_allowed(const step_t *s, shoal_metric_t metric, float approx, float lo,
                                  float hi)
{
    double allowed, g = s->g, norm = s->scale_norm;
    if (metric == SHOAL_METRIC_L2) {
        double t = sqrt(fmax(approx, 0.0f)), eps = 3.02 * 0x1p-24 * sqrt(s->spread);
        allowed = 1.001 * (2.0 * t * norm + norm * norm) + 4.0 * g * (t + norm) * (t + norm) +
                  4.0 * (t + norm + eps) * eps;
    } else {
        allowed = 1.001 * s->abs_step + 4.0 * g * (s->mag + s->abs_step) +
                  (metric == SHOAL_METRIC_COSINE ? 8.0 * g : 0.0);
    }
    return allowed + 0x1p-23 * (fabs((double)lo) + fabs((double)hi));
}

/*
 * Checks every row of c against every query: lo <= F <= hi for every float32
 * F, the width within the stated multiple of the step, and the approx limit.
 */
static void s_check_bounds(const coded_t *c, shoal_metric_t metric, const float *queries, size_t nq,
                           bound_stats_t *stats)
{
    size_t dim = c->dim;
    const float *offset = quant_sq8_offset(c->sq), *scale = quant_sq8_scale(c->sq);
    double scale_norm = 0.0;
    for (size_t i = 0; i < dim; i++)
        scale_norm += (double)scale[i] * scale[i];
    scale_norm = sqrt(scale_norm);
    double g = (dim + 4) * 0x1p-24 / (1 - (dim + 4) * 0x1p-24);

    for (size_t qi = 0; qi < nq; qi++) {
        const float *q = queries + qi * dim;
        quant_sq8_query_t pq;
        cr_assert_eq(quant_sq8_query_init(&pq, c->sq, q), SHOAL_OK);
        step_t step = {.scale_norm = scale_norm, .g = g};
        for (size_t i = 0; i < dim; i++) {
            double g_i = fabs((double)q[i] - offset[i]) + 255.0 * scale[i];
            step.spread += g_i * g_i;
            step.abs_step += fabs((double)q[i]) * scale[i];
            step.mag += fabs((double)q[i]) *
                        fmax(fabs((double)offset[i]), fabs((double)offset[i] + 255.0 * scale[i]));
        }
        for (int kind = 0; kind < QUANT_KIND_COUNT; kind++) {
            quant_bound_t b;
            shoal_err_t err;
            cr_assert_eq(quant_bound_init(&b, (quant_kind_t)kind, kind == QUANT_SQ8 ? c->sq : NULL,
                                          metric, q, dim, c->row_norm_max, &err),
                         SHOAL_OK, "%s", err.msg);
            for (int impl = 0; impl < DIST_IMPL_COUNT; impl++) {
                const quant_kernels_t *k = quant_kernels_get((dist_impl_t)impl);
                const dist_kernels_t *f32 = dist_kernels_get((dist_impl_t)impl);
                if (!k)
                    continue;
                for (size_t r = 0; r < c->n; r++) {
                    const float *x = c->rows + r * dim;
                    float raw = s_raw(k, c, (quant_kind_t)kind, metric, q, &pq, r, f32);
                    float approx = quant_distance(metric, raw), lo, hi;
                    int clamped = kind == QUANT_SQ8 && c->clamped[r];
                    if (clamped)
                        quant_bound_interval_row(&b, approx, c->row_err[r], &lo, &hi);
                    else
                        quant_bound_interval(&b, approx, &lo, &hi);
                    double f[2 * DIST_IMPL_COUNT + 1];
                    size_t nf = s_f32_distances(metric, q, x, dim, f);
                    for (size_t j = 0; j < nf; j++)
                        cr_assert(lo <= f[j] && f[j] <= hi,
                                  "%s %s %s query %zu row %zu%s: float32 distance %.9g outside "
                                  "[%.9g, %.9g] (approx %.9g)",
                                  quant_kind_name((quant_kind_t)kind), shoal_metric_name(metric),
                                  k->name, qi, r, clamped ? " (clamped)" : "", f[j], lo, hi,
                                  approx);
                    /* The per-row form, with the row's own residual, holds too. */
                    if (kind == QUANT_SQ8) {
                        float lo_row, hi_row;
                        quant_bound_interval_row(&b, approx, c->row_err[r], &lo_row, &hi_row);
                        for (size_t j = 0; j < nf; j++)
                            cr_assert(lo_row <= f[j] && f[j] <= hi_row,
                                      "sq8 %s row %zu: %.9g outside the per-row [%.9g, %.9g]",
                                      shoal_metric_name(metric), r, f[j], lo_row, hi_row);
                    }
                    /* Rows whose lo is below an upper bound have approx below its limit. */
                    if (!clamped) {
                        float limit = quant_bound_approx_limit(&b, hi);
                        cr_assert_leq(approx, limit, "%s %s: approx %.9g above limit %.9g of %.9g",
                                      quant_kind_name((quant_kind_t)kind),
                                      shoal_metric_name(metric), approx, limit, hi);
                        limit = quant_bound_approx_limit(&b, lo);
                        cr_assert_leq(approx, limit,
                                      "%s %s: approx %.9g above limit %.9g of its lo",
                                      quant_kind_name((quant_kind_t)kind),
                                      shoal_metric_name(metric), approx, limit);
                    }
                    /* Not absurdly loose: sq8 within the stated multiple of the step. */
                    if (kind == QUANT_SQ8 && !clamped) {
                        double allowed = s_sq8_width_allowed(&step, metric, approx, lo, hi);
                        cr_assert_leq(
                            (double)hi - lo, allowed,
                            "sq8 %s query %zu row %zu: width %.9g over %.9g (approx %.9g)",
                            shoal_metric_name(metric), qi, r, (double)hi - lo, allowed, approx);
                    }
                    if (kind == QUANT_SQ8 && !clamped && impl == DIST_IMPL_SCALAR && stats) {
                        double truth = f[nf - 1];
                        stats->rows++;
                        if (truth != 0.0) {
                            stats->width_rel += ((double)hi - lo) / fabs(truth);
                            stats->width_counted++;
                        }
                    }
                }
            }
        }
        quant_sq8_query_fini(&pq);
    }
}

/* Rows from the clustered generator, scaled to a given magnitude. */
static float *s_generated(size_t n, size_t dim, int normalize, float scale, unsigned stream)
{
    datagen_params_t params = {.dim = dim, .normalize = normalize, .seed = 7};
    shoal_err_t err;
    datagen_t *gen = datagen_new(&params, &err);
    cr_assert_not_null(gen, "%s", err.msg);
    float *rows = s_alloc(n * dim * sizeof(float));
    datagen_fill(gen, stream, 0, n, rows);
    datagen_destroy(&gen);
    for (size_t i = 0; i < n * dim; i++)
        rows[i] *= scale;
    return rows;
}

Test(quant, bound_contains_float32_distance_on_random_data)
{
    const size_t dims[] = {1, 7, 33, 128};
    for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++) {
        size_t dim = dims[d], n = 60, nq = 4;
        for (size_t m = 0; m < 3; m++) {
            shoal_metric_t metric = s_metrics[m];
            int unit = metric == SHOAL_METRIC_COSINE;
            float *rows = s_generated(n, dim, unit, unit ? 1.0f : 40.0f, DATAGEN_STREAM_BASE);
            float *queries = s_generated(nq, dim, unit, unit ? 1.0f : 40.0f, DATAGEN_STREAM_QUERY);
            /* Train on the first half: the rest has values outside the range (clamped rows). */
            quant_sq8_t *sq = quant_sq8_train(rows, n / 2, dim, NULL);
            cr_assert_not_null(sq);
            coded_t c;
            s_coded_init(&c, rows, n, dim, sq);
            bound_stats_t stats = {0};
            s_check_bounds(&c, metric, queries, nq, &stats);
            cr_assert_gt(stats.rows, 0);
            s_coded_fini(&c);
            quant_sq8_destroy(&sq);
            free(rows);
            free(queries);
        }
    }
}

/*
 * Rows chosen to sit where rounding and quantization are worst: at the ends
 * of the range, a hair inside half a step from a code (both sides), outside
 * the range (clamped), in constant dimensions, at f16 ties, in f16's
 * subnormal range and next to its largest value; queries on the rows
 * themselves (distance near 0), far away, and at the range corners.
 */
Test(quant, bound_contains_float32_distance_on_adversarial_data)
{
    size_t dim = 24, n = 0, cap = 64;
    float *rows = s_alloc(cap * dim * sizeof(float));
    /* Training: per dimension [lo_i, hi_i], dim 5 and 17 constant. */
    float lo[24], hi[24];
    for (size_t i = 0; i < dim; i++) {
        lo[i] = s_rand_float(-3.0f, 1.0f);
        hi[i] = (i == 5 || i == 17) ? lo[i] : lo[i] + s_rand_float(0.001f, 4.0f);
    }
    for (size_t i = 0; i < dim; i++) {
        rows[0 * dim + i] = lo[i];
        rows[1 * dim + i] = hi[i];
    }
    n = 2;
    quant_sq8_t *sq = quant_sq8_train(rows, 2, dim, NULL);
    cr_assert_not_null(sq);
    const float *offset = quant_sq8_offset(sq), *scale = quant_sq8_scale(sq);
    /* Half-step points, a float inside and outside, on both sides of random codes. */
    for (int side = -1; side <= 1; side += 2) {
        for (int inside = 0; inside <= 1; inside++) {
            float *x = rows + n * dim;
            for (size_t i = 0; i < dim; i++) {
                double c = (double)(s_rand_bits() % 256);
                double edge = (double)offset[i] + scale[i] * (c + 0.5 * side);
                float v = (float)edge;
                x[i] = inside ? nextafterf(v, (float)(offset[i] + scale[i] * c))
                              : nextafterf(v, side > 0 ? INFINITY : -INFINITY);
            }
            n++;
        }
    }
    /* Clamped rows: far outside, just outside, and another value in a constant dimension. */
    for (int k = 0; k < 3; k++) {
        float *x = rows + n * dim;
        for (size_t i = 0; i < dim; i++)
            x[i] = k == 0 ? hi[i] + 3.0f : k == 1 ? lo[i] - scale[i] * 0.6f : lo[i];
        if (k == 2)
            x[5] += 0.25f;
        n++;
    }
    /* f16 ties and neighbours, subnormals, and the largest half. */
    for (int k = 0; k < 3; k++) {
        float *x = rows + n * dim;
        for (size_t i = 0; i < dim; i++) {
            uint16_t h = (uint16_t)(0x3c00 + (s_rand_bits() % 0x400));
            double tie =
                ((double)quant_f16_to_float(h) + quant_f16_to_float((uint16_t)(h + 1))) / 2;
            x[i] = k == 0 ? (float)tie : k == 1 ? (float)(tie * 1e-5) * 1e-1f : 0.0f;
        }
        if (k == 2)
            x[3] = 65504.0f;
        n++;
    }
    /* Random rows within the range. */
    while (n < cap - 8) {
        float *x = rows + n * dim;
        for (size_t i = 0; i < dim; i++)
            x[i] = s_rand_float(lo[i], hi[i]);
        n++;
    }
    size_t nrows = n;
    /* Queries: each of the first rows itself, far away, corners, and zero. */
    size_t nq = 8;
    float *queries = s_alloc(nq * dim * sizeof(float));
    for (size_t qi = 0; qi < nq; qi++) {
        float *q = queries + qi * dim;
        for (size_t i = 0; i < dim; i++) {
            switch (qi) {
            case 0:
            case 1:
            case 2:
            case 3:
                q[i] = rows[(qi * 2 + 2) * dim + i];
                break;
            case 4:
                q[i] = 1000.0f;
                break;
            case 5:
                q[i] = (i % 2) ? lo[i] : hi[i];
                break;
            case 6:
                q[i] = -lo[i] * 50.0f;
                break;
            default:
                q[i] = 0.0f;
                break;
            }
        }
    }
    coded_t c;
    s_coded_init(&c, rows, nrows, dim, sq);
    cr_assert_geq(quant_sq8_encode(sq, rows, nrows, c.codes, NULL), 3, "some rows must clamp");
    for (size_t m = 0; m < 2; m++) /* cosine needs unit rows: the next test */
        s_check_bounds(&c, s_metrics[m], queries, nq, NULL);
    s_coded_fini(&c);

    /* Cosine: the same rows normalised (the f16 extremes would not survive that: skip them). */
    for (size_t r = 0; r < nrows; r++)
        if (dist_normalize(rows + r * dim, dim) != 0)
            memcpy(rows + r * dim, rows + 2 * dim, dim * sizeof(float));
    for (size_t qi = 0; qi < nq; qi++)
        if (dist_normalize(queries + qi * dim, dim) != 0)
            memcpy(queries + qi * dim, rows + 2 * dim, dim * sizeof(float));
    quant_sq8_t *unit_sq = quant_sq8_train(rows, nrows / 2, dim, NULL);
    s_coded_init(&c, rows, nrows, dim, unit_sq);
    s_check_bounds(&c, SHOAL_METRIC_COSINE, queries, nq, NULL);
    s_coded_fini(&c);
    quant_sq8_destroy(&unit_sq);
    quant_sq8_destroy(&sq);
    free(rows);
    free(queries);
}

/*
 * The bound is reached. Steps of 1 (range [0, 255]), code 100 everywhere:
 *   L2: the query at 110 / 90 in alternate dimensions; the row 0.4999 of a
 *       step away from it in every dimension is as far as the bound allows,
 *       the row 0.4999 towards it as near (e is parallel to q - X);
 *   IP: every q_i > 0, so the row 0.4999 above every code is the nearest.
 * The quantization part is reached to 0.1%; for IP the rounding slack, which
 * counts the whole [0, 255] box, is 0.4% of the half-width here.
 */
static void s_check_reached(const quant_sq8_t *sq, shoal_metric_t metric, const float *q,
                            const float *near, const float *far, size_t dim, double share)
{
    uint8_t code_far[64], code_near[64];
    cr_assert_eq(quant_sq8_encode(sq, far, 1, code_far, NULL), 0);
    cr_assert_eq(quant_sq8_encode(sq, near, 1, code_near, NULL), 0);
    cr_assert_eq(memcmp(code_far, code_near, dim), 0, "both rows must have the same code");
    for (size_t i = 0; i < dim; i++)
        cr_assert_eq(code_far[i], 100);

    quant_sq8_query_t pq;
    cr_assert_eq(quant_sq8_query_init(&pq, sq, q), SHOAL_OK);
    const quant_kernels_t *k = quant_kernels();
    quant_bound_t b;
    cr_assert_eq(quant_bound_init(&b, QUANT_SQ8, sq, metric, q, dim, 0.0f, NULL), SHOAL_OK);
    float raw = metric == SHOAL_METRIC_L2 ? k->sq8_l2sq(&pq, code_far) : k->sq8_dot(&pq, code_far);
    float approx = quant_distance(metric, raw), lo, hi;
    quant_bound_interval(&b, approx, &lo, &hi);
    double f_far = dist_metric(metric, q, far, dim), f_near = dist_metric(metric, q, near, dim);
    cr_assert(lo <= f_near && f_far <= hi, "%s: [%.9g, %.9g] misses %.9g or %.9g",
              shoal_metric_name(metric), lo, hi, f_near, f_far);
    cr_assert_geq(f_far - approx, share * (hi - approx), "%s: far %.9g, approx %.9g, hi %.9g",
                  shoal_metric_name(metric), f_far, approx, hi);
    cr_assert_geq(approx - f_near, share * (approx - lo), "%s: near %.9g, approx %.9g, lo %.9g",
                  shoal_metric_name(metric), f_near, approx, lo);
    quant_sq8_query_fini(&pq);
}

Test(quant, bound_is_reached_by_rows_built_for_it)
{
    size_t dim = 64;
    float train[128];
    for (size_t i = 0; i < dim; i++) {
        train[i] = 0.0f;
        train[dim + i] = 255.0f;
    }
    quant_sq8_t *sq = quant_sq8_train(train, 2, dim, NULL);
    cr_assert_eq(quant_sq8_scale(sq)[0], 1.0f);
    float q[64], far[64], near[64], above[64], below[64];
    for (size_t i = 0; i < dim; i++) {
        q[i] = (i % 2) ? 110.0f : 90.0f;
        far[i] = (i % 2) ? 99.5001f : 100.4999f;
        near[i] = (i % 2) ? 100.4999f : 99.5001f;
        above[i] = 100.4999f;
        below[i] = 99.5001f;
    }
    s_check_reached(sq, SHOAL_METRIC_L2, q, near, far, dim, 0.999);
    s_check_reached(sq, SHOAL_METRIC_IP, q, above, below, dim, 0.99);
    quant_sq8_destroy(&sq);
}

Test(quant, bound_limit_matches_interval)
{
    size_t dim = 40, n = 200;
    float *rows = s_generated(n, dim, 0, 10.0f, DATAGEN_STREAM_BASE);
    float *q = s_generated(1, dim, 0, 10.0f, DATAGEN_STREAM_QUERY);
    quant_sq8_t *sq = quant_sq8_train(rows, n, dim, NULL);
    for (int kind = 0; kind < QUANT_KIND_COUNT; kind++) {
        for (size_t m = 0; m < 3; m++) {
            quant_bound_t b;
            cr_assert_eq(
                quant_bound_init(&b, (quant_kind_t)kind, sq, s_metrics[m], q, dim, 100.0f, NULL),
                SHOAL_OK);
            for (int t = 0; t < 2000; t++) {
                float upper = s_rand_float(-100.0f, 3000.0f);
                float limit = quant_bound_approx_limit(&b, upper);
                float approx = s_rand_float(-100.0f, 3000.0f), lo, hi;
                quant_bound_interval(&b, approx, &lo, &hi);
                if (lo <= upper)
                    cr_assert_leq(approx, limit, "%s %s: lo %.9g <= %.9g but approx %.9g > %.9g",
                                  quant_kind_name((quant_kind_t)kind),
                                  shoal_metric_name(s_metrics[m]), lo, upper, approx, limit);
                /* And the limit is tight: a little above it, lo is above upper. */
                if (isfinite(limit)) {
                    float above = limit + fabsf(limit) * 1e-5f + 1e-5f;
                    quant_bound_interval(&b, above, &lo, &hi);
                    cr_assert_gt(lo, upper, "%s %s: limit %.9g of %.9g is loose",
                                 quant_kind_name((quant_kind_t)kind),
                                 shoal_metric_name(s_metrics[m]), limit, upper);
                }
            }
        }
    }
    quant_sq8_destroy(&sq);
    free(rows);
    free(q);
}

Test(quant, bound_init_refuses_what_it_cannot_bound)
{
    float q[4] = {1, 2, 3, 4};
    float rows[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    quant_sq8_t *sq = quant_sq8_train(rows, 2, 4, NULL);
    quant_bound_t b;
    shoal_err_t err;
    cr_assert_eq(quant_bound_init(&b, QUANT_SQ8, NULL, SHOAL_METRIC_L2, q, 4, 0, &err),
                 SHOAL_EINVAL);
    cr_assert_eq(quant_bound_init(&b, QUANT_SQ8, sq, SHOAL_METRIC_L2, q, 3, 0, &err), SHOAL_EINVAL);
    cr_assert_eq(quant_bound_init(&b, QUANT_F16, NULL, SHOAL_METRIC_IP, q, 4, 0.0f, &err),
                 SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "row norm") != NULL, "%s", err.msg);
    cr_assert_eq(quant_bound_init(&b, QUANT_F32, NULL, SHOAL_METRIC_IP, q, 4, NAN, &err),
                 SHOAL_EINVAL);
    cr_assert_eq(quant_bound_init(&b, QUANT_KIND_COUNT, NULL, SHOAL_METRIC_L2, q, 4, 0, &err),
                 SHOAL_EINVAL);
    cr_assert_eq(quant_bound_init(&b, QUANT_F16, NULL, SHOAL_METRIC_L2, q, 4, 0, &err), SHOAL_OK);
    cr_assert_eq(quant_bound_init(&b, QUANT_SQ8, sq, SHOAL_METRIC_IP, q, 4, 0, &err), SHOAL_OK);
    /* A row "bound" that is not one rules nothing out. */
    float lo, hi;
    quant_bound_interval_row(&b, 5.0f, NAN, &lo, &hi);
    cr_assert(isinf(lo) && lo < 0 && isinf(hi) && hi > 0);
    quant_sq8_destroy(&sq);
}

/*
 * The exact mode the bound is for: scan the codes, take U = the k-th
 * smallest hi, re-score in float32 every row with lo <= U. The result must be
 * float32 brute force's top-k, for every kind and metric.
 */
static int s_cmp_pair(const void *a, const void *b)
{
    const double *x = a, *y = b;
    if (x[0] != y[0])
        return x[0] < y[0] ? -1 : 1;
    return x[1] < y[1] ? -1 : x[1] > y[1];
}

Test(quant, exact_search_through_the_bound_equals_brute_force)
{
    size_t dim = 32, n = 3000, nq = 10, k = 10;
    for (size_t m = 0; m < 3; m++) {
        shoal_metric_t metric = s_metrics[m];
        int unit = metric == SHOAL_METRIC_COSINE;
        float *rows = s_generated(n, dim, unit, unit ? 1.0f : 20.0f, DATAGEN_STREAM_BASE);
        float *queries = s_generated(nq, dim, unit, unit ? 1.0f : 20.0f, DATAGEN_STREAM_QUERY);
        quant_sq8_t *sq = quant_sq8_train(rows, n, dim, NULL);
        coded_t c;
        s_coded_init(&c, rows, n, dim, sq);
        double *truth = s_alloc(2 * n * sizeof(double)), *found = s_alloc(2 * n * sizeof(double));
        float *approx = s_alloc(n * sizeof(float)), *sorted = s_alloc(n * sizeof(float));
        float *lo = s_alloc(n * sizeof(float)), *hi = s_alloc(n * sizeof(float));
        for (size_t qi = 0; qi < nq; qi++) {
            const float *q = queries + qi * dim;
            for (size_t r = 0; r < n; r++) {
                truth[2 * r] = dist_metric(metric, q, rows + r * dim, dim);
                truth[2 * r + 1] = (double)r;
            }
            qsort(truth, n, 2 * sizeof(double), s_cmp_pair);
            quant_sq8_query_t pq;
            quant_sq8_query_init(&pq, sq, q);
            for (int kind = 0; kind < QUANT_KIND_COUNT; kind++) {
                quant_bound_t b;
                cr_assert_eq(quant_bound_init(&b, (quant_kind_t)kind, sq, metric, q, dim,
                                              c.row_norm_max, NULL),
                             SHOAL_OK);
                for (size_t r = 0; r < n; r++) {
                    float raw = s_raw(quant_kernels(), &c, (quant_kind_t)kind, metric, q, &pq, r,
                                      dist_kernels());
                    approx[r] = quant_distance(metric, raw);
                    if (kind == QUANT_SQ8 && c.clamped[r])
                        quant_bound_interval_row(&b, approx[r], c.row_err[r], &lo[r], &hi[r]);
                    else
                        quant_bound_interval(&b, approx[r], &lo[r], &hi[r]);
                }
                /* U: the k-th smallest hi (a selection sort of k steps is fine in a test). */
                memcpy(sorted, hi, n * sizeof(float));
                for (size_t i = 0; i < k; i++)
                    for (size_t j = i + 1; j < n; j++)
                        if (sorted[j] < sorted[i]) {
                            float t = sorted[i];
                            sorted[i] = sorted[j];
                            sorted[j] = t;
                        }
                float upper = sorted[k - 1];
                float limit = quant_bound_approx_limit(&b, upper);
                size_t rescored = 0;
                for (size_t r = 0; r < n; r++) {
                    if (lo[r] > upper)
                        continue;
                    /* What the limit promises: one comparison of approx finds the same rows. */
                    if (!(kind == QUANT_SQ8 && c.clamped[r]))
                        cr_assert_leq(approx[r], limit);
                    found[2 * rescored] = dist_metric(metric, q, rows + r * dim, dim);
                    found[2 * rescored + 1] = (double)r;
                    rescored++;
                }
                cr_assert_geq(rescored, k);
                qsort(found, rescored, 2 * sizeof(double), s_cmp_pair);
                for (size_t i = 0; i < k; i++)
                    cr_assert_eq(found[2 * i + 1], truth[2 * i + 1],
                                 "%s %s query %zu: rank %zu is row %g, brute force says %g",
                                 quant_kind_name((quant_kind_t)kind), shoal_metric_name(metric), qi,
                                 i, found[2 * i + 1], truth[2 * i + 1]);
                cr_log_info("%s %s query %zu: re-scored %zu of %zu",
                            quant_kind_name((quant_kind_t)kind), shoal_metric_name(metric), qi,
                            rescored, n);
            }
            quant_sq8_query_fini(&pq);
        }
        free(truth);
        free(found);
        free(approx);
        free(sorted);
        free(lo);
        free(hi);
        s_coded_fini(&c);
        quant_sq8_destroy(&sq);
        free(rows);
        free(queries);
    }
}
