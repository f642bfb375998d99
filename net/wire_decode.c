/*
 * wire_decode.c - the wire codec's decoding half: frames to requests and
 * replies (wire_request_decode, wire_reply_decode). docs/protocol.md is the
 * specification; wire.h the contract.
 *
 * Decoding runs in one fixed order so that nothing from the wire is believed
 * before it is checked:
 *   1. frame count and the total size, from the frame lengths alone;
 *   2. the header's size, then a structural walk of its msgpack bytes
 *      (wire_mp.c: complete, counts possible, nesting bounded), and only
 *      then msgpack_unpack, which allocates from the counts it reads;
 *   3. keys collected by name (duplicates rejected, unknown ones ignored);
 *      "rid" and "op" picked out first, from any frame 0 that begins with a
 *      complete map (even when step 1 or the rest of step 3 refuses the
 *      message), so an error reply can be addressed;
 *   4. version, then the op's keys: type, presence, range against the limits;
 *   5. frame count for the op, each bulk frame's length against the counts
 *      (products computed with overflow checks);
 *   6. bulk pointers bound: zero copy when aligned, else one owned copy.
 *
 * Considered and rejected: decoding with our own msgpack reader and no
 * msgpack-c at all (the walk in step 2 is most of one). msgpack-c stays the
 * reader, the walk only guards it, so there is one parser of record.
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
/* Decoding: the header                                                     */
/* ------------------------------------------------------------------------ */

/* Every header key either direction knows; a direction ignores the others. */
typedef enum {
    S_KEY_V,
    S_KEY_OP,
    S_KEY_RID,
    S_KEY_COLL,
    S_KEY_DIM,
    S_KEY_METRIC,
    S_KEY_M,
    S_KEY_EF_CONSTRUCTION,
    S_KEY_N,
    S_KEY_K,
    S_KEY_MODE,
    S_KEY_EF,
    S_KEY_NFILTER,
    S_KEY_CODE,
    S_KEY_ERR,
    S_KEY_MSG,
    S_KEY_COUNT,
    S_KEY_SEQ,
    S_KEY_INFO,
    /* the coordinator's (docs/protocol.md section 11) */
    S_KEY_NLIST,
    S_KEY_INIT,
    S_KEY_MAX_ITERS,
    S_KEY_SEED,
    S_KEY_NPROBE,
    S_KEY_DEADLINE_MS,
    S_KEY_CHUNK,
    S_KEY_CURSOR,
    S_KEY_PARTIAL,
    S_KEY_MISSING,
    S_KEY_FANOUT,
    S_KEY_TOTAL,
    S_KEY_REPLICATION,
    S_KEY_WRITE_QUORUM,
    /* a shard's list ops (docs/protocol.md sections 4.10-4.12) */
    S_KEY_LIST,
    S_KEY_LIMIT,
    S_KEY_DONE,
    /* cluster growth at the coordinator (docs/protocol.md section 11.9) */
    S_KEY_ENDPOINT,
    S_KEY_DRY_RUN,
    S_KEY_MAX_MOVES,
    S_KEY_RATE_MB,
    /* recall-targeted search (docs/protocol.md section 11.10) */
    S_KEY_RECALL,
    S_KEY_TARGET_RECALL,
    /* snapshots (docs/protocol.md 4.13, 11.10) */
    S_KEY_NAME,
    S_KEY_STORAGE,
    S_NKEYS
} s_key_t;

static const char *const s_key_names[S_NKEYS] = {
    [S_KEY_V] = "v",
    [S_KEY_OP] = "op",
    [S_KEY_RID] = "rid",
    [S_KEY_COLL] = "coll",
    [S_KEY_DIM] = "dim",
    [S_KEY_METRIC] = "metric",
    [S_KEY_M] = "M",
    [S_KEY_EF_CONSTRUCTION] = "ef_construction",
    [S_KEY_N] = "n",
    [S_KEY_K] = "k",
    [S_KEY_MODE] = "mode",
    [S_KEY_EF] = "ef",
    [S_KEY_NFILTER] = "nfilter",
    [S_KEY_CODE] = "code",
    [S_KEY_ERR] = "err",
    [S_KEY_MSG] = "msg",
    [S_KEY_COUNT] = "count",
    [S_KEY_SEQ] = "seq",
    [S_KEY_INFO] = "info",
    [S_KEY_NLIST] = "nlist",
    [S_KEY_INIT] = "init",
    [S_KEY_MAX_ITERS] = "max_iters",
    [S_KEY_SEED] = "seed",
    [S_KEY_NPROBE] = "nprobe",
    [S_KEY_DEADLINE_MS] = "deadline_ms",
    [S_KEY_CHUNK] = "chunk",
    [S_KEY_CURSOR] = "cursor",
    [S_KEY_PARTIAL] = "partial",
    [S_KEY_MISSING] = "missing",
    [S_KEY_FANOUT] = "fanout",
    [S_KEY_TOTAL] = "total",
    [S_KEY_REPLICATION] = "replication",
    [S_KEY_WRITE_QUORUM] = "write_quorum",
    [S_KEY_LIST] = "list",
    [S_KEY_LIMIT] = "limit",
    [S_KEY_DONE] = "done",
    [S_KEY_ENDPOINT] = "endpoint",
    [S_KEY_DRY_RUN] = "dry_run",
    [S_KEY_MAX_MOVES] = "max_moves",
    [S_KEY_RATE_MB] = "rate_mb",
    [S_KEY_RECALL] = "recall",
    [S_KEY_TARGET_RECALL] = "target_recall",
    [S_KEY_NAME] = "name",
    [S_KEY_STORAGE] = "storage",
};

/* The key sets below are bit masks over s_key_t. */
_Static_assert(S_NKEYS <= 64, "s_key_t must fit a uint64_t mask");

#define S_BIT(key) ((uint64_t)1 << (key))
#define S_REQUEST_KEYS                                                                             \
    (S_BIT(S_KEY_V) | S_BIT(S_KEY_OP) | S_BIT(S_KEY_RID) | S_BIT(S_KEY_COLL) | S_BIT(S_KEY_DIM) |  \
     S_BIT(S_KEY_METRIC) | S_BIT(S_KEY_M) | S_BIT(S_KEY_EF_CONSTRUCTION) | S_BIT(S_KEY_N) |        \
     S_BIT(S_KEY_K) | S_BIT(S_KEY_MODE) | S_BIT(S_KEY_EF) | S_BIT(S_KEY_NFILTER) |                 \
     S_BIT(S_KEY_NLIST) | S_BIT(S_KEY_INIT) | S_BIT(S_KEY_MAX_ITERS) | S_BIT(S_KEY_SEED) |         \
     S_BIT(S_KEY_NPROBE) | S_BIT(S_KEY_DEADLINE_MS) | S_BIT(S_KEY_CHUNK) | S_BIT(S_KEY_CURSOR) |   \
     S_BIT(S_KEY_LIST) | S_BIT(S_KEY_LIMIT) | S_BIT(S_KEY_REPLICATION) |                           \
     S_BIT(S_KEY_WRITE_QUORUM) | S_BIT(S_KEY_ENDPOINT) | S_BIT(S_KEY_DRY_RUN) |                    \
     S_BIT(S_KEY_MAX_MOVES) | S_BIT(S_KEY_RATE_MB) | S_BIT(S_KEY_RECALL) |                        \
     S_BIT(S_KEY_TARGET_RECALL) | S_BIT(S_KEY_NAME) | S_BIT(S_KEY_STORAGE))
