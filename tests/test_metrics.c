/*
 * test_metrics.c - the monitoring endpoints (net/http_metrics.h,
 * common/prom.h) as an operator meets them: a real bin/shoal-shard and
 * bin/shoal-coordinator started with --metrics-listen on loopback, written
 * to and searched through the client library, then asked over plain HTTP
 * (a small socket client below) for /metrics, /healthz and /readyz.
 *
 * What is checked: the series values follow what the test did (search
 * replies counted by op and code, the duration histogram's count, vectors
 * per collection on the coordinator and on the shard, shards per query,
 * shard up); bad requests get 404 / 405; the coordinator's /readyz turns
 * 503 naming the list when its only shard is killed and 200 again when the
 * shard is back; `promtool check metrics` passes on every /metrics text
 * (skipped with a message when promtool is absent); and a real Prometheus
 * (Debian's prometheus package) scraping both processes every second
 * returns shoal_requests_total from its query API (skipped only when the
 * prometheus binary is absent). A bad --metrics-listen is refused at start
 * naming it. In-process: the text writer's escaping, histograms and size
 * cap, and the endpoint's answers before the first publication, when not
 * ready, and when the publications stop (stale).
 *
 * Every wait is bounded polling (the loop publishes about once a second);
 * no timing is asserted. Environment: SHOAL_BIN (the programs), SHOAL_TMP
 * (scratch), PATH (promtool, prometheus).
 */
#include "client/shoal_client.h"
#include "net/http_metrics.h"
#include "common/log.h"
#include "common/prom.h"
#include "net/wire.h"
#include "tests/test_support.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#define S_START_WAIT_S 60.0  /* a process must be ready within this */
#define S_STOP_WAIT_S  60.0  /* and exit within this after a signal */
#define S_POLL_WAIT_S  30.0  /* a published figure must show within this */
#define S_POLL_MS      100   /* between polls */
#define S_TIMEOUT_MS   30000 /* client calls */
#define S_HTTP_TIMEOUT_S 5   /* one HTTP exchange */
#define S_BODY_MAX     ((size_t)8 << 20)
#define S_DIM          8
#define S_N            500   /* vectors inserted */
#define S_NLIST        4
#define S_SEARCHES     5     /* search calls */
#define S_NQ           3     /* queries per call */

static void s_setup(void)
{
    shoal_log_init_from_env(); /* the in-process endpoint logs too */
    s_process_suite_init("test_metrics");
}

TestSuite(metrics, .init = s_setup, .fini = s_process_suite_fini, .timeout = 180);

/* ------------------------------------------------------------------------ */
/* A small HTTP client                                                      */
/* ------------------------------------------------------------------------ */

/* One HTTP answer: status (0 when nothing answered), headers and body (malloc'd). */
typedef struct {
    int status;
    char *head; /* status line and headers */
    char *body; /* after the blank line */
} s_http_t;

static void s_http_free(s_http_t *r)
{
    free(r->head);
    free(r->body);
    memset(r, 0, sizeof *r);
}

/*
 * method path on 127.0.0.1:port, HTTP/1.0 (the server closes after the
 * answer, which ends the read). A refused or silent connection gives
 * status 0 and empty strings.
 */
static s_http_t s_http(int port, const char *method, const char *path)
{
    s_http_t r = {0, NULL, NULL};
    char *buf = malloc(S_BODY_MAX + 1);
    cr_assert_not_null(buf);
    size_t len = 0;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0);
    struct timeval tv = {S_HTTP_TIMEOUT_S, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) {
        char req[1024];
        int n = snprintf(req, sizeof req, "%s %s HTTP/1.0\r\nHost: 127.0.0.1:%d\r\n\r\n", method,
                         path, port);
        if (send(fd, req, (size_t)n, MSG_NOSIGNAL) == n) {
            ssize_t got;
            while (len < S_BODY_MAX && (got = recv(fd, buf + len, S_BODY_MAX - len, 0)) > 0)
                len += (size_t)got;
        }
    }
    close(fd);
    buf[len] = '\0';
    char *sep = strstr(buf, "\r\n\r\n");
    if (len && sep && sscanf(buf, "HTTP/%*d.%*d %d", &r.status) == 1) {
        *sep = '\0';
        r.head = strdup(buf);
        r.body = strdup(sep + 4);
    } else {
        r.status = 0;
        r.head = strdup("");
        r.body = strdup("");
    }
    cr_assert(r.head && r.body);
    free(buf);
    return r;
}

