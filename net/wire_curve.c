/*
 * wire_curve.c - CURVE certificates and socket setup; wire_curve.h is the
 * contract.
 *
 * The files are read with zconfig (czmq's own parser of the zcert format)
 * rather than zcert_load, because zcert_load gives no reason when it fails
 * and quietly yields an all-zero secret key for a public file; here every
 * failure names the file and what is wrong with it. They are written by
 * hand in the same format so that the secret file can be created with mode
 * 0600 from the start (zcert_save creates it with the umask's mode first).
 */
#include "net/wire_curve.h"

#include "common/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Longest path handled (the _secret suffix included). */
#define S_PATH_MAX 4096

/* ------------------------------------------------------------------------ */
/* Files                                                                    */
/* ------------------------------------------------------------------------ */

/* 0 when text is a 40-character Z85 key; copies it into out. */
static int s_key_check(const char *text, char *out)
{
    uint8_t bin[32];
    if (!text || strlen(text) != WIRE_CURVE_KEY_TEXT - 1 || !zmq_z85_decode(bin, text))
        return -1;
    memcpy(out, text, WIRE_CURVE_KEY_TEXT);
    return 0;
}

int wire_curve_load(const char *path, int need_secret, wire_curve_cert_t *cert, shoal_err_t *err)
{
    memset(cert, 0, sizeof *cert);
    FILE *f = fopen(path, "r");
    if (!f)
        return shoal_err_set(err, SHOAL_EIO, "certificate %s: cannot read: %s", path,
                             strerror(errno));
    fclose(f);
    zconfig_t *root = zconfig_load(path);
    if (!root)
        return shoal_err_set(err, SHOAL_EFORMAT,
                             "certificate %s: not a certificate (czmq's zcert text format)", path);
    int rc = 0;
    const char *pub = zconfig_get(root, "curve/public-key", NULL);
    const char *sec = zconfig_get(root, "curve/secret-key", NULL);
    if (!pub)
        rc = shoal_err_set(err, SHOAL_EFORMAT, "certificate %s: no curve/public-key", path);
    else if (s_key_check(pub, cert->public_txt) != 0)
        rc = shoal_err_set(err, SHOAL_EFORMAT,
                           "certificate %s: public-key is not 40 characters of Z85 (%zu chars)",
                           path, strlen(pub));
    else if (need_secret && !sec)
        rc = shoal_err_set(err, SHOAL_EFORMAT,
                           "certificate %s: no secret-key (give the _secret file of the pair)",
                           path);
    else if (sec && s_key_check(sec, cert->secret_txt) != 0)
        rc = shoal_err_set(err, SHOAL_EFORMAT,
                           "certificate %s: secret-key is not 40 characters of Z85 (%zu chars)",
                           path, strlen(sec));
    zconfig_destroy(&root);
    if (rc != 0)
        memset(cert, 0, sizeof *cert);
    return rc;
}

/* Writes text to path, created with mode (exclusive unless force). */
static int s_write_file(const char *path, const char *text, mode_t mode, int force,
                        shoal_err_t *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (force ? O_TRUNC : O_EXCL), mode);
    if (fd < 0)
        return shoal_err_set(err, errno == EEXIST ? SHOAL_EEXIST : SHOAL_EIO,
                             "%s: cannot create: %s", path, strerror(errno));
    size_t len = strlen(text);
    /* An existing file keeps its mode through O_TRUNC: set ours. */
    int bad = fchmod(fd, mode) != 0 || write(fd, text, len) != (ssize_t)len || fsync(fd) != 0;
    int saved = errno;
    if (close(fd) != 0 && !bad) {
        bad = 1;
        saved = errno;
    }
    if (bad)
        return shoal_err_set(err, SHOAL_EIO, "%s: cannot write: %s", path, strerror(saved));
    return 0;
}

