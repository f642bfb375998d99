/*
 * wire.h - shoal's wire codec: requests and replies to and from frames.
 *
 * docs/protocol.md is the specification; this module is its one implementation,
 * used by the shard, the coordinator and the client. A message is a list of
 * frames: frame 0 is a msgpack map (the header), frames 1.. carry bulk arrays as
 * raw little-endian bytes (ids uint64, vectors and distances float32), so
 * nothing is encoded one float at a time. The codec knows nothing about
 * sockets: it turns structs into frames and frames into structs; servers move
 * the frames with ZeroMQ.
 *
 * Decoding trusts nothing: every key's type, every count and every frame size
 * is checked against the header and against wire_limits_t before anything is
 * allocated from a wire-supplied size; unknown keys are ignored (fields are
 * only ever appended), unknown ops and versions are errors. A decode error
 * fills shoal_err_t with a message that names the problem ("insert: frame 2
 * has 1000 bytes, expected 512 (n=1 x dim=128 x 4)") and, where frame 0 holds
 * a readable map, the request's op and rid so the error reply can be matched.
 *
 * Bulk pointers in a decoded message point into the caller's frames (zero
 * copy) when they are suitably aligned, and into a copy owned by the message
 * otherwise; either way they stay valid until wire_request_fini /
 * wire_reply_fini and as long as the frames live.
 *
 * Encoding: wire_*_encode fills a wire_frames_t whose frame 0 is a malloc'd
 * msgpack buffer owned by the frames object and whose bulk frames point at the
 * caller's arrays (borrowed: keep them alive until the frames are sent).
 *
 * Thread-safety: pure functions over caller-owned structs.
 */
#ifndef SHOAL_WIRE_H
#define SHOAL_WIRE_H

#include "common/distance.h"
#include "common/error.h"
#include "net/wire_types.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif


/*
 * 0 when name (len bytes) is a snapshot name (docs/protocol.md 4.13: 1..
 * WIRE_NAME_MAX of [A-Za-z0-9_.-], not beginning with '.', so never "..", a
 * hidden name or a path), else SHOAL_EINVAL with err saying why, prefixed
 * "<what>: ". The one check of the rule: the codec, the shard's store (which
 * makes a directory of it) and the client call it.
 */
int wire_snapshot_name_check(const char *what, const char *name, size_t len, shoal_err_t *err);

/* "ping", "insert", ... ; NULL for an invalid op. */
const char *wire_op_name(wire_op_t op);
/* The op named by text, or WIRE_OP_NONE. */
wire_op_t wire_op_parse(const char *text, size_t len);
const char *wire_mode_name(wire_mode_t mode);

/* Limits enforced while decoding (servers take them from flags). */
typedef struct {
    size_t max_message_bytes; /* all frames together */
    size_t max_batch;         /* vectors / ids / queries in one request */
    size_t max_k;             /* k of a search */
    size_t max_dim;           /* dim of a collection */
    size_t max_filter;        /* ids in a search's allow-list */
} wire_limits_t;

#define WIRE_MAX_MESSAGE_BYTES_DEFAULT (256u << 20)
#define WIRE_MAX_BATCH_DEFAULT 1000000
/*
 * k. Each layer bounds k once, by its own named limit: a server's requests
 * by max_k (default WIRE_MAX_K_DEFAULT; --max-k takes 1..WIRE_MAX_K_MAX),
 * the shard store by SHARD_STORE_K_MAX, HNSW by HNSW_K_MAX, the CPU exact
 * engine by FLAT_K_MAX, the GPU select kernel by KNN_K_MAX_GPU (larger k
 * runs on the CPU). WIRE_MAX_K_MAX is the least of the shard's limits, so a
 * k the wire lets through is one every layer below takes.
 */
#define WIRE_MAX_K_DEFAULT 4096
#define WIRE_MAX_K_MAX 65536
#define WIRE_MAX_DIM_DEFAULT 8192
#define WIRE_MAX_FILTER_DEFAULT 10000000

/* The defaults above. */
wire_limits_t wire_limits_default(void);

