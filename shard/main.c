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
 */
#include "shard/server.h"

#include <czmq.h>

#include "common/log.h"
#include "shard/hnsw.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define S_EXIT_OK      0
#define S_EXIT_RUNTIME 1
#define S_EXIT_USAGE   2

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
    size_t hnsw_m;               /* --hnsw-m */
    size_t hnsw_ef_construction; /* --hnsw-ef-construction */
    size_t hnsw_ef;              /* --hnsw-ef */
} s_config_t;

typedef enum {
    S_TEXT,    /* a string (paths, endpoints) */
    S_SIZE,    /* a whole number in [min, max] */
    S_SECONDS, /* a decimal number in [min, max] */
    S_ONOFF,   /* on|off */
    S_DEVICES, /* auto | cpu | gpu:N[,N...] */
    S_LEVEL,   /* debug|info|warn|error|off */
} s_kind_t;

typedef struct {
    const char *name; /* long option without "--"; also the config file's key */
    s_kind_t kind;    /* how the value is parsed and checked */
    size_t offset;    /* field in s_config_t */
    size_t size;      /* S_TEXT: the field's capacity */
    double min, max;  /* S_SIZE / S_SECONDS: accepted range */
    const char *arg;  /* placeholder shown by --help */
    const char *help; /* one line for --help */
} s_option_t;

#define S_FIELD(f) offsetof(s_config_t, f), sizeof(((s_config_t *)0)->f)

static const s_option_t s_options[] = {
    {"listen", S_TEXT, S_FIELD(listen), 0, 0, "ENDPOINT",
     "where to listen; port * picks a free one (tcp://127.0.0.1:*)"},
    {"data-dir", S_TEXT, S_FIELD(data_dir), 0, 0, "DIR",
     "RocksDB directory for vectors and checkpoints (required; created if absent)"},
    {"threads", S_SIZE, S_FIELD(threads), 0, SHARD_SERVER_WORKERS_MAX, "N",
     "search threads, also used for index builds (0 = one per core)"},
    {"devices", S_DEVICES, S_FIELD(devices), 0, 0, "auto|cpu|gpu:0,1",
     "exact search engine: GPUs when present (auto), the CPU, or these GPUs"},
    {"sync", S_ONOFF, S_FIELD(sync), 0, 1, "on|off",
     "fsync the write-ahead log before acknowledging a write"},
    {"checkpoint-every", S_SIZE, S_FIELD(checkpoint_every), 1, 1e12, "N",
     "checkpoint a collection's graph after this many inserts"},
    {"checkpoint-secs", S_SECONDS, S_FIELD(checkpoint_secs), 0.01, 7 * 86400.0, "S",
     "... or after this many seconds with writes"},
    {"exact-min-batch", S_SIZE, S_FIELD(exact_min_batch), 1, 1e9, "N",
     "mode auto: smallest query batch sent to a GPU exact engine"},
    {"max-message-bytes", S_SIZE, S_FIELD(max_message_bytes), 1024, 4294967296.0, "B",
     "largest request (all frames together); larger ones are refused"},
    {"max-batch", S_SIZE, S_FIELD(max_batch), 1, 1e9, "N",
     "most vectors, ids or queries in one request"},
    {"max-k", S_SIZE, S_FIELD(max_k), 1, 65536, "K", "largest k of a search"},
    {"max-dim", S_SIZE, S_FIELD(max_dim), 1, HNSW_DIM_MAX, "D", "largest collection dimension"},
    {"max-filter", S_SIZE, S_FIELD(max_filter), 1, 1e10, "N", "most ids in a search's allow-list"},
    {"hnsw-m", S_SIZE, S_FIELD(hnsw_m), HNSW_M_MIN, HNSW_M_MAX, "M",
     "HNSW links per node for collections created without one"},
    {"hnsw-ef-construction", S_SIZE, S_FIELD(hnsw_ef_construction), HNSW_EF_CONSTRUCTION_MIN,
     HNSW_EF_CONSTRUCTION_MAX, "E", "HNSW build candidate list, same"},
    {"hnsw-ef", S_SIZE, S_FIELD(hnsw_ef), HNSW_EF_MIN, HNSW_EF_MAX, "E",
     "HNSW search candidate list for searches that give none"},
    {"log-level", S_LEVEL, S_FIELD(log_level), 0, 0, "debug|info|warn|error|off",
     "lowest level logged (default: $SHOAL_LOG_LEVEL, else info)"},
    {"ready-file", S_TEXT, S_FIELD(ready_file), 0, 0, "PATH",
     "once serving, write the bound endpoint to PATH (atomically)"},
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
    cfg->hnsw_m = HNSW_M_DEFAULT;
    cfg->hnsw_ef_construction = HNSW_EF_CONSTRUCTION_DEFAULT;
    cfg->hnsw_ef = HNSW_EF_DEFAULT;
}

