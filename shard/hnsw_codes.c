/*
 * hnsw_codes.c - what a graph's storage kind decides: how a prepared vector
 * is stored (f32 row, f16 halves, sq8 codes), how a query is prepared for
 * the walk, how two stored vectors are compared, how a code is decoded, and
 * the sq8 quantizer a batch trains when none was given. hnsw_private.h has
 * the block layout and the inline hot path (hnsw_query_dist); common/quant.h
 * the formats, kernels and error bounds.
 *
 * Code-to-code distances (construction's neighbour selection, repair after
 * deletes) are the one place the graph compares two stored vectors: sq8 L2
 * uses quant.h's code-to-code kernel; f16 decodes a chunk of both on the
 * stack and uses the float32 kernels; sq8 dot (IP, cosine) has no kernel in
 * quant.h and is the plain loop below, which the compiler vectorises.
 */
#include "shard/hnsw_private.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Node-to-node distances on f16 codes decode this many components at a time. */
#define S_DECODE_CHUNK 256

/* ------------------------------------------------------------------------ */
/* Queries and distances                                                    */
/* ------------------------------------------------------------------------ */

int hnsw_query_init(const hnsw_t *ix, hnsw_query_t *q, const float *vec)
{
    memset(q, 0, sizeof *q);
    q->vec = vec;
    if (ix->storage == QUANT_SQ8 && ix->sq8)
        return quant_sq8_query_init(&q->sq8, ix->sq8, vec);
    return 0;
}

void hnsw_query_fini(hnsw_query_t *q)
{
    quant_sq8_query_fini(&q->sq8);
}

void hnsw_decode(const hnsw_t *ix, uint32_t slot, float *out)
{
    const void *code = hnsw_code(ix, slot);
    switch (ix->storage) {
    case QUANT_F32:
        memcpy(out, code, ix->dim * sizeof(float));
        break;
    case QUANT_F16:
        ix->qk->f16_to_f32(code, ix->dim, out);
        break;
    default:
        quant_sq8_decode(ix->sq8, code, 1, out);
        break;
    }
}

/* f16 code to code: decoded S_DECODE_CHUNK components at a time, on the stack. */
static float s_f16_raw(const hnsw_t *ix, const uint16_t *a, const uint16_t *b)
{
    float fa[S_DECODE_CHUNK], fb[S_DECODE_CHUNK];
    float sum = 0.0f;
    for (size_t i = 0; i < ix->dim; i += S_DECODE_CHUNK) {
        size_t n = ix->dim - i < S_DECODE_CHUNK ? ix->dim - i : S_DECODE_CHUNK;
        ix->qk->f16_to_f32(a + i, n, fa);
        ix->qk->f16_to_f32(b + i, n, fb);
        sum += ix->metric == SHOAL_METRIC_L2 ? ix->kern->l2sq(fa, fb, n) : ix->kern->dot(fa, fb, n);
    }
    return sum;
}

/*
 * sq8 code to code, dot: sum (o_i + s_i a_i)(o_i + s_i b_i). quant.h has a
 * code-to-code kernel for L2 only; this loop is what construction with IP
 * or cosine on sq8 pays (the compiler vectorises it).
 */
static float s_sq8_dot_raw(const hnsw_t *ix, const uint8_t *a, const uint8_t *b)
{
    const float *off = quant_sq8_offset(ix->sq8), *scale = quant_sq8_scale(ix->sq8);
    float sum = 0.0f;
    for (size_t i = 0; i < ix->dim; i++)
        sum += (off[i] + scale[i] * (float)a[i]) * (off[i] + scale[i] * (float)b[i]);
    return sum;
}

float hnsw_slot_dist(const hnsw_t *ix, uint32_t a, uint32_t b)
{
    const void *ca = hnsw_code(ix, a), *cb = hnsw_code(ix, b);
    float raw;
    switch (ix->storage) {
    case QUANT_F32:
        return hnsw_dist(ix, ca, cb);
    case QUANT_F16:
        raw = s_f16_raw(ix, ca, cb);
        break;
    default:
        raw = ix->metric == SHOAL_METRIC_L2
                  ? ix->qk->sq8_sym_l2sq(quant_sq8_scale(ix->sq8), ca, cb, ix->dim)
                  : s_sq8_dot_raw(ix, ca, cb);
        break;
    }
    return hnsw_metric_dist(ix->metric, raw);
}

/* ------------------------------------------------------------------------ */
/* Storing                                                                  */
/* ------------------------------------------------------------------------ */

void hnsw_encode(hnsw_t *ix, uint32_t slot, const float *v)
{
    void *code = hnsw_code(ix, slot);
    switch (ix->storage) {
    case QUANT_F32:
        memcpy(code, v, ix->dim * sizeof(float));
        break;
    case QUANT_F16: /* hnsw_prepare checked the range */
        ix->qk->f32_to_f16(v, ix->dim, code);
        break;
    default: { /* a value outside the trained range is clamped (hnsw.h) */
        uint8_t clamped = 0;
        quant_sq8_encode(ix->sq8, v, 1, code, &clamped);
        *hnsw_row_err(ix, slot) = clamped ? quant_sq8_residual(ix->sq8, v, code) : 0.0f;
        ix->nclamped += clamped != 0;
        break;
    }
    }
    float norm = sqrtf(ix->kern->dot(v, v, ix->dim));
    if (norm > ix->row_norm_max)
        ix->row_norm_max = norm;
}

float hnsw_code_norm(const hnsw_t *ix, uint32_t slot, float *scratch)
{
    hnsw_decode(ix, slot, scratch);
    return sqrtf(ix->kern->dot(scratch, scratch, ix->dim));
}

int hnsw_train_sq8(hnsw_t *ix, const float *rows, size_t n, shoal_err_t *err)
{
    int rc = 0;
    float *unit = NULL;
    pthread_rwlock_wrlock(&ix->rw);
    if (ix->sq8)
        goto done;
    if (ix->metric == SHOAL_METRIC_COSINE) {
        unit = malloc(n * ix->dim * sizeof(float));
        if (!unit) {
            rc = shoal_err_set(err, SHOAL_ENOMEM, "hnsw: out of memory training sq8 on %zu rows",
                               n);
            goto done;
        }
        memcpy(unit, rows, n * ix->dim * sizeof(float));
        for (size_t i = 0; i < n; i++)
            dist_normalize(unit + i * ix->dim, ix->dim); /* checked: not zero */
        rows = unit;
    }
    shoal_err_t terr;
    ix->sq8 = quant_sq8_train(rows, n, ix->dim, &terr);
    if (!ix->sq8)
        rc = shoal_err_set(err, terr.code, "hnsw: training sq8 on the first batch: %s", terr.msg);
done:
    pthread_rwlock_unlock(&ix->rw);
    free(unit);
    return rc;
}
