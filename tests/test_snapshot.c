/*
 * test_snapshot.c - cluster snapshots (issue 15; docs/protocol.md 4.13-4.14,
 * 11.10; docs/operations.md "Snapshots and restore").
 *
 * In-process: kv_checkpoint into a folder inside the database's own
 * directory survives the live database's flushes, compactions and reopens
 * (why the snapshots live under the data dir), and refuses an existing
 * folder and a read-only database; the catalog's snapshot records round-trip
 * and travel with a catalog checkpoint.
 *
 * Processes (one bin/shoal-coordinator, three bin/shoal-shard on loopback,
 * the harness of tests/test_cluster.c): siftsmall loaded, some deletes,
 * snapshot; more inserts and deletes after it; the cluster stopped and every
 * data dir replaced by a copy of its snapshot (cp -a, as docs/operations.md
 * says); fresh processes on the same endpoints answer searches (HNSW and
 * exact) with identical ids and distances and report identical counts, and
 * none of the writes made after the snapshot is there. Refusals: a bad name
 * (einval, from the coordinator itself), a name taken (eexist), a shard
 * down (eunavail naming it, nothing listed, no copy left on any host); the
 * CLI's `snapshot create` and `snapshot list`.
 *
 * Environment as for test_cluster: SHOAL_BIN, SHOAL_DATASETS (siftsmall;
 * the process tests skip without it), SHOAL_TMP. No timing is asserted; the
 * snapshot's pause is logged.
 */
#include "client/shoal_client.h"
#include "net/kv.h"
#include "common/log.h"
#include "net/wire.h"
#include "coordinator/catalog.h"
#include "tests/test_support.h"

#include <criterion/criterion.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define S_PATH_MAX        S_SUPPORT_PATH_MAX
#define S_NSHARDS         3
#define S_START_WAIT_S    60.0
#define S_STOP_WAIT_S     60.0
#define S_POLL_WAIT_S     30.0
#define S_POLL_MS         50
#define S_TIMEOUT_MS      60000
#define S_POLL_TIMEOUT_MS 5000
#define S_K               10
#define S_NLIST           64
#define S_SMALL_ROWS      2000 /* the second collection: the first rows of siftsmall */
#define S_DELETED_BEFORE  100  /* ids 0..99 deleted before the snapshot */
#define S_DELETED_AFTER   100  /* ids 100..199 deleted after it */
#define S_NEW_AFTER       500  /* ids 20000.. inserted after it */
#define S_NEW_ID_BASE     20000

static void s_setup(void)
{
    shoal_log_init_from_env();
    s_process_suite_init("test_snapshot");
}

TestSuite(snapshot, .init = s_setup, .fini = s_process_suite_fini, .timeout = 300);

/* ------------------------------------------------------------------------ */
/* In-process: kv_checkpoint and the catalog's records                      */
/* ------------------------------------------------------------------------ */

static void s_put_u32(kv_t *kv, uint32_t key, uint32_t value)
{
    uint8_t k[4] = {(uint8_t)(key >> 24), (uint8_t)(key >> 16), (uint8_t)(key >> 8), (uint8_t)key};
    shoal_err_t err;
    cr_assert_eq(kv_put(kv, k, 4, &value, 4, 0, &err), 0, "put: %s", err.msg);
}

/* The value of key, or UINT32_MAX when absent. */
static uint32_t s_get_u32(kv_t *kv, uint32_t key)
{
    uint8_t k[4] = {(uint8_t)(key >> 24), (uint8_t)(key >> 16), (uint8_t)(key >> 8), (uint8_t)key};
    void *val = NULL;
    size_t len = 0;
    shoal_err_t err;
    int rc = kv_get(kv, k, 4, &val, &len, &err);
    if (rc == SHOAL_ENOTFOUND)
        return UINT32_MAX;
    cr_assert_eq(rc, 0, "get: %s", err.msg);
    cr_assert_eq(len, 4);
    uint32_t v;
    memcpy(&v, val, 4);
    free(val);
    return v;
}

