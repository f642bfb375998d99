/*
 * main.c - bin/shoal-shard: options, signals, start and stop around a
 * shard_server_t (shard/server.h). `shoal-shard --help` lists the options.
 *
 * Configuration: defaults, then the --config file, then the command line, each
 * overriding the one before. The file has one `key = value` per line, the keys
 * being the long options without their dashes (`data-dir = /var/lib/shoal`;
 * `data_dir` is accepted too); `#` starts a comment, blank lines are ignored,
 * a value may be wrapped in double quotes. An unknown key is an error, as on
 * the command line. Every number is range-checked where it is read; a bad
 * option or value exits with status 2 and a message naming it.
 *
 * Signals: the first SIGTERM or SIGINT asks the server to stop: it stops
 * reading requests, finishes what is running, refuses what waits, closes the
 * store (which checkpoints every collection) and exits 0. A second one exits
 * at once with status 128+signal; nothing acknowledged is lost, since every
 * acknowledged write is in RocksDB's WAL, but the next start replays more.
 * czmq's own SIGINT/SIGTERM handling is switched off (zsys_handler_set(NULL))
 * before any socket exists so that it cannot swallow the signals.
 *
 * --ready-file PATH: once the socket is bound and the store recovered, the
 * bound endpoint (useful with "tcp://127.0.0.1:*") is written to PATH through
 * a temporary file and rename(2), so a reader never sees half of it; a clean
 * stop removes it.
 *
 * --curve-secret-key FILE --curve-clients DIR (both or neither): the ROUTER
 * is a CURVE server with this certificate and admits only peers whose public
 * certificate is in DIR (zauth; in a cluster, the coordinator's only, so
 * clients cannot reach a shard around the coordinator). Neither: plain, and
 * the log says so. A certificate or directory that cannot be used stops the
 * start, naming it (exit 2 for one option without the other, else 1).
 *
 * --metrics-listen HOST:PORT (off by default; by convention 127.0.0.1:9701
 * for the first shard of a host, 9702 for the next...): /metrics, /healthz
 * and /readyz over HTTP (net/http_metrics.h). The address is checked with
 * the other options (exit 2) and bound before the store recovers (exit 1
 * when it cannot be), so /readyz answers 503 "starting" during a long
 * recovery instead of refusing connections.
 */
#include "shard/server.h"

#include <czmq.h>

#include "net/cliopt.h"
#include "net/http_metrics.h"
#include "common/log.h"
#include "net/service.h"
#include "net/wire_io.h"
#include "shard/hnsw.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define S_EXIT_OK      0
#define S_EXIT_RUNTIME 1
#define S_EXIT_USAGE   2

#define S_NAME           "shoal-shard"
#define S_LISTEN_DEFAULT "tcp://127.0.0.1:7701"
#define S_TEXT_MAX       4096 /* longest path or endpoint */

/* ------------------------------------------------------------------------ */
/* Options                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct {
    char listen[S_TEXT_MAX];     /* --listen */
    char data_dir[S_TEXT_MAX];   /* --data-dir (required) */
    char devices[S_TEXT_MAX];    /* --devices: auto, cpu, gpu:0,1 */
    char ready_file[S_TEXT_MAX]; /* --ready-file ("" = none) */
    char metrics[S_TEXT_MAX];    /* --metrics-listen ("" = off) */
    char curve_key[S_TEXT_MAX];  /* --curve-secret-key ("" = no CURVE) */
    char curve_dir[S_TEXT_MAX];  /* --curve-clients */
    char log_level[16];          /* --log-level ("" = SHOAL_LOG_LEVEL or info) */
    size_t threads;              /* --threads (0 = online cores) */
    size_t sync;                 /* --sync on|off (1|0) */
    size_t checkpoint_every;     /* --checkpoint-every */
    double checkpoint_secs;      /* --checkpoint-secs */
    size_t exact_min_batch;      /* --exact-min-batch */
    size_t max_message_bytes;    /* --max-message-bytes */
    size_t max_batch;            /* --max-batch */
    size_t max_k;                /* --max-k */
    size_t max_dim;              /* --max-dim */
    size_t max_filter;           /* --max-filter */
    size_t max_pending_reply;    /* --max-pending-reply-bytes */
    size_t hnsw_m;               /* --hnsw-m */
    size_t hnsw_ef_construction; /* --hnsw-ef-construction */
    size_t hnsw_ef;              /* --hnsw-ef */
    size_t min_free_bytes;       /* --min-free-bytes */
    size_t inline_ef_max;        /* --inline-ef-max */
} s_config_t;

#define S_FIELD(f) CLIOPT_FIELD(s_config_t, f)