#define S_REPLY_KEYS                                                                               \
    (S_BIT(S_KEY_V) | S_BIT(S_KEY_OP) | S_BIT(S_KEY_RID) | S_BIT(S_KEY_CODE) | S_BIT(S_KEY_ERR) |  \
     S_BIT(S_KEY_MSG) | S_BIT(S_KEY_N) | S_BIT(S_KEY_K) | S_BIT(S_KEY_DIM) | S_BIT(S_KEY_MODE) |   \
     S_BIT(S_KEY_COUNT) | S_BIT(S_KEY_SEQ) | S_BIT(S_KEY_INFO) | S_BIT(S_KEY_PARTIAL) |            \
     S_BIT(S_KEY_MISSING) | S_BIT(S_KEY_FANOUT) | S_BIT(S_KEY_CURSOR) | S_BIT(S_KEY_TOTAL) |      \
     S_BIT(S_KEY_DONE) | S_BIT(S_KEY_NPROBE) | S_BIT(S_KEY_EF) | S_BIT(S_KEY_RECALL))

/* One decode in progress. */
typedef struct {
    const wire_frames_t *frames;        /* what is being decoded */
    wire_limits_t lim;                  /* limits in force */
    shoal_err_t *err;                   /* where failures are described (may be NULL) */
    char prefix[32];                    /* "search: " once the op is known, else "" */
    msgpack_zone zone;                  /* holds the unpacked header */
    bool zone_live;                     /* zone needs destroying */
    msgpack_object root;                /* the header map */
    const msgpack_object *val[S_NKEYS]; /* each known key's value (its first), NULL if absent */
    uint64_t dups;                      /* known keys seen more than once (S_BIT mask) */
    const msgpack_object *dup_name;     /* the first key, known or not, seen twice, or NULL */
    bool map_read;                      /* root is the header map and val[] is filled */
} s_dec_t;

