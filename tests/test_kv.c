/*
 * test_kv.c - the RocksDB wrapper: puts and gets, atomic batches with
 * deletes and range deletes, prefix iteration (bounds, seek, a prefix
 * ending in 0xff, the snapshot it reads), persistence across a reopen, and
 * RocksDB errors turned into shoal codes with the directory named.
 *
 * Databases live in mkdtemp directories under $SHOAL_TMP (or /tmp), removed
 * after each test.
 */
#define _XOPEN_SOURCE 700 /* nftw */

#include "net/kv.h"

#include <criterion/criterion.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static char s_dir[1024];

static void s_setup(void)
{
    const char *base = getenv("SHOAL_TMP");
    if (!base || !*base)
        base = "/tmp";
    mkdir(base, 0755);
    snprintf(s_dir, sizeof s_dir, "%s/test_kv-XXXXXX", base);
    cr_assert_not_null(mkdtemp(s_dir));
}

static int s_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void s_teardown(void)
{
    nftw(s_dir, s_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static kv_t *s_open(void)
{
    shoal_err_t err;
    kv_t *kv = kv_open(s_dir, 1, &err);
    cr_assert_not_null(kv, "kv_open: %s", err.msg);
    return kv;
}

/* Keys with the prefix, concatenated with ',' into buf. */
static void s_list(kv_t *kv, const char *prefix, size_t plen, char *buf, size_t cap)
{
    shoal_err_t err;
    kv_iter_t *it = kv_iter_new(kv, prefix, plen, &err);
    cr_assert_not_null(it);
    buf[0] = 0;
    for (; kv_iter_valid(it); kv_iter_next(it)) {
        size_t klen = 0;
        const char *k = kv_iter_key(it, &klen);
        size_t used = strlen(buf);
        snprintf(buf + used, cap - used, "%s%.*s", used ? "," : "", (int)klen, k);
    }
    cr_assert_eq(kv_iter_status(it, &err), 0);
    kv_iter_destroy(&it);
    cr_assert_null(it);
}

TestSuite(kv, .init = s_setup, .fini = s_teardown);

Test(kv, put_get_and_absent)
{
    kv_t *kv = s_open();
    shoal_err_t err;
    cr_assert_eq(kv_put(kv, "a", 1, "one", 3, 1, &err), 0);
    cr_assert_eq(kv_put(kv, "e", 1, "", 0, 0, &err), 0);
    void *val = NULL;
    size_t vlen = 0;
    cr_assert_eq(kv_get(kv, "a", 1, &val, &vlen, &err), 0);
    cr_assert_eq(vlen, 3);
    cr_assert_eq(memcmp(val, "one", 3), 0);
    free(val);
    cr_assert_eq(kv_get(kv, "e", 1, &val, &vlen, &err), 0);
    cr_assert_eq(vlen, 0);
    cr_assert_not_null(val);
    free(val);
    cr_assert_eq(kv_get(kv, "zz", 2, &val, &vlen, &err), SHOAL_ENOTFOUND);
    cr_assert_null(val);
    cr_assert_str_eq(kv_dir(kv), s_dir);
    cr_assert_eq(kv_flush(kv, &err), 0, "%s", err.msg);
    kv_close(&kv);
    cr_assert_null(kv);
    kv_close(&kv); /* NULL-safe */

    /* Still there after a reopen. */
    kv = s_open();
    cr_assert_eq(kv_get(kv, "a", 1, &val, &vlen, &err), 0);
    cr_assert_eq(memcmp(val, "one", 3), 0);
    free(val);
    kv_close(&kv);
}

Test(kv, batches_apply_together)
{
    kv_t *kv = s_open();
    shoal_err_t err;
    kv_batch_t *b = kv_batch_new();
    cr_assert_not_null(b);
    const char *keys[] = {"p/1", "p/2", "p/3", "p/4", "q/1"};
    for (int i = 0; i < 5; i++)
        kv_batch_put(b, keys[i], 3, "v", 1);
    cr_assert_eq(kv_batch_count(b), 5);
    cr_assert_gt(kv_batch_bytes(b), 15);
    cr_assert_eq(kv_write(kv, b, 1, &err), 0);
    kv_batch_clear(b);
    cr_assert_eq(kv_batch_count(b), 0);

    /* Range [p/2, p/4) and one key, in one write. */
    kv_batch_delete_range(b, "p/2", 3, "p/4", 3);
    kv_batch_delete(b, "q/1", 3);
    kv_batch_put(b, "q/2", 3, "w", 1);
    cr_assert_eq(kv_write(kv, b, 0, &err), 0);
    kv_batch_destroy(&b);
    cr_assert_null(b);
    char buf[256];
    s_list(kv, "", 0, buf, sizeof buf);
    cr_assert_str_eq(buf, "p/1,p/4,q/2");
    kv_close(&kv);
}

Test(kv, prefix_iteration)
{
    kv_t *kv = s_open();
    shoal_err_t err;
    const char *keys[] = {"a", "ab", "ab\x01", "abc", "abd", "ac", "b"};
    for (int i = 0; i < 7; i++)
        cr_assert_eq(kv_put(kv, keys[i], strlen(keys[i]), keys[i], strlen(keys[i]), 0, &err), 0);
    char buf[256];
    s_list(kv, "ab", 2, buf, sizeof buf);
    cr_assert_str_eq(buf, "ab,ab\x01,abc,abd");
    s_list(kv, "abc", 3, buf, sizeof buf);
    cr_assert_str_eq(buf, "abc");
    s_list(kv, "x", 1, buf, sizeof buf);
    cr_assert_str_eq(buf, "");

    /* A prefix ending in 0xff has no simple upper bound. */
    const char ff[3] = {'z', (char)0xff, 0};
    const char ff2[3] = {'z', (char)0xff, 'q'};
    cr_assert_eq(kv_put(kv, ff, 3, "1", 1, 0, &err), 0);
    cr_assert_eq(kv_put(kv, ff2, 3, "2", 1, 0, &err), 0);
    cr_assert_eq(kv_put(kv, "z\xff\xff", 3, "3", 1, 0, &err), 0);
    cr_assert_eq(kv_put(kv, "\xff", 1, "4", 1, 0, &err), 0);
    kv_iter_t *it = kv_iter_new(kv, ff, 2, &err);
    int n = 0;
    for (; kv_iter_valid(it); kv_iter_next(it))
        n++;
    cr_assert_eq(n, 3);
    kv_iter_destroy(&it);

    /* Seek within the prefix; the iterator reads the snapshot it was made on. */
    it = kv_iter_new(kv, "ab", 2, &err);
    cr_assert_eq(kv_put(kv, "abb", 3, "late", 4, 0, &err), 0);
    kv_iter_seek(it, "abb", 3);
    size_t klen = 0, vlen = 0;
    cr_assert(kv_iter_valid(it));
    const char *k = kv_iter_key(it, &klen);
    const char *v = kv_iter_value(it, &vlen);
    cr_assert_eq(klen, 3);
    cr_assert_eq(memcmp(k, "abc", 3), 0);
    cr_assert_eq(memcmp(v, "abc", 3), 0);
    kv_iter_seek(it, "ac", 2);
    cr_assert_not(kv_iter_valid(it));
    cr_assert_eq(kv_iter_status(it, &err), 0);
    kv_iter_destroy(&it);
    kv_close(&kv);
}

Test(kv, errors_are_shoal_codes)
{
    shoal_err_t err;
    char missing[1100];
    snprintf(missing, sizeof missing, "%s/none", s_dir);
    cr_assert_null(kv_open(missing, 0, &err));
    cr_assert_eq(err.code, SHOAL_ENOTFOUND, "%s", err.msg);
    cr_assert(strstr(err.msg, missing), "%s", err.msg);
    cr_assert_null(kv_open("", 1, &err));
    cr_assert_eq(err.code, SHOAL_EINVAL);

    /* A second open of a database in use fails on RocksDB's lock. */
    kv_t *kv = s_open();
    cr_assert_null(kv_open(s_dir, 1, &err));
    cr_assert_eq(err.code, SHOAL_EIO, "%s", err.msg);
    cr_assert(strstr(err.msg, "rocksdb open"), "%s", err.msg);
    kv_close(&kv);
}

Test(kv, read_only_open_reads_the_wal_and_writes_nothing)
{
    kv_t *kv = s_open();
    shoal_err_t err;
    cr_assert_eq(kv_put(kv, "a", 1, "one", 3, 1, &err), 0);
    cr_assert_eq(kv_is_read_only(kv), 0);
    kv_close(&kv); /* "a" only in the WAL: a read-only open replays it in memory */

    kv = kv_open_read_only(s_dir, &err);
    cr_assert_not_null(kv, "%s", err.msg);
    cr_assert_eq(kv_is_read_only(kv), 1);
    void *val = NULL;
    size_t vlen = 0;
    cr_assert_eq(kv_get(kv, "a", 1, &val, &vlen, &err), 0, "%s", err.msg);
    cr_assert_eq(vlen, 3);
    free(val);
    char buf[64];
    s_list(kv, "", 0, buf, sizeof buf);
    cr_assert_str_eq(buf, "a");
    int rc = kv_put(kv, "b", 1, "two", 3, 1, &err);
    cr_assert_eq(rc, SHOAL_EUNSUPPORTED, "%d: %s", rc, err.msg);
    kv_close(&kv);

    char missing[1100];
    snprintf(missing, sizeof missing, "%s/none", s_dir);
    cr_assert_null(kv_open_read_only(missing, &err));
    cr_assert(strstr(err.msg, "read-only") && strstr(err.msg, missing), "%s", err.msg);
}
