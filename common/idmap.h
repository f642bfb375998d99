/*
 * idmap.h - the one hash table keyed by a uint64 id: open addressing, linear
 * probing over a power-of-two table, backward-shift deletion (Knuth, TAOCP
 * vol. 3, 6.4 algorithm R: no tombstones, so probe runs do not lengthen with
 * deletes), splitmix64's finaliser as the hash (callers' ids are often
 * consecutive).
 *
 * Two uses, one table:
 *  - a map id -> size_t (the flat engine's id -> row): start from a zeroed
 *    idmap_t and call idmap_reserve before putting; it grows by rehashing
 *    and keeps at most 3/4 of its slots used;
 *  - a set of ids sized once (the store's batch dedup and allow-lists):
 *    idmap_set_init(n) makes a keys-only table of at least 2n + 1 slots that
 *    never grows, so n adds always fit and probes stay short.
 *
 * IDMAP_FREE (UINT64_MAX, which is TOPK_ID_NONE and HNSW_ID_NONE) marks a
 * free slot and can never be a key: every lookup of it says "absent".
 *
 * Not here: the HNSW index's id -> slot map (shard/hnsw.c). Its table holds
 * 4-byte slot numbers and reads each entry's key from the node the slot
 * names, a quarter of this table's 16 bytes per entry at a million-node
 * scale, and its probes compare through the node array; this table stores
 * keys inline. Putting it here would either grow the index's memory four
 * times over or put a key-reading callback in every probe.
 *
 * Thread-safety: none inside. Lookups (idmap_find, idmap_contains) on a
 * table nobody is changing are safe from several threads.
 */
#ifndef SHOAL_IDMAP_H
#define SHOAL_IDMAP_H

#include <stddef.h>
#include <stdint.h>

/* Marks an unused slot; never a key. */
#define IDMAP_FREE UINT64_MAX
/* idmap_find's answer for an absent key. */
#define IDMAP_NONE SIZE_MAX
/* Smallest table. */
#define IDMAP_CAP_MIN 16

typedef struct {
    uint64_t *keys; /* cap slots; IDMAP_FREE marks an unused one */
    size_t *vals;   /* vals[i] is keys[i]'s value; NULL in a set */
    size_t cap;     /* 0 or a power of two */
    size_t count;   /* keys held */
} idmap_t;

/* A keys-only set for up to n ids (at least 2n + 1 slots, never grows).
   0, or SHOAL_ENOMEM with *set zeroed. */
int idmap_set_init(idmap_t *set, size_t n);

/*
 * Makes room in a map (zeroed, or grown by earlier calls) for `want` keys
 * without another allocation, rehashing into a larger table if needed (at
 * most 3/4 used). 0, or SHOAL_ENOMEM with the map unchanged.
 */
int idmap_reserve(idmap_t *map, size_t want);

/* Frees the table and zeroes *m. Safe on a zeroed one. */
void idmap_fini(idmap_t *m);

/* key's value in a map, or IDMAP_NONE. */
size_t idmap_find(const idmap_t *map, uint64_t key);

/* 1 when key is held (map or set), else 0. */
int idmap_contains(const idmap_t *m, uint64_t key);

/* Sets key -> val in a map; room was reserved. */
void idmap_put(idmap_t *map, uint64_t key, size_t val);

/* Adds key to a set: 1 if added, 0 if already there (or IDMAP_FREE). The set
   must have room (at most the n it was made for). */
int idmap_add(idmap_t *set, uint64_t key);

/* Removes key, which must be held (a map's value goes with it). */
void idmap_remove(idmap_t *m, uint64_t key);

#endif
