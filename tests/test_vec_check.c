/*
 * test_vec_check.c - the one vector check: finite components, a squared norm
 * a float holds (L2, IP), a direction (cosine), and messages that name the row.
 */
#include "common/vec_check.h"

#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <string.h>

static const shoal_metric_t s_metrics[] = {SHOAL_METRIC_L2, SHOAL_METRIC_IP, SHOAL_METRIC_COSINE};

Test(vec_check, ordinary_vectors_pass_under_every_metric)
{
    const float v[4] = {1.0f, -2.5f, 0.0f, 1e-30f};
    for (size_t m = 0; m < 3; m++) {
        shoal_err_t err;
        shoal_err_clear(&err);
        cr_assert_eq(vec_check(s_metrics[m], v, 4, &err), SHOAL_OK, "%s", err.msg);
        cr_assert_eq(vec_check_rows("insert", "row", v, 1, 4, s_metrics[m], NULL, &err), SHOAL_OK);
    }
}

Test(vec_check, non_finite_components_are_refused_and_named)
{
    const float bad[3] = {NAN, INFINITY, -INFINITY};
    const char *names[3] = {"NaN", "+Inf", "-Inf"};
    for (size_t b = 0; b < 3; b++) {
        for (size_t m = 0; m < 3; m++) {
            float v[4] = {1, 2, 3, 4};
            v[2] = bad[b];
            shoal_err_t err;
            shoal_err_clear(&err);
            cr_assert_eq(vec_check(s_metrics[m], v, 4, &err), SHOAL_EINVAL);
            cr_assert(strstr(err.msg, "column 2") && strstr(err.msg, names[b]), "%s", err.msg);
        }
    }
}

/* The reported case: 1e20 in every component is finite, but its squared norm
 * (4e40 at dim 4) overflows a float, so L2 and IP distances to it would be
 * infinite or NaN. Under cosine it is normalised in double first, so it is fine. */
Test(vec_check, squared_norm_beyond_a_float_is_refused_for_l2_and_ip)
{
    const float huge[4] = {1e20f, 1e20f, 1e20f, 1e20f};
    shoal_err_t err;
    for (size_t m = 0; m < 2; m++) {
        shoal_err_clear(&err);
        cr_assert_eq(vec_check(s_metrics[m], huge, 4, &err), SHOAL_EINVAL);
        cr_assert(strstr(err.msg, "more than a float holds"), "%s", err.msg);
    }
    shoal_err_clear(&err);
    cr_assert_eq(vec_check(SHOAL_METRIC_COSINE, huge, 4, &err), SHOAL_OK, "%s", err.msg);
    /* Just under the limit passes: sqrt(FLT_MAX / 4) per component. */
    float edge = (float)(sqrt((double)FLT_MAX / 4.0) * 0.999);
    const float near[4] = {edge, edge, edge, edge};
    cr_assert_eq(vec_check(SHOAL_METRIC_L2, near, 4, &err), SHOAL_OK, "%s", err.msg);
}

Test(vec_check, zero_vector_is_refused_only_under_cosine)
{
    const float zero[3] = {0, 0, 0};
    shoal_err_t err;
    shoal_err_clear(&err);
    cr_assert_eq(vec_check(SHOAL_METRIC_L2, zero, 3, &err), SHOAL_OK);
    cr_assert_eq(vec_check(SHOAL_METRIC_IP, zero, 3, &err), SHOAL_OK);
    cr_assert_eq(vec_check(SHOAL_METRIC_COSINE, zero, 3, &err), SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "zero vector"), "%s", err.msg);
    /* The exact engine's own guard lets a zero cosine query through. */
    shoal_err_clear(&err);
    cr_assert_eq(vec_check_engine_query(SHOAL_METRIC_COSINE, zero, 3, &err), SHOAL_OK);
    const float nan3[3] = {0, NAN, 0};
    cr_assert_eq(vec_check_engine_query(SHOAL_METRIC_COSINE, nan3, 3, &err), SHOAL_EINVAL);
}

Test(vec_check, rows_name_the_first_bad_row_and_its_id)
{
    float v[3 * 2] = {1, 1, 2, 2, 3, NAN};
    const uint64_t ids[3] = {10, 11, 12};
    shoal_err_t err;
    shoal_err_clear(&err);
    cr_assert_eq(vec_check_rows("insert", "row", v, 3, 2, SHOAL_METRIC_L2, ids, &err),
                 SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "insert: row 2 (id 12) column 1 is not finite (NaN)"), "%s",
              err.msg);
    shoal_err_clear(&err);
    cr_assert_eq(vec_check_rows("search", "query", v, 3, 2, SHOAL_METRIC_IP, NULL, &err),
                 SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "search: query 2 column 1"), "%s", err.msg);
    /* Only the rows asked for are read. */
    cr_assert_eq(vec_check_rows("search", "query", v, 2, 2, SHOAL_METRIC_IP, NULL, &err),
                 SHOAL_OK);
}
