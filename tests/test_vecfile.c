/*
 * test_vecfile.c - vecfile: round trips, .npy reading, every malformed-file
 * error (code and message), writer atomicity, and the shared real datasets.
 *
 * Each test runs in its own process (Criterion) with a fresh temporary
 * directory under $SHOAL_TMP (or /tmp), removed when the test ends. The
 * dataset tests read $SHOAL_DATASETS (default ../shared/datasets) and skip,
 * saying why, where it is absent.
 */
#include <criterion/criterion.h>

#include "common/vecfile.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Fixture and helpers                                                      */
/* ------------------------------------------------------------------------ */

static char s_dir[1024];

static void s_setup(void)
{
    const char *base = getenv("SHOAL_TMP");
    if (!base || !*base)
        base = "/tmp";
    mkdir(base, 0755); /* the Makefile creates it; a direct run may not have */
    snprintf(s_dir, sizeof s_dir, "%s/test_vecfile.XXXXXX", base);
    cr_assert_not_null(mkdtemp(s_dir), "mkdtemp under %s: %s", base, strerror(errno));
}

/* The tests only create plain files directly in s_dir. */
static void s_teardown(void)
{
    DIR *d = opendir(s_dir);
    if (!d)
        return;
    struct dirent *e;
    char path[2048];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", s_dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(s_dir);
}

TestSuite(vecfile, .init = s_setup, .fini = s_teardown);

/* A path in the test directory; a few stay valid at once (rotating buffers). */
static const char *s_path(const char *name)
{
    static char bufs[8][1536];
    static unsigned next;
    char *p = bufs[next++ % 8];
    snprintf(p, sizeof bufs[0], "%s/%s", s_dir, name);
    return p;
}

static bool s_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static void s_write_bytes(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "fopen %s: %s", path, strerror(errno));
    if (len > 0)
        cr_assert_eq(fwrite(data, 1, len, f), len);
    cr_assert_eq(fclose(f), 0);
}

/* Reads a whole file into a malloc'd buffer; *len gets its size. */
static uint8_t *s_read_bytes(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "fopen %s: %s", path, strerror(errno));
    uint8_t *buf = NULL;
    size_t used = 0, cap = 0, n;
    do {
        if (used == cap) {
            cap = cap ? cap * 2 : 4096;
            buf = realloc(buf, cap);
            cr_assert_not_null(buf);
        }
        n = fread(buf + used, 1, cap - used, f);
        used += n;
    } while (n > 0);
    fclose(f);
    *len = used;
    return buf;
}

/* Appends one raw vecs record (any dim header, any payload) to a byte buffer. */
static size_t s_put_record(uint8_t *buf, size_t off, int32_t dim_header, const void *values,
                           size_t value_bytes)
{
    memcpy(buf + off, &dim_header, 4);
    memcpy(buf + off + 4, values, value_bytes);
    return off + 4 + value_bytes;
}

/*
 * Writes a .npy file by hand: magic, version major.0, the header length
 * (u16 for v1, u32 for v2/v3), the dict padded with spaces and ended with '\n'
 * so that the data starts at `data_off` (0: the next multiple of 64, as NumPy
 * does), then `data_len` bytes of data.
 */
static void s_write_npy(const char *path, unsigned major, const char *dict, size_t data_off,
                        const void *data, size_t data_len)
{
    size_t prefix = major == 1 ? 10 : 12;
    size_t min_total = prefix + strlen(dict) + 1;
    size_t total = data_off ? data_off : (min_total + 63) / 64 * 64;
    cr_assert_geq(total, min_total, "npy header does not fit in %zu bytes", total);
    size_t header_len = total - prefix;

    uint8_t *buf = calloc(1, total + data_len + 1);
    cr_assert_not_null(buf);
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (uint8_t)major;
    buf[7] = 0;
    buf[8] = (uint8_t)(header_len & 0xff);
    buf[9] = (uint8_t)(header_len >> 8);
    if (major != 1) {
        buf[10] = (uint8_t)(header_len >> 16);
        buf[11] = (uint8_t)(header_len >> 24);
    }
    memcpy(buf + prefix, dict, strlen(dict));
    memset(buf + prefix + strlen(dict), ' ', total - min_total);
    buf[total - 1] = '\n';
    if (data_len > 0)
        memcpy(buf + total, data, data_len);
    s_write_bytes(path, buf, total + data_len);
    free(buf);
}

/* n * dim floats with distinct, exactly representable values. */
static float *s_make_floats(size_t n, size_t dim)
{
    float *v = malloc(n * dim * sizeof *v);
    cr_assert_not_null(v);
    for (size_t i = 0; i < n * dim; i++)
        v[i] = (float)i * 0.25f - 100.0f;
    return v;
}

/* vecfile_open must fail with code, and the message name the file and hold `want`. */
static void s_expect_open_error(const char *name, int code, const char *want)
{
    shoal_err_t err;
    shoal_err_clear(&err);
    vecfile_t *vf = vecfile_open(s_path(name), &err);
    cr_assert_null(vf, "%s: open should fail", name);
    cr_assert_eq(err.code, code, "%s: code %d (%s), expected %d; message: %s", name, err.code,
                 shoal_errname(err.code), code, err.msg);
    cr_assert_not_null(strstr(err.msg, name), "message does not name %s: %s", name, err.msg);
    cr_assert_not_null(strstr(err.msg, want), "message lacks \"%s\": %s", want, err.msg);
}

/* ------------------------------------------------------------------------ */
/* Formats from names                                                       */
/* ------------------------------------------------------------------------ */