static const cliopt_t s_options[] = {
    {"listen", CLIOPT_ENDPOINT, S_FIELD(listen), 0, 0, "ENDPOINT",
     "where to listen; port * picks a free one (tcp://127.0.0.1:*)"},
    {"data-dir", CLIOPT_TEXT, S_FIELD(data_dir), 0, 0, "DIR",
     "RocksDB directory for vectors and checkpoints (required; created if absent)"},
    {"threads", CLIOPT_SIZE, S_FIELD(threads), 0, SHARD_SERVER_WORKERS_MAX, "N",
     "search threads, also used for index builds (0 = one per core)"},
    {"devices", CLIOPT_DEVICES, S_FIELD(devices), 0, 0, "auto|cpu|gpu:0,1",
     "exact search engine: GPUs when present (auto), the CPU, or these GPUs"},
    {"sync", CLIOPT_ONOFF, S_FIELD(sync), 0, 1, "on|off",
     "fsync the write-ahead log before acknowledging a write"},
    {"checkpoint-every", CLIOPT_SIZE, S_FIELD(checkpoint_every), 1, 1e12, "N",
     "checkpoint a collection's graph after this many inserts"},
    {"checkpoint-secs", CLIOPT_SECONDS, S_FIELD(checkpoint_secs), 0.01, 7 * 86400.0, "S",
     "... or after this many seconds with writes"},
    {"exact-min-batch", CLIOPT_SIZE, S_FIELD(exact_min_batch), 1, 1e9, "N",
     "mode auto: smallest query batch sent to a GPU exact engine"},
    {"max-message-bytes", CLIOPT_SIZE, S_FIELD(max_message_bytes), 1024, 4294967296.0, "B",
     "largest request (all frames together); larger ones are refused"},
    {"max-batch", CLIOPT_SIZE, S_FIELD(max_batch), 1, 1e9, "N",
     "most vectors, ids or queries in one request"},
    {"max-k", CLIOPT_SIZE, S_FIELD(max_k), 1, WIRE_MAX_K_MAX, "K", "largest k of a search"},
    {"max-dim", CLIOPT_SIZE, S_FIELD(max_dim), 1, HNSW_DIM_MAX, "D",
     "largest collection dimension"},
    {"max-filter", CLIOPT_SIZE, S_FIELD(max_filter), 1, 1e10, "N",
     "most ids in a search's allow-list"},
    {"max-pending-reply-bytes", CLIOPT_SIZE, S_FIELD(max_pending_reply),
     WIRE_IO_PENDING_REPLY_BYTES_MIN, WIRE_IO_PENDING_REPLY_BYTES_MAX, "B",
     "reply bytes queued for clients that have not read them; beyond, replies are refused"},
    {"hnsw-m", CLIOPT_SIZE, S_FIELD(hnsw_m), HNSW_M_MIN, HNSW_M_MAX, "M",
     "HNSW links per node for collections created without one"},
    {"hnsw-ef-construction", CLIOPT_SIZE, S_FIELD(hnsw_ef_construction), HNSW_EF_CONSTRUCTION_MIN,
     HNSW_EF_CONSTRUCTION_MAX, "E", "HNSW build candidate list, same"},
    {"hnsw-ef", CLIOPT_SIZE, S_FIELD(hnsw_ef), HNSW_EF_MIN, HNSW_EF_MAX, "E",
     "HNSW search candidate list for searches that give none"},
    {"inline-ef-max", CLIOPT_SIZE, S_FIELD(inline_ef_max), 0, SHARD_SERVER_INLINE_EF_MAX_MAX, "E",
     "single-query searches up to this ef run on the socket thread, saving a thread hand-off "
     "(0 = every search goes to the search threads)"},
    {"min-free-bytes", CLIOPT_SIZE, S_FIELD(min_free_bytes), 1 << 20, 1e15, "B",
     "free space kept on the data dir's disk; writes that would use it are refused"},
    {"log-level", CLIOPT_LEVEL, S_FIELD(log_level), 0, 0, "debug|info|warn|error|off",
     "lowest level logged (default: $SHOAL_LOG_LEVEL, else info)"},
    {"ready-file", CLIOPT_TEXT, S_FIELD(ready_file), 0, 0, "PATH",
     "once serving, write the bound endpoint to PATH (atomically)"},
    {"metrics-listen", CLIOPT_TEXT, S_FIELD(metrics), 0, 0, "HOST:PORT",
     "serve /metrics (Prometheus), /healthz and /readyz over HTTP there (conventionally "
     "127.0.0.1:9701, 9702, ... one per shard of a host)"},
    {"curve-secret-key", CLIOPT_TEXT, S_FIELD(curve_key), 0, 0, "FILE",
     "CURVE: this shard's certificate (the _secret file of `shoal keygen`); with "
     "--curve-clients (default: none, unauthenticated)"},
    {"curve-clients", CLIOPT_TEXT, S_FIELD(curve_dir), 0, 0, "DIR",
     "CURVE: public certificates of the peers allowed in (the coordinator's only)"},
};

