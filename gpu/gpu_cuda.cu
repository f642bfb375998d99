/*
 * gpu_cuda.cu - device discovery through the CUDA runtime API, and the
 * versions of the libraries linked. Every runtime status is turned into a
 * shoal error that says what was being done.
 */
#include "gpu/gpu_cuda.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <nccl.h>

#include <stdio.h>
#include <string.h>

static char s_build_info[160];

extern "C" const char *gpu_cuda_build_info(void)
{
    if (s_build_info[0])
        return s_build_info;
    int rt = 0;
    if (cudaRuntimeGetVersion(&rt) != cudaSuccess)
        rt = CUDART_VERSION;
    int bl_major = 0, bl_minor = 0, bl_patch = 0;
    cublasGetProperty(MAJOR_VERSION, &bl_major);
    cublasGetProperty(MINOR_VERSION, &bl_minor);
    cublasGetProperty(PATCH_LEVEL, &bl_patch);
    int nccl = 0;
    if (ncclGetVersion(&nccl) != ncclSuccess)
        nccl = 0;
    /* NCCL >= 2.9 encodes major*10000 + minor*100 + patch. */
    snprintf(s_build_info, sizeof s_build_info,
             "cuda runtime %d.%d, cublas %d.%d.%d, nccl %d.%d.%d", rt / 1000, (rt % 1000) / 10,
             bl_major, bl_minor, bl_patch, nccl / 10000, (nccl % 10000) / 100, nccl % 100);
    return s_build_info;
}

extern "C" int gpu_cuda_device_count(shoal_err_t *err)
{
    int count = 0;
    cudaError_t rc = cudaGetDeviceCount(&count);
    if (rc != cudaSuccess) {
        /* Clear the sticky error so later calls are not poisoned by it. */
        cudaGetLastError();
        return shoal_err_set(err, SHOAL_ENODEV, "no GPU device: counting CUDA devices: %s (%s)",
                             cudaGetErrorString(rc), cudaGetErrorName(rc));
    }
    if (count < 1)
        return shoal_err_set(err, SHOAL_ENODEV, "no GPU device: the CUDA runtime found none");
    return count;
}

extern "C" int gpu_cuda_device_info(int ordinal, gpu_device_info_t *info, shoal_err_t *err)
{
    int count = gpu_cuda_device_count(err);
    if (count < 0)
        return count;
    if (ordinal < 0 || ordinal >= count)
        return shoal_err_set(err, SHOAL_EINVAL, "GPU %d does not exist (devices: 0..%d)", ordinal,
                             count - 1);
    cudaDeviceProp prop;
    cudaError_t rc = cudaGetDeviceProperties(&prop, ordinal);
    if (rc != cudaSuccess)
        return shoal_err_set(err, SHOAL_EGPU, "reading properties of GPU %d: %s", ordinal,
                             cudaGetErrorString(rc));
    memset(info, 0, sizeof *info);
    info->ordinal = ordinal;
    snprintf(info->name, sizeof info->name, "%s", prop.name);
    info->total_bytes = prop.totalGlobalMem;
    info->cc_major = prop.major;
    info->cc_minor = prop.minor;
    return SHOAL_OK;
}
