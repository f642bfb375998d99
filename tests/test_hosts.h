/*
 * test_hosts.h - many hosts on one machine (docs/architecture.md, issue 10):
 * a harness for tests and benchmarks that run shoal's processes on separate
 * "hosts", each a Linux network namespace with its own address.
 *
 * Layout. hosts_up(n) makes, all named "shoalt<pid>-<seq>-...":
 *   hub   a namespace holding only a bridge, br0;
 *   h<i>  n host namespaces: lo up, and eth0 with HOSTS_SUBNET.<i+1>/24, the
 *         inner end of a veth pair whose outer end, h<i>, is a port of br0;
 *   ctl   the controller namespace, wired the same way (.254): the test's own
 *         clients live there (hosts_enter_controller).
 * The bridge sits in a namespace of its own so that nothing is added to the
 * root namespace: every private address exists only inside namespaces this
 * harness made, and no packet to them can leave the machine. Each harness has
 * its own bridge, so all of them can use the same subnet (and the same ports:
 * every host has its own port space) without clashing.
 *
 * Faults. hosts_partition() sets the hub end of the host's veth down: the
 * bridge neither delivers to that port nor takes frames from it, and the
 * host's eth0 loses carrier, so both directions are cut, as when a cable is
 * pulled at the switch. The host itself keeps its address, routes and
 * sockets (its end stays administratively up), so established TCP
 * connections survive and resume on hosts_heal(), which is what a real
 * partition that heals looks like. Setting the host end down instead would
 * flush the host's routes and make its sends fail at once with an error,
 * which a real partition never does. hosts_freeze()/hosts_thaw() are
 * SIGSTOP/SIGCONT, hosts_kill9() is SIGKILL; a process is restarted by
 * spawning it again on the same host (same address, same data dir).
 *
 * Cleanup. hosts_down() kills every process the harness spawned and deletes
 * its namespaces (deleting the hub takes the bridge and every veth with it).
 * It also runs from atexit and from handlers for SIGINT, SIGTERM, SIGABRT,
 * SIGHUP and SIGQUIT (the handler then re-raises with the previous action);
 * the deletion is umount2 + unlink of /var/run/netns/NAME, as `ip netns del`
 * does, so it is async-signal-safe. Spawned processes die with the spawning
 * thread (PR_SET_PDEATHSIG). SIGKILL cannot be caught: every hosts_up()
 * first sweeps namespaces with the prefix whose creator pid no longer exists
 * (hosts_sweep()). A pid reused by a new process keeps its dead
 * predecessor's namespaces until a later sweep; they hold no process.
 * czmq installs its own SIGINT/SIGTERM handlers at first use, replacing these
 * ones; a program that wants them kept calls zsys_handler_set(NULL) first.
 *
 * Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) and iproute2's `ip`, run through
 * fork/exec with argv arrays (no shell). hosts_up() fails with
 * SHOAL_EUNSUPPORTED when the machine cannot make namespaces, so a test can
 * skip. Every function reports errors through shoal_err_t and asserts
 * nothing: the header serves Criterion suites and benchmarks alike, and
 * needs only libshoal_common (shoal_err_set). Users #define _GNU_SOURCE
 * before their first #include (setns, CLONE_NEWNET).
 *
 * Ownership and threads: hosts_up() returns an object the caller frees with
 * hosts_down(&hosts); strings returned are borrowed until then. One thread
 * drives a harness. Only the creating process cleans up (a forked child that
 * exits does not delete its parent's namespaces).
 */
#ifndef SHOAL_TESTS_TEST_HOSTS_H
#define SHOAL_TESTS_TEST_HOSTS_H

#ifndef _GNU_SOURCE
#error "tests/test_hosts.h needs setns(): #define _GNU_SOURCE before the first #include"
#endif

