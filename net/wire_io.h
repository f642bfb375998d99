/*
 * wire_io.h - the socket side of shoal's servers (shard and coordinator),
 * around the codec in wire.h: a request taken off a ROUTER with its envelope
 * (routing id, optional empty delimiter from REQ peers), the size and frame
 * checks against wire_limits_t, an encoded reply sent back with the same
 * envelope under a budget of queued reply bytes, per-op reply counters with
 * latency percentiles, and the small writers of stats/ping info maps.
 *
 * Ownership: functions that take a `**` consume what it points at and set it
 * to NULL; a returned zmsg_t is the caller's. Thread-safety: no state of its
 * own besides a budget's atomics (below); a socket, its budget and a
 * wire_io_counters_t belong to one thread (the loop).
 */
#ifndef SHOAL_WIRE_IO_H
#define SHOAL_WIRE_IO_H

#include "net/wire.h"
#include "net/wire_curve.h"

#include <czmq.h>

#include <stddef.h>
#include <stdint.h>

/* Latency samples kept per op (a ring: the newest ones). */
#define WIRE_IO_LATENCY_SAMPLES 1024

/* ---- ops ---- */

/* op as an index into per-op arrays; 0 (WIRE_OP_NONE) for anything invalid. */
size_t wire_io_op_index(wire_op_t op);
/* The name of the op at index, for logs and stats keys; "invalid" for 0. */
const char *wire_io_op_label(size_t index);
/* wire_io_op_label(wire_io_op_index(op)). */
const char *wire_io_op_name(wire_op_t op);

/* 1 when sock has a message waiting. */
int wire_io_readable(zsock_t *sock);

/* ---- sockets ---- */

/*
 * A new ROUTER bound to listen, refusing (in ZeroMQ) any frame over
 * max_message_bytes, linger 0, WIRE_IO_REPLY_HWM replies queued per peer and
 * ZMQ_ROUTER_MANDATORY (a send to a peer that left or is full fails at once
 * instead of vanishing or blocking; use wire_io_send_reply to send on it);
 * with curve (not NULL), a CURVE server with that certificate (the process's
 * allow-list, wire_curve_auth_new, must be running), else plain (NULL
 * mechanism, no authentication); *endpoint gets a copy of the bound endpoint
 * (the caller's to free). NULL on error, err naming the problem, prefixed
 * with who ("shard server").
 */
zsock_t *wire_io_router_bind(const char *who, const char *listen, size_t max_message_bytes,
                             const wire_curve_cert_t *curve, char **endpoint, shoal_err_t *err);

/* frames gets views of msg's first WIRE_FRAMES_MAX frames (valid while msg lives). */
void wire_io_frames(zmsg_t *msg, wire_frames_t *frames);

/* ---- requests ---- */

/*
 * Receives one message from a ROUTER and takes its envelope off: *identity
 * gets the routing id (the caller's), *delimiter 1 when an empty delimiter
 * frame followed it. NULL when nothing came, or when the message had no
 * routing id (logged and dropped).
 */
zmsg_t *wire_io_recv(zsock_t *router, zframe_t **identity, int *delimiter);

/*
 * Decodes the request frames in msg (envelope removed) under limits: an
 * empty message, one over max_message_bytes or with too many frames is
 * refused before decoding (req still gets op and rid from frame 0 when they
 * can be read, so the error reply matches). 0, or a code with err saying
 * why. req's bulk pointers point into msg: keep it alive.
 */
int wire_io_decode(zmsg_t *msg, const wire_limits_t *limits, wire_request_t *req, shoal_err_t *err);

/* ---- replies ---- */

/*
 * Encodes rep into a new message of copied frames; when rep cannot be
 * encoded, an error reply saying so instead. *code gets the status sent.
 * NULL only when even that fails (out of memory).
 */
zmsg_t *wire_io_encode_reply(const wire_reply_t *rep, int *code);

/* ---- the reply budget ---- */

/*
 * Reply bytes a server may hold queued for peers that have not read them
 * (--max-pending-reply-bytes): default, least and most.
 */
#define WIRE_IO_PENDING_REPLY_BYTES_DEFAULT ((size_t)256 << 20)
#define WIRE_IO_PENDING_REPLY_BYTES_MIN     ((size_t)1 << 20)
#define WIRE_IO_PENDING_REPLY_BYTES_MAX     ((size_t)1 << 40)
/* Replies queued for one peer, in messages (ZMQ_SNDHWM of the ROUTER). */
#define WIRE_IO_REPLY_HWM 1000
/* Allocations this large or larger are mmapped, so they go back to the OS when freed. */
#define WIRE_IO_MMAP_THRESHOLD ((size_t)1 << 20)
/* Entries wire_io_info_budget writes. */
#define WIRE_IO_BUDGET_INFO_ENTRIES 3

