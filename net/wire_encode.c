/*
 * wire_encode.c - the wire codec's encoding half: requests and replies to
 * frames (wire_request_encode, wire_reply_encode). docs/protocol.md is the
 * specification; wire.h the contract.
 *
 * Encoding first checks what the caller filled in (names, counts, pointers,
 * text), so a bad message fails at the sender's call site. It writes the
 * map's entries into a scratch buffer while counting them, then the map
 * header and the entries into frame 0's buffer: headers are tens of bytes, so
 * the copy is nothing next to one bulk frame, and no op needs its key count
 * worked out by hand.
 */
#include "net/wire.h"
#include "net/wire_private.h"
#include "common/quant.h"

#include <inttypes.h>
#include <limits.h>
#include <msgpack.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Encoding                                                                 */
/* ------------------------------------------------------------------------ */

/* A header being written: its entries, counted, in a scratch buffer. */
typedef struct {
    msgpack_sbuffer body; /* the entries written so far */
    msgpack_packer pk;    /* writes into body */
    size_t nkeys;         /* entries written */
    bool failed;          /* an allocation failed */
} s_enc_t;

static void s_enc_init(s_enc_t *e)
{
    msgpack_sbuffer_init(&e->body);
    msgpack_packer_init(&e->pk, &e->body, msgpack_sbuffer_write);
    e->nkeys = 0;
    e->failed = false;
}

static void s_enc_key(s_enc_t *e, const char *key)
{
    size_t len = strlen(key);
    if (msgpack_pack_str(&e->pk, len) || msgpack_pack_str_body(&e->pk, key, len))
        e->failed = true;
    e->nkeys++;
}

static void s_enc_uint(s_enc_t *e, const char *key, uint64_t value)
{
    s_enc_key(e, key);
    if (msgpack_pack_uint64(&e->pk, value))
        e->failed = true;
}

static void s_enc_int(s_enc_t *e, const char *key, int64_t value)
{
    s_enc_key(e, key);
    if (msgpack_pack_int64(&e->pk, value))
        e->failed = true;
}

static void s_enc_f64(s_enc_t *e, const char *key, double value)
{
    s_enc_key(e, key);
    if (msgpack_pack_double(&e->pk, value))
        e->failed = true;
}

static void s_enc_str(s_enc_t *e, const char *key, const char *value)
{
    size_t len = strlen(value);
    s_enc_key(e, key);
    if (msgpack_pack_str(&e->pk, len) || msgpack_pack_str_body(&e->pk, value, len))
        e->failed = true;
}

/* A value that is msgpack already (the info map). */
static void s_enc_raw(s_enc_t *e, const char *key, const void *bytes, size_t len)
{
    s_enc_key(e, key);
    if (msgpack_sbuffer_write(&e->body, bytes, len))
        e->failed = true;
}

/* partial, missing and fanout, each only when set (absent reads as 0 / ""). */
static void s_enc_fanout_fields(s_enc_t *e, const wire_reply_t *rep)
{
    if (rep->partial)
        s_enc_uint(e, "partial", rep->partial);
    if (rep->missing[0])
        s_enc_str(e, "missing", rep->missing);
    if (rep->fanout)
        s_enc_uint(e, "fanout", rep->fanout);
}

static void s_enc_abandon(s_enc_t *e)
{
    msgpack_sbuffer_destroy(&e->body);
}

/* Puts the map header and the entries into out's frame 0; frees the scratch. */
static int s_enc_finish(s_enc_t *e, wire_frames_t *out, shoal_err_t *err)
{
    msgpack_sbuffer head;
    msgpack_packer pk;
    msgpack_sbuffer_init(&head);
    msgpack_packer_init(&pk, &head, msgpack_sbuffer_write);
    bool failed = e->failed || msgpack_pack_map(&pk, e->nkeys) ||
                  msgpack_sbuffer_write(&head, e->body.data, e->body.size);
    msgpack_sbuffer_destroy(&e->body);
    if (failed) {
        msgpack_sbuffer_destroy(&head);
        return shoal_err_set(err, SHOAL_ENOMEM, "out of memory encoding a header");
    }
    if (head.size > WIRE_HEADER_MAX_BYTES) {
        size_t size = head.size;
        msgpack_sbuffer_destroy(&head);
        return shoal_err_set(err, SHOAL_ELIMIT, "encoded header has %zu bytes, the limit is %u",
                             size, WIRE_HEADER_MAX_BYTES);
    }
    size_t size = head.size;
    out->owned_header = msgpack_sbuffer_release(&head);
    out->data[0] = out->owned_header;
    out->size[0] = size;
    out->count = 1;
    return 0;
}

