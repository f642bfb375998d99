/*
 * server.c - the shard server: sockets, lanes of worker threads, process
 * counters. server.h describes the actors; this file is their code.
 *
 * Why a load-balancing broker rather than PUSH/PULL: PUSH deals jobs round
 * robin to every connected worker whether it is busy or not, so a query could
 * wait behind a 100k-query batch on one worker while the others idle. Here a
 * thread gets a job only when it has returned its previous one (the returned
 * job doubles as "I am idle"), and the waiting jobs sit in one FIFO per lane
 * in the loop, where shutdown can also find and refuse them.
 *
 * Why ping is answered by the loop itself: it is a liveness check, and its
 * answer should not wait behind a long batch in the read lane; it reports the
 * lanes' queue depths so a health checker still sees the load.
 */
#include "shard/server.h"

#include <czmq.h>

#include "common/log.h"
#include "common/parfor.h"
#include "shard/peers.h"
#include "common/topk.h"
#include "common/vec_check.h"
#include "net/service.h"
#include "net/wire_io.h"

#include <errno.h>
#include <inttypes.h>
#include <assert.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Messages handled per socket per poll round, so no socket starves the rest. */
#define S_BURST 64
/* Queued request bytes (both lanes) above which the loop stops reading. */
#define S_QUEUE_BYTES_MIN ((size_t)1 << 30)

/* ------------------------------------------------------------------------ */
/* Types                                                                    */
/* ------------------------------------------------------------------------ */

/* Process figures copied at the moment a stats job is dispatched. */
typedef struct {
    double uptime_s;                  /* seconds since shard_server_new */
    uint64_t requests[WIRE_OP_COUNT]; /* replies sent, by op (WIRE_OP_NONE: undecodable) */
    uint64_t errors[WIRE_OP_COUNT];   /* of which error replies */
    size_t samples[WIRE_OP_COUNT];    /* latency samples behind the percentiles */
    double p50[WIRE_OP_COUNT];        /* latency percentiles in microseconds */
    double p95[WIRE_OP_COUNT];
    double p99[WIRE_OP_COUNT];
    uint64_t searches_inline;         /* searches the loop ran itself */
    size_t inflight;     /* jobs running in lane threads */
    size_t queued;       /* jobs waiting in the lanes' FIFOs */
    int gpu_devices[64]; /* GPU ordinals the exact engines use */
    int ngpu;            /* entries in gpu_devices */
    wire_io_budget_stats_t replies; /* queued reply bytes, dropped replies */
} s_snapshot_t;

typedef struct s_job s_job_t;

/* The store's figures for the metrics, gathered by a read-lane thread. */
typedef struct {
    shard_coll_stats_t *colls; /* ncolls entries (malloc'd) */
    size_t ncolls;
    shard_disk_stats_t disk;   /* the data dir's space */
    int64_t at_us;             /* monotonic time they were read; 0: never */
} s_figures_t;

/* One request on its way through the server; owned by whoever holds it. */
struct s_job {
    s_job_t *next;          /* FIFO link while the job waits in a lane */
    zframe_t *identity;     /* the client's routing id from the ROUTER */
    int delimiter;          /* the client sent an empty delimiter frame (REQ) */
    zmsg_t *frames;         /* the request frames; req's bulk pointers point into them */
    size_t bytes;           /* their total size */
    wire_request_t req;     /* the decoded request */
    int64_t start_us;       /* monotonic time the loop received it */
    s_snapshot_t *snapshot; /* stats only: process figures at dispatch */
    zmsg_t *reply;          /* the encoded reply, once built */
    int code;               /* the reply's status, for the counters */
    s_figures_t *figures;   /* an internal metrics job (no client, no reply): its result */
};

typedef struct s_lane s_lane_t;

/* One lane thread: the socket it owns and its join handle. */
typedef struct {
    s_lane_t *lane;   /* the lane it serves */
    zsock_t *sock;    /* DEALER to the lane's back-end; the thread's own */
    pthread_t thread; /* join handle */
} s_worker_t;

/* A lane: threads of one kind and the jobs waiting for them. */
struct s_lane {
    shard_server_t *server; /* back pointer (threads read store and limits) */
    const char *name;       /* "read" or "write", for logs */
    char endpoint[96];      /* the back-end's inproc endpoint */
    zsock_t *backend;       /* ROUTER the threads connect to; the loop's */
    s_worker_t *workers;    /* the threads */
    size_t nworkers;        /* threads started */
    zframe_t **idle;        /* routing ids of idle threads (a stack) */
    size_t nidle;           /* entries in idle */
    size_t busy;            /* jobs at threads */
    s_job_t *head;          /* FIFO of waiting jobs: oldest */
    s_job_t *tail;          /* newest */
    size_t queued;          /* jobs in the FIFO */
    size_t queued_bytes;    /* their request bytes */
};

struct shard_server {
    shard_server_opts_t opts;    /* as given, with the strings below */
    char *listen;                /* copy of opts.listen */
    char *data_dir;              /* copy of opts.store.data_dir */
    char *device;                /* copy of opts.store.device */
    char *endpoint;              /* the bound endpoint */
    wire_limits_t limits;        /* enforced on requests */
    size_t queue_bytes_max;      /* backpressure threshold over both lanes */
    shard_store_t *store;        /* the collections */
    zsock_t *router;             /* the clients' socket; the loop's */
    service_stop_t stop;         /* shard_server_stop and the process's stop fd */
    int64_t start_us;            /* monotonic time of shard_server_new */
    s_lane_t read;               /* search, get, stats, list_counts, list_export */
    s_lane_t write;              /* create, drop, insert, delete, checkpoint, list_drop */
    wire_io_counters_t counters; /* replies sent, errors, latency rings, by op */
    wire_io_budget_t *reply_budget; /* bytes of replies queued in ZeroMQ */
    s_figures_t figures;         /* the store's figures of the last metrics job; the loop's */
    int figures_pending;         /* a metrics job is in the read lane */
    uint64_t searches_inline;    /* searches the loop ran itself (server.h) */
    shard_peers_t *peers;        /* each client link's first rid; the loop's */
};

static_assert(SHARD_SERVER_LATENCY_SAMPLES == WIRE_IO_LATENCY_SAMPLES,
              "the shard's latency ring is wire_io's");

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */
/* ------------------------------------------------------------------------ */

/* Sends one pointer-sized frame, after an optional routing id (consumed). */
static int s_send_ptr(zsock_t *sock, zframe_t **identity, void *ptr)
{
    zmsg_t *msg = zmsg_new();
    if (!msg)
        return -1;
    if (identity && zmsg_append(msg, identity) != 0)
        goto fail;
    if (zmsg_addmem(msg, &ptr, sizeof ptr) != 0)
        goto fail;
    if (zmsg_send(&msg, sock) != 0)
        goto fail;
    return 0;
fail:
    zmsg_destroy(&msg);
    return -1;
}

/* ------------------------------------------------------------------------ */
/* Replies                                                                  */
/* ------------------------------------------------------------------------ */

/* Builds job->reply as an error reply. */
static void s_job_fail(s_job_t *job, int code, const char *msg)
{
    wire_reply_t rep;
    wire_reply_init(&rep);
    wire_reply_error(&rep, job->req.op, job->req.rid, code, msg);
    zmsg_destroy(&job->reply);
    job->reply = wire_io_encode_reply(&rep, &job->code);
    wire_reply_fini(&rep);
}

static void s_figures_free(s_figures_t **figures_p)
{
    if (*figures_p)
        free((*figures_p)->colls);
    free(*figures_p);
    *figures_p = NULL;
}

static void s_job_destroy(s_job_t **job_p)
{
    s_job_t *job = *job_p;
    if (!job)
        return;
    s_figures_free(&job->figures);
    wire_request_fini(&job->req);
    zmsg_destroy(&job->frames);
    zframe_destroy(&job->identity);
    zmsg_destroy(&job->reply);
    free(job->snapshot);
    free(job);
    *job_p = NULL;
}

