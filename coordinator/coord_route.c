/*
 * coord_route.c - routing: each collection's routing engine (its centroids
 * resident in an exact k-NN engine), and the routing thread that routes big
 * query batches off the loop.
 *
 * Why a thread: routing is an exact search of the queries over the
 * centroids, nq x nlist x dim multiply-adds. For one query that is
 * microseconds and is done inline. For a 100,000-query batch at nlist 4,096
 * and dim 128 it is 52 G multiply-adds, seconds on a CPU, and on the loop it
 * would hold every other client's requests behind it (a single query's p99
 * becomes the batch's routing time). From --route-inline-macs (default
 * COORD_ROUTE_INLINE_MACS_DEFAULT, coord.h) multiply-adds on, a batch
 * goes to the thread and the loop serves others meanwhile; below it a thread
 * hop would cost more than the work.
 *
 * Lifetimes. A task borrows its job (queries, output array) and the router's
 * engine. The job has no deadline and nothing outstanding until the task
 * comes back; when something else ends it meanwhile (a calibration reset, a
 * shutdown), coord_job_end drops the task first, waiting for the thread when
 * it is the one running (the rest of one routing, and only then), and
 * coord_destroy joins the thread before ending jobs. An engine forgotten meanwhile (drop, retrain) is
 * retired, not destroyed, until no task is in flight; a task whose engine is
 * no longer its collection's comes back SHOAL_EUNAVAIL (the lists it found
 * belong to centroids that are gone). Engines take concurrent searches
 * (gpu/knn.h), so the loop routes small batches with the same engine while
 * the thread works.
 *
 * Threads: the routing thread only runs knn_engine_search on its task; the
 * queue and the finished list are under route->mu; the loop learns of a
 * finished task by a byte on route->pipe.
 */
#include "coordinator/coord_private.h"

#include "common/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One batch to route on the thread. */
struct coord_route_task {
    coord_route_task_t *next;     /* queue / finished-list link */
    coord_job_t *job;             /* the job it routes for (borrowed) */
    coord_routed_fn done;         /* called on the loop when it is back */
    knn_engine_t *engine;         /* the collection's router when submitted (borrowed) */
    char coll[WIRE_NAME_MAX + 1]; /* the collection */
    uint32_t nlist;               /* its lists */
    const float *vecs;            /* n x dim queries (the job's) */
    size_t n, nprobe;             /* queries, lists per query */
    uint32_t *lists;              /* n x nprobe: the answer (the job's) */
    int rc;                       /* 0 or the failure */
    shoal_err_t err;              /* what failed */
};

/* ------------------------------------------------------------------------ */
/* Routing engines                                                          */
/* ------------------------------------------------------------------------ */

/* The router of collection name, or NULL (none built yet, or forgotten). */
static knn_engine_t *s_router_find(const coord_t *coord, const char *name)
{
    for (size_t i = 0; i < coord->nrouters; i++)
        if (!strcmp(coord->routers[i].name, name))
            return coord->routers[i].engine;
    return NULL;
}

void coord_router_forget(coord_t *coord, const char *name)
{
    for (size_t i = 0; i < coord->nrouters; i++) {
        if (strcmp(coord->routers[i].name, name) != 0)
            continue;
        knn_engine_t *engine = coord->routers[i].engine;
        coord->routers[i] = coord->routers[--coord->nrouters];
        coord_route_thread_t *route = &coord->route;
        if (route->inflight) {
            knn_engine_t **grown =
                realloc(route->retired, (route->nretired + 1) * sizeof *grown);
            if (grown) {
                route->retired = grown;
                route->retired[route->nretired++] = engine;
                return;
            }
            /* A task may still use it: leaking it is the only safe way out. */
            log_error("routing: out of memory retiring the router of \"%s\"; it is leaked",
                      name);
            return;
        }
        knn_engine_destroy(&engine);
        return;
    }
}

/* The router of coll, built from its centroids on first use. */
static knn_engine_t *s_router_get(coord_t *coord, const catalog_coll_t *coll, shoal_err_t *err)
{
    knn_engine_t *found = s_router_find(coord, coll->name);
    if (found)
        return found;
    coord_router_t *grown = realloc(coord->routers, (coord->nrouters + 1) * sizeof *grown);
    if (!grown) {
        shoal_err_set(err, SHOAL_ENOMEM, "routing: out of memory");
        return NULL;
    }
    coord->routers = grown;
    knn_params_t params = {.dim = coll->dim,
                           .metric = coll->metric,
                           .device = coord->device,
                           .threads = coord->opts.threads};
    knn_engine_t *engine = knn_engine_new(&params, err);
    if (!engine) {
        shoal_err_prefix(err, "collection \"%s\": routing engine", coll->name);
        return NULL;
    }
    uint64_t *ids = malloc(coll->nlist * sizeof *ids);
    int rc = ids ? 0 : shoal_err_set(err, SHOAL_ENOMEM, "routing: out of memory");
    for (size_t j = 0; ids && j < coll->nlist; j++)
        ids[j] = j;
    if (rc == 0)
        rc = knn_engine_add(engine, ids, coll->centroids, coll->nlist, err);
    free(ids);
    if (rc != 0) {
        knn_engine_destroy(&engine);
        shoal_err_prefix(err, "collection \"%s\": loading the centroids", coll->name);
        return NULL;
    }
    coord_router_t *r = &coord->routers[coord->nrouters++];
    snprintf(r->name, sizeof r->name, "%s", coll->name);
    r->engine = engine;
    return engine;
}

