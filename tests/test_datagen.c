/*
 * test_datagen.c - the synthetic data generator: determinism (seed, chunking,
 * streams), unit norms, that the data is clustered and of low intrinsic
 * dimension, parameter checks, and the random number generator.
 */
#include "common/datagen.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static datagen_t *s_new(size_t dim, size_t intrinsic, int normalize, uint64_t seed)
{
    datagen_params_t p = {
        .dim = dim, .intrinsic_dim = intrinsic, .normalize = normalize, .seed = seed};
    shoal_err_t err;
    shoal_err_clear(&err);
    datagen_t *gen = datagen_new(&p, &err);
    cr_assert_not_null(gen, "datagen_new: %s", err.msg);
    return gen;
}

/* n points of a stream in a new array (the caller frees it). */
static float *s_draw(const datagen_t *gen, unsigned stream, size_t n)
{
    size_t dim = datagen_params(gen)->dim;
    float *v = malloc(n * dim * sizeof(float));
    cr_assert_not_null(v);
    datagen_fill(gen, stream, 0, n, v);
    return v;
}

static double s_dist(const float *a, const float *b, size_t dim)
{
    double sum = 0.0;
    for (size_t d = 0; d < dim; d++) {
        double diff = (double)a[d] - b[d];
        sum += diff * diff;
    }
    return sqrt(sum);
}

/* ------------------------------------------------------------------------ */
/* Determinism                                                              */
/* ------------------------------------------------------------------------ */

Test(datagen, same_seed_same_bytes)
{
    datagen_t *a = s_new(40, 0, 0, 42);
    datagen_t *b = s_new(40, 0, 0, 42);
    float *va = s_draw(a, DATAGEN_STREAM_BASE, 1000);
    float *vb = s_draw(b, DATAGEN_STREAM_BASE, 1000);
    cr_assert(memcmp(va, vb, 1000 * 40 * sizeof(float)) == 0);
    free(va);
    free(vb);
    datagen_destroy(&a);
    datagen_destroy(&b);
    cr_assert_null(a);
}

Test(datagen, chunking_does_not_change_bytes)
{
    const size_t dim = 33;
    datagen_t *gen = s_new(dim, 0, 1, 7);
    float *whole = s_draw(gen, DATAGEN_STREAM_BASE, 1000);
    float *parts = malloc(1000 * dim * sizeof(float));
    cr_assert_not_null(parts);
    datagen_fill(gen, DATAGEN_STREAM_BASE, 0, 500, parts);
    datagen_fill(gen, DATAGEN_STREAM_BASE, 500, 500, parts + 500 * dim);
    cr_assert(memcmp(whole, parts, 1000 * dim * sizeof(float)) == 0);

    /* Odd chunks too, one point at a time at the end. */
    memset(parts, 0, 1000 * dim * sizeof(float));
    datagen_fill(gen, DATAGEN_STREAM_BASE, 0, 1, parts);
    datagen_fill(gen, DATAGEN_STREAM_BASE, 1, 996, parts + dim);
    for (size_t i = 997; i < 1000; i++)
        datagen_fill(gen, DATAGEN_STREAM_BASE, i, 1, parts + i * dim);
    cr_assert(memcmp(whole, parts, 1000 * dim * sizeof(float)) == 0);
    free(whole);
    free(parts);
    datagen_destroy(&gen);
}

/* Counts rows that are equal byte for byte at the same position. */
static size_t s_equal_rows(const float *a, const float *b, size_t n, size_t dim)
{
    size_t equal = 0;
    for (size_t i = 0; i < n; i++)
        equal += memcmp(a + i * dim, b + i * dim, dim * sizeof(float)) == 0;
    return equal;
}

