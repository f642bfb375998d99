/*
 * coord_recall.c - online recall telemetry: what recall@k clients actually
 * get, estimated from their own searches.
 *
 * A fraction of client searches (--recall-sample; else the environment's
 * SHOAL_RECALL_SAMPLE in [0, 1]; else COORD_RECALL_SAMPLE_DEFAULT, 0.5 %) is
 * sampled: one query of the request (its
 * vector and the ids the client got, at most S_K of them) goes into a
 * bounded queue (COORD_RECALL_QUEUE; a sample that finds it full is dropped
 * and counted). Later, at low priority (no calibration running, fewer than
 * COORD_RECALL_BUSY client requests in progress, one at a time), each is
 * searched again in exact mode over every list, through the client path
 * (coord_internal_read); its recall is |got ∩ exact| / k. Paced by cost:
 * after an exact search that took T, the next waits (1 / COORD_RECALL_BUDGET
 * - 1) x T (and at least COORD_RECALL_PAUSE_MS), so the checks take at most
 * that share (--recall-budget; else SHOAL_RECALL_BUDGET; else
 * COORD_RECALL_BUDGET, 2 %) of the time whatever the sample rate. Why: an
 * exact search grows with the collection, a graph search hardly; at 10^6
 * vectors one check cost about 160 graph searches, and at 0.5 % sampled the
 * checks took as much CPU as the queries they checked (docs/scaling.md);
 * samples that find the queue full are dropped and counted. Per collection the
 * last COORD_RECALL_WINDOW recalls are kept: the estimate is their mean, with
 * a 95 % confidence half-width 1.96 s / sqrt(n) (s their standard deviation),
 * in stats (`recall_estimate`) and /metrics (`shoal_recall_estimate`). Why a
 * window and not all time: a change of ef, nprobe or data shows within
 * COORD_RECALL_WINDOW samples. The exact search sees the collection as it is
 * when it runs, not as it was at sampling: writes in between count against
 * the estimate (slightly low under heavy writes).
 *
 * Thread-safety: the loop thread only.
 */
#include "coordinator/coord_private.h"

#include "common/log.h"
#include "common/topk.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_K 10 /* recall@k, k at most this */

/* A fraction in [lo, 1] from the environment's name, else (absent or bad) dflt. */
static double s_env_fraction(const char *name, double lo, double dflt)
{
    const char *env = getenv(name);
    char *end = NULL;
    double v = env ? strtod(env, &end) : dflt;
    return env && (end == env || *end || !(v >= lo && v <= 1)) ? dflt : v;
}

/* A collection's window, created at its first sample. */
static coord_recall_coll_t *s_coll(coord_t *coord, const char *name, int create)
{
    coord_recall_t *rc = &coord->recall;
    for (size_t i = 0; i < rc->ncolls; i++)
        if (!strcmp(rc->colls[i].name, name))
            return &rc->colls[i];
    if (!create)
        return NULL;
    coord_recall_coll_t *grown = realloc(rc->colls, (rc->ncolls + 1) * sizeof *grown);
    if (!grown)
        return NULL;
    rc->colls = grown;
    coord_recall_coll_t *w = &rc->colls[rc->ncolls++];
    memset(w, 0, sizeof *w);
    snprintf(w->name, sizeof w->name, "%s", name);
    return w;
}

void coord_recall_sample(coord_t *coord, const coord_job_t *job, const uint64_t *ids, size_t k)
{
    coord_recall_t *rc = &coord->recall;
    const wire_request_t *req = &job->req;
    if (!rc->rate_set) { /* the option, else the environment, else the default */
        rc->rate = coord->opts.recall_sample >= 0
                       ? coord->opts.recall_sample
                       : s_env_fraction("SHOAL_RECALL_SAMPLE", 0, COORD_RECALL_SAMPLE_DEFAULT);
        rc->budget = coord->opts.recall_budget > 0
                         ? coord->opts.recall_budget
                         : s_env_fraction("SHOAL_RECALL_BUDGET", 1e-3, COORD_RECALL_BUDGET);
        rc->rate_set = 1;
    }
    if (!job->client || rc->rate <= 0 || req->n == 0 || req->nfilter || !ids || k == 0 ||
        req->mode == WIRE_MODE_EXACT)
        return;
    rc->credit += rc->rate;
    if (rc->credit < 1.0)
        return;
    rc->credit -= 1.0;
    if (rc->nqueued >= COORD_RECALL_QUEUE) {
        rc->dropped++;
        return;
    }
    size_t q = (size_t)(rc->sampled % req->n); /* spread over the batch's rows */
    coord_recall_pending_t *p = &rc->queue[(rc->head + rc->nqueued) % COORD_RECALL_QUEUE];
    float *vec = malloc(req->dim * sizeof *vec);
    if (!vec)
        return;
    memcpy(vec, req->vecs + q * req->dim, req->dim * sizeof *vec);
    free(p->vec);
    p->vec = vec;
    p->dim = req->dim;
    p->k = k < S_K ? (uint32_t)k : S_K;
    memcpy(p->got, ids + q * k, p->k * sizeof *p->got);
    snprintf(p->coll, sizeof p->coll, "%s", req->coll);
    rc->nqueued++;
    rc->sampled++;
}

