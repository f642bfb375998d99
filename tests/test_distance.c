/*
 * test_distance.c - Criterion suite for common/distance.
 *
 * The SIMD kernels are checked against the scalar reference on every dim from
 * 1 to 300 (every tail length of both register widths, several times over)
 * and on sizes around powers of two, with misaligned pointers and strided
 * rows. Buffers are allocated to the exact size so that an AddressSanitizer
 * build catches any read past the end of a vector.
 *
 * The SHOAL_SIMD tests rely on Criterion running each test in a process of its
 * own (its default): the implementation is chosen once per process.
 */
#include "common/distance.h"
#include "common/error.h"
#include "common/log.h"

#include <criterion/criterion.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */
/* ------------------------------------------------------------------------ */

/* xorshift64*: small, deterministic, good enough for test inputs. */
static uint64_t s_rng_state = 0x9e3779b97f4a7c15ULL;

static float s_rand_float(float lo, float hi)
{
    s_rng_state ^= s_rng_state >> 12;
    s_rng_state ^= s_rng_state << 25;
    s_rng_state ^= s_rng_state >> 27;
    uint64_t bits = s_rng_state * 0x2545f4914f6cdd1dULL;
    float unit = (float)(bits >> 40) / (float)(1 << 24); /* [0, 1) */
    return lo + (hi - lo) * unit;
}

static void s_fill(float *v, size_t count)
{
    for (size_t i = 0; i < count; i++)
        v[i] = s_rand_float(-1.0f, 1.0f);
}

/* Exactly `count` floats, so ASan flags any access past the last one. */
static float *s_alloc_exact(size_t count)
{
    float *v = malloc(count * sizeof(float));
    cr_assert_not_null(v, "malloc of %zu floats failed", count);
    return v;
}

/* Double-precision references, and the magnitudes that bound float error. */
static double s_ref_l2sq(const float *a, const float *b, size_t dim)
{
    double sum = 0.0;
    for (size_t i = 0; i < dim; i++)
        sum += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    return sum;
}

static double s_ref_dot_magnitude(const float *a, const float *b, size_t dim)
{
    double sum = 0.0;
    for (size_t i = 0; i < dim; i++)
        sum += fabs((double)a[i] * b[i]);
    return sum;
}

static double s_ref_cosine(const float *a, const float *b, size_t dim)
{
    double dot = 0.0, na = 0.0, nb = 0.0;
    for (size_t i = 0; i < dim; i++) {
        dot += (double)a[i] * b[i];
        na += (double)a[i] * a[i];
        nb += (double)b[i] * b[i];
    }
    if (na == 0.0 || nb == 0.0)
        return 1.0;
    return 1.0 - dot / sqrt(na * nb);
}

/*
 * A float sum of `dim` terms is off by a few ulps of the sum of the terms'
 * magnitudes; two differently ordered sums may each be, so allow 1e-5 of it.
 */
static double s_tolerance(double magnitude)
{
    return 1e-5 * magnitude + 1e-6;
}

static const char *const s_impl_names[DIST_IMPL_COUNT] = {"scalar", "avx2", "avx512"};

/* The highest implementation this CPU supports. */
static dist_impl_t s_best_impl(void)
{
    dist_impl_t best = DIST_IMPL_SCALAR;
    for (int impl = 0; impl < DIST_IMPL_COUNT; impl++)
        if (dist_kernels_get((dist_impl_t)impl))
            best = (dist_impl_t)impl;
    return best;
}

/* ------------------------------------------------------------------------ */
/* SIMD against scalar                                                      */
/* ------------------------------------------------------------------------ */