/* The checks both ways of routing make. */
static int s_route_check(const catalog_coll_t *coll, size_t nprobe, shoal_err_t *err)
{
    if (!coll->trained)
        return shoal_err_set(err, SHOAL_EINTERNAL, "collection \"%s\" is not trained", coll->name);
    if (nprobe == 0 || nprobe > coll->nlist)
        return shoal_err_set(err, SHOAL_EINVAL, "nprobe must be 1..%u, got %zu", coll->nlist,
                             nprobe);
    return 0;
}

/* Routes with engine: lists[i] for each of n x nprobe (a list >= nlist reads as 0). */
static int s_route_run(knn_engine_t *engine, const char *coll, uint32_t nlist, const float *vecs,
                       size_t n, size_t nprobe, uint32_t *lists, shoal_err_t *err)
{
    uint64_t *found = malloc(n * nprobe * sizeof *found);
    if (!found)
        return shoal_err_set(err, SHOAL_ENOMEM, "routing: out of memory for %zu x %zu lists", n,
                             nprobe);
    int rc = knn_engine_search(engine, vecs, n, nprobe, found, NULL, err);
    if (rc == 0)
        for (size_t i = 0; i < n * nprobe; i++)
            lists[i] = found[i] < nlist ? (uint32_t)found[i] : 0;
    else
        shoal_err_prefix(err, "collection \"%s\": routing", coll);
    free(found);
    return rc;
}

int coord_route(coord_t *coord, const catalog_coll_t *coll, const float *vecs, size_t n,
                size_t nprobe, uint32_t *lists, shoal_err_t *err)
{
    int rc = s_route_check(coll, nprobe, err);
    if (rc != 0 || n == 0)
        return rc;
    knn_engine_t *engine = s_router_get(coord, coll, err);
    if (!engine)
        return err ? err->code : SHOAL_EINTERNAL;
    return s_route_run(engine, coll->name, coll->nlist, vecs, n, nprobe, lists, err);
}

int coord_route_is_big(const coord_t *coord, const catalog_coll_t *coll, size_t n)
{
    size_t macs = coord->opts.route_inline_macs ? coord->opts.route_inline_macs
                                                : COORD_ROUTE_INLINE_MACS_DEFAULT;
    return (double)n * coll->nlist * coll->dim >= (double)macs;
}

/* ------------------------------------------------------------------------ */
/* The routing thread                                                       */
/* ------------------------------------------------------------------------ */

static void *s_route_main(void *arg)
{
    coord_route_thread_t *route = arg;
    pthread_mutex_lock(&route->mu);
    for (;;) {
        while (!route->queue && !route->quit)
            pthread_cond_wait(&route->cv, &route->mu);
        if (route->quit)
            break;
        coord_route_task_t *t = route->queue;
        route->queue = t->next;
        route->current = t;
        pthread_mutex_unlock(&route->mu);
        shoal_err_clear(&t->err);
        t->rc = s_route_run(t->engine, t->coll, t->nlist, t->vecs, t->n, t->nprobe, t->lists,
                            &t->err);
        pthread_mutex_lock(&route->mu);
        route->current = NULL;
        pthread_cond_broadcast(&route->idle);
        t->next = route->finished;
        route->finished = t;
        service_pipe_poke(route->pipe[1]); /* the loop collects what is finished */
    }
    pthread_mutex_unlock(&route->mu);
    return NULL;
}

int coord_route_thread_start(coord_t *coord, shoal_err_t *err)
{
    coord_route_thread_t *route = &coord->route;
    if (route->running)
        return 0;
    if (route->pipe[0] < 0) {
        if (service_pipe(route->pipe) != 0)
            return shoal_err_set(err, SHOAL_EIO, "coordinator: routing pipe: %s",
                                 strerror(errno));
    }
    route->quit = 0;
    int prc = coord_thread_start(&route->thread, s_route_main, route);
    if (prc != 0)
        return shoal_err_set(err, SHOAL_ENOMEM, "coordinator: cannot start the routing thread: %s",
                             strerror(prc));
    route->running = 1;
    return 0;
}

void coord_route_thread_stop(coord_t *coord)
{
    coord_route_thread_t *route = &coord->route;
    if (!route->running)
        return;
    pthread_mutex_lock(&route->mu);
    route->quit = 1;
    pthread_cond_signal(&route->cv);
    pthread_mutex_unlock(&route->mu);
    pthread_join(route->thread, NULL);
    route->running = 0;
}

