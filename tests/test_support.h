/*
 * test_support.h - helpers shared by the Criterion suites in tests/.
 *
 * Each suite is a single .c file built into its own binary, so shared helpers
 * live here as static inline functions rather than in a library; a suite that
 * includes this header and uses only some of them gets no unused warnings.
 *
 * Reference distances: s_true_dist() is the metric computed in double
 * precision, independently of common/distance.c, with the same conventions
 * (L2 is squared, IP is the negated dot product, cosine is 1 - cos and 1 when
 * either vector is zero). s_magnitude() is the size the float computation
 * works at, for scaling tie and distance tolerances: for L2 |d|, for IP
 * |q| |x|, for cosine 1. The tolerances themselves stay in each suite.
 *
 * Scratch folders: s_remove_tree() is rm -r for the folders a suite made;
 * s_scratch_make() / s_scratch_remove() make and remove the running test's
 * folder under $SHOAL_TMP, s_scratch() names it and s_scratch_path() joins a
 * name to it (the process suites and test_cli).
 *
 * Child processes (the process suites: test_shard, test_cluster): s_spawn()
 * starts a program that dies with the test (PR_SET_PDEATHSIG) and records it
 * in a per-test-process registry that s_children_kill() empties (a suite's
 * fini calls it, so a failed test leaves nothing running); s_server_start()
 * also waits, bounded, for the server's --ready-file and reads the bound
 * endpoint from it; s_server_signal() signals a server and waits, bounded,
 * for its exit. s_server_t keeps one server's files and endpoint across
 * restarts; s_process_suite_init() / s_process_suite_fini() are the process
 * suites' init and fini (scratch folder, no child left running);
 * s_argv_fill() builds a child's argv; s_run_to_end() runs a program (a
 * CLI) to its exit. Every wait is bounded polling; nothing asserts a timing.
 *
 * Real data: s_dataset_load() reads a dataset's base, queries and shipped
 * ground truth from $SHOAL_DATASETS (default ../shared/datasets), skipping
 * the test when the dataset's folder is absent.
 * These helpers assert with Criterion, so only Criterion suites include this.
 */
#ifndef SHOAL_TESTS_TEST_SUPPORT_H
#define SHOAL_TESTS_TEST_SUPPORT_H

#include "common/distance.h"
#include "common/vecfile.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <sys/socket.h>

/* ------------------------------------------------------------------------ */
/* Double-precision reference distances                                     */
/* ------------------------------------------------------------------------ */

static inline double s_dot(const float *a, const float *b, size_t dim)
{
    double sum = 0.0;
    for (size_t d = 0; d < dim; d++)
        sum += (double)a[d] * b[d];
    return sum;
}

static inline double s_true_dist(shoal_metric_t metric, const float *q, const float *x,
                                 size_t dim)
{
    if (metric == SHOAL_METRIC_L2) {
        double sum = 0.0;
        for (size_t d = 0; d < dim; d++) {
            double diff = (double)q[d] - x[d];
            sum += diff * diff;
        }
        return sum;
    }
    if (metric == SHOAL_METRIC_IP)
        return -s_dot(q, x, dim);
    double nq = s_dot(q, q, dim), nx = s_dot(x, x, dim);
    if (nq == 0 || nx == 0)
        return 1.0;
    return 1.0 - s_dot(q, x, dim) / sqrt(nq * nx);
}

/* The size the float computation works at, for tolerances; d is the true distance. */
static inline double s_magnitude(shoal_metric_t metric, const float *q, const float *x,
                                 size_t dim, double d)
{
    if (metric == SHOAL_METRIC_L2)
        return fabs(d);
    if (metric == SHOAL_METRIC_IP)
        return sqrt(s_dot(q, q, dim) * s_dot(x, x, dim));
    return 1.0;
}

/* ------------------------------------------------------------------------ */
/* Scratch folders                                                          */
/* ------------------------------------------------------------------------ */