Test(snapshot, kv_checkpoint_inside_the_database_directory)
{
    char dir[S_PATH_MAX], snaps[S_PATH_MAX], snap[S_PATH_MAX];
    s_scratch_path(dir, "db");
    s_join(snaps, dir, "snapshots");
    s_join(snap, snaps, "one");
    shoal_err_t err;
    kv_t *kv = kv_open(dir, 1, &err);
    cr_assert_not_null(kv, "open: %s", err.msg);
    for (uint32_t i = 0; i < 5000; i++)
        s_put_u32(kv, i, i);
    /* Half of them only in the memtable: the checkpoint flushes it. */
    cr_assert_eq(kv_flush(kv, &err), 0, "%s", err.msg);
    for (uint32_t i = 5000; i < 10000; i++)
        s_put_u32(kv, i, i);
    cr_assert_eq(mkdir(snaps, 0755), 0);
    cr_assert_eq(kv_checkpoint(kv, snap, &err), 0, "checkpoint: %s", err.msg);
    cr_assert_eq(kv_checkpoint(kv, snap, &err), SHOAL_EEXIST, "a second one into the same folder");

    /* Rewrite everything several times: flushes and compactions delete the
     * live database's old table files, which the snapshot still links. */
    for (uint32_t round = 1; round <= 6; round++) {
        for (uint32_t i = 0; i < 10000; i++)
            s_put_u32(kv, i, i + round * 100000u);
        cr_assert_eq(kv_flush(kv, &err), 0, "%s", err.msg);
    }
    kv_close(&kv);
    kv = kv_open(dir, 0, &err);
    cr_assert_not_null(kv, "reopen with a snapshot folder inside: %s", err.msg);
    cr_assert_eq(s_get_u32(kv, 7), 7 + 600000u);
    kv_close(&kv);

    kv_t *copy = kv_open(snap, 0, &err);
    cr_assert_not_null(copy, "open the snapshot: %s", err.msg);
    for (uint32_t i = 0; i < 10000; i += 37)
        cr_assert_eq(s_get_u32(copy, i), i, "key %u in the snapshot", i);
    kv_close(&copy);

    kv_t *ro = kv_open_read_only(dir, &err);
    cr_assert_not_null(ro, "%s", err.msg);
    s_join(snap, snaps, "two");
    cr_assert_eq(kv_checkpoint(ro, snap, &err), SHOAL_EUNSUPPORTED);
    kv_close(&ro);
}

Test(snapshot, catalog_records_round_trip_and_travel_with_its_checkpoint)
{
    char dir[S_PATH_MAX], copy_dir[S_PATH_MAX];
    s_scratch_path(dir, "catalog");
    s_scratch_path(copy_dir, "catalog.copy");
    shoal_err_t err;
    catalog_t *cat = catalog_open(dir, &err);
    cr_assert_not_null(cat, "%s", err.msg);
    catalog_snapshot_shard_t shards[2] = {{"tcp://127.0.0.1:7701", 41}, {"tcp://h2:7702", 7}};
    catalog_snapshot_coll_t colls[2] = {{"docs", 10000}, {"img.v2", 0}};
    catalog_snapshot_t rec = {.created = 1700000000, .nshards = 2, .shards = shards,
                              .ncolls = 2, .colls = colls};
    snprintf(rec.name, sizeof rec.name, "nightly-1");
    cr_assert_eq(catalog_snapshot_exists(cat, "nightly-1", &err), 0);
    cr_assert_eq(catalog_snapshot_put(cat, &rec, &err), 0, "%s", err.msg);
    cr_assert_eq(catalog_snapshot_exists(cat, "nightly-1", &err), 1);
    cr_assert_eq(catalog_snapshot_put(cat, &rec, &err), SHOAL_EEXIST);
    snprintf(rec.name, sizeof rec.name, "..");
    cr_assert_eq(catalog_snapshot_put(cat, &rec, &err), SHOAL_EINVAL);
    snprintf(rec.name, sizeof rec.name, "a-second");
    rec.nshards = 1;
    cr_assert_eq(catalog_snapshot_put(cat, &rec, &err), 0, "%s", err.msg);

    cr_assert_eq(catalog_checkpoint(cat, copy_dir, &err), 0, "%s", err.msg);
    cr_assert_eq(catalog_snapshot_delete(cat, "a-second", &err), 0, "%s", err.msg);
    catalog_snapshot_t *got = NULL;
    size_t n = 0;
    cr_assert_eq(catalog_snapshots(cat, &got, &n, &err), 0, "%s", err.msg);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(got[0].name, "nightly-1");
    cr_assert_eq(got[0].created, 1700000000u);
    cr_assert_eq(got[0].nshards, 2);
    cr_assert_str_eq(got[0].shards[1].endpoint, "tcp://h2:7702");
    cr_assert_eq(got[0].shards[0].seq, 41);
    cr_assert_eq(got[0].ncolls, 2);
    cr_assert_str_eq(got[0].colls[1].name, "img.v2");
    cr_assert_eq(got[0].colls[0].count, 10000);
    catalog_snapshots_free(got, n);
    catalog_close(&cat);

    /* The copy is a catalog of its own, with both records (taken before the delete). */
    cat = catalog_open(copy_dir, &err);
    cr_assert_not_null(cat, "open the copy: %s", err.msg);
    cr_assert_eq(catalog_snapshots(cat, &got, &n, &err), 0, "%s", err.msg);
    cr_assert_eq(n, 2);
    cr_assert_str_eq(got[0].name, "a-second"); /* by name */
    cr_assert_eq(got[0].nshards, 1);
    catalog_snapshots_free(got, n);
    catalog_close(&cat);
}

