/*
 * knn_cuda.cu - the exact k-NN engine on one or several GPUs (knn_cuda.h).
 *
 * Three layers, as in the header: rows resident on the devices, a search that
 * tiles queries x rows from a memory budget and runs one cuBLAS GEMM per tile,
 * and a k-select kernel written for shoal that turns a tile of dot products
 * into distances and keeps each query's best k.
 *
 * The select kernel (k_select). One thread block per (query, split) keeps a
 * candidate buffer in shared memory: cap = next power of two >= k + CHUNK
 * (dist, id) pairs, at most 2048 (24 KiB) for k <= 1024. The buffer starts with
 * the block's running best k from earlier row tiles (the "state" in device
 * memory), so after the last tile the state is final, and a threshold: the
 * k-th best so far. The block streams over its columns, CHUNK = 1024 at a time
 * (4 independent coalesced loads per thread in flight), computes the distance
 * from the dot product and the norms, and appends only candidates better than
 * the threshold in the (dist, id) order (warp-aggregated atomicAdd on a shared
 * counter; the id is loaded only for an appended candidate or a tie). Before a
 * chunk that might not fit, the buffer is bitonic-sorted in shared memory, cut
 * to the best k and the threshold raised. With random order, after the first
 * few chunks almost nothing passes the threshold, so the kernel runs at the
 * speed of reading the tile. Merging lists (splits of one query, devices) is
 * the same kernel reading (dist, id) pairs instead of a GEMM tile.
 * Rejected alternatives: a full sort per row (n log n work for k << n); a
 * radix select (two passes over the tile, and ties by id need a second key);
 * per-thread heaps (divergent, and k up to 1024 does not fit in registers).
 *
 * Splits: with few queries, one block per query would leave most of the GPU
 * idle, so a row tile is split into S column ranges (S * tq ~ 8 blocks per
 * multiprocessor, each range >= SEL_MIN_SPLIT columns); each split keeps its
 * own state and the splits are merged after the last tile.
 *
 * Rows over devices: global row r is in block b = r / KNN_CUDA_BLOCK_ROWS,
 * which lives on device b % D at local block b / D; local rows are a dense
 * prefix. Appends spread evenly; truncation (after the host store moved its
 * last rows into freed ones) only shortens prefixes.
 *
 * Pipeline per query tile: the host copies the tile into pinned buffer
 * slot t%2, the first device's copy stream uploads it (overlapping the compute
 * of tile t-1 on the compute stream), NCCL broadcasts it to every device, each
 * device runs prep (norms, cosine normalisation, fp16 rounding), GEMM+select
 * over its row tiles and its split merge, NCCL send/recv gathers the per-device
 * best k on the first device, a last merge there, and an async copy of the
 * results into pinned slot t%2, which the host reads while tile t+1 runs.
 * One device takes the same path with a communicator of one, so single-GPU
 * machines exercise the NCCL code too.
 *
 * Errors: every CUDA, cuBLAS and NCCL status is checked and turned into a
 * shoal error naming the device and what was being done; allocation failures
 * are SHOAL_ENOMEM, everything else SHOAL_EGPU.
 */
#include "gpu/knn_cuda.h"

#include "common/topk.h"

#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <nccl.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define S_DEVICES_MAX 16
#define SEL_THREADS 256
#define SEL_V 4
#define SEL_CHUNK (SEL_THREADS * SEL_V)
#define SEL_MIN_SPLIT 4096   /* fewest columns per split of a row tile */
#define SEL_BLOCKS_PER_SM 8  /* splits target this many select blocks per SM */
#define TILE_Q_MAX 4096      /* most queries per tile */
#define TILE_N_ALIGN 128     /* row tiles are a multiple of this (but the last) */
#define SCATTER_CHUNK 65536  /* rows per set_rows upload */

static_assert(KNN_CUDA_K_MAX + SEL_CHUNK <= 2048, "select buffer must stay within 24 KiB");

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
    size_t budget;         /* bytes for search tiles */
    size_t n;              /* rows held here: a dense prefix */
    size_t cap;            /* rows allocated */
    void *vecs;            /* cap x dim, float or __half */
    float *norms;          /* cap squared norms (fp32, exact) */
    uint64_t *ids;         /* cap ids */
    cudaStream_t comp;     /* compute stream: NCCL, kernels, GEMMs */
    cudaStream_t copy;     /* query uploads (first device) */
    cublasHandle_t blas;   /* bound to comp */
    ncclComm_t comm;       /* rank = index in the device list */
    cudaEvent_t ev_up[2];  /* query slot uploaded */
    cudaEvent_t ev_qfree[2]; /* query slot no longer read by the GEMMs */
    cudaEvent_t ev_res[2]; /* result slot copied to the host */
    cudaEvent_t ev_prof[3]; /* profiling: before GEMM, after GEMM, after select */
    int events_made;       /* the events above exist */
    s_buf_t dq[2];         /* query tiles, fp32 */
    s_buf_t q16;           /* query tile rounded to fp16 */
    s_buf_t qnorm;         /* |q|^2 per query of the tile */
    s_buf_t dots;          /* tq x tn dot products */
    s_buf_t st_d, st_i;    /* running best k per (query, split) */
    s_buf_t out_d, out_i;  /* best k per query after the split merge */
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
    s_buf_t hq[2];               /* pinned query slots */
    s_buf_t hr_d[2], hr_i[2];    /* pinned result slots */
    int profiling;               /* time GEMM and select with events */
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

