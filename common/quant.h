/*
 * quant.h - compressed vector storage: the storage kinds (f32, f16, sq8), the
 * sq8 quantizer and its on-disk record, the kernels that compare a float32
 * query with stored codes, and the error bounds that let an exact search
 * re-score in float32 only the rows that could still be in the true top-k.
 *
 * A pure module (no sockets, no RocksDB): the shard's storage and the graph
 * walk build on it. Per stored vector of dim d:
 *     f32   4d bytes   the float32 row itself
 *     f16   2d bytes   IEEE 754 binary16 per component (round to nearest even)
 *     sq8    d bytes   one u8 code per component, x_i ~ offset_i + scale_i c_i
 *
 * Notation used below: x is the original float32 row, c its code, X the real
 * vector the code stands for (sq8: X_i = offset_i + scale_i c_i, exactly; f16:
 * the binary16 values), e = x - X the quantization error, q the float32 query,
 * u = 2^-24 (float's unit roundoff), gamma(n) = n u / (1 - n u).
 *
 * The sq8 quantizer: one offset and one scale per dimension, from the minimum
 * and maximum of each dimension over a training sample (offset = min,
 * scale = (max - min) / 255, rounded up so that max <= offset + 255 scale).
 * Why min/max and not percentile clipping (Qdrant's default quantile 0.99,
 * LVQ-style per-vector ranges): exact mode needs a bound that holds for every
 * row, and with min/max every training value, and every later value inside
 * the trained range, is within half a step of its code:
 *     |e_i| <= h_i = scale_i (1/2 + 2^-21)
 * (the 2^-21 covers the double-precision rounding of the encoder). Clipping
 * gives finer steps and so better recall for the graph walk, but the clipped
 * values have errors the step does not bound, and every such row would have
 * to be re-scored in float32 on every exact query. Rows inserted after
 * training can still fall outside the range: encoding clamps them to the
 * nearest end, reports them (quant_sq8_encode's `clamped`), and
 * quant_sq8_residual() gives a bound for such a row that
 * quant_bound_interval_row() uses instead of the quantizer's constant.
 * A constant dimension (max == min) gets scale 0: code 0, decoded exactly.
 *
 * f16: finite values whose magnitude rounds to at most 65504 are stored;
 * anything larger (it would round to infinity) and NaN are refused by
 * quant_f16_encode, not saturated: a saturated component has an error no
 * relative bound covers, and f16 storage is meant for data that fits it
 * (sq8 or f32 take the rest). Subnormal binary16 values are produced and
 * read like any other (gradual underflow, no flush to zero).
 *
 * Kernels: a scalar reference and AVX2+FMA / AVX-512F versions in
 * quant_avx2.c / quant_avx512.c, chosen like distance.h's: the implementation
 * is distance.h's choice (so SHOAL_SIMD=scalar|avx2|avx512 applies to both),
 * lowered to scalar when the CPU lacks F16C (vcvtph2ps / vcvtps2ph, checked
 * with CPUID at run time: AVX2 does not imply it).
 *
 * Thread-safety: a quant_sq8_t is read-only after it is built and may be used
 * from any number of threads; a quant_sq8_query_t or quant_bound_t belongs to
 * the one thread that initialised it. Everything else is pure.
 *
 * Inner layers trust their callers: rows and queries passed here have passed
 * vec_check (finite, squared norm representable), except where a function
 * says it checks (training, f16 encoding, loading a record).
 */
#ifndef SHOAL_QUANT_H
#define SHOAL_QUANT_H

#include "common/distance.h"
#include "common/error.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Largest dimension a quantizer or record accepts (as vecfile.h). */
#define QUANT_DIM_MAX 65536

/* ------------------------------------------------------------------------ */
/* Storage kinds                                                            */
/* ------------------------------------------------------------------------ */

typedef enum {
    QUANT_F32 = 0, /* float32, uncompressed */
    QUANT_F16 = 1, /* IEEE binary16 per component */
    QUANT_SQ8 = 2, /* u8 per component, per-dimension offset and scale */
    QUANT_KIND_COUNT
} quant_kind_t;