Test(vecfile, format_from_path)
{
    vecfile_format_t f;
    shoal_err_t err;
    cr_assert_eq(vecfile_format_from_path("a/b.fvecs", &f, &err), 0);
    cr_assert_eq(f, VECFILE_FVECS);
    cr_assert_eq(vecfile_format_from_path("gt.ivecs", &f, &err), 0);
    cr_assert_eq(f, VECFILE_IVECS);
    cr_assert_eq(vecfile_format_from_path("x.y.bvecs", &f, &err), 0);
    cr_assert_eq(f, VECFILE_BVECS);
    cr_assert_eq(vecfile_format_from_path("/data/emb.npy", &f, &err), 0);
    cr_assert_eq(f, VECFILE_NPY);

    cr_assert_eq(vecfile_format_from_path("base.csv", &f, &err), SHOAL_EINVAL);
    cr_assert_eq(err.code, SHOAL_EINVAL);
    cr_assert_not_null(strstr(err.msg, "base.csv"), "%s", err.msg);
    cr_assert_not_null(strstr(err.msg, ".fvecs"), "%s", err.msg);
    cr_assert_not_null(strstr(err.msg, ".npy"), "%s", err.msg);
    /* The extension belongs to the last path component only. */
    cr_assert_eq(vecfile_format_from_path("dir.fvecs/base", &f, &err), SHOAL_EINVAL);
    cr_assert_eq(vecfile_format_from_path("fvecs", &f, &err), SHOAL_EINVAL);
}

Test(vecfile, open_unknown_extension_and_missing_file)
{
    s_write_bytes(s_path("vectors.txt"), "1 2 3\n", 6);
    s_expect_open_error("vectors.txt", SHOAL_EINVAL, ".fvecs");
    s_expect_open_error("absent.fvecs", SHOAL_ENOTFOUND, "absent.fvecs");
}

/* ------------------------------------------------------------------------ */
/* Round trips                                                              */
/* ------------------------------------------------------------------------ */

Test(vecfile, fvecs_round_trip_in_appends_and_partial_reads)
{
    const size_t n = 23, dim = 17;
    float *v = s_make_floats(n, dim);
    const char *path = s_path("base.fvecs");
    shoal_err_t err;

    vecfile_writer_t *w = vecfile_writer_new(path, VECFILE_FVECS, dim, &err);
    cr_assert_not_null(w, "%s", err.msg);
    cr_assert_eq(vecfile_writer_append(w, v, 5, &err), 0, "%s", err.msg);
    cr_assert_eq(vecfile_writer_append(w, v + 5 * dim, 0, &err), 0, "%s", err.msg);
    cr_assert_eq(vecfile_writer_append(w, v + 5 * dim, 11, &err), 0, "%s", err.msg);
    cr_assert_eq(vecfile_writer_append(w, v + 16 * dim, 7, &err), 0, "%s", err.msg);
    cr_assert_not(s_exists(path), "the final name must not appear before close");
    cr_assert_eq(vecfile_writer_close(&w, &err), 0, "%s", err.msg);
    cr_assert_null(w);
    cr_assert(s_exists(path));
    cr_assert_not(s_exists(s_path("base.fvecs.tmp")), "tmp file left behind");

    size_t size;
    uint8_t *raw = s_read_bytes(path, &size);
    cr_assert_eq(size, n * (4 + dim * 4));
    int32_t header;
    memcpy(&header, raw + 4 + dim * 4, 4);
    cr_assert_eq(header, (int32_t)dim, "record 1 header");
    free(raw);

    vecfile_t *vf = vecfile_open(path, &err);
    cr_assert_not_null(vf, "%s", err.msg);
    cr_assert_eq(vecfile_count(vf), n);
    cr_assert_eq(vecfile_dim(vf), dim);
    cr_assert_eq(vecfile_format(vf), VECFILE_FVECS);
    cr_assert_str_eq(vecfile_path(vf), path);
    cr_assert_null(vecfile_contiguous_f32(vf), "vecs rows are not contiguous");
    cr_assert_eq(vecfile_check(vf, &err), 0, "%s", err.msg);

    float *out = calloc(n * dim, sizeof *out);
    cr_assert_eq(vecfile_read_f32(vf, 0, n, out, &err), 0, "%s", err.msg);
    cr_assert_arr_eq(out, v, n * dim * sizeof *out);

    /* Partial reads at several offsets, including the last row and an empty read. */
    size_t starts[] = {0, 3, 16, 22, 23};
    size_t counts[] = {1, 4, 7, 1, 0};
    for (size_t k = 0; k < sizeof starts / sizeof starts[0]; k++) {
        memset(out, 0, n * dim * sizeof *out);
        cr_assert_eq(vecfile_read_f32(vf, starts[k], counts[k], out, &err), 0, "%s", err.msg);
        cr_assert_arr_eq(out, v + starts[k] * dim, counts[k] * dim * sizeof *out,
                         "rows [%zu, +%zu)", starts[k], counts[k]);
    }
    vecfile_close(&vf);
    cr_assert_null(vf);
    vecfile_close(&vf); /* NULL-safe */

    /* The one-call writer produces the same bytes. */
    const char *path2 = s_path("again.fvecs");
    cr_assert_eq(vecfile_write_fvecs(path2, v, n, dim, &err), 0, "%s", err.msg);
    size_t size1, size2;
    uint8_t *a = s_read_bytes(path, &size1);
    uint8_t *b = s_read_bytes(path2, &size2);
    cr_assert_eq(size1, size2);
    cr_assert_arr_eq(a, b, size1);
    free(a);
    free(b);

    size_t ln, ld;
    float *loaded = vecfile_load_f32(path2, &ln, &ld, &err);
    cr_assert_not_null(loaded, "%s", err.msg);
    cr_assert_eq(ln, n);
    cr_assert_eq(ld, dim);
    cr_assert_arr_eq(loaded, v, n * dim * sizeof *loaded);
    free(loaded);
    free(out);
    free(v);
}