Test(datagen, different_seed_different_data)
{
    datagen_t *a = s_new(16, 0, 0, 1);
    datagen_t *b = s_new(16, 0, 0, 2);
    float *va = s_draw(a, DATAGEN_STREAM_BASE, 500);
    float *vb = s_draw(b, DATAGEN_STREAM_BASE, 500);
    cr_assert_eq(s_equal_rows(va, vb, 500, 16), 0);
    free(va);
    free(vb);
    datagen_destroy(&a);
    datagen_destroy(&b);
}

Test(datagen, streams_differ)
{
    datagen_t *gen = s_new(16, 0, 0, 3);
    float *base = s_draw(gen, DATAGEN_STREAM_BASE, 500);
    float *query = s_draw(gen, DATAGEN_STREAM_QUERY, 500);
    cr_assert_eq(s_equal_rows(base, query, 500, 16), 0);
    /* Not merely shifted: no query equals any base point. */
    for (size_t q = 0; q < 500; q++)
        for (size_t i = 0; i < 500; i++)
            cr_assert(memcmp(query + q * 16, base + i * 16, 16 * sizeof(float)) != 0);
    free(base);
    free(query);
    datagen_destroy(&gen);
}

/* ------------------------------------------------------------------------ */
/* Shape of the data                                                        */
/* ------------------------------------------------------------------------ */

Test(datagen, normalize_gives_unit_norms)
{
    const size_t dims[] = {1, 3, 50, 128, 769};
    for (size_t t = 0; t < sizeof dims / sizeof dims[0]; t++) {
        size_t dim = dims[t];
        datagen_t *gen = s_new(dim, 0, 1, 11);
        float *v = s_draw(gen, DATAGEN_STREAM_QUERY, 300);
        for (size_t i = 0; i < 300; i++) {
            double norm_sq = 0.0;
            for (size_t d = 0; d < dim; d++)
                norm_sq += (double)v[i * dim + d] * v[i * dim + d];
            cr_assert(fabs(sqrt(norm_sq) - 1.0) < 1e-5, "dim %zu row %zu: norm %.9f", dim, i,
                      sqrt(norm_sq));
        }
        free(v);
        datagen_destroy(&gen);
    }
}

/*
 * Mean nearest-neighbour distance over mean distance between random pairs.
 * Near 1 when every point is about equally far from every other (uniform data
 * in high dimension); small when points have close neighbours (clusters).
 */
static double s_nn_ratio(const float *v, size_t n, size_t dim)
{
    double nn_sum = 0.0;
    for (size_t i = 0; i < n; i++) {
        double best = INFINITY;
        for (size_t j = 0; j < n; j++) {
            if (j == i)
                continue;
            double d = s_dist(v + i * dim, v + j * dim, dim);
            if (d < best)
                best = d;
        }
        nn_sum += best;
    }
    shoal_rng_t rng;
    shoal_rng_seed(&rng, 99);
    double pair_sum = 0.0;
    const size_t pairs = 4000;
    for (size_t p = 0; p < pairs; p++) {
        size_t i = shoal_rng_next(&rng) % n;
        size_t j = shoal_rng_next(&rng) % (n - 1);
        j += j >= i; /* any j but i */
        pair_sum += s_dist(v + i * dim, v + j * dim, dim);
    }
    return (nn_sum / n) / (pair_sum / pairs);
}

Test(datagen, data_is_clustered)
{
    const size_t n = 1500, dim = 32;
    datagen_t *gen = s_new(dim, 0, 0, 5);
    float *clustered = s_draw(gen, DATAGEN_STREAM_BASE, n);
    float *uniform = malloc(n * dim * sizeof(float));
    cr_assert_not_null(uniform);
    shoal_rng_t rng;
    shoal_rng_seed(&rng, 5);
    for (size_t i = 0; i < n * dim; i++)
        uniform[i] = (float)shoal_rng_uniform(&rng);

    double r_clustered = s_nn_ratio(clustered, n, dim);
    double r_uniform = s_nn_ratio(uniform, n, dim);
    /* Measured over seeds 1..6: 0.17-0.19 against 0.65, a factor of 3.5. */
    cr_assert(r_clustered < 0.5 * r_uniform, "nn/random distance: clustered %.3f, uniform %.3f",
              r_clustered, r_uniform);
    free(clustered);
    free(uniform);
    datagen_destroy(&gen);
}

