/*
 * coord_stats.c - the coordinator's own answers: ping (liveness, shards up)
 * and stats (shards' health, collections with their per-shard counts,
 * request and error counters, fan-out histogram, latency percentiles,
 * pending intents). docs/protocol.md lists the keys. Loop thread only.
 */
#include "coordinator/coord_private.h"

#include "common/log.h"
#include "shard/hnsw.h" /* the HNSW build defaults (no code linked) */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Ping and stats                                                           */
/* ------------------------------------------------------------------------ */

static double s_uptime(const coord_t *coord)
{
    return (double)(zclock_usecs() - coord->start_us) / 1e6;
}

static size_t s_shards_up(const coord_t *coord)
{
    size_t up = 0;
    for (size_t s = 0; s < coord->nshards; s++)
        up += coord->shards[s].state == COORD_SHARD_UP;
    return up;
}

/* Shards in the registry that were not removed. */
static size_t s_shards_serving(const coord_t *coord)
{
    size_t n = 0;
    for (size_t s = 0; s < coord->nshards; s++)
        n += !coord->shards[s].removed;
    return n;
}

static const char *s_role_name(int role)
{
    return role == CATALOG_SHARD_LIVE ? "live" : role == CATALOG_SHARD_DRAINING ? "draining"
                                                                                : "removed";
}

static void s_reply_info(coord_t *coord, coord_job_t *job, wire_info_t *info)
{
    wire_reply_t rep;
    wire_reply_init(&rep);
    rep.op = job->req.op;
    rep.rid = job->req.rid;
    if (wire_io_reply_info(&rep, info) != 0) {
        wire_reply_fini(&rep);
        wire_info_destroy(&info);
        coord_fail(coord, &job, SHOAL_ENOMEM, "%s: no memory for the info map",
                   wire_io_op_name(job->req.op));
        return;
    }
    coord_reply(coord, &job, &rep);
    wire_reply_fini(&rep);
    wire_info_destroy(&info);
}

void coord_op_ping(coord_t *coord, coord_job_t *job)
{
    wire_info_t *info = wire_info_new();
    if (info) {
        wire_info_map(info, 6);
        wire_io_info_str(info, "role", "coordinator");
        wire_io_info_u64(info, "version", WIRE_VERSION);
        wire_io_info_f64(info, "uptime_s", s_uptime(coord));
        wire_io_info_u64(info, "shards", s_shards_serving(coord));
        wire_io_info_u64(info, "shards_up", s_shards_up(coord));
        wire_io_info_u64(info, "inflight", coord->client_jobs);
    }
    s_reply_info(coord, job, info);
}

static const char *s_state_name(coord_shard_state_t state)
{
    return state == COORD_SHARD_UP ? "up" : state == COORD_SHARD_DOWN ? "down" : "unknown";
}

static void s_info_shards(coord_t *coord, wire_info_t *info)
{
    int64_t now = zclock_usecs();
    wire_info_key(info, "shards");
    wire_info_map(info, coord->nshards);
    for (size_t s = 0; s < coord->nshards; s++) {
        const coord_shard_t *shard = &coord->shards[s];
        wire_info_key(info, shard->endpoint);
        wire_info_map(info, shard->last_seen_us ? 5 : 4);
        wire_io_info_u64(info, "index", s);
        wire_io_info_str(info, "role", s_role_name(catalog_shard_role(coord->cat, s)));
        wire_io_info_str(info, "state", s_state_name(shard->state));
        wire_io_info_u64(info, "up", shard->state == COORD_SHARD_UP);
        if (shard->last_seen_us) /* absent before the first answer */
            wire_io_info_f64(info, "last_seen_ms_ago",
                             (double)(now - shard->last_seen_us) / 1000.0);
    }
}

