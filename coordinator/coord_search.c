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
 *
 * Replicas (R > 1): each list is read from one readable replica
 * (coord_repair.c: up to date, shard up, not fenced). Query q of a search
 * tries replica (read_rr + q) mod R of each of its lists first, so
 * consecutive queries and batches spread over the replicas while one query
 * keeps the placement's locality (replica r of neighbouring lists sits on
 * neighbouring shards). A search is a set of units, one sub-batch per shard
 * (tag S_TAG_UNIT + unit). When a unit fails (its shard marked down, or
 * SHOAL_ENOTFOUND) or is still unanswered at opts.hedge_pct of the deadline
 * (hedging), its queries are re-planned: each list it was to cover goes to
 * another readable replica not already failed or slow in this search, one
 * retry unit per shard. A unit is covered by its own answer or by all its
 * retries' answers, whichever comes first; answers of both are merged (the
 * merge keeps each id once). The answer is partial only for the units
 * neither covered, and for lists with no readable replica at all.
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
#define S_TAG_UNIT   16 /* search unit u answers with tag S_TAG_UNIT + u */

/* One sub-batch of a search sent to one shard. */
typedef struct {
    uint32_t shard;
    uint32_t parent;    /* the unit it retries, or UINT32_MAX (the plan's) */
    size_t n;           /* queries */
    uint32_t *q;        /* their indexes, ascending (the plan's, or owned by a retry) */
    uint8_t state;      /* S_PENDING, S_OK, S_FAILED */
    uint8_t retried;    /* its retries were made (or could not be) */
    uint8_t uncoverable;/* some list of its queries has no other readable replica */
    uint8_t sent;       /* its request left (a plan unit may wait for a later loop turn) */
    uint32_t nkids, kids_ok, kids_failed;
} s_unit_t;

enum { S_PENDING = 0, S_OK = 1, S_FAILED = 2 };

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
    const float *queries; /* nq x dim (borrowed: the request's or qvecs) */
    size_t nprobe;
    uint32_t *plists;   /* nq x nprobe probed lists */
    uint32_t R;         /* the collection's replication */
    uint32_t layer0;    /* query q reads replica (layer0 + q) mod R first */
    uint32_t *eff;      /* R x nlist: the shard each layer reads a list from (nshards: none) */
    size_t nlist;
    s_unit_t *units;
    size_t nunits, capunits, norig;
    uint32_t *bad;      /* nshards: failed or slow in this search */
    size_t next_unsent; /* plan units before it are sent (or failed before they were) */
    int hedge_pending;  /* deadline_us is the hedge time, final_us the deadline */
    int64_t final_us;
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
    int calibrated;           /* search: nprobe / ef came from the recall calibration */
    double calibrated_recall; /* ... the recall it measured for them */
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
    for (size_t u = r->norig; r->units && u < r->nunits; u++)
        free(r->units[u].q);
    free(r->units);
    free(r->plists);
    free(r->eff);
    free(r->bad);
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
    (void)coord;
    for (size_t s = 0; s < r->nshards; s++)
        if (r->missing[s])
            return 1;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Shard answers                                                            */
/* ------------------------------------------------------------------------ */

static void s_unit_reply(coord_t *coord, coord_job_t *job, size_t s, size_t u,
                         const wire_reply_t *rep);
static void s_search_timeout(coord_t *coord, coord_job_t *job);

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
    if (tag >= S_TAG_UNIT) {
        if (r->phase == S_TAG_SEARCH && tag - S_TAG_UNIT < r->nunits)
            s_unit_reply(coord, job, s, tag - S_TAG_UNIT, rep);
        return;
    }
    if ((int)tag != r->phase || !r->wait[s])
        return; /* a late answer of an earlier phase */
    r->wait[s]--;
    r->outstanding--;
    s_on_get_reply(coord, job, s, rep);
}

