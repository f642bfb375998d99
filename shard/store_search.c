/*
 * store_search.c - shard_store_search: checks, the choice of mode, and the
 * three ways a batch is answered:
 *   - graph:  hnsw_search per query on opts.threads threads, each taking
 *             the next query (the graph allows concurrent searches and inserts);
 *             a filter is a callback over a hash set of the allow-list;
 *   - exact:  the exact engine (GPU or CPU GEMM + top-k) under the
 *             collection's engine read lock; for f16 / sq8 collections,
 *             which keep no float32 copy in RAM, hnsw_exact_search over
 *             the graph's codes, re-scoring from RocksDB what the error
 *             bound cannot rule out;
 *   - exact over an allow-list: distances from each query to just the
 *             allowed ids that are present (their float32 rows fetched from
 *             the graph, or RocksDB for f16 / sq8, a block at a time), top-k heaps per
 *             query; exact by construction, and cheap when the list is short.
 *
 * Mode auto. One graph search computes roughly ef * M0 distances (the paper's
 * layer-0 walk dominates); a filter that keeps a fraction f of the vectors
 * stretches that walk to about ef * M0 / f before ef survivors are found,
 * while exact search over the allowed ids costs f * count distances. Auto
 * therefore picks exact over the allow-list when nallowed^2 <= ef * M0 *
 * count, exact when the whole collection is no bigger than one graph search
 * (count <= ef * M0) or when the engine is on a GPU and the batch has at
 * least exact_min_batch queries, and the graph otherwise. The estimate is
 * deliberately crude; docs/performance.md has the measured crossover.
 */
#include "shard/store_private.h"

#include "common/distance.h"
#include "common/flat.h"
#include "common/parfor.h"
#include "common/topk.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* Every k the store accepts, each engine it runs takes. */
_Static_assert(SHARD_STORE_K_MAX <= HNSW_K_MAX, "the graph takes the store's k");
_Static_assert(SHARD_STORE_K_MAX <= FLAT_K_MAX, "the exact engine takes the store's k");
_Static_assert(WIRE_MAX_K_MAX <= SHARD_STORE_K_MAX, "the store takes every k --max-k allows");
/* A thread gets at least this many queries of a graph batch. */
#define S_QUERIES_PER_THREAD 4
/* Allowed vectors fetched per block in exact-over-allow-list search. */
#define S_BLOCK_BYTES (4u << 20)
/* Heap storage per thread in exact-over-allow-list search. */
#define S_HEAP_BYTES (16u << 20)

typedef struct s_job s_job_t;
typedef int (*s_part_fn)(s_job_t *job, size_t q0, size_t q1, shoal_err_t *err);

struct s_job {
    shard_store_t *store;        /* for float32 rows from RocksDB (f16 / sq8 collections) */
    shard_coll_t *coll;          /* the collection searched */
    const float *queries;        /* nq x dim */
    size_t k;                    /* results per query */
    size_t ef;                   /* graph candidates */
    const idmap_t *filter;       /* allow-list as a set, or NULL */
    const uint64_t *allowed;     /* allowed ids present (exact over allow-list) */
    size_t nallowed;             /* how many */
    uint64_t *ids;               /* nq x k out */
    float *dists;                /* nq x k out */
    int *busy;                   /* quick search: the graph would have waited (hnsw.h) */
};

/* How a batch's queries are split over the threads. */
typedef enum {
    S_SPLIT_RANGES, /* contiguous ranges, one per thread: parts that stream blocks per range */
    S_SPLIT_CLAIM   /* one query at a time from a shared counter: independent queries */
} s_split_t;

typedef struct {
    atomic_size_t next; /* S_SPLIT_CLAIM: the next query no part has taken */
    atomic_int failed;  /* a part failed: the others take no more */
} s_claims_t;

typedef struct {
    s_job_t *job;       /* shared work */
    s_part_fn fn;       /* what to run */
    size_t q0, q1;      /* S_SPLIT_RANGES: this part's queries; S_SPLIT_CLAIM: [0, nq) */
    s_claims_t *claims; /* S_SPLIT_CLAIM: shared; NULL for ranges */
    int rc;             /* its result */
    size_t failed_q;    /* where it failed: the first query of the range it ran */
    shoal_err_t err;    /* its error */
} s_part_t;

