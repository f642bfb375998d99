/*
 * knn_budget.h - private: one search-memory budget per GPU, shared by every
 * exact engine on it (gpu/knn_cuda.cu asks; plain C, so the suites check it
 * without a GPU).
 *
 * A shard holds one engine per collection. Each sizing its own budget from
 * the free memory (a quarter, at most KNN_BUDGET_MAX) let ten collections take
 * ten budgets on one device. Instead the first engine on a device fixes the
 * device's pool from the free memory it sees, and every engine on that
 * device gets an equal share of it, recomputed at each search, so a new
 * collection shrinks the others' tiles rather than running the device out of
 * memory. An engine given an explicit budget (knn_params_t.mem_budget) keeps
 * it and takes no share. The pool is dropped when the last engine leaves, so
 * the next one sees the memory as it is then.
 *
 * Thread-safety: every function takes one process-wide mutex.
 */
#ifndef SHOAL_KNN_BUDGET_H
#define SHOAL_KNN_BUDGET_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KNN_BUDGET_MAX ((size_t)2 << 30) /* a device's pool: 1/4 free memory, at most this */
#define KNN_BUDGET_MIN ((size_t)1 << 20) /* no share is below this */
#define KNN_BUDGET_DEVICES 64            /* device ordinals 0..63 are pooled */

/*
 * An engine joins device `ordinal`, which had free_bytes free when it looked.
 * Returns 0, or -1 for an ordinal outside 0..KNN_BUDGET_DEVICES-1.
 */
int knn_budget_join(int ordinal, size_t free_bytes);

/* The engine leaves the device (the pool goes with the last one). */
void knn_budget_leave(int ordinal);

/*
 * Bytes one engine on `ordinal` may use for search tiles now: `requested`
 * when non-zero, else the pool divided by the engines on the device, at
 * least KNN_BUDGET_MIN.
 */
size_t knn_budget_share(int ordinal, size_t requested);

/* Engines on the device now (for tests and logs). */
int knn_budget_engines(int ordinal);

#ifdef __cplusplus
}
#endif

#endif
