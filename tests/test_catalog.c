/*
 * test_catalog.c - the coordinator's catalog: collections created, found and
 * dropped; everything present again after a close and reopen (registry,
 * parameters, trained state, counts, id map, membership, intents); the shard
 * registry rules; id map upserts and deletes keeping counts and membership in
 * step (also against a model over random batches); intents and their txn
 * numbers; corrupt records, foreign databases and other format versions
 * refused with the key or version named; drop then recreate leaving nothing.
 *
 * Catalogs live in mkdtemp directories under $SHOAL_TMP (or /tmp), removed
 * after each test.
 */
#include "common/kv.h"
#include "common/log.h"
#include "coordinator/catalog.h"
#include "test_support.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static char s_dir[1024];

static void s_setup(void)
{
    shoal_log_init_from_env();
    const char *base = getenv("SHOAL_TMP");
    if (!base || !*base)
        base = "/tmp";
    mkdir(base, 0755);
    snprintf(s_dir, sizeof s_dir, "%s/test_catalog-XXXXXX", base);
    cr_assert_not_null(mkdtemp(s_dir));
}

static void s_teardown(void)
{
    s_remove_tree(s_dir);
}

TestSuite(catalog, .init = s_setup, .fini = s_teardown);

static catalog_t *s_open(void)
{
    shoal_err_t err;
    catalog_t *cat = catalog_open(s_dir, &err);
    cr_assert_not_null(cat, "catalog_open: %s", err.msg);
    return cat;
}

static catalog_t *s_reopen(catalog_t **cat)
{
    catalog_close(cat);
    cr_assert_null(*cat);
    return s_open();
}

static const char *const s_eps[] = {"tcp://a:7702", "tcp://b:7702", "tcp://c:7702"};

static void s_set_shards(catalog_t *cat, size_t n)
{
    shoal_err_t err;
    cr_assert_eq(catalog_shards_set(cat, s_eps, n, &err), 0, "%s", err.msg);
}

static void s_create(catalog_t *cat, const char *name, uint32_t dim, uint32_t nlist)
{
    catalog_coll_t p;
    memset(&p, 0, sizeof p);
    snprintf(p.name, sizeof p.name, "%s", name);
    p.dim = dim;
    p.metric = SHOAL_METRIC_IP;
    p.nlist = nlist;
    p.M = 24;
    p.ef_construction = 150;
    p.nprobe = nlist < 2 ? nlist : 2;
    shoal_err_t err;
    cr_assert_eq(catalog_create(cat, &p, &err), 0, "create %s: %s", name, err.msg);
}

/* Trains with centroid value l*dim+d and owner l % shards. */
static void s_train(catalog_t *cat, const char *name)
{
    const catalog_coll_t *c = catalog_find(cat, name);
    cr_assert_not_null(c);
    size_t nshards = catalog_shard_count(cat);
    float *cent = malloc(sizeof(float) * c->nlist * c->dim);
    uint32_t *own = malloc(sizeof(uint32_t) * c->nlist);
    for (size_t i = 0; i < (size_t)c->nlist * c->dim; i++)
        cent[i] = (float)i * 0.5f;
    for (uint32_t l = 0; l < c->nlist; l++)
        own[l] = (uint32_t)(l % nshards);
    shoal_err_t err;
    cr_assert_eq(catalog_set_trained(cat, name, cent, own, &err), 0, "%s", err.msg);
    free(cent);
    free(own);
}

/* One collection a test starts with (s_open_with). */
typedef struct {
    const char *name; /* collection name */
    uint32_t dim;     /* its dim */
    uint32_t nlist;   /* its lists */
    int trained;      /* 1: trained by s_train */
} s_coll_spec_t;

/* Opens the catalog with nshards shards, creates the n collections in order, then trains the marked
 * ones. */
static catalog_t *s_open_with(size_t nshards, const s_coll_spec_t *specs, size_t n)
{
    catalog_t *cat = s_open();
    s_set_shards(cat, nshards);
    for (size_t i = 0; i < n; i++)
        s_create(cat, specs[i].name, specs[i].dim, specs[i].nlist);
    for (size_t i = 0; i < n; i++)
        if (specs[i].trained)
            s_train(cat, specs[i].name);
    return cat;
}

/* Looks ids up and upserts them into new_lists. */
static void s_upsert(catalog_t *cat, const char *name, const uint64_t *ids,
                     const uint32_t *new_lists, size_t n)
{
    uint32_t *old = malloc(sizeof(uint32_t) * (n ? n : 1));
    shoal_err_t err;
    cr_assert_eq(catalog_lookup(cat, name, ids, n, old, &err), 0, "%s", err.msg);
    cr_assert_eq(catalog_apply_insert(cat, name, ids, old, new_lists, n, &err), 0, "%s", err.msg);
    free(old);
}

static void s_delete(catalog_t *cat, const char *name, const uint64_t *ids, size_t n)
{
    uint32_t *old = malloc(sizeof(uint32_t) * (n ? n : 1));
    shoal_err_t err;
    cr_assert_eq(catalog_lookup(cat, name, ids, n, old, &err), 0, "%s", err.msg);
    cr_assert_eq(catalog_apply_delete(cat, name, ids, old, n, &err), 0, "%s", err.msg);
    free(old);
}

static uint32_t s_list_of(catalog_t *cat, const char *name, uint64_t id)
{
    uint32_t list = 0;
    shoal_err_t err;
    cr_assert_eq(catalog_lookup(cat, name, &id, 1, &list, &err), 0, "%s", err.msg);
    return list;
}

