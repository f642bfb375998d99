/*
 * test_gpu.c - the GPU front answers consistently with how it was built and
 * what the machine has: a CPU-only build says "built without CUDA"; a CUDA
 * build on a machine without a GPU says why there is none (and the caller can
 * fall back); a CUDA build with GPUs describes each one. Plus the host-side
 * logic the CUDA engine relies on, checked in every build: which devices
 * "auto" takes, the per-device budget shared by engines, where rows live
 * among devices, tile sizes within the budget, column splits.
 */
#include "gpu/gpu.h"
#include "gpu/knn_budget.h"
#include "gpu/knn_plan.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

Test(gpu, build_info_matches_the_build)
{
    const char *info = gpu_build_info();
    cr_assert_not_null(info);
    if (gpu_built_with_cuda())
        cr_assert_not_null(strstr(info, "cuda runtime"), "got: %s", info);
    else
        cr_assert_str_eq(info, "cpu-only build");
}

Test(gpu, device_count_is_a_count_or_a_reason)
{
    shoal_err_t err;
    shoal_err_clear(&err);
    int count = gpu_device_count(&err);
    if (count < 0) {
        cr_assert_eq(count, SHOAL_ENODEV, "got %d: %s", count, err.msg);
        cr_assert_eq(err.code, SHOAL_ENODEV);
        cr_assert_not_null(strstr(err.msg, "no GPU device"), "got: %s", err.msg);
        if (!gpu_built_with_cuda())
            cr_assert_not_null(strstr(err.msg, "built without CUDA"), "got: %s", err.msg);
        gpu_device_info_t info;
        cr_assert_eq(gpu_device_info(0, &info, &err), SHOAL_ENODEV);
        return;
    }
    cr_assert(gpu_built_with_cuda(), "a CPU-only build cannot see devices");
    for (int d = 0; d < count; d++) {
        gpu_device_info_t info;
        cr_assert_eq(gpu_device_info(d, &info, &err), SHOAL_OK, "%s", err.msg);
        cr_assert_eq(info.ordinal, d);
        cr_assert_gt(strlen(info.name), 0);
        cr_assert_gt(info.total_bytes, 0);
        cr_assert_geq(info.cc_major, 1);
    }
    gpu_device_info_t info;
    cr_assert_eq(gpu_device_info(count, &info, &err), SHOAL_EINVAL);
    cr_assert_eq(gpu_device_info(-1, &info, &err), SHOAL_EINVAL);
}

/* ------------------------------------------------------------------------ */
/* Host-side logic the CUDA engine relies on                                */
/* ------------------------------------------------------------------------ */

Test(gpu, usable_devices_are_sm80_and_later)
{
    gpu_device_info_t info = {.ordinal = 1, .name = "Old card", .total_bytes = 1u << 30,
                              .cc_major = 7, .cc_minor = 5};
    char why[160] = "";
    cr_assert_eq(gpu_device_usable(&info, why, sizeof why), 0);
    cr_assert_not_null(strstr(why, "7.5"), "why: %s", why);
    info.cc_major = 9;
    info.cc_minor = 0;
    cr_assert_eq(gpu_device_usable(&info, why, sizeof why), 1);
    info.total_bytes = 0;
    cr_assert_eq(gpu_device_usable(&info, why, sizeof why), 0);
}

Test(gpu, engines_on_one_device_share_its_budget)
{
    const size_t free_b = (size_t)40 << 30; /* an H100 with 40 GiB free */
    const int dev = 5;
    cr_assert_eq(knn_budget_join(dev, free_b), 0);
    cr_assert_eq(knn_budget_share(dev, 0), KNN_BUDGET_MAX, "one engine: the whole pool");
    cr_assert_eq(knn_budget_join(dev, free_b / 2), 0); /* later engines keep the pool */
    cr_assert_eq(knn_budget_join(dev, free_b), 0);
    cr_assert_eq(knn_budget_engines(dev), 3);
    cr_assert_eq(knn_budget_share(dev, 0), KNN_BUDGET_MAX / 3, "three engines: a third each");
    cr_assert_eq(knn_budget_share(dev, 12345678), 12345678, "an explicit budget is kept");
    cr_assert_eq(knn_budget_share(dev, 1), KNN_BUDGET_MIN, "and raised to the minimum");
    cr_assert_eq(knn_budget_share(dev + 1, 0), KNN_BUDGET_MIN, "another device: no pool");
    knn_budget_leave(dev);
    knn_budget_leave(dev);
    cr_assert_eq(knn_budget_share(dev, 0), KNN_BUDGET_MAX);
    knn_budget_leave(dev);
    cr_assert_eq(knn_budget_engines(dev), 0);
    /* The next first engine sizes the pool from what it sees then. */
    cr_assert_eq(knn_budget_join(dev, (size_t)1 << 30), 0);
    cr_assert_eq(knn_budget_share(dev, 0), (size_t)1 << 28);
    knn_budget_leave(dev);
    cr_assert_eq(knn_budget_join(-1, free_b), -1);
    cr_assert_eq(knn_budget_join(KNN_BUDGET_DEVICES, free_b), -1);
}