int coord_route_submit(coord_t *coord, coord_job_t *job, const catalog_coll_t *coll,
                       const float *vecs, size_t n, size_t nprobe, uint32_t *lists,
                       coord_routed_fn done, shoal_err_t *err)
{
    coord_route_thread_t *route = &coord->route;
    int rc = s_route_check(coll, nprobe, err);
    if (rc != 0)
        return rc;
    if (!route->running)
        return shoal_err_set(err, SHOAL_EINTERNAL, "routing: the routing thread is not running");
    knn_engine_t *engine = s_router_get(coord, coll, err);
    if (!engine)
        return err ? err->code : SHOAL_EINTERNAL;
    coord_route_task_t *t = calloc(1, sizeof *t);
    if (!t)
        return shoal_err_set(err, SHOAL_ENOMEM, "routing: out of memory");
    t->job = job;
    t->done = done;
    t->engine = engine;
    snprintf(t->coll, sizeof t->coll, "%s", coll->name);
    t->nlist = coll->nlist;
    t->vecs = vecs;
    t->n = n;
    t->nprobe = nprobe;
    t->lists = lists;
    route->inflight++;
    job->routing = 1;
    pthread_mutex_lock(&route->mu);
    coord_route_task_t **tail = &route->queue;
    while (*tail)
        tail = &(*tail)->next;
    *tail = t;
    pthread_cond_signal(&route->cv);
    pthread_mutex_unlock(&route->mu);
    return 0;
}

void coord_route_collect(coord_t *coord)
{
    coord_route_thread_t *route = &coord->route;
    service_pipe_drain(route->pipe[0]);
    pthread_mutex_lock(&route->mu);
    coord_route_task_t *list = route->finished;
    route->finished = NULL;
    pthread_mutex_unlock(&route->mu);
    /* The finished list is newest first: hand them over oldest first. */
    coord_route_task_t *ordered = NULL;
    while (list) {
        coord_route_task_t *next = list->next;
        list->next = ordered;
        ordered = list;
        list = next;
    }
    while (ordered) {
        coord_route_task_t *t = ordered;
        ordered = t->next;
        route->inflight--;
        t->job->routing = 0;
        if (t->rc == 0 && s_router_find(coord, t->coll) != t->engine)
            t->rc = shoal_err_set(&t->err, SHOAL_EUNAVAIL,
                                  "collection \"%s\" was dropped or retrained while its queries "
                                  "were routed; retry",
                                  t->coll);
        t->done(coord, t->job, t->rc, &t->err);
        free(t);
    }
    if (route->inflight == 0) {
        for (size_t i = 0; i < route->nretired; i++)
            knn_engine_destroy(&route->retired[i]);
        route->nretired = 0;
    }
}

/* Unlinks and frees the tasks of job from *list; returns how many. */
static size_t s_tasks_drop(coord_route_task_t **list, const coord_job_t *job)
{
    size_t n = 0;
    while (*list) {
        coord_route_task_t *t = *list;
        if (t->job != job) {
            list = &t->next;
            continue;
        }
        *list = t->next;
        free(t);
        n++;
    }
    return n;
}

void coord_route_cancel(coord_t *coord, coord_job_t *job)
{
    coord_route_thread_t *route = &coord->route;
    pthread_mutex_lock(&route->mu);
    while (route->current && route->current->job == job)
        pthread_cond_wait(&route->idle, &route->mu);
    size_t n = s_tasks_drop(&route->queue, job) + s_tasks_drop(&route->finished, job);
    pthread_mutex_unlock(&route->mu);
    route->inflight -= n;
    job->routing = 0;
}

void coord_route_init(coord_t *coord)
{
    coord_route_thread_t *route = &coord->route;
    memset(route, 0, sizeof *route);
    route->pipe[0] = route->pipe[1] = -1;
    pthread_mutex_init(&route->mu, NULL);
    pthread_cond_init(&route->cv, NULL);
    pthread_cond_init(&route->idle, NULL);
}

void coord_route_fini(coord_t *coord)
{
    coord_route_thread_t *route = &coord->route;
    coord_route_thread_stop(coord);
    coord_route_task_t *lists[2] = {route->queue, route->finished};
    for (int i = 0; i < 2; i++)
        while (lists[i]) {
            coord_route_task_t *t = lists[i];
            lists[i] = t->next;
            t->job->routing = 0; /* its end needs no cancel now */
            free(t);
        }
    route->queue = route->finished = NULL;
    route->inflight = 0;
    for (size_t i = 0; i < route->nretired; i++)
        knn_engine_destroy(&route->retired[i]);
    free(route->retired);
    route->retired = NULL;
    route->nretired = 0;
    for (size_t i = 0; i < coord->nrouters; i++)
        knn_engine_destroy(&coord->routers[i].engine);
    free(coord->routers);
    coord->routers = NULL;
    coord->nrouters = 0;
    service_pipe_close(route->pipe);
    pthread_mutex_destroy(&route->mu);
    pthread_cond_destroy(&route->cv);
    pthread_cond_destroy(&route->idle);
}
