/*
 * test_growth.c - growing and shrinking a cluster online (issue 12) on many
 * hosts: shard add + rebalance, drain + remove, and a coordinator killed in
 * the middle of a move, each under continuous searches and inserts.
 *
 * Layout (tests/test_hosts.h): up to 4 shard hosts, one shard each with its
 * own data dir; the coordinator on a fifth host; the test's clients in the
 * controller namespace. Data: generated (common/datagen.h, dim S_DIM), ids =
 * row numbers; the writer inserts further rows of the same stream (ids from
 * the base count on), so the data stays one distribution.
 *
 * Two worker threads run while the main thread changes the cluster:
 *   searcher  searches a batch of queries at the test's nprobe / ef and
 *             records any failure or partial answer;
 *   writer    inserts small batches and records which were acknowledged.
 * Every test then checks: no search failed or came back partial, no insert
 * failed (test c: except the ones in flight when the coordinator was
 * killed), every acknowledged row is stored with its vector, the shards'
 * own per-list counts sum to the catalog's count and each list is on
 * exactly its owner (so no row is held twice), and recall@10 at the same
 * nprobe / ef (against exact search over all lists, at each time) is not
 * lower than before by more than S_RECALL_TOL.
 *
 * Needs root and iproute2 (else skipped) and takes minutes, so it runs only
 * with SHOAL_TEST_CLUSTER_HOSTS=1 (`make test-cluster-hosts`). Every wait is
 * bounded polling; nothing asserts a timing.
 */
#define _GNU_SOURCE /* setns, for tests/test_hosts.h; before every #include */

#include "client/shoal_client.h"
#include "common/datagen.h"
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

#define S_SHARDS          4
#define S_COORD_HOST      S_SHARDS
#define S_SHARD_PORT      7701
#define S_COORD_PORT      7700
#define S_COLL            "grow"
#define S_DIM             32
#define S_NLIST           64
#define S_NPROBE          4
#define S_EF              32
#define S_K               10
#define S_QUERIES         500
#define S_LOAD_CHUNK      5000
#define S_WRITE_BATCH     20
#define S_WRITE_MAX       20000 /* rows the writer inserts at most */
#define S_SEARCH_BATCH    8
#define S_PAUSE_MS        20
#define S_TIMEOUT_MS      60000
#define S_OP_TIMEOUT_MS   10000 /* the workers' calls: above the write timeout and deadline */
#define S_POLL_MS         100
#define S_MOVES_WAIT_S    600.0 /* a plan completes within this */
#define S_CONVERGE_WAIT_S 120.0
#define S_STOP_WAIT_S     60.0
#define S_RECALL_TOL      0.005
#define S_IMBALANCE_MAX   1.1
#define S_PING_MS         "100"
#define S_DOWN_MS         "1000"
#define S_DEADLINE_MS     "5000"
#define S_WRITE_MS        "5000"

static hosts_t *s_hosts;

static void s_setup(void)
{
    shoal_log_init_from_env();
    zsys_handler_set(NULL);
    s_process_suite_init("test_growth");
}

static void s_teardown(void)
{
    hosts_down(&s_hosts);
    s_process_suite_fini();
}

TestSuite(growth, .init = s_setup, .fini = s_teardown, .timeout = 900);

/* ------------------------------------------------------------------------ */
/* The cluster                                                              */
/* ------------------------------------------------------------------------ */

typedef struct {
    s_node_t shards[S_SHARDS];
    s_node_t coord;
    size_t nshards;                    /* shards started (0..nshards-1) */
    size_t replication;                /* R of the collection */
    char shard_list[S_SHARDS * 64];    /* --shards given to the coordinator */
    const char *coord_extra[8];        /* extra coordinator flags (NULL-terminated) */
    datagen_t *gen;
    size_t n;                          /* base rows */
    float *queries;                    /* S_QUERIES x S_DIM */
    shoal_client_t *c;
    shoal_client_t *shard_c[S_SHARDS];
} s_cluster_t;

