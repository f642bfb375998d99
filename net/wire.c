/*
 * wire.c - the wire codec: requests and replies to and from frames.
 * docs/protocol.md is the specification; wire.h the contract.
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
 * Encoding writes the map's entries into a scratch buffer while counting
 * them, then the map header and the entries into frame 0's buffer: headers are
 * tens of bytes, so the copy is nothing next to one bulk frame, and no op needs
 * its key count worked out by hand.
 *
 * Considered and rejected: decoding with our own msgpack reader and no
 * msgpack-c at all (the walk in step 2 is most of one). msgpack-c stays the
 * reader, the walk only guards it, so there is one parser of record.
 */
#include "net/wire.h"
#include "net/wire_private.h"

#include <inttypes.h>
#include <limits.h>
#include <msgpack.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* Names                                                                    */
/* ------------------------------------------------------------------------ */

static const char *const s_op_names[WIRE_OP_COUNT] = {
    [WIRE_OP_NONE] = NULL,
    [WIRE_OP_PING] = "ping",
    [WIRE_OP_CREATE_COLLECTION] = "create_collection",
    [WIRE_OP_DROP_COLLECTION] = "drop_collection",
    [WIRE_OP_INSERT] = "insert",
    [WIRE_OP_DELETE] = "delete",
    [WIRE_OP_SEARCH] = "search",
    [WIRE_OP_GET] = "get",
    [WIRE_OP_STATS] = "stats",
    [WIRE_OP_CHECKPOINT] = "checkpoint",
    [WIRE_OP_TRAIN] = "train",
    [WIRE_OP_KNN_GRAPH] = "knn_graph",
    [WIRE_OP_LIST_COUNTS] = "list_counts",
    [WIRE_OP_LIST_EXPORT] = "list_export",
    [WIRE_OP_LIST_DROP] = "list_drop",
    [WIRE_OP_SHARD_ADD] = "shard_add",
    [WIRE_OP_SHARD_DRAIN] = "shard_drain",
    [WIRE_OP_SHARD_REMOVE] = "shard_remove",
    [WIRE_OP_REBALANCE] = "rebalance",
    [WIRE_OP_SNAPSHOT] = "snapshot",
    [WIRE_OP_SNAPSHOT_DROP] = "snapshot_drop",
    [WIRE_OP_SNAPSHOT_CREATE] = "snapshot_create",
    [WIRE_OP_SNAPSHOT_LIST] = "snapshot_list",
};

static const char *const s_mode_names[] = {
    [WIRE_MODE_AUTO] = "auto",
    [WIRE_MODE_HNSW] = "hnsw",
    [WIRE_MODE_EXACT] = "exact",
};

#define S_NMODES (sizeof s_mode_names / sizeof s_mode_names[0])

const char *wire_op_name(wire_op_t op)
{
    if ((int)op <= (int)WIRE_OP_NONE || (int)op >= (int)WIRE_OP_COUNT)
        return NULL;
    return s_op_names[op];
}

wire_op_t wire_op_parse(const char *text, size_t len)
{
    if (!text)
        return WIRE_OP_NONE;
    for (int op = WIRE_OP_NONE + 1; op < WIRE_OP_COUNT; op++) {
        if (strlen(s_op_names[op]) == len && memcmp(s_op_names[op], text, len) == 0)
            return (wire_op_t)op;
    }
    return WIRE_OP_NONE;
}

const char *wire_mode_name(wire_mode_t mode)
{
    if ((unsigned)mode >= S_NMODES)
        return "?";
    return s_mode_names[mode];
}

/* Case-insensitive, as metrics are; ASCII only, whatever the locale. */
static bool s_word_eq(const char *text, size_t len, const char *word)
{
    if (strlen(word) != len)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != word[i])
            return false;
    }
    return true;
}

static bool s_mode_parse(const char *text, size_t len, wire_mode_t *mode)
{
    for (size_t m = 0; m < S_NMODES; m++) {
        if (s_word_eq(text, len, s_mode_names[m])) {
            *mode = (wire_mode_t)m;
            return true;
        }
    }
    return false;
}

