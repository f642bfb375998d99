/*
 * hnsw_delete.c - real deletion: unlink, repair the neighbours, free the slots.
 *
 * The paper has no deletion. Marking nodes deleted and skipping them (what
 * hnswlib does by default) lets dead nodes pile up in the graph and in the
 * memory; this file removes a batch D of nodes for good. A single delete and
 * the delete half of an upsert are batches of one; there is no other path.
 *
 *   1. Mark D in a per-slot flag array, and note the live layer-0
 *      out-neighbours of D, whose only way in may have been through D.
 *   2. One pass over all slots finds, per layer, every live node that links
 *      into D, the next entry point, and which nodes keep an in-link from a
 *      node the batch does not touch. Links are one-way after pruning,
 *      so D's own lists do not name their in-neighbours. The pass reads
 *      O(n * M0) contiguous links; it is paid once per batch, not once per
 *      id, which is what makes batches cheap (one pass per id was tens of
 *      minutes for 10% of a 1M shard). Reverse lists would avoid the pass but
 *      cost memory on every node and a second list to keep consistent under
 *      concurrent inserts; rejected.
 *   3. Repair each such node y once per layer, much as FreshDiskANN's
 *      delete consolidation does (Singh et al., 2021, Algorithm 4): y's
 *      candidates are its live links plus the live links of the deleted
 *      nodes it pointed to (the two-hop paths y -> x -> z that the deletion
 *      cut), and, where deleted nodes were neighbours of each other, of the
 *      deleted nodes those point to (y -> x1 -> x2 -> z), a bounded number.
 *      A deleted node is never a candidate. Candidates that fit in y's list
 *      are all kept (as an insert keeps links while a list has room);
 *      otherwise y keeps its surviving links and its deleted ones are
 *      replaced, chosen with the paper's heuristic (its Algorithm 4).
 *   4. If the entry point is in D, the live node on the highest level (found
 *      by the pass) becomes it; an empty index has none.
 *   5. Keep every node reachable: a live node left with no in-link on layer
 *      0 (the pass and the repairs flag every node they link to, so the
 *      others are known) gets one from its nearest candidate (its own links,
 *      plus a deleted in-neighbour's other links for the batch's
 *      out-neighbours); a node left with no out-links on a layer (all its
 *      links and their links were deleted) is re-linked by a search, as a
 *      new insert would be.
 *   6. D's slots go on the free list; the next inserts reuse them.
 *
 * Everything that can fail is allocated before the first link changes, so a
 * batch that fails deletes nothing (only the rare re-link of step 5 can still
 * run out of memory; the node then keeps no links, which stays valid).
 *
 * Runs with the write lock held (searches and inserts are waiting), so none
 * of it races with readers; node locks are not needed.
 */
#include "shard/hnsw.h"

#include "common/log.h"
#include "shard/hnsw_private.h"

#include <stdlib.h>
#include <string.h>

/* Per-slot flags of one batch. */
#define S_DEAD    1u /* in the batch */
#define S_AT_RISK 2u /* live layer-0 out-neighbour of a node in the batch */
#define S_REACHED 4u /* a live node links to it on layer 0 (after the repairs) */
#define S_LIVE    8u /* live and not in the batch */

/* A growable list of slots. */
typedef struct {
    uint32_t *v; /* slots */
    size_t n;    /* used */
    size_t cap;  /* allocated */
} s_slots_t;

/* A node that may lose its last layer-0 in-link. */
typedef struct {
    uint32_t slot;   /* the live node */
    uint32_t parent; /* a deleted node that linked to it on layer 0 */
} s_risk_t;

/* One batch's working state. */
typedef struct {
    hnsw_t *ix;                       /* the index, write-locked */
    hnsw_scratch_t *scr;              /* visited tags for the repairs and re-links */
    uint8_t *flags;                   /* per slot (nslots): S_DEAD, S_AT_RISK, ... */
    uint32_t *dead;                   /* the batch's slots, each once */
    size_t ndead;                     /* entries in dead */
    int dead_top;                     /* highest level among dead */
    s_risk_t *risk;                   /* at-risk nodes, each once */
    size_t nrisk;                     /* entries in risk */
    s_slots_t in[HNSW_LEVEL_MAX + 1]; /* per layer: live nodes linking into the batch */
    hnsw_cand_t *cands;               /* one repair's candidates */
    uint32_t *walk;                   /* one repair's deleted nodes to walk through */
    size_t room;                      /* entries cands and walk can hold */
} s_batch_t;

