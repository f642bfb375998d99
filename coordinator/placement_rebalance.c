/*
 * placement_rebalance.c - placement_rebalance (placement.h): the plan of
 * list moves when shards are added or drained. placement.c places lists from
 * scratch; the helpers both use are in placement_private.h.
 */
#include "coordinator/placement.h"
#include "coordinator/placement_private.h"

#include "common/log.h"
#include "gpu/knn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Rebalance: the plan's state                                              */
/* ------------------------------------------------------------------------ */

#define S_NIL SIZE_MAX /* the end of a shard's slot list; no slot */

/* What both candidate plans read and never change (s_world_init/fini). */
typedef struct {
    size_t nlist;          /* lists */
    size_t nshards;        /* shards, allowed or not */
    size_t replicas;       /* slots per list */
    size_t nallowed;       /* shards that may hold lists */
    uint64_t *weight;      /* nlist: what one slot of the list adds to its shard's total */
    const uint64_t *sizes; /* the caller's list_sizes (NULL: 1 each), for the moves */
    uint8_t *allowed;      /* nshards: 1 = may hold lists */
    const uint8_t *pinned; /* the caller's, nlist x replicas or NULL: slots that stay */
    uint32_t *nbr;         /* nlist x k: each list's nearest other lists */
    size_t k;              /* neighbours per list (0 with one list) */
    size_t *roff;          /* nlist + 1: list i's reverse neighbours are radj[roff[i]..] */
    uint32_t *radj;        /* nlist x k: the lists that have i among their neighbours */
    double mean;           /* replicas * sum(weight) / allowed shards */
    double ceiling;        /* target_imbalance * mean */
    size_t max_moves;      /* 0 = no limit */
} s_world_t;

/* A list next to a growing region and its gain when it was pushed. */
typedef struct {
    long gain;     /* edges into the region less edges to the rest of the shard */
    uint32_t list; /* breaks ties: the lower first */
} s_heap_item_t;

/* One candidate plan: the placement as its moves leave it, and the moves. */
typedef struct {
    const s_world_t *w;      /* what the plan is for */
    uint32_t *own;           /* nlist x replicas: the owners after the moves */
    uint64_t *total;         /* nshards: each shard's total after the moves */
    size_t *head;            /* nshards: the shard's first slot, S_NIL when none */
    size_t *next, *prev;     /* nlist x replicas: the slot's neighbours in its shard's list */
    uint32_t *count;         /* nshards scratch, all zero outside s_touch .. s_untouch */
    uint32_t *touched;       /* nshards scratch: the shards counted */
    uint64_t *mark;          /* nshards scratch: the group that last saw the shard */
    uint64_t group;          /* groups seen so far (marks never need clearing) */
    uint32_t alone;          /* s_touch: groups where the slot alone holds its shard */
    uint32_t groups;         /* s_touch: groups the slot's list is in */
    uint32_t *least;         /* replicas + 1 scratch: the least loaded allowed shards */
    uint8_t *stuck;          /* nshards: a shard that no balance move helps */
    uint8_t *in_region;      /* nlist x replicas: the slot is in its shard's region to leave */
    size_t *region_left;     /* nshards: slots of the shard's region not moved yet */
    uint32_t *gin;           /* nlist scratch: edges from the growing region */
    uint32_t *deg;           /* nlist scratch: edges to the source shard (same layer) */
    uint64_t *seen;          /* nlist: the growth that set gin and deg */
    uint64_t *grown_in;      /* nlist: the growth whose region holds the list */
    uint64_t growth;         /* region growths so far (stamps never need clearing) */
    uint32_t *grown;         /* nlist scratch: the region being grown */
    uint32_t *best;          /* nlist scratch: the best region so far */
    s_heap_item_t *heap;     /* the lists next to the region, best first (lazy) */
    size_t heap_n;           /* items in heap */
    size_t heap_cap;         /* allocated items */
    placement_move_t *moves; /* nmoves, room for cap_moves */
    size_t nmoves;           /* moves so far */
    size_t cap_moves;        /* allocated moves */
    uint64_t vectors;        /* sum of the moves' vectors */
} s_plan_t;

static int s_pinned(const s_world_t *w, size_t slot)
{
    return w->pinned && w->pinned[slot];
}

static void s_link(s_plan_t *p, size_t slot)
{
    uint32_t s = p->own[slot];
    p->prev[slot] = S_NIL;
    p->next[slot] = p->head[s];
    if (p->head[s] != S_NIL)
        p->prev[p->head[s]] = slot;
    p->head[s] = slot;
}

static void s_unlink(s_plan_t *p, size_t slot)
{
    if (p->prev[slot] != S_NIL)
        p->next[p->prev[slot]] = p->next[slot];
    else
        p->head[p->own[slot]] = p->next[slot];
    if (p->next[slot] != S_NIL)
        p->prev[p->next[slot]] = p->prev[slot];
}

static void s_plan_fini(s_plan_t *p)
{
    free(p->own);
    free(p->total);
    free(p->head);
    free(p->next);
    free(p->prev);
    free(p->count);
    free(p->touched);
    free(p->mark);
    free(p->least);
    free(p->stuck);
    free(p->in_region);
    free(p->region_left);
    free(p->gin);
    free(p->deg);
    free(p->seen);
    free(p->grown_in);
    free(p->grown);
    free(p->best);
    free(p->heap);
    free(p->moves);
    *p = (s_plan_t){0};
}

