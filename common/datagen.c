/*
 * datagen.c - clustered, low-intrinsic-dimension synthetic vectors.
 *
 * The model (built once by datagen_new from one seed):
 *   B       an orthonormal basis of r = intrinsic_dim directions in R^dim:
 *           a Gaussian matrix orthonormalised by modified Gram-Schmidt, run
 *           twice per vector ("twice is enough", Giraud et al. 2005) so the
 *           basis stays orthonormal to rounding for any r <= dim;
 *   c_j     `clusters` centres in R^r, standard normal;
 *   w_j     mixture weights, log-normal (exp of a standard normal): the largest
 *           cluster is typically two orders of magnitude larger than the
 *           smallest, as in real corpora; kept as a cumulative table so a
 *           point picks its cluster by binary search;
 *   m       a fixed offset in R^dim whose norm is OFFSET_SCALE times that of a
 *           typical centre. Real embeddings are not centred at the origin, and
 *           without an offset inner-product search degenerates.
 * Point i of a stream is
 *     x = m + B (c_j + spread * z) + noise * e,   z ~ N(0, I_r), e ~ N(0, I_dim)
 * optionally scaled to unit length.
 *
 * Determinism: point i draws from its own generator, seeded by hashing
 * (seed, stream, i), so a point's bytes do not depend on which call, chunk or
 * thread produced it. All arithmetic is in double and rounded to float once;
 * the same binary gives the same bytes on every run.
 *
 * Rejected: one generator per stream advanced point by point (needs jump-ahead
 * to split work, and a chunked fill would give different bytes); float
 * arithmetic for the model (Gram-Schmidt loses orthogonality for large r).
 */
#include "common/datagen.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Offset norm relative to a typical centre's norm (sqrt(r)). With 0.75 two
 * random unit-normalised points have a cosine of about 0.3, as in many real
 * embedding sets. */
#define S_OFFSET_SCALE 0.75

/* Standard deviation of the log of the mixture weights. */
#define S_WEIGHT_SIGMA 1.0

/* Stream number used for the model itself: above every unsigned stream. */
#define S_MODEL_STREAM 0x1234567890abcdefULL


struct datagen {
    datagen_params_t params; /* as given, with the defaults filled in */
    size_t rank;             /* = params.intrinsic_dim */
    double *basis;           /* dim x rank: row d holds coordinate d of every direction */
    double *centres;         /* clusters x rank, row after row */
    double *cumweight;       /* clusters: cumulative weights, last one exactly 1 */
    double *offset;          /* dim: the mean the data is shifted to */
};

/* ------------------------------------------------------------------------ */
/* Random numbers                                                           */
/* ------------------------------------------------------------------------ */

/* A normal source that uses both Box-Muller values: half the cost per draw. */
typedef struct {
    shoal_rng_t rng; /* the underlying generator */
    double spare;    /* the second value of the last pair */
    int has_spare;   /* non-zero when spare is unused */
} gauss_t;

static void s_gauss_seed(gauss_t *g, uint64_t seed)
{
    shoal_rng_seed(&g->rng, seed);
    g->has_spare = 0;
    g->spare = 0.0;
}

static double s_gauss_next(gauss_t *g)
{
    if (g->has_spare) {
        g->has_spare = 0;
        return g->spare;
    }
    double z0;
    shoal_rng_normal_pair(&g->rng, &z0, &g->spare);
    g->has_spare = 1;
    return z0;
}

/* The seed of point `index` of `stream`: every argument changes every bit. */
static uint64_t s_point_seed(uint64_t seed, uint64_t stream, uint64_t index)
{
    uint64_t h = shoal_rng_mix64(seed ^ 0x243f6a8885a308d3ULL);
    h = shoal_rng_mix64(h ^ (stream + 0x13198a2e03707344ULL));
    h = shoal_rng_mix64(h ^ (index + 0xa4093822299f31d0ULL));
    return h;
}

/* ------------------------------------------------------------------------ */
/* Building the model                                                       */
/* ------------------------------------------------------------------------ */