/* Longest path s_remove_tree() descends into; longer entries are skipped. */
#define S_SUPPORT_PATH_MAX 1024

/* rm -r: removes path and, for a folder, everything under it; errors ignored. */
static inline void s_remove_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return;
    if (S_ISDIR(st.st_mode)) {
        DIR *dir = opendir(path);
        if (dir) {
            struct dirent *e;
            while ((e = readdir(dir)) != NULL) {
                if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                    continue;
                char child[S_SUPPORT_PATH_MAX];
                int len = snprintf(child, sizeof child, "%s/%s", path, e->d_name);
                if (len > 0 && len < S_SUPPORT_PATH_MAX)
                    s_remove_tree(child);
            }
            closedir(dir);
        }
        rmdir(path);
    } else {
        unlink(path);
    }
}

/* "<dir>/<name>" into out (S_SUPPORT_PATH_MAX bytes); fails the test when too long. */
static inline const char *s_join(char *out, const char *dir, const char *name)
{
    int len = snprintf(out, S_SUPPORT_PATH_MAX, "%s/%s", dir, name);
    cr_assert(len > 0 && len < S_SUPPORT_PATH_MAX, "path too long: %s/%s", dir, name);
    return out;
}

/*
 * The running test's scratch folder ("" when there is none). A function-local
 * static, like the child registry below: Criterion runs each test in its own
 * process, and suites without a scratch folder get no unused warning.
 */
static inline char *s_scratch(void)
{
    static char dir[S_SUPPORT_PATH_MAX];
    return dir;
}

/* Makes the scratch folder: a fresh $SHOAL_TMP/<prefix>.XXXXXX (SHOAL_TMP default /tmp). */
static inline void s_scratch_make(const char *prefix)
{
    const char *root = getenv("SHOAL_TMP");
    if (!root || !*root)
        root = "/tmp";
    mkdir(root, 0777); /* the Makefile creates it; this is for manual runs */
    char *dir = s_scratch();
    snprintf(dir, S_SUPPORT_PATH_MAX, "%s/%s.XXXXXX", root, prefix);
    cr_assert_not_null(mkdtemp(dir), "mkdtemp under %s failed", root);
}

/* Removes the scratch folder with everything in it (none made: nothing to do). */
static inline void s_scratch_remove(void)
{
    char *dir = s_scratch();
    if (dir[0])
        s_remove_tree(dir);
    dir[0] = '\0';
}

/* "<scratch folder>/<name>" into out (S_SUPPORT_PATH_MAX bytes). */
static inline const char *s_scratch_path(char *out, const char *name)
{
    return s_join(out, s_scratch(), name);
}

/* ------------------------------------------------------------------------ */
/* Child processes                                                          */
/* ------------------------------------------------------------------------ */

#define S_SUPPORT_CHILDREN_MAX 16

static inline double s_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* A poll interval, not a synchronisation: callers loop on a condition. */
static inline void s_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/*
 * The registry of running children. A function-local static rather than a
 * file-scope one, so that suites which never start a process get no
 * unused-variable warning; Criterion runs each test in its own process.
 */
static inline pid_t *s_children(void)
{
    static pid_t children[S_SUPPORT_CHILDREN_MAX];
    return children;
}

static inline void s_child_add(pid_t pid)
{
    pid_t *children = s_children();
    for (int i = 0; i < S_SUPPORT_CHILDREN_MAX; i++)
        if (children[i] == 0) {
            children[i] = pid;
            return;
        }
    cr_assert_fail("too many children");
}

static inline void s_child_forget(pid_t pid)
{
    pid_t *children = s_children();
    for (int i = 0; i < S_SUPPORT_CHILDREN_MAX; i++)
        if (children[i] == pid)
            children[i] = 0;
}

/* SIGKILLs and reaps every child still registered. */
static inline void s_children_kill(void)
{
    pid_t *children = s_children();
    for (int i = 0; i < S_SUPPORT_CHILDREN_MAX; i++) {
        if (children[i] > 0) {
            kill(children[i], SIGKILL);
            waitpid(children[i], NULL, 0);
        }
        children[i] = 0;
    }
}

