/*
 * knn_cuda.cu - the exact k-NN engine on one or several GPUs (knn_cuda.h):
 * the host orchestration. The kernels (k-select, query preparation, row
 * scatter) are in knn_kernels.cu behind launchers (knn_kernels.cuh); this
 * file owns devices, streams, events, buffers and the plan, as Faiss keeps
 * its GPU index apart from its kernels.
 *
 * Rows over devices (knn_plan.h): global row r is in block b = r / 4096,
 * which lives on device b % D at local block b / D; local rows are a dense
 * prefix. Appends spread evenly; truncation (after the host store moved its
 * last rows into freed ones) only shortens prefixes.
 *
 * Splits (knn_plan_splits): with few queries, one select block per query
 * would leave most of the GPU idle, so a row tile is split into S column
 * ranges (S * tq ~ 8 blocks per multiprocessor, each range at least
 * max(4096, 64 k) columns); each split keeps its own state and the splits
 * are merged after the last tile.
 *
 * A search, stage by stage (knn_cuda_search):
 *   0. buffers: tile sizes from this engine's share of the device's budget
 *      (knn_budget.h: one pool per device, shared by every engine on it);
 *      work buffers grow to the plan and are kept, or freed first when the
 *      share shrank;
 *   1. upload: the query tile into pinned slot t % 2, the first device's
 *      copy stream uploads it while tile t - 1 computes;
 *   2. broadcast (several devices only): NCCL to every device;
 *   3. scan, per device: prep (norms, cosine scaling, fp16 rounding), then
 *      per row tile one GEMM and one select launch, then the split merge;
 *   4. gather (several devices only): NCCL send/recv of every device's best
 *      k to the first device;
 *   5. result: the devices' lists merged (several devices), an async copy
 *      into pinned slot t % 2;
 *   6. finish: the host waits for tile t - 1's copy (while tile t runs) and
 *      hands it over.
 * One device uses no NCCL at all: no communicator is made, stages 2 and 4
 * do nothing, and a host whose NCCL cannot bootstrap still searches on its
 * GPU. With several, waits poll ncclCommGetAsyncError, so a failed peer
 * ends the search with an error instead of hanging it. The events the host
 * waits on are blocking-sync: the thread sleeps instead of spinning a core.
 *
 * Overlap (knn_cuda_set_overlap, off by default until measured): the odd
 * row tiles go to a second compute stream with their own cuBLAS handle,
 * distance tile and running best k (the "second half" of the state), so
 * tile j's select runs while tile j + 1's GEMM does; the halves are merged
 * per query after the last tile (s_scan_merge).
 *
 * What is not done yet (issue 17's speed items, kept out until they can be
 * measured on a GPU): small batches still write the distance tile to
 * global memory (no fused distance + select kernel); k >= 256 still sorts
 * the 2048-entry buffer whenever it fills (longer splits make that rarer).
 *
 * Errors: every CUDA, cuBLAS and NCCL status is checked and turned into a
 * shoal error naming the device and what was being done; allocation
 * failures are SHOAL_ENOMEM, everything else SHOAL_EGPU, which the front
 * (knn.c) takes as "this device is lost".
 */
#include "gpu/knn_cuda.h"

#include "common/topk.h"
#include "gpu/gpu.h" /* GPU_CC_MAJOR_MIN */
#include "gpu/knn_budget.h"
#include "gpu/knn_kernels.cuh"
#include "gpu/knn_plan.h"

#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <nccl.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define S_DEVICES_MAX 16
#define SCATTER_CHUNK 65536  /* rows per set_rows upload */
#define S_POLL_NS 20000      /* several devices: between polls of an event and NCCL */

static_assert(KNN_CUDA_BLOCK_ROWS == KNN_PLAN_BLOCK_ROWS, "one block size for rows");

/* ------------------------------------------------------------------------ */
/* Engine state                                                             */
/* ------------------------------------------------------------------------ */

typedef struct {
    void *p;      /* device (or pinned host) memory */
    size_t bytes; /* allocated size */
} s_buf_t;

typedef struct {
    int ordinal;           /* CUDA device number */
    int sms;               /* multiprocessors */
    int budget_joined;     /* counted in knn_budget's pool of this device */
    size_t n;              /* rows held here: a dense prefix */
    size_t cap;            /* rows allocated */
    void *vecs;            /* cap x dim, float or __half */
    float *norms;          /* cap squared norms (fp32, exact) */
    uint64_t *ids;         /* cap ids */
    cudaStream_t comp;     /* compute stream: NCCL, kernels, GEMMs */
    cudaStream_t copy;     /* query uploads (first device) */
    cudaStream_t comp2;    /* overlap: odd row tiles' GEMM and select */
    cublasHandle_t blas;   /* bound to comp */
    cublasHandle_t blas2;  /* bound to comp2 (a handle's workspace serves one stream) */
    ncclComm_t comm;       /* rank = index in the device list; NULL with one device */
    cudaEvent_t ev_up[2];  /* query slot uploaded (blocking sync: the host waits on it) */
    cudaEvent_t ev_qfree[2]; /* query slot no longer read by the GEMMs */
    cudaEvent_t ev_res[2]; /* result slot copied to the host (blocking sync) */
    cudaEvent_t ev_prof[3]; /* profiling: before GEMM, after GEMM, after select */
    cudaEvent_t ev_fork;   /* overlap: comp2 starts after prep and fill on comp */
    cudaEvent_t ev_join;   /* overlap: comp merges after comp2's last select */
    int events_made;       /* the events above exist */
    s_buf_t dq[2];         /* query tiles, fp32 */
    s_buf_t q16;           /* query tile rounded to fp16 */
    s_buf_t qnorm;         /* |q|^2 per query of the tile */
    s_buf_t dots;          /* tq x tn dot products */
    s_buf_t dots2;         /* overlap: the odd row tiles' dot products */
    s_buf_t st_d, st_i;    /* running best k per (query, split); overlap: per half too */
    s_buf_t out_d, out_i;  /* best k per query after the split / half merge */
    s_buf_t gat_d, gat_i;  /* first device: every device's best k */
    s_buf_t fin_d, fin_i;  /* first device: the merged result */
} s_dev_t;

struct knn_cuda {
    int ndev;                    /* devices in use */
    s_dev_t dev[S_DEVICES_MAX];  /* dev[0] is the root: uploads, gather, merge */
    size_t dim;                  /* floats per row */
    shoal_metric_t metric;       /* metric of the rows */
    int fp16;                    /* rows and queries as fp16 in the GEMM */
    size_t n;                    /* global rows */
    size_t mem_budget;           /* the caller's tile budget per device; 0 = a share */
    s_buf_t hq[2];               /* pinned query slots */
    s_buf_t hr_d[2], hr_i[2];    /* pinned result slots */
    int profiling;               /* time GEMM and select with events */
    int overlap;                 /* two compute streams per device (knn_cuda_set_overlap) */
    knn_cuda_stats_t stats;      /* since the last reset */
};

/* ------------------------------------------------------------------------ */
/* Error conversion                                                         */
/* ------------------------------------------------------------------------ */

static int s_cuda_fail(shoal_err_t *err, cudaError_t e, int ordinal, const char *what)
{
    (void)cudaGetLastError(); /* clear a non-sticky error so later calls work */
    int code = e == cudaErrorMemoryAllocation ? SHOAL_ENOMEM : SHOAL_EGPU;
    return shoal_err_set(err, code, "GPU %d: %s: %s (%s)", ordinal, what, cudaGetErrorString(e),
                         cudaGetErrorName(e));
}

