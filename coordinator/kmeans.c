/*
 * kmeans.c - Lloyd's k-means with k-means++ seeding; the assignment step is
 * the exact k-NN engine. See kmeans.h for the metric handling and the rule
 * for empty clusters.
 */
#include "coordinator/kmeans.h"

#include "common/rng.h"
#include "common/vec_check.h"
#include "common/distance.h"
#include "common/log.h"
#include "common/parfor.h"
#include "gpu/knn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Checks                                                                   */
/* ------------------------------------------------------------------------ */

static int s_check_shape(const char *fn, const void *a, const void *b, size_t n, size_t dim,
                         shoal_metric_t metric, shoal_err_t *err)
{
    if (!a || !b)
        return shoal_err_set(err, SHOAL_EINVAL, "%s: NULL array", fn);
    if (dim == 0)
        return shoal_err_set(err, SHOAL_EINVAL, "%s: dim must be >= 1, got 0", fn);
    if (metric != SHOAL_METRIC_L2 && metric != SHOAL_METRIC_IP && metric != SHOAL_METRIC_COSINE)
        return shoal_err_set(err, SHOAL_EINVAL, "%s: unknown metric %d", fn, (int)metric);
    if (n > 0 && dim > SIZE_MAX / sizeof(float) / n)
        return shoal_err_set(err, SHOAL_EINVAL, "%s: %zu rows of dim %zu overflow memory", fn, n,
                             dim);
    return 0;
}

static knn_engine_t *s_engine_new(const char *fn, size_t dim, shoal_metric_t metric,
                                  const char *device, size_t threads, shoal_err_t *err)
{
    knn_params_t p = {.dim = dim, .metric = metric, .device = device, .threads = threads};
    knn_engine_t *engine = knn_engine_new(&p, err);
    if (!engine)
        shoal_err_prefix(err, "%s: creating the k-NN engine", fn);
    return engine;
}

/* ------------------------------------------------------------------------ */
/* Seeding                                                                  */
/* ------------------------------------------------------------------------ */

/* Uniform integer in [0, bound), bound >= 1: floor(u * bound), bias ~ bound / 2^53. */
static size_t s_rng_below(shoal_rng_t *rng, size_t bound)
{
    return (size_t)(shoal_rng_uniform(rng) * (double)bound) % bound;
}

/* Centroid j from sample row i: under IP the centroid is the row's direction. */
static void s_seed_from_row(float *centroid, const float *row, size_t dim, shoal_metric_t metric)
{
    memcpy(centroid, row, dim * sizeof(float));
    if (metric == SHOAL_METRIC_IP)
        (void)dist_normalize(centroid, dim); /* a zero row stays zero: harmless under IP */
}

static int s_init_random(const float *x, size_t n, size_t dim, shoal_metric_t metric,
                         size_t nlist, shoal_rng_t *rng, float *centroids)
{
    size_t *perm = malloc(n * sizeof(*perm));
    if (!perm)
        return SHOAL_ENOMEM;
    for (size_t i = 0; i < n; i++)
        perm[i] = i;
    /* Partial Fisher-Yates: the first nlist slots are a uniform sample without replacement. */
    for (size_t j = 0; j < nlist; j++) {
        size_t r = j + s_rng_below(rng, n - j);
        size_t t = perm[j];
        perm[j] = perm[r];
        perm[r] = t;
        s_seed_from_row(centroids + j * dim, x + perm[j] * dim, dim, metric);
    }
    free(perm);
    return 0;
}

