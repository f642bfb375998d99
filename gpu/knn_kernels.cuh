/*
 * knn_kernels.cuh - private: the exact engine's kernels as host functions
 * that launch them (gpu/knn_kernels.cu), for the host orchestration
 * (gpu/knn_cuda.cu). Faiss's split: kernels in one layer, the engine that
 * plans tiles, owns buffers and streams in the next. Each launcher queues
 * its kernel on stream st and returns the launch status (cudaGetLastError);
 * the current device must be the one the pointers live on.
 */
#ifndef SHOAL_KNN_KERNELS_CUH
#define SHOAL_KNN_KERNELS_CUH

#include "gpu/knn_cuda.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <stddef.h>
#include <stdint.h>

#define SEL_THREADS 256             /* threads of a select block */
#define SEL_V 4                     /* loads in flight per thread */
#define SEL_CHUNK (SEL_THREADS * SEL_V) /* columns a select block reads per step */

/* Entries of the select kernel's shared buffer for k: a power of two >= k + SEL_CHUNK. */
unsigned knn_sel_cap(size_t k);

/* A GEMM tile as the select kernel reads it: dots is nq x ld, row-major. */
typedef struct {
    const float *dots;   /* q.x of the tile */
    size_t ld;           /* columns (rows of the store) in the tile */
    const float *rnorm;  /* |x|^2 of the tile's rows */
    const uint64_t *rid; /* ids of the tile's rows */
    const float *qnorm;  /* |q|^2 of the tile's queries */
    int metric;          /* shoal_metric_t */
} knn_tile_t;

/* nlists sorted (dist, id) lists of len per query: list j of query q at q * qstride + j * lstride. */
typedef struct {
    const float *d;   /* distances */
    const uint64_t *i; /* ids */
    size_t qstride;   /* offset between queries */
    size_t len;       /* pairs per list */
    size_t lstride;   /* offset between lists of one query */
    size_t nlists;    /* lists per query */
} knn_lists_t;

/* |q|^2 per query; cosine: queries scaled to unit length in place; q16: fp16 copy (or NULL). */
cudaError_t knn_launch_prep(float *q, unsigned nq, unsigned dim, int metric, float *qnorm,
                            __half *q16, cudaStream_t st);

/* n entries of (+inf, TOPK_ID_NONE). */
cudaError_t knn_launch_fill(float *d, uint64_t *i, size_t n, cudaStream_t st);

/*
 * Block (q, s) of nq x splits keeps the best k of split s of the tile's
 * columns for query q, starting from in[(q * splits + s) * k ..] (sorted;
 * NULL = empty), writing out[..] at the same place (in == out allowed).
 */
cudaError_t knn_launch_select_tile(const knn_tile_t *t, unsigned nq, unsigned splits,
                                   const float *in_d, const uint64_t *in_i, float *out_d,
                                   uint64_t *out_i, unsigned k, cudaStream_t st);

/* The best k of each query's lists into out[q * k ..]. */
cudaError_t knn_launch_select_lists(const knn_lists_t *l, unsigned nq, float *out_d,
                                    uint64_t *out_i, unsigned k, cudaStream_t st);

/* Row rows[i] takes src[i * dim ..] (__half when fp16, else float), snorm[i], sid[i]. */
cudaError_t knn_launch_scatter(int fp16, void *vecs, float *norms, uint64_t *ids,
                               const size_t *rows, const void *src, const float *snorm,
                               const uint64_t *sid, size_t m, size_t dim, cudaStream_t st);

#endif
