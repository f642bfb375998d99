/*
 * shoal_bench_hosts.c - nodes on the test harness's hosts for the cluster
 * benches; shoal_bench_hosts.h is the contract.
 */
#define _GNU_SOURCE /* setns, for tests/test_hosts.h; before every #include */

#include "bench/shoal_bench_hosts.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

void bench_node_init(hosts_t *hosts, bench_node_t *n, const char *dir, const char *name,
                     size_t host, int port)
{
    memset(n, 0, sizeof *n);
    n->host = host;
    snprintf(n->data_dir, sizeof n->data_dir, "%s/%s.data", dir, name);
    snprintf(n->ready, sizeof n->ready, "%s/%s.ready", dir, name);
    snprintf(n->log, sizeof n->log, "%s/%s.log", dir, name);
    const char *addr = hosts_addr(hosts, host);
    snprintf(n->listen, sizeof n->listen, "tcp://%s:%d", addr ? addr : "?", port);
}

int bench_node_start(hosts_t *hosts, bench_node_t *n, char *const argv[], double wait_s,
                     shoal_err_t *err)
{
    unlink(n->ready);
    n->pid = hosts_spawn(hosts, n->host, argv, n->log, err);
    if (n->pid < 0) {
        n->pid = 0;
        return err->code;
    }
    double end = timing_now() + wait_s;
    while (access(n->ready, R_OK) != 0) {
        int status = 0;
        if (hosts_wait(hosts, n->pid, 0, &status) == 1) {
            n->pid = 0;
            return shoal_err_set(err, SHOAL_EIO, "%s exited before it was ready (status 0x%x; %s)",
                                 argv[0], status, n->log);
        }
        if (timing_now() > end)
            return shoal_err_set(err, SHOAL_ETIMEOUT, "%s not ready after %.0f s (%s)", argv[0],
                                 wait_s, n->log);
        bench_sleep_ms(10);
    }
    return 0;
}

int bench_create_retry(shoal_client_t *c, const char *coll, size_t dim, shoal_metric_t metric,
                       const shoal_create_opts_t *copts, double wait_s, shoal_err_t *err)
{
    double end = timing_now() + wait_s;
    int rc;
    while ((rc = shoal_client_create_ivf(c, coll, dim, metric, copts, err)) == SHOAL_EUNAVAIL &&
           timing_now() < end)
        bench_sleep_ms(100);
    if (rc != 0)
        return shoal_err_prefix(err, "create %s", coll);
    return 0;
}
