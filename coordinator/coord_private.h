/*
 * coord_private.h - what the coordinator's files share: the server struct,
 * jobs, shard links and the helpers the op files call. coord.h is the
 * contract; this header is the inside of it.
 *
 * Files, split by lifecycle stage:
 *   coord.c         the loop: sockets, jobs and their rid table, deadlines,
 *                   write scheduling, the training thread, start and stop.
 *   coord_health.c  shard health: pings, up / down marking, restarts, the
 *                   "shard came back" hooks (registered by the write path
 *                   and the repair engine).
 *   coord_route.c   the routing engines and the routing thread.
 *   coord_stats.c   ping and stats replies.
 *   coord_write.c   create, drop, train, insert (upsert), delete, checkpoint
 *                   and the re-drive of interrupted writes (intents).
 *   coord_search.c  search, get and knn_graph.
 *   coord_repair.c  replicas: which one serves a read, shards that missed
 *                   writes (fence, epoch), and the repair engine (verify,
 *                   drop, rebuild of stale replica lists, orphan drops, and
 *                   list moves: copy, switch).
 *   coord_grow.c    growth: shard add / drain / remove, rebalance plans, the
 *                   "moves" stats.
 *   coord_calib.c   recall calibration: what each (nprobe, ef) reaches, so a
 *                   search can ask for a recall.
 *   coord_snapshot.c snapshots: snapshot_create (a write over everything:
 *                   every shard's copy, then the catalog's) and snapshot_list.
 *
 * Shards are named by their registry index, which never changes: a shard
 * added online is appended (coord->shards grows: every per-shard array a job
 * holds is sized when the job made it and indexes beyond it are treated as
 * unknown shards), a removed one keeps its index with no link.
 *
 * Jobs: every client request becomes a job; internal work (re-driving
 * intents) is a job without a client. A job sends shard requests through
 * coord_send; each gets a coordinator-unique rid, recorded in the rid table
 * with (job, shard, tag); a shard's reply is handed to job->on_reply with
 * that shard and tag. A job ends through coord_reply / coord_fail (client
 * jobs) or coord_job_end (internal ones): its rids leave the table, so late
 * replies are dropped. A handler that ended the job must not touch it again.
 *
 * Writes: each write job has a scope (coord_scope_t: the ids of one
 * collection, a whole collection, or everything). Writes wait in a FIFO and
 * one starts when its scope overlaps no running write's and no earlier
 * waiting write's, so writes to one id keep their arrival order while writes
 * to other ids (or collections) overtake a slow one; at most
 * COORD_WRITES_RUNNING_MAX run at once. Why ids and not whole collections:
 * an insert's old-list lookup and its stale-copy deletes are only true while
 * no other write changes the same ids, and that is all they need; a frozen
 * shard then holds up only the writes that share ids with the one stuck on it.
 * Sorted id arrays, not a hash set: one sort per write, and an overlap test
 * (binary search of the smaller in the larger) needs nothing else.
 * Re-drive: one internal job at a time walks the intents; its scope is the
 * intent in flight, so it never races a client write of the same ids.
 * A shard marked down ends the phase of every job waiting on it at once
 * (on_shard_down): a write then fails with SHOAL_EUNAVAIL, its intent kept.
 *
 * Thread-safety: everything here belongs to the loop thread, except the
 * coord_train_t between coord_train_start and the loop's pickup, which the
 * training thread owns.
 */
#ifndef SHOAL_COORD_PRIVATE_H
#define SHOAL_COORD_PRIVATE_H

#include "coordinator/catalog.h"
#include "coordinator/coord.h"
#include "coordinator/fanout.h"
#include "coordinator/kmeans.h"
#include "coordinator/placement.h"
#include "net/service.h"
#include "net/wire_io.h"
#include "gpu/knn.h"

#include <czmq.h>

#include <pthread.h>
#include <stdint.h>

typedef enum {
    COORD_SHARD_UNKNOWN = 0, /* not heard from yet (routed to as if up) */
    COORD_SHARD_UP = 1,      /* answered within down_after_ms */
    COORD_SHARD_DOWN = 2,    /* silent for down_after_ms */
} coord_shard_state_t;

