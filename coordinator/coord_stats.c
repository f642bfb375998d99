/*
 * coord_stats.c - the coordinator's own answers: ping (liveness, shards up)
 * and stats (shards' health, collections with their per-shard counts,
 * request and error counters, fan-out histogram, latency percentiles,
 * pending intents), and the same figures as Prometheus metrics with the
 * readiness check (coord_metrics_publish, coord_ready). docs/protocol.md
 * lists the stats keys, docs/operations.md ("Monitoring") the metrics.
 * Loop thread only.
 */
#include "coordinator/coord_private.h"

#include "common/log.h"
#include "common/timing.h"
#include "shard/hnsw.h" /* the HNSW build defaults (no code linked) */

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
    wire_info_map(info, 19 + (placement ? 1 : 0));
    wire_io_info_str(info, "storage", quant_kind_name(c->storage));
    coord_calib_info(coord, info, c);
    coord_recall_info(coord, info, c->name);
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
        uint64_t rank = timing_rank(coord->fanout_queries, 0.99), seen = 0;
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
        wire_io_info_latency(info, op, p50, p95, p99_us, n, 1000.0);
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
        wire_info_map(info, 26 + WIRE_IO_BUDGET_INFO_ENTRIES);
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
        /* The loop's lag: what any request may wait behind another's work on the loop. */
        wire_io_info_f64(info, "loop_busy_max_ms", (double)coord->loop_busy_max_us / 1000.0);
        wire_io_info_u64(info, "loop_slow_turns", coord->loop_slow_turns);
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

/* ------------------------------------------------------------------------ */
/* Readiness                                                                */
/* ------------------------------------------------------------------------ */

/* 1 when replica r of list l of c serves reads and its shard answers pings. */
static int s_replica_serving(const coord_t *coord, const catalog_coll_t *c, uint32_t l, uint32_t r)
{
    return coord_replica_readable(coord, c, l, r) &&
           coord->shards[catalog_owner(c, l, r)].state == COORD_SHARD_UP;
}

/* Why replica r of list l of c does not serve, into buf: its shard and what is wrong. */
static void s_replica_why(const coord_t *coord, const catalog_coll_t *c, uint32_t l, uint32_t r,
                          char *buf, size_t cap)
{
    uint32_t s = catalog_owner(c, l, r);
    if (s >= coord->nshards) {
        snprintf(buf, cap, "its shard %u is not in the registry", s);
        return;
    }
    const coord_shard_t *shard = &coord->shards[s];
    const char *what = shard->removed                             ? "is removed"
                       : shard->state == COORD_SHARD_DOWN         ? "is down"
                       : shard->state == COORD_SHARD_UNKNOWN      ? "has not answered yet"
                       : c->stale[(size_t)l * c->replication + r] ? "holds a stale copy"
                       : shard->stale_orphans ? "holds stale orphan copies (reads wait)"
                                              : "is fenced (it missed writes)";
    snprintf(buf, cap, "shard %u (%s) %s", s, shard->endpoint, what);
}

