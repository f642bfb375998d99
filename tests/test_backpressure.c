/*
 * test_backpressure.c - a client that sends requests and never reads the
 * replies must not grow a server without bound (issue 9, bug 2).
 *
 * A DEALER with a receive high-water mark of 1 sends many `get` requests whose
 * replies are ~16 MB each, to a real bin/shoal-shard and to a real
 * bin/shoal-coordinator started with --max-pending-reply-bytes 64 MiB. The
 * server's peak resident memory (VmHWM, reset once the server is warm) must
 * stay within the budget plus a fixed margin for the replies being built;
 * the server must still answer another client (a ping and a full-size get);
 * its stats must count the refused replies (replies_dropped) and, once the
 * flooding peer disconnects, report pending_reply_bytes back at 0, with the
 * resident memory back near where it was before the flood. A second flood
 * read late gets, in order, the replies that fitted and then SHOAL_ELIMIT
 * naming --max-pending-reply-bytes for the rest.
 *
 * Without the budget the replies queue in ZeroMQ's per-peer pipe (the
 * coordinator set no high-water mark; a shard's 1,000-message mark is 16 GB
 * of such replies) and the peak grows by the whole flood (~600 MB here).
 *
 * Servers listen on ephemeral ports (no restart here, so none is needed);
 * children die with the test (tests/test_support.h); every wait is bounded
 * polling and nothing asserts a timing.
 */
#include "client/shoal_client.h"
#include "net/wire.h"
#include "tests/test_support.h"

#include <criterion/criterion.h>
#include <czmq.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_START_WAIT_S 60.0  /* a server (ASan build) must be ready within this */
#define S_STOP_WAIT_S  60.0  /* and stop within this after SIGTERM */
#define S_WAIT_S       120.0 /* bounded waits for a state seen through stats */
#define S_TIMEOUT_MS   30000 /* client calls */
#define S_POLL_MS      50

#define S_BUDGET      "67108864" /* --max-pending-reply-bytes: 64 MiB */
#define S_BUDGET_MIB  64.0
#define S_DIM         4096   /* a get of S_GET_IDS ids replies S_GET_IDS x (1 + 4 dim) bytes */
#define S_GET_IDS     1000   /* ~16.4 MB per reply */
#define S_FLOOD       36     /* requests the flooding peer sends (~590 MB of replies) */
/*
 * Peak memory allowed over the warm baseline besides the budget: the reply a
 * read thread is building (the vectors, the encoded frames, the message:
 * about three copies of 16 MB) and the allocator's slack.
 */
#define S_MARGIN_MIB 96.0
/* Resident memory allowed over the baseline once the flooding peer left. */
#define S_AFTER_MIB 48.0

/*
 * Under AddressSanitizer freed memory sits in its quarantine (256 MB by
 * default) and RSS says nothing about what the server holds: the memory
 * checks are left to the plain build, the counters are checked in both.
 */
#if defined(__SANITIZE_ADDRESS__)
#define S_RSS_CHECKED 0
#else
#define S_RSS_CHECKED 1
#endif

static void s_setup(void)
{
    s_process_suite_init("test_backpressure");
}

TestSuite(backpressure, .init = s_setup, .fini = s_process_suite_fini, .timeout = 300);

/* ------------------------------------------------------------------------ */
/* Servers                                                                  */
/* ------------------------------------------------------------------------ */

static void s_shard_start(s_server_t *p)
{
    char bin[S_SUPPORT_PATH_MAX];
    s_bin(bin, "shoal-shard");
    char *argv[] = {bin,         "--listen",   "tcp://127.0.0.1:*",
                    "--data-dir", p->data_dir, "--ready-file",
                    p->ready,     "--threads", "1",
                    "--max-pending-reply-bytes", S_BUDGET, NULL};
    p->pid = s_server_start(argv, p->ready, p->log, S_START_WAIT_S, p->endpoint, sizeof p->endpoint);
}

