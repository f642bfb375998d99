/*
 * shoal_client.c - the synchronous client (client/shoal_client.h).
 *
 * Every typed call is the same three steps: fill a wire_request_t (s_request),
 * run it through shoal_client_call (encode, send, wait for the reply with our
 * rid, decode), copy what the caller keeps out of the reply into malloc'd
 * arrays and free the reply (s_release). The reply's frames are copied out of
 * ZeroMQ into a shoal_frames_t so that the public header needs no czmq type.
 */
#include "client/shoal_client.h"

#include <czmq.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The info map rendered as text grows its buffer up to this size. */
#define S_TEXT_MAX ((size_t)64 << 20)

struct shoal_client {
    char *endpoint;       /* where to connect (owned) */
    int timeout_ms;       /* per call */
    zsock_t *sock;        /* DEALER, or NULL until (re)connected */
    uint64_t next_rid;    /* rid of the next request */
    wire_limits_t limits; /* replies are decoded under these */
};

/* ------------------------------------------------------------------------ */
/* Socket                                                                   */
/* ------------------------------------------------------------------------ */

static int s_connect(shoal_client_t *client, shoal_err_t *err)
{
    if (client->sock)
        return 0;
    client->sock = zsock_new(ZMQ_DEALER);
    if (!client->sock)
        return shoal_err_set(err, SHOAL_ENOMEM, "cannot create a socket for %s", client->endpoint);
    zsock_set_linger(client->sock, 0);
    zsock_set_sndtimeo(client->sock, client->timeout_ms);
    if (zsock_connect(client->sock, "%s", client->endpoint) != 0) {
        int rc = shoal_err_set(err, SHOAL_EINVAL, "cannot connect to %s: %s", client->endpoint,
                               zmq_strerror(zmq_errno()));
        zsock_destroy(&client->sock);
        return rc;
    }
    return 0;
}

/* Throws the socket away after a timeout, so no late reply can be misread. */
static void s_reset(shoal_client_t *client)
{
    zsock_destroy(&client->sock);
}

static int s_send(shoal_client_t *client, const void *const *data, const size_t *sizes,
                  size_t nframes, shoal_err_t *err)
{
    int rc = s_connect(client, err);
    if (rc != 0)
        return rc;
    zmsg_t *msg = zmsg_new();
    for (size_t i = 0; msg && i < nframes; i++)
        if (zmsg_addmem(msg, data[i], sizes[i]) != 0)
            zmsg_destroy(&msg);
    if (!msg)
        return shoal_err_set(err, SHOAL_ENOMEM, "no memory for a request to %s", client->endpoint);
    if (zmsg_send(&msg, client->sock) != 0) {
        zmsg_destroy(&msg);
        s_reset(client);
        return shoal_err_set(err, SHOAL_ETIMEOUT, "cannot send to %s within %d ms",
                             client->endpoint, client->timeout_ms);
    }
    return 0;
}

/* The next message before deadline_us (monotonic), or SHOAL_ETIMEOUT. */
static int s_recv(shoal_client_t *client, int64_t deadline_us, const char *what, zmsg_t **out,
                  shoal_err_t *err)
{
    while (1) {
        int64_t left_ms = (deadline_us - zclock_usecs() + 999) / 1000;
        if (left_ms <= 0)
            break;
        zmq_pollitem_t item = {zsock_resolve(client->sock), 0, ZMQ_POLLIN, 0};
        int rc = zmq_poll(&item, 1, (long)left_ms);
        if (rc < 0 && zmq_errno() == EINTR) {
            /* czmq's own SIGINT handler, when the program left it on, sets this */
            if (zsys_interrupted)
                return shoal_err_set(err, SHOAL_EUNAVAIL, "%s: interrupted", what);
            continue;
        }
        if (rc < 0)
            return shoal_err_set(err, SHOAL_EIO, "%s: poll: %s", what, zmq_strerror(zmq_errno()));
        if (rc == 0)
            continue; /* re-check the deadline */
        zmsg_t *msg = zmsg_recv(client->sock);
        if (!msg)
            continue; /* interrupted */
        *out = msg;
        return 0;
    }
    s_reset(client);
    return shoal_err_set(err, SHOAL_ETIMEOUT, "%s: no reply from %s within %d ms", what,
                         client->endpoint, client->timeout_ms);
}