static bool s_metric_parse(const char *text, size_t len, shoal_metric_t *metric)
{
    static const shoal_metric_t all[] = {SHOAL_METRIC_L2, SHOAL_METRIC_IP, SHOAL_METRIC_COSINE};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        if (s_word_eq(text, len, shoal_metric_name(all[i]))) {
            *metric = all[i];
            return true;
        }
    }
    return false;
}

static bool s_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-';
}

/* Index of the first byte outside [A-Za-z0-9_.-], or len when there is none. */
static size_t s_name_bad_at(const char *name, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (!s_name_char(name[i]))
            return i;
    }
    return len;
}

static const char *s_printable(const char *text, size_t len, char *buf, size_t cap);

int wire_snapshot_name_check(const char *what, const char *name, size_t len, shoal_err_t *err)
{
    char show[48];
    if (len == 0)
        return shoal_err_set(err, SHOAL_EINVAL, "%s: the snapshot name must not be empty", what);
    if (len > WIRE_NAME_MAX)
        return shoal_err_set(err, SHOAL_EINVAL,
                             "%s: the snapshot name has %zu bytes, at most %d are allowed", what,
                             len, WIRE_NAME_MAX);
    size_t bad = s_name_bad_at(name, len);
    if (bad < len)
        return shoal_err_set(err, SHOAL_EINVAL,
                             "%s: the snapshot name \"%s\" has a byte outside [A-Za-z0-9_.-] at "
                             "offset %zu",
                             what, s_printable(name, len, show, sizeof show), bad);
    /* A leading dot would allow "." and ".." (the snapshots folder itself, the data dir). */
    if (name[0] == '.')
        return shoal_err_set(err, SHOAL_EINVAL,
                             "%s: the snapshot name \"%s\" must not begin with \".\"", what,
                             s_printable(name, len, show, sizeof show));
    return 0;
}

/*
 * Copies wire text into buf for a message: at most 40 bytes, anything outside
 * printable ASCII (and the quote) shown as '?', so a message never carries
 * control bytes or breaks its own quoting.
 */
static const char *s_printable(const char *text, size_t len, char *buf, size_t cap)
{
    size_t show = len > 40 ? 40 : len;
    if (show > cap - 4)
        show = cap - 4;
    size_t i = 0;
    for (; i < show; i++) {
        unsigned char c = (unsigned char)text[i];
        buf[i] = (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') ? (char)c : '?';
    }
    if (show < len) {
        memcpy(buf + i, "...", 3);
        i += 3;
    }
    buf[i] = '\0';
    return buf;
}

/* ------------------------------------------------------------------------ */
/* Limits, frames, init / fini                                              */
/* ------------------------------------------------------------------------ */

wire_limits_t wire_limits_default(void)
{
    return (wire_limits_t){
        .max_message_bytes = WIRE_MAX_MESSAGE_BYTES_DEFAULT,
        .max_batch = WIRE_MAX_BATCH_DEFAULT,
        .max_k = WIRE_MAX_K_DEFAULT,
        .max_dim = WIRE_MAX_DIM_DEFAULT,
        .max_filter = WIRE_MAX_FILTER_DEFAULT,
    };
}

void wire_frames_fini(wire_frames_t *frames)
{
    if (!frames)
        return;
    free(frames->owned_header);
    memset(frames, 0, sizeof *frames);
}

void wire_request_init(wire_request_t *req)
{
    memset(req, 0, sizeof *req);
    req->version = WIRE_VERSION;
    req->mode = WIRE_MODE_AUTO;
    req->metric = SHOAL_METRIC_L2;
}

void wire_request_fini(wire_request_t *req)
{
    if (!req)
        return;
    free(req->owned);
    wire_request_init(req);
}

void wire_reply_init(wire_reply_t *rep)
{
    memset(rep, 0, sizeof *rep);
    rep->version = WIRE_VERSION;
    rep->mode_used = WIRE_MODE_AUTO;
}

void wire_reply_fini(wire_reply_t *rep)
{
    if (!rep)
        return;
    free(rep->owned);
    wire_reply_init(rep);
}

void wire_reply_error(wire_reply_t *rep, wire_op_t op, uint64_t rid, int code, const char *msg)
{
    wire_reply_init(rep);
    rep->op = wire_op_name(op) ? op : WIRE_OP_NONE;
    rep->rid = rid;
    /* An error reply with code 0 would read as success: that is a bug here. */
    rep->code = code < 0 ? code : SHOAL_EINTERNAL;
    snprintf(rep->msg, sizeof rep->msg, "%s", msg ? msg : "");
}

/* a * b * c in size_t, or false when it overflows. */
static bool s_mul3(uint64_t a, uint64_t b, uint64_t c, size_t *out)
{
    uint64_t ab, abc;
    if (__builtin_mul_overflow(a, b, &ab) || __builtin_mul_overflow(ab, c, &abc) || abc > SIZE_MAX)
        return false;
    *out = (size_t)abc;
    return true;
}

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
     S_BIT(S_KEY_TARGET_RECALL) | S_BIT(S_KEY_NAME))
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
    size_t bad = s_name_bad_at(text, len);
    if (bad < len)
        return s_fail(d, SHOAL_EINVAL,
                      "\"coll\" \"%s\" has a byte outside [A-Za-z0-9_.-] at offset %zu",
                      s_printable(text, len, show, sizeof show), bad);
    memcpy(out, text, len);
    out[len] = '\0';
    return 0;
}

