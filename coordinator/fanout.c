/*
 * fanout.c - the fan-out plan and the merge of shard answers (see fanout.h).
 *
 * Plan: two passes over the probed lists (s_plan_pass). A stamp per shard
 * (the last query that marked it) makes "distinct shards of query q"
 * O(nprobe) without sorting; the first pass counts, the second fills, so each
 * shard's query indexes come out ascending because queries are visited in
 * order.
 *
 * Merge: the running row of a query is sorted and holds each id once. A
 * shard's row is merged into it like the merge step of merge sort, taking the
 * better head each time under topk_better's order; because pairs leave best
 * first, the first copy of an id to leave is its nearest one, and any later
 * copy is skipped. "Already taken" is a small open-addressing hash set of the
 * ids emitted for this row (at most k), so a merge costs O(k + kk) instead of
 * the O(k^2) of scanning the output. The set lives after the k scratch ids in
 * the scratch_ids block (fanout_merge_init allocates k + s_hash_cap(k) slots)
 * and is cleared per row.
 *
 * Shard rows are outside input: padding (TOPK_ID_NONE) anywhere in them and
 * NaN distances are skipped, a query index >= nq drops the row; nothing here
 * asserts on them.
 */
#include "coordinator/fanout.h"

#include "common/topk.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Plan                                                                     */
/* ------------------------------------------------------------------------ */

/*
 * One pass over the probed lists, visiting each (query, distinct shard) pair
 * once in query order (stamp[s] = q + 1 once s is visited for q; stamp is
 * zeroed on entry). Without out: counts them into plan->counts / per_query /
 * fanout. With out: appends q to out[s] at cursor fill[s].
 */
static void s_plan_pass(fanout_plan_t *plan, const uint32_t *lists, size_t nprobe,
                        const uint32_t *owners, size_t *stamp, uint32_t **out, size_t *fill)
{
    memset(stamp, 0, plan->nshards * sizeof *stamp);
    for (size_t q = 0; q < plan->nq; q++) {
        const uint32_t *row = lists + q * nprobe;
        for (size_t p = 0; p < nprobe; p++) {
            uint32_t s = owners[row[p]];
            if (stamp[s] == q + 1)
                continue;
            stamp[s] = q + 1;
            if (out) {
                out[s][fill[s]++] = (uint32_t)q;
            } else {
                plan->counts[s]++;
                plan->per_query[q]++;
                plan->fanout++;
            }
        }
    }
}

int fanout_plan_build(const uint32_t *lists, size_t nq, size_t nprobe, const uint32_t *owners,
                      size_t nlist, size_t nshards, fanout_plan_t *plan, shoal_err_t *err)
{
    memset(plan, 0, sizeof *plan);
    plan->nshards = nshards;
    plan->nq = nq;
    for (size_t l = 0; l < nlist; l++)
        if (owners[l] >= nshards)
            return shoal_err_set(err, SHOAL_EINVAL,
                                 "list %zu is owned by shard %u, only %zu shards", l, owners[l],
                                 nshards);
    for (size_t i = 0; i < nq * nprobe; i++)
        if (lists[i] >= nlist)
            return shoal_err_set(err, SHOAL_EINVAL, "query %zu probes list %u, only %zu lists",
                                 i / nprobe, lists[i], nlist);

    int rc = 0;
    size_t *stamp = calloc(nshards ? nshards : 1, sizeof *stamp);
    size_t *fill = calloc(nshards ? nshards : 1, sizeof *fill);
    plan->counts = calloc(nshards ? nshards : 1, sizeof *plan->counts);
    plan->queries = calloc(nshards ? nshards : 1, sizeof *plan->queries);
    plan->per_query = calloc(nq ? nq : 1, sizeof *plan->per_query);
    if (!stamp || !fill || !plan->counts || !plan->queries || !plan->per_query)
        goto nomem;

    /* Pass 1 counts; pass 2 fills in query order, so each sub-batch is ascending. */
    s_plan_pass(plan, lists, nprobe, owners, stamp, NULL, NULL);
    for (size_t s = 0; s < nshards; s++) {
        if (plan->counts[s] == 0)
            continue;
        plan->queries[s] = malloc(plan->counts[s] * sizeof *plan->queries[s]);
        if (!plan->queries[s])
            goto nomem;
    }
    s_plan_pass(plan, lists, nprobe, owners, stamp, plan->queries, fill);
    free(stamp);
    free(fill);
    return 0;
nomem:
    rc = shoal_err_set(err, SHOAL_ENOMEM, "out of memory planning %zu queries over %zu shards", nq,
                       nshards);
    free(stamp);
    free(fill);
    fanout_plan_fini(plan);
    return rc;
}

void fanout_plan_fini(fanout_plan_t *plan)
{
    if (!plan)
        return;
    if (plan->queries)
        for (size_t s = 0; s < plan->nshards; s++)
            free(plan->queries[s]);
    free(plan->queries);
    free(plan->counts);
    free(plan->per_query);
    memset(plan, 0, sizeof *plan);
}

