/*
 * shoal_client.h - a small synchronous client for anything that speaks
 * docs/protocol.md (the coordinator, or a shard directly): one call per op,
 * plus a generic call over wire_request_t / wire_reply_t and a raw call that
 * sends frames the caller built (tests of malformed requests).
 *
 * Transport: one ZeroMQ DEALER socket (czmq) connected to the endpoint. Every
 * call sends one request and waits for its reply up to the client's timeout;
 * one request is in flight at a time, and replies are matched by rid. On a
 * timeout the socket is thrown away and a new one connected ("lazy pirate"),
 * so a late reply to an abandoned request can never be taken for the answer
 * to the next one. ZeroMQ reconnects by itself when the server restarts.
 *
 * Errors: every call returns 0 or a negative SHOAL_E* code. When the server
 * answered with an error, the code and message are the server's, unchanged
 * ("collection \"docs\": expected dim 128, got 96"); SHOAL_ETIMEOUT when no
 * reply came in time; SHOAL_EPROTO when the reply could not be decoded.
 *
 * Ownership: arrays returned through `**` out-parameters are malloc'd and the
 * caller's to free() (on error they are set to NULL). Input arrays are only
 * read during the call. shoal_client_new returns a client the caller frees
 * with shoal_client_destroy(&client).
 *
 * Thread-safety: a client belongs to one thread at a time (its socket does).
 * czmq's default SIGINT/SIGTERM handler is installed by czmq at first use
 * unless the program called zsys_handler_set(NULL) before.
 */
#ifndef SHOAL_CLIENT_H
#define SHOAL_CLIENT_H

#include "common/distance.h"
#include "common/error.h"
#include "net/wire.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SHOAL_CLIENT_TIMEOUT_DEFAULT_MS 10000

typedef struct shoal_client shoal_client_t;

/*
 * Connects to endpoint ("tcp://127.0.0.1:7701"); nothing is sent yet, so a
 * server that is not up is only noticed by the first call (timeout).
 * timeout_ms <= 0 uses SHOAL_CLIENT_TIMEOUT_DEFAULT_MS. NULL on error.
 */
shoal_client_t *shoal_client_new(const char *endpoint, int timeout_ms, shoal_err_t *err);

/*
 * shoal_client_new over CURVE (ZeroMQ's authentication and encryption):
 * client_secret_cert is this client's certificate file (the _secret file
 * of `shoal keygen`; its public file must be in the server's
 * --curve-clients directory), server_public_cert the server's public
 * certificate file. NULL on error, err naming the file that cannot be read
 * or is not a certificate. A server that does not accept the key answers
 * nothing (ZeroMQ ends the handshake silently): calls then fail with
 * SHOAL_ETIMEOUT, and the message says to check the keys.
 */
shoal_client_t *shoal_client_new_curve(const char *endpoint, int timeout_ms,
                                       const char *client_secret_cert,
                                       const char *server_public_cert, shoal_err_t *err);

/* Closes the socket and frees; NULL-safe; sets *client_p to NULL. */
void shoal_client_destroy(shoal_client_t **client_p);

/* The endpoint (borrowed, valid until destroy). */
const char *shoal_client_endpoint(const shoal_client_t *client);

/* Sets the per-call timeout (<= 0: the default). */
void shoal_client_set_timeout(shoal_client_t *client, int timeout_ms);

/* Limits under which replies are decoded (default wire_limits_default()). */
void shoal_client_set_limits(shoal_client_t *client, const wire_limits_t *limits);

/* ------------------------------------------------------------------------ */
/* One call per op                                                          */
/* ------------------------------------------------------------------------ */

/* Liveness. *info / *info_len (both may be NULL) get the reply's info map (malloc'd). */
int shoal_client_ping(shoal_client_t *client, void **info, size_t *info_len, shoal_err_t *err);

/* M / ef_construction 0: the server's defaults. */
int shoal_client_create(shoal_client_t *client, const char *coll, size_t dim, shoal_metric_t metric,
                        size_t M, size_t ef_construction, shoal_err_t *err);

int shoal_client_drop(shoal_client_t *client, const char *coll, shoal_err_t *err);

