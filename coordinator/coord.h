/*
 * coord.h - the coordinator server: the cluster's only door for clients.
 * It holds the catalog (coordinator/catalog.h), routes writes to the shards
 * owning each vector's IVF list, fans searches out to the shards owning each
 * query's probed lists and merges their answers (coordinator/fanout.h).
 * Requests and replies follow docs/protocol.md (net/wire.h).
 *
 * Threads and sockets:
 *   loop thread (coord_run's caller) owns every socket: the ROUTER bound to
 *       the listen endpoint (clients), one DEALER per shard (connected to its
 *       endpoint), and the inproc end of the training worker. It never waits
 *       on a shard: every shard request is sent without blocking and becomes
 *       a pending entry (keyed by a coordinator-unique rid) of a job; replies
 *       advance the job; a deadline per job ends it. Routing (the batched
 *       exact search against the centroids) and merging run on this thread.
 *   training worker: one thread that runs k-means and placement for `train`
 *       (seconds to minutes), then hands the result back to the loop, which
 *       stores it in the catalog and replies.
 *
 * Ops (docs/protocol.md, section "Coordinator"):
 *   ping, stats                       answered by the loop at once
 *   create_collection, drop_collection, train, insert, delete
 *                                     writes: queued (a FIFO of at most
 *                                     COORD_WRITES_MAX); one starts when it
 *                                     shares no id (insert, delete) or
 *                                     collection (create, drop, train) with a
 *                                     running or earlier queued write, so
 *                                     writes to one id keep arrival order and
 *                                     never race (coord_private.h)
 *   search, get, knn_graph            run concurrently with each other and with
 *                                     the writes in progress
 *   checkpoint                        forwarded to every shard
 * Writes need every shard they touch to be up: a write that would touch a
 * shard marked down is refused with SHOAL_EUNAVAIL naming it, before anything
 * is written. create and drop touch every shard.
 *
 * Insert (an upsert; ids already present are replaced):
 *   1. the collection must be trained; if it is not and the batch holds at
 *      least nlist vectors, it is trained on this batch first (documented "on
 *      the first vectors inserted"); otherwise SHOAL_EINVAL says to train.
 *   2. each vector's nearest centroid (kmeans_assign, nprobe 1) is its list;
 *      catalog_lookup gives the list it had.
 *   3. an intent (catalog.h) records old and new lists, synced;
 *   4. one insert sub-batch per owning shard; all must acknowledge within the
 *      write timeout;
 *   5. the id map is updated (synced); ids whose old list is owned by another
 *      shard are deleted there; the intent is cleared; the client gets its
 *      acknowledgement. A failure in 4 answers the client with the shard's
 *      error (not acknowledged) and re-drives the intent at once; an intent
 *      that cannot be completed (a shard went down) stays and is re-driven
 *      when the shard is back up, and at start-up.
 * Delete: ids looked up in the id map; an intent (new list none) and the map
 *   update, synced; one delete per owning shard; the intent cleared; the
 *   reply's count is the ids that were present. A shard failure answers the
 *   error but rolls forward: the intent stays and the re-drive deletes the
 *   copies when the shard is back. A write waiting on a shard that is marked
 *   down ends at once with SHOAL_EUNAVAIL, its intent kept.
 * Search: each query's nprobe nearest centroids, the plan (fanout.h), one
 *   search sub-batch per shard holding only its queries (k, mode, ef, filter
 *   passed through), the merge. A shard marked down is not asked; a shard that
 *   misses the deadline (request deadline_ms, else opts.deadline_ms) is given
 *   up: the reply then has partial = 1 and names the missing shards. So is a
 *   shard that lacks the collection (SHOAL_ENOTFOUND): the coordinator
 *   re-creates it there. Another error reply from a shard fails the whole
 *   request, prefixed with the shard's endpoint.
 *   A collection not yet trained holds nothing (inserts need centroids): its
 *   searches are answered with padding only, and its k-NN graph is empty.
 * knn_graph: a cursor walks the collection's lists in placement order (shard
 *   by shard, by list within a shard, by id within a list); each call takes the
 *   next `chunk` ids from the membership, gets their vectors from their shards,
 *   searches them through the search path with k + 1, drops each row's own id
 *   (or the last entry when it is not there) and replies n rows with the next
 *   cursor ("" when done) and the total.
 * Health: every shard is pinged every ping_interval_ms; one that has not
 *   answered anything for down_after_ms is marked down (logged once) and back
 *   up at its next answer (logged), when the coordinator makes sure every
 *   catalog collection exists on it and re-drives pending intents.
 * Backpressure: at most COORD_JOBS_MAX client requests in progress; beyond
 *   that the loop stops reading the ROUTER. Replies waiting for clients that
 *   do not read them are bounded by opts.max_pending_reply_bytes (wire_io.h's
 *   reply budget): beyond it a reply is replaced by a SHOAL_ELIMIT error and
 *   counted in stats.
 *
 * Metrics (opts.metrics, net/http_metrics.h; none when NULL): every
 * client reply is counted there by op and status with its duration; about
 * once a second the loop renders the Prometheus text (coord_metrics_publish:
 * shards up, collections, fan-out, intents, repair, moves, reply bytes;
 * docs/operations.md "Monitoring" lists them) and its readiness
 * (coord_ready) and publishes both; the HTTP thread never reads coordinator
 * state.
 *
 * Security (opts.curve_cert, opts.curve_shard_cert): CURVE on the clients'
 * ROUTER and on the shard links, each independently; docs/operations.md
 * "Security" says which keys go where.
 *
 * Stopping: coord_stop() (async-signal-safe) or opts.stop_fd becoming
 * readable: the loop stops reading requests, lets jobs in progress finish (or
 * reach their deadline), then returns; coord_destroy closes the catalog.
 * Thread-safety: coord_run on one thread; coord_stop from anywhere.
 * Ownership: coord_new returns a server freed by coord_destroy(&coord).
 */
