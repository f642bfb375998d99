/*
 * shoal_client.c - the synchronous client (client/shoal_client.h).
 *
 * Every typed call is the same three steps: fill a wire_request_t (s_request),
 * run it through shoal_client_call (encode, send, wait for the reply with our
 * rid, decode), copy what the caller keeps out of the reply into malloc'd
 * arrays and free the reply (s_release). The reply's frames are copied out of
 * ZeroMQ into a shoal_frames_t so that the public header needs no czmq type.
 *
 * Calls whose request carries a server-side deadline (search, knn_graph at the
 * coordinator) wait at least that deadline plus S_DEADLINE_MARGIN_MS, so a
 * partial answer sent at the deadline is not lost to the client's own timeout.
 */
#include "common/quant.h"
#include "client/shoal_client.h"

#include "net/wire_curve.h"

#include <czmq.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The info map rendered as text grows its buffer up to this size. */
#define S_TEXT_MAX ((size_t)64 << 20)

/*
 * A request that carries a deadline for the server (search, knn_graph) is
 * waited for at least this long past that deadline, so the server's partial
 * answer, which comes after the deadline plus its own merge work and the
 * trip back, is received rather than abandoned.
 */
#define S_DEADLINE_MARGIN_MS 2000

struct shoal_client {
    char *endpoint;       /* where to connect (owned) */
    int timeout_ms;       /* per call */
    zsock_t *sock;        /* DEALER, or NULL until (re)connected */
    uint64_t next_rid;    /* rid of the next request */
    wire_limits_t limits; /* replies are decoded under these */
    int curve;            /* 1: the socket is a CURVE client with the keys below */
    wire_curve_cert_t curve_own;    /* this client's keys */
    wire_curve_cert_t curve_server; /* the server's public key */
    int heard;            /* a reply came on the current socket */
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
    if (client->curve)
        wire_curve_client_apply(client->sock, &client->curve_own, &client->curve_server);
    client->heard = 0;
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
        client->heard = 1;
        return 0;
    }
    /*
     * A CURVE server that refuses a key, or a plain client at a CURVE
     * server, is silence, not an error: say so when nothing ever came.
     */
    const char *hint = "";
    if (!client->heard)
        hint = client->curve ? " (no answer at all: check that this client's key is authorized "
                               "(--curve-key) and the server key is right (--curve-server-key))"
                             : " (no answer at all: if the server uses CURVE, give --curve-key "
                               "and --curve-server-key)";
    s_reset(client);
    return shoal_err_set(err, SHOAL_ETIMEOUT, "%s: no reply from %s within %d ms%s", what,
                         client->endpoint, client->timeout_ms, hint);
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

/* Receives one message before deadline and decodes it into rep; *frames_p then owns the bytes
 * rep points into. */
