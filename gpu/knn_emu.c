/*
 * knn_emu.c - the emulated device (knn_emu.h): rows in host memory, the
 * GEMM form of the distance in float, best k by (distance, id), a NaN scan
 * distance ranked first as -INFINITY (as the device's select).
 */
#include "gpu/knn_emu.h"

#include "common/topk.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    size_t dim;            /* floats per row */
    shoal_metric_t metric; /* metric of the rows */
    int fp16;              /* rows and queries rounded to fp16 */
    size_t n, cap;         /* rows held, rows allocated */
    float *vecs;           /* cap x dim */
    float *norms;          /* cap |x|^2 as the host gave them */
    uint64_t *ids;         /* cap ids */
} s_emu_t;

static int s_fail_after = -1;  /* searches left before failing; -1 = never */
static int s_fail_code;        /* the error of a failing search */
static unsigned long s_searches;

void knn_emu_fail_searches(int after, int code)
{
    s_fail_after = code ? after : -1;
    s_fail_code = code;
}

unsigned long knn_emu_searches(void)
{
    return s_searches;
}

/* Round to the nearest fp16 value (11 significant bits), as a device's fp16 rows. */
static float s_half(float v)
{
    if (v == 0.0f || !isfinite(v))
        return v;
    int e;
    float m = frexpf(v, &e);
    if (e < -13) /* fp16 subnormals: absolute step 2^-24 */
        return ldexpf(nearbyintf(ldexpf(v, 24)), -24);
    return ldexpf(nearbyintf(ldexpf(m, 11)), e - 11);
}

static void *s_create(const int *devices, int ndevices, size_t dim, shoal_metric_t metric,
                      int fp16, size_t mem_budget, shoal_err_t *err)
{
    (void)devices;
    (void)ndevices;
    (void)mem_budget;
    s_emu_t *emu = calloc(1, sizeof *emu);
    if (!emu) {
        shoal_err_set(err, SHOAL_ENOMEM, "emulated device: out of memory");
        return NULL;
    }
    emu->dim = dim;
    emu->metric = metric;
    emu->fp16 = fp16 != 0;
    return emu;
}

static void s_destroy(void **dev_p)
{
    if (!dev_p || !*dev_p)
        return;
    s_emu_t *emu = *dev_p;
    free(emu->vecs);
    free(emu->norms);
    free(emu->ids);
    free(emu);
    *dev_p = NULL;
}

static int s_reserve(void *dev, size_t n, shoal_err_t *err)
{
    s_emu_t *emu = dev;
    if (n <= emu->cap)
        return SHOAL_OK;
    float *v = realloc(emu->vecs, n * emu->dim * sizeof(float));
    if (v)
        emu->vecs = v;
    float *no = realloc(emu->norms, n * sizeof(float));
    if (no)
        emu->norms = no;
    uint64_t *i = realloc(emu->ids, n * sizeof(uint64_t));
    if (i)
        emu->ids = i;
    if (!v || !no || !i)
        return shoal_err_set(err, SHOAL_ENOMEM, "emulated device: out of memory for %zu rows", n);
    emu->cap = n;
    return SHOAL_OK;
}

static void s_put(s_emu_t *emu, size_t row, const float *vec, float norm, uint64_t id)
{
    for (size_t j = 0; j < emu->dim; j++)
        emu->vecs[row * emu->dim + j] = emu->fp16 ? s_half(vec[j]) : vec[j];
    emu->norms[row] = norm;
    emu->ids[row] = id;
}

static int s_append(void *dev, const float *vecs, const float *norms_sq, const uint64_t *ids,
                    size_t m, shoal_err_t *err)
{
    s_emu_t *emu = dev;
    int rc = s_reserve(emu, emu->n + m, err);
    if (rc < 0)
        return rc;
    for (size_t i = 0; i < m; i++)
        s_put(emu, emu->n + i, vecs + i * emu->dim, norms_sq[i], ids[i]);
    emu->n += m;
    return SHOAL_OK;
}

