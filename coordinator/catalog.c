/*
 * catalog.c - the coordinator's catalog in RocksDB (see catalog.h for the key
 * layout, what stays in RAM and the thread rules).
 *
 * Value layouts (all integers little-endian, written byte by byte so the
 * format does not depend on the host; keys use big-endian integers so they
 * sort numerically, and are built by net/kvkeys, shared with the shard
 * store, as is the first check of "F"):
 *   F   "SHOALCAT" (8 bytes) | version u32                          12 bytes
 *   S   count u32 | count x (len u16 | endpoint bytes)
 *   C/  magic "CCOL" u32 | version u32 | dim | metric | nlist | M |
 *       ef_construction | nprobe | trained (u32 each)               36 bytes
 *       version 2 appends replication | write_quorum (u32 each)     44 bytes
 *       (version 1, written before replication, reads as R = W = 1)
 *       version 3 appends target_recall (f32)                       48 bytes
 *       (versions 1 and 2 read as target_recall 0: the coordinator's default)
 *       version 4 appends storage u32 (quant_kind_t)                 52 bytes
 *       (versions 1 to 3 read as f32)
 *   K/  magic "CCAL" u32 | version u32 | count u64 | k u32 | queries u32 |
 *       npoints u32 | npoints x (nprobe u32 | ef u32 | recall f32 | cost f32)
 *   T/  magic "CTRN" u32 | version u32 | nlist u32 | dim u32 |
 *       centroids (nlist x dim f32) | owners (nlist x R u32, list-major)
 *   O/  empty: the replica is rebuilt whole; one byte 2: it catches up on its Q/ ids
 *   R/  role u8 (1 draining, 2 removed; a live shard has no key)
 *   V/  target shard u32 | state u8 (1 queued, 2 copying)            5 bytes
 *   D/  kind u8 (1 current, 2 stale)
 *   Q/  empty (the key says which id which stale replica owes)
 *   N/  count u64
 *   I/  list u32
 *   M/  empty
 *   B/  magic "CSNP" u32 | version u32 | created u64 | nshards u32 | ncolls u32 |
 *       nshards x (len u16 | endpoint | seq u64) | ncolls x (len u8 | name | count u64)
 *   X/  magic "CINT" u32 | version u32 | n u64 | ids (n x u64) |
 *       old lists (n x u32) | new lists (n x u32)
 *       (a new list of 0xffffffff, CATALOG_LIST_NONE, is a delete: the
 *       layout and version are those of insert intents, which are unchanged)
 *
 * Design decisions:
 * - The reads that catalog.h allows on any thread (lookup, scan_list,
 *   intents) never touch the RAM collection array (which the owning thread
 *   may reallocate): they check the collection through its C/ record on
 *   disk instead. RocksDB makes those reads safe next to the writer.
 * - Txn numbers are global to the catalog (not per collection): one counter,
 *   started at open from the largest X/ key plus one, taken atomically so
 *   intents of different collections may be put from different threads.
 * - Counts change by deltas computed per batch; the new values reach RAM only
 *   after the synced batch is written. A count that would go below zero (the
 *   caller passed an old list the map did not have) stays at zero and is
 *   logged: the id map is the truth, the counts are a summary of it.
 */
#include "coordinator/catalog.h"
#include "net/wire.h"

#include "net/kv.h"
#include "net/kvkeys.h"
#include "common/log.h"

#include <math.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CAT_FORMAT_MAGIC  "SHOALCAT" /* 8 bytes, no NUL stored */
#define CAT_FORMAT_BYTES  12
#define CAT_COLL_MAGIC    0x4c4f4343u /* "CCOL" */
#define CAT_TRAINED_MAGIC 0x4e525443u /* "CTRN" */
#define CAT_INTENT_MAGIC  0x544e4943u /* "CINT" */
#define CAT_CALIB_MAGIC   0x4c414343u /* "CCAL" */
#define CAT_SNAP_MAGIC    0x504e5343u /* "CSNP" */
#define CAT_SNAP_VERSION  1
#define CAT_SNAP_HDR      24
#define CAT_COLL_BYTES_V1 36
#define CAT_COLL_BYTES_V2 44
#define CAT_COLL_BYTES_V3 48
#define CAT_COLL_BYTES    52
#define CAT_COLL_VERSION  4 /* the C/ record's own version (v1 to v3 still read) */
#define CAT_CALIB_HDR     28
#define CAT_TRAINED_HDR   16
#define CAT_INTENT_HDR    16
#define CAT_KEY_MAX       (3 + WIRE_NAME_MAX + 13) /* "Q/" name 0 list replica id */
#define CAT_KEY_TEXT_MAX  160                      /* a key rendered for a message */

struct catalog {
    kv_t *kv;                  /* the database (own) */
    char **shards;             /* nshards endpoints (own, each malloc'd) */
    uint8_t *roles;            /* nshards CATALOG_SHARD_* (own) */
    size_t nshards;            /* registry size */
    catalog_coll_t *colls;     /* ncolls collections sorted by name (own) */
    size_t ncolls;             /* collections */
    size_t colls_cap;          /* slots allocated in colls */
    _Atomic uint64_t next_txn; /* the next intent's number */
};

/* ------------------------------------------------------------------------ */
/* Byte order helpers                                                       */
/* ------------------------------------------------------------------------ */

