/*
 * flat.c - the flat store and the CPU exact k-NN search over it (see flat.h).
 *
 * Store. Three parallel arrays (rows, ids, |x|^2) grown geometrically with
 * realloc, and an id -> row map (common/idmap: linear probing, deletion by
 * backward shift, so probe chains do not decay under churn). An add is
 * checked in full and its memory reserved before the first row is touched, so
 * a failing add changes nothing.
 *
 * Search. Two paths compute the same thing:
 *   kernels  the rows are split among threads; each thread runs distance.h's
 *            batch kernels for every query over its rows, straight into one
 *            heap per query; the per-thread lists are merged with topk_merge.
 *            One query uses every core. Best for few queries: no GEMM set-up,
 *            and the rows stream through memory once per query block.
 *   tiled    a tile of queries x a tile of rows of dot products comes from
 *            one cblas_sgemm, then a fused pass per query row turns dots into
 *            distances and offers them to the query's heap. GEMM reuses every
 *            row loaded for a whole query tile, so it wins once there are
 *            enough queries (FLAT_GEMM_MIN_QUERIES). Mid-size batches split
 *            the rows among threads as the kernel path does (sgemm packs each
 *            row tile once per query tile; splitting queries made every
 *            thread pack every row, measured 10-30% slower below ~1000
 *            queries on 2 cores); batches of S_QUERY_SPLIT_TILES full query
 *            tiles per thread split the queries, which needs no merge.
 *            Without OpenBLAS the tile is filled with the dot batch kernel.
 * Either way the scan only nominates candidates; the answer is decided by
 * the documented distance, the pair kernels' (s_exact). The GEMM form
 * |q|^2 + |x|^2 - 2 q.x rounds at the size of the norms, so near-duplicates
 * (distances far below |x|^2) come out in any order, and the batch kernels
 * sum in another order than the pair kernels. So each query keeps every row
 * whose scan distance, less a proven bound on the scan's error, is within
 * the k-th best plus that bound (see "Candidates" below and the derivation
 * of the bound in flat_search), re-scores them with the pair kernels and
 * sorts by (distance, id). The result is the top k by the documented
 * distance, ties by id, on every path, thread count and tiling, and the
 * returned distances carry no cancellation error.
 *
 * OpenBLAS threads. The tiled path calls sgemm from its own threads, one tile
 * each, so OpenBLAS is set to one thread (openblas_set_num_threads(1), once per
 * process): its own pool would otherwise oversubscribe the cores. Letting
 * OpenBLAS thread one GEMM instead was not tried: the row split already gives
 * every core its own share of a small batch. The setting is process-wide.
 *
 * Memory. mem_budget covers what grows with the work in flight: distance tiles
 * (or row blocks), candidate lists, heaps and sorted lists, summed over
 * threads. Tiles never shrink below S_ROW_TILE_MIN rows x 1 query, so a tiny
 * budget is honoured only approximately, and never grow past what the search
 * needs (its queries, a thread's rows). Tiles and selection state come from
 * a block the calling thread keeps between searches (s_scratch_get): fresh
 * pages each call were a thousand page faults per 1,000-query routing of
 * the coordinator (4 MB of candidate lists), more than its GEMM.
 *
 * Threads. A GEMM search gets at most one thread per
 * FLAT_THREAD_WORK_DEFAULT multiply-adds: at 100 queries on siftsmall
 * (256 MFLOP, ~3 ms on one core at sgemm's speed) two threads were slower
 * than one, as thread start-up, the merge and each thread's own sgemm
 * packing cost more than half the scan. One thread runs on the calling
 * thread; no thread is started. The kernel path is bound by memory, not
 * arithmetic, and keeps its rows-per-thread minimum: on 200,000 x 128 one
 * query ran faster on two threads than on one.
 */
#include "common/flat.h"
#include "common/log.h"
#include "common/parfor.h"
#include "common/idmap.h"
#include "common/topk.h"
#include "common/vec_check.h"

#include <assert.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#ifndef SHOAL_NO_BLAS
#include <cblas.h>
#endif

/* First row capacity of a store; it doubles from there. */
#define S_ROWS_INITIAL 16
/* Threads are capped: more would only add memory. */
#define S_THREADS_MAX 256
/* Tiled path: queries per tile at most, rows per tile at least / at most.
 * 512 x 4096 floats is an 8 MiB tile: large enough for sgemm to run near its
 * peak, small enough that the fused pass reads it back from L3. */
#define S_QUERY_TILE_MAX 512
#define S_ROW_TILE_MIN   64
#define S_ROW_TILE_MAX   4096
/* Batches of at least this many full query tiles per thread are split by
 * queries, smaller ones by rows (see flat_search). */
#define S_QUERY_SPLIT_TILES 4
/* Kernel path: rows per block (kept in cache while every query scans it) and
 * the fewest rows worth a thread of their own. */
#define S_BLOCK_BYTES       (256 * 1024)
#define S_ROWS_PER_THREAD_MIN 4096

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */
/* ------------------------------------------------------------------------ */

static int s_mul_overflows(size_t a, size_t b, size_t *out)
{
    if (a && b > SIZE_MAX / a)
        return 1;
    *out = a * b;
    return 0;
}

static size_t s_min(size_t a, size_t b)
{
    return a < b ? a : b;
}

/* sum v_i^2 in double, so it does not depend on the SIMD summation order. */
static double s_norm_sq(const float *v, size_t dim)
{
    double sum = 0.0;
    for (size_t i = 0; i < dim; i++)
        sum += (double)v[i] * v[i];
    return sum;
}

static int s_metric_valid(shoal_metric_t metric)
{
    return metric == SHOAL_METRIC_L2 || metric == SHOAL_METRIC_IP ||
           metric == SHOAL_METRIC_COSINE;
}

/* The id map's "absent" is the store's, and its free marker is the reserved id. */
_Static_assert(FLAT_NO_ROW == IDMAP_NONE, "flat_store_row passes idmap_find's answer on");
_Static_assert(TOPK_ID_NONE == IDMAP_FREE, "the reserved id is the id map's free marker");

/* ------------------------------------------------------------------------ */
/* Store                                                                    */
/* ------------------------------------------------------------------------ */

struct flat_store {
    float *vecs;           /* cap x dim; rows [0, n) in use, normalised for cosine */
    uint64_t *ids;         /* cap; ids[row] of rows [0, n) */
    float *norms_sq;       /* cap; |x|^2 of rows [0, n) */
    size_t n;              /* rows in use */
    size_t cap;            /* rows allocated */
    size_t dim;            /* floats per row */
    shoal_metric_t metric; /* what the rows are stored for */
    idmap_t map;           /* id -> row, for rows [0, n) */
};