/* ------------------------------------------------------------------------ */
/* The cluster (tests/test_cluster.c's harness)                             */
/* ------------------------------------------------------------------------ */

typedef s_server_t s_proc_t;

typedef struct {
    s_proc_t coord;                   /* bin/shoal-coordinator */
    s_proc_t shards[S_NSHARDS];       /* bin/shoal-shard */
    char shard_list[S_NSHARDS * 256]; /* --shards */
} s_cluster_t;

/* Starts p; a restarted process must get its old endpoint back. */
static void s_proc_start(s_proc_t *p, char *const argv[])
{
    char before[sizeof p->endpoint];
    snprintf(before, sizeof before, "%s", p->endpoint);
    p->pid =
        s_server_start(argv, p->ready, p->log, S_START_WAIT_S, p->endpoint, sizeof p->endpoint);
    if (before[0])
        cr_assert_str_eq(p->endpoint, before, "%s restarted on another endpoint", argv[0]);
}

static void s_listen(const s_proc_t *p, char *buf, size_t cap)
{
    if (p->endpoint[0]) {
        snprintf(buf, cap, "%s", p->endpoint);
        return;
    }
    int port = s_free_port();
    cr_assert(port > 0, "no free port below the ephemeral range");
    snprintf(buf, cap, "tcp://127.0.0.1:%d", port);
}

static void s_shard_start(s_proc_t *p)
{
    char bin[S_PATH_MAX], listen[sizeof p->endpoint];
    s_bin(bin, "shoal-shard");
    s_listen(p, listen, sizeof listen);
    char *argv[] = {bin,      "--listen",  listen, "--data-dir", p->data_dir, "--ready-file",
                    p->ready, "--threads", "1",    NULL};
    s_proc_start(p, argv);
}

static void s_coord_start(s_cluster_t *cl)
{
    s_proc_t *p = &cl->coord;
    char bin[S_PATH_MAX], listen[sizeof p->endpoint];
    s_bin(bin, "shoal-coordinator");
    s_listen(p, listen, sizeof listen);
    char *argv[] = {bin,         "--listen",           listen,         "--data-dir",
                    p->data_dir, "--shards",           cl->shard_list, "--ready-file",
                    p->ready,    "--ping-interval-ms", "100",          "--down-after-ms",
                    "1000",      "--deadline-ms",      "20000",        NULL};
    s_proc_start(p, argv);
}

static void s_proc_stop(s_proc_t *p)
{
    int status = s_server_signal(p->pid, SIGTERM, S_STOP_WAIT_S, p->log);
    p->pid = 0;
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s did not exit 0 (0x%x)", p->log,
              status);
}

static shoal_client_t *s_client(const s_cluster_t *cl, int timeout_ms)
{
    shoal_err_t err;
    shoal_client_t *c = shoal_client_new(cl->coord.endpoint, timeout_ms, &err);
    cr_assert_not_null(c, "client for %s: %s", cl->coord.endpoint, err.msg);
    return c;
}

