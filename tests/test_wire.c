/*
 * test_wire.c - the wire codec (net/wire.h, docs/protocol.md): every op and
 * reply through encode -> decode, a table of malformed inputs with the code and
 * message each must give, random mutations of valid headers (run under ASan),
 * and the info map's builder and readers.
 */
#include "common/error.h"
#include "common/topk.h"
#include "net/wire.h"
#include "net/wire_private.h"

#include <criterion/criterion.h>
#include <inttypes.h>
#include <math.h>
#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */
/* ------------------------------------------------------------------------ */

/* Zeros for bulk frames of any size the tests use, 8-aligned. */
static uint64_t s_zeros[4096];

static uint64_t s_rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t s_rand(void)
{
    /* xorshift64*: deterministic, so a failure replays. */
    s_rng_state ^= s_rng_state >> 12;
    s_rng_state ^= s_rng_state << 25;
    s_rng_state ^= s_rng_state >> 27;
    return s_rng_state * 0x2545f4914f6cdd1dull;
}

static void s_fill_floats(float *v, size_t n, float base)
{
    for (size_t i = 0; i < n; i++)
        v[i] = base + (float)i * 0.5f - (float)(i % 7) * 1.25f;
}

/* Encodes req, decodes it into out (limits: defaults); asserts both succeed. */
static void s_request_round_trip(const wire_request_t *req, wire_frames_t *frames,
                                 wire_request_t *out)
{
    shoal_err_t err;
    int rc = wire_request_encode(req, frames, &err);
    cr_assert_eq(rc, 0, "encode %s: %s", wire_op_name(req->op), err.msg);
    rc = wire_request_decode(frames, NULL, out, &err);
    cr_assert_eq(rc, 0, "decode %s: %s", wire_op_name(req->op), err.msg);
    cr_assert_eq(err.code, 0);
    cr_assert_eq(out->version, WIRE_VERSION);
    cr_assert_eq(out->op, req->op);
    cr_assert_eq(out->rid, req->rid);
    cr_assert_str_eq(out->coll, req->coll);
}

static void s_reply_round_trip(const wire_reply_t *rep, wire_frames_t *frames, wire_reply_t *out)
{
    shoal_err_t err;
    int rc = wire_reply_encode(rep, frames, &err);
    cr_assert_eq(rc, 0, "encode reply %s: %s", wire_op_name(rep->op), err.msg);
    rc = wire_reply_decode(frames, NULL, out, &err);
    cr_assert_eq(rc, 0, "decode reply %s: %s", wire_op_name(rep->op), err.msg);
    cr_assert_eq(out->op, rep->op);
    cr_assert_eq(out->rid, rep->rid);
    cr_assert_eq(out->code, rep->code);
    cr_assert_str_eq(out->msg, rep->msg);
}

/* rep: a successful search reply of n x k results; ids and dists are borrowed. */
static void s_search_reply(wire_reply_t *rep, uint64_t rid, uint64_t n, uint32_t k,
                           wire_mode_t mode, const uint64_t *ids, const float *dists)
{
    wire_reply_init(rep);
    rep->op = WIRE_OP_SEARCH;
    rep->rid = rid;
    rep->n = n;
    rep->k = k;
    rep->mode_used = mode;
    rep->ids = ids;
    rep->dists = dists;
}

/* ------------------------------------------------------------------------ */
/* Names                                                                    */
/* ------------------------------------------------------------------------ */

Test(wire, op_and_mode_names_round_trip)
{
    for (int op = WIRE_OP_NONE + 1; op < WIRE_OP_COUNT; op++) {
        const char *name = wire_op_name((wire_op_t)op);
        cr_assert_not_null(name);
        cr_assert_eq(wire_op_parse(name, strlen(name)), (wire_op_t)op);
    }
    cr_assert_null(wire_op_name(WIRE_OP_NONE));
    cr_assert_null(wire_op_name(WIRE_OP_COUNT));
    cr_assert_eq(wire_op_parse("serch", 5), WIRE_OP_NONE);
    cr_assert_eq(wire_op_parse("search", 5), WIRE_OP_NONE, "a prefix is not a name");
    cr_assert_eq(wire_op_parse(NULL, 0), WIRE_OP_NONE);
    cr_assert_str_eq(wire_mode_name(WIRE_MODE_AUTO), "auto");
    cr_assert_str_eq(wire_mode_name(WIRE_MODE_HNSW), "hnsw");
    cr_assert_str_eq(wire_mode_name(WIRE_MODE_EXACT), "exact");
    cr_assert_str_eq(wire_mode_name((wire_mode_t)9), "?");
}

Test(wire, default_limits_are_the_documented_ones)
{
    wire_limits_t lim = wire_limits_default();
    cr_assert_eq(lim.max_message_bytes, 256u << 20);
    cr_assert_eq(lim.max_batch, 1000000);
    cr_assert_eq(lim.max_k, 4096);
    cr_assert_eq(lim.max_dim, 8192);
    cr_assert_eq(lim.max_filter, 10000000);
}

/* ------------------------------------------------------------------------ */
/* Requests: round trips                                                    */
/* ------------------------------------------------------------------------ */

Test(wire, ping_round_trip)
{
    wire_request_t req, out;
    wire_frames_t frames;
    wire_request_init(&req);
    req.op = WIRE_OP_PING;
    req.rid = UINT64_MAX;
    s_request_round_trip(&req, &frames, &out);
    cr_assert_eq(frames.count, 1);
    cr_assert_null(out.owned);
    wire_request_fini(&out);
    wire_frames_fini(&frames);
    cr_assert_eq(frames.count, 0);
    cr_assert_null(frames.owned_header);
}

Test(wire, create_collection_round_trip)
{
    const shoal_metric_t metrics[] = {SHOAL_METRIC_L2, SHOAL_METRIC_IP, SHOAL_METRIC_COSINE};
    for (size_t m = 0; m < 3; m++) {
        wire_request_t req, out;
        wire_frames_t frames;
        wire_request_init(&req);
        req.op = WIRE_OP_CREATE_COLLECTION;
        req.rid = 12 + m;
        strcpy(req.coll, "Docs_v2.0-x");
        req.dim = 8192;
        req.metric = metrics[m];
        req.M = m == 0 ? 0 : 32;
        req.ef_construction = m == 0 ? 0 : 400;
        s_request_round_trip(&req, &frames, &out);
        cr_assert_eq(frames.count, 1);
        cr_assert_eq(out.dim, 8192);
        cr_assert_eq(out.metric, metrics[m]);
        cr_assert_eq(out.M, req.M);
        cr_assert_eq(out.ef_construction, req.ef_construction);
        wire_request_fini(&out);
        wire_frames_fini(&frames);
    }
}

Test(wire, drop_stats_checkpoint_round_trip)
{
    const wire_op_t ops[] = {WIRE_OP_DROP_COLLECTION, WIRE_OP_STATS, WIRE_OP_STATS,
                             WIRE_OP_CHECKPOINT, WIRE_OP_CHECKPOINT};
    const char *colls[] = {"a", "bb", "", "c", ""};
    for (size_t i = 0; i < 5; i++) {
        wire_request_t req, out;
        wire_frames_t frames;
        wire_request_init(&req);
        req.op = ops[i];
        req.rid = i;
        strcpy(req.coll, colls[i]);
        s_request_round_trip(&req, &frames, &out);
        cr_assert_eq(frames.count, 1);
        wire_request_fini(&out);
        wire_frames_fini(&frames);
    }
}

Test(wire, insert_round_trip_is_zero_copy_when_aligned)
{
    enum { N = 3, DIM = 5 };
    uint64_t ids[N] = {0, 42, UINT64_MAX - 1};
    float vecs[N * DIM];
    s_fill_floats(vecs, N * DIM, -3.0f);
    vecs[4] = NAN; /* not the codec's concern: it carries the bytes */

    wire_request_t req, out;
    wire_frames_t frames;
    wire_request_init(&req);
    req.op = WIRE_OP_INSERT;
    req.rid = 1ull << 40;
    strcpy(req.coll, "docs");
    req.n = N;
    req.dim = DIM;
    req.ids = ids;
    req.vecs = vecs;
    s_request_round_trip(&req, &frames, &out);
    cr_assert_eq(frames.count, 3);
    cr_assert_eq(frames.size[1], N * 8);
    cr_assert_eq(frames.size[2], N * DIM * 4);
    cr_assert_eq(out.n, N);
    cr_assert_eq(out.dim, DIM);
    cr_assert_eq(out.ids, ids, "aligned frames are used in place");
    cr_assert_eq(out.vecs, vecs);
    cr_assert_null(out.owned);
    cr_assert_eq(memcmp(out.vecs, vecs, sizeof vecs), 0);
    wire_request_fini(&out);
    wire_frames_fini(&frames);
}

Test(wire, delete_and_get_round_trip)
{
    uint64_t ids[4] = {9, 8, 7, 6};
    const wire_op_t ops[] = {WIRE_OP_DELETE, WIRE_OP_GET};
    for (size_t i = 0; i < 2; i++) {
        wire_request_t req, out;
        wire_frames_t frames;
        wire_request_init(&req);
        req.op = ops[i];
        req.rid = 77;
        strcpy(req.coll, "c");
        req.n = 4;
        req.ids = ids;
        s_request_round_trip(&req, &frames, &out);
        cr_assert_eq(frames.count, 2);
        cr_assert_eq(out.n, 4);
        cr_assert_eq(memcmp(out.ids, ids, sizeof ids), 0);
        cr_assert_null(out.vecs);
        wire_request_fini(&out);
        wire_frames_fini(&frames);
    }
}

Test(wire, search_round_trip_every_mode_with_and_without_filter)
{
    enum { N = 2, DIM = 3 };
    float q[N * DIM];
    s_fill_floats(q, N * DIM, 1.0f);
    uint64_t filter[5] = {5, 1, 3, 3, 100};
    for (int mode = WIRE_MODE_AUTO; mode <= WIRE_MODE_EXACT; mode++) {
        for (int filtered = 0; filtered < 2; filtered++) {
            wire_request_t req, out;
            wire_frames_t frames;
            wire_request_init(&req);
            req.op = WIRE_OP_SEARCH;
            req.rid = 1000 + (uint64_t)mode;
            strcpy(req.coll, "docs");
            req.n = N;
            req.dim = DIM;
            req.k = 4096;
            req.mode = (wire_mode_t)mode;
            req.ef = filtered ? 0 : 128;
            req.vecs = q;
            if (filtered) {
                req.nfilter = 5;
                req.filter = filter;
            }
            s_request_round_trip(&req, &frames, &out);
            cr_assert_eq(frames.count, filtered ? 3 : 2);
            cr_assert_eq(out.n, N);
            cr_assert_eq(out.dim, DIM);
            cr_assert_eq(out.k, 4096);
            cr_assert_eq(out.mode, (wire_mode_t)mode);
            cr_assert_eq(out.ef, req.ef);
            cr_assert_eq(out.nfilter, req.nfilter);
            cr_assert_eq(memcmp(out.vecs, q, sizeof q), 0);
            if (filtered)
                cr_assert_eq(memcmp(out.filter, filter, sizeof filter), 0);
            else
                cr_assert_null(out.filter);
            cr_assert_null(out.ids);
            wire_request_fini(&out);
            wire_frames_fini(&frames);
        }
    }
}

/* Bulk frames at odd addresses are copied, and the copies freed by fini. */
Test(wire, misaligned_frames_are_copied)
{
    enum { N = 4, DIM = 3 };
    uint64_t ids[N] = {1, 2, 3, UINT64_MAX};
    float vecs[N * DIM];
    s_fill_floats(vecs, N * DIM, 0.25f);
    uint64_t filter[2] = {2, 3};

    /* insert: both bulk frames moved to odd offsets */
    wire_request_t req, out;
    wire_frames_t frames;
    shoal_err_t err;
    wire_request_init(&req);
    req.op = WIRE_OP_INSERT;
    strcpy(req.coll, "docs");
    req.n = N;
    req.dim = DIM;
    req.ids = ids;
    req.vecs = vecs;
    cr_assert_eq(wire_request_encode(&req, &frames, &err), 0);
    uint64_t raw[64];
    uint8_t *bytes = (uint8_t *)raw;
    memcpy(bytes + 1, ids, sizeof ids);
    memcpy(bytes + 1 + sizeof ids + 2, vecs, sizeof vecs);
    frames.data[1] = bytes + 1;
    frames.data[2] = bytes + 1 + sizeof ids + 2;
    cr_assert_eq(wire_request_decode(&frames, NULL, &out, &err), 0, "%s", err.msg);
    cr_assert_not_null(out.owned);
    cr_assert_neq((const void *)out.ids, frames.data[1]);
    cr_assert_eq((uintptr_t)out.ids % 8, 0);
    cr_assert_eq((uintptr_t)out.vecs % 4, 0);
    cr_assert_eq(memcmp(out.ids, ids, sizeof ids), 0);
    cr_assert_eq(memcmp(out.vecs, vecs, sizeof vecs), 0);
    wire_request_fini(&out);
    cr_assert_null(out.owned);
    wire_frames_fini(&frames);

    /* search: queries aligned (used in place), filter misaligned (copied) */
    wire_request_init(&req);
    req.op = WIRE_OP_SEARCH;
    strcpy(req.coll, "docs");
    req.n = N;
    req.dim = DIM;
    req.k = 2;
    req.vecs = vecs;
    req.nfilter = 2;
    req.filter = filter;
    cr_assert_eq(wire_request_encode(&req, &frames, &err), 0);
    memcpy(bytes + 4, filter, sizeof filter);
    frames.data[2] = bytes + 4;
    cr_assert_eq(wire_request_decode(&frames, NULL, &out, &err), 0, "%s", err.msg);
    cr_assert_eq(out.vecs, vecs);
    cr_assert_not_null(out.owned);
    cr_assert_eq(memcmp(out.filter, filter, sizeof filter), 0);
    wire_request_fini(&out);
    wire_frames_fini(&frames);
}

/* docs/protocol.md's worked example, byte for byte. */
Test(wire, worked_example_matches_the_document)
{
    static const uint8_t expect[] = {
        0x89, 0xa1, 0x76, 0x01, 0xa2, 0x6f, 0x70, 0xa6, 0x73, 0x65, 0x61, 0x72, 0x63, 0x68, 0xa3,
        0x72, 0x69, 0x64, 0x2a, 0xa4, 0x63, 0x6f, 0x6c, 0x6c, 0xa4, 0x64, 0x6f, 0x63, 0x73, 0xa1,
        0x6e, 0x02, 0xa3, 0x64, 0x69, 0x6d, 0x04, 0xa1, 0x6b, 0x03, 0xa4, 0x6d, 0x6f, 0x64, 0x65,
        0xa5, 0x65, 0x78, 0x61, 0x63, 0x74, 0xa7, 0x6e, 0x66, 0x69, 0x6c, 0x74, 0x65, 0x72, 0x05,
    };
    float q[8] = {1, 0, 0, 0, 0, 1, 0, 0};
    uint64_t allow[5] = {7, 12, 3, 9, 20};
    wire_request_t req;
    wire_frames_t frames;
    shoal_err_t err;
    wire_request_init(&req);
    req.op = WIRE_OP_SEARCH;
    req.rid = 42;
    strcpy(req.coll, "docs");
    req.n = 2;
    req.dim = 4;
    req.k = 3;
    req.mode = WIRE_MODE_EXACT;
    req.vecs = q;
    req.nfilter = 5;
    req.filter = allow;
    cr_assert_eq(wire_request_encode(&req, &frames, &err), 0, "%s", err.msg);
    cr_assert_eq(frames.size[0], sizeof expect);
    cr_assert_eq(memcmp(frames.data[0], expect, sizeof expect), 0);
    cr_assert_eq(frames.size[1], 32);
    cr_assert_eq(frames.size[2], 40);
    wire_frames_fini(&frames);

    uint64_t ids[6] = {7, 12, 3, 12, 9, 7};
    float dists[6] = {0.0f, 0.5f, 1.25f, 0.1f, 0.1f, 2.0f};
    wire_reply_t rep, out;
    s_search_reply(&rep, 42, 2, 3, WIRE_MODE_EXACT, ids, dists);
    s_reply_round_trip(&rep, &frames, &out);
    cr_assert_eq(frames.size[1], 48);
    cr_assert_eq(frames.size[2], 24);
    wire_reply_fini(&out);
    wire_frames_fini(&frames);
}

Test(wire, unknown_keys_are_ignored_and_keys_may_come_in_any_order)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 6);
    msgpack_pack_str_with_body(&pk, "future", 6);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_nil(&pk);
    msgpack_pack_true(&pk);
    msgpack_pack_str_with_body(&pk, "coll", 4);
    msgpack_pack_str_with_body(&pk, "x", 1);
    msgpack_pack_str_with_body(&pk, "rid", 3);
    msgpack_pack_uint8(&pk, 5);
    msgpack_pack_str_with_body(&pk, "code", 4); /* a reply key: ignored in a request */
    msgpack_pack_str_with_body(&pk, "nope", 4);
    msgpack_pack_str_with_body(&pk, "op", 2);
    msgpack_pack_str_with_body(&pk, "drop_collection", 15);
    msgpack_pack_str_with_body(&pk, "v", 1);
    msgpack_pack_int64(&pk, 1); /* any integer encoding of 1 */
    wire_frames_t frames = {.count = 1, .data = {sb.data}, .size = {sb.size}};
    wire_request_t req;
    shoal_err_t err;
    cr_assert_eq(wire_request_decode(&frames, NULL, &req, &err), 0, "%s", err.msg);
    cr_assert_eq(req.op, WIRE_OP_DROP_COLLECTION);
    cr_assert_eq(req.rid, 5);
    cr_assert_str_eq(req.coll, "x");
    wire_request_fini(&req);
    msgpack_sbuffer_destroy(&sb);
}

Test(wire, encode_refuses_bad_requests)
{
    uint64_t ids[1] = {1};
    wire_request_t req;
    wire_frames_t frames;
    shoal_err_t err;

    wire_request_init(&req);
    cr_assert_eq(wire_request_encode(&req, &frames, &err), SHOAL_EINVAL, "op NONE");

    wire_request_init(&req);
    req.op = WIRE_OP_DELETE;
    req.n = 1;
    req.ids = ids;
    cr_assert_eq(wire_request_encode(&req, &frames, &err), SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "collection name"), "%s", err.msg);

    strcpy(req.coll, "a/b");
    cr_assert_eq(wire_request_encode(&req, &frames, &err), SHOAL_EINVAL);
    strcpy(req.coll, "ab");
    req.n = 0;
    cr_assert_eq(wire_request_encode(&req, &frames, &err), SHOAL_EINVAL);
    req.n = 1;
    req.ids = NULL;
    cr_assert_eq(wire_request_encode(&req, &frames, &err), SHOAL_EINVAL);

    wire_request_init(&req);
    req.op = WIRE_OP_SEARCH;
    strcpy(req.coll, "ab");
    req.n = 1;
    req.dim = 1;
    req.k = 0;
    req.vecs = (const float *)s_zeros;
    cr_assert_eq(wire_request_encode(&req, &frames, &err), SHOAL_EINVAL, "k = 0");
    req.k = 1;
    req.nfilter = 3;
    cr_assert_eq(wire_request_encode(&req, &frames, &err), SHOAL_EINVAL, "filter NULL");
    req.nfilter = 0;
    req.mode = (wire_mode_t)7;
    cr_assert_eq(wire_request_encode(&req, &frames, &err), SHOAL_EINVAL, "bad mode");
    req.mode = WIRE_MODE_HNSW;
    cr_assert_eq(wire_request_encode(&req, &frames, &err), 0, "%s", err.msg);
    wire_frames_fini(&frames);
}

/* ------------------------------------------------------------------------ */
/* Replies: round trips                                                     */
/* ------------------------------------------------------------------------ */