/* A message's frames (borrowed views, except frame 0 when encoded here). */
typedef struct {
    size_t count;                         /* frames in use */
    const void *data[WIRE_FRAMES_MAX];    /* frame bytes */
    size_t size[WIRE_FRAMES_MAX];         /* frame lengths */
    void *owned_header;                   /* frame 0's buffer when encoded here, else NULL */
} wire_frames_t;

/* Frees the encoded header, if any; the frames object is empty afterwards. */
void wire_frames_fini(wire_frames_t *frames);

/* ------------------------------------------------------------------------ */
/* Requests                                                                 */
/* ------------------------------------------------------------------------ */

typedef struct {
    uint32_t version;                /* WIRE_VERSION */
    wire_op_t op;                    /* what to do */
    uint64_t rid;                    /* request id, echoed in the reply */
    char coll[WIRE_NAME_MAX + 1];    /* collection ("" where the op takes none) */

    /* create_collection */
    uint32_t dim;                    /* vector dimension */
    shoal_metric_t metric;           /* distance */
    uint32_t M;                      /* HNSW links per node; 0 = server default */
    uint32_t ef_construction;        /* HNSW build candidates; 0 = server default */
    uint32_t nlist;                  /* coordinator: IVF lists; 0 = coordinator default */
    uint32_t replication;            /* coordinator: copies of each list (R); 0 = 1 */
    uint32_t write_quorum;           /* coordinator: replicas that ack a write (W); 0 = 1 */

    /* train (coordinator): the sample is n x dim floats in frame 1 (vecs) */
    uint32_t init;                   /* 0 = k-means++ (default), 1 = random rows */
    uint32_t max_iters;              /* Lloyd iterations; 0 = default */
    uint64_t seed;                   /* k-means seed; sent only when non-zero */

    /* insert, delete, get, search */
    uint64_t n;                      /* vectors, ids or queries in the bulk frames */
    const uint64_t *ids;             /* insert/delete/get: n ids (frame 1) */
    const float *vecs;               /* insert: n x dim (frame 2); search: n x dim queries (frame 1) */
    const uint32_t *lists;           /* insert: n IVF lists (frame 3), or NULL: every row WIRE_LIST_NONE */
    const uint8_t *quantizer;        /* insert: the collection's sq8 quantizer record (frame 4,
                                      * after lists; common/quant.h's layout), or NULL */
    size_t quantizer_len;            /* its bytes */

    /* search */
    uint32_t k;                      /* results per query */
    wire_mode_t mode;                /* hnsw | exact | auto */
    uint32_t ef;                     /* HNSW candidates; 0 = server default */
    uint64_t nfilter;                /* allow-list length; 0 = no filter */
    const uint64_t *filter;          /* allow-list of ids (frame 2), sorted or not */

    /* search and knn_graph at the coordinator (a shard ignores them) */
    uint32_t nprobe;                 /* IVF lists probed per query; 0 = collection default */
    uint32_t deadline_ms;            /* answer within this; 0 = coordinator default */
    double recall;                   /* search: the recall@k wanted, in (0, 1]: the coordinator
                                        picks nprobe / ef from its calibration; 0 = none */
    uint32_t storage;                /* create: 0 = the default (f32), else WIRE_STORAGE_GIVEN |
                                      * quant_kind_t (common/quant.h): "f32" | "f16" | "sq8" */
    double target_recall;            /* create (coordinator): the collection's default recall
                                        target, in (0, 1]; 0 = the coordinator's default */

    /* knn_graph: rows (stored vectors) per reply and where to go on */
    uint32_t chunk;                  /* rows per reply; 0 = coordinator default */
    char cursor[WIRE_CURSOR_MAX + 1];/* "" = from the start, else the previous reply's cursor (also list_export) */

    /* list_export, list_drop: which IVF list (WIRE_LIST_NONE is one too) */
    uint32_t list;                   /* the list */
    uint32_t limit;                  /* list_export: rows per reply, 1..max_batch */

    /* shard_add, shard_drain, shard_remove (coordinator) */
    char endpoint[WIRE_ENDPOINT_MAX + 1]; /* the shard: 1..WIRE_ENDPOINT_MAX printable ASCII */

    /* rebalance (coordinator) */
    uint32_t dry_run;                /* 1 = plan only, move nothing; 0 or 1 */
    uint32_t max_moves;              /* list moves planned at most; 0 = no limit */
    uint32_t rate_mb;                /* copy rate, MB/s; 0 = the coordinator's default */

    /* snapshot, snapshot_drop (shard), snapshot_create (coordinator) */
    char name[WIRE_NAME_MAX + 1];    /* the snapshot: a collection name not beginning with '.' */

    void *owned;                     /* aligned copies made while decoding; freed by fini */
} wire_request_t;