/* Every id of a list, ascending, through pages of 3. */
static size_t s_scan_all(catalog_t *cat, const char *name, uint32_t list, uint64_t *out, size_t cap)
{
    size_t total = 0;
    uint64_t from = 0;
    for (;;) {
        uint64_t page[3];
        size_t got = 0;
        shoal_err_t err;
        cr_assert_eq(catalog_scan_list(cat, name, list, from, page, 3, &got, &err), 0, "%s",
                     err.msg);
        for (size_t i = 0; i < got; i++) {
            cr_assert_lt(total, cap);
            out[total++] = page[i];
        }
        if (got < 3)
            return total;
        from = page[2] + 1;
    }
}

static void s_expect_list(catalog_t *cat, const char *name, uint32_t list, const uint64_t *want,
                          size_t n)
{
    uint64_t got[64];
    size_t count = s_scan_all(cat, name, list, got, 64);
    cr_assert_eq(count, n, "list %u has %zu ids, expected %zu", list, count, n);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(got[i], want[i], "list %u id %zu", list, i);
    const catalog_coll_t *c = catalog_find(cat, name);
    cr_assert_eq(c->list_counts[list], n, "list %u count %llu, expected %zu", list,
                 (unsigned long long)c->list_counts[list], n);
}

/* ------------------------------------------------------------------------ */

Test(catalog, create_find_drop)
{
    catalog_t *cat = s_open();
    cr_assert_eq(catalog_coll_count(cat), 0);
    s_create(cat, "zeta", 4, 8);
    s_create(cat, "alpha", 3, 2);
    s_create(cat, "docs.v-1_x", 16, 1);
    cr_assert_eq(catalog_coll_count(cat), 3);
    cr_assert_str_eq(catalog_coll_at(cat, 0)->name, "alpha");
    cr_assert_str_eq(catalog_coll_at(cat, 1)->name, "docs.v-1_x");
    cr_assert_str_eq(catalog_coll_at(cat, 2)->name, "zeta");
    cr_assert_null(catalog_coll_at(cat, 3));

    const catalog_coll_t *z = catalog_find(cat, "zeta");
    cr_assert_not_null(z);
    cr_assert_eq(z->dim, 4);
    cr_assert_eq(z->nlist, 8);
    cr_assert_eq(z->metric, SHOAL_METRIC_IP);
    cr_assert_eq(z->M, 24);
    cr_assert_eq(z->ef_construction, 150);
    cr_assert_eq(z->nprobe, 2);
    cr_assert_eq(z->trained, 0);
    cr_assert_null(z->centroids);
    cr_assert_null(z->owners);
    cr_assert_not_null(z->list_counts);
    for (uint32_t l = 0; l < 8; l++)
        cr_assert_eq(z->list_counts[l], 0);
    cr_assert_eq(z->count, 0);
    cr_assert_null(catalog_find(cat, "zet"));

    shoal_err_t err;
    catalog_coll_t p = *z;
    cr_assert_eq(catalog_create(cat, &p, &err), SHOAL_EEXIST);
    cr_assert(strstr(err.msg, "zeta"), "%s", err.msg);

    const char *bad[] = {"", "a b", "x/y", "tab\t", "caf\xc3\xa9"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(p.name, sizeof p.name, "%s", bad[i]);
        cr_assert_eq(catalog_create(cat, &p, &err), SHOAL_EINVAL, "name %zu", i);
    }
    memset(p.name, 'a', sizeof p.name); /* WIRE_NAME_MAX + 1 characters, no NUL */
    cr_assert_eq(catalog_create(cat, &p, &err), SHOAL_EINVAL);
    memset(p.name, 0, sizeof p.name);
    memset(p.name, 'a', WIRE_NAME_MAX); /* the longest name is fine */
    cr_assert_eq(catalog_create(cat, &p, &err), 0, "%s", err.msg);
    cr_assert_eq(catalog_drop(cat, p.name, &err), 0, "%s", err.msg);
    snprintf(p.name, sizeof p.name, "ok");
    p.dim = 0;
    cr_assert_eq(catalog_create(cat, &p, &err), SHOAL_EINVAL);
    p.dim = 4;
    p.nlist = 0;
    cr_assert_eq(catalog_create(cat, &p, &err), SHOAL_EINVAL);
    p.nlist = 4;
    p.nprobe = 5;
    cr_assert_eq(catalog_create(cat, &p, &err), SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "nprobe"), "%s", err.msg);
    cr_assert_eq(catalog_coll_count(cat), 3);

    cr_assert_eq(catalog_drop(cat, "docs.v-1_x", &err), 0, "%s", err.msg);
    cr_assert_null(catalog_find(cat, "docs.v-1_x"));
    cr_assert_eq(catalog_coll_count(cat), 2);
    cr_assert_str_eq(catalog_coll_at(cat, 1)->name, "zeta");
    cr_assert_eq(catalog_drop(cat, "docs.v-1_x", &err), SHOAL_ENOTFOUND);
    cr_assert(strstr(err.msg, "docs.v-1_x"), "%s", err.msg);

    cat = s_reopen(&cat);
    cr_assert_eq(catalog_coll_count(cat), 2);
    cr_assert_str_eq(catalog_coll_at(cat, 0)->name, "alpha");
    cr_assert_str_eq(catalog_coll_at(cat, 1)->name, "zeta");
    catalog_close(&cat);
}

