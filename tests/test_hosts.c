/*
 * test_hosts.c - the "many hosts on one machine" harness (tests/test_hosts.h,
 * issue 10) with real traffic and real processes:
 *
 *   - a partition cuts a host off both ways and only that host, and heals;
 *   - a cluster of 4 shard hosts and a coordinator host, driven from the
 *     controller namespace: complete answers; a partitioned host, then a
 *     frozen shard, give partial answers naming exactly that shard and
 *     complete ones after healing / thawing; a shard killed with SIGKILL and
 *     restarted on its host still has its data; nothing is left afterwards;
 *   - namespaces of a harness whose process was SIGKILLed (no cleanup can
 *     run) are removed by the next harness's sweep, and a live harness's are
 *     not.
 *
 * Needs root and iproute2; without them every test is skipped, saying why.
 * Data: siftsmall's base ($SHOAL_DATASETS) when present, else generated rows;
 * queries are base rows, so a complete exact answer finds each query's own
 * row at distance 0. Every wait is bounded polling; nothing asserts a timing
 * (a probe that must NOT connect is given a second, which a partition never
 * lets it use).
 */
#define _GNU_SOURCE /* setns, for tests/test_hosts.h; before every #include */

#include "client/shoal_client.h"
#include "common/log.h"
#include "common/vecfile.h"
#include "tests/test_hosts.h"
#include "tests/test_support.h"
#include "tests/test_hosts_node.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <czmq.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <sys/socket.h>

#define S_SHARDS          4
#define S_COORD_HOST      S_SHARDS /* hosts 0..3 run shards, host 4 the coordinator */
#define S_SHARD_PORT      7701     /* every host has its own ports: one number for all */
#define S_COORD_PORT      7700
#define S_NLIST           16
#define S_QSTRIDE         50   /* every 50th base row is a query */
#define S_STOP_WAIT_S     60.0 /* a process must exit within this after SIGTERM */
#define S_POLL_WAIT_S     60.0 /* a healed / thawed / restarted shard answers within this */
#define S_POLL_MS         100
#define S_TIMEOUT_MS      60000 /* client calls: loads on two busy cores */
#define S_POLL_TIMEOUT_MS 5000  /* client calls while a shard may be away */
#define S_SHORT_DEADLINE  1000  /* search deadline while a shard is away */
#define S_PROBE_OK_MS     10000 /* a connect that must succeed gets this long */
#define S_PROBE_CUT_MS    1000  /* one that must not */

/* The harness of the running test (Criterion runs each test in its own process). */
static hosts_t *s_hosts;

static void s_setup(void)
{
    shoal_log_init_from_env();
    /* keep the harness's SIGINT/SIGTERM cleanup: czmq would replace it at first use */
    zsys_handler_set(NULL);
    s_process_suite_init("test_hosts");
}

static void s_teardown(void)
{
    hosts_down(&s_hosts);
    s_process_suite_fini();
}

TestSuite(hosts, .init = s_setup, .fini = s_teardown, .timeout = 300);

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */
/* ------------------------------------------------------------------------ */

/* How many namespaces in /var/run/netns (what `ip netns list` shows) start with prefix. */
static size_t s_netns_count(const char *prefix)
{
    DIR *dir = opendir(HOSTS_NETNS_DIR);
    if (!dir)
        return 0;
    size_t count = 0;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL)
        count += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    closedir(dir);
    return count;
}

/*
 * A TCP connect to addr:port from the calling thread's namespace, given
 * wait_ms to complete: 1 when it did, 0 when not.
 */
static int s_connect(const char *addr, int port, int wait_ms)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, addr, &a.sin_addr);
    int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    if (!ok && errno == EINPROGRESS) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int soerr = -1;
        socklen_t len = sizeof soerr;
        if (poll(&p, 1, wait_ms) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) == 0)
            ok = soerr == 0;
    }
    close(fd);
    return ok;
}

