/*
 * knn_emu.h - private: a device emulated on the host, behind the same table
 * of functions as the CUDA engine (knn_dev.h), for the suites: it keeps the
 * rows as a device would (fp32, or rounded to fp16), computes the GEMM form
 * of the distance in float (|q|^2 + |x|^2 - 2 q.x summed in plain order, so it
 * cancels as cuBLAS does, just in another order than the CPU) and keeps the
 * best k by (scan distance, id), a NaN ranked first as -INFINITY. It can be
 * told to fail: after a number of searches, every search returns a chosen
 * error, as a device with a sticky error does.
 *
 * Thread-safety: the failure settings are process-wide and meant for one
 * suite at a time; an emulated device is used by one thread at a time.
 */
#ifndef SHOAL_KNN_EMU_H
#define SHOAL_KNN_EMU_H

#include "gpu/knn_dev.h"

extern const knn_dev_ops_t knn_emu_ops;

/*
 * From the `after`-th next search on (0 = the next one), searches fail with
 * `code` (SHOAL_EGPU, SHOAL_ENOMEM); code 0 turns failures off.
 */
void knn_emu_fail_searches(int after, int code);

/* Searches the emulated devices answered since the process started. */
unsigned long knn_emu_searches(void);

#endif
