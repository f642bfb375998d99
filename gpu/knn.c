/*
 * knn.c - the exact k-NN engine's front (knn.h): device choice, the host's
 * authoritative flat store, the device mirror kept equal to it, and the
 * choice of path per search.
 *
 * Devices. The front drives the device side through a table of functions
 * (knn_dev.h): the CUDA engine (knn_cuda.cu) in a CUDA build, a host
 * emulation (knn_emu.c) in the suites, so everything here runs in the
 * CPU-only build's tests too.
 *
 * Mirroring. flat_store_add appends new ids as rows after the last one and
 * overwrites present ids in place; flat_store_remove moves the last row into
 * the freed one. So after an add the mirror appends the store's new rows and
 * re-copies the rows of ids that were present before; after removals the only
 * rows below the new count whose contents changed are the destinations of the
 * reported moves, which are re-copied from the store, and the mirror is cut to
 * the new count. Data always comes from the store's view, never from the
 * caller's arrays, so the mirror cannot drift from it.
 *
 * Exact answers. The device returns more candidates than k, ranked by the
 * GEMM form of the distance; knn_exact.c proves they hold the top k, re-scores
 * them with the CPU's pair kernels and sorts by (distance, id), and sends a
 * query whose proof fails to the CPU engine. So a GPU engine gives the CPU
 * engine's answers bit for bit (ids, order, distances). fp16 rows give no
 * proof: the best k of 4k re-scored candidates (recall, not exactness).
 *
 * Failures. Room on the devices is reserved before the store changes, so an
 * add that does not fit fails cleanly. A device error after the store changed
 * (the mirror is then stale), or a device failure during a search (a sticky
 * CUDA error poisons the context for good), marks the engine lost: one
 * warning, the device side is freed, and every search from then on runs on
 * the CPU, starting with the one that failed (knn_engine_info says why). Out
 * of device memory during a search sends that search to the CPU only.
 */
#include "gpu/knn.h"

#include "common/flat.h"
#include "common/log.h"
#include "common/topk.h"
#include "gpu/gpu.h"
#include "gpu/knn_dev.h"
#include "gpu/knn_exact.h"
#ifdef SHOAL_HAVE_CUDA
#include "gpu/knn_cuda.h"
#endif

#include <ctype.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <strings.h>

#ifdef SHOAL_HAVE_CUDA
_Static_assert(KNN_CUDA_K_MAX == KNN_K_MAX_GPU, "the select kernel's k limit is the front's");
#endif

#define S_ORDINAL_MAX 1023       /* largest device number a string may name */
#define S_FP16_MAX 65504.0f      /* largest finite fp16 value */
#define S_CAND_CHUNK_BYTES (64u << 20) /* host memory for candidates per pass */

struct knn_engine {
    size_t dim;                  /* floats per vector */
    shoal_metric_t metric;       /* metric of the store */
    size_t threads;              /* CPU threads (0 = all cores) */
    size_t mem_budget;           /* bytes for tiles (0 = defaults) */
    int fp16;                    /* rows as fp16 on the devices, re-rank in fp32 */
    flat_store_t *store;         /* authoritative rows */
    float xmax;                  /* >= every |x|^2 held (grows on add, kept on remove) */
    const knn_dev_ops_t *ops;    /* the device side's functions; NULL on the CPU */
    void *dev;                   /* the device mirror; NULL on the CPU or once lost */
    pthread_mutex_t gpu_lock;    /* one device call at a time; guards dev and the fields below */
    int on_gpu;                  /* searches go to the devices */
    int ndevices;                /* devices in use */
    int devices[KNN_DEVICES_MAX]; /* their ordinals */
    char reason[160];            /* why this placement */
    atomic_size_t fallbacks;     /* queries the proof sent to the CPU */
};

/* ------------------------------------------------------------------------ */
/* Device strings                                                           */
/* ------------------------------------------------------------------------ */

