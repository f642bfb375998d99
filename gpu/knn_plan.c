/*
 * knn_plan.c - the GPU engine's host-side arithmetic (knn_plan.h).
 */
#include "gpu/knn_plan.h"

#include <stdint.h>

static size_t s_min(size_t a, size_t b)
{
    return a < b ? a : b;
}

static size_t s_max(size_t a, size_t b)
{
    return a > b ? a : b;
}

size_t knn_plan_local_count(size_t n, int ndev, int d)
{
    const size_t B = KNN_PLAN_BLOCK_ROWS, D = (size_t)ndev;
    size_t full = n / B, rem = n % B;
    size_t cnt = (full / D) * B + ((size_t)d < full % D ? B : 0);
    if ((size_t)d == full % D)
        cnt += rem;
    return cnt;
}

void knn_plan_locate(size_t r, int ndev, int *d, size_t *local)
{
    const size_t B = KNN_PLAN_BLOCK_ROWS;
    size_t b = r / B;
    *d = (int)(b % (size_t)ndev);
    *local = (b / (size_t)ndev) * B + r % B;
}

static size_t s_split_min(size_t k)
{
    return s_max(KNN_PLAN_SPLIT_MIN, KNN_PLAN_SPLIT_PER_K * k);
}

size_t knn_plan_splits_cap(size_t rows_max, size_t k)
{
    return s_max(1, s_min(rows_max / s_split_min(k), 65535));
}

size_t knn_plan_splits(int sms, size_t rows, size_t tq, size_t tn, size_t k)
{
    size_t target = (size_t)sms * KNN_PLAN_BLOCKS_PER_SM;
    if (tq >= target)
        return 1;
    size_t s = (target + tq - 1) / tq;
    size_t by_cols = s_min(tn, rows) / s_split_min(k);
    return s_max(1, s_min(s, s_min(by_cols, 65535)));
}

void knn_plan_tiles(const knn_plan_in_t *in, size_t nq, size_t k, size_t *tq_out,
                    size_t *tn_out)
{
    const size_t target = (size_t)in->sms_min * KNN_PLAN_BLOCKS_PER_SM;
    const size_t list = k * (sizeof(float) + sizeof(uint64_t));
    const size_t splits_cap = knn_plan_splits_cap(in->rows_max, k);
    size_t tq = s_min(nq, KNN_PLAN_TILE_Q_MAX), fixed = 0;
    for (;;) {
        size_t splits = s_min((target + tq - 1) / tq, splits_cap);
        /* Two query slots, the fp16 copy, |q|^2, the states (per half), the
         * merged lists (per half), the gather and result lists. */
        size_t per_q = 2 * in->dim * sizeof(float) + (in->fp16 ? in->dim * 2 : 0) +
                       sizeof(float) + list * (in->halves * (splits + 1) + 1 + (size_t)in->ndev);
        fixed = tq * per_q;
        if (fixed <= in->budget / 2 || tq == 1)
            break;
        tq = (tq + 1) / 2;
    }
    size_t tn = in->budget > fixed ? (in->budget - fixed) / (in->halves * tq * sizeof(float)) : 0;
    tn = s_min(tn, (size_t)1 << 30); /* cuBLAS takes int sizes */
    if (tn >= in->rows_max)
        tn = in->rows_max;
    else if (tn >= KNN_PLAN_TILE_N_ALIGN)
        tn -= tn % KNN_PLAN_TILE_N_ALIGN;
    tn = s_max(tn, s_min(in->rows_max, KNN_PLAN_TILE_N_ALIGN));
    *tq_out = tq;
    *tn_out = tn;
}