static int s_plan_init(s_plan_t *p, const s_world_t *w, const uint32_t *owners)
{
    size_t nslots = w->nlist * w->replicas;
    *p = (s_plan_t){.w = w};
    p->own = malloc(nslots * sizeof(uint32_t));
    p->total = calloc(w->nshards, sizeof(uint64_t));
    p->head = malloc(w->nshards * sizeof(size_t));
    p->next = malloc(nslots * sizeof(size_t));
    p->prev = malloc(nslots * sizeof(size_t));
    p->count = calloc(w->nshards, sizeof(uint32_t));
    p->touched = malloc(w->nshards * sizeof(uint32_t));
    p->mark = calloc(w->nshards, sizeof(uint64_t));
    p->least = malloc((w->replicas + 1) * sizeof(uint32_t));
    p->stuck = calloc(w->nshards, 1);
    p->in_region = calloc(nslots, 1);
    p->region_left = calloc(w->nshards, sizeof(size_t));
    p->gin = malloc(w->nlist * sizeof(uint32_t));
    p->deg = malloc(w->nlist * sizeof(uint32_t));
    p->seen = calloc(w->nlist, sizeof(uint64_t));
    p->grown_in = calloc(w->nlist, sizeof(uint64_t));
    p->grown = malloc(w->nlist * sizeof(uint32_t));
    p->best = malloc(w->nlist * sizeof(uint32_t));
    if (!p->own || !p->total || !p->head || !p->next || !p->prev || !p->count || !p->touched ||
        !p->mark || !p->least || !p->stuck || !p->in_region || !p->region_left || !p->gin ||
        !p->deg || !p->seen || !p->grown_in || !p->grown || !p->best) {
        s_plan_fini(p);
        return SHOAL_ENOMEM;
    }
    memcpy(p->own, owners, nslots * sizeof(uint32_t));
    for (size_t s = 0; s < w->nshards; s++)
        p->head[s] = S_NIL;
    for (size_t slot = nslots; slot-- > 0;) {
        s_link(p, slot);
        p->total[p->own[slot]] += w->weight[slot / w->replicas];
    }
    return 0;
}

static int s_plan_full(const s_plan_t *p)
{
    return p->w->max_moves && p->nmoves >= p->w->max_moves;
}

/* Moves slot to shard `to` and records the move. The caller has checked that
 * the move is valid and that the plan is not full. */
static int s_plan_move(s_plan_t *p, size_t slot, uint32_t to)
{
    const s_world_t *w = p->w;
    if (p->nmoves == p->cap_moves) {
        size_t cap = p->cap_moves ? 2 * p->cap_moves : 64;
        placement_move_t *m = realloc(p->moves, cap * sizeof(placement_move_t));
        if (!m)
            return SHOAL_ENOMEM;
        p->moves = m;
        p->cap_moves = cap;
    }
    size_t list = slot / w->replicas;
    uint32_t from = p->own[slot];
    uint64_t vectors = w->sizes ? w->sizes[list] : 1;
    p->moves[p->nmoves++] = (placement_move_t){.list = (uint32_t)list,
                                               .replica = (uint32_t)(slot % w->replicas),
                                               .from = from, .to = to, .vectors = vectors};
    p->vectors += vectors;
    if (p->in_region[slot]) {
        p->in_region[slot] = 0;
        p->region_left[from]--;
    }
    s_unlink(p, slot);
    p->total[from] -= w->weight[list];
    p->own[slot] = to;
    p->total[to] += w->weight[list];
    s_link(p, slot);
    return 0;
}

static int s_holds(const s_plan_t *p, size_t list, size_t shard)
{
    const uint32_t *o = p->own + list * p->w->replicas;
    for (size_t r = 0; r < p->w->replicas; r++)
        if (o[r] == shard)
            return 1;
    return 0;
}

static size_t s_degree(const s_world_t *w, size_t list)
{
    return w->k + w->roff[list + 1] - w->roff[list];
}

/* The t-th list adjacent to `list` in the neighbour graph, edges both ways
 * (a mutual pair is adjacent twice, on both sides alike). */
static size_t s_adjacent(const s_world_t *w, size_t list, size_t t)
{
    return t < w->k ? w->nbr[list * w->k + t] : w->radj[w->roff[list] + t - w->k];
}

/*
 * Affinity of a slot (a list, in replica layer r). A query probes a list
 * and its nearest ones, so each list i with its k neighbours forms a group,
 * and a placement's cost is the sum over groups of (distinct shards - 1):
 * the connectivity metric of hypergraph partitioning (Catalyurek and
 * Aykanat, PaToH; Karypis et al., hMETIS), and shards per query up to the
 * sampling of queries. Moving a slot from s to d changes a group's cost by
 * [no other member on d] - [no other member on s], so over the groups the
 * list is in (its own and its reverse neighbours'):
 *     gain(d) = count[d] - groups + alone
 * where count[d] is the number of those groups with another member on d,
 * and alone the number with no other member on s. Counted per layer (a
 * member's replica r), the layer the score reads for r = 0. Returns how many
 * shards have count > 0 (p->touched); s_untouch clears them.
 */
static size_t s_touch(s_plan_t *p, size_t slot)
{
    const s_world_t *w = p->w;
    size_t R = w->replicas, list = slot / R, r = slot % R, n = 0;
    uint32_t src = p->own[slot];
    p->alone = p->groups = 0;
    for (size_t g = 0; g <= w->roff[list + 1] - w->roff[list]; g++) {
        size_t head = g == 0 ? list : w->radj[w->roff[list] + g - 1];
        int shared = 0; /* another member is on src */
        p->group++;
        for (size_t t = 0; t <= w->k; t++) {
            size_t m = t == 0 ? head : w->nbr[head * w->k + t - 1];
            if (m == list)
                continue;
            uint32_t x = p->own[m * R + r];
            shared |= x == src;
            if (p->mark[x] == p->group)
                continue;
            p->mark[x] = p->group;
            if (p->count[x]++ == 0)
                p->touched[n++] = x;
        }
        p->groups++;
        p->alone += !shared;
    }
    return n;
}

static void s_untouch(s_plan_t *p, size_t n)
{
    for (size_t t = 0; t < n; t++)
        p->count[p->touched[t]] = 0;
}

/* The `want` allowed shards with the smallest totals, ascending, in p->least;
 * returns how many there are. */
static size_t s_least(s_plan_t *p, size_t want)
{
    const s_world_t *w = p->w;
    uint32_t *least = p->least;
    size_t n = 0;
    for (size_t d = 0; d < w->nshards; d++) {
        if (!w->allowed[d])
            continue;
        size_t at;
        if (n < want)
            at = n++;
        else if (p->total[d] < p->total[least[want - 1]])
            at = want - 1;
        else
            continue;
        while (at > 0 && p->total[least[at - 1]] > p->total[d]) {
            least[at] = least[at - 1];
            at--;
        }
        least[at] = (uint32_t)d;
    }
    return n;
}

/* ------------------------------------------------------------------------ */
/* Rebalance, plan (a): drained slots out, then local balance moves         */
/* ------------------------------------------------------------------------ */