int knn_parse_devices(const char *text, int *on_gpu, int *devices, int *ndevices,
                      shoal_err_t *err)
{
    *ndevices = 0;
    if (!text || strcasecmp(text, "auto") == 0) {
        *on_gpu = -1;
        return SHOAL_OK;
    }
    if (strcasecmp(text, "cpu") == 0) {
        *on_gpu = 0;
        return SHOAL_OK;
    }
    if (strncasecmp(text, "gpu:", 4) != 0)
        return shoal_err_set(err, SHOAL_EINVAL,
                             "device \"%s\": expected \"auto\", \"cpu\" or \"gpu:N[,N...]\"",
                             text);
    const char *p = text + 4;
    int n = 0;
    for (;;) {
        while (*p == ' ')
            p++;
        if (!isdigit((unsigned char)*p))
            return shoal_err_set(err, SHOAL_EINVAL,
                                 "device \"%s\": expected a device number at offset %d", text,
                                 (int)(p - text));
        long v = 0;
        while (isdigit((unsigned char)*p)) {
            v = v * 10 + (*p - '0');
            if (v > S_ORDINAL_MAX)
                return shoal_err_set(err, SHOAL_EINVAL,
                                     "device \"%s\": device number above %d", text,
                                     S_ORDINAL_MAX);
            p++;
        }
        while (*p == ' ')
            p++;
        if (n == KNN_DEVICES_MAX)
            return shoal_err_set(err, SHOAL_EINVAL, "device \"%s\": more than %d devices", text,
                                 KNN_DEVICES_MAX);
        for (int i = 0; i < n; i++)
            if (devices[i] == (int)v)
                return shoal_err_set(err, SHOAL_EINVAL, "device \"%s\": GPU %ld listed twice",
                                     text, v);
        devices[n++] = (int)v;
        if (*p == '\0')
            break;
        if (*p != ',')
            return shoal_err_set(err, SHOAL_EINVAL,
                                 "device \"%s\": unexpected '%c' at offset %d", text, *p,
                                 (int)(p - text));
        p++;
    }
    *on_gpu = 1;
    *ndevices = n;
    return SHOAL_OK;
}

/* ------------------------------------------------------------------------ */
/* The CUDA engine behind the table of functions                           */
/* ------------------------------------------------------------------------ */

#ifdef SHOAL_HAVE_CUDA
static void *s_cu_create(const int *devices, int ndevices, size_t dim, shoal_metric_t metric,
                         int fp16, size_t mem_budget, shoal_err_t *err)
{
    return knn_cuda_new(devices, ndevices, dim, metric, fp16, mem_budget, err);
}

static void s_cu_destroy(void **dev_p)
{
    knn_cuda_t *cu = *dev_p;
    knn_cuda_destroy(&cu);
    *dev_p = NULL;
}

static int s_cu_reserve(void *dev, size_t n, shoal_err_t *err)
{
    return knn_cuda_reserve(dev, n, err);
}

static int s_cu_append(void *dev, const float *vecs, const float *norms_sq, const uint64_t *ids,
                       size_t m, shoal_err_t *err)
{
    return knn_cuda_append(dev, vecs, norms_sq, ids, m, err);
}

static int s_cu_set_rows(void *dev, const size_t *rows, const float *vecs, const float *norms_sq,
                         const uint64_t *ids, size_t m, shoal_err_t *err)
{
    return knn_cuda_set_rows(dev, rows, vecs, norms_sq, ids, m, err);
}

static int s_cu_truncate(void *dev, size_t n, shoal_err_t *err)
{
    return knn_cuda_truncate(dev, n, err);
}

static int s_cu_search(void *dev, const float *queries, size_t nq, size_t k, uint64_t *ids,
                       float *dists, shoal_err_t *err)
{
    return knn_cuda_search(dev, queries, nq, k, ids, dists, err);
}

static size_t s_cu_device_bytes(const void *dev)
{
    return knn_cuda_device_bytes(dev);
}

static const knn_dev_ops_t s_cuda_ops = {
    .name = "cuda",
    .k_max = KNN_CUDA_K_MAX,
    .create = s_cu_create,
    .destroy = s_cu_destroy,
    .reserve = s_cu_reserve,
    .append = s_cu_append,
    .set_rows = s_cu_set_rows,
    .truncate = s_cu_truncate,
    .search = s_cu_search,
    .device_bytes = s_cu_device_bytes,
};