Test(wire, simple_replies_round_trip)
{
    const wire_op_t ops[] = {WIRE_OP_PING, WIRE_OP_CREATE_COLLECTION, WIRE_OP_DROP_COLLECTION,
                             WIRE_OP_CHECKPOINT};
    for (size_t i = 0; i < 4; i++) {
        wire_reply_t rep, out;
        wire_frames_t frames;
        wire_reply_init(&rep);
        rep.op = ops[i];
        rep.rid = 900 + i;
        s_reply_round_trip(&rep, &frames, &out);
        cr_assert_eq(frames.count, 1);
        cr_assert_null(out.info);
        cr_assert_eq(out.info_len, 0);
        wire_reply_fini(&out);
        wire_frames_fini(&frames);
    }
}

Test(wire, insert_and_delete_replies_round_trip)
{
    const wire_op_t ops[] = {WIRE_OP_INSERT, WIRE_OP_DELETE};
    for (size_t i = 0; i < 2; i++) {
        wire_reply_t rep, out;
        wire_frames_t frames;
        wire_reply_init(&rep);
        rep.op = ops[i];
        rep.rid = 3;
        rep.count = 1000000 + i;
        rep.seq = UINT64_MAX - i;
        s_reply_round_trip(&rep, &frames, &out);
        cr_assert_eq(frames.count, 1);
        cr_assert_eq(out.count, rep.count);
        cr_assert_eq(out.seq, rep.seq);
        wire_reply_fini(&out);
        wire_frames_fini(&frames);
    }
}

Test(wire, search_reply_round_trip_with_padding)
{
    enum { N = 2, K = 3 };
    uint64_t ids[N * K] = {4, 9, TOPK_ID_NONE, 1, TOPK_ID_NONE, TOPK_ID_NONE};
    float dists[N * K] = {0.5f, 0.75f, INFINITY, -3.0f, INFINITY, INFINITY};
    const wire_mode_t modes[] = {WIRE_MODE_HNSW, WIRE_MODE_EXACT};
    for (size_t m = 0; m < 2; m++) {
        wire_reply_t rep, out;
        wire_frames_t frames;
        s_search_reply(&rep, 17, N, K, modes[m], ids, dists);
        s_reply_round_trip(&rep, &frames, &out);
        cr_assert_eq(frames.count, 3);
        cr_assert_eq(out.n, N);
        cr_assert_eq(out.k, K);
        cr_assert_eq(out.mode_used, modes[m]);
        cr_assert_eq(memcmp(out.ids, ids, sizeof ids), 0);
        cr_assert_eq(memcmp(out.dists, dists, sizeof dists), 0);
        cr_assert(isinf(out.dists[2]) && out.dists[2] > 0);
        wire_reply_fini(&out);
        wire_frames_fini(&frames);
    }
}

Test(wire, get_reply_round_trip_and_misaligned_copy)
{
    enum { N = 3, DIM = 2 };
    uint8_t found[N] = {1, 0, 1};
    float vecs[N * DIM] = {1.5f, -2.0f, 0, 0, 3.0f, 4.0f};
    wire_reply_t rep, out;
    wire_frames_t frames;
    shoal_err_t err;
    wire_reply_init(&rep);
    rep.op = WIRE_OP_GET;
    rep.rid = 8;
    rep.n = N;
    rep.dim = DIM;
    rep.found = found;
    rep.vecs = vecs;
    s_reply_round_trip(&rep, &frames, &out);
    cr_assert_eq(frames.count, 3);
    cr_assert_eq(out.n, N);
    cr_assert_eq(out.dim, DIM);
    cr_assert_eq(memcmp(out.found, found, sizeof found), 0);
    cr_assert_eq(memcmp(out.vecs, vecs, sizeof vecs), 0);
    cr_assert_null(out.owned);
    wire_reply_fini(&out);

    uint32_t raw[16];
    memcpy((uint8_t *)raw + 2, vecs, sizeof vecs);
    frames.data[2] = (uint8_t *)raw + 2;
    cr_assert_eq(wire_reply_decode(&frames, NULL, &out, &err), 0, "%s", err.msg);
    cr_assert_not_null(out.owned);
    cr_assert_eq((uintptr_t)out.vecs % 4, 0);
    cr_assert_eq(memcmp(out.vecs, vecs, sizeof vecs), 0);
    wire_reply_fini(&out);
    wire_frames_fini(&frames);
}

/* {"count": 10, "name": "shard-0", "neg": -5, "ratio": 0.25,
 *  "shard": {"up": 1, "mem": {"bytes": 1234}}} */
static wire_info_t *s_nested_info(void)
{
    wire_info_t *info = wire_info_new();
    cr_assert_not_null(info);
    wire_info_map(info, 5);
    wire_info_key(info, "count");
    wire_info_u64(info, 10);
    wire_info_key(info, "name");
    wire_info_str(info, "shard-0");
    wire_info_key(info, "neg");
    wire_info_i64(info, -5);
    wire_info_key(info, "ratio");
    wire_info_f64(info, 0.25);
    wire_info_key(info, "shard");
    wire_info_map(info, 2);
    wire_info_key(info, "up");
    wire_info_u64(info, 1);
    wire_info_key(info, "mem");
    wire_info_map(info, 1);
    wire_info_key(info, "bytes");
    wire_info_u64(info, 1234);
    cr_assert_eq(wire_info_failed(info), 0);
    return info;
}

/* One entry of a rebalance plan (docs/protocol.md 11.9). */
static void s_plan_entry(wire_info_t *info, const char *coll, uint64_t list, uint64_t replica,
                         const char *from, const char *to, uint64_t vectors)
{
    wire_info_map(info, 6);
    wire_info_key(info, "coll");
    wire_info_str(info, coll);
    wire_info_key(info, "list");
    wire_info_u64(info, list);
    wire_info_key(info, "replica");
    wire_info_u64(info, replica);
    wire_info_key(info, "from");
    wire_info_str(info, from);
    wire_info_key(info, "to");
    wire_info_str(info, to);
    wire_info_key(info, "vectors");
    wire_info_u64(info, vectors);
}

/* An info map with arrays: of maps (a plan), of mixed values, nested, empty (S_PLAN_TEXT). */
static wire_info_t *s_plan_info(void)
{
    wire_info_t *info = wire_info_new();
    cr_assert_not_null(info);
    wire_info_map(info, 5);
    wire_info_key(info, "moves");
    wire_info_u64(info, 2);
    wire_info_key(info, "a");
    wire_info_array(info, 2);
    wire_info_u64(info, 5);
    wire_info_map(info, 1);
    wire_info_key(info, "b");
    wire_info_u64(info, 7);
    wire_info_key(info, "plan");
    wire_info_array(info, 2);
    s_plan_entry(info, "docs", 3, 0, "tcp://h1:7702", "tcp://h4:7702", 1200);
    s_plan_entry(info, "img", 17, 1, "tcp://h2:7702", "tcp://h4:7702", 900);
    wire_info_key(info, "empty");
    wire_info_array(info, 0);
    wire_info_key(info, "mixed");
    wire_info_array(info, 4);
    wire_info_i64(info, -2);
    wire_info_f64(info, 0.5);
    wire_info_str(info, "x");
    wire_info_array(info, 1);
    wire_info_u64(info, 1);
    cr_assert_eq(wire_info_failed(info), 0);
    return info;
}

#define S_PLAN_TEXT                                                                                \
    "{\"moves\": 2, \"a\": [5, {\"b\": 7}], \"plan\": [{\"coll\": \"docs\", \"list\": 3, "         \
    "\"replica\": 0, \"from\": \"tcp://h1:7702\", \"to\": \"tcp://h4:7702\", \"vectors\": 1200}, " \
    "{\"coll\": \"img\", \"list\": 17, \"replica\": 1, \"from\": \"tcp://h2:7702\", \"to\": "      \
    "\"tcp://h4:7702\", \"vectors\": 900}], \"empty\": [], \"mixed\": [-2, 0.5, \"x\", [1]]}"

#define S_NESTED_TEXT                                                                              \
    "{\"count\": 10, \"name\": \"shard-0\", \"neg\": -5, \"ratio\": 0.25, \"shard\": {\"up\": 1, " \
    "\"mem\": {\"bytes\": 1234}}}"

Test(wire, stats_and_ping_replies_carry_nested_info)
{
    wire_info_t *info = s_nested_info();
    const wire_op_t ops[] = {WIRE_OP_STATS, WIRE_OP_PING};
    for (size_t i = 0; i < 2; i++) {
        wire_reply_t rep, out;
        wire_frames_t frames;
        wire_reply_init(&rep);
        rep.op = ops[i];
        rep.rid = 5;
        rep.info = wire_info_data(info);
        rep.info_len = wire_info_len(info);
        s_reply_round_trip(&rep, &frames, &out);
        cr_assert_eq(out.info_len, rep.info_len);
        cr_assert_eq(memcmp(out.info, rep.info, rep.info_len), 0);
        /* borrowed from frame 0 */
        cr_assert((const uint8_t *)out.info > (const uint8_t *)frames.data[0] &&
                  (const uint8_t *)out.info + out.info_len <=
                      (const uint8_t *)frames.data[0] + frames.size[0]);
        char text[256];
        cr_assert_eq(wire_info_to_text(out.info, out.info_len, text, sizeof text), 0);
        cr_assert_str_eq(text, S_NESTED_TEXT);
        wire_reply_fini(&out);
        wire_frames_fini(&frames);
    }
    wire_info_destroy(&info);
    cr_assert_null(info);
    wire_info_destroy(&info); /* NULL-safe */
}

