/*
 * knn_peak.cu - what the device itself can do, for the check program's
 * ratios (knn_cuda.h): cuBLAS SGEMM's rate on the search's own shape, and
 * the device's copy bandwidth, measured in the same run as the engine so
 * the percentages compare like with like (same card, clocks, driver).
 */
#include "gpu/knn_cuda.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#define S_REPS 5 /* timed repetitions after one warm-up */

static double s_fail(shoal_err_t *err, int ordinal, const char *what, const char *why)
{
    (void)cudaGetLastError();
    shoal_err_set(err, SHOAL_EGPU, "GPU %d: %s: %s", ordinal, what, why);
    return -1.0;
}

/* Milliseconds per repetition of fn over S_REPS, after one warm-up call. */
template <class F> static float s_time(F fn, cudaStream_t st)
{
    cudaEvent_t a, b;
    float ms = -1.0f;
    if (cudaEventCreateWithFlags(&a, cudaEventBlockingSync) != cudaSuccess)
        return -1.0f;
    if (cudaEventCreateWithFlags(&b, cudaEventBlockingSync) != cudaSuccess) {
        cudaEventDestroy(a);
        return -1.0f;
    }
    bool ok = fn();
    ok = ok && cudaEventRecord(a, st) == cudaSuccess;
    for (int r = 0; r < S_REPS && ok; r++)
        ok = fn();
    ok = ok && cudaEventRecord(b, st) == cudaSuccess && cudaEventSynchronize(b) == cudaSuccess;
    if (ok && cudaEventElapsedTime(&ms, a, b) == cudaSuccess)
        ms /= S_REPS;
    else
        ms = -1.0f;
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    return ms;
}

extern "C" double knn_cuda_sgemm_tflops(int ordinal, size_t m, size_t n, size_t kd,
                                        shoal_err_t *err)
{
    float *a = NULL, *b = NULL, *c = NULL;
    cublasHandle_t h = NULL;
    double rate = -1.0;
    if (cudaSetDevice(ordinal) != cudaSuccess)
        return s_fail(err, ordinal, "SGEMM peak", "cannot select the device");
    if (cudaMalloc(&a, m * kd * sizeof(float)) != cudaSuccess ||
        cudaMalloc(&b, n * kd * sizeof(float)) != cudaSuccess ||
        cudaMalloc(&c, m * n * sizeof(float)) != cudaSuccess ||
        cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) {
        s_fail(err, ordinal, "SGEMM peak", "out of memory for the operands");
    } else {
        const float one = 1.0f, zero = 0.0f;
        cublasSetMathMode(h, CUBLAS_DEFAULT_MATH); /* fp32, as the engine */
        cudaMemset(a, 0, m * kd * sizeof(float));
        cudaMemset(b, 0, n * kd * sizeof(float));
        /* The engine's layout: (n x m, column-major) = B^T A. */
        float ms = s_time(
            [&] {
                return cublasSgemm(h, CUBLAS_OP_T, CUBLAS_OP_N, (int)n, (int)m, (int)kd, &one, b,
                                   (int)kd, a, (int)kd, &zero, c, (int)n) ==
                       CUBLAS_STATUS_SUCCESS;
            },
            0);
        if (ms > 0)
            rate = 2.0 * (double)m * (double)n * (double)kd / ((double)ms * 1e9);
        else
            s_fail(err, ordinal, "SGEMM peak", "timing failed");
    }
    if (h)
        cublasDestroy(h);
    cudaFree(a);
    cudaFree(b);
    cudaFree(c);
    return rate;
}

extern "C" double knn_cuda_copy_gbps(int ordinal, size_t bytes, shoal_err_t *err)
{
    void *src = NULL, *dst = NULL;
    double rate = -1.0;
    if (cudaSetDevice(ordinal) != cudaSuccess)
        return s_fail(err, ordinal, "copy bandwidth", "cannot select the device");
    if (cudaMalloc(&src, bytes) != cudaSuccess || cudaMalloc(&dst, bytes) != cudaSuccess) {
        s_fail(err, ordinal, "copy bandwidth", "out of memory for the buffers");
    } else {
        float ms = s_time(
            [&] { return cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, 0) ==
                         cudaSuccess; },
            0);
        /* A copy reads and writes every byte: what a scan of the rows reads is half. */
        if (ms > 0)
            rate = 2.0 * (double)bytes / ((double)ms * 1e6);
        else
            s_fail(err, ordinal, "copy bandwidth", "timing failed");
    }
    cudaFree(src);
    cudaFree(dst);
    return rate;
}