static int s_blas_fail(shoal_err_t *err, cublasStatus_t s, int ordinal, const char *what)
{
    int code = s == CUBLAS_STATUS_ALLOC_FAILED ? SHOAL_ENOMEM : SHOAL_EGPU;
    return shoal_err_set(err, code, "GPU %d: %s: cuBLAS %s", ordinal, what,
                         cublasGetStatusString(s));
}

static int s_nccl_fail(shoal_err_t *err, ncclResult_t r, const char *what)
{
    return shoal_err_set(err, SHOAL_EGPU, "%s: NCCL %s", what, ncclGetErrorString(r));
}

/* Each sets rc and jumps to the function's `fail` label; `ord` names the device. */
#define CU_TRY(call, ord, what)                                                                    \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            rc = s_cuda_fail(err, e_, (ord), (what));                                              \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)

#define BLAS_TRY(call, ord, what)                                                                  \
    do {                                                                                           \
        cublasStatus_t s_ = (call);                                                                \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                         \
            rc = s_blas_fail(err, s_, (ord), (what));                                              \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)

#define NCCL_TRY(call, what)                                                                       \
    do {                                                                                           \
        ncclResult_t r_ = (call);                                                                  \
        if (r_ != ncclSuccess) {                                                                   \
            rc = s_nccl_fail(err, r_, (what));                                                     \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */
/* ------------------------------------------------------------------------ */

static size_t s_min(size_t a, size_t b)
{
    return a < b ? a : b;
}

static size_t s_max(size_t a, size_t b)
{
    return a > b ? a : b;
}

static double s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Grows a device buffer to at least bytes (contents not kept). Device must be current. */
static cudaError_t s_dev_ensure(s_buf_t *b, size_t bytes)
{
    if (b->bytes >= bytes)
        return cudaSuccess;
    if (b->p)
        cudaFree(b->p);
    b->p = NULL;
    b->bytes = 0;
    cudaError_t e = cudaMalloc(&b->p, bytes);
    if (e == cudaSuccess)
        b->bytes = bytes;
    return e;
}

static cudaError_t s_host_ensure(s_buf_t *b, size_t bytes)
{
    if (b->bytes >= bytes)
        return cudaSuccess;
    if (b->p)
        cudaFreeHost(b->p);
    b->p = NULL;
    b->bytes = 0;
    cudaError_t e = cudaHostAlloc(&b->p, bytes, cudaHostAllocPortable);
    if (e == cudaSuccess)
        b->bytes = bytes;
    return e;
}

static void s_dev_free(s_buf_t *b)
{
    if (b->p)
        cudaFree(b->p);
    b->p = NULL;
    b->bytes = 0;
}

static void s_host_free(s_buf_t *b)
{
    if (b->p)
        cudaFreeHost(b->p);
    b->p = NULL;
    b->bytes = 0;
}

/* The search work buffers of dv (not the rows), for sizing and freeing. */
#define S_WORK_BUFS 14
static void s_work_list(s_dev_t *dv, s_buf_t *list[S_WORK_BUFS])
{
    s_buf_t *all[S_WORK_BUFS] = {&dv->dq[0], &dv->dq[1], &dv->q16,   &dv->qnorm, &dv->dots,
                                 &dv->dots2, &dv->st_d,  &dv->st_i,  &dv->out_d, &dv->out_i,
                                 &dv->gat_d, &dv->gat_i, &dv->fin_d, &dv->fin_i};
    memcpy(list, all, sizeof all);
}

static size_t s_work_bytes(const s_dev_t *dv)
{
    s_buf_t *list[S_WORK_BUFS];
    s_work_list((s_dev_t *)dv, list); /* read only */
    size_t total = 0;
    for (int b = 0; b < S_WORK_BUFS; b++)
        total += list[b]->bytes;
    return total;
}

/* Frees dv's work buffers; its device must be current and its streams idle. */
static void s_work_free(s_dev_t *dv)
{
    s_buf_t *list[S_WORK_BUFS];
    s_work_list(dv, list);
    for (int b = 0; b < S_WORK_BUFS; b++)
        s_dev_free(list[b]);
}

/* ------------------------------------------------------------------------ */
/* Lifecycle                                                                */
/* ------------------------------------------------------------------------ */

static size_t s_elem(const knn_cuda_t *cu)
{
    return cu->fp16 ? sizeof(__half) : sizeof(float);
}

extern "C" void knn_cuda_destroy(knn_cuda_t **cu_p)
{
    if (!cu_p || !*cu_p)
        return;
    knn_cuda_t *cu = *cu_p;
    for (int d = 0; d < cu->ndev; d++) {
        s_dev_t *dv = &cu->dev[d];
        if (cudaSetDevice(dv->ordinal) != cudaSuccess)
            continue;
        /* Nothing may still run on buffers about to be freed. */
        if (dv->comp)
            cudaStreamSynchronize(dv->comp);
        if (dv->copy)
            cudaStreamSynchronize(dv->copy);
        if (dv->comp2)
            cudaStreamSynchronize(dv->comp2);
        s_work_free(dv);
        if (dv->vecs)
            cudaFree(dv->vecs);
        if (dv->norms)
            cudaFree(dv->norms);
        if (dv->ids)
            cudaFree(dv->ids);
        cudaEvent_t *evs[] = {&dv->ev_up[0],   &dv->ev_up[1],   &dv->ev_qfree[0],
                              &dv->ev_qfree[1], &dv->ev_res[0],  &dv->ev_res[1],
                              &dv->ev_prof[0], &dv->ev_prof[1], &dv->ev_prof[2],
                              &dv->ev_fork,    &dv->ev_join};
        for (size_t e = 0; e < sizeof evs / sizeof evs[0]; e++)
            if (*evs[e])
                cudaEventDestroy(*evs[e]);
        if (dv->blas)
            cublasDestroy(dv->blas);
        if (dv->blas2)
            cublasDestroy(dv->blas2);
        if (dv->comm)
            ncclCommDestroy(dv->comm);
        if (dv->budget_joined)
            knn_budget_leave(dv->ordinal);
        if (dv->comp)
            cudaStreamDestroy(dv->comp);
        if (dv->copy)
            cudaStreamDestroy(dv->copy);
        if (dv->comp2)
            cudaStreamDestroy(dv->comp2);
    }
    for (int s = 0; s < 2; s++) {
        s_host_free(&cu->hq[s]);
        s_host_free(&cu->hr_d[s]);
        s_host_free(&cu->hr_i[s]);
    }
    (void)cudaGetLastError();
    free(cu);
    *cu_p = NULL;
}

/* Opens slot i of cu on device ord: properties, budget, streams, events, cuBLAS. */
static int s_dev_open(knn_cuda_t *cu, int i, int ord, shoal_err_t *err)
{
    int rc = SHOAL_OK;
    cudaDeviceProp prop;
    size_t free_b = 0, total_b = 0;
    s_dev_t *dv = &cu->dev[i];
    /* Events the host waits on sleep in the driver (blocking sync): the
     * default spins a core for the whole search. */
    const unsigned waited = cudaEventDisableTiming | cudaEventBlockingSync;
    CU_TRY(cudaGetDeviceProperties(&prop, ord), ord, "reading device properties");
    if (prop.major < GPU_CC_MAJOR_MIN)
        return shoal_err_set(err, SHOAL_ENODEV,
                             "GPU %d (%s) has compute capability %d.%d; this build has code "
                             "for %d.0 and later",
                             ord, prop.name, prop.major, prop.minor, GPU_CC_MAJOR_MIN);
    cu->ndev = i + 1; /* destroy cleans this slot from here on */
    dv->ordinal = ord;
    dv->sms = prop.multiProcessorCount;
    CU_TRY(cudaSetDevice(ord), ord, "selecting the device");
    CU_TRY(cudaMemGetInfo(&free_b, &total_b), ord, "reading free memory");
    dv->budget_joined = knn_budget_join(ord, free_b) == 0;
    CU_TRY(cudaStreamCreateWithFlags(&dv->comp, cudaStreamNonBlocking), ord,
           "creating the compute stream");
    CU_TRY(cudaStreamCreateWithFlags(&dv->copy, cudaStreamNonBlocking), ord,
           "creating the copy stream");
    CU_TRY(cudaStreamCreateWithFlags(&dv->comp2, cudaStreamNonBlocking), ord,
           "creating the second compute stream");
    CU_TRY(cudaEventCreateWithFlags(&dv->ev_fork, cudaEventDisableTiming), ord, "creating events");
    CU_TRY(cudaEventCreateWithFlags(&dv->ev_join, cudaEventDisableTiming), ord, "creating events");
    for (int s = 0; s < 2; s++) {
        CU_TRY(cudaEventCreateWithFlags(&dv->ev_up[s], waited), ord, "creating events");
        CU_TRY(cudaEventCreateWithFlags(&dv->ev_qfree[s], cudaEventDisableTiming), ord,
               "creating events");
        CU_TRY(cudaEventCreateWithFlags(&dv->ev_res[s], waited), ord, "creating events");
    }
    for (int s = 0; s < 3; s++)
        CU_TRY(cudaEventCreateWithFlags(&dv->ev_prof[s], cudaEventBlockingSync), ord,
               "creating timing events");
    BLAS_TRY(cublasCreate(&dv->blas), ord, "creating the cuBLAS handle");
    BLAS_TRY(cublasSetStream(dv->blas, dv->comp), ord, "binding cuBLAS to the stream");
    /* Plain fp32 (no TF32): the error bound of the front's proof assumes it. */
    BLAS_TRY(cublasSetMathMode(dv->blas, CUBLAS_DEFAULT_MATH), ord, "setting the math mode");
    BLAS_TRY(cublasCreate(&dv->blas2), ord, "creating the second cuBLAS handle");
    BLAS_TRY(cublasSetStream(dv->blas2, dv->comp2), ord, "binding cuBLAS to the stream");
    BLAS_TRY(cublasSetMathMode(dv->blas2, CUBLAS_DEFAULT_MATH), ord, "setting the math mode");
    return SHOAL_OK;
fail:
    return rc;
}

extern "C" knn_cuda_t *knn_cuda_new(const int *devices, int ndevices, size_t dim,
                                    shoal_metric_t metric, int fp16, size_t mem_budget,
                                    shoal_err_t *err)
{
    knn_cuda_t *cu = NULL;
    int rc = SHOAL_OK, count = 0, ord = -1;
    ncclComm_t comms[S_DEVICES_MAX];
    cudaError_t e;

    if (!devices || ndevices < 1 || ndevices > S_DEVICES_MAX) {
        shoal_err_set(err, SHOAL_EINVAL, "knn_cuda_new: %d devices, expected 1..%d", ndevices,
                      S_DEVICES_MAX);
        return NULL;
    }
    if (dim == 0 || dim > (size_t)INT_MAX / 2) {
        shoal_err_set(err, SHOAL_EINVAL, "knn_cuda_new: dim %zu, expected 1..%d", dim,
                      INT_MAX / 2);
        return NULL;
    }
    if (metric != SHOAL_METRIC_L2 && metric != SHOAL_METRIC_IP && metric != SHOAL_METRIC_COSINE) {
        shoal_err_set(err, SHOAL_EINVAL, "knn_cuda_new: unknown metric %d", (int)metric);
        return NULL;
    }
    e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count < 1) {
        (void)cudaGetLastError();
        shoal_err_set(err, SHOAL_ENODEV, "no GPU device: %s",
                      e != cudaSuccess ? cudaGetErrorString(e) : "the CUDA runtime found none");
        return NULL;
    }
    cu = (knn_cuda_t *)calloc(1, sizeof *cu);
    if (!cu) {
        shoal_err_set(err, SHOAL_ENOMEM, "knn_cuda_new: out of memory");
        return NULL;
    }
    cu->dim = dim;
    cu->metric = metric;
    cu->fp16 = fp16 != 0;
    cu->mem_budget = mem_budget;
    /* Overlap stays off until measured; SHOAL_GPU_OVERLAP=1 turns it on for a
     * process (make gpu-validate runs the GPU suite both ways). */
    const char *ov = getenv("SHOAL_GPU_OVERLAP");
    cu->overlap = ov && ov[0] == '1';

    for (int i = 0; i < ndevices; i++) {
        ord = devices[i];
        if (ord < 0 || ord >= count) {
            rc = shoal_err_set(err, SHOAL_ENODEV, "GPU %d does not exist (devices: 0..%d)", ord,
                               count - 1);
            goto fail;
        }
        /* ord is valid from here: the fail path names it. */
        for (int j = 0; j < i; j++)
            if (devices[j] == ord) {
                rc = shoal_err_set(err, SHOAL_EINVAL, "GPU %d is listed twice", ord);
                goto fail;
            }
        rc = s_dev_open(cu, i, ord, err);
        if (rc < 0)
            goto fail;
    }

    /* NCCL only where it moves data: one device needs no communicator, and a
     * host whose NCCL cannot bootstrap still searches on its one GPU. */
    if (ndevices > 1) {
        NCCL_TRY(ncclCommInitAll(comms, ndevices, devices), "creating the NCCL communicators");
        for (int i = 0; i < ndevices; i++)
            cu->dev[i].comm = comms[i];
    }
    return cu;

fail:
    if (rc >= 0) /* every jump sets rc; keep a reason even if one did not */
        shoal_err_set(err, SHOAL_EINTERNAL, "knn_cuda_new: failed without a reason");
    knn_cuda_destroy(&cu);
    return NULL;
}

extern "C" size_t knn_cuda_count(const knn_cuda_t *cu)
{
    return cu ? cu->n : 0;
}

extern "C" size_t knn_cuda_device_bytes(const knn_cuda_t *cu)
{
    if (!cu)
        return 0;
    size_t total = 0;
    for (int d = 0; d < cu->ndev; d++) {
        const s_dev_t *dv = &cu->dev[d];
        total += dv->cap * (cu->dim * s_elem(cu) + sizeof(float) + sizeof(uint64_t));
        total += s_work_bytes(dv);
    }
    return total;
}

extern "C" void knn_cuda_set_overlap(knn_cuda_t *cu, int on)
{
    if (cu)
        cu->overlap = on != 0;
}

extern "C" void knn_cuda_set_profiling(knn_cuda_t *cu, int on)
{
    if (cu)
        cu->profiling = on != 0;
}

extern "C" void knn_cuda_stats(const knn_cuda_t *cu, knn_cuda_stats_t *stats)
{
    if (!stats)
        return;
    if (cu)
        *stats = cu->stats;
    else
        memset(stats, 0, sizeof *stats);
}

extern "C" void knn_cuda_stats_reset(knn_cuda_t *cu)
{
    if (cu)
        memset(&cu->stats, 0, sizeof cu->stats);
}

/* ------------------------------------------------------------------------ */
/* Rows                                                                     */
/* ------------------------------------------------------------------------ */

/* Reallocates device dv's rows to new_cap, keeping its dv->n rows. */
static int s_grow(knn_cuda_t *cu, s_dev_t *dv, size_t new_cap, shoal_err_t *err)
{
    int rc = SHOAL_OK;
    void *nv = NULL;
    float *nn = NULL;
    uint64_t *ni = NULL;
    const size_t row_bytes = cu->dim * s_elem(cu);

    CU_TRY(cudaSetDevice(dv->ordinal), dv->ordinal, "selecting the device");
    CU_TRY(cudaMalloc(&nv, new_cap * row_bytes), dv->ordinal, "allocating rows");
    CU_TRY(cudaMalloc((void **)&nn, new_cap * sizeof(float)), dv->ordinal, "allocating norms");
    CU_TRY(cudaMalloc((void **)&ni, new_cap * sizeof(uint64_t)), dv->ordinal, "allocating ids");
    if (dv->n) {
        CU_TRY(cudaMemcpy(nv, dv->vecs, dv->n * row_bytes, cudaMemcpyDeviceToDevice),
               dv->ordinal, "copying rows to the grown buffer");
        CU_TRY(cudaMemcpy(nn, dv->norms, dv->n * sizeof(float), cudaMemcpyDeviceToDevice),
               dv->ordinal, "copying norms to the grown buffer");
        CU_TRY(cudaMemcpy(ni, dv->ids, dv->n * sizeof(uint64_t), cudaMemcpyDeviceToDevice),
               dv->ordinal, "copying ids to the grown buffer");
    }
    if (dv->vecs)
        cudaFree(dv->vecs);
    if (dv->norms)
        cudaFree(dv->norms);
    if (dv->ids)
        cudaFree(dv->ids);
    dv->vecs = nv;
    dv->norms = nn;
    dv->ids = ni;
    dv->cap = new_cap;
    return SHOAL_OK;

fail:
    if (nv)
        cudaFree(nv);
    if (nn)
        cudaFree(nn);
    if (ni)
        cudaFree(ni);
    return rc;
}

extern "C" int knn_cuda_reserve(knn_cuda_t *cu, size_t n, shoal_err_t *err)
{
    for (int d = 0; d < cu->ndev; d++) {
        s_dev_t *dv = &cu->dev[d];
        size_t need = knn_plan_local_count(n, cu->ndev, d);
        if (need <= dv->cap)
            continue;
        /* 1.5x growth: doubling would waste more of a large device. */
        size_t new_cap = s_max(need, s_max(dv->cap + dv->cap / 2, KNN_CUDA_BLOCK_ROWS));
        int rc = s_grow(cu, dv, new_cap, err);
        if (rc == SHOAL_ENOMEM && new_cap > need)
            rc = s_grow(cu, dv, need, err); /* the exact size may still fit */
        if (rc < 0)
            return rc;
    }
    return SHOAL_OK;
}

extern "C" int knn_cuda_append(knn_cuda_t *cu, const float *vecs, const float *norms_sq,
                               const uint64_t *ids, size_t m, shoal_err_t *err)
{
    int rc = SHOAL_OK;
    __half *stage = NULL;
    const size_t dim = cu->dim, B = KNN_CUDA_BLOCK_ROWS;
    const size_t first = cu->n, end = cu->n + m;
    size_t r = first;

    if (m == 0)
        return SHOAL_OK;
    rc = knn_cuda_reserve(cu, end, err);
    if (rc < 0)
        return rc;
    if (cu->fp16) {
        stage = (__half *)malloc(B * dim * sizeof(__half));
        if (!stage)
            return shoal_err_set(err, SHOAL_ENOMEM, "knn_cuda_append: out of memory");
    }
    while (r < end) {
        size_t run = s_min(B - r % B, end - r), local = 0;
        int d = 0;
        knn_plan_locate(r, cu->ndev, &d, &local);
        s_dev_t *dv = &cu->dev[d];
        const float *src = vecs + (r - first) * dim;
        CU_TRY(cudaSetDevice(dv->ordinal), dv->ordinal, "selecting the device");
        if (stage) {
            for (size_t e = 0; e < run * dim; e++)
                stage[e] = __float2half_rn(src[e]);
            CU_TRY(cudaMemcpy((__half *)dv->vecs + local * dim, stage, run * dim * sizeof(__half),
                              cudaMemcpyHostToDevice),
                   dv->ordinal, "uploading rows");
        } else {
            CU_TRY(cudaMemcpy((float *)dv->vecs + local * dim, src, run * dim * sizeof(float),
                              cudaMemcpyHostToDevice),
                   dv->ordinal, "uploading rows");
        }
        CU_TRY(cudaMemcpy(dv->norms + local, norms_sq + (r - first), run * sizeof(float),
                          cudaMemcpyHostToDevice),
               dv->ordinal, "uploading norms");
        CU_TRY(cudaMemcpy(dv->ids + local, ids + (r - first), run * sizeof(uint64_t),
                          cudaMemcpyHostToDevice),
               dv->ordinal, "uploading ids");
        r += run;
    }
    cu->n = end;
    for (int d = 0; d < cu->ndev; d++)
        cu->dev[d].n = knn_plan_local_count(end, cu->ndev, d);
    free(stage);
    return SHOAL_OK;

fail:
    free(stage);
    return rc;
}

/* Host staging and device buffers for set_rows. */
typedef struct {
    size_t *rows;     /* local rows */
    void *vecs;       /* float or __half, chunk x dim */
    float *norms;     /* chunk */
    uint64_t *ids;    /* chunk */
    s_buf_t d_rows, d_vecs, d_norms, d_ids; /* device copies on the current device */
} s_scatter_t;

/* Frees sc's device buffers; the current device must be the one they were made on. */
static void s_scatter_free_dev(s_scatter_t *sc)
{
    s_dev_free(&sc->d_rows);
    s_dev_free(&sc->d_vecs);
    s_dev_free(&sc->d_norms);
    s_dev_free(&sc->d_ids);
}

/* Uploads c staged rows to device dv and scatters them into place. */
static int s_scatter_flush(knn_cuda_t *cu, s_dev_t *dv, s_scatter_t *sc, size_t c,
                           shoal_err_t *err)
{
    int rc = SHOAL_OK;
    const size_t dim = cu->dim, vb = c * dim * s_elem(cu);
    CU_TRY(s_dev_ensure(&sc->d_rows, c * sizeof(size_t)), dv->ordinal, "allocating staging");
    CU_TRY(s_dev_ensure(&sc->d_vecs, vb), dv->ordinal, "allocating staging");
    CU_TRY(s_dev_ensure(&sc->d_norms, c * sizeof(float)), dv->ordinal, "allocating staging");
    CU_TRY(s_dev_ensure(&sc->d_ids, c * sizeof(uint64_t)), dv->ordinal, "allocating staging");
    CU_TRY(cudaMemcpyAsync(sc->d_rows.p, sc->rows, c * sizeof(size_t), cudaMemcpyHostToDevice,
                           dv->comp),
           dv->ordinal, "uploading rows to overwrite");
    CU_TRY(cudaMemcpyAsync(sc->d_vecs.p, sc->vecs, vb, cudaMemcpyHostToDevice, dv->comp),
           dv->ordinal, "uploading rows to overwrite");
    CU_TRY(cudaMemcpyAsync(sc->d_norms.p, sc->norms, c * sizeof(float), cudaMemcpyHostToDevice,
                           dv->comp),
           dv->ordinal, "uploading rows to overwrite");
    CU_TRY(cudaMemcpyAsync(sc->d_ids.p, sc->ids, c * sizeof(uint64_t), cudaMemcpyHostToDevice,
                           dv->comp),
           dv->ordinal, "uploading rows to overwrite");
    CU_TRY(knn_launch_scatter(cu->fp16, dv->vecs, dv->norms, dv->ids,
                              (const size_t *)sc->d_rows.p, sc->d_vecs.p,
                              (const float *)sc->d_norms.p, (const uint64_t *)sc->d_ids.p, c, dim,
                              dv->comp),
           dv->ordinal, "launching the row scatter");
    /* The host staging is refilled next: wait until the copies have read it. */
    CU_TRY(cudaStreamSynchronize(dv->comp), dv->ordinal, "overwriting rows");
    return SHOAL_OK;
fail:
    return rc;
}

extern "C" int knn_cuda_set_rows(knn_cuda_t *cu, const size_t *rows, const float *vecs,
                                 const float *norms_sq, const uint64_t *ids, size_t m,
                                 shoal_err_t *err)
{
    int rc = SHOAL_OK;
    const size_t dim = cu->dim, chunk = s_min(m, SCATTER_CHUNK);
    s_scatter_t sc;
    memset(&sc, 0, sizeof sc);

    if (m == 0)
        return SHOAL_OK;
    for (size_t i = 0; i < m; i++)
        if (rows[i] >= cu->n)
            return shoal_err_set(err, SHOAL_EINVAL, "knn_cuda_set_rows: row %zu of %zu rows",
                                 rows[i], cu->n);
    sc.rows = (size_t *)malloc(chunk * sizeof(size_t));
    sc.vecs = malloc(chunk * dim * s_elem(cu));
    sc.norms = (float *)malloc(chunk * sizeof(float));
    sc.ids = (uint64_t *)malloc(chunk * sizeof(uint64_t));
    if (!sc.rows || !sc.vecs || !sc.norms || !sc.ids) {
        rc = shoal_err_set(err, SHOAL_ENOMEM, "knn_cuda_set_rows: out of memory");
        goto fail;
    }
    for (int d = 0; d < cu->ndev; d++) {
        s_dev_t *dv = &cu->dev[d];
        size_t c = 0;
        CU_TRY(cudaSetDevice(dv->ordinal), dv->ordinal, "selecting the device");
        for (size_t i = 0; i < m; i++) {
            int dd = 0;
            size_t local = 0;
            knn_plan_locate(rows[i], cu->ndev, &dd, &local);
            if (dd != d)
                continue;
            sc.rows[c] = local;
            const float *src = vecs + i * dim;
            if (cu->fp16) {
                __half *h = (__half *)sc.vecs + c * dim;
                for (size_t j = 0; j < dim; j++)
                    h[j] = __float2half_rn(src[j]);
            } else {
                memcpy((float *)sc.vecs + c * dim, src, dim * sizeof(float));
            }
            sc.norms[c] = norms_sq[i];
            sc.ids[c] = ids[i];
            if (++c == chunk) {
                rc = s_scatter_flush(cu, dv, &sc, c, err);
                if (rc < 0)
                    goto fail;
                c = 0;
            }
        }
        if (c) {
            rc = s_scatter_flush(cu, dv, &sc, c, err);
            if (rc < 0)
                goto fail;
        }
        s_scatter_free_dev(&sc);
    }
    rc = SHOAL_OK;
fail:
    s_scatter_free_dev(&sc); /* empty after success; else on the device that failed */
    free(sc.rows);
    free(sc.vecs);
    free(sc.norms);
    free(sc.ids);
    return rc;
}

extern "C" int knn_cuda_truncate(knn_cuda_t *cu, size_t n, shoal_err_t *err)
{
    if (n > cu->n)
        return shoal_err_set(err, SHOAL_EINVAL, "knn_cuda_truncate: %zu rows, holding %zu", n,
                             cu->n);
    cu->n = n;
    for (int d = 0; d < cu->ndev; d++)
        cu->dev[d].n = knn_plan_local_count(n, cu->ndev, d);
    return SHOAL_OK;
}

/* ------------------------------------------------------------------------ */
/* Search                                                                   */
/* ------------------------------------------------------------------------ */

/* 2 when row tiles alternate over two streams (overlap on, profiling off), else 1. */
static size_t s_halves(const knn_cuda_t *cu)
{
    return cu->overlap && !cu->profiling ? 2 : 1;
}

/* This search's tile budget on device dv: its share of the device's pool. */
static size_t s_budget(const knn_cuda_t *cu, const s_dev_t *dv)
{
    return knn_budget_share(dv->ordinal, cu->mem_budget);
}

/* Tile sizes (knn_plan_tiles) from the smallest device's share of its budget. */
static void s_plan(const knn_cuda_t *cu, size_t nq, size_t k, size_t *tq, size_t *tn)
{
    knn_plan_in_t in = {SIZE_MAX, 0, INT_MAX, cu->dim, cu->fp16, cu->ndev, s_halves(cu)};
    for (int d = 0; d < cu->ndev; d++) {
        in.budget = s_min(in.budget, s_budget(cu, &cu->dev[d]));
        in.rows_max = s_max(in.rows_max, cu->dev[d].n);
        in.sms_min = cu->dev[d].sms < in.sms_min ? cu->dev[d].sms : in.sms_min;
    }
    knn_plan_tiles(&in, nq, k, tq, tn);
}

/* One search: its plan, and which tile each pinned result slot holds. */
typedef struct {
    const float *queries;          /* nq x dim, the caller's */
    size_t nq, k;                  /* queries, results per query */
    size_t tq, tn, ntiles;         /* queries per tile, rows per GEMM, query tiles */
    size_t splits[S_DEVICES_MAX];  /* column splits per device */
    size_t pend_q0[2], pend_qt[2]; /* the query tile in each pinned result slot */
    uint64_t *ids;                 /* nq x k, the caller's */
    float *dists;                  /* nq x k or NULL, the caller's */
} s_search_t;

/* Device dv's best k per query after its scan: the merges' (out), or the state. */
static void s_dev_result(const knn_cuda_t *cu, const s_dev_t *dv, size_t splits,
                         const float **rd, const uint64_t **ri)
{
    const int merged = splits > 1 || s_halves(cu) == 2;
    *rd = (const float *)(merged ? dv->out_d.p : dv->st_d.p);
    *ri = (const uint64_t *)(merged ? dv->out_i.p : dv->st_i.p);
}

/* Stage 0: device d's work buffers for the plan (grown, kept for the next search). */
static int s_dev_buffers(knn_cuda_t *cu, int d, const s_search_t *ss, shoal_err_t *err)
{
    int rc = SHOAL_OK;
    s_dev_t *dv = &cu->dev[d];
    const int o = dv->ordinal;
    const size_t tq = ss->tq, k = ss->k, dim = cu->dim, D = (size_t)cu->ndev;
    const size_t halves = s_halves(cu), lists = halves * tq * ss->splits[d] * k;
    CU_TRY(cudaSetDevice(o), o, "selecting the device");
    if (s_work_bytes(dv) > s_budget(cu, dv))
        s_work_free(dv); /* the device's share shrank (another engine joined) */
    CU_TRY(s_dev_ensure(&dv->dq[0], tq * dim * sizeof(float)), o, "allocating query tiles");
    CU_TRY(s_dev_ensure(&dv->dq[1], tq * dim * sizeof(float)), o, "allocating query tiles");
    if (cu->fp16)
        CU_TRY(s_dev_ensure(&dv->q16, tq * dim * sizeof(__half)), o,
               "allocating fp16 query tiles");
    CU_TRY(s_dev_ensure(&dv->qnorm, tq * sizeof(float)), o, "allocating query norms");
    if (ss->tn)
        CU_TRY(s_dev_ensure(&dv->dots, tq * ss->tn * sizeof(float)), o,
               "allocating the distance tile");
    if (ss->tn && halves == 2)
        CU_TRY(s_dev_ensure(&dv->dots2, tq * ss->tn * sizeof(float)), o,
               "allocating the second distance tile");
    CU_TRY(s_dev_ensure(&dv->st_d, lists * sizeof(float)), o, "allocating best-k lists");
    CU_TRY(s_dev_ensure(&dv->st_i, lists * sizeof(uint64_t)), o, "allocating best-k lists");
    if (ss->splits[d] > 1 || halves == 2) {
        CU_TRY(s_dev_ensure(&dv->out_d, halves * tq * k * sizeof(float)), o,
               "allocating best-k lists");
        CU_TRY(s_dev_ensure(&dv->out_i, halves * tq * k * sizeof(uint64_t)), o,
               "allocating best-k lists");
    }
    if (d == 0 && D > 1) {
        CU_TRY(s_dev_ensure(&dv->gat_d, D * tq * k * sizeof(float)), o,
               "allocating the gather buffer");
        CU_TRY(s_dev_ensure(&dv->gat_i, D * tq * k * sizeof(uint64_t)), o,
               "allocating the gather buffer");
        CU_TRY(s_dev_ensure(&dv->fin_d, tq * k * sizeof(float)), o, "allocating the result buffer");
        CU_TRY(s_dev_ensure(&dv->fin_i, tq * k * sizeof(uint64_t)), o,
               "allocating the result buffer");
    }
    return SHOAL_OK;
fail:
    return rc;
}

/* Stage 0: the pinned query and result slots. */
static int s_host_buffers(knn_cuda_t *cu, const s_search_t *ss, shoal_err_t *err)
{
    int rc = SHOAL_OK;
    const int o = cu->dev[0].ordinal;
    const size_t tq = ss->tq, k = ss->k;
    for (int s = 0; s < 2; s++) {
        CU_TRY(s_host_ensure(&cu->hq[s], tq * cu->dim * sizeof(float)), o,
               "allocating pinned query buffers");
        CU_TRY(s_host_ensure(&cu->hr_d[s], tq * k * sizeof(float)), o,
               "allocating pinned result buffers");
        CU_TRY(s_host_ensure(&cu->hr_i[s], tq * k * sizeof(uint64_t)), o,
               "allocating pinned result buffers");
    }
    return SHOAL_OK;
fail:
    return rc;
}

/* Stage 1: the query tile through pinned slot `slot` to the first device (copy stream). */
static int s_stage_upload(knn_cuda_t *cu, const s_search_t *ss, int slot, size_t q0, size_t qt,
                          shoal_err_t *err)
{
    int rc = SHOAL_OK;
    s_dev_t *root = &cu->dev[0];
    const int o = root->ordinal;
    const size_t bytes = qt * cu->dim * sizeof(float);
    CU_TRY(cudaSetDevice(o), o, "selecting the device");
    CU_TRY(cudaEventSynchronize(root->ev_up[slot]), o, "waiting for a query slot");
    memcpy(cu->hq[slot].p, ss->queries + q0 * cu->dim, bytes);
    CU_TRY(cudaStreamWaitEvent(root->copy, root->ev_qfree[slot], 0), o,
           "ordering the query upload");
    CU_TRY(cudaMemcpyAsync(root->dq[slot].p, cu->hq[slot].p, bytes, cudaMemcpyHostToDevice,
                           root->copy),
           o, "uploading queries");
    CU_TRY(cudaEventRecord(root->ev_up[slot], root->copy), o, "recording the upload");
    CU_TRY(cudaStreamWaitEvent(root->comp, root->ev_up[slot], 0), o, "ordering the broadcast");
    return SHOAL_OK;
fail:
    return rc;
}

/* Stage 2: the tile to every other device (NCCL broadcast; nothing with one device). */
static int s_stage_broadcast(knn_cuda_t *cu, int slot, size_t qt, shoal_err_t *err)
{
    int rc = SHOAL_OK, in_group = 0;
    if (cu->ndev == 1)
        return SHOAL_OK;
    NCCL_TRY(ncclGroupStart(), "starting the query broadcast");
    in_group = 1;
    for (int d = 0; d < cu->ndev; d++) {
        s_dev_t *dv = &cu->dev[d];
        NCCL_TRY(ncclBroadcast(dv->dq[slot].p, dv->dq[slot].p, qt * cu->dim, ncclFloat32, 0,
                               dv->comm, dv->comp),
                 "broadcasting queries");
    }
    in_group = 0;
    NCCL_TRY(ncclGroupEnd(), "broadcasting queries");
    return SHOAL_OK;
fail:
    if (in_group)
        (void)ncclGroupEnd();
    return rc;
}

/* Adds the profiling events' times: GEMM from ev_prof[0..1], select from [1..2]. */
static int s_profile(knn_cuda_t *cu, s_dev_t *dv, int with_gemm, shoal_err_t *err)
{
    int rc = SHOAL_OK;
    float ms = 0.0f;
    CU_TRY(cudaEventSynchronize(dv->ev_prof[2]), dv->ordinal, "timing a tile");
    if (with_gemm) {
        CU_TRY(cudaEventElapsedTime(&ms, dv->ev_prof[0], dv->ev_prof[1]), dv->ordinal,
               "timing a GEMM");
        cu->stats.gemm_ms += ms;
    }
    CU_TRY(cudaEventElapsedTime(&ms, dv->ev_prof[1], dv->ev_prof[2]), dv->ordinal,
           "timing a select");
    cu->stats.select_ms += ms;
    return SHOAL_OK;
fail:
    return rc;
}

/* Records profiling event e on dv's compute stream (profiling on only). */
static int s_mark(knn_cuda_t *cu, s_dev_t *dv, int e, shoal_err_t *err)
{
    int rc = SHOAL_OK;
    if (cu->profiling)
        CU_TRY(cudaEventRecord(dv->ev_prof[e], dv->comp), dv->ordinal, "recording a timer");
    return SHOAL_OK;
fail:
    return rc;
}

/*
 * Stage 3, one row tile: GEMM of rows [r0, r0 + tnj) x the queries, then the
 * select into the running state of `half` (0, or 1 for the odd row tiles
 * when overlapping: their own stream, cuBLAS handle, distance tile and
 * state, so tile j + 1's GEMM runs while tile j's select does).
 */
static int s_scan_tile(knn_cuda_t *cu, s_dev_t *dv, int half, const float *q32, size_t qt,
                       size_t r0, size_t tnj, size_t splits, size_t k, shoal_err_t *err)
{
    int rc = SHOAL_OK;
    const int o = dv->ordinal, dim = (int)cu->dim;
    const float one = 1.0f, zero = 0.0f;
    cudaStream_t st = half ? dv->comp2 : dv->comp;
    cublasHandle_t blas = half ? dv->blas2 : dv->blas;
    float *dots = (float *)(half ? dv->dots2.p : dv->dots.p);
    const size_t state = (size_t)half * qt * splits * k; /* the half's lists */
    float *st_d = (float *)dv->st_d.p + state;
    uint64_t *st_i = (uint64_t *)dv->st_i.p + state;
    knn_tile_t tile = {dots, tnj, dv->norms + r0, dv->ids + r0, (const float *)dv->qnorm.p,
                       (int)cu->metric};
    if ((rc = s_mark(cu, dv, 0, err)) < 0)
        return rc;
    /* dots (tnj x qt, column-major) = rows^T q: row-major qt x tnj. */
    if (cu->fp16)
        BLAS_TRY(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)tnj, (int)qt, dim, &one,
                              (const __half *)dv->vecs + r0 * cu->dim, CUDA_R_16F, dim, dv->q16.p,
                              CUDA_R_16F, dim, &zero, dots, CUDA_R_32F, (int)tnj,
                              CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                 o, "fp16 GEMM of queries x rows");
    else
        BLAS_TRY(cublasSgemm(blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)tnj, (int)qt, dim, &one,
                             (const float *)dv->vecs + r0 * cu->dim, dim, q32, dim, &zero, dots,
                             (int)tnj),
                 o, "GEMM of queries x rows");
    if ((rc = s_mark(cu, dv, 1, err)) < 0)
        return rc;
    CU_TRY(knn_launch_select_tile(&tile, (unsigned)qt, (unsigned)splits, st_d, st_i, st_d, st_i,
                                  (unsigned)k, st),
           o, "launching the select kernel");
    cu->stats.gemm_flop += 2.0 * (double)qt * (double)tnj * (double)dim;
    if (cu->profiling && ((rc = s_mark(cu, dv, 2, err)) < 0 || (rc = s_profile(cu, dv, 1, err)) < 0))
        return rc;
    return SHOAL_OK;