static void s_on_timeout(coord_t *coord, coord_job_t *job)
{
    s_read_t *r = job->state;
    if (r->phase == S_TAG_SEARCH) {
        s_search_timeout(coord, job);
        return;
    }
    for (size_t s = 0; s < r->nshards; s++) {
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

/* ------------------------------------------------------------------------ */
/* Search units                                                             */
/* ------------------------------------------------------------------------ */

/* Appends a unit; its index, or SIZE_MAX out of memory. */
static size_t s_unit_add(s_read_t *r, uint32_t shard, uint32_t parent, uint32_t *q, size_t n)
{
    if (r->nunits == r->capunits) {
        size_t cap = r->capunits ? 2 * r->capunits : 8;
        s_unit_t *grown = realloc(r->units, cap * sizeof *grown);
        if (!grown)
            return SIZE_MAX;
        r->units = grown;
        r->capunits = cap;
    }
    s_unit_t *u = &r->units[r->nunits];
    memset(u, 0, sizeof *u);
    u->shard = shard;
    u->parent = parent;
    u->q = q;
    u->n = n;
    return r->nunits++;
}

/* Sends unit u's queries to its shard; a send that fails fails it (0 / -1 out of memory). */
static int s_unit_send(coord_t *coord, coord_job_t *job, size_t u);

static void s_unit_failed(coord_t *coord, coord_job_t *job, size_t u);

/*
 * Unit u (the plan's) is failed or slow: each list it was to read goes to
 * another readable replica not failed or slow in this search, one retry unit
 * per shard. When some list has none, no retry is sent (it could not cover
 * u): u then rests on its own answer.
 */
static void s_unit_retry(coord_t *coord, coord_job_t *job, size_t u)
{
    s_read_t *r = job->state;
    s_unit_t *U = &r->units[u];
    if (U->retried || U->parent != UINT32_MAX || r->R < 2)
        return;
    U->retried = 1;
    shoal_err_t err;
    const catalog_coll_t *c = coord_coll(coord, r->coll, &err);
    size_t ns = r->nshards, n = U->n;
    uint32_t *alt = malloc((n ? n : 1) * r->nprobe * sizeof *alt);
    size_t *count = calloc(ns, sizeof *count);
    uint32_t *stamp = calloc(ns, sizeof *stamp);
    uint32_t **batch = calloc(ns, sizeof *batch);
    int ok = c && c->trained && c->nlist == r->nlist && alt && count && stamp && batch;
    /* Pass 1: the replacement shard of each (query, list) u was to cover. */
    for (size_t i = 0; ok && i < n; i++) {
        uint32_t q = U->q[i], layer = (r->layer0 + q) % r->R;
        for (size_t p = 0; ok && p < r->nprobe; p++) {
            uint32_t l = r->plists[(size_t)q * r->nprobe + p];
            alt[i * r->nprobe + p] = UINT32_MAX;
            if (r->eff[(size_t)layer * r->nlist + l] != U->shard)
                continue;
            /* U's shard is in bad (failed or slow), so another replica's */
            uint32_t t = coord_replica_pick(coord, c, l, layer + 1, r->bad, r->nshards);
            if (t == UINT32_MAX) {
                U->uncoverable = 1;
                ok = 0;
                break;
            }
            alt[i * r->nprobe + p] = t;
            if (stamp[t] != q + 1) {
                stamp[t] = q + 1;
                count[t]++;
            }
        }
    }
    /* Pass 2: one retry unit per shard, its queries ascending. */
    for (size_t t = 0; ok && t < ns; t++) {
        stamp[t] = 0;
        if (count[t] && !(batch[t] = malloc(count[t] * sizeof *batch[t])))
            ok = 0;
        count[t] = 0;
    }
    for (size_t i = 0; ok && i < n; i++) {
        uint32_t q = U->q[i];
        for (size_t p = 0; p < r->nprobe; p++) {
            uint32_t t = alt[i * r->nprobe + p];
            if (t != UINT32_MAX && stamp[t] != q + 1) {
                stamp[t] = q + 1;
                batch[t][count[t]++] = q;
            }
        }
    }
    for (size_t t = 0; ok && t < ns; t++) {
        if (!count[t])
            continue;
        size_t k = s_unit_add(r, (uint32_t)t, (uint32_t)u, batch[t], count[t]);
        if (k == SIZE_MAX)
            break;
        batch[t] = NULL;
        r->units[u].nkids++;
        coord->hedged++;
        (void)s_unit_send(coord, job, k);
    }
    for (size_t t = 0; batch && t < ns; t++)
        free(batch[t]);
    free(batch);
    free(alt);
    free(count);
    free(stamp);
}

static int s_unit_send(coord_t *coord, coord_job_t *job, size_t u)
{
    s_read_t *r = job->state;
    const wire_request_t *req = &job->req;
    s_unit_t *U = &r->units[u];
    float *sub = malloc((U->n ? U->n : 1) * r->dim * sizeof *sub);
    if (!sub) {
        s_unit_failed(coord, job, u);
        return -1;
    }
    for (size_t i = 0; i < U->n; i++)
        memcpy(sub + i * r->dim, r->queries + (size_t)U->q[i] * r->dim, r->dim * sizeof *sub);
    wire_request_t q;
    coord_request_init(&q, WIRE_OP_SEARCH, r->coll);
    q.n = U->n;
    q.dim = (uint32_t)r->dim;
    q.vecs = sub;
    q.k = (uint32_t)r->k;
    q.mode = req->mode;
    q.ef = req->ef;
    if (req->op == WIRE_OP_SEARCH && req->nfilter) {
        q.nfilter = req->nfilter;
        q.filter = req->filter;
    }
    void *owned = sub;
    int sent = coord_send_owned(coord, job, U->shard, S_TAG_UNIT + (uint32_t)u, &q, &owned) == 0;
    free(owned); /* NULL when ZeroMQ took it */
    if (!sent)
        s_unit_failed(coord, job, u);
    return 0;
}

/* 1 when plan unit u has an answer for every query: its own, or all its retries'. */
static int s_unit_covered(const s_read_t *r, size_t u)
{
    const s_unit_t *U = &r->units[u];
    return U->state == S_OK || (U->nkids && U->kids_ok == U->nkids);
}

/* 1 when nothing more can change plan unit u's outcome. */
static int s_unit_final(const s_read_t *r, size_t u)
{
    const s_unit_t *U = &r->units[u];
    if (s_unit_covered(r, u))
        return 1;
    return U->state == S_FAILED && (U->retried || r->R < 2) &&
           U->kids_ok + U->kids_failed == U->nkids;
}

/* The search is over when every plan unit is final: answer (r->done). */
static void s_search_check(coord_t *coord, coord_job_t *job)
{
    s_read_t *r = job->state;
    for (size_t u = 0; u < r->norig; u++)
        if (!s_unit_final(r, u))
            return;
    for (size_t u = 0; u < r->norig; u++)
        if (!s_unit_covered(r, u))
            r->missing[r->units[u].shard] = 1;
    job->deadline_us = 0;
    job->on_shard_down = NULL;
    job->on_tick = NULL;
    r->phase = 0; /* later answers are ignored */
    r->done(coord, job);
}

static void s_unit_failed(coord_t *coord, coord_job_t *job, size_t u)
{
    s_read_t *r = job->state;
    s_unit_t *U = &r->units[u];
    if (U->state != S_PENDING)
        return;
    U->state = S_FAILED;
    r->bad[U->shard] = 1;
    if (U->parent != UINT32_MAX)
        r->units[U->parent].kids_failed++;
    else
        s_unit_retry(coord, job, u);
}

static void s_unit_reply(coord_t *coord, coord_job_t *job, size_t s, size_t u,
                         const wire_reply_t *rep)
{
    s_read_t *r = job->state;
    s_unit_t *U = &r->units[u];
    if (U->shard != s || U->state != S_PENDING)
        return;
    if (rep->code == SHOAL_ENOTFOUND || rep->code == SHOAL_EUNAVAIL) {
        /* The shard lost a catalog collection (a repair re-creates it) or cannot serve now
           (shutting down): as if it were down, another replica, or a partial answer. */
        if (rep->code == SHOAL_ENOTFOUND)
            coord_repair_collection(coord, s, r->coll);
        s_unit_failed(coord, job, u);
        s_search_check(coord, job);
        return;
    }
    if (rep->code != SHOAL_OK) {
        coord_fail(coord, &job, rep->code, "%s: shard %s: %s", wire_op_name(job->req.op),
                   coord->shards[s].endpoint, rep->msg[0] ? rep->msg : shoal_strerror(rep->code));
        return;
    }
    if (rep->n != U->n || (rep->n && (!rep->ids || !rep->dists || !rep->k))) {
        coord_fail(coord, &job, SHOAL_EPROTO,
                   "%s: shard %s answered %" PRIu64 " rows, %zu were asked",
                   wire_op_name(job->req.op), coord->shards[s].endpoint, rep->n, U->n);
        return;
    }
    fanout_merge_add(&r->merge, U->q, (size_t)rep->n, rep->ids, rep->dists, rep->k);
    if (rep->mode_used == WIRE_MODE_EXACT)
        r->exact = 1;
    U->state = S_OK;
    if (U->parent != UINT32_MAX)
        r->units[U->parent].kids_ok++;
    s_search_check(coord, job);
}

/* A shard this search waits on was marked down: its units fail now (and are retried). */
static void s_search_on_down(coord_t *coord, coord_job_t *job, size_t s)
{
    s_read_t *r = job->state;
    for (size_t u = 0; u < r->nunits; u++)
        if (r->units[u].shard == s && r->units[u].state == S_PENDING)
            s_unit_failed(coord, job, u);
    s_search_check(coord, job);
}

/*
 * The hedge time: plan units still unanswered are retried elsewhere (their
 * shards count as slow); then the deadline: what is unanswered is missing.
 */
static void s_search_timeout(coord_t *coord, coord_job_t *job)
{
    s_read_t *r = job->state;
    if (r->hedge_pending) {
        r->hedge_pending = 0;
        job->deadline_us = r->final_us;
        /* Units not sent yet are not slow: their round has not come. */
        for (size_t u = 0; u < r->norig; u++)
            if (r->units[u].state == S_PENDING && r->units[u].sent)
                r->bad[r->units[u].shard] = 1;
        for (size_t u = 0; u < r->norig; u++)
            if (r->units[u].state == S_PENDING && r->units[u].sent)
                s_unit_retry(coord, job, u);
        s_search_check(coord, job);
        return;
    }
    for (size_t u = 0; u < r->nunits; u++) {
        s_unit_t *U = &r->units[u];
        if (U->state != S_PENDING)
            continue;
        U->state = S_FAILED;
        if (U->parent != UINT32_MAX)
            r->units[U->parent].kids_failed++;
        else
            U->retried = 1;
    }
    s_search_check(coord, job);
}

/* ------------------------------------------------------------------------ */
/* The search path                                                          */
/* ------------------------------------------------------------------------ */

static int s_search_plan(coord_t *coord, coord_job_t *job, const catalog_coll_t *c,
                         shoal_err_t *err);
static int s_units_send_round(coord_t *coord, coord_job_t *job);
static void s_search_tick(coord_t *coord, coord_job_t *job);

/* The routing thread is back with r->plists (coord_route.c): plan and send, or fail. */
static void s_search_routed(coord_t *coord, coord_job_t *job, int rc, const shoal_err_t *err)
{
    s_read_t *r = job->state;
    shoal_err_t e;
    shoal_err_clear(&e);
    if (rc != 0) {
        coord_fail(coord, &job, rc, "%s: %s", wire_op_name(job->req.op), err->msg);
        return;
    }
    const catalog_coll_t *c = coord_coll(coord, r->coll, &e);
    rc = c ? 0 : e.code;
    if (rc == 0 && (c->nlist != r->nlist || c->replication != r->R || !c->trained))
        rc = shoal_err_set(&e, SHOAL_EUNAVAIL,
                           "collection \"%s\" was retrained while its queries were routed; retry",
                           r->coll);
    if (rc == 0)
        rc = s_search_plan(coord, job, c, &e);
    if (rc != 0)
        coord_fail(coord, &job, rc, "%s", e.msg);
}

/*
 * Routes nq queries, plans and sends one sub-batch per shard; r->done runs
 * when every sub-batch is answered (by its shard or by other replicas) or
 * the deadline passed. 0, or an error before anything was sent. A big batch
 * is routed on the routing thread (coord_route.c) and planned when it is
 * back, the loop serving other requests meanwhile.
 */
static int s_search_start(coord_t *coord, coord_job_t *job, const catalog_coll_t *c,
                          const float *queries, size_t nq, size_t k, size_t nprobe,
                          shoal_err_t *err)
{
    s_read_t *r = job->state;
    const wire_request_t *req = &job->req;
    size_t ns = r->nshards;
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
    uint32_t R = c->replication;
    r->queries = queries;
    r->nprobe = nprobe;
    r->R = R;
    r->nlist = c->nlist;
    r->layer0 = (uint32_t)(coord->read_rr % R);
    coord->read_rr += nq;
    r->plists = malloc(nq * nprobe * sizeof *r->plists);
    r->eff = malloc((size_t)R * c->nlist * sizeof *r->eff);
    r->bad = calloc(ns, sizeof *r->bad);
    if (!r->plists || !r->eff || !r->bad)
        return shoal_err_set(err, SHOAL_ENOMEM, "%s: out of memory for %zu x %zu lists",
                             wire_op_name(req->op), nq, nprobe);
    if (coord_route_is_big(coord, c, nq)) {
        job->deadline_us = 0; /* nothing may end it before the routing thread is back */
        return coord_route_submit(coord, job, c, queries, nq, nprobe, r->plists, s_search_routed,
                                  err);
    }
    rc = coord_route(coord, c, queries, nq, nprobe, r->plists, err);
    return rc != 0 ? rc : s_search_plan(coord, job, c, err);
}

/*
 * Layer y reads list l from eff[y * nlist + l]; ns (a shard that does not
 * exist) when no replica is readable: the plan's queries for it are lost.
 * Only the (layer, list) pairs the queries probe are picked; vlists gets each
 * probe's (layer, list) slot.
 */
static void s_search_pick_replicas(coord_t *coord, s_read_t *r, const catalog_coll_t *c,
                                   uint32_t *vlists)
{
    size_t ns = r->nshards, nq = r->nq, nprobe = r->nprobe;
    uint32_t R = r->R;
    for (size_t i = 0; i < (size_t)R * c->nlist; i++)
        r->eff[i] = UINT32_MAX; /* not picked yet */
    for (size_t q = 0; q < nq; q++) {
        uint32_t y = (uint32_t)((r->layer0 + q) % R);
        for (size_t p = 0; p < nprobe; p++) {
            uint32_t l = r->plists[q * nprobe + p];
            size_t v = (size_t)y * c->nlist + l;
            if (r->eff[v] == UINT32_MAX) {
                uint32_t s = coord_replica_pick(coord, c, l, y, NULL, ns);
                r->eff[v] = s == UINT32_MAX ? (uint32_t)ns : s;
            }
            vlists[q * nprobe + p] = (uint32_t)v;
        }
    }
    for (size_t i = 0; i < (size_t)R * c->nlist; i++)
        if (r->eff[i] == UINT32_MAX)
            r->eff[i] = (uint32_t)ns; /* probed by no query */
}

/* Lists without a readable replica: their replicas' shards are named missing. */
static void s_search_mark_missing(s_read_t *r, const catalog_coll_t *c)
{
    size_t ns = r->nshards, nprobe = r->nprobe;
    uint32_t R = r->R;
    for (size_t i = 0; i < r->plan.counts[ns]; i++) {
        size_t q = r->plan.queries[ns][i], y = (r->layer0 + q) % R;
        for (size_t p = 0; p < nprobe; p++) {
            uint32_t l = r->plists[q * nprobe + p];
            if (r->eff[y * c->nlist + l] != ns)
                continue;
            for (uint32_t rr = 0; rr < R; rr++)
                if (catalog_owner(c, l, rr) < ns)
                    r->missing[catalog_owner(c, l, rr)] = 1;
        }
    }
}

/* A shard's share in sub-batches of at most sub_batch_max queries, interleaved
   across shards (unit i of every shard before unit i + 1 of any); -1 out of memory. */
static int s_search_units(coord_t *coord, s_read_t *r)
{
    size_t ns = r->nshards;
    size_t most = coord->opts.sub_batch_max ? coord->opts.sub_batch_max
                                            : COORD_SUB_BATCH_MAX_DEFAULT;
    for (size_t from = 0, more = 1; more; from += most) {
        more = 0;
        for (size_t s = 0; s < ns; s++) {
            if (r->plan.counts[s] <= from)
                continue;
            size_t n = r->plan.counts[s] - from < most ? r->plan.counts[s] - from : most;
            more |= from + n < r->plan.counts[s];
            if (s_unit_add(r, (uint32_t)s, UINT32_MAX, r->plan.queries[s] + from, n) ==
                SIZE_MAX)
                return -1;
        }
    }
    return 0;
}

/* Picks a replica of every probed list, builds the plan and sends its units. */
static int s_search_plan(coord_t *coord, coord_job_t *job, const catalog_coll_t *c,
                         shoal_err_t *err)
{
    s_read_t *r = job->state;
    const wire_request_t *req = &job->req;
    size_t ns = r->nshards, nq = r->nq, nprobe = r->nprobe;
    uint32_t R = r->R;
    int rc = 0;
    uint32_t *vlists = malloc(nq * nprobe * sizeof *vlists);
    if (!vlists)
        return shoal_err_set(err, SHOAL_ENOMEM, "%s: out of memory for %zu x %zu lists",
                             wire_op_name(req->op), nq, nprobe);
    s_search_pick_replicas(coord, r, c, vlists);
    rc = fanout_plan_build(vlists, nq, nprobe, r->eff, (size_t)R * c->nlist, ns + 1, &r->plan, err);
    free(vlists);
    if (rc != 0)
        return rc;
    r->have_plan = 1;
    s_search_mark_missing(r, c);
    if (s_search_units(coord, r) != 0)
        return shoal_err_set(err, SHOAL_ENOMEM, "%s: out of memory", wire_op_name(req->op));
    r->norig = r->nunits;
    if (job->client) /* a calibration's searches are not the clients' fan-out */
        coord_record_fanout(coord, r->plan.per_query, nq);
    int64_t now = zclock_usecs(), deadline = (int64_t)s_deadline_ms(coord, job) * 1000;
    r->final_us = now + deadline;
    r->hedge_pending = R > 1 && coord->opts.hedge_pct > 0 && coord->opts.hedge_pct < 100;
    job->deadline_us = r->hedge_pending ? now + deadline * coord->opts.hedge_pct / 100
                                        : r->final_us;
    job->on_reply = s_on_reply;
    job->on_timeout = s_on_timeout;
    job->on_shard_down = s_search_on_down;
    if (s_units_send_round(coord, job) != 0)
        return shoal_err_set(err, SHOAL_ENOMEM, "%s: out of memory", wire_op_name(req->op));
    s_search_check(coord, job); /* may answer (and end the job): nothing was sent */
    return 0;
}

/*
 * Sends the next round of plan units: at most one per shard, so a turn of
 * the loop copies at most nshards x sub_batch_max queries and other
 * requests are served between rounds; while units remain, the job ticks.
 * 0, or -1 out of memory.
 */
static int s_units_send_round(coord_t *coord, coord_job_t *job)
{
    s_read_t *r = job->state;
    uint8_t *taken = calloc(r->nshards ? r->nshards : 1, 1); /* shards sent to this round */
    if (!taken)
        return -1;
    size_t u = r->next_unsent;
    for (; u < r->norig; u++) {
        s_unit_t *U = &r->units[u];
        if (U->sent || U->state != S_PENDING)
            continue;
        if (taken[U->shard])
            break; /* the next round's */
        taken[U->shard] = 1;
        U->sent = 1;
        if (s_unit_send(coord, job, u) != 0) {
            free(taken);
            return -1;
        }
    }
    free(taken);
    while (r->next_unsent < r->norig && (r->units[r->next_unsent].sent ||
                                         r->units[r->next_unsent].state != S_PENDING))
        r->next_unsent++;
    job->on_tick = r->next_unsent < r->norig ? s_search_tick : NULL;
    return 0;
}

/* A turn of the loop: the next round of a big search's sub-batches. */
static void s_search_tick(coord_t *coord, coord_job_t *job)
{
    if (s_units_send_round(coord, job) != 0) {
        coord_fail(coord, &job, SHOAL_ENOMEM, "%s: out of memory", wire_op_name(job->req.op));
        return;
    }
    s_search_check(coord, job);
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
    coord_recall_sample(coord, job, r->merge.ids, r->k);
    if (r->calibrated) {
        rep.nprobe_used = job->req.nprobe;
        rep.ef_used = job->req.ef;
        rep.recall = r->calibrated_recall;
    }
    coord_reply(coord, &job, &rep);
    wire_reply_fini(&rep);
}

/*
 * A search at a recall target (the request's `recall`, else the collection's
 * target_recall when neither nprobe nor ef is given) runs at the calibrated
 * setting: job->req's nprobe and ef are set from it. A `recall` asked of a
 * collection not calibrated yet is SHOAL_EUNAVAIL saying why; the
 * collection's own target then just falls back to the defaults.
 */
static int s_recall_setting(coord_t *coord, coord_job_t *job, const catalog_coll_t *c,
                            double *recall, shoal_err_t *err)
{
    wire_request_t *req = &job->req;
    double target = req->recall;
    if (target <= 0 && !req->nprobe && !req->ef)
        target = c->target_recall;
    if (target <= 0)
        return 0;
    uint32_t nprobe = 0, ef = 0;
    if (coord_calib_pick(c, target, &nprobe, &ef, recall) < 0) {
        if (req->recall <= 0)
            return 0;
        return shoal_err_set(err, SHOAL_EUNAVAIL,
                             "search: collection \"%s\" is not calibrated yet for recall "
                             "targets (%s%" PRIu64 " vectors; calibration needs %d and runs in "
                             "the background): give nprobe / ef instead",
                             c->name, coord->calib.phase != COORD_CALIB_IDLE &&
                                          !strcmp(coord->calib.coll, c->name)
                                      ? "calibrating now, "
                                      : "",
                             c->count, COORD_CALIB_MIN_VECTORS);
    }
    req->nprobe = nprobe;
    req->ef = ef < req->k ? req->k : ef; /* calibrated for recall@10; a shard needs ef >= k */
    return 1;
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
    double calibrated_recall = 0;
    int calibrated = rc == 0 ? s_recall_setting(coord, job, c, &calibrated_recall, &err) : 0;
    if (calibrated < 0)
        rc = err.code;
    if (rc == 0)
        rc = s_nprobe(job, c, &nprobe, &err);
    if (rc == 0)
        rc = coord_check_vectors("search", c, req->vecs, (size_t)req->n, NULL, &err);
    s_read_t *r = rc == 0 ? s_read_new(coord, job) : NULL;
    if (rc == 0 && !r)
        rc = shoal_err_set(&err, SHOAL_ENOMEM, "search: out of memory");
    if (rc == 0) {
        r->calibrated = calibrated;
        r->calibrated_recall = calibrated_recall;
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
    size_t n = r->n, ns = r->nshards;
    r->phase = S_TAG_GET;
    r->found = calloc(n ? n : 1, 1);
    r->vecs = calloc((n ? n : 1) * c->dim, sizeof(float));
    r->gpos = calloc(ns, sizeof *r->gpos);
    r->gids = calloc(ns, sizeof *r->gids);
    r->gn = calloc(ns, sizeof *r->gn);
    if (!r->found || !r->vecs || !r->gpos || !r->gids || !r->gn)
        return shoal_err_set(err, SHOAL_ENOMEM, "%s: out of memory for %zu vectors",
                             wire_op_name(job->req.op), n);
    uint32_t first = c->replication > 1 ? (uint32_t)(coord->read_rr++ % c->replication) : 0;
    for (size_t i = 0; i < n; i++) {
        if (lists[i] == CATALOG_LIST_NONE || lists[i] >= c->nlist)
            continue;
        /* A readable replica; else the primary (down: missing). */
        uint32_t s = coord_replica_pick(coord, c, lists[i], first, NULL, ns);
        if (s == UINT32_MAX)
            s = catalog_owner(c, lists[i], 0);
        if (s >= ns) { /* on a shard added after this request began: missing */
            continue;
        }
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
        coord_request_init(&q, WIRE_OP_GET, c->name);
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

/* knn_graph's arguments: k, chunk against the limits, nprobe, and the cursor into *pos and
 * *from (a list's position in the walk, the first id to read in it). */
static int s_knn_args(coord_t *coord, coord_job_t *job, const catalog_coll_t *c, size_t chunk,
                      size_t *nprobe, size_t *pos, uint64_t *from, shoal_err_t *err)
{
    const wire_request_t *req = &job->req;
    int rc = s_check_k(coord, job, err);
    if (rc == 0 && (chunk > coord->limits.max_batch ||
                    chunk > coord->limits.max_message_bytes / ((size_t)req->k * 12 + 8)))
        rc = shoal_err_set(err, SHOAL_ELIMIT,
                           "knn_graph: \"chunk\" %zu is over the limit (--max-batch %zu, or the "
                           "reply would exceed --max-message-bytes)",
                           chunk, coord->limits.max_batch);
    if (rc == 0)
        rc = s_nprobe(job, c, nprobe, err);
    if (rc == 0 && req->cursor[0] && s_cursor_parse(req->cursor, c->nlist, pos, from) != 0)
        rc = shoal_err_set(err, SHOAL_EINVAL,
                           "knn_graph: bad cursor \"%s\" (pass back the cursor of the previous "
                           "reply, or \"\" to start)",
                           req->cursor);
    return rc;
}

/* Reads up to chunk stored ids from the lists in walk order, from (*pos, *from) on, into rows
 * (row_lists: each one's list); moves the cursor past them, *got their number. */
static int s_knn_walk(coord_t *coord, const catalog_coll_t *c, const uint64_t *walk, size_t chunk,
                      size_t *pos, uint64_t *from, uint64_t *rows, uint32_t *row_lists,
                      size_t *got_p, shoal_err_t *err)
{
    int rc = 0;
    size_t got = 0;
    while (rc == 0 && got < chunk && *pos < c->nlist) {
        size_t asked = chunk - got, g = 0;
        uint32_t list = (uint32_t)walk[*pos];
        rc = catalog_scan_list(coord->cat, c->name, list, *from, rows + got, asked, &g, err);
        for (size_t i = 0; i < g; i++)
            row_lists[got + i] = list;
        got += g;
        if (rc == 0 && g < asked) {
            (*pos)++;
            *from = 0;
        } else if (rc == 0) {
            *from = rows[got - 1] + 1;
        }
    }
    *got_p = got;
    return rc;
}

void coord_op_knn_graph(coord_t *coord, coord_job_t *job)
{
    const wire_request_t *req = &job->req;
    shoal_err_t err;
    shoal_err_clear(&err);
    const catalog_coll_t *c = coord_coll(coord, req->coll, &err);
    size_t nprobe = 0, pos = 0, chunk = req->chunk ? req->chunk : coord->opts.chunk_default;
    uint64_t from = 0;
    int rc = c ? s_knn_args(coord, job, c, chunk, &nprobe, &pos, &from, &err) : err.code;
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

    /* The walk: lists in order (not by owner: a list may move between two
       chunks, and the cursor's position must mean the same list then). */
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
        walk[l] = l;
    size_t got = 0;
    rc = s_knn_walk(coord, c, walk, chunk, &pos, &from, r->rows, row_lists, &got, &err);
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