int coord_ready(coord_t *coord, char *why, size_t cap)
{
    if (!coord->cat) {
        snprintf(why, cap, "the catalog is not open");
        return 0;
    }
    if (coord->stopping) {
        snprintf(why, cap, "shutting down");
        return 0;
    }
    for (size_t i = 0; i < catalog_coll_count(coord->cat); i++) {
        const catalog_coll_t *c = catalog_coll_at(coord->cat, i);
        for (uint32_t l = 0; c->trained && l < c->nlist; l++) {
            uint32_t r = 0;
            while (r < c->replication && !s_replica_serving(coord, c, l, r))
                r++;
            if (r < c->replication)
                continue;
            char first[WIRE_MSG_MAX];
            s_replica_why(coord, c, l, 0, first, sizeof first);
            snprintf(why, cap, "collection \"%s\": list %u has no readable replica: %s%s", c->name,
                     l, first, c->replication > 1 ? ", and no other replica serves" : "");
            return 0;
        }
    }
    if (cap)
        why[0] = '\0';
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Metrics                                                                  */
/* ------------------------------------------------------------------------ */

/* Shards: up, last answer, fenced (by endpoint and index), and how many per role. */
static void s_metrics_shards(coord_t *coord, prom_text_t *t)
{
    int64_t now = zclock_usecs();
    prom_labels_t *labels = calloc(coord->nshards ? coord->nshards : 1, sizeof *labels);
    if (!labels)
        return; /* out of memory: this round's text goes without the shard families */
    for (size_t s = 0; s < coord->nshards; s++) {
        prom_labels_init(&labels[s]);
        prom_label(&labels[s], "shard", coord->shards[s].endpoint);
        prom_label_u64(&labels[s], "index", s);
    }
    prom_family(t, "shoal_shard_up", PROM_GAUGE,
                "1 when the shard answered within --down-after-ms, else 0 (down, or not heard "
                "from yet); removed shards are left out.");
    for (size_t s = 0; s < coord->nshards; s++)
        if (!coord->shards[s].removed)
            prom_sample_u64(t, "shoal_shard_up", &labels[s],
                            coord->shards[s].state == COORD_SHARD_UP);
    prom_family(t, "shoal_shard_last_seen_seconds", PROM_GAUGE,
                "Seconds since the shard last answered anything (left out before its first "
                "answer).");
    for (size_t s = 0; s < coord->nshards; s++)
        if (!coord->shards[s].removed && coord->shards[s].last_seen_us)
            prom_sample(t, "shoal_shard_last_seen_seconds", &labels[s],
                        (double)(now - coord->shards[s].last_seen_us) / 1e6);
    prom_family(t, "shoal_shard_fenced", PROM_GAUGE,
                "1 while the shard serves no reads of replicated collections (it missed writes "
                "until its stale lists are dropped again).");
    for (size_t s = 0; s < coord->nshards; s++)
        if (!coord->shards[s].removed)
            prom_sample_u64(t, "shoal_shard_fenced", &labels[s], coord->shards[s].fenced ? 1 : 0);
    free(labels);

    static const int roles[] = {CATALOG_SHARD_LIVE, CATALOG_SHARD_DRAINING, CATALOG_SHARD_REMOVED};
    prom_family(t, "shoal_shards", PROM_GAUGE,
                "Shards in the registry by role (live, draining, removed).");
    for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++) {
        uint64_t n = 0;
        for (size_t s = 0; s < coord->nshards; s++)
            n += catalog_shard_role(coord->cat, s) == roles[i];
        prom_labels_t l;
        prom_labels_init(&l);
        prom_label(&l, "role", s_role_name(roles[i]));
        prom_sample_u64(t, "shoal_shards", &l, n);
    }
}

/* The per-collection families, in the order they are written. */
typedef enum {
    S_COLL_VECTORS,
    S_COLL_LISTS,
    S_COLL_TRAINED,
    S_COLL_REPLICATION,
    S_COLL_STALE,
    S_COLL_INTENTS,
    S_COLL_FAMILIES
} s_coll_family_t;

static const struct {
    const char *name, *help;
} s_coll_families[S_COLL_FAMILIES] = {
    {"shoal_collection_vectors", "Vectors in the collection (each id once, whatever R)."},
    {"shoal_collection_lists", "IVF lists of the collection (nlist)."},
    {"shoal_collection_trained", "1 when the collection's centroids are trained."},
    {"shoal_collection_replication", "Copies of each list (R)."},
    {"shoal_collection_stale_replicas", "Replica lists that missed writes, to be repaired."},
    {"shoal_pending_intents",
     "Interrupted writes of the collection waiting to be re-driven (catalog intents)."},
};

static uint64_t s_coll_figure(coord_t *coord, const catalog_coll_t *c, s_coll_family_t f)
{
    switch (f) {
    case S_COLL_VECTORS:
        return c->count;
    case S_COLL_LISTS:
        return c->nlist;
    case S_COLL_TRAINED:
        return c->trained ? 1 : 0;
    case S_COLL_REPLICATION:
        return c->replication;
    case S_COLL_STALE:
        return c->nstale;
    case S_COLL_INTENTS:
        return s_intents_count(coord, c->name); /* a catalog scan: written once per render */
    default:
        return 0;
    }
}