fail:
    return rc;
}

/*
 * Stage 3, the end: each half's S split lists merged into out (half h at
 * h * qt * k), then, with two halves, the two merged in place into out's
 * first qt * k (block q reads only query q's lists before writing its own).
 */
static int s_scan_merge(knn_cuda_t *cu, s_dev_t *dv, size_t qt, size_t S, size_t halves,
                        size_t k, shoal_err_t *err)
{
    int rc = SHOAL_OK;
    const int o = dv->ordinal;
    float *od = (float *)dv->out_d.p;
    uint64_t *oi = (uint64_t *)dv->out_i.p;
    if ((rc = s_mark(cu, dv, 1, err)) < 0)
        return rc;
    for (size_t h = 0; h < halves && S > 1; h++) {
        const size_t at = h * qt * S * k;
        knn_lists_t l = {(const float *)dv->st_d.p + at, (const uint64_t *)dv->st_i.p + at,
                         S * k, k, k, S};
        CU_TRY(knn_launch_select_lists(&l, (unsigned)qt, od + h * qt * k, oi + h * qt * k,
                                       (unsigned)k, dv->comp),
               o, "launching the split merge");
    }
    if (halves == 2) {
        const float *hd = S > 1 ? od : (const float *)dv->st_d.p;
        const uint64_t *hi = S > 1 ? oi : (const uint64_t *)dv->st_i.p;
        knn_lists_t l = {hd, hi, k, k, qt * k, 2};
        CU_TRY(knn_launch_select_lists(&l, (unsigned)qt, od, oi, (unsigned)k, dv->comp), o,
               "launching the stream merge");
    }
    if (cu->profiling &&
        ((rc = s_mark(cu, dv, 2, err)) < 0 || (rc = s_profile(cu, dv, 0, err)) < 0))
        return rc;
    return SHOAL_OK;
fail:
    return rc;
}

