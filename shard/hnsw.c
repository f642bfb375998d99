/*
 * hnsw.c - HNSW construction and search (Malkov & Yashunin, TPAMI 2018).
 * See hnsw.h for the contract and hnsw_private.h for the layout and locks.
 *
 * Decisions that shape this file:
 *   - Storage grows in chunks that never move (see hnsw_private.h), so
 *     inserts may grow the index while searches run, with no lock that a
 *     search has to take. The alternative, one realloc'd array as in
 *     hnswlib, needs either a fixed capacity (rejected: the index has none)
 *     or a stop-the-world lock on every growth.
 *   - Link lists are read under the node's spin lock and copied out. Reading
 *     them unlocked (hnswlib's search path) is a data race in C11 terms and
 *     would let a search see a link before the linked node's vector is
 *     visible; the lock costs one uncontended atomic per expanded node.
 *   - The visited set is an epoch-tagged uint16 array per pooled scratch
 *     object: a search bumps the epoch instead of clearing the array, and
 *     clears it only when the epoch wraps (every 65535 searches).
 *   - New links use M on every layer (Algorithm 1: SELECT-NEIGHBORS(q, W, M));
 *     M0 = 2M only bounds layer-0 lists when a neighbour overflows.
 *   - Levels are drawn under `mu` from one RNG seeded by params.seed, in
 *     allocation order, so a single-threaded build is reproducible; with
 *     several threads the order of draws, hence the graph, may vary.
 *   - A search that started before the index grew skips nodes in slots
 *     beyond its visited array: those were inserted after it started.
 *   - Compressed storage (f16, sq8) changes what a block holds and which
 *     kernel scores a hop, nothing in the algorithms: the walk compares the
 *     float32 query with codes, selection compares codes with codes, and the
 *     search re-ranks its final pool in float32 from the caller's rows.
 *     Re-ranking runs after the read lock is released: the row source may
 *     be a disk read, and holding the lock through it would stall deletes.
 *     Construction on codes rather than on the float32 originals (which a
 *     compressed index does not keep) costs a little graph quality; the
 *     measured recall after re-ranking is in docs/performance.md.
 */
#define _GNU_SOURCE /* pthread_rwlockattr_setkind_np: a writer must not starve */

#include "shard/hnsw.h"

#include "common/log.h"
#include "common/parfor.h"
#include "common/topk.h"
#include "shard/hnsw_private.h"

#include <math.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Returned by s_insert_rd when the id is present: the caller upserts. */
#define S_EXISTS 1
/*
 * Compressed blocks are padded to this (hnsw_private.h: why not to 64).
 * Prefetching covers the code's first S_PREFETCH_MAX bytes.
 */
#define S_CODE_BLOCK_ALIGN 8
#define S_PREFETCH_MAX     256
/* Vectors up to this size are prepared on the stack. */
#define S_STACK_DIM 512

/* ------------------------------------------------------------------------ */
/* Node locks                                                               */
/* ------------------------------------------------------------------------ */

void hnsw_node_lock(hnsw_node_t *node)
{
    for (unsigned spins = 0;; spins++) {
        if (!atomic_exchange_explicit(&node->lock, 1, memory_order_acquire))
            return;
        while (atomic_load_explicit(&node->lock, memory_order_relaxed)) {
            if (++spins > 64)
                sched_yield();
        }
    }
}

void hnsw_node_unlock(hnsw_node_t *node)
{
    atomic_store_explicit(&node->lock, 0, memory_order_release);
}

size_t hnsw_links_copy(const hnsw_t *ix, uint32_t slot, int layer, uint32_t *out)
{
    hnsw_node_t *node = hnsw_node(ix, slot);
    hnsw_node_lock(node);
    const uint32_t *l = hnsw_links(ix, slot, layer);
    size_t n = l[0];
    memcpy(out, l + 1, n * sizeof(uint32_t));
    hnsw_node_unlock(node);
    return n;
}

/* ------------------------------------------------------------------------ */
/* Construction                                                             */
/* ------------------------------------------------------------------------ */

static size_t s_align(size_t n, size_t a)
{
    return (n + a - 1) / a * a;
}

/* Where the node header, the links and the code sit in a block (hnsw_private.h). */
static void s_layout(hnsw_t *ix)
{
    size_t links = (1 + ix->M0) * sizeof(uint32_t);
    if (ix->storage == QUANT_F32) {
        ix->off_node = 0;
        ix->off_links0 = sizeof(hnsw_node_t);
        ix->off_vec = s_align(ix->off_links0 + links, 16);
        ix->stride = s_align(ix->off_vec + ix->code_bytes, 16);
    } else {
        ix->off_vec = 0;
        ix->off_node = s_align(ix->code_bytes, 8);
        ix->off_links0 = ix->off_node + sizeof(hnsw_node_t);
        size_t end = ix->off_links0 + links;
        if (ix->storage == QUANT_SQ8) {
            ix->off_err = end;
            end += sizeof(float);
        }
        ix->stride = s_align(end, S_CODE_BLOCK_ALIGN);
    }
    ix->prefetch_bytes = ix->storage == QUANT_F32 ? 128 : ix->code_bytes;
    if (ix->prefetch_bytes > S_PREFETCH_MAX)
        ix->prefetch_bytes = S_PREFETCH_MAX;
    if (ix->prefetch_bytes > ix->code_bytes)
        ix->prefetch_bytes = ix->code_bytes;
}

hnsw_t *hnsw_alloc(size_t dim, shoal_metric_t metric, size_t M, size_t ef_construction,
                   uint64_t seed, quant_kind_t storage, quant_sq8_t **sq8, shoal_err_t *err)
{
    hnsw_t *ix = calloc(1, sizeof *ix);
    if (!ix) {
        if (sq8)
            quant_sq8_destroy(sq8);
        shoal_err_set(err, SHOAL_ENOMEM, "hnsw: out of memory allocating the index");
        return NULL;
    }
    ix->storage = storage;
    ix->code_bytes = quant_code_bytes(storage, dim);
    ix->qk = quant_kernels();
    if (sq8) {
        ix->sq8 = *sq8;
        *sq8 = NULL;
    }
    ix->dim = dim;
    ix->metric = metric;
    ix->M = M;
    ix->M0 = 2 * M;
    ix->ef_construction = ef_construction;
    ix->seed = seed;
    ix->level_mult = 1.0 / log((double)M);
    ix->kern = dist_kernels();
    s_layout(ix);
    atomic_init(&ix->top, hnsw_top_pack(-1, HNSW_SLOT_NONE));
    atomic_init(&ix->capacity, 0);
    atomic_init(&ix->count, 0);
    atomic_init(&ix->deletes, 0);
    atomic_init(&ix->upper_bytes, 0);
    atomic_init(&ix->pool_bytes, 0);
    shoal_rng_seed(&ix->rng, seed);

    ix->map_cap = 64;
    ix->map = malloc(ix->map_cap * sizeof *ix->map);
    if (!ix->map) {
        quant_sq8_destroy(&ix->sq8);
        free(ix);
        shoal_err_set(err, SHOAL_ENOMEM, "hnsw: out of memory allocating the id map");
        return NULL;
    }
    for (size_t i = 0; i < ix->map_cap; i++)
        ix->map[i] = HNSW_SLOT_NONE;

    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&ix->rw, &attr);
    pthread_rwlockattr_destroy(&attr);
    pthread_mutex_init(&ix->top_mu, NULL);
    pthread_mutex_init(&ix->mu, NULL);
    pthread_mutex_init(&ix->pool_mu, NULL);
    return ix;
}

