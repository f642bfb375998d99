/*
 * coord.c - the coordinator's loop: the clients' ROUTER, one DEALER per
 * shard, the rid table that matches shard replies to jobs, deadlines, write
 * scheduling and the training thread. Shard health is coord_health.c's, the
 * routing engines coord_route.c's, ping and stats coord_stats.c's.
 * coord.h is the contract; coord_private.h lists the files.
 *
 * Why one DEALER per shard with ZMQ_IMMEDIATE: a send to a shard that is not
 * connected fails at once (EAGAIN) instead of queueing for a peer that may
 * never come back, so a dead shard costs a search nothing but its absence;
 * every send is ZMQ_DONTWAIT so the loop never blocks on a shard.
 *
 * Why replies are matched by a coordinator rid rather than the client's: two
 * clients may use the same rid, and a late reply of a finished job must not
 * be taken for the answer of a new one; rids are never reused.
 */
#include "coordinator/coord_private.h"

#include "common/log.h"
#include "common/topk.h"
#include "common/vec_check.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Messages handled per socket per poll round, so no socket starves the rest. */
#define S_BURST 64
/* Messages a shard link may queue before sends fail (then: shard missing). */
#define S_SHARD_HWM 100000
/* Intents waiting for a shard are tried again this often without a shard event (ms). */
#define S_REDRIVE_RETRY_MS 10000
/* A turn of the loop this long or longer counts as slow (stats loop_slow_turns). */
#define S_LOOP_SLOW_US 100000
/* Poll items besides the shards: training pipe, routing pipe, stop pipe, stop fd, clients. */
#define S_POLL_EXTRA 5

static_assert(COORD_LATENCY_SAMPLES == WIRE_IO_LATENCY_SAMPLES,
              "the coordinator's latency ring is wire_io's");

/* One outstanding shard request. */
typedef struct {
    coord_job_t *job; /* NULL for a ping */
    uint32_t shard;   /* shard index */
    uint32_t tag;     /* the job's own meaning */
} s_pending_t;

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */
/* ------------------------------------------------------------------------ */

static void s_rid_key(uint64_t rid, char *buf, size_t cap)
{
    snprintf(buf, cap, "%" PRIx64, rid);
}

void coord_pending_forget(coord_t *coord, uint64_t rid)
{
    char key[32];
    s_rid_key(rid, key, sizeof key);
    zhashx_delete(coord->pending, key);
}

static void s_pending_free(void **item)
{
    free(*item);
    *item = NULL;
}

const catalog_coll_t *coord_coll(coord_t *coord, const char *name, shoal_err_t *err)
{
    const catalog_coll_t *coll = catalog_find(coord->cat, name);
    if (!coll)
        shoal_err_set(err, SHOAL_ENOTFOUND, "collection \"%s\" does not exist", name);
    return coll;
}

int coord_check_vectors(const char *op, const catalog_coll_t *coll, const float *vecs, size_t n,
                        const uint64_t *ids, shoal_err_t *err)
{
    return vec_check_rows(op, "row", vecs, n, coll->dim, coll->metric, ids, err);
}

void coord_request_init(wire_request_t *req, wire_op_t op, const char *coll)
{
    wire_request_init(req);
    req->op = op;
    snprintf(req->coll, sizeof req->coll, "%s", coll ? coll : "");
}

int coord_shard_usable(const coord_t *coord, size_t s)
{
    return s < coord->nshards && coord->shards[s].state != COORD_SHARD_DOWN &&
           !coord->shards[s].removed;
}

void coord_shard_list(const coord_t *coord, const uint32_t *flags, char *buf, size_t cap)
{
    /* Whole endpoints only: one that does not fit ends the list with ",...". */
    size_t len = strlen(buf);
    for (size_t s = 0; s < coord->nshards; s++) {
        if (!flags[s])
            continue;
        const char *ep = coord->shards[s].endpoint;
        size_t need = (len ? 1 : 0) + strlen(ep);
        if (len + need + 4 >= cap) { /* keep room for ",..." */
            if (len + 4 < cap)
                memcpy(buf + len, len ? ",..." : "...", len ? 5 : 4);
            return;
        }
        snprintf(buf + len, cap - len, "%s%s", len ? "," : "", ep);
        len += need;
    }
}

/* ------------------------------------------------------------------------ */
/* Replies to clients                                                       */
/* ------------------------------------------------------------------------ */

/* Sends a reply with the job's envelope (consumes the identity) and counts it. */
static void s_send_reply(coord_t *coord, coord_job_t *job, const wire_reply_t *rep)
{
    int code = rep->code;
    zmsg_t *msg = wire_io_encode_reply(rep, &code);
    int64_t micros = zclock_usecs() - job->start_us;
    wire_io_count(&coord->counters, job->req.op, job->req.rid, code, micros, rep->msg);
    http_metrics_request(coord->opts.metrics, job->req.op, code, micros);
    wire_io_send_reply(coord->router, coord->reply_budget, &msg, &job->identity, job->delimiter,
                       job->req.op, job->req.rid);
}

/* ------------------------------------------------------------------------ */
/* Jobs                                                                     */
/* ------------------------------------------------------------------------ */

coord_job_t *coord_job_new(coord_t *coord, int is_write)
{
    coord_job_t *job = calloc(1, sizeof *job);
    if (!job)
        return NULL;
    job->nwaiting = coord->nshards;
    job->waiting = calloc(coord->nshards ? coord->nshards : 1, sizeof *job->waiting);
    if (!job->waiting) {
        free(job);
        return NULL;
    }
    wire_request_init(&job->req);
    job->is_write = is_write;
    job->start_us = zclock_usecs();
    job->next = coord->jobs;
    if (coord->jobs)
        coord->jobs->prev = job;
    coord->jobs = job;
    return job;
}

void coord_job_end(coord_t *coord, coord_job_t **job_p)
{
    coord_job_t *job = *job_p;
    if (!job)
        return;
    if (job->routing)
        coord_route_cancel(coord, job);
    for (size_t i = 0; i < job->nrids; i++)
        coord_pending_forget(coord, job->rids[i]);
    if (job->prev)
        job->prev->next = job->next;
    else
        coord->jobs = job->next;
    if (job->next)
        job->next->prev = job->prev;
    if (job->client)
        coord->client_jobs--;
    if (coord->redrive_job == job) {
        coord->redrive_job = NULL;
    } else if (job->is_write && job->started && coord->redrive_deferred) {
        /* The write that held a skipped intent's ids may be this one. Not after the
           re-drive itself: it would find the same writes running and spin. */
        coord->redrive_deferred = 0;
        coord_redrive_schedule(coord);
    }
    if (job->is_write && job->started) {
        coord->writes_running--;
        coord->pump_dirty = 1;
    }
    coord_scope_clear(&job->scope);
    if (job->free_state)
        job->free_state(job->state);
    wire_request_fini(&job->req);
    zmsg_destroy(&job->frames);
    zframe_destroy(&job->identity);
    free(job->waiting);
    free(job->rids);
    free(job);
    *job_p = NULL;
}