/* Stage 3: device d's rows against the tile: prep, row tiles, merges. */
static int s_stage_scan(knn_cuda_t *cu, int d, int slot, size_t qt, const s_search_t *ss,
                        shoal_err_t *err)
{
    int rc = SHOAL_OK;
    s_dev_t *dv = &cu->dev[d];
    const int o = dv->ordinal;
    const size_t S = ss->splits[d], k = ss->k, halves = s_halves(cu);
    float *q32 = (float *)dv->dq[slot].p;
    size_t j = 0; /* row tile number: odd ones go to the second stream when overlapping */
    CU_TRY(cudaSetDevice(o), o, "selecting the device");
    CU_TRY(knn_launch_prep(q32, (unsigned)qt, (unsigned)cu->dim, (int)cu->metric,
                           (float *)dv->qnorm.p, cu->fp16 ? (__half *)dv->q16.p : NULL, dv->comp),
           o, "launching query preparation");
    CU_TRY(knn_launch_fill((float *)dv->st_d.p, (uint64_t *)dv->st_i.p, halves * qt * S * k,
                           dv->comp),
           o, "launching best-k initialisation");
    if (halves == 2) {
        CU_TRY(cudaEventRecord(dv->ev_fork, dv->comp), o, "recording the fork");
        CU_TRY(cudaStreamWaitEvent(dv->comp2, dv->ev_fork, 0), o, "ordering the second stream");
    }
    for (size_t r0 = 0; r0 < dv->n; r0 += ss->tn, j++) {
        rc = s_scan_tile(cu, dv, halves == 2 ? (int)(j & 1) : 0, q32, qt, r0,
                         s_min(ss->tn, dv->n - r0), S, k, err);
        if (rc < 0)
            return rc;
    }
    if (halves == 2) {
        CU_TRY(cudaEventRecord(dv->ev_join, dv->comp2), o, "recording the join");
        CU_TRY(cudaStreamWaitEvent(dv->comp, dv->ev_join, 0), o, "ordering the merge");
    }
    if (d == 0)
        CU_TRY(cudaEventRecord(dv->ev_qfree[slot], dv->comp), o, "recording the end of the GEMMs");
    if (S > 1 || halves == 2)
        return s_scan_merge(cu, dv, qt, S, halves, k, err);
    return SHOAL_OK;
fail:
    return rc;
}