#include "common/error.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Every namespace name starts with this, then the creator's pid and '-'. */
#define HOSTS_PREFIX "shoalt"
/* Where `ip netns` keeps its named namespaces. */
#define HOSTS_NETNS_DIR "/var/run/netns"
/* Hosts get HOSTS_SUBNET "<i+1>", the controller HOSTS_SUBNET "254" (/24). */
#define HOSTS_SUBNET           "10.201.0."
#define HOSTS_CONTROLLER_OCTET 254
/* Most hosts of one harness: the /24 less the controller. */
#define HOSTS_MAX 200
/* Most processes one harness has running at once. */
#define HOSTS_PROCS_MAX 64
/* Harnesses alive at once in one process (the signal handler's registry). */
#define HOSTS_LIVE_MAX 8
/* Longest prefix, suffix ("h199", "hub"), namespace name and path built here. */
#define HOSTS_PREFIX_MAX 40
#define HOSTS_WHAT_MAX   24
#define HOSTS_NAME_MAX   (HOSTS_PREFIX_MAX + HOSTS_WHAT_MAX)
#define HOSTS_PATH_MAX   128

typedef struct hosts {
    size_t n;                      /* hosts */
    pid_t creator;                 /* the process that made them; only it cleans up */
    unsigned seq;                  /* which harness of that process */
    char prefix[HOSTS_PREFIX_MAX]; /* "shoalt<pid>-<seq>-": every namespace's name start */
    char (*addr)[16];              /* n addresses, text */
    char ctl_addr[16];             /* the controller's address */
    pid_t procs[HOSTS_PROCS_MAX];  /* spawned processes not yet reaped; 0 = free slot */
    int saved_netns;               /* the thread's namespace before entering ctl, or -1 */
} hosts_t;

/* ------------------------------------------------------------------------ */
/* Names and the registry                                                   */
/* ------------------------------------------------------------------------ */

/* "<prefix><what>" into out (HOSTS_NAME_MAX bytes). */
static inline const char *s_hosts_name(const hosts_t *h, char *out, const char *what)
{
    snprintf(out, HOSTS_NAME_MAX, "%s%s", h->prefix, what);
    return out;
}

/* Host i's namespace name into out (HOSTS_NAME_MAX bytes). */
static inline const char *s_hosts_host_name(const hosts_t *h, char *out, size_t i)
{
    char what[HOSTS_WHAT_MAX];
    snprintf(what, sizeof what, "h%zu", i);
    return s_hosts_name(h, out, what);
}

/*
 * The harnesses alive in this process, for the atexit and signal handlers:
 * a function-local static, as in tests/test_support.h, so that each
 * translation unit has one and users that never start a harness get no
 * unused-variable warning.
 */
static inline hosts_t *volatile *s_hosts_live(void)
{
    static hosts_t *volatile live[HOSTS_LIVE_MAX];
    return live;
}

/* ------------------------------------------------------------------------ */
/* Deleting namespaces (async-signal-safe)                                  */
/* ------------------------------------------------------------------------ */

/*
 * What `ip netns del NAME` does: detach the bind mount that keeps the
 * namespace alive and remove the file. The namespace itself goes once no
 * process is in it; with the hub go the bridge and every veth pair.
 * Returns 0, or -1 when there was no such namespace.
 */
static inline int s_hosts_netns_delete(const char *name)
{
    char path[HOSTS_PATH_MAX];
    size_t dl = strlen(HOSTS_NETNS_DIR), nl = strlen(name);
    if (dl + 1 + nl + 1 > sizeof path)
        return -1;
    /* by hand rather than snprintf, which is not async-signal-safe */
    memcpy(path, HOSTS_NETNS_DIR, dl);
    path[dl] = '/';
    memcpy(path + dl + 1, name, nl + 1);
    umount2(path, MNT_DETACH);
    return unlink(path) == 0 ? 0 : -1;
}

/*
 * Kills and reaps what h spawned, then deletes its namespaces. Safe in a
 * signal handler: kill, waitpid, umount2, unlink, and names built from
 * fields written before the handler could run.
 */