static int s_fail(s_dec_t *d, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Records code and "<op>: <message>"; returns code. */
static int s_fail(s_dec_t *d, int code, const char *fmt, ...)
{
    char text[SHOAL_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    return shoal_err_set(d->err, code, "%s%s", d->prefix, text);
}

static void s_dec_init(s_dec_t *d, const wire_frames_t *frames, const wire_limits_t *limits,
                       shoal_err_t *err)
{
    memset(d, 0, sizeof *d);
    d->frames = frames;
    d->lim = limits ? *limits : wire_limits_default();
    d->err = err;
    shoal_err_clear(err);
}

static void s_dec_fini(s_dec_t *d)
{
    if (d->zone_live)
        msgpack_zone_destroy(&d->zone);
    d->zone_live = false;
}

static void s_dec_set_op(s_dec_t *d, wire_op_t op)
{
    snprintf(d->prefix, sizeof d->prefix, "%s: ", wire_op_name(op));
}

/* Step 1: the frame count and the total size, from the frame lengths alone. */
static int s_dec_sizes(s_dec_t *d)
{
    const wire_frames_t *f = d->frames;
    if (f->count == 0)
        return s_fail(d, SHOAL_EPROTO, "empty message: no header frame");
    if (f->count > WIRE_FRAMES_MAX)
        return s_fail(d, SHOAL_EPROTO, "message has %zu frames, at most %d are allowed", f->count,
                      WIRE_FRAMES_MAX);
    size_t total = 0;
    for (size_t i = 0; i < f->count; i++) {
        if (!f->data[i] && f->size[i] > 0)
            return s_fail(d, SHOAL_EINVAL, "frame %zu has %zu bytes but no data", i, f->size[i]);
        if (__builtin_add_overflow(total, f->size[i], &total))
            return s_fail(d, SHOAL_ELIMIT, "message size overflows size_t");
    }
    if (total > d->lim.max_message_bytes)
        return s_fail(d, SHOAL_ELIMIT, "message has %zu bytes, the limit is %zu", total,
                      d->lim.max_message_bytes);
    return 0;
}

/* Two keys of the header map (msgpack str objects) are the same string. */
static bool s_same_key(const msgpack_object *a, const msgpack_object *b)
{
    return a->via.str.size == b->via.str.size &&
           memcmp(a->via.str.ptr, b->via.str.ptr, a->via.str.size) == 0;
}

/*
 * Steps 2 and 3: frame 0's size and structure, then its keys collected. The
 * keys are collected before trailing bytes, the key count and the key types
 * are judged, so that "rid" and "op" can address the error reply whenever
 * frame 0 begins with a complete map (d->map_read; section 6 of the spec).
 */
static int s_dec_map(s_dec_t *d, uint64_t known_keys)
{
    const wire_frames_t *f = d->frames;
    const uint8_t *data = f->count ? f->data[0] : NULL;
    size_t len = f->count ? f->size[0] : 0;
    if (len == 0 || !data)
        return s_fail(d, SHOAL_EPROTO, "empty header frame (expected a msgpack map)");
    if (len > WIRE_HEADER_MAX_BYTES)
        return s_fail(d, SHOAL_ELIMIT, "header has %zu bytes, the limit is %u", len,
                      WIRE_HEADER_MAX_BYTES);
    size_t end = 0;
    int rc = wire_mp_skip(data, len, &end, WIRE_DEPTH_MAX);
    if (rc == WIRE_MP_TOO_DEEP)
        return s_fail(d, SHOAL_ELIMIT, "msgpack header is nested deeper than %d levels",
                      WIRE_DEPTH_MAX);
    if (rc != WIRE_MP_OK)
        return s_fail(d, SHOAL_EPROTO, "truncated or malformed msgpack header (%zu bytes)", len);

    if (!msgpack_zone_init(&d->zone, 2048))
        return s_fail(d, SHOAL_ENOMEM, "out of memory unpacking the header");
    d->zone_live = true;
    size_t off = 0;
    msgpack_unpack_return ur = msgpack_unpack((const char *)data, end, &off, &d->zone, &d->root);
    if (ur == MSGPACK_UNPACK_NOMEM_ERROR)
        return s_fail(d, SHOAL_ENOMEM, "out of memory unpacking the header");
    if (ur != MSGPACK_UNPACK_SUCCESS || off != end)
        return s_fail(d, SHOAL_EPROTO, "truncated or malformed msgpack header (%zu bytes)", len);
    if (d->root.type != MSGPACK_OBJECT_MAP)
        return s_fail(d, SHOAL_EPROTO, "header is a msgpack %s, expected a map",
                      wire_mp_type_name(&d->root));

    const msgpack_object_map *map = &d->root.via.map;
    uint32_t bad_key = UINT32_MAX; /* the first key that is not a str */
    for (uint32_t i = 0; i < map->size; i++) {
        const msgpack_object *key = &map->ptr[i].key;
        if (key->type != MSGPACK_OBJECT_STR) {
            if (bad_key == UINT32_MAX)
                bad_key = i;
            continue;
        }
        for (int k = 0; k < S_NKEYS; k++) {
            if (!(known_keys & S_BIT(k)) || strlen(s_key_names[k]) != key->via.str.size ||
                memcmp(s_key_names[k], key->via.str.ptr, key->via.str.size) != 0)
                continue;
            if (d->val[k])
                d->dups |= S_BIT(k);
            else
                d->val[k] = &map->ptr[i].val;
        }
    }
    d->map_read = true;

    if (end != len)
        return s_fail(d, SHOAL_EPROTO, "header has %zu trailing bytes after the map", len - end);
    if (map->size > WIRE_HEADER_KEYS_MAX)
        return s_fail(d, SHOAL_ELIMIT, "header map has %" PRIu32 " keys, at most %d", map->size,
                      WIRE_HEADER_KEYS_MAX);
    if (bad_key != UINT32_MAX)
        return s_fail(d, SHOAL_EPROTO, "header key %" PRIu32 " has type %s, expected str", bad_key,
                      wire_mp_type_name(&map->ptr[bad_key].key));
    /* Any key given twice, known or not (at most 64 keys: the pairs are cheap);
     * reported after "rid" and "op" are picked out (s_check_dup). */
    for (uint32_t i = 0; i < map->size && !d->dup_name; i++)
        for (uint32_t j = i + 1; j < map->size && !d->dup_name; j++)
            if (s_same_key(&map->ptr[i].key, &map->ptr[j].key))
                d->dup_name = &map->ptr[i].key;
    return 0;
}

/*
 * Steps 1 to 3. When step 1 refuses the message, frame 0 is still read,
 * silently and under its own limits, so that the error reply can carry the
 * request's op and rid.
 */
static int s_dec_header(s_dec_t *d, uint64_t known_keys)
{
    int rc = s_dec_sizes(d);
    if (rc == 0)
        return s_dec_map(d, known_keys);
    shoal_err_t *keep = d->err;
    d->err = NULL;
    (void)s_dec_map(d, known_keys);
    d->err = keep;
    return rc;
}

/* The getters return 0 (value stored, or absent and optional) or a code. */

static int s_get_uint(s_dec_t *d, s_key_t key, bool required, uint64_t *out)
{
    const msgpack_object *o = d->val[key];
    if (!o)
        return required ? s_fail(d, SHOAL_EPROTO, "missing required key \"%s\"", s_key_names[key])
                        : 0;
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        return s_fail(d, SHOAL_EPROTO, "\"%s\" must be an unsigned integer, got %" PRId64,
                      s_key_names[key], o->via.i64);
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return s_fail(d, SHOAL_EPROTO, "\"%s\" has type %s, expected unsigned integer",
                      s_key_names[key], wire_mp_type_name(o));
    *out = o->via.u64;
    return 0;
}

static int s_get_str(s_dec_t *d, s_key_t key, bool required, const char **text, size_t *len)
{
    const msgpack_object *o = d->val[key];
    if (!o)
        return required ? s_fail(d, SHOAL_EPROTO, "missing required key \"%s\"", s_key_names[key])
                        : 0;
    if (o->type != MSGPACK_OBJECT_STR)
        return s_fail(d, SHOAL_EPROTO, "\"%s\" has type %s, expected str", s_key_names[key],
                      wire_mp_type_name(o));
    *text = o->via.str.ptr;
    *len = o->via.str.size;
    return 0;
}

/* A required count in 1..limit: 0 is out of range, above the limit is a limit. */
static int s_get_count(s_dec_t *d, s_key_t key, size_t limit, uint64_t *out)
{
    uint64_t v = 0;
    int rc = s_get_uint(d, key, true, &v);
    if (rc)
        return rc;
    if (v == 0 || v > limit)
        return s_fail(d, v == 0 ? SHOAL_EINVAL : SHOAL_ELIMIT,
                      "\"%s\" must be 1..%zu, got %" PRIu64, s_key_names[key], limit, v);
    *out = v;
    return 0;
}

/* k and dim are 32-bit fields whatever a server's limit says. */
static size_t s_limit32(size_t limit)
{
    return limit > UINT32_MAX ? UINT32_MAX : limit;
}

static int s_get_count32(s_dec_t *d, s_key_t key, size_t limit, uint32_t *out)
{
    uint64_t v = 0;
    int rc = s_get_count(d, key, s_limit32(limit), &v);
    if (rc == 0)
        *out = (uint32_t)v;
    return rc;
}

/* An optional 32-bit tunable, 0 (the default) when absent. */
static int s_get_tunable(s_dec_t *d, s_key_t key, uint32_t *out)
{
    uint64_t v = 0;
    int rc = s_get_uint(d, key, false, &v);
    if (rc)
        return rc;
    if (v > UINT32_MAX)
        return s_fail(d, SHOAL_EINVAL, "\"%s\" must be 0..%" PRIu32 ", got %" PRIu64,
                      s_key_names[key], UINT32_MAX, v);
    *out = (uint32_t)v;
    return 0;
}

/*
 * An optional recall in (0, 1] (a float, or the integer 1), 0 when absent;
 * anything else is einval naming the key.
 */
static int s_get_recall(s_dec_t *d, s_key_t key, double *out)
{
    const msgpack_object *o = d->val[key];
    if (!o)
        return 0;
    double v;
    if (o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64)
        v = o->via.f64;
    else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= 1)
        v = (double)o->via.u64;
    else
        return s_fail(d, SHOAL_EPROTO, "\"%s\" has type %s, expected float", s_key_names[key],
                      wire_mp_type_name(o));
    if (!(v > 0.0 && v <= 1.0))
        return s_fail(d, SHOAL_EINVAL, "\"%s\" must be in (0, 1], got %g", s_key_names[key], v);
    *out = v;
    return 0;
}

/*
 * "ef": optional, 0 (the default) when absent. A candidate list is a size of
 * work like k, so a value beyond its bound is a limit (elimit), as the shard
 * reports one above the index's bound; the codec knows only the 32 bits.
 */
static int s_get_ef(s_dec_t *d, uint32_t *out)
{
    uint64_t v = 0;
    int rc = s_get_uint(d, S_KEY_EF, false, &v);
    if (rc)
        return rc;
    if (v > UINT32_MAX)
        return s_fail(d, SHOAL_ELIMIT, "\"ef\" must be 0..%" PRIu32 ", got %" PRIu64, UINT32_MAX,
                      v);
    *out = (uint32_t)v;
    return 0;
}

/* "coll": required, or optional where "" means every collection. */
static int s_get_name(s_dec_t *d, bool required, char out[WIRE_NAME_MAX + 1])
{
    const char *text = NULL;
    size_t len = 0;
    char show[48];
    int rc = s_get_str(d, S_KEY_COLL, required, &text, &len);
    if (rc || !text)
        return rc;
    if (len == 0) {
        if (required)
            return s_fail(d, SHOAL_EINVAL, "\"coll\" must not be empty");
        return 0;
    }
    if (len > WIRE_NAME_MAX)
        return s_fail(d, SHOAL_EINVAL, "\"coll\" has %zu bytes, at most %d are allowed", len,
                      WIRE_NAME_MAX);
    size_t bad = wire_name_bad_at(text, len);
    if (bad < len)
        return s_fail(d, SHOAL_EINVAL,
                      "\"coll\" \"%s\" has a byte outside [A-Za-z0-9_.-] at offset %zu",
                      wire_printable(text, len, show, sizeof show), bad);
    memcpy(out, text, len);
    out[len] = '\0';
    return 0;
}

/*
 * A string of printable ASCII, at most cap - 1 bytes, copied into out ("" when
 * absent and optional). For "cursor" and "missing": both end up in logs and
 * on terminals, so a control byte is refused rather than carried.
 */
static int s_get_text(s_dec_t *d, s_key_t key, bool required, char *out, size_t cap)
{
    const char *text = NULL;
    size_t len = 0;
    int rc = s_get_str(d, key, required, &text, &len);
    if (rc || !text)
        return rc;
    if (len > cap - 1)
        return s_fail(d, SHOAL_EINVAL, "\"%s\" has %zu bytes, at most %zu are allowed",
                      s_key_names[key], len, cap - 1);
    size_t bad = wire_printable_bad_at(text, len);
    if (bad < len)
        return s_fail(d, SHOAL_EINVAL,
                      "\"%s\" has a byte outside printable ASCII (0x%02x) at offset %zu",
                      s_key_names[key], (unsigned)(unsigned char)text[bad], bad);
    memcpy(out, text, len);
    out[len] = '\0';
    return 0;
}

/*
 * "rid" and "op", silently, from a header map that could be read (whatever
 * else is wrong with the message), so that the error reply is addressed to
 * the right request. The rule is docs/protocol.md section 6's: "rid" when it
 * appears once as an unsigned integer, "op" when it appears once as a string
 * naming an op of this protocol; a key given twice has no one value.
 */
static void s_peek_address(s_dec_t *d, wire_op_t *op, uint64_t *rid)
{
    if (!d->map_read)
        return;
    const msgpack_object *o = d->val[S_KEY_RID];
    if (o && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && !(d->dups & S_BIT(S_KEY_RID)))
        *rid = o->via.u64;
    o = d->val[S_KEY_OP];
    if (o && o->type == MSGPACK_OBJECT_STR && !(d->dups & S_BIT(S_KEY_OP)))
        *op = wire_op_parse(o->via.str.ptr, o->via.str.size);
}

static int s_check_dup(s_dec_t *d)
{
    char show[48];
    if (d->dup_name)
        return s_fail(
            d, SHOAL_EPROTO, "duplicate key \"%s\"",
            wire_printable(d->dup_name->via.str.ptr, d->dup_name->via.str.size, show, sizeof show));
    return 0;
}

/* who: "server" decoding a request, "client" decoding a reply. */
static int s_check_version(s_dec_t *d, const char *who)
{
    uint64_t v = 0;
    int rc = s_get_uint(d, S_KEY_V, true, &v);
    if (rc)
        return rc;
    if (v != WIRE_VERSION)
        return s_fail(d, SHOAL_EPROTO,
                      "protocol version %" PRIu64 " is not supported (this %s speaks %d)", v, who,
                      WIRE_VERSION);
    return 0;
}

/* "op" must be present (when required) and known; on success the prefix names it. */
static int s_check_op(s_dec_t *d, bool required, wire_op_t *op)
{
    const char *text = NULL;
    size_t len = 0;
    char show[48];
    int rc = s_get_str(d, S_KEY_OP, required, &text, &len);
    if (rc || !text)
        return rc;
    wire_op_t parsed = wire_op_parse(text, len);
    if (parsed == WIRE_OP_NONE)
        return s_fail(d, SHOAL_EPROTO, "unknown op \"%s\"",
                      wire_printable(text, len, show, sizeof show));
    *op = parsed;
    s_dec_set_op(d, parsed);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Decoding: bulk frames                                                    */
/* ------------------------------------------------------------------------ */

static int s_expect_frames(s_dec_t *d, size_t want, const char *layout)
{
    if (d->frames->count != want)
        return s_fail(d, SHOAL_EPROTO, "expected %zu frame%s (%s), got %zu", want,
                      want == 1 ? "" : "s", layout, d->frames->count);
    return 0;
}

/*
 * Checks that frame idx holds a x b elements of elem bytes (bname NULL: a
 * alone), naming the factors when it does not.
 */
static int s_expect_size(s_dec_t *d, size_t idx, const char *aname, uint64_t a, const char *bname,
                         uint64_t b, size_t elem)
{
    char how[112];
    if (bname)
        snprintf(how, sizeof how, "%s=%" PRIu64 " x %s=%" PRIu64 " x %zu", aname, a, bname, b,
                 elem);
    else
        snprintf(how, sizeof how, "%s=%" PRIu64 " x %zu", aname, a, elem);
    size_t want;
    if (!wire_mul3(a, bname ? b : 1, elem, &want))
        return s_fail(d, SHOAL_ELIMIT, "frame %zu would need more than %zu bytes (%s)", idx,
                      (size_t)SIZE_MAX, how);
    if (d->frames->size[idx] != want)
        return s_fail(d, SHOAL_EPROTO, "frame %zu has %zu bytes, expected %zu (%s)", idx,
                      d->frames->size[idx], want, how);
    return 0;
}

/*
 * Step 6: out[i] points at bulk frame i + 1 (every op's bulk frames are 1..n),
 * or at an aligned copy when the frame's buffer is not aligned to its element
 * size align[i] (one allocation, *owned, for all the copies).
 */
static int s_bind(s_dec_t *d, const size_t *align, size_t nbulk, const void **out, void **owned)
{
    const wire_frames_t *f = d->frames;
    size_t need = 0;
    for (size_t i = 0; i < nbulk; i++) {
        if ((uintptr_t)f->data[i + 1] % align[i] != 0)
            need += f->size[i + 1] + 8; /* + room to realign */
    }
    uint8_t *copy = NULL;
    if (need) {
        copy = malloc(need);
        if (!copy)
            return s_fail(d, SHOAL_ENOMEM, "out of memory copying %zu bytes of unaligned frames",
                          need);
    }
    size_t at = 0;
    for (size_t i = 0; i < nbulk; i++) {
        const void *p = f->data[i + 1];
        if ((uintptr_t)p % align[i] == 0) {
            out[i] = p;
            continue;
        }
        at = (at + 7) & ~(size_t)7; /* malloc's block is aligned for any element */
        memcpy(copy + at, p, f->size[i + 1]);
        out[i] = copy + at;
        at += f->size[i + 1];
    }
    *owned = copy;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Decoding: requests                                                       */
/* ------------------------------------------------------------------------ */

static int s_dec_create(s_dec_t *d, wire_request_t *req)
{
    const char *text = NULL;
    size_t len = 0;
    char show[48];
    int rc;
    if ((rc = s_get_name(d, true, req->coll)) ||
        (rc = s_get_count32(d, S_KEY_DIM, d->lim.max_dim, &req->dim)) ||
        (rc = s_get_str(d, S_KEY_METRIC, true, &text, &len)))
        return rc;
    if (!wire_metric_from_text(text, len, &req->metric))
        return s_fail(d, SHOAL_EINVAL,
                      "\"metric\" must be \"l2\", \"ip\" or \"cosine\", got \"%s\"",
                      wire_printable(text, len, show, sizeof show));
    if ((rc = s_get_tunable(d, S_KEY_M, &req->M)) ||
        (rc = s_get_tunable(d, S_KEY_EF_CONSTRUCTION, &req->ef_construction)) ||
        (rc = s_get_tunable(d, S_KEY_NLIST, &req->nlist)) ||
        (rc = s_get_tunable(d, S_KEY_REPLICATION, &req->replication)) ||
        (rc = s_get_tunable(d, S_KEY_WRITE_QUORUM, &req->write_quorum)) ||
        (rc = s_get_recall(d, S_KEY_TARGET_RECALL, &req->target_recall)))
        return rc;
    text = NULL;
    len = 0;
    if ((rc = s_get_str(d, S_KEY_STORAGE, false, &text, &len)))
        return rc;
    if (text && len) {
        char name[8];
        quant_kind_t kind = QUANT_F32;
        if (len >= sizeof name)
            return s_fail(d, SHOAL_EINVAL,
                          "\"storage\" must be \"f32\", \"f16\" or \"sq8\", got \"%s\"",
                          wire_printable(text, len, show, sizeof show));
        memcpy(name, text, len);
        name[len] = '\0';
        if (quant_kind_parse(name, &kind, NULL) != 0)
            return s_fail(d, SHOAL_EINVAL,
                          "\"storage\" must be \"f32\", \"f16\" or \"sq8\", got \"%s\"",
                          wire_printable(text, len, show, sizeof show));
        req->storage = WIRE_STORAGE_GIVEN | (uint32_t)kind;
    }
    return s_expect_frames(d, 1, "header");
}

/*
 * insert: ids and vectors, then optionally each row's IVF list. The lists
 * frame is told by the frame count alone, so an insert from before lists
 * existed (three frames) stays valid: its rows have WIRE_LIST_NONE.
 */
static int s_dec_insert(s_dec_t *d, wire_request_t *req)
{
    int rc;
    if ((rc = s_get_name(d, true, req->coll)) ||
        (rc = s_get_count(d, S_KEY_N, d->lim.max_batch, &req->n)) ||
        (rc = s_get_count32(d, S_KEY_DIM, d->lim.max_dim, &req->dim)))
        return rc;
    /* Frames 4 and 5 are optional, in that order: each row's list, then the
     * collection's sq8 quantizer record (the coordinator's, for the shard). */
    size_t nframes = d->frames->count;
    bool has_lists = nframes >= 4, has_quantizer = nframes == 5;
    if ((rc = s_expect_frames(d, nframes >= 3 && nframes <= 5 ? nframes : 3,
                              has_quantizer ? "header, ids, vectors, lists, quantizer"
                              : has_lists   ? "header, ids, vectors, lists"
                                            : "header, ids, vectors")) ||
        (rc = s_expect_size(d, 1, "n", req->n, NULL, 0, sizeof(uint64_t))) ||
        (rc = s_expect_size(d, 2, "n", req->n, "dim", req->dim, sizeof(float))) ||
        (has_lists && (rc = s_expect_size(d, 3, "n", req->n, NULL, 0, sizeof(uint32_t)))))
        return rc;
    if (has_quantizer && (d->frames->size[4] == 0 ||
                          d->frames->size[4] > QUANT_SQ8_HEADER_BYTES + 8 * (size_t)req->dim))
        return s_fail(d, SHOAL_EPROTO, "insert: the quantizer frame has %zu bytes, expected 1..%zu",
                      d->frames->size[4], QUANT_SQ8_HEADER_BYTES + 8 * (size_t)req->dim);
    const size_t align[] = {sizeof(uint64_t), sizeof(float), sizeof(uint32_t), 1};
    const void *bulk[4] = {NULL, NULL, NULL, NULL};
    if ((rc = s_bind(d, align, nframes - 1, bulk, &req->owned)))
        return rc;
    req->ids = bulk[0];
    req->vecs = bulk[1];
    req->lists = bulk[2];
    req->quantizer = bulk[3];
    req->quantizer_len = has_quantizer ? d->frames->size[4] : 0;
    return 0;
}

/* "list": required, any 32-bit value (WIRE_LIST_NONE names the rows with no list). */
static int s_get_list(s_dec_t *d, uint32_t *out)
{
    uint64_t v = 0;
    int rc = s_get_uint(d, S_KEY_LIST, true, &v);
    if (rc)
        return rc;
    if (v > UINT32_MAX)
        return s_fail(d, SHOAL_EINVAL, "\"list\" must be 0..%" PRIu32 ", got %" PRIu64,
                      UINT32_MAX, v);
    *out = (uint32_t)v;
    return 0;
}

/* list_export: which list, how many rows, from where. */
static int s_dec_list_export(s_dec_t *d, wire_request_t *req)
{
    int rc;
    if ((rc = s_get_name(d, true, req->coll)) || (rc = s_get_list(d, &req->list)) ||
        (rc = s_get_count32(d, S_KEY_LIMIT, d->lim.max_batch, &req->limit)) ||
        (rc = s_get_text(d, S_KEY_CURSOR, false, req->cursor, sizeof req->cursor)))
        return rc;
    return s_expect_frames(d, 1, "header");
}

/* delete and get: a list of ids. */
static int s_dec_ids(s_dec_t *d, wire_request_t *req)
{
    int rc;
    if ((rc = s_get_name(d, true, req->coll)) ||
        (rc = s_get_count(d, S_KEY_N, d->lim.max_batch, &req->n)) ||
        (rc = s_expect_frames(d, 2, "header, ids")) ||
        (rc = s_expect_size(d, 1, "n", req->n, NULL, 0, sizeof(uint64_t))))
        return rc;
    const size_t align[] = {sizeof(uint64_t)};
    const void *bulk[1];
    if ((rc = s_bind(d, align, 1, bulk, &req->owned)))
        return rc;
    req->ids = bulk[0];
    return 0;
}

/* A request's optional "mode" (auto when absent). */
static int s_get_request_mode(s_dec_t *d, wire_mode_t *mode)
{
    const char *text = NULL;
    size_t len = 0;
    char show[48];
    int rc = s_get_str(d, S_KEY_MODE, false, &text, &len);
    if (rc)
        return rc;
    if (text && !wire_mode_from_text(text, len, mode))
        return s_fail(d, SHOAL_EINVAL,
                      "\"mode\" must be \"auto\", \"hnsw\" or \"exact\", got \"%s\"",
                      wire_printable(text, len, show, sizeof show));
    return 0;
}

static int s_dec_search(s_dec_t *d, wire_request_t *req)
{
    int rc;
    if ((rc = s_get_name(d, true, req->coll)) ||
        (rc = s_get_count(d, S_KEY_N, d->lim.max_batch, &req->n)) ||
        (rc = s_get_count32(d, S_KEY_DIM, d->lim.max_dim, &req->dim)) ||
        (rc = s_get_count32(d, S_KEY_K, d->lim.max_k, &req->k)) ||
        (rc = s_get_request_mode(d, &req->mode)) || (rc = s_get_ef(d, &req->ef)) ||
        (rc = s_get_tunable(d, S_KEY_NPROBE, &req->nprobe)) ||
        (rc = s_get_tunable(d, S_KEY_DEADLINE_MS, &req->deadline_ms)) ||
        (rc = s_get_recall(d, S_KEY_RECALL, &req->recall)) ||
        (rc = s_get_uint(d, S_KEY_NFILTER, false, &req->nfilter)))
        return rc;
    if (req->nfilter > d->lim.max_filter)
        return s_fail(d, SHOAL_ELIMIT, "\"nfilter\" must be 0..%zu, got %" PRIu64,
                      d->lim.max_filter, req->nfilter);
    bool filtered = req->nfilter > 0;
    if ((rc = s_expect_frames(d, filtered ? 3 : 2,
                              filtered ? "header, queries, filter" : "header, queries")) ||
        (rc = s_expect_size(d, 1, "n", req->n, "dim", req->dim, sizeof(float))) ||
        (filtered &&
         (rc = s_expect_size(d, 2, "nfilter", req->nfilter, NULL, 0, sizeof(uint64_t)))))
        return rc;
    const size_t align[] = {sizeof(float), sizeof(uint64_t)};
    const void *bulk[2] = {NULL, NULL};
    if ((rc = s_bind(d, align, filtered ? 2 : 1, bulk, &req->owned)))
        return rc;
    req->vecs = bulk[0];
    req->filter = bulk[1];
    return 0;
}

/* train: the sample is n x dim floats in frame 1, laid out as a search's queries. */
static int s_dec_train(s_dec_t *d, wire_request_t *req)
{
    int rc;
    if ((rc = s_get_name(d, true, req->coll)) ||
        (rc = s_get_count(d, S_KEY_N, d->lim.max_batch, &req->n)) ||
        (rc = s_get_count32(d, S_KEY_DIM, d->lim.max_dim, &req->dim)) ||
        (rc = s_get_tunable(d, S_KEY_INIT, &req->init)))
        return rc;
    if (req->init > 1)
        return s_fail(d, SHOAL_EINVAL,
                      "\"init\" must be 0 (k-means++) or 1 (random rows), got %" PRIu32, req->init);
    if ((rc = s_get_tunable(d, S_KEY_MAX_ITERS, &req->max_iters)) ||
        (rc = s_get_uint(d, S_KEY_SEED, false, &req->seed)) ||
        (rc = s_expect_frames(d, 2, "header, sample")) ||
        (rc = s_expect_size(d, 1, "n", req->n, "dim", req->dim, sizeof(float))))
        return rc;
    const size_t align[] = {sizeof(float)};
    const void *bulk[1];
    if ((rc = s_bind(d, align, 1, bulk, &req->owned)))
        return rc;
    req->vecs = bulk[0];
    return 0;
}

/* knn_graph: header only; the rows come from the collection, picked by the cursor. */
static int s_dec_knn_graph(s_dec_t *d, wire_request_t *req)
{
    int rc;
    if ((rc = s_get_name(d, true, req->coll)) ||
        (rc = s_get_count32(d, S_KEY_K, d->lim.max_k, &req->k)) ||
        (rc = s_get_request_mode(d, &req->mode)) || (rc = s_get_ef(d, &req->ef)) ||
        (rc = s_get_tunable(d, S_KEY_NPROBE, &req->nprobe)) ||
        (rc = s_get_tunable(d, S_KEY_DEADLINE_MS, &req->deadline_ms)) ||
        (rc = s_get_tunable(d, S_KEY_CHUNK, &req->chunk)))
        return rc;
    /* A chunk's reply carries chunk rows, which max_batch bounds. */
    if (req->chunk > d->lim.max_batch)
        return s_fail(d, SHOAL_ELIMIT, "\"chunk\" must be 0..%zu, got %" PRIu32, d->lim.max_batch,
                      req->chunk);
    if ((rc = s_get_text(d, S_KEY_CURSOR, false, req->cursor, sizeof req->cursor)))
        return rc;
    return s_expect_frames(d, 1, "header");
}

/*
 * shard_add, shard_drain, shard_remove: "endpoint". Every fault of it is
 * einval, a missing key and a wrong type included (elsewhere eproto): the
 * endpoint is an operator's input, passed on by a tool, so to the person who
 * typed it each fault is a bad value, and one code covers them all.
 */
static int s_dec_endpoint(s_dec_t *d, wire_request_t *req)
{
    const msgpack_object *o = d->val[S_KEY_ENDPOINT];
    if (!o)
        return s_fail(d, SHOAL_EINVAL, "missing required key \"endpoint\" (the shard's endpoint)");
    if (o->type != MSGPACK_OBJECT_STR)
        return s_fail(d, SHOAL_EINVAL, "\"endpoint\" has type %s, expected str",
                      wire_mp_type_name(o));
    if (o->via.str.size == 0)
        return s_fail(d, SHOAL_EINVAL, "\"endpoint\" must not be empty");
    int rc = s_get_text(d, S_KEY_ENDPOINT, true, req->endpoint, sizeof req->endpoint);
    return rc ? rc : s_expect_frames(d, 1, "header");
}

/* rebalance: three optional keys, no frames. */
static int s_dec_rebalance(s_dec_t *d, wire_request_t *req)
{
    uint64_t dry_run = 0;
    int rc = s_get_uint(d, S_KEY_DRY_RUN, false, &dry_run);
    if (rc)
        return rc;
    if (dry_run > 1)
        return s_fail(d, SHOAL_EINVAL, "\"dry_run\" must be 0 or 1, got %" PRIu64, dry_run);
    req->dry_run = (uint32_t)dry_run;
    if ((rc = s_get_tunable(d, S_KEY_MAX_MOVES, &req->max_moves)) ||
        (rc = s_get_tunable(d, S_KEY_RATE_MB, &req->rate_mb)))
        return rc;
    return s_expect_frames(d, 1, "header");
}

/* snapshot, snapshot_drop, snapshot_create: "name", no frames. */
static int s_dec_snapshot_name(s_dec_t *d, wire_request_t *req)
{
    const char *text = NULL;
    size_t len = 0;
    int rc = s_get_str(d, S_KEY_NAME, true, &text, &len);
    if (rc)
        return rc;
    shoal_err_t why;
    if (wire_snapshot_name_check("\"name\"", text, len, &why) != 0)
        return s_fail(d, why.code, "%s", why.msg);
    memcpy(req->name, text, len);
    req->name[len] = '\0';
    return s_expect_frames(d, 1, "header");
}

/* The ops whose request is a collection name (required or not) and nothing else. */
static int s_dec_name_only(s_dec_t *d, wire_request_t *req, bool required)
{
    int rc = s_get_name(d, required, req->coll);
    return rc ? rc : s_expect_frames(d, 1, "header");
}

/* The op's own fields and frames, after the common header; one case per op, each one
 * decoder call, so the dispatch reads as the list of ops. */
static int s_dec_request_body(s_dec_t *d, wire_op_t op, wire_request_t *req)
{
    int rc;
    switch (op) {
    case WIRE_OP_PING:
        rc = s_expect_frames(d, 1, "header");
        break;
    case WIRE_OP_CREATE_COLLECTION:
        rc = s_dec_create(d, req);
        break;
    case WIRE_OP_DROP_COLLECTION:
    case WIRE_OP_LIST_COUNTS:
        rc = s_dec_name_only(d, req, true);
        break;
    case WIRE_OP_INSERT:
        rc = s_dec_insert(d, req);
        break;
    case WIRE_OP_DELETE:
    case WIRE_OP_GET:
        rc = s_dec_ids(d, req);
        break;
    case WIRE_OP_SEARCH:
        rc = s_dec_search(d, req);
        break;
    case WIRE_OP_STATS:
    case WIRE_OP_CHECKPOINT:
        rc = s_dec_name_only(d, req, false);
        break;
    case WIRE_OP_TRAIN:
        rc = s_dec_train(d, req);
        break;
    case WIRE_OP_KNN_GRAPH:
        rc = s_dec_knn_graph(d, req);
        break;
    case WIRE_OP_LIST_EXPORT:
        rc = s_dec_list_export(d, req);
        break;
    case WIRE_OP_LIST_DROP:
        if (!(rc = s_get_name(d, true, req->coll)) && !(rc = s_get_list(d, &req->list)))
            rc = s_expect_frames(d, 1, "header");
        break;
    case WIRE_OP_SHARD_ADD:
    case WIRE_OP_SHARD_DRAIN:
    case WIRE_OP_SHARD_REMOVE:
        rc = s_dec_endpoint(d, req);
        break;
    case WIRE_OP_REBALANCE:
        rc = s_dec_rebalance(d, req);
        break;
    case WIRE_OP_SNAPSHOT:
    case WIRE_OP_SNAPSHOT_DROP:
    case WIRE_OP_SNAPSHOT_CREATE:
        rc = s_dec_snapshot_name(d, req);
        break;
    case WIRE_OP_SNAPSHOT_LIST:
        rc = s_expect_frames(d, 1, "header");
        break;
    default:
        rc = s_fail(d, SHOAL_EINTERNAL, "op %d has no decoder", (int)op);
        break;
    }
    return rc;
}

int wire_request_decode(const wire_frames_t *frames, const wire_limits_t *limits,
                        wire_request_t *req, shoal_err_t *err)
{
    s_dec_t d;
    s_dec_init(&d, frames, limits, err);
    wire_request_init(req);
    int rc = s_dec_header(&d, S_REQUEST_KEYS);
    s_peek_address(&d, &req->op, &req->rid);
    if (rc)
        goto done;
    wire_op_t op = WIRE_OP_NONE;
    if ((rc = s_check_dup(&d)) || (rc = s_check_version(&d, "server")) ||
        (rc = s_check_op(&d, true, &op)) || (rc = s_get_uint(&d, S_KEY_RID, true, &req->rid)))
        goto done;

    rc = s_dec_request_body(&d, op, req);

done:
    s_dec_fini(&d);
    if (rc) {
        /* Keep op and rid for the error reply; drop everything that points at frames. */
        wire_op_t keep_op = req->op;
        uint64_t keep_rid = req->rid;
        wire_request_fini(req);
        req->op = keep_op;
        req->rid = keep_rid;
    }
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Decoding: replies                                                        */
/* ------------------------------------------------------------------------ */

static int s_dec_code(s_dec_t *d, int *code)
{
    const msgpack_object *o = d->val[S_KEY_CODE];
    if (!o)
        return s_fail(d, SHOAL_EPROTO, "missing required key \"code\"");
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (o->via.u64 != 0)
            return s_fail(d, SHOAL_EPROTO, "\"code\" must be 0 or negative, got %" PRIu64,
                          o->via.u64);
        *code = 0;
        return 0;
    }
    if (o->type != MSGPACK_OBJECT_NEGATIVE_INTEGER)
        return s_fail(d, SHOAL_EPROTO, "\"code\" has type %s, expected integer",
                      wire_mp_type_name(o));
    if (o->via.i64 < INT_MIN)
        return s_fail(d, SHOAL_EPROTO, "\"code\" %" PRId64 " is out of range", o->via.i64);
    *code = (int)o->via.i64;
    return 0;
}

/* Keys every reply may have: err, msg, info. */
static int s_dec_reply_common(s_dec_t *d, wire_reply_t *rep)
{
    const char *text = NULL;
    size_t len = 0;
    int rc;
    if ((rc = s_get_str(d, S_KEY_ERR, false, &text, &len)))
        return rc;
    text = NULL;
    if ((rc = s_get_str(d, S_KEY_MSG, false, &text, &len)))
        return rc;
    if (text) {
        /* A long message is cut, not refused: it is text for people. */
        size_t keep = len < sizeof rep->msg - 1 ? len : sizeof rep->msg - 1;
        memcpy(rep->msg, text, keep);
        rep->msg[keep] = '\0';
    }
    const msgpack_object *info = d->val[S_KEY_INFO];
    if (info) {
        if (!wire_info_object_ok(info))
            return s_fail(d, SHOAL_EPROTO,
                          "\"info\" must be a map of string keys to numbers, strings, maps "
                          "and arrays");
        size_t voff = 0, vlen = 0;
        if (!wire_mp_find_value(d->frames->data[0], d->frames->size[0], "info", &voff, &vlen))
            return s_fail(d, SHOAL_EINTERNAL, "\"info\" was unpacked but not found in the header");
        rep->info = (const uint8_t *)d->frames->data[0] + voff;
        rep->info_len = vlen;
    }
    return 0;
}

/* A reply's "mode": the one that ran, hnsw or exact (AUTO left when absent and optional). */
static int s_get_reply_mode(s_dec_t *d, bool required, wire_mode_t *mode)
{
    const char *text = NULL;
    size_t len = 0;
    char show[48];
    int rc = s_get_str(d, S_KEY_MODE, required, &text, &len);
    if (rc || !text)
        return rc;
    if (!wire_mode_from_text(text, len, mode) || *mode == WIRE_MODE_AUTO)
        return s_fail(d, SHOAL_EPROTO,
                      "\"mode\" of a reply must be \"hnsw\" or \"exact\", got \"%s\"",
                      wire_printable(text, len, show, sizeof show));
    return 0;
}

/* The coordinator's optional keys of search and knn_graph replies. */
static int s_dec_fanout_keys(s_dec_t *d, wire_reply_t *rep)
{
    uint64_t partial = 0;
    int rc = s_get_uint(d, S_KEY_PARTIAL, false, &partial);
    if (rc)
        return rc;
    if (partial > 1)
        return s_fail(d, SHOAL_EPROTO, "\"partial\" must be 0 or 1, got %" PRIu64, partial);
    rep->partial = (uint32_t)partial;
    if ((rc = s_get_text(d, S_KEY_MISSING, false, rep->missing, sizeof rep->missing)))
        return rc;
    return s_get_uint(d, S_KEY_FANOUT, false, &rep->fanout);
}

static int s_dec_search_reply(s_dec_t *d, wire_reply_t *rep)
{
    int rc;
    if ((rc = s_get_count(d, S_KEY_N, d->lim.max_batch, &rep->n)) ||
        (rc = s_get_count32(d, S_KEY_K, d->lim.max_k, &rep->k)) ||
        (rc = s_get_reply_mode(d, true, &rep->mode_used)) || (rc = s_dec_fanout_keys(d, rep)) ||
        (rc = s_get_tunable(d, S_KEY_NPROBE, &rep->nprobe_used)) ||
        (rc = s_get_ef(d, &rep->ef_used)) || (rc = s_get_recall(d, S_KEY_RECALL, &rep->recall)))
        return rc;
    if ((rc = s_expect_frames(d, 3, "header, ids, distances")) ||
        (rc = s_expect_size(d, 1, "n", rep->n, "k", rep->k, sizeof(uint64_t))) ||
        (rc = s_expect_size(d, 2, "n", rep->n, "k", rep->k, sizeof(float))))
        return rc;
    const size_t align[] = {sizeof(uint64_t), sizeof(float)};
    const void *bulk[2];
    if ((rc = s_bind(d, align, 2, bulk, &rep->owned)))
        return rc;
    rep->ids = bulk[0];
    rep->dists = bulk[1];
    return 0;
}

/*
 * knn_graph: n rows of k neighbours laid out as a search reply, then the rows'
 * own ids. n may be 0 (an empty collection, or nothing left at the cursor);
 * the three bulk frames are then present and empty.
 */
static int s_dec_knn_graph_reply(s_dec_t *d, wire_reply_t *rep)
{
    int rc;
    if ((rc = s_get_uint(d, S_KEY_N, true, &rep->n)))
        return rc;
    if (rep->n > d->lim.max_batch)
        return s_fail(d, SHOAL_ELIMIT, "\"n\" must be 0..%zu, got %" PRIu64, d->lim.max_batch,
                      rep->n);
    if ((rc = s_get_count32(d, S_KEY_K, d->lim.max_k, &rep->k)) ||
        (rc = s_get_reply_mode(d, false, &rep->mode_used)) || (rc = s_dec_fanout_keys(d, rep)) ||
        (rc = s_get_text(d, S_KEY_CURSOR, true, rep->cursor, sizeof rep->cursor)) ||
        (rc = s_get_uint(d, S_KEY_TOTAL, true, &rep->total)) ||
        (rc = s_expect_frames(d, 4, "header, ids, distances, row ids")) ||
        (rc = s_expect_size(d, 1, "n", rep->n, "k", rep->k, sizeof(uint64_t))) ||
        (rc = s_expect_size(d, 2, "n", rep->n, "k", rep->k, sizeof(float))) ||
        (rc = s_expect_size(d, 3, "n", rep->n, NULL, 0, sizeof(uint64_t))))
        return rc;
    const size_t align[] = {sizeof(uint64_t), sizeof(float), sizeof(uint64_t)};
    const void *bulk[3];
    if ((rc = s_bind(d, align, 3, bulk, &rep->owned)))
        return rc;
    rep->ids = bulk[0];
    rep->dists = bulk[1];
    rep->qids = bulk[2];
    return 0;
}

static int s_dec_get_reply(s_dec_t *d, wire_reply_t *rep)
{
    int rc;
    if ((rc = s_get_count(d, S_KEY_N, d->lim.max_batch, &rep->n)) ||
        (rc = s_get_count32(d, S_KEY_DIM, d->lim.max_dim, &rep->dim)) ||
        (rc = s_expect_frames(d, 3, "header, found flags, vectors")) ||
        (rc = s_expect_size(d, 1, "n", rep->n, NULL, 0, 1)) ||
        (rc = s_expect_size(d, 2, "n", rep->n, "dim", rep->dim, sizeof(float))))
        return rc;
    const uint8_t *found = d->frames->data[1];
    for (size_t i = 0; i < rep->n; i++) {
        if (found[i] > 1)
            return s_fail(d, SHOAL_EPROTO, "frame 1 byte %zu is %u, expected 0 or 1", i, found[i]);
    }
    const size_t align[] = {1, sizeof(float)};
    const void *bulk[2];
    if ((rc = s_bind(d, align, 2, bulk, &rep->owned)))
        return rc;
    rep->found = bulk[0];
    rep->vecs = bulk[1];
    return 0;
}

/* A reply's "n" that may be 0: 0..max_batch. */
static int s_get_rows(s_dec_t *d, uint64_t *n)
{
    int rc = s_get_uint(d, S_KEY_N, true, n);
    if (rc)
        return rc;
    if (*n > d->lim.max_batch)
        return s_fail(d, SHOAL_ELIMIT, "\"n\" must be 0..%zu, got %" PRIu64, d->lim.max_batch, *n);
    return 0;
}

/* list_counts: n lists and n counts; n is 0 for an empty collection. */
static int s_dec_list_counts_reply(s_dec_t *d, wire_reply_t *rep)
{
    int rc;
    if ((rc = s_get_rows(d, &rep->n)) || (rc = s_expect_frames(d, 3, "header, lists, counts")) ||
        (rc = s_expect_size(d, 1, "n", rep->n, NULL, 0, sizeof(uint32_t))) ||
        (rc = s_expect_size(d, 2, "n", rep->n, NULL, 0, sizeof(uint64_t))))
        return rc;
    const size_t align[] = {sizeof(uint32_t), sizeof(uint64_t)};
    const void *bulk[2];
    if ((rc = s_bind(d, align, 2, bulk, &rep->owned)))
        return rc;
    rep->lists = bulk[0];
    rep->counts = bulk[1];
    return 0;
}

/* list_export: n rows (0 at the end of a list) of ids and vectors, cursor and done. */
static int s_dec_list_export_reply(s_dec_t *d, wire_reply_t *rep)
{
    int rc;
    uint64_t done = 0;
    if ((rc = s_get_rows(d, &rep->n)) ||
        (rc = s_get_count32(d, S_KEY_DIM, d->lim.max_dim, &rep->dim)) ||
        (rc = s_get_text(d, S_KEY_CURSOR, true, rep->cursor, sizeof rep->cursor)) ||
        (rc = s_get_uint(d, S_KEY_DONE, true, &done)))
        return rc;
    if (done > 1)
        return s_fail(d, SHOAL_EPROTO, "\"done\" must be 0 or 1, got %" PRIu64, done);
    rep->done = (uint32_t)done;
    if ((rc = s_expect_frames(d, 3, "header, ids, vectors")) ||
        (rc = s_expect_size(d, 1, "n", rep->n, NULL, 0, sizeof(uint64_t))) ||
        (rc = s_expect_size(d, 2, "n", rep->n, "dim", rep->dim, sizeof(float))))
        return rc;
    const size_t align[] = {sizeof(uint64_t), sizeof(float)};
    const void *bulk[2];
    if ((rc = s_bind(d, align, 2, bulk, &rep->owned)))
        return rc;
    rep->ids = bulk[0];
    rep->vecs = bulk[1];
    return 0;
}

int wire_reply_decode(const wire_frames_t *frames, const wire_limits_t *limits, wire_reply_t *rep,
                      shoal_err_t *err)
{
    s_dec_t d;
    s_dec_init(&d, frames, limits, err);
    wire_reply_init(rep);
    int rc = s_dec_header(&d, S_REPLY_KEYS);
    s_peek_address(&d, &rep->op, &rep->rid);
    if (rc)
        goto done;
    wire_op_t op = WIRE_OP_NONE;
    if ((rc = s_check_dup(&d)) || (rc = s_check_version(&d, "client")) ||
        (rc = s_dec_code(&d, &rep->code)) || (rc = s_check_op(&d, rep->code == 0, &op)) ||
        (rc = s_get_uint(&d, S_KEY_RID, true, &rep->rid)) || (rc = s_dec_reply_common(&d, rep)))
        goto done;

    if (rep->code != 0) {
        rc = s_expect_frames(&d, 1, "header of an error reply");
        goto done;
    }
    switch (op) {
    case WIRE_OP_INSERT:
    case WIRE_OP_DELETE:
    case WIRE_OP_LIST_DROP:
        if (!(rc = s_get_uint(&d, S_KEY_COUNT, true, &rep->count)) &&
            !(rc = s_get_uint(&d, S_KEY_SEQ, true, &rep->seq)))
            rc = s_expect_frames(&d, 1, "header");
        break;
    case WIRE_OP_SEARCH:
        rc = s_dec_search_reply(&d, rep);
        break;
    case WIRE_OP_GET:
        rc = s_dec_get_reply(&d, rep);
        break;
    case WIRE_OP_KNN_GRAPH:
        rc = s_dec_knn_graph_reply(&d, rep);
        break;
    case WIRE_OP_LIST_COUNTS:
        rc = s_dec_list_counts_reply(&d, rep);
        break;
    case WIRE_OP_LIST_EXPORT:
        rc = s_dec_list_export_reply(&d, rep);
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
            rc = s_fail(&d, SHOAL_EPROTO, "missing required key \"info\"");
        else
            rc = s_expect_frames(&d, 1, "header");
        break;
    default:
        rc = s_expect_frames(&d, 1, "header");
        break;
    }

done:
    s_dec_fini(&d);
    if (rc) {
        wire_op_t keep_op = rep->op;
        uint64_t keep_rid = rep->rid;
        wire_reply_fini(rep);
        rep->op = keep_op;
        rep->rid = keep_rid;
    }
    return rc;
}