Test(catalog, persists_across_reopen)
{
    const s_coll_spec_t colls[] = {{"docs", 3, 4, 1}, {"empty", 2, 2, 0}};
    catalog_t *cat = s_open_with(2, colls, 2);
    uint64_t ids[] = {10, 11, 12, 13, 14};
    uint32_t lists[] = {0, 1, 1, 3, 0};
    s_upsert(cat, "docs", ids, lists, 5);
    uint64_t txn = 0;
    shoal_err_t err;
    cr_assert_eq(catalog_intent_put(cat, "docs", ids, lists, lists, 2, &txn, &err), 0, "%s",
                 err.msg);

    cat = s_reopen(&cat);
    cr_assert_eq(catalog_shard_count(cat), 2);
    cr_assert_str_eq(catalog_shard(cat, 0), s_eps[0]);
    cr_assert_str_eq(catalog_shard(cat, 1), s_eps[1]);
    cr_assert_null(catalog_shard(cat, 2));

    const catalog_coll_t *c = catalog_find(cat, "docs");
    cr_assert_not_null(c);
    cr_assert_eq(c->trained, 1);
    cr_assert_eq(c->dim, 3);
    cr_assert_eq(c->nlist, 4);
    for (size_t i = 0; i < 12; i++)
        cr_assert_eq(c->centroids[i], (float)i * 0.5f);
    for (uint32_t l = 0; l < 4; l++)
        cr_assert_eq(c->owners[l], l % 2);
    cr_assert_eq(c->list_counts[0], 2);
    cr_assert_eq(c->list_counts[1], 2);
    cr_assert_eq(c->list_counts[2], 0);
    cr_assert_eq(c->list_counts[3], 1);
    cr_assert_eq(c->count, 5);
    const catalog_coll_t *e = catalog_find(cat, "empty");
    cr_assert_not_null(e);
    cr_assert_eq(e->trained, 0);
    cr_assert_null(e->centroids);

    uint32_t got[5];
    cr_assert_eq(catalog_lookup(cat, "docs", ids, 5, got, &err), 0, "%s", err.msg);
    for (size_t i = 0; i < 5; i++)
        cr_assert_eq(got[i], lists[i]);
    uint64_t l1[] = {11, 12};
    s_expect_list(cat, "docs", 1, l1, 2);

    catalog_intent_t *in = NULL;
    size_t nin = 0;
    cr_assert_eq(catalog_intents(cat, "docs", &in, &nin, &err), 0, "%s", err.msg);
    cr_assert_eq(nin, 1);
    cr_assert_eq(in[0].txn, txn);
    cr_assert_eq(in[0].n, 2);
    cr_assert_eq(in[0].ids[1], 11);
    catalog_intents_free(in, nin);
    catalog_close(&cat);
}

Test(catalog, registry_rules)
{
    catalog_t *cat = s_open();
    shoal_err_t err;
    cr_assert_eq(catalog_shard_count(cat), 0);
    cr_assert_eq(catalog_shards_set(cat, NULL, 0, &err), 0);
    cr_assert_eq(catalog_shard_count(cat), 0);
    s_set_shards(cat, 2);
    cr_assert_eq(catalog_shard_count(cat), 2);
    /* The same list again, and n 0, keep it. */
    s_set_shards(cat, 2);
    cr_assert_eq(catalog_shards_set(cat, NULL, 0, &err), 0);
    cr_assert_eq(catalog_shard_count(cat), 2);

    const char *reordered[] = {"tcp://b:7702", "tcp://a:7702", "tcp://c:7702"};
    cr_assert_eq(catalog_shards_set(cat, reordered, 3, &err), SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "shard 0") && strstr(err.msg, "tcp://a:7702") &&
                  strstr(err.msg, "tcp://b:7702"),
              "%s", err.msg);
    const char *replaced[] = {"tcp://a:7702", "tcp://x:7702"};
    cr_assert_eq(catalog_shards_set(cat, replaced, 2, &err), SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "shard 1") && strstr(err.msg, "tcp://b:7702") &&
                  strstr(err.msg, "tcp://x:7702"),
              "%s", err.msg);
    cr_assert_eq(catalog_shards_set(cat, s_eps, 1, &err), SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "shard 1") && strstr(err.msg, "tcp://b:7702"), "%s", err.msg);
    const char *dup[] = {"tcp://a:7702", "tcp://b:7702", "tcp://a:7702"};
    cr_assert_eq(catalog_shards_set(cat, dup, 3, &err), SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "tcp://a:7702"), "%s", err.msg);
    const char *empty[] = {"tcp://a:7702", "tcp://b:7702", ""};
    cr_assert_eq(catalog_shards_set(cat, empty, 3, &err), SHOAL_EINVAL);
    cr_assert_eq(catalog_shard_count(cat), 2);

    /* Appending is fine, and survives a reopen. */
    s_set_shards(cat, 3);
    cat = s_reopen(&cat);
    cr_assert_eq(catalog_shard_count(cat), 3);
    for (size_t i = 0; i < 3; i++)
        cr_assert_str_eq(catalog_shard(cat, i), s_eps[i]);
    cr_assert_eq(catalog_shards_set(cat, s_eps, 2, &err), SHOAL_EINVAL);
    catalog_close(&cat);

    /* Duplicates refused on an empty registry too. */
    s_remove_tree(s_dir);
    mkdir(s_dir, 0755);
    cat = s_open();
    const char *dup2[] = {"tcp://a:1", "tcp://a:1"};
    cr_assert_eq(catalog_shards_set(cat, dup2, 2, &err), SHOAL_EINVAL);
    cr_assert_eq(catalog_shard_count(cat), 0);
    catalog_close(&cat);
}

