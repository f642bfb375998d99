/*
 * catalog.h - the coordinator's catalog, persisted in its own RocksDB
 * (net/kv.h): the shard registry, the collections (parameters, trained
 * centroids, list -> shard placement, per-list counts), the id -> list map,
 * the list -> ids membership used to walk a collection, and write intents.
 *
 * Keys (bytewise order; <c> is the collection name followed by one 0 byte;
 * integers big-endian so they sort numerically):
 *   F                     format record: magic "SHOALCAT", version u32
 *   S                     shard registry: count u32, then per shard u16 len + endpoint
 *   R/<shard u32>         a shard's role when not live: u8 CATALOG_SHARD_DRAINING or
 *                         CATALOG_SHARD_REMOVED (a removed shard keeps its index: placements
 *                         name shards by index, and an index is never reused for another)
 *   C/<c>                 collection record: magic, version, dim, metric, nlist, M,
 *                         ef_construction, nprobe, trained flag
 *   T/<c>                 trained state: magic, version, nlist, dim, then centroids
 *                         (nlist x dim float32 LE) and owners (nlist x u32 LE)
 *   Z/<c>                 sq8 collections, trained: the quantizer's record
 *                         (common/quant.h's layout, its own magic and version)
 *   N/<c><list u32>       ids in that list (u64 LE)
 *   I/<c><id u64>         id -> list (u32 LE)
 *   M/<c><list u32><id u64>  membership, empty value
 *   X/<c><txn u64>        write intent (see below)
 *   O/<c><list u32><r u8>  replica r of list owes writes (stale): empty value = it
 *                         is rebuilt whole, one byte 2 = it catches up on Q/ ids
 *   Q/<c><list u32><r u8><id u64>  an id that stale replica owes, empty value
 *   V/<c><list u32><r u8> a planned move of that replica: target shard u32 LE, state u8
 *                         (CATALOG_MOVE_QUEUED or CATALOG_MOVE_COPYING)
 *   D/<c><list u32><shard u32>  an orphan copy of the list on that shard, to be dropped
 *                         there: u8 CATALOG_ORPHAN_CURRENT or CATALOG_ORPHAN_STALE
 *   K/<c>                 recall calibration: magic, version, the count it was measured
 *                         at, k, queries, then per (nprobe, ef) point its recall and cost
 *   B/<snapshot name>     a cluster snapshot (coordinator/coord_snapshot.c): magic,
 *                         version, when, the shards (endpoint, last write sequence) and
 *                         the collections (name, count) it holds
 * Every value with a record header carries a magic and a format version; a
 * catalog written by another format version is refused at open, with the
 * versions named. Record lengths are checked on load; a record that does not
 * parse is SHOAL_ECORRUPT naming the key, never trusted.
 *
 * What lives in RAM: the shard registry and, per collection, its parameters,
 * centroids, owners and per-list counts (O(nlist), not O(vectors)). The id map
 * and the membership stay on disk and are read per request.
 *
 * Writes: every mutating call is one atomic RocksDB batch written with sync
 * (fsync'd WAL) before it returns, and the RAM state follows only on success.
 * Id-map updates (catalog_apply_*) are read-modify-write of the counts: the
 * caller must not run two of them on one collection at once from two threads
 * (the coordinator calls them from its loop only; writes that run at the same
 * time there touch disjoint ids, so the old lists each was given stay true).
 *
 * Write intents: before an insert batch is sent to shards the coordinator
 * records which ids go from which list to which (catalog_intent_put); after
 * the shards answered and the id map was updated, and stale copies on other
 * shards were deleted, it clears the intent. A delete records an intent too,
 * with new list CATALOG_LIST_NONE for every id. An intent left behind is an
 * interrupted write: for each of its ids, every shard among the old and
 * new lists' owners that is not the owner of the list the id map now names
 * (all of them when the id is absent) may hold a stale copy and gets a delete.
 *
 * Thread-safety: lookups and scans (catalog_lookup, catalog_scan_list,
 * catalog_intents) may run on any thread while one thread writes; everything
 * that changes or returns RAM state (collections, shards) belongs to the
 * thread that owns the catalog (the coordinator's loop).
 * Ownership: catalog_open returns a catalog freed by catalog_close(&cat).
 * Returned collection pointers are borrowed and valid until the next call
 * that creates, drops or trains a collection.
 */
