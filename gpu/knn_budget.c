/*
 * knn_budget.c - the per-device search budget shared by engines. See
 * knn_budget.h.
 */
#include "gpu/knn_budget.h"

#include <pthread.h>

typedef struct {
    size_t pool;  /* bytes for every engine's tiles together */
    int engines;  /* engines on the device */
} s_device_t;

static pthread_mutex_t s_lock = PTHREAD_MUTEX_INITIALIZER;
static s_device_t s_devices[KNN_BUDGET_DEVICES];

static int s_valid(int ordinal)
{
    return ordinal >= 0 && ordinal < KNN_BUDGET_DEVICES;
}

int knn_budget_join(int ordinal, size_t free_bytes)
{
    if (!s_valid(ordinal))
        return -1;
    pthread_mutex_lock(&s_lock);
    s_device_t *d = &s_devices[ordinal];
    if (d->engines == 0) {
        size_t pool = free_bytes / 4;
        d->pool = pool < KNN_BUDGET_MAX ? pool : KNN_BUDGET_MAX;
    }
    d->engines++;
    pthread_mutex_unlock(&s_lock);
    return 0;
}

void knn_budget_leave(int ordinal)
{
    if (!s_valid(ordinal))
        return;
    pthread_mutex_lock(&s_lock);
    s_device_t *d = &s_devices[ordinal];
    if (d->engines > 0 && --d->engines == 0)
        d->pool = 0;
    pthread_mutex_unlock(&s_lock);
}

size_t knn_budget_share(int ordinal, size_t requested)
{
    if (requested)
        return requested < KNN_BUDGET_MIN ? KNN_BUDGET_MIN : requested;
    size_t share = KNN_BUDGET_MIN;
    if (s_valid(ordinal)) {
        pthread_mutex_lock(&s_lock);
        const s_device_t *d = &s_devices[ordinal];
        if (d->engines > 0)
            share = d->pool / (size_t)d->engines;
        pthread_mutex_unlock(&s_lock);
    }
    return share < KNN_BUDGET_MIN ? KNN_BUDGET_MIN : share;
}

int knn_budget_engines(int ordinal)
{
    if (!s_valid(ordinal))
        return 0;
    pthread_mutex_lock(&s_lock);
    int n = s_devices[ordinal].engines;
    pthread_mutex_unlock(&s_lock);
    return n;
}