static inline void s_hosts_teardown(hosts_t *h)
{
    for (size_t p = 0; p < HOSTS_PROCS_MAX; p++)
        if (h->procs[p] > 0) {
            kill(h->procs[p], SIGKILL);
            waitpid(h->procs[p], NULL, 0);
            h->procs[p] = 0;
        }
    char name[HOSTS_NAME_MAX];
    size_t pl = strlen(h->prefix);
    memcpy(name, h->prefix, pl);
    for (size_t i = 0; i < h->n + 2; i++) {
        /* h<i>, then ctl and hub, written digit by digit (no snprintf) */
        size_t len = pl;
        if (i < h->n) {
            char digits[24];
            size_t nd = 0, v = i;
            do {
                digits[nd++] = (char)('0' + v % 10);
                v /= 10;
            } while (v);
            name[len++] = 'h';
            while (nd)
                name[len++] = digits[--nd];
        } else {
            const char *what = i == h->n ? "ctl" : "hub";
            memcpy(name + len, what, 3);
            len += 3;
        }
        name[len] = '\0';
        s_hosts_netns_delete(name);
    }
}

/* Tears down every harness this process created and still has. */
static inline void s_hosts_teardown_all(void)
{
    hosts_t *volatile *live = s_hosts_live();
    for (size_t k = 0; k < HOSTS_LIVE_MAX; k++) {
        hosts_t *h = live[k];
        if (h && h->creator == getpid()) {
            s_hosts_teardown(h);
            live[k] = NULL;
        }
    }
}

/* The signals whose default action ends the process and that we clean up on. */
static inline const int *s_hosts_signals(size_t *count)
{
    static const int sigs[] = {SIGINT, SIGTERM, SIGABRT, SIGHUP, SIGQUIT};
    *count = sizeof sigs / sizeof sigs[0];
    return sigs;
}

/* The actions those signals had before ours, to re-raise with. */
static inline struct sigaction *s_hosts_old_actions(void)
{
    static struct sigaction old[8];
    return old;
}

static inline void s_hosts_on_signal(int sig)
{
    int saved = errno;
    s_hosts_teardown_all();
    size_t count;
    const int *sigs = s_hosts_signals(&count);
    for (size_t k = 0; k < count; k++)
        if (sigs[k] == sig)
            sigaction(sig, &s_hosts_old_actions()[k], NULL);
    errno = saved;
    raise(sig); /* delivered with the previous action once this handler returns */
}

static inline void s_hosts_on_exit(void)
{
    s_hosts_teardown_all();
}

/* Installs the atexit and signal handlers, once per process. */
static inline void s_hosts_handlers_install(void)
{
    static pid_t installed_in;
    if (installed_in == getpid())
        return;
    /* a fork inherits the handlers; atexit is registered once per image */
    if (installed_in == 0)
        atexit(s_hosts_on_exit);
    installed_in = getpid();
    size_t count;
    const int *sigs = s_hosts_signals(&count);
    for (size_t k = 0; k < count; k++) {
        /* An ignored signal stays ignored (a background job of a non-interactive
           shell ignores SIGINT): cleaning up on it and re-raising it ignored
           would tear the hosts down under a process that goes on running. */
        struct sigaction cur;
        if (sigaction(sigs[k], NULL, &cur) == 0 && cur.sa_handler == SIG_IGN)
            continue;
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = s_hosts_on_signal;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = SA_RESETHAND; /* a second signal during cleanup ends the process */
        struct sigaction old;
        if (sigaction(sigs[k], &sa, &old) == 0 && old.sa_handler != s_hosts_on_signal)
            s_hosts_old_actions()[k] = old;
    }
}

/* ------------------------------------------------------------------------ */
/* Running `ip`                                                             */
/* ------------------------------------------------------------------------ */

