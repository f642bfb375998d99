/*
 * test_curve.c - CURVE authentication and encryption (net/wire_curve.h)
 * with real processes on loopback: `shoal keygen` writes a pair in czmq's
 * format (the secret file 0600, no overwrite without --force); a
 * coordinator and two shards run with CURVE: a client with an authorized
 * key works end to end, a client without a key, one with an unknown key,
 * and one whose key the coordinator accepts but the shards do not (they
 * allow the coordinator's only) get no answer, and the servers keep
 * serving; bad certificate files stop a server at start, naming the file;
 * a server without keys says in its log that it is unauthenticated.
 *
 * A refused peer sees silence (libzmq ends the handshake), so "refused" is
 * a client call that times out, with the message pointing at the keys.
 */
#include "client/shoal_client.h"
#include "common/log.h"
#include "net/wire_curve.h"
#include "tests/test_support.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define S_PATH_MAX     S_SUPPORT_PATH_MAX
#define S_START_WAIT_S 60.0  /* a process must be ready within this */
#define S_STOP_WAIT_S  60.0  /* and exit within this after a signal */
#define S_TIMEOUT_MS   30000 /* calls that must succeed */
#define S_REFUSED_MS   1500  /* calls that must get no answer */
#define S_DIM          8
#define S_N            300
#define S_NLIST        4
#define S_K            5

static void s_setup(void)
{
    shoal_log_init_from_env();
    s_process_suite_init("test_curve");
}

TestSuite(curve, .init = s_setup, .fini = s_process_suite_fini, .timeout = 120);

/* ------------------------------------------------------------------------ */
/* Keys                                                                     */
/* ------------------------------------------------------------------------ */

/* Runs `shoal keygen path [--force]`; returns its exit status. */
static int s_keygen(const char *path, int force)
{
    char bin[S_PATH_MAX], out[S_PATH_MAX];
    s_bin(bin, "shoal");
    s_scratch_path(out, "keygen.out");
    char *argv[] = {bin, "keygen", (char *)path, force ? "--force" : NULL, NULL};
    int status = s_run_to_end(argv, out, out, 30);
    cr_assert(WIFEXITED(status));
    return WEXITSTATUS(status);
}

/* A new pair at <scratch>/name; pub and sec (S_PATH_MAX) get its two files. */
static void s_pair(const char *name, char *pub, char *sec)
{
    s_scratch_path(pub, name);
    snprintf(sec, S_PATH_MAX, "%s_secret", pub);
    cr_assert_eq(s_keygen(pub, 0), 0, "keygen %s", pub);
}

/* Copies the public certificate src into the folder dir (made if absent). */
static void s_authorize(const char *dir, const char *src, const char *name)
{
    mkdir(dir, 0755);
    char dst[S_PATH_MAX];
    char *text = s_slurp(src);
    FILE *f = fopen(s_join(dst, dir, name), "w");
    cr_assert_not_null(f, "%s", dst);
    fputs(text, f);
    fclose(f);
    free(text);
}

