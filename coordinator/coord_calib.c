/*
 * coord_calib.c - recall calibration: what recall@k each (nprobe, ef)
 * setting reaches on a collection, measured by the coordinator itself, so
 * that a search can ask for a recall (`recall` 0.95) instead of knobs.
 *
 * How a collection is calibrated (one at a time, in the background):
 *   1. queries: COORD_CALIB_QUERIES of its own stored vectors x, taken from
 *      every list in proportion to the list's size (the first ids of each
 *      list in id order: the catalog's membership walk), fetched with `get`;
 *      then each one's nearest other stored vector y (an exact search for 2
 *      neighbours, and a get), and the query is q = x + 2 |y - x| u, u a
 *      random unit vector: a point off the data, twice as far from x as x's
 *      nearest neighbour. Why not x itself: a stored vector is its own
 *      nearest neighbour and the graph walk is drawn to it, so recall
 *      measured with x overestimates what unseen queries get (on siftsmall
 *      0.965 where held-out queries got 0.933; midpoints (x + y) / 2 did no
 *      better, 0.967, an offset of one distance 0.962). Twice the distance
 *      gives q the relative contrast of real queries (siftsmall: 10th / 1st
 *      neighbour distance 1.31 against 1.26 for its held-out queries, 1.58
 *      for stored vectors); measured, the calibrated recall is then within
 *      0.01 of the held-out one on siftsmall and glove50 (docs/operations.md);
 *   2. truth: one exact search of the queries over every list (mode exact,
 *      nprobe = nlist) for k neighbours;
 *   3. the grid: one HNSW search of all the queries per (nprobe, ef) in
 *      {1, 2, 4, ..., nlist} x {16, 32, 64, 128, 256}: its recall@k against
 *      the truth and its cost, the mean shards touched per query x ef (the
 *      work the shards do);
 *   4. the table (catalog K/ record, so it survives a restart).
 * Each step is an internal job through the same search and get paths as a
 * client's (coord_search.c), so what is measured is what a client gets. A
 * collection is calibrated once it holds COORD_CALIB_MIN_VECTORS, and again
 * when its count has moved by COORD_CALIB_REGROW since; not while it has
 * stale replicas or moves (its answers are then in flux), and only once its
 * count stayed the same for COORD_CALIB_LOOK_MS (not while it is loaded); a
 * measurement during which the count changed is thrown away. A failed step is
 * logged and the whole calibration tried again after COORD_CALIB_RETRY_MS.
 *
 * Picking: for a target T, the cheapest point whose recall >= T; when none
 * reaches it, the point with the best recall (the reply then says the
 * recall it has). Why stored vectors as queries: they are the only sample of
 * the collection's distribution the coordinator has; held-out queries of
 * the same distribution reach slightly less (docs/operations.md gives the
 * tolerance measured on siftsmall and glove50).
 *
 * Thread-safety: the loop thread only.
 */
#include "coordinator/coord_private.h"

#include "common/rng.h"
#include "common/log.h"
#include "common/topk.h"

#include <math.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_K 10 /* recall@k measured */
#define S_OFFSET 2.0 /* a query lies this many nearest-neighbour distances off a stored vector */

static const uint32_t s_efs[] = {16, 32, 64, 128, 256};
#define S_NEFS (sizeof s_efs / sizeof s_efs[0])

/* ------------------------------------------------------------------------ */
/* Picking                                                                  */
/* ------------------------------------------------------------------------ */

int coord_calib_pick(const catalog_coll_t *c, double target, uint32_t *nprobe, uint32_t *ef,
                     double *recall)
{
    const catalog_calib_t *t = c->calib;
    if (!t || !t->npoints)
        return -1;
    const catalog_calib_point_t *best = NULL, *top = NULL;
    for (uint32_t i = 0; i < t->npoints; i++) {
        const catalog_calib_point_t *p = &t->points[i];
        if (p->nprobe > c->nlist)
            continue;
        if (!top || p->recall > top->recall || (p->recall == top->recall && p->cost < top->cost))
            top = p;
        if (p->recall >= target && (!best || p->cost < best->cost))
            best = p;
    }
    const catalog_calib_point_t *use = best ? best : top;
    if (!use)
        return -1;
    *nprobe = use->nprobe;
    *ef = use->ef;
    *recall = use->recall;
    return best ? 0 : 1;
}

/* ------------------------------------------------------------------------ */
/* The calibration in progress                                              */
/* ------------------------------------------------------------------------ */

