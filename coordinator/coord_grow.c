/*
 * coord_grow.c - growing and shrinking the cluster online: shard add, drain
 * and remove, rebalance plans, and the "moves" stats.
 *
 * A move takes one replica of one list from its shard to another. The plan
 * (placement_rebalance: the fewest moves that balance the shards and keep
 * neighbouring lists together) is stored in the catalog as queued moves (V/
 * keys), and the repair engine (coord_repair.c) runs them one at a time
 * after its repairs: start (the target now gets the list's writes), copy
 * (list_export from a readable replica, insert into the target, a chunk per
 * step, throttled), switch (the target owns the replica; the old owner's
 * copy becomes an orphan that keeps getting the list's writes), drop (the
 * orphan is list_dropped there). A search never misses the list (an owner
 * serves it throughout) and never returns an id twice (the merge keeps one
 * copy per id, and every copy is current: extra copies get every write, and
 * one that misses a write is fenced until dropped). A coordinator that
 * restarts finds the moves in the catalog: a copying one starts its copy
 * over, queued ones follow.
 *
 * Drain marks a shard draining (it gets no new lists, placements and plans
 * avoid it) and plans moves of everything it holds; remove takes a drained
 * shard (owning nothing, no copy left there) out of the registry for good:
 * its index stays (placements name shards by index) but it is never routed
 * to again.
 *
 * These ops are answered at once by the loop; they do not wait for the
 * moves. The plan's arithmetic runs on the loop thread: for nlist lists and
 * S shards it is O(nlist x (k + S)) per collection (placement.h), a few ms
 * at nlist 4096.
 *
 * Thread-safety: the loop thread only.
 */
#include "coordinator/coord_private.h"

#include "common/log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_TARGET_IMBALANCE 1.05 /* a plan's goal (max / mean vectors per shard): under the
                                   1.1 promised, so writes during the moves keep it there;
                                   where that costs locality, the promise itself */
#define S_IMBALANCE_PROMISED 1.1
#define S_PLAN_SHOWN_MAX 1000  /* moves listed in a rebalance reply */

/* Replies with info (destroyed), or fails the job when it could not be built. */
static void s_reply(coord_t *coord, coord_job_t *job, wire_info_t *info)
{
    wire_reply_t rep;
    wire_reply_init(&rep);
    rep.op = job->req.op;
    rep.rid = job->req.rid;
    if (!info || wire_info_failed(info)) {
        wire_info_destroy(&info);
        coord_fail(coord, &job, SHOAL_ENOMEM, "%s: out of memory", wire_op_name(job->req.op));
        return;
    }
    rep.info = wire_info_data(info);
    rep.info_len = wire_info_len(info);
    coord_reply(coord, &job, &rep);
    wire_reply_fini(&rep);
    wire_info_destroy(&info);
}

/* The registry index of the request's endpoint (not removed), or SIZE_MAX after failing job. */
static size_t s_shard_named(coord_t *coord, coord_job_t **job_p)
{
    const char *ep = (*job_p)->req.endpoint;
    size_t s = catalog_shard_find(coord->cat, ep);
    if (s == SIZE_MAX || catalog_shard_role(coord->cat, s) == CATALOG_SHARD_REMOVED) {
        coord_fail(coord, job_p, SHOAL_ENOTFOUND, "%s: shard %s is not in the registry%s",
                   wire_op_name((*job_p)->req.op), ep, s == SIZE_MAX ? "" : " (it was removed)");
        return SIZE_MAX;
    }
    return s;
}

/* ------------------------------------------------------------------------ */
/* Plans                                                                    */
/* ------------------------------------------------------------------------ */

/* One planned move kept for a rebalance's reply. */
typedef struct {
    char coll[WIRE_NAME_MAX + 1];
    placement_move_t move;
} s_shown_t;

/* What a plan over every collection comes to. */
typedef struct {
    size_t moves;          /* planned */
    uint64_t vectors;      /* their lists' sizes */
    double imb_before, imb_after;
    double spq_before, spq_after, spq_fresh; /* count-weighted over the collections */
    s_shown_t *shown;      /* NULL, or room for S_PLAN_SHOWN_MAX: the first moves */
    size_t nshown;
} s_plan_t;

