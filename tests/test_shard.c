/*
 * test_shard.c - bin/shoal-shard as a client sees it: real processes on
 * loopback, every op through the socket (client/shoal_client.h), malformed
 * and out-of-limit requests answered with the right error while the server
 * keeps serving, recall on siftsmall, durability across kill -9 and clean
 * restarts, signals, and the command line.
 *
 * Each test starts its shards with an ephemeral port ("tcp://127.0.0.1:*")
 * and learns the endpoint from --ready-file; data dirs live under $SHOAL_TMP
 * (default /tmp) and are removed afterwards. Children are started with
 * PR_SET_PDEATHSIG and killed in the suite's teardown, so a failing or timed
 * out test leaves no shard behind. Every wait is bounded; no timing is
 * asserted.
 *
 * Environment: SHOAL_BIN (folder of shoal-shard, default "bin"),
 * SHOAL_DATASETS (default ../shared/datasets), SHOAL_TMP.
 */
#include "client/shoal_client.h"
#include "common/datagen.h"
#include "common/groundtruth.h"
#include "net/kv.h"
#include "common/topk.h"
#include "common/vecfile.h"
#include "net/wire.h"
#include "shard/store_private.h" /* key layout, to plant a bad row */
#include "tests/test_support.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <msgpack.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define S_PATH_MAX     1024
#define S_START_WAIT_S 60.0  /* a shard (ASan build, recovery) must be ready within this */
#define S_STOP_WAIT_S  60.0  /* and stop within this after SIGTERM */
#define S_TIMEOUT_MS   20000 /* client calls */

/* ------------------------------------------------------------------------ */
/* Scratch folders and child processes                                      */
/* ------------------------------------------------------------------------ */

static void s_setup(void)
{
    s_process_suite_init("test_shard");
}

TestSuite(shard, .init = s_setup, .fini = s_process_suite_fini, .timeout = 240);

/* ------------------------------------------------------------------------ */
/* A shard under test                                                       */
/* ------------------------------------------------------------------------ */

/* A shard process (tests/test_support.h): data dir kept across restarts. */
typedef s_server_t s_shard_t;

/* Starts the shard with extra flags (NULL-terminated) and waits until it is ready. */
static void s_shard_start(s_shard_t *sh, const char *const *extra)
{
    char bin[S_PATH_MAX];
    s_bin(bin, "shoal-shard");
    char *head[] = {bin,          "--listen",   "tcp://127.0.0.1:*",
                    "--data-dir", sh->data_dir, "--ready-file",
                    sh->ready,    "--threads",  "2"};
    char *argv[64];
    s_argv_fill(argv, 63, head, 9, extra); /* room for 53 extra flags */
    sh->pid =
        s_server_start(argv, sh->ready, sh->log, S_START_WAIT_S, sh->endpoint, sizeof sh->endpoint);
}

/* Sends sig and waits for the exit; returns the wait status. */
static int s_shard_signal_wait(s_shard_t *sh, int sig)
{
    int status = s_server_signal(sh->pid, sig, S_STOP_WAIT_S, sh->log);
    sh->pid = 0;
    return status;
}

/* SIGTERM: must exit 0. */
static void s_shard_stop(s_shard_t *sh)
{
    int status = s_shard_signal_wait(sh, SIGTERM);
    if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        char *log = s_slurp(sh->log);
        cr_assert_fail("shoal-shard did not exit 0 after SIGTERM (status 0x%x):\n%s", status, log);
    }
}

static void s_shard_kill9(s_shard_t *sh)
{
    int status = s_shard_signal_wait(sh, SIGKILL);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
}

static shoal_client_t *s_client(const s_shard_t *sh, int timeout_ms)
{
    shoal_err_t err;
    shoal_client_t *client = shoal_client_new(sh->endpoint, timeout_ms, &err);
    cr_assert_not_null(client, "client for %s: %s", sh->endpoint, err.msg);
    return client;
}

/* ------------------------------------------------------------------------ */
/* Data                                                                     */
/* ------------------------------------------------------------------------ */

/* The test vector of id: reproducible from the id alone, values in [-1, 1). */
static void s_vec(uint64_t id, size_t dim, float *out)
{
    shoal_rng_t rng;
    shoal_rng_seed(&rng, id * 0x9E3779B97F4A7C15ULL + 12345);
    for (size_t j = 0; j < dim; j++)
        out[j] = (float)(shoal_rng_uniform(&rng) * 2.0 - 1.0);
}

static float *s_vecs(const uint64_t *ids, size_t n, size_t dim)
{
    float *v = malloc(n * dim * sizeof *v + 1);
    cr_assert_not_null(v);
    for (size_t i = 0; i < n; i++)
        s_vec(ids[i], dim, v + i * dim);
    return v;
}

static uint64_t *s_id_range(uint64_t first, size_t n)
{
    uint64_t *ids = malloc(n * sizeof *ids + 1);
    cr_assert_not_null(ids);
    for (size_t i = 0; i < n; i++)
        ids[i] = first + i;
    return ids;
}

static void s_create(shoal_client_t *c, const char *coll, size_t dim)
{
    shoal_err_t err;
    int rc = shoal_client_create(c, coll, dim, SHOAL_METRIC_L2, 16, 100, &err);
    cr_assert_eq(rc, 0, "create %s: %s", coll, err.msg);
}

static void s_insert_range(shoal_client_t *c, const char *coll, uint64_t first, size_t n,
                           size_t dim)
{
    uint64_t *ids = s_id_range(first, n);
    float *vecs = s_vecs(ids, n, dim);
    shoal_err_t err;
    int rc = shoal_client_insert(c, coll, ids, vecs, n, dim, NULL, &err);
    cr_assert_eq(rc, 0, "insert %zu into %s: %s", n, coll, err.msg);
    free(ids);
    free(vecs);
}

/* Exact top-1 for the stored vector of each id: the id itself at distance ~0. */
static void s_assert_findable(shoal_client_t *c, const char *coll, const uint64_t *ids, size_t n,
                              size_t dim)
{
    for (size_t start = 0; start < n; start += 1000) {
        size_t m = n - start < 1000 ? n - start : 1000;
        float *q = s_vecs(ids + start, m, dim);
        shoal_search_opts_t opts = {.k = 1, .mode = WIRE_MODE_EXACT};
        uint64_t *found = NULL;
        float *dists = NULL;
        shoal_err_t err;
        int rc = shoal_client_search(c, coll, q, m, dim, &opts, &found, &dists, NULL, &err);
        cr_assert_eq(rc, 0, "exact search: %s", err.msg);
        for (size_t i = 0; i < m; i++) {
            cr_assert_eq(found[i], ids[start + i], "query for id %lu found id %lu",
                         (unsigned long)ids[start + i], (unsigned long)found[i]);
            cr_assert_lt(fabsf(dists[i]), 1e-3f, "id %lu at distance %g",
                         (unsigned long)ids[start + i], dists[i]);
        }
        free(found);
        free(dists);
        free(q);
    }
}

/* get returns each id's vector bit for bit. */
static void s_assert_stored(shoal_client_t *c, const char *coll, const uint64_t *ids, size_t n,
                            size_t dim)
{
    for (size_t start = 0; start < n; start += 5000) {
        size_t m = n - start < 5000 ? n - start : 5000;
        uint8_t *found = NULL;
        float *vecs = NULL;
        size_t got_dim = 0;
        shoal_err_t err;
        int rc = shoal_client_get(c, coll, ids + start, m, &found, &vecs, &got_dim, &err);
        cr_assert_eq(rc, 0, "get: %s", err.msg);
        cr_assert_eq(got_dim, dim);
        float *want = s_vecs(ids + start, m, dim);
        for (size_t i = 0; i < m; i++) {
            cr_assert_eq(found[i], 1, "id %lu is missing", (unsigned long)ids[start + i]);
            cr_assert(memcmp(vecs + i * dim, want + i * dim, dim * sizeof(float)) == 0,
                      "id %lu: stored vector differs", (unsigned long)ids[start + i]);
        }
        free(want);
        free(found);
        free(vecs);
    }
}

static void s_assert_absent(shoal_client_t *c, const char *coll, const uint64_t *ids, size_t n,
                            size_t dim)
{
    uint8_t *found = NULL;
    float *vecs = NULL;
    size_t got_dim = 0;
    shoal_err_t err;
    int rc = shoal_client_get(c, coll, ids, n, &found, &vecs, &got_dim, &err);
    cr_assert_eq(rc, 0, "get: %s", err.msg);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(found[i], 0, "deleted id %lu is still there", (unsigned long)ids[i]);
    free(found);
    free(vecs);
    /* and never a search result: exact top-1 for its own vector is another id */
    float *q = s_vecs(ids, n, dim);
    shoal_search_opts_t opts = {.k = 1, .mode = WIRE_MODE_EXACT};
    uint64_t *res = NULL;
    rc = shoal_client_search(c, coll, q, n, dim, &opts, &res, NULL, NULL, &err);
    cr_assert_eq(rc, 0, "search: %s", err.msg);
    for (size_t i = 0; i < n; i++)
        cr_assert_neq(res[i], ids[i], "deleted id %lu is still found", (unsigned long)ids[i]);
    free(res);
    free(q);
}