/*
 * Fraction of the total variance of v captured by its best `rank`-dimensional
 * subspace, from below: orthogonal (subspace) iteration on the covariance in
 * double. trace(Q^T C Q) for any orthonormal Q is at most the sum of the top
 * `rank` eigenvalues, so an unconverged Q can only make the fraction smaller
 * and the assertions that use it stricter.
 */
static double s_top_variance_fraction(const float *v, size_t n, size_t dim, size_t rank)
{
    double *mean = calloc(dim, sizeof(double));
    double *cov = calloc(dim * dim, sizeof(double));
    double *q = malloc(dim * rank * sizeof(double));
    double *z = malloc(dim * rank * sizeof(double));
    cr_assert(mean && cov && q && z);

    for (size_t i = 0; i < n; i++)
        for (size_t d = 0; d < dim; d++)
            mean[d] += v[i * dim + d];
    for (size_t d = 0; d < dim; d++)
        mean[d] /= (double)n;
    for (size_t i = 0; i < n; i++)
        for (size_t a = 0; a < dim; a++) {
            double xa = v[i * dim + a] - mean[a];
            for (size_t b = a; b < dim; b++)
                cov[a * dim + b] += xa * (v[i * dim + b] - mean[b]);
        }
    double total = 0.0;
    for (size_t a = 0; a < dim; a++) {
        for (size_t b = a; b < dim; b++)
            cov[b * dim + a] = cov[a * dim + b];
        total += cov[a * dim + a];
    }

    /* Q: dim x rank, columns stored as rows of length dim. */
    shoal_rng_t rng;
    shoal_rng_seed(&rng, 1);
    for (size_t i = 0; i < dim * rank; i++)
        q[i] = shoal_rng_normal(&rng);
    double captured = 0.0;
    for (int iter = 0; iter < 100; iter++) {
        /* Orthonormalise the columns (modified Gram-Schmidt). */
        for (size_t c = 0; c < rank; c++) {
            double *col = q + c * dim;
            for (size_t p = 0; p < c; p++) {
                const double *prev = q + p * dim;
                double dot = 0.0;
                for (size_t d = 0; d < dim; d++)
                    dot += col[d] * prev[d];
                for (size_t d = 0; d < dim; d++)
                    col[d] -= dot * prev[d];
            }
            double norm = 0.0;
            for (size_t d = 0; d < dim; d++)
                norm += col[d] * col[d];
            norm = sqrt(norm);
            for (size_t d = 0; d < dim; d++)
                col[d] /= norm;
        }
        /* Z = C Q, and trace(Q^T C Q) along the way. */
        captured = 0.0;
        for (size_t c = 0; c < rank; c++) {
            const double *col = q + c * dim;
            double *out = z + c * dim;
            for (size_t a = 0; a < dim; a++) {
                double sum = 0.0;
                for (size_t b = 0; b < dim; b++)
                    sum += cov[a * dim + b] * col[b];
                out[a] = sum;
                captured += col[a] * sum;
            }
        }
        memcpy(q, z, dim * rank * sizeof(double));
    }
    free(mean);
    free(cov);
    free(q);
    free(z);
    return captured / total;
}