Test(wire, error_replies_round_trip)
{
    /* with the op known */
    wire_reply_t rep, out;
    wire_frames_t frames;
    wire_reply_error(&rep, WIRE_OP_SEARCH, 99, SHOAL_EDIM,
                     "collection \"docs\": expected dim 8, got 4");
    s_reply_round_trip(&rep, &frames, &out);
    cr_assert_eq(frames.count, 1);
    cr_assert_eq(out.code, SHOAL_EDIM);
    cr_assert_null(out.ids);
    wire_reply_fini(&out);
    wire_frames_fini(&frames);

    /* op unknown: no "op" key, rid 0 */
    wire_reply_error(&rep, WIRE_OP_NONE, 0, SHOAL_EPROTO, "truncated or malformed msgpack header");
    s_reply_round_trip(&rep, &frames, &out);
    cr_assert_eq(out.op, WIRE_OP_NONE);
    cr_assert_eq(out.code, SHOAL_EPROTO);
    wire_reply_fini(&out);
    wire_frames_fini(&frames);

    /* a code this build does not know is carried, not refused */
    wire_reply_error(&rep, WIRE_OP_GET, 1, -77, "from the future");
    s_reply_round_trip(&rep, &frames, &out);
    cr_assert_eq(out.code, -77);
    wire_reply_fini(&out);
    wire_frames_fini(&frames);

    /* code 0 is a bug in the caller, never a success */
    wire_reply_error(&rep, WIRE_OP_GET, 1, 0, NULL);
    cr_assert_eq(rep.code, SHOAL_EINTERNAL);
    cr_assert_str_eq(rep.msg, "");

    /* long messages are cut to fit */
    char big[2000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    wire_reply_error(&rep, WIRE_OP_GET, 1, SHOAL_EINVAL, big);
    cr_assert_eq(strlen(rep.msg), WIRE_MSG_MAX - 1);
    s_reply_round_trip(&rep, &frames, &out);
    wire_reply_fini(&out);
    wire_frames_fini(&frames);
}

Test(wire, error_reply_header_carries_code_name_and_message)
{
    wire_reply_t rep;
    wire_frames_t frames;
    shoal_err_t err;
    wire_reply_error(&rep, WIRE_OP_INSERT, 4, SHOAL_ELIMIT, "too big");
    cr_assert_eq(wire_reply_encode(&rep, &frames, &err), 0);
    msgpack_zone zone;
    msgpack_zone_init(&zone, 1024);
    msgpack_object obj;
    size_t off = 0;
    cr_assert_eq(msgpack_unpack(frames.data[0], frames.size[0], &off, &zone, &obj),
                 MSGPACK_UNPACK_SUCCESS);
    cr_assert_eq(obj.type, MSGPACK_OBJECT_MAP);
    int seen = 0;
    for (uint32_t i = 0; i < obj.via.map.size; i++) {
        const msgpack_object_kv *kv = &obj.via.map.ptr[i];
        if (kv->key.via.str.size == 3 && !memcmp(kv->key.via.str.ptr, "err", 3)) {
            cr_assert_eq(kv->val.via.str.size, 6);
            cr_assert_eq(memcmp(kv->val.via.str.ptr, "elimit", 6), 0);
            seen |= 1;
        }
        if (kv->key.via.str.size == 4 && !memcmp(kv->key.via.str.ptr, "code", 4)) {
            cr_assert_eq(kv->val.type, MSGPACK_OBJECT_NEGATIVE_INTEGER);
            cr_assert_eq(kv->val.via.i64, -9);
            seen |= 2;
        }
    }
    cr_assert_eq(seen, 3);
    msgpack_zone_destroy(&zone);
    wire_frames_fini(&frames);
}

Test(wire, encode_refuses_bad_replies)
{
    wire_reply_t rep;
    wire_frames_t frames;
    shoal_err_t err;
    wire_reply_init(&rep);
    cr_assert_eq(wire_reply_encode(&rep, &frames, &err), SHOAL_EINVAL, "success without op");
    rep.op = WIRE_OP_STATS;
    cr_assert_eq(wire_reply_encode(&rep, &frames, &err), SHOAL_EINVAL, "stats without info");
    rep.op = WIRE_OP_SEARCH;
    rep.n = 1;
    rep.k = 1;
    rep.ids = (const uint64_t *)s_zeros;
    rep.dists = (const float *)s_zeros;
    cr_assert_eq(wire_reply_encode(&rep, &frames, &err), SHOAL_EINVAL, "mode_used auto");
    rep.mode_used = WIRE_MODE_HNSW;
    cr_assert_eq(wire_reply_encode(&rep, &frames, &err), 0, "%s", err.msg);
    wire_frames_fini(&frames);
    rep.code = 3;
    cr_assert_eq(wire_reply_encode(&rep, &frames, &err), SHOAL_EINVAL, "positive code");
    rep.code = 0;
    static const uint8_t not_a_map[] = {0x92, 0x01, 0x02};
    rep.info = not_a_map;
    rep.info_len = sizeof not_a_map;
    cr_assert_eq(wire_reply_encode(&rep, &frames, &err), SHOAL_EINVAL, "info not a map");
    static const uint8_t half_a_map[] = {0x82, 0xa1, 0x61, 0x01};
    rep.info = half_a_map;
    rep.info_len = sizeof half_a_map;
    cr_assert_eq(wire_reply_encode(&rep, &frames, &err), SHOAL_EINVAL, "incomplete info");
}

/* ------------------------------------------------------------------------ */
/* The coordinator's ops and fields                                         */
/* ------------------------------------------------------------------------ */

/* Whether frame 0 (a msgpack map) has the key: optional keys are sent only when set. */
static bool s_header_has(const wire_frames_t *frames, const char *key)
{
    msgpack_zone zone;
    msgpack_zone_init(&zone, 1024);
    msgpack_object obj;
    size_t off = 0;
    cr_assert_eq(msgpack_unpack(frames->data[0], frames->size[0], &off, &zone, &obj),
                 MSGPACK_UNPACK_SUCCESS);
    cr_assert_eq(obj.type, MSGPACK_OBJECT_MAP);
    bool found = false;
    for (uint32_t i = 0; i < obj.via.map.size; i++) {
        const msgpack_object *k = &obj.via.map.ptr[i].key;
        if (k->via.str.size == strlen(key) && !memcmp(k->via.str.ptr, key, k->via.str.size))
            found = true;
    }
    msgpack_zone_destroy(&zone);
    return found;
}

Test(wire, create_collection_carries_nlist_only_when_set)
{
    for (uint32_t nlist = 0; nlist <= 1024; nlist += 1024) {
        wire_request_t req, out;
        wire_frames_t frames;
        wire_request_init(&req);
        req.op = WIRE_OP_CREATE_COLLECTION;
        req.rid = 3;
        strcpy(req.coll, "ivf");
        req.dim = 128;
        req.nlist = nlist;
        s_request_round_trip(&req, &frames, &out);
        cr_assert_eq(out.nlist, nlist);
        cr_assert_eq(s_header_has(&frames, "nlist"), nlist != 0);
        wire_request_fini(&out);
        wire_frames_fini(&frames);
    }
}

Test(wire, search_carries_nprobe_and_deadline_only_when_set)
{
    float q[4] = {1, 2, 3, 4};
    for (int set = 0; set < 2; set++) {
        wire_request_t req, out;
        wire_frames_t frames;
        wire_request_init(&req);
        req.op = WIRE_OP_SEARCH;
        req.rid = 4;
        strcpy(req.coll, "docs");
        req.n = 1;
        req.dim = 4;
        req.k = 10;
        req.vecs = q;
        req.nprobe = set ? UINT32_MAX : 0;
        req.deadline_ms = set ? 250 : 0;
        s_request_round_trip(&req, &frames, &out);
        cr_assert_eq(frames.count, 2);
        cr_assert_eq(out.nprobe, req.nprobe);
        cr_assert_eq(out.deadline_ms, req.deadline_ms);
        cr_assert_eq(s_header_has(&frames, "nprobe"), set);
        cr_assert_eq(s_header_has(&frames, "deadline_ms"), set);
        wire_request_fini(&out);
        wire_frames_fini(&frames);
    }
}

Test(wire, train_round_trip_with_and_without_options)
{
    enum { N = 5, DIM = 3 };
    float sample[N * DIM];
    s_fill_floats(sample, N * DIM, -1.0f);
    for (int set = 0; set < 2; set++) {
        wire_request_t req, out;
        wire_frames_t frames;
        wire_request_init(&req);
        req.op = WIRE_OP_TRAIN;
        req.rid = 50 + (uint64_t)set;
        strcpy(req.coll, "docs");
        req.n = N;
        req.dim = DIM;
        req.vecs = sample;
        req.init = set ? 1 : 0;
        req.max_iters = set ? 25 : 0;
        req.seed = set ? UINT64_MAX : 0;
        s_request_round_trip(&req, &frames, &out);
        cr_assert_eq(frames.count, 2);
        cr_assert_eq(frames.size[1], sizeof sample);
        cr_assert_eq(out.n, N);
        cr_assert_eq(out.dim, DIM);
        cr_assert_eq(out.vecs, sample, "aligned: used in place");
        cr_assert_eq(out.init, req.init);
        cr_assert_eq(out.max_iters, req.max_iters);
        cr_assert_eq(out.seed, req.seed);
        cr_assert_eq(s_header_has(&frames, "init"), set);
        cr_assert_eq(s_header_has(&frames, "max_iters"), set);
        cr_assert_eq(s_header_has(&frames, "seed"), set);
        wire_request_fini(&out);
        wire_frames_fini(&frames);
    }
}

Test(wire, knn_graph_request_round_trip_with_and_without_cursor)
{
    for (int set = 0; set < 2; set++) {
        wire_request_t req, out;
        wire_frames_t frames;
        wire_request_init(&req);
        req.op = WIRE_OP_KNN_GRAPH;
        req.rid = 60 + (uint64_t)set;
        strcpy(req.coll, "docs");
        req.k = set ? 4096 : 1;
        req.mode = set ? WIRE_MODE_EXACT : WIRE_MODE_AUTO;
        req.ef = set ? 100 : 0;
        req.nprobe = set ? 8 : 0;
        req.deadline_ms = set ? 5000 : 0;
        req.chunk = set ? 1000000 : 0;
        if (set) {
            /* 64 printable bytes, space and '~' included */
            memset(req.cursor, 'c', WIRE_CURSOR_MAX);
            req.cursor[0] = ' ';
            req.cursor[WIRE_CURSOR_MAX - 1] = '~';
            req.cursor[WIRE_CURSOR_MAX] = '\0';
        }
        s_request_round_trip(&req, &frames, &out);
        cr_assert_eq(frames.count, 1, "knn_graph has no bulk frames");
        cr_assert_eq(out.k, req.k);
        cr_assert_eq(out.mode, req.mode);
        cr_assert_eq(out.ef, req.ef);
        cr_assert_eq(out.nprobe, req.nprobe);
        cr_assert_eq(out.deadline_ms, req.deadline_ms);
        cr_assert_eq(out.chunk, req.chunk);
        cr_assert_str_eq(out.cursor, req.cursor);
        cr_assert_eq(s_header_has(&frames, "cursor"), set, "\"\" (the start) is not sent");
        cr_assert_eq(s_header_has(&frames, "chunk"), set);
        cr_assert_null(out.vecs);
        cr_assert_null(out.owned);
        wire_request_fini(&out);
        wire_frames_fini(&frames);
    }
}

Test(wire, search_reply_carries_partial_missing_and_fanout)
{
    uint64_t ids[2] = {1, 2};
    float dists[2] = {0.5f, 1.0f};
    for (int set = 0; set < 2; set++) {
        wire_reply_t rep, out;
        wire_frames_t frames;
        s_search_reply(&rep, 70, 1, 2, WIRE_MODE_HNSW, ids, dists);
        rep.fanout = set ? 3 : 0;
        if (set) {
            rep.partial = 1;
            strcpy(rep.missing, "tcp://127.0.0.1:7702,tcp://127.0.0.1:7703");
        }
        s_reply_round_trip(&rep, &frames, &out);
        cr_assert_eq(frames.count, 3);
        cr_assert_eq(out.partial, rep.partial);
        cr_assert_str_eq(out.missing, rep.missing);
        cr_assert_eq(out.fanout, rep.fanout);
        cr_assert_eq(s_header_has(&frames, "partial"), set);
        cr_assert_eq(s_header_has(&frames, "missing"), set);
        cr_assert_eq(s_header_has(&frames, "fanout"), set);
        cr_assert_eq(memcmp(out.ids, ids, sizeof ids), 0);
        wire_reply_fini(&out);
        wire_frames_fini(&frames);
    }

    /* the longest missing list that fits */
    wire_reply_t rep, out;
    wire_frames_t frames;
    s_search_reply(&rep, 71, 1, 2, WIRE_MODE_EXACT, ids, dists);
    rep.partial = 1;
    memset(rep.missing, 'm', WIRE_MISSING_MAX - 1);
    rep.missing[WIRE_MISSING_MAX - 1] = '\0';
    s_reply_round_trip(&rep, &frames, &out);
    cr_assert_str_eq(out.missing, rep.missing);
    wire_reply_fini(&out);
    wire_frames_fini(&frames);
}

Test(wire, knn_graph_reply_round_trip)
{
    enum { N = 3, K = 2 };
    uint64_t ids[N * K] = {5, 9, 4, TOPK_ID_NONE, 4, 5};
    float dists[N * K] = {0.25f, 1.0f, 0.25f, INFINITY, 1.0f, 2.0f};
    uint64_t qids[N] = {4, 5, 9};
    const wire_mode_t modes[] = {WIRE_MODE_AUTO, WIRE_MODE_HNSW, WIRE_MODE_EXACT};
    for (size_t m = 0; m < 3; m++) {
        wire_reply_t rep, out;
        wire_frames_t frames;
        wire_reply_init(&rep);
        rep.op = WIRE_OP_KNN_GRAPH;
        rep.rid = 80 + m;
        rep.n = N;
        rep.k = K;
        rep.mode_used = modes[m];
        rep.ids = ids;
        rep.dists = dists;
        rep.qids = qids;
        rep.total = 1000000;
        rep.fanout = 6;
        if (m == 1)
            strcpy(rep.cursor, "s1.l17.i000000000042");
        if (m == 2) {
            rep.partial = 1;
            strcpy(rep.missing, "tcp://h:1");
        }
        s_reply_round_trip(&rep, &frames, &out);
        cr_assert_eq(frames.count, 4);
        cr_assert_eq(frames.size[3], N * 8);
        cr_assert_eq(out.n, N);
        cr_assert_eq(out.k, K);
        cr_assert_eq(out.mode_used, modes[m], "mode is optional: auto when absent");
        cr_assert_eq(s_header_has(&frames, "mode"), m != 0);
        cr_assert_eq(out.ids, ids, "aligned: used in place");
        cr_assert_eq(memcmp(out.dists, dists, sizeof dists), 0);
        cr_assert_eq(memcmp(out.qids, qids, sizeof qids), 0);
        cr_assert_str_eq(out.cursor, rep.cursor);
        cr_assert(s_header_has(&frames, "cursor"), "cursor is always sent, \"\" = done");
        cr_assert_eq(out.total, 1000000);
        cr_assert_eq(out.fanout, 6);
        cr_assert_eq(out.partial, rep.partial);
        cr_assert_str_eq(out.missing, rep.missing);
        wire_reply_fini(&out);

        /* qids at an odd address are copied */
        uint64_t raw[8];
        memcpy((uint8_t *)raw + 3, qids, sizeof qids);
        frames.data[3] = (uint8_t *)raw + 3;
        shoal_err_t err;
        cr_assert_eq(wire_reply_decode(&frames, NULL, &out, &err), 0, "%s", err.msg);
        cr_assert_not_null(out.owned);
        cr_assert_eq((uintptr_t)out.qids % 8, 0);
        cr_assert_eq(memcmp(out.qids, qids, sizeof qids), 0);
        cr_assert_eq(out.ids, ids);
        wire_reply_fini(&out);
        wire_frames_fini(&frames);
    }
}

Test(wire, knn_graph_reply_may_be_empty)
{
    wire_reply_t rep, out;
    wire_frames_t frames;
    wire_reply_init(&rep);
    rep.op = WIRE_OP_KNN_GRAPH;
    rep.rid = 90;
    rep.k = 10;
    s_reply_round_trip(&rep, &frames, &out);
    cr_assert_eq(frames.count, 4);
    cr_assert_eq(frames.size[1] + frames.size[2] + frames.size[3], 0);
    cr_assert_eq(out.n, 0);
    cr_assert_eq(out.k, 10);
    cr_assert_str_eq(out.cursor, "");
    cr_assert_eq(out.total, 0);
    cr_assert_null(out.owned);
    wire_reply_fini(&out);
    wire_frames_fini(&frames);
}

Test(wire, train_reply_carries_its_report_in_info)
{
    wire_info_t *info = wire_info_new();
    wire_info_map(info, 2);
    wire_info_key(info, "iterations");
    wire_info_u64(info, 12);
    wire_info_key(info, "objective");
    wire_info_f64(info, 0.5);
    cr_assert_eq(wire_info_failed(info), 0);
    wire_reply_t rep, out;
    wire_frames_t frames;
    wire_reply_init(&rep);
    rep.op = WIRE_OP_TRAIN;
    rep.rid = 91;
    rep.info = wire_info_data(info);
    rep.info_len = wire_info_len(info);
    s_reply_round_trip(&rep, &frames, &out);
    cr_assert_eq(frames.count, 1);
    double value = 0;
    cr_assert_eq(wire_info_lookup(out.info, out.info_len, "iterations", &value), 0);
    cr_assert_eq(value, 12.0);
    wire_reply_fini(&out);
    wire_frames_fini(&frames);
    wire_info_destroy(&info);
}

Test(wire, encode_refuses_bad_coordinator_requests)
{
    float sample[4] = {0};
    wire_request_t req;
    wire_frames_t frames;
    shoal_err_t err;

    wire_request_init(&req);
    req.op = WIRE_OP_TRAIN;
    strcpy(req.coll, "c");
    req.n = 1;
    req.dim = 4;
    cr_assert_eq(wire_request_encode(&req, &frames, &err), SHOAL_EINVAL, "train without vecs");
    cr_assert(strstr(err.msg, "train: vecs is NULL"), "%s", err.msg);
    req.vecs = sample;
    req.n = 0;
    cr_assert_eq(wire_request_encode(&req, &frames, &err), SHOAL_EINVAL, "train n = 0");
    req.n = 1;
    req.dim = 0;
    cr_assert_eq(wire_request_encode(&req, &frames, &err), SHOAL_EINVAL, "train dim = 0");
    req.dim = 4;
    req.init = 2;
    cr_assert_eq(wire_request_encode(&req, &frames, &err), SHOAL_EINVAL, "train init = 2");
    cr_assert(strstr(err.msg, "init must be 0"), "%s", err.msg);
    req.init = 1;
    req.coll[0] = '\0';
    cr_assert_eq(wire_request_encode(&req, &frames, &err), SHOAL_EINVAL, "train without coll");
    strcpy(req.coll, "c");
    cr_assert_eq(wire_request_encode(&req, &frames, &err), 0, "%s", err.msg);
    wire_frames_fini(&frames);

    wire_request_init(&req);
    req.op = WIRE_OP_KNN_GRAPH;
    strcpy(req.coll, "c");
    cr_assert_eq(wire_request_encode(&req, &frames, &err), SHOAL_EINVAL, "knn_graph k = 0");
    req.k = 10;
    req.mode = (wire_mode_t)5;
    cr_assert_eq(wire_request_encode(&req, &frames, &err), SHOAL_EINVAL, "knn_graph bad mode");
    req.mode = WIRE_MODE_HNSW;
    strcpy(req.cursor, "ab\ncd");
    cr_assert_eq(wire_request_encode(&req, &frames, &err), SHOAL_EINVAL, "control byte");
    cr_assert(strstr(err.msg, "\"cursor\" has a byte outside printable ASCII (0x0a) at offset 2"),
              "%s", err.msg);
    memset(req.cursor, 'x', sizeof req.cursor);
    cr_assert_eq(wire_request_encode(&req, &frames, &err), SHOAL_EINVAL, "unterminated cursor");
    cr_assert(strstr(err.msg, "not NUL-terminated"), "%s", err.msg);
    strcpy(req.cursor, "next");
    cr_assert_eq(wire_request_encode(&req, &frames, &err), 0, "%s", err.msg);
    wire_frames_fini(&frames);
}

Test(wire, encode_refuses_bad_coordinator_replies)
{
    uint64_t ids[1] = {1};
    float dists[1] = {0};
    wire_reply_t rep;
    wire_frames_t frames;
    shoal_err_t err;

    wire_reply_init(&rep);
    rep.op = WIRE_OP_KNN_GRAPH;
    rep.n = 1;
    rep.k = 1;
    rep.ids = ids;
    rep.dists = dists;
    cr_assert_eq(wire_reply_encode(&rep, &frames, &err), SHOAL_EINVAL, "qids NULL");
    cr_assert(strstr(err.msg, "knn_graph reply: ids, dists or qids is NULL"), "%s", err.msg);
    rep.qids = ids;
    rep.k = 0;
    cr_assert_eq(wire_reply_encode(&rep, &frames, &err), SHOAL_EINVAL, "k = 0");
    rep.k = 1;
    rep.partial = 2;
    cr_assert_eq(wire_reply_encode(&rep, &frames, &err), SHOAL_EINVAL, "partial = 2");
    rep.partial = 1;
    strcpy(rep.missing, "tcp://a\x7f");
    cr_assert_eq(wire_reply_encode(&rep, &frames, &err), SHOAL_EINVAL, "DEL in missing");
    cr_assert(strstr(err.msg, "\"missing\" has a byte outside printable ASCII (0x7f) at offset 7"),
              "%s", err.msg);
    memset(rep.missing, 'm', sizeof rep.missing);
    cr_assert_eq(wire_reply_encode(&rep, &frames, &err), SHOAL_EINVAL, "unterminated missing");
    strcpy(rep.missing, "tcp://a:1");
    memset(rep.cursor, 'c', sizeof rep.cursor);
    cr_assert_eq(wire_reply_encode(&rep, &frames, &err), SHOAL_EINVAL, "unterminated cursor");
    strcpy(rep.cursor, "more");
    cr_assert_eq(wire_reply_encode(&rep, &frames, &err), 0, "%s", err.msg);
    wire_frames_fini(&frames);

    /* the same checks guard a search reply's coordinator fields */
    s_search_reply(&rep, 0, 1, 1, WIRE_MODE_HNSW, ids, dists);
    rep.partial = 7;
    cr_assert_eq(wire_reply_encode(&rep, &frames, &err), SHOAL_EINVAL, "search partial = 7");
    cr_assert(strstr(err.msg, "search reply: partial must be 0 or 1, got 7"), "%s", err.msg);
}

/* ------------------------------------------------------------------------ */
/* Malformed requests: a table                                              */
/* ------------------------------------------------------------------------ */

/*
 * The tables below leave trailing fields (limits, unused bulk sizes, unused
 * value members) to their zero defaults; spelling them out in every row would
 * bury what each row tests.
 */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

typedef enum { T_END = 0, T_UINT, T_INT, T_STR, T_F64, T_MAP0, T_NIL, T_ARR } kind_t;

/* One header entry: a key and a typed value. */
typedef struct {
    const char *key;
    kind_t kind;
    uint64_t u;
    int64_t i;
    const char *s;
    double f;
} kv_t;

#define U(k, v)                                                                                    \
    {                                                                                              \
        k, T_UINT, .u = (v)                                                                        \
    }
#define I(k, v)                                                                                    \
    {                                                                                              \
        k, T_INT, .i = (v)                                                                         \
    }
#define S(k, v)                                                                                    \
    {                                                                                              \
        k, T_STR, .s = (v)                                                                         \
    }
#define F(k, v)                                                                                    \
    {                                                                                              \
        k, T_F64, .f = (v)                                                                         \
    }
#define MAP0(k)                                                                                    \
    {                                                                                              \
        k, T_MAP0                                                                                  \
    }
#define ARR(k)                                                                                     \
    {                                                                                              \
        k, T_ARR                                                                                   \
    }
#define HEAD(op) U("v", 1), S("op", op), U("rid", 7)

typedef struct {
    const char *what;     /* the case, for failure messages */
    kv_t hdr[16];         /* header entries, T_END-terminated */
    size_t nbulk;         /* bulk frames */
    size_t bulk[3];       /* their sizes */
    int code;             /* expected code */
    const char *substr;   /* expected in the message */
    wire_limits_t limits; /* all zero: the defaults */
    bool no_rid;          /* the rid cannot be known, so must stay 0 */
} bad_case_t;

static void s_pack_kv(msgpack_packer *pk, const kv_t *kv)
{
    msgpack_pack_str_with_body(pk, kv->key, strlen(kv->key));
    switch (kv->kind) {
    case T_UINT:
        msgpack_pack_uint64(pk, kv->u);
        break;
    case T_INT:
        msgpack_pack_int64(pk, kv->i);
        break;
    case T_STR:
        msgpack_pack_str_with_body(pk, kv->s, strlen(kv->s));
        break;
    case T_F64:
        msgpack_pack_double(pk, kv->f);
        break;
    case T_MAP0:
        msgpack_pack_map(pk, 0);
        break;
    case T_NIL:
        msgpack_pack_nil(pk);
        break;
    case T_ARR:
        msgpack_pack_array(pk, 1);
        msgpack_pack_uint8(pk, 1);
        break;
    case T_END:
        break;
    }
}

static void s_pack_header(msgpack_sbuffer *sb, const kv_t *hdr)
{
    msgpack_packer pk;
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    size_t n = 0;
    while (hdr[n].kind != T_END)
        n++;
    msgpack_pack_map(&pk, n);
    for (size_t i = 0; i < n; i++)
        s_pack_kv(&pk, &hdr[i]);
}

static char s_long_name[66];
static char s_long_missing[WIRE_MISSING_MAX + 1]; /* one byte over "missing"'s limit */
static char s_long_endpoint[WIRE_ENDPOINT_MAX + 2]; /* one byte over "endpoint"'s limit */

/* One row per case. */
/* clang-format off */
static const bad_case_t s_bad_requests[] = {
    /* op, version, rid */
    {"unknown op", {HEAD("serch")}, 0, {0}, SHOAL_EPROTO, "unknown op \"serch\""},
    {"op is a uint", {U("v", 1), U("op", 3), U("rid", 7)}, 0, {0}, SHOAL_EPROTO,
     "\"op\" has type uint, expected str"},
    {"bad version", {U("v", 2), S("op", "ping"), U("rid", 7)}, 0, {0}, SHOAL_EPROTO,
     "protocol version 2 is not supported"},
    {"version 0", {U("v", 0), S("op", "ping"), U("rid", 7)}, 0, {0}, SHOAL_EPROTO,
     "protocol version 0"},
    {"no version", {S("op", "ping"), U("rid", 7)}, 0, {0}, SHOAL_EPROTO,
     "missing required key \"v\""},
    {"no op", {U("v", 1), U("rid", 7)}, 0, {0}, SHOAL_EPROTO, "missing required key \"op\""},
    {"no rid", {U("v", 1), S("op", "ping")}, 0, {0}, SHOAL_EPROTO, "missing required key \"rid\"",
     .no_rid = true},
    {"negative rid", {U("v", 1), S("op", "ping"), I("rid", -1)}, 0, {0}, SHOAL_EPROTO,
     "\"rid\" must be an unsigned integer, got -1", .no_rid = true},
    {"duplicate rid", {HEAD("ping"), U("rid", 8)}, 0, {0}, SHOAL_EPROTO, "duplicate key \"rid\"",
     .no_rid = true},
    {"duplicate n", {HEAD("get"), S("coll", "a"), U("n", 1), U("n", 1)}, 1, {8}, SHOAL_EPROTO,
     "duplicate key \"n\""},

    /* types */
    {"dim is a str",
     {HEAD("create_collection"), S("coll", "a"), S("dim", "128"), S("metric", "l2")}, 0, {0},
     SHOAL_EPROTO, "create_collection: \"dim\" has type str, expected unsigned integer"},
    {"negative k", {HEAD("search"), S("coll", "a"), U("n", 1), U("dim", 1), I("k", -1)}, 1, {4},
     SHOAL_EPROTO, "search: \"k\" must be an unsigned integer, got -1"},
    {"float n", {HEAD("delete"), S("coll", "a"), F("n", 1.0)}, 1, {8}, SHOAL_EPROTO,
     "\"n\" has type float64, expected unsigned integer"},
    {"map coll", {HEAD("drop_collection"), MAP0("coll")}, 0, {0}, SHOAL_EPROTO,
     "\"coll\" has type map, expected str"},
    {"array mode", {HEAD("search"), S("coll", "a"), U("n", 1), U("dim", 1), U("k", 1), ARR("mode")},
     1, {4}, SHOAL_EPROTO, "\"mode\" has type array"},
    {"nil ef", {HEAD("search"), S("coll", "a"), U("n", 1), U("dim", 1), U("k", 1), {"ef", T_NIL}},
     1, {4}, SHOAL_EPROTO, "\"ef\" has type nil"},

    /* missing required keys, per op */
    {"create: no coll", {HEAD("create_collection"), U("dim", 4), S("metric", "l2")}, 0, {0},
     SHOAL_EPROTO, "missing required key \"coll\""},
    {"create: no dim", {HEAD("create_collection"), S("coll", "a"), S("metric", "l2")}, 0, {0},
     SHOAL_EPROTO, "missing required key \"dim\""},
    {"create: no metric", {HEAD("create_collection"), S("coll", "a"), U("dim", 4)}, 0, {0},
     SHOAL_EPROTO, "missing required key \"metric\""},
    {"drop: no coll", {HEAD("drop_collection")}, 0, {0}, SHOAL_EPROTO,
     "drop_collection: missing required key \"coll\""},
    {"insert: no n", {HEAD("insert"), S("coll", "a"), U("dim", 1)}, 2, {8, 4}, SHOAL_EPROTO,
     "insert: missing required key \"n\""},
    {"insert: no dim", {HEAD("insert"), S("coll", "a"), U("n", 1)}, 2, {8, 4}, SHOAL_EPROTO,
     "insert: missing required key \"dim\""},
    {"insert: no coll", {HEAD("insert"), U("n", 1), U("dim", 1)}, 2, {8, 4}, SHOAL_EPROTO,
     "insert: missing required key \"coll\""},
    {"delete: no n", {HEAD("delete"), S("coll", "a")}, 1, {8}, SHOAL_EPROTO,
     "delete: missing required key \"n\""},
    {"get: no n", {HEAD("get"), S("coll", "a")}, 1, {8}, SHOAL_EPROTO,
     "get: missing required key \"n\""},
    {"search: no n", {HEAD("search"), S("coll", "a"), U("dim", 1), U("k", 1)}, 1, {4}, SHOAL_EPROTO,
     "search: missing required key \"n\""},
    {"search: no dim", {HEAD("search"), S("coll", "a"), U("n", 1), U("k", 1)}, 1, {4}, SHOAL_EPROTO,
     "search: missing required key \"dim\""},
    {"search: no k", {HEAD("search"), S("coll", "a"), U("n", 1), U("dim", 1)}, 1, {4}, SHOAL_EPROTO,
     "search: missing required key \"k\""},

    /* names */
    {"name too long", {HEAD("drop_collection"), S("coll", s_long_name)}, 0, {0}, SHOAL_EINVAL,
     "\"coll\" has 65 bytes, at most 64"},
    {"name with a space", {HEAD("drop_collection"), S("coll", "a b")}, 0, {0}, SHOAL_EINVAL,
     "\"coll\" \"a b\" has a byte outside [A-Za-z0-9_.-] at offset 1"},
    {"name with a slash", {HEAD("drop_collection"), S("coll", "../x")}, 0, {0}, SHOAL_EINVAL,
     "outside"},
    {"name with a control byte", {HEAD("drop_collection"), S("coll", "a\x01")}, 0, {0},
     SHOAL_EINVAL, "\"a?\""},
    {"empty name", {HEAD("drop_collection"), S("coll", "")}, 0, {0}, SHOAL_EINVAL,
     "\"coll\" must not be empty"},
    {"stats: bad optional coll", {HEAD("stats"), S("coll", "a b")}, 0, {0}, SHOAL_EINVAL,
     "outside"},

    /* values and limits */
    {"n = 0", {HEAD("insert"), S("coll", "a"), U("n", 0), U("dim", 1)}, 2, {0, 0}, SHOAL_EINVAL,
     "insert: \"n\" must be 1..1000000, got 0"},
    {"k = 0", {HEAD("search"), S("coll", "a"), U("n", 1), U("dim", 1), U("k", 0)}, 1, {4},
     SHOAL_EINVAL, "search: \"k\" must be 1..4096, got 0"},
    {"k > max_k", {HEAD("search"), S("coll", "a"), U("n", 1), U("dim", 1), U("k", 4097)}, 1, {4},
     SHOAL_ELIMIT, "search: \"k\" must be 1..4096, got 4097"},
    {"dim = 0", {HEAD("create_collection"), S("coll", "a"), U("dim", 0), S("metric", "ip")}, 0, {0},
     SHOAL_EINVAL, "\"dim\" must be 1..8192, got 0"},
    {"dim > max_dim",
     {HEAD("create_collection"), S("coll", "a"), U("dim", 8193), S("metric", "ip")}, 0, {0},
     SHOAL_ELIMIT, "\"dim\" must be 1..8192, got 8193"},
    {"dim 2^40", {HEAD("insert"), S("coll", "a"), U("n", 1), U("dim", 1ull << 40)}, 2, {8, 4},
     SHOAL_ELIMIT, "\"dim\" must be 1..8192"},
    {"n > max_batch", {HEAD("get"), S("coll", "a"), U("n", 1000001)}, 1, {8}, SHOAL_ELIMIT,
     "get: \"n\" must be 1..1000000, got 1000001"},
    {"n = 2^64-1", {HEAD("delete"), S("coll", "a"), U("n", UINT64_MAX)}, 1, {8}, SHOAL_ELIMIT,
     "got 18446744073709551615"},
    {"nfilter over the limit",
     {HEAD("search"), S("coll", "a"), U("n", 1), U("dim", 1), U("k", 1), U("nfilter", 11)}, 2,
     {4, 88}, SHOAL_ELIMIT, "\"nfilter\" must be 0..10, got 11", {.max_filter = 10}},
    {"bad metric", {HEAD("create_collection"), S("coll", "a"), U("dim", 4), S("metric", "l3")}, 0,
     {0}, SHOAL_EINVAL, "\"metric\" must be \"l2\", \"ip\" or \"cosine\", got \"l3\""},
    {"bad mode",
     {HEAD("search"), S("coll", "a"), U("n", 1), U("dim", 1), U("k", 1), S("mode", "fast")}, 1, {4},
     SHOAL_EINVAL, "\"mode\" must be \"auto\", \"hnsw\" or \"exact\", got \"fast\""},
    {"M over 32 bits",
     {HEAD("create_collection"), S("coll", "a"), U("dim", 4), S("metric", "l2"),
      U("M", 1ull << 32)}, 0, {0}, SHOAL_EINVAL, "\"M\" must be 0..4294967295, got 4294967296"},

    /* frames */
    {"insert: frame 2 too big", {HEAD("insert"), S("coll", "a"), U("n", 1), U("dim", 128)}, 2,
     {8, 1000}, SHOAL_EPROTO, "insert: frame 2 has 1000 bytes, expected 512 (n=1 x dim=128 x 4)"},
    {"insert: frame 2 one byte short", {HEAD("insert"), S("coll", "a"), U("n", 2), U("dim", 3)}, 2,
     {16, 23}, SHOAL_EPROTO, "frame 2 has 23 bytes, expected 24 (n=2 x dim=3 x 4)"},
    {"insert: frame 2 one byte long", {HEAD("insert"), S("coll", "a"), U("n", 2), U("dim", 3)}, 2,
     {16, 25}, SHOAL_EPROTO, "frame 2 has 25 bytes, expected 24"},
    {"insert: ids one byte short", {HEAD("insert"), S("coll", "a"), U("n", 2), U("dim", 3)}, 2,
     {15, 24}, SHOAL_EPROTO, "frame 1 has 15 bytes, expected 16 (n=2 x 8)"},
    {"delete: ids one byte long", {HEAD("delete"), S("coll", "a"), U("n", 2)}, 1, {17},
     SHOAL_EPROTO, "delete: frame 1 has 17 bytes, expected 16 (n=2 x 8)"},
    {"search: filter one byte short",
     {HEAD("search"), S("coll", "a"), U("n", 1), U("dim", 2), U("k", 1), U("nfilter", 3)}, 2,
     {8, 23}, SHOAL_EPROTO, "frame 2 has 23 bytes, expected 24 (nfilter=3 x 8)"},
    {"insert: 2 frames", {HEAD("insert"), S("coll", "a"), U("n", 1), U("dim", 1)}, 1, {8},
     SHOAL_EPROTO, "insert: expected 3 frames (header, ids, vectors), got 2"},
    {"ping: 2 frames", {HEAD("ping")}, 1, {8}, SHOAL_EPROTO,
     "ping: expected 1 frame (header), got 2"},
    {"search: a filter frame without nfilter",
     {HEAD("search"), S("coll", "a"), U("n", 1), U("dim", 1), U("k", 1)}, 2, {4, 8}, SHOAL_EPROTO,
     "expected 2 frames (header, queries), got 3"},
    {"search: nfilter without its frame",
     {HEAD("search"), S("coll", "a"), U("n", 1), U("dim", 1), U("k", 1), U("nfilter", 1)}, 1, {4},
     SHOAL_EPROTO, "expected 3 frames (header, queries, filter), got 2"},
    {"get: no ids frame", {HEAD("get"), S("coll", "a"), U("n", 1)}, 0, {0}, SHOAL_EPROTO,
     "get: expected 2 frames"},
    {"message over max_message_bytes", {HEAD("insert"), S("coll", "a"), U("n", 1), U("dim", 1)}, 2,
     {8, 4}, SHOAL_ELIMIT, "the limit is 40", {.max_message_bytes = 40}},

    /* the coordinator's keys */
    {"create: nlist is a str",
     {HEAD("create_collection"), S("coll", "a"), U("dim", 4), S("metric", "l2"), S("nlist", "8")},
     0, {0}, SHOAL_EPROTO, "create_collection: \"nlist\" has type str, expected unsigned integer"},
    {"search: nprobe is a str",
     {HEAD("search"), S("coll", "a"), U("n", 1), U("dim", 1), U("k", 1), S("nprobe", "all")}, 1,
     {4}, SHOAL_EPROTO, "search: \"nprobe\" has type str, expected unsigned integer"},
    {"search: nprobe is a float",
     {HEAD("search"), S("coll", "a"), U("n", 1), U("dim", 1), U("k", 1), F("nprobe", 4.0)}, 1,
     {4}, SHOAL_EPROTO, "\"nprobe\" has type float64"},
    {"search: negative deadline_ms",
     {HEAD("search"), S("coll", "a"), U("n", 1), U("dim", 1), U("k", 1), I("deadline_ms", -5)}, 1,
     {4}, SHOAL_EPROTO, "\"deadline_ms\" must be an unsigned integer, got -5"},
    {"search: nprobe over 32 bits",
     {HEAD("search"), S("coll", "a"), U("n", 1), U("dim", 1), U("k", 1), U("nprobe", 1ull << 32)},
     1, {4}, SHOAL_EINVAL, "\"nprobe\" must be 0..4294967295, got 4294967296"},
    {"search: ef over 32 bits is a limit, as ef over the index's bound is",
     {HEAD("search"), S("coll", "a"), U("n", 1), U("dim", 1), U("k", 1), U("ef", 1ull << 33)},
     1, {4}, SHOAL_ELIMIT, "search: \"ef\" must be 0..4294967295, got 8589934592"},
    {"knn_graph: ef over 32 bits", {HEAD("knn_graph"), S("coll", "a"), U("k", 1),
     U("ef", 1ull << 32)}, 0, {0}, SHOAL_ELIMIT, "knn_graph: \"ef\" must be 0..4294967295"},
    {"train: no coll", {HEAD("train"), U("n", 1), U("dim", 2)}, 1, {8}, SHOAL_EPROTO,
     "train: missing required key \"coll\""},
    {"train: no dim", {HEAD("train"), S("coll", "a"), U("n", 1)}, 1, {8}, SHOAL_EPROTO,
     "train: missing required key \"dim\""},
    {"train: n = 0", {HEAD("train"), S("coll", "a"), U("n", 0), U("dim", 2)}, 1, {0}, SHOAL_EINVAL,
     "train: \"n\" must be 1..1000000, got 0"},
    {"train: sample one float short", {HEAD("train"), S("coll", "a"), U("n", 2), U("dim", 3)}, 1,
     {20}, SHOAL_EPROTO, "train: frame 1 has 20 bytes, expected 24 (n=2 x dim=3 x 4)"},
    {"train: sample one byte long", {HEAD("train"), S("coll", "a"), U("n", 2), U("dim", 3)}, 1,
     {25}, SHOAL_EPROTO, "frame 1 has 25 bytes, expected 24"},
    {"train: no sample frame", {HEAD("train"), S("coll", "a"), U("n", 1), U("dim", 1)}, 0, {0},
     SHOAL_EPROTO, "train: expected 2 frames (header, sample), got 1"},
    {"train: init 2",
     {HEAD("train"), S("coll", "a"), U("n", 1), U("dim", 1), U("init", 2)}, 1, {4}, SHOAL_EINVAL,
     "train: \"init\" must be 0 (k-means++) or 1 (random rows), got 2"},
    {"train: seed is a str",
     {HEAD("train"), S("coll", "a"), U("n", 1), U("dim", 1), S("seed", "42")}, 1, {4},
     SHOAL_EPROTO, "\"seed\" has type str"},
    {"train: max_iters negative",
     {HEAD("train"), S("coll", "a"), U("n", 1), U("dim", 1), I("max_iters", -1)}, 1, {4},
     SHOAL_EPROTO, "\"max_iters\" must be an unsigned integer, got -1"},
    {"knn_graph: no k", {HEAD("knn_graph"), S("coll", "a")}, 0, {0}, SHOAL_EPROTO,
     "knn_graph: missing required key \"k\""},
    {"knn_graph: k > max_k", {HEAD("knn_graph"), S("coll", "a"), U("k", 4097)}, 0, {0},
     SHOAL_ELIMIT, "knn_graph: \"k\" must be 1..4096, got 4097"},
    {"knn_graph: no coll", {HEAD("knn_graph"), U("k", 1)}, 0, {0}, SHOAL_EPROTO,
     "knn_graph: missing required key \"coll\""},
    {"knn_graph: bad mode", {HEAD("knn_graph"), S("coll", "a"), U("k", 1), S("mode", "ivf")}, 0,
     {0}, SHOAL_EINVAL, "\"mode\" must be \"auto\", \"hnsw\" or \"exact\", got \"ivf\""},
    {"knn_graph: nprobe is a str",
     {HEAD("knn_graph"), S("coll", "a"), U("k", 1), S("nprobe", "4")}, 0, {0}, SHOAL_EPROTO,
     "knn_graph: \"nprobe\" has type str, expected unsigned integer"},
    {"knn_graph: cursor too long",
     {HEAD("knn_graph"), S("coll", "a"), U("k", 1), S("cursor", s_long_name)}, 0, {0},
     SHOAL_EINVAL, "knn_graph: \"cursor\" has 65 bytes, at most 64 are allowed"},
    {"knn_graph: cursor with a control byte",
     {HEAD("knn_graph"), S("coll", "a"), U("k", 1), S("cursor", "ab\x1b")}, 0, {0}, SHOAL_EINVAL,
     "\"cursor\" has a byte outside printable ASCII (0x1b) at offset 2"},
    {"knn_graph: cursor is a uint", {HEAD("knn_graph"), S("coll", "a"), U("k", 1), U("cursor", 3)},
     0, {0}, SHOAL_EPROTO, "\"cursor\" has type uint, expected str"},
    {"knn_graph: chunk over max_batch",
     {HEAD("knn_graph"), S("coll", "a"), U("k", 1), U("chunk", 1000001)}, 0, {0}, SHOAL_ELIMIT,
     "knn_graph: \"chunk\" must be 0..1000000, got 1000001"},
    {"knn_graph: a bulk frame", {HEAD("knn_graph"), S("coll", "a"), U("k", 1)}, 1, {8},
     SHOAL_EPROTO, "knn_graph: expected 1 frame (header), got 2"},

    /* the lists frame of an insert, and the list ops */
    {"insert: lists frame short by a row", {HEAD("insert"), S("coll", "a"), U("n", 2), U("dim", 1)},
     3, {16, 8, 4}, SHOAL_EPROTO, "insert: frame 3 has 4 bytes, expected 8 (n=2 x 4)"},
    {"insert: lists frame of uint64s", {HEAD("insert"), S("coll", "a"), U("n", 2), U("dim", 1)},
     3, {16, 8, 16}, SHOAL_EPROTO, "insert: frame 3 has 16 bytes, expected 8 (n=2 x 4)"},
    {"insert: empty lists frame", {HEAD("insert"), S("coll", "a"), U("n", 1), U("dim", 1)},
     3, {8, 4, 0}, SHOAL_EPROTO, "insert: frame 3 has 0 bytes, expected 4"},
    {"list_counts: no coll", {HEAD("list_counts")}, 0, {0}, SHOAL_EPROTO,
     "list_counts: missing required key \"coll\""},
    {"list_counts: a bulk frame", {HEAD("list_counts"), S("coll", "a")}, 1, {4}, SHOAL_EPROTO,
     "list_counts: expected 1 frame (header), got 2"},
    {"list_export: limit 0", {HEAD("list_export"), S("coll", "a"), U("list", 3), U("limit", 0)},
     0, {0}, SHOAL_EINVAL, "list_export: \"limit\" must be 1..1000000, got 0"},
    {"list_export: limit over max_batch",
     {HEAD("list_export"), S("coll", "a"), U("list", 3), U("limit", 1000001)}, 0, {0},
     SHOAL_ELIMIT, "list_export: \"limit\" must be 1..1000000, got 1000001"},
    {"list_export: limit above 64 bits' worth of sense",
     {HEAD("list_export"), S("coll", "a"), U("list", 3), U("limit", UINT64_MAX)}, 0, {0},
     SHOAL_ELIMIT, "\"limit\" must be 1..1000000"},
    {"list_export: no limit", {HEAD("list_export"), S("coll", "a"), U("list", 3)}, 0, {0},
     SHOAL_EPROTO, "list_export: missing required key \"limit\""},
    {"list_export: no list", {HEAD("list_export"), S("coll", "a"), U("limit", 3)}, 0, {0},
     SHOAL_EPROTO, "list_export: missing required key \"list\""},
    {"list_export: list above 32 bits",
     {HEAD("list_export"), S("coll", "a"), U("list", 1ull << 32), U("limit", 3)}, 0, {0},
     SHOAL_EINVAL, "\"list\" must be 0..4294967295, got 4294967296"},
    {"list_export: negative list",
     {HEAD("list_export"), S("coll", "a"), I("list", -1), U("limit", 3)}, 0, {0},
     SHOAL_EPROTO, "\"list\" must be an unsigned integer, got -1"},
    {"list_export: cursor with a control byte",
     {HEAD("list_export"), S("coll", "a"), U("list", 3), U("limit", 3), S("cursor", "a\n")}, 0,
     {0}, SHOAL_EINVAL, "\"cursor\" has a byte outside printable ASCII (0x0a) at offset 1"},
    {"list_drop: no list", {HEAD("list_drop"), S("coll", "a")}, 0, {0}, SHOAL_EPROTO,
     "list_drop: missing required key \"list\""},
    {"list_drop: list is a str", {HEAD("list_drop"), S("coll", "a"), S("list", "3")}, 0, {0},
     SHOAL_EPROTO, "list_drop: \"list\" has type str, expected unsigned integer"},

    /* recall targets: a float in (0, 1] (the integer 1 too) */
    {"search: recall 1.5",
     {HEAD("search"), S("coll", "a"), U("n", 1), U("dim", 1), U("k", 1), F("recall", 1.5)}, 1,
     {4}, SHOAL_EINVAL, "search: \"recall\" must be in (0, 1], got 1.5"},
    {"search: recall 0",
     {HEAD("search"), S("coll", "a"), U("n", 1), U("dim", 1), U("k", 1), F("recall", 0.0)}, 1,
     {4}, SHOAL_EINVAL, "search: \"recall\" must be in (0, 1], got 0"},
    {"search: recall NaN",
     {HEAD("search"), S("coll", "a"), U("n", 1), U("dim", 1), U("k", 1), F("recall", NAN)}, 1,
     {4}, SHOAL_EINVAL, "search: \"recall\" must be in (0, 1], got nan"},
    {"search: recall is a str",
     {HEAD("search"), S("coll", "a"), U("n", 1), U("dim", 1), U("k", 1), S("recall", "0.9")}, 1,
     {4}, SHOAL_EPROTO, "search: \"recall\" has type str, expected float"},
    {"search: recall 2 (an integer)",
     {HEAD("search"), S("coll", "a"), U("n", 1), U("dim", 1), U("k", 1), U("recall", 2)}, 1,
     {4}, SHOAL_EPROTO, "search: \"recall\" has type uint, expected float"},
    {"create_collection: target_recall 1.01",
     {HEAD("create_collection"), S("coll", "a"), U("dim", 4), S("metric", "l2"),
      F("target_recall", 1.01)},
     0, {0}, SHOAL_EINVAL, "create_collection: \"target_recall\" must be in (0, 1], got 1.01"},
    {"create_collection: storage f8",
     {HEAD("create_collection"), S("coll", "a"), U("dim", 4), S("metric", "l2"), S("storage", "f8")},
     0, {0}, SHOAL_EINVAL, "create_collection: \"storage\" must be \"f32\", \"f16\" or \"sq8\", got \"f8\""},
    {"create_collection: storage is a uint",
     {HEAD("create_collection"), S("coll", "a"), U("dim", 4), S("metric", "l2"), U("storage", 2)},
     0, {0}, SHOAL_EPROTO, "create_collection: \"storage\" has type uint, expected str"},

    /* cluster growth: every fault of "endpoint" is einval, whatever its kind */
    {"shard_add: no endpoint", {HEAD("shard_add")}, 0, {0}, SHOAL_EINVAL,
     "shard_add: missing required key \"endpoint\""},
    {"shard_drain: endpoint is a uint", {HEAD("shard_drain"), U("endpoint", 7702)}, 0, {0},
     SHOAL_EINVAL, "shard_drain: \"endpoint\" has type uint, expected str"},
    {"shard_remove: endpoint is a map", {HEAD("shard_remove"), MAP0("endpoint")}, 0, {0},
     SHOAL_EINVAL, "shard_remove: \"endpoint\" has type map, expected str"},
    {"shard_add: endpoint empty", {HEAD("shard_add"), S("endpoint", "")}, 0, {0}, SHOAL_EINVAL,
     "shard_add: \"endpoint\" must not be empty"},
    {"shard_add: endpoint too long", {HEAD("shard_add"), S("endpoint", s_long_endpoint)}, 0, {0},
     SHOAL_EINVAL, "shard_add: \"endpoint\" has 256 bytes, at most 255 are allowed"},
    {"shard_drain: endpoint with a control byte",
     {HEAD("shard_drain"), S("endpoint", "tcp://h2:7702\r")}, 0, {0}, SHOAL_EINVAL,
     "\"endpoint\" has a byte outside printable ASCII (0x0d) at offset 13"},
    {"shard_add: a bulk frame", {HEAD("shard_add"), S("endpoint", "tcp://h4:7702")}, 1, {8},
     SHOAL_EPROTO, "shard_add: expected 1 frame (header), got 2"},
    {"rebalance: dry_run 2", {HEAD("rebalance"), U("dry_run", 2)}, 0, {0}, SHOAL_EINVAL,
     "rebalance: \"dry_run\" must be 0 or 1, got 2"},
    {"rebalance: dry_run is a str", {HEAD("rebalance"), S("dry_run", "yes")}, 0, {0}, SHOAL_EPROTO,
     "rebalance: \"dry_run\" has type str, expected unsigned integer"},
    {"rebalance: max_moves above 32 bits", {HEAD("rebalance"), U("max_moves", 1ull << 32)}, 0,
     {0}, SHOAL_EINVAL, "\"max_moves\" must be 0..4294967295, got 4294967296"},
    {"rebalance: negative rate_mb", {HEAD("rebalance"), I("rate_mb", -5)}, 0, {0}, SHOAL_EPROTO,
     "\"rate_mb\" must be an unsigned integer, got -5"},
    {"rebalance: a bulk frame", {HEAD("rebalance")}, 1, {8}, SHOAL_EPROTO,
     "rebalance: expected 1 frame (header), got 2"},
};
/* clang-format on */

static void s_check_bad_request(const bad_case_t *c)
{
    msgpack_sbuffer sb;
    s_pack_header(&sb, c->hdr);
    wire_frames_t frames = {.count = 1 + c->nbulk, .data = {sb.data}, .size = {sb.size}};
    for (size_t i = 0; i < c->nbulk; i++) {
        cr_assert_leq(c->bulk[i], sizeof s_zeros);
        frames.data[1 + i] = s_zeros;
        frames.size[1 + i] = c->bulk[i];
    }
    wire_limits_t lim = wire_limits_default();
    if (c->limits.max_filter)
        lim.max_filter = c->limits.max_filter;
    if (c->limits.max_message_bytes)
        lim.max_message_bytes = c->limits.max_message_bytes;
    wire_request_t req;
    shoal_err_t err;
    int rc = wire_request_decode(&frames, &lim, &req, &err);
    cr_expect_eq(rc, c->code, "%s: code %d (%s), expected %d; message: %s", c->what, rc,
                 shoal_errname(rc), c->code, err.msg);
    cr_expect_eq(err.code, rc, "%s", c->what);
    cr_expect(strstr(err.msg, c->substr) != NULL, "%s: message \"%s\" lacks \"%s\"", c->what,
              err.msg, c->substr);
    cr_expect_eq(req.rid, c->no_rid ? 0 : 7, "%s: rid %" PRIu64, c->what, req.rid);
    cr_expect_null(req.ids, "%s", c->what);
    cr_expect_null(req.vecs, "%s", c->what);
    cr_expect_null(req.owned, "%s", c->what);
    wire_request_fini(&req);
    msgpack_sbuffer_destroy(&sb);
}

Test(wire, bad_requests_give_the_documented_code_and_message)
{
    memset(s_long_name, 'n', 65);
    s_long_name[65] = '\0';
    memset(s_long_endpoint, 'e', WIRE_ENDPOINT_MAX + 1);
    s_long_endpoint[WIRE_ENDPOINT_MAX + 1] = '\0';
    for (size_t i = 0; i < sizeof s_bad_requests / sizeof s_bad_requests[0]; i++)
        s_check_bad_request(&s_bad_requests[i]);
}

Test(wire, a_request_with_an_unreadable_rid_has_rid_zero)
{
    const kv_t no_rid[] = {U("v", 1), S("op", "ping"), {NULL, T_END}};
    msgpack_sbuffer sb;
    s_pack_header(&sb, no_rid);
    wire_frames_t frames = {.count = 1, .data = {sb.data}, .size = {sb.size}};
    wire_request_t req;
    shoal_err_t err;
    cr_assert_eq(wire_request_decode(&frames, NULL, &req, &err), SHOAL_EPROTO);
    cr_assert_eq(req.rid, 0);
    cr_assert_eq(req.op, WIRE_OP_PING, "the op is known, so set");
    msgpack_sbuffer_destroy(&sb);
}

Test(wire, op_and_rid_are_set_even_when_the_version_is_wrong)
{
    const kv_t hdr[] = {U("v", 9), S("op", "search"), U("rid", 31337), {NULL, T_END}};
    msgpack_sbuffer sb;
    s_pack_header(&sb, hdr);
    wire_frames_t frames = {.count = 1, .data = {sb.data}, .size = {sb.size}};
    wire_request_t req;
    shoal_err_t err;
    cr_assert_eq(wire_request_decode(&frames, NULL, &req, &err), SHOAL_EPROTO);
    cr_assert_eq(req.op, WIRE_OP_SEARCH);
    cr_assert_eq(req.rid, 31337);
    msgpack_sbuffer_destroy(&sb);
}

Test(wire, a_64_byte_name_of_every_allowed_character_is_accepted)
{
    char name[65];
    const char *alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-";
    memcpy(name, alphabet, 64);
    name[64] = '\0';
    const kv_t hdr[] = {HEAD("drop_collection"), S("coll", name), {NULL, T_END}};
    msgpack_sbuffer sb;
    s_pack_header(&sb, hdr);
    wire_frames_t frames = {.count = 1, .data = {sb.data}, .size = {sb.size}};
    wire_request_t req;
    shoal_err_t err;
    cr_assert_eq(wire_request_decode(&frames, NULL, &req, &err), 0, "%s", err.msg);
    cr_assert_str_eq(req.coll, name);
    msgpack_sbuffer_destroy(&sb);
    cr_assert_eq(strlen(alphabet), 65, "'-' is the 65th: 64 of them fit");
}

/* Raw header bytes against the decoder. */
static int s_decode_raw(const void *data, size_t len, size_t nbulk, const wire_limits_t *lim,
                        shoal_err_t *err)
{
    wire_frames_t frames = {.count = 1 + nbulk, .data = {data}, .size = {len}};
    for (size_t i = 0; i < nbulk; i++) {
        frames.data[1 + i] = s_zeros;
        frames.size[1 + i] = 8;
    }
    wire_request_t req;
    int rc = wire_request_decode(&frames, lim, &req, err);
    wire_request_fini(&req);
    return rc;
}

Test(wire, every_truncation_of_a_valid_header_is_an_error)
{
    uint64_t ids[2] = {1, 2};
    wire_request_t req;
    wire_frames_t frames;
    shoal_err_t err;
    wire_request_init(&req);
    req.op = WIRE_OP_DELETE;
    req.rid = 123456789012ull;
    strcpy(req.coll, "some.collection");
    req.n = 1;
    req.ids = ids;
    cr_assert_eq(wire_request_encode(&req, &frames, &err), 0);
    size_t len = frames.size[0];
    for (size_t cut = 0; cut < len; cut++) {
        /* A copy of exactly cut bytes, so ASan sees any read past it. */
        uint8_t *copy = malloc(cut ? cut : 1);
        memcpy(copy, frames.data[0], cut);
        int rc = s_decode_raw(copy, cut, 1, NULL, &err);
        cr_assert_eq(rc, SHOAL_EPROTO, "prefix of %zu/%zu bytes: %d %s", cut, len, rc, err.msg);
        if (cut > 0)
            cr_assert(strstr(err.msg, "truncated or malformed msgpack header"), "%zu: %s", cut,
                      err.msg);
        free(copy);
    }
    cr_assert_eq(s_decode_raw(frames.data[0], len, 1, NULL, &err), 0, "%s", err.msg);
    wire_frames_fini(&frames);
}

Test(wire, malformed_headers)
{
    shoal_err_t err;
    uint8_t buf[64];
    /* a valid ping: {"v":1,"op":"ping","rid":7} */
    const uint8_t ping[] = {0x83, 0xa1, 'v', 0x01, 0xa2, 'o', 'p', 0xa4, 'p',
                            'i',  'n',  'g', 0xa3, 'r',  'i', 'd', 0x07};
    cr_assert_eq(s_decode_raw(ping, sizeof ping, 0, NULL, &err), 0, "%s", err.msg);

    /* trailing garbage */
    memcpy(buf, ping, sizeof ping);
    buf[sizeof ping] = 0x00;
    cr_assert_eq(s_decode_raw(buf, sizeof ping + 1, 0, NULL, &err), SHOAL_EPROTO);
    cr_assert(strstr(err.msg, "1 trailing bytes after the map"), "%s", err.msg);

    /* not a map */
    const uint8_t array[] = {0x92, 0x01, 0x02};
    cr_assert_eq(s_decode_raw(array, sizeof array, 0, NULL, &err), SHOAL_EPROTO);
    cr_assert(strstr(err.msg, "header is a msgpack array, expected a map"), "%s", err.msg);
    const uint8_t str[] = {0xa2, 'h', 'i'};
    cr_assert_eq(s_decode_raw(str, sizeof str, 0, NULL, &err), SHOAL_EPROTO);
    cr_assert(strstr(err.msg, "msgpack str"), "%s", err.msg);

    /* a byte msgpack never uses */
    const uint8_t c1[] = {0x81, 0xa1, 'v', 0xc1};
    cr_assert_eq(s_decode_raw(c1, sizeof c1, 0, NULL, &err), SHOAL_EPROTO);

    /* an empty header */
    cr_assert_eq(s_decode_raw(buf, 0, 0, NULL, &err), SHOAL_EPROTO);
    cr_assert(strstr(err.msg, "empty header"), "%s", err.msg);

    /* a map key that is not a string */
    const uint8_t intkey[] = {0x81, 0x01, 0x01};
    cr_assert_eq(s_decode_raw(intkey, sizeof intkey, 0, NULL, &err), SHOAL_EPROTO);
    cr_assert(strstr(err.msg, "header key 0 has type uint, expected str"), "%s", err.msg);

    /* counts that lie: a map32 / array32 claiming 2^32-1 entries in 5 bytes */
    const uint8_t bigmap[] = {0xdf, 0xff, 0xff, 0xff, 0xff};
    cr_assert_eq(s_decode_raw(bigmap, sizeof bigmap, 0, NULL, &err), SHOAL_EPROTO);
    const uint8_t bigarr[] = {0x81, 0xa1, 'x', 0xdd, 0xff, 0xff, 0xff, 0xff, 0x00};
    cr_assert_eq(s_decode_raw(bigarr, sizeof bigarr, 0, NULL, &err), SHOAL_EPROTO);
    const uint8_t bigstr[] = {0x81, 0xa1, 'x', 0xdb, 0xff, 0xff, 0xff, 0xff, 0x00};
    cr_assert_eq(s_decode_raw(bigstr, sizeof bigstr, 0, NULL, &err), SHOAL_EPROTO);

    /* more than 64 keys */
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 65);
    for (int i = 0; i < 65; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%d", i);
        msgpack_pack_str_with_body(&pk, key, strlen(key));
        msgpack_pack_uint8(&pk, 1);
    }
    cr_assert_eq(s_decode_raw(sb.data, sb.size, 0, NULL, &err), SHOAL_ELIMIT);
    cr_assert(strstr(err.msg, "65 keys, at most 64"), "%s", err.msg);
    msgpack_sbuffer_destroy(&sb);

    /* nested too deep in an unknown key */
    msgpack_sbuffer_init(&sb);
    msgpack_pack_map(&pk, 4);
    msgpack_pack_str_with_body(&pk, "v", 1);
    msgpack_pack_uint8(&pk, 1);
    msgpack_pack_str_with_body(&pk, "op", 2);
    msgpack_pack_str_with_body(&pk, "ping", 4);
    msgpack_pack_str_with_body(&pk, "rid", 3);
    msgpack_pack_uint8(&pk, 1);
    msgpack_pack_str_with_body(&pk, "deep", 4);
    for (int i = 0; i < 20; i++)
        msgpack_pack_array(&pk, 1);
    msgpack_pack_nil(&pk);
    cr_assert_eq(s_decode_raw(sb.data, sb.size, 0, NULL, &err), SHOAL_ELIMIT);
    cr_assert(strstr(err.msg, "nested deeper than 16"), "%s", err.msg);
    msgpack_sbuffer_destroy(&sb);

    /* frame counts outside the struct's range */
    wire_frames_t frames = {.count = 0};
    wire_request_t req;
    cr_assert_eq(wire_request_decode(&frames, NULL, &req, &err), SHOAL_EPROTO);
    frames.count = WIRE_FRAMES_MAX + 1;
    cr_assert_eq(wire_request_decode(&frames, NULL, &req, &err), SHOAL_EPROTO);
    cr_assert(strstr(err.msg, "at most 5"), "%s", err.msg);
}