Test(vecfile, ivecs_round_trip)
{
    const size_t n = 9, dim = 5;
    int32_t ids[9 * 5];
    for (size_t i = 0; i < n * dim; i++)
        ids[i] = (int32_t)(i * 7919 % 10007) - (i == 3 ? 2147483647 : 0);
    const char *path = s_path("gt.ivecs");
    shoal_err_t err;

    vecfile_writer_t *w = vecfile_writer_new(path, VECFILE_IVECS, dim, &err);
    cr_assert_not_null(w, "%s", err.msg);
    cr_assert_eq(vecfile_writer_append(w, ids, 4, &err), 0, "%s", err.msg);
    cr_assert_eq(vecfile_writer_append(w, ids + 4 * dim, 5, &err), 0, "%s", err.msg);
    cr_assert_eq(vecfile_writer_close(&w, &err), 0, "%s", err.msg);

    vecfile_t *vf = vecfile_open(path, &err);
    cr_assert_not_null(vf, "%s", err.msg);
    cr_assert_eq(vecfile_count(vf), n);
    cr_assert_eq(vecfile_dim(vf), dim);
    cr_assert_eq(vecfile_format(vf), VECFILE_IVECS);
    cr_assert_null(vecfile_contiguous_f32(vf));
    int32_t out[9 * 5];
    cr_assert_eq(vecfile_read_i32(vf, 0, n, out, &err), 0, "%s", err.msg);
    cr_assert_arr_eq(out, ids, sizeof ids);
    cr_assert_eq(vecfile_read_i32(vf, 6, 2, out, &err), 0, "%s", err.msg);
    cr_assert_arr_eq(out, ids + 6 * dim, 2 * dim * sizeof *out);

    /* ids are not floats */
    float f[5];
    cr_assert_eq(vecfile_read_f32(vf, 0, 1, f, &err), SHOAL_EFORMAT);
    cr_assert_not_null(strstr(err.msg, "gt.ivecs"), "%s", err.msg);
    vecfile_close(&vf);

    const char *path2 = s_path("gt2.ivecs");
    cr_assert_eq(vecfile_write_ivecs(path2, ids, n, dim, &err), 0, "%s", err.msg);
    size_t ln, ld;
    int32_t *loaded = vecfile_load_i32(path2, &ln, &ld, &err);
    cr_assert_not_null(loaded, "%s", err.msg);
    cr_assert_eq(ln, n);
    cr_assert_eq(ld, dim);
    cr_assert_arr_eq(loaded, ids, sizeof ids);
    free(loaded);

    cr_assert_null(vecfile_load_f32(path2, &ln, &ld, &err), "load_f32 of ivecs must fail");
    cr_assert_eq(err.code, SHOAL_EFORMAT);
}

Test(vecfile, bvecs_round_trip_widens_bytes)
{
    const size_t n = 12, dim = 33;
    uint8_t bytes[12 * 33];
    for (size_t i = 0; i < n * dim; i++)
        bytes[i] = (uint8_t)(i * 37 + (i % 5 == 0 ? 255 : 0));
    bytes[0] = 0;
    bytes[1] = 255;
    const char *path = s_path("base.bvecs");
    shoal_err_t err;

    vecfile_writer_t *w = vecfile_writer_new(path, VECFILE_BVECS, dim, &err);
    cr_assert_not_null(w, "%s", err.msg);
    cr_assert_eq(vecfile_writer_append(w, bytes, 1, &err), 0, "%s", err.msg);
    cr_assert_eq(vecfile_writer_append(w, bytes + dim, n - 1, &err), 0, "%s", err.msg);
    cr_assert_eq(vecfile_writer_close(&w, &err), 0, "%s", err.msg);

    vecfile_t *vf = vecfile_open(path, &err);
    cr_assert_not_null(vf, "%s", err.msg);
    cr_assert_eq(vecfile_count(vf), n);
    cr_assert_eq(vecfile_dim(vf), dim);
    cr_assert_eq(vecfile_format(vf), VECFILE_BVECS);
    cr_assert_null(vecfile_contiguous_f32(vf));
    float out[12 * 33];
    cr_assert_eq(vecfile_read_f32(vf, 0, n, out, &err), 0, "%s", err.msg);
    for (size_t i = 0; i < n * dim; i++)
        cr_assert_eq(out[i], (float)bytes[i], "value %zu: %f vs %u", i, out[i], bytes[i]);
    cr_assert_eq(vecfile_read_f32(vf, 5, 3, out, &err), 0, "%s", err.msg);
    for (size_t i = 0; i < 3 * dim; i++)
        cr_assert_eq(out[i], (float)bytes[5 * dim + i]);
    int32_t ids[33];
    cr_assert_eq(vecfile_read_i32(vf, 0, 1, ids, &err), SHOAL_EFORMAT);
    vecfile_close(&vf);

    const char *path2 = s_path("again.bvecs");
    cr_assert_eq(vecfile_write_bvecs(path2, bytes, n, dim, &err), 0, "%s", err.msg);
    size_t ln, ld;
    float *loaded = vecfile_load_f32(path2, &ln, &ld, &err);
    cr_assert_not_null(loaded, "%s", err.msg);
    cr_assert_eq(ln, n);
    cr_assert_eq(ld, dim);
    for (size_t i = 0; i < n * dim; i++)
        cr_assert_eq(loaded[i], (float)bytes[i]);
    free(loaded);
}

