/*
 * gpu.c - front of the GPU API: forwards to CUDA when built with it, and
 * answers "no device" otherwise. See gpu.h.
 */
#include "gpu/gpu.h"

#include <stdio.h>

int gpu_device_usable(const gpu_device_info_t *info, char *why, size_t why_len)
{
    if (info->cc_major < GPU_CC_MAJOR_MIN) {
        snprintf(why, why_len,
                 "GPU %d (%s) has compute capability %d.%d; this build has code for %d.0 and "
                 "later",
                 info->ordinal, info->name, info->cc_major, info->cc_minor, GPU_CC_MAJOR_MIN);
        return 0;
    }
    if (info->total_bytes == 0) {
        snprintf(why, why_len, "GPU %d (%s) reports no memory", info->ordinal, info->name);
        return 0;
    }
    return 1;
}

#ifdef SHOAL_HAVE_CUDA
#include "gpu/gpu_cuda.h"

int gpu_built_with_cuda(void)
{
    return 1;
}

const char *gpu_build_info(void)
{
    return gpu_cuda_build_info();
}

int gpu_device_count(shoal_err_t *err)
{
    return gpu_cuda_device_count(err);
}

int gpu_device_info(int ordinal, gpu_device_info_t *info, shoal_err_t *err)
{
    return gpu_cuda_device_info(ordinal, info, err);
}

#else /* CPU-only build */

int gpu_built_with_cuda(void)
{
    return 0;
}

const char *gpu_build_info(void)
{
    return "cpu-only build";
}

int gpu_device_count(shoal_err_t *err)
{
    return shoal_err_set(err, SHOAL_ENODEV, "no GPU device: shoal was built without CUDA");
}

int gpu_device_info(int ordinal, gpu_device_info_t *info, shoal_err_t *err)
{
    (void)ordinal;
    (void)info;
    return gpu_device_count(err);
}

#endif