/* Until the coordinator can write to every shard (create is refused while one is not up). */
static void s_wait_shards_up(const s_cluster_t *cl)
{
    shoal_client_t *c = s_client(cl, S_POLL_TIMEOUT_MS);
    shoal_create_opts_t opts = {.nlist = 4};
    shoal_err_t err;
    double end = s_now() + S_POLL_WAIT_S;
    int rc;
    while ((rc = shoal_client_create_ivf(c, "probe_up", 4, SHOAL_METRIC_L2, &opts, &err)) != 0) {
        cr_assert(rc == SHOAL_EUNAVAIL || rc == SHOAL_ETIMEOUT, "create probe_up: %s", err.msg);
        if (s_now() >= end) {
            char *log = s_slurp(cl->coord.log);
            cr_assert_fail("the coordinator still cannot reach every shard: %s\ncoordinator "
                           "log:\n%s", err.msg, log);
        }
        s_sleep_ms(S_POLL_MS);
    }
    cr_assert_eq(shoal_client_drop(c, "probe_up", &err), 0, "drop probe_up: %s", err.msg);
    shoal_client_destroy(&c);
}

static void s_cluster_start(s_cluster_t *cl)
{
    memset(cl, 0, sizeof *cl);
    size_t off = 0;
    for (int i = 0; i < S_NSHARDS; i++) {
        char name[32];
        snprintf(name, sizeof name, "shard%d", i);
        s_server_init(&cl->shards[i], name);
        s_shard_start(&cl->shards[i]);
        int len = snprintf(cl->shard_list + off, sizeof cl->shard_list - off, "%s%s", i ? "," : "",
                           cl->shards[i].endpoint);
        cr_assert(len > 0 && (size_t)len < sizeof cl->shard_list - off);
        off += (size_t)len;
    }
    s_server_init(&cl->coord, "coord");
    s_coord_start(cl);
    s_wait_shards_up(cl);
}

static void s_cluster_stop(s_cluster_t *cl)
{
    s_proc_stop(&cl->coord);
    for (int i = 0; i < S_NSHARDS; i++)
        s_proc_stop(&cl->shards[i]);
}

/* Creates coll (nlist lists), trains it on rows 0..n-1 and inserts them (ids = rows). */
static void s_load(shoal_client_t *c, const char *coll, const s_dataset_t *s, size_t n,
                   size_t nlist)
{
    shoal_create_opts_t copts = {.nlist = nlist};
    shoal_err_t err;
    int rc = shoal_client_create_ivf(c, coll, s->dim, SHOAL_METRIC_L2, &copts, &err);
    cr_assert_eq(rc, 0, "create %s: %s", coll, err.msg);
    rc = shoal_client_train(c, coll, s->base, n, s->dim, NULL, NULL, &err);
    cr_assert_eq(rc, 0, "train %s: %s", coll, err.msg);
    uint64_t *ids = malloc(n * sizeof *ids);
    cr_assert_not_null(ids);
    for (size_t i = 0; i < n; i++)
        ids[i] = i;
    for (size_t start = 0; start < n; start += 1000) {
        size_t m = n - start < 1000 ? n - start : 1000;
        rc = shoal_client_insert(c, coll, ids + start, s->base + start * s->dim, m, s->dim, NULL,
                                 &err);
        cr_assert_eq(rc, 0, "insert rows %zu.. into %s: %s", start, coll, err.msg);
    }
    free(ids);
}

/* Deletes ids first..first+n-1 from coll. */
static void s_delete_range(shoal_client_t *c, const char *coll, uint64_t first, size_t n)
{
    uint64_t *ids = malloc(n * sizeof *ids);
    cr_assert_not_null(ids);
    for (size_t i = 0; i < n; i++)
        ids[i] = first + i;
    shoal_err_t err;
    int rc = shoal_client_delete(c, coll, ids, n, NULL, NULL, &err);
    cr_assert_eq(rc, 0, "delete from %s: %s", coll, err.msg);
    free(ids);
}

/* The collection's count from the coordinator's stats. */
static uint64_t s_count(shoal_client_t *c, const char *coll)
{
    char path[128];
    snprintf(path, sizeof path, "collections.%s.count", coll);
    return (uint64_t)s_stat(c, path);
}

