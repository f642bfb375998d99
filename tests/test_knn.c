/*
 * test_knn.c - the exact k-NN front (gpu/knn.h): device strings, placement
 * ("auto" falls back to the CPU with a reason, "gpu:N" is SHOAL_ENODEV without
 * a GPU), and add / upsert / remove / search through the front against
 * flat_search over a reference store that went through the same operations.
 *
 * The same scenarios run on an emulated device (gpu/knn_emu.h: GEMM-form
 * distances that cancel, in another summation order than the CPU) in every
 * build, and on "gpu:0" (fp32, fp16, and a tiny memory budget that forces
 * many tiles) on a machine with a GPU: fp32 answers must equal flat_search's
 * bit for bit (ids, order, distances); fp16 must reach the recall bound.
 * The emulation also checks what a GPU cannot be made to do on demand: a
 * device failing mid-search (the search still answers, from the CPU, and the
 * engine is marked lost), out of device memory (that search on the CPU only),
 * data whose GEMM form cancels or overflows to NaN. Nothing here asserts a
 * timing.
 */
#include "common/distance.h"
#include "common/flat.h"
#include "common/log.h"
#include "common/topk.h"
#include "gpu/gpu.h"
#include "gpu/knn.h"
#include "gpu/knn_dev.h"
#include "gpu/knn_emu.h"
#include "gpu/knn_exact.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t s_state = 88172645463325252ull;

TestSuite(knn, .init = shoal_log_init_from_env);

static uint64_t s_rand(void)
{
    s_state ^= s_state << 13;
    s_state ^= s_state >> 7;
    s_state ^= s_state << 17;
    return s_state;
}