/* s_connect from host i: a forked child enters the host and tries. */
static int s_connect_from(hosts_t *h, size_t i, const char *addr, int port, int wait_ms)
{
    pid_t pid = fork();
    cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
    if (pid == 0)
        _exit(hosts_enter(h, i, NULL) == 0 && s_connect(addr, port, wait_ms) ? 0 : 1);
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* A listening socket on addr:port in the calling thread's namespace. */
static int s_listen_on(const char *addr, int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert_geq(fd, 0, "socket: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    cr_assert_eq(inet_pton(AF_INET, addr, &a.sin_addr), 1, "address %s", addr);
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0, "bind %s:%d: %s", addr, port,
                 strerror(errno));
    cr_assert_eq(listen(fd, 64), 0, "listen: %s", strerror(errno));
    return fd;
}

/* No interface of the calling thread's namespace has an address in HOSTS_SUBNET. */
static void s_assert_no_subnet_here(void)
{
    struct ifaddrs *all = NULL;
    cr_assert_eq(getifaddrs(&all), 0, "getifaddrs: %s", strerror(errno));
    for (struct ifaddrs *a = all; a; a = a->ifa_next) {
        if (!a->ifa_addr || a->ifa_addr->sa_family != AF_INET)
            continue;
        char text[INET_ADDRSTRLEN] = "";
        inet_ntop(AF_INET, &((struct sockaddr_in *)a->ifa_addr)->sin_addr, text, sizeof text);
        cr_assert_neq(strncmp(text, HOSTS_SUBNET, strlen(HOSTS_SUBNET)), 0,
                      "%s has %s outside the harness's namespaces", a->ifa_name, text);
    }
    freeifaddrs(all);
}

/* ------------------------------------------------------------------------ */
/* 1. Partitions at the network level                                       */
/* ------------------------------------------------------------------------ */

Test(hosts, partition_cuts_one_host_off_both_ways_and_heals)
{
    s_hosts = s_node_hosts_up(3);
    hosts_t *h = s_hosts;
    char prefix[HOSTS_NAME_MAX];
    snprintf(prefix, sizeof prefix, "%s", hosts_prefix(h));
    cr_assert_eq(s_netns_count(prefix), 3 + 2, "3 hosts, the hub and the controller");

    /* the namespace the test started in got none of the harness's addresses */
    s_assert_no_subnet_here();

    shoal_err_t err;
    cr_assert_eq(hosts_enter_controller(h, &err), 0, "%s", err.msg);
    int ctl_fd = s_listen_on(hosts_controller_addr(h), 7000);

    /* a listener on host 0, in a child that stays there until killed */
    int ready[2];
    cr_assert_eq(pipe(ready), 0);
    pid_t listener = fork();
    cr_assert_geq(listener, 0);
    if (listener == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (hosts_enter(h, 0, NULL) != 0)
            _exit(1);
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(7001)};
        inet_pton(AF_INET, hosts_addr(h, 0), &a.sin_addr);
        if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 64) != 0)
            _exit(1);
        ssize_t unused = write(ready[1], "r", 1);
        (void)unused;
        while (1)
            pause();
    }
    s_child_add(listener); /* killed by the suite's fini whatever happens */
    close(ready[1]);
    char byte = 0;
    cr_assert_eq(read(ready[0], &byte, 1), 1, "the listener on host 0 did not start");
    close(ready[0]);
    const char *a0 = hosts_addr(h, 0), *ctl = hosts_controller_addr(h);

    /* connected: controller <-> host 0, host 1 -> host 0 */
    cr_assert(s_connect(a0, 7001, S_PROBE_OK_MS), "controller -> host 0 before the partition");
    cr_assert(s_connect_from(h, 0, ctl, 7000, S_PROBE_OK_MS), "host 0 -> controller");
    cr_assert(s_connect_from(h, 1, a0, 7001, S_PROBE_OK_MS), "host 1 -> host 0");

    cr_assert_eq(hosts_partition(h, 0, &err), 0, "%s", err.msg);
    cr_assert_not(s_connect(a0, 7001, S_PROBE_CUT_MS), "controller -> host 0 while cut off");
    cr_assert_not(s_connect_from(h, 0, ctl, 7000, S_PROBE_CUT_MS), "host 0 -> controller, cut");
    cr_assert_not(s_connect_from(h, 1, a0, 7001, S_PROBE_CUT_MS), "host 1 -> host 0, cut");
    /* the others still reach each other */
    cr_assert(s_connect_from(h, 1, ctl, 7000, S_PROBE_OK_MS), "host 1 -> controller");
    cr_assert(s_connect_from(h, 2, ctl, 7000, S_PROBE_OK_MS), "host 2 -> controller");

    cr_assert_eq(hosts_heal(h, 0, &err), 0, "%s", err.msg);
    cr_assert(s_connect(a0, 7001, S_PROBE_OK_MS), "controller -> host 0 after healing");
    cr_assert(s_connect_from(h, 0, ctl, 7000, S_PROBE_OK_MS), "host 0 -> controller, healed");
    cr_assert(s_connect_from(h, 1, a0, 7001, S_PROBE_OK_MS), "host 1 -> host 0, healed");

    close(ctl_fd);
    s_children_kill();
    hosts_down(&s_hosts);
    cr_assert_eq(s_netns_count(prefix), 0, "namespaces left after hosts_down");
}

