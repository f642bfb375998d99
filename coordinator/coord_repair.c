/*
 * coord_repair.c - replicas of a list (catalog.h: R per collection): which
 * one serves a read, the shards that missed writes, and the repair engine
 * that brings stale replicas back.
 *
 * Staleness. A replica that missed a write of its list (down, slow, failed)
 * is marked stale in the catalog (O/ keys) before the write is acknowledged
 * (coord_write.c, s_settle), with the ids it missed (Q/ keys): it catches up
 * on just those. Beyond CATALOG_OWED_MAX owed ids, or when nothing says
 * what it lacks (its counts differ from the catalog's, its data dir was
 * wiped), it is rebuilt whole. A stale replica still receives the writes of
 * its list (so a rebuild in progress stays current) but serves no reads of
 * it and does not count towards a write quorum, so a read after an
 * acknowledged write always sees it.
 *
 * Fence. A shard searches its whole local index, every list it holds, so a
 * shard with a stale list could return an id deleted while it was away even
 * to a query that probed only its up-to-date lists. Such a shard is fenced:
 * it serves no reads of replicated collections until its stale lists have
 * been dropped there (list_drop), after which they hold nothing a client
 * could not see. A shard is fenced when one of its replicas is marked stale,
 * when a write to one of its stale lists fails, and when it comes back after
 * being down. Every write it misses moves its epoch; a drop pass or a
 * rebuild that began at an older epoch does not count. Collections with R = 1
 * ignore the fence: their only replica serves reads as before.
 *
 * The engine runs one step at a time, each an internal write job through
 * the write FIFO holding its whole collection (COORD_SCOPE_COLL), so no
 * write of that collection interleaves with it, and queued writes of it are
 * not overtaken for ever (the FIFO is fair). Between steps it pauses
 * opts.repair_pause_ms, which throttles the load on the shards. In order of
 * priority:
 *   1. verify: a shard that came (back) up has its per-list counts
 *      (list_counts) compared with the catalog's for every replicated
 *      collection; a list that differs is marked stale (a wiped or replaced
 *      data dir shows up here, as do writes lost in a crash).
 *   2. fence pass: a fenced shard that is up, collection by collection,
 *      catches up each stale list that owes known ids (the ids are looked up
 *      in the id map: those still in the list are fetched from an
 *      up-to-date replica (get) and upserted, the others deleted, unless the
 *      target holds the id's current list too; repair_chunk ids per step,
 *      each step's ids then forgotten; no ids left: the mark is cleared),
 *      then gets list_drop for each list to be rebuilt whole; when the pass
 *      ends at the epoch it began with, the fence lifts. A list that owes
 *      ids but has no up-to-date replica to read them from is switched to a
 *      whole rebuild (dropped), so the shard can serve its other lists.
 *   3. rebuild: a replica to be rebuilt whole, on an unfenced shard that is up, is refilled
 *      from an up-to-date replica, opts.repair_chunk rows per step
 *      (list_export from the source, insert with the list into the target);
 *      after the last chunk, if the target missed nothing meanwhile, the
 *      mark is cleared and the replica serves reads again.
 * A step that fails (a shard down, a timeout, an error) is logged and the
 * engine tries again after S_RETRY_MS; a rebuild whose source or target went
 * away starts over (from the first row: the rows already copied are current,
 * and are copied again harmlessly).
 *
 * Thread-safety: the loop thread only.
 */
#include "coordinator/coord_private.h"

#include "common/log.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_RETRY_MS 1000 /* after a failed step */

/* ------------------------------------------------------------------------ */
/* Replicas                                                                 */
/* ------------------------------------------------------------------------ */

int coord_replica_readable(const coord_t *coord, const catalog_coll_t *c, uint32_t l, uint32_t r)
{
    if (!c->trained || l >= c->nlist || r >= c->replication)
        return 0;
    uint32_t s = catalog_owner(c, l, r);
    if (s >= coord->nshards || c->stale[(size_t)l * c->replication + r] ||
        !coord_shard_usable(coord, s) || coord->shards[s].stale_orphans)
        return 0;
    return c->replication == 1 || !coord->shards[s].fenced;
}

uint32_t coord_replica_pick(const coord_t *coord, const catalog_coll_t *c, uint32_t l,
                            uint32_t first, const uint32_t *bad, size_t limit)
{
    uint32_t R = c->replication;
    for (uint32_t j = 0; j < R; j++) {
        uint32_t r = (first + j) % R;
        uint32_t s = catalog_owner(c, l, r);
        if (s < limit && !(bad && bad[s]) && coord_replica_readable(coord, c, l, r))
            return s;
    }
    return UINT32_MAX;
}

void coord_orphans_count(coord_t *coord)
{
    for (size_t s = 0; s < coord->nshards; s++)
        coord->shards[s].stale_orphans = 0;
    for (size_t i = 0; i < catalog_coll_count(coord->cat); i++) {
        const catalog_coll_t *c = catalog_coll_at(coord->cat, i);
        for (uint32_t k = 0; k < c->norphans; k++)
            if (c->orphans[k].kind == CATALOG_ORPHAN_STALE && c->orphans[k].shard < coord->nshards)
                coord->shards[c->orphans[k].shard].stale_orphans++;
    }
}

void coord_extra_missed(coord_t *coord, const catalog_coll_t *c, uint32_t l, size_t s)
{
    shoal_err_t err;
    shoal_err_clear(&err);
    int rc = 0;
    for (uint32_t r = 0; r < c->replication; r++) {
        size_t j = (size_t)l * c->replication + r;
        if (c->move_state[j] == CATALOG_MOVE_COPYING && c->move_to[j] == s) {
            log_warn("moves: \"%s\" list %u: its move to shard %s stops (the shard missed a "
                     "write of it); the copy there is dropped and the move tried again later",
                     c->name, l, coord->shards[s].endpoint);
            rc = catalog_move_abort(coord->cat, c->name, l, r, 1, &err);
            coord->repair.moves_aborted++;
        }
    }
    for (uint32_t k = 0; rc == 0 && k < c->norphans; k++)
        if (c->orphans[k].list == l && c->orphans[k].shard == s &&
            c->orphans[k].kind == CATALOG_ORPHAN_CURRENT)
            rc = catalog_orphan_set(coord->cat, c->name, l, (uint32_t)s, CATALOG_ORPHAN_STALE,
                                    &err);
    if (rc != 0)
        log_error("moves: %s", err.msg);
    if (s < coord->nshards)
        coord->shards[s].epoch++;
    coord_orphans_count(coord);
}

