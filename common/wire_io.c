/*
 * wire_io.c - requests off and replies onto a ROUTER, counters and info
 * writers shared by the shard and the coordinator; wire_io.h is the contract.
 */
#include "common/wire_io.h"

#include "common/log.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
                             char **endpoint, shoal_err_t *err)
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

int wire_io_check_finite(const char *op, const char *what, const float *vecs, size_t n, size_t dim,
                         const uint64_t *ids, shoal_err_t *err)
{
    for (size_t i = 0; i < n; i++) {
        const float *row = vecs + i * dim;
        for (size_t j = 0; j < dim; j++) {
            if (isfinite(row[j]))
                continue;
            const char *kind = isnan(row[j]) ? "NaN" : "Inf";
            if (ids)
                return shoal_err_set(err, SHOAL_EINVAL,
                                     "%s: vector %zu (id %" PRIu64 ") has a non-finite value "
                                     "(%s) at index %zu",
                                     op, i, ids[i], kind, j);
            return shoal_err_set(err, SHOAL_EINVAL,
                                 "%s: %s %zu has a non-finite value (%s) at index %zu", op, what, i,
                                 kind, j);
        }
    }
    return 0;
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

void wire_io_send_reply(zsock_t *router, zmsg_t **reply_p, zframe_t **identity, int delimiter,
                        wire_op_t op, uint64_t rid)
{
    zmsg_t *reply = *reply_p;
    *reply_p = NULL;
    if (!reply) {
        log_error("no reply could be built for %s (rid %" PRIu64 "): out of memory",
                  wire_io_op_name(op), rid);
        zframe_destroy(identity);
        return;
    }
    int rc = 0;
    if (delimiter)
        rc = zmsg_pushmem(reply, NULL, 0);
    if (rc == 0)
        rc = zmsg_prepend(reply, identity);
    /* Without ROUTER_MANDATORY a reply to a peer that left is dropped: fine. */
    if (rc != 0 || zmsg_send(&reply, router) != 0)
        log_warn("reply to %s (rid %" PRIu64 ") could not be sent", wire_io_op_name(op), rid);
    zmsg_destroy(&reply);
    zframe_destroy(identity);
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

/* Percentile p (0..100) of n sorted samples, nearest rank. */
static double s_percentile(const uint32_t *sorted, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t rank = (size_t)ceil(p / 100.0 * (double)n);
    rank = rank < 1 ? 1 : rank > n ? n : rank;
    return sorted[rank - 1];
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
