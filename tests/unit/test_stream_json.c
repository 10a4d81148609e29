/* test_stream_json.c -- the JSON record scanner (stream/fmt/json.h): strictness list, extraction,
 * and a seeded differential test against jansson (same validity verdict, same extracted values). */
#include "harness.h"

#include "base/arena.h"
#include "base/err.h"
#include "stream/fmt/json.h"
#include "stream/value.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static bool valid(const char *s) { return json_scan_validate((const uint8_t *)s, strlen(s)); }

TEST(json_scan_strictness)
{
    const char *good[] = {
        "{}", " {\"a\":1} ", "[]", "0", "-0", "1.5e-3", "1E+2", "\"\"", "true", "false", "null",
        "{\"a\":[1,2,{\"b\":null}]}", "\"\\u0000\"", "\"\\ud83d\\ude00\"", "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"",
        "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"", "{\"a\":1,\"a\":2}", "1e400", "\t\n\r 5 \t",
        "123456789012345678901234567890",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        if (!valid(good[i]))
            fprintf(stderr, "should be valid: %s\n", good[i]);
        CHECK(valid(good[i]));
    }
    const char *bad[] = {
        "", " ", "{", "}", "{\"a\"}", "{\"a\":}", "{\"a\":1,}", "[1,]", "[,1]", "{a:1}", "{'a':1}",
        "01", "-", "+1", ".5", "5.", "1e", "1e+", "NaN", "Infinity", "-Infinity", "tru", "nul",
        "\"abc", "\"\\x\"", "\"\\u12\"", "\"\\ud800\"", "\"\\udc00\"", "\"\\ud800\\u0041\"",
        "\"\x01\"", "\"\xc0\xaf\"", "\"\xed\xa0\x80\"", "\"\xf4\x90\x80\x80\"", "\"\xff\"",
        "\"\xe2\x82\"", "1 2", "{} {}", "[1]x", "/* c */ 1", "\x0b" "1", "[1}", "{\"a\":1]",
        "\"\xc3\"",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (valid(bad[i]))
            fprintf(stderr, "should be invalid: %s\n", bad[i]);
        CHECK(!valid(bad[i]));
    }
    /* NUL inside input outside strings */
    CHECK(!json_scan_validate((const uint8_t *)"{}\0", 3));
    CHECK(!json_scan_validate((const uint8_t *)"\"a\0\"", 4));
    /* depth: 64 nested containers pass, 65 fail */
    char deep[200];
    for (int d = 63; d <= 66; d++) {
        int n = 0;
        for (int k = 0; k < d; k++)
            deep[n++] = '[';
        for (int k = 0; k < d; k++)
            deep[n++] = ']';
        deep[n] = 0;
        CHECK(valid(deep) == (d <= 64));
    }
}

struct ex {
    struct spath paths[8];
    struct sval out[8];
    size_t n;
};

static int extract(const char *rec, struct ex *x, const char **paths)
{
    struct sfmt *f;
    sfmt_json_new(&f);
    x->n = 0;
    for (; paths[x->n]; x->n++)
        if (spath_parse(paths[x->n], strlen(paths[x->n]), &x->paths[x->n]) != 0)
            return -999;
    const char *err = NULL;
    return f->ops->extract(f, slice_cstr(rec), x->paths, x->n, x->out, NULL, &err);
}

static bool is_str(const struct sval *v, const char *s)
{
    return v->type == SV_STR && v->len == strlen(s) && memcmp(v->p, s, v->len) == 0;
}

TEST(json_extract_paths)
{
    struct ex x;
    const char *rec = "{\"a\":{\"b\":{\"c\":7}},\"items\":[{\"sku\":\"x1\"},{\"sku\":\"x\\u0032\"}],"
                      "\"s\":\"hi\",\"d\":2.5,\"big\":9223372036854775808,\"t\":true,\"n\":null,"
                      "\"o\":{\"k\":[1, 2]},\"0\":\"zero\",\"a.b\":\"dotted\"}";
    const char *p[] = {"a.b.c", "items[1].sku", "s", "d", "big", "t", "n", "nope", NULL};
    CHECK(extract(rec, &x, p) == 0);
    CHECK(x.out[0].type == SV_INT && x.out[0].i == 7);
    CHECK(x.out[1].type == SV_STR && x.out[1].escaped);
    struct sval want = {.type = SV_STR, .p = "x2", .len = 2};
    CHECK(sval_eq(&x.out[1], &want));
    CHECK(is_str(&x.out[2], "hi") && !x.out[2].escaped);
    CHECK(x.out[3].type == SV_DOUBLE && x.out[3].d == 2.5);
    CHECK(x.out[4].type == SV_DOUBLE && x.out[4].d == 9223372036854775808.0);
    CHECK(x.out[5].type == SV_BOOL && x.out[5].b);
    CHECK(x.out[6].type == SV_NULL);
    CHECK(x.out[7].type == SV_MISSING);
    const char *p2[] = {"o", "o.k", "o.k[1]", "0", "`a.b`", "items[5]", "s.x", "a.b.c.d", NULL};
    CHECK(extract(rec, &x, p2) == 0);
    CHECK(x.out[0].type == SV_JSON && x.out[0].len == 12 && memcmp(x.out[0].p, "{\"k\":[1, 2]}", 12) == 0);
    CHECK(x.out[1].type == SV_JSON && x.out[1].len == 6);
    CHECK(x.out[2].type == SV_INT && x.out[2].i == 2);
    CHECK(is_str(&x.out[3], "zero"));
    CHECK(is_str(&x.out[4], "dotted"));
    CHECK(x.out[5].type == SV_MISSING && x.out[6].type == SV_MISSING && x.out[7].type == SV_MISSING);
    /* integer edges */
    const char *p3[] = {"a", "b", "c", "d", NULL};
    CHECK(extract("{\"a\":-9223372036854775808,\"b\":9223372036854775807,\"c\":-0,\"d\":-9223372036854775809}", &x, p3) == 0);
    CHECK(x.out[0].type == SV_INT && x.out[0].i == INT64_MIN);
    CHECK(x.out[1].type == SV_INT && x.out[1].i == INT64_MAX);
    CHECK(x.out[2].type == SV_INT && x.out[2].i == 0);
    CHECK(x.out[3].type == SV_DOUBLE);
    /* doubles parse correctly rounded */
    CHECK(extract("{\"a\":0.1,\"b\":1e-400,\"c\":2.2250738585072011e-308,\"d\":1.7976931348623157e308}", &x, p3) == 0);
    CHECK(x.out[0].d == 0.1 && x.out[1].d == 0.0 && x.out[2].d == 2.2250738585072011e-308 &&
          x.out[3].d == 1.7976931348623157e308);
    /* an out-of-range number fails the record only when extracted */
    const char *pa[] = {"a", NULL}, *pb[] = {"b", NULL};
    CHECK(extract("{\"a\":1e400,\"b\":1}", &x, pa) == ERR_CORRUPT);
    CHECK(extract("{\"a\":1e400,\"b\":1}", &x, pb) == 0 && x.out[0].i == 1);
}

/* Doubles take an exact fast path when short (Clinger) and strtod otherwise: either way the
 * result must be strtod's, bit for bit (including -0.0), around every edge of the fast path. */
TEST(json_extract_doubles_match_strtod)
{
    uint64_t st = 0x243F6A8885A308D3ull;
    const char *p[] = {"a", NULL};
    int fails = 0;
    for (int iter = 0; iter < 300000; iter++) {
        st ^= st << 13;
        st ^= st >> 7;
        st ^= st << 17;
        uint64_t r = st;
        char num[64];
        int n = 0;
        if (r & 1)
            num[n++] = '-';
        r >>= 1;
        int ndig = 1 + (int)(r % 22); /* up to 22 digits: across the 19-digit and 2^53 edges */
        r /= 22;
        int point = (int)(r % (unsigned)(ndig + 1)); /* digits before the point (0: "0.") */
        r /= (unsigned)(ndig + 1);
        uint64_t dg = st * 0x9E3779B97F4A7C15ull, dg2 = st ^ 0xD1B54A32D192ED03ull;
        if (point == 0)
            num[n++] = '0';
        for (int k = 0; k < ndig; k++) {
            if (k == point)
                num[n++] = '.';
            int d = (int)((dg >> 32) % 10);
            dg = dg * 6364136223846793005ull + dg2; /* a PCG-style step per digit */
            if (k == 0 && point > 0 && d == 0)
                d = 1 + (int)(r % 9); /* no leading zero before the point */
            num[n++] = (char)('0' + d);
        }
        if (r % 3 == 0)
            n += sprintf(num + n, "e%d", (int)((r >> 8) % 61) - 30);
        num[n] = 0;
        char rec[96];
        snprintf(rec, sizeof rec, "{\"a\":%s}", num);
        struct ex x;
        int rc = extract(rec, &x, p);
        double want = strtod(num, NULL);
        if (rc != 0 || (x.out[0].type == SV_DOUBLE &&
                        memcmp(&x.out[0].d, &want, sizeof want) != 0) ||
            (x.out[0].type == SV_INT && (double)x.out[0].i != want)) {
            if (fails++ < 5)
                fprintf(stderr, "number %s: rc %d type %d got %.17g want %.17g\n", num, rc,
                        x.out[0].type, x.out[0].d, want);
        }
    }
    CHECK(fails == 0);
    /* the edges by hand: 2^53 (+1), 19/20 digits, 10^22 / 10^23, -0.0, 0e999 */
    const char *edge[] = {"9007199254740992.0", "9007199254740993.0", "9007199254740993e-3",
                          "1234567890123456789e-5", "12345678901234567890e-5", "1e22", "1e23",
                          "1.5e-22", "1.5e-23", "-0.0", "0e999", "-0.000e-999", "8.0e22",
                          "4.9406564584124654e-324", "0.30000000000000004", "123.456e-2"};
    for (size_t i = 0; i < sizeof edge / sizeof edge[0]; i++) {
        char rec[96];
        snprintf(rec, sizeof rec, "{\"a\":%s}", edge[i]);
        struct ex x;
        double want = strtod(edge[i], NULL);
        CHECK(extract(rec, &x, p) == 0 && x.out[0].type == SV_DOUBLE &&
              memcmp(&x.out[0].d, &want, sizeof want) == 0);
    }
    /* Integers: up to 18 digits are converted while scanned, longer ones by number_value. */
    const char *ints[] = {"0", "-0", "7", "-7", "999999999999999999", "-999999999999999999",
                          "1000000000000000000", "9223372036854775807", "-9223372036854775808"};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        char rec[96];
        snprintf(rec, sizeof rec, "{\"a\":%s}", ints[i]);
        struct ex x;
        CHECK(extract(rec, &x, p) == 0 && x.out[0].type == SV_INT &&
              x.out[0].i == strtoll(ints[i], NULL, 10));
    }
    struct ex x;
    CHECK(extract("{\"a\":9223372036854775808}", &x, p) == 0 && x.out[0].type == SV_DOUBLE &&
          x.out[0].d == 9223372036854775808.0);
}

