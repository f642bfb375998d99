/*
 * store_lists.c - the shard store's IVF lists: the in-memory count per list,
 * and the list-level operations built on the "M/" membership keys
 * (store_private.h has the key layout): list_counts, list_export and
 * list_drop. The insert and delete paths (store.c) keep both the keys and the
 * counts; loading (store_persist.c) rebuilds the counts from the vectors.
 *
 * Why a key per membership rather than the list inside the "V/" key: reads
 * by id (upsert, delete, get) need the vector's key from the id alone, and a
 * list's rows must be one contiguous range for a cheap export. The "M/" key
 * costs about 20 bytes of disk per vector and no RAM.
 *
 * The export cursor is "<list hex8>:<last id hex16>": it names the last id
 * returned, not a position in a live iterator, so a walk survives restarts of
 * either side and the shard keeps nothing per walk. Clients treat it as
 * opaque; the list in it catches a cursor passed back for another list.
 */
#include "shard/store_private.h"

#include "common/log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_CURSOR_LEN 25 /* 8 hex, ':', 16 hex */

/* ------------------------------------------------------------------------ */
/* Counts per list                                                          */
/* ------------------------------------------------------------------------ */

/* Index of list in the sorted table, or where it would go (*found 0). */
static size_t s_lists_find(const shard_list_counts_t *t, uint32_t list, int *found)
{
    size_t lo = 0, hi = t->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (t->lists[mid] < list)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = lo < t->n && t->lists[lo] == list;
    return lo;
}

int shard_lists_add(shard_coll_t *coll, uint32_t list, int64_t delta)
{
    shard_list_counts_t *t = &coll->list_counts;
    int rc = 0, found = 0;
    pthread_mutex_lock(&coll->lists_mu);
    size_t i = s_lists_find(t, list, &found);
    if (found) {
        /* A decrement below zero would be a bookkeeping bug: clamp, never wrap. */
        uint64_t dec = delta < 0 ? (uint64_t)(-delta) : 0;
        t->counts[i] = delta >= 0 ? t->counts[i] + (uint64_t)delta
                                  : (t->counts[i] > dec ? t->counts[i] - dec : 0);
        if (t->counts[i] == 0) {
            memmove(&t->lists[i], &t->lists[i + 1], (t->n - i - 1) * sizeof *t->lists);
            memmove(&t->counts[i], &t->counts[i + 1], (t->n - i - 1) * sizeof *t->counts);
            t->n--;
        }
        goto done;
    }
    if (delta <= 0)
        goto done;
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 16;
        uint32_t *lists = realloc(t->lists, cap * sizeof *lists);
        if (lists)
            t->lists = lists;
        uint64_t *counts = lists ? realloc(t->counts, cap * sizeof *counts) : NULL;
        if (counts)
            t->counts = counts;
        if (!lists || !counts) {
            rc = SHOAL_ENOMEM;
            goto done;
        }
        t->cap = cap;
    }
    memmove(&t->lists[i + 1], &t->lists[i], (t->n - i) * sizeof *t->lists);
    memmove(&t->counts[i + 1], &t->counts[i], (t->n - i) * sizeof *t->counts);
    t->lists[i] = list;
    t->counts[i] = (uint64_t)delta;
    t->n++;
done:
    pthread_mutex_unlock(&coll->lists_mu);
    return rc;
}

void shard_lists_fini(shard_coll_t *coll)
{
    free(coll->list_counts.lists);
    free(coll->list_counts.counts);
    memset(&coll->list_counts, 0, sizeof coll->list_counts);
}

int shard_store_list_counts(shard_store_t *store, const char *name, uint32_t **lists,
                            uint64_t **counts, size_t *n, shoal_err_t *err)
{
    if (!store || !lists || !counts || !n)
        return shoal_err_set(err, SHOAL_EINVAL, "list_counts: NULL argument");
    *lists = NULL;
    *counts = NULL;
    *n = 0;
    pthread_rwlock_rdlock(&store->colls_lock);
    int rc = 0;
    shard_coll_t *coll = shard_coll_find_or_fail(store, name, err);
    if (!coll) {
        rc = err ? err->code : SHOAL_ENOTFOUND;
        goto done;
    }
    pthread_mutex_lock(&coll->lists_mu);
    const shard_list_counts_t *t = &coll->list_counts;
    if (t->n > 0) {
        *lists = malloc(t->n * sizeof **lists);
        *counts = malloc(t->n * sizeof **counts);
        if (*lists && *counts) {
            memcpy(*lists, t->lists, t->n * sizeof **lists);
            memcpy(*counts, t->counts, t->n * sizeof **counts);
            *n = t->n;
        } else {
            free(*lists);
            free(*counts);
            *lists = NULL;
            *counts = NULL;
            rc = shoal_err_set(err, SHOAL_ENOMEM, "list_counts \"%s\": out of memory", name);
        }
    }
    pthread_mutex_unlock(&coll->lists_mu);
done:
    pthread_rwlock_unlock(&store->colls_lock);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Walking one list                                                         */
/* ------------------------------------------------------------------------ */

static int s_hex(const char *text, size_t len, uint64_t *out)
{
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0)
            return -1;
        v = v << 4 | (uint64_t)d;
    }
    *out = v;
    return 0;
}