static void s_reset(coord_calib_t *cb)
{
    free(cb->ids);
    free(cb->vecs);
    free(cb->truth);
    free(cb->near);
    cb->ids = NULL;
    cb->vecs = NULL;
    cb->truth = NULL;
    cb->near = NULL;
    cb->nq = 0;
    cb->phase = COORD_CALIB_IDLE;
    cb->waiting = 0;
}

/* Ends the calibration in progress, failed (why logged), retried later. */
static void s_fail(coord_t *coord, const char *why)
{
    coord_calib_t *cb = &coord->calib;
    log_warn("calibration of \"%s\": %s (tried again in %d s)", cb->coll, why,
             COORD_CALIB_RETRY_MS / 1000);
    cb->failures++;
    cb->next_us = zclock_usecs() + (int64_t)COORD_CALIB_RETRY_MS * 1000;
    s_reset(cb);
}

static void s_on_result(coord_t *coord, coord_job_t *job, const wire_reply_t *rep);

/* Sends the next internal request of the calibration: a get of ids, or a search of the
   queries for k neighbours. */
coord_job_t *coord_internal_read(coord_t *coord, wire_op_t op, const char *coll,
                                 const uint64_t *ids, const float *vecs, size_t n, uint32_t dim,
                                 uint32_t k, wire_mode_t mode, uint32_t nprobe, uint32_t ef,
                                 void (*on_result)(coord_t *, coord_job_t *, const wire_reply_t *))
{
    coord_job_t *job = coord_job_new(coord, 0);
    if (!job)
        return NULL;
    coord_request_init(&job->req, op, coll);
    job->req.n = n;
    if (op == WIRE_OP_GET) {
        job->req.ids = ids;
        job->start = coord_op_get;
    } else {
        job->req.dim = dim;
        job->req.vecs = vecs;
        job->req.k = k;
        job->req.mode = mode;
        job->req.nprobe = nprobe;
        job->req.ef = ef;
        job->start = coord_op_search;
    }
    job->on_result = on_result;
    coord_job_submit(coord, job); /* a read: it starts now (and may end now) */
    return job;
}

static void s_submit(coord_t *coord, wire_op_t op, const uint64_t *ids, uint32_t k,
                     uint32_t nprobe, uint32_t ef, wire_mode_t mode)
{
    coord_calib_t *cb = &coord->calib;
    /* Set before the submit: a job that fails at once calls s_on_result inside it. */
    cb->waiting = 1;
    coord_job_t *job = coord_internal_read(coord, op, cb->coll, ids, cb->vecs, cb->nq, cb->dim,
                                           k, mode, nprobe, ef, s_on_result);
    if (!job) {
        cb->waiting = 0;
        s_fail(coord, "out of memory");
    }
}

/* The next grid point, or the end: the table is stored. */
static void s_next_point(coord_t *coord)
{
    coord_calib_t *cb = &coord->calib;
    if (cb->point < cb->npoints) {
        const catalog_calib_point_t *p = &cb->table.points[cb->point];
        s_submit(coord, WIRE_OP_SEARCH, NULL, S_K, p->nprobe, p->ef, WIRE_MODE_HNSW);
        return;
    }
    shoal_err_t err;
    shoal_err_clear(&err);
    cb->table.npoints = (uint32_t)cb->npoints;
    const catalog_coll_t *now = catalog_find(coord->cat, cb->coll);
    if (!now || now->count != cb->table.count) { /* written meanwhile: the truth is old */
        s_fail(coord, "the collection changed while it was measured");
        cb->next_us = zclock_usecs() + (int64_t)COORD_CALIB_LOOK_MS * 1000;
        return;
    }
    if (catalog_calib_set(coord->cat, cb->coll, &cb->table, &err) != 0) {
        s_fail(coord, err.msg);
        return;
    }
    const catalog_coll_t *c = catalog_find(coord->cat, cb->coll);
    uint32_t np = 0, ef = 0;
    double rc = 0;
    if (c && coord_calib_pick(c, 0.95, &np, &ef, &rc) >= 0)
        log_info("calibration of \"%s\" (%" PRIu64 " vectors, %zu queries, %zu settings): "
                 "recall@%d %.3f at nprobe %u ef %u for a 0.95 target",
                 cb->coll, cb->table.count, cb->nq, cb->npoints, S_K, rc, np, ef);
    for (size_t i = 0; i < cb->npoints; i++)
        log_debug("calibration of \"%s\": nprobe %u ef %u recall %.4f cost %.1f", cb->coll,
                  cb->table.points[i].nprobe, cb->table.points[i].ef,
                  cb->table.points[i].recall, cb->table.points[i].cost);
    cb->done++;
    s_reset(cb);
}