#ifndef SHOAL_CATALOG_H
#define SHOAL_CATALOG_H

#include "common/distance.h"
#include "common/error.h"
#include "common/quant.h"
#include "net/wire_types.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CATALOG_FORMAT_VERSION 1
#define CATALOG_LIST_NONE UINT32_MAX   /* "this id is not in the map" */
#define CATALOG_SHARDS_MAX 4096        /* shards in the registry */
#define CATALOG_ENDPOINT_MAX 255       /* bytes of one shard endpoint */
#define CATALOG_REPLICAS_MAX 3         /* most copies of a list */
#define CATALOG_OWED_MAX 65536         /* ids one stale replica may owe; beyond, rebuilt whole */
#define CATALOG_OWED_MIN 1024          /* ... and past half its list plus this many */
#define CATALOG_STALE_REBUILD 1        /* catalog_coll_t.stale: rebuild the replica whole */
#define CATALOG_STALE_CATCHUP 2        /* ... or catch it up on the ids it owes */
#define CATALOG_SHARD_LIVE 0           /* a shard's role: may hold lists */
#define CATALOG_SHARD_DRAINING 1       /* ... its lists move away; it gets no new ones */
#define CATALOG_SHARD_REMOVED 2        /* ... gone (held nothing when removed) */
#define CATALOG_MOVE_QUEUED 1          /* catalog_coll_t.move_state: planned, not started */
#define CATALOG_MOVE_COPYING 2         /* ... the target gets the list's writes and a copy */
#define CATALOG_ORPHAN_CURRENT 1       /* an orphan copy that got every write of its list */
#define CATALOG_ORPHAN_STALE 2         /* ... one that may have missed some */

typedef struct catalog catalog_t;

/*
 * A copy of a list on a shard that does not own it: the old owner after a
 * move switched (current: it got every write of the list until now, so it
 * holds nothing a client could not see), or the target of a move that was
 * abandoned (stale: it may have missed writes). Orphans get the list's
 * writes until dropped, like owners, so they never fall further behind.
 */
typedef struct {
    uint32_t list, shard;
    uint8_t kind; /* CATALOG_ORPHAN_CURRENT or CATALOG_ORPHAN_STALE */
} catalog_orphan_t;

/* One measured setting of a recall calibration (coord_calib.c). */
typedef struct {
    uint32_t nprobe, ef; /* the setting */
    float recall;        /* recall@k it reached on the calibration queries */
    float cost;          /* its mean work per query: shards touched x ef */
} catalog_calib_point_t;

#define CATALOG_CALIB_POINTS_MAX 64 /* settings one calibration measures at most */

/* A collection's recall calibration: what each (nprobe, ef) reached. */
typedef struct {
    uint64_t count;   /* the collection's vectors when it was measured */
    uint32_t k;       /* recall@k */
    uint32_t queries; /* calibration queries (stored vectors) */
    uint32_t npoints;
    catalog_calib_point_t points[CATALOG_CALIB_POINTS_MAX];
} catalog_calib_t;