/* One case of what an error reply can be addressed to (docs/protocol.md section 6). */
typedef struct {
    const char *what;   /* the case */
    kv_t hdr[8];        /* header entries, T_END-terminated */
    size_t nbulk;       /* bulk frames of 8 zero bytes */
    bool trailing;      /* one byte after the map */
    size_t max_bytes;   /* max_message_bytes; 0: the default */
    int code;           /* expected code */
    const char *substr; /* expected in the message */
    wire_op_t op;       /* the op the decoder could read */
    uint64_t rid;       /* the rid it could read */
} echo_case_t;

/* clang-format off */
static const echo_case_t s_echo_cases[] = {
    {"unknown op: not an op name", {HEAD("serch")}, 0, false, 0, SHOAL_EPROTO,
     "unknown op \"serch\"", WIRE_OP_NONE, 7},
    {"op twice: no one value", {HEAD("ping"), S("op", "ping")}, 0, false, 0, SHOAL_EPROTO,
     "duplicate key \"op\"", WIRE_OP_NONE, 7},
    {"rid twice: no one value", {HEAD("ping"), U("rid", 8)}, 0, false, 0, SHOAL_EPROTO,
     "duplicate key \"rid\"", WIRE_OP_PING, 0},
    {"an unknown key twice", {HEAD("ping"), S("x", "1"), S("x", "2")}, 0, false, 0, SHOAL_EPROTO,
     "duplicate key \"x\"", WIRE_OP_PING, 7},
    {"rid is a str", {U("v", 1), S("op", "get"), S("rid", "7")}, 0, false, 0, SHOAL_EPROTO,
     "\"rid\"", WIRE_OP_GET, 0},
    {"trailing bytes after the map", {HEAD("ping")}, 0, true, 0, SHOAL_EPROTO,
     "1 trailing bytes after the map", WIRE_OP_PING, 7},
    {"six frames", {HEAD("ping")}, 5, false, 0, SHOAL_EPROTO, "at most 5", WIRE_OP_PING, 7},
    {"over max_message_bytes", {HEAD("delete"), S("coll", "a"), U("n", 1)}, 1, false, 20,
     SHOAL_ELIMIT, "the limit is 20", WIRE_OP_DELETE, 7},
    {"over max_message_bytes and trailing bytes", {HEAD("delete"), S("coll", "a"), U("n", 1)}, 1,
     true, 20, SHOAL_ELIMIT, "the limit is 20", WIRE_OP_DELETE, 7},
    {"version 2", {U("v", 2), S("op", "search"), U("rid", 7)}, 0, false, 0, SHOAL_EPROTO,
     "(this server speaks 1)", WIRE_OP_SEARCH, 7},
    {"a bulk frame of the wrong size", {HEAD("get"), S("coll", "a"), U("n", 2)}, 1, false, 0,
     SHOAL_EPROTO, "frame 1 has 8 bytes, expected 16", WIRE_OP_GET, 7},
};
/* clang-format on */