/* ------------------------------------------------------------------------ */
/* .npy                                                                     */
/* ------------------------------------------------------------------------ */

/* Opens an npy file that must hold exactly v (n x dim) and checks all views. */
static void s_expect_npy(const char *path, const float *v, size_t n, size_t dim)
{
    shoal_err_t err;
    vecfile_t *vf = vecfile_open(path, &err);
    cr_assert_not_null(vf, "%s", err.msg);
    cr_assert_eq(vecfile_format(vf), VECFILE_NPY);
    cr_assert_eq(vecfile_count(vf), n);
    cr_assert_eq(vecfile_dim(vf), dim);
    cr_assert_eq(vecfile_check(vf, &err), 0, "%s", err.msg);

    const float *direct = vecfile_contiguous_f32(vf);
    cr_assert_not_null(direct, "npy data should be usable in place");
    cr_assert_arr_eq(direct, v, n * dim * sizeof *v);

    float *out = calloc(n * dim, sizeof *out);
    cr_assert_eq(vecfile_read_f32(vf, 0, n, out, &err), 0, "%s", err.msg);
    cr_assert_arr_eq(out, v, n * dim * sizeof *v);
    if (n > 2) {
        memset(out, 0, n * dim * sizeof *out);
        cr_assert_eq(vecfile_read_f32(vf, 1, n - 2, out, &err), 0, "%s", err.msg);
        cr_assert_arr_eq(out, v + dim, (n - 2) * dim * sizeof *v);
    }
    int32_t id;
    cr_assert_eq(vecfile_read_i32(vf, 0, 0, &id, &err), SHOAL_EFORMAT);
    free(out);
    vecfile_close(&vf);
}

Test(vecfile, npy_v1_read)
{
    const size_t n = 7, dim = 3;
    float *v = s_make_floats(n, dim);
    const char *path = s_path("emb.npy");
    s_write_npy(path, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (7, 3), }", 0, v,
                n * dim * 4);
    s_expect_npy(path, v, n, dim);

    shoal_err_t err;
    size_t ln, ld;
    float *loaded = vecfile_load_f32(path, &ln, &ld, &err);
    cr_assert_not_null(loaded, "%s", err.msg);
    cr_assert_eq(ln, n);
    cr_assert_eq(ld, dim);
    cr_assert_arr_eq(loaded, v, n * dim * sizeof *v);
    free(loaded);
    free(v);
}

Test(vecfile, npy_v2_and_v3_read)
{
    const size_t n = 4, dim = 130;
    float *v = s_make_floats(n, dim);
    s_write_npy(s_path("v2.npy"), 2,
                "{'descr': '<f4', 'fortran_order': False, 'shape': (4, 130), }", 0, v, n * dim * 4);
    s_expect_npy(s_path("v2.npy"), v, n, dim);
    s_write_npy(s_path("v3.npy"), 3,
                "{'descr': '<f4', 'fortran_order': False, 'shape': (4, 130), }", 0, v, n * dim * 4);
    s_expect_npy(s_path("v3.npy"), v, n, dim);
    free(v);
}

Test(vecfile, npy_header_variants)
{
    float *v = s_make_floats(5, 2);
    /* Keys in another order, double quotes, no trailing comma, odd whitespace, 'L' ints. */
    s_write_npy(s_path("a.npy"), 1,
                "{ \"shape\" :(5L,2L) ,\t\"fortran_order\":False,\"descr\":\"<f4\"}", 0, v, 40);
    s_expect_npy(s_path("a.npy"), v, 5, 2);
    /* '=f4' is native order, which this build only supports on little-endian hosts. */
    s_write_npy(s_path("b.npy"), 1, "{'descr': '=f4', 'fortran_order': False, 'shape': (5, 2)}", 0,
                v, 40);
    s_expect_npy(s_path("b.npy"), v, 5, 2);
    /* A 1-D array is one row. */
    s_write_npy(s_path("c.npy"), 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (10,), }", 0,
                v, 40);
    s_expect_npy(s_path("c.npy"), v, 1, 10);
    /* The old 16-byte alignment is fine too. */
    s_write_npy(s_path("d.npy"), 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (5, 2), }",
                80, v, 40);
    s_expect_npy(s_path("d.npy"), v, 5, 2);
    free(v);
}

Test(vecfile, npy_unaligned_data_is_read_but_not_shared)
{
    float *v = s_make_floats(3, 4);
    const char *path = s_path("odd.npy");
    /* Data at byte 130: not a multiple of 4. */
    s_write_npy(path, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }", 130, v, 48);
    shoal_err_t err;
    vecfile_t *vf = vecfile_open(path, &err);
    cr_assert_not_null(vf, "%s", err.msg);
    cr_assert_null(vecfile_contiguous_f32(vf), "unaligned data must not be handed out");
    float out[12];
    cr_assert_eq(vecfile_read_f32(vf, 0, 3, out, &err), 0, "%s", err.msg);
    cr_assert_arr_eq(out, v, sizeof out);
    vecfile_close(&vf);
    free(v);
}