knn_cuda_t *knn_engine_cuda(knn_engine_t *engine)
{
    return engine && engine->ops == &s_cuda_ops ? engine->dev : NULL;
}
#endif

/* ------------------------------------------------------------------------ */
/* Lifecycle                                                                */
/* ------------------------------------------------------------------------ */

/* The device side failed: free it, search on the CPU from now on. Holds gpu_lock. */
static void s_gpu_lost_locked(knn_engine_t *engine, const shoal_err_t *why)
{
    log_warn("knn: GPU engine lost (%s); searching on the CPU from now on", why->msg);
    engine->ops->destroy(&engine->dev);
    engine->on_gpu = 0;
    engine->ndevices = 0;
    snprintf(engine->reason, sizeof engine->reason, "GPU engine lost: %.130s", why->msg);
}

static void s_gpu_lost(knn_engine_t *engine, const shoal_err_t *why)
{
    pthread_mutex_lock(&engine->gpu_lock);
    s_gpu_lost_locked(engine, why);
    pthread_mutex_unlock(&engine->gpu_lock);
}

/* Creates the device side on engine->devices; fills engine->reason. */
static int s_gpu_start(knn_engine_t *engine, const knn_dev_ops_t *ops, shoal_err_t *err)
{
    engine->dev = ops->create(engine->devices, engine->ndevices, engine->dim, engine->metric,
                              engine->fp16, engine->mem_budget, err);
    if (!engine->dev)
        return err && err->code ? err->code : SHOAL_EGPU;
    engine->ops = ops;
    gpu_device_info_t info;
    shoal_err_t e2;
    shoal_err_clear(&e2);
    if (gpu_device_info(engine->devices[0], &info, &e2) < 0)
        snprintf(info.name, sizeof info.name, "%s device", ops->name);
    snprintf(engine->reason, sizeof engine->reason, "%d GPU(s), first %d: %.60s%s",
             engine->ndevices, engine->devices[0], info.name, engine->fp16 ? ", fp16 rows" : "");
    engine->on_gpu = 1;
    return SHOAL_OK;
}

#ifdef SHOAL_HAVE_CUDA
/*
 * auto: the usable devices (gpu_device_usable), not all or nothing: one old
 * or broken card does not send a host's good ones to the CPU. Returns how
 * many went into engine->devices; why gets the reason when none did.
 */
static int s_auto_devices(knn_engine_t *engine, char *why, size_t why_len)
{
    shoal_err_t e;
    shoal_err_clear(&e);
    int count = gpu_device_count(&e), n = 0;
    if (count < 0) {
        snprintf(why, why_len, "%.150s", e.msg);
        return 0;
    }
    snprintf(why, why_len, "no usable GPU");
    for (int d = 0; d < count && n < KNN_DEVICES_MAX; d++) {
        gpu_device_info_t info;
        char reason[160];
        if (gpu_device_info(d, &info, &e) < 0) {
            log_info("knn: auto: skipping GPU %d: %s", d, e.msg);
            snprintf(why, why_len, "%.150s", e.msg);
            continue;
        }
        if (!gpu_device_usable(&info, reason, sizeof reason)) {
            log_info("knn: auto: skipping GPU %d: %s", d, reason);
            snprintf(why, why_len, "%.150s", reason);
            continue;
        }
        engine->devices[n++] = d;
    }
    return n;
}
#endif

/* Checks the parameters; fills *want (-1 auto, 0 cpu, 1 gpu) and the listed devices. */
static int s_check_params(const knn_params_t *params, int *want, int *devices, int *ndev,
                          shoal_err_t *err)
{
    if (!params)
        return shoal_err_set(err, SHOAL_EINVAL, "knn_engine_new: no parameters");
    if (params->dim == 0)
        return shoal_err_set(err, SHOAL_EINVAL, "knn_engine_new: dim must be >= 1, got 0");
    if (params->metric != SHOAL_METRIC_L2 && params->metric != SHOAL_METRIC_IP &&
        params->metric != SHOAL_METRIC_COSINE)
        return shoal_err_set(err, SHOAL_EINVAL,
                             "knn_engine_new: metric %d, expected l2 (0), ip (1) or cosine (2)",
                             (int)params->metric);
    return knn_parse_devices(params->device, want, devices, ndev, err);
}