/*
 * Parallel k-means++ seeding.
 *
 * Work: each step draws `tries` = 2 + ln(nlist) candidates and scores each
 * against every sample row, so seeding costs tries x n x dim x nlist
 * multiply-adds (100k x 128, nlist 1024: 8 x 1e5 x 128 x 1024 = 1.05e11),
 * plus one more n x dim pass per step to fold the kept centre into the costs.
 * A Lloyd iteration is n x dim x nlist, so seeding alone is ~tries of them.
 *
 * The rows are cut into chunks of a fixed size that depends on dim only
 * (KMEANS_SEED_CHUNK_BYTES of floats), never on the thread count. A chunk is
 * always handed to the batch kernel whole, so every row's distance is the same
 * float whatever the threads; each chunk's cost sum is written to its own slot
 * and the slots are added in chunk order on the calling thread. So totals, the
 * candidate kept and the centroids are bit-identical for any thread count.
 * All candidates of a step are scored in one pass: a chunk is read from
 * memory once and stays in cache for every candidate, where scoring them one
 * after the other streamed the whole sample tries times per step. On 100k x
 * 128, nlist 1024, 2 cores: 14.7 s before, 10.5 s now on one thread, 6.2 s on
 * two (kmeans_train with max_iters 1).
 *
 * Threads are started per pass (two per step) by parfor.h rather than parked
 * on a barrier: a pass is milliseconds, a pthread_create microseconds, and a
 * thread that cannot be started has its share run on the caller.
 */

#define KMEANS_SEED_CHUNK_BYTES (64 * 1024) /* x rows per chunk: L2-resident */

typedef struct {
    const float *x;        /* sample, n x dim (normalised under cosine) */
    size_t n;              /* rows */
    size_t dim;            /* floats per row */
    shoal_metric_t metric; /* L2, IP or cosine */
    const float *norm;     /* n row norms under IP, else NULL */
    size_t chunk_rows;     /* rows per chunk; the last one may be shorter */
    size_t nchunks;        /* ceil(n / chunk_rows) */
    const float *cands;    /* ncand x dim centres to score */
    size_t ncand;          /* candidates this pass */
    int commit;            /* 0: score only; 1: also store min(cost, d) in cost (ncand 1) */
    double *cost;          /* n: each row's cost against the centres kept so far */
    double *chunk_sums;    /* ncand x nchunks: per chunk, sum of min(cost, d(candidate)) */
} s_seed_job_t;

typedef struct {
    s_seed_job_t *job;  /* shared, read-only but for this worker's slots */
    size_t chunk_first; /* chunks [chunk_first, chunk_last) are this worker's */
    size_t chunk_last;  /* end of that range */
    float *dists;       /* chunk_rows floats of scratch */
} s_seed_worker_t;

/*
 * Seeding cost of a row against a centre c, from their kernel value: what the
 * row would pay in the objective above its best possible value. Squared L2;
 * 1 - cos for cosine (= |x - c|^2 / 2 on unit vectors, so it is the D^2 of the
 * paper); |x| - <x, c> for IP with unit c.
 */
static double s_seed_dist(shoal_metric_t metric, const float *norm, size_t row, float kernel)
{
    double d;
    if (metric == SHOAL_METRIC_L2)
        d = kernel;
    else if (metric == SHOAL_METRIC_COSINE)
        d = 1.0 - kernel;
    else
        d = (double)norm[row] - kernel;
    return d < 0.0 ? 0.0 : d; /* rounding */
}

static void s_seed_worker_main(void *arg)
{
    s_seed_worker_t *w = arg;
    const s_seed_job_t *job = w->job;
    const dist_kernels_t *kern = dist_kernels();
    dist_batch_fn batch = job->metric == SHOAL_METRIC_L2 ? kern->l2sq_batch : kern->dot_batch;
    for (size_t c = w->chunk_first; c < w->chunk_last; c++) {
        size_t first = c * job->chunk_rows;
        size_t rows = job->n - first < job->chunk_rows ? job->n - first : job->chunk_rows;
        const float *x = job->x + first * job->dim;
        double *cost = job->cost + first;
        for (size_t t = 0; t < job->ncand; t++) {
            batch(job->cands + t * job->dim, x, rows, job->dim, job->dim, w->dists);
            double sum = 0.0;
            for (size_t i = 0; i < rows; i++) {
                double d = s_seed_dist(job->metric, job->norm, first + i, w->dists[i]);
                double v = cost[i] < d ? cost[i] : d;
                if (job->commit)
                    cost[i] = v;
                sum += v;
            }
            job->chunk_sums[t * job->nchunks + c] = sum;
        }
    }
}

