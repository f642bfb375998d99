/*
 * main.c - bin/shoal, the command-line client of a shoal cluster.
 *
 * One command per run: `shoal [-c ENDPOINT] [-t MS] COMMAND ARGS...`. Every
 * command is a thin layer over client/shoal_client.h (the only way this
 * program talks to a server) and common/ (vector files, recall, logging):
 * parse and check the arguments, connect, run the calls, print one result
 * line on stdout. Progress (load, knn-graph) goes to stderr: a bar redrawn in
 * place on a terminal, plain lines every ~2 s or 10% otherwise, so logs of
 * scripted runs stay readable.
 *
 * Cluster growth (shard add / drain / remove, rebalance) asks the
 * coordinator and returns once the moves are planned; --wait then polls
 * stats' "moves" map and draws the same kind of progress until they are over.
 *
 * Errors: exit status 1 for a failure, 2 for a usage error (unknown option,
 * missing or malformed value), each with exactly one line on stderr,
 * "shoal: <command>: <message>" ("shoal: <message>" before a command is
 * known). Arguments are checked before anything is sent.
 *
 * CURVE: --curve-key FILE (this client's _secret certificate) and
 * --curve-server-key FILE (the server's public one), or $SHOAL_CURVE_KEY and
 * $SHOAL_CURVE_SERVER_KEY, always both; every connection (shards' too, for
 * check) then uses CURVE. `shoal keygen PATH` writes a pair.
 *
 * Signals: czmq installs its own SIGINT/SIGTERM handler when the first
 * socket is made; this program puts the default action back afterwards, so
 * Ctrl-C stops a long load at once like any other command-line tool.
 *
 * Single-threaded; everything allocated is freed before exit.
 */
#include "common/quant.h"
#include "client/shoal_client.h"
#include "common/distance.h"
#include "common/error.h"
#include "common/groundtruth.h"
#include "common/log.h"
#include "common/timing.h"
#include "common/topk.h"
#include "common/vecfile.h"
#include "net/wire.h"
#include "net/wire_curve.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define S_ENDPOINT_DEFAULT "tcp://127.0.0.1:7700"
#define S_ENDPOINT_ENV     "SHOAL_COORDINATOR"
#define S_CURVE_KEY_ENV    "SHOAL_CURVE_KEY"
#define S_CURVE_SERVER_ENV "SHOAL_CURVE_SERVER_KEY"

#define S_EXIT_FAIL  1 /* the command failed */
#define S_EXIT_USAGE 2 /* the command line is wrong */

/*
 * Default per-request timeouts when -t is not given. A train runs k-means
 * and placement before it answers; a load batch waits for HNSW inserts on
 * every shard involved; a knn-graph chunk is a batch search of chunk rows.
 * Search and the small ops use the library's default.
 */
#define S_TIMEOUT_TRAIN_MS 600000
#define S_TIMEOUT_LOAD_MS  120000
#define S_TIMEOUT_KNN_MS   300000
/* shard add / drain / remove and rebalance: planning reads every collection's catalog */
#define S_TIMEOUT_ADMIN_MS 60000

#define S_TIMEOUT_MS_MAX 86400000 /* -t: one day */

/* Requests stay under the server's default message limit, with room for the header. */
#define S_MESSAGE_BYTES_MAX ((uint64_t)WIRE_MAX_MESSAGE_BYTES_DEFAULT - 65536)

#define S_LOAD_BATCH_DEFAULT 10000
#define S_TRAIN_ROWS_DEFAULT 100000
#define S_SEARCH_K_DEFAULT   10
#define S_IDS_MAX            10000000 /* ids one delete/get command accepts */
#define S_DELETE_BATCH       100000   /* ids per delete request */
#define S_GET_IDS_MAX        100000   /* get is for debugging: one request */
#define S_MISSING_MAX        4096     /* union of missing shards printed */
#define S_PROGRESS_PLAIN_S   2.0      /* plain progress lines at least this far apart */
#define S_PROGRESS_TTY_S     0.1      /* redraws of the bar at most this often */
#define S_BAR_WIDTH          30
#define S_WAIT_POLL_S        0.5  /* --wait: stats polled this often */
#define S_WAIT_PLAIN_S       1.0  /* --wait: plain progress lines at least this far apart */
#define S_PLAN_SHOWN_MAX     1000 /* rebalance --dry-run: moves the reply lists at most */

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */
/* ------------------------------------------------------------------------ */

/* Set when the failure is a usage error (exit status 2 rather than 1). */
static int s_usage_failed;

/* Records a usage error in err; returns SHOAL_EINVAL. */
static int s_bad(shoal_err_t *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int s_bad(shoal_err_t *err, const char *fmt, ...)
{
    char buf[SHOAL_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    s_usage_failed = 1;
    return shoal_err_set(err, SHOAL_EINVAL, "%s", buf);
}

/* v with thousands separated by commas ("52,113"), for people; buf holds 27 bytes or more. */
static const char *s_group(uint64_t v, char *buf, size_t cap)
{
    char digits[24];
    int n = snprintf(digits, sizeof digits, "%" PRIu64, v);
    size_t at = 0;
    for (int i = 0; i < n && at + 1 < cap; i++) {
        if (i > 0 && (n - i) % 3 == 0 && at + 2 < cap)
            buf[at++] = ',';
        buf[at++] = digits[i];
    }
    buf[at] = '\0';
    return buf;
}

/*
 * Parses a decimal integer in [min, max] given for option (or argument)
 * name. Rejects signs, spaces, empty text, trailing characters and overflow.
 */
static int s_parse_u64(const char *name, const char *text, uint64_t min, uint64_t max,
                       uint64_t *out, shoal_err_t *err)
{
    if (!text || !isdigit((unsigned char)text[0]))
        return s_bad(err, "%s: expected an integer in [%" PRIu64 ", %" PRIu64 "], got \"%s\"", name,
                     min, max, text ? text : "");
    errno = 0;
    char *end = NULL;
    unsigned long long value = strtoull(text, &end, 10);
    if (errno == ERANGE || *end != '\0' || value < min || value > max)
        return s_bad(err, "%s: expected an integer in [%" PRIu64 ", %" PRIu64 "], got \"%s\"", name,
                     min, max, text);
    *out = (uint64_t)value;
    return 0;
}

/* As s_parse_u64 into a size_t; an absent option (text NULL) leaves *out as it is. */
static int s_opt_size(const char *name, const char *text, uint64_t min, uint64_t max, size_t *out,
                      shoal_err_t *err)
{
    if (!text)
        return 0;
    uint64_t value = 0;
    if (max > SIZE_MAX)
        max = SIZE_MAX;
    int rc = s_parse_u64(name, text, min, max, &value, err);
    if (rc == 0)
        *out = (size_t)value;
    return rc;
}

/* An optional recall in (0, 1] (absent: *out untouched); anything else a usage error. */
static int s_opt_recall(const char *name, const char *text, double *out, shoal_err_t *err)
{
    if (!text)
        return 0;
    char *end = NULL;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || *end || !(v > 0.0 && v <= 1.0))
        return s_bad(err, "%s: expected a recall in (0, 1], got \"%s\"", name, text);
    *out = v;
    return 0;
}

static int s_parse_mode(const char *text, wire_mode_t *mode, shoal_err_t *err)
{
    if (!text)
        return 0;
    if (!strcmp(text, "auto"))
        *mode = WIRE_MODE_AUTO;
    else if (!strcmp(text, "hnsw"))
        *mode = WIRE_MODE_HNSW;
    else if (!strcmp(text, "exact"))
        *mode = WIRE_MODE_EXACT;
    else
        return s_bad(err, "--mode: expected auto, hnsw or exact, got \"%s\"", text);
    return 0;
}

/* Prints text with line breaks turned into spaces, so an error stays one line. */
static void s_print_one_line(FILE *out, const char *text)
{
    for (const char *p = text; *p; p++)
        fputc(*p == '\n' || *p == '\r' ? ' ' : *p, out);
}

/*
 * Adds the comma-separated names of list to set (a comma-separated union of
 * at most cap bytes); names that do not fit are dropped and "..." ends the set.
 */
static void s_union_add(char *set, size_t cap, const char *list)
{
    const char *p = list;
    while (*p) {
        size_t len = strcspn(p, ",");
        int present = 0;
        for (const char *q = set; *q && len > 0;) {
            size_t qlen = strcspn(q, ",");
            if (qlen == len && !strncmp(q, p, len))
                present = 1;
            q += qlen;
            if (*q == ',')
                q++;
        }
        size_t used = strlen(set);
        if (len > 0 && !present) {
            if (used + len + 5 < cap) {
                if (used)
                    set[used++] = ',';
                memcpy(set + used, p, len);
                set[used + len] = '\0';
            } else if (used + 4 < cap && (used < 3 || strcmp(set + used - 3, "..."))) {
                strcpy(set + used, used ? ",..." : "...");
            }
        }
        p += len;
        if (*p == ',')
            p++;
    }
}

/* An id as .ivecs stores it: -1 for padding; SHOAL_ELIMIT when it does not fit int32. */
static int s_id_to_i32(uint64_t id, int32_t *out, const char *path, shoal_err_t *err)
{
    if (id == TOPK_ID_NONE) {
        *out = -1;
        return 0;
    }
    if (id > INT32_MAX)
        return shoal_err_set(err, SHOAL_ELIMIT,
                             "%s: id %" PRIu64 " does not fit in .ivecs (int32, at most %d)", path,
                             id, INT32_MAX);
    *out = (int32_t)id;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Argument parsing                                                         */
/* ------------------------------------------------------------------------ */

/* One option of a command that takes a value. */
typedef struct {
    const char *name;   /* "--dim" */
    const char *alias;  /* "-k", or NULL */
    const char **value; /* receives the value text (borrowed from argv), NULL if absent */
} s_opt_t;

/* One option of a command that takes none ("--wait"). */
typedef struct {
    const char *name; /* "--wait" */
    int *set;         /* receives 1 when given, else 0 */
} s_flag_t;

/* A flag named by arg (len bytes), or NULL. */
static const s_flag_t *s_flag_find(const s_flag_t *flags, size_t nflags, const char *arg,
                                   size_t len)
{
    for (size_t j = 0; j < nflags; j++)
        if (strlen(flags[j].name) == len && !strncmp(flags[j].name, arg, len))
            return &flags[j];
    return NULL;
}

/*
 * Splits argv (argv[0] is the command) into options, flags and positional
 * arguments: "--opt value", "--opt=value", "-k value", "--flag"; "--" ends
 * options. pos_names name the positional arguments; the first npos_min are
 * required. Returns 0, 1 when --help / -h was given, or SHOAL_EINVAL.
 */
static int s_parse_argv(int argc, char **argv, const s_opt_t *opts, size_t nopts,
                        const s_flag_t *flags, size_t nflags, const char *const *pos_names,
                        size_t npos_min, size_t npos_max, const char **pos, size_t *npos,
                        shoal_err_t *err)
{
    *npos = 0;
    for (size_t i = 0; i < nopts; i++)
        *opts[i].value = NULL;
    for (size_t i = 0; i < nflags; i++)
        *flags[i].set = 0;
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            return 1;
        else if (!strcmp(argv[i], "--"))
            break;
    int options_done = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!options_done && !strcmp(arg, "--")) {
            options_done = 1;
            continue;
        }
        if (!options_done && arg[0] == '-' && arg[1] != '\0') {
            const char *eq = strncmp(arg, "--", 2) == 0 ? strchr(arg, '=') : NULL;
            size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
            const s_flag_t *flag = s_flag_find(flags, nflags, arg, len);
            if (flag && eq)
                return s_bad(err, "option %s takes no value", flag->name);
            if (flag) {
                *flag->set = 1;
                continue;
            }
            const s_opt_t *opt = NULL;
            for (size_t j = 0; j < nopts && !opt; j++) {
                const char *n = opts[j].name, *a = opts[j].alias;
                if ((strlen(n) == len && !strncmp(n, arg, len)) ||
                    (a && strlen(a) == len && !strncmp(a, arg, len)))
                    opt = &opts[j];
            }
            if (!opt)
                return s_bad(err, "unknown option \"%.*s\" (see --help)", (int)len, arg);
            if (eq) {
                *opt->value = eq + 1;
            } else {
                if (i + 1 >= argc)
                    return s_bad(err, "option %s needs a value", arg);
                *opt->value = argv[++i];
            }
            if (!**opt->value)
                return s_bad(err, "option %s has an empty value", opt->name);
            continue;
        }
        if (*npos >= npos_max)
            return s_bad(err, "unexpected argument \"%s\" (see --help)", arg);
        pos[(*npos)++] = arg;
    }
    if (*npos < npos_min)
        return s_bad(err, "missing argument %s (see --help)", pos_names[*npos]);
    return 0;
}

