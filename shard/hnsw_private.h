/*
 * hnsw_private.h - what the HNSW files share: the index structure, the slot
 * layout, the node locks, the search primitives and the id map.
 *
 * The index is split by lifecycle stage, as pgvector does it:
 *   hnsw.c         construction, insert (Algorithm 1), search (Algorithms 2,
 *                  4 and 5), the visited pool, the id map, stats;
 *   hnsw_delete.c  deletion with neighbour repair;
 *   hnsw_io.c      save, load and the invariant checker (hnsw_validate);
 *   hnsw_codes.c   the storage kinds: encoding, query preparation, code-to-code
 *                  distances, decoding, training sq8 on a first batch;
 *   hnsw_exact.c   exact search over the stored rows or codes (error bounds).
 *
 * Storage. A node lives in a slot. Slots sit in chunks of HNSW_CHUNK_SLOTS
 * fixed-stride blocks; chunks hang off directory pages that hang off a fixed
 * directory in the index structure. Neither chunks nor pages ever move, so a
 * reader's pointer into a block stays valid while the index grows under it
 * (growth needs no lock that readers take). A block is, for f32 storage,
 *     hnsw_node_t | uint32 count0, uint32 links0[M0] | pad | float vec[dim] | pad
 * so a node's layer-0 links and its vector share cache lines (hnswlib's
 * layout), and for f16 and sq8 storage
 *     code[code_bytes] | pad to 8 | hnsw_node_t | uint32 count0, links0[M0] | pad to 8
 * The code, which a hop reads for every neighbour it scores, comes first and
 * the header and links, which it reads only for the node it expands, right
 * after; the walk prefetches the code's lines. Bytes per node at dim 128,
 * M = 16 (M0 = 32): header 24, count + links 132, so
 *     f32  24 + 132 + 4 pad + 512 = 672     (10.5 lines)
 *     f16  256 + 24 + 132 = 412, to 416     (6.5 lines; a code touches 4 or 5)
 *     sq8  128 + 24 + 132 + 4 = 288         (4.5 lines; a code touches 2 or 3)
 * sq8 blocks end with one float, the row's own error bound (hnsw_row_err:
 * 0 when the row was inside the quantizer's range, else its
 * quant_sq8_residual), which exact search over the codes needs for rows
 * encoded with clamping; at M = 16 it fills what was the padding.
 * Padding blocks to 64 bytes instead, so that every sq8 code takes exactly
 * 2 lines (320 bytes a node, 11% more), was measured on 200,000 x 128 and
 * was not faster (cpu qps 7,360 vs 9,070 packed at ef 80, one noisy run
 * each): the bytes saved keep more of the graph in cache, and a hop's cost
 * is the first miss on a code, not the second line. Links on layers >= 1
 * live in one malloc'd array per node, `upper`: for each layer 1..level, a
 * uint32 count followed by M slots.
 *
 * Distances on a compressed graph: a walk scores a float32 query (inserted
 * vector or search query, hnsw_query_t) against codes with common/quant.h's
 * kernels (f16: the query as is; sq8: folded with the quantizer once);
 * construction's neighbour selection compares two stored codes
 * (hnsw_slot_dist: sq8 L2 on codes directly, the others by decoding).
 *
 * Locks, outermost first:
 *   rw       read side: search, insert, get, stats; write side: delete,
 *            save, validate, and the replace step of an upsert;
 *   top_mu   entry point and max level changes (held through a whole insert
 *            whose level is above the current top, as in the paper's
 *            Algorithm 1 where the entry point changes at the end);
 *   mu       slot allocation, the free list, the level RNG and the id map;
 *   node->lock  one spin lock per node guarding its link lists (all layers).
 *   pool_mu  the visited pool.
 * A thread holds at most one node lock at a time, so node locks never
 * deadlock. Link lists are read under the node's lock (copied out), which
 * also orders the reads of a newly linked node's vector after its writes.
 */
#ifndef SHOAL_HNSW_PRIVATE_H
#define SHOAL_HNSW_PRIVATE_H

#include "common/datagen.h"
#include "common/distance.h"
#include "common/error.h"
#include "common/quant.h"
#include "common/topk.h"
#include "shard/hnsw.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* Highest level a node may have (loader's bound; draws are capped lower). */
#define HNSW_LEVEL_MAX 64
/* Draws above this are clamped: with M >= 2 the chance is < 2^-40 anyway. */
#define HNSW_LEVEL_DRAW_MAX 40

