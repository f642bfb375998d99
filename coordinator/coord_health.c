/*
 * coord_health.c - shard health: pings, up / down marking, restarts seen in
 * a ping's uptime, and the "shard came back" hooks. The loop (coord.c) calls
 * coord_health_tick every turn and coord_health_seen / coord_health_pinged
 * for every shard answer; coord_private.h has the contract.
 *
 * Why hooks for "shard came back": what a returning shard needs is the write
 * path's and the repair engine's business (every collection re-created
 * there; its replicas fenced and verified), so they register what to do
 * (coord_write_init, coord_repair_init) and health does not call into them.
 * Hooks run in registration order: collections are ensured before the
 * repair engine looks at the shard, as before the split.
 */
#include "coordinator/coord_private.h"

#include "common/log.h"

#include <assert.h>
#include <stdlib.h>

/* At start, how long to wait for the shard connections at most (ms). */
#define S_CONNECT_WAIT_MS 2000
/* A shard whose start (its ping's uptime) moved later by more than this restarted. */
#define S_RESTART_SLACK_S 1.0

void coord_on_shard_back(coord_t *coord, coord_shard_back_fn fn)
{
    /* A fixed table: the hooks are registered by code at start-up, not by input. */
    assert(coord->nshard_back < COORD_SHARD_BACK_HOOKS_MAX);
    coord->shard_back[coord->nshard_back++] = fn;
}

/* Shard s answered after being down (was_down), for the first time, or restarted. */
static void s_shard_back(coord_t *coord, size_t s, int was_down)
{
    for (size_t i = 0; i < coord->nshard_back; i++)
        coord->shard_back[i](coord, s, was_down);
}

/* Sends shard s a ping; its rid marks the ping outstanding. */
static void s_ping(coord_t *coord, size_t s)
{
    wire_request_t req;
    wire_request_init(&req);
    req.op = WIRE_OP_PING;
    if (coord_send(coord, NULL, s, 0, &req) == 0)
        coord->shards[s].ping_rid = req.rid;
}

void coord_health_seen(coord_t *coord, size_t s)
{
    coord_shard_t *shard = &coord->shards[s];
    shard->last_seen_us = zclock_usecs();
    if (shard->state == COORD_SHARD_UP)
        return;
    coord_shard_state_t was = shard->state;
    shard->state = COORD_SHARD_UP;
    if (was == COORD_SHARD_DOWN)
        log_info("shard %s is back up", shard->endpoint);
    else
        log_info("shard %s is up", shard->endpoint);
    s_shard_back(coord, s, was == COORD_SHARD_DOWN);
    if (!coord->stopping)
        coord_redrive_schedule(coord);
}

void coord_health_pinged(coord_t *coord, size_t s, const wire_reply_t *rep)
{
    coord_shard_t *shard = &coord->shards[s];
    double uptime = 0;
    if (rep->code != SHOAL_OK || !rep->info ||
        wire_info_lookup(rep->info, rep->info_len, "uptime_s", &uptime) != 0 || uptime < 0)
        return;
    /* A delayed answer only makes the estimate later: the earliest one is kept. */
    double started = (double)zclock_usecs() / 1e6 - uptime;
    double before = shard->started_s;
    if (before == 0 || started < before + S_RESTART_SLACK_S) {
        if (before == 0 || started < before)
            shard->started_s = started;
        return;
    }
    shard->started_s = started;
    log_warn("shard %s restarted (up %.1f s): its collections are ensured and its replicas "
             "verified",
             shard->endpoint, uptime);
    /* Not s_jobs_shard_down here: a ping answer delayed past S_RESTART_SLACK_S by a
       busy shard looks like a restart too, and requests sent since went to a process
       that answers them; what did go to a dead process waits out its deadline. */
    s_shard_back(coord, s, 1);
}

/*
 * Shard s was just marked down: every job with a request outstanding to it
 * is told at once (on_shard_down), rather than waiting out its deadline for
 * an answer that is not coming. A handler may end jobs, so the walk starts
 * over after each call; down_round keeps a job from being told twice.
 */
static void s_jobs_shard_down(coord_t *coord, size_t s)
{
    uint64_t round = ++coord->down_round;
    coord_job_t *job = coord->jobs;
    while (job) {
        if (s < job->nwaiting && job->waiting[s] && job->on_shard_down &&
            job->down_round != round) {
            job->down_round = round;
            job->on_shard_down(coord, job, s);
            job = coord->jobs;
            continue;
        }
        job = job->next;
    }
}

void coord_health_tick(coord_t *coord, int64_t now)
{
    if (now < coord->next_ping_us)
        return;
    for (size_t s = 0; s < coord->nshards; s++) {
        coord_shard_t *shard = &coord->shards[s];
        if (shard->removed)
            continue;
        int64_t since = shard->last_seen_us ? shard->last_seen_us : shard->linked_us;
        if (shard->state != COORD_SHARD_DOWN &&
            now - since > (int64_t)coord->opts.down_after_ms * 1000) {
            shard->state = COORD_SHARD_DOWN;
            log_warn("shard %s is down (no answer for %u ms)", shard->endpoint,
                     coord->opts.down_after_ms);
            s_jobs_shard_down(coord, s);
        }
        if (shard->ping_rid) {
            coord_pending_forget(coord, shard->ping_rid);
            shard->ping_rid = 0;
        }
        s_ping(coord, s);
    }
    coord->next_ping_us = now + (int64_t)coord->opts.ping_interval_ms * 1000;
}

void coord_health_connect_wait(coord_t *coord)
{
    uint32_t wait_ms = coord->opts.down_after_ms < S_CONNECT_WAIT_MS ? coord->opts.down_after_ms
                                                                     : S_CONNECT_WAIT_MS;
    int64_t until = zclock_usecs() + (int64_t)wait_ms * 1000;
    zmq_pollitem_t *items = calloc(coord->nshards, sizeof *items);
    if (!items)
        return;
    while (1) {
        int n = 0;
        for (size_t s = 0; s < coord->nshards; s++)
            if (!coord->shards[s].ping_rid && coord->shards[s].dealer)
                items[n++] =
                    (zmq_pollitem_t){zsock_resolve(coord->shards[s].dealer), 0, ZMQ_POLLOUT, 0};
        int64_t left_us = until - zclock_usecs();
        if (n == 0 || left_us <= 0)
            break;
        if (zmq_poll(items, n, (long)((left_us + 999) / 1000)) < 0 && zmq_errno() != EINTR)
            break;
        int i = 0;
        for (size_t s = 0; s < coord->nshards; s++) {
            if (coord->shards[s].ping_rid || !coord->shards[s].dealer ||
                !(items[i++].revents & ZMQ_POLLOUT))
                continue;
            s_ping(coord, s);
        }
    }
    free(items);
}