Test(wire, an_error_is_addressed_with_the_op_and_rid_the_header_map_gives)
{
    for (size_t i = 0; i < sizeof s_echo_cases / sizeof s_echo_cases[0]; i++) {
        const echo_case_t *c = &s_echo_cases[i];
        msgpack_sbuffer sb;
        s_pack_header(&sb, c->hdr);
        if (c->trailing)
            msgpack_sbuffer_write(&sb, "\xc0", 1);
        wire_frames_t frames = {.count = 1 + c->nbulk, .data = {sb.data}, .size = {sb.size}};
        for (size_t b = 0; b < c->nbulk && b + 1 < WIRE_FRAMES_MAX; b++) {
            frames.data[1 + b] = s_zeros;
            frames.size[1 + b] = 8;
        }
        wire_limits_t lim = wire_limits_default();
        if (c->max_bytes)
            lim.max_message_bytes = c->max_bytes;
        wire_request_t req;
        shoal_err_t err;
        int rc = wire_request_decode(&frames, &lim, &req, &err);
        cr_expect_eq(rc, c->code, "%s: code %d, message %s", c->what, rc, err.msg);
        cr_expect(strstr(err.msg, c->substr), "%s: message \"%s\" lacks \"%s\"", c->what, err.msg,
                  c->substr);
        cr_expect_eq(req.op, c->op, "%s: op %d, expected %d", c->what, (int)req.op, (int)c->op);
        cr_expect_eq(req.rid, c->rid, "%s: rid %" PRIu64, c->what, req.rid);
        cr_expect_null(req.owned, "%s", c->what);
        wire_request_fini(&req);
        msgpack_sbuffer_destroy(&sb);
    }
}

/* A ping header of 3 + extra entries, the extra keys "k0".. (or one int key). */
static void s_pack_wide_ping(msgpack_sbuffer *sb, size_t extra, bool int_key)
{
    msgpack_packer pk;
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3 + extra);
    const kv_t head[] = {HEAD("ping")};
    for (size_t i = 0; i < 3; i++)
        s_pack_kv(&pk, &head[i]);
    for (size_t i = 0; i < extra; i++) {
        if (int_key) {
            msgpack_pack_uint8(&pk, (uint8_t)i);
        } else {
            char key[24];
            snprintf(key, sizeof key, "k%zu", i);
            msgpack_pack_str_with_body(&pk, key, strlen(key));
        }
        msgpack_pack_uint8(&pk, 1);
    }
}

