/*
 * store_persist.c - the shard store's durable side: record codecs, CRC-32,
 * writing a checkpoint of a collection's graph, and loading a collection at
 * open (store_private.h has the key layout).
 *
 * Recovery of one collection, at open:
 *   1. the exact engine is rebuilt from the stored vectors ("V/<name>\0...");
 *      it has no saved form: a scan of the vectors is as fast as a load;
 *   2. the checkpoint header is read and checked (magic, version, seq not
 *      beyond the store's "S", chunk count consistent with the length), the
 *      chunks are read in order and their CRC-32 compared, and hnsw_load
 *      checks the blob itself. Then the op-log entries after the checkpoint's
 *      seq are replayed into the graph: an insert re-reads each id's vector
 *      from "V/" (skipped when absent, or when a later logged write stored
 *      it: that entry inserts it), a delete deletes the ids still present;
 *   3. when there is no checkpoint, or any check fails (logged as a warning
 *      that says which), or a log entry is malformed, or the replayed
 *      graph's count disagrees with the stored vectors, the graph is rebuilt from all stored vectors with
 *      hnsw_insert_batch on opts.threads threads.
 *
 * Quarantine. A stored vector that fails its checks in step 1 (a malformed
 * record, or a row vec_check refuses: written by an older build that checked
 * less, or planted) would otherwise fail the whole open, for good. It is
 * moved as it is to "Q/<name>\0<id>" in one batch with the deletion of its
 * "V/" key, logged once (collection, id, why), and counted; the open goes on
 * without it. Moved, not skipped, so the next open neither pays for it nor
 * logs it again, and an operator can still read it back. When the move
 * cannot be written (read-only open, disk under the reserve) the row is
 * skipped in memory only and met again at the next open. Replay skips such
 * rows too (their ids are simply absent from the graph).
 */
#include "shard/store_private.h"

#include "common/log.h"
#include "common/timing.h"
#include "common/vec_check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Rows read from "V/" per batch handed to the indexes at open. */
#define S_SCAN_ROWS 8192

/* ------------------------------------------------------------------------ */
/* CRC-32                                                                   */
/* ------------------------------------------------------------------------ */

/* Table-driven CRC-32 with the reflected IEEE polynomial 0xEDB88320 (zlib's
 * crc32(), so `python3 -c 'import zlib; print(zlib.crc32(b))'` checks it). */
static uint32_t s_crc_table[256];
static pthread_once_t s_crc_once = PTHREAD_ONCE_INIT;

static void s_crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int b = 0; b < 8; b++)
            c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        s_crc_table[i] = c;
    }
}

uint32_t shard_crc32(uint32_t crc, const void *data, size_t len)
{
    pthread_once(&s_crc_once, s_crc_init);
    const uint8_t *p = data;
    crc = ~crc;
    for (size_t i = 0; i < len; i++)
        crc = s_crc_table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
    return ~crc;
}

/* ------------------------------------------------------------------------ */
/* Collection records                                                       */
/* ------------------------------------------------------------------------ */

int shard_coll_decode(shard_coll_t *coll, const void *val, size_t vlen, shoal_err_t *err)
{
    shard_coll_rec_t rec;
    if (vlen < 8)
        return shoal_err_set(err, SHOAL_ECORRUPT, "collection record has %zu bytes", vlen);
    memcpy(&rec, val, 8);
    if (rec.magic != SHARD_COLL_MAGIC)
        return shoal_err_set(err, SHOAL_ECORRUPT,
                             "collection record has magic 0x%08x, "
                             "expected 0x%08x",
                             rec.magic, SHARD_COLL_MAGIC);
    if (rec.version != SHARD_COLL_VERSION_V1 && rec.version != SHARD_COLL_VERSION)
        return shoal_err_set(err, SHOAL_EUNSUPPORTED,
                             "collection record has version %u, this build reads %u and %u",
                             rec.version, SHARD_COLL_VERSION_V1, SHARD_COLL_VERSION);
    size_t want = sizeof rec + (rec.version == SHARD_COLL_VERSION ? 8 : 0);
    if (vlen < want || (rec.version == SHARD_COLL_VERSION_V1 && vlen != want))
        return shoal_err_set(err, SHOAL_ECORRUPT, "collection record has %zu bytes, expected %zu",
                             vlen, want);
    memcpy(&rec, val, sizeof rec);
    if (rec.dim < 1 || rec.dim > HNSW_DIM_MAX || rec.metric > SHOAL_METRIC_COSINE ||
        rec.M < HNSW_M_MIN || rec.M > HNSW_M_MAX ||
        rec.ef_construction < HNSW_EF_CONSTRUCTION_MIN ||
        rec.ef_construction > HNSW_EF_CONSTRUCTION_MAX)
        return shoal_err_set(err, SHOAL_ECORRUPT,
                             "collection record out of range: dim %u, metric %u, M %u, "
                             "ef_construction %u",
                             rec.dim, rec.metric, rec.M, rec.ef_construction);
    uint32_t storage = QUANT_F32, qlen = 0;
    const uint8_t *tail = (const uint8_t *)val + sizeof rec;
    if (rec.version == SHARD_COLL_VERSION) {
        memcpy(&storage, tail, 4);
        memcpy(&qlen, tail + 4, 4);
        if (storage >= QUANT_KIND_COUNT || vlen != want + qlen ||
            (qlen && storage != QUANT_SQ8))
            return shoal_err_set(err, SHOAL_ECORRUPT,
                                 "collection record: storage %u with a %u-byte quantizer in %zu "
                                 "bytes",
                                 storage, qlen, vlen);
    }
    quant_sq8_t *sq8 = NULL;
    if (qlen) {
        shoal_err_t qerr;
        sq8 = quant_sq8_record_read(tail + 8, qlen, rec.dim, &qerr);
        if (!sq8)
            return shoal_err_set(err, qerr.code, "collection record's sq8 quantizer: %s", qerr.msg);
    }
    coll->dim = rec.dim;
    coll->metric = (shoal_metric_t)rec.metric;
    coll->M = rec.M;
    coll->ef_construction = rec.ef_construction;
    coll->created_seq = rec.created_seq;
    coll->storage = (quant_kind_t)storage;
    quant_sq8_destroy(&coll->sq8);
    coll->sq8 = sq8;
    return 0;
}