/* Copies a message's frames out of ZeroMQ. NULL when out of memory. */
static shoal_frames_t *s_frames_from_msg(zmsg_t *msg)
{
    shoal_frames_t *frames = calloc(1, sizeof *frames);
    size_t count = zmsg_size(msg);
    if (!frames)
        return NULL;
    frames->data = calloc(count ? count : 1, sizeof *frames->data);
    frames->size = calloc(count ? count : 1, sizeof *frames->size);
    if (!frames->data || !frames->size) {
        shoal_frames_destroy(&frames);
        return NULL;
    }
    for (zframe_t *f = zmsg_first(msg); f; f = zmsg_next(msg)) {
        size_t size = zframe_size(f);
        if (size) {
            frames->data[frames->count] = malloc(size);
            if (!frames->data[frames->count]) {
                shoal_frames_destroy(&frames);
                return NULL;
            }
            memcpy(frames->data[frames->count], zframe_data(f), size);
        }
        frames->size[frames->count] = size;
        frames->count++;
    }
    return frames;
}

void shoal_frames_destroy(shoal_frames_t **frames_p)
{
    if (!frames_p || !*frames_p)
        return;
    shoal_frames_t *frames = *frames_p;
    for (size_t i = 0; frames->data && i < frames->count; i++)
        free(frames->data[i]);
    free(frames->data);
    free(frames->size);
    free(frames);
    *frames_p = NULL;
}

/* ------------------------------------------------------------------------ */
/* Calls                                                                    */
/* ------------------------------------------------------------------------ */

int shoal_client_call(shoal_client_t *client, wire_request_t *req, wire_reply_t *rep,
                      shoal_frames_t **frames_out, shoal_err_t *err)
{
    *frames_out = NULL;
    wire_reply_init(rep);
    req->rid = client->next_rid++;
    const char *what = wire_op_name(req->op) ? wire_op_name(req->op) : "request";

    wire_frames_t out;
    memset(&out, 0, sizeof out);
    int rc = wire_request_encode(req, &out, err);
    if (rc != 0)
        return rc;
    rc = s_send(client, out.data, out.size, out.count, err);
    wire_frames_fini(&out);
    if (rc != 0)
        return rc;

    int64_t deadline = zclock_usecs() + (int64_t)client->timeout_ms * 1000;
    while (1) {
        zmsg_t *msg = NULL;
        rc = s_recv(client, deadline, what, &msg, err);
        if (rc != 0)
            return rc;
        shoal_frames_t *frames = s_frames_from_msg(msg);
        zmsg_destroy(&msg);
        if (!frames)
            return shoal_err_set(err, SHOAL_ENOMEM, "%s: no memory for the reply", what);
        wire_frames_t in;
        memset(&in, 0, sizeof in);
        if (frames->count > WIRE_FRAMES_MAX) {
            shoal_frames_destroy(&frames);
            return shoal_err_set(err, SHOAL_EPROTO, "%s: reply from %s has too many frames", what,
                                 client->endpoint);
        }
        in.count = frames->count;
        for (size_t i = 0; i < frames->count; i++) {
            in.data[i] = frames->data[i];
            in.size[i] = frames->size[i];
        }
        shoal_err_t derr;
        shoal_err_clear(&derr);
        rc = wire_reply_decode(&in, &client->limits, rep, &derr);
        if (rc != 0) {
            wire_reply_fini(rep);
            shoal_frames_destroy(&frames);
            return shoal_err_set(err, rc, "%s: malformed reply from %s: %s", what, client->endpoint,
                                 derr.msg);
        }
        /*
         * One request is in flight and the socket is replaced after a timeout,
         * so a mismatch is a server bug; rid 0 is an error about a request
         * whose header could not be read, which can only be ours.
         */
        if (rep->rid != req->rid && rep->rid != 0) {
            wire_reply_fini(rep);
            shoal_frames_destroy(&frames);
            continue;
        }
        if (rep->code != SHOAL_OK) {
            int code = rep->code;
            shoal_err_set(err, code, "%s", rep->msg[0] ? rep->msg : shoal_strerror(code));
            wire_reply_fini(rep);
            shoal_frames_destroy(&frames);
            wire_reply_init(rep);
            return code;
        }
        *frames_out = frames;
        return 0;
    }
}