static void s_coord_start(s_server_t *p, const char *shards)
{
    char bin[S_SUPPORT_PATH_MAX];
    s_bin(bin, "shoal-coordinator");
    char *argv[] = {bin,           "--listen",    "tcp://127.0.0.1:*",
                    "--data-dir",  p->data_dir,   "--ready-file",
                    p->ready,      "--shards",    (char *)shards,
                    "--threads",   "1",           "--max-pending-reply-bytes",
                    S_BUDGET,      NULL};
    p->pid = s_server_start(argv, p->ready, p->log, S_START_WAIT_S, p->endpoint, sizeof p->endpoint);
}

/* SIGTERM: the server must exit 0 (and its log have no sanitizer report). */
static void s_stop(s_server_t *p)
{
    int status = s_server_signal(p->pid, SIGTERM, S_STOP_WAIT_S, p->log);
    p->pid = 0;
    if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        char *log = s_slurp(p->log);
        cr_assert_fail("%s did not exit 0 after SIGTERM (status 0x%x):\n%s", p->log, status, log);
    }
}

static shoal_client_t *s_client(const s_server_t *p)
{
    shoal_err_t err;
    shoal_client_t *c = shoal_client_new(p->endpoint, S_TIMEOUT_MS, &err);
    cr_assert_not_null(c, "client for %s: %s", p->endpoint, err.msg);
    return c;
}


/* ------------------------------------------------------------------------ */
/* Memory of a process                                                      */
/* ------------------------------------------------------------------------ */

/* A "Vm...:  N kB" line of /proc/pid/status, in MiB. */
static double s_vm_mib(pid_t pid, const char *key)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "cannot read %s", path);
    char line[256];
    double kb = -1;
    size_t klen = strlen(key);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, klen) && line[klen] == ':')
            kb = strtod(line + klen + 1, NULL);
    fclose(f);
    cr_assert_geq(kb, 0, "%s has no %s", path, key);
    return kb / 1024.0;
}

/* Resets the process's peak RSS to its current RSS ("5" > clear_refs, Linux >= 4.0). */
static void s_reset_peak(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/clear_refs", (int)pid);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "cannot open %s", path);
    fputs("5", f);
    fclose(f);
}

/* ------------------------------------------------------------------------ */
/* The flooding peer                                                        */
/* ------------------------------------------------------------------------ */

/* One `get` request of S_GET_IDS absent ids on coll, as a message. */
static zmsg_t *s_get_request(const char *coll, uint64_t rid)
{
    uint64_t *ids = malloc(S_GET_IDS * sizeof *ids);
    cr_assert_not_null(ids);
    for (size_t i = 0; i < S_GET_IDS; i++)
        ids[i] = 1000000 + i;
    wire_request_t req;
    wire_request_init(&req);
    req.op = WIRE_OP_GET;
    req.rid = rid;
    snprintf(req.coll, sizeof req.coll, "%s", coll);
    req.n = S_GET_IDS;
    req.ids = ids;
    wire_frames_t frames;
    memset(&frames, 0, sizeof frames);
    shoal_err_t err;
    cr_assert_eq(wire_request_encode(&req, &frames, &err), 0, "encode get: %s", err.msg);
    zmsg_t *msg = zmsg_new();
    cr_assert_not_null(msg);
    for (size_t i = 0; i < frames.count; i++)
        cr_assert_eq(zmsg_addmem(msg, frames.data[i], frames.size[i]), 0);
    wire_frames_fini(&frames);
    req.ids = NULL; /* ours, not the request's */
    wire_request_fini(&req);
    free(ids);
    return msg;
}

/* A DEALER that queues at most one reply on its side and never reads: sends S_FLOOD gets. */
static zsock_t *s_flood(const char *endpoint, const char *coll)
{
    zsock_t *dealer = zsock_new(ZMQ_DEALER);
    cr_assert_not_null(dealer);
    zsock_set_rcvhwm(dealer, 1);
    zsock_set_sndhwm(dealer, 0);
    zsock_set_linger(dealer, 0);
    cr_assert_eq(zsock_connect(dealer, "%s", endpoint), 0, "connect %s", endpoint);
    for (uint64_t r = 0; r < S_FLOOD; r++) {
        zmsg_t *msg = s_get_request(coll, 1 + r);
        cr_assert_eq(zmsg_send(&msg, dealer), 0, "send get %lu", (unsigned long)r);
    }
    return dealer;
}