/* Index of the first byte outside printable ASCII (0x20..0x7e), or len when there is none. */
static size_t s_printable_bad_at(const char *text, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c < 0x20 || c > 0x7e)
            return i;
    }
    return len;
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
    size_t bad = s_printable_bad_at(text, len);
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
            s_printable(d->dup_name->via.str.ptr, d->dup_name->via.str.size, show, sizeof show));
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
                      s_printable(text, len, show, sizeof show));
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
    if (!s_mul3(a, bname ? b : 1, elem, &want))
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
    if (!s_metric_parse(text, len, &req->metric))
        return s_fail(d, SHOAL_EINVAL,
                      "\"metric\" must be \"l2\", \"ip\" or \"cosine\", got \"%s\"",
                      s_printable(text, len, show, sizeof show));
    if ((rc = s_get_tunable(d, S_KEY_M, &req->M)) ||
        (rc = s_get_tunable(d, S_KEY_EF_CONSTRUCTION, &req->ef_construction)) ||
        (rc = s_get_tunable(d, S_KEY_NLIST, &req->nlist)) ||
        (rc = s_get_tunable(d, S_KEY_REPLICATION, &req->replication)) ||
        (rc = s_get_tunable(d, S_KEY_WRITE_QUORUM, &req->write_quorum)) ||
        (rc = s_get_recall(d, S_KEY_TARGET_RECALL, &req->target_recall)))
        return rc;
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
    bool has_lists = d->frames->count == 4;
    if ((rc = s_expect_frames(d, has_lists ? 4 : 3,
                              has_lists ? "header, ids, vectors, lists" : "header, ids, vectors")) ||
        (rc = s_expect_size(d, 1, "n", req->n, NULL, 0, sizeof(uint64_t))) ||
        (rc = s_expect_size(d, 2, "n", req->n, "dim", req->dim, sizeof(float))) ||
        (has_lists && (rc = s_expect_size(d, 3, "n", req->n, NULL, 0, sizeof(uint32_t)))))
        return rc;
    const size_t align[] = {sizeof(uint64_t), sizeof(float), sizeof(uint32_t)};
    const void *bulk[3] = {NULL, NULL, NULL};
    if ((rc = s_bind(d, align, has_lists ? 3 : 2, bulk, &req->owned)))
        return rc;
    req->ids = bulk[0];
    req->vecs = bulk[1];
    req->lists = bulk[2];
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
    if (text && !s_mode_parse(text, len, mode))
        return s_fail(d, SHOAL_EINVAL,
                      "\"mode\" must be \"auto\", \"hnsw\" or \"exact\", got \"%s\"",
                      s_printable(text, len, show, sizeof show));
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

    switch (op) {
    case WIRE_OP_PING:
        rc = s_expect_frames(&d, 1, "header");
        break;
    case WIRE_OP_CREATE_COLLECTION:
        rc = s_dec_create(&d, req);
        break;
    case WIRE_OP_DROP_COLLECTION:
        rc = s_get_name(&d, true, req->coll);
        if (!rc)
            rc = s_expect_frames(&d, 1, "header");
        break;
    case WIRE_OP_INSERT:
        rc = s_dec_insert(&d, req);
        break;
    case WIRE_OP_DELETE:
    case WIRE_OP_GET:
        rc = s_dec_ids(&d, req);
        break;
    case WIRE_OP_SEARCH:
        rc = s_dec_search(&d, req);
        break;
    case WIRE_OP_STATS:
    case WIRE_OP_CHECKPOINT:
        rc = s_get_name(&d, false, req->coll);
        if (!rc)
            rc = s_expect_frames(&d, 1, "header");
        break;
    case WIRE_OP_TRAIN:
        rc = s_dec_train(&d, req);
        break;
    case WIRE_OP_KNN_GRAPH:
        rc = s_dec_knn_graph(&d, req);
        break;
    case WIRE_OP_LIST_COUNTS:
        rc = s_get_name(&d, true, req->coll);
        if (!rc)
            rc = s_expect_frames(&d, 1, "header");
        break;
    case WIRE_OP_LIST_EXPORT:
        rc = s_dec_list_export(&d, req);
        break;
    case WIRE_OP_LIST_DROP:
        if (!(rc = s_get_name(&d, true, req->coll)) && !(rc = s_get_list(&d, &req->list)))
            rc = s_expect_frames(&d, 1, "header");
        break;
    case WIRE_OP_SHARD_ADD:
    case WIRE_OP_SHARD_DRAIN:
    case WIRE_OP_SHARD_REMOVE:
        rc = s_dec_endpoint(&d, req);
        break;
    case WIRE_OP_REBALANCE:
        rc = s_dec_rebalance(&d, req);
        break;
    case WIRE_OP_SNAPSHOT:
    case WIRE_OP_SNAPSHOT_DROP:
    case WIRE_OP_SNAPSHOT_CREATE:
        rc = s_dec_snapshot_name(&d, req);
        break;
    case WIRE_OP_SNAPSHOT_LIST:
        rc = s_expect_frames(&d, 1, "header");
        break;
    default:
        rc = s_fail(&d, SHOAL_EINTERNAL, "op %d has no decoder", (int)op);
        break;
    }

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
    if (!s_mode_parse(text, len, mode) || *mode == WIRE_MODE_AUTO)
        return s_fail(d, SHOAL_EPROTO,
                      "\"mode\" of a reply must be \"hnsw\" or \"exact\", got \"%s\"",
                      s_printable(text, len, show, sizeof show));
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
    if (!s_mul3(req->n, req->dim, sizeof(float), vec_bytes) || req->n > SIZE_MAX / sizeof(uint64_t))
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
    size_t bad = s_printable_bad_at(text, len);
    if (bad < len)
        return shoal_err_set(err, SHOAL_EINVAL,
                             "%s: \"%s\" has a byte outside printable ASCII (0x%02x) at offset %zu",
                             what, key, (unsigned)(unsigned char)text[bad], bad);
    return 0;
}