/* Many joins and leaves from threads keep the count right. */
static void *s_join_leave(void *arg)
{
    (void)arg;
    for (int i = 0; i < 10000; i++) {
        knn_budget_join(7, (size_t)8 << 30);
        (void)knn_budget_share(7, 0);
        knn_budget_leave(7);
    }
    return NULL;
}

Test(gpu, budget_registry_is_thread_safe)
{
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, s_join_leave, NULL), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    cr_assert_eq(knn_budget_engines(7), 0);
}

/* Every row has one home, the homes are dense prefixes, and the counts add up. */
Test(gpu, rows_are_dealt_to_devices_in_dense_prefixes)
{
    const size_t B = KNN_PLAN_BLOCK_ROWS;
    const size_t ns[] = {0, 1, B - 1, B, B + 1, 3 * B + 17, 10 * B};
    for (int D = 1; D <= 5; D++)
        for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
            const size_t n = ns[ni];
            size_t total = 0, seen[5] = {0};
            for (int d = 0; d < D; d++)
                total += knn_plan_local_count(n, D, d);
            cr_assert_eq(total, n, "D %d n %zu", D, n);
            for (size_t r = 0; r < n; r++) {
                int d;
                size_t local;
                knn_plan_locate(r, D, &d, &local);
                cr_assert(d >= 0 && d < D);
                /* Rows arrive in order, so each device's next local row is its count so far. */
                cr_assert_eq(local, seen[d], "D %d row %zu", D, r);
                seen[d]++;
            }
            for (int d = 0; d < D; d++)
                cr_assert_eq(seen[d], knn_plan_local_count(n, D, d));
        }
}

/* Bytes a plan needs, counted as knn_cuda.cu allocates them. */
static size_t s_plan_bytes(const knn_plan_in_t *in, size_t tq, size_t tn, size_t splits, size_t k)
{
    const size_t list = k * (sizeof(float) + sizeof(uint64_t));
    return tq * (2 * in->dim * sizeof(float) + (in->fp16 ? in->dim * 2 : 0) + sizeof(float)) +
           tq * list * (in->halves * (splits + 1) + 1 + (size_t)in->ndev) +
           in->halves * tq * tn * sizeof(float);
}

Test(gpu, tiles_fit_the_budget)
{
    const size_t budgets[] = {(size_t)1 << 20, (size_t)64 << 20, (size_t)2 << 30};
    const size_t nqs[] = {1, 64, 10000, 1000000};
    const size_t ks[] = {1, 10, 1000};
    for (size_t bi = 0; bi < 3; bi++)
        for (size_t h = 1; h <= 2; h++)
            for (size_t qi = 0; qi < 4; qi++)
                for (size_t ki = 0; ki < 3; ki++) {
                    knn_plan_in_t in = {budgets[bi], 1000000, 132, 128, 0, 1, h};
                    size_t tq, tn, k = ks[ki];
                    knn_plan_tiles(&in, nqs[qi], k, &tq, &tn);
                    cr_assert(tq >= 1 && tq <= KNN_PLAN_TILE_Q_MAX && tq <= nqs[qi]);
                    cr_assert(tn >= KNN_PLAN_TILE_N_ALIGN && tn <= in.rows_max);
                    cr_assert(tn == in.rows_max || tn % KNN_PLAN_TILE_N_ALIGN == 0);
                    size_t splits = knn_plan_splits(in.sms_min, in.rows_max, tq, tn, k);
                    size_t need = s_plan_bytes(&in, tq, tn, splits, k);
                    /* Within the budget unless even the smallest tile does not fit. */
                    if (tq > 1 && tn > KNN_PLAN_TILE_N_ALIGN)
                        cr_assert_leq(need, in.budget, "budget %zu nq %zu k %zu halves %zu: %zu",
                                      in.budget, nqs[qi], k, h, need);
                }
    /* 2 GiB, 10,000 queries, k 10: a full query tile and a wide row tile. */
    knn_plan_in_t in = {(size_t)2 << 30, 1000000, 132, 128, 0, 1, 1};
    size_t tq, tn;
    knn_plan_tiles(&in, 10000, 10, &tq, &tn);
    cr_assert_eq(tq, KNN_PLAN_TILE_Q_MAX);
    cr_assert_geq(tn, 100000);
}

Test(gpu, splits_fill_the_device_but_stay_long_for_large_k)
{
    /* One query on an H100-sized device: many splits at k 10 ... */
    size_t s10 = knn_plan_splits(132, 1000000, 1, 1000000, 10);
    cr_assert_eq(s10, 1000000 / KNN_PLAN_SPLIT_MIN, "244 splits of 4096 columns, got %zu", s10);
    /* ... and at k 1000 every split is at least 64 k columns long. */
    size_t s1000 = knn_plan_splits(132, 1000000, 1, 1000000, 1000);
    cr_assert_leq(s1000, 1000000 / (KNN_PLAN_SPLIT_PER_K * 1000));
    cr_assert_geq(s1000, 1);
    cr_assert_leq(s1000, knn_plan_splits_cap(1000000, 1000));
    /* Enough queries fill the device without splits. */
    cr_assert_eq(knn_plan_splits(132, 1000000, 4096, 100000, 10), 1);
    /* A tiny device holds fewer rows than one split: one split. */
    cr_assert_eq(knn_plan_splits(132, 100, 1, 100, 10), 1);
}