/* One shard link. */
typedef struct {
    char *endpoint;            /* its endpoint (copy) */
    zsock_t *dealer;           /* DEALER connected to it; the loop's */
    coord_shard_state_t state; /* health */
    int64_t last_seen_us;      /* monotonic time of its last message (0: never; the
                                  down clock then runs from linked_us) */
    int64_t linked_us;         /* when its link was made (start, or shard add) */
    uint64_t ping_rid;         /* rid of the ping in flight, 0 when none */
    size_t redrive_waiting;    /* intents whose re-drive waits for this shard */
    int repairing;             /* a repair job (re-creating a collection) exists */
    int fenced;                /* missed writes: serves no reads of replicated collections
                                  until its stale lists are dropped again (coord_repair.c) */
    uint64_t epoch;            /* moves at every write it missed: a rebuild begun before is void */
    uint64_t drop_epoch;       /* epoch at the start of the drop pass in progress */
    size_t drop_at;            /* next collection of that pass */
    int verify_wanted;         /* came (back) up: compare its list counts with the catalog */
    size_t verify_at;          /* next collection to compare */
    double started_s;          /* when its process started (coordinator clock, from its
                                  ping's uptime; 0: not known): a later one is a restart */
    uint64_t first_rid;        /* the first rid its process got on our link, as its last
                                  ping said (shard/peers.h); 0: not known */
    int removed;               /* taken out of the registry (no link, never routed to) */
    uint32_t stale_orphans;    /* stale orphan copies it holds (catalog D/): until they are
                                  dropped there it serves no reads of any collection */
} coord_shard_t;

/* What a write touches (see the file comment). */
typedef enum {
    COORD_SCOPE_NONE = 0, /* nothing (a re-drive between two intents) */
    COORD_SCOPE_IDS = 1,  /* ids of one collection */
    COORD_SCOPE_COLL = 2, /* all of one collection (create, drop, train, repair) */
    COORD_SCOPE_ALL = 3,  /* every collection */
} coord_scope_kind_t;

typedef struct {
    coord_scope_kind_t kind;
    char coll[WIRE_NAME_MAX + 1]; /* the collection (IDS, COLL) */
    uint64_t *ids;                /* IDS: sorted, distinct (owned) */
    size_t nids;
    int trains; /* runs k-means: such writes run one at a time (one training thread) */
} coord_scope_t;

typedef struct coord_job coord_job_t;
typedef struct coord_train coord_train_t;

/* The repair engine's state (coord_repair.c): one step at a time. */
typedef struct {
    coord_job_t *job;       /* the step waiting or running, or NULL */
    int64_t next_us;        /* no step starts before */
    /* the list being rebuilt (active) */
    int active;
    char coll[WIRE_NAME_MAX + 1];
    uint32_t list, replica; /* the stale replica */
    size_t target, source;  /* shards: the stale one, the up-to-date one copied from */
    uint64_t epoch;         /* target's epoch when the rebuild began */
    char cursor[WIRE_CURSOR_MAX + 1];
    uint64_t copied;        /* rows copied into the list so far */
    int64_t started_us;
    /* totals since start (stats) */
    uint64_t rows_copied, lists_repaired, lists_dropped, verified, mismatched, aborted;
    uint64_t rows_caught_up, lists_caught_up; /* catch-up: owed ids replayed, replicas done */
    double last_rows_per_s; /* rate of the last list rebuilt */
    /* moves (the active copy above is a move when moving is set) */
    int moving;               /* the active copy is a planned move, not a rebuild */
    uint64_t move_vectors;    /* the moving list's size when it started */
    uint64_t moves_done, moves_aborted, orphans_dropped, move_rows;
    double move_rows_per_s;   /* rate of the last move */
    uint32_t rate_mb;         /* moves: MB/s at most (0: only repair_pause_ms) */
    uint64_t moves_planned;   /* moves in the last plan (for progress) */
} coord_repair_t;

/* Recall calibration (coord_calib.c). */
#define COORD_CALIB_MIN_VECTORS 1000  /* a collection is calibrated from this size */
#define COORD_CALIB_QUERIES 200       /* stored vectors used as queries (at most count / 10) */
#define COORD_CALIB_QUERIES_MIN 50    /* fewer found: the calibration fails */
#define COORD_CALIB_REGROW 0.25       /* re-calibrated when the count moved by this fraction */
#define COORD_CALIB_RETRY_MS 30000    /* after a failed calibration */
#define COORD_CALIB_LOOK_MS 2000      /* how often collections are looked at */

typedef enum {
    COORD_CALIB_IDLE = 0,
    COORD_CALIB_GET,     /* fetching the sampled vectors */
    COORD_CALIB_NEAR,    /* each one's nearest other stored vector */
    COORD_CALIB_NEARGET, /* fetching those: the queries are the midpoints */
    COORD_CALIB_TRUTH,   /* the queries' exact neighbours */
    COORD_CALIB_GRID,  /* one search per (nprobe, ef) */
} coord_calib_phase_t;