/* Stage 4: every device's best k to the first device (NCCL; nothing with one device). */
static int s_stage_gather(knn_cuda_t *cu, size_t qt, const s_search_t *ss, shoal_err_t *err)
{
    int rc = SHOAL_OK, in_group = 0;
    const size_t k = ss->k;
    s_dev_t *root = &cu->dev[0];
    if (cu->ndev == 1)
        return SHOAL_OK;
    NCCL_TRY(ncclGroupStart(), "starting the result gather");
    in_group = 1;
    for (int d = 0; d < cu->ndev; d++) {
        s_dev_t *dv = &cu->dev[d];
        const float *rd;
        const uint64_t *ri;
        s_dev_result(cu, dv, ss->splits[d], &rd, &ri);
        NCCL_TRY(ncclSend(rd, qt * k, ncclFloat32, 0, dv->comm, dv->comp),
                 "sending best-k distances");
        NCCL_TRY(ncclSend(ri, qt * k, ncclUint64, 0, dv->comm, dv->comp), "sending best-k ids");
    }
    for (int d = 0; d < cu->ndev; d++) {
        NCCL_TRY(ncclRecv((float *)root->gat_d.p + (size_t)d * qt * k, qt * k, ncclFloat32, d,
                          root->comm, root->comp),
                 "receiving best-k distances");
        NCCL_TRY(ncclRecv((uint64_t *)root->gat_i.p + (size_t)d * qt * k, qt * k, ncclUint64, d,
                          root->comm, root->comp),
                 "receiving best-k ids");
    }
    in_group = 0;
    NCCL_TRY(ncclGroupEnd(), "gathering results");
    return SHOAL_OK;
fail:
    if (in_group)
        (void)ncclGroupEnd();
    return rc;
}