static void s_add_frame(wire_frames_t *out, const void *data, size_t size)
{
    out->data[out->count] = data;
    out->size[out->count] = size;
    out->count++;
}

/* Insert's and search's vectors: n x dim floats; their size in *vec_bytes. */
static int s_check_vectors(const wire_request_t *req, const char *opname, size_t *vec_bytes,
                           shoal_err_t *err)
{
    if (req->n == 0 || req->dim == 0)
        return shoal_err_set(err, SHOAL_EINVAL,
                             "%s: n and dim must be >= 1, got n=%" PRIu64 " dim=%" PRIu32, opname,
                             req->n, req->dim);
    if (!req->vecs)
        return shoal_err_set(err, SHOAL_EINVAL, "%s: vecs is NULL", opname);
    if (!wire_mul3(req->n, req->dim, sizeof(float), vec_bytes) ||
        req->n > SIZE_MAX / sizeof(uint64_t))
        return shoal_err_set(err, SHOAL_EINVAL, "%s: n=%" PRIu64 " x dim=%" PRIu32 " overflows",
                             opname, req->n, req->dim);
    return 0;
}

/*
 * A text field about to be encoded (cursor, missing): NUL-terminated within
 * its cap bytes and printable ASCII, as the decoder will insist.
 */
static int s_check_text(const char *text, size_t cap, const char *what, const char *key,
                        shoal_err_t *err)
{
    size_t len = strnlen(text, cap);
    if (len == cap)
        return shoal_err_set(err, SHOAL_EINVAL, "%s: \"%s\" is not NUL-terminated", what, key);
    size_t bad = wire_printable_bad_at(text, len);
    if (bad < len)
        return shoal_err_set(err, SHOAL_EINVAL,
                             "%s: \"%s\" has a byte outside printable ASCII (0x%02x) at offset %zu",
                             what, key, (unsigned)(unsigned char)text[bad], bad);
    return 0;
}

/* The cluster-growth ops (section 11.9) and the snapshot ops (4.13, 11.10): they take no
 * collection. */
static bool s_op_is_cluster(wire_op_t op)
{
    return op == WIRE_OP_SHARD_ADD || op == WIRE_OP_SHARD_DRAIN || op == WIRE_OP_SHARD_REMOVE ||
           op == WIRE_OP_REBALANCE || op == WIRE_OP_SNAPSHOT || op == WIRE_OP_SNAPSHOT_DROP ||
           op == WIRE_OP_SNAPSHOT_CREATE || op == WIRE_OP_SNAPSHOT_LIST;
}

/* create_collection's parameters: dim, metric, target_recall and storage in range. */
static int s_check_create(const wire_request_t *req, const char *opname, shoal_err_t *err)
{
    if (req->dim == 0)
        return shoal_err_set(err, SHOAL_EINVAL, "%s: dim must be >= 1", opname);
    if (!strcmp(shoal_metric_name(req->metric), "?"))
        return shoal_err_set(err, SHOAL_EINVAL, "%s: metric %d is not valid", opname,
                             (int)req->metric);
    if (!(req->target_recall >= 0 && req->target_recall <= 1))
        return shoal_err_set(err, SHOAL_EINVAL, "%s: target_recall must be in (0, 1], got %g",
                             opname, req->target_recall);
    if (req->storage && (!(req->storage & WIRE_STORAGE_GIVEN) ||
                         (req->storage & ~WIRE_STORAGE_GIVEN) >= QUANT_KIND_COUNT))
        return shoal_err_set(err, SHOAL_EINVAL, "%s: storage 0x%x is not valid", opname,
                             req->storage);
    return 0;
}

