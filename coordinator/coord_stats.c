/*
 * coord_stats.c - the coordinator's own answers: ping (liveness, shards up)
 * and stats (shards' health, collections with their per-shard counts,
 * request and error counters, fan-out histogram, latency percentiles,
 * pending intents). docs/protocol.md lists the keys. Loop thread only.
 */
#include "coordinator/coord_private.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *s_op_label(size_t index)
{
    const char *name = index ? wire_op_name((wire_op_t)index) : NULL;
    return name ? name : "invalid";
}

static size_t s_op_index(wire_op_t op)
{
    return (op > WIRE_OP_NONE && op < WIRE_OP_COUNT) ? (size_t)op : 0;
}

/* ------------------------------------------------------------------------ */
/* Ping and stats                                                           */
/* ------------------------------------------------------------------------ */

static double s_uptime(const coord_t *coord)
{
    return (double)(zclock_usecs() - coord->start_us) / 1e6;
}

static void s_info_u64(wire_info_t *info, const char *key, uint64_t value)
{
    wire_info_key(info, key);
    wire_info_u64(info, value);
}

static void s_info_f64(wire_info_t *info, const char *key, double value)
{
    wire_info_key(info, key);
    wire_info_f64(info, value);
}

static void s_info_str(wire_info_t *info, const char *key, const char *value)
{
    wire_info_key(info, key);
    wire_info_str(info, value);
}

static size_t s_shards_up(const coord_t *coord)
{
    size_t up = 0;
    for (size_t s = 0; s < coord->nshards; s++)
        up += coord->shards[s].state == COORD_SHARD_UP;
    return up;
}

static void s_reply_info(coord_t *coord, coord_job_t *job, wire_info_t *info)
{
    if (!info || wire_info_failed(info)) {
        wire_info_destroy(&info);
        coord_fail(coord, &job, SHOAL_ENOMEM, "%s: no memory for the info map",
                   s_op_label(s_op_index(job->req.op)));
        return;
    }
    wire_reply_t rep;
    wire_reply_init(&rep);
    rep.op = job->req.op;
    rep.rid = job->req.rid;
    rep.info = wire_info_data(info);
    rep.info_len = wire_info_len(info);
    coord_reply(coord, &job, &rep);
    wire_reply_fini(&rep);
    wire_info_destroy(&info);
}

void coord_op_ping(coord_t *coord, coord_job_t *job)
{
    wire_info_t *info = wire_info_new();
    if (info) {
        wire_info_map(info, 6);
        s_info_str(info, "role", "coordinator");
        s_info_u64(info, "version", WIRE_VERSION);
        s_info_f64(info, "uptime_s", s_uptime(coord));
        s_info_u64(info, "shards", coord->nshards);
        s_info_u64(info, "shards_up", s_shards_up(coord));
        s_info_u64(info, "inflight", coord->client_jobs);
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
        wire_info_map(info, 4);
        s_info_u64(info, "index", s);
        s_info_str(info, "state", s_state_name(shard->state));
        s_info_u64(info, "up", shard->state == COORD_SHARD_UP);
        wire_info_key(info, "last_seen_ms_ago");
        if (shard->last_seen_us)
            wire_info_f64(info, (double)(now - shard->last_seen_us) / 1000.0);
        else
            wire_info_f64(info, -1.0);
    }
}

static size_t s_intents_count(coord_t *coord, const char *name)
{
    catalog_intent_t *intents = NULL;
    size_t n = 0;
    if (catalog_intents(coord->cat, name, &intents, &n, NULL) != 0)
        return 0;
    catalog_intents_free(intents, n);
    return n;
}

static void s_info_collection(coord_t *coord, wire_info_t *info, const catalog_coll_t *c)
{
    wire_info_key(info, c->name);
    wire_info_map(info, 11);
    s_info_u64(info, "dim", c->dim);
    s_info_str(info, "metric", shoal_metric_name(c->metric));
    s_info_u64(info, "nlist", c->nlist);
    s_info_u64(info, "nprobe", c->nprobe);
    s_info_u64(info, "M", c->M);
    s_info_u64(info, "ef_construction", c->ef_construction);
    s_info_u64(info, "trained", c->trained ? 1 : 0);
    s_info_u64(info, "count", c->count);
    s_info_u64(info, "pending_intents", s_intents_count(coord, c->name));
    /* Per shard (by index): vectors and lists it owns. */
    uint64_t *counts = calloc(coord->nshards + 1, sizeof *counts);
    uint64_t *lists = calloc(coord->nshards + 1, sizeof *lists);
    for (size_t l = 0; counts && lists && c->trained && l < c->nlist; l++) {
        if (c->owners[l] < coord->nshards) {
            counts[c->owners[l]] += c->list_counts[l];
            lists[c->owners[l]]++;
        }
    }
    char key[24];
    wire_info_key(info, "shard_counts");
    wire_info_map(info, coord->nshards);
    for (size_t s = 0; s < coord->nshards; s++) {
        snprintf(key, sizeof key, "%zu", s);
        s_info_u64(info, key, counts ? counts[s] : 0);
    }
    wire_info_key(info, "shard_lists");
    wire_info_map(info, coord->nshards);
    for (size_t s = 0; s < coord->nshards; s++) {
        snprintf(key, sizeof key, "%zu", s);
        s_info_u64(info, key, lists ? lists[s] : 0);
    }
    free(counts);
    free(lists);
}