/* ------------------------------------------------------------------------ */
/* 2. A cluster on five hosts                                               */
/* ------------------------------------------------------------------------ */

/* The rows stored: siftsmall's base, else generated ones. */
typedef struct {
    float *base; /* n x dim */
    size_t n, dim;
} s_data_t;

static void s_data_load(s_data_t *d)
{
    char dir[S_SUPPORT_PATH_MAX], path[S_SUPPORT_PATH_MAX];
    s_join(dir, s_datasets(), "siftsmall");
    s_join(path, dir, "siftsmall_base.fvecs");
    if (access(path, R_OK) == 0) {
        shoal_err_t err;
        d->base = vecfile_load_f32(path, &d->n, &d->dim, &err);
        cr_assert_not_null(d->base, "%s", err.msg);
        return;
    }
    cr_log_info("%s absent: generated rows instead", path);
    d->n = 4000;
    d->dim = 32;
    d->base = malloc(d->n * d->dim * sizeof *d->base);
    cr_assert_not_null(d->base);
    uint64_t x = 0x9e3779b97f4a7c15ull; /* a fixed LCG: the same rows every run */
    for (size_t i = 0; i < d->n * d->dim; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        d->base[i] = (float)(x >> 40) / (float)(1u << 24) * 100.0f;
    }
}

static void s_coord_start(s_node_t *n, const char *shards)
{
    char bin[S_SUPPORT_PATH_MAX];
    s_bin(bin, "shoal-coordinator");
    char *argv[] = {bin,
                    "--listen",
                    n->listen,
                    "--data-dir",
                    n->files.data_dir,
                    "--shards",
                    (char *)shards,
                    "--ready-file",
                    n->files.ready,
                    "--ping-interval-ms",
                    "100",
                    "--down-after-ms",
                    "1000",
                    "--deadline-ms",
                    "5000",
                    "--threads",
                    "1",
                    NULL};
    s_node_start(s_hosts, n, argv);
}

/* What one search of every query row said. */
typedef struct {
    size_t self; /* queries that found their own row at distance 0 */
    size_t nq;   /* queries asked */
    int partial;
    char missing[WIRE_MISSING_MAX];
} s_answer_t;

/*
 * Exact search over every list of the query rows; 0 with *out, or the
 * client's error code (err filled).
 */
static int s_search(shoal_client_t *c, const s_data_t *d, size_t deadline_ms, s_answer_t *out,
                    shoal_err_t *err)
{
    size_t nq = d->n / S_QSTRIDE;
    float *q = malloc(nq * d->dim * sizeof *q);
    cr_assert_not_null(q);
    for (size_t i = 0; i < nq; i++)
        memcpy(q + i * d->dim, d->base + i * S_QSTRIDE * d->dim, d->dim * sizeof *q);
    shoal_search_opts_t opts = {
        .k = 1, .mode = WIRE_MODE_EXACT, .nprobe = S_NLIST, .deadline_ms = deadline_ms};
    uint64_t *ids = NULL;
    float *dists = NULL;
    shoal_search_info_t info;
    memset(out, 0, sizeof *out);
    int rc = shoal_client_search_ex(c, "rows", q, nq, d->dim, &opts, &ids, &dists, &info, err);
    free(q);
    if (rc != 0)
        return rc;
    out->nq = nq;
    out->partial = info.partial;
    snprintf(out->missing, sizeof out->missing, "%s", info.missing);
    for (size_t i = 0; i < nq; i++)
        out->self += dists[i] == 0.0f;
    free(ids);
    free(dists);
    return 0;
}