#ifndef SHOAL_COORD_H
#define SHOAL_COORD_H

#include "common/error.h"
#include "net/http_metrics.h"
#include "net/wire.h"
#include "net/wire_curve.h"

#include <stddef.h>
#include <stdint.h>

#define COORD_JOBS_MAX 4096          /* client requests in progress */
#define COORD_WRITES_MAX 1024        /* writes waiting */
#define COORD_NLIST_DEFAULT 256      /* IVF lists when create does not say */
#define COORD_NPROBE_DEFAULT 16      /* lists probed when neither create nor search says */
#define COORD_DEADLINE_MS_DEFAULT 5000
#define COORD_WRITE_TIMEOUT_MS_DEFAULT 60000
#define COORD_PING_INTERVAL_MS_DEFAULT 500
#define COORD_DOWN_AFTER_MS_DEFAULT 2000
#define COORD_CHUNK_DEFAULT 1024     /* knn_graph rows per reply */
#define COORD_ROUTE_INLINE_MACS_DEFAULT (1u << 23) /* ~2 ms of one core; 64 queries at
                                                       nlist 1,024 and dim 128 */
#define COORD_SUB_BATCH_MAX_DEFAULT 4096 /* 2 MiB of queries at dim 128: a few ms of copying */
#define COORD_HEDGE_PCT_DEFAULT 10   /* of the deadline: 500 ms of the default 5 s */
#define COORD_REPAIR_CHUNK_DEFAULT 512
#define COORD_REPAIR_PAUSE_MS_DEFAULT 5
#define COORD_LATENCY_SAMPLES 1024   /* per op, for the percentiles in stats */

