/*
 * coord_search.c - the coordinator's reads: search (route, plan, fan out,
 * merge), get (id map, one get per shard, reassembly) and knn_graph (a chunk
 * of stored vectors fetched, then searched through the search path).
 *
 * Reads run concurrently with each other and with the one write in
 * progress. A read phase counts its own outstanding shard requests (tag =
 * phase), so a late answer of an earlier phase is ignored in the next one.
 * A shard that is down is not asked and, like one that misses the deadline,
 * is named in the reply's `missing` (search, knn_graph) or fails the request
 * (get: there is no partial answer to a lookup by id). So is a shard that
 * answers SHOAL_ENOTFOUND for the collection (it lost it): the coordinator
 * then re-creates it there (coord_repair_collection).
 */
#include "coordinator/coord_private.h"

#include "common/log.h"
#include "common/topk.h"

#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_TAG_GET    1
#define S_TAG_SEARCH 2

/* A read job's state. */
typedef struct {
    int phase;          /* S_TAG_GET or S_TAG_SEARCH: what answers count */
    size_t nshards;     /* length of the per-shard arrays */
    size_t outstanding; /* this phase's requests not answered */
    uint32_t *wait;     /* nshards: this phase's requests outstanding per shard */
    uint32_t *missing;  /* nshards: shards that did not answer (any phase) */
    void (*done)(coord_t *, coord_job_t *); /* the phase is complete */
    char coll[WIRE_NAME_MAX + 1];
    size_t dim;
    /* search phase */
    size_t nq, k; /* queries, results per query */
    fanout_plan_t plan;
    int have_plan;
    fanout_merge_t merge;
    int have_merge;
    int exact; /* a shard ran exact */
    /* get phase: positions of the request's ids per shard */
    size_t n;            /* ids */
    const uint64_t *ids; /* n (borrowed from the request or owned below) */
    uint32_t **gpos;     /* nshards: positions sent to shard s */
    size_t *gn;          /* nshards: how many */
    uint64_t **gids;     /* nshards: the ids sent */
    uint8_t *found;      /* n */
    float *vecs;         /* n x dim */
    /* knn_graph */
    uint64_t *rows; /* chunk ids (owned) */
    uint64_t *qids; /* rows found (owned) */
    float *qvecs;   /* their vectors */
    size_t nrows;   /* rows found */
    char cursor[WIRE_CURSOR_MAX + 1];
    uint64_t total;
    size_t kk; /* k asked from the search path (k + 1, capped) */
} s_read_t;

/* The per-shard get arrays (freed as soon as the get phase is over). */
static void s_get_arrays_free(s_read_t *r)
{
    for (size_t s = 0; s < r->nshards; s++) {
        if (r->gpos)
            free(r->gpos[s]);
        if (r->gids)
            free(r->gids[s]);
    }
    free(r->gpos);
    free(r->gids);
    r->gpos = NULL;
    r->gids = NULL;
}

static void s_read_free(void *state)
{
    s_read_t *r = state;
    if (!r)
        return;
    if (r->have_plan)
        fanout_plan_fini(&r->plan);
    if (r->have_merge)
        fanout_merge_fini(&r->merge);
    s_get_arrays_free(r);
    free(r->wait);
    free(r->missing);
    free(r->found);
    free(r->vecs);
    free(r->rows);
    free(r->qids);
    free(r->qvecs);
    free(r->gn);
    free(r);
}

static s_read_t *s_read_new(coord_t *coord, coord_job_t *job)
{
    s_read_t *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->nshards = coord->nshards;
    r->wait = calloc(coord->nshards, sizeof *r->wait);
    r->missing = calloc(coord->nshards, sizeof *r->missing);
    if (!r->wait || !r->missing) {
        s_read_free(r);
        return NULL;
    }
    snprintf(r->coll, sizeof r->coll, "%s", job->req.coll);
    job->state = r;
    job->free_state = s_read_free;
    return r;
}