/* Upserts n vectors (n x dim floats). *seq (may be NULL) gets the write's sequence number. */
int shoal_client_insert(shoal_client_t *client, const char *coll, const uint64_t *ids,
                        const float *vecs, size_t n, size_t dim, uint64_t *seq, shoal_err_t *err);

/*
 * shoal_client_insert with each row's IVF list (lists: n entries, or NULL:
 * none). For a shard, as the coordinator sends it; a coordinator routes by
 * itself and ignores the lists.
 */
int shoal_client_insert_lists(shoal_client_t *client, const char *coll, const uint64_t *ids,
                              const float *vecs, const uint32_t *lists, size_t n, size_t dim,
                              uint64_t *seq, shoal_err_t *err);

/* Deletes n ids; *deleted (may be NULL) gets how many existed. */
int shoal_client_delete(shoal_client_t *client, const char *coll, const uint64_t *ids, size_t n,
                        size_t *deleted, uint64_t *seq, shoal_err_t *err);

/* Coordinator: create with IVF parameters (zeros: the coordinator's defaults). */
typedef struct {
    size_t nlist;           /* IVF lists */
    size_t M;               /* HNSW links per node on the shards */
    size_t ef_construction; /* HNSW build candidates on the shards */
    size_t replication;     /* copies of each IVF list on distinct shards (R, 1..3) */
    size_t write_quorum;    /* replicas that must hold a write before it is acked (W, 1..R) */
    double target_recall;   /* default recall target of its searches, (0, 1]; 0 = none */
    const char *storage;    /* "f32" | "f16" | "sq8" (the shards' RAM copy); NULL = f32 */
} shoal_create_opts_t;

int shoal_client_create_ivf(shoal_client_t *client, const char *coll, size_t dim,
                            shoal_metric_t metric, const shoal_create_opts_t *opts,
                            shoal_err_t *err);

/* Coordinator: train options (a zeroed struct or NULL: defaults). */
typedef struct {
    int random_init;        /* 0 = k-means++, 1 = random sample rows */
    size_t max_iters;       /* 0 = default */
    uint64_t seed;          /* 0 = the coordinator's */
} shoal_train_opts_t;

/*
 * Coordinator: trains coll's centroids on n sample rows (n x dim floats) and
 * places its lists on the shards. *text (may be NULL) gets what training
 * reported (iterations, objective, balance, locality) as one line of text,
 * malloc'd for the caller. The call waits the client's timeout like any
 * other: k-means on a large sample takes minutes, so raise it first
 * (shoal_client_set_timeout; the CLI uses 600 s).
 */
int shoal_client_train(shoal_client_t *client, const char *coll, const float *sample, size_t n,
                       size_t dim, const shoal_train_opts_t *opts, char **text,
                       shoal_err_t *err);

typedef struct {
    size_t k;               /* results per query, >= 1 */
    wire_mode_t mode;       /* WIRE_MODE_AUTO (the zero value), _HNSW or _EXACT */
    size_t ef;              /* HNSW candidates; 0 = the server's default */
    const uint64_t *filter; /* allow-list of ids, or NULL */
    size_t nfilter;         /* its length */
    size_t nprobe;          /* coordinator: lists probed; 0 = the collection's default */
    size_t deadline_ms;     /* coordinator: answer within; 0 = its default */
    double recall;          /* coordinator: the recall@10 wanted, (0, 1] (nprobe / ef from its
                               calibration); 0 = none */
} shoal_search_opts_t;

/* What a search reply said besides the results. */
typedef struct {
    wire_mode_t used;                /* the mode that ran */
    int partial;                     /* 1 when some shards missed the deadline */
    char missing[WIRE_MISSING_MAX];  /* their endpoints, comma-separated */
    uint64_t fanout;                 /* sum over queries of shards asked (coordinator) */
    uint32_t nprobe, ef;             /* at a recall target: the setting that ran (else 0) */
    double recall;                   /* ... and the recall its calibration measured */
} shoal_search_info_t;

/*
 * Searches nq queries (nq x dim floats). *ids and *dists (nq x k each,
 * best first, padded with TOPK_ID_NONE / +INFINITY) are malloc'd for the
 * caller; dists may be NULL when not wanted. *used (may be NULL) gets the
 * mode that ran.
 */