static int s_slots_push(s_slots_t *s, uint32_t slot)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        uint32_t *v = realloc(s->v, cap * sizeof *v);
        if (!v)
            return SHOAL_ENOMEM;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = slot;
    return 0;
}

/* Index of slot in list[0..n), or n. */
static size_t s_find(const uint32_t *list, size_t n, uint32_t slot)
{
    size_t i = 0;
    while (i < n && list[i] != slot)
        i++;
    return i;
}

/* ------------------------------------------------------------------------ */
/* Steps 1 and 2: mark the batch, one pass over the slots                   */
/* ------------------------------------------------------------------------ */

/* Step 1. Fills dead, risk and the flags; returns 0 or SHOAL_ENOMEM. */
static int s_mark(s_batch_t *b, const uint32_t *slots, size_t n)
{
    hnsw_t *ix = b->ix;
    b->dead = malloc(n * sizeof *b->dead);
    if (!b->dead)
        return SHOAL_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        uint32_t x = slots[i];
        if (x == HNSW_SLOT_NONE || (b->flags[x] & S_DEAD))
            continue;
        b->flags[x] |= S_DEAD;
        b->dead[b->ndead++] = x;
        if (hnsw_node(ix, x)->level > b->dead_top)
            b->dead_top = hnsw_node(ix, x)->level;
    }
    b->risk = malloc((b->ndead * ix->M0 + 1) * sizeof *b->risk);
    if (!b->risk)
        return SHOAL_ENOMEM;
    for (size_t i = 0; i < b->ndead; i++) {
        const uint32_t *l = hnsw_links(ix, b->dead[i], 0);
        for (size_t j = 0; j < l[0]; j++) {
            uint32_t z = l[1 + j];
            if (b->flags[z] & (S_DEAD | S_AT_RISK))
                continue;
            b->flags[z] |= S_AT_RISK;
            b->risk[b->nrisk++] = (s_risk_t){z, b->dead[i]};
        }
    }
    return 0;
}

/*
 * Step 2: every live node's links, on the layers the batch reaches. A node
 * with a link into the batch goes on that layer's repair list; one without
 * keeps its list, so on layer 0 its links are in-links that survive (marked
 * S_REACHED; the flag byte was just read for S_DEAD, so this costs little).
 * Also finds the live node on the highest level. Returns 0 or SHOAL_ENOMEM.
 */