static void s_on_exact(coord_t *coord, coord_job_t *job, const wire_reply_t *rep)
{
    (void)job;
    coord_recall_t *rc = &coord->recall;
    if (!rc->waiting)
        return;
    rc->waiting = 0;
    coord_recall_pending_t *p = &rc->queue[rc->head];
    rc->head = (rc->head + 1) % COORD_RECALL_QUEUE;
    rc->nqueued--;
    int64_t now = zclock_usecs(), took = now - rc->sent_us;
    int64_t pause = (int64_t)((double)took * (1.0 / rc->budget - 1.0));
    if (pause < (int64_t)COORD_RECALL_PAUSE_MS * 1000)
        pause = (int64_t)COORD_RECALL_PAUSE_MS * 1000;
    rc->next_us = now + pause;
    if (rep->code != SHOAL_OK || rep->n != 1 || rep->k != p->k || !rep->ids || rep->partial) {
        rc->failed++;
        return;
    }
    size_t hit = 0, valid = 0;
    for (size_t j = 0; j < p->k; j++) {
        if (rep->ids[j] == TOPK_ID_NONE)
            continue;
        valid++;
        for (size_t i = 0; i < p->k; i++)
            if (p->got[i] == rep->ids[j]) {
                hit++;
                break;
            }
    }
    if (!valid)
        return; /* an empty collection: nothing to compare */
    coord_recall_coll_t *w = s_coll(coord, p->coll, 1);
    if (!w)
        return;
    w->window[w->next] = (float)((double)hit / (double)valid);
    w->next = (w->next + 1) % COORD_RECALL_WINDOW;
    if (w->n < COORD_RECALL_WINDOW)
        w->n++;
    w->total++;
    rc->measured++;
}

void coord_recall_tick(coord_t *coord, int64_t now)
{
    coord_recall_t *rc = &coord->recall;
    if (coord->stopping || rc->waiting || !rc->nqueued || now < rc->next_us ||
        coord->calib.phase != COORD_CALIB_IDLE || coord->client_jobs >= COORD_RECALL_BUSY)
        return;
    coord_recall_pending_t *p = &rc->queue[rc->head];
    const catalog_coll_t *c = catalog_find(coord->cat, p->coll);
    if (!c || !c->trained || c->dim != p->dim) { /* dropped (or re-created) since */
        rc->head = (rc->head + 1) % COORD_RECALL_QUEUE;
        rc->nqueued--;
        return;
    }
    rc->waiting = 1;
    rc->sent_us = now;
    if (!coord_internal_read(coord, WIRE_OP_SEARCH, p->coll, NULL, p->vec, 1, p->dim, p->k,
                             WIRE_MODE_EXACT, c->nlist, 0, s_on_exact) &&
        rc->waiting) {
        rc->waiting = 0;
        rc->next_us = now + (int64_t)COORD_RECALL_PAUSE_MS * 1000;
    }
}

int coord_recall_estimate(const coord_t *coord, const char *coll, double *recall, double *ci95,
                          uint64_t *samples)
{
    const coord_recall_t *rc = &coord->recall;
    for (size_t i = 0; i < rc->ncolls; i++) {
        const coord_recall_coll_t *w = &rc->colls[i];
        if (strcmp(w->name, coll) != 0 || !w->n)
            continue;
        double sum = 0, sq = 0;
        for (size_t j = 0; j < w->n; j++) {
            sum += w->window[j];
            sq += (double)w->window[j] * w->window[j];
        }
        double mean = sum / (double)w->n;
        double var = w->n > 1 ? (sq - sum * mean) / (double)(w->n - 1) : 0;
        *recall = mean;
        *ci95 = w->n > 1 ? 1.96 * sqrt(var > 0 ? var : 0) / sqrt((double)w->n) : 1.0;
        *samples = w->n;
        return 0;
    }
    return -1;
}

void coord_recall_info(coord_t *coord, wire_info_t *info, const char *coll)
{
    double recall = 0, ci = 0;
    uint64_t n = 0;
    int have = coord_recall_estimate(coord, coll, &recall, &ci, &n) == 0;
    const coord_recall_coll_t *w = s_coll(coord, coll, 0);
    wire_info_key(info, "recall_estimate");
    wire_info_map(info, have ? 4 : 2);
    wire_io_info_u64(info, "samples", n);
    wire_io_info_u64(info, "total", w ? w->total : 0);
    if (!have)
        return;
    wire_io_info_f64(info, "recall", recall);
    wire_io_info_f64(info, "ci95", ci);
}

void coord_recall_fini(coord_t *coord)
{
    coord_recall_t *rc = &coord->recall;
    for (size_t i = 0; i < COORD_RECALL_QUEUE; i++) {
        free(rc->queue[i].vec);
        rc->queue[i].vec = NULL;
    }
    free(rc->colls);
    rc->colls = NULL;
    rc->ncolls = 0;
    rc->nqueued = 0;
}