Test(datagen, low_intrinsic_dimension)
{
    const size_t n = 3000, dim = 128;
    datagen_t *gen = s_new(dim, 8, 0, 17);
    float *v = s_draw(gen, DATAGEN_STREAM_BASE, n);
    double frac = s_top_variance_fraction(v, n, dim, 8);
    /* Expected: 8 * (1 + 0.35^2) / (8 * (1 + 0.35^2) + 128 * 0.05^2) ~ 0.96 */
    cr_assert(frac > 0.9, "top 8 components explain %.3f of the variance", frac);
    free(v);
    datagen_destroy(&gen);

    /* Contrast: with a 64-dimensional subspace the same 8 directions cannot
     * (measured 0.38-0.50 over seeds 1..6). */
    gen = s_new(dim, 64, 0, 17);
    v = s_draw(gen, DATAGEN_STREAM_BASE, n);
    frac = s_top_variance_fraction(v, n, dim, 8);
    cr_assert(frac < 0.65, "intrinsic 64: top 8 components explain %.3f", frac);
    free(v);
    datagen_destroy(&gen);
}

Test(datagen, not_centred_at_origin)
{
    const size_t n = 2000, dim = 64;
    datagen_t *gen = s_new(dim, 0, 0, 23);
    float *v = s_draw(gen, DATAGEN_STREAM_BASE, n);
    double mean[64] = {0};
    double spread_sq = 0.0;
    for (size_t i = 0; i < n; i++)
        for (size_t d = 0; d < dim; d++)
            mean[d] += v[i * dim + d] / (double)n;
    double mean_sq = 0.0;
    for (size_t d = 0; d < dim; d++)
        mean_sq += mean[d] * mean[d];
    for (size_t i = 0; i < n; i++)
        for (size_t d = 0; d < dim; d++)
            spread_sq += (v[i * dim + d] - mean[d]) * (v[i * dim + d] - mean[d]) / (double)n;
    /* The offset's norm is 0.75 of a typical centre's: well away from 0. */
    cr_assert(sqrt(mean_sq) > 0.3 * sqrt(spread_sq), "|mean| %.3f, rms spread %.3f", sqrt(mean_sq),
              sqrt(spread_sq));
    free(v);
    datagen_destroy(&gen);
}

Test(datagen, defaults_filled_in)
{
    const struct {
        size_t dim, intrinsic;
    } cases[] = {{1, 1}, {2, 2}, {8, 2}, {24, 3}, {128, 16}, {256, 32}, {1024, 32}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        datagen_t *gen = s_new(cases[i].dim, 0, 0, 1);
        const datagen_params_t *p = datagen_params(gen);
        cr_assert_eq(p->intrinsic_dim, cases[i].intrinsic, "dim %zu: intrinsic %zu", cases[i].dim,
                     p->intrinsic_dim);
        cr_assert_eq(p->clusters, 100);
        cr_assert_float_eq(p->spread, 0.35f, 1e-7);
        cr_assert_float_eq(p->noise, 0.05f, 1e-7);
        datagen_destroy(&gen);
    }
    /* dim 1: every point is still finite and distinct. */
    datagen_t *gen = s_new(1, 0, 0, 9);
    float v[64];
    datagen_fill(gen, DATAGEN_STREAM_BASE, 0, 64, v);
    for (size_t i = 0; i < 64; i++)
        cr_assert(isfinite(v[i]));
    cr_assert(v[0] != v[1]);
    datagen_destroy(&gen);
    datagen_destroy(&gen); /* NULL-safe */
    datagen_destroy(NULL);
}

/* ------------------------------------------------------------------------ */
/* Parameter checks                                                         */
/* ------------------------------------------------------------------------ */

static void s_expect_einval(datagen_params_t p, const char *field)
{
    shoal_err_t err;
    shoal_err_clear(&err);
    datagen_t *gen = datagen_new(&p, &err);
    cr_assert_null(gen, "expected %s to be rejected", field);
    cr_assert_eq(err.code, SHOAL_EINVAL);
    cr_assert(strstr(err.msg, field) != NULL, "message \"%s\" does not name %s", err.msg, field);
}