/* Stage 5: the devices' lists merged (several devices), results to pinned slot `slot`. */
static int s_stage_result(knn_cuda_t *cu, int slot, size_t qt, const s_search_t *ss,
                          shoal_err_t *err)
{
    int rc = SHOAL_OK;
    s_dev_t *root = &cu->dev[0];
    const int o = root->ordinal;
    const size_t k = ss->k;
    const float *rd;
    const uint64_t *ri;
    CU_TRY(cudaSetDevice(o), o, "selecting the device");
    s_dev_result(cu, root, ss->splits[0], &rd, &ri);
    if (cu->ndev > 1) {
        knn_lists_t l = {(const float *)root->gat_d.p, (const uint64_t *)root->gat_i.p, k, k,
                         qt * k, (size_t)cu->ndev};
        if ((rc = s_mark(cu, root, 1, err)) < 0)
            return rc;
        CU_TRY(knn_launch_select_lists(&l, (unsigned)qt, (float *)root->fin_d.p,
                                       (uint64_t *)root->fin_i.p, (unsigned)k, root->comp),
               o, "launching the device merge");
        if (cu->profiling &&
            ((rc = s_mark(cu, root, 2, err)) < 0 || (rc = s_profile(cu, root, 0, err)) < 0))
            return rc;
        rd = (const float *)root->fin_d.p;
        ri = (const uint64_t *)root->fin_i.p;
    }
    CU_TRY(cudaMemcpyAsync(cu->hr_d[slot].p, rd, qt * k * sizeof(float), cudaMemcpyDeviceToHost,
                           root->comp),
           o, "downloading distances");
    CU_TRY(cudaMemcpyAsync(cu->hr_i[slot].p, ri, qt * k * sizeof(uint64_t),
                           cudaMemcpyDeviceToHost, root->comp),
           o, "downloading ids");
    CU_TRY(cudaEventRecord(root->ev_res[slot], root->comp), o, "recording the download");
    return SHOAL_OK;
fail:
    return rc;
}

