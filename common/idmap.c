/*
 * idmap.c - the uint64-keyed open-addressing table of idmap.h.
 */
#include "common/idmap.h"

#include "common/error.h"
#include "common/rng.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

static size_t s_hash(uint64_t key)
{
    return (size_t)shoal_rng_mix64(key);
}

/* The slot holding key, or the free slot where it would go (cap > count). */
static size_t s_slot(const idmap_t *m, uint64_t key)
{
    size_t mask = m->cap - 1;
    size_t i = s_hash(key) & mask;
    while (m->keys[i] != key && m->keys[i] != IDMAP_FREE)
        i = (i + 1) & mask;
    return i;
}

static uint64_t *s_keys_new(size_t cap)
{
    uint64_t *keys = malloc(cap * sizeof *keys);
    if (keys)
        memset(keys, 0xff, cap * sizeof *keys); /* every byte 0xff: IDMAP_FREE */
    return keys;
}

int idmap_set_init(idmap_t *set, size_t n)
{
    size_t cap = IDMAP_CAP_MIN;
    while (cap < 2 * n + 1)
        cap <<= 1;
    *set = (idmap_t){.keys = s_keys_new(cap), .cap = cap};
    if (!set->keys) {
        *set = (idmap_t){0};
        return SHOAL_ENOMEM;
    }
    return SHOAL_OK;
}

int idmap_reserve(idmap_t *map, size_t want)
{
    size_t cap = IDMAP_CAP_MIN;
    while (cap - cap / 4 < want) {
        if (cap > SIZE_MAX / 2 / sizeof(uint64_t))
            return SHOAL_ENOMEM;
        cap *= 2;
    }
    if (cap <= map->cap)
        return SHOAL_OK;
    idmap_t bigger = {s_keys_new(cap), malloc(cap * sizeof(size_t)), cap, 0};
    if (!bigger.keys || !bigger.vals) {
        free(bigger.keys);
        free(bigger.vals);
        return SHOAL_ENOMEM;
    }
    for (size_t i = 0; i < map->cap; i++) {
        if (map->keys[i] == IDMAP_FREE)
            continue;
        size_t slot = s_slot(&bigger, map->keys[i]);
        bigger.keys[slot] = map->keys[i];
        bigger.vals[slot] = map->vals[i];
        bigger.count++;
    }
    free(map->keys);
    free(map->vals);
    *map = bigger;
    return SHOAL_OK;
}

void idmap_fini(idmap_t *m)
{
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

size_t idmap_find(const idmap_t *map, uint64_t key)
{
    if (map->cap == 0 || key == IDMAP_FREE)
        return IDMAP_NONE;
    size_t i = s_slot(map, key);
    return map->keys[i] == key ? map->vals[i] : IDMAP_NONE;
}

int idmap_contains(const idmap_t *m, uint64_t key)
{
    if (m->cap == 0 || key == IDMAP_FREE)
        return 0;
    return m->keys[s_slot(m, key)] == key;
}

void idmap_put(idmap_t *map, uint64_t key, size_t val)
{
    assert(map->vals && key != IDMAP_FREE);
    size_t slot = s_slot(map, key);
    if (map->keys[slot] == IDMAP_FREE)
        map->count++;
    map->keys[slot] = key;
    map->vals[slot] = val;
}

int idmap_add(idmap_t *set, uint64_t key)
{
    if (key == IDMAP_FREE)
        return 0;
    size_t slot = s_slot(set, key);
    if (set->keys[slot] == key)
        return 0;
    set->keys[slot] = key;
    set->count++;
    return 1;
}

/*
 * Every entry after the hole in the same probe run is moved back into the
 * hole when its home slot does not lie cyclically in (hole, entry]: then it
 * could not be found past the hole any more.
 */
void idmap_remove(idmap_t *m, uint64_t key)
{
    size_t mask = m->cap - 1;
    size_t hole = s_slot(m, key);
    assert(m->keys[hole] == key);
    for (size_t i = (hole + 1) & mask; m->keys[i] != IDMAP_FREE; i = (i + 1) & mask) {
        size_t home = s_hash(m->keys[i]) & mask;
        int stays = hole <= i ? (hole < home && home <= i) : (hole < home || home <= i);
        if (stays)
            continue;
        m->keys[hole] = m->keys[i];
        if (m->vals)
            m->vals[hole] = m->vals[i];
        hole = i;
    }
    m->keys[hole] = IDMAP_FREE;
    m->count--;
}