TEST(json_extract_duplicates_last_wins)
{
    struct ex x;
    const char *p[] = {"a.b", "a", "k", NULL};
    CHECK(extract("{\"a\":{\"b\":1},\"k\":1,\"a\":{\"c\":2},\"k\":\"two\"}", &x, p) == 0);
    CHECK(x.out[0].type == SV_MISSING);
    CHECK(x.out[1].type == SV_JSON);
    CHECK(is_str(&x.out[2], "two"));
    /* an escaped key matches its unescaped name */
    const char *q[] = {"ab", NULL};
    CHECK(extract("{\"a\\u0062\":5}", &x, q) == 0 && x.out[0].type == SV_INT && x.out[0].i == 5);
}

TEST(json_extract_errors_and_to_json)
{
    struct ex x;
    const char *p[] = {"a", NULL};
    CHECK(extract("[1,2]", &x, p) == ERR_INVALID);
    CHECK(extract("\"str\"", &x, p) == ERR_INVALID);
    CHECK(extract("{\"a\":1", &x, p) == ERR_CORRUPT);
    CHECK(extract("{\"a\":1}x", &x, p) == ERR_CORRUPT);
    CHECK(extract("{\"a\":\"\xff\",\"b\":1}", &x, p) == ERR_CORRUPT);
    CHECK(extract("{\"b\":[1,],\"a\":1}", &x, p) == ERR_CORRUPT);
    struct sfmt *f;
    sfmt_json_new(&f);
    struct sbuf b;
    sbuf_init(&b, 0);
    CHECK(f->ops->to_json(f, slice_cstr("  {\"a\" : 1}\n"), &b, NULL, NULL) == 0);
    CHECK(b.len == 9 && memcmp(b.data, "{\"a\" : 1}", 9) == 0);
    size_t before = b.len;
    CHECK(f->ops->to_json(f, slice_cstr("{\"a\" : }"), &b, NULL, NULL) == ERR_CORRUPT);
    CHECK(f->ops->to_json(f, slice_cstr("[]"), &b, NULL, NULL) == ERR_INVALID);
    CHECK(b.len == before);
    sbuf_free(&b);
    sfmt_free(f);
    /* more than 64 paths at once */
    struct spath many[70];
    struct sval out[70];
    char names[70][8];
    for (int i = 0; i < 70; i++) {
        snprintf(names[i], sizeof names[i], "k%d", i);
        spath_parse(names[i], strlen(names[i]), &many[i]);
    }
    CHECK(f->ops->extract(f, slice_cstr("{\"k3\":3,\"k69\":69}"), many, 70, out, NULL, NULL) == 0);
    CHECK(out[3].type == SV_INT && out[3].i == 3 && out[69].i == 69 && out[68].type == SV_MISSING);
}

