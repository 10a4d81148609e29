/* url.c -- percent-decoding (RFC 3986 §2.1), query parameters and strict integers.
 *
 * Invariants:
 *  1. url_decode never writes more than src.len bytes, and writes dst[j] only after reading
 *     src[i] with i >= j, so decoding in place (dst == src.ptr) is safe.
 *  2. Query iteration never returns a slice outside the query and always advances *pos, so a loop
 *     over url_query_next terminates after at most query.len + 1 calls.
 *  3. Integer parsers reject rather than saturate: any input that is not exactly a decimal in
 *     range is ERR_BAD_PARAM (no sign for u64, no whitespace, no '+').
 */
#include "http/url.h"

#include "base/err.h"

#include <string.h>

static inline int hexval(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int url_decode(struct slice src, bool plus_as_space, uint8_t *dst, size_t *dst_len)
{
    size_t j = 0;
    for (size_t i = 0; i < src.len; i++) {
        uint8_t c = src.ptr[i];
        if (c == '%') {
            if (src.len - i < 3)
                return ERR_BAD_ESCAPE;
            int hi = hexval(src.ptr[i + 1]);
            int lo = hexval(src.ptr[i + 2]);
            if (hi < 0 || lo < 0)
                return ERR_BAD_ESCAPE;
            c = (uint8_t)(hi << 4 | lo);
            i += 2;
        } else if (c == '+' && plus_as_space) {
            c = ' ';
        }
        dst[j++] = c;
    }
    *dst_len = j;
    return 0;
}

int url_query_next(struct slice query, size_t *pos, struct slice *name, struct slice *value)
{
    while (*pos < query.len) {
        const uint8_t *s = query.ptr + *pos;
        size_t left = query.len - *pos;
        const uint8_t *amp = memchr(s, '&', left);
        size_t seg = amp ? (size_t)(amp - s) : left;
        *pos += seg + (amp != NULL);
        if (seg == 0)
            continue;
        const uint8_t *eq = memchr(s, '=', seg);
        if (eq) {
            *name = slice_of(s, (size_t)(eq - s));
            *value = slice_of(eq + 1, seg - (size_t)(eq - s) - 1);
        } else {
            *name = slice_of(s, seg);
            *value = slice_of(s + seg, 0);
        }
        return 1;
    }
    return 0;
}

int url_query_get(struct slice query, const char *name, struct slice *raw_value)
{
    struct slice want = slice_cstr(name);
    struct slice n, v;
    size_t pos = 0;
    while (url_query_next(query, &pos, &n, &v)) {
        if (slice_eq(n, want)) {
            *raw_value = v;
            return 1;
        }
    }
    return 0;
}

int url_parse_u64(struct slice s, uint64_t *out)
{
    if (s.len == 0)
        return ERR_BAD_PARAM;
    uint64_t x = 0;
    for (size_t i = 0; i < s.len; i++) {
        uint8_t c = s.ptr[i];
        if (c < '0' || c > '9')
            return ERR_BAD_PARAM;
        uint64_t d = (uint64_t)(c - '0');
        if (x > (UINT64_MAX - d) / 10)
            return ERR_BAD_PARAM;
        x = x * 10 + d;
    }
    *out = x;
    return 0;
}

int url_parse_i64(struct slice s, int64_t *out)
{
    bool neg = s.len > 0 && s.ptr[0] == '-';
    struct slice digits = neg ? slice_of(s.ptr + 1, s.len - 1) : s;
    uint64_t mag;
    if (url_parse_u64(digits, &mag) < 0)
        return ERR_BAD_PARAM;
    if (neg) {
        if (mag > (uint64_t)INT64_MAX + 1)
            return ERR_BAD_PARAM;
        *out = mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag;
    } else {
        if (mag > (uint64_t)INT64_MAX)
            return ERR_BAD_PARAM;
        *out = (int64_t)mag;
    }
    return 0;
}
