/*
 * main.c - bin/shoal-coordinator: options, signals, start and stop around a
 * coord_t (coordinator/coord.h). `shoal-coordinator --help` lists the options.
 *
 * Configuration: defaults, then the --config file, then the command line, each
 * overriding the one before. The file has one `key = value` per line, keys
 * being the long options without their dashes (`data-dir` or `data_dir`;
 * `shards = tcp://127.0.0.1:7701,tcp://127.0.0.1:7702`); `#` starts a
 * comment; a value may be wrapped in double quotes. Unknown keys are errors.
 * Every number is range-checked; a bad option exits with status 2 naming it.
 *
 * Signals: the first SIGTERM or SIGINT asks the coordinator to stop: it stops
 * reading requests, refuses the writes still waiting, lets the requests in
 * progress finish or reach their deadline, closes the catalog and exits 0.
 * A second signal exits at once with 128+signal (every acknowledged write is
 * in the catalog's and the shards' WALs; an interrupted one is an intent,
 * re-driven at the next start).
 *
 * --ready-file PATH: once the ROUTER is bound and the shard links are up (or
 * given up on), the bound endpoint is written to PATH through a temporary
 * file and rename(2); a clean stop removes it.
 *
 * --curve-secret-key FILE --curve-clients DIR (both or neither): the ROUTER
 * is a CURVE server with this certificate and admits only clients whose
 * public certificate is in DIR (zauth). --curve-shard-key FILE (needs the
 * other two): the shards' public certificate (one pair for all shards); the
 * shard links are then CURVE clients with the coordinator's own key, which
 * every shard must list in its own --curve-clients. docs/operations.md
 * "Security".
 *
 * --metrics-listen HOST:PORT (off by default; 127.0.0.1:9700 by convention):
 * /metrics, /healthz and /readyz over HTTP (net/http_metrics.h). The
 * address is checked with the other options (exit 2) and bound before the
 * catalog opens (exit 1 when it cannot be), so a typo never waits behind a
 * long start; until the loop runs, /healthz and /readyz answer 503 starting.
 */
#include "coordinator/coord.h"

#include <czmq.h>

#include "net/cliopt.h"
#include "net/http_metrics.h"
#include "common/log.h"
#include "net/service.h"
#include "net/wire_io.h"
#include "gpu/knn.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define S_EXIT_OK      0
#define S_EXIT_RUNTIME 1
#define S_EXIT_USAGE   2

#define S_NAME           "shoal-coordinator"
#define S_LISTEN_DEFAULT "tcp://127.0.0.1:7700"
#define S_TEXT_MAX       4096  /* longest path or endpoint */
#define S_SHARDS_MAX     65536 /* bytes of the --shards list */
#define S_MS_MAX         86400000.0

/* ------------------------------------------------------------------------ */
/* Options                                                                  */
/* ------------------------------------------------------------------------ */

/* The flags land in opts directly; its strings point at the buffers below. */
typedef struct {
    coord_opts_t opts;           /* numbers and limits (coord_opts_default first) */
    char listen[S_TEXT_MAX];     /* --listen */
    char data_dir[S_TEXT_MAX];   /* --data-dir (required) */
    char shards[S_SHARDS_MAX];   /* --shards a,b,c ("" = the catalog's) */
    char device[S_TEXT_MAX];     /* --device */
    char ready_file[S_TEXT_MAX]; /* --ready-file */
    char metrics[S_TEXT_MAX];    /* --metrics-listen ("" = off) */
    char curve_key[S_TEXT_MAX];  /* --curve-secret-key ("" = no CURVE) */
    char curve_dir[S_TEXT_MAX];  /* --curve-clients */
    char curve_shard[S_TEXT_MAX]; /* --curve-shard-key ("" = plain shard links) */
    char log_level[16];          /* --log-level */
} s_config_t;

#define S_FIELD(f) CLIOPT_FIELD(s_config_t, f)

