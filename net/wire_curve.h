/*
 * wire_curve.h - CURVE (ZeroMQ's own authentication and encryption,
 * CurveZMQ) for shoal's sockets: certificate files read and written, a
 * server socket made a CURVE server, a client socket made a CURVE client,
 * and the process's allow-list of client keys (czmq's zauth, asked by
 * libzmq through ZAP at every handshake).
 *
 * Certificates are czmq's zcert text files: a "curve" section with
 * "public-key" and, in the secret file, "secret-key", each 40 characters of
 * Z85. `shoal keygen PATH` writes PATH (public, mode 0644) and PATH_secret
 * (both keys, mode 0600); zcert_load and zauth read the same files.
 *
 * What a key pair gives: the handshake proves the server holds the secret
 * key of the public key the client was given, and (through zauth) that the
 * client's public key is in the server's directory of authorized keys; a
 * peer that fails either gets no connection (libzmq closes it during the
 * handshake: the peer sees no error, only silence). Everything after the
 * handshake is encrypted. Nothing else changes: ops, limits and replies are
 * the same for every authorized peer (no per-key permissions).
 *
 * Ownership: wire_curve_cert_t is a plain value (no heap); the zactor_t of
 * wire_curve_auth_new is the caller's (zactor_destroy). Thread-safety: the
 * functions keep no state; a socket belongs to one thread as usual; one
 * allow-list actor serves every socket of the process (libzmq has one ZAP
 * endpoint per context).
 */
#ifndef SHOAL_WIRE_CURVE_H
#define SHOAL_WIRE_CURVE_H

#include "common/error.h"

#include <czmq.h>

/* A Z85 key: 40 characters and the NUL. */
#define WIRE_CURVE_KEY_TEXT 41
/* The ZAP domain shoal's CURVE servers announce (zauth accepts any domain). */
#define WIRE_CURVE_ZAP_DOMAIN "shoal"

/* One certificate's keys, as Z85 text. */
typedef struct {
    char public_txt[WIRE_CURVE_KEY_TEXT]; /* the public key */
    char secret_txt[WIRE_CURVE_KEY_TEXT]; /* the secret key; "" when read from a public file */
} wire_curve_cert_t;

/*
 * Reads a certificate file. need_secret: the file must hold a secret key
 * (a server's or client's own certificate, the _secret file). 0, or
 * SHOAL_EIO (cannot be read) / SHOAL_EFORMAT (not a certificate, a key
 * that is not 40 characters of Z85, no secret key where one is needed),
 * err naming the file.
 */
int wire_curve_load(const char *path, int need_secret, wire_curve_cert_t *cert, shoal_err_t *err);

/*
 * Writes a new key pair: path (public, 0644) and path_secret (0600).
 * Refuses with SHOAL_EEXIST naming the file when either exists, unless
 * force. 0 or an error naming the file.
 */
int wire_curve_keygen(const char *path, int force, shoal_err_t *err);

/*
 * Makes sock a CURVE server with cert (which must hold its secret key).
 * Before the bind: a listener takes the options it has when it binds.
 */
void wire_curve_server_apply(zsock_t *sock, const wire_curve_cert_t *cert);

/*
 * Makes sock a CURVE client with its own cert (secret key needed) that
 * accepts only the server whose public key server holds. Before the
 * connect.
 */
void wire_curve_client_apply(zsock_t *sock, const wire_curve_cert_t *own,
                             const wire_curve_cert_t *server);

/*
 * Starts the process's allow-list: zauth loading the public certificates
 * of clients_dir (every file there; files that are not certificates are
 * skipped, with a warning naming each). who names the server in logs.
 * zauth re-reads the directory when its files change (checked at each
 * handshake), so a key added or removed takes effect at the next
 * connection; connections already made are not dropped. Must start before
 * any CURVE server socket binds. NULL with err naming the directory when it
 * cannot be read.
 */
zactor_t *wire_curve_auth_new(const char *who, const char *clients_dir, shoal_err_t *err);

/*
 * A server's --curve-secret-key FILE and --curve-clients DIR ("" when not
 * given), taken together: both given, cert gets the server's certificate,
 * *auth the running allow-list (the caller's) and 1 is returned, with one
 * log line saying the server is authenticated; neither, 0 and one log line
 * saying it is not; one without the other SHOAL_EINVAL, a file or directory
 * that cannot be used its error, err naming it.
 */
int wire_curve_server_start(const char *who, const char *secret_path, const char *clients_dir,
                            wire_curve_cert_t *cert, zactor_t **auth, shoal_err_t *err);

#endif