/* One search's answer. */
typedef struct {
    uint64_t *ids; /* nq x k */
    float *dists;  /* nq x k */
} s_answer_t;

static void s_answer(shoal_client_t *c, const char *coll, const s_dataset_t *s, wire_mode_t mode,
                     size_t nprobe, s_answer_t *a)
{
    shoal_search_opts_t opts = {.k = S_K, .mode = mode, .nprobe = nprobe};
    shoal_search_info_t info;
    shoal_err_t err;
    int rc = shoal_client_search_ex(c, coll, s->queries, s->nq, s->dim, &opts, &a->ids, &a->dists,
                                    &info, &err);
    cr_assert_eq(rc, 0, "search %s: %s", coll, err.msg);
    cr_assert_eq(info.partial, 0, "search %s partial, missing %s", coll, info.missing);
}

static void s_answer_fini(s_answer_t *a)
{
    free(a->ids);
    free(a->dists);
    memset(a, 0, sizeof *a);
}

/* Both answers hold the same ids and bit-identical distances. */
static void s_assert_same(const s_answer_t *want, const s_answer_t *got, size_t nq,
                          const char *what)
{
    for (size_t i = 0; i < nq * S_K; i++) {
        cr_assert_eq(got->ids[i], want->ids[i], "%s: query %zu rank %zu: id %" PRIu64
                     ", at snapshot time %" PRIu64, what, i / S_K, i % S_K, got->ids[i],
                     want->ids[i]);
        cr_assert(memcmp(&got->dists[i], &want->dists[i], sizeof(float)) == 0,
                  "%s: query %zu rank %zu: distance %.9g, at snapshot time %.9g", what, i / S_K,
                  i % S_K, (double)got->dists[i], (double)want->dists[i]);
    }
}

/* How many of ids first..first+n-1 coll holds. */
static size_t s_present(shoal_client_t *c, const char *coll, uint64_t first, size_t n)
{
    uint64_t *ids = malloc(n * sizeof *ids);
    cr_assert_not_null(ids);
    for (size_t i = 0; i < n; i++)
        ids[i] = first + i;
    uint8_t *found = NULL;
    float *vecs = NULL;
    size_t dim = 0;
    shoal_err_t err;
    int rc = shoal_client_get(c, coll, ids, n, &found, &vecs, &dim, &err);
    cr_assert_eq(rc, 0, "get from %s: %s", coll, err.msg);
    size_t have = 0;
    for (size_t i = 0; i < n; i++)
        have += found[i] != 0;
    free(ids);
    free(found);
    free(vecs);
    return have;
}

/* Runs a shell-free command to its end; it must exit 0. */
static void s_run_ok(char *const argv[], const char *out)
{
    int status = s_run_to_end(argv, out, out, 120);
    if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        char *text = s_slurp(out);
        cr_assert_fail("%s failed (0x%x): %s", argv[0], status, text);
    }
}

/*
 * docs/operations.md's restore for one stopped process: its data dir moves
 * aside, and a copy of <old>/snapshots/NAME becomes the data dir.
 */
static void s_restore_dir(const s_proc_t *p, const char *name)
{
    char aside[S_PATH_MAX + 32], from[S_PATH_MAX + 128], out[S_PATH_MAX];
    snprintf(aside, sizeof aside, "%s.before-restore", p->data_dir);
    cr_assert_eq(rename(p->data_dir, aside), 0, "moving %s aside", p->data_dir);
    snprintf(from, sizeof from, "%s/snapshots/%s", aside, name);
    s_scratch_path(out, "cp.out");
    char *argv[] = {"/bin/cp", "-a", from, (char *)p->data_dir, NULL};
    s_run_ok(argv, out);
}

/* 1 when <data dir>/snapshots/NAME exists. */
static int s_has_copy(const s_proc_t *p, const char *name)
{
    char path[S_PATH_MAX + 96];
    snprintf(path, sizeof path, "%s/snapshots/%s", p->data_dir, name);
    struct stat st;
    return stat(path, &st) == 0;
}

/* The snapshot's info map from the coordinator (freed by the caller). */
static void *s_snapshot(shoal_client_t *c, const char *name, size_t *len)
{
    void *info = NULL;
    char *text = NULL;
    shoal_err_t err;
    int rc = shoal_client_snapshot_create(c, name, &text, &info, len, &err);
    cr_assert_eq(rc, 0, "snapshot_create %s: %s", name, err.msg);
    cr_log_info("snapshot %s: %s", name, text);
    free(text);
    return info;
}