/* The collections: how many, then each per-collection family (its samples together). */
/* The online recall estimate per collection (coord_recall.c), where there is one. */
static void s_metrics_recall(coord_t *coord, prom_text_t *t)
{
    static const struct {
        const char *name, *help;
    } fam[] = {
        {"shoal_recall_estimate", "Estimated recall@k of client searches (recent sampled "
                                  "queries against exact search)."},
        {"shoal_recall_estimate_ci95", "Half-width of the estimate's 95 % confidence interval."},
        {"shoal_recall_estimate_samples", "Sampled queries the estimate is made of."},
    };
    for (size_t f = 0; f < 3; f++) {
        prom_family(t, fam[f].name, PROM_GAUGE, fam[f].help);
        for (size_t i = 0; i < catalog_coll_count(coord->cat); i++) {
            const catalog_coll_t *c = catalog_coll_at(coord->cat, i);
            double recall = 0, ci = 0;
            uint64_t n = 0;
            if (coord_recall_estimate(coord, c->name, &recall, &ci, &n) != 0)
                continue;
            prom_labels_t l;
            prom_labels_init(&l);
            prom_label(&l, "collection", c->name);
            if (f == 2)
                prom_sample_u64(t, fam[f].name, &l, n);
            else
                prom_sample(t, fam[f].name, &l, f == 0 ? recall : ci);
        }
    }
}

static void s_metrics_collections(coord_t *coord, prom_text_t *t)
{
    size_t n = catalog_coll_count(coord->cat);
    prom_metric_u64(t, "shoal_collections", PROM_GAUGE, "Collections in the catalog.", n);
    for (s_coll_family_t f = 0; f < S_COLL_FAMILIES; f++) {
        prom_family(t, s_coll_families[f].name, PROM_GAUGE, s_coll_families[f].help);
        for (size_t i = 0; i < n; i++) {
            const catalog_coll_t *c = catalog_coll_at(coord->cat, i);
            prom_labels_t l;
            prom_labels_init(&l);
            prom_label(&l, "collection", c->name);
            prom_sample_u64(t, s_coll_families[f].name, &l, s_coll_figure(coord, c, f));
        }
    }
}

/*
 * Shards per search query as a histogram. Buckets: every count 1..nshards
 * while they fit in a prom_hist_t, else the counts of s_fanout_wide below
 * the registry's size and that size (fanout_hist holds one entry per
 * count, 0..nshards).
 */
static void s_metrics_fanout(coord_t *coord, prom_text_t *t)
{
    static const double s_fanout_wide[PROM_HIST_BOUNDS_MAX - 1] = {
        1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024,
        1536, 2048, 3072,
    };
    double bounds[PROM_HIST_BOUNDS_MAX];
    uint64_t counts[PROM_HIST_BOUNDS_MAX + 1];
    size_t nb = 0;
    if (coord->nshards <= PROM_HIST_BOUNDS_MAX) {
        for (size_t v = 1; v <= coord->nshards; v++)
            bounds[nb++] = (double)v;
    } else {
        for (size_t i = 0; i < PROM_HIST_BOUNDS_MAX - 1; i++)
            if (s_fanout_wide[i] < (double)coord->nshards)
                bounds[nb++] = s_fanout_wide[i];
        bounds[nb++] = (double)coord->nshards;
    }
    memset(counts, 0, sizeof counts);
    for (size_t v = 0; v <= coord->nshards; v++) {
        size_t b = 0;
        while (b < nb && (double)v > bounds[b])
            b++;
        counts[b] += coord->fanout_hist[v];
    }
    prom_family(t, "shoal_search_shards_per_query", PROM_HISTOGRAM,
                "Shards a search query was sent to, one observation per query.");
    prom_hist_write_counts(t, "shoal_search_shards_per_query", NULL, bounds, nb, counts,
                           (double)coord->fanout_sum, coord->fanout_queries);
}

/* A family of one unlabelled sample. */
static void s_metric_one(prom_text_t *t, const char *name, prom_type_t type, const char *help,
                         uint64_t value)
{
    prom_family(t, name, type, help);
    prom_sample_u64(t, name, NULL, value);
}

