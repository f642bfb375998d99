/*
 * coord_snapshot.c - cluster snapshots: snapshot_create and snapshot_list
 * (docs/protocol.md 11.10; restore in docs/operations.md, "Snapshots and
 * restore").
 *
 * A snapshot is one RocksDB checkpoint per part, each on its own host's disk
 * and all named the same: every shard's database at <shard data dir>/
 * snapshots/NAME (the shard's `snapshot` op, 4.13) and the catalog at
 * <coordinator data dir>/snapshots/NAME. Inside the data dirs rather than
 * beside them: RocksDB deletes only the files it named itself in its
 * directory, so a subfolder is safe there (tests/test_snapshot.c checks it
 * across compactions and reopens), the copy is on the same filesystem, where
 * its table files are hard links, and an operator finds it without a second
 * flag.
 *
 * Consistency without a write epoch: snapshot_create is a write whose scope
 * is every collection (COORD_SCOPE_ALL), so the loop's write FIFO starts it
 * only once every earlier write, and each of its replica requests, has
 * ended, and starts no later write (nor repair or move step) until it has
 * ended. While it runs no shard gets a write, so each shard's copy holds
 * exactly the writes acknowledged before it, and the catalog copy, taken
 * after every shard answered, the id map and counts that match them.
 * Searches are not held. The price is a pause of writes for the time the
 * slowest shard takes (its graph checkpoints, then a memtable flush and hard
 * links) plus the catalog's copy; writes that arrive meanwhile wait in the
 * FIFO and are served afterwards, not refused. A write epoch (writes tagged
 * and kept going, each shard copying up to the epoch) would avoid the pause
 * but needs every shard to keep pre-epoch state while writes continue,
 * which RocksDB checkpoints cannot give; rejected for now.
 *
 * Phases: COPY sends `snapshot` to every shard that is not removed and waits
 * (write timeout, or the shard marked down). All made it: the snapshot's
 * record goes into the catalog and the catalog is copied with it in. Any
 * failure: DROP sends `snapshot_drop` to every shard that was asked and did
 * not answer eexist (its directory is not this snapshot's) and waits, so
 * nothing stays half-written; the error says which shards did not confirm.
 *
 * Thread-safety: the loop's, like every op file.
 */
#include "coordinator/coord_private.h"

#include "common/log.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>

/* The coordinator refuses a snapshot with less free space than this (a memtable's flush). */
#define S_FREE_MIN_BYTES ((uint64_t)64 << 20)
/* snapshot_list shows at most this many (the first by name). */
#define S_LIST_MAX 256
/* The folder under a data dir that holds the snapshots (the shards' SHARD_SNAPSHOTS_DIR too). */
#define S_SNAPSHOTS_DIR "snapshots"

typedef enum {
    S_PHASE_COPY = 1, /* the shards copy their databases */
    S_PHASE_DROP = 2, /* a failure: the copies made are removed */
} s_phase_t;

/* One snapshot_create in progress. */
typedef struct {
    s_phase_t phase;               /* what the outstanding requests are */
    size_t nshards;                /* length of the per-shard arrays */
    uint32_t *asked;               /* nshards: sent `snapshot` */
    uint32_t *wait;                /* nshards: an answer of this phase is outstanding */
    uint32_t *made;                /* nshards: answered `snapshot` with success */
    uint32_t *foreign;             /* nshards: answered eexist (never dropped) */
    uint32_t *dropped;             /* nshards: confirmed `snapshot_drop` */
    uint64_t *seq;                 /* nshards: the last write its copy holds */
    char **dirs;                   /* nshards: its copy's directory, as it answered (owned) */
    size_t outstanding;            /* answers of this phase still to come */
    uint32_t tag;                  /* this phase's tag: answers of the other are ignored */
    int fail_code;                 /* the first failure (0: none) */
    char fail_msg[WIRE_MSG_MAX];   /* its message */
    int64_t started_us;            /* when the job left the FIFO (writes held from here) */
    char dir[4096];                /* the catalog copy's directory */
} s_snap_t;

static void s_state_free(void *state)
{
    s_snap_t *st = state;
    if (!st)
        return;
    free(st->asked);
    free(st->wait);
    free(st->made);
    free(st->foreign);
    free(st->dropped);
    free(st->seq);
    for (size_t s = 0; st->dirs && s < st->nshards; s++)
        free(st->dirs[s]);
    free(st->dirs);
    free(st);
}

