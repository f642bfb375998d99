/*
 * vec_check.c - the vector check; vec_check.h is the contract.
 */
#include "common/vec_check.h"

#include <float.h>
#include <inttypes.h>
#include <math.h>

/* The one "not finite" message: it completes a sentence about the row. */
static int s_not_finite(shoal_err_t *err, size_t c, float x)
{
    return shoal_err_set(err, SHOAL_EINVAL, "column %zu is not finite (%s)", c,
                         isnan(x) ? "NaN" : x > 0 ? "+Inf" : "-Inf");
}

static int s_check(shoal_metric_t metric, const float *v, size_t dim, int zero_ok,
                   shoal_err_t *err)
{
    /* In double: a float sum of squares overflows for components above
     * ~1e19, and the answer must not depend on a SIMD summation order. */
    double norm_sq = 0.0;
    for (size_t c = 0; c < dim; c++) {
        if (!isfinite(v[c]))
            return s_not_finite(err, c, v[c]);
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

/* The finite part of s_check alone. */
static int s_check_finite(const float *v, size_t dim, shoal_err_t *err)
{
    for (size_t c = 0; c < dim; c++)
        if (!isfinite(v[c]))
            return s_not_finite(err, c, v[c]);
    return SHOAL_OK;
}

/* vec_check_rows' loop; finite_only picks the rule. */
static int s_check_rows(const char *who, const char *what, const float *vecs, size_t n, size_t dim,
                        shoal_metric_t metric, int finite_only, const uint64_t *ids,
                        shoal_err_t *err)
{
    for (size_t i = 0; i < n; i++) {
        shoal_err_t why;
        shoal_err_clear(&why);
        const float *v = vecs + i * dim;
        int rc = finite_only ? s_check_finite(v, dim, &why) : vec_check(metric, v, dim, &why);
        if (rc == SHOAL_OK)
            continue;
        if (ids)
            return shoal_err_set(err, rc, "%s: %s %zu (id %" PRIu64 ") %s", who, what, i, ids[i],
                                 why.msg);
        return shoal_err_set(err, rc, "%s: %s %zu %s", who, what, i, why.msg);
    }
    return SHOAL_OK;
}

int vec_check_rows(const char *who, const char *what, const float *vecs, size_t n, size_t dim,
                   shoal_metric_t metric, const uint64_t *ids, shoal_err_t *err)
{
    return s_check_rows(who, what, vecs, n, dim, metric, 0, ids, err);
}

int vec_check_finite_rows(const char *who, const char *what, const float *vecs, size_t n,
                          size_t dim, const uint64_t *ids, shoal_err_t *err)
{
    return s_check_rows(who, what, vecs, n, dim, SHOAL_METRIC_L2, 1, ids, err);
}