hnsw_t *hnsw_new(const hnsw_params_t *params, shoal_err_t *err)
{
    if (!params) {
        shoal_err_set(err, SHOAL_EINVAL, "hnsw: params is NULL");
        return NULL;
    }
    size_t M = params->M ? params->M : HNSW_M_DEFAULT;
    size_t efc = params->ef_construction ? params->ef_construction : HNSW_EF_CONSTRUCTION_DEFAULT;
    if (params->dim < 1 || params->dim > HNSW_DIM_MAX) {
        shoal_err_set(err, SHOAL_EINVAL, "hnsw: dim must be in 1..%d, got %zu", HNSW_DIM_MAX,
                      params->dim);
        return NULL;
    }
    if ((int)params->metric < SHOAL_METRIC_L2 || (int)params->metric > SHOAL_METRIC_COSINE) {
        shoal_err_set(err, SHOAL_EINVAL, "hnsw: metric must be l2, ip or cosine, got %d",
                      (int)params->metric);
        return NULL;
    }
    if (M < HNSW_M_MIN || M > HNSW_M_MAX) {
        shoal_err_set(err, SHOAL_EINVAL, "hnsw: M must be in %d..%d, got %zu", HNSW_M_MIN,
                      HNSW_M_MAX, M);
        return NULL;
    }
    if (efc < HNSW_EF_CONSTRUCTION_MIN || efc > HNSW_EF_CONSTRUCTION_MAX) {
        shoal_err_set(err, SHOAL_EINVAL, "hnsw: ef_construction must be in %d..%d, got %zu",
                      HNSW_EF_CONSTRUCTION_MIN, HNSW_EF_CONSTRUCTION_MAX, efc);
        return NULL;
    }
    if ((int)params->storage < QUANT_F32 || (int)params->storage >= QUANT_KIND_COUNT) {
        shoal_err_set(err, SHOAL_EINVAL, "hnsw: storage must be f32, f16 or sq8 (0..2), got %d",
                      (int)params->storage);
        return NULL;
    }
    quant_sq8_t *sq8 = NULL;
    if (params->storage == QUANT_SQ8 && params->sq8) {
        if (quant_sq8_dim(params->sq8) != params->dim) {
            shoal_err_set(err, SHOAL_EINVAL, "hnsw: the sq8 quantizer has dim %zu, expected %zu",
                          quant_sq8_dim(params->sq8), params->dim);
            return NULL;
        }
        sq8 = quant_sq8_new(quant_sq8_offset(params->sq8), quant_sq8_scale(params->sq8),
                            params->dim, err);
        if (!sq8)
            return NULL;
    }
    return hnsw_alloc(params->dim, params->metric, M, efc, params->seed, params->storage, &sq8,
                      err);
}

static void s_scratch_free(hnsw_scratch_t *scr)
{
    free(scr->tags);
    free(scr->cand);
    free(scr->res);
    free(scr->work);
    free(scr->items);
    free(scr->query);
    free(scr->row);
    free(scr->pool_ids);
    free(scr);
}

void hnsw_destroy(hnsw_t **index_p)
{
    if (!index_p || !*index_p)
        return;
    hnsw_t *ix = *index_p;
    for (size_t s = 0; s < ix->nslots; s++)
        free(hnsw_node(ix, (uint32_t)s)->upper);
    for (size_t c = 0; c < ix->nchunks; c++)
        free(ix->pages[c >> HNSW_PAGE_SHIFT][c & (HNSW_PAGE_CHUNKS - 1)]);
    for (size_t p = 0; p < HNSW_DIR_PAGES; p++)
        free(ix->pages[p]);
    for (size_t i = 0; i < ix->npool; i++)
        s_scratch_free(ix->pool[i]);
    free(ix->pool);
    free(ix->free_slots);
    free(ix->map);
    quant_sq8_destroy(&ix->sq8);
    pthread_rwlock_destroy(&ix->rw);
    pthread_mutex_destroy(&ix->top_mu);
    pthread_mutex_destroy(&ix->mu);
    pthread_mutex_destroy(&ix->pool_mu);
    free(ix);
    *index_p = NULL;
}

/* ------------------------------------------------------------------------ */
/* Id map: open addressing, linear probing, backward-shift deletion (no     */
/* tombstones, so probe lengths do not grow with deletes). Under mu.        */
/* ------------------------------------------------------------------------ */

static size_t s_hash(uint64_t id)
{
    id ^= id >> 33;
    id *= 0xff51afd7ed558ccdULL;
    id ^= id >> 33;
    id *= 0xc4ceb9fe1a85ec53ULL;
    id ^= id >> 33;
    return (size_t)id;
}

/* The id of a mapped slot: its node's. */
static inline uint64_t s_map_id(const hnsw_t *ix, hnsw_map_entry_t e)
{
    return hnsw_node(ix, e)->id;
}

uint32_t hnsw_map_find(const hnsw_t *ix, uint64_t id)
{
    size_t mask = ix->map_cap - 1;
    for (size_t i = s_hash(id) & mask;; i = (i + 1) & mask) {
        if (ix->map[i] == HNSW_SLOT_NONE)
            return HNSW_SLOT_NONE;
        if (s_map_id(ix, ix->map[i]) == id)
            return ix->map[i];
    }
}

static void s_map_place(const hnsw_t *ix, hnsw_map_entry_t *map, size_t cap, uint64_t id,
                        uint32_t slot)
{
    size_t mask = cap - 1;
    size_t i = s_hash(id) & mask;
    while (map[i] != HNSW_SLOT_NONE && s_map_id(ix, map[i]) != id)
        i = (i + 1) & mask;
    map[i] = slot;
}

int hnsw_map_put(hnsw_t *ix, uint64_t id, uint32_t slot)
{
    /* Load factor <= 1/2 keeps linear probes short. */
    if ((ix->map_count + 1) * 2 > ix->map_cap) {
        size_t cap = ix->map_cap * 2;
        hnsw_map_entry_t *map = malloc(cap * sizeof *map);
        if (!map)
            return SHOAL_ENOMEM;
        for (size_t i = 0; i < cap; i++)
            map[i] = HNSW_SLOT_NONE;
        for (size_t i = 0; i < ix->map_cap; i++) {
            if (ix->map[i] != HNSW_SLOT_NONE)
                s_map_place(ix, map, cap, s_map_id(ix, ix->map[i]), ix->map[i]);
        }
        free(ix->map);
        ix->map = map;
        ix->map_cap = cap;
    }
    if (hnsw_map_find(ix, id) == HNSW_SLOT_NONE)
        ix->map_count++;
    s_map_place(ix, ix->map, ix->map_cap, id, slot);
    return 0;
}

void hnsw_map_remove(hnsw_t *ix, uint64_t id)
{
    size_t mask = ix->map_cap - 1;
    size_t i = s_hash(id) & mask;
    for (;;) {
        if (ix->map[i] == HNSW_SLOT_NONE)
            return;
        if (s_map_id(ix, ix->map[i]) == id)
            break;
        i = (i + 1) & mask;
    }
    /* Shift back every later entry of the run whose home is not in (i, j]. */
    for (size_t j = (i + 1) & mask; ix->map[j] != HNSW_SLOT_NONE; j = (j + 1) & mask) {
        size_t home = s_hash(s_map_id(ix, ix->map[j])) & mask;
        int stays = (i <= j) ? (i < home && home <= j) : (i < home || home <= j);
        if (!stays) {
            ix->map[i] = ix->map[j];
            i = j;
        }
    }
    ix->map[i] = HNSW_SLOT_NONE;
    ix->map_count--;
}

