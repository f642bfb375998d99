/*
 * knn.c - the exact k-NN engine's front (knn.h): device choice, the host's
 * authoritative flat store, the GPU mirror kept equal to it, and the choice of
 * path per search.
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
 * Failures. Room on the devices is reserved before the store changes, so an
 * add that does not fit fails cleanly. A device error after the store changed
 * (the mirror is then stale) turns the GPU off for this engine: one warning,
 * and searches run on the CPU from then on (knn_engine_info says so). A failed
 * search returns its error; the data is intact and the caller may retry.
 *
 * fp16: the devices pick min(max(4k, k), KNN_K_MAX_GPU) candidates by fp16
 * distances; they are re-scored exactly in fp32 from the store here and the
 * best k kept (ties by id), so distances equal the CPU's and only a true
 * neighbour that fp16 rounding pushed beyond the candidates can be missed.
 */
#include "gpu/knn.h"

#include "common/flat.h"
#include "common/log.h"
#include "common/topk.h"
#include "gpu/gpu.h"
#ifdef SHOAL_HAVE_CUDA
#include "gpu/knn_cuda.h"
#endif

#include <ctype.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <strings.h>
#include <unistd.h>

#ifdef SHOAL_HAVE_CUDA
_Static_assert(KNN_CUDA_K_MAX == KNN_K_MAX_GPU, "the select kernel's k limit is the front's");
#endif

#define S_ORDINAL_MAX 1023       /* largest device number a string may name */
#define S_FP16_MAX 65504.0f      /* largest finite fp16 value */
#define S_RERANK_CHUNK_BYTES (64u << 20) /* host memory for fp16 candidates per pass */