/* The option's current value as text, for --help's defaults. */
static void s_option_value(const s_config_t *cfg, const s_option_t *o, char *buf, size_t cap)
{
    const char *field = (const char *)cfg + o->offset;
    switch (o->kind) {
    case S_SIZE:
        snprintf(buf, cap, "%zu", *(const size_t *)field);
        break;
    case S_SECONDS:
        snprintf(buf, cap, "%g", *(const double *)field);
        break;
    case S_ONOFF:
        snprintf(buf, cap, "%s", *(const size_t *)field ? "on" : "off");
        break;
    default:
        snprintf(buf, cap, "%s", *field ? field : "none");
        break;
    }
}

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
    for (size_t i = 0; i < S_NOPTIONS; i++) {
        const s_option_t *o = &s_options[i];
        char value[64];
        s_option_value(&defaults, o, value, sizeof value);
        fprintf(out, "  --%s %s\n      %s", o->name, o->arg, o->help);
        if (o->kind == S_SIZE || o->kind == S_SECONDS)
            fprintf(out, " [default %s; %.*f..%.0f]\n", value, o->min < 1 && o->min > 0 ? 2 : 0,
                    o->min, o->max);
        else if (o->kind == S_LEVEL || !strcmp(o->name, "data-dir"))
            fprintf(out, "\n");
        else
            fprintf(out, " [default %s]\n", value);
    }
    fprintf(out,
            "\n"
            "SIGTERM or SIGINT stops gracefully (finish running requests, checkpoint, exit 0);\n"
            "a second one exits at once (acknowledged writes are safe in the WAL).\n"
            "Exit status: 0 clean stop, 1 runtime failure, 2 bad usage.\n");
}

static const s_option_t *s_option_find(const char *name, size_t len)
{
    for (size_t i = 0; i < S_NOPTIONS; i++)
        if (strlen(s_options[i].name) == len && !strncmp(s_options[i].name, name, len))
            return &s_options[i];
    return NULL;
}

static int s_parse_size(const char *text, unsigned long long *out)
{
    if (!*text)
        return -1;
    for (const char *p = text; *p; p++)
        if (*p < '0' || *p > '9')
            return -1;
    errno = 0;
    char *end = NULL;
    *out = strtoull(text, &end, 10);
    return errno || *end ? -1 : 0;
}

static int s_devices_valid(const char *text)
{
    if (!strcmp(text, "auto") || !strcmp(text, "cpu"))
        return 1;
    if (strncmp(text, "gpu:", 4) != 0 || !text[4])
        return 0;
    int digits = 0;
    for (const char *p = text + 4; *p; p++) {
        if (*p >= '0' && *p <= '9') {
            digits++;
        } else if (*p == ',' && digits > 0) {
            digits = 0;
        } else {
            return 0;
        }
    }
    return digits > 0;
}

/*
 * Sets option o from text. where names the source for messages: "--threads"
 * or "config shard.conf line 3: threads". Prints why and returns -1 on error.
 */
