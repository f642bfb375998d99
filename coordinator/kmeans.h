/*
 * kmeans.h - training the IVF centroids (k-means) and routing vectors to them.
 *
 * kmeans_train runs Lloyd's algorithm (Lloyd 1957/1982, "Least squares
 * quantization in PCM") on a sample. The assignment step is the exact k-NN
 * engine (gpu/knn.h): the centroids are the engine's stored vectors (ids
 * 0..nlist-1, upserted every iteration) and the sample is searched with k = 1,
 * so training runs on the GPU when there is one, and ties go to the smaller
 * centroid id, which makes a CPU run deterministic for a fixed seed. The update
 * step accumulates in double.
 *
 * Initialisation: k-means++ (Arthur & Vassilvitskii 2007, "k-means++: the
 * advantages of careful seeding", D^2 sampling; the greedy form that keeps
 * the best of 2 + ln(nlist) candidates per step) by default, or nlist
 * distinct sample points drawn uniformly.
 *
 * Metrics (distances as in distance.h, "smaller is nearer"):
 *   L2      the textbook objective, sum of squared distances.
 *   cosine  spherical k-means: the sample is normalised (a copy), centroids
 *           are the normalised means; objective sum of (1 - cos).
 *   IP      an IVF under inner product routes a vector to the centroid of
 *           largest inner product. With free-length centroids that favours
 *           long centroids, so here centroids are kept at unit length and the
 *           sample is NOT normalised (its norms are what IP queries see). The
 *           objective is sum of -<x, c>; over unit c its Lloyd update is
 *           exactly c = normalise(sum of the cluster), so the objective still
 *           never increases. It is spherical k-means weighted by |x|.
 *
 * Empty clusters: a centroid whose cluster is empty after an assignment takes
 * the point of the largest cluster (ties: smaller id) that is farthest from
 * its centroid (ties: smaller row), and that point moves to it. Faiss instead
 * copies the largest centroid and perturbs both copies by (1 +- eps); the
 * far-point rule was chosen because it never increases the objective (the
 * point's cost drops to its minimum and the donor's mean only improves), it
 * does not rely on the next assignment to break a tie, and it works when the
 * donor centroid is the zero vector. Every split is counted; no centroid is
 * ever left empty. (Under cosine/IP a cluster whose sum is the zero vector
 * has no mean direction; it keeps its previous centroid, which is optimal for
 * it since every unit c then scores the same.)
 *
 * Validation: vectors are checked once where they enter the coordinator
 * (vec_check.h); kmeans_assign trusts its callers. kmeans_train runs that same
 * check (vec_check_rows) on its sample as the library's guard for direct
 * callers (tests, benches): one pass per training, nothing inside re-checks.
 *
 * Thread-safety: both functions are reentrant; each creates its own engine.
 */
#ifndef SHOAL_KMEANS_H
#define SHOAL_KMEANS_H

#include "common/distance.h"
#include "common/error.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KMEANS_MAX_ITERS_DEFAULT 25
#define KMEANS_MAX_ITERS_MAX 100000
#define KMEANS_TOL_DEFAULT 1e-4
#define KMEANS_NLIST_MAX UINT32_MAX /* list numbers travel as uint32 */

typedef enum {
    KMEANS_INIT_PLUSPLUS = 0, /* greedy D^2 sampling (Arthur & Vassilvitskii 2007); default */
    KMEANS_INIT_RANDOM = 1,   /* nlist distinct sample rows, uniformly */
} kmeans_init_t;

/* Options; a zeroed struct (or NULL) gives every default. */
typedef struct {
    size_t max_iters;   /* Lloyd iterations at most; 0 = KMEANS_MAX_ITERS_DEFAULT */
    kmeans_init_t init; /* seeding method */
    uint64_t seed;      /* seeds init; same seed + same CPU engine = same centroids */
    const char *device; /* engine device: NULL/"auto", "cpu", "gpu:0,..." (knn.h) */
    size_t threads;     /* seeding and engine CPU threads; 0 = every online core */
    double tol;         /* stop when |obj_prev - obj| <= tol |obj_prev|; 0 = default, <0 = never */
} kmeans_opts_t;

/* What a run did. The two arrays are optional and the caller's. */
typedef struct {
    size_t iters;        /* assignment + update rounds run (1..max_iters) */
    double objective;    /* sum of sample-to-nearest-centroid distances at the last assignment */
    size_t empty_splits; /* empty clusters refilled, over all iterations */
    uint64_t *sizes;     /* in: NULL or nlist slots; out: points per centroid in the final
                            partition (every one >= 1; the centroids are its means) */
    double *objectives;  /* in: NULL or max_iters slots; out: objective of each iteration's
                            assignment, iters of them; never increasing (up to rounding) */
} kmeans_result_t;

/*
 * Trains nlist centroids (written to centroids: nlist x dim floats, the
 * caller's) on n sample rows of dim floats. result may be NULL. Returns 0, or
 * SHOAL_EINVAL (dim 0, nlist 0 or > n, a non-finite value or - under cosine - a
 * zero row, naming it), SHOAL_ENOMEM, or the engine's error (SHOAL_ENODEV for a
 * "gpu:" device that is not there).
 */
int kmeans_train(const float *sample, size_t n, size_t dim, shoal_metric_t metric, size_t nlist,
                 const kmeans_opts_t *opts, float *centroids, kmeans_result_t *result,
                 shoal_err_t *err);

/*
 * Routing: for each of n vectors its nprobe nearest centroids under metric,
 * best first, ties by centroid number: lists[i*nprobe ..]. nprobe = 1 routes
 * inserts; nprobe > 1 picks the lists a query probes. device as in
 * kmeans_opts_t. nprobe must be in 1..nlist.
 */
int kmeans_assign(const float *centroids, size_t nlist, const float *vecs, size_t n,
                  size_t dim, shoal_metric_t metric, size_t nprobe, const char *device,
                  uint32_t *lists, shoal_err_t *err);

#ifdef __cplusplus
}
#endif

#endif