/* Slot addressing: slot = page << 20 | chunk << 10 | index-in-chunk. */
#define HNSW_CHUNK_SHIFT 10
#define HNSW_CHUNK_SLOTS (1u << HNSW_CHUNK_SHIFT)
#define HNSW_PAGE_SHIFT  10
#define HNSW_PAGE_CHUNKS (1u << HNSW_PAGE_SHIFT)
#define HNSW_DIR_PAGES   4096
/* Slot numbers are uint32; UINT32_MAX means "none". */
#define HNSW_SLOT_NONE UINT32_MAX
#define HNSW_SLOTS_MAX ((size_t)UINT32_MAX - HNSW_CHUNK_SLOTS)

/* Largest link list: M0 = 2 * HNSW_M_MAX. */
#define HNSW_LINKS_MAX (2 * HNSW_M_MAX)

/* Per-node header at the start of each block. */
typedef struct {
    uint64_t id;      /* caller's id; HNSW_ID_NONE when the slot is free */
    uint32_t *upper;  /* layers 1..level: count + M links each; NULL when level <= 0 */
    int32_t level;    /* top layer of this node; -1 when the slot is free */
    atomic_uint lock; /* spin lock guarding the node's link lists */
} hnsw_node_t;

/* A (distance, slot) pair: search candidates and results. */
typedef struct {
    float dist; /* distance to the query (or to the node being linked) */
    uint32_t slot;
} hnsw_cand_t;

/* Per-search working memory, pooled and reused (never cleared per search). */
typedef struct {
    uint16_t *tags;    /* visited tags, one per slot; == epoch means visited */
    size_t tags_cap;   /* slots covered by tags */
    uint16_t epoch;    /* current search's tag value; 0 is never used */
    hnsw_cand_t *cand; /* min-heap: candidates still to expand */
    size_t cand_cap;
    hnsw_cand_t *res; /* max-heap: the ef best found */
    size_t res_cap;
    hnsw_cand_t *work; /* an insert's sorted W / next layer's entry points */
    size_t work_cap;
    topk_item_t *items; /* final k-selection of a search */
    size_t items_cap;
    float *query; /* the query, normalised for cosine (dim floats) */
    float *row;   /* a re-ranked candidate's float32 row (dim floats; lazily) */
    uint64_t *pool_ids; /* ids of the candidates to re-rank */
    size_t pool_cap;
    size_t bytes; /* bytes held by this object (for stats) */
} hnsw_scratch_t;

/* A float32 vector prepared to be compared with stored vectors. */
typedef struct {
    const float *vec;      /* dim floats, normalised for cosine; borrowed */
    quant_sq8_query_t sq8; /* sq8 storage: vec folded with the quantizer; else zeroed */
} hnsw_query_t;

/*
 * One id map entry: a slot number (HNSW_SLOT_NONE when empty); the id is the
 * slot's node's. Open addressing, linear probing, backward-shift delete.
 * Keeping the id in the entry as well (16 bytes, 42 a vector at a load of
 * 3/8) costs 4x the bytes of this (4 bytes, 10.5 a vector) to save the read
 * of the node's id on a probe, which only inserts, deletes, get and contains
 * make, never the walk. That is why this map is not common/idmap, the id
 * table flat and the store use: idmap keeps each key inline beside a size_t
 * value (16 bytes an entry); this shape would need a key-reading callback in
 * idmap's every probe, for one user.
 */
typedef uint32_t hnsw_map_entry_t;

struct hnsw {
    size_t dim;                 /* floats per vector */
    shoal_metric_t metric;      /* L2, IP or cosine */
    size_t M;                   /* links per node on layers >= 1 */
    size_t M0;                  /* links per node on layer 0 */
    size_t ef_construction;     /* candidate list while inserting */
    uint64_t seed;              /* level RNG seed, kept for save */
    double level_mult;          /* mL = 1 / ln(M) */
    const dist_kernels_t *kern; /* distance kernels chosen for this CPU */
    const quant_kernels_t *qk;  /* code kernels chosen for this CPU */
    quant_kind_t storage;       /* f32, f16 or sq8 */
    size_t code_bytes;          /* bytes of one stored vector (quant_code_bytes) */
    quant_sq8_t *sq8;           /* sq8: the quantizer (owned); NULL until trained */