/* search's parameters (k, recall, mode, the filter's count) and then its query vectors. */
static int s_check_search(const wire_request_t *req, const char *opname, size_t *vec_bytes,
                          shoal_err_t *err)
{
    if (req->k == 0)
        return shoal_err_set(err, SHOAL_EINVAL, "%s: k must be >= 1", opname);
    if (!(req->recall >= 0 && req->recall <= 1))
        return shoal_err_set(err, SHOAL_EINVAL, "%s: recall must be in (0, 1], got %g",
                             opname, req->recall);
    if (!wire_mode_known(req->mode))
        return shoal_err_set(err, SHOAL_EINVAL, "%s: mode %d is not valid", opname,
                             (int)req->mode);
    if (req->nfilter > 0 && !req->filter)
        return shoal_err_set(err, SHOAL_EINVAL, "%s: nfilter is %" PRIu64 " but filter is NULL",
                             opname, req->nfilter);
    if (req->nfilter > SIZE_MAX / sizeof(uint64_t))
        return shoal_err_set(err, SHOAL_EINVAL, "%s: nfilter %" PRIu64 " overflows", opname,
                             req->nfilter);
    return s_check_vectors(req, opname, vec_bytes, err);
}

/* The encoder's own checks of a request; 0 or SHOAL_EINVAL. */
static int s_check_request(const wire_request_t *req, const char *opname, size_t *vec_bytes,
                           shoal_err_t *err)
{
    size_t len = strnlen(req->coll, sizeof req->coll);
    bool needs_coll = req->op != WIRE_OP_PING && req->op != WIRE_OP_STATS &&
                      req->op != WIRE_OP_CHECKPOINT && !s_op_is_cluster(req->op);
    if (len == sizeof req->coll)
        return shoal_err_set(err, SHOAL_EINVAL, "%s: collection name is not NUL-terminated",
                             opname);
    if (needs_coll && len == 0)
        return shoal_err_set(err, SHOAL_EINVAL, "%s: needs a collection name", opname);
    if (wire_name_bad_at(req->coll, len) < len)
        return shoal_err_set(err, SHOAL_EINVAL,
                             "%s: collection name \"%s\" has a byte outside [A-Za-z0-9_.-]", opname,
                             req->coll);
    switch (req->op) {
    case WIRE_OP_CREATE_COLLECTION:
        return s_check_create(req, opname, err);
    case WIRE_OP_SEARCH:
        return s_check_search(req, opname, vec_bytes, err);
    case WIRE_OP_INSERT:
        if (!req->ids)
            return shoal_err_set(err, SHOAL_EINVAL, "%s: ids is NULL", opname);
        if (req->quantizer && (!req->lists || !req->quantizer_len))
            return shoal_err_set(err, SHOAL_EINVAL,
                                 "%s: a quantizer frame needs the lists frame and bytes", opname);
        return s_check_vectors(req, opname, vec_bytes, err);
    case WIRE_OP_LIST_EXPORT:
        if (req->limit == 0)
            return shoal_err_set(err, SHOAL_EINVAL, "%s: limit must be >= 1", opname);
        return s_check_text(req->cursor, sizeof req->cursor, opname, "cursor", err);
    case WIRE_OP_TRAIN:
        if (req->init > 1)
            return shoal_err_set(err, SHOAL_EINVAL,
                                 "%s: init must be 0 (k-means++) or 1 (random rows), got %" PRIu32,
                                 opname, req->init);
        return s_check_vectors(req, opname, vec_bytes, err);
    case WIRE_OP_KNN_GRAPH:
        if (req->k == 0)
            return shoal_err_set(err, SHOAL_EINVAL, "%s: k must be >= 1", opname);
        if (!wire_mode_known(req->mode))
            return shoal_err_set(err, SHOAL_EINVAL, "%s: mode %d is not valid", opname,
                                 (int)req->mode);
        return s_check_text(req->cursor, sizeof req->cursor, opname, "cursor", err);
    case WIRE_OP_SHARD_ADD:
    case WIRE_OP_SHARD_DRAIN:
    case WIRE_OP_SHARD_REMOVE:
        if (req->endpoint[0] == '\0')
            return shoal_err_set(err, SHOAL_EINVAL, "%s: needs an endpoint", opname);
        return s_check_text(req->endpoint, sizeof req->endpoint, opname, "endpoint", err);
    case WIRE_OP_REBALANCE:
        if (req->dry_run > 1)
            return shoal_err_set(err, SHOAL_EINVAL, "%s: dry_run must be 0 or 1, got %" PRIu32,
                                 opname, req->dry_run);
        break;
    case WIRE_OP_SNAPSHOT:
    case WIRE_OP_SNAPSHOT_DROP:
    case WIRE_OP_SNAPSHOT_CREATE:
        /* Only that it is text the header can carry: an empty or bad name is the
           server's einval to give (the client library checks the rule itself). */
        if (strnlen(req->name, sizeof req->name) == sizeof req->name)
            return shoal_err_set(err, SHOAL_EINVAL, "%s: \"name\" is not NUL-terminated", opname);
        break;
    case WIRE_OP_DELETE:
    case WIRE_OP_GET:
        if (req->n == 0)
            return shoal_err_set(err, SHOAL_EINVAL, "%s: n must be >= 1", opname);
        if (!req->ids)
            return shoal_err_set(err, SHOAL_EINVAL, "%s: ids is NULL", opname);
        if (req->n > SIZE_MAX / sizeof(uint64_t))
            return shoal_err_set(err, SHOAL_EINVAL, "%s: n=%" PRIu64 " overflows", opname, req->n);
        break;
    default:
        break;
    }
    return 0;
}