static void s_check_pairs(const dist_kernels_t *simd, size_t dim, size_t offset)
{
    const dist_kernels_t *ref = dist_kernels_get(DIST_IMPL_SCALAR);
    /* offset 1 puts the vector 4 bytes into its block: never 16- or 32-byte aligned. */
    float *block_a = s_alloc_exact(dim + offset), *block_b = s_alloc_exact(dim + offset);
    float *a = block_a + offset, *b = block_b + offset;
    s_fill(a, dim);
    s_fill(b, dim);

    double l2_tol = s_tolerance(s_ref_l2sq(a, b, dim));
    double dot_tol = s_tolerance(s_ref_dot_magnitude(a, b, dim));
    float l2_ref = ref->l2sq(a, b, dim), dot_ref = ref->dot(a, b, dim);
    float l2 = simd->l2sq(a, b, dim), dot = simd->dot(a, b, dim);
    cr_assert_leq(fabs((double)l2 - l2_ref), l2_tol, "%s l2sq dim %zu offset %zu: %.9g vs %.9g",
                  simd->name, dim, offset, l2, l2_ref);
    cr_assert_leq(fabs((double)dot - dot_ref), dot_tol, "%s dot dim %zu offset %zu: %.9g vs %.9g",
                  simd->name, dim, offset, dot, dot_ref);

    double cos_exact = s_ref_cosine(a, b, dim);
    float cos_ref = ref->cosine(a, b, dim), cos = simd->cosine(a, b, dim);
    cr_assert_leq(fabs(cos_ref - cos_exact), 1e-5, "scalar cosine dim %zu: %.9g vs %.9g", dim,
                  cos_ref, cos_exact);
    cr_assert_leq(fabs(cos - cos_exact), 1e-5, "%s cosine dim %zu offset %zu: %.9g vs %.9g",
                  simd->name, dim, offset, cos, cos_exact);

    /* Nearly parallel vectors: cosine near 0, where its relative error shows. */
    for (size_t i = 0; i < dim; i++)
        b[i] = a[i] + 0.01f * s_rand_float(-1.0f, 1.0f);
    cos_exact = s_ref_cosine(a, b, dim);
    cos = simd->cosine(a, b, dim);
    cr_assert_leq(fabs(cos - cos_exact), 1e-5, "%s cosine near-parallel dim %zu: %.9g vs %.9g",
                  simd->name, dim, cos, cos_exact);

    free(block_a);
    free(block_b);
}

static void s_check_batch(const dist_kernels_t *simd, size_t n, size_t dim, size_t stride,
                          size_t offset)
{
    const dist_kernels_t *ref = dist_kernels_get(DIST_IMPL_SCALAR);
    /* The last row ends exactly at the end of the block: no padding to hide an over-read. */
    size_t base_count = (n - 1) * stride + dim;
    float *block_q = s_alloc_exact(dim + offset), *block_base = s_alloc_exact(base_count + offset);
    float *query = block_q + offset, *base = block_base + offset;
    float *out = s_alloc_exact(n), *out_ref = s_alloc_exact(n);
    s_fill(query, dim);
    s_fill(base, base_count);

    simd->l2sq_batch(query, base, n, dim, stride, out);
    ref->l2sq_batch(query, base, n, dim, stride, out_ref);
    for (size_t row = 0; row < n; row++) {
        const float *r = base + row * stride;
        cr_assert_eq(out_ref[row], ref->l2sq(query, r, dim), "scalar l2sq_batch row %zu", row);
        cr_assert_leq(fabs((double)out[row] - out_ref[row]), s_tolerance(s_ref_l2sq(query, r, dim)),
                      "%s l2sq_batch n %zu dim %zu stride %zu offset %zu row %zu: %.9g vs %.9g",
                      simd->name, n, dim, stride, offset, row, out[row], out_ref[row]);
    }

    simd->dot_batch(query, base, n, dim, stride, out);
    ref->dot_batch(query, base, n, dim, stride, out_ref);
    for (size_t row = 0; row < n; row++) {
        const float *r = base + row * stride;
        cr_assert_eq(out_ref[row], ref->dot(query, r, dim), "scalar dot_batch row %zu", row);
        cr_assert_leq(fabs((double)out[row] - out_ref[row]),
                      s_tolerance(s_ref_dot_magnitude(query, r, dim)),
                      "%s dot_batch n %zu dim %zu stride %zu offset %zu row %zu: %.9g vs %.9g",
                      simd->name, n, dim, stride, offset, row, out[row], out_ref[row]);
    }

    free(block_q);
    free(block_base);
    free(out);
    free(out_ref);
}

/*
 * Batch sizes: fewer rows than a block, exactly one block, and two blocks plus
 * three left over (the SIMD kernels take rows a quarter of the batch apart).
 */
static const size_t s_batch_rows[] = {3, 4, 11};

static void s_check_dim(const dist_kernels_t *simd, size_t dim)
{
    for (size_t offset = 0; offset <= 1; offset++) {
        s_check_pairs(simd, dim, offset);
        for (size_t i = 0; i < sizeof s_batch_rows / sizeof s_batch_rows[0]; i++) {
            s_check_batch(simd, s_batch_rows[i], dim, dim, offset);
            s_check_batch(simd, s_batch_rows[i], dim, dim + 3, offset);
        }
    }
}

static const size_t s_large_dims[] = {511,  512,  513,  1000, 1023, 1024,
                                      1025, 2047, 2048, 4095, 4096};

static void s_check_impl(dist_impl_t impl)
{
    const dist_kernels_t *simd = dist_kernels_get(impl);
    if (!simd)
        cr_skip_test("this CPU does not support %s", s_impl_names[impl]);
    cr_assert_eq(simd->impl, impl);
    cr_assert_str_eq(simd->name, s_impl_names[impl]);
    for (size_t dim = 1; dim <= 300; dim++)
        s_check_dim(simd, dim);
    for (size_t i = 0; i < sizeof s_large_dims / sizeof s_large_dims[0]; i++)
        s_check_dim(simd, s_large_dims[i]);
}

