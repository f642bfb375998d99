/*
 * test_gpu.c - the GPU front answers consistently with how it was built and
 * what the machine has: a CPU-only build says "built without CUDA"; a CUDA
 * build on a machine without a GPU says why there is none (and the caller can
 * fall back); a CUDA build with GPUs describes each one. Plus the host-side
 * logic the CUDA engine relies on, checked in every build: which devices
 * "auto" takes, and the per-device budget shared by engines.
 */
#include "gpu/gpu.h"
#include "gpu/knn_budget.h"

#include <criterion/criterion.h>
#include <pthread.h>
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