/* The names snapshot_list shows, comma-separated, into buf. */
static void s_listed(shoal_client_t *c, char *buf, size_t cap)
{
    void *info = NULL;
    size_t len = 0;
    shoal_err_t err;
    int rc = shoal_client_snapshot_list(c, NULL, &info, &len, &err);
    cr_assert_eq(rc, 0, "snapshot_list: %s", err.msg);
    size_t n = 0;
    cr_assert_eq(wire_info_lookup_len(info, len, "snapshots", &n), 0);
    buf[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        char path[64], name[WIRE_NAME_MAX + 1];
        snprintf(path, sizeof path, "snapshots.%zu.name", i);
        cr_assert_eq(wire_info_lookup_str(info, len, path, name, sizeof name), 0);
        size_t at = strlen(buf);
        snprintf(buf + at, cap - at, "%s%s", i ? "," : "", name);
    }
    free(info);
}

/* ------------------------------------------------------------------------ */
/* Restore                                                                  */
/* ------------------------------------------------------------------------ */

Test(snapshot, restored_cluster_answers_as_at_snapshot_time)
{
    s_dataset_t s;
    s_dataset_load(&s, "siftsmall", S_K);
    s_cluster_t cl;
    s_cluster_start(&cl);
    shoal_client_t *c = s_client(&cl, S_TIMEOUT_MS);
    s_load(c, "sift", &s, s.n, S_NLIST);
    s_load(c, "small", &s, S_SMALL_ROWS, 16);
    s_delete_range(c, "sift", 0, S_DELETED_BEFORE);

    double t0 = s_now();
    size_t len = 0;
    void *info = s_snapshot(c, "snap1", &len);
    double took_s = s_now() - t0;
    double paused = 0;
    cr_assert_eq(wire_info_lookup(info, len, "paused_ms", &paused), 0);
    size_t nshards = 0, ncolls = 0;
    cr_assert_eq(wire_info_lookup_len(info, len, "shards", &nshards), 0);
    cr_assert_eq(wire_info_lookup_len(info, len, "collections", &ncolls), 0);
    cr_assert_eq(nshards, S_NSHARDS);
    cr_assert_eq(ncolls, 2);
    double small_count = 0;
    cr_assert_eq(wire_info_lookup(info, len, "collections.1.count", &small_count), 0);
    cr_assert_eq((uint64_t)small_count, S_SMALL_ROWS, "collections are listed by name");
    free(info);
    cr_log_info("snapshot of siftsmall (%zu + %d vectors) on %d shards: %.1f ms at the client, "
                "writes held %.1f ms", s.n - S_DELETED_BEFORE, S_SMALL_ROWS, S_NSHARDS,
                took_s * 1000.0, paused);
    for (int i = 0; i < S_NSHARDS; i++)
        cr_assert(s_has_copy(&cl.shards[i], "snap1"), "shard %d has no copy", i);
    cr_assert(s_has_copy(&cl.coord, "snap1"), "the coordinator has no copy");

    /* What the cluster answers at snapshot time. */
    uint64_t count_sift = s_count(c, "sift"), count_small = s_count(c, "small");
    cr_assert_eq(count_sift, s.n - S_DELETED_BEFORE);
    s_answer_t hnsw, exact, small;
    s_answer(c, "sift", &s, WIRE_MODE_HNSW, 0, &hnsw);
    s_answer(c, "sift", &s, WIRE_MODE_EXACT, S_NLIST, &exact);
    s_answer(c, "small", &s, WIRE_MODE_HNSW, 0, &small);

    /* Writes after it: deletes, and new ids (copies of rows near the queries' answers). */
    s_delete_range(c, "sift", S_DELETED_BEFORE, S_DELETED_AFTER);
    uint64_t *ids = malloc(S_NEW_AFTER * sizeof *ids);
    cr_assert_not_null(ids);
    for (size_t i = 0; i < S_NEW_AFTER; i++)
        ids[i] = S_NEW_ID_BASE + i;
    shoal_err_t err;
    for (size_t i = 0; i < 2; i++) {
        const char *coll = i ? "small" : "sift";
        int rc = shoal_client_insert(c, coll, ids, s.base + 1000 * s.dim, S_NEW_AFTER, s.dim, NULL,
                                     &err);
        cr_assert_eq(rc, 0, "insert after the snapshot: %s", err.msg);
    }
    free(ids);
    cr_assert_eq(s_count(c, "sift"), count_sift - S_DELETED_AFTER + S_NEW_AFTER);
    cr_assert_eq(s_present(c, "sift", S_NEW_ID_BASE, S_NEW_AFTER), S_NEW_AFTER);
    char listed[1024];
    s_listed(c, listed, sizeof listed);
    cr_assert_str_eq(listed, "snap1");
    shoal_client_destroy(&c);

    /* Stop, restore every data dir from its snapshot, start fresh processes. */
    s_cluster_stop(&cl);
    s_restore_dir(&cl.coord, "snap1");
    for (int i = 0; i < S_NSHARDS; i++)
        s_restore_dir(&cl.shards[i], "snap1");
    for (int i = 0; i < S_NSHARDS; i++)
        s_shard_start(&cl.shards[i]);
    s_coord_start(&cl);
    s_wait_shards_up(&cl);
    c = s_client(&cl, S_TIMEOUT_MS);

    cr_assert_eq(s_count(c, "sift"), count_sift);
    cr_assert_eq(s_count(c, "small"), count_small);
    s_answer_t again;
    s_answer(c, "sift", &s, WIRE_MODE_HNSW, 0, &again);
    s_assert_same(&hnsw, &again, s.nq, "sift, hnsw");
    s_answer_fini(&again);
    s_answer(c, "sift", &s, WIRE_MODE_EXACT, S_NLIST, &again);
    s_assert_same(&exact, &again, s.nq, "sift, exact over every list");
    s_answer_fini(&again);
    s_answer(c, "small", &s, WIRE_MODE_HNSW, 0, &again);
    s_assert_same(&small, &again, s.nq, "small, hnsw");
    s_answer_fini(&again);
    /* Nothing written after the snapshot is there. */
    cr_assert_eq(s_present(c, "sift", S_NEW_ID_BASE, S_NEW_AFTER), 0);
    cr_assert_eq(s_present(c, "small", S_NEW_ID_BASE, S_NEW_AFTER), 0);
    cr_assert_eq(s_present(c, "sift", S_DELETED_BEFORE, S_DELETED_AFTER), S_DELETED_AFTER);
    cr_assert_eq(s_present(c, "sift", 0, S_DELETED_BEFORE), 0);
    /* The restored catalog knows the snapshot it came from. */
    s_listed(c, listed, sizeof listed);
    cr_assert_str_eq(listed, "snap1");

    s_answer_fini(&hnsw);
    s_answer_fini(&exact);
    s_answer_fini(&small);
    shoal_client_destroy(&c);
    s_dataset_free(&s);
}

