/*
 * http_metrics.c - the monitoring endpoint (http_metrics.h): the request
 * figures, the published text and readiness, and libmicrohttpd's handler.
 *
 * Why the socket is bound here and handed to libmicrohttpd
 * (MHD_OPTION_LISTEN_SOCKET) rather than giving it a port: a bind failure
 * then carries errno, so the start-up error names the address and the
 * reason ("Address already in use") instead of a generic "failed to start",
 * and a port 0 can be read back with getsockname.
 *
 * Why two text buffers: the loop renders into its own while the HTTP thread
 * may be copying the published one; publishing swaps the pointers under
 * the mutex, so the loop never copies a text and never renders under a lock.
 *
 * Why copy under the mutex on the HTTP side (MHD_RESPMEM_MUST_COPY) instead
 * of a reference-counted text: a text is a few hundred kilobytes at most in
 * practice and a scrape comes every few seconds; the copy bounds what a
 * reply holds to its own bytes, with no shared lifetime to get wrong.
 */
#include "net/http_metrics.h"

#include "common/log.h"
#include "net/service.h"
#include "net/wire_io.h"

#include <czmq.h>
#include <microhttpd.h>

#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Status codes counted one by one: SHOAL_OK down to SHOAL_EGPU; one more for any other. */
#define S_CODES_KNOWN 17
#define S_CODES (S_CODES_KNOWN + 1)
/* Longest HOST:PORT accepted. */
#define S_LISTEN_MAX 512
/* Pending connections the kernel keeps for the HTTP thread. */
#define S_BACKLOG 64

/* The request figures of one op. */
typedef struct {
    uint64_t replies[S_CODES]; /* by status code: index -code, S_CODES_KNOWN for others */
    prom_hist_t duration;      /* seconds from request to reply */
} s_op_figures_t;

/* What the loop last handed to the HTTP thread (under the mutex). */
typedef struct {
    prom_text_t text;                     /* the last text */
    int ready;                            /* its readiness */
    char reason[HTTP_METRICS_REASON_MAX]; /* why not ready */
    int64_t at_us;                        /* monotonic time of the publication; 0: none yet */
} s_published_t;

struct http_metrics {
    char role[32];                   /* "coordinator" or "shard" (build_info) */
    char address[S_LISTEN_MAX + 16]; /* the bound HOST:PORT */
    struct MHD_Daemon *daemon;       /* libmicrohttpd's thread and socket */
    double start_unix_s;             /* wall time of new (process start time) */
    int64_t start_us;                /* monotonic time of new */
    /* loop thread only */
    s_op_figures_t ops[WIRE_OP_COUNT]; /* request figures by op index */
    prom_text_t render;              /* the text being rendered */
    int64_t next_us;                 /* when the next publication is due */
    int cut_logged;                  /* "text cut" was logged */
    /* shared with the HTTP thread */
    pthread_mutex_t mu;              /* guards pub */
    s_published_t pub;               /* the last publication */
};

static int64_t s_now_us(void)
{
    return zclock_usecs();
}

/* ------------------------------------------------------------------------ */
/* The listen address                                                       */
/* ------------------------------------------------------------------------ */

/*
 * Splits "HOST:PORT" / "[V6]:PORT" into host and port (NUL-terminated
 * copies, S_LISTEN_MAX bytes each). 0, or SHOAL_EINVAL naming the problem.
 */
static int s_split_listen(const char *listen, char *host, char *port, shoal_err_t *err)
{
    if (!listen || !*listen)
        return shoal_err_set(err, SHOAL_EINVAL, "metrics address is empty: expected HOST:PORT");
    size_t len = strlen(listen);
    if (len >= S_LISTEN_MAX)
        return shoal_err_set(err, SHOAL_EINVAL, "metrics address is %zu bytes, at most %d", len,
                             S_LISTEN_MAX - 1);
    const char *colon = strrchr(listen, ':');
    if (!colon || colon == listen)
        return shoal_err_set(err, SHOAL_EINVAL,
                             "metrics address \"%s\": expected HOST:PORT (e.g. 127.0.0.1:%d)",
                             listen, HTTP_METRICS_PORT_COORDINATOR);
    const char *h = listen;
    size_t hlen = (size_t)(colon - listen);
    if (listen[0] == '[') {
        if (hlen < 3 || listen[hlen - 1] != ']')
            return shoal_err_set(err, SHOAL_EINVAL,
                                 "metrics address \"%s\": an IPv6 host goes in brackets, "
                                 "[::1]:PORT",
                                 listen);
        h = listen + 1;
        hlen -= 2;
    } else if (memchr(listen, ':', hlen)) {
        return shoal_err_set(err, SHOAL_EINVAL,
                             "metrics address \"%s\": an IPv6 host goes in brackets, [::1]:PORT",
                             listen);
    }
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    const char *p = colon + 1;
    size_t plen = strlen(p);
    unsigned long value = 0;
    for (size_t i = 0; i < plen; i++) {
        if (p[i] < '0' || p[i] > '9' || plen > 5)
            return shoal_err_set(err, SHOAL_EINVAL,
                                 "metrics address \"%s\": port \"%s\" is not a number 0..65535",
                                 listen, p);
        value = value * 10 + (unsigned long)(p[i] - '0');
    }
    if (plen == 0 || value > 65535)
        return shoal_err_set(err, SHOAL_EINVAL,
                             "metrics address \"%s\": port \"%s\" is not a number 0..65535",
                             listen, p);
    snprintf(port, S_LISTEN_MAX, "%lu", value);
    return 0;
}

