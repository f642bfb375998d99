/*
 * coord_write.c - the coordinator's writes: create, drop, train, insert
 * (upsert), delete, checkpoint, and the re-drive of interrupted inserts.
 *
 * Writes wait in the loop's FIFO until nothing running touches their ids or
 * collection (coord_private.h), so each one validates against the catalog
 * when it starts, not when it arrived. Each is a small state machine over
 * phases; a phase sends one request per shard involved and continues when
 * every one answered, the write timeout passed, or a shard it waits on was
 * marked down (then at once, as failed: nothing more is coming from it).
 *
 * Why an insert is "intent, shards, id map, stale copies, clear": the id map
 * must never name a list whose shard did not store the vector, and a moved id
 * must not stay on its old shard. The intent records both lists before any
 * shard is touched, so a crash anywhere leaves enough to finish the job
 * (catalog.h: each id is deleted from every shard that is not the owner of
 * the list the id map names).
 *
 * Why a delete is "intent, id map, shards, clear" (roll forward): a delete
 * that reached some shards cannot be taken back there, and the client asked
 * for the ids to go. So the id map forgets them first, and whatever shard
 * misses its delete (down, hung, crashed coordinator) is finished by the
 * re-drive rule above, which deletes every copy the map no longer names. The
 * map, the per-list counts and the shards agree once the shards are back; in
 * between, a search may still find a deleted id on a shard that missed it.
 *
 * Re-drive logging: one line when a shard starts holding up intents and one
 * when none waits for it any more; per intent only at debug level; counters
 * (redrive_attempts / redrive_settled / redrive_waiting) in stats.
 */
#include "coordinator/coord_private.h"

#include "common/log.h"
#include "common/topk.h"
#include "shard/hnsw.h" /* the HNSW build defaults a create fills in (no code linked) */

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The state of any write (fields by op). */
typedef struct {
    int phase;                              /* op-specific step */
    void (*next)(coord_t *, coord_job_t *); /* runs when a phase is complete */
    int accept;                  /* a shard code that counts as success (EEXIST, ENOTFOUND) */
    int timed_out;               /* the phase ended by the deadline */
    int fail_code;               /* first shard failure (0: none) */
    size_t fail_shard;           /* the shard it names (SIZE_MAX: none) */
    char fail_msg[WIRE_MSG_MAX]; /* its message, naming the shard */
    uint32_t *ok;                /* nshards: answered with success this phase */
    uint32_t *sent;              /* nshards: a request went this phase */
    uint32_t *wait;              /* nshards: this phase's requests not answered yet */
    size_t outstanding;          /* this phase's requests not answered yet, in all */
    uint32_t tag;                /* this phase's tag: answers of earlier phases are ignored */
    uint8_t *inv;                /* nlist x R: replicas this phase writes (s_settle) */
    uint32_t *ok1;               /* insert: nshards, the shards that stored phase 1 (NULL before) */
    size_t ninv;                 /* its length */
    uint32_t *xl, *xs;           /* nx extra copies (list, shard) this phase writes (s_settle) */
    size_t nx, capx;
    char coll[WIRE_NAME_MAX + 1];
    /* insert / delete / re-drive */
    size_t n;            /* ids handled (after removing repeats) */
    uint64_t *ids;       /* n */
    float *vecs;         /* insert: n x dim */
    uint32_t *old_lists; /* n */
    uint32_t *new_lists; /* n (insert) */
    size_t nshards;      /* length of the per-shard arrays */
    uint64_t txn;        /* the write's intent */
    int has_txn;         /* txn was stored (and is this job's until it ends) */
    uint64_t count;      /* the reply's count */
    uint64_t **sids;     /* nshards: ids sent to shard s */
    float **svecs;       /* nshards: their vectors (insert) */
    uint32_t **slists;   /* nshards: their IVF lists (insert), the shard stores them */
    size_t *sn;          /* nshards: how many */
    /* re-drive */
    size_t coll_at;            /* next collection to re-drive */
    catalog_intent_t *intents; /* the current collection's */
    size_t nintents;
    size_t intent_at;          /* next of them to re-drive */
    /* repair */
    size_t repair_shard; /* the shard that lacks w->coll */
} s_write_t;

static void s_batches_free(s_write_t *w, size_t nshards)
{
    for (size_t s = 0; w->sids && s < nshards; s++) {
        free(w->sids[s]);
        w->sids[s] = NULL;
        if (w->svecs) {
            free(w->svecs[s]);
            w->svecs[s] = NULL;
        }
        if (w->slists) {
            free(w->slists[s]);
            w->slists[s] = NULL;
        }
        w->sn[s] = 0;
    }
}

static void s_state_free(void *state)
{
    s_write_t *w = state;
    if (!w)
        return;
    s_batches_free(w, w->nshards);
    free(w->sids);
    free(w->svecs);
    free(w->slists);
    free(w->sn);
    free(w->ok);
    free(w->sent);
    free(w->wait);
    free(w->inv);
    free(w->ok1);
    free(w->xl);
    free(w->xs);
    free(w->ids);
    free(w->vecs);
    free(w->old_lists);
    free(w->new_lists);
    catalog_intents_free(w->intents, w->nintents);
    free(w);
}

static s_write_t *s_state_new(coord_t *coord, coord_job_t *job)
{
    s_write_t *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    size_t ns = coord->nshards;
    w->nshards = ns;
    w->ok = calloc(ns, sizeof *w->ok);
    w->sent = calloc(ns, sizeof *w->sent);
    w->wait = calloc(ns, sizeof *w->wait);
    w->sids = calloc(ns, sizeof *w->sids);
    w->svecs = calloc(ns, sizeof *w->svecs);
    w->slists = calloc(ns, sizeof *w->slists);
    w->sn = calloc(ns, sizeof *w->sn);
    if (!w->ok || !w->sent || !w->wait || !w->sids || !w->svecs || !w->slists || !w->sn) {
        s_state_free(w);
        return NULL;
    }
    snprintf(w->coll, sizeof w->coll, "%s", job->req.coll);
    w->fail_shard = SIZE_MAX;
    job->state = w;
    job->free_state = s_state_free;
    return w;
}

/* Clears the per-phase flags. */
static void s_phase_reset(coord_t *coord, s_write_t *w)
{
    (void)coord;
    memset(w->ok, 0, w->nshards * sizeof *w->ok);
    memset(w->sent, 0, w->nshards * sizeof *w->sent);
    memset(w->wait, 0, w->nshards * sizeof *w->wait);
    w->nx = 0;
    if (w->inv)
        memset(w->inv, 0, w->ninv);
    w->outstanding = 0;
    w->tag++;
    w->timed_out = 0;
    w->fail_code = 0;
    w->fail_shard = SIZE_MAX;
    w->fail_msg[0] = '\0';
}

static void s_record_fail(s_write_t *w, size_t s, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Records the phase's first failure; s is the shard it names (SIZE_MAX: none). */
static void s_record_fail(s_write_t *w, size_t s, int code, const char *fmt, ...)
{
    if (w->fail_code)
        return;
    w->fail_code = code ? code : SHOAL_EINTERNAL;
    w->fail_shard = s;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->fail_msg, sizeof w->fail_msg, fmt, ap);
    va_end(ap);
}

/* A shard's answer to a write phase. */
static void s_on_reply(coord_t *coord, coord_job_t *job, size_t s, uint32_t tag,
                       const wire_reply_t *rep)
{
    s_write_t *w = job->state;
    if (tag != w->tag || !w->wait[s])
        return; /* an answer of an earlier phase (it ended without it) */
    w->wait[s]--;
    w->outstanding--;
    /* A shard that lost a collection the catalog has needs it back (coord_repair_collection). */
    if (rep->code == SHOAL_ENOTFOUND &&
        (job->req.op == WIRE_OP_INSERT || job->req.op == WIRE_OP_DELETE))
        coord_repair_collection(coord, s, w->coll);
    if (rep->code == SHOAL_OK || (w->accept && rep->code == w->accept)) {
        w->ok[s] = 1;
    } else {
        s_record_fail(w, s, rep->code, "%s: shard %s: %s", wire_op_name(job->req.op),
                      coord->shards[s].endpoint,
                      rep->msg[0] ? rep->msg : shoal_strerror(rep->code));
    }
    if (w->outstanding == 0)
        w->next(coord, job);
}

/* The first shard flagged in flags (n of them; SIZE_MAX: none). */
static size_t s_first_shard(const uint32_t *flags, size_t n)
{
    for (size_t s = 0; s < n; s++)
        if (flags[s])
            return s;
    return SIZE_MAX;
}

/*
 * A shard this phase waits on was marked down: the phase ends now, failed
 * (every next handler ends the job when requests are still outstanding).
 */
static void s_on_shard_down(coord_t *coord, coord_job_t *job, size_t s)
{
    s_write_t *w = job->state;
    if (!w->wait[s])
        return; /* it owes an answer of an earlier phase only */
    w->outstanding -= w->wait[s];
    w->wait[s] = 0;
    w->fail_code = 0; /* the shard going down is what the client hears about */
    s_record_fail(w, s, SHOAL_EUNAVAIL, "%s: shard %s was marked down (no answer for %u ms)",
                  wire_op_name(job->req.op), coord->shards[s].endpoint,
                  coord->opts.down_after_ms);
    if (w->outstanding == 0) {
        job->deadline_us = 0;
        w->next(coord, job);
    }
}

