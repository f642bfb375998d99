/*
 * hnsw_exact.c - exact k-NN over the graph's own storage (hnsw_exact_search):
 * the one copy of the vectors a shard keeps in RAM serves exact search too.
 *
 * f32 storage: a scan of every live row with the float32 kernels, which is
 * exact as it stands. f16 and sq8: every live code is scored with
 * common/quant.h's kernels and given an interval [lo, hi] that holds the
 * float32 distance to the original row (quant_bound_*: the quantizer's error
 * bound, or a clamped sq8 row's own bound, hnsw_row_err). The k-th smallest
 * hi is an upper bound U on the true k-th distance; every row whose lo <= U
 * could be in the true top-k and is re-scored in float32 through the caller's
 * row source, the others cannot be. No guess is involved: the answer is the
 * float32 top-k, ties by id, the same distances the float32 engines compute.
 *
 * Cost per query: one pass over the codes with the batch kernels, a chunk
 * of contiguous blocks at a time (dim bytes a row for sq8: a quarter of the
 * float32 bytes, but strided by the block, links included), one comparison
 * a row against a limit derived from U (s_scan_t says why that is enough),
 * 13 bytes of scratch a row (code distance, clamped flag, id), and a few row
 * reads (measured in quant.h: 11 to 18 rows of 10,000 for k = 10). The scan
 * holds the index's mutex one chunk at a time, so inserts wait at most that.
 *
 * A row deleted between the scan and its re-scoring (the source says
 * SHOAL_ENOTFOUND) may have been one of the k that set U: the search then
 * runs again (at most S_RETRIES times), so the answer is exact for the
 * rows present at some point of the search.
 */
#include "shard/hnsw.h"

#include "shard/hnsw_private.h"
#include "common/topk.h"

#include <math.h>
#include <stdlib.h>

#include <string.h>

/* Slots scored per hold of the index's mutex: one chunk, whose blocks are
 * contiguous, so a batch kernel walks them with the block stride. */
#define S_LOCK_SLOTS HNSW_CHUNK_SLOTS
/* Scans repeated after a candidate vanished under the search. */
#define S_RETRIES 3

/*
 * What a scan keeps: the rows that may still be in the top-k, each with its
 * code distance (approx) or, for a clamped sq8 row, its own interval's lo.
 * Rows with nothing clamped have intervals that grow with approx (quant.h),
 * so the k-th smallest hi among them is the hi of their k-th smallest
 * approx, and "lo <= U" is "approx <= quant_bound_approx_limit(U)": one
 * comparison a row. U only falls as the scan goes on, so a row above the
 * current limit is dropped at once, and only the few below it are kept.
 */
typedef struct {
    float *key;       /* per kept row: approx, or lo for a clamped row */
    uint8_t *clamped; /* per kept row: 1 when key is a lo */
    uint64_t *ids;    /* per kept row: its id */
    size_t n, cap;    /* rows kept, room */
    float upper;      /* U: the k-th smallest hi over every row scanned */
    float limit;      /* rows with nothing clamped: approx <= limit re-scores */
} s_scan_t;

/* R for IP on f16/f32 (quant.h): a bound on the stored rows' norms, widened
 * from |X| (what the codes give at load) to |x| by f16's rounding. */
static float s_row_norm_bound(const hnsw_t *ix)
{
    double r = (double)ix->row_norm_max * (1.0 + 0x1p-10) + 0x1p-24 * sqrt((double)ix->dim);
    return r > 0.0 ? (float)r : 1.0f;
}

/* Code distances of the n contiguous slots from s0 into out (batch kernels). */
static void s_score(const hnsw_t *ix, const hnsw_query_t *hq, uint32_t s0, size_t n, float *out)
{
    int l2 = ix->metric == SHOAL_METRIC_L2;
    const void *codes = hnsw_code(ix, s0);
    switch (ix->storage) {
    case QUANT_F32: /* the pair kernel: exactly the float32 engines' distance */
        for (size_t i = 0; i < n; i++)
            out[i] = hnsw_query_dist(ix, hq, s0 + (uint32_t)i);
        return;
    case QUANT_F16:
        if (l2)
            ix->qk->f16_l2sq_batch(hq->vec, codes, n, ix->dim, ix->stride / 2, out);
        else
            ix->qk->f16_dot_batch(hq->vec, codes, n, ix->dim, ix->stride / 2, out);
        break;
    default:
        if (l2)
            ix->qk->sq8_l2sq_batch(&hq->sq8, codes, n, ix->stride, out);
        else
            ix->qk->sq8_dot_batch(&hq->sq8, codes, n, ix->stride, out);
        break;
    }
    for (size_t i = 0; i < n; i++)
        out[i] = hnsw_metric_dist(ix->metric, out[i]);
}