/* A collection's interrupted writes (0, logged, when they cannot be read). */
static size_t s_intents_count(coord_t *coord, const char *name)
{
    catalog_intent_t *intents = NULL;
    size_t n = 0;
    shoal_err_t err;
    shoal_err_clear(&err);
    if (catalog_intents(coord->cat, name, &intents, &n, &err) != 0) {
        log_warn("stats: collection \"%s\": reading the intents: %s", name, err.msg);
        return 0;
    }
    catalog_intents_free(intents, n);
    return n;
}

/* Appends list l to the ranges text "0-3,7" in buf (cap bytes; "..." when full). */
static void s_ranges_add(char *buf, size_t cap, uint32_t *last, uint32_t l)
{
    size_t len = strlen(buf);
    if (len + 16 >= cap) {
        if (len + 4 < cap && !strstr(buf, "..."))
            snprintf(buf + len, cap - len, "...");
        return;
    }
    if (*last != UINT32_MAX && l == *last + 1) {
        char *dash = strrchr(buf, '-'), *comma = strrchr(buf, ',');
        if (dash && (!comma || dash > comma))
            *dash = '\0'; /* "a-b" becomes "a-" + l below */
        len = strlen(buf);
        snprintf(buf + len, cap - len, "-%u", l);
    } else {
        snprintf(buf + len, cap - len, "%s%u", len ? "," : "", l);
    }
    *last = l;
}

/*
 * Per shard (by index): its endpoint, the vectors it holds over all its
 * replicas, the lists it holds as primary and as replica (ranges), how many
 * of them are stale, and whether it is fenced. placement: list -> replica ->
 * shard, and "stale", a bit per stale replica (one collection's stats).
 */
static void s_info_replicas(coord_t *coord, wire_info_t *info, const catalog_coll_t *c,
                            const uint64_t *counts, int placement)
{
    char key[24], prim[256], repl[256];
    wire_info_key(info, "shards");
    wire_info_map(info, coord->nshards);
    for (size_t s = 0; s < coord->nshards; s++) {
        uint32_t lp = UINT32_MAX, lr = UINT32_MAX;
        uint64_t stale = 0;
        prim[0] = repl[0] = '\0';
        for (uint32_t l = 0; c->trained && l < c->nlist; l++) {
            for (uint32_t r = 0; r < c->replication; r++) {
                if (catalog_owner(c, l, r) != s)
                    continue;
                if (r == 0)
                    s_ranges_add(prim, sizeof prim, &lp, l);
                else
                    s_ranges_add(repl, sizeof repl, &lr, l);
                stale += c->stale[(size_t)l * c->replication + r] != 0;
            }
        }
        snprintf(key, sizeof key, "%zu", s);
        wire_info_key(info, key);
        wire_info_map(info, 6);
        wire_io_info_str(info, "endpoint", coord->shards[s].endpoint);
        wire_io_info_u64(info, "vectors", counts[s]);
        wire_io_info_str(info, "primary", prim);
        wire_io_info_str(info, "replica", repl);
        wire_io_info_u64(info, "stale", stale);
        wire_io_info_u64(info, "fenced", coord->shards[s].fenced ? 1 : 0);
    }
    if (!placement)
        return;
    wire_info_key(info, "placement");
    wire_info_map(info, c->trained ? c->nlist : 0);
    for (uint32_t l = 0; c->trained && l < c->nlist; l++) {
        snprintf(key, sizeof key, "%u", l);
        wire_info_key(info, key);
        wire_info_map(info, c->replication + 1);
        uint64_t stale = 0;
        for (uint32_t r = 0; r < c->replication; r++) {
            snprintf(key, sizeof key, "%u", r);
            wire_io_info_u64(info, key, catalog_owner(c, l, r));
            stale |= (uint64_t)(c->stale[(size_t)l * c->replication + r] != 0) << r;
        }
        wire_io_info_u64(info, "stale", stale); /* bit r: replica r is stale */
    }
}

/*
 * One collection's map; intents is its pending-intent count, counts / lists
 * are nshards scratch entries for the per-shard sums; placement: add the
 * list -> shards table (one collection's stats).
 */