static s_snap_t *s_state_new(coord_job_t *job, size_t nshards)
{
    s_snap_t *st = calloc(1, sizeof *st);
    if (!st)
        return NULL;
    size_t n = nshards ? nshards : 1;
    st->nshards = nshards;
    st->asked = calloc(n, sizeof *st->asked);
    st->wait = calloc(n, sizeof *st->wait);
    st->made = calloc(n, sizeof *st->made);
    st->foreign = calloc(n, sizeof *st->foreign);
    st->dropped = calloc(n, sizeof *st->dropped);
    st->seq = calloc(n, sizeof *st->seq);
    st->dirs = calloc(n, sizeof *st->dirs);
    job->state = st;
    job->free_state = s_state_free;
    if (!st->asked || !st->wait || !st->made || !st->foreign || !st->dropped || !st->seq ||
        !st->dirs)
        return NULL; /* freed with the job */
    return st;
}

static void s_fail_record(s_snap_t *st, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Records the snapshot's first failure. */
static void s_fail_record(s_snap_t *st, int code, const char *fmt, ...)
{
    if (st->fail_code)
        return;
    st->fail_code = code ? code : SHOAL_EINTERNAL;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st->fail_msg, sizeof st->fail_msg, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------------ */
/* Checks before anything is written                                        */
/* ------------------------------------------------------------------------ */

/* "<data dir>/snapshots" (name NULL) or "<data dir>/snapshots/<name>" into buf. */
static int s_path(const coord_t *coord, const char *name, char *buf, size_t cap, shoal_err_t *err)
{
    int len = name ? snprintf(buf, cap, "%s/%s/%s", coord->data_dir, S_SNAPSHOTS_DIR, name)
                   : snprintf(buf, cap, "%s/%s", coord->data_dir, S_SNAPSHOTS_DIR);
    if (len < 0 || (size_t)len >= cap)
        return shoal_err_set(err, SHOAL_EINVAL, "snapshot_create: the path under data dir %s is "
                             "too long", coord->data_dir);
    return 0;
}

/* The coordinator's own refusals: a name taken, a full disk, a shard down. */
static int s_precheck(coord_t *coord, const char *name, s_snap_t *st, shoal_err_t *err)
{
    int rc = catalog_snapshot_exists(coord->cat, name, err);
    if (rc < 0)
        return shoal_err_prefix(err, "snapshot_create");
    if (rc > 0)
        return shoal_err_set(err, SHOAL_EEXIST, "snapshot_create: snapshot \"%s\" exists (shoal "
                             "snapshot list)", name);
    if ((rc = s_path(coord, name, st->dir, sizeof st->dir, err)) != 0)
        return rc;
    struct stat sb;
    if (stat(st->dir, &sb) == 0)
        return shoal_err_set(err, SHOAL_EEXIST, "snapshot_create: %s exists on the coordinator "
                             "(left from an earlier snapshot?)", st->dir);
    struct statvfs vfs;
    if (statvfs(coord->data_dir, &vfs) != 0)
        return shoal_err_set(err, SHOAL_EIO, "snapshot_create: reading the free space of %s: %s",
                             coord->data_dir, strerror(errno));
    uint64_t free_bytes = (uint64_t)vfs.f_bavail * (uint64_t)vfs.f_frsize;
    if (free_bytes < S_FREE_MIN_BYTES)
        return shoal_err_set(err, SHOAL_EIO, "snapshot_create: the coordinator's data dir %s has "
                             "%" PRIu64 " bytes free, a snapshot needs %" PRIu64 "; nothing was "
                             "written", coord->data_dir, free_bytes, S_FREE_MIN_BYTES);
    if (coord->nshards > st->nshards)
        return shoal_err_set(err, SHOAL_EUNAVAIL, "snapshot_create: a shard was added while the "
                             "snapshot waited for earlier writes; nothing was written, try again");
    char list[WIRE_MSG_MAX / 2] = "";
    uint32_t *down = calloc(st->nshards ? st->nshards : 1, sizeof *down);
    if (!down)
        return shoal_err_set(err, SHOAL_ENOMEM, "snapshot_create: out of memory");
    int any = 0;
    for (size_t s = 0; s < st->nshards; s++)
        if (!coord->shards[s].removed && !coord_shard_usable(coord, s))
            down[s] = 1, any = 1;
    if (any)
        coord_shard_list(coord, down, list, sizeof list);
    free(down);
    if (any)
        return shoal_err_set(err, SHOAL_EUNAVAIL, "snapshot_create: shard(s) %s down; nothing "
                             "was written", list);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Phases                                                                   */
/* ------------------------------------------------------------------------ */

static void s_phase_done(coord_t *coord, coord_job_t *job);

/* Sends op (snapshot or snapshot_drop) to shard s for this phase. */
static int s_send(coord_t *coord, coord_job_t *job, size_t s, wire_op_t op)
{
    s_snap_t *st = job->state;
    wire_request_t req;
    coord_request_init(&req, op, "");
    snprintf(req.name, sizeof req.name, "%s", job->req.name);
    if (coord_send(coord, job, s, st->tag, &req) != 0)
        return -1;
    st->wait[s] = 1;
    st->outstanding++;
    return 0;
}

/* Arms the phase's handlers and deadline; runs its end at once when nothing went. */
static void s_phase_wait(coord_t *coord, coord_job_t *job)
{
    s_snap_t *st = job->state;
    job->deadline_us = zclock_usecs() + (int64_t)coord->opts.write_timeout_ms * 1000;
    if (st->outstanding == 0) {
        job->deadline_us = 0;
        s_phase_done(coord, job);
    }
}

static void s_on_reply(coord_t *coord, coord_job_t *job, size_t s, uint32_t tag,
                       const wire_reply_t *rep)
{
    s_snap_t *st = job->state;
    if (tag != st->tag || s >= st->nshards || !st->wait[s])
        return;
    st->wait[s] = 0;
    st->outstanding--;
    const char *ep = coord->shards[s].endpoint;
    if (st->phase == S_PHASE_COPY) {
        double seq = 0;
        if (rep->code == SHOAL_OK) {
            st->made[s] = 1;
            if (rep->info && wire_info_lookup(rep->info, rep->info_len, "seq", &seq) == 0 &&
                seq >= 0)
                st->seq[s] = (uint64_t)seq;
            char dir[4096];
            if (rep->info &&
                wire_info_lookup_str(rep->info, rep->info_len, "dir", dir, sizeof dir) == 0) {
                free(st->dirs[s]);
                st->dirs[s] = strdup(dir);
            }
        } else {
            st->foreign[s] = rep->code == SHOAL_EEXIST;
            s_fail_record(st, rep->code, "snapshot_create: shard %s: %s", ep,
                          rep->msg[0] ? rep->msg : shoal_strerror(rep->code));
        }
    } else if (rep->code == SHOAL_OK) {
        st->dropped[s] = 1;
    } else {
        log_warn("snapshot \"%s\": shard %s did not remove its copy: %s", job->req.name, ep,
                 rep->msg[0] ? rep->msg : shoal_strerror(rep->code));
    }
    if (st->outstanding == 0) {
        job->deadline_us = 0;
        s_phase_done(coord, job);
    }
}

/* A shard this phase waits on was marked down: nothing more comes from it. */
static void s_on_shard_down(coord_t *coord, coord_job_t *job, size_t s)
{
    s_snap_t *st = job->state;
    if (s >= st->nshards || !st->wait[s])
        return;
    st->wait[s] = 0;
    st->outstanding--;
    if (st->phase == S_PHASE_COPY)
        s_fail_record(st, SHOAL_EUNAVAIL, "snapshot_create: shard %s was marked down (no answer "
                      "for %u ms)", coord->shards[s].endpoint, coord->opts.down_after_ms);
    if (st->outstanding == 0) {
        job->deadline_us = 0;
        s_phase_done(coord, job);
    }
}

static void s_on_timeout(coord_t *coord, coord_job_t *job)
{
    s_snap_t *st = job->state;
    if (st->phase == S_PHASE_COPY) {
        char list[WIRE_MSG_MAX / 2] = "";
        coord_shard_list(coord, st->wait, list, sizeof list);
        s_fail_record(st, SHOAL_ETIMEOUT, "snapshot_create: shard(s) %s did not answer within "
                      "%u ms", list, coord->opts.write_timeout_ms);
    }
    memset(st->wait, 0, st->nshards * sizeof *st->wait);
    st->outstanding = 0;
    s_phase_done(coord, job);
}

/* A failure after the shards were asked: every copy that may exist is removed. */
static void s_drop_start(coord_t *coord, coord_job_t *job)
{
    s_snap_t *st = job->state;
    st->phase = S_PHASE_DROP;
    st->tag++;
    memset(st->wait, 0, st->nshards * sizeof *st->wait);
    st->outstanding = 0;
    /* A shard that did not answer may still make its copy: the drop, in its
       write lane behind the snapshot, removes it then. One marked down is not
       asked (the answer would not come): the error names it. */
    for (size_t s = 0; s < st->nshards; s++)
        if (st->asked[s] && !st->foreign[s] && coord_shard_usable(coord, s))
            (void)s_send(coord, job, s, WIRE_OP_SNAPSHOT_DROP);
    s_phase_wait(coord, job);
}

/* The failure's reply, with what the clean-up left behind. */
static void s_fail_reply(coord_t *coord, coord_job_t *job)
{
    s_snap_t *st = job->state;
    uint32_t *left = calloc(st->nshards ? st->nshards : 1, sizeof *left);
    int any = 0;
    for (size_t s = 0; left && s < st->nshards; s++)
        if (st->asked[s] && !st->foreign[s] && !st->dropped[s])
            left[s] = 1, any = 1;
    char list[WIRE_MSG_MAX / 2] = "";
    if (any)
        coord_shard_list(coord, left, list, sizeof list);
    free(left);
    if (any) {
        log_warn("snapshot \"%s\" failed; shard(s) %s did not confirm removing their copy: "
                 "remove <data-dir>/%s/%s there by hand",
                 job->req.name, list, S_SNAPSHOTS_DIR, job->req.name);
        coord_fail(coord, &job, st->fail_code, "%s; shard(s) %s did not confirm removing their "
                   "copy: remove <data-dir>/%s/%s there by hand", st->fail_msg, list,
                   S_SNAPSHOTS_DIR, job->req.name);
    } else {
        coord_fail(coord, &job, st->fail_code, "%s; no copy was kept", st->fail_msg);
    }
}

/* The snapshot's catalog record: the shards asked and every collection's count. */
static int s_record_fill(coord_t *coord, coord_job_t *job, catalog_snapshot_t *rec,
                         shoal_err_t *err)
{
    s_snap_t *st = job->state;
    memset(rec, 0, sizeof *rec);
    snprintf(rec->name, sizeof rec->name, "%s", job->req.name);
    rec->created = (uint64_t)time(NULL);
    size_t ncolls = catalog_coll_count(coord->cat);
    rec->shards = calloc(st->nshards ? st->nshards : 1, sizeof *rec->shards);
    rec->colls = calloc(ncolls ? ncolls : 1, sizeof *rec->colls);
    if (!rec->shards || !rec->colls) {
        catalog_snapshot_fini(rec);
        return shoal_err_set(err, SHOAL_ENOMEM, "snapshot_create: out of memory");
    }
    for (size_t s = 0; s < st->nshards; s++) {
        if (!st->made[s])
            continue;
        catalog_snapshot_shard_t *sh = &rec->shards[rec->nshards++];
        snprintf(sh->endpoint, sizeof sh->endpoint, "%s", coord->shards[s].endpoint);
        sh->seq = st->seq[s];
    }
    for (size_t i = 0; i < ncolls; i++) {
        const catalog_coll_t *c = catalog_coll_at(coord->cat, i);
        snprintf(rec->colls[i].name, sizeof rec->colls[i].name, "%s", c->name);
        rec->colls[i].count = c->count;
    }
    rec->ncolls = ncolls;
    return 0;
}

/* The success reply's info map (docs/protocol.md 11.10). */
static void s_reply_done(coord_t *coord, coord_job_t *job, const catalog_snapshot_t *rec)
{
    s_snap_t *st = job->state;
    double paused_ms = (double)(zclock_usecs() - st->started_us) / 1000.0;
    double waited_ms = (double)(st->started_us - job->start_us) / 1000.0;
    wire_info_t *info = wire_info_new();
    if (!info) {
        coord_fail(coord, &job, SHOAL_ENOMEM, "snapshot_create: the snapshot was taken, but "
                   "there is no memory for the reply (shoal snapshot list shows it)");
        return;
    }
    wire_info_map(info, 7);
    wire_io_info_str(info, "name", rec->name);
    wire_io_info_u64(info, "created", rec->created);
    wire_io_info_str(info, "dir", st->dir);
    wire_io_info_f64(info, "paused_ms", paused_ms);
    wire_io_info_f64(info, "waited_ms", waited_ms);
    wire_info_key(info, "shards");
    wire_info_array(info, rec->nshards);
    for (size_t s = 0, i = 0; s < st->nshards && i < rec->nshards; s++) {
        if (!st->made[s])
            continue; /* s_record_fill took the shards that made it, in this order */
        wire_info_map(info, 3);
        wire_io_info_str(info, "endpoint", rec->shards[i].endpoint);
        wire_io_info_str(info, "dir", st->dirs[s] ? st->dirs[s] : "");
        wire_io_info_u64(info, "seq", rec->shards[i].seq);
        i++;
    }
    wire_info_key(info, "collections");
    wire_info_array(info, rec->ncolls);
    for (size_t i = 0; i < rec->ncolls; i++) {
        wire_info_map(info, 2);
        wire_io_info_str(info, "name", rec->colls[i].name);
        wire_io_info_u64(info, "count", rec->colls[i].count);
    }
    log_info("snapshot \"%s\": %zu shard(s), %zu collection(s); writes held %.1f ms (queued "
             "%.1f ms behind earlier writes); catalog copy in %s",
             rec->name, rec->nshards, rec->ncolls, paused_ms, waited_ms, st->dir);
    wire_reply_t rep;
    wire_reply_init(&rep);
    rep.op = job->req.op;
    rep.rid = job->req.rid;
    if (wire_io_reply_info(&rep, info) != 0) {
        wire_info_destroy(&info);
        coord_fail(coord, &job, SHOAL_ENOMEM, "snapshot_create: the snapshot was taken, but "
                   "there is no memory for the reply (shoal snapshot list shows it)");
        return;
    }
    coord_reply(coord, &job, &rep);
    wire_reply_fini(&rep);
    wire_info_destroy(&info);
}

/* Every shard made its copy: the catalog's record, then the catalog's copy with it in. */
static void s_catalog_copy(coord_t *coord, coord_job_t *job)
{
    s_snap_t *st = job->state;
    shoal_err_t err;
    shoal_err_clear(&err);
    catalog_snapshot_t rec;
    char parent[4096];
    int rc = s_record_fill(coord, job, &rec, &err);
    if (rc == 0 && (rc = catalog_snapshot_put(coord->cat, &rec, &err)) != 0)
        catalog_snapshot_fini(&rec);
    if (rc == 0) {
        rc = s_path(coord, NULL, parent, sizeof parent, &err);
        if (rc == 0 && mkdir(parent, 0755) != 0 && errno != EEXIST)
            rc = shoal_err_set(&err, SHOAL_EIO, "making %s: %s", parent, strerror(errno));
        if (rc == 0)
            rc = catalog_checkpoint(coord->cat, st->dir, &err);
        if (rc != 0) {
            shoal_err_t undo;
            shoal_err_clear(&undo);
            if (catalog_snapshot_delete(coord->cat, rec.name, &undo) != 0)
                log_error("snapshot \"%s\": %s (snapshot list may show it)", rec.name, undo.msg);
            catalog_snapshot_fini(&rec);
        }
    }
    if (rc != 0) {
        s_fail_record(st, rc, "snapshot_create: the catalog's copy: %s", err.msg);
        s_drop_start(coord, job);
        return;
    }
    s_reply_done(coord, job, &rec);
    catalog_snapshot_fini(&rec);
}

static void s_phase_done(coord_t *coord, coord_job_t *job)
{
    s_snap_t *st = job->state;
    if (st->phase == S_PHASE_DROP) {
        s_fail_reply(coord, job);
        return;
    }
    if (st->fail_code) {
        s_drop_start(coord, job);
        return;
    }
    s_catalog_copy(coord, job);
}

/* ------------------------------------------------------------------------ */
/* The ops                                                                  */
/* ------------------------------------------------------------------------ */

void coord_op_snapshot_create(coord_t *coord, coord_job_t *job)
{
    s_snap_t *st = s_state_new(job, job->nwaiting);
    if (!st) {
        coord_fail(coord, &job, SHOAL_ENOMEM, "snapshot_create: out of memory");
        return;
    }
    st->started_us = zclock_usecs();
    shoal_err_t err;
    shoal_err_clear(&err);
    if (s_precheck(coord, job->req.name, st, &err) != 0) {
        coord_fail(coord, &job, err.code, "%s", err.msg);
        return;
    }
    job->on_reply = s_on_reply;
    job->on_timeout = s_on_timeout;
    job->on_shard_down = s_on_shard_down;
    st->phase = S_PHASE_COPY;
    st->tag = 1;
    for (size_t s = 0; s < st->nshards; s++) {
        if (coord->shards[s].removed)
            continue;
        if (s_send(coord, job, s, WIRE_OP_SNAPSHOT) != 0) {
            s_fail_record(st, SHOAL_EUNAVAIL, "snapshot_create: shard %s is not reachable",
                          coord->shards[s].endpoint);
            break;
        }
        st->asked[s] = 1;
    }
    s_phase_wait(coord, job);
}

/* One snapshot's entry of the list. */
static void s_list_entry(wire_info_t *info, const catalog_snapshot_t *snap)
{
    uint64_t vectors = 0;
    for (size_t i = 0; i < snap->ncolls; i++)
        vectors += snap->colls[i].count;
    wire_info_map(info, 5);
    wire_io_info_str(info, "name", snap->name);
    wire_io_info_u64(info, "created", snap->created);
    wire_io_info_u64(info, "vectors", vectors);
    wire_info_key(info, "shards");
    wire_info_array(info, snap->nshards);
    for (size_t i = 0; i < snap->nshards; i++)
        wire_info_str(info, snap->shards[i].endpoint);
    wire_info_key(info, "collections");
    wire_info_array(info, snap->ncolls);
    for (size_t i = 0; i < snap->ncolls; i++) {
        wire_info_map(info, 2);
        wire_io_info_str(info, "name", snap->colls[i].name);
        wire_io_info_u64(info, "count", snap->colls[i].count);
    }
}

/* About the bytes one entry adds to the reply (an upper bound of its msgpack). */
static size_t s_list_entry_bytes(const catalog_snapshot_t *snap)
{
    size_t bytes = 96;
    for (size_t i = 0; i < snap->nshards; i++)
        bytes += strlen(snap->shards[i].endpoint) + 4;
    for (size_t i = 0; i < snap->ncolls; i++)
        bytes += strlen(snap->colls[i].name) + 24;
    return bytes;
}

void coord_op_snapshot_list(coord_t *coord, coord_job_t *job)
{
    shoal_err_t err;
    shoal_err_clear(&err);
    catalog_snapshot_t *snaps = NULL;
    size_t n = 0;
    if (catalog_snapshots(coord->cat, &snaps, &n, &err) != 0) {
        coord_fail(coord, &job, err.code, "snapshot_list: %s", err.msg);
        return;
    }
    /* The header holds 1 MiB: stop well before, whatever the shard counts. */
    size_t budget = (size_t)3 << 18, bytes = 0, shown = 0;
    while (shown < n && shown < S_LIST_MAX && bytes + s_list_entry_bytes(&snaps[shown]) < budget)
        bytes += s_list_entry_bytes(&snaps[shown++]);
    wire_info_t *info = wire_info_new();
    if (info) {
        wire_info_map(info, 2);
        wire_io_info_u64(info, "total", n);
        wire_info_key(info, "snapshots");
        wire_info_array(info, shown);
        for (size_t i = 0; i < shown; i++)
            s_list_entry(info, &snaps[i]);
    }
    catalog_snapshots_free(snaps, n);
    wire_reply_t rep;
    wire_reply_init(&rep);
    rep.op = job->req.op;
    rep.rid = job->req.rid;
    if (!info || wire_io_reply_info(&rep, info) != 0) {
        wire_info_destroy(&info);
        coord_fail(coord, &job, SHOAL_ENOMEM, "snapshot_list: out of memory");
        return;
    }
    coord_reply(coord, &job, &rep);
    wire_reply_fini(&rep);
    wire_info_destroy(&info);
}
