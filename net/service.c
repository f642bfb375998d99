/*
 * service.c - signals and the ready file of a server process; service.h is
 * the contract. The handler only writes (async-signal-safe): one byte to the
 * stop pipe, or the prepared message before _exit.
 */
#include "net/service.h"

#include "common/log.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Signals seen so far; the second one exits at once. */
static volatile sig_atomic_t s_signals;
/* The first signal writes here; the server's loop polls the read end. */
static int s_stop_pipe[2] = {-1, -1};
/* "prog: second signal, exiting now\n", prepared at install. */
static char s_second_msg[128];
static size_t s_second_len;

static void s_on_signal(int sig)
{
    if (s_signals) {
        ssize_t w = write(2, s_second_msg, s_second_len);
        (void)w;
        _exit(128 + sig);
    }
    s_signals = 1;
    int saved = errno;
    ssize_t w = write(s_stop_pipe[1], "s", 1);
    (void)w;
    errno = saved;
}

int service_signals_install(const char *prog)
{
    int len = snprintf(s_second_msg, sizeof s_second_msg, "%s: second signal, exiting now\n", prog);
    s_second_len = len < 0                             ? 0
                   : (size_t)len < sizeof s_second_msg ? (size_t)len
                                                       : sizeof s_second_msg - 1;
    if (pipe(s_stop_pipe) != 0) {
        log_error("cannot install signal handlers: pipe: %s", strerror(errno));
        return -1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGINT, &sa, NULL) != 0) {
        log_error("cannot install signal handlers: sigaction: %s", strerror(errno));
        service_signals_fini();
        return -1;
    }
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
    return s_stop_pipe[0];
}

void service_signals_fini(void)
{
    for (int i = 0; i < 2; i++) {
        if (s_stop_pipe[i] >= 0)
            close(s_stop_pipe[i]);
        s_stop_pipe[i] = -1;
    }
}

int service_write_ready_file(const char *path, const char *endpoint)
{
    char tmp[4096 + 32];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
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

int service_ready(const char *path, const char *endpoint)
{
    if (!path[0] || service_write_ready_file(path, endpoint) == 0)
        return 0;
    log_error("cannot write the ready file %s: %s", path, strerror(errno));
    return -1;
}

void service_unready(const char *path)
{
    if (path[0])
        unlink(path);
}
