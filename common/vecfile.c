/*
 * vecfile.c - reading (mmap) and writing (tmp file + rename) vector files.
 *
 * Decisions that shape this file:
 *
 *  - Files come from outside. Every count, size and offset taken from one is
 *    checked with overflow-safe arithmetic before it is used, and no byte
 *    outside [map, map + map_size) is ever touched. Values are copied out with
 *    memcpy, so records need no particular alignment.
 *
 *  - vecs files are checked lazily. Open reads the first record's dim and the
 *    file size (O(1) however big the file); every read then checks the header
 *    of each record it copies. Checking everything at open was rejected: it
 *    would page in a whole 100 GB file before the first row could be used.
 *    Record numbers in messages are 0-based row indices, like the API's.
 *
 *  - The mapping is PROT_READ/MAP_PRIVATE. If another process truncates the
 *    file while it is mapped, touching the lost pages raises SIGBUS; no reader
 *    can check for that, so files must not be shrunk while they are open.
 *
 *  - .npy: accepted is what NumPy writes for a float32 C-order matrix:
 *    versions 1.0, 2.0 and 3.0; descr '<f4', and also '=f4' ("native order":
 *    this file only builds on little-endian hosts, where NumPy itself reads
 *    '=f4' exactly as '<f4'); fortran_order False; shape (N, D), or (D,) which
 *    is read as one row of D values (what np.save writes for a single vector).
 *    The header dict is parsed as the small Python-literal subset NumPy emits:
 *    keys in any order, either quote, any whitespace, an optional trailing
 *    comma, 'L' suffixes on integers (old Python 2 writers). Unknown or
 *    repeated keys are rejected, as NumPy rejects them.
 *    Errors: EFORMAT for a malformed file, EUNSUPPORTED for a well-formed one
 *    this reader does not handle (another dtype, Fortran order, rank 0 or > 2,
 *    version 4+).
 *
 *  - Writing goes through our own buffer and write(2) rather than stdio, so
 *    every failing call is seen with its own errno. The first failure sticks:
 *    later appends return it again, and close reports it and removes the
 *    temporary file, leaving whatever was at the final name untouched.
 */
#include "common/vecfile.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Record headers and values are used in place (memcpy, no byte swapping). */
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "vecfile.c reads and writes little-endian data in place: it needs a little-endian host"
#endif

_Static_assert(sizeof(float) == 4, "fvecs and npy '<f4' values are 4-byte floats");

/* Bytes of the int32 dim header in front of every vecs record. */
#define S_VECS_HEADER 4

/* Writer buffer: large enough that writes are few, and > the largest record. */
#define S_WRITE_BUF_SIZE (1u << 20)

/* .npy preamble: magic, two version bytes, then a u16 (v1) or u32 (v2/3) length. */
#define S_NPY_MAGIC     "\x93NUMPY"
#define S_NPY_MAGIC_LEN 6

/* Longest key or descr string kept from a .npy header, including the NUL. */
#define S_NPY_STR_MAX 32

/* Shape entries stored; a longer shape is still counted (and then refused). */
#define S_NPY_RANK_MAX 4

struct vecfile {
    char *path;              /* the path as given to vecfile_open (owned) */
    vecfile_format_t format; /* from the path's extension */
    void *map;               /* the read-only mapping of the whole file */
    size_t map_size;         /* bytes mapped: the file size */
    const uint8_t *rows;     /* first record: map for vecs, after the header for npy */
    size_t count;            /* records in the file, >= 1 */
    size_t dim;              /* values per record, 1..VECFILE_DIM_MAX */
    size_t elem_size;        /* bytes per value: 4, or 1 for bvecs */
    size_t header_size;      /* bytes in front of each record's values: 4 vecs, 0 npy */
    size_t record_size;      /* header_size + dim * elem_size */
};

struct vecfile_writer {
    char *path;              /* final name (owned) */
    char *tmp_path;          /* path + ".tmp", written until close (owned) */
    vecfile_format_t format; /* fvecs, ivecs or bvecs */
    size_t dim;              /* values per record */
    size_t elem_size;        /* bytes per value */
    int fd;                  /* the temporary file; -1 once closed */
    uint8_t *buf;            /* bytes not yet written (owned, S_WRITE_BUF_SIZE) */
    size_t buf_len;          /* bytes pending in buf */
    shoal_err_t first_err;   /* first failure; code SHOAL_OK while all is well */
};

static const struct {
    const char *ext;         /* extension, with its dot */
    vecfile_format_t format; /* what it means */
    const char *name;        /* for messages */
} s_formats[] = {
    {".fvecs", VECFILE_FVECS, "fvecs"},
    {".ivecs", VECFILE_IVECS, "ivecs"},
    {".bvecs", VECFILE_BVECS, "bvecs"},
    {".npy", VECFILE_NPY, "npy"},
};

#define S_NFORMATS (sizeof s_formats / sizeof s_formats[0])

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */
/* ------------------------------------------------------------------------ */

/* *out = a * b; false (and *out untouched) if that overflows size_t. */
static bool s_size_mul(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > SIZE_MAX / a)
        return false;
    *out = a * b;
    return true;
}

/* *out = a + b; false (and *out untouched) if that overflows size_t. */
static bool s_size_add(size_t a, size_t b, size_t *out)
{
    if (b > SIZE_MAX - a)
        return false;
    *out = a + b;
    return true;
}