Test(catalog, upsert_moves_lists)
{
    const s_coll_spec_t colls[] = {{"docs", 2, 3, 1}};
    catalog_t *cat = s_open_with(2, colls, 1);
    uint64_t ids[10];
    uint32_t lists[10];
    for (size_t i = 0; i < 10; i++) {
        ids[i] = 100 - i; /* descending on purpose: scans come back ascending */
        lists[i] = (uint32_t)(ids[i] % 3);
    }
    s_upsert(cat, "docs", ids, lists, 10);
    /* 91..100: %3 == 0: 93 96 99; 1: 91 94 97 100; 2: 92 95 98 */
    uint64_t l0[] = {93, 96, 99}, l1[] = {91, 94, 97, 100}, l2[] = {92, 95, 98};
    s_expect_list(cat, "docs", 0, l0, 3);
    s_expect_list(cat, "docs", 1, l1, 4);
    s_expect_list(cat, "docs", 2, l2, 3);
    cr_assert_eq(catalog_find(cat, "docs")->count, 10);

    /* Paging from an id in the middle, and past the end. */
    uint64_t page[8];
    size_t got = 0;
    shoal_err_t err;
    cr_assert_eq(catalog_scan_list(cat, "docs", 1, 95, page, 8, &got, &err), 0, "%s", err.msg);
    cr_assert_eq(got, 2);
    cr_assert_eq(page[0], 97);
    cr_assert_eq(page[1], 100);
    cr_assert_eq(catalog_scan_list(cat, "docs", 1, 101, page, 8, &got, &err), 0);
    cr_assert_eq(got, 0);
    cr_assert_eq(catalog_scan_list(cat, "docs", 3, 0, page, 8, &got, &err), SHOAL_EINVAL);

    /* Move 93 to list 2, 100 to list 0, re-put 92 in place, add 7: one batch. */
    uint64_t mv[] = {93, 100, 92, 7};
    uint32_t to[] = {2, 0, 2, 1};
    s_upsert(cat, "docs", mv, to, 4);
    uint64_t n0[] = {96, 99, 100}, n1[] = {7, 91, 94, 97}, n2[] = {92, 93, 95, 98};
    s_expect_list(cat, "docs", 0, n0, 3);
    s_expect_list(cat, "docs", 1, n1, 4);
    s_expect_list(cat, "docs", 2, n2, 4);
    cr_assert_eq(catalog_find(cat, "docs")->count, 11);
    cr_assert_eq(s_list_of(cat, "docs", 93), 2);
    cr_assert_eq(s_list_of(cat, "docs", 100), 0);
    cr_assert_eq(s_list_of(cat, "docs", 5), CATALOG_LIST_NONE);

    /* An id repeated in one batch: the last wins, the old list loses it once. */
    uint64_t rep[] = {96, 8, 96, 8, 96};
    uint32_t rep_to[] = {1, 0, 2, 2, 1};
    s_upsert(cat, "docs", rep, rep_to, 5);
    uint64_t r0[] = {99, 100}, r1[] = {7, 91, 94, 96, 97}, r2[] = {8, 92, 93, 95, 98};
    s_expect_list(cat, "docs", 0, r0, 2);
    s_expect_list(cat, "docs", 1, r1, 5);
    s_expect_list(cat, "docs", 2, r2, 5);
    cr_assert_eq(catalog_find(cat, "docs")->count, 12);

    /* Out-of-range lists refused, nothing changed. */
    uint64_t one = 1;
    uint32_t none = CATALOG_LIST_NONE, three = 3;
    cr_assert_eq(catalog_apply_insert(cat, "docs", &one, &none, &three, 1, &err), SHOAL_EINVAL);
    cr_assert_eq(catalog_apply_insert(cat, "docs", &one, &three, &three, 1, &err), SHOAL_EINVAL);
    cr_assert_eq(catalog_apply_insert(cat, "nope", &one, &none, &three, 1, &err), SHOAL_ENOTFOUND);
    cr_assert_eq(catalog_lookup(cat, "nope", &one, 1, &none, &err), SHOAL_ENOTFOUND);
    cr_assert_eq(catalog_scan_list(cat, "nope", 0, 0, page, 8, &got, &err), SHOAL_ENOTFOUND);
    cr_assert_eq(catalog_find(cat, "docs")->count, 12);

    cat = s_reopen(&cat);
    s_expect_list(cat, "docs", 0, r0, 2);
    s_expect_list(cat, "docs", 1, r1, 5);
    s_expect_list(cat, "docs", 2, r2, 5);
    cr_assert_eq(catalog_find(cat, "docs")->count, 12);
    catalog_close(&cat);
}

Test(catalog, delete_ids)
{
    const s_coll_spec_t colls[] = {{"docs", 2, 2, 1}};
    catalog_t *cat = s_open_with(1, colls, 1);
    uint64_t ids[] = {1, 2, 3, 4};
    uint32_t lists[] = {0, 0, 1, 1};
    s_upsert(cat, "docs", ids, lists, 4);
    /* 9 is absent, 2 repeated: removed once. */
    uint64_t del[] = {2, 9, 3, 2};
    s_delete(cat, "docs", del, 4);
    uint64_t l0[] = {1}, l1[] = {4};
    s_expect_list(cat, "docs", 0, l0, 1);
    s_expect_list(cat, "docs", 1, l1, 1);
    cr_assert_eq(catalog_find(cat, "docs")->count, 2);
    cr_assert_eq(s_list_of(cat, "docs", 2), CATALOG_LIST_NONE);
    cr_assert_eq(s_list_of(cat, "docs", 3), CATALOG_LIST_NONE);
    /* Deleting again changes nothing. */
    s_delete(cat, "docs", del, 4);
    cr_assert_eq(catalog_find(cat, "docs")->count, 2);

    cat = s_reopen(&cat);
    s_expect_list(cat, "docs", 0, l0, 1);
    s_expect_list(cat, "docs", 1, l1, 1);
    cr_assert_eq(catalog_find(cat, "docs")->count, 2);
    catalog_close(&cat);
}