static int s_recv_reply(shoal_client_t *client, int64_t deadline, const char *what,
                        wire_reply_t *rep, shoal_frames_t **frames_p, shoal_err_t *err)
{
    zmsg_t *msg = NULL;
    int rc = s_recv(client, deadline, what, &msg, err);
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
    *frames_p = frames;
    return 0;
}

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
        shoal_frames_t *frames = NULL;
        rc = s_recv_reply(client, deadline, what, rep, &frames, err);
        if (rc != 0)
            return rc;
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
        /*
         * The decoder checked the reply's fields against the op the reply
         * names; the typed calls read the fields of the op they sent, so the
         * two must agree (a search reply always carries ids and dists, etc.).
         */
        if (rep->op != req->op) {
            const char *got = wire_op_name(rep->op) ? wire_op_name(rep->op) : "?";
            wire_reply_fini(rep);
            shoal_frames_destroy(&frames);
            wire_reply_init(rep);
            return shoal_err_set(err, SHOAL_EPROTO, "%s: reply from %s is for op %s", what,
                                 client->endpoint, got);
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

/*
 * Runs op on coll with n ids (delete, get); rep and *frames as
 * shoal_client_call leaves them (initialised when the request is refused).
 */
static int s_call_ids(shoal_client_t *client, wire_op_t op, const char *coll,
                      const uint64_t *ids, size_t n, wire_reply_t *rep, shoal_frames_t **frames,
                      shoal_err_t *err)
{
    wire_request_t req;
    int rc = s_request(&req, op, coll, err);
    if (rc != 0) {
        wire_reply_init(rep);
        *frames = NULL;
        return rc;
    }
    req.n = n;
    req.ids = ids;
    return shoal_client_call(client, &req, rep, frames, err);
}

/*
 * shoal_client_call for a request that carries req->deadline_ms: the wait is
 * stretched to the deadline plus a margin when the client's timeout is
 * shorter, then put back.
 */
static int s_call_deadline(shoal_client_t *client, wire_request_t *req, wire_reply_t *rep,
                           shoal_frames_t **frames, shoal_err_t *err)
{
    int saved = client->timeout_ms;
    int64_t wanted = (int64_t)req->deadline_ms + S_DEADLINE_MARGIN_MS;
    if (req->deadline_ms > 0 && wanted > saved)
        client->timeout_ms = wanted > INT32_MAX ? INT32_MAX : (int)wanted;
    int rc = shoal_client_call(client, req, rep, frames, err);
    client->timeout_ms = saved;
    return rc;
}

/*
 * The info map (NULL: none, rendered "{}") as one line of text in a malloc'd
 * buffer that grows until it fits. what names the op for messages.
 */
static int s_info_text(const void *info, size_t info_len, const char *what, char **text,
                       shoal_err_t *err)
{
    *text = NULL;
    if (!info) {
        *text = s_dup("{}", 3);
        return *text ? 0 : shoal_err_set(err, SHOAL_ENOMEM, "%s: out of memory", what);
    }
    for (size_t cap = 4096; cap <= S_TEXT_MAX; cap *= 2) {
        char *buf = malloc(cap);
        if (!buf)
            return shoal_err_set(err, SHOAL_ENOMEM, "%s: out of memory", what);
        int trc = wire_info_to_text(info, info_len, buf, cap);
        if (trc == 0) {
            *text = buf;
            return 0;
        }
        free(buf);
        if (trc != SHOAL_ELIMIT)
            return shoal_err_set(err, trc, "%s: the info map is malformed", what);
    }
    return shoal_err_set(err, SHOAL_ELIMIT, "%s: the info map is too large as text", what);
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

shoal_client_t *shoal_client_new_curve(const char *endpoint, int timeout_ms,
                                       const char *client_secret_cert,
                                       const char *server_public_cert, shoal_err_t *err)
{
    wire_curve_cert_t own, server;
    if (!client_secret_cert || !server_public_cert) {
        shoal_err_set(err, SHOAL_EINVAL,
                      "shoal client: CURVE needs both the client's secret certificate and the "
                      "server's public certificate");
        return NULL;
    }
    if (!zmq_has("curve")) {
        shoal_err_set(err, SHOAL_EUNSUPPORTED, "shoal client: this libzmq has no CURVE");
        return NULL;
    }
    if (wire_curve_load(client_secret_cert, 1, &own, err) != 0 ||
        wire_curve_load(server_public_cert, 0, &server, err) != 0)
        return NULL;
    shoal_client_t *client = shoal_client_new(endpoint, timeout_ms, err);
    if (!client)
        return NULL;
    /* The first socket was plain: make a CURVE one in its place. */
    s_reset(client);
    client->curve = 1;
    client->curve_own = own;
    client->curve_server = server;
    memset(&own, 0, sizeof own);
    if (s_connect(client, err) != 0)
        shoal_client_destroy(&client);
    return client;
}

void shoal_client_destroy(shoal_client_t **client_p)
{
    if (!client_p || !*client_p)
        return;
    shoal_client_t *client = *client_p;
    zsock_destroy(&client->sock);
    free(client->endpoint);
    memset(&client->curve_own, 0, sizeof client->curve_own);
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

/* Sends create_collection (zeros in o: the server's defaults, or none on a shard). */
static int s_create(shoal_client_t *client, const char *coll, size_t dim, shoal_metric_t metric,
                    const shoal_create_opts_t *o, shoal_err_t *err)
{
    if (dim > UINT32_MAX || o->nlist > UINT32_MAX || o->M > UINT32_MAX ||
        o->ef_construction > UINT32_MAX || o->replication > UINT32_MAX ||
        o->write_quorum > UINT32_MAX)
        return shoal_err_set(err, SHOAL_EINVAL,
                             "create_collection: dim, nlist, M, ef_construction, replication or "
                             "write_quorum does not fit in 32 bits");
    wire_request_t req;
    int rc = s_request(&req, WIRE_OP_CREATE_COLLECTION, coll, err);
    if (rc != 0)
        return rc;
    req.dim = (uint32_t)dim;
    req.metric = metric;
    req.nlist = (uint32_t)o->nlist;
    req.M = (uint32_t)o->M;
    req.ef_construction = (uint32_t)o->ef_construction;
    req.replication = (uint32_t)o->replication;
    req.write_quorum = (uint32_t)o->write_quorum;
    req.target_recall = o->target_recall;
    if (o->storage) {
        quant_kind_t kind;
        if ((rc = quant_kind_parse(o->storage, &kind, err)) != 0)
            return shoal_err_prefix(err, "create_collection");
        req.storage = WIRE_STORAGE_GIVEN | (uint32_t)kind;
    }
    return s_call_status(client, &req, err);
}

int shoal_client_create(shoal_client_t *client, const char *coll, size_t dim, shoal_metric_t metric,
                        size_t M, size_t ef_construction, shoal_err_t *err)
{
    shoal_create_opts_t o;
    memset(&o, 0, sizeof o);
    o.M = M;
    o.ef_construction = ef_construction;
    return s_create(client, coll, dim, metric, &o, err);
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
    return shoal_client_insert_lists(client, coll, ids, vecs, NULL, n, dim, seq, err);
}

int shoal_client_insert_lists(shoal_client_t *client, const char *coll, const uint64_t *ids,
                              const float *vecs, const uint32_t *lists, size_t n, size_t dim,
                              uint64_t *seq, shoal_err_t *err)
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
    req.lists = lists;
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
    wire_reply_t rep;
    shoal_frames_t *frames = NULL;
    int rc = s_call_ids(client, WIRE_OP_DELETE, coll, ids, n, &rep, &frames, err);
    if (rc == 0) {
        if (deleted)
            *deleted = (size_t)rep.count;
        if (seq)
            *seq = rep.seq;
    }
    return s_release(&rep, &frames, rc);
}

int shoal_client_create_ivf(shoal_client_t *client, const char *coll, size_t dim,
                            shoal_metric_t metric, const shoal_create_opts_t *opts,
                            shoal_err_t *err)
{
    shoal_create_opts_t zero;
    memset(&zero, 0, sizeof zero);
    return s_create(client, coll, dim, metric, opts ? opts : &zero, err);
}

int shoal_client_train(shoal_client_t *client, const char *coll, const float *sample, size_t n,
                       size_t dim, const shoal_train_opts_t *opts, char **text, shoal_err_t *err)
{
    if (text)
        *text = NULL;
    shoal_train_opts_t zero = {0, 0, 0};
    if (!opts)
        opts = &zero;
    if (dim > UINT32_MAX || opts->max_iters > UINT32_MAX)
        return shoal_err_set(err, SHOAL_EINVAL,
                             "train: dim %zu or max_iters %zu does not fit in 32 bits", dim,
                             opts->max_iters);
    wire_request_t req;
    int rc = s_request(&req, WIRE_OP_TRAIN, coll, err);
    if (rc != 0)
        return rc;
    req.n = n;
    req.dim = (uint32_t)dim;
    req.vecs = sample;
    req.init = opts->random_init ? 1 : 0;
    req.max_iters = (uint32_t)opts->max_iters;
    req.seed = opts->seed;
    wire_reply_t rep;
    shoal_frames_t *frames = NULL;
    rc = shoal_client_call(client, &req, &rep, &frames, err);
    if (rc == 0 && text)
        rc = s_info_text(rep.info, rep.info_len, "train", text, err);
    return s_release(&rep, &frames, rc);
}

int shoal_client_search_ex(shoal_client_t *client, const char *coll, const float *queries,
                           size_t nq, size_t dim, const shoal_search_opts_t *opts, uint64_t **ids,
                           float **dists, shoal_search_info_t *info, shoal_err_t *err)
{
    *ids = NULL;
    if (dists)
        *dists = NULL;
    if (info)
        memset(info, 0, sizeof *info);
    if (dim > UINT32_MAX || opts->k > UINT32_MAX || opts->ef > UINT32_MAX ||
        opts->nprobe > UINT32_MAX || opts->deadline_ms > UINT32_MAX)
        return shoal_err_set(err, SHOAL_EINVAL,
                             "search: dim, k, ef, nprobe or deadline_ms does not fit in 32 bits");
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
    req.nprobe = (uint32_t)opts->nprobe;
    req.deadline_ms = (uint32_t)opts->deadline_ms;
    req.recall = opts->recall;
    wire_reply_t rep;
    shoal_frames_t *frames = NULL;
    rc = s_call_deadline(client, &req, &rep, &frames, err);
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
            if (info) {
                info->used = rep.mode_used;
                info->partial = rep.partial != 0;
                snprintf(info->missing, sizeof info->missing, "%s", rep.missing);
                info->fanout = rep.fanout;
                info->nprobe = rep.nprobe_used;
                info->ef = rep.ef_used;
                info->recall = rep.recall;
            }
        }
        if (rc != 0) {
            free(*ids);
            *ids = NULL;
            if (dists) {
                free(*dists);
                *dists = NULL;
            }
            if (info)
                memset(info, 0, sizeof *info);
        }
    }
    return s_release(&rep, &frames, rc);
}