static int s_option_set(s_config_t *cfg, const s_option_t *o, const char *text, const char *where)
{
    char *field = (char *)cfg + o->offset;
    switch (o->kind) {
    case S_TEXT:
        if (!*text) {
            fprintf(stderr, "shoal-shard: %s: needs a non-empty value\n", where);
            return -1;
        }
        if (strlen(text) >= o->size) {
            fprintf(stderr, "shoal-shard: %s: value longer than %zu characters\n", where,
                    o->size - 1);
            return -1;
        }
        if (!strcmp(o->name, "listen") && !strstr(text, "://")) {
            fprintf(stderr, "shoal-shard: %s: \"%s\" is not an endpoint (tcp://HOST:PORT)\n", where,
                    text);
            return -1;
        }
        snprintf(field, o->size, "%s", text);
        return 0;
    case S_SIZE: {
        unsigned long long value;
        if (s_parse_size(text, &value) != 0) {
            fprintf(stderr, "shoal-shard: %s: \"%s\" is not a whole number\n", where, text);
            return -1;
        }
        if ((double)value < o->min || (double)value > o->max) {
            fprintf(stderr, "shoal-shard: %s: %llu is out of range [%.0f, %.0f]\n", where, value,
                    o->min, o->max);
            return -1;
        }
        *(size_t *)field = (size_t)value;
        return 0;
    }
    case S_SECONDS: {
        errno = 0;
        char *end = NULL;
        double value = strtod(text, &end);
        if (!*text || errno || *end || !isfinite(value)) {
            fprintf(stderr, "shoal-shard: %s: \"%s\" is not a number\n", where, text);
            return -1;
        }
        if (value < o->min || value > o->max) {
            fprintf(stderr, "shoal-shard: %s: %g is out of range [%g, %g]\n", where, value, o->min,
                    o->max);
            return -1;
        }
        *(double *)field = value;
        return 0;
    }
    case S_ONOFF:
        if (!strcmp(text, "on") || !strcmp(text, "off")) {
            *(size_t *)field = !strcmp(text, "on");
            return 0;
        }
        fprintf(stderr, "shoal-shard: %s: expected on or off, got \"%s\"\n", where, text);
        return -1;
    case S_DEVICES:
        if (!s_devices_valid(text) || strlen(text) >= o->size) {
            fprintf(stderr, "shoal-shard: %s: expected auto, cpu or gpu:N[,N...], got \"%s\"\n",
                    where, text);
            return -1;
        }
        snprintf(field, o->size, "%s", text);
        return 0;
    case S_LEVEL: {
        shoal_log_level_t level;
        if (shoal_log_parse_level(text, &level) != 0) {
            fprintf(stderr,
                    "shoal-shard: %s: expected debug, info, warn, error or off, got \"%s\"\n",
                    where, text);
            return -1;
        }
        snprintf(field, o->size, "%s", text);
        return 0;
    }
    }
    return -1;
}

/* Removes leading and trailing blanks in place. */
static char *s_trim(char *text)
{
    while (*text == ' ' || *text == '\t')
        text++;
    size_t len = strlen(text);
    while (len > 0 && (text[len - 1] == ' ' || text[len - 1] == '\t' || text[len - 1] == '\r' ||
                       text[len - 1] == '\n'))
        text[--len] = '\0';
    return text;
}

