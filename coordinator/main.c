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
 */
#include "coordinator/coord.h"

#include <czmq.h>

#include "common/log.h"
#include "gpu/knn.h"

#include <errno.h>
#include <signal.h>
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

typedef struct {
    char listen[S_TEXT_MAX];     /* --listen */
    char data_dir[S_TEXT_MAX];   /* --data-dir (required) */
    char shards[S_SHARDS_MAX];   /* --shards a,b,c ("" = the catalog's) */
    char device[S_TEXT_MAX];     /* --device */
    char ready_file[S_TEXT_MAX]; /* --ready-file */
    char log_level[16];          /* --log-level */
    size_t nlist;                /* --nlist */
    size_t nprobe;               /* --nprobe */
    size_t deadline_ms;          /* --deadline-ms */
    size_t write_timeout_ms;     /* --write-timeout-ms */
    size_t ping_interval_ms;     /* --ping-interval-ms */
    size_t down_after_ms;        /* --down-after-ms */
    size_t chunk;                /* --chunk */
    size_t threads;              /* --threads */
    size_t max_message_bytes;    /* --max-message-bytes */
    size_t max_batch;            /* --max-batch */
    size_t max_k;                /* --max-k */
    size_t max_dim;              /* --max-dim */
    size_t max_filter;           /* --max-filter */
} s_config_t;

typedef enum {
    S_TEXT,     /* a string */
    S_ENDPOINT, /* a string with "://" */
    S_SIZE,     /* a whole number in [min, max] */
    S_DEVICES,  /* auto | cpu | gpu:N[,N...] */
    S_LEVEL,    /* debug|info|warn|error|off */
} s_kind_t;

typedef struct {
    const char *name; /* long option without "--"; the config file's key */
    s_kind_t kind;    /* how the value is parsed */
    size_t offset;    /* field in s_config_t */
    size_t size;      /* text fields: capacity */
    double min, max;  /* S_SIZE range */
    const char *arg;  /* placeholder in --help */
    const char *help; /* one line for --help */
} s_option_t;

#define S_FIELD(f) offsetof(s_config_t, f), sizeof(((s_config_t *)0)->f)

static const s_option_t s_options[] = {
    {"listen", S_ENDPOINT, S_FIELD(listen), 0, 0, "ENDPOINT",
     "where clients connect; port * picks a free one"},
    {"data-dir", S_TEXT, S_FIELD(data_dir), 0, 0, "DIR",
     "the catalog's RocksDB directory (required; created if absent)"},
    {"shards", S_TEXT, S_FIELD(shards), 0, 0, "EP1,EP2,...",
     "shard endpoints, in order (new ones may be appended later; default: the catalog's)"},
    {"nlist", S_SIZE, S_FIELD(nlist), 1, 1e9, "N", "IVF lists of a collection created without one"},
    {"nprobe", S_SIZE, S_FIELD(nprobe), 1, 1e9, "N",
     "lists a query probes when neither create nor search says (capped at nlist)"},
    {"deadline-ms", S_SIZE, S_FIELD(deadline_ms), 1, S_MS_MAX, "MS",
     "search / get / knn_graph deadline when the request gives none"},
    {"write-timeout-ms", S_SIZE, S_FIELD(write_timeout_ms), 1, S_MS_MAX, "MS",
     "how long a write waits for its shards"},
    {"ping-interval-ms", S_SIZE, S_FIELD(ping_interval_ms), 1, S_MS_MAX, "MS",
     "health pings to every shard"},
    {"down-after-ms", S_SIZE, S_FIELD(down_after_ms), 1, S_MS_MAX, "MS",
     "a shard silent this long is marked down"},
    {"chunk", S_SIZE, S_FIELD(chunk), 1, 1e9, "N", "knn_graph rows per reply by default"},
    {"device", S_DEVICES, S_FIELD(device), 0, 0, "auto|cpu|gpu:0,1", "k-means and routing engine"},
    {"threads", S_SIZE, S_FIELD(threads), 0, 4096, "N",
     "k-means / routing CPU threads (0 = one per core)"},
    {"max-message-bytes", S_SIZE, S_FIELD(max_message_bytes), 1024, 4294967296.0, "B",
     "largest request (all frames together)"},
    {"max-batch", S_SIZE, S_FIELD(max_batch), 1, 1e9, "N",
     "most vectors, ids or queries in one request"},
    {"max-k", S_SIZE, S_FIELD(max_k), 1, 65536, "K", "largest k of a search"},
    {"max-dim", S_SIZE, S_FIELD(max_dim), 1, 65536, "D", "largest collection dimension"},
    {"max-filter", S_SIZE, S_FIELD(max_filter), 1, 1e10, "N", "most ids in a search's allow-list"},
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
    snprintf(cfg->device, sizeof cfg->device, "auto");
    cfg->nlist = COORD_NLIST_DEFAULT;
    cfg->nprobe = COORD_NPROBE_DEFAULT;
    cfg->deadline_ms = COORD_DEADLINE_MS_DEFAULT;
    cfg->write_timeout_ms = COORD_WRITE_TIMEOUT_MS_DEFAULT;
    cfg->ping_interval_ms = COORD_PING_INTERVAL_MS_DEFAULT;
    cfg->down_after_ms = COORD_DOWN_AFTER_MS_DEFAULT;
    cfg->chunk = COORD_CHUNK_DEFAULT;
    cfg->max_message_bytes = limits.max_message_bytes;
    cfg->max_batch = limits.max_batch;
    cfg->max_k = limits.max_k;
    cfg->max_dim = limits.max_dim;
    cfg->max_filter = limits.max_filter;
}