int http_metrics_check_listen(const char *listen, shoal_err_t *err)
{
    char host[S_LISTEN_MAX], port[S_LISTEN_MAX];
    return s_split_listen(listen, host, port, err);
}

/* A bound, listening TCP socket for where; address gets "HOST:PORT" as bound. -1 on error. */
static int s_bind(const char *where, char *address, size_t cap, int *family, shoal_err_t *err)
{
    char host[S_LISTEN_MAX], port[S_LISTEN_MAX];
    if (s_split_listen(where, host, port, err) != 0)
        return -1;
    struct addrinfo hints, *found = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    int rc = getaddrinfo(host, port, &hints, &found);
    if (rc != 0 || !found) {
        shoal_err_set(err, SHOAL_EINVAL, "metrics address %s: cannot resolve \"%s\": %s", where,
                      host, rc ? gai_strerror(rc) : "no address");
        return -1;
    }
    int fd = socket(found->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0) {
        shoal_err_set(err, SHOAL_EIO, "metrics address %s: socket: %s", where, strerror(errno));
        goto fail;
    }
    /* A restart must not wait out the old connections' TIME_WAIT. */
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, found->ai_addr, found->ai_addrlen) != 0 || listen(fd, S_BACKLOG) != 0) {
        shoal_err_set(err, SHOAL_EIO, "metrics address %s: cannot bind: %s", where,
                      strerror(errno));
        goto fail;
    }
    struct sockaddr_storage sa;
    socklen_t salen = sizeof sa;
    char h[64], s[16]; /* numeric: an IPv6 address is at most 45 bytes */
    if (getsockname(fd, (struct sockaddr *)&sa, &salen) == 0 &&
        getnameinfo((struct sockaddr *)&sa, salen, h, sizeof h, s, sizeof s,
                    NI_NUMERICHOST | NI_NUMERICSERV) == 0)
        snprintf(address, cap, sa.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", h, s);
    else
        snprintf(address, cap, "%s", where);
    *family = found->ai_family;
    freeaddrinfo(found);
    return fd;
fail:
    if (fd >= 0)
        close(fd);
    freeaddrinfo(found);
    return -1;
}

/* ------------------------------------------------------------------------ */
/* The HTTP thread                                                          */
/* ------------------------------------------------------------------------ */

/* libmicrohttpd's own messages (bad requests, resource limits) go to the log. */
static void s_mhd_log(void *cls, const char *fmt, va_list ap)
{
    const http_metrics_t *m = cls;
    char text[512];
    vsnprintf(text, sizeof text, fmt, ap);
    text[strcspn(text, "\r\n")] = '\0';
    log_warn("metrics http %s: %s", m->address, text);
}

/* Queues a reply of body (copied) with status and content type; allow adds "Allow". */
static enum MHD_Result s_reply(struct MHD_Connection *conn, unsigned status, const char *type,
                               const char *body, size_t len, int allow)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)body, MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return MHD_NO; /* out of memory: libmicrohttpd closes the connection */
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (allow)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result rc = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return rc;
}

static enum MHD_Result s_reply_text(struct MHD_Connection *conn, unsigned status,
                                    const char *line)
{
    char body[HTTP_METRICS_REASON_MAX + 64];
    int n = snprintf(body, sizeof body, "%s\n", line);
    size_t len = n < 0 ? 0 : (size_t)n < sizeof body ? (size_t)n : sizeof body - 1;
    return s_reply(conn, status, "text/plain; charset=utf-8", body, len, 0);
}

/*
 * Why the process is not alive (stale or not started) into why; 0 when it
 * is. Caller holds the mutex.
 */