/* The calibration in progress (one at a time) and its totals. */
typedef struct {
    coord_calib_phase_t phase;
    char coll[WIRE_NAME_MAX + 1];
    uint32_t dim, nlist;
    size_t nq;               /* queries */
    uint64_t *ids;           /* nq: their ids (owned) */
    float *vecs;             /* nq x dim: their vectors, then the queries (owned) */
    uint64_t *near;          /* nq: each sampled vector's nearest other one (owned) */
    uint64_t *truth;         /* nq x k: the queries' exact neighbours (owned) */
    catalog_calib_t table;   /* the grid being measured */
    size_t npoints, point;   /* grid points, the one running */
    int waiting;             /* an internal request is in flight (its on_result continues) */
    int64_t next_us;         /* no calibration starts before */
    char quiet_coll[WIRE_NAME_MAX + 1]; /* the candidate seen at the last look ... */
    uint64_t quiet_count;    /* ... and its count then (unchanged at the next: it starts) */
    uint64_t done, failures; /* totals since start */
} coord_calib_t;

/* Online recall telemetry (coord_recall.c). */
#define COORD_RECALL_SAMPLE_DEFAULT 0.005 /* client searches sampled (SHOAL_RECALL_SAMPLE) */
#define COORD_RECALL_QUEUE 256            /* samples waiting for their exact search */
#define COORD_RECALL_WINDOW 256           /* recent recalls an estimate is made of */
#define COORD_RECALL_BUSY 8               /* client requests in progress: sampling waits */
#define COORD_RECALL_PAUSE_MS 10          /* between two exact searches, at least */
#define COORD_RECALL_BUDGET 0.02          /* ... and long enough that they take at most this
                                             share of the time (coord_recall.c) */

/* A sampled query waiting for its exact search. */
typedef struct {
    char coll[WIRE_NAME_MAX + 1];
    float *vec;       /* dim floats (owned) */
    uint32_t dim, k;  /* k: ids in got */
    uint64_t got[10]; /* the ids the client got, best first */
} coord_recall_pending_t;

/* One collection's recent recalls. */
typedef struct {
    char name[WIRE_NAME_MAX + 1];
    float window[COORD_RECALL_WINDOW];
    size_t n, next;  /* filled, and the slot written next */
    uint64_t total;  /* measured since start */
} coord_recall_coll_t;

typedef struct {
    double rate;     /* fraction of client searches sampled (0: off) */
    double budget;   /* share of the time the exact searches may take, (0, 1] */
    int rate_set;    /* rate was read (lazily, from SHOAL_RECALL_SAMPLE or the default) */
    double credit;   /* accumulates rate; a search is sampled when it reaches 1 */
    coord_recall_pending_t queue[COORD_RECALL_QUEUE];
    size_t head, nqueued;
    int waiting;     /* an exact search is in flight */
    int64_t sent_us; /* when it was sent */
    int64_t next_us; /* none starts before */
    coord_recall_coll_t *colls;
    size_t ncolls;
    uint64_t sampled, measured, dropped, failed;
} coord_recall_t;

/* At most this many writes run at once (more wait in the FIFO). */
#define COORD_WRITES_RUNNING_MAX 64


typedef void (*coord_job_fn)(coord_t *coord, coord_job_t *job);
typedef void (*coord_shard_fn)(coord_t *coord, coord_job_t *job, size_t shard);
typedef void (*coord_reply_fn)(coord_t *coord, coord_job_t *job, size_t shard, uint32_t tag,
                               const wire_reply_t *rep);