uint8_t *shard_coll_encode(const shard_coll_t *coll, size_t *len)
{
    uint32_t qlen = coll->sq8 ? (uint32_t)quant_sq8_record_size(coll->dim) : 0;
    uint32_t storage = (uint32_t)coll->storage;
    shard_coll_rec_t rec = {.magic = SHARD_COLL_MAGIC,
                            .version = SHARD_COLL_VERSION,
                            .dim = (uint32_t)coll->dim,
                            .metric = (uint32_t)coll->metric,
                            .M = (uint32_t)coll->M,
                            .ef_construction = (uint32_t)coll->ef_construction,
                            .created_seq = coll->created_seq};
    *len = sizeof rec + 8 + qlen;
    uint8_t *buf = malloc(*len);
    if (!buf)
        return NULL;
    memcpy(buf, &rec, sizeof rec);
    memcpy(buf + sizeof rec, &storage, 4);
    memcpy(buf + sizeof rec + 4, &qlen, 4);
    if (qlen)
        quant_sq8_record_write(coll->sq8, buf + sizeof rec + 8);
    return buf;
}

int shard_row_read(shard_store_t *store, const shard_coll_t *coll, uint64_t id, float *out)
{
    uint8_t key[SHARD_KEY_MAX];
    size_t klen = kvkeys_u64(key, SHARD_TAG_VEC, coll->name, id), vlen = 0;
    void *val = NULL;
    pthread_rwlock_rdlock(&store->kv_lock);
    int rc = kv_get(store->kv, key, klen, &val, &vlen, NULL);
    pthread_rwlock_unlock(&store->kv_lock);
    if (rc)
        return rc;
    const uint8_t *vec = NULL;
    rc = shard_vec_decode(coll, id, val, vlen, &vec, NULL, NULL, NULL, NULL);
    if (rc == 0)
        memcpy(out, vec, coll->dim * sizeof(float));
    free(val);
    return rc;
}

int shard_row_source(uint64_t id, float *out, void *ctx)
{
    shard_row_ctx_t *rc = ctx;
    return shard_row_read(rc->store, rc->coll, id, out);
}

/* ------------------------------------------------------------------------ */
/* Writing a checkpoint                                                     */
/* ------------------------------------------------------------------------ */

static _Atomic size_t s_chunk_bytes = SHARD_CHUNK_BYTES;

void shard_store_set_chunk_bytes(size_t bytes)
{
    atomic_store(&s_chunk_bytes, bytes && bytes <= SHARD_CHUNK_BYTES ? bytes : SHARD_CHUNK_BYTES);
}

typedef struct {
    shard_store_t *store; /* where chunks go */
    shard_coll_t *coll;   /* whose graph */
    uint8_t *buf;         /* the chunk being filled */
    size_t cap;           /* chunk size */
    size_t fill;          /* bytes in buf */
    uint32_t base;        /* numbering base of the new chunks */
    uint32_t nchunks;     /* chunks written so far */
    uint64_t total;       /* blob bytes so far */
    uint32_t crc;         /* CRC-32 so far */
    int cleared;          /* the base's old range was cleared */
    shoal_err_t err;      /* why a chunk write failed */
} s_ckpt_writer_t;

/* Writes the buffered chunk (unsynced: the header's sync write covers it,
 * since the WAL is one ordered log). */
static int s_flush_chunk(s_ckpt_writer_t *w)
{
    if (w->nchunks >= SHARD_CHUNK_BASE_HIGH)
        return shoal_err_set(&w->err, SHOAL_ELIMIT, "checkpoint needs more than %u chunks",
                             SHARD_CHUNK_BASE_HIGH);
    kv_batch_t *batch = kv_batch_new();
    if (!batch)
        return shoal_err_set(&w->err, SHOAL_ENOMEM, "checkpoint: out of memory");
    uint8_t key[SHARD_KEY_MAX], end[SHARD_KEY_MAX];
    if (!w->cleared) {
        /* Pieces of an earlier checkpoint attempt that crashed before its
         * header was written may sit under this base: clear them first. */
        size_t klen = kvkeys_u32(key, 'K', w->coll->name, w->base);
        size_t elen = w->base ? kvkeys_range_end(end, 'K', w->coll->name)
                              : kvkeys_u32(end, 'K', w->coll->name, SHARD_CHUNK_BASE_HIGH);
        kv_batch_delete_range(batch, key, klen, end, elen);
        w->cleared = 1;
    }
    kv_batch_put(batch, key, kvkeys_u32(key, 'K', w->coll->name, w->base + w->nchunks), w->buf,
                 w->fill);
    int rc = shard_kv_write(w->store, batch, 0, &w->err);
    kv_batch_destroy(&batch);
    if (rc)
        return rc;
    w->nchunks++;
    w->fill = 0;
    return 0;
}

static int s_ckpt_write(void *ctx, const void *data, size_t len)
{
    s_ckpt_writer_t *w = ctx;
    const uint8_t *p = data;
    w->crc = shard_crc32(w->crc, p, len);
    w->total += len;
    while (len > 0) {
        size_t take = w->cap - w->fill;
        if (take > len)
            take = len;
        memcpy(w->buf + w->fill, p, take);
        w->fill += take;
        p += take;
        len -= take;
        if (w->fill == w->cap) {
            int rc = s_flush_chunk(w);
            if (rc)
                return rc;
        }
    }
    return 0;
}

