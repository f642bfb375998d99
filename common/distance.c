/*
 * distance.c - see distance.h. Metric names, the scalar reference kernels, the
 * choice of implementation, and the helpers built on the chosen kernels.
 *
 * The scalar kernels are the reference the SIMD ones are tested against, so
 * they are the plainest possible loops: one float accumulator, summed in index
 * order. Without -ffast-math the compiler may not reorder a float sum, so these
 * loops stay scalar and their results are reproducible.
 *
 * The choice is made once (pthread_once) and never changes, so every search in
 * a process uses one implementation and gives the same bits for the same data.
 */
#include "common/distance.h"
#include "common/distance_impl.h"
#include "common/error.h"
#include "common/log.h"

#include <assert.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <strings.h>

/* ------------------------------------------------------------------------ */
/* Metric names                                                             */
/* ------------------------------------------------------------------------ */

static const char *const s_metric_names[] = {"l2", "ip", "cosine"};

#define S_NMETRICS (sizeof s_metric_names / sizeof s_metric_names[0])

const char *shoal_metric_name(shoal_metric_t metric)
{
    if ((size_t)metric >= S_NMETRICS)
        return "?";
    return s_metric_names[metric];
}

int shoal_metric_parse(const char *text, shoal_metric_t *metric)
{
    if (!text)
        return SHOAL_EINVAL;
    for (size_t i = 0; i < S_NMETRICS; i++) {
        if (strcasecmp(text, s_metric_names[i]) == 0) {
            *metric = (shoal_metric_t)i;
            return SHOAL_OK;
        }
    }
    return SHOAL_EINVAL;
}

/* ------------------------------------------------------------------------ */
/* Scalar reference kernels                                                 */
/* ------------------------------------------------------------------------ */

static float s_l2sq_scalar(const float *a, const float *b, size_t dim)
{
    float sum = 0.0f;
    for (size_t i = 0; i < dim; i++) {
        float diff = a[i] - b[i];
        sum += diff * diff;
    }
    return sum;
}

static float s_dot_scalar(const float *a, const float *b, size_t dim)
{
    float sum = 0.0f;
    for (size_t i = 0; i < dim; i++)
        sum += a[i] * b[i];
    return sum;
}

static float s_cosine_scalar(const float *a, const float *b, size_t dim)
{
    float dot = 0.0f, norm_sq_a = 0.0f, norm_sq_b = 0.0f;
    for (size_t i = 0; i < dim; i++) {
        dot += a[i] * b[i];
        norm_sq_a += a[i] * a[i];
        norm_sq_b += b[i] * b[i];
    }
    return dist_cosine_finish(dot, norm_sq_a, norm_sq_b);
}

static void s_l2sq_batch_scalar(const float *query, const float *base, size_t n, size_t dim,
                                size_t stride, float *out)
{
    for (size_t i = 0; i < n; i++)
        out[i] = s_l2sq_scalar(query, base + i * stride, dim);
}

static void s_dot_batch_scalar(const float *query, const float *base, size_t n, size_t dim,
                               size_t stride, float *out)
{
    for (size_t i = 0; i < n; i++)
        out[i] = s_dot_scalar(query, base + i * stride, dim);
}

const dist_kernels_t dist_kernels_scalar_table = {
    .name = "scalar",
    .impl = DIST_IMPL_SCALAR,
    .l2sq = s_l2sq_scalar,
    .dot = s_dot_scalar,
    .cosine = s_cosine_scalar,
    .l2sq_batch = s_l2sq_batch_scalar,
    .dot_batch = s_dot_batch_scalar,
};

/* ------------------------------------------------------------------------ */
/* Choosing an implementation                                               */
/* ------------------------------------------------------------------------ */

/*
 * Whether this CPU can run impl. __builtin_cpu_supports also asks the OS
 * (XGETBV) whether it saves the YMM / ZMM and mask registers, so a feature the
 * kernel has disabled reads as absent. The AVX-512 file is built with -mavx2
 * -mfma as well, so it needs all three.
 */
static int s_cpu_supports(dist_impl_t impl)
{
    __builtin_cpu_init();
    switch (impl) {
    case DIST_IMPL_SCALAR:
        return 1;
    case DIST_IMPL_AVX2:
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    case DIST_IMPL_AVX512:
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") &&
               __builtin_cpu_supports("fma");
    default:
        return 0;
    }
}

