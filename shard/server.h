/*
 * server.h - the shard server: a shard_store_t behind a ZeroMQ ROUTER socket.
 *
 * Requests and replies follow docs/protocol.md (net/wire.h encodes and
 * decodes them). The server is a small set of actors, each owning its sockets:
 *
 *   loop thread (shard_server_run's caller)
 *       owns the ROUTER bound to the listen endpoint and the two inproc
 *       back-ends. It receives a request, checks its size against the limits,
 *       decodes it once (wire_request_decode), answers decode errors and pings
 *       itself, and hands every other request, as a job, to a lane. Replies come
 *       back from the lanes and go out on the ROUTER with the request's
 *       envelope. It keeps the process counters (requests, errors, latency).
 *       One exception, for latency: a lone single-query graph search (the
 *       read lane's FIFO empty, no other request waiting on the ROUTER, ef
 *       at most opts.inline_ef_max, f32 storage, no filter) is run by the
 *       loop itself when the store can run it without waiting for a lock
 *       (shard_store_search_quick); the hand-off to a lane thread and back
 *       costs two thread wake-ups, more than the search. Anything else, or
 *       a lock held by a writer, goes to the read lane as usual.
 *   read lane: `workers` threads
 *       search, get, stats. Any number run at once (the store allows it).
 *   write lane: one thread
 *       create, drop, insert, delete, checkpoint, in arrival order. A write is
 *       acknowledged only after the store call returned, so a search that
 *       starts after the acknowledgement sees the write (read-your-writes).
 *
 * Lanes are load-balanced, not round-robin: a job goes to a lane's thread only
 * when that thread is idle (it reports idle by returning its previous job), and
 * waits in the loop's FIFO otherwise, so a long batch search never holds up a
 * short query that another worker could take. Jobs travel over inproc as a
 * pointer; whoever holds the pointer owns the job.
 *
 * Backpressure: while a lane's FIFO holds SHARD_SERVER_QUEUE_MAX jobs or more
 * than the queued-bytes cap, the loop stops reading the ROUTER; senders then
 * block on ZeroMQ's high-water marks instead of growing the shard's memory.
 * Replies waiting for peers that do not read them are bounded by
 * opts.max_pending_reply_bytes (wire_io.h's reply budget): beyond it a reply
 * is replaced by a SHOAL_ELIMIT error and counted in stats.
 *
 * Limits: every request is checked against opts.limits: ZMQ_MAXMSGSIZE makes
 * ZeroMQ drop a connection that sends a single frame over max_message_bytes
 * (no reply can be sent: the peer is disconnected), and the loop replies
 * SHOAL_ELIMIT to a message whose frames together exceed it. Replies that would
 * exceed it (n x k results of a search, n x dim floats of a get) are refused
 * with SHOAL_ELIMIT before any work is done.
 *
 * Metrics (opts.metrics, net/http_metrics.h; none when NULL): the loop
 * counts every reply there by op and status with its duration, and about
 * once a second renders the Prometheus text and publishes it with its
 * readiness (ready from the loop's start, the store being open with every
 * collection loaded, until it starts stopping). The store's figures
 * (vectors and memory per collection, disk space) come from a small
 * internal job in the read lane, like stats, so the loop never takes a
 * store lock; the text carries their age.
 *
 * Stopping: shard_server_stop() (async-signal-safe) or opts.stop_fd becoming
 * readable makes the loop stop reading requests; jobs still waiting in a FIFO
 * get SHOAL_EUNAVAIL ("shard is shutting down": they were not applied), jobs
 * already running finish and their replies are sent; then the threads are
 * joined, the ROUTER is closed (with a short linger so those replies leave)
 * and shard_server_run returns. shard_server_destroy closes the store, which
 * checkpoints every collection. "Stop accepting" is done by no longer reading
 * the ROUTER rather than by zmq_unbind: unbinding also tears down the
 * connections accepted on that endpoint and their queues, and with them the
 * replies of the requests still running.
 *
 * Envelope: a DEALER client sends the request frames as they are; a REQ client
 * puts an empty delimiter first. The server accepts both (frame 0 of a request
 * is never empty) and echoes the delimiter when there was one.
 *
 * Thread-safety: shard_server_run runs on one thread; shard_server_stop may be
 * called from any thread or a signal handler; the rest belong to the thread
 * that created the server.
 *
 * Ownership: shard_server_new returns a server the caller frees with
 * shard_server_destroy(&server) after shard_server_run returned (or without
 * running it).
 */