/* The cluster-growth ops (section 11.9) and the snapshot ops (4.13, 11.10): they take no collection. */
static bool s_op_is_cluster(wire_op_t op)
{
    return op == WIRE_OP_SHARD_ADD || op == WIRE_OP_SHARD_DRAIN || op == WIRE_OP_SHARD_REMOVE ||
           op == WIRE_OP_REBALANCE || op == WIRE_OP_SNAPSHOT || op == WIRE_OP_SNAPSHOT_DROP ||
           op == WIRE_OP_SNAPSHOT_CREATE || op == WIRE_OP_SNAPSHOT_LIST;
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
    if (s_name_bad_at(req->coll, len) < len)
        return shoal_err_set(err, SHOAL_EINVAL,
                             "%s: collection name \"%s\" has a byte outside [A-Za-z0-9_.-]", opname,
                             req->coll);
    switch (req->op) {
    case WIRE_OP_CREATE_COLLECTION:
        if (req->dim == 0)
            return shoal_err_set(err, SHOAL_EINVAL, "%s: dim must be >= 1", opname);
        if (!strcmp(shoal_metric_name(req->metric), "?"))
            return shoal_err_set(err, SHOAL_EINVAL, "%s: metric %d is not valid", opname,
                                 (int)req->metric);
        if (!(req->target_recall >= 0 && req->target_recall <= 1))
            return shoal_err_set(err, SHOAL_EINVAL, "%s: target_recall must be in (0, 1], got %g",
                                 opname, req->target_recall);
        break;
    case WIRE_OP_SEARCH:
        if (req->k == 0)
            return shoal_err_set(err, SHOAL_EINVAL, "%s: k must be >= 1", opname);
        if (!(req->recall >= 0 && req->recall <= 1))
            return shoal_err_set(err, SHOAL_EINVAL, "%s: recall must be in (0, 1], got %g",
                                 opname, req->recall);
        if ((unsigned)req->mode >= S_NMODES)
            return shoal_err_set(err, SHOAL_EINVAL, "%s: mode %d is not valid", opname,
                                 (int)req->mode);
        if (req->nfilter > 0 && !req->filter)
            return shoal_err_set(err, SHOAL_EINVAL, "%s: nfilter is %" PRIu64 " but filter is NULL",
                                 opname, req->nfilter);
        if (req->nfilter > SIZE_MAX / sizeof(uint64_t))
            return shoal_err_set(err, SHOAL_EINVAL, "%s: nfilter %" PRIu64 " overflows", opname,
                                 req->nfilter);
        return s_check_vectors(req, opname, vec_bytes, err);
    case WIRE_OP_INSERT:
        if (!req->ids)
            return shoal_err_set(err, SHOAL_EINVAL, "%s: ids is NULL", opname);
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
        if ((unsigned)req->mode >= S_NMODES)
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
    switch (req->op) {
    case WIRE_OP_CREATE_COLLECTION:
        s_enc_uint(&e, "dim", req->dim);
        s_enc_str(&e, "metric", shoal_metric_name(req->metric));
        if (req->M)
            s_enc_uint(&e, "M", req->M);
        if (req->ef_construction)
            s_enc_uint(&e, "ef_construction", req->ef_construction);
        if (req->nlist)
            s_enc_uint(&e, "nlist", req->nlist);
        if (req->replication)
            s_enc_uint(&e, "replication", req->replication);
        if (req->write_quorum)
            s_enc_uint(&e, "write_quorum", req->write_quorum);
        if (req->target_recall > 0)
            s_enc_f64(&e, "target_recall", req->target_recall);
        break;
    case WIRE_OP_INSERT:
        s_enc_uint(&e, "n", req->n);
        s_enc_uint(&e, "dim", req->dim);
        break;
    case WIRE_OP_DELETE:
    case WIRE_OP_GET:
        s_enc_uint(&e, "n", req->n);
        break;
    case WIRE_OP_SEARCH:
        s_enc_uint(&e, "n", req->n);
        s_enc_uint(&e, "dim", req->dim);
        s_enc_uint(&e, "k", req->k);
        s_enc_str(&e, "mode", wire_mode_name(req->mode));
        if (req->ef)
            s_enc_uint(&e, "ef", req->ef);
        if (req->nfilter)
            s_enc_uint(&e, "nfilter", req->nfilter);
        if (req->nprobe)
            s_enc_uint(&e, "nprobe", req->nprobe);
        if (req->deadline_ms)
            s_enc_uint(&e, "deadline_ms", req->deadline_ms);
        if (req->recall > 0)
            s_enc_f64(&e, "recall", req->recall);
        break;
    case WIRE_OP_TRAIN:
        s_enc_uint(&e, "n", req->n);
        s_enc_uint(&e, "dim", req->dim);
        if (req->init)
            s_enc_uint(&e, "init", req->init);
        if (req->max_iters)
            s_enc_uint(&e, "max_iters", req->max_iters);
        if (req->seed)
            s_enc_uint(&e, "seed", req->seed);
        break;
    case WIRE_OP_KNN_GRAPH:
        s_enc_uint(&e, "k", req->k);
        s_enc_str(&e, "mode", wire_mode_name(req->mode));
        if (req->ef)
            s_enc_uint(&e, "ef", req->ef);
        if (req->nprobe)
            s_enc_uint(&e, "nprobe", req->nprobe);
        if (req->deadline_ms)
            s_enc_uint(&e, "deadline_ms", req->deadline_ms);
        if (req->chunk)
            s_enc_uint(&e, "chunk", req->chunk);
        if (req->cursor[0])
            s_enc_str(&e, "cursor", req->cursor);
        break;
    case WIRE_OP_LIST_EXPORT:
        s_enc_uint(&e, "list", req->list);
        s_enc_uint(&e, "limit", req->limit);
        if (req->cursor[0])
            s_enc_str(&e, "cursor", req->cursor);
        break;
    case WIRE_OP_LIST_DROP:
        s_enc_uint(&e, "list", req->list);
        break;
    case WIRE_OP_SHARD_ADD:
    case WIRE_OP_SHARD_DRAIN:
    case WIRE_OP_SHARD_REMOVE:
        s_enc_str(&e, "endpoint", req->endpoint);
        break;
    case WIRE_OP_SNAPSHOT:
    case WIRE_OP_SNAPSHOT_DROP:
    case WIRE_OP_SNAPSHOT_CREATE:
        s_enc_str(&e, "name", req->name);
        break;
    case WIRE_OP_REBALANCE:
        if (req->dry_run)
            s_enc_uint(&e, "dry_run", req->dry_run);
        if (req->max_moves)
            s_enc_uint(&e, "max_moves", req->max_moves);
        if (req->rate_mb)
            s_enc_uint(&e, "rate_mb", req->rate_mb);
        break;
    default:
        break;
    }
    if ((rc = s_enc_finish(&e, out, err)))
        return rc;

    switch (req->op) {
    case WIRE_OP_INSERT:
        s_add_frame(out, req->ids, (size_t)req->n * sizeof(uint64_t));
        s_add_frame(out, req->vecs, vec_bytes);
        if (req->lists)
            s_add_frame(out, req->lists, (size_t)req->n * sizeof(uint32_t));
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
        if ((unsigned)rep->mode_used >= S_NMODES)
            return shoal_err_set(err, SHOAL_EINVAL, "%s: mode_used %d is not valid", what,
                                 (int)rep->mode_used);
        if (rep->n > 0 && (!rep->ids || !rep->dists || !rep->qids))
            return shoal_err_set(err, SHOAL_EINVAL, "%s: ids, dists or qids is NULL", what);
        if (!s_mul3(rep->n, rep->k, sizeof(uint64_t), &bytes[0]) ||
            !s_mul3(rep->n, rep->k, sizeof(float), &bytes[1]) ||
            !s_mul3(rep->n, 1, sizeof(uint64_t), &bytes[2]))
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
        if (!s_mul3(rep->n, rep->k, sizeof(uint64_t), &bytes[0]) ||
            !s_mul3(rep->n, rep->k, sizeof(float), &bytes[1]))
            return shoal_err_set(err, SHOAL_EINVAL, "%s reply: n x k overflows", opname);
        return s_check_fanout_fields(rep, what, err);
    case WIRE_OP_GET:
        if (rep->n == 0 || rep->dim == 0)
            return shoal_err_set(err, SHOAL_EINVAL, "%s reply: n and dim must be >= 1", opname);
        if (!rep->found || !rep->vecs)
            return shoal_err_set(err, SHOAL_EINVAL, "%s reply: found or vecs is NULL", opname);
        if (!s_mul3(rep->n, 1, 1, &bytes[0]) || !s_mul3(rep->n, rep->dim, sizeof(float), &bytes[1]))
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
        if (!s_mul3(rep->n, 1, sizeof(uint32_t), &bytes[0]) ||
            !s_mul3(rep->n, 1, sizeof(uint64_t), &bytes[1]))
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
        if (!s_mul3(rep->n, 1, sizeof(uint64_t), &bytes[0]) ||
            !s_mul3(rep->n, rep->dim, sizeof(float), &bytes[1]))
            return shoal_err_set(err, SHOAL_EINVAL, "%s: n x dim overflows", what);
        return s_check_text(rep->cursor, sizeof rep->cursor, what, "cursor", err);
    default:
        break;
    }
    return 0;
}

int wire_reply_encode(const wire_reply_t *rep, wire_frames_t *out, shoal_err_t *err)
{
    memset(out, 0, sizeof *out);
    shoal_err_clear(err);
    const char *opname = wire_op_name(rep->op);
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
    size_t bytes[3] = {0, 0, 0};
    int rc;
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
    if (rep->code == 0) {
        switch (rep->op) {
        case WIRE_OP_INSERT:
        case WIRE_OP_DELETE:
        case WIRE_OP_LIST_DROP:
            s_enc_uint(&e, "count", rep->count);
            s_enc_uint(&e, "seq", rep->seq);
            break;
        case WIRE_OP_SEARCH:
            s_enc_uint(&e, "n", rep->n);
            s_enc_uint(&e, "k", rep->k);
            s_enc_str(&e, "mode", wire_mode_name(rep->mode_used));
            s_enc_fanout_fields(&e, rep);
            if (rep->nprobe_used)
                s_enc_uint(&e, "nprobe", rep->nprobe_used);
            if (rep->ef_used)
                s_enc_uint(&e, "ef", rep->ef_used);
            if (rep->recall > 0)
                s_enc_f64(&e, "recall", rep->recall);
            break;
        case WIRE_OP_KNN_GRAPH:
            s_enc_uint(&e, "n", rep->n);
            s_enc_uint(&e, "k", rep->k);
            if (rep->mode_used != WIRE_MODE_AUTO)
                s_enc_str(&e, "mode", wire_mode_name(rep->mode_used));
            s_enc_fanout_fields(&e, rep);
            s_enc_str(&e, "cursor", rep->cursor);
            s_enc_uint(&e, "total", rep->total);
            break;
        case WIRE_OP_GET:
            s_enc_uint(&e, "n", rep->n);
            s_enc_uint(&e, "dim", rep->dim);
            break;
        case WIRE_OP_LIST_COUNTS:
            s_enc_uint(&e, "n", rep->n);
            break;
        case WIRE_OP_LIST_EXPORT:
            s_enc_uint(&e, "n", rep->n);
            s_enc_uint(&e, "dim", rep->dim);
            s_enc_str(&e, "cursor", rep->cursor);
            s_enc_uint(&e, "done", rep->done);
            break;
        default:
            break;
        }
    }
    if (e.failed) {
        s_enc_abandon(&e);
        return shoal_err_set(err, SHOAL_ENOMEM, "out of memory encoding a reply header");
    }
    if ((rc = s_enc_finish(&e, out, err)))
        return rc;
    if (rep->code == 0 && rep->op == WIRE_OP_SEARCH) {
        s_add_frame(out, rep->ids, bytes[0]);
        s_add_frame(out, rep->dists, bytes[1]);
    } else if (rep->code == 0 && rep->op == WIRE_OP_KNN_GRAPH) {
        s_add_frame(out, rep->ids, bytes[0]);
        s_add_frame(out, rep->dists, bytes[1]);
        s_add_frame(out, rep->qids, bytes[2]);
    } else if (rep->code == 0 && rep->op == WIRE_OP_GET) {
        s_add_frame(out, rep->found, bytes[0]);
        s_add_frame(out, rep->vecs, bytes[1]);
    } else if (rep->code == 0 && rep->op == WIRE_OP_LIST_COUNTS) {
        s_add_frame(out, rep->lists, bytes[0]);
        s_add_frame(out, rep->counts, bytes[1]);
    } else if (rep->code == 0 && rep->op == WIRE_OP_LIST_EXPORT) {
        s_add_frame(out, rep->ids, bytes[0]);
        s_add_frame(out, rep->vecs, bytes[1]);
    }
    return 0;
}