#define S_NOPTIONS (sizeof s_options / sizeof s_options[0])

static void s_config_defaults(s_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    wire_limits_t limits = wire_limits_default();
    snprintf(cfg->listen, sizeof cfg->listen, "%s", S_LISTEN_DEFAULT);
    snprintf(cfg->devices, sizeof cfg->devices, "auto");
    cfg->threads = 0;
    cfg->sync = 1;
    cfg->checkpoint_every = SHARD_CHECKPOINT_EVERY_DEFAULT;
    cfg->checkpoint_secs = SHARD_CHECKPOINT_SECS_DEFAULT;
    cfg->exact_min_batch = SHARD_EXACT_MIN_BATCH_DEFAULT;
    cfg->max_message_bytes = limits.max_message_bytes;
    cfg->max_batch = limits.max_batch;
    cfg->max_k = limits.max_k;
    cfg->max_dim = limits.max_dim;
    cfg->max_filter = limits.max_filter;
    cfg->max_pending_reply = WIRE_IO_PENDING_REPLY_BYTES_DEFAULT;
    cfg->hnsw_m = HNSW_M_DEFAULT;
    cfg->hnsw_ef_construction = HNSW_EF_CONSTRUCTION_DEFAULT;
    cfg->hnsw_ef = HNSW_EF_DEFAULT;
    cfg->min_free_bytes = SHARD_MIN_FREE_BYTES_DEFAULT;
    cfg->inline_ef_max = SHARD_SERVER_INLINE_EF_MAX_DEFAULT;
}

/* CLIOPT_DEVICES: auto, cpu or gpu:N[,N...] (the store checks the ordinals). */
static int s_devices_check(const char *text, shoal_err_t *err)
{
    (void)err;
    if (!strcmp(text, "auto") || !strcmp(text, "cpu"))
        return 0;
    if (strncmp(text, "gpu:", 4) != 0 || !text[4])
        return -1;
    int digits = 0;
    for (const char *p = text + 4; *p; p++) {
        if (*p >= '0' && *p <= '9') {
            digits++;
        } else if (*p == ',' && digits > 0) {
            digits = 0;
        } else {
            return -1;
        }
    }
    return digits > 0 ? 0 : -1;
}

static void s_usage(FILE *out);

static const cliopt_spec_t s_spec = {
    .prog = S_NAME,
    .opts = s_options,
    .nopts = sizeof s_options / sizeof s_options[0],
    .required = "data-dir",
    .unset_text = "none",
    .line_max = S_TEXT_MAX + 128,
    .check_devices = s_devices_check,
    .usage = s_usage,
};

static void s_usage(FILE *out)
{
    s_config_t defaults;
    s_config_defaults(&defaults);
    fprintf(out,
            "usage: shoal-shard --data-dir DIR [--listen ENDPOINT] [--config FILE] [options]\n"
            "\n"
            "Serves one shard of a shoal cluster: collections of vectors, an HNSW graph and an\n"
            "exact engine over them, kept durable in RocksDB (docs/protocol.md: the requests).\n"
            "\n"
            "  --config FILE  read options from FILE first: one `key = value` per line, keys\n"
            "                 as below without the dashes, # comments; flags override it\n"
            "  --help         this text\n");
    cliopt_print_options(out, &s_spec, &defaults);
    fprintf(out,
            "\n"
            "SIGTERM or SIGINT stops gracefully (finish running requests, checkpoint, exit 0);\n"
            "a second one exits at once (acknowledged writes are safe in the WAL).\n"
            "Exit status: 0 clean stop, 1 runtime failure, 2 bad usage.\n");
}

/* ------------------------------------------------------------------------ */
/* Start and stop                                                           */
/* ------------------------------------------------------------------------ */

/* The server's options from the command line's configuration (the store's included). */
static void s_server_opts(shard_server_opts_t *opts, const s_config_t *cfg, int stop_fd,
                          http_metrics_t *metrics, const wire_curve_cert_t *curve_cert)
{
    shard_server_opts_default(opts);
    opts->listen = cfg->listen;
    opts->workers = cfg->threads;
    opts->stop_fd = stop_fd;
    opts->limits.max_message_bytes = cfg->max_message_bytes;
    opts->limits.max_batch = cfg->max_batch;
    opts->limits.max_k = cfg->max_k;
    opts->limits.max_dim = cfg->max_dim;
    opts->limits.max_filter = cfg->max_filter;
    opts->max_pending_reply_bytes = cfg->max_pending_reply;
    opts->inline_ef_max = cfg->inline_ef_max;
    opts->store.data_dir = cfg->data_dir;
    opts->store.device = cfg->devices;
    opts->store.threads = cfg->threads;
    opts->store.sync = (int)cfg->sync;
    opts->store.checkpoint_every = cfg->checkpoint_every;
    opts->store.checkpoint_secs = cfg->checkpoint_secs;
    opts->store.exact_min_batch = cfg->exact_min_batch;
    opts->store.hnsw_M = cfg->hnsw_m;
    opts->store.hnsw_ef_construction = cfg->hnsw_ef_construction;
    opts->store.hnsw_ef = cfg->hnsw_ef;
    opts->store.min_free_bytes = cfg->min_free_bytes;
    opts->metrics = metrics;
    opts->curve_cert = curve_cert;
}