/* "f32", "f16" or "sq8"; "?" for an invalid value. */
const char *quant_kind_name(quant_kind_t kind);

/*
 * Parses "f32", "f16" or "sq8" (case-insensitive). Returns 0, or SHOAL_EINVAL
 * with a message naming the text ("storage \"f8\" is not one of f32|f16|sq8");
 * *kind is then untouched. err may be NULL.
 */
int quant_kind_parse(const char *text, quant_kind_t *kind, shoal_err_t *err);

/* Bytes one stored row of dim components takes: 4 dim, 2 dim or dim. */
size_t quant_code_bytes(quant_kind_t kind, size_t dim);

/* ------------------------------------------------------------------------ */
/* f16                                                                      */
/* ------------------------------------------------------------------------ */

/* Largest finite binary16 value, and the smallest magnitude that rounds past it. */
#define QUANT_F16_MAX      65504.0f
#define QUANT_F16_OVERFLOW 65520.0f

/*
 * The scalar reference conversions, bit for bit what F16C's vcvtps2ph (round
 * to nearest even) and vcvtph2ps do: overflow gives infinity, infinities stay
 * infinities, a NaN stays a NaN with the quiet bit set and the top payload
 * bits kept, subnormals on both sides are exact or correctly rounded.
 */
uint16_t quant_f16_from_float(float value);
float quant_f16_to_float(uint16_t half);

/*
 * Encodes n rows of dim floats into n * dim halves (chosen kernels). Refuses,
 * before writing anything, a value that is NaN, infinite or would round to
 * infinity: SHOAL_EINVAL naming it ("row 3 dim 7: 70000 overflows f16 (largest
 * 65504)"). err may be NULL.
 */
int quant_f16_encode(const float *rows, size_t n, size_t dim, uint16_t *codes, shoal_err_t *err);

/* count halves to floats (chosen kernels); exact. */
void quant_f16_decode(const uint16_t *codes, size_t count, float *out);

/* ------------------------------------------------------------------------ */
/* sq8 quantizer                                                            */
/* ------------------------------------------------------------------------ */

typedef struct quant_sq8 quant_sq8_t;

/*
 * Trains on n rows of dim floats (row after row): per dimension, offset = min
 * and scale = (max - min) / 255 (see the top of this file). NULL on error, err
 * says why: SHOAL_EINVAL for n == 0, dim outside 1..QUANT_DIM_MAX, a value
 * that is not finite ("row 12 dim 3 is not finite (nan)"), or a range whose
 * top does not fit a float; SHOAL_ENOMEM. The caller owns the result.
 */
quant_sq8_t *quant_sq8_train(const float *rows, size_t n, size_t dim, shoal_err_t *err);

/*
 * A quantizer from its arrays (copied), checked as a loaded record is:
 * offsets finite, scales finite and >= +0, offset + 255 scale finite.
 * NULL with SHOAL_EINVAL naming the first bad dimension, or SHOAL_ENOMEM.
 */
quant_sq8_t *quant_sq8_new(const float *offset, const float *scale, size_t dim, shoal_err_t *err);

/* Frees; NULL-safe; sets *sq_p to NULL. */
void quant_sq8_destroy(quant_sq8_t **sq_p);

size_t quant_sq8_dim(const quant_sq8_t *sq);

/* The per-dimension arrays, dim floats each; borrowed for the quantizer's lifetime. */
const float *quant_sq8_offset(const quant_sq8_t *sq);
const float *quant_sq8_scale(const quant_sq8_t *sq);

/*
 * An upper bound on |x - X|_2 for every row with nothing clamped: the norm of
 * the half-steps h. The constant the cheap bound uses.
 */
float quant_sq8_err_norm(const quant_sq8_t *sq);