/* ------------------------------------------------------------------------ */
/* Slots and growth (under mu)                                              */
/* ------------------------------------------------------------------------ */

int hnsw_grow_to(hnsw_t *ix, size_t n)
{
    while (atomic_load(&ix->capacity) < n) {
        size_t c = ix->nchunks;
        size_t p = c >> HNSW_PAGE_SHIFT;
        if (p >= HNSW_DIR_PAGES)
            return SHOAL_ELIMIT;
        if (!ix->pages[p]) {
            ix->pages[p] = calloc(HNSW_PAGE_CHUNKS, sizeof(uint8_t *));
            if (!ix->pages[p])
                return SHOAL_ENOMEM;
        }
        size_t bytes = (size_t)HNSW_CHUNK_SLOTS * ix->stride;
        uint8_t *chunk = aligned_alloc(64, s_align(bytes, 64));
        if (!chunk)
            return SHOAL_ENOMEM;
        memset(chunk, 0, bytes);
        ix->pages[p][c & (HNSW_PAGE_CHUNKS - 1)] = chunk;
        ix->nchunks++;
        atomic_store(&ix->capacity, ix->nchunks * HNSW_CHUNK_SLOTS);
    }
    return 0;
}

int hnsw_free_reserve(hnsw_t *ix, size_t extra)
{
    if (ix->free_cap - ix->nfree >= extra)
        return 0;
    size_t cap = ix->free_cap ? ix->free_cap : 64;
    while (cap - ix->nfree < extra)
        cap *= 2;
    uint32_t *fs = realloc(ix->free_slots, cap * sizeof *fs);
    if (!fs)
        return SHOAL_ENOMEM;
    ix->free_slots = fs;
    ix->free_cap = cap;
    return 0;
}

uint32_t *hnsw_upper_alloc(hnsw_t *ix, int level)
{
    if (level <= 0)
        return NULL;
    size_t bytes = (size_t)level * (ix->M + 1) * sizeof(uint32_t);
    uint32_t *upper = calloc(1, bytes);
    if (upper)
        atomic_fetch_add(&ix->upper_bytes, bytes);
    return upper;
}

void hnsw_upper_free(hnsw_t *ix, hnsw_node_t *node)
{
    if (node->upper) {
        atomic_fetch_sub(&ix->upper_bytes, (size_t)node->level * (ix->M + 1) * sizeof(uint32_t));
        free(node->upper);
        node->upper = NULL;
    }
}

/* A level from the paper's distribution: floor(-ln(U) * mL). */
static int s_draw_level(hnsw_t *ix)
{
    double u = shoal_rng_uniform(&ix->rng);
    double l = -log(1.0 - u) * ix->level_mult;
    return l >= HNSW_LEVEL_DRAW_MAX ? HNSW_LEVEL_DRAW_MAX : (int)l;
}

/* ------------------------------------------------------------------------ */
/* Scratch pool                                                             */
/* ------------------------------------------------------------------------ */

static int s_reserve(void **buf, size_t *cap, size_t need, size_t elem, hnsw_t *ix,
                     hnsw_scratch_t *scr)
{
    if (*cap >= need)
        return 0;
    size_t ncap = *cap ? *cap : 64;
    while (ncap < need)
        ncap *= 2;
    void *p = realloc(*buf, ncap * elem);
    if (!p)
        return SHOAL_ENOMEM;
    atomic_fetch_add(&ix->pool_bytes, (ncap - *cap) * elem);
    scr->bytes += (ncap - *cap) * elem;
    *buf = p;
    *cap = ncap;
    return 0;
}

/* scr->row, the re-rank buffer, allocated on first use. */
static int s_scratch_row(hnsw_t *ix, hnsw_scratch_t *scr)
{
    if (scr->row)
        return 0;
    scr->row = malloc(ix->dim * sizeof(float));
    if (!scr->row)
        return SHOAL_ENOMEM;
    scr->bytes += ix->dim * sizeof(float);
    atomic_fetch_add(&ix->pool_bytes, ix->dim * sizeof(float));
    return 0;
}

hnsw_scratch_t *hnsw_scratch_get(hnsw_t *ix)
{
    hnsw_scratch_t *scr = NULL;
    pthread_mutex_lock(&ix->pool_mu);
    if (ix->npool)
        scr = ix->pool[--ix->npool];
    pthread_mutex_unlock(&ix->pool_mu);
    if (scr)
        return scr;
    scr = calloc(1, sizeof *scr);
    if (!scr)
        return NULL;
    scr->query = malloc(ix->dim * sizeof(float));
    if (!scr->query) {
        free(scr);
        return NULL;
    }
    scr->bytes = sizeof *scr + ix->dim * sizeof(float);
    atomic_fetch_add(&ix->pool_bytes, scr->bytes);
    return scr;
}

void hnsw_scratch_put(hnsw_t *ix, hnsw_scratch_t *scr)
{
    if (!scr)
        return;
    pthread_mutex_lock(&ix->pool_mu);
    if (ix->npool == ix->pool_cap) {
        size_t cap = ix->pool_cap ? ix->pool_cap * 2 : 8;
        hnsw_scratch_t **pool = realloc(ix->pool, cap * sizeof *pool);
        if (pool) {
            ix->pool = pool;
            ix->pool_cap = cap;
        }
    }
    if (ix->npool < ix->pool_cap) {
        ix->pool[ix->npool++] = scr;
        scr = NULL;
    }
    pthread_mutex_unlock(&ix->pool_mu);
    if (scr) { /* no room to keep it: drop it */
        atomic_fetch_sub(&ix->pool_bytes, scr->bytes);
        s_scratch_free(scr);
    }
}

int hnsw_scratch_begin(hnsw_t *ix, hnsw_scratch_t *scr)
{
    size_t cap = atomic_load(&ix->capacity);
    if (scr->tags_cap < cap) {
        uint16_t *tags = realloc(scr->tags, cap * sizeof *tags);
        if (!tags)
            return SHOAL_ENOMEM;
        memset(tags + scr->tags_cap, 0, (cap - scr->tags_cap) * sizeof *tags);
        atomic_fetch_add(&ix->pool_bytes, (cap - scr->tags_cap) * sizeof *tags);
        scr->bytes += (cap - scr->tags_cap) * sizeof *tags;
        scr->tags = tags;
        scr->tags_cap = cap;
    }
    if (++scr->epoch == 0) {
        memset(scr->tags, 0, scr->tags_cap * sizeof *scr->tags);
        scr->epoch = 1;
    }
    return 0;
}

/* Marks slot visited; 1 when it was not yet (and lies within the tags). */
static inline int s_visit(hnsw_scratch_t *scr, uint32_t slot)
{
    if (slot >= scr->tags_cap || scr->tags[slot] == scr->epoch)
        return 0;
    scr->tags[slot] = scr->epoch;
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Candidate heaps                                                          */
/* ------------------------------------------------------------------------ */

static inline int s_cand_less(hnsw_cand_t a, hnsw_cand_t b)
{
    return a.dist < b.dist || (a.dist == b.dist && a.slot < b.slot);
}

/* max != 0: max-heap (root is the worst); else min-heap (root is the best). */
static inline int s_above(int max, hnsw_cand_t a, hnsw_cand_t b)
{
    return max ? s_cand_less(b, a) : s_cand_less(a, b);
}

static void s_heap_push(hnsw_cand_t *h, size_t *n, hnsw_cand_t c, int max)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!s_above(max, c, h[parent]))
            break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = c;
}