static int s_check_params(datagen_params_t *p, shoal_err_t *err)
{
    if (p->dim < 1 || p->dim > DATAGEN_DIM_MAX)
        return shoal_err_set(err, SHOAL_EINVAL, "dim must be in [1, %d], got %zu", DATAGEN_DIM_MAX,
                             p->dim);
    if (p->intrinsic_dim == 0) {
        size_t r = p->dim / 8;
        r = r < 2 ? 2 : r > 32 ? 32 : r;
        p->intrinsic_dim = r > p->dim ? p->dim : r;
    }
    if (p->intrinsic_dim > p->dim || p->intrinsic_dim > DATAGEN_INTRINSIC_DIM_MAX)
        return shoal_err_set(err, SHOAL_EINVAL,
                             "intrinsic_dim must be in [1, min(dim=%zu, %d)], got %zu", p->dim,
                             DATAGEN_INTRINSIC_DIM_MAX, p->intrinsic_dim);
    if (p->clusters == 0)
        p->clusters = DATAGEN_CLUSTERS_DEFAULT;
    if (p->clusters > DATAGEN_CLUSTERS_MAX)
        return shoal_err_set(err, SHOAL_EINVAL, "clusters must be in [1, %d], got %zu",
                             DATAGEN_CLUSTERS_MAX, p->clusters);
    if (!isfinite(p->spread) || p->spread < 0)
        return shoal_err_set(err, SHOAL_EINVAL,
                             "spread must be finite and > 0 (0 = default %g), got %g",
                             (double)DATAGEN_SPREAD_DEFAULT, (double)p->spread);
    if (p->spread == 0)
        p->spread = DATAGEN_SPREAD_DEFAULT;
    if (!isfinite(p->noise) || p->noise < 0)
        return shoal_err_set(err, SHOAL_EINVAL,
                             "noise must be finite and > 0 (0 = default %g), got %g",
                             (double)DATAGEN_NOISE_DEFAULT, (double)p->noise);
    if (p->noise == 0)
        p->noise = DATAGEN_NOISE_DEFAULT;
    p->normalize = p->normalize ? 1 : 0;
    return SHOAL_OK;
}

/*
 * Fills basis (dim x rank) with an orthonormal set of rank Gaussian directions.
 * work holds rank * dim doubles: the directions as rows while they are built.
 */
static void s_build_basis(gauss_t *g, size_t dim, size_t rank, double *work, double *basis)
{
    for (size_t i = 0; i < rank; i++) {
        double *v = work + i * dim;
        double norm = 0.0;
        /* A Gaussian vector lies in the span of the previous ones with
         * probability zero; the loop only guards against rounding. */
        for (int attempt = 0; attempt < 16 && !(norm > 1e-6); attempt++) {
            for (size_t d = 0; d < dim; d++)
                v[d] = s_gauss_next(g);
            double before = 0.0;
            for (size_t d = 0; d < dim; d++)
                before += v[d] * v[d];
            for (int pass = 0; pass < 2; pass++) {
                for (size_t j = 0; j < i; j++) {
                    const double *q = work + j * dim;
                    double proj = 0.0;
                    for (size_t d = 0; d < dim; d++)
                        proj += v[d] * q[d];
                    for (size_t d = 0; d < dim; d++)
                        v[d] -= proj * q[d];
                }
            }
            double after = 0.0;
            for (size_t d = 0; d < dim; d++)
                after += v[d] * v[d];
            norm = before > 0 ? sqrt(after / before) : 0.0;
            if (norm > 1e-6) {
                double inv = 1.0 / sqrt(after);
                for (size_t d = 0; d < dim; d++)
                    v[d] *= inv;
            }
        }
    }
    for (size_t d = 0; d < dim; d++)
        for (size_t i = 0; i < rank; i++)
            basis[d * rank + i] = work[i * dim + d];
}