/* The ip program: the usual places first, as sbin is not always on PATH. */
static inline const char *s_hosts_ip_path(void)
{
    static const char *const cands[] = {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"};
    for (size_t k = 0; k < sizeof cands / sizeof cands[0]; k++)
        if (access(cands[k], X_OK) == 0)
            return cands[k];
    return NULL;
}

/*
 * Runs ip with the NULL-terminated args to its exit. 0 on exit status 0;
 * else -1 with err set (code: SHOAL_EIO) to the command and what ip printed
 * on stderr.
 */
static inline int s_hosts_ip(const char *const *args, shoal_err_t *err)
{
    const char *ip = s_hosts_ip_path();
    if (!ip) {
        shoal_err_set(err, SHOAL_EUNSUPPORTED, "no ip command (iproute2) found");
        return -1;
    }
    char *argv[24];
    size_t argc = 0;
    argv[argc++] = (char *)ip;
    for (size_t k = 0; args[k] && argc < sizeof argv / sizeof argv[0] - 1; k++)
        argv[argc++] = (char *)args[k];
    argv[argc] = NULL;
    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) != 0) {
        shoal_err_set(err, SHOAL_EIO, "pipe: %s", strerror(errno));
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        close(pipefd[0]);
        close(pipefd[1]);
        shoal_err_set(err, SHOAL_EIO, "fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        dup2(pipefd[1], 2);
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
        }
        execv(ip, argv);
        _exit(127);
    }
    close(pipefd[1]);
    char out[160];
    size_t got = 0;
    ssize_t r;
    while ((r = read(pipefd[0], out + got, sizeof out - 1 - got)) != 0) {
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            break;
        got += (size_t)r;
        if (got == sizeof out - 1) {
            char sink[256]; /* keep draining so ip never blocks on a full pipe */
            while ((r = read(pipefd[0], sink, sizeof sink)) > 0 || (r < 0 && errno == EINTR)) {
            }
            break;
        }
    }
    out[got] = '\0';
    close(pipefd[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    out[strcspn(out, "\n")] = '\0';
    char cmd[160] = "ip";
    for (size_t k = 0; args[k]; k++) {
        size_t len = strlen(cmd);
        snprintf(cmd + len, sizeof cmd - len, " %s", args[k]);
    }
    shoal_err_set(err, SHOAL_EIO, "%s: %s (status 0x%x)", cmd, got ? out : "failed", status);
    return -1;
}

/* ------------------------------------------------------------------------ */
/* Sweeping what killed processes left                                      */
/* ------------------------------------------------------------------------ */

/*
 * The creator pid in a namespace name "shoalt<pid>-...", or 0 when the name
 * is not one of ours.
 */
static inline pid_t s_hosts_name_pid(const char *name)
{
    size_t pl = strlen(HOSTS_PREFIX);
    if (strncmp(name, HOSTS_PREFIX, pl) != 0)
        return 0;
    long pid = 0;
    const char *p = name + pl;
    if (*p < '0' || *p > '9')
        return 0;
    while (*p >= '0' && *p <= '9' && pid < 100000000L)
        pid = pid * 10 + (*p++ - '0');
    return *p == '-' ? (pid_t)pid : 0;
}

/*
 * Deletes every namespace named "shoalt<pid>-..." whose pid no longer exists
 * (a harness whose process was SIGKILLed). Returns how many it deleted;
 * deleting one that a concurrent sweep got first is not an error.
 */
static inline size_t hosts_sweep(void)
{
    DIR *dir = opendir(HOSTS_NETNS_DIR);
    if (!dir)
        return 0;
    size_t deleted = 0;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        pid_t pid = s_hosts_name_pid(e->d_name);
        if (pid <= 0 || pid == getpid())
            continue;
        if (kill(pid, 0) == 0 || errno != ESRCH)
            continue; /* alive (EPERM: alive too, someone else's) */
        if (s_hosts_netns_delete(e->d_name) == 0)
            deleted++;
    }
    closedir(dir);
    return deleted;
}

/* ------------------------------------------------------------------------ */
/* Up and down                                                              */
/* ------------------------------------------------------------------------ */

/*
 * Makes namespace ns ("hub"/"ctl"/"h<i>" after the prefix) a host on the
 * bridge: a veth pair, port ifname on br0 in the hub and eth0 with addr/24
 * in ns, both up, and lo up.
 */
