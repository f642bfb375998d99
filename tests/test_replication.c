/*
 * test_replication.c - replication (issue 10) on many hosts: every IVF list
 * kept on R = 2 shards, seen by a client while hosts fail.
 *
 * Layout (tests/test_hosts.h): 4 shard hosts, one shard each with its own
 * data dir; the coordinator on a fifth host; the test's clients in the
 * controller namespace. Data: siftsmall (10,000 base rows, 100 queries with
 * exact ground truth), trained into S_NLIST lists, ids = row numbers.
 *
 * Two worker threads run while the main thread injects faults:
 *   searcher  searches every query with the base ids as the allow-list (rows
 *             the tests insert then never displace a true neighbour, so
 *             recall@10 against the shipped truth stays meaningful), then
 *             searches exactly for the vectors of the writer's latest
 *             acknowledged batch (a replica that owes writes must not serve);
 *   writer    inserts batches of new rows (ids from S_ID_BASE: a base row
 *             with one coordinate moved, so each is distinct), then gets
 *             each acknowledged batch back at once.
 * Each request is recorded with its start and end; the checks afterwards
 * say which requests a fault may excuse: only those in flight at the moment
 * a shard was killed, cut off or frozen (and, in the randomized test, every
 * request overlapping a fault of the coordinator itself, which fail rather
 * than go partial).
 *
 * Tests:
 *   a  R=2 W=1, a shard kill -9'd during searches and inserts, restarted;
 *   b  the same with a partitioned host, healed;
 *   c  a shard's data dir wiped (kill -9, rm -rf, restart at once on the
 *      same endpoint), under load and with no traffic: rebuilt from the
 *      replicas;
 *   d  R=2 W=2 with a replica down: writes touching its lists fail with
 *      SHOAL_EUNAVAIL and nothing of them is written, anywhere; after the
 *      restart they succeed;
 *   e  30+ seeded random faults (kill -9 + restart, partition + heal,
 *      freeze + thaw) of the shards and the coordinator, one host at a time;
 *   f  the coordinator kill -9'd and restarted while a shard is down and
 *      its replicas owe writes.
 * After every test: the coordinator converges (every shard up, no stale
 * replica, no repair running, no pending intent), the shards' per-list
 * counts agree across each list's replicas and with the catalog, no shard
 * holds a list it is not a replica of, every acknowledged row is stored
 * with its vector and found exactly once by an exact search, and recall is
 * what it was.
 *
 * Needs root and iproute2 (else skipped, saying why) and takes minutes, so
 * it runs only with SHOAL_TEST_CLUSTER_HOSTS=1: `make test-cluster-hosts`
 * sets it; `make test` builds the suite but does not run it. SHOAL_TEST_SEED fixes
 * the randomized test's seed (printed either way). Every wait is bounded
 * polling; nothing asserts a timing.
 */
#define _GNU_SOURCE /* setns, for tests/test_hosts.h; before every #include */

#include "client/shoal_client.h"
#include "common/groundtruth.h"
#include "common/log.h"
#include "common/topk.h"
#include "net/wire.h"
#include "tests/test_hosts.h"
#include "tests/test_support.h"
#include "tests/test_hosts_node.h"

#include <criterion/criterion.h>
#include <czmq.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>

#define S_SEED_ENV        "SHOAL_TEST_SEED"
#define S_SHARDS          4
#define S_COORD_HOST      S_SHARDS /* hosts 0..3 run shards, host 4 the coordinator */
#define S_SHARD_PORT      7701     /* every host has its own ports: one number for all */
#define S_COORD_PORT      7700
#define S_COLL            "sift"
#define S_NLIST           16
#define S_NPROBE          8
#define S_K               10
#define S_ID_BASE         1000000u /* inserted rows: S_ID_BASE + m, vector from base row m */
#define S_TWIN_BASE       2000000u /* S_TWIN_BASE + m: the same vector as S_ID_BASE + m */
#define S_LOAD_CHUNK      1000     /* rows per insert while loading */
#define S_CHECK_CHUNK     250      /* ids per get / queries per search while checking */
#define S_INSERT_BATCH    8        /* rows per insert of the writer */
#define S_INSERT_MAX      12000    /* rows the writer inserts at most (then it only waits) */
#define S_FRESH_MAX       8        /* acknowledged rows the searcher looks for per round */
#define S_OPS_MAX         16384    /* requests a worker records at most */
#define S_SEARCH_PAUSE_MS 20
#define S_WRITE_PAUSE_MS  100
#define S_START_WAIT_S    60.0 /* a process must be ready within this */
#define S_STOP_WAIT_S     60.0
#define S_CONVERGE_WAIT_S 120.0 /* the coordinator converges within this after a fault */
#define S_PROGRESS_WAIT_S 60.0  /* the workers complete some requests within this */
#define S_STABLE_S        1.0   /* converged means: so for this long (10 pings) */
#define S_POLL_MS         100
#define S_TIMEOUT_MS      60000 /* setup and checks: loads on two busy cores */
#define S_POLL_TIMEOUT_MS 5000  /* polls while a process may be away */
#define S_OP_TIMEOUT_MS   10000 /* the workers' calls: above the write timeout and deadline */
#define S_PING_MS         "100"
#define S_DOWN_MS         "1000"
#define S_DEADLINE_MS     "3000"
#define S_WRITE_MS        "2000"
#define S_RECALL_TOL      0.02 /* recall may move this much with the replica that answers */
#define S_RECALL_SEARCHES 8    /* searches of a recall check (replicas are read in turn) */
#define S_OUTAGE_SEARCHES 8    /* requests the workers complete inside an outage */
#define S_OUTAGE_INSERTS  4
#define S_PROBES          64 /* single-row inserts while a W=2 replica is down */
#define S_EVENTS          30 /* faults of the randomized test */
#define S_WHY_MAX         (SHOAL_ERR_MSG_MAX + 128) /* what a poll saw last, for messages */

/* The harness of the running test (Criterion runs each test in its own process). */
static hosts_t *s_hosts;

static void s_setup(void)
{
    shoal_log_init_from_env();
    /* keep the harness's SIGINT/SIGTERM cleanup: czmq would replace it at first use */
    zsys_handler_set(NULL);
    s_process_suite_init("test_replication");
}

static void s_teardown(void)
{
    hosts_down(&s_hosts);
    s_process_suite_fini();
}

TestSuite(replication, .init = s_setup, .fini = s_teardown, .timeout = 600);

/* ------------------------------------------------------------------------ */
/* Processes on hosts                                                       */
/* ------------------------------------------------------------------------ */


/* The cluster of one test and what the main thread uses to talk to it. */
typedef struct {
    s_node_t shards[S_SHARDS];
    s_node_t coord;
    char shard_list[S_SHARDS * 64];    /* --shards */
    s_dataset_t d;                     /* siftsmall */
    uint64_t *base_ids;                /* 0..d.n-1: the ids loaded, and the allow-list */
    size_t replication, write_quorum;  /* R and W of the collection */
    shoal_client_t *c;                 /* the main thread's client of the coordinator */
    shoal_client_t *shard_c[S_SHARDS]; /* its clients of each shard (made when needed) */
} s_cluster_t;

/* Short failure detection, so that failover shows within the test's seconds. */
static void s_coord_start(s_cluster_t *cl)
{
    s_node_t *n = &cl->coord;
    char bin[S_SUPPORT_PATH_MAX];
    s_bin(bin, "shoal-coordinator");
    char *argv[] = {bin,
                    "--listen",
                    n->listen,
                    "--data-dir",
                    n->files.data_dir,
                    "--shards",
                    cl->shard_list,
                    "--ready-file",
                    n->files.ready,
                    "--ping-interval-ms",
                    S_PING_MS,
                    "--down-after-ms",
                    S_DOWN_MS,
                    "--deadline-ms",
                    S_DEADLINE_MS,
                    "--write-timeout-ms",
                    S_WRITE_MS,
                    "--threads",
                    "1",
                    NULL};
    s_node_start(s_hosts, n, argv);
}

