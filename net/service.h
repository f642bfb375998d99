/*
 * service.h - what a shoal server process does around its loop: SIGTERM /
 * SIGINT become a byte on a stop pipe the loop polls (a second signal exits
 * at once with 128+signal), SIGPIPE is ignored, and the ready file tells a
 * supervisor the bound endpoint.
 *
 * The signal state is process-wide (one server per process): install once
 * from main before any thread starts, fini at the end. The ready file is
 * written through a temporary file and rename(2), so a reader never sees
 * half of it.
 *
 * The loop's side, shared by the shard server and the coordinator: a server
 * object has its own stop pipe (service_stop_t: its *_stop function pokes
 * it, from any thread or a signal handler) and also watches the process's
 * stop fd (the signal pipe above, handed in through its options); its poll
 * loop adds both to its items while it is not stopping and asks
 * service_stop_fired after the poll. At the end the ROUTER is closed with a
 * linger, so the last replies still leave (service_router_close).
 */
#ifndef SHOAL_SERVICE_H
#define SHOAL_SERVICE_H

#include <czmq.h>
#include <signal.h>
#include <stddef.h>

/* How long a closing server's ROUTER keeps unsent replies, in milliseconds. */
#define SERVICE_CLOSE_LINGER_MS 2000

/*
 * Creates the stop pipe and installs the handlers; prog prefixes the
 * "second signal" message. Returns the pipe's read end, or -1 after logging
 * "cannot install signal handlers: why" (nothing is left open then).
 */
int service_signals_install(const char *prog);

/* Closes the stop pipe (the handlers stay: a late signal is harmless). */
void service_signals_fini(void);

/*
 * Blocks SIGINT, SIGTERM and SIGHUP in the calling thread and puts the mask
 * it had in *old: threads started before the caller restores it
 * (pthread_sigmask(SIG_SETMASK, old, NULL)) inherit the block and leave the
 * stop signals to the main thread, whose handler the loop listens to.
 */
void service_signals_block(sigset_t *old);

/* Writes "endpoint\n" to path atomically. 0, or -1 with errno set. */
int service_write_ready_file(const char *path, const char *endpoint);

/*
 * --ready-file at start: writes it unless path is "" (none asked). 0, or -1
 * after logging "cannot write the ready file PATH: why".
 */
int service_ready(const char *path, const char *endpoint);

/* --ready-file at a clean stop: removes it (path "" : nothing). */
void service_unready(const char *path);

/* ---- the loop's side --------------------------------------------------- */

/* A wake-up pipe: both ends non-blocking and close-on-exec. 0, or -1 (errno). */
int service_pipe(int fds[2]);

/* Closes the ends of a pipe that are open (>= 0) and sets them to -1. */
void service_pipe_close(int fds[2]);

/* Writes one byte to a wake-up pipe's write end: async-signal-safe, errno
   kept; a full pipe already holds a wake-up, so a failed write is fine. */
void service_pipe_poke(int fd);

/* Reads whatever is waiting on a wake-up pipe's read end. */
void service_pipe_drain(int fd);

/* A server's stop sources. Embedded in the server object; the loop's. */
typedef struct {
    int pipe[2]; /* the server's own stop pipe: [1] poked by service_stop_request */
    int ext_fd;  /* the process's stop fd (service_signals_install's), or -1 */
    int i_pipe;  /* poll index of pipe[0] from the last service_stop_poll_add, or -1 */
    int i_ext;   /* poll index of ext_fd from the last service_stop_poll_add, or -1 */
} service_stop_t;

/* Makes the stop pipe; ext_fd is watched too (-1: none). 0, or -1 (errno; nothing open). */
int service_stop_init(service_stop_t *st, int ext_fd);

/* Closes the stop pipe (not ext_fd: the process's). Safe on a zeroed or failed init. */
void service_stop_fini(service_stop_t *st);

/* Asks the loop to stop: async-signal-safe, from any thread. */
void service_stop_request(service_stop_t *st);

/*
 * Puts the stop pipe and ext_fd (when >= 0) at items[n], items[n + 1] and
 * returns the new count; call it once per poll while not stopping.
 */
size_t service_stop_poll_add(service_stop_t *st, zmq_pollitem_t *items, size_t n);

/*
 * After the poll: 1 when a stop source the last service_stop_poll_add added
 * is readable (the stop pipe is then drained), else 0. Forgets the indices,
 * so a turn that added none (stopping) reads 0.
 */
int service_stop_fired(service_stop_t *st, const zmq_pollitem_t *items);

/* Closes a server's ROUTER, keeping its queued replies SERVICE_CLOSE_LINGER_MS. */
void service_router_close(zsock_t **router);

#endif