/*
 * What a server's replies hold in ZeroMQ's queues. Every reply frame goes to
 * libzmq without a copy and with a free callback; the callback (run by
 * whichever thread libzmq frees the frame on: its I/O thread once the bytes
 * are on the wire, or any thread when the queue of a peer that left is
 * dropped) takes the reply's bytes off the counters. A reply is queued only
 * when the total stays within max_bytes and, when its peer already has
 * replies waiting, that peer's share stays within half of max_bytes (so one
 * peer that reads nothing cannot take the whole budget from the others);
 * otherwise a small SHOAL_ELIMIT reply naming the budget goes in its place,
 * and the reply is counted as dropped. A peer that left (ROUTER_MANDATORY
 * reports it) or whose WIRE_IO_REPLY_HWM messages are all waiting gets
 * nothing, and that reply is counted as dropped too. Entering and leaving
 * the refusing state is logged once each, not each drop.
 *
 * Thread-safety: new, destroy, wire_io_send_reply and wire_io_budget_stats
 * belong to the loop thread that owns the ROUTER; the counters are atomics,
 * so libzmq's threads may take bytes off while the loop adds. Ownership:
 * wire_io_budget_destroy drops the owner's hold; the object itself lives on
 * until the last queued frame is freed (queues may outlive the socket's
 * close by the linger period), so a late callback never touches freed
 * memory.
 */
typedef struct wire_io_budget wire_io_budget_t;

/* Counters of a budget at one moment. */
typedef struct {
    uint64_t pending_bytes; /* reply bytes queued in ZeroMQ now */
    uint64_t dropped;       /* replies refused or not deliverable since start */
    uint64_t max_bytes;     /* the budget */
} wire_io_budget_stats_t;

/*
 * A budget of max_bytes (WIRE_IO_PENDING_REPLY_BYTES_MIN..MAX; 0 means the
 * default) for the server named who ("shard server"). Also fixes malloc's mmap
 * threshold at WIRE_IO_MMAP_THRESHOLD (glibc): large reply buffers then come
 * from mmap and are unmapped when freed, where the default, self-raising
 * threshold would keep a freed burst of replies in the heap for good. NULL
 * with err set on a bad max_bytes or no memory.
 */
wire_io_budget_t *wire_io_budget_new(const char *who, size_t max_bytes, shoal_err_t *err);

/* Drops the owner's hold (see above). NULL-safe; sets *budget_p to NULL. */
void wire_io_budget_destroy(wire_io_budget_t **budget_p);

/* The counters now; also forgets peers with nothing queued and logs a state change. */
void wire_io_budget_stats(wire_io_budget_t *budget, wire_io_budget_stats_t *stats);

/* "pending_reply_bytes", "replies_dropped", "max_pending_reply_bytes". */
void wire_io_info_budget(wire_info_t *info, const wire_io_budget_stats_t *stats);

/*
 * Sends *reply_p (consumed) behind *identity (consumed) and, when delimiter,
 * an empty frame, under budget as described above. Never blocks. A NULL
 * *reply_p (it could not be built) or a failed send is logged with op and
 * rid; a dropped reply is counted in the budget.
 */
void wire_io_send_reply(zsock_t *router, wire_io_budget_t *budget, zmsg_t **reply_p,
                        zframe_t **identity, int delimiter, wire_op_t op, uint64_t rid);

/* rep->info from info when it is there and complete: 0, else SHOAL_ENOMEM. */
int wire_io_reply_info(wire_reply_t *rep, const wire_info_t *info);

/* ---- counters ---- */

/* Replies sent by a server, per op (index 0: undecodable requests). */
typedef struct {
    uint64_t requests[WIRE_OP_COUNT];                         /* replies sent */
    uint64_t errors[WIRE_OP_COUNT];                           /* of which errors */
    uint32_t latency[WIRE_OP_COUNT][WIRE_IO_LATENCY_SAMPLES]; /* rings, microseconds */
    size_t latency_len[WIRE_OP_COUNT];                        /* samples in each ring */
    size_t latency_pos[WIRE_OP_COUNT];                        /* next slot to write */
} wire_io_counters_t;

/*
 * Counts one reply (status code, micros since the request came) and logs it:
 * a failure of the server's own (internal, I/O, corrupt, out of memory) at
 * error level with detail (the error text, or NULL for the code's name),
 * the rest at debug level.
 */
void wire_io_count(wire_io_counters_t *c, wire_op_t op, uint64_t rid, int code, int64_t micros,
                   const char *detail);

/* Nearest-rank percentiles (microseconds) of op index's samples; returns their count. */
size_t wire_io_latency(const wire_io_counters_t *c, size_t op, double *p50, double *p95,
                       double *p99);

/* ---- info maps ---- */

/* One "key": value entry. */
void wire_io_info_u64(wire_info_t *info, const char *key, uint64_t value);
void wire_io_info_f64(wire_info_t *info, const char *key, double value);
void wire_io_info_str(wire_info_t *info, const char *key, const char *value);

/* key: {"total": sum, op name: count, ...} (WIRE_OP_COUNT + 1 entries). */
void wire_io_info_counters(wire_info_t *info, const char *key, const uint64_t *counts);

/*
 * One op's entry of a latency map: label: {"p50", "p95", "p99", "samples"},
 * the percentiles (microseconds, as wire_io_latency gives them) divided by
 * per_unit (1 for microseconds, 1000 for milliseconds).
 */
void wire_io_info_latency(wire_info_t *info, size_t op, double p50_us, double p95_us,
                          double p99_us, size_t samples, double per_unit);

#endif