static inline int s_hosts_wire(const hosts_t *h, const char *ns, const char *ifname,
                               const char *addr, shoal_err_t *err)
{
    char hub[HOSTS_NAME_MAX], cidr[24];
    s_hosts_name(h, hub, "hub");
    snprintf(cidr, sizeof cidr, "%s/24", addr);
    /* created in the hub with its peer placed straight into ns: never in the root namespace */
    const char *add[] = {"-n",   hub,    "link", "add",   ifname, "type", "veth",
                         "peer", "name", "eth0", "netns", ns,     NULL};
    const char *port[] = {"-n", hub, "link", "set", "dev", ifname, "master", "br0", "up", NULL};
    const char *ipaddr[] = {"-n", ns, "addr", "add", cidr, "dev", "eth0", NULL};
    const char *up[] = {"-n", ns, "link", "set", "dev", "eth0", "up", NULL};
    const char *lo[] = {"-n", ns, "link", "set", "dev", "lo", "up", NULL};
    const char *const *steps[] = {add, port, ipaddr, up, lo};
    for (size_t k = 0; k < sizeof steps / sizeof steps[0]; k++)
        if (s_hosts_ip(steps[k], err) != 0)
            return -1;
    return 0;
}

static inline int s_hosts_netns_add(const char *name, shoal_err_t *err)
{
    const char *args[] = {"netns", "add", name, NULL};
    return s_hosts_ip(args, err);
}

/* Unregisters h, tears it down and frees it. */
static inline void s_hosts_free(hosts_t *h)
{
    hosts_t *volatile *live = s_hosts_live();
    for (size_t k = 0; k < HOSTS_LIVE_MAX; k++)
        if (live[k] == h)
            live[k] = NULL;
    if (h->creator == getpid())
        s_hosts_teardown(h);
    free(h->addr);
    free(h);
}

/*
 * Creates the hub, n hosts and the controller (layout above), after sweeping
 * namespaces left by dead processes. Returns the harness (hosts_down()
 * frees it), or NULL with err: SHOAL_EUNSUPPORTED when this machine cannot
 * make namespaces (not root, no ip), SHOAL_EINVAL for n out of 1..HOSTS_MAX,
 * SHOAL_EIO when a step failed (nothing is left behind).
 */
static inline hosts_t *hosts_up(size_t n, shoal_err_t *err)
{
    static unsigned next_seq;
    if (n < 1 || n > HOSTS_MAX) {
        shoal_err_set(err, SHOAL_EINVAL, "hosts: %zu hosts, expected 1..%d", n, HOSTS_MAX);
        return NULL;
    }
    if (geteuid() != 0) {
        shoal_err_set(err, SHOAL_EUNSUPPORTED, "hosts: network namespaces need root (euid %d)",
                      (int)geteuid());
        return NULL;
    }
    if (!s_hosts_ip_path()) {
        shoal_err_set(err, SHOAL_EUNSUPPORTED, "hosts: no ip command (iproute2) found");
        return NULL;
    }
    hosts_sweep();
    hosts_t *volatile *live = s_hosts_live();
    size_t slot = 0;
    while (slot < HOSTS_LIVE_MAX && live[slot])
        slot++;
    if (slot == HOSTS_LIVE_MAX) {
        shoal_err_set(err, SHOAL_ELIMIT, "hosts: %d harnesses alive already", HOSTS_LIVE_MAX);
        return NULL;
    }
    hosts_t *h = calloc(1, sizeof *h);
    if (!h || !(h->addr = calloc(n, sizeof *h->addr))) {
        free(h);
        shoal_err_set(err, SHOAL_ENOMEM, "hosts: out of memory");
        return NULL;
    }
    h->creator = getpid();
    h->seq = next_seq++;
    h->saved_netns = -1;
    snprintf(h->prefix, sizeof h->prefix, "%s%ld-%u-", HOSTS_PREFIX, (long)h->creator, h->seq);
    for (size_t i = 0; i < n; i++)
        snprintf(h->addr[i], sizeof h->addr[i], "%s%zu", HOSTS_SUBNET, i + 1);
    snprintf(h->ctl_addr, sizeof h->ctl_addr, "%s%d", HOSTS_SUBNET, HOSTS_CONTROLLER_OCTET);
    h->n = n;
    /* registered before the first namespace exists, so a signal now removes it */
    s_hosts_handlers_install();
    live[slot] = h;

    shoal_err_t e; /* the steps report here: err may be NULL */
    char hub[HOSTS_NAME_MAX], ns[HOSTS_NAME_MAX];
    s_hosts_name(h, hub, "hub");
    const char *br[] = {"-n", hub, "link", "add", "br0", "type", "bridge", NULL};
    const char *br_up[] = {"-n", hub, "link", "set", "dev", "br0", "up", NULL};
    if (s_hosts_netns_add(hub, &e) != 0) {
        /* the first namespace: failing here means this machine cannot make them */
        e.code = SHOAL_EUNSUPPORTED;
        goto fail;
    }
    if (s_hosts_ip(br, &e) != 0 || s_hosts_ip(br_up, &e) != 0)
        goto fail;
    if (s_hosts_netns_add(s_hosts_name(h, ns, "ctl"), &e) != 0 ||
        s_hosts_wire(h, ns, "ctl", h->ctl_addr, &e) != 0)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        char port[HOSTS_WHAT_MAX];
        snprintf(port, sizeof port, "h%zu", i);
        if (s_hosts_netns_add(s_hosts_host_name(h, ns, i), &e) != 0 ||
            s_hosts_wire(h, ns, port, h->addr[i], &e) != 0)
            goto fail;
    }
    return h;