/*
 * Encodes n rows into n * dim codes. A value more than half a step outside
 * its dimension's trained range (any value other than the constant in a
 * constant dimension) is clamped to the nearest end; clamped, when not NULL,
 * gets one byte per row, 1 where the row has such a value (its error is then
 * not bounded by the half-steps: use quant_sq8_residual for that row). Returns
 * the number of such rows. Rows are trusted finite (a NaN encodes as 0).
 */
size_t quant_sq8_encode(const quant_sq8_t *sq, const float *rows, size_t n, uint8_t *codes,
                        uint8_t *clamped);

/* n rows of codes to floats: offset_i + scale_i c_i, rounded once (fma). */
void quant_sq8_decode(const quant_sq8_t *sq, const uint8_t *codes, size_t n, float *rows);

/*
 * An upper bound on |row - X|_2 for one row and its code, computed from the
 * actual residual (never below it, rounded up): the row_err of
 * quant_bound_interval_row, for clamped rows, or for callers that keep a
 * per-row error to get intervals about 1.7x narrower than the constant ones
 * (a uniform rounding error has an RMS of h / sqrt(3), not h).
 */
float quant_sq8_residual(const quant_sq8_t *sq, const float *row, const uint8_t *code);

/* -- The sq8 record: how a quantizer is persisted and shipped ------------ */

/*
 * Layout, version 1; every field little-endian, floats IEEE binary32:
 *     offset      size    field
 *     0           4       magic QUANT_SQ8_MAGIC: the bytes "SQ8Q"
 *     4           4       version, QUANT_SQ8_VERSION
 *     8           4       dim, 1..QUANT_DIM_MAX
 *     12          4       reserved, 0 (a reader refuses anything else)
 *     16          4 dim   offset[dim]
 *     16 + 4 dim  4 dim   scale[dim]
 * Total 16 + 8 dim bytes. No checksum of its own: the record lives in
 * RocksDB values and checkpoint files, which carry theirs; the loader checks
 * every length and value instead.
 */
#define QUANT_SQ8_MAGIC        0x51385153u /* "SQ8Q" */
#define QUANT_SQ8_VERSION      1u
#define QUANT_SQ8_HEADER_BYTES 16u

/* Bytes of the record of a quantizer of dimension dim. */
size_t quant_sq8_record_size(size_t dim);

/* Writes the record, quant_sq8_record_size(dim) bytes, to buf. */
void quant_sq8_record_write(const quant_sq8_t *sq, uint8_t *buf);

/*
 * Reads a record of len bytes. expected_dim: the collection's dimension, or 0
 * to accept any. NULL on error with SHOAL_ECORRUPT naming what is wrong (bad
 * magic, version or reserved field, a length that is not 16 + 8 dim, a dim out
 * of range or not the expected one, a non-finite offset or scale, a negative
 * scale, a range top that overflows), or SHOAL_ENOMEM.
 */
quant_sq8_t *quant_sq8_record_read(const uint8_t *buf, size_t len, size_t expected_dim,
                                   shoal_err_t *err);

/* ------------------------------------------------------------------------ */
/* sq8: what a query precomputes                                            */
/* ------------------------------------------------------------------------ */

/*
 * The scale is folded into the query once, so that the inner loops are a
 * u8 -> float conversion and two FMAs (L2) or one (IP) per component:
 *     l2:  sum (shifted_i - scale_i c_i)^2   with shifted_i = q_i - offset_i
 *     dot: dot_offset + sum weighted_i c_i   with weighted_i = q_i scale_i
 * L2 could be one FMA too, as |shifted|^2 - 2 <shifted, scale c> + |scale c|^2
 * with the last term stored per row (4 more bytes per row); not taken: the
 * expansion cancels badly for near neighbours, where exactness matters, and
 * it would widen the bound by the magnitudes of both norms.
 */
typedef struct {
    size_t dim;         /* components per row */
    const float *scale; /* borrowed from the quantizer: it must outlive this */
    float *shifted;     /* owned, dim floats: q_i - offset_i */
    float *weighted;    /* owned, dim floats: q_i scale_i */
    float dot_offset;   /* sum q_i offset_i, summed in double, rounded once */
} quant_sq8_query_t;