static int s_cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static double s_percentile(const uint32_t *sorted, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t rank = (size_t)ceil(p / 100.0 * (double)n);
    rank = rank < 1 ? 1 : rank > n ? n : rank;
    return sorted[rank - 1];
}

static void s_info_counters(wire_info_t *info, const char *key, const uint64_t *counts)
{
    wire_info_key(info, key);
    wire_info_map(info, WIRE_OP_COUNT + 1);
    uint64_t total = 0;
    for (size_t op = 0; op < WIRE_OP_COUNT; op++)
        total += counts[op];
    s_info_u64(info, "total", total);
    for (size_t op = 0; op < WIRE_OP_COUNT; op++)
        s_info_u64(info, s_op_label(op), counts[op]);
}

static void s_info_process(coord_t *coord, wire_info_t *info)
{
    s_info_counters(info, "requests", coord->requests);
    s_info_counters(info, "errors", coord->errors);

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
    s_info_u64(info, "queries", coord->fanout_queries);
    s_info_f64(info, "mean",
               coord->fanout_queries ? (double)coord->fanout_sum / (double)coord->fanout_queries
                                     : 0.0);
    s_info_f64(info, "p99", p99);

    size_t with = 0;
    for (size_t op = 0; op < WIRE_OP_COUNT; op++)
        with += coord->latency_len[op] > 0;
    wire_info_key(info, "latency_ms");
    wire_info_map(info, with);
    uint32_t sorted[COORD_LATENCY_SAMPLES];
    for (size_t op = 0; op < WIRE_OP_COUNT; op++) {
        size_t n = coord->latency_len[op];
        if (!n)
            continue;
        memcpy(sorted, coord->latency[op], n * sizeof sorted[0]);
        qsort(sorted, n, sizeof sorted[0], s_cmp_u32);
        wire_info_key(info, s_op_label(op));
        wire_info_map(info, 4);
        s_info_f64(info, "p50", s_percentile(sorted, n, 50) / 1000.0);
        s_info_f64(info, "p95", s_percentile(sorted, n, 95) / 1000.0);
        s_info_f64(info, "p99", s_percentile(sorted, n, 99) / 1000.0);
        s_info_u64(info, "samples", n);
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
    wire_info_t *info = wire_info_new();
    if (!info) {
        s_reply_info(coord, job, NULL);
        return;
    }
    size_t ncolls = one ? 1 : catalog_coll_count(coord->cat);
    if (one) {
        wire_info_map(info, 4);
    } else {
        wire_info_map(info, 16);
        s_info_str(info, "endpoint", coord->endpoint);
        s_info_str(info, "data_dir", coord->data_dir);
        s_info_str(info, "device", coord->device);
        s_info_u64(info, "version", WIRE_VERSION);
        s_info_u64(info, "shards_up", s_shards_up(coord));
        s_info_u64(info, "inflight", coord->client_jobs);
        s_info_u64(info, "writes_queued", coord->fifo_len);
        size_t intents = 0;
        for (size_t i = 0; i < ncolls; i++)
            intents += s_intents_count(coord, catalog_coll_at(coord->cat, i)->name);
        s_info_u64(info, "pending_intents", intents);
        s_info_process(coord, info); /* 4 entries */
    }
    s_info_str(info, "role", "coordinator");
    s_info_f64(info, "uptime_s", s_uptime(coord));
    s_info_shards(coord, info);
    wire_info_key(info, "collections");
    wire_info_map(info, ncolls);
    for (size_t i = 0; i < ncolls; i++)
        s_info_collection(coord, info, one ? one : catalog_coll_at(coord->cat, i));
    s_reply_info(coord, job, info);
}
