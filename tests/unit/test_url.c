/* test_url.c -- percent-decoding, query parameters and strict integer parsing. */
#include "harness.h"

#include "base/err.h"
#include "http/url.h"

#include <stdlib.h>
#include <string.h>

static int decode(const char *s, bool plus, char *out, size_t *out_len)
{
    return url_decode(slice_cstr(s), plus, (uint8_t *)out, out_len);
}

TEST(url_decode_basic)
{
    char out[64];
    size_t n;
    REQUIRE(decode("abc", false, out, &n) == 0);
    CHECK(n == 3 && memcmp(out, "abc", 3) == 0);
    REQUIRE(decode("%41%62%7e%7E", false, out, &n) == 0);
    CHECK(n == 4 && memcmp(out, "Ab~~", 4) == 0);
    REQUIRE(decode("a+b%20c%2B", false, out, &n) == 0);
    CHECK(n == 6 && memcmp(out, "a+b c+", 6) == 0);
    REQUIRE(decode("a+b%20c%2B", true, out, &n) == 0);
    CHECK(n == 6 && memcmp(out, "a b c+", 6) == 0);
    REQUIRE(decode("", false, out, &n) == 0);
    CHECK(n == 0);
    REQUIRE(decode("%00x%FF", false, out, &n) == 0);
    CHECK(n == 3 && out[0] == 0 && out[1] == 'x' && (uint8_t)out[2] == 0xFF);
    REQUIRE(decode("%E2%82%AC", false, out, &n) == 0);
    CHECK(n == 3 && memcmp(out, "\xe2\x82\xac", 3) == 0);
}

TEST(url_decode_bad_escape)
{
    char out[64];
    size_t n = 99;
    CHECK_EQ_INT(decode("%G1", false, out, &n), ERR_BAD_ESCAPE);
    CHECK_EQ_INT(decode("%1G", false, out, &n), ERR_BAD_ESCAPE);
    CHECK_EQ_INT(decode("%4", false, out, &n), ERR_BAD_ESCAPE);
    CHECK_EQ_INT(decode("abc%", false, out, &n), ERR_BAD_ESCAPE);
    CHECK_EQ_INT(decode("%%41", false, out, &n), ERR_BAD_ESCAPE);
    CHECK_EQ_INT(decode("% 41", true, out, &n), ERR_BAD_ESCAPE);
    CHECK_EQ_INT(decode("%-1", false, out, &n), ERR_BAD_ESCAPE);
}

TEST(url_decode_in_place_and_exact_buffer)
{
    /* dst of exactly src.len bytes on the heap: ASan catches any overrun. */
    const char *s = "x%2Fy%3d+z";
    size_t len = strlen(s);
    uint8_t *buf = malloc(len);
    memcpy(buf, s, len);
    size_t n;
    REQUIRE(url_decode(slice_of(buf, len), true, buf, &n) == 0);
    CHECK(n == 6 && memcmp(buf, "x/y= z", 6) == 0);
    free(buf);
    /* The truncated escape at the very end of an exact-size source is not read past. */
    buf = malloc(2);
    memcpy(buf, "%4", 2);
    uint8_t out[2];
    CHECK_EQ_INT(url_decode(slice_of(buf, 2), false, out, &n), ERR_BAD_ESCAPE);
    free(buf);
}

TEST(url_query_get_cases)
{
    struct slice q = slice_cstr("a=1&bb=22&flag&empty=&a=dup&enc=%41+b&k=v=w");
    struct slice v;
    REQUIRE(url_query_get(q, "a", &v) == 1);
    CHECK(slice_eq_cstr(v, "1"));
    REQUIRE(url_query_get(q, "bb", &v) == 1);
    CHECK(slice_eq_cstr(v, "22"));
    REQUIRE(url_query_get(q, "flag", &v) == 1);
    CHECK(v.len == 0);
    REQUIRE(url_query_get(q, "empty", &v) == 1);
    CHECK(v.len == 0);
    REQUIRE(url_query_get(q, "enc", &v) == 1);
    CHECK(slice_eq_cstr(v, "%41+b")); /* raw, still encoded */
    REQUIRE(url_query_get(q, "k", &v) == 1);
    CHECK(slice_eq_cstr(v, "v=w"));
    CHECK(url_query_get(q, "b", &v) == 0);
    CHECK(url_query_get(q, "fla", &v) == 0);
    CHECK(url_query_get(q, "A", &v) == 0);
    CHECK(url_query_get(q, "", &v) == 0);
    CHECK(url_query_get(slice_cstr(""), "a", &v) == 0);
    CHECK(url_query_get(slice_of(NULL, 0), "a", &v) == 0);
    /* "=x": an empty name is a parameter too. */
    REQUIRE(url_query_get(slice_cstr("=x&y=1"), "", &v) == 1);
    CHECK(slice_eq_cstr(v, "x"));
}

TEST(url_query_next_iterates_in_order)
{
    struct slice q = slice_cstr("&a=1&&b&c=&=d&");
    const char *names[] = {"a", "b", "c", ""};
    const char *values[] = {"1", "", "", "d"};
    size_t pos = 0, i = 0;
    struct slice n, v;
    while (url_query_next(q, &pos, &n, &v)) {
        REQUIRE(i < 4);
        CHECK(slice_eq_cstr(n, names[i]));
        CHECK(slice_eq_cstr(v, values[i]));
        CHECK(n.ptr >= q.ptr && v.ptr + v.len <= q.ptr + q.len);
        i++;
    }
    CHECK_EQ_INT(i, 4);
    CHECK_EQ_INT(pos, q.len);
    CHECK(url_query_next(q, &pos, &n, &v) == 0);
}

TEST(url_parse_u64_cases)
{
    uint64_t x;
    REQUIRE(url_parse_u64(slice_cstr("0"), &x) == 0);
    CHECK(x == 0);
    REQUIRE(url_parse_u64(slice_cstr("007"), &x) == 0);
    CHECK(x == 7);
    REQUIRE(url_parse_u64(slice_cstr("18446744073709551615"), &x) == 0);
    CHECK(x == UINT64_MAX);
    const char *bad[] = {"", "-1", "+1", " 1", "1 ", "1a", "0x10", "18446744073709551616",
                         "99999999999999999999", "1.5", "1e3"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_EQ_INT(url_parse_u64(slice_cstr(bad[i]), &x), ERR_BAD_PARAM);
    /* Not NUL-terminated: only the slice is read. */
    REQUIRE(url_parse_u64(slice_of("123456", 3), &x) == 0);
    CHECK(x == 123);
}

TEST(url_parse_i64_cases)
{
    int64_t x;
    REQUIRE(url_parse_i64(slice_cstr("-1"), &x) == 0);
    CHECK(x == -1);
    REQUIRE(url_parse_i64(slice_cstr("-0"), &x) == 0);
    CHECK(x == 0);
    REQUIRE(url_parse_i64(slice_cstr("9223372036854775807"), &x) == 0);
    CHECK(x == INT64_MAX);
    REQUIRE(url_parse_i64(slice_cstr("-9223372036854775808"), &x) == 0);
    CHECK(x == INT64_MIN);
    const char *bad[] = {"", "-", "+1", "--1", "- 1", "9223372036854775808",
                         "-9223372036854775809", "1-", "12x", "18446744073709551616"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_EQ_INT(url_parse_i64(slice_cstr(bad[i]), &x), ERR_BAD_PARAM);
}