/* GET path, asserting the status; returns the body (the caller frees). */
static char *s_get(int port, const char *path, int want_status)
{
    s_http_t r = s_http(port, "GET", path);
    cr_assert_eq(r.status, want_status, "GET :%d%s answered %d, expected %d: %s", port, path,
                 r.status, want_status, r.body);
    char *body = r.body;
    r.body = NULL;
    s_http_free(&r);
    return body;
}

/*
 * The value of the sample whose name and labels are exactly series
 * ("shoal_shard_up{shard=\"...\",index=\"0\"}") in a /metrics text; NAN
 * when there is no such line.
 */
static double s_value(const char *text, const char *series)
{
    size_t n = strlen(series);
    for (const char *line = text; line && *line;) {
        if (!strncmp(line, series, n) && line[n] == ' ')
            return strtod(line + n + 1, NULL);
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return NAN;
}

/* s_value from a fresh GET of port's /metrics. */
static double s_metric(int port, const char *series)
{
    char *text = s_get(port, "/metrics", 200);
    double v = s_value(text, series);
    free(text);
    return v;
}

/* Polls port's /metrics until series is at least want (bounded); returns the last value. */
static double s_wait_metric_geq(int port, const char *series, double want)
{
    double end = s_now() + S_POLL_WAIT_S, v;
    while (!((v = s_metric(port, series)) >= want)) {
        cr_assert_lt(s_now(), end, ":%d %s is %g after %.0f s, expected >= %g", port, series, v,
                     S_POLL_WAIT_S, want);
        s_sleep_ms(S_POLL_MS);
    }
    return v;
}

/* Polls port's /metrics until series equals want (bounded). */
static void s_wait_metric_eq(int port, const char *series, double want)
{
    double end = s_now() + S_POLL_WAIT_S, v;
    while ((v = s_metric(port, series)) != want) {
        cr_assert_lt(s_now(), end, ":%d %s is %g after %.0f s, expected %g", port, series, v,
                     S_POLL_WAIT_S, want);
        s_sleep_ms(S_POLL_MS);
    }
}

/* Polls port's path until it answers want_status (bounded); returns the last body. */
static char *s_wait_status(int port, const char *path, int want_status)
{
    double end = s_now() + S_POLL_WAIT_S;
    while (1) {
        s_http_t r = s_http(port, "GET", path);
        if (r.status == want_status) {
            char *body = r.body;
            r.body = NULL;
            s_http_free(&r);
            return body;
        }
        cr_assert_lt(s_now(), end, ":%d%s still answers %d (%s) after %.0f s, expected %d", port,
                     path, r.status, r.body, S_POLL_WAIT_S, want_status);
        s_http_free(&r);
        s_sleep_ms(S_POLL_MS);
    }
}

/* ------------------------------------------------------------------------ */
/* Outside programs: promtool, prometheus                                   */
/* ------------------------------------------------------------------------ */

/* prog's path on $PATH into out (S_SUPPORT_PATH_MAX bytes); 0 when absent. */
static int s_which(const char *prog, char *out)
{
    const char *path = getenv("PATH");
    char dirs[4096];
    snprintf(dirs, sizeof dirs, "%s", path && *path ? path : "/usr/bin:/bin");
    for (char *dir = strtok(dirs, ":"); dir; dir = strtok(NULL, ":")) {
        snprintf(out, S_SUPPORT_PATH_MAX, "%s/%s", dir, prog);
        if (access(out, X_OK) == 0)
            return 1;
    }
    return 0;
}

/* `promtool check metrics` on port's /metrics must pass (skipped, said, without promtool). */
static void s_promtool_check(int port, const char *what)
{
    char promtool[S_SUPPORT_PATH_MAX];
    if (!s_which("promtool", promtool)) {
        cr_log_warn("promtool is not installed (Debian: prometheus): %s's /metrics not linted",
                    what);
        return;
    }
    char in[S_SUPPORT_PATH_MAX], out[S_SUPPORT_PATH_MAX], name[64];
    snprintf(name, sizeof name, "%s.prom", what);
    s_scratch_path(in, name);
    snprintf(name, sizeof name, "%s.promtool", what);
    s_scratch_path(out, name);
    char *text = s_get(port, "/metrics", 200);
    FILE *f = fopen(in, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
    free(text);
    char cmd[3 * S_SUPPORT_PATH_MAX + 64];
    snprintf(cmd, sizeof cmd, "'%s' check metrics < '%s' > '%s' 2>&1", promtool, in, out);
    int rc = system(cmd);
    char *said = s_slurp(out);
    cr_assert(WIFEXITED(rc) && WEXITSTATUS(rc) == 0, "promtool check metrics on %s's text: %s",
              what, said);
    free(said);
}

/* ------------------------------------------------------------------------ */
/* The cluster: one shard, one coordinator, both with metrics               */
/* ------------------------------------------------------------------------ */

typedef struct {
    s_server_t shard, coord;
    int shard_port, coord_port;  /* their ZeroMQ ports (restarts keep them) */
    int shard_http, coord_http;  /* their metrics ports */
} s_cluster_t;

static int s_port(void)
{
    int port = s_free_port();
    cr_assert_gt(port, 0, "no free port below the ephemeral range");
    return port;
}

static void s_shard_start(s_cluster_t *cl)
{
    char bin[S_SUPPORT_PATH_MAX], listen[64], metrics[64];
    s_bin(bin, "shoal-shard");
    snprintf(listen, sizeof listen, "tcp://127.0.0.1:%d", cl->shard_port);
    snprintf(metrics, sizeof metrics, "127.0.0.1:%d", cl->shard_http);
    char *argv[] = {bin,           "--listen",    listen,          "--data-dir", cl->shard.data_dir,
                    "--ready-file", cl->shard.ready, "--threads",  "1",
                    "--metrics-listen", metrics,   NULL};
    cl->shard.pid = s_server_start(argv, cl->shard.ready, cl->shard.log, S_START_WAIT_S,
                                   cl->shard.endpoint, sizeof cl->shard.endpoint);
}

static void s_coord_start(s_cluster_t *cl)
{
    char bin[S_SUPPORT_PATH_MAX], listen[64], metrics[64];
    s_bin(bin, "shoal-coordinator");
    snprintf(listen, sizeof listen, "tcp://127.0.0.1:%d", cl->coord_port);
    snprintf(metrics, sizeof metrics, "127.0.0.1:%d", cl->coord_http);
    char *argv[] = {bin,
                    "--listen",
                    listen,
                    "--data-dir",
                    cl->coord.data_dir,
                    "--shards",
                    cl->shard.endpoint,
                    "--ready-file",
                    cl->coord.ready,
                    "--ping-interval-ms",
                    "100",
                    "--down-after-ms",
                    "1000",
                    "--metrics-listen",
                    metrics,
                    NULL};
    cl->coord.pid = s_server_start(argv, cl->coord.ready, cl->coord.log, S_START_WAIT_S,
                                   cl->coord.endpoint, sizeof cl->coord.endpoint);
}

/* Starts both and waits until both publish (/healthz 200). */
static void s_cluster_start(s_cluster_t *cl)
{
    memset(cl, 0, sizeof *cl);
    s_server_init(&cl->shard, "shard");
    s_server_init(&cl->coord, "coord");
    cl->shard_port = s_port();
    cl->coord_port = s_port();
    cl->shard_http = s_port();
    cl->coord_http = s_port();
    s_shard_start(cl);
    s_coord_start(cl);
    free(s_wait_status(cl->shard_http, "/healthz", 200));
    free(s_wait_status(cl->coord_http, "/healthz", 200));
}

/* SIGTERM both; each must exit 0. */
static void s_cluster_stop(s_cluster_t *cl)
{
    s_server_t *procs[] = {&cl->coord, &cl->shard};
    for (size_t i = 0; i < 2; i++) {
        if (!procs[i]->pid)
            continue;
        int status = s_server_signal(procs[i]->pid, SIGTERM, S_STOP_WAIT_S, procs[i]->log);
        procs[i]->pid = 0;
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "%s did not exit 0 after SIGTERM (status 0x%x)", procs[i]->log, status);
    }
}

static shoal_client_t *s_client(const s_cluster_t *cl)
{
    shoal_err_t err;
    shoal_client_t *c = shoal_client_new(cl->coord.endpoint, S_TIMEOUT_MS, &err);
    cr_assert_not_null(c, "client for %s: %s", cl->coord.endpoint, err.msg);
    return c;
}

/* n pseudo-random rows of S_DIM floats in [-1, 1) (the caller frees). */
static float *s_rows(size_t n, uint64_t seed)
{
    float *v = malloc(n * S_DIM * sizeof *v);
    cr_assert_not_null(v);
    uint64_t x = seed * 6364136223846793005ull + 1442695040888963407ull;
    for (size_t i = 0; i < n * S_DIM; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        v[i] = (float)((double)(x >> 11) / 9007199254740992.0 * 2.0 - 1.0);
    }
    return v;
}

/* Creates coll (S_NLIST lists), trains it and inserts S_N rows with ids 0..S_N-1. */
static void s_load(shoal_client_t *c, const char *coll)
{
    shoal_err_t err;
    shoal_create_opts_t copts = {.nlist = S_NLIST};
    int rc = shoal_client_create_ivf(c, coll, S_DIM, SHOAL_METRIC_L2, &copts, &err);
    cr_assert_eq(rc, 0, "create %s: %s", coll, err.msg);
    float *rows = s_rows(S_N, 1);
    rc = shoal_client_train(c, coll, rows, S_N, S_DIM, NULL, NULL, &err);
    cr_assert_eq(rc, 0, "train %s: %s", coll, err.msg);
    uint64_t ids[S_N];
    for (size_t i = 0; i < S_N; i++)
        ids[i] = i;
    rc = shoal_client_insert(c, coll, ids, rows, S_N, S_DIM, NULL, &err);
    cr_assert_eq(rc, 0, "insert into %s: %s", coll, err.msg);
    free(rows);
}

/* S_SEARCHES searches of S_NQ queries each, all answered. */
static void s_searches(shoal_client_t *c, const char *coll)
{
    float *q = s_rows(S_NQ, 2);
    shoal_search_opts_t opts = {.k = 5};
    for (int i = 0; i < S_SEARCHES; i++) {
        uint64_t *ids = NULL;
        shoal_err_t err;
        int rc = shoal_client_search(c, coll, q, S_NQ, S_DIM, &opts, &ids, NULL, NULL, &err);
        cr_assert_eq(rc, 0, "search %s: %s", coll, err.msg);
        free(ids);
    }
    free(q);
}

/* ------------------------------------------------------------------------ */
/* Tests: in-process                                                        */
/* ------------------------------------------------------------------------ */

Test(metrics, text_escapes_labels_sums_buckets_and_stays_under_its_cap)
{
    prom_text_t t;
    prom_text_init(&t, 0);
    prom_labels_t l;
    prom_labels_init(&l);
    prom_label(&l, "path", "a\\b\"c\nd");
    prom_family(&t, "shoal_test_total", PROM_COUNTER, "A test.");
    prom_sample_u64(&t, "shoal_test_total", &l, 18446744073709551615ull);
    cr_assert_not_null(strstr(t.data, "shoal_test_total{path=\"a\\\\b\\\"c\\nd\"} "
                                      "18446744073709551615\n"),
                       "%s", t.data);

    static const double bounds[] = {1, 2, 5};
    prom_hist_t h;
    prom_hist_init(&h, bounds, 3);
    double seen[] = {0.5, 1, 1.5, 3, 9, NAN};
    for (size_t i = 0; i < sizeof seen / sizeof seen[0]; i++)
        prom_hist_observe(&h, seen[i]);
    prom_text_reset(&t);
    prom_hist_write(&t, "shoal_h", NULL, &h);
    cr_assert_eq(s_value(t.data, "shoal_h_bucket{le=\"1\"}"), 2, "%s", t.data);
    cr_assert_eq(s_value(t.data, "shoal_h_bucket{le=\"2\"}"), 3);
    cr_assert_eq(s_value(t.data, "shoal_h_bucket{le=\"5\"}"), 4);
    cr_assert_eq(s_value(t.data, "shoal_h_bucket{le=\"+Inf\"}"), 5);
    cr_assert_eq(s_value(t.data, "shoal_h_count"), 5);
    cr_assert_float_eq(s_value(t.data, "shoal_h_sum"), 15.0, 1e-9);
    prom_text_fini(&t);

    /* A cap of 100 bytes: whole lines only, and marked cut. */
    prom_text_init(&t, 100);
    for (int i = 0; i < 20; i++)
        prom_sample_u64(&t, "shoal_line", NULL, (uint64_t)i);
    cr_assert(t.cut);
    cr_assert_leq(t.len, 100);
    cr_assert_eq(t.data[t.len - 1], '\n', "a line was cut in the middle: %s", t.data);
    prom_text_fini(&t);
}

/* The port of "HOST:PORT". */
static int s_address_port(const char *address)
{
    const char *colon = strrchr(address, ':');
    cr_assert_not_null(colon, "%s", address);
    return atoi(colon + 1);
}

Test(metrics, endpoint_answers_starting_not_ready_ready_and_stale)
{
    shoal_err_t err;
    cr_assert_eq(http_metrics_check_listen("127.0.0.1", &err), SHOAL_EINVAL);
    cr_assert_not_null(strstr(err.msg, "HOST:PORT"), "%s", err.msg);
    cr_assert_null(http_metrics_new("127.0.0.1:70000", "shard", &err));
    cr_assert_not_null(strstr(err.msg, "70000"), "%s", err.msg);

    http_metrics_t *m = http_metrics_new("127.0.0.1:0", "shard", &err);
    cr_assert_not_null(m, "%s", err.msg);
    int port = s_address_port(http_metrics_address(m));
    char *body = s_get(port, "/healthz", 503);
    cr_assert_not_null(strstr(body, "starting"), "%s", body);
    free(body);
    free(s_get(port, "/metrics", 503));
    free(s_get(port, "/readyz", 503));

    /* Published, not ready: alive, and /readyz says why. */
    http_metrics_request(m, WIRE_OP_SEARCH, SHOAL_OK, 1500);
    http_metrics_request(m, WIRE_OP_SEARCH, SHOAL_EINVAL, 20);
    cr_assert(http_metrics_due(m, http_metrics_next_us(m)));
    cr_assert_not_null(http_metrics_begin(m));
    http_metrics_publish(m, 0, "loading the store");
    free(s_get(port, "/healthz", 200));
    body = s_get(port, "/readyz", 503);
    cr_assert_str_eq(body, "not ready: loading the store\n");
    free(body);
    body = s_get(port, "/metrics", 200);
    cr_assert_eq(s_value(body, "shoal_requests_total{op=\"search\",code=\"ok\"}"), 1, "%s", body);
    cr_assert_eq(s_value(body, "shoal_requests_total{op=\"search\",code=\"einval\"}"), 1);
    cr_assert_eq(s_value(body, "shoal_request_duration_seconds_bucket{op=\"search\",le=\"0.001\"}"),
                 1);
    cr_assert_eq(s_value(body, "shoal_request_duration_seconds_bucket{op=\"search\",le=\"0.0025\"}"),
                 2);
    cr_assert_eq(s_value(body, "shoal_ready"), 0);
    free(body);

    /* Ready; then no publication for longer than HTTP_METRICS_STALE_MS: stale. */
    http_metrics_begin(m);
    http_metrics_publish(m, 1, NULL);
    body = s_get(port, "/readyz", 200);
    cr_assert_str_eq(body, "ok\n");
    free(body);
    double end = s_now() + HTTP_METRICS_STALE_MS / 1000.0 + S_POLL_WAIT_S;
    while (1) {
        s_http_t r = s_http(port, "GET", "/healthz");
        int stale = r.status == 503 && strstr(r.body, "stale");
        s_http_free(&r);
        if (stale)
            break;
        cr_assert_lt(s_now(), end, "/healthz never went stale");
        s_sleep_ms(S_POLL_MS * 5);
    }
    free(s_get(port, "/readyz", 503));
    free(s_get(port, "/metrics", 200)); /* the last figures stay readable */
    http_metrics_destroy(&m);
    cr_assert_null(m);
    s_http_t r = s_http(port, "GET", "/healthz");
    cr_assert_eq(r.status, 0, "still answering after destroy");
    s_http_free(&r);
}

/* ------------------------------------------------------------------------ */
/* Tests: processes                                                         */
/* ------------------------------------------------------------------------ */

Test(metrics, series_follow_requests_and_pass_promtool)
{
    s_cluster_t cl;
    s_cluster_start(&cl);
    shoal_client_t *c = s_client(&cl);
    s_load(c, "m");
    s_searches(c, "m");
    /* One search the coordinator refuses: counted under its code. */
    float q[S_DIM] = {0};
    uint64_t *ids = NULL;
    shoal_err_t err;
    shoal_search_opts_t opts = {.k = 5};
    int rc = shoal_client_search(c, "absent", q, 1, S_DIM, &opts, &ids, NULL, NULL, &err);
    cr_assert_eq(rc, SHOAL_ENOTFOUND, "search of a missing collection: %s", err.msg);
    free(ids);

    /* The coordinator: requests by op and code, durations, vectors, fan-out, shard up. */
    int ch = cl.coord_http;
    double searches = s_wait_metric_geq(ch, "shoal_requests_total{op=\"search\",code=\"ok\"}",
                                        S_SEARCHES);
    s_wait_metric_geq(ch, "shoal_requests_total{op=\"search\",code=\"enotfound\"}", 1);
    s_wait_metric_eq(ch, "shoal_collection_vectors{collection=\"m\"}", S_N);
    char *text = s_get(ch, "/metrics", 200);
    cr_assert_geq(s_value(text, "shoal_requests_total{op=\"insert\",code=\"ok\"}"), 1);
    cr_assert_geq(s_value(text, "shoal_request_duration_seconds_count{op=\"search\"}"),
                  searches + 1, "%s", text);
    cr_assert_eq(s_value(text, "shoal_request_duration_seconds_bucket{op=\"search\",le=\"+Inf\"}"),
                 s_value(text, "shoal_request_duration_seconds_count{op=\"search\"}"));
    cr_assert_geq(s_value(text, "shoal_search_shards_per_query_count"), S_SEARCHES * S_NQ);
    cr_assert_eq(s_value(text, "shoal_search_shards_per_query_bucket{le=\"1\"}"),
                 s_value(text, "shoal_search_shards_per_query_count"),
                 "one shard: every query asked at most one");
    char series[512];
    snprintf(series, sizeof series, "shoal_shard_up{shard=\"%s\",index=\"0\"}", cl.shard.endpoint);
    cr_assert_eq(s_value(text, series), 1, "%s in:\n%s", series, text);
    cr_assert_eq(s_value(text, "shoal_collection_trained{collection=\"m\"}"), 1);
    cr_assert_eq(s_value(text, "shoal_pending_intents{collection=\"m\"}"), 0);
    cr_assert_gt(s_value(text, "shoal_process_resident_memory_bytes"), 0);
    cr_assert_eq(s_value(text, "shoal_ready"), 1);
    cr_assert_not_null(strstr(text, "\nshoal_build_info{version=\""), "%s", text);
    cr_assert_not_null(strstr(text, "# TYPE shoal_request_duration_seconds histogram"));
    free(text);

    /* The shard: its own requests (the coordinator's sub-searches) and vectors. */
    int sh = cl.shard_http;
    s_wait_metric_eq(sh, "shoal_shard_vectors{collection=\"m\"}", S_N);
    s_wait_metric_geq(sh, "shoal_requests_total{op=\"search\",code=\"ok\"}", 1);
    text = s_get(sh, "/metrics", 200);
    cr_assert_gt(s_value(text, "shoal_disk_free_bytes"), 0);
    cr_assert_gt(s_value(text, "shoal_shard_memory_bytes{collection=\"m\",kind=\"hnsw\"}"), 0);
    cr_assert_eq(s_value(text, "shoal_pending_reply_bytes"), 0);
    double inline_searches = s_value(text, "shoal_shard_searches_inline_total");
    cr_assert(inline_searches >= 0 &&
                  inline_searches <= s_value(text, "shoal_requests_total{op=\"search\",code=\"ok\"}"),
              "searches run on the loop: %f\n%s", inline_searches, text);
    cr_assert_not_null(strstr(text, "role=\"shard\""), "%s", text);
    free(text);

    /* Health, readiness, and what a wrong request gets. */
    int ports[] = {ch, sh};
    for (size_t i = 0; i < 2; i++) {
        char *body = s_get(ports[i], "/healthz", 200);
        cr_assert_str_eq(body, "ok\n");
        free(body);
        body = s_get(ports[i], "/readyz", 200);
        cr_assert_str_eq(body, "ok\n");
        free(body);
        free(s_get(ports[i], "/nowhere", 404));
        s_http_t r = s_http(ports[i], "POST", "/metrics");
        cr_assert_eq(r.status, 405, "POST answered %d", r.status);
        cr_assert_not_null(strstr(r.head, "Allow: GET, HEAD"), "%s", r.head);
        s_http_free(&r);
        r = s_http(ports[i], "HEAD", "/metrics");
        cr_assert_eq(r.status, 200, "HEAD answered %d", r.status);
        cr_assert_str_eq(r.body, "", "HEAD sent a body");
        cr_assert_not_null(strstr(r.head, "text/plain; version=0.0.4"), "%s", r.head);
        s_http_free(&r);
    }
    s_promtool_check(ch, "coordinator");
    s_promtool_check(sh, "shard");

    shoal_client_destroy(&c);
    s_cluster_stop(&cl);
}

Test(metrics, coordinator_readyz_follows_its_shard)
{
    s_cluster_t cl;
    s_cluster_start(&cl);
    shoal_client_t *c = s_client(&cl);
    s_load(c, "r");
    shoal_client_destroy(&c);
    free(s_wait_status(cl.coord_http, "/readyz", 200));
    char series[512];
    snprintf(series, sizeof series, "shoal_shard_up{shard=\"%s\",index=\"0\"}", cl.shard.endpoint);

    /* The only shard dies: every list loses its replica. */
    s_server_signal(cl.shard.pid, SIGKILL, S_STOP_WAIT_S, cl.shard.log);
    cl.shard.pid = 0;
    char *why = s_wait_status(cl.coord_http, "/readyz", 503);
    cr_assert_not_null(strstr(why, "collection \"r\": list"), "%s", why);
    cr_assert_not_null(strstr(why, "is down"), "%s", why);
    free(why);
    s_wait_metric_eq(cl.coord_http, series, 0);
    cr_assert_eq(s_metric(cl.coord_http, "shoal_ready"), 0);
    char *ok = s_get(cl.coord_http, "/healthz", 200); /* alive all along */
    free(ok);
    s_promtool_check(cl.coord_http, "coordinator-shard-down");

    /* Back on its port and data dir: ready again. */
    s_shard_start(&cl);
    free(s_wait_status(cl.coord_http, "/readyz", 200));
    s_wait_metric_eq(cl.coord_http, series, 1);
    free(s_wait_status(cl.shard_http, "/readyz", 200));
    s_cluster_stop(&cl);
}

Test(metrics, bad_listen_address_is_refused_at_start)
{
    char bin[S_SUPPORT_PATH_MAX], data[S_SUPPORT_PATH_MAX], log[S_SUPPORT_PATH_MAX];
    s_bin(bin, "shoal-shard");
    s_scratch_path(data, "bad.data");
    s_scratch_path(log, "bad.log");
    char *argv[] = {bin, "--listen", "tcp://127.0.0.1:*", "--data-dir", data,
                    "--metrics-listen", "127.0.0.1:99999", NULL};
    int status = s_run_to_end(argv, log, log, S_START_WAIT_S);
    char *text = s_slurp(log);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 2, "status 0x%x: %s", status, text);
    cr_assert_not_null(strstr(text, "--metrics-listen"), "%s", text);
    cr_assert_not_null(strstr(text, "127.0.0.1:99999"), "%s", text);
    free(text);

    /* Well formed but taken: exit 1 naming the address and why. */
    int port = s_port();
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(fd, 1), 0);
    char taken[64];
    snprintf(taken, sizeof taken, "127.0.0.1:%d", port);
    argv[6] = taken;
    status = s_run_to_end(argv, log, log, S_START_WAIT_S);
    close(fd);
    text = s_slurp(log);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 1, "status 0x%x: %s", status, text);
    cr_assert_not_null(strstr(text, taken), "%s", text);
    cr_assert_not_null(strstr(text, "in use"), "%s", text);
    free(text);
}

