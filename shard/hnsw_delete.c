/*
 * hnsw_delete.c - real deletion: unlink, repair the neighbours, free the slot.
 *
 * The paper has no deletion. Marking nodes deleted and skipping them (what
 * hnswlib does by default) lets dead nodes pile up in the graph and in the
 * memory; this file removes a node x for good:
 *
 *   1. Find every in-neighbour of x, on every layer: nodes whose list holds
 *      x. Links are one-way after pruning, so x's own lists do not name them
 *      all; they are found by one pass over the slots (O(n * M0) reads of
 *      contiguous link lists). Keeping reverse lists would make this O(M^2)
 *      but costs memory on every node and a second list to keep consistent
 *      under concurrent inserts; the pass is what we chose. TODO: a batched
 *      delete could share one pass among many ids.
 *   2. Repair each in-neighbour y on that layer: its candidates are its
 *      remaining links plus x's links (the two-hop paths y -> x -> z that
 *      the deletion cut). When they fit in y's list they are all kept (as an
 *      insert keeps links while a list has room); otherwise they are
 *      re-selected with the heuristic (Algorithm 4).
 *   3. Keep every node reachable: an out-neighbour z of x whose only way in
 *      on layer 0 was x (in-degree 0 after the repair, counted during the
 *      pass and kept up to date by the repair) gets a link from its nearest
 *      candidate; a node left with no out-links at all (its only link was x,
 *      and x had no others) is re-linked by a search, as a new insert would.
 *   4. If x was the entry point, the live node on the highest level becomes
 *      the entry point (the pass finds it); an empty index has none.
 *   5. x's slot goes on the free list; the next insert reuses it.
 *
 * Runs with the write lock held (searches and inserts are waiting), so none
 * of it races with readers; node locks are not needed.
 */
#include "shard/hnsw.h"

#include "common/log.h"
#include "shard/hnsw_private.h"

#include <stdlib.h>
#include <string.h>

/* A growable list of slots. */
typedef struct {
    uint32_t *v; /* slots */
    size_t n;    /* used */
    size_t cap;  /* allocated */
} s_slots_t;

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

/*
 * Step 2 for one in-neighbour y of x on layer lc: drops x from y's list and
 * refills it from y's other links and xl (x's links). Updates indeg for the
 * members of x0 (x's layer-0 links) when lc is 0. Returns y's new count.
 */
static size_t s_repair(hnsw_t *ix, uint32_t y, uint32_t x, int lc, const uint32_t *xl, size_t nx,
                       const uint32_t *x0, size_t n0, unsigned *indeg)
{
    size_t cap = hnsw_cap(ix, lc);
    uint32_t *l = hnsw_links(ix, y, lc);
    hnsw_cand_t c[2 * HNSW_LINKS_MAX];
    size_t nc = 0;
    const float *vy = hnsw_vec(ix, y);
    for (int pass = 0; pass < 2; pass++) {
        const uint32_t *src = pass == 0 ? l + 1 : xl;
        size_t n = pass == 0 ? l[0] : nx;
        for (size_t i = 0; i < n; i++) {
            uint32_t s = src[i];
            if (s == x || s == y)
                continue;
            size_t j = 0;
            while (j < nc && c[j].slot != s)
                j++;
            if (j < nc)
                continue;
            c[nc].slot = s;
            c[nc].dist = hnsw_dist(ix, vy, hnsw_vec(ix, s));
            nc++;
        }
    }
    if (lc == 0) {
        for (size_t i = 0; i < l[0]; i++) {
            size_t j = s_find(x0, n0, l[1 + i]);
            if (j < n0)
                indeg[j]--;
        }
    }
    hnsw_cand_sort(c, nc);
    l[0] = (uint32_t)hnsw_select(ix, c, nc, cap, l + 1);
    if (lc == 0) {
        for (size_t i = 0; i < l[0]; i++) {
            size_t j = s_find(x0, n0, l[1 + i]);
            if (j < n0)
                indeg[j]++;
        }
    }
    return l[0];
}