static const char *s_format_name(vecfile_format_t format)
{
    for (size_t i = 0; i < S_NFORMATS; i++)
        if (s_formats[i].format == format)
            return s_formats[i].name;
    return "unknown";
}

/* Bytes per value of a vecs format. */
static size_t s_elem_size(vecfile_format_t format)
{
    return format == VECFILE_BVECS ? 1 : 4;
}

/* ASCII-only case-insensitive equality, independent of the locale. */
static bool s_ascii_equal_nocase(const char *a, const char *b)
{
    for (;; a++, b++) {
        unsigned char ca = (unsigned char)*a, cb = (unsigned char)*b;
        if (ca >= 'A' && ca <= 'Z')
            ca = (unsigned char)(ca - 'A' + 'a');
        if (cb >= 'A' && cb <= 'Z')
            cb = (unsigned char)(cb - 'A' + 'a');
        if (ca != cb)
            return false;
        if (ca == '\0')
            return true;
    }
}

/* Finds a known extension on path's last component; false if there is none. */
static bool s_match_extension(const char *path, vecfile_format_t *format)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *dot = strrchr(base, '.');
    if (!dot)
        return false;
    for (size_t i = 0; i < S_NFORMATS; i++) {
        if (s_ascii_equal_nocase(dot, s_formats[i].ext)) {
            *format = s_formats[i].format;
            return true;
        }
    }
    return false;
}

int vecfile_format_from_path(const char *path, vecfile_format_t *format, shoal_err_t *err)
{
    if (!path || !format)
        return shoal_err_set(err, SHOAL_EINVAL, "vecfile: no path given");
    if (!s_match_extension(path, format))
        return shoal_err_set(err, SHOAL_EINVAL,
                             "%s: unknown vector file extension; expected .fvecs, .ivecs, "
                             ".bvecs or .npy",
                             path);
    return SHOAL_OK;
}

/* ------------------------------------------------------------------------ */
/* Opening: vecs                                                            */
/* ------------------------------------------------------------------------ */

/* Reads the first record's dim and checks that the size is whole records. */
static int s_open_vecs(vecfile_t *vf, shoal_err_t *err)
{
    vf->elem_size = s_elem_size(vf->format);
    vf->header_size = S_VECS_HEADER;
    vf->rows = vf->map;

    if (vf->map_size < S_VECS_HEADER)
        return shoal_err_set(err, SHOAL_EFORMAT,
                             "%s: %zu bytes is too short for a record header (%d bytes); "
                             "truncated?",
                             vf->path, vf->map_size, S_VECS_HEADER);

    int32_t first;
    memcpy(&first, vf->rows, sizeof first);
    if (first < 1 || first > VECFILE_DIM_MAX)
        return shoal_err_set(err, SHOAL_EFORMAT,
                             "%s: record 0 has dim %" PRId32 ", expected 1 to %d; "
                             "not a .%s file?",
                             vf->path, first, VECFILE_DIM_MAX, s_format_name(vf->format));
    vf->dim = (size_t)first;

    /* dim <= VECFILE_DIM_MAX, so this cannot overflow; checked all the same. */
    size_t values;
    if (!s_size_mul(vf->dim, vf->elem_size, &values) ||
        !s_size_add(values, vf->header_size, &vf->record_size))
        return shoal_err_set(err, SHOAL_EFORMAT, "%s: dim %zu is too large", vf->path, vf->dim);

    size_t whole = vf->map_size / vf->record_size;
    size_t over = vf->map_size % vf->record_size;
    if (over != 0)
        return shoal_err_set(err, SHOAL_EFORMAT,
                             "%s: %zu bytes is not a whole number of %zu-byte records "
                             "(dim %zu): %zu whole records and %zu bytes over; truncated?",
                             vf->path, vf->map_size, vf->record_size, vf->dim, whole, over);
    vf->count = whole;
    return SHOAL_OK;
}

/* ------------------------------------------------------------------------ */
/* Opening: npy header parsing                                              */
/* ------------------------------------------------------------------------ */

/* A cursor over the header text; messages give offsets within it. */
typedef struct {
    const char *start; /* first character of the header dict */
    const char *pos;   /* next unread character */
    const char *end;   /* one past the header's last character */
    const char *path;  /* file name for messages (borrowed) */
    shoal_err_t *err;  /* where errors go (may be NULL) */
} npy_scan_t;

/* What the header says; bits of `seen` mark the keys found. */
typedef struct {
    char descr[S_NPY_STR_MAX];    /* the 'descr' value */
    bool fortran_order;           /* the 'fortran_order' value */
    size_t shape[S_NPY_RANK_MAX]; /* the first S_NPY_RANK_MAX entries of 'shape' */
    size_t rank;                  /* number of entries in 'shape' */
    unsigned seen;                /* S_KEY_* bits */
} npy_header_t;

enum { S_KEY_DESCR = 1u, S_KEY_FORTRAN = 2u, S_KEY_SHAPE = 4u };

static int s_scan_error(npy_scan_t *sc, const char *what)
{
    return shoal_err_set(sc->err, SHOAL_EFORMAT, "%s: malformed .npy header at byte %zu: %s",
                         sc->path, (size_t)(sc->pos - sc->start), what);
}

static void s_skip_space(npy_scan_t *sc)
{
    while (sc->pos < sc->end && (*sc->pos == ' ' || *sc->pos == '\t' || *sc->pos == '\n' ||
                                 *sc->pos == '\r' || *sc->pos == '\f' || *sc->pos == '\v'))
        sc->pos++;
}