static hnsw_cand_t s_heap_pop(hnsw_cand_t *h, size_t *n, int max)
{
    hnsw_cand_t top = h[0];
    hnsw_cand_t last = h[--(*n)];
    size_t i = 0, count = *n;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= count)
            break;
        if (child + 1 < count && s_above(max, h[child + 1], h[child]))
            child++;
        if (!s_above(max, h[child], last))
            break;
        h[i] = h[child];
        i = child;
    }
    if (count)
        h[i] = last;
    return top;
}

static int s_cand_cmp(const void *a, const void *b)
{
    hnsw_cand_t x = *(const hnsw_cand_t *)a, y = *(const hnsw_cand_t *)b;
    return s_cand_less(x, y) ? -1 : s_cand_less(y, x) ? 1 : 0;
}

void hnsw_cand_sort(hnsw_cand_t *c, size_t n)
{
    /* Insertion sort for the short lists of pruning; qsort beyond. */
    if (n > 48) {
        qsort(c, n, sizeof *c, s_cand_cmp);
        return;
    }
    for (size_t i = 1; i < n; i++) {
        hnsw_cand_t x = c[i];
        size_t j = i;
        while (j > 0 && s_cand_less(x, c[j - 1])) {
            c[j] = c[j - 1];
            j--;
        }
        c[j] = x;
    }
}

/* ------------------------------------------------------------------------ */
/* Search primitives                                                        */
/* ------------------------------------------------------------------------ */

/*
 * The lines of the code's first prefetch_bytes (f32: 128, its first two
 * lines, the hardware prefetcher following on; compressed: all of it up to
 * S_PREFETCH_MAX), the last one included when the code does not start a line.
 */
static inline void s_prefetch_vec(const hnsw_t *ix, uint32_t slot)
{
    const char *v = (const char *)hnsw_code(ix, slot);
    const char *last = v + ix->prefetch_bytes - 1;
    for (const char *p = v; p < last; p += 64)
        __builtin_prefetch(p);
    __builtin_prefetch(last);
}

void hnsw_greedy(const hnsw_t *ix, const hnsw_query_t *q, int layer, uint32_t *cur,
                 float *cur_dist)
{
    uint32_t nb[HNSW_LINKS_MAX];
    for (int changed = 1; changed;) {
        changed = 0;
        size_t n = hnsw_links_copy(ix, *cur, layer, nb);
        if (n)
            s_prefetch_vec(ix, nb[0]);
        for (size_t i = 0; i < n; i++) {
            if (i + 1 < n)
                s_prefetch_vec(ix, nb[i + 1]);
            float d = hnsw_query_dist(ix, q, nb[i]);
            if (d < *cur_dist) {
                *cur_dist = d;
                *cur = nb[i];
                changed = 1;
            }
        }
    }
}

long hnsw_search_layer(hnsw_t *ix, hnsw_scratch_t *scr, const hnsw_query_t *q, const hnsw_cand_t *eps,
                       size_t neps, size_t ef, int layer, hnsw_filter_fn filter, void *arg)
{
    if (hnsw_scratch_begin(ix, scr) ||
        s_reserve((void **)&scr->res, &scr->res_cap, ef + 1, sizeof(hnsw_cand_t), ix, scr) ||
        s_reserve((void **)&scr->cand, &scr->cand_cap, neps + HNSW_LINKS_MAX + 64,
                  sizeof(hnsw_cand_t), ix, scr))
        return SHOAL_ENOMEM;
    size_t nc = 0, nr = 0;
    for (size_t i = 0; i < neps; i++) {
        if (!s_visit(scr, eps[i].slot))
            continue;
        s_heap_push(scr->cand, &nc, eps[i], 0);
        if (!filter || filter(hnsw_node(ix, eps[i].slot)->id, arg)) {
            s_heap_push(scr->res, &nr, eps[i], 1);
            if (nr > ef)
                s_heap_pop(scr->res, &nr, 1);
        }
    }

    uint32_t nb[HNSW_LINKS_MAX];
    while (nc) {
        hnsw_cand_t c = s_heap_pop(scr->cand, &nc, 0);
        /* Algorithm 2: stop when the nearest candidate is farther than the
         * farthest result (and the result list is full). */
        if (nr == ef && c.dist > scr->res[0].dist)
            break;
        size_t n = hnsw_links_copy(ix, c.slot, layer, nb);
        size_t m = 0;
        for (size_t i = 0; i < n; i++) {
            if (s_visit(scr, nb[i])) {
                s_prefetch_vec(ix, nb[i]);
                nb[m++] = nb[i];
            }
        }
        if (nc + m > scr->cand_cap &&
            s_reserve((void **)&scr->cand, &scr->cand_cap, nc + m, sizeof(hnsw_cand_t), ix, scr))
            return SHOAL_ENOMEM;
        for (size_t i = 0; i < m; i++) {
            float d = hnsw_query_dist(ix, q, nb[i]);
            if (nr < ef || d < scr->res[0].dist) {
                hnsw_cand_t e = {d, nb[i]};
                s_heap_push(scr->cand, &nc, e, 0);
                if (!filter || filter(hnsw_node(ix, nb[i])->id, arg)) {
                    s_heap_push(scr->res, &nr, e, 1);
                    if (nr > ef)
                        s_heap_pop(scr->res, &nr, 1);
                }
            }
        }
    }
    return (long)nr;
}

size_t hnsw_select(const hnsw_t *ix, const hnsw_cand_t *cands, size_t n, size_t m, uint32_t *out)
{
    size_t r = 0;
    if (n <= m) { /* room for all: nothing to choose between */
        for (size_t i = 0; i < n; i++)
            out[r++] = cands[i].slot;
        return r;
    }
    /* Algorithm 4: keep e when it is nearer to the base than to every node
     * kept so far, so links spread over directions instead of clustering. */
    for (size_t i = 0; i < n && r < m; i++) {
        int keep = 1;
        for (size_t j = 0; j < r; j++) {
            if (hnsw_slot_dist(ix, cands[i].slot, out[j]) < cands[i].dist) {
                keep = 0;
                break;
            }
        }
        if (keep)
            out[r++] = cands[i].slot;
    }
    return r;
}

int hnsw_link_add(const hnsw_t *ix, uint32_t from, uint32_t to, float d, int layer)
{
    int kept = 1;
    hnsw_node_t *node = hnsw_node(ix, from);
    size_t cap = hnsw_cap(ix, layer);
    hnsw_node_lock(node);
    uint32_t *l = hnsw_links(ix, from, layer);
    size_t n = l[0];
    for (size_t i = 0; i < n; i++) {
        if (l[1 + i] == to) {
            hnsw_node_unlock(node);
            return 1;
        }
    }
    if (n < cap) {
        l[1 + n] = to;
        l[0] = (uint32_t)(n + 1);
    } else {
        /* Algorithm 1's shrink step: re-select from the old links plus the
         * new one with the same heuristic. */
        hnsw_cand_t c[HNSW_LINKS_MAX + 1];
        for (size_t i = 0; i < n; i++) {
            c[i].slot = l[1 + i];
            c[i].dist = hnsw_slot_dist(ix, from, c[i].slot);
        }
        c[n].slot = to;
        c[n].dist = d;
        hnsw_cand_sort(c, n + 1);
        l[0] = (uint32_t)hnsw_select(ix, c, n + 1, cap, l + 1);
        kept = 0;
        for (size_t i = 0; i < l[0]; i++)
            kept |= l[1 + i] == to;
    }
    hnsw_node_unlock(node);
    return kept;
}