typedef struct {
    uint32_t score; /* neighbour slots on allowed shards */
    uint32_t list;  /* breaks ties */
} s_seed_t;

static int s_cmp_seed(const void *a, const void *b)
{
    const s_seed_t *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    return x->list < y->list ? -1 : x->list > y->list;
}

static int s_must_leave(const s_world_t *w, const uint32_t *owners, size_t slot)
{
    return !w->allowed[owners[slot]] && !s_pinned(w, slot);
}

/*
 * The lists with a slot that must leave, border first: a breadth-first walk
 * of the neighbour graph (edges both ways) over those lists, from the ones
 * with most neighbour slots on allowed shards, then from any not reached.
 * Moved in this order, each list finds its neighbours moved before it.
 */
static int s_drain_order(const s_world_t *w, const uint32_t *owners, uint32_t **order_out,
                         size_t *n_out)
{
    size_t nlist = w->nlist, k = w->k, R = w->replicas, n = 0, nseeds = 0;
    uint8_t *state = calloc(nlist, 1); /* 1: must leave; 2: in the order */
    s_seed_t *seeds = malloc(nlist * sizeof(s_seed_t));
    uint32_t *order = malloc(nlist * sizeof(uint32_t));
    int rc = 0;
    if (!state || !seeds || !order) {
        rc = SHOAL_ENOMEM;
        goto done;
    }
    for (size_t i = 0; i < nlist; i++)
        for (size_t r = 0; r < R; r++)
            if (s_must_leave(w, owners, i * R + r))
                state[i] = 1;

    for (size_t i = 0; i < nlist; i++) {
        if (state[i] != 1)
            continue;
        uint32_t score = 0;
        for (size_t t = 0; t < k; t++)
            for (size_t r = 0; r < R; r++)
                score += w->allowed[owners[(size_t)w->nbr[i * k + t] * R + r]];
        if (score > 0)
            seeds[nseeds++] = (s_seed_t){.score = score, .list = (uint32_t)i};
    }
    qsort(seeds, nseeds, sizeof(s_seed_t), s_cmp_seed);
    for (size_t t = 0; t < nseeds; t++) {
        state[seeds[t].list] = 2;
        order[n++] = seeds[t].list;
    }
    size_t head = 0, rest = 0;
    for (;;) {
        while (head < n) {
            size_t i = order[head++];
            for (size_t t = 0; t < s_degree(w, i); t++) {
                size_t j = s_adjacent(w, i, t);
                if (state[j] == 1) {
                    state[j] = 2;
                    order[n++] = (uint32_t)j;
                }
            }
        }
        while (rest < nlist && state[rest] != 1)
            rest++;
        if (rest == nlist)
            break;
        state[rest] = 2;
        order[n++] = (uint32_t)rest;
    }
done:
    free(state);
    free(seeds);
    if (rc) {
        free(order);
        order = NULL;
    }
    *order_out = order;
    *n_out = n;
    return rc;
}

static int s_fits(const s_plan_t *p, size_t shard, uint64_t weight)
{
    return (double)(p->total[shard] + weight) <= p->w->ceiling;
}

/*
 * Whether shard a is a better home than b for a drained slot of this weight
 * (p->count holds its affinity): one where it fits under the ceiling, then
 * the most affinity, then the less loaded. Filling the shards next to the
 * drained region up to the ceiling, not only to the mean, cuts it into fewer
 * pieces (placement.h has the measurements).
 */
static int s_drain_better(const s_plan_t *p, uint64_t weight, size_t a, size_t b)
{
    int fa = s_fits(p, a, weight), fb = s_fits(p, b, weight);
    if (fa != fb)
        return fa;
    if (fa && p->count[a] != p->count[b])
        return p->count[a] > p->count[b];
    return p->total[a] < p->total[b];
}

static uint32_t s_drain_target(s_plan_t *p, size_t slot)
{
    const s_world_t *w = p->w;
    size_t list = slot / w->replicas;
    size_t best = S_NIL;
    /* The least loaded allowed shard without the list: one exists, since
     * there are at least `replicas` allowed shards and this slot is on none. */
    for (size_t d = 0; d < w->nshards; d++)
        if (w->allowed[d] && !s_holds(p, list, d) &&
            (best == S_NIL || p->total[d] < p->total[best]))
            best = d;
    size_t n = s_touch(p, slot);
    for (size_t t = 0; t < n; t++) {
        size_t d = p->touched[t];
        if (w->allowed[d] && !s_holds(p, list, d) && s_drain_better(p, w->weight[list], d, best))
            best = d;
    }
    s_untouch(p, n);
    return (uint32_t)best;
}

/* Goal 1: the slots that must leave, lists in `order`. */
static int s_plan_drain(s_plan_t *p, const uint32_t *order, size_t norder)
{
    const s_world_t *w = p->w;
    for (size_t o = 0; o < norder; o++) {
        for (size_t r = 0; r < w->replicas; r++) {
            size_t slot = (size_t)order[o] * w->replicas + r;
            if (!s_must_leave(w, p->own, slot))
                continue;
            if (s_plan_full(p))
                return 0;
            int rc = s_plan_move(p, slot, s_drain_target(p, slot));
            if (rc)
                return rc;
        }
    }
    return 0;
}

/* A balance move considered for the largest shard. */
typedef struct {
    size_t slot;     /* S_NIL: none yet */
    uint32_t to;     /* destination */
    int region;      /* the slot is in the source's region to leave */
    int covers;      /* the move alone brings the source under the ceiling */
    long gain;       /* how much the move lowers the connectivity cost (s_touch) */
    uint64_t weight; /* the list's weight */
    uint64_t peak;   /* the larger of the two totals after the move */
} s_cand_t;

/* Moves that keep the destination under the ceiling: the source's region
 * first (s_region_choose); then one move that finishes the source (the
 * fewest moves), best gain, then the lightest such; else best gain, then
 * the heaviest (fewer moves to come). */
static int s_fit_better(const s_cand_t *a, const s_cand_t *b)
{
    if (b->slot == S_NIL)
        return 1;
    if (a->region != b->region)
        return a->region;
    if (a->covers != b->covers)
        return a->covers;
    if (a->gain != b->gain)
        return a->gain > b->gain;
    if (a->weight != b->weight)
        return a->covers ? a->weight < b->weight : a->weight > b->weight;
    return 0;
}

