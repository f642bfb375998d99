/*
 * test_bench_cli.c - bin/shoal-bench as a user runs it: `gen` writes the three
 * files with the right shapes and an exact ground truth, is reproducible from
 * its seed, and rejects bad usage naming the option; `distances` runs.
 *
 * The binary comes from $SHOAL_BIN (the Makefile sets it to the bin/ folder of
 * the build under test; default "bin"); scratch folders are made under
 * $SHOAL_TMP (default /tmp) and removed afterwards.
 */
#include "common/datagen.h"
#include "common/distance.h"
#include "common/groundtruth.h"
#include "common/vecfile.h"
#include "tests/test_support.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define S_PATH_MAX 1024

/* The scratch folder of the running test. */
static char s_tmp[S_PATH_MAX];

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */
/* ------------------------------------------------------------------------ */

static void s_make_tmp(void)
{
    const char *root = getenv("SHOAL_TMP");
    if (!root || !*root)
        root = "/tmp";
    mkdir(root, 0777); /* the Makefile creates it; this is for manual runs */
    snprintf(s_tmp, sizeof s_tmp, "%s/test_bench_cli.XXXXXX", root);
    cr_assert_not_null(mkdtemp(s_tmp), "mkdtemp under %s failed", root);
}

static void s_cleanup_tmp(void)
{
    if (s_tmp[0])
        s_remove_tree(s_tmp);
    s_tmp[0] = '\0';
}

/* "<s_tmp>/<name>" into out (S_PATH_MAX bytes). */
static const char *s_tmp_path(char *out, const char *name)
{
    return s_join(out, s_tmp, name);
}

/* A whole file as a NUL-terminated string (the caller frees it); *len gets its size. */
static char *s_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    cr_assert_geq(size, 0);
    fseek(f, 0, SEEK_SET);
    char *data = malloc((size_t)size + 1);
    cr_assert_not_null(data);
    cr_assert_eq(fread(data, 1, (size_t)size, f), (size_t)size);
    data[size] = '\0';
    fclose(f);
    if (len)
        *len = (size_t)size;
    return data;
}

typedef struct {
    int status; /* exit code */
    char *out;  /* everything written to stdout (caller frees) */
    char *err;  /* everything written to stderr (caller frees) */
} run_result_t;

static void s_result_free(run_result_t *r)
{
    free(r->out);
    free(r->err);
    r->out = r->err = NULL;
}

/*
 * Runs shoal-bench with the given arguments (NULL-terminated, without the
 * program name) and waits for it; stdout and stderr go through files.
 */
