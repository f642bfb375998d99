/*
 * knn.h - the exact k-NN engine: one API over the CPU (common/flat.h, with
 * OpenBLAS) and one or several GPUs (gpu/knn_cuda.cu: cuBLAS GEMM, a k-select
 * kernel written for shoal, NCCL across devices).
 *
 * An engine holds resident vectors for one dim and metric: add (upsert by id),
 * remove by id, count, and search: nq queries -> the k nearest stored ids and
 * distances per query, best first, ties by id. With fp32 rows a GPU engine
 * gives the CPU engine's answers bit for bit, ids, order and distances (the
 * device's candidates are proven, then re-scored with the CPU's pair kernels:
 * gpu/knn_exact.h); with fp16 rows the distances are exact but a neighbour
 * may be missed (recall). Distances follow distance.h: squared L2, -dot,
 * 1 - cos.
 *
 * The host keeps the authoritative copy in a flat_store_t (the CPU path's
 * store); on a GPU the rows are mirrored in device memory (split across the
 * devices with several), and every add/remove is applied to the mirror too.
 *
 * Device selection (knn_engine_new's device string):
 *   "auto"      the usable GPUs (compute capability 8.0+; an unusable one is
 *               skipped, not fatal), else the CPU; one log line says which
 *               and why;
 *   "cpu"       the CPU path;
 *   "gpu:0,1"   those devices; an error if any is unusable.
 * A CPU-only build, or a CUDA build on a machine without a GPU, gives the CPU
 * for "auto" and SHOAL_ENODEV for "gpu:...".
 *
 * Memory: search works in tiles sized from mem_budget (host or device), so one
 * query or a million in a call use bounded memory. mem_budget 0 on a GPU: the
 * engines on one device share one budget (gpu/knn_budget.h).
 *
 * Failures: a device error during a search answers that search on the CPU
 * and, unless it was only out of memory, marks the engine lost: every later
 * search runs on the CPU and knn_engine_info's reason says why.
 *
 * Thread-safety: searches may run concurrently with each other; add/remove
 * must not run concurrently with anything (the caller serialises writers).
 */
#ifndef SHOAL_KNN_H
#define SHOAL_KNN_H

#include "common/distance.h"
#include "common/error.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KNN_DEVICES_MAX 16
#define KNN_K_MAX_GPU 1024 /* largest k the GPU select kernel takes; larger k runs on the CPU */

typedef struct knn_engine knn_engine_t;

typedef struct {
    size_t dim;            /* floats per vector */
    shoal_metric_t metric; /* L2, IP or cosine */
    const char *device;    /* "auto" (NULL = auto), "cpu" or "gpu:0,1,..." */
    size_t threads;        /* CPU threads; 0 = every online core */
    size_t mem_budget;     /* bytes for search tiles; 0 = default */
    int fp16;              /* GPU only: store rows as fp16 on the device, re-rank in fp32 */
} knn_params_t;

typedef struct {
    int on_gpu;                       /* non-zero when searches run on GPUs */
    int ndevices;                     /* devices in use (0 on the CPU) */
    int devices[KNN_DEVICES_MAX];     /* their ordinals */
    size_t count;                     /* stored vectors */
    size_t host_bytes;                /* host memory held */
    size_t device_bytes;              /* device memory held, all devices */
    char reason[160];                 /* why this placement ("no GPU device: ...") */
} knn_info_t;

/* Creates an engine. NULL on error (bad params, unusable device, OOM). */
knn_engine_t *knn_engine_new(const knn_params_t *params, shoal_err_t *err);

/* Frees host and device memory; NULL-safe; sets *engine_p to NULL. */
void knn_engine_destroy(knn_engine_t **engine_p);

/* Adds n vectors under ids (upsert). See flat_store_add for the checks. */
int knn_engine_add(knn_engine_t *engine, const uint64_t *ids, const float *vecs, size_t n,
                   shoal_err_t *err);

/* Removes n ids; absent ids are skipped and not counted. *removed may be NULL. */
int knn_engine_remove(knn_engine_t *engine, const uint64_t *ids, size_t n, size_t *removed,
                      shoal_err_t *err);

size_t knn_engine_count(const knn_engine_t *engine);

/*
 * The k nearest stored vectors of each of nq queries: ids[q*k ..], dists[q*k ..]
 * (dists may be NULL), padded with TOPK_ID_NONE / +INFINITY when k > count.
 */
int knn_engine_search(knn_engine_t *engine, const float *queries, size_t nq, size_t k,
                      uint64_t *ids, float *dists, shoal_err_t *err);

void knn_engine_info(const knn_engine_t *engine, knn_info_t *info);

/*
 * Queries a GPU engine answered on the CPU since it was made because its
 * candidates could not be proven to hold the top k (near-ties wider than the
 * candidate list, gpu/knn_exact.h); 0 on the CPU. For checks and metrics.
 */
size_t knn_engine_fallbacks(const knn_engine_t *engine);

/*
 * One tile of the collection's k-NN graph: the stored rows [first, first +
 * count) (in the store's row order, knn_engine_rows) as queries against every
 * stored row, each row's own id included: ids[i*k ..], dists[i*k ..] as
 * knn_engine_search gives them. On a GPU this is the exact engine's GEMM
 * path with the queries read from the host store in place (nothing crosses
 * the wire); a whole graph is count-row tiles from 0 to knn_engine_count.
 * Rows must not change between tiles (the caller holds writers off).
 */
int knn_engine_graph(knn_engine_t *engine, size_t first, size_t count, size_t k, uint64_t *ids,
                     float *dists, shoal_err_t *err);

/*
 * Parses a device string into *on_gpu and the list of ordinals. Returns 0 or
 * SHOAL_EINVAL naming what is wrong ("gpu:" with no list, a bad number, too
 * many, duplicates). "auto" gives *on_gpu = -1.
 */
int knn_parse_devices(const char *text, int *on_gpu, int *devices, int *ndevices,
                      shoal_err_t *err);

#ifdef __cplusplus
}
#endif

#endif