Test(datagen, invalid_params)
{
    datagen_params_t ok = {.dim = 16, .seed = 1};
    datagen_params_t p;

    p = ok, p.dim = 0;
    s_expect_einval(p, "dim");
    p = ok, p.dim = DATAGEN_DIM_MAX + 1;
    s_expect_einval(p, "dim");
    p = ok, p.intrinsic_dim = 17;
    s_expect_einval(p, "intrinsic_dim");
    p = ok, p.dim = 1000, p.intrinsic_dim = DATAGEN_INTRINSIC_DIM_MAX + 1;
    s_expect_einval(p, "intrinsic_dim");
    p = ok, p.clusters = DATAGEN_CLUSTERS_MAX + 1;
    s_expect_einval(p, "clusters");
    p = ok, p.spread = -0.1f;
    s_expect_einval(p, "spread");
    p = ok, p.spread = NAN;
    s_expect_einval(p, "spread");
    p = ok, p.spread = INFINITY;
    s_expect_einval(p, "spread");
    p = ok, p.noise = -1.0f;
    s_expect_einval(p, "noise");
    p = ok, p.noise = NAN;
    s_expect_einval(p, "noise");

    shoal_err_t err;
    shoal_err_clear(&err);
    cr_assert_null(datagen_new(NULL, &err));
    cr_assert_eq(err.code, SHOAL_EINVAL);
    /* err is optional */
    p = ok, p.dim = 0;
    cr_assert_null(datagen_new(&p, NULL));

    /* The limits themselves are accepted. */
    p = ok, p.clusters = 1, p.intrinsic_dim = 16, p.spread = 1e-3f, p.noise = 1e-3f;
    datagen_t *gen = datagen_new(&p, &err);
    cr_assert_not_null(gen, "%s", err.msg);
    datagen_destroy(&gen);
}

/* ------------------------------------------------------------------------ */
/* Random numbers                                                           */
/* ------------------------------------------------------------------------ */

Test(rng, normal_moments)
{
    shoal_rng_t rng;
    shoal_rng_seed(&rng, 12345);
    const size_t n = 100000;
    double sum = 0.0, sum_sq = 0.0;
    for (size_t i = 0; i < n; i++) {
        double z = shoal_rng_normal(&rng);
        cr_assert(isfinite(z));
        sum += z;
        sum_sq += z * z;
    }
    double mean = sum / n;
    double var = sum_sq / n - mean * mean;
    /* Standard errors: 1/sqrt(n) = 0.0032 for the mean, sqrt(2/n) = 0.0045 for
     * the variance; 5 of them each. */
    cr_assert(fabs(mean) < 0.016, "mean %.5f", mean);
    cr_assert(fabs(var - 1.0) < 0.023, "variance %.5f", var);
}

Test(rng, uniform_range_and_mean)
{
    shoal_rng_t rng;
    shoal_rng_seed(&rng, 0);
    double sum = 0.0;
    const size_t n = 100000;
    for (size_t i = 0; i < n; i++) {
        double u = shoal_rng_uniform(&rng);
        cr_assert(u >= 0.0 && u < 1.0);
        sum += u;
    }
    /* sd of the mean: sqrt(1/12 / n) = 0.0009 */
    cr_assert(fabs(sum / n - 0.5) < 0.005, "mean %.5f", sum / n);
}

Test(rng, deterministic_and_seed_dependent)
{
    shoal_rng_t a, b, c;
    shoal_rng_seed(&a, 77);
    shoal_rng_seed(&b, 77);
    shoal_rng_seed(&c, 78);
    int differs = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t x = shoal_rng_next(&a);
        uint64_t y = shoal_rng_next(&b);
        uint64_t z = shoal_rng_next(&c);
        cr_assert_eq(x, y);
        differs |= x != z;
    }
    cr_assert(differs);
    /* Seed 0 is fine: splitmix64 never leaves the state all zero. */
    shoal_rng_seed(&a, 0);
    cr_assert(a.s[0] | a.s[1] | a.s[2] | a.s[3]);
    uint64_t first = shoal_rng_next(&a);
    uint64_t second = shoal_rng_next(&a);
    cr_assert_neq(first, second);
}