Test(wire, too_many_keys_or_a_key_not_a_string_still_gives_op_and_rid)
{
    struct {
        size_t extra;
        bool int_key;
        int code;
        const char *substr;
    } cases[] = {
        {WIRE_HEADER_KEYS_MAX - 2, false, SHOAL_ELIMIT, "65 keys, at most 64"},
        {1, true, SHOAL_EPROTO, "header key 3 has type uint, expected str"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        msgpack_sbuffer sb;
        s_pack_wide_ping(&sb, cases[i].extra, cases[i].int_key);
        wire_frames_t frames = {.count = 1, .data = {sb.data}, .size = {sb.size}};
        wire_request_t req;
        shoal_err_t err;
        cr_assert_eq(wire_request_decode(&frames, NULL, &req, &err), cases[i].code, "%s", err.msg);
        cr_assert(strstr(err.msg, cases[i].substr), "%s", err.msg);
        cr_assert_eq(req.op, WIRE_OP_PING, "%s", cases[i].substr);
        cr_assert_eq(req.rid, 7, "%s", cases[i].substr);
        msgpack_sbuffer_destroy(&sb);
    }
    /* 64 keys are allowed, the 62 unknown ones ignored */
    msgpack_sbuffer sb;
    s_pack_wide_ping(&sb, WIRE_HEADER_KEYS_MAX - 3, false);
    wire_frames_t frames = {.count = 1, .data = {sb.data}, .size = {sb.size}};
    wire_request_t req;
    shoal_err_t err;
    cr_assert_eq(wire_request_decode(&frames, NULL, &req, &err), 0, "%s", err.msg);
    msgpack_sbuffer_destroy(&sb);
}

Test(wire, a_header_that_is_not_a_complete_map_gives_neither)
{
    const uint8_t ping[] = {0x83, 0xa1, 'v', 0x01, 0xa2, 'o', 'p', 0xa4, 'p',
                            'i',  'n',  'g', 0xa3, 'r',  'i', 'd', 0x07};
    wire_frames_t frames = {.count = 1, .data = {ping}, .size = {sizeof ping - 1}};
    wire_request_t req;
    shoal_err_t err;
    cr_assert_eq(wire_request_decode(&frames, NULL, &req, &err), SHOAL_EPROTO);
    cr_assert_eq(req.op, WIRE_OP_NONE);
    cr_assert_eq(req.rid, 0);
    frames.size[0] = sizeof ping;
    cr_assert_eq(wire_request_decode(&frames, NULL, &req, &err), 0, "%s", err.msg);
    cr_assert_eq(req.rid, 7);
}

Test(wire, a_reply_with_trailing_bytes_keeps_its_op_and_rid)
{
    wire_reply_t rep;
    wire_frames_t frames;
    shoal_err_t err;
    wire_reply_error(&rep, WIRE_OP_SEARCH, 99, SHOAL_EDIM, "expected dim 8, got 4");
    cr_assert_eq(wire_reply_encode(&rep, &frames, &err), 0, "%s", err.msg);
    uint8_t buf[256];
    cr_assert_lt(frames.size[0], sizeof buf);
    memcpy(buf, frames.data[0], frames.size[0]);
    buf[frames.size[0]] = 0xc0;
    wire_frames_t bad = {.count = 1, .data = {buf}, .size = {frames.size[0] + 1}};
    wire_reply_t out;
    cr_assert_eq(wire_reply_decode(&bad, NULL, &out, &err), SHOAL_EPROTO);
    cr_assert(strstr(err.msg, "trailing"), "%s", err.msg);
    cr_assert_eq(out.op, WIRE_OP_SEARCH);
    cr_assert_eq(out.rid, 99);

    /* a reply of another version: the decoding side is a client */
    const uint8_t v1[] = {0xa1, 'v', 0x01};
    size_t at = 0;
    while (at + sizeof v1 <= frames.size[0] && memcmp(buf + at, v1, sizeof v1) != 0)
        at++;
    cr_assert_leq(at + sizeof v1, frames.size[0], "no \"v\": 1 in the encoded reply");
    buf[at + 2] = 0x02;
    bad.size[0] = frames.size[0];
    cr_assert_eq(wire_reply_decode(&bad, NULL, &out, &err), SHOAL_EPROTO);
    cr_assert(strstr(err.msg, "protocol version 2 is not supported (this client speaks 1)"), "%s",
              err.msg);
    cr_assert_eq(out.rid, 99);
    wire_frames_fini(&frames);
}

Test(wire, total_size_is_checked_before_the_header_is_parsed)
{
    /* Garbage header, oversized message: the size is what gets reported. */
    const uint8_t garbage[] = {0xc1, 0xc1, 0xc1};
    wire_limits_t lim = wire_limits_default();
    lim.max_message_bytes = 10;
    shoal_err_t err;
    cr_assert_eq(s_decode_raw(garbage, sizeof garbage, 1, &lim, &err), SHOAL_ELIMIT);
    cr_assert(strstr(err.msg, "message has 11 bytes, the limit is 10"), "%s", err.msg);
    lim.max_message_bytes = 11;
    cr_assert_eq(s_decode_raw(garbage, sizeof garbage, 1, &lim, &err), SHOAL_EPROTO);

    /* Frame lengths whose sum overflows size_t, data never touched. */
    wire_frames_t frames = {.count = 3,
                            .data = {garbage, s_zeros, s_zeros},
                            .size = {sizeof garbage, SIZE_MAX, SIZE_MAX}};
    wire_request_t req;
    cr_assert_eq(wire_request_decode(&frames, NULL, &req, &err), SHOAL_ELIMIT);
}

/* ------------------------------------------------------------------------ */
/* Malformed replies                                                        */
/* ------------------------------------------------------------------------ */

#define RHEAD(op) U("v", 1), S("op", op), U("rid", 7)

/* One row per case. */
/* clang-format off */
static const bad_case_t s_bad_replies[] = {
    {"no code", {RHEAD("ping")}, 0, {0}, SHOAL_EPROTO, "missing required key \"code\""},
    {"positive code", {RHEAD("ping"), U("code", 3)}, 0, {0}, SHOAL_EPROTO,
     "\"code\" must be 0 or negative, got 3"},
    {"str code", {RHEAD("ping"), S("code", "ok")}, 0, {0}, SHOAL_EPROTO,
     "\"code\" has type str, expected integer"},
    {"success without op", {U("v", 1), U("rid", 7), U("code", 0)}, 0, {0}, SHOAL_EPROTO,
     "missing required key \"op\""},
    {"unknown op", {RHEAD("pong"), U("code", 0)}, 0, {0}, SHOAL_EPROTO, "unknown op \"pong\""},
    {"bad version", {U("v", 3), S("op", "ping"), U("rid", 7), U("code", 0)}, 0, {0}, SHOAL_EPROTO,
     "protocol version 3"},
    {"msg not a str", {RHEAD("ping"), I("code", -2), U("msg", 5)}, 0, {0}, SHOAL_EPROTO,
     "\"msg\" has type uint, expected str"},
    {"error reply with a bulk frame", {RHEAD("search"), I("code", -5), S("msg", "x")}, 1, {8},
     SHOAL_EPROTO, "expected 1 frame (header of an error reply), got 2"},
    {"insert without seq", {RHEAD("insert"), U("code", 0), U("count", 1)}, 0, {0}, SHOAL_EPROTO,
     "insert: missing required key \"seq\""},
    {"delete without count", {RHEAD("delete"), U("code", 0), U("seq", 1)}, 0, {0}, SHOAL_EPROTO,
     "delete: missing required key \"count\""},
    {"stats without info", {RHEAD("stats"), U("code", 0)}, 0, {0}, SHOAL_EPROTO,
     "stats: missing required key \"info\""},
    {"shard_add without info", {RHEAD("shard_add"), U("code", 0)}, 0, {0}, SHOAL_EPROTO,
     "shard_add: missing required key \"info\""},
    {"shard_drain without info", {RHEAD("shard_drain"), U("code", 0)}, 0, {0}, SHOAL_EPROTO,
     "shard_drain: missing required key \"info\""},
    {"shard_remove without info", {RHEAD("shard_remove"), U("code", 0)}, 0, {0}, SHOAL_EPROTO,
     "shard_remove: missing required key \"info\""},
    {"rebalance without info", {RHEAD("rebalance"), U("code", 0)}, 0, {0}, SHOAL_EPROTO,
     "rebalance: missing required key \"info\""},
    {"info not a map", {RHEAD("stats"), U("code", 0), S("info", "x")}, 0, {0}, SHOAL_EPROTO,
     "\"info\" must be a map"},
    {"info holding an array", {RHEAD("ping"), U("code", 0), {"info", T_ARR}}, 0, {0}, SHOAL_EPROTO,
     "\"info\" must be a map"},
    {"search reply: mode auto",
     {RHEAD("search"), U("code", 0), U("n", 1), U("k", 1), S("mode", "auto")}, 2, {8, 4},
     SHOAL_EPROTO, "\"mode\" of a reply must be \"hnsw\" or \"exact\", got \"auto\""},
    {"search reply: no mode", {RHEAD("search"), U("code", 0), U("n", 1), U("k", 1)}, 2, {8, 4},
     SHOAL_EPROTO, "missing required key \"mode\""},
    {"search reply: k = 0",
     {RHEAD("search"), U("code", 0), U("n", 1), U("k", 0), S("mode", "hnsw")}, 2, {0, 0},
     SHOAL_EINVAL, "\"k\" must be 1..4096, got 0"},
    {"search reply: dists short",
     {RHEAD("search"), U("code", 0), U("n", 2), U("k", 2), S("mode", "exact")}, 2, {32, 15},
     SHOAL_EPROTO, "frame 2 has 15 bytes, expected 16 (n=2 x k=2 x 4)"},
    {"search reply: ids long",
     {RHEAD("search"), U("code", 0), U("n", 2), U("k", 2), S("mode", "exact")}, 2, {33, 16},
     SHOAL_EPROTO, "frame 1 has 33 bytes, expected 32 (n=2 x k=2 x 8)"},
    {"search reply: one frame",
     {RHEAD("search"), U("code", 0), U("n", 1), U("k", 1), S("mode", "hnsw")}, 1, {8}, SHOAL_EPROTO,
     "expected 3 frames (header, ids, distances), got 2"},
    {"get reply: no dim", {RHEAD("get"), U("code", 0), U("n", 1)}, 2, {1, 4}, SHOAL_EPROTO,
     "get: missing required key \"dim\""},
    {"get reply: vecs short", {RHEAD("get"), U("code", 0), U("n", 2), U("dim", 2)}, 2, {2, 15},
     SHOAL_EPROTO, "frame 2 has 15 bytes, expected 16 (n=2 x dim=2 x 4)"},
    {"get reply: n over the limit", {RHEAD("get"), U("code", 0), U("n", 1000001), U("dim", 2)}, 2,
     {2, 16}, SHOAL_ELIMIT, "\"n\" must be 1..1000000"},

    /* the coordinator's keys and knn_graph */
    {"search reply: partial 2",
     {RHEAD("search"), U("code", 0), U("n", 1), U("k", 1), S("mode", "hnsw"), U("partial", 2)}, 2,
     {8, 4}, SHOAL_EPROTO, "search: \"partial\" must be 0 or 1, got 2"},
    {"search reply: missing too long",
     {RHEAD("search"), U("code", 0), U("n", 1), U("k", 1), S("mode", "hnsw"), U("partial", 1),
      S("missing", s_long_missing)}, 2, {8, 4}, SHOAL_EINVAL,
     "search: \"missing\" has 1024 bytes, at most 1023 are allowed"},
    {"search reply: missing is a map",
     {RHEAD("search"), U("code", 0), U("n", 1), U("k", 1), S("mode", "hnsw"), MAP0("missing")}, 2,
     {8, 4}, SHOAL_EPROTO, "\"missing\" has type map, expected str"},
    {"search reply: fanout is a str",
     {RHEAD("search"), U("code", 0), U("n", 1), U("k", 1), S("mode", "hnsw"), S("fanout", "3")}, 2,
     {8, 4}, SHOAL_EPROTO, "\"fanout\" has type str, expected unsigned integer"},
    {"knn_graph reply: row ids one short",
     {RHEAD("knn_graph"), U("code", 0), U("n", 2), U("k", 3), S("cursor", ""), U("total", 2)}, 3,
     {48, 24, 8}, SHOAL_EPROTO, "knn_graph: frame 3 has 8 bytes, expected 16 (n=2 x 8)"},
    {"knn_graph reply: row ids one byte long",
     {RHEAD("knn_graph"), U("code", 0), U("n", 2), U("k", 3), S("cursor", ""), U("total", 2)}, 3,
     {48, 24, 17}, SHOAL_EPROTO, "frame 3 has 17 bytes, expected 16"},
    {"knn_graph reply: dists short",
     {RHEAD("knn_graph"), U("code", 0), U("n", 2), U("k", 3), S("cursor", ""), U("total", 2)}, 3,
     {48, 20, 16}, SHOAL_EPROTO, "frame 2 has 20 bytes, expected 24 (n=2 x k=3 x 4)"},
    {"knn_graph reply: no row ids frame",
     {RHEAD("knn_graph"), U("code", 0), U("n", 1), U("k", 1), S("cursor", ""), U("total", 1)}, 2,
     {8, 4}, SHOAL_EPROTO, "expected 4 frames (header, ids, distances, row ids), got 3"},
    {"knn_graph reply: no cursor",
     {RHEAD("knn_graph"), U("code", 0), U("n", 1), U("k", 1), U("total", 1)}, 3, {8, 4, 8},
     SHOAL_EPROTO, "knn_graph: missing required key \"cursor\""},
    {"knn_graph reply: no total",
     {RHEAD("knn_graph"), U("code", 0), U("n", 1), U("k", 1), S("cursor", "")}, 3, {8, 4, 8},
     SHOAL_EPROTO, "knn_graph: missing required key \"total\""},
    {"knn_graph reply: cursor too long",
     {RHEAD("knn_graph"), U("code", 0), U("n", 1), U("k", 1), S("cursor", s_long_missing),
      U("total", 1)}, 3, {8, 4, 8}, SHOAL_EINVAL, "\"cursor\" has 1024 bytes, at most 64"},
    {"knn_graph reply: mode auto",
     {RHEAD("knn_graph"), U("code", 0), U("n", 1), U("k", 1), S("mode", "auto"), S("cursor", ""),
      U("total", 1)}, 3, {8, 4, 8}, SHOAL_EPROTO, "\"mode\" of a reply must be"},
    {"knn_graph reply: k = 0",
     {RHEAD("knn_graph"), U("code", 0), U("n", 0), U("k", 0), S("cursor", ""), U("total", 0)}, 3,
     {0, 0, 0}, SHOAL_EINVAL, "knn_graph: \"k\" must be 1..4096, got 0"},
    {"knn_graph reply: n over the limit",
     {RHEAD("knn_graph"), U("code", 0), U("n", 1000001), U("k", 1), S("cursor", ""),
      U("total", 1)}, 3, {8, 4, 8}, SHOAL_ELIMIT, "knn_graph: \"n\" must be 0..1000000, got 1000001"},
    {"knn_graph reply: partial is a str",
     {RHEAD("knn_graph"), U("code", 0), U("n", 1), U("k", 1), S("cursor", ""), U("total", 1),
      S("partial", "yes")}, 3, {8, 4, 8}, SHOAL_EPROTO, "\"partial\" has type str"},
};
/* clang-format on */

Test(wire, bad_replies_give_the_documented_code_and_message)
{
    memset(s_long_missing, 'm', WIRE_MISSING_MAX);
    s_long_missing[WIRE_MISSING_MAX] = '\0';
    for (size_t i = 0; i < sizeof s_bad_replies / sizeof s_bad_replies[0]; i++) {
        const bad_case_t *c = &s_bad_replies[i];
        msgpack_sbuffer sb;
        s_pack_header(&sb, c->hdr);
        wire_frames_t frames = {.count = 1 + c->nbulk, .data = {sb.data}, .size = {sb.size}};
        for (size_t j = 0; j < c->nbulk; j++) {
            frames.data[1 + j] = s_zeros;
            frames.size[1 + j] = c->bulk[j];
        }
        wire_reply_t rep;
        shoal_err_t err;
        int rc = wire_reply_decode(&frames, NULL, &rep, &err);
        cr_expect_eq(rc, c->code, "%s: code %d, expected %d; message: %s", c->what, rc, c->code,
                     err.msg);
        cr_expect(strstr(err.msg, c->substr) != NULL, "%s: message \"%s\" lacks \"%s\"", c->what,
                  err.msg, c->substr);
        cr_expect_eq(rep.rid, 7, "%s", c->what);
        cr_expect_null(rep.owned, "%s", c->what);
        cr_expect_null(rep.info, "%s", c->what);
        wire_reply_fini(&rep);
        msgpack_sbuffer_destroy(&sb);
    }
}

Test(wire, get_reply_found_flags_must_be_0_or_1)
{
    const kv_t hdr[] = {RHEAD("get"), U("code", 0), U("n", 3), U("dim", 1), {NULL, T_END}};
    msgpack_sbuffer sb;
    s_pack_header(&sb, hdr);
    uint8_t found[3] = {1, 0, 2};
    float vecs[3] = {0};
    wire_frames_t frames = {.count = 3, .data = {sb.data, found, vecs}, .size = {sb.size, 3, 12}};
    wire_reply_t rep;
    shoal_err_t err;
    cr_assert_eq(wire_reply_decode(&frames, NULL, &rep, &err), SHOAL_EPROTO);
    cr_assert(strstr(err.msg, "get: frame 1 byte 2 is 2, expected 0 or 1"), "%s", err.msg);
    found[2] = 1;
    cr_assert_eq(wire_reply_decode(&frames, NULL, &rep, &err), 0, "%s", err.msg);
    wire_reply_fini(&rep);
    msgpack_sbuffer_destroy(&sb);
}

/* ------------------------------------------------------------------------ */
/* Random mutations                                                         */
/* ------------------------------------------------------------------------ */

/* Mutates src into dst (cap bytes): 1-4 flips, insertions or deletions. */
static size_t s_mutate(const uint8_t *src, size_t len, uint8_t *dst, size_t cap)
{
    memcpy(dst, src, len);
    int edits = 1 + (int)(s_rand() % 4);
    for (int e = 0; e < edits; e++) {
        size_t at = len ? (size_t)(s_rand() % len) : 0;
        switch (s_rand() % 4) {
        case 0: /* flip some bits */
            if (len)
                dst[at] ^= (uint8_t)(1u << (s_rand() % 8));
            break;
        case 1: /* replace with an interesting byte */
            if (len) {
                static const uint8_t hot[] = {0x00, 0x7f, 0x80, 0x8f, 0x90, 0xc0, 0xc1,
                                              0xca, 0xcb, 0xcf, 0xd3, 0xd9, 0xdb, 0xdc,
                                              0xdd, 0xde, 0xdf, 0xff, 0xa0, 0xbf};
                dst[at] = s_rand() % 2 ? hot[s_rand() % sizeof hot] : (uint8_t)s_rand();
            }
            break;
        case 2: /* insert */
            if (len < cap) {
                memmove(dst + at + 1, dst + at, len - at);
                dst[at] = (uint8_t)s_rand();
                len++;
            }
            break;
        default: /* delete */
            if (len) {
                memmove(dst + at, dst + at + 1, len - at - 1);
                len--;
            }
            break;
        }
    }
    return len;
}

Test(wire, random_mutations_of_valid_headers_never_crash, .timeout = 120)
{
    enum { N = 2, DIM = 4 };
    uint64_t ids[N * 2] = {1, 2, 3, 4};
    float vecs[N * DIM * 2];
    s_fill_floats(vecs, N * DIM * 2, 0.0f);
    uint8_t found[N] = {1, 0};

    /* Valid messages of every kind, as seeds. */
    wire_frames_t seeds[32];
    size_t nseeds = 0;
    shoal_err_t err;
    for (int op = WIRE_OP_NONE + 1; op < WIRE_OP_COUNT; op++) {
        wire_request_t req;
        wire_request_init(&req);
        req.op = (wire_op_t)op;
        req.rid = 1ull << 33;
        strcpy(req.coll, "docs");
        req.n = N;
        req.dim = DIM;
        req.k = 2;
        req.ids = ids;
        req.vecs = vecs;
        req.metric = SHOAL_METRIC_COSINE;
        req.M = 12;
        req.ef = 50;
        req.nfilter = op == WIRE_OP_SEARCH ? 2 : 0;
        req.filter = ids;
        req.nlist = 16;
        req.init = 1;
        req.max_iters = 9;
        req.seed = 77;
        req.nprobe = 3;
        req.deadline_ms = 100;
        req.chunk = 500;
        strcpy(req.cursor, "s0.l3.i9");
        req.list = 7;
        req.limit = 5;
        strcpy(req.endpoint, "tcp://10.0.0.4:7702");
        req.dry_run = 1;
        req.max_moves = 40;
        req.rate_mb = 50;
        cr_assert_lt(nseeds, sizeof seeds / sizeof seeds[0]);
        cr_assert_eq(wire_request_encode(&req, &seeds[nseeds++], &err), 0, "%s", err.msg);
    }
    wire_info_t *info = s_nested_info();
    wire_info_t *plan = s_plan_info();
    const wire_op_t reply_ops[] = {WIRE_OP_SEARCH,      WIRE_OP_GET,         WIRE_OP_STATS,
                                   WIRE_OP_INSERT,      WIRE_OP_TRAIN,       WIRE_OP_KNN_GRAPH,
                                   WIRE_OP_LIST_COUNTS, WIRE_OP_LIST_EXPORT, WIRE_OP_REBALANCE};
    const uint32_t lists[N] = {3, WIRE_LIST_NONE};
    const uint64_t counts[N] = {10, 1};
    for (size_t i = 0; i < sizeof reply_ops / sizeof reply_ops[0]; i++) {
        wire_reply_t rep;
        wire_reply_init(&rep);
        rep.op = reply_ops[i];
        rep.rid = 5;
        rep.n = N;
        rep.k = 2;
        rep.dim = DIM;
        rep.mode_used = WIRE_MODE_EXACT;
        rep.ids = ids;
        rep.dists = vecs;
        rep.found = found;
        rep.vecs = vecs;
        rep.count = 2;
        rep.seq = 9;
        rep.qids = ids;
        rep.partial = 1;
        strcpy(rep.missing, "tcp://127.0.0.1:7701,ipc:///tmp/s");
        rep.fanout = 4;
        strcpy(rep.cursor, "s1.l0.i2");
        rep.total = 100;
        rep.lists = lists;
        rep.counts = counts;
        rep.done = 1;
        const wire_info_t *with = reply_ops[i] == WIRE_OP_REBALANCE ? plan : info;
        rep.info = wire_info_data(with);
        rep.info_len = wire_info_len(with);
        cr_assert_lt(nseeds, sizeof seeds / sizeof seeds[0]);
        cr_assert_eq(wire_reply_encode(&rep, &seeds[nseeds++], &err), 0, "%s", err.msg);
    }
    wire_reply_t erep;
    wire_reply_error(&erep, WIRE_OP_SEARCH, 3, SHOAL_EDIM, "expected dim 128, got 96");
    cr_assert_eq(wire_reply_encode(&erep, &seeds[nseeds++], &err), 0);

    size_t ok = 0, failed = 0;
    for (int iter = 0; iter < 20000; iter++) {
        const wire_frames_t *seed = &seeds[s_rand() % nseeds];
        size_t cap = seed->size[0] + 8;
        uint8_t *buf = malloc(cap);
        size_t len = s_mutate(seed->data[0], seed->size[0], buf, cap);
        /* An exact-size copy, so a read past the end is an ASan error. */
        uint8_t *exact = malloc(len ? len : 1);
        memcpy(exact, buf, len);
        wire_frames_t frames = *seed;
        frames.owned_header = NULL;
        frames.data[0] = exact;
        frames.size[0] = len;

        wire_request_t req;
        int rc = wire_request_decode(&frames, NULL, &req, &err);
        cr_assert(rc == 0 || (rc < 0 && err.code == rc && err.msg[0]), "request rc %d", rc);
        if (rc == 0) {
            ok++;
            /* what decoded re-encodes */
            wire_frames_t again;
            cr_assert_eq(wire_request_encode(&req, &again, &err), 0, "%s", err.msg);
            wire_frames_fini(&again);
        } else {
            failed++;
        }
        wire_request_fini(&req);

        wire_reply_t rep;
        rc = wire_reply_decode(&frames, NULL, &rep, &err);
        cr_assert(rc == 0 || (rc < 0 && err.code == rc && err.msg[0]), "reply rc %d", rc);
        if (rc == 0 && rep.info) {
            char text[512];
            int trc = wire_info_to_text(rep.info, rep.info_len, text, sizeof text);
            cr_assert(trc == 0 || trc == SHOAL_ELIMIT, "decoded info renders: %d", trc);
        }
        wire_reply_fini(&rep);
        free(exact);
        free(buf);
    }
    cr_assert_gt(failed, 1000, "mutations should mostly break headers (%zu)", failed);
    cr_log_info("mutations: %zu requests decoded, %zu refused", ok, failed);
    for (size_t i = 0; i < nseeds; i++)
        wire_frames_fini(&seeds[i]);
    wire_info_destroy(&info);
    wire_info_destroy(&plan);
}

/* ------------------------------------------------------------------------ */
/* The info map                                                             */
/* ------------------------------------------------------------------------ */

Test(wire, info_to_text_and_lookup_on_a_nested_map)
{
    wire_info_t *info = s_nested_info();
    const void *data = wire_info_data(info);
    size_t len = wire_info_len(info);
    char text[256];
    cr_assert_eq(wire_info_to_text(data, len, text, sizeof text), 0);
    cr_assert_str_eq(text, S_NESTED_TEXT);

    double v = 0;
    cr_assert_eq(wire_info_lookup(data, len, "count", &v), 0);
    cr_assert_eq(v, 10.0);
    cr_assert_eq(wire_info_lookup(data, len, "shard.mem.bytes", &v), 0);
    cr_assert_eq(v, 1234.0);
    cr_assert_eq(wire_info_lookup(data, len, "shard.up", &v), 0);
    cr_assert_eq(v, 1.0);
    cr_assert_eq(wire_info_lookup(data, len, "neg", &v), 0);
    cr_assert_eq(v, -5.0);
    cr_assert_eq(wire_info_lookup(data, len, "ratio", &v), 0);
    cr_assert_eq(v, 0.25);
    cr_assert_eq(wire_info_lookup(data, len, "shard", &v), SHOAL_EFORMAT, "a map is not a number");
    cr_assert_eq(wire_info_lookup(data, len, "name", &v), SHOAL_EFORMAT);
    cr_assert_eq(wire_info_lookup(data, len, "missing", &v), SHOAL_ENOTFOUND);
    cr_assert_eq(wire_info_lookup(data, len, "count.x", &v), SHOAL_ENOTFOUND);
    cr_assert_eq(wire_info_lookup(data, len, "shard.nope", &v), SHOAL_ENOTFOUND);
    cr_assert_eq(wire_info_lookup(data, len, "shard.mem.bytes.x", &v), SHOAL_ENOTFOUND);
    cr_assert_eq(wire_info_lookup(data, len, "", &v), SHOAL_ENOTFOUND);
    char str[8];
    cr_assert_eq(wire_info_lookup_str(data, len, "name", str, sizeof str), 0);
    cr_assert_str_eq(str, "shard-0");
    cr_assert_eq(wire_info_lookup_str(data, len, "count", str, sizeof str), SHOAL_EFORMAT);
    cr_assert_eq(wire_info_lookup_str(data, len, "nope", str, sizeof str), SHOAL_ENOTFOUND);
    cr_assert_eq(wire_info_lookup_str(data, len, "name", str, 4), SHOAL_ELIMIT);
    cr_assert_str_eq(str, "sha");

    /* too small a buffer: a NUL-terminated prefix and ELIMIT */
    char small[12];
    cr_assert_eq(wire_info_to_text(data, len, small, sizeof small), SHOAL_ELIMIT);
    cr_assert_eq(strlen(small), sizeof small - 1);
    cr_assert_eq(strncmp(small, S_NESTED_TEXT, sizeof small - 1), 0);

    /* truncated bytes, trailing bytes, wrong kinds */
    cr_assert_eq(wire_info_to_text(data, len - 1, text, sizeof text), SHOAL_EFORMAT);
    cr_assert_eq(wire_info_lookup(data, len - 1, "count", &v), SHOAL_EFORMAT);
    uint8_t longer[256];
    memcpy(longer, data, len);
    longer[len] = 0x01;
    cr_assert_eq(wire_info_to_text(longer, len + 1, text, sizeof text), SHOAL_EFORMAT);
    const uint8_t array_of_bool[] = {0x81, 0xa1, 'a', 0x91, 0xc3};
    cr_assert_eq(wire_info_to_text(array_of_bool, sizeof array_of_bool, text, sizeof text),
                 SHOAL_EFORMAT, "an array holds the same kinds as a map");
    const uint8_t with_bool[] = {0x81, 0xa1, 'a', 0xc3};
    cr_assert_eq(wire_info_to_text(with_bool, sizeof with_bool, text, sizeof text), SHOAL_EFORMAT);
    const uint8_t int_key[] = {0x81, 0x01, 0x01};
    cr_assert_eq(wire_info_to_text(int_key, sizeof int_key, text, sizeof text), SHOAL_EFORMAT);
    cr_assert_eq(wire_info_to_text(NULL, 0, text, sizeof text), SHOAL_EFORMAT);
    wire_info_destroy(&info);
}

Test(wire, info_text_escapes_strings_and_prints_floats_exactly)
{
    wire_info_t *info = wire_info_new();
    wire_info_map(info, 5);
    wire_info_key(info, "q\"uote\\");
    wire_info_str(info, "line\nbreak\t");
    wire_info_key(info, "third");
    wire_info_f64(info, 1.0 / 3.0);
    wire_info_key(info, "big");
    wire_info_u64(info, UINT64_MAX);
    wire_info_key(info, "min");
    wire_info_i64(info, INT64_MIN);
    wire_info_key(info, "inf");
    wire_info_f64(info, -INFINITY);
    cr_assert_eq(wire_info_failed(info), 0);
    char text[256];
    cr_assert_eq(wire_info_to_text(wire_info_data(info), wire_info_len(info), text, sizeof text),
                 0);
    cr_assert_str_eq(text, "{\"q\\\"uote\\\\\": \"line\\u000abreak\\u0009\", "
                           "\"third\": 0.3333333333333333, \"big\": 18446744073709551615, "
                           "\"min\": -9223372036854775808, \"inf\": -Infinity}");
    double v = 0;
    cr_assert_eq(wire_info_lookup(wire_info_data(info), wire_info_len(info), "third", &v), 0);
    cr_assert_eq(v, 1.0 / 3.0);
    wire_info_destroy(&info);
}

/* ------------------------------------------------------------------------ */
/* IVF lists: the insert's lists frame and the shard's list ops             */
/* ------------------------------------------------------------------------ */

Test(wire, insert_lists_frame_round_trips_and_is_optional)
{
    enum { N = 3, DIM = 2 };
    uint64_t ids[N] = {5, 6, 7};
    float vecs[N * DIM];
    s_fill_floats(vecs, N * DIM, 1.0f);
    uint32_t lists[N] = {0, WIRE_LIST_NONE, 4000000000u};
    for (int with = 0; with < 2; with++) {
        wire_request_t req, out;
        wire_frames_t frames;
        wire_request_init(&req);
        req.op = WIRE_OP_INSERT;
        req.rid = 3;
        strcpy(req.coll, "docs");
        req.n = N;
        req.dim = DIM;
        req.ids = ids;
        req.vecs = vecs;
        req.lists = with ? lists : NULL;
        s_request_round_trip(&req, &frames, &out);
        cr_assert_eq(frames.count, with ? 4u : 3u);
        if (with) {
            cr_assert_eq(frames.size[3], N * sizeof(uint32_t));
            cr_assert_eq(out.lists, lists, "an aligned lists frame is used in place");
            cr_assert_eq(memcmp(out.lists, lists, sizeof lists), 0);
        } else {
            cr_assert_null(out.lists, "an insert without the frame has no lists");
        }
        cr_assert_eq(memcmp(out.vecs, vecs, sizeof vecs), 0);
        wire_request_fini(&out);
        wire_frames_fini(&frames);
    }
}

Test(wire, misaligned_lists_frame_is_copied)
{
    uint64_t ids[2] = {1, 2};
    float vecs[2] = {0.5f, -0.5f};
    uint32_t aligned[4];
    uint8_t *raw = (uint8_t *)aligned; /* raw + 1 is then surely misaligned */
    uint32_t lists[2] = {9, 11};
    memcpy(raw + 1, lists, sizeof lists);
    wire_request_t req, out;
    wire_frames_t frames;
    wire_request_init(&req);
    req.op = WIRE_OP_INSERT;
    req.rid = 4;
    strcpy(req.coll, "c");
    req.n = 2;
    req.dim = 1;
    req.ids = ids;
    req.vecs = vecs;
    req.lists = lists;
    shoal_err_t err;
    cr_assert_eq(wire_request_encode(&req, &frames, &err), 0, "%s", err.msg);
    frames.data[3] = raw + 1;
    cr_assert_eq(wire_request_decode(&frames, NULL, &out, &err), 0, "%s", err.msg);
    cr_assert_eq((uintptr_t)out.lists % sizeof(uint32_t), 0);
    cr_assert_eq(out.lists[0], 9);
    cr_assert_eq(out.lists[1], 11);
    cr_assert_not_null(out.owned);
    wire_request_fini(&out);
    wire_frames_fini(&frames);
}

/* An insert may carry the collection's sq8 quantizer record as frame 5, after the lists. */
Test(wire, insert_quantizer_frame_round_trips_and_is_bounded)
{
    uint64_t ids[2] = {1, 2};
    float vecs[4] = {0.5f, -0.5f, 1.0f, 2.0f};
    uint32_t lists[2] = {3, 4};
    uint8_t rec[16 + 8 * 2];
    for (size_t i = 0; i < sizeof rec; i++)
        rec[i] = (uint8_t)(i * 7);
    wire_request_t req, out;
    wire_frames_t frames;
    wire_request_init(&req);
    req.op = WIRE_OP_INSERT;
    req.rid = 5;
    strcpy(req.coll, "c");
    req.n = 2;
    req.dim = 2;
    req.ids = ids;
    req.vecs = vecs;
    req.lists = lists;
    req.quantizer = rec;
    req.quantizer_len = sizeof rec;
    s_request_round_trip(&req, &frames, &out);
    cr_assert_eq(frames.count, 5u);
    cr_assert_eq(out.quantizer_len, sizeof rec);
    cr_assert_eq(memcmp(out.quantizer, rec, sizeof rec), 0);
    cr_assert_eq(memcmp(out.lists, lists, sizeof lists), 0);
    wire_request_fini(&out);
    /* A quantizer frame longer than a record of the insert's dim is refused. */
    shoal_err_t err;
    uint8_t big[16 + 8 * 2 + 1] = {0};
    frames.data[4] = big;
    frames.size[4] = sizeof big;
    cr_assert_eq(wire_request_decode(&frames, NULL, &out, &err), SHOAL_EPROTO);
    cr_assert(strstr(err.msg, "quantizer frame"), "%s", err.msg);
    wire_request_fini(&out);
    wire_frames_fini(&frames);
    /* Without the lists frame there is no quantizer frame. */
    req.lists = NULL;
    cr_assert_eq(wire_request_encode(&req, &frames, &err), SHOAL_EINVAL);
}

Test(wire, list_requests_round_trip)
{
    /* list_counts: just the collection */
    wire_request_t req, out;
    wire_frames_t frames;
    wire_request_init(&req);
    req.op = WIRE_OP_LIST_COUNTS;
    req.rid = 10;
    strcpy(req.coll, "docs");
    s_request_round_trip(&req, &frames, &out);
    cr_assert_eq(frames.count, 1);
    wire_request_fini(&out);
    wire_frames_fini(&frames);

    /* list_export, from the start and from a cursor; list none is a list */
    for (int set = 0; set < 2; set++) {
        wire_request_init(&req);
        req.op = WIRE_OP_LIST_EXPORT;
        req.rid = 11;
        strcpy(req.coll, "docs");
        req.list = set ? WIRE_LIST_NONE : 0;
        req.limit = set ? 1000000 : 1;
        if (set)
            strcpy(req.cursor, "0000002a:00000000000003e8");
        s_request_round_trip(&req, &frames, &out);
        cr_assert_eq(frames.count, 1);
        cr_assert_eq(out.list, req.list);
        cr_assert_eq(out.limit, req.limit);
        cr_assert_str_eq(out.cursor, req.cursor);
        cr_assert_eq(s_header_has(&frames, "cursor"), set);
        wire_request_fini(&out);
        wire_frames_fini(&frames);
    }

    /* list_drop */
    wire_request_init(&req);
    req.op = WIRE_OP_LIST_DROP;
    req.rid = 12;
    strcpy(req.coll, "docs");
    req.list = 77;
    s_request_round_trip(&req, &frames, &out);
    cr_assert_eq(out.list, 77);
    cr_assert(s_header_has(&frames, "list"), "list 0..N is always sent");
    wire_request_fini(&out);
    wire_frames_fini(&frames);

    /* The encoder refuses an export of 0 rows. */
    wire_request_init(&req);
    req.op = WIRE_OP_LIST_EXPORT;
    req.rid = 13;
    strcpy(req.coll, "docs");
    shoal_err_t err;
    cr_assert_eq(wire_request_encode(&req, &frames, &err), SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "limit must be >= 1"), "%s", err.msg);
}

