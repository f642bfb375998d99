/*
 * net/wire_types.h - the protocol's names, limits and enums without the codec.
 *
 * The wire version, the length limits (names, cursors, messages, endpoints),
 * the op and search-mode enums and the "no list" marker. The shard's store and
 * the coordinator's catalog keep collection names and search modes and include
 * this, not net/wire.h, so they do not see msgpack or the message structs.
 * docs/protocol.md defines what each value means on the wire.
 */
#ifndef SHOAL_WIRE_TYPES_H
#define SHOAL_WIRE_TYPES_H

#define WIRE_VERSION 1
#define WIRE_NAME_MAX 64      /* collection names: 1..64 of [A-Za-z0-9_.-] */
#define WIRE_FRAMES_MAX 5     /* header + at most 4 bulk frames */
#define WIRE_MSG_MAX 512      /* longest error message carried */
#define WIRE_CURSOR_MAX 64    /* knn_graph cursor: printable ASCII, opaque to clients */
#define WIRE_MISSING_MAX 1024 /* search reply: the missing shards, comma-separated */
#define WIRE_ENDPOINT_MAX 255 /* shard_add/drain/remove: a shard's endpoint, printable ASCII */
/* The IVF list of a row inserted without one (an insert with no "lists" frame). */
#define WIRE_LIST_NONE 0xFFFFFFFFu
/* wire_request_t.storage: set when create_collection names a storage kind. */
#define WIRE_STORAGE_GIVEN 0x100u

typedef enum {
    WIRE_OP_NONE = 0,
    WIRE_OP_PING,
    WIRE_OP_CREATE_COLLECTION,
    WIRE_OP_DROP_COLLECTION,
    WIRE_OP_INSERT,
    WIRE_OP_DELETE,
    WIRE_OP_SEARCH,
    WIRE_OP_GET,
    WIRE_OP_STATS,
    WIRE_OP_CHECKPOINT,
    WIRE_OP_TRAIN,     /* coordinator only: k-means on a sample, then list placement */
    WIRE_OP_KNN_GRAPH, /* coordinator only: one chunk of the collection's k-NN graph */
    WIRE_OP_LIST_COUNTS, /* shard: vectors per IVF list */
    WIRE_OP_LIST_EXPORT, /* shard: one chunk of one list's ids and vectors */
    WIRE_OP_LIST_DROP,   /* shard: delete every vector of one list */
    WIRE_OP_SHARD_ADD,    /* coordinator only: a new shard joins the registry */
    WIRE_OP_SHARD_DRAIN,  /* coordinator only: move every list off one shard */
    WIRE_OP_SHARD_REMOVE, /* coordinator only: a drained shard leaves */
    WIRE_OP_REBALANCE,    /* coordinator only: plan (and start) list moves */
    WIRE_OP_SNAPSHOT,        /* shard: copy the database to <data-dir>/snapshots/<name> */
    WIRE_OP_SNAPSHOT_DROP,   /* shard: remove that copy */
    WIRE_OP_SNAPSHOT_CREATE, /* coordinator only: a consistent snapshot of the cluster */
    WIRE_OP_SNAPSHOT_LIST,   /* coordinator only: the snapshots in the catalog */
    WIRE_OP_COUNT
} wire_op_t;

typedef enum {
    WIRE_MODE_AUTO = 0,
    WIRE_MODE_HNSW = 1,
    WIRE_MODE_EXACT = 2,
} wire_mode_t;

#endif
