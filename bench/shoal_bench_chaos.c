/*
 * shoal_bench_chaos.c - `shoal-bench chaos` (make test-chaos) and
 * `shoal-bench leak` (make bench-leak): a real bin/shoal-coordinator and
 * three bin/shoal-shard processes on fixed loopback ports, driven through the
 * client library.
 *
 * chaos: one writer thread inserts, upserts and deletes batches of known ids
 * while the main thread kill -9s a random process (a shard or the
 * coordinator, seeded, the seed printed) and restarts it on the same port
 * and data dir after a short random pause, --cycles times. The writer keeps
 * a model: for every id, the set of states it may be in at the end. An
 * acknowledged write makes that set one state (the vector written, or
 * absent); a write that got an error or a timeout adds its state to the set,
 * since it may or may not have happened. Vectors are a pure function of (id,
 * version), so a stored vector names the write that stored it and is
 * compared bit for bit. At the end every process is stopped with SIGTERM and
 * started again, the coordinator is given --settle-seconds to re-drive its
 * interrupted writes (stats: pending_intents), and then:
 *   - get of every id through the coordinator must return one of the id's
 *     allowed states: an acknowledged vector missing is `lost`, an
 *     acknowledged delete (or a never written id) present is `resurrected`,
 *     a vector that no write of that id carried is `wrong`;
 *   - get of every id from each shard directly: an id held by two shards, or
 *     returned twice by an exact search (mode exact, every list probed) of a
 *     sample of the stored vectors, is `duplicated`; an id a shard holds
 *     while the coordinator says it is absent is an `orphan` (searches would
 *     return it);
 *   - the coordinator's count must equal the sum of the shards' counts
 *     (`count_mismatch` is the difference; the ids its gets found are
 *     printed next to both).
 * Last line: RESULT chaos cycles=N acked_writes=N vectors=N lost=0
 * duplicated=0 resurrected=0 count_mismatch=0 (then wrong, orphans, ...);
 * the exit code is 1 on any violation. --plant is the checks' own test: it
 * writes a lost, an orphaned and a duplicated id straight to the shards
 * before checking, and passes only when all three are reported. Nothing
 * asserts a timing: the pauses are drawn so that --cycles fit in about
 * --seconds, and a slow machine just takes longer.
 *
 * leak: two client threads run mixed search / insert / delete (each keeps
 * --live ids present: a batch inserted, the oldest batch deleted, ids reused
 * in a ring) for --seconds while the main thread samples every process's RSS
 * (/proc/PID/status VmRSS) once a second. Growth is measured from the median
 * of the first samples after --warmup-seconds to the median of the last
 * ones, so a single sample caught mid-allocation does not decide it. Last
 * line: RESULT leak coordinator_rss_growth_pct=.. shard_rss_growth_pct=..
 * (the largest shard's) and the same for the low-water marks (s_rss_report
 * says why RocksDB's memtables call for those). A benchmark: it reports, the
 * goal (< 5 %) is read by people.
 *
 * Process logs (and the data) live under $SHOAL_TMP (default /tmp) in
 * shoal-chaos-PID/; they are removed after a passing run and kept, with
 * their tails printed, after a failing one (--keep keeps them always). The
 * children get SIGKILL if the benchmark dies (PR_SET_PDEATHSIG), which is
 * why they are always spawned from the main thread: the signal follows the
 * thread that forked, not the process.
 *
 * Exit codes: 0 success, 2 usage error, 1 a failure or a violation.
 */
#include "bench/shoal_bench.h"

#include <czmq.h>

#include "client/shoal_client.h"
#include "common/error.h"
#include "common/rng.h"
#include "net/wire.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define S_NSHARDS            3
#define S_NPROCS             (S_NSHARDS + 1) /* index S_NSHARDS is the coordinator */
#define S_COLL               "chaos"
#define S_READY_WAIT_S       60.0  /* a restart of a small data set */
#define S_STOP_WAIT_S        60.0
#define S_UP_WAIT_S          60.0  /* the coordinator sees every shard */
#define S_PING_MS            "100" /* coordinator --ping-interval-ms */
#define S_DOWN_MS            "1000" /* coordinator --down-after-ms */
#define S_WRITE_TIMEOUT_MS   "2000" /* coordinator --write-timeout-ms: fail fast on a dead shard */
#define S_CALL_TIMEOUT_MS    4000  /* client calls during chaos: longer than the write timeout */
#define S_CHECK_TIMEOUT_MS   60000 /* client calls while checking */
#define S_ERROR_BACKOFF_MS   50    /* the writer's pause after a failed write */
#define S_GET_CHUNK          500   /* ids per get while checking */
#define S_SEARCH_CHUNK       50    /* queries per search while checking */
#define S_SEARCH_K           10
#define S_CAND_MAX           8     /* states remembered per id before it is "wide" */
#define S_TAIL_LINES         30    /* log lines printed per process on failure */
#define S_RSS_TAIL           5     /* samples whose median is a start or end RSS */

/* ------------------------------------------------------------------------ */
/* Options                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct {
    int leak;              /* 0: chaos, 1: leak */
    const char *coord_bin; /* --coordinator-bin */
    const char *shard_bin; /* --shard-bin */
    size_t port_base;      /* --port-base: coordinator; shards on the next three */
    uint64_t seed;         /* --seed (0: from the clock and pid, printed) */
    int keep;              /* --keep: leave the scratch folder */
    size_t dim;            /* --dim */
    size_t nlist;          /* --nlist */
    size_t batch;          /* --batch: ids per write */
    size_t seconds;        /* chaos: the cycles' time budget; leak: the run's length */
    /* chaos */
    size_t cycles;         /* --cycles */
    size_t nids;           /* --ids: the id space */
    size_t settle_seconds; /* --settle-seconds: bound on the re-drive wait */
    size_t search_sample;  /* --search-sample */
    int plant;             /* --plant: break the end state on purpose; the checks must see it */
    /* leak */
    size_t warmup_seconds; /* --warmup-seconds (0: a fifth of --seconds) */
    size_t live;           /* --live: ids each client keeps present */
    size_t nq;             /* --nq: queries per search */
} s_opts_t;

static void s_usage_chaos(FILE *out)
{
    fprintf(out,
            "usage: shoal-bench chaos [--cycles N] [--seconds S] [--seed X] [options]\n"
            "\n"
            "Starts a coordinator and 3 shards on loopback ports --port-base..+3, writes\n"
            "batches of known ids (insert, upsert, delete) while kill -9'ing a random process\n"
            "and restarting it, N times; then restarts everything cleanly, waits for the\n"
            "coordinator's re-drives and checks every acknowledged write. Last line:\n"
            "  RESULT chaos cycles=N acked_writes=N vectors=N lost=0 duplicated=0\n"
            "         resurrected=0 count_mismatch=0 ...\n"
            "Exit code 1 on any violation.\n"
            "\n"
            "  --cycles N            kill/restart cycles (default 50)\n"
            "  --seconds S           time the cycles' pauses are drawn to fit (default 120)\n"
            "  --seed X              kill schedule and data seed (default: clock and pid)\n"
            "  --ids N               id space written to (default 2000)\n"
            "  --batch B             ids per write (default 32)\n"
            "  --dim D               vector dimension (default 16)\n"
            "  --nlist N             IVF lists (default 16)\n"
            "  --settle-seconds S    bound on waiting for pending intents to clear (default 60)\n"
            "  --search-sample N     stored vectors searched for duplicates (default 300)\n"
            "  --port-base P         first of 4 fixed ports (default 7900)\n"
            "  --coordinator-bin P   the shoal-coordinator binary (default: next to shoal-bench)\n"
            "  --shard-bin P         the shoal-shard binary (default: next to shoal-bench)\n"
            "  --keep                keep data and logs under $SHOAL_TMP/shoal-chaos-PID\n"
            "  --plant               self-test of the checks: before them, delete one acked id\n"
            "                        from its shard, put a deleted id on shard 0 and a stored\n"
            "                        id on every shard; exit 0 only if all three are reported\n");
}

static void s_usage_leak(FILE *out)
{
    fprintf(out,
            "usage: shoal-bench leak [--seconds S] [--warmup-seconds W] [options]\n"
            "\n"
            "Starts a coordinator and 3 shards on loopback ports --port-base..+3 and runs\n"
            "two clients doing mixed search/insert/delete for S seconds, sampling each\n"
            "process's RSS every second. Prints RSS after warm-up and at the end, and last:\n"
            "  RESULT leak coordinator_rss_growth_pct=.. shard_rss_growth_pct=..\n"
            "         coordinator_lowwater_growth_pct=.. shard_lowwater_growth_pct=..\n"
            "\n"
            "  --seconds S           length of the run (default 600)\n"
            "  --warmup-seconds W    samples before W are not compared (default S/5)\n"
            "  --live N              ids each client keeps present (default 10000)\n"
            "  --batch B             ids per insert and per delete (default 100)\n"
            "  --nq Q                queries per search (default 10)\n"
            "  --dim D               vector dimension (default 32)\n"
            "  --nlist N             IVF lists (default 32)\n"
            "  --seed X              data seed (default: clock and pid)\n"
            "  --port-base P         first of 4 fixed ports (default 7905)\n"
            "  --coordinator-bin P   the shoal-coordinator binary (default: next to shoal-bench)\n"
            "  --shard-bin P         the shoal-shard binary (default: next to shoal-bench)\n"
            "  --keep                keep data and logs under $SHOAL_TMP/shoal-chaos-PID\n");
}

