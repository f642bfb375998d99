/*
 * test_catalog.c - the coordinator's catalog: collections created, found and
 * dropped; everything present again after a close and reopen (registry,
 * parameters, trained state, counts, id map, membership, intents); the shard
 * registry rules, shard roles (add, drain, remove, re-add) and start-up lists
 * naming removed shards; id map upserts and deletes keeping counts and
 * membership in step (also against a model over random batches); intents and
 * their txn numbers; moves (planned, started, switched, aborted) and orphans,
 * persisted and dropped with their collection; corrupt records (V/ and D/
 * among them), foreign databases and other format versions refused with the
 * key or version named; drop then recreate leaving nothing.
 *
 * Catalogs live in mkdtemp directories under $SHOAL_TMP (or /tmp), removed
 * after each test.
 */
#include "net/kv.h"
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
    /* Fewer given (a command line older than a shard added online): the registry stays. */
    cr_assert_eq(catalog_shards_set(cat, s_eps, 1, &err), 0, "%s", err.msg);
    cr_assert_eq(catalog_shard_count(cat), 2);
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
    cr_assert_eq(catalog_shards_set(cat, s_eps, 2, &err), 0, "%s", err.msg);
    cr_assert_eq(catalog_shard_count(cat), 3);
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

/* ------------------------------------------------------------------------ */
/* Shard roles, moves and orphans                                           */
/* ------------------------------------------------------------------------ */

/* The roles of shards 0.. n-1, and how many are live, are these. */
static void s_expect_roles(const catalog_t *cat, const int *roles, size_t n)
{
    cr_assert_eq(catalog_shard_count(cat), n, "registry of %zu shards, expected %zu",
                 catalog_shard_count(cat), n);
    size_t live = 0;
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(catalog_shard_role(cat, i), roles[i], "shard %zu role %d, expected %d", i,
                     catalog_shard_role(cat, i), roles[i]);
        live += roles[i] == CATALOG_SHARD_LIVE;
    }
    cr_assert_eq(catalog_shards_live(cat), live, "%zu live shards, expected %zu",
                 catalog_shards_live(cat), live);
}

Test(catalog, shard_add_and_roles)
{
    catalog_t *cat = s_open();
    s_set_shards(cat, 2);
    shoal_err_t err;
    size_t at = 99;
    cr_assert_eq(catalog_shard_add(cat, s_eps[2], &at, &err), 0, "%s", err.msg);
    cr_assert_eq(at, 2);
    cr_assert_str_eq(catalog_shard(cat, 2), s_eps[2]);
    cr_assert_eq(catalog_shard_find(cat, s_eps[2]), 2);
    cr_assert_eq(catalog_shard_find(cat, s_eps[0]), 0);
    cr_assert_eq(catalog_shard_find(cat, "tcp://nope:1"), SIZE_MAX);
    const int live3[] = {CATALOG_SHARD_LIVE, CATALOG_SHARD_LIVE, CATALOG_SHARD_LIVE};
    s_expect_roles(cat, live3, 3);

    /* A live endpoint again, a bad one: refused, nothing added. */
    at = 99;
    cr_assert_eq(catalog_shard_add(cat, s_eps[0], &at, &err), SHOAL_EEXIST);
    cr_assert(strstr(err.msg, s_eps[0]), "%s", err.msg);
    cr_assert_eq(at, 99);
    cr_assert_eq(catalog_shard_add(cat, "", &at, &err), SHOAL_EINVAL);
    cr_assert_eq(catalog_shard_count(cat), 3);

    /* Roles: out of range refused; draining and removed are not live. */
    cr_assert_eq(catalog_shard_role_set(cat, 3, CATALOG_SHARD_DRAINING, &err), SHOAL_EINVAL);
    cr_assert_eq(catalog_shard_role_set(cat, 0, CATALOG_SHARD_REMOVED + 1, &err), SHOAL_EINVAL);
    cr_assert_eq(catalog_shard_role_set(cat, 0, -1, &err), SHOAL_EINVAL);
    cr_assert_eq(catalog_shard_role_set(cat, 1, CATALOG_SHARD_DRAINING, &err), 0, "%s", err.msg);
    cr_assert_eq(catalog_shard_role_set(cat, 2, CATALOG_SHARD_REMOVED, &err), 0, "%s", err.msg);
    const int roles[] = {CATALOG_SHARD_LIVE, CATALOG_SHARD_DRAINING, CATALOG_SHARD_REMOVED};
    s_expect_roles(cat, roles, 3);
    cr_assert_eq(catalog_shard_role(cat, 3), CATALOG_SHARD_REMOVED); /* out of range */
    /* A draining shard is still in the registry: adding it is EEXIST too. */
    cr_assert_eq(catalog_shard_add(cat, s_eps[1], &at, &err), SHOAL_EEXIST);
    cr_assert(strstr(err.msg, s_eps[1]), "%s", err.msg);
    /* The removed endpoint is still found, at its index. */
    cr_assert_eq(catalog_shard_find(cat, s_eps[2]), 2);

    cat = s_reopen(&cat);
    s_expect_roles(cat, roles, 3);
    for (size_t i = 0; i < 3; i++)
        cr_assert_str_eq(catalog_shard(cat, i), s_eps[i]);

    /* A new shard appended keeps the others' roles (also across a reopen). */
    cr_assert_eq(catalog_shard_add(cat, "tcp://d:7702", &at, &err), 0, "%s", err.msg);
    cr_assert_eq(at, 3);
    const int roles4[] = {CATALOG_SHARD_LIVE, CATALOG_SHARD_DRAINING, CATALOG_SHARD_REMOVED,
                          CATALOG_SHARD_LIVE};
    s_expect_roles(cat, roles4, 4);
    cat = s_reopen(&cat);
    s_expect_roles(cat, roles4, 4);

    /* The removed endpoint comes back live at its old index, for good. */
    at = 99;
    cr_assert_eq(catalog_shard_add(cat, s_eps[2], &at, &err), 0, "%s", err.msg);
    cr_assert_eq(at, 2);
    const int back[] = {CATALOG_SHARD_LIVE, CATALOG_SHARD_DRAINING, CATALOG_SHARD_LIVE,
                        CATALOG_SHARD_LIVE};
    s_expect_roles(cat, back, 4);
    cr_assert_str_eq(catalog_shard(cat, 2), s_eps[2]);
    cat = s_reopen(&cat);
    s_expect_roles(cat, back, 4);
    cr_assert_eq(catalog_shard_add(cat, s_eps[2], &at, &err), SHOAL_EEXIST);

    /* Draining back to live persists too. */
    cr_assert_eq(catalog_shard_role_set(cat, 1, CATALOG_SHARD_LIVE, &err), 0, "%s", err.msg);
    cat = s_reopen(&cat);
    const int all_live[] = {CATALOG_SHARD_LIVE, CATALOG_SHARD_LIVE, CATALOG_SHARD_LIVE,
                            CATALOG_SHARD_LIVE};
    s_expect_roles(cat, all_live, 4);
    catalog_close(&cat);
}