/* The process suites' init: a fresh scratch folder named after prefix, no child running. */
static inline void s_process_suite_init(const char *prefix)
{
    s_scratch_make(prefix);
    s_children_kill();
}

/* Their fini: every child killed, the scratch folder removed. */
static inline void s_process_suite_fini(void)
{
    s_children_kill();
    s_scratch_remove();
}

/*
 * Fills argv (room for cap entries) with the nhead entries of head, then
 * args (NULL-terminated), then NULL. Fails the test when they do not fit.
 */
static inline void s_argv_fill(char **argv, size_t cap, char *const *head, size_t nhead,
                               const char *const *args)
{
    size_t argc = 0;
    for (size_t i = 0; i < nhead; i++) {
        cr_assert_lt(argc, cap - 1);
        argv[argc++] = head[i];
    }
    for (size_t i = 0; args && args[i]; i++) {
        cr_assert_lt(argc, cap - 1);
        argv[argc++] = (char *)args[i];
    }
    argv[argc] = NULL;
}

/* $SHOAL_BIN/prog (default bin/prog) into out (S_SUPPORT_PATH_MAX bytes); must be executable. */
static inline void s_bin(char *out, const char *prog)
{
    const char *dir = getenv("SHOAL_BIN");
    if (!dir || !*dir)
        dir = "bin";
    snprintf(out, S_SUPPORT_PATH_MAX, "%s/%s", dir, prog);
    cr_assert(access(out, X_OK) == 0, "%s is not an executable (set SHOAL_BIN)", out);
}

/*
 * Starts argv[0] with stdout/stderr appended to the given files; the child
 * dies with this process (PR_SET_PDEATHSIG).
 */
static inline pid_t s_spawn(char *const argv[], const char *out_path, const char *err_path)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        int out = open(out_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        int err = open(err_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (out >= 0)
            dup2(out, 1);
        if (err >= 0)
            dup2(err, 2);
        execv(argv[0], argv);
        _exit(127);
    }
    s_child_add(pid);
    return pid;
}

/* Waits up to seconds for pid; returns 1 with *status when it exited. */
static inline int s_wait(pid_t pid, double seconds, int *status)
{
    double end = s_now() + seconds;
    while (1) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid) {
            s_child_forget(pid);
            return 1;
        }
        if (s_now() > end)
            return 0;
        s_sleep_ms(10);
    }
}

/*
 * Runs argv[0] to its exit with stdout and stderr appended to out_path and
 * err_path (both truncated first; they may be the one file); returns the
 * wait status. Fails the test, after SIGKILLing it, when it is still
 * running after wait_s.
 */
static inline int s_run_to_end(char *const argv[], const char *out_path, const char *err_path,
                               double wait_s)
{
    unlink(out_path);
    unlink(err_path);
    pid_t pid = s_spawn(argv, out_path, err_path);
    int status = 0;
    int exited = s_wait(pid, wait_s, &status);
    if (!exited) {
        kill(pid, SIGKILL);
        s_wait(pid, 10, &status);
    }
    cr_assert(exited, "%s %s did not exit within %.0f s", argv[0], argv[1] ? argv[1] : "",
              wait_s);
    return status;
}

/* A whole file as a string (caller frees); "" when absent. */
static inline char *s_slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        char *empty = calloc(1, 1);
        cr_assert_not_null(empty);
        return empty;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *data = calloc((size_t)(size > 0 ? size : 0) + 1, 1);
    cr_assert_not_null(data);
    size_t got = size > 0 ? fread(data, 1, (size_t)size, f) : 0;
    data[got] = '\0';
    fclose(f);
    return data;
}

/*
 * Starts a server (argv must include its --ready-file ready) with its output
 * appended to log, and waits up to wait_s for the ready file; endpoint (cap
 * bytes) gets the file's first line, the bound endpoint. Fails the test,
 * showing the log, when the server exits first.
 */
