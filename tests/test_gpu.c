/*
 * test_gpu.c - the GPU front answers consistently with how it was built and
 * what the machine has: a CPU-only build says "built without CUDA"; a CUDA
 * build on a machine without a GPU says why there is none (and the caller can
 * fall back); a CUDA build with GPUs describes each one.
 */
#include "gpu/gpu.h"

#include <criterion/criterion.h>
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
