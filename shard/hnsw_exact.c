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
 * Cost per query: one pass over the codes (dim bytes a row for sq8: a
 * quarter of the float32 bytes, which is what bounds a scan), 12 bytes of
 * scratch a row (lo and id), and a few row reads (measured in quant.h: 11 to
 * 18 rows of 10,000 for k = 10). The scan holds the index's mutex one block
 * of slots at a time (S_LOCK_SLOTS), so inserts wait at most that long.
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

/* Slots scored per hold of the index's mutex. */
#define S_LOCK_SLOTS 4096
/* Scans repeated after a candidate vanished under the search. */
#define S_RETRIES 3

typedef struct {
    float *lo;       /* per scanned row: its interval's lo (f32: the distance) */
    uint64_t *ids;   /* per scanned row: its id */
    size_t n;        /* rows scanned */
    float upper;     /* U: the k-th smallest hi */
    size_t vanished; /* candidates the source no longer had */
} s_scan_t;

/* R for IP on f16/f32 (quant.h): a bound on the stored rows' norms, widened
 * from |X| (what the codes give at load) to |x| by f16's rounding. */
static float s_row_norm_bound(const hnsw_t *ix)
{
    double r = (double)ix->row_norm_max * (1.0 + 0x1p-10) + 0x1p-24 * sqrt((double)ix->dim);
    return r > 0.0 ? (float)r : 1.0f;
}

/* Scores every live row; fills sc (lo, ids) and U. Caller holds rw for reading. */
static int s_scan(hnsw_t *ix, const hnsw_query_t *hq, const quant_bound_t *b, size_t k,
                  hnsw_filter_fn filter, void *filter_arg, topk_item_t *items, s_scan_t *sc,
                  shoal_err_t *err)
{
    pthread_mutex_lock(&ix->mu);
    size_t nslots = ix->nslots;
    pthread_mutex_unlock(&ix->mu);
    sc->lo = malloc((nslots ? nslots : 1) * sizeof *sc->lo);
    sc->ids = malloc((nslots ? nslots : 1) * sizeof *sc->ids);
    if (!sc->lo || !sc->ids)
        return shoal_err_set(err, SHOAL_ENOMEM, "hnsw exact search: out of memory for %zu rows",
                             nslots);
    topk_heap_t his;
    topk_heap_init(&his, items, k);
    sc->n = 0;
    for (size_t s0 = 0; s0 < nslots; s0 += S_LOCK_SLOTS) {
        size_t s1 = nslots - s0 < S_LOCK_SLOTS ? nslots : s0 + S_LOCK_SLOTS;
        /* mu: a free slot in range may be taken by an insert meanwhile. */
        pthread_mutex_lock(&ix->mu);
        for (size_t s = s0; s < s1; s++) {
            const hnsw_node_t *node = hnsw_node(ix, (uint32_t)s);
            if (node->level < 0 || (filter && !filter(node->id, filter_arg)))
                continue;
            float approx = hnsw_query_dist(ix, hq, (uint32_t)s), lo = approx, hi = approx;
            if (ix->storage == QUANT_SQ8) {
                float row_err = *hnsw_row_err(ix, (uint32_t)s);
                if (row_err == 0.0f)
                    quant_bound_interval(b, approx, &lo, &hi);
                else if (isfinite(row_err))
                    quant_bound_interval_row(b, approx, row_err, &lo, &hi);
                else
                    lo = -INFINITY, hi = INFINITY; /* unknown (a version-2 file) */
            } else if (ix->storage == QUANT_F16) {
                quant_bound_interval(b, approx, &lo, &hi);
            }
            sc->lo[sc->n] = lo;
            sc->ids[sc->n++] = node->id;
            topk_heap_push(&his, hi, node->id);
        }
        pthread_mutex_unlock(&ix->mu);
    }
    sc->upper = his.count < k ? INFINITY : topk_heap_bound(&his);
    return 0;
}

/* Re-scores the rows whose lo <= U through the source; the best k into heap. */
static int s_rescore(const hnsw_t *ix, const float *q, const s_scan_t *sc,
                     const hnsw_search_opts_t *o, float *row, topk_heap_t *heap, size_t *vanished,
                     shoal_err_t *err)
{
    *vanished = 0;
    for (size_t i = 0; i < sc->n; i++) {
        if (!(sc->lo[i] <= sc->upper))
            continue;
        if (ix->storage == QUANT_F32) { /* lo is the float32 distance itself */
            topk_heap_push(heap, sc->lo[i], sc->ids[i]);
            continue;
        }
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
    if (k < 1 || k > HNSW_EF_MAX)
        return shoal_err_set(err, k < 1 ? SHOAL_EINVAL : SHOAL_ELIMIT,
                             "hnsw exact search: k must be in 1..%d, got %zu", HNSW_EF_MAX, k);
    if (ix->storage != QUANT_F32 && !opts->rerank_fn)
        return shoal_err_set(err, SHOAL_EINVAL,
                             "hnsw exact search: a %s graph needs a float32 row source",
                             quant_kind_name(ix->storage));
    float *q = malloc(2 * ix->dim * sizeof *q);
    topk_item_t *items = malloc(2 * k * sizeof *items);
    if (!q || !items) {
        free(q);
        free(items);
        return shoal_err_set(err, SHOAL_ENOMEM, "hnsw exact search: out of memory");
    }
    float *row = q + ix->dim;
    int rc = hnsw_prepare(ix, query, q, "query", 0, 0, err);
    topk_heap_t heap;
    topk_heap_init(&heap, items + k, k);
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
        if (rc == 0)
            rc = s_rescore(ix, q, &sc, opts, row, &heap, &vanished, err);
        for (size_t i = 0; rc == 0 && i < sc.n; i++)
            total += sc.lo[i] <= sc.upper && ix->storage != QUANT_F32;
        free(sc.lo);
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