Test(curve, keygen_writes_a_pair_in_czmq_format)
{
    char pub[S_PATH_MAX], sec[S_PATH_MAX];
    s_pair("k", pub, sec);
    struct stat st;
    cr_assert_eq(stat(sec, &st), 0, "%s was not written", sec);
    cr_assert_eq(st.st_mode & 0777, 0600, "secret file mode %o", (unsigned)(st.st_mode & 0777));
    cr_assert_eq(stat(pub, &st), 0, "%s was not written", pub);

    wire_curve_cert_t p, s;
    shoal_err_t err;
    shoal_err_clear(&err);
    cr_assert_eq(wire_curve_load(pub, 0, &p, &err), 0, "%s", err.msg);
    cr_assert_eq(p.secret_txt[0], '\0', "the public file holds a secret key");
    cr_assert_eq(wire_curve_load(sec, 1, &s, &err), 0, "%s", err.msg);
    cr_assert_str_eq(p.public_txt, s.public_txt);
    /* czmq reads it as its own */
    zcert_t *z = zcert_load(sec);
    cr_assert_not_null(z, "zcert_load %s", sec);
    cr_assert_str_eq(zcert_public_txt(z), s.public_txt);
    cr_assert_str_eq(zcert_secret_txt(z), s.secret_txt);
    zcert_destroy(&z);
    /* the public file is refused where a secret key is needed, naming it */
    cr_assert_eq(wire_curve_load(pub, 1, &p, &err), SHOAL_EFORMAT);
    cr_assert(strstr(err.msg, pub) && strstr(err.msg, "secret"), "%s", err.msg);

    /* no overwrite without --force; both files kept */
    cr_assert_eq(s_keygen(pub, 0), 1);
    wire_curve_cert_t again;
    cr_assert_eq(wire_curve_load(sec, 1, &again, &err), 0, "%s", err.msg);
    cr_assert_str_eq(again.secret_txt, s.secret_txt);
    cr_assert_eq(s_keygen(pub, 1), 0);
    cr_assert_eq(wire_curve_load(sec, 1, &again, &err), 0, "%s", err.msg);
    cr_assert_str_neq(again.secret_txt, s.secret_txt, "--force did not write a new pair");
    cr_assert_eq(stat(sec, &st), 0);
    cr_assert_eq(st.st_mode & 0777, 0600);
}

/* ------------------------------------------------------------------------ */
/* A cluster with CURVE                                                     */
/* ------------------------------------------------------------------------ */

/* Asserts that log holds text. */
static void s_log_has(const char *log, const char *text)
{
    char *all = s_slurp(log);
    cr_assert(strstr(all, text), "%s lacks \"%s\":\n%s", log, text, all);
    free(all);
}

/* A ping that must get no answer: SHOAL_ETIMEOUT naming the keys. */
static void s_refused(shoal_client_t *c, const char *who)
{
    cr_assert_not_null(c, "%s", who);
    shoal_err_t err;
    shoal_err_clear(&err);
    cr_assert_eq(shoal_client_ping(c, NULL, NULL, &err), SHOAL_ETIMEOUT, "%s got an answer", who);
    cr_assert(strstr(err.msg, "--curve-key"), "%s: %s", who, err.msg);
}

/* Exact search of the first rows: each finds itself first. */
static void s_search_ok(shoal_client_t *c, const float *vecs)
{
    shoal_err_t err;
    shoal_err_clear(&err);
    shoal_search_opts_t so = {.k = S_K, .mode = WIRE_MODE_EXACT};
    uint64_t *ids = NULL;
    float *dists = NULL;
    size_t nq = 20;
    cr_assert_eq(shoal_client_search(c, "v", vecs, nq, S_DIM, &so, &ids, &dists, NULL, &err), 0,
                 "%s", err.msg);
    for (size_t q = 0; q < nq; q++) {
        cr_assert_eq(ids[q * S_K], 1000 + q, "query %zu: top id %llu", q,
                     (unsigned long long)ids[q * S_K]);
        cr_assert_float_eq(dists[q * S_K], 0.0f, 1e-5f);
    }
    free(ids);
    free(dists);
}