/* Skips whitespace and reports whether the next character is c (not consumed). */
static bool s_peek_char(npy_scan_t *sc, char c)
{
    s_skip_space(sc);
    return sc->pos < sc->end && *sc->pos == c;
}

static int s_expect_char(npy_scan_t *sc, char c, const char *what)
{
    if (!s_peek_char(sc, c))
        return s_scan_error(sc, what);
    sc->pos++;
    return SHOAL_OK;
}

/* A Python string literal in single or double quotes, without escapes. */
static int s_scan_string(npy_scan_t *sc, char *out, size_t cap)
{
    s_skip_space(sc);
    if (sc->pos >= sc->end || (*sc->pos != '\'' && *sc->pos != '"'))
        return s_scan_error(sc, "expected a quoted string");
    char quote = *sc->pos++;
    size_t len = 0;
    while (sc->pos < sc->end && *sc->pos != quote) {
        unsigned char c = (unsigned char)*sc->pos;
        if (c == '\\' || c < 0x20 || c >= 0x7f)
            return s_scan_error(sc, "unexpected character in a string");
        if (len + 1 >= cap)
            return s_scan_error(sc, "string too long");
        out[len++] = (char)c;
        sc->pos++;
    }
    if (sc->pos >= sc->end)
        return s_scan_error(sc, "unterminated string");
    sc->pos++;
    out[len] = '\0';
    return SHOAL_OK;
}

static bool s_is_name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/* Matches word at the cursor as a whole identifier. */
static bool s_scan_word(npy_scan_t *sc, const char *word)
{
    size_t len = strlen(word);
    if ((size_t)(sc->end - sc->pos) < len || memcmp(sc->pos, word, len) != 0)
        return false;
    if ((size_t)(sc->end - sc->pos) > len && s_is_name_char(sc->pos[len]))
        return false;
    sc->pos += len;
    return true;
}

static int s_scan_bool(npy_scan_t *sc, bool *out)
{
    s_skip_space(sc);
    if (s_scan_word(sc, "True"))
        *out = true;
    else if (s_scan_word(sc, "False"))
        *out = false;
    else
        return s_scan_error(sc, "expected True or False");
    return SHOAL_OK;
}

/* A non-negative decimal integer, with an optional Python 2 'L' suffix. */
static int s_scan_size(npy_scan_t *sc, size_t *out)
{
    s_skip_space(sc);
    if (sc->pos >= sc->end || *sc->pos < '0' || *sc->pos > '9')
        return s_scan_error(sc, "expected a non-negative integer in the shape");
    size_t value = 0;
    while (sc->pos < sc->end && *sc->pos >= '0' && *sc->pos <= '9') {
        if (!s_size_mul(value, 10, &value) || !s_size_add(value, (size_t)(*sc->pos - '0'), &value))
            return s_scan_error(sc, "integer in the shape is too large");
        sc->pos++;
    }
    if (sc->pos < sc->end && (*sc->pos == 'L' || *sc->pos == 'l'))
        sc->pos++;
    *out = value;
    return SHOAL_OK;
}

/* A tuple of integers: "()", "(5,)", "(5, 6)", "(5, 6,)". */
static int s_scan_shape(npy_scan_t *sc, npy_header_t *hdr)
{
    int rc = s_expect_char(sc, '(', "expected '(' to start the shape tuple");
    if (rc != SHOAL_OK)
        return rc;
    hdr->rank = 0;
    if (s_peek_char(sc, ')')) {
        sc->pos++;
        return SHOAL_OK;
    }
    for (;;) {
        size_t value = 0;
        rc = s_scan_size(sc, &value);
        if (rc != SHOAL_OK)
            return rc;
        if (hdr->rank < S_NPY_RANK_MAX)
            hdr->shape[hdr->rank] = value;
        hdr->rank++;
        if (s_peek_char(sc, ',')) {
            sc->pos++;
            if (s_peek_char(sc, ')')) {
                sc->pos++;
                return SHOAL_OK;
            }
            continue;
        }
        if (s_peek_char(sc, ')')) {
            /* "(5)" is the integer 5 in Python, not a tuple. */
            if (hdr->rank == 1)
                return s_scan_error(sc, "shape is not a tuple (a 1-tuple is written \"(5,)\")");
            sc->pos++;
            return SHOAL_OK;
        }
        return s_scan_error(sc, "expected ',' or ')' in the shape tuple");
    }
}

/* Parses one "key: value" pair into hdr. */
static int s_scan_item(npy_scan_t *sc, npy_header_t *hdr)
{
    char key[S_NPY_STR_MAX];
    int rc = s_scan_string(sc, key, sizeof key);
    if (rc != SHOAL_OK)
        return rc;
    rc = s_expect_char(sc, ':', "expected ':' after a key");
    if (rc != SHOAL_OK)
        return rc;

    unsigned bit;
    if (strcmp(key, "descr") == 0)
        bit = S_KEY_DESCR;
    else if (strcmp(key, "fortran_order") == 0)
        bit = S_KEY_FORTRAN;
    else if (strcmp(key, "shape") == 0)
        bit = S_KEY_SHAPE;
    else
        return shoal_err_set(sc->err, SHOAL_EFORMAT,
                             "%s: .npy header has an unknown key '%s' (expected 'descr', "
                             "'fortran_order' and 'shape')",
                             sc->path, key);
    if (hdr->seen & bit)
        return shoal_err_set(sc->err, SHOAL_EFORMAT, "%s: .npy header has key '%s' twice", sc->path,
                             key);
    hdr->seen |= bit;

    switch (bit) {
    case S_KEY_DESCR:
        /* A list is a structured dtype: well-formed, but not a float matrix. */
        if (s_peek_char(sc, '['))
            return shoal_err_set(sc->err, SHOAL_EUNSUPPORTED,
                                 "%s: .npy structured dtypes are not supported; only "
                                 "little-endian float32 ('<f4') is",
                                 sc->path);
        return s_scan_string(sc, hdr->descr, sizeof hdr->descr);
    case S_KEY_FORTRAN:
        return s_scan_bool(sc, &hdr->fortran_order);
    default:
        return s_scan_shape(sc, hdr);
    }
}