fail:
    shoal_err_set(err, e.code, "hosts_up(%zu): %s", n, e.msg);
    s_hosts_free(h);
    return NULL;
}

/*
 * Kills (SIGKILL) and reaps every process the harness spawned, puts the
 * calling thread back in the namespace it left for the controller's,
 * deletes the namespaces and frees. NULL-safe; sets *hosts_p to NULL.
 */
static inline void hosts_down(hosts_t **hosts_p)
{
    hosts_t *h = hosts_p ? *hosts_p : NULL;
    if (!h)
        return;
    if (h->saved_netns >= 0) {
        setns(h->saved_netns, CLONE_NEWNET);
        close(h->saved_netns);
        h->saved_netns = -1;
    }
    s_hosts_free(h);
    *hosts_p = NULL;
}

/* ------------------------------------------------------------------------ */
/* Addresses and namespaces                                                 */
/* ------------------------------------------------------------------------ */

static inline size_t hosts_count(const hosts_t *h)
{
    return h->n;
}

/* Host i's IPv4 address as text (borrowed until hosts_down), for "tcp://ADDR:PORT". */
static inline const char *hosts_addr(const hosts_t *h, size_t i)
{
    return i < h->n ? h->addr[i] : NULL;
}

/* The controller's address (borrowed until hosts_down). */
static inline const char *hosts_controller_addr(const hosts_t *h)
{
    return h->ctl_addr;
}

/* The namespace name prefix ("shoalt<pid>-<seq>-"; borrowed until hosts_down). */
static inline const char *hosts_prefix(const hosts_t *h)
{
    return h->prefix;
}