/* ------------------------------------------------------------------------ */
/* Raw requests                                                             */
/* ------------------------------------------------------------------------ */

typedef enum { S_DROP, S_AS_STR, S_AS_UINT } s_edit_t;

/* Re-packs frame 0 with `key` dropped or its value replaced. */
static void s_raw_edit(s_raw_t *raw, const char *key, s_edit_t edit, const char *str, uint64_t u)
{
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    cr_assert_eq(msgpack_unpack_next(&up, (const char *)raw->data[0], raw->size[0], &off),
                 MSGPACK_UNPACK_SUCCESS);
    msgpack_object obj = up.data;
    cr_assert_eq(obj.type, MSGPACK_OBJECT_MAP);
    size_t n = obj.via.map.size, hits = 0;
    for (size_t i = 0; i < n; i++) {
        const msgpack_object *k = &obj.via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(key) &&
            !memcmp(k->via.str.ptr, key, k->via.str.size))
            hits++;
    }
    cr_assert_eq(hits, 1, "header has no key \"%s\"", key);
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init(&sbuf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sbuf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, edit == S_DROP ? n - 1 : n);
    for (size_t i = 0; i < n; i++) {
        const msgpack_object *k = &obj.via.map.ptr[i].key;
        int match = k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(key) &&
                    !memcmp(k->via.str.ptr, key, k->via.str.size);
        if (match && edit == S_DROP)
            continue;
        msgpack_pack_object(&pk, *k);
        if (!match)
            msgpack_pack_object(&pk, obj.via.map.ptr[i].val);
        else if (edit == S_AS_STR) {
            msgpack_pack_str(&pk, strlen(str));
            msgpack_pack_str_body(&pk, str, strlen(str));
        } else {
            msgpack_pack_uint64(&pk, u);
        }
    }
    free(raw->data[0]);
    raw->data[0] = malloc(sbuf.size + 1);
    cr_assert_not_null(raw->data[0]);
    memcpy(raw->data[0], sbuf.data, sbuf.size);
    raw->size[0] = sbuf.size;
    msgpack_sbuffer_destroy(&sbuf);
    msgpack_unpacked_destroy(&up);
}

/*
 * Sends raw and returns the reply's code; msg gets its message. A reply
 * that starts with an empty delimiter (REQ style) has it skipped.
 */
static int s_raw_send(shoal_client_t *c, const s_raw_t *raw, char *msg, size_t cap)
{
    shoal_frames_t *reply;
    shoal_err_t err;
    int rc = s_raw_call(c, raw, &reply, &err);
    if (rc != 0) {
        snprintf(msg, cap, "%s", err.msg);
        return rc;
    }
    wire_reply_t rep;
    s_reply_decode(reply, &rep, "raw request");
    snprintf(msg, cap, "%s", rep.msg);
    int code = rep.code;
    wire_reply_fini(&rep);
    shoal_frames_destroy(&reply);
    return code;
}

/* ------------------------------------------------------------------------ */
/* Every op                                                                 */
/* ------------------------------------------------------------------------ */

#define S_DIM 16

Test(shard, every_op_through_the_socket)
{
    s_shard_t sh;
    s_server_init(&sh, "ops");
    s_shard_start(&sh, NULL);
    shoal_client_t *c = s_client(&sh, S_TIMEOUT_MS);
    shoal_err_t err;

    void *info = NULL;
    size_t info_len = 0;
    cr_assert_eq(shoal_client_ping(c, &info, &info_len, &err), 0, "ping: %s", err.msg);
    double uptime = -1;
    cr_assert_eq(wire_info_lookup(info, info_len, "uptime_s", &uptime), 0);
    cr_assert_geq(uptime, 0);
    double first_rid = 0, again = 0;
    cr_assert_eq(wire_info_lookup(info, info_len, "first_rid", &first_rid), 0);
    cr_assert_gt(first_rid, 0, "the ping was this link's first request");
    free(info);
    /* later requests on the link leave its first rid as it was */
    cr_assert_eq(shoal_client_ping(c, &info, &info_len, &err), 0, "ping: %s", err.msg);
    cr_assert_eq(wire_info_lookup(info, info_len, "first_rid", &again), 0);
    cr_assert_eq(again, first_rid);
    free(info);

    s_create(c, "docs", S_DIM);
    cr_assert_eq(shoal_client_create(c, "docs", S_DIM, SHOAL_METRIC_L2, 0, 0, &err), SHOAL_EEXIST);
    s_insert_range(c, "docs", 1000, 300, S_DIM);

    /* read-your-writes: each acknowledged vector is found by the next search */
    for (uint64_t id = 5000; id < 5020; id++) {
        float v[S_DIM];
        s_vec(id, S_DIM, v);
        uint64_t seq = 0;
        cr_assert_eq(shoal_client_insert(c, "docs", &id, v, 1, S_DIM, &seq, &err), 0, "%s",
                     err.msg);
        cr_assert_gt(seq, 0);
        shoal_search_opts_t opts = {.k = 3, .mode = WIRE_MODE_HNSW};
        uint64_t *ids = NULL;
        float *dists = NULL;
        wire_mode_t used = WIRE_MODE_AUTO;
        cr_assert_eq(shoal_client_search(c, "docs", v, 1, S_DIM, &opts, &ids, &dists, &used, &err),
                     0, "%s", err.msg);
        cr_assert_eq(ids[0], id);
        cr_assert_eq(used, WIRE_MODE_HNSW);
        free(ids);
        free(dists);
    }

    uint64_t *all = s_id_range(1000, 300);
    s_assert_stored(c, "docs", all, 300, S_DIM);
    s_assert_findable(c, "docs", all, 300, S_DIM);

    /* get of an absent id: found 0, zeros */
    uint64_t mixed[2] = {1000, 777777};
    uint8_t *found = NULL;
    float *vecs = NULL;
    size_t dim = 0;
    cr_assert_eq(shoal_client_get(c, "docs", mixed, 2, &found, &vecs, &dim, &err), 0);
    cr_assert_eq(found[0], 1);
    cr_assert_eq(found[1], 0);
    for (size_t j = 0; j < S_DIM; j++)
        cr_assert_eq(vecs[S_DIM + j], 0.0f);
    free(found);
    free(vecs);

    /* a filtered search returns only allowed ids */
    uint64_t allow[3] = {1010, 1020, 1030};
    float q[S_DIM];
    s_vec(1000, S_DIM, q);
    shoal_search_opts_t fopts = {.k = 5, .mode = WIRE_MODE_EXACT, .filter = allow, .nfilter = 3};
    uint64_t *ids = NULL;
    float *dists = NULL;
    cr_assert_eq(shoal_client_search(c, "docs", q, 1, S_DIM, &fopts, &ids, &dists, NULL, &err), 0,
                 "%s", err.msg);
    for (size_t i = 0; i < 3; i++)
        cr_assert(ids[i] == 1010 || ids[i] == 1020 || ids[i] == 1030, "id %lu not allowed",
                  (unsigned long)ids[i]);
    cr_assert_eq(ids[3], TOPK_ID_NONE);
    cr_assert(isinf(dists[4]));
    free(ids);
    free(dists);

    /* delete: count of those that existed; gone from get and search */
    uint64_t del[4] = {1000, 1001, 1002, 999999};
    size_t deleted = 0;
    cr_assert_eq(shoal_client_delete(c, "docs", del, 4, &deleted, NULL, &err), 0, "%s", err.msg);
    cr_assert_eq(deleted, 3);
    s_assert_absent(c, "docs", del, 3, S_DIM);

    /* stats: text and lookups */
    char *text = NULL;
    cr_assert_eq(shoal_client_stats(c, NULL, &text, &info, &info_len, &err), 0, "%s", err.msg);
    cr_assert(strstr(text, "\"collections\"") && strstr(text, "\"docs\""), "%s", text);
    double v = -1;
    cr_assert_eq(wire_info_lookup(info, info_len, "collections.docs.count", &v), 0, "%s", text);
    cr_assert_eq(v, 300 + 20 - 3);
    cr_assert_eq(wire_info_lookup(info, info_len, "collections.docs.dim", &v), 0);
    cr_assert_eq(v, S_DIM);
    cr_assert_eq(wire_info_lookup(info, info_len, "requests.insert", &v), 0);
    cr_assert_geq(v, 21);
    cr_assert_eq(wire_info_lookup(info, info_len, "errors.create_collection", &v), 0);
    cr_assert_eq(v, 1);
    cr_assert_eq(wire_info_lookup(info, info_len, "latency_us.search.p99", &v), 0, "%s", text);
    cr_assert_geq(v, 0);
    cr_assert_eq(wire_info_lookup(info, info_len, "workers", &v), 0);
    cr_assert_eq(v, 2);
    free(text);
    free(info);
    cr_assert_eq(shoal_client_stats(c, "docs", NULL, NULL, NULL, &err), 0, "%s", err.msg);
    cr_assert_eq(shoal_client_stats(c, "nosuch", NULL, NULL, NULL, &err), SHOAL_ENOTFOUND);

    /* checkpoint: afterwards the checkpoint covers the last write */
    cr_assert_eq(shoal_client_checkpoint(c, "docs", &err), 0, "%s", err.msg);
    cr_assert_eq(shoal_client_checkpoint(c, NULL, &err), 0, "%s", err.msg);
    cr_assert_eq(shoal_client_checkpoint(c, "nosuch", &err), SHOAL_ENOTFOUND);
    cr_assert_eq(s_stat(c, "collections.docs.checkpoint_seq"),
                 s_stat(c, "collections.docs.last_seq"));

    /* a REQ-style client (empty delimiter first) gets the delimiter back */
    wire_request_t req;
    s_request_start(&req, WIRE_OP_PING, 77, "");
    s_raw_t raw;
    s_raw_from_req(&req, &raw);
    memmove(&raw.data[1], &raw.data[0], sizeof raw.data[0]);
    memmove(&raw.size[1], &raw.size[0], sizeof raw.size[0]);
    raw.data[0] = malloc(1);
    raw.size[0] = 0;
    raw.count = 2;
    char msg[WIRE_MSG_MAX];
    cr_assert_eq(s_raw_send(c, &raw, msg, sizeof msg), 0, "%s", msg);
    s_raw_fini(&raw);

    /* drop: then the collection is gone */
    cr_assert_eq(shoal_client_drop(c, "docs", &err), 0, "%s", err.msg);
    ids = NULL;
    shoal_search_opts_t opts = {.k = 1};
    cr_assert_eq(shoal_client_search(c, "docs", q, 1, S_DIM, &opts, &ids, NULL, NULL, &err),
                 SHOAL_ENOTFOUND);
    cr_assert_str_eq(err.msg, "collection \"docs\" does not exist");
    cr_assert_eq(shoal_client_drop(c, "docs", &err), SHOAL_ENOTFOUND);

    free(all);
    shoal_client_destroy(&c);
    s_shard_stop(&sh);
}

