/* transport_frame.c -- the pure codecs of the Raft transport: frames, HELLO, addresses.
 *
 * Frame (all integers little-endian; docs/DISK_FORMAT.md "Raft transport frames"):
 *   len u32 (bytes of type + payload, >= 1) | crc u32 | type u8 | payload (len - 1 bytes)
 *   crc = crc32c over the 4 len bytes, then the type byte and the payload, so a corrupted length
 *   is caught like a corrupted payload (the decoder first bounds len, then checks the CRC).
 *
 * Invariants:
 *  1. decode never reads outside `in`; it reports ERR_AGAIN until the whole frame is present and
 *     rejects a length over the bound BEFORE any byte of the payload is needed, so a peer cannot
 *     make the caller buffer more than max_payload + header bytes.
 *  2. Nothing here asserts on input bytes; every malformed input is an error return.
 */
#include "raft/transport.h"

#include "base/crc32c.h"
#include "base/hash.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint32_t frame_crc(const uint8_t len_le[4], uint8_t type, struct slice payload)
{
    uint32_t c = crc32c(0, len_le, 4);
    c = crc32c(c, &type, 1);
    return payload.len ? crc32c(c, payload.ptr, payload.len) : c;
}

int transport_frame_encode(uint8_t type, struct slice payload, struct sbuf *out)
{
    if (payload.len > UINT32_MAX - 1)
        return ERR_TOO_LARGE;
    uint8_t h[TRANSPORT_FRAME_HEADER];
    put_le32(h, (uint32_t)(payload.len + 1));
    put_le32(h + 4, frame_crc(h, type, payload));
    h[8] = type;
    sbuf_append(out, h, sizeof h);
    if (payload.len)
        sbuf_append(out, payload.ptr, payload.len);
    if (out->oom)
        return ERR_NOMEM;
    return out->too_big ? ERR_TOO_LARGE : 0;
}

size_t transport_frame_put(uint8_t *out, uint8_t type, struct slice payload)
{
    put_le32(out, (uint32_t)(payload.len + 1));
    put_le32(out + 4, frame_crc(out, type, payload));
    out[8] = type;
    if (payload.len)
        memcpy(out + TRANSPORT_FRAME_HEADER, payload.ptr, payload.len);
    return TRANSPORT_FRAME_HEADER + payload.len;
}

int transport_frame_decode(struct slice in, size_t max_payload, uint8_t *type,
                           struct slice *payload, size_t *consumed)
{
    if (in.len < 4)
        return ERR_AGAIN;
    uint32_t len = get_le32(in.ptr);
    if (len == 0)
        return ERR_INVALID;
    if ((uint64_t)len - 1 > (uint64_t)max_payload)
        return ERR_TOO_LARGE;
    if (in.len < 8 || in.len - 8 < (size_t)len)
        return ERR_AGAIN;
    struct slice p = slice_of(in.ptr + TRANSPORT_FRAME_HEADER, (size_t)len - 1);
    if (frame_crc(in.ptr, in.ptr[8], p) != get_le32(in.ptr + 4))
        return ERR_CORRUPT;
    *type = in.ptr[8];
    *payload = p;
    *consumed = 8 + (size_t)len;
    return 0;
}

static void put_le16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static uint16_t get_le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

void transport_hello_encode(const struct transport_hello *h, uint8_t out[TRANSPORT_HELLO_BYTES])
{
    put_le32(out, TRANSPORT_MAGIC);
    put_le16(out + 4, h->version_min);
    put_le16(out + 6, h->version_max);
    put_le64(out + 8, h->cluster_id);
    put_le64(out + 16, h->node_id);
    put_le64(out + 24, h->incarnation);
}

int transport_hello_decode(struct slice payload, struct transport_hello *out)
{
    if (payload.len != TRANSPORT_HELLO_BYTES || get_le32(payload.ptr) != TRANSPORT_MAGIC)
        return ERR_INVALID;
    out->version_min = get_le16(payload.ptr + 4);
    out->version_max = get_le16(payload.ptr + 6);
    out->cluster_id = get_le64(payload.ptr + 8);
    out->node_id = get_le64(payload.ptr + 16);
    out->incarnation = get_le64(payload.ptr + 24);
    if (out->version_min == 0 || out->version_min > out->version_max)
        return ERR_INVALID;
    return 0;
}

uint16_t transport_version_pick(const struct transport_hello *a, const struct transport_hello *b)
{
    uint16_t lo = a->version_min > b->version_min ? a->version_min : b->version_min;
    uint16_t hi = a->version_max < b->version_max ? a->version_max : b->version_max;
    return lo <= hi ? hi : 0;
}

int transport_parse_addr(const char *s, char *host, size_t host_cap, uint16_t *port)
{
    const char *h, *he, *colon;
    if (!s || !*s)
        return ERR_INVALID;
    if (s[0] == '[') {
        h = s + 1;
        he = strchr(h, ']');
        if (!he || he[1] != ':')
            return ERR_INVALID;
        colon = he + 1;
    } else {
        h = s;
        colon = strrchr(s, ':');
        if (!colon || memchr(s, ':', (size_t)(colon - s)))
            return ERR_INVALID; /* an IPv6 literal needs brackets */
        he = colon;
    }
    size_t hn = (size_t)(he - h);
    if (hn == 0 || hn >= host_cap || hn > TRANSPORT_HOST_MAX)
        return ERR_INVALID;
    const char *p = colon + 1;
    if (!*p || strlen(p) > 5)
        return ERR_INVALID;
    unsigned long v = 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9')
            return ERR_INVALID;
        v = v * 10 + (unsigned long)(*p - '0');
    }
    if (v == 0 || v > 65535)
        return ERR_INVALID;
    memcpy(host, h, hn);
    host[hn] = 0;
    *port = (uint16_t)v;
    return 0;
}

uint64_t transport_node_id(const char *name)
{
    uint64_t h = hash_bytes(name, strlen(name), 0x61796465725f6964ull);
    return h ? h : 1;
}