/* Moves that only lower the largest total: the lowest peak, then best gain. */
static int s_improve_better(const s_cand_t *a, const s_cand_t *b)
{
    if (b->slot == S_NIL)
        return 1;
    if (a->peak != b->peak)
        return a->peak < b->peak;
    return a->gain > b->gain;
}

/* Scores moving slot off src to its neighbours' shards and to the least
 * loaded ones (nleast in p->least). improving: src holds the largest total,
 * so moves past the ceiling that lower it count too. */
static void s_consider(s_plan_t *p, size_t src, size_t slot, size_t nleast, int improving,
                       s_cand_t *fit, s_cand_t *improve)
{
    const s_world_t *w = p->w;
    size_t list = slot / w->replicas;
    uint64_t weight = w->weight[list];
    size_t n = s_touch(p, slot);
    long base = (long)p->alone - (long)p->groups;
    for (size_t t = 0; t < n + nleast; t++) {
        uint32_t d = t < n ? p->touched[t] : p->least[t - n];
        if (d == src || !w->allowed[d] || s_holds(p, list, d))
            continue;
        s_cand_t c = {.slot = slot, .to = d, .region = p->in_region[slot],
                      .gain = base + (long)p->count[d], .weight = weight};
        if ((double)(p->total[d] + weight) <= w->ceiling) {
            c.covers = (double)(p->total[src] - weight) <= w->ceiling;
            if (s_fit_better(&c, fit))
                *fit = c;
        } else if (improving && p->total[d] + weight < p->total[src]) {
            uint64_t left = p->total[src] - weight, there = p->total[d] + weight;
            c.peak = left > there ? left : there;
            if (s_improve_better(&c, improve))
                *improve = c;
        }
    }
    s_untouch(p, n);
}

/* Whether list's layer-r slot is on src and may move. */
static int s_movable_on(const s_plan_t *p, size_t list, size_t r, size_t src)
{
    size_t slot = list * p->w->replicas + r;
    return p->own[slot] == src && !s_pinned(p->w, slot);
}

/* First sight of a list in this growth: its edges to src's layer r. */
static void s_region_visit(s_plan_t *p, size_t list, size_t r, size_t src)
{
    if (p->seen[list] == p->growth)
        return;
    p->seen[list] = p->growth;
    p->gin[list] = 0;
    p->deg[list] = 0;
    for (size_t t = 0; t < s_degree(p->w, list); t++)
        p->deg[list] += p->own[s_adjacent(p->w, list, t) * p->w->replicas + r] == src;
}

static int s_heap_above(const s_heap_item_t *a, const s_heap_item_t *b)
{
    return a->gain != b->gain ? a->gain > b->gain : a->list < b->list;
}

static int s_heap_push(s_plan_t *p, long gain, uint32_t list)
{
    if (p->heap_n == p->heap_cap) {
        size_t cap = p->heap_cap ? 2 * p->heap_cap : 1024;
        s_heap_item_t *h = realloc(p->heap, cap * sizeof(s_heap_item_t));
        if (!h)
            return SHOAL_ENOMEM;
        p->heap = h;
        p->heap_cap = cap;
    }
    size_t at = p->heap_n++;
    s_heap_item_t item = {.gain = gain, .list = list};
    while (at > 0 && s_heap_above(&item, &p->heap[(at - 1) / 2])) {
        p->heap[at] = p->heap[(at - 1) / 2];
        at = (at - 1) / 2;
    }
    p->heap[at] = item;
    return 0;
}

static s_heap_item_t s_heap_pop(s_plan_t *p)
{
    s_heap_item_t top = p->heap[0], last = p->heap[--p->heap_n];
    size_t at = 0;
    for (;;) {
        size_t c = 2 * at + 1;
        if (c >= p->heap_n)
            break;
        if (c + 1 < p->heap_n && s_heap_above(&p->heap[c + 1], &p->heap[c]))
            c++;
        if (!s_heap_above(&p->heap[c], &last))
            break;
        p->heap[at] = p->heap[c];
        at = c;
    }
    if (p->heap_n > 0)
        p->heap[at] = last;
    return top;
}

/* The region-growing gain of a list: edges into the region less edges to
 * the rest of src. It only rises as the region grows, so the heap is lazy:
 * a rise pushes the list again and older items are skipped when popped. */
static long s_region_gain(const s_plan_t *p, size_t list)
{
    return 2 * (long)p->gin[list] - (long)p->deg[list];
}

/*
 * Grows a region of src's movable layer-r slots from seed, best first: each
 * step adds the list next to the region with most edges into it less edges
 * to the rest of src, until the region weighs `target` or has no neighbour
 * left on src (greedy graph growing, Karypis and Kumar 1998, METIS's initial
 * partitioning). The region is p->grown[0..*n); *cut gets the edges from it
 * to the rest of src. O(region edges x log) per growth.
 */
static int s_region_grow(s_plan_t *p, size_t src, size_t r, size_t seed, uint64_t target,
                         size_t *n_out, uint64_t *cut)
{
    const s_world_t *w = p->w;
    size_t n = 0, list = seed;
    uint64_t weight = 0;
    p->growth++;
    p->heap_n = 0;
    s_region_visit(p, seed, r, src);
    for (;;) {
        p->grown[n++] = (uint32_t)list;
        p->grown_in[list] = p->growth;
        weight += w->weight[list];
        for (size_t t = 0; t < s_degree(w, list); t++) {
            size_t m = s_adjacent(w, list, t);
            if (!s_movable_on(p, m, r, src) || p->grown_in[m] == p->growth)
                continue;
            s_region_visit(p, m, r, src);
            p->gin[m]++;
            if (s_heap_push(p, s_region_gain(p, m), (uint32_t)m) != 0)
                return SHOAL_ENOMEM;
        }
        if (weight >= target)
            break;
        list = S_NIL;
        while (p->heap_n > 0 && list == S_NIL) {
            s_heap_item_t top = s_heap_pop(p);
            if (p->grown_in[top.list] != p->growth && top.gain == s_region_gain(p, top.list))
                list = top.list;
        }
        if (list == S_NIL)
            break;
    }
    *cut = 0;
    for (size_t t = 0; t < n; t++)
        *cut += p->deg[p->grown[t]] - p->gin[p->grown[t]];
    *n_out = n;
    return 0;
}