/* A cursor of list: *has_after 0 for "", else *after is the last id returned. */
static int s_cursor_parse(const char *cursor, uint32_t list, int *has_after, uint64_t *after,
                          shoal_err_t *err)
{
    *has_after = 0;
    if (!cursor || !*cursor)
        return 0;
    uint64_t l = 0;
    size_t len = strnlen(cursor, WIRE_CURSOR_MAX + 1);
    if (len != S_CURSOR_LEN || cursor[8] != ':' || s_hex(cursor, 8, &l) != 0 ||
        s_hex(cursor + 9, 16, after) != 0)
        return shoal_err_set(err, SHOAL_EINVAL,
                             "list_export: cursor \"%.*s\" is not one this shard gave out "
                             "(pass back a reply's cursor unchanged, or \"\" to start)",
                             (int)(len > 40 ? 40 : len), cursor);
    if ((uint32_t)l != list)
        return shoal_err_set(err, SHOAL_EINVAL,
                             "list_export: the cursor is for list %" PRIu64 ", the request asks "
                             "for list %" PRIu32,
                             l, list);
    *has_after = 1;
    return 0;
}

/* The id of an "M/<name>\0<list><id>" key of the expected length. */
static int s_member_id(const uint8_t *key, size_t klen, size_t plen, uint64_t *id)
{
    if (klen != plen + 8)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < 8; i++)
        v = v << 8 | key[plen + i];
    *id = v;
    return 0;
}

/*
 * Reads id's "V/" row: 1 when it exists, decodes and is in list (vec then
 * copied into out when out is not NULL), 0 when the "M/" key was stale, or a
 * negative code.
 */
static int s_member_row(shard_store_t *store, shard_coll_t *coll, uint32_t list, uint64_t id,
                        float *out, shoal_err_t *err)
{
    uint8_t key[SHARD_KEY_MAX];
    void *val = NULL;
    size_t vlen = 0;
    int rc =
        kv_get(store->kv, key, kvkeys_u64(key, SHARD_TAG_VEC, coll->name, id), &val, &vlen, err);
    if (rc == SHOAL_ENOTFOUND)
        return 0;
    if (rc)
        return rc;
    const uint8_t *vec = NULL;
    uint32_t stored = 0;
    int in_list = shard_vec_decode(coll, id, val, vlen, &vec, NULL, &stored, NULL, NULL) == 0 &&
                  stored == list;
    if (in_list && out)
        memcpy(out, vec, coll->dim * sizeof(float));
    free(val);
    return in_list;
}