static void s_on_timeout(coord_t *coord, coord_job_t *job)
{
    s_write_t *w = job->state;
    w->timed_out = 1;
    char list[WIRE_MSG_MAX / 2] = "";
    coord_shard_list(coord, w->wait, list, sizeof list);
    w->fail_code = 0; /* the timeout is what the client hears about */
    s_record_fail(w, s_first_shard(w->wait, w->nshards), SHOAL_ETIMEOUT,
                  "%s: shard(s) %s did not answer within %u ms",
                  wire_op_name(job->req.op), list, coord->opts.write_timeout_ms);
    memset(w->wait, 0, w->nshards * sizeof *w->wait);
    w->outstanding = 0;
    w->next(coord, job);
}

/* Sends req to shard s for this phase; a send that fails is that shard's failure. */
static void s_send(coord_t *coord, coord_job_t *job, size_t s, wire_request_t *req)
{
    s_write_t *w = job->state;
    if (coord_send(coord, job, s, w->tag, req) == 0) {
        w->sent[s] = 1;
        w->wait[s]++;
        w->outstanding++;
        return;
    }
    s_record_fail(w, s, SHOAL_EUNAVAIL, "%s: shard %s is not reachable", wire_op_name(job->req.op),
                  coord->shards[s].endpoint);
}

/* Arms the phase: handlers, deadline; runs next at once when nothing was sent. */
static void s_phase_wait(coord_t *coord, coord_job_t *job)
{
    s_write_t *w = job->state;
    job->on_reply = s_on_reply;
    job->on_timeout = s_on_timeout;
    job->on_shard_down = s_on_shard_down;
    job->deadline_us = zclock_usecs() + (int64_t)coord->opts.write_timeout_ms * 1000;
    if (w->outstanding == 0) {
        job->deadline_us = 0;
        w->next(coord, job);
    }
}

/* SHOAL_EUNAVAIL naming the shards (not removed) that are down (0 when none). */
static int s_check_down(coord_t *coord, const char *op, shoal_err_t *err)
{
    char list[WIRE_MSG_MAX / 2] = "";
    uint32_t *down = calloc(coord->nshards ? coord->nshards : 1, sizeof *down);
    if (!down)
        return shoal_err_set(err, SHOAL_ENOMEM, "%s: out of memory", op);
    int any = 0;
    for (size_t s = 0; s < coord->nshards; s++)
        if (!coord->shards[s].removed && !coord_shard_usable(coord, s))
            down[s] = 1, any = 1;
    if (any)
        coord_shard_list(coord, down, list, sizeof list);
    free(down);
    if (any)
        return shoal_err_set(err, SHOAL_EUNAVAIL, "%s: shard(s) %s down; nothing was written", op,
                             list);
    return 0;
}

/*
 * Sends one copy of tmpl per shard and arms the phase: to every shard
 * (batched 0), or to each shard with a batch queued in w->sids / w->svecs,
 * which the copy carries (batched 1). The ids and vectors stay w's.
 */
static void s_fan_out(coord_t *coord, coord_job_t *job, const wire_request_t *tmpl, int batched)
{
    s_write_t *w = job->state;
    for (size_t s = 0; s < w->nshards; s++) {
        if ((batched && !w->sn[s]) || (!batched && coord->shards[s].removed))
            continue;
        wire_request_t sub = *tmpl;
        if (batched) {
            sub.n = w->sn[s];
            sub.ids = w->sids[s];
            sub.vecs = w->svecs[s];
            sub.lists = w->slists[s];
        }
        s_send(coord, job, s, &sub);
    }
    s_phase_wait(coord, job);
}

/*
 * Sends each shard its batch (w->sids / w->svecs) as an op request on w->coll
 * (dim: an insert's) and continues in next when all answered.
 */
static void s_send_batches(coord_t *coord, coord_job_t *job, wire_op_t op, uint32_t dim,
                           void (*next)(coord_t *, coord_job_t *))
{
    s_write_t *w = job->state;
    w->next = next;
    wire_request_t sub;
    coord_request_init(&sub, op, w->coll);
    sub.dim = dim;
    s_fan_out(coord, job, &sub, 1);
}

/*
 * Queues id (and its dim floats at vec and its list, when vec is not NULL)
 * for shard s; a batch has room for cap rows. 0, or -1 out of memory.
 */
static int s_batch_add(s_write_t *w, size_t s, uint64_t id, const float *vec, size_t dim,
                       uint32_t list, size_t cap)
{
    if (s >= w->nshards) {
        log_warn("a write met shard %zu, added after it started: it is failed and retried", s);
        return -1;
    }
    if (!w->sids[s]) {
        w->sids[s] = malloc(cap * sizeof(uint64_t));
        if (vec) {
            w->svecs[s] = malloc(cap * dim * sizeof(float));
            w->slists[s] = malloc(cap * sizeof(uint32_t));
        }
        if (!w->sids[s] || (vec && (!w->svecs[s] || !w->slists[s])))
            return -1;
    }
    w->sids[s][w->sn[s]] = id;
    if (vec) {
        memcpy(w->svecs[s] + w->sn[s] * dim, vec, dim * sizeof(float));
        w->slists[s][w->sn[s]] = list;
    }
    w->sn[s]++;
    return 0;
}

/* Most extra copies of one list a write looks at (move targets and orphans). */
#define S_EXTRAS_MAX 16

/*
 * 1 when shard s holds a copy of list l of c: a replica, or an extra copy (a
 * move's target, an orphan), which gets the list's writes like a replica (l
 * may be CATALOG_LIST_NONE: 0).
 */
static int s_holds(const catalog_coll_t *c, uint32_t l, size_t s)
{
    for (uint32_t r = 0; l < c->nlist && r < c->replication; r++)
        if (catalog_owner(c, l, r) == s)
            return 1;
    uint32_t x[S_EXTRAS_MAX];
    size_t nx = catalog_extras(c, l, x, S_EXTRAS_MAX);
    for (size_t i = 0; i < nx && i < S_EXTRAS_MAX; i++)
        if (x[i] == s)
            return 1;
    return 0;
}

/* Notes that this phase writes extra copy (l, s) for s_settle; 0 or -1 (memory). */
static int s_extra_note(s_write_t *w, uint32_t l, uint32_t s)
{
    for (size_t i = w->nx; i > 0; i--)
        if (w->xl[i - 1] == l && w->xs[i - 1] == s)
            return 0;
    if (w->nx == w->capx) {
        size_t cap = w->capx ? 2 * w->capx : 8;
        uint32_t *xl = realloc(w->xl, cap * sizeof *xl);
        if (xl)
            w->xl = xl;
        uint32_t *xs = xl ? realloc(w->xs, cap * sizeof *xs) : NULL;
        if (xs)
            w->xs = xs;
        if (!xl || !xs)
            return -1;
        w->capx = cap;
    }
    w->xl[w->nx] = l;
    w->xs[w->nx++] = s;
    return 0;
}

/* 1 when shard s holds a replica (not an extra copy) of list l of c. */
static int s_holds_replica(const catalog_coll_t *c, uint32_t l, size_t s)
{
    for (uint32_t r = 0; l < c->nlist && r < c->replication; r++)
        if (catalog_owner(c, l, r) == s)
            return 1;
    return 0;
}

/* Sizes and zeroes w->inv for c (nlist x R flags). 0, or -1 out of memory. */
static int s_inv_init(s_write_t *w, const catalog_coll_t *c)
{
    size_t need = (size_t)c->nlist * c->replication;
    if (w->ninv != need) {
        free(w->inv);
        w->inv = calloc(need ? need : 1, 1);
        w->ninv = w->inv ? need : 0;
        return w->inv ? 0 : -1;
    }
    memset(w->inv, 0, need);
    return 0;
}

/*
 * Queues id for every replica of list l (an insert: with its vector vec and
 * l; a delete: vec NULL), leaving out the shards that hold a replica of list
 * skip, and flags the replicas in w->inv. A replica whose shard is down gets
 * nothing: s_settle counts it as failed. 0, or -1 out of memory.
 */
static int s_replicas_add(coord_t *coord, s_write_t *w, const catalog_coll_t *c, uint64_t id,
                          const float *vec, uint32_t l, uint32_t skip, size_t cap)
{
    for (uint32_t r = 0; r < c->replication; r++) {
        uint32_t s = catalog_owner(c, l, r);
        /* A shard that stored the id in list skip holds it there now; one that
           failed to still holds the old copy: it is written to (and owes it). */
        if (s_holds(c, skip, s) && (!w->ok1 || w->ok1[s]))
            continue;
        w->inv[(size_t)l * c->replication + r] = 1;
        if (coord_shard_usable(coord, s) &&
            s_batch_add(w, s, id, vec, c->dim, l, cap) != 0)
            return -1;
    }
    /* Extra copies get it too (one down gets nothing: s_settle counts it failed). */
    uint32_t x[S_EXTRAS_MAX];
    size_t nx = catalog_extras(c, l, x, S_EXTRAS_MAX);
    for (size_t i = 0; i < nx && i < S_EXTRAS_MAX; i++) {
        if ((s_holds(c, skip, x[i]) && (!w->ok1 || x[i] >= w->nshards || w->ok1[x[i]])) ||
            s_holds_replica(c, l, x[i]))
            continue;
        if (s_extra_note(w, l, x[i]) != 0 ||
            (coord_shard_usable(coord, x[i]) && s_batch_add(w, x[i], id, vec, c->dim, l, cap) != 0))
            return -1;
    }
    return 0;
}