static void s_coord_start(s_cluster_t *cl)
{
    s_node_t *n = &cl->coord;
    char bin[S_SUPPORT_PATH_MAX];
    s_bin(bin, "shoal-coordinator");
    char *argv[40] = {bin,          "--listen",          n->listen,     "--data-dir",
                      n->files.data_dir, "--shards",     cl->shard_list, "--ready-file",
                      n->files.ready, "--ping-interval-ms", S_PING_MS,  "--down-after-ms",
                      S_DOWN_MS,    "--deadline-ms",     S_DEADLINE_MS, "--write-timeout-ms",
                      S_WRITE_MS,   "--threads",         "1",           NULL};
    size_t at = 0;
    while (argv[at])
        at++;
    for (size_t i = 0; cl->coord_extra[i] && at + 1 < 40; i++)
        argv[at++] = (char *)cl->coord_extra[i];
    argv[at] = NULL;
    s_node_start(s_hosts, n, argv);
}

static void s_vecs(const s_cluster_t *cl, uint64_t first, size_t n, float *out)
{
    datagen_fill(cl->gen, DATAGEN_STREAM_BASE, (size_t)first, n, out);
}

static shoal_client_t *s_shard_client(s_cluster_t *cl, size_t s)
{
    if (!cl->shard_c[s]) {
        shoal_err_t err;
        cl->shard_c[s] = shoal_client_new(cl->shards[s].listen, S_TIMEOUT_MS, &err);
        cr_assert_not_null(cl->shard_c[s], "%s", err.msg);
    }
    return cl->shard_c[s];
}

static void s_shard_start(s_cluster_t *cl, size_t s)
{
    char name[16];
    snprintf(name, sizeof name, "shard%zu", s);
    s_node_init(s_hosts, &cl->shards[s], name, s, S_SHARD_PORT);
    s_node_shard_start(s_hosts, &cl->shards[s]);
}

/*
 * 5 hosts; nshards shards and the coordinator up; n generated rows loaded
 * into an R = replication collection of S_NLIST lists.
 */
static void s_cluster_up(s_cluster_t *cl, size_t nshards, size_t n, size_t replication,
                         const char *const *extra)
{
    memset(cl, 0, sizeof *cl);
    cl->replication = replication;
    s_hosts = s_node_hosts_up_gated(S_SHARDS + 1, "minutes of many-host growth");
    shoal_err_t err;
    cr_assert_eq(hosts_enter_controller(s_hosts, &err), 0, "%s", err.msg);
    datagen_params_t gp = {.dim = S_DIM, .intrinsic_dim = 16, .seed = 12};
    cl->gen = datagen_new(&gp, &err);
    cr_assert_not_null(cl->gen, "%s", err.msg);
    cl->n = n;
    cl->queries = malloc(S_QUERIES * S_DIM * sizeof *cl->queries);
    cr_assert_not_null(cl->queries);
    datagen_fill(cl->gen, DATAGEN_STREAM_QUERY, 0, S_QUERIES, cl->queries);
    for (size_t i = 0; extra && extra[i] && i < 7; i++)
        cl->coord_extra[i] = extra[i];
    for (size_t s = 0; s < nshards; s++) {
        s_shard_start(cl, s);
        size_t len = strlen(cl->shard_list);
        snprintf(cl->shard_list + len, sizeof cl->shard_list - len, "%s%s", s ? "," : "",
                 cl->shards[s].listen);
    }
    cl->nshards = nshards;
    s_node_init(s_hosts, &cl->coord, "coord", S_COORD_HOST, S_COORD_PORT);
    s_coord_start(cl);
    cl->c = shoal_client_new(cl->coord.listen, S_TIMEOUT_MS, &err);
    cr_assert_not_null(cl->c, "%s", err.msg);

    shoal_create_opts_t copts = {.nlist = S_NLIST, .replication = replication};
    double end = s_now() + S_CONVERGE_WAIT_S;
    int rc;
    while ((rc = shoal_client_create_ivf(cl->c, S_COLL, S_DIM, SHOAL_METRIC_L2, &copts, &err)) !=
           0) {
        cr_assert(rc == SHOAL_EUNAVAIL || rc == SHOAL_ETIMEOUT, "create: %s", err.msg);
        cr_assert_lt(s_now(), end, "the coordinator cannot reach every shard: %s", err.msg);
        s_sleep_ms(S_POLL_MS);
    }
    float *v = malloc(S_LOAD_CHUNK * S_DIM * sizeof *v);
    uint64_t *ids = malloc(S_LOAD_CHUNK * sizeof *ids);
    cr_assert(v && ids);
    for (size_t at = 0; at < n; at += S_LOAD_CHUNK) {
        size_t m = n - at < S_LOAD_CHUNK ? n - at : S_LOAD_CHUNK;
        s_vecs(cl, at, m, v);
        for (size_t i = 0; i < m; i++)
            ids[i] = at + i;
        rc = shoal_client_insert(cl->c, S_COLL, ids, v, m, S_DIM, NULL, &err);
        cr_assert_eq(rc, 0, "insert rows %zu..: %s", at, err.msg);
    }
    free(v);
    free(ids);
}