/* A CPU engine with its store; the device side is started by the caller. */
static knn_engine_t *s_engine_alloc(const knn_params_t *params, shoal_err_t *err)
{
    knn_engine_t *engine = calloc(1, sizeof *engine);
    if (!engine) {
        shoal_err_set(err, SHOAL_ENOMEM, "knn_engine_new: out of memory");
        return NULL;
    }
    engine->dim = params->dim;
    engine->metric = params->metric;
    engine->threads = params->threads;
    engine->mem_budget = params->mem_budget;
    engine->fp16 = params->fp16 != 0;
    atomic_init(&engine->fallbacks, 0);
    pthread_mutex_init(&engine->gpu_lock, NULL);
    engine->store = flat_store_new(params->dim, params->metric, err);
    if (!engine->store)
        knn_engine_destroy(&engine);
    return engine;
}

knn_engine_t *knn_engine_new_with(const knn_params_t *params, const knn_dev_ops_t *ops,
                                  shoal_err_t *err)
{
    int want = 0, devices[KNN_DEVICES_MAX], ndev = 0;
    if (s_check_params(params, &want, devices, &ndev, err) < 0)
        return NULL;
    if (want != 1 || !ops) {
        shoal_err_set(err, SHOAL_EINVAL, "knn_engine_new_with: expected \"gpu:N...\" and a backend");
        return NULL;
    }
    knn_engine_t *engine = s_engine_alloc(params, err);
    if (!engine)
        return NULL;
    engine->ndevices = ndev;
    memcpy(engine->devices, devices, (size_t)ndev * sizeof(int));
    if (s_gpu_start(engine, ops, err) < 0)
        knn_engine_destroy(&engine);
    return engine;
}

knn_engine_t *knn_engine_new(const knn_params_t *params, shoal_err_t *err)
{
    int want = 0, devices[KNN_DEVICES_MAX], ndev = 0;
    if (s_check_params(params, &want, devices, &ndev, err) < 0)
        return NULL;
    knn_engine_t *engine = s_engine_alloc(params, err);
    if (!engine)
        return NULL;
    if (want == 0) {
        snprintf(engine->reason, sizeof engine->reason, "CPU requested");
        return engine;
    }
#ifdef SHOAL_HAVE_CUDA
    if (want == 1) {
        int count = gpu_device_count(err);
        for (int i = 0; i < ndev && count > 0; i++)
            if (devices[i] >= count)
                count = shoal_err_set(err, SHOAL_ENODEV, "GPU %d does not exist (devices: 0..%d)",
                                      devices[i], count - 1);
        engine->ndevices = ndev;
        memcpy(engine->devices, devices, (size_t)ndev * sizeof(int));
        if (count < 0 || s_gpu_start(engine, &s_cuda_ops, err) < 0)
            knn_engine_destroy(&engine);
        return engine;
    }
    /* auto: the usable GPUs, else the CPU with the reason. */
    char why[160];
    engine->ndevices = s_auto_devices(engine, why, sizeof why);
    if (engine->ndevices > 0) {
        shoal_err_t e;
        shoal_err_clear(&e);
        if (s_gpu_start(engine, &s_cuda_ops, &e) == SHOAL_OK) {
            log_info("knn: auto: searching on %s", engine->reason);
            return engine;
        }
        snprintf(why, sizeof why, "%.150s", e.msg);
        engine->ndevices = 0;
    }
    snprintf(engine->reason, sizeof engine->reason, "%.159s", why);
#else
    if (want == 1) {
        gpu_device_count(err); /* SHOAL_ENODEV: built without CUDA */
        knn_engine_destroy(&engine);
        return NULL;
    }
    shoal_err_t e;
    shoal_err_clear(&e);
    gpu_device_count(&e);
    snprintf(engine->reason, sizeof engine->reason, "%.159s", e.msg);
#endif
    log_info("knn: auto: searching on the CPU (%s)", engine->reason);
    return engine;
}

