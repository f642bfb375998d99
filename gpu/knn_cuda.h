/*
 * knn_cuda.h - private: the exact k-NN engine's device side, callable from C
 * (gpu/knn_cuda.cu). Only gpu/knn.c and the check program (gpu/gpu_check.c)
 * include this, and only in CUDA builds. No CUDA type appears here.
 *
 * A knn_cuda_t mirrors the host store's rows (flat.h) on one or several
 * devices: fp32 (or fp16) vectors, fp32 squared norms, uint64 ids. Global row
 * r lives on device (r / KNN_CUDA_BLOCK_ROWS) % ndevices, so the rows are dealt
 * out in blocks, round robin; each device's rows form a dense prefix of its own
 * arrays, which is what its GEMM reads. The caller keeps the mirror equal to
 * the host store: append new rows, re-copy changed rows, truncate after
 * removals. Rows are copied in as the host holds them (normalised for cosine).
 *
 * Search: queries are sent to the first device (and, with several devices,
 * broadcast with NCCL; one device makes no communicator), each device
 * computes GEMM tiles and a k-select kernel over its rows, the per-device
 * best k are gathered on the first device and merged there by the same
 * select kernel. Results are best first, ties by id, padded with
 * TOPK_ID_NONE / +INFINITY. Distances are the scan's GEMM form
 * (|q|^2 + |x|^2 - 2 q.x, -q.x, 1 - q.x; no clamp, a NaN ranked first as
 * -INFINITY), not re-scored: the front asks for more than k and makes the
 * answer exact (gpu/knn_exact.h). The kernels are gpu/knn_kernels.cu.
 *
 * Memory: the search tiles of every engine on a device come out of one
 * budget per device (gpu/knn_budget.h), or the caller's mem_budget.
 *
 * Thread-safety: none; the caller serialises every call on one engine.
 * Ownership: every pointer argument is borrowed for the call.
 */
#ifndef SHOAL_KNN_CUDA_H
#define SHOAL_KNN_CUDA_H

#include "common/distance.h"
#include "common/error.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KNN_CUDA_BLOCK_ROWS 4096 /* rows dealt to one device at a time (= KNN_PLAN_BLOCK_ROWS) */
#define KNN_CUDA_K_MAX 1024      /* largest k of the select kernel (= KNN_K_MAX_GPU) */

typedef struct knn_cuda knn_cuda_t;

/* Time and work of the searches since the last reset (knn_cuda_stats_reset). */
typedef struct {
    uint64_t searches;   /* knn_cuda_search calls */
    uint64_t queries;    /* queries searched */
    double gemm_flop;    /* 2 * queries * rows * dim, summed over GEMM calls */
    double gemm_ms;      /* device time in GEMM calls (profiling on), summed over devices */
    double select_ms;    /* device time in select and merge kernels (profiling on), ditto */
    double wall_ms;      /* host wall time inside knn_cuda_search */
} knn_cuda_stats_t;

/*
 * Creates an engine over ndevices distinct device ordinals for vectors of dim
 * floats. fp16: rows and queries are rounded to fp16 for the GEMM (fp32
 * accumulation); mem_budget: bytes per device for search tiles, 0 = a share
 * of the device's pool (knn_budget.h).
 * NULL on error (SHOAL_ENODEV, SHOAL_EGPU, SHOAL_ENOMEM, SHOAL_EINVAL).
 */
knn_cuda_t *knn_cuda_new(const int *devices, int ndevices, size_t dim, shoal_metric_t metric,
                         int fp16, size_t mem_budget, shoal_err_t *err);

/* Frees all device and pinned memory, streams, handles, communicators. NULL-safe. */
void knn_cuda_destroy(knn_cuda_t **cu_p);

/* Rows mirrored now. */
size_t knn_cuda_count(const knn_cuda_t *cu);

/* Makes room for n rows in all (may reallocate); rows kept. SHOAL_ENOMEM when full. */
int knn_cuda_reserve(knn_cuda_t *cu, size_t n, shoal_err_t *err);

/*
 * Appends m rows after the current last one: vecs m x dim (row after row),
 * norms_sq m, ids m.
 */
int knn_cuda_append(knn_cuda_t *cu, const float *vecs, const float *norms_sq,
                    const uint64_t *ids, size_t m, shoal_err_t *err);

/*
 * Overwrites m existing rows: rows[i] (< count) takes vecs[i*dim ..],
 * norms_sq[i], ids[i]. A row listed twice must carry the same data both times
 * (copies are written in parallel).
 */
int knn_cuda_set_rows(knn_cuda_t *cu, const size_t *rows, const float *vecs,
                      const float *norms_sq, const uint64_t *ids, size_t m, shoal_err_t *err);

/* Drops the rows from n on (n <= count). */
int knn_cuda_truncate(knn_cuda_t *cu, size_t n, shoal_err_t *err);

/*
 * The k (1..KNN_CUDA_K_MAX) nearest rows of each of nq queries (nq x dim,
 * finite; normalised here for cosine): ids[q*k ..], dists[q*k ..] (dists may be
 * NULL). Queries are not checked here (the front does).
 */
int knn_cuda_search(knn_cuda_t *cu, const float *queries, size_t nq, size_t k, uint64_t *ids,
                    float *dists, shoal_err_t *err);

/* Device memory held, all devices (rows, work buffers). */
size_t knn_cuda_device_bytes(const knn_cuda_t *cu);

/*
 * Overlap: with on != 0 the row tiles alternate over two compute streams
 * (each with its own cuBLAS handle, distance tile and running best k,
 * merged at the end), so one tile's select runs while the next tile's GEMM
 * does, as Faiss does. Off by default until a GPU run has measured it
 * (make gpu-validate runs the targets and test_knn both ways); the
 * environment's SHOAL_GPU_OVERLAP=1 turns it on for new engines; profiling
 * turns it off.
 */
void knn_cuda_set_overlap(knn_cuda_t *cu, int on);

/*
 * Profiling: with on != 0 each GEMM and select launch is timed with CUDA
 * events, synchronising after every tile (which costs the overlap of copies
 * with compute): for breakdowns, not for throughput.
 */
void knn_cuda_set_profiling(knn_cuda_t *cu, int on);
void knn_cuda_stats(const knn_cuda_t *cu, knn_cuda_stats_t *stats);
void knn_cuda_stats_reset(knn_cuda_t *cu);

/* For the check program: the device engine behind a front engine, or NULL (gpu/knn.c). */
struct knn_engine;
knn_cuda_t *knn_engine_cuda(struct knn_engine *engine);

/*
 * Peaks of device `ordinal` for the check program's ratios: cuBLAS SGEMM
 * (fp32, no TF32) on an m x n x kd product, in TFLOP/s, and device-to-device
 * copy bandwidth over `bytes`, in GB/s (read + write). Negative on error.
 */
double knn_cuda_sgemm_tflops(int ordinal, size_t m, size_t n, size_t kd, shoal_err_t *err);
double knn_cuda_copy_gbps(int ordinal, size_t bytes, shoal_err_t *err);

#ifdef __cplusplus
}
#endif

#endif