void coord_reply(coord_t *coord, coord_job_t **job_p, const wire_reply_t *rep)
{
    coord_job_t *job = *job_p;
    if (job && job->identity)
        s_send_reply(coord, job, rep);
    if (job && job->on_result)
        job->on_result(coord, job, rep);
    coord_job_end(coord, job_p);
}

void coord_fail(coord_t *coord, coord_job_t **job_p, int code, const char *fmt, ...)
{
    coord_job_t *job = *job_p;
    char msg[WIRE_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!job->client)
        log_warn("internal %s: %s", wire_io_op_name(job->req.op), msg);
    wire_reply_t rep;
    wire_reply_init(&rep);
    wire_reply_error(&rep, job->req.op, job->req.rid, code ? code : SHOAL_EINTERNAL, msg);
    coord_reply(coord, job_p, &rep);
    wire_reply_fini(&rep);
}

/* ------------------------------------------------------------------------ */
/* Write scheduling (coord_private.h says why scopes)                       */
/* ------------------------------------------------------------------------ */

/* Waiting writes looked at per pump pass: bounds the pairwise scope checks. */
#define S_PUMP_WINDOW 64

int coord_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

size_t coord_ids_sort_unique(uint64_t *ids, size_t n)
{
    qsort(ids, n, sizeof *ids, coord_cmp_u64);
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (m == 0 || ids[m - 1] != ids[i])
            ids[m++] = ids[i];
    return m;
}

void coord_scope_clear(coord_scope_t *sc)
{
    free(sc->ids);
    memset(sc, 0, sizeof *sc);
}

int coord_scope_set_ids(coord_scope_t *sc, const char *coll, const uint64_t *ids, size_t n)
{
    coord_scope_clear(sc);
    snprintf(sc->coll, sizeof sc->coll, "%s", coll);
    sc->ids = malloc((n ? n : 1) * sizeof *sc->ids);
    if (!sc->ids) {
        sc->kind = COORD_SCOPE_COLL; /* still correct, only coarser */
        return -1;
    }
    memcpy(sc->ids, ids, n * sizeof *ids);
    sc->nids = coord_ids_sort_unique(sc->ids, n);
    sc->kind = COORD_SCOPE_IDS;
    return 0;
}