/*
 * Queues a delete of id from the shards that may hold a stale copy of it:
 * the replicas of lists a and b, but not the shards holding a replica of list
 * keep (where the id map says it lives). touched (optional) marks the
 * shards. 0, or -1 out of memory.
 */
static int s_stale_add(coord_t *coord, s_write_t *w, const catalog_coll_t *c, uint64_t id,
                       uint32_t keep, uint32_t a, uint32_t b, size_t cap, uint32_t *touched)
{
    uint32_t cand[2] = {a, b};
    for (int k = 0; k < 2; k++) {
        uint32_t l = cand[k];
        if (l >= c->nlist || (k == 1 && l == a))
            continue;
        uint32_t x[CATALOG_REPLICAS_MAX + S_EXTRAS_MAX];
        size_t nh = 0;
        for (uint32_t r = 0; r < c->replication; r++)
            x[nh++] = catalog_owner(c, l, r);
        size_t ne = catalog_extras(c, l, x + nh, S_EXTRAS_MAX);
        nh += ne < S_EXTRAS_MAX ? ne : S_EXTRAS_MAX;
        for (size_t h = 0; h < nh; h++) {
            uint32_t s = x[h];
            if (s >= coord->nshards || s_holds(c, keep, s) || (k == 1 && s_holds(c, a, s)))
                continue;
            if (s_batch_add(w, s, id, NULL, 0, CATALOG_LIST_NONE, cap) != 0)
                return -1;
            if (touched)
                touched[s] = 1;
        }
    }
    return 0;
}

/*
 * SHOAL_EUNAVAIL when list l of c has fewer than need replicas that are up to
 * date and on a shard not known down: a write that needs them is refused
 * before anything is written.
 */
static int s_check_quorum(const coord_t *coord, const catalog_coll_t *c, uint32_t l, uint32_t need,
                          const char *op, shoal_err_t *err)
{
    uint32_t live = 0;
    size_t down = SIZE_MAX;
    for (uint32_t r = 0; r < c->replication; r++) {
        uint32_t s = catalog_owner(c, l, r);
        if (c->stale[(size_t)l * c->replication + r])
            continue;
        if (coord_shard_usable(coord, s))
            live++;
        else if (down == SIZE_MAX)
            down = s;
    }
    if (live >= need)
        return 0;
    if (c->replication == 1)
        return shoal_err_set(err, SHOAL_EUNAVAIL, "%s: shard(s) %s down; nothing was written", op,
                             down < coord->nshards ? coord->shards[down].endpoint : "?");
    return shoal_err_set(err, SHOAL_EUNAVAIL,
                         "%s: list %u of \"%s\" has %u up-to-date replica(s) on live shards, "
                         "the write quorum is %u (%s%s); nothing was written",
                         op, l, c->name, live, need, down < coord->nshards ? "down: " : "",
                         down < coord->nshards ? coord->shards[down].endpoint
                                               : "the others are stale, being repaired");
}

/*
 * Records that the nm replicas (ml[k], mr[k]) missed the ids of this phase in
 * their list (lists[i] for w->ids[i]), leaving out an id whose write skipped
 * that replica's shard (it holds a replica of skip[i]; skip may be NULL):
 * catalog_stale_owe, one synced batch.
 */
static int s_owe(coord_t *coord, const s_write_t *w, const catalog_coll_t *c,
                 const uint32_t *lists, const uint32_t *skip, const uint32_t *ml,
                 const uint32_t *mr, size_t nm, shoal_err_t *err)
{
    /* The phase's id positions grouped by list (a counting sort), then per
       replica the ids of its list that its shard was written (or due). A list
       appears at most R times among the replicas: R x n ids at most. */
    size_t *start = calloc((size_t)c->nlist + 1, sizeof *start);
    size_t *by_list = malloc((w->n ? w->n : 1) * sizeof *by_list);
    uint64_t *ids = malloc((w->n ? w->n : 1) * c->replication * sizeof *ids);
    catalog_owed_t *owed = malloc((nm ? nm : 1) * sizeof *owed);
    int rc = 0;
    if (!start || !by_list || !ids || !owed) {
        rc = shoal_err_set(err, SHOAL_ENOMEM, "out of memory recording missed writes");
        goto done;
    }
    for (size_t i = 0; i < w->n; i++)
        if (lists[i] < c->nlist)
            start[lists[i] + 1]++;
    for (uint32_t l = 0; l < c->nlist; l++)
        start[l + 1] += start[l];
    for (size_t i = 0; i < w->n; i++) /* start[l] moves to the end of bucket l ... */
        if (lists[i] < c->nlist)
            by_list[start[lists[i]]++] = i;
    for (uint32_t l = c->nlist; l > 0; l--) /* ... and back: bucket l is [start[l], start[l+1]) */
        start[l] = start[l - 1];
    start[0] = 0;
    size_t used = 0;
    for (size_t k = 0; k < nm; k++) {
        uint32_t sh = catalog_owner(c, ml[k], mr[k]);
        owed[k] = (catalog_owed_t){.list = ml[k], .replica = mr[k], .ids = ids + used, .n = 0};
        for (size_t b = start[ml[k]]; b < start[ml[k] + 1]; b++) {
            size_t i = by_list[b];
            if (!skip || !s_holds(c, skip[i], sh) || (w->ok1 && !w->ok1[sh]))
                ids[used + owed[k].n++] = w->ids[i];
        }
        used += owed[k].n;
    }
    rc = catalog_stale_owe(coord->cat, c->name, owed, nm, NULL, err);
done:
    free(start);
    free(by_list);
    free(ids);
    free(owed);
    return rc;
}

/*
 * The end of a phase that wrote the replicas flagged in w->inv. Per list:
 * ok = its flagged replicas that are up to date (not stale) and whose shard
 * answered with success. The list holds when ok >= need (W for the vectors
 * of a write the client waits on; 0 for stale-copy deletes) and at least one
 * of its replicas stays up to date once those that failed are marked. When
 * every list holds, the failed replicas are marked stale in one synced batch
 * (before the client hears of success), owing the ids of this phase in their
 * list (lists[i]: the list w->ids[i] was written to, CATALOG_LIST_NONE: not
 * in this phase), so a repair can catch them up on just those; their shards
 * are fenced: 0.
 * Otherwise nothing is marked and -1 names the first list in err: the write
 * is not acknowledged (or its intent stays for the re-drive). Either way
 * each shard that failed has its epoch moved (a rebuild for it restarts).
 */
static int s_settle(coord_t *coord, s_write_t *w, const catalog_coll_t *c, uint32_t need,
                    const uint32_t *lists, const uint32_t *skip, shoal_err_t *err)
{
    uint32_t R = c->replication;
    size_t cap = w->ninv;
    uint32_t *ml = malloc((cap ? cap : 1) * sizeof *ml);
    uint32_t *mr = malloc((cap ? cap : 1) * sizeof *mr);
    if (!ml || !mr) {
        free(ml);
        free(mr);
        return shoal_err_set(err, SHOAL_ENOMEM, "out of memory settling replicas");
    }
    size_t nm = 0;
    int rc = 0;
    for (uint32_t l = 0; w->inv && l < c->nlist; l++) {
        const uint8_t *inv = w->inv + (size_t)l * R;
        uint32_t any = 0, ok = 0, left = 0;
        for (uint32_t r = 0; r < R; r++) {
            uint32_t s = catalog_owner(c, l, r);
            int stale = c->stale[(size_t)l * R + r], failed = inv[r] && !w->ok[s];
            any |= inv[r];
            ok += inv[r] && !stale && w->ok[s];
            left += !stale && !failed;
        }
        if (!any)
            continue;
        if (ok < need || left == 0) {
            if (rc == 0)
                rc = shoal_err_set(err, SHOAL_EUNAVAIL,
                                   "list %u of \"%s\": %u of its up-to-date replicas answered, "
                                   "%u needed",
                                   l, c->name, ok, need ? need : 1);
            continue;
        }
        /* Failed replicas owe these ids; one already catching up owes them too, one
           to be rebuilt whole needs nothing more. */
        for (uint32_t r = 0; r < R; r++) {
            if (inv[r] && !w->ok[catalog_owner(c, l, r)] &&
                c->stale[(size_t)l * R + r] != CATALOG_STALE_REBUILD) {
                ml[nm] = l;
                mr[nm++] = r;
            }
        }
    }
    if (rc == 0 && nm && s_owe(coord, w, c, lists, skip, ml, mr, nm, err) != 0)
        rc = -1;
    /* Shards that failed: epochs move; fenced where the replica is (now) stale. */
    for (size_t j = 0; w->inv && j < w->ninv; j++) {
        uint32_t s = c->owners[j];
        if (w->inv[j] && (s >= w->nshards || !w->ok[s]))
            coord_shard_missed(coord, s, c->stale[j] != 0);
    }
    /* Extra copies that missed it: their moves stop, orphans go stale. c may be
       changed by that (its pointer stays valid: no collection is created). */
    if (rc == 0)
        for (size_t i = 0; i < w->nx; i++)
            if (w->xs[i] >= w->nshards || !w->ok[w->xs[i]])
                coord_extra_missed(coord, c, w->xl[i], w->xs[i]);
    if (rc == 0 && nm)
        log_debug("\"%s\": %zu replica list(s) missed a write and are marked stale", c->name,
                  nm);
    free(ml);
    free(mr);
    return rc ? -1 : 0;
}