/* Polls (bounded) until an answer is complete, then checks every query found itself. */
static void s_wait_complete(shoal_client_t *c, const s_data_t *d, const char *after)
{
    shoal_client_set_timeout(c, S_POLL_TIMEOUT_MS);
    double end = s_now() + S_POLL_WAIT_S;
    s_answer_t a;
    shoal_err_t err;
    while (1) {
        int rc = s_search(c, d, S_SHORT_DEADLINE, &a, &err);
        if (rc == 0 && !a.partial)
            break;
        cr_assert_lt(s_now(), end, "%s: no complete answer after %.0f s (last: %s)", after,
                     S_POLL_WAIT_S, rc ? err.msg : a.missing);
        s_sleep_ms(S_POLL_MS);
    }
    shoal_client_set_timeout(c, S_TIMEOUT_MS);
    cr_assert_eq(a.self, a.nq, "%s: %zu of %zu queries found their own row", after, a.self, a.nq);
}

/*
 * A search while shard node is away: answered, partial, naming exactly that
 * shard, with the other shards' rows (some but not all queries find themselves).
 */
static void s_assert_partial(shoal_client_t *c, const s_data_t *d, const s_node_t *away,
                             const char *why)
{
    s_answer_t a;
    shoal_err_t err;
    int rc = s_search(c, d, S_SHORT_DEADLINE, &a, &err);
    cr_assert_eq(rc, 0, "%s: search: %s", why, err.msg);
    cr_assert_eq(a.partial, 1, "%s: the answer is complete", why);
    cr_assert_str_eq(a.missing, away->listen, "%s: missing \"%s\", expected \"%s\"", why, a.missing,
                     away->listen);
    cr_assert(a.self > 0 && a.self < a.nq, "%s: %zu of %zu queries found their own row", why,
              a.self, a.nq);
    cr_log_info("%s: partial, %zu of %zu queries found their own row", why, a.self, a.nq);
}

/* Creates "rows", trains it on every row and inserts them (ids = row numbers). */
static void s_load(shoal_client_t *c, const s_data_t *d)
{
    shoal_err_t err;
    shoal_create_opts_t copts = {.nlist = S_NLIST};
    double end = s_now() + S_POLL_WAIT_S;
    int rc;
    /* refused (unavailable) until the coordinator has heard from every shard */
    shoal_client_set_timeout(c, S_POLL_TIMEOUT_MS);
    while ((rc = shoal_client_create_ivf(c, "rows", d->dim, SHOAL_METRIC_L2, &copts, &err)) != 0) {
        cr_assert(rc == SHOAL_EUNAVAIL || rc == SHOAL_ETIMEOUT, "create: %s", err.msg);
        cr_assert_lt(s_now(), end, "the coordinator cannot reach every shard: %s", err.msg);
        s_sleep_ms(S_POLL_MS);
    }
    shoal_client_set_timeout(c, S_TIMEOUT_MS);
    rc = shoal_client_train(c, "rows", d->base, d->n, d->dim, NULL, NULL, &err);
    cr_assert_eq(rc, 0, "train: %s", err.msg);
    uint64_t *ids = malloc(d->n * sizeof *ids);
    cr_assert_not_null(ids);
    for (size_t i = 0; i < d->n; i++)
        ids[i] = i;
    for (size_t start = 0; start < d->n; start += 1000) {
        size_t m = d->n - start < 1000 ? d->n - start : 1000;
        rc = shoal_client_insert(c, "rows", ids + start, d->base + start * d->dim, m, d->dim, NULL,
                                 &err);
        cr_assert_eq(rc, 0, "insert rows %zu..: %s", start, err.msg);
    }
    free(ids);
}