/* One collection as the coordinator knows it. */
typedef struct {
    char name[WIRE_NAME_MAX + 1];
    uint32_t dim;
    shoal_metric_t metric;
    uint32_t nlist;           /* IVF lists (fixed at create) */
    uint32_t M;               /* HNSW parameters passed to the shards (0 = shard default) */
    uint32_t ef_construction;
    uint32_t nprobe;          /* default lists probed per query */
    int trained;              /* centroids and owners are set */
    float *centroids;         /* nlist x dim when trained, else NULL (catalog's) */
    uint32_t replication;     /* R: copies of each list on distinct shards (1..3) */
    uint32_t write_quorum;    /* W: replicas that must hold a write before it is acked (1..R) */
    uint32_t *owners;         /* nlist x R shard indexes when trained, else NULL (catalog's):
                                 owners[l * R + r] holds list l's replica r (0: the primary) */
    uint8_t *stale;           /* nlist x R when trained (catalog's): non-zero = that replica
                                 owes writes and serves no reads of the list:
                                 CATALOG_STALE_REBUILD or CATALOG_STALE_CATCHUP */
    uint32_t *owed;           /* nlist x R: ids a CATALOG_STALE_CATCHUP replica owes */
    uint32_t nstale;          /* replicas marked in stale */
    uint64_t *list_counts;    /* nlist ids per list (catalog's; zeros until trained) */
    uint64_t count;           /* sum of list_counts */
    uint32_t *move_to;        /* nlist x R when trained: the target shard of a planned move
                                 of that replica (valid where move_state is non-zero) */
    uint8_t *move_state;      /* nlist x R: 0, CATALOG_MOVE_QUEUED or CATALOG_MOVE_COPYING */
    uint32_t nmoves;          /* replicas with a move planned */
    catalog_orphan_t *orphans; /* norphans copies to drop, sorted by (list, shard) */
    uint32_t norphans;
    double target_recall;     /* default recall target of its searches; 0 = the coordinator's */
    quant_kind_t storage;     /* how its shards keep vectors in RAM (f32 | f16 | sq8) */
    uint8_t *sq8_rec;         /* sq8, trained: the quantizer's record (common/quant.h), sent to
                               * the shards with inserts; NULL otherwise (catalog's) */
    size_t sq8_len;           /* its bytes */
    catalog_calib_t *calib;   /* its recall calibration, or NULL (catalog's) */
} catalog_coll_t;

/* An interrupted (or in-progress) write, as catalog_intent_put stored it. */
typedef struct {
    uint64_t txn;             /* its number, increasing */
    size_t n;                 /* ids */
    uint64_t *ids;            /* n ids */
    uint32_t *old_lists;      /* n lists before the write (CATALOG_LIST_NONE: new id) */
    uint32_t *new_lists;      /* n lists after it (CATALOG_LIST_NONE: a delete) */
} catalog_intent_t;

/*
 * Opens (creating when absent) the catalog in dir and loads the registry and
 * every collection. NULL on error: SHOAL_EIO (locked by another process, I/O),
 * SHOAL_ECORRUPT (a record that does not parse, named), SHOAL_EFORMAT (another
 * format version).
 */
catalog_t *catalog_open(const char *dir, shoal_err_t *err);
void catalog_close(catalog_t **cat_p);

/* ------------------------------------------------------------------------ */
/* Shard registry                                                           */
/* ------------------------------------------------------------------------ */

/*
 * Reconciles the registry with the shards named at start-up (n may be 0:
 * keep the registry as stored). An empty registry takes the list as given.
 * Otherwise the stored shards that were not removed must be a prefix of the
 * given list, in the same order (placements name shards by index), or the
 * given list a prefix of them (shards added online with catalog_shard_add
 * stay when a start-up command line predates them): new shards may be
 * appended, none replaced or reordered; anything else is
 * SHOAL_EINVAL naming the first difference ("shard 1 is tcp://a:7702 in the
 * catalog, tcp://b:7702 given"). A given endpoint that the registry has as
 * removed is skipped (logged): `shard remove` took it out, `shard add` brings
 * it back. Duplicated endpoints are SHOAL_EINVAL.
 */
int catalog_shards_set(catalog_t *cat, const char *const *endpoints, size_t n, shoal_err_t *err);
size_t catalog_shard_count(const catalog_t *cat);
/* Endpoint of shard i (borrowed), NULL when out of range. */
const char *catalog_shard(const catalog_t *cat, size_t i);
/* Role of shard i (CATALOG_SHARD_*); REMOVED when out of range. */
int catalog_shard_role(const catalog_t *cat, size_t i);
/* Shards whose role is CATALOG_SHARD_LIVE (those that may be given lists). */
size_t catalog_shards_live(const catalog_t *cat);
/* The index of endpoint in the registry (any role), or SIZE_MAX. */
size_t catalog_shard_find(const catalog_t *cat, const char *endpoint);
/*
 * Adds endpoint to the registry as a live shard; *index gets its index. An
 * endpoint that was removed comes back live at its old index; one that is
 * live or draining is SHOAL_EEXIST; a bad endpoint or a full registry
 * SHOAL_EINVAL.
 */