/* ------------------------------------------------------------------------ */
/* Insert (Algorithm 1)                                                     */
/* ------------------------------------------------------------------------ */

/*
 * An outlier far from everything loses every back-link to the heuristic
 * (each neighbour has nearer, better-spread links), leaving it with no way
 * in: searches could never return it. Then its nearest neighbour takes it in
 * place of that neighbour's farthest link, as the last resort.
 */
static void s_link_force(const hnsw_t *ix, uint32_t from, uint32_t to, int layer)
{
    hnsw_node_t *node = hnsw_node(ix, from);
    hnsw_node_lock(node);
    uint32_t *l = hnsw_links(ix, from, layer);
    size_t far = 0;
    float far_dist = -INFINITY;
    int present = 0;
    for (size_t i = 0; i < l[0]; i++) {
        present |= l[1 + i] == to;
        float d = hnsw_slot_dist(ix, from, l[1 + i]);
        if (d > far_dist) {
            far_dist = d;
            far = i;
        }
    }
    if (!present) {
        if (l[0] < hnsw_cap(ix, layer))
            l[1 + l[0]++] = to;
        else
            l[1 + far] = to;
    }
    hnsw_node_unlock(node);
}

/* One layer's links back to a node being inserted, published at the end. */
typedef struct {
    uint32_t n;                /* selected neighbours */
    uint32_t slot[HNSW_M_MAX]; /* their slots, nearest first */
    float dist[HNSW_M_MAX];    /* their distances to the new node */
} s_backlinks_t;

/* Reads the entry point for q of the given level into *max_level and *ep.
 * When q will be above it, takes top_mu (*holds_top 1 while still held);
 * when the index is empty, makes q the entry point and returns 1 (nothing to
 * link). Returns 0 otherwise. */
static inline int s_top_claim(hnsw_t *ix, uint32_t q, int level, int *max_level, uint32_t *ep,
                              int *holds_top)
{
    hnsw_top_unpack(atomic_load(&ix->top), max_level, ep);
    *holds_top = 0;
    if (level > *max_level) {
        /* q may become the entry point: keep others from changing it meanwhile. */
        pthread_mutex_lock(&ix->top_mu);
        *holds_top = 1;
        hnsw_top_unpack(atomic_load(&ix->top), max_level, ep);
        if (*ep == HNSW_SLOT_NONE) {
            atomic_store(&ix->top, hnsw_top_pack(level, q));
            pthread_mutex_unlock(&ix->top_mu);
            return 1;
        }
        if (level <= *max_level) {
            pthread_mutex_unlock(&ix->top_mu);
            *holds_top = 0;
        }
    }
    return 0;
}

/* Searches layer lc from the neps entry points in scr->work, keeps the found
 * nodes other than q in scr->work (nearest first), selects q's neighbours
 * into *b and links q to them. Returns how many were kept (the next layer's
 * entry points), or a negative error code. */
static inline long s_link_layer(hnsw_t *ix, hnsw_scratch_t *scr, uint32_t q,
                                const hnsw_query_t *v, size_t neps, int lc, s_backlinks_t *b)
{
    long nw = hnsw_search_layer(ix, scr, v, scr->work, neps, ix->ef_construction, lc, NULL, NULL);
    if (nw < 0)
        return nw;
    size_t w = 0;
    for (long i = 0; i < nw; i++) {
        if (scr->res[i].slot != q)
            scr->work[w++] = scr->res[i];
    }
    hnsw_cand_sort(scr->work, w);
    b->n = (uint32_t)hnsw_select(ix, scr->work, w, ix->M, b->slot);
    /* The distances of the selected are found again in work (sorted). */
    for (size_t i = 0, j = 0; i < b->n; i++) {
        while (scr->work[j].slot != b->slot[i])
            j++;
        b->dist[i] = scr->work[j].dist;
        hnsw_link_add(ix, q, b->slot[i], b->dist[i], lc);
    }
    return (long)w;
}

/* Adds the links back to q on layers 0..top_layer, bottom up, forcing one in
 * where every selected neighbour's list refused q. */
static inline void s_publish_backlinks(hnsw_t *ix, uint32_t q, const s_backlinks_t *back,
                                       int top_layer)
{
    for (int lc = 0; lc <= top_layer; lc++) {
        const s_backlinks_t *b = &back[lc];
        size_t kept = 0;
        for (size_t i = 0; i < b->n; i++)
            kept += hnsw_link_add(ix, b->slot[i], q, b->dist[i], lc);
        if (b->n && !kept)
            s_link_force(ix, b->slot[0], q, lc);
    }
}

/* Links the initialised node q of the given level into the graph. */
static int s_link_node(hnsw_t *ix, hnsw_scratch_t *scr, uint32_t q, int level,
                       const hnsw_query_t *v)
{
    s_backlinks_t local[2]; /* layers 0 and 1: nearly every node */
    s_backlinks_t *back = local;
    int max_level;
    uint32_t ep;
    int holds_top;
    if (s_top_claim(ix, q, level, &max_level, &ep, &holds_top))
        return 0;

    int rc = 0;
    uint32_t cur = ep;
    float cur_dist = hnsw_query_dist(ix, v, ep);
    for (int lc = max_level; lc > level; lc--)
        hnsw_greedy(ix, v, lc, &cur, &cur_dist);

    if (s_reserve((void **)&scr->work, &scr->work_cap, ix->ef_construction + 1, sizeof(hnsw_cand_t),
                  ix, scr)) {
        rc = SHOAL_ENOMEM;
        goto done;
    }
    scr->work[0].dist = cur_dist;
    scr->work[0].slot = cur;
    size_t neps = 1;

    /*
     * q's own links are set layer by layer on the way down, but the links
     * back to q (which make it reachable) wait until every layer is done.
     * Published layer by layer, q would be reachable on an upper layer while
     * its lower lists were still empty: a concurrent descent landing on q
     * there found no way on, and an insert searching through it linked its
     * node to the wrong region (seen as nodes reachable only at ef ~2000 in
     * about one concurrent build in seven; single-threaded builds never).
     */
    int top_layer = level < max_level ? level : max_level;
    if (top_layer + 1 > 2) {
        back = malloc((size_t)(top_layer + 1) * sizeof *back);
        if (!back) {
            rc = SHOAL_ENOMEM;
            goto done;
        }
    }
    for (int lc = top_layer; lc >= 0; lc--) {
        long w = s_link_layer(ix, scr, q, v, neps, lc, &back[lc]);
        if (w < 0) {
            rc = (int)w;
            goto done;
        }
        neps = (size_t)w;
    }
    s_publish_backlinks(ix, q, back, top_layer);
done:
    if (back != local)
        free(back);
    if (holds_top) {
        atomic_store(&ix->top, hnsw_top_pack(level, q));
        pthread_mutex_unlock(&ix->top_mu);
    }
    return rc;
}

/*
 * Inserts a prepared vector with the read (or write) lock held. Returns
 * S_EXISTS when id is present, for the caller to replace it.
 */