/* The header's per-op fields, after v, op, rid and coll. Long because it is one case per op,
 * each the list of that op's keys in docs/protocol.md's order; split, the table would scatter. */
static void s_enc_request_fields(s_enc_t *e, const wire_request_t *req)
{
    switch (req->op) {
    case WIRE_OP_CREATE_COLLECTION:
        s_enc_uint(e, "dim", req->dim);
        s_enc_str(e, "metric", shoal_metric_name(req->metric));
        if (req->M)
            s_enc_uint(e, "M", req->M);
        if (req->ef_construction)
            s_enc_uint(e, "ef_construction", req->ef_construction);
        if (req->nlist)
            s_enc_uint(e, "nlist", req->nlist);
        if (req->replication)
            s_enc_uint(e, "replication", req->replication);
        if (req->write_quorum)
            s_enc_uint(e, "write_quorum", req->write_quorum);
        if (req->target_recall > 0)
            s_enc_f64(e, "target_recall", req->target_recall);
        if (req->storage & WIRE_STORAGE_GIVEN)
            s_enc_str(e, "storage", quant_kind_name((quant_kind_t)(req->storage & 0xFFu)));
        break;
    case WIRE_OP_INSERT:
        s_enc_uint(e, "n", req->n);
        s_enc_uint(e, "dim", req->dim);
        break;
    case WIRE_OP_DELETE:
    case WIRE_OP_GET:
        s_enc_uint(e, "n", req->n);
        break;
    case WIRE_OP_SEARCH:
        s_enc_uint(e, "n", req->n);
        s_enc_uint(e, "dim", req->dim);
        s_enc_uint(e, "k", req->k);
        s_enc_str(e, "mode", wire_mode_name(req->mode));
        if (req->ef)
            s_enc_uint(e, "ef", req->ef);
        if (req->nfilter)
            s_enc_uint(e, "nfilter", req->nfilter);
        if (req->nprobe)
            s_enc_uint(e, "nprobe", req->nprobe);
        if (req->deadline_ms)
            s_enc_uint(e, "deadline_ms", req->deadline_ms);
        if (req->recall > 0)
            s_enc_f64(e, "recall", req->recall);
        break;
    case WIRE_OP_TRAIN:
        s_enc_uint(e, "n", req->n);
        s_enc_uint(e, "dim", req->dim);
        if (req->init)
            s_enc_uint(e, "init", req->init);
        if (req->max_iters)
            s_enc_uint(e, "max_iters", req->max_iters);
        if (req->seed)
            s_enc_uint(e, "seed", req->seed);
        break;
    case WIRE_OP_KNN_GRAPH:
        s_enc_uint(e, "k", req->k);
        s_enc_str(e, "mode", wire_mode_name(req->mode));
        if (req->ef)
            s_enc_uint(e, "ef", req->ef);
        if (req->nprobe)
            s_enc_uint(e, "nprobe", req->nprobe);
        if (req->deadline_ms)
            s_enc_uint(e, "deadline_ms", req->deadline_ms);
        if (req->chunk)
            s_enc_uint(e, "chunk", req->chunk);
        if (req->cursor[0])
            s_enc_str(e, "cursor", req->cursor);
        break;
    case WIRE_OP_LIST_EXPORT:
        s_enc_uint(e, "list", req->list);
        s_enc_uint(e, "limit", req->limit);
        if (req->cursor[0])
            s_enc_str(e, "cursor", req->cursor);
        break;
    case WIRE_OP_LIST_DROP:
        s_enc_uint(e, "list", req->list);
        break;
    case WIRE_OP_SHARD_ADD:
    case WIRE_OP_SHARD_DRAIN:
    case WIRE_OP_SHARD_REMOVE:
        s_enc_str(e, "endpoint", req->endpoint);
        break;
    case WIRE_OP_SNAPSHOT:
    case WIRE_OP_SNAPSHOT_DROP:
    case WIRE_OP_SNAPSHOT_CREATE:
        s_enc_str(e, "name", req->name);
        break;
    case WIRE_OP_REBALANCE:
        if (req->dry_run)
            s_enc_uint(e, "dry_run", req->dry_run);
        if (req->max_moves)
            s_enc_uint(e, "max_moves", req->max_moves);
        if (req->rate_mb)
            s_enc_uint(e, "rate_mb", req->rate_mb);
        break;
    default:
        break;
    }
}

