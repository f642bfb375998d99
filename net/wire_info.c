/*
 * wire_info.c - the "info" map that replies carry (docs/protocol.md, section
 * 5): a builder for servers, and readers (one line of text, a number, a
 * string or a size by dotted path) for the CLI and tests.
 *
 * The builder is a msgpack_packer over an sbuffer. It remembers the first
 * failed allocation and ignores every call after it, so a server builds the
 * whole map and checks once. It does not count entries against the sizes
 * given to wire_info_map / wire_info_array: wire_reply_encode walks the finished bytes and
 * refuses a map that is incomplete, overfull or of the wrong kinds, which
 * catches the same mistakes without a second bookkeeping scheme here.
 */
#include "net/wire.h"
#include "net/wire_private.h"

#include <inttypes.h>
#include <math.h>
#include <msgpack.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct wire_info {
    msgpack_sbuffer sbuf; /* the map's bytes */
    msgpack_packer pk;    /* writes into sbuf */
    int failed;           /* an allocation failed; later calls do nothing */
};

/* ------------------------------------------------------------------------ */
/* Building                                                                 */
/* ------------------------------------------------------------------------ */

wire_info_t *wire_info_new(void)
{
    wire_info_t *info = calloc(1, sizeof *info);
    if (!info)
        return NULL;
    msgpack_sbuffer_init(&info->sbuf);
    msgpack_packer_init(&info->pk, &info->sbuf, msgpack_sbuffer_write);
    return info;
}

void wire_info_destroy(wire_info_t **info_p)
{
    if (!info_p || !*info_p)
        return;
    msgpack_sbuffer_destroy(&(*info_p)->sbuf);
    free(*info_p);
    *info_p = NULL;
}

static bool s_usable(const wire_info_t *info)
{
    return info && !info->failed;
}

static void s_note(wire_info_t *info, int rc)
{
    if (rc != 0)
        info->failed = 1;
}

void wire_info_map(wire_info_t *info, size_t n)
{
    if (s_usable(info))
        s_note(info, msgpack_pack_map(&info->pk, n));
}

void wire_info_array(wire_info_t *info, size_t n)
{
    if (s_usable(info))
        s_note(info, msgpack_pack_array(&info->pk, n));
}

void wire_info_key(wire_info_t *info, const char *key)
{
    wire_info_str(info, key);
}

void wire_info_u64(wire_info_t *info, uint64_t value)
{
    if (s_usable(info))
        s_note(info, msgpack_pack_uint64(&info->pk, value));
}

void wire_info_i64(wire_info_t *info, int64_t value)
{
    if (s_usable(info))
        s_note(info, msgpack_pack_int64(&info->pk, value));
}

void wire_info_f64(wire_info_t *info, double value)
{
    if (s_usable(info))
        s_note(info, msgpack_pack_double(&info->pk, value));
}

void wire_info_str(wire_info_t *info, const char *value)
{
    if (!s_usable(info))
        return;
    if (!value)
        value = "";
    size_t len = strlen(value);
    s_note(info, msgpack_pack_str(&info->pk, len));
    if (!info->failed)
        s_note(info, msgpack_pack_str_body(&info->pk, value, len));
}

int wire_info_failed(const wire_info_t *info)
{
    return !info || info->failed;
}

const void *wire_info_data(const wire_info_t *info)
{
    return info ? info->sbuf.data : NULL;
}

size_t wire_info_len(const wire_info_t *info)
{
    return info ? info->sbuf.size : 0;
}

/* ------------------------------------------------------------------------ */
/* Checking                                                                 */
/* ------------------------------------------------------------------------ */

static bool s_is_number(const msgpack_object *obj)
{
    return obj->type == MSGPACK_OBJECT_POSITIVE_INTEGER ||
           obj->type == MSGPACK_OBJECT_NEGATIVE_INTEGER || obj->type == MSGPACK_OBJECT_FLOAT32 ||
           obj->type == MSGPACK_OBJECT_FLOAT64;
}

static bool s_value_ok(const msgpack_object *obj);

/* Depth is bounded by wire_mp_skip before anything is unpacked. */
int wire_info_object_ok(const msgpack_object *obj)
{
    if (obj->type != MSGPACK_OBJECT_MAP)
        return 0;
    for (uint32_t i = 0; i < obj->via.map.size; i++) {
        const msgpack_object_kv *kv = &obj->via.map.ptr[i];
        if (kv->key.type != MSGPACK_OBJECT_STR || !s_value_ok(&kv->val))
            return 0;
    }
    return 1;
}

/* A value in a map or an array: a number, a string, a map or an array of values. */
static bool s_value_ok(const msgpack_object *obj)
{
    if (s_is_number(obj) || obj->type == MSGPACK_OBJECT_STR)
        return true;
    if (obj->type == MSGPACK_OBJECT_MAP)
        return wire_info_object_ok(obj);
    if (obj->type != MSGPACK_OBJECT_ARRAY)
        return false;
    for (uint32_t i = 0; i < obj->via.array.size; i++)
        if (!s_value_ok(&obj->via.array.ptr[i]))
            return false;
    return true;
}