/*
 * The loop's last step for every job: its reply goes out on the ROUTER with
 * the envelope it came with, the counters are updated, the job is freed.
 */
static void s_job_finish(shard_server_t *server, s_job_t **job_p)
{
    s_job_t *job = *job_p;
    if (job->figures) { /* a metrics job: its figures replace the last ones */
        server->figures_pending = 0;
        if (job->figures->at_us) {
            free(server->figures.colls);
            server->figures = *job->figures;
            job->figures->colls = NULL;
        }
        s_job_destroy(job_p);
        return;
    }
    int64_t micros = zclock_usecs() - job->start_us;
    wire_io_count(&server->counters, job->req.op, job->req.rid, job->code, micros, NULL);
    http_metrics_request(server->opts.metrics, job->req.op, job->code, micros);
    wire_io_send_reply(server->router, server->reply_budget, &job->reply, &job->identity,
                       job->delimiter, job->req.op, job->req.rid);
    s_job_destroy(job_p);
}

/* ------------------------------------------------------------------------ */
/* Checks the codec leaves to the server                                    */
/* ------------------------------------------------------------------------ */

/* The collection's dim, or ENOTFOUND / EDIM (want_dim 0: any dim) with the usual words. */
static int s_check_collection(shard_server_t *server, const char *coll, size_t want_dim,
                              size_t *dim, shoal_metric_t *metric, shoal_err_t *err)
{
    int rc = shard_store_shape(server->store, coll, dim, metric, err);
    if (rc == SHOAL_ENOTFOUND)
        return shoal_err_set(err, SHOAL_ENOTFOUND, "collection \"%s\" does not exist", coll);
    if (rc != 0)
        return rc;
    if (want_dim && want_dim != *dim)
        return shoal_err_set(err, SHOAL_EDIM, "collection \"%s\": expected dim %zu, got %zu", coll,
                             *dim, want_dim);
    return 0;
}

/* Rewrites a store's ENOTFOUND for a collection into the usual words. */
static int s_not_found(int rc, const char *coll, shoal_err_t *err)
{
    if (rc == SHOAL_ENOTFOUND && coll && *coll)
        return shoal_err_set(err, SHOAL_ENOTFOUND, "collection \"%s\" does not exist", coll);
    return rc;
}

/* TOPK_ID_NONE pads result rows, so it can never be a stored id. */
static int s_check_ids(const char *op, const uint64_t *ids, size_t n, shoal_err_t *err)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] == TOPK_ID_NONE)
            return shoal_err_set(err, SHOAL_EINVAL,
                                 "%s: id %" PRIu64 " at row %zu is reserved (it marks \"no "
                                 "result\")",
                                 op, ids[i], i);
    return 0;
}