/*
 * Chooses the region src gives away next: grown from up to
 * PLACEMENT_REGION_SEEDS seeds spread over its movable slots, as heavy as
 * its excess over the ceiling (or the most room any other shard has), the
 * one with the fewest edges to the rest of src kept. Its slots go first
 * (s_fit_better), so what src sheds is one compact piece, not slivers.
 */
static int s_region_choose(s_plan_t *p, size_t src)
{
    const s_world_t *w = p->w;
    double excess = (double)p->total[src] - w->ceiling, room = 0.0;
    for (size_t d = 0; d < w->nshards; d++)
        if (w->allowed[d] && d != src && w->ceiling - (double)p->total[d] > room)
            room = w->ceiling - (double)p->total[d];
    uint64_t target = (uint64_t)ceil(room > 0.0 && room < excess ? room : excess);
    size_t movable = 0;
    for (size_t slot = p->head[src]; slot != S_NIL; slot = p->next[slot])
        movable += !s_pinned(w, slot);
    size_t every = movable / PLACEMENT_REGION_SEEDS + 1, seen = 0, nbest = 0, rbest = 0;
    uint64_t best_cut = 0;
    for (size_t slot = p->head[src]; slot != S_NIL; slot = p->next[slot]) {
        if (s_pinned(w, slot) || seen++ % every != 0)
            continue;
        size_t r = slot % w->replicas, n;
        uint64_t cut;
        if (s_region_grow(p, src, r, slot / w->replicas, target, &n, &cut) != 0)
            return SHOAL_ENOMEM;
        if (nbest == 0 || cut < best_cut || (cut == best_cut && n < nbest)) {
            memcpy(p->best, p->grown, n * sizeof(uint32_t));
            nbest = n;
            rbest = r;
            best_cut = cut;
        }
    }
    for (size_t t = 0; t < nbest; t++)
        p->in_region[(size_t)p->best[t] * w->replicas + rbest] = 1;
    p->region_left[src] = nbest;
    return 0;
}