/* catalog_shards_set against a registry with a removed shard (b, index 1). */
Test(catalog, shards_set_skips_removed)
{
    catalog_t *cat = s_open();
    s_set_shards(cat, 3);
    shoal_err_t err;
    cr_assert_eq(catalog_shard_role_set(cat, 1, CATALOG_SHARD_REMOVED, &err), 0, "%s", err.msg);
    const int roles[] = {CATALOG_SHARD_LIVE, CATALOG_SHARD_REMOVED, CATALOG_SHARD_LIVE};

    /* Naming the removed shard (anywhere), or leaving it out: no error, nothing changes. */
    const char *with_b[] = {"tcp://a:7702", "tcp://b:7702", "tcp://c:7702"};
    const char *without_b[] = {"tcp://a:7702", "tcp://c:7702"};
    const char *b_last[] = {"tcp://a:7702", "tcp://c:7702", "tcp://b:7702"};
    const char *prefix_b[] = {"tcp://a:7702", "tcp://b:7702"};
    const char *const *lists[] = {with_b, without_b, b_last, prefix_b, s_eps};
    const size_t lens[] = {3, 2, 3, 2, 1};
    for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++) {
        cr_assert_eq(catalog_shards_set(cat, lists[k], lens[k], &err), 0, "list %zu: %s", k,
                     err.msg);
        s_expect_roles(cat, roles, 3);
        for (size_t i = 0; i < 3; i++)
            cr_assert_str_eq(catalog_shard(cat, i), s_eps[i], "list %zu shard %zu", k, i);
    }

    /* Reordered or replaced: still refused, naming the first difference. */
    const char *reordered[] = {"tcp://c:7702", "tcp://a:7702"};
    cr_assert_eq(catalog_shards_set(cat, reordered, 2, &err), SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "shard 0") && strstr(err.msg, "tcp://a:7702") &&
                  strstr(err.msg, "tcp://c:7702"),
              "%s", err.msg);
    const char *replaced[] = {"tcp://a:7702", "tcp://b:7702", "tcp://x:7702"};
    cr_assert_eq(catalog_shards_set(cat, replaced, 3, &err), SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "shard 2") && strstr(err.msg, "tcp://c:7702") &&
                  strstr(err.msg, "tcp://x:7702"),
              "%s", err.msg);
    const char *dup[] = {"tcp://a:7702", "tcp://c:7702", "tcp://a:7702"};
    cr_assert_eq(catalog_shards_set(cat, dup, 3, &err), SHOAL_EINVAL);
    s_expect_roles(cat, roles, 3);

    cat = s_reopen(&cat);
    s_expect_roles(cat, roles, 3);
    cr_assert_eq(catalog_shards_set(cat, with_b, 3, &err), 0, "%s", err.msg);
    s_expect_roles(cat, roles, 3);

    /* Appending still works past the removed one, which stays removed. */
    const char *more[] = {"tcp://a:7702", "tcp://b:7702", "tcp://c:7702", "tcp://d:7702"};
    cr_assert_eq(catalog_shards_set(cat, more, 4, &err), 0, "%s", err.msg);
    const int roles4[] = {CATALOG_SHARD_LIVE, CATALOG_SHARD_REMOVED, CATALOG_SHARD_LIVE,
                          CATALOG_SHARD_LIVE};
    s_expect_roles(cat, roles4, 4);
    cat = s_reopen(&cat);
    s_expect_roles(cat, roles4, 4);
    cr_assert_str_eq(catalog_shard(cat, 3), "tcp://d:7702");
    catalog_close(&cat);
}

/* Creates name (dim 2, nlist lists, replication R, W 1), untrained. */
static int s_create_r(catalog_t *cat, const char *name, uint32_t nlist, uint32_t R,
                      shoal_err_t *err)
{
    catalog_coll_t p;
    memset(&p, 0, sizeof p);
    snprintf(p.name, sizeof p.name, "%s", name);
    p.dim = 2;
    p.metric = SHOAL_METRIC_L2;
    p.nlist = nlist;
    p.nprobe = 1;
    p.replication = R;
    p.write_quorum = 1;
    return catalog_create(cat, &p, err);
}