/* 1 when id is in the sorted array a of n. */
static int s_has_id(const uint64_t *a, size_t n, uint64_t id)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (a[mid] == id)
            return 1;
        if (a[mid] < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

/* 1 when two scopes may not run at the same time. */
static int s_scopes_conflict(const coord_scope_t *a, const coord_scope_t *b)
{
    if (a->kind == COORD_SCOPE_NONE || b->kind == COORD_SCOPE_NONE)
        return 0;
    if (a->trains && b->trains)
        return 1;
    if (a->kind == COORD_SCOPE_ALL || b->kind == COORD_SCOPE_ALL)
        return 1;
    if (strcmp(a->coll, b->coll) != 0)
        return 0;
    if (a->kind == COORD_SCOPE_COLL || b->kind == COORD_SCOPE_COLL)
        return 1;
    const coord_scope_t *small = a->nids <= b->nids ? a : b, *large = small == a ? b : a;
    for (size_t i = 0; i < small->nids; i++)
        if (s_has_id(large->ids, large->nids, small->ids[i]))
            return 1;
    return 0;
}

/*
 * A waiting write's scope as it would run now: an insert into a collection
 * that is not trained (or does not exist) trains it first, which changes
 * every id's placement, so it takes the whole collection and the training
 * thread. Decided when looked at, not at arrival: an earlier train may have
 * run since.
 */
static void s_scope_now(const coord_t *coord, coord_job_t *job)
{
    if (job->req.op != WIRE_OP_INSERT || job->scope.kind != COORD_SCOPE_IDS)
        return;
    const catalog_coll_t *c = catalog_find(coord->cat, job->req.coll);
    if (c && c->trained)
        return;
    coord_scope_clear(&job->scope);
    snprintf(job->scope.coll, sizeof job->scope.coll, "%s", job->req.coll);
    job->scope.kind = COORD_SCOPE_COLL;
    job->scope.trains = c != NULL;
}

/* The scope a client write's request implies. */
static void s_scope_of_request(coord_job_t *job)
{
    coord_scope_t *sc = &job->scope;
    const wire_request_t *req = &job->req;
    coord_scope_clear(sc);
    snprintf(sc->coll, sizeof sc->coll, "%s", req->coll);
    switch (req->op) {
    case WIRE_OP_INSERT:
    case WIRE_OP_DELETE:
        (void)coord_scope_set_ids(sc, req->coll, req->ids, (size_t)req->n);
        break;
    case WIRE_OP_TRAIN:
        sc->kind = COORD_SCOPE_COLL;
        sc->trains = 1;
        break;
    default: /* create, drop, repair: the whole collection */
        sc->kind = req->coll[0] ? COORD_SCOPE_COLL : COORD_SCOPE_ALL;
        break;
    }
}

int coord_scope_busy(const coord_t *coord, const coord_job_t *self, const coord_scope_t *sc)
{
    for (const coord_job_t *job = coord->jobs; job; job = job->next)
        if (job != self && job->is_write && job->started && s_scopes_conflict(sc, &job->scope))
            return 1;
    return 0;
}

void coord_writes_changed(coord_t *coord)
{
    coord->pump_dirty = 1;
}

void coord_write_begin(coord_t *coord, coord_job_t *job)
{
    job->is_write = 1;
    job->started = 1;
    coord->writes_running++;
}

void coord_job_submit(coord_t *coord, coord_job_t *job)
{
    if (!job->is_write) {
        job->started = 1;
        job->start(coord, job);
        return;
    }
    if (job->scope.kind == COORD_SCOPE_NONE)
        s_scope_of_request(job);
    job->fifo_next = NULL;
    if (coord->fifo_tail)
        coord->fifo_tail->fifo_next = job;
    else
        coord->fifo_head = job;
    coord->fifo_tail = job;
    coord->fifo_len++;
    coord->pump_dirty = 1;
}

/* 1 when waiting write job must keep waiting: it overlaps a running or an earlier waiting write. */
static int s_write_blocked(coord_t *coord, coord_job_t *job)
{
    s_scope_now(coord, job);
    if (coord_scope_busy(coord, job, &job->scope))
        return 1;
    for (coord_job_t *e = coord->fifo_head; e && e != job; e = e->fifo_next) {
        s_scope_now(coord, e);
        if (s_scopes_conflict(&job->scope, &e->scope))
            return 1;
    }
    return 0;
}

/*
 * Starts every waiting write that may run now (coord_private.h), oldest
 * first; looks again while a start or an end changed what runs.
 */
static void s_writes_pump(coord_t *coord)
{
    while (coord->pump_dirty) {
        coord->pump_dirty = 0;
        coord_job_t *prev = NULL, *job = coord->fifo_head;
        for (size_t seen = 0; job && seen < S_PUMP_WINDOW &&
                              coord->writes_running < COORD_WRITES_RUNNING_MAX;
             seen++) {
            coord_job_t *following = job->fifo_next;
            if (s_write_blocked(coord, job)) {
                prev = job;
                job = following;
                continue;
            }
            if (prev)
                prev->fifo_next = following;
            else
                coord->fifo_head = following;
            if (coord->fifo_tail == job)
                coord->fifo_tail = prev;
            coord->fifo_len--;
            job->fifo_next = NULL;
            coord_write_begin(coord, job);
            job->start(coord, job); /* may end it (then pump_dirty is set again) */
            job = following;
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Shard links                                                              */
/* ------------------------------------------------------------------------ */

static int s_job_add_rid(coord_job_t *job, uint64_t rid)
{
    if (job->nrids == job->caprids) {
        size_t cap = job->caprids ? job->caprids * 2 : 8;
        uint64_t *rids = realloc(job->rids, cap * sizeof *rids);
        if (!rids)
            return -1;
        job->rids = rids;
        job->caprids = cap;
    }
    job->rids[job->nrids++] = rid;
    return 0;
}

/* ZeroMQ is done with a buffer handed over by coord_send_owned (its I/O thread). */
static void s_zmq_free(void *data, void *hint)
{
    (void)hint;
    free(data);
}

int coord_send(coord_t *coord, coord_job_t *job, size_t s, uint32_t tag, wire_request_t *req)
{
    return coord_send_owned(coord, job, s, tag, req, NULL);
}

int coord_send_owned(coord_t *coord, coord_job_t *job, size_t s, uint32_t tag,
                     wire_request_t *req, void **owned)
{
    if (s >= coord->nshards || !coord->shards[s].dealer || (job && s >= job->nwaiting))
        return -1;
    if (req->op == WIRE_OP_INSERT && req->lists && !req->quantizer) {
        /* sq8: every insert carries the collection's quantizer, which a shard
         * takes with its first rows (shard_store_insert_quantized). */
        const catalog_coll_t *c = catalog_find(coord->cat, req->coll);
        if (c && c->sq8_rec) {
            req->quantizer = c->sq8_rec;
            req->quantizer_len = c->sq8_len;
        }
    }
    req->rid = ++coord->next_rid;
    wire_frames_t frames;
    shoal_err_t err;
    shoal_err_clear(&err);
    if (wire_request_encode(req, &frames, &err) != 0) {
        log_error("encoding a %s for %s: %s", wire_io_op_name(req->op), coord->shards[s].endpoint,
                  err.msg);
        return -1;
    }
    s_pending_t *p = malloc(sizeof *p);
    if (!p || (job && s_job_add_rid(job, req->rid) != 0)) {
        free(p);
        wire_frames_fini(&frames);
        return -1;
    }
    p->job = job;
    p->shard = (uint32_t)s;
    p->tag = tag;
    void *sock = zsock_resolve(coord->shards[s].dealer);
    int rc = 0;
    for (size_t i = 0; i < frames.count && rc == 0; i++) {
        int flags = ZMQ_DONTWAIT | (i + 1 < frames.count ? ZMQ_SNDMORE : 0);
        if (owned && *owned && frames.data[i] == *owned && frames.size[i]) {
            /* Handed over, not copied: ZeroMQ frees it once it is on the wire. */
            zmq_msg_t msg;
            if (zmq_msg_init_data(&msg, *owned, frames.size[i], s_zmq_free, NULL) != 0) {
                rc = -1;
                break;
            }
            *owned = NULL;
            if (zmq_msg_send(&msg, sock, flags) < 0) {
                zmq_msg_close(&msg); /* frees it */
                rc = -1;
            }
            continue;
        }
        if (zmq_send(sock, frames.data[i], frames.size[i], flags) < 0)
            rc = -1;
    }
    wire_frames_fini(&frames);
    if (rc != 0) {
        /* Only the first part can fail: ZeroMQ queues a message atomically. */
        log_debug("%s to %s not sent: %s", wire_io_op_name(req->op), coord->shards[s].endpoint,
                  zmq_strerror(zmq_errno()));
        free(p);
        if (job)
            job->nrids--;
        return -1;
    }
    char key[32];
    s_rid_key(req->rid, key, sizeof key);
    zhashx_insert(coord->pending, key, p);
    if (job) {
        job->pending++;
        job->waiting[s]++;
    }
    return 0;
}

/* Hands rep, the answer to pending request key (shard s's), to its job; the entry goes. */
static void s_pending_answer(coord_t *coord, size_t s, const char *key, const wire_reply_t *rep)
{
    const s_pending_t *p = zhashx_lookup(coord->pending, key);
    coord_job_t *job = p->job;
    uint32_t tag = p->tag;
    zhashx_delete(coord->pending, key);
    if (!job)
        return;
    job->pending--;
    if (s < job->nwaiting)
        job->waiting[s]--;
    if (job->on_reply)
        job->on_reply(coord, job, s, tag, rep);
}

static int s_rid_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/*
 * A ping answer's first_rid (shard/peers.h): what is still unanswered on this
 * link below it went to an earlier process, or was lost with an earlier
 * connection, and no answer is coming. Each such request is answered here with
 * SHOAL_EUNAVAIL, as a shard that cannot serve would answer (a search retries
 * another replica, a write counts the replica as failed), instead of waiting
 * out its deadline: a shard that systemd restarts within a second is never
 * marked down. Only a first_rid that moved can leave a request below it (rids
 * grow), so an unchanged one costs no walk.
 */
static void s_shard_lost_before(coord_t *coord, size_t s, const wire_reply_t *ping)
{
    coord_shard_t *shard = &coord->shards[s];
    double value = 0;
    if (!ping->info ||
        wire_info_lookup(ping->info, ping->info_len, "first_rid", &value) != 0 || value < 1)
        return; /* a shard that does not say */
    uint64_t first_rid = (uint64_t)value;
    if (first_rid == shard->first_rid)
        return;
    shard->first_rid = first_rid;
    size_t n = 0, cap = 0;
    uint64_t *lost = NULL;
    for (const s_pending_t *p = zhashx_first(coord->pending); p;
         p = zhashx_next(coord->pending)) {
        uint64_t rid = strtoull(zhashx_cursor(coord->pending), NULL, 16);
        if (p->shard != s || rid >= first_rid || rid == shard->ping_rid)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            uint64_t *grown = realloc(lost, cap * sizeof *grown);
            if (!grown) {
                log_error("shard %s: out of memory listing lost requests (they wait out their "
                          "deadlines)",
                          shard->endpoint);
                break;
            }
            lost = grown;
        }
        lost[n++] = rid;
    }
    if (n == 0) {
        free(lost);
        return;
    }
    log_warn("shard %s: %zu request(s) sent before its process or connection started are lost; "
             "answered as unavailable",
             shard->endpoint, n);
    qsort(lost, n, sizeof *lost, s_rid_cmp);
    for (size_t i = 0; i < n; i++) {
        char key[32];
        s_rid_key(lost[i], key, sizeof key);
        const s_pending_t *p = zhashx_lookup(coord->pending, key);
        if (!p)
            continue; /* its job ended on an earlier one */
        wire_reply_t rep;
        wire_reply_init(&rep);
        char text[WIRE_MSG_MAX];
        snprintf(text, sizeof text,
                 "shard %s restarted (or its connection did) before answering; the request "
                 "was lost",
                 shard->endpoint);
        wire_reply_error(&rep, p->job ? p->job->req.op : WIRE_OP_NONE, lost[i], SHOAL_EUNAVAIL,
                         text);
        s_pending_answer(coord, s, key, &rep);
        wire_reply_fini(&rep);
    }
    free(lost);
}

/* One message from shard s's DEALER. */
static void s_on_shard_message(coord_t *coord, size_t s)
{
    zmsg_t *msg = zmsg_recv(coord->shards[s].dealer);
    if (!msg)
        return;
    coord_health_seen(coord, s);
    wire_frames_t frames;
    wire_io_frames(msg, &frames);
    wire_reply_t rep;
    wire_reply_init(&rep);
    shoal_err_t err;
    shoal_err_clear(&err);
    int rc = zmsg_size(msg) > WIRE_FRAMES_MAX
                 ? shoal_err_set(&err, SHOAL_EPROTO, "reply has %zu frames", zmsg_size(msg))
                 : wire_reply_decode(&frames, &coord->limits, &rep, &err);
    uint64_t rid = rep.rid;
    char key[32];
    s_rid_key(rid, key, sizeof key);
    const s_pending_t *p = rid ? zhashx_lookup(coord->pending, key) : NULL;
    if (!p) {
        if (rc != 0)
            log_warn("undecodable reply from %s: %s", coord->shards[s].endpoint, err.msg);
        else
            log_debug("late or unknown reply (rid %" PRIu64 ") from %s dropped", rid,
                      coord->shards[s].endpoint);
        goto done;
    }
    if (p->shard != s) {
        log_warn("reply rid %" PRIu64 " came from %s, not the shard asked", rid,
                 coord->shards[s].endpoint);
        goto done;
    }
    if (coord->shards[s].ping_rid == rid) {
        zhashx_delete(coord->pending, key);
        coord->shards[s].ping_rid = 0;
        if (rc == 0) {
            coord_health_pinged(coord, s, &rep);
            s_shard_lost_before(coord, s, &rep);
        }
        goto done;
    }
    if (rc != 0) {
        wire_op_t op = p->job ? p->job->req.op : WIRE_OP_NONE;
        wire_reply_fini(&rep);
        wire_reply_init(&rep);
        char text[WIRE_MSG_MAX];
        snprintf(text, sizeof text, "undecodable reply: %s", err.msg);
        wire_reply_error(&rep, op, rid, rc, text);
    }
    s_pending_answer(coord, s, key, &rep);
done:
    wire_reply_fini(&rep);
    zmsg_destroy(&msg);
}

/* ------------------------------------------------------------------------ */
/* Fan-out bookkeeping                                                      */
/* ------------------------------------------------------------------------ */

void coord_record_fanout(coord_t *coord, const uint32_t *per_query, size_t nq)
{
    for (size_t q = 0; q < nq; q++) {
        size_t v = per_query[q] > coord->nshards ? coord->nshards : per_query[q];
        coord->fanout_hist[v]++;
        coord->fanout_sum += per_query[q];
    }
    coord->fanout_queries += nq;
}

/* ------------------------------------------------------------------------ */
/* The training thread                                                      */
/* ------------------------------------------------------------------------ */

void coord_train_free(coord_train_t **task_p)
{
    coord_train_t *task = *task_p;
    if (!task)
        return;
    free(task->sample);
    free(task->centroids);
    free(task->owners);
    free(task->sizes);
    free(task->live);
    free(task->sq8_rec);
    free(task);
    *task_p = NULL;
}

/*
 * sq8: the quantizer of the collection, trained on the same sample as its
 * centroids (unit rows for cosine), as the record the shards read. Every
 * shard and replica then encodes with it, whatever rows it gets first.
 */
static int s_train_sq8(coord_train_t *t)
{
    float *unit = NULL;
    const float *rows = t->sample;
    if (t->metric == SHOAL_METRIC_COSINE) {
        if (!(unit = malloc(t->n * t->dim * sizeof *unit)))
            return shoal_err_set(&t->err, SHOAL_ENOMEM, "sq8: out of memory");
        memcpy(unit, t->sample, t->n * t->dim * sizeof *unit);
        for (size_t i = 0; i < t->n; i++)
            dist_normalize(unit + i * t->dim, t->dim); /* checked: not zero */
        rows = unit;
    }
    quant_sq8_t *sq = quant_sq8_train(rows, t->n, t->dim, &t->err);
    free(unit);
    if (!sq)
        return shoal_err_prefix(&t->err, "training the sq8 quantizer");
    t->sq8_len = quant_sq8_record_size(t->dim);
    t->sq8_rec = malloc(t->sq8_len);
    if (t->sq8_rec)
        quant_sq8_record_write(sq, t->sq8_rec);
    quant_sq8_destroy(&sq);
    return t->sq8_rec ? 0 : shoal_err_set(&t->err, SHOAL_ENOMEM, "sq8: out of memory");
}

static void *s_train_main(void *arg)
{
    coord_t *coord = arg;
    coord_train_t *t = coord->train_task;
    int64_t t0 = zclock_usecs();
    t->result.sizes = t->sizes;
    t->rc = kmeans_train(t->sample, t->n, t->dim, t->metric, t->nlist, &t->kopts, t->centroids,
                         &t->result, &t->err);
    if (t->rc == 0) {
        t->rc = placement_assign(t->centroids, t->nlist, t->dim, t->metric, t->sizes, t->nshards,
                                 t->replicas, t->owners, &t->report, &t->err);
        if (t->rc != 0)
            shoal_err_prefix(&t->err, "placing the lists");
        for (size_t i = 0; t->rc == 0 && i < t->nlist * t->replicas; i++)
            t->owners[i] = t->live[t->owners[i]]; /* placement's shard i: the i-th live one */
    } else {
        shoal_err_prefix(&t->err, "k-means");
    }
    if (t->rc == 0 && t->storage == QUANT_SQ8)
        t->rc = s_train_sq8(t);
    t->train_ms = (double)(zclock_usecs() - t0) / 1000.0;
    service_pipe_poke(coord->train_pipe[1]);
    return NULL;
}

int coord_thread_start(pthread_t *thread, void *(*fn)(void *), void *arg)
{
    /* The thread leaves SIGINT/SIGTERM/SIGHUP to the main thread. */
    sigset_t old;
    service_signals_block(&old);
    int rc = pthread_create(thread, NULL, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

int coord_train_start(coord_t *coord, coord_job_t *job, const catalog_coll_t *coll,
                      const float *sample, size_t n, uint32_t init, uint32_t max_iters,
                      uint64_t seed, shoal_err_t *err)
{
    if (coord->train_running)
        return shoal_err_set(err, SHOAL_EUNAVAIL, "a training run is in progress");
    coord_train_t *t = calloc(1, sizeof *t);
    if (!t)
        return shoal_err_set(err, SHOAL_ENOMEM, "train: out of memory");
    t->job = job;
    t->n = n;
    t->dim = coll->dim;
    t->nlist = coll->nlist;
    t->metric = coll->metric;
    t->storage = coll->storage;
    t->live = malloc((coord->nshards ? coord->nshards : 1) * sizeof *t->live);
    for (size_t s = 0; t->live && s < coord->nshards; s++)
        if (catalog_shard_role(coord->cat, s) == CATALOG_SHARD_LIVE)
            t->live[t->nshards++] = (uint32_t)s;
    t->replicas = coll->replication ? coll->replication : 1;
    t->kopts.max_iters = max_iters;
    t->kopts.init = init ? KMEANS_INIT_RANDOM : KMEANS_INIT_PLUSPLUS;
    t->kopts.seed = seed;
    t->kopts.device = coord->device;
    t->kopts.threads = coord->opts.threads;
    t->sample = malloc(n * coll->dim * sizeof(float));
    t->centroids = malloc((size_t)coll->nlist * coll->dim * sizeof(float));
    t->owners = malloc((size_t)coll->nlist * t->replicas * sizeof(uint32_t));
    t->sizes = calloc(coll->nlist, sizeof(uint64_t));
    if (!t->sample || !t->centroids || !t->owners || !t->sizes || !t->live) {
        coord_train_free(&t);
        return shoal_err_set(err, SHOAL_ENOMEM, "train: out of memory for %zu x %u floats", n,
                             coll->dim);
    }
    memcpy(t->sample, sample, n * coll->dim * sizeof(float));
    coord->train_task = t;
    int prc = coord_thread_start(&coord->train_thread, s_train_main, coord);
    if (prc != 0) {
        coord->train_task = NULL;
        coord_train_free(&t);
        return shoal_err_set(err, SHOAL_ENOMEM, "train: cannot start the thread: %s",
                             strerror(prc));
    }
    coord->train_running = 1;
    return 0;
}

/* The training thread said it is done: join it and hand the result over. */
static void s_train_collect(coord_t *coord)
{
    service_pipe_drain(coord->train_pipe[0]);
    if (!coord->train_running)
        return;
    pthread_join(coord->train_thread, NULL);
    coord->train_running = 0;
    coord_train_t *task = coord->train_task;
    coord->train_task = NULL;
    coord_job_t *job = task->job;
    coord->train_done = task;
    job->on_train(coord, job);
    coord_train_free(&coord->train_done); /* NULL when the handler took it */
}

/* ------------------------------------------------------------------------ */
/* Requests from clients                                                    */
/* ------------------------------------------------------------------------ */

/* How each client op is served. */
typedef enum {
    S_AT_ONCE, /* answered by the loop now (ping, stats) */
    S_WRITE,   /* through the write FIFO */
    S_READ,    /* started now, runs alongside others */
} s_route_kind_t;

static const struct {
    wire_op_t op;        /* the request's op */
    coord_job_fn fn;     /* its handler (job->start unless S_AT_ONCE) */
    s_route_kind_t kind; /* when it runs */
} s_routes[] = {
    {WIRE_OP_PING, coord_op_ping, S_AT_ONCE},
    {WIRE_OP_STATS, coord_op_stats, S_AT_ONCE},
    {WIRE_OP_CREATE_COLLECTION, coord_op_create, S_WRITE},
    {WIRE_OP_DROP_COLLECTION, coord_op_drop, S_WRITE},
    {WIRE_OP_TRAIN, coord_op_train, S_WRITE},
    {WIRE_OP_INSERT, coord_op_insert, S_WRITE},
    {WIRE_OP_DELETE, coord_op_delete, S_WRITE},
    {WIRE_OP_SEARCH, coord_op_search, S_READ},
    {WIRE_OP_GET, coord_op_get, S_READ},
    {WIRE_OP_KNN_GRAPH, coord_op_knn_graph, S_READ},
    {WIRE_OP_CHECKPOINT, coord_op_checkpoint, S_READ},
    {WIRE_OP_SHARD_ADD, coord_op_shard_add, S_AT_ONCE},
    {WIRE_OP_SHARD_DRAIN, coord_op_shard_drain, S_AT_ONCE},
    {WIRE_OP_SHARD_REMOVE, coord_op_shard_remove, S_AT_ONCE},
    {WIRE_OP_REBALANCE, coord_op_rebalance, S_AT_ONCE},
    /* scope: everything (no coll), so it runs alone: docs/protocol.md 11.10 */
    {WIRE_OP_SNAPSHOT_CREATE, coord_op_snapshot_create, S_WRITE},
    {WIRE_OP_SNAPSHOT_LIST, coord_op_snapshot_list, S_AT_ONCE},
};

static void s_on_request(coord_t *coord, int stopping)
{
    zframe_t *identity = NULL;
    int delimiter = 0;
    zmsg_t *msg = wire_io_recv(coord->router, &identity, &delimiter);
    if (!msg)
        return;
    coord_job_t *job = coord_job_new(coord, 0);
    if (!job) {
        log_error("dropping a request: out of memory");
        zframe_destroy(&identity);
        zmsg_destroy(&msg);
        return;
    }
    coord->client_jobs++;
    job->client = 1;
    job->identity = identity;
    job->delimiter = delimiter;
    job->frames = msg;
    shoal_err_t err;
    shoal_err_clear(&err);
    int rc = wire_io_decode(msg, &coord->limits, &job->req, &err);
    if (rc == 0 && stopping)
        rc = shoal_err_set(&err, SHOAL_EUNAVAIL,
                           "the coordinator is shutting down; the request was not run");
    if (rc != 0) {
        coord_fail(coord, &job, rc, "%s", err.msg);
        return;
    }
    for (size_t i = 0; i < sizeof s_routes / sizeof s_routes[0]; i++) {
        if (s_routes[i].op != job->req.op)
            continue;
        if (s_routes[i].kind == S_AT_ONCE) {
            s_routes[i].fn(coord, job);
            return;
        }
        job->start = s_routes[i].fn;
        job->is_write = s_routes[i].kind == S_WRITE;
        coord_job_submit(coord, job);
        return;
    }
    coord_fail(coord, &job, SHOAL_EUNSUPPORTED, "op %s is not served by the coordinator",
               wire_io_op_name(job->req.op));
}

/* ------------------------------------------------------------------------ */
/* The loop                                                                 */
/* ------------------------------------------------------------------------ */

/* Runs the timeouts of jobs whose deadline passed; returns the next deadline (0: none). */
/*
 * Calls on_tick of every job that has one, once each (a handler may end jobs,
 * so the walk starts over after each call). Returns 1 when some job still
 * wants a tick: the loop then polls without waiting.
 */
static int s_jobs_tick(coord_t *coord)
{
    uint64_t round = ++coord->tick_round;
    coord_job_t *job = coord->jobs;
    while (job) {
        if (job->on_tick && job->tick_round != round) {
            job->tick_round = round;
            job->on_tick(coord, job);
            job = coord->jobs;
            continue;
        }
        job = job->next;
    }
    for (job = coord->jobs; job; job = job->next)
        if (job->on_tick)
            return 1;
    return 0;
}

static int64_t s_deadlines(coord_t *coord, int64_t now)
{
    coord_job_t *job = coord->jobs;
    while (job) {
        coord_job_t *following = job->next;
        if (job->deadline_us && job->deadline_us <= now && job->on_timeout) {
            job->deadline_us = 0;
            job->on_timeout(coord, job); /* may end it, and with it others: rescan */
            following = coord->jobs;
        }
        job = following;
    }
    int64_t next = 0;
    for (job = coord->jobs; job; job = job->next)
        if (job->deadline_us && (!next || job->deadline_us < next))
            next = job->deadline_us;
    return next;
}

/*
 * Starts a re-drive pass when one is wanted and none runs; intents that wait
 * for a shard are tried again every S_REDRIVE_RETRY_MS even without a shard
 * coming back up (a shard that answered a delete with an error stays up).
 */
static void s_redrive_tick(coord_t *coord, int64_t now)
{
    if (coord->stopping)
        return;
    if (now >= coord->next_redrive_retry_us) {
        coord->next_redrive_retry_us = now + S_REDRIVE_RETRY_MS * 1000;
        if (zhashx_size(coord->redrive_waits))
            coord_redrive_schedule(coord);
    }
    if (coord->redrive_wanted && !coord->redrive_job)
        coord_redrive_run(coord);
}

/* Stopping: waiting writes and idle internal jobs are given up. */
static void s_refuse_waiting(coord_t *coord)
{
    while (coord->fifo_head) {
        coord_job_t *job = coord->fifo_head;
        coord->fifo_head = job->fifo_next;
        coord->fifo_len--;
        if (job->client)
            coord_fail(coord, &job, SHOAL_EUNAVAIL,
                       "the coordinator is shutting down; the request was not run");
        else
            coord_job_end(coord, &job);
    }
    coord->fifo_tail = NULL;
    /* Internal jobs in progress (re-drives) are abandoned: their intents stay. */
    coord_job_t *job = coord->jobs;
    while (job) {
        coord_job_t *following = job->next;
        if (!job->client &&
            !(coord->train_running && coord->train_task && coord->train_task->job == job))
            coord_job_end(coord, &job);
        job = following;
    }
}

/*
 * One turn of the loop ends (it is about to poll): how long it held every
 * other request since the last poll returned, the loop's lag, which is what a
 * single query waits for behind a big batch's decoding, planning and copies.
 */
static void s_loop_busy(coord_t *coord, int64_t since_us)
{
    int64_t busy = zclock_usecs() - since_us;
    if (busy > coord->loop_busy_max_us)
        coord->loop_busy_max_us = busy;
    if (busy >= S_LOOP_SLOW_US)
        coord->loop_slow_turns++;
}

/* One turn's work before the poll: writes, health, jobs, deadlines, repair, re-drives,
 * metrics. Returns 1 when a stopping coordinator has nothing left, else 0 with *timeout_ms the
 * poll's wait (0 while a job is ticking). */
static int s_loop_tick(coord_t *coord, long *timeout_ms)
{
    int64_t now = zclock_usecs();
    s_writes_pump(coord);
    coord_health_tick(coord, now);
    int ticking = s_jobs_tick(coord);
    int64_t next = s_deadlines(coord, now);
    coord_repair_tick(coord, now);
    s_writes_pump(coord);
    s_redrive_tick(coord, now);
    if (http_metrics_due(coord->opts.metrics, now))
        coord_metrics_publish(coord);
    if (coord->stopping && !coord->jobs && !coord->train_running)
        return 1;
    int64_t wake = coord->next_ping_us;
    if (next && next < wake)
        wake = next;
    if (coord->opts.metrics && http_metrics_next_us(coord->opts.metrics) < wake)
        wake = http_metrics_next_us(coord->opts.metrics);
    if (!coord->repair.job && coord->repair.next_us > now && coord->repair.next_us < wake)
        wake = coord->repair.next_us;
    now = zclock_usecs();
    *timeout_ms = wake > now && !ticking ? (long)((wake - now + 999) / 1000) : 0;
    return 0;
}

/* The poll set: every linked shard's dealer, the train and route pipes and, unless stopping,
 * the stop pipe and the router while requests are admitted (the i_* are their slots). */
static size_t s_poll_items(coord_t *coord, zmq_pollitem_t *items, size_t *i_train, size_t *i_route,
                           size_t *i_router)
{
    size_t n = 0;
    for (size_t s = 0; s < coord->nshards; s++)
        if (coord->shards[s].dealer)
            items[n++] = (zmq_pollitem_t){zsock_resolve(coord->shards[s].dealer), 0, ZMQ_POLLIN, 0};
    *i_train = n;
    items[n++] = (zmq_pollitem_t){NULL, coord->train_pipe[0], ZMQ_POLLIN, 0};
    *i_route = n;
    items[n++] = (zmq_pollitem_t){NULL, coord->route.pipe[0], ZMQ_POLLIN, 0};
    *i_router = SIZE_MAX;
    if (!coord->stopping) {
        n = service_stop_poll_add(&coord->stop, items, n);
        if (coord->client_jobs < COORD_JOBS_MAX && coord->fifo_len < COORD_WRITES_MAX) {
            *i_router = n;
            items[n++] = (zmq_pollitem_t){zsock_resolve(coord->router), 0, ZMQ_POLLIN, 0};
        }
    }
    return n;
}

/* What the poll found: shard replies and train and route results (in bursts), new requests,
 * and a stop, which refuses what waits and answers what is queued on the router. */
static void s_on_polled(coord_t *coord, zmq_pollitem_t *items, size_t i_train, size_t i_route,
                        size_t i_router)
{
    /*
     * Only the sockets the poll found readable are read: asking a ZeroMQ
     * socket whether it is readable costs two system calls (its mailbox's
     * poll and a getpid), and asking every shard's on every turn was most of
     * the loop's time per single query. A socket's first message is taken
     * on the poll's word (when the dealer is still the one polled: a reply
     * handled meanwhile may have replaced another shard's), the rest of its
     * burst while it stays readable.
     */
    for (size_t s = 0, slot = 0; s < coord->nshards && slot < i_train; s++) {
        if (!coord->shards[s].dealer)
            continue;
        const zmq_pollitem_t *item = &items[slot++];
        int ready = (item->revents & ZMQ_POLLIN) != 0;
        for (int b = 0; ready && b < S_BURST && coord->shards[s].dealer; b++) {
            int polled = b == 0 && item->socket == zsock_resolve(coord->shards[s].dealer);
            if (!polled && !wire_io_readable(coord->shards[s].dealer))
                break;
            s_on_shard_message(coord, s);
        }
    }
    if (items[i_train].revents & ZMQ_POLLIN)
        s_train_collect(coord);
    if (items[i_route].revents & ZMQ_POLLIN)
        coord_route_collect(coord);
    int stop_now = service_stop_fired(&coord->stop, items);
    if (i_router != SIZE_MAX && !stop_now && (items[i_router].revents & ZMQ_POLLIN))
        for (int b = 0; b < S_BURST && coord->client_jobs < COORD_JOBS_MAX &&
                        coord->fifo_len < COORD_WRITES_MAX &&
                        (b == 0 || wire_io_readable(coord->router));
             b++)
            s_on_request(coord, 0);
    if (stop_now) {
        coord->stopping = 1;
        log_info("stopping: %zu client requests in progress or waiting; waiting writes "
                 "are refused",
                 coord->client_jobs);
        s_refuse_waiting(coord);
        for (int b = 0; b < COORD_JOBS_MAX && wire_io_readable(coord->router); b++)
            s_on_request(coord, 1);
        coord_metrics_publish(coord); /* /readyz says so at once: balancers drain */
    }
}

int coord_run(coord_t *coord, shoal_err_t *err)
{
    int failed = 0;
    coord->next_ping_us = zclock_usecs();
    coord->next_redrive_retry_us = coord->next_ping_us + S_REDRIVE_RETRY_MS * 1000;
    coord_redrive_schedule(coord);
    size_t items_for = coord->nshards;
    zmq_pollitem_t *items = calloc(items_for + S_POLL_EXTRA, sizeof *items);
    if (!items)
        return shoal_err_set(err, SHOAL_ENOMEM, "coordinator: out of memory");
    int64_t busy_since = zclock_usecs();
    while (1) {
        if (items_for != coord->nshards) { /* a shard was added */
            zmq_pollitem_t *grown =
                realloc(items, (coord->nshards + S_POLL_EXTRA) * sizeof *items);
            if (!grown) {
                failed = shoal_err_set(err, SHOAL_ENOMEM, "coordinator: out of memory");
                break;
            }
            items = grown;
            items_for = coord->nshards;
        }
        long timeout_ms;
        if (s_loop_tick(coord, &timeout_ms))
            break;

        size_t i_train, i_route, i_router;
        size_t n = s_poll_items(coord, items, &i_train, &i_route, &i_router);
        s_loop_busy(coord, busy_since);
        if (zmq_poll(items, (int)n, timeout_ms) < 0) {
            if (zmq_errno() == EINTR)
                continue;
            failed = shoal_err_set(err, SHOAL_EINTERNAL, "coordinator: poll: %s",
                                   zmq_strerror(zmq_errno()));
            log_error("%s", err ? err->msg : "coordinator: poll failed");
            break;
        }
        busy_since = zclock_usecs();
        s_on_polled(coord, items, i_train, i_route, i_router);
    }
    free(items);
    service_router_close(&coord->router); /* the last replies still leave */
    return failed;
}

/* ------------------------------------------------------------------------ */
/* Public API                                                               */
/* ------------------------------------------------------------------------ */

void coord_opts_default(coord_opts_t *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->listen = "tcp://127.0.0.1:7700";
    opts->limits = wire_limits_default();
    opts->nlist_default = COORD_NLIST_DEFAULT;
    opts->nprobe_default = COORD_NPROBE_DEFAULT;
    opts->deadline_ms = COORD_DEADLINE_MS_DEFAULT;
    opts->write_timeout_ms = COORD_WRITE_TIMEOUT_MS_DEFAULT;
    opts->ping_interval_ms = COORD_PING_INTERVAL_MS_DEFAULT;
    opts->down_after_ms = COORD_DOWN_AFTER_MS_DEFAULT;
    opts->chunk_default = COORD_CHUNK_DEFAULT;
    opts->replication_default = 1;
    opts->write_quorum_default = 1;
    opts->hedge_pct = COORD_HEDGE_PCT_DEFAULT;
    opts->route_inline_macs = COORD_ROUTE_INLINE_MACS_DEFAULT;
    opts->sub_batch_max = COORD_SUB_BATCH_MAX_DEFAULT;
    opts->repair_chunk = COORD_REPAIR_CHUNK_DEFAULT;
    opts->repair_pause_ms = COORD_REPAIR_PAUSE_MS_DEFAULT;
    opts->recall_sample = -1; /* unset: $SHOAL_RECALL_SAMPLE, else the default (coord_recall.c) */
    opts->recall_budget = -1; /* unset: $SHOAL_RECALL_BUDGET, else COORD_RECALL_BUDGET */
    opts->max_pending_reply_bytes = WIRE_IO_PENDING_REPLY_BYTES_DEFAULT;
    opts->device = "auto";
    opts->stop_fd = -1;
}

int coord_shard_link(coord_t *coord, size_t s, shoal_err_t *err)
{
    size_t want = catalog_shard_count(coord->cat);
    if (s >= want || (s < coord->nshards && coord->shards[s].dealer))
        return 0;
    if (want > coord->nshards) {
        coord_shard_t *grown = realloc(coord->shards, want * sizeof *grown);
        if (grown)
            coord->shards = grown;
        uint64_t *hist = grown ? realloc(coord->fanout_hist, (want + 1) * sizeof *hist) : NULL;
        if (hist)
            coord->fanout_hist = hist;
        if (!grown || !hist)
            return shoal_err_set(err, SHOAL_ENOMEM, "coordinator: out of memory for %zu shards",
                                 want);
        memset(coord->shards + coord->nshards, 0, (want - coord->nshards) * sizeof *grown);
        /* The new counts (entry 0 too on the first link: it has no old array). */
        size_t kept = coord->nshards ? coord->nshards + 1 : 0;
        memset(coord->fanout_hist + kept, 0, (want + 1 - kept) * sizeof *hist);
        for (size_t i = coord->nshards; i < want; i++) {
            coord->shards[i].removed = 1; /* until linked */
            coord->shards[i].state = COORD_SHARD_DOWN;
            coord->shards[i].endpoint = strdup(catalog_shard(coord->cat, i));
            if (!coord->shards[i].endpoint) {
                coord->nshards = i;
                return shoal_err_set(err, SHOAL_ENOMEM, "coordinator: out of memory");
            }
        }
        coord->nshards = want;
    }
    coord_shard_t *shard = &coord->shards[s];
    if (catalog_shard_role(coord->cat, s) == CATALOG_SHARD_REMOVED)
        return 0; /* stays unlinked */
    shard->dealer = zsock_new(ZMQ_DEALER);
    if (!shard->dealer)
        return shoal_err_set(err, SHOAL_ENOMEM, "coordinator: out of memory");
    zsock_set_immediate(shard->dealer, 1);
    zsock_set_linger(shard->dealer, 0);
    zsock_set_sndhwm(shard->dealer, S_SHARD_HWM);
    zsock_set_rcvhwm(shard->dealer, 0);
    zsock_set_reconnect_ivl(shard->dealer, 100);
    zsock_set_reconnect_ivl_max(shard->dealer, 1000);
    if (coord->opts.curve_shard_cert && coord->opts.curve_cert)
        wire_curve_client_apply(shard->dealer, coord->opts.curve_cert,
                                coord->opts.curve_shard_cert);
    if (zsock_connect(shard->dealer, "%s", shard->endpoint) != 0) {
        zsock_destroy(&shard->dealer);
        return shoal_err_set(err, SHOAL_EINVAL, "shard %zu: cannot connect to %s: %s", s,
                             shard->endpoint, zmq_strerror(zmq_errno()));
    }
    shard->removed = 0;
    shard->state = COORD_SHARD_UNKNOWN;
    shard->linked_us = zclock_usecs(); /* its down clock starts now */
    return 0;
}

void coord_shard_unlink(coord_t *coord, size_t s)
{
    if (s >= coord->nshards)
        return;
    coord_shard_t *shard = &coord->shards[s];
    if (shard->ping_rid) {
        coord_pending_forget(coord, shard->ping_rid);
        shard->ping_rid = 0;
    }
    zsock_destroy(&shard->dealer);
    shard->removed = 1;
    shard->state = COORD_SHARD_DOWN;
}

/* The tunables a caller left at 0 get their defaults (coord.h). */
static void s_opts_fill_defaults(coord_opts_t *opts)
{
    if (!opts->nlist_default)
        opts->nlist_default = COORD_NLIST_DEFAULT;
    if (!opts->nprobe_default)
        opts->nprobe_default = COORD_NPROBE_DEFAULT;
    if (!opts->deadline_ms)
        opts->deadline_ms = COORD_DEADLINE_MS_DEFAULT;
    if (!opts->write_timeout_ms)
        opts->write_timeout_ms = COORD_WRITE_TIMEOUT_MS_DEFAULT;
    if (!opts->ping_interval_ms)
        opts->ping_interval_ms = COORD_PING_INTERVAL_MS_DEFAULT;
    if (!opts->down_after_ms)
        opts->down_after_ms = COORD_DOWN_AFTER_MS_DEFAULT;
    if (!opts->chunk_default)
        opts->chunk_default = COORD_CHUNK_DEFAULT;
}

coord_t *coord_new(const coord_opts_t *opts, shoal_err_t *err)
{
    if (!opts || !opts->listen || !*opts->listen || !opts->data_dir || !*opts->data_dir) {
        shoal_err_set(err, SHOAL_EINVAL,
                      "coordinator: a listen endpoint and a data dir are "
                      "required");
        return NULL;
    }
    coord_t *coord = calloc(1, sizeof *coord);
    if (!coord) {
        shoal_err_set(err, SHOAL_ENOMEM, "coordinator: out of memory");
        return NULL;
    }
    coord->stop.pipe[0] = coord->stop.pipe[1] = -1; /* nothing to close yet */
    coord->train_pipe[0] = coord->train_pipe[1] = -1;
    coord_route_init(coord);
    coord->opts = *opts;
    coord->limits = opts->limits;
    coord->start_us = zclock_usecs();
    coord->listen = strdup(opts->listen);
    coord->data_dir = strdup(opts->data_dir);
    coord->device = strdup(opts->device && *opts->device ? opts->device : "auto");
    coord->pending = zhashx_new();
    coord->redrive_waits = zhashx_new();
    if (!coord->listen || !coord->data_dir || !coord->device || !coord->pending ||
        !coord->redrive_waits) {
        shoal_err_set(err, SHOAL_ENOMEM, "coordinator: out of memory");
        goto fail;
    }
    zhashx_set_destructor(coord->pending, s_pending_free);
    coord->opts.listen = coord->listen;
    coord->opts.data_dir = coord->data_dir;
    coord->opts.device = coord->device;
    coord->opts.shards = NULL;
    s_opts_fill_defaults(&coord->opts);
    if (service_stop_init(&coord->stop, opts->stop_fd) != 0 ||
        service_pipe(coord->train_pipe) != 0) {
        shoal_err_set(err, SHOAL_EIO, "coordinator: pipe: %s", strerror(errno));
        goto fail;
    }
    if (coord_route_thread_start(coord, err) != 0)
        goto fail;

    coord->cat = catalog_open(coord->data_dir, err);
    if (!coord->cat)
        goto fail;
    if (catalog_shards_set(coord->cat, opts->shards, opts->nshards, err) != 0)
        goto fail;
    coord->nshards = catalog_shard_count(coord->cat);
    if (coord->nshards == 0) {
        shoal_err_set(err, SHOAL_EINVAL, "no shards: give --shards");
        goto fail;
    }
    size_t registry = coord->nshards;
    coord->nshards = 0; /* coord_shard_link grows it */

    coord->reply_budget =
        wire_io_budget_new("coordinator", coord->opts.max_pending_reply_bytes, err);
    if (!coord->reply_budget)
        goto fail;
    coord->router =
        wire_io_router_bind("coordinator", coord->listen, coord->limits.max_message_bytes,
                            coord->opts.curve_cert, &coord->endpoint, err);
    if (!coord->router)
        goto fail;

    for (size_t s = 0; s < registry; s++)
        if (coord_shard_link(coord, s, err) != 0)
            goto fail;
    coord_write_init(coord);
    coord_repair_init(coord);
    coord_health_connect_wait(coord);
    return coord;
fail:
    coord_destroy(&coord);
    return NULL;
}

void coord_stop(coord_t *coord)
{
    if (!coord)
        return;
    service_stop_request(&coord->stop);
}

const char *coord_endpoint(const coord_t *coord)
{
    return coord->endpoint;
}

void coord_destroy(coord_t **coord_p)
{
    if (!coord_p || !*coord_p)
        return;
    coord_t *coord = *coord_p;
    if (coord->train_running) {
        pthread_join(coord->train_thread, NULL);
        coord->train_running = 0;
    }
    coord_train_free(&coord->train_task);
    coord_route_fini(coord); /* joins the routing thread: its task writes into a job */
    while (coord->jobs) {
        coord_job_t *job = coord->jobs;
        coord_job_end(coord, &job);
    }
    coord_calib_fini(coord);
    zhashx_destroy(&coord->pending);
    zhashx_destroy(&coord->redrive_waits);
    zsock_destroy(&coord->router);
    wire_io_budget_destroy(&coord->reply_budget);
    for (size_t s = 0; coord->shards && s < coord->nshards; s++) {
        zsock_destroy(&coord->shards[s].dealer);
        free(coord->shards[s].endpoint);
    }
    free(coord->shards);
    free(coord->fanout_hist);
    catalog_close(&coord->cat);
    service_stop_fini(&coord->stop);
    service_pipe_close(coord->train_pipe);
    free(coord->listen);
    free(coord->data_dir);
    free(coord->device);
    free(coord->endpoint);
    free(coord);
    *coord_p = NULL;
}