void knn_engine_destroy(knn_engine_t **engine_p)
{
    if (!engine_p || !*engine_p)
        return;
    knn_engine_t *engine = *engine_p;
    if (engine->dev)
        engine->ops->destroy(&engine->dev);
    pthread_mutex_destroy(&engine->gpu_lock);
    flat_store_destroy(&engine->store);
    free(engine);
    *engine_p = NULL;
}

void *knn_engine_dev(knn_engine_t *engine)
{
    return engine ? engine->dev : NULL;
}

size_t knn_engine_fallbacks(const knn_engine_t *engine)
{
    return engine ? atomic_load(&((knn_engine_t *)engine)->fallbacks) : 0;
}

/* ------------------------------------------------------------------------ */
/* Add and remove                                                           */
/* ------------------------------------------------------------------------ */

/* Re-copies rows (each < the store's count) from the store to the mirror. */
static int s_mirror_rows(knn_engine_t *engine, const size_t *rows, size_t m, shoal_err_t *err)
{
    if (m == 0)
        return SHOAL_OK;
    flat_view_t v = flat_store_view(engine->store);
    float *vecs = malloc(m * v.dim * sizeof(float));
    float *norms = malloc(m * sizeof(float));
    uint64_t *ids = malloc(m * sizeof(uint64_t));
    int rc = SHOAL_OK;
    if (!vecs || !norms || !ids) {
        rc = shoal_err_set(err, SHOAL_ENOMEM, "knn: out of memory copying %zu rows", m);
    } else {
        for (size_t i = 0; i < m; i++) {
            memcpy(vecs + i * v.dim, v.vecs + rows[i] * v.dim, v.dim * sizeof(float));
            norms[i] = v.norms_sq[rows[i]];
            ids[i] = v.ids[rows[i]];
        }
        rc = engine->ops->set_rows(engine->dev, rows, vecs, norms, ids, m, err);
    }
    free(vecs);
    free(norms);
    free(ids);
    return rc;
}

static int s_cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

/* Sorts rows and drops repeats; returns the new length. */
static size_t s_unique(size_t *rows, size_t m)
{
    if (m == 0)
        return 0;
    qsort(rows, m, sizeof *rows, s_cmp_size);
    size_t w = 1;
    for (size_t i = 1; i < m; i++)
        if (rows[i] != rows[w - 1])
            rows[w++] = rows[i];
    return w;
}

/* xmax grows to cover the rows of ids (after they were stored). */
static void s_track_xmax(knn_engine_t *engine, const uint64_t *ids, size_t n)
{
    flat_view_t v = flat_store_view(engine->store);
    for (size_t i = 0; i < n; i++) {
        size_t r = flat_store_row(engine->store, ids[i]);
        if (r != FLAT_NO_ROW && v.norms_sq[r] > engine->xmax)
            engine->xmax = v.norms_sq[r];
    }
}

static int s_check_fp16(const knn_engine_t *engine, const float *vecs, size_t n,
                        shoal_err_t *err)
{
    /* Cosine rows are normalised (|v_i| <= 1) before they are rounded. */
    if (!engine->fp16 || engine->metric == SHOAL_METRIC_COSINE)
        return SHOAL_OK;
    for (size_t i = 0; i < n * engine->dim; i++)
        if (fabsf(vecs[i]) > S_FP16_MAX)
            return shoal_err_set(err, SHOAL_EINVAL,
                                 "knn_engine_add: vector %zu column %zu is %g, beyond fp16's "
                                 "range (%g) of this fp16 engine",
                                 i / engine->dim, i % engine->dim, (double)vecs[i],
                                 (double)S_FP16_MAX);
    return SHOAL_OK;
}