Test(catalog, create_replication_counts_live_shards)
{
    catalog_t *cat = s_open();
    s_set_shards(cat, 3);
    shoal_err_t err;
    cr_assert_eq(catalog_shard_role_set(cat, 2, CATALOG_SHARD_DRAINING, &err), 0, "%s", err.msg);
    cr_assert_eq(s_create_r(cat, "r3", 4, 3, &err), SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "replication 3"), "%s", err.msg);
    cr_assert_null(catalog_find(cat, "r3"));
    cr_assert_eq(s_create_r(cat, "r2", 4, 2, &err), 0, "%s", err.msg);
    cr_assert_eq(catalog_shard_role_set(cat, 1, CATALOG_SHARD_REMOVED, &err), 0, "%s", err.msg);
    cr_assert_eq(s_create_r(cat, "r2b", 4, 2, &err), SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "replication 2"), "%s", err.msg);
    cr_assert_eq(s_create_r(cat, "r1", 4, 1, &err), 0, "%s", err.msg);
    /* The count is read again after a reopen, and a shard added online counts. */
    cat = s_reopen(&cat);
    cr_assert_eq(s_create_r(cat, "r2b", 4, 2, &err), SHOAL_EINVAL);
    size_t at = 0;
    cr_assert_eq(catalog_shard_add(cat, "tcp://d:7702", &at, &err), 0, "%s", err.msg);
    cr_assert_eq(s_create_r(cat, "r2b", 4, 2, &err), 0, "%s", err.msg);
    cr_assert_eq(s_create_r(cat, "r3", 4, 3, &err), SHOAL_EINVAL);
    cr_assert_eq(catalog_coll_count(cat), 3);
    catalog_close(&cat);
}

/* Trains name with replica r of list l on shard (l + r) % shards. */
static void s_train_r(catalog_t *cat, const char *name)
{
    const catalog_coll_t *c = catalog_find(cat, name);
    cr_assert_not_null(c);
    size_t nshards = catalog_shard_count(cat), R = c->replication;
    float *cent = malloc(sizeof(float) * c->nlist * c->dim);
    uint32_t *own = malloc(sizeof(uint32_t) * c->nlist * R);
    cr_assert(cent && own);
    for (size_t i = 0; i < (size_t)c->nlist * c->dim; i++)
        cent[i] = (float)i;
    for (size_t j = 0; j < c->nlist * R; j++)
        own[j] = (uint32_t)((j / R + j % R) % nshards);
    shoal_err_t err;
    cr_assert_eq(catalog_set_trained(cat, name, cent, own, &err), 0, "%s", err.msg);
    free(cent);
    free(own);
}

/*
 * A catalog of 4 shards (the fourth added online) with "mv": nlist 8,
 * replication R, replica r of list l on shard (l + r) % 4.
 */
static catalog_t *s_open_moves(uint32_t R)
{
    catalog_t *cat = s_open();
    s_set_shards(cat, 3);
    shoal_err_t err;
    size_t at = 0;
    cr_assert_eq(catalog_shard_add(cat, "tcp://d:7702", &at, &err), 0, "%s", err.msg);
    cr_assert_eq(at, 3);
    cr_assert_eq(s_create_r(cat, "mv", 8, R, &err), 0, "%s", err.msg);
    s_train_r(cat, "mv");
    return cat;
}

/* Replica r of list l has move state `state` (and, when planned, target `to`). */
static void s_expect_move(const catalog_coll_t *c, uint32_t l, uint32_t r, uint8_t state,
                          uint32_t to)
{
    size_t j = (size_t)l * c->replication + r;
    cr_assert_eq(c->move_state[j], state, "list %u replica %u: move state %u, expected %u", l, r,
                 c->move_state[j], state);
    if (state)
        cr_assert_eq(c->move_to[j], to, "list %u replica %u: move to %u, expected %u", l, r,
                     c->move_to[j], to);
}

/* catalog_extras(c, l) is exactly want[0..n). */
static void s_expect_extras(const catalog_coll_t *c, uint32_t l, const uint32_t *want, size_t n)
{
    uint32_t got[8];
    size_t m = catalog_extras(c, l, got, 8);
    cr_assert_eq(m, n, "list %u: %zu extra copies, expected %zu", l, m, n);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(got[i], want[i], "list %u extra %zu on shard %u, expected %u", l, i, got[i],
                     want[i]);
}

/* c's orphans are exactly want[0..n), in order. */
static void s_expect_orphans(const catalog_coll_t *c, const catalog_orphan_t *want, size_t n)
{
    cr_assert_eq(c->norphans, n, "%u orphans, expected %zu", c->norphans, n);
    for (size_t i = 0; i < n; i++)
        cr_assert(c->orphans[i].list == want[i].list && c->orphans[i].shard == want[i].shard &&
                      c->orphans[i].kind == want[i].kind,
                  "orphan %zu is list %u shard %u kind %u, expected %u %u %u", i,
                  c->orphans[i].list, c->orphans[i].shard, c->orphans[i].kind, want[i].list,
                  want[i].shard, want[i].kind);
}