static const cliopt_t s_options[] = {
    {"listen", CLIOPT_ENDPOINT, S_FIELD(listen), 0, 0, "ENDPOINT",
     "where clients connect; port * picks a free one"},
    {"data-dir", CLIOPT_TEXT, S_FIELD(data_dir), 0, 0, "DIR",
     "the catalog's RocksDB directory (required; created if absent)"},
    {"shards", CLIOPT_TEXT, S_FIELD(shards), 0, 0, "EP1,EP2,...",
     "shard endpoints, in order (new ones may be appended later; default: the catalog's)"},
    {"nlist", CLIOPT_U32, S_FIELD(opts.nlist_default), 1, 1e9, "N",
     "IVF lists of a collection created without one"},
    {"nprobe", CLIOPT_U32, S_FIELD(opts.nprobe_default), 1, 1e9, "N",
     "lists a query probes when neither create nor search says (capped at nlist)"},
    {"deadline-ms", CLIOPT_U32, S_FIELD(opts.deadline_ms), 1, S_MS_MAX, "MS",
     "search / get / knn_graph deadline when the request gives none"},
    {"write-timeout-ms", CLIOPT_U32, S_FIELD(opts.write_timeout_ms), 1, S_MS_MAX, "MS",
     "how long a write waits for its shards"},
    {"ping-interval-ms", CLIOPT_U32, S_FIELD(opts.ping_interval_ms), 1, S_MS_MAX, "MS",
     "health pings to every shard"},
    {"down-after-ms", CLIOPT_U32, S_FIELD(opts.down_after_ms), 1, S_MS_MAX, "MS",
     "a shard silent this long is marked down"},
    {"chunk", CLIOPT_U32, S_FIELD(opts.chunk_default), 1, 1e9, "N",
     "knn_graph rows per reply by default"},
    {"replication", CLIOPT_U32, S_FIELD(opts.replication_default), 1, 3, "R",
     "copies of each IVF list of a collection created without \"replication\" (at most the "
     "shards)"},
    {"write-quorum", CLIOPT_U32, S_FIELD(opts.write_quorum_default), 1, 3, "W",
     "replicas that acknowledge a write, for a collection created without \"write_quorum\" "
     "(capped at its replication)"},
    {"hedge-pct", CLIOPT_U32, S_FIELD(opts.hedge_pct), 0, 100, "P",
     "replicated collections: a shard that has not answered a search after P% of its "
     "deadline is bypassed through other replicas (0 = only when it is down)"},
    {"route-inline-macs", CLIOPT_SIZE, S_FIELD(opts.route_inline_macs), 1, 1e18, "N",
     "a search batch of at least N multiply-adds (queries x nlist x dim) is routed on the "
     "routing thread, so it does not hold other clients (1 = every batch)"},
    {"sub-batch-max", CLIOPT_U32, S_FIELD(opts.sub_batch_max), 1, 1e9, "N",
     "queries per search request to one shard: a batch's bigger share goes in several, one "
     "per shard per turn of the loop, so one batch never holds the loop for long"},
    {"repair-chunk", CLIOPT_U32, S_FIELD(opts.repair_chunk), 1, 1e6, "N",
     "rows copied per step when a stale replica list is rebuilt from another replica"},
    {"repair-pause-ms", CLIOPT_U32, S_FIELD(opts.repair_pause_ms), 0, S_MS_MAX, "MS",
     "pause between two repair steps (throttles the rebuild's load on the shards)"},
    {"recall-sample", CLIOPT_SECONDS, S_FIELD(opts.recall_sample), 0, 1, "F",
     "fraction of client searches re-run exactly for the online recall estimate (0 = off; "
     "default $SHOAL_RECALL_SAMPLE, else 0.005)"},
    {"recall-budget", CLIOPT_SECONDS, S_FIELD(opts.recall_budget), 0.001, 1, "F",
     "share of the time those exact re-runs may take: each waits for (1/F - 1) times the "
     "last one's duration (default $SHOAL_RECALL_BUDGET, else 0.02)"},
    {"device", CLIOPT_DEVICES, S_FIELD(device), 0, 0, "auto|cpu|gpu:0,1",
     "k-means and routing engine"},
    {"threads", CLIOPT_SIZE, S_FIELD(opts.threads), 0, 4096, "N",
     "k-means / routing CPU threads (0 = one per core)"},
    {"max-message-bytes", CLIOPT_SIZE, S_FIELD(opts.limits.max_message_bytes), 1024, 4294967296.0,
     "B", "largest request (all frames together)"},
    {"max-batch", CLIOPT_SIZE, S_FIELD(opts.limits.max_batch), 1, 1e9, "N",
     "most vectors, ids or queries in one request"},
    {"max-k", CLIOPT_SIZE, S_FIELD(opts.limits.max_k), 1, WIRE_MAX_K_MAX, "K",
     "largest k of a search"},
    {"max-dim", CLIOPT_SIZE, S_FIELD(opts.limits.max_dim), 1, 65536, "D",
     "largest collection dimension"},
    {"max-filter", CLIOPT_SIZE, S_FIELD(opts.limits.max_filter), 1, 1e10, "N",
     "most ids in a search's allow-list"},
    {"max-pending-reply-bytes", CLIOPT_SIZE, S_FIELD(opts.max_pending_reply_bytes),
     WIRE_IO_PENDING_REPLY_BYTES_MIN, WIRE_IO_PENDING_REPLY_BYTES_MAX, "B",
     "reply bytes queued for clients that have not read them; beyond, replies are refused"},
    {"log-level", CLIOPT_LEVEL, S_FIELD(log_level), 0, 0, "debug|info|warn|error|off",
     "lowest level logged (default: $SHOAL_LOG_LEVEL, else info)"},
    {"ready-file", CLIOPT_TEXT, S_FIELD(ready_file), 0, 0, "PATH",
     "once serving, write the bound endpoint to PATH (atomically)"},
    {"metrics-listen", CLIOPT_TEXT, S_FIELD(metrics), 0, 0, "HOST:PORT",
     "serve /metrics (Prometheus), /healthz and /readyz over HTTP there (default off; "
     "conventionally 127.0.0.1:9700)"},
    {"curve-secret-key", CLIOPT_TEXT, S_FIELD(curve_key), 0, 0, "FILE",
     "CURVE: the coordinator's certificate (the _secret file of `shoal keygen`), for clients "
     "and, with --curve-shard-key, towards the shards; needs --curve-clients (default: none)"},
    {"curve-clients", CLIOPT_TEXT, S_FIELD(curve_dir), 0, 0, "DIR",
     "CURVE: public certificates of the clients allowed in"},
    {"curve-shard-key", CLIOPT_TEXT, S_FIELD(curve_shard), 0, 0, "FILE",
     "CURVE: the shards' public certificate (one pair for all shards); shard links use CURVE"},
};