Test(wire, list_replies_round_trip_empty_and_not)
{
    uint32_t lists[3] = {0, 17, WIRE_LIST_NONE};
    uint64_t counts[3] = {5, 1, 1ull << 40};
    for (uint64_t n = 0; n <= 3; n += 3) {
        wire_reply_t rep, out;
        wire_frames_t frames;
        wire_reply_init(&rep);
        rep.op = WIRE_OP_LIST_COUNTS;
        rep.rid = 20;
        rep.n = n;
        rep.lists = n ? lists : NULL;
        rep.counts = n ? counts : NULL;
        s_reply_round_trip(&rep, &frames, &out);
        cr_assert_eq(frames.count, 3);
        cr_assert_eq(out.n, n);
        if (n) {
            cr_assert_eq(memcmp(out.lists, lists, sizeof lists), 0);
            cr_assert_eq(memcmp(out.counts, counts, sizeof counts), 0);
        }
        wire_reply_fini(&out);
        wire_frames_fini(&frames);
    }

    enum { N = 2, DIM = 3 };
    uint64_t ids[N] = {4, 9};
    float vecs[N * DIM];
    s_fill_floats(vecs, N * DIM, -2.0f);
    for (uint64_t n = 0; n <= N; n += N) {
        wire_reply_t rep, out;
        wire_frames_t frames;
        wire_reply_init(&rep);
        rep.op = WIRE_OP_LIST_EXPORT;
        rep.rid = 21;
        rep.n = n;
        rep.dim = DIM;
        rep.ids = n ? ids : NULL;
        rep.vecs = n ? vecs : NULL;
        rep.done = n ? 0 : 1;
        strcpy(rep.cursor, n ? "00000001:0000000000000009" : "");
        s_reply_round_trip(&rep, &frames, &out);
        cr_assert_eq(out.n, n);
        cr_assert_eq(out.dim, DIM);
        cr_assert_eq(out.done, rep.done);
        cr_assert_str_eq(out.cursor, rep.cursor);
        if (n) {
            cr_assert_eq(memcmp(out.ids, ids, sizeof ids), 0);
            cr_assert_eq(memcmp(out.vecs, vecs, sizeof vecs), 0, "vectors are carried bit for bit");
        }
        wire_reply_fini(&out);
        wire_frames_fini(&frames);
    }

    wire_reply_t rep, out;
    wire_frames_t frames;
    wire_reply_init(&rep);
    rep.op = WIRE_OP_LIST_DROP;
    rep.rid = 22;
    rep.count = 123;
    rep.seq = 9;
    s_reply_round_trip(&rep, &frames, &out);
    cr_assert_eq(out.count, 123);
    cr_assert_eq(out.seq, 9);
    wire_reply_fini(&out);
    wire_frames_fini(&frames);
}