/* The options that are not single numbers; bench_other_fn. ctx: the options. */
static int s_parse_other(const char *opt, const char *val, void *ctx)
{
    s_opts_t *o = ctx;
    if (!strcmp(opt, "--coordinator-bin"))
        o->coord_bin = val;
    else if (!strcmp(opt, "--shard-bin"))
        o->shard_bin = val;
    else if (!strcmp(opt, "--seed"))
        return bench_parse_u64(opt, val, &o->seed);
    else
        return 1;
    return 0;
}

static int s_parse(int argc, char **argv, s_opts_t *o)
{
    const bench_opt_t common[] = {
        {"--port-base", 1024, 65535 - S_NPROCS, &o->port_base, NULL},
        {"--dim", 2, 4096, &o->dim, NULL},
        {"--nlist", 1, 4096, &o->nlist, NULL},
        {"--batch", 1, 10000, &o->batch, NULL},
        {"--seconds", 1, 86400, &o->seconds, NULL},
        {"--keep", 0, 0, NULL, &o->keep},
        /* chaos */
        {"--cycles", 1, 100000, &o->cycles, NULL},
        {"--ids", 1, 10000000, &o->nids, NULL},
        {"--settle-seconds", 1, 3600, &o->settle_seconds, NULL},
        {"--search-sample", 0, 1000000, &o->search_sample, NULL},
        {"--plant", 0, 0, NULL, &o->plant},
        /* leak */
        {"--warmup-seconds", 0, 86400, &o->warmup_seconds, NULL},
        {"--live", 1, 10000000, &o->live, NULL},
        {"--nq", 1, 10000, &o->nq, NULL},
    };
    /* Each subcommand reads only its own rows (the first 6 are shared). */
    const bench_opt_t *rows = common;
    size_t nrows = 11;
    bench_opt_t leak_rows[9];
    if (o->leak) {
        memcpy(leak_rows, common, 6 * sizeof *common);
        memcpy(leak_rows + 6, common + 11, 3 * sizeof *common);
        rows = leak_rows;
        nrows = 9;
    }
    int rc = bench_parse_args(o->leak ? "leak" : "chaos", argc, argv, rows, nrows, s_parse_other,
                              o);
    if (rc != 0)
        return rc;
    if (!o->leak && o->batch > o->nids) {
        fprintf(stderr, "shoal-bench chaos: --batch %zu exceeds --ids %zu\n", o->batch, o->nids);
        return -1;
    }
    if (o->leak && o->live % o->batch != 0) {
        fprintf(stderr, "shoal-bench leak: --live %zu must be a multiple of --batch %zu\n",
                o->live, o->batch);
        return -1;
    }
    if (o->leak && o->warmup_seconds >= o->seconds) {
        fprintf(stderr, "shoal-bench leak: --warmup-seconds %zu must be below --seconds %zu\n",
                o->warmup_seconds, o->seconds);
        return -1;
    }
    if (o->seed == 0)
        o->seed = ((uint64_t)time(NULL) << 20) ^ (uint64_t)getpid();
    return 0;
}

static int s_parse_chaos(int argc, char **argv, void *opts)
{
    s_opts_t *o = opts;
    memset(o, 0, sizeof *o);
    o->port_base = 7900;
    o->dim = 16;
    o->nlist = 16;
    o->batch = 32;
    o->seconds = 120;
    o->cycles = 50;
    o->nids = 2000;
    o->settle_seconds = 60;
    o->search_sample = 300;
    return s_parse(argc, argv, o);
}

static int s_parse_leak(int argc, char **argv, void *opts)
{
    s_opts_t *o = opts;
    memset(o, 0, sizeof *o);
    o->leak = 1;
    o->port_base = 7905;
    o->dim = 32;
    o->nlist = 32;
    o->batch = 100;
    o->seconds = 600;
    o->live = 10000;
    o->nq = 10;
    int rc = s_parse(argc, argv, o);
    if (rc == 0 && o->warmup_seconds == 0)
        o->warmup_seconds = o->seconds / 5;
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Random numbers and vectors                                               */
/* ------------------------------------------------------------------------ */

/* splitmix64 (rng.h's finaliser over a Weyl sequence): small, seedable, good
   enough to pick ids and pauses. */
static uint64_t s_rand(uint64_t *state)
{
    return shoal_rng_mix64(*state += 0x9e3779b97f4a7c15ull);
}

/* Uniform in [lo, hi). */
static double s_uniform(uint64_t *state, double lo, double hi)
{
    return lo + (hi - lo) * (double)(s_rand(state) >> 11) * (1.0 / 9007199254740992.0);
}

/*
 * The vector that version `version` of id `id` carries: a pure function of
 * both, so a stored vector can be recognised bit for bit. 24-bit fractions
 * are exact floats, so nothing is rounded on the way.
 */
static void s_vector(uint64_t seed, uint64_t id, uint32_t version, size_t dim, float *out)
{
    uint64_t state = seed ^ (id * 0xd6e8feb86659fd93ull) ^ ((uint64_t)version << 40);
    for (size_t d = 0; d < dim; d++)
        out[d] = (float)(s_rand(&state) >> 40) * (1.0f / 8388608.0f) - 1.0f;
}

/* ------------------------------------------------------------------------ */
/* The cluster: 3 shards and a coordinator on fixed ports                   */
/* ------------------------------------------------------------------------ */

typedef struct {
    char dir[BENCH_PATH_MAX - 128];     /* scratch folder ("" = none made) */
    char shard_bin[BENCH_PATH_MAX];     /* shoal-shard */
    char coord_bin[BENCH_PATH_MAX];     /* shoal-coordinator */
    int port_base;                      /* coordinator's port; shard i on port_base + 1 + i */
    int chaos;                          /* shards checkpoint often (restarts replay less) */
    char shard_list[S_NSHARDS * 64];    /* --shards of the coordinator */
    bench_child_t procs[S_NPROCS];      /* shards 0..2, then the coordinator */
    char logs[S_NPROCS][BENCH_PATH_MAX]; /* each process's log file (appended across restarts) */
    char data[S_NPROCS][BENCH_PATH_MAX]; /* each process's data dir */
    char listen[S_NPROCS][64];           /* each process's endpoint */
} s_cluster_t;

/* 0 when port is free on 127.0.0.1 now; fixed ports must not be someone else's. */
static int s_port_check(int port, shoal_err_t *err)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return shoal_err_set(err, SHOAL_EIO, "socket: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int rc = bind(fd, (struct sockaddr *)&a, sizeof a);
    int e = errno;
    close(fd);
    if (rc != 0)
        return shoal_err_set(err, SHOAL_EUNAVAIL,
                             "port %d on 127.0.0.1 is taken (%s); pick others with --port-base",
                             port, strerror(e));
    return 0;
}

/*
 * bench_child_spawn with the child's stdout and stderr appended to log, so a
 * restarted process's lines follow its earlier ones. Only async-signal-safe
 * calls run in the child before exec (the writer thread may hold locks).
 */
static int s_spawn(bench_child_t *c, char *const argv[], const char *log, shoal_err_t *err)
{
    unlink(c->ready);
    c->endpoint[0] = '\0';
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return shoal_err_set(err, SHOAL_EIO, "%s: open %s: %s", c->name, log, strerror(errno));
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        close(fd);
        return shoal_err_set(err, SHOAL_EIO, "%s: fork: %s", c->name, strerror(errno));
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the benchmark */
        if (getppid() != parent)
            _exit(127);
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        execv(argv[0], argv);
        _exit(127);
    }
    close(fd);
    c->pid = pid;
    return 0;
}