/* Indexed by dist_impl_t. */
static const dist_kernels_t *const s_tables[DIST_IMPL_COUNT] = {
    &dist_kernels_scalar_table,
    &dist_kernels_avx2_table,
    &dist_kernels_avx512_table,
};

static pthread_once_t s_choose_once = PTHREAD_ONCE_INIT;
static const dist_kernels_t *s_chosen; /* written once under s_choose_once */

static dist_impl_t s_best_impl(void)
{
    dist_impl_t best = DIST_IMPL_SCALAR;
    for (int impl = DIST_IMPL_SCALAR; impl < DIST_IMPL_COUNT; impl++)
        if (s_cpu_supports((dist_impl_t)impl))
            best = (dist_impl_t)impl;
    return best;
}

/*
 * SHOAL_SIMD may name any implementation the CPU supports, usually a lower one
 * to compare or to rule a SIMD kernel out while debugging. A value we cannot
 * honour is a warning, not an error: the process still runs, on the best one.
 */
static void s_choose_kernels(void)
{
    dist_impl_t best = s_best_impl();
    dist_impl_t chosen = best;
    const char *forced = getenv("SHOAL_SIMD");
    if (forced && *forced) {
        int found = 0;
        for (int impl = DIST_IMPL_SCALAR; impl < DIST_IMPL_COUNT; impl++) {
            if (strcasecmp(forced, s_tables[impl]->name) != 0)
                continue;
            found = 1;
            if (s_cpu_supports((dist_impl_t)impl))
                chosen = (dist_impl_t)impl;
            else
                log_warn("SHOAL_SIMD=\"%s\": this CPU does not support it; using %s", forced,
                         s_tables[best]->name);
        }
        if (!found)
            log_warn("SHOAL_SIMD=\"%s\" is not one of scalar|avx2|avx512; using %s", forced,
                     s_tables[best]->name);
    }
    s_chosen = s_tables[chosen];
    log_debug("distance kernels: %s (best supported: %s%s)", s_chosen->name, s_tables[best]->name,
              chosen != best ? ", lowered by SHOAL_SIMD" : "");
}

const dist_kernels_t *dist_kernels(void)
{
    pthread_once(&s_choose_once, s_choose_kernels);
    return s_chosen;
}

const dist_kernels_t *dist_kernels_get(dist_impl_t impl)
{
    if ((unsigned)impl >= DIST_IMPL_COUNT || !s_cpu_supports(impl))
        return NULL;
    return s_tables[impl];
}

/* ------------------------------------------------------------------------ */
/* Convenience                                                              */
/* ------------------------------------------------------------------------ */

float dist_l2sq(const float *a, const float *b, size_t dim)
{
    return dist_kernels()->l2sq(a, b, dim);
}

float dist_dot(const float *a, const float *b, size_t dim)
{
    return dist_kernels()->dot(a, b, dim);
}

float dist_cosine(const float *a, const float *b, size_t dim)
{
    return dist_kernels()->cosine(a, b, dim);
}

float dist_metric(shoal_metric_t metric, const float *a, const float *b, size_t dim)
{
    const dist_kernels_t *kernels = dist_kernels();
    switch (metric) {
    case SHOAL_METRIC_L2:
        return kernels->l2sq(a, b, dim);
    case SHOAL_METRIC_IP:
        return -kernels->dot(a, b, dim);
    case SHOAL_METRIC_COSINE:
        return kernels->cosine(a, b, dim);
    }
    /* Metrics are parsed and checked at every boundary; this is a bug. */
    assert(!"dist_metric: invalid metric");
    return NAN;
}

float dist_norm_sq(const float *a, size_t dim)
{
    return dist_kernels()->dot(a, a, dim);
}

/*
 * The norm is summed in double: a float sum of squares overflows for
 * components above ~1e19 and loses small vectors to underflow, and this runs
 * once per stored vector, not in a search loop, so exactness is cheap.
 * Everything is checked before the first write, so a rejected v is untouched.
 */
int dist_normalize(float *v, size_t dim)
{
    double norm_sq = 0.0;
    for (size_t i = 0; i < dim; i++) {
        if (!isfinite(v[i]))
            return SHOAL_EINVAL;
        norm_sq += (double)v[i] * (double)v[i];
    }
    if (norm_sq == 0.0)
        return SHOAL_EINVAL;
    double norm = sqrt(norm_sq);
    for (size_t i = 0; i < dim; i++)
        v[i] = (float)((double)v[i] / norm);
    return SHOAL_OK;
}