/* Precomputes for query (dim floats). 0, or SHOAL_ENOMEM (pq is then empty). */
int quant_sq8_query_init(quant_sq8_query_t *pq, const quant_sq8_t *sq, const float *query);

/* Frees the arrays; NULL-safe, and safe on a zeroed or already finished pq. */
void quant_sq8_query_fini(quant_sq8_query_t *pq);

/* ------------------------------------------------------------------------ */
/* Kernel tables                                                            */
/* ------------------------------------------------------------------------ */

/*
 * Every kernel takes any dim >= 1, reads nothing past the last component of
 * a row, and needs no alignment. Batch kernels compare one query with n rows,
 * row i at codes + i * stride (stride >= dim, in codes), out[i] its result.
 * Results are raw: l2sq is the squared distance, dot the (not negated) inner
 * product; quant_distance() turns them into a metric's distance.
 */
typedef float (*quant_f16_pair_fn)(const float *query, const uint16_t *code, size_t dim);
typedef void (*quant_f16_batch_fn)(const float *query, const uint16_t *codes, size_t n, size_t dim,
                                   size_t stride, float *out);
typedef float (*quant_sq8_pair_fn)(const quant_sq8_query_t *pq, const uint8_t *code);
typedef void (*quant_sq8_batch_fn)(const quant_sq8_query_t *pq, const uint8_t *codes, size_t n,
                                   size_t stride, float *out);

typedef struct {
    const char *name; /* "scalar", "avx2" or "avx512" */
    dist_impl_t impl; /* which implementation this table is */
    /* count floats <-> halves; bit-exact with the scalar reference */
    void (*f32_to_f16)(const float *in, size_t count, uint16_t *out);
    void (*f16_to_f32)(const uint16_t *in, size_t count, float *out);
    quant_f16_pair_fn f16_l2sq;        /* sum (q_i - X_i)^2 */
    quant_f16_pair_fn f16_dot;         /* sum q_i X_i */
    quant_f16_batch_fn f16_l2sq_batch; /* f16_l2sq against each row */
    quant_f16_batch_fn f16_dot_batch;  /* f16_dot against each row */
    quant_sq8_pair_fn sq8_l2sq;        /* sum (q_i - X_i)^2 */
    quant_sq8_pair_fn sq8_dot;         /* sum q_i X_i */
    quant_sq8_batch_fn sq8_l2sq_batch; /* sq8_l2sq against each row */
    quant_sq8_batch_fn sq8_dot_batch;  /* sq8_dot against each row */
    /*
     * Code to code: sum (scale_i (a_i - b_i))^2, the squared L2 between two
     * decoded rows (HNSW construction on codes). scale: the quantizer's.
     */
    float (*sq8_sym_l2sq)(const float *scale, const uint8_t *a, const uint8_t *b, size_t dim);
} quant_kernels_t;

/*
 * The table for this process: distance.h's choice (SHOAL_SIMD included),
 * scalar when the CPU lacks F16C. Never NULL; decided at the first call.
 */
const quant_kernels_t *quant_kernels(void);

/* The table of one implementation, or NULL when this CPU cannot run it. */
const quant_kernels_t *quant_kernels_get(dist_impl_t impl);

/*
 * A metric's "smaller is nearer" distance from a raw kernel result, the way
 * the float32 engines form it: L2 raw, IP -raw, cosine (unit rows and query)
 * 1 - raw. This is the `approx` the bounds below take.
 */
float quant_distance(shoal_metric_t metric, float raw);

/* ------------------------------------------------------------------------ */
/* Error bounds                                                             */
/* ------------------------------------------------------------------------ */

