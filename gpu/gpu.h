/*
 * gpu.h - the GPU side of shoal as seen from plain C: which devices exist.
 *
 * No CUDA type appears here, so every module can include it whatever the build.
 * In a CUDA build the calls go to gpu_cuda.cu (CUDA runtime API only); in a
 * CPU-only build (no nvcc found, or NO_CUDA=1) they report SHOAL_ENODEV with
 * "built without CUDA". A CUDA build on a machine without a GPU or driver also
 * reports SHOAL_ENODEV, with the runtime's reason, and callers fall back to
 * the CPU. The exact k-NN engine (its own issue) grows on top of this.
 *
 * Thread-safety: all functions may be called from any thread.
 */
#ifndef SHOAL_GPU_H
#define SHOAL_GPU_H

#include "common/error.h"

#include <stddef.h>

typedef struct {
    int ordinal;           /* CUDA device number */
    char name[256];        /* e.g. "NVIDIA H200" */
    size_t total_bytes;    /* device memory */
    int cc_major;          /* compute capability, major */
    int cc_minor;          /* compute capability, minor */
} gpu_device_info_t;

/* Non-zero when this binary was built with CUDA. */
int gpu_built_with_cuda(void);

/*
 * Versions of the CUDA runtime, cuBLAS and NCCL this binary links, as one line
 * ("cuda runtime 13.0, cublas 13.0.0, nccl 2.27.3"), or "cpu-only build".
 * Borrowed static string.
 */
const char *gpu_build_info(void);

/*
 * Number of usable devices (>= 1), or SHOAL_ENODEV with the reason in err
 * (built without CUDA, no driver, no device).
 */
int gpu_device_count(shoal_err_t *err);

/* Describes device `ordinal`. SHOAL_ENODEV / SHOAL_EINVAL on error. */
int gpu_device_info(int ordinal, gpu_device_info_t *info, shoal_err_t *err);

#define GPU_CC_MAJOR_MIN 8 /* the build has code for sm_80 and later */

/*
 * Non-zero when the engine can run on the device described (compute
 * capability GPU_CC_MAJOR_MIN.0 or later, memory reported); else 0 with the
 * reason in why (why_len bytes). Pure: the suites call it with made-up infos.
 */
int gpu_device_usable(const gpu_device_info_t *info, char *why, size_t why_len);

#endif