/* Random upserts and deletes against a plain array model. */
Test(catalog, random_batches_match_model)
{
    enum { IDS = 200, LISTS = 5, ROUNDS = 30, BATCH = 40 };
    catalog_t *cat = s_open();
    s_set_shards(cat, 2);
    s_create(cat, "m", 2, LISTS);
    s_train(cat, "m");
    uint32_t model[IDS];
    for (size_t i = 0; i < IDS; i++)
        model[i] = CATALOG_LIST_NONE;
    srand(7);
    for (int r = 0; r < ROUNDS; r++) {
        uint64_t ids[BATCH];
        uint32_t to[BATCH];
        for (size_t i = 0; i < BATCH; i++) {
            ids[i] = (uint64_t)(rand() % IDS);
            to[i] = (uint32_t)(rand() % LISTS);
        }
        if (r % 3 == 2) {
            s_delete(cat, "m", ids, BATCH);
            for (size_t i = 0; i < BATCH; i++)
                model[ids[i]] = CATALOG_LIST_NONE;
        } else {
            s_upsert(cat, "m", ids, to, BATCH);
            for (size_t i = 0; i < BATCH; i++)
                model[ids[i]] = to[i];
        }
        if (r == ROUNDS / 2)
            cat = s_reopen(&cat);
    }
    cat = s_reopen(&cat);
    uint64_t total = 0;
    for (uint32_t l = 0; l < LISTS; l++) {
        uint64_t want[IDS];
        size_t n = 0;
        for (size_t i = 0; i < IDS; i++)
            if (model[i] == l)
                want[n++] = i;
        uint64_t got[IDS];
        size_t m = s_scan_all(cat, "m", l, got, IDS);
        cr_assert_eq(m, n, "list %u: %zu ids, model %zu", l, m, n);
        for (size_t i = 0; i < n; i++)
            cr_assert_eq(got[i], want[i]);
        cr_assert_eq(catalog_find(cat, "m")->list_counts[l], n);
        total += n;
    }
    cr_assert_eq(catalog_find(cat, "m")->count, total);
    for (uint64_t id = 0; id < IDS; id++)
        cr_assert_eq(s_list_of(cat, "m", id), model[id], "id %llu", (unsigned long long)id);
    catalog_close(&cat);
}

Test(catalog, training_rules)
{
    const s_coll_spec_t colls[] = {{"docs", 2, 2, 0}};
    catalog_t *cat = s_open_with(2, colls, 1);
    float cent[4] = {1, 2, 3, 4};
    uint32_t own[2] = {0, 2};
    shoal_err_t err;
    cr_assert_eq(catalog_set_trained(cat, "docs", cent, own, &err), SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "on shard 2"), "%s", err.msg);
    own[1] = 1;
    cent[3] = NAN;
    cr_assert_eq(catalog_set_trained(cat, "docs", cent, own, &err), SHOAL_EINVAL);
    cent[3] = 4;
    cr_assert_eq(catalog_set_trained(cat, "nope", cent, own, &err), SHOAL_ENOTFOUND);
    cr_assert_eq(catalog_find(cat, "docs")->trained, 0);
    cr_assert_eq(catalog_set_trained(cat, "docs", cent, own, &err), 0, "%s", err.msg);
    cr_assert_eq(catalog_set_trained(cat, "docs", cent, own, &err), SHOAL_EEXIST);
    const catalog_coll_t *c = catalog_find(cat, "docs");
    cr_assert_eq(c->trained, 1);
    cr_assert_eq(c->centroids[3], 4.0f);
    cr_assert_eq(c->owners[1], 1);
    catalog_close(&cat);
}