Test(vecfile, npy_malformed)
{
    float v[8] = {0};
    const char *good = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 4), }";

    s_write_npy(s_path("magic.npy"), 1, good, 0, v, sizeof v);
    {
        size_t len;
        uint8_t *raw = s_read_bytes(s_path("magic.npy"), &len);
        raw[1] = 'X';
        s_write_bytes(s_path("magic.npy"), raw, len);
        free(raw);
    }
    s_expect_open_error("magic.npy", SHOAL_EFORMAT, "NUMPY");

    s_write_npy(s_path("version.npy"), 4, good, 0, v, sizeof v);
    s_expect_open_error("version.npy", SHOAL_EUNSUPPORTED, "4.0");

    s_write_npy(s_path("f8.npy"), 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 4), }",
                0, v, sizeof v);
    s_expect_open_error("f8.npy", SHOAL_EUNSUPPORTED, "<f8");

    s_write_npy(s_path("be.npy"), 1, "{'descr': '>f4', 'fortran_order': False, 'shape': (2, 4), }",
                0, v, sizeof v);
    s_expect_open_error("be.npy", SHOAL_EUNSUPPORTED, ">f4");

    s_write_npy(s_path("fortran.npy"), 1,
                "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 4), }", 0, v, sizeof v);
    s_expect_open_error("fortran.npy", SHOAL_EUNSUPPORTED, "Fortran");

    s_write_npy(s_path("rank3.npy"), 1,
                "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2, 2), }", 0, v, sizeof v);
    s_expect_open_error("rank3.npy", SHOAL_EUNSUPPORTED, "3 dimensions");

    s_write_npy(s_path("scalar.npy"), 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (), }",
                0, v, 4);
    s_expect_open_error("scalar.npy", SHOAL_EUNSUPPORTED, "0 dimensions");

    s_write_npy(s_path("short.npy"), 1, good, 0, v, sizeof v - 4);
    s_expect_open_error("short.npy", SHOAL_EFORMAT, "needs 32 data bytes, but only 28");

    s_write_npy(s_path("long.npy"), 1, good, 0, v, sizeof v);
    {
        /* Append 5 bytes. */
        size_t len;
        uint8_t *raw = s_read_bytes(s_path("long.npy"), &len);
        raw = realloc(raw, len + 5);
        memset(raw + len, 0, 5);
        s_write_bytes(s_path("long.npy"), raw, len + 5);
        free(raw);
    }
    s_expect_open_error("long.npy", SHOAL_EFORMAT, "5 trailing bytes");

    s_write_npy(s_path("garbage.npy"), 1, "{'descr' '<f4', fortran_order: nope (2, 4)", 0, v,
                sizeof v);
    s_expect_open_error("garbage.npy", SHOAL_EFORMAT, "malformed .npy header");

    s_write_npy(s_path("nokey.npy"), 1, "{'descr': '<f4', 'shape': (2, 4), }", 0, v, sizeof v);
    s_expect_open_error("nokey.npy", SHOAL_EFORMAT, "fortran_order");

    s_write_npy(s_path("twice.npy"), 1,
                "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 4), 'shape': (2, 4)}", 0, v,
                sizeof v);
    s_expect_open_error("twice.npy", SHOAL_EFORMAT, "twice");

    s_write_npy(s_path("negative.npy"), 1,
                "{'descr': '<f4', 'fortran_order': False, 'shape': (-2, 4), }", 0, v, sizeof v);
    s_expect_open_error("negative.npy", SHOAL_EFORMAT, "malformed .npy header");

    s_write_npy(s_path("rows0.npy"), 1,
                "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 4), }", 0, v, 0);
    s_expect_open_error("rows0.npy", SHOAL_EFORMAT, "0 rows");

    s_write_npy(s_path("bigdim.npy"), 1,
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 65537), }", 0, v, sizeof v);
    s_expect_open_error("bigdim.npy", SHOAL_EFORMAT, "65537");

    /* A shape whose byte size overflows must be refused, not wrapped. */
    s_write_npy(s_path("huge.npy"), 1,
                "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387905, 4), }", 0,
                v, sizeof v);
    s_expect_open_error("huge.npy", SHOAL_EFORMAT, "4611686018427387905");
    s_write_npy(s_path("hugeint.npy"), 1,
                "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999, 4)}",
                0, v, sizeof v);
    s_expect_open_error("hugeint.npy", SHOAL_EFORMAT, "too large");

    /* Header length beyond the end of the file. */
    {
        uint8_t raw[40];
        memset(raw, ' ', sizeof raw);
        memcpy(raw, "\x93NUMPY\x01\x00", 8);
        raw[8] = 0xff;
        raw[9] = 0xff;
        memcpy(raw + 10, "{'descr': '<f4'", 15);
        s_write_bytes(s_path("hlen.npy"), raw, sizeof raw);
    }
    s_expect_open_error("hlen.npy", SHOAL_EFORMAT, "65535");

    /* Too short to hold a preamble at all. */
    s_write_bytes(s_path("tiny.npy"), "\x93NUMPY\x02\x00\x10", 9);
    s_expect_open_error("tiny.npy", SHOAL_EFORMAT, "9 bytes");

    s_expect_open_error("absent.npy", SHOAL_ENOTFOUND, "absent.npy");
    s_write_bytes(s_path("empty.npy"), "", 0);
    s_expect_open_error("empty.npy", SHOAL_EFORMAT, "empty file");
}

/* ------------------------------------------------------------------------ */
/* Malformed vecs                                                           */
/* ------------------------------------------------------------------------ */