static unsigned s_next_pow2(unsigned v)
{
    unsigned p = 1;
    while (p < v)
        p <<= 1;
    return p;
}

/* Entries of the select kernel's shared buffer for k. */
static unsigned s_sel_cap(size_t k)
{
    return s_next_pow2((unsigned)k + SEL_CHUNK);
}

static double s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Rows of a global count n that live on device d of D (a dense local prefix). */
static size_t s_local_count(size_t n, int ndev, int d)
{
    const size_t B = KNN_CUDA_BLOCK_ROWS;
    size_t full = n / B, rem = n % B, D = (size_t)ndev;
    size_t cnt = (full / D) * B + ((size_t)d < full % D ? B : 0);
    if ((size_t)d == full % D)
        cnt += rem;
    return cnt;
}

/* Where global row r lives. */
static void s_locate(size_t r, int ndev, int *d, size_t *local)
{
    const size_t B = KNN_CUDA_BLOCK_ROWS;
    size_t b = r / B;
    *d = (int)(b % (size_t)ndev);
    *local = (b / (size_t)ndev) * B + r % B;
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

/* ------------------------------------------------------------------------ */
/* Kernels                                                                  */
/* ------------------------------------------------------------------------ */

#define S_INF __int_as_float(0x7f800000)

/* Candidates from a GEMM tile: dots is tq x ld row-major (one row per query). */
struct s_tile_src {
    const float *dots;    /* dot products of the tile */
    size_t ld;            /* columns (rows of the store) in the tile */
    const float *rnorm;   /* |x|^2 of the tile's rows */
    const uint64_t *rid;  /* ids of the tile's rows */
    const float *qnorm;   /* |q|^2 of the tile's queries */
    int metric;           /* shoal_metric_t */

    __device__ size_t count() const { return ld; }
    __device__ float dist(unsigned q, size_t c) const
    {
        float dot = dots[(size_t)q * ld + c];
        if (metric == SHOAL_METRIC_L2)
            return fmaxf(qnorm[q] + rnorm[c] - 2.0f * dot, 0.0f);
        if (metric == SHOAL_METRIC_IP)
            return -dot;
        return 1.0f - dot;
    }
    __device__ uint64_t id(unsigned q, size_t c) const
    {
        (void)q;
        return rid[c];
    }
};

/*
 * Candidates from nlists sorted lists of len (dist, id) pairs per query: list j
 * of query q starts at q * qstride + j * lstride.
 */
struct s_pair_src {
    const float *d;     /* distances */
    const uint64_t *i;  /* ids */
    size_t qstride;     /* offset between queries */
    size_t len;         /* pairs per list */
    size_t lstride;     /* offset between lists of one query */
    size_t nlists;      /* lists per query */

    __device__ size_t count() const { return len * nlists; }
    __device__ size_t at(unsigned q, size_t c) const
    {
        return (size_t)q * qstride + (c / len) * lstride + c % len;
    }
    __device__ float dist(unsigned q, size_t c) const { return d[at(q, c)]; }
    __device__ uint64_t id(unsigned q, size_t c) const { return i[at(q, c)]; }
};

/* (da, ia) strictly before (db, ib): smaller distance, then smaller id (topk.h). */
__device__ __forceinline__ bool s_better(float da, uint64_t ia, float db, uint64_t ib)
{
    return da < db || (da == db && ia < ib);
}

__device__ __forceinline__ unsigned s_next_pow2_dev(unsigned v)
{
    return v <= 1 ? 1u : 1u << (32 - __clz(v - 1));
}

/*
 * Sorts the first p (a power of two) buffer entries best first after padding
 * [n, p) with (+inf, NONE). Every thread of the block calls it; ends synced.
 */
__device__ void s_block_sort(float *bd, uint64_t *bi, unsigned p, unsigned n)
{
    for (unsigned j = n + threadIdx.x; j < p; j += blockDim.x) {
        bd[j] = S_INF;
        bi[j] = TOPK_ID_NONE;
    }
    __syncthreads();
    for (unsigned size = 2; size <= p; size <<= 1) {
        for (unsigned stride = size >> 1; stride > 0; stride >>= 1) {
            for (unsigned t = threadIdx.x; t < p / 2; t += blockDim.x) {
                /* Pair t: lo has bit `stride` clear; hi = lo + stride. */
                unsigned lo = 2 * t - (t & (stride - 1));
                unsigned hi = lo + stride;
                bool ascending = (lo & size) == 0;
                float dl = bd[lo], dh = bd[hi];
                uint64_t il = bi[lo], ih = bi[hi];
                if (s_better(dh, ih, dl, il) == ascending) {
                    bd[lo] = dh;
                    bd[hi] = dl;
                    bi[lo] = ih;
                    bi[hi] = il;
                }
            }
            __syncthreads();
        }
    }
}

/*
 * Block (q, s) keeps the best k of split s of query q's candidates, starting
 * from in[(q * S + s) * k ..] (sorted, padded; NULL = empty) and writing
 * out[(q * S + s) * k ..]; in and out may be the same. cap: shared buffer
 * entries, a power of two >= k + SEL_CHUNK; dynamic shared memory cap * 12 B.
 */
template <class Src>
__global__ void __launch_bounds__(SEL_THREADS)
    k_select(Src src, const float *in_d, const uint64_t *in_i, float *out_d, uint64_t *out_i,
             unsigned k, unsigned cap)
{
    extern __shared__ uint64_t s_smem[];
    uint64_t *bi = s_smem;
    float *bd = (float *)(s_smem + cap);
    __shared__ unsigned s_count;
    __shared__ float s_thr_d;
    __shared__ uint64_t s_thr_i;

    const unsigned q = blockIdx.x;
    const size_t slot = ((size_t)q * gridDim.y + blockIdx.y) * k;
    const size_t total = src.count();
    const size_t span = (total + gridDim.y - 1) / gridDim.y;
    const size_t begin = min((size_t)blockIdx.y * span, total);
    const size_t end = min(begin + span, total);
    const unsigned lane = threadIdx.x & 31u;

    if (in_d) {
        for (unsigned j = threadIdx.x; j < k; j += blockDim.x) {
            bd[j] = in_d[slot + j];
            bi[j] = in_i[slot + j];
        }
    }
    if (threadIdx.x == 0) {
        s_count = in_d ? k : 0;
        if (in_d && in_i[slot + k - 1] != TOPK_ID_NONE) {
            s_thr_d = in_d[slot + k - 1];
            s_thr_i = in_i[slot + k - 1];
        } else {
            s_thr_d = S_INF;
            s_thr_i = TOPK_ID_NONE;
        }
    }
    __syncthreads();
    float thr_d = s_thr_d;
    uint64_t thr_i = s_thr_i;

    for (size_t base = begin; base < end; base += SEL_CHUNK) {
        /* All threads read the same count: the last writes were before a barrier. */
        unsigned n_now = s_count;
        if (n_now > cap - SEL_CHUNK) {
            s_block_sort(bd, bi, cap, n_now);
            if (threadIdx.x == 0) {
                s_count = k;
                /* n_now > cap - CHUNK >= k, so k entries are kept; they may be padding. */
                if (bi[k - 1] != TOPK_ID_NONE) {
                    s_thr_d = bd[k - 1];
                    s_thr_i = bi[k - 1];
                }
            }
            __syncthreads();
            thr_d = s_thr_d;
            thr_i = s_thr_i;
        }
        __syncthreads(); /* every thread has read s_count before anyone appends */

        float d[SEL_V];
#pragma unroll
        for (int v = 0; v < SEL_V; v++) {
            size_t c = base + (size_t)v * SEL_THREADS + threadIdx.x;
            d[v] = c < end ? src.dist(q, c) : S_INF;
        }
#pragma unroll
        for (int v = 0; v < SEL_V; v++) {
            size_t c = base + (size_t)v * SEL_THREADS + threadIdx.x;
            bool ok = c < end;
            bool take = false, have_id = false;
            uint64_t id = 0;
            if (ok) {
                if (d[v] < thr_d) {
                    take = true;
                } else if (d[v] == thr_d) {
                    id = src.id(q, c);
                    have_id = true;
                    take = id < thr_i;
                }
            }
            unsigned mask = __ballot_sync(0xffffffffu, take);
            if (mask) {
                int leader = __ffs(mask) - 1;
                unsigned pos0 = 0;
                if ((int)lane == leader)
                    pos0 = atomicAdd(&s_count, (unsigned)__popc(mask));
                pos0 = __shfl_sync(0xffffffffu, pos0, leader);
                if (take) {
                    if (!have_id)
                        id = src.id(q, c);
                    unsigned pos = pos0 + (unsigned)__popc(mask & ((1u << lane) - 1u));
                    bd[pos] = d[v];
                    bi[pos] = id;
                }
            }
        }
        __syncthreads(); /* appends done before the next read of s_count */
    }

    unsigned n_now = s_count;
    unsigned p = s_next_pow2_dev(n_now > k ? n_now : k);
    s_block_sort(bd, bi, p, n_now);
    for (unsigned j = threadIdx.x; j < k; j += blockDim.x) {
        out_d[slot + j] = bd[j];
        out_i[slot + j] = bi[j];
    }
}

/*
 * One warp per query of the tile: |q|^2 into qnorm; under cosine the query is
 * scaled to unit length in place (a zero query stays zero, at distance 1 from
 * every row, as on the CPU) and qnorm is 1; with q16 the (scaled) query is
 * also written rounded to fp16.
 */
__global__ void k_prep(float *q, unsigned nq, unsigned dim, int metric, float *qnorm,
                       __half *q16)
{
    const unsigned warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const unsigned lane = threadIdx.x & 31u;
    if (warp >= nq)
        return; /* the whole warp leaves together */
    float *v = q + (size_t)warp * dim;
    float s = 0.0f;
    for (unsigned j = lane; j < dim; j += 32)
        s += v[j] * v[j];
    for (int o = 16; o > 0; o >>= 1)
        s += __shfl_xor_sync(0xffffffffu, s, o);
    if (metric == SHOAL_METRIC_COSINE) {
        float scale = s > 0.0f ? 1.0f / sqrtf(s) : 1.0f;
        for (unsigned j = lane; j < dim; j += 32)
            v[j] *= scale;
    }
    if (lane == 0)
        qnorm[warp] = metric == SHOAL_METRIC_COSINE ? 1.0f : s;
    if (q16) {
        __half *h = q16 + (size_t)warp * dim;
        for (unsigned j = lane; j < dim; j += 32)
            h[j] = __float2half_rn(v[j]);
    }
}

/* Empty best-k lists: (+inf, NONE) everywhere. */
__global__ void k_fill(float *d, uint64_t *i, size_t n)
{
    for (size_t j = (size_t)blockIdx.x * blockDim.x + threadIdx.x; j < n;
         j += (size_t)gridDim.x * blockDim.x) {
        d[j] = S_INF;
        i[j] = TOPK_ID_NONE;
    }
}

/* Row rows[i] takes src[i * dim ..], snorm[i], sid[i]; rows are distinct. */
template <typename T>
__global__ void k_scatter(T *vecs, float *norms, uint64_t *ids, const size_t *rows, const T *src,
                          const float *snorm, const uint64_t *sid, size_t m, size_t dim)
{
    for (size_t e = (size_t)blockIdx.x * blockDim.x + threadIdx.x; e < m * dim;
         e += (size_t)gridDim.x * blockDim.x) {
        size_t i = e / dim, j = e % dim;
        size_t r = rows[i];
        vecs[r * dim + j] = src[e];
        if (j == 0) {
            norms[r] = snorm[i];
            ids[r] = sid[i];
        }
    }
}

static unsigned s_grid(size_t n, unsigned threads)
{
    size_t blocks = (n + threads - 1) / threads;
    return (unsigned)s_max(1, s_min(blocks, 4096));
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
        s_buf_t *bufs[] = {&dv->dq[0], &dv->dq[1], &dv->q16,   &dv->qnorm, &dv->dots,
                           &dv->st_d,  &dv->st_i,  &dv->out_d, &dv->out_i, &dv->gat_d,
                           &dv->gat_i, &dv->fin_d, &dv->fin_i};
        for (size_t b = 0; b < sizeof bufs / sizeof bufs[0]; b++)
            s_dev_free(bufs[b]);
        if (dv->vecs)
            cudaFree(dv->vecs);
        if (dv->norms)
            cudaFree(dv->norms);
        if (dv->ids)
            cudaFree(dv->ids);
        cudaEvent_t *evs[] = {&dv->ev_up[0],   &dv->ev_up[1],   &dv->ev_qfree[0],
                              &dv->ev_qfree[1], &dv->ev_res[0],  &dv->ev_res[1],
                              &dv->ev_prof[0], &dv->ev_prof[1], &dv->ev_prof[2]};
        for (size_t e = 0; e < sizeof evs / sizeof evs[0]; e++)
            if (*evs[e])
                cudaEventDestroy(*evs[e]);
        if (dv->blas)
            cublasDestroy(dv->blas);
        if (dv->comm)
            ncclCommDestroy(dv->comm);
        if (dv->comp)
            cudaStreamDestroy(dv->comp);
        if (dv->copy)
            cudaStreamDestroy(dv->copy);
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

extern "C" knn_cuda_t *knn_cuda_new(const int *devices, int ndevices, size_t dim,
                                    shoal_metric_t metric, int fp16, size_t mem_budget,
                                    shoal_err_t *err)
{
    knn_cuda_t *cu = NULL;
    int rc = SHOAL_OK, count = 0, ord = -1;
    ncclComm_t comms[S_DEVICES_MAX];
    cudaDeviceProp prop;
    cudaError_t e;
    size_t free_b = 0, total_b = 0;

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

    for (int i = 0; i < ndevices; i++) {
        ord = devices[i];
        if (ord < 0 || ord >= count) {
            rc = shoal_err_set(err, SHOAL_ENODEV, "GPU %d does not exist (devices: 0..%d)", ord,
                               count - 1);
            goto fail;
        }
        for (int j = 0; j < i; j++)
            if (devices[j] == ord) {
                rc = shoal_err_set(err, SHOAL_EINVAL, "GPU %d is listed twice", ord);
                goto fail;
            }
        CU_TRY(cudaGetDeviceProperties(&prop, ord), ord, "reading device properties");
        if (prop.major < 8) {
            rc = shoal_err_set(err, SHOAL_ENODEV,
                               "GPU %d (%s) has compute capability %d.%d; this build has code "
                               "for 8.0 and later",
                               ord, prop.name, prop.major, prop.minor);
            goto fail;
        }
        s_dev_t *dv = &cu->dev[i];
        cu->ndev = i + 1; /* destroy cleans this slot from here on */
        dv->ordinal = ord;
        dv->sms = prop.multiProcessorCount;
        CU_TRY(cudaSetDevice(ord), ord, "selecting the device");
        CU_TRY(cudaMemGetInfo(&free_b, &total_b), ord, "reading free memory");
        dv->budget = mem_budget ? mem_budget : s_min(free_b / 4, KNN_CUDA_BUDGET_MAX);
        dv->budget = s_max(dv->budget, KNN_CUDA_BUDGET_MIN);
        CU_TRY(cudaStreamCreateWithFlags(&dv->comp, cudaStreamNonBlocking), ord,
               "creating the compute stream");
        CU_TRY(cudaStreamCreateWithFlags(&dv->copy, cudaStreamNonBlocking), ord,
               "creating the copy stream");
        for (int s = 0; s < 2; s++) {
            CU_TRY(cudaEventCreateWithFlags(&dv->ev_up[s], cudaEventDisableTiming), ord,
                   "creating events");
            CU_TRY(cudaEventCreateWithFlags(&dv->ev_qfree[s], cudaEventDisableTiming), ord,
                   "creating events");
            CU_TRY(cudaEventCreateWithFlags(&dv->ev_res[s], cudaEventDisableTiming), ord,
                   "creating events");
        }
        for (int s = 0; s < 3; s++)
            CU_TRY(cudaEventCreate(&dv->ev_prof[s]), ord, "creating timing events");
        BLAS_TRY(cublasCreate(&dv->blas), ord, "creating the cuBLAS handle");
        BLAS_TRY(cublasSetStream(dv->blas, dv->comp), ord, "binding cuBLAS to the stream");
        /* Plain fp32 (no TF32): the results must match the CPU's. */
        BLAS_TRY(cublasSetMathMode(dv->blas, CUBLAS_DEFAULT_MATH), ord, "setting the math mode");
    }

    NCCL_TRY(ncclCommInitAll(comms, ndevices, devices), "creating the NCCL communicators");
    for (int i = 0; i < ndevices; i++)
        cu->dev[i].comm = comms[i];
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
        const s_buf_t *bufs[] = {&dv->dq[0], &dv->dq[1], &dv->q16,   &dv->qnorm, &dv->dots,
                                 &dv->st_d,  &dv->st_i,  &dv->out_d, &dv->out_i, &dv->gat_d,
                                 &dv->gat_i, &dv->fin_d, &dv->fin_i};
        for (size_t b = 0; b < sizeof bufs / sizeof bufs[0]; b++)
            total += bufs[b]->bytes;
    }
    return total;
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
        size_t need = s_local_count(n, cu->ndev, d);
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
        s_locate(r, cu->ndev, &d, &local);
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
        cu->dev[d].n = s_local_count(end, cu->ndev, d);
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
    if (cu->fp16)
        k_scatter<__half><<<s_grid(c * dim, 256), 256, 0, dv->comp>>>(
            (__half *)dv->vecs, dv->norms, dv->ids, (const size_t *)sc->d_rows.p,
            (const __half *)sc->d_vecs.p, (const float *)sc->d_norms.p,
            (const uint64_t *)sc->d_ids.p, c, dim);
    else
        k_scatter<float><<<s_grid(c * dim, 256), 256, 0, dv->comp>>>(
            (float *)dv->vecs, dv->norms, dv->ids, (const size_t *)sc->d_rows.p,
            (const float *)sc->d_vecs.p, (const float *)sc->d_norms.p,
            (const uint64_t *)sc->d_ids.p, c, dim);
    CU_TRY(cudaGetLastError(), dv->ordinal, "launching the row scatter");
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
            s_locate(rows[i], cu->ndev, &dd, &local);
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
        cu->dev[d].n = s_local_count(n, cu->ndev, d);
    return SHOAL_OK;
}

/* ------------------------------------------------------------------------ */
/* Search                                                                   */
/* ------------------------------------------------------------------------ */

/*
 * Tile sizes from the smallest device budget: tq queries per tile (fewer when
 * the per-query buffers, mostly k-sized lists, would take more than half the
 * budget), then tn rows per GEMM tile from what is left: the tq x tn dot
 * products dominate.
 */
static void s_plan(const knn_cuda_t *cu, size_t nq, size_t k, size_t *tq_out, size_t *tn_out)
{
    size_t budget = SIZE_MAX, ln_max = 0, sms = SIZE_MAX;
    for (int d = 0; d < cu->ndev; d++) {
        budget = s_min(budget, cu->dev[d].budget);
        ln_max = s_max(ln_max, cu->dev[d].n);
        sms = s_min(sms, (size_t)cu->dev[d].sms);
    }
    const size_t target = sms * SEL_BLOCKS_PER_SM;
    const size_t list = k * (sizeof(float) + sizeof(uint64_t));
    size_t tq = s_min(nq, TILE_Q_MAX), fixed = 0;
    /* An upper bound of s_splits for any device (each split >= SEL_MIN_SPLIT rows). */
    const size_t splits_cap = s_max(1, ln_max / SEL_MIN_SPLIT);
    for (;;) {
        size_t splits = s_min((target + tq - 1) / tq, splits_cap);
        size_t per_q = 2 * cu->dim * sizeof(float) + (cu->fp16 ? cu->dim * sizeof(__half) : 0) +
                       sizeof(float) + list * (splits + 2 + (size_t)cu->ndev);
        fixed = tq * per_q;
        if (fixed <= budget / 2 || tq == 1)
            break;
        tq = (tq + 1) / 2;
    }
    size_t tn = budget > fixed ? (budget - fixed) / (tq * sizeof(float)) : 0;
    tn = s_min(tn, (size_t)1 << 30); /* cuBLAS takes int sizes */
    if (tn >= ln_max)
        tn = ln_max;
    else if (tn >= TILE_N_ALIGN)
        tn -= tn % TILE_N_ALIGN;
    tn = s_max(tn, s_min(ln_max, TILE_N_ALIGN));
    *tq_out = tq;
    *tn_out = tn;
}

/* Splits of each row tile on device dv for tiles of tq queries and tn rows. */
static size_t s_splits(const s_dev_t *dv, size_t tq, size_t tn)
{
    size_t target = (size_t)dv->sms * SEL_BLOCKS_PER_SM;
    if (tq >= target)
        return 1;
    size_t s = (target + tq - 1) / tq;
    size_t by_cols = s_min(tn, dv->n) / SEL_MIN_SPLIT;
    return s_max(1, s_min(s, s_min(by_cols, 65535)));
}

/* Copies the results of the tile in pinned slot `slot` to the caller's arrays. */
static int s_finish(knn_cuda_t *cu, int slot, size_t q0, size_t qt, size_t k, uint64_t *ids,
                    float *dists, shoal_err_t *err)
{
    int rc = SHOAL_OK;
    s_dev_t *root = &cu->dev[0];
    CU_TRY(cudaSetDevice(root->ordinal), root->ordinal, "selecting the device");
    CU_TRY(cudaEventSynchronize(root->ev_res[slot]), root->ordinal, "searching a query tile");
    memcpy(ids + q0 * k, cu->hr_i[slot].p, qt * k * sizeof(uint64_t));
    if (dists)
        memcpy(dists + q0 * k, cu->hr_d[slot].p, qt * k * sizeof(float));
    return SHOAL_OK;
fail:
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

extern "C" int knn_cuda_search(knn_cuda_t *cu, const float *queries, size_t nq, size_t k,
                               uint64_t *ids, float *dists, shoal_err_t *err)
{
    int rc = SHOAL_OK, in_group = 0;
    const int D = cu->ndev;
    const size_t dim = cu->dim;
    const double t_start = s_now_ms();
    size_t tq = 0, tn = 0, ntiles = 0;
    size_t splits[S_DEVICES_MAX];
    size_t pend_q0[2] = {0, 0}, pend_qt[2] = {0, 0};
    unsigned cap = 0;
    size_t smem = 0;
    const float one = 1.0f, zero = 0.0f;
    s_dev_t *root = &cu->dev[0];
    const size_t list_b = sizeof(float) + sizeof(uint64_t);

    if (k < 1 || k > KNN_CUDA_K_MAX)
        return shoal_err_set(err, SHOAL_EINVAL, "knn_cuda_search: k %zu, expected 1..%d", k,
                             KNN_CUDA_K_MAX);
    if (nq == 0)
        return SHOAL_OK;
    if (!queries || !ids)
        return shoal_err_set(err, SHOAL_EINVAL, "knn_cuda_search: NULL queries or ids");

    s_plan(cu, nq, k, &tq, &tn);
    cap = s_sel_cap(k);
    smem = (size_t)cap * list_b;
    ntiles = (nq + tq - 1) / tq;

    /* Work buffers: grown when a search needs more, kept for the next. */
    for (int d = 0; d < D; d++) {
        s_dev_t *dv = &cu->dev[d];
        const int o = dv->ordinal;
        splits[d] = s_splits(dv, tq, tn);
        const size_t lists = tq * splits[d] * k;
        CU_TRY(cudaSetDevice(o), o, "selecting the device");
        CU_TRY(s_dev_ensure(&dv->dq[0], tq * dim * sizeof(float)), o, "allocating query tiles");
        CU_TRY(s_dev_ensure(&dv->dq[1], tq * dim * sizeof(float)), o, "allocating query tiles");
        if (cu->fp16)
            CU_TRY(s_dev_ensure(&dv->q16, tq * dim * sizeof(__half)), o,
                   "allocating fp16 query tiles");
        CU_TRY(s_dev_ensure(&dv->qnorm, tq * sizeof(float)), o, "allocating query norms");
        if (tn)
            CU_TRY(s_dev_ensure(&dv->dots, tq * tn * sizeof(float)), o,
                   "allocating the distance tile");
        CU_TRY(s_dev_ensure(&dv->st_d, lists * sizeof(float)), o, "allocating best-k lists");
        CU_TRY(s_dev_ensure(&dv->st_i, lists * sizeof(uint64_t)), o, "allocating best-k lists");
        if (splits[d] > 1) {
            CU_TRY(s_dev_ensure(&dv->out_d, tq * k * sizeof(float)), o,
                   "allocating best-k lists");
            CU_TRY(s_dev_ensure(&dv->out_i, tq * k * sizeof(uint64_t)), o,
                   "allocating best-k lists");
        }
        if (d == 0) {
            CU_TRY(s_dev_ensure(&dv->gat_d, (size_t)D * tq * k * sizeof(float)), o,
                   "allocating the gather buffer");
            CU_TRY(s_dev_ensure(&dv->gat_i, (size_t)D * tq * k * sizeof(uint64_t)), o,
                   "allocating the gather buffer");
            CU_TRY(s_dev_ensure(&dv->fin_d, tq * k * sizeof(float)), o,
                   "allocating the result buffer");
            CU_TRY(s_dev_ensure(&dv->fin_i, tq * k * sizeof(uint64_t)), o,
                   "allocating the result buffer");
        }
    }
    for (int s = 0; s < 2; s++) {
        CU_TRY(s_host_ensure(&cu->hq[s], tq * dim * sizeof(float)), root->ordinal,
               "allocating pinned query buffers");
        CU_TRY(s_host_ensure(&cu->hr_d[s], tq * k * sizeof(float)), root->ordinal,
               "allocating pinned result buffers");
        CU_TRY(s_host_ensure(&cu->hr_i[s], tq * k * sizeof(uint64_t)), root->ordinal,
               "allocating pinned result buffers");
    }

    for (size_t t = 0; t < ntiles; t++) {
        const int slot = (int)(t & 1);
        const size_t q0 = t * tq, qt = s_min(tq, nq - q0);

        /* Upload: pinned slot -> first device, on its copy stream. */
        CU_TRY(cudaSetDevice(root->ordinal), root->ordinal, "selecting the device");
        CU_TRY(cudaEventSynchronize(root->ev_up[slot]), root->ordinal,
               "waiting for a query slot");
        memcpy(cu->hq[slot].p, queries + q0 * dim, qt * dim * sizeof(float));
        CU_TRY(cudaStreamWaitEvent(root->copy, root->ev_qfree[slot], 0), root->ordinal,
               "ordering the query upload");
        CU_TRY(cudaMemcpyAsync(root->dq[slot].p, cu->hq[slot].p, qt * dim * sizeof(float),
                               cudaMemcpyHostToDevice, root->copy),
               root->ordinal, "uploading queries");
        CU_TRY(cudaEventRecord(root->ev_up[slot], root->copy), root->ordinal,
               "recording the upload");
        CU_TRY(cudaStreamWaitEvent(root->comp, root->ev_up[slot], 0), root->ordinal,
               "ordering the query broadcast");

        /* Broadcast to every device (in place on the first). */
        NCCL_TRY(ncclGroupStart(), "starting the query broadcast");
        in_group = 1;
        for (int d = 0; d < D; d++) {
            s_dev_t *dv = &cu->dev[d];
            NCCL_TRY(ncclBroadcast(dv->dq[slot].p, dv->dq[slot].p, qt * dim, ncclFloat32, 0,
                                   dv->comm, dv->comp),
                     "broadcasting queries");
        }
        in_group = 0;
        NCCL_TRY(ncclGroupEnd(), "broadcasting queries");

        /* Each device: its rows, its best k per query. */
        for (int d = 0; d < D; d++) {
            s_dev_t *dv = &cu->dev[d];
            const int o = dv->ordinal;
            const size_t S = splits[d];
            float *q32 = (float *)dv->dq[slot].p;
            CU_TRY(cudaSetDevice(o), o, "selecting the device");
            k_prep<<<(unsigned)((qt + 7) / 8), 256, 0, dv->comp>>>(
                q32, (unsigned)qt, (unsigned)dim, (int)cu->metric, (float *)dv->qnorm.p,
                cu->fp16 ? (__half *)dv->q16.p : NULL);
            CU_TRY(cudaGetLastError(), o, "launching query preparation");
            k_fill<<<s_grid(qt * S * k, 256), 256, 0, dv->comp>>>(
                (float *)dv->st_d.p, (uint64_t *)dv->st_i.p, qt * S * k);
            CU_TRY(cudaGetLastError(), o, "launching best-k initialisation");
            for (size_t r0 = 0; r0 < dv->n; r0 += tn) {
                const size_t tnj = s_min(tn, dv->n - r0);
                if (cu->profiling)
                    CU_TRY(cudaEventRecord(dv->ev_prof[0], dv->comp), o, "recording a timer");
                /* dots (tnj x qt, column-major) = rows^T q: row-major qt x tnj. */
                if (cu->fp16)
                    BLAS_TRY(cublasGemmEx(dv->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)tnj, (int)qt,
                                          (int)dim, &one, (const __half *)dv->vecs + r0 * dim,
                                          CUDA_R_16F, (int)dim, dv->q16.p, CUDA_R_16F, (int)dim,
                                          &zero, dv->dots.p, CUDA_R_32F, (int)tnj,
                                          CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                             o, "fp16 GEMM of queries x rows");
                else
                    BLAS_TRY(cublasSgemm(dv->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)tnj, (int)qt,
                                         (int)dim, &one, (const float *)dv->vecs + r0 * dim,
                                         (int)dim, q32, (int)dim, &zero, (float *)dv->dots.p,
                                         (int)tnj),
                             o, "GEMM of queries x rows");
                if (cu->profiling)
                    CU_TRY(cudaEventRecord(dv->ev_prof[1], dv->comp), o, "recording a timer");
                s_tile_src src;
                src.dots = (const float *)dv->dots.p;
                src.ld = tnj;
                src.rnorm = dv->norms + r0;
                src.rid = dv->ids + r0;
                src.qnorm = (const float *)dv->qnorm.p;
                src.metric = (int)cu->metric;
                k_select<s_tile_src><<<dim3((unsigned)qt, (unsigned)S), SEL_THREADS, smem,
                                       dv->comp>>>(src, (const float *)dv->st_d.p,
                                                   (const uint64_t *)dv->st_i.p,
                                                   (float *)dv->st_d.p, (uint64_t *)dv->st_i.p,
                                                   (unsigned)k, cap);
                CU_TRY(cudaGetLastError(), o, "launching the select kernel");
                cu->stats.gemm_flop += 2.0 * (double)qt * (double)tnj * (double)dim;
                if (cu->profiling) {
                    CU_TRY(cudaEventRecord(dv->ev_prof[2], dv->comp), o, "recording a timer");
                    rc = s_profile(cu, dv, 1, err);
                    if (rc < 0)
                        goto fail;
                }
            }
            if (d == 0)
                CU_TRY(cudaEventRecord(root->ev_qfree[slot], root->comp), o,
                       "recording the end of the GEMMs");
            if (S > 1) {
                s_pair_src ps;
                ps.d = (const float *)dv->st_d.p;
                ps.i = (const uint64_t *)dv->st_i.p;
                ps.qstride = S * k;
                ps.len = k;
                ps.lstride = k;
                ps.nlists = S;
                if (cu->profiling)
                    CU_TRY(cudaEventRecord(dv->ev_prof[1], dv->comp), o, "recording a timer");
                k_select<s_pair_src><<<dim3((unsigned)qt, 1), SEL_THREADS, smem, dv->comp>>>(
                    ps, NULL, NULL, (float *)dv->out_d.p, (uint64_t *)dv->out_i.p, (unsigned)k,
                    cap);
                CU_TRY(cudaGetLastError(), o, "launching the split merge");
                if (cu->profiling) {
                    CU_TRY(cudaEventRecord(dv->ev_prof[2], dv->comp), o, "recording a timer");
                    rc = s_profile(cu, dv, 0, err);
                    if (rc < 0)
                        goto fail;
                }
            }
        }

        /* Gather every device's best k on the first device. */
        NCCL_TRY(ncclGroupStart(), "starting the result gather");
        in_group = 1;
        for (int d = 0; d < D; d++) {
            s_dev_t *dv = &cu->dev[d];
            const void *rd = splits[d] > 1 ? dv->out_d.p : dv->st_d.p;
            const void *ri = splits[d] > 1 ? dv->out_i.p : dv->st_i.p;
            NCCL_TRY(ncclSend(rd, qt * k, ncclFloat32, 0, dv->comm, dv->comp),
                     "sending best-k distances");
            NCCL_TRY(ncclSend(ri, qt * k, ncclUint64, 0, dv->comm, dv->comp),
                     "sending best-k ids");
        }
        for (int d = 0; d < D; d++) {
            NCCL_TRY(ncclRecv((float *)root->gat_d.p + (size_t)d * qt * k, qt * k, ncclFloat32, d,
                              root->comm, root->comp),
                     "receiving best-k distances");
            NCCL_TRY(ncclRecv((uint64_t *)root->gat_i.p + (size_t)d * qt * k, qt * k,
                              ncclUint64, d, root->comm, root->comp),
                     "receiving best-k ids");
        }
        in_group = 0;
        NCCL_TRY(ncclGroupEnd(), "gathering results");

        /* Final merge on the first device, results to the pinned slot. */
        {
            CU_TRY(cudaSetDevice(root->ordinal), root->ordinal, "selecting the device");
            s_pair_src ps;
            ps.d = (const float *)root->gat_d.p;
            ps.i = (const uint64_t *)root->gat_i.p;
            ps.qstride = k;
            ps.len = k;
            ps.lstride = qt * k;
            ps.nlists = (size_t)D;
            if (cu->profiling)
                CU_TRY(cudaEventRecord(root->ev_prof[1], root->comp), root->ordinal,
                       "recording a timer");
            k_select<s_pair_src><<<dim3((unsigned)qt, 1), SEL_THREADS, smem, root->comp>>>(
                ps, NULL, NULL, (float *)root->fin_d.p, (uint64_t *)root->fin_i.p, (unsigned)k,
                cap);
            CU_TRY(cudaGetLastError(), root->ordinal, "launching the device merge");
            if (cu->profiling) {
                CU_TRY(cudaEventRecord(root->ev_prof[2], root->comp), root->ordinal,
                       "recording a timer");
                rc = s_profile(cu, root, 0, err);
                if (rc < 0)
                    goto fail;
            }
            CU_TRY(cudaMemcpyAsync(cu->hr_d[slot].p, root->fin_d.p, qt * k * sizeof(float),
                                   cudaMemcpyDeviceToHost, root->comp),
                   root->ordinal, "downloading distances");
            CU_TRY(cudaMemcpyAsync(cu->hr_i[slot].p, root->fin_i.p, qt * k * sizeof(uint64_t),
                                   cudaMemcpyDeviceToHost, root->comp),
                   root->ordinal, "downloading ids");
            CU_TRY(cudaEventRecord(root->ev_res[slot], root->comp), root->ordinal,
                   "recording the download");
        }
        pend_q0[slot] = q0;
        pend_qt[slot] = qt;

        /* While tile t runs, hand over tile t-1. */
        if (t > 0) {
            const int prev = (int)((t - 1) & 1);
            rc = s_finish(cu, prev, pend_q0[prev], pend_qt[prev], k, ids, dists, err);
            if (rc < 0)
                goto fail;
        }
    }
    {
        const int last = (int)((ntiles - 1) & 1);
        rc = s_finish(cu, last, pend_q0[last], pend_qt[last], k, ids, dists, err);
        if (rc < 0)
            goto fail;
    }
    /* Leave every stream idle: rows may be rewritten next with plain copies. */
    for (int d = 0; d < D; d++) {
        s_dev_t *dv = &cu->dev[d];
        CU_TRY(cudaSetDevice(dv->ordinal), dv->ordinal, "selecting the device");
        CU_TRY(cudaStreamSynchronize(dv->comp), dv->ordinal, "finishing the search");
        CU_TRY(cudaStreamSynchronize(dv->copy), dv->ordinal, "finishing the search");
    }
    cu->stats.searches++;
    cu->stats.queries += nq;
    cu->stats.wall_ms += s_now_ms() - t_start;
    return SHOAL_OK;

fail:
    if (in_group)
        (void)ncclGroupEnd();
    for (int d = 0; d < D; d++) {
        s_dev_t *dv = &cu->dev[d];
        if (cudaSetDevice(dv->ordinal) != cudaSuccess)
            continue;
        (void)cudaStreamSynchronize(dv->comp);
        (void)cudaStreamSynchronize(dv->copy);
    }
    (void)cudaGetLastError();
    return rc;
}