int catalog_shard_add(catalog_t *cat, const char *endpoint, size_t *index, shoal_err_t *err);
/* Sets shard i's role (synced). SHOAL_EINVAL for i or role out of range. */
int catalog_shard_role_set(catalog_t *cat, size_t i, int role, shoal_err_t *err);

/* ------------------------------------------------------------------------ */
/* Collections                                                              */
/* ------------------------------------------------------------------------ */

/*
 * Records a new collection from params (name, dim, metric, nlist, M,
 * ef_construction, nprobe, replication, write_quorum (0 = 1), target_recall
 * (0 or in (0, 1]), storage; the rest ignored), untrained. SHOAL_EEXIST when the name is taken, SHOAL_EINVAL for
 * dim/nlist 0, nprobe > nlist, replication outside 1..CATALOG_REPLICAS_MAX or
 * above the shard count, write_quorum outside 1..replication.
 */
int catalog_create(catalog_t *cat, const catalog_coll_t *params, shoal_err_t *err);

/* Removes a collection and every key under it. SHOAL_ENOTFOUND when absent. */
int catalog_drop(catalog_t *cat, const char *name, shoal_err_t *err);

/* The collection named name (borrowed), or NULL. */
const catalog_coll_t *catalog_find(const catalog_t *cat, const char *name);
size_t catalog_coll_count(const catalog_t *cat);
/* Collection i in name order (borrowed), NULL when out of range. */
const catalog_coll_t *catalog_coll_at(const catalog_t *cat, size_t i);

/*
 * Stores the trained state: centroids (nlist x dim) and owners (nlist x R
 * shard indexes, each < catalog_shard_count, a list's replicas distinct).
 * Training an already trained collection is SHOAL_EEXIST (its ids are placed
 * by the old centroids); SHOAL_EINVAL for an owner out of range, two replicas
 * of a list on one shard, or a non-finite centroid.
 */
int catalog_set_trained(catalog_t *cat, const char *name, const float *centroids,
                        const uint32_t *owners, shoal_err_t *err);

/*
 * catalog_set_trained with an sq8 collection's quantizer record (qrec, qlen
 * bytes; NULL: none), stored in the same batch (Z/<c>) and kept in RAM
 * (sq8_rec) for the inserts the coordinator sends.
 */
int catalog_set_trained_sq8(catalog_t *cat, const char *name, const float *centroids,
                            const uint32_t *owners, const uint8_t *qrec, size_t qlen,
                            shoal_err_t *err);

/* Stores c's recall calibration (replacing any), synced. SHOAL_EINVAL for a bad table. */
int catalog_calib_set(catalog_t *cat, const char *name, const catalog_calib_t *calib,
                      shoal_err_t *err);

/* Shard of replica r of list l of a trained collection. */
static inline uint32_t catalog_owner(const catalog_coll_t *c, uint32_t l, uint32_t r)
{
    return c->owners[(size_t)l * c->replication + r];
}

/*
 * Marks (stale 1: to be rebuilt whole) or clears (stale 0) replica
 * replicas[i] of list lists[i] for i < n, forgetting the ids it owed, in one
 * synced batch; the RAM marks follow on success. A replica marked stale owes
 * writes: the coordinator neither reads the list from it nor counts it
 * towards a write quorum until a repair rebuilt (or caught up) it.
 */
int catalog_stale_set(catalog_t *cat, const char *name, const uint32_t *lists,
                      const uint32_t *replicas, size_t n, int stale, shoal_err_t *err);

/* Replica `replica` of list `list` missed the writes of n ids (catalog_stale_owe). */
typedef struct {
    uint32_t list, replica;
    const uint64_t *ids;
    size_t n;
} catalog_owed_t;

/*
 * Records missed writes, in one synced batch: a replica in sync becomes
 * stale owing exactly those ids (CATALOG_STALE_CATCHUP); one that owes ids
 * owes these too, or, beyond CATALOG_OWED_MAX or half its list's count plus
 * CATALOG_OWED_MIN, is to be rebuilt whole (its owed ids forgotten); one to be rebuilt whole stays so. *newly (may be
 * NULL) gets how many replicas went from in sync to stale.
 */