static void s_info_collection(coord_t *coord, wire_info_t *info, const catalog_coll_t *c,
                              size_t intents, uint64_t *counts, uint64_t *lists, int placement)
{
    const coord_repair_t *rp = &coord->repair;
    wire_info_key(info, c->name);
    wire_info_map(info, 16 + (placement ? 1 : 0));
    wire_io_info_u64(info, "replication", c->replication);
    wire_io_info_u64(info, "write_quorum", c->write_quorum);
    wire_io_info_u64(info, "stale_lists", c->nstale);
    wire_io_info_u64(info, "repairing", rp->active && !strcmp(rp->coll, c->name));
    wire_io_info_u64(info, "dim", c->dim);
    wire_io_info_str(info, "metric", shoal_metric_name(c->metric));
    wire_io_info_u64(info, "nlist", c->nlist);
    wire_io_info_u64(info, "nprobe", c->nprobe);
    /* 0: a collection created before the coordinator filled in the shards'
     * defaults (coord_op_create); the shards built it with theirs. */
    wire_io_info_u64(info, "M", c->M ? c->M : HNSW_M_DEFAULT);
    wire_io_info_u64(info, "ef_construction",
                     c->ef_construction ? c->ef_construction : HNSW_EF_CONSTRUCTION_DEFAULT);
    wire_io_info_u64(info, "trained", c->trained ? 1 : 0);
    wire_io_info_u64(info, "count", c->count);
    wire_io_info_u64(info, "pending_intents", intents);
    /* Per shard (by index): vectors and lists it owns. */
    memset(counts, 0, coord->nshards * sizeof *counts);
    memset(lists, 0, coord->nshards * sizeof *lists);
    for (size_t j = 0; c->trained && j < (size_t)c->nlist * c->replication; j++) {
        if (c->owners[j] < coord->nshards) {
            counts[c->owners[j]] += c->list_counts[j / c->replication];
            lists[c->owners[j]]++;
        }
    }
    char key[24];
    wire_info_key(info, "shard_counts");
    wire_info_map(info, coord->nshards);
    for (size_t s = 0; s < coord->nshards; s++) {
        snprintf(key, sizeof key, "%zu", s);
        wire_io_info_u64(info, key, counts[s]);
    }
    wire_info_key(info, "shard_lists");
    wire_info_map(info, coord->nshards);
    for (size_t s = 0; s < coord->nshards; s++) {
        snprintf(key, sizeof key, "%zu", s);
        wire_io_info_u64(info, key, lists[s]);
    }
    s_info_replicas(coord, info, c, counts, placement);
}

static void s_info_process(coord_t *coord, wire_info_t *info)
{
    wire_io_info_counters(info, "requests", coord->counters.requests);
    wire_io_info_counters(info, "errors", coord->counters.errors);

    /* Fan-out: shards per query over every search since start. */
    double p99 = 0;
    if (coord->fanout_queries) {
        uint64_t rank = (uint64_t)ceil(0.99 * (double)coord->fanout_queries), seen = 0;
        for (size_t v = 0; v <= coord->nshards; v++) {
            seen += coord->fanout_hist[v];
            if (seen >= rank) {
                p99 = (double)v;
                break;
            }
        }
    }
    wire_info_key(info, "fanout");
    wire_info_map(info, 3);
    wire_io_info_u64(info, "queries", coord->fanout_queries);
    wire_io_info_f64(
        info, "mean",
        coord->fanout_queries ? (double)coord->fanout_sum / (double)coord->fanout_queries : 0.0);
    wire_io_info_f64(info, "p99", p99);

    size_t with = 0;
    for (size_t op = 0; op < WIRE_OP_COUNT; op++)
        with += coord->counters.latency_len[op] > 0;
    wire_info_key(info, "latency_ms");
    wire_info_map(info, with);
    for (size_t op = 0; op < WIRE_OP_COUNT; op++) {
        double p50, p95, p99_us;
        size_t n = wire_io_latency(&coord->counters, op, &p50, &p95, &p99_us);
        if (!n)
            continue;
        wire_info_key(info, wire_io_op_label(op));
        wire_info_map(info, 4);
        wire_io_info_f64(info, "p50", p50 / 1000.0);
        wire_io_info_f64(info, "p95", p95 / 1000.0);
        wire_io_info_f64(info, "p99", p99_us / 1000.0);
        wire_io_info_u64(info, "samples", n);
    }
}

