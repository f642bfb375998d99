/*
 * hnsw_io.c - saving and loading an index, and its invariant checker.
 *
 * Format, version 3. Every field is in the writer's byte order, which the
 * endianness marker records; a reader of the other byte order refuses it
 * (SHOAL_EUNSUPPORTED) rather than guessing.
 *
 *   header (72 bytes)
 *     0  char[8]  magic "SHOALHNS"
 *     8  u32      format version (3; 1 and 2 are still read)
 *    12  u32      endianness marker 0x01020304
 *    16  u32      dim                 1..HNSW_DIM_MAX
 *    20  u32      metric              0 l2, 1 ip, 2 cosine
 *    24  u32      M                   HNSW_M_MIN..HNSW_M_MAX
 *    28  u32      M0                  2 * M
 *    32  u32      ef_construction     HNSW_EF_CONSTRUCTION_MIN..MAX
 *    36  i32      max_level           -1 (empty) .. HNSW_LEVEL_MAX
 *    40  u64      seed
 *    48  u64      nodes               number of node records
 *    56  u32      entry               entry node (record number); UINT32_MAX when empty
 *    60  u32      storage             0 f32, 1 f16, 2 sq8 (quant_kind_t)
 *    64  u64      reserved (0)
 *   then the quantizer:
 *     u32 length: of the sq8 record that follows (common/quant.h's layout,
 *         16 + 8 dim bytes, its own magic and version); 0 for f32 and f16,
 *         and for an sq8 index that has no quantizer yet (then no nodes)
 *     u8 record[length]
 *   then `nodes` records, record r being node r:
 *     u64 id, u32 level, code[quant_code_bytes(storage, dim)] (float32 row,
 *     binary16 halves or sq8 codes; normalised for cosine),
 *     sq8 only: f32 row_err (the row's own error bound, 0 when its code was
 *     not clamped; hnsw_private.h),
 *     for each layer 0..level: u32 count (<= M0 on layer 0, <= M above),
 *                              u32 links[count] (record numbers)
 *
 * Version 2 is version 3 without row_err: its sq8 rows load with row_err
 * +infinity (unknown), so exact search re-scores each of them. Version 1 is
 * version 2 with storage 0 and no quantizer part (offset 60 was reserved, 0):
 * version 1 files, all float32, still load. Codes are
 * written as they are held: loading neither re-encodes nor retrains.
 *
 * Free slots are not written: the writer numbers the live nodes in slot
 * order (compaction), so a loaded index has no free slots and its memory is
 * bounded by the blob's size. The renumbering keeps slot order, so searches
 * on the loaded index break ties exactly as on the saved one and return the
 * same results.
 *
 * The loader trusts nothing: the header's fields are range-checked, the
 * record count is checked against the blob's length before anything is
 * allocated, every read is bounds-checked, every link must name a record,
 * ids must be unique, and the finished graph must pass hnsw_validate's
 * checks (links to nodes reaching the layer, no self or duplicate links,
 * entry point at the top level). Anything else is SHOAL_ECORRUPT naming it.
 */
#include "shard/hnsw.h"

#include "shard/hnsw_private.h"

#include <assert.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_MAGIC          "SHOALHNS"
#define S_VERSION        3u
#define S_VERSION_NO_ERR 2u /* sq8 rows without row_err: still read */
#define S_VERSION_F32    1u /* float32 only, no quantizer part: still read */
#define S_ENDIAN         0x01020304u
#define S_ENDIAN_SWAPPED 0x04030201u
#define S_HEADER_BYTES   72
/* Writes are gathered into pieces of this size. */
#define S_WRITE_CHUNK 65536

typedef struct {
    char magic[8];
    uint32_t version;
    uint32_t endian;
    uint32_t dim;
    uint32_t metric;
    uint32_t M;
    uint32_t M0;
    uint32_t ef_construction;
    int32_t max_level;
    uint64_t seed;
    uint64_t nodes;
    uint32_t entry;
    uint32_t storage; /* reserved (0) in version 1 */
    uint64_t reserved64;
} s_header_t;