/* Moves the calling thread into namespace name (after the prefix). */
static inline int s_hosts_enter(const hosts_t *h, const char *what, int *saved, shoal_err_t *err)
{
    char name[HOSTS_NAME_MAX], path[HOSTS_PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", HOSTS_NETNS_DIR, s_hosts_name(h, name, what));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return shoal_err_set(err, SHOAL_EIO, "hosts: open %s: %s", path, strerror(errno));
    if (saved && *saved < 0)
        *saved = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    int rc = setns(fd, CLONE_NEWNET);
    int e = errno;
    close(fd);
    if (rc != 0)
        return shoal_err_set(err, SHOAL_EIO, "hosts: setns %s: %s", path, strerror(e));
    return 0;
}

/*
 * Moves the calling thread into the controller's namespace, from where it
 * reaches every host. Call it before anything creates a ZeroMQ context
 * (shoal_client_new does, at its first use): threads inherit their
 * creator's namespace, so ZeroMQ's I/O threads then live there too, while
 * the rest of the process stays where it was. hosts_down() moves the thread
 * back. 0 or a negative SHOAL_E* code with err.
 */
static inline int hosts_enter_controller(hosts_t *h, shoal_err_t *err)
{
    return s_hosts_enter(h, "ctl", &h->saved_netns, err);
}

/*
 * Moves the calling thread into host i's namespace, for good: for a forked
 * child that then acts as that host (a probe, a server written in C).
 */
static inline int hosts_enter(const hosts_t *h, size_t i, shoal_err_t *err)
{
    if (i >= h->n)
        return shoal_err_set(err, SHOAL_EINVAL, "hosts: host %zu of %zu", i, h->n);
    char what[HOSTS_WHAT_MAX];
    snprintf(what, sizeof what, "h%zu", i);
    return s_hosts_enter(h, what, NULL, err);
}

/* ------------------------------------------------------------------------ */
/* Processes                                                                */
/* ------------------------------------------------------------------------ */

static inline int s_hosts_proc_slot(const hosts_t *h, pid_t pid)
{
    for (int p = 0; p < HOSTS_PROCS_MAX; p++)
        if (pid > 0 && h->procs[p] == pid)
            return p;
    return -1;
}

/*
 * Starts argv[0] (a path; argv NULL-terminated) in host i's namespace, with
 * stdin from /dev/null and stdout and stderr appended to log_path. The
 * process dies with the calling thread (PR_SET_PDEATHSIG) and is the
 * harness's until reaped (hosts_wait, hosts_kill9, hosts_stop, hosts_down).
 * Returns its pid once it has exec'd, or -1 with err (SHOAL_EIO; the reason
 * the child could not enter the namespace or exec, when that was it).
 */
static inline pid_t hosts_spawn(hosts_t *h, size_t i, char *const argv[], const char *log_path,
                                shoal_err_t *err)
{
    if (i >= h->n) {
        shoal_err_set(err, SHOAL_EINVAL, "hosts: host %zu of %zu", i, h->n);
        return -1;
    }
    int slot = -1;
    for (int p = 0; slot < 0 && p < HOSTS_PROCS_MAX; p++)
        if (h->procs[p] == 0)
            slot = p;
    if (slot < 0) {
        shoal_err_set(err, SHOAL_ELIMIT, "hosts: %d processes running already", HOSTS_PROCS_MAX);
        return -1;
    }
    char name[HOSTS_NAME_MAX], path[HOSTS_PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", HOSTS_NETNS_DIR, s_hosts_host_name(h, name, i));
    /* the child reports a failure before exec through this pipe; exec closes it */
    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0) {
        shoal_err_set(err, SHOAL_EIO, "hosts: pipe: %s", strerror(errno));
        return -1;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        close(report[0]);
        close(report[1]);
        shoal_err_set(err, SHOAL_EIO, "hosts: fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        close(report[0]);
        int what = 0; /* 1 setns, 2 log, 3 exec */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127); /* the parent died before prctl: nothing to do */
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) {
            what = 1;
            goto child_fail;
        }
        int log = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (log < 0 || null < 0 || dup2(null, 0) < 0 || dup2(log, 1) < 0 || dup2(log, 2) < 0) {
            what = 2;
            goto child_fail;
        }
        execv(argv[0], argv);
        what = 3;
    child_fail:;
        int msg[2] = {what, errno};
        ssize_t unused = write(report[1], msg, sizeof msg);
        (void)unused;
        _exit(127);
    }
    close(report[1]);
    int msg[2];
    ssize_t got;
    while ((got = read(report[0], msg, sizeof msg)) < 0 && errno == EINTR) {
    }
    close(report[0]);
    if (got == (ssize_t)sizeof msg) {
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
        }
        static const char *const whats[] = {"?", "enter the namespace", "open the log", "exec"};
        shoal_err_set(err, SHOAL_EIO, "hosts: host %zu could not %s for %s: %s", i,
                      whats[msg[0] >= 1 && msg[0] <= 3 ? msg[0] : 0], argv[0], strerror(msg[1]));
        return -1;
    }
    h->procs[slot] = pid;
    return pid;
}

