/*
 * test_hosts_node.h - shoal's processes on the hosts of tests/test_hosts.h,
 * for Criterion suites (test_hosts.c, test_replication.c): a node (a shard
 * or the coordinator: its host, files and endpoint), started and waited for
 * through its ready file, and hosts_up that skips the test when the machine
 * cannot make namespaces. tests/test_hosts.h itself asserts nothing (the
 * benchmarks use it too); the asserting helpers live here.
 *
 * Include after tests/test_hosts.h and tests/test_support.h.
 */
#ifndef SHOAL_TESTS_TEST_HOSTS_NODE_H
#define SHOAL_TESTS_TEST_HOSTS_NODE_H

#include <criterion/criterion.h>

#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* A process must be ready within this. */
#define S_NODE_START_WAIT_S 60.0

/* A shard or the coordinator: its host, files and endpoint. */
typedef struct {
    size_t host;      /* which host runs it */
    s_server_t files; /* data dir, ready file, log (tests/test_support.h) */
    char listen[64];  /* "tcp://<host address>:<port>", the same on every restart */
    pid_t pid;        /* running, or 0 */
} s_node_t;

/* hosts_up, skipping the test when this machine cannot make namespaces. */
static inline hosts_t *s_node_hosts_up(size_t n)
{
    shoal_err_t err;
    hosts_t *h = hosts_up(n, &err);
    if (!h && err.code == SHOAL_EUNSUPPORTED)
        cr_skip_test("many-hosts tests skipped: %s", err.msg);
    cr_assert_not_null(h, "%s", err.msg);
    return h;
}

/* The environment variable that lets the many-host suites run (make test-cluster-hosts). */
#define S_NODE_GATE_ENV "SHOAL_TEST_CLUSTER_HOSTS"

/*
 * s_node_hosts_up(n), unless the suite is not asked for (S_NODE_GATE_ENV not
 * "1"): then the test is skipped, saying what it is (`what`, e.g. "minutes of
 * many-host faults").
 */
static inline hosts_t *s_node_hosts_up_gated(size_t n, const char *what)
{
    const char *gate = getenv(S_NODE_GATE_ENV);
    if (!gate || strcmp(gate, "1") != 0)
        cr_skip_test("%s: run by make test-cluster-hosts (%s=1)", what, S_NODE_GATE_ENV);
    return s_node_hosts_up(n);
}

/* SIGTERM: n must exit 0 within wait_s with a log free of sanitizer reports. */
static inline void s_node_stop(hosts_t *h, s_node_t *n, double wait_s)
{
    int timed_out = 0;
    int status = hosts_stop(h, n->pid, wait_s, &timed_out);
    n->pid = 0;
    cr_assert(!timed_out && WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "%s did not exit 0 on SIGTERM (status 0x%x)", n->listen, status);
    char *log = s_slurp(n->files.log);
    cr_assert(!strstr(log, "Sanitizer") && !strstr(log, "runtime error:"), "%s", log);
    free(log);
}

/* n named name, to run on host `host` of h listening on port. */
static inline void s_node_init(hosts_t *h, s_node_t *n, const char *name, size_t host, int port)
{
    memset(n, 0, sizeof *n);
    n->host = host;
    s_server_init(&n->files, name);
    snprintf(n->listen, sizeof n->listen, "tcp://%s:%d", hosts_addr(h, host), port);
}

/* Starts argv on n's host and waits (bounded) for its ready file naming n's endpoint. */
static inline void s_node_start(hosts_t *h, s_node_t *n, char *const argv[])
{
    shoal_err_t err;
    unlink(n->files.ready);
    n->pid = hosts_spawn(h, n->host, argv, n->files.log, &err);
    cr_assert_gt(n->pid, 0, "%s", err.msg);
    double end = s_now() + S_NODE_START_WAIT_S;
    while (access(n->files.ready, R_OK) != 0) {
        int status = 0;
        if (hosts_wait(h, n->pid, 0, &status) == 1) {
            n->pid = 0;
            char *log = s_slurp(n->files.log);
            cr_assert_fail("%s exited before it was ready (status 0x%x):\n%s", argv[0], status,
                           log);
        }
        cr_assert_lt(s_now(), end, "%s not ready after %.0f s", argv[0], S_NODE_START_WAIT_S);
        s_sleep_ms(10);
    }
    char *text = s_slurp(n->files.ready);
    text[strcspn(text, "\r\n")] = '\0';
    cr_assert_str_eq(text, n->listen, "%s bound another endpoint", argv[0]);
    free(text);
}

/* Starts a shard as node n (one search thread: the hosts share this machine's cores). */
static inline void s_node_shard_start(hosts_t *h, s_node_t *n)
{
    char bin[S_SUPPORT_PATH_MAX];
    s_bin(bin, "shoal-shard");
    char *argv[] = {bin,
                    "--listen",
                    n->listen,
                    "--data-dir",
                    n->files.data_dir,
                    "--ready-file",
                    n->files.ready,
                    "--threads",
                    "1",
                    NULL};
    s_node_start(h, n, argv);
}

#endif
