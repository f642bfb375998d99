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
 */
#ifndef SHOAL_SERVICE_H
#define SHOAL_SERVICE_H

/*
 * Creates the stop pipe and installs the handlers; prog prefixes the
 * "second signal" message. Returns the pipe's read end, or -1 after logging
 * "cannot install signal handlers: why" (nothing is left open then).
 */
int service_signals_install(const char *prog);

/* Closes the stop pipe (the handlers stay: a late signal is harmless). */
void service_signals_fini(void);

/* Writes "endpoint\n" to path atomically. 0, or -1 with errno set. */
int service_write_ready_file(const char *path, const char *endpoint);

/*
 * --ready-file at start: writes it unless path is "" (none asked). 0, or -1
 * after logging "cannot write the ready file PATH: why".
 */
int service_ready(const char *path, const char *endpoint);

/* --ready-file at a clean stop: removes it (path "" : nothing). */
void service_unready(const char *path);

#endif