/* Fails the job with the phase's first failure; 1 when there was one. */
static int s_phase_failed(coord_t *coord, coord_job_t *job)
{
    s_write_t *w = job->state;
    if (!w->fail_code)
        return 0;
    coord_fail(coord, &job, w->fail_code, "%s", w->fail_msg);
    return 1;
}

/* Answers the job's client with success, count, and info (may be NULL; destroyed). */
static void s_reply_ok(coord_t *coord, coord_job_t *job, uint64_t count, wire_info_t *info)
{
    wire_reply_t rep;
    wire_reply_init(&rep);
    rep.op = job->req.op;
    rep.rid = job->req.rid;
    rep.count = count;
    if (info && !wire_info_failed(info)) {
        rep.info = wire_info_data(info);
        rep.info_len = wire_info_len(info);
    }
    coord_reply(coord, &job, &rep);
    wire_reply_fini(&rep);
    wire_info_destroy(&info);
}

/* ------------------------------------------------------------------------ */
/* create_collection                                                        */
/* ------------------------------------------------------------------------ */

static void s_create_done(coord_t *coord, coord_job_t *job)
{
    s_write_t *w = job->state;
    if (w->fail_code) {
        /* Roll back: the catalog, and the shards that created it. */
        shoal_err_t err;
        shoal_err_clear(&err);
        if (catalog_drop(coord->cat, w->coll, &err) != 0)
            log_error("create_collection \"%s\": rollback: %s", w->coll, err.msg);
        for (size_t s = 0; s < w->nshards; s++) {
            if (!w->ok[s])
                continue;
            wire_request_t req;
            coord_request_init(&req, WIRE_OP_DROP_COLLECTION, w->coll);
            (void)coord_send(coord, NULL, s, 0, &req); /* answer ignored */
        }
        coord_fail(coord, &job, w->fail_code, "%s", w->fail_msg);
        return;
    }
    const catalog_coll_t *c = catalog_find(coord->cat, w->coll);
    wire_info_t *info = wire_info_new();
    if (c && info) {
        wire_info_map(info, 9);
        wire_info_key(info, "storage");
        wire_info_str(info, quant_kind_name(c->storage));
        wire_info_key(info, "replication");
        wire_info_u64(info, c->replication);
        wire_info_key(info, "write_quorum");
        wire_info_u64(info, c->write_quorum);
        wire_info_key(info, "dim");
        wire_info_u64(info, c->dim);
        wire_info_key(info, "metric");
        wire_info_str(info, shoal_metric_name(c->metric));
        wire_info_key(info, "nlist");
        wire_info_u64(info, c->nlist);
        wire_info_key(info, "nprobe");
        wire_info_u64(info, c->nprobe);
        wire_info_key(info, "M");
        wire_info_u64(info, c->M);
        wire_info_key(info, "ef_construction");
        wire_info_u64(info, c->ef_construction);
    }
    log_info("created collection \"%s\" (dim %u, nlist %u)", w->coll, c ? c->dim : 0,
             c ? c->nlist : 0);
    s_reply_ok(coord, job, 0, info);
}

/* The shards' create_collection for collection c. */
static void s_create_sub(wire_request_t *sub, const catalog_coll_t *c)
{
    coord_request_init(sub, WIRE_OP_CREATE_COLLECTION, c->name);
    sub->dim = c->dim;
    sub->metric = c->metric;
    sub->M = c->M;
    sub->ef_construction = c->ef_construction;
    sub->storage = WIRE_STORAGE_GIVEN | (uint32_t)c->storage;
}

void coord_op_create(coord_t *coord, coord_job_t *job)
{
    const wire_request_t *req = &job->req;
    shoal_err_t err;
    shoal_err_clear(&err);
    if (req->dim == 0 || req->dim > coord->limits.max_dim) {
        coord_fail(coord, &job, req->dim ? SHOAL_ELIMIT : SHOAL_EINVAL,
                   "create_collection: \"dim\" must be 1..%zu, got %u", coord->limits.max_dim,
                   req->dim);
        return;
    }
    uint32_t nlist = req->nlist ? req->nlist : coord->opts.nlist_default;
    if (nlist > coord->limits.max_batch) {
        coord_fail(coord, &job, SHOAL_EINVAL,
                   "create_collection: \"nlist\" must be 1..%zu (a training sample holds at most "
                   "--max-batch vectors), got %u",
                   coord->limits.max_batch, nlist);
        return;
    }
    uint32_t nprobe = req->nprobe ? req->nprobe : coord->opts.nprobe_default;
    if (req->nprobe > nlist) {
        coord_fail(coord, &job, SHOAL_EINVAL,
                   "create_collection: \"nprobe\" must be 1..nlist = %u, got %u", nlist,
                   req->nprobe);
        return;
    }
    if (nprobe > nlist)
        nprobe = nlist;
    if (catalog_find(coord->cat, req->coll)) {
        coord_fail(coord, &job, SHOAL_EEXIST, "collection \"%s\" already exists", req->coll);
        return;
    }
    if (s_check_down(coord, "create_collection", &err) != 0) {
        coord_fail(coord, &job, err.code, "%s", err.msg);
        return;
    }
    catalog_coll_t params;
    memset(&params, 0, sizeof params);
    snprintf(params.name, sizeof params.name, "%s", req->coll);
    params.dim = req->dim;
    params.metric = req->metric;
    params.nlist = nlist;
    params.nprobe = nprobe;
    params.replication = req->replication ? req->replication : coord->opts.replication_default;
    params.storage = (quant_kind_t)(req->storage & ~WIRE_STORAGE_GIVEN);
    params.write_quorum = req->write_quorum ? req->write_quorum : coord->opts.write_quorum_default;
    if (!params.replication)
        params.replication = 1;
    if (!req->write_quorum && params.write_quorum > params.replication)
        params.write_quorum = params.replication; /* the default, capped */
    if (!params.write_quorum)
        params.write_quorum = 1;
    params.target_recall = req->target_recall;
    /*
     * The coordinator fills in the shards' build defaults itself and sends
     * them, so every shard (and one re-created later) builds the collection
     * alike and the catalog holds the parameters in effect, which the reply
     * and stats report (docs/protocol.md 5.2, 11.2).
     */
    params.M = req->M ? req->M : HNSW_M_DEFAULT;
    params.ef_construction =
        req->ef_construction ? req->ef_construction : HNSW_EF_CONSTRUCTION_DEFAULT;
    s_write_t *w = s_state_new(coord, job);
    if (!w) {
        coord_fail(coord, &job, SHOAL_ENOMEM, "create_collection: out of memory");
        return;
    }
    if (catalog_create(coord->cat, &params, &err) != 0) {
        coord_fail(coord, &job, err.code, "%s", err.msg);
        return;
    }
    w->accept = SHOAL_EEXIST;
    w->next = s_create_done;
    wire_request_t sub;
    s_create_sub(&sub, &params);
    s_fan_out(coord, job, &sub, 0);
}

void coord_ensure_collections(coord_t *coord, size_t s)
{
    size_t n = catalog_coll_count(coord->cat);
    for (size_t i = 0; i < n; i++) {
        const catalog_coll_t *c = catalog_coll_at(coord->cat, i);
        wire_request_t req;
        s_create_sub(&req, c);
        (void)coord_send(coord, NULL, s, 0, &req); /* EEXIST expected; answer ignored */
    }
}

static void s_shard_back_ensure(coord_t *coord, size_t s, int was_down)
{
    (void)was_down;
    coord_ensure_collections(coord, s);
}

void coord_write_init(coord_t *coord)
{
    coord_on_shard_back(coord, s_shard_back_ensure);
}

/* ------------------------------------------------------------------------ */
/* drop_collection                                                          */
/* ------------------------------------------------------------------------ */

static void s_redrive_forget_coll(coord_t *coord, const char *coll);

static void s_drop_done(coord_t *coord, coord_job_t *job)
{
    s_write_t *w = job->state;
    if (s_phase_failed(coord, job))
        return;
    shoal_err_t err;
    shoal_err_clear(&err);
    coord_router_forget(coord, w->coll);
    s_redrive_forget_coll(coord, w->coll);
    if (catalog_drop(coord->cat, w->coll, &err) != 0) {
        coord_fail(coord, &job, err.code, "drop_collection: %s", err.msg);
        return;
    }
    log_info("dropped collection \"%s\"", w->coll);
    s_reply_ok(coord, job, 0, NULL);
}

void coord_op_drop(coord_t *coord, coord_job_t *job)
{
    shoal_err_t err;
    shoal_err_clear(&err);
    if (!coord_coll(coord, job->req.coll, &err) ||
        s_check_down(coord, "drop_collection", &err) != 0) {
        coord_fail(coord, &job, err.code, "%s", err.msg);
        return;
    }
    s_write_t *w = s_state_new(coord, job);
    if (!w) {
        coord_fail(coord, &job, SHOAL_ENOMEM, "drop_collection: out of memory");
        return;
    }
    w->accept = SHOAL_ENOTFOUND;
    w->next = s_drop_done;
    wire_request_t sub;
    coord_request_init(&sub, WIRE_OP_DROP_COLLECTION, w->coll);
    s_fan_out(coord, job, &sub, 0);
}

/* ------------------------------------------------------------------------ */
/* train                                                                    */
/* ------------------------------------------------------------------------ */