/* A request in progress (client or internal). */
struct coord_job {
    coord_job_t *prev, *next;        /* the active list (every job that exists) */
    coord_job_t *fifo_next;          /* the write FIFO link while waiting */
    zframe_t *identity;              /* the client's routing id; NULL for an internal job */
    int delimiter;                   /* the client sent an empty delimiter frame (REQ) */
    zmsg_t *frames;                  /* the request frames; req's bulk pointers point into them */
    wire_request_t req;              /* the decoded request */
    int64_t start_us;                /* when the loop received it */
    int64_t deadline_us;             /* when on_timeout runs; 0 = none (waiting, training) */
    int client;                      /* a client's request (else internal) */
    int is_write;                    /* goes through the write FIFO */
    int started;                     /* a write: left the FIFO (it is running) */
    int routing;                     /* a task of it is with the routing thread (coord_route.c) */
    coord_scope_t scope;             /* a write: what it touches */
    size_t pending;                  /* shard requests outstanding */
    uint32_t *waiting;               /* nwaiting: requests outstanding per shard */
    size_t nwaiting;                 /* the shards when the job was made */
    uint64_t *rids;                  /* rids sent (for removal from the table at the end) */
    size_t nrids, caprids;           /* used / capacity of rids */
    coord_job_fn start;              /* runs when the job starts (FIFO head, or at once) */
    coord_reply_fn on_reply;         /* a shard answered */
    coord_job_fn on_timeout;         /* the deadline passed */
    coord_job_fn on_train;           /* the training thread finished (coord->train_done) */
    coord_shard_fn on_shard_down;    /* a shard it waits on was marked down (may be NULL) */
    uint64_t down_round;             /* the shard-down round that last called it */
    coord_job_fn on_tick;            /* while set, called once per turn of the loop (a big
                                        search sends its sub-batches a few per turn) */
    uint64_t tick_round;             /* the loop turn that last called it */
    void (*free_state)(void *state); /* frees state */
    void *state;                     /* the op's own state */
    /* an internal job's answer: called with the reply a client would get, before the end */
    void (*on_result)(coord_t *coord, coord_job_t *job, const wire_reply_t *rep);
    void *result_ctx;                /* for on_result (not freed with the job) */
};

/* A k-means + placement run handed to the training thread. */
struct coord_train {
    coord_job_t *job; /* whose on_train gets the result */
    float *sample;    /* n x dim (owned copy) */
    size_t n, dim, nlist, nshards, replicas; /* nshards: the live ones (placement's count) */
    uint32_t *live;            /* nshards: registry index of placement's shard i */
    shoal_metric_t metric;
    kmeans_opts_t kopts;       /* device points at coord's copy */
    float *centroids;          /* nlist x dim (result) */
    uint32_t *owners;          /* nlist x replicas (result) */
    uint64_t *sizes;           /* nlist (kmeans sizes) */
    kmeans_result_t result;    /* iters, objective, splits */
    placement_report_t report; /* imbalance, locality */
    quant_kind_t storage;      /* the collection's: sq8 also trains its quantizer */
    uint8_t *sq8_rec;          /* sq8: the quantizer's record (result), else NULL */
    size_t sq8_len;            /* its bytes */
    double train_ms;           /* wall time of the run */
    int rc;                    /* 0 or the failure */
    shoal_err_t err;           /* why it failed */
};

/* A collection's routing engine: its centroids resident in an exact engine. */
typedef struct {
    char name[WIRE_NAME_MAX + 1]; /* collection */
    knn_engine_t *engine;         /* centroids as ids 0..nlist-1 */
} coord_router_t;

/* Routing big batches off the loop (coord_route.c). */
typedef struct coord_route_task coord_route_task_t;
/* A routed task is back on the loop: rc 0 (lists filled) or the failure in err. */
typedef void (*coord_routed_fn)(coord_t *coord, coord_job_t *job, int rc, const shoal_err_t *err);

typedef struct {
    pthread_t thread;             /* the routing thread, while running */
    int running;                  /* it was started and not joined */
    pthread_mutex_t mu;           /* guards queue, finished, quit */
    pthread_cond_t cv;            /* a task was queued, or quit was set */
    pthread_cond_t idle;          /* the thread finished its current task */
    coord_route_task_t *current;  /* the task the thread is running, or NULL */
    coord_route_task_t *queue;    /* tasks waiting, oldest first */
    coord_route_task_t *finished; /* tasks done, newest first (the loop collects them) */
    int quit;                     /* the thread should end */
    int pipe[2];                  /* the thread writes a byte per finished task */
    size_t inflight;              /* tasks submitted and not collected (the loop's) */
    knn_engine_t **retired;       /* routers forgotten while tasks were in flight */
    size_t nretired;
} coord_route_thread_t;

/*
 * What to do when shard s answers after being down (was_down 1), for the
 * first time, or after a restart its ping showed (coord_health.c). Registered
 * at start-up with coord_on_shard_back; run in registration order.
 */
typedef void (*coord_shard_back_fn)(coord_t *coord, size_t s, int was_down);
#define COORD_SHARD_BACK_HOOKS_MAX 4 /* the write path's, the repair engine's, spare */