Test(vecfile, vecs_empty_and_bad_first_dim)
{
    s_write_bytes(s_path("empty.fvecs"), "", 0);
    s_expect_open_error("empty.fvecs", SHOAL_EFORMAT, "empty file");

    s_write_bytes(s_path("stub.fvecs"), "\x04\x00", 2);
    s_expect_open_error("stub.fvecs", SHOAL_EFORMAT, "2 bytes");

    uint8_t buf[64] = {0};
    float zeros[4] = {0};
    s_put_record(buf, 0, 0, zeros, 16);
    s_write_bytes(s_path("dim0.fvecs"), buf, 20);
    s_expect_open_error("dim0.fvecs", SHOAL_EFORMAT, "dim 0");

    s_put_record(buf, 0, -3, zeros, 16);
    s_write_bytes(s_path("negative.ivecs"), buf, 20);
    s_expect_open_error("negative.ivecs", SHOAL_EFORMAT, "dim -3");

    s_put_record(buf, 0, VECFILE_DIM_MAX + 1, zeros, 16);
    s_write_bytes(s_path("huge.bvecs"), buf, 20);
    s_expect_open_error("huge.bvecs", SHOAL_EFORMAT, "dim 65537");
}

Test(vecfile, vecs_truncated_last_record)
{
    const size_t n = 10, dim = 128;
    float *v = s_make_floats(n, dim);
    shoal_err_t err;
    cr_assert_eq(vecfile_write_fvecs(s_path("base.fvecs"), v, n, dim, &err), 0, "%s", err.msg);
    size_t len;
    uint8_t *raw = s_read_bytes(s_path("base.fvecs"), &len);
    /* 9 whole records and 3 bytes of the tenth. */
    s_write_bytes(s_path("base.fvecs"), raw, 9 * 516 + 3);
    free(raw);
    free(v);
    s_expect_open_error("base.fvecs", SHOAL_EFORMAT,
                        "4647 bytes is not a whole number of 516-byte records (dim 128): "
                        "9 whole records and 3 bytes over");
}

Test(vecfile, vecs_record_with_another_dim)
{
    /* Records 0..4 dim 8, record 5 claims dim 9 but is the same size, 6..7 dim 8. */
    uint8_t buf[8 * 36];
    float vals[8];
    size_t off = 0;
    for (int r = 0; r < 8; r++) {
        for (int j = 0; j < 8; j++)
            vals[j] = (float)(r * 8 + j);
        off = s_put_record(buf, off, r == 5 ? 9 : 8, vals, sizeof vals);
    }
    s_write_bytes(s_path("mixed.fvecs"), buf, off);

    shoal_err_t err;
    vecfile_t *vf = vecfile_open(s_path("mixed.fvecs"), &err);
    cr_assert_not_null(vf, "open checks only the first record: %s", err.msg);
    cr_assert_eq(vecfile_count(vf), 8);

    cr_assert_eq(vecfile_check(vf, &err), SHOAL_EFORMAT);
    cr_assert_not_null(strstr(err.msg, "mixed.fvecs: record 5 has dim 9, expected 8"), "%s",
                       err.msg);

    float out[8 * 8];
    cr_assert_eq(vecfile_read_f32(vf, 3, 4, out, &err), SHOAL_EFORMAT);
    cr_assert_not_null(strstr(err.msg, "record 5 has dim 9, expected 8"), "%s", err.msg);
    cr_assert_not_null(strstr(err.msg, "mixed.fvecs"), "%s", err.msg);

    /* Reads that do not touch record 5 are fine. */
    cr_assert_eq(vecfile_read_f32(vf, 0, 5, out, &err), 0, "%s", err.msg);
    cr_assert_eq(out[4 * 8 + 7], 39.0f);
    cr_assert_eq(vecfile_read_f32(vf, 6, 2, out, &err), 0, "%s", err.msg);
    cr_assert_eq(out[0], 48.0f);
    vecfile_close(&vf);

    size_t n, dim;
    cr_assert_null(vecfile_load_f32(s_path("mixed.fvecs"), &n, &dim, &err));
    cr_assert_eq(err.code, SHOAL_EFORMAT);
    cr_assert_not_null(strstr(err.msg, "record 5"), "%s", err.msg);
}

/* ------------------------------------------------------------------------ */
/* Read arguments                                                           */
/* ------------------------------------------------------------------------ */

Test(vecfile, read_out_of_range_and_wrong_type)
{
    float *v = s_make_floats(10, 4);
    shoal_err_t err;
    cr_assert_eq(vecfile_write_fvecs(s_path("r.fvecs"), v, 10, 4, &err), 0, "%s", err.msg);
    vecfile_t *vf = vecfile_open(s_path("r.fvecs"), &err);
    cr_assert_not_null(vf, "%s", err.msg);

    float out[11 * 4];
    cr_assert_eq(vecfile_read_f32(vf, 8, 3, out, &err), SHOAL_EINVAL);
    cr_assert_not_null(strstr(err.msg, "r.fvecs"), "%s", err.msg);
    cr_assert_not_null(strstr(err.msg, "3 rows from row 8"), "%s", err.msg);
    cr_assert_not_null(strstr(err.msg, "10 rows"), "%s", err.msg);
    cr_assert_eq(vecfile_read_f32(vf, 11, 0, out, &err), SHOAL_EINVAL);
    cr_assert_eq(vecfile_read_f32(vf, 0, 11, out, &err), SHOAL_EINVAL);
    /* start + count would wrap around */
    cr_assert_eq(vecfile_read_f32(vf, 1, SIZE_MAX, out, &err), SHOAL_EINVAL);
    cr_assert_eq(vecfile_read_f32(vf, SIZE_MAX, 2, out, &err), SHOAL_EINVAL);
    cr_assert_eq(vecfile_read_f32(vf, 0, 1, NULL, &err), SHOAL_EINVAL);

    int32_t ids[4];
    cr_assert_eq(vecfile_read_i32(vf, 0, 1, ids, &err), SHOAL_EFORMAT);
    cr_assert_not_null(strstr(err.msg, "r.fvecs"), "%s", err.msg);
    cr_assert_not_null(strstr(err.msg, "fvecs"), "%s", err.msg);

    /* Errors never need an error object. */
    cr_assert_eq(vecfile_read_f32(vf, 10, 1, out, NULL), SHOAL_EINVAL);
    vecfile_close(&vf);
    cr_assert_null(vecfile_load_i32(s_path("r.fvecs"), NULL, NULL, NULL));
    free(v);
}