void coord_op_stats(coord_t *coord, coord_job_t *job)
{
    const char *name = job->req.coll[0] ? job->req.coll : NULL;
    shoal_err_t err;
    shoal_err_clear(&err);
    const catalog_coll_t *one = NULL;
    if (name && !(one = coord_coll(coord, name, &err))) {
        coord_fail(coord, &job, err.code, "%s", err.msg);
        return;
    }
    size_t ncolls = one ? 1 : catalog_coll_count(coord->cat);
    /* Each collection's intents are read once (a catalog scan), then reused. */
    size_t *intents = calloc(ncolls ? ncolls : 1, sizeof *intents);
    uint64_t *scratch = calloc(2 * coord->nshards, sizeof *scratch);
    wire_info_t *info = intents && scratch ? wire_info_new() : NULL;
    if (!info) {
        free(intents);
        free(scratch);
        coord_fail(coord, &job, SHOAL_ENOMEM, "stats: out of memory");
        return;
    }
    size_t intents_all = 0;
    for (size_t i = 0; i < ncolls; i++) {
        intents[i] = s_intents_count(coord, one ? one->name : catalog_coll_at(coord->cat, i)->name);
        intents_all += intents[i];
    }
    if (one) {
        wire_info_map(info, 4);
    } else {
        wire_info_map(info, 24 + WIRE_IO_BUDGET_INFO_ENTRIES);
        wire_io_info_str(info, "endpoint", coord->endpoint);
        wire_io_info_str(info, "data_dir", coord->data_dir);
        wire_io_info_str(info, "device", coord->device);
        wire_io_info_u64(info, "version", WIRE_VERSION);
        wire_io_info_u64(info, "shards_up", s_shards_up(coord));
        wire_io_info_u64(info, "inflight", coord->client_jobs);
        wire_io_info_u64(info, "writes_queued", coord->fifo_len);
        wire_io_info_u64(info, "pending_intents", intents_all);
        wire_io_info_u64(info, "writes_running", coord->writes_running);
        /* Re-drive of interrupted writes (coord_write.c): sent, finished, waiting for a shard. */
        wire_io_info_u64(info, "redrive_attempts", coord->redrive_attempts);
        wire_io_info_u64(info, "redrive_settled", coord->redrive_settled);
        wire_io_info_u64(info, "redrive_waiting", zhashx_size(coord->redrive_waits));
        wire_io_info_u64(info, "repairs", coord->repairs);
        wire_io_info_u64(info, "hedged", coord->hedged);
        coord_repair_info(coord, info);
        coord_moves_info(coord, info);
        s_info_process(coord, info); /* 4 entries */
        wire_io_budget_stats_t replies;
        wire_io_budget_stats(coord->reply_budget, &replies);
        wire_io_info_budget(info, &replies);
    }
    wire_io_info_str(info, "role", "coordinator");
    wire_io_info_f64(info, "uptime_s", s_uptime(coord));
    s_info_shards(coord, info);
    wire_info_key(info, "collections");
    wire_info_map(info, ncolls);
    for (size_t i = 0; i < ncolls; i++)
        s_info_collection(coord, info, one ? one : catalog_coll_at(coord->cat, i), intents[i],
                          scratch, scratch + coord->nshards, one != NULL);
    free(intents);
    free(scratch);
    s_reply_info(coord, job, info);
}