/* The add on an engine with a device side: reserve, store, then mirror. */
static int s_add_mirrored(knn_engine_t *engine, const uint64_t *ids, const float *vecs, size_t n,
                          shoal_err_t *err)
{
    int rc = s_check_fp16(engine, vecs, n, err);
    if (rc < 0)
        return rc;
    size_t before = flat_store_count(engine->store);
    size_t *rows = malloc(n * sizeof(size_t));
    if (!rows)
        return shoal_err_set(err, SHOAL_ENOMEM, "knn_engine_add: out of memory");
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        size_t r = flat_store_row(engine->store, ids[i]);
        if (r != FLAT_NO_ROW)
            rows[m++] = r;
    }
    /* Room first: a full device fails the add before the store changes. */
    rc = engine->ops->reserve(engine->dev, before + (n - m), err);
    if (rc == SHOAL_OK)
        rc = flat_store_add(engine->store, ids, vecs, n, err);
    if (rc < 0) {
        free(rows);
        return rc;
    }
    flat_view_t v = flat_store_view(engine->store);
    shoal_err_t e;
    shoal_err_clear(&e);
    int mrc = engine->ops->append(engine->dev, v.vecs + before * v.dim, v.norms_sq + before,
                                  v.ids + before, v.n - before, &e);
    if (mrc == SHOAL_OK)
        mrc = s_mirror_rows(engine, rows, s_unique(rows, m), &e);
    free(rows);
    if (mrc < 0)
        s_gpu_lost(engine, &e);
    return SHOAL_OK;
}

int knn_engine_add(knn_engine_t *engine, const uint64_t *ids, const float *vecs, size_t n,
                   shoal_err_t *err)
{
    if (!engine)
        return shoal_err_set(err, SHOAL_EINVAL, "knn_engine_add: no engine");
    if (n == 0)
        return SHOAL_OK;
    if (!ids || !vecs)
        return shoal_err_set(err, SHOAL_EINVAL, "knn_engine_add: NULL ids or vectors");
    int rc = engine->dev ? s_add_mirrored(engine, ids, vecs, n, err)
                         : flat_store_add(engine->store, ids, vecs, n, err);
    if (rc == SHOAL_OK)
        s_track_xmax(engine, ids, n);
    return rc;
}

/* After removals: cut the mirror to the store's count, re-copy moved rows. */
static void s_remove_mirrored(knn_engine_t *engine, size_t *moved, size_t nmoved)
{
    /* Rows below the new count changed only where a move landed. */
    size_t now = flat_store_count(engine->store), w = 0;
    for (size_t i = 0; i < nmoved; i++)
        if (moved[i] < now)
            moved[w++] = moved[i];
    shoal_err_t e;
    shoal_err_clear(&e);
    int mrc = engine->ops->truncate(engine->dev, now, &e);
    if (mrc == SHOAL_OK)
        mrc = s_mirror_rows(engine, moved, s_unique(moved, w), &e);
    if (mrc < 0)
        s_gpu_lost(engine, &e);
}