/* s_parse_argv for a command without flags. */
static int s_parse_args(int argc, char **argv, const s_opt_t *opts, size_t nopts,
                        const char *const *pos_names, size_t npos_min, size_t npos_max,
                        const char **pos, size_t *npos, shoal_err_t *err)
{
    return s_parse_argv(argc, argv, opts, nopts, NULL, 0, pos_names, npos_min, npos_max, pos, npos,
                        err);
}

/* ------------------------------------------------------------------------ */
/* Connection                                                               */
/* ------------------------------------------------------------------------ */

typedef struct {
    const char *cmd;        /* the command's name, for messages */
    const char *endpoint;   /* -c, $SHOAL_COORDINATOR or the default */
    int timeout_ms;         /* -t; 0 = the command's default */
    const char *curve_key;    /* --curve-key or $SHOAL_CURVE_KEY; NULL: plain */
    const char *curve_server; /* --curve-server-key or $SHOAL_CURVE_SERVER_KEY */
    shoal_client_t *client; /* connected by s_connect, destroyed by main */
} s_cli_t;

/* A client of endpoint, over CURVE when the keys were given. */
static shoal_client_t *s_client_new(const s_cli_t *cli, const char *endpoint, int timeout_ms,
                                    shoal_err_t *err)
{
    if (cli->curve_key)
        return shoal_client_new_curve(endpoint, timeout_ms, cli->curve_key, cli->curve_server, err);
    return shoal_client_new(endpoint, timeout_ms, err);
}

static int s_connect(s_cli_t *cli, int default_timeout_ms, shoal_err_t *err)
{
    int timeout = cli->timeout_ms > 0 ? cli->timeout_ms : default_timeout_ms;
    cli->client = s_client_new(cli, cli->endpoint, timeout, err);
    if (!cli->client)
        return err->code ? err->code : SHOAL_EINVAL;
    /* czmq caught these when it made the socket: give them back their default */
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Progress on stderr                                                       */
/* ------------------------------------------------------------------------ */

typedef struct {
    const char *what; /* "load", "knn-graph" */
    const char *unit; /* "vectors", "rows" */
    int tty;          /* stderr is a terminal: redraw a bar in place */
    double start;     /* when the work began */
    double last;      /* when progress was last shown */
    int last_tenth;   /* plain mode: the last 10% step shown */
    int drawn;        /* tty mode: a bar is on screen (needs a newline) */
} s_progress_t;

static void s_progress_init(s_progress_t *p, const char *what, const char *unit)
{
    memset(p, 0, sizeof *p);
    p->what = what;
    p->unit = unit;
    p->tty = isatty(STDERR_FILENO);
    p->start = p->last = timing_now();
}

static void s_format_eta(char *buf, size_t cap, double seconds)
{
    if (!(seconds >= 0) || seconds > 1e7) {
        snprintf(buf, cap, "?");
        return;
    }
    unsigned long s = (unsigned long)(seconds + 0.5);
    if (s >= 3600)
        snprintf(buf, cap, "%lu:%02lu:%02lu", s / 3600, s / 60 % 60, s % 60);
    else
        snprintf(buf, cap, "%lu:%02lu", s / 60, s % 60);
}

/* done of total (total 0: unknown) units finished; final: the work is over. */
static void s_progress_update(s_progress_t *p, uint64_t done, uint64_t total, int final)
{
    double now = timing_now();
    double elapsed = now - p->start;
    double rate = elapsed > 0 ? (double)done / elapsed : 0.0;
    double frac = total ? (double)done / (double)total : 0.0;
    if (frac > 1.0)
        frac = 1.0;
    char eta[32];
    uint64_t left = done < total ? total - done : 0;
    s_format_eta(eta, sizeof eta, rate > 0 && total ? (double)left / rate : -1.0);
    if (p->tty) {
        if (!final && now - p->last < S_PROGRESS_TTY_S)
            return;
        p->last = now;
        char bar[S_BAR_WIDTH + 1];
        int fill = (int)(frac * S_BAR_WIDTH);
        for (int i = 0; i < S_BAR_WIDTH; i++)
            bar[i] = i < fill ? '#' : '.';
        bar[S_BAR_WIDTH] = '\0';
        fprintf(stderr, "\r%s [%s] %5.1f%% %" PRIu64 "/%" PRIu64 " %.0f %s/s ETA %s\033[K", p->what,
                bar, frac * 100.0, done, total, rate, p->unit, eta);
        p->drawn = 1;
        if (final) {
            fputc('\n', stderr);
            p->drawn = 0;
        }
        fflush(stderr);
        return;
    }
    if (final)
        return; /* the result line on stdout says it */
    int tenth = (int)(frac * 10.0);
    if (now - p->last < S_PROGRESS_PLAIN_S && tenth <= p->last_tenth)
        return;
    p->last = now;
    p->last_tenth = tenth;
    fprintf(stderr, "%s: %" PRIu64 "/%" PRIu64 " %s (%.0f%%) %.0f %s/s eta %s\n", p->what, done,
            total, p->unit, frac * 100.0, rate, p->unit, eta);
    fflush(stderr);
}

/* Ends a bar left on screen by a failure, so the error starts its own line. */
static void s_progress_abort(s_progress_t *p)
{
    if (p->drawn) {
        fputc('\n', stderr);
        p->drawn = 0;
    }
}

/* ------------------------------------------------------------------------ */
/* Ids from the command line or a file                                      */
/* ------------------------------------------------------------------------ */

typedef struct {
    uint64_t *ids; /* malloc'd */
    size_t n;      /* in use */
    size_t cap;    /* allocated */
} s_ids_t;

static int s_ids_push(s_ids_t *v, uint64_t id, shoal_err_t *err)
{
    if (v->n >= S_IDS_MAX)
        return s_bad(err, "--ids: more than %d ids", S_IDS_MAX);
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 256;
        uint64_t *ids = realloc(v->ids, cap * sizeof *ids);
        if (!ids)
            return shoal_err_set(err, SHOAL_ENOMEM, "--ids: out of memory");
        v->ids = ids;
        v->cap = cap;
    }
    v->ids[v->n++] = id;
    return 0;
}

/* One id as text of len bytes; ids are below TOPK_ID_NONE, which marks padding. */
static int s_id_parse(const char *text, size_t len, const char *where, uint64_t *out,
                      shoal_err_t *err)
{
    char buf[32];
    if (len == 0 || len >= sizeof buf)
        return s_bad(err, "--ids: %s: \"%.*s\" is not an id", where, (int)(len < 40 ? len : 40),
                     text);
    memcpy(buf, text, len);
    buf[len] = '\0';
    char name[96];
    snprintf(name, sizeof name, "--ids: %s", where);
    return s_parse_u64(name, buf, 0, TOPK_ID_NONE - 1, out, err);
}

/* "1,2,10-20": ids and inclusive ranges, comma-separated (spaces allowed around). */
static int s_ids_parse_list(const char *text, size_t len, const char *where, s_ids_t *v,
                            shoal_err_t *err)
{
    size_t i = 0;
    while (i < len) {
        size_t end = i;
        while (end < len && text[end] != ',')
            end++;
        size_t a = i, b = end;
        while (a < b && isspace((unsigned char)text[a]))
            a++;
        while (b > a && isspace((unsigned char)text[b - 1]))
            b--;
        const char *dash = memchr(text + a, '-', b - a);
        uint64_t lo, hi;
        int rc;
        if (dash) {
            rc = s_id_parse(text + a, (size_t)(dash - (text + a)), where, &lo, err);
            if (rc == 0)
                rc = s_id_parse(dash + 1, (size_t)(text + b - dash - 1), where, &hi, err);
            if (rc == 0 && hi < lo)
                rc = s_bad(err, "--ids: %s: range %" PRIu64 "-%" PRIu64 " is backwards", where, lo,
                           hi);
            if (rc == 0 && hi - lo >= S_IDS_MAX)
                rc = s_bad(err, "--ids: %s: range %" PRIu64 "-%" PRIu64 " has more than %d ids",
                           where, lo, hi, S_IDS_MAX);
        } else {
            rc = s_id_parse(text + a, b - a, where, &lo, err);
            hi = lo;
        }
        for (uint64_t id = lo; rc == 0; id++) {
            rc = s_ids_push(v, id, err);
            if (id == hi)
                break;
        }
        if (rc != 0)
            return rc;
        i = end + 1;
    }
    return 0;
}

/* A file with one id (or list) per line; blank lines and lines starting with '#' skipped. */
static int s_ids_parse_file(const char *path, s_ids_t *v, shoal_err_t *err)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return shoal_err_set(err, SHOAL_EIO, "--ids: cannot open %s: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    size_t lineno = 0;
    int rc = 0;
    while (rc == 0 && (got = getline(&line, &cap, f)) >= 0) {
        lineno++;
        size_t len = (size_t)got;
        while (len > 0 && isspace((unsigned char)line[len - 1]))
            len--;
        size_t start = 0;
        while (start < len && isspace((unsigned char)line[start]))
            start++;
        if (start == len || line[start] == '#')
            continue;
        char where[1100];
        snprintf(where, sizeof where, "%s line %zu", path, lineno);
        rc = s_ids_parse_list(line + start, len - start, where, v, err);
    }
    if (rc == 0 && ferror(f))
        rc = shoal_err_set(err, SHOAL_EIO, "--ids: reading %s failed", path);
    free(line);
    fclose(f);
    return rc;
}