int shoal_client_raw(shoal_client_t *client, const void *const *data, const size_t *sizes,
                     size_t nframes, shoal_frames_t **reply, shoal_err_t *err)
{
    *reply = NULL;
    int rc = s_send(client, data, sizes, nframes, err);
    if (rc != 0)
        return rc;
    zmsg_t *msg = NULL;
    rc = s_recv(client, zclock_usecs() + (int64_t)client->timeout_ms * 1000, "raw request", &msg,
                err);
    if (rc != 0)
        return rc;
    *reply = s_frames_from_msg(msg);
    zmsg_destroy(&msg);
    if (!*reply)
        return shoal_err_set(err, SHOAL_ENOMEM, "raw request: no memory for the reply");
    return 0;
}

/* Frees what shoal_client_call left in rep and frames; returns rc. */
static int s_release(wire_reply_t *rep, shoal_frames_t **frames, int rc)
{
    wire_reply_fini(rep);
    shoal_frames_destroy(frames);
    return rc;
}

/* Runs req and throws the reply away: for ops whose reply is only a status. */
static int s_call_status(shoal_client_t *client, wire_request_t *req, shoal_err_t *err)
{
    wire_reply_t rep;
    shoal_frames_t *frames = NULL;
    return s_release(&rep, &frames, shoal_client_call(client, req, &rep, &frames, err));
}

/* A fresh request for op on collection coll (NULL: ""). */
static int s_request(wire_request_t *req, wire_op_t op, const char *coll, shoal_err_t *err)
{
    wire_request_init(req);
    req->op = op;
    if (!coll)
        coll = "";
    if (strlen(coll) > WIRE_NAME_MAX)
        return shoal_err_set(err, SHOAL_EINVAL, "collection name has %zu bytes, at most %d",
                             strlen(coll), WIRE_NAME_MAX);
    snprintf(req->coll, sizeof req->coll, "%s", coll);
    return 0;
}

/* A malloc'd copy of len bytes (at least 1 byte allocated), or NULL. */
static void *s_dup(const void *data, size_t len)
{
    void *copy = malloc(len ? len : 1);
    if (copy && len)
        memcpy(copy, data, len);
    return copy;
}

/* ------------------------------------------------------------------------ */
/* Public API                                                               */
/* ------------------------------------------------------------------------ */

shoal_client_t *shoal_client_new(const char *endpoint, int timeout_ms, shoal_err_t *err)
{
    if (!endpoint || !*endpoint) {
        shoal_err_set(err, SHOAL_EINVAL, "shoal client: an endpoint is required");
        return NULL;
    }
    shoal_client_t *client = calloc(1, sizeof *client);
    if (!client || !(client->endpoint = s_dup(endpoint, strlen(endpoint) + 1))) {
        free(client);
        shoal_err_set(err, SHOAL_ENOMEM, "shoal client: out of memory");
        return NULL;
    }
    client->timeout_ms = timeout_ms > 0 ? timeout_ms : SHOAL_CLIENT_TIMEOUT_DEFAULT_MS;
    client->next_rid = 1;
    client->limits = wire_limits_default();
    if (s_connect(client, err) != 0) {
        shoal_client_destroy(&client);
        return NULL;
    }
    return client;
}

void shoal_client_destroy(shoal_client_t **client_p)
{
    if (!client_p || !*client_p)
        return;
    shoal_client_t *client = *client_p;
    zsock_destroy(&client->sock);
    free(client->endpoint);
    free(client);
    *client_p = NULL;
}

const char *shoal_client_endpoint(const shoal_client_t *client)
{
    return client->endpoint;
}

void shoal_client_set_timeout(shoal_client_t *client, int timeout_ms)
{
    client->timeout_ms = timeout_ms > 0 ? timeout_ms : SHOAL_CLIENT_TIMEOUT_DEFAULT_MS;
    if (client->sock)
        zsock_set_sndtimeo(client->sock, client->timeout_ms);
}

void shoal_client_set_limits(shoal_client_t *client, const wire_limits_t *limits)
{
    client->limits = *limits;
}

