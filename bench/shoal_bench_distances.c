/*
 * shoal_bench_distances.c - `shoal-bench distances`: how many vectors per
 * second each distance kernel handles, in every implementation this CPU
 * supports, and its speed-up over the scalar reference.
 *
 * One "pass" compares one query with all N rows: the pair kernels (l2sq, dot,
 * cosine) are called once per row, as a graph search calls them; the batch
 * kernels (l2sq_batch, dot_batch) are called once over all N rows, as exact
 * search does. A repetition runs enough passes, cycling through a few queries,
 * to last about S_REP_SECONDS; the figure printed is the median of the
 * repetitions, which ignores the odd one slowed by another process.
 *
 * The same rows are also stored compressed (common/quant.h) and scanned by
 * the f16 and sq8 batch kernels: f16_*_batch read 2 bytes per component,
 * sq8_*_batch 1 byte. Their lines add vs_f32, the ratio of their rate to the
 * float32 batch kernel's of the same metric and implementation. An sq8
 * query's precomputation (2 dim operations and one allocation) is done once
 * per query before timing; at N = 4,000 and dim 128 it would add under 1%.
 *
 * Output, one line per (kernel, implementation), scalar first:
 *   kernel=l2sq impl=avx2 dim=128 n=10000 vectors_per_s=1.23e+08 ns_per_vector=8.13
 *   gb_per_s=63.0 speedup_vs_scalar=5.10 [vs_f32=2.40]
 * gb_per_s counts the stored bytes read (4, 2 or 1 per component), not the
 * query's, which stay in L1.
 *
 * The data is uniform random: a kernel's speed does not depend on the values.
 * With N rows larger than the caches the batch kernels measure memory
 * bandwidth more than arithmetic, which is what exact search meets too, and
 * where the compressed kinds gain most (N = 1,000,000 at dim 128 is 512 MB
 * of float32); with N = 4,000 they are cache-resident and show the cost of
 * the conversions instead.
 *
 * Exit codes: 0 success, 2 usage error, 1 anything that failed while running.
 */
#include "bench/shoal_bench.h"
#include "common/distance.h"
#include "common/quant.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_N_DEFAULT    10000
#define S_N_MAX        100000000
#define S_DIM_MAX      65536
#define S_REPS_DEFAULT 5
#define S_REPS_MAX     1000

/* How long one repetition should last, and how many queries it cycles through. */
#define S_REP_SECONDS 0.06
#define S_QUERIES     8

typedef struct {
    size_t dim;  /* --dim */
    size_t n;    /* --n: rows per pass */
    size_t reps; /* --reps: repetitions, the median is reported */
} distances_opts_t;

typedef enum {
    DISTANCES_KERNEL_L2SQ,
    DISTANCES_KERNEL_DOT,
    DISTANCES_KERNEL_COSINE,
    DISTANCES_KERNEL_L2SQ_BATCH,
    DISTANCES_KERNEL_DOT_BATCH,
    DISTANCES_KERNEL_F16_L2SQ_BATCH,
    DISTANCES_KERNEL_F16_DOT_BATCH,
    DISTANCES_KERNEL_SQ8_L2SQ_BATCH,
    DISTANCES_KERNEL_SQ8_DOT_BATCH,
    DISTANCES_KERNEL_COUNT
} distances_kernel_t;

static const char *const s_kernel_names[DISTANCES_KERNEL_COUNT] = {
    "l2sq",           "dot",           "cosine",         "l2sq_batch",   "dot_batch",
    "f16_l2sq_batch", "f16_dot_batch", "sq8_l2sq_batch", "sq8_dot_batch"};

/* What each kernel reads per stored component, and its float32 counterpart. */
static const quant_kind_t s_kernel_kinds[DISTANCES_KERNEL_COUNT] = {
    QUANT_F32, QUANT_F32, QUANT_F32, QUANT_F32, QUANT_F32,
    QUANT_F16, QUANT_F16, QUANT_SQ8, QUANT_SQ8};