/* ------------------------------------------------------------------------ */
/* Refusals and the CLI                                                     */
/* ------------------------------------------------------------------------ */

/* snapshot_create of name sent as is (no client-side check): the server's code. */
static int s_create_raw(shoal_client_t *c, const char *name, char *msg, size_t cap)
{
    wire_request_t req;
    wire_request_init(&req);
    req.op = WIRE_OP_SNAPSHOT_CREATE;
    snprintf(req.name, sizeof req.name, "%s", name);
    wire_reply_t rep;
    shoal_frames_t *frames = NULL;
    shoal_err_t err;
    shoal_err_clear(&err);
    int rc = shoal_client_call(c, &req, &rep, &frames, &err);
    snprintf(msg, cap, "%s", err.msg);
    if (frames) {
        wire_reply_fini(&rep);
        shoal_frames_destroy(&frames);
    }
    return rc;
}

/* Runs bin/shoal with args against the coordinator; returns its stdout (freed by the caller). */
static char *s_cli(const s_cluster_t *cl, const char *a, const char *b, const char *c3, int *code)
{
    char bin[S_PATH_MAX], out[S_PATH_MAX];
    s_bin(bin, "shoal");
    s_scratch_path(out, "cli.out");
    char *argv[] = {bin, "-c", (char *)cl->coord.endpoint, (char *)a, (char *)b, (char *)c3, NULL};
    int status = s_run_to_end(argv, out, out, 60);
    *code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return s_slurp(out);
}