void fanout_gather(const fanout_plan_t *plan, size_t s, const float *queries, size_t dim,
                   float *out)
{
    if (s >= plan->nshards)
        return;
    for (size_t i = 0; i < plan->counts[s]; i++)
        memcpy(out + i * dim, queries + (size_t)plan->queries[s][i] * dim, dim * sizeof *out);
}

/* ------------------------------------------------------------------------ */
/* Merge                                                                    */
/* ------------------------------------------------------------------------ */

/* Slots of the "emitted ids" set for a row of k: a power of two >= 2k. */
static size_t s_hash_cap(size_t k)
{
    size_t cap = 16;
    while (cap < 2 * k)
        cap *= 2;
    return cap;
}

/* Adds id to the set (empty slots hold TOPK_ID_NONE). Returns 0 if it was there. */
static int s_hash_add(uint64_t *set, size_t cap, uint64_t id)
{
    size_t mask = cap - 1;
    size_t h = (size_t)((id * 0x9E3779B97F4A7C15ull) >> 32) & mask;
    while (set[h] != TOPK_ID_NONE) {
        if (set[h] == id)
            return 0;
        h = (h + 1) & mask;
    }
    set[h] = id;
    return 1;
}

int fanout_merge_init(fanout_merge_t *m, size_t nq, size_t k, shoal_err_t *err)
{
    memset(m, 0, sizeof *m);
    if (k == 0)
        return shoal_err_set(err, SHOAL_EINVAL, "k must be >= 1, got 0");
    if (nq > SIZE_MAX / sizeof(uint64_t) / k || k > SIZE_MAX / 4 / sizeof(uint64_t))
        return shoal_err_set(err, SHOAL_ENOMEM, "%zu queries x k %zu is too large", nq, k);
    size_t cells = nq * k;
    m->nq = nq;
    m->k = k;
    m->ids = malloc((cells ? cells : 1) * sizeof *m->ids);
    m->dists = malloc((cells ? cells : 1) * sizeof *m->dists);
    m->scratch_ids = malloc((k + s_hash_cap(k)) * sizeof *m->scratch_ids);
    m->scratch_dists = malloc(k * sizeof *m->scratch_dists);
    if (!m->ids || !m->dists || !m->scratch_ids || !m->scratch_dists) {
        fanout_merge_fini(m);
        return shoal_err_set(err, SHOAL_ENOMEM, "out of memory for %zu queries x k %zu", nq, k);
    }
    for (size_t i = 0; i < cells; i++) {
        m->ids[i] = TOPK_ID_NONE;
        m->dists[i] = INFINITY;
    }
    return 0;
}

void fanout_merge_fini(fanout_merge_t *m)
{
    if (!m)
        return;
    free(m->ids);
    free(m->dists);
    free(m->scratch_ids);
    free(m->scratch_dists);
    memset(m, 0, sizeof *m);
}

/* Merges one candidate row (kk pairs, best first, padding allowed) into row q. */
static void s_merge_row(fanout_merge_t *m, size_t q, const uint64_t *cids, const float *cdists,
                        size_t kk)
{
    size_t k = m->k, hcap = s_hash_cap(k);
    uint64_t *row_ids = m->ids + q * k;
    float *row_dists = m->dists + q * k;
    uint64_t *out_ids = m->scratch_ids;
    float *out_dists = m->scratch_dists;
    uint64_t *set = m->scratch_ids + k;
    for (size_t h = 0; h < hcap; h++)
        set[h] = TOPK_ID_NONE;

    size_t i = 0, j = 0, out = 0;
    while (out < k) {
        while (j < kk && (cids[j] == TOPK_ID_NONE || isnan(cdists[j])))
            j++;
        int have_a = i < k && row_ids[i] != TOPK_ID_NONE;
        int have_b = j < kk;
        if (!have_a && !have_b)
            break;
        uint64_t id;
        float dist;
        /* On a full tie (same pair) the running row's copy goes first. */
        if (have_a && (!have_b || !topk_better(cdists[j], cids[j], row_dists[i], row_ids[i]))) {
            id = row_ids[i];
            dist = row_dists[i++];
        } else {
            id = cids[j];
            dist = cdists[j++];
        }
        if (!s_hash_add(set, hcap, id))
            continue; /* a nearer copy of this id was taken already */
        out_ids[out] = id;
        out_dists[out++] = dist;
    }
    memcpy(row_ids, out_ids, out * sizeof *row_ids);
    memcpy(row_dists, out_dists, out * sizeof *row_dists);
    for (size_t p = out; p < k; p++) {
        row_ids[p] = TOPK_ID_NONE;
        row_dists[p] = INFINITY;
    }
}

void fanout_merge_add(fanout_merge_t *m, const uint32_t *qidx, size_t n, const uint64_t *ids,
                      const float *dists, size_t kk)
{
    if (kk == 0)
        return;
    for (size_t i = 0; i < n; i++) {
        if (qidx[i] >= m->nq)
            continue;
        s_merge_row(m, qidx[i], ids + i * kk, dists + i * kk, kk);
    }
}