static inline pid_t s_server_start(char *const argv[], const char *ready, const char *log,
                                   double wait_s, char *endpoint, size_t cap)
{
    unlink(ready);
    pid_t pid = s_spawn(argv, log, log);
    double end = s_now() + wait_s;
    while (access(ready, R_OK) != 0) {
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            s_child_forget(pid);
            char *text = s_slurp(log);
            cr_assert_fail("%s exited before it was ready (status 0x%x):\n%s", argv[0], status,
                           text);
        }
        cr_assert_lt(s_now(), end, "%s not ready after %.0f s", argv[0], wait_s);
        s_sleep_ms(10);
    }
    char *text = s_slurp(ready);
    size_t len = strcspn(text, "\r\n");
    cr_assert(len > 0 && len < cap, "ready file %s holds \"%s\"", ready, text);
    memcpy(endpoint, text, len);
    endpoint[len] = '\0';
    free(text);
    return pid;
}

/*
 * Sends sig to a server and waits up to wait_s for its exit (then SIGKILLs
 * it); returns the wait status. Fails the test when it did not exit in time
 * or when its log has a sanitizer report.
 */
static inline int s_server_signal(pid_t pid, int sig, double wait_s, const char *log)
{
    cr_assert_gt(pid, 0);
    kill(pid, sig);
    int status = 0;
    int exited = s_wait(pid, wait_s, &status);
    if (!exited) {
        kill(pid, SIGKILL);
        s_wait(pid, 10, &status);
    }
    cr_assert(exited, "pid %d did not exit within %.0f s of signal %d (log %s)", (int)pid, wait_s,
              sig, log);
    char *text = s_slurp(log);
    cr_assert(!strstr(text, "Sanitizer") && !strstr(text, "runtime error:"),
              "%s has a sanitizer report:\n%s", log, text);
    free(text);
    return status;
}

/* ------------------------------------------------------------------------ */
/* Real datasets                                                            */
/* ------------------------------------------------------------------------ */

/* The folder of the shared datasets: $SHOAL_DATASETS, else ../shared/datasets. */
static inline const char *s_datasets(void)
{
    const char *dir = getenv("SHOAL_DATASETS");
    return dir && *dir ? dir : "../shared/datasets";
}

/* A dataset with shipped ground truth, loaded whole. */
typedef struct {
    shoal_metric_t metric;               /* the metric of its ground truth */
    char base_path[S_SUPPORT_PATH_MAX];  /* the files, for programs that read them */
    char query_path[S_SUPPORT_PATH_MAX];
    char gt_path[S_SUPPORT_PATH_MAX];
    float *base;                         /* n x dim */
    size_t n, dim;
    float *queries;                      /* nq x dim */
    size_t nq;
    int32_t *gt;                         /* nq x gtk true neighbour ids, best first */
    size_t gtk;
} s_dataset_t;

/*
 * Loads the shared dataset sub ("siftsmall", "glove50"): skips the test when
 * its folder is absent; fails it when a file does not load, the dimensions
 * disagree or the truth has fewer than min_gtk ids per query.
 */