int wire_curve_keygen(const char *path, int force, shoal_err_t *err)
{
    char secret_path[S_PATH_MAX];
    if (!path || !*path)
        return shoal_err_set(err, SHOAL_EINVAL, "keygen: a path is required");
    if ((size_t)snprintf(secret_path, sizeof secret_path, "%s_secret", path) >= sizeof secret_path)
        return shoal_err_set(err, SHOAL_EINVAL, "keygen: path too long: %s", path);
    if (!force) {
        /* Both checked first, so a refusal writes neither file. */
        if (access(path, F_OK) == 0)
            return shoal_err_set(err, SHOAL_EEXIST, "%s exists (--force replaces it)", path);
        if (access(secret_path, F_OK) == 0)
            return shoal_err_set(err, SHOAL_EEXIST, "%s exists (--force replaces it)", secret_path);
    }
    char pub[WIRE_CURVE_KEY_TEXT], sec[WIRE_CURVE_KEY_TEXT];
    if (zmq_curve_keypair(pub, sec) != 0)
        return shoal_err_set(err, SHOAL_EUNSUPPORTED, "keygen: %s (libzmq built without CURVE?)",
                             zmq_strerror(zmq_errno()));
    char text[1024];
    snprintf(text, sizeof text,
             "#   shoal CURVE secret certificate (czmq zcert format), from shoal keygen.\n"
             "#   Keep it on its own host, mode 0600; never copy it anywhere else.\n"
             "\n"
             "metadata\n"
             "curve\n"
             "    public-key = \"%s\"\n"
             "    secret-key = \"%s\"\n",
             pub, sec);
    int rc = s_write_file(secret_path, text, 0600, force, err);
    if (rc == 0) {
        snprintf(text, sizeof text,
                 "#   shoal CURVE public certificate (czmq zcert format), from shoal keygen.\n"
                 "#   Give it to the peers that must trust this key.\n"
                 "\n"
                 "metadata\n"
                 "curve\n"
                 "    public-key = \"%s\"\n",
                 pub);
        rc = s_write_file(path, text, 0644, force, err);
    }
    zmq_curve_keypair(pub, sec); /* overwrite the secret on the stack */
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Sockets                                                                  */
/* ------------------------------------------------------------------------ */

void wire_curve_server_apply(zsock_t *sock, const wire_curve_cert_t *cert)
{
    zsock_set_zap_domain(sock, WIRE_CURVE_ZAP_DOMAIN);
    zsock_set_curve_server(sock, 1);
    zsock_set_curve_publickey(sock, cert->public_txt);
    zsock_set_curve_secretkey(sock, cert->secret_txt);
}

void wire_curve_client_apply(zsock_t *sock, const wire_curve_cert_t *own,
                             const wire_curve_cert_t *server)
{
    zsock_set_curve_publickey(sock, own->public_txt);
    zsock_set_curve_secretkey(sock, own->secret_txt);
    zsock_set_curve_serverkey(sock, server->public_txt);
}

/* ------------------------------------------------------------------------ */
/* The allow-list                                                           */
/* ------------------------------------------------------------------------ */

/* The certificates zauth will find in dir; warns about the files it will skip. */
static size_t s_count_keys(const char *who, const char *dir_path, DIR *dir)
{
    size_t keys = 0;
    struct dirent *e;
    while ((e = readdir(dir))) {
        char path[S_PATH_MAX];
        struct stat st;
        if (e->d_name[0] == '.' ||
            (size_t)snprintf(path, sizeof path, "%s/%s", dir_path, e->d_name) >= sizeof path ||
            stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        wire_curve_cert_t cert;
        shoal_err_t err;
        shoal_err_clear(&err);
        if (wire_curve_load(path, 0, &cert, &err) == 0)
            keys++;
        else
            log_warn("%s: --curve-clients: skipped: %s", who, err.msg);
    }
    return keys;
}

zactor_t *wire_curve_auth_new(const char *who, const char *clients_dir, shoal_err_t *err)
{
    DIR *dir = opendir(clients_dir);
    if (!dir) {
        shoal_err_set(err, SHOAL_EIO, "--curve-clients %s: cannot read the directory: %s",
                      clients_dir, strerror(errno));
        return NULL;
    }
    size_t keys = s_count_keys(who, clients_dir, dir);
    closedir(dir);
    zactor_t *auth = zactor_new(zauth, NULL);
    if (!auth) {
        shoal_err_set(err, SHOAL_EINTERNAL, "%s: cannot start zauth", who);
        return NULL;
    }
    /* zauth answers each command once it is in force. */
    if (zstr_sendx(auth, "CURVE", clients_dir, NULL) != 0 || zsock_wait(auth) != 0) {
        zactor_destroy(&auth);
        shoal_err_set(err, SHOAL_EINTERNAL, "%s: zauth refused CURVE %s", who, clients_dir);
        return NULL;
    }
    if (keys == 0)
        log_warn("%s: --curve-clients %s holds no certificate: no client can connect until one "
                 "is added",
                 who, clients_dir);
    log_info("%s: %zu authorized client keys in %s (re-read when its files change)", who, keys,
             clients_dir);
    return auth;
}

int wire_curve_server_start(const char *who, const char *secret_path, const char *clients_dir,
                            wire_curve_cert_t *cert, zactor_t **auth, shoal_err_t *err)
{
    *auth = NULL;
    memset(cert, 0, sizeof *cert);
    if (!*secret_path && !*clients_dir) {
        log_warn("%s: unauthenticated and unencrypted (no --curve-secret-key): any process that "
                 "reaches the endpoint can read and write",
                 who);
        return 0;
    }
    if (!*secret_path || !*clients_dir)
        return shoal_err_set(err, SHOAL_EINVAL,
                             "--curve-secret-key and --curve-clients go together (got only %s)",
                             *secret_path ? "--curve-secret-key" : "--curve-clients");
    if (!zmq_has("curve"))
        return shoal_err_set(err, SHOAL_EUNSUPPORTED,
                             "--curve-secret-key: this libzmq was built without CURVE");
    int rc = wire_curve_load(secret_path, 1, cert, err);
    if (rc != 0)
        return rc;
    *auth = wire_curve_auth_new(who, clients_dir, err);
    if (!*auth) {
        memset(cert, 0, sizeof *cert);
        return err ? err->code : SHOAL_EIO;
    }
    log_info("%s: CURVE authenticated and encrypted: server key %s (public %s), clients "
             "authorized by %s",
             who, secret_path, cert->public_txt, clients_dir);
    return 1;
}