/* One pass over every chunk on the workers (parfor.h: the caller runs worker 0's share). */
static void s_seed_pass(s_seed_worker_t *workers, size_t nworkers)
{
    parfor_each(workers, sizeof *workers, nworkers, s_seed_worker_main);
}

/* Candidate t's total: its chunk sums added in chunk order (thread-independent). */
static double s_seed_total(const s_seed_job_t *job, size_t t)
{
    double total = 0.0;
    for (size_t c = 0; c < job->nchunks; c++)
        total += job->chunk_sums[t * job->nchunks + c];
    return total;
}

/* A row drawn with probability cost[i] / total; uniform when total is 0. */
static size_t s_draw(const double *cost, size_t n, double total, shoal_rng_t *rng)
{
    if (!(total > 0.0))
        return s_rng_below(rng, n); /* every row sits on a centre: any will do */
    double u = shoal_rng_uniform(rng) * total;
    for (size_t i = 0; i < n; i++) {
        if (u < cost[i])
            return i;
        u -= cost[i];
    }
    /* Rounding walked past the end: the last row with a cost. */
    size_t i = n - 1;
    while (cost[i] <= 0.0 && i > 0)
        i--;
    return i;
}

/* Gives each worker its range of chunks and its scratch; 0 or SHOAL_ENOMEM. */
static int s_seed_workers_init(s_seed_worker_t *workers, size_t nworkers, s_seed_job_t *job)
{
    for (size_t w = 0; w < nworkers; w++) {
        workers[w].job = job;
        workers[w].chunk_first = parfor_split(job->nchunks, nworkers, w);
        workers[w].chunk_last = parfor_split(job->nchunks, nworkers, w + 1);
        workers[w].dists = malloc(job->chunk_rows * sizeof(float));
        if (!workers[w].dists)
            return SHOAL_ENOMEM;
    }
    return 0;
}

/* Folds one chosen centre into the costs; returns the new total cost. */
static double s_seed_commit(s_seed_job_t *job, s_seed_worker_t *workers, size_t nworkers,
                            const float *centre)
{
    job->cands = centre;
    job->ncand = 1;
    job->commit = 1;
    s_seed_pass(workers, nworkers);
    return s_seed_total(job, 0);
}

/* Scores tries candidates without keeping any; the one with the lowest total (first on ties). */
static size_t s_seed_best(s_seed_job_t *job, s_seed_worker_t *workers, size_t nworkers,
                          const float *cands, size_t tries)
{
    job->cands = cands;
    job->ncand = tries;
    job->commit = 0;
    s_seed_pass(workers, nworkers);
    size_t best = 0;
    double best_total = INFINITY;
    for (size_t t = 0; t < tries; t++) {
        double tt = s_seed_total(job, t);
        if (tt < best_total) {
            best_total = tt;
            best = t;
        }
    }
    return best;
}

/*
 * k-means++ (Arthur & Vassilvitskii 2007): each next centre is a sample row
 * drawn with probability proportional to its cost against the centres chosen
 * so far (s_seed_dist). Greedy variant, as the paper's experiments and
 * scikit-learn do: 2 + ln(nlist) candidates are drawn per step and the one
 * that lowers the total cost most is kept (ties: the one drawn first). Plain
 * D^2 sampling merged two of ten well-separated blobs in 2 of 6 seeds in this
 * suite's test; greedy did not. No GEMM: each step needs the previous one's
 * costs. All draws of a step come from the same costs, so they are made
 * before any candidate is scored, in the order the RNG always gave them.
 * threads: 0 = every online core; the result does not depend on it.
 */