static void s_put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void s_put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t s_get_le32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t s_get_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint32_t s_float_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float s_bits_float(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* ------------------------------------------------------------------------ */
/* Names and keys                                                           */
/* ------------------------------------------------------------------------ */

/* 1..WIRE_NAME_MAX bytes of [A-Za-z0-9_.-], given with its length. */
static bool s_name_ok(const char *name, size_t len)
{
    if (len == 0 || len > WIRE_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '.' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

static int s_check_name(const char *name, shoal_err_t *err)
{
    if (!name)
        return shoal_err_set(err, SHOAL_EINVAL, "no collection name given");
    size_t len = strnlen(name, WIRE_NAME_MAX + 1);
    if (!s_name_ok(name, len))
        return shoal_err_set(err, SHOAL_EINVAL,
                             "collection name \"%.*s%s\" is not 1..%d characters of "
                             "[A-Za-z0-9_.-]",
                             WIRE_NAME_MAX, name, len > WIRE_NAME_MAX ? "..." : "", WIRE_NAME_MAX);
    return 0;
}

/*
 * A key as readable text for messages: "C/docs", "N/docs/list 3",
 * "I/docs/id 17", "X/docs/txn 4", "M/docs/list 3/id 17"; other shapes and
 * unprintable bytes in hex.
 */
static const char *s_key_text(const uint8_t *key, size_t klen, char *buf, size_t cap)
{
    size_t out = 0;
    buf[0] = 0;
#define S_EMIT(...)                                                                                \
    do {                                                                                           \
        if (out < cap) {                                                                           \
            int w_ = snprintf(buf + out, cap - out, __VA_ARGS__);                                  \
            out += w_ > 0 ? (size_t)w_ : 0;                                                        \
        }                                                                                          \
    } while (0)
    size_t i = 0;
    while (i < klen && key[i] != 0) {
        if (key[i] >= 0x20 && key[i] < 0x7f)
            S_EMIT("%c", key[i]);
        else
            S_EMIT("\\x%02x", key[i]);
        i++;
    }
    if (i < klen) {
        const uint8_t *rest = key + i + 1;
        size_t rlen = klen - i - 1;
        char type = (char)key[0];
        if (rlen == 4)
            S_EMIT("/list %u", kvkeys_get_be32(rest));
        else if (rlen == 5)
            S_EMIT("/list %u/replica %u", kvkeys_get_be32(rest), rest[4]);
        else if (rlen == 8 && type == 'D')
            S_EMIT("/list %u/shard %u", kvkeys_get_be32(rest), kvkeys_get_be32(rest + 4));
        else if (rlen == 8 && type == 'X')
            S_EMIT("/txn %llu", (unsigned long long)kvkeys_get_be64(rest));
        else if (rlen == 8)
            S_EMIT("/id %llu", (unsigned long long)kvkeys_get_be64(rest));
        else if (rlen == 12)
            S_EMIT("/list %u/id %llu", kvkeys_get_be32(rest),
                   (unsigned long long)kvkeys_get_be64(rest + 4));
        else if (rlen > 0) {
            S_EMIT("/0x");
            for (size_t j = 0; j < rlen && j < 16; j++)
                S_EMIT("%02x", rest[j]);
        }
    }
#undef S_EMIT
    return buf;
}

static int s_corrupt(const catalog_t *cat, const uint8_t *key, size_t klen, shoal_err_t *err,
                     const char *what)
{
    char text[CAT_KEY_TEXT_MAX];
    return shoal_err_set(err, SHOAL_ECORRUPT, "catalog %s: record %s: %s", kv_dir(cat->kv),
                         s_key_text(key, klen, text, sizeof text), what);
}

/* ------------------------------------------------------------------------ */
/* Collection records                                                       */
/* ------------------------------------------------------------------------ */

/*
 * The parameter rules shared by catalog_create and the loader: dim and nlist
 * >= 1, nprobe <= nlist, a known metric, and a trained record (T/) whose size
 * nlist x (dim + 1) x 4 fits a size_t. 0 or -1 with the reason in why.
 */
static int s_coll_check(const catalog_coll_t *c, char *why, size_t cap)
{
    if (c->dim == 0 || c->nlist == 0) {
        snprintf(why, cap, "dim %u and nlist %u must be >= 1", c->dim, c->nlist);
        return -1;
    }
    if (c->nprobe > c->nlist) {
        snprintf(why, cap, "nprobe %u > nlist %u", c->nprobe, c->nlist);
        return -1;
    }
    if ((unsigned)c->storage >= QUANT_KIND_COUNT) {
        snprintf(why, cap, "storage %d is not f32|f16|sq8", (int)c->storage);
        return -1;
    }
    if (c->replication < 1 || c->replication > CATALOG_REPLICAS_MAX) {
        snprintf(why, cap, "replication %u must be 1..%d", c->replication, CATALOG_REPLICAS_MAX);
        return -1;
    }
    if (c->write_quorum < 1 || c->write_quorum > c->replication) {
        snprintf(why, cap, "write_quorum %u must be 1..replication = %u", c->write_quorum,
                 c->replication);
        return -1;
    }
    if (!(c->target_recall >= 0.0 && c->target_recall <= 1.0)) {
        snprintf(why, cap, "target_recall %g must be in (0, 1] (0: the default)",
                 c->target_recall);
        return -1;
    }
    if ((unsigned)c->metric > SHOAL_METRIC_COSINE) {
        snprintf(why, cap, "metric %u is not l2/ip/cosine", (unsigned)c->metric);
        return -1;
    }
    if ((uint64_t)c->nlist * ((uint64_t)c->dim + c->replication) >
        (SIZE_MAX - CAT_TRAINED_HDR) / 4) {
        snprintf(why, cap, "nlist %u x dim %u centroids do not fit in memory", c->nlist, c->dim);
        return -1;
    }
    return 0;
}

static void s_coll_encode(const catalog_coll_t *c, uint8_t *val)
{
    s_put_le32(val, CAT_COLL_MAGIC);
    s_put_le32(val + 4, CAT_COLL_VERSION);
    s_put_le32(val + 8, c->dim);
    s_put_le32(val + 12, (uint32_t)c->metric);
    s_put_le32(val + 16, c->nlist);
    s_put_le32(val + 20, c->M);
    s_put_le32(val + 24, c->ef_construction);
    s_put_le32(val + 28, c->nprobe);
    s_put_le32(val + 32, c->trained ? 1u : 0u);
    s_put_le32(val + 36, c->replication);
    s_put_le32(val + 40, c->write_quorum);
    s_put_le32(val + 44, s_float_bits((float)c->target_recall));
    s_put_le32(val + 48, (uint32_t)c->storage);
}

/* Parameters of a C/ value into c (no arrays). 0 or a reason in *why. */
static int s_coll_decode(const uint8_t *val, size_t vlen, catalog_coll_t *c, char *why, size_t cap)
{
    uint32_t magic = vlen >= 8 ? s_get_le32(val) : 0, version = vlen >= 8 ? s_get_le32(val + 4) : 0;
    if (magic != CAT_COLL_MAGIC || version < 1 || version > CAT_COLL_VERSION) {
        snprintf(why, cap, "magic 0x%08x version %u, expected 0x%08x version 1..%d", magic,
                 version, CAT_COLL_MAGIC, CAT_COLL_VERSION);
        return -1;
    }
    size_t want = version == 1   ? CAT_COLL_BYTES_V1
                  : version == 2 ? CAT_COLL_BYTES_V2
                  : version == 3 ? CAT_COLL_BYTES_V3
                                 : CAT_COLL_BYTES;
    if (vlen != want) {
        snprintf(why, cap, "%zu bytes, expected %zu (version %u)", vlen, want, version);
        return -1;
    }
    c->replication = version == 1 ? 1 : s_get_le32(val + 36);
    c->write_quorum = version == 1 ? 1 : s_get_le32(val + 40);
    c->target_recall = version < 3 ? 0.0 : (double)s_bits_float(s_get_le32(val + 44));
    uint32_t storage = version < 4 ? (uint32_t)QUANT_F32 : s_get_le32(val + 48);
    if (storage >= QUANT_KIND_COUNT) {
        snprintf(why, cap, "storage %u, expected 0..%d (f32|f16|sq8)", storage,
                 QUANT_KIND_COUNT - 1);
        return -1;
    }
    c->storage = (quant_kind_t)storage;
    if (!(c->target_recall >= 0.0 && c->target_recall <= 1.0)) {
        snprintf(why, cap, "target_recall %g outside [0, 1]", c->target_recall);
        return -1;
    }
    c->dim = s_get_le32(val + 8);
    uint32_t metric = s_get_le32(val + 12);
    c->nlist = s_get_le32(val + 16);
    c->M = s_get_le32(val + 20);
    c->ef_construction = s_get_le32(val + 24);
    c->nprobe = s_get_le32(val + 28);
    uint32_t trained = s_get_le32(val + 32);
    if (trained > 1) {
        snprintf(why, cap, "trained flag %u, expected 0 or 1", trained);
        return -1;
    }
    c->metric = (shoal_metric_t)metric;
    c->trained = (int)trained;
    return s_coll_check(c, why, cap);
}

/*
 * Reads and checks the C/ record of name from disk into *c (parameters
 * only): SHOAL_ENOTFOUND when absent. Safe on any thread.
 */
static int s_disk_coll(catalog_t *cat, const char *name, catalog_coll_t *c, shoal_err_t *err)
{
    uint8_t key[CAT_KEY_MAX];
    size_t klen = kvkeys_prefix(key, 'C', name);
    void *val = NULL;
    size_t vlen = 0;
    int rc = kv_get(cat->kv, key, klen, &val, &vlen, err);
    if (rc == SHOAL_ENOTFOUND)
        return shoal_err_set(err, SHOAL_ENOTFOUND, "collection \"%s\" does not exist", name);
    if (rc)
        return rc;
    char why[128];
    rc = s_coll_decode(val, vlen, c, why, sizeof why);
    free(val);
    if (rc)
        return s_corrupt(cat, key, klen, err, why);
    return 0;
}

static void s_coll_free(catalog_coll_t *c)
{
    free(c->sq8_rec);
    free(c->centroids);
    free(c->owners);
    free(c->stale);
    free(c->owed);
    free(c->list_counts);
    free(c->move_to);
    free(c->move_state);
    free(c->orphans);
    free(c->calib);
    c->calib = NULL;
    c->centroids = NULL;
    c->owners = NULL;
    c->stale = NULL;
    c->owed = NULL;
    c->list_counts = NULL;
    c->move_to = NULL;
    c->move_state = NULL;
    c->orphans = NULL;
    c->nmoves = c->norphans = 0;
}

/* Allocates the per-replica arrays of a trained c (nlist x R each). 0 or -1. */
static int s_replica_arrays(catalog_coll_t *c)
{
    size_t nown = (size_t)c->nlist * c->replication;
    c->owners = malloc(nown * sizeof *c->owners);
    c->stale = calloc(nown, sizeof *c->stale);
    c->owed = calloc(nown, sizeof *c->owed);
    c->move_to = calloc(nown, sizeof *c->move_to);
    c->move_state = calloc(nown, sizeof *c->move_state);
    return c->owners && c->stale && c->owed && c->move_to && c->move_state ? 0 : -1;
}

/* "O/<c><list><r>" (and with id, "Q/<c><list><r><id>") into key; returns the length. */
static size_t s_key_replica(uint8_t *key, char type, const char *name, uint32_t list, uint32_t r)
{
    size_t len = kvkeys_u32(key, type, name, list);
    key[len++] = (uint8_t)r;
    return len;
}

static size_t s_key_owed(uint8_t *key, const char *name, uint32_t list, uint32_t r, uint64_t id)
{
    size_t len = s_key_replica(key, 'Q', name, list, r);
    kvkeys_put_be64(key + len, id);
    return len + 8;
}

/* Deletes every Q/ key of replica r of list l in batch. */
static void s_owed_delete_all(kv_batch_t *batch, const char *name, uint32_t l, uint32_t r)
{
    uint8_t begin[CAT_KEY_MAX], end[CAT_KEY_MAX];
    size_t len = s_key_replica(begin, 'Q', name, l, r);
    memcpy(end, begin, len);
    memset(end + len, 0xff, 8); /* id UINT64_MAX is reserved (no result), never stored */
    kv_batch_delete_range(batch, begin, len, end, len + 8);
}

/*
 * The owner rules shared by catalog_set_trained and the loader: every owner
 * below nshards, a list's replicas on distinct shards. 0 or -1 with why.
 */
static int s_owners_check(const catalog_coll_t *c, const uint32_t *owners, size_t nshards,
                          char *why, size_t cap)
{
    uint32_t R = c->replication;
    for (uint32_t l = 0; l < c->nlist; l++) {
        for (uint32_t r = 0; r < R; r++) {
            uint32_t s = owners[(size_t)l * R + r];
            if (s >= nshards) {
                snprintf(why, cap, "list %u replica %u is on shard %u, the registry has %zu", l,
                         r, s, nshards);
                return -1;
            }
            for (uint32_t q = 0; q < r; q++)
                if (owners[(size_t)l * R + q] == s) {
                    snprintf(why, cap, "list %u has replicas %u and %u on one shard (%u)", l, q,
                             r, s);
                    return -1;
                }
        }
    }
    return 0;
}

/* Index of name in the sorted array, or where it would go (*found 0). */
static size_t s_coll_search(const catalog_t *cat, const char *name, int *found)
{
    size_t lo = 0, hi = cat->ncolls;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int cmp = strcmp(cat->colls[mid].name, name);
        if (cmp == 0) {
            *found = 1;
            return mid;
        }
        if (cmp < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = 0;
    return lo;
}

static catalog_coll_t *s_coll_get(catalog_t *cat, const char *name, shoal_err_t *err)
{
    if (s_check_name(name, err))
        return NULL;
    int found = 0;
    size_t at = s_coll_search(cat, name, &found);
    if (!found) {
        shoal_err_set(err, SHOAL_ENOTFOUND, "collection \"%s\" does not exist", name);
        return NULL;
    }
    return &cat->colls[at];
}

/* Makes room for one more collection (before anything is written). */
static int s_coll_reserve(catalog_t *cat, shoal_err_t *err)
{
    if (cat->ncolls < cat->colls_cap)
        return 0;
    size_t cap = cat->colls_cap ? cat->colls_cap * 2 : 8;
    catalog_coll_t *grown = realloc(cat->colls, cap * sizeof *grown);
    if (!grown)
        return shoal_err_set(err, SHOAL_ENOMEM, "out of memory for %zu collections", cap);
    cat->colls = grown;
    cat->colls_cap = cap;
    return 0;
}

/* Inserts c (its arrays handed over) at position at; room reserved. */
static void s_coll_insert(catalog_t *cat, size_t at, const catalog_coll_t *c)
{
    memmove(&cat->colls[at + 1], &cat->colls[at], (cat->ncolls - at) * sizeof *cat->colls);
    cat->colls[at] = *c;
    cat->ncolls++;
}

/* ------------------------------------------------------------------------ */
/* Open: format record, registry, collections, next txn                     */
/* ------------------------------------------------------------------------ */

static int s_load_format(catalog_t *cat, shoal_err_t *err)
{
    static const kvkeys_format_t fmt = {.magic = CAT_FORMAT_MAGIC,
                                        .min_bytes = 8,
                                        .what = "catalog",
                                        .missing = "a format record",
                                        .owner = "a coordinator catalog"};
    const char *dir = kv_dir(cat->kv);
    void *val = NULL;
    size_t vlen = 0;
    int rc = kvkeys_format_get(cat->kv, &fmt, &val, &vlen, err);
    if (rc == SHOAL_ENOTFOUND) {
        uint8_t rec[CAT_FORMAT_BYTES];
        memcpy(rec, CAT_FORMAT_MAGIC, 8);
        s_put_le32(rec + 8, CATALOG_FORMAT_VERSION);
        rc = kv_put(cat->kv, "F", 1, rec, sizeof rec, 1, err);
        if (rc == 0)
            log_info("catalog %s: new catalog (format version %u)", dir, CATALOG_FORMAT_VERSION);
        return rc;
    }
    if (rc)
        return rc;
    const uint8_t *p = val;
    if (vlen < CAT_FORMAT_BYTES) {
        free(val);
        return shoal_err_set(err, SHOAL_ECORRUPT, "catalog %s: record F: %zu bytes, expected %d",
                             dir, vlen, CAT_FORMAT_BYTES);
    }
    uint32_t version = s_get_le32(p + 8);
    free(val);
    if (version != CATALOG_FORMAT_VERSION)
        return shoal_err_set(err, SHOAL_EFORMAT,
                             "catalog %s has format version %u; this build reads format "
                             "version %u only",
                             dir, version, CATALOG_FORMAT_VERSION);
    if (vlen != CAT_FORMAT_BYTES)
        return shoal_err_set(err, SHOAL_ECORRUPT, "catalog %s: record F: %zu bytes, expected %d",
                             dir, vlen, CAT_FORMAT_BYTES);
    return 0;
}

static void s_shards_free(char **shards, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(shards[i]);
    free(shards);
}

/* "R/<shard u32>" into key; returns the length. */
static size_t s_key_role(uint8_t *key, uint32_t shard)
{
    key[0] = 'R';
    key[1] = '/';
    kvkeys_put_be32(key + 2, shard);
    return 6;
}

/* R/ keys: the roles of shards that are not live (after S). */
static int s_load_roles(catalog_t *cat, shoal_err_t *err)
{
    kv_iter_t *it = kv_iter_new(cat->kv, "R/", 2, err);
    if (!it)
        return err ? err->code : SHOAL_ENOMEM;
    int rc = 0;
    for (; rc == 0 && kv_iter_valid(it); kv_iter_next(it)) {
        size_t klen = 0, vlen = 0;
        const uint8_t *key = kv_iter_key(it, &klen);
        const uint8_t *val = kv_iter_value(it, &vlen);
        uint32_t shard = klen == 6 ? kvkeys_get_be32(key + 2) : UINT32_MAX;
        uint8_t role = vlen == 1 ? val[0] : 0;
        if (shard >= cat->nshards ||
            (role != CATALOG_SHARD_DRAINING && role != CATALOG_SHARD_REMOVED)) {
            char why[96];
            snprintf(why, sizeof why, "role %u of shard %u (registry of %zu)", role, shard,
                     cat->nshards);
            rc = s_corrupt(cat, key, klen, err, why);
            break;
        }
        cat->roles[shard] = role;
    }
    if (rc == 0)
        rc = kv_iter_status(it, err);
    kv_iter_destroy(&it);
    return rc;
}

static int s_load_shards(catalog_t *cat, shoal_err_t *err)
{
    void *val = NULL;
    size_t vlen = 0;
    int rc = kv_get(cat->kv, "S", 1, &val, &vlen, err);
    if (rc == SHOAL_ENOTFOUND)
        return 0;
    if (rc)
        return rc;
    const uint8_t *p = val;
    char why[128] = "";
    char **shards = NULL;
    size_t n = 0, at = 4;
    uint32_t count = vlen >= 4 ? s_get_le32(p) : 0;
    if (vlen < 4 || count > CATALOG_SHARDS_MAX) {
        snprintf(why, sizeof why, "%zu bytes, count %u (at most %d)", vlen, count,
                 CATALOG_SHARDS_MAX);
        goto corrupt;
    }
    shards = calloc(count ? count : 1, sizeof *shards);
    if (!shards) {
        free(val);
        return shoal_err_set(err, SHOAL_ENOMEM, "out of memory for %u shards", count);
    }
    for (; n < count; n++) {
        if (vlen - at < 2) {
            snprintf(why, sizeof why, "shard %zu: record ends at byte %zu", n, at);
            goto corrupt;
        }
        size_t len = (size_t)p[at] | ((size_t)p[at + 1] << 8);
        at += 2;
        if (len == 0 || len > CATALOG_ENDPOINT_MAX || vlen - at < len || memchr(p + at, 0, len)) {
            snprintf(why, sizeof why, "shard %zu: bad endpoint of %zu bytes at byte %zu", n, len,
                     at);
            goto corrupt;
        }
        shards[n] = malloc(len + 1);
        if (!shards[n]) {
            s_shards_free(shards, n);
            free(val);
            return shoal_err_set(err, SHOAL_ENOMEM, "out of memory for the shard registry");
        }
        memcpy(shards[n], p + at, len);
        shards[n][len] = 0;
        at += len;
        for (size_t j = 0; j < n; j++) {
            if (strcmp(shards[j], shards[n]) == 0) {
                snprintf(why, sizeof why, "shards %zu and %zu are both %.60s", j, n, shards[n]);
                n++;
                goto corrupt;
            }
        }
    }
    if (at != vlen) {
        snprintf(why, sizeof why, "%zu bytes after the last shard", vlen - at);
        goto corrupt;
    }
    free(val);
    cat->roles = calloc(count ? count : 1, 1);
    if (!cat->roles) {
        s_shards_free(shards, n);
        return shoal_err_set(err, SHOAL_ENOMEM, "out of memory for the shard registry");
    }
    cat->shards = shards;
    cat->nshards = count;
    return s_load_roles(cat, err);
corrupt:
    s_shards_free(shards, n);
    free(val);
    return s_corrupt(cat, (const uint8_t *)"S", 1, err, why);
}

/* T/<c>: centroids and owners of a collection whose parameters are loaded. */
static int s_load_trained(catalog_t *cat, catalog_coll_t *c, shoal_err_t *err)
{
    uint8_t key[CAT_KEY_MAX];
    size_t klen = kvkeys_prefix(key, 'T', c->name);
    void *val = NULL;
    size_t vlen = 0;
    int rc = kv_get(cat->kv, key, klen, &val, &vlen, err);
    if (rc == SHOAL_ENOTFOUND)
        return c->trained ? s_corrupt(cat, key, klen, err, "missing for a trained collection") : 0;
    if (rc)
        return rc;
    const uint8_t *p = val;
    char why[160];
    size_t ncent = (size_t)c->nlist * c->dim;
    size_t nown = (size_t)c->nlist * c->replication;
    size_t want = CAT_TRAINED_HDR + ncent * 4 + nown * 4;
    if (!c->trained) {
        snprintf(why, sizeof why, "present but the collection record says untrained");
        goto corrupt;
    }
    if (vlen != want) {
        snprintf(why, sizeof why, "%zu bytes, expected %zu (nlist %u x dim %u)", vlen, want,
                 c->nlist, c->dim);
        goto corrupt;
    }
    uint32_t magic = s_get_le32(p), version = s_get_le32(p + 4);
    uint32_t nlist = s_get_le32(p + 8), dim = s_get_le32(p + 12);
    if (magic != CAT_TRAINED_MAGIC || version != CATALOG_FORMAT_VERSION) {
        snprintf(why, sizeof why, "magic 0x%08x version %u, expected 0x%08x version %u", magic,
                 version, CAT_TRAINED_MAGIC, CATALOG_FORMAT_VERSION);
        goto corrupt;
    }
    if (nlist != c->nlist || dim != c->dim) {
        snprintf(why, sizeof why, "nlist %u dim %u, the collection has nlist %u dim %u", nlist, dim,
                 c->nlist, c->dim);
        goto corrupt;
    }
    c->centroids = malloc(ncent * sizeof *c->centroids);
    if (!c->centroids || s_replica_arrays(c) != 0) {
        free(val);
        return shoal_err_set(err, SHOAL_ENOMEM, "out of memory for collection \"%s\" centroids",
                             c->name);
    }
    const uint8_t *q = p + CAT_TRAINED_HDR;
    for (size_t i = 0; i < ncent; i++) {
        c->centroids[i] = s_bits_float(s_get_le32(q + 4 * i));
        if (!isfinite(c->centroids[i])) {
            snprintf(why, sizeof why, "centroid value %zu is not finite", i);
            goto corrupt;
        }
    }
    q += ncent * 4;
    for (size_t i = 0; i < nown; i++)
        c->owners[i] = s_get_le32(q + 4 * i);
    if (s_owners_check(c, c->owners, cat->nshards, why, sizeof why))
        goto corrupt;
    free(val);
    return 0;
corrupt:
    free(val);
    return s_corrupt(cat, key, klen, err, why);
}

/* Z/<c>: the sq8 quantizer's record, kept as bytes (the shards read it; checked at train). */
static int s_load_quantizer(catalog_t *cat, catalog_coll_t *c, shoal_err_t *err)
{
    uint8_t key[CAT_KEY_MAX];
    size_t klen = kvkeys_prefix(key, 'Z', c->name);
    void *val = NULL;
    size_t vlen = 0;
    int rc = kv_get(cat->kv, key, klen, &val, &vlen, err);
    if (rc == SHOAL_ENOTFOUND)
        return 0;
    if (rc)
        return rc;
    shoal_err_t qerr;
    quant_sq8_t *sq = quant_sq8_record_read(val, vlen, c->dim, &qerr);
    if (!sq || !c->trained || c->storage != QUANT_SQ8) {
        free(val);
        quant_sq8_destroy(&sq);
        return s_corrupt(cat, key, klen, err,
                         !c->trained ? "present but the collection is untrained"
                         : c->storage != QUANT_SQ8 ? "present but the collection is not sq8"
                                                   : qerr.msg);
    }
    quant_sq8_destroy(&sq);
    c->sq8_rec = val;
    c->sq8_len = vlen;
    return 0;
}

/* One record of a collection's key range: key (its first plen bytes the prefix) and value. */
typedef int (*s_record_fn)(catalog_t *cat, catalog_coll_t *c, const uint8_t *key, size_t klen,
                           size_t plen, const uint8_t *val, size_t vlen, shoal_err_t *err);

/* Calls fn on every key "<type>/<c's name>\0..." in key order; stops at its first error. */
static int s_scan(catalog_t *cat, catalog_coll_t *c, char type, s_record_fn fn, shoal_err_t *err)
{
    uint8_t prefix[CAT_KEY_MAX];
    size_t plen = kvkeys_prefix(prefix, type, c->name);
    kv_iter_t *it = kv_iter_new(cat->kv, prefix, plen, err);
    if (!it)
        return err ? err->code : SHOAL_ENOMEM;
    int rc = 0;
    for (; rc == 0 && kv_iter_valid(it); kv_iter_next(it)) {
        size_t klen = 0, vlen = 0;
        const uint8_t *key = kv_iter_key(it, &klen);
        const uint8_t *val = kv_iter_value(it, &vlen);
        rc = fn(cat, c, key, klen, plen, val, vlen, err);
    }
    if (rc == 0)
        rc = kv_iter_status(it, err);
    kv_iter_destroy(&it);
    return rc;
}

/* N/<c><list>: a list's count. */
static int s_count_record(catalog_t *cat, catalog_coll_t *c, const uint8_t *key, size_t klen,
                          size_t plen, const uint8_t *val, size_t vlen, shoal_err_t *err)
{
    char why[96];
    if (klen != plen + 4 || vlen != 8) {
        snprintf(why, sizeof why, "key of %zu bytes, value of %zu (expected %zu and 8)", klen,
                 vlen, plen + 4);
        return s_corrupt(cat, key, klen, err, why);
    }
    uint32_t list = kvkeys_get_be32(key + plen);
    if (list >= c->nlist) {
        snprintf(why, sizeof why, "list %u out of range (nlist %u)", list, c->nlist);
        return s_corrupt(cat, key, klen, err, why);
    }
    c->list_counts[list] = s_get_le64(val);
    c->count += c->list_counts[list];
    return 0;
}

/* O/<c><list><r>: a stale replica's mark (loaded after T/, so c->stale exists if trained). */
static int s_stale_record(catalog_t *cat, catalog_coll_t *c, const uint8_t *key, size_t klen,
                          size_t plen, const uint8_t *val, size_t vlen, shoal_err_t *err)
{
    uint32_t list = klen == plen + 5 ? kvkeys_get_be32(key + plen) : UINT32_MAX;
    uint32_t r = klen == plen + 5 ? key[plen + 4] : UINT32_MAX;
    int mode = vlen == 0 ? CATALOG_STALE_REBUILD
               : vlen == 1 && val[0] == CATALOG_STALE_CATCHUP ? CATALOG_STALE_CATCHUP
                                                             : 0;
    if (!c->stale || list >= c->nlist || r >= c->replication || !mode) {
        char why[128];
        snprintf(why, sizeof why, "stale mark of %zu bytes (value %zu) for list %u replica %u "
                 "(nlist %u, R %u%s)", klen, vlen, list, r, c->nlist, c->replication,
                 c->stale ? "" : ", untrained");
        return s_corrupt(cat, key, klen, err, why);
    }
    uint8_t *m = &c->stale[(size_t)list * c->replication + r];
    c->nstale += !*m;
    *m = (uint8_t)mode;
    return 0;
}

/* Q/<c><list><r><id>: an id a catching-up replica owes (loaded after O/). */
static int s_owed_record(catalog_t *cat, catalog_coll_t *c, const uint8_t *key, size_t klen,
                         size_t plen, const uint8_t *val, size_t vlen, shoal_err_t *err)
{
    (void)val;
    (void)vlen;
    uint32_t list = klen == plen + 13 ? kvkeys_get_be32(key + plen) : UINT32_MAX;
    uint32_t r = klen == plen + 13 ? key[plen + 4] : UINT32_MAX;
    size_t j = (size_t)list * c->replication + r;
    if (!c->stale || list >= c->nlist || r >= c->replication ||
        c->stale[j] != CATALOG_STALE_CATCHUP)
        return s_corrupt(cat, key, klen, err, "an owed id of a replica that is not catching up");
    c->owed[j]++;
    return 0;
}

/* V/<c><list><r>: a planned move (after T/). */
static int s_move_record(catalog_t *cat, catalog_coll_t *c, const uint8_t *key, size_t klen,
                         size_t plen, const uint8_t *val, size_t vlen, shoal_err_t *err)
{
    uint32_t list = klen == plen + 5 ? kvkeys_get_be32(key + plen) : UINT32_MAX;
    uint32_t r = klen == plen + 5 ? key[plen + 4] : UINT32_MAX;
    uint32_t to = vlen == 5 ? s_get_le32(val) : UINT32_MAX;
    uint8_t state = vlen == 5 ? val[4] : 0;
    size_t j = (size_t)list * c->replication + r;
    if (!c->move_to || list >= c->nlist || r >= c->replication || to >= cat->nshards ||
        (state != CATALOG_MOVE_QUEUED && state != CATALOG_MOVE_COPYING)) {
        char why[128];
        snprintf(why, sizeof why, "a move of %zu bytes for list %u replica %u to shard %u "
                 "state %u", vlen, list, r, to, state);
        return s_corrupt(cat, key, klen, err, why);
    }
    c->nmoves += !c->move_state[j];
    c->move_to[j] = to;
    c->move_state[j] = state;
    return 0;
}

/* Inserts or updates orphan (list, shard) of c keeping the order; 0 or -1 (memory). */
static int s_orphan_put(catalog_coll_t *c, uint32_t list, uint32_t shard, uint8_t kind)
{
    uint32_t at = 0;
    while (at < c->norphans && (c->orphans[at].list < list ||
                                (c->orphans[at].list == list && c->orphans[at].shard < shard)))
        at++;
    if (at < c->norphans && c->orphans[at].list == list && c->orphans[at].shard == shard) {
        c->orphans[at].kind = kind;
        return 0;
    }
    catalog_orphan_t *grown = realloc(c->orphans, (c->norphans + 1) * sizeof *grown);
    if (!grown)
        return -1;
    c->orphans = grown;
    memmove(&c->orphans[at + 1], &c->orphans[at], (c->norphans - at) * sizeof *grown);
    c->orphans[at] = (catalog_orphan_t){.list = list, .shard = shard, .kind = kind};
    c->norphans++;
    return 0;
}

static void s_orphan_forget(catalog_coll_t *c, uint32_t list, uint32_t shard)
{
    for (uint32_t i = 0; i < c->norphans; i++) {
        if (c->orphans[i].list == list && c->orphans[i].shard == shard) {
            memmove(&c->orphans[i], &c->orphans[i + 1],
                    (c->norphans - i - 1) * sizeof *c->orphans);
            c->norphans--;
            return;
        }
    }
}

/* D/<c><list><shard>: an orphan copy. */
static int s_orphan_record(catalog_t *cat, catalog_coll_t *c, const uint8_t *key, size_t klen,
                           size_t plen, const uint8_t *val, size_t vlen, shoal_err_t *err)
{
    uint32_t list = klen == plen + 8 ? kvkeys_get_be32(key + plen) : UINT32_MAX;
    uint32_t shard = klen == plen + 8 ? kvkeys_get_be32(key + plen + 4) : UINT32_MAX;
    uint8_t kind = vlen == 1 ? val[0] : 0;
    if (!c->trained || list >= c->nlist || shard >= cat->nshards ||
        (kind != CATALOG_ORPHAN_CURRENT && kind != CATALOG_ORPHAN_STALE)) {
        char why[128];
        snprintf(why, sizeof why, "an orphan of list %u on shard %u kind %u (%zu bytes)", list,
                 shard, kind, vlen);
        return s_corrupt(cat, key, klen, err, why);
    }
    if (s_orphan_put(c, list, shard, kind) != 0)
        return shoal_err_set(err, SHOAL_ENOMEM, "out of memory for the orphans of \"%s\"",
                             c->name);
    return 0;
}

/* Decodes a K/ value into t; 0 or -1 with why. */
static int s_calib_decode(const uint8_t *val, size_t vlen, catalog_calib_t *t, char *why,
                          size_t cap)
{
    uint32_t n = vlen >= CAT_CALIB_HDR ? s_get_le32(val + 24) : 0;
    if (vlen < CAT_CALIB_HDR || s_get_le32(val) != CAT_CALIB_MAGIC ||
        s_get_le32(val + 4) != CATALOG_FORMAT_VERSION || n > CATALOG_CALIB_POINTS_MAX ||
        vlen != CAT_CALIB_HDR + (size_t)n * 16) {
        snprintf(why, cap, "a calibration of %zu bytes (%u points) does not parse", vlen, n);
        return -1;
    }
    memset(t, 0, sizeof *t);
    t->count = s_get_le64(val + 8);
    t->k = s_get_le32(val + 16);
    t->queries = s_get_le32(val + 20);
    t->npoints = n;
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *p = val + CAT_CALIB_HDR + (size_t)i * 16;
        catalog_calib_point_t *pt = &t->points[i];
        pt->nprobe = s_get_le32(p);
        pt->ef = s_get_le32(p + 4);
        pt->recall = s_bits_float(s_get_le32(p + 8));
        pt->cost = s_bits_float(s_get_le32(p + 12));
        if (!(pt->recall >= 0 && pt->recall <= 1) || !(pt->cost >= 0) || !isfinite(pt->cost)) {
            snprintf(why, cap, "calibration point %u: recall %g cost %g", i, pt->recall,
                     pt->cost);
            return -1;
        }
    }
    return 0;
}

/* K/<c>: the recall calibration, when there is one. */
static int s_load_calib(catalog_t *cat, catalog_coll_t *c, shoal_err_t *err)
{
    uint8_t key[CAT_KEY_MAX];
    size_t klen = kvkeys_prefix(key, 'K', c->name);
    void *val = NULL;
    size_t vlen = 0;
    int rc = kv_get(cat->kv, key, klen, &val, &vlen, err);
    if (rc == SHOAL_ENOTFOUND) {
        shoal_err_clear(err);
        return 0;
    }
    if (rc)
        return rc;
    char why[128];
    c->calib = malloc(sizeof *c->calib);
    if (!c->calib) {
        free(val);
        return shoal_err_set(err, SHOAL_ENOMEM, "out of memory");
    }
    rc = s_calib_decode(val, vlen, c->calib, why, sizeof why);
    free(val);
    if (rc) {
        free(c->calib);
        c->calib = NULL;
        return s_corrupt(cat, key, klen, err, why);
    }
    return 0;
}

static int s_load_colls(catalog_t *cat, shoal_err_t *err)
{
    kv_iter_t *it = kv_iter_new(cat->kv, "C/", 2, err);
    if (!it)
        return err ? err->code : SHOAL_ENOMEM;
    int rc = 0;
    for (; rc == 0 && kv_iter_valid(it); kv_iter_next(it)) {
        size_t klen = 0, vlen = 0;
        const uint8_t *key = kv_iter_key(it, &klen);
        const uint8_t *val = kv_iter_value(it, &vlen);
        char why[160];
        catalog_coll_t c;
        memset(&c, 0, sizeof c);
        size_t nlen = klen >= 3 ? klen - 3 : 0;
        if (nlen == 0 || key[klen - 1] != 0 || !s_name_ok((const char *)key + 2, nlen)) {
            rc = s_corrupt(cat, key, klen, err, "not a valid collection key");
            break;
        }
        memcpy(c.name, key + 2, nlen);
        c.name[nlen] = 0;
        if (s_coll_decode(val, vlen, &c, why, sizeof why)) {
            rc = s_corrupt(cat, key, klen, err, why);
            break;
        }
        c.list_counts = calloc(c.nlist, sizeof *c.list_counts);
        if (!c.list_counts) {
            rc = shoal_err_set(err, SHOAL_ENOMEM, "out of memory for %u list counts", c.nlist);
            break;
        }
        rc = s_load_trained(cat, &c, err);
        if (rc == 0)
            rc = s_scan(cat, &c, 'N', s_count_record, err);
        if (rc == 0)
            rc = s_scan(cat, &c, 'O', s_stale_record, err);
        if (rc == 0)
            rc = s_scan(cat, &c, 'Q', s_owed_record, err);
        if (rc == 0)
            rc = s_scan(cat, &c, 'V', s_move_record, err);
        if (rc == 0)
            rc = s_scan(cat, &c, 'D', s_orphan_record, err);
        if (rc == 0)
            rc = s_load_quantizer(cat, &c, err);
        if (rc == 0)
            rc = s_load_calib(cat, &c, err);
        /* Keys come in name order, so appending keeps the array sorted. */
        if (rc == 0)
            rc = s_coll_reserve(cat, err);
        if (rc == 0)
            s_coll_insert(cat, cat->ncolls, &c);
        if (rc)
            s_coll_free(&c);
    }
    if (rc == 0)
        rc = kv_iter_status(it, err);
    kv_iter_destroy(&it);
    return rc;
}

/* The next txn: one past the largest X/ key of any collection. */
static int s_load_next_txn(catalog_t *cat, shoal_err_t *err)
{
    kv_iter_t *it = kv_iter_new(cat->kv, "X/", 2, err);
    if (!it)
        return err ? err->code : SHOAL_ENOMEM;
    uint64_t max = 0;
    int rc = 0;
    for (; kv_iter_valid(it); kv_iter_next(it)) {
        size_t klen = 0;
        const uint8_t *key = kv_iter_key(it, &klen);
        const uint8_t *zero = memchr(key + 2, 0, klen - 2);
        if (!zero || (size_t)(key + klen - zero) != 9) {
            rc = s_corrupt(cat, key, klen, err, "not a valid intent key");
            break;
        }
        uint64_t txn = kvkeys_get_be64(zero + 1);
        if (txn > max)
            max = txn;
    }
    if (rc == 0)
        rc = kv_iter_status(it, err);
    kv_iter_destroy(&it);
    if (rc == 0 && max == UINT64_MAX)
        rc = shoal_err_set(err, SHOAL_ECORRUPT, "catalog %s: intent txn numbers are exhausted",
                           kv_dir(cat->kv));
    atomic_store(&cat->next_txn, max + 1);
    return rc;
}

catalog_t *catalog_open(const char *dir, shoal_err_t *err)
{
    catalog_t *cat = calloc(1, sizeof *cat);
    if (!cat) {
        shoal_err_set(err, SHOAL_ENOMEM, "catalog %s: out of memory", dir ? dir : "(null)");
        return NULL;
    }
    atomic_init(&cat->next_txn, 1);
    cat->kv = kv_open(dir, 1, err);
    if (!cat->kv)
        goto fail;
    if (s_load_format(cat, err) || s_load_shards(cat, err) || s_load_colls(cat, err) ||
        s_load_next_txn(cat, err))
        goto fail;
    log_info("catalog %s: %zu shards, %zu collections", dir, cat->nshards, cat->ncolls);
    return cat;
fail:
    catalog_close(&cat);
    return NULL;
}

void catalog_close(catalog_t **cat_p)
{
    if (!cat_p || !*cat_p)
        return;
    catalog_t *cat = *cat_p;
    for (size_t i = 0; i < cat->ncolls; i++)
        s_coll_free(&cat->colls[i]);
    free(cat->colls);
    s_shards_free(cat->shards, cat->nshards);
    free(cat->roles);
    kv_close(&cat->kv);
    free(cat);
    *cat_p = NULL;
}

/* ------------------------------------------------------------------------ */
/* Shard registry                                                           */
/* ------------------------------------------------------------------------ */

static int s_check_endpoints(const char *const *endpoints, size_t n, shoal_err_t *err)
{
    if (n > CATALOG_SHARDS_MAX)
        return shoal_err_set(err, SHOAL_EINVAL, "%zu shards given, at most %d", n,
                             CATALOG_SHARDS_MAX);
    for (size_t i = 0; i < n; i++) {
        size_t len = endpoints[i] ? strnlen(endpoints[i], CATALOG_ENDPOINT_MAX + 1) : 0;
        if (len == 0 || len > CATALOG_ENDPOINT_MAX)
            return shoal_err_set(err, SHOAL_EINVAL, "shard %zu: endpoint must be 1..%d bytes", i,
                                 CATALOG_ENDPOINT_MAX);
        for (size_t j = 0; j < i; j++)
            if (strcmp(endpoints[i], endpoints[j]) == 0)
                return shoal_err_set(err, SHOAL_EINVAL, "shards %zu and %zu are both %s", j, i,
                                     endpoints[i]);
    }
    return 0;
}

/*
 * Stores the registry as these n endpoints (S record, synced) and takes them
 * into RAM; roles keep their values, new shards are live.
 */
static int s_registry_store(catalog_t *cat, const char *const *endpoints, size_t n,
                            shoal_err_t *err)
{
    size_t bytes = 4;
    for (size_t i = 0; i < n; i++)
        bytes += 2 + strlen(endpoints[i]);
    uint8_t *val = malloc(bytes);
    char **shards = calloc(n ? n : 1, sizeof *shards);
    uint8_t *roles = calloc(n ? n : 1, 1);
    size_t copied = 0;
    int rc = 0;
    if (!val || !shards || !roles) {
        rc = shoal_err_set(err, SHOAL_ENOMEM, "out of memory for the shard registry");
        goto done;
    }
    s_put_le32(val, (uint32_t)n);
    size_t at = 4;
    for (; copied < n; copied++) {
        size_t len = strlen(endpoints[copied]);
        val[at] = (uint8_t)len;
        val[at + 1] = (uint8_t)(len >> 8);
        memcpy(val + at + 2, endpoints[copied], len);
        at += 2 + len;
        shards[copied] = strdup(endpoints[copied]);
        if (!shards[copied]) {
            rc = shoal_err_set(err, SHOAL_ENOMEM, "out of memory for the shard registry");
            goto done;
        }
    }
    rc = kv_put(cat->kv, "S", 1, val, bytes, 1, err);
    if (rc) {
        shoal_err_prefix(err, "storing the shard registry");
        goto done;
    }
    log_info("catalog %s: shard registry now has %zu shards (was %zu)", kv_dir(cat->kv), n,
             cat->nshards);
    if (cat->nshards && n)
        memcpy(roles, cat->roles, (cat->nshards < n ? cat->nshards : n) * sizeof *roles);
    s_shards_free(cat->shards, cat->nshards);
    free(cat->roles);
    cat->shards = shards;
    cat->roles = roles;
    cat->nshards = n;
    shards = NULL;
    roles = NULL;
    copied = 0;
done:
    s_shards_free(shards, copied);
    free(roles);
    free(val);
    return rc;
}

int catalog_shards_set(catalog_t *cat, const char *const *endpoints, size_t n, shoal_err_t *err)
{
    if (n == 0)
        return 0;
    int rc = s_check_endpoints(endpoints, n, err);
    if (rc)
        return rc;
    /* Compare the registry's shards that were not removed with the given ones
       that were not removed (g walks the given list). */
    size_t g = 0, appended_from = n;
    for (size_t i = 0; i < cat->nshards; i++) {
        if (cat->roles[i] == CATALOG_SHARD_REMOVED)
            continue;
        while (g < n && catalog_shard_find(cat, endpoints[g]) != SIZE_MAX &&
               cat->roles[catalog_shard_find(cat, endpoints[g])] == CATALOG_SHARD_REMOVED) {
            log_warn("catalog %s: shard %s was removed (shard remove): not taken back; "
                     "`shoal shard add` adds it again",
                     kv_dir(cat->kv), endpoints[g]);
            g++;
        }
        if (g >= n) { /* fewer given: those added online (shard add) are the catalog's */
            log_info("catalog %s: shard %s (and any after it) is in the registry but not in "
                     "--shards: kept (shards leave by drain and remove)",
                     kv_dir(cat->kv), cat->shards[i]);
            return 0;
        }
        if (strcmp(cat->shards[i], endpoints[g]) != 0)
            return shoal_err_set(err, SHOAL_EINVAL,
                                 "shard %zu is %s in the catalog, %s given (shards can only be "
                                 "appended)",
                                 i, cat->shards[i], endpoints[g]);
        g++;
    }
    appended_from = g;
    /* The rest are new unless the registry has them (removed ones are skipped). */
    const char **all = malloc((cat->nshards + n) * sizeof *all);
    if (!all)
        return shoal_err_set(err, SHOAL_ENOMEM, "out of memory for the shard registry");
    size_t total = 0;
    for (size_t i = 0; i < cat->nshards; i++)
        all[total++] = cat->shards[i];
    for (size_t k = appended_from; k < n; k++) {
        size_t at = catalog_shard_find(cat, endpoints[k]);
        if (at != SIZE_MAX) {
            if (cat->roles[at] != CATALOG_SHARD_REMOVED) {
                free(all);
                return shoal_err_set(err, SHOAL_EINVAL,
                                     "shard %s is given twice in effect (it is shard %zu of "
                                     "the catalog)",
                                     endpoints[k], at);
            }
            log_warn("catalog %s: shard %s was removed (shard remove): not taken back",
                     kv_dir(cat->kv), endpoints[k]);
            continue;
        }
        all[total++] = endpoints[k];
    }
    rc = 0;
    if (total > CATALOG_SHARDS_MAX)
        rc = shoal_err_set(err, SHOAL_EINVAL, "%zu shards, at most %d", total,
                           CATALOG_SHARDS_MAX);
    else if (total != cat->nshards)
        rc = s_registry_store(cat, all, total, err);
    free(all);
    return rc;
}

size_t catalog_shard_count(const catalog_t *cat)
{
    return cat->nshards;
}

const char *catalog_shard(const catalog_t *cat, size_t i)
{
    return i < cat->nshards ? cat->shards[i] : NULL;
}

int catalog_shard_role(const catalog_t *cat, size_t i)
{
    return i < cat->nshards ? cat->roles[i] : CATALOG_SHARD_REMOVED;
}

size_t catalog_shards_live(const catalog_t *cat)
{
    size_t n = 0;
    for (size_t i = 0; i < cat->nshards; i++)
        n += cat->roles[i] == CATALOG_SHARD_LIVE;
    return n;
}

size_t catalog_shard_find(const catalog_t *cat, const char *endpoint)
{
    for (size_t i = 0; endpoint && i < cat->nshards; i++)
        if (strcmp(cat->shards[i], endpoint) == 0)
            return i;
    return SIZE_MAX;
}

int catalog_shard_role_set(catalog_t *cat, size_t i, int role, shoal_err_t *err)
{
    if (i >= cat->nshards || role < CATALOG_SHARD_LIVE || role > CATALOG_SHARD_REMOVED)
        return shoal_err_set(err, SHOAL_EINVAL, "shard %zu role %d out of range (registry of %zu)",
                             i, role, cat->nshards);
    uint8_t key[8], v = (uint8_t)role;
    size_t klen = s_key_role(key, (uint32_t)i);
    kv_batch_t *batch = kv_batch_new();
    if (!batch)
        return shoal_err_set(err, SHOAL_ENOMEM, "out of memory");
    if (role == CATALOG_SHARD_LIVE)
        kv_batch_delete(batch, key, klen);
    else
        kv_batch_put(batch, key, klen, &v, 1);
    int rc = kv_write(cat->kv, batch, 1, err);
    kv_batch_destroy(&batch);
    if (rc)
        return shoal_err_prefix(err, "storing the role of shard %s", cat->shards[i]);
    cat->roles[i] = (uint8_t)role;
    return 0;
}

int catalog_shard_add(catalog_t *cat, const char *endpoint, size_t *index, shoal_err_t *err)
{
    int rc = s_check_endpoints(&endpoint, 1, err);
    if (rc)
        return rc;
    size_t at = catalog_shard_find(cat, endpoint);
    if (at != SIZE_MAX && cat->roles[at] != CATALOG_SHARD_REMOVED)
        return shoal_err_set(err, SHOAL_EEXIST, "shard %s is in the registry already (shard %zu, %s)",
                             endpoint, at,
                             cat->roles[at] == CATALOG_SHARD_DRAINING ? "draining" : "live");
    if (at != SIZE_MAX) {
        rc = catalog_shard_role_set(cat, at, CATALOG_SHARD_LIVE, err);
    } else if (cat->nshards >= CATALOG_SHARDS_MAX) {
        rc = shoal_err_set(err, SHOAL_EINVAL, "the registry holds %d shards, the most it can",
                           CATALOG_SHARDS_MAX);
    } else {
        const char **all = malloc((cat->nshards + 1) * sizeof *all);
        if (!all)
            return shoal_err_set(err, SHOAL_ENOMEM, "out of memory for the shard registry");
        for (size_t i = 0; i < cat->nshards; i++)
            all[i] = cat->shards[i];
        all[cat->nshards] = endpoint;
        at = cat->nshards;
        rc = s_registry_store(cat, all, cat->nshards + 1, err);
        free(all);
    }
    if (rc == 0 && index)
        *index = at;
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Collections                                                              */
/* ------------------------------------------------------------------------ */

int catalog_create(catalog_t *cat, const catalog_coll_t *params, shoal_err_t *err)
{
    int rc = s_check_name(params->name, err);
    if (rc)
        return rc;
    char why[128];
    int found = 0;
    size_t at = s_coll_search(cat, params->name, &found);
    if (found)
        return shoal_err_set(err, SHOAL_EEXIST, "collection \"%s\" exists already", params->name);

    catalog_coll_t c;
    memset(&c, 0, sizeof c);
    memcpy(c.name, params->name, strlen(params->name) + 1);
    c.dim = params->dim;
    c.metric = params->metric;
    c.nlist = params->nlist;
    c.M = params->M;
    c.ef_construction = params->ef_construction;
    c.nprobe = params->nprobe;
    c.replication = params->replication ? params->replication : 1;
    c.write_quorum = params->write_quorum ? params->write_quorum : 1;
    c.target_recall = params->target_recall;
    c.storage = params->storage;
    if (s_coll_check(&c, why, sizeof why))
        return shoal_err_set(err, SHOAL_EINVAL, "collection \"%s\": %s", params->name, why);
    if (c.replication > 1 && c.replication > catalog_shards_live(cat))
        return shoal_err_set(err, SHOAL_EINVAL,
                             "collection \"%s\": replication %u needs as many shards, the "
                             "cluster has %zu (not draining)",
                             params->name, c.replication, catalog_shards_live(cat));
    c.list_counts = calloc(c.nlist, sizeof *c.list_counts);
    if (!c.list_counts)
        return shoal_err_set(err, SHOAL_ENOMEM, "collection \"%s\": out of memory for %u lists",
                             c.name, c.nlist);
    uint8_t key[CAT_KEY_MAX], val[CAT_COLL_BYTES];
    size_t klen = kvkeys_prefix(key, 'C', c.name);
    s_coll_encode(&c, val);
    rc = s_coll_reserve(cat, err);
    if (rc == 0)
        rc = kv_put(cat->kv, key, klen, val, sizeof val, 1, err);
    if (rc == 0)
        s_coll_insert(cat, at, &c);
    if (rc) {
        shoal_err_prefix(err, "creating collection \"%s\"", c.name);
        s_coll_free(&c);
    }
    return rc;
}

int catalog_drop(catalog_t *cat, const char *name, shoal_err_t *err)
{
    catalog_coll_t *c = s_coll_get(cat, name, err);
    if (!c)
        return err ? err->code : SHOAL_ENOTFOUND;
    kv_batch_t *batch = kv_batch_new();
    if (!batch)
        return shoal_err_set(err, SHOAL_ENOMEM, "dropping \"%s\": out of memory", name);
    static const char types[] = "CTNIMXOQVDKZ";
    for (size_t t = 0; t < sizeof types - 1; t++) {
        uint8_t begin[CAT_KEY_MAX], end[CAT_KEY_MAX];
        size_t len = kvkeys_prefix(begin, types[t], name);
        kv_batch_delete_range(batch, begin, len, end, kvkeys_range_end(end, types[t], name));
    }
    int rc = kv_write(cat->kv, batch, 1, err);
    kv_batch_destroy(&batch);
    if (rc)
        return shoal_err_prefix(err, "dropping collection \"%s\"", name);
    size_t at = (size_t)(c - cat->colls);
    s_coll_free(c);
    memmove(&cat->colls[at], &cat->colls[at + 1], (cat->ncolls - at - 1) * sizeof *cat->colls);
    cat->ncolls--;
    return 0;
}

const catalog_coll_t *catalog_find(const catalog_t *cat, const char *name)
{
    if (!name)
        return NULL;
    int found = 0;
    size_t at = s_coll_search(cat, name, &found);
    return found ? &cat->colls[at] : NULL;
}

size_t catalog_coll_count(const catalog_t *cat)
{
    return cat->ncolls;
}

const catalog_coll_t *catalog_coll_at(const catalog_t *cat, size_t i)
{
    return i < cat->ncolls ? &cat->colls[i] : NULL;
}

/* The T/ value of c with these centroids and owners into val (its size: s_trained_len). */
static size_t s_trained_len(const catalog_coll_t *c)
{
    return CAT_TRAINED_HDR + (size_t)c->nlist * c->dim * 4 + (size_t)c->nlist * c->replication * 4;
}

static void s_trained_encode(const catalog_coll_t *c, const float *centroids,
                             const uint32_t *owners, uint8_t *val)
{
    size_t ncent = (size_t)c->nlist * c->dim, nown = (size_t)c->nlist * c->replication;
    s_put_le32(val, CAT_TRAINED_MAGIC);
    s_put_le32(val + 4, CATALOG_FORMAT_VERSION);
    s_put_le32(val + 8, c->nlist);
    s_put_le32(val + 12, c->dim);
    uint8_t *q = val + CAT_TRAINED_HDR;
    for (size_t i = 0; i < ncent; i++)
        s_put_le32(q + 4 * i, s_float_bits(centroids[i]));
    q += ncent * 4;
    for (size_t i = 0; i < nown; i++)
        s_put_le32(q + 4 * i, owners[i]);
}

int catalog_set_trained(catalog_t *cat, const char *name, const float *centroids,
                        const uint32_t *owners, shoal_err_t *err)
{
    return catalog_set_trained_sq8(cat, name, centroids, owners, NULL, 0, err);
}

/* Checks that collection c may take this training: not trained yet, finite
 * centroids, an owner table that names its shards. */
static int s_trained_check(const catalog_t *cat, const catalog_coll_t *c, const char *name,
                           const float *centroids, const uint32_t *owners, shoal_err_t *err)
{
    if (c->trained)
        return shoal_err_set(err, SHOAL_EEXIST,
                             "collection \"%s\" is trained already (its ids are placed by its "
                             "centroids)",
                             name);
    size_t ncent = (size_t)c->nlist * c->dim;
    for (size_t i = 0; i < ncent; i++)
        if (!isfinite(centroids[i]))
            return shoal_err_set(err, SHOAL_EINVAL,
                                 "collection \"%s\": centroid %zu value %zu is not finite", name,
                                 i / c->dim, i % c->dim);
    char why[128];
    if (s_owners_check(c, owners, cat->nshards, why, sizeof why))
        return shoal_err_set(err, SHOAL_EINVAL, "collection \"%s\": %s", name, why);
    return 0;
}

/* Adds the trained collection's records to batch: the collection marked
 * trained ('C'), its centroids and owners ('T'), its sq8 quantizer ('Z') when
 * there is one. */
static void s_trained_batch(kv_batch_t *batch, const catalog_coll_t *c, const char *name,
                            const uint8_t *tval, size_t tlen, const uint8_t *qrec, size_t qlen)
{
    uint8_t key[CAT_KEY_MAX], cval[CAT_COLL_BYTES];
    catalog_coll_t updated = *c;
    updated.trained = 1;
    s_coll_encode(&updated, cval);
    size_t klen = kvkeys_prefix(key, 'C', name);
    kv_batch_put(batch, key, klen, cval, sizeof cval);
    klen = kvkeys_prefix(key, 'T', name);
    kv_batch_put(batch, key, klen, tval, tlen);
    if (qrec) {
        klen = kvkeys_prefix(key, 'Z', name);
        kv_batch_put(batch, key, klen, qrec, qlen);
    }
}

/* Hands the stored training to c: its quantizer record, centroids and the
 * replica arrays (owners filled, nothing stale). c owns them from here. */
static void s_trained_adopt(catalog_coll_t *c, const catalog_coll_t *arrays, float *centroids,
                            uint8_t *sq8_rec, size_t sq8_len)
{
    c->trained = 1;
    c->sq8_rec = sq8_rec;
    c->sq8_len = sq8_len;
    c->centroids = centroids;
    c->owners = arrays->owners;
    c->stale = arrays->stale;
    c->owed = arrays->owed;
    c->move_to = arrays->move_to;
    c->move_state = arrays->move_state;
    c->nstale = 0;
}

int catalog_set_trained_sq8(catalog_t *cat, const char *name, const float *centroids,
                            const uint32_t *owners, const uint8_t *qrec, size_t qlen,
                            shoal_err_t *err)
{
    catalog_coll_t *c = s_coll_get(cat, name, err);
    if (!c)
        return err ? err->code : SHOAL_ENOTFOUND;
    int rc = s_trained_check(cat, c, name, centroids, owners, err);
    if (rc)
        return rc;

    rc = SHOAL_ENOMEM;
    size_t ncent = (size_t)c->nlist * c->dim;
    size_t nown = (size_t)c->nlist * c->replication;
    size_t tlen = s_trained_len(c);
    uint8_t *tval = malloc(tlen);
    float *cent_copy = malloc(ncent * sizeof *cent_copy);
    uint8_t *qcopy = qrec ? malloc(qlen) : NULL;
    if (qcopy)
        memcpy(qcopy, qrec, qlen);
    catalog_coll_t arrays = *c;
    int arrays_ok = s_replica_arrays(&arrays) == 0;
    kv_batch_t *batch = kv_batch_new();
    if (!tval || !cent_copy || !arrays_ok || !batch || (qrec && !qcopy)) {
        shoal_err_set(err, SHOAL_ENOMEM,
                      "collection \"%s\": out of memory for %zu bytes of "
                      "centroids",
                      name, tlen);
        goto done;
    }
    s_trained_encode(c, centroids, owners, tval);
    memcpy(cent_copy, centroids, ncent * sizeof *cent_copy);
    memcpy(arrays.owners, owners, nown * sizeof *arrays.owners);

    s_trained_batch(batch, c, name, tval, tlen, qrec, qlen);
    rc = kv_write(cat->kv, batch, 1, err);
    if (rc) {
        shoal_err_prefix(err, "storing the trained state of \"%s\"", name);
        goto done;
    }
    s_trained_adopt(c, &arrays, cent_copy, qcopy, qrec ? qlen : 0);
    qcopy = NULL;
    cent_copy = NULL;
done:
    kv_batch_destroy(&batch);
    free(tval);
    free(cent_copy);
    free(qcopy);
    if (!c->trained) { /* failed: the arrays were not handed over */
        free(arrays.owners);
        free(arrays.stale);
        free(arrays.owed);
        free(arrays.move_to);
        free(arrays.move_state);
    }
    return rc;
}

/* The trained collection name (its replicas exist), else NULL with ENOTFOUND / EINVAL in err. */
static catalog_coll_t *s_trained_coll(catalog_t *cat, const char *name, shoal_err_t *err)
{
    catalog_coll_t *c = s_coll_get(cat, name, err);
    if (c && !c->trained) {
        shoal_err_set(err, SHOAL_EINVAL, "collection \"%s\" is not trained: no replicas", name);
        return NULL;
    }
    return c;
}

int catalog_stale_set(catalog_t *cat, const char *name, const uint32_t *lists,
                      const uint32_t *replicas, size_t n, int stale, shoal_err_t *err)
{
    catalog_coll_t *c = s_trained_coll(cat, name, err);
    if (!c)
        return err ? err->code : SHOAL_ENOTFOUND;
    for (size_t i = 0; i < n; i++)
        if (lists[i] >= c->nlist || replicas[i] >= c->replication)
            return shoal_err_set(err, SHOAL_EINVAL,
                                 "collection \"%s\": list %u replica %u out of range (nlist %u, "
                                 "R %u)",
                                 name, lists[i], replicas[i], c->nlist, c->replication);
    kv_batch_t *batch = kv_batch_new();
    if (!batch)
        return shoal_err_set(err, SHOAL_ENOMEM, "collection \"%s\": out of memory", name);
    for (size_t i = 0; i < n; i++) {
        uint8_t key[CAT_KEY_MAX];
        size_t klen = s_key_replica(key, 'O', name, lists[i], replicas[i]);
        if (stale)
            kv_batch_put(batch, key, klen, "", 0);
        else
            kv_batch_delete(batch, key, klen);
        s_owed_delete_all(batch, name, lists[i], replicas[i]);
    }
    int rc = kv_write(cat->kv, batch, 1, err);
    kv_batch_destroy(&batch);
    if (rc)
        return shoal_err_prefix(err, "collection \"%s\": %s stale replicas", name,
                                stale ? "marking" : "clearing");
    for (size_t i = 0; i < n; i++) {
        size_t j = (size_t)lists[i] * c->replication + replicas[i];
        if ((c->stale[j] != 0) != (stale != 0))
            c->nstale = stale ? c->nstale + 1 : c->nstale - 1;
        c->stale[j] = stale ? CATALOG_STALE_REBUILD : 0;
        c->owed[j] = 0;
    }
    return 0;
}

int catalog_stale_owe(catalog_t *cat, const char *name, const catalog_owed_t *owed, size_t n,
                      size_t *newly, shoal_err_t *err)
{
    if (newly)
        *newly = 0;
    catalog_coll_t *c = s_trained_coll(cat, name, err);
    if (!c)
        return err ? err->code : SHOAL_ENOTFOUND;
    size_t nown = (size_t)c->nlist * c->replication;
    uint8_t *mode = malloc(nown ? nown : 1);
    uint32_t *count = malloc((nown ? nown : 1) * sizeof *count);
    kv_batch_t *batch = kv_batch_new();
    if (!mode || !count || !batch) {
        free(mode);
        free(count);
        kv_batch_destroy(&batch);
        return shoal_err_set(err, SHOAL_ENOMEM, "collection \"%s\": out of memory", name);
    }
    memcpy(mode, c->stale, nown);
    memcpy(count, c->owed, nown * sizeof *count);
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        uint32_t l = owed[i].list, r = owed[i].replica;
        if (l >= c->nlist || r >= c->replication) {
            rc = shoal_err_set(err, SHOAL_EINVAL,
                               "collection \"%s\": list %u replica %u out of range", name, l, r);
            break;
        }
        size_t j = (size_t)l * c->replication + r;
        uint8_t key[CAT_KEY_MAX];
        size_t klen = s_key_replica(key, 'O', name, l, r);
        if (mode[j] == CATALOG_STALE_REBUILD)
            continue;
        /* Too far behind: rebuilt whole. Past half the list, copying it is less work
           than replaying (a get and an upsert per id against an export and an insert). */
        uint64_t limit = c->list_counts[l] / 2 + CATALOG_OWED_MIN;
        if (count[j] + owed[i].n > CATALOG_OWED_MAX || count[j] + owed[i].n > limit) {
            mode[j] = CATALOG_STALE_REBUILD;
            count[j] = 0;
            kv_batch_put(batch, key, klen, "", 0);
            s_owed_delete_all(batch, name, l, r);
            continue;
        }
        if (!mode[j]) {
            const uint8_t v = CATALOG_STALE_CATCHUP;
            mode[j] = CATALOG_STALE_CATCHUP;
            kv_batch_put(batch, key, klen, &v, 1);
        }
        for (size_t k = 0; k < owed[i].n; k++) {
            klen = s_key_owed(key, name, l, r, owed[i].ids[k]);
            kv_batch_put(batch, key, klen, "", 0);
        }
        count[j] += (uint32_t)owed[i].n; /* an id owed twice counts twice: an upper bound */
    }
    if (rc == 0)
        rc = kv_write(cat->kv, batch, 1, err);
    kv_batch_destroy(&batch);
    if (rc == 0) {
        for (size_t j = 0; j < nown; j++) {
            if (!c->stale[j] && mode[j]) {
                c->nstale++;
                if (newly)
                    (*newly)++;
            }
        }
        memcpy(c->stale, mode, nown);
        memcpy(c->owed, count, nown * sizeof *count);
    } else {
        shoal_err_prefix(err, "collection \"%s\": recording missed writes", name);
    }
    free(mode);
    free(count);
    return rc;
}

int catalog_owed_scan(catalog_t *cat, const char *name, uint32_t l, uint32_t r, uint64_t from_id,
                      uint64_t *ids, size_t max, size_t *got, shoal_err_t *err)
{
    *got = 0;
    uint8_t prefix[CAT_KEY_MAX], start[CAT_KEY_MAX];
    size_t plen = s_key_replica(prefix, 'Q', name, l, r);
    size_t slen = s_key_owed(start, name, l, r, from_id);
    kv_iter_t *it = kv_iter_new(cat->kv, prefix, plen, err);
    if (!it)
        return err ? err->code : SHOAL_ENOMEM;
    kv_iter_seek(it, start, slen);
    for (; *got < max && kv_iter_valid(it); kv_iter_next(it)) {
        size_t klen = 0;
        const uint8_t *key = kv_iter_key(it, &klen);
        if (klen != plen + 8)
            continue;
        ids[(*got)++] = kvkeys_get_be64(key + plen);
    }
    int rc = kv_iter_status(it, err);
    kv_iter_destroy(&it);
    return rc;
}

int catalog_owed_clear(catalog_t *cat, const char *name, uint32_t l, uint32_t r,
                       const uint64_t *ids, size_t n, shoal_err_t *err)
{
    catalog_coll_t *c = s_trained_coll(cat, name, err);
    if (!c)
        return err ? err->code : SHOAL_ENOTFOUND;
    if (l >= c->nlist || r >= c->replication)
        return shoal_err_set(err, SHOAL_EINVAL, "collection \"%s\": list %u replica %u", name,
                             l, r);
    kv_batch_t *batch = kv_batch_new();
    if (!batch)
        return shoal_err_set(err, SHOAL_ENOMEM, "collection \"%s\": out of memory", name);
    for (size_t k = 0; k < n; k++) {
        uint8_t key[CAT_KEY_MAX];
        size_t klen = s_key_owed(key, name, l, r, ids[k]);
        kv_batch_delete(batch, key, klen);
    }
    int rc = kv_write(cat->kv, batch, 1, err);
    kv_batch_destroy(&batch);
    if (rc)
        return shoal_err_prefix(err, "collection \"%s\": clearing owed ids", name);
    size_t j = (size_t)l * c->replication + r;
    c->owed[j] = c->owed[j] > n ? c->owed[j] - (uint32_t)n : 0;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Moves and orphans                                                        */
/* ------------------------------------------------------------------------ */

/* "D/<c><list><shard>" into key; returns the length. */
static size_t s_key_orphan(uint8_t *key, const char *name, uint32_t list, uint32_t shard)
{
    size_t len = kvkeys_u32(key, 'D', name, list);
    kvkeys_put_be32(key + len, shard);
    return len + 4;
}

/* Puts the V/ record of replica j of c (move_to[j], state) into batch. */
static void s_move_put(kv_batch_t *batch, const catalog_coll_t *c, uint32_t l, uint32_t r,
                       uint32_t to, uint8_t state)
{
    uint8_t key[CAT_KEY_MAX], val[5];
    size_t klen = s_key_replica(key, 'V', c->name, l, r);
    s_put_le32(val, to);
    val[4] = state;
    kv_batch_put(batch, key, klen, val, sizeof val);
}

static void s_move_delete(kv_batch_t *batch, const catalog_coll_t *c, uint32_t l, uint32_t r)
{
    uint8_t key[CAT_KEY_MAX];
    size_t klen = s_key_replica(key, 'V', c->name, l, r);
    kv_batch_delete(batch, key, klen);
}

static void s_orphan_batch(kv_batch_t *batch, const catalog_coll_t *c, uint32_t l,
                           uint32_t shard, uint8_t kind)
{
    uint8_t key[CAT_KEY_MAX];
    size_t klen = s_key_orphan(key, c->name, l, shard);
    if (kind)
        kv_batch_put(batch, key, klen, &kind, 1);
    else
        kv_batch_delete(batch, key, klen);
}

/* Writes batch synced and destroys it; err prefixed with what. */
static int s_batch_commit(catalog_t *cat, kv_batch_t **batch, const char *name, const char *what,
                          shoal_err_t *err)
{
    if (!*batch)
        return shoal_err_set(err, SHOAL_ENOMEM, "collection \"%s\": out of memory", name);
    int rc = kv_write(cat->kv, *batch, 1, err);
    kv_batch_destroy(batch);
    if (rc)
        return shoal_err_prefix(err, "collection \"%s\": %s", name, what);
    return 0;
}

/* Replica (l, r) of trained c, or SHOAL_EINVAL. */
static int s_replica_check(const catalog_coll_t *c, uint32_t l, uint32_t r, shoal_err_t *err)
{
    if (l >= c->nlist || r >= c->replication)
        return shoal_err_set(err, SHOAL_EINVAL,
                             "collection \"%s\": list %u replica %u out of range (nlist %u, "
                             "R %u)",
                             c->name, l, r, c->nlist, c->replication);
    return 0;
}

int catalog_moves_plan(catalog_t *cat, const char *name, const catalog_move_t *moves, size_t n,
                       shoal_err_t *err)
{
    catalog_coll_t *c = s_trained_coll(cat, name, err);
    if (!c)
        return err ? err->code : SHOAL_ENOTFOUND;
    uint32_t R = c->replication;
    for (size_t i = 0; i < n; i++) {
        int rc = s_replica_check(c, moves[i].list, moves[i].replica, err);
        if (rc)
            return rc;
        if (moves[i].to >= cat->nshards)
            return shoal_err_set(err, SHOAL_EINVAL, "collection \"%s\": move to shard %u, the "
                                 "registry has %zu", name, moves[i].to, cat->nshards);
        for (uint32_t q = 0; q < R; q++)
            if (catalog_owner(c, moves[i].list, q) == moves[i].to)
                return shoal_err_set(err, SHOAL_EINVAL,
                                     "collection \"%s\": list %u has replica %u on shard %u "
                                     "already: its replica %u cannot move there",
                                     name, moves[i].list, q, moves[i].to, moves[i].replica);
    }
    size_t nown = (size_t)c->nlist * R;
    uint8_t *state = malloc(nown ? nown : 1);
    uint32_t *to = malloc((nown ? nown : 1) * sizeof *to);
    kv_batch_t *batch = kv_batch_new();
    int rc = 0;
    if (!state || !to || !batch) {
        rc = shoal_err_set(err, SHOAL_ENOMEM, "collection \"%s\": out of memory", name);
        goto done;
    }
    memcpy(state, c->move_state, nown);
    memcpy(to, c->move_to, nown * sizeof *to);
    for (size_t j = 0; j < nown; j++) {
        if (state[j] == CATALOG_MOVE_QUEUED) {
            state[j] = 0;
            s_move_delete(batch, c, (uint32_t)(j / R), (uint32_t)(j % R));
        }
    }
    for (size_t i = 0; i < n; i++) {
        size_t j = (size_t)moves[i].list * R + moves[i].replica;
        if (state[j] == CATALOG_MOVE_COPYING)
            continue;
        state[j] = CATALOG_MOVE_QUEUED;
        to[j] = moves[i].to;
        s_move_put(batch, c, moves[i].list, moves[i].replica, moves[i].to, CATALOG_MOVE_QUEUED);
    }
    rc = s_batch_commit(cat, &batch, name, "storing planned moves", err);
    if (rc == 0) {
        memcpy(c->move_state, state, nown);
        memcpy(c->move_to, to, nown * sizeof *to);
        c->nmoves = 0;
        for (size_t j = 0; j < nown; j++)
            c->nmoves += state[j] != 0;
    }
done:
    kv_batch_destroy(&batch);
    free(state);
    free(to);
    return rc;
}

int catalog_move_start(catalog_t *cat, const char *name, uint32_t l, uint32_t r, shoal_err_t *err)
{
    catalog_coll_t *c = s_trained_coll(cat, name, err);
    if (!c)
        return err ? err->code : SHOAL_ENOTFOUND;
    int rc = s_replica_check(c, l, r, err);
    size_t j = (size_t)l * c->replication + r;
    if (rc == 0 && c->move_state[j] != CATALOG_MOVE_QUEUED)
        rc = shoal_err_set(err, SHOAL_EINVAL, "collection \"%s\": list %u replica %u has no "
                           "queued move", name, l, r);
    if (rc)
        return rc;
    kv_batch_t *batch = kv_batch_new();
    if (batch)
        s_move_put(batch, c, l, r, c->move_to[j], CATALOG_MOVE_COPYING);
    rc = s_batch_commit(cat, &batch, name, "starting a move", err);
    if (rc == 0)
        c->move_state[j] = CATALOG_MOVE_COPYING;
    return rc;
}

int catalog_move_abort(catalog_t *cat, const char *name, uint32_t l, uint32_t r, int requeue,
                       shoal_err_t *err)
{
    catalog_coll_t *c = s_trained_coll(cat, name, err);
    if (!c)
        return err ? err->code : SHOAL_ENOTFOUND;
    int rc = s_replica_check(c, l, r, err);
    size_t j = (size_t)l * c->replication + r;
    if (rc == 0 && c->move_state[j] != CATALOG_MOVE_COPYING)
        rc = shoal_err_set(err, SHOAL_EINVAL, "collection \"%s\": list %u replica %u is not "
                           "being moved", name, l, r);
    if (rc)
        return rc;
    uint32_t to = c->move_to[j];
    kv_batch_t *batch = kv_batch_new();
    if (batch) {
        if (requeue)
            s_move_put(batch, c, l, r, to, CATALOG_MOVE_QUEUED);
        else
            s_move_delete(batch, c, l, r);
        s_orphan_batch(batch, c, l, to, CATALOG_ORPHAN_STALE);
    }
    rc = s_batch_commit(cat, &batch, name, "abandoning a move", err);
    if (rc)
        return rc;
    c->move_state[j] = requeue ? CATALOG_MOVE_QUEUED : 0;
    c->nmoves -= !requeue;
    if (s_orphan_put(c, l, to, CATALOG_ORPHAN_STALE) != 0)
        return shoal_err_set(err, SHOAL_ENOMEM, "collection \"%s\": out of memory", name);
    return 0;
}

int catalog_move_switch(catalog_t *cat, const char *name, uint32_t l, uint32_t r,
                        shoal_err_t *err)
{
    catalog_coll_t *c = s_trained_coll(cat, name, err);
    if (!c)
        return err ? err->code : SHOAL_ENOTFOUND;
    int rc = s_replica_check(c, l, r, err);
    size_t j = (size_t)l * c->replication + r;
    if (rc == 0 && (c->move_state[j] != CATALOG_MOVE_COPYING || c->stale[j]))
        rc = shoal_err_set(err, SHOAL_EINVAL, "collection \"%s\": list %u replica %u is %s",
                           name, l, r, c->stale[j] ? "stale" : "not being moved");
    if (rc)
        return rc;
    size_t nown = (size_t)c->nlist * c->replication;
    uint32_t *owners = malloc(nown * sizeof *owners);
    uint8_t *tval = malloc(s_trained_len(c));
    kv_batch_t *batch = owners && tval ? kv_batch_new() : NULL;
    uint32_t from = c->owners[j], to = c->move_to[j];
    if (batch) {
        memcpy(owners, c->owners, nown * sizeof *owners);
        owners[j] = to;
        s_trained_encode(c, c->centroids, owners, tval);
        uint8_t key[CAT_KEY_MAX];
        size_t klen = kvkeys_prefix(key, 'T', name);
        kv_batch_put(batch, key, klen, tval, s_trained_len(c));
        s_move_delete(batch, c, l, r);
        s_orphan_batch(batch, c, l, from, CATALOG_ORPHAN_CURRENT);
        s_orphan_batch(batch, c, l, to, 0); /* an old orphan there is now the replica */
    }
    rc = s_batch_commit(cat, &batch, name, "switching a moved replica", err);
    free(tval);
    if (rc) {
        free(owners);
        return rc;
    }
    free(c->owners);
    c->owners = owners;
    c->move_state[j] = 0;
    c->nmoves--;
    s_orphan_forget(c, l, to);
    if (s_orphan_put(c, l, from, CATALOG_ORPHAN_CURRENT) != 0)
        return shoal_err_set(err, SHOAL_ENOMEM, "collection \"%s\": out of memory", name);
    return 0;
}

int catalog_orphan_set(catalog_t *cat, const char *name, uint32_t l, uint32_t shard, int kind,
                       shoal_err_t *err)
{
    catalog_coll_t *c = s_trained_coll(cat, name, err);
    if (!c)
        return err ? err->code : SHOAL_ENOTFOUND;
    if (l >= c->nlist || shard >= cat->nshards || kind < 0 || kind > CATALOG_ORPHAN_STALE)
        return shoal_err_set(err, SHOAL_EINVAL, "collection \"%s\": orphan of list %u on "
                             "shard %u kind %d out of range", name, l, shard, kind);
    kv_batch_t *batch = kv_batch_new();
    if (batch)
        s_orphan_batch(batch, c, l, shard, (uint8_t)kind);
    int rc = s_batch_commit(cat, &batch, name, kind ? "recording an orphan" : "forgetting an "
                            "orphan", err);
    if (rc)
        return rc;
    if (!kind)
        s_orphan_forget(c, l, shard);
    else if (s_orphan_put(c, l, shard, (uint8_t)kind) != 0)
        return shoal_err_set(err, SHOAL_ENOMEM, "collection \"%s\": out of memory", name);
    return 0;
}

int catalog_calib_set(catalog_t *cat, const char *name, const catalog_calib_t *calib,
                      shoal_err_t *err)
{
    catalog_coll_t *c = s_coll_get(cat, name, err);
    if (!c)
        return err ? err->code : SHOAL_ENOTFOUND;
    if (calib->npoints > CATALOG_CALIB_POINTS_MAX)
        return shoal_err_set(err, SHOAL_EINVAL, "collection \"%s\": %u calibration points, at "
                             "most %d", name, calib->npoints, CATALOG_CALIB_POINTS_MAX);
    uint8_t val[CAT_CALIB_HDR + CATALOG_CALIB_POINTS_MAX * 16];
    s_put_le32(val, CAT_CALIB_MAGIC);
    s_put_le32(val + 4, CATALOG_FORMAT_VERSION);
    s_put_le64(val + 8, calib->count);
    s_put_le32(val + 16, calib->k);
    s_put_le32(val + 20, calib->queries);
    s_put_le32(val + 24, calib->npoints);
    for (uint32_t i = 0; i < calib->npoints; i++) {
        uint8_t *p = val + CAT_CALIB_HDR + (size_t)i * 16;
        s_put_le32(p, calib->points[i].nprobe);
        s_put_le32(p + 4, calib->points[i].ef);
        s_put_le32(p + 8, s_float_bits(calib->points[i].recall));
        s_put_le32(p + 12, s_float_bits(calib->points[i].cost));
    }
    size_t vlen = CAT_CALIB_HDR + (size_t)calib->npoints * 16;
    char why[128];
    catalog_calib_t *copy = malloc(sizeof *copy);
    if (!copy)
        return shoal_err_set(err, SHOAL_ENOMEM, "out of memory");
    if (s_calib_decode(val, vlen, copy, why, sizeof why) != 0) { /* the loader's rules */
        free(copy);
        return shoal_err_set(err, SHOAL_EINVAL, "collection \"%s\": %s", name, why);
    }
    uint8_t key[CAT_KEY_MAX];
    size_t klen = kvkeys_prefix(key, 'K', name);
    int rc = kv_put(cat->kv, key, klen, val, vlen, 1, err);
    if (rc) {
        free(copy);
        return shoal_err_prefix(err, "collection \"%s\": storing its calibration", name);
    }
    free(c->calib);
    c->calib = copy;
    return 0;
}

size_t catalog_extras(const catalog_coll_t *c, uint32_t l, uint32_t *shards, size_t cap)
{
    size_t n = 0;
    if (!c->trained || l >= c->nlist)
        return 0;
    for (uint32_t r = 0; r < c->replication; r++) {
        size_t j = (size_t)l * c->replication + r;
        if (c->move_state[j] == CATALOG_MOVE_COPYING) {
            if (n < cap)
                shards[n] = c->move_to[j];
            n++;
        }
    }
    uint32_t lo = 0, hi = c->norphans; /* the first orphan of list l */
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (c->orphans[mid].list < l)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (uint32_t i = lo; i < c->norphans && c->orphans[i].list == l; i++) {
        if (n < cap)
            shards[n] = c->orphans[i].shard;
        n++;
    }
    return n;
}

/* ------------------------------------------------------------------------ */
/* Id map and membership                                                    */
/* ------------------------------------------------------------------------ */

int catalog_lookup(catalog_t *cat, const char *name, const uint64_t *ids, size_t n, uint32_t *lists,
                   shoal_err_t *err)
{
    int rc = s_check_name(name, err);
    catalog_coll_t c;
    if (rc || (rc = s_disk_coll(cat, name, &c, err)))
        return rc;
    for (size_t i = 0; i < n; i++) {
        uint8_t key[CAT_KEY_MAX];
        size_t klen = kvkeys_u64(key, 'I', name, ids[i]);
        void *val = NULL;
        size_t vlen = 0;
        rc = kv_get(cat->kv, key, klen, &val, &vlen, err);
        if (rc == SHOAL_ENOTFOUND) {
            lists[i] = CATALOG_LIST_NONE;
            continue;
        }
        if (rc)
            return rc;
        uint32_t list = vlen == 4 ? s_get_le32(val) : CATALOG_LIST_NONE;
        free(val);
        if (list >= c.nlist) {
            char why[96];
            snprintf(why, sizeof why, "%zu bytes naming list %u (nlist %u)", vlen,
                     vlen == 4 ? list : 0, c.nlist);
            return s_corrupt(cat, key, klen, err, why);
        }
        lists[i] = list;
    }
    return 0;
}

typedef struct {
    uint64_t id; /* the id */
    size_t pos;  /* its position in the caller's batch */
} s_occ_t;

static int s_occ_cmp(const void *a, const void *b)
{
    const s_occ_t *x = a, *y = b;
    if (x->id != y->id)
        return x->id < y->id ? -1 : 1;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

typedef struct {
    uint32_t list; /* a list */
    int64_t delta; /* change of its count (+1 / -1 per id) */
} s_delta_t;

static int s_delta_cmp(const void *a, const void *b)
{
    const s_delta_t *x = a, *y = b;
    return x->list < y->list ? -1 : x->list > y->list;
}

/* Checks that every old list (unless CATALOG_LIST_NONE) and new list given
 * names one of collection c's lists. */
static int s_apply_check(const catalog_coll_t *c, const char *name, const uint64_t *ids,
                         const uint32_t *old_lists, const uint32_t *new_lists, size_t n,
                         shoal_err_t *err)
{
    for (size_t i = 0; i < n; i++) {
        if (old_lists[i] != CATALOG_LIST_NONE && old_lists[i] >= c->nlist)
            return shoal_err_set(err, SHOAL_EINVAL, "\"%s\": id %llu old list %u >= nlist %u", name,
                                 (unsigned long long)ids[i], old_lists[i], c->nlist);
        if (new_lists && new_lists[i] >= c->nlist)
            return shoal_err_set(err, SHOAL_EINVAL, "\"%s\": id %llu new list %u >= nlist %u", name,
                                 (unsigned long long)ids[i], new_lists[i], c->nlist);
    }
    return 0;
}

/* Adds each distinct id's map records to batch (occ sorted by id), moving it
 * from its old list to its new one, and its +1 / -1 per list to deltas.
 * Returns how many deltas were written. */
static size_t s_apply_ids(kv_batch_t *batch, const char *name, const s_occ_t *occ, size_t n,
                          const uint32_t *old_lists, const uint32_t *new_lists, s_delta_t *deltas)
{
    size_t nd = 0;
    uint8_t key[CAT_KEY_MAX];
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j + 1 < n && occ[j + 1].id == occ[i].id)
            j++;
        uint64_t id = occ[i].id;
        uint32_t from = old_lists[occ[i].pos];
        uint32_t to = new_lists ? new_lists[occ[j].pos] : CATALOG_LIST_NONE;
        i = j + 1;
        if (from != CATALOG_LIST_NONE && from != to) {
            kv_batch_delete(batch, key, kvkeys_u32_u64(key, 'M', name, from, id));
            deltas[nd++] = (s_delta_t){.list = from, .delta = -1};
        }
        if (to == CATALOG_LIST_NONE) {
            if (from != CATALOG_LIST_NONE)
                kv_batch_delete(batch, key, kvkeys_u64(key, 'I', name, id));
            continue;
        }
        uint8_t lval[4];
        s_put_le32(lval, to);
        kv_batch_put(batch, key, kvkeys_u64(key, 'I', name, id), lval, sizeof lval);
        kv_batch_put(batch, key, kvkeys_u32_u64(key, 'M', name, to, id), "", 0);
        if (from != to)
            deltas[nd++] = (s_delta_t){.list = to, .delta = 1};
    }
    return nd;
}

/* Folds the nd deltas per list, then adds each list's new count record to
 * batch (deleted at 0); the new counts are left in deltas[].delta. Returns
 * how many lists changed. */
static size_t s_apply_counts(kv_batch_t *batch, const catalog_coll_t *c, const char *name,
                             s_delta_t *deltas, size_t nd)
{
    uint8_t key[CAT_KEY_MAX];
    qsort(deltas, nd, sizeof *deltas, s_delta_cmp);
    size_t nl = 0;
    for (size_t i = 0; i < nd; i++) {
        if (nl > 0 && deltas[nl - 1].list == deltas[i].list)
            deltas[nl - 1].delta += deltas[i].delta;
        else
            deltas[nl++] = deltas[i];
    }
    for (size_t i = 0; i < nl; i++) {
        uint64_t cur = c->list_counts[deltas[i].list];
        int64_t d = deltas[i].delta;
        uint64_t next = cur;
        if (d < 0 && (uint64_t)(-d) > cur) {
            log_warn("catalog: \"%s\" list %u count %llu cannot drop by %lld (stale old list "
                     "given); kept at 0",
                     name, deltas[i].list, (unsigned long long)cur, (long long)-d);
            next = 0;
        } else {
            next = d < 0 ? cur - (uint64_t)(-d) : cur + (uint64_t)d;
        }
        deltas[i].delta = (int64_t)next;
        size_t klen = kvkeys_u32(key, 'N', name, deltas[i].list);
        if (next == 0) {
            kv_batch_delete(batch, key, klen);
        } else {
            uint8_t cval[8];
            s_put_le64(cval, next);
            kv_batch_put(batch, key, klen, cval, sizeof cval);
        }
    }
    return nl;
}

/*
 * The id map update shared by insert and delete. new_lists NULL: delete.
 * Each distinct id counts once: its old list is the one given at its first
 * occurrence (the map before the batch), its new list the last one.
 */
static int s_apply(catalog_t *cat, const char *name, const uint64_t *ids, const uint32_t *old_lists,
                   const uint32_t *new_lists, size_t n, shoal_err_t *err)
{
    catalog_coll_t *c = s_coll_get(cat, name, err);
    if (!c)
        return err ? err->code : SHOAL_ENOTFOUND;
    int rc = s_apply_check(c, name, ids, old_lists, new_lists, n, err);
    if (rc)
        return rc;
    if (n == 0)
        return 0;

    s_occ_t *occ = malloc(n * sizeof *occ);
    s_delta_t *deltas = malloc(2 * n * sizeof *deltas);
    kv_batch_t *batch = kv_batch_new();
    if (!occ || !deltas || !batch) {
        rc = shoal_err_set(err, SHOAL_ENOMEM, "\"%s\": out of memory for a batch of %zu ids", name,
                           n);
        goto done;
    }
    for (size_t i = 0; i < n; i++)
        occ[i] = (s_occ_t){.id = ids[i], .pos = i};
    qsort(occ, n, sizeof *occ, s_occ_cmp);

    size_t nd = s_apply_ids(batch, name, occ, n, old_lists, new_lists, deltas);
    size_t nl = s_apply_counts(batch, c, name, deltas, nd);
    rc = kv_write(cat->kv, batch, 1, err);
    if (rc) {
        shoal_err_prefix(err, "updating the id map of \"%s\"", name);
        goto done;
    }
    for (size_t i = 0; i < nl; i++) {
        uint64_t next = (uint64_t)deltas[i].delta;
        c->count = c->count - c->list_counts[deltas[i].list] + next;
        c->list_counts[deltas[i].list] = next;
    }
done:
    kv_batch_destroy(&batch);
    free(occ);
    free(deltas);
    return rc;
}

int catalog_apply_insert(catalog_t *cat, const char *name, const uint64_t *ids,
                         const uint32_t *old_lists, const uint32_t *new_lists, size_t n,
                         shoal_err_t *err)
{
    return s_apply(cat, name, ids, old_lists, new_lists, n, err);
}

int catalog_apply_delete(catalog_t *cat, const char *name, const uint64_t *ids,
                         const uint32_t *old_lists, size_t n, shoal_err_t *err)
{
    return s_apply(cat, name, ids, old_lists, NULL, n, err);
}

int catalog_scan_list(catalog_t *cat, const char *name, uint32_t list, uint64_t from_id,
                      uint64_t *ids, size_t max, size_t *got, shoal_err_t *err)
{
    *got = 0;
    int rc = s_check_name(name, err);
    catalog_coll_t c;
    if (rc || (rc = s_disk_coll(cat, name, &c, err)))
        return rc;
    if (list >= c.nlist)
        return shoal_err_set(err, SHOAL_EINVAL, "\"%s\": list %u >= nlist %u", name, list, c.nlist);
    if (max == 0)
        return 0;
    uint8_t prefix[CAT_KEY_MAX], start[CAT_KEY_MAX];
    size_t plen = kvkeys_u32(prefix, 'M', name, list);
    size_t slen = kvkeys_u32_u64(start, 'M', name, list, from_id);
    kv_iter_t *it = kv_iter_new(cat->kv, prefix, plen, err);
    if (!it)
        return err ? err->code : SHOAL_ENOMEM;
    kv_iter_seek(it, start, slen);
    size_t count = 0;
    for (; count < max && kv_iter_valid(it); kv_iter_next(it)) {
        size_t klen = 0;
        const uint8_t *key = kv_iter_key(it, &klen);
        if (klen != plen + 8) {
            rc = s_corrupt(cat, key, klen, err, "membership key of the wrong length");
            break;
        }
        ids[count++] = kvkeys_get_be64(key + plen);
    }
    if (rc == 0 && count < max)
        rc = kv_iter_status(it, err);
    kv_iter_destroy(&it);
    *got = count;
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Write intents                                                            */
/* ------------------------------------------------------------------------ */

int catalog_intent_put(catalog_t *cat, const char *name, const uint64_t *ids,
                       const uint32_t *old_lists, const uint32_t *new_lists, size_t n,
                       uint64_t *txn, shoal_err_t *err)
{
    catalog_coll_t *c = s_coll_get(cat, name, err);
    if (!c)
        return err ? err->code : SHOAL_ENOTFOUND;
    for (size_t i = 0; i < n; i++)
        if ((old_lists[i] != CATALOG_LIST_NONE && old_lists[i] >= c->nlist) ||
            (new_lists[i] != CATALOG_LIST_NONE && new_lists[i] >= c->nlist))
            return shoal_err_set(err, SHOAL_EINVAL,
                                 "\"%s\": intent entry %zu moves id %llu from list %u to %u "
                                 "(nlist %u)",
                                 name, i, (unsigned long long)ids[i], old_lists[i], new_lists[i],
                                 c->nlist);
    if (n > (SIZE_MAX - CAT_INTENT_HDR) / 16)
        return shoal_err_set(err, SHOAL_ELIMIT, "\"%s\": intent of %zu ids is too large", name, n);
    size_t vlen = CAT_INTENT_HDR + 16 * n;
    uint8_t *val = malloc(vlen);
    if (!val)
        return shoal_err_set(err, SHOAL_ENOMEM, "\"%s\": out of memory for an intent of %zu ids",
                             name, n);
    s_put_le32(val, CAT_INTENT_MAGIC);
    s_put_le32(val + 4, CATALOG_FORMAT_VERSION);
    s_put_le64(val + 8, n);
    uint8_t *p = val + CAT_INTENT_HDR;
    for (size_t i = 0; i < n; i++)
        s_put_le64(p + 8 * i, ids[i]);
    p += 8 * n;
    for (size_t i = 0; i < n; i++)
        s_put_le32(p + 4 * i, old_lists[i]);
    p += 4 * n;
    for (size_t i = 0; i < n; i++)
        s_put_le32(p + 4 * i, new_lists[i]);
    uint64_t number = atomic_fetch_add(&cat->next_txn, 1);
    uint8_t key[CAT_KEY_MAX];
    size_t klen = kvkeys_u64(key, 'X', name, number);
    int rc = kv_put(cat->kv, key, klen, val, vlen, 1, err);
    free(val);
    if (rc)
        return shoal_err_prefix(err, "storing intent %llu of \"%s\"", (unsigned long long)number,
                                name);
    *txn = number;
    return 0;
}

int catalog_intent_clear(catalog_t *cat, const char *name, uint64_t txn, shoal_err_t *err)
{
    int rc = s_check_name(name, err);
    if (rc)
        return rc;
    kv_batch_t *batch = kv_batch_new();
    if (!batch)
        return shoal_err_set(err, SHOAL_ENOMEM, "out of memory");
    uint8_t key[CAT_KEY_MAX];
    kv_batch_delete(batch, key, kvkeys_u64(key, 'X', name, txn));
    rc = kv_write(cat->kv, batch, 1, err);
    kv_batch_destroy(&batch);
    if (rc)
        return shoal_err_prefix(err, "clearing intent %llu of \"%s\"", (unsigned long long)txn,
                                name);
    return 0;
}

void catalog_intents_free(catalog_intent_t *intents, size_t count)
{
    if (!intents)
        return;
    for (size_t i = 0; i < count; i++) {
        free(intents[i].ids);
        free(intents[i].old_lists);
        free(intents[i].new_lists);
    }
    free(intents);
}

/* One X/ value into *in (arrays malloc'd). 0, SHOAL_ENOMEM, or 1 with *why. */
static int s_intent_decode(const uint8_t *val, size_t vlen, uint32_t nlist, catalog_intent_t *in,
                           char *why, size_t cap)
{
    if (vlen < CAT_INTENT_HDR) {
        snprintf(why, cap, "%zu bytes, shorter than its %d-byte header", vlen, CAT_INTENT_HDR);
        return 1;
    }
    uint32_t magic = s_get_le32(val), version = s_get_le32(val + 4);
    uint64_t n = s_get_le64(val + 8);
    if (magic != CAT_INTENT_MAGIC || version != CATALOG_FORMAT_VERSION) {
        snprintf(why, cap, "magic 0x%08x version %u, expected 0x%08x version %u", magic, version,
                 CAT_INTENT_MAGIC, CATALOG_FORMAT_VERSION);
        return 1;
    }
    if (n != (vlen - CAT_INTENT_HDR) / 16 || (vlen - CAT_INTENT_HDR) % 16 != 0) {
        snprintf(why, cap, "%zu bytes for %llu ids", vlen, (unsigned long long)n);
        return 1;
    }
    in->n = (size_t)n;
    in->ids = malloc((n ? n : 1) * sizeof *in->ids);
    in->old_lists = malloc((n ? n : 1) * sizeof *in->old_lists);
    in->new_lists = malloc((n ? n : 1) * sizeof *in->new_lists);
    if (!in->ids || !in->old_lists || !in->new_lists)
        return SHOAL_ENOMEM;
    const uint8_t *p = val + CAT_INTENT_HDR;
    for (size_t i = 0; i < n; i++) {
        in->ids[i] = s_get_le64(p + 8 * i);
        in->old_lists[i] = s_get_le32(p + 8 * n + 4 * i);
        in->new_lists[i] = s_get_le32(p + 12 * n + 4 * i);
        if ((in->old_lists[i] != CATALOG_LIST_NONE && in->old_lists[i] >= nlist) ||
            (in->new_lists[i] != CATALOG_LIST_NONE && in->new_lists[i] >= nlist)) {
            snprintf(why, cap, "entry %zu moves id %llu from list %u to %u (nlist %u)", i,
                     (unsigned long long)in->ids[i], in->old_lists[i], in->new_lists[i], nlist);
            return 1;
        }
    }
    return 0;
}

int catalog_intents(catalog_t *cat, const char *name, catalog_intent_t **out, size_t *count,
                    shoal_err_t *err)
{
    *out = NULL;
    *count = 0;
    int rc = s_check_name(name, err);
    catalog_coll_t c;
    if (rc || (rc = s_disk_coll(cat, name, &c, err)))
        return rc;
    uint8_t prefix[CAT_KEY_MAX];
    size_t plen = kvkeys_prefix(prefix, 'X', name);
    kv_iter_t *it = kv_iter_new(cat->kv, prefix, plen, err);
    if (!it)
        return err ? err->code : SHOAL_ENOMEM;
    catalog_intent_t *list = NULL;
    size_t n = 0, cap = 0;
    for (; kv_iter_valid(it); kv_iter_next(it)) {
        size_t klen = 0, vlen = 0;
        const uint8_t *key = kv_iter_key(it, &klen);
        const uint8_t *val = kv_iter_value(it, &vlen);
        if (klen != plen + 8) {
            rc = s_corrupt(cat, key, klen, err, "intent key of the wrong length");
            break;
        }
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 4;
            catalog_intent_t *grown = realloc(list, ncap * sizeof *grown);
            if (!grown) {
                rc = shoal_err_set(err, SHOAL_ENOMEM, "out of memory for %zu intents", ncap);
                break;
            }
            list = grown;
            cap = ncap;
        }
        catalog_intent_t *in = &list[n++];
        memset(in, 0, sizeof *in);
        in->txn = kvkeys_get_be64(key + plen);
        char why[160];
        int drc = s_intent_decode(val, vlen, c.nlist, in, why, sizeof why);
        if (drc == SHOAL_ENOMEM) {
            rc = shoal_err_set(err, SHOAL_ENOMEM, "out of memory for intent of %zu ids", in->n);
            break;
        }
        if (drc) {
            rc = s_corrupt(cat, key, klen, err, why);
            break;
        }
    }
    if (rc == 0)
        rc = kv_iter_status(it, err);
    kv_iter_destroy(&it);
    if (rc) {
        catalog_intents_free(list, n);
        return rc;
    }
    *out = list;
    *count = n;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Snapshot records                                                         */
/* ------------------------------------------------------------------------ */

/* "B/<name>" into key (3 + WIRE_NAME_MAX bytes); returns its length. */
static size_t s_key_snapshot(uint8_t *key, const char *name)
{
    size_t len = strnlen(name, WIRE_NAME_MAX);
    key[0] = 'B';
    key[1] = '/';
    memcpy(key + 2, name, len);
    return 2 + len;
}

/* The record's bytes (malloc'd into *val); SHOAL_EINVAL / SHOAL_ENOMEM. */
static int s_snapshot_encode(const catalog_snapshot_t *snap, uint8_t **val, size_t *vlen,
                             shoal_err_t *err)
{
    if (snap->nshards > CATALOG_SHARDS_MAX || snap->ncolls > UINT32_MAX)
        return shoal_err_set(err, SHOAL_EINVAL, "snapshot \"%s\": %zu shards, %zu collections",
                             snap->name, snap->nshards, snap->ncolls);
    size_t len = CAT_SNAP_HDR;
    for (size_t i = 0; i < snap->nshards; i++)
        len += 2 + strnlen(snap->shards[i].endpoint, CATALOG_ENDPOINT_MAX + 1) + 8;
    for (size_t i = 0; i < snap->ncolls; i++)
        len += 1 + strnlen(snap->colls[i].name, WIRE_NAME_MAX + 1) + 8;
    uint8_t *p = malloc(len);
    if (!p)
        return shoal_err_set(err, SHOAL_ENOMEM, "snapshot \"%s\": out of memory", snap->name);
    s_put_le32(p, CAT_SNAP_MAGIC);
    s_put_le32(p + 4, CAT_SNAP_VERSION);
    s_put_le64(p + 8, snap->created);
    s_put_le32(p + 16, (uint32_t)snap->nshards);
    s_put_le32(p + 20, (uint32_t)snap->ncolls);
    size_t at = CAT_SNAP_HDR;
    for (size_t i = 0; i < snap->nshards; i++) {
        size_t n = strnlen(snap->shards[i].endpoint, CATALOG_ENDPOINT_MAX + 1);
        if (n == 0 || n > CATALOG_ENDPOINT_MAX) {
            free(p);
            return shoal_err_set(err, SHOAL_EINVAL, "snapshot \"%s\": shard %zu's endpoint has "
                                 "%zu bytes, 1..%d allowed", snap->name, i, n, CATALOG_ENDPOINT_MAX);
        }
        p[at] = (uint8_t)n;
        p[at + 1] = (uint8_t)(n >> 8);
        memcpy(p + at + 2, snap->shards[i].endpoint, n);
        s_put_le64(p + at + 2 + n, snap->shards[i].seq);
        at += 2 + n + 8;
    }
    for (size_t i = 0; i < snap->ncolls; i++) {
        size_t n = strnlen(snap->colls[i].name, WIRE_NAME_MAX + 1);
        if (!s_name_ok(snap->colls[i].name, n)) {
            free(p);
            return shoal_err_set(err, SHOAL_EINVAL, "snapshot \"%s\": collection %zu has a bad "
                                 "name", snap->name, i);
        }
        p[at] = (uint8_t)n;
        memcpy(p + at + 1, snap->colls[i].name, n);
        s_put_le64(p + at + 1 + n, snap->colls[i].count);
        at += 1 + n + 8;
    }
    *val = p;
    *vlen = len;
    return 0;
}

/*
 * Parses a B/ record into snap (name from the key). Trusts no count: each
 * entry is checked against the bytes left before it is read. 0, or -1 with
 * the reason in why (snap then holds nothing to free).
 */
static int s_snapshot_decode(const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen,
                             catalog_snapshot_t *snap, char *why, size_t cap)
{
    memset(snap, 0, sizeof *snap);
    if (klen < 3 || klen - 2 > WIRE_NAME_MAX) {
        snprintf(why, cap, "key of %zu bytes", klen);
        return -1;
    }
    memcpy(snap->name, key + 2, klen - 2);
    snap->name[klen - 2] = '\0';
    if (vlen < CAT_SNAP_HDR || s_get_le32(val) != CAT_SNAP_MAGIC) {
        snprintf(why, cap, "not a snapshot record (%zu bytes)", vlen);
        return -1;
    }
    if (s_get_le32(val + 4) != CAT_SNAP_VERSION) {
        snprintf(why, cap, "snapshot record version %u, this build reads %d", s_get_le32(val + 4),
                 CAT_SNAP_VERSION);
        return -1;
    }
    snap->created = s_get_le64(val + 8);
    uint32_t nshards = s_get_le32(val + 16), ncolls = s_get_le32(val + 20);
    /* Each entry takes at least 10 bytes: a count beyond that is a lie. */
    if (nshards > CATALOG_SHARDS_MAX || (uint64_t)nshards * 10 + (uint64_t)ncolls * 10 > vlen) {
        snprintf(why, cap, "%u shards and %u collections in %zu bytes", nshards, ncolls, vlen);
        return -1;
    }
    snap->shards = calloc(nshards ? nshards : 1, sizeof *snap->shards);
    snap->colls = calloc(ncolls ? ncolls : 1, sizeof *snap->colls);
    if (!snap->shards || !snap->colls) {
        snprintf(why, cap, "out of memory");
        goto fail;
    }
    size_t at = CAT_SNAP_HDR;
    for (uint32_t i = 0; i < nshards; i++) {
        if (vlen - at < 2)
            goto short_record;
        size_t n = (size_t)val[at] | ((size_t)val[at + 1] << 8);
        if (n == 0 || n > CATALOG_ENDPOINT_MAX || vlen - at - 2 < n + 8)
            goto short_record;
        memcpy(snap->shards[i].endpoint, val + at + 2, n);
        snap->shards[i].endpoint[n] = '\0';
        snap->shards[i].seq = s_get_le64(val + at + 2 + n);
        at += 2 + n + 8;
    }
    snap->nshards = nshards;
    for (uint32_t i = 0; i < ncolls; i++) {
        if (vlen - at < 1)
            goto short_record;
        size_t n = val[at];
        if (n == 0 || n > WIRE_NAME_MAX || vlen - at - 1 < n + 8)
            goto short_record;
        memcpy(snap->colls[i].name, val + at + 1, n);
        snap->colls[i].name[n] = '\0';
        snap->colls[i].count = s_get_le64(val + at + 1 + n);
        at += 1 + n + 8;
    }
    snap->ncolls = ncolls;
    if (at != vlen) {
        snprintf(why, cap, "%zu trailing bytes", vlen - at);
        goto fail;
    }
    return 0;

short_record:
    snprintf(why, cap, "an entry runs past the record's %zu bytes", vlen);
fail:
    catalog_snapshot_fini(snap);
    return -1;
}

void catalog_snapshot_fini(catalog_snapshot_t *snap)
{
    if (!snap)
        return;
    free(snap->shards);
    free(snap->colls);
    snap->shards = NULL;
    snap->colls = NULL;
    snap->nshards = snap->ncolls = 0;
}

void catalog_snapshots_free(catalog_snapshot_t *snaps, size_t count)
{
    for (size_t i = 0; snaps && i < count; i++)
        catalog_snapshot_fini(&snaps[i]);
    free(snaps);
}

int catalog_snapshot_exists(catalog_t *cat, const char *name, shoal_err_t *err)
{
    uint8_t key[3 + WIRE_NAME_MAX];
    void *val = NULL;
    size_t vlen = 0;
    int rc = kv_get(cat->kv, key, s_key_snapshot(key, name), &val, &vlen, err);
    free(val);
    if (rc == SHOAL_ENOTFOUND)
        return 0;
    return rc == 0 ? 1 : rc;
}

/* Snapshot records stored (bounded by CATALOG_SNAPSHOTS_MAX); a negative code on failure. */
static int64_t s_snapshot_count(catalog_t *cat, shoal_err_t *err)
{
    kv_iter_t *it = kv_iter_new(cat->kv, "B/", 2, err);
    if (!it)
        return err && err->code ? err->code : SHOAL_ENOMEM;
    int64_t n = 0;
    for (; kv_iter_valid(it); kv_iter_next(it))
        n++;
    int rc = kv_iter_status(it, err);
    kv_iter_destroy(&it);
    return rc ? rc : n;
}

int catalog_snapshot_put(catalog_t *cat, const catalog_snapshot_t *snap, shoal_err_t *err)
{
    size_t nlen = strnlen(snap->name, sizeof snap->name);
    int rc = wire_snapshot_name_check("catalog", snap->name, nlen, err);
    if (rc)
        return rc;
    if ((rc = catalog_snapshot_exists(cat, snap->name, err)) != 0)
        return rc < 0 ? rc
                      : shoal_err_set(err, SHOAL_EEXIST, "snapshot \"%s\" exists", snap->name);
    int64_t have = s_snapshot_count(cat, err);
    if (have < 0)
        return (int)have;
    if (have >= CATALOG_SNAPSHOTS_MAX)
        return shoal_err_set(err, SHOAL_ELIMIT,
                             "the catalog holds %lld snapshots, the most it keeps",
                             (long long)have);
    uint8_t *val = NULL;
    size_t vlen = 0;
    if ((rc = s_snapshot_encode(snap, &val, &vlen, err)) != 0)
        return rc;
    uint8_t key[3 + WIRE_NAME_MAX];
    rc = kv_put(cat->kv, key, s_key_snapshot(key, snap->name), val, vlen, 1, err);
    free(val);
    return rc ? shoal_err_prefix(err, "snapshot \"%s\": recording it", snap->name) : 0;
}

int catalog_snapshot_delete(catalog_t *cat, const char *name, shoal_err_t *err)
{
    kv_batch_t *batch = kv_batch_new();
    if (!batch)
        return shoal_err_set(err, SHOAL_ENOMEM, "snapshot \"%s\": out of memory", name);
    uint8_t key[3 + WIRE_NAME_MAX];
    kv_batch_delete(batch, key, s_key_snapshot(key, name));
    int rc = kv_write(cat->kv, batch, 1, err);
    kv_batch_destroy(&batch);
    return rc ? shoal_err_prefix(err, "snapshot \"%s\": forgetting it", name) : 0;
}

int catalog_snapshots(catalog_t *cat, catalog_snapshot_t **out, size_t *count, shoal_err_t *err)
{
    *out = NULL;
    *count = 0;
    kv_iter_t *it = kv_iter_new(cat->kv, "B/", 2, err);
    if (!it)
        return err && err->code ? err->code : SHOAL_ENOMEM;
    catalog_snapshot_t *snaps = NULL;
    size_t n = 0, capn = 0;
    int rc = 0;
    for (; kv_iter_valid(it) && n < CATALOG_SNAPSHOTS_MAX; kv_iter_next(it)) {
        size_t klen = 0, vlen = 0;
        const uint8_t *key = kv_iter_key(it, &klen);
        const uint8_t *val = kv_iter_value(it, &vlen);
        if (n == capn) {
            size_t c = capn ? capn * 2 : 8;
            catalog_snapshot_t *more = realloc(snaps, c * sizeof *more);
            if (!more) {
                rc = shoal_err_set(err, SHOAL_ENOMEM, "snapshots: out of memory");
                break;
            }
            snaps = more;
            capn = c;
        }
        char why[128];
        if (s_snapshot_decode(key, klen, val, vlen, &snaps[n], why, sizeof why) != 0) {
            rc = s_corrupt(cat, key, klen, err, why);
            break;
        }
        n++;
    }
    if (rc == 0)
        rc = kv_iter_status(it, err);
    kv_iter_destroy(&it);
    if (rc) {
        catalog_snapshots_free(snaps, n);
        return rc;
    }
    *out = snaps;
    *count = n;
    return 0;
}

int catalog_checkpoint(catalog_t *cat, const char *dir, shoal_err_t *err)
{
    return kv_checkpoint(cat->kv, dir, err);
}
