/*
 * vecfile.h - reading and writing vector files: .fvecs, .ivecs, .bvecs, .npy.
 *
 * Formats (all little-endian):
 *   .fvecs  per record: int32 dim, then dim float32
 *   .ivecs  per record: int32 dim, then dim int32     (ground-truth id lists)
 *   .bvecs  per record: int32 dim, then dim uint8
 *   .npy    NumPy format 1.0/2.0/3.0, a 2-D C-order array of '<f4' (read only)
 *
 * Reading maps the file (mmap, read-only) instead of copying it, so a file larger
 * than memory can be streamed: callers read rows in chunks with vecfile_read_*.
 *
 * Checks, each an error naming the file, the record and what was expected:
 *   at open  - empty file, a first dim < 1 or > VECFILE_DIM_MAX, a size that is
 *              not a whole number of records (a truncated file), a malformed or
 *              unsupported .npy header;
 *   at read  - a record whose dim differs from the first ("record 17 has dim 96,
 *              expected 128"). Reads check every record they touch, so a full
 *              read is a full check; vecfile_check() checks all without copying.
 *              Record numbers in messages are 0-based row indices, as in the API.
 * Checking record headers on read rather than at open keeps open O(1) for huge
 * files while still never returning a row whose header was not verified.
 *
 * Writing goes to "<path>.tmp" and is renamed over <path> by vecfile_writer_close
 * after an fsync, so a reader never sees a half-written file under the real name.
 *
 * Ownership: vecfile_open returns a vecfile_t the caller destroys with
 * vecfile_close(&vf); pointers into the mapping are valid until then.
 * Thread-safety: a vecfile_t is read-only after open; concurrent reads are safe.
 * A writer belongs to one thread.
 */
#ifndef SHOAL_VECFILE_H
#define SHOAL_VECFILE_H

#include "common/error.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Largest dimension accepted in a file. */
#define VECFILE_DIM_MAX 65536

typedef enum {
    VECFILE_FVECS = 0,
    VECFILE_IVECS = 1,
    VECFILE_BVECS = 2,
    VECFILE_NPY = 3,
} vecfile_format_t;

typedef struct vecfile vecfile_t;

/*
 * Parses a format from a file name's extension (".fvecs", ".ivecs", ".bvecs",
 * ".npy"). Returns 0 or SHOAL_EINVAL (with a message) for anything else.
 */
int vecfile_format_from_path(const char *path, vecfile_format_t *format, shoal_err_t *err);

/* Opens and maps path, format from its extension. NULL on error (err says why). */
vecfile_t *vecfile_open(const char *path, shoal_err_t *err);

/* Unmaps and frees; NULL-safe; sets *vf_p to NULL. */
void vecfile_close(vecfile_t **vf_p);

size_t vecfile_count(const vecfile_t *vf);       /* number of records (rows) */
size_t vecfile_dim(const vecfile_t *vf);         /* values per record */
vecfile_format_t vecfile_format(const vecfile_t *vf);
const char *vecfile_path(const vecfile_t *vf);   /* borrowed, valid until close */

/*
 * Copies rows [start, start + count) as float32 into out (count * dim floats).
 * Works for fvecs, bvecs (uint8 widened) and npy; ivecs is SHOAL_EFORMAT.
 * Checks each record's dim header; SHOAL_EINVAL if the range is out of bounds.
 */
int vecfile_read_f32(const vecfile_t *vf, size_t start, size_t count, float *out,
                     shoal_err_t *err);

/* As vecfile_read_f32, for ivecs only, into int32. */
int vecfile_read_i32(const vecfile_t *vf, size_t start, size_t count, int32_t *out,
                     shoal_err_t *err);

/* Checks every record header without copying. */
int vecfile_check(const vecfile_t *vf, shoal_err_t *err);

/*
 * The rows as one contiguous float32 array inside the mapping, when the file
 * has that layout (npy only: the vecs formats interleave a header per row), or
 * NULL. Lets large npy files be used without any copy.
 */
const float *vecfile_contiguous_f32(const vecfile_t *vf);

/*
 * Convenience for small and medium files: opens path, reads every row as float32
 * into a new malloc'd array (the caller frees it), and reports its shape.
 * NULL on error.
 */
float *vecfile_load_f32(const char *path, size_t *n, size_t *dim, shoal_err_t *err);

/* As vecfile_load_f32, for an .ivecs file, into int32. */
int32_t *vecfile_load_i32(const char *path, size_t *n, size_t *dim, shoal_err_t *err);

/* ------------------------------------------------------------------------ */
/* Writing (.fvecs, .ivecs, .bvecs)                                         */
/* ------------------------------------------------------------------------ */

typedef struct vecfile_writer vecfile_writer_t;

/*
 * Starts writing path in the given format with records of dim values.
 * SHOAL_EUNSUPPORTED for npy. NULL on error.
 */
vecfile_writer_t *vecfile_writer_new(const char *path, vecfile_format_t format, size_t dim,
                                     shoal_err_t *err);

/*
 * Appends n records. data holds n * dim values of the format's element type:
 * float for fvecs, int32_t for ivecs, uint8_t for bvecs.
 */
int vecfile_writer_append(vecfile_writer_t *w, const void *data, size_t n, shoal_err_t *err);

/*
 * Flushes, fsyncs, renames the temporary file to its final name, and frees the
 * writer (sets *w_p to NULL). Returns the first error seen while writing, if any;
 * on error the temporary file is removed and the final name is left untouched.
 */
int vecfile_writer_close(vecfile_writer_t **w_p, shoal_err_t *err);

/* Abandons a writer: removes the temporary file and frees it. NULL-safe. */
void vecfile_writer_abort(vecfile_writer_t **w_p);

/* One-call writers built on the writer above. */
int vecfile_write_fvecs(const char *path, const float *data, size_t n, size_t dim,
                        shoal_err_t *err);
int vecfile_write_ivecs(const char *path, const int32_t *data, size_t n, size_t dim,
                        shoal_err_t *err);
int vecfile_write_bvecs(const char *path, const uint8_t *data, size_t n, size_t dim,
                        shoal_err_t *err);

#ifdef __cplusplus
}
#endif

#endif