/* Zeroes req (version WIRE_VERSION); call before filling one to encode. */
void wire_request_init(wire_request_t *req);
void wire_request_fini(wire_request_t *req);

/*
 * Checks req (op known, name valid, counts and pointers consistent; for
 * insert and search, dim is the vectors' dimension and must be set) and
 * encodes it. Returns 0 or a negative code.
 */
int wire_request_encode(const wire_request_t *req, wire_frames_t *out, shoal_err_t *err);

/*
 * Decodes frames into req. Insert and search carry the vectors' "dim" in the
 * header, so vector frames are size-checked here; whether that dim matches
 * the collection's is for the server to say. Returns 0, or a negative code
 * with err naming the problem. On error, req->rid and req->op are still set
 * when frame 0 begins with a complete msgpack map that holds "rid" once as an
 * unsigned integer / "op" once as a string naming a known op, whatever else
 * is wrong (docs/protocol.md section 6); otherwise they stay 0 / WIRE_OP_NONE.
 */
int wire_request_decode(const wire_frames_t *frames, const wire_limits_t *limits,
                        wire_request_t *req, shoal_err_t *err);

/* ------------------------------------------------------------------------ */
/* Replies                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct {
    uint32_t version;        /* WIRE_VERSION */
    wire_op_t op;            /* the request's op (WIRE_OP_NONE if it could not be read) */
    uint64_t rid;            /* the request's id (0 if it could not be read) */
    int code;                /* SHOAL_OK or a negative SHOAL_E* code */
    char msg[WIRE_MSG_MAX];  /* error message; "" on success */

    /* search: n queries x k results (frames 1 and 2); get: n vectors (frame 2) */
    uint64_t n;              /* queries (search) or ids (get) */
    uint32_t k;              /* results per query (search) */
    wire_mode_t mode_used;   /* search: the mode that ran (hnsw or exact, never auto) */
    uint32_t dim;            /* get: vector dimension */
    const uint64_t *ids;     /* search: n x k ids, TOPK_ID_NONE padding; list_export: n ids */
    const float *dists;      /* search: n x k distances */
    const uint8_t *found;    /* get: n flags (frame 1), 1 = present */
    const float *vecs;       /* get: n x dim (frame 2), zeros where absent; list_export: n x dim */

    /* search and knn_graph at the coordinator */
    uint32_t partial;        /* 1 when some shards did not answer in time */
    char missing[WIRE_MISSING_MAX]; /* those shards' endpoints, comma-separated ("" if none) */
    uint64_t fanout;         /* sum over the queries of the shards each was sent to */
    uint32_t nprobe_used;    /* search at a recall target: the lists probed (0: not sent) */
    uint32_t ef_used;        /* ... the ef the shards ran (0: not sent) */
    double recall;           /* ... the recall@k calibration measured for them (0: not sent) */

    /* knn_graph: n rows x k neighbours in frames 1-2 (ids, dists) as for search */
    const uint64_t *qids;    /* frame 3: the n rows' own ids */
    char cursor[WIRE_CURSOR_MAX + 1]; /* pass back for the next chunk; knn_graph: "" = graph complete */
    uint64_t total;          /* rows the whole graph has (for progress) */

    /* list_counts: n lists (frame 1) and their vector counts (frame 2), by list */
    const uint32_t *lists;   /* n lists, ascending, each with at least one vector */
    const uint64_t *counts;  /* n counts */

    /* list_export: n rows, ids (frame 1) and vectors (frame 2, n x dim), then
     * "cursor" (pass it back for the next chunk) and done */
    uint32_t done;           /* 1 when the list had no rows after this chunk */

    /* insert / delete / list_drop */
    uint64_t count;          /* vectors inserted / ids deleted */
    uint64_t seq;            /* the shard's sequence number after the write */

    /*
     * Any successful or error reply may carry it; a successful stats,
     * shard_add, shard_drain, shard_remove, rebalance or snapshot op
     * (snapshot, snapshot_drop, snapshot_create, snapshot_list) reply must. A
     * msgpack map encoded by the server (wire_info_* helpers below) carried
     * as the header's "info" value, returned here as raw msgpack bytes
     * (borrowed from frame 0).
     */
    const void *info;        /* msgpack bytes of the "info" map, or NULL */
    size_t info_len;         /* their length */

    void *owned;             /* aligned copies made while decoding */
} wire_reply_t;