/* recall@k of rep's answers against the truth. */
static double s_recall(const coord_calib_t *cb, const wire_reply_t *rep)
{
    size_t hit = 0;
    for (size_t q = 0; q < cb->nq; q++) {
        const uint64_t *got = rep->ids + q * S_K, *truth = cb->truth + q * S_K;
        for (size_t i = 0; i < S_K; i++)
            for (size_t j = 0; got[i] != TOPK_ID_NONE && j < S_K; j++)
                if (truth[j] == got[i]) {
                    hit++;
                    break;
                }
    }
    return (double)hit / (double)(cb->nq * S_K);
}

/* 1 when rep is a get's answer for the calibration's nq ids (its shape, not what it found). */
static int s_get_shaped(const coord_calib_t *cb, const wire_reply_t *rep)
{
    return rep->n == cb->nq && rep->dim == cb->dim && rep->found && rep->vecs;
}

/* The get phase's answer: keeps the sampled rows still stored, their vectors, then asks for
 * their nearest neighbours (exact search, k 2). */
static void s_on_get(coord_t *coord, const wire_reply_t *rep)
{
    coord_calib_t *cb = &coord->calib;
    char why[WIRE_MSG_MAX + 64];
    if (!s_get_shaped(cb, rep)) {
        s_fail(coord, "get: an answer of the wrong shape");
        return;
    }
    size_t m = 0;
    for (size_t i = 0; i < cb->nq; i++) {
        if (!rep->found[i])
            continue; /* deleted since the walk */
        cb->ids[m] = cb->ids[i];
        memcpy(cb->vecs + m * cb->dim, rep->vecs + i * cb->dim, cb->dim * sizeof(float));
        m++;
    }
    if (m < COORD_CALIB_QUERIES_MIN) {
        snprintf(why, sizeof why, "only %zu of the sampled vectors are stored", m);
        s_fail(coord, why);
        return;
    }
    cb->nq = m;
    cb->phase = COORD_CALIB_NEAR;
    s_submit(coord, WIRE_OP_SEARCH, NULL, 2, cb->nlist, 0, WIRE_MODE_EXACT);
}

/* The neighbours' vectors: moves each query off the data (below), then asks for the truth. */
static void s_on_nearget(coord_t *coord, const wire_reply_t *rep)
{
    coord_calib_t *cb = &coord->calib;
    size_t found = 0;
    for (size_t i = 0; s_get_shaped(cb, rep) && i < cb->nq; i++)
        found += rep->found[i] != 0;
    float *u = malloc(cb->dim * sizeof *u);
    if (!u || found < cb->nq) {
        free(u);
        s_fail(coord, u ? "get of the neighbours: some are gone (retried)" : "out of memory");
        return;
    }
    /* q = x + S_OFFSET |y - x| u, u a random unit vector: off the data in a random
       direction, S_OFFSET times as far from x as x's nearest neighbour y. */
    const float *y = rep->vecs;
    shoal_rng_t rng;
    shoal_rng_seed(&rng, cb->table.count ^ 0x5ca1ab1eu);
    for (size_t q = 0; q < cb->nq; q++) {
        float *x = cb->vecs + q * cb->dim;
        const float *yq = y + q * cb->dim;
        double d2 = 0, n2 = 0;
        for (size_t j = 0; j < cb->dim; j++) {
            d2 += ((double)yq[j] - x[j]) * ((double)yq[j] - x[j]);
            u[j] = (float)shoal_rng_normal(&rng);
            n2 += (double)u[j] * u[j];
        }
        double scale = n2 > 0 ? S_OFFSET * sqrt(d2 / n2) : 0;
        for (size_t j = 0; j < cb->dim; j++)
            x[j] += (float)(scale * u[j]);
    }
    free(u);
    cb->phase = COORD_CALIB_TRUTH;
    s_submit(coord, WIRE_OP_SEARCH, NULL, S_K, cb->nlist, 0, WIRE_MODE_EXACT);
}