int shoal_client_search(shoal_client_t *client, const char *coll, const float *queries, size_t nq,
                        size_t dim, const shoal_search_opts_t *opts, uint64_t **ids, float **dists,
                        wire_mode_t *used, shoal_err_t *err);

/* shoal_client_search with the reply's extra fields in *info (may be NULL). */
int shoal_client_search_ex(shoal_client_t *client, const char *coll, const float *queries,
                           size_t nq, size_t dim, const shoal_search_opts_t *opts, uint64_t **ids,
                           float **dists, shoal_search_info_t *info, shoal_err_t *err);

/* Coordinator: one chunk of the k-NN graph. */
typedef struct {
    size_t n;                        /* rows in this chunk */
    size_t k;                        /* neighbours per row */
    uint64_t *qids;                  /* n row ids (malloc'd, the caller's via _chunk_fini) */
    uint64_t *ids;                   /* n x k neighbour ids, TOPK_ID_NONE padding */
    float *dists;                    /* n x k distances */
    char cursor[WIRE_CURSOR_MAX + 1];/* pass to the next call; "" = the graph is complete */
    uint64_t total;                  /* rows of the whole graph */
    int partial;                     /* some shards missed the deadline for this chunk */
    char missing[WIRE_MISSING_MAX];
} shoal_knn_chunk_t;

void shoal_knn_chunk_fini(shoal_knn_chunk_t *chunk);

/*
 * Fetches the chunk after cursor ("" or NULL: the first). opts: k (>= 1),
 * mode, ef, nprobe, deadline_ms as for search (filter ignored); chunk_rows 0
 * = the coordinator's default. On success *chunk is filled (free with
 * shoal_knn_chunk_fini).
 */
int shoal_client_knn_graph(shoal_client_t *client, const char *coll,
                           const shoal_search_opts_t *opts, size_t chunk_rows,
                           const char *cursor, shoal_knn_chunk_t *chunk, shoal_err_t *err);

/*
 * The stored vectors of n ids: *found (n flags) and *vecs (n x *dim floats,
 * zeros where absent), both malloc'd for the caller.
 */
int shoal_client_get(shoal_client_t *client, const char *coll, const uint64_t *ids, size_t n,
                     uint8_t **found, float **vecs, size_t *dim, shoal_err_t *err);

/*
 * Stats of the server (coll NULL or "") or one collection. *text (may be NULL)
 * gets the info map as one line of JSON-like text; *info / *info_len (may be
 * NULL) the map's msgpack bytes, for wire_info_lookup. Both malloc'd.
 */
int shoal_client_stats(shoal_client_t *client, const char *coll, char **text, void **info,
                       size_t *info_len, shoal_err_t *err);

/* Checkpoints one collection, or all (coll NULL or ""). */
int shoal_client_checkpoint(shoal_client_t *client, const char *coll, shoal_err_t *err);

/* ------------------------------------------------------------------------ */
/* Cluster growth (docs/protocol.md 11.9; the coordinator only)             */
/* ------------------------------------------------------------------------ */

/*
 * Adds, drains or removes the shard at endpoint: op is WIRE_OP_SHARD_ADD,
 * WIRE_OP_SHARD_DRAIN or WIRE_OP_SHARD_REMOVE (anything else is SHOAL_EINVAL,
 * as is an endpoint that is empty, longer than WIRE_ENDPOINT_MAX or not
 * printable ASCII; nothing is sent then). A drain starts the moves and
 * answers at once; stats' "moves" map follows them. *text, *info / *info_len
 * (each may be NULL) get the reply's info map as for shoal_client_stats.
 */
int shoal_client_shard(shoal_client_t *client, wire_op_t op, const char *endpoint, char **text,
                       void **info, size_t *info_len, shoal_err_t *err);

/*
 * Plans the list moves that even out the shards and, unless dry_run, starts
 * them (the reply comes once they are planned, not done). max_moves 0: no
 * limit; rate_mb 0: the coordinator's copy rate, else MB/s. Out parameters as
 * for shoal_client_shard; the info map's "plan" lists the moves (at most
 * 1,000 of them).
 */
int shoal_client_rebalance(shoal_client_t *client, int dry_run, uint32_t max_moves,
                           uint32_t rate_mb, char **text, void **info, size_t *info_len,
                           shoal_err_t *err);