static_assert(sizeof(s_header_t) == S_HEADER_BYTES, "hnsw file header must be 72 bytes");

/* ------------------------------------------------------------------------ */
/* Invariants                                                               */
/* ------------------------------------------------------------------------ */

/* Checks one live slot's list on layer lc: its length, and that each link names
 * another live slot reaching lc, once. */
static int s_check_layer(hnsw_t *ix, size_t s, int lc, shoal_err_t *err)
{
    const uint32_t *l = hnsw_links(ix, (uint32_t)s, lc);
    if (l[0] > hnsw_cap(ix, lc))
        return shoal_err_set(err, SHOAL_EINTERNAL, "hnsw: slot %zu has %u links on layer %d, max %zu",
                             s, l[0], lc, hnsw_cap(ix, lc));
    for (size_t i = 0; i < l[0]; i++) {
        uint32_t t = l[1 + i];
        if (t >= ix->nslots)
            return shoal_err_set(err, SHOAL_EINTERNAL,
                                 "hnsw: slot %zu links to %u on layer %d, past %zu slots", s, t, lc,
                                 ix->nslots);
        if (t == s)
            return shoal_err_set(err, SHOAL_EINTERNAL,
                                 "hnsw: slot %zu links to itself on layer %d", s, lc);
        int tl = hnsw_node(ix, t)->level;
        if (tl < 0)
            return shoal_err_set(err, SHOAL_EINTERNAL,
                                 "hnsw: slot %zu links to free slot %u on layer %d", s, t, lc);
        if (tl < lc)
            return shoal_err_set(err, SHOAL_EINTERNAL,
                                 "hnsw: slot %zu links on layer %d to slot %u of level %d", s, lc,
                                 t, tl);
        for (size_t j = 0; j < i; j++) {
            if (l[1 + j] == t)
                return shoal_err_set(err, SHOAL_EINTERNAL,
                                     "hnsw: slot %zu links twice to %u on layer %d", s, t, lc);
        }
    }
    return 0;
}

/* Checks one live slot: its level, its upper links, its id map entry, then
 * its list on every layer it reaches. */
