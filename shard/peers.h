/*
 * peers.h - the first request id each client link sent to this process.
 *
 * Why: a coordinator waits for the answer of every request it sent. When a
 * shard restarts quickly (systemd brings it back within a second), what was
 * sent to the old process is never answered, and nothing says so: the shard
 * was never silent long enough to be marked down. Request ids on one link
 * grow in the order the requests were sent, and ZeroMQ delivers them in that
 * order, so "the first rid this process got from you" splits the sender's
 * outstanding requests exactly: below it, sent to an earlier process (or lost
 * with a broken connection) and never to be answered; from it on, received
 * here and answered. The ping answer carries it (docs/protocol.md, ping).
 *
 * A link is the ROUTER's routing id of the peer's connection: a reconnect
 * gets a new one, so it starts over, which is right (what was in flight on
 * the old connection is lost too). The table holds SHARD_PEERS_MAX links and
 * forgets the least recently heard one when full; a forgotten link that comes
 * back starts over at its next request, which can only make its sender give
 * up on requests early, never wait for ever.
 *
 * Not thread-safe: the server's loop thread owns it. No sockets here.
 */
#ifndef SHOAL_SHARD_PEERS_H
#define SHOAL_SHARD_PEERS_H

#include <stddef.h>
#include <stdint.h>

/* Links remembered at once. */
#define SHARD_PEERS_MAX 64
/* Longest routing id kept (ZeroMQ's own limit is 255 bytes). */
#define SHARD_PEERS_ID_MAX 255

typedef struct shard_peers shard_peers_t;

/* An empty table (NULL: out of memory). Free with shard_peers_destroy. */
shard_peers_t *shard_peers_new(void);
void shard_peers_destroy(shard_peers_t **self_p);

/*
 * Request rid came from the link with routing id id (len bytes): the link's
 * first rid is returned, which is rid itself when the link is new here. A
 * rid of 0 (not known: an undecodable request) records nothing and returns 0,
 * as does an id longer than SHARD_PEERS_ID_MAX.
 */
uint64_t shard_peers_note(shard_peers_t *self, const void *id, size_t len, uint64_t rid);

#endif
