/*
 * test_support.h - helpers shared by the Criterion suites in tests/.
 *
 * Each suite is a single .c file built into its own binary, so shared helpers
 * live here as static inline functions rather than in a library; a suite that
 * includes this header and uses only some of them gets no unused warnings.
 *
 * Reference distances: s_true_dist() is the metric computed in double
 * precision, independently of common/distance.c, with the same conventions
 * (L2 is squared, IP is the negated dot product, cosine is 1 - cos and 1 when
 * either vector is zero). s_magnitude() is the size the float computation
 * works at, for scaling tie and distance tolerances: for L2 |d|, for IP
 * |q| |x|, for cosine 1. The tolerances themselves stay in each suite.
 *
 * Scratch folders: s_remove_tree() is rm -r for the folders a suite made.
 */
#ifndef SHOAL_TESTS_TEST_SUPPORT_H
#define SHOAL_TESTS_TEST_SUPPORT_H

#include "common/distance.h"

#include <dirent.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Double-precision reference distances                                     */
/* ------------------------------------------------------------------------ */

static inline double s_dot(const float *a, const float *b, size_t dim)
{
    double sum = 0.0;
    for (size_t d = 0; d < dim; d++)
        sum += (double)a[d] * b[d];
    return sum;
}

static inline double s_true_dist(shoal_metric_t metric, const float *q, const float *x,
                                 size_t dim)
{
    if (metric == SHOAL_METRIC_L2) {
        double sum = 0.0;
        for (size_t d = 0; d < dim; d++) {
            double diff = (double)q[d] - x[d];
            sum += diff * diff;
        }
        return sum;
    }
    if (metric == SHOAL_METRIC_IP)
        return -s_dot(q, x, dim);
    double nq = s_dot(q, q, dim), nx = s_dot(x, x, dim);
    if (nq == 0 || nx == 0)
        return 1.0;
    return 1.0 - s_dot(q, x, dim) / sqrt(nq * nx);
}

/* The size the float computation works at, for tolerances; d is the true distance. */
static inline double s_magnitude(shoal_metric_t metric, const float *q, const float *x,
                                 size_t dim, double d)
{
    if (metric == SHOAL_METRIC_L2)
        return fabs(d);
    if (metric == SHOAL_METRIC_IP)
        return sqrt(s_dot(q, q, dim) * s_dot(x, x, dim));
    return 1.0;
}

/* ------------------------------------------------------------------------ */
/* Scratch folders                                                          */
/* ------------------------------------------------------------------------ */

/* Longest path s_remove_tree() descends into; longer entries are skipped. */
#define S_SUPPORT_PATH_MAX 1024

/* rm -r: removes path and, for a folder, everything under it; errors ignored. */
static inline void s_remove_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return;
    if (S_ISDIR(st.st_mode)) {
        DIR *dir = opendir(path);
        if (dir) {
            struct dirent *e;
            while ((e = readdir(dir)) != NULL) {
                if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                    continue;
                char child[S_SUPPORT_PATH_MAX];
                int len = snprintf(child, sizeof child, "%s/%s", path, e->d_name);
                if (len > 0 && len < S_SUPPORT_PATH_MAX)
                    s_remove_tree(child);
            }
            closedir(dir);
        }
        rmdir(path);
    } else {
        unlink(path);
    }
}

#endif