static inline void s_dataset_load(s_dataset_t *d, const char *sub, size_t min_gtk)
{
    static const struct {
        const char *sub, *base, *query, *gt; /* folder and file names */
        shoal_metric_t metric;               /* of the ground truth */
    } known[] = {
        {"siftsmall", "siftsmall_base.fvecs", "siftsmall_query.fvecs",
         "siftsmall_groundtruth.ivecs", SHOAL_METRIC_L2},
        {"glove50", "glove50_base.fvecs", "glove50_query.fvecs",
         "glove50_groundtruth_angular.ivecs", SHOAL_METRIC_COSINE},
    };
    size_t i = 0;
    while (i < sizeof known / sizeof known[0] && strcmp(known[i].sub, sub) != 0)
        i++;
    cr_assert_lt(i, sizeof known / sizeof known[0], "no dataset named %s", sub);
    memset(d, 0, sizeof *d);
    d->metric = known[i].metric;
    char dir[S_SUPPORT_PATH_MAX];
    s_join(dir, s_datasets(), sub);
    s_join(d->base_path, dir, known[i].base);
    s_join(d->query_path, dir, known[i].query);
    s_join(d->gt_path, dir, known[i].gt);
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        cr_skip_test("%s not found (set SHOAL_DATASETS): real-data checks skipped", dir);
    shoal_err_t err;
    size_t qdim = 0, ngt = 0;
    d->base = vecfile_load_f32(d->base_path, &d->n, &d->dim, &err);
    cr_assert_not_null(d->base, "%s", err.msg);
    d->queries = vecfile_load_f32(d->query_path, &d->nq, &qdim, &err);
    cr_assert_not_null(d->queries, "%s", err.msg);
    d->gt = vecfile_load_i32(d->gt_path, &ngt, &d->gtk, &err);
    cr_assert_not_null(d->gt, "%s", err.msg);
    cr_assert_eq(qdim, d->dim, "%s: queries of dim %zu, base of dim %zu", sub, qdim, d->dim);
    cr_assert_eq(ngt, d->nq, "%s: %zu truth rows for %zu queries", sub, ngt, d->nq);
    cr_assert_geq(d->gtk, min_gtk, "%s: %zu true ids per query, fewer than %zu", sub, d->gtk,
                  min_gtk);
}

static inline void s_dataset_free(s_dataset_t *d)
{
    free(d->base);
    free(d->queries);
    free(d->gt);
    memset(d, 0, sizeof *d);
}

#if defined(SHOAL_CLIENT_H) && defined(SHOAL_WIRE_H)
/*
 * A number from a server's stats map (a dotted path, wire_info_lookup), or
 * absent when the map has no such key. Fails the test when stats fails.
 */
static inline double s_stat_or(shoal_client_t *c, const char *path, double absent)
{
    void *info = NULL;
    size_t len = 0;
    shoal_err_t err;
    int rc = shoal_client_stats(c, NULL, NULL, &info, &len, &err);
    cr_assert_eq(rc, 0, "stats: %s", err.msg);
    double value = absent;
    if (wire_info_lookup(info, len, path, &value) != 0)
        value = absent;
    free(info);
    return value;
}

/* s_stat_or, failing the test when the key is absent. */
static inline double s_stat(shoal_client_t *c, const char *path)
{
    double value = s_stat_or(c, path, NAN);
    cr_assert(!isnan(value), "stats has no %s", path);
    return value;
}

/*
 * Decodes a raw reply from shoal_client_raw (a leading empty delimiter, REQ
 * style, is skipped) into rep, which the caller wire_reply_fini()s. Fails the
 * test when it has no frames or too many, or does not decode; what names
 * the request in the messages. Only for suites that include
 * client/shoal_client.h and net/wire.h first.
 */
static inline void s_reply_decode(const shoal_frames_t *reply, wire_reply_t *rep, const char *what)
{
    size_t skip = reply->count > 0 && reply->size[0] == 0 ? 1 : 0; /* an empty delimiter */
    cr_assert(reply->count > skip && reply->count - skip <= WIRE_FRAMES_MAX,
              "%s: a reply of %zu frames", what, reply->count);
    wire_frames_t in;
    memset(&in, 0, sizeof in);
    in.count = reply->count - skip;
    for (size_t i = 0; i < in.count; i++) {
        in.data[i] = reply->data[i + skip];
        in.size[i] = reply->size[i + skip];
    }
    wire_limits_t limits = wire_limits_default();
    shoal_err_t err;
    wire_reply_init(rep);
    int rc = wire_reply_decode(&in, &limits, rep, &err);
    cr_assert_eq(rc, 0, "%s: the reply does not decode: %s", what, err.msg);
}

/* Frames a raw request may have: more than any valid one, so tests can add some. */
#define S_SUPPORT_RAW_FRAMES_MAX 8