int shoal_client_search(shoal_client_t *client, const char *coll, const float *queries, size_t nq,
                        size_t dim, const shoal_search_opts_t *opts, uint64_t **ids, float **dists,
                        wire_mode_t *used, shoal_err_t *err)
{
    shoal_search_info_t info;
    int rc = shoal_client_search_ex(client, coll, queries, nq, dim, opts, ids, dists, &info, err);
    if (rc == 0 && used)
        *used = info.used;
    return rc;
}

void shoal_knn_chunk_fini(shoal_knn_chunk_t *chunk)
{
    if (!chunk)
        return;
    free(chunk->qids);
    free(chunk->ids);
    free(chunk->dists);
    memset(chunk, 0, sizeof *chunk);
}

int shoal_client_knn_graph(shoal_client_t *client, const char *coll,
                           const shoal_search_opts_t *opts, size_t chunk_rows, const char *cursor,
                           shoal_knn_chunk_t *chunk, shoal_err_t *err)
{
    memset(chunk, 0, sizeof *chunk);
    if (!cursor)
        cursor = "";
    if (strlen(cursor) > WIRE_CURSOR_MAX)
        return shoal_err_set(err, SHOAL_EINVAL, "knn_graph: cursor has %zu bytes, at most %d",
                             strlen(cursor), WIRE_CURSOR_MAX);
    if (opts->k > UINT32_MAX || opts->ef > UINT32_MAX || opts->nprobe > UINT32_MAX ||
        opts->deadline_ms > UINT32_MAX || chunk_rows > UINT32_MAX)
        return shoal_err_set(err, SHOAL_EINVAL,
                             "knn_graph: k, ef, nprobe, deadline_ms or chunk rows "
                             "does not fit in 32 bits");
    wire_request_t req;
    int rc = s_request(&req, WIRE_OP_KNN_GRAPH, coll, err);
    if (rc != 0)
        return rc;
    req.k = (uint32_t)opts->k;
    req.mode = opts->mode;
    req.ef = (uint32_t)opts->ef;
    req.nprobe = (uint32_t)opts->nprobe;
    req.deadline_ms = (uint32_t)opts->deadline_ms;
    req.chunk = (uint32_t)chunk_rows;
    snprintf(req.cursor, sizeof req.cursor, "%s", cursor);
    wire_reply_t rep;
    shoal_frames_t *frames = NULL;
    rc = s_call_deadline(client, &req, &rep, &frames, err);
    if (rc != 0)
        return s_release(&rep, &frames, rc);
    /* the decoder saw ids, dists and qids for every row of a knn_graph reply */
    if (rep.n > 0 && rep.k != opts->k) {
        rc = shoal_err_set(err, SHOAL_EPROTO,
                           "knn_graph: reply has %" PRIu64 " rows x %" PRIu32
                           " neighbours, expected k=%zu",
                           rep.n, rep.k, opts->k);
        return s_release(&rep, &frames, rc);
    }
    size_t n = (size_t)rep.n;
    chunk->n = n;
    chunk->k = opts->k;
    chunk->qids = s_dup(rep.qids, n * sizeof *chunk->qids);
    chunk->ids = s_dup(rep.ids, n * opts->k * sizeof *chunk->ids);
    chunk->dists = s_dup(rep.dists, n * opts->k * sizeof *chunk->dists);
    if (!chunk->qids || !chunk->ids || !chunk->dists) {
        shoal_knn_chunk_fini(chunk);
        rc = shoal_err_set(err, SHOAL_ENOMEM, "knn_graph: no memory for a chunk of %zu rows", n);
        return s_release(&rep, &frames, rc);
    }
    snprintf(chunk->cursor, sizeof chunk->cursor, "%s", rep.cursor);
    chunk->total = rep.total;
    chunk->partial = rep.partial != 0;
    snprintf(chunk->missing, sizeof chunk->missing, "%s", rep.missing);
    return s_release(&rep, &frames, 0);
}