/* ------------------------------------------------------------------------ */
/* Bad requests                                                             */
/* ------------------------------------------------------------------------ */

#define S_KNOWN_ID 42

/* After a bad request: the server still answers a ping and a valid search. */
static void s_assert_serving(shoal_client_t *c)
{
    shoal_err_t err;
    cr_assert_eq(shoal_client_ping(c, NULL, NULL, &err), 0, "ping after a bad request: %s",
                 err.msg);
    uint64_t id = S_KNOWN_ID;
    s_assert_findable(c, "c", &id, 1, S_DIM);
}

/* raw: a valid search request's frames (k = 13, a value nothing else in the header has). */
static void s_raw_search(s_raw_t *raw, const float *q)
{
    wire_request_t req;
    s_request_start(&req, WIRE_OP_SEARCH, 9001, "c");
    req.n = 1;
    req.dim = S_DIM;
    req.vecs = q;
    req.k = 13;
    req.mode = WIRE_MODE_HNSW;
    s_raw_from_req(&req, raw);
}

static void s_expect_raw(shoal_client_t *c, s_raw_t *raw, int code, const char *needle,
                         const char *what)
{
    char msg[WIRE_MSG_MAX];
    int got = s_raw_send(c, raw, msg, sizeof msg);
    cr_assert_eq(got, code, "%s: got %s (%s), expected %s", what, shoal_errname(got), msg,
                 shoal_errname(code));
    if (needle)
        cr_assert(strstr(msg, needle), "%s: message \"%s\" lacks \"%s\"", what, msg, needle);
    s_raw_fini(raw);
    s_assert_serving(c);
}

/*
 * Sends raw (then frees it): the error reply must carry code and be addressed
 * to op and rid (docs/protocol.md section 6); *delimited gets whether it came
 * behind an empty frame (may be NULL).
 */
static void s_expect_addressed(shoal_client_t *c, s_raw_t *raw, int code, wire_op_t op,
                               uint64_t rid, int *delimited, const char *what)
{
    shoal_frames_t *reply;
    shoal_err_t err;
    cr_assert_eq(s_raw_call(c, raw, &reply, &err), 0, "%s: no reply: %s", what, err.msg);
    if (delimited)
        *delimited = reply->count > 0 && reply->size[0] == 0;
    wire_reply_t rep;
    s_reply_decode(reply, &rep, what);
    cr_assert_eq(rep.code, code, "%s: got %s (%s), expected %s", what, shoal_errname(rep.code),
                 rep.msg, shoal_errname(code));
    cr_assert_eq(rep.op, op, "%s: reply op %d, expected %d", what, (int)rep.op, (int)op);
    cr_assert_eq(rep.rid, rid, "%s: reply rid %" PRIu64 ", expected %" PRIu64, what, rep.rid, rid);
    wire_reply_fini(&rep);
    shoal_frames_destroy(&reply);
    s_raw_fini(raw);
    s_assert_serving(c);
}

Test(shard, error_replies_carry_what_the_header_map_gives)
{
    s_shard_t sh;
    s_server_init(&sh, "addr");
    s_shard_start(&sh, NULL);
    shoal_client_t *c = s_client(&sh, S_TIMEOUT_MS);
    s_create(c, "c", S_DIM);
    s_insert_range(c, "c", 1, 100, S_DIM);
    float q[S_DIM];
    s_vec(S_KNOWN_ID, S_DIM, q);
    s_raw_t raw;

    /* a complete map: op and rid, whatever else is wrong */
    s_raw_search(&raw, q);
    raw.data[0][raw.size[0]++] = 0xc0; /* s_raw_from_req leaves a byte of room */
    s_expect_addressed(c, &raw, SHOAL_EPROTO, WIRE_OP_SEARCH, 9001, NULL, "trailing bytes");
    s_raw_search(&raw, q);
    raw.size[1] -= 4;
    s_expect_addressed(c, &raw, SHOAL_EPROTO, WIRE_OP_SEARCH, 9001, NULL, "short query frame");
    s_raw_search(&raw, q);
    for (size_t i = raw.count; i < 5; i++) {
        raw.data[i] = calloc(1, 8);
        raw.size[i] = 8;
    }
    raw.count = 5;
    s_expect_addressed(c, &raw, SHOAL_EPROTO, WIRE_OP_SEARCH, 9001, NULL, "five frames");
    /* an op name this protocol does not have is not echoed; the rid is */
    s_raw_search(&raw, q);
    s_raw_edit(&raw, "op", S_AS_STR, "serch", 0);
    s_expect_addressed(c, &raw, SHOAL_EPROTO, WIRE_OP_NONE, 9001, NULL, "unknown op");
    /* not a complete map: neither */
    s_raw_search(&raw, q);
    raw.size[0] -= 1;
    s_expect_addressed(c, &raw, SHOAL_EPROTO, WIRE_OP_NONE, 0, NULL, "truncated header");

    /* section 1's REQ rule: an empty first frame is a delimiter, echoed */
    s_raw_search(&raw, q);
    raw.size[1] -= 4; /* so the reply is an error that names the request */
    for (size_t i = raw.count; i > 0; i--) {
        raw.data[i] = raw.data[i - 1];
        raw.size[i] = raw.size[i - 1];
    }
    raw.data[0] = malloc(1);
    raw.size[0] = 0;
    raw.count++;
    int delimited = 0;
    s_expect_addressed(c, &raw, SHOAL_EPROTO, WIRE_OP_SEARCH, 9001, &delimited,
                       "behind an empty frame");
    cr_assert(delimited, "the reply to a request behind an empty frame has none in front");
    s_raw_search(&raw, q);
    raw.size[1] -= 4;
    s_expect_addressed(c, &raw, SHOAL_EPROTO, WIRE_OP_SEARCH, 9001, &delimited, "no empty frame");
    cr_assert(!delimited, "a DEALER request's reply starts with an empty frame");

    /* ef beyond the index's bound is a limit, like k (section 7) */
    uint64_t *res = NULL;
    shoal_err_t err;
    shoal_search_opts_t opts = {.k = 5, .mode = WIRE_MODE_HNSW, .ef = 100000};
    cr_assert_eq(shoal_client_search(c, "c", q, 1, S_DIM, &opts, &res, NULL, NULL, &err),
                 SHOAL_ELIMIT, "%s", err.msg);
    cr_assert(strstr(err.msg, "\"ef\" must be 1..65536"), "%s", err.msg);
    s_assert_serving(c);

    shoal_client_destroy(&c);
    s_shard_stop(&sh);
}