/* A request's frames as plain copies a test can damage. */
typedef struct {
    size_t count;                            /* frames */
    uint8_t *data[S_SUPPORT_RAW_FRAMES_MAX]; /* copies (malloc'd) */
    size_t size[S_SUPPORT_RAW_FRAMES_MAX];   /* lengths */
} s_raw_t;

/* req, otherwise empty, for op on collection coll with request id rid. */
static inline void s_request_start(wire_request_t *req, wire_op_t op, uint64_t rid,
                                   const char *coll)
{
    wire_request_init(req);
    req->op = op;
    req->rid = rid;
    snprintf(req->coll, sizeof req->coll, "%s", coll);
}

/* raw gets copies of req's encoded frames (s_raw_fini frees them). */
static inline void s_raw_from_req(const wire_request_t *req, s_raw_t *raw)
{
    wire_frames_t frames;
    memset(&frames, 0, sizeof frames);
    shoal_err_t err;
    cr_assert_eq(wire_request_encode(req, &frames, &err), 0, "encode: %s", err.msg);
    memset(raw, 0, sizeof *raw);
    raw->count = frames.count;
    for (size_t i = 0; i < frames.count; i++) {
        raw->data[i] = malloc(frames.size[i] + 1);
        cr_assert_not_null(raw->data[i]);
        memcpy(raw->data[i], frames.data[i], frames.size[i]);
        raw->size[i] = frames.size[i];
    }
    wire_frames_fini(&frames);
}

/* Sends raw through c: 0 with *reply (shoal_frames_destroy it), or the client's error. */
static inline int s_raw_call(shoal_client_t *c, const s_raw_t *raw, shoal_frames_t **reply,
                             shoal_err_t *err)
{
    const void *data[S_SUPPORT_RAW_FRAMES_MAX];
    for (size_t i = 0; i < raw->count; i++)
        data[i] = raw->data[i];
    *reply = NULL;
    return shoal_client_raw(c, data, raw->size, raw->count, reply, err);
}

static inline void s_raw_fini(s_raw_t *raw)
{
    for (size_t i = 0; i < raw->count; i++)
        free(raw->data[i]);
    memset(raw, 0, sizeof *raw);
}
#endif

/* A server process under test; its files and endpoint are kept across restarts. */
typedef struct {
    pid_t pid;                         /* running child, or 0 */
    char data_dir[S_SUPPORT_PATH_MAX]; /* --data-dir */
    char ready[S_SUPPORT_PATH_MAX];    /* --ready-file */
    char log[S_SUPPORT_PATH_MAX];      /* output of every run, appended */
    char endpoint[256];                /* bound endpoint ("" before the first start) */
} s_server_t;

/* p, not running, with files <name>.data, <name>.ready, <name>.log in the scratch folder. */
static inline void s_server_init(s_server_t *p, const char *name)
{
    memset(p, 0, sizeof *p);
    char file[128];
    snprintf(file, sizeof file, "%s.data", name);
    s_scratch_path(p->data_dir, file);
    snprintf(file, sizeof file, "%s.ready", name);
    s_scratch_path(p->ready, file);
    snprintf(file, sizeof file, "%s.log", name);
    s_scratch_path(p->log, file);
}

/*
 * A TCP port on 127.0.0.1 that is free now, below the kernel's ephemeral range
 * (32768 and up): a server restarted on a port the kernel picked ("*") can
 * find it taken as the local port of some other connection, so processes that
 * must come back on the same endpoint get their port from here. Starts at a
 * point derived from the pid, so parallel tests try different ports.
 */
static inline int s_free_port(void)
{
    static unsigned next;
    if (next == 0)
        next = (unsigned)getpid() * 7919u;
    for (int tries = 0; tries < 4000; tries++) {
        int port = 20000 + (int)(next++ % 12000u);
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0)
            return -1;
        struct sockaddr_in a;
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        a.sin_port = htons((uint16_t)port);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
        close(fd);
        if (ok)
            return port;
    }
    return -1;
}

#endif