/* ---- differential test against jansson --------------------------------------------------- */

static uint64_t rng_state;
static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state % n);
}

static const char *keys[] = {"a", "b", "c", "id", "x\\u0079", "\\u00e9t\\u00e9", "long_key_name", "0", "e\\n"};
static const char *keys_raw[] = {"a", "b", "c", "id", "xy", "\xc3\xa9t\xc3\xa9", "long_key_name", "0", "e\n"};

static void gen_string(struct sbuf *o)
{
    static const char *pieces[] = {"a", "Z", " ", "\\n", "\\\"", "\\\\", "\\/", "\\u0041", "\\u00e9",
                                   "\\ud83d\\ude00", "\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80",
                                   "\\u0000", "\\t", "x", "1"};
    sbuf_putc(o, '"');
    int n = (int)rnd(8);
    for (int i = 0; i < n; i++)
        sbuf_puts(o, pieces[rnd(sizeof pieces / sizeof pieces[0])]);
    sbuf_putc(o, '"');
}

static void gen_number(struct sbuf *o)
{
    static const char *nums[] = {"0", "-0", "1", "-1", "42", "3.25", "-0.5", "1e3", "1E-2", "2.5e+10",
                                 "9223372036854775807", "-9223372036854775808", "123456789012",
                                 "0.1", "1.7976931348623157e308", "5e-324", "100000000000000000000.0"};
    if (rnd(3) == 0)
        sbuf_printf(o, "%d", (int)rnd(2000) - 1000);
    else
        sbuf_puts(o, nums[rnd(sizeof nums / sizeof nums[0])]);
}