static const distances_kernel_t s_kernel_f32_peer[DISTANCES_KERNEL_COUNT] = {
    DISTANCES_KERNEL_L2SQ,       DISTANCES_KERNEL_DOT,        DISTANCES_KERNEL_COSINE,
    DISTANCES_KERNEL_L2SQ_BATCH, DISTANCES_KERNEL_DOT_BATCH,  DISTANCES_KERNEL_L2SQ_BATCH,
    DISTANCES_KERNEL_DOT_BATCH,  DISTANCES_KERNEL_L2SQ_BATCH, DISTANCES_KERNEL_DOT_BATCH};

/* Every result is added here, so the compiler cannot drop a call as unused. */
static volatile float s_sink;

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: shoal-bench distances --dim D [--n N] [--reps R]\n"
            "\n"
            "Vectors per second of each distance kernel (l2sq, dot, cosine one pair at a\n"
            "time; l2sq_batch, dot_batch one query against N rows; the same batches over\n"
            "f16 and sq8 codes of the rows) in every implementation this CPU supports,\n"
            "the speed-up over scalar and, for the compressed kinds, the ratio to the\n"
            "float32 batch. One line per kernel and implementation, as key=value pairs.\n"
            "\n"
            "  --dim D   dimension (1..%d)\n"
            "  --n N     rows compared with each query (default %d)\n"
            "  --reps R  repetitions of ~%.2f s each; the median is reported (default %d)\n",
            S_DIM_MAX, S_N_DEFAULT, S_REP_SECONDS, S_REPS_DEFAULT);
}

/* ------------------------------------------------------------------------ */
/* Options                                                                  */
/* ------------------------------------------------------------------------ */