/* Every replica of c is on shard (l + r) % 4 but those listed in (l, r, shard) triples. */
static void s_expect_owners(const catalog_coll_t *c, const uint32_t (*moved)[3], size_t nmoved)
{
    for (uint32_t l = 0; l < c->nlist; l++) {
        for (uint32_t r = 0; r < c->replication; r++) {
            uint32_t want = (l + r) % 4;
            for (size_t k = 0; k < nmoved; k++)
                if (moved[k][0] == l && moved[k][1] == r)
                    want = moved[k][2];
            cr_assert_eq(catalog_owner(c, l, r), want,
                         "list %u replica %u on shard %u, expected %u", l, r,
                         catalog_owner(c, l, r), want);
        }
    }
}

/* R 1: a plan queues; a second plan replaces the queued moves but keeps a copying one. */
Test(catalog, moves_plan_queues_and_replaces)
{
    catalog_t *cat = s_open_moves(1);
    const catalog_coll_t *c = catalog_find(cat, "mv");
    shoal_err_t err;
    cr_assert_eq(c->nmoves, 0);
    cr_assert_eq(c->norphans, 0);
    for (uint32_t l = 0; l < 8; l++) {
        s_expect_move(c, l, 0, 0, 0);
        s_expect_extras(c, l, NULL, 0);
    }

    const catalog_move_t first[] = {{0, 0, 1}, {1, 0, 2}, {2, 0, 3}};
    cr_assert_eq(catalog_moves_plan(cat, "mv", first, 3, &err), 0, "%s", err.msg);
    cr_assert_eq(c->nmoves, 3);
    s_expect_move(c, 0, 0, CATALOG_MOVE_QUEUED, 1);
    s_expect_move(c, 1, 0, CATALOG_MOVE_QUEUED, 2);
    s_expect_move(c, 2, 0, CATALOG_MOVE_QUEUED, 3);
    s_expect_move(c, 3, 0, 0, 0);
    s_expect_extras(c, 1, NULL, 0); /* a queued target holds nothing yet */
    s_expect_owners(c, NULL, 0);    /* planning moves nothing */

    /* Start: copying, and the target is an extra copy of the list. */
    cr_assert_eq(catalog_move_start(cat, "mv", 1, 0, &err), 0, "%s", err.msg);
    s_expect_move(c, 1, 0, CATALOG_MOVE_COPYING, 2);
    const uint32_t x2[] = {2};
    s_expect_extras(c, 1, x2, 1);
    uint32_t none[1];
    cr_assert_eq(catalog_extras(c, 1, none, 0), 1); /* the count past cap */
    cr_assert_eq(c->nmoves, 3);
    cr_assert_eq(catalog_move_start(cat, "mv", 1, 0, &err), SHOAL_EINVAL); /* copying already */
    cr_assert_eq(catalog_move_start(cat, "mv", 3, 0, &err), SHOAL_EINVAL); /* no move */
    cr_assert_eq(catalog_move_start(cat, "mv", 8, 0, &err), SHOAL_EINVAL);
    cr_assert_eq(catalog_move_start(cat, "mv", 0, 1, &err), SHOAL_EINVAL);
    cr_assert_eq(catalog_move_start(cat, "nope", 0, 0, &err), SHOAL_ENOTFOUND);

    /* The second plan: list 0 retargeted, list 2 dropped, list 4 new; list 1 keeps copying to 2. */
    const catalog_move_t second[] = {{0, 0, 2}, {1, 0, 3}, {4, 0, 1}};
    cr_assert_eq(catalog_moves_plan(cat, "mv", second, 3, &err), 0, "%s", err.msg);
    cr_assert_eq(c->nmoves, 3);
    s_expect_move(c, 0, 0, CATALOG_MOVE_QUEUED, 2);
    s_expect_move(c, 1, 0, CATALOG_MOVE_COPYING, 2);
    s_expect_move(c, 2, 0, 0, 0);
    s_expect_move(c, 4, 0, CATALOG_MOVE_QUEUED, 1);
    s_expect_extras(c, 1, x2, 1);

    /* Out of range: refused, nothing changed. */
    const catalog_move_t bad_list[] = {{0, 0, 3}, {8, 0, 1}};
    const catalog_move_t bad_rep[] = {{0, 1, 1}};
    const catalog_move_t bad_to[] = {{0, 0, 4}};
    cr_assert_eq(catalog_moves_plan(cat, "mv", bad_list, 2, &err), SHOAL_EINVAL);
    cr_assert_eq(catalog_moves_plan(cat, "mv", bad_rep, 1, &err), SHOAL_EINVAL);
    cr_assert_eq(catalog_moves_plan(cat, "mv", bad_to, 1, &err), SHOAL_EINVAL);
    cr_assert_eq(catalog_moves_plan(cat, "nope", second, 1, &err), SHOAL_ENOTFOUND);
    cr_assert_eq(s_create_r(cat, "raw", 8, 1, &err), 0, "%s", err.msg);
    cr_assert_eq(catalog_moves_plan(cat, "raw", second, 1, &err), SHOAL_EINVAL); /* untrained */
    c = catalog_find(cat, "mv"); /* a create invalidates collection pointers */
    cr_assert_eq(c->nmoves, 3);
    s_expect_move(c, 0, 0, CATALOG_MOVE_QUEUED, 2);

    cat = s_reopen(&cat);
    c = catalog_find(cat, "mv");
    cr_assert_eq(c->nmoves, 3);
    s_expect_move(c, 0, 0, CATALOG_MOVE_QUEUED, 2);
    s_expect_move(c, 1, 0, CATALOG_MOVE_COPYING, 2);
    s_expect_move(c, 2, 0, 0, 0);
    s_expect_move(c, 4, 0, CATALOG_MOVE_QUEUED, 1);
    s_expect_extras(c, 1, x2, 1);
    s_expect_owners(c, NULL, 0);

    /* An empty plan forgets the queued moves only. */
    cr_assert_eq(catalog_moves_plan(cat, "mv", NULL, 0, &err), 0, "%s", err.msg);
    cr_assert_eq(c->nmoves, 1);
    cat = s_reopen(&cat);
    c = catalog_find(cat, "mv");
    cr_assert_eq(c->nmoves, 1);
    for (uint32_t l = 0; l < 8; l++)
        s_expect_move(c, l, 0, l == 1 ? CATALOG_MOVE_COPYING : 0, 2);
    catalog_close(&cat);
}