int catalog_stale_owe(catalog_t *cat, const char *name, const catalog_owed_t *owed, size_t n,
                      size_t *newly, shoal_err_t *err);

/* Up to max ids that replica r of list l owes, >= from_id, ascending; *got how many. */
int catalog_owed_scan(catalog_t *cat, const char *name, uint32_t l, uint32_t r, uint64_t from_id,
                      uint64_t *ids, size_t max, size_t *got, shoal_err_t *err);

/* Replica r of list l no longer owes these n ids (caught up on them); one synced batch. */
int catalog_owed_clear(catalog_t *cat, const char *name, uint32_t l, uint32_t r,
                       const uint64_t *ids, size_t n, shoal_err_t *err);

/* ------------------------------------------------------------------------ */
/* Moves and orphans (growth: a replica moves to another shard)             */
/* ------------------------------------------------------------------------ */

/* One replica to move: replica `replica` of list `list` goes to shard `to`. */
typedef struct {
    uint32_t list, replica, to;
} catalog_move_t;

/*
 * Replaces the collection's queued moves with these n (one synced batch):
 * every CATALOG_MOVE_QUEUED mark goes, each given one is queued; a replica
 * whose move is copying keeps it (a given move for it is skipped). SHOAL_EINVAL
 * for a list/replica/shard out of range or a target that already holds a
 * replica of the list.
 */
int catalog_moves_plan(catalog_t *cat, const char *name, const catalog_move_t *moves, size_t n,
                       shoal_err_t *err);

/* Queued -> copying: from now on the target gets the list's writes. */
int catalog_move_start(catalog_t *cat, const char *name, uint32_t list, uint32_t replica,
                       shoal_err_t *err);

/*
 * A copying move stops, in one synced batch: the target's partial copy
 * becomes a stale orphan (dropped there later), and the move is queued again
 * (requeue 1) or forgotten (0).
 */
int catalog_move_abort(catalog_t *cat, const char *name, uint32_t list, uint32_t replica,
                       int requeue, shoal_err_t *err);

/*
 * A copying move completes, in one synced batch: the target becomes the
 * replica's owner (T/ rewritten), the old owner's copy a current orphan.
 * SHOAL_EINVAL when the move is not copying or the replica is stale.
 */
int catalog_move_switch(catalog_t *cat, const char *name, uint32_t list, uint32_t replica,
                        shoal_err_t *err);

/*
 * Records (kind CATALOG_ORPHAN_*) or forgets (kind 0: it was dropped) an
 * orphan copy of list on shard; synced.
 */
int catalog_orphan_set(catalog_t *cat, const char *name, uint32_t list, uint32_t shard, int kind,
                       shoal_err_t *err);

/*
 * The shards that hold a copy of list l of c besides its replicas: targets
 * of copying moves, then orphans. Up to cap into shards; returns how many
 * there are (may exceed cap).
 */
size_t catalog_extras(const catalog_coll_t *c, uint32_t l, uint32_t *shards, size_t cap);

/* ------------------------------------------------------------------------ */
/* Id map and membership                                                    */
/* ------------------------------------------------------------------------ */

/* lists[i] = the list of ids[i], or CATALOG_LIST_NONE. */
int catalog_lookup(catalog_t *cat, const char *name, const uint64_t *ids, size_t n,
                   uint32_t *lists, shoal_err_t *err);

/*
 * Records that ids[i] now lives in new_lists[i] (old_lists[i] is where the
 * map had it, as catalog_lookup returned, or CATALOG_LIST_NONE): I/ and M/
 * keys and the counts, in one synced batch. An id repeated in the batch: the
 * last occurrence wins (as on the shards).
 */
int catalog_apply_insert(catalog_t *cat, const char *name, const uint64_t *ids,
                         const uint32_t *old_lists, const uint32_t *new_lists, size_t n,
                         shoal_err_t *err);

/* Removes ids (old_lists from catalog_lookup; NONE entries are skipped). */
int catalog_apply_delete(catalog_t *cat, const char *name, const uint64_t *ids,
                         const uint32_t *old_lists, size_t n, shoal_err_t *err);