int shoal_client_ping(shoal_client_t *client, void **info, size_t *info_len, shoal_err_t *err)
{
    if (info)
        *info = NULL;
    if (info_len)
        *info_len = 0;
    wire_request_t req;
    wire_request_init(&req);
    req.op = WIRE_OP_PING;
    wire_reply_t rep;
    shoal_frames_t *frames = NULL;
    int rc = shoal_client_call(client, &req, &rep, &frames, err);
    if (rc == 0 && info && rep.info) {
        *info = s_dup(rep.info, rep.info_len);
        if (!*info)
            rc = shoal_err_set(err, SHOAL_ENOMEM, "ping: out of memory");
        else if (info_len)
            *info_len = rep.info_len;
    }
    return s_release(&rep, &frames, rc);
}

int shoal_client_create(shoal_client_t *client, const char *coll, size_t dim, shoal_metric_t metric,
                        size_t M, size_t ef_construction, shoal_err_t *err)
{
    if (dim > UINT32_MAX || M > UINT32_MAX || ef_construction > UINT32_MAX)
        return shoal_err_set(err, SHOAL_EINVAL,
                             "create_collection: dim, M or ef_construction "
                             "does not fit in 32 bits");
    wire_request_t req;
    int rc = s_request(&req, WIRE_OP_CREATE_COLLECTION, coll, err);
    if (rc != 0)
        return rc;
    req.dim = (uint32_t)dim;
    req.metric = metric;
    req.M = (uint32_t)M;
    req.ef_construction = (uint32_t)ef_construction;
    return s_call_status(client, &req, err);
}

int shoal_client_drop(shoal_client_t *client, const char *coll, shoal_err_t *err)
{
    wire_request_t req;
    int rc = s_request(&req, WIRE_OP_DROP_COLLECTION, coll, err);
    return rc != 0 ? rc : s_call_status(client, &req, err);
}

int shoal_client_insert(shoal_client_t *client, const char *coll, const uint64_t *ids,
                        const float *vecs, size_t n, size_t dim, uint64_t *seq, shoal_err_t *err)
{
    if (dim > UINT32_MAX)
        return shoal_err_set(err, SHOAL_EINVAL, "insert: dim %zu does not fit in 32 bits", dim);
    wire_request_t req;
    int rc = s_request(&req, WIRE_OP_INSERT, coll, err);
    if (rc != 0)
        return rc;
    req.n = n;
    req.dim = (uint32_t)dim;
    req.ids = ids;
    req.vecs = vecs;
    wire_reply_t rep;
    shoal_frames_t *frames = NULL;
    rc = shoal_client_call(client, &req, &rep, &frames, err);
    if (rc == 0 && seq)
        *seq = rep.seq;
    return s_release(&rep, &frames, rc);
}

int shoal_client_delete(shoal_client_t *client, const char *coll, const uint64_t *ids, size_t n,
                        size_t *deleted, uint64_t *seq, shoal_err_t *err)
{
    wire_request_t req;
    int rc = s_request(&req, WIRE_OP_DELETE, coll, err);
    if (rc != 0)
        return rc;
    req.n = n;
    req.ids = ids;
    wire_reply_t rep;
    shoal_frames_t *frames = NULL;
    rc = shoal_client_call(client, &req, &rep, &frames, err);
    if (rc == 0) {
        if (deleted)
            *deleted = (size_t)rep.count;
        if (seq)
            *seq = rep.seq;
    }
    return s_release(&rep, &frames, rc);
}

int shoal_client_search(shoal_client_t *client, const char *coll, const float *queries, size_t nq,
                        size_t dim, const shoal_search_opts_t *opts, uint64_t **ids, float **dists,
                        wire_mode_t *used, shoal_err_t *err)
{
    *ids = NULL;
    if (dists)
        *dists = NULL;
    if (dim > UINT32_MAX || opts->k > UINT32_MAX || opts->ef > UINT32_MAX)
        return shoal_err_set(err, SHOAL_EINVAL, "search: dim, k or ef does not fit in 32 bits");
    wire_request_t req;
    int rc = s_request(&req, WIRE_OP_SEARCH, coll, err);
    if (rc != 0)
        return rc;
    req.n = nq;
    req.dim = (uint32_t)dim;
    req.vecs = queries;
    req.k = (uint32_t)opts->k;
    req.mode = opts->mode;
    req.ef = (uint32_t)opts->ef;
    req.filter = opts->nfilter ? opts->filter : NULL;
    req.nfilter = opts->filter ? opts->nfilter : 0;
    wire_reply_t rep;
    shoal_frames_t *frames = NULL;
    rc = shoal_client_call(client, &req, &rep, &frames, err);
    if (rc == 0) {
        if (rep.n != nq || rep.k != opts->k) {
            rc = shoal_err_set(err, SHOAL_EPROTO,
                               "search: reply has %" PRIu64 " x %" PRIu32
                               " results, expected %zu x %zu",
                               rep.n, rep.k, nq, opts->k);
        } else {
            size_t total = nq * opts->k;
            *ids = s_dup(rep.ids, total * sizeof **ids);
            if (dists)
                *dists = s_dup(rep.dists, total * sizeof **dists);
            if (!*ids || (dists && !*dists))
                rc = shoal_err_set(err, SHOAL_ENOMEM, "search: no memory for the results");
            if (used)
                *used = rep.mode_used;
        }
        if (rc != 0) {
            free(*ids);
            *ids = NULL;
            if (dists) {
                free(*dists);
                *dists = NULL;
            }
        }
    }
    return s_release(&rep, &frames, rc);
}