/* R = 2: owners per replica, distinct shards, stale marks persisted and cleared. */
Test(catalog, replicas_and_stale_marks)
{
    catalog_t *cat = s_open();
    s_set_shards(cat, 3);
    catalog_coll_t p;
    memset(&p, 0, sizeof p);
    snprintf(p.name, sizeof p.name, "rep");
    p.dim = 2;
    p.metric = SHOAL_METRIC_L2;
    p.nlist = 3;
    p.nprobe = 1;
    shoal_err_t err;
    p.replication = 4;
    cr_assert_eq(catalog_create(cat, &p, &err), SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "replication 4"), "%s", err.msg);
    p.replication = 2;
    p.write_quorum = 3;
    cr_assert_eq(catalog_create(cat, &p, &err), SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "write_quorum 3"), "%s", err.msg);
    p.write_quorum = 2;
    cr_assert_eq(catalog_create(cat, &p, &err), 0, "%s", err.msg);
    float cent[6] = {0, 0, 1, 1, 2, 2};
    uint32_t own[6] = {0, 0, 1, 2, 2, 0}; /* list 0's replicas on one shard */
    cr_assert_eq(catalog_set_trained(cat, "rep", cent, own, &err), SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "list 0 has replicas 0 and 1 on one shard"), "%s", err.msg);
    own[1] = 1;
    cr_assert_eq(catalog_set_trained(cat, "rep", cent, own, &err), 0, "%s", err.msg);
    uint32_t lists[2] = {2, 1}, reps[2] = {1, 0};
    cr_assert_eq(catalog_stale_set(cat, "rep", lists, reps, 2, 1, &err), 0, "%s", err.msg);
    uint32_t bad = 2;
    cr_assert_eq(catalog_stale_set(cat, "rep", lists, &bad, 1, 1, &err), SHOAL_EINVAL);
    cat = s_reopen(&cat);
    const catalog_coll_t *c = catalog_find(cat, "rep");
    cr_assert_eq(c->replication, 2);
    cr_assert_eq(c->write_quorum, 2);
    cr_assert_eq(catalog_owner(c, 2, 1), 0);
    cr_assert_eq(catalog_owner(c, 1, 0), 1);
    cr_assert_eq(c->nstale, 2);
    cr_assert(c->stale[2 * 2 + 1] && c->stale[1 * 2 + 0] && !c->stale[0]);
    cr_assert_eq(catalog_stale_set(cat, "rep", lists, reps, 1, 0, &err), 0, "%s", err.msg);
    cat = s_reopen(&cat);
    c = catalog_find(cat, "rep");
    cr_assert_eq(c->nstale, 1);
    cr_assert(!c->stale[2 * 2 + 1] && c->stale[1 * 2 + 0]);
    /* Missed writes of ids: list 0 replica 1 catches up on them. */
    uint64_t owed_ids[3] = {7, 3, 9};
    catalog_owed_t ow = {.list = 0, .replica = 1, .ids = owed_ids, .n = 3};
    size_t newly = 0;
    cr_assert_eq(catalog_stale_owe(cat, "rep", &ow, 1, &newly, &err), 0, "%s", err.msg);
    cr_assert_eq(newly, 1);
    /* list 1 replica 0 is to be rebuilt whole: owing ids does not change that */
    ow.list = 1;
    ow.replica = 0;
    cr_assert_eq(catalog_stale_owe(cat, "rep", &ow, 1, &newly, &err), 0, "%s", err.msg);
    cr_assert_eq(newly, 0);
    cat = s_reopen(&cat);
    c = catalog_find(cat, "rep");
    cr_assert_eq(c->nstale, 2);
    cr_assert_eq(c->stale[0 * 2 + 1], CATALOG_STALE_CATCHUP);
    cr_assert_eq(c->owed[0 * 2 + 1], 3);
    cr_assert_eq(c->stale[1 * 2 + 0], CATALOG_STALE_REBUILD);
    uint64_t got_ids[8];
    size_t got = 0;
    cr_assert_eq(catalog_owed_scan(cat, "rep", 0, 1, 0, got_ids, 8, &got, &err), 0, "%s", err.msg);
    cr_assert_eq(got, 3);
    cr_assert(got_ids[0] == 3 && got_ids[1] == 7 && got_ids[2] == 9);
    cr_assert_eq(catalog_owed_scan(cat, "rep", 0, 1, 4, got_ids, 8, &got, &err), 0);
    cr_assert(got == 2 && got_ids[0] == 7);
    cr_assert_eq(catalog_owed_clear(cat, "rep", 0, 1, got_ids, 1, &err), 0, "%s", err.msg);
    cat = s_reopen(&cat);
    cr_assert_eq(catalog_owed_scan(cat, "rep", 0, 1, 0, got_ids, 8, &got, &err), 0);
    cr_assert(got == 2 && got_ids[0] == 3 && got_ids[1] == 9);
    /* Clearing the mark forgets the ids; owing too many means a rebuild. */
    uint32_t l0 = 0, r1 = 1;
    cr_assert_eq(catalog_stale_set(cat, "rep", &l0, &r1, 1, 0, &err), 0, "%s", err.msg);
    cr_assert_eq(catalog_owed_scan(cat, "rep", 0, 1, 0, got_ids, 8, &got, &err), 0);
    cr_assert_eq(got, 0);
    uint64_t *many = calloc(CATALOG_OWED_MAX + 1, sizeof *many);
    cr_assert_not_null(many);
    for (size_t i = 0; i <= CATALOG_OWED_MAX; i++)
        many[i] = i;
    ow = (catalog_owed_t){.list = 2, .replica = 0, .ids = many, .n = CATALOG_OWED_MAX + 1};
    cr_assert_eq(catalog_stale_owe(cat, "rep", &ow, 1, &newly, &err), 0, "%s", err.msg);
    free(many);
    c = catalog_find(cat, "rep");
    cr_assert_eq(c->stale[2 * 2 + 0], CATALOG_STALE_REBUILD);
    cr_assert_eq(catalog_owed_scan(cat, "rep", 2, 0, 0, got_ids, 8, &got, &err), 0);
    cr_assert_eq(got, 0);
    cr_assert_eq(catalog_stale_set(cat, "rep", lists + 1, reps + 1, 1, 0, &err), 0, "%s",
                 err.msg);
    uint32_t l2 = 2, r0 = 0;
    cr_assert_eq(catalog_stale_set(cat, "rep", &l2, &r0, 1, 0, &err), 0, "%s", err.msg);
    cat = s_reopen(&cat);
    cr_assert_eq(catalog_find(cat, "rep")->nstale, 0);
    /* A drop takes the marks with it. */
    cr_assert_eq(catalog_drop(cat, "rep", &err), 0, "%s", err.msg);
    cr_assert_eq(catalog_create(cat, &p, &err), 0, "%s", err.msg);
    own[1] = 1;
    cr_assert_eq(catalog_set_trained(cat, "rep", cent, own, &err), 0, "%s", err.msg);
    cat = s_reopen(&cat);
    cr_assert_eq(catalog_find(cat, "rep")->nstale, 0);
    catalog_close(&cat);
}

