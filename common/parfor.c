/*
 * parfor.c - the parallel-for of parfor.h: threads started per call, part 0
 * on the caller, a part whose thread cannot start run on the caller too.
 */
#include "common/parfor.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

/* Handles for this many extra threads live on the stack; more are allocated. */
#define S_STACK_PARTS 16

/* One started (or not started) part. */
typedef struct {
    pthread_t thread; /* valid when started */
    int started;      /* pthread_create succeeded: join it */
    parfor_fn fn;     /* the caller's work */
    void *item;       /* its element */
} s_part_t;

static void *s_part_main(void *arg)
{
    s_part_t *p = arg;
    p->fn(p->item);
    return NULL;
}

void parfor_each(void *items, size_t item_size, size_t nitems, parfor_fn fn)
{
    if (nitems == 0)
        return;
    char *base = items;
    s_part_t stack_parts[S_STACK_PARTS];
    s_part_t *parts = stack_parts;
    size_t nextra = nitems - 1;
    if (nextra > S_STACK_PARTS) {
        parts = malloc(nextra * sizeof *parts);
        if (!parts) {
            /* No table, no threads: every part here, in order. */
            for (size_t i = 0; i < nitems; i++)
                fn(base + i * item_size);
            return;
        }
    }
    for (size_t i = 0; i < nextra; i++) {
        parts[i] = (s_part_t){.fn = fn, .item = base + (i + 1) * item_size};
        parts[i].started = pthread_create(&parts[i].thread, NULL, s_part_main, &parts[i]) == 0;
    }
    fn(base);
    for (size_t i = 0; i < nextra; i++) {
        if (parts[i].started)
            pthread_join(parts[i].thread, NULL);
        else
            fn(parts[i].item);
    }
    if (parts != stack_parts)
        free(parts);
}

size_t parfor_cores(void)
{
    static atomic_size_t cached; /* 0 until the first call */
    size_t cores = atomic_load_explicit(&cached, memory_order_relaxed);
    if (cores == 0) {
        long online = sysconf(_SC_NPROCESSORS_ONLN);
        cores = online > 0 ? (size_t)online : 1;
        atomic_store_explicit(&cached, cores, memory_order_relaxed);
    }
    return cores;
}