/* The devices the store uses, for the start-up line: "cpu" or "gpu:0,1". */
static void s_device_text(shard_server_t *server, char *text, size_t size)
{
    int devices[64];
    int ndev = shard_store_devices(shard_server_store(server), devices, 64);
    snprintf(text, size, "cpu");
    if (ndev > 0) {
        size_t len = (size_t)snprintf(text, size, "gpu:");
        for (int i = 0; i < ndev && len < size; i++)
            len += (size_t)snprintf(text + len, size - len, "%s%d", i ? "," : "", devices[i]);
    }
}

/*
 * Start-up in order (options, signals, CURVE, metrics, server, ready file),
 * then the loop, then the stop in the reverse order: one linear sequence
 * whose failure exits each undo a different prefix of it, so it stays here.
 */
int main(int argc, char **argv)
{
    s_config_t cfg;
    s_config_defaults(&cfg);
    int status = cliopt_start(&s_spec, &cfg, argc, argv);
    if (status != CLIOPT_RUN)
        return status;
    shoal_err_t err;
    shoal_err_clear(&err);
    if (cfg.metrics[0] && http_metrics_check_listen(cfg.metrics, &err) != 0) {
        fprintf(stderr, S_NAME ": --metrics-listen: %s\n", err.msg);
        return S_EXIT_USAGE;
    }

    /* Before any czmq socket: czmq must leave SIGINT/SIGTERM to us. */
    zsys_handler_set(NULL);
    int stop_fd = service_signals_install(S_NAME);
    if (stop_fd < 0)
        return S_EXIT_RUNTIME;
    /* The allow-list before the ROUTER binds: libzmq asks it at each handshake. */
    wire_curve_cert_t curve;
    zactor_t *auth = NULL;
    int curve_on =
        wire_curve_server_start("shard", cfg.curve_key, cfg.curve_dir, &curve, &auth, &err);
    if (curve_on < 0) {
        log_error("cannot start: %s", err.msg);
        service_signals_fini();
        return curve_on == SHOAL_EINVAL ? S_EXIT_USAGE : S_EXIT_RUNTIME;
    }
    http_metrics_t *metrics = NULL;
    if (cfg.metrics[0] && !(metrics = http_metrics_new(cfg.metrics, "shard", &err))) {
        log_error("cannot start: --metrics-listen: %s", err.msg);
        zactor_destroy(&auth);
        service_signals_fini();
        return S_EXIT_RUNTIME;
    }

    shard_server_opts_t opts;
    s_server_opts(&opts, &cfg, stop_fd, metrics, curve_on ? &curve : NULL);

    shard_server_t *server = shard_server_new(&opts, &err);
    if (!server) {
        log_error("cannot start: %s", err.msg);
        http_metrics_destroy(&metrics);
        zactor_destroy(&auth);
        return S_EXIT_RUNTIME;
    }
    const char *endpoint = shard_server_endpoint(server);
    if (service_ready(cfg.ready_file, endpoint) != 0) {
        shard_server_destroy(&server);
        http_metrics_destroy(&metrics);
        zactor_destroy(&auth);
        return S_EXIT_RUNTIME;
    }
    char device_text[128];
    s_device_text(server, device_text, sizeof device_text);
    log_info("listening on %s, data dir %s, device %s (asked: %s), %zu threads, sync %s", endpoint,
             cfg.data_dir, device_text, cfg.devices, shard_server_workers(server),
             cfg.sync ? "on" : "off");

    int rc = shard_server_run(server, &err);
    if (rc != 0)
        log_error("server loop failed: %s", err.msg);
    double t0 = zclock_usecs() / 1e6;
    shard_server_destroy(&server); /* closes the store: the final checkpoint */
    http_metrics_destroy(&metrics);   /* after the loop: it publishes until it returns */
    zactor_destroy(&auth);          /* after the ROUTER: its handshakes ask it */
    service_unready(cfg.ready_file);
    log_info("stopped%s; store closed in %.2f s", rc ? " after an error" : "",
             zclock_usecs() / 1e6 - t0);
    service_signals_fini();
    return rc ? S_EXIT_RUNTIME : S_EXIT_OK;
}