/*
 * Reads the S_FLOOD replies the flooding peer has coming, in order: each is
 * either the full get or SHOAL_ELIMIT naming the budget. *refused gets how
 * many were refused.
 */
static void s_read_flood(zsock_t *dealer, size_t *refused)
{
    *refused = 0;
    zsock_set_rcvtimeo(dealer, S_TIMEOUT_MS);
    wire_limits_t limits = wire_limits_default();
    for (uint64_t r = 0; r < S_FLOOD; r++) {
        zmsg_t *msg = zmsg_recv(dealer);
        cr_assert_not_null(msg, "reply %lu of %d did not come", (unsigned long)r, S_FLOOD);
        wire_frames_t frames;
        memset(&frames, 0, sizeof frames);
        for (zframe_t *f = zmsg_first(msg); f && frames.count < WIRE_FRAMES_MAX;
             f = zmsg_next(msg)) {
            frames.data[frames.count] = zframe_data(f);
            frames.size[frames.count++] = zframe_size(f);
        }
        wire_reply_t rep;
        wire_reply_init(&rep);
        shoal_err_t err;
        cr_assert_eq(wire_reply_decode(&frames, &limits, &rep, &err), 0, "reply %lu: %s",
                     (unsigned long)r, err.msg);
        cr_assert_eq(rep.rid, 1 + r, "replies out of order");
        if (rep.code == SHOAL_ELIMIT) {
            cr_assert(strstr(rep.msg, "--max-pending-reply-bytes"), "ELIMIT says: %s", rep.msg);
            (*refused)++;
        } else {
            cr_assert_eq(rep.code, 0, "reply %lu: %s", (unsigned long)r, rep.msg);
            cr_assert_eq(rep.n, S_GET_IDS);
            cr_assert_eq(rep.dim, S_DIM);
        }
        wire_reply_fini(&rep);
        zmsg_destroy(&msg);
    }
}

/* A full-size get from a client that reads its replies. */
static void s_get_ok(shoal_client_t *c, const char *coll)
{
    uint64_t *ids = malloc(S_GET_IDS * sizeof *ids);
    cr_assert_not_null(ids);
    for (size_t i = 0; i < S_GET_IDS; i++)
        ids[i] = 1000000 + i;
    uint8_t *found = NULL;
    float *vecs = NULL;
    size_t dim = 0;
    shoal_err_t err;
    int rc = shoal_client_get(c, coll, ids, S_GET_IDS, &found, &vecs, &dim, &err);
    cr_assert_eq(rc, 0, "get: %s (%s)", err.msg, shoal_errname(rc));
    cr_assert_eq(dim, S_DIM);
    free(found);
    free(vecs);
    free(ids);
}

/* Waits until the server has answered (or refused) gets get requests since its start. */
static void s_wait_gets(shoal_client_t *c, double gets)
{
    double end = s_now() + S_WAIT_S;
    while (s_stat(c, "requests.get") < gets) {
        cr_assert_lt(s_now(), end, "the server did not get through %.0f gets", gets);
        s_sleep_ms(S_POLL_MS);
    }
}

/*
 * The whole check against the server process pid at p (the collection coll
 * of dim S_DIM exists there).
 */