int knn_engine_remove(knn_engine_t *engine, const uint64_t *ids, size_t n, size_t *removed,
                      shoal_err_t *err)
{
    if (removed)
        *removed = 0;
    if (!engine)
        return shoal_err_set(err, SHOAL_EINVAL, "knn_engine_remove: no engine");
    if (n == 0)
        return SHOAL_OK;
    if (!ids)
        return shoal_err_set(err, SHOAL_EINVAL, "knn_engine_remove: NULL ids");
    size_t *moved = NULL, nmoved = 0, count = 0;
    int rc = SHOAL_OK;
    if (engine->dev) {
        moved = malloc(n * sizeof(size_t));
        if (!moved)
            return shoal_err_set(err, SHOAL_ENOMEM, "knn_engine_remove: out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        size_t from = FLAT_NO_ROW, to = FLAT_NO_ROW;
        shoal_err_t e;
        shoal_err_clear(&e);
        int r = flat_store_remove(engine->store, ids[i], &from, &to, &e);
        if (r == SHOAL_ENOTFOUND)
            continue;
        if (r < 0) {
            rc = shoal_err_set(err, r, "%s", e.msg);
            break;
        }
        count++;
        if (moved && to != FLAT_NO_ROW)
            moved[nmoved++] = to;
    }
    if (removed)
        *removed = count;
    /* xmax stays: a bound that is too large only makes the proof stricter. */
    if (engine->dev && count)
        s_remove_mirrored(engine, moved, nmoved);
    free(moved);
    return rc;
}

size_t knn_engine_count(const knn_engine_t *engine)
{
    return engine ? flat_store_count(engine->store) : 0;
}

/* ------------------------------------------------------------------------ */
/* Search                                                                   */
/* ------------------------------------------------------------------------ */

/* The checks flat_search makes, for the paths that do not go through it. */
static int s_check_queries(const knn_engine_t *engine, const float *queries, size_t nq,
                           shoal_err_t *err)
{
    const size_t dim = engine->dim;
    for (size_t q = 0; q < nq; q++) {
        const float *v = queries + q * dim;
        double sum = 0.0;
        for (size_t c = 0; c < dim; c++) {
            if (!isfinite(v[c]))
                return shoal_err_set(err, SHOAL_EINVAL,
                                     "knn_engine_search: query %zu column %zu is not finite (%g)",
                                     q, c, (double)v[c]);
            sum += (double)v[c] * v[c];
        }
        if (engine->metric != SHOAL_METRIC_COSINE && sum > FLT_MAX)
            return shoal_err_set(err, SHOAL_EINVAL,
                                 "knn_engine_search: query %zu has squared norm %.3g, more "
                                 "than a float holds",
                                 q, sum);
        if (engine->fp16 && engine->metric != SHOAL_METRIC_COSINE)
            for (size_t c = 0; c < dim; c++)
                if (fabsf(v[c]) > S_FP16_MAX)
                    return shoal_err_set(err, SHOAL_EINVAL,
                                         "knn_engine_search: query %zu column %zu is %g, beyond "
                                         "fp16's range",
                                         q, c, (double)v[c]);
    }
    return SHOAL_OK;
}

/*
 * One device call under the lock: kc candidates for qn queries. A device
 * failure marks the engine lost (EGPU) or not (ENOMEM); either way the
 * caller answers on the CPU. Returns 0, 1 (use the CPU) or SHOAL_EINVAL.
 */
static int s_device_candidates(knn_engine_t *engine, const float *queries, size_t qn, size_t kc,
                               uint64_t *cand, float *cdist, shoal_err_t *err)
{
    shoal_err_t e;
    shoal_err_clear(&e);
    pthread_mutex_lock(&engine->gpu_lock);
    int rc = engine->dev ? engine->ops->search(engine->dev, queries, qn, kc, cand, cdist, &e) : 1;
    if (rc < 0 && rc != SHOAL_EINVAL) {
        if (rc == SHOAL_ENOMEM)
            log_info("knn: search on the CPU this time: %s", e.msg);
        else
            s_gpu_lost_locked(engine, &e);
        rc = 1;
    }
    pthread_mutex_unlock(&engine->gpu_lock);
    if (rc == SHOAL_EINVAL)
        shoal_err_set(err, rc, "%s", e.msg);
    return rc;
}

/*
 * The device path: candidates in chunks, each proven and re-scored here
 * (knn_exact.h). Returns 0, 1 when the device failed (the caller searches on
 * the CPU), or an error.
 */
static int s_search_device(knn_engine_t *engine, const float *queries, size_t nq, size_t k,
                           uint64_t *ids, float *dists, shoal_err_t *err)
{
    const size_t n = flat_store_count(engine->store);
    size_t kc = engine->fp16 ? knn_exact_candidates(4 * k, engine->ops->k_max, n)
                             : knn_exact_candidates(k, engine->ops->k_max, n);
    kc = kc < k ? k : kc;
    size_t chunk = S_CAND_CHUNK_BYTES / (kc * (sizeof(uint64_t) + sizeof(float)));
    chunk = chunk < 1 ? 1 : chunk > nq ? nq : chunk;
    uint64_t *cand = malloc(chunk * kc * sizeof(uint64_t));
    float *cdist = malloc(chunk * kc * sizeof(float));
    int rc = SHOAL_OK;
    if (!cand || !cdist)
        rc = shoal_err_set(err, SHOAL_ENOMEM, "knn_engine_search: out of memory");
    for (size_t q0 = 0; q0 < nq && rc == SHOAL_OK; q0 += chunk) {
        const size_t qn = nq - q0 < chunk ? nq - q0 : chunk;
        const float *qs = queries + q0 * engine->dim;
        rc = s_device_candidates(engine, qs, qn, kc, cand, cdist, err);
        if (rc != SHOAL_OK)
            break;
        size_t fell = 0;
        rc = knn_exact_rescore(engine->store, qs, qn, cand, engine->fp16 ? NULL : cdist, kc, k,
                               engine->xmax, engine->threads, engine->mem_budget, ids + q0 * k,
                               dists ? dists + q0 * k : NULL, &fell, err);
        atomic_fetch_add(&engine->fallbacks, fell);
    }
    free(cand);
    free(cdist);
    return rc;
}

int knn_engine_search(knn_engine_t *engine, const float *queries, size_t nq, size_t k,
                      uint64_t *ids, float *dists, shoal_err_t *err)
{
    if (!engine)
        return shoal_err_set(err, SHOAL_EINVAL, "knn_engine_search: no engine");
    if (k < 1 || k > FLAT_K_MAX)
        return shoal_err_set(err, SHOAL_EINVAL, "knn_engine_search: k %zu, expected 1..%d", k,
                             FLAT_K_MAX);
    if (nq == 0)
        return SHOAL_OK;
    if (!queries || !ids)
        return shoal_err_set(err, SHOAL_EINVAL, "knn_engine_search: NULL queries or ids");

    flat_view_t view = flat_store_view(engine->store);
    /* ops is set once at creation; dev may go (a lost engine), so it is read
     * under the lock, here and again for each device call. */
    int live = 0;
    if (engine->ops) {
        pthread_mutex_lock(&engine->gpu_lock);
        live = engine->dev != NULL;
        pthread_mutex_unlock(&engine->gpu_lock);
    }
    if (live && k <= engine->ops->k_max && view.n > 0) {
        int rc = s_check_queries(engine, queries, nq, err);
        if (rc < 0)
            return rc;
        rc = s_search_device(engine, queries, nq, k, ids, dists, err);
        if (rc <= 0)
            return rc;
    }
    /* The CPU path, k beyond the device's limit, and a device that failed. */
    flat_search_opts_t opts = {.threads = engine->threads, .mem_budget = engine->mem_budget};
    return flat_search(&view, queries, nq, k, &opts, ids, dists, err);
}

int knn_engine_graph(knn_engine_t *engine, size_t first, size_t count, size_t k, uint64_t *ids,
                     float *dists, shoal_err_t *err)
{
    if (!engine)
        return shoal_err_set(err, SHOAL_EINVAL, "knn_engine_graph: no engine");
    flat_view_t v = flat_store_view(engine->store);
    if (first > v.n || count > v.n - first)
        return shoal_err_set(err, SHOAL_EINVAL, "knn_engine_graph: rows %zu..%zu of %zu", first,
                             first + count, v.n);
    if (count == 0)
        return SHOAL_OK;
    /* The rows are the queries: the store's own copy, read in place (cosine rows
     * are already normalised, which the search's normalisation keeps). */
    return knn_engine_search(engine, v.vecs + first * v.dim, count, k, ids, dists, err);
}

void knn_engine_info(const knn_engine_t *engine, knn_info_t *info)
{
    memset(info, 0, sizeof *info);
    if (!engine)
        return;
    knn_engine_t *e = (knn_engine_t *)engine; /* the lock, not the data, changes */
    pthread_mutex_lock(&e->gpu_lock);
    info->on_gpu = engine->on_gpu;
    info->ndevices = engine->ndevices;
    memcpy(info->devices, engine->devices, sizeof info->devices);
    info->device_bytes = engine->dev ? engine->ops->device_bytes(engine->dev) : 0;
    memcpy(info->reason, engine->reason, sizeof info->reason);
    pthread_mutex_unlock(&e->gpu_lock);
    info->count = flat_store_count(engine->store);
    info->host_bytes = sizeof *engine + flat_store_bytes(engine->store);
}