/* The scalar table against itself still checks it against the double references. */
Test(distance, scalar_matches_double_reference)
{
    s_check_impl(DIST_IMPL_SCALAR);
}

Test(distance, avx2_matches_scalar)
{
    s_check_impl(DIST_IMPL_AVX2);
}

Test(distance, avx512_matches_scalar)
{
    s_check_impl(DIST_IMPL_AVX512);
}

/* ------------------------------------------------------------------------ */
/* Choosing an implementation                                               */
/* ------------------------------------------------------------------------ */

Test(distance, chosen_table_is_supported)
{
    const dist_kernels_t *scalar = dist_kernels_get(DIST_IMPL_SCALAR);
    cr_assert_not_null(scalar, "scalar must always be available");
    cr_assert_eq(scalar->impl, DIST_IMPL_SCALAR);

    const dist_kernels_t *chosen = dist_kernels();
    cr_assert_not_null(chosen);
    cr_assert_eq(dist_kernels(), chosen, "the choice must not change");
    cr_assert_eq(dist_kernels_get(chosen->impl), chosen, "chose %s, which is not supported",
                 chosen->name);
    cr_assert_null(dist_kernels_get(DIST_IMPL_COUNT));
    cr_assert_null(dist_kernels_get((dist_impl_t)-1));
    for (int impl = 0; impl < DIST_IMPL_COUNT; impl++) {
        const dist_kernels_t *kernels = dist_kernels_get((dist_impl_t)impl);
        if (!kernels)
            continue;
        cr_assert_eq(kernels->impl, impl);
        cr_assert_str_eq(kernels->name, s_impl_names[impl]);
    }
    if (!getenv("SHOAL_SIMD"))
        cr_assert_eq(chosen->impl, s_best_impl(), "without SHOAL_SIMD the best one is chosen");
}

Test(distance, simd_env_forces_scalar)
{
    setenv("SHOAL_SIMD", "Scalar", 1);
    cr_assert_eq(dist_kernels()->impl, DIST_IMPL_SCALAR);
}

Test(distance, simd_env_invalid_falls_back_to_best)
{
    shoal_log_set_level(SHOAL_LOG_ERROR); /* the expected warning is noise here */
    setenv("SHOAL_SIMD", "sse9", 1);
    cr_assert_eq(dist_kernels()->impl, s_best_impl());
}

/* ------------------------------------------------------------------------ */
/* Metrics                                                                  */
/* ------------------------------------------------------------------------ */

Test(distance, metric_name_parse_round_trip)
{
    const shoal_metric_t metrics[] = {SHOAL_METRIC_L2, SHOAL_METRIC_IP, SHOAL_METRIC_COSINE};
    for (size_t i = 0; i < 3; i++) {
        shoal_metric_t parsed = (shoal_metric_t)-1;
        cr_assert_eq(shoal_metric_parse(shoal_metric_name(metrics[i]), &parsed), SHOAL_OK);
        cr_assert_eq(parsed, metrics[i]);
    }
    cr_assert_str_eq(shoal_metric_name(SHOAL_METRIC_L2), "l2");
    cr_assert_str_eq(shoal_metric_name(SHOAL_METRIC_IP), "ip");
    cr_assert_str_eq(shoal_metric_name(SHOAL_METRIC_COSINE), "cosine");
    cr_assert_str_eq(shoal_metric_name((shoal_metric_t)3), "?");
    cr_assert_str_eq(shoal_metric_name((shoal_metric_t)-1), "?");

    shoal_metric_t parsed;
    cr_assert_eq(shoal_metric_parse("CoSiNe", &parsed), SHOAL_OK);
    cr_assert_eq(parsed, SHOAL_METRIC_COSINE);
    cr_assert_eq(shoal_metric_parse("L2", &parsed), SHOAL_OK);
    cr_assert_eq(parsed, SHOAL_METRIC_L2);

    const char *bad[] = {"", "l1", "cos", "l2 ", " ip", "innerproduct", "?"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        parsed = SHOAL_METRIC_IP;
        cr_assert_eq(shoal_metric_parse(bad[i], &parsed), SHOAL_EINVAL, "\"%s\"", bad[i]);
        cr_assert_eq(parsed, SHOAL_METRIC_IP, "a failed parse must not store");
    }
    cr_assert_eq(shoal_metric_parse(NULL, &parsed), SHOAL_EINVAL);
}

