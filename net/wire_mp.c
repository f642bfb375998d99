/*
 * wire_mp.c - walking msgpack bytes before msgpack-c is allowed to see them
 * (why: wire_private.h), plus small helpers the codec's files share.
 *
 * The walk is iterative over siblings and recursive over nesting, bounded by
 * its depth argument, and touches each byte once: O(len) time, O(depth)
 * stack, no allocation.
 */
#include "net/wire_private.h"

#include <msgpack.h>
#include <stdbool.h>
#include <string.h>

/* Reads an n-byte big-endian unsigned at data[*off], advancing *off. */
static bool s_read_be(const uint8_t *data, size_t len, size_t *off, int n, uint64_t *out)
{
    if ((size_t)n > len - *off)
        return false;
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | data[*off + (size_t)i];
    *off += (size_t)n;
    *out = v;
    return true;
}

int wire_mp_skip(const uint8_t *data, size_t len, size_t *off, int depth_left)
{
    if (depth_left <= 0)
        return WIRE_MP_TOO_DEEP;
    size_t o = *off;
    if (o >= len)
        return WIRE_MP_TRUNCATED;
    uint8_t b = data[o++];
    uint64_t items = 0; /* nested objects that follow */
    uint64_t skip = 0;  /* raw bytes that follow */
    uint64_t v = 0;
    int lenbytes = 0; /* width of a length or count field */
    bool is_map = false, is_array = false;

    if (b <= 0x7f || b >= 0xe0) {
        /* positive / negative fixint */
    } else if (b <= 0x8f) {
        items = 2u * (b & 0x0fu);
    } else if (b <= 0x9f) {
        items = b & 0x0fu;
    } else if (b <= 0xbf) {
        skip = b & 0x1fu;
    } else {
        /* One line per format byte, as in the msgpack spec's table. */
        /* clang-format off */
        switch (b) {
        case 0xc0: case 0xc2: case 0xc3: break;            /* nil, false, true */
        case 0xc1: return WIRE_MP_MALFORMED;                 /* never used */
        case 0xc4: case 0xd9: lenbytes = 1; break;           /* bin8, str8 */
        case 0xc5: case 0xda: lenbytes = 2; break;           /* bin16, str16 */
        case 0xc6: case 0xdb: lenbytes = 4; break;           /* bin32, str32 */
        case 0xc7: lenbytes = 1; skip = 1; break;            /* ext8: length, type */
        case 0xc8: lenbytes = 2; skip = 1; break;            /* ext16 */
        case 0xc9: lenbytes = 4; skip = 1; break;            /* ext32 */
        case 0xca: skip = 4; break;                          /* float32 */
        case 0xcb: skip = 8; break;                          /* float64 */
        case 0xcc: case 0xd0: skip = 1; break;               /* (u)int8 */
        case 0xcd: case 0xd1: skip = 2; break;               /* (u)int16 */
        case 0xce: case 0xd2: skip = 4; break;               /* (u)int32 */
        case 0xcf: case 0xd3: skip = 8; break;               /* (u)int64 */
        case 0xd4: skip = 2; break;                          /* fixext1: type + 1 */
        case 0xd5: skip = 3; break;                          /* fixext2 */
        case 0xd6: skip = 5; break;                          /* fixext4 */
        case 0xd7: skip = 9; break;                          /* fixext8 */
        case 0xd8: skip = 17; break;                         /* fixext16 */
        case 0xdc: lenbytes = 2; is_array = true; break;     /* array16 */
        case 0xdd: lenbytes = 4; is_array = true; break;     /* array32 */
        case 0xde: lenbytes = 2; is_map = true; break;       /* map16 */
        case 0xdf: lenbytes = 4; is_map = true; break;       /* map32 */
        default: return WIRE_MP_MALFORMED;
        }
        /* clang-format on */
    }
    if (lenbytes) {
        if (!s_read_be(data, len, &o, lenbytes, &v))
            return WIRE_MP_TRUNCATED;
        if (is_map)
            items = 2 * v;
        else if (is_array)
            items = v;
        else
            skip += v;
    }
    if (skip > len - o)
        return WIRE_MP_TRUNCATED;
    o += (size_t)skip;
    /* Every element takes at least one byte: a count above the bytes left is a lie. */
    if (items > len - o)
        return WIRE_MP_TRUNCATED;
    for (uint64_t i = 0; i < items; i++) {
        int rc = wire_mp_skip(data, len, &o, depth_left - 1);
        if (rc != WIRE_MP_OK)
            return rc;
    }
    *off = o;
    return WIRE_MP_OK;
}

int wire_mp_find_value(const uint8_t *data, size_t len, const char *key, size_t *voff, size_t *vlen)
{
    size_t o = 0;
    uint64_t pairs;
    if (len == 0)
        return 0;
    uint8_t b = data[o++];
    if (b >= 0x80 && b <= 0x8f)
        pairs = b & 0x0fu;
    else if (b == 0xde || b == 0xdf) {
        if (!s_read_be(data, len, &o, b == 0xde ? 2 : 4, &pairs))
            return 0;
    } else {
        return 0;
    }
    size_t klen = strlen(key);
    for (uint64_t i = 0; i < pairs; i++) {
        /* Is the key the string we look for? */
        size_t k = o;
        uint64_t slen = 0;
        bool is_str = true;
        uint8_t kb = data[k++];
        if (kb >= 0xa0 && kb <= 0xbf)
            slen = kb & 0x1fu;
        else if (kb >= 0xd9 && kb <= 0xdb) {
            if (!s_read_be(data, len, &k, 1 << (kb - 0xd9), &slen))
                return 0;
        } else {
            is_str = false;
        }
        bool match = is_str && slen == klen && klen <= len - k && memcmp(data + k, key, klen) == 0;
        if (wire_mp_skip(data, len, &o, WIRE_DEPTH_MAX) != WIRE_MP_OK)
            return 0;
        size_t start = o;
        if (wire_mp_skip(data, len, &o, WIRE_DEPTH_MAX) != WIRE_MP_OK)
            return 0;
        if (match) {
            *voff = start;
            *vlen = o - start;
            return 1;
        }
    }
    return 0;
}

const char *wire_mp_type_name(const msgpack_object *obj)
{
    switch (obj->type) {
    case MSGPACK_OBJECT_NIL:
        return "nil";
    case MSGPACK_OBJECT_BOOLEAN:
        return "bool";
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        return "uint";
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return "int";
    case MSGPACK_OBJECT_FLOAT32:
        return "float32";
    case MSGPACK_OBJECT_FLOAT64:
        return "float64";
    case MSGPACK_OBJECT_STR:
        return "str";
    case MSGPACK_OBJECT_ARRAY:
        return "array";
    case MSGPACK_OBJECT_MAP:
        return "map";
    case MSGPACK_OBJECT_BIN:
        return "bin";
    case MSGPACK_OBJECT_EXT:
        return "ext";
    }
    return "unknown";
}