static void s_node_kill9(s_node_t *n)
{
    cr_assert_gt(n->pid, 0, "%s is not running", n->listen);
    int status = hosts_kill9(s_hosts, n->pid);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "status 0x%x", status);
    n->pid = 0;
}

/* ------------------------------------------------------------------------ */
/* The coordinator's account                                                */
/* ------------------------------------------------------------------------ */

/*
 * The coordinator's stats: of every collection (coll NULL; with shards_up and
 * repair.*) or of one (with its placement table). 0 with *info (the caller
 * frees), or the client's error.
 */
static int s_stats(shoal_client_t *c, const char *coll, void **info, size_t *len, shoal_err_t *err)
{
    *info = NULL;
    return shoal_client_stats(c, coll, NULL, info, len, err);
}

/* A number at the dotted path built from fmt: 0 with *value, or -1 when absent. */
static int s_num(const void *info, size_t len, double *value, const char *fmt, ...)
{
    char path[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(path, sizeof path, fmt, ap);
    va_end(ap);
    return wire_info_lookup(info, len, path, value) == 0 ? 0 : -1;
}

/* What the coordinator says about being in sync. */
typedef struct {
    double up;        /* shards_up */
    double stale;     /* collections.<c>.stale_lists */
    double repairing; /* collections.<c>.repairing */
    double intents;   /* collections.<c>.pending_intents */
    double pending;   /* repair.pending: stale lists over all collections */
    double fenced;    /* repair.fenced_shards: shards serving no reads (0 when absent) */
} s_sync_t;

/* Reads s_sync_t: 0, or -1 with why in why. R = 1: the repair keys may be absent (0). */
static int s_sync_read(s_cluster_t *cl, s_sync_t *st, char *why, size_t cap)
{
    void *info;
    size_t len;
    shoal_err_t err;
    if (s_stats(cl->c, NULL, &info, &len, &err) != 0) {
        snprintf(why, cap, "stats: %s", err.msg);
        return -1;
    }
    double absent = cl->replication > 1 ? NAN : 0.0;
    *st = (s_sync_t){absent, absent, absent, absent, absent, 0};
    s_num(info, len, &st->up, "shards_up");
    s_num(info, len, &st->stale, "collections.%s.stale_lists", S_COLL);
    s_num(info, len, &st->repairing, "collections.%s.repairing", S_COLL);
    s_num(info, len, &st->intents, "collections.%s.pending_intents", S_COLL);
    s_num(info, len, &st->pending, "repair.pending");
    s_num(info, len, &st->fenced, "repair.fenced_shards");
    free(info);
    snprintf(why, cap,
             "shards_up=%g stale_lists=%g repairing=%g pending_intents=%g "
             "repair.pending=%g repair.fenced_shards=%g",
             st->up, st->stale, st->repairing, st->intents, st->pending, st->fenced);
    return 0;
}

static int s_sync_done(const s_sync_t *st)
{
    return st->up == S_SHARDS && st->stale == 0 && st->repairing == 0 && st->intents == 0 &&
           st->pending == 0 && st->fenced == 0;
}

/*
 * Polls (bounded) until the coordinator has said for S_STABLE_S that every
 * shard is up and the collection in sync: a shard restarted a moment ago
 * may not have been pinged yet, and a state that holds over ten pings is
 * the coordinator's settled account. The callers then check the shards.
 * Returns the time it took.
 */
static double s_wait_converged(s_cluster_t *cl, const char *after)
{
    double start = s_now(), end = start + S_CONVERGE_WAIT_S, since = 0;
    char last[S_WHY_MAX] = "no answer";
    shoal_client_set_timeout(cl->c, S_POLL_TIMEOUT_MS);
    while (1) {
        s_sync_t st;
        int ok = s_sync_read(cl, &st, last, sizeof last) == 0 && s_sync_done(&st);
        double now = s_now();
        if (!ok)
            since = 0;
        else if (since == 0)
            since = now;
        if (ok && now - since >= S_STABLE_S)
            break;
        cr_assert_lt(now, end, "%s: not converged after %.0f s (last: %s)", after,
                     S_CONVERGE_WAIT_S, last);
        s_sleep_ms(S_POLL_MS);
    }
    shoal_client_set_timeout(cl->c, S_TIMEOUT_MS);
    return s_now() - start;
}

/* Polls (bounded) until the coordinator counts `up` shards up. */
static void s_wait_shards_up(s_cluster_t *cl, double up, const char *why)
{
    double end = s_now() + S_CONVERGE_WAIT_S;
    char last[S_WHY_MAX] = "no answer";
    shoal_client_set_timeout(cl->c, S_POLL_TIMEOUT_MS);
    while (1) {
        s_sync_t st;
        if (s_sync_read(cl, &st, last, sizeof last) == 0 && st.up == up)
            break;
        cr_assert_lt(s_now(), end, "%s: shards_up never %g (last: %s)", why, up, last);
        s_sleep_ms(S_POLL_MS);
    }
    shoal_client_set_timeout(cl->c, S_TIMEOUT_MS);
}

/* ------------------------------------------------------------------------ */
/* Rows, searches and recall                                                */
/* ------------------------------------------------------------------------ */

/*
 * The vector of an inserted id (S_ID_BASE + m or its twin S_TWIN_BASE + m):
 * base row m with coordinate m % dim moved by 0.5, so that no two inserted
 * rows, nor an inserted row and a base row, are equal (siftsmall's values
 * are whole numbers), while each lands in the lists real data would.
 */
static void s_vec_of(const s_dataset_t *d, uint64_t id, float *out)
{
    uint64_t m = id >= S_TWIN_BASE ? id - S_TWIN_BASE : id - S_ID_BASE;
    memcpy(out, d->base + (m % d->n) * d->dim, d->dim * sizeof *out);
    out[m % d->dim] += 0.5f;
}

/* The vectors of ids[0..n) into a new array (the caller frees). */
static float *s_vecs_of(const s_dataset_t *d, const uint64_t *ids, size_t n)
{
    float *v = malloc((n ? n : 1) * d->dim * sizeof *v);
    if (v)
        for (size_t i = 0; i < n; i++)
            s_vec_of(d, ids[i], v + i * d->dim);
    return v;
}

/*
 * Every query, the base ids as the allow-list: 0 with *recall (@S_K against
 * the shipped truth) and *partial, or the client's error. Callable from any
 * thread (no assert).
 */
static int s_search_base(shoal_client_t *c, const s_cluster_t *cl, double *recall, int *partial,
                         shoal_err_t *err)
{
    const s_dataset_t *d = &cl->d;
    shoal_search_opts_t opts = {
        .k = S_K, .nprobe = S_NPROBE, .filter = cl->base_ids, .nfilter = d->n};
    uint64_t *ids = NULL;
    shoal_search_info_t info;
    int rc =
        shoal_client_search_ex(c, S_COLL, d->queries, d->nq, d->dim, &opts, &ids, NULL, &info, err);
    if (rc != 0)
        return rc;
    *recall = gt_recall(ids, S_K, d->gt, d->gtk, d->nq, S_K);
    *partial = info.partial;
    free(ids);
    return 0;
}

/* How an exact search for stored rows' own vectors went. */
typedef struct {
    size_t missed; /* rows whose own id was not among the results exactly once */
    size_t dups;   /* result rows holding some id twice */
    int partial;   /* the answer was partial */
} s_own_t;

/*
 * Exact search (every list) for the vectors of ids[0..n), n <= S_CHECK_CHUNK:
 * 0 with *out added to, or the client's error. Any thread.
 */
static int s_search_own(shoal_client_t *c, const s_dataset_t *d, const uint64_t *ids, size_t n,
                        s_own_t *out, shoal_err_t *err)
{
    float *q = s_vecs_of(d, ids, n);
    if (!q)
        return shoal_err_set(err, SHOAL_ENOMEM, "no memory for %zu queries", n);
    shoal_search_opts_t opts = {.k = S_K, .mode = WIRE_MODE_EXACT, .nprobe = S_NLIST};
    uint64_t *found = NULL;
    shoal_search_info_t info;
    int rc = shoal_client_search_ex(c, S_COLL, q, n, d->dim, &opts, &found, NULL, &info, err);
    free(q);
    if (rc != 0)
        return rc;
    out->partial |= info.partial;
    for (size_t i = 0; i < n; i++) {
        const uint64_t *row = found + i * S_K;
        size_t own = 0, dup = 0;
        for (size_t j = 0; j < S_K; j++) {
            own += row[j] == ids[i];
            for (size_t k = 0; k < j; k++)
                dup |= row[j] == row[k] && row[j] != TOPK_ID_NONE;
        }
        out->missed += own != 1;
        out->dups += dup;
    }
    free(found);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Workers                                                                  */
/* ------------------------------------------------------------------------ */

/* One request a worker made. */
typedef struct {
    double start, end;     /* s_now() around the call */
    int rc;                /* 0 or the client's error */
    int partial;           /* search: the answer said some list had no replica to read */
    double recall;         /* search: recall@S_K of the base search */
    uint32_t fresh_n;      /* search: acknowledged rows then looked for exactly */
    uint32_t fresh_missed; /* ... that were not found exactly once */
    uint64_t first;        /* insert: ids first .. first + n - 1 */
    uint32_t n;
    uint32_t unseen; /* insert, acknowledged: ids a get right after did not find */
} s_op_t;

/* A worker thread. The main thread reads ops[0..nops) while it runs. */
typedef struct {
    const s_cluster_t *cl; /* endpoint, data, allow-list: read-only meanwhile */
    int writer;            /* 1: inserts, 0: searches */
    pthread_t thread;
    atomic_int stop;                   /* set by the main thread */
    s_op_t *ops;                       /* S_OPS_MAX records */
    atomic_size_t nops;                /* records complete (release / acquire) */
    atomic_uint_fast64_t *acked;       /* the writer's latest acknowledged batch: first | n << 32 */
    uint64_t next;                     /* writer: the next id to insert */
    char first_err[SHOAL_ERR_MSG_MAX]; /* the first error it saw, for messages */
} s_worker_t;

static void s_worker_note(s_worker_t *w, const shoal_err_t *err)
{
    if (!w->first_err[0])
        snprintf(w->first_err, sizeof w->first_err, "%s", err->msg);
}

/* The searcher's round: the base search, then the latest acknowledged rows. */
static void s_worker_search(s_worker_t *w, shoal_client_t *c, s_op_t *op)
{
    shoal_err_t err;
    op->rc = s_search_base(c, w->cl, &op->recall, &op->partial, &err);
    uint64_t acked = atomic_load(w->acked);
    uint64_t ids[S_FRESH_MAX];
    size_t n = acked >> 32 < S_FRESH_MAX ? (size_t)(acked >> 32) : S_FRESH_MAX;
    for (size_t i = 0; i < n; i++)
        ids[i] = S_ID_BASE + (acked & 0xffffffffu) + i;
    s_own_t own = {0, 0, 0};
    if (op->rc == 0 && n > 0 && (op->rc = s_search_own(c, &w->cl->d, ids, n, &own, &err)) == 0) {
        op->fresh_n = (uint32_t)n;
        op->fresh_missed = (uint32_t)(own.missed + own.dups);
        op->partial |= own.partial;
    }
    if (op->rc != 0)
        s_worker_note(w, &err);
}

/* The writer's round: a batch of new rows; once acknowledged, a get of them. */
static void s_worker_insert(s_worker_t *w, shoal_client_t *c, s_op_t *op)
{
    const s_dataset_t *d = &w->cl->d;
    uint64_t ids[S_INSERT_BATCH];
    for (size_t i = 0; i < S_INSERT_BATCH; i++)
        ids[i] = w->next + i;
    float *v = s_vecs_of(d, ids, S_INSERT_BATCH);
    shoal_err_t err;
    op->first = w->next;
    op->n = S_INSERT_BATCH;
    w->next += S_INSERT_BATCH;
    op->rc = v ? shoal_client_insert(c, S_COLL, ids, v, S_INSERT_BATCH, d->dim, NULL, &err)
               : shoal_err_set(&err, SHOAL_ENOMEM, "no memory");
    op->end = s_now();
    free(v);
    if (op->rc != 0) {
        s_worker_note(w, &err);
        return;
    }
    atomic_store(w->acked, (op->first - S_ID_BASE) | (uint64_t)S_INSERT_BATCH << 32);
    uint8_t *found = NULL;
    float *vecs = NULL;
    size_t dim = 0;
    if (shoal_client_get(c, S_COLL, ids, S_INSERT_BATCH, &found, &vecs, &dim, &err) == 0)
        for (size_t i = 0; i < S_INSERT_BATCH; i++)
            op->unseen += !found[i];
    free(found);
    free(vecs);
}

static void *s_worker_run(void *arg)
{
    s_worker_t *w = arg;
    shoal_err_t err;
    shoal_client_t *c = shoal_client_new(w->cl->coord.listen, S_OP_TIMEOUT_MS, &err);
    if (!c) {
        s_worker_note(w, &err);
        return NULL;
    }
    while (!atomic_load(&w->stop)) {
        size_t n = atomic_load(&w->nops);
        if (n == S_OPS_MAX || (w->writer && w->next >= S_ID_BASE + S_INSERT_MAX)) {
            s_sleep_ms(S_POLL_MS); /* out of room: idle until stopped */
            continue;
        }
        s_op_t *op = &w->ops[n];
        memset(op, 0, sizeof *op);
        op->start = s_now();
        if (w->writer)
            s_worker_insert(w, c, op);
        else
            s_worker_search(w, c, op);
        if (!w->writer)
            op->end = s_now(); /* the writer's ends before its get */
        atomic_store_explicit(&w->nops, n + 1, memory_order_release);
        s_sleep_ms(w->writer ? S_WRITE_PAUSE_MS : S_SEARCH_PAUSE_MS);
    }
    shoal_client_destroy(&c);
    return NULL;
}

/* The searcher and the writer, sharing the writer's latest acknowledged batch. */
typedef struct {
    s_worker_t search, write;
    atomic_uint_fast64_t acked;
} s_load_t;

/* Starts both workers from the main thread (which is in the controller's namespace). */
static void s_load_start(s_load_t *l, const s_cluster_t *cl)
{
    memset(l, 0, sizeof *l);
    atomic_init(&l->acked, 0);
    s_worker_t *ws[] = {&l->search, &l->write};
    for (size_t i = 0; i < 2; i++) {
        s_worker_t *w = ws[i];
        w->cl = cl;
        w->writer = w == &l->write;
        w->acked = &l->acked;
        w->next = S_ID_BASE;
        atomic_init(&w->stop, 0);
        atomic_init(&w->nops, 0);
        w->ops = calloc(S_OPS_MAX, sizeof *w->ops);
        cr_assert_not_null(w->ops);
        cr_assert_eq(pthread_create(&w->thread, NULL, s_worker_run, w), 0);
    }
}

static void s_load_stop(s_load_t *l)
{
    atomic_store(&l->search.stop, 1);
    atomic_store(&l->write.stop, 1);
    pthread_join(l->search.thread, NULL);
    pthread_join(l->write.thread, NULL);
}

static void s_load_free(s_load_t *l)
{
    free(l->search.ops);
    free(l->write.ops);
    memset(l, 0, sizeof *l);
}

/*
 * Requests of w that started at or after t and are complete; at least
 * `want` when w has run out of room (ids or records) and only waits.
 */
static size_t s_done_since(s_worker_t *w, double t, size_t want)
{
    size_t n = atomic_load_explicit(&w->nops, memory_order_acquire), count = 0;
    if (n == S_OPS_MAX || (w->writer && w->next >= S_ID_BASE + S_INSERT_MAX))
        return want;
    for (size_t i = n; i-- > 0 && w->ops[i].start >= t;)
        count++;
    return count;
}

/* Polls (bounded) until each worker has completed its share of requests started since t. */
static void s_wait_progress(s_load_t *l, double t, size_t searches, size_t inserts,
                            const char *during)
{
    double end = s_now() + S_PROGRESS_WAIT_S;
    while (s_done_since(&l->search, t, searches) < searches ||
           s_done_since(&l->write, t, inserts) < inserts) {
        cr_assert_lt(s_now(), end,
                     "%s: %zu searches and %zu inserts in %.0f s (first errors: %s / %s)", during,
                     s_done_since(&l->search, t, searches), s_done_since(&l->write, t, inserts),
                     S_PROGRESS_WAIT_S, l->search.first_err, l->write.first_err);
        s_sleep_ms(S_POLL_MS);
    }
}

/* ------------------------------------------------------------------------ */
/* Judging what the workers saw                                             */
/* ------------------------------------------------------------------------ */

/* When a fault began and, for one the requests are not held to, when it was over. */
typedef struct {
    double start; /* the fault was injected (requests in flight then are excused) */
    double end;   /* > start: every request overlapping [start, end] is excused too */
} s_fault_t;

/* Whether op is excused by one of the faults. */
static int s_excused(const s_op_t *op, const s_fault_t *faults, size_t nfaults)
{
    for (size_t f = 0; f < nfaults; f++) {
        if (op->start < faults[f].start && op->end > faults[f].start)
            return 1;
        if (faults[f].end > faults[f].start && op->start < faults[f].end &&
            op->end > faults[f].start)
            return 1;
    }
    return 0;
}

/*
 * Every search not excused was answered, complete, with recall within
 * S_RECALL_TOL of baseline, and found the latest acknowledged rows.
 */
static void s_judge_searches(const s_worker_t *w, double baseline, const s_fault_t *faults,
                             size_t nfaults, const char *what)
{
    size_t n = atomic_load(&w->nops), judged = 0, failed = 0, partial = 0, low = 0, fresh = 0;
    size_t fresh_missed = 0;
    double worst = 1.0;
    for (size_t i = 0; i < n; i++) {
        const s_op_t *op = &w->ops[i];
        if (s_excused(op, faults, nfaults))
            continue;
        judged++;
        failed += op->rc != 0;
        if (op->rc != 0)
            continue;
        partial += op->partial != 0;
        low += op->recall < baseline - S_RECALL_TOL;
        worst = op->recall < worst ? op->recall : worst;
        fresh += op->fresh_n;
        fresh_missed += op->fresh_missed;
    }
    cr_log_info("%s: %zu searches (%zu judged), worst recall %.3f (baseline %.3f), "
                "%zu acknowledged rows looked for",
                what, n, judged, worst, baseline, fresh);
    cr_assert_gt(judged, 0, "%s: no search to judge", what);
    cr_assert_eq(failed, 0, "%s: %zu of %zu searches failed (first error: %s)", what, failed,
                 judged, w->first_err);
    cr_assert_eq(partial, 0, "%s: %zu of %zu searches were partial", what, partial, judged);
    cr_assert_eq(low, 0, "%s: %zu searches below recall %.3f (worst %.3f)", what, low,
                 baseline - S_RECALL_TOL, worst);
    cr_assert_eq(fresh_missed, 0, "%s: %zu of %zu acknowledged rows not found exactly once", what,
                 fresh_missed, fresh);
}

/* Every insert not excused was acknowledged and its rows were readable right away. */
static void s_judge_inserts(const s_worker_t *w, const s_fault_t *faults, size_t nfaults,
                            const char *what)
{
    size_t n = atomic_load(&w->nops), judged = 0, failed = 0, unseen = 0;
    for (size_t i = 0; i < n; i++) {
        const s_op_t *op = &w->ops[i];
        if (s_excused(op, faults, nfaults))
            continue;
        judged++;
        failed += op->rc != 0;
        unseen += op->unseen;
    }
    cr_log_info("%s: %zu inserts (%zu judged)", what, n, judged);
    cr_assert_eq(failed, 0, "%s: %zu of %zu inserts failed (first error: %s)", what, failed, judged,
                 w->first_err);
    cr_assert_eq(unseen, 0, "%s: %zu acknowledged rows not found by a get right after", what,
                 unseen);
}

/* The writer's ids: acknowledged ones and those whose insert failed (may or may not exist). */
typedef struct {
    uint64_t *acked, *unknown;
    size_t nacked, nunknown;
} s_idsets_t;

static void s_idsets_from(s_idsets_t *s, const s_worker_t *w)
{
    size_t n = atomic_load(&w->nops), total = 0;
    for (size_t i = 0; i < n; i++)
        total += w->ops[i].n;
    s->acked = calloc(total + 1, sizeof *s->acked);
    s->unknown = calloc(total + 1, sizeof *s->unknown);
    cr_assert(s->acked && s->unknown);
    s->nacked = s->nunknown = 0;
    for (size_t i = 0; i < n; i++)
        for (uint32_t j = 0; j < w->ops[i].n; j++) {
            if (w->ops[i].rc == 0)
                s->acked[s->nacked++] = w->ops[i].first + j;
            else
                s->unknown[s->nunknown++] = w->ops[i].first + j;
        }
}

static void s_idsets_free(s_idsets_t *s)
{
    free(s->acked);
    free(s->unknown);
    memset(s, 0, sizeof *s);
}

/* ------------------------------------------------------------------------ */
/* Checking the stored state                                                */
/* ------------------------------------------------------------------------ */

/* The main thread's client of shard s. */
static shoal_client_t *s_shard_client(s_cluster_t *cl, size_t s)
{
    if (!cl->shard_c[s]) {
        shoal_err_t err;
        cl->shard_c[s] = shoal_client_new(cl->shards[s].listen, S_TIMEOUT_MS, &err);
        cr_assert_not_null(cl->shard_c[s], "%s", err.msg);
    }
    return cl->shard_c[s];
}

/* The rows shard s holds (its list counts' sum). */
static uint64_t s_shard_rows(s_cluster_t *cl, size_t s)
{
    uint32_t *lists = NULL;
    uint64_t *n = NULL, total = 0;
    size_t nl = 0;
    shoal_err_t err;
    int rc = shoal_client_list_counts(s_shard_client(cl, s), S_COLL, &lists, &n, &nl, &err);
    cr_assert_eq(rc, 0, "list_counts of shard %zu: %s", s, err.msg);
    for (size_t i = 0; i < nl; i++)
        total += n[i];
    free(lists);
    free(n);
    return total;
}

/* Per list, the shards of its replicas, from the coordinator's stats. */
typedef struct {
    size_t nlist, r;
    uint32_t owner[S_NLIST][S_SHARDS]; /* owner[l][r]: shard of list l's replica r */
    double count;                      /* collections.<c>.count */
    double shard_vectors[S_SHARDS];    /* shards.<s>.vectors, or NAN when absent */
} s_placement_t;

static void s_placement_read(s_cluster_t *cl, s_placement_t *p)
{
    void *info;
    size_t len;
    shoal_err_t err;
    cr_assert_eq(s_stats(cl->c, S_COLL, &info, &len, &err), 0, "stats: %s", err.msg);
    double nlist = 0, r = 1;
    cr_assert_eq(s_num(info, len, &nlist, "collections.%s.nlist", S_COLL), 0, "no nlist");
    cr_assert_eq(nlist, S_NLIST);
    if (s_num(info, len, &r, "collections.%s.replication", S_COLL) != 0)
        cr_assert_eq(cl->replication, 1, "stats has no replication for an R=%zu collection",
                     cl->replication);
    cr_assert_eq(r, (double)cl->replication, "replication %g, created with %zu", r,
                 cl->replication);
    p->nlist = S_NLIST;
    p->r = cl->replication;
    cr_assert_eq(s_num(info, len, &p->count, "collections.%s.count", S_COLL), 0, "no count");
    for (size_t l = 0; l < p->nlist; l++)
        for (size_t k = 0; k < p->r; k++) {
            double s = -1;
            cr_assert_eq(s_num(info, len, &s, "collections.%s.placement.%zu.%zu", S_COLL, l, k), 0,
                         "stats has no placement.%zu.%zu", l, k);
            p->owner[l][k] = s < 0 || s >= S_SHARDS ? S_SHARDS : (uint32_t)s;
        }
    for (size_t s = 0; s < S_SHARDS; s++) {
        p->shard_vectors[s] = NAN;
        s_num(info, len, &p->shard_vectors[s], "collections.%s.shards.%zu.vectors", S_COLL, s);
    }
    free(info);
    for (size_t l = 0; l < p->nlist; l++)
        for (size_t k = 0; k < p->r; k++) {
            cr_assert_lt(p->owner[l][k], S_SHARDS, "list %zu replica %zu on no shard", l, k);
            for (size_t j = 0; j < k; j++)
                cr_assert_neq(p->owner[l][k], p->owner[l][j], "list %zu twice on shard %u", l,
                              p->owner[l][k]);
        }
}

static int s_placed_on(const s_placement_t *p, size_t l, size_t s)
{
    for (size_t k = 0; k < p->r; k++)
        if (p->owner[l][k] == s)
            return 1;
    return 0;
}

/*
 * The shards' own per-list counts: equal across each list's replicas and
 * summing to the catalog's count; no shard holds a list it is not a replica
 * of; each shard's total as the coordinator's stats say (when they say).
 */
static void s_assert_replicas_agree(s_cluster_t *cl, const char *after)
{
    s_placement_t p;
    s_placement_read(cl, &p);
    uint64_t counts[S_SHARDS][S_NLIST];
    memset(counts, 0, sizeof counts);
    for (size_t s = 0; s < S_SHARDS; s++) {
        uint32_t *lists = NULL;
        uint64_t *n = NULL;
        size_t nl = 0;
        shoal_err_t err;
        int rc = shoal_client_list_counts(s_shard_client(cl, s), S_COLL, &lists, &n, &nl, &err);
        cr_assert_eq(rc, 0, "%s: list_counts of shard %zu: %s", after, s, err.msg);
        uint64_t total = 0;
        for (size_t i = 0; i < nl; i++) {
            cr_assert_lt(lists[i], S_NLIST, "%s: shard %zu has list %u", after, s, lists[i]);
            cr_assert(s_placed_on(&p, lists[i], s),
                      "%s: shard %zu holds %" PRIu64 " rows of list %u, not one of its replicas",
                      after, s, n[i], lists[i]);
            counts[s][lists[i]] = n[i];
            total += n[i];
        }
        if (!isnan(p.shard_vectors[s]))
            cr_assert_eq((double)total, p.shard_vectors[s],
                         "%s: shard %zu holds %" PRIu64 " rows, the coordinator says %g", after, s,
                         total, p.shard_vectors[s]);
        free(lists);
        free(n);
    }
    uint64_t sum = 0;
    for (size_t l = 0; l < p.nlist; l++) {
        uint64_t first = counts[p.owner[l][0]][l];
        for (size_t k = 1; k < p.r; k++)
            cr_assert_eq(counts[p.owner[l][k]][l], first,
                         "%s: list %zu: %" PRIu64 " rows on shard %u, %" PRIu64 " on shard %u",
                         after, l, first, p.owner[l][0], counts[p.owner[l][k]][l], p.owner[l][k]);
        sum += first;
    }
    cr_assert_eq((double)sum, p.count, "%s: the lists hold %" PRIu64 " rows, the catalog counts %g",
                 after, sum, p.count);
}

/* get of ids[0..n) through c: found flags (the caller frees); vectors checked bit for bit. */
static uint8_t *s_get_checked(shoal_client_t *c, const s_dataset_t *d, const uint64_t *ids,
                              size_t n, const char *what)
{
    uint8_t *all = calloc(n + 1, 1);
    float *want = malloc(d->dim * sizeof *want);
    cr_assert(all && want);
    for (size_t at = 0; at < n; at += S_CHECK_CHUNK) {
        size_t m = n - at < S_CHECK_CHUNK ? n - at : S_CHECK_CHUNK;
        uint8_t *found = NULL;
        float *vecs = NULL;
        size_t dim = 0;
        shoal_err_t err;
        int rc = shoal_client_get(c, S_COLL, ids + at, m, &found, &vecs, &dim, &err);
        cr_assert_eq(rc, 0, "%s: get: %s", what, err.msg);
        for (size_t i = 0; i < m; i++) {
            all[at + i] = found[i];
            if (!found[i])
                continue;
            s_vec_of(d, ids[at + i], want);
            cr_assert(memcmp(vecs + i * dim, want, d->dim * sizeof *want) == 0,
                      "%s: id %" PRIu64 " holds another vector", what, ids[at + i]);
        }
        free(found);
        free(vecs);
    }
    free(want);
    return all;
}

/*
 * Every acknowledged id is stored with its vector; ids whose insert failed
 * may be stored (then with theirs); every stored inserted row is found
 * exactly once by an exact search of its vector, in answers holding no id
 * twice; the catalog counts base + stored rows.
 */
static void s_assert_rows(s_cluster_t *cl, const s_idsets_t *s, const char *after)
{
    const s_dataset_t *d = &cl->d;
    uint8_t *acked = s_get_checked(cl->c, d, s->acked, s->nacked, after);
    uint8_t *unknown = s_get_checked(cl->c, d, s->unknown, s->nunknown, after);
    size_t lost = 0, stored = 0;
    uint64_t *present = malloc((s->nacked + s->nunknown + 1) * sizeof *present);
    cr_assert_not_null(present);
    for (size_t i = 0; i < s->nacked; i++) {
        lost += !acked[i];
        if (acked[i])
            present[stored++] = s->acked[i];
    }
    for (size_t i = 0; i < s->nunknown; i++)
        if (unknown[i])
            present[stored++] = s->unknown[i];
    cr_assert_eq(lost, 0, "%s: %zu of %zu acknowledged rows lost", after, lost, s->nacked);
    s_own_t own = {0, 0, 0};
    for (size_t at = 0; at < stored; at += S_CHECK_CHUNK) {
        size_t m = stored - at < S_CHECK_CHUNK ? stored - at : S_CHECK_CHUNK;
        shoal_err_t err;
        cr_assert_eq(s_search_own(cl->c, d, present + at, m, &own, &err), 0, "%s: search: %s",
                     after, err.msg);
    }
    cr_assert_eq(own.partial, 0, "%s: a partial answer after convergence", after);
    cr_assert_eq(own.missed, 0, "%s: %zu of %zu stored rows not found exactly once", after,
                 own.missed, stored);
    cr_assert_eq(own.dups, 0, "%s: %zu answers hold an id twice", after, own.dups);
    cr_assert_eq(s_stat(cl->c, "collections." S_COLL ".count"), (double)(d->n + stored),
                 "%s: the catalog's count is not %zu base + %zu inserted rows", after, d->n,
                 stored);
    cr_log_info("%s: %zu acknowledged and %zu of %zu unacknowledged rows stored, each found once",
                after, s->nacked, stored - s->nacked, s->nunknown);
    free(present);
    free(acked);
    free(unknown);
}

/*
 * Searches by the main thread, enough for the coordinator's round-robin to
 * read every list from each of its replicas: complete, recall within the
 * tolerance of baseline.
 */
static void s_assert_recall(s_cluster_t *cl, double baseline, const char *after)
{
    for (size_t i = 0; i < S_RECALL_SEARCHES; i++) {
        double recall = 0;
        int partial = 0;
        shoal_err_t err;
        cr_assert_eq(s_search_base(cl->c, cl, &recall, &partial, &err), 0, "%s: search: %s", after,
                     err.msg);
        cr_assert_eq(partial, 0, "%s: partial answer", after);
        cr_assert_geq(recall, baseline - S_RECALL_TOL, "%s: search %zu: recall %.3f, baseline %.3f",
                      after, i, recall, baseline);
    }
}

/* Converged, replicas agree, every acknowledged row stored once, recall as before. */
static void s_assert_settled(s_cluster_t *cl, const s_idsets_t *ids, double baseline,
                             const char *after)
{
    double took = s_wait_converged(cl, after);
    cr_log_info("%s: converged in %.1f s", after, took);
    s_assert_replicas_agree(cl, after);
    s_assert_rows(cl, ids, after);
    s_assert_recall(cl, baseline, after);
}

/* ------------------------------------------------------------------------ */
/* Cluster up and down                                                      */
/* ------------------------------------------------------------------------ */

/*
 * Creates the collection (retried until the coordinator has heard from every
 * shard), trains it on the base and loads the base.
 */
static void s_load_base(s_cluster_t *cl)
{
    const s_dataset_t *d = &cl->d;
    shoal_err_t err;
    shoal_create_opts_t copts = {
        .nlist = S_NLIST, .replication = cl->replication, .write_quorum = cl->write_quorum};
    double end = s_now() + S_START_WAIT_S;
    int rc;
    shoal_client_set_timeout(cl->c, S_POLL_TIMEOUT_MS);
    while ((rc = shoal_client_create_ivf(cl->c, S_COLL, d->dim, d->metric, &copts, &err)) != 0) {
        cr_assert(rc == SHOAL_EUNAVAIL || rc == SHOAL_ETIMEOUT, "create: %s", err.msg);
        cr_assert_lt(s_now(), end, "the coordinator cannot reach every shard: %s", err.msg);
        s_sleep_ms(S_POLL_MS);
    }
    shoal_client_set_timeout(cl->c, S_TIMEOUT_MS);
    rc = shoal_client_train(cl->c, S_COLL, d->base, d->n, d->dim, NULL, NULL, &err);
    cr_assert_eq(rc, 0, "train: %s", err.msg);
    for (size_t at = 0; at < d->n; at += S_LOAD_CHUNK) {
        size_t m = d->n - at < S_LOAD_CHUNK ? d->n - at : S_LOAD_CHUNK;
        rc = shoal_client_insert(cl->c, S_COLL, cl->base_ids + at, d->base + at * d->dim, m, d->dim,
                                 NULL, &err);
        cr_assert_eq(rc, 0, "insert rows %zu..: %s", at, err.msg);
    }
}

/*
 * 5 hosts, 4 shards and the coordinator started, siftsmall loaded into an
 * R/W collection, converged. Returns the baseline recall.
 */
static double s_cluster_up(s_cluster_t *cl, size_t replication, size_t write_quorum)
{
    memset(cl, 0, sizeof *cl);
    s_hosts = s_node_hosts_up_gated(S_SHARDS + 1, "minutes of many-host faults");
    shoal_err_t err;
    /* first, before any ZeroMQ context exists (tests/test_hosts.h says why) */
    cr_assert_eq(hosts_enter_controller(s_hosts, &err), 0, "%s", err.msg);
    s_dataset_load(&cl->d, "siftsmall", S_K);
    cl->replication = replication;
    cl->write_quorum = write_quorum;
    cl->base_ids = malloc(cl->d.n * sizeof *cl->base_ids);
    cr_assert_not_null(cl->base_ids);
    for (size_t i = 0; i < cl->d.n; i++)
        cl->base_ids[i] = i;
    for (size_t i = 0; i < S_SHARDS; i++) {
        char name[16];
        snprintf(name, sizeof name, "shard%zu", i);
        s_node_init(s_hosts, &cl->shards[i], name, i, S_SHARD_PORT);
        s_node_shard_start(s_hosts, &cl->shards[i]);
        size_t len = strlen(cl->shard_list);
        snprintf(cl->shard_list + len, sizeof cl->shard_list - len, "%s%s", i ? "," : "",
                 cl->shards[i].listen);
    }
    s_node_init(s_hosts, &cl->coord, "coord", S_COORD_HOST, S_COORD_PORT);
    s_coord_start(cl);
    cl->c = shoal_client_new(cl->coord.listen, S_TIMEOUT_MS, &err);
    cr_assert_not_null(cl->c, "%s", err.msg);
    s_load_base(cl);
    s_wait_converged(cl, "loaded");
    double recall = 0;
    int partial = 0;
    cr_assert_eq(s_search_base(cl->c, cl, &recall, &partial, &err), 0, "search: %s", err.msg);
    cr_assert_eq(partial, 0, "partial answer with every shard up");
    cr_log_info("R=%zu W=%zu: baseline recall@%d %.3f", replication, write_quorum, S_K, recall);
    return recall;
}

/* Every process stopped cleanly (exit 0, no sanitizer report), clients and hosts gone. */
static void s_cluster_down(s_cluster_t *cl)
{
    for (size_t s = 0; s < S_SHARDS; s++)
        shoal_client_destroy(&cl->shard_c[s]);
    shoal_client_destroy(&cl->c);
    s_node_stop(s_hosts, &cl->coord, S_STOP_WAIT_S);
    for (size_t s = 0; s < S_SHARDS; s++)
        s_node_stop(s_hosts, &cl->shards[s], S_STOP_WAIT_S);
    hosts_down(&s_hosts);
    free(cl->base_ids);
    s_dataset_free(&cl->d);
}

/* ------------------------------------------------------------------------ */
/* a, b, c: one fault under load                                            */
/* ------------------------------------------------------------------------ */

typedef enum { S_FAULT_KILL, S_FAULT_PARTITION, S_FAULT_FREEZE, S_FAULT_WIPE } s_kind_t;

static const char *s_kind_name(s_kind_t kind)
{
    static const char *const names[] = {"kill -9", "partition", "freeze", "wipe"};
    return names[kind];
}

/* Injects a fault on node n (kill and wipe restart nothing yet). */
static void s_fault_inject(s_node_t *n, s_kind_t kind)
{
    shoal_err_t err;
    if (kind == S_FAULT_KILL || kind == S_FAULT_WIPE)
        s_node_kill9(n);
    if (kind == S_FAULT_WIPE)
        s_remove_tree(n->files.data_dir);
    if (kind == S_FAULT_PARTITION)
        cr_assert_eq(hosts_partition(s_hosts, n->host, &err), 0, "%s", err.msg);
    if (kind == S_FAULT_FREEZE)
        cr_assert_eq(hosts_freeze(s_hosts, n->pid), 0);
}

/* Ends a fault of node n: restart (cl's coordinator or a shard), heal or thaw. */
static void s_fault_end(s_cluster_t *cl, s_node_t *n, s_kind_t kind)
{
    shoal_err_t err;
    if (kind == S_FAULT_KILL || kind == S_FAULT_WIPE) {
        if (n == &cl->coord)
            s_coord_start(cl);
        else
            s_node_shard_start(s_hosts, n);
    }
    if (kind == S_FAULT_PARTITION)
        cr_assert_eq(hosts_heal(s_hosts, n->host, &err), 0, "%s", err.msg);
    if (kind == S_FAULT_FREEZE)
        cr_assert_eq(hosts_thaw(s_hosts, n->pid), 0);
}

/*
 * Searches and inserts run; shard `victim` gets the fault; the workers must
 * complete requests during it; it ends (a wiped shard restarts at once, so
 * that the coordinator may not even see it down); requests go on; then
 * everything is judged. Only requests in flight at the fault are excused.
 */
static void s_one_fault(s_kind_t kind, size_t victim)
{
    s_cluster_t cl;
    double baseline = s_cluster_up(&cl, 2, 1);
    s_load_t load;
    s_load_start(&load, &cl);
    s_wait_progress(&load, s_now(), S_OUTAGE_SEARCHES, S_OUTAGE_INSERTS, "before the fault");

    /* a wiped shard holds nothing but what the repairs copy back */
    double held = (double)s_shard_rows(&cl, victim), copied = s_stat(cl.c, "repair.rows_copied");
    s_fault_t fault = {s_now(), 0};
    s_fault_inject(&cl.shards[victim], kind);
    if (kind != S_FAULT_WIPE)
        s_wait_progress(&load, s_now(), S_OUTAGE_SEARCHES, S_OUTAGE_INSERTS, "during the fault");
    s_fault_end(&cl, &cl.shards[victim], kind);
    s_wait_progress(&load, s_now(), S_OUTAGE_SEARCHES, S_OUTAGE_INSERTS, "after the fault");
    s_wait_converged(&cl, "after the fault, under load");
    s_wait_progress(&load, s_now(), S_OUTAGE_SEARCHES, S_OUTAGE_INSERTS, "after convergence");
    s_load_stop(&load);

    char what[64];
    snprintf(what, sizeof what, "%s of shard %zu", s_kind_name(kind), victim);
    copied = s_stat(cl.c, "repair.rows_copied") - copied;
    cr_log_info("%s: shard %zu held %.0f rows; the repairs copied %.0f", what, victim, held,
                copied);
    if (kind == S_FAULT_WIPE)
        cr_assert_geq(copied, held, "%s: %.0f rows copied back, the shard held %.0f", what, copied,
                      held);
    s_judge_searches(&load.search, baseline, &fault, 1, what);
    s_judge_inserts(&load.write, &fault, 1, what);
    s_idsets_t ids;
    s_idsets_from(&ids, &load.write);
    s_assert_settled(&cl, &ids, baseline, what);
    s_idsets_free(&ids);
    s_load_free(&load);
    s_cluster_down(&cl);
}

Test(replication, a_shard_killed_under_load_fails_over_and_catches_up)
{
    s_one_fault(S_FAULT_KILL, 1);
}

Test(replication, b_partitioned_host_fails_over_and_catches_up_after_healing)
{
    s_one_fault(S_FAULT_PARTITION, 2);
}

Test(replication, c_wiped_shard_under_load_is_rebuilt_from_its_replicas)
{
    s_one_fault(S_FAULT_WIPE, 3);
}

/*
 * The same wipe with no request meanwhile. A shard back faster than
 * --down-after-ms was never seen down, and no write failed on it: only the
 * shard itself (its lists are gone) can tell the coordinator, which must
 * not let it serve reads of them until they are rebuilt.
 */
Test(replication, c_wiped_shard_without_traffic_is_rebuilt_from_its_replicas)
{
    s_cluster_t cl;
    double baseline = s_cluster_up(&cl, 2, 1);
    const size_t victim = 3;
    double held = (double)s_shard_rows(&cl, victim), copied = s_stat(cl.c, "repair.rows_copied");
    s_fault_inject(&cl.shards[victim], S_FAULT_WIPE);
    s_fault_end(&cl, &cl.shards[victim], S_FAULT_WIPE);
    const char *what = "shard 3 wiped and restarted, no traffic";
    double took = s_wait_converged(&cl, what);
    cr_log_info("%s: converged in %.1f s", what, took);
    s_assert_recall(&cl, baseline, what);
    s_assert_replicas_agree(&cl, what);
    copied = s_stat(cl.c, "repair.rows_copied") - copied;
    cr_assert_geq(copied, held, "%s: %.0f rows copied back, the shard held %.0f", what, copied,
                  held);
    s_cluster_down(&cl);
}

/*
 * A shard down, then the coordinator kill -9'd and restarted on its data dir
 * while the shard's replicas owe writes: the marks are the catalog's, so
 * the new coordinator process still reads around them and rebuilds them
 * once the shard is back. Requests in flight at the shard's kill and those
 * overlapping the coordinator's absence are excused.
 */
Test(replication, f_coordinator_restart_while_a_replica_owes_writes)
{
    s_cluster_t cl;
    double baseline = s_cluster_up(&cl, 2, 1);
    s_load_t load;
    s_load_start(&load, &cl);
    s_wait_progress(&load, s_now(), S_OUTAGE_SEARCHES, S_OUTAGE_INSERTS, "before the faults");
    s_fault_t faults[2] = {{s_now(), 0}, {0, 0}};
    s_fault_inject(&cl.shards[2], S_FAULT_KILL);
    s_wait_progress(&load, s_now(), S_OUTAGE_SEARCHES, S_OUTAGE_INSERTS, "shard 2 down");
    faults[1].start = s_now();
    s_fault_inject(&cl.coord, S_FAULT_KILL);
    s_fault_end(&cl, &cl.coord, S_FAULT_KILL);
    s_wait_shards_up(&cl, S_SHARDS - 1, "the coordinator restarted, shard 2 down");
    faults[1].end = s_now();
    s_wait_progress(&load, s_now(), S_OUTAGE_SEARCHES, S_OUTAGE_INSERTS,
                    "the coordinator restarted, shard 2 down");
    s_fault_end(&cl, &cl.shards[2], S_FAULT_KILL);
    s_wait_converged(&cl, "shard 2 back");
    s_wait_progress(&load, s_now(), S_OUTAGE_SEARCHES, S_OUTAGE_INSERTS, "after convergence");
    s_load_stop(&load);

    const char *what = "coordinator restarted while shard 2 was down";
    s_judge_searches(&load.search, baseline, faults, 2, what);
    s_judge_inserts(&load.write, faults, 2, what);
    s_idsets_t ids;
    s_idsets_from(&ids, &load.write);
    s_assert_settled(&cl, &ids, baseline, what);
    s_idsets_free(&ids);
    s_load_free(&load);
    s_cluster_down(&cl);
}

/* ------------------------------------------------------------------------ */
/* d: W=2 with a replica down                                               */
/* ------------------------------------------------------------------------ */

/* Inserts ids[0..n) (vectors s_vec_of) through the main client; the client's code. */
static int s_insert_ids(s_cluster_t *cl, const uint64_t *ids, size_t n, shoal_err_t *err)
{
    float *v = s_vecs_of(&cl->d, ids, n);
    cr_assert_not_null(v);
    int rc = shoal_client_insert(cl->c, S_COLL, ids, v, n, cl->d.dim, NULL, err);
    free(v);
    return rc;
}

/* How many of ids[0..n) c's get finds (c: the coordinator or one shard). */
static size_t s_count_found(shoal_client_t *c, const s_dataset_t *d, const uint64_t *ids, size_t n,
                            const char *what)
{
    uint8_t *found = s_get_checked(c, d, ids, n, what);
    size_t count = 0;
    for (size_t i = 0; i < n; i++)
        count += found[i];
    free(found);
    return count;
}

/* None of ids[0..n) is stored: not through the coordinator, not on any running shard. */
static void s_assert_nowhere(s_cluster_t *cl, const uint64_t *ids, size_t n, const char *what)
{
    cr_assert_eq(s_count_found(cl->c, &cl->d, ids, n, what), 0,
                 "%s: refused rows readable through the coordinator", what);
    for (size_t s = 0; s < S_SHARDS; s++)
        if (cl->shards[s].pid > 0)
            cr_assert_eq(s_count_found(s_shard_client(cl, s), &cl->d, ids, n, what), 0,
                         "%s: refused rows stored on shard %zu", what, s);
}

/* Whether shard s stores id (a get on the shard itself). */
static int s_on_shard(s_cluster_t *cl, size_t s, uint64_t id)
{
    return s_count_found(s_shard_client(cl, s), &cl->d, &id, 1, "shard get") == 1;
}

Test(replication, d_quorum_of_two_refuses_writes_to_a_down_replica_whole)
{
    s_cluster_t cl;
    double baseline = s_cluster_up(&cl, 2, 2);
    const size_t down = 0;
    shoal_err_t err;

    /* an insert sent before the coordinator can know: two replicas cannot both hold it */
    uint64_t early[S_PROBES];
    for (size_t i = 0; i < S_PROBES; i++)
        early[i] = S_ID_BASE + S_PROBES + i;
    s_node_kill9(&cl.shards[down]);
    int early_rc = s_insert_ids(&cl, early, S_PROBES, &err);
    cr_log_info("an insert right after the kill: %s", early_rc ? err.msg : "acknowledged");
    cr_assert_neq(early_rc, 0, "a W=2 write acknowledged with a replica of its lists dead");
    s_wait_shards_up(&cl, S_SHARDS - 1, "shard 0 killed");

    /* single rows: refused whole (unavailable) when their list has a replica on shard 0 */
    uint64_t refused[S_PROBES + 1], accepted[S_PROBES];
    size_t nrefused = 0, naccepted = 0;
    for (size_t i = 0; i < S_PROBES; i++) {
        uint64_t id = S_ID_BASE + i;
        int rc = s_insert_ids(&cl, &id, 1, &err);
        cr_assert(rc == 0 || rc == SHOAL_EUNAVAIL, "insert of id %" PRIu64 ": %s", id, err.msg);
        if (rc == 0)
            accepted[naccepted++] = id;
        else
            refused[nrefused++] = id;
    }
    cr_log_info("shard 0 down, W=2: %zu single-row inserts accepted, %zu refused", naccepted,
                nrefused);
    cr_assert(naccepted > 0 && nrefused > 0, "expected both kinds among %d rows", S_PROBES);

    /* a batch of a refused row and the twin of an accepted one (the same vector, so the
       same, writable list): refused as a whole, nothing of it written */
    uint64_t mixed[2] = {refused[0], S_TWIN_BASE + (accepted[0] - S_ID_BASE)};
    int rc = s_insert_ids(&cl, mixed, 2, &err);
    cr_assert_eq(rc, SHOAL_EUNAVAIL, "a batch touching a list on the down shard: %s",
                 rc ? err.msg : "acknowledged");
    refused[nrefused++] = mixed[1];
    s_assert_nowhere(&cl, refused, nrefused, "shard 0 down");
    if (early_rc == SHOAL_EUNAVAIL)
        s_assert_nowhere(&cl, early, S_PROBES, "the early insert refused");

    /* back: nothing refused came back with the repair; then every refused row goes in */
    s_fault_end(&cl, &cl.shards[down], S_FAULT_KILL);
    s_wait_converged(&cl, "shard 0 restarted");
    s_assert_nowhere(&cl, refused, nrefused, "shard 0 restarted");
    if (early_rc == SHOAL_EUNAVAIL)
        s_assert_nowhere(&cl, early, S_PROBES, "the early insert refused, shard 0 restarted");
    cr_assert_eq(s_insert_ids(&cl, refused, nrefused, &err), 0, "after the restart: %s", err.msg);

    /* the refusals were exactly the rows whose lists have a replica on shard 0 */
    s_wait_converged(&cl, "refused rows inserted");
    for (size_t i = 0; i < nrefused; i++)
        cr_assert(s_on_shard(&cl, down, refused[i]) || refused[i] >= S_TWIN_BASE,
                  "id %" PRIu64 " was refused, but its list has no replica on shard 0", refused[i]);
    for (size_t i = 0; i < naccepted; i++)
        cr_assert(!s_on_shard(&cl, down, accepted[i]),
                  "id %" PRIu64 " was accepted, but its list has a replica on shard 0",
                  accepted[i]);

    s_idsets_t ids = {0};
    ids.acked = calloc(2 * S_PROBES + 2, sizeof *ids.acked);
    ids.unknown = calloc(S_PROBES, sizeof *ids.unknown);
    cr_assert(ids.acked && ids.unknown);
    memcpy(ids.acked, accepted, naccepted * sizeof *ids.acked);
    memcpy(ids.acked + naccepted, refused, nrefused * sizeof *ids.acked);
    ids.nacked = naccepted + nrefused;
    if (early_rc != SHOAL_EUNAVAIL) { /* a timeout: may or may not have happened */
        memcpy(ids.unknown, early, sizeof early);
        ids.nunknown = S_PROBES;
    }
    s_assert_settled(&cl, &ids, baseline, "W=2, shard 0 back");
    s_idsets_free(&ids);
    s_cluster_down(&cl);
}

/* ------------------------------------------------------------------------ */
/* e: random faults                                                         */
/* ------------------------------------------------------------------------ */

/* xorshift64*: the schedule is a function of the seed alone. */
static uint64_t s_rand(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545f4914f6cdd1dull;
}

static long s_rand_ms(uint64_t *state, long lo, long hi)
{
    return lo + (long)(s_rand(state) % (uint64_t)(hi - lo + 1));
}

static uint64_t s_seed(void)
{
    const char *text = getenv(S_SEED_ENV);
    if (text && *text)
        return strtoull(text, NULL, 0);
    return (uint64_t)time(NULL) * 2654435761u ^ (uint64_t)getpid();
}

Test(replication, e_random_faults_of_shards_and_coordinator_lose_nothing, .timeout = 900)
{
    s_cluster_t cl;
    double baseline = s_cluster_up(&cl, 2, 1);
    uint64_t seed = s_seed(), state = seed ? seed : 1;
    /* on stderr too: a failing run must be reproducible from its output */
    fprintf(stderr, "test_replication e: seed %" PRIu64 " (%s=%" PRIu64 " repeats it)\n", seed,
            S_SEED_ENV, seed);
    cr_log_info("seed %" PRIu64, seed);

    s_load_t load;
    s_load_start(&load, &cl);
    s_wait_progress(&load, s_now(), S_OUTAGE_SEARCHES, S_OUTAGE_INSERTS, "before the faults");
    s_fault_t faults[S_EVENTS];
    size_t counts[S_SHARDS + 1] = {0};
    for (size_t e = 0; e < S_EVENTS; e++) {
        size_t target = (size_t)(s_rand(&state) % (S_SHARDS + 1));
        s_kind_t kind = (s_kind_t)(s_rand(&state) % 3); /* kill, partition, freeze */
        long hold_ms = s_rand_ms(&state, 300, 1800), gap_ms = s_rand_ms(&state, 100, 400);
        s_node_t *n = target == S_SHARDS ? &cl.coord : &cl.shards[target];
        char what[96];
        if (target == S_SHARDS)
            snprintf(what, sizeof what, "event %zu: %s of the coordinator for %ld ms", e,
                     s_kind_name(kind), hold_ms);
        else
            snprintf(what, sizeof what, "event %zu: %s of shard %zu for %ld ms", e,
                     s_kind_name(kind), target, hold_ms);
        cr_log_info("%s", what);
        counts[target]++;
        faults[e].start = s_now();
        faults[e].end = 0;
        s_fault_inject(n, kind);
        s_sleep_ms(hold_ms);
        s_fault_end(&cl, n, kind);
        double took = s_wait_converged(&cl, what);
        cr_log_info("event %zu: converged %.1f s after the fault ended", e, took);
        /* the coordinator's own faults excuse everything until it has converged again */
        if (target == S_SHARDS)
            faults[e].end = s_now();
        s_sleep_ms(gap_ms);
    }
    s_wait_progress(&load, s_now(), S_OUTAGE_SEARCHES, S_OUTAGE_INSERTS, "after the faults");
    s_load_stop(&load);
    cr_log_info("seed %" PRIu64 ": faults per shard %zu %zu %zu %zu, coordinator %zu", seed,
                counts[0], counts[1], counts[2], counts[3], counts[S_SHARDS]);

    s_judge_searches(&load.search, baseline, faults, S_EVENTS, "random faults");
    s_idsets_t ids;
    s_idsets_from(&ids, &load.write);
    cr_assert_gt(ids.nacked, 0, "no insert was acknowledged (first error: %s)",
                 load.write.first_err);
    s_assert_settled(&cl, &ids, baseline, "random faults");
    s_idsets_free(&ids);
    s_load_free(&load);
    s_cluster_down(&cl);
}