/* Aborts every communicator (after an asynchronous NCCL error); destroy skips them. */
static void s_abort_comms(knn_cuda_t *cu)
{
    for (int d = 0; d < cu->ndev; d++)
        if (cu->dev[d].comm) {
            (void)ncclCommAbort(cu->dev[d].comm);
            cu->dev[d].comm = NULL;
        }
}

/*
 * Waits for event ev of device dv. One device: a blocking-sync wait (the
 * thread sleeps). Several: polls the event and every communicator's
 * asynchronous error, so a failed peer ends the wait with an error instead
 * of hanging it.
 */
static int s_wait(knn_cuda_t *cu, s_dev_t *dv, cudaEvent_t ev, shoal_err_t *err)
{
    int rc = SHOAL_OK;
    if (cu->ndev == 1) {
        CU_TRY(cudaEventSynchronize(ev), dv->ordinal, "searching a query tile");
        return SHOAL_OK;
    }
    for (;;) {
        cudaError_t e = cudaEventQuery(ev);
        if (e == cudaSuccess)
            return SHOAL_OK;
        if (e != cudaErrorNotReady)
            CU_TRY(e, dv->ordinal, "searching a query tile");
        for (int d = 0; d < cu->ndev; d++) {
            ncclResult_t async = ncclSuccess, got = ncclCommGetAsyncError(cu->dev[d].comm, &async);
            if (got != ncclSuccess)
                async = got;
            if (async != ncclSuccess && async != ncclInProgress) {
                s_abort_comms(cu);
                return s_nccl_fail(err, async, "a device failed during a search");
            }
        }
        struct timespec nap = {0, S_POLL_NS};
        nanosleep(&nap, NULL);
    }
fail:
    return rc;
}