static int s_pass(s_batch_t *b, uint32_t *next_entry, int *next_level)
{
    hnsw_t *ix = b->ix;
    const uint8_t *flags = b->flags;
    for (size_t s = 0; s < ix->nslots; s++) {
        int level = hnsw_node(ix, (uint32_t)s)->level;
        if (level < 0 || (flags[s] & S_DEAD))
            continue;
        b->flags[s] |= S_LIVE;
        if (level > *next_level) {
            *next_level = level;
            *next_entry = (uint32_t)s;
        }
        int top = level < b->dead_top ? level : b->dead_top;
        for (int lc = 0; lc <= top; lc++) {
            uint32_t *l = hnsw_links(ix, (uint32_t)s, lc);
            size_t i = 0;
            while (i < l[0] && !(flags[l[1 + i]] & S_DEAD))
                i++;
            if (i < l[0]) {
                if (s_slots_push(&b->in[lc], (uint32_t)s))
                    return SHOAL_ENOMEM;
            } else if (lc == 0) {
                for (i = 0; i < l[0]; i++)
                    b->flags[l[1 + i]] |= S_REACHED;
            }
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Step 3: repair                                                           */
/* ------------------------------------------------------------------------ */

/*
 * Sorts list[0..n) (links of y or of a deleted node, on one layer) into
 * y's candidates (live, with their distance to vy) and the deleted nodes to
 * walk through, skipping what this repair has seen.
 */
static void s_gather(s_batch_t *b, uint32_t y, const uint32_t *list, size_t n, size_t *nc,
                     size_t *nw)
{
    hnsw_scratch_t *scr = b->scr;
    for (size_t i = 0; i < n; i++) {
        uint32_t s = list[i];
        if (scr->tags[s] == scr->epoch)
            continue;
        scr->tags[s] = scr->epoch;
        if (b->flags[s] & S_DEAD) {
            if (*nw < b->room)
                b->walk[(*nw)++] = s;
        } else if (*nc < b->room) {
            b->cands[*nc].slot = s;
            b->cands[*nc].dist = hnsw_slot_dist(b->ix, y, s);
            (*nc)++;
        }
    }
}

/*
 * Refills y's list l from its sorted candidates c[0..nc), nc > the list's
 * capacity. y keeps its surviving links and only its deleted ones are
 * replaced, back to its old length: first by candidates the heuristic
 * (Algorithm 4) keeps against everything y already links to, then by the
 * nearest of the rest (the paper's keepPrunedConnections).
 *
 * Re-selecting the whole list instead (over the survivors and the new
 * candidates alike) was tried: it drops back-links the heuristic never
 * judged and, the more candidates, the fewer links it keeps; deleting 10% of
 * 200k vectors in one batch left 12.6 links per node instead of 18.3, and
 * recall@10 at ef 10 was 0.77 instead of 0.84.
 */
static size_t s_refill(const hnsw_t *ix, uint32_t *l, const hnsw_cand_t *c, size_t nc)
{
    size_t target = l[0], kept = 0;
    uint32_t old[HNSW_LINKS_MAX];
    memcpy(old, l + 1, target * sizeof *old);
    /* The survivors, nearest first: the likeliest to rule a candidate out
     * come first in the heuristic's checks. */
    for (size_t i = 0; i < nc; i++) {
        if (s_find(old, target, c[i].slot) < target)
            l[1 + kept++] = c[i].slot;
    }
    size_t own = kept;
    for (size_t i = 0; i < nc && kept < target; i++) {
        if (s_find(l + 1, own, c[i].slot) < own)
            continue;
        int keep = 1;
        for (size_t j = 0; j < kept && keep; j++)
            keep = hnsw_slot_dist(ix, c[i].slot, l[1 + j]) >= c[i].dist;
        if (keep)
            l[1 + kept++] = c[i].slot;
    }
    for (size_t i = 0; i < nc && kept < target; i++) {
        if (s_find(l + 1, kept, c[i].slot) == kept)
            l[1 + kept++] = c[i].slot;
    }
    return kept;
}

/* Step 3 for node y on layer lc; returns y's new link count. */
static size_t s_repair(s_batch_t *b, uint32_t y, int lc)
{
    hnsw_t *ix = b->ix;
    hnsw_scratch_t *scr = b->scr;
    size_t cap = hnsw_cap(ix, lc);
    uint32_t *l = hnsw_links(ix, y, lc);
    /* Cannot fail: the tags were sized at the start and nothing grows the
     * index while the write lock is held. */
    (void)hnsw_scratch_begin(ix, scr);
    scr->tags[y] = scr->epoch;

    size_t nc = 0, nw = 0;
    s_gather(b, y, l + 1, l[0], &nc, &nw);
    /* The walk goes through y's deleted neighbours (walk[0..direct)) and
     * the deleted nodes they link to (walk[direct..second)), at most cap of
     * those, and no further. Stopping at y's own deleted neighbours was
     * tried: when both x1 and x2 of a path y -> x1 -> x2 -> z are deleted,
     * z is lost, and one batch of 10% of 200k clustered vectors nearly cut
     * clusters off the rest (recall@10 at ef 160 0.996, whole queries
     * missed; 0.9999 with two steps). Walking on while the deleted region
     * lasts (up to cap nodes) cost 8 times as much for the same recall. */
    size_t direct = nw, second = nw;
    for (size_t i = 0; i < nw; i++) {
        if (i == direct)
            second = nw;
        if (i >= direct && (i >= second || i >= direct + cap))
            break;
        const uint32_t *xl = hnsw_links(ix, b->walk[i], lc);
        s_gather(b, y, xl + 1, xl[0], &nc, &nw);
    }
    hnsw_cand_sort(b->cands, nc);
    if (nc <= cap) /* room for all, as an insert keeps links while it has room */
        l[0] = (uint32_t)hnsw_select(ix, b->cands, nc, cap, l + 1);
    else
        l[0] = (uint32_t)s_refill(ix, l, b->cands, nc);
    if (lc == 0) {
        for (size_t i = 0; i < l[0]; i++)
            b->flags[l[1 + i]] |= S_REACHED;
    }
    return l[0];
}

/* ------------------------------------------------------------------------ */
/* Step 5: nobody unreachable, nobody without a way out                     */
/* ------------------------------------------------------------------------ */

/* Layer 0: gives z an in-link from the nearest of cands (not z). */
static int s_adopt(hnsw_t *ix, uint32_t z, const uint32_t *cands, size_t n)
{
    uint32_t best = HNSW_SLOT_NONE;
    float best_dist = 0;
    for (size_t i = 0; i < n; i++) {
        if (cands[i] == z)
            continue;
        float d = hnsw_slot_dist(ix, z, cands[i]);
        if (best == HNSW_SLOT_NONE || d < best_dist) {
            best = cands[i];
            best_dist = d;
        }
    }
    if (best == HNSW_SLOT_NONE)
        return 0;
    uint32_t *l = hnsw_links(ix, best, 0);
    if (s_find(l + 1, l[0], z) < l[0])
        return 1;
    if (l[0] < ix->M0) {
        l[1 + l[0]] = z;
        l[0]++;
        return 1;
    }
    /* Full: z replaces best's farthest link. */
    size_t far = 0;
    float far_dist = -1.0f;
    for (size_t i = 0; i < l[0]; i++) {
        float d = hnsw_slot_dist(ix, best, l[1 + i]);
        if (d > far_dist) {
            far_dist = d;
            far = i;
        }
    }
    l[1 + far] = z;
    return 1;
}

/* Links y on layer lc as an insert would (a search from the entry point). */
static void s_relink(hnsw_t *ix, hnsw_scratch_t *scr, uint32_t y, int lc)
{
    int max_level;
    uint32_t ep;
    hnsw_top_unpack(atomic_load(&ix->top), &max_level, &ep);
    if (ep == HNSW_SLOT_NONE || max_level < lc)
        return;
    /* y's vector is the query: its float32 row, or its decoded code. */
    float *decoded = NULL;
    const float *v = hnsw_code(ix, y);
    hnsw_query_t hq;
    if (ix->storage != QUANT_F32) {
        decoded = malloc(ix->dim * sizeof(float));
        if (decoded)
            hnsw_decode(ix, y, decoded);
        v = decoded;
    }
    if (!v || hnsw_query_init(ix, &hq, v) != 0) {
        free(decoded);
        log_warn("hnsw: out of memory re-linking slot %u; it keeps no links", y);
        return;
    }
    float d = hnsw_query_dist(ix, &hq, ep);
    for (int l = max_level; l > lc; l--)
        hnsw_greedy(ix, &hq, l, &ep, &d);
    hnsw_cand_t start = {d, ep};
    long nr = hnsw_search_layer(ix, scr, &hq, &start, 1, ix->ef_construction, lc, NULL, NULL);
    hnsw_query_fini(&hq);
    free(decoded);
    hnsw_cand_t *w = nr > 0 ? malloc((size_t)nr * sizeof *w) : NULL;
    if (!w) {
        if (nr != 0)
            log_warn("hnsw: out of memory re-linking slot %u; it keeps no links", y);
        return;
    }
    size_t nw = 0;
    for (long i = 0; i < nr; i++) {
        if (scr->res[i].slot != y)
            w[nw++] = scr->res[i];
    }
    hnsw_cand_sort(w, nw);
    uint32_t sel[HNSW_LINKS_MAX];
    size_t ns = hnsw_select(ix, w, nw, ix->M, sel);
    for (size_t i = 0, j = 0; i < ns; i++) {
        while (w[j].slot != sel[i])
            j++;
        hnsw_link_add(ix, y, sel[i], w[j].dist, lc);
        hnsw_link_add(ix, sel[i], y, w[j].dist, lc);
    }
    free(w);
}

/*
 * Live nodes with no layer-0 in-link left: adopted by the nearest of their
 * own links (and, for the batch's out-neighbours, the deleted in-neighbour's
 * live links), else re-linked. Not only the batch's out-neighbours lose
 * in-links: a repair's re-selection may drop any of the node's old links,
 * and when most nodes are repaired at once (a large batch) every in-link of
 * a node can go that way. Runs before the slots are freed, while the deleted
 * nodes' lists are intact.
 */
static void s_fix_orphans(s_batch_t *b)
{
    hnsw_t *ix = b->ix;
    uint32_t cands[2 * HNSW_LINKS_MAX];
    for (size_t i = 0; i < b->nrisk; i++) {
        uint32_t z = b->risk[i].slot;
        if (b->flags[z] & S_REACHED)
            continue;
        size_t nc = hnsw_links_copy(ix, z, 0, cands);
        const uint32_t *pl = hnsw_links(ix, b->risk[i].parent, 0);
        for (size_t j = 0; j < pl[0]; j++) {
            if (!(b->flags[pl[1 + j]] & S_DEAD))
                cands[nc++] = pl[1 + j];
        }
        if (!s_adopt(ix, z, cands, nc))
            s_relink(ix, b->scr, z, 0);
        b->flags[z] |= S_REACHED;
    }
    int max_level;
    uint32_t ep;
    hnsw_top_unpack(atomic_load(&ix->top), &max_level, &ep);
    for (size_t s = 0; s < ix->nslots; s++) {
        uint32_t z = (uint32_t)s;
        if ((b->flags[z] & (S_LIVE | S_REACHED)) != S_LIVE || z == ep)
            continue;
        size_t nc = hnsw_links_copy(ix, z, 0, cands);
        if (!s_adopt(ix, z, cands, nc))
            s_relink(ix, b->scr, z, 0);
    }
}

/* Repaired nodes left with no links on a layer get new ones by a search. */
static void s_fix_empty(s_batch_t *b)
{
    for (int lc = 0; lc <= b->dead_top; lc++) {
        for (size_t i = 0; i < b->in[lc].n; i++) {
            uint32_t y = b->in[lc].v[i];
            /* Another node's re-link may have given y links meanwhile. */
            if (hnsw_links(b->ix, y, lc)[0] == 0)
                s_relink(b->ix, b->scr, y, lc);
        }
    }
}

/* ------------------------------------------------------------------------ */
/* The batch                                                                */
/* ------------------------------------------------------------------------ */

/* Step 6: the slots go back on the free list (room reserved beforehand). */
static void s_free_slots(s_batch_t *b)
{
    hnsw_t *ix = b->ix;
    pthread_mutex_lock(&ix->mu); /* hnsw_contains, _get and _stats read these under mu */
    for (size_t i = 0; i < b->ndead; i++) {
        uint32_t x = b->dead[i];
        hnsw_node_t *xn = hnsw_node(ix, x);
        hnsw_map_remove(ix, xn->id);
        hnsw_upper_free(ix, xn);
        xn->id = HNSW_ID_NONE;
        xn->level = -1;
        hnsw_links(ix, x, 0)[0] = 0;
        ix->free_slots[ix->nfree++] = x;
    }
    pthread_mutex_unlock(&ix->mu);
    atomic_fetch_sub(&ix->count, b->ndead);
    atomic_fetch_add(&ix->deletes, b->ndead);
}

int hnsw_delete_slots(hnsw_t *ix, const uint32_t *slots, size_t n, size_t *deleted,
                      shoal_err_t *err)
{
    if (deleted)
        *deleted = 0;
    size_t present = 0;
    for (size_t i = 0; i < n; i++)
        present += slots[i] != HNSW_SLOT_NONE;
    if (present == 0)
        return 0;

    s_batch_t b = {.ix = ix, .dead_top = -1};
    int rc = SHOAL_ENOMEM;
    /* Candidates: y's links, then the links of up to 2 * cap walked deleted
     * nodes (y's own, then cap more); each walked node adds up to cap more
     * to walk. */
    b.room = ix->M0 * (2 * ix->M0 + 1);
    b.flags = calloc(ix->nslots, 1);
    b.cands = malloc(b.room * sizeof *b.cands);
    b.walk = malloc(b.room * sizeof *b.walk);
    b.scr = hnsw_scratch_get(ix);
    if (!b.flags || !b.cands || !b.walk || !b.scr || hnsw_scratch_begin(ix, b.scr) ||
        s_mark(&b, slots, n))
        goto done;
    pthread_mutex_lock(&ix->mu);
    int reserved = hnsw_free_reserve(ix, b.ndead) == 0;
    pthread_mutex_unlock(&ix->mu);
    uint32_t next_entry = HNSW_SLOT_NONE;
    int next_level = -1;
    if (!reserved || s_pass(&b, &next_entry, &next_level))
        goto done;

    /* From here on nothing fails. */
    for (int lc = 0; lc <= b.dead_top; lc++) {
        for (size_t i = 0; i < b.in[lc].n; i++)
            s_repair(&b, b.in[lc].v[i], lc);
    }
    int max_level;
    uint32_t ep;
    hnsw_top_unpack(atomic_load(&ix->top), &max_level, &ep);
    if (ep != HNSW_SLOT_NONE && (b.flags[ep] & S_DEAD))
        atomic_store(&ix->top, hnsw_top_pack(next_level, next_entry));
    s_fix_orphans(&b);
    s_fix_empty(&b);
    s_free_slots(&b);
    if (deleted)
        *deleted = b.ndead;
    rc = 0;

done:
    if (rc)
        shoal_err_set(err, rc, "hnsw_delete: out of memory for a batch of %zu", n);
    for (int lc = 0; lc <= HNSW_LEVEL_MAX; lc++)
        free(b.in[lc].v);
    free(b.flags);
    free(b.dead);
    free(b.risk);
    free(b.cands);
    free(b.walk);
    hnsw_scratch_put(ix, b.scr);
    return rc;
}

int hnsw_delete_batch(hnsw_t *index, const uint64_t *ids, size_t n, size_t *deleted,
                      shoal_err_t *err)
{
    if (deleted)
        *deleted = 0;
    if (!index || (n && !ids))
        return shoal_err_set(err, SHOAL_EINVAL,
                             "hnsw_delete_batch: index and ids must not be NULL");
    if (n == 0)
        return 0;
    uint32_t one;
    uint32_t *slots = n == 1 ? &one : malloc(n * sizeof *slots);
    if (!slots)
        return shoal_err_set(err, SHOAL_ENOMEM, "hnsw_delete_batch: out of memory for %zu ids", n);
    pthread_rwlock_wrlock(&index->rw);
    pthread_mutex_lock(&index->mu);
    for (size_t i = 0; i < n; i++)
        slots[i] = ids[i] == HNSW_ID_NONE ? HNSW_SLOT_NONE : hnsw_map_find(index, ids[i]);
    pthread_mutex_unlock(&index->mu);
    int rc = hnsw_delete_slots(index, slots, n, deleted, err);
    pthread_rwlock_unlock(&index->rw);
    if (slots != &one)
        free(slots);
    return rc;
}

int hnsw_delete(hnsw_t *index, uint64_t id, shoal_err_t *err)
{
    size_t deleted;
    int rc = hnsw_delete_batch(index, &id, 1, &deleted, err);
    if (rc == 0 && deleted == 0)
        rc = shoal_err_set(err, SHOAL_ENOTFOUND, "hnsw_delete: id %llu not found",
                           (unsigned long long)id);
    return rc;
}