/* The bulk frames after the header: ids, vectors, lists, quantizer, filter, by op. */
static void s_add_request_frames(wire_frames_t *out, const wire_request_t *req, size_t vec_bytes)
{
    switch (req->op) {
    case WIRE_OP_INSERT:
        s_add_frame(out, req->ids, (size_t)req->n * sizeof(uint64_t));
        s_add_frame(out, req->vecs, vec_bytes);
        if (req->lists)
            s_add_frame(out, req->lists, (size_t)req->n * sizeof(uint32_t));
        if (req->quantizer)
            s_add_frame(out, req->quantizer, req->quantizer_len);
        break;
    case WIRE_OP_DELETE:
    case WIRE_OP_GET:
        s_add_frame(out, req->ids, (size_t)req->n * sizeof(uint64_t));
        break;
    case WIRE_OP_SEARCH:
        s_add_frame(out, req->vecs, vec_bytes);
        if (req->nfilter)
            s_add_frame(out, req->filter, (size_t)req->nfilter * sizeof(uint64_t));
        break;
    case WIRE_OP_TRAIN:
        s_add_frame(out, req->vecs, vec_bytes);
        break;
    default:
        break;
    }
}

int wire_request_encode(const wire_request_t *req, wire_frames_t *out, shoal_err_t *err)
{
    memset(out, 0, sizeof *out);
    shoal_err_clear(err);
    const char *opname = wire_op_name(req->op);
    if (!opname)
        return shoal_err_set(err, SHOAL_EINVAL, "cannot encode a request with op %d", (int)req->op);
    size_t vec_bytes = 0;
    int rc = s_check_request(req, opname, &vec_bytes, err);
    if (rc)
        return rc;

    s_enc_t e;
    s_enc_init(&e);
    s_enc_uint(&e, "v", req->version ? req->version : WIRE_VERSION);
    s_enc_str(&e, "op", opname);
    s_enc_uint(&e, "rid", req->rid);
    if (req->coll[0])
        s_enc_str(&e, "coll", req->coll);
    s_enc_request_fields(&e, req);
    if ((rc = s_enc_finish(&e, out, err)))
        return rc;

    s_add_request_frames(out, req, vec_bytes);
    return 0;
}