Test(wire, malformed_list_replies_are_refused)
{
    uint64_t ids[2] = {4, 9};
    float vecs[4] = {1, 2, 3, 4};
    wire_reply_t rep, out;
    wire_frames_t frames;
    shoal_err_t err;

    /* An export reply whose vectors frame lost a float. */
    wire_reply_init(&rep);
    rep.op = WIRE_OP_LIST_EXPORT;
    rep.rid = 30;
    rep.n = 2;
    rep.dim = 2;
    rep.ids = ids;
    rep.vecs = vecs;
    strcpy(rep.cursor, "x");
    cr_assert_eq(wire_reply_encode(&rep, &frames, &err), 0, "%s", err.msg);
    frames.size[2] -= sizeof(float);
    cr_assert_eq(wire_reply_decode(&frames, NULL, &out, &err), SHOAL_EPROTO);
    cr_assert(strstr(err.msg, "frame 2 has 12 bytes, expected 16"), "%s", err.msg);
    wire_reply_fini(&out);
    wire_frames_fini(&frames);

    /* n over max_batch, told before any frame is sized from it. */
    wire_limits_t lim = wire_limits_default();
    lim.max_batch = 1;
    cr_assert_eq(wire_reply_encode(&rep, &frames, &err), 0, "%s", err.msg);
    cr_assert_eq(wire_reply_decode(&frames, &lim, &out, &err), SHOAL_ELIMIT);
    cr_assert(strstr(err.msg, "\"n\" must be 0..1, got 2"), "%s", err.msg);
    wire_reply_fini(&out);
    wire_frames_fini(&frames);

    /* The encoder refuses done = 2 and dim = 0. */
    rep.done = 2;
    cr_assert_eq(wire_reply_encode(&rep, &frames, &err), SHOAL_EINVAL);
    rep.done = 0;
    rep.dim = 0;
    cr_assert_eq(wire_reply_encode(&rep, &frames, &err), SHOAL_EINVAL);

    /* list_counts with a counts frame one entry short. */
    uint32_t lists[2] = {1, 2};
    uint64_t counts[2] = {3, 4};
    wire_reply_init(&rep);
    rep.op = WIRE_OP_LIST_COUNTS;
    rep.rid = 31;
    rep.n = 2;
    rep.lists = lists;
    rep.counts = counts;
    cr_assert_eq(wire_reply_encode(&rep, &frames, &err), 0, "%s", err.msg);
    frames.size[2] = sizeof(uint64_t);
    cr_assert_eq(wire_reply_decode(&frames, NULL, &out, &err), SHOAL_EPROTO);
    cr_assert(strstr(err.msg, "frame 2 has 8 bytes, expected 16"), "%s", err.msg);
    wire_reply_fini(&out);
    wire_frames_fini(&frames);
}

/* ------------------------------------------------------------------------ */
/* Cluster growth: shard_add, shard_drain, shard_remove, rebalance          */
/* ------------------------------------------------------------------------ */

Test(wire, shard_ops_round_trip_their_endpoint)
{
    const wire_op_t ops[] = {WIRE_OP_SHARD_ADD, WIRE_OP_SHARD_DRAIN, WIRE_OP_SHARD_REMOVE};
    const char *names[] = {"shard_add", "shard_drain", "shard_remove"};
    char longest[WIRE_ENDPOINT_MAX + 1];
    memset(longest, 'e', WIRE_ENDPOINT_MAX);
    longest[WIRE_ENDPOINT_MAX] = '\0';
    for (size_t i = 0; i < 3; i++) {
        cr_assert_str_eq(wire_op_name(ops[i]), names[i]);
        cr_assert_eq(wire_op_parse(names[i], strlen(names[i])), ops[i]);
        for (int big = 0; big < 2; big++) {
            wire_request_t req, out;
            wire_frames_t frames;
            wire_request_init(&req);
            req.op = ops[i];
            req.rid = 40 + i;
            snprintf(req.endpoint, sizeof req.endpoint, "%s",
                     big ? longest : "tcp://10.0.0.4:7702");
            s_request_round_trip(&req, &frames, &out);
            cr_assert_eq(frames.count, 1);
            cr_assert_str_eq(out.endpoint, req.endpoint);
            cr_assert_str_empty(out.coll, "the cluster ops take no collection");
            cr_assert_not(s_header_has(&frames, "coll"));
            wire_request_fini(&out);
            wire_frames_fini(&frames);
        }
    }
}

Test(wire, rebalance_round_trips_and_sends_only_what_is_set)
{
    cr_assert_str_eq(wire_op_name(WIRE_OP_REBALANCE), "rebalance");
    for (int set = 0; set < 2; set++) {
        wire_request_t req, out;
        wire_frames_t frames;
        wire_request_init(&req);
        req.op = WIRE_OP_REBALANCE;
        req.rid = 50;
        if (set) {
            req.dry_run = 1;
            req.max_moves = UINT32_MAX;
            req.rate_mb = 40;
        }
        s_request_round_trip(&req, &frames, &out);
        cr_assert_eq(frames.count, 1);
        cr_assert_eq(out.dry_run, req.dry_run);
        cr_assert_eq(out.max_moves, req.max_moves);
        cr_assert_eq(out.rate_mb, req.rate_mb);
        /* 0 is each key's default, so 0 is not sent (section 11's rule) */
        cr_assert_eq(s_header_has(&frames, "dry_run"), set);
        cr_assert_eq(s_header_has(&frames, "max_moves"), set);
        cr_assert_eq(s_header_has(&frames, "rate_mb"), set);
        wire_request_fini(&out);
        wire_frames_fini(&frames);
    }
}

Test(wire, encode_refuses_bad_cluster_requests)
{
    wire_request_t req;
    wire_frames_t frames;
    shoal_err_t err;

    wire_request_init(&req);
    req.op = WIRE_OP_SHARD_ADD;
    cr_assert_eq(wire_request_encode(&req, &frames, &err), SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "shard_add: needs an endpoint"), "%s", err.msg);

    req.op = WIRE_OP_SHARD_DRAIN;
    strcpy(req.endpoint, "tcp://h2:7702\n");
    cr_assert_eq(wire_request_encode(&req, &frames, &err), SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "\"endpoint\" has a byte outside printable ASCII"), "%s", err.msg);

    req.op = WIRE_OP_SHARD_REMOVE;
    memset(req.endpoint, 'e', sizeof req.endpoint); /* no NUL */
    cr_assert_eq(wire_request_encode(&req, &frames, &err), SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "not NUL-terminated"), "%s", err.msg);

    wire_request_init(&req);
    req.op = WIRE_OP_REBALANCE;
    req.dry_run = 2;
    cr_assert_eq(wire_request_encode(&req, &frames, &err), SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "rebalance: dry_run must be 0 or 1, got 2"), "%s", err.msg);
}

Test(wire, cluster_replies_carry_info_and_need_it)
{
    wire_info_t *plan = s_plan_info();
    const wire_op_t ops[] = {WIRE_OP_SHARD_ADD, WIRE_OP_SHARD_DRAIN, WIRE_OP_SHARD_REMOVE,
                             WIRE_OP_REBALANCE};
    for (size_t i = 0; i < 4; i++) {
        wire_reply_t rep, out;
        wire_frames_t frames;
        wire_reply_init(&rep);
        rep.op = ops[i];
        rep.rid = 60 + i;
        rep.info = wire_info_data(plan);
        rep.info_len = wire_info_len(plan);
        s_reply_round_trip(&rep, &frames, &out);
        cr_assert_eq(frames.count, 1);
        cr_assert_eq(out.info_len, rep.info_len);
        cr_assert_eq(memcmp(out.info, rep.info, rep.info_len), 0);
        char text[1024];
        cr_assert_eq(wire_info_to_text(out.info, out.info_len, text, sizeof text), 0);
        cr_assert_str_eq(text, S_PLAN_TEXT);
        wire_reply_fini(&out);
        wire_frames_fini(&frames);

        /* like stats, a successful reply must carry its info map */
        shoal_err_t err;
        rep.info = NULL;
        rep.info_len = 0;
        cr_assert_eq(wire_reply_encode(&rep, &frames, &err), SHOAL_EINVAL);
        cr_assert(strstr(err.msg, "needs an info map"), "%s", err.msg);

        /* an error reply needs none */
        wire_reply_error(&rep, ops[i], 70, SHOAL_ENOTFOUND, "no shard tcp://h9:7702");
        s_reply_round_trip(&rep, &frames, &out);
        cr_assert_null(out.info);
        wire_reply_fini(&out);
        wire_frames_fini(&frames);
    }
    wire_info_destroy(&plan);
}

/* ------------------------------------------------------------------------ */
/* Arrays in the info map                                                   */
/* ------------------------------------------------------------------------ */

Test(wire, info_arrays_render_and_are_reached_by_index)
{
    wire_info_t *info = s_plan_info();
    const void *data = wire_info_data(info);
    size_t len = wire_info_len(info);
    char text[1024];
    cr_assert_eq(wire_info_to_text(data, len, text, sizeof text), 0);
    cr_assert_str_eq(text, S_PLAN_TEXT);

    double v = 0;
    cr_assert_eq(wire_info_lookup(data, len, "a.1.b", &v), 0);
    cr_assert_eq(v, 7.0);
    cr_assert_eq(wire_info_lookup(data, len, "a.0", &v), 0);
    cr_assert_eq(v, 5.0);
    cr_assert_eq(wire_info_lookup(data, len, "plan.1.list", &v), 0);
    cr_assert_eq(v, 17.0);
    cr_assert_eq(wire_info_lookup(data, len, "mixed.0", &v), 0);
    cr_assert_eq(v, -2.0);
    cr_assert_eq(wire_info_lookup(data, len, "mixed.1", &v), 0);
    cr_assert_eq(v, 0.5);
    cr_assert_eq(wire_info_lookup(data, len, "mixed.3.0", &v), 0, "arrays nest");
    cr_assert_eq(v, 1.0);
    cr_assert_eq(wire_info_lookup(data, len, "plan", &v), SHOAL_EFORMAT, "an array is no number");
    cr_assert_eq(wire_info_lookup(data, len, "plan.0", &v), SHOAL_EFORMAT);
    /* past the end, not an index, a key below an array, an index below a number */
    cr_assert_eq(wire_info_lookup(data, len, "plan.2.list", &v), SHOAL_ENOTFOUND);
    cr_assert_eq(wire_info_lookup(data, len, "plan.x.list", &v), SHOAL_ENOTFOUND);
    cr_assert_eq(wire_info_lookup(data, len, "plan.-1.list", &v), SHOAL_ENOTFOUND);
    cr_assert_eq(wire_info_lookup(data, len, "plan.+1.list", &v), SHOAL_ENOTFOUND);
    cr_assert_eq(wire_info_lookup(data, len, "plan..list", &v), SHOAL_ENOTFOUND);
    cr_assert_eq(wire_info_lookup(data, len, "plan.99999999999.list", &v), SHOAL_ENOTFOUND);
    cr_assert_eq(wire_info_lookup(data, len, "plan.4294967296.list", &v), SHOAL_ENOTFOUND);
    cr_assert_eq(wire_info_lookup(data, len, "empty.0", &v), SHOAL_ENOTFOUND);
    cr_assert_eq(wire_info_lookup(data, len, "moves.0", &v), SHOAL_ENOTFOUND);

    char str[32];
    cr_assert_eq(wire_info_lookup_str(data, len, "plan.0.from", str, sizeof str), 0);
    cr_assert_str_eq(str, "tcp://h1:7702");
    cr_assert_eq(wire_info_lookup_str(data, len, "plan.1.coll", str, sizeof str), 0);
    cr_assert_str_eq(str, "img");
    cr_assert_eq(wire_info_lookup_str(data, len, "mixed.2", str, sizeof str), 0);
    cr_assert_str_eq(str, "x");
    cr_assert_eq(wire_info_lookup_str(data, len, "plan.1", str, sizeof str), SHOAL_EFORMAT);

    size_t n = 99;
    cr_assert_eq(wire_info_lookup_len(data, len, "plan", &n), 0);
    cr_assert_eq(n, 2);
    cr_assert_eq(wire_info_lookup_len(data, len, "plan.0", &n), 0, "a map has a length too");
    cr_assert_eq(n, 6);
    cr_assert_eq(wire_info_lookup_len(data, len, "a.1", &n), 0);
    cr_assert_eq(n, 1);
    cr_assert_eq(wire_info_lookup_len(data, len, "mixed", &n), 0);
    cr_assert_eq(n, 4);
    cr_assert_eq(wire_info_lookup_len(data, len, "mixed.3", &n), 0);
    cr_assert_eq(n, 1);
    n = 99;
    cr_assert_eq(wire_info_lookup_len(data, len, "empty", &n), 0);
    cr_assert_eq(n, 0);
    cr_assert_eq(wire_info_lookup_len(data, len, "moves", &n), SHOAL_EFORMAT);
    cr_assert_eq(wire_info_lookup_len(data, len, "plan.0.coll", &n), SHOAL_EFORMAT);
    cr_assert_eq(wire_info_lookup_len(data, len, "nope", &n), SHOAL_ENOTFOUND);
    cr_assert_eq(wire_info_lookup_len(data, len, "plan.5", &n), SHOAL_ENOTFOUND);
    cr_assert_eq(wire_info_lookup_len(data, len - 1, "plan", &n), SHOAL_EFORMAT);
    cr_assert_eq(wire_info_lookup_len(data, len, NULL, &n), SHOAL_EINVAL);

    /* too small a buffer cuts inside an array: a prefix and ELIMIT */
    char small[40];
    cr_assert_eq(wire_info_to_text(data, len, small, sizeof small), SHOAL_ELIMIT);
    cr_assert_eq(strncmp(small, S_PLAN_TEXT, sizeof small - 1), 0);
    wire_info_destroy(&info);
}

Test(wire, info_arrays_hold_only_the_kinds_a_map_holds)
{
    char text[64];
    size_t n = 0;
    /* {"a": [1, "s", {"b": [2]}]}: fine */
    const uint8_t good[] = {0x81, 0xa1, 'a', 0x93, 0x01, 0xa1, 's', 0x81, 0xa1, 'b', 0x91, 0x02};
    cr_assert_eq(wire_info_to_text(good, sizeof good, text, sizeof text), 0);
    cr_assert_str_eq(text, "{\"a\": [1, \"s\", {\"b\": [2]}]}");
    cr_assert_eq(wire_info_lookup_len(good, sizeof good, "a.2.b", &n), 0);
    cr_assert_eq(n, 1);
    /* a nil, a bool or a binary in an array, even nested, is refused like in a map */
    const uint8_t with_nil[] = {0x81, 0xa1, 'a', 0x92, 0x01, 0xc0};
    const uint8_t with_bin[] = {0x81, 0xa1, 'a', 0x91, 0xc4, 0x01, 0x00};
    const uint8_t deep_bool[] = {0x81, 0xa1, 'a', 0x91, 0x91, 0xc2};
    const uint8_t map_int_key[] = {0x81, 0xa1, 'a', 0x91, 0x81, 0x01, 0x01};
    cr_assert_eq(wire_info_to_text(with_nil, sizeof with_nil, text, sizeof text), SHOAL_EFORMAT);
    cr_assert_eq(wire_info_to_text(with_bin, sizeof with_bin, text, sizeof text), SHOAL_EFORMAT);
    cr_assert_eq(wire_info_to_text(deep_bool, sizeof deep_bool, text, sizeof text), SHOAL_EFORMAT);
    cr_assert_eq(wire_info_to_text(map_int_key, sizeof map_int_key, text, sizeof text),
                 SHOAL_EFORMAT);
    /* the top level stays a map */
    const uint8_t top_array[] = {0x91, 0x01};
    cr_assert_eq(wire_info_to_text(top_array, sizeof top_array, text, sizeof text), SHOAL_EFORMAT);

    /* a reply whose info holds a bad array is refused both ways */
    wire_reply_t rep;
    wire_frames_t frames;
    shoal_err_t err;
    wire_reply_init(&rep);
    rep.op = WIRE_OP_REBALANCE;
    rep.rid = 80;
    rep.info = with_nil;
    rep.info_len = sizeof with_nil;
    cr_assert_eq(wire_reply_encode(&rep, &frames, &err), SHOAL_EINVAL);
    rep.info = good;
    rep.info_len = sizeof good;
    cr_assert_eq(wire_reply_encode(&rep, &frames, &err), 0, "%s", err.msg);
    /* swap the 1 for a nil in the encoded header: the decoder refuses it */
    uint8_t *head = (uint8_t *)frames.owned_header;
    size_t voff = 0, vlen = 0;
    cr_assert(wire_mp_find_value(head, frames.size[0], "info", &voff, &vlen));
    cr_assert_eq(vlen, sizeof good);
    cr_assert_eq(head[voff + 4], 0x01);
    head[voff + 4] = 0xc0;
    wire_reply_t out;
    cr_assert_eq(wire_reply_decode(&frames, NULL, &out, &err), SHOAL_EPROTO);
    cr_assert(strstr(err.msg, "\"info\" must be a map"), "%s", err.msg);
    wire_reply_fini(&out);
    wire_frames_fini(&frames);
}

/* ------------------------------------------------------------------------ */
/* Recall targets                                                           */
/* ------------------------------------------------------------------------ */

Test(wire, recall_targets_round_trip_and_are_sent_only_when_set)
{
    float q[4] = {1, 2, 3, 4};
    for (int set = 0; set < 2; set++) {
        wire_request_t req, out;
        wire_frames_t frames;
        wire_request_init(&req);
        req.op = WIRE_OP_SEARCH;
        req.rid = 60;
        snprintf(req.coll, sizeof req.coll, "c");
        req.n = 1;
        req.dim = 4;
        req.vecs = q;
        req.k = 10;
        req.recall = set ? 0.95 : 0;
        s_request_round_trip(&req, &frames, &out);
        cr_assert_eq(out.recall, req.recall);
        cr_assert_eq(s_header_has(&frames, "recall"), set);
        wire_request_fini(&out);
        wire_frames_fini(&frames);

        wire_request_init(&req);
        req.op = WIRE_OP_CREATE_COLLECTION;
        req.rid = 61;
        snprintf(req.coll, sizeof req.coll, "c");
        req.dim = 4;
        req.target_recall = set ? 0.9 : 0;
        req.storage = set ? WIRE_STORAGE_GIVEN | 2u : 0; /* sq8 */
        s_request_round_trip(&req, &frames, &out);
        cr_assert_eq(out.target_recall, req.target_recall);
        cr_assert_eq(s_header_has(&frames, "target_recall"), set);
        cr_assert_eq(out.storage, req.storage);
        cr_assert_eq(s_header_has(&frames, "storage"), set);
        wire_request_fini(&out);
        wire_frames_fini(&frames);

        /* The reply says the setting that ran and its calibrated recall. */
        uint64_t ids[1] = {3};
        float dists[1] = {0.5f};
        wire_reply_t rep, rout;
        s_search_reply(&rep, 62, 1, 1, WIRE_MODE_HNSW, ids, dists);
        if (set) {
            rep.nprobe_used = 8;
            rep.ef_used = 32;
            rep.recall = 0.9650;
        }
        s_reply_round_trip(&rep, &frames, &rout);
        cr_assert_eq(rout.nprobe_used, rep.nprobe_used);
        cr_assert_eq(rout.ef_used, rep.ef_used);
        cr_assert_eq(rout.recall, rep.recall);
        cr_assert_eq(s_header_has(&frames, "nprobe"), set);
        wire_reply_fini(&rout);
        wire_frames_fini(&frames);
    }
    /* The encoder refuses what the decoder would. */
    wire_request_t req;
    wire_frames_t frames;
    shoal_err_t err;
    wire_request_init(&req);
    req.op = WIRE_OP_SEARCH;
    snprintf(req.coll, sizeof req.coll, "c");
    req.n = 1;
    req.dim = 4;
    req.vecs = q;
    req.k = 10;
    req.recall = 1.25;
    cr_assert_eq(wire_request_encode(&req, &frames, &err), SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "recall"), "%s", err.msg);
}