/* The ids of --ids: a readable file's contents, else a list. */
static int s_ids_parse(const char *arg, s_ids_t *v, shoal_err_t *err)
{
    memset(v, 0, sizeof *v);
    struct stat st;
    int rc;
    if (stat(arg, &st) == 0 && S_ISREG(st.st_mode))
        rc = s_ids_parse_file(arg, v, err);
    else if (strspn(arg, "0123456789,- ") != strlen(arg))
        rc = s_bad(err, "--ids: \"%s\" is neither a file nor a list like 1,2,10-20", arg);
    else
        rc = s_ids_parse_list(arg, strlen(arg), "list", v, err);
    if (rc == 0 && v->n == 0)
        rc = s_bad(err, "--ids: \"%s\" holds no ids", arg);
    if (rc != 0) {
        free(v->ids);
        memset(v, 0, sizeof *v);
    }
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Commands                                                                 */
/* ------------------------------------------------------------------------ */

static const char s_help_create[] =
    "usage: shoal create NAME --dim D --metric l2|ip|cosine [--nlist N] [--M M]\n"
    "                    [--ef-construction E] [--replication R] [--write-quorum W]\n"
    "                    [--target-recall T] [--storage f32|f16|sq8]\n"
    "Creates collection NAME of D-dimensional vectors. --nlist: IVF lists (the\n"
    "coordinator's default if absent); --M, --ef-construction: HNSW parameters\n"
    "of the shards (their defaults if absent); --replication: copies of each\n"
    "list on distinct shards (1..3, at most the shards; default 1);\n"
    "--write-quorum: replicas that must hold a write before it is acknowledged\n"
    "(1..R, default 1); --target-recall: the recall@10 its searches aim at when\n"
    "they give neither --nprobe nor --ef (0 < T <= 1; once the coordinator has\n"
    "calibrated it; default: none, the collection's nprobe and the shards' ef).\n"
    "--storage: how the shards keep the vectors in RAM: f32 (default), f16 or\n"
    "sq8 (one byte a component; the float32 rows stay on disk for exact\n"
    "re-ranking; docs/operations.md, capacity).\n"
    "Train it before loading.\n";

static int s_cmd_create(s_cli_t *cli, int argc, char **argv, shoal_err_t *err)
{
    const char *dim_s, *metric_s, *nlist_s, *m_s, *efc_s, *rep_s, *wq_s, *tr_s, *st_s;
    s_opt_t opts[] = {{"--target-recall", NULL, &tr_s},
                      {"--storage", NULL, &st_s},
                      {"--dim", NULL, &dim_s},
                      {"--metric", NULL, &metric_s},
                      {"--nlist", NULL, &nlist_s},
                      {"--M", "-M", &m_s},
                      {"--ef-construction", NULL, &efc_s},
                      {"--replication", NULL, &rep_s},
                      {"--write-quorum", NULL, &wq_s}};
    const char *names[] = {"NAME"}, *pos[1];
    size_t npos;
    int rc = s_parse_args(argc, argv, opts, 9, names, 1, 1, pos, &npos, err);
    if (rc != 0)
        return rc;
    if (!dim_s)
        return s_bad(err, "--dim is required");
    quant_kind_t storage = QUANT_F32;
    if (st_s && quant_kind_parse(st_s, &storage, NULL) != 0)
        return s_bad(err, "--storage: expected f32, f16 or sq8, got \"%s\"", st_s);
    if (!metric_s)
        return s_bad(err, "--metric is required");
    size_t dim = 0;
    shoal_create_opts_t copts;
    memset(&copts, 0, sizeof copts);
    copts.storage = st_s;
    shoal_metric_t metric;
    if ((rc = s_opt_size("--dim", dim_s, 1, WIRE_MAX_DIM_DEFAULT, &dim, err)) != 0 ||
        (rc = s_opt_size("--nlist", nlist_s, 1, UINT32_MAX, &copts.nlist, err)) != 0 ||
        (rc = s_opt_size("--M", m_s, 2, UINT32_MAX, &copts.M, err)) != 0 ||
        (rc = s_opt_size("--ef-construction", efc_s, 1, UINT32_MAX, &copts.ef_construction, err)) !=
            0 ||
        (rc = s_opt_size("--replication", rep_s, 1, 3, &copts.replication, err)) != 0 ||
        (rc = s_opt_size("--write-quorum", wq_s, 1, 3, &copts.write_quorum, err)) != 0 ||
        (rc = s_opt_recall("--target-recall", tr_s, &copts.target_recall, err)) != 0)
        return rc;
    if (copts.write_quorum > (copts.replication ? copts.replication : 1))
        return s_bad(err, "--write-quorum %zu exceeds --replication %zu", copts.write_quorum,
                     copts.replication ? copts.replication : 1);
    if (shoal_metric_parse(metric_s, &metric) != 0)
        return s_bad(err, "--metric: expected l2, ip or cosine, got \"%s\"", metric_s);
    if ((rc = s_connect(cli, 0, err)) != 0)
        return rc;
    rc = shoal_client_create_ivf(cli->client, pos[0], dim, metric, &copts, err);
    if (rc == 0)
        printf("created %s dim=%zu metric=%s replication=%zu write_quorum=%zu storage=%s\n",
               pos[0], dim, shoal_metric_name(metric), copts.replication ? copts.replication : 1,
               copts.write_quorum ? copts.write_quorum : 1, quant_kind_name(storage));
    return rc;
}

static const char s_help_train[] =
    "usage: shoal train NAME SAMPLE_FILE [--max-rows N] [--seed S]\n"
    "                   [--init plusplus|random] [--max-iters I]\n"
    "Trains the IVF centroids of NAME on rows of SAMPLE_FILE (.fvecs, .bvecs or\n"
    ".npy) and places the lists on the shards. At most --max-rows rows are sent\n"
    "(default 100000), taken evenly spread over the file. Prints one line:\n"
    "rows=N seconds=S report={...what the coordinator reported...}.\n";

static int s_cmd_train(s_cli_t *cli, int argc, char **argv, shoal_err_t *err)
{
    const char *rows_s, *seed_s, *init_s, *iters_s;
    s_opt_t opts[] = {{"--max-rows", NULL, &rows_s},
                      {"--seed", NULL, &seed_s},
                      {"--init", NULL, &init_s},
                      {"--max-iters", NULL, &iters_s}};
    const char *names[] = {"NAME", "SAMPLE_FILE"}, *pos[2];
    size_t npos;
    int rc = s_parse_args(argc, argv, opts, 4, names, 2, 2, pos, &npos, err);
    if (rc != 0)
        return rc;
    size_t max_rows = S_TRAIN_ROWS_DEFAULT;
    shoal_train_opts_t topts = {0, 0, 0};
    if ((rc = s_opt_size("--max-rows", rows_s, 1, WIRE_MAX_BATCH_DEFAULT, &max_rows, err)) != 0 ||
        (rc = s_opt_size("--max-iters", iters_s, 1, UINT32_MAX, &topts.max_iters, err)) != 0)
        return rc;
    if (seed_s && (rc = s_parse_u64("--seed", seed_s, 1, UINT64_MAX, &topts.seed, err)) != 0)
        return rc;
    if (init_s && !strcmp(init_s, "random"))
        topts.random_init = 1;
    else if (init_s && strcmp(init_s, "plusplus") != 0)
        return s_bad(err, "--init: expected plusplus or random, got \"%s\"", init_s);

    vecfile_t *vf = vecfile_open(pos[1], err);
    if (!vf)
        return err->code;
    size_t count = vecfile_count(vf), dim = vecfile_dim(vf);
    size_t rows = count < max_rows ? count : max_rows;
    float *sample = NULL;
    char *text = NULL;
    if ((uint64_t)rows * dim * sizeof(float) > S_MESSAGE_BYTES_MAX) {
        rc = s_bad(err,
                   "a sample of %zu x %zu floats is over the %u-byte message limit; "
                   "lower --max-rows",
                   rows, dim, (unsigned)WIRE_MAX_MESSAGE_BYTES_DEFAULT);
        goto done;
    }
    sample = malloc(rows * dim * sizeof *sample);
    if (!sample) {
        rc = shoal_err_set(err, SHOAL_ENOMEM, "no memory for a sample of %zu x %zu", rows, dim);
        goto done;
    }
    if (rows == count) {
        rc = vecfile_read_f32(vf, 0, count, sample, err);
    } else {
        /* evenly spread rows, so a file sorted by anything still gives a fair sample */
        for (size_t i = 0; rc == 0 && i < rows; i++)
            rc = vecfile_read_f32(vf, (size_t)((uint64_t)i * count / rows), 1, sample + i * dim,
                                  err);
    }
    if (rc != 0)
        goto done;
    if ((rc = s_connect(cli, S_TIMEOUT_TRAIN_MS, err)) != 0)
        goto done;
    double t0 = timing_now();
    rc = shoal_client_train(cli->client, pos[0], sample, rows, dim, &topts, &text, err);
    if (rc == 0) {
        printf("rows=%zu seconds=%.3f report=", rows, timing_now() - t0);
        s_print_one_line(stdout, text);
        putchar('\n');
    }
done:
    free(text);
    free(sample);
    vecfile_close(&vf);
    return rc;
}

static const char s_help_load[] =
    "usage: shoal load NAME FILE [--ids-start N] [--batch B]\n"
    "Inserts (upserts) every row of FILE (.fvecs, .bvecs or .npy) into NAME with\n"
    "id = ids-start (default 0) + row number, B rows per request (default 10000).\n"
    "Progress on stderr (a bar on a terminal); last line on stdout:\n"
    "loaded=N seconds=S vps=R.\n";

static int s_cmd_load(s_cli_t *cli, int argc, char **argv, shoal_err_t *err)
{
    const char *start_s, *batch_s;
    s_opt_t opts[] = {{"--ids-start", NULL, &start_s}, {"--batch", NULL, &batch_s}};
    const char *names[] = {"NAME", "FILE"}, *pos[2];
    size_t npos;
    int rc = s_parse_args(argc, argv, opts, 2, names, 2, 2, pos, &npos, err);
    if (rc != 0)
        return rc;
    uint64_t ids_start = 0;
    size_t batch = S_LOAD_BATCH_DEFAULT;
    if ((start_s &&
         (rc = s_parse_u64("--ids-start", start_s, 0, TOPK_ID_NONE - 1, &ids_start, err)) != 0) ||
        (rc = s_opt_size("--batch", batch_s, 1, WIRE_MAX_BATCH_DEFAULT, &batch, err)) != 0)
        return rc;

    vecfile_t *vf = vecfile_open(pos[1], err);
    if (!vf)
        return err->code;
    size_t count = vecfile_count(vf), dim = vecfile_dim(vf);
    float *buf = NULL;
    uint64_t *ids = NULL;
    s_progress_t progress;
    s_progress_init(&progress, "load", "vectors");
    if (count > TOPK_ID_NONE - ids_start) {
        rc = s_bad(err, "%zu rows from --ids-start %" PRIu64 " pass the largest id %" PRIu64, count,
                   ids_start, (uint64_t)TOPK_ID_NONE - 1);
        goto done;
    }
    if (batch > count)
        batch = count;
    if ((uint64_t)batch * (dim * sizeof(float) + sizeof(uint64_t)) > S_MESSAGE_BYTES_MAX) {
        rc = s_bad(err, "--batch %zu of dim %zu is over the %u-byte message limit", batch, dim,
                   (unsigned)WIRE_MAX_MESSAGE_BYTES_DEFAULT);
        goto done;
    }
    const float *contiguous = vecfile_contiguous_f32(vf);
    ids = malloc(batch * sizeof *ids);
    if (!contiguous)
        buf = malloc(batch * dim * sizeof *buf);
    if (!ids || (!contiguous && !buf)) {
        rc = shoal_err_set(err, SHOAL_ENOMEM, "no memory for a batch of %zu x %zu", batch, dim);
        goto done;
    }
    if ((rc = s_connect(cli, S_TIMEOUT_LOAD_MS, err)) != 0)
        goto done;
    progress.start = timing_now();
    for (size_t at = 0; at < count; at += batch) {
        size_t n = count - at < batch ? count - at : batch;
        const float *vecs = contiguous ? contiguous + at * dim : buf;
        if (!contiguous && (rc = vecfile_read_f32(vf, at, n, buf, err)) != 0)
            goto done;
        for (size_t i = 0; i < n; i++)
            ids[i] = ids_start + at + i;
        rc = shoal_client_insert(cli->client, pos[0], ids, vecs, n, dim, NULL, err);
        if (rc != 0) {
            shoal_err_prefix(err, "rows %zu..%zu of %s", at, at + n - 1, pos[1]);
            goto done;
        }
        s_progress_update(&progress, at + n, count, at + n == count);
    }
    double seconds = timing_now() - progress.start;
    printf("loaded=%zu seconds=%.3f vps=%.1f\n", count, seconds,
           seconds > 0 ? (double)count / seconds : 0.0);
done:
    if (rc != 0)
        s_progress_abort(&progress);
    free(ids);
    free(buf);
    vecfile_close(&vf);
    return rc;
}

/* The option texts search and knn-graph share, and each one's row count option. */
typedef struct {
    const char *k, *nprobe, *ef, *mode; /* -k, --nprobe, --ef, --mode */
    const char *recall;                 /* --recall (search only; NULL for knn-graph) */
    const char *rows;                   /* --batch (search) or --chunk (knn-graph) */
    const char *deadline;               /* --deadline-ms */
} s_search_args_t;

/* Parses a's values into sopts and *rows (rows_name names a->rows in messages). */
static int s_search_args_parse(const s_search_args_t *a, const char *rows_name, size_t *rows,
                               shoal_search_opts_t *sopts, shoal_err_t *err)
{
    int rc;
    if ((rc = s_opt_size("-k", a->k, 1, WIRE_MAX_K_DEFAULT, &sopts->k, err)) != 0 ||
        (rc = s_opt_size("--nprobe", a->nprobe, 1, UINT32_MAX, &sopts->nprobe, err)) != 0 ||
        (rc = s_opt_size("--ef", a->ef, 1, UINT32_MAX, &sopts->ef, err)) != 0 ||
        (rc = s_opt_size(rows_name, a->rows, 1, WIRE_MAX_BATCH_DEFAULT, rows, err)) != 0 ||
        (rc = s_opt_size("--deadline-ms", a->deadline, 1, S_TIMEOUT_MS_MAX, &sopts->deadline_ms,
                         err)) != 0 ||
        (rc = s_opt_recall("--recall", a->recall, &sopts->recall, err)) != 0)
        return rc;
    return s_parse_mode(a->mode, &sopts->mode, err);
}

static const char s_help_search[] =
    "usage: shoal search NAME QUERY_FILE [-k K] [--nprobe N] [--ef E] [--recall R]\n"
    "                    [--mode auto|hnsw|exact] [--batch B] [--deadline-ms D]\n"
    "                    [--gt GT.ivecs] [--out OUT.ivecs]\n"
    "Searches NAME with every row of QUERY_FILE, B queries per request (default\n"
    "1, so the latency percentiles are per query; with B > 1 they are per\n"
    "request). Prints one line:\n"
    "  queries=N k=K [recall@K=R] qps=Q p50_ms=.. p95_ms=.. p99_ms=..\n"
    "  shards_per_query=S [nprobe=N ef=E calibrated_recall=C]\n"
    "  [partial=1 missing_shards=a,b]\n"
    "--recall R (0 < R <= 1): the coordinator picks nprobe and ef from its\n"
    "calibration of NAME to reach recall@10 R (the line then says which ran and\n"
    "the recall they reached there); it overrides --nprobe and --ef.\n"
    "recall@K only with --gt (an .ivecs of true neighbour ids per query);\n"
    "shards_per_query = shards asked, summed over queries, / queries. A partial\n"
    "answer (shards that missed the deadline) still exits 0. --out writes the\n"
    "result ids as .ivecs, K per row, -1 for padding. Defaults: K=10, nprobe,\n"
    "ef and the deadline from the server, mode auto.\n";

static int s_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted values (n >= 1). */
static double s_percentile(const double *sorted, size_t n, double p)
{
    size_t rank = (size_t)ceil(p / 100.0 * (double)n);
    return sorted[rank > 0 ? rank - 1 : 0];
}

static int s_write_result_ivecs(const char *path, const uint64_t *ids, size_t n, size_t k,
                                shoal_err_t *err)
{
    int32_t *rows = malloc(n * k * sizeof *rows + 1);
    if (!rows)
        return shoal_err_set(err, SHOAL_ENOMEM, "--out: no memory for %zu x %zu ids", n, k);
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n * k; i++)
        rc = s_id_to_i32(ids[i], &rows[i], path, err);
    if (rc == 0)
        rc = vecfile_write_ivecs(path, rows, n, k, err);
    free(rows);
    return rc;
}