/* Stores a finished training run; 0, or the error (err says why). */
static int s_train_store(coord_t *coord, const char *name, coord_train_t *t, shoal_err_t *err)
{
    if (t->rc != 0) {
        *err = t->err;
        if (!err->code)
            err->code = t->rc;
        return t->rc;
    }
    coord_router_forget(coord, name);
    int rc = catalog_set_trained_sq8(coord->cat, name, t->centroids, t->owners, t->sq8_rec,
                                     t->sq8_len, err);
    if (rc != 0)
        return rc;
    log_info("trained collection \"%s\": nlist %zu, %zu iterations, objective %g, %zu empty "
             "splits, imbalance %.3f, %.2f shards/query at nprobe %zu, %.0f ms",
             name, t->nlist, t->result.iters, t->result.objective, t->result.empty_splits,
             t->report.imbalance, t->report.locality[PLACEMENT_SCORE_NPROBES - 1],
             t->report.locality_nprobe[PLACEMENT_SCORE_NPROBES - 1], t->train_ms);
    return 0;
}

static wire_info_t *s_train_info(const coord_train_t *t)
{
    wire_info_t *info = wire_info_new();
    if (!info)
        return NULL;
    wire_info_map(info, 8);
    wire_info_key(info, "nlist");
    wire_info_u64(info, t->nlist);
    wire_info_key(info, "n");
    wire_info_u64(info, t->n);
    wire_info_key(info, "iters");
    wire_info_u64(info, t->result.iters);
    wire_info_key(info, "objective");
    wire_info_f64(info, t->result.objective);
    wire_info_key(info, "empty_splits");
    wire_info_u64(info, t->result.empty_splits);
    wire_info_key(info, "train_ms");
    wire_info_f64(info, t->train_ms);
    wire_info_key(info, "imbalance");
    wire_info_f64(info, t->report.imbalance);
    wire_info_key(info, "locality");
    wire_info_map(info, PLACEMENT_SCORE_NPROBES);
    for (size_t i = 0; i < PLACEMENT_SCORE_NPROBES; i++) {
        char key[32];
        snprintf(key, sizeof key, "nprobe_%zu", t->report.locality_nprobe[i]);
        wire_info_key(info, key);
        wire_info_f64(info, t->report.locality[i]);
    }
    return info;
}

static void s_train_done(coord_t *coord, coord_job_t *job)
{
    coord_train_t *t = coord->train_done;
    shoal_err_t err;
    shoal_err_clear(&err);
    if (s_train_store(coord, job->req.coll, t, &err) != 0) {
        coord_fail(coord, &job, err.code, "train: collection \"%s\": %s", job->req.coll, err.msg);
        return;
    }
    s_reply_ok(coord, job, 0, s_train_info(t));
}

void coord_op_train(coord_t *coord, coord_job_t *job)
{
    const wire_request_t *req = &job->req;
    shoal_err_t err;
    shoal_err_clear(&err);
    const catalog_coll_t *c = coord_coll(coord, req->coll, &err);
    int rc = c ? 0 : err.code;
    if (rc == 0 && c->trained)
        rc = shoal_err_set(&err, SHOAL_EEXIST,
                           "train: collection \"%s\" is already trained (its ids are placed by "
                           "those centroids)",
                           req->coll);
    if (rc == 0 && req->dim != c->dim)
        rc = shoal_err_set(&err, SHOAL_EDIM, "collection \"%s\": expected dim %u, got %u",
                           req->coll, c->dim, req->dim);
    if (rc == 0 && req->n < c->nlist)
        rc = shoal_err_set(&err, SHOAL_EINVAL,
                           "train: collection \"%s\" has nlist %u: the sample needs at least "
                           "that many vectors, got %" PRIu64,
                           req->coll, c->nlist, req->n);
    if (rc == 0 && req->max_iters > KMEANS_MAX_ITERS_MAX)
        rc = shoal_err_set(&err, SHOAL_EINVAL, "train: \"max_iters\" must be 0..%d, got %u",
                           KMEANS_MAX_ITERS_MAX, req->max_iters);
    if (rc == 0 && req->init > 1)
        rc =
            shoal_err_set(&err, SHOAL_EINVAL,
                          "train: \"init\" must be 0 (k-means++) or 1 (random), got %u", req->init);
    if (rc == 0)
        rc = coord_check_vectors("train", c, req->vecs, (size_t)req->n, NULL, &err);
    if (rc == 0) {
        job->on_train = s_train_done;
        rc = coord_train_start(coord, job, c, req->vecs, (size_t)req->n, req->init, req->max_iters,
                               req->seed, &err);
    }
    if (rc != 0)
        coord_fail(coord, &job, err.code, "%s", err.msg);
}

/* ------------------------------------------------------------------------ */
/* insert                                                                   */
/* ------------------------------------------------------------------------ */

static const uint64_t *s_sort_ids; /* qsort's context (loop thread only) */

static int s_cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return (x > y) - (x < y);
}

static int s_cmp_pos_by_id(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    uint64_t ix = s_sort_ids[x], iy = s_sort_ids[y];
    if (ix != iy)
        return ix < iy ? -1 : 1;
    return (x > y) - (x < y);
}

/*
 * The positions to keep of n ids: one per distinct id, its last occurrence
 * (as on the shards), in ascending position order. *kept gets the count.
 */
static size_t *s_last_occurrences(const uint64_t *ids, size_t n, size_t *kept)
{
    size_t *pos = malloc(n * sizeof *pos);
    if (!pos)
        return NULL;
    for (size_t i = 0; i < n; i++)
        pos[i] = i;
    s_sort_ids = ids;
    qsort(pos, n, sizeof *pos, s_cmp_pos_by_id);
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (i + 1 == n || ids[pos[i + 1]] != ids[pos[i]])
            pos[m++] = pos[i];
    qsort(pos, m, sizeof *pos, s_cmp_size); /* back to position order */
    *kept = m;
    return pos;
}

/* Phase 2 done: stale copies deleted (or not), the intent cleared if they were. */
static void s_insert_cleaned(coord_t *coord, coord_job_t *job)
{
    s_write_t *w = job->state;
    shoal_err_t err;
    shoal_err_clear(&err);
    const catalog_coll_t *c = catalog_find(coord->cat, w->coll);
    uint32_t *moved = malloc((w->n ? w->n : 1) * sizeof *moved);
    for (size_t i = 0; moved && i < w->n; i++)
        moved[i] = w->old_lists[i] != w->new_lists[i] ? w->old_lists[i] : CATALOG_LIST_NONE;
    int failed = (w->fail_code && w->fail_shard >= coord->nshards) || !c || !moved ||
                 s_settle(coord, w, c, 0, moved, w->new_lists, &err) != 0;
    free(moved);
    if (failed) {
        log_warn("insert into \"%s\": stale copies not deleted yet (%s); intent %" PRIu64
                 " stays and is re-driven",
                 w->coll, w->fail_code ? w->fail_msg : err.msg, w->txn);
        coord_redrive_schedule(coord);
    } else if (catalog_intent_clear(coord->cat, w->coll, w->txn, &err) != 0) {
        log_warn("insert into \"%s\": clearing intent %" PRIu64 ": %s", w->coll, w->txn, err.msg);
    }
    s_reply_ok(coord, job, job->req.n, NULL);
}

/* Phase 1 done: every shard stored its sub-batch, or one failed. */
static void s_insert_stored(coord_t *coord, coord_job_t *job)
{
    s_write_t *w = job->state;
    shoal_err_t err;
    shoal_err_clear(&err);
    const catalog_coll_t *c = catalog_find(coord->cat, w->coll);
    if (!c || s_settle(coord, w, c, c->write_quorum, w->new_lists, NULL, &err) != 0) {
        coord_redrive_schedule(coord); /* removes what the shards that did answer stored */
        if (w->fail_code)
            coord_fail(coord, &job, w->fail_code, "%s; nothing was acknowledged", w->fail_msg);
        else
            coord_fail(coord, &job, c ? err.code : SHOAL_ENOTFOUND,
                       "insert: %s; nothing was acknowledged",
                       c ? err.msg : "the collection was dropped");
        return;
    }
    if (catalog_apply_insert(coord->cat, w->coll, w->ids, w->old_lists, w->new_lists, w->n, &err) !=
        0) {
        coord_redrive_schedule(coord);
        coord_fail(coord, &job, err.code, "insert: updating the id map: %s", err.msg);
        return;
    }
    w->ok1 = malloc(w->nshards * sizeof *w->ok1);
    if (w->ok1)
        memcpy(w->ok1, w->ok, w->nshards * sizeof *w->ok1);
    s_batches_free(w, w->nshards);
    s_phase_reset(coord, w);
    /* Stale copies: the id left its old list for another; the old list's
       replicas that do not hold the new one lose it (s_replicas_add: nor does one
       that holds it but failed to store it, which still has the old copy). */
    for (size_t i = 0; i < w->n; i++) {
        uint32_t ol = w->old_lists[i], nl = w->new_lists[i];
        if (ol >= c->nlist || ol == nl)
            continue;
        if (s_replicas_add(coord, w, c, w->ids[i], NULL, ol, nl, w->n) != 0) {
            s_record_fail(w, SIZE_MAX, SHOAL_ENOMEM, "out of memory");
            break;
        }
    }
    w->accept = SHOAL_ENOTFOUND; /* a shard without the collection holds no stale copy */
    s_send_batches(coord, job, WIRE_OP_DELETE, 0, s_insert_cleaned);
}

static void s_insert_routed(coord_t *coord, coord_job_t *job, int rc, const shoal_err_t *err);

/*
 * The collection is trained: route (a big batch on the routing thread, which
 * calls s_insert_routed when it is back), record the intent, send the
 * sub-batches. The insert's scope holds its ids meanwhile, and no train or
 * drop (scope: the collection) can run under it, so the lists stay valid.
 */