static int s_insert_rd(hnsw_t *ix, uint64_t id, const float *v, shoal_err_t *err)
{
    if (ix->storage == QUANT_SQ8 && !ix->sq8)
        return shoal_err_set(err, SHOAL_EINVAL,
                             "hnsw: sq8 index has no quantizer yet: pass params.sq8 or start "
                             "with hnsw_insert_batch, which trains one");
    hnsw_query_t hq;
    if (hnsw_query_init(ix, &hq, v))
        return shoal_err_set(err, SHOAL_ENOMEM, "hnsw: out of memory inserting id %llu",
                             (unsigned long long)id);
    pthread_mutex_lock(&ix->mu);
    if (hnsw_map_find(ix, id) != HNSW_SLOT_NONE) {
        pthread_mutex_unlock(&ix->mu);
        hnsw_query_fini(&hq);
        return S_EXISTS;
    }
    int rc = 0;
    uint32_t slot;
    int from_free = ix->nfree > 0;
    if (from_free) {
        slot = ix->free_slots[--ix->nfree];
    } else if (ix->nslots >= HNSW_SLOTS_MAX) {
        pthread_mutex_unlock(&ix->mu);
        hnsw_query_fini(&hq);
        return shoal_err_set(err, SHOAL_ELIMIT, "hnsw: index is full (%zu slots)", ix->nslots);
    } else if ((rc = hnsw_grow_to(ix, ix->nslots + 1)) != 0) {
        pthread_mutex_unlock(&ix->mu);
        hnsw_query_fini(&hq);
        return shoal_err_set(err, rc, "hnsw: growing the index past %zu slots", ix->nslots);
    } else {
        slot = (uint32_t)ix->nslots++;
    }
    int level = s_draw_level(ix);
    hnsw_node_t *node = hnsw_node(ix, slot);
    node->level = level;
    node->upper = hnsw_upper_alloc(ix, level);
    node->id = id; /* before hnsw_map_put: the map keys slots by their node's id */
    if ((level > 0 && !node->upper) || hnsw_map_put(ix, id, slot) != 0) {
        hnsw_upper_free(ix, node);
        node->level = -1;
        node->id = HNSW_ID_NONE;
        if (from_free)
            ix->free_slots[ix->nfree++] = slot; /* room: it came from there */
        else
            ix->nslots--; /* it was the last one handed out */
        pthread_mutex_unlock(&ix->mu);
        hnsw_query_fini(&hq);
        return shoal_err_set(err, SHOAL_ENOMEM, "hnsw: out of memory inserting id %llu",
                             (unsigned long long)id);
    }
    atomic_store(&node->lock, 0);
    hnsw_links(ix, slot, 0)[0] = 0;
    hnsw_encode(ix, slot, v);
    atomic_fetch_add(&ix->count, 1);
    pthread_mutex_unlock(&ix->mu);

    hnsw_scratch_t *scr = hnsw_scratch_get(ix);
    rc = scr ? s_link_node(ix, scr, slot, level, &hq) : SHOAL_ENOMEM;
    hnsw_scratch_put(ix, scr);
    hnsw_query_fini(&hq);
    if (rc)
        return shoal_err_set(err, rc, "hnsw: out of memory linking id %llu (stored, partly linked)",
                             (unsigned long long)id);
    return 0;
}

/* Inserts or replaces a prepared vector; takes the locks. */
static int s_insert_prepared(hnsw_t *ix, uint64_t id, const float *v, shoal_err_t *err)
{
    pthread_rwlock_rdlock(&ix->rw);
    int rc = s_insert_rd(ix, id, v, err);
    pthread_rwlock_unlock(&ix->rw);
    if (rc != S_EXISTS)
        return rc;
    /* Upsert: delete and insert again, alone in the index. */
    pthread_rwlock_wrlock(&ix->rw);
    uint32_t slot = hnsw_map_find(ix, id);
    rc = hnsw_delete_slots(ix, &slot, 1, NULL, err);
    if (rc == 0)
        rc = s_insert_rd(ix, id, v, err);
    pthread_rwlock_unlock(&ix->rw);
    if (rc == S_EXISTS)
        rc = shoal_err_set(err, SHOAL_EINTERNAL, "hnsw: id %llu still present after delete",
                           (unsigned long long)id);
    return rc;
}

int hnsw_prepare(const hnsw_t *ix, const float *vec, float *out, const char *what, size_t row,
                 int stored, shoal_err_t *err)
{
    for (size_t d = 0; d < ix->dim; d++) {
        if (!isfinite(vec[d]))
            return shoal_err_set(err, SHOAL_EINVAL, "hnsw: %s %zu has a non-finite value at %zu",
                                 what, row, d);
    }
    memcpy(out, vec, ix->dim * sizeof(float));
    if (ix->metric == SHOAL_METRIC_COSINE && dist_normalize(out, ix->dim) != 0)
        return shoal_err_set(err, SHOAL_EINVAL,
                             "hnsw: %s %zu has zero length, which cosine cannot use", what, row);
    if (stored && ix->storage == QUANT_F16) {
        for (size_t d = 0; d < ix->dim; d++) {
            if (fabsf(out[d]) >= QUANT_F16_OVERFLOW)
                return shoal_err_set(err, SHOAL_EINVAL,
                                     "hnsw: %s %zu dim %zu: %g overflows f16 (largest %g)", what,
                                     row, d, (double)out[d], (double)QUANT_F16_MAX);
        }
    }
    return 0;
}

int hnsw_insert(hnsw_t *index, uint64_t id, const float *vec, shoal_err_t *err)
{
    if (!index || !vec)
        return shoal_err_set(err, SHOAL_EINVAL, "hnsw_insert: index and vec must not be NULL");
    if (id == HNSW_ID_NONE)
        return shoal_err_set(err, SHOAL_EINVAL, "hnsw_insert: id %llu is reserved",
                             (unsigned long long)id);
    float stack[S_STACK_DIM];
    float *v = index->dim <= S_STACK_DIM ? stack : malloc(index->dim * sizeof(float));
    if (!v)
        return shoal_err_set(err, SHOAL_ENOMEM, "hnsw_insert: out of memory");
    int rc = hnsw_prepare(index, vec, v, "vector", 0, 1, err);
    if (rc == 0)
        rc = s_insert_prepared(index, id, v, err);
    if (v != stack)
        free(v);
    return rc;
}

typedef struct {
    hnsw_t *ix;             /* target */
    const uint64_t *ids;    /* caller's ids */
    const float *vecs;      /* caller's rows, checked */
    size_t n;               /* rows */
    atomic_size_t next;     /* next row to take */
    atomic_int failed;      /* set on the first error: workers stop */
    pthread_mutex_t err_mu; /* guards err */
    shoal_err_t err;        /* the first error */
} s_batch_t;

/* One batch thread: takes rows off b->next until none are left or one failed.
   item is a parfor element holding a pointer to the shared s_batch_t. */
static void s_batch_worker(void *item)
{
    s_batch_t *b = *(s_batch_t **)item;
    hnsw_t *ix = b->ix;
    float *v = malloc(ix->dim * sizeof(float));
    if (!v) {
        pthread_mutex_lock(&b->err_mu);
        if (!atomic_exchange(&b->failed, 1))
            shoal_err_set(&b->err, SHOAL_ENOMEM, "hnsw_insert_batch: out of memory");
        pthread_mutex_unlock(&b->err_mu);
        return;
    }
    for (;;) {
        if (atomic_load(&b->failed))
            break;
        size_t i = atomic_fetch_add(&b->next, 1);
        if (i >= b->n)
            break;
        shoal_err_t err;
        int rc = hnsw_prepare(ix, b->vecs + i * ix->dim, v, "row", i, 1, &err);
        if (rc == 0)
            rc = s_insert_prepared(ix, b->ids[i], v, &err);
        if (rc) {
            pthread_mutex_lock(&b->err_mu);
            if (!atomic_exchange(&b->failed, 1))
                b->err = err;
            pthread_mutex_unlock(&b->err_mu);
            break;
        }
    }
    free(v);
}