Test(metrics, prometheus_scrapes_the_cluster)
{
    char prometheus[S_SUPPORT_PATH_MAX];
    if (!s_which("prometheus", prometheus))
        cr_skip_test("the prometheus binary is not installed (Debian: prometheus): "
                     "no real scrape tested");
    s_cluster_t cl;
    s_cluster_start(&cl);
    shoal_client_t *c = s_client(&cl);
    s_load(c, "p");
    s_searches(c, "p");
    shoal_client_destroy(&c);

    /* A scrape config for both processes, every second. */
    char config[S_SUPPORT_PATH_MAX], tsdb[S_SUPPORT_PATH_MAX], log[S_SUPPORT_PATH_MAX];
    s_scratch_path(config, "prometheus.yml");
    s_scratch_path(tsdb, "prometheus.tsdb");
    s_scratch_path(log, "prometheus.log");
    FILE *f = fopen(config, "w");
    cr_assert_not_null(f);
    fprintf(f,
            "global:\n"
            "  scrape_interval: 1s\n"
            "  scrape_timeout: 1s\n"
            "scrape_configs:\n"
            "  - job_name: shoal-coordinator\n"
            "    static_configs:\n"
            "      - targets: ['127.0.0.1:%d']\n"
            "  - job_name: shoal-shard\n"
            "    static_configs:\n"
            "      - targets: ['127.0.0.1:%d']\n",
            cl.coord_http, cl.shard_http);
    fclose(f);
    int web = s_port();
    char config_flag[S_SUPPORT_PATH_MAX + 32], tsdb_flag[S_SUPPORT_PATH_MAX + 32], web_flag[64];
    snprintf(config_flag, sizeof config_flag, "--config.file=%s", config);
    snprintf(tsdb_flag, sizeof tsdb_flag, "--storage.tsdb.path=%s", tsdb);
    snprintf(web_flag, sizeof web_flag, "--web.listen-address=127.0.0.1:%d", web);
    char *argv[] = {prometheus, config_flag, tsdb_flag, web_flag, "--log.level=warn", NULL};
    pid_t pid = s_spawn(argv, log, log);

    /* Its query API: the series of both jobs, the coordinator's search counter included. */
    double end = s_now() + S_POLL_WAIT_S;
    char *answer = NULL;
    while (1) {
        s_http_t r = s_http(web, "GET", "/api/v1/query?query=shoal_requests_total");
        int found = r.status == 200 && strstr(r.body, "\"status\":\"success\"") &&
                    strstr(r.body, "\"job\":\"shoal-coordinator\"") &&
                    strstr(r.body, "\"job\":\"shoal-shard\"") &&
                    strstr(r.body, "\"op\":\"search\"");
        if (found) {
            answer = r.body;
            r.body = NULL;
            s_http_free(&r);
            break;
        }
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            s_child_forget(pid);
            char *text = s_slurp(log);
            cr_assert_fail("prometheus exited (status 0x%x):\n%s", status, text);
        }
        cr_assert_lt(s_now(), end, "prometheus has no shoal_requests_total of both jobs after "
                     "%.0f s: %d %s", S_POLL_WAIT_S, r.status, r.body);
        s_http_free(&r);
        s_sleep_ms(200);
    }
    cr_assert_not_null(strstr(answer, "\"__name__\":\"shoal_requests_total\""), "%s", answer);
    cr_log_info("prometheus answered: %.400s", answer);
    free(answer);
    kill(pid, SIGTERM);
    int status;
    if (!s_wait(pid, S_STOP_WAIT_S, &status)) {
        kill(pid, SIGKILL);
        s_wait(pid, 10, &status);
    }
    s_cluster_stop(&cl);
}