    size_t off_node;   /* byte offset of the hnsw_node_t in a block */
    size_t off_links0; /* byte offset of count0 in a block */
    size_t off_vec;    /* byte offset of the vector (code) in a block */
    size_t off_err;    /* sq8: byte offset of the row's error bound (float); else 0 */
    size_t stride;     /* bytes per block */
    size_t prefetch_bytes; /* bytes of a code a walk prefetches (hnsw.c) */

    pthread_rwlock_t rw;    /* see the lock order above */
    pthread_mutex_t top_mu; /* guards changes of top */
    pthread_mutex_t mu;     /* slots, free list, rng, id map */

    /* (max_level + 1) << 32 | entry slot; 0 << 32 | SLOT_NONE when empty. */
    _Atomic uint64_t top;

    uint8_t **pages[HNSW_DIR_PAGES]; /* directory: page -> chunk -> blocks */
    size_t nchunks;                  /* chunks allocated (under mu) */
    size_t nslots;                   /* slots handed out, live + free (under mu) */
    _Atomic size_t capacity;         /* slots backed by chunks */

    uint32_t *free_slots; /* stack of free slots (under mu) */
    size_t nfree;
    size_t free_cap;

    shoal_rng_t rng; /* level draws (under mu) */

    hnsw_map_entry_t *map; /* id -> slot, keyed by the slot's node id (under mu) */
    size_t map_cap;        /* power of two */
    size_t map_count;

    _Atomic size_t count;       /* live nodes */
    _Atomic size_t deletes;     /* deletes since creation or load */
    _Atomic size_t upper_bytes; /* bytes held in upper link arrays */
    size_t nclamped;            /* sq8: rows ever stored with a nonzero row error (under mu;
                                 * never lowered): 0 lets exact search skip reading them */
    float row_norm_max;         /* largest |row| stored (under mu; never lowered by deletes):
                                 * exact search's bound for IP needs it (quant.h's R) */

    pthread_mutex_t pool_mu; /* guards the pool */
    hnsw_scratch_t **pool;   /* idle scratch objects */
    size_t npool;
    size_t pool_cap;
    size_t pool_made;          /* scratch objects alive (idle or in use) */
    _Atomic size_t pool_bytes; /* bytes held by all scratch objects */
};

/* ------------------------------------------------------------------------ */
/* Slot access                                                              */
/* ------------------------------------------------------------------------ */

static inline uint8_t *hnsw_block(const hnsw_t *ix, uint32_t slot)
{
    uint8_t **page = ix->pages[slot >> (HNSW_CHUNK_SHIFT + HNSW_PAGE_SHIFT)];
    return page[(slot >> HNSW_CHUNK_SHIFT) & (HNSW_PAGE_CHUNKS - 1)] +
           (size_t)(slot & (HNSW_CHUNK_SLOTS - 1)) * ix->stride;
}

/* sq8: slot's row error bound, 0 when its code was not clamped (see the top). */
static inline float *hnsw_row_err(const hnsw_t *ix, uint32_t slot)
{
    return (float *)(hnsw_block(ix, slot) + ix->off_err);
}

static inline hnsw_node_t *hnsw_node(const hnsw_t *ix, uint32_t slot)
{
    return (hnsw_node_t *)(hnsw_block(ix, slot) + ix->off_node);
}

/* The stored vector: float32 row, binary16 halves or sq8 codes (storage). */
static inline void *hnsw_code(const hnsw_t *ix, uint32_t slot)
{
    return hnsw_block(ix, slot) + ix->off_vec;
}

/* The link list of slot on layer: [0] is the count, [1..] the links. */
static inline uint32_t *hnsw_links(const hnsw_t *ix, uint32_t slot, int layer)
{
    if (layer == 0)
        return (uint32_t *)(hnsw_block(ix, slot) + ix->off_links0);
    return hnsw_node(ix, slot)->upper + (size_t)(layer - 1) * (ix->M + 1);
}

static inline size_t hnsw_cap(const hnsw_t *ix, int layer)
{
    return layer == 0 ? ix->M0 : ix->M;
}