/* Writes waiting and running, re-drives, repair and moves (the "repair"/"moves" stats). */
static void s_metrics_work(coord_t *coord, prom_text_t *t)
{
    const coord_repair_t *rp = &coord->repair;
    uint64_t stale = 0, moves = 0, orphans = 0;
    for (size_t i = 0; i < catalog_coll_count(coord->cat); i++) {
        const catalog_coll_t *c = catalog_coll_at(coord->cat, i);
        stale += c->nstale;
        moves += c->nmoves;
        orphans += c->norphans;
    }
    int moving = rp->active && rp->moving;
    if (moving && moves)
        moves--; /* the running move is a catalog move too */
    s_metric_one(t, "shoal_requests_in_progress", PROM_GAUGE,
                 "Client requests received and not answered yet.", coord->client_jobs);
    s_metric_one(t, "shoal_writes_queued", PROM_GAUGE,
                 "Writes waiting for an earlier write to the same ids or collection.",
                 coord->fifo_len);
    s_metric_one(t, "shoal_writes_running", PROM_GAUGE, "Writes in progress.",
                 coord->writes_running);
    s_metric_one(t, "shoal_intents_waiting_for_shard", PROM_GAUGE,
                 "Interrupted writes whose re-drive waits for a shard to come back.",
                 zhashx_size(coord->redrive_waits));
    s_metric_one(t, "shoal_collections_recreated_total", PROM_COUNTER,
                 "Collections re-created on shards that had lost them.", coord->repairs);
    prom_metric(t, "shoal_coordinator_loop_busy_max_seconds", PROM_GAUGE,
                "The longest turn of the coordinator's loop since it started (what a request "
                "may wait behind another's work).",
                (double)coord->loop_busy_max_us / 1e6);
    s_metric_one(t, "shoal_coordinator_loop_slow_turns_total", PROM_COUNTER,
                 "Turns of the coordinator's loop that took 100 ms or more.",
                 coord->loop_slow_turns);
    s_metric_one(t, "shoal_search_hedged_total", PROM_COUNTER,
                 "Search sub-queries also sent to another replica (shard down, slow or failed).",
                 coord->hedged);
    s_metric_one(t, "shoal_replica_writes_missed_total", PROM_COUNTER,
                 "Replica writes missed (that replica was marked stale).", coord->replica_misses);
    s_metric_one(t, "shoal_repair_pending_replicas", PROM_GAUGE,
                 "Stale replica lists waiting to be rebuilt or caught up.", stale);
    s_metric_one(t, "shoal_repair_running", PROM_GAUGE,
                 "1 while a replica list is being rebuilt or moved.", rp->active ? 1 : 0);
    s_metric_one(t, "shoal_repair_rows_copied_total", PROM_COUNTER,
                 "Rows copied into rebuilt replica lists.", rp->rows_copied);
    s_metric_one(t, "shoal_repair_lists_repaired_total", PROM_COUNTER,
                 "Replica lists rebuilt.", rp->lists_repaired);
    s_metric_one(t, "shoal_repair_aborted_total", PROM_COUNTER,
                 "Rebuilds given up (the target missed a write meanwhile, or failed).",
                 rp->aborted);
    s_metric_one(t, "shoal_moves_pending", PROM_GAUGE,
                 "Planned list moves not started yet.", moves);
    s_metric_one(t, "shoal_moves_running", PROM_GAUGE, "1 while a list move copies.",
                 moving ? 1 : 0);
    s_metric_one(t, "shoal_moves_done_total", PROM_COUNTER, "List moves completed.",
                 rp->moves_done);
    s_metric_one(t, "shoal_moves_aborted_total", PROM_COUNTER,
                 "List moves abandoned (their copy becomes an orphan to drop).", rp->moves_aborted);
    s_metric_one(t, "shoal_moves_rows_copied_total", PROM_COUNTER,
                 "Rows copied by list moves.", rp->move_rows);
    s_metric_one(t, "shoal_move_orphans", PROM_GAUGE,
                 "Copies of lists left on shards that no longer own them, to be dropped.",
                 orphans);
}

void coord_metrics_publish(coord_t *coord)
{
    prom_text_t *t = http_metrics_begin(coord->opts.metrics);
    if (!t)
        return;
    s_metrics_shards(coord, t);
    s_metrics_collections(coord, t);
    s_metrics_recall(coord, t);
    s_metrics_fanout(coord, t);
    s_metrics_work(coord, t);
    wire_io_budget_stats_t replies;
    wire_io_budget_stats(coord->reply_budget, &replies);
    http_metrics_replies(t, replies.pending_bytes, replies.max_bytes, replies.dropped);
    char why[HTTP_METRICS_REASON_MAX];
    int ready = coord_ready(coord, why, sizeof why);
    http_metrics_publish(coord->opts.metrics, ready, why);
}