/* ------------------------------------------------------------------------ */
/* Writer failures                                                          */
/* ------------------------------------------------------------------------ */

Test(vecfile, writer_bad_arguments)
{
    shoal_err_t err;
    const char *path = s_path("no-such-dir/out.fvecs");
    cr_assert_null(vecfile_writer_new(path, VECFILE_FVECS, 4, &err));
    cr_assert_eq(err.code, SHOAL_EIO);
    cr_assert_not_null(strstr(err.msg, "no-such-dir/out.fvecs"), "%s", err.msg);
    cr_assert_not_null(strstr(err.msg, strerror(ENOENT)), "%s", err.msg);

    float v[4] = {1, 2, 3, 4};
    cr_assert_eq(vecfile_write_fvecs(path, v, 1, 4, &err), SHOAL_EIO);
    cr_assert_eq(vecfile_write_fvecs(path, v, 1, 4, NULL), SHOAL_EIO);

    cr_assert_null(vecfile_writer_new(s_path("x.npy"), VECFILE_NPY, 4, &err));
    cr_assert_eq(err.code, SHOAL_EUNSUPPORTED);
    cr_assert_null(vecfile_writer_new(s_path("x.fvecs"), VECFILE_FVECS, 0, &err));
    cr_assert_eq(err.code, SHOAL_EINVAL);
    cr_assert_not_null(strstr(err.msg, "dim 0"), "%s", err.msg);
    cr_assert_null(vecfile_writer_new(s_path("x.fvecs"), VECFILE_FVECS, VECFILE_DIM_MAX + 1, &err));
    cr_assert_eq(err.code, SHOAL_EINVAL);
    cr_assert_not_null(strstr(err.msg, "65537"), "%s", err.msg);
    cr_assert_null(vecfile_writer_new(s_path("x.bvecs"), VECFILE_FVECS, 4, &err),
                   "a .bvecs name for fvecs records");
    cr_assert_eq(err.code, SHOAL_EINVAL);
    cr_assert_not(s_exists(s_path("x.fvecs.tmp")));
    cr_assert_not(s_exists(s_path("x.bvecs.tmp")));

    vecfile_writer_t *w = NULL;
    vecfile_writer_abort(&w); /* NULL-safe */
    cr_assert_eq(vecfile_writer_close(&w, &err), SHOAL_EINVAL);
}

Test(vecfile, writer_abort_leaves_nothing)
{
    float v[8] = {0};
    shoal_err_t err;
    const char *path = s_path("aborted.fvecs");
    vecfile_writer_t *w = vecfile_writer_new(path, VECFILE_FVECS, 8, &err);
    cr_assert_not_null(w, "%s", err.msg);
    cr_assert_eq(vecfile_writer_append(w, v, 1, &err), 0, "%s", err.msg);
    cr_assert(s_exists(s_path("aborted.fvecs.tmp")));
    vecfile_writer_abort(&w);
    cr_assert_null(w);
    cr_assert_not(s_exists(path));
    cr_assert_not(s_exists(s_path("aborted.fvecs.tmp")));
}

Test(vecfile, writer_failing_close_keeps_existing_file)
{
    const size_t dim = 4;
    float old[4] = {1, 2, 3, 4}, fresh[4] = {5, 6, 7, 8};
    shoal_err_t err;
    const char *path = s_path("keep.fvecs");
    cr_assert_eq(vecfile_write_fvecs(path, old, 1, dim, &err), 0, "%s", err.msg);

    /* The temporary file vanishes before close: the rename cannot happen. */
    vecfile_writer_t *w = vecfile_writer_new(path, VECFILE_FVECS, dim, &err);
    cr_assert_not_null(w, "%s", err.msg);
    cr_assert_eq(vecfile_writer_append(w, fresh, 1, &err), 0, "%s", err.msg);
    cr_assert_eq(unlink(s_path("keep.fvecs.tmp")), 0);
    cr_assert_eq(vecfile_writer_close(&w, &err), SHOAL_EIO);
    cr_assert_null(w);
    cr_assert_not_null(strstr(err.msg, "keep.fvecs"), "%s", err.msg);

    size_t n, d;
    float *got = vecfile_load_f32(path, &n, &d, &err);
    cr_assert_not_null(got, "%s", err.msg);
    cr_assert_eq(n, 1);
    cr_assert_arr_eq(got, old, sizeof old);
    free(got);
}