void hnsw_node_lock(hnsw_node_t *node);
void hnsw_node_unlock(hnsw_node_t *node);

/* Copies slot's links on layer into out (HNSW_LINKS_MAX room); returns the count. */
size_t hnsw_links_copy(const hnsw_t *ix, uint32_t slot, int layer, uint32_t *out);

/* A metric's "smaller is nearer" distance from a raw l2sq or dot. */
static inline float hnsw_metric_dist(shoal_metric_t metric, float raw)
{
    return metric == SHOAL_METRIC_L2 ? raw : metric == SHOAL_METRIC_IP ? -raw : 1.0f - raw;
}

/* The metric's distance between two float32 vectors (prepared: unit for cosine). */
static inline float hnsw_dist(const hnsw_t *ix, const float *a, const float *b)
{
    float raw = ix->metric == SHOAL_METRIC_L2 ? ix->kern->l2sq(a, b, ix->dim)
                                              : ix->kern->dot(a, b, ix->dim);
    return hnsw_metric_dist(ix->metric, raw);
}

/* The distance from a prepared query to slot's stored vector: the walk's hot path. */
static inline float hnsw_query_dist(const hnsw_t *ix, const hnsw_query_t *q, uint32_t slot)
{
    const void *code = hnsw_code(ix, slot);
    int l2 = ix->metric == SHOAL_METRIC_L2;
    float raw;
    switch (ix->storage) {
    case QUANT_F32:
        return hnsw_dist(ix, q->vec, code);
    case QUANT_F16:
        raw = l2 ? ix->qk->f16_l2sq(q->vec, code, ix->dim) : ix->qk->f16_dot(q->vec, code, ix->dim);
        break;
    default:
        raw = l2 ? ix->qk->sq8_l2sq(&q->sq8, code) : ix->qk->sq8_dot(&q->sq8, code);
        break;
    }
    return hnsw_metric_dist(ix->metric, raw);
}

/*
 * Copies vec to out, checking it, and normalises it for cosine. stored: it
 * is to be stored, so it must also fit the storage kind (f16's range).
 * what and row name it in the error.
 */
int hnsw_prepare(const hnsw_t *ix, const float *vec, float *out, const char *what, size_t row,
                 int stored, shoal_err_t *err);

/* Prepares vec (dim floats, checked and normalised) as a query. 0 or SHOAL_ENOMEM. */
int hnsw_query_init(const hnsw_t *ix, hnsw_query_t *q, const float *vec);
void hnsw_query_fini(hnsw_query_t *q);

/* The distance between two stored vectors (construction, repair). */
float hnsw_slot_dist(const hnsw_t *ix, uint32_t a, uint32_t b);

/* slot's stored vector as float32 (dim floats): exact for f32, decoded otherwise. */
void hnsw_decode(const hnsw_t *ix, uint32_t slot, float *out);

/*
 * Stores a prepared vector (checked, normalised) as the index's kind into
 * slot's block, with its error bound (sq8), and raises row_norm_max. Caller
 * holds mu (or owns the index alone).
 */
void hnsw_encode(hnsw_t *ix, uint32_t slot, const float *v);
/* |X|, the norm of slot's stored vector as its code stands (scratch: dim floats);
 * loading recomputes row_norm_max with it. */
float hnsw_code_norm(const hnsw_t *ix, uint32_t slot, float *scratch);

/*
 * An sq8 index with no quantizer trains one on rows (checked), normalised
 * first for cosine; nothing when it has one. Takes the write lock, so that
 * inserts see it or wait for it. 0, or the error (SHOAL_ENOMEM, SHOAL_EINVAL).
 */
int hnsw_train_sq8(hnsw_t *ix, const float *rows, size_t n, shoal_err_t *err);

static inline uint64_t hnsw_top_pack(int max_level, uint32_t entry)
{
    return ((uint64_t)(uint32_t)(max_level + 1) << 32) | entry;
}

static inline void hnsw_top_unpack(uint64_t top, int *max_level, uint32_t *entry)
{
    *max_level = (int)(uint32_t)(top >> 32) - 1;
    *entry = (uint32_t)top;
}

/* ------------------------------------------------------------------------ */
/* Search primitives (hnsw.c)                                               */
/* ------------------------------------------------------------------------ */