Test(catalog, intents_and_txn_numbers)
{
    const s_coll_spec_t colls[] = {{"a", 2, 4, 1}, {"b", 2, 4, 1}};
    catalog_t *cat = s_open_with(2, colls, 2);
    shoal_err_t err;
    uint64_t ids1[] = {5, 6, 7};
    uint32_t old1[] = {CATALOG_LIST_NONE, 1, 2}, new1[] = {0, 3, 2};
    uint64_t t1 = 0, t2 = 0, t3 = 0, t4 = 0;
    cr_assert_eq(catalog_intent_put(cat, "a", ids1, old1, new1, 3, &t1, &err), 0, "%s", err.msg);
    cr_assert_eq(catalog_intent_put(cat, "b", ids1, old1, new1, 1, &t2, &err), 0, "%s", err.msg);
    cr_assert_eq(catalog_intent_put(cat, "a", ids1 + 1, old1 + 1, new1 + 1, 2, &t3, &err), 0);
    cr_assert_lt(t1, t2);
    cr_assert_lt(t2, t3);
    uint32_t bad = 4;
    cr_assert_eq(catalog_intent_put(cat, "a", ids1, old1, &bad, 1, &t4, &err), SHOAL_EINVAL);
    cr_assert_eq(catalog_intent_put(cat, "zz", ids1, old1, new1, 1, &t4, &err), SHOAL_ENOTFOUND);

    catalog_intent_t *in = NULL;
    size_t n = 0;
    cr_assert_eq(catalog_intents(cat, "a", &in, &n, &err), 0, "%s", err.msg);
    cr_assert_eq(n, 2);
    cr_assert_eq(in[0].txn, t1);
    cr_assert_eq(in[1].txn, t3);
    cr_assert_eq(in[0].n, 3);
    for (size_t i = 0; i < 3; i++) {
        cr_assert_eq(in[0].ids[i], ids1[i]);
        cr_assert_eq(in[0].old_lists[i], old1[i]);
        cr_assert_eq(in[0].new_lists[i], new1[i]);
    }
    cr_assert_eq(in[1].n, 2);
    cr_assert_eq(in[1].ids[0], 6);
    cr_assert_eq(in[1].new_lists[1], 2);
    catalog_intents_free(in, n);

    cr_assert_eq(catalog_intent_clear(cat, "a", t1, &err), 0, "%s", err.msg);
    cr_assert_eq(catalog_intents(cat, "a", &in, &n, &err), 0);
    cr_assert_eq(n, 1);
    cr_assert_eq(in[0].txn, t3);
    catalog_intents_free(in, n);
    cr_assert_eq(catalog_intents(cat, "zz", &in, &n, &err), SHOAL_ENOTFOUND);

    /* After a reopen the numbers keep increasing past the largest stored. */
    cat = s_reopen(&cat);
    cr_assert_eq(catalog_intents(cat, "b", &in, &n, &err), 0);
    cr_assert_eq(n, 1);
    cr_assert_eq(in[0].txn, t2);
    cr_assert_eq(in[0].n, 1);
    catalog_intents_free(in, n);
    cr_assert_eq(catalog_intent_put(cat, "b", ids1, old1, new1, 0, &t4, &err), 0, "%s", err.msg);
    cr_assert_gt(t4, t3);
    cr_assert_eq(catalog_intents(cat, "b", &in, &n, &err), 0);
    cr_assert_eq(n, 2);
    cr_assert_eq(in[1].txn, t4);
    cr_assert_eq(in[1].n, 0);
    catalog_intents_free(in, n);
    catalog_close(&cat);
}

/* A delete's intent: new lists CATALOG_LIST_NONE, stored and read back across a reopen. */
Test(catalog, delete_intent_round_trips)
{
    const s_coll_spec_t colls[] = {{"a", 2, 4, 1}};
    catalog_t *cat = s_open_with(2, colls, 1);
    shoal_err_t err;
    uint64_t ids[] = {11, 12};
    uint32_t old[] = {1, 3}, none[] = {CATALOG_LIST_NONE, CATALOG_LIST_NONE};
    uint64_t txn = 0;
    cr_assert_eq(catalog_intent_put(cat, "a", ids, old, none, 2, &txn, &err), 0, "%s", err.msg);
    cat = s_reopen(&cat);
    catalog_intent_t *in = NULL;
    size_t n = 0;
    cr_assert_eq(catalog_intents(cat, "a", &in, &n, &err), 0, "%s", err.msg);
    cr_assert_eq(n, 1);
    cr_assert_eq(in[0].txn, txn);
    cr_assert_eq(in[0].n, 2);
    for (size_t i = 0; i < 2; i++) {
        cr_assert_eq(in[0].ids[i], ids[i]);
        cr_assert_eq(in[0].old_lists[i], old[i]);
        cr_assert_eq(in[0].new_lists[i], CATALOG_LIST_NONE);
    }
    catalog_intents_free(in, n);
    catalog_close(&cat);
}

Test(catalog, drop_then_recreate_is_clean)
{
    /* docs2 shares a prefix with docs: it must survive the drop */
    const s_coll_spec_t colls[] = {{"docs", 2, 3, 1}, {"docs2", 2, 3, 1}};
    catalog_t *cat = s_open_with(2, colls, 2);
    uint64_t ids[] = {1, 2, 3};
    uint32_t lists[] = {0, 1, 2};
    s_upsert(cat, "docs", ids, lists, 3);
    s_upsert(cat, "docs2", ids, lists, 3);
    uint64_t txn;
    shoal_err_t err;
    cr_assert_eq(catalog_intent_put(cat, "docs", ids, lists, lists, 3, &txn, &err), 0);
    cr_assert_eq(catalog_drop(cat, "docs", &err), 0, "%s", err.msg);
    cr_assert_eq(catalog_lookup(cat, "docs", ids, 3, lists, &err), SHOAL_ENOTFOUND);
    s_create(cat, "docs", 2, 3);
    const catalog_coll_t *c = catalog_find(cat, "docs");
    cr_assert_eq(c->trained, 0);
    cr_assert_eq(c->count, 0);
    uint32_t got[3];
    cr_assert_eq(catalog_lookup(cat, "docs", ids, 3, got, &err), 0, "%s", err.msg);
    for (size_t i = 0; i < 3; i++)
        cr_assert_eq(got[i], CATALOG_LIST_NONE);
    for (uint32_t l = 0; l < 3; l++)
        s_expect_list(cat, "docs", l, NULL, 0);
    catalog_intent_t *in = NULL;
    size_t n = 9;
    cr_assert_eq(catalog_intents(cat, "docs", &in, &n, &err), 0);
    cr_assert_eq(n, 0);
    catalog_intents_free(in, n);

    cat = s_reopen(&cat);
    c = catalog_find(cat, "docs");
    cr_assert_eq(c->trained, 0);
    cr_assert_eq(c->count, 0);
    cr_assert_eq(catalog_lookup(cat, "docs", ids, 3, got, &err), 0);
    cr_assert_eq(got[0], CATALOG_LIST_NONE);
    const catalog_coll_t *d2 = catalog_find(cat, "docs2");
    cr_assert_eq(d2->trained, 1);
    cr_assert_eq(d2->count, 3);
    cr_assert_eq(catalog_lookup(cat, "docs2", ids, 3, got, &err), 0);
    cr_assert_eq(got[2], 2);
    catalog_close(&cat);
}