/* Starts process i (a shard, or the coordinator at S_NSHARDS) and waits until it is ready. */
static int s_proc_start(s_cluster_t *cl, size_t i, shoal_err_t *err)
{
    bench_child_t *c = &cl->procs[i];
    int rc;
    if (i < S_NSHARDS) {
        char *argv[] = {cl->shard_bin, "--listen",    cl->listen[i], "--data-dir",
                        cl->data[i],   "--ready-file", c->ready,     "--threads",
                        "1",           "--log-level", "info",        "--checkpoint-secs",
                        cl->chaos ? "1" : "30", NULL};
        rc = s_spawn(c, argv, cl->logs[i], err);
    } else {
        char *argv[] = {cl->coord_bin,      "--listen",    cl->listen[i],      "--data-dir",
                        cl->data[i],        "--shards",    cl->shard_list,     "--ready-file",
                        c->ready,           "--threads",   "1",                "--log-level",
                        "info",             "--ping-interval-ms", S_PING_MS,   "--down-after-ms",
                        S_DOWN_MS,          "--write-timeout-ms", S_WRITE_TIMEOUT_MS, NULL};
        rc = s_spawn(c, argv, cl->logs[i], err);
    }
    if (rc == 0)
        rc = bench_child_wait_ready(c, S_READY_WAIT_S, err);
    if (rc == 0 && strcmp(c->endpoint, cl->listen[i]) != 0)
        rc = shoal_err_set(err, SHOAL_EINTERNAL, "%s bound %s, not its fixed %s", c->name,
                           c->endpoint, cl->listen[i]);
    return rc;
}

/* Names, paths and ports of every process; makes the scratch folder. */
static int s_cluster_init(s_cluster_t *cl, const s_opts_t *o, shoal_err_t *err)
{
    memset(cl, 0, sizeof *cl);
    cl->port_base = (int)o->port_base;
    cl->chaos = !o->leak;
    int rc = bench_find_bin(o->shard_bin, "shoal-shard", "--shard-bin", cl->shard_bin, err);
    if (rc == 0)
        rc = bench_find_bin(o->coord_bin, "shoal-coordinator", "--coordinator-bin",
                            cl->coord_bin, err);
    if (rc != 0)
        return rc;
    const char *tmp = getenv("SHOAL_TMP");
    snprintf(cl->dir, sizeof cl->dir, "%s/shoal-%s-%d", tmp && *tmp ? tmp : "/tmp",
             o->leak ? "leak" : "chaos", (int)getpid());
    bench_remove_tree(cl->dir);
    if (mkdir(cl->dir, 0755) != 0) {
        int e = errno;
        cl->dir[0] = '\0';
        return shoal_err_set(err, SHOAL_EIO, "mkdir scratch folder: %s", strerror(e));
    }
    size_t used = 0;
    for (size_t i = 0; i < S_NPROCS; i++) {
        int port = cl->port_base + (i < S_NSHARDS ? 1 + (int)i : 0);
        rc = s_port_check(port, err);
        if (rc != 0)
            return rc;
        bench_child_t *c = &cl->procs[i];
        const char *kind = i < S_NSHARDS ? "shard" : "coordinator";
        if (i < S_NSHARDS)
            snprintf(c->name, sizeof c->name, "shard %zu", i);
        else
            snprintf(c->name, sizeof c->name, "the coordinator");
        char tag[32];
        snprintf(tag, sizeof tag, "%s%zu", kind, i < S_NSHARDS ? i : 0);
        snprintf(c->ready, sizeof c->ready, "%s/%s.ready", cl->dir, tag);
        snprintf(cl->logs[i], sizeof cl->logs[i], "%s/%s.log", cl->dir, tag);
        snprintf(cl->data[i], sizeof cl->data[i], "%s/%s", cl->dir, tag);
        snprintf(cl->listen[i], sizeof cl->listen[i], "tcp://127.0.0.1:%d", port);
        if (i < S_NSHARDS)
            used += (size_t)snprintf(cl->shard_list + used, sizeof cl->shard_list - used, "%s%s",
                                     i ? "," : "", cl->listen[i]);
    }
    return 0;
}

/* A client of endpoint, or NULL with err set. */
static shoal_client_t *s_client(const char *endpoint, int timeout_ms, shoal_err_t *err)
{
    return shoal_client_new(endpoint, timeout_ms, err);
}

/* Waits (bounded polling) until the coordinator reports every shard up. */
static int s_wait_shards_up(s_cluster_t *cl, shoal_err_t *err)
{
    shoal_client_t *c = s_client(cl->listen[S_NSHARDS], 1000, err);
    if (!c)
        return err->code ? err->code : SHOAL_ENOMEM;
    double end = timing_now() + S_UP_WAIT_S, up = 0;
    int rc;
    for (;;) {
        rc = bench_stat(c, NULL, "shards_up", &up, err);
        if (rc == 0 && up >= S_NSHARDS)
            break;
        if (timing_now() > end) {
            rc = rc ? rc
                    : shoal_err_set(err, SHOAL_ETIMEOUT,
                                    "the coordinator sees %.0f of %d shards up after %.0f s", up,
                                    S_NSHARDS, S_UP_WAIT_S);
            break;
        }
        bench_sleep_ms(50);
    }
    shoal_client_destroy(&c);
    return rc;
}

/* Starts every shard, then the coordinator, and waits until it sees them all. */
static int s_cluster_start(s_cluster_t *cl, shoal_err_t *err)
{
    for (size_t i = 0; i < S_NPROCS; i++) {
        int rc = s_proc_start(cl, i, err);
        if (rc != 0)
            return rc;
    }
    return s_wait_shards_up(cl, err);
}

/*
 * SIGTERM to the coordinator, then the shards. A process that does not exit 0
 * is reported on stdout (WARN) and counted in *unclean; it is not a failure of
 * the run, since its data is what the checks look at.
 */
static void s_cluster_stop(s_cluster_t *cl, size_t *unclean)
{
    for (size_t k = 0; k < S_NPROCS; k++) {
        size_t i = (S_NSHARDS + k) % S_NPROCS; /* the coordinator first */
        shoal_err_t e;
        shoal_err_clear(&e);
        if (bench_child_stop(&cl->procs[i], S_STOP_WAIT_S, &e) != 0) {
            printf("WARN %s: %s (see %s)\n", cl->procs[i].name, e.msg, cl->logs[i]);
            if (unclean)
                (*unclean)++;
        }
    }
}

static void s_cluster_kill(s_cluster_t *cl)
{
    for (size_t i = 0; i < S_NPROCS; i++)
        bench_child_kill(&cl->procs[i]);
}

/* Prints the last lines of every process's log (after a failure). */
static void s_logs_tail(const s_cluster_t *cl)
{
    for (size_t i = 0; i < S_NPROCS; i++) {
        FILE *f = fopen(cl->logs[i], "r");
        if (!f)
            continue;
        /* A ring of line starts: two passes are simpler than a line buffer ring. */
        size_t total = 0;
        int ch, prev = '\n';
        while ((ch = fgetc(f)) != EOF) {
            total += prev == '\n';
            prev = ch;
        }
        size_t skip = total > S_TAIL_LINES ? total - S_TAIL_LINES : 0, line = 0;
        rewind(f);
        printf("--- last %zu lines of %s\n", total - skip, cl->logs[i]);
        prev = '\n';
        while ((ch = fgetc(f)) != EOF) {
            line += prev == '\n';
            if (line > skip)
                putchar(ch);
            prev = ch;
        }
        if (prev != '\n')
            putchar('\n');
        fclose(f);
    }
}

/* Kills what runs; removes the scratch folder unless keep (then says where it is). */
static void s_cluster_fini(s_cluster_t *cl, int keep)
{
    s_cluster_kill(cl);
    if (!cl->dir[0])
        return;
    if (keep)
        printf("scratch=%s\n", cl->dir);
    else
        bench_remove_tree(cl->dir);
}

