/*
 * wire.c - the wire codec's shared part: op and mode names, the name and text
 * checks, limits, and init / fini of frames, requests and replies.
 * docs/protocol.md is the specification; wire.h the contract. Decoding is in
 * wire_decode.c, encoding in wire_encode.c; what they share with this file is
 * declared in wire_private.h.
 */
#include "net/wire.h"
#include "net/wire_private.h"

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

bool wire_mode_from_text(const char *text, size_t len, wire_mode_t *mode)
{
    for (size_t m = 0; m < S_NMODES; m++) {
        if (s_word_eq(text, len, s_mode_names[m])) {
            *mode = (wire_mode_t)m;
            return true;
        }
    }
    return false;
}

bool wire_metric_from_text(const char *text, size_t len, shoal_metric_t *metric)
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
size_t wire_name_bad_at(const char *name, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (!s_name_char(name[i]))
            return i;
    }
    return len;
}

int wire_snapshot_name_check(const char *what, const char *name, size_t len, shoal_err_t *err)
{
    char show[48];
    if (len == 0)
        return shoal_err_set(err, SHOAL_EINVAL, "%s: the snapshot name must not be empty", what);
    if (len > WIRE_NAME_MAX)
        return shoal_err_set(err, SHOAL_EINVAL,
                             "%s: the snapshot name has %zu bytes, at most %d are allowed", what,
                             len, WIRE_NAME_MAX);
    size_t bad = wire_name_bad_at(name, len);
    if (bad < len)
        return shoal_err_set(err, SHOAL_EINVAL,
                             "%s: the snapshot name \"%s\" has a byte outside [A-Za-z0-9_.-] at "
                             "offset %zu",
                             what, wire_printable(name, len, show, sizeof show), bad);
    /* A leading dot would allow "." and ".." (the snapshots folder itself, the data dir). */
    if (name[0] == '.')
        return shoal_err_set(err, SHOAL_EINVAL,
                             "%s: the snapshot name \"%s\" must not begin with \".\"", what,
                             wire_printable(name, len, show, sizeof show));
    return 0;
}

/*
 * Copies wire text into buf for a message: at most 40 bytes, anything outside
 * printable ASCII (and the quote) shown as '?', so a message never carries
 * control bytes or breaks its own quoting.
 */
const char *wire_printable(const char *text, size_t len, char *buf, size_t cap)
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

/* Index of the first byte outside printable ASCII (0x20..0x7e), or len when there is none. */
size_t wire_printable_bad_at(const char *text, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c < 0x20 || c > 0x7e)
            return i;
    }
    return len;
}

bool wire_mode_known(wire_mode_t mode)
{
    return (unsigned)mode < S_NMODES;
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
bool wire_mul3(uint64_t a, uint64_t b, uint64_t c, size_t *out)
{
    uint64_t ab, abc;
    if (__builtin_mul_overflow(a, b, &ab) || __builtin_mul_overflow(ab, c, &abc) || abc > SIZE_MAX)
        return false;
    *out = (size_t)abc;
    return true;
}