/* The coordinator's fields of search and knn_graph replies; what is "<op> reply". */
static int s_check_fanout_fields(const wire_reply_t *rep, const char *what, shoal_err_t *err)
{
    if (rep->partial > 1)
        return shoal_err_set(err, SHOAL_EINVAL, "%s: partial must be 0 or 1, got %" PRIu32, what,
                             rep->partial);
    return s_check_text(rep->missing, sizeof rep->missing, what, "missing", err);
}

/* The encoder's own checks of a successful reply's results: bytes[i] is bulk frame i + 1's size. */
static int s_check_reply(const wire_reply_t *rep, const char *opname, size_t bytes[3],
                         shoal_err_t *err)
{
    char what[48];
    snprintf(what, sizeof what, "%s reply", opname);
    int rc;
    switch (rep->op) {
    case WIRE_OP_KNN_GRAPH:
        if (rep->k == 0)
            return shoal_err_set(err, SHOAL_EINVAL, "%s: k must be >= 1", what);
        if (!wire_mode_known(rep->mode_used))
            return shoal_err_set(err, SHOAL_EINVAL, "%s: mode_used %d is not valid", what,
                                 (int)rep->mode_used);
        if (rep->n > 0 && (!rep->ids || !rep->dists || !rep->qids))
            return shoal_err_set(err, SHOAL_EINVAL, "%s: ids, dists or qids is NULL", what);
        if (!wire_mul3(rep->n, rep->k, sizeof(uint64_t), &bytes[0]) ||
            !wire_mul3(rep->n, rep->k, sizeof(float), &bytes[1]) ||
            !wire_mul3(rep->n, 1, sizeof(uint64_t), &bytes[2]))
            return shoal_err_set(err, SHOAL_EINVAL, "%s: n x k overflows", what);
        if ((rc = s_check_text(rep->cursor, sizeof rep->cursor, what, "cursor", err)))
            return rc;
        return s_check_fanout_fields(rep, what, err);
    case WIRE_OP_SEARCH:
        if (rep->n == 0 || rep->k == 0)
            return shoal_err_set(err, SHOAL_EINVAL, "%s reply: n and k must be >= 1", opname);
        if (rep->mode_used != WIRE_MODE_HNSW && rep->mode_used != WIRE_MODE_EXACT)
            return shoal_err_set(err, SHOAL_EINVAL,
                                 "%s reply: mode_used must be hnsw or exact, got %d", opname,
                                 (int)rep->mode_used);
        if (!rep->ids || !rep->dists)
            return shoal_err_set(err, SHOAL_EINVAL, "%s reply: ids or dists is NULL", opname);
        if (!wire_mul3(rep->n, rep->k, sizeof(uint64_t), &bytes[0]) ||
            !wire_mul3(rep->n, rep->k, sizeof(float), &bytes[1]))
            return shoal_err_set(err, SHOAL_EINVAL, "%s reply: n x k overflows", opname);
        return s_check_fanout_fields(rep, what, err);
    case WIRE_OP_GET:
        if (rep->n == 0 || rep->dim == 0)
            return shoal_err_set(err, SHOAL_EINVAL, "%s reply: n and dim must be >= 1", opname);
        if (!rep->found || !rep->vecs)
            return shoal_err_set(err, SHOAL_EINVAL, "%s reply: found or vecs is NULL", opname);
        if (!wire_mul3(rep->n, 1, 1, &bytes[0]) ||
            !wire_mul3(rep->n, rep->dim, sizeof(float), &bytes[1]))
            return shoal_err_set(err, SHOAL_EINVAL, "%s reply: n x dim overflows", opname);
        break;
    case WIRE_OP_STATS:
    case WIRE_OP_SHARD_ADD:
    case WIRE_OP_SHARD_DRAIN:
    case WIRE_OP_SHARD_REMOVE:
    case WIRE_OP_REBALANCE:
    case WIRE_OP_SNAPSHOT:
    case WIRE_OP_SNAPSHOT_DROP:
    case WIRE_OP_SNAPSHOT_CREATE:
    case WIRE_OP_SNAPSHOT_LIST:
        if (!rep->info)
            return shoal_err_set(err, SHOAL_EINVAL, "%s reply: needs an info map", opname);
        break;
    case WIRE_OP_LIST_COUNTS:
        if (rep->n > 0 && (!rep->lists || !rep->counts))
            return shoal_err_set(err, SHOAL_EINVAL, "%s: lists or counts is NULL", what);
        if (!wire_mul3(rep->n, 1, sizeof(uint32_t), &bytes[0]) ||
            !wire_mul3(rep->n, 1, sizeof(uint64_t), &bytes[1]))
            return shoal_err_set(err, SHOAL_EINVAL, "%s: n overflows", what);
        break;
    case WIRE_OP_LIST_EXPORT:
        if (rep->dim == 0)
            return shoal_err_set(err, SHOAL_EINVAL, "%s: dim must be >= 1", what);
        if (rep->done > 1)
            return shoal_err_set(err, SHOAL_EINVAL, "%s: done must be 0 or 1, got %" PRIu32,
                                 what, rep->done);
        if (rep->n > 0 && (!rep->ids || !rep->vecs))
            return shoal_err_set(err, SHOAL_EINVAL, "%s: ids or vecs is NULL", what);
        if (!wire_mul3(rep->n, 1, sizeof(uint64_t), &bytes[0]) ||
            !wire_mul3(rep->n, rep->dim, sizeof(float), &bytes[1]))
            return shoal_err_set(err, SHOAL_EINVAL, "%s: n x dim overflows", what);
        return s_check_text(rep->cursor, sizeof rep->cursor, what, "cursor", err);
    default:
        break;
    }
    return 0;
}