static int s_check_node(hnsw_t *ix, size_t s, const hnsw_node_t *node, shoal_err_t *err)
{
    if (node->level > HNSW_LEVEL_MAX)
        return shoal_err_set(err, SHOAL_EINTERNAL, "hnsw: slot %zu has level %d, max %d", s,
                             node->level, HNSW_LEVEL_MAX);
    if (node->level > 0 && !node->upper)
        return shoal_err_set(err, SHOAL_EINTERNAL, "hnsw: slot %zu has level %d but no links", s,
                             node->level);
    if (node->id == HNSW_ID_NONE || hnsw_map_find(ix, node->id) != s)
        return shoal_err_set(err, SHOAL_EINTERNAL,
                             "hnsw: slot %zu (id %llu) is not in the id map under its id", s,
                             (unsigned long long)node->id);
    for (int lc = 0; lc <= node->level; lc++) {
        int rc = s_check_layer(ix, s, lc, err);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* Checks the counts (live slots, count, id map, free list) and that every
 * free list entry is a free slot. */
static int s_check_counts(hnsw_t *ix, size_t live, shoal_err_t *err)
{
    if (live != atomic_load(&ix->count) || live != ix->map_count)
        return shoal_err_set(err, SHOAL_EINTERNAL,
                             "hnsw: %zu live slots, but count says %zu and the id map holds %zu",
                             live, atomic_load(&ix->count), ix->map_count);
    if (live + ix->nfree != ix->nslots)
        return shoal_err_set(err, SHOAL_EINTERNAL,
                             "hnsw: %zu live + %zu free slots, expected %zu in all", live,
                             ix->nfree, ix->nslots);
    for (size_t i = 0; i < ix->nfree; i++) {
        uint32_t f = ix->free_slots[i];
        if (f >= ix->nslots || hnsw_node(ix, f)->level >= 0)
            return shoal_err_set(err, SHOAL_EINTERNAL,
                                 "hnsw: free list entry %zu (slot %u) is "
                                 "not a free slot",
                                 i, f);
    }
    /* Free slots are exactly those at level -1 and as many as listed; a
     * duplicate in the list would leave another free slot out, which the
     * count check above catches together with this one. */
    return 0;
}

/* Checks the entry point: none in an empty index, else a live slot at the
 * highest level any node has. */
static int s_check_entry(hnsw_t *ix, size_t live, int top_level, shoal_err_t *err)
{
    int max_level;
    uint32_t ep;
    hnsw_top_unpack(atomic_load(&ix->top), &max_level, &ep);
    if (live == 0) {
        if (ep != HNSW_SLOT_NONE || max_level != -1)
            return shoal_err_set(err, SHOAL_EINTERNAL,
                                 "hnsw: empty index has entry point %u at level %d", ep, max_level);
        return 0;
    }
    if (ep >= ix->nslots || hnsw_node(ix, ep)->level < 0)
        return shoal_err_set(err, SHOAL_EINTERNAL, "hnsw: entry point %u is not a live slot", ep);
    if (hnsw_node(ix, ep)->level != max_level || max_level != top_level)
        return shoal_err_set(err, SHOAL_EINTERNAL,
                             "hnsw: entry point level %d, max level %d, highest node level %d",
                             hnsw_node(ix, ep)->level, max_level, top_level);
    return 0;
}

int hnsw_validate_locked(hnsw_t *ix, shoal_err_t *err)
{
    size_t live = 0;
    int top_level = -1;
    for (size_t s = 0; s < ix->nslots; s++) {
        hnsw_node_t *node = hnsw_node(ix, (uint32_t)s);
        if (node->level < 0)
            continue;
        live++;
        int rc = s_check_node(ix, s, node, err);
        if (rc != 0)
            return rc;
        if (node->level > top_level)
            top_level = node->level;
    }
    int rc = s_check_counts(ix, live, err);
    if (rc != 0)
        return rc;
    return s_check_entry(ix, live, top_level, err);
}

int hnsw_validate(const hnsw_t *index, shoal_err_t *err)
{
    if (!index)
        return shoal_err_set(err, SHOAL_EINVAL, "hnsw_validate: index is NULL");
    hnsw_t *ix = (hnsw_t *)index;
    pthread_rwlock_wrlock(&ix->rw);
    int rc = hnsw_validate_locked(ix, err);
    pthread_rwlock_unlock(&ix->rw);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Save                                                                     */
/* ------------------------------------------------------------------------ */

typedef struct {
    hnsw_write_fn write; /* caller's sink */
    void *ctx;           /* its context */
    uint8_t *buf;        /* pending bytes */
    size_t n;            /* pending count */
    int rc;              /* first error from write */
} s_writer_t;

static void s_flush(s_writer_t *w)
{
    if (w->rc == 0 && w->n)
        w->rc = w->write(w->ctx, w->buf, w->n);
    w->n = 0;
}

static void s_put(s_writer_t *w, const void *data, size_t len)
{
    const uint8_t *p = data;
    while (len && w->rc == 0) {
        size_t room = S_WRITE_CHUNK - w->n;
        size_t take = len < room ? len : room;
        memcpy(w->buf + w->n, p, take);
        w->n += take;
        p += take;
        len -= take;
        if (w->n == S_WRITE_CHUNK)
            s_flush(w);
    }
}

/* hnsw_save and hnsw_save_shared: the lock taken is the only difference. */
static int s_save(const hnsw_t *index, hnsw_write_fn write, void *ctx, int shared,
                  shoal_err_t *err)
{
    if (!index || !write)
        return shoal_err_set(err, SHOAL_EINVAL, "hnsw_save: index and write must not be NULL");
    hnsw_t *ix = (hnsw_t *)index;
    s_writer_t w = {.write = write, .ctx = ctx};
    w.buf = malloc(S_WRITE_CHUNK);
    if (shared)
        pthread_rwlock_rdlock(&ix->rw);
    else
        pthread_rwlock_wrlock(&ix->rw);
    uint32_t *rank = malloc((ix->nslots ? ix->nslots : 1) * sizeof *rank);
    if (!w.buf || !rank) {
        pthread_rwlock_unlock(&ix->rw);
        free(w.buf);
        free(rank);
        return shoal_err_set(err, SHOAL_ENOMEM, "hnsw_save: out of memory");
    }
    uint32_t nodes = 0;
    for (size_t s = 0; s < ix->nslots; s++)
        rank[s] = hnsw_node(ix, (uint32_t)s)->level >= 0 ? nodes++ : HNSW_SLOT_NONE;

    int max_level;
    uint32_t ep;
    hnsw_top_unpack(atomic_load(&ix->top), &max_level, &ep);
    s_header_t h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, S_MAGIC, 8);
    h.version = S_VERSION;
    h.endian = S_ENDIAN;
    h.dim = (uint32_t)ix->dim;
    h.metric = (uint32_t)ix->metric;
    h.M = (uint32_t)ix->M;
    h.M0 = (uint32_t)ix->M0;
    h.ef_construction = (uint32_t)ix->ef_construction;
    h.max_level = max_level;
    h.seed = ix->seed;
    h.nodes = nodes;
    h.entry = ep == HNSW_SLOT_NONE ? HNSW_SLOT_NONE : rank[ep];
    h.storage = (uint32_t)ix->storage;
    s_put(&w, &h, sizeof h);
    uint8_t record[QUANT_SQ8_HEADER_BYTES + 8 * 64]; /* on the stack up to dim 64 */
    uint32_t record_len = ix->sq8 ? (uint32_t)quant_sq8_record_size(ix->dim) : 0;
    uint8_t *rec = record_len > sizeof record ? malloc(record_len) : record;
    if (!rec)
        w.rc = SHOAL_ENOMEM;
    s_put(&w, &record_len, sizeof record_len);
    if (record_len && rec) {
        quant_sq8_record_write(ix->sq8, rec);
        s_put(&w, rec, record_len);
    }
    if (rec != record)
        free(rec);

    uint32_t links[HNSW_LINKS_MAX];
    for (size_t s = 0; s < ix->nslots && w.rc == 0; s++) {
        hnsw_node_t *node = hnsw_node(ix, (uint32_t)s);
        if (node->level < 0)
            continue;
        uint32_t level = (uint32_t)node->level;
        s_put(&w, &node->id, sizeof node->id);
        s_put(&w, &level, sizeof level);
        s_put(&w, hnsw_code(ix, (uint32_t)s), ix->code_bytes);
        if (ix->storage == QUANT_SQ8)
            s_put(&w, hnsw_row_err(ix, (uint32_t)s), sizeof(float));
        for (int lc = 0; lc <= node->level; lc++) {
            const uint32_t *l = hnsw_links(ix, (uint32_t)s, lc);
            for (size_t i = 0; i < l[0]; i++)
                links[i] = rank[l[1 + i]];
            s_put(&w, l, sizeof(uint32_t));
            s_put(&w, links, l[0] * sizeof(uint32_t));
        }
    }
    s_flush(&w);
    pthread_rwlock_unlock(&ix->rw);
    free(rank);
    free(w.buf);
    if (w.rc)
        return shoal_err_set(err, w.rc < 0 ? w.rc : SHOAL_EIO,
                             "hnsw_save: the write callback failed (%d)", w.rc);
    return 0;
}

int hnsw_save(const hnsw_t *index, hnsw_write_fn write, void *ctx, shoal_err_t *err)
{
    return s_save(index, write, ctx, 0, err);
}

int hnsw_save_shared(const hnsw_t *index, hnsw_write_fn write, void *ctx, shoal_err_t *err)
{
    return s_save(index, write, ctx, 1, err);
}

typedef struct {
    uint8_t *data; /* malloc'd */
    size_t len;    /* used */
    size_t cap;    /* allocated */
} s_membuf_t;

static int s_membuf_write(void *ctx, const void *data, size_t len)
{
    s_membuf_t *m = ctx;
    if (m->len + len > m->cap) {
        size_t cap = m->cap ? m->cap : 65536;
        while (cap < m->len + len)
            cap *= 2;
        uint8_t *p = realloc(m->data, cap);
        if (!p)
            return SHOAL_ENOMEM;
        m->data = p;
        m->cap = cap;
    }
    memcpy(m->data + m->len, data, len);
    m->len += len;
    return 0;
}

int hnsw_save_buffer(const hnsw_t *index, uint8_t **blob, size_t *len, shoal_err_t *err)
{
    if (!blob || !len)
        return shoal_err_set(err, SHOAL_EINVAL, "hnsw_save_buffer: blob and len must not be NULL");
    s_membuf_t m = {0};
    int rc = hnsw_save(index, s_membuf_write, &m, err);
    if (rc) {
        free(m.data);
        return rc;
    }
    *blob = m.data;
    *len = m.len;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Load                                                                     */
/* ------------------------------------------------------------------------ */

typedef struct {
    const uint8_t *p; /* blob */
    size_t len;       /* its size */
    size_t pos;       /* next byte to read */
} s_reader_t;

/* Copies n bytes out, or returns 0 when fewer are left. */
static int s_get(s_reader_t *r, void *out, size_t n)
{
    if (n > r->len - r->pos)
        return 0;
    memcpy(out, r->p + r->pos, n);
    r->pos += n;
    return 1;
}

static hnsw_t *s_corrupt(hnsw_t *ix, shoal_err_t *err, int code, const char *what, ...)
    __attribute__((format(printf, 4, 5)));

static hnsw_t *s_corrupt(hnsw_t *ix, shoal_err_t *err, int code, const char *what, ...)
{
    char msg[SHOAL_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, what);
    vsnprintf(msg, sizeof msg, what, ap);
    va_end(ap);
    shoal_err_set(err, code, "hnsw_load: %s", msg);
    hnsw_destroy(&ix);
    return NULL;
}

static hnsw_t *s_check_header(const s_header_t *h, size_t len, shoal_err_t *err)
{
    if (memcmp(h->magic, S_MAGIC, 8) != 0)
        return s_corrupt(NULL, err, SHOAL_ECORRUPT, "bad magic: not an HNSW index");
    if (h->version != S_VERSION && h->version != S_VERSION_NO_ERR && h->version != S_VERSION_F32)
        return s_corrupt(NULL, err, SHOAL_EUNSUPPORTED,
                         "format version %u, this build reads %u to %u", h->version,
                         S_VERSION_F32, S_VERSION);
    if (h->endian == S_ENDIAN_SWAPPED)
        return s_corrupt(NULL, err, SHOAL_EUNSUPPORTED,
                         "written on a host of the other byte order");
    if (h->endian != S_ENDIAN)
        return s_corrupt(NULL, err, SHOAL_ECORRUPT, "endianness marker 0x%08x, expected 0x%08x",
                         h->endian, S_ENDIAN);
    if (h->dim < 1 || h->dim > HNSW_DIM_MAX)
        return s_corrupt(NULL, err, SHOAL_ECORRUPT, "dim %u, expected 1..%d", h->dim, HNSW_DIM_MAX);
    if (h->metric > SHOAL_METRIC_COSINE)
        return s_corrupt(NULL, err, SHOAL_ECORRUPT, "metric %u, expected 0..2", h->metric);
    if (h->M < HNSW_M_MIN || h->M > HNSW_M_MAX)
        return s_corrupt(NULL, err, SHOAL_ECORRUPT, "M %u, expected %d..%d", h->M, HNSW_M_MIN,
                         HNSW_M_MAX);
    if (h->M0 != 2 * h->M)
        return s_corrupt(NULL, err, SHOAL_ECORRUPT, "M0 %u, expected 2 * M = %u", h->M0, 2 * h->M);
    if (h->ef_construction < HNSW_EF_CONSTRUCTION_MIN ||
        h->ef_construction > HNSW_EF_CONSTRUCTION_MAX)
        return s_corrupt(NULL, err, SHOAL_ECORRUPT, "ef_construction %u, expected %d..%d",
                         h->ef_construction, HNSW_EF_CONSTRUCTION_MIN, HNSW_EF_CONSTRUCTION_MAX);
    if (h->max_level < -1 || h->max_level > HNSW_LEVEL_MAX)
        return s_corrupt(NULL, err, SHOAL_ECORRUPT, "max level %d, expected -1..%d", h->max_level,
                         HNSW_LEVEL_MAX);
    if ((h->version == S_VERSION_F32 && h->storage != 0) || h->reserved64 != 0)
        return s_corrupt(NULL, err, SHOAL_ECORRUPT, "reserved header fields are not zero");
    if (h->storage >= QUANT_KIND_COUNT)
        return s_corrupt(NULL, err, SHOAL_ECORRUPT, "storage %u, expected 0..%d (f32|f16|sq8)",
                         h->storage, QUANT_KIND_COUNT - 1);
    /* Every record holds at least an id, a level, a vector and a count. */
    size_t min_record = 8 + 4 + quant_code_bytes((quant_kind_t)h->storage, h->dim) + 4;
    size_t body = len - S_HEADER_BYTES;
    if (h->nodes > body / min_record || h->nodes > HNSW_SLOTS_MAX)
        return s_corrupt(NULL, err, SHOAL_ECORRUPT,
                         "%llu nodes cannot fit in %zu bytes (at least %zu bytes each)",
                         (unsigned long long)h->nodes, body, min_record);
    if ((h->nodes == 0) != (h->entry == HNSW_SLOT_NONE) ||
        (h->entry != HNSW_SLOT_NONE && h->entry >= h->nodes))
        return s_corrupt(NULL, err, SHOAL_ECORRUPT, "entry point %u with %llu nodes", h->entry,
                         (unsigned long long)h->nodes);
    return NULL;
}

/*
 * Version 2's quantizer part: its length, then (sq8) the record, read and
 * checked by common/quant.c. *sq8 gets the quantizer (NULL when there is
 * none). 0, or -1 with err set (SHOAL_ECORRUPT, or SHOAL_ENOMEM).
 */
static int s_load_quantizer(const s_header_t *h, s_reader_t *r, quant_sq8_t **sq8,
                            shoal_err_t *err)
{
    uint32_t rlen;
    if (!s_get(r, &rlen, 4)) {
        s_corrupt(NULL, err, SHOAL_ECORRUPT, "truncated before the quantizer record");
        return -1;
    }
    if (h->storage != QUANT_SQ8 && rlen != 0) {
        s_corrupt(NULL, err, SHOAL_ECORRUPT, "a %u-byte quantizer record with storage %s", rlen,
                  quant_kind_name((quant_kind_t)h->storage));
        return -1;
    }
    if (h->storage == QUANT_SQ8 && rlen == 0 && h->nodes != 0) {
        s_corrupt(NULL, err, SHOAL_ECORRUPT, "sq8 storage with %llu nodes but no quantizer",
                  (unsigned long long)h->nodes);
        return -1;
    }
    if (rlen > r->len - r->pos) {
        s_corrupt(NULL, err, SHOAL_ECORRUPT, "quantizer record of %u bytes, %zu left", rlen,
                  r->len - r->pos);
        return -1;
    }
    if (rlen == 0)
        return 0;
    shoal_err_t qerr;
    *sq8 = quant_sq8_record_read(r->p + r->pos, rlen, h->dim, &qerr);
    if (!*sq8) {
        s_corrupt(NULL, err, qerr.code == SHOAL_ENOMEM ? SHOAL_ENOMEM : SHOAL_ECORRUPT,
                  "quantizer record: %s", qerr.msg);
        return -1;
    }
    r->pos += rlen;
    return 0;
}

/* Non-zero when a loaded code holds only finite values (sq8 codes always do). */
static int s_code_finite(const hnsw_t *ix, const void *code)
{
    if (ix->storage == QUANT_F32) {
        const float *v = code;
        for (size_t d = 0; d < ix->dim; d++) {
            if (!isfinite(v[d]))
                return 0;
        }
    } else if (ix->storage == QUANT_F16) {
        const uint16_t *v = code;
        for (size_t d = 0; d < ix->dim; d++) {
            if ((v[d] & 0x7c00u) == 0x7c00u) /* exponent all ones: infinity or NaN */
                return 0;
        }
    }
    return 1;
}

/* Reads node slot's list on layer lc: its count (at most the layer's
 * capacity), then links that must each name a record. Returns ix, or NULL
 * with ix destroyed and err set. */
static hnsw_t *s_load_links(hnsw_t *ix, const s_header_t *h, s_reader_t *r, uint32_t slot,
                            uint32_t lc, shoal_err_t *err)
{
    uint32_t *l = hnsw_links(ix, slot, (int)lc);
    uint32_t n;
    if (!s_get(r, &n, 4))
        return s_corrupt(ix, err, SHOAL_ECORRUPT, "node %u: truncated links", slot);
    if (n > hnsw_cap(ix, (int)lc))
        return s_corrupt(ix, err, SHOAL_ECORRUPT, "node %u: %u links on layer %u, max %zu",
                         slot, n, lc, hnsw_cap(ix, (int)lc));
    if (!s_get(r, l + 1, (size_t)n * 4))
        return s_corrupt(ix, err, SHOAL_ECORRUPT, "node %u: truncated links", slot);
    l[0] = n;
    for (uint32_t j = 0; j < n; j++) {
        if (l[1 + j] >= h->nodes)
            return s_corrupt(ix, err, SHOAL_ECORRUPT,
                             "node %u: link to %u on layer %u, past %llu nodes", slot,
                             l[1 + j], lc, (unsigned long long)h->nodes);
    }
    return ix;
}

/* Reads record slot in file order: id, level, code, (sq8) row error, then
 * its list on every layer it reaches. Returns ix, or NULL with ix destroyed
 * and err set. */
static hnsw_t *s_load_node(hnsw_t *ix, const s_header_t *h, s_reader_t *r, uint32_t slot,
                           shoal_err_t *err)
{
    hnsw_node_t *node = hnsw_node(ix, slot);
    uint64_t id;
    uint32_t level;
    if (!s_get(r, &id, 8) || !s_get(r, &level, 4))
        return s_corrupt(ix, err, SHOAL_ECORRUPT, "node %u: truncated", slot);
    if (id == HNSW_ID_NONE)
        return s_corrupt(ix, err, SHOAL_ECORRUPT, "node %u: reserved id", slot);
    if ((int64_t)level > (int64_t)h->max_level)
        return s_corrupt(ix, err, SHOAL_ECORRUPT, "node %u: level %u above max level %d", slot,
                         level, h->max_level);
    if (hnsw_map_find(ix, id) != HNSW_SLOT_NONE)
        return s_corrupt(ix, err, SHOAL_ECORRUPT, "node %u: id %llu appears twice", slot,
                         (unsigned long long)id);
    /* The slot counts as handed out from here, so destroy frees it. */
    ix->nslots = slot + 1;
    node->id = id;
    node->level = (int32_t)level;
    node->upper = hnsw_upper_alloc(ix, (int)level);
    if ((level > 0 && !node->upper) || hnsw_map_put(ix, id, slot))
        return s_corrupt(ix, err, SHOAL_ENOMEM, "out of memory at node %u", slot);
    atomic_fetch_add(&ix->count, 1);
    void *code = hnsw_code(ix, slot);
    if (!s_get(r, code, ix->code_bytes))
        return s_corrupt(ix, err, SHOAL_ECORRUPT, "node %u: truncated vector", slot);
    if (!s_code_finite(ix, code))
        return s_corrupt(ix, err, SHOAL_ECORRUPT, "node %u: non-finite vector value", slot);
    if (ix->storage == QUANT_SQ8) {
        float *row_err = hnsw_row_err(ix, slot);
        if (h->version == S_VERSION_NO_ERR)
            *row_err = INFINITY;
        else if (!s_get(r, row_err, sizeof *row_err))
            return s_corrupt(ix, err, SHOAL_ECORRUPT, "node %u: truncated row error", slot);
        else if (!(*row_err >= 0.0f)) /* NaN or negative */
            return s_corrupt(ix, err, SHOAL_ECORRUPT, "node %u: row error %g", slot,
                             (double)*row_err);
        ix->nclamped += *row_err != 0.0f;
    }
    for (uint32_t lc = 0; lc <= level; lc++) {
        if (!s_load_links(ix, h, r, slot, lc, err))
            return NULL;
    }
    return ix;
}

/* Sets row_norm_max from the loaded codes. It is not saved: the codes give
 * it (an upper bound for the rows they stand for once exact search widens it
 * by the code error). Returns ix, or NULL with ix destroyed and err set. */
static hnsw_t *s_load_norm_max(hnsw_t *ix, uint64_t nodes, shoal_err_t *err)
{
    float *scratch = malloc(ix->dim * sizeof *scratch);
    if (!scratch)
        return s_corrupt(ix, err, SHOAL_ENOMEM, "out of memory");
    for (uint64_t i = 0; i < nodes; i++) {
        float norm = hnsw_code_norm(ix, (uint32_t)i, scratch);
        if (norm > ix->row_norm_max)
            ix->row_norm_max = norm;
    }
    free(scratch);
    return ix;
}

hnsw_t *hnsw_load(const void *blob, size_t len, shoal_err_t *err)
{
    if (!blob && len)
        return s_corrupt(NULL, err, SHOAL_EINVAL, "blob is NULL");
    if (len < S_HEADER_BYTES)
        return s_corrupt(NULL, err, SHOAL_ECORRUPT, "%zu bytes, shorter than the %d-byte header",
                         len, S_HEADER_BYTES);
    s_header_t h;
    memcpy(&h, blob, sizeof h);
    shoal_err_t herr;
    shoal_err_clear(&herr);
    s_check_header(&h, len, &herr);
    if (herr.code) {
        if (err)
            *err = herr;
        return NULL;
    }

    s_reader_t r = {.p = blob, .len = len, .pos = S_HEADER_BYTES};
    quant_sq8_t *sq8 = NULL;
    if (h.version != S_VERSION_F32 && s_load_quantizer(&h, &r, &sq8, err) != 0)
        return NULL;
    shoal_err_t aerr;
    hnsw_t *ix = hnsw_alloc(h.dim, (shoal_metric_t)h.metric, h.M, h.ef_construction, h.seed,
                            (quant_kind_t)h.storage, &sq8, &aerr);
    if (!ix) {
        if (err)
            *err = aerr;
        return NULL;
    }
    if (hnsw_grow_to(ix, h.nodes))
        return s_corrupt(ix, err, SHOAL_ENOMEM, "out of memory for %llu nodes",
                         (unsigned long long)h.nodes);

    for (uint64_t i = 0; i < h.nodes; i++) {
        if (!s_load_node(ix, &h, &r, (uint32_t)i, err))
            return NULL;
    }
    if (r.pos != len)
        return s_corrupt(ix, err, SHOAL_ECORRUPT, "%zu trailing bytes after the last node",
                         len - r.pos);
    if (!s_load_norm_max(ix, h.nodes, err))
        return NULL;
    atomic_store(&ix->top, hnsw_top_pack(h.max_level, h.entry));
    shoal_err_t verr;
    if (hnsw_validate_locked(ix, &verr))
        return s_corrupt(ix, err, SHOAL_ECORRUPT, "%s", verr.msg);
    return ix;
}