static uint32_t s_deadline_ms(const coord_t *coord, const coord_job_t *job)
{
    return job->req.deadline_ms ? job->req.deadline_ms : coord->opts.deadline_ms;
}

/* Any shard flagged in r->missing. */
static int s_partial(const coord_t *coord, const s_read_t *r)
{
    for (size_t s = 0; s < coord->nshards; s++)
        if (r->missing[s])
            return 1;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Shard answers                                                            */
/* ------------------------------------------------------------------------ */

static void s_on_search_reply(coord_t *coord, coord_job_t *job, size_t s, const wire_reply_t *rep)
{
    s_read_t *r = job->state;
    if (rep->code == SHOAL_ENOTFOUND) {
        /* The shard lost a catalog collection: a partial answer without it, and a repair. */
        coord_repair_collection(coord, s, r->coll);
        r->missing[s] = 1;
        if (r->outstanding == 0)
            r->done(coord, job);
        return;
    }
    if (rep->code != SHOAL_OK) {
        coord_fail(coord, &job, rep->code, "%s: shard %s: %s", wire_op_name(job->req.op),
                   coord->shards[s].endpoint, rep->msg[0] ? rep->msg : shoal_strerror(rep->code));
        return;
    }
    if (rep->n != r->plan.counts[s] || (rep->n && (!rep->ids || !rep->dists || !rep->k))) {
        coord_fail(coord, &job, SHOAL_EPROTO,
                   "%s: shard %s answered %" PRIu64 " rows, %zu were asked",
                   wire_op_name(job->req.op), coord->shards[s].endpoint, rep->n, r->plan.counts[s]);
        return;
    }
    fanout_merge_add(&r->merge, r->plan.queries[s], (size_t)rep->n, rep->ids, rep->dists, rep->k);
    if (rep->mode_used == WIRE_MODE_EXACT)
        r->exact = 1;
    if (r->outstanding == 0)
        r->done(coord, job);
}

static void s_on_get_reply(coord_t *coord, coord_job_t *job, size_t s, const wire_reply_t *rep)
{
    s_read_t *r = job->state;
    if (rep->code == SHOAL_ENOTFOUND)
        coord_repair_collection(coord, s, r->coll);
    if (rep->code != SHOAL_OK || rep->n != r->gn[s] || (rep->n && rep->dim != r->dim) ||
        (rep->n && (!rep->found || !rep->vecs))) {
        if (job->req.op == WIRE_OP_KNN_GRAPH) {
            /* Those rows are skipped; the shard is named. */
            log_warn("knn_graph: get from %s: %s", coord->shards[s].endpoint,
                     rep->code ? rep->msg : "answer of the wrong shape");
            r->missing[s] = 1;
        } else if (rep->code == SHOAL_ENOTFOUND) {
            coord_fail(coord, &job, SHOAL_EUNAVAIL,
                       "get: shard %s lacks collection \"%s\" (being re-created there)",
                       coord->shards[s].endpoint, r->coll);
            return;
        } else {
            coord_fail(coord, &job, rep->code ? rep->code : SHOAL_EPROTO, "get: shard %s: %s",
                       coord->shards[s].endpoint,
                       rep->code ? rep->msg : "answer of the wrong shape");
            return;
        }
    } else {
        for (size_t i = 0; i < r->gn[s]; i++) {
            size_t p = r->gpos[s][i];
            r->found[p] = rep->found[i] ? 1 : 0;
            if (rep->found[i])
                memcpy(r->vecs + p * r->dim, rep->vecs + i * r->dim, r->dim * sizeof(float));
        }
    }
    if (r->outstanding == 0)
        r->done(coord, job);
}

static void s_on_reply(coord_t *coord, coord_job_t *job, size_t s, uint32_t tag,
                       const wire_reply_t *rep)
{
    s_read_t *r = job->state;
    if ((int)tag != r->phase || !r->wait[s])
        return; /* a late answer of an earlier phase */
    r->wait[s]--;
    r->outstanding--;
    if (tag == S_TAG_SEARCH)
        s_on_search_reply(coord, job, s, rep);
    else
        s_on_get_reply(coord, job, s, rep);
}

static void s_on_timeout(coord_t *coord, coord_job_t *job)
{
    s_read_t *r = job->state;
    for (size_t s = 0; s < coord->nshards; s++) {
        if (r->wait[s]) {
            r->missing[s] = 1;
            r->wait[s] = 0;
        }
    }
    r->outstanding = 0;
    r->done(coord, job);
}

/* Arms a phase; completes it at once when nothing was sent. */
static void s_phase_wait(coord_t *coord, coord_job_t *job)
{
    s_read_t *r = job->state;
    job->on_reply = s_on_reply;
    job->on_timeout = s_on_timeout;
    job->deadline_us = zclock_usecs() + (int64_t)s_deadline_ms(coord, job) * 1000;
    if (r->outstanding == 0) {
        job->deadline_us = 0;
        r->done(coord, job);
    }
}

static void s_send(coord_t *coord, coord_job_t *job, size_t s, wire_request_t *req)
{
    s_read_t *r = job->state;
    if (coord_send(coord, job, s, (uint32_t)r->phase, req) == 0) {
        r->wait[s]++;
        r->outstanding++;
    } else {
        r->missing[s] = 1;
    }
}

/* ------------------------------------------------------------------------ */
/* The search path                                                          */
/* ------------------------------------------------------------------------ */

/*
 * Routes nq queries, plans and sends one sub-batch per shard; r->done runs
 * when every shard answered or the deadline passed. 0, or an error before
 * anything was sent.
 */
static int s_search_start(coord_t *coord, coord_job_t *job, const catalog_coll_t *c,
                          const float *queries, size_t nq, size_t k, size_t nprobe,
                          shoal_err_t *err)
{
    s_read_t *r = job->state;
    const wire_request_t *req = &job->req;
    r->phase = S_TAG_SEARCH;
    r->nq = nq;
    r->k = k;
    int rc = fanout_merge_init(&r->merge, nq ? nq : 1, k, err);
    if (rc != 0)
        return rc;
    r->have_merge = 1;
    if (!c->trained || nq == 0) {
        s_phase_wait(coord, job);
        return 0;
    }
    uint32_t *lists = malloc(nq * nprobe * sizeof *lists);
    if (!lists)
        return shoal_err_set(err, SHOAL_ENOMEM, "%s: out of memory for %zu x %zu lists",
                             wire_op_name(req->op), nq, nprobe);
    rc = coord_route(coord, c, queries, nq, nprobe, lists, err);
    if (rc == 0)
        rc = fanout_plan_build(lists, nq, nprobe, c->owners, c->nlist, coord->nshards, &r->plan,
                               err);
    free(lists);
    if (rc != 0)
        return rc;
    r->have_plan = 1;
    float *sub = NULL;
    for (size_t s = 0; s < coord->nshards; s++) {
        size_t cnt = r->plan.counts[s];
        if (!cnt)
            continue;
        if (!coord_shard_usable(coord, s)) {
            r->missing[s] = 1;
            continue;
        }
        float *grown = realloc(sub, cnt * c->dim * sizeof *sub);
        if (!grown) {
            free(sub);
            return shoal_err_set(err, SHOAL_ENOMEM, "%s: out of memory", wire_op_name(req->op));
        }
        sub = grown;
        fanout_gather(&r->plan, s, queries, c->dim, sub);
        wire_request_t q;
        wire_request_init(&q);
        q.op = WIRE_OP_SEARCH;
        snprintf(q.coll, sizeof q.coll, "%s", c->name);
        q.n = cnt;
        q.dim = c->dim;
        q.vecs = sub;
        q.k = (uint32_t)k;
        q.mode = req->mode;
        q.ef = req->ef;
        if (req->op == WIRE_OP_SEARCH && req->nfilter) {
            q.nfilter = req->nfilter;
            q.filter = req->filter;
        }
        s_send(coord, job, s, &q); /* ZeroMQ copies the frames: sub can be reused */
    }
    free(sub);
    coord_record_fanout(coord, r->plan.per_query, nq);
    s_phase_wait(coord, job);
    return 0;
}

/* The nprobe a request asks for, checked: 0 = the collection's. */
static int s_nprobe(const coord_job_t *job, const catalog_coll_t *c, size_t *nprobe,
                    shoal_err_t *err)
{
    uint32_t want = job->req.nprobe ? job->req.nprobe : c->nprobe;
    if (job->req.nprobe > c->nlist)
        return shoal_err_set(err, SHOAL_EINVAL,
                             "%s: \"nprobe\" must be 1..nlist = %u for collection \"%s\", got %u",
                             wire_op_name(job->req.op), c->nlist, c->name, job->req.nprobe);
    if (want == 0)
        want = 1;
    *nprobe = want > c->nlist ? c->nlist : want;
    return 0;
}

/* The k a search or knn_graph request asks for, checked against --max-k. */
static int s_check_k(const coord_t *coord, const coord_job_t *job, shoal_err_t *err)
{
    uint32_t k = job->req.k;
    if (k == 0 || k > coord->limits.max_k)
        return shoal_err_set(err, k ? SHOAL_ELIMIT : SHOAL_EINVAL,
                             "%s: \"k\" must be 1..%zu, got %u", wire_op_name(job->req.op),
                             coord->limits.max_k, k);
    return 0;
}

/* A success reply to job's request, the rest of it zero. */
static void s_reply_start(wire_reply_t *rep, const coord_job_t *job)
{
    wire_reply_init(rep);
    rep->op = job->req.op;
    rep->rid = job->req.rid;
}

static void s_search_done(coord_t *coord, coord_job_t *job)
{
    s_read_t *r = job->state;
    wire_reply_t rep;
    s_reply_start(&rep, job);
    rep.n = r->nq;
    rep.k = (uint32_t)r->k;
    rep.ids = r->merge.ids;
    rep.dists = r->merge.dists;
    rep.mode_used = r->exact || job->req.mode == WIRE_MODE_EXACT ? WIRE_MODE_EXACT : WIRE_MODE_HNSW;
    rep.partial = (uint32_t)s_partial(coord, r);
    coord_shard_list(coord, r->missing, rep.missing, sizeof rep.missing);
    rep.fanout = r->have_plan ? r->plan.fanout : 0;
    coord_reply(coord, &job, &rep);
    wire_reply_fini(&rep);
}

void coord_op_search(coord_t *coord, coord_job_t *job)
{
    const wire_request_t *req = &job->req;
    shoal_err_t err;
    shoal_err_clear(&err);
    const catalog_coll_t *c = coord_coll(coord, req->coll, &err);
    size_t nprobe = 0;
    int rc = c ? 0 : err.code;
    if (rc == 0 && req->dim != c->dim)
        rc = shoal_err_set(&err, SHOAL_EDIM, "collection \"%s\": expected dim %u, got %u",
                           req->coll, c->dim, req->dim);
    if (rc == 0)
        rc = s_check_k(coord, job, &err);
    if (rc == 0 && req->n > coord->limits.max_message_bytes / ((size_t)req->k * 12))
        rc = shoal_err_set(&err, SHOAL_ELIMIT,
                           "search: the reply (%" PRIu64 " x %u results) would exceed "
                           "--max-message-bytes %zu",
                           req->n, req->k, coord->limits.max_message_bytes);
    if (rc == 0)
        rc = s_nprobe(job, c, &nprobe, &err);
    if (rc == 0)
        rc = coord_check_vectors("search", c, req->vecs, (size_t)req->n, NULL, &err);
    s_read_t *r = rc == 0 ? s_read_new(coord, job) : NULL;
    if (rc == 0 && !r)
        rc = shoal_err_set(&err, SHOAL_ENOMEM, "search: out of memory");
    if (rc == 0) {
        r->done = s_search_done;
        r->dim = c->dim;
        rc = s_search_start(coord, job, c, req->vecs, (size_t)req->n, req->k, nprobe, &err);
    }
    if (rc != 0)
        coord_fail(coord, &job, err.code, "%s", err.msg);
}

/* ------------------------------------------------------------------------ */
/* The get path                                                             */
/* ------------------------------------------------------------------------ */

/*
 * Sends one get per shard for r->ids[0..n) whose lists are given
 * (CATALOG_LIST_NONE: absent, not asked); r->found / r->vecs are filled as
 * answers come. Shards down are flagged missing (down_fails: an error instead).
 */
static int s_get_start(coord_t *coord, coord_job_t *job, const catalog_coll_t *c,
                       const uint32_t *lists, int down_fails, shoal_err_t *err)
{
    s_read_t *r = job->state;
    size_t n = r->n, ns = coord->nshards;
    r->phase = S_TAG_GET;
    r->found = calloc(n ? n : 1, 1);
    r->vecs = calloc((n ? n : 1) * c->dim, sizeof(float));
    r->gpos = calloc(ns, sizeof *r->gpos);
    r->gids = calloc(ns, sizeof *r->gids);
    r->gn = calloc(ns, sizeof *r->gn);
    if (!r->found || !r->vecs || !r->gpos || !r->gids || !r->gn)
        return shoal_err_set(err, SHOAL_ENOMEM, "%s: out of memory for %zu vectors",
                             wire_op_name(job->req.op), n);
    for (size_t i = 0; i < n; i++) {
        if (lists[i] == CATALOG_LIST_NONE || lists[i] >= c->nlist)
            continue;
        uint32_t s = c->owners[lists[i]];
        if (!r->gpos[s]) {
            r->gpos[s] = malloc(n * sizeof(uint32_t));
            r->gids[s] = malloc(n * sizeof(uint64_t));
            if (!r->gpos[s] || !r->gids[s])
                return shoal_err_set(err, SHOAL_ENOMEM, "%s: out of memory",
                                     wire_op_name(job->req.op));
        }
        r->gpos[s][r->gn[s]] = (uint32_t)i;
        r->gids[s][r->gn[s]++] = r->ids[i];
    }
    for (size_t s = 0; s < ns; s++)
        if (r->gn[s] && !coord_shard_usable(coord, s))
            r->missing[s] = 1;
    if (down_fails && s_partial(coord, r)) {
        char list[WIRE_MSG_MAX / 2] = "";
        coord_shard_list(coord, r->missing, list, sizeof list);
        return shoal_err_set(err, SHOAL_EUNAVAIL, "%s: shard(s) %s down", wire_op_name(job->req.op),
                             list);
    }
    for (size_t s = 0; s < ns; s++) {
        if (!r->gn[s] || r->missing[s])
            continue;
        wire_request_t q;
        wire_request_init(&q);
        q.op = WIRE_OP_GET;
        snprintf(q.coll, sizeof q.coll, "%s", c->name);
        q.n = r->gn[s];
        q.ids = r->gids[s];
        s_send(coord, job, s, &q);
        if (down_fails && r->missing[s])
            return shoal_err_set(err, SHOAL_EUNAVAIL, "%s: shard %s is not reachable",
                                 wire_op_name(job->req.op), coord->shards[s].endpoint);
    }
    s_phase_wait(coord, job);
    return 0;
}

static void s_get_done(coord_t *coord, coord_job_t *job)
{
    s_read_t *r = job->state;
    if (s_partial(coord, r)) {
        char list[WIRE_MSG_MAX / 2] = "";
        coord_shard_list(coord, r->missing, list, sizeof list);
        coord_fail(coord, &job, SHOAL_ETIMEOUT, "get: shard(s) %s did not answer within %u ms",
                   list, s_deadline_ms(coord, job));
        return;
    }
    wire_reply_t rep;
    s_reply_start(&rep, job);
    rep.n = r->n;
    rep.dim = (uint32_t)r->dim;
    rep.found = r->found;
    rep.vecs = r->vecs;
    coord_reply(coord, &job, &rep);
    wire_reply_fini(&rep);
}

void coord_op_get(coord_t *coord, coord_job_t *job)
{
    const wire_request_t *req = &job->req;
    shoal_err_t err;
    shoal_err_clear(&err);
    const catalog_coll_t *c = coord_coll(coord, req->coll, &err);
    int rc = c ? 0 : err.code;
    size_t n = (size_t)req->n;
    if (rc == 0 && n > coord->limits.max_message_bytes / (1 + (size_t)c->dim * sizeof(float)))
        rc = shoal_err_set(&err, SHOAL_ELIMIT,
                           "get: the reply (%zu vectors of dim %u) would exceed "
                           "--max-message-bytes %zu",
                           n, c->dim, coord->limits.max_message_bytes);
    s_read_t *r = rc == 0 ? s_read_new(coord, job) : NULL;
    if (rc == 0 && !r)
        rc = shoal_err_set(&err, SHOAL_ENOMEM, "get: out of memory");
    uint32_t *lists = NULL;
    if (rc == 0) {
        r->done = s_get_done;
        r->dim = c->dim;
        r->n = n;
        r->ids = req->ids;
        lists = malloc((n ? n : 1) * sizeof *lists);
        if (!lists)
            rc = shoal_err_set(&err, SHOAL_ENOMEM, "get: out of memory");
    }
    if (rc == 0) {
        if (c->trained)
            rc = catalog_lookup(coord->cat, c->name, req->ids, n, lists, &err);
        else
            for (size_t i = 0; i < n; i++)
                lists[i] = CATALOG_LIST_NONE;
    }
    if (rc == 0)
        rc = s_get_start(coord, job, c, lists, 1, &err);
    free(lists);
    if (rc != 0)
        coord_fail(coord, &job, err.code, "%s", err.msg);
}

/* ------------------------------------------------------------------------ */
/* knn_graph                                                                */
/* ------------------------------------------------------------------------ */

/* "pos:id" -> both; -1 for anything else. */
static int s_cursor_parse(const char *text, size_t nlist, size_t *pos, uint64_t *id)
{
    const char *colon = strchr(text, ':');
    if (!colon || colon == text || !colon[1])
        return -1;
    unsigned long long a = 0, b = 0;
    for (const char *p = text; p < colon; p++) {
        if (*p < '0' || *p > '9' || a > (ULLONG_MAX - 9) / 10)
            return -1;
        a = a * 10 + (unsigned)(*p - '0');
    }
    for (const char *p = colon + 1; *p; p++) {
        if (*p < '0' || *p > '9' || b > (ULLONG_MAX - 9) / 10)
            return -1;
        b = b * 10 + (unsigned)(*p - '0');
    }
    if (a > nlist || b == UINT64_MAX)
        return -1;
    *pos = (size_t)a;
    *id = (uint64_t)b;
    return 0;
}

static void s_knn_reply(coord_t *coord, coord_job_t *job, size_t n, const uint64_t *ids,
                        const float *dists)
{
    s_read_t *r = job->state;
    wire_reply_t rep;
    s_reply_start(&rep, job);
    rep.n = n;
    rep.k = job->req.k;
    rep.ids = ids;
    rep.dists = dists;
    rep.qids = r->qids;
    rep.mode_used = r->exact || job->req.mode == WIRE_MODE_EXACT ? WIRE_MODE_EXACT : WIRE_MODE_HNSW;
    rep.partial = (uint32_t)s_partial(coord, r);
    coord_shard_list(coord, r->missing, rep.missing, sizeof rep.missing);
    rep.fanout = r->have_plan ? r->plan.fanout : 0;
    snprintf(rep.cursor, sizeof rep.cursor, "%s", r->cursor);
    rep.total = r->total;
    coord_reply(coord, &job, &rep);
    wire_reply_fini(&rep);
}

/* Phase 2 done: drop each row's own id, keep k. */
static void s_knn_searched(coord_t *coord, coord_job_t *job)
{
    s_read_t *r = job->state;
    size_t k = job->req.k, n = r->nrows;
    uint64_t *ids = malloc((n ? n : 1) * k * sizeof *ids);
    float *dists = malloc((n ? n : 1) * k * sizeof *dists);
    if (!ids || !dists) {
        free(ids);
        free(dists);
        coord_fail(coord, &job, SHOAL_ENOMEM, "knn_graph: out of memory for %zu x %zu", n, k);
        return;
    }
    for (size_t q = 0; q < n; q++) {
        const uint64_t *in_ids = r->merge.ids + q * r->kk;
        const float *in_d = r->merge.dists + q * r->kk;
        size_t out = 0;
        for (size_t j = 0; j < r->kk && out < k; j++) {
            if (in_ids[j] == r->qids[q])
                continue;
            ids[q * k + out] = in_ids[j];
            dists[q * k + out] = in_d[j];
            out++;
        }
        for (; out < k; out++) {
            ids[q * k + out] = TOPK_ID_NONE;
            dists[q * k + out] = INFINITY;
        }
    }
    s_knn_reply(coord, job, n, ids, dists);
    free(ids);
    free(dists);
}

/* Phase 1 done: the rows found go through the search path. */
static void s_knn_fetched(coord_t *coord, coord_job_t *job)
{
    s_read_t *r = job->state;
    shoal_err_t err;
    shoal_err_clear(&err);
    const catalog_coll_t *c = coord_coll(coord, r->coll, &err);
    if (!c) {
        coord_fail(coord, &job, err.code, "knn_graph: %s", err.msg);
        return;
    }
    /* A write between the phases may have dropped and re-created it. */
    if (c->dim != r->dim || !c->trained) {
        coord_fail(coord, &job, SHOAL_EUNAVAIL,
                   "knn_graph: collection \"%s\" changed while the chunk was read; ask again",
                   r->coll);
        return;
    }
    size_t m = 0;
    for (size_t i = 0; i < r->n; i++)
        m += r->found[i];
    r->qids = malloc((m ? m : 1) * sizeof *r->qids);
    r->qvecs = malloc((m ? m : 1) * r->dim * sizeof *r->qvecs);
    if (!r->qids || !r->qvecs) {
        coord_fail(coord, &job, SHOAL_ENOMEM, "knn_graph: out of memory for %zu rows", m);
        return;
    }
    for (size_t i = 0, j = 0; i < r->n; i++) {
        if (!r->found[i])
            continue;
        r->qids[j] = r->ids[i];
        memcpy(r->qvecs + j * r->dim, r->vecs + i * r->dim, r->dim * sizeof(float));
        j++;
    }
    r->nrows = m;
    s_get_arrays_free(r);
    if (m == 0) {
        s_knn_reply(coord, job, 0, NULL, NULL);
        return;
    }
    size_t nprobe = 0;
    (void)s_nprobe(job, c, &nprobe, NULL); /* checked at the start */
    r->done = s_knn_searched;
    if (s_search_start(coord, job, c, r->qvecs, m, r->kk, nprobe, &err) != 0)
        coord_fail(coord, &job, err.code, "%s", err.msg);
}

void coord_op_knn_graph(coord_t *coord, coord_job_t *job)
{
    const wire_request_t *req = &job->req;
    shoal_err_t err;
    shoal_err_clear(&err);
    const catalog_coll_t *c = coord_coll(coord, req->coll, &err);
    int rc = c ? 0 : err.code;
    size_t nprobe = 0, pos = 0, chunk = req->chunk ? req->chunk : coord->opts.chunk_default;
    uint64_t from = 0;
    if (rc == 0)
        rc = s_check_k(coord, job, &err);
    if (rc == 0 && (chunk > coord->limits.max_batch ||
                    chunk > coord->limits.max_message_bytes / ((size_t)req->k * 12 + 8)))
        rc = shoal_err_set(&err, SHOAL_ELIMIT,
                           "knn_graph: \"chunk\" %zu is over the limit (--max-batch %zu, or the "
                           "reply would exceed --max-message-bytes)",
                           chunk, coord->limits.max_batch);
    if (rc == 0)
        rc = s_nprobe(job, c, &nprobe, &err);
    if (rc == 0 && req->cursor[0] && s_cursor_parse(req->cursor, c->nlist, &pos, &from) != 0)
        rc = shoal_err_set(&err, SHOAL_EINVAL,
                           "knn_graph: bad cursor \"%s\" (pass back the cursor of the previous "
                           "reply, or \"\" to start)",
                           req->cursor);
    s_read_t *r = rc == 0 ? s_read_new(coord, job) : NULL;
    if (rc == 0 && !r)
        rc = shoal_err_set(&err, SHOAL_ENOMEM, "knn_graph: out of memory");
    if (rc != 0) {
        coord_fail(coord, &job, err.code, "%s", err.msg);
        return;
    }
    r->dim = c->dim;
    r->total = c->count;
    r->kk = req->k + 1 > coord->limits.max_k ? req->k : req->k + 1;
    if (!c->trained || c->count == 0) {
        s_knn_reply(coord, job, 0, NULL, NULL);
        return;
    }

    /* The walk: lists by (owner shard, list), sorted as owner << 32 | list. */
    uint64_t *walk = malloc(c->nlist * sizeof *walk);
    uint32_t *row_lists = malloc(chunk * sizeof *row_lists);
    r->rows = malloc(chunk * sizeof *r->rows);
    if (!walk || !row_lists || !r->rows) {
        free(walk);
        free(row_lists);
        coord_fail(coord, &job, SHOAL_ENOMEM, "knn_graph: out of memory");
        return;
    }
    for (uint32_t l = 0; l < c->nlist; l++)
        walk[l] = (uint64_t)c->owners[l] << 32 | l;
    qsort(walk, c->nlist, sizeof *walk, coord_cmp_u64);
    size_t got = 0;
    while (rc == 0 && got < chunk && pos < c->nlist) {
        size_t asked = chunk - got, g = 0;
        uint32_t list = (uint32_t)walk[pos];
        rc = catalog_scan_list(coord->cat, c->name, list, from, r->rows + got, asked, &g, &err);
        for (size_t i = 0; i < g; i++)
            row_lists[got + i] = list;
        got += g;
        if (rc == 0 && g < asked) {
            pos++;
            from = 0;
        } else if (rc == 0) {
            from = r->rows[got - 1] + 1;
        }
    }
    free(walk);
    if (rc != 0) {
        free(row_lists);
        coord_fail(coord, &job, err.code, "knn_graph: %s", err.msg);
        return;
    }
    if (pos < c->nlist)
        snprintf(r->cursor, sizeof r->cursor, "%zu:%" PRIu64, pos, from);
    r->n = got;
    r->ids = r->rows;
    r->done = s_knn_fetched;
    rc = s_get_start(coord, job, c, row_lists, 0, &err);
    free(row_lists);
    if (rc != 0)
        coord_fail(coord, &job, err.code, "%s", err.msg);
}