static void s_cluster_down(s_cluster_t *cl)
{
    for (size_t s = 0; s < S_SHARDS; s++)
        shoal_client_destroy(&cl->shard_c[s]);
    shoal_client_destroy(&cl->c);
    if (cl->coord.pid > 0)
        s_node_stop(s_hosts, &cl->coord, S_STOP_WAIT_S);
    for (size_t s = 0; s < S_SHARDS; s++)
        if (cl->shards[s].pid > 0)
            s_node_stop(s_hosts, &cl->shards[s], S_STOP_WAIT_S);
    hosts_down(&s_hosts);
    datagen_destroy(&cl->gen);
    free(cl->queries);
}

/* A number from the coordinator's stats (dotted path from fmt), or NAN. */
static double s_stat_num(s_cluster_t *cl, const char *fmt, ...)
{
    char path[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(path, sizeof path, fmt, ap);
    va_end(ap);
    void *info = NULL;
    size_t len = 0;
    shoal_err_t err;
    double v = NAN;
    if (shoal_client_stats(cl->c, NULL, NULL, &info, &len, &err) == 0)
        wire_info_lookup(info, len, path, &v);
    free(info);
    return v;
}

/* Polls (bounded) until the moves are done: none pending or running, no old copy left. */
static void s_wait_moves(s_cluster_t *cl, const char *what)
{
    double end = s_now() + S_MOVES_WAIT_S;
    shoal_client_set_timeout(cl->c, 5000);
    while (1) {
        double pending = s_stat_num(cl, "moves.pending"), running = s_stat_num(cl, "moves.running");
        double orphans = s_stat_num(cl, "moves.orphans");
        double up = s_stat_num(cl, "shards_up");
        if (pending == 0 && running == 0 && orphans == 0 && up >= (double)cl->nshards)
            break;
        cr_assert_lt(s_now(), end, "%s: moves not done after %.0f s (pending %g running %g "
                     "orphans %g shards_up %g)", what, S_MOVES_WAIT_S, pending, running, orphans,
                     up);
        s_sleep_ms(S_POLL_MS * 2);
    }
    shoal_client_set_timeout(cl->c, S_TIMEOUT_MS);
}

/* ------------------------------------------------------------------------ */
/* Load                                                                     */
/* ------------------------------------------------------------------------ */

typedef struct {
    s_cluster_t *cl;
    atomic_int stop;
    pthread_t th[2];
    /* searcher */
    size_t searches, search_failed, partial;
    char search_why[SHOAL_ERR_MSG_MAX];
    /* writer */
    uint64_t next_id;                /* the next row to write */
    uint64_t *acked;                 /* ids acknowledged */
    size_t nacked, inserts_failed;
    uint64_t *unknown;               /* ids of inserts that failed (maybe stored) */
    size_t nunknown;
    char insert_why[SHOAL_ERR_MSG_MAX];
} s_load_t;

static void *s_searcher(void *arg)
{
    s_load_t *l = arg;
    shoal_err_t err;
    shoal_client_t *c = shoal_client_new(l->cl->coord.listen, S_OP_TIMEOUT_MS, &err);
    if (!c)
        return NULL;
    shoal_search_opts_t o = {.k = S_K, .mode = WIRE_MODE_HNSW, .ef = S_EF, .nprobe = S_NPROBE};
    for (size_t round = 0; !atomic_load(&l->stop); round++) {
        size_t q = (round * S_SEARCH_BATCH) % (S_QUERIES - S_SEARCH_BATCH);
        uint64_t *ids = NULL;
        shoal_search_info_t info;
        memset(&info, 0, sizeof info);
        int rc = shoal_client_search_ex(c, S_COLL, l->cl->queries + q * S_DIM, S_SEARCH_BATCH,
                                        S_DIM, &o, &ids, NULL, &info, &err);
        l->searches++;
        if (rc != 0) {
            if (!l->search_failed)
                snprintf(l->search_why, sizeof l->search_why, "%s", err.msg);
            l->search_failed++;
        } else if (info.partial) {
            if (!l->partial)
                snprintf(l->search_why, sizeof l->search_why, "partial: missing %.200s",
                         info.missing);
            l->partial++;
        }
        free(ids);
        s_sleep_ms(S_PAUSE_MS);
    }
    shoal_client_destroy(&c);
    return NULL;
}

static void *s_writer(void *arg)
{
    s_load_t *l = arg;
    shoal_err_t err;
    shoal_client_t *c = shoal_client_new(l->cl->coord.listen, S_OP_TIMEOUT_MS, &err);
    if (!c)
        return NULL;
    float v[S_WRITE_BATCH * S_DIM];
    uint64_t ids[S_WRITE_BATCH];
    while (!atomic_load(&l->stop) && l->nacked + l->nunknown + S_WRITE_BATCH <= S_WRITE_MAX) {
        s_vecs(l->cl, l->next_id, S_WRITE_BATCH, v);
        for (size_t i = 0; i < S_WRITE_BATCH; i++)
            ids[i] = l->next_id + i;
        l->next_id += S_WRITE_BATCH;
        int rc = shoal_client_insert(c, S_COLL, ids, v, S_WRITE_BATCH, S_DIM, NULL, &err);
        uint64_t *to = rc == 0 ? l->acked + l->nacked : l->unknown + l->nunknown;
        memcpy(to, ids, sizeof ids);
        if (rc == 0) {
            l->nacked += S_WRITE_BATCH;
        } else {
            if (!l->inserts_failed)
                snprintf(l->insert_why, sizeof l->insert_why, "%s", err.msg);
            l->inserts_failed++;
            l->nunknown += S_WRITE_BATCH;
        }
        s_sleep_ms(S_PAUSE_MS * 5);
    }
    shoal_client_destroy(&c);
    return NULL;
}

static void s_load_start(s_load_t *l, s_cluster_t *cl)
{
    memset(l, 0, sizeof *l);
    l->cl = cl;
    l->next_id = cl->n;
    l->acked = malloc(S_WRITE_MAX * sizeof *l->acked);
    l->unknown = malloc(S_WRITE_MAX * sizeof *l->unknown);
    cr_assert(l->acked && l->unknown);
    cr_assert_eq(pthread_create(&l->th[0], NULL, s_searcher, l), 0);
    cr_assert_eq(pthread_create(&l->th[1], NULL, s_writer, l), 0);
}

static void s_load_stop(s_load_t *l)
{
    atomic_store(&l->stop, 1);
    pthread_join(l->th[0], NULL);
    pthread_join(l->th[1], NULL);
    cr_log_info("load: %zu searches (%zu failed, %zu partial), %zu rows acknowledged, %zu "
                "inserts failed",
                l->searches, l->search_failed, l->partial, l->nacked, l->inserts_failed);
}

static void s_load_free(s_load_t *l)
{
    free(l->acked);
    free(l->unknown);
}

/* ------------------------------------------------------------------------ */
/* Checks                                                                   */
/* ------------------------------------------------------------------------ */

/* recall@k of the test's nprobe / ef search against exact search over every list, now. */
static double s_recall(s_cluster_t *cl)
{
    shoal_err_t err;
    uint64_t *truth = NULL, *got = NULL;
    shoal_search_opts_t ex = {.k = S_K, .mode = WIRE_MODE_EXACT, .nprobe = S_NLIST};
    shoal_search_opts_t ap = {.k = S_K, .mode = WIRE_MODE_HNSW, .ef = S_EF, .nprobe = S_NPROBE};
    cr_assert_eq(shoal_client_search(cl->c, S_COLL, cl->queries, S_QUERIES, S_DIM, &ex, &truth,
                                     NULL, NULL, &err),
                 0, "exact search: %s", err.msg);
    cr_assert_eq(shoal_client_search(cl->c, S_COLL, cl->queries, S_QUERIES, S_DIM, &ap, &got,
                                     NULL, NULL, &err),
                 0, "search: %s", err.msg);
    size_t hit = 0;
    for (size_t q = 0; q < S_QUERIES; q++)
        for (size_t i = 0; i < S_K; i++)
            for (size_t j = 0; j < S_K; j++)
                hit += got[q * S_K + i] != TOPK_ID_NONE && got[q * S_K + i] == truth[q * S_K + j];
    free(truth);
    free(got);
    return (double)hit / (double)(S_QUERIES * S_K);
}

/*
 * The shards' own per-list counts against the coordinator's placement: every
 * list held by exactly its R owners (so no row is on more shards than its
 * replicas), the counts summing to R x the catalog's count, which is want.
 * Returns the largest shard total over the mean (the imbalance).
 */
static double s_assert_placed_once(s_cluster_t *cl, uint64_t want, const char *after)
{
    void *info = NULL;
    size_t len = 0;
    shoal_err_t err;
    cr_assert_eq(shoal_client_stats(cl->c, S_COLL, NULL, &info, &len, &err), 0, "%s", err.msg);
    uint8_t owns[S_NLIST][S_SHARDS] = {{0}};
    for (size_t l = 0; l < S_NLIST; l++) {
        for (size_t r = 0; r < cl->replication; r++) {
            char path[96];
            double s = -1;
            snprintf(path, sizeof path, "collections.%s.placement.%zu.%zu", S_COLL, l, r);
            cr_assert_eq(wire_info_lookup(info, len, path, &s), 0, "%s: no %s", after, path);
            cr_assert(s >= 0 && s < S_SHARDS, "%s: list %zu replica %zu on shard %g", after, l,
                      r, s);
            owns[l][(size_t)s] = 1;
        }
    }
    double count = -1;
    char path[96];
    snprintf(path, sizeof path, "collections.%s.count", S_COLL);
    cr_assert_eq(wire_info_lookup(info, len, path, &count), 0);
    free(info);
    cr_assert_eq((uint64_t)count, want, "%s: the catalog counts %.0f rows, %" PRIu64 " expected",
                 after, count, want);
    uint64_t total = 0, max = 0, per[S_SHARDS] = {0};
    size_t serving = 0;
    for (size_t s = 0; s < S_SHARDS; s++) {
        if (cl->shards[s].pid <= 0)
            continue;
        uint32_t *lists = NULL;
        uint64_t *n = NULL;
        size_t nl = 0;
        int rc = shoal_client_list_counts(s_shard_client(cl, s), S_COLL, &lists, &n, &nl, &err);
        cr_assert_eq(rc, 0, "%s: list_counts of shard %zu: %s", after, s, err.msg);
        for (size_t i = 0; i < nl; i++) {
            cr_assert_lt(lists[i], S_NLIST, "%s: shard %zu holds list %u", after, s, lists[i]);
            cr_assert(owns[lists[i]][s],
                      "%s: shard %zu holds %" PRIu64 " rows of list %u, not one of its replicas",
                      after, s, n[i], lists[i]);
            per[s] += n[i];
        }
        total += per[s];
        free(lists);
        free(n);
    }
    for (size_t s = 0; s < cl->nshards; s++) {
        serving++;
        max = per[s] > max ? per[s] : max;
    }
    cr_assert_eq(total, want * cl->replication,
                 "%s: the shards hold %" PRIu64 " rows, %" PRIu64 " x R = %zu expected", after,
                 total, want, cl->replication);
    double imbalance = (double)max / ((double)total / (double)serving);
    cr_log_info("%s: %" PRIu64 " rows, shard totals %" PRIu64 " %" PRIu64 " %" PRIu64
                " %" PRIu64 ", imbalance %.3f",
                after, total, per[0], per[1], per[2], per[3], imbalance);
    return imbalance;
}

/* Every id in ids is stored with its generated vector. */
static void s_assert_stored(s_cluster_t *cl, const uint64_t *ids, size_t n, const char *after)
{
    float *want = malloc(S_DIM * sizeof *want);
    cr_assert_not_null(want);
    for (size_t at = 0; at < n; at += 1000) {
        size_t m = n - at < 1000 ? n - at : 1000;
        uint8_t *found = NULL;
        float *vecs = NULL;
        size_t dim = 0;
        shoal_err_t err;
        cr_assert_eq(shoal_client_get(cl->c, S_COLL, ids + at, m, &found, &vecs, &dim, &err), 0,
                     "%s: get: %s", after, err.msg);
        for (size_t i = 0; i < m; i++) {
            cr_assert(found[i], "%s: acknowledged id %" PRIu64 " is missing", after, ids[at + i]);
            s_vecs(cl, ids[at + i], 1, want);
            cr_assert_eq(memcmp(want, vecs + i * S_DIM, S_DIM * sizeof *want), 0,
                         "%s: id %" PRIu64 " has another vector", after, ids[at + i]);
        }
        free(found);
        free(vecs);
    }
    free(want);
}

/* How many of ids are stored (for rows whose insert failed: 0 or all of a batch). */
static size_t s_count_stored(s_cluster_t *cl, const uint64_t *ids, size_t n)
{
    size_t count = 0;
    for (size_t at = 0; at < n; at += 1000) {
        size_t m = n - at < 1000 ? n - at : 1000;
        uint8_t *found = NULL;
        float *vecs = NULL;
        size_t dim = 0;
        shoal_err_t err;
        cr_assert_eq(shoal_client_get(cl->c, S_COLL, ids + at, m, &found, &vecs, &dim, &err), 0,
                     "get: %s", err.msg);
        for (size_t i = 0; i < m; i++)
            count += found[i];
        free(found);
        free(vecs);
    }
    return count;
}

/* The load's guarantees, then the stored state; returns the imbalance. */
static double s_assert_after(s_cluster_t *cl, s_load_t *l, double recall_before,
                             int inserts_may_fail, const char *after)
{
    cr_assert_eq(l->search_failed + l->partial, 0,
                 "%s: %zu of %zu searches failed and %zu were partial (first: %s)", after,
                 l->search_failed, l->searches, l->partial, l->search_why);
    if (!inserts_may_fail)
        cr_assert_eq(l->inserts_failed, 0, "%s: %zu inserts failed (first: %s)", after,
                     l->inserts_failed, l->insert_why);
    s_assert_stored(cl, l->acked, l->nacked, after);
    size_t maybe = s_count_stored(cl, l->unknown, l->nunknown);
    double imbalance = s_assert_placed_once(cl, cl->n + l->nacked + maybe, after);
    double recall = s_recall(cl);
    cr_log_info("%s: recall@%d %.4f (before %.4f)", after, S_K, recall, recall_before);
    cr_assert_geq(recall, recall_before - S_RECALL_TOL,
                  "%s: recall@%d %.4f, before %.4f (nprobe %d, ef %d)", after, S_K, recall,
                  recall_before, S_NPROBE, S_EF);
    return imbalance;
}

/* ------------------------------------------------------------------------ */
/* Tests                                                                    */
/* ------------------------------------------------------------------------ */

Test(growth, a_three_to_four_shards_under_load)
{
    s_cluster_t cl;
    s_cluster_up(&cl, 3, 200000, 1, NULL);
    double before = s_recall(&cl);
    s_assert_placed_once(&cl, cl.n, "loaded on 3 shards");
    cr_log_info("3 shards: recall@%d %.4f", S_K, before);
    s_load_t l;
    s_load_start(&l, &cl);
    s_sleep_ms(1000);
    s_shard_start(&cl, 3);
    shoal_err_t err;
    void *info = NULL;
    size_t len = 0;
    int rc = shoal_client_shard(cl.c, WIRE_OP_SHARD_ADD, cl.shards[3].listen, NULL, &info, &len,
                                &err);
    cr_assert_eq(rc, 0, "shard add: %s", err.msg);
    free(info);
    cl.nshards = 4;
    rc = shoal_client_rebalance(cl.c, 0, 0, 0, NULL, &info, &len, &err);
    cr_assert_eq(rc, 0, "rebalance: %s", err.msg);
    double moves = -1, after_imb = -1;
    wire_info_lookup(info, len, "moves", &moves);
    wire_info_lookup(info, len, "imbalance_after", &after_imb);
    free(info);
    cr_assert_gt(moves, 0, "rebalance planned no move onto the new shard");
    cr_log_info("rebalance: %.0f moves, predicted imbalance %.3f", moves, after_imb);
    s_wait_moves(&cl, "3 -> 4");
    s_sleep_ms(1000); /* the load runs on the new placement too */
    s_load_stop(&l);
    double imbalance = s_assert_after(&cl, &l, before, 0, "3 -> 4 shards");
    cr_assert_leq(imbalance, S_IMBALANCE_MAX, "imbalance %.3f after the rebalance", imbalance);
    cr_assert_eq(s_stat_num(&cl, "moves.aborted"), 0, "a move was abandoned without a fault");
    s_load_free(&l);
    s_cluster_down(&cl);
}

/* R = 2: every list keeps two live copies while its replicas move off the drained shard. */
Test(growth, b_drain_and_remove_a_shard_under_load_then_restart)
{
    s_cluster_t cl;
    s_cluster_up(&cl, 4, 40000, 2, NULL);
    double before = s_recall(&cl);
    s_load_t l;
    s_load_start(&l, &cl);
    s_sleep_ms(1000);
    shoal_err_t err;
    const char *victim = cl.shards[3].listen;
    int rc = shoal_client_shard(cl.c, WIRE_OP_SHARD_REMOVE, victim, NULL, NULL, NULL, &err);
    cr_assert_eq(rc, SHOAL_EINVAL, "removing a live shard: %d %s", rc, err.msg);
    rc = shoal_client_shard(cl.c, WIRE_OP_SHARD_DRAIN, victim, NULL, NULL, NULL, &err);
    cr_assert_eq(rc, 0, "shard drain: %s", err.msg);
    cl.nshards = 3; /* shards 0..2 serve from now on */
    s_wait_moves(&cl, "drain");
    rc = shoal_client_shard(cl.c, WIRE_OP_SHARD_REMOVE, victim, NULL, NULL, NULL, &err);
    cr_assert_eq(rc, 0, "shard remove: %s", err.msg);
    s_sleep_ms(1000);
    s_load_stop(&l);
    /* The drained shard holds nothing. */
    uint32_t *lists = NULL;
    uint64_t *n = NULL;
    size_t nl = 0;
    rc = shoal_client_list_counts(s_shard_client(&cl, 3), S_COLL, &lists, &n, &nl, &err);
    cr_assert_eq(rc, 0, "%s", err.msg);
    cr_assert_eq(nl, 0, "the drained shard still holds %zu lists", nl);
    free(lists);
    free(n);
    shoal_client_destroy(&cl.shard_c[3]);
    s_node_stop(s_hosts, &cl.shards[3], S_STOP_WAIT_S);
    /* The registry says removed (endpoints have dots: the text, not a dotted path). */
    char *text = NULL;
    cr_assert_eq(shoal_client_stats(cl.c, NULL, &text, NULL, NULL, &err), 0, "%s", err.msg);
    char want[160];
    snprintf(want, sizeof want, "\"%s\": {\"index\": 3, \"role\": \"removed\"", victim);
    cr_assert(strstr(text, want), "stats do not say %s: %s", want, text);
    free(text);
    cr_assert_eq(s_stat_num(&cl, "shards_up"), 3);
    s_assert_after(&cl, &l, before, 0, "drained and removed");
    /* A restart with the same command line (naming the removed shard) is clean. */
    s_node_stop(s_hosts, &cl.coord, S_STOP_WAIT_S);
    shoal_client_destroy(&cl.c);
    s_coord_start(&cl);
    cl.c = shoal_client_new(cl.coord.listen, S_TIMEOUT_MS, &err);
    cr_assert_not_null(cl.c, "%s", err.msg);
    s_wait_moves(&cl, "restarted");
    l.searches = l.search_failed = l.partial = 0;
    s_assert_after(&cl, &l, before, 0, "restarted after the removal");
    s_load_free(&l);
    s_cluster_down(&cl);
}

Test(growth, c_coordinator_killed_mid_move_resumes)
{
    /* Slow moves (small chunks, a pause between them) so a kill lands inside one. */
    const char *slow[] = {"--repair-chunk", "64", "--repair-pause-ms", "40", NULL};
    s_cluster_t cl;
    s_cluster_up(&cl, 3, 40000, 1, slow);
    double before = s_recall(&cl);
    s_shard_start(&cl, 3);
    shoal_err_t err;
    int rc = shoal_client_shard(cl.c, WIRE_OP_SHARD_ADD, cl.shards[3].listen, NULL, NULL, NULL,
                                &err);
    cr_assert_eq(rc, 0, "shard add: %s", err.msg);
    cl.nshards = 4;
    /* The restarted coordinator must find the new shard in its registry and --shards. */
    size_t len0 = strlen(cl.shard_list);
    snprintf(cl.shard_list + len0, sizeof cl.shard_list - len0, ",%s", cl.shards[3].listen);
    s_load_t l;
    s_load_start(&l, &cl);
    rc = shoal_client_rebalance(cl.c, 0, 0, 0, NULL, NULL, NULL, &err);
    cr_assert_eq(rc, 0, "rebalance: %s", err.msg);
    double end = s_now() + S_MOVES_WAIT_S;
    while (!(s_stat_num(&cl, "moves.running") == 1 && s_stat_num(&cl, "moves.current.copied") > 0 &&
             s_stat_num(&cl, "moves.done") >= 1)) {
        cr_assert_lt(s_now(), end, "no move got under way");
        s_sleep_ms(20);
    }
    int status = hosts_kill9(s_hosts, cl.coord.pid);
    cr_assert(WIFSIGNALED(status), "status 0x%x", status);
    cl.coord.pid = 0;
    s_sleep_ms(500);
    s_coord_start(&cl);
    s_wait_moves(&cl, "after the coordinator's restart");
    s_sleep_ms(500);
    s_load_stop(&l);
    /* Searches and inserts in flight at the kill failed; none after it may. */
    l.search_failed = l.partial = 0;
    s_assert_after(&cl, &l, before, 1, "coordinator killed mid-move");
    s_load_free(&l);
    s_cluster_down(&cl);
}
