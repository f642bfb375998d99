/*
 * knn_kernels.cu - the exact engine's CUDA kernels (knn_kernels.cuh): the
 * k-select, query preparation, best-k initialisation and the row scatter,
 * each behind a host function that launches it. The host orchestration is
 * knn_cuda.cu; nothing here allocates or synchronises.
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
 * The scan distance. A GEMM tile gives q.x; the kernel forms |q|^2 + |x|^2 -
 * 2 q.x (L2), -q.x (IP) or 1 - q.x (cosine) in float, with no clamp at 0: the
 * front re-scores the candidates (knn_exact.h), and a NaN (the form
 * overflowing) is ranked first as -inf, so it is re-scored, never taken for
 * a perfect match.
 */
#include "gpu/knn_kernels.cuh"

#include "common/topk.h"

static_assert(KNN_CUDA_K_MAX + SEL_CHUNK <= 2048, "select buffer must stay within 24 KiB");

static size_t s_min(size_t a, size_t b)
{
    return a < b ? a : b;
}

static unsigned s_grid(size_t n, unsigned threads)
{
    size_t blocks = (n + threads - 1) / threads;
    blocks = s_min(blocks, 4096);
    return (unsigned)(blocks ? blocks : 1);
}

unsigned knn_sel_cap(size_t k)
{
    unsigned p = 1;
    while (p < (unsigned)k + SEL_CHUNK)
        p <<= 1;
    return p;
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
        float d;
        if (metric == SHOAL_METRIC_L2)
            d = qnorm[q] + rnorm[c] - 2.0f * dot; /* no clamp: the front re-scores */
        else if (metric == SHOAL_METRIC_IP)
            d = -dot;
        else
            d = 1.0f - dot;
        /* Overflow (inf - inf) says nothing about the row: rank it first so
         * the front re-scores it (knn_exact.h); fmaxf(NaN, 0) ranked it 0. */
        return isnan(d) ? -S_INF : d;
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

/* ------------------------------------------------------------------------ */
/* Launchers                                                                */
/* ------------------------------------------------------------------------ */

cudaError_t knn_launch_prep(float *q, unsigned nq, unsigned dim, int metric, float *qnorm,
                            __half *q16, cudaStream_t st)
{
    k_prep<<<(nq + 7) / 8, 256, 0, st>>>(q, nq, dim, metric, qnorm, q16);
    return cudaGetLastError();
}

cudaError_t knn_launch_fill(float *d, uint64_t *i, size_t n, cudaStream_t st)
{
    k_fill<<<s_grid(n, 256), 256, 0, st>>>(d, i, n);
    return cudaGetLastError();
}

cudaError_t knn_launch_select_tile(const knn_tile_t *t, unsigned nq, unsigned splits,
                                   const float *in_d, const uint64_t *in_i, float *out_d,
                                   uint64_t *out_i, unsigned k, cudaStream_t st)
{
    s_tile_src src;
    src.dots = t->dots;
    src.ld = t->ld;
    src.rnorm = t->rnorm;
    src.rid = t->rid;
    src.qnorm = t->qnorm;
    src.metric = t->metric;
    const unsigned cap = knn_sel_cap(k);
    const size_t smem = (size_t)cap * (sizeof(float) + sizeof(uint64_t));
    k_select<s_tile_src><<<dim3(nq, splits), SEL_THREADS, smem, st>>>(src, in_d, in_i, out_d,
                                                                       out_i, k, cap);
    return cudaGetLastError();
}

cudaError_t knn_launch_select_lists(const knn_lists_t *l, unsigned nq, float *out_d,
                                    uint64_t *out_i, unsigned k, cudaStream_t st)
{
    s_pair_src src;
    src.d = l->d;
    src.i = l->i;
    src.qstride = l->qstride;
    src.len = l->len;
    src.lstride = l->lstride;
    src.nlists = l->nlists;
    const unsigned cap = knn_sel_cap(k);
    const size_t smem = (size_t)cap * (sizeof(float) + sizeof(uint64_t));
    k_select<s_pair_src><<<dim3(nq, 1), SEL_THREADS, smem, st>>>(src, NULL, NULL, out_d, out_i,
                                                                  k, cap);
    return cudaGetLastError();
}

cudaError_t knn_launch_scatter(int fp16, void *vecs, float *norms, uint64_t *ids,
                               const size_t *rows, const void *src, const float *snorm,
                               const uint64_t *sid, size_t m, size_t dim, cudaStream_t st)
{
    if (fp16)
        k_scatter<__half><<<s_grid(m * dim, 256), 256, 0, st>>>(
            (__half *)vecs, norms, ids, rows, (const __half *)src, snorm, sid, m, dim);
    else
        k_scatter<float><<<s_grid(m * dim, 256), 256, 0, st>>>(
            (float *)vecs, norms, ids, rows, (const float *)src, snorm, sid, m, dim);
    return cudaGetLastError();
}