/* Every row is stored, with its vector, as the coordinator sees it. */
static void s_assert_all_rows(shoal_client_t *c, const s_data_t *d)
{
    uint64_t *ids = malloc(d->n * sizeof *ids);
    cr_assert_not_null(ids);
    for (size_t i = 0; i < d->n; i++)
        ids[i] = i;
    uint8_t *found = NULL;
    float *vecs = NULL;
    size_t dim = 0;
    shoal_err_t err;
    int rc = shoal_client_get(c, "rows", ids, d->n, &found, &vecs, &dim, &err);
    cr_assert_eq(rc, 0, "get: %s", err.msg);
    cr_assert_eq(dim, d->dim);
    for (size_t i = 0; i < d->n; i++) {
        cr_assert(found[i], "row %zu is gone", i);
        cr_assert(memcmp(vecs + i * dim, d->base + i * dim, dim * sizeof *vecs) == 0,
                  "row %zu changed", i);
    }
    free(ids);
    free(found);
    free(vecs);
}

Test(hosts, cluster_on_five_hosts_survives_partition_freeze_and_kill)
{
    s_hosts = s_node_hosts_up(S_SHARDS + 1);
    char prefix[HOSTS_NAME_MAX];
    snprintf(prefix, sizeof prefix, "%s", hosts_prefix(s_hosts));
    shoal_err_t err;
    /* first, before any ZeroMQ context exists (test_hosts.h says why) */
    cr_assert_eq(hosts_enter_controller(s_hosts, &err), 0, "%s", err.msg);

    s_node_t shards[S_SHARDS], coord;
    char shard_list[S_SHARDS * 64] = "";
    for (size_t i = 0; i < S_SHARDS; i++) {
        char name[16];
        snprintf(name, sizeof name, "shard%zu", i);
        s_node_init(s_hosts, &shards[i], name, i, S_SHARD_PORT);
        s_node_shard_start(s_hosts, &shards[i]);
        size_t len = strlen(shard_list);
        snprintf(shard_list + len, sizeof shard_list - len, "%s%s", i ? "," : "", shards[i].listen);
    }
    s_node_init(s_hosts, &coord, "coord", S_COORD_HOST, S_COORD_PORT);
    s_coord_start(&coord, shard_list);

    s_data_t d;
    s_data_load(&d);
    shoal_client_t *c = shoal_client_new(coord.listen, S_TIMEOUT_MS, &err);
    cr_assert_not_null(c, "%s", err.msg);
    s_load(c, &d);
    s_wait_complete(c, &d, "loaded");

    /* a partitioned host: its shard is missing from the answers, until healed */
    cr_assert_eq(hosts_partition(s_hosts, 1, &err), 0, "%s", err.msg);
    s_assert_partial(c, &d, &shards[1], "host 1 partitioned");
    s_assert_partial(c, &d, &shards[1], "host 1 still partitioned");
    cr_assert_eq(hosts_heal(s_hosts, 1, &err), 0, "%s", err.msg);
    s_wait_complete(c, &d, "host 1 healed");

    /* a frozen shard: the same, until thawed */
    cr_assert_eq(hosts_freeze(s_hosts, shards[2].pid), 0);
    s_assert_partial(c, &d, &shards[2], "shard 2 frozen");
    cr_assert_eq(hosts_thaw(s_hosts, shards[2].pid), 0);
    s_wait_complete(c, &d, "shard 2 thawed");

    /* a shard killed and restarted on its host: its rows are still there */
    int status = hosts_kill9(s_hosts, shards[3].pid);
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "status 0x%x", status);
    shards[3].pid = 0;
    s_assert_partial(c, &d, &shards[3], "shard 3 killed");
    s_node_shard_start(s_hosts, &shards[3]);
    s_wait_complete(c, &d, "shard 3 restarted");
    s_assert_all_rows(c, &d);

    shoal_client_destroy(&c);
    free(d.base);
    /* the processes' logs must be clean of sanitizer reports */
    for (size_t i = 0; i < S_SHARDS; i++) {
        cr_assert_eq(hosts_stop(s_hosts, shards[i].pid, S_STOP_WAIT_S, NULL), 0,
                     "shard %zu did not exit 0 on SIGTERM", i);
        char *log = s_slurp(shards[i].files.log);
        cr_assert(!strstr(log, "Sanitizer") && !strstr(log, "runtime error:"), "%s", log);
        free(log);
    }
    cr_assert_eq(hosts_stop(s_hosts, coord.pid, S_STOP_WAIT_S, NULL), 0,
                 "the coordinator did not exit 0 on SIGTERM");
    hosts_down(&s_hosts);
    cr_assert_eq(s_netns_count(prefix), 0, "namespaces left after hosts_down");
}

