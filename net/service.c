/*
 * service.c - signals, the ready file and the loop skeleton (stop pipe,
 * stop items, ROUTER close) of a server process; service.h is the contract.
 * The handler only writes (async-signal-safe): one byte to the stop pipe, or
 * the prepared message before _exit.
 */
#include "net/service.h"

#include "common/log.h"

#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
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
    service_pipe_poke(s_stop_pipe[1]);
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
    service_pipe_close(s_stop_pipe);
}

void service_signals_block(sigset_t *old)
{
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &block, old);
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

/* ------------------------------------------------------------------------ */
/* The loop's side                                                          */
/* ------------------------------------------------------------------------ */

int service_pipe(int fds[2])
{
    if (pipe(fds) != 0)
        return -1;
    for (int i = 0; i < 2; i++) {
        fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
        fcntl(fds[i], F_SETFD, FD_CLOEXEC);
    }
    return 0;
}

void service_pipe_close(int fds[2])
{
    for (int i = 0; i < 2; i++) {
        if (fds[i] >= 0)
            close(fds[i]);
        fds[i] = -1;
    }
}

void service_pipe_poke(int fd)
{
    int saved = errno;
    ssize_t w = write(fd, "s", 1);
    (void)w; /* a full pipe already holds a wake-up */
    errno = saved;
}

void service_pipe_drain(int fd)
{
    char buf[64];
    while (read(fd, buf, sizeof buf) > 0) {
    }
}

int service_stop_init(service_stop_t *st, int ext_fd)
{
    st->pipe[0] = st->pipe[1] = -1;
    st->ext_fd = ext_fd;
    st->i_pipe = st->i_ext = -1;
    if (service_pipe(st->pipe) != 0) {
        int saved = errno;
        service_pipe_close(st->pipe);
        errno = saved;
        return -1;
    }
    return 0;
}

void service_stop_fini(service_stop_t *st)
{
    service_pipe_close(st->pipe);
}

void service_stop_request(service_stop_t *st)
{
    service_pipe_poke(st->pipe[1]);
}

size_t service_stop_poll_add(service_stop_t *st, zmq_pollitem_t *items, size_t n)
{
    st->i_pipe = (int)n;
    items[n++] = (zmq_pollitem_t){NULL, st->pipe[0], ZMQ_POLLIN, 0};
    st->i_ext = -1;
    if (st->ext_fd >= 0) {
        st->i_ext = (int)n;
        items[n++] = (zmq_pollitem_t){NULL, st->ext_fd, ZMQ_POLLIN, 0};
    }
    return n;
}

int service_stop_fired(service_stop_t *st, const zmq_pollitem_t *items)
{
    int fired = (st->i_pipe >= 0 && (items[st->i_pipe].revents & ZMQ_POLLIN)) ||
                (st->i_ext >= 0 && (items[st->i_ext].revents & ZMQ_POLLIN));
    st->i_pipe = st->i_ext = -1;
    if (fired)
        service_pipe_drain(st->pipe[0]);
    return fired;
}

void service_router_close(zsock_t **router)
{
    if (*router)
        zsock_set_linger(*router, SERVICE_CLOSE_LINGER_MS);
    zsock_destroy(router);
}