Test(curve, cluster_admits_only_authorized_keys)
{
    char coord_pub[S_PATH_MAX], coord_sec[S_PATH_MAX], shard_pub[S_PATH_MAX], shard_sec[S_PATH_MAX],
        cli_pub[S_PATH_MAX], cli_sec[S_PATH_MAX], odd_pub[S_PATH_MAX], odd_sec[S_PATH_MAX],
        coord_dir[S_PATH_MAX], shard_dir[S_PATH_MAX];
    s_pair("coord", coord_pub, coord_sec);
    s_pair("shard", shard_pub, shard_sec);
    s_pair("client", cli_pub, cli_sec);
    s_pair("stranger", odd_pub, odd_sec);
    /* clients in the coordinator's list; the coordinator alone in the shards' */
    s_scratch_path(coord_dir, "coord_clients");
    s_scratch_path(shard_dir, "shard_clients");
    s_authorize(coord_dir, cli_pub, "client");
    s_authorize(shard_dir, coord_pub, "coordinator");

    char bin[S_PATH_MAX];
    s_server_t shards[2], coord;
    char list[1024] = "";
    s_bin(bin, "shoal-shard");
    for (int i = 0; i < 2; i++) {
        char name[16];
        snprintf(name, sizeof name, "shard%d", i);
        s_server_init(&shards[i], name);
        char *argv[] = {bin,
                        "--listen",
                        "tcp://127.0.0.1:*",
                        "--data-dir",
                        shards[i].data_dir,
                        "--ready-file",
                        shards[i].ready,
                        "--threads",
                        "1",
                        "--devices",
                        "cpu",
                        "--log-level",
                        "info",
                        "--curve-secret-key",
                        shard_sec,
                        "--curve-clients",
                        shard_dir,
                        NULL};
        shards[i].pid = s_server_start(argv, shards[i].ready, shards[i].log, S_START_WAIT_S,
                                       shards[i].endpoint, sizeof shards[i].endpoint);
        size_t len = strlen(list);
        snprintf(list + len, sizeof list - len, "%s%s", i ? "," : "", shards[i].endpoint);
    }
    s_bin(bin, "shoal-coordinator");
    s_server_init(&coord, "coord");
    char *argv[] = {bin,
                    "--listen",
                    "tcp://127.0.0.1:*",
                    "--data-dir",
                    coord.data_dir,
                    "--ready-file",
                    coord.ready,
                    "--shards",
                    list,
                    "--device",
                    "cpu",
                    "--log-level",
                    "info",
                    "--curve-secret-key",
                    coord_sec,
                    "--curve-clients",
                    coord_dir,
                    "--curve-shard-key",
                    shard_pub,
                    NULL};
    coord.pid = s_server_start(argv, coord.ready, coord.log, S_START_WAIT_S, coord.endpoint,
                               sizeof coord.endpoint);

    /* the authorized client: create, insert (trains on the first batch), search */
    shoal_err_t err;
    shoal_err_clear(&err);
    shoal_client_t *c =
        shoal_client_new_curve(coord.endpoint, S_TIMEOUT_MS, cli_sec, coord_pub, &err);
    cr_assert_not_null(c, "%s", err.msg);
    shoal_create_opts_t co = {.nlist = S_NLIST};
    cr_assert_eq(shoal_client_create_ivf(c, "v", S_DIM, SHOAL_METRIC_L2, &co, &err), 0, "%s",
                 err.msg);
    static float vecs[S_N * S_DIM];
    uint64_t ids[S_N];
    unsigned seed = 12345;
    for (size_t i = 0; i < S_N; i++) {
        ids[i] = 1000 + i;
        for (size_t d = 0; d < S_DIM; d++) {
            seed = seed * 1103515245u + 12345u;
            vecs[i * S_DIM + d] = (float)((seed >> 8) % 10000) / 100.0f;
        }
    }
    cr_assert_eq(shoal_client_insert(c, "v", ids, vecs, S_N, S_DIM, NULL, &err), 0, "%s", err.msg);
    s_search_ok(c, vecs);

    /* no key, an unknown key, an authorized client key at a shard: silence */
    shoal_client_t *plain = shoal_client_new(coord.endpoint, S_REFUSED_MS, &err);
    s_refused(plain, "a client without a key");
    shoal_client_t *odd =
        shoal_client_new_curve(coord.endpoint, S_REFUSED_MS, odd_sec, coord_pub, &err);
    s_refused(odd, "a client with an unknown key");
    shoal_client_t *direct =
        shoal_client_new_curve(shards[0].endpoint, S_REFUSED_MS, cli_sec, shard_pub, &err);
    s_refused(direct, "the client's key at a shard");
    /* the same shard admits the coordinator's key: the refusal was the key's */
    shoal_client_t *as_coord =
        shoal_client_new_curve(shards[0].endpoint, S_TIMEOUT_MS, coord_sec, shard_pub, &err);
    cr_assert_not_null(as_coord, "%s", err.msg);
    cr_assert_eq(shoal_client_ping(as_coord, NULL, NULL, &err), 0, "%s", err.msg);

    /* the servers kept serving */
    s_search_ok(c, vecs);

    /* a certificate that cannot be read is a client error naming it */
    char missing[S_PATH_MAX];
    s_scratch_path(missing, "no-such-cert");
    cr_assert_null(shoal_client_new_curve(coord.endpoint, 1000, missing, coord_pub, &err));
    cr_assert(strstr(err.msg, missing), "%s", err.msg);

    shoal_client_destroy(&as_coord);
    shoal_client_destroy(&direct);
    shoal_client_destroy(&odd);
    shoal_client_destroy(&plain);
    shoal_client_destroy(&c);

    s_log_has(coord.log, "coordinator: CURVE authenticated and encrypted");
    s_log_has(coord.log, "shard links: CURVE");
    s_log_has(shards[0].log, "shard: CURVE authenticated and encrypted");
    s_log_has(shards[1].log, "shard: CURVE authenticated and encrypted");
    cr_assert_eq(s_server_signal(coord.pid, SIGTERM, S_STOP_WAIT_S, coord.log), 0);
    for (int i = 0; i < 2; i++)
        cr_assert_eq(s_server_signal(shards[i].pid, SIGTERM, S_STOP_WAIT_S, shards[i].log), 0);
}