#ifndef SHOAL_SHARD_SERVER_H
#define SHOAL_SHARD_SERVER_H

#include "common/error.h"
#include "net/http_metrics.h"
#include "net/wire.h"
#include "net/wire_curve.h"
#include "shard/store.h"

#include <stddef.h>

/* Read workers: 0 means one per online core. */
#define SHARD_SERVER_WORKERS_MAX 1024
/* Jobs one lane may hold waiting before the loop stops reading requests. */
#define SHARD_SERVER_QUEUE_MAX 1024
/* Latency samples kept per op for the percentiles in stats. */
#define SHARD_SERVER_LATENCY_SAMPLES 1024
/* Largest ef of a single-query search the loop runs itself (--inline-ef-max):
   a walk at ef 128 is tens to hundreds of microseconds, which the loop may
   spend; a bigger one goes to the read lane. */
#define SHARD_SERVER_INLINE_EF_MAX_DEFAULT 128
#define SHARD_SERVER_INLINE_EF_MAX_MAX 4096

typedef struct {
    const char *listen;       /* endpoint to bind; "tcp://127.0.0.1:*" picks a free port */
    size_t workers;           /* read-lane threads; 0 = online cores */
    wire_limits_t limits;     /* enforced on every request */
    shard_store_opts_t store; /* passed to shard_store_open */
    int stop_fd;              /* when readable, stop gracefully; -1 = none */
    size_t max_pending_reply_bytes; /* reply bytes queued for unread peers; 0 = default */
    size_t inline_ef_max;     /* single-query searches up to this ef run on the loop
                                 (see above); 0 = never */
    http_metrics_t *metrics;  /* where replies are counted and the metrics text and readiness
                                 published (borrowed; outlives shard_server_run); NULL: none */
    const wire_curve_cert_t *curve_cert; /* own certificate, secret key included: the ROUTER is
                                            a CURVE server with it (the caller runs the
                                            allow-list, wire_curve_auth_new; borrowed, outlives
                                            the server); NULL: plain, unauthenticated */
} shard_server_opts_t;

typedef struct shard_server shard_server_t;

/* opts with the wire's default limits, no stop_fd and an empty listen/data_dir. */
void shard_server_opts_default(shard_server_opts_t *opts);

/*
 * Opens the store (recovering every collection) and binds the ROUTER. No
 * request is served before shard_server_run. NULL on error, err says why
 * (the store's message, or "cannot bind tcp://...: Address already in use").
 */
shard_server_t *shard_server_new(const shard_server_opts_t *opts, shoal_err_t *err);

/*
 * Serves until asked to stop, then drains as described above. Returns 0 after
 * a clean stop, or a negative code when the loop failed (err says why).
 */
int shard_server_run(shard_server_t *server, shoal_err_t *err);

/* Asks a running (or about to run) loop to stop. Async-signal-safe. */
void shard_server_stop(shard_server_t *server);

/* The bound endpoint ("tcp://127.0.0.1:41234"); borrowed, valid until destroy. */
const char *shard_server_endpoint(const shard_server_t *server);

/* Read-lane threads in use. */
size_t shard_server_workers(const shard_server_t *server);

/* The store (borrowed; e.g. for the devices line at start-up). */
shard_store_t *shard_server_store(shard_server_t *server);

/* Closes the ROUTER, closes the store (checkpointing), frees. NULL-safe. */
void shard_server_destroy(shard_server_t **server_p);

#endif
