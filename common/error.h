/*
 * error.h - shoal's status codes and the error object that carries them.
 *
 * Every function that can fail returns 0 (SHOAL_OK) or one of the small negative
 * codes below; constructors return NULL instead. Callers that want to know *why*
 * pass an optional shoal_err_t: it holds the code and a human-readable message in
 * a fixed buffer, so filling it never allocates (the error path must work when
 * memory is exhausted). Messages name the thing and the expected/actual values:
 * "file base.fvecs: record 17 has dim 96, expected 128".
 *
 * Codes are part of the wire protocol (replies carry them), so existing values
 * never change; new codes are appended.
 *
 * Thread-safety: shoal_err_t is a plain value; one per thread or per request.
 */
#ifndef SHOAL_ERROR_H
#define SHOAL_ERROR_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
    SHOAL_OK = 0,
    SHOAL_ENOMEM = -1,      /* an allocation failed */
    SHOAL_EINVAL = -2,      /* an argument is out of range or malformed */
    SHOAL_EIO = -3,         /* a read, write, open or mmap failed */
    SHOAL_EFORMAT = -4,     /* a file or message does not have the expected format */
    SHOAL_EDIM = -5,        /* a vector's dimension is not the one expected */
    SHOAL_ENOTFOUND = -6,   /* a named thing (collection, id, file) does not exist */
    SHOAL_EEXIST = -7,      /* a named thing exists already */
    SHOAL_ENODEV = -8,      /* no usable GPU device */
    SHOAL_ELIMIT = -9,      /* a configured limit (size, batch, k, dim) is exceeded */
    SHOAL_EPROTO = -10,     /* a protocol violation: unknown op, bad version, bad frames */
    SHOAL_ECORRUPT = -11,   /* stored data fails its checks (magic, version, sizes) */
    SHOAL_EUNSUPPORTED = -12, /* a valid request this build or version cannot serve */
    SHOAL_ETIMEOUT = -13,   /* a deadline passed */
    SHOAL_EUNAVAIL = -14,   /* a peer or resource is down */
    SHOAL_EINTERNAL = -15,  /* a bug: an invariant did not hold */
    SHOAL_EGPU = -16,       /* a CUDA, cuBLAS or NCCL call failed */
};

/* Longest message kept, including the terminating NUL; longer ones are cut. */
#define SHOAL_ERR_MSG_MAX 256

typedef struct {
    int code;                      /* SHOAL_OK or a negative SHOAL_E* code */
    char msg[SHOAL_ERR_MSG_MAX];   /* NUL-terminated; "" when code is SHOAL_OK */
} shoal_err_t;

/* Short fixed description of a code ("invalid argument"); never NULL. */
const char *shoal_strerror(int code);

/* Stable lower-case name of a code for logs and the wire ("einval"); never NULL. */
const char *shoal_errname(int code);

/* Resets err to SHOAL_OK with an empty message. NULL-safe. */
void shoal_err_clear(shoal_err_t *err);

/*
 * Records code and a printf-style message in err (NULL-safe: then it only
 * returns). Returns code, so a failing function can end with
 *     return shoal_err_set(err, SHOAL_EINVAL, "k must be >= 1, got %d", k);
 */
int shoal_err_set(shoal_err_t *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Puts a prefix in front of an existing message, for context added on the way
 * up: "loading collection \"a\": <message>". Keeps the code; returns it.
 */
int shoal_err_prefix(shoal_err_t *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#ifdef __cplusplus
}
#endif

#endif