Test(shard, bad_requests_get_errors_and_the_server_keeps_serving)
{
    s_shard_t sh;
    s_server_init(&sh, "bad");
    const char *flags[] = {"--max-message-bytes", "65536", "--max-k", "100", NULL};
    s_shard_start(&sh, flags);
    shoal_client_t *c = s_client(&sh, S_TIMEOUT_MS);
    s_create(c, "c", S_DIM);
    s_insert_range(c, "c", 1, 200, S_DIM);
    s_assert_serving(c);

    float q[S_DIM];
    s_vec(S_KNOWN_ID, S_DIM, q);
    wire_request_t req;
    s_raw_t raw;
    shoal_err_t err;

    /* truncated msgpack */
    s_raw_search(&raw, q);
    raw.size[0] /= 2;
    s_expect_raw(c, &raw, SHOAL_EPROTO, NULL, "truncated header");

    /* not msgpack at all */
    s_raw_search(&raw, q);
    memcpy(raw.data[0], "\xc1\xc1\xc1", 3);
    s_expect_raw(c, &raw, SHOAL_EPROTO, NULL, "garbage header");

    /* wrong field type: k as a string */
    s_raw_search(&raw, q);
    s_raw_edit(&raw, "k", S_AS_STR, "13", 0);
    s_expect_raw(c, &raw, SHOAL_EPROTO, "\"k\"", "k as a string");

    /* missing field: no k, no coll */
    s_raw_search(&raw, q);
    s_raw_edit(&raw, "k", S_DROP, NULL, 0);
    s_expect_raw(c, &raw, SHOAL_EPROTO, "\"k\"", "missing k");
    s_raw_search(&raw, q);
    s_raw_edit(&raw, "coll", S_DROP, NULL, 0);
    s_expect_raw(c, &raw, SHOAL_EPROTO, "coll", "missing coll");

    /* k = 0 and over the limit */
    s_raw_search(&raw, q);
    s_raw_edit(&raw, "k", S_AS_UINT, NULL, 0);
    s_expect_raw(c, &raw, SHOAL_EINVAL, "\"k\"", "k = 0");
    s_raw_search(&raw, q);
    s_raw_edit(&raw, "k", S_AS_UINT, NULL, 101);
    s_expect_raw(c, &raw, SHOAL_ELIMIT, "k", "k over --max-k");

    /* unknown op */
    s_raw_search(&raw, q);
    s_raw_edit(&raw, "op", S_AS_STR, "frobnicate", 0);
    s_expect_raw(c, &raw, SHOAL_EPROTO, "frobnicate", "unknown op");

    /* payload size not matching the header: the query frame one float short */
    s_raw_search(&raw, q);
    raw.size[1] -= 4;
    s_expect_raw(c, &raw, SHOAL_EPROTO, "frame 1", "short query frame");
    /* an insert whose vectors frame is one byte long */
    uint64_t ids2[2] = {900, 901};
    float v2[2 * S_DIM];
    s_vec(900, S_DIM, v2);
    s_vec(901, S_DIM, v2 + S_DIM);
    s_request_start(&req, WIRE_OP_INSERT, 5, "c");
    req.n = 2;
    req.dim = S_DIM;
    req.ids = ids2;
    req.vecs = v2;
    s_raw_from_req(&req, &raw);
    raw.size[2] += 1;
    raw.data[2] = realloc(raw.data[2], raw.size[2]);
    s_expect_raw(c, &raw, SHOAL_EPROTO, "frame 2", "long vector frame");

    /* too many frames, and an empty message (only a delimiter) */
    s_raw_search(&raw, q);
    for (size_t i = raw.count; i < 5; i++) {
        raw.data[i] = malloc(8);
        memset(raw.data[i], 0, 8);
        raw.size[i] = 8;
    }
    raw.count = 5;
    s_expect_raw(c, &raw, SHOAL_EPROTO, "frames", "five frames");
    memset(&raw, 0, sizeof raw);
    raw.count = 1;
    raw.data[0] = malloc(1);
    raw.size[0] = 0;
    s_expect_raw(c, &raw, SHOAL_EPROTO, NULL, "empty message");

    /* dim mismatch: search and insert */
    uint64_t *res = NULL;
    shoal_search_opts_t opts = {.k = 5, .mode = WIRE_MODE_HNSW};
    cr_assert_eq(shoal_client_search(c, "c", q, 1, 8, &opts, &res, NULL, NULL, &err), SHOAL_EDIM);
    cr_assert_str_eq(err.msg, "collection \"c\": expected dim 16, got 8");
    s_assert_serving(c);
    cr_assert_eq(shoal_client_insert(c, "c", ids2, v2, 2, 8, NULL, &err), SHOAL_EDIM);
    cr_assert_str_eq(err.msg, "collection \"c\": expected dim 16, got 8");
    s_assert_serving(c);

    /* NaN in an insert (row 1), Inf in a query (row 0): nothing inserted */
    v2[S_DIM + 3] = NAN;
    cr_assert_eq(shoal_client_insert(c, "c", ids2, v2, 2, S_DIM, NULL, &err), SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "vector 1") && strstr(err.msg, "901"), "%s", err.msg);
    s_assert_absent(c, "c", ids2, 1, S_DIM);
    s_assert_serving(c);
    float bad_q[S_DIM];
    memcpy(bad_q, q, sizeof bad_q);
    bad_q[5] = INFINITY;
    cr_assert_eq(shoal_client_search(c, "c", bad_q, 1, S_DIM, &opts, &res, NULL, NULL, &err),
                 SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "query 0"), "%s", err.msg);
    s_assert_serving(c);

    /* k over the limit and unknown collection, through the typed calls */
    opts.k = 101;
    cr_assert_eq(shoal_client_search(c, "c", q, 1, S_DIM, &opts, &res, NULL, NULL, &err),
                 SHOAL_ELIMIT);
    s_assert_serving(c);
    opts.k = 5;
    cr_assert_eq(shoal_client_search(c, "nosuch", q, 1, S_DIM, &opts, &res, NULL, NULL, &err),
                 SHOAL_ENOTFOUND);
    cr_assert_str_eq(err.msg, "collection \"nosuch\" does not exist");
    s_assert_serving(c);
    cr_assert_eq(shoal_client_insert(c, "nosuch", ids2, q, 1, S_DIM, NULL, &err), SHOAL_ENOTFOUND);
    s_assert_serving(c);

    /* oversized: frames each under the limit but over it together -> elimit */
    size_t n = 1000; /* ids 8,000 B + vectors 64,000 B > 65,536 B */
    uint64_t *big_ids = s_id_range(100000, n);
    float *big_vecs = s_vecs(big_ids, n, S_DIM);
    cr_assert_eq(shoal_client_insert(c, "c", big_ids, big_vecs, n, S_DIM, NULL, &err), SHOAL_ELIMIT,
                 "%s", err.msg);
    cr_assert(strstr(err.msg, "65536"), "%s", err.msg);
    s_assert_serving(c);
    free(big_ids);
    free(big_vecs);

    /*
     * One frame over the limit: ZeroMQ (ZMQ_MAXMSGSIZE) drops the connection
     * before the server sees the message, so no reply comes (a timeout);
     * the client's fresh connection and any other client are still served.
     */
    n = 2000; /* vectors 128,000 B */
    big_ids = s_id_range(200000, n);
    big_vecs = s_vecs(big_ids, n, S_DIM);
    shoal_client_set_timeout(c, 1000);
    cr_assert_eq(shoal_client_insert(c, "c", big_ids, big_vecs, n, S_DIM, NULL, &err),
                 SHOAL_ETIMEOUT, "%s", err.msg);
    shoal_client_set_timeout(c, S_TIMEOUT_MS);
    free(big_ids);
    free(big_vecs);
    s_assert_serving(c);
    shoal_client_t *c2 = s_client(&sh, S_TIMEOUT_MS);
    s_assert_serving(c2);
    shoal_client_destroy(&c2);

    /* none of it changed the collection */
    cr_assert_eq(s_stat(c, "collections.c.count"), 200);
    cr_assert_geq(s_stat(c, "errors.total"), 20);
    shoal_client_destroy(&c);
    s_shard_stop(&sh);
}

/* ------------------------------------------------------------------------ */
/* Recall on siftsmall                                                      */
/* ------------------------------------------------------------------------ */