static int s_init_plusplus(const float *x, size_t n, size_t dim, shoal_metric_t metric,
                           size_t nlist, size_t threads, shoal_rng_t *rng, float *centroids)
{
    size_t tries = 2 + (size_t)log((double)nlist);
    size_t chunk_rows = KMEANS_SEED_CHUNK_BYTES / (dim * sizeof(float));
    if (chunk_rows < 16)
        chunk_rows = 16; /* very long rows: keep some rows per kernel call */
    size_t nchunks = (n + chunk_rows - 1) / chunk_rows;
    if (threads == 0)
        threads = parfor_cores();
    size_t nworkers = threads < nchunks ? threads : nchunks;

    s_seed_job_t job = {.x = x, .n = n, .dim = dim, .metric = metric,
                        .chunk_rows = chunk_rows, .nchunks = nchunks};
    job.cost = malloc(n * sizeof(double));
    job.chunk_sums = malloc(tries * nchunks * sizeof(double));
    float *cands = malloc(tries * dim * sizeof(float));
    size_t *rows = malloc(tries * sizeof(size_t));
    float *norm = metric == SHOAL_METRIC_IP ? malloc(n * sizeof(float)) : NULL;
    s_seed_worker_t *workers = calloc(nworkers, sizeof(*workers));
    int rc = 0;
    if (!job.cost || !job.chunk_sums || !cands || !rows || !workers ||
        (metric == SHOAL_METRIC_IP && !norm)) {
        rc = SHOAL_ENOMEM;
        goto done;
    }
    if ((rc = s_seed_workers_init(workers, nworkers, &job)))
        goto done;
    if (norm)
        for (size_t i = 0; i < n; i++)
            norm[i] = sqrtf(dist_norm_sq(x + i * dim, dim));
    job.norm = norm;
    for (size_t i = 0; i < n; i++)
        job.cost[i] = INFINITY; /* no centre yet: the first fold takes d as it is */

    /* The first centre is uniform; folding it into the infinite costs gives its distances. */
    size_t first = s_rng_below(rng, n);
    s_seed_from_row(centroids, x + first * dim, dim, metric);
    double total = s_seed_commit(&job, workers, nworkers, centroids);
    for (size_t j = 1; j < nlist; j++) {
        for (size_t t = 0; t < tries; t++) {
            rows[t] = s_draw(job.cost, n, total, rng);
            s_seed_from_row(cands + t * dim, x + rows[t] * dim, dim, metric);
        }
        size_t best = s_seed_best(&job, workers, nworkers, cands, tries);
        /* Same row, same chunks, same kernel: the fold gives the best total again. */
        s_seed_from_row(centroids + j * dim, x + rows[best] * dim, dim, metric);
        total = s_seed_commit(&job, workers, nworkers, centroids + j * dim);
    }
done:
    if (workers)
        for (size_t w = 0; w < nworkers; w++)
            free(workers[w].dists);
    free(workers);
    free(job.cost);
    free(job.chunk_sums);
    free(cands);
    free(rows);
    free(norm);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Update step                                                              */
/* ------------------------------------------------------------------------ */

typedef struct {
    const float *x;        /* sample (normalised under cosine) */
    size_t n;              /* rows */
    size_t dim;            /* floats per row */
    shoal_metric_t metric; /* L2, IP or cosine */
    size_t nlist;          /* centroids */
    uint64_t *labels;      /* n: each row's centroid (the engine's ids) */
    float *dists;          /* n: each row's distance to it */
    double *sums;          /* nlist x dim accumulators */
    uint64_t *counts;      /* nlist */
    size_t splits;         /* empty clusters refilled so far */
} s_lloyd_t;

/* How far row i is from its centroid's best value (see s_seed_dist). */
static double s_regret(const s_lloyd_t *l, size_t i)
{
    if (l->metric == SHOAL_METRIC_IP)
        return sqrt((double)dist_norm_sq(l->x + i * l->dim, l->dim)) + l->dists[i];
    return l->dists[i];
}

/* Refills empty cluster j from the largest one (far-point rule, kmeans.h). */
static void s_split_into(s_lloyd_t *l, size_t j)
{
    size_t big = 0;
    for (size_t c = 1; c < l->nlist; c++)
        if (l->counts[c] > l->counts[big])
            big = c;
    /* sum of counts = n >= nlist and counts[j] = 0, so counts[big] >= 2. */
    size_t far = SIZE_MAX;
    double far_cost = -INFINITY;
    for (size_t i = 0; i < l->n; i++) {
        if (l->labels[i] != big)
            continue;
        double r = s_regret(l, i);
        if (r > far_cost) {
            far_cost = r;
            far = i;
        }
    }
    const float *row = l->x + far * l->dim;
    double *from = l->sums + big * l->dim;
    double *to = l->sums + j * l->dim;
    for (size_t d = 0; d < l->dim; d++) {
        from[d] -= row[d];
        to[d] = row[d];
    }
    l->labels[far] = j;
    l->counts[big]--;
    l->counts[j] = 1;
    l->splits++;
}

/* Centroids = means of the partition in labels, after refilling empty clusters. */
static void s_update(s_lloyd_t *l, float *centroids)
{
    size_t dim = l->dim;
    memset(l->sums, 0, l->nlist * dim * sizeof(double));
    memset(l->counts, 0, l->nlist * sizeof(uint64_t));
    for (size_t i = 0; i < l->n; i++) {
        uint64_t j = l->labels[i];
        const float *row = l->x + i * dim;
        double *s = l->sums + j * dim;
        l->counts[j]++;
        for (size_t d = 0; d < dim; d++)
            s[d] += row[d];
    }
    for (size_t j = 0; j < l->nlist; j++)
        if (l->counts[j] == 0)
            s_split_into(l, j);
    for (size_t j = 0; j < l->nlist; j++) {
        const double *s = l->sums + j * dim;
        float *c = centroids + j * dim;
        if (l->metric == SHOAL_METRIC_L2) {
            for (size_t d = 0; d < dim; d++)
                c[d] = (float)(s[d] / (double)l->counts[j]);
            continue;
        }
        double norm_sq = 0.0;
        for (size_t d = 0; d < dim; d++)
            norm_sq += s[d] * s[d];
        if (!(norm_sq > 0.0))
            continue; /* no mean direction: keep the old centroid (kmeans.h) */
        double inv = 1.0 / sqrt(norm_sq);
        for (size_t d = 0; d < dim; d++)
            c[d] = (float)(s[d] * inv);
    }
}

/* ------------------------------------------------------------------------ */
/* Training                                                                 */
/* ------------------------------------------------------------------------ */

/* kmeans_train's arguments past their shapes: nlist, max_iters, init, tol (filling o's
 * defaults) and the sample's rows (vec_check.h); 0 or SHOAL_EINVAL. */
static int s_check_train(const char *fn, const float *sample, size_t n, size_t dim,
                         shoal_metric_t metric, size_t nlist, kmeans_opts_t *o, shoal_err_t *err)
{
    if (nlist == 0 || nlist > n)
        return shoal_err_set(err, SHOAL_EINVAL, "%s: nlist must be in 1..n, got nlist %zu with "
                             "n %zu sample rows", fn, nlist, n);
    if (nlist > KMEANS_NLIST_MAX)
        return shoal_err_set(err, SHOAL_EINVAL, "%s: nlist %zu exceeds %lu", fn, nlist,
                             (unsigned long)KMEANS_NLIST_MAX);
    if (o->max_iters == 0)
        o->max_iters = KMEANS_MAX_ITERS_DEFAULT;
    if (o->max_iters > KMEANS_MAX_ITERS_MAX)
        return shoal_err_set(err, SHOAL_EINVAL, "%s: max_iters must be in 1..%d, got %zu", fn,
                             KMEANS_MAX_ITERS_MAX, o->max_iters);
    if (o->init != KMEANS_INIT_PLUSPLUS && o->init != KMEANS_INIT_RANDOM)
        return shoal_err_set(err, SHOAL_EINVAL, "%s: unknown init %d", fn, (int)o->init);
    if (o->tol == 0.0)
        o->tol = KMEANS_TOL_DEFAULT;
    if (isnan(o->tol))
        return shoal_err_set(err, SHOAL_EINVAL, "%s: tol is NaN", fn);
    /* The one vector check (vec_check.h), not a copy of it: the coordinator has
       already run it where the sample entered, this is the library's own guard
       for direct callers (tests, benches), one pass per training. */
    return vec_check_rows(fn, "sample row", sample, n, dim, metric, NULL, err);
}

/* Lloyd's iterations: assignment through the engine (k = 1), then s_update, until max_iters
 * or the objective moves by at most tol of itself; *iters and *objective say where it stopped. */
static int s_lloyd_run(const char *fn, knn_engine_t *engine, s_lloyd_t *l, const uint64_t *ids,
                       float *centroids, const kmeans_opts_t *o, kmeans_result_t *result,
                       size_t *iters, double *objective, shoal_err_t *err)
{
    size_t n = l->n, nlist = l->nlist;
    double prev = 0.0, obj = 0.0;
    size_t iter = 0;
    int rc = 0;
    while (iter < o->max_iters) {
        /* Assignment: upsert the centroids (rows overwritten in place), k = 1. */
        rc = knn_engine_add(engine, ids, centroids, nlist, err);
        if (!rc)
            rc = knn_engine_search(engine, l->x, n, 1, l->labels, l->dists, err);
        if (rc) {
            shoal_err_prefix(err, "%s: assignment step %zu", fn, iter + 1);
            break;
        }
        obj = 0.0;
        for (size_t i = 0; i < n; i++)
            obj += l->dists[i];
        if (result && result->objectives)
            result->objectives[iter] = obj;
        s_update(l, centroids);
        iter++;
        log_debug("kmeans: iteration %zu objective %.6g (%zu splits so far)", iter, obj,
                  l->splits);
        if (iter > 1 && o->tol >= 0.0 && fabs(prev - obj) <= o->tol * fabs(prev))
            break;
        prev = obj;
    }
    *iters = iter;
    *objective = obj;
    return rc;
}

int kmeans_train(const float *sample, size_t n, size_t dim, shoal_metric_t metric, size_t nlist,
                 const kmeans_opts_t *opts, float *centroids, kmeans_result_t *result,
                 shoal_err_t *err)
{
    static const char fn[] = "kmeans_train";
    kmeans_opts_t o = opts ? *opts : (kmeans_opts_t){0};
    int rc = s_check_shape(fn, sample, centroids, n, dim, metric, err);
    if (rc)
        return rc;
    if ((rc = s_check_train(fn, sample, n, dim, metric, nlist, &o, err)))
        return rc;

    float *copy = NULL;
    uint64_t *ids = NULL;
    knn_engine_t *engine = NULL;
    s_lloyd_t l = {.x = sample, .n = n, .dim = dim, .metric = metric, .nlist = nlist};
    l.labels = malloc(n * sizeof(*l.labels));
    l.dists = malloc(n * sizeof(*l.dists));
    l.sums = malloc(nlist * dim * sizeof(*l.sums));
    l.counts = malloc(nlist * sizeof(*l.counts));
    ids = malloc(nlist * sizeof(*ids));
    if (!l.labels || !l.dists || !l.sums || !l.counts || !ids)
        goto nomem;
    if (metric == SHOAL_METRIC_COSINE) {
        copy = malloc(n * dim * sizeof(*copy));
        if (!copy)
            goto nomem;
        memcpy(copy, sample, n * dim * sizeof(*copy));
        for (size_t i = 0; i < n; i++)
            (void)dist_normalize(copy + i * dim, dim); /* checked non-zero above */
        l.x = copy;
    }
    for (size_t j = 0; j < nlist; j++)
        ids[j] = j;

    shoal_rng_t rng;
    shoal_rng_seed(&rng, o.seed);
    rc = o.init == KMEANS_INIT_RANDOM ? s_init_random(l.x, n, dim, metric, nlist, &rng, centroids)
                                      : s_init_plusplus(l.x, n, dim, metric, nlist, o.threads,
                                                        &rng, centroids);
    if (rc)
        goto nomem;

    engine = s_engine_new(fn, dim, metric, o.device, o.threads, err);
    if (!engine) {
        rc = err ? err->code : SHOAL_EINVAL;
        goto fail;
    }

    size_t iter = 0;
    double obj = 0.0;
    if ((rc = s_lloyd_run(fn, engine, &l, ids, centroids, &o, result, &iter, &obj, err)))
        goto fail;
    log_info("kmeans: %zu centroids from %zu rows (dim %zu, %s, %s init): %zu iterations, "
             "objective %.6g, %zu empty clusters split", nlist, n, dim,
             shoal_metric_name(metric), o.init == KMEANS_INIT_RANDOM ? "random" : "k-means++",
             iter, obj, l.splits);
    if (result) {
        result->iters = iter;
        result->objective = obj;
        result->empty_splits = l.splits;
        if (result->sizes)
            memcpy(result->sizes, l.counts, nlist * sizeof(uint64_t));
    }
    rc = 0;
    goto done;

nomem:
    rc = shoal_err_set(err, SHOAL_ENOMEM, "%s: out of memory for %zu rows x %zu centroids "
                       "(dim %zu)", fn, n, nlist, dim);
fail:
done:
    knn_engine_destroy(&engine);
    free(copy);
    free(ids);
    free(l.labels);
    free(l.dists);
    free(l.sums);
    free(l.counts);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Routing                                                                  */
/* ------------------------------------------------------------------------ */

int kmeans_assign(const float *centroids, size_t nlist, const float *vecs, size_t n,
                  size_t dim, shoal_metric_t metric, size_t nprobe, const char *device,
                  uint32_t *lists, shoal_err_t *err)
{
    static const char fn[] = "kmeans_assign";
    int rc = s_check_shape(fn, centroids, lists, nlist, dim, metric, err);
    if (rc)
        return rc;
    if (n > 0 && !vecs)
        return shoal_err_set(err, SHOAL_EINVAL, "%s: NULL vectors", fn);
    if (nlist == 0 || nlist > KMEANS_NLIST_MAX)
        return shoal_err_set(err, SHOAL_EINVAL, "%s: nlist must be in 1..%lu, got %zu", fn,
                             (unsigned long)KMEANS_NLIST_MAX, nlist);
    if (nprobe == 0 || nprobe > nlist)
        return shoal_err_set(err, SHOAL_EINVAL, "%s: nprobe must be in 1..nlist, got nprobe %zu "
                             "with nlist %zu", fn, nprobe, nlist);
    if (n == 0)
        return 0;
    if (n > SIZE_MAX / sizeof(uint64_t) / nprobe || n > SIZE_MAX / sizeof(float) / dim)
        return shoal_err_set(err, SHOAL_EINVAL, "%s: %zu vectors x nprobe %zu overflow memory",
                             fn, n, nprobe);

    uint64_t *ids = malloc(nlist * sizeof(*ids));
    uint64_t *found = malloc(n * nprobe * sizeof(*found));
    knn_engine_t *engine = NULL;
    if (!ids || !found) {
        rc = shoal_err_set(err, SHOAL_ENOMEM, "%s: out of memory for %zu x %zu results", fn, n,
                           nprobe);
        goto done;
    }
    for (size_t j = 0; j < nlist; j++)
        ids[j] = j;
    engine = s_engine_new(fn, dim, metric, device, 0, err);
    if (!engine) {
        rc = err ? err->code : SHOAL_EINVAL;
        goto done;
    }
    rc = knn_engine_add(engine, ids, centroids, nlist, err);
    if (rc) {
        shoal_err_prefix(err, "%s: centroids", fn);
        goto done;
    }
    rc = knn_engine_search(engine, vecs, n, nprobe, found, NULL, err);
    if (rc) {
        shoal_err_prefix(err, "%s: vectors", fn);
        goto done;
    }
    for (size_t i = 0; i < n * nprobe; i++)
        lists[i] = (uint32_t)found[i]; /* k <= nlist = count: no padding ids */

done:
    knn_engine_destroy(&engine);
    free(ids);
    free(found);
    return rc;
}
