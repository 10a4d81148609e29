/* buf.c -- see buf.h. */
#include "base/buf.h"
#include "base/alloc.h"

#include <stdarg.h>
#include <stdio.h>

bool slice_eq_nocase(struct slice a, const char *lower)
{
    size_t n = strlen(lower);
    if (a.len != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = a.ptr[i];
        if (c >= 'A' && c <= 'Z')
            c = (uint8_t)(c + 32);
        if (c != (uint8_t)lower[i])
            return false;
    }
    return true;
}

void sbuf_init(struct sbuf *b, size_t max)
{
    memset(b, 0, sizeof *b);
    b->max = max;
}

void sbuf_free(struct sbuf *b)
{
    xfree(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

uint8_t *sbuf_reserve(struct sbuf *b, size_t n)
{
    if (!sbuf_ok(b))
        return NULL;
    if (b->max && (n > b->max || b->len > b->max - n)) {
        b->too_big = true;
        return NULL;
    }
    if (b->cap - b->len < n) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->len < n)
            cap *= 2;
        uint8_t *d = xrealloc(b->data, cap);
        if (!d) {
            b->oom = true;
            return NULL;
        }
        b->data = d;
        b->cap = cap;
    }
    return b->data + b->len;
}

void sbuf_append(struct sbuf *b, const void *p, size_t n)
{
    if (n == 0)
        return;
    if (b->cap - b->len >= n && !b->oom && !b->too_big &&
        (!b->max || b->len + n <= b->max)) { /* fast path: room already there */
        memcpy(b->data + b->len, p, n);
        b->len += n;
        return;
    }
    uint8_t *w = sbuf_reserve(b, n);
    if (!w)
        return;
    memcpy(w, p, n);
    b->len += n;
}

void sbuf_printf(struct sbuf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof tmp) {
        sbuf_append(b, tmp, (size_t)n);
        return;
    }
    uint8_t *w = sbuf_reserve(b, (size_t)n + 1);
    if (!w)
        return;
    va_start(ap, fmt);
    vsnprintf((char *)w, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void sbuf_put_u64(struct sbuf *b, uint64_t v)
{
    char tmp[24];
    int i = 24;
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    size_t n = (size_t)(24 - i);
    if (b->cap - b->len >= n && sbuf_ok(b)) {
        memcpy(b->data + b->len, tmp + i, n);
        b->len += n;
        return;
    }
    sbuf_append(b, tmp + i, n);
}

void sbuf_put_i64(struct sbuf *b, int64_t v)
{
    if (v < 0) {
        sbuf_putc(b, '-');
        sbuf_put_u64(b, (uint64_t)0 - (uint64_t)v);
    } else {
        sbuf_put_u64(b, (uint64_t)v);
    }
}

void sbuf_consume(struct sbuf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

void sbuf_put_uvarint(struct sbuf *b, uint64_t v)
{
    uint8_t tmp[10];
    size_t i = 0;
    while (v >= 0x80) {
        tmp[i++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    tmp[i++] = (uint8_t)v;
    sbuf_append(b, tmp, i);
}

void sbuf_put_varint(struct sbuf *b, int64_t v)
{
    sbuf_put_uvarint(b, ((uint64_t)v << 1) ^ (uint64_t)(v >> 63));
}

bool rd_uvarint_slow(struct reader *r, uint64_t *v)
{
    uint64_t x = 0;
    if (!r->bad && rd_left(r) >= 10) {
        /* a whole varint fits: no bounds check per byte */
        const uint8_t *p = r->p;
        for (int shift = 0; shift < 63; shift += 7) {
            uint8_t c = *p++;
            x |= (uint64_t)(c & 0x7f) << shift;
            if (!(c & 0x80)) {
                r->p = p;
                *v = x;
                return true;
            }
        }
        if (*p > 1) /* the 10th byte holds bit 63 only */
            goto bad;
        r->p = p + 1;
        *v = x | (uint64_t)*p << 63;
        return true;
    }
    for (int shift = 0; shift < 64; shift += 7) {
        if (r->bad || r->p >= r->end)
            goto bad;
        uint8_t c = *r->p++;
        if (shift == 63 && c > 1)
            goto bad;
        x |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *v = x;
            return true;
        }
    }
bad:
    r->bad = true;
    *v = 0;
    return false;
}

bool rd_bytes_slow(struct reader *r, size_t n, struct slice *out)
{
    if (r->bad || rd_left(r) < n) {
        r->bad = true;
        *out = (struct slice){NULL, 0};
        return false;
    }
    *out = slice_of(r->p, n);
    r->p += n;
    return true;
}

bool rd_le32(struct reader *r, uint32_t *v)
{
    struct slice s;
    if (!rd_bytes(r, 4, &s)) {
        *v = 0;
        return false;
    }
    *v = get_le32(s.ptr);
    return true;
}

bool rd_le64(struct reader *r, uint64_t *v)
{
    struct slice s;
    if (!rd_bytes(r, 8, &s)) {
        *v = 0;
        return false;
    }
    *v = get_le64(s.ptr);
    return true;
}

bool rd_lp(struct reader *r, size_t max, struct slice *out)
{
    uint64_t n;
    if (!rd_uvarint(r, &n) || n > max) {
        r->bad = true;
        *out = (struct slice){NULL, 0};
        return false;
    }
    return rd_bytes(r, (size_t)n, out);
}