/*
 * Unpacks data as one info map into *obj. On success the zone holds the
 * objects and the caller destroys it; on failure nothing is left to free.
 */
static int s_open(const void *data, size_t len, msgpack_zone *zone, msgpack_object *obj)
{
    size_t end = 0;
    if (!data || len == 0 || len > WIRE_HEADER_MAX_BYTES)
        return SHOAL_EFORMAT;
    if (wire_mp_skip(data, len, &end, WIRE_DEPTH_MAX - 1) != WIRE_MP_OK || end != len)
        return SHOAL_EFORMAT;
    if (!msgpack_zone_init(zone, 1024))
        return SHOAL_ENOMEM;
    size_t off = 0;
    if (msgpack_unpack(data, len, &off, zone, obj) != MSGPACK_UNPACK_SUCCESS ||
        !wire_info_object_ok(obj)) {
        msgpack_zone_destroy(zone);
        return SHOAL_EFORMAT;
    }
    return 0;
}

int wire_info_bytes_ok(const void *data, size_t len)
{
    msgpack_zone zone;
    msgpack_object obj;
    if (s_open(data, len, &zone, &obj) != 0)
        return 0;
    msgpack_zone_destroy(&zone);
    return 1;
}

/* ------------------------------------------------------------------------ */
/* One line of text                                                         */
/* ------------------------------------------------------------------------ */

/* Text being written into a caller's buffer; what does not fit is dropped. */
typedef struct {
    char *buf;  /* the caller's buffer */
    size_t cap; /* its size */
    size_t len; /* bytes written, without the NUL */
    bool full;  /* something did not fit */
} s_text_t;

static void s_put(s_text_t *t, const char *s, size_t n)
{
    size_t room = t->cap - 1 - t->len;
    if (n > room) {
        n = room;
        t->full = true;
    }
    memcpy(t->buf + t->len, s, n);
    t->len += n;
    t->buf[t->len] = '\0';
}

static void s_puts(s_text_t *t, const char *s)
{
    s_put(t, s, strlen(s));
}

static void s_put_string(s_text_t *t, const char *s, size_t n)
{
    s_puts(t, "\"");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            s_put(t, esc, 2);
        } else if (c < 0x20 || c == 0x7f) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            s_puts(t, esc);
        } else {
            s_put(t, (const char *)&c, 1);
        }
    }
    s_puts(t, "\"");
}

/* The shortest decimal that reads back as the same value (as float if single). */
static void s_put_float(s_text_t *t, double v, bool single)
{
    char num[40];
    if (isnan(v)) {
        s_puts(t, "NaN");
        return;
    }
    if (isinf(v)) {
        s_puts(t, v < 0 ? "-Infinity" : "Infinity");
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(num, sizeof num, "%.*g", prec, v);
        if (single ? strtof(num, NULL) == (float)v : strtod(num, NULL) == v)
            break;
    }
    s_puts(t, num);
}

static void s_render(s_text_t *t, const msgpack_object *obj)
{
    char num[32];
    switch (obj->type) {
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        snprintf(num, sizeof num, "%" PRIu64, obj->via.u64);
        s_puts(t, num);
        break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        snprintf(num, sizeof num, "%" PRId64, obj->via.i64);
        s_puts(t, num);
        break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        s_put_float(t, obj->via.f64, obj->type == MSGPACK_OBJECT_FLOAT32);
        break;
    case MSGPACK_OBJECT_STR:
        s_put_string(t, obj->via.str.ptr, obj->via.str.size);
        break;
    case MSGPACK_OBJECT_MAP:
        s_puts(t, "{");
        for (uint32_t i = 0; i < obj->via.map.size; i++) {
            const msgpack_object_kv *kv = &obj->via.map.ptr[i];
            if (i > 0)
                s_puts(t, ", ");
            s_put_string(t, kv->key.via.str.ptr, kv->key.via.str.size);
            s_puts(t, ": ");
            s_render(t, &kv->val);
        }
        s_puts(t, "}");
        break;
    case MSGPACK_OBJECT_ARRAY:
        s_puts(t, "[");
        for (uint32_t i = 0; i < obj->via.array.size; i++) {
            if (i > 0)
                s_puts(t, ", ");
            s_render(t, &obj->via.array.ptr[i]);
        }
        s_puts(t, "]");
        break;
    default:
        /* wire_info_object_ok admitted nothing else. */
        break;
    }
}

int wire_info_to_text(const void *data, size_t len, char *buf, size_t cap)
{
    if (!buf || cap == 0)
        return SHOAL_ELIMIT;
    buf[0] = '\0';
    msgpack_zone zone;
    msgpack_object obj;
    int rc = s_open(data, len, &zone, &obj);
    if (rc)
        return rc;
    s_text_t t = {buf, cap, 0, false};
    s_render(&t, &obj);
    msgpack_zone_destroy(&zone);
    return t.full ? SHOAL_ELIMIT : 0;
}