static void s_check_flood(const s_server_t *p, const char *coll)
{
    shoal_client_t *c = s_client(p);
    shoal_err_t err;
    /* Warm: one full-size get read normally, then the baseline. */
    s_get_ok(c, coll);
    double gets_before = s_stat(c, "requests.get");
    cr_assert_eq(s_stat(c, "pending_reply_bytes"), 0);
    cr_assert_eq(s_stat(c, "replies_dropped"), 0);
    double base = s_vm_mib(p->pid, "VmRSS");
    s_reset_peak(p->pid);

    zsock_t *flood = s_flood(p->endpoint, coll);
    s_wait_gets(c, gets_before + S_FLOOD);
    double peak = s_vm_mib(p->pid, "VmHWM");
    cr_assert(!S_RSS_CHECKED || peak - base <= S_BUDGET_MIB + S_MARGIN_MIB,
              "peak RSS grew by %.0f MiB (from %.0f MiB), over the %.0f MiB budget + "
              "%.0f MiB",
              peak - base, base, S_BUDGET_MIB, S_MARGIN_MIB);
    cr_assert_gt(s_stat(c, "replies_dropped"), 0, "no reply was refused");
    double pending = s_stat(c, "pending_reply_bytes");
    cr_assert_gt(pending, 0, "nothing is pending for a peer that reads nothing");
    cr_assert_leq(pending, S_BUDGET_MIB * 1048576.0);

    /* The server still answers others, a full-size reply included. */
    cr_assert_eq(shoal_client_ping(c, NULL, NULL, &err), 0, "ping: %s", err.msg);
    s_get_ok(c, coll);

    /* The flooding peer leaves: its queued replies are let go. */
    zsock_destroy(&flood);
    double end = s_now() + S_WAIT_S;
    while (s_stat(c, "pending_reply_bytes") != 0) {
        cr_assert_lt(s_now(), end, "pending_reply_bytes still %.0f after the peer left",
                     s_stat(c, "pending_reply_bytes"));
        s_sleep_ms(S_POLL_MS);
    }
    double after = s_vm_mib(p->pid, "VmRSS");
    cr_log_info("RSS %.0f MiB before the flood, peak %.0f MiB, %.0f MiB after the peer left; "
                "%.0f bytes were pending, %.0f replies dropped",
                base, peak, after, pending, s_stat(c, "replies_dropped"));
    cr_assert(!S_RSS_CHECKED || after - base <= S_AFTER_MIB,
              "RSS %.0f MiB after the peer left, %.0f MiB before the flood", after, base);

    /* A peer that reads late gets every reply: those that fitted, then the refusals. */
    double dropped = s_stat(c, "replies_dropped");
    gets_before = s_stat(c, "requests.get");
    flood = s_flood(p->endpoint, coll);
    s_wait_gets(c, gets_before + S_FLOOD);
    size_t refused = 0;
    s_read_flood(flood, &refused);
    zsock_destroy(&flood);
    cr_assert_gt(refused, 0);
    cr_assert_lt(refused, S_FLOOD);
    cr_assert_eq(s_stat(c, "replies_dropped"), dropped + (double)refused);
    shoal_client_destroy(&c);
}

/* ------------------------------------------------------------------------ */
/* Tests                                                                    */
/* ------------------------------------------------------------------------ */

Test(backpressure, shard_bounds_unread_replies)
{
    s_server_t shard;
    s_server_init(&shard, "shard");
    s_shard_start(&shard);
    shoal_client_t *c = s_client(&shard);
    shoal_err_t err;
    int rc = shoal_client_create(c, "big", S_DIM, SHOAL_METRIC_L2, 0, 0, &err);
    cr_assert_eq(rc, 0, "create: %s", err.msg);
    shoal_client_destroy(&c);

    s_check_flood(&shard, "big");
    s_stop(&shard);
}

Test(backpressure, coordinator_bounds_unread_replies)
{
    s_server_t shard, coord;
    s_server_init(&shard, "shard");
    s_server_init(&coord, "coord");
    s_shard_start(&shard);
    s_coord_start(&coord, shard.endpoint);
    shoal_client_t *c = s_client(&coord);
    shoal_create_opts_t opts = {.nlist = 4};
    shoal_err_t err;
    double end = s_now() + S_WAIT_S;
    int rc;
    /* create touches every shard: refused until the coordinator sees the shard up. */
    while ((rc = shoal_client_create_ivf(c, "big", S_DIM, SHOAL_METRIC_L2, &opts, &err)) != 0) {
        cr_assert(rc == SHOAL_EUNAVAIL || rc == SHOAL_ETIMEOUT, "create: %s (%s)", err.msg,
                  shoal_errname(rc));
        cr_assert_lt(s_now(), end, "the coordinator still cannot reach the shard: %s", err.msg);
        s_sleep_ms(S_POLL_MS);
    }
    shoal_client_destroy(&c);

    s_check_flood(&coord, "big");
    s_stop(&coord);
    s_stop(&shard);
}