/*
 * Up to max ids of list `list` that are >= from_id, ascending, into ids;
 * *got gets how many. Fewer than max means the list has no more.
 */
int catalog_scan_list(catalog_t *cat, const char *name, uint32_t list, uint64_t from_id,
                      uint64_t *ids, size_t max, size_t *got, shoal_err_t *err);

/* ------------------------------------------------------------------------ */
/* Write intents                                                            */
/* ------------------------------------------------------------------------ */

/*
 * Stores an intent (synced); *txn gets its number. new_lists[i] may be
 * CATALOG_LIST_NONE (the id is being deleted); other lists must be < nlist.
 */
int catalog_intent_put(catalog_t *cat, const char *name, const uint64_t *ids,
                       const uint32_t *old_lists, const uint32_t *new_lists, size_t n,
                       uint64_t *txn, shoal_err_t *err);
int catalog_intent_clear(catalog_t *cat, const char *name, uint64_t txn, shoal_err_t *err);

/*
 * The intents of a collection, oldest first: *out gets a malloc'd array of
 * *count intents, freed with catalog_intents_free.
 */
int catalog_intents(catalog_t *cat, const char *name, catalog_intent_t **out, size_t *count,
                    shoal_err_t *err);
void catalog_intents_free(catalog_intent_t *intents, size_t count);

/* ------------------------------------------------------------------------ */
/* Snapshots (docs/protocol.md 11.10)                                       */
/* ------------------------------------------------------------------------ */

#define CATALOG_SNAPSHOTS_MAX 65536 /* snapshot records the catalog holds at most */

/* One shard's part of a snapshot. */
typedef struct {
    char endpoint[CATALOG_ENDPOINT_MAX + 1]; /* the shard, as the registry names it */
    uint64_t seq;                            /* its last write sequence number in the copy */
} catalog_snapshot_shard_t;

/* One collection as a snapshot holds it. */
typedef struct {
    char name[WIRE_NAME_MAX + 1]; /* the collection */
    uint64_t count;               /* its vectors at snapshot time */
} catalog_snapshot_coll_t;

/* A snapshot record: what `snapshot_list` shows. */
typedef struct {
    char name[WIRE_NAME_MAX + 1];      /* the snapshot (wire_snapshot_name_check's rules) */
    uint64_t created;                  /* seconds since the epoch */
    size_t nshards;                    /* shards in it */
    catalog_snapshot_shard_t *shards;  /* nshards (owned; catalog_snapshot_fini frees) */
    size_t ncolls;                     /* collections in it */
    catalog_snapshot_coll_t *colls;    /* ncolls (owned) */
} catalog_snapshot_t;

/*
 * Records snap (synced). SHOAL_EEXIST when a snapshot of that name is
 * recorded, SHOAL_EINVAL for a bad name or an endpoint too long, SHOAL_ELIMIT
 * when CATALOG_SNAPSHOTS_MAX are recorded.
 */
int catalog_snapshot_put(catalog_t *cat, const catalog_snapshot_t *snap, shoal_err_t *err);

/* Forgets the snapshot record name (synced); absent is not an error. */
int catalog_snapshot_delete(catalog_t *cat, const char *name, shoal_err_t *err);

/* 1 when a snapshot of that name is recorded, 0 when not, or a negative code. */
int catalog_snapshot_exists(catalog_t *cat, const char *name, shoal_err_t *err);

/*
 * Every snapshot record, by name: *out gets a malloc'd array of *count,
 * freed with catalog_snapshots_free. A record that does not parse is
 * SHOAL_ECORRUPT naming it.
 */
int catalog_snapshots(catalog_t *cat, catalog_snapshot_t **out, size_t *count, shoal_err_t *err);
void catalog_snapshot_fini(catalog_snapshot_t *snap);
void catalog_snapshots_free(catalog_snapshot_t *snaps, size_t count);

/*
 * Copies the catalog's database into dir (kv_checkpoint: dir must not exist,
 * its parent must). The copy opens with catalog_open as a catalog of its own.
 */
int catalog_checkpoint(catalog_t *cat, const char *dir, shoal_err_t *err);

#ifdef __cplusplus
}
#endif

#endif