Test(shard, siftsmall_recall_through_the_socket)
{
    s_dataset_t ds;
    s_dataset_load(&ds, "siftsmall", 10);
    const float *base = ds.base, *queries = ds.queries;
    const int32_t *gt = ds.gt;
    size_t n = ds.n, dim = ds.dim, nq = ds.nq, gtk = ds.gtk;
    shoal_err_t err;

    s_shard_t sh;
    s_server_init(&sh, "sift");
    s_shard_start(&sh, NULL);
    shoal_client_t *c = s_client(&sh, 120000);
    cr_assert_eq(shoal_client_create(c, "sift", dim, SHOAL_METRIC_L2, 16, 200, &err), 0, "%s",
                 err.msg);
    uint64_t *ids = s_id_range(0, n);
    for (size_t start = 0; start < n; start += 1000) {
        size_t m = n - start < 1000 ? n - start : 1000;
        cr_assert_eq(
            shoal_client_insert(c, "sift", ids + start, base + start * dim, m, dim, NULL, &err), 0,
            "%s", err.msg);
    }

    const size_t k = 10;
    shoal_search_opts_t opts = {.k = k, .mode = WIRE_MODE_HNSW, .ef = 128};
    uint64_t *found = NULL;
    cr_assert_eq(shoal_client_search(c, "sift", queries, nq, dim, &opts, &found, NULL, NULL, &err),
                 0, "%s", err.msg);
    double recall_hnsw = gt_recall(found, k, gt, gtk, nq, k);
    free(found);
    opts.mode = WIRE_MODE_EXACT;
    cr_assert_eq(shoal_client_search(c, "sift", queries, nq, dim, &opts, &found, NULL, NULL, &err),
                 0, "%s", err.msg);
    double recall_exact = gt_recall(found, k, gt, gtk, nq, k);
    free(found);
    cr_log_info("siftsmall via the socket: recall@10 hnsw(ef=128) %.4f, exact %.4f", recall_hnsw,
                recall_exact);
    cr_assert_geq(recall_hnsw, 0.95, "hnsw recall@10 %.4f", recall_hnsw);
    cr_assert_eq(recall_exact, 1.0, "exact recall@10 %.4f", recall_exact);

    shoal_client_destroy(&c);
    s_shard_stop(&sh);
    free(ids);
    s_dataset_free(&ds);
}

/* ------------------------------------------------------------------------ */
/* Durability                                                               */
/* ------------------------------------------------------------------------ */

typedef struct {
    pid_t pid;     /* whom to kill */
    long delay_ms; /* when */
} s_killer_t;

static void *s_killer_main(void *arg)
{
    s_killer_t *killer = arg;
    s_sleep_ms(killer->delay_ms);
    kill(killer->pid, SIGKILL);
    return NULL;
}

#define S_CRASH_DIM   16
#define S_CRASH_BATCH 50

Test(shard, kill9_loses_no_acknowledged_insert)
{
    s_shard_t sh;
    s_server_init(&sh, "crash");
    const char *flags[] = {"--sync", "on", "--checkpoint-every", "500", NULL};
    shoal_rng_t rng;
    shoal_rng_seed(&rng, 20261121);
    size_t cap = 1 << 20, nacked = 0;
    uint64_t *acked = malloc(cap * sizeof *acked);
    cr_assert_not_null(acked);
    uint64_t next_id = 1;
    shoal_err_t err;

    for (int round = 0; round < 3; round++) {
        s_shard_start(&sh, flags);
        shoal_client_t *c = s_client(&sh, 1500);
        if (round == 0)
            s_create(c, "crash", S_CRASH_DIM);
        /* what earlier rounds acknowledged is there after the restart */
        s_assert_stored(c, "crash", acked, nacked, S_CRASH_DIM);

        s_killer_t killer = {sh.pid, 100 + (long)(shoal_rng_uniform(&rng) * 900)};
        pthread_t thread;
        cr_assert_eq(pthread_create(&thread, NULL, s_killer_main, &killer), 0);
        size_t before = nacked;
        for (int batch = 0; batch < 100000; batch++) {
            uint64_t ids[S_CRASH_BATCH];
            for (size_t i = 0; i < S_CRASH_BATCH; i++)
                ids[i] = next_id++;
            float *vecs = s_vecs(ids, S_CRASH_BATCH, S_CRASH_DIM);
            int rc =
                shoal_client_insert(c, "crash", ids, vecs, S_CRASH_BATCH, S_CRASH_DIM, NULL, &err);
            free(vecs);
            if (rc != 0)
                break; /* the shard died under us: this batch is unacknowledged */
            cr_assert_leq(nacked + S_CRASH_BATCH, cap);
            memcpy(acked + nacked, ids, sizeof ids);
            nacked += S_CRASH_BATCH;
        }
        pthread_join(thread, NULL);
        int status = 0;
        cr_assert(s_wait(sh.pid, 10, &status), "the shard survived SIGKILL?");
        cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
        sh.pid = 0;
        cr_log_info("round %d: killed after %ld ms, %zu inserts acknowledged", round,
                    killer.delay_ms, nacked - before);
        shoal_client_destroy(&c);
    }

    /* the final restart: every acknowledged id, bit for bit, and searchable */
    s_shard_start(&sh, flags);
    shoal_client_t *c = s_client(&sh, S_TIMEOUT_MS);
    s_assert_stored(c, "crash", acked, nacked, S_CRASH_DIM);
    s_assert_findable(c, "crash", acked, nacked, S_CRASH_DIM);
    cr_assert_geq(s_stat(c, "collections.crash.count"), (double)nacked);
    shoal_client_destroy(&c);
    s_shard_stop(&sh);
    free(acked);
}

/* Searches nq test queries; ids/dists malloc'd. */
static void s_search_fixed(shoal_client_t *c, const char *coll, size_t nq, size_t dim,
                           uint64_t **ids, float **dists)
{
    uint64_t *qids = s_id_range(900000, nq);
    float *q = s_vecs(qids, nq, dim);
    shoal_search_opts_t opts = {.k = 10, .mode = WIRE_MODE_HNSW, .ef = 64};
    shoal_err_t err;
    cr_assert_eq(shoal_client_search(c, coll, q, nq, dim, &opts, ids, dists, NULL, &err), 0, "%s",
                 err.msg);
    free(q);
    free(qids);
}

Test(shard, clean_restart_loads_the_checkpoint_and_answers_the_same)
{
    s_shard_t sh;
    s_server_init(&sh, "clean");
    s_shard_start(&sh, NULL);
    shoal_client_t *c = s_client(&sh, S_TIMEOUT_MS);
    const size_t dim = 32, n = 3000, nq = 25;
    s_create(c, "emb", dim);
    for (size_t start = 0; start < n; start += 500)
        s_insert_range(c, "emb", 1 + start, 500, dim);
    uint64_t *ids0, *ids1;
    float *d0, *d1;
    s_search_fixed(c, "emb", nq, dim, &ids0, &d0);
    shoal_client_destroy(&c);
    s_shard_stop(&sh);

    s_shard_start(&sh, NULL);
    c = s_client(&sh, S_TIMEOUT_MS);
    cr_assert_eq(s_stat(c, "collections.emb.loaded_from_checkpoint"), 1);
    cr_assert_eq(s_stat(c, "collections.emb.replayed"), 0);
    cr_assert_eq(s_stat(c, "collections.emb.count"), n);
    s_search_fixed(c, "emb", nq, dim, &ids1, &d1);
    cr_assert(memcmp(ids0, ids1, nq * 10 * sizeof *ids0) == 0, "ids differ after the restart");
    cr_assert(memcmp(d0, d1, nq * 10 * sizeof *d0) == 0, "distances differ after the restart");
    shoal_client_destroy(&c);
    s_shard_stop(&sh);
    free(ids0);
    free(ids1);
    free(d0);
    free(d1);
}

Test(shard, deletes_survive_clean_and_kill9_restarts)
{
    s_shard_t sh;
    s_server_init(&sh, "del");
    s_shard_start(&sh, NULL);
    shoal_client_t *c = s_client(&sh, S_TIMEOUT_MS);
    const size_t dim = 16;
    s_create(c, "d", dim);
    s_insert_range(c, "d", 1, 1000, dim);
    uint64_t gone1[200], gone2[100];
    for (size_t i = 0; i < 200; i++)
        gone1[i] = 1 + 2 * i; /* odd ids 1..399 */
    for (size_t i = 0; i < 100; i++)
        gone2[i] = 600 + i;
    shoal_err_t err;
    size_t deleted = 0;
    cr_assert_eq(shoal_client_delete(c, "d", gone1, 200, &deleted, NULL, &err), 0, "%s", err.msg);
    cr_assert_eq(deleted, 200);
    shoal_client_destroy(&c);
    s_shard_stop(&sh);

    s_shard_start(&sh, NULL);
    c = s_client(&sh, S_TIMEOUT_MS);
    s_assert_absent(c, "d", gone1, 200, dim);
    cr_assert_eq(s_stat(c, "collections.d.count"), 800);
    cr_assert_eq(shoal_client_delete(c, "d", gone2, 100, &deleted, NULL, &err), 0, "%s", err.msg);
    cr_assert_eq(deleted, 100);
    shoal_client_destroy(&c);
    s_shard_kill9(&sh);

    s_shard_start(&sh, NULL);
    c = s_client(&sh, S_TIMEOUT_MS);
    s_assert_absent(c, "d", gone1, 200, dim);
    s_assert_absent(c, "d", gone2, 100, dim);
    cr_assert_eq(s_stat(c, "collections.d.count"), 700);
    uint64_t kept[3] = {2, 500, 1000};
    s_assert_stored(c, "d", kept, 3, dim);
    s_assert_findable(c, "d", kept, 3, dim);
    shoal_client_destroy(&c);
    s_shard_stop(&sh);
}