Test(distance, metric_hand_computed)
{
    const float a[3] = {1.0f, 2.0f, 3.0f};
    const float b[3] = {4.0f, -5.0f, 6.0f};
    /* (1-4)^2 + (2+5)^2 + (3-6)^2 = 9 + 49 + 9; a.b = 4 - 10 + 18; |a|^2 = 14, |b|^2 = 77 */
    cr_assert_eq(dist_metric(SHOAL_METRIC_L2, a, b, 3), 67.0f);
    cr_assert_eq(dist_metric(SHOAL_METRIC_IP, a, b, 3), -12.0f);
    double cosine = 1.0 - 12.0 / sqrt(14.0 * 77.0);
    cr_assert_float_eq(dist_metric(SHOAL_METRIC_COSINE, a, b, 3), cosine, 1e-6);

    cr_assert_eq(dist_l2sq(a, b, 3), 67.0f);
    cr_assert_eq(dist_dot(a, b, 3), 12.0f);
    cr_assert_float_eq(dist_cosine(a, b, 3), cosine, 1e-6);
    cr_assert_eq(dist_norm_sq(a, 3), 14.0f);
    cr_assert_eq(dist_norm_sq(b, 3), 77.0f);
}

Test(distance, cosine_extremes)
{
    for (int impl = 0; impl < DIST_IMPL_COUNT; impl++) {
        const dist_kernels_t *k = dist_kernels_get((dist_impl_t)impl);
        if (!k)
            continue;
        const size_t dims[] = {1, 7, 16, 33, 100};
        for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++) {
            size_t dim = dims[d];
            float *zero = s_alloc_exact(dim), *x = s_alloc_exact(dim), *y = s_alloc_exact(dim);
            memset(zero, 0, dim * sizeof(float));
            s_fill(x, dim);
            for (size_t i = 0; i < dim; i++)
                y[i] = -3.0f * x[i];
            cr_assert_eq(k->cosine(zero, x, dim), 1.0f, "%s dim %zu", k->name, dim);
            cr_assert_eq(k->cosine(x, zero, dim), 1.0f, "%s dim %zu", k->name, dim);
            cr_assert_eq(k->cosine(zero, zero, dim), 1.0f, "%s dim %zu", k->name, dim);
            cr_assert_float_eq(k->cosine(x, x, dim), 0.0f, 1e-6, "%s dim %zu", k->name, dim);
            cr_assert_float_eq(k->cosine(x, y, dim), 2.0f, 1e-6, "%s dim %zu", k->name, dim);
            free(zero);
            free(x);
            free(y);
        }
    }
    const float zero[2] = {0.0f, 0.0f}, one[2] = {1.0f, 0.0f};
    cr_assert_eq(dist_metric(SHOAL_METRIC_COSINE, zero, one, 2), 1.0f);
}

/* ------------------------------------------------------------------------ */
/* Normalising                                                              */
/* ------------------------------------------------------------------------ */

Test(distance, normalize_gives_unit_norm)
{
    float v[2] = {3.0f, 4.0f};
    cr_assert_eq(dist_normalize(v, 2), SHOAL_OK);
    cr_assert_float_eq(v[0], 0.6f, 1e-7);
    cr_assert_float_eq(v[1], 0.8f, 1e-7);

    const size_t dims[] = {1, 5, 128, 1000};
    for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++) {
        float *w = s_alloc_exact(dims[d]);
        s_fill(w, dims[d]);
        w[0] = 0.5f; /* never all zero */
        cr_assert_eq(dist_normalize(w, dims[d]), SHOAL_OK);
        cr_assert_float_eq(dist_norm_sq(w, dims[d]), 1.0f, 1e-5, "dim %zu", dims[d]);
        free(w);
    }

    /* Squares of these overflow a float; the norm must still come out right. */
    float big[2] = {3e30f, -4e30f};
    cr_assert_eq(dist_normalize(big, 2), SHOAL_OK);
    cr_assert_float_eq(big[0], 0.6f, 1e-7);
    cr_assert_float_eq(big[1], -0.8f, 1e-7);

    /* And squares of these underflow it. */
    float tiny[2] = {3e-30f, 4e-30f};
    cr_assert_eq(dist_normalize(tiny, 2), SHOAL_OK);
    cr_assert_float_eq(tiny[0], 0.6f, 1e-7);
    cr_assert_float_eq(tiny[1], 0.8f, 1e-7);
}

Test(distance, normalize_rejects_and_leaves_unchanged)
{
    float zero[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    float nan_v[4] = {1.0f, 2.0f, NAN, 3.0f};
    float inf_v[4] = {1.0f, INFINITY, 2.0f, 3.0f};
    float ninf_v[4] = {-INFINITY, 1.0f, 2.0f, 3.0f};
    float *cases[] = {zero, nan_v, inf_v, ninf_v};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        float before[4];
        memcpy(before, cases[c], sizeof before);
        cr_assert_eq(dist_normalize(cases[c], 4), SHOAL_EINVAL, "case %zu", c);
        cr_assert_eq(memcmp(before, cases[c], sizeof before), 0, "case %zu was modified", c);
    }
}