static void s_insert_route(coord_t *coord, coord_job_t *job)
{
    const wire_request_t *req = &job->req;
    s_write_t *w = job->state;
    shoal_err_t err;
    shoal_err_clear(&err);
    const catalog_coll_t *c = coord_coll(coord, w->coll, &err);
    if (!c) {
        coord_fail(coord, &job, err.code, "%s", err.msg);
        return;
    }
    size_t dim = c->dim, kept = 0;
    size_t *pos = s_last_occurrences(req->ids, (size_t)req->n, &kept);
    w->n = kept;
    w->ids = malloc((kept ? kept : 1) * sizeof *w->ids);
    w->vecs = malloc((kept ? kept : 1) * dim * sizeof *w->vecs);
    w->old_lists = malloc((kept ? kept : 1) * sizeof *w->old_lists);
    w->new_lists = malloc((kept ? kept : 1) * sizeof *w->new_lists);
    int rc = 0;
    if (!pos || !w->ids || !w->vecs || !w->old_lists || !w->new_lists || s_inv_init(w, c) != 0)
        rc = shoal_err_set(&err, SHOAL_ENOMEM, "insert: out of memory for %zu vectors", kept);
    for (size_t i = 0; rc == 0 && i < kept; i++) {
        w->ids[i] = req->ids[pos[i]];
        memcpy(w->vecs + i * dim, req->vecs + pos[i] * dim, dim * sizeof(float));
    }
    free(pos);
    if (rc == 0 && coord_route_is_big(coord, c, kept)) {
        job->deadline_us = 0; /* nothing may end it before the routing thread is back */
        rc = coord_route_submit(coord, job, c, w->vecs, kept, 1, w->new_lists, s_insert_routed,
                                &err);
        if (rc != 0)
            coord_fail(coord, &job, err.code, "insert: %s", err.msg);
        return;
    }
    if (rc == 0)
        rc = coord_route(coord, c, w->vecs, kept, 1, w->new_lists, &err);
    if (rc != 0) {
        coord_fail(coord, &job, err.code, "%s", err.msg);
        return;
    }
    s_insert_routed(coord, job, 0, &err);
}

/* w->new_lists are set (rc 0): the old lists, the quorum checks, the intent, the sends. */
static void s_insert_routed(coord_t *coord, coord_job_t *job, int rc, const shoal_err_t *rerr)
{
    s_write_t *w = job->state;
    shoal_err_t err;
    shoal_err_clear(&err);
    if (rc != 0) {
        coord_fail(coord, &job, rc, "insert: %s", rerr->msg);
        return;
    }
    const catalog_coll_t *c = coord_coll(coord, w->coll, &err);
    if (!c) {
        coord_fail(coord, &job, err.code, "%s", err.msg);
        return;
    }
    size_t dim = c->dim, kept = w->n;
    rc = catalog_lookup(coord->cat, w->coll, w->ids, kept, w->old_lists, &err);
    /* Refused before anything is written: a new list without W up-to-date live
       replicas, or an old list (of an id that moves) without one to lose it. */
    for (size_t i = 0; rc == 0 && i < kept; i++) {
        uint32_t ol = w->old_lists[i], nl = w->new_lists[i];
        rc = s_check_quorum(coord, c, nl, c->write_quorum, "insert", &err);
        if (rc == 0 && ol < c->nlist && ol != nl)
            rc = s_check_quorum(coord, c, ol, 1, "insert", &err);
    }
    /* Per-shard sub-batches: every live replica of each id's new list. */
    for (size_t i = 0; rc == 0 && i < kept; i++)
        if (s_replicas_add(coord, w, c, w->ids[i], w->vecs + i * dim, w->new_lists[i],
                           CATALOG_LIST_NONE, kept) != 0)
            rc = shoal_err_set(&err, SHOAL_ENOMEM, "insert: out of memory");
    if (rc == 0)
        rc = catalog_intent_put(coord->cat, w->coll, w->ids, w->old_lists, w->new_lists, kept,
                                &w->txn, &err);
    if (rc == 0)
        w->has_txn = 1;
    if (rc != 0) {
        coord_fail(coord, &job, err.code, "%s", err.msg);
        return;
    }
    s_send_batches(coord, job, WIRE_OP_INSERT, (uint32_t)dim, s_insert_stored);
}

/* Training on the first batch finished. */
static void s_insert_trained(coord_t *coord, coord_job_t *job)
{
    shoal_err_t err;
    shoal_err_clear(&err);
    if (s_train_store(coord, job->req.coll, coord->train_done, &err) != 0) {
        coord_fail(coord, &job, err.code, "insert: training collection \"%s\" on this batch: %s",
                   job->req.coll, err.msg);
        return;
    }
    s_insert_route(coord, job);
}

void coord_op_insert(coord_t *coord, coord_job_t *job)
{
    const wire_request_t *req = &job->req;
    shoal_err_t err;
    shoal_err_clear(&err);
    const catalog_coll_t *c = coord_coll(coord, req->coll, &err);
    int rc = c ? 0 : err.code;
    if (rc == 0 && req->dim != c->dim)
        rc = shoal_err_set(&err, SHOAL_EDIM, "collection \"%s\": expected dim %u, got %u",
                           req->coll, c->dim, req->dim);
    for (size_t i = 0; rc == 0 && i < req->n; i++)
        if (req->ids[i] == TOPK_ID_NONE)
            rc = shoal_err_set(&err, SHOAL_EINVAL,
                               "insert: id %" PRIu64 " at row %zu is reserved (it marks \"no "
                               "result\")",
                               req->ids[i], i);
    if (rc == 0)
        rc = coord_check_vectors("insert", c, req->vecs, (size_t)req->n, req->ids, &err);
    if (rc == 0 && !c->trained && req->n < c->nlist)
        rc = shoal_err_set(&err, SHOAL_EINVAL,
                           "insert: collection \"%s\" is not trained: send train first, or "
                           "insert at least nlist = %u vectors in one batch (they train it)",
                           req->coll, c->nlist);
    if (rc == 0 && !s_state_new(coord, job))
        rc = shoal_err_set(&err, SHOAL_ENOMEM, "insert: out of memory");
    if (rc != 0) {
        coord_fail(coord, &job, err.code, "%s", err.msg);
        return;
    }
    if (c->trained) {
        s_insert_route(coord, job);
        return;
    }
    log_info("collection \"%s\" is not trained: training on the first %" PRIu64 " vectors inserted",
             req->coll, req->n);
    job->on_train = s_insert_trained;
    if (coord_train_start(coord, job, c, req->vecs, (size_t)req->n, 0, 0, 0, &err) != 0)
        coord_fail(coord, &job, err.code, "%s", err.msg);
}

/* ------------------------------------------------------------------------ */
/* delete                                                                   */
/* ------------------------------------------------------------------------ */

/* The shards answered (or one failed): the intent cleared, or kept for the re-drive. */
static void s_delete_done(coord_t *coord, coord_job_t *job)
{
    s_write_t *w = job->state;
    shoal_err_t err;
    shoal_err_clear(&err);
    const catalog_coll_t *c = catalog_find(coord->cat, w->coll);
    /* Replicas that missed it are marked stale when W others have it (s_settle). */
    if (w->fail_code && w->fail_shard < coord->nshards && c && c->trained &&
        s_settle(coord, w, c, c->write_quorum, w->old_lists, NULL, &err) == 0)
        w->fail_code = 0;
    else if (!w->fail_code && c && c->trained &&
             s_settle(coord, w, c, c->write_quorum, w->old_lists, NULL, &err) != 0)
        s_record_fail(w, SIZE_MAX, err.code, "delete: %s", err.msg);
    if (w->fail_code) {
        /* Rolled forward: the map already forgot the ids; the re-drive deletes the copies. */
        coord_redrive_schedule(coord);
        const char *where =
            w->fail_shard < coord->nshards ? coord->shards[w->fail_shard].endpoint : "it";
        coord_fail(coord, &job, w->fail_code,
                   "%s; the %" PRIu64 " ids are deleted from the id map and the delete completes "
                   "when shard %s is back (intent %" PRIu64 ")",
                   w->fail_msg, w->count, where, w->txn);
        return;
    }
    if (w->has_txn && catalog_intent_clear(coord->cat, w->coll, w->txn, &err) != 0)
        log_warn("delete from \"%s\": clearing intent %" PRIu64 ": %s (the re-drive clears it)",
                 w->coll, w->txn, err.msg);
    s_reply_ok(coord, job, w->count, NULL);
}

/*
 * Records the intent of a delete (the ids the map has, new list NONE), then
 * removes them from the map: see the file comment for why in this order. A
 * crash between the two leaves an intent whose ids the map still names on
 * their owners, which the re-drive clears without deleting anything.
 */