void wire_reply_init(wire_reply_t *rep);
void wire_reply_fini(wire_reply_t *rep);

/* An error reply for req (op and rid may be unknown: WIRE_OP_NONE / 0). */
void wire_reply_error(wire_reply_t *rep, wire_op_t op, uint64_t rid, int code, const char *msg);

int wire_reply_encode(const wire_reply_t *rep, wire_frames_t *out, shoal_err_t *err);
int wire_reply_decode(const wire_frames_t *frames, const wire_limits_t *limits,
                      wire_reply_t *rep, shoal_err_t *err);

/* ------------------------------------------------------------------------ */
/* The "info" map of stats / ping replies                                   */
/* ------------------------------------------------------------------------ */

/*
 * A small builder for a msgpack map of string keys to numbers, strings,
 * nested maps and arrays of those, so servers do not include msgpack
 * themselves. Build it, then point wire_reply_t.info/info_len at
 * wire_info_data/len before encoding.
 *
 * Arrays came after the first clients: a client built before them refuses a
 * reply whose info holds one (eproto). So only replies of ops that came with
 * or after arrays (rebalance's "plan") carry them; stats and ping never do.
 */
typedef struct wire_info wire_info_t;

wire_info_t *wire_info_new(void);
void wire_info_destroy(wire_info_t **info_p);
/* Opens a map of n entries (the top level is one too); nested maps are values. */
void wire_info_map(wire_info_t *info, size_t n);
/* Opens an array of n values (any of the kinds here, maps included), as a map's value. */
void wire_info_array(wire_info_t *info, size_t n);
void wire_info_key(wire_info_t *info, const char *key);
void wire_info_u64(wire_info_t *info, uint64_t value);
void wire_info_i64(wire_info_t *info, int64_t value);
void wire_info_f64(wire_info_t *info, double value);
void wire_info_str(wire_info_t *info, const char *value);
/* Non-zero if an allocation failed while building (the buffer is then unusable). */
int wire_info_failed(const wire_info_t *info);
const void *wire_info_data(const wire_info_t *info);
size_t wire_info_len(const wire_info_t *info);

/*
 * Renders an info map as one line of JSON-like text into buf (for the CLI and
 * tests): {"count": 10, "shard": {"up": 1}, "plan": [{"list": 3}]}. Returns 0,
 * SHOAL_EFORMAT when the bytes are not a map of the kinds above, or
 * SHOAL_ELIMIT when the text does not fit in cap bytes (buf then holds a
 * NUL-terminated prefix).
 */
int wire_info_to_text(const void *data, size_t len, char *buf, size_t cap);

/*
 * Looks up a dotted path ("collections.docs.count") in an info map and returns
 * it as a double in *value. Below an array a component is the element's
 * index in decimal ("plan.0.list"); below a map it is a key, digits or not.
 * Returns 0, SHOAL_ENOTFOUND, or SHOAL_EFORMAT.
 */
int wire_info_lookup(const void *data, size_t len, const char *path, double *value);

/*
 * The number of elements of the array, or of entries of the map, at path (as
 * for wire_info_lookup) in *n. Returns 0, SHOAL_ENOTFOUND, or SHOAL_EFORMAT
 * (the value there is a number or a string).
 */
int wire_info_lookup_len(const void *data, size_t len, const char *path, size_t *n);

/*
 * wire_info_lookup for a string value: copied into buf (cap bytes, NUL-terminated).
 * Returns 0, SHOAL_ENOTFOUND, SHOAL_EFORMAT (not a string), or SHOAL_ELIMIT
 * (does not fit; buf then holds a prefix).
 */
int wire_info_lookup_str(const void *data, size_t len, const char *path, char *buf, size_t cap);

#ifdef __cplusplus
}
#endif

#endif