/* A reply of `bytes` bulk bytes must fit the message limit the peer also applies. */
static int s_check_reply_size(shard_server_t *server, const char *op, size_t n, size_t per_row,
                              shoal_err_t *err)
{
    size_t limit = server->limits.max_message_bytes;
    if (per_row && n > (limit / per_row))
        return shoal_err_set(err, SHOAL_ELIMIT,
                             "%s: the reply would need %zu x %zu bytes, over the message limit of "
                             "%zu bytes (--max-message-bytes); split the request",
                             op, n, per_row, limit);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* The info maps                                                            */
/* ------------------------------------------------------------------------ */

static size_t s_inflight(const shard_server_t *server)
{
    return server->read.busy + server->write.busy;
}

static size_t s_queued(const shard_server_t *server)
{
    return server->read.queued + server->write.queued;
}

static double s_uptime(const shard_server_t *server)
{
    return (double)(zclock_usecs() - server->start_us) / 1e6;
}

/* Copies the loop's counters for a stats job (runs on the loop thread). */
static s_snapshot_t *s_snapshot_new(shard_server_t *server)
{
    s_snapshot_t *snap = calloc(1, sizeof *snap);
    if (!snap)
        return NULL;
    snap->uptime_s = s_uptime(server);
    snap->inflight = s_inflight(server);
    snap->queued = s_queued(server);
    snap->searches_inline = server->searches_inline;
    for (size_t op = 0; op < WIRE_OP_COUNT; op++) {
        snap->requests[op] = server->counters.requests[op];
        snap->errors[op] = server->counters.errors[op];
        snap->samples[op] =
            wire_io_latency(&server->counters, op, &snap->p50[op], &snap->p95[op], &snap->p99[op]);
    }
    int n = shard_store_devices(server->store, snap->gpu_devices,
                                (int)(sizeof snap->gpu_devices / sizeof snap->gpu_devices[0]));
    snap->ngpu = n > 0 ? n : 0;
    wire_io_budget_stats(server->reply_budget, &snap->replies);
    return snap;
}

/* "0,1" for the devices in use, "" for none. */
static void s_device_list(const int *devices, int n, char *buf, size_t cap)
{
    size_t len = 0;
    buf[0] = '\0';
    for (int i = 0; i < n && len < cap; i++) {
        int w = snprintf(buf + len, cap - len, "%s%d", i ? "," : "", devices[i]);
        if (w < 0)
            break;
        len += (size_t)w;
    }
}

/* The per-collection map: every shard_coll_stats_t field (24 entries). */
static void s_info_collection(wire_info_t *info, const shard_coll_stats_t *c)
{
    wire_info_key(info, c->name);
    wire_info_map(info, 24);
    wire_io_info_str(info, "storage", quant_kind_name(c->storage));
    wire_io_info_u64(info, "quantizer_crc32", c->quantizer_crc);
    /* RAM per live vector by component: the graph's parts, then the exact
     * engine's float32 copy (f32 collections only) and GPU memory. */
    double per = c->count ? 1.0 / (double)c->count : 0.0;
    wire_io_info_f64(info, "bytes_per_vector",
                     (double)(c->hnsw_bytes + c->exact_bytes) * per);
    wire_io_info_f64(info, "bytes_per_vector_codes", (double)c->bytes_codes * per);
    wire_io_info_f64(info, "bytes_per_vector_links", (double)c->bytes_links * per);
    wire_io_info_f64(info, "bytes_per_vector_ids", (double)c->bytes_ids * per);
    wire_io_info_f64(info, "bytes_per_vector_other", (double)c->bytes_other * per);
    wire_io_info_f64(info, "bytes_per_vector_exact", (double)c->exact_bytes * per);
    wire_io_info_u64(info, "dim", c->dim);
    wire_io_info_str(info, "metric", shoal_metric_name(c->metric));
    wire_io_info_u64(info, "M", c->M);
    wire_io_info_u64(info, "ef_construction", c->ef_construction);
    wire_io_info_u64(info, "count", c->count);
    wire_io_info_u64(info, "deleted", c->deleted);
    wire_io_info_u64(info, "memory_bytes", c->hnsw_bytes + c->exact_bytes + c->device_bytes);
    wire_io_info_u64(info, "hnsw_bytes", c->hnsw_bytes);
    wire_io_info_u64(info, "exact_bytes", c->exact_bytes);
    wire_io_info_u64(info, "device_bytes", c->device_bytes);
    wire_io_info_u64(info, "on_gpu", c->on_gpu ? 1 : 0);
    wire_io_info_u64(info, "last_seq", c->last_seq);
    wire_io_info_u64(info, "checkpoint_seq", c->checkpoint_seq);
    wire_io_info_u64(info, "loaded_from_checkpoint", c->loaded_from_checkpoint ? 1 : 0);
    wire_io_info_u64(info, "replayed", c->replayed);
    wire_io_info_u64(info, "quarantined", c->quarantined);
}

/*
 * The stats reply's map; docs/protocol.md ("Shard stats") lists the keys.
 * Built by a read-lane thread from the snapshot the loop took.
 */
static wire_info_t *s_stats_info(const shard_server_t *server, const s_snapshot_t *snap,
                                 const shard_coll_stats_t *colls, size_t ncolls)
{
    wire_info_t *info = wire_info_new();
    if (!info)
        return NULL;
    char devices[256];
    s_device_list(snap->gpu_devices, snap->ngpu, devices, sizeof devices);
    size_t with_samples = 0;
    for (size_t op = 0; op < WIRE_OP_COUNT; op++)
        with_samples += snap->samples[op] > 0;

    shard_disk_stats_t disk;
    shard_store_disk_stats(server->store, &disk);
    wire_info_map(info, 19 + WIRE_IO_BUDGET_INFO_ENTRIES);
    wire_io_info_str(info, "role", "shard");
    wire_io_info_u64(info, "version", WIRE_VERSION);
    wire_io_info_str(info, "endpoint", server->endpoint);
    wire_io_info_str(info, "data_dir", server->data_dir);
    wire_io_info_f64(info, "uptime_s", snap->uptime_s);
    wire_io_info_u64(info, "workers", server->read.nworkers);
    wire_io_info_u64(info, "inflight", snap->inflight);
    wire_io_info_u64(info, "queued", snap->queued);
    wire_io_info_u64(info, "searches_inline", snap->searches_inline);
    wire_io_info_u64(info, "gpu_devices", (uint64_t)snap->ngpu);
    wire_io_info_str(info, "gpu_device_ids", devices);
    wire_io_info_u64(info, "disk_free_bytes", disk.free_bytes);
    wire_io_info_u64(info, "min_free_bytes", disk.min_free_bytes);
    wire_io_info_u64(info, "writes_refused_disk", disk.writes_refused);
    wire_io_info_u64(info, "read_only", disk.read_only ? 1 : 0);
    wire_io_info_budget(info, &snap->replies);
    wire_io_info_counters(info, "requests", snap->requests);
    wire_io_info_counters(info, "errors", snap->errors);
    wire_info_key(info, "latency_us");
    wire_info_map(info, with_samples);
    for (size_t op = 0; op < WIRE_OP_COUNT; op++) {
        if (!snap->samples[op])
            continue;
        wire_io_info_latency(info, op, snap->p50[op], snap->p95[op], snap->p99[op],
                             snap->samples[op], 1.0);
    }
    wire_info_key(info, "collections");
    wire_info_map(info, ncolls);
    for (size_t i = 0; i < ncolls; i++)
        s_info_collection(info, &colls[i]);
    if (wire_info_failed(info))
        wire_info_destroy(&info);
    return info;
}

/* ------------------------------------------------------------------------ */
/* Ops (lane threads)                                                       */
/* ------------------------------------------------------------------------ */

/* Arrays a reply borrows until it is encoded. */
typedef struct {
    uint64_t *ids;     /* search ids; list_export ids */
    float *dists;      /* search distances */
    uint8_t *found;    /* get flags */
    float *vecs;       /* get vectors; list_export vectors */
    uint32_t *lists;   /* list_counts lists */
    uint64_t *counts;  /* list_counts counts */
    wire_info_t *info; /* stats / create map */
} s_scratch_t;

static void s_scratch_fini(s_scratch_t *scratch)
{
    free(scratch->ids);
    free(scratch->dists);
    free(scratch->found);
    free(scratch->vecs);
    free(scratch->lists);
    free(scratch->counts);
    wire_info_destroy(&scratch->info);
}

static int s_attach_info(wire_reply_t *rep, s_scratch_t *scratch)
{
    return wire_io_reply_info(rep, scratch->info);
}

/* A search's k and the size of its reply against the limits: the lane's and the loop's check. */
static int s_check_search_size(shard_server_t *server, const wire_request_t *req,
                               shoal_err_t *err)
{
    if (req->k == 0)
        return shoal_err_set(err, SHOAL_EINVAL, "search: k must be >= 1, got 0");
    if (req->k > server->limits.max_k)
        return shoal_err_set(err, SHOAL_ELIMIT,
                             "search: k = %" PRIu32 " is over the limit of %zu "
                             "(--max-k)",
                             req->k, server->limits.max_k);
    return s_check_reply_size(server, "search", (size_t)req->n,
                              (size_t)req->k * (sizeof(uint64_t) + sizeof(float)), err);
}

static int s_do_search(shard_server_t *server, const wire_request_t *req, wire_reply_t *rep,
                       s_scratch_t *scratch, shoal_err_t *err)
{
    size_t dim;
    shoal_metric_t metric;
    int rc = s_check_collection(server, req->coll, req->dim, &dim, &metric, err);
    if (rc != 0)
        return rc;
    size_t n = (size_t)req->n, k = req->k;
    rc = s_check_search_size(server, req, err);
    if (rc == 0)
        rc = vec_check_rows("search", "query", req->vecs, n, dim, metric, NULL, err);
    if (rc != 0)
        return rc;
    rep->n = n;
    rep->k = (uint32_t)k;
    if (n == 0)
        return 0;
    scratch->ids = malloc(n * k * sizeof *scratch->ids);
    scratch->dists = malloc(n * k * sizeof *scratch->dists);
    if (!scratch->ids || !scratch->dists)
        return shoal_err_set(err, SHOAL_ENOMEM, "search: no memory for %zu x %zu results", n, k);
    wire_mode_t used = req->mode;
    rc = shard_store_search(server->store, req->coll, req->vecs, n, dim, k, req->mode, req->ef,
                            req->nfilter ? req->filter : NULL, (size_t)req->nfilter, scratch->ids,
                            scratch->dists, &used, err);
    if (rc != 0)
        return s_not_found(rc, req->coll, err);
    rep->ids = scratch->ids;
    rep->dists = scratch->dists;
    rep->mode_used = used == WIRE_MODE_AUTO ? WIRE_MODE_HNSW : used;
    return 0;
}

static int s_do_get(shard_server_t *server, const wire_request_t *req, wire_reply_t *rep,
                    s_scratch_t *scratch, shoal_err_t *err)
{
    size_t dim;
    int rc = s_check_collection(server, req->coll, 0, &dim, NULL, err);
    if (rc != 0)
        return rc;
    size_t n = (size_t)req->n;
    rc = s_check_reply_size(server, "get", n, 1 + dim * sizeof(float), err);
    if (rc != 0)
        return rc;
    rep->n = n;
    rep->dim = (uint32_t)dim;
    if (n == 0)
        return 0;
    scratch->found = calloc(n, 1);
    scratch->vecs = calloc(n * dim, sizeof(float));
    if (!scratch->found || !scratch->vecs)
        return shoal_err_set(err, SHOAL_ENOMEM, "get: no memory for %zu vectors", n);
    rc = shard_store_get(server->store, req->coll, req->ids, n, scratch->found, scratch->vecs, err);
    if (rc != 0)
        return s_not_found(rc, req->coll, err);
    rep->found = scratch->found;
    rep->vecs = scratch->vecs;
    return 0;
}

static int s_do_stats(shard_server_t *server, const s_job_t *job, wire_reply_t *rep,
                      s_scratch_t *scratch, shoal_err_t *err)
{
    if (!job->snapshot)
        return shoal_err_set(err, SHOAL_ENOMEM, "stats: no memory for the process figures");
    const char *coll = job->req.coll[0] ? job->req.coll : NULL;
    shard_coll_stats_t *colls = NULL;
    size_t ncolls = 0;
    int rc = shard_store_stats(server->store, coll, &colls, &ncolls, err);
    if (rc != 0)
        return s_not_found(rc, coll, err);
    scratch->info = s_stats_info(server, job->snapshot, colls, ncolls);
    free(colls);
    if (s_attach_info(rep, scratch) != 0)
        return shoal_err_set(err, SHOAL_ENOMEM, "stats: no memory for the info map");
    return 0;
}

static int s_do_create(shard_server_t *server, const wire_request_t *req, wire_reply_t *rep,
                       s_scratch_t *scratch, shoal_err_t *err)
{
    shard_coll_params_t p = {.dim = req->dim,
                             .metric = req->metric,
                             .M = req->M,
                             .ef_construction = req->ef_construction,
                             .storage = (quant_kind_t)(req->storage & ~WIRE_STORAGE_GIVEN)};
    int rc = shard_store_create_with(server->store, req->coll, &p, err);
    if (rc != 0)
        return rc;
    /* The reply states the parameters in effect (defaults filled in). */
    shard_coll_stats_t *colls = NULL;
    size_t ncolls = 0;
    if (shard_store_stats(server->store, req->coll, &colls, &ncolls, NULL) == 0 && ncolls == 1) {
        scratch->info = wire_info_new();
        if (scratch->info) {
            wire_info_map(scratch->info, 5);
            wire_info_key(scratch->info, "storage");
            wire_info_str(scratch->info, quant_kind_name(colls[0].storage));
            wire_info_key(scratch->info, "dim");
            wire_info_u64(scratch->info, colls[0].dim);
            wire_info_key(scratch->info, "metric");
            wire_info_str(scratch->info, shoal_metric_name(colls[0].metric));
            wire_info_key(scratch->info, "M");
            wire_info_u64(scratch->info, colls[0].M);
            wire_info_key(scratch->info, "ef_construction");
            wire_info_u64(scratch->info, colls[0].ef_construction);
            (void)s_attach_info(rep, scratch);
        }
    }
    free(colls);
    return 0;
}

static int s_do_insert(shard_server_t *server, const wire_request_t *req, wire_reply_t *rep,
                       shoal_err_t *err)
{
    size_t dim;
    int rc = s_check_collection(server, req->coll, req->dim, &dim, NULL, err);
    if (rc == 0)
        rc = s_check_ids("insert", req->ids, (size_t)req->n, err);
    /*
     * The finite part of vec_check here, naming the vector and its id; the
     * rest of the rule (a norm a float holds, cosine's non-zero rows) is the
     * store's check, which names the row, before anything is written. Both
     * messages are what clients (and test_shard) have always seen.
     */
    if (rc == 0)
        rc = vec_check_finite_rows("insert", "vector", req->vecs, (size_t)req->n, dim, req->ids,
                                   err);
    if (rc != 0)
        return rc;
    uint64_t seq = 0;
    if (req->n > 0) {
        rc = shard_store_insert_quantized(server->store, req->coll, req->ids, req->vecs,
                                          req->lists, (size_t)req->n, dim, req->quantizer,
                                          req->quantizer_len, &seq, err);
        if (rc != 0)
            return s_not_found(rc, req->coll, err);
    }
    rep->count = req->n;
    rep->seq = seq;
    return 0;
}

static int s_do_delete(shard_server_t *server, const wire_request_t *req, wire_reply_t *rep,
                       shoal_err_t *err)
{
    size_t dim;
    int rc = s_check_collection(server, req->coll, 0, &dim, NULL, err);
    if (rc != 0)
        return rc;
    size_t deleted = 0;
    uint64_t seq = 0;
    if (req->n > 0) {
        rc = shard_store_delete(server->store, req->coll, req->ids, (size_t)req->n, &deleted, &seq,
                                err);
        if (rc != 0)
            return s_not_found(rc, req->coll, err);
    }
    rep->count = deleted;
    rep->seq = seq;
    return 0;
}

static int s_do_list_counts(shard_server_t *server, const wire_request_t *req, wire_reply_t *rep,
                            s_scratch_t *scratch, shoal_err_t *err)
{
    size_t n = 0;
    int rc = shard_store_list_counts(server->store, req->coll, &scratch->lists, &scratch->counts,
                                     &n, err);
    if (rc != 0)
        return s_not_found(rc, req->coll, err);
    rep->n = n;
    rep->lists = scratch->lists;
    rep->counts = scratch->counts;
    return 0;
}

static int s_do_list_export(shard_server_t *server, const wire_request_t *req, wire_reply_t *rep,
                            s_scratch_t *scratch, shoal_err_t *err)
{
    size_t dim;
    int rc = s_check_collection(server, req->coll, 0, &dim, NULL, err);
    if (rc != 0)
        return rc;
    size_t limit = req->limit;
    if ((rc = s_check_reply_size(server, "list_export", limit,
                                 sizeof(uint64_t) + dim * sizeof(float), err)) != 0)
        return rc;
    scratch->ids = malloc(limit * sizeof *scratch->ids);
    scratch->vecs = malloc(limit * dim * sizeof *scratch->vecs);
    if (!scratch->ids || !scratch->vecs)
        return shoal_err_set(err, SHOAL_ENOMEM, "list_export: no memory for %zu rows", limit);
    size_t n = 0;
    int done = 0;
    rc = shard_store_list_export(server->store, req->coll, req->list, req->cursor, limit,
                                 scratch->ids, scratch->vecs, &n, rep->cursor, &done, err);
    if (rc != 0)
        return s_not_found(rc, req->coll, err);
    rep->n = n;
    rep->dim = (uint32_t)dim;
    rep->ids = scratch->ids;
    rep->vecs = scratch->vecs;
    rep->done = (uint32_t)done;
    return 0;
}

static int s_do_list_drop(shard_server_t *server, const wire_request_t *req, wire_reply_t *rep,
                          shoal_err_t *err)
{
    size_t removed = 0;
    uint64_t seq = 0;
    int rc = shard_store_list_drop(server->store, req->coll, req->list, &removed, &seq, err);
    if (rc != 0)
        return s_not_found(rc, req->coll, err);
    rep->count = removed;
    rep->seq = seq;
    return 0;
}

static int s_do_checkpoint(shard_server_t *server, const wire_request_t *req, shoal_err_t *err)
{
    const char *coll = req->coll[0] ? req->coll : NULL;
    int rc = shard_store_checkpoint(server->store, coll, err);
    return rc != 0 ? s_not_found(rc, coll, err) : 0;
}

/* snapshot (docs/protocol.md 4.13): the store's copy, and what it did as the info map. */
static int s_do_snapshot(shard_server_t *server, const wire_request_t *req, wire_reply_t *rep,
                         s_scratch_t *scratch, shoal_err_t *err)
{
    shard_snapshot_info_t si;
    int rc = shard_store_snapshot(server->store, req->name, &si, err);
    if (rc != 0)
        return rc;
    scratch->info = wire_info_new();
    if (!scratch->info)
        return shoal_err_set(err, SHOAL_ENOMEM, "snapshot: no memory for the info map");
    wire_info_map(scratch->info, 6);
    wire_io_info_str(scratch->info, "name", req->name);
    wire_io_info_str(scratch->info, "dir", si.dir);
    wire_io_info_u64(scratch->info, "seq", si.seq);
    wire_io_info_u64(scratch->info, "collections", si.collections);
    wire_io_info_u64(scratch->info, "graphs_checkpointed", si.graphs_checkpointed);
    wire_io_info_f64(scratch->info, "ms", si.ms);
    if (s_attach_info(rep, scratch) != 0)
        return shoal_err_set(err, SHOAL_ENOMEM, "snapshot: no memory for the info map");
    return 0;
}

/* snapshot_drop (4.14): removes the copy; "removed" says whether there was one. */
static int s_do_snapshot_drop(shard_server_t *server, const wire_request_t *req,
                              wire_reply_t *rep, s_scratch_t *scratch, shoal_err_t *err)
{
    int removed = 0;
    int rc = shard_store_snapshot_drop(server->store, req->name, &removed, err);
    if (rc != 0)
        return rc;
    scratch->info = wire_info_new();
    if (!scratch->info)
        return shoal_err_set(err, SHOAL_ENOMEM, "snapshot_drop: no memory for the info map");
    wire_info_map(scratch->info, 2);
    wire_io_info_str(scratch->info, "name", req->name);
    wire_io_info_u64(scratch->info, "removed", (uint64_t)removed);
    if (s_attach_info(rep, scratch) != 0)
        return shoal_err_set(err, SHOAL_ENOMEM, "snapshot_drop: no memory for the info map");
    return 0;
}

/*
 * A metrics job on a lane thread: the store's figures into job->figures
 * (at_us stays 0 when they cannot be read; the last ones are then kept).
 */
static void s_figures_run(shard_server_t *server, s_job_t *job)
{
    s_figures_t *f = job->figures;
    shoal_err_t err;
    shoal_err_clear(&err);
    if (shard_store_stats(server->store, NULL, &f->colls, &f->ncolls, &err) != 0) {
        log_warn("metrics: reading the store's figures: %s", err.msg);
        return;
    }
    shard_store_disk_stats(server->store, &f->disk);
    f->at_us = zclock_usecs();
}

/* Runs job on a lane thread and leaves its encoded reply in job->reply. */
static void s_job_run(shard_server_t *server, s_job_t *job)
{
    if (job->figures) {
        s_figures_run(server, job);
        return;
    }
    const wire_request_t *req = &job->req;
    wire_reply_t rep;
    wire_reply_init(&rep);
    rep.op = req->op;
    rep.rid = req->rid;
    s_scratch_t scratch;
    memset(&scratch, 0, sizeof scratch);
    shoal_err_t err;
    shoal_err_clear(&err);

    int rc;
    switch (req->op) {
    case WIRE_OP_SEARCH:
        rc = s_do_search(server, req, &rep, &scratch, &err);
        break;
    case WIRE_OP_GET:
        rc = s_do_get(server, req, &rep, &scratch, &err);
        break;
    case WIRE_OP_STATS:
        rc = s_do_stats(server, job, &rep, &scratch, &err);
        break;
    case WIRE_OP_CREATE_COLLECTION:
        rc = s_do_create(server, req, &rep, &scratch, &err);
        break;
    case WIRE_OP_DROP_COLLECTION:
        rc = shard_store_drop(server->store, req->coll, &err);
        rc = rc != 0 ? s_not_found(rc, req->coll, &err) : 0;
        break;
    case WIRE_OP_INSERT:
        rc = s_do_insert(server, req, &rep, &err);
        break;
    case WIRE_OP_DELETE:
        rc = s_do_delete(server, req, &rep, &err);
        break;
    case WIRE_OP_CHECKPOINT:
        rc = s_do_checkpoint(server, req, &err);
        break;
    case WIRE_OP_LIST_COUNTS:
        rc = s_do_list_counts(server, req, &rep, &scratch, &err);
        break;
    case WIRE_OP_LIST_EXPORT:
        rc = s_do_list_export(server, req, &rep, &scratch, &err);
        break;
    case WIRE_OP_LIST_DROP:
        rc = s_do_list_drop(server, req, &rep, &err);
        break;
    case WIRE_OP_SNAPSHOT:
        rc = s_do_snapshot(server, req, &rep, &scratch, &err);
        break;
    case WIRE_OP_SNAPSHOT_DROP:
        rc = s_do_snapshot_drop(server, req, &rep, &scratch, &err);
        break;
    default:
        rc = shoal_err_set(&err, SHOAL_EINTERNAL, "op %d reached a lane", (int)req->op);
        break;
    }
    if (rc != 0) {
        if (!err.msg[0])
            shoal_err_set(&err, rc, "%s failed: %s", wire_io_op_name(req->op), shoal_strerror(rc));
        s_job_fail(job, rc, err.msg);
    } else {
        job->reply = wire_io_encode_reply(&rep, &job->code);
    }
    wire_reply_fini(&rep);
    s_scratch_fini(&scratch);
}

/* A lane thread: says hello, then runs jobs until it receives a NULL job. */
static void *s_worker_main(void *arg)
{
    s_worker_t *worker = arg;
    shard_server_t *server = worker->lane->server;
    void *hello = NULL;
    if (s_send_ptr(worker->sock, NULL, hello) != 0)
        log_error("%s lane: a thread could not report ready", worker->lane->name);
    while (1) {
        zmsg_t *msg = zmsg_recv(worker->sock);
        if (!msg) {
            if (errno == EINTR)
                continue;
            break; /* the context is shutting down */
        }
        s_job_t *job = NULL;
        zframe_t *frame = zmsg_first(msg);
        if (frame && zframe_size(frame) == sizeof job)
            memcpy(&job, zframe_data(frame), sizeof job);
        zmsg_destroy(&msg);
        if (!job)
            break;
        s_job_run(server, job);
        if (s_send_ptr(worker->sock, NULL, job) != 0) {
            log_error("%s lane: a finished job could not be returned", worker->lane->name);
            break;
        }
    }
    zsock_destroy(&worker->sock);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Lanes (loop thread)                                                      */
/* ------------------------------------------------------------------------ */

static int s_lane_start(shard_server_t *server, s_lane_t *lane, const char *name, size_t nworkers,
                        shoal_err_t *err)
{
    lane->server = server;
    lane->name = name;
    snprintf(lane->endpoint, sizeof lane->endpoint, "inproc://shoal-shard-%p-%s", (void *)server,
             name);
    lane->backend = zsock_new(ZMQ_ROUTER);
    if (!lane->backend)
        return shoal_err_set(err, SHOAL_ENOMEM, "%s lane: cannot create its socket", name);
    zsock_set_router_mandatory(lane->backend, 1);
    if (zsock_bind(lane->backend, "%s", lane->endpoint) != 0)
        return shoal_err_set(err, SHOAL_EINTERNAL, "%s lane: cannot bind %s: %s", name,
                             lane->endpoint, zmq_strerror(zmq_errno()));
    lane->workers = calloc(nworkers, sizeof *lane->workers);
    lane->idle = calloc(nworkers, sizeof *lane->idle);
    if (!lane->workers || !lane->idle)
        return shoal_err_set(err, SHOAL_ENOMEM, "%s lane: no memory for %zu threads", name,
                             nworkers);

    /*
     * Lane threads leave SIGINT/SIGTERM/SIGHUP to the main thread. Their
     * sockets are made here and handed over at pthread_create, which is the
     * full memory barrier ZeroMQ asks for when a socket changes threads.
     */
    sigset_t old;
    service_signals_block(&old);
    int rc = 0;
    for (size_t i = 0; i < nworkers; i++) {
        s_worker_t *worker = &lane->workers[i];
        worker->lane = lane;
        worker->sock = zsock_new(ZMQ_DEALER);
        if (!worker->sock || zsock_connect(worker->sock, "%s", lane->endpoint) != 0) {
            zsock_destroy(&worker->sock);
            rc = shoal_err_set(err, SHOAL_EINTERNAL, "%s lane: cannot connect a thread", name);
            break;
        }
        int prc = pthread_create(&worker->thread, NULL, s_worker_main, worker);
        if (prc != 0) {
            zsock_destroy(&worker->sock);
            rc = shoal_err_set(err, SHOAL_ENOMEM, "%s lane: cannot start thread %zu: %s", name, i,
                               strerror(prc));
            break;
        }
        lane->nworkers++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

/* Hands waiting jobs to idle threads. */
static void s_lane_dispatch(shard_server_t *server, s_lane_t *lane)
{
    while (lane->nidle > 0 && lane->head) {
        s_job_t *job = lane->head;
        lane->head = job->next;
        if (!lane->head)
            lane->tail = NULL;
        job->next = NULL;
        lane->queued--;
        lane->queued_bytes -= job->bytes;
        if (job->req.op == WIRE_OP_STATS)
            job->snapshot = s_snapshot_new(server);
        zframe_t *identity = lane->idle[--lane->nidle];
        if (s_send_ptr(lane->backend, &identity, job) != 0) {
            /* Not expected on inproc; the thread is then lost to this lane. */
            log_error("%s lane: cannot hand a job to a thread: %s", lane->name,
                      zmq_strerror(zmq_errno()));
            zframe_destroy(&identity);
            s_job_fail(job, SHOAL_EINTERNAL, "the shard could not hand the request to a thread");
            s_job_finish(server, &job);
            continue;
        }
        lane->busy++;
    }
}

static void s_lane_push(shard_server_t *server, s_lane_t *lane, s_job_t *job)
{
    job->next = NULL;
    if (lane->tail)
        lane->tail->next = job;
    else
        lane->head = job;
    lane->tail = job;
    lane->queued++;
    lane->queued_bytes += job->bytes;
    s_lane_dispatch(server, lane);
}

/* A message from a lane thread: hello (NULL) or a finished job. */
static void s_lane_on_message(shard_server_t *server, s_lane_t *lane)
{
    zmsg_t *msg = zmsg_recv(lane->backend);
    if (!msg)
        return;
    zframe_t *identity = zmsg_pop(msg);
    zframe_t *frame = zmsg_first(msg);
    s_job_t *job = NULL;
    if (frame && zframe_size(frame) == sizeof job)
        memcpy(&job, zframe_data(frame), sizeof job);
    zmsg_destroy(&msg);
    if (job) {
        lane->busy--;
        s_job_finish(server, &job);
    }
    if (identity && lane->nidle < lane->nworkers)
        lane->idle[lane->nidle++] = identity;
    else
        zframe_destroy(&identity);
    s_lane_dispatch(server, lane);
}

/* Refuses every waiting job (shutdown): they were not run. */
static void s_lane_refuse_waiting(shard_server_t *server, s_lane_t *lane)
{
    while (lane->head) {
        s_job_t *job = lane->head;
        lane->head = job->next;
        lane->queued--;
        lane->queued_bytes -= job->bytes;
        s_job_fail(job, SHOAL_EUNAVAIL, "the shard is shutting down; the request was not run");
        s_job_finish(server, &job);
    }
    lane->tail = NULL;
}

static int s_lane_drained(const s_lane_t *lane)
{
    return lane->busy == 0 && lane->nidle == lane->nworkers && !lane->head;
}

/* Stops and joins the threads (all idle), closes the back-end. */
static void s_lane_stop(s_lane_t *lane)
{
    for (size_t i = 0; i < lane->nidle; i++)
        if (s_send_ptr(lane->backend, &lane->idle[i], NULL) != 0)
            zframe_destroy(&lane->idle[i]);
    lane->nidle = 0;
    for (size_t i = 0; i < lane->nworkers; i++)
        pthread_join(lane->workers[i].thread, NULL);
    lane->nworkers = 0;
    zsock_destroy(&lane->backend);
}

/* A lane whose start failed half-way: wait for its threads' hellos, then stop them. */
static void s_lane_abort(shard_server_t *server, s_lane_t *lane)
{
    while (lane->backend && lane->nidle < lane->nworkers) {
        size_t before = lane->nidle;
        s_lane_on_message(server, lane);
        if (lane->nidle == before && !wire_io_readable(lane->backend))
            zclock_sleep(1); /* a recv interrupted by a signal: try again */
    }
    s_lane_stop(lane);
}

static void s_lane_free(s_lane_t *lane)
{
    for (size_t i = 0; i < lane->nidle; i++)
        zframe_destroy(&lane->idle[i]);
    zsock_destroy(&lane->backend);
    free(lane->workers);
    free(lane->idle);
    lane->workers = NULL;
    lane->idle = NULL;
}

/* ------------------------------------------------------------------------ */
/* Requests (loop thread)                                                   */
/* ------------------------------------------------------------------------ */

/* first_rid: the first rid this process got on the asker's link (peers.h). */
static void s_reply_ping(shard_server_t *server, s_job_t *job, uint64_t first_rid)
{
    wire_reply_t rep;
    wire_reply_init(&rep);
    rep.op = job->req.op;
    rep.rid = job->req.rid;
    wire_info_t *info = wire_info_new();
    if (info) {
        wire_info_map(info, 6);
        wire_io_info_str(info, "role", "shard");
        wire_io_info_u64(info, "version", WIRE_VERSION);
        wire_io_info_f64(info, "uptime_s", s_uptime(server));
        wire_io_info_u64(info, "inflight", s_inflight(server));
        wire_io_info_u64(info, "queued", s_queued(server));
        wire_io_info_u64(info, "first_rid", first_rid);
    }
    (void)wire_io_reply_info(&rep, info);
    job->reply = wire_io_encode_reply(&rep, &job->code);
    wire_reply_fini(&rep);
    wire_info_destroy(&info);
    s_job_finish(server, &job);
}

/*
 * A lone single-query graph search, run here instead of in the read lane
 * (server.h says when and why). 1 when it was answered (the job is gone);
 * 0 when it goes to the lane: not such a search, or the store would wait,
 * or it fails (the lane then gives the error with the usual checks' words).
 */
static int s_search_inline(shard_server_t *server, s_job_t **job_p)
{
    s_job_t *job = *job_p;
    const wire_request_t *req = &job->req;
    if (!server->opts.inline_ef_max || req->n != 1 || req->nfilter ||
        req->mode == WIRE_MODE_EXACT || server->read.head)
        return 0;
    shoal_err_t err;
    shoal_err_clear(&err);
    if (s_check_search_size(server, req, &err) != 0 || wire_io_readable(server->router))
        return 0;
    size_t k = req->k;
    uint64_t *ids = malloc(k * sizeof *ids);
    float *dists = malloc(k * sizeof *dists);
    int deferred = 1;
    wire_mode_t used = WIRE_MODE_HNSW;
    int rc = ids && dists ? shard_store_search_quick(server->store, req->coll, req->vecs, req->dim,
                                                     k, req->mode, req->ef,
                                                     server->opts.inline_ef_max, ids, dists, &used,
                                                     &deferred, &err)
                          : SHOAL_ENOMEM;
    if (rc == 0 && !deferred) {
        wire_reply_t rep;
        wire_reply_init(&rep);
        rep.op = req->op;
        rep.rid = req->rid;
        rep.n = 1;
        rep.k = (uint32_t)k;
        rep.ids = ids;
        rep.dists = dists;
        rep.mode_used = used;
        job->reply = wire_io_encode_reply(&rep, &job->code);
        wire_reply_fini(&rep);
        server->searches_inline++;
        s_job_finish(server, job_p);
    }
    free(ids);
    free(dists);
    return rc == 0 && !deferred;
}

/*
 * One message from the ROUTER: envelope, size checks, decode, then ping is
 * answered here and everything else goes to its lane. While stopping, the
 * message is refused with SHOAL_EUNAVAIL after its header is read.
 */
static void s_on_request(shard_server_t *server, int stopping)
{
    zframe_t *identity = NULL;
    int delimiter = 0;
    zmsg_t *msg = wire_io_recv(server->router, &identity, &delimiter);
    if (!msg)
        return;
    s_job_t *job = calloc(1, sizeof *job);
    if (!job) {
        log_error("dropping a request: out of memory");
        zframe_destroy(&identity);
        zmsg_destroy(&msg);
        return;
    }
    job->start_us = zclock_usecs();
    job->identity = identity;
    job->delimiter = delimiter;
    wire_request_init(&job->req);
    job->frames = msg;
    job->bytes = zmsg_content_size(msg);

    shoal_err_t err;
    shoal_err_clear(&err);
    int rc = wire_io_decode(msg, &server->limits, &job->req, &err);
    uint64_t first_rid =
        identity ? shard_peers_note(server->peers, zframe_data(identity), zframe_size(identity),
                                    job->req.rid)
                 : 0;
    if (rc == 0 && stopping)
        rc = shoal_err_set(&err, SHOAL_EUNAVAIL,
                           "the shard is shutting down; the request was not run");
    if (rc != 0) {
        s_job_fail(job, rc, err.msg);
        s_job_finish(server, &job);
        return;
    }

    switch (job->req.op) {
    case WIRE_OP_PING:
        s_reply_ping(server, job, first_rid);
        break;
    case WIRE_OP_SEARCH:
        if (!s_search_inline(server, &job))
            s_lane_push(server, &server->read, job);
        break;
    case WIRE_OP_GET:
    case WIRE_OP_STATS:
    case WIRE_OP_LIST_COUNTS:
    case WIRE_OP_LIST_EXPORT:
        s_lane_push(server, &server->read, job);
        break;
    case WIRE_OP_CREATE_COLLECTION:
    case WIRE_OP_DROP_COLLECTION:
    case WIRE_OP_INSERT:
    case WIRE_OP_DELETE:
    case WIRE_OP_CHECKPOINT:
    case WIRE_OP_LIST_DROP:
    case WIRE_OP_SNAPSHOT:      /* behind every earlier write, holding later ones */
    case WIRE_OP_SNAPSHOT_DROP:
        s_lane_push(server, &server->write, job);
        break;
    default: {
        char msg_text[96];
        snprintf(msg_text, sizeof msg_text, "op %s is not served by a shard (ask the coordinator)",
                 wire_io_op_name(job->req.op));
        s_job_fail(job, SHOAL_EUNSUPPORTED, msg_text);
        s_job_finish(server, &job);
        break;
    }
    }
}

/* Too much waiting: stop reading the ROUTER until the lanes catch up. */
static int s_backpressured(const shard_server_t *server)
{
    return server->read.queued >= SHARD_SERVER_QUEUE_MAX ||
           server->write.queued >= SHARD_SERVER_QUEUE_MAX ||
           server->read.queued_bytes + server->write.queued_bytes > server->queue_bytes_max;
}

/* ------------------------------------------------------------------------ */
/* Metrics (loop thread)                                                    */
/* ------------------------------------------------------------------------ */

/* Queues a metrics job in the read lane, unless one is there already. */
static void s_figures_request(shard_server_t *server)
{
    if (server->figures_pending)
        return;
    s_job_t *job = calloc(1, sizeof *job);
    s_figures_t *figures = calloc(1, sizeof *figures);
    if (!job || !figures) { /* out of memory: the last figures stay */
        free(job);
        free(figures);
        return;
    }
    wire_request_init(&job->req);
    job->start_us = zclock_usecs();
    job->figures = figures;
    server->figures_pending = 1;
    s_lane_push(server, &server->read, job);
}

/* A per-collection figure of shard_coll_stats_t. */
typedef enum {
    S_FIG_VECTORS,
    S_FIG_HNSW_BYTES,
    S_FIG_EXACT_BYTES,
    S_FIG_DEVICE_BYTES,
    S_FIG_QUARANTINED,
    S_FIG_UNCHECKPOINTED,
} s_coll_figure_t;

static uint64_t s_coll_figure(const shard_coll_stats_t *c, s_coll_figure_t which)
{
    switch (which) {
    case S_FIG_VECTORS:
        return c->count;
    case S_FIG_HNSW_BYTES:
        return c->hnsw_bytes;
    case S_FIG_EXACT_BYTES:
        return c->exact_bytes;
    case S_FIG_DEVICE_BYTES:
        return c->device_bytes;
    case S_FIG_QUARANTINED:
        return c->quarantined;
    case S_FIG_UNCHECKPOINTED:
        return c->last_seq > c->checkpoint_seq ? c->last_seq - c->checkpoint_seq : 0;
    default:
        return 0;
    }
}

/* One sample per collection of the figures, labelled collection (and kind when given). */
static void s_metric_colls(prom_text_t *t, const s_figures_t *f, const char *name,
                           const char *kind, s_coll_figure_t which)
{
    for (size_t i = 0; i < f->ncolls; i++) {
        prom_labels_t l;
        prom_labels_init(&l);
        prom_label(&l, "collection", f->colls[i].name);
        if (kind)
            prom_label(&l, "kind", kind);
        prom_sample_u64(t, name, &l, s_coll_figure(&f->colls[i], which));
    }
}

/* The store's families, from the last metrics job (none before the first one is back). */
static void s_metrics_store(shard_server_t *server, prom_text_t *t)
{
    const s_figures_t *f = &server->figures;
    if (!f->at_us)
        return;
    prom_metric(t, "shoal_shard_figures_age_seconds", PROM_GAUGE,
                "Age of the store figures below (collections, disk), read off the loop.",
                (double)(zclock_usecs() - f->at_us) / 1e6);
    prom_metric_u64(t, "shoal_shard_collections", PROM_GAUGE, "Collections on this shard.",
                    f->ncolls);
    prom_family(t, "shoal_shard_vectors", PROM_GAUGE,
                "Vectors this shard holds, by collection (replicas count on each shard).");
    s_metric_colls(t, f, "shoal_shard_vectors", NULL, S_FIG_VECTORS);
    prom_family(t, "shoal_shard_memory_bytes", PROM_GAUGE,
                "Memory of a collection's indexes: the HNSW graph, the exact engine's host "
                "copy and its GPU copy.");
    s_metric_colls(t, f, "shoal_shard_memory_bytes", "hnsw", S_FIG_HNSW_BYTES);
    s_metric_colls(t, f, "shoal_shard_memory_bytes", "exact", S_FIG_EXACT_BYTES);
    s_metric_colls(t, f, "shoal_shard_memory_bytes", "device", S_FIG_DEVICE_BYTES);
    prom_family(t, "shoal_shard_quarantined_vectors", PROM_GAUGE,
                "Stored rows held in quarantine (they failed their checks at an open).");
    s_metric_colls(t, f, "shoal_shard_quarantined_vectors", NULL, S_FIG_QUARANTINED);
    prom_family(t, "shoal_shard_writes_since_checkpoint", PROM_GAUGE,
                "Write batches after the stored graph checkpoint (replayed by a restart).");
    s_metric_colls(t, f, "shoal_shard_writes_since_checkpoint", NULL, S_FIG_UNCHECKPOINTED);
    prom_metric_u64(t, "shoal_disk_free_bytes", PROM_GAUGE,
                    "Free space on the data dir's filesystem.", f->disk.free_bytes);
    prom_metric_u64(t, "shoal_disk_reserve_bytes", PROM_GAUGE,
                    "Free space writes keep (--min-free-bytes): below it writes are refused.",
                    f->disk.min_free_bytes);
    prom_metric_u64(t, "shoal_disk_writes_refused_total", PROM_COUNTER,
                    "Writes refused for want of disk space since the store opened.",
                    f->disk.writes_refused);
    prom_metric_u64(t, "shoal_disk_read_only", PROM_GAUGE,
                    "1 while RocksDB is open read-only (opened under the reserve).",
                    f->disk.read_only ? 1 : 0);
}

/* Renders and publishes the text and readiness (ready until it stops). */
static void s_metrics_publish(shard_server_t *server, int stopping)
{
    prom_text_t *t = http_metrics_begin(server->opts.metrics);
    if (!t)
        return;
    s_metrics_store(server, t);
    prom_metric_u64(t, "shoal_shard_jobs_running", PROM_GAUGE,
                    "Requests running in the lanes' threads.", s_inflight(server));
    prom_family(t, "shoal_shard_jobs_queued", PROM_GAUGE,
                "Requests waiting for a lane thread, by lane (read, write).");
    const s_lane_t *lanes[] = {&server->read, &server->write};
    for (size_t i = 0; i < 2; i++) {
        prom_labels_t l;
        prom_labels_init(&l);
        prom_label(&l, "lane", i == 0 ? "read" : "write");
        prom_sample_u64(t, "shoal_shard_jobs_queued", &l, lanes[i]->queued);
    }
    prom_metric_u64(t, "shoal_shard_searches_inline_total", PROM_COUNTER,
                    "Single-query searches the socket loop ran itself (--inline-ef-max).",
                    server->searches_inline);
    wire_io_budget_stats_t replies;
    wire_io_budget_stats(server->reply_budget, &replies);
    http_metrics_replies(t, replies.pending_bytes, replies.max_bytes, replies.dropped);
    http_metrics_publish(server->opts.metrics, !stopping, "shutting down");
}

/*
 * At a due time: a new text, then new store figures asked for the next one
 * (after the text, so the jobs it counts are the clients' own).
 */
static void s_metrics_tick(shard_server_t *server, int stopping, int64_t now)
{
    if (!http_metrics_due(server->opts.metrics, now))
        return;
    s_metrics_publish(server, stopping);
    if (!stopping)
        s_figures_request(server);
}

/* The poll timeout in ms: until the next publication, or -1 without metrics. */
static long s_poll_timeout(const shard_server_t *server)
{
    if (!server->opts.metrics)
        return -1;
    int64_t left = http_metrics_next_us(server->opts.metrics) - zclock_usecs();
    return left > 0 ? (long)((left + 999) / 1000) : 0;
}

/* ------------------------------------------------------------------------ */
/* Public API                                                               */
/* ------------------------------------------------------------------------ */

void shard_server_opts_default(shard_server_opts_t *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->limits = wire_limits_default();
    opts->store.device = "auto";
    opts->store.sync = 1;
    opts->stop_fd = -1;
    opts->inline_ef_max = SHARD_SERVER_INLINE_EF_MAX_DEFAULT;
}

shard_server_t *shard_server_new(const shard_server_opts_t *opts, shoal_err_t *err)
{
    if (!opts || !opts->listen || !*opts->listen || !opts->store.data_dir ||
        !*opts->store.data_dir) {
        shoal_err_set(err, SHOAL_EINVAL,
                      "shard server: a listen endpoint and a data dir are "
                      "required");
        return NULL;
    }
    if (opts->workers > SHARD_SERVER_WORKERS_MAX) {
        shoal_err_set(err, SHOAL_EINVAL, "shard server: %zu workers, at most %d", opts->workers,
                      SHARD_SERVER_WORKERS_MAX);
        return NULL;
    }
    shard_server_t *server = calloc(1, sizeof *server);
    if (!server) {
        shoal_err_set(err, SHOAL_ENOMEM, "shard server: out of memory");
        return NULL;
    }
    server->stop.pipe[0] = server->stop.pipe[1] = -1;
    server->opts = *opts;
    server->limits = opts->limits;
    server->start_us = zclock_usecs();
    server->listen = strdup(opts->listen);
    server->data_dir = strdup(opts->store.data_dir);
    server->device = strdup(opts->store.device ? opts->store.device : "auto");
    if (!server->listen || !server->data_dir || !server->device) {
        shoal_err_set(err, SHOAL_ENOMEM, "shard server: out of memory");
        goto fail;
    }
    server->opts.listen = server->listen;
    server->opts.store.data_dir = server->data_dir;
    server->opts.store.device = server->device;
    if (server->opts.workers == 0)
        server->opts.workers = parfor_cores();
    if (server->opts.store.threads == 0)
        server->opts.store.threads = server->opts.workers;
    server->queue_bytes_max = server->limits.max_message_bytes * 4;
    if (server->queue_bytes_max < S_QUEUE_BYTES_MIN)
        server->queue_bytes_max = S_QUEUE_BYTES_MIN;

    if (service_stop_init(&server->stop, opts->stop_fd) != 0) {
        shoal_err_set(err, SHOAL_EIO, "shard server: pipe: %s", strerror(errno));
        goto fail;
    }

    server->store = shard_store_open(&server->opts.store, err);
    if (!server->store)
        goto fail;

    server->peers = shard_peers_new();
    if (!server->peers) {
        shoal_err_set(err, SHOAL_ENOMEM, "shard server: out of memory");
        goto fail;
    }
    server->reply_budget =
        wire_io_budget_new("shard server", server->opts.max_pending_reply_bytes, err);
    if (!server->reply_budget)
        goto fail;
    server->router =
        wire_io_router_bind("shard server", server->listen, server->limits.max_message_bytes,
                            server->opts.curve_cert, &server->endpoint, err);
    if (!server->router)
        goto fail;
    return server;
fail:
    shard_server_destroy(&server);
    return NULL;
}

int shard_server_run(shard_server_t *server, shoal_err_t *err)
{
    int rc = s_lane_start(server, &server->read, "read", server->opts.workers, err);
    if (rc == 0)
        rc = s_lane_start(server, &server->write, "write", 1, err);
    if (rc != 0) {
        s_lane_abort(server, &server->read);
        s_lane_abort(server, &server->write);
        return rc;
    }
    int stopping = 0;
    int failed = 0;

    while (1) {
        s_metrics_tick(server, stopping, zclock_usecs());
        zmq_pollitem_t items[5];
        int n = 0;
        items[n++] = (zmq_pollitem_t){zsock_resolve(server->read.backend), 0, ZMQ_POLLIN, 0};
        items[n++] = (zmq_pollitem_t){zsock_resolve(server->write.backend), 0, ZMQ_POLLIN, 0};
        int i_router = -1;
        if (!stopping) {
            n = (int)service_stop_poll_add(&server->stop, items, (size_t)n);
            if (!s_backpressured(server)) {
                i_router = n;
                items[n++] = (zmq_pollitem_t){zsock_resolve(server->router), 0, ZMQ_POLLIN, 0};
            }
        }
        if (zmq_poll(items, n, s_poll_timeout(server)) < 0) {
            if (zmq_errno() == EINTR)
                continue;
            failed = shoal_err_set(err, SHOAL_EINTERNAL, "shard server: poll: %s",
                                   zmq_strerror(zmq_errno()));
            log_error("%s", err ? err->msg : "shard server: poll failed");
            return failed; /* threads may still hold jobs: the process must exit */
        }
        /*
         * Only what the poll found readable is read, its first message on the
         * poll's word: asking a ZeroMQ socket whether it is readable costs two
         * system calls, a good part of a single query's time on the loop.
         */
        int read_ready = (items[0].revents & ZMQ_POLLIN) != 0;
        int write_ready = (items[1].revents & ZMQ_POLLIN) != 0;
        for (int b = 0;
             read_ready && b < S_BURST && (b == 0 || wire_io_readable(server->read.backend)); b++)
            s_lane_on_message(server, &server->read);
        for (int b = 0;
             write_ready && b < S_BURST && (b == 0 || wire_io_readable(server->write.backend));
             b++)
            s_lane_on_message(server, &server->write);

        int stop_now = service_stop_fired(&server->stop, items); /* drains the pipe */
        if (i_router >= 0 && !stop_now && (items[i_router].revents & ZMQ_POLLIN))
            for (int b = 0; b < S_BURST && !s_backpressured(server) &&
                            (b == 0 || wire_io_readable(server->router));
                 b++)
                s_on_request(server, 0);
        if (stop_now) {
            stopping = 1;
            log_info("stopping: %zu requests running, %zu waiting (refused)", s_inflight(server),
                     s_queued(server));
            s_lane_refuse_waiting(server, &server->read);
            s_lane_refuse_waiting(server, &server->write);
            /* Requests already received but not read get a definite "not run". */
            for (int b = 0; b < SHARD_SERVER_QUEUE_MAX && wire_io_readable(server->router); b++)
                s_on_request(server, 1);
            s_metrics_publish(server, 1); /* /readyz says so at once: balancers drain */
        }
        if (stopping && s_lane_drained(&server->read) && s_lane_drained(&server->write))
            break;
    }
    s_lane_stop(&server->read);
    s_lane_stop(&server->write);
    service_router_close(&server->router); /* the last replies still leave */
    return failed;
}

void shard_server_stop(shard_server_t *server)
{
    if (!server)
        return;
    service_stop_request(&server->stop);
}

const char *shard_server_endpoint(const shard_server_t *server)
{
    return server->endpoint;
}

size_t shard_server_workers(const shard_server_t *server)
{
    return server->opts.workers;
}

shard_store_t *shard_server_store(shard_server_t *server)
{
    return server->store;
}

void shard_server_destroy(shard_server_t **server_p)
{
    if (!server_p || !*server_p)
        return;
    shard_server_t *server = *server_p;
    zsock_destroy(&server->router);
    wire_io_budget_destroy(&server->reply_budget);
    shard_peers_destroy(&server->peers);
    s_lane_free(&server->read);
    s_lane_free(&server->write);
    free(server->figures.colls);
    shard_store_close(&server->store);
    service_stop_fini(&server->stop);
    free(server->listen);
    free(server->data_dir);
    free(server->device);
    free(server->endpoint);
    free(server);
    *server_p = NULL;
}