/*
 * R 2: switch, abort (requeued or not), orphans recorded and forgotten, a
 * stale replica not switched; all of it across reopens. Replicas of list l
 * start on shards l % 4 and (l + 1) % 4.
 */
Test(catalog, move_switch_abort_and_orphans)
{
    catalog_t *cat = s_open_moves(2);
    const catalog_coll_t *c = catalog_find(cat, "mv");
    shoal_err_t err;
    /* list 3 on (3, 0): replica 1 to 2; list 5 on (1, 2): replica 0 to 3; list 6 on (2, 3):
       replica 0 to 0 */
    const catalog_move_t plan[] = {{3, 1, 2}, {5, 0, 3}, {6, 0, 0}};
    cr_assert_eq(catalog_moves_plan(cat, "mv", plan, 3, &err), 0, "%s", err.msg);
    cr_assert_eq(c->nmoves, 3);

    cr_assert_eq(catalog_move_start(cat, "mv", 3, 1, &err), 0, "%s", err.msg);
    const uint32_t x2[] = {2}, x0[] = {0}, x3[] = {3};
    s_expect_extras(c, 3, x2, 1);
    cr_assert_eq(catalog_move_switch(cat, "mv", 3, 1, &err), 0, "%s", err.msg);
    const uint32_t moved[][3] = {{3, 1, 2}};
    s_expect_owners(c, moved, 1);
    s_expect_move(c, 3, 1, 0, 0);
    cr_assert_eq(c->nmoves, 2);
    const catalog_orphan_t o1[] = {{3, 0, CATALOG_ORPHAN_CURRENT}};
    s_expect_orphans(c, o1, 1);
    s_expect_extras(c, 3, x0, 1); /* the old owner, till it is dropped */

    cr_assert_eq(catalog_move_start(cat, "mv", 6, 0, &err), 0, "%s", err.msg);
    s_expect_extras(c, 6, x0, 1);

    /* Switching what is not copying, aborting what is not copying: refused, nothing changed. */
    cr_assert_eq(catalog_move_switch(cat, "mv", 5, 0, &err), SHOAL_EINVAL); /* queued */
    cr_assert_eq(catalog_move_switch(cat, "mv", 0, 0, &err), SHOAL_EINVAL); /* no move */
    cr_assert_eq(catalog_move_switch(cat, "mv", 3, 1, &err), SHOAL_EINVAL); /* switched */
    cr_assert_eq(catalog_move_switch(cat, "mv", 6, 2, &err), SHOAL_EINVAL); /* no replica 2 */
    cr_assert_eq(catalog_move_abort(cat, "mv", 5, 0, 1, &err), SHOAL_EINVAL);
    cr_assert_eq(catalog_move_abort(cat, "mv", 0, 0, 0, &err), SHOAL_EINVAL);
    s_expect_owners(c, moved, 1);
    s_expect_move(c, 5, 0, CATALOG_MOVE_QUEUED, 3);
    s_expect_move(c, 6, 0, CATALOG_MOVE_COPYING, 0);
    s_expect_orphans(c, o1, 1);

    /* The new owner in T/, the orphan in D/, the moves in V/ all come back. */
    cat = s_reopen(&cat);
    c = catalog_find(cat, "mv");
    s_expect_owners(c, moved, 1);
    cr_assert_eq(c->nmoves, 2);
    s_expect_move(c, 3, 1, 0, 0);
    s_expect_move(c, 5, 0, CATALOG_MOVE_QUEUED, 3);
    s_expect_move(c, 6, 0, CATALOG_MOVE_COPYING, 0);
    s_expect_orphans(c, o1, 1);
    s_expect_extras(c, 3, x0, 1);
    s_expect_extras(c, 6, x0, 1);

    /* Abort, requeued: queued again, the partial copy a stale orphan. */
    cr_assert_eq(catalog_move_abort(cat, "mv", 6, 0, 1, &err), 0, "%s", err.msg);
    s_expect_move(c, 6, 0, CATALOG_MOVE_QUEUED, 0);
    cr_assert_eq(c->nmoves, 2);
    const catalog_orphan_t o2[] = {{3, 0, CATALOG_ORPHAN_CURRENT}, {6, 0, CATALOG_ORPHAN_STALE}};
    s_expect_orphans(c, o2, 2);
    s_expect_extras(c, 6, x0, 1);
    /* Abort, not requeued: the move is forgotten. */
    cr_assert_eq(catalog_move_start(cat, "mv", 5, 0, &err), 0, "%s", err.msg);
    cr_assert_eq(catalog_move_abort(cat, "mv", 5, 0, 0, &err), 0, "%s", err.msg);
    s_expect_move(c, 5, 0, 0, 0);
    cr_assert_eq(c->nmoves, 1);
    const catalog_orphan_t o3[] = {
        {3, 0, CATALOG_ORPHAN_CURRENT}, {5, 3, CATALOG_ORPHAN_STALE}, {6, 0, CATALOG_ORPHAN_STALE}};
    s_expect_orphans(c, o3, 3);
    s_expect_extras(c, 5, x3, 1);

    /* Orphans: dropped (kind 0) forgets; recorded again updates in place; bad ones refused. */
    cr_assert_eq(catalog_orphan_set(cat, "mv", 3, 0, 0, &err), 0, "%s", err.msg);
    s_expect_extras(c, 3, NULL, 0);
    cr_assert_eq(catalog_orphan_set(cat, "mv", 7, 1, CATALOG_ORPHAN_CURRENT, &err), 0, "%s",
                 err.msg);
    cr_assert_eq(catalog_orphan_set(cat, "mv", 7, 1, CATALOG_ORPHAN_STALE, &err), 0, "%s", err.msg);
    cr_assert_eq(catalog_orphan_set(cat, "mv", 8, 1, CATALOG_ORPHAN_STALE, &err), SHOAL_EINVAL);
    cr_assert_eq(catalog_orphan_set(cat, "mv", 7, 4, CATALOG_ORPHAN_STALE, &err), SHOAL_EINVAL);
    cr_assert_eq(catalog_orphan_set(cat, "mv", 7, 1, CATALOG_ORPHAN_STALE + 1, &err), SHOAL_EINVAL);
    cr_assert_eq(catalog_orphan_set(cat, "mv", 7, 1, -1, &err), SHOAL_EINVAL);
    cr_assert_eq(catalog_orphan_set(cat, "nope", 7, 1, 1, &err), SHOAL_ENOTFOUND);
    const catalog_orphan_t o4[] = {
        {5, 3, CATALOG_ORPHAN_STALE}, {6, 0, CATALOG_ORPHAN_STALE}, {7, 1, CATALOG_ORPHAN_STALE}};
    s_expect_orphans(c, o4, 3);
    const uint32_t x1[] = {1};
    s_expect_extras(c, 7, x1, 1);

    cat = s_reopen(&cat);
    c = catalog_find(cat, "mv");
    s_expect_orphans(c, o4, 3);
    cr_assert_eq(c->nmoves, 1);
    s_expect_move(c, 5, 0, 0, 0);
    s_expect_move(c, 6, 0, CATALOG_MOVE_QUEUED, 0);
    s_expect_extras(c, 3, NULL, 0);

    /* A replica that turned stale while copying is not switched. */
    cr_assert_eq(catalog_move_start(cat, "mv", 6, 0, &err), 0, "%s", err.msg);
    uint32_t l6 = 6, r0 = 0;
    cr_assert_eq(catalog_stale_set(cat, "mv", &l6, &r0, 1, 1, &err), 0, "%s", err.msg);
    cr_assert_eq(catalog_move_switch(cat, "mv", 6, 0, &err), SHOAL_EINVAL);
    cr_assert(strstr(err.msg, "stale"), "%s", err.msg);
    s_expect_owners(c, moved, 1);
    s_expect_move(c, 6, 0, CATALOG_MOVE_COPYING, 0);
    /* In sync again, it switches; the stale orphan on the target is now the replica. */
    cr_assert_eq(catalog_stale_set(cat, "mv", &l6, &r0, 1, 0, &err), 0, "%s", err.msg);
    cr_assert_eq(catalog_move_switch(cat, "mv", 6, 0, &err), 0, "%s", err.msg);
    const uint32_t moved2[][3] = {{3, 1, 2}, {6, 0, 0}};
    s_expect_owners(c, moved2, 2);
    cr_assert_eq(c->nmoves, 0);
    const catalog_orphan_t o5[] = {
        {5, 3, CATALOG_ORPHAN_STALE}, {6, 2, CATALOG_ORPHAN_CURRENT}, {7, 1, CATALOG_ORPHAN_STALE}};
    s_expect_orphans(c, o5, 3);
    const uint32_t x2only[] = {2};
    s_expect_extras(c, 6, x2only, 1);
    cat = s_reopen(&cat);
    c = catalog_find(cat, "mv");
    s_expect_owners(c, moved2, 2);
    cr_assert_eq(c->nmoves, 0);
    s_expect_orphans(c, o5, 3);
    catalog_close(&cat);
}

