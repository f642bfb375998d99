/*
 * test_diskfull.c - bin/shoal-shard on a disk that fills up: a real 16 MiB
 * tmpfs as the data dir's filesystem, a file of our own taking most of it.
 *
 * What must hold (issue 9, bug 3): inserts are refused with SHOAL_EIO and a
 * message naming --min-free-bytes before RocksDB meets a full disk; the
 * process stays up and keeps answering searches, gets and stats; freeing
 * space (deleting our filler file) lets writes through again without a
 * restart; after kill -9 on a disk under the reserve the shard starts again
 * (read-only until space is back) and serves every acknowledged row.
 *
 * Mounting needs root (CAP_SYS_ADMIN); without it the test skips, saying so.
 * The mount is lazily detached in the suite's fini, after the children are
 * killed, so a failing test leaves no mount behind. No timing is asserted.
 *
 * Environment: SHOAL_BIN (folder of shoal-shard), SHOAL_TMP.
 */
#include "client/shoal_client.h"
#include "net/wire.h"
#include "tests/test_support.h"

#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#define S_DISK_BYTES  (16u << 20) /* the tmpfs */
#define S_RESERVE     (4u << 20)  /* --min-free-bytes */
#define S_DIM         64
#define S_BATCH       32 /* rows per insert: 8 KiB of floats */
#define S_MAX_BATCHES 2000
#define S_TIMEOUT_MS  20000
#define S_WAIT_S      60.0

static char s_mnt[S_SUPPORT_PATH_MAX]; /* the tmpfs, or "" when not mounted */

static void s_setup(void)
{
    s_process_suite_init("test_diskfull");
    s_mnt[0] = 0;
}

static void s_teardown(void)
{
    s_children_kill();
    if (s_mnt[0])
        umount2(s_mnt, MNT_DETACH);
    s_mnt[0] = 0;
    s_scratch_remove();
}

TestSuite(diskfull, .init = s_setup, .fini = s_teardown, .timeout = 300);

/* Mounts a tmpfs of S_DISK_BYTES in the scratch folder, or skips the test. */
static void s_mount(void)
{
    char dir[S_SUPPORT_PATH_MAX];
    s_scratch_path(dir, "disk");
    cr_assert(mkdir(dir, 0755) == 0, "mkdir %s: %s", dir, strerror(errno));
    char opts[64];
    snprintf(opts, sizeof opts, "size=%u", S_DISK_BYTES);
    if (mount("tmpfs", dir, "tmpfs", 0, opts) != 0)
        cr_skip_test("cannot mount a tmpfs on %s (%s): needs root; disk-full checks skipped", dir,
                     strerror(errno));
    snprintf(s_mnt, sizeof s_mnt, "%s", dir);
}

static uint64_t s_free(void)
{
    struct statvfs sv;
    cr_assert_eq(statvfs(s_mnt, &sv), 0);
    return (uint64_t)sv.f_bavail * sv.f_frsize;
}

/* Creates path and writes to it until leave bytes (or fewer) are free. */
static void s_fill(const char *path, uint64_t leave)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
    static char block[64 << 10];
    memset(block, 0x5a, sizeof block);
    for (uint64_t f = s_free(); f > leave; f = s_free()) {
        size_t want = f - leave < sizeof block ? (size_t)(f - leave) : sizeof block;
        ssize_t w = write(fd, block, want);
        if (w <= 0)
            break; /* full: as filled as it gets */
    }
    close(fd);
}

static void s_start(s_server_t *sh)
{
    char bin[S_SUPPORT_PATH_MAX];
    s_bin(bin, "shoal-shard");
    char reserve[32];
    snprintf(reserve, sizeof reserve, "%u", S_RESERVE);
    char *argv[] = {bin,
                    "--listen",
                    "tcp://127.0.0.1:*",
                    "--data-dir",
                    sh->data_dir,
                    "--ready-file",
                    sh->ready,
                    "--threads",
                    "2",
                    "--min-free-bytes",
                    reserve,
                    "--checkpoint-secs",
                    "3600",
                    NULL};
    sh->pid = s_server_start(argv, sh->ready, sh->log, S_WAIT_S, sh->endpoint,
                             sizeof sh->endpoint);
}

/* The rows of ids first..first+n-1 (value pattern from the id). */
static float *s_rows(uint64_t first, size_t n)
{
    float *v = malloc(n * S_DIM * sizeof *v);
    cr_assert_not_null(v);
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < S_DIM; j++)
            v[i * S_DIM + j] = (float)((first + i) % 997) * 0.01f + (float)j * 0.001f;
    return v;
}

/* Inserts batch b (ids b*S_BATCH...); returns the reply code, msg its message. */
static int s_insert_batch(shoal_client_t *c, size_t b, char *msg, size_t cap)
{
    uint64_t ids[S_BATCH];
    for (size_t i = 0; i < S_BATCH; i++)
        ids[i] = b * S_BATCH + i;
    float *v = s_rows(ids[0], S_BATCH);
    shoal_err_t err;
    shoal_err_clear(&err);
    int rc = shoal_client_insert(c, "f", ids, v, S_BATCH, S_DIM, NULL, &err);
    snprintf(msg, cap, "%s", err.msg);
    free(v);
    return rc;
}