static int s_config_load(s_config_t *cfg, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "shoal-shard: --config: cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    char line[S_TEXT_MAX + 128];
    int rc = 0;
    for (size_t lineno = 1; rc == 0 && fgets(line, sizeof line, f); lineno++) {
        size_t len = strlen(line);
        if (len == sizeof line - 1 && line[len - 1] != '\n' && !feof(f)) {
            fprintf(stderr, "shoal-shard: config %s line %zu: line too long\n", path, lineno);
            rc = -1;
            break;
        }
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *text = s_trim(line);
        if (!*text)
            continue;
        char *eq = strchr(text, '=');
        if (!eq) {
            fprintf(stderr, "shoal-shard: config %s line %zu: expected key = value, got \"%s\"\n",
                    path, lineno, text);
            rc = -1;
            break;
        }
        *eq = '\0';
        char *key = s_trim(text);
        char *value = s_trim(eq + 1);
        size_t vlen = strlen(value);
        if (vlen >= 2 && value[0] == '"' && value[vlen - 1] == '"') {
            value[vlen - 1] = '\0';
            value++;
        }
        for (char *p = key; *p; p++)
            if (*p == '_')
                *p = '-';
        const s_option_t *o = s_option_find(key, strlen(key));
        if (!o) {
            fprintf(stderr, "shoal-shard: config %s line %zu: unknown key \"%s\"\n", path, lineno,
                    key);
            rc = -1;
            break;
        }
        char where[S_TEXT_MAX + 64];
        snprintf(where, sizeof where, "config %s line %zu: %s", path, lineno, key);
        rc = s_option_set(cfg, o, value, where);
    }
    fclose(f);
    return rc;
}

/*
 * Parses argv into cfg. Returns 0, 1 when --help was printed, or -1 after
 * printing why the command line is wrong.
 */
static int s_parse_args(int argc, char **argv, s_config_t *cfg)
{
    /* First pass: --help wins; the config file is applied before any flag. */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            s_usage(stdout);
            return 1;
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *value = NULL;
        if (!strncmp(argv[i], "--config=", 9)) {
            value = argv[i] + 9;
        } else if (!strcmp(argv[i], "--config")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "shoal-shard: --config needs a value\n");
                return -1;
            }
            value = argv[++i];
        } else {
            continue;
        }
        if (s_config_load(cfg, value) != 0)
            return -1;
    }
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp(arg, "--", 2) != 0) {
            fprintf(stderr, "shoal-shard: unexpected argument \"%s\" (see --help)\n", arg);
            return -1;
        }
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        if (len == 6 && !strncmp(name, "config", 6)) {
            if (!eq)
                i++;
            continue;
        }
        const s_option_t *o = s_option_find(name, len);
        if (!o) {
            fprintf(stderr, "shoal-shard: unknown option --%.*s (see --help)\n", (int)len, name);
            return -1;
        }
        const char *value = eq ? eq + 1 : NULL;
        if (!value) {
            if (i + 1 >= argc) {
                fprintf(stderr, "shoal-shard: --%s needs a value\n", o->name);
                return -1;
            }
            value = argv[++i];
        }
        char where[96];
        snprintf(where, sizeof where, "--%s", o->name);
        if (s_option_set(cfg, o, value, where) != 0)
            return -1;
    }
    if (!cfg->data_dir[0]) {
        fprintf(stderr, "shoal-shard: --data-dir is required (see --help)\n");
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Signals                                                                  */
/* ------------------------------------------------------------------------ */

/* Signals seen so far; the second one exits at once. */
static volatile sig_atomic_t s_signals;
/* The first signal writes here; the server's loop polls the read end. */
static int s_stop_pipe[2] = {-1, -1};

static void s_on_signal(int sig)
{
    if (s_signals) {
        static const char msg[] = "shoal-shard: second signal, exiting now\n";
        ssize_t w = write(2, msg, sizeof msg - 1);
        (void)w;
        _exit(128 + sig);
    }
    s_signals = 1;
    int saved = errno;
    ssize_t w = write(s_stop_pipe[1], "s", 1);
    (void)w;
    errno = saved;
}

static int s_signals_install(void)
{
    if (pipe(s_stop_pipe) != 0)
        return -1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGINT, &sa, NULL) != 0)
        return -1;
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Start and stop                                                           */
/* ------------------------------------------------------------------------ */