datagen_t *datagen_new(const datagen_params_t *params, shoal_err_t *err)
{
    datagen_t *gen = NULL;
    double *work = NULL;
    if (!params) {
        shoal_err_set(err, SHOAL_EINVAL, "datagen_new: params is NULL");
        return NULL;
    }
    datagen_params_t p = *params;
    if (s_check_params(&p, err) != SHOAL_OK)
        return NULL;

    /* dim <= 65536, rank <= 256 and clusters <= 1e6: none of the products
     * below can overflow a 64-bit size_t. */
    gen = calloc(1, sizeof *gen);
    if (!gen)
        goto fail_nomem;
    gen->params = p;
    gen->rank = p.intrinsic_dim;
    size_t rank = gen->rank;
    gen->basis = malloc(p.dim * rank * sizeof(double));
    gen->centres = malloc(p.clusters * rank * sizeof(double));
    gen->cumweight = malloc(p.clusters * sizeof(double));
    gen->offset = malloc(p.dim * sizeof(double));
    work = malloc(p.dim * rank * sizeof(double));
    if (!gen->basis || !gen->centres || !gen->cumweight || !gen->offset || !work)
        goto fail_nomem;

    gauss_t g;
    s_gauss_seed(&g, s_point_seed(p.seed, S_MODEL_STREAM, 0));
    s_build_basis(&g, p.dim, rank, work, gen->basis);
    free(work);
    work = NULL;

    for (size_t i = 0; i < p.clusters * rank; i++)
        gen->centres[i] = s_gauss_next(&g);

    double total = 0.0;
    for (size_t j = 0; j < p.clusters; j++) {
        total += exp(S_WEIGHT_SIGMA * s_gauss_next(&g));
        gen->cumweight[j] = total;
    }
    for (size_t j = 0; j < p.clusters; j++)
        gen->cumweight[j] /= total;
    gen->cumweight[p.clusters - 1] = 1.0;

    /* A Gaussian vector in R^dim has norm about sqrt(dim); scale it to
     * OFFSET_SCALE * sqrt(rank), the norm of a typical centre. */
    double scale = S_OFFSET_SCALE * sqrt((double)rank) / sqrt((double)p.dim);
    for (size_t d = 0; d < p.dim; d++)
        gen->offset[d] = scale * s_gauss_next(&g);
    return gen;

fail_nomem:
    shoal_err_set(err, SHOAL_ENOMEM, "datagen_new: out of memory for dim %zu, %zu clusters", p.dim,
                  p.clusters);
    free(work);
    datagen_destroy(&gen);
    return NULL;
}

void datagen_destroy(datagen_t **gen_p)
{
    if (!gen_p || !*gen_p)
        return;
    datagen_t *gen = *gen_p;
    free(gen->basis);
    free(gen->centres);
    free(gen->cumweight);
    free(gen->offset);
    free(gen);
    *gen_p = NULL;
}

const datagen_params_t *datagen_params(const datagen_t *gen)
{
    return &gen->params;
}

/* ------------------------------------------------------------------------ */
/* Drawing points                                                           */
/* ------------------------------------------------------------------------ */

/* The first cluster whose cumulative weight exceeds u, u in [0, 1). */
static size_t s_pick_cluster(const datagen_t *gen, double u)
{
    size_t lo = 0, hi = gen->params.clusters - 1;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (gen->cumweight[mid] > u)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* One point: the draws are, in order, the cluster, rank subspace normals,
 * then dim noise normals. Changing that order changes every data set. */
static void s_draw_point(const datagen_t *gen, unsigned stream, size_t index, float *out)
{
    const datagen_params_t *p = &gen->params;
    const size_t rank = gen->rank;
    double coef[DATAGEN_INTRINSIC_DIM_MAX];
    gauss_t g;

    s_gauss_seed(&g, s_point_seed(p->seed, stream, index));
    size_t cluster = s_pick_cluster(gen, shoal_rng_uniform(&g.rng));
    const double *centre = gen->centres + cluster * rank;
    for (size_t i = 0; i < rank; i++)
        coef[i] = centre[i] + (double)p->spread * s_gauss_next(&g);

    double norm_sq = 0.0;
    for (size_t d = 0; d < p->dim; d++) {
        const double *row = gen->basis + d * rank;
        double x = gen->offset[d];
        for (size_t i = 0; i < rank; i++)
            x += row[i] * coef[i];
        x += (double)p->noise * s_gauss_next(&g);
        out[d] = (float)x;
        norm_sq += x * x;
    }
    if (p->normalize && norm_sq > 0) {
        double inv = 1.0 / sqrt(norm_sq);
        for (size_t d = 0; d < p->dim; d++)
            out[d] = (float)((double)out[d] * inv);
    }
}

void datagen_fill(const datagen_t *gen, unsigned stream, size_t first, size_t n, float *out)
{
    const size_t dim = gen->params.dim;
    for (size_t i = 0; i < n; i++)
        s_draw_point(gen, stream, first + i, out + i * dim);
}