static int s_delete_commit(coord_t *coord, s_write_t *w, shoal_err_t *err)
{
    if (w->count == 0)
        return 0; /* none of the ids is stored: nothing to send, nothing to record */
    uint64_t *ids = malloc(w->count * sizeof *ids);
    uint32_t *old = malloc(w->count * sizeof *old);
    uint32_t *none = malloc(w->count * sizeof *none);
    int rc = ids && old && none ? 0 : shoal_err_set(err, SHOAL_ENOMEM, "delete: out of memory");
    size_t m = 0;
    for (size_t i = 0; rc == 0 && i < w->n; i++) {
        if (w->old_lists[i] == CATALOG_LIST_NONE)
            continue;
        ids[m] = w->ids[i];
        old[m] = w->old_lists[i];
        none[m++] = CATALOG_LIST_NONE;
    }
    if (rc == 0)
        rc = catalog_intent_put(coord->cat, w->coll, ids, old, none, m, &w->txn, err);
    if (rc == 0) {
        w->has_txn = 1;
        rc = catalog_apply_delete(coord->cat, w->coll, ids, old, m, err);
        if (rc != 0) {
            shoal_err_prefix(err, "delete: updating the id map");
            coord_redrive_schedule(coord); /* clears the intent: nothing was sent */
        }
    }
    free(ids);
    free(old);
    free(none);
    return rc;
}

void coord_op_delete(coord_t *coord, coord_job_t *job)
{
    const wire_request_t *req = &job->req;
    shoal_err_t err;
    shoal_err_clear(&err);
    const catalog_coll_t *c = coord_coll(coord, req->coll, &err);
    s_write_t *w = c ? s_state_new(coord, job) : NULL;
    int rc = !c ? err.code : !w ? shoal_err_set(&err, SHOAL_ENOMEM, "delete: out of memory") : 0;
    size_t n = (size_t)req->n;
    if (rc == 0) {
        w->ids = malloc((n ? n : 1) * sizeof *w->ids);
        w->old_lists = malloc((n ? n : 1) * sizeof *w->old_lists);
        if (!w->ids || !w->old_lists || (c->trained && s_inv_init(w, c) != 0))
            rc = shoal_err_set(&err, SHOAL_ENOMEM, "delete: out of memory for %zu ids", n);
    }
    if (rc == 0) {
        /* The write's scope holds the same ids sorted and unique, unless
         * it fell back to the whole collection (no memory then). */
        size_t m;
        if (job->scope.kind == COORD_SCOPE_IDS) {
            m = job->scope.nids;
            memcpy(w->ids, job->scope.ids, m * sizeof *w->ids);
        } else {
            memcpy(w->ids, req->ids, n * sizeof *w->ids);
            m = coord_ids_sort_unique(w->ids, n);
        }
        w->n = m;
        if (c->trained)
            rc = catalog_lookup(coord->cat, w->coll, w->ids, m, w->old_lists, &err);
        else
            for (size_t i = 0; i < m; i++)
                w->old_lists[i] = CATALOG_LIST_NONE;
    }
    for (size_t i = 0; rc == 0 && i < w->n; i++) {
        uint32_t l = w->old_lists[i];
        if (l == CATALOG_LIST_NONE || l >= c->nlist) {
            w->old_lists[i] = CATALOG_LIST_NONE;
            continue;
        }
        rc = s_check_quorum(coord, c, l, c->write_quorum, "delete", &err);
        if (rc == 0 && s_replicas_add(coord, w, c, w->ids[i], NULL, l, CATALOG_LIST_NONE, w->n) != 0)
            rc = shoal_err_set(&err, SHOAL_ENOMEM, "delete: out of memory");
        w->count++;
    }
    if (rc == 0)
        rc = s_delete_commit(coord, w, &err);
    if (rc != 0) {
        coord_fail(coord, &job, err.code, "%s", err.msg);
        return;
    }
    w->accept = SHOAL_ENOTFOUND; /* a shard without the collection holds none of the ids */
    s_send_batches(coord, job, WIRE_OP_DELETE, 0, s_delete_done);
}

/* ------------------------------------------------------------------------ */
/* checkpoint                                                               */
/* ------------------------------------------------------------------------ */

static void s_checkpoint_done(coord_t *coord, coord_job_t *job)
{
    if (!s_phase_failed(coord, job))
        s_reply_ok(coord, job, 0, NULL);
}

void coord_op_checkpoint(coord_t *coord, coord_job_t *job)
{
    shoal_err_t err;
    shoal_err_clear(&err);
    if (job->req.coll[0] && !coord_coll(coord, job->req.coll, &err)) {
        coord_fail(coord, &job, err.code, "%s", err.msg);
        return;
    }
    if (s_check_down(coord, "checkpoint", &err) != 0) {
        coord_fail(coord, &job, err.code, "%s", err.msg);
        return;
    }
    s_write_t *w = s_state_new(coord, job);
    if (!w) {
        coord_fail(coord, &job, SHOAL_ENOMEM, "checkpoint: out of memory");
        return;
    }
    w->next = s_checkpoint_done;
    wire_request_t sub;
    coord_request_init(&sub, WIRE_OP_CHECKPOINT, job->req.coll);
    s_fan_out(coord, job, &sub, 0);
}

/* ------------------------------------------------------------------------ */
/* Re-driving intents                                                       */
/* ------------------------------------------------------------------------ */

/*
 * Intents are re-driven one at a time: an intent holds at most one insert
 * batch of ids, so its deletes fit a shard's batch limit, where the deletes of
 * many intents together might not (and would then fail every time).
 *
 * When: at start-up, when a shard comes back up, after a write that left its
 * intent behind, after a write ends that held the ids of an intent skipped
 * for it, and every S_REDRIVE_RETRY_MS (coord.c) while some intent waits. A
 * pass never spins: an intent whose shard is down is noted (redrive_waits)
 * and skipped without a request, and only state changes are logged.
 */
static void s_redrive_next(coord_t *coord, coord_job_t *job);

/* "insert" or "delete": what the interrupted write was (a delete's new lists are NONE). */
static const char *s_intent_kind(const catalog_intent_t *in)
{
    return in->n && in->new_lists[0] == CATALOG_LIST_NONE ? "delete" : "insert";
}

/* The redrive_waits key of intent txn of coll. */
static void s_wait_key(char *buf, size_t cap, const char *coll, uint64_t txn)
{
    snprintf(buf, cap, "%s\x1f%" PRIx64, coll, txn);
}

/* One fewer intent waits for shard s; logs when none waits any more. */
static void s_shard_wait_done(coord_t *coord, size_t s)
{
    coord_shard_t *shard = &coord->shards[s];
    if (shard->redrive_waiting && --shard->redrive_waiting == 0)
        log_info("re-drive: no interrupted write waits for shard %s any more", shard->endpoint);
}

/* Intent in of coll waits for shard s (why: the failure); logs when s starts holding any up. */
static void s_redrive_wait(coord_t *coord, const char *coll, const catalog_intent_t *in, size_t s,
                           const char *why)
{
    if (s >= coord->nshards)
        s = 0; /* a failure without a shard (out of memory): counted on the first */
    char key[WIRE_NAME_MAX + 32];
    s_wait_key(key, sizeof key, coll, in->txn);
    uintptr_t was = (uintptr_t)zhashx_lookup(coord->redrive_waits, key);
    if (was == s + 1)
        return;
    if (was)
        s_shard_wait_done(coord, was - 1);
    zhashx_update(coord->redrive_waits, key, (void *)(uintptr_t)(s + 1));
    coord_shard_t *shard = &coord->shards[s];
    if (shard->redrive_waiting++ == 0)
        log_warn("re-drive: interrupted writes wait for shard %s (the first, %s %" PRIu64
                 " of \"%s\" with %zu ids: %s); they are re-driven when it is back up (stats: "
                 "redrive_waiting)",
                 shard->endpoint, s_intent_kind(in), in->txn, coll, in->n, why);
    log_debug("re-drive: interrupted %s %" PRIu64 " of \"%s\" (%zu ids) waits for shard %s",
              s_intent_kind(in), in->txn, coll, in->n, shard->endpoint);
}

/* Intent txn of coll no longer waits (settled, or its collection dropped). */
static void s_redrive_unwait(coord_t *coord, const char *coll, uint64_t txn)
{
    char key[WIRE_NAME_MAX + 32];
    s_wait_key(key, sizeof key, coll, txn);
    uintptr_t was = (uintptr_t)zhashx_lookup(coord->redrive_waits, key);
    if (!was)
        return;
    zhashx_delete(coord->redrive_waits, key);
    s_shard_wait_done(coord, was - 1);
}

/* Forgets the waits of a dropped collection's intents. */
static void s_redrive_forget_coll(coord_t *coord, const char *coll)
{
    size_t len = strlen(coll);
    zlistx_t *keys = zhashx_keys(coord->redrive_waits);
    for (const char *key = keys ? zlistx_first(keys) : NULL; key; key = zlistx_next(keys)) {
        if (strncmp(key, coll, len) != 0 || key[len] != '\x1f')
            continue;
        uintptr_t was = (uintptr_t)zhashx_lookup(coord->redrive_waits, key);
        zhashx_delete(coord->redrive_waits, key);
        if (was)
            s_shard_wait_done(coord, was - 1);
    }
    zlistx_destroy(&keys);
}

/* The stale copies of intent in of w->coll are gone: forget it. */
static void s_redrive_clear(coord_t *coord, s_write_t *w, const catalog_intent_t *in)
{
    shoal_err_t err;
    shoal_err_clear(&err);
    if (catalog_intent_clear(coord->cat, w->coll, in->txn, &err) != 0) {
        log_warn("re-drive: clearing intent %" PRIu64 " of \"%s\": %s", in->txn, w->coll, err.msg);
        return;
    }
    coord->redrive_settled++;
    s_redrive_unwait(coord, w->coll, in->txn);
    log_debug("re-drive: interrupted %s %" PRIu64 " of \"%s\" (%zu ids) settled", s_intent_kind(in),
              in->txn, w->coll, in->n);
}