/* ------------------------------------------------------------------------ */
/* Signals and the command line                                             */
/* ------------------------------------------------------------------------ */

typedef struct {
    const char *endpoint; /* the shard */
    int rc;               /* what the search returned (it may be cut short) */
} s_heavy_t;

/* A slow search (every node visited for every query) to keep a shutdown busy. */
static void *s_heavy_main(void *arg)
{
    s_heavy_t *h = arg;
    shoal_err_t err;
    /* the server keeps working on the search even once this client gave up */
    shoal_client_t *c = shoal_client_new(h->endpoint, 1500, &err);
    if (!c) {
        h->rc = err.code;
        return NULL;
    }
    /* Seconds of work on one thread: the second signal (milliseconds after the first)
       lands while the graceful stop still waits for it. */
    const size_t nq = 16000, dim = 32;
    uint64_t *qids = s_id_range(500000, nq);
    float *q = s_vecs(qids, nq, dim);
    shoal_search_opts_t opts = {.k = 100, .mode = WIRE_MODE_HNSW, .ef = 8000};
    uint64_t *ids = NULL;
    h->rc = shoal_client_search(c, "s", q, nq, dim, &opts, &ids, NULL, NULL, &err);
    free(ids);
    free(q);
    free(qids);
    shoal_client_destroy(&c);
    return NULL;
}

/*
 * The first signal starts a graceful stop, which waits for a running search;
 * the second, sent once the log shows the stop began (so the two cannot merge
 * into one pending signal), must end the process at once.
 */
static void s_double_signal(int sig, const char *name)
{
    s_shard_t sh;
    s_server_init(&sh, name);
    const char *flags[] = {"--log-level", "info", NULL};
    s_shard_start(&sh, flags);
    shoal_client_t *c = s_client(&sh, S_TIMEOUT_MS);
    s_create(c, "s", 32);
    s_insert_range(c, "s", 1, 8000, 32);
    shoal_client_destroy(&c);

    s_heavy_t heavy = {.endpoint = sh.endpoint};
    pthread_t thread;
    cr_assert_eq(pthread_create(&thread, NULL, s_heavy_main, &heavy), 0);
    /* Wait (bounded) until the shard reports the search running. */
    c = s_client(&sh, S_TIMEOUT_MS);
    double end = s_now() + 20;
    double inflight = 0;
    while (inflight < 1 && s_now() < end) {
        void *info = NULL;
        size_t len = 0;
        shoal_err_t err;
        cr_assert_eq(shoal_client_ping(c, &info, &len, &err), 0, "ping: %s", err.msg);
        cr_assert_eq(wire_info_lookup(info, len, "inflight", &inflight), 0, "ping has no inflight");
        free(info);
        if (inflight < 1)
            s_sleep_ms(5);
    }
    shoal_client_destroy(&c);
    cr_assert_geq(inflight, 1, "the search was not running 20 s after it was sent");
    kill(sh.pid, sig);
    end = s_now() + 20;
    int stopping = 0, status = 0, exited = 0;
    while (!stopping && !exited && s_now() < end) {
        char *log = s_slurp(sh.log);
        stopping = strstr(log, "stopping:") != NULL;
        free(log);
        exited = waitpid(sh.pid, &status, WNOHANG) == sh.pid;
        s_sleep_ms(5);
    }
    cr_assert(stopping || exited, "no sign of a stop 20 s after signal %d", sig);
    if (!exited) {
        kill(sh.pid, sig);
        exited = s_wait(sh.pid, 20, &status);
    } else {
        s_child_forget(sh.pid);
    }
    cr_assert(exited, "shoal-shard still running 20 s after two signals %d", sig);
    sh.pid = 0;
    pthread_join(thread, NULL);
    cr_assert(WIFEXITED(status), "status 0x%x", status);
    /* The second signal ended it at once: 128 + sig (0 would be the graceful stop's). */
    cr_assert_eq(WEXITSTATUS(status), 128 + sig, "exit %d after two signals %d",
                 WEXITSTATUS(status), sig);
    cr_assert_neq(heavy.rc, 0, "the search finished: the stop did not wait for it");
    cr_log_info("signal %d twice: exit %d (search %s)", sig, WEXITSTATUS(status),
                shoal_errname(heavy.rc));
}

Test(shard, second_sigterm_exits_at_once)
{
    s_double_signal(SIGTERM, "term2");
}

Test(shard, second_sigint_exits_at_once)
{
    s_double_signal(SIGINT, "int2");
}

/* Runs shoal-shard with args to completion; returns the exit code, output in *out. */
static int s_run_cli(const char *const *args, char **out)
{
    char bin[S_PATH_MAX], out_path[S_PATH_MAX];
    s_bin(bin, "shoal-shard");
    s_scratch_path(out_path, "cli.out");
    char *argv[32];
    char *head[] = {bin};
    s_argv_fill(argv, 32, head, 1, args);
    int status = s_run_to_end(argv, out_path, out_path, 30);
    cr_assert(WIFEXITED(status), "shoal-shard %s: status 0x%x", args[0], status);
    *out = s_slurp(out_path);
    return WEXITSTATUS(status);
}

Test(shard, help_lists_every_flag_and_bad_flags_exit_2)
{
    char *out = NULL;
    const char *help[] = {"--help", NULL};
    cr_assert_eq(s_run_cli(help, &out), 0);
    const char *flags[] = {"--listen",           "--data-dir",
                           "--config",           "--threads",
                           "--devices",          "--sync",
                           "--checkpoint-every", "--checkpoint-secs",
                           "--exact-min-batch",  "--max-message-bytes",
                           "--max-batch",        "--max-k",
                           "--max-dim",          "--log-level",
                           "--ready-file",       "--min-free-bytes",
                           "--inline-ef-max",    "--help"};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++)
        cr_assert(strstr(out, flags[i]), "--help does not list %s", flags[i]);
    free(out);

    char dir[S_PATH_MAX];
    s_scratch_path(dir, "cli.data");
    struct {
        const char *args[6];
        const char *needle;
    } bad[] = {
        {{"--data-dir", dir, "--threads", "abc", NULL}, "--threads"},
        {{"--data-dir", dir, "--threads", "5000", NULL}, "--threads"},
        {{"--data-dir", dir, "--max-k", "0", NULL}, "--max-k"},
        {{"--data-dir", dir, "--sync", "maybe", NULL}, "--sync"},
        {{"--data-dir", dir, "--devices", "gpu:", NULL}, "--devices"},
        {{"--data-dir", dir, "--checkpoint-secs", "-1", NULL}, "--checkpoint-secs"},
        {{"--data-dir", dir, "--max-message-bytes", "12x", NULL}, "--max-message-bytes"},
        {{"--data-dir", dir, "--log-level", "loud", NULL}, "--log-level"},
        {{"--data-dir", dir, "--min-free-bytes", "4096", NULL}, "--min-free-bytes"},
        {{"--data-dir", dir, "--bogus", "1", NULL}, "--bogus"},
        {{"--data-dir", dir, "--max-dim", NULL}, "--max-dim"},
        {{"--threads", "2", NULL}, "--data-dir"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = s_run_cli(bad[i].args, &out);
        cr_assert_eq(rc, 2, "case %zu: exit %d, output: %s", i, rc, out);
        cr_assert(strstr(out, bad[i].needle), "case %zu: message \"%s\" does not name %s", i, out,
                  bad[i].needle);
        free(out);
    }

    /* a config file with an unknown key names the file and line */
    char conf[S_PATH_MAX];
    s_scratch_path(conf, "bad.conf");
    FILE *f = fopen(conf, "w");
    cr_assert_not_null(f);
    fprintf(f, "# a comment\n\ndata-dir = %s\nthreads = 1\nfrobs = 3\n", dir);
    fclose(f);
    const char *badconf[] = {"--config", conf, NULL};
    cr_assert_eq(s_run_cli(badconf, &out), 2);
    cr_assert(strstr(out, "line 5") && strstr(out, "frobs"), "%s", out);
    free(out);
}