/* Parses the header dict text [text, text + len) into hdr. */
static int s_parse_npy_header(const char *path, const char *text, size_t len, npy_header_t *hdr,
                              shoal_err_t *err)
{
    npy_scan_t sc = {.start = text, .pos = text, .end = text + len, .path = path, .err = err};
    memset(hdr, 0, sizeof *hdr);

    int rc = s_expect_char(&sc, '{', "expected '{' to start the header dict");
    if (rc != SHOAL_OK)
        return rc;
    for (;;) {
        if (s_peek_char(&sc, '}'))
            break;
        rc = s_scan_item(&sc, hdr);
        if (rc != SHOAL_OK)
            return rc;
        if (s_peek_char(&sc, ',')) {
            sc.pos++;
            continue;
        }
        if (!s_peek_char(&sc, '}'))
            return s_scan_error(&sc, "expected ',' or '}' after a value");
    }
    sc.pos++;
    /* NumPy pads the header with spaces and ends it with '\n'. */
    s_skip_space(&sc);
    if (sc.pos != sc.end)
        return s_scan_error(&sc, "unexpected text after the header dict");

    static const struct {
        unsigned bit;
        const char *name;
    } required[] = {
        {S_KEY_DESCR, "descr"}, {S_KEY_FORTRAN, "fortran_order"}, {S_KEY_SHAPE, "shape"}};
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++)
        if (!(hdr->seen & required[i].bit))
            return shoal_err_set(err, SHOAL_EFORMAT, "%s: .npy header has no '%s' key", path,
                                 required[i].name);
    return SHOAL_OK;
}

/* ------------------------------------------------------------------------ */
/* Opening: npy                                                             */
/* ------------------------------------------------------------------------ */

/* The .npy preamble: magic, a supported version, and the header's length (*header_len_p),
 * which starts *prefix_p bytes in and must fit in the file. */
static int s_npy_preamble(const vecfile_t *vf, size_t *prefix_p, size_t *header_len_p,
                          shoal_err_t *err)
{
    const uint8_t *p = vf->map;
    size_t size = vf->map_size;

    if (size < S_NPY_MAGIC_LEN || memcmp(p, S_NPY_MAGIC, S_NPY_MAGIC_LEN) != 0)
        return shoal_err_set(err, SHOAL_EFORMAT,
                             "%s: not a .npy file: it does not start with \"\\x93NUMPY\"",
                             vf->path);
    if (size < S_NPY_MAGIC_LEN + 2)
        return shoal_err_set(err, SHOAL_EFORMAT,
                             "%s: .npy file of %zu bytes ends inside its preamble", vf->path, size);
    unsigned major = p[6], minor = p[7];
    if ((major < 1 || major > 3) || minor != 0)
        return shoal_err_set(err, SHOAL_EUNSUPPORTED,
                             "%s: .npy version %u.%u is not supported (1.0, 2.0 and 3.0 are)",
                             vf->path, major, minor);

    /* Version 1 has a u16 header length, versions 2 and 3 a u32; both little-endian. */
    size_t prefix = major == 1 ? 10 : 12;
    *prefix_p = prefix;
    if (size < prefix)
        return shoal_err_set(err, SHOAL_EFORMAT,
                             "%s: .npy file of %zu bytes ends inside its %zu-byte preamble",
                             vf->path, size, prefix);
    size_t header_len = (size_t)p[8] | (size_t)p[9] << 8;
    if (major != 1)
        header_len |= (size_t)p[10] << 16 | (size_t)p[11] << 24;
    if (header_len > size - prefix)
        return shoal_err_set(err, SHOAL_EFORMAT,
                             "%s: .npy header length %zu goes past the end of the file "
                             "(%zu bytes follow the %zu-byte preamble)",
                             vf->path, header_len, size - prefix, prefix);
    *header_len_p = header_len;
    return SHOAL_OK;
}