/* A reply's first checks, before its results': code's sign, op, info's shape. */
static int s_check_reply_head(const wire_reply_t *rep, const char *opname, shoal_err_t *err)
{
    if (rep->code > 0)
        return shoal_err_set(err, SHOAL_EINVAL, "reply code must be 0 or negative, got %d",
                             rep->code);
    if (rep->code == 0 && !opname)
        return shoal_err_set(err, SHOAL_EINVAL, "a successful reply needs an op, got %d",
                             (int)rep->op);
    if (!opname && rep->op != WIRE_OP_NONE)
        return shoal_err_set(err, SHOAL_EINVAL, "cannot encode a reply with op %d", (int)rep->op);
    if (rep->info && !wire_info_bytes_ok(rep->info, rep->info_len))
        return shoal_err_set(err, SHOAL_EINVAL,
                             "reply info is not one msgpack map of numbers, strings, maps and "
                             "arrays");
    return 0;
}

/* A successful reply's per-op header fields, after v, op, rid, code, err and info. */
static void s_enc_reply_fields(s_enc_t *e, const wire_reply_t *rep)
{
    switch (rep->op) {
    case WIRE_OP_INSERT:
    case WIRE_OP_DELETE:
    case WIRE_OP_LIST_DROP:
        s_enc_uint(e, "count", rep->count);
        s_enc_uint(e, "seq", rep->seq);
        break;
    case WIRE_OP_SEARCH:
        s_enc_uint(e, "n", rep->n);
        s_enc_uint(e, "k", rep->k);
        s_enc_str(e, "mode", wire_mode_name(rep->mode_used));
        s_enc_fanout_fields(e, rep);
        if (rep->nprobe_used)
            s_enc_uint(e, "nprobe", rep->nprobe_used);
        if (rep->ef_used)
            s_enc_uint(e, "ef", rep->ef_used);
        if (rep->recall > 0)
            s_enc_f64(e, "recall", rep->recall);
        break;
    case WIRE_OP_KNN_GRAPH:
        s_enc_uint(e, "n", rep->n);
        s_enc_uint(e, "k", rep->k);
        if (rep->mode_used != WIRE_MODE_AUTO)
            s_enc_str(e, "mode", wire_mode_name(rep->mode_used));
        s_enc_fanout_fields(e, rep);
        s_enc_str(e, "cursor", rep->cursor);
        s_enc_uint(e, "total", rep->total);
        break;
    case WIRE_OP_GET:
        s_enc_uint(e, "n", rep->n);
        s_enc_uint(e, "dim", rep->dim);
        break;
    case WIRE_OP_LIST_COUNTS:
        s_enc_uint(e, "n", rep->n);
        break;
    case WIRE_OP_LIST_EXPORT:
        s_enc_uint(e, "n", rep->n);
        s_enc_uint(e, "dim", rep->dim);
        s_enc_str(e, "cursor", rep->cursor);
        s_enc_uint(e, "done", rep->done);
        break;
    default:
        break;
    }
}