Test(shard, config_file_applies_and_flags_override_it)
{
    s_shard_t sh;
    s_server_init(&sh, "conf");
    char conf[S_PATH_MAX];
    s_scratch_path(conf, "shard.conf");
    FILE *f = fopen(conf, "w");
    cr_assert_not_null(f);
    fprintf(f, "# shard settings\n"
               "max_k = 5          # underscores work too\n"
               "max-dim = \"64\"\n"
               "sync = off\n"
               "log-level = warn\n");
    fclose(f);
    const char *flags[] = {"--config", conf, "--max-k", "7", NULL};
    s_shard_start(&sh, flags);
    shoal_client_t *c = s_client(&sh, S_TIMEOUT_MS);
    shoal_err_t err;
    cr_assert_eq(shoal_client_create(c, "wide", 65, SHOAL_METRIC_L2, 0, 0, &err), SHOAL_ELIMIT,
                 "max-dim from the file: %s", err.msg);
    s_create(c, "c", S_DIM);
    s_insert_range(c, "c", 1, 20, S_DIM);
    float q[S_DIM];
    s_vec(1, S_DIM, q);
    uint64_t *ids = NULL;
    shoal_search_opts_t opts = {.k = 7, .mode = WIRE_MODE_EXACT};
    cr_assert_eq(shoal_client_search(c, "c", q, 1, S_DIM, &opts, &ids, NULL, NULL, &err), 0,
                 "k = 7 (the flag's limit): %s", err.msg);
    free(ids);
    opts.k = 8;
    cr_assert_eq(shoal_client_search(c, "c", q, 1, S_DIM, &opts, &ids, NULL, NULL, &err),
                 SHOAL_ELIMIT);
    shoal_client_destroy(&c);
    s_shard_stop(&sh);
}

/* ------------------------------------------------------------------------ */
/* Concurrency                                                              */
/* ------------------------------------------------------------------------ */

typedef struct {
    const char *endpoint; /* the shard */
    int id;               /* which reader */
    int failures;         /* calls that failed */
    int done;             /* searches answered */
} s_reader_t;

static void *s_reader_main(void *arg)
{
    s_reader_t *r = arg;
    shoal_err_t err;
    shoal_client_t *c = shoal_client_new(r->endpoint, S_TIMEOUT_MS, &err);
    if (!c) {
        r->failures++;
        return NULL;
    }
    for (int i = 0; i < 100; i++) {
        float q[S_DIM];
        uint64_t id = 1 + (uint64_t)((i * 7 + r->id) % 500);
        s_vec(id, S_DIM, q);
        shoal_search_opts_t opts = {.k = 1, .mode = WIRE_MODE_EXACT};
        uint64_t *ids = NULL;
        if (shoal_client_search(c, "c", q, 1, S_DIM, &opts, &ids, NULL, NULL, &err) != 0 ||
            ids[0] != id)
            r->failures++;
        else
            r->done++;
        free(ids);
    }
    shoal_client_destroy(&c);
    return NULL;
}

Test(shard, concurrent_clients_read_while_one_writes)
{
    s_shard_t sh;
    s_server_init(&sh, "conc");
    s_shard_start(&sh, NULL);
    shoal_client_t *c = s_client(&sh, S_TIMEOUT_MS);
    s_create(c, "c", S_DIM);
    s_insert_range(c, "c", 1, 500, S_DIM);
    s_reader_t readers[4];
    pthread_t threads[4];
    for (int i = 0; i < 4; i++) {
        readers[i] = (s_reader_t){.endpoint = sh.endpoint, .id = i};
        cr_assert_eq(pthread_create(&threads[i], NULL, s_reader_main, &readers[i]), 0);
    }
    for (int b = 0; b < 20; b++)
        s_insert_range(c, "c", 10000 + (uint64_t)b * 50, 50, S_DIM);
    for (int i = 0; i < 4; i++) {
        pthread_join(threads[i], NULL);
        cr_assert_eq(readers[i].failures, 0, "reader %d: %d failures", i, readers[i].failures);
        cr_assert_eq(readers[i].done, 100);
    }
    cr_assert_eq(s_stat(c, "collections.c.count"), 1500);
    shoal_client_destroy(&c);
    s_shard_stop(&sh);
}

/* ------------------------------------------------------------------------ */
/* Bad rows (issue 9, bug 1)                                                */
/* ------------------------------------------------------------------------ */

