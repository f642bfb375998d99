/*
 * datagen.h - deterministic synthetic data that looks like embeddings.
 *
 * Uniform random vectors are a worst case no real embedding resembles (every
 * point is nearly equidistant from every other). Real embeddings are clustered
 * and have a low intrinsic dimension, so the generator draws:
 *   - a random basis of `intrinsic_dim` directions in R^dim;
 *   - `clusters` centres in that subspace, with unequal weights (some clusters
 *     are much larger than others, as in real data);
 *   - each point: a centre chosen by weight, plus Gaussian spread inside the
 *     subspace, mapped to R^dim, plus small isotropic Gaussian noise in R^dim;
 *   - optionally scaled to unit length (for cosine / inner-product data).
 *
 * Determinism: point i depends only on (seed, stream, i), never on how the work
 * is split, so any chunk or thread layout yields identical bytes. Streams keep
 * base vectors and queries apart: queries are fresh draws from the same
 * distribution, not copies of base points.
 *
 * Thread-safety: a datagen_t is read-only after datagen_new; datagen_fill may be
 * called from several threads at once.
 */
#ifndef SHOAL_DATAGEN_H
#define SHOAL_DATAGEN_H

#include "common/error.h"
#include "common/rng.h" /* its generator; code that only needs random numbers includes rng.h */

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Stream numbers for datagen_fill. */
#define DATAGEN_STREAM_BASE  0
#define DATAGEN_STREAM_QUERY 1

/*
 * Limits checked by datagen_new (SHOAL_EINVAL names the field). The intrinsic
 * dimension is capped because building the basis costs intrinsic_dim^2 * dim and
 * every point costs intrinsic_dim * dim.
 */
#define DATAGEN_DIM_MAX           65536
#define DATAGEN_INTRINSIC_DIM_MAX 256
#define DATAGEN_CLUSTERS_DEFAULT  100
#define DATAGEN_CLUSTERS_MAX      1000000
#define DATAGEN_SPREAD_DEFAULT    0.35f
#define DATAGEN_NOISE_DEFAULT     0.05f

typedef struct {
    size_t dim;           /* output dimension, >= 1 */
    size_t intrinsic_dim; /* subspace dimension; 0 = choose (dim / 8 in 2..32, <= dim) */
    size_t clusters;      /* mixture components; 0 = choose (100) */
    float spread;         /* within-cluster std-dev relative to the centres' spread; 0 = 0.35 */
    float noise;          /* isotropic noise std-dev relative to the same; 0 = 0.05 */
    int normalize;        /* non-zero: scale every vector to unit length */
    uint64_t seed;        /* everything follows from this */
} datagen_params_t;

typedef struct datagen datagen_t;

/* Builds the basis and the mixture from params. NULL on error (err says why). */
datagen_t *datagen_new(const datagen_params_t *params, shoal_err_t *err);

/* Frees; NULL-safe; sets *gen_p to NULL. */
void datagen_destroy(datagen_t **gen_p);

/* The parameters in effect, with the zero defaults filled in. */
const datagen_params_t *datagen_params(const datagen_t *gen);

/*
 * Writes points [first, first + n) of the given stream to out (n * dim floats,
 * row after row).
 */
void datagen_fill(const datagen_t *gen, unsigned stream, size_t first, size_t n, float *out);

#ifdef __cplusplus
}
#endif

#endif