/* Loads --gt and checks it against the queries: a row per query, at least k ids per row. */
static int s_search_load_gt(const char *gt_path, const char *query_path, size_t nq, size_t k,
                            int32_t **truth, size_t *gdim, shoal_err_t *err)
{
    size_t gn = 0;
    *truth = vecfile_load_i32(gt_path, &gn, gdim, err);
    if (!*truth)
        return shoal_err_prefix(err, "--gt");
    if (gn != nq)
        return s_bad(err, "--gt %s has %zu rows, %s has %zu queries", gt_path, gn, query_path, nq);
    if (*gdim < k)
        return s_bad(err, "--gt %s has %zu ids per row, fewer than k=%zu", gt_path, *gdim, k);
    return 0;
}

/* What search's requests said besides their ids. */
typedef struct {
    char missing[S_MISSING_MAX]; /* union of the shards that missed a deadline */
    int partial;                 /* 1 when any answer was partial */
    uint64_t fanout;             /* shards asked, summed over queries */
    shoal_search_info_t last;    /* the last request's info (calibrated nprobe, ef) */
} s_search_tally_t;

/* Sends the queries batch rows per request, timing each: ids into all_ids, ms into lat. */
static int s_search_requests(s_cli_t *cli, const char *name, const float *queries, size_t nq,
                             size_t dim, size_t batch, const shoal_search_opts_t *sopts,
                             uint64_t *all_ids, double *lat, s_search_tally_t *t, shoal_err_t *err)
{
    size_t nreq = (nq + batch - 1) / batch;
    for (size_t r = 0; r < nreq; r++) {
        size_t at = r * batch, n = nq - at < batch ? nq - at : batch;
        shoal_search_info_t info;
        uint64_t *ids = NULL;
        double t0 = timing_now();
        int rc = shoal_client_search_ex(cli->client, name, queries + at * dim, n, dim, sopts, &ids,
                                        NULL, &info, err);
        lat[r] = (timing_now() - t0) * 1000.0;
        if (rc != 0) {
            free(ids);
            shoal_err_prefix(err, "queries %zu..%zu", at, at + n - 1);
            return rc;
        }
        memcpy(all_ids + at * sopts->k, ids, n * sopts->k * sizeof *ids);
        free(ids);
        t->fanout += info.fanout;
        t->last = info;
        if (info.partial) {
            t->partial = 1;
            s_union_add(t->missing, sizeof t->missing, info.missing);
        }
    }
    return 0;
}

/* search's one line: recall (with --gt), throughput, latency percentiles, fan-out, calibration. */
static void s_search_print(size_t nq, size_t k, const uint64_t *all_ids, const int32_t *truth,
                           size_t gdim, double seconds, const double *lat, size_t nreq,
                           const s_search_tally_t *t)
{
    printf("queries=%zu k=%zu", nq, k);
    if (truth)
        printf(" recall@%zu=%.4f", k, gt_recall(all_ids, k, truth, gdim, nq, k));
    printf(" qps=%.1f p50_ms=%.3f p95_ms=%.3f p99_ms=%.3f shards_per_query=%.2f",
           seconds > 0 ? (double)nq / seconds : 0.0, s_percentile(lat, nreq, 50),
           s_percentile(lat, nreq, 95), s_percentile(lat, nreq, 99),
           (double)t->fanout / (double)nq);
    if (t->last.recall > 0)
        printf(" nprobe=%u ef=%u calibrated_recall=%.4f", t->last.nprobe, t->last.ef,
               t->last.recall);
    if (t->partial)
        printf(" partial=1 missing_shards=%s", t->missing[0] ? t->missing : "?");
    putchar('\n');
}

static int s_cmd_search(s_cli_t *cli, int argc, char **argv, shoal_err_t *err)
{
    const char *gt_path, *out_path;
    s_search_args_t a;
    memset(&a, 0, sizeof a);
    s_opt_t opts[] = {{"-k", "--k", &a.k},        {"--nprobe", NULL, &a.nprobe},
                      {"--ef", NULL, &a.ef},      {"--mode", NULL, &a.mode},
                      {"--batch", NULL, &a.rows}, {"--deadline-ms", NULL, &a.deadline},
                      {"--gt", NULL, &gt_path},   {"--out", NULL, &out_path},
                      {"--recall", NULL, &a.recall}};
    const char *names[] = {"NAME", "QUERY_FILE"}, *pos[2];
    size_t npos;
    int rc = s_parse_args(argc, argv, opts, 9, names, 2, 2, pos, &npos, err);
    if (rc != 0)
        return rc;
    shoal_search_opts_t sopts;
    memset(&sopts, 0, sizeof sopts);
    sopts.k = S_SEARCH_K_DEFAULT;
    size_t batch = 1;
    if ((rc = s_search_args_parse(&a, "--batch", &batch, &sopts, err)) != 0)
        return rc;

    size_t nq = 0, dim = 0, gdim = 0;
    int32_t *truth = NULL;
    uint64_t *all_ids = NULL;
    double *lat = NULL;
    float *queries = vecfile_load_f32(pos[1], &nq, &dim, err);
    if (!queries)
        return err->code;
    if (gt_path && (rc = s_search_load_gt(gt_path, pos[1], nq, sopts.k, &truth, &gdim, err)) != 0)
        goto done;
    if (batch > nq)
        batch = nq;
    if ((uint64_t)batch * dim * sizeof(float) > S_MESSAGE_BYTES_MAX) {
        rc = s_bad(err, "--batch %zu of dim %zu is over the %u-byte message limit", batch, dim,
                   (unsigned)WIRE_MAX_MESSAGE_BYTES_DEFAULT);
        goto done;
    }
    size_t nreq = (nq + batch - 1) / batch;
    all_ids = malloc(nq * sopts.k * sizeof *all_ids);
    lat = malloc(nreq * sizeof *lat);
    if (!all_ids || !lat) {
        rc = shoal_err_set(err, SHOAL_ENOMEM, "no memory for %zu x %zu results", nq, sopts.k);
        goto done;
    }
    if ((rc = s_connect(cli, 0, err)) != 0)
        goto done;

    s_search_tally_t t;
    memset(&t, 0, sizeof t);
    double t0 = timing_now();
    if ((rc = s_search_requests(cli, pos[0], queries, nq, dim, batch, &sopts, all_ids, lat, &t,
                                err)) != 0)
        goto done;
    double seconds = timing_now() - t0;
    qsort(lat, nreq, sizeof *lat, s_cmp_double);
    if (out_path && (rc = s_write_result_ivecs(out_path, all_ids, nq, sopts.k, err)) != 0)
        goto done;
    s_search_print(nq, sopts.k, all_ids, truth, gdim, seconds, lat, nreq, &t);
done:
    free(lat);
    free(all_ids);
    free(truth);
    free(queries);
    return rc;
}

/*
 * Parses "NAME --ids FILE_OR_LIST" (delete, get): *name (borrowed from argv)
 * and the ids (v->ids is the caller's to free when this returned 0).
 */
static int s_parse_name_ids(int argc, char **argv, const char **name, s_ids_t *v, shoal_err_t *err)
{
    const char *ids_s;
    s_opt_t opts[] = {{"--ids", NULL, &ids_s}};
    const char *names[] = {"NAME"}, *pos[1];
    size_t npos;
    int rc = s_parse_args(argc, argv, opts, 1, names, 1, 1, pos, &npos, err);
    if (rc != 0)
        return rc;
    if (!ids_s)
        return s_bad(err, "--ids is required");
    if ((rc = s_ids_parse(ids_s, v, err)) != 0)
        return rc;
    *name = pos[0];
    return 0;
}

static const char s_help_delete[] =
    "usage: shoal delete NAME --ids FILE_OR_LIST\n"
    "Deletes ids from NAME. FILE_OR_LIST is a file with one id per line (blank\n"
    "lines and lines starting with # are skipped), or a list such as\n"
    "1,2,3,10-20 (ranges inclusive). Prints deleted=N: how many existed.\n";

static int s_cmd_delete(s_cli_t *cli, int argc, char **argv, shoal_err_t *err)
{
    const char *name;
    s_ids_t v;
    int rc = s_parse_name_ids(argc, argv, &name, &v, err);
    if (rc != 0)
        return rc;
    size_t total = 0;
    if ((rc = s_connect(cli, 0, err)) == 0) {
        for (size_t at = 0; rc == 0 && at < v.n; at += S_DELETE_BATCH) {
            size_t n = v.n - at < S_DELETE_BATCH ? v.n - at : S_DELETE_BATCH, deleted = 0;
            rc = shoal_client_delete(cli->client, name, v.ids + at, n, &deleted, NULL, err);
            total += deleted;
        }
    }
    if (rc == 0)
        printf("deleted=%zu\n", total);
    free(v.ids);
    return rc;
}

static const char s_help_get[] =
    "usage: shoal get NAME --ids LIST\n"
    "Prints, per id (LIST or file as for delete), \"ID found=0\" or \"ID found=1\"\n"
    "followed by the stored vector. For debugging.\n";