/* Forgets a reaped pid. */
static inline void s_hosts_forget(hosts_t *h, pid_t pid)
{
    int slot = s_hosts_proc_slot(h, pid);
    if (slot >= 0)
        h->procs[slot] = 0;
}

static inline double s_hosts_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/*
 * Waits up to wait_s (bounded polling) for a spawned process to exit; 1 with
 * *status (may be NULL) when it did (it is reaped and forgotten), 0 when it
 * is still running, -1 when pid is not the harness's.
 */
static inline int hosts_wait(hosts_t *h, pid_t pid, double wait_s, int *status)
{
    if (s_hosts_proc_slot(h, pid) < 0)
        return -1;
    double end = s_hosts_now() + wait_s;
    while (1) {
        int st = 0;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) {
            s_hosts_forget(h, pid);
            if (status)
                *status = st;
            return 1;
        }
        if (s_hosts_now() >= end)
            return 0;
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/*
 * Sends sig to one of the harness's processes. Refuses (-1) any other pid:
 * kill() with 0 or -1 would signal the whole process group or every process.
 */
static inline int hosts_signal(hosts_t *h, pid_t pid, int sig)
{
    if (s_hosts_proc_slot(h, pid) < 0)
        return -1;
    return kill(pid, sig);
}

/* SIGSTOP: the process keeps its sockets but answers nothing (a hung host). */
static inline int hosts_freeze(hosts_t *h, pid_t pid)
{
    return hosts_signal(h, pid, SIGSTOP);
}

/* SIGCONT after hosts_freeze. */
static inline int hosts_thaw(hosts_t *h, pid_t pid)
{
    return hosts_signal(h, pid, SIGCONT);
}

/* SIGKILL and reap (a frozen process dies too); returns the wait status, or -1. */
static inline int hosts_kill9(hosts_t *h, pid_t pid)
{
    if (hosts_signal(h, pid, SIGKILL) != 0)
        return -1;
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    s_hosts_forget(h, pid);
    return status;
}

/*
 * SIGTERM (a thawed process first gets SIGCONT, or it could not act on it),
 * then up to wait_s for its exit, then SIGKILL. Returns the wait status; 1
 * in *timed_out (may be NULL) when it had to be SIGKILLed.
 */
static inline int hosts_stop(hosts_t *h, pid_t pid, double wait_s, int *timed_out)
{
    if (hosts_signal(h, pid, SIGTERM) != 0)
        return -1;
    kill(pid, SIGCONT);
    int status = 0;
    int exited = hosts_wait(h, pid, wait_s, &status);
    if (timed_out)
        *timed_out = !exited;
    return exited ? status : hosts_kill9(h, pid);
}

/* ------------------------------------------------------------------------ */
/* Partitions                                                               */
/* ------------------------------------------------------------------------ */

static inline int s_hosts_port_set(const hosts_t *h, size_t i, const char *state, shoal_err_t *err)
{
    if (i >= h->n)
        return shoal_err_set(err, SHOAL_EINVAL, "hosts: host %zu of %zu", i, h->n);
    char hub[HOSTS_NAME_MAX], port[HOSTS_WHAT_MAX];
    s_hosts_name(h, hub, "hub");
    snprintf(port, sizeof port, "h%zu", i);
    const char *args[] = {"-n", hub, "link", "set", "dev", port, state, NULL};
    shoal_err_t e;
    if (s_hosts_ip(args, &e) == 0)
        return 0;
    return shoal_err_set(err, e.code, "%s", e.msg);
}

/*
 * Cuts host i off from every other host and the controller, both ways (the
 * hub end of its veth down; the header comment says why that end). Its
 * processes keep running. 0 or a negative SHOAL_E* code with err.
 */
static inline int hosts_partition(const hosts_t *h, size_t i, shoal_err_t *err)
{
    return s_hosts_port_set(h, i, "down", err);
}

/* Reconnects host i after hosts_partition. */
static inline int hosts_heal(const hosts_t *h, size_t i, shoal_err_t *err)
{
    return s_hosts_port_set(h, i, "up", err);
}

#endif