/* s_first's kinds of replica beyond the CATALOG_STALE_* states. */
#define S_ANY   (-1) /* any replica */
#define S_STALE (-2) /* a stale one, of either kind */

/*
 * The first replica slot j (list j / R, replica j % R) of trained c on shard
 * s whose stale state is `want` (0, a CATALOG_STALE_* kind, S_ANY or
 * S_STALE), or SIZE_MAX.
 */
static size_t s_first(const catalog_coll_t *c, size_t s, int want)
{
    if (!c->trained || (want != S_ANY && want != 0 && !c->nstale))
        return SIZE_MAX;
    for (size_t j = 0; j < (size_t)c->nlist * c->replication; j++) {
        int st = c->stale[j];
        if (c->owners[j] == s && (want == S_ANY || (want == S_STALE ? st != 0 : st == want)))
            return j;
    }
    return SIZE_MAX;
}

/* 1 when c is replicated and has a replica on shard s. */
static int s_coll_on_shard(const catalog_coll_t *c, size_t s)
{
    return c->replication > 1 && s_first(c, s, S_ANY) != SIZE_MAX;
}

/* 1 when some collection has a replica on shard s: replicated (want S_ANY) or stale (S_STALE). */
static int s_shard_holds(const coord_t *coord, size_t s, int want)
{
    for (size_t i = 0; i < catalog_coll_count(coord->cat); i++) {
        const catalog_coll_t *c = catalog_coll_at(coord->cat, i);
        if (want == S_ANY ? s_coll_on_shard(c, s) : s_first(c, s, want) != SIZE_MAX)
            return 1;
    }
    return 0;
}

void coord_shard_missed(coord_t *coord, size_t s, int fence)
{
    if (s >= coord->nshards)
        return;
    coord_shard_t *sh = &coord->shards[s];
    sh->epoch++;
    coord->replica_misses++;
    if (fence && !sh->fenced) {
        sh->fenced = 1;
        log_warn("replicas: shard %s missed writes of replicated lists: it serves no reads of "
                 "replicated collections until its stale lists are caught up or dropped there "
                 "(stats: repair)",
                 sh->endpoint);
    }
}

/* The "shard came back" hook: verify it; fenced when it may hold stale lists. */
static void s_shard_back(coord_t *coord, size_t s, int was_down)
{
    coord_shard_t *sh = &coord->shards[s];
    sh->verify_wanted = 1;
    sh->verify_at = 0;
    /* Back from down, or first seen (by a restarted coordinator) with stale lists
       that may not have been dropped there: fenced until they are. */
    if ((was_down && s_shard_holds(coord, s, S_ANY)) || s_shard_holds(coord, s, S_STALE)) {
        sh->epoch++;
        sh->fenced = 1; /* until verified and its stale lists dropped */
        sh->drop_at = 0;
        sh->drop_epoch = sh->epoch;
    }
    coord->repair.next_us = 0; /* look now */
}

void coord_repair_init(coord_t *coord)
{
    for (size_t s = 0; s < coord->nshards; s++)
        coord->shards[s].fenced = s_shard_holds(coord, s, S_STALE);
    coord_orphans_count(coord);
    coord_on_shard_back(coord, s_shard_back);
}

/*
 * Marks the n replicas (lists[i], reps[i]) of c stale, leaving out any whose
 * list would keep no up-to-date replica. Returns how many were marked.
 */
static size_t s_mark_stale(coord_t *coord, const catalog_coll_t *c, uint32_t *lists,
                           uint32_t *reps, size_t n)
{
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        size_t others = 0;
        for (uint32_t r = 0; r < c->replication; r++)
            others += r != reps[i] && !c->stale[(size_t)lists[i] * c->replication + r];
        if (!others) {
            log_warn("replicas: \"%s\" list %u replica %u on shard %s differs from the catalog, "
                     "but no other replica is up to date: left as is",
                     c->name, lists[i], reps[i],
                     coord->shards[catalog_owner(c, lists[i], reps[i])].endpoint);
            continue;
        }
        lists[m] = lists[i];
        reps[m++] = reps[i];
    }
    shoal_err_t err;
    shoal_err_clear(&err);
    if (m && catalog_stale_set(coord->cat, c->name, lists, reps, m, 1, &err) != 0) {
        log_error("replicas: %s", err.msg);
        return 0;
    }
    return m;
}

void coord_replicas_lost(coord_t *coord, const catalog_coll_t *c, size_t s)
{
    if (!c->trained || c->replication < 2)
        return;
    uint32_t *lists = malloc((size_t)c->nlist * sizeof *lists);
    uint32_t *reps = malloc((size_t)c->nlist * sizeof *reps);
    size_t n = 0;
    for (uint32_t l = 0; lists && reps && l < c->nlist; l++)
        for (uint32_t r = 0; r < c->replication; r++)
            if (catalog_owner(c, l, r) == s &&
                c->stale[(size_t)l * c->replication + r] != CATALOG_STALE_REBUILD) {
                lists[n] = l;
                reps[n++] = r;
            }
    if (n && s_mark_stale(coord, c, lists, reps, n))
        coord_shard_missed(coord, s, 1);
    free(lists);
    free(reps);
}

/* ------------------------------------------------------------------------ */
/* Steps                                                                    */
/* ------------------------------------------------------------------------ */

typedef enum { S_VERIFY = 1, S_DROP, S_CHUNK, S_CATCHUP, S_ORPHAN } s_kind_t;

/* One step's state. */
typedef struct {
    coord_t *coord;   /* to clear coord->repair.job when freed */
    s_kind_t kind;
    size_t shard;     /* verify, drop, catch-up: the shard */
    size_t outstanding;
    int failed;
    char why[WIRE_MSG_MAX];
    int writing;      /* chunk, catch-up: the read answered, the target's writes are out */
    /* chunk: the export's answer kept while the insert runs */
    int done;         /* the export said the list has no more rows */
    size_t rows;
    char cursor[WIRE_CURSOR_MAX + 1];
    /* catch-up: one chunk of the ids a replica owes */
    uint32_t list, replica;
    size_t source;
    uint64_t *ids;    /* nids owed ids */
    size_t nids;
    uint8_t *in_list; /* nids: 1 the id map still puts it in list (upserted), 0 not
                         (deleted there), 2 in a list the target also holds (left) */
} s_step_t;