static run_result_t s_run_bench(const char *const *args)
{
    const char *bin_dir = getenv("SHOAL_BIN");
    if (!bin_dir || !*bin_dir)
        bin_dir = "bin";
    char bin[S_PATH_MAX], out_path[S_PATH_MAX], err_path[S_PATH_MAX];
    s_join(bin, bin_dir, "shoal-bench");
    s_tmp_path(out_path, "stdout.txt");
    s_tmp_path(err_path, "stderr.txt");
    cr_assert(access(bin, X_OK) == 0, "%s is not an executable (set SHOAL_BIN)", bin);

    char *argv[64];
    char *head[] = {bin};
    s_argv_fill(argv, 64, head, 1, args);

    posix_spawn_file_actions_t actions;
    cr_assert_eq(posix_spawn_file_actions_init(&actions), 0);
    posix_spawn_file_actions_addopen(&actions, 1, out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&actions, 2, err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    pid_t pid;
    int rc = posix_spawn(&pid, bin, &actions, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    cr_assert_eq(rc, 0, "posix_spawn %s: %s", bin, strerror(rc));

    int wstatus;
    cr_assert_eq(waitpid(pid, &wstatus, 0), pid);
    cr_assert(WIFEXITED(wstatus), "shoal-bench %s died by signal %d", args[0],
              WIFSIGNALED(wstatus) ? WTERMSIG(wstatus) : 0);
    run_result_t r = {.status = WEXITSTATUS(wstatus)};
    r.out = s_read_file(out_path, NULL);
    r.err = s_read_file(err_path, NULL);
    unlink(out_path);
    unlink(err_path);
    return r;
}

/* Runs `shoal-bench gen` with the standard small data set into dir, plus extra args. */
static void s_gen_ok(const char *dir, const char *seed, const char *metric)
{
    const char *args[] = {"gen", "--n",    "2000", "--dim",    "24",   "--queries", "40", "--k",
                          "10",  "--seed", seed,   "--metric", metric, "--out",     dir,  NULL};
    run_result_t r = s_run_bench(args);
    cr_assert_eq(r.status, 0, "gen failed (%d): %s", r.status, r.err);
    char want[128];
    snprintf(want, sizeof want, "n=2000 dim=24 queries=40 k=10 metric=%s seed=%s ", metric, seed);
    cr_assert(strstr(r.out, want) != NULL, "stdout \"%s\" lacks \"%s\"", r.out, want);
    cr_assert(strstr(r.out, " gen_s=") && strstr(r.out, " gt_s="), "%s", r.out);
    char want_out[S_PATH_MAX + 8];
    snprintf(want_out, sizeof want_out, "out=%s\n", dir);
    cr_assert(strstr(r.out, want_out) != NULL, "stdout \"%s\" lacks \"%s\"", r.out, want_out);
    s_result_free(&r);
}

static float *s_load_f32(const char *dir, const char *name, size_t *n, size_t *dim)
{
    char path[S_PATH_MAX];
    s_join(path, dir, name);
    shoal_err_t err;
    float *v = vecfile_load_f32(path, n, dim, &err);
    cr_assert_not_null(v, "%s: %s", path, err.msg);
    return v;
}

static int32_t *s_load_i32(const char *dir, const char *name, size_t *n, size_t *dim)
{
    char path[S_PATH_MAX];
    s_join(path, dir, name);
    shoal_err_t err;
    int32_t *v = vecfile_load_i32(path, n, dim, &err);
    cr_assert_not_null(v, "%s: %s", path, err.msg);
    return v;
}

/* The files of dir: right shapes, and a ground truth equal to gt_knn's. */
static void s_check_files(const char *dir, shoal_metric_t metric)
{
    size_t n, dim, nq, qdim, ngt, k;
    float *base = s_load_f32(dir, "base.fvecs", &n, &dim);
    float *queries = s_load_f32(dir, "query.fvecs", &nq, &qdim);
    int32_t *truth = s_load_i32(dir, "groundtruth.ivecs", &ngt, &k);
    cr_assert(n == 2000 && dim == 24, "base is %zu x %zu", n, dim);
    cr_assert(nq == 40 && qdim == 24, "queries are %zu x %zu", nq, qdim);
    cr_assert(ngt == 40 && k == 10, "ground truth is %zu x %zu", ngt, k);

    uint64_t ids[40 * 10];
    shoal_err_t err;
    cr_assert_eq(gt_knn(base, n, queries, nq, dim, metric, k, 1, ids, NULL, &err), SHOAL_OK, "%s",
                 err.msg);
    for (size_t i = 0; i < nq * k; i++)
        cr_assert_eq((uint64_t)truth[i], ids[i], "ground truth entry %zu: file %d, exact %llu", i,
                     truth[i], (unsigned long long)ids[i]);
    free(base);
    free(queries);
    free(truth);
}

static int s_files_equal(const char *a, const char *b)
{
    size_t la, lb;
    char *da = s_read_file(a, &la);
    char *db = s_read_file(b, &lb);
    int equal = la == lb && memcmp(da, db, la) == 0;
    free(da);
    free(db);
    return equal;
}

/* ------------------------------------------------------------------------ */
/* gen                                                                      */
/* ------------------------------------------------------------------------ */

TestSuite(bench_cli, .init = s_make_tmp, .fini = s_cleanup_tmp);

Test(bench_cli, gen_writes_exact_ground_truth)
{
    char dir[S_PATH_MAX];
    s_tmp_path(dir, "a/b/c"); /* folders are created as needed */
    s_gen_ok(dir, "7", "l2");
    s_check_files(dir, SHOAL_METRIC_L2);

    /* The base is datagen's base stream for the same seed and dimension. */
    size_t n, dim;
    float *base = s_load_f32(dir, "base.fvecs", &n, &dim);
    datagen_params_t p = {.dim = 24, .seed = 7};
    datagen_t *gen = datagen_new(&p, NULL);
    cr_assert_not_null(gen);
    float *want = malloc(2000 * 24 * sizeof(float));
    cr_assert_not_null(want);
    datagen_fill(gen, DATAGEN_STREAM_BASE, 0, 2000, want);
    cr_assert(memcmp(base, want, 2000 * 24 * sizeof(float)) == 0);
    free(want);
    free(base);
    datagen_destroy(&gen);
}

Test(bench_cli, gen_is_reproducible)
{
    const char *names[] = {"base.fvecs", "query.fvecs", "groundtruth.ivecs"};
    char one[S_PATH_MAX], two[S_PATH_MAX], other[S_PATH_MAX];
    s_gen_ok(s_tmp_path(one, "one"), "7", "l2");
    s_gen_ok(s_tmp_path(two, "two"), "7", "l2");
    s_gen_ok(s_tmp_path(other, "other"), "8", "l2");
    char a[S_PATH_MAX], b[S_PATH_MAX];
    for (size_t i = 0; i < 3; i++)
        cr_assert(s_files_equal(s_join(a, one, names[i]), s_join(b, two, names[i])),
                  "%s differs between two runs with seed 7", names[i]);
    cr_assert(!s_files_equal(s_join(a, one, "base.fvecs"), s_join(b, other, "base.fvecs")),
              "seeds 7 and 8 gave the same base");

    /* Writing into an existing folder replaces the files with the same bytes. */
    s_gen_ok(one, "7", "l2");
    cr_assert(
        s_files_equal(s_join(a, one, "groundtruth.ivecs"), s_join(b, two, "groundtruth.ivecs")));
}

Test(bench_cli, gen_cosine_and_ip)
{
    char dir[S_PATH_MAX];
    s_gen_ok(s_tmp_path(dir, "cos"), "3", "cosine");
    s_check_files(dir, SHOAL_METRIC_COSINE);
    s_gen_ok(s_tmp_path(dir, "ip"), "3", "ip");
    s_check_files(dir, SHOAL_METRIC_IP);
}

Test(bench_cli, gen_normalize_and_options)
{
    char dir[S_PATH_MAX];
    s_tmp_path(dir, "norm");
    const char *args[] = {"gen",       "--n",         "300",        "--dim", "16",
                          "--queries", "5",           "--k",        "3",     "--seed",
                          "1",         "--normalize", "--clusters", "7",     "--intrinsic-dim",
                          "4",         "--threads",   "2",          "--out", dir,
                          NULL};
    run_result_t r = s_run_bench(args);
    cr_assert_eq(r.status, 0, "%s", r.err);
    s_result_free(&r);
    size_t n, dim;
    float *base = s_load_f32(dir, "base.fvecs", &n, &dim);
    cr_assert(n == 300 && dim == 16);
    for (size_t i = 0; i < n; i++) {
        double sum = 0.0;
        for (size_t d = 0; d < dim; d++)
            sum += (double)base[i * dim + d] * base[i * dim + d];
        cr_assert(fabs(sum - 1.0) < 1e-5, "row %zu has squared norm %.8f", i, sum);
    }
    free(base);
}

/* Runs gen with args, expecting exit code `status` and `needle` on stderr. */
static void s_gen_fails(const char *const *args, int status, const char *needle)
{
    run_result_t r = s_run_bench(args);
    cr_assert_eq(r.status, status, "%s %s: exit %d, stderr: %s", args[1], args[2], r.status, r.err);
    cr_assert(strstr(r.err, needle) != NULL, "stderr \"%s\" does not mention %s", r.err, needle);
    /* One line: a message, not a dump. */
    char *nl = strchr(r.err, '\n');
    cr_assert(nl && nl[1] == '\0', "stderr is not one line: \"%s\"", r.err);
    s_result_free(&r);
}

Test(bench_cli, gen_bad_usage)
{
    char dir[S_PATH_MAX];
    s_tmp_path(dir, "bad");
#define S_COMMON "--dim", "24", "--queries", "40", "--seed", "7"
    {
        const char *a[] = {"gen", "--n", "2000", "--k", "10", S_COMMON, NULL};
        s_gen_fails(a, 2, "--out");
    }
    {
        const char *a[] = {"gen", "--n", "2000", "--k", "0", S_COMMON, "--out", dir, NULL};
        s_gen_fails(a, 2, "--k");
    }
    {
        const char *a[] = {"gen", "--n", "2000", "--k", "3000", S_COMMON, "--out", dir, NULL};
        s_gen_fails(a, 2, "--k");
    }
    {
        const char *a[] = {"gen", "--n",    "2000",  "--k", "10", "--metric",
                           "foo", S_COMMON, "--out", dir,   NULL};
        s_gen_fails(a, 2, "--metric");
    }
    {
        const char *a[] = {"gen", "--n", "abc", "--k", "10", S_COMMON, "--out", dir, NULL};
        s_gen_fails(a, 2, "--n");
    }
    {
        const char *a[] = {"gen",   "--n", "2000",    "--k", "10", S_COMMON,
                           "--out", dir,   "--bogus", "1",   NULL};
        s_gen_fails(a, 2, "--bogus");
    }
    {
        const char *a[] = {"gen", "--n", "2000", "--k", "10", S_COMMON, "--out", NULL};
        s_gen_fails(a, 2, "--out");
    }
    {
        const char *a[] = {"gen",       "--n", "2000",   "--k", "10",    "--dim", "0",
                           "--queries", "4",   "--seed", "1",   "--out", dir,     NULL};
        s_gen_fails(a, 2, "--dim");
    }
#undef S_COMMON
    /* Nothing was written by the failed runs. */
    struct stat st;
    cr_assert_neq(stat(dir, &st), 0);

    /* A runtime failure: the output folder cannot be made (a file is in the way). */
    char file[S_PATH_MAX], under[S_PATH_MAX];
    FILE *f = fopen(s_tmp_path(file, "plain"), "w");
    cr_assert_not_null(f);
    fclose(f);
    s_join(under, file, "sub");
    const char *a[] = {"gen", "--n", "100",    "--dim", "4",     "--queries", "2",
                       "--k", "1",   "--seed", "1",     "--out", under,       NULL};
    s_gen_fails(a, 1, "shoal-bench gen: ");
}

Test(bench_cli, gen_help)
{
    const char *args[] = {"gen", "--help", NULL};
    run_result_t r = s_run_bench(args);
    cr_assert_eq(r.status, 0);
    cr_assert(strstr(r.out, "usage: shoal-bench gen") != NULL, "%s", r.out);
    cr_assert(strstr(r.out, "--intrinsic-dim") != NULL);
    s_result_free(&r);
}

/* ------------------------------------------------------------------------ */
/* distances                                                                */
/* ------------------------------------------------------------------------ */

Test(bench_cli, distances_smoke)
{
    const char *args[] = {"distances", "--dim", "16", "--n", "1000", "--reps", "1", NULL};
    run_result_t r = s_run_bench(args);
    cr_assert_eq(r.status, 0, "distances failed (%d): %s", r.status, r.err);
    cr_assert(strstr(r.out, "impl=scalar") != NULL, "stdout: %s", r.out);
    s_result_free(&r);
}