/*
 * For a query q, a stored code and approx = quant_distance(metric, kernel
 * result), an interval [lo, hi] that contains the float32 distance F any of
 * distance.h's kernels (any implementation, any summation order) computes
 * between q and the original row x. Exact search uses it so: the k-th
 * smallest hi over all rows is an upper bound U on the true k-th distance;
 * every row whose lo <= U is re-scored in float32, the others cannot be in
 * the top-k. For rows with nothing clamped both lo and hi grow with approx,
 * so the k-th smallest of their hi is hi of the k-th smallest approx, and
 * quant_bound_approx_limit(U) turns "lo <= U" into one comparison of approx;
 * clamped sq8 rows (quant_bound_interval_row) are checked one by one. Every
 * step below is computed in double and rounded outwards.
 *
 * Three error sources are counted, for a dim-d row:
 *   (1) the code kernel's rounding: the approximation it returns is not
 *       exactly the distance between q and X;
 *   (2) quantization: X is not x;
 *   (3) the float32 kernel's rounding: F is not the exact distance to x.
 *
 * L2. The code kernel computes r = sum delta_i^2 where delta_i is its
 * rounded q_i - X_i: for f32/f16 one subtraction (a relative error u, counted
 * in gamma), for sq8 (q_i - offset_i) - scale_i c_i, which is off by at most
 * eps_i <= 3.01 u g_i with g_i = |q_i - offset_i| + 255 scale_i. The sum of
 * squares, in any order, is within gamma(d+2) of sum delta_i^2 (all terms are
 * non-negative), so with G = gamma(d+4) (two u of margin for the double
 * arithmetic):
 *     |delta| in [t_lo, t_hi] = [sqrt(r / (1 + G)), sqrt(r / (1 - G))].
 * delta = q - X~ with |X~ - X| <= |eps| and |X - x| <= E, so by the triangle
 * inequality |q - x| is within E' = E + |eps| of |delta|, and the exact
 * squared distance D = |q - x|^2 lies in [max(0, t_lo - E')^2, (t_hi + E')^2].
 * The float32 kernel's F is within gamma(d+2) of D (a subtraction, then d
 * roundings at most per term), so
 *     lo = (1 - G) max(0, t_lo - E')^2,     hi = (1 + G) (t_hi + E')^2.
 * E per kind: sq8 |h|_2 (quant_sq8_err_norm) or the row's residual; f16
 * 2^-11 |X| + 2^-25 sqrt(d), where |X| <= |q| + t_hi (binary16 rounding is
 * within 2^-11 |X_i| for normal X_i and 2^-25 below 2^-14); f32 0.
 * So the width is 4 t E' (t = sqrt(approx) >= E'; below, at most 4 E'^2)
 * plus 2 G (t + E')^2: with E = |h|_2 ~ |scale|_2 / 2, at most
 * 2 sqrt(D) |scale|_2 + |scale|_2^2 plus the rounding terms, the multiple of
 * the step the tests assert. This is the tightest bound from |e| alone: it is
 * reached when e is parallel to q - X (the tests build that case, and the
 * far row's distance is within 0.1% of hi). The per-component form, |<q - X, e>| <= sum |q_i - X_i|
 * h_i, is tighter only where q - X is not proportional to h: about 0.8 of the above for
 * Gaussian-like differences and equal steps (E|a|_1 = 0.8 sqrt(d) |a|_2), bought with a second
 * accumulator in every kernel; not taken.
 *
 * IP and cosine. The code kernel's dot r is within S of <q, X>: sq8
 * S = G M with M = sum |q_i| max(|offset_i|, |offset_i + 255 scale_i|)
 * (the terms, dot_offset's rounding and the final addition), f16/f32
 * S = gamma(d) |q| R' with R' >= |X|. Quantization moves it by
 * |<q, e>| <= P: sq8 P = sum |q_i| h_i (per component, tighter than
 * |q| |h|_2), or |q| row_err for a row with its own residual; f16
 * P = 2^-11 |q| R' + 2^-25 |q|_1; f32 0. The float32 dot F is within
 * gamma(d) sum |q_i x_i| <= gamma(d) Mx of <q, x>: sq8 Mx = M + P, f16/f32
 * Mx = |q| R. So with W = S + P + gamma(d) Mx,
 *     IP:      lo = approx - W,   hi = approx + W;
 *     cosine:  the same, widened by u |approx| (approx = 1 - r was rounded)
 *              and 3 gamma(d+4), which covers a float32 engine that
 *              computes the full 1 - a.b / (|a| |b|) on rows whose norms are
 *              1 only to within float rounding.
 * R is the caller's bound on stored rows' norms, needed only for IP on f16 or
 * f32 (sq8 codes are bounded by the trained box); cosine rows are unit (R is
 * taken as 1 + 2 u). R' = (R + 2^-25 sqrt(d)) / (1 - 2^-11) for f16, R for f32.
 * The IP width for sq8 is 2 P plus rounding: sum |q_i| scale_i (1 + 2^-20).
 *
 * Measured (10,000 rows, 100 queries; SIFT-like: clustered, dim 128, integer
 * values 0..255; glove50: cosine on unit rows): the width relative to the
 * distance is, on average over all rows / over each query's true top-10,
 *     SIFT-like L2:   sq8 3.2% / 10.5%   per-row residual 1.7% / 5.7%   f16 0.5% / 1.2%
 *     SIFT-like IP:   sq8 1.1% / 0.9%    per-row residual 0.7% / 0.6%   f16 0.2% / 0.1%
 *     glove50 cosine: sq8 2.4% / 8.8%    per-row residual 1.8% / 6.3%   f16 0.1% / 0.5%
 * and an exact top-10 through the bound re-scores 18 (sq8), 14 (per-row) or
 * 11 (f16) rows of 10,000 for SIFT-like L2, 16 / 14 / 10 of 9,000 for glove50.
 */