struct knn_engine {
    size_t dim;                  /* floats per vector */
    shoal_metric_t metric;       /* metric of the store */
    size_t threads;              /* CPU threads (0 = all cores) */
    size_t mem_budget;           /* bytes for tiles (0 = defaults) */
    int fp16;                    /* rows as fp16 on the devices, re-rank in fp32 */
    flat_store_t *store;         /* authoritative rows */
    int on_gpu;                  /* searches go to the devices */
    int ndevices;                /* devices in use */
    int devices[KNN_DEVICES_MAX]; /* their ordinals */
    char reason[160];            /* why this placement */
#ifdef SHOAL_HAVE_CUDA
    struct knn_cuda *cu;         /* the device mirror; NULL on the CPU */
    pthread_mutex_t gpu_lock;    /* one search at a time on the devices */
#endif
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
/* Lifecycle                                                                */
/* ------------------------------------------------------------------------ */

#ifdef SHOAL_HAVE_CUDA
/* The mirror is stale or broken: search on the CPU from now on. */
static void s_gpu_lost(knn_engine_t *engine, const shoal_err_t *why)
{
    log_warn("knn: GPU mirror failed (%s); searching on the CPU from now on", why->msg);
    knn_cuda_destroy(&engine->cu);
    engine->on_gpu = 0;
    engine->ndevices = 0;
    snprintf(engine->reason, sizeof engine->reason, "GPU mirror failed: %.120s", why->msg);
}

/* Creates the device engine on engine->devices; fills engine->reason. */
static int s_gpu_start(knn_engine_t *engine, shoal_err_t *err)
{
    int count = gpu_device_count(err);
    if (count < 0)
        return count;
    for (int i = 0; i < engine->ndevices; i++)
        if (engine->devices[i] >= count)
            return shoal_err_set(err, SHOAL_ENODEV, "GPU %d does not exist (devices: 0..%d)",
                                 engine->devices[i], count - 1);
    engine->cu = knn_cuda_new(engine->devices, engine->ndevices, engine->dim, engine->metric,
                              engine->fp16, engine->mem_budget, err);
    if (!engine->cu)
        return err && err->code ? err->code : SHOAL_EGPU;
    gpu_device_info_t info;
    shoal_err_t e2;
    shoal_err_clear(&e2);
    if (gpu_device_info(engine->devices[0], &info, &e2) < 0)
        snprintf(info.name, sizeof info.name, "?");
    snprintf(engine->reason, sizeof engine->reason, "%d GPU(s), first %d: %.60s%s",
             engine->ndevices, engine->devices[0], info.name, engine->fp16 ? ", fp16 rows" : "");
    engine->on_gpu = 1;
    return SHOAL_OK;
}
#endif

knn_engine_t *knn_engine_new(const knn_params_t *params, shoal_err_t *err)
{
    knn_engine_t *engine = NULL;
    int want = 0, devices[KNN_DEVICES_MAX], ndev = 0;
    shoal_err_t e;
    shoal_err_clear(&e);

    if (!params) {
        shoal_err_set(err, SHOAL_EINVAL, "knn_engine_new: no parameters");
        return NULL;
    }
    if (params->dim == 0) {
        shoal_err_set(err, SHOAL_EINVAL, "knn_engine_new: dim must be >= 1, got 0");
        return NULL;
    }
    if (params->metric != SHOAL_METRIC_L2 && params->metric != SHOAL_METRIC_IP &&
        params->metric != SHOAL_METRIC_COSINE) {
        shoal_err_set(err, SHOAL_EINVAL,
                      "knn_engine_new: metric %d, expected l2 (0), ip (1) or cosine (2)",
                      (int)params->metric);
        return NULL;
    }
    if (knn_parse_devices(params->device, &want, devices, &ndev, err) < 0)
        return NULL;

    engine = calloc(1, sizeof *engine);
    if (!engine) {
        shoal_err_set(err, SHOAL_ENOMEM, "knn_engine_new: out of memory");
        return NULL;
    }
    engine->dim = params->dim;
    engine->metric = params->metric;
    engine->threads = params->threads;
    engine->mem_budget = params->mem_budget;
    engine->fp16 = params->fp16 != 0;
#ifdef SHOAL_HAVE_CUDA
    pthread_mutex_init(&engine->gpu_lock, NULL);
#endif
    engine->store = flat_store_new(params->dim, params->metric, err);
    if (!engine->store)
        goto fail;

    if (want == 0) {
        snprintf(engine->reason, sizeof engine->reason, "CPU requested");
        return engine;
    }
    if (want == 1) {
#ifdef SHOAL_HAVE_CUDA
        engine->ndevices = ndev;
        memcpy(engine->devices, devices, (size_t)ndev * sizeof(int));
        if (s_gpu_start(engine, err) < 0)
            goto fail;
        return engine;
#else
        gpu_device_count(err); /* SHOAL_ENODEV: built without CUDA */
        goto fail;
#endif
    }

    /* auto: every usable GPU, else the CPU with the reason. */
    {
        int count = gpu_device_count(&e);
#ifdef SHOAL_HAVE_CUDA
        if (count > 0) {
            engine->ndevices = count < KNN_DEVICES_MAX ? count : KNN_DEVICES_MAX;
            for (int i = 0; i < engine->ndevices; i++)
                engine->devices[i] = i;
            if (s_gpu_start(engine, &e) == SHOAL_OK) {
                log_info("knn: auto: searching on %s", engine->reason);
                return engine;
            }
            engine->ndevices = 0;
            count = e.code ? e.code : SHOAL_EGPU;
        }
#endif
        (void)count;
        engine->on_gpu = 0;
        snprintf(engine->reason, sizeof engine->reason, "%.159s", e.msg[0] ? e.msg : "no GPU device");
        log_info("knn: auto: searching on the CPU (%s)", engine->reason);
        return engine;
    }

fail:
    knn_engine_destroy(&engine);
    return NULL;
}

void knn_engine_destroy(knn_engine_t **engine_p)
{
    if (!engine_p || !*engine_p)
        return;
    knn_engine_t *engine = *engine_p;
#ifdef SHOAL_HAVE_CUDA
    knn_cuda_destroy(&engine->cu);
    pthread_mutex_destroy(&engine->gpu_lock);
#endif
    flat_store_destroy(&engine->store);
    free(engine);
    *engine_p = NULL;
}

#ifdef SHOAL_HAVE_CUDA
struct knn_cuda *knn_engine_cuda(struct knn_engine *engine)
{
    return engine ? engine->cu : NULL;
}
#endif

/* ------------------------------------------------------------------------ */
/* Add and remove                                                           */
/* ------------------------------------------------------------------------ */

#ifdef SHOAL_HAVE_CUDA
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
        rc = knn_cuda_set_rows(engine->cu, rows, vecs, norms, ids, m, err);
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
#endif

int knn_engine_add(knn_engine_t *engine, const uint64_t *ids, const float *vecs, size_t n,
                   shoal_err_t *err)
{
    if (!engine)
        return shoal_err_set(err, SHOAL_EINVAL, "knn_engine_add: no engine");
    if (n == 0)
        return SHOAL_OK;
    if (!ids || !vecs)
        return shoal_err_set(err, SHOAL_EINVAL, "knn_engine_add: NULL ids or vectors");
#ifndef SHOAL_HAVE_CUDA
    return flat_store_add(engine->store, ids, vecs, n, err);
#else
    if (!engine->cu)
        return flat_store_add(engine->store, ids, vecs, n, err);

    if (engine->fp16) {
        /* Cosine rows are normalised (|v_i| <= 1) before they are rounded. */
        if (engine->metric != SHOAL_METRIC_COSINE)
            for (size_t i = 0; i < n * engine->dim; i++)
                if (fabsf(vecs[i]) > S_FP16_MAX)
                    return shoal_err_set(err, SHOAL_EINVAL,
                                         "knn_engine_add: vector %zu column %zu is %g, beyond "
                                         "fp16's range (%g) of this fp16 engine",
                                         i / engine->dim, i % engine->dim, (double)vecs[i],
                                         (double)S_FP16_MAX);
    }
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
    int rc = knn_cuda_reserve(engine->cu, before + (n - m), err);
    if (rc < 0) {
        free(rows);
        return rc;
    }
    rc = flat_store_add(engine->store, ids, vecs, n, err);
    if (rc < 0) {
        free(rows);
        return rc;
    }
    flat_view_t v = flat_store_view(engine->store);
    shoal_err_t e;
    shoal_err_clear(&e);
    int mrc = knn_cuda_append(engine->cu, v.vecs + before * v.dim, v.norms_sq + before,
                              v.ids + before, v.n - before, &e);
    if (mrc == SHOAL_OK)
        mrc = s_mirror_rows(engine, rows, s_unique(rows, m), &e);
    free(rows);
    if (mrc < 0)
        s_gpu_lost(engine, &e);
    return SHOAL_OK;
#endif
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
#ifdef SHOAL_HAVE_CUDA
    if (engine->cu) {
        moved = malloc(n * sizeof(size_t));
        if (!moved)
            return shoal_err_set(err, SHOAL_ENOMEM, "knn_engine_remove: out of memory");
    }
#endif
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
#ifdef SHOAL_HAVE_CUDA
    if (engine->cu && count) {
        /* Rows below the new count changed only where a move landed. */
        size_t now = flat_store_count(engine->store), w = 0;
        for (size_t i = 0; i < nmoved; i++)
            if (moved[i] < now)
                moved[w++] = moved[i];
        shoal_err_t e;
        shoal_err_clear(&e);
        int mrc = knn_cuda_truncate(engine->cu, now, &e);
        if (mrc == SHOAL_OK)
            mrc = s_mirror_rows(engine, moved, s_unique(moved, w), &e);
        if (mrc < 0)
            s_gpu_lost(engine, &e);
    }
#endif
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

#ifdef SHOAL_HAVE_CUDA
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

typedef struct {
    const knn_engine_t *engine; /* store and metric */
    const float *queries;       /* the chunk's queries */
    const uint64_t *cand;       /* kk candidate ids per query */
    size_t kk;                  /* candidates per query */
    size_t k;                   /* results per query */
    size_t q_begin, q_end;      /* this thread's queries */
    uint64_t *ids;              /* k per query */
    float *dists;               /* k per query, or NULL */
    int rc;                     /* SHOAL_ENOMEM or 0 */
} s_rerank_job_t;

/* Exact fp32 distances of each query's candidates, best k kept (ties by id). */
static void *s_rerank_run(void *arg)
{
    s_rerank_job_t *job = arg;
    const knn_engine_t *engine = job->engine;
    const size_t dim = engine->dim;
    flat_view_t v = flat_store_view(engine->store);
    const dist_kernels_t *kern = dist_kernels();
    topk_item_t *items = malloc(job->k * sizeof *items);
    float *qn = malloc(dim * sizeof(float));
    if (!items || !qn) {
        job->rc = SHOAL_ENOMEM;
        free(items);
        free(qn);
        return NULL;
    }
    for (size_t q = job->q_begin; q < job->q_end; q++) {
        const float *qv = job->queries + q * dim;
        if (engine->metric == SHOAL_METRIC_COSINE) {
            memcpy(qn, qv, dim * sizeof(float));
            (void)dist_normalize(qn, dim); /* a zero query stays zero */
            qv = qn;
        }
        topk_heap_t heap;
        topk_heap_init(&heap, items, job->k);
        for (size_t c = 0; c < job->kk; c++) {
            uint64_t id = job->cand[q * job->kk + c];
            if (id == TOPK_ID_NONE)
                continue;
            size_t row = flat_store_row(engine->store, id);
            if (row == FLAT_NO_ROW)
                continue; /* cannot happen: writers are serialised with searches */
            const float *xv = v.vecs + row * dim;
            float d;
            if (engine->metric == SHOAL_METRIC_L2)
                d = kern->l2sq(qv, xv, dim);
            else if (engine->metric == SHOAL_METRIC_IP)
                d = -kern->dot(qv, xv, dim);
            else
                d = 1.0f - kern->dot(qv, xv, dim);
            topk_heap_push(&heap, d, id);
        }
        topk_heap_extract(&heap, job->dists ? job->dists + q * job->k : NULL,
                          job->ids + q * job->k);
    }
    free(items);
    free(qn);
    return NULL;
}

/* fp16 rows: kk candidates per query from the devices, re-ranked here. */
static int s_search_fp16(knn_engine_t *engine, const float *queries, size_t nq, size_t k,
                         uint64_t *ids, float *dists, shoal_err_t *err)
{
    size_t kk = 4 * k < KNN_K_MAX_GPU ? 4 * k : KNN_K_MAX_GPU;
    if (kk < k)
        kk = k;
    size_t chunk = S_RERANK_CHUNK_BYTES / (kk * sizeof(uint64_t));
    if (chunk < 1)
        chunk = 1;
    if (chunk > nq)
        chunk = nq;
    uint64_t *cand = malloc(chunk * kk * sizeof(uint64_t));
    if (!cand)
        return shoal_err_set(err, SHOAL_ENOMEM, "knn_engine_search: out of memory");
    size_t threads = engine->threads;
    if (threads == 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        threads = c > 0 ? (size_t)c : 1;
    }
    if (threads > 64)
        threads = 64;
    int rc = SHOAL_OK;
    for (size_t q0 = 0; q0 < nq && rc == SHOAL_OK; q0 += chunk) {
        size_t qn = nq - q0 < chunk ? nq - q0 : chunk;
        pthread_mutex_lock(&engine->gpu_lock);
        rc = knn_cuda_search(engine->cu, queries + q0 * engine->dim, qn, kk, cand, NULL, err);
        pthread_mutex_unlock(&engine->gpu_lock);
        if (rc < 0)
            break;
        /* Enough work per thread to pay for starting it. */
        size_t nt = qn * kk * engine->dim / (1u << 20) + 1;
        if (nt > threads)
            nt = threads;
        if (nt > qn)
            nt = qn;
        s_rerank_job_t jobs[64];
        pthread_t tids[64];
        size_t started = 0;
        for (size_t t = 0; t < nt; t++) {
            jobs[t] = (s_rerank_job_t){
                .engine = engine,
                .queries = queries + q0 * engine->dim,
                .cand = cand,
                .kk = kk,
                .k = k,
                .q_begin = qn * t / nt,
                .q_end = qn * (t + 1) / nt,
                .ids = ids + q0 * k,
                .dists = dists ? dists + q0 * k : NULL,
                .rc = 0,
            };
        }
        for (size_t t = 1; t < nt; t++) {
            if (pthread_create(&tids[t], NULL, s_rerank_run, &jobs[t]) != 0)
                break;
            started = t;
        }
        /* This thread takes job 0, and any job whose thread did not start. */
        s_rerank_run(&jobs[0]);
        for (size_t t = started + 1; t < nt; t++)
            s_rerank_run(&jobs[t]);
        for (size_t t = 1; t <= started; t++)
            pthread_join(tids[t], NULL);
        for (size_t t = 0; t < nt; t++)
            if (jobs[t].rc < 0)
                rc = shoal_err_set(err, SHOAL_ENOMEM, "knn_engine_search: out of memory "
                                                      "re-ranking fp16 candidates");
    }
    free(cand);
    return rc;
}
#endif

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
#ifdef SHOAL_HAVE_CUDA
    if (engine->cu && k <= KNN_K_MAX_GPU) {
        int rc = s_check_queries(engine, queries, nq, err);
        if (rc < 0)
            return rc;
        if (view.n == 0) {
            for (size_t i = 0; i < nq * k; i++) {
                ids[i] = TOPK_ID_NONE;
                if (dists)
                    dists[i] = INFINITY;
            }
            return SHOAL_OK;
        }
        if (engine->fp16)
            return s_search_fp16(engine, queries, nq, k, ids, dists, err);
        pthread_mutex_lock(&engine->gpu_lock);
        rc = knn_cuda_search(engine->cu, queries, nq, k, ids, dists, err);
        pthread_mutex_unlock(&engine->gpu_lock);
        return rc;
    }
#endif
    /* The CPU path, and k beyond the select kernel's limit on a GPU engine. */
    flat_search_opts_t opts = {.threads = engine->threads, .mem_budget = engine->mem_budget};
    return flat_search(&view, queries, nq, k, &opts, ids, dists, err);
}

void knn_engine_info(const knn_engine_t *engine, knn_info_t *info)
{
    memset(info, 0, sizeof *info);
    if (!engine)
        return;
    info->on_gpu = engine->on_gpu;
    info->ndevices = engine->ndevices;
    memcpy(info->devices, engine->devices, sizeof info->devices);
    info->count = flat_store_count(engine->store);
    info->host_bytes = sizeof *engine + flat_store_bytes(engine->store);
#ifdef SHOAL_HAVE_CUDA
    info->device_bytes = knn_cuda_device_bytes(engine->cu);
#endif
    memcpy(info->reason, engine->reason, sizeof info->reason);
}