int shoal_client_get(shoal_client_t *client, const char *coll, const uint64_t *ids, size_t n,
                     uint8_t **found, float **vecs, size_t *dim, shoal_err_t *err)
{
    *found = NULL;
    *vecs = NULL;
    *dim = 0;
    wire_reply_t rep;
    shoal_frames_t *frames = NULL;
    int rc = s_call_ids(client, WIRE_OP_GET, coll, ids, n, &rep, &frames, err);
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

/* Clears the out parameters of a call that returns an info map (each may be NULL). */
static void s_info_out_clear(char **text, void **info, size_t *info_len)
{
    if (text)
        *text = NULL;
    if (info)
        *info = NULL;
    if (info_len)
        *info_len = 0;
}

/*
 * Runs req, whose successful reply must carry an info map (stats and the
 * cluster ops), and hands the map out as text and as msgpack bytes; on any
 * failure nothing is handed out.
 */
static int s_call_info(shoal_client_t *client, wire_request_t *req, char **text, void **info,
                       size_t *info_len, shoal_err_t *err)
{
    const char *what = wire_op_name(req->op);
    wire_reply_t rep;
    shoal_frames_t *frames = NULL;
    int rc = shoal_client_call(client, req, &rep, &frames, err);
    if (rc == 0 && !rep.info)
        rc = shoal_err_set(err, SHOAL_EPROTO, "%s: the reply has no info map", what);
    if (rc == 0 && text)
        rc = s_info_text(rep.info, rep.info_len, what, text, err);
    if (rc == 0 && info) {
        *info = s_dup(rep.info, rep.info_len);
        if (!*info)
            rc = shoal_err_set(err, SHOAL_ENOMEM, "%s: out of memory", what);
        else if (info_len)
            *info_len = rep.info_len;
    }
    if (rc != 0 && text) {
        free(*text);
        *text = NULL;
    }
    return s_release(&rep, &frames, rc);
}

int shoal_client_stats(shoal_client_t *client, const char *coll, char **text, void **info,
                       size_t *info_len, shoal_err_t *err)
{
    s_info_out_clear(text, info, info_len);
    wire_request_t req;
    int rc = s_request(&req, WIRE_OP_STATS, coll, err);
    return rc != 0 ? rc : s_call_info(client, &req, text, info, info_len, err);
}

int shoal_client_checkpoint(shoal_client_t *client, const char *coll, shoal_err_t *err)
{
    wire_request_t req;
    int rc = s_request(&req, WIRE_OP_CHECKPOINT, coll, err);
    return rc != 0 ? rc : s_call_status(client, &req, err);
}

/* ------------------------------------------------------------------------ */
/* Cluster growth                                                           */
/* ------------------------------------------------------------------------ */

int shoal_client_shard(shoal_client_t *client, wire_op_t op, const char *endpoint, char **text,
                       void **info, size_t *info_len, shoal_err_t *err)
{
    s_info_out_clear(text, info, info_len);
    if (op != WIRE_OP_SHARD_ADD && op != WIRE_OP_SHARD_DRAIN && op != WIRE_OP_SHARD_REMOVE)
        return shoal_err_set(err, SHOAL_EINVAL,
                             "shard: op %d is not shard_add, shard_drain or shard_remove", (int)op);
    const char *what = wire_op_name(op);
    size_t len = endpoint ? strlen(endpoint) : 0;
    if (len == 0 || len > WIRE_ENDPOINT_MAX)
        return shoal_err_set(err, SHOAL_EINVAL, "%s: the endpoint must have 1..%d bytes, got %zu",
                             what, WIRE_ENDPOINT_MAX, len);
    wire_request_t req;
    int rc = s_request(&req, op, NULL, err);
    if (rc != 0)
        return rc;
    memcpy(req.endpoint, endpoint, len + 1);
    /* the encoder refuses a byte outside printable ASCII, naming it */
    return s_call_info(client, &req, text, info, info_len, err);
}

int shoal_client_rebalance(shoal_client_t *client, int dry_run, uint32_t max_moves,
                           uint32_t rate_mb, char **text, void **info, size_t *info_len,
                           shoal_err_t *err)
{
    s_info_out_clear(text, info, info_len);
    wire_request_t req;
    int rc = s_request(&req, WIRE_OP_REBALANCE, NULL, err);
    if (rc != 0)
        return rc;
    req.dry_run = dry_run ? 1 : 0;
    req.max_moves = max_moves;
    req.rate_mb = rate_mb;
    return s_call_info(client, &req, text, info, info_len, err);
}

/* ------------------------------------------------------------------------ */
/* Snapshots                                                                */
/* ------------------------------------------------------------------------ */

int shoal_client_snapshot_create(shoal_client_t *client, const char *name, char **text,
                                 void **info, size_t *info_len, shoal_err_t *err)
{
    s_info_out_clear(text, info, info_len);
    size_t len = name ? strlen(name) : 0;
    int rc = wire_snapshot_name_check("snapshot_create", name ? name : "", len, err);
    if (rc != 0)
        return rc;
    wire_request_t req;
    if ((rc = s_request(&req, WIRE_OP_SNAPSHOT_CREATE, NULL, err)) != 0)
        return rc;
    memcpy(req.name, name, len + 1);
    return s_call_info(client, &req, text, info, info_len, err);
}

int shoal_client_snapshot_list(shoal_client_t *client, char **text, void **info,
                               size_t *info_len, shoal_err_t *err)
{
    s_info_out_clear(text, info, info_len);
    wire_request_t req;
    int rc = s_request(&req, WIRE_OP_SNAPSHOT_LIST, NULL, err);
    return rc != 0 ? rc : s_call_info(client, &req, text, info, info_len, err);
}

/* ------------------------------------------------------------------------ */
/* A shard's IVF lists                                                      */
/* ------------------------------------------------------------------------ */

int shoal_client_list_counts(shoal_client_t *client, const char *coll, uint32_t **lists,
                             uint64_t **counts, size_t *n, shoal_err_t *err)
{
    *lists = NULL;
    *counts = NULL;
    *n = 0;
    wire_request_t req;
    int rc = s_request(&req, WIRE_OP_LIST_COUNTS, coll, err);
    if (rc != 0)
        return rc;
    wire_reply_t rep;
    shoal_frames_t *frames = NULL;
    rc = shoal_client_call(client, &req, &rep, &frames, err);
    if (rc != 0)
        return s_release(&rep, &frames, rc);
    size_t m = (size_t)rep.n;
    *lists = s_dup(rep.lists, m * sizeof **lists);
    *counts = s_dup(rep.counts, m * sizeof **counts);
    if (!*lists || !*counts) {
        free(*lists);
        free(*counts);
        *lists = NULL;
        *counts = NULL;
        rc = shoal_err_set(err, SHOAL_ENOMEM, "list_counts: no memory for %zu lists", m);
    } else {
        *n = m;
    }
    return s_release(&rep, &frames, rc);
}

void shoal_list_chunk_fini(shoal_list_chunk_t *chunk)
{
    if (!chunk)
        return;
    free(chunk->ids);
    free(chunk->vecs);
    memset(chunk, 0, sizeof *chunk);
}

int shoal_client_list_export(shoal_client_t *client, const char *coll, uint32_t list,
                             const char *cursor, size_t limit, shoal_list_chunk_t *chunk,
                             shoal_err_t *err)
{
    memset(chunk, 0, sizeof *chunk);
    if (!cursor)
        cursor = "";
    if (strlen(cursor) > WIRE_CURSOR_MAX)
        return shoal_err_set(err, SHOAL_EINVAL, "list_export: cursor has %zu bytes, at most %d",
                             strlen(cursor), WIRE_CURSOR_MAX);
    if (limit > UINT32_MAX)
        return shoal_err_set(err, SHOAL_EINVAL, "list_export: limit %zu does not fit in 32 bits",
                             limit);
    wire_request_t req;
    int rc = s_request(&req, WIRE_OP_LIST_EXPORT, coll, err);
    if (rc != 0)
        return rc;
    req.list = list;
    req.limit = (uint32_t)limit;
    snprintf(req.cursor, sizeof req.cursor, "%s", cursor);
    wire_reply_t rep;
    shoal_frames_t *frames = NULL;
    rc = shoal_client_call(client, &req, &rep, &frames, err);
    if (rc != 0)
        return s_release(&rep, &frames, rc);
    if (rep.n > limit) {
        rc = shoal_err_set(err, SHOAL_EPROTO,
                           "list_export: reply has %" PRIu64 " rows, asked for at most %zu", rep.n,
                           limit);
        return s_release(&rep, &frames, rc);
    }
    size_t n = (size_t)rep.n;
    chunk->n = n;
    chunk->dim = rep.dim;
    chunk->ids = s_dup(rep.ids, n * sizeof *chunk->ids);
    chunk->vecs = s_dup(rep.vecs, n * rep.dim * sizeof *chunk->vecs);
    if (!chunk->ids || !chunk->vecs) {
        shoal_list_chunk_fini(chunk);
        rc = shoal_err_set(err, SHOAL_ENOMEM, "list_export: no memory for %zu rows", n);
        return s_release(&rep, &frames, rc);
    }
    snprintf(chunk->cursor, sizeof chunk->cursor, "%s", rep.cursor);
    chunk->done = rep.done != 0;
    return s_release(&rep, &frames, 0);
}

int shoal_client_list_drop(shoal_client_t *client, const char *coll, uint32_t list,
                           size_t *removed, uint64_t *seq, shoal_err_t *err)
{
    wire_request_t req;
    int rc = s_request(&req, WIRE_OP_LIST_DROP, coll, err);
    if (rc != 0)
        return rc;
    req.list = list;
    wire_reply_t rep;
    shoal_frames_t *frames = NULL;
    rc = shoal_client_call(client, &req, &rep, &frames, err);
    if (rc == 0) {
        if (removed)
            *removed = (size_t)rep.count;
        if (seq)
            *seq = rep.seq;
    }
    return s_release(&rep, &frames, rc);
}