Test(vecfile, writer_write_error_is_sticky_and_reported_at_close)
{
    const size_t dim = 256, n = 2048; /* 2 MiB: more than the writer's buffer */
    float *v = s_make_floats(n, dim);
    float old[256] = {0};
    shoal_err_t err;
    const char *path = s_path("full.fvecs");
    cr_assert_eq(vecfile_write_fvecs(path, old, 1, dim, &err), 0, "%s", err.msg);

    /* Files may not grow past 64 KiB: writes fail with EFBIG, as on a full disk. */
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit saved, small;
    cr_assert_eq(getrlimit(RLIMIT_FSIZE, &saved), 0);
    small = saved;
    small.rlim_cur = 64 * 1024;
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &small), 0);

    vecfile_writer_t *w = vecfile_writer_new(path, VECFILE_FVECS, dim, &err);
    cr_assert_not_null(w, "%s", err.msg);
    int rc = vecfile_writer_append(w, v, n, &err);
    cr_assert_eq(rc, SHOAL_EIO, "append of 2 MiB under a 64 KiB limit: %d %s", rc, err.msg);
    shoal_err_t again;
    cr_assert_eq(vecfile_writer_append(w, v, 1, &again), SHOAL_EIO, "the error sticks");
    cr_assert_str_eq(again.msg, err.msg);
    cr_assert_eq(vecfile_writer_close(&w, &err), SHOAL_EIO);
    cr_assert_not_null(strstr(err.msg, "full.fvecs"), "%s", err.msg);
    cr_assert_not_null(strstr(err.msg, strerror(EFBIG)), "%s", err.msg);
    cr_assert_eq(setrlimit(RLIMIT_FSIZE, &saved), 0);

    cr_assert_not(s_exists(s_path("full.fvecs.tmp")), "tmp file must be removed");
    size_t got_n, got_d;
    float *got = vecfile_load_f32(path, &got_n, &got_d, &err);
    cr_assert_not_null(got, "%s", err.msg);
    cr_assert_eq(got_n, 1);
    cr_assert_eq(got_d, dim);
    cr_assert_arr_eq(got, old, sizeof old);
    free(got);
    free(v);
}

Test(vecfile, writer_replaces_existing_file)
{
    float a[2] = {1, 2}, b[6] = {3, 4, 5, 6, 7, 8};
    shoal_err_t err;
    const char *path = s_path("replace.fvecs");
    cr_assert_eq(vecfile_write_fvecs(path, a, 1, 2, &err), 0, "%s", err.msg);
    cr_assert_eq(vecfile_write_fvecs(path, b, 3, 2, &err), 0, "%s", err.msg);
    size_t n, d;
    float *got = vecfile_load_f32(path, &n, &d, &err);
    cr_assert_not_null(got, "%s", err.msg);
    cr_assert_eq(n, 3);
    cr_assert_arr_eq(got, b, sizeof b);
    free(got);
}

/* ------------------------------------------------------------------------ */
/* Real datasets                                                            */
/* ------------------------------------------------------------------------ */

/*
 * A suite of its own, without the temporary-directory fixture: a skipped test
 * does not run .fini in Criterion, so a fixture here would leave directories.
 */
TestSuite(vecfile_datasets);

static const char *s_datasets(void)
{
    const char *d = getenv("SHOAL_DATASETS");
    return d && *d ? d : "../shared/datasets";
}

static bool s_dataset_present(const char *folder, char *path, size_t cap)
{
    snprintf(path, cap, "%s/%s", s_datasets(), folder);
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static void s_expect_shape(const char *dir, const char *file, size_t n, size_t dim)
{
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    shoal_err_t err;
    vecfile_t *vf = vecfile_open(path, &err);
    cr_assert_not_null(vf, "%s", err.msg);
    cr_assert_eq(vecfile_count(vf), n, "%s: %zu rows, expected %zu", file, vecfile_count(vf), n);
    cr_assert_eq(vecfile_dim(vf), dim, "%s: dim %zu, expected %zu", file, vecfile_dim(vf), dim);
    cr_assert_eq(vecfile_check(vf, &err), 0, "%s", err.msg);
    vecfile_close(&vf);
}

Test(vecfile_datasets, siftsmall)
{
    char dir[1024];
    if (!s_dataset_present("siftsmall", dir, sizeof dir))
        cr_skip_test("skipped: %s not found (set SHOAL_DATASETS to the shared datasets folder)",
                     dir);
    s_expect_shape(dir, "siftsmall_base.fvecs", 10000, 128);
    s_expect_shape(dir, "siftsmall_query.fvecs", 100, 128);
    s_expect_shape(dir, "siftsmall_groundtruth.ivecs", 100, 100);

    char path[2048];
    snprintf(path, sizeof path, "%s/siftsmall_groundtruth.ivecs", dir);
    shoal_err_t err;
    size_t n, dim;
    int32_t *gt = vecfile_load_i32(path, &n, &dim, &err);
    cr_assert_not_null(gt, "%s", err.msg);
    for (size_t i = 0; i < n * dim; i++)
        cr_assert(gt[i] >= 0 && gt[i] < 10000, "ground-truth id %d at %zu out of [0, 10000)", gt[i],
                  i);
    free(gt);

    /* SIFT descriptors are small non-negative integers stored as floats. */
    snprintf(path, sizeof path, "%s/siftsmall_base.fvecs", dir);
    float *base = vecfile_load_f32(path, &n, &dim, &err);
    cr_assert_not_null(base, "%s", err.msg);
    for (size_t i = 0; i < n * dim; i++)
        cr_assert(base[i] >= 0.0f && base[i] <= 255.0f && base[i] == (float)(int)base[i],
                  "value %f at %zu", base[i], i);
    free(base);
}

Test(vecfile_datasets, glove50)
{
    char dir[1024];
    if (!s_dataset_present("glove50", dir, sizeof dir))
        cr_skip_test("skipped: %s not found (set SHOAL_DATASETS to the shared datasets folder)",
                     dir);
    s_expect_shape(dir, "glove50_base.fvecs", 9000, 50);
    s_expect_shape(dir, "glove50_query.fvecs", 1000, 50);
    s_expect_shape(dir, "glove50_groundtruth_angular.ivecs", 1000, 100);
}