typedef struct {
    const char *listen;              /* endpoint to bind; "tcp://127.0.0.1:*" picks a port */
    const char *data_dir;            /* the catalog's RocksDB directory */
    const char *const *shards;       /* shard endpoints (may be empty: the catalog's) */
    size_t nshards;
    wire_limits_t limits;            /* enforced on client requests */
    uint32_t nlist_default;          /* COORD_NLIST_DEFAULT */
    uint32_t nprobe_default;         /* COORD_NPROBE_DEFAULT */
    uint32_t deadline_ms;            /* search / knn_graph default deadline */
    uint32_t write_timeout_ms;       /* how long a write waits for its shards */
    uint32_t ping_interval_ms;
    uint32_t down_after_ms;
    uint32_t chunk_default;          /* knn_graph */
    const char *device;              /* k-means and routing engine: auto | cpu | gpu:0,.. */
    size_t threads;                  /* k-means / routing CPU threads; 0 = online cores */
    int stop_fd;                     /* when readable, stop; -1 = none */
    size_t max_pending_reply_bytes;  /* reply bytes queued for unread clients; 0 = default */
    uint32_t replication_default;    /* R of a collection created without one (1..3) */
    uint32_t write_quorum_default;   /* W of one created without one (capped at its R) */
    uint32_t hedge_pct;              /* R > 1: a sub-query unanswered after this % of the
                                        deadline is sent to other replicas too (0 = never) */
    size_t route_inline_macs;        /* a search batch of fewer multiply-adds (queries x
                                        nlist x dim) is routed on the loop, a bigger one on
                                        the routing thread; 0 = COORD_ROUTE_INLINE_MACS_DEFAULT */
    uint32_t sub_batch_max;          /* queries per search request to a shard; a bigger share
                                        goes in several, a few per turn of the loop;
                                        0 = COORD_SUB_BATCH_MAX_DEFAULT */
    uint32_t repair_chunk;           /* rows per step when a replica list is rebuilt */
    uint32_t repair_pause_ms;        /* pause between two repair steps (throttle) */
    double recall_sample;            /* fraction of client searches sampled for the online
                                        recall estimate, 0..1 (0: off); < 0: unset (the
                                        environment's SHOAL_RECALL_SAMPLE, else 0.005) */
    double recall_budget;            /* share of the time those exact re-runs may take,
                                        (0, 1]; < 0: unset (SHOAL_RECALL_BUDGET, else
                                        COORD_RECALL_BUDGET) */
    http_metrics_t *metrics;         /* where replies are counted and the metrics text and
                                        readiness published (borrowed; outlives coord_run);
                                        NULL: none */
    const wire_curve_cert_t *curve_cert; /* own certificate, secret key included: the ROUTER
                                            is a CURVE server with it (the caller runs the
                                            allow-list, wire_curve_auth_new) and CURVE shard
                                            links use it as their client key (borrowed;
                                            outlives the coordinator); NULL: plain */
    const wire_curve_cert_t *curve_shard_cert; /* the shards' public certificate (one pair
                                                  for every shard): the DEALERs are CURVE
                                                  clients of it; needs curve_cert (borrowed);
                                                  NULL: plain shard links */
} coord_opts_t;

typedef struct coord coord_t;

/* The defaults above, wire_limits_default(), no shards, stop_fd -1. */
void coord_opts_default(coord_opts_t *opts);

/*
 * Opens the catalog, reconciles the shard registry (catalog_shards_set),
 * binds the ROUTER and connects to the shards. NULL on error (err says why:
 * the catalog's error, "no shards: give --shards", a bind failure).
 */
coord_t *coord_new(const coord_opts_t *opts, shoal_err_t *err);

/* Serves until stopped; 0 after a clean stop, negative when the loop failed. */
int coord_run(coord_t *coord, shoal_err_t *err);

/* Asks the loop to stop. Async-signal-safe. */
void coord_stop(coord_t *coord);

/* The bound endpoint (borrowed). */
const char *coord_endpoint(const coord_t *coord);

/*
 * 1 when the coordinator is ready to serve: not stopping, and every list of
 * every trained collection has a readable replica (coord_replica_readable)
 * on a shard that answers pings. Otherwise 0 and why (cap bytes) gets one
 * line naming the first thing missing ("collection \"a\": list 3 has no
 * readable replica: shard 1 (tcp://...) is down"). Loop thread only.
 */
int coord_ready(coord_t *coord, char *why, size_t cap);

/*
 * Renders the coordinator's metrics text and readiness and publishes them
 * to opts.metrics (nothing when NULL). coord_run calls it about once a
 * second and when it starts stopping; loop thread only.
 */
void coord_metrics_publish(coord_t *coord);

void coord_destroy(coord_t **coord_p);

#endif