int hnsw_insert_batch(hnsw_t *index, const uint64_t *ids, const float *vecs, size_t n,
                      size_t threads, shoal_err_t *err)
{
    if (!index || (n && (!ids || !vecs)))
        return shoal_err_set(err, SHOAL_EINVAL,
                             "hnsw_insert_batch: index, ids and vecs must not be NULL");
    if (n == 0)
        return 0;
    /* Check every row first so a bad one inserts none. */
    float stack[S_STACK_DIM];
    float *tmp = index->dim <= S_STACK_DIM ? stack : malloc(index->dim * sizeof(float));
    if (!tmp)
        return shoal_err_set(err, SHOAL_ENOMEM, "hnsw_insert_batch: out of memory");
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (ids[i] == HNSW_ID_NONE)
            rc = shoal_err_set(err, SHOAL_EINVAL, "hnsw_insert_batch: row %zu: id %llu is reserved",
                               i, (unsigned long long)ids[i]);
        else
            rc = hnsw_prepare(index, vecs + i * index->dim, tmp, "row", i, 1, err);
    }
    if (tmp != stack)
        free(tmp);
    if (rc == 0 && index->storage == QUANT_SQ8)
        rc = hnsw_train_sq8(index, vecs, n, err);
    if (rc)
        return rc;

    if (threads == 0)
        threads = parfor_cores();
    if (threads > n)
        threads = n;
    if (threads > 1024)
        threads = 1024;

    s_batch_t b = {.ix = index, .ids = ids, .vecs = vecs, .n = n};
    atomic_init(&b.next, 0);
    atomic_init(&b.failed, 0);
    shoal_err_clear(&b.err);
    pthread_mutex_init(&b.err_mu, NULL);
    /*
     * Every thread runs the same worker on the one shared batch (rows are
     * taken off b.next), so each parfor element is a pointer to b. A thread
     * that cannot start runs after the others on the caller and finds no row
     * left; no memory for the table: the caller alone does the work.
     */
    s_batch_t *bp = &b;
    s_batch_t **parts = threads > 1 ? malloc(threads * sizeof *parts) : NULL;
    if (parts) {
        for (size_t t = 0; t < threads; t++)
            parts[t] = &b;
        parfor_each(parts, sizeof *parts, threads, s_batch_worker);
        free(parts);
    } else {
        s_batch_worker(&bp);
    }
    pthread_mutex_destroy(&b.err_mu);
    if (atomic_load(&b.failed)) {
        if (err)
            *err = b.err;
        return b.err.code ? b.err.code : SHOAL_EINTERNAL;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Search (Algorithm 5: K-NN-SEARCH)                                        */
/* ------------------------------------------------------------------------ */

/*
 * Re-scores ids[0..n) in float32 from the caller's rows, into heap. q is the
 * prepared query. A row the source no longer has is skipped.
 */
static int s_rerank(const hnsw_t *ix, hnsw_scratch_t *scr, const float *q, const uint64_t *ids,
                    size_t n, const hnsw_search_opts_t *o, topk_heap_t *heap, shoal_err_t *err)
{
    for (size_t i = 0; i < n; i++) {
        int rc = o->rerank_fn(ids[i], scr->row, o->rerank_ctx);
        if (rc == SHOAL_ENOTFOUND)
            continue;
        if (rc)
            return shoal_err_set(err, rc < 0 ? rc : SHOAL_EINTERNAL,
                                 "hnsw_search: the re-rank source failed on id %llu (%d)",
                                 (unsigned long long)ids[i], rc);
        if (ix->metric == SHOAL_METRIC_COSINE && dist_normalize(scr->row, ix->dim) != 0)
            return shoal_err_set(err, SHOAL_EINVAL,
                                 "hnsw_search: the re-rank source gave id %llu a zero row",
                                 (unsigned long long)ids[i]);
        topk_heap_push(heap, hnsw_dist(ix, q, scr->row), ids[i]);
    }
    return 0;
}

/* Checks opts; the candidate list (max(ef, k)) into *ef_eff and the re-rank pool into *pool. */
static int s_check_opts(const hnsw_t *ix, const hnsw_search_opts_t *o, size_t *ef_eff,
                        size_t *pool, shoal_err_t *err)
{
    if (o->k < 1)
        return shoal_err_set(err, SHOAL_EINVAL, "hnsw_search: k must be >= 1, got 0");
    if (o->ef < HNSW_EF_MIN || o->ef > HNSW_EF_MAX)
        return shoal_err_set(err, SHOAL_EINVAL, "hnsw_search: ef must be in %d..%d, got %zu",
                             HNSW_EF_MIN, HNSW_EF_MAX, o->ef);
    if (o->k > HNSW_K_MAX)
        return shoal_err_set(err, SHOAL_ELIMIT, "hnsw_search: k must be <= %d, got %zu",
                             HNSW_K_MAX, o->k);
    if (o->rerank && (o->rerank < HNSW_RERANK_MIN || o->rerank > HNSW_RERANK_MAX))
        return shoal_err_set(err, SHOAL_EINVAL,
                             "hnsw_search: rerank must be 0 (default) or in %d..%d, got %zu",
                             HNSW_RERANK_MIN, HNSW_RERANK_MAX, o->rerank);
    *ef_eff = o->ef > o->k ? o->ef : o->k;
    *pool = 0;
    if (o->rerank_fn && ix->storage != QUANT_F32) {
        size_t p = o->rerank ? o->rerank : HNSW_RERANK_FACTOR * o->k;
        p = p < o->k ? o->k : p;
        *pool = p > *ef_eff ? *ef_eff : p;
    }
    return 0;
}

int hnsw_search_with(const hnsw_t *index, const float *query, const hnsw_search_opts_t *opts,
                     uint64_t *ids, float *dists, shoal_err_t *err)
{
    /* The index is logically const; its scratch pool is not. */
    hnsw_t *ix = (hnsw_t *)index;
    if (!ix || !query || !opts || !ids || !dists)
        return shoal_err_set(err, SHOAL_EINVAL, "hnsw_search: NULL argument");
    if (opts->busy)
        *opts->busy = 0;
    size_t k = opts->k, ef_eff = 0, pool = 0;
    int rc = s_check_opts(ix, opts, &ef_eff, &pool, err);
    if (rc)
        return rc;

    hnsw_scratch_t *scr = hnsw_scratch_get(ix);
    if (!scr || s_reserve((void **)&scr->items, &scr->items_cap, k, sizeof(topk_item_t), ix, scr) ||
        (pool && (s_reserve((void **)&scr->pool_ids, &scr->pool_cap, pool, sizeof(uint64_t), ix,
                            scr) ||
                  s_scratch_row(ix, scr)))) {
        hnsw_scratch_put(ix, scr);
        return shoal_err_set(err, SHOAL_ENOMEM, "hnsw_search: out of memory");
    }
    rc = hnsw_prepare(ix, query, scr->query, "query", 0, 0, err);
    if (rc) {
        hnsw_scratch_put(ix, scr);
        return rc;
    }

    topk_heap_t heap;
    topk_heap_init(&heap, scr->items, k);
    size_t npool = 0;
    if (opts->busy) {
        *opts->busy = pthread_rwlock_tryrdlock(&ix->rw) != 0;
        if (*opts->busy) {
            hnsw_scratch_put(ix, scr);
            return 0;
        }
    } else {
        pthread_rwlock_rdlock(&ix->rw);
    }
    int max_level;
    uint32_t ep;
    hnsw_top_unpack(atomic_load(&ix->top), &max_level, &ep);
    hnsw_query_t hq;
    if (ep != HNSW_SLOT_NONE && hnsw_query_init(ix, &hq, scr->query) != 0) {
        rc = shoal_err_set(err, SHOAL_ENOMEM, "hnsw_search: out of memory");
    } else if (ep != HNSW_SLOT_NONE) {
        float d = hnsw_query_dist(ix, &hq, ep);
        for (int lc = max_level; lc > 0; lc--)
            hnsw_greedy(ix, &hq, lc, &ep, &d);
        hnsw_cand_t start = {d, ep};
        long nr = hnsw_search_layer(ix, scr, &hq, &start, 1, ef_eff, 0, opts->filter,
                                    opts->filter_arg);
        if (nr < 0)
            rc = shoal_err_set(err, SHOAL_ENOMEM, "hnsw_search: out of memory");
        if (pool && nr > 0) {
            /* The pool: the nearest by code distance, ids taken now (a slot
             * may be reused once the lock is released). */
            hnsw_cand_sort(scr->res, (size_t)nr);
            npool = (size_t)nr < pool ? (size_t)nr : pool;
            for (size_t i = 0; i < npool; i++)
                scr->pool_ids[i] = hnsw_node(ix, scr->res[i].slot)->id;
        } else {
            for (long i = 0; i < nr; i++)
                topk_heap_push(&heap, scr->res[i].dist, hnsw_node(ix, scr->res[i].slot)->id);
        }
        hnsw_query_fini(&hq);
    }
    pthread_rwlock_unlock(&ix->rw);
    if (rc == 0 && npool)
        rc = s_rerank(ix, scr, scr->query, scr->pool_ids, npool, opts, &heap, err);
    size_t found = topk_heap_extract(&heap, dists, ids);
    hnsw_scratch_put(ix, scr);
    return rc ? rc : (int)found;
}

int hnsw_search(const hnsw_t *index, const float *query, size_t k, size_t ef, hnsw_filter_fn filter,
                void *filter_arg, uint64_t *ids, float *dists, shoal_err_t *err)
{
    hnsw_search_opts_t opts = {.k = k, .ef = ef, .filter = filter, .filter_arg = filter_arg};
    return hnsw_search_with(index, query, &opts, ids, dists, err);
}

/* ------------------------------------------------------------------------ */
/* Accessors                                                                */
/* ------------------------------------------------------------------------ */

int hnsw_contains(const hnsw_t *index, uint64_t id)
{
    if (!index || id == HNSW_ID_NONE)
        return 0;
    hnsw_t *ix = (hnsw_t *)index;
    pthread_mutex_lock(&ix->mu);
    int found = hnsw_map_find(ix, id) != HNSW_SLOT_NONE;
    pthread_mutex_unlock(&ix->mu);
    return found;
}

int hnsw_get(const hnsw_t *index, uint64_t id, float *out, shoal_err_t *err)
{
    if (!index || !out)
        return shoal_err_set(err, SHOAL_EINVAL, "hnsw_get: NULL argument");
    hnsw_t *ix = (hnsw_t *)index;
    /* A slot's vector is written only under mu (insert) and its map entry
     * removed under mu (delete), so mu alone makes the copy consistent. */
    pthread_mutex_lock(&ix->mu);
    uint32_t slot = id == HNSW_ID_NONE ? HNSW_SLOT_NONE : hnsw_map_find(ix, id);
    if (slot != HNSW_SLOT_NONE)
        hnsw_decode(ix, slot, out);
    pthread_mutex_unlock(&ix->mu);
    if (slot == HNSW_SLOT_NONE)
        return shoal_err_set(err, SHOAL_ENOTFOUND, "hnsw_get: id %llu not found",
                             (unsigned long long)id);
    return 0;
}

size_t hnsw_count(const hnsw_t *index)
{
    return index ? atomic_load(&((hnsw_t *)index)->count) : 0;
}

size_t hnsw_dim(const hnsw_t *index)
{
    return index ? index->dim : 0;
}

shoal_metric_t hnsw_metric(const hnsw_t *index)
{
    return index ? index->metric : SHOAL_METRIC_L2;
}

quant_kind_t hnsw_storage(const hnsw_t *index)
{
    return index ? index->storage : QUANT_F32;
}

const quant_sq8_t *hnsw_sq8(const hnsw_t *index)
{
    if (!index)
        return NULL;
    hnsw_t *ix = (hnsw_t *)index;
    /* The first batch may be training it: read it under the lock it is set under. */
    pthread_rwlock_rdlock(&ix->rw);
    const quant_sq8_t *sq8 = ix->sq8;
    pthread_rwlock_unlock(&ix->rw);
    return sq8;
}

void hnsw_stats(const hnsw_t *index, hnsw_stats_t *stats)
{
    memset(stats, 0, sizeof *stats);
    if (!index)
        return;
    hnsw_t *ix = (hnsw_t *)index;
    pthread_mutex_lock(&ix->mu);
    stats->count = atomic_load(&ix->count);
    stats->slots = ix->nslots;
    stats->free_slots = ix->nfree;
    size_t pages = 0;
    for (size_t p = 0; p < HNSW_DIR_PAGES && ix->pages[p]; p++)
        pages++;
    size_t bytes = sizeof *ix;
    size_t blocks = ix->nchunks * (size_t)HNSW_CHUNK_SLOTS;
    bytes += ix->nchunks * s_align((size_t)HNSW_CHUNK_SLOTS * ix->stride, 64);
    bytes += pages * HNSW_PAGE_CHUNKS * sizeof(uint8_t *);
    bytes += ix->map_cap * sizeof *ix->map;
    bytes += ix->free_cap * sizeof *ix->free_slots;
    stats->bytes_ids = ix->map_cap * sizeof *ix->map + blocks * sizeof(uint64_t);
    pthread_mutex_unlock(&ix->mu);
    if (hnsw_sq8(ix)) /* under the lock a first batch trains it under */
        bytes += quant_sq8_record_size(ix->dim); /* its two arrays, near enough */
    stats->storage = ix->storage;
    stats->bytes_codes = blocks * ix->code_bytes;
    stats->bytes_links =
        blocks * (1 + ix->M0) * sizeof(uint32_t) + atomic_load(&ix->upper_bytes);
    pthread_mutex_lock(&ix->pool_mu);
    bytes += ix->pool_cap * sizeof *ix->pool;
    pthread_mutex_unlock(&ix->pool_mu);
    bytes += atomic_load(&ix->upper_bytes);
    bytes += atomic_load(&ix->pool_bytes);
    stats->deletes = atomic_load(&ix->deletes);
    int max_level;
    uint32_t ep;
    hnsw_top_unpack(atomic_load(&ix->top), &max_level, &ep);
    stats->max_level = max_level;
    stats->M = ix->M;
    stats->M0 = ix->M0;
    stats->ef_construction = ix->ef_construction;
    stats->bytes = bytes;
    stats->bytes_per_vector = stats->count ? (double)bytes / (double)stats->count : 0.0;
    stats->bytes_other = bytes - stats->bytes_codes - stats->bytes_links - stats->bytes_ids;
}
