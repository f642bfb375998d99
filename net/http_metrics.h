/*
 * http_metrics.h - a server process's monitoring endpoint (--metrics-listen
 * HOST:PORT): /metrics (the Prometheus text, common/prom.h), /healthz
 * (alive) and /readyz (ready to serve), served over HTTP by libmicrohttpd
 * on its own thread; and the request figures the process's loop records
 * for it (replies by op and status code, a duration histogram per op).
 *
 * Who does what: the loop thread owns every figure. About once a second
 * (http_metrics_due) it renders the whole text itself (http_metrics_begin
 * writes the shared families, the process adds its own) and publishes it
 * with its readiness (http_metrics_publish). Publishing swaps two buffers
 * under a mutex. The HTTP thread only copies the last published text and
 * state under that mutex, held for the copy alone: a scraper never reaches
 * the loop's state, and a slow one holds nothing the loop waits for.
 *
 * Endpoints (GET or HEAD; other methods 405 with "Allow: GET, HEAD", other
 * paths 404):
 *   /metrics  200, the last published text (PROM_CONTENT_TYPE); 503 before
 *             the first publication.
 *   /healthz  200 "ok" while the last publication is younger than
 *             HTTP_METRICS_STALE_MS: the loop is running and not stuck.
 *             503 with the reason otherwise (not started yet, or stale).
 *   /readyz   200 "ok" when the last publication said ready and is fresh;
 *             503 with a one-line reason otherwise (the process's own, such
 *             as "collection \"a\": list 3 has no readable replica").
 *
 * Bounds: at most HTTP_METRICS_CONNECTIONS_MAX connections, each closed
 * after HTTP_METRICS_TIMEOUT_S without progress; a reply copies one text of
 * at most the text's max bytes, so the HTTP side holds at most that many
 * copies. The request figures are fixed arrays.
 *
 * Listen address: "HOST:PORT", HOST an IPv4 address, a name, or an IPv6
 * address in brackets ("[::1]:9700"); PORT 0 picks a free port
 * (http_metrics_address says which). Checked at start, never later.
 *
 * Thread-safety: http_metrics_new and http_metrics_destroy on the main
 * thread, before and after the loop runs; every other function on the loop
 * thread only. All functions but new, check_listen and destroy accept
 * m NULL (metrics off) and then do nothing, so call sites need no test.
 * Ownership: http_metrics_new returns an endpoint the caller frees with
 * http_metrics_destroy(&m), which stops the HTTP thread first. The loop
 * borrows it (coord_opts_t.metrics, shard_server_opts_t.metrics).
 */
#ifndef SHOAL_HTTP_METRICS_H
#define SHOAL_HTTP_METRICS_H

#include "common/error.h"
#include "common/prom.h"
#include "net/wire.h"

#include <stddef.h>
#include <stdint.h>

/* Conventional ports: the coordinator's, and the first shard's (9701, 9702, ...). */
#define HTTP_METRICS_PORT_COORDINATOR 9700
#define HTTP_METRICS_PORT_SHARD_FIRST 9701
/* How often the loop renders and publishes. */
#define HTTP_METRICS_PUBLISH_MS 1000
/* A publication older than this makes /healthz and /readyz answer 503. */
#define HTTP_METRICS_STALE_MS 5000
/* Connections served at once; more wait in the kernel's backlog. */
#define HTTP_METRICS_CONNECTIONS_MAX 16
/* A connection that makes no progress for this long is closed. */
#define HTTP_METRICS_TIMEOUT_S 10
/* Longest readiness reason kept, NUL included. */
#define HTTP_METRICS_REASON_MAX 256

typedef struct http_metrics http_metrics_t;

/*
 * 0 when listen is a well-formed HOST:PORT (the host is not looked up);
 * else SHOAL_EINVAL, err saying what is wrong with it.
 */
int http_metrics_check_listen(const char *listen, shoal_err_t *err);

/*
 * Binds listen and starts the HTTP thread for a process of role
 * ("coordinator", "shard"; the build_info label). NULL on error, err
 * naming the address ("metrics address 127.0.0.1:9700: cannot bind:
 * Address already in use"). Until the first publication /metrics, /healthz
 * and /readyz answer 503 "starting".
 */
http_metrics_t *http_metrics_new(const char *listen, const char *role, shoal_err_t *err);

/* Stops the thread, closes the socket, frees. NULL-safe; sets *m_p to NULL. */
void http_metrics_destroy(http_metrics_t **m_p);

/* The bound address, "127.0.0.1:9700" (borrowed; valid until destroy); "" for NULL. */
const char *http_metrics_address(const http_metrics_t *m);

/* ---- loop thread ---- */

/*
 * Counts one reply: op, status code (SHOAL_OK or an error code) and the
 * microseconds since the request came, for shoal_requests_total and
 * shoal_request_duration_seconds.
 */
void http_metrics_request(http_metrics_t *m, wire_op_t op, int code, int64_t micros);

/* 1 when a publication is due at monotonic time now_us (zclock_usecs). */
int http_metrics_due(const http_metrics_t *m, int64_t now_us);

/* When the next publication is due (monotonic microseconds); 0 for NULL. */
int64_t http_metrics_next_us(const http_metrics_t *m);

/*
 * Starts a rendering: the loop's text, emptied, with the families every
 * process shares already written (build info, process figures, requests,
 * durations). The caller appends its own families, then publishes.
 * Borrowed until http_metrics_publish; NULL for NULL.
 */
prom_text_t *http_metrics_begin(http_metrics_t *m);

/*
 * The reply budget's families (net/wire_io.h), which both servers have:
 * shoal_pending_reply_bytes, shoal_pending_reply_limit_bytes and
 * shoal_replies_dropped_total.
 */
void http_metrics_replies(prom_text_t *t, uint64_t pending_bytes, uint64_t max_bytes,
                          uint64_t dropped);

/*
 * Ends the text http_metrics_begin started with shoal_ready (ready, 1 or
 * 0) and publishes it with ready and, when not ready, reason (one line; cut
 * at HTTP_METRICS_REASON_MAX). Logs once when a text was cut for size.
 */
void http_metrics_publish(http_metrics_t *m, int ready, const char *reason);

#endif