int shard_checkpoint_coll(shard_store_t *store, shard_coll_t *coll, shoal_err_t *err)
{
    double t0 = timing_now();
    /* write_mu is held: every write up to store->seq is in the graph, and
     * none can start before the header is switched. */
    uint64_t seq = atomic_load(&store->seq);
    s_ckpt_writer_t w = {.store = store, .coll = coll, .cap = atomic_load(&s_chunk_bytes)};
    shoal_err_clear(&w.err);
    w.base = coll->has_checkpoint && coll->chunk_base == 0 ? SHARD_CHUNK_BASE_HIGH : 0;
    kv_batch_t *batch = NULL;
    /* The blob is about the graph's memory: refuse before serialising it
     * rather than after half of its chunks are written. */
    hnsw_stats_t hs;
    hnsw_stats(coll->hnsw, &hs);
    int rc = shard_space_check(store, hs.bytes, err);
    if (rc) {
        shoal_err_prefix(err, "checkpoint \"%s\"", coll->name);
        goto done;
    }
    if (!(w.buf = malloc(w.cap))) {
        rc = shoal_err_set(err, SHOAL_ENOMEM, "checkpoint \"%s\": out of memory", coll->name);
        goto done;
    }
    shoal_err_t save_err;
    shoal_err_clear(&save_err);
    /* The caller holds write_mu, which every writer of the graph takes: searches go on. */
    rc = hnsw_save_shared(coll->hnsw, s_ckpt_write, &w, &save_err);
    if (rc == 0 && w.fill > 0)
        rc = s_flush_chunk(&w);
    if (rc == 0 && w.total == 0)
        rc = shoal_err_set(&save_err, SHOAL_EINTERNAL, "hnsw_save wrote nothing");
    if (rc) {
        /* A chunk write's reason is in w.err; hnsw_save's own in save_err. */
        if (w.err.code)
            shoal_err_set(err, w.err.code, "checkpoint \"%s\": %s", coll->name, w.err.msg);
        else
            shoal_err_set(err, rc, "checkpoint \"%s\": %s", coll->name, save_err.msg);
        goto done;
    }

    /* Switch the header, drop the old chunks and the covered log, at once. */
    shard_ckpt_rec_t rec = {.magic = SHARD_CKPT_MAGIC,
                            .version = SHARD_RECORD_VERSION,
                            .seq = seq,
                            .blob_len = w.total,
                            .crc32 = w.crc,
                            .nchunks = w.nchunks,
                            .chunk_base = w.base,
                            .chunk_bytes = (uint32_t)w.cap};
    if (!(batch = kv_batch_new())) {
        rc = shoal_err_set(err, SHOAL_ENOMEM, "checkpoint \"%s\": out of memory", coll->name);
        goto done;
    }
    uint8_t key[SHARD_KEY_MAX], end[SHARD_KEY_MAX];
    kv_batch_put(batch, key, kvkeys_prefix(key, 'K', coll->name), &rec, sizeof rec);
    if (w.base == 0)
        kv_batch_delete_range(batch, key, kvkeys_u32(key, 'K', coll->name, SHARD_CHUNK_BASE_HIGH),
                              end, kvkeys_range_end(end, 'K', coll->name));
    else
        kv_batch_delete_range(batch, key, kvkeys_u32(key, 'K', coll->name, 0), end,
                              kvkeys_u32(end, 'K', coll->name, SHARD_CHUNK_BASE_HIGH));
    kv_batch_delete_range(batch, key, kvkeys_prefix(key, 'L', coll->name), end,
                          kvkeys_u64(end, 'L', coll->name, seq + 1));
    if ((rc = shard_kv_write(store, batch, 1, err)) != 0) {
        shoal_err_prefix(err, "checkpoint \"%s\"", coll->name);
        goto done;
    }
    coll->has_checkpoint = 1;
    coll->chunk_base = w.base;
    coll->dirty = 0;
    coll->changes = 0;
    coll->checkpoint_time = timing_now();
    atomic_store(&coll->checkpoint_seq, seq);
    log_info("checkpoint \"%s\": %zu vectors, %llu bytes in %u chunks, seq %llu, %.2f s",
             coll->name, hnsw_count(coll->hnsw), (unsigned long long)w.total, w.nchunks,
             (unsigned long long)seq, coll->checkpoint_time - t0);
done:
    free(w.buf);
    kv_batch_destroy(&batch);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Reading a checkpoint                                                     */
/* ------------------------------------------------------------------------ */

/*
 * Stage 1 of s_ckpt_load: read coll's checkpoint header into *rec and check
 * it against this build and the store. Returns 0 when it is usable, else -1
 * with *why saying why not (empty why: there is no checkpoint).
 */
static int s_ckpt_read_header(shard_store_t *store, shard_coll_t *coll, shard_ckpt_rec_t *out,
                              char *why, size_t whylen)
{
    uint8_t key[SHARD_KEY_MAX];
    size_t klen = kvkeys_prefix(key, 'K', coll->name);
    void *val = NULL;
    size_t vlen = 0;
    shoal_err_t err;
    shoal_err_clear(&err);
    int rc = kv_get(store->kv, key, klen, &val, &vlen, &err);
    if (rc == SHOAL_ENOTFOUND)
        return -1;
    if (rc) {
        snprintf(why, whylen, "reading its header: %s", err.msg);
        return -1;
    }
    shard_ckpt_rec_t rec;
    memset(&rec, 0, sizeof rec);
    memcpy(&rec, val, vlen < sizeof rec ? vlen : sizeof rec);
    free(val);
    uint64_t stored_seq = atomic_load(&store->seq);
    if (vlen < 8 || rec.magic != SHARD_CKPT_MAGIC) {
        snprintf(why, whylen, "header has a bad magic (%zu bytes)", vlen);
        return -1;
    }
    if (rec.version != SHARD_RECORD_VERSION) {
        snprintf(why, whylen, "header has version %u, this build reads %u", rec.version,
                 SHARD_RECORD_VERSION);
        return -1;
    }
    if (vlen != sizeof rec) {
        snprintf(why, whylen, "header has %zu bytes, expected %zu", vlen, sizeof rec);
        return -1;
    }
    if (rec.seq > stored_seq) {
        snprintf(why, whylen, "it covers seq %llu, beyond the store's last seq %llu",
                 (unsigned long long)rec.seq, (unsigned long long)stored_seq);
        return -1;
    }
    if (rec.chunk_bytes == 0 || rec.chunk_bytes > (1u << 30) ||
        (rec.chunk_base != 0 && rec.chunk_base != SHARD_CHUNK_BASE_HIGH) || rec.blob_len == 0 ||
        rec.blob_len > SIZE_MAX / 2 ||
        rec.nchunks != (rec.blob_len + rec.chunk_bytes - 1) / rec.chunk_bytes) {
        snprintf(why, whylen, "header is inconsistent: %llu bytes in %u chunks of %u, base 0x%x",
                 (unsigned long long)rec.blob_len, rec.nchunks, rec.chunk_bytes, rec.chunk_base);
        return -1;
    }
    *out = rec;
    return 0;
}

/*
 * Stage 2 of s_ckpt_load: read the header's chunks, in order, into blob
 * (rec->blob_len bytes) and check their lengths and CRC-32. Returns 0, or -1
 * with *why saying what was wrong.
 */
static int s_ckpt_read_chunks(shard_store_t *store, shard_coll_t *coll, const shard_ckpt_rec_t *rec,
                              uint8_t *blob, char *why, size_t whylen)
{
    int rc = -1;
    uint8_t key[SHARD_KEY_MAX];
    size_t klen = kvkeys_prefix(key, 'K', coll->name);
    shoal_err_t err;
    shoal_err_clear(&err);
    kv_iter_t *it = kv_iter_new(store->kv, key, klen, &err);
    if (!it) {
        snprintf(why, whylen, "%s", err.msg);
        goto done;
    }
    uint8_t want[SHARD_KEY_MAX];
    size_t wlen = kvkeys_u32(want, 'K', coll->name, rec->chunk_base);
    kv_iter_seek(it, want, wlen);
    uint64_t off = 0;
    uint32_t crc = 0;
    for (uint32_t i = 0; i < rec->nchunks; i++, kv_iter_next(it)) {
        wlen = kvkeys_u32(want, 'K', coll->name, rec->chunk_base + i);
        size_t len = 0, clen = 0;
        const void *k = kv_iter_valid(it) ? kv_iter_key(it, &len) : NULL;
        if (!k || len != wlen || memcmp(k, want, wlen) != 0) {
            snprintf(why, whylen, "chunk %u of %u is missing", i, rec->nchunks);
            goto done;
        }
        const void *chunk = kv_iter_value(it, &clen);
        uint64_t expect =
            rec->blob_len - off < rec->chunk_bytes ? rec->blob_len - off : rec->chunk_bytes;
        if (clen != expect) {
            snprintf(why, whylen, "chunk %u has %zu bytes, expected %llu", i, clen,
                     (unsigned long long)expect);
            goto done;
        }
        memcpy(blob + off, chunk, clen);
        crc = shard_crc32(crc, chunk, clen);
        off += clen;
    }
    if (kv_iter_status(it, &err)) {
        snprintf(why, whylen, "reading its chunks: %s", err.msg);
        goto done;
    }
    if (crc != rec->crc32) {
        snprintf(why, whylen, "CRC-32 of its %llu bytes is 0x%08x, header says 0x%08x",
                 (unsigned long long)rec->blob_len, crc, rec->crc32);
        goto done;
    }
    rc = 0;
done:
    kv_iter_destroy(&it);
    return rc;
}

/* Stage 3 of s_ckpt_load: whether the graph fits coll (dim, metric, storage); -1, *why if not. */
static int s_ckpt_check_graph(const shard_coll_t *coll, hnsw_t *graph, char *why, size_t whylen)
{
    if (hnsw_dim(graph) != coll->dim || hnsw_metric(graph) != coll->metric) {
        snprintf(why, whylen, "graph has dim %zu, metric %s; the collection has dim %zu, %s",
                 hnsw_dim(graph), shoal_metric_name(hnsw_metric(graph)), coll->dim,
                 shoal_metric_name(coll->metric));
        return -1;
    }
    if (hnsw_storage(graph) != coll->storage ||
        (coll->storage == QUANT_SQ8 && hnsw_count(graph) > 0 && !coll->sq8)) {
        snprintf(why, whylen, "graph stores %s; the collection %s%s",
                 quant_kind_name(hnsw_storage(graph)), quant_kind_name(coll->storage),
                 coll->sq8 || coll->storage != QUANT_SQ8 ? "" : " without a quantizer");
        return -1;
    }
    return 0;
}

/*
 * Reads and checks coll's checkpoint. Returns the loaded graph, or NULL with
 * *why saying why not (empty why: there is no checkpoint). A RocksDB read
 * failure is also a reason to rebuild, not to refuse the open: the vectors
 * are what matters, and their scan reports its own errors.
 */
static hnsw_t *s_ckpt_load(shard_store_t *store, shard_coll_t *coll, uint64_t *covered, char *why,
                           size_t whylen)
{
    why[0] = 0;
    shard_ckpt_rec_t rec;
    if (s_ckpt_read_header(store, coll, &rec, why, whylen) != 0)
        return NULL;
    uint8_t *blob = malloc(rec.blob_len);
    if (!blob) {
        snprintf(why, whylen, "no memory for its %llu bytes", (unsigned long long)rec.blob_len);
        return NULL;
    }
    hnsw_t *graph = NULL;
    if (s_ckpt_read_chunks(store, coll, &rec, blob, why, whylen) != 0)
        goto done;
    shoal_err_t err;
    shoal_err_clear(&err);
    graph = hnsw_load(blob, rec.blob_len, &err);
    if (!graph) {
        snprintf(why, whylen, "%s", err.msg);
        goto done;
    }
    if (s_ckpt_check_graph(coll, graph, why, whylen) != 0) {
        hnsw_destroy(&graph);
        goto done;
    }
    *covered = rec.seq;
    coll->has_checkpoint = 1;
    coll->chunk_base = rec.chunk_base;
done:
    free(blob);
    return graph;
}

/* ------------------------------------------------------------------------ */
/* Scanning the vectors                                                     */
/* ------------------------------------------------------------------------ */

int shard_vec_decode(const shard_coll_t *coll, uint64_t id, const uint8_t *val, size_t vlen,
                     const uint8_t **vec, uint64_t *seq, uint32_t *list, uint32_t *version,
                     shoal_err_t *err)
{
    shard_vec_hdr_t v1;
    if (vlen < sizeof v1)
        return shoal_err_set(err, SHOAL_ECORRUPT, "vector %llu has %zu bytes, a header needs %zu",
                             (unsigned long long)id, vlen, sizeof v1);
    memcpy(&v1, val, sizeof v1);
    if (v1.magic != SHARD_VEC_MAGIC ||
        (v1.version != SHARD_VEC_VERSION_V1 && v1.version != SHARD_VEC_VERSION))
        return shoal_err_set(err, SHOAL_ECORRUPT,
                             "vector %llu has magic 0x%08x version %u, expected 0x%08x "
                             "version %u or %u",
                             (unsigned long long)id, v1.magic, v1.version, SHARD_VEC_MAGIC,
                             SHARD_VEC_VERSION_V1, SHARD_VEC_VERSION);
    size_t hlen = v1.version == SHARD_VEC_VERSION_V1 ? sizeof v1 : sizeof(shard_vec_hdr2_t);
    if (vlen != hlen + coll->dim * sizeof(float))
        return shoal_err_set(err, SHOAL_ECORRUPT,
                             "vector %llu has %zu bytes, expected %zu (a version %u record)",
                             (unsigned long long)id, vlen, hlen + coll->dim * sizeof(float),
                             v1.version);
    uint32_t l = WIRE_LIST_NONE;
    if (v1.version == SHARD_VEC_VERSION) {
        shard_vec_hdr2_t v2;
        memcpy(&v2, val, sizeof v2);
        l = v2.list;
    }
    *vec = val + hlen;
    if (seq)
        *seq = v1.seq;
    if (list)
        *list = l;
    if (version)
        *version = v1.version;
    return 0;
}

/* Checks one "V/" entry; on success *id, *vec (into the value), *seq, *list are set. */
static int s_decode_vec(const shard_coll_t *coll, const uint8_t *key, size_t klen,
                        const uint8_t *val, size_t vlen, uint64_t *id, const uint8_t **vec,
                        uint64_t *seq, uint32_t *list, uint32_t *version, shoal_err_t *err)
{
    size_t plen = 3 + strlen(coll->name);
    if (klen != plen + 8)
        return shoal_err_set(err, SHOAL_ECORRUPT, "vector key of %zu bytes, expected %zu", klen,
                             plen + 8);
    uint64_t v = 0;
    for (size_t i = 0; i < 8; i++)
        v = v << 8 | key[plen + i];
    *id = v;
    return shard_vec_decode(coll, v, val, vlen, vec, seq, list, version, err);
}

/* vec_check of a stored row, the message naming it. */
static int s_check_stored(const shard_coll_t *coll, uint64_t id, const float *vec,
                          shoal_err_t *err)
{
    shoal_err_t why;
    shoal_err_clear(&why);
    int rc = vec_check(coll->metric, vec, coll->dim, &why);
    if (rc)
        return shoal_err_set(err, rc, "vector %llu %s", (unsigned long long)id, why.msg);
    return 0;
}

/*
 * Moves the "V/" entry key -> val to the quarantine range (see the top of
 * this file); why says what is wrong with it. Its "M/" key goes too when the
 * record could say its list (has_list). *moved is set when the move was
 * written; a failed move is logged, not fatal.
 */
static void s_quarantine(shard_store_t *store, const shard_coll_t *coll, const uint8_t *key,
                         size_t klen, const void *val, size_t vlen, int has_list, uint32_t list,
                         uint64_t id, const char *why, int *moved)
{
    *moved = 0;
    uint8_t qkey[SHARD_KEY_MAX + 64];
    shoal_err_t err;
    shoal_err_clear(&err);
    kv_batch_t *batch = klen <= sizeof qkey ? kv_batch_new() : NULL;
    int rc = SHOAL_ENOMEM;
    if (batch) {
        /* Same key with the quarantine tag: "V/<name>\0..." -> "Q/<name>\0...". */
        memcpy(qkey, key, klen);
        qkey[0] = SHARD_TAG_QUARANTINE;
        kv_batch_put(batch, qkey, klen, val, vlen);
        kv_batch_delete(batch, key, klen);
        if (has_list) {
            uint8_t mkey[SHARD_KEY_MAX];
            kv_batch_delete(batch, mkey,
                            kvkeys_u32_u64(mkey, SHARD_TAG_MEMBER, coll->name, list, id));
        }
        rc = shard_kv_write(store, batch, 1, &err);
        kv_batch_destroy(&batch);
    } else {
        shoal_err_set(&err, SHOAL_ENOMEM, "no batch for a key of %zu bytes", klen);
    }
    if (rc == 0) {
        *moved = 1;
        log_warn("collection \"%s\": stored %s; moved to quarantine (not served)", coll->name,
                 why);
    } else {
        log_warn("collection \"%s\": stored %s; skipped, not served, but not moved to "
                 "quarantine (%s), so the next open meets it again",
                 coll->name, why, err.msg);
    }
}

/* Rows kept in coll's quarantine range. */
static int s_count_quarantine(shard_store_t *store, const shard_coll_t *coll, size_t *count,
                              shoal_err_t *err)
{
    uint8_t prefix[SHARD_KEY_MAX];
    size_t plen = kvkeys_prefix(prefix, SHARD_TAG_QUARANTINE, coll->name);
    kv_iter_t *it = kv_iter_new(store->kv, prefix, plen, err);
    if (!it)
        return err ? err->code : SHOAL_ENOMEM;
    *count = 0;
    for (; kv_iter_valid(it); kv_iter_next(it))
        (*count)++;
    int rc = kv_iter_status(it, err);
    kv_iter_destroy(&it);
    return rc;
}

/*
 * Upgrades a version-1 row (no list) in batch: rewritten as version 2 with
 * list WIRE_LIST_NONE and the same seq, and its "M/" key added.
 */
static void s_upgrade_row(const shard_coll_t *coll, kv_batch_t *batch, const uint8_t *key,
                          size_t klen, uint64_t id, uint64_t seq, const uint8_t *vec,
                          uint8_t *buf)
{
    shard_vec_hdr2_t hdr = {.magic = SHARD_VEC_MAGIC,
                            .version = SHARD_VEC_VERSION,
                            .seq = seq,
                            .list = WIRE_LIST_NONE};
    memcpy(buf, &hdr, sizeof hdr);
    memcpy(buf + sizeof hdr, vec, coll->dim * sizeof(float));
    kv_batch_put(batch, key, klen, buf, sizeof hdr + coll->dim * sizeof(float));
    uint8_t mkey[SHARD_KEY_MAX];
    kv_batch_put(batch, mkey,
                 kvkeys_u32_u64(mkey, SHARD_TAG_MEMBER, coll->name, WIRE_LIST_NONE, id), "", 0);
}

/* Writes the queued upgrades (if any); a failure is logged and remembered. */
static void s_upgrade_flush(shard_store_t *store, const shard_coll_t *coll, kv_batch_t *batch,
                            size_t *queued)
{
    if (*queued == 0)
        return;
    shoal_err_t err;
    shoal_err_clear(&err);
    /* Read-only: a write would reopen the database under the scan's iterator. */
    if (atomic_load(&store->read_only))
        shoal_err_set(&err, SHOAL_EIO, "the database is open read-only");
    if (err.code || shard_kv_write(store, batch, 0, &err) != 0) {
        if (!store->upgrade_failed)
            log_warn("collection \"%s\": rows without a list could not be upgraded (%s); they "
                     "are served as list none, but list_export of that list misses them until "
                     "an open that can write",
                     coll->name, err.msg);
        store->upgrade_failed = 1;
    }
    kv_batch_clear(batch);
    *queued = 0;
}

/* One s_scan_vectors run: where it is and what it gathers. */
typedef struct {
    shard_store_t *store;
    shard_coll_t *coll;
    int first;            /* the first scan of an open: count lists, quarantine, upgrade */
    uint64_t *ids;        /* S_SCAN_ROWS ids of the rows gathered */
    float *vecs;          /* S_SCAN_ROWS x dim vectors of the rows gathered */
    size_t n;             /* rows gathered, not yet fed */
    uint8_t *upbuf;       /* one upgraded "V/" record (first only) */
    kv_batch_t *upgrades; /* version-1 rows rewritten as version 2 (first only) */
    size_t nupgrades;     /* rows queued in upgrades */
    size_t *unmoved;      /* bad rows whose move to quarantine could not be written */
    uint64_t *max_seq;    /* the newest seq of a good row */
} s_scan_t;

/*
 * Stage 1 of s_scan_vectors: decode and check the iterator's row; gather a
 * good one (on the first scan counting its list and queueing its upgrade),
 * quarantine a bad one on the first scan. Fails only for lack of memory.
 */
static int s_scan_row(s_scan_t *sc, kv_iter_t *it, shoal_err_t *err)
{
    shard_coll_t *coll = sc->coll;
    size_t n = sc->n;
    size_t klen = 0, vlen = 0;
    const uint8_t *key = kv_iter_key(it, &klen);
    const uint8_t *val = kv_iter_value(it, &vlen);
    const uint8_t *vec = NULL;
    uint64_t seq = 0;
    uint32_t list = WIRE_LIST_NONE, version = 0;
    shoal_err_t bad;
    shoal_err_clear(&bad);
    int decoded = s_decode_vec(coll, key, klen, val, vlen, &sc->ids[n], &vec, &seq, &list, &version,
                               &bad) == 0;
    int ok = decoded;
    if (ok) {
        memcpy(sc->vecs + n * coll->dim, vec, coll->dim * sizeof(float));
        ok = s_check_stored(coll, sc->ids[n], sc->vecs + n * coll->dim, &bad) == 0;
    }
    if (ok && sc->first) {
        if (shard_lists_add(coll, list, 1) != 0)
            return shoal_err_set(err, SHOAL_ENOMEM, "out of memory counting lists");
        if (version == SHARD_VEC_VERSION_V1) {
            s_upgrade_row(coll, sc->upgrades, key, klen, sc->ids[n], seq, vec, sc->upbuf);
            if (++sc->nupgrades == S_SCAN_ROWS)
                s_upgrade_flush(sc->store, coll, sc->upgrades, &sc->nupgrades);
        }
    }
    if (ok) {
        if (seq > *sc->max_seq)
            *sc->max_seq = seq;
        sc->n++;
    } else if (sc->first) {
        int moved = 0;
        s_quarantine(sc->store, coll, key, klen, val, vlen, decoded && version == SHARD_VEC_VERSION,
                     list, sc->ids[n], bad.msg, &moved);
        *sc->unmoved += !moved;
    }
    return 0;
}

/* Stage 2 of s_scan_vectors: feed the gathered rows to the engine and/or the graph. */
static int s_scan_feed(s_scan_t *sc, knn_engine_t *engine, hnsw_t *graph, size_t *rows,
                       shoal_err_t *err)
{
    int rc;
    *rows += sc->n;
    if (engine && (rc = knn_engine_add(engine, sc->ids, sc->vecs, sc->n, err)) != 0)
        return rc;
    if (graph && (rc = hnsw_insert_batch(graph, sc->ids, sc->vecs, sc->n, sc->store->opts.threads,
                                         err)) != 0)
        return rc;
    sc->n = 0;
    return 0;
}

/*
 * Feeds every stored vector to the engine and/or the graph (either NULL).
 * Rows that fail their checks are left out. With first set (the first scan
 * of an open) they are also moved to quarantine and counted in *unmoved when
 * that move could not be written; the per-list counts are rebuilt; and
 * version-1 rows are upgraded (s_upgrade_row).
 */
static int s_scan_vectors(shard_store_t *store, shard_coll_t *coll, knn_engine_t *engine,
                          hnsw_t *graph, int first, size_t *unmoved, uint64_t *max_seq,
                          size_t *rows, shoal_err_t *err)
{
    *rows = 0;
    uint8_t prefix[SHARD_KEY_MAX];
    size_t plen = kvkeys_prefix(prefix, 'V', coll->name);
    s_scan_t sc = {
        .store = store, .coll = coll, .first = first, .unmoved = unmoved, .max_seq = max_seq};
    sc.ids = malloc(S_SCAN_ROWS * sizeof *sc.ids);
    sc.vecs = malloc(S_SCAN_ROWS * coll->dim * sizeof *sc.vecs);
    sc.upbuf = first ? malloc(sizeof(shard_vec_hdr2_t) + coll->dim * sizeof(float)) : NULL;
    sc.upgrades = first ? kv_batch_new() : NULL;
    kv_iter_t *it = NULL;
    int rc = 0;
    if (!sc.ids || !sc.vecs || (first && (!sc.upbuf || !sc.upgrades))) {
        rc = shoal_err_set(err, SHOAL_ENOMEM, "out of memory");
        goto done;
    }
    if (first)
        shard_lists_fini(coll);
    if (!(it = kv_iter_new(store->kv, prefix, plen, err))) {
        rc = err ? err->code : SHOAL_ENOMEM;
        goto done;
    }
    for (;;) {
        int more = kv_iter_valid(it);
        if (more) {
            if ((rc = s_scan_row(&sc, it, err)) != 0)
                goto done;
            kv_iter_next(it);
        }
        if (sc.n == S_SCAN_ROWS || (!more && sc.n > 0)) {
            if ((rc = s_scan_feed(&sc, engine, graph, rows, err)) != 0)
                goto done;
        }
        if (!more)
            break;
    }
    rc = kv_iter_status(it, err);
    if (rc == 0 && first)
        s_upgrade_flush(store, coll, sc.upgrades, &sc.nupgrades);
done:
    kv_iter_destroy(&it);
    kv_batch_destroy(&sc.upgrades);
    free(sc.upbuf);
    free(sc.ids);
    free(sc.vecs);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Replaying the op log                                                     */
/* ------------------------------------------------------------------------ */

/* Re-inserts the logged ids of one insert entry whose vectors are still the
 * ones that entry wrote. */
static int s_replay_insert(shard_store_t *store, shard_coll_t *coll, hnsw_t *graph,
                           uint64_t entry_seq, const uint64_t *ids, size_t n, shoal_err_t *err)
{
    uint64_t *keep = malloc((n ? n : 1) * sizeof *keep);
    float *vecs = malloc((n ? n : 1) * coll->dim * sizeof *vecs);
    int rc = 0;
    if (!keep || !vecs) {
        rc = shoal_err_set(err, SHOAL_ENOMEM, "out of memory");
        goto done;
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t key[SHARD_KEY_MAX];
        size_t klen = kvkeys_u64(key, 'V', coll->name, ids[i]);
        void *val = NULL;
        size_t vlen = 0;
        rc = kv_get(store->kv, key, klen, &val, &vlen, err);
        if (rc == SHOAL_ENOTFOUND) {
            rc = 0; /* deleted later: a later entry deletes it from the graph too */
            continue;
        }
        if (rc)
            goto done;
        uint64_t id = 0, seq = 0;
        const uint8_t *vec = NULL;
        /* A row that fails its checks was left out by the scan (and moved
         * to quarantine): leave it out here too. */
        if (s_decode_vec(coll, key, klen, val, vlen, &id, &vec, &seq, NULL, NULL, NULL) == 0 &&
            seq <= entry_seq) {
            keep[m] = id;
            memcpy(vecs + m * coll->dim, vec, coll->dim * sizeof(float));
            m += s_check_stored(coll, id, vecs + m * coll->dim, NULL) == 0;
        }
        free(val);
    }
    rc = hnsw_insert_batch(graph, keep, vecs, m, store->opts.threads, err);
done:
    free(keep);
    free(vecs);
    return rc;
}

/* Replays the log entries after covered into graph; counts them in *replayed. */
static int s_replay(shard_store_t *store, shard_coll_t *coll, hnsw_t *graph, uint64_t covered,
                    size_t *replayed, uint64_t *max_seq, shoal_err_t *err)
{
    uint8_t prefix[SHARD_KEY_MAX], from[SHARD_KEY_MAX];
    size_t plen = kvkeys_prefix(prefix, 'L', coll->name);
    kv_iter_t *it = kv_iter_new(store->kv, prefix, plen, err);
    if (!it)
        return err ? err->code : SHOAL_ENOMEM;
    kv_iter_seek(it, from, kvkeys_u64(from, 'L', coll->name, covered + 1));
    uint64_t *ids = NULL;
    int rc = 0;
    for (; kv_iter_valid(it); kv_iter_next(it)) {
        size_t klen = 0, vlen = 0;
        const uint8_t *key = kv_iter_key(it, &klen);
        const uint8_t *val = kv_iter_value(it, &vlen);
        if (klen != plen + 8) {
            rc = shoal_err_set(err, SHOAL_ECORRUPT, "log key of %zu bytes, expected %zu", klen,
                               plen + 8);
            break;
        }
        uint64_t seq = 0;
        for (size_t i = 0; i < 8; i++)
            seq = seq << 8 | key[plen + i];
        shard_log_hdr_t hdr;
        if (vlen < sizeof hdr) {
            rc = shoal_err_set(err, SHOAL_ECORRUPT, "log entry %llu has %zu bytes",
                               (unsigned long long)seq, vlen);
            break;
        }
        memcpy(&hdr, val, sizeof hdr);
        if (hdr.magic != SHARD_LOG_MAGIC || hdr.version != SHARD_RECORD_VERSION ||
            (hdr.op != SHARD_LOG_INSERT && hdr.op != SHARD_LOG_DELETE) ||
            hdr.n != (vlen - sizeof hdr) / sizeof(uint64_t) ||
            (vlen - sizeof hdr) % sizeof(uint64_t) != 0) {
            rc = shoal_err_set(err, SHOAL_ECORRUPT,
                               "log entry %llu is malformed (magic 0x%08x, version %u, op %u, "
                               "n %llu, %zu bytes)",
                               (unsigned long long)seq, hdr.magic, hdr.version, hdr.op,
                               (unsigned long long)hdr.n, vlen);
            break;
        }
        if (seq > atomic_load(&store->seq)) {
            rc = shoal_err_set(err, SHOAL_ECORRUPT, "log entry %llu is beyond the last seq %llu",
                               (unsigned long long)seq,
                               (unsigned long long)atomic_load(&store->seq));
            break;
        }
        size_t n = (size_t)hdr.n;
        free(ids);
        if (!(ids = malloc((n ? n : 1) * sizeof *ids))) {
            rc = shoal_err_set(err, SHOAL_ENOMEM, "out of memory");
            break;
        }
        memcpy(ids, val + sizeof hdr, n * sizeof *ids);
        if (hdr.op == SHARD_LOG_INSERT)
            rc = s_replay_insert(store, coll, graph, seq, ids, n, err);
        else
            rc = hnsw_delete_batch(graph, ids, n, NULL, err);
        if (rc) {
            shoal_err_prefix(err, "replaying log entry %llu", (unsigned long long)seq);
            break;
        }
        (*replayed)++;
        if (seq > *max_seq)
            *max_seq = seq;
    }
    if (rc == 0)
        rc = kv_iter_status(it, err);
    free(ids);
    kv_iter_destroy(&it);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Loading a collection                                                     */
/* ------------------------------------------------------------------------ */

int shard_coll_load(shard_store_t *store, shard_coll_t *coll, shoal_err_t *err)
{
    int rc = shard_coll_make_indexes(store, coll, err);
    if (rc)
        return rc;
    char why[SHOAL_ERR_MSG_MAX + 64];
    uint64_t covered = 0;
    hnsw_t *graph = s_ckpt_load(store, coll, &covered, why, sizeof why);
    if (!graph) {
        if (why[0])
            log_warn("collection \"%s\": checkpoint not usable (%s); rebuilding the graph from "
                     "the stored vectors",
                     coll->name, why);
        else
            log_info("collection \"%s\": no checkpoint; building the graph from the stored "
                     "vectors",
                     coll->name);
    }
    /* Exact engine always; the graph too when there is no checkpoint. */
    uint64_t last_seq = covered;
    size_t unmoved = 0, held = 0;
    size_t stored = 0, rebuilt = 0;
    if ((rc = s_scan_vectors(store, coll, coll->engine, graph ? NULL : coll->hnsw, 1, &unmoved,
                             &last_seq, &stored, err)) != 0 ||
        (rc = s_count_quarantine(store, coll, &held, err)) != 0)
        goto fail;
    coll->quarantined = held + unmoved;
    if (coll->quarantined > 0)
        log_warn("collection \"%s\": %zu stored rows in quarantine (key range \"Q/%s\"), "
                 "not served",
                 coll->name, coll->quarantined, coll->name);

    size_t replayed = 0;
    if (graph) {
        /* A malformed log entry only costs the replay: the vectors are the
         * truth, and the next checkpoint deletes the entry. */
        shoal_err_t why;
        shoal_err_clear(&why);
        rc = s_replay(store, coll, graph, covered, &replayed, &last_seq, &why);
        if (rc != 0 && rc != SHOAL_ECORRUPT) {
            shoal_err_set(err, rc, "%s", why.msg);
            goto fail;
        }
        size_t in_graph = hnsw_count(graph);
        if (rc == SHOAL_ECORRUPT)
            log_warn("collection \"%s\": op log not usable (%s); rebuilding the graph from the "
                     "stored vectors",
                     coll->name, why.msg);
        else if (in_graph != stored)
            log_warn("collection \"%s\": checkpoint + log give %zu vectors but %zu are stored; "
                     "rebuilding the graph",
                     coll->name, in_graph, stored);
        if (rc == SHOAL_ECORRUPT || in_graph != stored) {
            hnsw_destroy(&graph);
            replayed = 0;
            if ((rc = s_scan_vectors(store, coll, NULL, coll->hnsw, 0, &unmoved, &last_seq, &rebuilt,
                                     err)) != 0)
                goto fail;
        } else {
            hnsw_destroy(&coll->hnsw);
            coll->hnsw = graph;
            graph = NULL;
            coll->loaded_from_checkpoint = 1;
            atomic_store(&coll->checkpoint_seq, covered);
        }
    }
    coll->replayed = replayed;
    /* A rebuilt graph, or one with replayed writes, differs from the stored
     * checkpoint: the next checkpoint (background or close) records it. */
    coll->dirty = !coll->loaded_from_checkpoint || replayed > 0;
    coll->changes = 0;
    coll->checkpoint_time = timing_now();
    atomic_store(&coll->last_seq, last_seq);
    return 0;

fail:
    hnsw_destroy(&graph);
    return rc;
}