flat_store_t *flat_store_new(size_t dim, shoal_metric_t metric, shoal_err_t *err)
{
    if (dim < 1) {
        shoal_err_set(err, SHOAL_EINVAL, "flat_store_new: dim must be >= 1, got 0");
        return NULL;
    }
    if (!s_metric_valid(metric)) {
        shoal_err_set(err, SHOAL_EINVAL, "flat_store_new: unknown metric %d", (int)metric);
        return NULL;
    }
    size_t row_bytes;
    if (s_mul_overflows(dim, sizeof(float), &row_bytes)) {
        shoal_err_set(err, SHOAL_EINVAL, "flat_store_new: dim %zu is too large", dim);
        return NULL;
    }
    flat_store_t *store = calloc(1, sizeof *store);
    if (!store) {
        shoal_err_set(err, SHOAL_ENOMEM, "flat_store_new: out of memory");
        return NULL;
    }
    store->dim = dim;
    store->metric = metric;
    return store;
}

void flat_store_destroy(flat_store_t **store_p)
{
    if (!store_p || !*store_p)
        return;
    flat_store_t *store = *store_p;
    free(store->vecs);
    free(store->ids);
    free(store->norms_sq);
    idmap_fini(&store->map);
    free(store);
    *store_p = NULL;
}

/* Makes room for `want` rows, doubling the capacity at least. */
static int s_store_reserve(flat_store_t *store, size_t want, shoal_err_t *err)
{
    if (want <= store->cap)
        return SHOAL_OK;
    size_t cap = store->cap < S_ROWS_INITIAL ? S_ROWS_INITIAL : store->cap;
    while (cap < want)
        cap = cap > SIZE_MAX / 2 ? want : cap * 2;
    size_t vec_bytes, id_bytes;
    if (s_mul_overflows(cap, store->dim, &vec_bytes) ||
        s_mul_overflows(vec_bytes, sizeof(float), &vec_bytes) ||
        s_mul_overflows(cap, sizeof(uint64_t), &id_bytes))
        return shoal_err_set(err, SHOAL_ENOMEM, "flat_store_add: %zu rows of dim %zu overflow",
                             want, store->dim);
    /* Each array is kept as soon as it has grown; cap moves only when all did. */
    float *vecs = realloc(store->vecs, vec_bytes);
    if (vecs)
        store->vecs = vecs;
    uint64_t *ids = vecs ? realloc(store->ids, id_bytes) : NULL;
    if (ids)
        store->ids = ids;
    float *norms = ids ? realloc(store->norms_sq, cap * sizeof(float)) : NULL;
    if (!norms)
        return shoal_err_set(err, SHOAL_ENOMEM,
                             "flat_store_add: out of memory for %zu rows of dim %zu", cap,
                             store->dim);
    store->norms_sq = norms;
    store->cap = cap;
    return SHOAL_OK;
}

/* Copies a checked vector into row, normalising it for cosine. */
static void s_store_write_row(flat_store_t *store, size_t row, const float *v)
{
    float *dst = store->vecs + row * store->dim;
    memcpy(dst, v, store->dim * sizeof(float));
    if (store->metric == SHOAL_METRIC_COSINE) {
        int rc = dist_normalize(dst, store->dim);
        assert(rc == SHOAL_OK && "checked before: finite and not zero");
        (void)rc;
    }
    store->norms_sq[row] = (float)s_norm_sq(dst, store->dim);
}

int flat_store_add(flat_store_t *store, const uint64_t *ids, const float *vecs, size_t n,
                   shoal_err_t *err)
{
    if (!store)
        return shoal_err_set(err, SHOAL_EINVAL, "flat_store_add: store is NULL");
    if (n == 0)
        return SHOAL_OK;
    if (!ids || !vecs)
        return shoal_err_set(err, SHOAL_EINVAL, "flat_store_add: ids and vecs must not be NULL");
    size_t dim = store->dim, values;
    if (s_mul_overflows(n, dim, &values) || s_mul_overflows(values, sizeof(float), &values))
        return shoal_err_set(err, SHOAL_EINVAL, "flat_store_add: %zu rows of dim %zu overflow",
                             n, dim);

    /* Check everything first, counting ids not yet stored: an upper bound on
     * the new rows (an id repeated in the batch is counted twice). */
    size_t fresh = 0;
    int rc = vec_check_rows("flat_store_add", "row", vecs, n, dim, store->metric, NULL, err);
    if (rc != SHOAL_OK)
        return rc;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] == TOPK_ID_NONE)
            return shoal_err_set(err, SHOAL_EINVAL,
                                 "flat_store_add: row %zu has id %llu, which is reserved "
                                 "(TOPK_ID_NONE)",
                                 i, (unsigned long long)ids[i]);
        if (idmap_find(&store->map, ids[i]) == FLAT_NO_ROW)
            fresh++;
    }
    if (fresh > SIZE_MAX / 2 - store->n)
        return shoal_err_set(err, SHOAL_ENOMEM, "flat_store_add: too many rows");
    rc = s_store_reserve(store, store->n + fresh, err);
    if (rc != SHOAL_OK)
        return rc;
    if (idmap_reserve(&store->map, store->n + fresh) != SHOAL_OK)
        return shoal_err_set(err, SHOAL_ENOMEM, "flat_store_add: out of memory for the id map "
                                                "(%zu ids)",
                             store->n + fresh);

    /* Nothing can fail from here. A repeated id finds the row its first
     * occurrence made and overwrites it: the last one wins. */
    for (size_t i = 0; i < n; i++) {
        size_t row = idmap_find(&store->map, ids[i]);
        if (row == FLAT_NO_ROW) {
            row = store->n++;
            idmap_put(&store->map, ids[i], row);
            store->ids[row] = ids[i];
        }
        s_store_write_row(store, row, vecs + i * dim);
    }
    return SHOAL_OK;
}

int flat_store_remove(flat_store_t *store, uint64_t id, size_t *moved_from, size_t *moved_to,
                      shoal_err_t *err)
{
    if (moved_from)
        *moved_from = FLAT_NO_ROW;
    if (moved_to)
        *moved_to = FLAT_NO_ROW;
    if (!store)
        return shoal_err_set(err, SHOAL_EINVAL, "flat_store_remove: store is NULL");
    size_t row = idmap_find(&store->map, id);
    if (row == FLAT_NO_ROW)
        return shoal_err_set(err, SHOAL_ENOTFOUND, "flat_store_remove: id %llu is not stored",
                             (unsigned long long)id);
    idmap_remove(&store->map, id);
    size_t last = store->n - 1;
    if (row != last) {
        /* Keep the rows dense for the GEMM: the last row fills the hole. */
        memcpy(store->vecs + row * store->dim, store->vecs + last * store->dim,
               store->dim * sizeof(float));
        store->ids[row] = store->ids[last];
        store->norms_sq[row] = store->norms_sq[last];
        idmap_put(&store->map, store->ids[row], row);
        if (moved_from)
            *moved_from = last;
        if (moved_to)
            *moved_to = row;
    }
    store->n = last;
    return SHOAL_OK;
}

size_t flat_store_row(const flat_store_t *store, uint64_t id)
{
    return store ? idmap_find(&store->map, id) : FLAT_NO_ROW;
}