static void s_part_main(void *item)
{
    s_part_t *part = item;
    shoal_err_clear(&part->err);
    if (!part->claims) {
        part->failed_q = part->q0;
        part->rc = part->fn(part->job, part->q0, part->q1, &part->err);
        return;
    }
    while (!atomic_load(&part->claims->failed)) {
        size_t q = atomic_fetch_add(&part->claims->next, 1);
        if (q >= part->q1)
            return;
        part->rc = part->fn(part->job, q, q + 1, &part->err);
        if (part->rc) {
            part->failed_q = q;
            atomic_store(&part->claims->failed, 1);
            return;
        }
    }
}

/*
 * Runs fn over [0, nq) on up to `threads` threads (parfor: the calling thread
 * is one), at least per_thread queries a thread, split as `split` says. A
 * graph walk or a code scan takes the same time wherever it runs, so those
 * claim queries one at a time: with contiguous halves a batch ended with its
 * slower half whenever another process took a core (the shard shares cores
 * with its peers and the coordinator). The error is that of the failing part
 * with the lowest query.
 */
static int s_run_parallel(s_job_t *job, s_part_fn fn, s_split_t split, size_t nq, size_t threads,
                          size_t per_thread, shoal_err_t *err)
{
    size_t t = nq / per_thread;
    if (t > threads)
        t = threads;
    if (t < 1)
        t = 1;
    if (t == 1)
        return fn(job, 0, nq, err);
    s_part_t *parts = calloc(t, sizeof *parts);
    if (!parts)
        return fn(job, 0, nq, err); /* no memory for threads: do it here */
    s_claims_t claims;
    atomic_init(&claims.next, 0);
    atomic_init(&claims.failed, 0);
    for (size_t i = 0; i < t; i++) {
        int claim = split == S_SPLIT_CLAIM;
        parts[i] = (s_part_t){.job = job,
                              .fn = fn,
                              .q0 = claim ? 0 : parfor_split(nq, t, i),
                              .q1 = claim ? nq : parfor_split(nq, t, i + 1),
                              .claims = claim ? &claims : NULL};
    }
    parfor_each(parts, sizeof *parts, t, s_part_main);
    const s_part_t *first = NULL;
    for (size_t i = 0; i < t; i++)
        if (parts[i].rc && (!first || parts[i].failed_q < first->failed_q))
            first = &parts[i];
    int rc = first ? first->rc : 0;
    if (first && err)
        *err = first->err;
    free(parts);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Graph                                                                    */
/* ------------------------------------------------------------------------ */

static int s_filter_keep(uint64_t id, void *arg)
{
    return idmap_contains(arg, id);
}

static int s_graph_part(s_job_t *job, size_t q0, size_t q1, shoal_err_t *err)
{
    size_t dim = job->coll->dim, k = job->k;
    /* f16 / sq8: the walk's best candidates are re-ranked in float32 from RocksDB. */
    shard_row_ctx_t rows = {.store = job->store, .coll = job->coll};
    hnsw_search_opts_t o = {.k = k,
                            .ef = job->ef,
                            .filter = job->filter ? s_filter_keep : NULL,
                            .filter_arg = (void *)job->filter,
                            .rerank_fn = job->coll->storage != QUANT_F32 ? shard_row_source : NULL,
                            .rerank_ctx = &rows,
                            .busy = job->busy};
    for (size_t q = q0; q < q1; q++) {
        int rc = hnsw_search_with(job->coll->hnsw, job->queries + q * dim, &o, job->ids + q * k,
                                  job->dists + q * k, err);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* f16 / sq8 exact: the codes' scan with their error bound (hnsw_exact_search). */
static int s_codes_exact_part(s_job_t *job, size_t q0, size_t q1, shoal_err_t *err)
{
    size_t dim = job->coll->dim, k = job->k;
    shard_row_ctx_t rows = {.store = job->store, .coll = job->coll};
    hnsw_search_opts_t o = {.k = k, .rerank_fn = shard_row_source, .rerank_ctx = &rows};
    for (size_t q = q0; q < q1; q++) {
        int rc = hnsw_exact_search(job->coll->hnsw, job->queries + q * dim, &o, job->ids + q * k,
                                   job->dists + q * k, NULL, err);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* id's float32 row as the graph compares it (unit for cosine): from the graph
 * for f32, from RocksDB for f16 / sq8. 0 or SHOAL_ENOTFOUND (deleted). */
static int s_exact_row(const s_job_t *job, uint64_t id, float *out)
{
    const shard_coll_t *coll = job->coll;
    if (coll->storage == QUANT_F32)
        return hnsw_get(coll->hnsw, id, out, NULL);
    if (!hnsw_contains(coll->hnsw, id))
        return SHOAL_ENOTFOUND;
    int rc = shard_row_read(job->store, coll, id, out);
    if (rc == 0 && coll->metric == SHOAL_METRIC_COSINE && dist_normalize(out, coll->dim) != 0)
        rc = SHOAL_ENOTFOUND; /* cannot be: zero rows are refused at insert */
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Exact over an allow-list                                                 */
/* ------------------------------------------------------------------------ */

static int s_allowed_part(s_job_t *job, size_t q0, size_t q1, shoal_err_t *err)
{
    const shard_coll_t *coll = job->coll;
    size_t dim = coll->dim, k = job->k, nq = q1 - q0;
    const dist_kernels_t *kern = dist_kernels();
    size_t block = S_BLOCK_BYTES / (dim * sizeof(float));
    if (block < 1)
        block = 1;
    if (block > job->nallowed)
        block = job->nallowed ? job->nallowed : 1;
    size_t group = S_HEAP_BYTES / (k * sizeof(topk_item_t));
    if (group < 1)
        group = 1;
    if (group > nq)
        group = nq;

    float *rows = malloc(block * dim * sizeof *rows);
    uint64_t *row_ids = malloc(block * sizeof *row_ids);
    float *d = malloc(block * sizeof *d);
    float *qn = malloc(group * dim * sizeof *qn);
    topk_item_t *items = malloc(group * k * sizeof *items);
    topk_heap_t *heaps = malloc(group * sizeof *heaps);
    int rc = 0;
    if (!rows || !row_ids || !d || !qn || !items || !heaps) {
        rc = shoal_err_set(err, SHOAL_ENOMEM, "exact search over the allow-list: out of memory");
        goto done;
    }
    for (size_t g0 = q0; g0 < q1; g0 += group) {
        size_t ng = q1 - g0 < group ? q1 - g0 : group;
        for (size_t j = 0; j < ng; j++) {
            topk_heap_init(&heaps[j], items + j * k, k);
            memcpy(qn + j * dim, job->queries + (g0 + j) * dim, dim * sizeof *qn);
            /* The graph's vectors are unit length for cosine: so is the query,
             * and the distance is 1 - dot. Zero queries were refused before. */
            if (coll->metric == SHOAL_METRIC_COSINE)
                dist_normalize(qn + j * dim, dim);
        }
        for (size_t b0 = 0; b0 < job->nallowed; b0 += block) {
            size_t nb = 0;
            for (size_t i = b0; i < job->nallowed && i < b0 + block; i++) {
                /* Deleted since the list was made: skip it. */
                if (s_exact_row(job, job->allowed[i], rows + nb * dim) == 0)
                    row_ids[nb++] = job->allowed[i];
            }
            for (size_t j = 0; j < ng; j++) {
                const float *q = qn + j * dim;
                if (coll->metric == SHOAL_METRIC_L2) {
                    kern->l2sq_batch(q, rows, nb, dim, dim, d);
                } else {
                    kern->dot_batch(q, rows, nb, dim, dim, d);
                    float base = coll->metric == SHOAL_METRIC_IP ? 0.0f : 1.0f;
                    for (size_t i = 0; i < nb; i++)
                        d[i] = base - d[i];
                }
                for (size_t i = 0; i < nb; i++)
                    topk_heap_push(&heaps[j], d[i], row_ids[i]);
            }
        }
        for (size_t j = 0; j < ng; j++)
            topk_heap_extract(&heaps[j], job->dists + (g0 + j) * k, job->ids + (g0 + j) * k);
    }
done:
    free(rows);
    free(row_ids);
    free(d);
    free(qn);
    free(items);
    free(heaps);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Entry point                                                              */
/* ------------------------------------------------------------------------ */

/* Finite values; for cosine, not all zero. Names the query row. */
static int s_check_queries(const shard_coll_t *coll, const float *queries, size_t nq,
                           shoal_err_t *err)
{
    for (size_t q = 0; q < nq; q++) {
        int rc = shard_check_vector(coll, "query", q, queries + q * coll->dim, err);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/*
 * Stage 1 of a search, before any lock: the arguments, k, mode and ef
 * (0 becomes the store's default in *ef); an empty allow-list becomes no
 * filter in *filter.
 */
static int s_search_args(shard_store_t *store, const float *queries, size_t nq, size_t k,
                         wire_mode_t mode, size_t *ef, const uint64_t **filter, size_t nfilter,
                         const uint64_t *ids, const float *dists, shoal_err_t *err)
{
    if (!store || (nq && (!queries || !ids || !dists)) || (nfilter && !*filter))
        return shoal_err_set(err, SHOAL_EINVAL, "search: NULL argument");
    if (k < 1 || k > SHARD_STORE_K_MAX)
        return shoal_err_set(err, k < 1 ? SHOAL_EINVAL : SHOAL_ELIMIT,
                             "search: k must be in 1..%d, got %zu", SHARD_STORE_K_MAX, k);
    if (mode != WIRE_MODE_AUTO && mode != WIRE_MODE_HNSW && mode != WIRE_MODE_EXACT)
        return shoal_err_set(err, SHOAL_EINVAL, "search: unknown mode %d", (int)mode);
    if (nfilter == 0)
        *filter = NULL; /* an empty allow-list means no filter (as on the wire) */
    if (*ef == 0)
        *ef = store->opts.hnsw_ef;
    /* A candidate list is a size of work like k: beyond its bound, elimit
     * (the codec says the same of an ef beyond 32 bits). */
    if (*ef > HNSW_EF_MAX)
        return shoal_err_set(err, SHOAL_ELIMIT,
                             "search: \"ef\" must be %d..%d (0: the shard's default), got %zu",
                             HNSW_EF_MIN, HNSW_EF_MAX, *ef);
    return 0;
}

/*
 * Stage 2: the allow-list as a set (for the graph's callback) and as the
 * list of distinct allowed ids present now (for exact search over it).
 * *allowed is the caller's to free, set the caller's to idmap_fini.
 */
static int s_search_allowed(shard_coll_t *coll, const uint64_t *filter, size_t nfilter,
                            idmap_t *set, uint64_t **allowed, size_t *nallowed, shoal_err_t *err)
{
    *allowed = malloc((nfilter ? nfilter : 1) * sizeof **allowed);
    if (!*allowed || idmap_set_init(set, nfilter))
        return shoal_err_set(err, SHOAL_ENOMEM, "search: out of memory for a filter of %zu ids",
                             nfilter);
    for (size_t i = 0; i < nfilter; i++)
        if (idmap_add(set, filter[i]) && hnsw_contains(coll->hnsw, filter[i]))
            (*allowed)[(*nallowed)++] = filter[i];
    return 0;
}

/* Stage 3: exact search or the graph (see the top of the file). */
static int s_search_choose_exact(shard_store_t *store, shard_coll_t *coll, size_t nq, size_t k,
                                 wire_mode_t mode, size_t ef, int filtered, size_t nallowed)
{
    size_t count = hnsw_count(coll->hnsw);
    double graph_cost = (double)(ef > k ? ef : k) * (double)(2 * coll->M);
    if (mode == WIRE_MODE_EXACT)
        return 1;
    if (mode == WIRE_MODE_HNSW)
        return 0;
    if (filtered)
        return (double)nallowed * (double)nallowed <= graph_cost * (double)count;
    return (double)count <= graph_cost || (coll->on_gpu && nq >= store->opts.exact_min_batch);
}

/* Stage 4: run the search chosen: exact over the allow-list or the codes, the engine, the graph. */
static int s_search_run(s_job_t *job, int exact, size_t nq, shoal_err_t *err)
{
    shard_store_t *store = job->store;
    shard_coll_t *coll = job->coll;
    int rc;
    if (exact && job->filter) {
        rc = s_run_parallel(job, s_allowed_part, S_SPLIT_RANGES, nq, store->opts.threads,
                            S_QUERIES_PER_THREAD, err);
    } else if (exact && !coll->engine) {
        rc = s_run_parallel(job, s_codes_exact_part, S_SPLIT_CLAIM, nq, store->opts.threads,
                            S_QUERIES_PER_THREAD, err);
    } else if (exact) {
        pthread_rwlock_rdlock(&coll->engine_lock);
        rc = knn_engine_search(coll->engine, job->queries, nq, job->k, job->ids, job->dists, err);
        pthread_rwlock_unlock(&coll->engine_lock);
    } else {
        rc = s_run_parallel(job, s_graph_part, S_SPLIT_CLAIM, nq, store->opts.threads,
                            S_QUERIES_PER_THREAD, err);
    }
    if (rc)
        shoal_err_prefix(err, "search \"%s\"", coll->name);
    return rc;
}

/*
 * A quick search's bounds (shard_store_search_quick): NULL for a plain
 * search. *deferred = 1 when the search is not quick or would wait.
 */
typedef struct {
    size_t ef_max; /* largest ef run */
    int *deferred; /* out */
} s_quick_t;

/* The collection's read lock: taken, or for a quick search tried (0: busy). */
static int s_colls_rdlock(shard_store_t *store, const s_quick_t *quick)
{
    if (!quick) {
        pthread_rwlock_rdlock(&store->colls_lock);
        return 1;
    }
    return pthread_rwlock_tryrdlock(&store->colls_lock) == 0;
}

/* A quick search runs only one float32 graph walk, unfiltered, of ef <= ef_max. */
static int s_quick_fits(const s_quick_t *quick, const shard_coll_t *coll, size_t nq, size_t ef,
                        int exact, int filtered)
{
    return nq == 1 && !exact && !filtered && coll->storage == QUANT_F32 && ef <= quick->ef_max;
}

static int s_search(shard_store_t *store, const char *name, const float *queries, size_t nq,
                    size_t dim, size_t k, wire_mode_t mode, size_t ef, const uint64_t *filter,
                    size_t nfilter, uint64_t *ids, float *dists, wire_mode_t *used,
                    const s_quick_t *quick, shoal_err_t *err)
{
    int rc = s_search_args(store, queries, nq, k, mode, &ef, &filter, nfilter, ids, dists, err);
    if (rc)
        return rc;

    if (!s_colls_rdlock(store, quick)) {
        *quick->deferred = 1;
        return 0;
    }
    idmap_t set = {0};
    uint64_t *allowed = NULL;
    shard_coll_t *coll = shard_coll_find(store, name);
    if (!coll) {
        rc = shoal_err_set(err, SHOAL_ENOTFOUND, "collection \"%s\" not found",
                           name ? name : "(null)");
        goto done;
    }
    if (dim != coll->dim) {
        rc = shoal_err_set(err, SHOAL_EDIM, "collection \"%s\": expected dim %zu, got %zu",
                           coll->name, coll->dim, dim);
        goto done;
    }
    if ((rc = s_check_queries(coll, queries, nq, err)) != 0)
        goto done;
    size_t nallowed = 0;
    if (filter && (rc = s_search_allowed(coll, filter, nfilter, &set, &allowed, &nallowed, err)))
        goto done;
    int exact = s_search_choose_exact(store, coll, nq, k, mode, ef, filter != NULL, nallowed);
    if (quick && !s_quick_fits(quick, coll, nq, ef, exact, filter != NULL)) {
        *quick->deferred = 1;
        goto done;
    }
    if (used)
        *used = exact ? WIRE_MODE_EXACT : WIRE_MODE_HNSW;
    if (nq == 0)
        goto done;

    s_job_t job = {.store = store,
                   .coll = coll,
                   .queries = queries,
                   .k = k,
                   .ef = ef,
                   .filter = filter ? &set : NULL,
                   .allowed = allowed,
                   .nallowed = nallowed,
                   .ids = ids,
                   .dists = dists,
                   .busy = quick ? quick->deferred : NULL};
    rc = s_search_run(&job, exact, nq, err);
done:
    pthread_rwlock_unlock(&store->colls_lock);
    idmap_fini(&set);
    free(allowed);
    return rc;
}

int shard_store_search(shard_store_t *store, const char *name, const float *queries, size_t nq,
                       size_t dim, size_t k, wire_mode_t mode, size_t ef, const uint64_t *filter,
                       size_t nfilter, uint64_t *ids, float *dists, wire_mode_t *used,
                       shoal_err_t *err)
{
    return s_search(store, name, queries, nq, dim, k, mode, ef, filter, nfilter, ids, dists, used,
                    NULL, err);
}

int shard_store_search_quick(shard_store_t *store, const char *name, const float *query,
                             size_t dim, size_t k, wire_mode_t mode, size_t ef, size_t ef_max,
                             uint64_t *ids, float *dists, wire_mode_t *used, int *deferred,
                             shoal_err_t *err)
{
    *deferred = 0;
    s_quick_t quick = {.ef_max = ef_max, .deferred = deferred};
    return s_search(store, name, query, 1, dim, k, mode, ef, NULL, 0, ids, dists, used, &quick,
                    err);
}