/* The header's array: little-endian float32 in C order, (N, D) or (D,), with N and D in range. */
static int s_npy_shape(const vecfile_t *vf, const npy_header_t *hdr, size_t *rows_p, size_t *dim_p,
                       shoal_err_t *err)
{
    if (strcmp(hdr->descr, "<f4") != 0 && strcmp(hdr->descr, "=f4") != 0)
        return shoal_err_set(err, SHOAL_EUNSUPPORTED,
                             "%s: .npy dtype '%s' is not supported; only little-endian float32 "
                             "('<f4') is",
                             vf->path, hdr->descr);
    if (hdr->fortran_order)
        return shoal_err_set(err, SHOAL_EUNSUPPORTED,
                             "%s: .npy array is in Fortran (column-major) order; only C order "
                             "is supported (save np.ascontiguousarray(a))",
                             vf->path);

    size_t rows, dim;
    if (hdr->rank == 2) {
        rows = hdr->shape[0];
        dim = hdr->shape[1];
    } else if (hdr->rank == 1) {
        rows = 1;
        dim = hdr->shape[0];
    } else {
        return shoal_err_set(err, SHOAL_EUNSUPPORTED,
                             "%s: .npy array has %zu dimensions; only (N, D) matrices and "
                             "(D,) vectors are supported",
                             vf->path, hdr->rank);
    }
    if (rows < 1)
        return shoal_err_set(err, SHOAL_EFORMAT, "%s: .npy shape has %zu rows, expected >= 1",
                             vf->path, rows);
    if (dim < 1 || dim > VECFILE_DIM_MAX)
        return shoal_err_set(err, SHOAL_EFORMAT, "%s: .npy shape has dim %zu, expected 1 to %d",
                             vf->path, dim, VECFILE_DIM_MAX);
    *rows_p = rows;
    *dim_p = dim;
    return SHOAL_OK;
}

/* A mapped .npy file's rows: preamble, header dict, array shape, then the data's exact size. */
static int s_open_npy(vecfile_t *vf, shoal_err_t *err)
{
    const uint8_t *p = vf->map;
    size_t size = vf->map_size;

    size_t prefix = 0, header_len = 0;
    int rc = s_npy_preamble(vf, &prefix, &header_len, err);
    if (rc != SHOAL_OK)
        return rc;

    npy_header_t hdr;
    rc = s_parse_npy_header(vf->path, (const char *)p + prefix, header_len, &hdr, err);
    if (rc != SHOAL_OK)
        return rc;

    size_t rows = 0, dim = 0;
    if ((rc = s_npy_shape(vf, &hdr, &rows, &dim, err)) != SHOAL_OK)
        return rc;

    size_t data_off = prefix + header_len;
    size_t need;
    if (!s_size_mul(rows, dim, &need) || !s_size_mul(need, sizeof(float), &need))
        return shoal_err_set(err, SHOAL_EFORMAT,
                             "%s: .npy shape (%zu, %zu) is too large to address", vf->path, rows,
                             dim);
    size_t have = size - data_off;
    if (have < need)
        return shoal_err_set(err, SHOAL_EFORMAT,
                             "%s: .npy shape (%zu, %zu) needs %zu data bytes, but only %zu "
                             "follow the %zu-byte header; truncated?",
                             vf->path, rows, dim, need, have, data_off);
    if (have > need)
        return shoal_err_set(err, SHOAL_EFORMAT,
                             "%s: .npy shape (%zu, %zu) needs %zu data bytes, but %zu follow "
                             "the %zu-byte header (%zu trailing bytes)",
                             vf->path, rows, dim, need, have, data_off, have - need);

    vf->rows = p + data_off;
    vf->count = rows;
    vf->dim = dim;
    vf->elem_size = sizeof(float);
    vf->header_size = 0;
    vf->record_size = dim * sizeof(float);
    return SHOAL_OK;
}

/* ------------------------------------------------------------------------ */
/* Open and close                                                           */
/* ------------------------------------------------------------------------ */