/* Stage 6: the results of the tile in pinned slot `slot` to the caller's arrays. */
static int s_finish(knn_cuda_t *cu, const s_search_t *ss, int slot, shoal_err_t *err)
{
    int rc = SHOAL_OK;
    s_dev_t *root = &cu->dev[0];
    const size_t q0 = ss->pend_q0[slot], qt = ss->pend_qt[slot], k = ss->k;
    CU_TRY(cudaSetDevice(root->ordinal), root->ordinal, "selecting the device");
    rc = s_wait(cu, root, root->ev_res[slot], err);
    if (rc < 0)
        return rc;
    memcpy(ss->ids + q0 * k, cu->hr_i[slot].p, qt * k * sizeof(uint64_t));
    if (ss->dists)
        memcpy(ss->dists + q0 * k, cu->hr_d[slot].p, qt * k * sizeof(float));
    return SHOAL_OK;
fail:
    return rc;
}

/* Stages 1-5 for query tile t, then stage 6 for tile t - 1 while t runs. */
static int s_search_tile(knn_cuda_t *cu, s_search_t *ss, size_t t, shoal_err_t *err)
{
    const int slot = (int)(t & 1);
    const size_t q0 = t * ss->tq, qt = s_min(ss->tq, ss->nq - q0);
    int rc = s_stage_upload(cu, ss, slot, q0, qt, err);
    if (rc == SHOAL_OK)
        rc = s_stage_broadcast(cu, slot, qt, err);
    for (int d = 0; d < cu->ndev && rc == SHOAL_OK; d++)
        rc = s_stage_scan(cu, d, slot, qt, ss, err);
    if (rc == SHOAL_OK)
        rc = s_stage_gather(cu, qt, ss, err);
    if (rc == SHOAL_OK)
        rc = s_stage_result(cu, slot, qt, ss, err);
    if (rc < 0)
        return rc;
    ss->pend_q0[slot] = q0;
    ss->pend_qt[slot] = qt;
    return t > 0 ? s_finish(cu, ss, (int)((t - 1) & 1), err) : SHOAL_OK;
}

/* Every stream idle: rows may be rewritten next with plain copies. */
static int s_idle(knn_cuda_t *cu, shoal_err_t *err)
{
    int rc = SHOAL_OK;
    for (int d = 0; d < cu->ndev; d++) {
        s_dev_t *dv = &cu->dev[d];
        CU_TRY(cudaSetDevice(dv->ordinal), dv->ordinal, "selecting the device");
        CU_TRY(cudaStreamSynchronize(dv->comp), dv->ordinal, "finishing the search");
        CU_TRY(cudaStreamSynchronize(dv->copy), dv->ordinal, "finishing the search");
        CU_TRY(cudaStreamSynchronize(dv->comp2), dv->ordinal, "finishing the search");
    }
    return SHOAL_OK;
fail:
    return rc;
}

extern "C" int knn_cuda_search(knn_cuda_t *cu, const float *queries, size_t nq, size_t k,
                               uint64_t *ids, float *dists, shoal_err_t *err)
{
    int rc = SHOAL_OK;
    const double t_start = s_now_ms();
    if (k < 1 || k > KNN_CUDA_K_MAX)
        return shoal_err_set(err, SHOAL_EINVAL, "knn_cuda_search: k %zu, expected 1..%d", k,
                             KNN_CUDA_K_MAX);
    if (nq == 0)
        return SHOAL_OK;
    if (!queries || !ids)
        return shoal_err_set(err, SHOAL_EINVAL, "knn_cuda_search: NULL queries or ids");

    s_search_t ss;
    memset(&ss, 0, sizeof ss);
    ss.queries = queries;
    ss.nq = nq;
    ss.k = k;
    ss.ids = ids;
    ss.dists = dists;
    s_plan(cu, nq, k, &ss.tq, &ss.tn);
    ss.ntiles = (nq + ss.tq - 1) / ss.tq;
    for (int d = 0; d < cu->ndev && rc == SHOAL_OK; d++) {
        ss.splits[d] = knn_plan_splits(cu->dev[d].sms, cu->dev[d].n, ss.tq, ss.tn, k);
        rc = s_dev_buffers(cu, d, &ss, err);
    }
    if (rc == SHOAL_OK)
        rc = s_host_buffers(cu, &ss, err);
    for (size_t t = 0; t < ss.ntiles && rc == SHOAL_OK; t++)
        rc = s_search_tile(cu, &ss, t, err);
    if (rc == SHOAL_OK)
        rc = s_finish(cu, &ss, (int)((ss.ntiles - 1) & 1), err);
    if (rc == SHOAL_OK)
        rc = s_idle(cu, err);
    if (rc < 0) {
        /* Nothing may still run on buffers the next call reuses. */
        for (int d = 0; d < cu->ndev; d++)
            if (cudaSetDevice(cu->dev[d].ordinal) == cudaSuccess) {
                (void)cudaStreamSynchronize(cu->dev[d].comp);
                (void)cudaStreamSynchronize(cu->dev[d].copy);
                (void)cudaStreamSynchronize(cu->dev[d].comp2);
            }
        (void)cudaGetLastError();
        return rc;
    }
    cu->stats.searches++;
    cu->stats.queries += nq;
    cu->stats.wall_ms += s_now_ms() - t_start;
    return SHOAL_OK;
}
