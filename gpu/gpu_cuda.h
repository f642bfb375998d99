/*
 * gpu_cuda.h - private: the C-callable entry points implemented in CUDA
 * (gpu_cuda.cu). Only gpu/ includes this, and only in CUDA builds.
 */
#ifndef SHOAL_GPU_CUDA_H
#define SHOAL_GPU_CUDA_H

#include "gpu/gpu.h"

#ifdef __cplusplus
extern "C" {
#endif

const char *gpu_cuda_build_info(void);
int gpu_cuda_device_count(shoal_err_t *err);
int gpu_cuda_device_info(int ordinal, gpu_device_info_t *info, shoal_err_t *err);

#ifdef __cplusplus
}
#endif

#endif