/* max / mean of per-shard totals (mean over the live shards); 1 when empty. */
static double s_imbalance(const coord_t *coord, const uint64_t *totals)
{
    uint64_t sum = 0, max = 0;
    size_t live = 0;
    for (size_t s = 0; s < coord->nshards; s++) {
        sum += totals[s];
        max = totals[s] > max ? totals[s] : max;
        live += catalog_shard_role(coord->cat, s) == CATALOG_SHARD_LIVE;
    }
    if (!sum || !live)
        return 1.0;
    return (double)max / ((double)sum / (double)live);
}

/*
 * Plans c's moves (max_moves 0: no cap) and, unless dry, stores them. Adds
 * c's shard totals before and after to tb / ta, and the moves to plan.
 */
static int s_plan_coll(coord_t *coord, const catalog_coll_t *c, const uint8_t *allowed,
                       size_t max_moves, int dry, uint64_t *tb, uint64_t *ta, s_plan_t *plan,
                       shoal_err_t *err)
{
    size_t nown = (size_t)c->nlist * c->replication;
    uint32_t *owners = malloc(nown * sizeof *owners);
    uint8_t *pinned = malloc(nown);
    catalog_move_t *cm = NULL;
    placement_move_t *moves = NULL;
    size_t nmoves = 0;
    placement_plan_report_t rep;
    memset(&rep, 0, sizeof rep);
    int rc = owners && pinned ? 0 : shoal_err_set(err, SHOAL_ENOMEM, "out of memory");
    /* A replica being repaired or copied stays where it is for now. */
    for (size_t j = 0; rc == 0 && j < nown; j++)
        pinned[j] = c->stale[j] || c->move_state[j] == CATALOG_MOVE_COPYING;
    /* The margin under the promise is worth nothing if it breaks the locality goal
       (a move to the far side of the space to shave a few percent): then plan for the
       promise itself. */
    for (int pass = 0; rc == 0 && pass < 2; pass++) {
        free(moves);
        moves = NULL;
        rc = placement_rebalance(c->centroids, c->nlist, c->dim, c->metric, c->list_counts,
                                 coord->nshards, c->replication, c->owners, allowed, pinned,
                                 pass ? S_IMBALANCE_PROMISED : S_TARGET_IMBALANCE,
                                 c->nprobe ? c->nprobe : 1, max_moves, owners, &moves, &nmoves,
                                 &rep, err);
        if (rc != 0 || rep.spq_after <= PLACEMENT_LOCALITY_SLACK * rep.spq_fresh)
            break;
    }
    if (rc == 0 && !dry) {
        cm = malloc((nmoves ? nmoves : 1) * sizeof *cm);
        if (!cm)
            rc = shoal_err_set(err, SHOAL_ENOMEM, "out of memory");
        for (size_t i = 0; rc == 0 && i < nmoves; i++)
            cm[i] = (catalog_move_t){moves[i].list, moves[i].replica, moves[i].to};
        if (rc == 0)
            rc = catalog_moves_plan(coord->cat, c->name, cm, nmoves, err);
    }
    for (size_t j = 0; rc == 0 && j < nown; j++) {
        uint64_t size = c->list_counts[j / c->replication];
        tb[c->owners[j]] += size;
        ta[owners[j]] += size;
    }
    if (rc == 0) {
        double w = (double)(c->count ? c->count : 1);
        plan->spq_before += w * rep.spq_before;
        plan->spq_after += w * rep.spq_after;
        plan->spq_fresh += w * rep.spq_fresh;
        plan->moves += nmoves;
        plan->vectors += rep.vectors_moved;
    }
    for (size_t i = 0; rc == 0 && plan->shown && i < nmoves && plan->nshown < S_PLAN_SHOWN_MAX;
         i++, plan->nshown++) {
        snprintf(plan->shown[plan->nshown].coll, sizeof plan->shown[0].coll, "%s", c->name);
        plan->shown[plan->nshown].move = moves[i];
    }
    if (rc)
        shoal_err_prefix(err, "collection \"%s\"", c->name);
    free(owners);
    free(pinned);
    free(cm);
    free(moves);
    return rc;
}