/* Whether pid runs: it exists and is not a zombie (one nobody has reaped yet counts as gone). */
static int s_alive(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
    char *stat = s_slurp(path);
    const char *paren = strrchr(stat, ')');
    int alive = paren && paren[1] == ' ' && paren[2] != 'Z' && paren[2] != 'X';
    free(stat);
    return alive;
}

/* ------------------------------------------------------------------------ */
/* 3. The sweep                                                             */
/* ------------------------------------------------------------------------ */

Test(hosts, sweep_removes_what_a_killed_process_left_and_nothing_alive)
{
    /* our own harness, alive throughout: the sweep must leave it alone */
    s_hosts = s_node_hosts_up(1);
    char mine[HOSTS_NAME_MAX];
    snprintf(mine, sizeof mine, "%s", hosts_prefix(s_hosts));

    /* a process that sets up 2 hosts, starts a sleeper on one, reports, and is SIGKILLed */
    int report[2];
    cr_assert_eq(pipe(report), 0);
    pid_t victim = fork();
    cr_assert_geq(victim, 0);
    if (victim == 0) {
        close(report[0]);
        char msg[SHOAL_ERR_MSG_MAX + 8] = "";
        shoal_err_t err;
        hosts_t *h = hosts_up(2, &err);
        pid_t sleeper = -1;
        if (h) {
            char *argv[] = {"/bin/sleep", "600", NULL};
            sleeper = hosts_spawn(h, 0, argv, "/dev/null", &err);
        }
        if (h && sleeper > 0)
            snprintf(msg, sizeof msg, "%ld %s", (long)sleeper, hosts_prefix(h));
        else
            snprintf(msg, sizeof msg, "! %s", err.msg);
        ssize_t unused = write(report[1], msg, strlen(msg) + 1);
        (void)unused;
        while (1)
            pause();
    }
    s_child_add(victim);
    close(report[1]);
    char msg[SHOAL_ERR_MSG_MAX + 8] = "";
    ssize_t got = read(report[0], msg, sizeof msg - 1);
    close(report[0]);
    cr_assert_gt(got, 0, "the victim reported nothing");
    msg[got] = '\0';
    cr_assert_neq(msg[0], '!', "the victim could not set up: %s", msg + 2);
    long sleeper = 0;
    char theirs[HOSTS_NAME_MAX] = "";
    cr_assert_eq(sscanf(msg, "%ld %63s", &sleeper, theirs), 2, "report \"%s\"", msg);
    cr_assert_eq(s_netns_count(theirs), 2 + 2, "the victim's hub, controller and 2 hosts");

    /* SIGKILL: no handler runs, the namespaces stay behind... */
    kill(victim, SIGKILL);
    cr_assert_eq(waitpid(victim, NULL, 0), victim);
    s_child_forget(victim);
    /* ...but what it spawned died with it (PR_SET_PDEATHSIG) */
    double end = s_now() + S_POLL_WAIT_S;
    while (s_alive((pid_t)sleeper)) {
        cr_assert_lt(s_now(), end, "the victim's sleeper %ld outlived it", sleeper);
        s_sleep_ms(S_POLL_MS);
    }

    /* the sweep removes them (a concurrent harness's sweep may have got there first) */
    hosts_sweep();
    cr_assert_eq(s_netns_count(theirs), 0, "the killed process's namespaces survived the sweep");
    cr_assert_eq(s_netns_count(mine), 1 + 2, "the sweep removed a live harness's namespaces");

    hosts_down(&s_hosts);
    cr_assert_eq(s_netns_count(mine), 0, "namespaces left after hosts_down");
}