static float s_uniform(void)
{
    return (float)((s_rand() >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static void s_fill(float *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        v[i] = s_uniform();
}

static int s_have_gpu(void)
{
    shoal_err_t err;
    return gpu_device_count(&err) > 0;
}

/* device "emu" is the emulated device (knn_emu.h) on "gpu:0". */
static knn_engine_t *s_engine(const char *device, size_t dim, shoal_metric_t metric, int fp16,
                              size_t budget)
{
    int emu = strcmp(device, "emu") == 0;
    knn_params_t p = {.dim = dim, .metric = metric, .device = emu ? "gpu:0" : device,
                      .fp16 = fp16, .mem_budget = budget, .threads = 2};
    shoal_err_t err;
    shoal_err_clear(&err);
    knn_engine_t *e = emu ? knn_engine_new_with(&p, &knn_emu_ops, &err) : knn_engine_new(&p, &err);
    cr_assert_not_null(e, "knn_engine_new(%s): %s", device, err.msg);
    return e;
}

/* ------------------------------------------------------------------------ */
/* Device strings and placement                                             */
/* ------------------------------------------------------------------------ */

Test(knn, parse_good_device_strings)
{
    int on = 7, dev[KNN_DEVICES_MAX], n = 7;
    shoal_err_t err;
    cr_assert_eq(knn_parse_devices(NULL, &on, dev, &n, &err), 0);
    cr_assert_eq(on, -1);
    cr_assert_eq(n, 0);
    cr_assert_eq(knn_parse_devices("auto", &on, dev, &n, &err), 0);
    cr_assert_eq(on, -1);
    cr_assert_eq(knn_parse_devices("cpu", &on, dev, &n, &err), 0);
    cr_assert_eq(on, 0);
    cr_assert_eq(n, 0);
    cr_assert_eq(knn_parse_devices("gpu:0", &on, dev, &n, &err), 0, "%s", err.msg);
    cr_assert_eq(on, 1);
    cr_assert_eq(n, 1);
    cr_assert_eq(dev[0], 0);
    cr_assert_eq(knn_parse_devices("gpu:3,1, 12", &on, dev, &n, &err), 0, "%s", err.msg);
    cr_assert_eq(n, 3);
    cr_assert_eq(dev[0], 3);
    cr_assert_eq(dev[1], 1);
    cr_assert_eq(dev[2], 12);
    cr_assert_eq(knn_parse_devices("GPU:2", &on, dev, &n, &err), 0, "%s", err.msg);
    cr_assert_eq(dev[0], 2);
    cr_assert_eq(knn_parse_devices("gpu:0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15", &on, dev, &n,
                                   &err),
                 0, "%s", err.msg);
    cr_assert_eq(n, 16);
}

Test(knn, parse_bad_device_strings)
{
    const char *bad[] = {"",        "gpu",     "gpu:",    "gpu:a",   "gpu:0,",   "gpu:0,,1",
                         "gpu:1,1", "gpu:-1",  "gpu:0;1", "tpu:0",   "gpu:99999", "cpu0",
                         "gpu:0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int on = 0, dev[KNN_DEVICES_MAX], n = 0;
        shoal_err_t err;
        shoal_err_clear(&err);
        cr_assert_eq(knn_parse_devices(bad[i], &on, dev, &n, &err), SHOAL_EINVAL, "\"%s\"",
                     bad[i]);
        cr_assert_eq(err.code, SHOAL_EINVAL);
        cr_assert_gt(strlen(err.msg), 0, "no message for \"%s\"", bad[i]);
    }
    shoal_err_t err;
    int on = 0, dev[KNN_DEVICES_MAX], n = 0;
    knn_parse_devices("gpu:1,1", &on, dev, &n, &err);
    cr_assert_not_null(strstr(err.msg, "twice"), "got: %s", err.msg);
    knn_parse_devices("gpu:0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16", &on, dev, &n, &err);
    cr_assert_not_null(strstr(err.msg, "more than 16"), "got: %s", err.msg);
}

Test(knn, auto_says_where_and_why)
{
    knn_engine_t *e = s_engine("auto", 8, SHOAL_METRIC_L2, 0, 0);
    knn_info_t info;
    knn_engine_info(e, &info);
    cr_assert_gt(strlen(info.reason), 0);
    if (s_have_gpu()) {
        cr_assert(info.on_gpu, "GPU present but auto chose the CPU: %s", info.reason);
        cr_assert_geq(info.ndevices, 1);
    } else {
        cr_assert_not(info.on_gpu);
        cr_assert_eq(info.ndevices, 0);
        cr_assert_not_null(strstr(info.reason, "no GPU device"), "got: %s", info.reason);
        if (!gpu_built_with_cuda())
            cr_assert_not_null(strstr(info.reason, "built without CUDA"), "got: %s",
                               info.reason);
    }
    knn_engine_destroy(&e);
    cr_assert_null(e);
    knn_engine_destroy(&e); /* NULL-safe */
    knn_engine_destroy(NULL);
}

Test(knn, cpu_is_cpu)
{
    knn_engine_t *e = s_engine("cpu", 8, SHOAL_METRIC_IP, 1, 0);
    knn_info_t info;
    knn_engine_info(e, &info);
    cr_assert_not(info.on_gpu);
    cr_assert_eq(info.device_bytes, 0);
    cr_assert_gt(info.host_bytes, 0);
    knn_engine_destroy(&e);
}

Test(knn, gpu_without_device_is_enodev)
{
    shoal_err_t err;
    shoal_err_clear(&err);
    knn_params_t p = {.dim = 8, .metric = SHOAL_METRIC_L2, .device = "gpu:0"};
    knn_engine_t *e = knn_engine_new(&p, &err);
    if (s_have_gpu()) {
        cr_assert_not_null(e, "%s", err.msg);
        knn_info_t info;
        knn_engine_info(e, &info);
        cr_assert(info.on_gpu);
        cr_assert_eq(info.ndevices, 1);
        cr_assert_eq(info.devices[0], 0);
        knn_engine_destroy(&e);
        /* A device number past the last one. */
        p.device = "gpu:15";
        shoal_err_t e2;
        int count = gpu_device_count(&e2);
        if (count < 16) {
            e = knn_engine_new(&p, &err);
            cr_assert_null(e);
            cr_assert_eq(err.code, SHOAL_ENODEV, "%s", err.msg);
        }
        return;
    }
    cr_assert_null(e);
    cr_assert_eq(err.code, SHOAL_ENODEV, "got %d: %s", err.code, err.msg);
    cr_assert_not_null(strstr(err.msg, "no GPU device"), "got: %s", err.msg);
    if (!gpu_built_with_cuda())
        cr_assert_not_null(strstr(err.msg, "built without CUDA"), "got: %s", err.msg);
}

Test(knn, bad_params_are_errors_with_messages)
{
    shoal_err_t err;
    shoal_err_clear(&err);
    cr_assert_null(knn_engine_new(NULL, &err));
    cr_assert_eq(err.code, SHOAL_EINVAL);

    knn_params_t p = {.dim = 0, .metric = SHOAL_METRIC_L2, .device = "cpu"};
    shoal_err_clear(&err);
    cr_assert_null(knn_engine_new(&p, &err));
    cr_assert_eq(err.code, SHOAL_EINVAL);
    cr_assert_not_null(strstr(err.msg, "dim"), "got: %s", err.msg);

    p.dim = 4;
    p.metric = (shoal_metric_t)7;
    shoal_err_clear(&err);
    cr_assert_null(knn_engine_new(&p, &err));
    cr_assert_eq(err.code, SHOAL_EINVAL);
    cr_assert_not_null(strstr(err.msg, "metric"), "got: %s", err.msg);

    p.metric = SHOAL_METRIC_COSINE;
    p.device = "gpu:x";
    shoal_err_clear(&err);
    cr_assert_null(knn_engine_new(&p, &err));
    cr_assert_eq(err.code, SHOAL_EINVAL);
    cr_assert_not_null(strstr(err.msg, "gpu:x"), "got: %s", err.msg);
}

Test(knn, bad_calls_are_errors)
{
    knn_engine_t *e = s_engine("auto", 4, SHOAL_METRIC_L2, 0, 0);
    shoal_err_t err;
    float v[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    uint64_t ids[2] = {10, 11};
    cr_assert_eq(knn_engine_add(e, ids, v, 2, &err), 0, "%s", err.msg);

    float bad[4] = {1, NAN, 3, 4};
    uint64_t id = 12;
    cr_assert_eq(knn_engine_add(e, &id, bad, 1, &err), SHOAL_EINVAL);
    cr_assert_eq(knn_engine_count(e), 2);

    uint64_t out[4];
    float d[4];
    cr_assert_eq(knn_engine_search(e, v, 1, 0, out, d, &err), SHOAL_EINVAL);
    cr_assert_eq(knn_engine_search(e, bad, 1, 1, out, d, &err), SHOAL_EINVAL);
    cr_assert_eq(knn_engine_search(e, v, 0, 1, out, d, &err), 0); /* nothing to do */

    size_t removed = 99;
    uint64_t gone[3] = {11, 11, 500};
    cr_assert_eq(knn_engine_remove(e, gone, 3, &removed, &err), 0, "%s", err.msg);
    cr_assert_eq(removed, 1);
    cr_assert_eq(knn_engine_count(e), 1);

    /* k beyond the rows: padded. */
    cr_assert_eq(knn_engine_search(e, v, 1, 3, out, d, &err), 0, "%s", err.msg);
    cr_assert_eq(out[0], 10);
    cr_assert_eq(out[1], TOPK_ID_NONE);
    cr_assert(isinf(d[2]));
    knn_engine_destroy(&e);
}

Test(knn, empty_engine_pads)
{
    knn_engine_t *e = s_engine("auto", 4, SHOAL_METRIC_IP, 0, 0);
    float q[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    uint64_t out[6];
    float d[6];
    shoal_err_t err;
    cr_assert_eq(knn_engine_search(e, q, 2, 3, out, d, &err), 0, "%s", err.msg);
    for (int i = 0; i < 6; i++) {
        cr_assert_eq(out[i], TOPK_ID_NONE);
        cr_assert(isinf(d[i]) && d[i] > 0);
    }
    knn_engine_destroy(&e);
}

/* ------------------------------------------------------------------------ */
/* Scenarios against a reference store                                      */
/* ------------------------------------------------------------------------ */

/* got vs ref for nq queries of k: positions whose id or distance bits differ. */
static size_t s_compare(const uint64_t *ref_i, const float *ref_d, const uint64_t *got_i,
                        const float *got_d, size_t nq, size_t k)
{
    size_t bad = 0;
    for (size_t i = 0; i < nq * k; i++)
        bad += ref_i[i] != got_i[i] || memcmp(&ref_d[i], &got_d[i], sizeof(float)) != 0;
    return bad;
}

typedef struct {
    const char *device; /* engine under test */
    int fp16;           /* fp16 rows on the GPU */
    size_t budget;      /* mem_budget */
} s_setup_t;

/*
 * The same operations on the engine and on a reference flat store: add n rows
 * (with duplicate vectors, so distance ties happen), upsert some, remove some
 * (and some absent ids), add more; then search with several k and compare.
 */
static void s_scenario(const s_setup_t *su, shoal_metric_t metric, size_t dim)
{
    shoal_err_t err;
    shoal_err_clear(&err);
    knn_engine_t *e = s_engine(su->device, dim, metric, su->fp16, su->budget);
    flat_store_t *ref = flat_store_new(dim, metric, &err);
    cr_assert_not_null(ref, "%s", err.msg);

    const size_t n = 3000, nq = 37;
    float *vecs = malloc(n * dim * sizeof(float));
    uint64_t *ids = malloc(n * sizeof(uint64_t));
    s_fill(vecs, n * dim);
    for (size_t i = 0; i < n; i++)
        ids[i] = i * 7 + 3;
    for (size_t i = 100; i < 120; i++) /* exact duplicates of rows 0..19: ties */
        memcpy(vecs + i * dim, vecs + (i - 100) * dim, dim * sizeof(float));
    cr_assert_eq(knn_engine_add(e, ids, vecs, n, &err), 0, "%s", err.msg);
    cr_assert_eq(flat_store_add(ref, ids, vecs, n, &err), 0, "%s", err.msg);

    /* Upsert 300 present ids (and one id twice in the batch). */
    const size_t nu = 300;
    float *up = malloc(nu * dim * sizeof(float));
    uint64_t *upid = malloc(nu * sizeof(uint64_t));
    s_fill(up, nu * dim);
    for (size_t i = 0; i < nu; i++)
        upid[i] = ids[(i * 13) % n];
    upid[nu - 1] = upid[0];
    cr_assert_eq(knn_engine_add(e, upid, up, nu, &err), 0, "%s", err.msg);
    cr_assert_eq(flat_store_add(ref, upid, up, nu, &err), 0, "%s", err.msg);

    /* Remove 500 (every 6th, so moved rows come from all over) plus absent ids. */
    size_t nr = 520, removed = 0, ref_removed = 0;
    uint64_t *rm = malloc(nr * sizeof(uint64_t));
    for (size_t i = 0; i < 500; i++)
        rm[i] = ids[(i * 6) % n];
    for (size_t i = 500; i < nr; i++)
        rm[i] = 1000000 + i;
    cr_assert_eq(knn_engine_remove(e, rm, nr, &removed, &err), 0, "%s", err.msg);
    for (size_t i = 0; i < nr; i++)
        ref_removed += flat_store_remove(ref, rm[i], NULL, NULL, NULL) == 0;
    cr_assert_eq(removed, ref_removed);
    cr_assert_eq(removed, 500);

    /* Add 200 new ids, some re-using removed ones. */
    const size_t na = 200;
    float *more = malloc(na * dim * sizeof(float));
    uint64_t *mid = malloc(na * sizeof(uint64_t));
    s_fill(more, na * dim);
    for (size_t i = 0; i < na; i++)
        mid[i] = i < 50 ? rm[i * 2] : 5000000 + i;
    cr_assert_eq(knn_engine_add(e, mid, more, na, &err), 0, "%s", err.msg);
    cr_assert_eq(flat_store_add(ref, mid, more, na, &err), 0, "%s", err.msg);
    cr_assert_eq(knn_engine_count(e), flat_store_count(ref));

    /* Ids that must never come back: removed and not re-added. */
    knn_info_t info;
    knn_engine_info(e, &info);
    cr_assert_eq(info.count, flat_store_count(ref));
    int gpu = info.on_gpu;

    float *q = malloc(nq * dim * sizeof(float));
    s_fill(q, nq * dim);
    memcpy(q, vecs + 5 * dim, dim * sizeof(float)); /* a query equal to a stored row */
    const size_t ks[] = {1, 10, 100, 1500, 3000};
    flat_view_t view = flat_store_view(ref);
    for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
        size_t k = ks[ki];
        uint64_t *gi = malloc(nq * k * sizeof(uint64_t)), *ri = malloc(nq * k * sizeof(uint64_t));
        float *gd = malloc(nq * k * sizeof(float)), *rd = malloc(nq * k * sizeof(float));
        memset(gi, 0xff, nq * k * sizeof(uint64_t));
        for (size_t i = 0; i < nq * k; i++)
            gd[i] = NAN;
        cr_assert_eq(knn_engine_search(e, q, nq, k, gi, gd, &err), 0, "k %zu: %s", k, err.msg);
        flat_search_opts_t opts = {.threads = 2};
        cr_assert_eq(flat_search(&view, q, nq, k, &opts, ri, rd, &err), 0, "%s", err.msg);

        for (size_t i = 0; i < nq * k; i++) {
            cr_assert_not(isnan(gd[i]), "k %zu: NaN at %zu", k, i);
            if (gi[i] == TOPK_ID_NONE)
                continue;
            for (size_t x = 100; x < 500; x++)
                cr_assert_neq(gi[i], rm[x], "k %zu: removed id %llu returned", k,
                              (unsigned long long)rm[x]);
            cr_assert_neq(flat_store_row(ref, gi[i]), FLAT_NO_ROW, "unknown id %llu",
                          (unsigned long long)gi[i]);
        }
        size_t bad;
        if (!gpu || !su->fp16 || k > KNN_K_MAX_GPU) {
            /* fp32 on any device: the CPU's answer, bit for bit. */
            bad = s_compare(ri, rd, gi, gd, nq, k);
            cr_assert_eq(bad, 0, "%s %s k %zu: %zu results differ from flat_search", su->device,
                         shoal_metric_name(metric), k, bad);
        } else {
            /* fp16: returned distances are exact; a few neighbours may be missed. */
            size_t hit = 0, real = 0;
            for (size_t qq = 0; qq < nq; qq++)
                for (size_t j = 0; j < k; j++) {
                    uint64_t id = ri[qq * k + j];
                    if (id == TOPK_ID_NONE)
                        continue;
                    real++;
                    for (size_t x = 0; x < k; x++)
                        if (gi[qq * k + x] == id) {
                            hit++;
                            break;
                        }
                }
            cr_assert_geq((double)hit / (double)real, 0.98, "fp16 k %zu: recall %.4f", k,
                          (double)hit / (double)real);
        }
        free(gi);
        free(ri);
        free(gd);
        free(rd);
    }
    /* The query equal to row 5 finds it (or its exact duplicate, row 105) first. */
    if (metric == SHOAL_METRIC_L2) {
        uint64_t top;
        float d;
        cr_assert_eq(knn_engine_search(e, q, 1, 1, &top, &d, &err), 0, "%s", err.msg);
        cr_assert_lt(d, 1e-3f);
    }
    free(vecs);
    free(ids);
    free(up);
    free(upid);
    free(rm);
    free(more);
    free(mid);
    free(q);
    flat_store_destroy(&ref);
    knn_engine_destroy(&e);
}

static const s_setup_t s_cpu = {"cpu", 0, 0};
static const s_setup_t s_gpu32 = {"gpu:0", 0, 0};
static const s_setup_t s_gpu32_tiny = {"gpu:0", 0, 1u << 20}; /* many tiles */
static const s_setup_t s_gpu16 = {"gpu:0", 1, 0};

Test(knn, cpu_matches_flat_search)
{
    s_scenario(&s_cpu, SHOAL_METRIC_L2, 24);
    s_scenario(&s_cpu, SHOAL_METRIC_IP, 17);
    s_scenario(&s_cpu, SHOAL_METRIC_COSINE, 32);
}

Test(knn, auto_matches_flat_search)
{
    s_setup_t su = {"auto", 0, 0};
    s_scenario(&su, SHOAL_METRIC_L2, 24);
}

Test(knn, gpu_matches_cpu)
{
    if (!s_have_gpu()) {
        shoal_err_t err;
        gpu_device_count(&err);
        cr_skip_test("GPU vs CPU comparison skipped: %s", err.msg);
        return;
    }
    const shoal_metric_t metrics[] = {SHOAL_METRIC_L2, SHOAL_METRIC_IP, SHOAL_METRIC_COSINE};
    for (int m = 0; m < 3; m++) {
        s_scenario(&s_gpu32, metrics[m], 24);
        s_scenario(&s_gpu32, metrics[m], 3);
        s_scenario(&s_gpu32_tiny, metrics[m], 128);
        s_scenario(&s_gpu16, metrics[m], 64);
    }
}

/* ------------------------------------------------------------------------ */
/* The emulated device: the front's contract without a GPU                  */
/* ------------------------------------------------------------------------ */

static const s_setup_t s_emu32 = {"emu", 0, 0};
static const s_setup_t s_emu16 = {"emu", 1, 0};

Test(knn, emulated_device_matches_cpu_bit_for_bit)
{
    const shoal_metric_t metrics[] = {SHOAL_METRIC_L2, SHOAL_METRIC_IP, SHOAL_METRIC_COSINE};
    for (int m = 0; m < 3; m++) {
        s_scenario(&s_emu32, metrics[m], 24);
        s_scenario(&s_emu32, metrics[m], 3);
        s_scenario(&s_emu16, metrics[m], 64);
    }
}

/* Searches e and flat_search over the same rows; asserts equal bits. */
static void s_assert_same(knn_engine_t *e, const flat_store_t *ref, const float *q, size_t nq,
                          size_t k, const char *what)
{
    shoal_err_t err;
    shoal_err_clear(&err);
    uint64_t *gi = malloc(nq * k * sizeof(uint64_t)), *ri = malloc(nq * k * sizeof(uint64_t));
    float *gd = malloc(nq * k * sizeof(float)), *rd = malloc(nq * k * sizeof(float));
    cr_assert_eq(knn_engine_search(e, q, nq, k, gi, gd, &err), 0, "%s: %s", what, err.msg);
    flat_view_t view = flat_store_view(ref);
    flat_search_opts_t opts = {.threads = 2};
    cr_assert_eq(flat_search(&view, q, nq, k, &opts, ri, rd, &err), 0, "%s", err.msg);
    size_t bad = s_compare(ri, rd, gi, gd, nq, k);
    cr_assert_eq(bad, 0, "%s k %zu: %zu results differ from flat_search", what, k, bad);
    free(gi);
    free(ri);
    free(gd);
    free(rd);
}

/* Both e and a reference store get the same n rows. */
static flat_store_t *s_load(knn_engine_t *e, const float *vecs, size_t n, size_t dim,
                            shoal_metric_t metric)
{
    shoal_err_t err;
    shoal_err_clear(&err);
    flat_store_t *ref = flat_store_new(dim, metric, &err);
    cr_assert_not_null(ref, "%s", err.msg);
    uint64_t *ids = malloc(n * sizeof(uint64_t));
    for (size_t i = 0; i < n; i++)
        ids[i] = (i * 2654435761u) % 1000003; /* ids out of row order */
    cr_assert_eq(knn_engine_add(e, ids, vecs, n, &err), 0, "%s", err.msg);
    cr_assert_eq(flat_store_add(ref, ids, vecs, n, &err), 0, "%s", err.msg);
    free(ids);
    return ref;
}

/*
 * Rows far from the origin and close to each other: |x|^2 ~ dim * 1e6 while
 * neighbours are ~1e-2 apart, so the GEMM form's error (~1e-7 * |x|^2) is far
 * above the gaps. The proof must send such queries to the CPU, and the
 * answers still equal the CPU's.
 */
Test(knn, cancellation_falls_back_and_stays_exact)
{
    const size_t dim = 16, n = 2000, nq = 20;
    float *vecs = malloc(n * dim * sizeof(float));
    for (size_t i = 0; i < n * dim; i++)
        vecs[i] = 1000.0f + 0.01f * s_uniform();
    for (size_t i = 0; i < 50; i++) /* exact duplicates: ties by id */
        memcpy(vecs + (500 + i) * dim, vecs + i * dim, dim * sizeof(float));
    knn_engine_t *e = s_engine("emu", dim, SHOAL_METRIC_L2, 0, 0);
    flat_store_t *ref = s_load(e, vecs, n, dim, SHOAL_METRIC_L2);
    s_assert_same(e, ref, vecs, nq, 10, "offset rows");
    cr_assert_gt(knn_engine_fallbacks(e), 0, "the proof cannot hold on this data");

    /* Ordinary data: the proof holds, no query leaves the device. */
    knn_engine_t *e2 = s_engine("emu", dim, SHOAL_METRIC_L2, 0, 0);
    for (size_t i = 0; i < n * dim; i++)
        vecs[i] = s_uniform();
    flat_store_t *ref2 = s_load(e2, vecs, n, dim, SHOAL_METRIC_L2);
    float *q = malloc(nq * dim * sizeof(float));
    s_fill(q, nq * dim);
    s_assert_same(e2, ref2, q, nq, 10, "uniform rows");
    cr_assert_eq(knn_engine_fallbacks(e2), 0);
    free(q);
    free(vecs);
    flat_store_destroy(&ref);
    flat_store_destroy(&ref2);
    knn_engine_destroy(&e);
    knn_engine_destroy(&e2);
}

/*
 * |q|^2 + |x|^2 overflows and so does 2 q.x: the GEMM form is inf - inf = NaN.
 * fmaxf(NaN, 0) once ranked such a row as a perfect match; now it is re-scored
 * (its real distance here is 0: the query is the row).
 */
Test(knn, overflow_nan_is_rescored_not_ranked_best)
{
    const size_t dim = 4;
    float vecs[3 * 4] = {1.35e19f, 0, 0, 0, /* |x|^2 = 1.82e38, finite */
                         1, 2, 3, 4,
                         -1, 0.5f, 0, 2};
    knn_engine_t *e = s_engine("emu", dim, SHOAL_METRIC_L2, 0, 0);
    flat_store_t *ref = s_load(e, vecs, 3, dim, SHOAL_METRIC_L2);
    float far[4] = {1, 2, 3, 5};
    s_assert_same(e, ref, vecs, 1, 1, "the big row as the query");
    s_assert_same(e, ref, far, 1, 2, "a small query");
    flat_store_destroy(&ref);
    knn_engine_destroy(&e);
}

Test(knn, device_failure_answers_from_cpu_and_marks_lost)
{
    const size_t dim = 8, n = 500, nq = 5;
    float *vecs = malloc(n * dim * sizeof(float)), q[5 * 8];
    s_fill(vecs, n * dim);
    s_fill(q, nq * dim);
    knn_engine_t *e = s_engine("emu", dim, SHOAL_METRIC_IP, 0, 0);
    flat_store_t *ref = s_load(e, vecs, n, dim, SHOAL_METRIC_IP);
    knn_info_t info;

    /* Out of device memory: this search on the CPU, the device stays. */
    knn_emu_fail_searches(0, SHOAL_ENOMEM);
    s_assert_same(e, ref, q, nq, 7, "out of device memory");
    knn_engine_info(e, &info);
    cr_assert_eq(info.on_gpu, 1, "ENOMEM must not lose the device: %s", info.reason);
    knn_emu_fail_searches(0, 0);
    unsigned long before = knn_emu_searches();
    s_assert_same(e, ref, q, nq, 7, "device again");
    cr_assert_eq(knn_emu_searches(), before + 1, "the search went to the device");

    /* A device error (a sticky CUDA error): answered anyway, engine lost. */
    knn_emu_fail_searches(0, SHOAL_EGPU);
    s_assert_same(e, ref, q, nq, 7, "device failing");
    knn_emu_fail_searches(0, 0);
    knn_engine_info(e, &info);
    cr_assert_eq(info.on_gpu, 0);
    cr_assert_not_null(strstr(info.reason, "lost"), "reason: %s", info.reason);
    before = knn_emu_searches();
    s_assert_same(e, ref, q, nq, 7, "after the loss");
    cr_assert_eq(knn_emu_searches(), before, "a lost device is not asked again");

    /* Writes still work and searches still agree. */
    shoal_err_t err;
    uint64_t id = 77777;
    cr_assert_eq(knn_engine_add(e, &id, q, 1, &err), 0, "%s", err.msg);
    cr_assert_eq(flat_store_add(ref, &id, q, 1, &err), 0, "%s", err.msg);
    s_assert_same(e, ref, q, nq, 7, "after a write");
    free(vecs);
    flat_store_destroy(&ref);
    knn_engine_destroy(&e);
}

Test(knn, graph_tiles_equal_searches_of_the_rows)
{
    const size_t dim = 12, n = 300, k = 5;
    float *vecs = malloc(n * dim * sizeof(float));
    s_fill(vecs, n * dim);
    knn_engine_t *e = s_engine("emu", dim, SHOAL_METRIC_COSINE, 0, 0);
    flat_store_t *ref = s_load(e, vecs, n, dim, SHOAL_METRIC_COSINE);
    shoal_err_t err;
    uint64_t *gi = malloc(n * k * sizeof(uint64_t));
    float *gd = malloc(n * k * sizeof(float));
    for (size_t first = 0; first < n; first += 128) {
        size_t count = n - first < 128 ? n - first : 128;
        cr_assert_eq(knn_engine_graph(e, first, count, k, gi + first * k, gd + first * k, &err),
                     0, "%s", err.msg);
    }
    cr_assert_eq(knn_engine_graph(e, n, 1, k, gi, gd, &err), SHOAL_EINVAL);
    /* Row r's tile answer is the search with row r (as stored) as the query. */
    flat_view_t v = flat_store_view(ref);
    for (size_t r = 0; r < n; r += 37) {
        uint64_t ri[5];
        float rd[5];
        flat_search_opts_t opts = {.threads = 1};
        cr_assert_eq(flat_search(&v, v.vecs + r * dim, 1, k, &opts, ri, rd, &err), 0, "%s",
                     err.msg);
        cr_assert_eq(s_compare(ri, rd, gi + r * k, gd + r * k, 1, k), 0, "row %zu", r);
    }
    free(gi);
    free(gd);
    free(vecs);
    flat_store_destroy(&ref);
    knn_engine_destroy(&e);
}

/* The proof's arithmetic on made-up candidate lists. */
Test(knn, exact_proof_rules)
{
    float up;
    const float cd[6] = {1.0f, 2.0f, 3.0f, 4.0f, 100.0f, 200.0f};
    cr_assert_eq(knn_exact_proven(cd, 6, 6, 3, 8, 1.0f, 1.0f, &up), 1, "wide gap proves");
    cr_assert_float_eq(up, 3.0f + knn_exact_slack(8, 3.0f, 2.0f), 1e-6f);
    const float tight[4] = {1.0f, 2.0f, 3.0f, 3.0f};
    cr_assert_eq(knn_exact_proven(tight, 4, 4, 3, 8, 1.0f, 1.0f, &up), 0, "a tie at the edge");
    cr_assert_eq(knn_exact_proven(tight, 4, 3, 3, 8, 1.0f, 1.0f, &up), 1, "every row seen");
    cr_assert_eq(knn_exact_proven(tight, 4, 2, 3, 8, 1.0f, 1.0f, &up), 1, "fewer rows than k");
    cr_assert(isinf(up));
    /* Huge norms make the slack swallow the gap. */
    cr_assert_eq(knn_exact_proven(cd, 6, 6, 3, 8, 1e9f, 1e9f, &up), 0);
    const float nan_first[4] = {-INFINITY, 2.0f, 3.0f, 9.0f};
    cr_assert_eq(knn_exact_proven(nan_first, 4, 4, 2, 8, 1.0f, 1.0f, &up), 0);
    cr_assert_eq(knn_exact_proven(nan_first, 4, 3, 2, 8, 1.0f, 1.0f, &up), 1);
    cr_assert(isinf(up) && up > 0);
    /* Candidate counts: k plus slack, within the kernel's limit and the rows. */
    cr_assert_eq(knn_exact_candidates(10, 1024, 1000000), 42);
    cr_assert_eq(knn_exact_candidates(1000, 1024, 1000000), 1024);
    cr_assert_eq(knn_exact_candidates(10, 1024, 20), 20);
    cr_assert_eq(knn_exact_candidates(10, 1024, 5), 10);
}