/* ------------------------------------------------------------------------ */
/* Start-up                                                                 */
/* ------------------------------------------------------------------------ */

/* Runs a shard with extra arguments that must stop its start; returns the exit status. */
static int s_shard_fails(const char *const *extra, const char *log)
{
    char bin[S_PATH_MAX], data[S_PATH_MAX];
    s_bin(bin, "shoal-shard");
    s_scratch_path(data, "bad.data");
    char *head[] = {bin, "--listen", "tcp://127.0.0.1:*", "--data-dir", data, "--devices", "cpu"};
    char *argv[32];
    s_argv_fill(argv, 32, head, sizeof head / sizeof head[0], extra);
    int status = s_run_to_end(argv, log, log, 30);
    cr_assert(WIFEXITED(status), "the shard did not exit on its own");
    return WEXITSTATUS(status);
}

Test(curve, bad_keys_stop_the_start_naming_the_file)
{
    char pub[S_PATH_MAX], sec[S_PATH_MAX], dir[S_PATH_MAX], junk[S_PATH_MAX], log[S_PATH_MAX];
    s_pair("server", pub, sec);
    s_scratch_path(dir, "allowed");
    s_authorize(dir, pub, "peer");
    s_scratch_path(junk, "junk_secret");
    FILE *f = fopen(junk, "w");
    cr_assert_not_null(f);
    fputs("curve\n    public-key = \"short\"\n    secret-key = \"short\"\n", f);
    fclose(f);
    s_scratch_path(log, "bad.log");

    const char *malformed[] = {"--curve-secret-key", junk, "--curve-clients", dir, NULL};
    cr_assert_eq(s_shard_fails(malformed, log), 1);
    s_log_has(log, junk);
    const char *public_only[] = {"--curve-secret-key", pub, "--curve-clients", dir, NULL};
    cr_assert_eq(s_shard_fails(public_only, log), 1);
    s_log_has(log, "no secret-key");
    const char *no_dir[] = {"--curve-secret-key", sec, "--curve-clients", junk, NULL};
    cr_assert_eq(s_shard_fails(no_dir, log), 1);
    s_log_has(log, "cannot read the directory");
    const char *alone[] = {"--curve-secret-key", sec, NULL};
    cr_assert_eq(s_shard_fails(alone, log), 2);
    s_log_has(log, "go together");
}

Test(curve, without_keys_the_log_says_unauthenticated)
{
    char bin[S_PATH_MAX];
    s_server_t shard;
    s_server_init(&shard, "plain");
    s_bin(bin, "shoal-shard");
    char *argv[] = {bin,          "--listen",     "tcp://127.0.0.1:*",
                    "--data-dir", shard.data_dir, "--ready-file",
                    shard.ready,  "--devices",    "cpu",
                    NULL};
    shard.pid = s_server_start(argv, shard.ready, shard.log, S_START_WAIT_S, shard.endpoint,
                               sizeof shard.endpoint);
    s_log_has(shard.log, "unauthenticated");
    cr_assert_eq(s_server_signal(shard.pid, SIGTERM, S_STOP_WAIT_S, shard.log), 0);
}