int shard_store_list_export(shard_store_t *store, const char *name, uint32_t list,
                            const char *cursor, size_t limit, uint64_t *ids, float *vecs,
                            size_t *n, char *next, int *done, shoal_err_t *err)
{
    if (!store || !n || !next || !done || (limit && (!ids || !vecs)))
        return shoal_err_set(err, SHOAL_EINVAL, "list_export: NULL argument");
    *n = 0;
    *done = 0;
    next[0] = 0;
    if (limit == 0)
        return shoal_err_set(err, SHOAL_EINVAL, "list_export: limit must be >= 1, got 0");
    int has_after = 0;
    uint64_t after = 0;
    int rc = s_cursor_parse(cursor, list, &has_after, &after, err);
    if (rc)
        return rc;
    if (has_after)
        snprintf(next, WIRE_CURSOR_MAX + 1, "%s", cursor);
    /* write_mu: store->kv is replaced by a reopen only under it, and the
     * rows of one chunk are then one consistent state. */
    pthread_mutex_lock(&store->write_mu);
    kv_iter_t *it = NULL;
    shard_coll_t *coll = shard_coll_find_or_fail(store, name, err);
    if (!coll) {
        rc = err ? err->code : SHOAL_ENOTFOUND;
        goto done;
    }
    if (has_after && after == UINT64_MAX) {
        *done = 1; /* no id sorts after the largest */
        goto done;
    }
    uint8_t prefix[SHARD_KEY_MAX], from[SHARD_KEY_MAX];
    size_t plen = kvkeys_u32(prefix, SHARD_TAG_MEMBER, name, list);
    if (!(it = kv_iter_new(store->kv, prefix, plen, err))) {
        rc = err ? err->code : SHOAL_ENOMEM;
        goto done;
    }
    if (has_after)
        kv_iter_seek(it, from, kvkeys_u32_u64(from, SHARD_TAG_MEMBER, name, list, after + 1));
    uint64_t last = after;
    int moved = 0;
    for (; *n < limit && kv_iter_valid(it); kv_iter_next(it)) {
        size_t klen = 0;
        const uint8_t *key = kv_iter_key(it, &klen);
        uint64_t id = 0;
        if (s_member_id(key, klen, plen, &id) != 0) {
            rc = shoal_err_set(err, SHOAL_ECORRUPT,
                               "list_export \"%s\" list %" PRIu32 ": membership key of %zu bytes, "
                               "expected %zu",
                               name, list, klen, plen + 8);
            goto done;
        }
        int kept = s_member_row(store, coll, list, id, vecs + *n * coll->dim, err);
        if (kept < 0) {
            rc = shoal_err_prefix(err, "list_export \"%s\" list %" PRIu32, name, list);
            goto done;
        }
        /* A stale key moves the cursor on too, so it is not met again. */
        last = id;
        moved = 1;
        if (kept)
            ids[(*n)++] = id;
    }
    if (!kv_iter_valid(it)) {
        if ((rc = kv_iter_status(it, err)) != 0) {
            shoal_err_prefix(err, "list_export \"%s\" list %" PRIu32, name, list);
            goto done;
        }
        *done = 1;
    }
    if (moved)
        snprintf(next, WIRE_CURSOR_MAX + 1, "%08" PRIx32 ":%016" PRIx64, list, last);
done:
    kv_iter_destroy(&it);
    pthread_mutex_unlock(&store->write_mu);
    return rc;
}

int shard_store_list_drop(shard_store_t *store, const char *name, uint32_t list, size_t *removed,
                          uint64_t *seq, shoal_err_t *err)
{
    if (removed)
        *removed = 0;
    if (!store)
        return shoal_err_set(err, SHOAL_EINVAL, "list_drop: no store");
    pthread_mutex_lock(&store->write_mu);
    int rc = 0;
    kv_iter_t *it = NULL;
    uint64_t *ids = NULL;
    uint32_t *lists = NULL;
    size_t n = 0, cap = 0;
    shard_coll_t *coll = shard_coll_find_or_fail(store, name, err);
    if (!coll) {
        rc = err ? err->code : SHOAL_ENOTFOUND;
        goto done;
    }
    uint8_t prefix[SHARD_KEY_MAX];
    size_t plen = kvkeys_u32(prefix, SHARD_TAG_MEMBER, name, list);
    if (!(it = kv_iter_new(store->kv, prefix, plen, err))) {
        rc = err ? err->code : SHOAL_ENOMEM;
        goto done;
    }
    /* The list's ids whose rows really are in it (stale keys are left to the
     * delete's own clean-up: none, since they name no row). */
    for (; kv_iter_valid(it); kv_iter_next(it)) {
        size_t klen = 0;
        const uint8_t *key = kv_iter_key(it, &klen);
        uint64_t id = 0;
        if (s_member_id(key, klen, plen, &id) != 0)
            continue;
        int kept = s_member_row(store, coll, list, id, NULL, err);
        if (kept < 0) {
            rc = shoal_err_prefix(err, "list_drop \"%s\" list %" PRIu32, name, list);
            goto done;
        }
        if (!kept)
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 1024;
            uint64_t *grown = realloc(ids, cap * sizeof *grown);
            if (!grown) {
                rc = shoal_err_set(err, SHOAL_ENOMEM, "list_drop \"%s\": out of memory", name);
                goto done;
            }
            ids = grown;
        }
        ids[n++] = id;
    }
    if ((rc = kv_iter_status(it, err)) != 0) {
        shoal_err_prefix(err, "list_drop \"%s\" list %" PRIu32, name, list);
        goto done;
    }
    kv_iter_destroy(&it);
    if (!(lists = malloc((n ? n : 1) * sizeof *lists))) {
        rc = shoal_err_set(err, SHOAL_ENOMEM, "list_drop \"%s\": out of memory", name);
        goto done;
    }
    for (size_t i = 0; i < n; i++)
        lists[i] = list;
    rc = shard_delete_locked(store, coll, ids, lists, n, removed, seq, err);
    if (rc == 0)
        log_info("collection \"%s\": list %" PRIu32 " dropped (%zu vectors)", name, list,
                 removed ? *removed : n);
done:
    kv_iter_destroy(&it);
    pthread_mutex_unlock(&store->write_mu);
    free(ids);
    free(lists);
    return rc;
}