/* Times needle occurs in text. */
static size_t s_occurrences(const char *text, const char *needle)
{
    size_t n = 0;
    for (const char *p = strstr(text, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

Test(shard, huge_rows_are_refused_whole_and_the_shard_restarts)
{
    s_shard_t sh;
    s_server_init(&sh, "huge");
    s_shard_start(&sh, NULL);
    shoal_client_t *c = s_client(&sh, S_TIMEOUT_MS);
    shoal_err_t err;
    const char *names[2] = {"l2", "ip"};
    shoal_metric_t metrics[2] = {SHOAL_METRIC_L2, SHOAL_METRIC_IP};
    /* Row 0 fine, row 1 finite but with a squared norm of 4e40: more than a float holds. */
    float rows[2 * 4] = {0.5f, 0.25f, 0.0f, 1.0f, 1e20f, 1e20f, 1e20f, 1e20f};
    uint64_t ids[2] = {1, 2};
    for (int m = 0; m < 2; m++) {
        cr_assert_eq(shoal_client_create(c, names[m], 4, metrics[m], 16, 100, &err), 0, "%s",
                     err.msg);
        int rc = shoal_client_insert(c, names[m], ids, rows, 2, 4, NULL, &err);
        cr_assert_eq(rc, SHOAL_EINVAL, "%s: %d %s", names[m], rc, err.msg);
        cr_assert(strstr(err.msg, "row 1") && strstr(err.msg, "squared norm"), "%s", err.msg);
    }
    shoal_client_destroy(&c);
    s_shard_kill9(&sh);

    s_shard_start(&sh, NULL);
    c = s_client(&sh, S_TIMEOUT_MS);
    for (int m = 0; m < 2; m++) {
        char path[64];
        snprintf(path, sizeof path, "collections.%s.count", names[m]);
        cr_assert_eq(s_stat(c, path), 0);
        uint8_t *found = NULL;
        float *vecs = NULL;
        size_t dim = 0;
        cr_assert_eq(shoal_client_get(c, names[m], ids, 2, &found, &vecs, &dim, &err), 0, "%s",
                     err.msg);
        cr_assert(!found[0] && !found[1], "%s: a row of the refused batch is stored", names[m]);
        free(found);
        free(vecs);
    }
    shoal_client_destroy(&c);
    s_shard_stop(&sh);
}

/* Puts a "V/" record of dim floats of value for id straight into a stopped shard's RocksDB. */
static void s_plant_row(const char *data_dir, const char *coll, uint64_t id, size_t dim,
                        float value)
{
    shoal_err_t err;
    kv_t *kv = kv_open(data_dir, 0, &err);
    cr_assert_not_null(kv, "kv_open %s: %s", data_dir, err.msg);
    uint8_t key[SHARD_KEY_MAX];
    size_t klen = shard_key_u64(key, 'V', coll, id);
    uint8_t val[sizeof(shard_vec_hdr_t) + 64 * sizeof(float)];
    cr_assert_leq(dim, 64);
    shard_vec_hdr_t hdr = {.magic = SHARD_VEC_MAGIC, .version = SHARD_RECORD_VERSION, .seq = 1};
    memcpy(val, &hdr, sizeof hdr);
    for (size_t j = 0; j < dim; j++)
        memcpy(val + sizeof hdr + j * sizeof(float), &value, sizeof value);
    cr_assert_eq(kv_put(kv, key, klen, val, sizeof hdr + dim * sizeof(float), 1, &err), 0, "%s",
                 err.msg);
    kv_close(&kv);
}

Test(shard, a_bad_stored_row_is_quarantined_and_the_shard_serves_the_rest)
{
    s_shard_t sh;
    s_server_init(&sh, "quar");
    s_shard_start(&sh, NULL);
    shoal_client_t *c = s_client(&sh, S_TIMEOUT_MS);
    s_create(c, "v", S_DIM);
    s_insert_range(c, "v", 1, 100, S_DIM);
    shoal_client_destroy(&c);
    s_shard_stop(&sh);

    /* What an older build could leave behind: a finite row no float norm holds. */
    s_plant_row(sh.data_dir, "v", 1000, S_DIM, 1e20f);
    const char *line = "collection \"v\": stored vector 1000 has squared norm";
    for (int run = 0; run < 2; run++) {
        s_shard_start(&sh, NULL);
        c = s_client(&sh, S_TIMEOUT_MS);
        char *log = s_slurp(sh.log);
        /* Logged at the open that moved it, not again at the next one. */
        cr_assert_eq(s_occurrences(log, line), 1, "run %d:\n%s", run, log);
        free(log);
        cr_assert_eq(s_stat(c, "collections.v.quarantined"), 1);
        cr_assert_eq(s_stat(c, "collections.v.count"), 100 + 10 * run);
        uint64_t *ids = s_id_range(1, 100);
        s_assert_stored(c, "v", ids, 100, S_DIM);
        s_assert_findable(c, "v", ids, 100, S_DIM);
        free(ids);
        uint64_t bad = 1000;
        uint8_t *found = NULL;
        float *vecs = NULL;
        size_t dim = 0;
        shoal_err_t err;
        cr_assert_eq(shoal_client_get(c, "v", &bad, 1, &found, &vecs, &dim, &err), 0, "%s",
                     err.msg);
        cr_assert_eq(found[0], 0, "the quarantined row is served");
        free(found);
        free(vecs);
        s_insert_range(c, "v", 200, 10, S_DIM); /* and it takes writes */
        shoal_client_destroy(&c);
        if (run == 0)
            s_shard_kill9(&sh);
        else
            s_shard_stop(&sh);
    }
}

/* ------------------------------------------------------------------------ */
/* IVF lists through the socket                                             */
/* ------------------------------------------------------------------------ */

/* Walks list through the socket in chunks of chunk rows; returns the rows (ids into out). */
static size_t s_walk_list(shoal_client_t *c, const char *coll, uint32_t list, size_t chunk,
                          size_t dim, uint64_t *out, size_t cap)
{
    char cursor[WIRE_CURSOR_MAX + 1] = "";
    size_t total = 0;
    for (int calls = 0; calls < 10000; calls++) {
        shoal_list_chunk_t ch;
        shoal_err_t err;
        int rc = shoal_client_list_export(c, coll, list, cursor, chunk, &ch, &err);
        cr_assert_eq(rc, 0, "list_export %u: %s", list, err.msg);
        cr_assert_eq(ch.dim, dim);
        cr_assert_leq(total + ch.n, cap);
        for (size_t i = 0; i < ch.n; i++) {
            /* The vectors are the ones inserted, bit for bit. */
            float want[64];
            s_vec(ch.ids[i], dim, want);
            cr_assert_eq(memcmp(ch.vecs + i * dim, want, dim * sizeof(float)), 0,
                         "list %u id %llu: vector differs", list, (unsigned long long)ch.ids[i]);
            out[total++] = ch.ids[i];
        }
        snprintf(cursor, sizeof cursor, "%s", ch.cursor);
        int done = ch.done;
        shoal_list_chunk_fini(&ch);
        if (done)
            return total;
    }
    cr_assert_fail("list %u: the walk did not end", list);
    return 0;
}

Test(shard, list_ops_through_the_socket_and_after_kill9)
{
    s_shard_t sh;
    s_server_init(&sh, "lists");
    s_shard_start(&sh, NULL);
    shoal_client_t *c = s_client(&sh, S_TIMEOUT_MS);
    const size_t dim = 12, n = 120;
    s_create(c, "li", dim);
    uint64_t *ids = s_id_range(1, n);
    float *vecs = s_vecs(ids, n, dim);
    uint32_t *lists = malloc(n * sizeof *lists);
    for (size_t i = 0; i < n; i++)
        lists[i] = (uint32_t)(i % 3); /* lists 0, 1, 2: 40 each */
    shoal_err_t err;
    cr_assert_eq(shoal_client_insert_lists(c, "li", ids, vecs, lists, 90, dim, NULL, &err), 0, "%s",
                 err.msg);
    /* The last 30 rows as an old client sends them: no lists frame. */
    cr_assert_eq(shoal_client_insert(c, "li", ids + 90, vecs + 90 * dim, 30, dim, NULL, &err), 0,
                 "%s", err.msg);

    for (int round = 0; round < 2; round++) {
        uint32_t *l = NULL;
        uint64_t *counts = NULL;
        size_t nl = 0;
        cr_assert_eq(shoal_client_list_counts(c, "li", &l, &counts, &nl, &err), 0, "%s", err.msg);
        cr_assert_eq(nl, 4, "lists 0, 1, 2 and none");
        const uint32_t want_l[4] = {0, 1, 2, WIRE_LIST_NONE};
        const uint64_t want_c[4] = {30, 30, 30, 30};
        for (size_t i = 0; i < 4; i++) {
            cr_assert_eq(l[i], want_l[i]);
            cr_assert_eq(counts[i], want_c[i], "list %u: %llu", l[i],
                         (unsigned long long)counts[i]);
        }
        free(l);
        free(counts);
        uint64_t got[120];
        size_t m = s_walk_list(c, "li", 1, 7, dim, got, n);
        cr_assert_eq(m, 30);
        for (size_t i = 0; i < m; i++)
            cr_assert_eq(got[i], 2 + 3 * i, "list 1 holds ids 2, 5, 8, ...");
        cr_assert_eq(s_walk_list(c, "li", WIRE_LIST_NONE, 1000, dim, got, n), 30);
        if (round == 0) {
            shoal_client_destroy(&c);
            s_shard_kill9(&sh);
            s_shard_start(&sh, NULL);
            c = s_client(&sh, S_TIMEOUT_MS);
        }
    }

    /* Errors: a bad cursor, a missing collection, a limit the codec refuses. */
    shoal_list_chunk_t ch;
    cr_assert_eq(shoal_client_list_export(c, "li", 1, "garbage", 5, &ch, &err), SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "cursor"), "%s", err.msg);
    cr_assert_eq(shoal_client_list_export(c, "nope", 1, "", 5, &ch, &err), SHOAL_ENOTFOUND);
    cr_assert_eq(shoal_client_list_export(c, "li", 1, "", 0, &ch, &err), SHOAL_EINVAL);

    /* list_drop 0: its rows are gone from searches and gets; the others stay. */
    size_t removed = 0;
    cr_assert_eq(shoal_client_list_drop(c, "li", 0, &removed, NULL, &err), 0, "%s", err.msg);
    cr_assert_eq(removed, 30);
    uint64_t gone[30];
    for (size_t i = 0; i < 30; i++)
        gone[i] = 1 + 3 * i;
    s_assert_absent(c, "li", gone, 30, dim);
    cr_assert_eq(s_stat(c, "collections.li.count"), 90);
    uint64_t kept[2] = {2, 120};
    s_assert_findable(c, "li", kept, 2, dim);
    shoal_client_destroy(&c);
    s_shard_stop(&sh);
    free(ids);
    free(vecs);
    free(lists);
}

/*
 * Single-query searches the loop runs itself (server.h): the same answers as
 * the read lane gives, counted in stats; with --inline-ef-max 0, and for an
 * ef over it, every search goes through the lane. A batch never runs inline.
 * Both runs search one graph: the second start loads the first's checkpoint
 * (two builds of the same rows may differ, as batch inserts link in parallel).
 */
static void s_search_one_by_one(shoal_client_t *c, const char *coll, size_t nq, size_t dim,
                                size_t ef, uint64_t *ids, float *dists)
{
    uint64_t *qids = s_id_range(900000, nq);
    float *q = s_vecs(qids, nq, dim);
    shoal_search_opts_t opts = {.k = 10, .ef = ef};
    shoal_err_t err;
    for (size_t i = 0; i < nq; i++) {
        uint64_t *one_ids;
        float *one_d;
        cr_assert_eq(
            shoal_client_search(c, coll, q + i * dim, 1, dim, &opts, &one_ids, &one_d, NULL, &err),
            0, "%s", err.msg);
        memcpy(ids + i * 10, one_ids, 10 * sizeof *ids);
        memcpy(dists + i * 10, one_d, 10 * sizeof *dists);
        free(one_ids);
        free(one_d);
    }
    free(q);
    free(qids);
}

Test(shard, lone_single_queries_run_on_the_loop_with_the_lane_answers)
{
    const size_t dim = 32, n = 3000, nq = 30;
    uint64_t ids[2][30 * 10];
    float d[2][30 * 10];
    s_shard_t sh;
    s_server_init(&sh, "inline");
    for (int off = 0; off < 2; off++) {
        const char *extra[] = {"--inline-ef-max", "0", NULL};
        s_shard_start(&sh, off ? extra : NULL);
        shoal_client_t *c = s_client(&sh, S_TIMEOUT_MS);
        if (!off) {
            s_create(c, "emb", dim);
            s_insert_range(c, "emb", 1, n, dim);
        } else {
            cr_assert_eq(s_stat(c, "collections.emb.loaded_from_checkpoint"), 1);
            cr_assert_eq(s_stat(c, "collections.emb.replayed"), 0);
        }
        s_search_one_by_one(c, "emb", nq, dim, 64, ids[off], d[off]);
        cr_assert_eq(s_stat(c, "searches_inline"), off ? 0 : nq);
        /* Over the bound (default 128) and a batch: the lane. */
        uint64_t more_ids[30 * 10];
        float more_d[30 * 10];
        s_search_one_by_one(c, "emb", 3, dim, 200, more_ids, more_d);
        uint64_t *bids;
        float *bd;
        s_search_fixed(c, "emb", 5, dim, &bids, &bd);
        free(bids);
        free(bd);
        cr_assert_eq(s_stat(c, "searches_inline"), off ? 0 : nq);
        cr_assert_eq(s_stat(c, "requests.search"), nq + 3 + 1);
        shoal_client_destroy(&c);
        s_shard_stop(&sh);
    }
    cr_assert(memcmp(ids[0], ids[1], sizeof ids[0]) == 0, "inline answers differ from the lane's");
    cr_assert(memcmp(d[0], d[1], sizeof d[0]) == 0, "inline distances differ from the lane's");
}