/* The near phase's search (k 2): each sample's nearest other row, then a get of those rows. */
static void s_on_near(coord_t *coord, const wire_reply_t *rep)
{
    coord_calib_t *cb = &coord->calib;
    for (size_t q = 0; q < cb->nq; q++) { /* the nearest one that is not the query */
        uint64_t a = rep->ids[2 * q], b = rep->ids[2 * q + 1];
        cb->near[q] = a == cb->ids[q] ? b : a;
        if (cb->near[q] == TOPK_ID_NONE) {
            s_fail(coord, "a sampled vector has no neighbour");
            return;
        }
    }
    cb->phase = COORD_CALIB_NEARGET;
    s_submit(coord, WIRE_OP_GET, cb->near, 0, 0, 0, WIRE_MODE_AUTO);
}

/* A job of the calibration came back: the answer moves its phase on (or fails it). */
static void s_on_result(coord_t *coord, coord_job_t *job, const wire_reply_t *rep)
{
    coord_calib_t *cb = &coord->calib;
    if (!cb->waiting)
        return;
    cb->waiting = 0;
    char why[WIRE_MSG_MAX + 64];
    if (rep->code != SHOAL_OK) {
        snprintf(why, sizeof why, "%s: %s", wire_op_name(job->req.op), rep->msg);
        s_fail(coord, why);
        return;
    }
    if (cb->phase == COORD_CALIB_GET) {
        s_on_get(coord, rep);
        return;
    }
    if (cb->phase == COORD_CALIB_NEARGET) {
        s_on_nearget(coord, rep);
        return;
    }
    uint32_t want_k = cb->phase == COORD_CALIB_NEAR ? 2 : S_K;
    if (rep->n != cb->nq || rep->k != want_k || !rep->ids || rep->partial) {
        s_fail(coord, rep->partial ? "a search was partial (a shard did not answer)"
                                   : "search: an answer of the wrong shape");
        return;
    }
    if (cb->phase == COORD_CALIB_NEAR) {
        s_on_near(coord, rep);
        return;
    }
    if (cb->phase == COORD_CALIB_TRUTH) {
        memcpy(cb->truth, rep->ids, cb->nq * S_K * sizeof *cb->truth);
        cb->phase = COORD_CALIB_GRID;
        cb->point = 0;
        s_next_point(coord);
        return;
    }
    catalog_calib_point_t *p = &cb->table.points[cb->point];
    p->recall = (float)s_recall(cb, rep);
    p->cost = (float)((double)rep->fanout / (double)cb->nq * p->ef);
    cb->point++;
    s_next_point(coord);
}

/* 1 when c should be (re)calibrated now. */
static int s_wanted(const catalog_coll_t *c)
{
    if (!c->trained || c->count < COORD_CALIB_MIN_VECTORS || c->nstale || c->nmoves ||
        c->norphans)
        return 0;
    if (!c->calib)
        return 1;
    double was = (double)c->calib->count, now = (double)c->count;
    return now > was * (1 + COORD_CALIB_REGROW) || now < was / (1 + COORD_CALIB_REGROW);
}

/*
 * Samples the queries' ids of c from its lists, in proportion to their
 * sizes: list l gets the rounded cumulative share up to its end less that
 * up to its start, so the shares sum to `want` however many lists there
 * are. (Rounding each list's own share, as before, gave every list 0 once
 * nlist passed about 2 x want: a collection with nlist 1,024 never
 * calibrated.)
 */
static int s_sample(coord_t *coord, const catalog_coll_t *c, shoal_err_t *err)
{
    coord_calib_t *cb = &coord->calib;
    size_t want = COORD_CALIB_QUERIES;
    if (want > c->count / 10)
        want = (size_t)(c->count / 10);
    cb->ids = malloc(want * sizeof *cb->ids);
    if (!cb->ids)
        return shoal_err_set(err, SHOAL_ENOMEM, "out of memory");
    size_t got = 0, before = 0;
    uint64_t cum = 0;
    for (uint32_t l = 0; l < c->nlist && got < want; l++) {
        cum += c->list_counts[l];
        size_t upto = (size_t)((double)want * (double)cum / (double)c->count + 0.5);
        size_t share = upto > before ? upto - before : 0;
        before = upto;
        if (share > want - got)
            share = want - got;
        size_t n = 0;
        if (share && catalog_scan_list(coord->cat, c->name, l, 0, cb->ids + got, share, &n,
                                       err) != 0)
            return err->code;
        got += n;
    }
    cb->nq = got;
    return got >= COORD_CALIB_QUERIES_MIN ? 0
                                          : shoal_err_set(err, SHOAL_EINVAL,
                                                          "%zu sampled queries, %d needed", got,
                                                          COORD_CALIB_QUERIES_MIN);
}