static void s_step_free(void *state)
{
    s_step_t *st = state;
    if (!st)
        return;
    st->coord->repair.job = NULL;
    free(st->ids);
    free(st->in_list);
    free(st);
}

/* Ends the step; the next one may start after pause_ms. */
static void s_step_end(coord_t *coord, coord_job_t *job, uint32_t pause_ms)
{
    coord->repair.next_us = zclock_usecs() + (int64_t)pause_ms * 1000;
    coord_job_end(coord, &job);
}

static void s_step_fail(coord_t *coord, coord_job_t *job, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void s_step_fail(coord_t *coord, coord_job_t *job, const char *fmt, ...)
{
    (void)coord;
    s_step_t *st = job->state;
    if (!st->failed) {
        st->failed = 1;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(st->why, sizeof st->why, fmt, ap);
        va_end(ap);
    }
}

static void s_step_on_timeout(coord_t *coord, coord_job_t *job);
static void s_step_on_down(coord_t *coord, coord_job_t *job, size_t s);
static void s_step_on_reply(coord_t *coord, coord_job_t *job, size_t s, uint32_t tag,
                            const wire_reply_t *rep);

/* A new step job on collection coll, queued behind the writes of coll. */
static coord_job_t *s_step_new(coord_t *coord, s_kind_t kind, wire_op_t op, const char *coll,
                               coord_job_fn start)
{
    coord_job_t *job = coord_job_new(coord, 1);
    s_step_t *st = job ? calloc(1, sizeof *st) : NULL;
    if (!st) {
        coord_job_end(coord, &job);
        log_error("repair: out of memory");
        coord->repair.next_us = zclock_usecs() + S_RETRY_MS * 1000;
        return NULL;
    }
    st->coord = coord;
    st->kind = kind;
    job->state = st;
    job->free_state = s_step_free;
    job->req.op = op;
    snprintf(job->req.coll, sizeof job->req.coll, "%s", coll);
    job->scope.kind = COORD_SCOPE_COLL;
    snprintf(job->scope.coll, sizeof job->scope.coll, "%s", coll);
    job->start = start;
    job->on_reply = s_step_on_reply;
    job->on_timeout = s_step_on_timeout;
    job->on_shard_down = s_step_on_down;
    coord->repair.job = job;
    return job;
}

/* Sends req to shard s for the step; a send that fails fails the step. */
static void s_step_send(coord_t *coord, coord_job_t *job, size_t s, wire_request_t *req)
{
    s_step_t *st = job->state;
    if (coord_send(coord, job, s, 0, req) == 0) {
        st->outstanding++;
        job->deadline_us = zclock_usecs() + (int64_t)coord->opts.write_timeout_ms * 1000;
    } else {
        s_step_fail(coord, job, "%s: shard %s is not reachable", wire_op_name(req->op),
                    coord->shards[s].endpoint);
    }
}

static void s_verify_answer(coord_t *coord, coord_job_t *job, const wire_reply_t *rep);
static void s_drop_answered(coord_t *coord, coord_job_t *job);
static void s_chunk_answer(coord_t *coord, coord_job_t *job, size_t s, const wire_reply_t *rep);
static void s_chunk_finish(coord_t *coord, coord_job_t *job);
static void s_catchup_answer(coord_t *coord, coord_job_t *job, size_t s, const wire_reply_t *rep);
static void s_catchup_finish(coord_t *coord, coord_job_t *job);
static void s_orphan_finish(coord_t *coord, coord_job_t *job);

/* Every answer of the step is in (or it failed): its end. */
static void s_step_complete(coord_t *coord, coord_job_t *job)
{
    s_step_t *st = job->state;
    job->deadline_us = 0;
    if (st->kind == S_DROP) {
        s_drop_answered(coord, job);
        return;
    }
    if (st->kind == S_CHUNK) {
        s_chunk_finish(coord, job);
        return;
    }
    if (st->kind == S_CATCHUP) {
        s_catchup_finish(coord, job);
        return;
    }
    if (st->kind == S_ORPHAN) {
        s_orphan_finish(coord, job);
        return;
    }
    if (st->failed) {
        log_warn("repair: verifying shard %s: %s (tried again)", coord->shards[st->shard].endpoint,
                 st->why);
        s_step_end(coord, job, S_RETRY_MS);
        return;
    }
    s_step_end(coord, job, 0);
}

static void s_step_on_reply(coord_t *coord, coord_job_t *job, size_t s, uint32_t tag,
                            const wire_reply_t *rep)
{
    (void)tag;
    s_step_t *st = job->state;
    if (st->outstanding)
        st->outstanding--;
    if (rep->code != SHOAL_OK) {
        if (rep->code == SHOAL_ENOTFOUND)
            coord_repair_collection(coord, s, job->req.coll);
        s_step_fail(coord, job, "%s: shard %s: %s", wire_op_name(rep->op),
                    coord->shards[s].endpoint, rep->msg[0] ? rep->msg : shoal_strerror(rep->code));
    } else if (st->kind == S_VERIFY) {
        s_verify_answer(coord, job, rep);
    } else if (st->kind == S_CHUNK) {
        s_chunk_answer(coord, job, s, rep);
        if (st->outstanding)
            return; /* the insert went out */
    } else if (st->kind == S_CATCHUP && !st->writing) {
        s_catchup_answer(coord, job, s, rep);
        if (st->outstanding)
            return; /* the insert / delete went out */
    }
    if (st->outstanding == 0)
        s_step_complete(coord, job);
}

static void s_step_on_timeout(coord_t *coord, coord_job_t *job)
{
    s_step_t *st = job->state;
    s_step_fail(coord, job, "no answer within %u ms", coord->opts.write_timeout_ms);
    st->outstanding = 0;
    s_step_complete(coord, job);
}

static void s_step_on_down(coord_t *coord, coord_job_t *job, size_t s)
{
    s_step_t *st = job->state;
    s_step_fail(coord, job, "shard %s was marked down", coord->shards[s].endpoint);
    st->outstanding = 0;
    s_step_complete(coord, job);
}

/* ------------------------------------------------------------------------ */
/* 1. verify                                                                */
/* ------------------------------------------------------------------------ */

static void s_verify_answer(coord_t *coord, coord_job_t *job, const wire_reply_t *rep)
{
    s_step_t *st = job->state;
    const catalog_coll_t *c = catalog_find(coord->cat, job->req.coll);
    if (!c || !c->trained)
        return;
    size_t s = st->shard;
    uint32_t *lists = malloc((size_t)c->nlist * sizeof *lists);
    uint32_t *reps = malloc((size_t)c->nlist * sizeof *reps);
    uint64_t *have = calloc(c->nlist, sizeof *have);
    if (!lists || !reps || !have) {
        s_step_fail(coord, job, "verify: out of memory");
        goto done;
    }
    for (uint64_t i = 0; i < rep->n; i++)
        if (rep->lists[i] < c->nlist)
            have[rep->lists[i]] = rep->counts[i];
    /* In sync: the counts must be equal. Catching up: each owed id accounts for one
       row more or less at most; a bigger gap (a wiped data dir) needs a rebuild. */
    size_t n = 0;
    for (uint32_t l = 0; l < c->nlist; l++)
        for (uint32_t r = 0; r < c->replication; r++) {
            size_t j = (size_t)l * c->replication + r;
            uint64_t gap = have[l] > c->list_counts[l] ? have[l] - c->list_counts[l]
                                                       : c->list_counts[l] - have[l];
            if (catalog_owner(c, l, r) == s && c->stale[j] != CATALOG_STALE_REBUILD &&
                gap > (c->stale[j] ? c->owed[j] : 0)) {
                log_info("repair: shard %s holds %" PRIu64 " vectors of \"%s\" list %u, the "
                         "catalog %" PRIu64 ": the replica is rebuilt",
                         coord->shards[s].endpoint, have[l], c->name, l, c->list_counts[l]);
                lists[n] = l;
                reps[n++] = r;
            }
        }
    coord->repair.verified++;
    coord->repair.mismatched += n;
    if (n && s_mark_stale(coord, c, lists, reps, n))
        coord_shard_missed(coord, s, 1);
    coord->shards[s].verify_at++;
done:
    free(lists);
    free(reps);
    free(have);
}

static void s_verify_start(coord_t *coord, coord_job_t *job)
{
    s_step_t *st = job->state;
    if (!coord_shard_usable(coord, st->shard) || !catalog_find(coord->cat, job->req.coll)) {
        s_step_end(coord, job, 0);
        return;
    }
    wire_request_t req;
    coord_request_init(&req, WIRE_OP_LIST_COUNTS, job->req.coll);
    s_step_send(coord, job, st->shard, &req);
    if (st->outstanding == 0)
        s_step_complete(coord, job);
}

/* Starts the next verify of shard s; 0 when it has none left (verified). */
static int s_verify_step(coord_t *coord, size_t s)
{
    coord_shard_t *sh = &coord->shards[s];
    size_t n = catalog_coll_count(coord->cat);
    while (sh->verify_at < n && !s_coll_on_shard(catalog_coll_at(coord->cat, sh->verify_at), s))
        sh->verify_at++;
    if (sh->verify_at >= n) {
        sh->verify_wanted = 0;
        return 0;
    }
    const catalog_coll_t *c = catalog_coll_at(coord->cat, sh->verify_at);
    coord_job_t *job = s_step_new(coord, S_VERIFY, WIRE_OP_LIST_COUNTS, c->name, s_verify_start);
    if (!job)
        return 1;
    ((s_step_t *)job->state)->shard = s;
    coord_job_submit(coord, job);
    return 1;
}

/* ------------------------------------------------------------------------ */
/* 2. drop                                                                  */
/* ------------------------------------------------------------------------ */

static void s_drop_answered(coord_t *coord, coord_job_t *job)
{
    s_step_t *st = job->state;
    coord_shard_t *sh = &coord->shards[st->shard];
    if (st->failed) {
        log_warn("repair: dropping the stale lists of \"%s\" on shard %s: %s (tried again)",
                 job->req.coll, sh->endpoint, st->why);
        s_step_end(coord, job, S_RETRY_MS);
        return;
    }
    sh->drop_at++;
    s_step_end(coord, job, 0);
}

static void s_drop_start(coord_t *coord, coord_job_t *job)
{
    s_step_t *st = job->state;
    const catalog_coll_t *c = catalog_find(coord->cat, job->req.coll);
    size_t s = st->shard;
    for (uint32_t l = 0; c && c->trained && coord_shard_usable(coord, s) && l < c->nlist; l++) {
        for (uint32_t r = 0; r < c->replication; r++) {
            size_t j = (size_t)l * c->replication + r;
            if (c->stale[j] != CATALOG_STALE_REBUILD || c->owners[j] != s)
                continue;
            wire_request_t req;
            coord_request_init(&req, WIRE_OP_LIST_DROP, c->name);
            req.list = l;
            s_step_send(coord, job, s, &req);
            coord->repair.lists_dropped++;
        }
    }
    if (st->outstanding == 0)
        s_step_complete(coord, job);
}

/* ---- catch-up: a stale replica that owes known ids (CATALOG_STALE_CATCHUP) ---- */

/* The get from the source answered: upsert what is in the list, delete the rest. */
static void s_catchup_answer(coord_t *coord, coord_job_t *job, size_t s, const wire_reply_t *rep)
{
    s_step_t *st = job->state;
    const catalog_coll_t *c = catalog_find(coord->cat, job->req.coll);
    if (s != st->source || !c ||
        (rep->n != st->nids || (rep->n && (rep->dim != c->dim || !rep->found || !rep->vecs)))) {
        s_step_fail(coord, job, "get: an answer of the wrong shape from %s",
                    coord->shards[s].endpoint);
        return;
    }
    uint64_t *ins = malloc((st->nids ? st->nids : 1) * sizeof *ins);
    uint64_t *del = malloc((st->nids ? st->nids : 1) * sizeof *del);
    uint32_t *lists = malloc((st->nids ? st->nids : 1) * sizeof *lists);
    float *vecs = malloc((st->nids ? st->nids : 1) * c->dim * sizeof *vecs);
    if (!ins || !del || !lists || !vecs) {
        s_step_fail(coord, job, "out of memory for %zu ids", st->nids);
        goto done;
    }
    size_t ni = 0, nd = 0;
    for (size_t i = 0; i < st->nids; i++) {
        if (st->in_list[i] == 2)
            continue;
        if (st->in_list[i] && rep->found[i]) {
            memcpy(vecs + ni * c->dim, rep->vecs + i * c->dim, c->dim * sizeof *vecs);
            lists[ni] = st->list;
            ins[ni++] = st->ids[i];
        } else {
            del[nd++] = st->ids[i];
        }
    }
    st->writing = 1;
    wire_request_t req;
    if (ni) {
        coord_request_init(&req, WIRE_OP_INSERT, c->name);
        req.n = ni;
        req.dim = c->dim;
        req.ids = ins;
        req.vecs = vecs;
        req.lists = lists;
        s_step_send(coord, job, st->shard, &req);
    }
    if (nd) {
        coord_request_init(&req, WIRE_OP_DELETE, c->name);
        req.n = nd;
        req.ids = del;
        s_step_send(coord, job, st->shard, &req);
    }
    coord->repair.rows_caught_up += st->nids;
done:
    free(ins);
    free(del);
    free(lists);
    free(vecs);
}

static void s_catchup_finish(coord_t *coord, coord_job_t *job)
{
    s_step_t *st = job->state;
    shoal_err_t err;
    shoal_err_clear(&err);
    if (st->failed) {
        log_warn("repair: catching up \"%s\" list %u on shard %s: %s (tried again)",
                 job->req.coll, st->list, coord->shards[st->shard].endpoint,
                 st->why);
        s_step_end(coord, job, S_RETRY_MS);
        return;
    }
    if (catalog_owed_clear(coord->cat, job->req.coll, st->list, st->replica, st->ids, st->nids,
                           &err) != 0)
        log_warn("repair: %s", err.msg);
    s_step_end(coord, job, coord->opts.repair_pause_ms);
}

static void s_catchup_start(coord_t *coord, coord_job_t *job)
{
    s_step_t *st = job->state;
    coord_repair_t *rp = &coord->repair;
    size_t t = st->shard;
    shoal_err_t err;
    shoal_err_clear(&err);
    const catalog_coll_t *c = catalog_find(coord->cat, job->req.coll);
    size_t j = c && c->trained && st->list < c->nlist ? (size_t)st->list * c->replication + st->replica
                                                      : SIZE_MAX;
    if (j == SIZE_MAX || c->stale[j] != CATALOG_STALE_CATCHUP || !coord_shard_usable(coord, t)) {
        s_step_end(coord, job, 0); /* changed meanwhile: looked at again */
        return;
    }
    uint32_t src = coord_replica_pick(coord, c, st->list, st->replica + 1, NULL, coord->nshards);
    if (src == UINT32_MAX) {
        /* No up-to-date replica to copy from: drop it there (rebuilt later), so the shard
           can serve its other lists. */
        log_warn("repair: \"%s\" list %u on shard %s owes writes and no other replica is "
                 "readable: it is dropped there and rebuilt later",
                 c->name, st->list, coord->shards[t].endpoint);
        if (catalog_stale_set(coord->cat, c->name, &st->list, &st->replica, 1, 1, &err) != 0)
            log_warn("repair: %s", err.msg);
        s_step_end(coord, job, 0);
        return;
    }
    st->source = src;
    size_t max = coord->opts.repair_chunk;
    st->ids = malloc(max * sizeof *st->ids);
    uint32_t *cur = malloc(max * sizeof *cur);
    st->in_list = malloc(max);
    int rc = st->ids && cur && st->in_list ? 0 : shoal_err_set(&err, SHOAL_ENOMEM, "out of memory");
    if (rc == 0)
        rc = catalog_owed_scan(coord->cat, c->name, st->list, st->replica, 0, st->ids, max,
                               &st->nids, &err);
    if (rc == 0 && st->nids)
        rc = catalog_lookup(coord->cat, c->name, st->ids, st->nids, cur, &err);
    /* 1: upsert from the source; 0: delete there; 2: leave (the target holds the
       id's current list too, whose own replica state covers it). */
    for (size_t i = 0; rc == 0 && i < st->nids; i++) {
        st->in_list[i] = cur[i] == st->list;
        for (uint32_t r = 0; !st->in_list[i] && cur[i] < c->nlist && r < c->replication; r++)
            if (catalog_owner(c, cur[i], r) == t)
                st->in_list[i] = 2;
    }
    free(cur);
    if (rc != 0) {
        s_step_fail(coord, job, "%s", err.msg);
        s_step_complete(coord, job);
        return;
    }
    if (st->nids == 0) { /* caught up: the replica is in sync */
        if (catalog_stale_set(coord->cat, c->name, &st->list, &st->replica, 1, 0, &err) != 0) {
            s_step_fail(coord, job, "%s", err.msg);
            s_step_complete(coord, job);
            return;
        }
        rp->lists_caught_up++;
        log_info("repair: \"%s\" list %u on shard %s caught up on the writes it missed",
                 c->name, st->list, coord->shards[t].endpoint);
        s_step_end(coord, job, 0);
        return;
    }
    wire_request_t req;
    coord_request_init(&req, WIRE_OP_GET, c->name);
    req.n = st->nids;
    req.ids = st->ids;
    s_step_send(coord, job, src, &req);
    if (st->outstanding == 0)
        s_step_complete(coord, job);
}

/* Starts the next drop of fenced shard s; 0 when its pass is over (then maybe unfenced). */
static int s_drop_step(coord_t *coord, size_t s)
{
    coord_shard_t *sh = &coord->shards[s];
    size_t n = catalog_coll_count(coord->cat);
    if (sh->drop_at == 0)
        sh->drop_epoch = sh->epoch;
    while (sh->drop_at < n &&
           s_first(catalog_coll_at(coord->cat, sh->drop_at), s, S_STALE) == SIZE_MAX)
        sh->drop_at++;
    if (sh->drop_at >= n) {
        sh->drop_at = 0;
        if (sh->epoch == sh->drop_epoch) {
            sh->fenced = 0;
            log_info("repair: shard %s serves reads again (its stale lists are caught up, or "
                     "dropped there and rebuilt from other replicas)",
                     sh->endpoint);
        }
        return 0;
    }
    const catalog_coll_t *c = catalog_coll_at(coord->cat, sh->drop_at);
    /* Replicas that owe known ids catch up on them (not dropped); then the drops. */
    size_t j = s_first(c, s, CATALOG_STALE_CATCHUP);
    coord_job_t *job = j != SIZE_MAX
                           ? s_step_new(coord, S_CATCHUP, WIRE_OP_GET, c->name, s_catchup_start)
                           : s_step_new(coord, S_DROP, WIRE_OP_LIST_DROP, c->name, s_drop_start);
    if (!job)
        return 1;
    s_step_t *st = job->state;
    st->shard = s;
    st->list = j != SIZE_MAX ? (uint32_t)(j / c->replication) : 0;
    st->replica = j != SIZE_MAX ? (uint32_t)(j % c->replication) : 0;
    coord_job_submit(coord, job);
    return 1;
}

/* ------------------------------------------------------------------------ */
/* 3. rebuild                                                               */
/* ------------------------------------------------------------------------ */

/* The rebuild in progress stops (it starts over later). */
static void s_rebuild_abort(coord_t *coord, const char *why)
{
    coord_repair_t *rp = &coord->repair;
    if (!rp->active)
        return;
    log_info("%s \"%s\" list %u on shard %s stopped after %" PRIu64
             " rows: %s (started over later)",
             rp->moving ? "moves: copying" : "repair: rebuilding", rp->coll, rp->list,
             coord->shards[rp->target].endpoint, rp->copied, why);
    rp->active = 0;
    rp->aborted++;
}

/* The copy of replica r of list l of c into shard t from shard src begins (a move: moving). */
static void s_copy_begin(coord_t *coord, const catalog_coll_t *c, uint32_t l, uint32_t r,
                         size_t t, size_t src, int moving)
{
    coord_repair_t *rp = &coord->repair;
    rp->active = 1;
    rp->moving = moving;
    snprintf(rp->coll, sizeof rp->coll, "%s", c->name);
    rp->list = l;
    rp->replica = r;
    rp->target = t;
    rp->source = src;
    rp->epoch = coord->shards[t].epoch;
    rp->cursor[0] = '\0';
    rp->copied = 0;
    rp->move_vectors = c->list_counts[l];
    rp->started_us = zclock_usecs();
}

/* Picks the next stale replica to rebuild; 0 when there is none that can be. */
static int s_rebuild_pick(coord_t *coord)
{
    for (size_t i = 0; i < catalog_coll_count(coord->cat); i++) {
        const catalog_coll_t *c = catalog_coll_at(coord->cat, i);
        if (!c->trained || !c->nstale)
            continue;
        for (uint32_t l = 0; l < c->nlist; l++) {
            for (uint32_t r = 0; r < c->replication; r++) {
                size_t t = catalog_owner(c, l, r);
                if (c->stale[(size_t)l * c->replication + r] != CATALOG_STALE_REBUILD ||
                    !coord_shard_usable(coord, t) ||
                    coord->shards[t].fenced || coord->shards[t].verify_wanted)
                    continue;
                uint32_t src = coord_replica_pick(coord, c, l, r + 1, NULL, coord->nshards);
                if (src == UINT32_MAX)
                    continue;
                s_copy_begin(coord, c, l, r, t, src, 0);
                log_info("repair: rebuilding \"%s\" list %u (%" PRIu64 " vectors) on shard %s "
                         "from shard %s",
                         c->name, l, c->list_counts[l], coord->shards[t].endpoint,
                         coord->shards[src].endpoint);
                return 1;
            }
        }
    }
    return 0;
}

/* Why the rebuild (or move) in progress cannot go on now (NULL: it can). */
static const char *s_rebuild_blocked(const coord_t *coord, const catalog_coll_t *c)
{
    const coord_repair_t *rp = &coord->repair;
    if (!c || !c->trained || rp->list >= c->nlist || rp->replica >= c->replication)
        return "the collection changed";
    size_t j = (size_t)rp->list * c->replication + rp->replica;
    if (rp->moving && (c->move_state[j] != CATALOG_MOVE_COPYING || c->move_to[j] != rp->target))
        return "the move was stopped";
    if (rp->moving && c->stale[j])
        return "the replica went stale (repaired first)";
    if (!rp->moving && catalog_owner(c, rp->list, rp->replica) != rp->target)
        return "the collection changed";
    if (!rp->moving && !c->stale[j])
        return "the replica is no longer stale";
    if (!coord_shard_usable(coord, rp->target) || coord->shards[rp->target].epoch != rp->epoch)
        return "the target missed writes or went down";
    int src_ok = 0;
    for (uint32_t r = 0; r < c->replication; r++)
        src_ok |= catalog_owner(c, rp->list, r) == rp->source &&
                  coord_replica_readable(coord, c, rp->list, r);
    return src_ok ? NULL : "the source is no longer an up-to-date live replica";
}

static void s_chunk_answer(coord_t *coord, coord_job_t *job, size_t s, const wire_reply_t *rep)
{
    s_step_t *st = job->state;
    coord_repair_t *rp = &coord->repair;
    if (st->writing) {
        rp->copied += st->rows;
        rp->rows_copied += st->rows;
        if (rp->moving)
            rp->move_rows += st->rows;
        snprintf(rp->cursor, sizeof rp->cursor, "%s", st->cursor);
        return;
    }
    const catalog_coll_t *c = catalog_find(coord->cat, job->req.coll);
    if (s != rp->source || !c || (rep->n && (rep->dim != c->dim || !rep->ids || !rep->vecs))) {
        s_step_fail(coord, job, "list_export: an answer of the wrong shape from %s",
                    coord->shards[s].endpoint);
        return;
    }
    st->done = rep->done != 0;
    st->rows = (size_t)rep->n;
    snprintf(st->cursor, sizeof st->cursor, "%s", rep->cursor);
    if (!rep->n)
        return;
    uint32_t *lists = malloc(st->rows * sizeof *lists);
    if (!lists) {
        s_step_fail(coord, job, "out of memory for %zu rows", st->rows);
        return;
    }
    for (size_t i = 0; i < st->rows; i++)
        lists[i] = rp->list;
    wire_request_t req;
    coord_request_init(&req, WIRE_OP_INSERT, c->name);
    req.n = rep->n;
    req.dim = c->dim;
    req.ids = rep->ids;
    req.vecs = rep->vecs;
    req.lists = lists;
    st->writing = 1;
    s_step_send(coord, job, rp->target, &req); /* ZeroMQ copied the frames */
    free(lists);
}

/* The pause after a chunk of rows rows: repair_pause_ms, longer where a move's rate says. */
static uint32_t s_pause_ms(const coord_t *coord, const catalog_coll_t *c, size_t rows)
{
    uint32_t pause = coord->opts.repair_pause_ms;
    const coord_repair_t *rp = &coord->repair;
    if (rp->moving && rp->rate_mb && c) {
        double bytes = (double)rows * ((double)c->dim * sizeof(float) + 12);
        double ms = bytes / ((double)rp->rate_mb * 1e6) * 1e3;
        if (ms > pause)
            pause = ms > 60000 ? 60000 : (uint32_t)ms;
    }
    return pause;
}

/* A move's last chunk is in and nothing blocks it: the target becomes the owner. */
static void s_move_finish(coord_t *coord, coord_job_t *job, const catalog_coll_t *c)
{
    coord_repair_t *rp = &coord->repair;
    shoal_err_t err;
    shoal_err_clear(&err);
    uint32_t from = catalog_owner(c, rp->list, rp->replica);
    if (catalog_move_switch(coord->cat, rp->coll, rp->list, rp->replica, &err) != 0) {
        s_rebuild_abort(coord, err.msg);
        s_step_end(coord, job, S_RETRY_MS);
        return;
    }
    coord_orphans_count(coord);
    double secs = (double)(zclock_usecs() - rp->started_us) / 1e6;
    rp->move_rows_per_s = secs > 0 ? (double)rp->copied / secs : 0;
    rp->moves_done++;
    rp->active = 0;
    rp->moving = 0;
    log_info("moves: \"%s\" list %u replica %u now lives on shard %s (was %s; %" PRIu64
             " rows in %.2f s); the old copy is dropped next",
             rp->coll, rp->list, rp->replica, coord->shards[rp->target].endpoint,
             from < coord->nshards ? coord->shards[from].endpoint : "?", rp->copied, secs);
    s_step_end(coord, job, 0);
}

static void s_chunk_finish(coord_t *coord, coord_job_t *job)
{
    s_step_t *st = job->state;
    coord_repair_t *rp = &coord->repair;
    if (st->failed) {
        s_rebuild_abort(coord, st->why);
        s_step_end(coord, job, S_RETRY_MS);
        return;
    }
    const catalog_coll_t *c = catalog_find(coord->cat, rp->coll);
    if (!st->done) {
        s_step_end(coord, job, s_pause_ms(coord, c, st->rows));
        return;
    }
    /* The last chunk: the replica is current if the target missed nothing meanwhile. */
    const char *blocked = s_rebuild_blocked(coord, c);
    if (blocked) {
        s_rebuild_abort(coord, blocked);
        s_step_end(coord, job, coord->opts.repair_pause_ms);
        return;
    }
    if (rp->moving) {
        s_move_finish(coord, job, c);
        return;
    }
    shoal_err_t err;
    shoal_err_clear(&err);
    if (catalog_stale_set(coord->cat, rp->coll, &rp->list, &rp->replica, 1, 0, &err) != 0) {
        s_rebuild_abort(coord, err.msg);
        s_step_end(coord, job, S_RETRY_MS);
        return;
    }
    double secs = (double)(zclock_usecs() - rp->started_us) / 1e6;
    rp->last_rows_per_s = secs > 0 ? (double)rp->copied / secs : 0;
    rp->lists_repaired++;
    rp->active = 0;
    log_info("repair: \"%s\" list %u on shard %s is up to date again (%" PRIu64
             " rows in %.2f s)",
             rp->coll, rp->list, coord->shards[rp->target].endpoint, rp->copied, secs);
    s_step_end(coord, job, coord->opts.repair_pause_ms);
}

static void s_chunk_start(coord_t *coord, coord_job_t *job)
{
    s_step_t *st = job->state;
    coord_repair_t *rp = &coord->repair;
    const char *blocked = s_rebuild_blocked(coord, catalog_find(coord->cat, rp->coll));
    if (blocked) {
        s_rebuild_abort(coord, blocked);
        s_step_end(coord, job, 0);
        return;
    }
    wire_request_t req;
    coord_request_init(&req, WIRE_OP_LIST_EXPORT, rp->coll);
    req.list = rp->list;
    req.limit = coord->opts.repair_chunk;
    snprintf(req.cursor, sizeof req.cursor, "%s", rp->cursor);
    s_step_send(coord, job, rp->source, &req);
    if (st->outstanding == 0)
        s_step_complete(coord, job);
}

/* 1 when c has an orphan copy of list l on shard s. */
static int s_has_orphan(const catalog_coll_t *c, uint32_t l, size_t s)
{
    for (uint32_t k = 0; k < c->norphans; k++)
        if (c->orphans[k].list == l && c->orphans[k].shard == s)
            return 1;
    return 0;
}

/* 1 when shard s can take a move's copy now. */
static int s_move_target_ok(const coord_t *coord, size_t s)
{
    const coord_shard_t *sh = s < coord->nshards ? &coord->shards[s] : NULL;
    return sh && coord_shard_usable(coord, s) && sh->state == COORD_SHARD_UP && !sh->fenced &&
           !sh->stale_orphans && !sh->verify_wanted;
}

/*
 * Picks the next move to run (one that is copying first: a coordinator that
 * restarted resumes it from its first row; then a queued one, started here);
 * 0 when none can run now.
 */
static int s_move_pick(coord_t *coord)
{
    shoal_err_t err;
    shoal_err_clear(&err);
    for (int pass = CATALOG_MOVE_COPYING; pass >= CATALOG_MOVE_QUEUED; pass--) {
        for (size_t i = 0; i < catalog_coll_count(coord->cat); i++) {
            const catalog_coll_t *c = catalog_coll_at(coord->cat, i);
            uint32_t R = c->replication;
            for (size_t j = 0; c->trained && c->nmoves && j < (size_t)c->nlist * R; j++) {
                uint32_t l = (uint32_t)(j / R), r = (uint32_t)(j % R), t = c->move_to[j];
                if (c->move_state[j] != pass || c->stale[j] || !s_move_target_ok(coord, t) ||
                    s_has_orphan(c, l, t))
                    continue;
                int owner = 0;
                for (uint32_t q = 0; q < R; q++)
                    owner |= catalog_owner(c, l, q) == t;
                uint32_t src = owner ? UINT32_MAX
                                     : coord_replica_pick(coord, c, l, r, NULL, coord->nshards);
                if (src == UINT32_MAX)
                    continue;
                if (pass == CATALOG_MOVE_QUEUED &&
                    catalog_move_start(coord->cat, c->name, l, r, &err) != 0) {
                    log_warn("moves: %s", err.msg);
                    continue;
                }
                s_copy_begin(coord, c, l, r, t, src, 1);
                log_info("moves: %s \"%s\" list %u replica %u (%" PRIu64 " vectors) from "
                         "shard %s to shard %s",
                         pass == CATALOG_MOVE_COPYING ? "resuming" : "moving", c->name, l, r,
                         c->list_counts[l], coord->shards[catalog_owner(c, l, r)].endpoint,
                         coord->shards[t].endpoint);
                return 1;
            }
        }
    }
    return 0;
}

/* Starts the next chunk of a rebuild or move (picking one when none is active); 0 when idle. */
static int s_rebuild_step(coord_t *coord)
{
    coord_repair_t *rp = &coord->repair;
    if (!rp->active) {
        rp->moving = 0;
        if (!s_rebuild_pick(coord) && !s_move_pick(coord))
            return 0;
    }
    coord_job_t *job = s_step_new(coord, S_CHUNK, WIRE_OP_LIST_EXPORT, rp->coll, s_chunk_start);
    if (!job)
        return 1;
    coord_job_submit(coord, job);
    return 1;
}

/* ------------------------------------------------------------------------ */
/* 4. orphan drops                                                          */
/* ------------------------------------------------------------------------ */

static void s_orphan_finish(coord_t *coord, coord_job_t *job)
{
    s_step_t *st = job->state;
    if (st->failed) {
        log_warn("moves: dropping the old copy of \"%s\" list %u on shard %s: %s (tried again)",
                 job->req.coll, st->list, coord->shards[st->shard].endpoint, st->why);
        s_step_end(coord, job, S_RETRY_MS);
        return;
    }
    shoal_err_t err;
    shoal_err_clear(&err);
    if (catalog_orphan_set(coord->cat, job->req.coll, st->list, (uint32_t)st->shard, 0, &err) !=
        0) {
        log_warn("moves: %s", err.msg);
        s_step_end(coord, job, S_RETRY_MS);
        return;
    }
    coord->repair.orphans_dropped++;
    coord_orphans_count(coord);
    log_info("moves: the old copy of \"%s\" list %u on shard %s is dropped", job->req.coll,
             st->list, coord->shards[st->shard].endpoint);
    s_step_end(coord, job, coord->opts.repair_pause_ms);
}

static void s_orphan_start(coord_t *coord, coord_job_t *job)
{
    s_step_t *st = job->state;
    const catalog_coll_t *c = catalog_find(coord->cat, job->req.coll);
    if (!c || !s_has_orphan(c, st->list, st->shard) || !coord_shard_usable(coord, st->shard)) {
        s_step_end(coord, job, 0); /* changed meanwhile */
        return;
    }
    wire_request_t req;
    coord_request_init(&req, WIRE_OP_LIST_DROP, c->name);
    req.list = st->list;
    s_step_send(coord, job, st->shard, &req);
    if (st->outstanding == 0)
        s_step_complete(coord, job);
}

/* Starts the drop of an orphan copy on a shard that is up; 0 when none can be. */
static int s_orphan_step(coord_t *coord)
{
    for (size_t i = 0; i < catalog_coll_count(coord->cat); i++) {
        const catalog_coll_t *c = catalog_coll_at(coord->cat, i);
        for (uint32_t k = 0; k < c->norphans; k++) {
            size_t s = c->orphans[k].shard;
            if (!coord_shard_usable(coord, s) || coord->shards[s].state != COORD_SHARD_UP)
                continue;
            coord_job_t *job =
                s_step_new(coord, S_ORPHAN, WIRE_OP_LIST_DROP, c->name, s_orphan_start);
            if (!job)
                return 1;
            s_step_t *st = job->state;
            st->shard = s;
            st->list = c->orphans[k].list;
            coord_job_submit(coord, job);
            return 1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* The engine                                                               */
/* ------------------------------------------------------------------------ */

void coord_repair_tick(coord_t *coord, int64_t now)
{
    coord_repair_t *rp = &coord->repair;
    coord_calib_tick(coord, now);
    coord_recall_tick(coord, now);
    if (coord->stopping || rp->job || now < rp->next_us)
        return;
    for (size_t s = 0; s < coord->nshards; s++)
        if (coord->shards[s].verify_wanted && coord_shard_usable(coord, s) &&
            coord->shards[s].state == COORD_SHARD_UP && s_verify_step(coord, s))
            return;
    for (size_t s = 0; s < coord->nshards; s++)
        if (coord->shards[s].fenced && !coord->shards[s].verify_wanted &&
            coord->shards[s].state == COORD_SHARD_UP && s_drop_step(coord, s))
            return;
    if (s_orphan_step(coord) || s_rebuild_step(coord))
        return;
    rp->next_us = now + S_RETRY_MS * 1000; /* idle: look again later */
}

void coord_repair_info(coord_t *coord, wire_info_t *info)
{
    coord_repair_t *rp = &coord->repair;
    uint64_t pending = 0;
    for (size_t i = 0; i < catalog_coll_count(coord->cat); i++)
        pending += catalog_coll_at(coord->cat, i)->nstale;
    size_t fenced = 0;
    for (size_t s = 0; s < coord->nshards; s++)
        fenced += coord->shards[s].fenced != 0;
    wire_info_key(info, "repair");
    wire_info_map(info, 13);
    wire_io_info_u64(info, "pending", pending);
    wire_io_info_u64(info, "running", rp->active ? 1 : 0);
    wire_io_info_u64(info, "fenced_shards", fenced);
    wire_io_info_u64(info, "rows_copied", rp->rows_copied);
    wire_io_info_u64(info, "lists_repaired", rp->lists_repaired);
    wire_io_info_u64(info, "lists_dropped", rp->lists_dropped);
    wire_io_info_u64(info, "lists_caught_up", rp->lists_caught_up);
    wire_io_info_u64(info, "rows_caught_up", rp->rows_caught_up);
    wire_io_info_f64(info, "rows_per_s", rp->last_rows_per_s);
    wire_io_info_u64(info, "verified", rp->verified);
    wire_io_info_u64(info, "mismatched", rp->mismatched);
    wire_io_info_u64(info, "aborted", rp->aborted);
    wire_io_info_u64(info, "replica_misses", coord->replica_misses);
}
