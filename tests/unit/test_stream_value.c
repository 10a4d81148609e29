/* test_stream_value.c -- stream/value.h: paths, comparison, hashing, JSON output, unescaping. */
#include "harness.h"

#include "base/arena.h"
#include "base/err.h"
#include "base/json.h"
#include "stream/value.h"

#include <math.h>
#include <string.h>

static struct sval S(const char *s) { return (struct sval){.type = SV_STR, .len = (uint32_t)strlen(s), .p = s}; }
static struct sval SE(const char *s)
{
    struct sval v = S(s);
    v.escaped = true;
    return v;
}
static struct sval I(int64_t i) { return (struct sval){.type = SV_INT, .i = i}; }
static struct sval D(double d) { return (struct sval){.type = SV_DOUBLE, .d = d}; }
static struct sval B(bool b) { return (struct sval){.type = SV_BOOL, .b = b}; }
static struct sval N(void) { return (struct sval){.type = SV_NULL}; }
static struct sval M(void) { return (struct sval){.type = SV_MISSING}; }

static int cmpv(struct sval a, struct sval b)
{
    int c = 99;
    if (!sval_cmp(&a, &b, &c))
        return 99;
    return c;
}

TEST(spath_parse_forms)
{
    struct spath p;
    CHECK(spath_parse("a", 1, &p) == 0 && p.nseg == 1 && p.seg[0].len == 1);
    CHECK(spath_parse("a.b.c", 5, &p) == 0 && p.nseg == 3 && memcmp(p.seg[2].name, "c", 1) == 0);
    const char *t = "items[0].sku";
    CHECK(spath_parse(t, strlen(t), &p) == 0 && p.nseg == 3);
    CHECK(p.seg[1].name == NULL && p.seg[1].index == 0 && p.seg[2].len == 3);
    t = "m[2][10]";
    CHECK(spath_parse(t, strlen(t), &p) == 0 && p.nseg == 3 && p.seg[2].index == 10);
    t = "a.b.0";
    CHECK(spath_parse(t, strlen(t), &p) == 0 && p.nseg == 3 && p.seg[2].name && p.seg[2].len == 1);
    t = "`a.b`.c";
    CHECK(spath_parse(t, strlen(t), &p) == 0 && p.nseg == 2 && p.seg[0].len == 3 &&
          memcmp(p.seg[0].name, "a.b", 3) == 0);
    t = "[3]";
    CHECK(spath_parse(t, strlen(t), &p) == 0 && p.nseg == 1 && p.seg[0].index == 3);
    const char *bad[] = {"", ".", "a.", ".a", "a..b", "a[", "a[]", "a[x]", "a[01]", "`a", "a`b`",
                         "a.[0]", "a[0]b", "a[99999999999]", "``"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK(spath_parse(bad[i], strlen(bad[i]), &p) == ERR_INVALID);
    char deep[64] = "a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a"; /* 16 segments */
    CHECK(spath_parse(deep, strlen(deep), &p) == 0 && p.nseg == 16);
    strcat(deep, ".a");
    CHECK(spath_parse(deep, strlen(deep), &p) == ERR_INVALID);
    char longname[300];
    memset(longname, 'x', 256);
    CHECK(spath_parse(longname, 255, &p) == 0);
    CHECK(spath_parse(longname, 256, &p) == ERR_INVALID);
}

TEST(sval_numeric_compare)
{
    CHECK(cmpv(I(1), I(2)) == -1);
    CHECK(cmpv(I(2), D(2.0)) == 0);
    CHECK(cmpv(D(2.5), I(2)) == 1);
    CHECK(cmpv(I(-3), D(-2.5)) == -1);
    CHECK(cmpv(I(-2), D(-2.5)) == 1);
    /* int64 vs double compared exactly, not after rounding the int */
    CHECK(cmpv(I(INT64_MAX), D(9223372036854775808.0)) == -1);
    CHECK(cmpv(I(9007199254740993LL), D(9007199254740992.0)) == 1);
    CHECK(cmpv(I(INT64_MIN), D(-9223372036854775808.0)) == 0);
    CHECK(cmpv(I(0), D(-0.0)) == 0);
    CHECK(cmpv(I(5), D(INFINITY)) == -1);
    CHECK(cmpv(D(NAN), I(1)) == 99);
    CHECK(!sval_eq(&(struct sval){.type = SV_DOUBLE, .d = NAN}, &(struct sval){.type = SV_DOUBLE, .d = NAN}));
}

TEST(sval_null_and_kinds)
{
    CHECK(cmpv(N(), N()) == 99);
    CHECK(cmpv(M(), I(1)) == 99);
    CHECK(cmpv(I(1), S("1")) == 99); /* no string <-> number coercion */
    CHECK(cmpv(B(true), I(1)) == 99);
    CHECK(cmpv(B(false), B(true)) == -1);
    struct sval a = N(), b = N();
    CHECK(!sval_eq(&a, &b));
    struct sval j = {.type = SV_JSON, .p = "[1]", .len = 3};
    CHECK(cmpv(j, j) == 99);
}

TEST(sval_string_compare_escaped)
{
    CHECK(cmpv(S("abc"), S("abd")) == -1);
    CHECK(cmpv(S("ab"), S("abc")) == -1);
    CHECK(cmpv(S(""), S("")) == 0);
    CHECK(cmpv(SE("a\\u0062c"), S("abc")) == 0);
    CHECK(cmpv(SE("\\n"), S("\n")) == 0);
    CHECK(cmpv(SE("\\u00e9"), S("\xc3\xa9")) == 0);
    CHECK(cmpv(SE("\\ud83d\\ude00"), S("\xf0\x9f\x98\x80")) == 0);
    CHECK(cmpv(SE("\\\"x"), S("\"y")) == -1);
    /* code point order == UTF-8 byte order */
    CHECK(cmpv(S("\xef\xbf\xbd"), SE("\\ud83d\\ude00")) == -1);
    struct sval a = SE("a\\/b"), b = S("a/b");
    CHECK(sval_eq(&a, &b));
    CHECK(sval_hash(&a, 7) == sval_hash(&b, 7));
}

TEST(sval_hash_consistent_with_eq)
{
    struct sval a = I(42), b = D(42.0);
    CHECK(sval_eq(&a, &b) && sval_hash(&a, 1) == sval_hash(&b, 1));
    a = I(0), b = D(-0.0);
    CHECK(sval_eq(&a, &b) && sval_hash(&a, 1) == sval_hash(&b, 1));
    a = D(0.5), b = D(0.25);
    CHECK(sval_hash(&a, 1) != sval_hash(&b, 1));
    a = S("42"), b = I(42);
    CHECK(sval_hash(&a, 1) != sval_hash(&b, 1));
    /* long escaped strings (more than one 8-byte word) */
    a = SE("0123456789\\tabcdefghij\\u0041BCDEFG");
    b = S("0123456789\tabcdefghijABCDEFG");
    CHECK(sval_eq(&a, &b) && sval_hash(&a, 3) == sval_hash(&b, 3));
    for (int n = 0; n < 20; n++) {
        char plain[32], esc[64];
        size_t e = 0;
        for (int k = 0; k < n; k++) {
            plain[k] = (char)('a' + k);
            if (k % 3 == 0) {
                memcpy(esc + e, "\\u00", 4);
                snprintf(esc + e + 4, 3, "%02x", 'a' + k);
                e += 6;
            } else {
                esc[e++] = (char)('a' + k);
            }
        }
        plain[n] = 0;
        esc[e] = 0;
        a = SE(esc), b = S(plain);
        CHECK(sval_eq(&a, &b) && sval_hash(&a, 9) == sval_hash(&b, 9));
    }
    a = N(), b = M();
    CHECK(sval_hash(&a, 1) == sval_hash(&b, 1));
}

static void wj(struct sval v, const char *want)
{
    struct sbuf b;
    sbuf_init(&b, 0);
    struct jw w;
    jw_init(&w, &b);
    jw_arr_open(&w);
    sval_write_json(&w, &v);
    sval_write_json(&w, &v);
    jw_arr_close(&w);
    char exp[256];
    snprintf(exp, sizeof exp, "[%s,%s]", want, want);
    bool ok = b.len == strlen(exp) && memcmp(b.data, exp, b.len) == 0;
    if (!ok)
        fprintf(stderr, "got %.*s want %s\n", (int)b.len, (char *)b.data, exp);
    CHECK(ok);
    sbuf_free(&b);
}

TEST(sval_write_json_forms)
{
    wj(M(), "null");
    wj(N(), "null");
    wj(B(true), "true");
    wj(I(-7), "-7");
    wj(D(0.1), "0.1");
    wj(D(1e300), "1e+300");
    wj(D(2.0), "2.0");
    wj(D(-1e21), "-1e+21");
    wj(D(1.0 / 3), "0.3333333333333333");
    wj(D(INFINITY), "null");
    wj(S("a\"b"), "\"a\\\"b\"");
    wj(SE("a\\u0062"), "\"a\\u0062\"");
    wj((struct sval){.type = SV_BYTES, .p = "hi", .len = 2}, "\"aGk=\"");
    wj((struct sval){.type = SV_JSON, .p = "{\"x\":[1]}", .len = 9}, "{\"x\":[1]}");
    wj(S("\xff"), "\"/w==\""); /* invalid UTF-8 text goes out as base64, never as broken JSON */
}

TEST(sval_unescape_into_arena)
{
    struct arena a;
    arena_init(&a, 0);
    struct sval v = SE("x\\u00e9\\ud83d\\ude00\\n\\\\");
    CHECK(sval_unescape(&v, &a) == 0);
    CHECK(!v.escaped && v.len == 1 + 2 + 4 + 1 + 1);
    CHECK(memcmp(v.p, "x\xc3\xa9\xf0\x9f\x98\x80\n\\", v.len) == 0);
    struct sval p = S("plain");
    CHECK(sval_unescape(&p, &a) == 0 && p.len == 5);
    struct arena small;
    arena_init(&small, 1);
    struct sval big = SE("0123456789012345678901234567890123456789\\n");
    CHECK(sval_unescape(&big, &small) == ERR_NOMEM);
    arena_free(&small);
    arena_free(&a);
}