static void ws(struct sbuf *o)
{
    if (rnd(5) == 0)
        sbuf_puts(o, rnd(2) ? " " : "\n\t");
}

static void gen_value(struct sbuf *o, int depth)
{
    uint32_t k = depth > 4 ? 3 + rnd(5) : rnd(8);
    ws(o);
    if (k == 0 || k == 1) {
        sbuf_putc(o, '{');
        int n = (int)rnd(5);
        for (int i = 0; i < n; i++) {
            if (i)
                sbuf_putc(o, ',');
            ws(o);
            sbuf_printf(o, "\"%s\"", keys[rnd(sizeof keys / sizeof keys[0])]);
            ws(o);
            sbuf_putc(o, ':');
            gen_value(o, depth + 1);
        }
        ws(o);
        sbuf_putc(o, '}');
    } else if (k == 2) {
        sbuf_putc(o, '[');
        int n = (int)rnd(5);
        for (int i = 0; i < n; i++) {
            if (i)
                sbuf_putc(o, ',');
            gen_value(o, depth + 1);
        }
        sbuf_putc(o, ']');
    } else if (k == 3 || k == 4) {
        gen_string(o);
    } else if (k == 5) {
        gen_number(o);
    } else {
        static const char *lits[] = {"true", "false", "null"};
        sbuf_puts(o, lits[rnd(3)]);
    }
    ws(o);
}

static bool jansson_unsure(const json_error_t *je)
{
    /* jansson rejects integers beyond int64 and doubles beyond DBL_MAX (valid JSON to us) */
    return strstr(je->text, "too big") || strstr(je->text, "overflow");
}