/* One intent's deletes answered: clear it when all went well. */
static void s_redrive_answered(coord_t *coord, coord_job_t *job)
{
    s_write_t *w = job->state;
    const catalog_intent_t *in = &w->intents[w->intent_at - 1];
    coord_scope_clear(&job->scope);
    coord_writes_changed(coord);
    if (!w->fail_code) {
        s_redrive_clear(coord, w, in);
    } else {
        s_redrive_wait(coord, w->coll, in, w->fail_shard, w->fail_msg);
        if (job->pending) {
            /* Answers still out (timeout, shard down) would count for the next intent:
               end this pass and start another, which skips the down shard's intents. */
            coord_redrive_schedule(coord);
            coord_job_end(coord, &job);
            return;
        }
    }
    s_redrive_next(coord, job);
}

/* Reads collection c's intents into w (none when untrained or unreadable). */
static void s_redrive_load(coord_t *coord, s_write_t *w, const catalog_coll_t *c)
{
    shoal_err_t err;
    shoal_err_clear(&err);
    catalog_intents_free(w->intents, w->nintents);
    w->intents = NULL;
    w->nintents = 0;
    w->intent_at = 0;
    snprintf(w->coll, sizeof w->coll, "%s", c->name);
    if (c->trained && catalog_intents(coord->cat, c->name, &w->intents, &w->nintents, &err) != 0)
        log_warn("re-drive: reading the intents of \"%s\": %s", c->name, err.msg);
}

/* 1 when intent txn belongs to a write still running (it clears or hands it over itself). */
static int s_intent_live(const coord_t *coord, uint64_t txn)
{
    for (const coord_job_t *job = coord->jobs; job; job = job->next) {
        const s_write_t *w = job->free_state == s_state_free ? job->state : NULL;
        if (w && job != coord->redrive_job && w->has_txn && w->txn == txn)
            return 1;
    }
    return 0;
}

/*
 * Sends the deletes of one intent of c (w->coll); 1 when sent (continues in
 * s_redrive_answered), 0 when it was settled here (nothing to delete:
 * cleared), has to wait (a shard down) or was skipped (its write still runs,
 * or another write holds its ids).
 */
static int s_redrive_intent(coord_t *coord, coord_job_t *job, const catalog_coll_t *c,
                            const catalog_intent_t *in)
{
    s_write_t *w = job->state;
    if (s_intent_live(coord, in->txn))
        return 0;
    coord_scope_t scope;
    memset(&scope, 0, sizeof scope);
    if (coord_scope_set_ids(&scope, c->name, in->ids, in->n) != 0 ||
        coord_scope_busy(coord, job, &scope)) {
        coord_scope_clear(&scope);
        coord->redrive_deferred = 1; /* tried again when a write ends */
        return 0;
    }
    shoal_err_t err;
    shoal_err_clear(&err);
    s_batches_free(w, w->nshards);
    s_phase_reset(coord, w);
    uint32_t *cur = malloc((in->n ? in->n : 1) * sizeof *cur);
    uint32_t *touched = calloc(w->nshards, sizeof *touched);
    int rc = cur && touched ? 0 : shoal_err_set(&err, SHOAL_ENOMEM, "out of memory");
    if (rc == 0)
        rc = catalog_lookup(coord->cat, c->name, in->ids, in->n, cur, &err);
    for (size_t j = 0; rc == 0 && j < in->n; j++)
        if (s_stale_add(coord, w, c, in->ids[j], cur[j], in->old_lists[j], in->new_lists[j],
                        in->n, touched) != 0)
            rc = shoal_err_set(&err, SHOAL_ENOMEM, "out of memory");
    size_t down = SIZE_MAX;
    int any = 0;
    for (size_t s = 0; rc == 0 && s < w->nshards; s++) {
        any |= touched[s] != 0;
        if (touched[s] && !coord_shard_usable(coord, s) && down == SIZE_MAX)
            down = s;
    }
    free(cur);
    free(touched);
    if (rc != 0 || down != SIZE_MAX) {
        s_redrive_wait(coord, c->name, in, down, rc ? err.msg : "it is down");
        coord_scope_clear(&scope);
        return 0;
    }
    if (!any) { /* settled here, so a run of such intents does not recurse */
        coord_scope_clear(&scope);
        s_redrive_clear(coord, w, in);
        return 0;
    }
    coord_scope_clear(&job->scope);
    job->scope = scope; /* the ids are this job's until the deletes are answered */
    coord->redrive_attempts++;
    w->accept = SHOAL_ENOTFOUND; /* a shard without the collection holds no stale copy */
    s_send_batches(coord, job, WIRE_OP_DELETE, 0, s_redrive_answered);
    return 1;
}

static void s_redrive_next(coord_t *coord, coord_job_t *job)
{
    s_write_t *w = job->state;
    for (;;) {
        const catalog_coll_t *c = catalog_find(coord->cat, w->coll);
        while (c && w->intent_at < w->nintents)
            if (s_redrive_intent(coord, job, c, &w->intents[w->intent_at++]))
                return; /* continues in s_redrive_answered */
        if (w->coll_at >= catalog_coll_count(coord->cat))
            break;
        s_redrive_load(coord, w, catalog_coll_at(coord->cat, w->coll_at++));
    }
    coord_job_end(coord, &job);
}

void coord_redrive_schedule(coord_t *coord)
{
    if (!coord->stopping)
        coord->redrive_wanted = 1;
}

void coord_redrive_run(coord_t *coord)
{
    coord->redrive_wanted = 0;
    coord_job_t *job = coord_job_new(coord, 1);
    if (!job) {
        log_error("re-drive: out of memory");
        return;
    }
    /* Its requests are deletes: their errors say "delete". */
    job->req.op = WIRE_OP_DELETE;
    if (!s_state_new(coord, job)) {
        coord_job_end(coord, &job);
        log_error("re-drive: out of memory");
        return;
    }
    /* Started at once, outside the FIFO: its scope is the intent in flight, none before. */
    coord_write_begin(coord, job);
    coord->redrive_job = job;
    s_redrive_next(coord, job);
}

/* ------------------------------------------------------------------------ */
/* Repair: a collection a shard lacks                                       */
/* ------------------------------------------------------------------------ */

/* The ids the catalog places on lists that shard s owns. */
static uint64_t s_ids_on_shard(const catalog_coll_t *c, size_t s)
{
    uint64_t n = 0;
    for (uint32_t l = 0; c->trained && l < c->nlist; l++)
        if (s_holds(c, l, s))
            n += c->list_counts[l];
    return n;
}

static void s_repair_done(coord_t *coord, coord_job_t *job)
{
    s_write_t *w = job->state;
    size_t s = w->repair_shard;
    coord->shards[s].repairing = 0;
    const catalog_coll_t *c = catalog_find(coord->cat, w->coll);
    if (w->fail_code) {
        log_warn("repair: re-creating collection \"%s\" on shard %s: %s (tried again at the "
                 "next answer that lacks it)",
                 w->coll, coord->shards[s].endpoint, w->fail_msg);
    } else if (c && c->replication > 1) {
        coord->repairs++;
        log_warn("repair: re-created collection \"%s\" on shard %s; its %" PRIu64
                 " vectors there are rebuilt from the other replicas",
                 w->coll, coord->shards[s].endpoint, s_ids_on_shard(c, s));
        coord_replicas_lost(coord, c, s);
    } else if (c) {
        coord->repairs++;
        log_warn("repair: re-created collection \"%s\" on shard %s; the %" PRIu64
                 " ids the catalog places on that shard's lists were lost with it (no replica) "
                 "and stay counted until deleted or inserted again",
                 w->coll, coord->shards[s].endpoint, s_ids_on_shard(c, s));
    }
    coord_job_end(coord, &job);
}

static void s_repair_start(coord_t *coord, coord_job_t *job)
{
    s_write_t *w = job->state;
    const catalog_coll_t *c = catalog_find(coord->cat, w->coll);
    if (!c || !coord_shard_usable(coord, w->repair_shard)) { /* dropped, or gone meanwhile */
        coord->shards[w->repair_shard].repairing = 0;
        coord_job_end(coord, &job);
        return;
    }
    w->accept = SHOAL_EEXIST;
    w->next = s_repair_done;
    wire_request_t sub;
    s_create_sub(&sub, c);
    s_send(coord, job, w->repair_shard, &sub);
    s_phase_wait(coord, job);
}

void coord_repair_collection(coord_t *coord, size_t s, const char *coll)
{
    if (s >= coord->nshards || coord->shards[s].repairing || coord->stopping)
        return;
    const catalog_coll_t *c = catalog_find(coord->cat, coll);
    if (!c)
        return;
    /* A write of the whole collection: ordered with its create, drop and inserts. */
    coord_job_t *job = coord_job_new(coord, 1);
    s_write_t *w = NULL;
    if (job) {
        job->req.op = WIRE_OP_CREATE_COLLECTION;
        snprintf(job->req.coll, sizeof job->req.coll, "%s", coll);
        w = s_state_new(coord, job);
    }
    if (!w) {
        coord_job_end(coord, &job);
        log_error("repair: out of memory");
        return;
    }
    w->repair_shard = s;
    job->start = s_repair_start;
    coord->shards[s].repairing = 1;
    log_warn("repair: shard %s lacks collection \"%s\" (dropped there behind the coordinator's "
             "back?): answers leave that shard out until it is re-created; re-creating it",
             coord->shards[s].endpoint, coll);
    coord_job_submit(coord, job);
}