size_t flat_store_count(const flat_store_t *store)
{
    return store ? store->n : 0;
}

size_t flat_store_dim(const flat_store_t *store)
{
    return store ? store->dim : 0;
}

shoal_metric_t flat_store_metric(const flat_store_t *store)
{
    return store ? store->metric : SHOAL_METRIC_L2;
}

size_t flat_store_bytes(const flat_store_t *store)
{
    if (!store)
        return 0;
    /* Sizes that were allocated cannot overflow when added up again. */
    return sizeof *store + store->cap * store->dim * sizeof(float) +
           store->cap * (sizeof(uint64_t) + sizeof(float)) +
           store->map.cap * (sizeof(uint64_t) + sizeof(size_t));
}

flat_view_t flat_store_view(const flat_store_t *store)
{
    flat_view_t view = {0};
    if (!store)
        return view;
    view.vecs = store->vecs;
    view.ids = store->ids;
    view.norms_sq = store->norms_sq;
    view.n = store->n;
    view.dim = store->dim;
    view.metric = store->metric;
    return view;
}

int flat_have_blas(void)
{
#ifdef SHOAL_NO_BLAS
    return 0;
#else
    return 1;
#endif
}

/* ------------------------------------------------------------------------ */
/* Search: shared state                                                     */
/* ------------------------------------------------------------------------ */

/* What every worker reads. */
typedef struct {
    const flat_view_t *view;    /* the rows */
    const dist_kernels_t *kern; /* batch and pair kernels */
    const float *queries;       /* nq x dim; normalised copy for cosine */
    const float *qnorms_sq;     /* nq |q|^2 (of the normalised copy for cosine) */
    size_t nq;                  /* queries */
    size_t dim;                 /* floats per vector */
    shoal_metric_t metric;      /* the view's metric */
    size_t k;                   /* results per query (output stride) */
    size_t keep;                /* min(k, n): results a worker keeps per query */
    size_t cap;                 /* candidates a query can hold (s_cand_cap(keep)) */
    float slack_norms;          /* error bound of the scan: per unit of |q|^2 + |x|^2 */
    float slack_rel;            /*   plus per unit of |scan distance| */
    float slack_min;            /*   plus this (the subnormal range) */
    size_t query_tile;          /* tiled: queries per tile */
    size_t row_tile;            /* tiled: rows per tile */
    size_t block_rows;          /* kernels: rows per block */
    size_t chunk_first;         /* kernels: first query of the current chunk */
    size_t chunk_len;           /* kernels: queries in the current chunk */
    uint64_t *ids;              /* nq x k output */
    float *dists;               /* nq x k output, or NULL */
} search_job_t;

/*
 * Candidates. The scan (GEMM or batch kernels) computes a distance d that
 * may differ from the documented one, the pair kernel's (s_exact), by up to
 * slack = slack_norms * (|q|^2 + |x|^2) + slack_rel * |d| + slack_min (the
 * bound and why it holds: flat_search). So a row's documented distance lies
 * in [lo, hi] = [d - slack, d + slack]. Let T be the keep-th smallest hi seen:
 * keep rows have a documented distance <= T, so a row with lo > T is
 * strictly worse than the keep-th best and can never be returned. A query
 * keeps every row with lo <= T (T only falls, so what it drops stays out),
 * re-scores them with s_exact and sorts by (distance, id): exactly the top
 * keep by the documented distance, whatever the scan's rounding.
 *
 * T is the bound of a heap of the keep smallest hi. The candidates live in a
 * fixed array of cap; when it fills, those above the current T are dropped.
 * If that frees less than a quarter, the half with the largest lo is evicted
 * and the smallest evicted lo remembered (lost_lo); rows at or above it are
 * no longer added. Early in a scan T is still high and a dense cluster far
 * from the query can fill the array; once T falls below lost_lo nothing
 * evicted mattered. Only when lost_lo <= T at the end (more than ~cap/2 rows
 * within the slack of the k-th: a cluster of near-duplicates around the
 * query) is the query scanned again with s_exact alone (s_select_finish), at
 * the kernel path's speed; memory never grows. On ordinary data the slack
 * is far below the gaps between neighbours and a query holds keep plus a
 * few candidates.
 */
typedef struct {
    float lo;   /* scan distance - slack */
    float hi;   /* scan distance + slack */
    size_t row; /* row of the view */
} cand_t;

/* A query keeps at most this many candidates beyond 2 * keep. On the
 * near-duplicate repro data (dim 16, k = 3, ids 14700..14799 as queries) 64
 * made 25 of 99 queries rescan, and the batch 3x slower than before the
 * candidates existed; 256 made none, for 4 KiB per query in flight.
 * siftsmall ran the same with either. */
#define S_CAND_EXTRA 256

static size_t s_cand_cap(size_t keep)
{
    return 2 * keep + S_CAND_EXTRA;
}

/* One query's candidates. */
typedef struct {
    cand_t *items;   /* cap slots */
    size_t count;    /* used slots */
    topk_heap_t his; /* the keep smallest hi seen; its bound is T */
    float lost_lo;   /* smallest lo evicted for room, +INFINITY if none */
} cand_list_t;

/* Bytes of selection state per query in flight: candidates, the hi heap,
 * the sorted list; and per worker: the re-scoring scratch. */
static size_t s_select_bytes(size_t keep)
{
    return s_cand_cap(keep) * sizeof(cand_t) + keep * sizeof(topk_item_t) +
           keep * (sizeof(float) + sizeof(uint64_t)) + sizeof(cand_list_t);
}

/* One thread's candidate lists and the buffers that turn them into sorted
 * lists. */
typedef struct {
    cand_t *cands;       /* queries x cap */
    topk_item_t *his;    /* queries x keep: the hi heaps' storage */
    cand_list_t *lists;  /* one per query in flight */
    topk_item_t *scored; /* cap: one query's re-scored candidates */
    float *dists;        /* queries x keep: sorted distances */
    uint64_t *ids;       /* queries x keep: sorted ids */
} select_state_t;

typedef struct {
    const search_job_t *job; /* shared, read-only */
    select_state_t sel;      /* private selection state */
    float *buf;              /* its slice of the tile memory: query_tile x row_tile
                              * (tiled) or block_rows (kernels) floats */
    size_t first;            /* tiled: first query tile; kernels: first row */
    size_t last;             /* one past the last tile / row */
} search_worker_t;

/* Every array of the selection state is a whole number of 8-byte words, so
 * arrays laid end to end from an 8-byte-aligned start stay aligned. */
_Static_assert(sizeof(cand_t) % 8 == 0 && sizeof(topk_item_t) % 8 == 0 &&
                   sizeof(cand_list_t) % 8 == 0 && _Alignof(cand_list_t) <= 8 &&
                   _Alignof(topk_item_t) <= 8 && _Alignof(cand_t) <= 8,
               "selection arrays laid end to end stay aligned");

/* Bytes of one worker's selection state for `queries` in flight: theirs
 * (s_select_bytes each) and the re-scoring scratch. s_select_carve lays it
 * out; the callers' budgets bound queries (s_rows_plan, s_search_tiled). */