static int s_write_ready_file(const char *path, const char *endpoint)
{
    char tmp[S_TEXT_MAX + 32];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f)
        return -1;
    int ok = fprintf(f, "%s\n", endpoint) > 0;
    ok = (fflush(f) == 0) && ok;
    ok = (fsync(fileno(f)) == 0) && ok;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    shoal_log_set_ident("shoal-shard");
    shoal_log_init_from_env();
    s_config_t cfg;
    s_config_defaults(&cfg);
    int prc = s_parse_args(argc, argv, &cfg);
    if (prc > 0)
        return S_EXIT_OK;
    if (prc < 0)
        return S_EXIT_USAGE;
    if (cfg.log_level[0]) {
        shoal_log_level_t level;
        if (shoal_log_parse_level(cfg.log_level, &level) == 0)
            shoal_log_set_level(level);
    }

    /* Before any czmq socket: czmq must leave SIGINT/SIGTERM to us. */
    zsys_handler_set(NULL);
    if (s_signals_install() != 0) {
        log_error("cannot install signal handlers: %s", strerror(errno));
        return S_EXIT_RUNTIME;
    }

    shard_server_opts_t opts;
    shard_server_opts_default(&opts);
    opts.listen = cfg.listen;
    opts.workers = cfg.threads;
    opts.stop_fd = s_stop_pipe[0];
    opts.limits.max_message_bytes = cfg.max_message_bytes;
    opts.limits.max_batch = cfg.max_batch;
    opts.limits.max_k = cfg.max_k;
    opts.limits.max_dim = cfg.max_dim;
    opts.limits.max_filter = cfg.max_filter;
    opts.store.data_dir = cfg.data_dir;
    opts.store.device = cfg.devices;
    opts.store.threads = cfg.threads;
    opts.store.sync = (int)cfg.sync;
    opts.store.checkpoint_every = cfg.checkpoint_every;
    opts.store.checkpoint_secs = cfg.checkpoint_secs;
    opts.store.exact_min_batch = cfg.exact_min_batch;
    opts.store.hnsw_M = cfg.hnsw_m;
    opts.store.hnsw_ef_construction = cfg.hnsw_ef_construction;
    opts.store.hnsw_ef = cfg.hnsw_ef;

    shoal_err_t err;
    shoal_err_clear(&err);
    shard_server_t *server = shard_server_new(&opts, &err);
    if (!server) {
        log_error("cannot start: %s", err.msg);
        return S_EXIT_RUNTIME;
    }
    const char *endpoint = shard_server_endpoint(server);
    if (cfg.ready_file[0] && s_write_ready_file(cfg.ready_file, endpoint) != 0) {
        log_error("cannot write the ready file %s: %s", cfg.ready_file, strerror(errno));
        shard_server_destroy(&server);
        return S_EXIT_RUNTIME;
    }
    int devices[64];
    int ndev = shard_store_devices(shard_server_store(server), devices, 64);
    char device_text[128] = "cpu";
    if (ndev > 0) {
        size_t len = (size_t)snprintf(device_text, sizeof device_text, "gpu:");
        for (int i = 0; i < ndev && len < sizeof device_text; i++)
            len += (size_t)snprintf(device_text + len, sizeof device_text - len, "%s%d",
                                    i ? "," : "", devices[i]);
    }
    log_info("listening on %s, data dir %s, device %s (asked: %s), %zu threads, sync %s", endpoint,
             cfg.data_dir, device_text, cfg.devices, shard_server_workers(server),
             cfg.sync ? "on" : "off");

    int rc = shard_server_run(server, &err);
    if (rc != 0)
        log_error("server loop failed: %s", err.msg);
    double t0 = zclock_usecs() / 1e6;
    shard_server_destroy(&server); /* closes the store: the final checkpoint */
    if (cfg.ready_file[0])
        unlink(cfg.ready_file);
    log_info("stopped%s; store closed in %.2f s", rc ? " after an error" : "",
             zclock_usecs() / 1e6 - t0);
    close(s_stop_pipe[0]);
    close(s_stop_pipe[1]);
    return rc ? S_EXIT_RUNTIME : S_EXIT_OK;
}