struct coord {
    coord_opts_t opts;     /* as given; strings point at the copies below */
    char *listen;          /* copy of opts.listen */
    char *data_dir;        /* copy of opts.data_dir */
    char *device;          /* copy of opts.device */
    char *endpoint;        /* the bound endpoint */
    wire_limits_t limits;  /* enforced on client requests */
    catalog_t *cat;        /* the catalog; the loop's */
    zsock_t *router;       /* clients' socket */
    coord_shard_t *shards; /* one per catalog shard */
    size_t nshards;
    service_stop_t stop;                /* coord_stop and opts.stop_fd; the loop polls them */
    int64_t start_us;                   /* coord_new's time */
    uint64_t next_rid;                  /* last rid used towards the shards */
    zhashx_t *pending;                  /* rid (hex text) -> coord_pending_t */
    coord_job_t *jobs;                  /* active list head */
    size_t client_jobs;                 /* client jobs in the list */
    coord_job_t *fifo_head, *fifo_tail; /* writes waiting */
    size_t fifo_len;
    size_t writes_running;     /* writes started and not ended (the re-drive job too) */
    int pump_dirty;            /* a write was queued or ended: look at the FIFO again */
    uint64_t down_round;       /* counts shard-down events (on_shard_down bookkeeping) */
    uint64_t tick_round;       /* counts loop turns (on_tick bookkeeping) */
    int train_pipe[2];         /* the training thread's "done" byte */
    pthread_t train_thread;    /* valid while train_running */
    int train_running;
    coord_train_t *train_task; /* the task in flight */
    coord_train_t *train_done; /* the finished task handed to on_train */
    coord_router_t *routers;   /* routing engines (coord_route.c) */
    size_t nrouters;
    coord_route_thread_t route; /* the routing thread (coord_route.c) */
    int64_t next_ping_us;        /* when the next ping round goes */
    coord_shard_back_fn shard_back[COORD_SHARD_BACK_HOOKS_MAX]; /* coord_on_shard_back's */
    size_t nshard_back;          /* hooks registered */
    int stopping;                /* the loop is draining */
    coord_job_t *redrive_job;    /* the re-drive job, or NULL */
    int redrive_wanted;          /* start a re-drive pass when none runs */
    int redrive_deferred;        /* an intent was skipped (a write held its ids): after
                                    the next write ends, re-drive again */
    zhashx_t *redrive_waits;     /* intent key -> waited-on shard + 1 (coord_write.c) */
    int64_t next_redrive_retry_us; /* when waiting intents are tried again (no shard event) */
    uint64_t redrive_attempts;   /* intents whose deletes were sent */
    uint64_t redrive_settled;    /* intents re-driven to the end and cleared */
    uint64_t repairs;            /* collections re-created on shards that lacked them */
    wire_io_counters_t counters; /* replies, errors, latency by op */
    wire_io_budget_t *reply_budget; /* bytes of client replies queued in ZeroMQ */
    uint64_t *fanout_hist;       /* nshards + 1: queries by shards touched */
    uint64_t fanout_queries;     /* queries counted */
    uint64_t fanout_sum;         /* shards touched, summed */
    uint64_t read_rr;            /* replicated reads: the next query's first replica choice */
    uint64_t hedged;             /* sub-queries sent to another replica (down, slow, failed) */
    int64_t loop_busy_max_us;    /* the longest turn of the loop (poll to poll, waits excluded) */
    uint64_t loop_slow_turns;    /* turns of the loop of 100 ms or more */
    uint64_t replica_misses;     /* replica writes missed (the replica was marked stale) */
    coord_repair_t repair;       /* coord_repair.c */
    coord_calib_t calib;         /* coord_calib.c */
    coord_recall_t recall;       /* coord_recall.c */
};

/* ---- coord.c: jobs and shards ---- */