/* ------------------------------------------------------------------------ */
/* Snapshots (docs/protocol.md 11.10; the coordinator only)                 */
/* ------------------------------------------------------------------------ */

/*
 * Takes a consistent snapshot of the cluster named name (every shard's
 * database and the catalog, each at <data-dir>/snapshots/NAME on its own
 * host). A name that breaks docs/protocol.md 4.13's rules is SHOAL_EINVAL and
 * nothing is sent. Out parameters as for shoal_client_shard: the info map
 * holds "paused_ms", "shards" and "collections".
 */
int shoal_client_snapshot_create(shoal_client_t *client, const char *name, char **text,
                                 void **info, size_t *info_len, shoal_err_t *err);

/* The snapshots the catalog records; out parameters as for shoal_client_shard. */
int shoal_client_snapshot_list(shoal_client_t *client, char **text, void **info,
                               size_t *info_len, shoal_err_t *err);

/* ------------------------------------------------------------------------ */
/* A shard's IVF lists (docs/protocol.md 4.10-4.12; shards only)            */
/* ------------------------------------------------------------------------ */

/*
 * The lists of coll with at least one vector on the shard, ascending, and
 * their counts: *lists and *counts (*n entries) are malloc'd for the caller.
 */
int shoal_client_list_counts(shoal_client_t *client, const char *coll, uint32_t **lists,
                             uint64_t **counts, size_t *n, shoal_err_t *err);

/* One chunk of a list's rows. */
typedef struct {
    size_t n;                         /* rows in this chunk */
    size_t dim;                       /* floats per vector */
    uint64_t *ids;                    /* n ids, ascending (malloc'd; free with _chunk_fini) */
    float *vecs;                      /* n x dim, bit for bit as stored */
    char cursor[WIRE_CURSOR_MAX + 1]; /* pass to the next call (opaque) */
    int done;                         /* no rows followed this chunk */
} shoal_list_chunk_t;

void shoal_list_chunk_fini(shoal_list_chunk_t *chunk);

/*
 * Fetches up to limit (1..max_batch) rows of list after cursor ("" or NULL:
 * from the start). Walk a list by passing each chunk's cursor back until a
 * chunk says done. On success *chunk is filled (free with _chunk_fini).
 */
int shoal_client_list_export(shoal_client_t *client, const char *coll, uint32_t list,
                             const char *cursor, size_t limit, shoal_list_chunk_t *chunk,
                             shoal_err_t *err);

/* Deletes every vector of list; *removed and *seq (may be NULL) as for delete. */
int shoal_client_list_drop(shoal_client_t *client, const char *coll, uint32_t list,
                           size_t *removed, uint64_t *seq, shoal_err_t *err);

/* ------------------------------------------------------------------------ */
/* Generic and raw calls                                                    */
/* ------------------------------------------------------------------------ */

/* A received message's frames, copied out of ZeroMQ. */
typedef struct {
    size_t count; /* frames */
    void **data;  /* data[i]: frame i's bytes (malloc'd; NULL for an empty frame) */
    size_t *size; /* size[i]: its length */
} shoal_frames_t;

/* Frees; NULL-safe; sets *frames_p to NULL. */
void shoal_frames_destroy(shoal_frames_t **frames_p);

/*
 * Sends req (its rid is set here) and decodes the reply into rep. On success
 * (the server's code may still be an error: it is returned, with err filled)
 * rep's bulk pointers point into *frames, which the caller frees with
 * shoal_frames_destroy after wire_reply_fini(rep). On a transport or decode
 * error nothing is left to free.
 */
int shoal_client_call(shoal_client_t *client, wire_request_t *req, wire_reply_t *rep,
                      shoal_frames_t **frames, shoal_err_t *err);

/*
 * Sends nframes caller-built frames as they are and returns the next message
 * that arrives, undecoded, in *reply (the caller's). Returns 0 when a reply
 * came, SHOAL_ETIMEOUT when none did.
 */
int shoal_client_raw(shoal_client_t *client, const void *const *data, const size_t *sizes,
                     size_t nframes, shoal_frames_t **reply, shoal_err_t *err);

#ifdef __cplusplus
}
#endif

#endif