static size_t s_select_size(size_t queries, size_t keep)
{
    return queries * s_select_bytes(keep) + s_cand_cap(keep) * sizeof(topk_item_t);
}

/* Lays one worker's selection state out in mem (s_select_size bytes, 8-byte
 * aligned), the 8-byte-word arrays first and the floats last. */
static void s_select_carve(select_state_t *sel, size_t queries, size_t keep, char *mem)
{
    size_t cap = s_cand_cap(keep);
    sel->cands = (cand_t *)mem;
    mem += queries * cap * sizeof(cand_t);
    sel->his = (topk_item_t *)mem;
    mem += queries * keep * sizeof(topk_item_t);
    sel->lists = (cand_list_t *)mem;
    mem += queries * sizeof(cand_list_t);
    sel->scored = (topk_item_t *)mem;
    mem += cap * sizeof(topk_item_t);
    sel->ids = (uint64_t *)mem;
    mem += queries * keep * sizeof(uint64_t);
    sel->dists = (float *)mem;
}

static void s_select_begin(const search_job_t *job, select_state_t *sel, size_t queries)
{
    for (size_t qi = 0; qi < queries; qi++) {
        cand_list_t *list = &sel->lists[qi];
        list->items = sel->cands + qi * job->cap;
        list->count = 0;
        list->lost_lo = INFINITY;
        topk_heap_init(&list->his, sel->his + qi * job->keep, job->keep);
    }
}

/* T: a candidate whose lo is above it cannot be in the top keep. */
static inline float s_cand_bound(const cand_list_t *list)
{
    return topk_heap_bound(&list->his);
}

/* The scan's error bound for distance d, where norms = |q|^2 + |x|^2. */
static inline float s_slack(const search_job_t *job, float d, float norms)
{
    return job->slack_norms * norms + job->slack_rel * fabsf(d) + job->slack_min;
}

static int s_cmp_lo(const void *pa, const void *pb)
{
    const cand_t *a = pa, *b = pb;
    return (a->lo > b->lo) - (a->lo < b->lo);
}

/* Makes room in a full list: drops the candidates above T, and when that
 * leaves it more than 3/4 full evicts the half with the largest lo (see
 * "Candidates" above). */
static void s_cand_make_room(const search_job_t *job, cand_list_t *list)
{
    float bound = s_cand_bound(list);
    size_t kept = 0;
    for (size_t i = 0; i < list->count; i++)
        if (list->items[i].lo <= bound)
            list->items[kept++] = list->items[i];
    list->count = kept;
    if (kept <= job->cap - job->cap / 4)
        return;
    qsort(list->items, kept, sizeof *list->items, s_cmp_lo);
    list->count = job->cap / 2;
    if (list->items[list->count].lo < list->lost_lo)
        list->lost_lo = list->items[list->count].lo;
}

/* Adds a row whose lo passed T; the caller re-reads T afterwards. */
static void s_cand_add(const search_job_t *job, cand_list_t *list, float lo, float hi, size_t row)
{
    if (hi <= topk_heap_bound(&list->his))
        topk_heap_push(&list->his, hi, row);
    if (!(lo < list->lost_lo))
        return;
    if (list->count == job->cap) {
        s_cand_make_room(job, list);
        if (!(lo <= s_cand_bound(list) && lo < list->lost_lo))
            return;
    }
    list->items[list->count++] = (cand_t){lo, hi, row};
}

/* Rows a pass of s_offer tests at once: a fixed count the compiler
 * vectorises, small enough to stay in registers. */
#define S_OFFER_BLOCK 16

/* Adds the rows [r0, r0 + count) at scan distances d whose lo passes T. */
static void s_offer_rows(const search_job_t *job, size_t q, cand_list_t *list, const float *d,
                         size_t r0, size_t count)
{
    const float qn = job->qnorms_sq[q];
    const float *xn = job->view->norms_sq + r0;
    float bound = s_cand_bound(list);
    for (size_t r = 0; r < count; r++) {
        float slack = s_slack(job, d[r], qn + xn[r]);
        if (d[r] - slack <= bound) {
            s_cand_add(job, list, d[r] - slack, d[r] + slack, r0 + r);
            bound = s_cand_bound(list);
        }
    }
}

/*
 * Offers count rows from row r0 on at scan distances d to query q's list.
 * Nearly every row fails T, so blocks are first only counted, in a loop of
 * fixed length without branches, and only a block with a row that passes is
 * walked again to add it. The count subtracts the slack twice, so that the
 * two passes rounding it differently (a fused multiply-add in one of them)
 * cannot make it miss a row the second pass would add.
 */
static void s_offer(const search_job_t *job, size_t q, cand_list_t *list, const float *d,
                    size_t r0, size_t count)
{
    const float qn = job->qnorms_sq[q];
    const float *xn = job->view->norms_sq + r0;
    size_t r = 0;
    for (; r + S_OFFER_BLOCK <= count; r += S_OFFER_BLOCK) {
        const float bound = s_cand_bound(list);
        int pass = 0;
        for (size_t i = r; i < r + S_OFFER_BLOCK; i++)
            pass += d[i] - 2.0f * s_slack(job, d[i], qn + xn[i]) <= bound;
        if (pass)
            s_offer_rows(job, q, list, d + r, r0 + r, S_OFFER_BLOCK);
    }
    s_offer_rows(job, q, list, d + r, r0 + r, count - r);
}

/* The documented distance of query q to row, with the pair kernels. */
static float s_exact(const search_job_t *job, size_t q, size_t row)
{
    const float *qv = job->queries + q * job->dim;
    const float *xv = job->view->vecs + row * job->dim;
    switch (job->metric) {
    case SHOAL_METRIC_L2:
        return job->kern->l2sq(qv, xv, job->dim);
    case SHOAL_METRIC_IP:
        return -job->kern->dot(qv, xv, job->dim);
    default:
        return 1.0f - job->kern->dot(qv, xv, job->dim);
    }
}

static int s_cmp_items(const void *pa, const void *pb)
{
    const topk_item_t *a = pa, *b = pb;
    if (topk_better(a->dist, a->id, b->dist, b->id))
        return -1;
    return topk_better(b->dist, b->id, a->dist, a->id);
}

/*
 * Ends a selection for queries [q0, q0 + count): each query's candidates are
 * re-scored with s_exact and the best keep, by (distance, id), written sorted
 * to sel->dists / sel->ids (padded). A query that lost a candidate that
 * may matter is scanned again over the rows [r0, r1) it was offered, with
 * s_exact alone.
 */