int shoal_client_get(shoal_client_t *client, const char *coll, const uint64_t *ids, size_t n,
                     uint8_t **found, float **vecs, size_t *dim, shoal_err_t *err)
{
    *found = NULL;
    *vecs = NULL;
    *dim = 0;
    wire_request_t req;
    int rc = s_request(&req, WIRE_OP_GET, coll, err);
    if (rc != 0)
        return rc;
    req.n = n;
    req.ids = ids;
    wire_reply_t rep;
    shoal_frames_t *frames = NULL;
    rc = shoal_client_call(client, &req, &rep, &frames, err);
    if (rc == 0) {
        if (rep.n != n) {
            rc = shoal_err_set(err, SHOAL_EPROTO, "get: reply has %" PRIu64 " rows, expected %zu",
                               rep.n, n);
        } else {
            *found = s_dup(rep.found, n);
            *vecs = s_dup(rep.vecs, n * rep.dim * sizeof(float));
            *dim = rep.dim;
            if (!*found || !*vecs) {
                free(*found);
                free(*vecs);
                *found = NULL;
                *vecs = NULL;
                rc = shoal_err_set(err, SHOAL_ENOMEM, "get: no memory for the vectors");
            }
        }
    }
    return s_release(&rep, &frames, rc);
}

int shoal_client_stats(shoal_client_t *client, const char *coll, char **text, void **info,
                       size_t *info_len, shoal_err_t *err)
{
    if (text)
        *text = NULL;
    if (info)
        *info = NULL;
    if (info_len)
        *info_len = 0;
    wire_request_t req;
    int rc = s_request(&req, WIRE_OP_STATS, coll, err);
    if (rc != 0)
        return rc;
    wire_reply_t rep;
    shoal_frames_t *frames = NULL;
    rc = shoal_client_call(client, &req, &rep, &frames, err);
    if (rc == 0 && !rep.info)
        rc = shoal_err_set(err, SHOAL_EPROTO, "stats: the reply has no info map");
    if (rc == 0 && text) {
        for (size_t cap = 4096; cap <= S_TEXT_MAX; cap *= 2) {
            char *buf = malloc(cap);
            if (!buf) {
                rc = shoal_err_set(err, SHOAL_ENOMEM, "stats: out of memory");
                break;
            }
            int trc = wire_info_to_text(rep.info, rep.info_len, buf, cap);
            if (trc == 0) {
                *text = buf;
                break;
            }
            free(buf);
            if (trc != SHOAL_ELIMIT) {
                rc = shoal_err_set(err, trc, "stats: the info map is malformed");
                break;
            }
        }
        if (rc == 0 && !*text)
            rc = shoal_err_set(err, SHOAL_ELIMIT, "stats: the info map is too large as text");
    }
    if (rc == 0 && info) {
        *info = s_dup(rep.info, rep.info_len);
        if (!*info)
            rc = shoal_err_set(err, SHOAL_ENOMEM, "stats: out of memory");
        else if (info_len)
            *info_len = rep.info_len;
    }
    if (rc != 0 && text) {
        free(*text);
        *text = NULL;
    }
    return s_release(&rep, &frames, rc);
}

int shoal_client_checkpoint(shoal_client_t *client, const char *coll, shoal_err_t *err)
{
    wire_request_t req;
    int rc = s_request(&req, WIRE_OP_CHECKPOINT, coll, err);
    return rc != 0 ? rc : s_call_status(client, &req, err);
}
