/*
 * parfor.h - the one parallel-for: a range split into parts, part 0 run on
 * the calling thread, every other part on a thread of its own, all joined
 * before the call returns.
 *
 * A part whose thread cannot be started (pthread_create fails, or the handle
 * table cannot be allocated) is run on the calling thread after part 0:
 * slower, the same answer. So a caller whose parts write disjoint outputs and
 * add them up in part order gets bit-identical results for any thread count,
 * and never needs an error path for "no thread".
 *
 * Threads are started per call rather than kept in a pool: every caller's
 * part is milliseconds or more, a pthread_create microseconds.
 *
 * Thread-safety: parfor_each is reentrant; fn runs concurrently on distinct
 * items and must not touch another part's item. The items stay the caller's.
 */
#ifndef SHOAL_PARFOR_H
#define SHOAL_PARFOR_H

#include <stddef.h>

/* One part's work; item points at that part's element of the caller's array. */
typedef void (*parfor_fn)(void *item);

/*
 * Runs fn on each of the nitems elements of items (item_size bytes apart):
 * element 0 on the calling thread, the others concurrently on their own
 * threads (see above for when a thread cannot start). Returns when every
 * element has been run. nitems 0 does nothing.
 */
void parfor_each(void *items, size_t item_size, size_t nitems, parfor_fn fn);

/* First index of part `part` when [0, n) is split into nparts near-equal
 * parts; part nparts gives n. nparts >= 1, n * nparts must fit a size_t. */
static inline size_t parfor_split(size_t n, size_t nparts, size_t part)
{
    return n * part / nparts;
}

/* Processors online (sysconf), at least 1: the default thread count. Read
   once per process and kept: glibc reads it from /sys on every call (an
   open, a read and a close), which a coordinator routing single queries
   paid per query; a CPU brought online later is not seen until a restart. */
size_t parfor_cores(void);

#endif