static void s_select_finish(const search_job_t *job, select_state_t *sel, size_t q0, size_t count,
                            size_t r0, size_t r1)
{
    const size_t keep = job->keep;
    const uint64_t *view_ids = job->view->ids;
    for (size_t qi = 0; qi < count; qi++) {
        const cand_list_t *list = &sel->lists[qi];
        float *d = sel->dists + qi * keep;
        uint64_t *ids = sel->ids + qi * keep;
        size_t found = 0;
        float bound = s_cand_bound(list);
        if (list->lost_lo <= bound) {
            topk_heap_t heap;
            topk_heap_init(&heap, sel->scored, keep);
            for (size_t r = r0; r < r1; r++) {
                float e = s_exact(job, q0 + qi, r);
                if (e <= topk_heap_bound(&heap))
                    topk_heap_push(&heap, e, view_ids[r]);
            }
            topk_heap_extract(&heap, d, ids);
            continue;
        }
        for (size_t i = 0; i < list->count; i++) {
            if (list->items[i].lo > bound)
                continue;
            size_t row = list->items[i].row;
            sel->scored[found].dist = s_exact(job, q0 + qi, row);
            sel->scored[found].id = view_ids[row];
            found++;
        }
        qsort(sel->scored, found, sizeof *sel->scored, s_cmp_items);
        size_t j = 0;
        for (; j < found && j < keep; j++) {
            d[j] = sel->scored[j].dist;
            ids[j] = sel->scored[j].id;
        }
        for (; j < keep; j++) {
            d[j] = INFINITY;
            ids[j] = TOPK_ID_NONE;
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Search: tile memory kept by the calling thread                           */
/* ------------------------------------------------------------------------ */

/*
 * Every search needs tile (or block) buffers for its workers. Fresh ones from
 * malloc are fresh pages for sizes like these, and faulting them in was ~10%
 * of a 100-query search on siftsmall. So the calling thread keeps its last
 * block, up to FLAT_SCRATCH_KEEP_MAX bytes, and hands slices of it to every
 * worker, its own threads included. The block is reachable from a
 * thread-local pointer and is freed by a pthread key's destructor when the
 * thread exits (the main thread's stays reachable until the process ends).
 */
typedef struct {
    float *buf;    /* the kept block, or NULL */
    size_t floats; /* its size */
} scratch_t;

static _Thread_local scratch_t s_scratch;
static pthread_key_t s_scratch_key;
static pthread_once_t s_scratch_once = PTHREAD_ONCE_INIT;
static int s_scratch_key_ok; /* the key exists; without it nothing is kept */

static void s_scratch_key_create(void)
{
    s_scratch_key_ok = pthread_key_create(&s_scratch_key, free) == 0;
}

/*
 * floats of tile memory for one search: the kept block when it is or can be
 * made big enough within FLAT_SCRATCH_KEEP_MAX (*owned = 0), else a block of
 * its own that the caller frees (*owned = 1). NULL when out of memory.
 */
static float *s_scratch_get(size_t floats, int *owned)
{
    *owned = 0;
    if (floats <= s_scratch.floats)
        return s_scratch.buf;
    pthread_once(&s_scratch_once, s_scratch_key_create);
    if (!s_scratch_key_ok || floats > FLAT_SCRATCH_KEEP_MAX / sizeof(float)) {
        *owned = 1;
        return malloc(floats * sizeof(float));
    }
    float *bigger = malloc(floats * sizeof(float));
    if (!bigger)
        return NULL;
    if (pthread_setspecific(s_scratch_key, bigger) != 0) {
        *owned = 1; /* the old block stays kept */
        return bigger;
    }
    free(s_scratch.buf);
    s_scratch.buf = bigger;
    s_scratch.floats = floats;
    return bigger;
}

/* Floats of a worker's slice: whole cache lines, so workers' slices never
 * share one. */
static size_t s_slice_floats(size_t floats)
{
    const size_t line = 64 / sizeof(float);
    return (floats + line - 1) / line * line;
}

/* A worker's selection state in floats of its slice, whole cache lines. */
static size_t s_select_floats(size_t queries, size_t keep)
{
    return s_slice_floats((s_select_size(queries, keep) + sizeof(float) - 1) / sizeof(float));
}

/* Copies a sorted list of keep entries to query q's output row, padding to k. */
static void s_write_result(const search_job_t *job, size_t q, const float *d, const uint64_t *ids)
{
    uint64_t *out_ids = job->ids + q * job->k;
    if (job->keep > 0) /* an empty store passes no lists */
        memcpy(out_ids, ids, job->keep * sizeof(uint64_t));
    for (size_t j = job->keep; j < job->k; j++)
        out_ids[j] = TOPK_ID_NONE;
    if (!job->dists)
        return;
    float *out_d = job->dists + q * job->k;
    if (job->keep > 0)
        memcpy(out_d, d, job->keep * sizeof(float));
    for (size_t j = job->keep; j < job->k; j++)
        out_d[j] = INFINITY;
}

/* ------------------------------------------------------------------------ */
/* Search: GEMM tiles                                                       */
/* ------------------------------------------------------------------------ */

#ifndef SHOAL_NO_BLAS
static pthread_once_t s_blas_once = PTHREAD_ONCE_INIT;

/* Our threads each run their own sgemm; OpenBLAS's pool would oversubscribe. */
static void s_blas_single_thread(void)
{
    openblas_set_num_threads(1);
}
#endif

/* dots[qi * rn + r] = q(q0 + qi) . x(r0 + r) for a qn x rn tile. */
static void s_tile_dots(const search_job_t *job, size_t q0, size_t qn, size_t r0, size_t rn,
                        float *dots)
{
    const float *q = job->queries + q0 * job->dim;
    const float *x = job->view->vecs + r0 * job->dim;
#ifndef SHOAL_NO_BLAS
    /* Q (qn x dim) times X^T: X is row-major rn x dim, i.e. X^T column-major. */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)qn, (int)rn, (int)job->dim, 1.0f,
                q, (int)job->dim, x, (int)job->dim, 0.0f, dots, (int)rn);
#else
    for (size_t qi = 0; qi < qn; qi++)
        job->kern->dot_batch(q + qi * job->dim, x, rn, job->dim, job->dim, dots + qi * rn);
#endif
}

/* The fused pass: one query's dots against rows [r0, r0 + rn) become its
 * distances, in place, and are offered to its list. */
static void s_tile_select(const search_job_t *job, size_t q, float *dots, size_t r0, size_t rn,
                          cand_list_t *list)
{
    if (job->metric == SHOAL_METRIC_L2) {
        const float *xn = job->view->norms_sq + r0;
        const float qn = job->qnorms_sq[q];
        for (size_t r = 0; r < rn; r++) {
            float d = qn + xn[r] - 2.0f * dots[r];
            dots[r] = d < 0.0f ? 0.0f : d; /* cancellation can dip below zero */
        }
    } else {
        const float offset = job->metric == SHOAL_METRIC_COSINE ? 1.0f : 0.0f;
        for (size_t r = 0; r < rn; r++)
            dots[r] = offset - dots[r];
    }
    s_offer(job, q, list, dots, r0, rn);
}

/* ------------------------------------------------------------------------ */
/* Search: rows split among threads (kernels, or GEMM for mid-size batches) */
/* ------------------------------------------------------------------------ */

static void s_kernels_main(void *arg)
{
    search_worker_t *w = arg;
    const search_job_t *job = w->job;
    const flat_view_t *view = job->view;
    const size_t dim = job->dim;

    s_select_begin(job, &w->sel, job->chunk_len);
    /* Block outside, queries inside: a block stays in cache for all of them. */
    for (size_t b0 = w->first; b0 < w->last; b0 += job->block_rows) {
        size_t bn = s_min(job->block_rows, w->last - b0);
        const float *rows = view->vecs + b0 * dim;
        for (size_t qi = 0; qi < job->chunk_len; qi++) {
            size_t qrow = job->chunk_first + qi;
            const float *q = job->queries + qrow * dim;
            float *d = w->buf;
            if (job->metric == SHOAL_METRIC_L2) {
                job->kern->l2sq_batch(q, rows, bn, dim, dim, d);
            } else {
                job->kern->dot_batch(q, rows, bn, dim, dim, d);
                float offset = job->metric == SHOAL_METRIC_COSINE ? 1.0f : 0.0f;
                for (size_t r = 0; r < bn; r++)
                    d[r] = offset - d[r];
            }
            s_offer(job, qrow, &w->sel.lists[qi], d, b0, bn);
        }
    }
    s_select_finish(job, &w->sel, job->chunk_first, job->chunk_len, w->first, w->last);
}

/*
 * GEMM over a thread's rows: row tile outside, query tiles inside, so each
 * row tile is packed by sgemm once per query tile of the chunk.
 */
static void s_rows_gemm_main(void *arg)
{
    search_worker_t *w = arg;
    const search_job_t *job = w->job;

    s_select_begin(job, &w->sel, job->chunk_len);
    for (size_t r0 = w->first; r0 < w->last; r0 += job->row_tile) {
        size_t rn = s_min(job->row_tile, w->last - r0);
        for (size_t t0 = 0; t0 < job->chunk_len; t0 += job->query_tile) {
            size_t qn = s_min(job->query_tile, job->chunk_len - t0);
            size_t q0 = job->chunk_first + t0;
            s_tile_dots(job, q0, qn, r0, rn, w->buf);
            for (size_t qi = 0; qi < qn; qi++)
                s_tile_select(job, q0 + qi, w->buf + qi * rn, r0, rn, &w->sel.lists[t0 + qi]);
        }
    }
    s_select_finish(job, &w->sel, job->chunk_first, job->chunk_len, w->first, w->last);
}

/*
 * Sizes the rows path within budget: caps *threads_p by the rows, sets the job's block and
 * tiles, and gives the queries per chunk (*chunk_p); returns each thread's scratch floats.
 */
static size_t s_rows_plan(search_job_t *job, size_t *threads_p, size_t budget, int gemm,
                          size_t *chunk_p)
{
    const size_t n = job->view->n, keep = job->keep;
    size_t threads = *threads_p;
    size_t max_threads = (n + S_ROWS_PER_THREAD_MIN - 1) / S_ROWS_PER_THREAD_MIN;
    if (threads > max_threads)
        threads = max_threads;
    if (threads < 1)
        threads = 1;
    /* No tile or block longer than a thread's share of the rows. */
    const size_t share_rows = (n + threads - 1) / threads;
    job->block_rows = s_min(share_rows, S_BLOCK_BYTES / (job->dim * sizeof(float)));
    if (job->block_rows < 1)
        job->block_rows = 1;
    job->query_tile = s_min(S_QUERY_TILE_MAX, job->nq);
    job->row_tile = s_min(share_rows, S_ROW_TILE_MAX);
    size_t buf_floats = gemm ? job->query_tile * job->row_tile : job->block_rows;
    /* Queries per chunk: all the threads' selection state within the budget. */
    size_t share = budget / threads;
    size_t fixed = buf_floats * sizeof(float) + s_select_size(0, keep);
    size_t chunk = share > fixed ? (share - fixed) / s_select_bytes(keep) : 0;
    chunk = chunk < 1 ? 1 : s_min(chunk, job->nq);
    if (gemm && chunk < job->query_tile) {
        /* A tiny budget: smaller tiles rather than more memory. */
        job->query_tile = chunk;
        job->row_tile = s_min(share_rows, S_ROW_TILE_MIN);
        buf_floats = job->query_tile * job->row_tile;
    }
    buf_floats = s_slice_floats(buf_floats);
    *threads_p = threads;
    *chunk_p = chunk;
    return buf_floats;
}

/*
 * Rows split among threads, every thread scanning its rows for a chunk of
 * queries into its own heaps; the per-thread lists are then merged. One
 * query uses every core. gemm selects the scan: batch kernels, or GEMM tiles.
 */
static int s_search_rows(search_job_t *job, size_t threads, size_t budget, int gemm,
                         shoal_err_t *err)
{
    const size_t n = job->view->n, keep = job->keep;
    size_t chunk;
    size_t buf_floats = s_rows_plan(job, &threads, budget, gemm, &chunk);

    /* Each worker's slice: its tile or block, then its selection state. */
    const size_t slice = buf_floats + s_select_floats(chunk, keep);
    int rc = SHOAL_OK, tiles_owned = 0;
    float *tiles = s_scratch_get(slice * threads, &tiles_owned);
    float *merged_d = malloc(job->k * sizeof(float));
    uint64_t *merged_ids = malloc(job->k * sizeof(uint64_t));
    const float **list_d = malloc(threads * sizeof *list_d);
    const uint64_t **list_ids = malloc(threads * sizeof *list_ids);
    size_t *list_len = malloc(threads * sizeof *list_len);
    search_worker_t *workers = calloc(threads, sizeof *workers);
    size_t nworkers = 0;
    if (!tiles || !merged_d || !merged_ids || !list_d || !list_ids || !list_len || !workers)
        goto fail_nomem;
    for (; nworkers < threads; nworkers++) {
        search_worker_t *w = &workers[nworkers];
        w->job = job;
        w->first = parfor_split(n, threads, nworkers);
        w->last = parfor_split(n, threads, nworkers + 1);
        w->buf = tiles + nworkers * slice;
        s_select_carve(&w->sel, chunk, keep, (char *)(w->buf + buf_floats));
        list_len[nworkers] = keep;
    }

    log_debug("flat_search: %s over rows, %zu queries x %zu rows, k=%zu, %zu threads, chunks "
              "of %zu",
              gemm ? "gemm" : "kernels", job->nq, n, job->k, threads, chunk);
#ifndef SHOAL_NO_BLAS
    if (gemm)
        pthread_once(&s_blas_once, s_blas_single_thread);
#endif
    for (size_t q0 = 0; q0 < job->nq; q0 += chunk) {
        job->chunk_first = q0;
        job->chunk_len = s_min(chunk, job->nq - q0);
        parfor_each(workers, sizeof *workers, nworkers, gemm ? s_rows_gemm_main : s_kernels_main);
        for (size_t qi = 0; qi < job->chunk_len; qi++) {
            for (size_t t = 0; t < nworkers; t++) {
                list_d[t] = workers[t].sel.dists + qi * keep;
                list_ids[t] = workers[t].sel.ids + qi * keep;
            }
            topk_merge(list_d, list_ids, list_len, nworkers, keep, merged_d, merged_ids);
            s_write_result(job, q0 + qi, merged_d, merged_ids);
        }
    }
    goto done;

fail_nomem:
    rc = shoal_err_set(err, SHOAL_ENOMEM,
                       "flat_search: out of memory for %zu threads' heaps (k=%zu, %zu queries)",
                       threads, job->k, chunk);
done:
    if (tiles_owned)
        free(tiles);
    free(workers);
    free(list_len);
    free(list_ids);
    free(list_d);
    free(merged_ids);
    free(merged_d);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Search: query tiles split among threads, GEMM per tile                   */
/* ------------------------------------------------------------------------ */

static void s_tiled_main(void *arg)
{
    search_worker_t *w = arg;
    const search_job_t *job = w->job;
    const size_t n = job->view->n, keep = job->keep;

    for (size_t tile = w->first; tile < w->last; tile++) {
        size_t q0 = tile * job->query_tile;
        size_t qn = s_min(job->query_tile, job->nq - q0);
        s_select_begin(job, &w->sel, qn);
        for (size_t r0 = 0; r0 < n; r0 += job->row_tile) {
            size_t rn = s_min(job->row_tile, n - r0);
            s_tile_dots(job, q0, qn, r0, rn, w->buf);
            for (size_t qi = 0; qi < qn; qi++)
                s_tile_select(job, q0 + qi, w->buf + qi * rn, r0, rn, &w->sel.lists[qi]);
        }
        s_select_finish(job, &w->sel, q0, qn, 0, n);
        for (size_t qi = 0; qi < qn; qi++)
            s_write_result(job, q0 + qi, w->sel.dists + qi * keep, w->sel.ids + qi * keep);
    }
}

/* Query tiles split among threads: for batches with a full tile per thread. */
static int s_search_tiled(search_job_t *job, size_t threads, size_t budget, shoal_err_t *err)
{
    const size_t n = job->view->n, keep = job->keep, nq = job->nq;
    if (threads > nq)
        threads = nq;
    /* Every thread gets a tile when there are enough queries. */
    size_t qt = s_min(S_QUERY_TILE_MAX, (nq + threads - 1) / threads);
    size_t share = budget / threads;
    size_t per_query = s_select_bytes(keep);
    /* Heaps take at most half a thread's share; the tile gets the rest. */
    qt = s_min(qt, share / 2 / per_query);
    if (qt < 1)
        qt = 1;
    size_t left = share > qt * per_query ? share - qt * per_query : 0;
    size_t rt = left / (qt * sizeof(float));
    rt = rt < S_ROW_TILE_MIN ? S_ROW_TILE_MIN : rt > S_ROW_TILE_MAX ? S_ROW_TILE_MAX : rt;
    rt = s_min(rt, n);
    job->query_tile = qt;
    job->row_tile = rt;
    size_t ntiles = (nq + qt - 1) / qt;
    if (threads > ntiles)
        threads = ntiles;

#ifndef SHOAL_NO_BLAS
    pthread_once(&s_blas_once, s_blas_single_thread);
#endif
    int rc = SHOAL_OK, tiles_owned = 0;
    const size_t buf_floats = s_slice_floats(qt * rt);
    /* Each worker's slice: its tile, then its selection state. */
    const size_t slice = buf_floats + s_select_floats(qt, keep);
    float *tiles = s_scratch_get(slice * threads, &tiles_owned);
    search_worker_t *workers = calloc(threads, sizeof *workers);
    size_t nworkers = 0;
    if (!tiles || !workers)
        goto fail_nomem;
    for (; nworkers < threads; nworkers++) {
        search_worker_t *w = &workers[nworkers];
        w->job = job;
        w->first = parfor_split(ntiles, threads, nworkers);
        w->last = parfor_split(ntiles, threads, nworkers + 1);
        w->buf = tiles + nworkers * slice;
        s_select_carve(&w->sel, qt, keep, (char *)(w->buf + buf_floats));
    }
    log_debug("flat_search: %s tiles, %zu queries x %zu rows, k=%zu, %zu threads, tile %zu x %zu",
              flat_have_blas() ? "gemm" : "kernel", nq, n, job->k, threads, qt, rt);
    parfor_each(workers, sizeof *workers, nworkers, s_tiled_main);
    goto done;

fail_nomem:
    rc = shoal_err_set(err, SHOAL_ENOMEM,
                       "flat_search: out of memory for %zu threads' tiles (%zu x %zu, k=%zu)",
                       threads, qt, rt, job->k);
done:
    if (tiles_owned)
        free(tiles);
    free(workers);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Search: entry point                                                      */
/* ------------------------------------------------------------------------ */

static int s_check_search(const flat_view_t *view, const float *queries, size_t nq, size_t k,
                          const flat_search_opts_t *opts, const uint64_t *ids, shoal_err_t *err)
{
    if (!view || !queries || !ids)
        return shoal_err_set(err, SHOAL_EINVAL,
                             "flat_search: view, queries and ids must not be NULL");
    if (view->dim < 1)
        return shoal_err_set(err, SHOAL_EINVAL, "flat_search: view dim must be >= 1, got 0");
    if (!s_metric_valid(view->metric))
        return shoal_err_set(err, SHOAL_EINVAL, "flat_search: unknown metric %d",
                             (int)view->metric);
    if (view->n > 0 && (!view->vecs || !view->ids || !view->norms_sq))
        return shoal_err_set(err, SHOAL_EINVAL, "flat_search: view of %zu rows has NULL arrays",
                             view->n);
    if (k < 1 || k > FLAT_K_MAX)
        return shoal_err_set(err, SHOAL_EINVAL, "flat_search: k must be in 1..%d, got %zu",
                             FLAT_K_MAX, k);
    if (opts && (opts->force_path < 0 || opts->force_path > 2))
        return shoal_err_set(err, SHOAL_EINVAL,
                             "flat_search: force_path must be 0, 1 or 2, got %d",
                             opts->force_path);
    size_t size;
    if (s_mul_overflows(nq, view->dim, &size) || s_mul_overflows(size, sizeof(float), &size) ||
        s_mul_overflows(nq, k, &size) || s_mul_overflows(size, sizeof(uint64_t), &size) ||
        s_mul_overflows(view->n, view->dim, &size) ||
        s_mul_overflows(size, sizeof(float), &size))
        return shoal_err_set(err, SHOAL_EINVAL,
                             "flat_search: sizes overflow (nq=%zu n=%zu dim=%zu k=%zu)", nq,
                             view->n, view->dim, k);
    for (size_t q = 0; q < nq; q++) {
        shoal_err_t why;
        shoal_err_clear(&why);
        int rc = vec_check_engine_query(view->metric, queries + q * view->dim, view->dim, &why);
        if (rc != SHOAL_OK)
            return shoal_err_set(err, rc, "flat_search: query %zu %s", q, why.msg);
    }
    return SHOAL_OK;
}

/* The scan for this batch (1: kernels, 2: GEMM; opts may force one) and, for GEMM, at most as
 * many threads as have their minimum of work; *threads_p is their number. */
static int s_pick_path(const flat_view_t *view, size_t nq, const flat_search_opts_t *opts,
                       size_t *threads_p)
{
    const size_t dim = view->dim, n = view->n;
    size_t threads = opts && opts->threads ? opts->threads : parfor_cores();
    threads = s_min(threads, S_THREADS_MAX);
    int path = opts ? opts->force_path : 0;
    if (path == 0)
        path = nq >= FLAT_GEMM_MIN_QUERIES ? 2 : 1;
    if (path == 2 && dim > INT_MAX)
        path = 1; /* sgemm takes int sizes */
    if (path == 2) {
        /* Every GEMM thread gets its minimum of work, or fewer threads run.
         * The kernel path streams the rows from memory and gains from a
         * second core sooner; S_ROWS_PER_THREAD_MIN sizes it. */
        size_t thread_work = opts && opts->thread_work ? opts->thread_work
                                                       : FLAT_THREAD_WORK_DEFAULT;
        size_t work;
        if (s_mul_overflows(nq, n, &work) || s_mul_overflows(work, dim, &work))
            work = SIZE_MAX;
        threads = s_min(threads, work / thread_work);
        if (threads < 1)
            threads = 1;
    }
    *threads_p = threads;
    return path;
}

/* Queries as the kernels need them: unit length for cosine (a zero query
 * stays zero, at distance 1 from every row), and |q|^2 for the GEMM form
 * of L2 and every metric's error bound.
 * *copy_p (cosine) and *qnorms_p are the caller's to free. */
static int s_prepare_queries(search_job_t *job, float **copy_p, float **qnorms_p, shoal_err_t *err)
{
    const size_t nq = job->nq, dim = job->dim;
    float *copy = NULL, *qnorms = malloc(nq * sizeof(float));
    if (!qnorms)
        return shoal_err_set(err, SHOAL_ENOMEM, "flat_search: out of memory for %zu queries", nq);
    if (job->metric == SHOAL_METRIC_COSINE) {
        copy = malloc(nq * dim * sizeof(float));
        if (!copy) {
            free(qnorms);
            return shoal_err_set(err, SHOAL_ENOMEM, "flat_search: out of memory for %zu queries",
                                 nq);
        }
        memcpy(copy, job->queries, nq * dim * sizeof(float));
        for (size_t q = 0; q < nq; q++)
            (void)dist_normalize(copy + q * dim, dim); /* fails only for a zero query */
        job->queries = copy;
    }
    for (size_t q = 0; q < nq; q++)
        qnorms[q] = (float)s_norm_sq(job->queries + q * dim, dim);
    job->qnorms_sq = qnorms;
    *copy_p = copy;
    *qnorms_p = qnorms;
    return SHOAL_OK;
}

/*
 * How far the scan's distance d can be from the documented one, s_exact's
 * (see "Candidates"). u = FLT_EPSILON / 2 is float's unit roundoff;
 * gamma_m = m u / (1 - m u) bounds the error of an m-term sum or dot
 * product in float in any order, with or without FMA (Higham, Accuracy
 * and Stability of Numerical Algorithms, 2nd ed., sec. 3.1), so sgemm's
 * dot products and every kernel are covered. S = |q|^2 + |x|^2, which is
 * at least 2 |q||x| >= 2 sum |q_i x_i|. R is the real distance.
 *   GEMM, L2: |q|^2 and |x|^2 rounded to float (u S), q.x (gamma_dim
 *     |q||x|, times 2: gamma_dim S), their sum (u S) and the difference
 *     (u |d| <= 2u S): |d - R| <= (dim + 4) u S to first order. This is
 *     the bug's cause: it scales with the norms, not with the distance.
 *   Kernels, L2: a sum of squares of exact-sign terms, no cancellation:
 *     |d - R| <= gamma_(dim+2) R.
 *   Either path, IP and cosine: -q.x or 1 - q.x: gamma_dim S / 2 + u |d|.
 *   s_exact is one more computation of the same kind: for L2 within
 *     gamma_(dim+2) R of R, for IP and cosine gamma_dim S / 2 + u |d|.
 * Adding the scan's bound and s_exact's, every case is below
 * (dim + 4) u (S + |d|) plus second-order terms. The slack is twice that
 * and more, (dim + 8) FLT_EPSILON (S + |d|), which also covers rounding
 * lo and hi themselves; the kernels' L2 needs no S term. slack_min covers
 * the subnormal range, where rounding is absolute (FLT_TRUE_MIN / 2 per
 * operation) rather than relative. Sets job's slack_norms, slack_rel and slack_min.
 */
static void s_set_slack(search_job_t *job, int path)
{
    const size_t dim = job->dim;
    const float slack = (float)(dim + 8) * FLT_EPSILON;
    job->slack_norms = path == 1 && job->metric == SHOAL_METRIC_L2 ? 0.0f : slack;
    job->slack_rel = slack;
    job->slack_min = (float)(dim + 8) * FLT_MIN;
}

int flat_search(const flat_view_t *view, const float *queries, size_t nq, size_t k,
                const flat_search_opts_t *opts, uint64_t *ids, float *dists, shoal_err_t *err)
{
    int rc = s_check_search(view, queries, nq, k, opts, ids, err);
    if (rc != SHOAL_OK || nq == 0)
        return rc;
    const size_t dim = view->dim, n = view->n;
    search_job_t job = {
        .view = view,
        .kern = dist_kernels(),
        .queries = queries,
        .nq = nq,
        .dim = dim,
        .metric = view->metric,
        .k = k,
        .keep = s_min(k, n),
        .cap = s_cand_cap(s_min(k, n)),
        .ids = ids,
        .dists = dists,
    };
    if (n == 0) {
        for (size_t q = 0; q < nq; q++)
            s_write_result(&job, q, NULL, NULL);
        return SHOAL_OK;
    }

    size_t threads;
    int path = s_pick_path(view, nq, opts, &threads);
    size_t budget = opts && opts->mem_budget ? opts->mem_budget : FLAT_MEM_BUDGET_DEFAULT;

    float *copy = NULL, *qnorms = NULL;
    if ((rc = s_prepare_queries(&job, &copy, &qnorms, err)) != SHOAL_OK)
        return rc;
    s_set_slack(&job, path);

    /* Splitting rows packs each row once per query tile overall instead of once
     * per thread, and measured faster on small and mid-size batches; splitting
     * queries needs no merge, whose serial cost grows with nq * k. */
    if (path == 2 && nq >= threads * S_QUERY_TILE_MAX * S_QUERY_SPLIT_TILES)
        rc = s_search_tiled(&job, threads, budget, err);
    else
        rc = s_search_rows(&job, threads, budget, path == 2, err);
    free(copy);
    free(qnorms);
    return rc;
}
