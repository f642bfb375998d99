/*
 * wire_io.c - requests off and replies onto a ROUTER, counters and info
 * writers shared by the shard and the coordinator; wire_io.h is the contract.
 */
#include "net/wire_io.h"

#include "common/log.h"
#include "common/timing.h"

#include <inttypes.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

/* ------------------------------------------------------------------------ */
/* Ops                                                                      */
/* ------------------------------------------------------------------------ */

size_t wire_io_op_index(wire_op_t op)
{
    return (op > WIRE_OP_NONE && op < WIRE_OP_COUNT) ? (size_t)op : 0;
}

const char *wire_io_op_label(size_t index)
{
    const char *name = index ? wire_op_name((wire_op_t)index) : NULL;
    return name ? name : "invalid";
}

const char *wire_io_op_name(wire_op_t op)
{
    return wire_io_op_label(wire_io_op_index(op));
}

int wire_io_readable(zsock_t *sock)
{
    return (zsock_events(sock) & ZMQ_POLLIN) != 0;
}

/* ------------------------------------------------------------------------ */
/* Sockets                                                                  */
/* ------------------------------------------------------------------------ */

zsock_t *wire_io_router_bind(const char *who, const char *listen, size_t max_message_bytes,
                             const wire_curve_cert_t *curve, char **endpoint, shoal_err_t *err)
{
    *endpoint = NULL;
    zsock_t *router = zsock_new(ZMQ_ROUTER);
    if (!router) {
        shoal_err_set(err, SHOAL_ENOMEM, "%s: cannot create the ROUTER socket", who);
        return NULL;
    }
    /* ZeroMQ drops a peer that sends one frame over the limit, before we read it. */
    int64_t maxmsg = max_message_bytes > (size_t)INT64_MAX ? -1 : (int64_t)max_message_bytes;
    zmq_setsockopt(zsock_resolve(router), ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
    zsock_set_linger(router, 0);
    /*
     * Before the bind, so every peer's pipe gets them. The count bounds the
     * small error replies a peer's queue may hold (the byte budget bounds the
     * rest); MANDATORY turns "peer gone" and "peer full" into errors that a
     * non-blocking send reports, so they can be counted, where the default
     * would drop silently or, with a full queue, block the loop.
     */
    zsock_set_sndhwm(router, WIRE_IO_REPLY_HWM);
    zsock_set_router_mandatory(router, 1);
    if (curve)
        wire_curve_server_apply(router, curve);
    if (zsock_bind(router, "%s", listen) < 0) {
        shoal_err_set(err, SHOAL_EIO, "cannot bind %s: %s", listen, zmq_strerror(zmq_errno()));
        zsock_destroy(&router);
        return NULL;
    }
    const char *bound = zsock_endpoint(router);
    *endpoint = strdup(bound ? bound : listen);
    if (!*endpoint) {
        shoal_err_set(err, SHOAL_ENOMEM, "%s: out of memory", who);
        zsock_destroy(&router);
    }
    return router;
}

void wire_io_frames(zmsg_t *msg, wire_frames_t *frames)
{
    memset(frames, 0, sizeof *frames);
    for (zframe_t *f = zmsg_first(msg); f && frames->count < WIRE_FRAMES_MAX; f = zmsg_next(msg)) {
        frames->data[frames->count] = zframe_data(f);
        frames->size[frames->count] = zframe_size(f);
        frames->count++;
    }
}

/* ------------------------------------------------------------------------ */
/* Requests                                                                 */
/* ------------------------------------------------------------------------ */

zmsg_t *wire_io_recv(zsock_t *router, zframe_t **identity, int *delimiter)
{
    *identity = NULL;
    *delimiter = 0;
    zmsg_t *msg = zmsg_recv(router);
    if (!msg)
        return NULL;
    *identity = zmsg_pop(msg);
    if (!*identity) {
        log_error("dropping a request: no routing id");
        zmsg_destroy(&msg);
        return NULL;
    }
    zframe_t *first = zmsg_first(msg);
    if (first && zframe_size(first) == 0) {
        zframe_t *empty = zmsg_pop(msg);
        zframe_destroy(&empty);
        *delimiter = 1;
    }
    return msg;
}

/* Reads op and rid from frame 0 alone, for an error reply to a refused message. */
static void s_peek_header(const wire_frames_t *frames, const wire_limits_t *limits,
                          wire_request_t *req)
{
    wire_frames_t header = *frames;
    header.count = frames->count ? 1 : 0;
    wire_request_t peek;
    wire_request_init(&peek);
    shoal_err_t ignored;
    (void)wire_request_decode(&header, limits, &peek, &ignored);
    req->op = peek.op;
    req->rid = peek.rid;
    wire_request_fini(&peek);
}

int wire_io_decode(zmsg_t *msg, const wire_limits_t *limits, wire_request_t *req, shoal_err_t *err)
{
    size_t nframes = zmsg_size(msg);
    size_t bytes = zmsg_content_size(msg);
    wire_frames_t frames;
    wire_io_frames(msg, &frames);
    if (nframes == 0)
        return shoal_err_set(err, SHOAL_EPROTO, "empty message: expected a msgpack header frame");
    if (bytes > limits->max_message_bytes || nframes > WIRE_FRAMES_MAX) {
        s_peek_header(&frames, limits, req);
        if (bytes > limits->max_message_bytes)
            return shoal_err_set(err, SHOAL_ELIMIT,
                                 "message of %zu bytes is over the limit of %zu bytes "
                                 "(--max-message-bytes)",
                                 bytes, limits->max_message_bytes);
        return shoal_err_set(err, SHOAL_EPROTO,
                             "message has %zu frames, at most %d are allowed (a header and up to "
                             "%d bulk frames)",
                             nframes, WIRE_FRAMES_MAX, WIRE_FRAMES_MAX - 1);
    }
    int rc = wire_request_decode(&frames, limits, req, err);
    if (rc != 0 && !err->msg[0])
        shoal_err_set(err, rc, "malformed request: %s", shoal_strerror(rc));
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Replies                                                                  */
/* ------------------------------------------------------------------------ */

zmsg_t *wire_io_encode_reply(const wire_reply_t *rep, int *code)
{
    wire_frames_t frames;
    memset(&frames, 0, sizeof frames);
    shoal_err_t err;
    shoal_err_clear(&err);
    *code = rep->code;
    if (wire_reply_encode(rep, &frames, &err) != 0) {
        log_error("encoding the %s reply (rid %" PRIu64 "): %s", wire_io_op_name(rep->op), rep->rid,
                  err.msg);
        wire_reply_t fallback;
        wire_reply_init(&fallback);
        char msg[SHOAL_ERR_MSG_MAX + 32];
        snprintf(msg, sizeof msg, "encoding the reply: %s", err.msg);
        wire_reply_error(&fallback, rep->op, rep->rid, err.code ? err.code : SHOAL_EINTERNAL, msg);
        *code = fallback.code;
        int rc = wire_reply_encode(&fallback, &frames, &err);
        wire_reply_fini(&fallback);
        if (rc != 0)
            return NULL;
    }
    zmsg_t *msg = zmsg_new();
    for (size_t i = 0; msg && i < frames.count; i++)
        if (zmsg_addmem(msg, frames.data[i], frames.size[i]) != 0)
            zmsg_destroy(&msg);
    wire_frames_fini(&frames);
    return msg;
}

int wire_io_reply_info(wire_reply_t *rep, const wire_info_t *info)
{
    if (!info || wire_info_failed(info))
        return SHOAL_ENOMEM;
    rep->info = wire_info_data(info);
    rep->info_len = wire_info_len(info);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* The reply budget                                                         */
/* ------------------------------------------------------------------------ */

/* Replies sent between two sweeps of the peers with nothing queued. */
#define S_PEER_SWEEP 256

/* One peer's share of the queued replies (wire_io.h). */
typedef struct {
    atomic_size_t bytes; /* its replies' bytes still in ZeroMQ */
    atomic_int refs;     /* the budget's map (while listed) + one per queued reply */
} s_peer_t;

struct wire_io_budget {
    char who[48];                 /* the server, for logs */
    size_t max_bytes;             /* --max-pending-reply-bytes */
    atomic_size_t pending;        /* reply bytes in ZeroMQ, all peers */
    atomic_uint_fast64_t dropped; /* replies refused or not deliverable */
    atomic_int refs;              /* the owner + one per queued reply */
    zhashx_t *peers;              /* routing id (hex) -> s_peer_t; the loop's */
    size_t sends;                 /* replies since the last sweep of idle peers */
    int refusing;                 /* replies are being refused (logged once) */
    uint64_t dropped_at_full;     /* dropped when refusing began */
};

/* One reply in libzmq's hands: its frames are views into msg. */
typedef struct {
    wire_io_budget_t *budget; /* held (refs) until the last frame is freed */
    s_peer_t *peer;           /* same */
    zmsg_t *msg;              /* the reply, whose frames libzmq reads */
    size_t bytes;             /* its content size, as counted */
    atomic_int frames_left;   /* frames libzmq has not freed yet */
} s_queued_t;

static void s_peer_release(s_peer_t *peer)
{
    if (atomic_fetch_sub(&peer->refs, 1) == 1)
        free(peer);
}

/* zhashx destructor: the map's hold. */
static void s_peer_unlist(void **item)
{
    if (*item)
        s_peer_release(*item);
    *item = NULL;
}

static void s_budget_release(wire_io_budget_t *budget)
{
    if (atomic_fetch_sub(&budget->refs, 1) == 1)
        free(budget);
}

/*
 * libzmq's free callback, once per frame, on whatever thread frees it. The
 * last frame frees the reply first and only then takes its bytes off, so a
 * reader that sees pending 0 sees the memory gone too.
 */
static void s_frame_free(void *data, void *hint)
{
    (void)data;
    s_queued_t *q = hint;
    if (atomic_fetch_sub(&q->frames_left, 1) != 1)
        return;
    zmsg_destroy(&q->msg);
    atomic_fetch_sub(&q->peer->bytes, q->bytes);
    atomic_fetch_sub(&q->budget->pending, q->bytes);
    s_peer_release(q->peer);
    s_budget_release(q->budget);
    free(q);
}

wire_io_budget_t *wire_io_budget_new(const char *who, size_t max_bytes, shoal_err_t *err)
{
    if (max_bytes == 0)
        max_bytes = WIRE_IO_PENDING_REPLY_BYTES_DEFAULT;
    if (max_bytes < WIRE_IO_PENDING_REPLY_BYTES_MIN || max_bytes > WIRE_IO_PENDING_REPLY_BYTES_MAX) {
        shoal_err_set(err, SHOAL_EINVAL,
                      "%s: --max-pending-reply-bytes %zu is out of range: expected %zu..%zu", who,
                      max_bytes, WIRE_IO_PENDING_REPLY_BYTES_MIN, WIRE_IO_PENDING_REPLY_BYTES_MAX);
        return NULL;
    }
    wire_io_budget_t *budget = calloc(1, sizeof *budget);
    if (!budget || !(budget->peers = zhashx_new())) {
        free(budget);
        shoal_err_set(err, SHOAL_ENOMEM, "%s: no memory for the reply budget", who);
        return NULL;
    }
    zhashx_set_destructor(budget->peers, s_peer_unlist);
    snprintf(budget->who, sizeof budget->who, "%s", who);
    budget->max_bytes = max_bytes;
    atomic_init(&budget->pending, 0);
    atomic_init(&budget->dropped, 0);
    atomic_init(&budget->refs, 1);
#ifdef __GLIBC__
    /*
     * A fixed threshold also stops glibc from raising it to the size of each
     * freed mmapped block (up to 32 MiB), after which a burst of large replies
     * would be served from the heap and kept by the process once freed (they
     * are freed on libzmq's thread, away from the arena of the thread that
     * built them). Measured with test_backpressure: a shard held 83 MiB after
     * the flooding peer left without it, 21 MiB (its size before) with it.
     * malloc_trim was not needed on top, and would have to run on libzmq's
     * thread, where the last free happens.
     */
    mallopt(M_MMAP_THRESHOLD, (int)WIRE_IO_MMAP_THRESHOLD);
#endif
    return budget;
}

void wire_io_budget_destroy(wire_io_budget_t **budget_p)
{
    if (!budget_p || !*budget_p)
        return;
    wire_io_budget_t *budget = *budget_p;
    zhashx_destroy(&budget->peers); /* queued replies hold their peers themselves */
    s_budget_release(budget);
    *budget_p = NULL;
}

/* Forgets the peers with nothing queued (they left, or read everything). */
static void s_peers_sweep(wire_io_budget_t *budget)
{
    budget->sends = 0;
    zlistx_t *keys = zhashx_keys(budget->peers);
    if (!keys)
        return;
    for (const char *key = zlistx_first(keys); key; key = zlistx_next(keys)) {
        s_peer_t *peer = zhashx_lookup(budget->peers, key);
        if (peer && atomic_load(&peer->bytes) == 0)
            zhashx_delete(budget->peers, key);
    }
    zlistx_destroy(&keys);
}

/* The peer's record, listed on first use; NULL when out of memory. */
static s_peer_t *s_peer_get(wire_io_budget_t *budget, const char *key)
{
    s_peer_t *peer = zhashx_lookup(budget->peers, key);
    if (peer)
        return peer;
    peer = calloc(1, sizeof *peer);
    if (!peer)
        return NULL;
    atomic_init(&peer->bytes, 0);
    atomic_init(&peer->refs, 1);
    if (zhashx_insert(budget->peers, key, peer) != 0) {
        free(peer);
        return NULL;
    }
    return peer;
}

/* Logs the end of a refusing spell once the queues are down to half the budget. */
static void s_budget_check_drained(wire_io_budget_t *budget)
{
    size_t pending = atomic_load(&budget->pending);
    if (!budget->refusing || pending > budget->max_bytes / 2)
        return;
    budget->refusing = 0;
    log_info("%s: reply budget: %zu bytes queued, under half of --max-pending-reply-bytes %zu "
             "again; %" PRIu64 " replies were dropped meanwhile",
             budget->who, pending, budget->max_bytes,
             (uint64_t)atomic_load(&budget->dropped) - budget->dropped_at_full);
}

void wire_io_budget_stats(wire_io_budget_t *budget, wire_io_budget_stats_t *stats)
{
    s_peers_sweep(budget);
    s_budget_check_drained(budget);
    stats->pending_bytes = atomic_load(&budget->pending);
    stats->dropped = atomic_load(&budget->dropped);
    stats->max_bytes = budget->max_bytes;
}

void wire_io_info_budget(wire_info_t *info, const wire_io_budget_stats_t *stats)
{
    wire_io_info_u64(info, "pending_reply_bytes", stats->pending_bytes);
    wire_io_info_u64(info, "replies_dropped", stats->dropped);
    wire_io_info_u64(info, "max_pending_reply_bytes", stats->max_bytes);
}

/*
 * Whether a reply of bytes may be queued for a peer that has mine queued,
 * with pending queued in all: the total within the budget, and a peer that
 * already waits on replies within half of it (its first reply may use all).
 */
static int s_budget_fits(const wire_io_budget_t *budget, size_t pending, size_t mine, size_t bytes)
{
    if (bytes > budget->max_bytes || pending > budget->max_bytes - bytes)
        return 0;
    return mine == 0 || mine + bytes <= budget->max_bytes / 2;
}

/* The small SHOAL_ELIMIT reply sent instead of a refused one; NULL when out of memory. */
static zmsg_t *s_refusal(const wire_io_budget_t *budget, wire_op_t op, uint64_t rid, size_t bytes,
                         size_t pending, size_t mine)
{
    char text[SHOAL_ERR_MSG_MAX];
    snprintf(text, sizeof text,
             "%s: the %zu-byte reply does not fit in --max-pending-reply-bytes %zu: %zu bytes "
             "are queued for peers that have not read their replies (%zu for this one; a peer "
             "with replies waiting may hold at most %zu)",
             wire_io_op_name(op), bytes, budget->max_bytes, pending, mine, budget->max_bytes / 2);
    wire_reply_t rep;
    wire_reply_init(&rep);
    wire_reply_error(&rep, op, rid, SHOAL_ELIMIT, text);
    int code;
    zmsg_t *msg = wire_io_encode_reply(&rep, &code);
    wire_reply_fini(&rep);
    return msg;
}

/*
 * Hands *msg_p (consumed) to libzmq behind id (and an empty delimiter), its
 * frames without a copy, counted against budget and peer until freed.
 * Every frame is prepared before the first is sent, so a failure never
 * leaves half a message on the ROUTER. 0, or the zmq errno (EHOSTUNREACH:
 * the peer left; EAGAIN: its queue is full; ENOMEM).
 */
static int s_queue(zsock_t *router, wire_io_budget_t *budget, s_peer_t *peer, zframe_t *id,
                   int delimiter, zmsg_t **msg_p)
{
    zmsg_t *msg = *msg_p;
    *msg_p = NULL;
    size_t nframes = zmsg_size(msg);
    s_queued_t *q = nframes && nframes <= WIRE_FRAMES_MAX ? calloc(1, sizeof *q) : NULL;
    if (!q) {
        zmsg_destroy(&msg);
        return ENOMEM;
    }
    q->budget = budget;
    q->peer = peer;
    q->msg = msg;
    q->bytes = zmsg_content_size(msg);
    atomic_init(&q->frames_left, (int)nframes);
    atomic_fetch_add(&budget->refs, 1);
    atomic_fetch_add(&peer->refs, 1);
    atomic_fetch_add(&peer->bytes, q->bytes);
    atomic_fetch_add(&budget->pending, q->bytes);

    /* From here each frame is released exactly once: by libzmq, or below. */
    zmq_msg_t parts[WIRE_FRAMES_MAX];
    size_t ready = 0;
    int rc = 0;
    for (zframe_t *f = zmsg_first(msg); f && ready < nframes; f = zmsg_next(msg)) {
        if (zmq_msg_init_data(&parts[ready], zframe_data(f), zframe_size(f), s_frame_free, q) != 0)
            break;
        ready++;
    }
    if (ready < nframes) {
        rc = ENOMEM;
        for (size_t i = ready; i < nframes; i++)
            s_frame_free(NULL, q);
        goto close_rest;
    }
    void *sock = zsock_resolve(router);
    if (zmq_send(sock, zframe_data(id), zframe_size(id), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
        (delimiter && zmq_send(sock, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)) {
        rc = zmq_errno();
        goto close_rest;
    }
    size_t sent = 0;
    for (; sent < nframes; sent++) {
        int flags = ZMQ_DONTWAIT | (sent + 1 < nframes ? ZMQ_SNDMORE : 0);
        if (zmq_msg_send(&parts[sent], sock, flags) < 0) {
            rc = zmq_errno();
            break;
        }
    }
    for (size_t i = sent; i < nframes; i++)
        zmq_msg_close(&parts[i]);
    return rc;
close_rest:
    for (size_t i = 0; i < ready; i++)
        zmq_msg_close(&parts[i]);
    return rc;
}

void wire_io_send_reply(zsock_t *router, wire_io_budget_t *budget, zmsg_t **reply_p,
                        zframe_t **identity, int delimiter, wire_op_t op, uint64_t rid)
{
    zmsg_t *reply = *reply_p;
    *reply_p = NULL;
    char *key = NULL;
    s_peer_t *peer = NULL;
    if (!reply) {
        log_error("no reply could be built for %s (rid %" PRIu64 "): out of memory",
                  wire_io_op_name(op), rid);
        goto dropped;
    }
    if (++budget->sends >= S_PEER_SWEEP)
        s_peers_sweep(budget);
    if (!*identity || !(key = zframe_strhex(*identity)) || !(peer = s_peer_get(budget, key))) {
        log_error("%s reply (rid %" PRIu64 ") dropped: out of memory", wire_io_op_name(op), rid);
        goto dropped;
    }

    size_t bytes = zmsg_content_size(reply);
    size_t pending = atomic_load(&budget->pending), mine = atomic_load(&peer->bytes);
    int refused = 0;
    if (!s_budget_fits(budget, pending, mine, bytes)) {
        refused = 1;
        atomic_fetch_add(&budget->dropped, 1);
        if (!budget->refusing) {
            budget->refusing = 1;
            budget->dropped_at_full = atomic_load(&budget->dropped) - 1;
            log_warn("%s: reply budget full: %zu bytes are queued for peers that have not read "
                     "their replies (%zu for this one), --max-pending-reply-bytes is %zu; "
                     "replies that do not fit get SHOAL_ELIMIT until the queues drain (first: "
                     "%s rid %" PRIu64 ", %zu bytes)",
                     budget->who, pending, mine, budget->max_bytes, wire_io_op_name(op), rid,
                     bytes);
        }
        zmsg_destroy(&reply);
        reply = s_refusal(budget, op, rid, bytes, pending, mine);
        if (!reply)
            goto done;
    } else {
        s_budget_check_drained(budget);
    }
    int rc = s_queue(router, budget, peer, *identity, delimiter, &reply);
    if (rc != 0) {
        /* A refused reply is counted already; its stand-in is not counted again. */
        if (!refused)
            atomic_fetch_add(&budget->dropped, 1);
        if (rc == EHOSTUNREACH)
            log_debug("%s reply (rid %" PRIu64 ") dropped: the peer left", wire_io_op_name(op),
                      rid);
        else if (rc == EAGAIN)
            log_debug("%s reply (rid %" PRIu64 ") dropped: the peer has %d replies waiting",
                      wire_io_op_name(op), rid, WIRE_IO_REPLY_HWM);
        else
            log_warn("%s reply (rid %" PRIu64 ") could not be sent: %s", wire_io_op_name(op), rid,
                     zmq_strerror(rc));
    }
    goto done;
dropped:
    atomic_fetch_add(&budget->dropped, 1);
done:
    zmsg_destroy(&reply);
    zstr_free(&key);
    zframe_destroy(identity);
}

/* ------------------------------------------------------------------------ */
/* Counters                                                                 */
/* ------------------------------------------------------------------------ */

void wire_io_count(wire_io_counters_t *c, wire_op_t op, uint64_t rid, int code, int64_t micros,
                   const char *detail)
{
    size_t i = wire_io_op_index(op);
    c->requests[i]++;
    if (code != SHOAL_OK)
        c->errors[i]++;
    uint32_t sample = micros < 0 ? 0 : micros > (int64_t)UINT32_MAX ? UINT32_MAX : (uint32_t)micros;
    c->latency[i][c->latency_pos[i]] = sample;
    c->latency_pos[i] = (c->latency_pos[i] + 1) % WIRE_IO_LATENCY_SAMPLES;
    if (c->latency_len[i] < WIRE_IO_LATENCY_SAMPLES)
        c->latency_len[i]++;
    if (code == SHOAL_EINTERNAL || code == SHOAL_EIO || code == SHOAL_ECORRUPT ||
        code == SHOAL_ENOMEM) {
        if (detail)
            log_error("%s (rid %" PRIu64 ") failed: %s", wire_io_op_label(i), rid, detail);
        else
            log_error("%s (rid %" PRIu64 ") failed with %s", wire_io_op_label(i), rid,
                      shoal_errname(code));
    } else {
        log_debug("%s (rid %" PRIu64 ") -> %s in %" PRId64 " us", wire_io_op_label(i), rid,
                  shoal_errname(code), micros);
    }
}

static int s_cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

/* Percentile p (0..100) of n sorted samples, nearest rank (timing.h). */
static double s_percentile(const uint32_t *sorted, size_t n, double p)
{
    return n ? sorted[timing_rank(n, p / 100.0) - 1] : 0;
}

size_t wire_io_latency(const wire_io_counters_t *c, size_t op, double *p50, double *p95,
                       double *p99)
{
    uint32_t sorted[WIRE_IO_LATENCY_SAMPLES];
    size_t n = op < WIRE_OP_COUNT ? c->latency_len[op] : 0;
    if (n)
        memcpy(sorted, c->latency[op], n * sizeof sorted[0]);
    qsort(sorted, n, sizeof sorted[0], s_cmp_u32);
    *p50 = s_percentile(sorted, n, 50);
    *p95 = s_percentile(sorted, n, 95);
    *p99 = s_percentile(sorted, n, 99);
    return n;
}

/* ------------------------------------------------------------------------ */
/* Info maps                                                                */
/* ------------------------------------------------------------------------ */

void wire_io_info_u64(wire_info_t *info, const char *key, uint64_t value)
{
    wire_info_key(info, key);
    wire_info_u64(info, value);
}

void wire_io_info_f64(wire_info_t *info, const char *key, double value)
{
    wire_info_key(info, key);
    wire_info_f64(info, value);
}

void wire_io_info_str(wire_info_t *info, const char *key, const char *value)
{
    wire_info_key(info, key);
    wire_info_str(info, value);
}

void wire_io_info_latency(wire_info_t *info, size_t op, double p50_us, double p95_us,
                          double p99_us, size_t samples, double per_unit)
{
    wire_info_key(info, wire_io_op_label(op));
    wire_info_map(info, 4);
    wire_io_info_f64(info, "p50", p50_us / per_unit);
    wire_io_info_f64(info, "p95", p95_us / per_unit);
    wire_io_info_f64(info, "p99", p99_us / per_unit);
    wire_io_info_u64(info, "samples", samples);
}

void wire_io_info_counters(wire_info_t *info, const char *key, const uint64_t *counts)
{
    wire_info_key(info, key);
    wire_info_map(info, WIRE_OP_COUNT + 1);
    uint64_t total = 0;
    for (size_t op = 0; op < WIRE_OP_COUNT; op++)
        total += counts[op];
    wire_io_info_u64(info, "total", total);
    for (size_t op = 0; op < WIRE_OP_COUNT; op++)
        wire_io_info_u64(info, wire_io_op_label(op), counts[op]);
}