/* Step 3, layer 0: gives z an in-link from the nearest of cands (not z). */
static int s_adopt(hnsw_t *ix, uint32_t z, const uint32_t *cands, size_t n)
{
    const float *vz = hnsw_vec(ix, z);
    uint32_t best = HNSW_SLOT_NONE;
    float best_dist = 0;
    for (size_t i = 0; i < n; i++) {
        if (cands[i] == z)
            continue;
        float d = hnsw_dist(ix, vz, hnsw_vec(ix, cands[i]));
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
    const float *vb = hnsw_vec(ix, best);
    size_t far = 0;
    float far_dist = -1.0f;
    for (size_t i = 0; i < l[0]; i++) {
        float d = hnsw_dist(ix, vb, hnsw_vec(ix, l[1 + i]));
        if (d > far_dist) {
            far_dist = d;
            far = i;
        }
    }
    l[1 + far] = z;
    return 1;
}

/* Step 3, no out-links left: links y on layer lc as an insert would. */
static void s_relink(hnsw_t *ix, hnsw_scratch_t *scr, uint32_t y, int lc)
{
    int max_level;
    uint32_t ep;
    hnsw_top_unpack(atomic_load(&ix->top), &max_level, &ep);
    if (ep == HNSW_SLOT_NONE || max_level < lc)
        return;
    const float *v = hnsw_vec(ix, y);
    float d = hnsw_dist(ix, v, hnsw_vec(ix, ep));
    for (int l = max_level; l > lc; l--)
        hnsw_greedy(ix, v, l, &ep, &d);
    hnsw_cand_t start = {d, ep};
    long nr = hnsw_search_layer(ix, scr, v, &start, 1, ix->ef_construction, lc, NULL, NULL);
    hnsw_cand_t *w = nr > 0 ? malloc((size_t)nr * sizeof *w) : NULL;
    if (!w) {
        if (nr != 0)
            LOG_WARN("hnsw: out of memory re-linking slot %u; it keeps no links", y);
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

int hnsw_delete_slot(hnsw_t *ix, uint32_t x, shoal_err_t *err)
{
    hnsw_node_t *xn = hnsw_node(ix, x);
    int lx = xn->level;
    s_slots_t in[HNSW_LEVEL_MAX + 1];
    memset(in, 0, sizeof in);
    s_slots_t empty = {0};
    hnsw_scratch_t *scr = hnsw_scratch_get(ix);
    int rc = 0;
    /* Reserve the free-list room now so nothing can fail once links change. */
    pthread_mutex_lock(&ix->mu); /* hnsw_stats reads the free list meanwhile */
    int reserved = hnsw_free_push(ix, x) == 0;
    if (reserved)
        ix->nfree--;
    pthread_mutex_unlock(&ix->mu);
    if (!scr || !reserved || hnsw_scratch_begin(ix, scr)) {
        rc = shoal_err_set(err, SHOAL_ENOMEM, "hnsw_delete: out of memory");
        goto done;
    }

    /* Step 1: one pass finds the in-neighbours per layer, the in-degrees of
     * x's layer-0 links, and the next entry point. */
    uint32_t x0[HNSW_LINKS_MAX];
    size_t n0 = hnsw_links_copy(ix, x, 0, x0);
    unsigned indeg[HNSW_LINKS_MAX] = {0};
    for (size_t i = 0; i < n0; i++)
        scr->tags[x0[i]] = scr->epoch;
    uint32_t next_entry = HNSW_SLOT_NONE;
    int next_level = -1;
    for (size_t s = 0; s < ix->nslots; s++) {
        hnsw_node_t *node = hnsw_node(ix, (uint32_t)s);
        if (node->level < 0 || s == x)
            continue;
        if (node->level > next_level) {
            next_level = node->level;
            next_entry = (uint32_t)s;
        }
        int top = node->level < lx ? node->level : lx;
        for (int lc = 0; lc <= top; lc++) {
            const uint32_t *l = hnsw_links(ix, (uint32_t)s, lc);
            for (size_t i = 0; i < l[0]; i++) {
                uint32_t t = l[1 + i];
                if (t == x) {
                    if (s_slots_push(&in[lc], (uint32_t)s)) {
                        rc = shoal_err_set(err, SHOAL_ENOMEM, "hnsw_delete: out of memory");
                        goto done;
                    }
                } else if (lc == 0 && scr->tags[t] == scr->epoch) {
                    indeg[s_find(x0, n0, t)]++;
                }
            }
        }
    }

    /* Step 2: repair the in-neighbours, layer by layer. */
    for (int lc = 0; lc <= lx; lc++) {
        uint32_t xl[HNSW_LINKS_MAX];
        size_t nx = hnsw_links_copy(ix, x, lc, xl);
        for (size_t i = 0; i < in[lc].n; i++) {
            uint32_t y = in[lc].v[i];
            /* On OOM the node keeps no out-links on this layer; still valid. */
            if (s_repair(ix, y, x, lc, xl, nx, x0, n0, indeg) == 0)
                (void)s_slots_push(&empty, y);
        }
    }

    /* Step 4: a new entry point when x was it. */
    int max_level;
    uint32_t ep;
    hnsw_top_unpack(atomic_load(&ix->top), &max_level, &ep);
    if (ep == x)
        atomic_store(&ix->top, hnsw_top_pack(next_level, next_entry));

    /* Step 5: free the slot. */
    pthread_mutex_lock(&ix->mu);
    hnsw_map_remove(ix, xn->id);
    hnsw_upper_free(ix, xn);
    xn->id = HNSW_ID_NONE;
    xn->level = -1;
    hnsw_links(ix, x, 0)[0] = 0;
    ix->free_slots[ix->nfree++] = x;
    pthread_mutex_unlock(&ix->mu);
    atomic_fetch_sub(&ix->count, 1);
    atomic_fetch_add(&ix->deletes, 1);

    /* Step 3: nobody left unreachable or without a way out. */
    for (size_t i = 0; i < n0; i++) {
        if (indeg[i] == 0) {
            uint32_t cands[2 * HNSW_LINKS_MAX];
            size_t nc = hnsw_links_copy(ix, x0[i], 0, cands);
            memcpy(cands + nc, x0, n0 * sizeof *x0);
            if (!s_adopt(ix, x0[i], cands, nc + n0))
                s_relink(ix, scr, x0[i], 0);
        }
    }
    for (size_t i = 0; i < empty.n; i++) {
        uint32_t y = empty.v[i];
        for (int lc = 0; lc <= hnsw_node(ix, y)->level && lc <= lx; lc++) {
            if (hnsw_links(ix, y, lc)[0] == 0)
                s_relink(ix, scr, y, lc);
        }
    }

done:
    for (int lc = 0; lc <= HNSW_LEVEL_MAX; lc++)
        free(in[lc].v);
    free(empty.v);
    hnsw_scratch_put(ix, scr);
    return rc;
}

int hnsw_delete(hnsw_t *index, uint64_t id, shoal_err_t *err)
{
    if (!index)
        return shoal_err_set(err, SHOAL_EINVAL, "hnsw_delete: index is NULL");
    pthread_rwlock_wrlock(&index->rw);
    pthread_mutex_lock(&index->mu);
    uint32_t slot = id == HNSW_ID_NONE ? HNSW_SLOT_NONE : hnsw_map_find(index, id);
    pthread_mutex_unlock(&index->mu);
    int rc = slot == HNSW_SLOT_NONE
                 ? shoal_err_set(err, SHOAL_ENOTFOUND, "hnsw_delete: id %llu not found",
                                 (unsigned long long)id)
                 : hnsw_delete_slot(index, slot, err);
    pthread_rwlock_unlock(&index->rw);
    return rc;
}
