/* b64.c -- see b64.h. */
#include "base/b64.h"
#include "base/err.h"

static const char enc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void b64_encode(struct sbuf *out, const uint8_t *src, size_t n)
{
    uint8_t *w = sbuf_reserve(out, b64_encoded_len(n));
    if (!w)
        return;
    uint8_t *start = w;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)src[i] << 16 | (uint32_t)src[i + 1] << 8 | src[i + 2];
        w[0] = (uint8_t)enc[v >> 18];
        w[1] = (uint8_t)enc[(v >> 12) & 63];
        w[2] = (uint8_t)enc[(v >> 6) & 63];
        w[3] = (uint8_t)enc[v & 63];
        w += 4;
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)src[i] << 16;
        w[0] = (uint8_t)enc[v >> 18];
        w[1] = (uint8_t)enc[(v >> 12) & 63];
        w[2] = '=';
        w[3] = '=';
        w += 4;
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)src[i] << 16 | (uint32_t)src[i + 1] << 8;
        w[0] = (uint8_t)enc[v >> 18];
        w[1] = (uint8_t)enc[(v >> 12) & 63];
        w[2] = (uint8_t)enc[(v >> 6) & 63];
        w[3] = '=';
        w += 4;
    }
    out->len += (size_t)(w - start);
}

static int dec(uint8_t c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

int b64_decode(struct sbuf *out, const uint8_t *src, size_t n)
{
    if (n % 4)
        return ERR_INVALID;
    for (size_t i = 0; i < n; i += 4) {
        int a = dec(src[i]), b = dec(src[i + 1]);
        int last = i + 4 == n;
        int c = (last && src[i + 2] == '=') ? -2 : dec(src[i + 2]);
        int d = (last && src[i + 3] == '=') ? -2 : dec(src[i + 3]);
        if (a < 0 || b < 0 || c == -1 || d == -1 || (c == -2 && d != -2))
            return ERR_INVALID;
        uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)(c < 0 ? 0 : c) << 6 | (uint32_t)(d < 0 ? 0 : d);
        sbuf_putc(out, (uint8_t)(v >> 16));
        if (c >= 0)
            sbuf_putc(out, (uint8_t)(v >> 8));
        if (d >= 0)
            sbuf_putc(out, (uint8_t)v);
    }
    return sbuf_ok(out) ? 0 : ERR_NOMEM;
}