vecfile_t *vecfile_open(const char *path, shoal_err_t *err)
{
    vecfile_t *vf = NULL;
    int fd = -1;
    struct stat st;
    vecfile_format_t format;

    if (vecfile_format_from_path(path, &format, err) != SHOAL_OK)
        goto fail;
    vf = calloc(1, sizeof *vf);
    if (!vf || !(vf->path = strdup(path))) {
        shoal_err_set(err, SHOAL_ENOMEM, "%s: out of memory opening the file", path);
        goto fail;
    }
    vf->format = format;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int saved = errno;
        shoal_err_set(err, saved == ENOENT ? SHOAL_ENOTFOUND : SHOAL_EIO, "%s: cannot open: %s",
                      path, strerror(saved));
        goto fail;
    }
    if (fstat(fd, &st) != 0) {
        shoal_err_set(err, SHOAL_EIO, "%s: cannot stat: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        shoal_err_set(err, SHOAL_EINVAL, "%s: not a regular file", path);
        goto fail;
    }
    if (st.st_size <= 0) {
        shoal_err_set(err, SHOAL_EFORMAT, "%s: empty file", path);
        goto fail;
    }
    if ((uintmax_t)st.st_size > SIZE_MAX) {
        shoal_err_set(err, SHOAL_ELIMIT, "%s: %jd bytes is too large to map", path,
                      (intmax_t)st.st_size);
        goto fail;
    }
    vf->map_size = (size_t)st.st_size;
    vf->map = mmap(NULL, vf->map_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (vf->map == MAP_FAILED) {
        vf->map = NULL;
        shoal_err_set(err, SHOAL_EIO, "%s: cannot map %zu bytes: %s", path, vf->map_size,
                      strerror(errno));
        goto fail;
    }
    /* Only advice: readers mostly stream the file front to back. */
    (void)posix_madvise(vf->map, vf->map_size, POSIX_MADV_SEQUENTIAL);
    /* The mapping keeps the file; the descriptor is no longer needed. */
    close(fd);
    fd = -1;

    if ((format == VECFILE_NPY ? s_open_npy(vf, err) : s_open_vecs(vf, err)) != SHOAL_OK)
        goto fail;
    return vf;

fail:
    if (fd >= 0)
        close(fd);
    vecfile_close(&vf);
    return NULL;
}

void vecfile_close(vecfile_t **vf_p)
{
    if (!vf_p || !*vf_p)
        return;
    vecfile_t *vf = *vf_p;
    if (vf->map)
        munmap(vf->map, vf->map_size);
    free(vf->path);
    free(vf);
    *vf_p = NULL;
}

size_t vecfile_count(const vecfile_t *vf)
{
    return vf ? vf->count : 0;
}

size_t vecfile_dim(const vecfile_t *vf)
{
    return vf ? vf->dim : 0;
}

vecfile_format_t vecfile_format(const vecfile_t *vf)
{
    return vf ? vf->format : VECFILE_FVECS;
}

const char *vecfile_path(const vecfile_t *vf)
{
    return vf ? vf->path : NULL;
}

/* ------------------------------------------------------------------------ */
/* Reading                                                                  */
/* ------------------------------------------------------------------------ */

/* Checks the arguments of a read of rows [start, start + count). */
static int s_check_read(const vecfile_t *vf, size_t start, size_t count, const void *out,
                        shoal_err_t *err)
{
    if (!vf)
        return shoal_err_set(err, SHOAL_EINVAL, "vecfile: read from a NULL file");
    if (start > vf->count || count > vf->count - start)
        return shoal_err_set(err, SHOAL_EINVAL,
                             "%s: read of %zu rows from row %zu is out of range: the file has "
                             "%zu rows",
                             vf->path, count, start, vf->count);
    if (count > 0 && !out)
        return shoal_err_set(err, SHOAL_EINVAL, "%s: read of %zu rows into a NULL buffer", vf->path,
                             count);
    return SHOAL_OK;
}

/* Start of record i; i < vf->count, so the product is within the mapping. */
static const uint8_t *s_record(const vecfile_t *vf, size_t i)
{
    return vf->rows + i * vf->record_size;
}

/* Checks the dim header of record i of a vecs file. */
static int s_check_record(const vecfile_t *vf, size_t i, shoal_err_t *err)
{
    if (vf->header_size == 0)
        return SHOAL_OK;
    int32_t dim;
    memcpy(&dim, s_record(vf, i), sizeof dim);
    if (dim < 0 || (size_t)dim != vf->dim)
        return shoal_err_set(err, SHOAL_EFORMAT, "%s: record %zu has dim %" PRId32 ", expected %zu",
                             vf->path, i, dim, vf->dim);
    return SHOAL_OK;
}

int vecfile_read_f32(const vecfile_t *vf, size_t start, size_t count, float *out, shoal_err_t *err)
{
    int rc = s_check_read(vf, start, count, out, err);
    if (rc != SHOAL_OK)
        return rc;
    if (vf->format == VECFILE_IVECS)
        return shoal_err_set(err, SHOAL_EFORMAT,
                             "%s: an .ivecs file holds int32 ids, not float32 vectors; read it "
                             "with vecfile_read_i32",
                             vf->path);
    if (vf->format == VECFILE_NPY) {
        /* One contiguous block; count * record_size fits, being inside the file. */
        if (count > 0)
            memcpy(out, s_record(vf, start), count * vf->record_size);
        return SHOAL_OK;
    }
    for (size_t i = 0; i < count; i++) {
        rc = s_check_record(vf, start + i, err);
        if (rc != SHOAL_OK)
            return rc;
        const uint8_t *values = s_record(vf, start + i) + vf->header_size;
        float *row = out + i * vf->dim;
        if (vf->format == VECFILE_FVECS) {
            memcpy(row, values, vf->dim * sizeof(float));
        } else {
            for (size_t j = 0; j < vf->dim; j++)
                row[j] = (float)values[j];
        }
    }
    return SHOAL_OK;
}

int vecfile_read_i32(const vecfile_t *vf, size_t start, size_t count, int32_t *out,
                     shoal_err_t *err)
{
    int rc = s_check_read(vf, start, count, out, err);
    if (rc != SHOAL_OK)
        return rc;
    if (vf->format != VECFILE_IVECS)
        return shoal_err_set(err, SHOAL_EFORMAT,
                             "%s: int32 reads need an .ivecs file, this is .%s; read it with "
                             "vecfile_read_f32",
                             vf->path, s_format_name(vf->format));
    for (size_t i = 0; i < count; i++) {
        rc = s_check_record(vf, start + i, err);
        if (rc != SHOAL_OK)
            return rc;
        memcpy(out + i * vf->dim, s_record(vf, start + i) + vf->header_size,
               vf->dim * sizeof(int32_t));
    }
    return SHOAL_OK;
}

int vecfile_check(const vecfile_t *vf, shoal_err_t *err)
{
    if (!vf)
        return shoal_err_set(err, SHOAL_EINVAL, "vecfile: check of a NULL file");
    for (size_t i = 0; i < vf->count && vf->header_size > 0; i++) {
        int rc = s_check_record(vf, i, err);
        if (rc != SHOAL_OK)
            return rc;
    }
    return SHOAL_OK;
}

const float *vecfile_contiguous_f32(const vecfile_t *vf)
{
    if (!vf || vf->format != VECFILE_NPY)
        return NULL;
    /* The format aligns data to 16 or 64 bytes; a hand-made file might not. */
    if ((uintptr_t)vf->rows % _Alignof(float) != 0)
        return NULL;
    return (const float *)(const void *)vf->rows;
}

/* Opens path and reads all of it into a new array of float32 or int32 values. */
static void *s_load(const char *path, bool as_i32, size_t *n, size_t *dim, shoal_err_t *err)
{
    void *data = NULL;
    vecfile_t *vf = NULL;
    size_t values, bytes;
    int rc;

    if (n)
        *n = 0;
    if (dim)
        *dim = 0;
    vf = vecfile_open(path, err);
    if (!vf)
        goto fail;
    if (!s_size_mul(vf->count, vf->dim, &values) || !s_size_mul(values, 4, &bytes)) {
        shoal_err_set(err, SHOAL_ELIMIT, "%s: %zu x %zu values do not fit in memory", path,
                      vf->count, vf->dim);
        goto fail;
    }
    data = malloc(bytes);
    if (!data) {
        shoal_err_set(err, SHOAL_ENOMEM, "%s: cannot allocate %zu bytes for %zu x %zu values", path,
                      bytes, vf->count, vf->dim);
        goto fail;
    }
    rc = as_i32 ? vecfile_read_i32(vf, 0, vf->count, data, err)
                : vecfile_read_f32(vf, 0, vf->count, data, err);
    if (rc != SHOAL_OK)
        goto fail;
    if (n)
        *n = vf->count;
    if (dim)
        *dim = vf->dim;
    vecfile_close(&vf);
    return data;

fail:
    free(data);
    vecfile_close(&vf);
    return NULL;
}

float *vecfile_load_f32(const char *path, size_t *n, size_t *dim, shoal_err_t *err)
{
    return s_load(path, false, n, dim, err);
}

int32_t *vecfile_load_i32(const char *path, size_t *n, size_t *dim, shoal_err_t *err)
{
    return s_load(path, true, n, dim, err);
}

/* ------------------------------------------------------------------------ */
/* Writing                                                                  */
/* ------------------------------------------------------------------------ */

/* Records an I/O failure as the writer's first error (if none yet) and returns it. */
static int s_writer_fail(vecfile_writer_t *w, const char *what, int errnum, shoal_err_t *err)
{
    if (w->first_err.code == SHOAL_OK)
        shoal_err_set(&w->first_err, SHOAL_EIO, "%s: %s: %s", w->tmp_path, what, strerror(errnum));
    if (err)
        *err = w->first_err;
    return w->first_err.code;
}

/* Writes out the buffer; partial writes and EINTR are retried. */
static int s_writer_flush(vecfile_writer_t *w, shoal_err_t *err)
{
    size_t done = 0;
    while (done < w->buf_len) {
        ssize_t n = write(w->fd, w->buf + done, w->buf_len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return s_writer_fail(w, "write failed", n < 0 ? errno : EIO, err);
        done += (size_t)n;
    }
    w->buf_len = 0;
    return SHOAL_OK;
}

static int s_writer_put(vecfile_writer_t *w, const void *src, size_t len, shoal_err_t *err)
{
    const uint8_t *p = src;
    while (len > 0) {
        size_t room = S_WRITE_BUF_SIZE - w->buf_len;
        size_t chunk = len < room ? len : room;
        memcpy(w->buf + w->buf_len, p, chunk);
        w->buf_len += chunk;
        p += chunk;
        len -= chunk;
        if (w->buf_len == S_WRITE_BUF_SIZE) {
            int rc = s_writer_flush(w, err);
            if (rc != SHOAL_OK)
                return rc;
        }
    }
    return SHOAL_OK;
}

static void s_writer_free(vecfile_writer_t *w)
{
    if (!w)
        return;
    if (w->fd >= 0)
        close(w->fd);
    free(w->buf);
    free(w->tmp_path);
    free(w->path);
    free(w);
}

vecfile_writer_t *vecfile_writer_new(const char *path, vecfile_format_t format, size_t dim,
                                     shoal_err_t *err)
{
    vecfile_writer_t *w = NULL;
    vecfile_format_t named;

    if (!path) {
        shoal_err_set(err, SHOAL_EINVAL, "vecfile: writer needs a path");
        goto fail;
    }
    if (format == VECFILE_NPY) {
        shoal_err_set(err, SHOAL_EUNSUPPORTED,
                      "%s: writing .npy is not supported; write .fvecs, .ivecs or .bvecs", path);
        goto fail;
    }
    if (format != VECFILE_FVECS && format != VECFILE_IVECS && format != VECFILE_BVECS) {
        shoal_err_set(err, SHOAL_EINVAL, "%s: unknown vector file format %d", path, (int)format);
        goto fail;
    }
    /* A known extension that names another format would make the file unreadable. */
    if (s_match_extension(path, &named) && named != format) {
        shoal_err_set(err, SHOAL_EINVAL, "%s: writing %s records under a .%s name", path,
                      s_format_name(format), s_format_name(named));
        goto fail;
    }
    if (dim < 1 || dim > VECFILE_DIM_MAX) {
        shoal_err_set(err, SHOAL_EINVAL, "%s: dim %zu is out of range 1 to %d", path, dim,
                      VECFILE_DIM_MAX);
        goto fail;
    }

    w = calloc(1, sizeof *w);
    if (!w)
        goto fail_nomem;
    w->fd = -1;
    w->format = format;
    w->dim = dim;
    w->elem_size = s_elem_size(format);
    w->path = strdup(path);
    size_t tmp_size = strlen(path) + sizeof ".tmp";
    w->tmp_path = malloc(tmp_size);
    w->buf = malloc(S_WRITE_BUF_SIZE);
    if (!w->path || !w->tmp_path || !w->buf)
        goto fail_nomem;
    snprintf(w->tmp_path, tmp_size, "%s.tmp", path);

    w->fd = open(w->tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        shoal_err_set(err, SHOAL_EIO, "%s: cannot create: %s", w->tmp_path, strerror(errno));
        goto fail;
    }
    return w;

fail_nomem:
    shoal_err_set(err, SHOAL_ENOMEM, "%s: out of memory starting a writer", path);
fail:
    s_writer_free(w);
    return NULL;
}

int vecfile_writer_append(vecfile_writer_t *w, const void *data, size_t n, shoal_err_t *err)
{
    if (!w)
        return shoal_err_set(err, SHOAL_EINVAL, "vecfile: append to a NULL writer");
    if (w->first_err.code != SHOAL_OK) {
        if (err)
            *err = w->first_err;
        return w->first_err.code;
    }
    if (n > 0 && !data)
        return shoal_err_set(err, SHOAL_EINVAL, "%s: append of %zu records from NULL", w->path, n);

    const uint8_t *src = data;
    int32_t header = (int32_t)w->dim;
    size_t row_bytes = w->dim * w->elem_size;
    for (size_t i = 0; i < n; i++) {
        int rc = s_writer_put(w, &header, sizeof header, err);
        if (rc == SHOAL_OK)
            rc = s_writer_put(w, src + i * row_bytes, row_bytes, err);
        if (rc != SHOAL_OK)
            return rc;
    }
    return SHOAL_OK;
}

/*
 * fsyncs the directory holding path, so the rename itself survives a crash.
 * Some file systems cannot sync a directory (EINVAL); that is not an error.
 */
static int s_sync_parent_dir(const char *path, shoal_err_t *err)
{
    int rc = SHOAL_OK;
    int fd = -1;
    char *dir = strdup(path);
    if (!dir)
        return shoal_err_set(err, SHOAL_ENOMEM, "%s: out of memory syncing its directory", path);

    char *slash = strrchr(dir, '/');
    if (!slash)
        strcpy(dir, ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';

    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        rc = shoal_err_set(err, SHOAL_EIO, "%s: written, but cannot open its directory %s: %s",
                           path, dir, strerror(errno));
        goto fail;
    }
    if (fsync(fd) != 0 && errno != EINVAL) {
        rc = shoal_err_set(err, SHOAL_EIO, "%s: written, but syncing its directory %s failed: %s",
                           path, dir, strerror(errno));
        goto fail;
    }

fail:
    if (fd >= 0)
        close(fd);
    free(dir);
    return rc;
}

int vecfile_writer_close(vecfile_writer_t **w_p, shoal_err_t *err)
{
    if (!w_p || !*w_p)
        return shoal_err_set(err, SHOAL_EINVAL, "vecfile: close of a NULL writer");
    vecfile_writer_t *w = *w_p;
    *w_p = NULL;
    int fd;

    int rc = w->first_err.code;
    if (rc != SHOAL_OK)
        goto fail;
    rc = s_writer_flush(w, NULL);
    if (rc != SHOAL_OK)
        goto fail;
    if (fsync(w->fd) != 0) {
        rc = s_writer_fail(w, "fsync failed", errno, NULL);
        goto fail;
    }
    fd = w->fd;
    w->fd = -1;
    if (close(fd) != 0) {
        rc = s_writer_fail(w, "close failed", errno, NULL);
        goto fail;
    }
    if (rename(w->tmp_path, w->path) != 0) {
        int saved = errno;
        rc = shoal_err_set(&w->first_err, SHOAL_EIO, "%s: cannot rename to %s: %s", w->tmp_path,
                           w->path, strerror(saved));
        goto fail;
    }
    /* From here the file is in place; a failure only means it may not be durable. */
    rc = s_sync_parent_dir(w->path, err);
    s_writer_free(w);
    return rc;

fail:
    if (err)
        *err = w->first_err;
    unlink(w->tmp_path);
    s_writer_free(w);
    return rc;
}

void vecfile_writer_abort(vecfile_writer_t **w_p)
{
    if (!w_p || !*w_p)
        return;
    vecfile_writer_t *w = *w_p;
    if (w->fd >= 0) {
        close(w->fd);
        w->fd = -1;
    }
    unlink(w->tmp_path);
    s_writer_free(w);
    *w_p = NULL;
}

static int s_write_all(const char *path, vecfile_format_t format, const void *data, size_t n,
                       size_t dim, shoal_err_t *err)
{
    shoal_err_t local;
    if (!err)
        err = &local;
    vecfile_writer_t *w = vecfile_writer_new(path, format, dim, err);
    if (!w)
        return err->code;
    int rc = vecfile_writer_append(w, data, n, err);
    if (rc != SHOAL_OK) {
        vecfile_writer_abort(&w);
        return rc;
    }
    return vecfile_writer_close(&w, err);
}

int vecfile_write_fvecs(const char *path, const float *data, size_t n, size_t dim, shoal_err_t *err)
{
    return s_write_all(path, VECFILE_FVECS, data, n, dim, err);
}

int vecfile_write_ivecs(const char *path, const int32_t *data, size_t n, size_t dim,
                        shoal_err_t *err)
{
    return s_write_all(path, VECFILE_IVECS, data, n, dim, err);
}

int vecfile_write_bvecs(const char *path, const uint8_t *data, size_t n, size_t dim,
                        shoal_err_t *err)
{
    return s_write_all(path, VECFILE_BVECS, data, n, dim, err);
}
