/*
 * vec_check.c - the vector check; vec_check.h is the contract.
 */
#include "common/vec_check.h"

#include <float.h>
#include <inttypes.h>
#include <math.h>

static int s_check(shoal_metric_t metric, const float *v, size_t dim, int zero_ok,
                   shoal_err_t *err)
{
    /* In double: a float sum of squares overflows for components above
     * ~1e19, and the answer must not depend on a SIMD summation order. */
    double norm_sq = 0.0;
    for (size_t c = 0; c < dim; c++) {
        if (!isfinite(v[c]))
            return shoal_err_set(err, SHOAL_EINVAL, "column %zu is not finite (%s)", c,
                                 isnan(v[c]) ? "NaN" : v[c] > 0 ? "+Inf" : "-Inf");
        norm_sq += (double)v[c] * (double)v[c];
    }
    if (metric == SHOAL_METRIC_COSINE && norm_sq == 0.0 && !zero_ok)
        return shoal_err_set(err, SHOAL_EINVAL,
                             "is a zero vector, which has no direction under cosine");
    if (metric != SHOAL_METRIC_COSINE && norm_sq > FLT_MAX)
        return shoal_err_set(err, SHOAL_EINVAL,
                             "has squared norm %.3g, more than a float holds (%.3g)", norm_sq,
                             (double)FLT_MAX);
    return SHOAL_OK;
}

int vec_check(shoal_metric_t metric, const float *v, size_t dim, shoal_err_t *err)
{
    return s_check(metric, v, dim, 0, err);
}

int vec_check_engine_query(shoal_metric_t metric, const float *v, size_t dim, shoal_err_t *err)
{
    return s_check(metric, v, dim, 1, err);
}

int vec_check_rows(const char *who, const char *what, const float *vecs, size_t n, size_t dim,
                   shoal_metric_t metric, const uint64_t *ids, shoal_err_t *err)
{
    for (size_t i = 0; i < n; i++) {
        shoal_err_t why;
        shoal_err_clear(&why);
        int rc = vec_check(metric, vecs + i * dim, dim, &why);
        if (rc == SHOAL_OK)
            continue;
        if (ids)
            return shoal_err_set(err, rc, "%s: %s %zu (id %" PRIu64 ") %s", who, what, i, ids[i],
                                 why.msg);
        return shoal_err_set(err, rc, "%s: %s %zu %s", who, what, i, why.msg);
    }
    return SHOAL_OK;
}