static void s_config_defaults(s_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    coord_opts_default(&cfg->opts);
    snprintf(cfg->listen, sizeof cfg->listen, "%s", cfg->opts.listen);
    snprintf(cfg->device, sizeof cfg->device, "%s", cfg->opts.device);
}

/* CLIOPT_DEVICES: what the k-means engine accepts (cpu needs no parsing). */
static int s_devices_check(const char *text, shoal_err_t *err)
{
    int on_gpu = 0, devices[KNN_DEVICES_MAX], ndevices = 0;
    if (!strcmp(text, "cpu"))
        return 0;
    return knn_parse_devices(text, &on_gpu, devices, &ndevices, err);
}

static void s_usage(FILE *out);

static const cliopt_spec_t s_spec = {
    .prog = S_NAME,
    .opts = s_options,
    .nopts = sizeof s_options / sizeof s_options[0],
    .required = "data-dir",
    .unset_text = NULL,
    .line_max = S_SHARDS_MAX + 256,
    .check_devices = s_devices_check,
    .usage = s_usage,
};

static void s_usage(FILE *out)
{
    static s_config_t d;
    s_config_defaults(&d);
    fprintf(out,
            "usage: " S_NAME " --data-dir DIR --shards EP1,EP2,... [--listen ENDPOINT]\n"
            "                         [--config FILE] [options]\n"
            "\n"
            "The front door of a shoal cluster: keeps the catalog (collections, IVF centroids,\n"
            "list placement, id map), routes writes to the shards owning each vector's list,\n"
            "fans searches out and merges them (docs/protocol.md: the requests).\n"
            "\n"
            "  --config FILE  read options from FILE first: one `key = value` per line, keys\n"
            "                 as below without the dashes, # comments; flags override it\n"
            "  --help         this text\n");
    cliopt_print_options(out, &s_spec, &d);
    fprintf(out, "\n"
                 "SIGTERM or SIGINT stops gracefully (finish requests in progress, exit 0);\n"
                 "a second one exits at once.\n"
                 "Exit status: 0 clean stop, 1 runtime failure, 2 bad usage.\n");
}

/*
 * Splits the --shards list in place into endpoints. Returns the count, or
 * (size_t)-1 after printing what is wrong (an empty entry, not an endpoint).
 */
static size_t s_split_shards(char *list, const char **out, size_t cap)
{
    size_t n = 0;
    if (!*list)
        return 0;
    char *p = list;
    while (1) {
        char *comma = strchr(p, ',');
        if (comma)
            *comma = '\0';
        char *ep = cliopt_trim(p);
        if (!*ep || !strstr(ep, "://")) {
            fprintf(stderr, S_NAME ": --shards: \"%s\" is not an endpoint (tcp://HOST:PORT)\n", ep);
            return (size_t)-1;
        }
        if (n == cap) {
            fprintf(stderr, S_NAME ": --shards: more than %zu shards\n", cap);
            return (size_t)-1;
        }
        out[n++] = ep;
        if (!comma)
            break;
        p = comma + 1;
    }
    return n;
}

/* The CURVE keys: the ROUTER's certificate and allow-list (zauth, *auth), the shards' public
 * key. *curve_on: 1 when the ROUTER is a CURVE server. Returns -1 to go on, else the exit
 * status (the signal handlers undone). */
