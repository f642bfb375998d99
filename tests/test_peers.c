/*
 * test_peers.c - shard/peers: the first rid of each client link.
 */
#include "shard/peers.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

/* A routing id like ZeroMQ's own: a zero byte, then a 32-bit number. */
static void s_id(uint8_t id[5], uint32_t n)
{
    id[0] = 0;
    memcpy(id + 1, &n, 4);
}

Test(peers, a_link_keeps_its_first_rid)
{
    shard_peers_t *t = shard_peers_new();
    cr_assert_not_null(t);
    uint8_t a[5], b[5];
    s_id(a, 1);
    s_id(b, 2);
    cr_assert_eq(shard_peers_note(t, a, 5, 40), 40);
    cr_assert_eq(shard_peers_note(t, a, 5, 41), 40);
    cr_assert_eq(shard_peers_note(t, b, 5, 7), 7, "another link starts on its own");
    cr_assert_eq(shard_peers_note(t, a, 5, 99), 40);
    cr_assert_eq(shard_peers_note(t, b, 5, 8), 7);
    /* the same bytes with another length are another link */
    cr_assert_eq(shard_peers_note(t, a, 4, 50), 50);
    shard_peers_destroy(&t);
    cr_assert_null(t);
    shard_peers_destroy(&t); /* NULL-safe */
}

Test(peers, unknown_rids_and_unusable_ids_record_nothing)
{
    shard_peers_t *t = shard_peers_new();
    uint8_t a[5], big[SHARD_PEERS_ID_MAX + 1];
    s_id(a, 1);
    memset(big, 7, sizeof big);
    cr_assert_eq(shard_peers_note(t, a, 5, 0), 0, "rid 0 (undecodable request)");
    cr_assert_eq(shard_peers_note(t, a, 5, 12), 12, "the rid 0 was not taken as the first");
    cr_assert_eq(shard_peers_note(t, big, sizeof big, 3), 0);
    cr_assert_eq(shard_peers_note(t, big, SHARD_PEERS_ID_MAX, 3), 3, "the longest id fits");
    cr_assert_eq(shard_peers_note(t, a, 0, 13), 0);
    cr_assert_eq(shard_peers_note(NULL, a, 5, 13), 0);
    shard_peers_destroy(&t);
}

Test(peers, a_full_table_forgets_the_least_recently_heard_link)
{
    shard_peers_t *t = shard_peers_new();
    uint8_t id[5];
    for (uint32_t i = 0; i < SHARD_PEERS_MAX; i++) {
        s_id(id, i);
        cr_assert_eq(shard_peers_note(t, id, 5, 1000 + i), 1000 + i);
    }
    /* link 0 heard again: link 1 is now the least recent */
    s_id(id, 0);
    cr_assert_eq(shard_peers_note(t, id, 5, 5000), 1000);
    s_id(id, SHARD_PEERS_MAX);
    cr_assert_eq(shard_peers_note(t, id, 5, 6000), 6000);
    s_id(id, 0);
    cr_assert_eq(shard_peers_note(t, id, 5, 6001), 1000, "the link heard recently stays");
    for (uint32_t i = 2; i < SHARD_PEERS_MAX; i++) {
        s_id(id, i);
        cr_assert_eq(shard_peers_note(t, id, 5, 7000), 1000 + i, "link %u", i);
    }
    s_id(id, 1);
    cr_assert_eq(shard_peers_note(t, id, 5, 8000), 8000, "link 1 was forgotten: it starts over");
    shard_peers_destroy(&t);
}
