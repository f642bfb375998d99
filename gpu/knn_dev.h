/*
 * knn_dev.h - private: the device side of the exact engine as one small
 * table of functions, so the front (gpu/knn.c) drives the CUDA engine
 * (knn_cuda.cu) in a CUDA build and a host emulation of a device
 * (knn_emu.c) in the suites, which check the front's contract (exact answers
 * from GEMM-form candidates, a failing device falling back to the CPU)
 * without a GPU.
 *
 * The contract every backend keeps (knn_cuda.h says it for the GPU): rows
 * mirrored in the order the host store holds them; search returns, per
 * query, the k rows with the smallest scan distance (the GEMM form, or fp16
 * rows), ties by id, best first, padded with TOPK_ID_NONE / +INFINITY; a row
 * whose scan distance is NaN ranks first, as -INFINITY (knn_exact.h).
 * Errors: SHOAL_ENOMEM (out of device memory: the call changed nothing),
 * SHOAL_EGPU (the device failed: the front stops using it), SHOAL_EINVAL (a
 * caller's mistake).
 *
 * Ownership: create returns the backend's object, destroy frees it and nulls
 * the pointer; every array argument is borrowed for the call.
 * Thread-safety: none; the front serialises every call on one object.
 */
#ifndef SHOAL_KNN_DEV_H
#define SHOAL_KNN_DEV_H

#include "common/distance.h"
#include "common/error.h"
#include "gpu/knn.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *name; /* "cuda", "emu" */
    size_t k_max;     /* largest k of search */
    void *(*create)(const int *devices, int ndevices, size_t dim, shoal_metric_t metric,
                    int fp16, size_t mem_budget, shoal_err_t *err);
    void (*destroy)(void **dev_p);
    int (*reserve)(void *dev, size_t n, shoal_err_t *err);
    int (*append)(void *dev, const float *vecs, const float *norms_sq, const uint64_t *ids,
                  size_t m, shoal_err_t *err);
    int (*set_rows)(void *dev, const size_t *rows, const float *vecs, const float *norms_sq,
                    const uint64_t *ids, size_t m, shoal_err_t *err);
    int (*truncate)(void *dev, size_t n, shoal_err_t *err);
    int (*search)(void *dev, const float *queries, size_t nq, size_t k, uint64_t *ids,
                  float *dists, shoal_err_t *err);
    size_t (*device_bytes)(const void *dev);
} knn_dev_ops_t;

/*
 * An engine whose device side is `ops` on params->device's ordinals ("gpu:..."
 * required): what the suites use with the emulation. NULL on error.
 */
knn_engine_t *knn_engine_new_with(const knn_params_t *params, const knn_dev_ops_t *ops,
                                  shoal_err_t *err);

/* The device object behind a front engine, or NULL (the check program's profiling). */
void *knn_engine_dev(knn_engine_t *engine);

#endif