/*
 * Plans every trained collection's moves over the live shards, storing them
 * unless dry. With plan->shown, the first S_PLAN_SHOWN_MAX moves are kept
 * there for the reply.
 */
static int s_plan_all(coord_t *coord, size_t max_moves, int dry, s_plan_t *plan,
                      shoal_err_t *err)
{
    size_t ns = coord->nshards;
    uint8_t *allowed = malloc(ns ? ns : 1);
    uint64_t *tb = calloc(ns ? ns : 1, sizeof *tb), *ta = calloc(ns ? ns : 1, sizeof *ta);
    int rc = allowed && tb && ta ? 0 : shoal_err_set(err, SHOAL_ENOMEM, "out of memory");
    for (size_t s = 0; rc == 0 && s < ns; s++)
        allowed[s] = catalog_shard_role(coord->cat, s) == CATALOG_SHARD_LIVE;
    uint64_t weight = 0;
    size_t left = max_moves;
    for (size_t i = 0; rc == 0 && i < catalog_coll_count(coord->cat); i++) {
        const catalog_coll_t *c = catalog_coll_at(coord->cat, i);
        if (!c->trained)
            continue;
        size_t before = plan->moves;
        rc = s_plan_coll(coord, c, allowed, max_moves ? left : 0, dry, tb, ta, plan, err);
        weight += c->count ? c->count : 1;
        if (max_moves) {
            left -= plan->moves - before;
            if (left == 0)
                break;
        }
    }
    if (rc == 0) {
        plan->imb_before = s_imbalance(coord, tb);
        plan->imb_after = s_imbalance(coord, ta);
        if (weight) {
            plan->spq_before /= (double)weight;
            plan->spq_after /= (double)weight;
            plan->spq_fresh /= (double)weight;
        }
    }
    free(allowed);
    free(tb);
    free(ta);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Ops                                                                      */
/* ------------------------------------------------------------------------ */

void coord_op_shard_add(coord_t *coord, coord_job_t *job)
{
    shoal_err_t err;
    shoal_err_clear(&err);
    size_t s = 0;
    if (catalog_shard_add(coord->cat, job->req.endpoint, &s, &err) != 0 ||
        coord_shard_link(coord, s, &err) != 0) {
        coord_fail(coord, &job, err.code, "shard_add: %s", err.msg);
        return;
    }
    coord_ensure_collections(coord, s); /* sent once connected: also when first seen up */
    log_info("shard %s added (index %zu); `shoal rebalance` moves lists to it", job->req.endpoint,
             s);
    wire_info_t *info = wire_info_new();
    if (info) {
        wire_info_map(info, 3);
        wire_io_info_str(info, "endpoint", job->req.endpoint);
        wire_io_info_u64(info, "index", s);
        wire_io_info_u64(info, "shards", catalog_shard_count(coord->cat));
    }
    s_reply(coord, job, info);
}

void coord_op_shard_drain(coord_t *coord, coord_job_t *job)
{
    shoal_err_t err;
    shoal_err_clear(&err);
    size_t s = s_shard_named(coord, &job);
    if (s == SIZE_MAX)
        return;
    int was = catalog_shard_role(coord->cat, s);
    size_t left = catalog_shards_live(coord->cat) - (was == CATALOG_SHARD_LIVE);
    for (size_t i = 0; i < catalog_coll_count(coord->cat); i++) {
        const catalog_coll_t *c = catalog_coll_at(coord->cat, i);
        if (c->replication > left) {
            coord_fail(coord, &job, SHOAL_EINVAL,
                       "shard_drain: collection \"%s\" keeps %u replicas of each list on "
                       "distinct shards; draining %s would leave %zu",
                       c->name, c->replication, job->req.endpoint, left);
            return;
        }
    }
    s_plan_t plan;
    memset(&plan, 0, sizeof plan);
    if (catalog_shard_role_set(coord->cat, s, CATALOG_SHARD_DRAINING, &err) != 0 ||
        s_plan_all(coord, 0, 0, &plan, &err) != 0) {
        coord_fail(coord, &job, err.code, "shard_drain: %s", err.msg);
        return;
    }
    coord->repair.moves_planned = plan.moves;
    coord->repair.next_us = 0;
    log_info("shard %s is draining: %zu moves planned (%" PRIu64 " vectors)", job->req.endpoint,
             plan.moves, plan.vectors);
    wire_info_t *info = wire_info_new();
    if (info) {
        wire_info_map(info, 3);
        wire_io_info_str(info, "endpoint", job->req.endpoint);
        wire_io_info_u64(info, "moves", plan.moves);
        wire_io_info_u64(info, "vectors", plan.vectors);
    }
    s_reply(coord, job, info);
}

void coord_op_shard_remove(coord_t *coord, coord_job_t *job)
{
    shoal_err_t err;
    shoal_err_clear(&err);
    size_t s = s_shard_named(coord, &job);
    if (s == SIZE_MAX)
        return;
    if (catalog_shard_role(coord->cat, s) != CATALOG_SHARD_DRAINING) {
        coord_fail(coord, &job, SHOAL_EINVAL,
                   "shard_remove: shard %s is live: drain it first (shoal shard drain)",
                   job->req.endpoint);
        return;
    }
    /* Nothing may be left there: no replica, no move towards it, no copy to drop. */
    size_t owned = 0, moving = 0, orphans = 0;
    const char *where = NULL;
    for (size_t i = 0; i < catalog_coll_count(coord->cat); i++) {
        const catalog_coll_t *c = catalog_coll_at(coord->cat, i);
        size_t before = owned + moving + orphans;
        for (size_t j = 0; c->trained && j < (size_t)c->nlist * c->replication; j++) {
            owned += c->owners[j] == s;
            moving += c->move_state[j] && c->move_to[j] == s;
        }
        for (uint32_t k = 0; k < c->norphans; k++)
            orphans += c->orphans[k].shard == s;
        if (!where && owned + moving + orphans > before)
            where = c->name;
    }
    if (owned || moving || orphans) {
        coord_fail(coord, &job, SHOAL_EINVAL,
                   "shard_remove: shard %s still holds %zu list replica(s), %zu move(s) towards "
                   "it and %zu old copy(ies) to drop (first in \"%s\"); wait for the drain "
                   "(shoal rebalance --wait)",
                   job->req.endpoint, owned, moving, orphans, where ? where : "?");
        return;
    }
    if (catalog_shard_role_set(coord->cat, s, CATALOG_SHARD_REMOVED, &err) != 0) {
        coord_fail(coord, &job, err.code, "shard_remove: %s", err.msg);
        return;
    }
    coord_shard_unlink(coord, s);
    size_t serving = 0;
    for (size_t i = 0; i < coord->nshards; i++)
        serving += !coord->shards[i].removed;
    log_info("shard %s removed from the registry (%zu shards serve)", job->req.endpoint,
             serving);
    wire_info_t *info = wire_info_new();
    if (info) {
        wire_info_map(info, 2);
        wire_io_info_str(info, "endpoint", job->req.endpoint);
        wire_io_info_u64(info, "shards", serving);
    }
    s_reply(coord, job, info);
}

void coord_op_rebalance(coord_t *coord, coord_job_t *job)
{
    const wire_request_t *req = &job->req;
    shoal_err_t err;
    shoal_err_clear(&err);
    s_plan_t plan;
    memset(&plan, 0, sizeof plan);
    plan.shown = malloc(S_PLAN_SHOWN_MAX * sizeof *plan.shown);
    wire_info_t *info = plan.shown ? wire_info_new() : NULL;
    if (!info || s_plan_all(coord, req->max_moves, req->dry_run != 0, &plan, &err) != 0) {
        free(plan.shown);
        wire_info_destroy(&info);
        coord_fail(coord, &job, info ? err.code : SHOAL_ENOMEM, "rebalance: %s",
                   info ? err.msg : "out of memory");
        return;
    }
    wire_info_map(info, 9);
    wire_io_info_u64(info, "dry_run", req->dry_run ? 1 : 0);
    wire_io_info_u64(info, "moves", plan.moves);
    wire_io_info_u64(info, "vectors", plan.vectors);
    wire_io_info_f64(info, "imbalance_before", plan.imb_before);
    wire_io_info_f64(info, "imbalance_after", plan.imb_after);
    wire_io_info_f64(info, "shards_per_query_before", plan.spq_before);
    wire_io_info_f64(info, "shards_per_query_after", plan.spq_after);
    wire_io_info_f64(info, "shards_per_query_fresh", plan.spq_fresh);
    wire_info_key(info, "plan");
    wire_info_array(info, plan.nshown);
    for (size_t i = 0; i < plan.nshown; i++) {
        const placement_move_t *m = &plan.shown[i].move;
        wire_info_map(info, 6);
        wire_io_info_str(info, "coll", plan.shown[i].coll);
        wire_io_info_u64(info, "list", m->list);
        wire_io_info_u64(info, "replica", m->replica);
        wire_io_info_str(info, "from", coord->shards[m->from].endpoint);
        wire_io_info_str(info, "to", coord->shards[m->to].endpoint);
        wire_io_info_u64(info, "vectors", m->vectors);
    }
    free(plan.shown);
    if (!req->dry_run) {
        if (req->rate_mb)
            coord->repair.rate_mb = req->rate_mb;
        coord->repair.moves_planned = plan.moves;
        coord->repair.next_us = 0;
        log_info("rebalance: %zu moves planned (%" PRIu64 " vectors), imbalance %.3f -> %.3f, "
                 "shards per query %.2f -> %.2f",
                 plan.moves, plan.vectors, plan.imb_before, plan.imb_after, plan.spq_before,
                 plan.spq_after);
    }
    s_reply(coord, job, info);
}

/* ------------------------------------------------------------------------ */
/* Stats                                                                    */
/* ------------------------------------------------------------------------ */

void coord_moves_info(coord_t *coord, wire_info_t *info)
{
    const coord_repair_t *rp = &coord->repair;
    uint64_t pending = 0;
    for (size_t i = 0; i < catalog_coll_count(coord->cat); i++)
        pending += catalog_coll_at(coord->cat, i)->nmoves;
    uint64_t orphans = 0;
    for (size_t i = 0; i < catalog_coll_count(coord->cat); i++)
        orphans += catalog_coll_at(coord->cat, i)->norphans;
    int running = rp->active && rp->moving;
    if (running && pending)
        pending--; /* the running one is a catalog move too */
    wire_info_key(info, "moves");
    wire_info_map(info, running ? 10 : 9);
    wire_io_info_u64(info, "orphans", orphans);
    wire_io_info_u64(info, "orphans_dropped", rp->orphans_dropped);
    wire_io_info_u64(info, "pending", pending);
    wire_io_info_u64(info, "running", running ? 1 : 0);
    wire_io_info_u64(info, "done", rp->moves_done);
    wire_io_info_u64(info, "aborted", rp->moves_aborted);
    wire_io_info_u64(info, "rows_copied", rp->move_rows);
    wire_io_info_f64(info, "rows_per_s", rp->move_rows_per_s);
    wire_io_info_u64(info, "rate_mb", rp->rate_mb);
    if (!running)
        return;
    const catalog_coll_t *c = catalog_find(coord->cat, rp->coll);
    uint32_t from = c && rp->list < c->nlist ? catalog_owner(c, rp->list, rp->replica) : 0;
    double secs = (double)(zclock_usecs() - rp->started_us) / 1e6;
    double rate = secs > 0 && rp->copied ? (double)rp->copied / secs : 0;
    uint64_t left = rp->move_vectors > rp->copied ? rp->move_vectors - rp->copied : 0;
    wire_info_key(info, "current");
    wire_info_map(info, 8);
    wire_io_info_str(info, "coll", rp->coll);
    wire_io_info_u64(info, "list", rp->list);
    wire_io_info_u64(info, "replica", rp->replica);
    wire_io_info_str(info, "from", from < coord->nshards ? coord->shards[from].endpoint : "?");
    wire_io_info_str(info, "to", coord->shards[rp->target].endpoint);
    wire_io_info_u64(info, "copied", rp->copied);
    wire_io_info_u64(info, "vectors", rp->move_vectors);
    wire_io_info_f64(info, "eta_s", rate > 0 ? (double)left / rate : 0);
}
