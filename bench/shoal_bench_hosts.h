/*
 * shoal_bench_hosts.h - what the benches that run a cluster on the test
 * harness's hosts (tests/test_hosts.h: network namespaces on this machine)
 * share: a node's files and endpoint, starting one and waiting for its ready
 * file, and a create retried until the coordinator has heard from every
 * shard. Used by `shoal-bench replication` and `shoal-bench rebalance`.
 *
 * Thread-safety: the main thread's, as the harness is.
 */
#ifndef SHOAL_BENCH_HOSTS_H
#define SHOAL_BENCH_HOSTS_H

#include "bench/shoal_bench.h"
#include "client/shoal_client.h"
#include "common/error.h"
#include "tests/test_hosts.h"

#include <stddef.h>
#include <sys/types.h>

/* A shard or the coordinator on its host. */
typedef struct {
    size_t host;                   /* which host runs it */
    char data_dir[BENCH_PATH_MAX]; /* --data-dir */
    char ready[BENCH_PATH_MAX];    /* --ready-file */
    char log[BENCH_PATH_MAX];      /* its output, appended over restarts */
    char listen[64];               /* "tcp://<host address>:<port>", kept over restarts */
    pid_t pid;                     /* running, or 0 */
} bench_node_t;

/* Names n's files <dir>/<name>.{data,ready,log} and its endpoint on host at port. */
void bench_node_init(hosts_t *hosts, bench_node_t *n, const char *dir, const char *name,
                     size_t host, int port);

/*
 * Starts argv on n's host (output appended to n->log) and waits up to wait_s
 * for its ready file. 0; SHOAL_EIO when it exited first (n->pid 0 then),
 * SHOAL_ETIMEOUT when it was not ready in time, or hosts_spawn's error.
 */
int bench_node_start(hosts_t *hosts, bench_node_t *n, char *const argv[], double wait_s,
                     shoal_err_t *err);

/*
 * shoal_client_create_ivf, retried every 100 ms for up to wait_s while the
 * coordinator answers SHOAL_EUNAVAIL (it has not heard from every shard
 * yet). Its last answer; err prefixed "create COLL" on failure.
 */
int bench_create_retry(shoal_client_t *c, const char *coll, size_t dim, shoal_metric_t metric,
                       const shoal_create_opts_t *copts, double wait_s, shoal_err_t *err);

#endif