static int s_stale(const http_metrics_t *m, int64_t now, char *why, size_t cap)
{
    if (!m->pub.at_us) {
        snprintf(why, cap, "starting: the loop has not published yet");
        return 1;
    }
    int64_t age_ms = (now - m->pub.at_us) / 1000;
    if (age_ms > HTTP_METRICS_STALE_MS) {
        snprintf(why, cap, "stale: the loop last published %.1f s ago (limit %.1f s)",
                 (double)age_ms / 1000.0, HTTP_METRICS_STALE_MS / 1000.0);
        return 1;
    }
    return 0;
}

static enum MHD_Result s_handle(void *cls, struct MHD_Connection *conn, const char *url,
                                const char *method, const char *version, const char *upload_data,
                                size_t *upload_data_size, void **con_cls)
{
    http_metrics_t *m = cls;
    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)con_cls;
    /* Answered on the first call, headers only: a body (a POST) is never read. */
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0) {
        static const char body[] = "method not allowed: GET or HEAD\n";
        return s_reply(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain; charset=utf-8", body,
                       sizeof body - 1, 1);
    }
    int metrics = !strcmp(url, "/metrics");
    int healthz = !strcmp(url, "/healthz");
    int readyz = !strcmp(url, "/readyz");
    if (!metrics && !healthz && !readyz)
        return s_reply_text(conn, MHD_HTTP_NOT_FOUND,
                            "not found: the paths are /metrics, /healthz and /readyz");

    char why[HTTP_METRICS_REASON_MAX + 96];
    int64_t now = s_now_us();
    enum MHD_Result rc;
    pthread_mutex_lock(&m->mu);
    int stale = s_stale(m, now, why, sizeof why);
    if (metrics && m->pub.at_us) {
        /* Served even when stale: the figures show what the loop did last. */
        rc = s_reply(conn, MHD_HTTP_OK, PROM_CONTENT_TYPE, m->pub.text.data ? m->pub.text.data : "",
                     m->pub.text.len, 0);
        pthread_mutex_unlock(&m->mu);
        return rc;
    }
    if (readyz && !stale && !m->pub.ready)
        snprintf(why, sizeof why, "not ready: %s", m->pub.reason);
    int ok = !stale && (healthz || metrics || m->pub.ready);
    pthread_mutex_unlock(&m->mu);
    return s_reply_text(conn, ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, ok ? "ok" : why);
}

/* ------------------------------------------------------------------------ */
/* Start and stop                                                           */
/* ------------------------------------------------------------------------ */

http_metrics_t *http_metrics_new(const char *listen, const char *role, shoal_err_t *err)
{
    http_metrics_t *m = calloc(1, sizeof *m);
    if (!m) {
        shoal_err_set(err, SHOAL_ENOMEM, "metrics: out of memory");
        return NULL;
    }
    pthread_mutex_init(&m->mu, NULL);
    snprintf(m->role, sizeof m->role, "%s", role ? role : "");
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    m->start_unix_s = (double)wall.tv_sec + (double)wall.tv_nsec / 1e9;
    m->start_us = s_now_us();
    m->next_us = m->start_us; /* the first publication as soon as the loop runs */
    prom_text_init(&m->render, 0);
    prom_text_init(&m->pub.text, 0);
    for (size_t op = 0; op < WIRE_OP_COUNT; op++)
        prom_hist_init(&m->ops[op].duration, prom_duration_bounds, PROM_DURATION_NBOUNDS);

    int family = AF_INET;
    int fd = s_bind(listen, m->address, sizeof m->address, &family, err);
    if (fd < 0)
        goto fail;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG |
                     (family == AF_INET6 ? MHD_USE_IPv6 : 0);
    /* The HTTP thread leaves the stop signals to the main thread. */
    sigset_t old;
    service_signals_block(&old);
    /* The logger first: libmicrohttpd reports options after it through it. */
    m->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, s_handle, m, MHD_OPTION_EXTERNAL_LOGGER, s_mhd_log, m,
        MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)HTTP_METRICS_CONNECTIONS_MAX, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)HTTP_METRICS_TIMEOUT_S, MHD_OPTION_END);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!m->daemon) {
        close(fd);
        shoal_err_set(err, SHOAL_EIO, "metrics address %s: libmicrohttpd could not start "
                      "(see the log)", m->address);
        goto fail;
    }
    log_info("metrics on http://%s/metrics (/healthz, /readyz)", m->address);
    return m;
fail:
    http_metrics_destroy(&m);
    return NULL;
}

void http_metrics_destroy(http_metrics_t **m_p)
{
    if (!m_p || !*m_p)
        return;
    http_metrics_t *m = *m_p;
    if (m->daemon)
        MHD_stop_daemon(m->daemon); /* joins the thread, closes the socket */
    prom_text_fini(&m->render);
    prom_text_fini(&m->pub.text);
    pthread_mutex_destroy(&m->mu);
    free(m);
    *m_p = NULL;
}