/* Writes one raw value with kv_put, bypassing the catalog. */
static void s_raw_put(const void *key, size_t klen, const void *val, size_t vlen)
{
    shoal_err_t err;
    kv_t *kv = kv_open(s_dir, 1, &err);
    cr_assert_not_null(kv, "%s", err.msg);
    cr_assert_eq(kv_put(kv, key, klen, val, vlen, 1, &err), 0, "%s", err.msg);
    kv_close(&kv);
}

static void s_expect_open_fails(int code, const char *needle)
{
    shoal_err_t err;
    catalog_t *cat = catalog_open(s_dir, &err);
    cr_assert_null(cat);
    cr_assert_eq(err.code, code, "code %d (%s)", err.code, err.msg);
    cr_assert(strstr(err.msg, needle), "message \"%s\" lacks \"%s\"", err.msg, needle);
}

Test(catalog, corrupt_collection_record_refused)
{
    catalog_t *cat = s_open();
    s_create(cat, "docs", 2, 3);
    catalog_close(&cat);
    s_raw_put("C/docs", 7, "garbage", 7);
    s_expect_open_fails(SHOAL_ECORRUPT, "C/docs");
}

/* Little-endian u32 at p. */
static void s_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

Test(catalog, oversized_collection_record_refused)
{
    catalog_t *cat = s_open();
    catalog_close(&cat);
    /* nlist 2^31 x dim 2^31+1: the centroid bytes overflow a size_t. */
    uint8_t val[36] = {0};
    const uint32_t fields[] = {0x4c4f4343u, CATALOG_FORMAT_VERSION, 0x80000001u, 0, 0x80000000u,
                               0, 0, 1, 0};
    for (size_t i = 0; i < 9; i++)
        s_le32(val + 4 * i, fields[i]);
    s_raw_put("C/huge", 7, val, sizeof val);
    s_expect_open_fails(SHOAL_ECORRUPT, "C/huge");

    /* catalog_create refuses the same parameters. */
    s_remove_tree(s_dir);
    mkdir(s_dir, 0755);
    cat = s_open();
    catalog_coll_t p;
    memset(&p, 0, sizeof p);
    snprintf(p.name, sizeof p.name, "huge");
    p.dim = 0x80000001u;
    p.nlist = 0x80000000u;
    p.nprobe = 1;
    shoal_err_t err;
    cr_assert_eq(catalog_create(cat, &p, &err), SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "huge") && strstr(err.msg, "nlist"), "%s", err.msg);
    cr_assert_eq(catalog_coll_count(cat), 0);
    catalog_close(&cat);
}

Test(catalog, corrupt_trained_record_refused)
{
    const s_coll_spec_t colls[] = {{"docs", 2, 3, 1}};
    catalog_t *cat = s_open_with(2, colls, 1);
    catalog_close(&cat);
    uint8_t short_val[20] = {0};
    s_raw_put("T/docs", 7, short_val, sizeof short_val);
    s_expect_open_fails(SHOAL_ECORRUPT, "T/docs");
}

Test(catalog, corrupt_count_refused)
{
    const s_coll_spec_t colls[] = {{"docs", 2, 3, 0}};
    catalog_t *cat = s_open_with(1, colls, 1);
    catalog_close(&cat);
    /* A count for list 7 of a 3-list collection. */
    uint8_t nkey[] = {'N', '/', 'd', 'o', 'c', 's', 0, 0, 0, 0, 7};
    uint8_t cnt[8] = {1};
    s_raw_put(nkey, sizeof nkey, cnt, sizeof cnt);
    s_expect_open_fails(SHOAL_ECORRUPT, "N/docs/list 7");
}

Test(catalog, bad_intent_value_reported)
{
    const s_coll_spec_t colls[] = {{"docs", 2, 3, 0}};
    catalog_t *cat = s_open_with(1, colls, 1);
    catalog_close(&cat);
    uint8_t xkey[] = {'X', '/', 'd', 'o', 'c', 's', 0, 0, 0, 0, 0, 0, 0, 0, 9};
    s_raw_put(xkey, sizeof xkey, "short", 5);
    cat = s_open(); /* intents are read on demand */
    catalog_intent_t *in = NULL;
    size_t n = 0;
    shoal_err_t err;
    cr_assert_eq(catalog_intents(cat, "docs", &in, &n, &err), SHOAL_ECORRUPT);
    cr_assert(strstr(err.msg, "X/docs/txn 9"), "%s", err.msg);
    cr_assert_null(in);
    /* The next txn is past the stored one all the same. */
    uint64_t id = 1, txn = 0;
    uint32_t none = CATALOG_LIST_NONE, zero = 0;
    cr_assert_eq(catalog_intent_put(cat, "docs", &id, &none, &zero, 1, &txn, &err), 0);
    cr_assert_eq(txn, 10);
    catalog_close(&cat);
}

Test(catalog, other_format_version_refused)
{
    uint8_t rec[12];
    memcpy(rec, "SHOALCAT", 8);
    rec[8] = 99;
    rec[9] = rec[10] = rec[11] = 0;
    s_raw_put("F", 1, rec, sizeof rec);
    s_expect_open_fails(SHOAL_EFORMAT, "99");
}

Test(catalog, foreign_database_refused)
{
    s_raw_put("hello", 5, "world", 5);
    s_expect_open_fails(SHOAL_EFORMAT, "format record");
    s_remove_tree(s_dir);
    mkdir(s_dir, 0755);
    s_raw_put("F", 1, "SHOALDB1\1\0\0\0", 12);
    s_expect_open_fails(SHOAL_EFORMAT, "SHOALCAT");
}

Test(catalog, locked_by_another_open)
{
    catalog_t *cat = s_open();
    shoal_err_t err;
    catalog_t *again = catalog_open(s_dir, &err);
    cr_assert_null(again);
    cr_assert_eq(err.code, SHOAL_EIO, "%d %s", err.code, err.msg);
    catalog_close(&cat);
}