/*
 * A move whose target already holds a replica of the list is refused: once
 * switched it would put two replicas of the list on one shard, a T/ record
 * the loader (s_owners_check) refuses at the next open.
 */
Test(catalog, moves_plan_refuses_target_holding_replica)
{
    catalog_t *cat = s_open_moves(2);
    shoal_err_t err;
    /* list 3 is on shards 3 (replica 0) and 0 (replica 1) */
    const catalog_move_t onto_other[] = {{3, 1, 3}};
    const catalog_move_t onto_self[] = {{3, 0, 3}};
    const catalog_move_t ok_then_bad[] = {{5, 0, 3}, {3, 0, 0}};
    cr_assert_eq(catalog_moves_plan(cat, "mv", onto_other, 1, &err), SHOAL_EINVAL,
                 "list 3 replica 1 planned onto shard 3, which holds replica 0");
    cr_assert_eq(catalog_moves_plan(cat, "mv", onto_self, 1, &err), SHOAL_EINVAL,
                 "list 3 replica 0 planned onto its own shard");
    cr_assert_eq(catalog_moves_plan(cat, "mv", ok_then_bad, 2, &err), SHOAL_EINVAL,
                 "list 3 replica 0 planned onto shard 0, which holds replica 1");
    const catalog_coll_t *c = catalog_find(cat, "mv");
    cr_assert_eq(c->nmoves, 0);
    s_expect_move(c, 5, 0, 0, 0);
    catalog_close(&cat);
}