/* Starts calibrating c: the grid, the sample, the get. */
static void s_start(coord_t *coord, const catalog_coll_t *c)
{
    coord_calib_t *cb = &coord->calib;
    s_reset(cb);
    snprintf(cb->coll, sizeof cb->coll, "%s", c->name);
    cb->dim = c->dim;
    cb->nlist = c->nlist;
    memset(&cb->table, 0, sizeof cb->table);
    cb->table.count = c->count;
    cb->table.k = S_K;
    cb->npoints = 0;
    for (uint32_t np = 1; np <= c->nlist; np = np * 2 > c->nlist && np < c->nlist ? c->nlist
                                                                                   : np * 2) {
        for (size_t e = 0; e < S_NEFS && cb->npoints < CATALOG_CALIB_POINTS_MAX; e++) {
            catalog_calib_point_t *p = &cb->table.points[cb->npoints++];
            p->nprobe = np;
            p->ef = s_efs[e];
        }
        if (np == c->nlist)
            break;
    }
    shoal_err_t err;
    shoal_err_clear(&err);
    if (s_sample(coord, c, &err) != 0) {
        s_fail(coord, err.msg);
        return;
    }
    cb->table.queries = (uint32_t)cb->nq;
    cb->vecs = malloc(cb->nq * c->dim * sizeof *cb->vecs);
    cb->truth = malloc(cb->nq * S_K * sizeof *cb->truth);
    cb->near = malloc(cb->nq * sizeof *cb->near);
    if (!cb->vecs || !cb->truth || !cb->near) {
        s_fail(coord, "out of memory");
        return;
    }
    log_info("calibration of \"%s\": %zu of its vectors as queries, %zu settings", c->name,
             cb->nq, cb->npoints);
    cb->phase = COORD_CALIB_GET;
    s_submit(coord, WIRE_OP_GET, cb->ids, 0, 0, 0, WIRE_MODE_AUTO);
}

void coord_calib_tick(coord_t *coord, int64_t now)
{
    coord_calib_t *cb = &coord->calib;
    if (coord->stopping || cb->phase != COORD_CALIB_IDLE || now < cb->next_us)
        return;
    cb->next_us = now + (int64_t)COORD_CALIB_LOOK_MS * 1000;
    /* A collection is measured once it was quiet (the same count) for a whole look:
       one being loaded would change under the measurement. */
    for (size_t i = 0; i < catalog_coll_count(coord->cat); i++) {
        const catalog_coll_t *c = catalog_coll_at(coord->cat, i);
        if (!s_wanted(c))
            continue;
        if (!strcmp(cb->quiet_coll, c->name) && cb->quiet_count == c->count) {
            s_start(coord, c);
            return;
        }
        snprintf(cb->quiet_coll, sizeof cb->quiet_coll, "%s", c->name);
        cb->quiet_count = c->count;
        return;
    }
}

void coord_calib_fini(coord_t *coord)
{
    s_reset(&coord->calib);
    coord_recall_fini(coord); /* the telemetry's queue: coord_destroy calls only this */
}

void coord_calib_info(coord_t *coord, wire_info_t *info, const catalog_coll_t *c)
{
    static const double targets[] = {0.9, 0.95, 0.99};
    static const char *const keys[] = {"t90", "t95", "t99"}; /* no dots: paths split on them */
    const catalog_calib_t *t = c->calib;
    wire_info_key(info, "calibration");
    int running = coord->calib.phase != COORD_CALIB_IDLE && !strcmp(coord->calib.coll, c->name);
    wire_info_map(info, t ? 7 + 3 : 3);
    wire_io_info_u64(info, "running", running);
    /* wanted, not yet running: it starts once the count stays put (s_wanted) */
    wire_io_info_u64(info, "due", !running && s_wanted(c));
    wire_io_info_u64(info, "points", t ? t->npoints : 0);
    if (!t)
        return;
    wire_io_info_u64(info, "count", t->count);
    wire_io_info_u64(info, "queries", t->queries);
    wire_io_info_u64(info, "k", t->k);
    wire_io_info_f64(info, "target_recall", c->target_recall);
    for (size_t i = 0; i < 3; i++) {
        uint32_t np = 0, ef = 0;
        double r = 0;
        wire_info_key(info, keys[i]);
        int rc = coord_calib_pick(c, targets[i], &np, &ef, &r);
        wire_info_map(info, 3);
        wire_io_info_u64(info, "nprobe", rc >= 0 ? np : 0);
        wire_io_info_u64(info, "ef", rc >= 0 ? ef : 0);
        wire_io_info_f64(info, "recall", rc >= 0 ? r : 0);
    }
}