/* Creates the collection and trains it on n vectors drawn from seed. */
static int s_collection_make(s_cluster_t *cl, const s_opts_t *o, size_t n, shoal_err_t *err)
{
    shoal_client_t *c = s_client(cl->listen[S_NSHARDS], S_CHECK_TIMEOUT_MS, err);
    if (!c)
        return err->code ? err->code : SHOAL_ENOMEM;
    float *sample = malloc(n * o->dim * sizeof *sample);
    int rc = sample ? 0 : shoal_err_set(err, SHOAL_ENOMEM, "no memory for %zu sample rows", n);
    shoal_create_opts_t copts = {.nlist = o->nlist};
    if (rc == 0)
        rc = shoal_client_create_ivf(c, S_COLL, o->dim, SHOAL_METRIC_L2, &copts, err);
    for (size_t i = 0; rc == 0 && i < n; i++)
        s_vector(o->seed ^ 0x5eed, i, 0, o->dim, sample + i * o->dim);
    if (rc == 0)
        rc = shoal_client_train(c, S_COLL, sample, n, o->dim, NULL, NULL, err);
    if (rc != 0)
        shoal_err_prefix(err, "creating and training \"%s\"", S_COLL);
    free(sample);
    shoal_client_destroy(&c);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* chaos: the model                                                         */
/* ------------------------------------------------------------------------ */

/*
 * What one id may hold at the end. version counts the inserts issued for the
 * id (version v carries s_vector(.., id, v, ..)); cand lists the states the
 * id may be in, 0 meaning absent. When more than S_CAND_MAX unknown writes
 * pile up, the id becomes wide: absent or any version from wide_lo on.
 */
typedef struct {
    uint32_t version;           /* inserts issued so far */
    uint32_t cand[S_CAND_MAX];  /* allowed states */
    uint8_t ncand;              /* how many */
    uint8_t wide;               /* overflowed: also 0 and every version >= wide_lo */
    uint32_t wide_lo;
} s_idstate_t;

static void s_model_ack(s_idstate_t *st, uint32_t state)
{
    st->cand[0] = state;
    st->ncand = 1;
    st->wide = 0;
}

static void s_model_unknown(s_idstate_t *st, uint32_t state)
{
    for (size_t i = 0; i < st->ncand; i++)
        if (st->cand[i] == state)
            return;
    if (st->ncand < S_CAND_MAX) {
        st->cand[st->ncand++] = state;
        return;
    }
    if (!st->wide) {
        st->wide = 1;
        st->wide_lo = UINT32_MAX;
        for (size_t i = 0; i < st->ncand; i++)
            if (st->cand[i] && st->cand[i] < st->wide_lo)
                st->wide_lo = st->cand[i];
        if (state && state < st->wide_lo)
            st->wide_lo = state;
    }
}

static int s_model_allows(const s_idstate_t *st, uint32_t state)
{
    for (size_t i = 0; i < st->ncand; i++)
        if (st->cand[i] == state)
            return 1;
    return st->wide && (state == 0 || state >= st->wide_lo);
}

/* The writer thread's world. */
typedef struct {
    const s_opts_t *o;
    const char *endpoint;      /* the coordinator */
    s_idstate_t *ids;          /* o->nids; id = index + 1 */
    atomic_int stop;           /* set by the main thread */
    uint64_t rng;
    /* counters (read after the join) */
    atomic_uint_fast64_t batches;        /* also read by the main thread's progress lines */
    atomic_uint_fast64_t failed_batches; /* likewise */
    uint64_t acked_batches;
    uint64_t acked_writes;     /* id writes acknowledged */
    uint64_t unknown_writes;   /* id writes that failed or timed out */
    uint64_t inserts, upserts, deletes; /* id writes issued, by kind */
    uint64_t timeouts;         /* failed batches that were client timeouts */
    char last_error[SHOAL_ERR_MSG_MAX + 32];
    atomic_int setup_rc;       /* the client could not be made */
    shoal_err_t setup_err;
} s_writer_t;

/* Picks n distinct indexes of [0, nids) into out (rejection; n is small next to nids). */
static void s_pick_ids(s_writer_t *w, size_t n, size_t *out)
{
    for (size_t i = 0; i < n;) {
        size_t x = (size_t)(s_rand(&w->rng) % w->o->nids), j;
        for (j = 0; j < i && out[j] != x; j++) {
        }
        if (j == i)
            out[i++] = x;
    }
}

static void *s_writer_main(void *arg)
{
    s_writer_t *w = arg;
    const s_opts_t *o = w->o;
    size_t b = o->batch;
    size_t *pick = malloc(b * sizeof *pick);
    uint64_t *ids = malloc(b * sizeof *ids);
    uint32_t *vers = malloc(b * sizeof *vers);
    float *vecs = malloc(b * o->dim * sizeof *vecs);
    shoal_client_t *c = s_client(w->endpoint, S_CALL_TIMEOUT_MS, &w->setup_err);
    if (!pick || !ids || !vers || !vecs || !c) {
        atomic_store(&w->setup_rc,
                     c ? SHOAL_ENOMEM : (w->setup_err.code ? w->setup_err.code : SHOAL_ENOMEM));
        goto done;
    }
    while (!atomic_load(&w->stop)) {
        s_pick_ids(w, b, pick);
        int is_delete = s_uniform(&w->rng, 0, 1) < 0.35;
        for (size_t i = 0; i < b; i++) {
            s_idstate_t *st = &w->ids[pick[i]];
            ids[i] = pick[i] + 1;
            if (is_delete) {
                vers[i] = 0;
                w->deletes++;
            } else {
                vers[i] = ++st->version;
                s_vector(o->seed, ids[i], vers[i], o->dim, vecs + i * o->dim);
                /* An upsert replaces a vector the id may hold (a move between lists, mostly). */
                if (st->ncand > 1 || st->wide || st->cand[0] != 0)
                    w->upserts++;
                else
                    w->inserts++;
            }
        }
        shoal_err_t err;
        shoal_err_clear(&err);
        int rc = is_delete ? shoal_client_delete(c, S_COLL, ids, b, NULL, NULL, &err)
                           : shoal_client_insert(c, S_COLL, ids, vecs, b, o->dim, NULL, &err);
        atomic_fetch_add(&w->batches, 1);
        for (size_t i = 0; i < b; i++) {
            if (rc == 0)
                s_model_ack(&w->ids[pick[i]], vers[i]);
            else
                s_model_unknown(&w->ids[pick[i]], vers[i]);
        }
        if (rc == 0) {
            w->acked_batches++;
            w->acked_writes += b;
        } else {
            atomic_fetch_add(&w->failed_batches, 1);
            w->unknown_writes += b;
            w->timeouts += rc == SHOAL_ETIMEOUT;
            snprintf(w->last_error, sizeof w->last_error, "%s: %s", shoal_errname(rc), err.msg);
            bench_sleep_ms(S_ERROR_BACKOFF_MS);
        }
    }
done:
    shoal_client_destroy(&c);
    free(pick);
    free(ids);
    free(vers);
    free(vecs);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* chaos: the checks                                                        */
/* ------------------------------------------------------------------------ */

typedef struct {
    size_t present;         /* ids the coordinator's get found */
    size_t lost, resurrected, wrong, duplicated, orphans;
    size_t search_missed;   /* a stored vector's exact search did not find its id */
    double coord_count;     /* collections.chaos.count at the coordinator */
    double shard_counts[S_NSHARDS];
    double shard_sum;
    size_t count_mismatch;
    double pending_intents; /* left when the checks began */
    size_t printed;         /* violation lines printed (capped) */
} s_check_t;

#define S_PRINT_MAX 20 /* violation lines printed; the counts cover the rest */

/* Which version of id a stored vector is (0 when none of the id's versions matches). */
static uint32_t s_version_of(const s_opts_t *o, const s_idstate_t *st, uint64_t id,
                             const float *vec, float *scratch)
{
    for (uint32_t v = st->version; v >= 1; v--) {
        s_vector(o->seed, id, v, o->dim, scratch);
        if (memcmp(scratch, vec, o->dim * sizeof *vec) == 0)
            return v;
    }
    return 0;
}

static void s_describe(char *buf, size_t cap, const s_idstate_t *st)
{
    size_t used = (size_t)snprintf(buf, cap, "{");
    for (size_t i = 0; i < st->ncand && used < cap; i++) {
        if (st->cand[i])
            used += (size_t)snprintf(buf + used, cap - used, "%sv%" PRIu32, i ? "," : "",
                                     st->cand[i]);
        else
            used += (size_t)snprintf(buf + used, cap - used, "%sabsent", i ? "," : "");
    }
    if (used < cap && st->wide)
        used += (size_t)snprintf(buf + used, cap - used, ",absent or >= v%" PRIu32, st->wide_lo);
    if (used < cap)
        snprintf(buf + used, cap - used, "} of %" PRIu32 " versions", st->version);
}

/*
 * Get of every id through client into found / state (0 absent, a version,
 * or UINT32_MAX for a vector no write carried).
 */
static int s_get_all(const s_opts_t *o, shoal_client_t *c, const s_idstate_t *model,
                     uint8_t *present, uint32_t *state, shoal_err_t *err)
{
    uint64_t ids[S_GET_CHUNK];
    float *scratch = malloc(o->dim * sizeof *scratch);
    if (!scratch)
        return shoal_err_set(err, SHOAL_ENOMEM, "no memory");
    int rc = 0;
    for (size_t at = 0; rc == 0 && at < o->nids; at += S_GET_CHUNK) {
        size_t n = o->nids - at < S_GET_CHUNK ? o->nids - at : S_GET_CHUNK;
        for (size_t i = 0; i < n; i++)
            ids[i] = at + i + 1;
        uint8_t *found = NULL;
        float *vecs = NULL;
        size_t dim = 0;
        rc = shoal_client_get(c, S_COLL, ids, n, &found, &vecs, &dim, err);
        size_t nfound = 0;
        for (size_t i = 0; rc == 0 && i < n; i++)
            nfound += found[i] != 0;
        if (rc == 0 && nfound && dim != o->dim)
            rc = shoal_err_set(err, SHOAL_EDIM, "get from %s: expected dim %zu, got %zu",
                               shoal_client_endpoint(c), o->dim, dim);
        for (size_t i = 0; rc == 0 && i < n; i++) {
            present[at + i] = found[i] != 0;
            state[at + i] = 0;
            if (found[i]) {
                uint32_t v = s_version_of(o, &model[at + i], ids[i], vecs + i * o->dim, scratch);
                state[at + i] = v ? v : UINT32_MAX;
            }
        }
        if (rc != 0)
            shoal_err_prefix(err, "get of ids %zu..%zu from %s", at + 1, at + n,
                             shoal_client_endpoint(c));
        free(found);
        free(vecs);
    }
    free(scratch);
    return rc;
}

#define S_VIOLATION(chk, ...)                                                                    \
    do {                                                                                         \
        if ((chk)->printed++ < S_PRINT_MAX)                                                      \
            printf("VIOLATION " __VA_ARGS__);                                                    \
    } while (0)

/* 1. Each id's state through the coordinator against the model. */
static void s_check_model(const s_opts_t *o, const s_idstate_t *model, const uint8_t *present,
                          const uint32_t *state, s_check_t *chk)
{
    char desc[256];
    for (size_t i = 0; i < o->nids; i++) {
        const s_idstate_t *st = &model[i];
        chk->present += present[i];
        if (s_model_allows(st, state[i]))
            continue;
        s_describe(desc, sizeof desc, st);
        if (state[i] == UINT32_MAX) {
            chk->wrong++;
            S_VIOLATION(chk, "wrong: id %zu holds a vector no write of it carried; allowed %s\n",
                        i + 1, desc);
        } else if (state[i] == 0) {
            chk->lost++;
            S_VIOLATION(chk, "lost: id %zu is absent; allowed %s\n", i + 1, desc);
        } else if (st->ncand == 1 && st->cand[0] == 0 && !st->wide) {
            chk->resurrected++;
            S_VIOLATION(chk, "resurrected: id %zu holds v%" PRIu32 "; allowed %s\n", i + 1,
                        state[i], desc);
        } else {
            /* an older version came back: the acknowledged one is lost */
            chk->lost++;
            S_VIOLATION(chk, "lost: id %zu holds the older v%" PRIu32 "; allowed %s\n", i + 1,
                        state[i], desc);
        }
    }
}

/* 2. Every shard directly: which shards hold each id, and their counts. */
static int s_check_shards(s_cluster_t *cl, const s_opts_t *o, const s_idstate_t *model,
                          const uint8_t *present, s_check_t *chk, shoal_err_t *err)
{
    size_t n = o->nids;
    uint8_t *held = calloc(n, 1), *holders = calloc(n, 1);
    uint32_t *sstate = calloc(n, sizeof *sstate);
    int rc = held && holders && sstate ? 0 : shoal_err_set(err, SHOAL_ENOMEM, "no memory");
    for (size_t s = 0; rc == 0 && s < S_NSHARDS; s++) {
        shoal_client_t *sc = s_client(cl->listen[s], S_CHECK_TIMEOUT_MS, err);
        if (!sc) {
            rc = err->code ? err->code : SHOAL_ENOMEM;
            break;
        }
        rc = s_get_all(o, sc, model, held, sstate, err);
        if (rc == 0)
            rc = bench_stat(sc, S_COLL, "collections." S_COLL ".count", &chk->shard_counts[s], err);
        shoal_client_destroy(&sc);
        chk->shard_sum += chk->shard_counts[s];
        for (size_t i = 0; rc == 0 && i < n; i++) {
            if (!held[i])
                continue;
            holders[i]++;
            if (!present[i]) {
                chk->orphans++;
                S_VIOLATION(chk, "orphan: shard %zu holds id %zu (v%" PRIu32 ") which the "
                                 "coordinator's get does not find\n",
                            s, i + 1, sstate[i]);
            }
        }
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (holders[i] > 1) {
            chk->duplicated++;
            S_VIOLATION(chk, "duplicated: id %zu is held by %u shards\n", i + 1,
                        (unsigned)holders[i]);
        }
    }
    free(held);
    free(holders);
    free(sstate);
    return rc;
}

/* The results of nq exact searches for qids' own vectors (nq x S_SEARCH_K ids). */
static void s_check_rows(const uint64_t *qids, const uint64_t *res, size_t nq, s_check_t *chk)
{
    for (size_t q = 0; q < nq; q++) {
        const uint64_t *row = res + q * S_SEARCH_K;
        int self = 0;
        for (size_t a = 0; a < S_SEARCH_K; a++) {
            self |= row[a] == qids[q];
            for (size_t b = a + 1; row[a] != UINT64_MAX && b < S_SEARCH_K; b++) {
                if (row[a] == row[b]) {
                    chk->duplicated++;
                    S_VIOLATION(chk, "duplicated: exact search for id %" PRIu64
                                     " returned id %" PRIu64 " twice\n",
                                qids[q], row[a]);
                }
            }
        }
        if (!self) {
            chk->search_missed++;
            S_VIOLATION(chk, "search_missed: exact search with id %" PRIu64
                             "'s own vector did not return it\n",
                        qids[q]);
        }
    }
}

/*
 * 3. Exact search (every list probed) of an evenly strided sample of the
 * stored vectors: each id at most once per answer, and the vector's own id
 * among them.
 */
static int s_check_search(shoal_client_t *coord, const s_opts_t *o, const uint8_t *present,
                          const uint32_t *state, s_check_t *chk, shoal_err_t *err)
{
    size_t cap = o->search_sample ? o->search_sample : 1, nq = 0;
    uint64_t *qids = malloc(cap * sizeof *qids);
    float *queries = malloc(cap * o->dim * sizeof *queries);
    int rc = qids && queries ? 0 : shoal_err_set(err, SHOAL_ENOMEM, "no memory for the sample");
    size_t stride = chk->present > o->search_sample ? chk->present / o->search_sample : 1;
    for (size_t i = 0, seen = 0; rc == 0 && i < o->nids && nq < o->search_sample; i++) {
        if (!present[i] || state[i] == UINT32_MAX || seen++ % stride != 0)
            continue;
        qids[nq] = i + 1;
        s_vector(o->seed, i + 1, state[i], o->dim, queries + nq * o->dim);
        nq++;
    }
    shoal_search_opts_t sopts = {.k = S_SEARCH_K, .mode = WIRE_MODE_EXACT, .nprobe = o->nlist,
                                 .deadline_ms = S_CHECK_TIMEOUT_MS};
    for (size_t at = 0; rc == 0 && at < nq; at += S_SEARCH_CHUNK) {
        size_t m = nq - at < S_SEARCH_CHUNK ? nq - at : S_SEARCH_CHUNK;
        uint64_t *res = NULL;
        shoal_search_info_t info;
        rc = shoal_client_search_ex(coord, S_COLL, queries + at * o->dim, m, o->dim, &sopts, &res,
                                    NULL, &info, err);
        if (rc == 0 && info.partial)
            rc = shoal_err_set(err, SHOAL_EUNAVAIL, "exact search: partial answer, missing %s",
                               info.missing);
        if (rc == 0)
            s_check_rows(qids + at, res, m, chk);
        free(res);
    }
    if (rc == 0)
        printf("searched=%zu\n", nq);
    free(qids);
    free(queries);
    return rc;
}

/* Every check of the end state; the counts of what failed go to *chk. */
static int s_check(s_cluster_t *cl, const s_opts_t *o, const s_idstate_t *model, s_check_t *chk,
                   shoal_err_t *err)
{
    memset(chk, 0, sizeof *chk);
    uint8_t *present = calloc(o->nids, 1);
    uint32_t *state = calloc(o->nids, sizeof *state);
    shoal_client_t *coord = s_client(cl->listen[S_NSHARDS], S_CHECK_TIMEOUT_MS, err);
    int rc = 0;
    if (!present || !state || !coord) {
        rc = coord ? shoal_err_set(err, SHOAL_ENOMEM, "no memory for the checks")
                   : (err->code ? err->code : SHOAL_ENOMEM);
        goto done;
    }
    rc = s_get_all(o, coord, model, present, state, err);
    if (rc != 0)
        goto done;
    s_check_model(o, model, present, state, chk);
    rc = s_check_shards(cl, o, model, present, chk, err);
    if (rc == 0)
        rc = s_check_search(coord, o, present, state, chk, err);
    if (rc == 0)
        rc = bench_stat(coord, S_COLL, "collections." S_COLL ".count", &chk->coord_count, err);
    if (rc != 0)
        goto done;
    /*
     * 4. The shards' sum against the ids the coordinator's gets found needs no
     * test of its own: a difference is an orphan or a duplicate, counted above.
     */
    double d = chk->coord_count - chk->shard_sum;
    chk->count_mismatch = (size_t)(d < 0 ? -d : d);
    if (chk->count_mismatch)
        S_VIOLATION(chk, "count: the coordinator counts %.0f, the shards hold %.0f (%.0f + %.0f + "
                         "%.0f), its gets found %zu\n",
                    chk->coord_count, chk->shard_sum, chk->shard_counts[0],
                    chk->shard_counts[1], chk->shard_counts[2], chk->present);
done:
    shoal_client_destroy(&coord);
    free(present);
    free(state);
    return rc;
}

/*
 * --plant: three faults written straight to the shards, behind the
 * coordinator's back, so a run shows that the checks can fail: an
 * acknowledged id deleted everywhere (lost), an acknowledged-deleted id put
 * back on shard 0 (an orphan), a stored id put on every shard (duplicated).
 */
static int s_plant(s_cluster_t *cl, const s_opts_t *o, const s_idstate_t *model,
                   shoal_err_t *err)
{
    uint64_t lost = 0, orphan = 0, dup = 0;
    uint32_t orphan_v = 0, dup_v = 0;
    for (size_t i = 0; i < o->nids; i++) {
        const s_idstate_t *st = &model[i];
        if (st->ncand != 1 || st->wide)
            continue;
        if (st->cand[0] == 0 && st->version && !orphan)
            orphan = i + 1, orphan_v = st->version;
        else if (st->cand[0] && !lost)
            lost = i + 1;
        else if (st->cand[0] && !dup)
            dup = i + 1, dup_v = st->cand[0];
    }
    if (!lost || !orphan || !dup)
        return shoal_err_set(err, SHOAL_EINVAL, "--plant: the run left no ids to plant faults on");
    float *vec = malloc(o->dim * sizeof *vec);
    if (!vec)
        return shoal_err_set(err, SHOAL_ENOMEM, "no memory");
    int rc = 0;
    for (size_t s = 0; rc == 0 && s < S_NSHARDS; s++) {
        shoal_client_t *sc = s_client(cl->listen[s], S_CHECK_TIMEOUT_MS, err);
        rc = sc ? 0 : (err->code ? err->code : SHOAL_ENOMEM);
        if (rc == 0)
            rc = shoal_client_delete(sc, S_COLL, &lost, 1, NULL, NULL, err);
        if (rc == 0) {
            s_vector(o->seed, dup, dup_v, o->dim, vec);
            rc = shoal_client_insert(sc, S_COLL, &dup, vec, 1, o->dim, NULL, err);
        }
        if (rc == 0 && s == 0) {
            s_vector(o->seed, orphan, orphan_v, o->dim, vec);
            rc = shoal_client_insert(sc, S_COLL, &orphan, vec, 1, o->dim, NULL, err);
        }
        shoal_client_destroy(&sc);
    }
    if (rc == 0)
        printf("plant: deleted id %" PRIu64 " everywhere, put id %" PRIu64 " back on shard 0, "
               "id %" PRIu64 " on every shard\n",
               lost, orphan, dup);
    else
        shoal_err_prefix(err, "--plant");
    free(vec);
    return rc;
}

/* Polls the coordinator's pending_intents until 0 or settle_s passed; *left gets the last value. */
static int s_settle(s_cluster_t *cl, double settle_s, double *left, shoal_err_t *err)
{
    shoal_client_t *c = s_client(cl->listen[S_NSHARDS], 2000, err);
    if (!c)
        return err->code ? err->code : SHOAL_ENOMEM;
    double start = timing_now();
    int rc;
    for (;;) {
        rc = bench_stat(c, NULL, "pending_intents", left, err);
        if (rc != 0 || *left == 0 || timing_now() - start > settle_s)
            break;
        bench_sleep_ms(100);
    }
    printf("settle_s=%.1f pending_intents=%.0f\n", timing_now() - start, *left);
    shoal_client_destroy(&c);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* chaos: the run                                                           */
/* ------------------------------------------------------------------------ */

/*
 * The chaos run: start the cluster and the writer, kill and restart a process
 * per cycle, then restart cleanly, settle and check what was acknowledged.
 * Long because it is one linear script of phases sharing the cluster, the
 * writer and one cleanup path; each phase's work is already in a helper.
 */
static int s_chaos_run(const void *opts, shoal_err_t *err)
{
    const s_opts_t *o = opts;
    zsys_handler_set(NULL); /* Ctrl-C stops the run; the children die with it */
    s_cluster_t *cl = calloc(1, sizeof *cl);
    s_writer_t *w = calloc(1, sizeof *w);
    int rc = cl && w ? 0 : shoal_err_set(err, SHOAL_ENOMEM, "no memory");
    int violated = 0, thread_started = 0;
    pthread_t thread;
    if (rc == 0) {
        w->ids = calloc(o->nids, sizeof *w->ids);
        if (!w->ids)
            rc = shoal_err_set(err, SHOAL_ENOMEM, "no memory for %zu ids", o->nids);
        for (size_t i = 0; rc == 0 && i < o->nids; i++)
            s_model_ack(&w->ids[i], 0); /* never written: absent */
    }
    if (rc == 0)
        rc = s_cluster_init(cl, o, err);
    printf("chaos seed=%" PRIu64 " cycles=%zu seconds=%zu ids=%zu batch=%zu dim=%zu nlist=%zu "
           "ports=%zu-%zu\n",
           o->seed, o->cycles, o->seconds, o->nids, o->batch, o->dim, o->nlist, o->port_base,
           o->port_base + S_NSHARDS);
    fflush(stdout);
    double t0 = timing_now();
    if (rc == 0)
        rc = s_cluster_start(cl, err);
    if (rc == 0)
        rc = s_collection_make(cl, o, o->nlist * 40 < 4000 ? o->nlist * 40 : 4000, err);
    if (rc != 0)
        goto done;

    /* the writer runs from here until every cycle is done */
    w->o = o;
    w->endpoint = cl->listen[S_NSHARDS];
    w->rng = o->seed ^ 0xa5a5a5a5a5a5a5a5ull;
    atomic_init(&w->stop, 0);
    atomic_init(&w->setup_rc, 0);
    atomic_init(&w->batches, 0);
    atomic_init(&w->failed_batches, 0);
    if (pthread_create(&thread, NULL, s_writer_main, w) != 0) {
        rc = shoal_err_set(err, SHOAL_EIO, "cannot start the writer thread");
        goto done;
    }
    thread_started = 1;

    /*
     * The kill schedule: per cycle, a run of [0.2, 0.8) x budget, then kill -9
     * of a random process, then a pause of [0.05, 0.3) x budget before its
     * restart (budget = --seconds / --cycles). Restarts add their own time.
     */
    uint64_t rng = o->seed;
    double budget = (double)o->seconds / (double)o->cycles;
    size_t kills[S_NPROCS] = {0};
    size_t cycles = 0;
    for (; cycles < o->cycles; cycles++) {
        bench_sleep_ms((long)(1000.0 * s_uniform(&rng, 0.2, 0.8) * budget));
        if (atomic_load(&w->setup_rc) != 0)
            break;
        size_t victim = (size_t)(s_rand(&rng) % S_NPROCS);
        double pause = s_uniform(&rng, 0.05, 0.3) * budget;
        pid_t pid = cl->procs[victim].pid;
        bench_child_kill(&cl->procs[victim]);
        kills[victim]++;
        bench_sleep_ms((long)(1000.0 * pause));
        double r0 = timing_now();
        rc = s_proc_start(cl, victim, err);
        printf("cycle %zu: kill -9 %s (pid %d), down %.2f s, back in %.2f s; batches %" PRIu64
               " (%" PRIu64 " failed)\n",
               cycles + 1, cl->procs[victim].name, (int)pid, pause, timing_now() - r0,
               (uint64_t)atomic_load(&w->batches), (uint64_t)atomic_load(&w->failed_batches));
        fflush(stdout);
        if (rc != 0) {
            shoal_err_prefix(err, "cycle %zu: restarting %s", cycles + 1, cl->procs[victim].name);
            break;
        }
    }
    /* Counters are read after the join, once the writer has stopped touching them. */
    atomic_store(&w->stop, 1);
    pthread_join(thread, NULL);
    thread_started = 0;
    if (rc == 0 && atomic_load(&w->setup_rc) != 0)
        rc = shoal_err_set(err, atomic_load(&w->setup_rc), "writer: %s", w->setup_err.msg);
    if (rc != 0)
        goto done;
    double chaos_s = timing_now() - t0;
    printf("chaos_s=%.1f kills: shard0=%zu shard1=%zu shard2=%zu coordinator=%zu\n", chaos_s,
           kills[0], kills[1], kills[2], kills[3]);
    printf("batches=%" PRIu64 " acked=%" PRIu64 " failed=%" PRIu64 " (timeouts %" PRIu64
           ") id_writes: inserts=%" PRIu64 " upserts=%" PRIu64 " deletes=%" PRIu64 "\n",
           (uint64_t)w->batches, w->acked_batches, (uint64_t)w->failed_batches, w->timeouts,
           w->inserts, w->upserts,
           w->deletes);
    if (w->last_error[0])
        printf("last_write_error=\"%s\"\n", w->last_error);

    /* a clean restart of everything, then the coordinator re-drives its intents */
    size_t unclean = 0;
    s_cluster_stop(cl, &unclean);
    rc = s_cluster_start(cl, err);
    if (rc != 0) {
        shoal_err_prefix(err, "the clean restart after the cycles");
        goto done;
    }
    s_check_t chk;
    memset(&chk, 0, sizeof chk);
    rc = s_settle(cl, (double)o->settle_seconds, &chk.pending_intents, err);
    double left = chk.pending_intents;
    if (rc == 0 && o->plant)
        rc = s_plant(cl, o, w->ids, err);
    if (rc == 0)
        rc = s_check(cl, o, w->ids, &chk, err);
    if (rc != 0)
        goto done;
    chk.pending_intents = left;
    printf("coordinator_count=%.0f shard_counts=%.0f,%.0f,%.0f present_by_get=%zu "
           "unclean_stops=%zu\n",
           chk.coord_count, chk.shard_counts[0], chk.shard_counts[1], chk.shard_counts[2],
           chk.present, unclean);
    size_t bad = chk.lost + chk.duplicated + chk.resurrected + chk.count_mismatch + chk.wrong +
                 chk.orphans + chk.search_missed;
    violated = bad != 0;
    printf("RESULT chaos cycles=%zu acked_writes=%" PRIu64 " vectors=%zu lost=%zu "
           "duplicated=%zu resurrected=%zu count_mismatch=%zu wrong=%zu orphans=%zu "
           "search_missed=%zu unknown_writes=%" PRIu64 " pending_intents=%.0f seed=%" PRIu64
           " seconds=%.0f\n",
           cycles, w->acked_writes, chk.present, chk.lost, chk.duplicated, chk.resurrected,
           chk.count_mismatch, chk.wrong, chk.orphans, chk.search_missed, w->unknown_writes,
           chk.pending_intents, o->seed, timing_now() - t0);
    if (o->plant) {
        /* Other violations may come with the planted ones; these three must. */
        int seen = chk.lost > 0 && chk.orphans > 0 && chk.duplicated > 0;
        printf("plant: the checks %s the planted faults\n", seen ? "reported" : "MISSED");
        if (!seen)
            rc = shoal_err_set(err, SHOAL_EINTERNAL, "--plant: a planted fault went unreported");
    } else if (violated) {
        rc = shoal_err_set(err, SHOAL_EINTERNAL,
                           "%zu violations (see VIOLATION lines; seed %" PRIu64 ")", bad,
                           o->seed);
    }
done:
    if (thread_started) {
        atomic_store(&w->stop, 1);
        pthread_join(thread, NULL);
    }
    if (cl) {
        if (rc != 0)
            s_logs_tail(cl);
        s_cluster_fini(cl, o->keep || rc != 0);
    }
    if (w)
        free(w->ids);
    free(w);
    free(cl);
    fflush(stdout);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* leak                                                                     */
/* ------------------------------------------------------------------------ */

/* One client thread of the leak run. */
typedef struct {
    const s_opts_t *o;
    const char *endpoint;
    size_t index;         /* 0 or 1: its id ring is [index * 2 live, (index + 1) * 2 live) */
    atomic_int *stop;
    uint64_t rng;
    atomic_uint_fast64_t searches; /* the next three are also read by the progress lines */
    atomic_uint_fast64_t inserted;
    atomic_uint_fast64_t deleted;
    uint64_t errors;
    char last_error[SHOAL_ERR_MSG_MAX + 32];
} s_leaker_t;

static void *s_leaker_main(void *arg)
{
    s_leaker_t *l = arg;
    const s_opts_t *o = l->o;
    size_t b = o->batch, ring = 2 * o->live, nq = o->nq;
    uint64_t base = (uint64_t)l->index * ring + 1;
    uint64_t *ids = malloc(b * sizeof *ids);
    float *vecs = malloc((b > nq ? b : nq) * o->dim * sizeof *vecs);
    shoal_err_t err;
    shoal_client_t *c = s_client(l->endpoint, S_CHECK_TIMEOUT_MS, &err);
    if (!ids || !vecs || !c) {
        l->errors++;
        snprintf(l->last_error, sizeof l->last_error, "setup: %s", c ? "no memory" : err.msg);
        goto done;
    }
    /*
     * Step t inserts ring slots [t b, t b + b) and, once live ids are present,
     * deletes the slots live behind: the set stays at live ids, and ids are
     * reused, so neither the shards' nor the catalog's key space grows.
     */
    for (uint64_t t = 0; !atomic_load(l->stop); t++) {
        for (size_t i = 0; i < b; i++) {
            ids[i] = base + (t * b + i) % ring;
            for (size_t d = 0; d < o->dim; d++)
                vecs[i * o->dim + d] = (float)s_uniform(&l->rng, -1, 1);
        }
        int rc = shoal_client_insert(c, S_COLL, ids, vecs, b, o->dim, NULL, &err);
        if (rc == 0)
            atomic_fetch_add(&l->inserted, b);
        if (rc == 0 && t * b >= o->live) {
            for (size_t i = 0; i < b; i++)
                ids[i] = base + (t * b + ring - o->live + i) % ring;
            rc = shoal_client_delete(c, S_COLL, ids, b, NULL, NULL, &err);
            if (rc == 0)
                atomic_fetch_add(&l->deleted, b);
        }
        if (rc == 0 && t * b >= o->live) {
            for (size_t i = 0; i < nq * o->dim; i++)
                vecs[i] = (float)s_uniform(&l->rng, -1, 1);
            uint64_t *res = NULL;
            shoal_search_opts_t sopts = {.k = S_SEARCH_K};
            rc = shoal_client_search(c, S_COLL, vecs, nq, o->dim, &sopts, &res, NULL, NULL, &err);
            free(res);
            if (rc == 0)
                atomic_fetch_add(&l->searches, nq);
        }
        if (rc != 0) {
            l->errors++;
            snprintf(l->last_error, sizeof l->last_error, "%s: %s", shoal_errname(rc), err.msg);
            bench_sleep_ms(S_ERROR_BACKOFF_MS);
        }
    }
done:
    shoal_client_destroy(&c);
    free(ids);
    free(vecs);
    return NULL;
}

/* The two clients' searches, inserted and deleted ids so far, summed. */
static void s_totals(s_leaker_t *leakers, uint64_t *searches, uint64_t *inserted,
                     uint64_t *deleted)
{
    *searches = *inserted = *deleted = 0;
    for (size_t i = 0; i < 2; i++) {
        *searches += atomic_load(&leakers[i].searches);
        *inserted += atomic_load(&leakers[i].inserted);
        *deleted += atomic_load(&leakers[i].deleted);
    }
}

/* VmRSS of pid in KiB, or 0 when it cannot be read. */
static double s_rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    double kib = 0;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) {
            kib = strtod(line + 6, NULL);
            break;
        }
    if (f)
        fclose(f);
    return kib;
}

/* Median of the n values at v (n <= S_RSS_TAIL). */
static double s_median(const double *v, size_t n)
{
    double tmp[S_RSS_TAIL];
    memcpy(tmp, v, n * sizeof *v);
    qsort(tmp, n, sizeof *tmp, timing_cmp_double);
    return n % 2 ? tmp[n / 2] : 0.5 * (tmp[n / 2 - 1] + tmp[n / 2]);
}

/* The least-squares slope, MiB per minute, of process i's samples [first, ns). */
static double s_rss_slope(const double *rss, const double *when, size_t first, size_t ns,
                          size_t i)
{
    double sx = 0, sy = 0, sxx = 0, sxy = 0, m = (double)(ns - first);
    for (size_t j = first; j < ns; j++) {
        double x = when[j] / 60.0, y = rss[j * S_NPROCS + i] / 1024;
        sx += x, sy += y, sxx += x * x, sxy += x * y;
    }
    double den = m * sxx - sx * sx;
    return den > 0 ? (m * sxy - sx * sy) / den : 0;
}

/* The lowest of process i's samples [from, to). */
static double s_rss_min(const double *rss, size_t from, size_t to, size_t i)
{
    double low = rss[from * S_NPROCS + i];
    for (size_t j = from + 1; j < to; j++)
        low = rss[j * S_NPROCS + i] < low ? rss[j * S_NPROCS + i] : low;
    return low;
}

/* Samples of process i in (from, to) that fell by a fifth or more: memtable flushes, mostly. */
static size_t s_rss_drops(const double *rss, size_t from, size_t to, size_t i)
{
    size_t drops = 0;
    for (size_t j = from + 1; j < to; j++)
        drops += rss[j * S_NPROCS + i] < 0.8 * rss[(j - 1) * S_NPROCS + i];
    return drops;
}

/*
 * Prints each process's RSS after warm-up (samples from first on) and at the
 * end (the last ones), with three views of the change:
 *   growth: end against after-warm-up, medians of S_RSS_TAIL samples each;
 *   low-water growth: the lowest sample of the second half against the
 *     lowest of the first. RocksDB's memtables (64 MiB each by default) fill
 *     and are flushed in a saw-tooth that can take most of a 10-minute run;
 *     the troughs of a saw-tooth do not rise unless memory is kept, but the
 *     comparison only means that when each half holds a drop (drops=a,b);
 *   slope: least squares over every sample after warm-up.
 * growth[0] / low[0] get the coordinator's, growth[1] / low[1] the largest
 * shard's.
 */
static void s_rss_report(const s_cluster_t *cl, const double *rss, const double *when,
                         size_t first, size_t ns, double growth[2], double low[2])
{
    growth[1] = low[1] = -1e9;
    size_t mid = first + (ns - first) / 2;
    for (size_t i = 0; i < S_NPROCS; i++) {
        double a[S_RSS_TAIL], z[S_RSS_TAIL];
        for (size_t j = 0; j < S_RSS_TAIL; j++) {
            a[j] = rss[(first + j) * S_NPROCS + i];
            z[j] = rss[(ns - S_RSS_TAIL + j) * S_NPROCS + i];
        }
        double start = s_median(a, S_RSS_TAIL), end = s_median(z, S_RSS_TAIL);
        double g = start > 0 ? 100.0 * (end - start) / start : 0;
        double low1 = s_rss_min(rss, first, mid, i), low2 = s_rss_min(rss, mid, ns, i);
        double lg = low1 > 0 ? 100.0 * (low2 - low1) / low1 : 0;
        printf("rss %-16s after_warmup_mib=%.1f end_mib=%.1f growth_pct=%.2f "
               "lowwater_mib=%.1f,%.1f lowwater_growth_pct=%.2f drops=%zu,%zu "
               "slope_mib_per_min=%.2f\n",
               cl->procs[i].name, start / 1024, end / 1024, g, low1 / 1024, low2 / 1024, lg,
               s_rss_drops(rss, first, mid, i), s_rss_drops(rss, mid - 1, ns, i),
               s_rss_slope(rss, when, first, ns, i));
        size_t k = i < S_NSHARDS ? 1 : 0;
        if (k == 0 || g > growth[1])
            growth[k] = g;
        if (k == 0 || lg > low[1])
            low[k] = lg;
    }
}

/*
 * The leak run: start the cluster and two clients, sample every process's RSS
 * once a second, then report growth after warm-up. Long because it is one
 * linear script of phases (start, sample, stop, report) sharing the cluster,
 * the clients and one cleanup path.
 */
static int s_leak_run(const void *opts, shoal_err_t *err)
{
    const s_opts_t *o = opts;
    zsys_handler_set(NULL);
    s_cluster_t *cl = calloc(1, sizeof *cl);
    size_t cap = o->seconds + 16;
    double *rss = calloc(cap * S_NPROCS, sizeof *rss); /* sample j of process i: rss[j * S_NPROCS + i] */
    double *when = calloc(cap, sizeof *when);
    s_leaker_t leakers[2];
    pthread_t threads[2];
    size_t started = 0;
    atomic_int stop;
    atomic_init(&stop, 0);
    memset(leakers, 0, sizeof leakers);
    for (size_t i = 0; i < 2; i++) {
        atomic_init(&leakers[i].searches, 0);
        atomic_init(&leakers[i].inserted, 0);
        atomic_init(&leakers[i].deleted, 0);
    }
    int rc = cl && rss && when ? 0 : shoal_err_set(err, SHOAL_ENOMEM, "no memory");
    if (rc == 0)
        rc = s_cluster_init(cl, o, err);
    printf("leak seconds=%zu warmup_s=%zu live=%zu x 2 clients batch=%zu nq=%zu dim=%zu nlist=%zu "
           "ports=%zu-%zu\n",
           o->seconds, o->warmup_seconds, o->live, o->batch, o->nq, o->dim, o->nlist,
           o->port_base, o->port_base + S_NSHARDS);
    fflush(stdout);
    if (rc == 0)
        rc = s_cluster_start(cl, err);
    if (rc == 0)
        rc = s_collection_make(cl, o, o->nlist * 50, err);
    if (rc != 0)
        goto done;

    for (size_t i = 0; i < 2; i++) {
        leakers[i].o = o;
        leakers[i].endpoint = cl->listen[S_NSHARDS];
        leakers[i].index = i;
        leakers[i].stop = &stop;
        leakers[i].rng = o->seed + 0x1000 * (i + 1);
        if (pthread_create(&threads[i], NULL, s_leaker_main, &leakers[i]) != 0) {
            rc = shoal_err_set(err, SHOAL_EIO, "cannot start client thread %zu", i);
            goto done;
        }
        started++;
    }

    /* one sample a second; a process that died ends the run */
    double t0 = timing_now();
    size_t ns = 0;
    while (ns < cap) {
        double now = timing_now() - t0;
        when[ns] = now;
        for (size_t i = 0; i < S_NPROCS; i++) {
            rss[ns * S_NPROCS + i] = s_rss_kib(cl->procs[i].pid);
            int status;
            if (waitpid(cl->procs[i].pid, &status, WNOHANG) == cl->procs[i].pid) {
                cl->procs[i].pid = 0;
                rc = shoal_err_set(err, SHOAL_EUNAVAIL, "%s died (status 0x%x) after %.0f s",
                                   cl->procs[i].name, status, now);
            }
        }
        ns++;
        if (rc != 0 || now >= (double)o->seconds)
            break;
        if (ns % 30 == 0) {
            uint64_t searches, inserted, deleted;
            s_totals(leakers, &searches, &inserted, &deleted);
            printf("t=%.0fs rss_mib: coordinator=%.1f shards=%.1f,%.1f,%.1f ops: searches=%" PRIu64
                   " inserted=%" PRIu64 " deleted=%" PRIu64 "\n",
                   now, rss[(ns - 1) * S_NPROCS + S_NSHARDS] / 1024,
                   rss[(ns - 1) * S_NPROCS] / 1024, rss[(ns - 1) * S_NPROCS + 1] / 1024,
                   rss[(ns - 1) * S_NPROCS + 2] / 1024,
                   searches, inserted, deleted);
            fflush(stdout);
        }
        double next = t0 + (double)ns;
        double wait = next - timing_now();
        if (wait > 0)
            bench_sleep_ms((long)(wait * 1000));
    }
    atomic_store(&stop, 1);
    for (size_t i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    started = 0;
    if (rc != 0)
        goto done;

    /* the first sample at or after warm-up, and the last S_RSS_TAIL samples */
    size_t first = 0;
    while (first < ns && when[first] < (double)o->warmup_seconds)
        first++;
    if (ns < first + 2 * S_RSS_TAIL) {
        rc = shoal_err_set(err, SHOAL_EINVAL, "only %zu samples after warm-up; run longer",
                           ns - first);
        goto done;
    }
    double growth[2], low[2]; /* [0]: the coordinator, [1]: the worst shard */
    s_rss_report(cl, rss, when, first, ns, growth, low);
    double secs = when[ns - 1];
    uint64_t searches, inserted, deleted;
    s_totals(leakers, &searches, &inserted, &deleted);
    uint64_t errors = leakers[0].errors + leakers[1].errors;
    printf("ops: searches=%" PRIu64 " (%.0f/s) inserted=%" PRIu64 " (%.0f/s) deleted=%" PRIu64
           " errors=%" PRIu64 " samples=%zu measured_from_s=%.0f\n",
           searches, searches / secs, inserted, inserted / secs, deleted, errors, ns,
           when[first]);
    for (size_t i = 0; i < 2; i++)
        if (leakers[i].last_error[0])
            printf("client %zu last_error=\"%s\"\n", i, leakers[i].last_error);
    size_t unclean = 0;
    s_cluster_stop(cl, &unclean);
    printf("RESULT leak coordinator_rss_growth_pct=%.2f shard_rss_growth_pct=%.2f "
           "coordinator_lowwater_growth_pct=%.2f shard_lowwater_growth_pct=%.2f "
           "seconds=%.0f errors=%" PRIu64 "\n",
           growth[0], growth[1], low[0], low[1], secs, errors);
done:
    atomic_store(&stop, 1);
    for (size_t i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    if (cl) {
        if (rc != 0)
            s_logs_tail(cl);
        s_cluster_fini(cl, o->keep || rc != 0);
    }
    free(cl);
    free(rss);
    free(when);
    fflush(stdout);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Entry points                                                             */
/* ------------------------------------------------------------------------ */

int bench_chaos_main(int argc, char **argv)
{
    s_opts_t o;
    return bench_command_main("chaos", argc, argv, &o, s_parse_chaos, s_usage_chaos, s_chaos_run);
}

int bench_leak_main(int argc, char **argv)
{
    s_opts_t o;
    return bench_command_main("leak", argc, argv, &o, s_parse_leak, s_usage_leak, s_leak_run);
}
