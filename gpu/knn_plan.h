/*
 * knn_plan.h - private: the GPU engine's arithmetic that needs no GPU, in
 * plain C so the suites check it: where a row lives among the devices, how
 * a search is cut into tiles from a memory budget, and how many column
 * splits a row tile gets. gpu/knn_cuda.cu calls these; nothing here touches
 * CUDA.
 *
 * Rows over devices: global row r is in block b = r / KNN_PLAN_BLOCK_ROWS,
 * which lives on device b % D at local block b / D, so each device's rows
 * are a dense prefix of its arrays (what one GEMM reads).
 *
 * Thread-safety: pure functions.
 */
#ifndef SHOAL_KNN_PLAN_H
#define SHOAL_KNN_PLAN_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KNN_PLAN_BLOCK_ROWS 4096  /* rows dealt to one device at a time */
#define KNN_PLAN_TILE_Q_MAX 4096  /* most queries per tile */
#define KNN_PLAN_TILE_N_ALIGN 128 /* row tiles are a multiple of this (but the last) */
#define KNN_PLAN_SPLIT_MIN 4096   /* fewest columns per split of a row tile ... */
#define KNN_PLAN_SPLIT_PER_K 64   /* ... and at least this many per result kept */
#define KNN_PLAN_BLOCKS_PER_SM 8  /* splits aim at this many select blocks per SM */

/* Rows of a global count n that live on device d of ndev. */
size_t knn_plan_local_count(size_t n, int ndev, int d);

/* Where global row r lives: device *d, local row *local. */
void knn_plan_locate(size_t r, int ndev, int *d, size_t *local);

/* What a search's tiles are sized from. */
typedef struct {
    size_t budget;     /* bytes for tiles: the smallest of the devices' */
    size_t rows_max;   /* rows on the fullest device */
    int sms_min;       /* multiprocessors of the smallest device */
    size_t dim;        /* floats per row */
    int fp16;          /* an fp16 copy of each query tile too */
    int ndev;          /* devices (gather buffers on the first) */
    size_t halves;     /* 2 with two compute streams (two states and tiles), else 1 */
} knn_plan_in_t;

/*
 * Queries per tile (*tq, halved while the per-query lists would take more
 * than half the budget) and rows per GEMM tile (*tn, from what is left, a
 * multiple of KNN_PLAN_TILE_N_ALIGN, at least min(rows_max, that)).
 */
void knn_plan_tiles(const knn_plan_in_t *in, size_t nq, size_t k, size_t *tq, size_t *tn);

/*
 * Column splits of each row tile of tn rows on a device with sms
 * multiprocessors and rows rows, for tiles of tq queries and k results:
 * enough select blocks to fill the device (KNN_PLAN_BLOCKS_PER_SM per SM),
 * but each split at least max(KNN_PLAN_SPLIT_MIN, KNN_PLAN_SPLIT_PER_K * k)
 * columns: a split keeps its own best k, and one barely longer than k passes
 * nearly every column to the buffer and sorts it again and again (k = 1000
 * on 4096-column splits was ~148 buffer sorts per query per million rows).
 */
size_t knn_plan_splits(int sms, size_t rows, size_t tq, size_t tn, size_t k);

/* Upper bound of knn_plan_splits over devices with at most rows_max rows. */
size_t knn_plan_splits_cap(size_t rows_max, size_t k);

#ifdef __cplusplus
}
#endif

#endif