/* Compare our extracted value with jansson's node. */
static bool same_value(const struct sval *v, json_t *j, struct arena *a)
{
    if (!j)
        return v->type == SV_MISSING;
    switch (json_typeof(j)) {
    case JSON_NULL: return v->type == SV_NULL;
    case JSON_TRUE: return v->type == SV_BOOL && v->b;
    case JSON_FALSE: return v->type == SV_BOOL && !v->b;
    case JSON_INTEGER: return v->type == SV_INT && v->i == json_integer_value(j);
    case JSON_REAL: return v->type == SV_DOUBLE && v->d == json_real_value(j);
    case JSON_STRING: {
        if (v->type != SV_STR)
            return false;
        struct sval u = *v;
        if (sval_unescape(&u, a))
            return false;
        return u.len == json_string_length(j) && memcmp(u.p, json_string_value(j), u.len) == 0;
    }
    default: {
        if (v->type != SV_JSON)
            return false;
        json_error_t je;
        json_t *back = json_loadb(v->p, v->len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
        bool eq = back && json_equal(back, j);
        json_decref(back);
        return eq;
    }
    }
}

/* Walk jansson's tree along random steps, building the same path for us. */
static json_t *random_path(json_t *root, struct spath *p)
{
    json_t *cur = root;
    p->nseg = 0;
    int steps = 1 + (int)rnd(4);
    for (int s = 0; s < steps && p->nseg < SPATH_SEGS_MAX; s++) {
        if (json_is_object(cur) && rnd(6) != 0) {
            size_t ki = rnd(sizeof keys_raw / sizeof keys_raw[0]);
            p->seg[p->nseg++] = (struct spath_seg){keys_raw[ki], (uint32_t)strlen(keys_raw[ki]), -1};
            cur = json_object_get(cur, keys_raw[ki]);
        } else if (json_is_array(cur) && rnd(6) != 0) {
            int idx = (int)rnd(4);
            p->seg[p->nseg++] = (struct spath_seg){NULL, 0, idx};
            cur = json_array_get(cur, (size_t)idx);
        } else {
            /* a step into a scalar (or the wrong kind of step) finds nothing */
            p->seg[p->nseg++] = (struct spath_seg){"a", 1, -1};
            cur = json_is_object(cur) ? json_object_get(cur, "a") : NULL;
        }
        if (!cur)
            return NULL;
    }
    return cur;
}

TEST(json_scan_differential_jansson)
{
    rng_state = 0x9E3779B97F4A7C15ull;
    struct sfmt *f;
    sfmt_json_new(&f);
    struct arena a;
    arena_init(&a, 0);
    int docs = 0, mutated_invalid = 0, compared = 0;
    for (int iter = 0; iter < 20000; iter++) {
        struct sbuf o;
        sbuf_init(&o, 0);
        if (rnd(4))
            gen_value(&o, 0);
        else {
            sbuf_putc(&o, '{'); /* records are mostly objects */
            sbuf_puts(&o, "\"a\":");
            gen_value(&o, 1);
            sbuf_puts(&o, ",\"b\":");
            gen_value(&o, 1);
            sbuf_putc(&o, '}');
        }
        if (rnd(3) == 0 && o.len > 0) {
            /* mutate: flip, insert or delete a byte */
            size_t at = rnd((uint32_t)o.len);
            static const char alphabet[] = "{}[],:\"\\ 0123-.eE+tfnu\x01\x80\xc3\xff";
            uint32_t m = rnd(3);
            if (m == 0)
                o.data[at] = (uint8_t)alphabet[rnd(sizeof alphabet - 1)];
            else if (m == 1) {
                sbuf_putc(&o, 0);
                memmove(o.data + at + 1, o.data + at, o.len - at - 1);
                o.data[at] = (uint8_t)alphabet[rnd(sizeof alphabet - 1)];
            } else {
                memmove(o.data + at, o.data + at + 1, o.len - at - 1);
                o.len--;
            }
        }
        json_error_t je;
        json_t *j = json_loadb((const char *)o.data, o.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
        bool ours = json_scan_validate(o.data, o.len);
        if (!j && jansson_unsure(&je)) {
            sbuf_free(&o);
            continue;
        }
        docs++;
        if (ours != (j != NULL)) {
            fprintf(stderr, "verdict differs (ours %d, jansson %d: %s): %.*s\n", ours, j != NULL,
                    j ? "" : je.text, (int)o.len, (char *)o.data);
            CHECK(ours == (j != NULL));
        }
        if (!j)
            mutated_invalid++;
        if (j && json_is_object(j)) {
            struct spath paths[6];
            json_t *want[6];
            struct sval got[6];
            for (int k = 0; k < 6; k++)
                want[k] = random_path(j, &paths[k]);
            int rc = f->ops->extract(f, slice_of(o.data, o.len), paths, 6, got, &a, NULL);
            CHECK(rc == 0);
            for (int k = 0; rc == 0 && k < 6; k++) {
                compared++;
                if (!same_value(&got[k], want[k], &a)) {
                    char *t = want[k] ? json_dumps(want[k], JSON_ENCODE_ANY) : NULL;
                    fprintf(stderr, "value differs at path %d (type %d, want %s) in %.*s\n", k,
                            got[k].type, t ? t : "missing", (int)o.len, (char *)o.data);
                    free(t);
                    CHECK(false);
                }
            }
        }
        json_decref(j);
        arena_reset(&a);
        sbuf_free(&o);
    }
    arena_free(&a);
    CHECK(docs > 15000 && mutated_invalid > 1000 && compared > 10000);
}