Test(snapshot, refusals_leave_nothing_behind)
{
    s_dataset_t s;
    s_dataset_load(&s, "siftsmall", S_K);
    s_cluster_t cl;
    s_cluster_start(&cl);
    shoal_client_t *c = s_client(&cl, S_TIMEOUT_MS);
    s_load(c, "sift", &s, 2000, 16);

    char msg[SHOAL_ERR_MSG_MAX];
    const char *bad[] = {"..", ".", ".hidden", "a/b", "", "sp ace"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = s_create_raw(c, bad[i], msg, sizeof msg);
        cr_assert_eq(rc, SHOAL_EINVAL, "name \"%s\": %s (%s)", bad[i], shoal_errname(rc), msg);
    }
    shoal_err_t err;
    cr_assert_eq(shoal_client_snapshot_create(c, "../x", NULL, NULL, NULL, &err), SHOAL_EINVAL);

    /* The CLI: create, a duplicate, list. */
    int code = 0;
    char *out = s_cli(&cl, "snapshot", "create", "cli.1", &code);
    cr_assert_eq(code, 0, "shoal snapshot create: %s", out);
    cr_assert_not_null(strstr(out, "snapshot cli.1: 3 shards, 1 collections, 2,000 vectors"),
                       "%s", out);
    free(out);
    out = s_cli(&cl, "snapshot", "create", "cli.1", &code);
    cr_assert_eq(code, 1, "%s", out);
    cr_assert_not_null(strstr(out, "exists"), "%s", out);
    free(out);
    out = s_cli(&cl, "snapshot", "list", NULL, &code);
    cr_assert_eq(code, 0, "%s", out);
    cr_assert_not_null(strstr(out, "cli.1  "), "%s", out);
    cr_assert_not_null(strstr(out, "3 shards  2,000 vectors  sift=2000"), "%s", out);
    free(out);
    cr_assert_eq(s_create_raw(c, "cli.1", msg, sizeof msg), SHOAL_EEXIST, "%s", msg);

    /* A leftover folder on one shard only: eexist naming it, and the others' copies go. */
    char stray[S_PATH_MAX + 32];
    snprintf(stray, sizeof stray, "%s/snapshots/stray", cl.shards[1].data_dir);
    cr_assert_eq(mkdir(stray, 0755), 0, "%s", stray);
    cr_assert_eq(s_create_raw(c, "stray", msg, sizeof msg), SHOAL_EEXIST, "%s", msg);
    cr_assert_not_null(strstr(msg, cl.shards[1].endpoint), "%s", msg);
    cr_assert(!s_has_copy(&cl.shards[0], "stray") && !s_has_copy(&cl.shards[2], "stray"));
    cr_assert(s_has_copy(&cl.shards[1], "stray"), "the foreign folder is not removed");
    cr_assert(!s_has_copy(&cl.coord, "stray"));

    /* A shard down: eunavail naming it, nothing listed, no copy anywhere. */
    s_server_signal(cl.shards[2].pid, SIGKILL, S_STOP_WAIT_S, cl.shards[2].log);
    cl.shards[2].pid = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        /* The first may run before the shard is marked down (it then fails while
           waiting on it), the second after: both must refuse the same way. */
        char name[32];
        snprintf(name, sizeof name, "down%d", attempt);
        int rc = s_create_raw(c, name, msg, sizeof msg);
        cr_assert_eq(rc, SHOAL_EUNAVAIL, "%s: %s (%s)", name, shoal_errname(rc), msg);
        cr_assert_not_null(strstr(msg, cl.shards[2].endpoint), "%s", msg);
        for (int i = 0; i < 2; i++)
            cr_assert(!s_has_copy(&cl.shards[i], name), "shard %d kept a copy of %s", i, name);
        cr_assert(!s_has_copy(&cl.coord, name));
        if (attempt == 0)
            s_sleep_ms(1500); /* past --down-after-ms */
    }
    char listed[1024];
    s_listed(c, listed, sizeof listed);
    cr_assert_str_eq(listed, "cli.1");

    shoal_client_destroy(&c);
    s_dataset_free(&s);
}