/* Goal 2: while a shard is above the ceiling, the largest gives one slot. */
static int s_plan_balance(s_plan_t *p)
{
    const s_world_t *w = p->w;
    size_t guard = 4 * w->nlist * w->replicas + w->nshards;
    for (size_t step = 0; step < guard && !s_plan_full(p); step++) {
        size_t src = S_NIL;
        uint64_t top = 0;
        for (size_t s = 0; s < w->nshards; s++) {
            top = p->total[s] > top ? p->total[s] : top;
            if (!p->stuck[s] && (src == S_NIL || p->total[s] > p->total[src]))
                src = s;
        }
        if (src == S_NIL || (double)p->total[src] <= w->ceiling)
            break;
        if (p->region_left[src] == 0 && w->k > 0 && s_region_choose(p, src) != 0)
            return SHOAL_ENOMEM;
        /* Among replicas + 1 shards at least one lacks the list. */
        size_t nleast = s_least(p, w->replicas + 1);
        s_cand_t fit = {.slot = S_NIL}, improve = {.slot = S_NIL};
        for (size_t slot = p->head[src]; slot != S_NIL; slot = p->next[slot])
            if (!s_pinned(w, slot))
                s_consider(p, src, slot, nleast, p->total[src] == top, &fit, &improve);
        const s_cand_t *pick = fit.slot != S_NIL ? &fit : improve.slot != S_NIL ? &improve : NULL;
        if (!pick) {
            p->stuck[src] = 1;
            continue;
        }
        int rc = s_plan_move(p, pick->slot, pick->to);
        if (rc)
            return rc;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Rebalance, plan (b): the fresh placement, relabelled                     */
/* ------------------------------------------------------------------------ */

typedef struct {
    uint32_t label;  /* a shard of the fresh placement (0..allowed count) */
    uint32_t shard;  /* a current shard */
    uint64_t slots;  /* slots of lists that have both */
    uint64_t weight; /* and their weight */
} s_overlap_t;

static int s_cmp_pair(const void *a, const void *b)
{
    const s_overlap_t *x = a, *y = b;
    if (x->label != y->label)
        return x->label < y->label ? -1 : 1;
    return x->shard < y->shard ? -1 : x->shard > y->shard;
}

static int s_cmp_overlap(const void *a, const void *b)
{
    const s_overlap_t *x = a, *y = b;
    if (x->slots != y->slots)
        return x->slots > y->slots ? -1 : 1;
    if (x->weight != y->weight)
        return x->weight > y->weight ? -1 : 1;
    return s_cmp_pair(a, b);
}

/*
 * map[label]: the current allowed shard each of the nlabel shards of the
 * fresh placement becomes. Pairs (label, shard) are taken greedily by the
 * slots they have in common, each label and shard once; labels left over get
 * the allowed shards left over. A greedy matching, not the optimal assignment
 * (Hungarian, O(nshards^3)): it keeps at least half of the best overlap.
 */
static int s_relabel(const s_world_t *w, const uint32_t *owners, const uint32_t *fresh,
                     size_t nlabel, uint32_t *map)
{
    size_t R = w->replicas, npairs = 0;
    s_overlap_t *pairs = malloc((w->nlist * R * R + 1) * sizeof(s_overlap_t));
    uint8_t *taken = calloc(w->nshards, 1);
    if (!pairs || !taken) {
        free(pairs);
        free(taken);
        return SHOAL_ENOMEM;
    }
    for (size_t i = 0; i < w->nlist; i++)
        for (size_t r = 0; r < R; r++)
            for (size_t q = 0; q < R; q++)
                if (w->allowed[owners[i * R + q]])
                    pairs[npairs++] = (s_overlap_t){.label = fresh[i * R + r],
                                                    .shard = owners[i * R + q], .slots = 1,
                                                    .weight = w->weight[i]};
    qsort(pairs, npairs, sizeof(s_overlap_t), s_cmp_pair);
    size_t m = 0;
    for (size_t t = 0; t < npairs; t++) {
        if (m > 0 && s_cmp_pair(&pairs[m - 1], &pairs[t]) == 0) {
            pairs[m - 1].slots++;
            pairs[m - 1].weight += pairs[t].weight;
        } else {
            pairs[m++] = pairs[t];
        }
    }
    qsort(pairs, m, sizeof(s_overlap_t), s_cmp_overlap);
    for (size_t j = 0; j < nlabel; j++)
        map[j] = UINT32_MAX;
    for (size_t t = 0; t < m; t++) {
        if (map[pairs[t].label] == UINT32_MAX && !taken[pairs[t].shard]) {
            map[pairs[t].label] = pairs[t].shard;
            taken[pairs[t].shard] = 1;
        }
    }
    size_t s = 0;
    for (size_t j = 0; j < nlabel; j++) {
        if (map[j] != UINT32_MAX)
            continue;
        while (!w->allowed[s] || taken[s])
            s++;
        map[j] = (uint32_t)s;
        taken[s] = 1;
    }
    free(pairs);
    free(taken);
    return 0;
}

typedef struct {
    size_t slot;        /* the slot that moves */
    uint32_t to;        /* where */
    int drained;        /* it must leave its shard (goal 1) */
    uint64_t src_total; /* its shard's total before any move */
} s_diff_t;

static int s_cmp_diff(const void *a, const void *b)
{
    const s_diff_t *x = a, *y = b;
    if (x->drained != y->drained)
        return x->drained ? -1 : 1;
    if (x->src_total != y->src_total)
        return x->src_total > y->src_total ? -1 : 1;
    return x->slot < y->slot ? -1 : x->slot > y->slot;
}

/*
 * The slots that differ from the fresh placement (labels mapped to shards).
 * Per list, a shard in both keeps its slot and each slot on a shard the
 * fresh placement does not use takes one the list lacks, so the moves are
 * valid in any order; a pinned slot stays and the list gives up one of its
 * new shards for it. Drained slots first, then from the fullest shards.
 */
static int s_plan_fresh(s_plan_t *p, const uint32_t *fresh, const uint32_t *map)
{
    const s_world_t *w = p->w;
    size_t R = w->replicas, ndiff = 0;
    s_diff_t *diff = malloc((w->nlist * R + 1) * sizeof(s_diff_t));
    uint32_t *want = malloc(R * sizeof(uint32_t));
    if (!diff || !want) {
        free(diff);
        free(want);
        return SHOAL_ENOMEM;
    }
    for (size_t i = 0; i < w->nlist; i++) {
        size_t nwant = 0; /* the fresh shards the list lacks */
        for (size_t r = 0; r < R; r++)
            if (!s_holds(p, i, map[fresh[i * R + r]]))
                want[nwant++] = map[fresh[i * R + r]];
        size_t next = 0;
        for (size_t q = 0; q < R && next < nwant; q++) {
            size_t slot = i * R + q, kept = 0;
            for (size_t r = 0; r < R; r++)
                kept |= map[fresh[i * R + r]] == p->own[slot];
            if (kept || s_pinned(w, slot))
                continue;
            diff[ndiff++] = (s_diff_t){.slot = slot, .to = want[next++],
                                       .drained = !w->allowed[p->own[slot]],
                                       .src_total = p->total[p->own[slot]]};
        }
    }
    qsort(diff, ndiff, sizeof(s_diff_t), s_cmp_diff);
    int rc = 0;
    for (size_t t = 0; t < ndiff && !rc && !s_plan_full(p); t++)
        rc = s_plan_move(p, diff[t].slot, diff[t].to);
    free(diff);
    free(want);
    return rc ? rc : s_plan_balance(p);
}

/* ------------------------------------------------------------------------ */
/* Rebalance: choosing and reporting                                        */
/* ------------------------------------------------------------------------ */

typedef struct {
    size_t left;      /* slots that must leave and did not */
    int balanced;     /* the largest total is at most the ceiling */
    double imbalance; /* the largest total (all shards) / the mean (allowed ones) */
    double spq;       /* shards per query */
} s_score_t;

/* The probe results of the locality score, shared by every placement scored. */
typedef struct {
    const uint64_t *found; /* nq x nprobe nearest centroids */
    size_t nq;             /* queries */
    size_t nprobe;         /* lists each probes */
    uint32_t *stamp;       /* nshards scratch */
} s_scorer_t;

static s_score_t s_plan_score(const s_plan_t *p, const s_scorer_t *pr)
{
    const s_world_t *w = p->w;
    s_score_t sc = {0};
    uint64_t top = 0;
    for (size_t s = 0; s < w->nshards; s++)
        top = p->total[s] > top ? p->total[s] : top;
    for (size_t slot = 0; slot < w->nlist * w->replicas; slot++)
        sc.left += (size_t)s_must_leave(w, p->own, slot);
    sc.balanced = (double)top <= w->ceiling;
    sc.imbalance = (double)top / w->mean;
    sc.spq = placement_distinct(pr->found, pr->nq, pr->nprobe, pr->nprobe, p->own, w->replicas,
                                pr->stamp, w->nshards);
    return sc;
}

/* Whether plan (a) is kept over plan (b) (placement.h). */
static int s_local_wins(const s_plan_t *a, const s_score_t *sa, const s_plan_t *b,
                        const s_score_t *sb, double spq_fresh)
{
    if (sa->left != sb->left)
        return sa->left < sb->left;
    if (sa->balanced != sb->balanced)
        return sa->balanced;
    if (!sa->balanced && sa->imbalance != sb->imbalance)
        return sa->imbalance < sb->imbalance;
    double most = PLACEMENT_LOCALITY_SLACK * spq_fresh;
    int la = sa->spq <= most, lb = sb->spq <= most;
    if (la != lb)
        return la;
    if (!la)
        return 0;
    if (a->nmoves != b->nmoves)
        return a->nmoves < b->nmoves;
    return a->vectors <= b->vectors;
}

/* ------------------------------------------------------------------------ */
/* Rebalance                                                                */
/* ------------------------------------------------------------------------ */

static int s_check_rebalance(const char *fn, const uint32_t *owners, size_t nlist,
                             size_t nshards, size_t replicas, const uint8_t *allowed,
                             double target_imbalance, size_t nprobe, const uint32_t *new_owners,
                             placement_move_t **moves, size_t *nmoves, shoal_err_t *err)
{
    if (!owners || !new_owners || !moves || !nmoves)
        return shoal_err_set(err, SHOAL_EINVAL, "%s: NULL owners, new_owners, moves or nmoves",
                             fn);
    if (placement_check(owners, nlist, nshards, replicas, err) != 0) {
        shoal_err_prefix(err, "%s: owners", fn);
        return err ? (err->code = SHOAL_EINVAL) : SHOAL_EINVAL;
    }
    size_t nallowed = 0;
    for (size_t s = 0; s < nshards; s++)
        nallowed += !allowed || allowed[s];
    if (nallowed < replicas)
        return shoal_err_set(err, SHOAL_EINVAL, "%s: %zu replicas need %zu shards that may hold "
                             "lists, %zu may", fn, replicas, replicas, nallowed);
    if (!(target_imbalance >= 1.0) || !isfinite(target_imbalance))
        return shoal_err_set(err, SHOAL_EINVAL, "%s: target_imbalance must be a number >= 1, "
                             "got %g", fn, target_imbalance);
    if (nprobe == 0)
        return shoal_err_set(err, SHOAL_EINVAL, "%s: nprobe must be >= 1, got 0", fn);
    return 0;
}

/*
 * w->nbr: each list's k nearest other lists, by one exact k-NN search of the
 * centroids against themselves; w->roff/radj: the same edges reversed.
 */
static int s_world_neighbours(s_world_t *w, const float *centroids, size_t dim,
                              shoal_metric_t metric, shoal_err_t *err)
{
    size_t nlist = w->nlist, k = w->k, nq;
    uint64_t *found = NULL;
    w->nbr = malloc((nlist * k + 1) * sizeof(uint32_t));
    w->roff = calloc(nlist + 1, sizeof(size_t));
    w->radj = malloc((nlist * k + 1) * sizeof(uint32_t));
    if (!w->nbr || !w->roff || !w->radj)
        return shoal_err_set(err, SHOAL_ENOMEM, "placement: out of memory for %zu neighbours "
                             "of %zu lists", k, nlist);
    if (k == 0)
        return 0;
    int rc = placement_probe(centroids, nlist, dim, metric, nlist, k + 1, &nq, &found, err);
    if (rc)
        return rc;
    for (size_t i = 0; i < nlist; i++) {
        /* k + 1 found, one of them usually the list itself. */
        size_t n = 0;
        for (size_t t = 0; t <= k && n < k; t++)
            if (found[i * (k + 1) + t] != i)
                w->nbr[i * k + n++] = (uint32_t)found[i * (k + 1) + t];
    }
    free(found);
    for (size_t e = 0; e < nlist * k; e++)
        w->roff[w->nbr[e] + 1]++;
    for (size_t i = 0; i < nlist; i++)
        w->roff[i + 1] += w->roff[i];
    for (size_t i = 0; i < nlist; i++)
        for (size_t t = 0; t < k; t++)
            w->radj[w->roff[w->nbr[i * k + t]]++] = (uint32_t)i;
    for (size_t i = nlist; i > 0; i--) /* the fill moved each start to the next one */
        w->roff[i] = w->roff[i - 1];
    w->roff[0] = 0;
    return 0;
}

static void s_world_fini(s_world_t *w)
{
    free(w->weight);
    free(w->allowed);
    free(w->nbr);
    free(w->roff);
    free(w->radj);
    *w = (s_world_t){0};
}

/* total: sum of list_sizes, 0 when every list weighs 1. The neighbours come
 * later (s_world_neighbours), only when there is something to plan. */
static int s_world_init(s_world_t *w, const uint64_t *list_sizes, uint64_t total, size_t nlist,
                        size_t nshards, size_t replicas, const uint8_t *allowed,
                        const uint8_t *pinned, double target_imbalance, size_t max_moves)
{
    *w = (s_world_t){.nlist = nlist, .nshards = nshards, .replicas = replicas,
                     .sizes = list_sizes, .pinned = pinned, .max_moves = max_moves,
                     .k = nlist - 1 < PLACEMENT_REBALANCE_NEIGHBOURS
                              ? nlist - 1 : PLACEMENT_REBALANCE_NEIGHBOURS};
    w->weight = malloc(nlist * sizeof(uint64_t));
    w->allowed = malloc(nshards);
    if (!w->weight || !w->allowed)
        return SHOAL_ENOMEM;
    for (size_t i = 0; i < nlist; i++)
        w->weight[i] = total == 0 ? 1 : list_sizes[i];
    for (size_t s = 0; s < nshards; s++) {
        w->allowed[s] = !allowed || allowed[s];
        w->nallowed += w->allowed[s];
    }
    w->mean = (double)replicas * (double)(total == 0 ? nlist : total) / (double)w->nallowed;
    w->ceiling = target_imbalance * w->mean;
    return 0;
}

/*
 * Both candidate plans from owners: (a) in *a, (b) in *b, given the fresh
 * placement on labels 0..nallowed (placement.h).
 */
static int s_plan_both(s_world_t *w, const float *centroids, size_t dim, shoal_metric_t metric,
                       const uint32_t *owners, const uint32_t *fresh, s_plan_t *a, s_plan_t *b,
                       shoal_err_t *err)
{
    static const char fn[] = "placement_rebalance";
    uint32_t *order = NULL, *map = malloc(w->nshards * sizeof(uint32_t));
    size_t norder = 0;
    int rc = map ? 0 : SHOAL_ENOMEM;
    if (!rc)
        rc = s_world_neighbours(w, centroids, dim, metric, err);
    if (!rc)
        rc = s_drain_order(w, owners, &order, &norder);
    if (!rc)
        rc = s_plan_drain(a, order, norder);
    if (!rc)
        rc = s_plan_balance(a);
    if (!rc)
        rc = s_relabel(w, owners, fresh, w->nallowed, map);
    if (!rc)
        rc = s_plan_init(b, w, owners);
    if (!rc)
        rc = s_plan_fresh(b, fresh, map);
    if (rc == SHOAL_ENOMEM)
        rc = shoal_err_set(err, SHOAL_ENOMEM, "%s: out of memory planning %zu lists on %zu "
                           "shards", fn, w->nlist, w->nshards);
    free(order);
    free(map);
    return rc;
}

/* Plans both ways (s_plan_both) and keeps the better by s_local_wins: *kept is a or b, *after
 * its score. */
static int s_plan_pick(s_world_t *w, const float *centroids, size_t dim, shoal_metric_t metric,
                       const uint32_t *owners, const uint32_t *fresh, s_plan_t *a, s_plan_t *b,
                       const s_scorer_t *scorer, double spq_fresh, s_plan_t **kept,
                       s_score_t *after, shoal_err_t *err)
{
    static const char fn[] = "placement_rebalance";
    int rc = s_plan_both(w, centroids, dim, metric, owners, fresh, a, b, err);
    if (rc)
        return rc;
    s_score_t sa = s_plan_score(a, scorer), sb = s_plan_score(b, scorer);
    log_debug("%s: local plan %zu moves, %llu vectors, max/mean %.3f, %.2f shards per "
              "query; fresh plan %zu moves, %llu vectors, max/mean %.3f, %.2f",
              fn, a->nmoves, (unsigned long long)a->vectors, sa.imbalance, sa.spq, b->nmoves,
              (unsigned long long)b->vectors, sb.imbalance, sb.spq);
    *kept = s_local_wins(a, &sa, b, &sb, spq_fresh) ? a : b;
    *after = *kept == a ? sa : sb;
    return 0;
}

/* Gives the caller the kept plan's owners (nown entries) and its moves (trimmed to size). */
static void s_plan_hand_over(s_plan_t *kept, size_t nown, uint32_t *new_owners,
                             placement_move_t **moves, size_t *nmoves)
{
    memcpy(new_owners, kept->own, nown * sizeof(uint32_t));
    *nmoves = kept->nmoves;
    if (kept->nmoves > 0) {
        placement_move_t *m = realloc(kept->moves, kept->nmoves * sizeof(placement_move_t));
        *moves = m ? m : kept->moves;
        kept->moves = NULL;
    }
}

int placement_rebalance(const float *centroids, size_t nlist, size_t dim, shoal_metric_t metric,
                        const uint64_t *list_sizes, size_t nshards, size_t replicas,
                        const uint32_t *owners, const uint8_t *allowed, const uint8_t *pinned,
                        double target_imbalance, size_t nprobe, size_t max_moves,
                        uint32_t *new_owners, placement_move_t **moves, size_t *nmoves,
                        placement_plan_report_t *report, shoal_err_t *err)
{
    static const char fn[] = "placement_rebalance";
    if (moves)
        *moves = NULL;
    if (nmoves)
        *nmoves = 0;
    int rc = placement_check_centroids(fn, centroids, nlist, dim, metric, err);
    if (!rc)
        rc = placement_check_shards(fn, nshards, replicas, err);
    if (!rc)
        rc = s_check_rebalance(fn, owners, nlist, nshards, replicas, allowed, target_imbalance,
                               nprobe, new_owners, moves, nmoves, err);
    uint64_t total = 0, largest = 0;
    if (!rc)
        rc = placement_sum_sizes(fn, list_sizes, nlist, replicas, &total, &largest, err);
    if (rc)
        return rc;

    size_t nq = 0;
    nprobe = nprobe < nlist ? nprobe : nlist;
    s_world_t w;
    s_plan_t a = {0}, b = {0}, *kept = &a;
    uint32_t *fresh = malloc(nlist * replicas * sizeof(uint32_t));
    uint64_t *totals = calloc(nshards, sizeof(uint64_t));
    uint32_t *stamp = malloc(nshards * sizeof(uint32_t));
    uint64_t *found = NULL;
    rc = s_world_init(&w, list_sizes, total, nlist, nshards, replicas, allowed, pinned,
                      target_imbalance, max_moves);
    if (rc || !fresh || !totals || !stamp) {
        rc = shoal_err_set(err, SHOAL_ENOMEM, "%s: out of memory for %zu lists on %zu shards",
                           fn, nlist, nshards);
        goto done;
    }
    /* The fresh placement over the allowed shards, on labels 0..nallowed. */
    rc = placement_assign_into(fn, centroids, nlist, dim, list_sizes, total == 0, w.nallowed,
                               replicas, fresh, totals, err);
    if (!rc)
        rc = placement_probe(centroids, nlist, dim, metric, PLACEMENT_SCORE_QUERIES_MAX, nprobe,
                             &nq, &found, err);
    if (!rc && s_plan_init(&a, &w, owners) != 0)
        rc = shoal_err_set(err, SHOAL_ENOMEM, "%s: out of memory for %zu lists", fn, nlist);
    if (rc)
        goto done;
    s_scorer_t scorer = {.found = found, .nq = nq, .nprobe = nprobe, .stamp = stamp};
    double spq_fresh =
        placement_distinct(found, nq, nprobe, nprobe, fresh, replicas, stamp, nshards);
    s_score_t before = s_plan_score(&a, &scorer), after = before;

    if (before.left > 0 || !before.balanced) {
        rc = s_plan_pick(&w, centroids, dim, metric, owners, fresh, &a, &b, &scorer, spq_fresh,
                         &kept, &after, err);
        if (rc)
            goto done;
    }

    s_plan_hand_over(kept, nlist * replicas, new_owners, moves, nmoves);
    if (report)
        *report = (placement_plan_report_t){
            .imbalance_before = before.imbalance, .imbalance_after = after.imbalance,
            .spq_before = before.spq, .spq_after = after.spq, .spq_fresh = spq_fresh,
            .vectors_moved = kept->vectors, .nmoves = kept->nmoves};
    shoal_log(*nmoves ? SHOAL_LOG_INFO : SHOAL_LOG_DEBUG,
              "%s: %zu lists x %zu on %zu of %zu shards: %zu moves (%s plan), %llu vectors; "
              "max/mean %.3f -> %.3f (target %.3f); shards per query at nprobe %zu %.2f -> "
              "%.2f (fresh %.2f)", fn, nlist, replicas, w.nallowed, nshards, kept->nmoves,
              kept == &a ? "local" : "fresh", (unsigned long long)kept->vectors,
              before.imbalance, after.imbalance, target_imbalance, nprobe, before.spq,
              after.spq, spq_fresh);
done:
    s_plan_fini(&a);
    s_plan_fini(&b);
    s_world_fini(&w);
    free(fresh);
    free(totals);
    free(stamp);
    free(found);
    return rc;
}