/* Keeps a row; 0 or SHOAL_ENOMEM. */
static int s_keep(s_scan_t *sc, float key, int clamped, uint64_t id)
{
    if (sc->n == sc->cap) {
        size_t cap = sc->cap ? 2 * sc->cap : 1024;
        float *k2 = realloc(sc->key, cap * sizeof *k2);
        if (k2)
            sc->key = k2;
        uint8_t *c2 = realloc(sc->clamped, cap);
        if (c2)
            sc->clamped = c2;
        uint64_t *i2 = realloc(sc->ids, cap * sizeof *i2);
        if (i2)
            sc->ids = i2;
        if (!k2 || !c2 || !i2)
            return SHOAL_ENOMEM;
        sc->cap = cap;
    }
    sc->key[sc->n] = key;
    sc->clamped[sc->n] = (uint8_t)clamped;
    sc->ids[sc->n++] = id;
    return 0;
}

/* The running U: an upper bound on the k-th smallest hi of the rows seen
 * (from either heap once it is full; the final U takes both together). */
static float s_upper_now(const hnsw_t *ix, const quant_bound_t *b, const topk_heap_t *plain,
                         const topk_heap_t *his)
{
    float u = INFINITY;
    if (plain->count == plain->k) {
        float lo = topk_heap_bound(plain), hi = lo;
        if (ix->storage != QUANT_F32)
            quant_bound_interval(b, lo, &lo, &hi);
        u = hi;
    }
    if (his->count == his->k && topk_heap_bound(his) < u)
        u = topk_heap_bound(his);
    return u;
}

/* The k-th smallest of the hi values both heaps hold: the exact U. */
static float s_upper_final(const hnsw_t *ix, const quant_bound_t *b, const topk_heap_t *plain,
                           const topk_heap_t *his, size_t k)
{
    size_t nh = plain->count + his->count;
    if (nh < k)
        return INFINITY;
    float *hv = malloc(nh * sizeof *hv);
    if (!hv)
        return s_upper_now(ix, b, plain, his); /* a valid, looser bound */
    for (size_t i = 0; i < plain->count; i++) {
        float lo = plain->items[i].dist, hi = lo;
        if (ix->storage != QUANT_F32)
            quant_bound_interval(b, lo, &lo, &hi);
        hv[i] = hi;
    }
    for (size_t i = 0; i < his->count; i++)
        hv[plain->count + i] = his->items[i].dist;
    for (size_t i = 0; i < k; i++) { /* partial selection: k is small next to n */
        size_t best = i;
        for (size_t j = i + 1; j < nh; j++)
            if (hv[j] < hv[best])
                best = j;
        float t = hv[i];
        hv[i] = hv[best];
        hv[best] = t;
    }
    float u = hv[k - 1];
    free(hv);
    return u;
}

/*
 * Scores every live row and keeps those that may be in the top-k (sc), with
 * U and its limit. Caller holds rw for reading, so no row is deleted meanwhile:
 * when the index had no free slot at the start, every slot below nslots is
 * live for the whole scan and headers need not be read but for kept rows.
 */
static int s_scan(hnsw_t *ix, const hnsw_query_t *hq, const quant_bound_t *b, size_t k,
                  hnsw_filter_fn filter, void *filter_arg, topk_item_t *items, s_scan_t *sc,
                  shoal_err_t *err)
{
    pthread_mutex_lock(&ix->mu);
    size_t nslots = ix->nslots;
    int all_live = ix->nfree == 0, any_clamped = ix->nclamped > 0;
    pthread_mutex_unlock(&ix->mu);
    float *approx = malloc(S_LOCK_SLOTS * sizeof *approx);
    if (!approx)
        return shoal_err_set(err, SHOAL_ENOMEM, "hnsw exact search: out of memory");
    /* items: k for the plain rows' smallest approx, k for the clamped rows' smallest hi. */
    topk_heap_t plain, his;
    topk_heap_init(&plain, items, k);
    topk_heap_init(&his, items + k, k);
    float upper = INFINITY, limit = INFINITY;
    int rc = 0;
    for (size_t s0 = 0; s0 < nslots && rc == 0; s0 += S_LOCK_SLOTS) {
        size_t m = nslots - s0 < S_LOCK_SLOTS ? nslots - s0 : S_LOCK_SLOTS;
        /* mu: a free slot in range may be taken by an insert meanwhile. */
        pthread_mutex_lock(&ix->mu);
        s_score(ix, hq, (uint32_t)s0, m, approx);
        for (size_t i = 0; i < m && rc == 0; i++) {
            uint32_t s = (uint32_t)(s0 + i);
            float row_err = any_clamped ? *hnsw_row_err(ix, s) : 0.0f;
            if (row_err == 0.0f && !(approx[i] <= limit))
                continue;
            const hnsw_node_t *node = hnsw_node(ix, s);
            if ((!all_live && node->level < 0) || (filter && !filter(node->id, filter_arg)))
                continue;
            int changed;
            if (row_err == 0.0f) {
                rc = s_keep(sc, approx[i], 0, node->id);
                changed = topk_heap_push(&plain, approx[i], node->id);
            } else {
                float lo = -INFINITY, hi = INFINITY; /* infinite: unknown (a version-2 file) */
                if (isfinite(row_err))
                    quant_bound_interval_row(b, approx[i], row_err, &lo, &hi);
                if (!(lo <= upper))
                    continue;
                rc = s_keep(sc, lo, 1, node->id);
                changed = topk_heap_push(&his, hi, node->id);
            }
            if (changed) {
                upper = s_upper_now(ix, b, &plain, &his);
                limit = ix->storage == QUANT_F32 ? upper : quant_bound_approx_limit(b, upper);
            }
        }
        pthread_mutex_unlock(&ix->mu);
    }
    free(approx);
    if (rc)
        return shoal_err_set(err, rc, "hnsw exact search: out of memory keeping candidates");
    sc->upper = s_upper_final(ix, b, &plain, &his, k);
    sc->limit = ix->storage == QUANT_F32 ? sc->upper : quant_bound_approx_limit(b, sc->upper);
    return 0;
}

