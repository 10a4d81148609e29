/* buf.h -- byte slices and growable byte buffers.
 *
 * struct slice is a borrowed view (pointer + length), never NUL-terminated by contract; who owns
 * the bytes and how long they live is said where a slice is handed out.
 * struct sbuf is an owned, growable buffer. Appends never fail silently: on allocation failure the
 * buffer is marked failed (oom = 1), later appends are ignored, and the owner checks sbuf_ok().
 * That keeps hot encoders free of per-call error plumbing while still never emitting a silently
 * truncated result.
 */
#ifndef AYDER_BASE_BUF_H
#define AYDER_BASE_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct slice {
    const uint8_t *ptr;
    size_t len;
};

#define SLICE_LIT(s) ((struct slice){(const uint8_t *)(s), sizeof(s) - 1})
static inline struct slice slice_of(const void *p, size_t n) { return (struct slice){(const uint8_t *)p, n}; }
static inline struct slice slice_cstr(const char *s) { return slice_of(s, strlen(s)); }
static inline bool slice_eq(struct slice a, struct slice b) { return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0); }
static inline bool slice_eq_cstr(struct slice a, const char *s) { return slice_eq(a, slice_cstr(s)); }
bool slice_eq_nocase(struct slice a, const char *lower);

struct sbuf {
    uint8_t *data;
    size_t len;
    size_t cap;
    size_t max; /* 0 = unbounded; exceeding it marks the buffer failed (too_big) */
    bool oom;
    bool too_big;
};

void sbuf_init(struct sbuf *b, size_t max);
void sbuf_free(struct sbuf *b);
static inline bool sbuf_ok(const struct sbuf *b) { return !b->oom && !b->too_big; }
static inline void sbuf_reset(struct sbuf *b) { b->len = 0; b->oom = false; b->too_big = false; }
/* Make room for n more bytes; returns the write pointer or NULL (buffer marked failed). */
uint8_t *sbuf_reserve(struct sbuf *b, size_t n);
void sbuf_append(struct sbuf *b, const void *p, size_t n);
static inline void sbuf_putc(struct sbuf *b, uint8_t c)
{
    if (b->len < b->cap) {
        b->data[b->len++] = c;
        return;
    }
    sbuf_append(b, &c, 1);
}
static inline void sbuf_puts(struct sbuf *b, const char *s) { sbuf_append(b, s, strlen(s)); }
void sbuf_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sbuf_put_u64(struct sbuf *b, uint64_t v);
void sbuf_put_i64(struct sbuf *b, int64_t v);
/* Remove the first n bytes. */
void sbuf_consume(struct sbuf *b, size_t n);

/* Little-endian fixed-width integers and unsigned LEB128 varints (used by on-disk codecs). */
static inline void put_le32(uint8_t *p, uint32_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24); }
static inline uint32_t get_le32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static inline void put_le64(uint8_t *p, uint64_t v) { put_le32(p, (uint32_t)v); put_le32(p + 4, (uint32_t)(v >> 32)); }
static inline uint64_t get_le64(const uint8_t *p) { return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32; }
/* A little-endian u64 from any address, for hot loops over bytes (CRC, hashing): one unaligned
 * load on a little-endian CPU (x86-64, aarch64; memcpy, so no alignment is assumed), byte-swapped
 * on a big-endian one, so results never depend on the host's byte order. */
static inline uint64_t load_le64(const void *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}
static inline void put_be16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static inline uint16_t get_be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline void put_be32(uint8_t *p, uint32_t v) { p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v; }
static inline uint32_t get_be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3]; }
static inline void put_be64(uint8_t *p, uint64_t v) { put_be32(p, (uint32_t)(v >> 32)); put_be32(p + 4, (uint32_t)v); }
static inline uint64_t get_be64(const uint8_t *p) { return (uint64_t)get_be32(p) << 32 | get_be32(p + 4); }

void sbuf_put_uvarint(struct sbuf *b, uint64_t v);
/* Zigzag signed varint as in protobuf/Kafka. */
void sbuf_put_varint(struct sbuf *b, int64_t v);
static inline void sbuf_put_le32(struct sbuf *b, uint32_t v) { uint8_t t[4]; put_le32(t, v); sbuf_append(b, t, 4); }
static inline void sbuf_put_le64(struct sbuf *b, uint64_t v) { uint8_t t[8]; put_le64(t, v); sbuf_append(b, t, 8); }
/* Length-prefixed (uvarint) bytes. */
static inline void sbuf_put_lp(struct sbuf *b, const void *p, size_t n) { sbuf_put_uvarint(b, n); sbuf_append(b, p, n); }

/* A bounds-checked reader over a slice. Every get returns false once the input is exhausted or
 * malformed (and stays failed), so decoders of untrusted bytes check once at the end. */
struct reader {
    const uint8_t *p;
    const uint8_t *end;
    bool bad;
};
static inline struct reader reader_of(struct slice s) { return (struct reader){s.ptr, s.ptr + s.len, false}; }
static inline size_t rd_left(const struct reader *r) { return (size_t)(r->end - r->p); }
/* The general (multi-byte, failing) cases of the inline readers below. */
bool rd_uvarint_slow(struct reader *r, uint64_t *v);
bool rd_bytes_slow(struct reader *r, size_t n, struct slice *out);
/* The readers below are inline with a fast path for the common case (a one-byte varint, enough
 * bytes left): record decoders call them several times per record. */
static inline bool rd_uvarint(struct reader *r, uint64_t *v)
{
    if (r->p < r->end && *r->p < 0x80 && !r->bad) {
        *v = *r->p++;
        return true;
    }
    return rd_uvarint_slow(r, v);
}
static inline bool rd_varint(struct reader *r, int64_t *v)
{
    uint64_t u;
    bool ok = rd_uvarint(r, &u); /* u = 0 on failure */
    *v = (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
    return ok;
}
static inline bool rd_bytes(struct reader *r, size_t n, struct slice *out)
{
    if (!r->bad && rd_left(r) >= n) {
        *out = slice_of(r->p, n);
        r->p += n;
        return true;
    }
    return rd_bytes_slow(r, n, out);
}
static inline bool rd_u8(struct reader *r, uint8_t *v)
{
    if (!r->bad && r->p < r->end) {
        *v = *r->p++;
        return true;
    }
    r->bad = true;
    *v = 0;
    return false;
}
bool rd_le32(struct reader *r, uint32_t *v);
bool rd_le64(struct reader *r, uint64_t *v);
/* uvarint length then that many bytes; fails if the length exceeds max. */
bool rd_lp(struct reader *r, size_t max, struct slice *out);

#endif