static void s_usage(FILE *out)
{
    s_config_t d;
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
    for (size_t i = 0; i < S_NOPTIONS; i++) {
        const s_option_t *o = &s_options[i];
        const char *field = (const char *)&d + o->offset;
        fprintf(out, "  --%s %s\n      %s", o->name, o->arg, o->help);
        if (o->kind == S_SIZE)
            fprintf(out, " [default %zu; %.0f..%.0f]\n", *(const size_t *)field, o->min, o->max);
        else if (*field)
            fprintf(out, " [default %s]\n", field);
        else
            fprintf(out, "\n");
    }
    fprintf(out, "\n"
                 "SIGTERM or SIGINT stops gracefully (finish requests in progress, exit 0);\n"
                 "a second one exits at once.\n"
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

static int s_option_set(s_config_t *cfg, const s_option_t *o, const char *text, const char *where)
{
    char *field = (char *)cfg + o->offset;
    switch (o->kind) {
    case S_ENDPOINT:
        if (!strstr(text, "://")) {
            fprintf(stderr, S_NAME ": %s: \"%s\" is not an endpoint (tcp://HOST:PORT)\n", where,
                    text);
            return -1;
        }
        /* fall through */
    case S_TEXT:
        if (!*text) {
            fprintf(stderr, S_NAME ": %s: needs a non-empty value\n", where);
            return -1;
        }
        if (strlen(text) >= o->size) {
            fprintf(stderr, S_NAME ": %s: value longer than %zu characters\n", where, o->size - 1);
            return -1;
        }
        snprintf(field, o->size, "%s", text);
        return 0;
    case S_SIZE: {
        unsigned long long value;
        if (s_parse_size(text, &value) != 0) {
            fprintf(stderr, S_NAME ": %s: \"%s\" is not a whole number\n", where, text);
            return -1;
        }
        if ((double)value < o->min || (double)value > o->max) {
            fprintf(stderr, S_NAME ": %s: %llu is out of range [%.0f, %.0f]\n", where, value,
                    o->min, o->max);
            return -1;
        }
        *(size_t *)field = (size_t)value;
        return 0;
    }
    case S_DEVICES: {
        int on_gpu = 0, devices[KNN_DEVICES_MAX], ndevices = 0;
        shoal_err_t err;
        shoal_err_clear(&err);
        if (strcmp(text, "cpu") != 0 &&
            (knn_parse_devices(text, &on_gpu, devices, &ndevices, &err) != 0 ||
             strlen(text) >= o->size)) {
            fprintf(stderr, S_NAME ": %s: expected auto, cpu or gpu:N[,N...], got \"%s\"%s%s\n",
                    where, text, err.msg[0] ? ": " : "", err.msg);
            return -1;
        }
        snprintf(field, o->size, "%s", text);
        return 0;
    }
    case S_LEVEL: {
        shoal_log_level_t level;
        if (shoal_log_parse_level(text, &level) != 0) {
            fprintf(stderr, S_NAME ": %s: expected debug, info, warn, error or off, got \"%s\"\n",
                    where, text);
            return -1;
        }
        snprintf(field, o->size, "%s", text);
        return 0;
    }
    }
    return -1;
}

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
        fprintf(stderr, S_NAME ": --config: cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    static char line[S_SHARDS_MAX + 256];
    int rc = 0;
    for (size_t lineno = 1; rc == 0 && fgets(line, sizeof line, f); lineno++) {
        size_t len = strlen(line);
        if (len == sizeof line - 1 && line[len - 1] != '\n' && !feof(f)) {
            fprintf(stderr, S_NAME ": config %s line %zu: line too long\n", path, lineno);
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
            fprintf(stderr, S_NAME ": config %s line %zu: expected key = value, got \"%s\"\n", path,
                    lineno, text);
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
            fprintf(stderr, S_NAME ": config %s line %zu: unknown key \"%s\"\n", path, lineno, key);
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

/* 0, 1 when --help was printed, -1 after printing what is wrong. */
static int s_parse_args(int argc, char **argv, s_config_t *cfg)
{
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
                fprintf(stderr, S_NAME ": --config needs a value\n");
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
            fprintf(stderr, S_NAME ": unexpected argument \"%s\" (see --help)\n", arg);
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
            fprintf(stderr, S_NAME ": unknown option --%.*s (see --help)\n", (int)len, name);
            return -1;
        }
        const char *value = eq ? eq + 1 : NULL;
        if (!value) {
            if (i + 1 >= argc) {
                fprintf(stderr, S_NAME ": --%s needs a value\n", o->name);
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
        fprintf(stderr, S_NAME ": --data-dir is required (see --help)\n");
        return -1;
    }
    return 0;
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
        char *ep = s_trim(p);
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

/* ------------------------------------------------------------------------ */
/* Signals                                                                  */
/* ------------------------------------------------------------------------ */

static volatile sig_atomic_t s_signals;
static int s_stop_pipe[2] = {-1, -1};

static void s_on_signal(int sig)
{
    if (s_signals) {
        static const char msg[] = S_NAME ": second signal, exiting now\n";
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

/* ------------------------------------------------------------------------ */
/* main                                                                     */
/* ------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    shoal_log_set_ident(S_NAME);
    shoal_log_init_from_env();
    static s_config_t cfg;
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
    static const char *shards[4096];
    static char shard_list[S_SHARDS_MAX];
    snprintf(shard_list, sizeof shard_list, "%s", cfg.shards);
    size_t nshards = s_split_shards(shard_list, shards, sizeof shards / sizeof shards[0]);
    if (nshards == (size_t)-1)
        return S_EXIT_USAGE;

    zsys_handler_set(NULL); /* before any socket: the signals are ours */
    if (s_signals_install() != 0) {
        log_error("cannot install signal handlers: %s", strerror(errno));
        return S_EXIT_RUNTIME;
    }

    coord_opts_t opts;
    coord_opts_default(&opts);
    opts.listen = cfg.listen;
    opts.data_dir = cfg.data_dir;
    opts.shards = shards;
    opts.nshards = nshards;
    opts.limits.max_message_bytes = cfg.max_message_bytes;
    opts.limits.max_batch = cfg.max_batch;
    opts.limits.max_k = cfg.max_k;
    opts.limits.max_dim = cfg.max_dim;
    opts.limits.max_filter = cfg.max_filter;
    opts.nlist_default = (uint32_t)cfg.nlist;
    opts.nprobe_default = (uint32_t)cfg.nprobe;
    opts.deadline_ms = (uint32_t)cfg.deadline_ms;
    opts.write_timeout_ms = (uint32_t)cfg.write_timeout_ms;
    opts.ping_interval_ms = (uint32_t)cfg.ping_interval_ms;
    opts.down_after_ms = (uint32_t)cfg.down_after_ms;
    opts.chunk_default = (uint32_t)cfg.chunk;
    opts.device = cfg.device;
    opts.threads = cfg.threads;
    opts.stop_fd = s_stop_pipe[0];

    shoal_err_t err;
    shoal_err_clear(&err);
    coord_t *coord = coord_new(&opts, &err);
    if (!coord) {
        log_error("cannot start: %s", err.msg);
        return S_EXIT_RUNTIME;
    }
    const char *endpoint = coord_endpoint(coord);
    if (cfg.ready_file[0] && s_write_ready_file(cfg.ready_file, endpoint) != 0) {
        log_error("cannot write the ready file %s: %s", cfg.ready_file, strerror(errno));
        coord_destroy(&coord);
        return S_EXIT_RUNTIME;
    }
    log_info("listening on %s, data dir %s, shards %s, engine device %s, nlist %zu, nprobe %zu",
             endpoint, cfg.data_dir, cfg.shards[0] ? cfg.shards : "(from the catalog)", cfg.device,
             cfg.nlist, cfg.nprobe);

    int rc = coord_run(coord, &err);
    if (rc != 0)
        log_error("coordinator loop failed: %s", err.msg);
    coord_destroy(&coord);
    if (cfg.ready_file[0])
        unlink(cfg.ready_file);
    log_info("stopped%s", rc ? " after an error" : "");
    close(s_stop_pipe[0]);
    close(s_stop_pipe[1]);
    return rc ? S_EXIT_RUNTIME : S_EXIT_OK;
}