static int s_cmd_get(s_cli_t *cli, int argc, char **argv, shoal_err_t *err)
{
    const char *name;
    s_ids_t v;
    int rc = s_parse_name_ids(argc, argv, &name, &v, err);
    if (rc != 0)
        return rc;
    if (v.n > S_GET_IDS_MAX) {
        free(v.ids);
        return s_bad(err, "--ids: %zu ids, get takes at most %d", v.n, S_GET_IDS_MAX);
    }
    uint8_t *found = NULL;
    float *vecs = NULL;
    size_t dim = 0;
    if ((rc = s_connect(cli, 0, err)) == 0)
        rc = shoal_client_get(cli->client, name, v.ids, v.n, &found, &vecs, &dim, err);
    for (size_t i = 0; rc == 0 && i < v.n; i++) {
        printf("%" PRIu64 " found=%d", v.ids[i], found[i] ? 1 : 0);
        for (size_t j = 0; found[i] && j < dim; j++)
            printf(" %.9g", (double)vecs[i * dim + j]);
        putchar('\n');
    }
    free(found);
    free(vecs);
    free(v.ids);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Reading info maps; the coordinator's list moves                          */
/* ------------------------------------------------------------------------ */

/* The number at path in an info map, or fallback when it is absent or not a number. */
static double s_info_num(const void *info, size_t len, const char *path, double fallback)
{
    double v = fallback;
    return wire_info_lookup(info, len, path, &v) == 0 ? v : fallback;
}

/* As s_info_num for a count: negative or absent reads as 0. */
static uint64_t s_info_count(const void *info, size_t len, const char *path)
{
    double v = s_info_num(info, len, path, 0.0);
    return v > 0 ? (uint64_t)v : 0;
}

/* The string at path into buf, or "?" when it is absent, not a string or too long. */
static const char *s_info_str(const void *info, size_t len, const char *path, char *buf, size_t cap)
{
    if (wire_info_lookup_str(info, len, path, buf, cap) != 0)
        snprintf(buf, cap, "?");
    return buf;
}

/* The coordinator's stats "moves" map (docs/protocol.md 11.9). */
typedef struct {
    uint64_t pending;                 /* moves waiting to start */
    uint64_t running;                 /* 0 or 1 */
    uint64_t done;                    /* moves finished since the coordinator started */
    uint64_t aborted;                 /* moves given up since then */
    uint64_t rows_copied;             /* rows copied by moves since then */
    int has_current;                  /* the fields below describe the running move */
    char coll[WIRE_NAME_MAX + 1];     /* its collection */
    uint64_t list, replica;           /* its list and replica */
    char from[WIRE_ENDPOINT_MAX + 1]; /* the shard it leaves */
    char to[WIRE_ENDPOINT_MAX + 1];   /* the shard it goes to */
    uint64_t copied, vectors;         /* rows copied so far, of vectors */
    double eta_s;                     /* the coordinator's estimate, seconds (< 0: none) */
} s_moves_t;

/* Reads stats' "moves" map; SHOAL_EUNSUPPORTED when the stats have none. */
static int s_moves_read(const void *info, size_t len, s_moves_t *m, shoal_err_t *err)
{
    memset(m, 0, sizeof *m);
    size_t entries = 0;
    if (wire_info_lookup_len(info, len, "moves", &entries) != 0)
        return shoal_err_set(err, SHOAL_EUNSUPPORTED,
                             "the server's stats have no \"moves\" map (not a coordinator, or "
                             "one that predates shard moves)");
    m->pending = s_info_count(info, len, "moves.pending");
    m->running = s_info_count(info, len, "moves.running");
    m->done = s_info_count(info, len, "moves.done");
    m->aborted = s_info_count(info, len, "moves.aborted");
    m->rows_copied = s_info_count(info, len, "moves.rows_copied");
    m->has_current =
        wire_info_lookup_str(info, len, "moves.current.coll", m->coll, sizeof m->coll) == 0;
    if (m->has_current) {
        m->list = s_info_count(info, len, "moves.current.list");
        m->replica = s_info_count(info, len, "moves.current.replica");
        s_info_str(info, len, "moves.current.from", m->from, sizeof m->from);
        s_info_str(info, len, "moves.current.to", m->to, sizeof m->to);
        m->copied = s_info_count(info, len, "moves.current.copied");
        m->vectors = s_info_count(info, len, "moves.current.vectors");
        m->eta_s = s_info_num(info, len, "moves.current.eta_s", -1.0);
    }
    return 0;
}

/* Asks for the server's stats and reads their "moves" map into *m. */
static int s_moves_fetch(shoal_client_t *client, s_moves_t *m, shoal_err_t *err)
{
    void *info = NULL;
    size_t len = 0;
    int rc = shoal_client_stats(client, NULL, NULL, &info, &len, err);
    if (rc == 0)
        rc = s_moves_read(info, len, m, err);
    free(info);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Status                                                                   */
/* ------------------------------------------------------------------------ */

static const char s_help_status[] =
    "usage: shoal status [NAME]\n"
    "Prints the server's stats (or NAME's) as one line of JSON-like text. While\n"
    "the coordinator moves lists (shard drain, rebalance), a second line says so:\n"
    "  moves: running COLL LIST/REPLICA FROM -> TO COPIED/VECTORS (eta Xs),\n"
    "  P pending, D done\n";

/* status's second line: the moves under way, when there are any. */
static void s_print_moves_line(const void *info, size_t len)
{
    s_moves_t m;
    if (s_moves_read(info, len, &m, NULL) != 0 || (m.pending == 0 && m.running == 0))
        return;
    fputs("moves: ", stdout);
    if (m.has_current) {
        printf("running %s %" PRIu64 "/%" PRIu64 " %s -> %s %" PRIu64 "/%" PRIu64, m.coll, m.list,
               m.replica, m.from, m.to, m.copied, m.vectors);
        if (m.eta_s >= 0)
            printf(" (eta %.0fs)", m.eta_s);
        fputs(", ", stdout);
    }
    printf("%" PRIu64 " pending, %" PRIu64 " done\n", m.pending, m.done);
}

static int s_cmd_status(s_cli_t *cli, int argc, char **argv, shoal_err_t *err)
{
    const char *names[] = {"NAME"}, *pos[1] = {NULL};
    size_t npos;
    int rc = s_parse_args(argc, argv, NULL, 0, names, 0, 1, pos, &npos, err);
    if (rc != 0)
        return rc;
    char *text = NULL;
    void *info = NULL;
    size_t len = 0;
    if ((rc = s_connect(cli, 0, err)) == 0)
        rc = shoal_client_stats(cli->client, npos ? pos[0] : NULL, &text, &info, &len, err);
    if (rc == 0) {
        s_print_one_line(stdout, text);
        putchar('\n');
        if (!npos)
            s_print_moves_line(info, len);
    }
    free(info);
    free(text);
    return rc;
}

static const char s_help_check[] =
    "usage: shoal check NAME\n"
    "Compares the replicas of every IVF list of NAME: asks each shard for its\n"
    "per-list counts (list_counts) and the coordinator for the placement. Prints\n"
    "  lists=N replicas=R agree=A differ=D stale=S vectors=V\n"
    "(V: vectors over all replicas) and one line per list whose up-to-date\n"
    "replicas differ. A replica marked stale is being repaired: counted in S, not\n"
    "compared. Exit status 1 when a list differs or a shard does not answer.\n";

/* stats lookups of collection coll: "collections.<coll>.<rest>" (fmt'd). */
static double s_coll_num(const void *info, size_t len, const char *coll, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static double s_coll_num(const void *info, size_t len, const char *coll, const char *fmt, ...)
{
    char rest[128], path[WIRE_NAME_MAX + 160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(rest, sizeof rest, fmt, ap);
    va_end(ap);
    snprintf(path, sizeof path, "collections.%s.%s", coll, rest);
    double v = -1;
    return wire_info_lookup(info, len, path, &v) == 0 ? v : -1;
}

/* What check knows of one collection while it compares replicas. */
typedef struct {
    const void *info; /* the coordinator's stats of coll (msgpack map) */
    size_t len;       /* its bytes */
    const char *coll; /* the collection, borrowed from argv */
    size_t nlist;     /* its IVF lists */
    size_t R;         /* replicas per list */
    size_t nshards;   /* shards the stats list */
    uint64_t *counts; /* nshards x nlist: each shard's count of each list */
    uint8_t *named;   /* nshards: 1 where the placement names the shard */
} s_check_t;

/* How many shards coll's stats list ("shards.<i>.endpoint" from 0 up). */
static size_t s_check_count_shards(const s_check_t *c)
{
    char ep[256];
    char path[WIRE_NAME_MAX + 64];
    size_t nshards = 0;
    for (;; nshards++) {
        snprintf(path, sizeof path, "collections.%s.shards.%zu.endpoint", c->coll, nshards);
        if (wire_info_lookup_str(c->info, c->len, path, ep, sizeof ep) != 0)
            break;
    }
    return nshards;
}

/* Marks in c->named the shards the placement names (a drained or removed one holds none). */
static void s_check_mark_named(s_check_t *c)
{
    for (size_t l = 0; l < c->nlist; l++)
        for (size_t r = 0; r < c->R; r++) {
            double sd = s_coll_num(c->info, c->len, c->coll, "placement.%zu.%zu", l, r);
            if (sd >= 0 && (size_t)sd < c->nshards)
                c->named[(size_t)sd] = 1;
        }
}

/* Asks each named shard for its per-list counts (list_counts) into c->counts. */
static int s_check_fetch_counts(s_cli_t *cli, s_check_t *c, shoal_err_t *err)
{
    char ep[256];
    char path[WIRE_NAME_MAX + 64];
    int rc = 0;
    for (size_t s = 0; rc == 0 && s < c->nshards; s++) {
        if (!c->named[s])
            continue;
        snprintf(path, sizeof path, "collections.%s.shards.%zu.endpoint", c->coll, s);
        (void)wire_info_lookup_str(c->info, c->len, path, ep, sizeof ep);
        shoal_client_t *sc =
            s_client_new(cli, ep, cli->timeout_ms > 0 ? cli->timeout_ms : 10000, err);
        uint32_t *lists = NULL;
        uint64_t *cnt = NULL;
        size_t n = 0;
        rc = sc ? shoal_client_list_counts(sc, c->coll, &lists, &cnt, &n, err) : err->code;
        if (rc != 0)
            shoal_err_prefix(err, "shard %s", ep);
        for (size_t i = 0; rc == 0 && i < n; i++)
            if (lists[i] < c->nlist)
                c->counts[s * c->nlist + lists[i]] = cnt[i];
        free(lists);
        free(cnt);
        shoal_client_destroy(&sc);
    }
    return rc;
}

/* check's totals over the lists. */
typedef struct {
    size_t agree;     /* lists whose up-to-date replicas hold the same count */
    size_t differ;    /* lists whose up-to-date replicas do not */
    size_t stale;     /* replicas marked stale (being repaired), not compared */
    uint64_t vectors; /* vectors over all replicas */
} s_check_tally_t;

/* Prints the line of list l, whose up-to-date replicas differ: each replica's shard and count. */
static void s_check_print_differ(const s_check_t *c, size_t l, uint64_t mask)
{
    printf("list %zu differs:", l);
    for (size_t r = 0; r < c->R; r++) {
        size_t sd = (size_t)s_coll_num(c->info, c->len, c->coll, "placement.%zu.%zu", l, r);
        printf(" shard %zu%s %" PRIu64, sd, mask >> r & 1 ? " (stale)" : "",
               c->counts[sd * c->nlist + l]);
    }
    printf("\n");
}

/* Compares each list's up-to-date replicas' counts, printing the lists that differ. */
static int s_check_compare(const s_check_t *c, s_check_tally_t *t, shoal_err_t *err)
{
    int rc = 0;
    for (size_t l = 0; rc == 0 && l < c->nlist; l++) {
        uint64_t mask = (uint64_t)s_coll_num(c->info, c->len, c->coll, "placement.%zu.stale", l);
        uint64_t first = 0;
        int have = 0, same = 1;
        for (size_t r = 0; r < c->R; r++) {
            double sd = s_coll_num(c->info, c->len, c->coll, "placement.%zu.%zu", l, r);
            if (sd < 0 || (size_t)sd >= c->nshards) {
                rc = shoal_err_set(err, SHOAL_EPROTO, "check: no placement for list %zu", l);
                break;
            }
            uint64_t n = c->counts[(size_t)sd * c->nlist + l];
            t->vectors += n;
            if (mask >> r & 1) {
                t->stale++;
                continue;
            }
            if (have && n != first)
                same = 0;
            first = have ? first : n;
            have = 1;
        }
        if (rc != 0)
            break;
        if (same) {
            t->agree++;
            continue;
        }
        t->differ++;
        s_check_print_differ(c, l, mask);
    }
    return rc;
}

static int s_cmd_check(s_cli_t *cli, int argc, char **argv, shoal_err_t *err)
{
    const char *names[] = {"NAME"}, *pos[1];
    size_t npos;
    int rc = s_parse_args(argc, argv, NULL, 0, names, 1, 1, pos, &npos, err);
    if (rc != 0)
        return rc;
    s_check_t c;
    memset(&c, 0, sizeof c);
    c.coll = pos[0];
    void *info = NULL;
    size_t len = 0;
    if ((rc = s_connect(cli, 0, err)) == 0)
        rc = shoal_client_stats(cli->client, c.coll, NULL, &info, &len, err);
    if (rc != 0)
        return rc;
    c.info = info;
    c.len = len;
    double nlist_d = s_coll_num(info, len, c.coll, "nlist");
    double R_d = s_coll_num(info, len, c.coll, "replication");
    if (s_coll_num(info, len, c.coll, "trained") != 1 || nlist_d < 1 || R_d < 1) {
        free(info);
        return shoal_err_set(err, SHOAL_EINVAL, "check: \"%s\" is not trained (no placement)",
                             c.coll);
    }
    c.nlist = (size_t)nlist_d;
    c.R = (size_t)R_d;
    c.nshards = s_check_count_shards(&c);
    c.counts = calloc((c.nshards ? c.nshards : 1) * c.nlist, sizeof *c.counts);
    if (!c.counts) {
        free(info);
        return shoal_err_set(err, SHOAL_ENOMEM, "check: out of memory");
    }
    /* Only the shards the placement names are asked (a drained or removed one holds none). */
    c.named = calloc(c.nshards ? c.nshards : 1, 1);
    if (!c.named) {
        free(c.counts);
        free(info);
        return shoal_err_set(err, SHOAL_ENOMEM, "check: out of memory");
    }
    s_check_mark_named(&c);
    s_check_tally_t t;
    memset(&t, 0, sizeof t);
    rc = s_check_fetch_counts(cli, &c, err);
    if (rc == 0)
        rc = s_check_compare(&c, &t, err);
    if (rc == 0)
        printf("lists=%zu replicas=%zu agree=%zu differ=%zu stale=%zu vectors=%" PRIu64 "\n",
               c.nlist, c.R, t.agree, t.differ, t.stale, t.vectors);
    free(c.counts);
    free(c.named);
    free(info);
    if (rc == 0 && t.differ)
        rc = shoal_err_set(err, SHOAL_EINTERNAL, "check: %zu list(s) differ between replicas",
                           t.differ);
    return rc;
}

static const char s_help_knn[] =
    "usage: shoal knn-graph NAME -k K --out FILE.ivecs [--nprobe N] [--ef E]\n"
    "                       [--mode auto|hnsw|exact] [--chunk C] [--deadline-ms D]\n"
    "Fetches the k-nearest-neighbour graph of every stored vector of NAME, C rows\n"
    "per request (default: the coordinator's), and writes it as it arrives:\n"
    "FILE.ivecs gets one row of K neighbour ids per stored vector (-1 padding),\n"
    "and FILE.ivecs.rows (OUT with \".rows\" appended) the id of the vector each\n"
    "row belongs to, one decimal per line, in the same order. Progress on stderr;\n"
    "last line on stdout: rows=N seconds=S [partial=1 missing_shards=a,b].\n";

/* The writers of knn-graph's two outputs. */
typedef struct {
    vecfile_writer_t *graph; /* FILE.ivecs (via FILE.ivecs.tmp) */
    FILE *rows;              /* FILE.ivecs.rows.tmp */
    char rows_tmp[4096];     /* its name */
    char rows_path[4096];    /* its final name */
    int32_t *buf;            /* one chunk's ids as int32 */
    size_t buf_cap;          /* in ids */
} s_knn_out_t;

static int s_knn_write(s_knn_out_t *o, const shoal_knn_chunk_t *c, const char *path,
                       shoal_err_t *err)
{
    size_t need = c->n * c->k;
    if (need > o->buf_cap) {
        int32_t *buf = realloc(o->buf, need * sizeof *buf);
        if (!buf)
            return shoal_err_set(err, SHOAL_ENOMEM, "no memory for a chunk of %zu rows", c->n);
        o->buf = buf;
        o->buf_cap = need;
    }
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < need; i++)
        rc = s_id_to_i32(c->ids[i], &o->buf[i], path, err);
    if (rc == 0 && c->n)
        rc = vecfile_writer_append(o->graph, o->buf, c->n, err);
    for (size_t i = 0; rc == 0 && i < c->n; i++)
        if (fprintf(o->rows, "%" PRIu64 "\n", c->qids[i]) < 0)
            rc = shoal_err_set(err, SHOAL_EIO, "writing %s: %s", o->rows_tmp, strerror(errno));
    return rc;
}

/* What knn-graph's requests said besides their rows. */
typedef struct {
    uint64_t rows;               /* rows written so far */
    int partial;                 /* 1 when any chunk was partial */
    char missing[S_MISSING_MAX]; /* union of the shards that missed a deadline */
} s_knn_tally_t;

/* Requests the graph chunk after chunk (following the cursor) and writes each as it arrives. */
static int s_knn_fetch(s_cli_t *cli, const char *name, const shoal_search_opts_t *sopts,
                       size_t chunk_rows, s_knn_out_t *o, const char *out_path,
                       shoal_knn_chunk_t *chunk, s_progress_t *progress, s_knn_tally_t *t,
                       shoal_err_t *err)
{
    char cursor[WIRE_CURSOR_MAX + 1] = "";
    uint64_t total = 0;
    int rc;
    do {
        rc = shoal_client_knn_graph(cli->client, name, sopts, chunk_rows, cursor, chunk, err);
        if (rc != 0) {
            if (t->rows > 0)
                shoal_err_prefix(err, "after %" PRIu64 " rows", t->rows);
            return rc;
        }
        if ((rc = s_knn_write(o, chunk, out_path, err)) != 0)
            return rc;
        if (chunk->n == 0 && chunk->cursor[0] && !strcmp(chunk->cursor, cursor))
            return shoal_err_set(err, SHOAL_EPROTO,
                                 "the coordinator sent cursor \"%s\" back without rows", cursor);
        t->rows += chunk->n;
        total = chunk->total;
        if (chunk->partial) {
            t->partial = 1;
            s_union_add(t->missing, sizeof t->missing, chunk->missing);
        }
        snprintf(cursor, sizeof cursor, "%s", chunk->cursor);
        shoal_knn_chunk_fini(chunk);
        s_progress_update(progress, t->rows, total > t->rows ? total : t->rows, cursor[0] == '\0');
    } while (cursor[0]);
    return 0;
}

/* Closes both outputs and puts FILE.ivecs.rows in place (the writer renames FILE.ivecs). */
static int s_knn_finish(s_knn_out_t *o, shoal_err_t *err)
{
    if (fclose(o->rows) != 0) {
        o->rows = NULL;
        return shoal_err_set(err, SHOAL_EIO, "writing %s: %s", o->rows_tmp, strerror(errno));
    }
    o->rows = NULL;
    int rc = vecfile_writer_close(&o->graph, err);
    if (rc != 0)
        return rc;
    if (rename(o->rows_tmp, o->rows_path) != 0)
        return shoal_err_set(err, SHOAL_EIO, "renaming %s to %s: %s", o->rows_tmp, o->rows_path,
                             strerror(errno));
    return 0;
}

static int s_cmd_knn(s_cli_t *cli, int argc, char **argv, shoal_err_t *err)
{
    const char *out_path;
    s_search_args_t a;
    memset(&a, 0, sizeof a);
    s_opt_t opts[] = {{"-k", "--k", &a.k},
                      {"--out", NULL, &out_path},
                      {"--nprobe", NULL, &a.nprobe},
                      {"--ef", NULL, &a.ef},
                      {"--mode", NULL, &a.mode},
                      {"--chunk", NULL, &a.rows},
                      {"--deadline-ms", NULL, &a.deadline}};
    const char *names[] = {"NAME"}, *pos[1];
    size_t npos;
    int rc = s_parse_args(argc, argv, opts, 7, names, 1, 1, pos, &npos, err);
    if (rc != 0)
        return rc;
    if (!a.k)
        return s_bad(err, "-k is required");
    if (!out_path)
        return s_bad(err, "--out is required");
    shoal_search_opts_t sopts;
    memset(&sopts, 0, sizeof sopts);
    size_t chunk_rows = 0;
    if ((rc = s_search_args_parse(&a, "--chunk", &chunk_rows, &sopts, err)) != 0)
        return rc;

    s_knn_out_t o;
    memset(&o, 0, sizeof o);
    s_progress_t progress;
    s_progress_init(&progress, "knn-graph", "rows");
    shoal_knn_chunk_t chunk;
    memset(&chunk, 0, sizeof chunk);
    if (snprintf(o.rows_path, sizeof o.rows_path, "%s.rows", out_path) >= (int)sizeof o.rows_path ||
        snprintf(o.rows_tmp, sizeof o.rows_tmp, "%s.rows.tmp", out_path) >= (int)sizeof o.rows_tmp)
        return s_bad(err, "--out: path too long");
    vecfile_format_t format;
    if (vecfile_format_from_path(out_path, &format, err) != 0 || format != VECFILE_IVECS)
        return s_bad(err, "--out: \"%s\" must end in .ivecs", out_path);
    o.graph = vecfile_writer_new(out_path, VECFILE_IVECS, sopts.k, err);
    if (!o.graph)
        return err->code;
    o.rows = fopen(o.rows_tmp, "w");
    if (!o.rows) {
        rc = shoal_err_set(err, SHOAL_EIO, "cannot create %s: %s", o.rows_tmp, strerror(errno));
        goto done;
    }
    if ((rc = s_connect(cli, S_TIMEOUT_KNN_MS, err)) != 0)
        goto done;

    s_knn_tally_t t;
    memset(&t, 0, sizeof t);
    progress.start = timing_now();
    if ((rc = s_knn_fetch(cli, pos[0], &sopts, chunk_rows, &o, out_path, &chunk, &progress, &t,
                          err)) != 0 ||
        (rc = s_knn_finish(&o, err)) != 0)
        goto done;
    printf("rows=%" PRIu64 " seconds=%.3f", t.rows, timing_now() - progress.start);
    if (t.partial)
        printf(" partial=1 missing_shards=%s", t.missing[0] ? t.missing : "?");
    putchar('\n');
done:
    if (rc != 0) {
        s_progress_abort(&progress);
        if (o.rows)
            fclose(o.rows);
        if (o.rows_tmp[0])
            unlink(o.rows_tmp);
        vecfile_writer_abort(&o.graph);
    }
    shoal_knn_chunk_fini(&chunk);
    free(o.buf);
    return rc;
}

static const char s_help_drop[] = "usage: shoal drop NAME\nDrops collection NAME and its data.\n";

static int s_cmd_drop(s_cli_t *cli, int argc, char **argv, shoal_err_t *err)
{
    const char *names[] = {"NAME"}, *pos[1];
    size_t npos;
    int rc = s_parse_args(argc, argv, NULL, 0, names, 1, 1, pos, &npos, err);
    if (rc != 0)
        return rc;
    if ((rc = s_connect(cli, 0, err)) == 0)
        rc = shoal_client_drop(cli->client, pos[0], err);
    if (rc == 0)
        printf("dropped %s\n", pos[0]);
    return rc;
}

static const char s_help_keygen[] =
    "usage: shoal keygen PATH [--force]\n"
    "Writes a new CURVE key pair in czmq's certificate format: PATH, the public\n"
    "certificate (give it to the peers that trust this key), and PATH_secret, the\n"
    "secret one (mode 0600; keep it where it is used). Refuses to replace either\n"
    "file unless --force. docs/operations.md \"Security\" says which goes where.\n";

static int s_cmd_keygen(s_cli_t *cli, int argc, char **argv, shoal_err_t *err)
{
    (void)cli;
    int force = 0;
    s_flag_t flags[] = {{"--force", &force}};
    const char *names[] = {"PATH"}, *pos[1];
    size_t npos;
    int rc = s_parse_argv(argc, argv, NULL, 0, flags, 1, names, 1, 1, pos, &npos, err);
    if (rc != 0)
        return rc;
    if ((rc = wire_curve_keygen(pos[0], force, err)) == 0)
        printf("wrote %s (public) and %s_secret (secret, mode 0600)\n", pos[0], pos[0]);
    return rc;
}

static const char s_help_ping[] =
    "usage: shoal ping\nChecks that the server answers; prints the round trip and its info.\n";

static int s_cmd_ping(s_cli_t *cli, int argc, char **argv, shoal_err_t *err)
{
    size_t npos;
    int rc = s_parse_args(argc, argv, NULL, 0, NULL, 0, 0, NULL, &npos, err);
    if (rc != 0)
        return rc;
    void *info = NULL;
    size_t info_len = 0;
    if ((rc = s_connect(cli, 0, err)) != 0)
        return rc;
    double t0 = timing_now();
    rc = shoal_client_ping(cli->client, &info, &info_len, err);
    if (rc == 0) {
        printf("pong endpoint=%s rtt_ms=%.3f", cli->endpoint, (timing_now() - t0) * 1000.0);
        char text[4096];
        if (info && wire_info_to_text(info, info_len, text, sizeof text) == 0) {
            fputs(" info=", stdout);
            s_print_one_line(stdout, text);
        }
        putchar('\n');
    }
    free(info);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Cluster growth: shard add / drain / remove, rebalance                    */
/* ------------------------------------------------------------------------ */

/* A --wait in progress: what the run planned and where stats' counters began. */
typedef struct {
    const char *what; /* progress label: "rebalance", "drain" */
    s_moves_t base;   /* stats' moves before the request was sent */
    uint64_t planned; /* moves the reply planned */
    uint64_t vectors; /* vectors those moves copy */
    double start;     /* when the wait began */
    int tty;          /* stderr is a terminal: redraw one line */
    int drawn;        /* tty: a line is on screen (needs a newline) */
    double last_line; /* plain: when the last line was printed */
} s_wait_t;

/*
 * now - then for a counter since the coordinator's start; a coordinator that
 * restarted in between counts from 0 again, so then is forgotten.
 */
static uint64_t s_since(uint64_t now, uint64_t then)
{
    return now >= then ? now - then : now;
}

/* One progress line: bar, moves finished of total, the running move, ETA. */
static void s_wait_draw(s_wait_t *w, const s_moves_t *now, int final)
{
    uint64_t finished = s_since(now->done, w->base.done) + s_since(now->aborted, w->base.aborted);
    uint64_t total = finished + now->pending + now->running;
    if (total < w->planned)
        total = w->planned;
    double frac = total ? (double)finished / (double)total : 1.0;
    /* ETA from the run's copy rate over the vectors it plans to move */
    double elapsed = timing_now() - w->start;
    uint64_t copied = s_since(now->rows_copied, w->base.rows_copied);
    double eta = -1.0;
    if (copied > 0 && elapsed > 0 && w->vectors > copied)
        eta = (double)(w->vectors - copied) / ((double)copied / elapsed);
    else if (now->has_current)
        eta = now->eta_s;
    char eta_text[32], current[WIRE_NAME_MAX + 2 * WIRE_ENDPOINT_MAX + 96] = "";
    s_format_eta(eta_text, sizeof eta_text, final ? 0.0 : eta);
    if (now->has_current)
        snprintf(current, sizeof current, " %s %" PRIu64 " %s -> %s %" PRIu64 "/%" PRIu64,
                 now->coll, now->list, now->from, now->to, now->copied, now->vectors);
    if (w->tty) {
        char bar[S_BAR_WIDTH + 1];
        int fill = (int)(frac * S_BAR_WIDTH);
        for (int i = 0; i < S_BAR_WIDTH; i++)
            bar[i] = i < fill ? '#' : '.';
        bar[S_BAR_WIDTH] = '\0';
        fprintf(stderr, "\r%s [%s] %" PRIu64 "/%" PRIu64 " moves%s ETA %s\033[K", w->what, bar,
                finished, total, current, eta_text);
        w->drawn = 1;
        if (final) {
            fputc('\n', stderr);
            w->drawn = 0;
        }
        fflush(stderr);
        return;
    }
    if (final || timing_now() - w->last_line < S_WAIT_PLAIN_S)
        return; /* the result line on stdout says the end */
    w->last_line = timing_now();
    fprintf(stderr, "%s: %" PRIu64 "/%" PRIu64 " moves%s%s eta %s\n", w->what, finished, total,
            current[0] ? "," : "", current, eta_text);
    fflush(stderr);
}

/*
 * Polls stats until no move is pending or running, drawing progress; then
 * *done / *aborted are the moves that finished / were given up meanwhile.
 * The coordinator queues the moves it planned before it replies (protocol
 * 11.9), so the first poll already counts them.
 */
static int s_wait_moves(s_cli_t *cli, s_wait_t *w, uint64_t *done, uint64_t *aborted,
                        shoal_err_t *err)
{
    w->start = timing_now();
    w->last_line = w->start - S_WAIT_PLAIN_S; /* the first poll prints */
    w->tty = isatty(STDERR_FILENO);
    s_moves_t now = w->base; /* what is reported should the first poll fail */
    int rc;
    for (;;) {
        if ((rc = s_moves_fetch(cli->client, &now, err)) != 0) {
            shoal_err_prefix(err, "waiting for the moves");
            break;
        }
        int over = now.pending == 0 && now.running == 0;
        s_wait_draw(w, &now, over);
        if (over)
            break;
        struct timespec nap = {0, (long)(S_WAIT_POLL_S * 1e9)};
        nanosleep(&nap, NULL);
    }
    if (w->drawn)
        fputc('\n', stderr); /* the error starts its own line */
    *done = s_since(now.done, w->base.done);
    *aborted = s_since(now.aborted, w->base.aborted);
    return rc;
}

/* The end of a wait: one line on stdout (label: "rebalanced"), exit 1 when a move aborted. */
static int s_wait_report(const char *label, uint64_t done, uint64_t aborted, shoal_err_t *err)
{
    printf("%s: %" PRIu64 " moves done, %" PRIu64 " aborted\n", label, done, aborted);
    if (aborted)
        return shoal_err_set(err, SHOAL_EINTERNAL,
                             "%" PRIu64 " of %" PRIu64
                             " moves aborted (the coordinator's log says why; their lists stay "
                             "where they were)",
                             aborted, done + aborted);
    return 0;
}

/* An endpoint given on the command line: what the protocol accepts (11.9). */
static int s_check_endpoint(const char *endpoint, shoal_err_t *err)
{
    size_t len = strlen(endpoint);
    if (len > WIRE_ENDPOINT_MAX)
        return s_bad(err, "ENDPOINT has %zu bytes, at most %d", len, WIRE_ENDPOINT_MAX);
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)endpoint[i] < 0x20 || (unsigned char)endpoint[i] > 0x7e)
            return s_bad(err, "ENDPOINT has a byte outside printable ASCII at offset %zu", i);
    return 0;
}

static const char s_help_shard[] =
    "usage: shoal shard add|drain|remove ENDPOINT [--wait]\n"
    "Changes the coordinator's shards while the cluster serves.\n"
    "  add ENDPOINT     a running shard joins; lists come to it with the next\n"
    "                   rebalance. Prints: added ENDPOINT as shard I of N\n"
    "  drain ENDPOINT   plans moves of every list off the shard and starts them\n"
    "                   in the background (shoal status shows them). Prints:\n"
    "                   draining ENDPOINT: M moves, V vectors\n"
    "  remove ENDPOINT  a drained shard leaves. Prints: removed ENDPOINT (N shards serve)\n"
    "--wait (drain only) shows progress on stderr until the moves are over, then\n"
    "prints \"drained ENDPOINT: N moves done, A aborted\"; exit status 1 when a\n"
    "move aborted.\n";

static int s_cmd_shard(s_cli_t *cli, int argc, char **argv, shoal_err_t *err)
{
    int wait = 0;
    s_flag_t flags[] = {{"--wait", &wait}};
    const char *names[] = {"add|drain|remove", "ENDPOINT"}, *pos[2];
    size_t npos;
    int rc = s_parse_argv(argc, argv, NULL, 0, flags, 1, names, 2, 2, pos, &npos, err);
    if (rc != 0)
        return rc;
    wire_op_t op;
    if (!strcmp(pos[0], "add"))
        op = WIRE_OP_SHARD_ADD;
    else if (!strcmp(pos[0], "drain"))
        op = WIRE_OP_SHARD_DRAIN;
    else if (!strcmp(pos[0], "remove"))
        op = WIRE_OP_SHARD_REMOVE;
    else
        return s_bad(err, "unknown subcommand \"%s\" (add, drain or remove)", pos[0]);
    if (wait && op != WIRE_OP_SHARD_DRAIN)
        return s_bad(err, "--wait goes with drain only");
    if ((rc = s_check_endpoint(pos[1], err)) != 0 ||
        (rc = s_connect(cli, S_TIMEOUT_ADMIN_MS, err)) != 0)
        return rc;
    s_wait_t w;
    memset(&w, 0, sizeof w);
    w.what = "drain";
    if (wait && (rc = s_moves_fetch(cli->client, &w.base, err)) != 0)
        return rc;
    void *info = NULL;
    size_t len = 0;
    if ((rc = shoal_client_shard(cli->client, op, pos[1], NULL, &info, &len, err)) != 0)
        return rc;
    char ep[WIRE_ENDPOINT_MAX + 1], a[32], b[32];
    if (wire_info_lookup_str(info, len, "endpoint", ep, sizeof ep) != 0)
        snprintf(ep, sizeof ep, "%s", pos[1]);
    if (op == WIRE_OP_SHARD_ADD)
        printf("added %s as shard %" PRIu64 " of %" PRIu64 "\n", ep,
               s_info_count(info, len, "index"), s_info_count(info, len, "shards"));
    else if (op == WIRE_OP_SHARD_REMOVE)
        printf("removed %s (%" PRIu64 " shards serve)\n", ep, s_info_count(info, len, "shards"));
    else
        printf("draining %s: %s moves, %s vectors\n", ep,
               s_group(s_info_count(info, len, "moves"), a, sizeof a),
               s_group(s_info_count(info, len, "vectors"), b, sizeof b));
    w.planned = s_info_count(info, len, "moves");
    w.vectors = s_info_count(info, len, "vectors");
    free(info);
    if (!wait)
        return 0;
    fflush(stdout); /* the plan's line comes before the progress */
    uint64_t done = 0, aborted = 0;
    if ((rc = s_wait_moves(cli, &w, &done, &aborted, err)) != 0)
        return rc;
    char label[WIRE_ENDPOINT_MAX + 16];
    snprintf(label, sizeof label, "drained %s", ep);
    return s_wait_report(label, done, aborted, err);
}

static const char s_help_rebalance[] =
    "usage: shoal rebalance [--dry-run] [--max-moves N] [--rate MB/s] [--wait]\n"
    "Plans list moves that even out the shards (a new shard gets its share, a\n"
    "draining one is emptied) and starts them in the background: at most N moves\n"
    "(default: all it plans), copying at MB/s (default: the coordinator's).\n"
    "Prints one line:\n"
    "  moves=N vectors=V imbalance=B->A shards_per_query=B->A (fresh F)\n"
    "imbalance: the largest shard's vectors over the mean, before and after;\n"
    "shards_per_query: shards a query touches, before and after, and F for a\n"
    "placement made from scratch. --dry-run moves nothing and also prints the\n"
    "plan, one move per line (the first 1000): COLL LIST/REPLICA FROM -> TO VECTORS.\n"
    "--wait (not with --dry-run) shows progress on stderr until the moves are\n"
    "over, then prints \"rebalanced: N moves done, A aborted\"; exit status 1 when\n"
    "a move aborted.\n";

/* rebalance --dry-run: the plan, one move per line. */
static void s_print_plan(const void *info, size_t len, uint64_t moves)
{
    size_t n = 0;
    if (wire_info_lookup_len(info, len, "plan", &n) != 0)
        n = 0;
    for (size_t i = 0; i < n && i < S_PLAN_SHOWN_MAX; i++) {
        char path[64], coll[WIRE_NAME_MAX + 1], from[WIRE_ENDPOINT_MAX + 1],
            to[WIRE_ENDPOINT_MAX + 1];
        snprintf(path, sizeof path, "plan.%zu.coll", i);
        s_info_str(info, len, path, coll, sizeof coll);
        snprintf(path, sizeof path, "plan.%zu.from", i);
        s_info_str(info, len, path, from, sizeof from);
        snprintf(path, sizeof path, "plan.%zu.to", i);
        s_info_str(info, len, path, to, sizeof to);
        char lpath[64], rpath[64], vpath[64];
        snprintf(lpath, sizeof lpath, "plan.%zu.list", i);
        snprintf(rpath, sizeof rpath, "plan.%zu.replica", i);
        snprintf(vpath, sizeof vpath, "plan.%zu.vectors", i);
        printf("%s %" PRIu64 "/%" PRIu64 " %s -> %s %" PRIu64 "\n", coll,
               s_info_count(info, len, lpath), s_info_count(info, len, rpath), from, to,
               s_info_count(info, len, vpath));
    }
    if (moves > n)
        printf("(%" PRIu64 " more moves not listed)\n", moves - n);
}

static int s_cmd_rebalance(s_cli_t *cli, int argc, char **argv, shoal_err_t *err)
{
    int dry_run = 0, wait = 0;
    const char *max_s, *rate_s;
    s_opt_t opts[] = {{"--max-moves", NULL, &max_s}, {"--rate", NULL, &rate_s}};
    s_flag_t flags[] = {{"--dry-run", &dry_run}, {"--wait", &wait}};
    size_t npos;
    int rc = s_parse_argv(argc, argv, opts, 2, flags, 2, NULL, 0, 0, NULL, &npos, err);
    if (rc != 0)
        return rc;
    uint64_t max_moves = 0, rate_mb = 0;
    if ((max_s && (rc = s_parse_u64("--max-moves", max_s, 1, UINT32_MAX, &max_moves, err)) != 0) ||
        (rate_s && (rc = s_parse_u64("--rate", rate_s, 1, UINT32_MAX, &rate_mb, err)) != 0))
        return rc;
    if (wait && dry_run)
        return s_bad(err, "--wait does not go with --dry-run (nothing moves)");
    if ((rc = s_connect(cli, S_TIMEOUT_ADMIN_MS, err)) != 0)
        return rc;
    s_wait_t w;
    memset(&w, 0, sizeof w);
    w.what = "rebalance";
    if (wait && (rc = s_moves_fetch(cli->client, &w.base, err)) != 0)
        return rc;
    void *info = NULL;
    size_t len = 0;
    rc = shoal_client_rebalance(cli->client, dry_run, (uint32_t)max_moves, (uint32_t)rate_mb, NULL,
                                &info, &len, err);
    if (rc != 0)
        return rc;
    w.planned = s_info_count(info, len, "moves");
    w.vectors = s_info_count(info, len, "vectors");
    printf("moves=%" PRIu64 " vectors=%" PRIu64 " imbalance=%.3f->%.3f"
           " shards_per_query=%.2f->%.2f (fresh %.2f)\n",
           w.planned, w.vectors, s_info_num(info, len, "imbalance_before", NAN),
           s_info_num(info, len, "imbalance_after", NAN),
           s_info_num(info, len, "shards_per_query_before", NAN),
           s_info_num(info, len, "shards_per_query_after", NAN),
           s_info_num(info, len, "shards_per_query_fresh", NAN));
    if (dry_run)
        s_print_plan(info, len, w.planned);
    free(info);
    if (!wait)
        return 0;
    fflush(stdout);
    uint64_t done = 0, aborted = 0;
    if ((rc = s_wait_moves(cli, &w, &done, &aborted, err)) != 0)
        return rc;
    return s_wait_report("rebalanced", done, aborted, err);
}

/* ------------------------------------------------------------------------ */
/* Snapshots                                                                */
/* ------------------------------------------------------------------------ */

static const char s_help_snapshot[] =
    "usage: shoal snapshot create NAME\n"
    "       shoal snapshot list\n"
    "  create NAME  takes a consistent snapshot of the whole cluster: every shard's\n"
    "               database and the coordinator's catalog, each copied to\n"
    "               <data-dir>/snapshots/NAME on its own host. Writes wait while it\n"
    "               runs (searches do not). NAME: 1..64 of A-Z a-z 0-9 _ . - and not\n"
    "               beginning with '.'. Prints: snapshot NAME: S shards, C\n"
    "               collections, V vectors; writes paused P ms\n"
    "  list         one line per snapshot: NAME, when (UTC), shards, vectors, and\n"
    "               each collection's count (nothing when there is none)\n"
    "Restore: docs/operations.md, \"Snapshots and restore\".\n";

/* "created" (seconds since the epoch) as 2024-05-01T12:00:00Z into buf. */
static const char *s_utc(uint64_t created, char *buf, size_t cap)
{
    time_t t = (time_t)created;
    struct tm tm;
    if (!gmtime_r(&t, &tm) || strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, cap, "%" PRIu64, created);
    return buf;
}

/* snapshot list: one line per snapshot of the reply. */
static void s_snapshot_lines(const void *info, size_t len)
{
    size_t n = 0;
    if (wire_info_lookup_len(info, len, "snapshots", &n) != 0)
        n = 0;
    for (size_t i = 0; i < n; i++) {
        char path[96], name[WIRE_NAME_MAX + 1], when[40], vec[32];
        snprintf(path, sizeof path, "snapshots.%zu.name", i);
        s_info_str(info, len, path, name, sizeof name);
        snprintf(path, sizeof path, "snapshots.%zu.created", i);
        s_utc(s_info_count(info, len, path), when, sizeof when);
        snprintf(path, sizeof path, "snapshots.%zu.vectors", i);
        s_group(s_info_count(info, len, path), vec, sizeof vec);
        size_t nshards = 0, ncolls = 0;
        snprintf(path, sizeof path, "snapshots.%zu.shards", i);
        (void)wire_info_lookup_len(info, len, path, &nshards);
        snprintf(path, sizeof path, "snapshots.%zu.collections", i);
        (void)wire_info_lookup_len(info, len, path, &ncolls);
        printf("%s  %s  %zu shards  %s vectors ", name, when, nshards, vec);
        for (size_t c = 0; c < ncolls; c++) {
            char cname[WIRE_NAME_MAX + 1];
            snprintf(path, sizeof path, "snapshots.%zu.collections.%zu.name", i, c);
            s_info_str(info, len, path, cname, sizeof cname);
            snprintf(path, sizeof path, "snapshots.%zu.collections.%zu.count", i, c);
            printf(" %s=%" PRIu64, cname, s_info_count(info, len, path));
        }
        printf("\n");
    }
    uint64_t total = s_info_count(info, len, "total");
    if (total > n)
        printf("(%" PRIu64 " more not shown)\n", total - (uint64_t)n);
}

static int s_cmd_snapshot(s_cli_t *cli, int argc, char **argv, shoal_err_t *err)
{
    const char *names[] = {"create|list", "NAME"}, *pos[2];
    size_t npos;
    int rc = s_parse_args(argc, argv, NULL, 0, names, 1, 2, pos, &npos, err);
    if (rc != 0)
        return rc;
    int create = !strcmp(pos[0], "create");
    if (!create && strcmp(pos[0], "list") != 0)
        return s_bad(err, "unknown subcommand \"%s\" (create or list)", pos[0]);
    if (create && npos != 2)
        return s_bad(err, "create needs a NAME");
    if (!create && npos != 1)
        return s_bad(err, "unexpected argument \"%s\"", pos[1]);
    if (create && wire_snapshot_name_check("NAME", pos[1], strlen(pos[1]), err) != 0) {
        s_usage_failed = 1;
        return SHOAL_EINVAL;
    }
    if ((rc = s_connect(cli, S_TIMEOUT_ADMIN_MS, err)) != 0)
        return rc;
    void *info = NULL;
    size_t len = 0;
    rc = create ? shoal_client_snapshot_create(cli->client, pos[1], NULL, &info, &len, err)
                : shoal_client_snapshot_list(cli->client, NULL, &info, &len, err);
    if (rc != 0)
        return rc;
    if (create) {
        size_t nshards = 0, ncolls = 0;
        (void)wire_info_lookup_len(info, len, "shards", &nshards);
        (void)wire_info_lookup_len(info, len, "collections", &ncolls);
        uint64_t vectors = 0;
        for (size_t c = 0; c < ncolls; c++) {
            char path[64];
            snprintf(path, sizeof path, "collections.%zu.count", c);
            vectors += s_info_count(info, len, path);
        }
        char vec[32];
        printf("snapshot %s: %zu shards, %zu collections, %s vectors; writes paused %.1f ms\n",
               pos[1], nshards, ncolls, s_group(vectors, vec, sizeof vec),
               s_info_num(info, len, "paused_ms", 0.0));
    } else {
        s_snapshot_lines(info, len);
    }
    free(info);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Main                                                                     */
/* ------------------------------------------------------------------------ */

typedef struct {
    const char *name;                                                  /* as typed */
    int (*run)(s_cli_t *cli, int argc, char **argv, shoal_err_t *err); /* the command */
    const char *help;                                                  /* its --help text */
} s_command_t;

static const s_command_t s_commands[] = {
    {"create", s_cmd_create, s_help_create},
    {"train", s_cmd_train, s_help_train},
    {"load", s_cmd_load, s_help_load},
    {"search", s_cmd_search, s_help_search},
    {"delete", s_cmd_delete, s_help_delete},
    {"get", s_cmd_get, s_help_get},
    {"status", s_cmd_status, s_help_status},
    {"knn-graph", s_cmd_knn, s_help_knn},
    {"check", s_cmd_check, s_help_check},
    {"drop", s_cmd_drop, s_help_drop},
    {"ping", s_cmd_ping, s_help_ping},
    {"shard", s_cmd_shard, s_help_shard},
    {"rebalance", s_cmd_rebalance, s_help_rebalance},
    {"keygen", s_cmd_keygen, s_help_keygen},
    {"snapshot", s_cmd_snapshot, s_help_snapshot},
};

static const char s_help_main[] =
    "usage: shoal [-c ENDPOINT] [-t MS] [--curve-key FILE --curve-server-key FILE]\n"
    "             COMMAND [ARGS...]\n"
    "\n"
    "Client of a shoal cluster (the coordinator, or one shard for the ops it serves).\n"
    "\n"
    "Options:\n"
    "  -c, --coordinator ENDPOINT  server to talk to (default $" S_ENDPOINT_ENV
    ", else " S_ENDPOINT_DEFAULT ")\n"
    "  -t, --timeout-ms MS         wait at most MS for each reply (default: 10000;\n"
    "                              train 600000, load 120000, knn-graph 300000,\n"
    "                              shard, rebalance and snapshot 60000)\n"
    "  --curve-key FILE            CURVE: this client's certificate (the _secret\n"
    "                              file of keygen; default $" S_CURVE_KEY_ENV ")\n"
    "  --curve-server-key FILE     CURVE: the server's public certificate (default\n"
    "                              $" S_CURVE_SERVER_ENV "); both or neither\n"
    "  -h, --help                  this text; COMMAND --help for a command's\n"
    "\n"
    "Commands:\n"
    "  create NAME --dim D --metric l2|ip|cosine [--nlist N] [--M M] [--ef-construction E]\n"
    "         [--replication R] [--write-quorum W]\n"
    "  train NAME SAMPLE_FILE [--max-rows N] [--seed S] [--init plusplus|random]\n"
    "  load NAME FILE [--ids-start N] [--batch B]\n"
    "  search NAME QUERY_FILE [-k K] [--nprobe N] [--ef E] [--mode M] [--batch B]\n"
    "         [--deadline-ms D] [--gt GT.ivecs] [--out OUT.ivecs]\n"
    "  delete NAME --ids FILE_OR_LIST\n"
    "  get NAME --ids LIST\n"
    "  status [NAME]\n"
    "  check NAME\n"
    "  knn-graph NAME -k K --out FILE.ivecs [--nprobe N] [--ef E] [--mode M] [--chunk C]\n"
    "  drop NAME\n"
    "  ping\n"
    "  shard add|drain|remove ENDPOINT [--wait]\n"
    "  rebalance [--dry-run] [--max-moves N] [--rate MB/s] [--wait]\n"
    "  keygen PATH [--force]\n"
    "  snapshot create NAME | snapshot list\n"
    "\n"
    "Vector files: .fvecs, .bvecs, .npy (float32, 2-D); ground truth and outputs: .ivecs.\n"
    "Exit status: 0 success, 1 failure, 2 bad command line; one line on stderr\n"
    "(\"shoal: COMMAND: message\") when not 0.\n";

/* Reports a top-level usage error and returns the exit status. */
static int s_main_usage(const char *fmt, const char *arg)
{
    fputs("shoal: ", stderr);
    fprintf(stderr, fmt, arg);
    fputs(" (see shoal --help)\n", stderr);
    return S_EXIT_USAGE;
}

/* The global options before the command (-c, -t, --curve-key, --curve-server-key) and their
 * checks. Returns -1 to go on with the command at argv[*next], else the exit status: 0 after
 * --help, S_EXIT_USAGE after a usage error. */
static int s_main_options(s_cli_t *cli, int argc, char **argv, int *next)
{
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *arg = argv[i], *value = NULL;
        if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
            fputs(s_help_main, stdout);
            return 0;
        }
        int is_c = !strcmp(arg, "-c") || !strcmp(arg, "--coordinator");
        int is_t = !strcmp(arg, "-t") || !strcmp(arg, "--timeout-ms");
        int is_k = !strcmp(arg, "--curve-key");
        int is_s = !strcmp(arg, "--curve-server-key");
        if (!strncmp(arg, "--coordinator=", 14)) {
            is_c = 1;
            value = arg + 14;
        } else if (!strncmp(arg, "--timeout-ms=", 13)) {
            is_t = 1;
            value = arg + 13;
        } else if (!strncmp(arg, "--curve-key=", 12)) {
            is_k = 1;
            value = arg + 12;
        } else if (!strncmp(arg, "--curve-server-key=", 19)) {
            is_s = 1;
            value = arg + 19;
        }
        if (!is_c && !is_t && !is_k && !is_s)
            return s_main_usage("unknown option \"%s\"", arg);
        if (!value) {
            if (i + 1 >= argc)
                return s_main_usage("option %s needs a value", arg);
            value = argv[++i];
        }
        if (!*value)
            return s_main_usage("option %s has an empty value", arg);
        if (is_c) {
            cli->endpoint = value;
        } else if (is_k) {
            cli->curve_key = value;
        } else if (is_s) {
            cli->curve_server = value;
        } else {
            shoal_err_t err;
            uint64_t ms;
            if (s_parse_u64("--timeout-ms", value, 1, S_TIMEOUT_MS_MAX, &ms, &err) != 0)
                return s_main_usage("%s", err.msg);
            cli->timeout_ms = (int)ms;
        }
    }
    if (i >= argc)
        return s_main_usage("%s", "no command given");
    if (cli->curve_key && !*cli->curve_key)
        cli->curve_key = NULL; /* an empty variable is no key */
    if (cli->curve_server && !*cli->curve_server)
        cli->curve_server = NULL;
    if (!cli->curve_key != !cli->curve_server)
        return s_main_usage("%s", cli->curve_key ? "--curve-key needs --curve-server-key (the "
                                                   "server's public certificate)"
                                                 : "--curve-server-key needs --curve-key (this "
                                                   "client's secret certificate)");
    *next = i;
    return -1;
}

/* Turns a command's result into the exit status, with its one line on stderr when not 0. */
static int s_main_exit(const s_command_t *cmd, int rc, const shoal_err_t *err)
{
    if (rc == 1) { /* --help */
        fputs(cmd->help, stdout);
        return 0;
    }
    if (rc == 0) {
        if (fflush(stdout) != 0) {
            fprintf(stderr, "shoal: %s: writing the output failed: %s\n", cmd->name,
                    strerror(errno));
            return S_EXIT_FAIL;
        }
        return 0;
    }
    fprintf(stderr, "shoal: %s: ", cmd->name);
    if (rc == SHOAL_ETIMEOUT)
        fputs("timed out: ", stderr);
    s_print_one_line(stderr, err->msg[0] ? err->msg : shoal_strerror(rc));
    fputc('\n', stderr);
    return s_usage_failed ? S_EXIT_USAGE : S_EXIT_FAIL;
}

int main(int argc, char **argv)
{
    shoal_log_set_ident("shoal");
    shoal_log_init_from_env();

    s_cli_t cli;
    memset(&cli, 0, sizeof cli);
    cli.endpoint = getenv(S_ENDPOINT_ENV);
    if (!cli.endpoint || !*cli.endpoint)
        cli.endpoint = S_ENDPOINT_DEFAULT;
    cli.curve_key = getenv(S_CURVE_KEY_ENV);
    cli.curve_server = getenv(S_CURVE_SERVER_ENV);

    int i = 1;
    int status = s_main_options(&cli, argc, argv, &i);
    if (status >= 0)
        return status;
    const s_command_t *cmd = NULL;
    for (size_t c = 0; c < sizeof s_commands / sizeof s_commands[0]; c++)
        if (!strcmp(argv[i], s_commands[c].name))
            cmd = &s_commands[c];
    if (!cmd)
        return s_main_usage("unknown command \"%s\"", argv[i]);

    cli.cmd = cmd->name;
    shoal_err_t err;
    shoal_err_clear(&err);
    int rc = cmd->run(&cli, argc - i, argv + i, &err);
    shoal_client_destroy(&cli.client);
    return s_main_exit(cmd, rc, &err);
}
