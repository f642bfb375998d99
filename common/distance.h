/*
 * distance.h - the one place where vector distances are computed.
 *
 * Three metrics, all expressed as "smaller is nearer" so that every search and
 * top-k routine can use one ordering:
 *     SHOAL_METRIC_L2      d(a,b) = sum (a_i - b_i)^2          (squared L2)
 *     SHOAL_METRIC_IP      d(a,b) = -sum a_i b_i               (negated inner product)
 *     SHOAL_METRIC_COSINE  d(a,b) = 1 - a.b / (|a| |b|)        (1 when either is zero)
 * Indexes store cosine data normalised on the way in, after which cosine is
 * 1 + the IP distance; dist_cosine() is the full form for un-normalised inputs.
 *
 * Kernels come in implementations: a scalar reference that is always present,
 * AVX2+FMA and AVX-512F versions compiled with their own flags. One is chosen
 * once, at first use, from the CPU's features (the environment variable
 * SHOAL_SIMD=scalar|avx2|avx512 may force a lower one, for debugging and
 * benchmarks). Every kernel takes any dimension >= 1; tails are handled with
 * masked loads, never by reading past the end of a vector.
 *
 * SIMD sums in a different order from the scalar loop, so results differ in the
 * last bits; tests compare them with a tolerance derived from the magnitudes.
 *
 * Thread-safety: all functions are pure and may be called from any thread.
 */
#ifndef SHOAL_DISTANCE_H
#define SHOAL_DISTANCE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    SHOAL_METRIC_L2 = 0,
    SHOAL_METRIC_IP = 1,
    SHOAL_METRIC_COSINE = 2,
} shoal_metric_t;

/* "l2", "ip" or "cosine"; "?" for an invalid value. */
const char *shoal_metric_name(shoal_metric_t metric);

/* Parses "l2", "ip" or "cosine" (case-insensitive). Returns 0 or SHOAL_EINVAL. */
int shoal_metric_parse(const char *text, shoal_metric_t *metric);

/* ------------------------------------------------------------------------ */
/* Kernel tables                                                            */
/* ------------------------------------------------------------------------ */

typedef enum {
    DIST_IMPL_SCALAR = 0,
    DIST_IMPL_AVX2 = 1,   /* AVX2 + FMA, 8 floats per register */
    DIST_IMPL_AVX512 = 2, /* AVX-512F, 16 floats per register */
    DIST_IMPL_COUNT
} dist_impl_t;

/* One pair of vectors of dimension dim. */
typedef float (*dist_pair_fn)(const float *a, const float *b, size_t dim);

/*
 * One query against n vectors stored row after row, row i starting at
 * base + i * stride (stride >= dim, in floats): out[i] = f(query, row i).
 * The hot loop of exact search and of the ground truth.
 */
typedef void (*dist_batch_fn)(const float *query, const float *base, size_t n, size_t dim,
                              size_t stride, float *out);

typedef struct {
    const char *name;         /* "scalar", "avx2" or "avx512" */
    dist_impl_t impl;         /* which implementation this table is */
    dist_pair_fn l2sq;        /* sum (a_i - b_i)^2 */
    dist_pair_fn dot;         /* sum a_i b_i (not negated) */
    dist_pair_fn cosine;      /* 1 - a.b / (|a||b|); 1 when either norm is 0 */
    dist_batch_fn l2sq_batch; /* l2sq of query against each row */
    dist_batch_fn dot_batch;  /* dot of query with each row */
} dist_kernels_t;

/*
 * The kernel table chosen for this CPU (the best supported implementation,
 * or the one SHOAL_SIMD asks for if the CPU supports it). Never NULL. The first
 * call decides; later calls return the same table.
 */
const dist_kernels_t *dist_kernels(void);

/*
 * The table of one implementation, or NULL when this CPU (or OS) cannot run it.
 * For tests and benchmarks that compare implementations.
 */
const dist_kernels_t *dist_kernels_get(dist_impl_t impl);

/* ------------------------------------------------------------------------ */
/* Convenience: the chosen kernels, and a metric's distance                 */
/* ------------------------------------------------------------------------ */

float dist_l2sq(const float *a, const float *b, size_t dim);
float dist_dot(const float *a, const float *b, size_t dim);
float dist_cosine(const float *a, const float *b, size_t dim);

/* The metric's "smaller is nearer" distance, per the table at the top. */
float dist_metric(shoal_metric_t metric, const float *a, const float *b, size_t dim);

/* Squared norm sum a_i^2. */
float dist_norm_sq(const float *a, size_t dim);

/*
 * Scales v to unit length in place. Returns 0, or SHOAL_EINVAL when v is zero
 * or not finite (v is then left as it was).
 */
int dist_normalize(float *v, size_t dim);

#ifdef __cplusplus
}
#endif

#endif