/* Every row of batches 0..nbatches-1 is served: get returns it, exact search finds it. */
static void s_assert_served(shoal_client_t *c, size_t nbatches)
{
    size_t n = nbatches * S_BATCH;
    uint64_t *ids = malloc(n * sizeof *ids);
    cr_assert_not_null(ids);
    for (size_t i = 0; i < n; i++)
        ids[i] = i;
    uint8_t *found = NULL;
    float *vecs = NULL;
    size_t dim = 0;
    shoal_err_t err;
    cr_assert_eq(shoal_client_get(c, "f", ids, n, &found, &vecs, &dim, &err), 0, "get: %s",
                 err.msg);
    float *want = s_rows(0, n);
    for (size_t i = 0; i < n; i++) {
        cr_assert(found[i], "id %zu is missing", i);
        cr_assert(!memcmp(vecs + i * S_DIM, want + i * S_DIM, S_DIM * sizeof(float)),
                  "id %zu differs", i);
    }
    /* Ids equal mod 997 share a vector: search one per residue, k 1, exact. */
    shoal_search_opts_t opts = {.k = 1, .mode = WIRE_MODE_EXACT};
    uint64_t *got = NULL;
    float *dists = NULL;
    size_t nq = n < 64 ? n : 64;
    cr_assert_eq(shoal_client_search(c, "f", want, nq, S_DIM, &opts, &got, &dists, NULL, &err), 0,
                 "search: %s", err.msg);
    for (size_t i = 0; i < nq; i++)
        cr_assert_eq(got[i] % 997, i % 997, "query %zu found id %lu", i, (unsigned long)got[i]);
    cr_assert_eq(s_stat(c, "collections.f.count"), (double)n);
    free(got);
    free(dists);
    free(want);
    free(found);
    free(vecs);
    free(ids);
}

Test(diskfull, writes_stop_before_the_disk_is_full_and_resume_when_space_is_back)
{
    s_mount();
    s_server_t sh;
    s_server_init(&sh, "shard");
    s_join(sh.data_dir, s_mnt, "data");
    char filler[S_SUPPORT_PATH_MAX];
    s_join(filler, s_mnt, "filler");

    s_start(&sh);
    shoal_err_t err;
    shoal_client_t *c = shoal_client_new(sh.endpoint, S_TIMEOUT_MS, &err);
    cr_assert_not_null(c, "%s", err.msg);
    cr_assert_eq(shoal_client_create(c, "f", S_DIM, SHOAL_METRIC_L2, 16, 100, &err), 0, "%s",
                 err.msg);

    /* Leave room for a few MiB of rows above the reserve, then insert until refused. */
    s_fill(filler, S_RESERVE + (5u << 20));
    char msg[SHOAL_ERR_MSG_MAX];
    size_t b = 0;
    int rc = 0;
    for (; b < S_MAX_BATCHES; b++)
        if ((rc = s_insert_batch(c, b, msg, sizeof msg)) != 0)
            break;
    cr_assert_lt(b, S_MAX_BATCHES, "inserts never refused; %llu bytes free",
                 (unsigned long long)s_free());
    cr_assert_gt(b, 0, "the first insert was refused: %s", msg);
    cr_assert_eq(rc, SHOAL_EIO, "refused with %d: %s", rc, msg);
    cr_assert(strstr(msg, "--min-free-bytes") && strstr(msg, "refused"), "%s", msg);
    cr_log_info("%zu batches of %d rows in before the refusal; %llu bytes free", b, S_BATCH,
                (unsigned long long)s_free());

    /* Alive, and reads answer. */
    cr_assert_eq(kill(sh.pid, 0), 0, "the shard is gone");
    s_assert_served(c, b);
    cr_assert_geq(s_stat(c, "writes_refused_disk"), 1);
    cr_assert_eq(s_stat(c, "min_free_bytes"), (double)S_RESERVE);
    cr_assert_eq(s_stat(c, "read_only"), 0);

    /* Space back: the refused batch goes in, no restart. */
    cr_assert_eq(unlink(filler), 0);
    rc = s_insert_batch(c, b, msg, sizeof msg);
    cr_assert_eq(rc, 0, "insert after freeing space: %s", msg);
    b++;
    s_assert_served(c, b);

    /* Under the reserve again, then kill -9: the shard still starts. */
    s_fill(filler, S_RESERVE - (1u << 20));
    rc = s_insert_batch(c, b, msg, sizeof msg);
    cr_assert_eq(rc, SHOAL_EIO, "insert under the reserve: %d %s", rc, msg);
    shoal_client_destroy(&c);
    int status = s_server_signal(sh.pid, SIGKILL, S_WAIT_S, sh.log);
    sh.pid = 0;
    cr_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

    s_start(&sh);
    c = shoal_client_new(sh.endpoint, S_TIMEOUT_MS, &err);
    cr_assert_not_null(c, "%s", err.msg);
    cr_assert_eq(s_stat(c, "read_only"), 1);
    s_assert_served(c, b);
    rc = s_insert_batch(c, b, msg, sizeof msg);
    cr_assert_eq(rc, SHOAL_EIO, "insert on the restarted, full shard: %d %s", rc, msg);

    /* Space back once more: writable again without a restart. */
    cr_assert_eq(unlink(filler), 0);
    rc = s_insert_batch(c, b, msg, sizeof msg);
    cr_assert_eq(rc, 0, "insert after freeing space: %s", msg);
    b++;
    cr_assert_eq(s_stat(c, "read_only"), 0);
    s_assert_served(c, b);
    shoal_client_destroy(&c);

    status = s_server_signal(sh.pid, SIGTERM, S_WAIT_S, sh.log);
    sh.pid = 0;
    char *log = s_slurp(sh.log);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "exit status 0x%x:\n%s", status,
              log);
    cr_assert(!strstr(log, "Assertion"), "%s", log);
    free(log);
}