const char *http_metrics_address(const http_metrics_t *m)
{
    return m ? m->address : "";
}

/* ------------------------------------------------------------------------ */
/* The loop's side                                                          */
/* ------------------------------------------------------------------------ */

/* The figures' index of a status code. */
static size_t s_code_index(int code)
{
    return code <= 0 && code > -S_CODES_KNOWN ? (size_t)-code : S_CODES_KNOWN;
}

void http_metrics_request(http_metrics_t *m, wire_op_t op, int code, int64_t micros)
{
    if (!m)
        return;
    s_op_figures_t *f = &m->ops[wire_io_op_index(op)];
    f->replies[s_code_index(code)]++;
    prom_hist_observe(&f->duration, micros > 0 ? (double)micros / 1e6 : 0.0);
}

int http_metrics_due(const http_metrics_t *m, int64_t now_us)
{
    return m && now_us >= m->next_us;
}

int64_t http_metrics_next_us(const http_metrics_t *m)
{
    return m ? m->next_us : 0;
}

/* shoal_requests_total and shoal_request_duration_seconds, ops with replies only. */
static void s_write_requests(http_metrics_t *m, prom_text_t *t)
{
    prom_family(t, "shoal_requests_total", PROM_COUNTER,
                "Replies sent, by request op and status code (ok or the error's name).");
    for (size_t op = 0; op < WIRE_OP_COUNT; op++) {
        for (size_t c = 0; c < S_CODES; c++) {
            if (!m->ops[op].replies[c])
                continue;
            prom_labels_t l;
            prom_labels_init(&l);
            prom_label(&l, "op", wire_io_op_label(op));
            prom_label(&l, "code", shoal_errname(c < S_CODES_KNOWN ? -(int)c : 1));
            prom_sample_u64(t, "shoal_requests_total", &l, m->ops[op].replies[c]);
        }
    }
    prom_family(t, "shoal_request_duration_seconds", PROM_HISTOGRAM,
                "Seconds from a request's arrival to its reply, by op.");
    for (size_t op = 0; op < WIRE_OP_COUNT; op++) {
        if (!m->ops[op].duration.count)
            continue;
        prom_labels_t l;
        prom_labels_init(&l);
        prom_label(&l, "op", wire_io_op_label(op));
        prom_hist_write(t, "shoal_request_duration_seconds", &l, &m->ops[op].duration);
    }
}

prom_text_t *http_metrics_begin(http_metrics_t *m)
{
    if (!m)
        return NULL;
    prom_text_reset(&m->render);
    int64_t now = s_now_us();
    prom_process(&m->render, m->role, m->start_unix_s, (double)(now - m->start_us) / 1e6);
    s_write_requests(m, &m->render);
    return &m->render;
}

void http_metrics_replies(prom_text_t *t, uint64_t pending_bytes, uint64_t max_bytes,
                          uint64_t dropped)
{
    prom_metric_u64(t, "shoal_pending_reply_bytes", PROM_GAUGE,
                    "Reply bytes queued for clients that have not read them yet.", pending_bytes);
    prom_metric_u64(t, "shoal_pending_reply_limit_bytes", PROM_GAUGE,
                    "The budget of queued reply bytes (--max-pending-reply-bytes).", max_bytes);
    prom_metric_u64(t, "shoal_replies_dropped_total", PROM_COUNTER,
                    "Replies refused for the budget or not deliverable (the client left).",
                    dropped);
}

void http_metrics_publish(http_metrics_t *m, int ready, const char *reason)
{
    if (!m)
        return;
    prom_family(&m->render, "shoal_ready", PROM_GAUGE,
                "1 when the process is ready to serve (what /readyz answers 200 for), else 0.");
    prom_sample_u64(&m->render, "shoal_ready", NULL, ready ? 1 : 0);
    if (m->render.cut && !m->cut_logged) {
        log_warn("metrics: the text reached its limit of %zu bytes; later samples are left out",
                 m->render.max);
        m->cut_logged = 1;
    }
    int64_t now = s_now_us();
    pthread_mutex_lock(&m->mu);
    prom_text_t swap = m->pub.text;
    m->pub.text = m->render;
    m->render = swap;
    m->pub.ready = ready ? 1 : 0;
    snprintf(m->pub.reason, sizeof m->pub.reason, "%s", ready || !reason ? "" : reason);
    m->pub.reason[strcspn(m->pub.reason, "\r\n")] = '\0';
    m->pub.at_us = now;
    pthread_mutex_unlock(&m->mu);
    m->next_us = now + (int64_t)HTTP_METRICS_PUBLISH_MS * 1000;
}