/* A drop takes V/ and D/ with it: the same name recreated and trained has no moves, no orphans. */
Test(catalog, drop_forgets_moves_and_orphans)
{
    catalog_t *cat = s_open_moves(1);
    shoal_err_t err;
    /* mv2 shares a prefix with mv: its moves and orphans must survive the drop */
    cr_assert_eq(s_create_r(cat, "mv2", 8, 1, &err), 0, "%s", err.msg);
    s_train_r(cat, "mv2");
    const catalog_move_t plan[] = {{0, 0, 1}, {1, 0, 2}, {4, 0, 3}};
    cr_assert_eq(catalog_moves_plan(cat, "mv", plan, 3, &err), 0, "%s", err.msg);
    cr_assert_eq(catalog_move_start(cat, "mv", 0, 0, &err), 0, "%s", err.msg);
    cr_assert_eq(catalog_move_start(cat, "mv", 1, 0, &err), 0, "%s", err.msg);
    cr_assert_eq(catalog_move_switch(cat, "mv", 1, 0, &err), 0, "%s", err.msg);
    cr_assert_eq(catalog_orphan_set(cat, "mv", 2, 3, CATALOG_ORPHAN_STALE, &err), 0, "%s", err.msg);
    cr_assert_eq(catalog_moves_plan(cat, "mv2", plan, 1, &err), 0, "%s", err.msg);
    cr_assert_eq(catalog_orphan_set(cat, "mv2", 1, 3, CATALOG_ORPHAN_CURRENT, &err), 0, "%s",
                 err.msg);
    const catalog_coll_t *c = catalog_find(cat, "mv");
    cr_assert_eq(c->nmoves, 2);
    cr_assert_eq(c->norphans, 2);

    cr_assert_eq(catalog_drop(cat, "mv", &err), 0, "%s", err.msg);
    /* Recreated untrained: a V/ or D/ key left behind would make the next open fail. */
    cr_assert_eq(s_create_r(cat, "mv", 8, 1, &err), 0, "%s", err.msg);
    cat = s_reopen(&cat);
    s_train_r(cat, "mv");
    c = catalog_find(cat, "mv");
    cr_assert_eq(c->nmoves, 0);
    cr_assert_eq(c->norphans, 0);
    cat = s_reopen(&cat);
    c = catalog_find(cat, "mv");
    cr_assert_eq(c->nmoves, 0);
    cr_assert_eq(c->norphans, 0);
    s_expect_owners(c, NULL, 0); /* T/ is the new one: list 1 back on shard 1 */
    for (uint32_t l = 0; l < 8; l++) {
        s_expect_move(c, l, 0, 0, 0);
        s_expect_extras(c, l, NULL, 0);
    }
    const catalog_coll_t *c2 = catalog_find(cat, "mv2");
    cr_assert_eq(c2->nmoves, 1);
    s_expect_move(c2, 0, 0, CATALOG_MOVE_QUEUED, 1);
    const catalog_orphan_t o2[] = {{1, 3, CATALOG_ORPHAN_CURRENT}};
    s_expect_orphans(c2, o2, 1);
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

/* Deletes one raw key with a kv batch, bypassing the catalog. */
static void s_raw_delete(const void *key, size_t klen)
{
    shoal_err_t err;
    kv_t *kv = kv_open(s_dir, 1, &err);
    cr_assert_not_null(kv, "%s", err.msg);
    kv_batch_t *batch = kv_batch_new();
    cr_assert_not_null(batch);
    kv_batch_delete(batch, key, klen);
    cr_assert_eq(kv_write(kv, batch, 1, &err), 0, "%s", err.msg);
    kv_batch_destroy(&batch);
    kv_close(&kv);
}

/* "<type>/docs\0" then list (u32 BE), then tail (tlen bytes) into key; returns the length. */
static size_t s_docs_key(uint8_t *key, char type, uint32_t list, const uint8_t *tail, size_t tlen)
{
    memcpy(key, (const char[]){type, '/', 'd', 'o', 'c', 's', 0}, 7);
    for (int i = 0; i < 4; i++)
        key[7 + i] = (uint8_t)(list >> (24 - 8 * i));
    memcpy(key + 11, tail, tlen);
    return 11 + tlen;
}

/* V/: a well-formed record loads (so the key layout is right), bad ones are refused naming it. */
Test(catalog, corrupt_move_record_refused)
{
    const s_coll_spec_t colls[] = {{"docs", 2, 3, 1}}; /* R 1, 2 shards */
    catalog_t *cat = s_open_with(2, colls, 1);
    catalog_close(&cat);
    uint8_t key[32];
    const uint8_t r0 = 0, r1 = 1;
    size_t klen = s_docs_key(key, 'V', 1, &r0, 1);
    const uint8_t good[5] = {0, 0, 0, 0, CATALOG_MOVE_COPYING}; /* list 1 (on shard 1) to 0 */
    s_raw_put(key, klen, good, sizeof good);
    cat = s_open();
    const catalog_coll_t *c = catalog_find(cat, "docs");
    cr_assert_eq(c->nmoves, 1);
    s_expect_move(c, 1, 0, CATALOG_MOVE_COPYING, 0);
    catalog_close(&cat);

    const struct {
        uint8_t val[6];
        size_t len;
    } bad[] = {
        {{2, 0, 0, 0, CATALOG_MOVE_QUEUED}, 5},      /* shard 2 of 2 */
        {{0, 0, 0, 0, 0}, 5},                        /* no state */
        {{0, 0, 0, 0, CATALOG_MOVE_COPYING + 1}, 5}, /* unknown state */
        {{0, 0, 0, 0}, 4},                           /* short */
        {{0, 0, 0, 0, CATALOG_MOVE_QUEUED, 0}, 6},   /* long */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        s_raw_put(key, klen, bad[i].val, bad[i].len);
        s_expect_open_fails(SHOAL_ECORRUPT, "V/docs");
    }
    s_raw_put(key, klen, good, sizeof good);
    cat = s_open();
    catalog_close(&cat);
    /* Keys out of range: list 3 of 3, replica 1 of R 1, a key one byte short. */
    uint8_t bad_key[32];
    size_t blen = s_docs_key(bad_key, 'V', 3, &r0, 1);
    s_raw_put(bad_key, blen, good, sizeof good);
    s_expect_open_fails(SHOAL_ECORRUPT, "V/docs");
    s_raw_delete(bad_key, blen);
    blen = s_docs_key(bad_key, 'V', 0, &r1, 1);
    s_raw_put(bad_key, blen, good, sizeof good);
    s_expect_open_fails(SHOAL_ECORRUPT, "V/docs");
    s_raw_delete(bad_key, blen);
    blen = s_docs_key(bad_key, 'V', 0, &r0, 0);
    s_raw_put(bad_key, blen, good, sizeof good);
    s_expect_open_fails(SHOAL_ECORRUPT, "V/docs");
    s_raw_delete(bad_key, blen);
    cat = s_open(); /* the good record alone loads again */
    catalog_close(&cat);
}

Test(catalog, move_record_of_untrained_collection_refused)
{
    const s_coll_spec_t colls[] = {{"docs", 2, 3, 0}};
    catalog_t *cat = s_open_with(2, colls, 1);
    catalog_close(&cat);
    uint8_t key[32];
    const uint8_t r0 = 0, val[5] = {1, 0, 0, 0, CATALOG_MOVE_QUEUED};
    size_t klen = s_docs_key(key, 'V', 0, &r0, 1);
    s_raw_put(key, klen, val, sizeof val);
    s_expect_open_fails(SHOAL_ECORRUPT, "V/docs");
}

/* D/: a well-formed orphan loads, bad ones are refused naming the key. */
Test(catalog, corrupt_orphan_record_refused)
{
    const s_coll_spec_t colls[] = {{"docs", 2, 3, 1}}; /* R 1, 2 shards */
    catalog_t *cat = s_open_with(2, colls, 1);
    catalog_close(&cat);
    uint8_t key[32];
    const uint8_t shard1[4] = {0, 0, 0, 1}, shard2[4] = {0, 0, 0, 2};
    size_t klen = s_docs_key(key, 'D', 2, shard1, 4);
    const uint8_t good = CATALOG_ORPHAN_STALE;
    s_raw_put(key, klen, &good, 1);
    cat = s_open();
    const catalog_orphan_t want[] = {{2, 1, CATALOG_ORPHAN_STALE}};
    s_expect_orphans(catalog_find(cat, "docs"), want, 1);
    catalog_close(&cat);

    const uint8_t kinds[] = {0, CATALOG_ORPHAN_STALE + 1};
    for (size_t i = 0; i < sizeof kinds; i++) {
        s_raw_put(key, klen, &kinds[i], 1);
        s_expect_open_fails(SHOAL_ECORRUPT, "D/docs");
    }
    s_raw_put(key, klen, "", 0);
    s_expect_open_fails(SHOAL_ECORRUPT, "D/docs");
    const uint8_t two[2] = {CATALOG_ORPHAN_CURRENT, 0};
    s_raw_put(key, klen, two, 2);
    s_expect_open_fails(SHOAL_ECORRUPT, "D/docs");
    s_raw_put(key, klen, &good, 1);
    cat = s_open();
    catalog_close(&cat);
    /* Keys out of range: shard 2 of 2, list 3 of 3, a shard of 3 bytes. */
    uint8_t bad_key[32];
    size_t blen = s_docs_key(bad_key, 'D', 0, shard2, 4);
    s_raw_put(bad_key, blen, &good, 1);
    s_expect_open_fails(SHOAL_ECORRUPT, "D/docs");
    s_raw_delete(bad_key, blen);
    blen = s_docs_key(bad_key, 'D', 3, shard1, 4);
    s_raw_put(bad_key, blen, &good, 1);
    s_expect_open_fails(SHOAL_ECORRUPT, "D/docs");
    s_raw_delete(bad_key, blen);
    blen = s_docs_key(bad_key, 'D', 0, shard1 + 1, 3);
    s_raw_put(bad_key, blen, &good, 1);
    s_expect_open_fails(SHOAL_ECORRUPT, "D/docs");
    s_raw_delete(bad_key, blen);
    /* On an untrained collection (its record rewritten untrained) an orphan is refused too. */
    cat = s_open();
    shoal_err_t err;
    cr_assert_eq(catalog_drop(cat, "docs", &err), 0, "%s", err.msg);
    s_create(cat, "docs", 2, 3);
    catalog_close(&cat);
    s_raw_put(key, klen, &good, 1);
    s_expect_open_fails(SHOAL_ECORRUPT, "D/docs");
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
