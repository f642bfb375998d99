/*
 * placement.c - IVF lists onto shards: order by recursive bisection, cut into
 * size-balanced contiguous segments, shift for replicas (see placement.h).
 */
#include "coordinator/placement.h"
#include "coordinator/placement_private.h"

#include "common/log.h"
#include "common/vec_check.h"
#include "gpu/knn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Checks                                                                   */
/* ------------------------------------------------------------------------ */

int placement_check_centroids(const char *fn, const float *centroids, size_t nlist, size_t dim,
                              shoal_metric_t metric, shoal_err_t *err)
{
    if (!centroids)
        return shoal_err_set(err, SHOAL_EINVAL, "%s: NULL centroids", fn);
    if (nlist == 0 || dim == 0)
        return shoal_err_set(err, SHOAL_EINVAL, "%s: nlist and dim must be >= 1, got nlist %zu, "
                             "dim %zu", fn, nlist, dim);
    if (metric != SHOAL_METRIC_L2 && metric != SHOAL_METRIC_IP && metric != SHOAL_METRIC_COSINE)
        return shoal_err_set(err, SHOAL_EINVAL, "%s: unknown metric %d", fn, (int)metric);
    if (nlist > UINT32_MAX || dim > SIZE_MAX / sizeof(double) / nlist)
        return shoal_err_set(err, SHOAL_EINVAL, "%s: %zu centroids of dim %zu are too many", fn,
                             nlist, dim);
    /* The one vector check (vec_check.h): k-means' centroids pass it by
       construction, so this only guards direct callers (tests, tools). */
    return vec_check_rows(fn, "centroid", centroids, nlist, dim, metric, NULL, err);
}

int placement_check_shards(const char *fn, size_t nshards, size_t replicas, shoal_err_t *err)
{
    if (nshards == 0 || nshards > PLACEMENT_SHARDS_MAX)
        return shoal_err_set(err, SHOAL_EINVAL, "%s: nshards must be in 1..%d, got %zu", fn,
                             PLACEMENT_SHARDS_MAX, nshards);
    if (replicas == 0 || replicas > nshards)
        return shoal_err_set(err, SHOAL_EINVAL, "%s: replicas must be in 1..nshards, got "
                             "replicas %zu with nshards %zu", fn, replicas, nshards);
    return 0;
}

