/*
 * wire_private.h - what the wire codec's files share (wire.c: names, checks,
 * init / fini; wire_decode.c and wire_encode.c: requests and replies from and
 * to frames; wire_mp.c: the msgpack walk; wire_info.c: the "info" map). Not
 * for use outside net/wire*.c.
 *
 * msgpack-c's unpacker allocates an array's or a map's elements as soon as it
 * reads the count, before it has seen them: five bytes (0xdf ff ff ff ff) ask
 * it for 128 GiB. So nothing from the wire reaches msgpack_unpack before
 * wire_mp_skip has walked it: every object complete, every count no larger
 * than the bytes left (an element takes at least one byte), nesting bounded.
 * After that the unpacker allocates at most a few dozen bytes per input byte.
 */
#ifndef SHOAL_WIRE_PRIVATE_H
#define SHOAL_WIRE_PRIVATE_H

#include "common/distance.h"
#include "net/wire_types.h"

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WIRE_HEADER_MAX_BYTES (1u << 20) /* frame 0 */
#define WIRE_HEADER_KEYS_MAX  64         /* top-level keys of a header */
#define WIRE_DEPTH_MAX        16         /* nesting, the header map being level 1 */

typedef enum {
    WIRE_MP_OK = 0,
    WIRE_MP_TRUNCATED = -1, /* the bytes end inside an object (or a count exceeds them) */
    WIRE_MP_MALFORMED = -2, /* 0xc1, the one byte msgpack never uses */
    WIRE_MP_TOO_DEEP = -3,  /* nested deeper than allowed */
} wire_mp_status_t;

/*
 * Walks the one msgpack object starting at data[*off] (nested at most
 * depth_left levels, the object itself counting as one) and advances *off
 * past it. Touches nothing outside data[0..len). Returns a wire_mp_status_t.
 */
int wire_mp_skip(const uint8_t *data, size_t len, size_t *off, int depth_left);

/*
 * Finds the value of the string key `key` in the map that is exactly
 * data[0..len) (already checked with wire_mp_skip) and returns its byte range
 * in *voff / *vlen. Returns 1 if found, 0 if not (or data is not a map).
 */
int wire_mp_find_value(const uint8_t *data, size_t len, const char *key, size_t *voff,
                       size_t *vlen);

/* "map", "str", "uint", ... for messages. */
const char *wire_mp_type_name(const msgpack_object *obj);

/*
 * Non-zero when obj is a valid "info" value: a map whose keys are strings
 * and whose values are integers, floats, strings, maps of the same kind, or
 * arrays whose elements are any of those values.
 */
int wire_info_object_ok(const msgpack_object *obj);

/*
 * Non-zero when data[0..len) is exactly one msgpack info map (as above),
 * nested so that it still fits in a header (WIRE_DEPTH_MAX - 1 levels).
 */
int wire_info_bytes_ok(const void *data, size_t len);

/* ---- wire.c: checks both directions use ---------------------------------- */

/* Parses a mode or metric name, ASCII case-insensitively; false if unknown. */
bool wire_mode_from_text(const char *text, size_t len, wire_mode_t *mode);
bool wire_metric_from_text(const char *text, size_t len, shoal_metric_t *metric);

/* True for WIRE_MODE_AUTO, _HNSW and _EXACT. */
bool wire_mode_known(wire_mode_t mode);

/* Index of the first byte outside [A-Za-z0-9_.-], or len when there is none. */
size_t wire_name_bad_at(const char *name, size_t len);

/* Index of the first byte outside printable ASCII (0x20..0x7e), or len. */
size_t wire_printable_bad_at(const char *text, size_t len);

/*
 * Copies wire text into buf (cap >= 8) for a message: at most 40 bytes,
 * anything outside printable ASCII (and the quote) shown as '?'. Returns buf.
 */
const char *wire_printable(const char *text, size_t len, char *buf, size_t cap);

/* a * b * c in size_t, or false when it overflows. */
bool wire_mul3(uint64_t a, uint64_t b, uint64_t c, size_t *out);

#endif