/* Returns 0, 1 for --help, or -1 after printing one line on stderr. */
static int s_parse(int argc, char **argv, distances_opts_t *o)
{
    int have_dim = 0;
    o->dim = 0;
    o->n = S_N_DEFAULT;
    o->reps = S_REPS_DEFAULT;

    for (int i = 1; i < argc; i++) {
        const char *opt = argv[i];
        if (!strcmp(opt, "--help") || !strcmp(opt, "-h"))
            return 1;
        size_t *value = NULL, max = 0;
        if (!strcmp(opt, "--dim")) {
            value = &o->dim;
            max = S_DIM_MAX;
            have_dim = 1;
        } else if (!strcmp(opt, "--n")) {
            value = &o->n;
            max = S_N_MAX;
        } else if (!strcmp(opt, "--reps")) {
            value = &o->reps;
            max = S_REPS_MAX;
        } else {
            fprintf(stderr, "shoal-bench distances: unknown option %s\n", opt);
            return -1;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "shoal-bench distances: %s needs a value\n", opt);
            return -1;
        }
        /* bench_parse_size prints its own one-line reason. */
        if (bench_parse_size(opt, argv[++i], 1, max, value) != 0)
            return -1;
    }
    if (!have_dim) {
        fprintf(stderr, "shoal-bench distances: --dim is required\n");
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Measuring                                                                */
/* ------------------------------------------------------------------------ */

/* xorshift64*: the values do not matter, only that they are ordinary floats. */
static void s_fill_random(float *v, size_t count, uint64_t *state)
{
    for (size_t i = 0; i < count; i++) {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        uint64_t bits = *state * 0x2545f4914f6cdd1dULL;
        v[i] = (float)(bits >> 40) / (float)(1 << 23) - 1.0f; /* [-1, 1) */
    }
}

typedef struct {
    const dist_kernels_t *kernels; /* the implementation measured (float32 kernels) */
    const quant_kernels_t *quant;  /* the same implementation's f16/sq8 kernels */
    distances_kernel_t kernel;     /* the kernel measured */
    const float *queries;          /* S_QUERIES x dim */
    const float *base;             /* n x dim, stride dim */
    const uint16_t *halves;        /* base as f16 codes */
    const uint8_t *codes;          /* base as sq8 codes */
    const quant_sq8_query_t *pqs;  /* S_QUERIES queries prepared for codes */
    float *out;                    /* n results of a batch kernel */
    size_t n;                      /* rows per pass */
    size_t dim;                    /* floats per vector */
} distances_run_t;

/* Query qi against all n rows; returns something that depends on every call. */
static float s_pass(const distances_run_t *run, size_t qi)
{
    const float *query = run->queries + qi * run->dim;
    const dist_kernels_t *k = run->kernels;
    size_t n = run->n, dim = run->dim;
    dist_pair_fn pair = NULL;
    switch (run->kernel) {
    case DISTANCES_KERNEL_L2SQ:
        pair = k->l2sq;
        break;
    case DISTANCES_KERNEL_DOT:
        pair = k->dot;
        break;
    case DISTANCES_KERNEL_COSINE:
        pair = k->cosine;
        break;
    case DISTANCES_KERNEL_L2SQ_BATCH:
        k->l2sq_batch(query, run->base, n, dim, dim, run->out);
        return run->out[0] + run->out[n - 1];
    case DISTANCES_KERNEL_DOT_BATCH:
        k->dot_batch(query, run->base, n, dim, dim, run->out);
        return run->out[0] + run->out[n - 1];
    case DISTANCES_KERNEL_F16_L2SQ_BATCH:
        run->quant->f16_l2sq_batch(query, run->halves, n, dim, dim, run->out);
        return run->out[0] + run->out[n - 1];
    case DISTANCES_KERNEL_F16_DOT_BATCH:
        run->quant->f16_dot_batch(query, run->halves, n, dim, dim, run->out);
        return run->out[0] + run->out[n - 1];
    case DISTANCES_KERNEL_SQ8_L2SQ_BATCH:
        run->quant->sq8_l2sq_batch(run->pqs + qi, run->codes, n, dim, run->out);
        return run->out[0] + run->out[n - 1];
    case DISTANCES_KERNEL_SQ8_DOT_BATCH:
        run->quant->sq8_dot_batch(run->pqs + qi, run->codes, n, dim, run->out);
        return run->out[0] + run->out[n - 1];
    case DISTANCES_KERNEL_COUNT:
        break;
    }
    float sum = 0.0f;
    for (size_t i = 0; i < n; i++)
        sum += pair(query, run->base + i * dim, dim);
    return sum;
}

/* Seconds taken by `passes` passes. */
static double s_time_passes(const distances_run_t *run, size_t passes)
{
    float sum = 0.0f;
    double start = timing_now();
    for (size_t p = 0; p < passes; p++)
        sum += s_pass(run, p % S_QUERIES);
    double elapsed = timing_now() - start;
    s_sink += sum;
    return elapsed;
}

/*
 * The median rate, in rows per second, over `reps` repetitions. Doubling the
 * passes until a run takes a third of the target both warms the caches and
 * calibrates; the repetitions then run the number of passes that fits the
 * target. rates holds reps doubles.
 */
static double s_measure(const distances_run_t *run, size_t reps, double *rates)
{
    size_t passes = 1;
    double elapsed = s_time_passes(run, passes);
    while (elapsed < S_REP_SECONDS / 3 && passes < SIZE_MAX / 2) {
        passes *= 2;
        elapsed = s_time_passes(run, passes);
    }
    double scaled = (double)passes * S_REP_SECONDS / (elapsed > 0 ? elapsed : 1e-9);
    passes = scaled < 1.0 ? 1 : (size_t)scaled;

    for (size_t r = 0; r < reps; r++) {
        elapsed = s_time_passes(run, passes);
        rates[r] = (double)passes * (double)run->n / (elapsed > 0 ? elapsed : 1e-9);
    }
    qsort(rates, reps, sizeof rates[0], timing_cmp_double);
    return reps % 2 ? rates[reps / 2] : (rates[reps / 2 - 1] + rates[reps / 2]) / 2;
}

/* ------------------------------------------------------------------------ */
/* Entry point                                                              */
/* ------------------------------------------------------------------------ */

/*
 * Parse the options, fill random data and codes, time every kernel with every
 * implementation and print a line each with its ratio to the f32 peer. Long
 * because it is one linear script (options, data, the timing table) sharing
 * its buffers and one cleanup path.
 */
int bench_distances_main(int argc, char **argv)
{
    distances_opts_t o;
    int rc = s_parse(argc, argv, &o);
    if (rc > 0) {
        s_usage(stdout);
        return 0;
    }
    if (rc < 0)
        return BENCH_EXIT_USAGE;

    int status = BENCH_EXIT_RUNTIME;
    float *queries = NULL, *base = NULL, *out = NULL;
    double *rates = NULL;
    uint16_t *halves = NULL;
    uint8_t *codes = NULL;
    quant_sq8_t *sq = NULL;
    quant_sq8_query_t pqs[S_QUERIES] = {0};
    /* Median rates by kernel and implementation, for the ratios. */
    double measured[DISTANCES_KERNEL_COUNT][DIST_IMPL_COUNT] = {{0}};
    if (o.n > SIZE_MAX / sizeof(float) / o.dim) {
        fprintf(stderr, "shoal-bench distances: --n %zu x --dim %zu floats do not fit in memory\n",
                o.n, o.dim);
        goto fail;
    }
    queries = malloc(S_QUERIES * o.dim * sizeof(float));
    base = malloc(o.n * o.dim * sizeof(float));
    out = malloc(o.n * sizeof(float));
    rates = malloc(o.reps * sizeof(double));
    halves = malloc(o.n * o.dim * sizeof(uint16_t));
    codes = malloc(o.n * o.dim);
    if (!queries || !base || !out || !rates || !halves || !codes) {
        fprintf(stderr, "shoal-bench distances: out of memory for %zu x %zu floats\n", o.n, o.dim);
        goto fail;
    }
    uint64_t state = 0x2545f4914f6cdd1dULL;
    s_fill_random(queries, S_QUERIES * o.dim, &state);
    s_fill_random(base, o.n * o.dim, &state);

    shoal_err_t err;
    sq = quant_sq8_train(base, o.n, o.dim, &err);
    if (!sq || quant_f16_encode(base, o.n, o.dim, halves, &err) != 0) {
        fprintf(stderr, "shoal-bench distances: encoding the rows: %s\n", err.msg);
        goto fail;
    }
    quant_sq8_encode(sq, base, o.n, codes, NULL);
    for (size_t q = 0; q < S_QUERIES; q++) {
        if (quant_sq8_query_init(&pqs[q], sq, queries + q * o.dim) != 0) {
            fprintf(stderr, "shoal-bench distances: out of memory for a query\n");
            goto fail;
        }
    }

    for (int kernel = 0; kernel < DISTANCES_KERNEL_COUNT; kernel++) {
        double scalar_rate = 0.0;
        for (int impl = 0; impl < DIST_IMPL_COUNT; impl++) {
            const dist_kernels_t *kernels = dist_kernels_get((dist_impl_t)impl);
            if (!kernels)
                continue;
            const quant_kernels_t *quant = quant_kernels_get((dist_impl_t)impl);
            if (s_kernel_kinds[kernel] != QUANT_F32 && !quant)
                continue; /* AVX2 without F16C */
            distances_run_t run = {
                .kernels = kernels,
                .quant = quant,
                .kernel = (distances_kernel_t)kernel,
                .queries = queries,
                .base = base,
                .halves = halves,
                .codes = codes,
                .pqs = pqs,
                .out = out,
                .n = o.n,
                .dim = o.dim,
            };
            double rate = s_measure(&run, o.reps, rates);
            measured[kernel][impl] = rate;
            if (impl == DIST_IMPL_SCALAR)
                scalar_rate = rate;
            double bytes = (double)quant_code_bytes(s_kernel_kinds[kernel], o.dim);
            printf("kernel=%s impl=%s dim=%zu n=%zu vectors_per_s=%.2e ns_per_vector=%.2f "
                   "gb_per_s=%.1f speedup_vs_scalar=%.2f",
                   s_kernel_names[kernel], kernels->name, o.dim, o.n, rate, 1e9 / rate,
                   rate * bytes / 1e9, rate / scalar_rate);
            double peer = measured[s_kernel_f32_peer[kernel]][impl];
            if (s_kernel_kinds[kernel] != QUANT_F32 && peer > 0.0)
                printf(" vs_f32=%.2f", rate / peer);
            printf("\n");
            fflush(stdout);
        }
    }
    status = 0;

fail:
    for (size_t q = 0; q < S_QUERIES; q++)
        quant_sq8_query_fini(&pqs[q]);
    quant_sq8_destroy(&sq);
    free(halves);
    free(codes);
    free(queries);
    free(base);
    free(out);
    free(rates);
    return status;
}