/* A scratch object from the pool, with tags covering the current capacity. */
hnsw_scratch_t *hnsw_scratch_get(hnsw_t *ix);
void hnsw_scratch_put(hnsw_t *ix, hnsw_scratch_t *scr);
/* Starts a new visit (new epoch); returns SHOAL_ENOMEM if tags cannot grow. */
int hnsw_scratch_begin(hnsw_t *ix, hnsw_scratch_t *scr);

/* Greedy walk on layer (Algorithm 2 with ef = 1): moves *cur / *cur_dist. */
void hnsw_greedy(const hnsw_t *ix, const hnsw_query_t *q, int layer, uint32_t *cur,
                 float *cur_dist);

/*
 * Algorithm 2 (SEARCH-LAYER) from eps on layer with a list of ef, applying
 * filter (may be NULL) to what is kept. Results: scr->res[0..return), a
 * max-heap; not sorted. Returns SHOAL_ENOMEM (< 0) when a heap cannot grow.
 */
long hnsw_search_layer(hnsw_t *ix, hnsw_scratch_t *scr, const hnsw_query_t *q, const hnsw_cand_t *eps,
                       size_t neps, size_t ef, int layer, hnsw_filter_fn filter, void *arg);

/* Sorts by distance, then slot. */
void hnsw_cand_sort(hnsw_cand_t *c, size_t n);

/*
 * Algorithm 4 (SELECT-NEIGHBORS-HEURISTIC, without extendCandidates or
 * keepPrunedConnections): from cands sorted nearest first (distances to the
 * base node), keeps up to m. Writes slots to out; returns how many.
 */
size_t hnsw_select(const hnsw_t *ix, const hnsw_cand_t *cands, size_t n, size_t m, uint32_t *out);

/*
 * Adds link from -> to on layer (to at distance d), pruning from's list with
 * hnsw_select when it is full. Takes from's lock. Returns 1 when the link
 * is in from's list afterwards, 0 when the pruning dropped it.
 */
int hnsw_link_add(const hnsw_t *ix, uint32_t from, uint32_t to, float d, int layer);

/* ------------------------------------------------------------------------ */
/* Id map and slots (hnsw.c); all under mu                                  */
/* ------------------------------------------------------------------------ */

uint32_t hnsw_map_find(const hnsw_t *ix, uint64_t id);
/* Maps id to slot, whose node must already carry id (the map keys slots by it). */
int hnsw_map_put(hnsw_t *ix, uint64_t id, uint32_t slot);
/* Unmaps id; call it while id's node still carries id. */
void hnsw_map_remove(hnsw_t *ix, uint64_t id);
/* Makes sure slots [0, n) are backed by chunks. */
int hnsw_grow_to(hnsw_t *ix, size_t n);
/* Makes room on the free list for extra more slots. */
int hnsw_free_reserve(hnsw_t *ix, size_t extra);
/* Allocates layer arrays for level (NULL for level 0 and on OOM). */
uint32_t *hnsw_upper_alloc(hnsw_t *ix, int level);
void hnsw_upper_free(hnsw_t *ix, hnsw_node_t *node);

/* ------------------------------------------------------------------------ */
/* Across files                                                             */
/* ------------------------------------------------------------------------ */

/*
 * Empty index from checked parameters (hnsw.c). sq8: the quantizer, whose
 * ownership passes to the index (*sq8 is set to NULL, also on failure, when
 * it is freed); NULL or a NULL *sq8 for none yet.
 */
hnsw_t *hnsw_alloc(size_t dim, shoal_metric_t metric, size_t M, size_t ef_construction,
                   uint64_t seed, quant_kind_t storage, quant_sq8_t **sq8, shoal_err_t *err);

/*
 * Deletes the nodes in slots[0..n) as one batch, with the write lock held
 * (hnsw_delete.c). HNSW_SLOT_NONE entries are skipped and a slot listed twice
 * is deleted once; *deleted (may be NULL) gets how many were. On failure
 * (out of memory) nothing is deleted.
 */
int hnsw_delete_slots(hnsw_t *ix, const uint32_t *slots, size_t n, size_t *deleted,
                      shoal_err_t *err);

/* hnsw_validate with the write lock already held (hnsw_io.c). */
int hnsw_validate_locked(hnsw_t *ix, shoal_err_t *err);

#endif