/* Re-scores the rows that could be in the top-k through the source; the best k into heap. */
static int s_rescore(const hnsw_t *ix, const float *q, const s_scan_t *sc,
                     const hnsw_search_opts_t *o, float *row, topk_heap_t *heap, size_t *asked,
                     size_t *vanished, shoal_err_t *err)
{
    *vanished = 0;
    *asked = 0;
    for (size_t i = 0; i < sc->n; i++) {
        if (!(sc->key[i] <= (sc->clamped[i] ? sc->upper : sc->limit)))
            continue;
        if (ix->storage == QUANT_F32) { /* key is the float32 distance itself */
            topk_heap_push(heap, sc->key[i], sc->ids[i]);
            continue;
        }
        (*asked)++;
        int rc = o->rerank_fn(sc->ids[i], row, o->rerank_ctx);
        if (rc == SHOAL_ENOTFOUND) {
            (*vanished)++;
            continue;
        }
        if (rc)
            return shoal_err_set(err, rc < 0 ? rc : SHOAL_EINTERNAL,
                                 "hnsw exact search: the row source failed on id %llu (%d)",
                                 (unsigned long long)sc->ids[i], rc);
        if (ix->metric == SHOAL_METRIC_COSINE && dist_normalize(row, ix->dim) != 0)
            return shoal_err_set(err, SHOAL_EINVAL,
                                 "hnsw exact search: the row source gave id %llu a zero row",
                                 (unsigned long long)sc->ids[i]);
        topk_heap_push(heap, hnsw_dist(ix, q, row), sc->ids[i]);
    }
    return 0;
}

int hnsw_exact_search(const hnsw_t *index, const float *query, const hnsw_search_opts_t *opts,
                      uint64_t *ids, float *dists, size_t *rescored, shoal_err_t *err)
{
    hnsw_t *ix = (hnsw_t *)index; /* logically const; its locks are not */
    if (!ix || !query || !opts || !ids || !dists)
        return shoal_err_set(err, SHOAL_EINVAL, "hnsw exact search: NULL argument");
    size_t k = opts->k;
    if (k < 1 || k > HNSW_K_MAX)
        return shoal_err_set(err, k < 1 ? SHOAL_EINVAL : SHOAL_ELIMIT,
                             "hnsw exact search: k must be in 1..%d, got %zu", HNSW_K_MAX, k);
    if (ix->storage != QUANT_F32 && !opts->rerank_fn)
        return shoal_err_set(err, SHOAL_EINVAL,
                             "hnsw exact search: a %s graph needs a float32 row source",
                             quant_kind_name(ix->storage));
    float *q = malloc(2 * ix->dim * sizeof *q);
    topk_item_t *items = malloc(3 * k * sizeof *items);
    if (!q || !items) {
        free(q);
        free(items);
        return shoal_err_set(err, SHOAL_ENOMEM, "hnsw exact search: out of memory");
    }
    float *row = q + ix->dim;
    int rc = hnsw_prepare(ix, query, q, "query", 0, 0, err);
    topk_heap_t heap;
    topk_heap_init(&heap, items + 2 * k, k);
    size_t total = 0;
    for (int attempt = 0; rc == 0 && attempt <= S_RETRIES; attempt++) {
        s_scan_t sc = {0};
        hnsw_query_t hq;
        quant_bound_t b;
        size_t vanished = 0;
        topk_heap_reset(&heap);
        pthread_rwlock_rdlock(&ix->rw);
        if (hnsw_query_init(ix, &hq, q) != 0) {
            rc = shoal_err_set(err, SHOAL_ENOMEM, "hnsw exact search: out of memory");
        } else {
            rc = quant_bound_init(&b, ix->storage, ix->sq8, ix->metric, q, ix->dim,
                                  s_row_norm_bound(ix), err);
            if (rc == 0)
                rc = s_scan(ix, &hq, &b, k, opts->filter, opts->filter_arg, items, &sc, err);
            hnsw_query_fini(&hq);
        }
        pthread_rwlock_unlock(&ix->rw);
        size_t asked = 0;
        if (rc == 0)
            rc = s_rescore(ix, q, &sc, opts, row, &heap, &asked, &vanished, err);
        total += asked;
        free(sc.key);
        free(sc.clamped);
        free(sc.ids);
        if (vanished == 0)
            break;
    }
    size_t found = rc == 0 ? topk_heap_extract(&heap, dists, ids) : 0;
    if (rescored)
        *rescored = total;
    free(q);
    free(items);
    return rc ? rc : (int)found;
}