typedef struct {
    shoal_metric_t metric; /* the metric intervals are for */
    quant_kind_t kind;     /* the storage kind of the codes */
    size_t dim;            /* components per row */
    double gamma_d;        /* gamma(dim): a d-term float sum's relative error */
    double gamma_g;        /* G = gamma(dim + 4) */
    double q_norm;         /* |q|_2 */
    double l2_err;         /* L2: E' for a row with nothing clamped (sq8, f32) */
    double l2_eps;         /* L2, sq8: |eps|, the code kernel's perturbation */
    double f16_rel;        /* L2, f16: E = f16_rel (|q| + t_hi) + f16_abs */
    double f16_abs;        /* L2, f16: 2^-25 sqrt(dim) */
    double ip_code_slack;  /* IP/cosine: S */
    double ip_quant;       /* IP/cosine: P for a row with nothing clamped */
    double ip_mag;         /* IP/cosine: Mx less P for sq8 (M), |q| R for f16/f32 */
    double row_norm;       /* IP/cosine, f16/f32: R; sq8: unused */
} quant_bound_t;

/*
 * Precomputes a query's bound. sq: the quantizer for QUANT_SQ8 (its dim must
 * be dim), NULL otherwise. row_norm_max: R above, for IP on f16/f32 (must be
 * finite and > 0 there); ignored otherwise. 0 or SHOAL_EINVAL (err says why).
 */
int quant_bound_init(quant_bound_t *b, quant_kind_t kind, const quant_sq8_t *sq,
                     shoal_metric_t metric, const float *query, size_t dim, float row_norm_max,
                     shoal_err_t *err);

/* [lo, hi] for a row with nothing clamped (every f16 and f32 row). */
void quant_bound_interval(const quant_bound_t *b, float approx, float *lo, float *hi);

/*
 * [lo, hi] for a row with its own residual bound row_err >= |x - X|_2
 * (quant_sq8_residual): a clamped sq8 row, or a caller keeping per-row errors.
 */
void quant_bound_interval_row(const quant_bound_t *b, float approx, float row_err, float *lo,
                              float *hi);

/*
 * A value A such that every row with nothing clamped whose interval's lo is
 * <= upper has approx <= A (rounded up: a larger A only re-scores more).
 * -INFINITY under L2 when upper < 0 (no distance is negative).
 */
float quant_bound_approx_limit(const quant_bound_t *b, float upper);

#ifdef __cplusplus
}
#endif

#endif