/* ------------------------------------------------------------------------ */
/* Lookup by dotted path                                                    */
/* ------------------------------------------------------------------------ */

/*
 * Element `key` (len bytes of decimal digits, no sign, no spaces) of an
 * array, or NULL when the text is not such an index or is past the end.
 */
static const msgpack_object *s_element(const msgpack_object *array, const char *key, size_t len)
{
    if (len == 0 || len > 10)
        return NULL; /* msgpack arrays hold at most 2^32 - 1 elements: 10 digits */
    uint64_t index = 0;
    for (size_t i = 0; i < len; i++) {
        if (key[i] < '0' || key[i] > '9')
            return NULL;
        index = index * 10 + (uint64_t)(key[i] - '0');
    }
    return index < array->via.array.size ? &array->via.array.ptr[index] : NULL;
}

/* The value under one path component: a map's key, or an array's index. */
static const msgpack_object *s_child(const msgpack_object *obj, const char *key, size_t len)
{
    if (obj->type == MSGPACK_OBJECT_ARRAY)
        return s_element(obj, key, len);
    if (obj->type != MSGPACK_OBJECT_MAP)
        return NULL;
    for (uint32_t i = 0; i < obj->via.map.size; i++) {
        const msgpack_object_str *k = &obj->via.map.ptr[i].key.via.str;
        if (k->size == len && memcmp(k->ptr, key, len) == 0)
            return &obj->via.map.ptr[i].val;
    }
    return NULL;
}

/* The object at a dotted path below root, or NULL. */
static const msgpack_object *s_path(const msgpack_object *root, const char *path)
{
    const msgpack_object *cur = root;
    const char *seg = path;
    for (;;) {
        const char *dot = strchr(seg, '.');
        size_t seglen = dot ? (size_t)(dot - seg) : strlen(seg);
        cur = s_child(cur, seg, seglen);
        if (!cur || !dot)
            return cur;
        seg = dot + 1;
    }
}

/*
 * The value at path in an info map, handed to take (which stores it in out
 * or answers SHOAL_EFORMAT for a value of another kind): 0, SHOAL_ENOTFOUND,
 * or the map's or take's error.
 */
static int s_lookup(const void *data, size_t len, const char *path,
                    int (*take)(const msgpack_object *cur, void *out), void *out)
{
    msgpack_zone zone;
    msgpack_object obj;
    int rc = s_open(data, len, &zone, &obj);
    if (rc)
        return rc;
    const msgpack_object *cur = s_path(&obj, path);
    rc = cur ? take(cur, out) : SHOAL_ENOTFOUND;
    msgpack_zone_destroy(&zone);
    return rc;
}

typedef struct {
    char *buf;
    size_t cap;
} s_text_out_t;

static int s_take_str(const msgpack_object *cur, void *out)
{
    s_text_out_t *t = out;
    if (cur->type != MSGPACK_OBJECT_STR)
        return SHOAL_EFORMAT;
    size_t n = cur->via.str.size < t->cap ? cur->via.str.size : t->cap - 1;
    memcpy(t->buf, cur->via.str.ptr, n);
    t->buf[n] = '\0';
    return n < cur->via.str.size ? SHOAL_ELIMIT : 0;
}

static int s_take_number(const msgpack_object *cur, void *out)
{
    double *value = out;
    if (cur->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        *value = (double)cur->via.u64;
    else if (cur->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        *value = (double)cur->via.i64;
    else if (cur->type == MSGPACK_OBJECT_FLOAT32 || cur->type == MSGPACK_OBJECT_FLOAT64)
        *value = cur->via.f64;
    else
        return SHOAL_EFORMAT; /* a string, a map or an array: not a number */
    return 0;
}

static int s_take_len(const msgpack_object *cur, void *out)
{
    size_t *n = out;
    if (cur->type == MSGPACK_OBJECT_ARRAY)
        *n = cur->via.array.size;
    else if (cur->type == MSGPACK_OBJECT_MAP)
        *n = cur->via.map.size;
    else
        return SHOAL_EFORMAT; /* a number or a string has no elements */
    return 0;
}

int wire_info_lookup_str(const void *data, size_t len, const char *path, char *buf, size_t cap)
{
    if (!path || !buf || cap == 0)
        return SHOAL_EINVAL;
    buf[0] = '\0';
    s_text_out_t t = {buf, cap};
    return s_lookup(data, len, path, s_take_str, &t);
}

int wire_info_lookup(const void *data, size_t len, const char *path, double *value)
{
    if (!path || !value)
        return SHOAL_EINVAL;
    return s_lookup(data, len, path, s_take_number, value);
}

int wire_info_lookup_len(const void *data, size_t len, const char *path, size_t *n)
{
    if (!path || !n)
        return SHOAL_EINVAL;
    return s_lookup(data, len, path, s_take_len, n);
}
