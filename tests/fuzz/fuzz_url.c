/* fuzz_url.c -- libFuzzer target for percent-decoding, query iteration and integer parsing.
 *
 * Checks, for any input:
 *  1. url_decode writes at most src.len bytes; in-place decoding gives the same bytes; decoding the
 *     full percent-encoding of the output gives the output back; input without '%' or '+' decodes
 *     to itself.
 *  2. url_query_next returns slices inside the query, always advances, and url_query_get finds
 *     the first occurrence of a name the iterator produced.
 *  3. url_parse_u64 / url_parse_i64 agree with strtoull / strtoll on decimal-looking inputs and
 *     reject everything else.
 */
#include "base/assert.h"
#include "base/err.h"
#include "http/url.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static bool inside(struct slice s, const uint8_t *base, size_t len)
{
    return s.len == 0 ? (s.ptr >= base && s.ptr <= base + len)
                      : (s.ptr >= base && s.ptr + s.len <= base + len);
}

static void check_decode(const uint8_t *data, size_t size, bool plus)
{
    struct slice src = slice_of(data, size);
    uint8_t *out = malloc(size + 1);
    size_t out_len = 0;
    int rc = url_decode(src, plus, out, &out_len);
    uint8_t *inplace = malloc(size + 1);
    memcpy(inplace, data, size);
    size_t in_len = 0;
    int rc2 = url_decode(slice_of(inplace, size), plus, inplace, &in_len);
    ASSERT(rc == rc2);
    ASSERT(rc == 0 || rc == ERR_BAD_ESCAPE);
    if (rc == 0) {
        ASSERT(out_len <= size && in_len == out_len);
        ASSERT(memcmp(out, inplace, out_len) == 0);
        if (!memchr(data, '%', size) && !memchr(data, '+', size))
            ASSERT(out_len == size && memcmp(out, data, size) == 0);
        /* Round trip through full percent-encoding. */
        static const char hex[] = "0123456789ABCDEF";
        uint8_t *enc = malloc(out_len * 3 + 1);
        for (size_t i = 0; i < out_len; i++) {
            enc[3 * i] = '%';
            enc[3 * i + 1] = (uint8_t)hex[out[i] >> 4];
            enc[3 * i + 2] = (uint8_t)hex[out[i] & 15];
        }
        uint8_t *back = malloc(out_len * 3 + 1);
        size_t back_len = 0;
        ASSERT(url_decode(slice_of(enc, out_len * 3), plus, back, &back_len) == 0);
        ASSERT(back_len == out_len && memcmp(back, out, out_len) == 0);
        free(enc);
        free(back);
    }
    free(out);
    free(inplace);
}

static void check_query(const uint8_t *data, size_t size)
{
    struct slice q = slice_of(data, size);
    size_t pos = 0, prev = 0, count = 0;
    struct slice name, value, first_name = {0}, first_value = {0};
    while (url_query_next(q, &pos, &name, &value)) {
        ASSERT(pos > prev && pos <= size);
        prev = pos;
        ASSERT(inside(name, data, size) && inside(value, data, size));
        /* "=" is a parameter with an empty name and an empty value. */
        ASSERT(!memchr(name.ptr, '&', name.len) && !memchr(name.ptr, '=', name.len));
        ASSERT(!memchr(value.ptr, '&', value.len));
        if (count++ == 0) {
            first_name = name;
            first_value = value;
        }
        ASSERT(count <= size + 1);
    }
    if (count > 0 && first_name.len < 64 && !memchr(first_name.ptr, 0, first_name.len)) {
        char n[64];
        memcpy(n, first_name.ptr, first_name.len);
        n[first_name.len] = 0;
        struct slice v;
        ASSERT(url_query_get(q, n, &v) == 1);
        ASSERT(v.ptr == first_value.ptr && v.len == first_value.len);
    }
}

static void check_ints(const uint8_t *data, size_t size)
{
    if (size > 40)
        return;
    char s[48];
    memcpy(s, data, size);
    s[size] = 0;
    bool digits = size > 0 && strlen(s) == size;
    for (size_t i = 0; digits && i < size; i++)
        digits = s[i] >= '0' && s[i] <= '9';
    uint64_t u;
    int rc = url_parse_u64(slice_of(data, size), &u);
    if (!digits) {
        ASSERT(rc == ERR_BAD_PARAM);
    } else {
        errno = 0;
        unsigned long long ref = strtoull(s, NULL, 10);
        if (errno == ERANGE)
            ASSERT(rc == ERR_BAD_PARAM);
        else
            ASSERT(rc == 0 && u == ref);
    }
    bool neg = size > 0 && s[0] == '-';
    bool sdigits = size > (size_t)neg && strlen(s) == size;
    for (size_t i = neg; sdigits && i < size; i++)
        sdigits = s[i] >= '0' && s[i] <= '9';
    int64_t v;
    rc = url_parse_i64(slice_of(data, size), &v);
    if (!sdigits) {
        ASSERT(rc == ERR_BAD_PARAM);
    } else {
        errno = 0;
        long long ref = strtoll(s, NULL, 10);
        if (errno == ERANGE)
            ASSERT(rc == ERR_BAD_PARAM);
        else
            ASSERT(rc == 0 && v == ref);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_decode(data, size, false);
    check_decode(data, size, true);
    check_query(data, size);
    check_ints(data, size);
    return 0;
}