/* A successful reply's bulk frames, by op; bytes[i] is frame i + 1's size (s_check_reply). */
static void s_add_reply_frames(wire_frames_t *out, const wire_reply_t *rep, const size_t bytes[3])
{
    if (rep->code != 0)
        return;
    if (rep->op == WIRE_OP_SEARCH) {
        s_add_frame(out, rep->ids, bytes[0]);
        s_add_frame(out, rep->dists, bytes[1]);
    } else if (rep->op == WIRE_OP_KNN_GRAPH) {
        s_add_frame(out, rep->ids, bytes[0]);
        s_add_frame(out, rep->dists, bytes[1]);
        s_add_frame(out, rep->qids, bytes[2]);
    } else if (rep->op == WIRE_OP_GET) {
        s_add_frame(out, rep->found, bytes[0]);
        s_add_frame(out, rep->vecs, bytes[1]);
    } else if (rep->op == WIRE_OP_LIST_COUNTS) {
        s_add_frame(out, rep->lists, bytes[0]);
        s_add_frame(out, rep->counts, bytes[1]);
    } else if (rep->op == WIRE_OP_LIST_EXPORT) {
        s_add_frame(out, rep->ids, bytes[0]);
        s_add_frame(out, rep->vecs, bytes[1]);
    }
}

int wire_reply_encode(const wire_reply_t *rep, wire_frames_t *out, shoal_err_t *err)
{
    memset(out, 0, sizeof *out);
    shoal_err_clear(err);
    const char *opname = wire_op_name(rep->op);
    int rc = s_check_reply_head(rep, opname, err);
    if (rc)
        return rc;
    size_t bytes[3] = {0, 0, 0};
    if (rep->code == 0 && (rc = s_check_reply(rep, opname, bytes, err)))
        return rc;

    s_enc_t e;
    s_enc_init(&e);
    s_enc_uint(&e, "v", rep->version ? rep->version : WIRE_VERSION);
    if (opname)
        s_enc_str(&e, "op", opname);
    s_enc_uint(&e, "rid", rep->rid);
    s_enc_int(&e, "code", rep->code);
    s_enc_str(&e, "err", shoal_errname(rep->code));
    if (rep->code != 0) {
        char msg[WIRE_MSG_MAX];
        size_t len = strnlen(rep->msg, sizeof rep->msg);
        if (len == sizeof rep->msg)
            len--; /* an unterminated message is cut, not read past */
        memcpy(msg, rep->msg, len);
        msg[len] = '\0';
        s_enc_str(&e, "msg", msg);
    }
    if (rep->info)
        s_enc_raw(&e, "info", rep->info, rep->info_len);
    if (rep->code == 0)
        s_enc_reply_fields(&e, rep);
    if (e.failed) {
        s_enc_abandon(&e);
        return shoal_err_set(err, SHOAL_ENOMEM, "out of memory encoding a reply header");
    }
    if ((rc = s_enc_finish(&e, out, err)))
        return rc;
    s_add_reply_frames(out, rep, bytes);
    return 0;
}