static int s_set_rows(void *dev, const size_t *rows, const float *vecs, const float *norms_sq,
                      const uint64_t *ids, size_t m, shoal_err_t *err)
{
    s_emu_t *emu = dev;
    for (size_t i = 0; i < m; i++)
        if (rows[i] >= emu->n)
            return shoal_err_set(err, SHOAL_EINVAL, "emulated device: row %zu of %zu", rows[i],
                                 emu->n);
    for (size_t i = 0; i < m; i++)
        s_put(emu, rows[i], vecs + i * emu->dim, norms_sq[i], ids[i]);
    return SHOAL_OK;
}

static int s_truncate(void *dev, size_t n, shoal_err_t *err)
{
    s_emu_t *emu = dev;
    if (n > emu->n)
        return shoal_err_set(err, SHOAL_EINVAL, "emulated device: truncate to %zu of %zu", n,
                             emu->n);
    emu->n = n;
    return SHOAL_OK;
}

/* The scan distance of query qv (prepared: normalised for cosine) to row r. */
static float s_scan(const s_emu_t *emu, const float *qv, float qn, size_t r)
{
    const float *x = emu->vecs + r * emu->dim;
    float dot = 0.0f;
    for (size_t j = 0; j < emu->dim; j++)
        dot += qv[j] * x[j];
    if (emu->metric == SHOAL_METRIC_L2)
        return qn + emu->norms[r] - 2.0f * dot; /* no clamp: NaN stays NaN */
    if (emu->metric == SHOAL_METRIC_IP)
        return -dot;
    return 1.0f - dot;
}

static int s_search(void *dev, const float *queries, size_t nq, size_t k, uint64_t *ids,
                    float *dists, shoal_err_t *err)
{
    s_emu_t *emu = dev;
    s_searches++;
    if (s_fail_after == 0)
        return shoal_err_set(err, s_fail_code, "emulated device: search failed as told");
    if (s_fail_after > 0)
        s_fail_after--;
    topk_item_t *items = malloc(k * sizeof *items);
    float *qv = malloc(emu->dim * sizeof(float));
    if (!items || !qv) {
        free(items);
        free(qv);
        return shoal_err_set(err, SHOAL_ENOMEM, "emulated device: out of memory");
    }
    for (size_t q = 0; q < nq; q++) {
        float s = 0.0f;
        for (size_t j = 0; j < emu->dim; j++) {
            float v = queries[q * emu->dim + j];
            qv[j] = v;
            s += v * v;
        }
        /* As the device's prep kernel: scale by 1/sqrt, then round for fp16. */
        float scale = emu->metric == SHOAL_METRIC_COSINE && s > 0.0f ? 1.0f / sqrtf(s) : 1.0f;
        for (size_t j = 0; j < emu->dim; j++)
            qv[j] = emu->fp16 ? s_half(qv[j] * scale) : qv[j] * scale;
        float qn = emu->metric == SHOAL_METRIC_COSINE ? 1.0f : s;
        topk_heap_t heap;
        topk_heap_init(&heap, items, k);
        for (size_t r = 0; r < emu->n; r++) {
            float d = s_scan(emu, qv, qn, r);
            topk_heap_push(&heap, isnan(d) ? -INFINITY : d, emu->ids[r]);
        }
        topk_heap_extract(&heap, dists ? dists + q * k : NULL, ids + q * k);
    }
    free(items);
    free(qv);
    return SHOAL_OK;
}

static size_t s_device_bytes(const void *dev)
{
    const s_emu_t *emu = dev;
    return emu ? emu->cap * (emu->dim * sizeof(float) + sizeof(float) + sizeof(uint64_t)) : 0;
}

const knn_dev_ops_t knn_emu_ops = {
    .name = "emu",
    .k_max = 1024,
    .create = s_create,
    .destroy = s_destroy,
    .reserve = s_reserve,
    .append = s_append,
    .set_rows = s_set_rows,
    .truncate = s_truncate,
    .search = s_search,
    .device_bytes = s_device_bytes,
};