static int s_curve_start(const s_config_t *cfg, wire_curve_cert_t *curve,
                         wire_curve_cert_t *curve_shard, zactor_t **auth, int *curve_on)
{
    shoal_err_t err;
    shoal_err_clear(&err);
    if (cfg->curve_shard[0] && !cfg->curve_key[0]) {
        log_error("cannot start: --curve-shard-key needs --curve-secret-key (the coordinator's "
                  "own key towards the shards) and --curve-clients");
        service_signals_fini();
        return S_EXIT_USAGE;
    }
    *curve_on =
        wire_curve_server_start("coordinator", cfg->curve_key, cfg->curve_dir, curve, auth, &err);
    if (*curve_on >= 0 && cfg->curve_shard[0] &&
        wire_curve_load(cfg->curve_shard, 0, curve_shard, &err) != 0)
        *curve_on = err.code;
    if (*curve_on < 0) {
        log_error("cannot start: %s", err.msg);
        zactor_destroy(auth);
        service_signals_fini();
        return *curve_on == SHOAL_EINVAL ? S_EXIT_USAGE : S_EXIT_RUNTIME;
    }
    if (cfg->curve_shard[0])
        log_info("shard links: CURVE, shard key %s (public %s)", cfg->curve_shard,
                 curve_shard->public_txt);
    else
        log_warn("shard links: unauthenticated and unencrypted (no --curve-shard-key)");
    return -1;
}

/* ------------------------------------------------------------------------ */
/* main                                                                     */
/* ------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    static s_config_t cfg;
    s_config_defaults(&cfg);
    int status = cliopt_start(&s_spec, &cfg, argc, argv);
    if (status != CLIOPT_RUN)
        return status;
    static const char *shards[4096];
    static char shard_list[S_SHARDS_MAX];
    snprintf(shard_list, sizeof shard_list, "%s", cfg.shards);
    size_t nshards = s_split_shards(shard_list, shards, sizeof shards / sizeof shards[0]);
    if (nshards == (size_t)-1)
        return S_EXIT_USAGE;
    shoal_err_t err;
    shoal_err_clear(&err);
    if (cfg.metrics[0] && http_metrics_check_listen(cfg.metrics, &err) != 0) {
        fprintf(stderr, S_NAME ": --metrics-listen: %s\n", err.msg);
        return S_EXIT_USAGE;
    }

    zsys_handler_set(NULL); /* before any socket: the signals are ours */
    int stop_fd = service_signals_install(S_NAME);
    if (stop_fd < 0)
        return S_EXIT_RUNTIME;
    /* The allow-list before the ROUTER binds: libzmq asks it at each handshake. */
    static wire_curve_cert_t curve, curve_shard;
    zactor_t *auth = NULL;
    int curve_on = 0;
    if ((status = s_curve_start(&cfg, &curve, &curve_shard, &auth, &curve_on)) >= 0)
        return status;
    http_metrics_t *metrics = NULL;
    if (cfg.metrics[0] && !(metrics = http_metrics_new(cfg.metrics, "coordinator", &err))) {
        log_error("cannot start: --metrics-listen: %s", err.msg);
        zactor_destroy(&auth);
        service_signals_fini();
        return S_EXIT_RUNTIME;
    }

    coord_opts_t opts = cfg.opts;
    opts.listen = cfg.listen;
    opts.data_dir = cfg.data_dir;
    opts.shards = shards;
    opts.nshards = nshards;
    opts.device = cfg.device;
    opts.stop_fd = stop_fd;
    opts.metrics = metrics;
    opts.curve_cert = curve_on ? &curve : NULL;
    opts.curve_shard_cert = cfg.curve_shard[0] ? &curve_shard : NULL;

    coord_t *coord = coord_new(&opts, &err);
    if (!coord) {
        log_error("cannot start: %s", err.msg);
        http_metrics_destroy(&metrics);
        zactor_destroy(&auth);
        return S_EXIT_RUNTIME;
    }
    const char *endpoint = coord_endpoint(coord);
    if (service_ready(cfg.ready_file, endpoint) != 0) {
        coord_destroy(&coord);
        http_metrics_destroy(&metrics);
        zactor_destroy(&auth);
        return S_EXIT_RUNTIME;
    }
    log_info("listening on %s, data dir %s, shards %s, engine device %s, nlist %u, nprobe %u",
             endpoint, cfg.data_dir, cfg.shards[0] ? cfg.shards : "(from the catalog)", cfg.device,
             (unsigned)opts.nlist_default, (unsigned)opts.nprobe_default);

    int rc = coord_run(coord, &err);
    if (rc != 0)
        log_error("coordinator loop failed: %s", err.msg);
    coord_destroy(&coord);
    http_metrics_destroy(&metrics); /* after the loop: it publishes until it returns */
    zactor_destroy(&auth);          /* after the ROUTER: its handshakes ask it */
    service_unready(cfg.ready_file);
    log_info("stopped%s", rc ? " after an error" : "");
    service_signals_fini();
    return rc ? S_EXIT_RUNTIME : S_EXIT_OK;
}