int placement_check(const uint32_t *owners, size_t nlist, size_t nshards, size_t replicas,
                    shoal_err_t *err)
{
    for (size_t i = 0; i < nlist; i++) {
        const uint32_t *o = owners + i * replicas;
        for (size_t r = 0; r < replicas; r++) {
            if (o[r] >= nshards)
                return shoal_err_set(err, SHOAL_EINTERNAL, "placement: list %zu replica %zu on "
                                     "shard %u, expected < %zu", i, r, o[r], nshards);
            for (size_t q = 0; q < r; q++)
                if (o[q] == o[r])
                    return shoal_err_set(err, SHOAL_EINTERNAL, "placement: list %zu has "
                                         "replicas %zu and %zu both on shard %u", i, q, r, o[r]);
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Order: recursive bisection along principal directions                    */
/* ------------------------------------------------------------------------ */

typedef struct {
    double proj; /* projection on the set's principal direction */
    size_t list; /* list number; breaks ties */
} s_proj_t;

typedef struct {
    const float *centroids; /* nlist x dim */
    size_t dim;             /* floats per centroid */
    size_t *order;          /* nlist list numbers, rearranged in place */
    s_proj_t *pairs;        /* nlist scratch for sorting */
} s_order_t;

static int s_cmp_proj(const void *a, const void *b)
{
    const s_proj_t *x = a, *y = b;
    if (x->proj != y->proj)
        return x->proj < y->proj ? -1 : 1;
    return x->list < y->list ? -1 : x->list > y->list;
}

static double s_centered_dot(const float *row, const double *mean, const double *v, size_t dim)
{
    double s = 0.0;
    for (size_t d = 0; d < dim; d++)
        s += ((double)row[d] - mean[d]) * v[d];
    return s;
}

static int s_normalize(double *v, size_t dim)
{
    double n = 0.0;
    for (size_t d = 0; d < dim; d++)
        n += v[d] * v[d];
    if (!(n > 0.0))
        return -1;
    n = 1.0 / sqrt(n);
    for (size_t d = 0; d < dim; d++)
        v[d] *= n;
    return 0;
}

/* mean = the mean of the members order[lo, hi) (at least one). */
static void s_members_mean(const s_order_t *o, size_t lo, size_t hi, double *mean)
{
    size_t dim = o->dim;
    memset(mean, 0, dim * sizeof(double));
    for (size_t k = lo; k < hi; k++) {
        const float *row = o->centroids + o->order[k] * dim;
        for (size_t d = 0; d < dim; d++)
            mean[d] += row[d];
    }
    for (size_t d = 0; d < dim; d++)
        mean[d] /= (double)(hi - lo);
}

/* Power iteration on the members' (unnormalised) covariance, from unit v:
 * w = sum (x-mu) <x-mu, v>, normalised, into v; w is scratch. Stops early at a zero w. */
static void s_power_iterate(const s_order_t *o, size_t lo, size_t hi, const double *mean, double *v,
                            double *w)
{
    size_t dim = o->dim;
    for (int t = 0; t < PLACEMENT_POWER_ITERS; t++) {
        memset(w, 0, dim * sizeof(double));
        for (size_t k = lo; k < hi; k++) {
            const float *row = o->centroids + o->order[k] * dim;
            double p = s_centered_dot(row, mean, v, dim);
            for (size_t d = 0; d < dim; d++)
                w[d] += ((double)row[d] - mean[d]) * p;
        }
        if (s_normalize(w, dim) != 0)
            break;
        memcpy(v, w, dim * sizeof(double));
    }
}

/*
 * Orders order[lo, hi). parent (NULL at the top) is the parent's unit
 * direction: the start of the power iteration, and the orientation the result
 * is flipped to agree with.
 */
static int s_bisect(s_order_t *o, size_t lo, size_t hi, const double *parent)
{
    size_t m = hi - lo, dim = o->dim;
    if (m < 2)
        return 0;
    double *buf = malloc(3 * dim * sizeof(double));
    if (!buf)
        return SHOAL_ENOMEM;
    double *mean = buf, *v = buf + dim, *w = buf + 2 * dim;

    s_members_mean(o, lo, hi, mean);

    /* Start: towards the member farthest from the mean, plus the parent's
     * direction, so the start is never orthogonal to both. */
    size_t far = o->order[lo];
    double far_d = -1.0;
    for (size_t k = lo; k < hi; k++) {
        const float *row = o->centroids + o->order[k] * dim;
        double s = 0.0;
        for (size_t d = 0; d < dim; d++)
            s += ((double)row[d] - mean[d]) * ((double)row[d] - mean[d]);
        if (s > far_d) {
            far_d = s;
            far = o->order[k];
        }
    }
    for (size_t d = 0; d < dim; d++)
        v[d] = (double)o->centroids[far * dim + d] - mean[d];
    if (s_normalize(v, dim) != 0) {
        free(buf); /* every member at the same point: any order will do */
        return 0;
    }
    if (parent)
        for (size_t d = 0; d < dim; d++)
            v[d] += parent[d];
    if (s_normalize(v, dim) != 0)
        v[0] = 1.0;

    s_power_iterate(o, lo, hi, mean, v, w);
    if (parent) {
        double s = 0.0;
        for (size_t d = 0; d < dim; d++)
            s += v[d] * parent[d];
        if (s < 0.0)
            for (size_t d = 0; d < dim; d++)
                v[d] = -v[d];
    }

    for (size_t k = lo; k < hi; k++) {
        size_t list = o->order[k];
        o->pairs[k].proj = s_centered_dot(o->centroids + list * dim, mean, v, dim);
        o->pairs[k].list = list;
    }
    qsort(o->pairs + lo, m, sizeof(s_proj_t), s_cmp_proj);
    for (size_t k = lo; k < hi; k++)
        o->order[k] = o->pairs[k].list;

    int rc = s_bisect(o, lo, lo + m / 2, v);
    if (!rc)
        rc = s_bisect(o, lo + m / 2, hi, v);
    free(buf);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Cut: contiguous, size-balanced segments                                  */
/* ------------------------------------------------------------------------ */

static uint64_t s_seg(const uint64_t *prefix, const size_t *bounds, size_t j)
{
    return prefix[bounds[j + 1]] - prefix[bounds[j]];
}

static double s_absdiff(uint64_t a, double t)
{
    return fabs((double)a - t);
}

/*
 * bounds[0..nshards]: segment j is positions [bounds[j], bounds[j+1]) of the
 * order; prefix[k] is the total of the first k lists in the order.
 */
static void s_cut(const uint64_t *prefix, size_t nlist, size_t nshards, size_t *bounds)
{
    double total = (double)prefix[nlist];
    bounds[0] = 0;
    bounds[nshards] = nlist;
    for (size_t j = 1; j < nshards; j++) {
        double target = total * (double)j / (double)nshards;
        size_t i = bounds[j - 1];
        while (i < nlist && s_absdiff(prefix[i + 1], target) < s_absdiff(prefix[i], target))
            i++;
        bounds[j] = i;
    }
    /* Local repair: move one boundary by one list while that lowers the larger
     * of its two segments. Each move lowers the sorted vector of segment totals
     * lexicographically, so this ends; the pass cap is only a guard. */
    for (size_t pass = 0; pass < nlist + nshards; pass++) {
        int moved = 0;
        for (size_t j = 1; j < nshards; j++) {
            uint64_t left = s_seg(prefix, bounds, j - 1), right = s_seg(prefix, bounds, j);
            uint64_t cur = left > right ? left : right;
            if (bounds[j] > bounds[j - 1]) {
                uint64_t w = prefix[bounds[j]] - prefix[bounds[j] - 1];
                uint64_t nmax = left - w > right + w ? left - w : right + w;
                if (nmax < cur) {
                    bounds[j]--;
                    moved = 1;
                    continue;
                }
            }
            if (bounds[j] < bounds[j + 1]) {
                uint64_t w = prefix[bounds[j] + 1] - prefix[bounds[j]];
                uint64_t nmax = left + w > right - w ? left + w : right - w;
                if (nmax < cur) {
                    bounds[j]++;
                    moved = 1;
                }
            }
        }
        if (!moved)
            break;
    }
}

/* ------------------------------------------------------------------------ */
/* Locality score                                                           */
/* ------------------------------------------------------------------------ */

/*
 * The k nearest centroids of up to nq_max evenly spaced centroids (all of
 * them when nq_max >= nlist): *found (caller frees) is *nq x k. The CPU
 * engine, so that placing lists never claims a GPU and gives the same answer
 * everywhere.
 */
int placement_probe(const float *centroids, size_t nlist, size_t dim, shoal_metric_t metric,
                    size_t nq_max, size_t k, size_t *nq_out, uint64_t **found_out, shoal_err_t *err)
{
    size_t nq = nlist < nq_max ? nlist : nq_max;
    int every = nq == nlist; /* the centroids are the queries: no copy */
    float *queries = every ? NULL : malloc(nq * dim * sizeof(float));
    uint64_t *ids = malloc(nlist * sizeof(uint64_t));
    uint64_t *found = malloc(nq * k * sizeof(uint64_t));
    knn_engine_t *engine = NULL;
    int rc = 0;
    if ((!every && !queries) || !ids || !found) {
        rc = shoal_err_set(err, SHOAL_ENOMEM, "placement: out of memory for %zu nearest "
                           "centroids of %zu", k, nq);
        goto done;
    }
    for (size_t q = 0; q < nq && !every; q++)
        memcpy(queries + q * dim, centroids + (q * nlist / nq) * dim, dim * sizeof(float));
    for (size_t i = 0; i < nlist; i++)
        ids[i] = i;
    knn_params_t p = {.dim = dim, .metric = metric, .device = "cpu"};
    engine = knn_engine_new(&p, err);
    if (!engine) {
        rc = err ? err->code : SHOAL_EINVAL;
        goto done;
    }
    rc = knn_engine_add(engine, ids, centroids, nlist, err);
    if (!rc)
        rc = knn_engine_search(engine, every ? centroids : queries, nq, k, found, NULL, err);
    if (rc)
        shoal_err_prefix(err, "placement: nearest centroids");
done:
    knn_engine_destroy(&engine);
    free(queries);
    free(ids);
    if (rc) {
        free(found);
        found = NULL;
    }
    *nq_out = nq;
    *found_out = found;
    return rc;
}

/* Mean over the nq rows of found (stride k) of the distinct replica-0 shards
 * among the first nprobe entries. stamp: nshards scratch. */
double placement_distinct(const uint64_t *found, size_t nq, size_t k, size_t nprobe,
                          const uint32_t *owners, size_t replicas, uint32_t *stamp, size_t nshards)
{
    memset(stamp, 0, nshards * sizeof(uint32_t));
    uint64_t sum = 0;
    for (size_t q = 0; q < nq; q++) {
        for (size_t t = 0; t < nprobe; t++) {
            uint32_t s = owners[found[q * k + t] * replicas];
            if (stamp[s] != (uint32_t)(q + 1)) {
                stamp[s] = (uint32_t)(q + 1);
                sum++;
            }
        }
    }
    return nq ? (double)sum / (double)nq : 0.0;
}

int placement_locality(const float *centroids, size_t nlist, size_t dim, shoal_metric_t metric,
                       const uint32_t *owners, size_t nshards, size_t replicas, size_t nprobe,
                       double *shards_per_query, shoal_err_t *err)
{
    static const char fn[] = "placement_locality";
    int rc = placement_check_centroids(fn, centroids, nlist, dim, metric, err);
    if (!rc)
        rc = placement_check_shards(fn, nshards, replicas, err);
    if (rc)
        return rc;
    if (!owners || !shards_per_query)
        return shoal_err_set(err, SHOAL_EINVAL, "%s: NULL owners or result", fn);
    if (nprobe == 0 || nprobe > nlist)
        return shoal_err_set(err, SHOAL_EINVAL, "%s: nprobe must be in 1..nlist, got nprobe "
                             "%zu with nlist %zu", fn, nprobe, nlist);
    rc = placement_check(owners, nlist, nshards, replicas, err);
    if (rc) { /* the message is err's own: prefix it, not printed into itself */
        shoal_err_prefix(err, "%s: owners", fn);
        return err ? (err->code = SHOAL_EINVAL) : SHOAL_EINVAL;
    }
    size_t nq;
    uint64_t *found;
    rc = placement_probe(centroids, nlist, dim, metric, PLACEMENT_SCORE_QUERIES_MAX, nprobe, &nq,
                         &found, err);
    if (rc)
        return rc;
    uint32_t *stamp = malloc(nshards * sizeof(uint32_t));
    if (!stamp) {
        free(found);
        return shoal_err_set(err, SHOAL_ENOMEM, "%s: out of memory", fn);
    }
    *shards_per_query =
        placement_distinct(found, nq, nprobe, nprobe, owners, replicas, stamp, nshards);
    free(stamp);
    free(found);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Placement                                                                */
/* ------------------------------------------------------------------------ */

/*
 * Sum of list_sizes (0 when NULL) and the largest, refused when the sum of
 * `replicas` copies would overflow a shard total.
 */
int placement_sum_sizes(const char *fn, const uint64_t *list_sizes, size_t nlist, size_t replicas,
                        uint64_t *total_out, uint64_t *largest_out, shoal_err_t *err)
{
    uint64_t total = 0, largest = 0;
    for (size_t i = 0; list_sizes && i < nlist; i++) {
        if (total + list_sizes[i] < total || total + list_sizes[i] > UINT64_MAX / replicas)
            return shoal_err_set(err, SHOAL_EINVAL, "%s: list sizes overflow at list %zu "
                                 "(size %llu)", fn, i, (unsigned long long)list_sizes[i]);
        total += list_sizes[i];
        if (list_sizes[i] > largest)
            largest = list_sizes[i];
    }
    *total_out = total;
    *largest_out = largest;
    return 0;
}

/*
 * Order and cut (placement.h) into owners; totals (nshards, zeroed by the
 * caller) gets each shard's total. The caller has checked the arguments.
 * by_count: balance the number of lists, not their sizes.
 */
int placement_assign_into(const char *fn, const float *centroids, size_t nlist, size_t dim,
                          const uint64_t *list_sizes, int by_count, size_t nshards, size_t replicas,
                          uint32_t *owners, uint64_t *totals, shoal_err_t *err)
{
    int rc = 0;
    size_t *order = malloc(nlist * sizeof(size_t));
    s_proj_t *pairs = malloc(nlist * sizeof(s_proj_t));
    uint64_t *prefix = malloc((nlist + 1) * sizeof(uint64_t));
    size_t *bounds = malloc((nshards + 1) * sizeof(size_t));
    if (!order || !pairs || !prefix || !bounds) {
        rc = shoal_err_set(err, SHOAL_ENOMEM, "%s: out of memory for %zu lists", fn, nlist);
        goto done;
    }
    for (size_t i = 0; i < nlist; i++)
        order[i] = i;
    s_order_t o = {.centroids = centroids, .dim = dim, .order = order, .pairs = pairs};
    if (s_bisect(&o, 0, nlist, NULL) != 0) {
        rc = shoal_err_set(err, SHOAL_ENOMEM, "%s: out of memory ordering %zu lists", fn, nlist);
        goto done;
    }

    prefix[0] = 0;
    for (size_t k = 0; k < nlist; k++)
        prefix[k + 1] = prefix[k] + (by_count ? 1 : list_sizes[order[k]]);
    s_cut(prefix, nlist, nshards, bounds);

    for (size_t j = 0; j < nshards; j++) {
        for (size_t k = bounds[j]; k < bounds[j + 1]; k++) {
            size_t list = order[k];
            uint64_t size = list_sizes ? list_sizes[list] : 1;
            for (size_t r = 0; r < replicas; r++) {
                uint32_t s = (uint32_t)((j + r) % nshards);
                owners[list * replicas + r] = s;
                totals[s] += size;
            }
        }
    }
done:
    free(order);
    free(pairs);
    free(prefix);
    free(bounds);
    return rc;
}

int placement_assign(const float *centroids, size_t nlist, size_t dim, shoal_metric_t metric,
                     const uint64_t *list_sizes, size_t nshards, size_t replicas,
                     uint32_t *owners, placement_report_t *report, shoal_err_t *err)
{
    static const char fn[] = "placement_assign";
    int rc = placement_check_centroids(fn, centroids, nlist, dim, metric, err);
    if (!rc)
        rc = placement_check_shards(fn, nshards, replicas, err);
    if (rc)
        return rc;
    if (!owners)
        return shoal_err_set(err, SHOAL_EINVAL, "%s: NULL owners", fn);
    uint64_t total = 0, largest = 0;
    rc = placement_sum_sizes(fn, list_sizes, nlist, replicas, &total, &largest, err);
    if (rc)
        return rc;

    uint64_t *totals = calloc(nshards, sizeof(uint64_t));
    uint32_t *stamp = malloc(nshards * sizeof(uint32_t));
    uint64_t *found = NULL;
    if (!totals || !stamp) {
        rc = shoal_err_set(err, SHOAL_ENOMEM, "%s: out of memory for %zu shards", fn, nshards);
        goto done;
    }
    /* All sizes unknown (NULL) or all zero: balance the number of lists. */
    rc = placement_assign_into(fn, centroids, nlist, dim, list_sizes, total == 0, nshards, replicas,
                               owners, totals, err);
    if (rc)
        goto done;

    if (report) {
        placement_report_t *rp = report;
        uint64_t mx = 0, mn = UINT64_MAX, sum = 0;
        for (size_t s = 0; s < nshards; s++) {
            mx = totals[s] > mx ? totals[s] : mx;
            mn = totals[s] < mn ? totals[s] : mn;
            sum += totals[s];
            if (rp->shard_totals)
                rp->shard_totals[s] = totals[s];
        }
        rp->max_total = mx;
        rp->min_total = mn;
        rp->mean_total = (double)sum / (double)nshards;
        rp->imbalance = rp->mean_total > 0.0 ? (double)mx / rp->mean_total : 1.0;
        rp->largest_list = list_sizes ? largest : 1;

        static const size_t probes[PLACEMENT_SCORE_NPROBES] = {1, 4, 16};
        size_t k = probes[PLACEMENT_SCORE_NPROBES - 1] < nlist ? probes[PLACEMENT_SCORE_NPROBES - 1]
                                                               : nlist;
        size_t nq;
        rc = placement_probe(centroids, nlist, dim, metric, PLACEMENT_SCORE_QUERIES_MAX, k, &nq,
                             &found, err);
        if (rc)
            goto done;
        rp->locality_queries = nq;
        for (size_t t = 0; t < PLACEMENT_SCORE_NPROBES; t++) {
            size_t np = probes[t] < nlist ? probes[t] : nlist;
            rp->locality_nprobe[t] = np;
            rp->locality[t] =
                placement_distinct(found, nq, k, np, owners, replicas, stamp, nshards);
        }
        log_info("placement: %zu lists on %zu shards x %zu replicas: max/mean %.3f, shards per "
                 "query %.2f / %.2f / %.2f at nprobe %zu / %zu / %zu",
                 nlist, nshards, replicas, rp->imbalance, rp->locality[0], rp->locality[1],
                 rp->locality[2], rp->locality_nprobe[0], rp->locality_nprobe[1],
                 rp->locality_nprobe[2]);
    }
    rc = 0;
done:
    free(totals);
    free(stamp);
    free(found);
    return rc;
}
