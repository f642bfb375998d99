/*
 * peers.c - the first request id of each client link (see peers.h).
 *
 * A linear scan of SHARD_PEERS_MAX short ids per request: a handful of
 * compares next to decoding the request, and no allocation after _new.
 */
#include "shard/peers.h"

#include <stdlib.h>
#include <string.h>

/* One link. */
typedef struct {
    uint8_t id[SHARD_PEERS_ID_MAX]; /* its routing id */
    size_t len;                     /* bytes in id; 0: the slot is free */
    uint64_t first_rid;             /* the first rid heard on it */
    uint64_t heard;                 /* the table's clock at its last request */
} s_peer_t;

struct shard_peers {
    s_peer_t peers[SHARD_PEERS_MAX]; /* the links, in no order */
    uint64_t clock;                  /* counts notes: orders the links by recency */
};

shard_peers_t *shard_peers_new(void)
{
    return calloc(1, sizeof(shard_peers_t));
}

void shard_peers_destroy(shard_peers_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    free(*self_p);
    *self_p = NULL;
}

uint64_t shard_peers_note(shard_peers_t *self, const void *id, size_t len, uint64_t rid)
{
    if (!self || rid == 0 || len == 0 || len > SHARD_PEERS_ID_MAX)
        return 0;
    self->clock++;
    s_peer_t *slot = NULL;
    for (size_t i = 0; i < SHARD_PEERS_MAX; i++) {
        s_peer_t *p = &self->peers[i];
        if (p->len == len && memcmp(p->id, id, len) == 0) {
            p->heard = self->clock;
            return p->first_rid;
        }
        if (!slot || (slot->len && (!p->len || p->heard < slot->heard)))
            slot = p;
    }
    memcpy(slot->id, id, len);
    slot->len = len;
    slot->first_rid = rid;
    slot->heard = self->clock;
    return rid;
}