/* A new job in the active list (not started). NULL when out of memory. */
coord_job_t *coord_job_new(coord_t *coord, int is_write);
/* Queues a write (or starts any other job at once); a write's scope comes from its request. */
void coord_job_submit(coord_t *coord, coord_job_t *job);
/* Counts job (internal, is_write) as a running write started outside the FIFO. */
void coord_write_begin(coord_t *coord, coord_job_t *job);
/* Sets sc to the sorted distinct ids of coll; -1 out of memory (sc then COLL). */
int coord_scope_set_ids(coord_scope_t *sc, const char *coll, const uint64_t *ids, size_t n);
/* qsort's comparison of uint64_t. */
int coord_cmp_u64(const void *a, const void *b);
/* Sorts ids ascending and removes repeats in place; returns how many remain. */
size_t coord_ids_sort_unique(uint64_t *ids, size_t n);
void coord_scope_clear(coord_scope_t *sc);
/* 1 when sc overlaps a running write other than self. */
int coord_scope_busy(const coord_t *coord, const coord_job_t *self, const coord_scope_t *sc);
/* A running write's scope changed: waiting writes are looked at again. */
void coord_writes_changed(coord_t *coord);
/* Ends a job: rids leave the table, state freed; *job_p NULL. */
void coord_job_end(coord_t *coord, coord_job_t **job_p);
/* Sends rep to the job's client (if any) or on_result (internal), ends the job. */
void coord_reply(coord_t *coord, coord_job_t **job_p, const wire_reply_t *rep);
/* An error reply with a formatted message, then the end. */
void coord_fail(coord_t *coord, coord_job_t **job_p, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/*
 * Sends req to shard s on behalf of job (NULL: a ping) with a fresh rid,
 * without blocking. 0 when it left (the reply comes to job->on_reply with
 * tag), -1 when the shard cannot take it now (not connected, queue full).
 */
int coord_send(coord_t *coord, coord_job_t *job, size_t s, uint32_t tag, wire_request_t *req);
/*
 * coord_send, handing *owned (a malloc'd buffer that is one of req's bulk
 * frames, e.g. its vecs) to ZeroMQ instead of copying it: *owned is NULL
 * afterwards when ZeroMQ took it (it frees it), else still the caller's.
 */
int coord_send_owned(coord_t *coord, coord_job_t *job, size_t s, uint32_t tag,
                     wire_request_t *req, void **owned);

/* A request of op on collection coll ("" for none) to a shard, the rest of it zero. */
void coord_request_init(wire_request_t *req, wire_op_t op, const char *coll);

/* 1 when shard s may be routed to (not known down, not removed). */
int coord_shard_usable(const coord_t *coord, size_t s);
/*
 * Links registry shard s (catalog_shard) that is not linked yet: grows
 * coord->shards to the registry's size, connects a DEALER. 0 or -1 (err).
 */
int coord_shard_link(coord_t *coord, size_t s, shoal_err_t *err);
/* Closes shard s's link for good (removed from the registry). */
void coord_shard_unlink(coord_t *coord, size_t s);
/* Appends "ep" (comma-separated) to buf for each s with flags[s] != 0. */
void coord_shard_list(const coord_t *coord, const uint32_t *flags, char *buf, size_t cap);
/* Drops rid's entry from the rid table (its answer, if one comes, is dropped as late). */
void coord_pending_forget(coord_t *coord, uint64_t rid);

/* ---- coord_health.c: pings, up / down, "shard came back" hooks ---- */
/* Registers fn to run when a shard comes back (start-up only; at most
   COORD_SHARD_BACK_HOOKS_MAX). */
void coord_on_shard_back(coord_t *coord, coord_shard_back_fn fn);
/* Shard s answered something: it is up (a change runs the hooks and asks for a re-drive). */
void coord_health_seen(coord_t *coord, size_t s);
/*
 * Shard s answered a ping: its uptime dates its start. A start later than
 * the one seen before means the process restarted, perhaps on an empty data
 * dir, even when it was never silent long enough to be marked down: the
 * hooks run as for a shard back from down (collections ensured, fenced,
 * verified).
 */
void coord_health_pinged(coord_t *coord, size_t s, const wire_reply_t *rep);
/* When a ping round is due: marks the silent shards down (their jobs are told) and pings all. */
void coord_health_tick(coord_t *coord, int64_t now);
/*
 * At start: waits (bounded) until every shard link is connected, so the first
 * requests do not find a link still handshaking and call its shard missing.
 * With ZMQ_IMMEDIATE a DEALER is writable only once connected, so the wait is
 * a poll for POLLOUT; each link then gets its first ping (whose answer comes
 * later and only counts as "seen"). ping_rid marks the links done.
 */
void coord_health_connect_wait(coord_t *coord);

/* ---- coord_route.c: routing engines and the routing thread ---- */

/* Per query, its nprobe nearest lists (the collection's routing engine), on the loop. */
int coord_route(coord_t *coord, const catalog_coll_t *coll, const float *vecs, size_t n,
                size_t nprobe, uint32_t *lists, shoal_err_t *err);
/* 1 when routing n queries of coll is worth the routing thread (opts.route_inline_macs). */
int coord_route_is_big(const coord_t *coord, const catalog_coll_t *coll, size_t n);
/*
 * coord_route on the routing thread: 0 when queued; done(job) then runs on
 * the loop (coord_route_collect). vecs and lists stay the job's and must live
 * until then; the job must not end before (give it no deadline meanwhile).
 */
int coord_route_submit(coord_t *coord, coord_job_t *job, const catalog_coll_t *coll,
                       const float *vecs, size_t n, size_t nprobe, uint32_t *lists,
                       coord_routed_fn done, shoal_err_t *err);
/* Forgets a collection's routing engine (drop, retrain). */
void coord_router_forget(coord_t *coord, const char *name);
/* coord_new: the state (no thread yet); coord_destroy: joins the thread, frees all routers. */
void coord_route_init(coord_t *coord);
void coord_route_fini(coord_t *coord);
int coord_route_thread_start(coord_t *coord, shoal_err_t *err);
void coord_route_thread_stop(coord_t *coord);
/* The loop: the routing pipe is readable; finished tasks go to their done handlers. */
void coord_route_collect(coord_t *coord);
/*
 * Job is ending with a routing task in flight (job->routing): the task is
 * dropped, after waiting for the thread to finish it if it is running (it
 * writes into the job's state), so the job's memory can go.
 */
void coord_route_cancel(coord_t *coord, coord_job_t *job);
/* Counts a search's queries in the fan-out histogram. */
void coord_record_fanout(coord_t *coord, const uint32_t *per_query, size_t nq);

/* pthread_create with SIGINT, SIGTERM and SIGHUP blocked in the new thread (the main
   thread handles them); pthread_create's return. */
int coord_thread_start(pthread_t *thread, void *(*fn)(void *), void *arg);
/*
 * Starts the training thread on a copy of sample for job; when done, the
 * loop sets coord->train_done and calls job->on_train, whose handler owns the
 * task (coord_train_free). SHOAL_EUNAVAIL if a run is in progress.
 */
int coord_train_start(coord_t *coord, coord_job_t *job, const catalog_coll_t *coll,
                      const float *sample, size_t n, uint32_t init, uint32_t max_iters,
                      uint64_t seed, shoal_err_t *err);
void coord_train_free(coord_train_t **task_p);

/* ---- coord_stats.c: answered at once by the loop ---- */
void coord_op_ping(coord_t *coord, coord_job_t *job);
void coord_op_stats(coord_t *coord, coord_job_t *job);

/* ---- coord_write.c ---- */
void coord_op_create(coord_t *coord, coord_job_t *job);
void coord_op_drop(coord_t *coord, coord_job_t *job);
void coord_op_train(coord_t *coord, coord_job_t *job);
void coord_op_insert(coord_t *coord, coord_job_t *job);
void coord_op_delete(coord_t *coord, coord_job_t *job);
void coord_op_checkpoint(coord_t *coord, coord_job_t *job);
/* Asks for a re-drive pass over every collection's intents (the loop starts it). */
void coord_redrive_schedule(coord_t *coord);
/* Starts the re-drive job (the loop, when wanted and none runs). */
void coord_redrive_run(coord_t *coord);
/*
 * Shard s answered SHOAL_ENOTFOUND for collection coll, which the catalog
 * has: queues a write that re-creates it there (one per shard at a time) and
 * logs what was lost.
 */
void coord_repair_collection(coord_t *coord, size_t s, const char *coll);
/* Sends create_collection for every catalog collection to shard s (answers ignored). */
void coord_ensure_collections(coord_t *coord, size_t s);
/* Start-up: registers the write path's "shard came back" hook (its collections ensured). */
void coord_write_init(coord_t *coord);

/* ---- coord_repair.c ---- */
/*
 * 1 when replica r of list l of c may serve reads: not stale, its shard not
 * known down, and (R > 1) not fenced.
 */
int coord_replica_readable(const coord_t *coord, const catalog_coll_t *c, uint32_t l, uint32_t r);
/*
 * The shard a read (or a repair's copy) of list l should ask: the first
 * readable replica from replica `first` on (mod R), below shard index limit
 * (the length of the caller's per-shard arrays), skipping the shards flagged
 * in bad (limit flags, or NULL); UINT32_MAX when none is. A stale replica is
 * never readable, so a repair's target is never its own source.
 */
uint32_t coord_replica_pick(const coord_t *coord, const catalog_coll_t *c, uint32_t l,
                            uint32_t first, const uint32_t *bad, size_t limit);
/* Shard s missed a write: its epoch moves; fence 1 also fences it (a replica was marked stale). */
void coord_shard_missed(coord_t *coord, size_t s, int fence);
/* At start: shards holding stale replicas (the catalog says) are fenced, and the repair
   engine's "shard came back" hook (verify it, fence it if it holds replicas) registered. */
void coord_repair_init(coord_t *coord);
/* Starts the next repair step when one is due (the loop calls it). */
void coord_repair_tick(coord_t *coord, int64_t now);
/* Marks every replica shard s holds of c stale (those with another up-to-date one). */
void coord_replicas_lost(coord_t *coord, const catalog_coll_t *c, size_t s);
/* Adds the "repair" map (6 entries) to a stats info map. */
void coord_repair_info(coord_t *coord, wire_info_t *info);
/* Recounts every shard's stale_orphans from the catalog (after orphans changed). */
void coord_orphans_count(coord_t *coord);
/*
 * A write to an extra copy (catalog_extras: a move target or an orphan) of
 * list l on shard s failed: the move is abandoned (the copy becomes a stale
 * orphan) or the orphan is marked stale, and the shard serves no reads until
 * it is dropped there.
 */
void coord_extra_missed(coord_t *coord, const catalog_coll_t *c, uint32_t l, size_t s);

/* ---- coord_calib.c ---- */
/*
 * Starts an internal read of collection coll through the client path: a get
 * of n ids, or a search of n x dim vecs for k neighbours (mode, nprobe, ef).
 * The arrays must outlive the job; on_result gets the reply (also when the
 * request fails at once, inside this call). NULL when out of memory.
 */
coord_job_t *coord_internal_read(coord_t *coord, wire_op_t op, const char *coll,
                                 const uint64_t *ids, const float *vecs, size_t n, uint32_t dim,
                                 uint32_t k, wire_mode_t mode, uint32_t nprobe, uint32_t ef,
                                 void (*on_result)(coord_t *, coord_job_t *, const wire_reply_t *));
/*
 * The calibrated setting for a recall target on c: the cheapest (nprobe,
 * ef) that reached target (0), or the best one when none did (1), with the
 * recall it reached; -1 when c has no calibration.
 */
int coord_calib_pick(const catalog_coll_t *c, double target, uint32_t *nprobe, uint32_t *ef,
                     double *recall);
/* Starts a calibration when one is due (the loop, through the repair tick). */
void coord_calib_tick(coord_t *coord, int64_t now);
/* Frees the calibration in progress (coord_destroy). */
void coord_calib_fini(coord_t *coord);
/* Adds c's "calibration" map to its stats. */
void coord_calib_info(coord_t *coord, wire_info_t *info, const catalog_coll_t *c);

/* ---- coord_recall.c ---- */
/* A client search answered with ids (n x k): perhaps one of its queries is sampled. */
void coord_recall_sample(coord_t *coord, const coord_job_t *job, const uint64_t *ids, size_t k);
/* Runs the next sample's exact search when the coordinator is not busy. */
void coord_recall_tick(coord_t *coord, int64_t now);
/* coll's estimate: 0 with the mean recall, its 95 % half-width and samples; -1 when none. */
int coord_recall_estimate(const coord_t *coord, const char *coll, double *recall, double *ci95,
                          uint64_t *samples);
/* Adds coll's "recall_estimate" map to its stats. */
void coord_recall_info(coord_t *coord, wire_info_t *info, const char *coll);
void coord_recall_fini(coord_t *coord);

/* ---- coord_grow.c ---- */
void coord_op_shard_add(coord_t *coord, coord_job_t *job);
void coord_op_shard_drain(coord_t *coord, coord_job_t *job);
void coord_op_shard_remove(coord_t *coord, coord_job_t *job);
void coord_op_rebalance(coord_t *coord, coord_job_t *job);
/* Adds the "moves" map to a stats info map. */
void coord_moves_info(coord_t *coord, wire_info_t *info);

/* ---- coord_snapshot.c ---- */
/* A write of scope COORD_SCOPE_ALL: every shard copies its database, then the catalog. */
void coord_op_snapshot_create(coord_t *coord, coord_job_t *job);
/* Answered at once from the catalog's records. */
void coord_op_snapshot_list(coord_t *coord, coord_job_t *job);

/* ---- coord_search.c ---- */
void coord_op_search(coord_t *coord, coord_job_t *job);
void coord_op_get(coord_t *coord, coord_job_t *job);
void coord_op_knn_graph(coord_t *coord, coord_job_t *job);

/* ---- shared checks ---- */
/* The collection or ENOTFOUND "collection \"x\" does not exist". */
const catalog_coll_t *coord_coll(coord_t *coord, const char *name, shoal_err_t *err);
/* vec_check_rows under coll's metric and dim; names the row (and its id when ids given). */
int coord_check_vectors(const char *op, const catalog_coll_t *coll, const float *vecs, size_t n,
                        const uint64_t *ids, shoal_err_t *err);

#endif
