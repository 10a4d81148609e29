/* test_proto.c -- the .proto parser, the FileDescriptorSet front end, the Protobuf binary decoder
 * (extract and the proto3 JSON mapping) and the proto3 JSON record format.
 *
 * Binary fixtures come from tests/fixtures/proto/gen.sh (protoc --encode; the expected values
 * below match the protoc --decode text stored next to them); hand-made records cover what protoc
 * never writes (unpacked/packed swaps, duplicates, damage). */
#include "harness.h"

#include "base/alloc.h"
#include "base/arena.h"
#include "base/err.h"
#include "stream/fmt/proto.h"

#include "../fixtures/proto/fixtures.h"

#include <jansson.h>
#include <math.h>
#include <string.h>

/* ---- helpers --------------------------------------------------------------------------------- */

/* A minimal path parser for the tests ("a.b[2].c"); value.c's spath_parse lives elsewhere. */
static struct spath P(const char *s)
{
    struct spath p = {0};
    const char *q = s;
    while (*q && p.nseg < SPATH_SEGS_MAX) {
        const char *st = q;
        while (*q && *q != '.' && *q != '[')
            q++;
        p.seg[p.nseg].name = st;
        p.seg[p.nseg].len = (uint32_t)(q - st);
        p.seg[p.nseg++].index = -1;
        while (*q == '[') {
            int v = 0;
            q++;
            while (*q >= '0' && *q <= '9')
                v = v * 10 + (*q++ - '0');
            q++; /* ']' */
            p.seg[p.nseg].name = NULL;
            p.seg[p.nseg].len = 0;
            p.seg[p.nseg++].index = v;
        }
        if (*q == '.')
            q++;
    }
    return p;
}

static struct proto_schema *parse_ok(const char *text)
{
    struct proto_schema *s = NULL;
    struct serr e = {0};
    int rc = proto_schema_parse(text, strlen(text), NULL, NULL, &s, &e);
    if (rc)
        fprintf(stderr, "parse failed: %s: %s\n", e.path, e.msg);
    return s;
}

/* Parse must fail with ERR_INVALID at line:col and a message containing `needle`. */
static bool parse_fails(const char *text, const char *where, const char *needle)
{
    struct proto_schema *s = NULL;
    struct serr e = {0};
    int rc = proto_schema_parse(text, strlen(text), NULL, NULL, &s, &e);
    bool ok = rc == ERR_INVALID && s == NULL && strcmp(e.path, where) == 0 && strstr(e.msg, needle);
    if (!ok)
        fprintf(stderr, "  expected %s \"%s\", got rc=%d %s \"%s\"\n", where, needle, rc, e.path,
                e.msg);
    proto_schema_free(s);
    return ok;
}

static struct sfmt *fmt_for(const struct proto_schema *s, const char *msg)
{
    const struct proto_msg *m = proto_message_by_name(s, msg);
    struct sfmt *f = NULL;
    struct serr e;
    if (!m || sfmt_proto_new(s, m, &f, &e))
        return NULL;
    return f;
}

static struct arena A;

static int get(struct sfmt *f, const uint8_t *rec, size_t len, const char *path, struct sval *v)
{
    struct spath p = P(path);
    const char *err = NULL;
    return f->ops->extract(f, slice_of(rec, len), &p, 1, v, &A, &err);
}

static bool is_int(struct sfmt *f, const uint8_t *rec, size_t len, const char *path, int64_t want)
{
    struct sval v;
    int rc = get(f, rec, len, path, &v);
    bool ok = rc == 0 && v.type == SV_INT && v.i == want;
    if (!ok)
        fprintf(stderr, "  %s: rc=%d type=%d i=%lld (want %lld)\n", path, rc, v.type,
                (long long)v.i, (long long)want);
    return ok;
}

static bool is_str(struct sfmt *f, const uint8_t *rec, size_t len, const char *path, const char *want)
{
    struct sval v;
    int rc = get(f, rec, len, path, &v);
    bool ok = rc == 0 && v.type == SV_STR && v.len == strlen(want) && memcmp(v.p, want, v.len) == 0;
    if (!ok)
        fprintf(stderr, "  %s: rc=%d type=%d '%.*s' (want '%s')\n", path, rc, v.type,
                v.type == SV_STR ? (int)v.len : 0, v.type == SV_STR ? v.p : "", want);
    return ok;
}

static bool is_type(struct sfmt *f, const uint8_t *rec, size_t len, const char *path, int type)
{
    struct sval v;
    int rc = get(f, rec, len, path, &v);
    if (rc || v.type != type)
        fprintf(stderr, "  %s: rc=%d type=%d (want %d)\n", path, rc, v.type, type);
    return rc == 0 && v.type == type;
}

/* The value is SV_JSON equal (as JSON) to want. */
static bool is_json(struct sfmt *f, const uint8_t *rec, size_t len, const char *path, const char *want)
{
    struct sval v;
    int rc = get(f, rec, len, path, &v);
    if (rc || v.type != SV_JSON) {
        fprintf(stderr, "  %s: rc=%d type=%d\n", path, rc, v.type);
        return false;
    }
    json_t *a = json_loadb(v.p, v.len, 0, NULL), *b = json_loads(want, 0, NULL);
    bool ok = a && b && json_equal(a, b);
    if (!ok)
        fprintf(stderr, "  %s: got %.*s want %s\n", path, (int)v.len, v.p, want);
    json_decref(a);
    json_decref(b);
    return ok;
}

static bool json_is(struct sfmt *f, const uint8_t *rec, size_t len, const char *want)
{
    struct sbuf out;
    sbuf_init(&out, 0);
    const char *err = NULL;
    int rc = f->ops->to_json(f, slice_of(rec, len), &out, &A, &err);
    json_t *a = rc ? NULL : json_loadb((const char *)out.data, out.len, 0, NULL);
    json_t *b = json_loads(want, 0, NULL);
    bool ok = a && b && json_equal(a, b);
    if (!ok)
        fprintf(stderr, "  to_json rc=%d (%s): %.*s\n  want %s\n", rc, err ? err : "", (int)out.len,
                (const char *)out.data, want);
    json_decref(a);
    json_decref(b);
    sbuf_free(&out);
    return ok;
}

/* Tiny encoder for hand-made records. */
static void put_tag(struct sbuf *b, uint32_t num, uint32_t wt) { sbuf_put_uvarint(b, (uint64_t)num << 3 | wt); }
static void put_vfield(struct sbuf *b, uint32_t num, uint64_t v) { put_tag(b, num, 0); sbuf_put_uvarint(b, v); }
static void put_lfield(struct sbuf *b, uint32_t num, const void *p, size_t n)
{
    put_tag(b, num, 2);
    sbuf_put_uvarint(b, n);
    sbuf_append(b, p, n);
}

/* ---- the parser -------------------------------------------------------------------------------- */

TEST(proto_parse_fixture)
{
    struct proto_schema *s = parse_ok(fx_proto_text);
    REQUIRE(s);
    const struct proto_msg *m = proto_message_by_name(s, "fx.Order");
    CHECK(m != NULL);
    CHECK(proto_message_by_name(s, "Order") == m);
    CHECK(proto_message_by_name(s, ".fx.Order") == m);
    CHECK(proto_message_by_name(s, "Order.Nested.Deep") != NULL);
    CHECK(proto_message_by_name(s, "Deep") == proto_message_by_name(s, "fx.Order.Nested.Deep"));
    CHECK(proto_message_by_name(s, "Nope") == NULL);
    /* Confluent indexes: top-level order Scalars, Item, Order, Small, SmallV2; Order's nested
     * types are LabelsEntry, ItemsByIdEntry (synthetic map entries, as protoc makes them) and
     * Nested. */
    int64_t i0[] = {0}, i2[] = {2}, i22[] = {2, 2}, i220[] = {2, 2, 0}, bad[] = {9}, neg[] = {-1};
    CHECK(proto_message_by_index(s, NULL, 0) == proto_message_by_name(s, "fx.Scalars"));
    CHECK(proto_message_by_index(s, i0, 1) == proto_message_by_name(s, "fx.Scalars"));
    CHECK(proto_message_by_index(s, i2, 1) == m);
    CHECK(proto_message_by_index(s, i22, 2) == proto_message_by_name(s, "fx.Order.Nested"));
    CHECK(proto_message_by_index(s, i220, 3) == proto_message_by_name(s, "fx.Order.Nested.Deep"));
    CHECK(proto_message_by_index(s, bad, 1) == NULL);
    CHECK(proto_message_by_index(s, neg, 1) == NULL);
    proto_schema_free(s);
}

TEST(proto_parse_syntax_features)
{
    const char *text =
        "// comment\n"
        "/* block\n comment */ syntax = 'proto3';\n"
        "package a.b;\n"
        "option java_package = \"x\" \"y\";\n"
        "option (my.opt).sub = { a: 1 b: { c: \"}\" } };\n"
        "enum E { option allow_alias = true; Z = 0; ONE = 1; UNO = 1 [deprecated = true]; "
        "reserved 5 to 9, 100 to max; reserved \"OLD\"; }\n"
        "message Outer {\n"
        "  option (x) = true;\n"
        "  reserved 7, 10 to 12; reserved \"gone\";\n"
        "  message Inner { enum K { K0 = 0; } K k = 1; }\n"
        "  Inner in1 = 1;\n"
        "  .a.b.Outer.Inner in2 = 2;\n"
        "  b.Outer.Inner in3 = 3;\n"
        "  Inner.K k = 4 [json_name = \"kay\", (custom.opt) = 5];\n"
        "  map<uint64, E> m = 5;\n"
        "  oneof o { string s = 6; Inner i = 8; }\n"
        "  optional sint64 x = 9;\n"
        "  repeated double ds = 13 [packed = true];\n"
        "  extensions 100 to 200;\n"
        "  ;\n"
        "}\n"
        "service S { rpc Get (Outer) returns (stream Outer) { option (http) = { get: \"/{a}\" }; } }\n"
        "extend Outer { int32 ext = 150; }\n";
    struct proto_schema *s = parse_ok(text);
    REQUIRE(s);
    const struct proto_msg *m = proto_message_by_name(s, "a.b.Outer");
    REQUIRE(m);
    struct sfmt *f = NULL;
    REQUIRE(sfmt_proto_new(s, m, &f, NULL) == 0);
    /* k = 4 (enum K, json name "kay"); absent: the first value. */
    uint8_t rec[] = {0x20, 0x00};
    CHECK(is_str(f, rec, 0, "kay", "K0"));
    CHECK(is_str(f, rec, 2, "k", "K0"));
    CHECK(is_type(f, rec, 0, "x", SV_MISSING));
    CHECK(json_is(f, rec, 0, "{}"));
    sfmt_free(f);
    proto_schema_free(s);
}

TEST(proto_parse_proto2)
{
    const char *text = "syntax = \"proto2\";\n"
                       "message M { required int32 a = 1; optional string b = 2 [default = \"x\"]; "
                       "repeated int32 c = 3; optional E e = 4; }\n"
                       "enum E { TWO = 2; THREE = 3; }\n";
    struct proto_schema *s = parse_ok(text);
    REQUIRE(s);
    struct sfmt *f = fmt_for(s, "M");
    REQUIRE(f);
    /* proto2 fields have presence: absent -> missing (defaults ignored). */
    CHECK(is_type(f, (const uint8_t *)"", 0, "a", SV_MISSING));
    CHECK(is_type(f, (const uint8_t *)"", 0, "b", SV_MISSING));
    uint8_t rec[] = {0x08, 0x00, 0x20, 0x03};
    CHECK(is_int(f, rec, sizeof rec, "a", 0));
    CHECK(is_str(f, rec, sizeof rec, "e", "THREE"));
    CHECK(json_is(f, rec, sizeof rec, "{\"a\":0,\"e\":\"THREE\"}"));
    sfmt_free(f);
    proto_schema_free(s);
}

TEST(proto_parse_errors)
{
    CHECK(parse_fails("syntax = \"proto3\";\nmessage M {\n  Foo f = 1;\n}\n", "3:3",
                      "unknown type \"Foo\""));
    CHECK(parse_fails("syntax = \"proto3\";\nmessage M {\n  int32 a = 1;\n  int32 b = 1;\n}\n", "4:3",
                      "duplicate field number 1"));
    CHECK(parse_fails("syntax = \"proto3\";\nmessage M { int32 a = 1; string a = 2; }\n", "2:26",
                      "duplicate field name"));
    CHECK(parse_fails("syntax = \"proto3\";\nmessage M { int32 a = 0; }\n", "2:23", "out of range"));
    CHECK(parse_fails("syntax = \"proto3\";\nmessage M { int32 a = 19500; }\n", "2:23", "reserved"));
    CHECK(parse_fails("syntax = \"proto3\";\nmessage M { reserved 3; int32 a = 3; }\n", "2:25",
                      "reserved number 3"));
    CHECK(parse_fails("syntax = \"proto3\";\nmessage M { int32 a = 1 }\n", "2:25", "expected ';'"));
    CHECK(parse_fails("syntax = \"proto3\";\nenum E { A = 1; }\nmessage M {}\n", "2:10",
                      "must be zero"));
    CHECK(parse_fails("syntax = \"proto3\";\nenum E { A = 0; B = 0; }\nmessage M {}\n", "2:17",
                      "allow_alias"));
    CHECK(parse_fails("syntax = \"proto3\";\nmessage M { map<double, int32> m = 1; }\n", "2:17",
                      "map keys"));
    CHECK(parse_fails("syntax = \"proto3\";\nmessage M { required int32 a = 1; }\n", "2:13",
                      "required"));
    CHECK(parse_fails("syntax = \"proto2\";\nmessage M { int32 a = 1; }\n", "2:13",
                      "\"required\", \"optional\" or \"repeated\""));
    CHECK(parse_fails("syntax = \"proto4\";\n", "1:10", "unknown syntax"));
    CHECK(parse_fails("edition = \"2023\";\n", "1:1", "editions"));
    CHECK(parse_fails("syntax = \"proto3\";\nmessage M { int32 a = 1;\n", "3:1", "end of file"));
    CHECK(parse_fails("syntax = \"proto3\";\nmessage M { }\nmessage M { }\n", "3:9",
                      "already defined"));
    CHECK(parse_fails("syntax = \"proto3\";\nimport \"other.proto\";\n", "2:1", "not found"));
    CHECK(parse_fails("syntax = \"proto3\";\nmessage M { string s = 1 [json_name = 5]; }\n", "2:39",
                      "json_name"));
    CHECK(parse_fails("syntax = \"proto3\";\n/* open", "2:1", "unterminated comment"));
    CHECK(parse_fails("syntax = \"proto3\";\nmessage M { string s = \"x; }", "2:24",
                      "unterminated string"));
    CHECK(parse_fails("syntax = \"proto3\";\nmessage M { oneof o { repeated int32 a = 1; } }", "2:23",
                      "label"));
    CHECK(parse_fails("syntax = \"proto2\";\nmessage M { optional group G = 1 { } }", "2:22", "groups"));
    CHECK(parse_fails("syntax = \"proto3\";\n", "1:1", "no message"));
    CHECK(parse_fails("syntax = \"proto3\";\nmessage M { M.X x = 1; message Y {} }", "2:13",
                      "unknown type \"M.X\""));
    /* Once the first component resolves, the rest must resolve there (no outward search). */
    CHECK(parse_fails("syntax = \"proto3\";\nmessage B { message C {} }\n"
                      "message A { message B {} B.C c = 1; }",
                      "3:26", "unknown type \"B.C\""));
    /* Nesting limit. */
    char deep[4096];
    size_t k = (size_t)snprintf(deep, sizeof deep, "syntax = \"proto3\";\n");
    for (int i = 0; i < 40; i++)
        k += (size_t)snprintf(deep + k, sizeof deep - k, "message M%d {", i);
    for (int i = 0; i < 40; i++)
        deep[k++] = '}';
    deep[k] = 0;
    struct proto_schema *s = NULL;
    struct serr e;
    CHECK(proto_schema_parse(deep, k, NULL, NULL, &s, &e) == ERR_INVALID);
    CHECK(strstr(e.msg, "nested deeper") != NULL);
}

struct imports {
    const char *name, *text;
};

static int import_cb(void *ctx, const char *name, const char **text, size_t *len)
{
    for (const struct imports *i = ctx; i->name; i++)
        if (strcmp(i->name, name) == 0) {
            *text = i->text;
            *len = strlen(i->text);
            return 0;
        }
    return ERR_NOT_FOUND;
}

TEST(proto_parse_imports)
{
    struct imports files[] = {
        {"common.proto", "syntax = \"proto3\"; package common; import public \"deeper.proto\"; "
                         "message Money { int64 cents = 1; string cur = 2; }"},
        {"deeper.proto", "syntax = \"proto3\"; package common.deep; enum Kind { K0 = 0; K1 = 1; }"},
        {"bad.proto", "syntax = \"proto3\";\nmessage X { Nope n = 1; }"},
        {NULL, NULL},
    };
    const char *text = "syntax = \"proto3\"; package shop;\n"
                       "import \"common.proto\";\nimport \"google/protobuf/timestamp.proto\";\n"
                       "message Sale { common.Money price = 1; common.deep.Kind kind = 2; "
                       "google.protobuf.Timestamp at = 3; }\n";
    struct proto_schema *s = NULL;
    struct serr e = {0};
    REQUIRE(proto_schema_parse(text, strlen(text), import_cb, files, &s, &e) == 0);
    /* The main file's first message is index 0, not the imports'. */
    CHECK(proto_message_by_index(s, NULL, 0) == proto_message_by_name(s, "shop.Sale"));
    struct sfmt *f = fmt_for(s, "shop.Sale");
    REQUIRE(f);
    uint8_t rec[] = {0x0a, 0x05, 0x08, 0xe8, 0x07, 0x12, 0x00, 0x10, 0x01,
                     0x1a, 0x06, 0x08, 0x80, 0xe4, 0x97, 0xd0, 0x12};
    CHECK(is_int(f, rec, sizeof rec, "price.cents", 1000));
    CHECK(is_str(f, rec, sizeof rec, "price.cur", ""));
    CHECK(is_str(f, rec, sizeof rec, "kind", "K1"));
    CHECK(is_str(f, rec, sizeof rec, "at", "2128-06-11T08:53:20Z"));
    CHECK(is_int(f, rec, sizeof rec, "at.seconds", 5000000000LL));
    CHECK(json_is(f, rec, sizeof rec,
                  "{\"price\":{\"cents\":\"1000\"},\"kind\":\"K1\",\"at\":\"2128-06-11T08:53:20Z\"}"));
    sfmt_free(f);
    proto_schema_free(s);
    const char *t2 = "syntax = \"proto3\";\nimport \"bad.proto\";\nmessage Y {}\n";
    CHECK(proto_schema_parse(t2, strlen(t2), import_cb, files, &s, &e) == ERR_INVALID);
    CHECK(strcmp(e.path, "bad.proto:2:13") == 0);
}

/* ---- FileDescriptorSet -------------------------------------------------------------------------- */

TEST(proto_fds_fixture)
{
    struct proto_schema *s = NULL;
    struct serr e = {0};
    int rc = proto_schema_from_fds(slice_of(fx_fds, fx_fds_len), &s, &e);
    if (rc)
        fprintf(stderr, "fds: %s %s\n", e.path, e.msg);
    REQUIRE(rc == 0);
    int64_t i2[] = {2}, i22[] = {2, 2};
    CHECK(proto_message_by_index(s, i2, 1) == proto_message_by_name(s, "fx.Order"));
    CHECK(proto_message_by_index(s, i22, 2) == proto_message_by_name(s, "fx.Order.Nested"));
    struct sfmt *f = fmt_for(s, "fx.Order");
    REQUIRE(f);
    CHECK(is_int(f, fx_order_bin, fx_order_bin_len, "id", 42));
    CHECK(is_str(f, fx_order_bin, fx_order_bin_len, "labels.env", "prod"));
    CHECK(is_str(f, fx_order_bin, fx_order_bin_len, "items_by_id.5.sku", "A5"));
    CHECK(is_str(f, fx_order_bin, fx_order_bin_len, "nested.deep.x", "deep!"));
    CHECK(is_type(f, fx_order_bin, fx_order_bin_len, "card", SV_MISSING));
    sfmt_free(f);
    f = fmt_for(s, "fx.Scalars");
    REQUIRE(f);
    CHECK(is_type(f, fx_empty_bin, 0, "opt", SV_MISSING));
    CHECK(is_int(f, fx_empty_bin, 0, "i32", 0));
    CHECK(is_int(f, fx_scalars_bin, fx_scalars_bin_len, "si64", -8));
    sfmt_free(f);
    proto_schema_free(s);
    /* Damage: not an FDS, and every truncation fails cleanly or parses. */
    uint8_t junk[] = {0x0a, 0x05, 0xff, 0xff};
    CHECK(proto_schema_from_fds(slice_of(junk, sizeof junk), &s, &e) == ERR_INVALID);
    for (size_t n = 0; n < fx_fds_len; n += 7) {
        rc = proto_schema_from_fds(slice_of(fx_fds, n), &s, &e);
        CHECK(rc == 0 || rc == ERR_INVALID);
        proto_schema_free(s);
        s = NULL;
    }
}

/* ---- binary decoding ---------------------------------------------------------------------------- */

TEST(proto_decode_scalars)
{
    struct proto_schema *s = parse_ok(fx_proto_text);
    REQUIRE(s);
    struct sfmt *f = fmt_for(s, "fx.Scalars");
    REQUIRE(f);
    const uint8_t *r = fx_scalars_bin;
    size_t n = fx_scalars_bin_len;
    struct sval v;
    CHECK(get(f, r, n, "d", &v) == 0 && v.type == SV_DOUBLE && v.d == 1.5);
    CHECK(get(f, r, n, "f", &v) == 0 && v.type == SV_DOUBLE && v.d == -2.25);
    CHECK(is_int(f, r, n, "i64", -9000000000LL));
    CHECK(get(f, r, n, "u64", &v) == 0 && v.type == SV_DOUBLE && v.d == 18446744073709551615.0);
    CHECK(is_int(f, r, n, "i32", -1)); /* a 10-byte varint */
    CHECK(is_int(f, r, n, "fx64", 123));
    CHECK(is_int(f, r, n, "fx32", 456));
    CHECK(get(f, r, n, "b", &v) == 0 && v.type == SV_BOOL && v.b);
    CHECK(is_str(f, r, n, "s", "h\xc3\xa9llo"));
    CHECK(get(f, r, n, "by", &v) == 0 && v.type == SV_BYTES && v.len == 3 &&
          memcmp(v.p, "\x00\x01\xff", 3) == 0);
    CHECK(is_int(f, r, n, "u32", 4294967295LL));
    CHECK(is_str(f, r, n, "color", "GREEN"));
    CHECK(is_int(f, r, n, "sf32", -5));
    CHECK(is_int(f, r, n, "sf64", -6));
    CHECK(is_int(f, r, n, "si32", -7));
    CHECK(is_int(f, r, n, "si64", -8));
    CHECK(is_int(f, r, n, "opt", 0)); /* optional, present with its default */
    CHECK(json_is(f, r, n,
                  "{\"d\":1.5,\"f\":-2.25,\"i64\":\"-9000000000\",\"u64\":\"18446744073709551615\","
                  "\"i32\":-1,\"fx64\":\"123\",\"fx32\":456,\"b\":true,\"s\":\"h\xc3\xa9llo\","
                  "\"by\":\"AAH/\",\"u32\":4294967295,\"color\":\"GREEN\",\"sf32\":-5,"
                  "\"sf64\":\"-6\",\"si32\":-7,\"si64\":\"-8\",\"opt\":0}"));
    /* Defaults for an empty record: never missing, except the optional field. */
    r = fx_empty_bin;
    n = 0;
    CHECK(get(f, r, n, "d", &v) == 0 && v.type == SV_DOUBLE && v.d == 0);
    CHECK(is_int(f, r, n, "i64", 0));
    CHECK(get(f, r, n, "b", &v) == 0 && v.type == SV_BOOL && !v.b);
    CHECK(is_str(f, r, n, "s", ""));
    CHECK(get(f, r, n, "by", &v) == 0 && v.type == SV_BYTES && v.len == 0);
    CHECK(is_str(f, r, n, "color", "COLOR_UNSPECIFIED"));
    CHECK(is_type(f, r, n, "opt", SV_MISSING));
    CHECK(is_type(f, r, n, "nope", SV_MISSING));
    CHECK(is_type(f, r, n, "s.deeper", SV_MISSING));
    CHECK(json_is(f, r, n, "{}"));
    /* NaN / infinities in JSON; an undeclared enum number reads as its number. */
    struct sbuf b;
    sbuf_init(&b, 0);
    double nan_ = NAN, inf = INFINITY;
    uint64_t u;
    memcpy(&u, &nan_, 8);
    put_tag(&b, 1, 1);
    sbuf_put_le64(&b, u);
    float nf = -INFINITY;
    uint32_t u32;
    memcpy(&u32, &nf, 4);
    put_tag(&b, 2, 5);
    sbuf_put_le32(&b, u32);
    put_vfield(&b, 14, 9);
    CHECK(json_is(f, b.data, b.len, "{\"d\":\"NaN\",\"f\":\"-Infinity\",\"color\":9}"));
    CHECK(is_int(f, b.data, b.len, "color", 9));
    CHECK(get(f, b.data, b.len, "d", &v) == 0 && v.type == SV_DOUBLE && isnan(v.d));
    (void)inf;
    sbuf_free(&b);
    sfmt_free(f);
    proto_schema_free(s);
}

TEST(proto_decode_order)
{
    struct proto_schema *s = parse_ok(fx_proto_text);
    REQUIRE(s);
    struct sfmt *f = fmt_for(s, "fx.Order");
    REQUIRE(f);
    const uint8_t *r = fx_order_bin;
    size_t n = fx_order_bin_len;
    CHECK(is_int(f, r, n, "id", 42));
    CHECK(is_str(f, r, n, "user_name", "ann"));
    CHECK(is_str(f, r, n, "userName", "ann")); /* the JSON name */
    CHECK(is_json(f, r, n, "packed_nums", "[1,2,300]"));
    CHECK(is_int(f, r, n, "packed_nums[2]", 300));
    CHECK(is_type(f, r, n, "packed_nums[3]", SV_MISSING));
    CHECK(is_json(f, r, n, "unpacked_nums", "[7,-8]"));
    CHECK(is_int(f, r, n, "unpackedNums[1]", -8));
    CHECK(is_str(f, r, n, "labels.env", "prod"));
    CHECK(is_str(f, r, n, "labels.team", "core"));
    CHECK(is_type(f, r, n, "labels.nope", SV_MISSING));
    CHECK(is_json(f, r, n, "labels", "{\"env\":\"prod\",\"team\":\"core\"}"));
    CHECK(is_str(f, r, n, "items_by_id.5.sku", "A5"));
    CHECK(is_int(f, r, n, "items_by_id.-3.qty", 0));
    CHECK(is_json(f, r, n, "items_by_id.-3", "{\"sku\":\"B3\"}"));
    CHECK(is_str(f, r, n, "items[1].sku", "y"));
    CHECK(is_int(f, r, n, "items[0].qty", 2));
    CHECK(is_type(f, r, n, "items[2].sku", SV_MISSING));
    CHECK(is_type(f, r, n, "items.sku", SV_MISSING));
    CHECK(is_json(f, r, n, "items", "[{\"sku\":\"x\",\"qty\":2},{\"sku\":\"y\",\"qty\":3}]"));
    CHECK(is_json(f, r, n, "items[1]", "{\"sku\":\"y\",\"qty\":3}"));
    CHECK(is_str(f, r, n, "main.sku", "m"));
    CHECK(is_int(f, r, n, "main.qty", 0));
    CHECK(is_type(f, r, n, "card", SV_MISSING));
    CHECK(is_int(f, r, n, "cash_cents", 1999));
    CHECK(is_str(f, r, n, "ts", "2023-11-14T22:13:20.500Z"));
    CHECK(is_int(f, r, n, "ts.nanos", 500000000));
    CHECK(is_int(f, r, n, "maybe", 77));
    CHECK(is_str(f, r, n, "nested.deep.x", "deep!"));
    CHECK(is_json(f, r, n, "nested.tags", "[\"t1\",\"t2\"]"));
    CHECK(is_str(f, r, n, "nested.tags[1]", "t2"));
    CHECK(is_str(f, r, n, "color", "RED"));
    CHECK(json_is(f, r, n,
                  "{\"id\":\"42\",\"userName\":\"ann\",\"packedNums\":[1,2,300],"
                  "\"unpackedNums\":[7,-8],\"labels\":{\"env\":\"prod\",\"team\":\"core\"},"
                  "\"itemsById\":{\"5\":{\"sku\":\"A5\",\"qty\":1},\"-3\":{\"sku\":\"B3\"}},"
                  "\"items\":[{\"sku\":\"x\",\"qty\":2},{\"sku\":\"y\",\"qty\":3}],"
                  "\"main\":{\"sku\":\"m\"},\"cashCents\":\"1999\","
                  "\"ts\":\"2023-11-14T22:13:20.500Z\",\"maybe\":\"77\","
                  "\"nested\":{\"deep\":{\"x\":\"deep!\"},\"tags\":[\"t1\",\"t2\"]},"
                  "\"color\":\"RED\"}"));
    /* Many paths in one call (more than one internal chunk of 16). */
    struct spath ps[40];
    struct sval vs[40];
    for (int i = 0; i < 40; i++)
        ps[i] = P(i % 2 ? "labels.env" : "id");
    const char *err;
    CHECK(f->ops->extract(f, slice_of(r, n), ps, 40, vs, &A, &err) == 0);
    for (int i = 0; i < 40; i++)
        CHECK(i % 2 ? vs[i].type == SV_STR : (vs[i].type == SV_INT && vs[i].i == 42));
    /* Absent message / wrapper: missing; absent repeated: an empty list. */
    CHECK(is_type(f, fx_empty_bin, 0, "main", SV_MISSING));
    CHECK(is_type(f, fx_empty_bin, 0, "main.sku", SV_MISSING));
    CHECK(is_type(f, fx_empty_bin, 0, "maybe", SV_MISSING));
    CHECK(is_type(f, fx_empty_bin, 0, "ts", SV_MISSING));
    CHECK(is_json(f, fx_empty_bin, 0, "items", "[]"));
    CHECK(is_json(f, fx_empty_bin, 0, "labels", "{}"));
    CHECK(is_str(f, fx_empty_bin, 0, "color", "COLOR_UNSPECIFIED"));
    sfmt_free(f);
    proto_schema_free(s);
}

TEST(proto_decode_unknown_fields)
{
    struct proto_schema *s = parse_ok(fx_proto_text);
    REQUIRE(s);
    struct sfmt *f = fmt_for(s, "fx.Small");
    REQUIRE(f);
    CHECK(is_int(f, fx_small_bin, fx_small_bin_len, "id", 123456789));
    CHECK(json_is(f, fx_small_bin, fx_small_bin_len,
                  "{\"id\":\"123456789\",\"user\":\"alice\",\"amount\":12.5,\"country\":\"DE\"}"));
    /* SmallV2's fields 5..8 are unknown to Small: skipped, validated. */
    CHECK(is_int(f, fx_smallv2_bin, fx_smallv2_bin_len, "id", 7));
    CHECK(is_str(f, fx_smallv2_bin, fx_smallv2_bin_len, "country", "FR"));
    CHECK(json_is(f, fx_smallv2_bin, fx_smallv2_bin_len,
                  "{\"id\":\"7\",\"user\":\"bob\",\"amount\":-0.5,\"country\":\"FR\"}"));
    /* A group (wire types 3/4) as an unknown field is skipped too. */
    struct sbuf b;
    sbuf_init(&b, 0);
    put_tag(&b, 9, 3);
    put_vfield(&b, 1, 5);
    put_tag(&b, 2, 3);
    put_tag(&b, 2, 4);
    put_tag(&b, 9, 4);
    put_vfield(&b, 1, 3);
    CHECK(is_int(f, b.data, b.len, "id", 3));
    /* An unbalanced group is corrupt. */
    b.len = 0;
    put_tag(&b, 9, 3);
    put_tag(&b, 8, 4);
    struct sval v;
    CHECK(get(f, b.data, b.len, "id", &v) == ERR_CORRUPT);
    sbuf_free(&b);
    sfmt_free(f);
    proto_schema_free(s);
}

TEST(proto_decode_wire_semantics)
{
    struct proto_schema *s = parse_ok(fx_proto_text);
    REQUIRE(s);
    struct sfmt *f = fmt_for(s, "fx.Order");
    REQUIRE(f);
    struct sbuf b;
    sbuf_init(&b, 0);
    /* packed_nums sent unpacked, unpacked_nums sent packed: both accepted. */
    put_vfield(&b, 3, 10);
    put_vfield(&b, 3, 11);
    uint8_t packed[] = {0x05, 0x06};
    put_lfield(&b, 4, packed, 2);
    /* Last one wins for a singular field; a wrong wire type is an unknown field. */
    put_vfield(&b, 1, 1);
    put_vfield(&b, 1, 2);
    put_tag(&b, 1, 5);
    sbuf_put_le32(&b, 99);
    /* An embedded message twice: merged. */
    put_lfield(&b, 8, "\x0a\x01q", 3);
    put_lfield(&b, 8, "\x10\x04", 2);
    /* Oneof: the last member wins. */
    put_lfield(&b, 9, "visa", 4);
    put_vfield(&b, 10, 5);
    put_lfield(&b, 9, "amex", 4);
    /* Map: a duplicate key, last wins. */
    put_lfield(&b, 5, "\x0a\x01k\x12\x01" "a", 6);
    put_lfield(&b, 5, "\x0a\x01k\x12\x01" "b", 6);
    /* Map entry without a value: the default. */
    put_lfield(&b, 5, "\x0a\x01z", 3);
    CHECK(is_json(f, b.data, b.len, "packed_nums", "[10,11]"));
    CHECK(is_json(f, b.data, b.len, "unpacked_nums", "[5,6]"));
    CHECK(is_int(f, b.data, b.len, "id", 2));
    CHECK(is_str(f, b.data, b.len, "main.sku", "q"));
    CHECK(is_int(f, b.data, b.len, "main.qty", 4));
    CHECK(is_json(f, b.data, b.len, "main", "{\"sku\":\"q\",\"qty\":4}"));
    CHECK(is_str(f, b.data, b.len, "card", "amex"));
    CHECK(is_type(f, b.data, b.len, "cash_cents", SV_MISSING));
    CHECK(is_str(f, b.data, b.len, "labels.k", "b"));
    CHECK(is_str(f, b.data, b.len, "labels.z", ""));
    CHECK(json_is(f, b.data, b.len,
                  "{\"id\":\"2\",\"packedNums\":[10,11],\"unpackedNums\":[5,6],"
                  "\"labels\":{\"k\":\"b\",\"z\":\"\"},\"main\":{\"sku\":\"q\",\"qty\":4},"
                  "\"card\":\"amex\"}"));
    /* Oneof switching the other way. */
    b.len = 0;
    put_lfield(&b, 9, "visa", 4);
    put_vfield(&b, 10, 0);
    CHECK(is_type(f, b.data, b.len, "card", SV_MISSING));
    CHECK(is_int(f, b.data, b.len, "cash_cents", 0));
    CHECK(json_is(f, b.data, b.len, "{\"cashCents\":\"0\"}"));
    sbuf_free(&b);
    sfmt_free(f);
    proto_schema_free(s);
}

TEST(proto_decode_damage)
{
    struct proto_schema *s = parse_ok(fx_proto_text);
    REQUIRE(s);
    struct sfmt *f = fmt_for(s, "fx.Order");
    REQUIRE(f);
    struct sval v;
    const char *err;
    struct spath all[] = {P("id"), P("labels.env"), P("items[1].sku"), P("nested.tags"),
                          P("ts"), P("items"), P("main"), P("maybe"), P("items_by_id.5.sku")};
    struct sval out[9];
    /* Truncation at every byte: an error or (at a field boundary) a shorter valid record. */
    for (size_t n = 0; n <= fx_order_bin_len; n++) {
        arena_reset(&A);
        int rc = f->ops->extract(f, slice_of(fx_order_bin, n), all, 9, out, &A, &err);
        CHECK(rc == 0 || rc == ERR_CORRUPT);
        struct sbuf o;
        sbuf_init(&o, 0);
        int rc2 = f->ops->to_json(f, slice_of(fx_order_bin, n), &o, &A, &err);
        CHECK(rc2 == rc);
        CHECK(rc2 == 0 || o.len == 0);
        sbuf_free(&o);
    }
    /* The last field is a LEN: cutting inside it is corrupt. */
    CHECK(get(f, fx_order_bin, fx_order_bin_len - 1, "id", &v) == ERR_CORRUPT);
    struct sfmt *fs = fmt_for(s, "fx.Scalars");
    for (size_t n = 0; n <= fx_scalars_bin_len; n++) {
        int rc = get(fs, fx_scalars_bin, n, "si64", &v);
        CHECK(rc == 0 || rc == ERR_CORRUPT);
    }
    /* Hand-made damage. */
    uint8_t over[] = {0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    CHECK(get(f, over, sizeof over, "id", &v) == ERR_CORRUPT);          /* 11-byte varint */
    uint8_t over64[] = {0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02};
    CHECK(get(f, over64, sizeof over64, "id", &v) == ERR_CORRUPT);      /* > 64 bits */
    uint8_t zero[] = {0x00, 0x01};
    CHECK(get(f, zero, sizeof zero, "id", &v) == ERR_CORRUPT);          /* field number 0 */
    uint8_t wt7[] = {0x0f, 0x01};
    CHECK(get(f, wt7, sizeof wt7, "id", &v) == ERR_CORRUPT);            /* wire type 7 */
    uint8_t longlen[] = {0x12, 0x05, 'a'};
    CHECK(get(f, longlen, sizeof longlen, "id", &v) == ERR_CORRUPT);    /* length past the end */
    uint8_t badutf[] = {0x12, 0x02, 0xc3, 0x28};
    CHECK(get(f, badutf, sizeof badutf, "id", &v) == ERR_CORRUPT);      /* not UTF-8 */
    uint8_t badnested[] = {0x42, 0x02, 0x0a, 0x05};
    CHECK(get(f, badnested, sizeof badnested, "id", &v) == ERR_CORRUPT); /* inside a message */
    uint8_t badpacked[] = {0x1a, 0x01, 0x80};
    CHECK(get(f, badpacked, sizeof badpacked, "id", &v) == ERR_CORRUPT); /* packed varint cut */
    /* Two occurrences of a message, the first cut inside a field: merging must not let the
     * second one's bytes complete it (fuzz finding). */
    uint8_t healed[] = {0x42, 0x02, 0x0a, 0x03, 0x42, 0x03, 'a', 'b', 'c'};
    CHECK(get(f, healed, sizeof healed, "main.sku", &v) == ERR_CORRUPT);
    struct sbuf hj;
    sbuf_init(&hj, 0);
    CHECK(f->ops->to_json(f, slice_of(healed, sizeof healed), &hj, &A, &err) == ERR_CORRUPT);
    sbuf_free(&hj);
    uint8_t endgroup[] = {0x0c};
    CHECK(get(f, endgroup, sizeof endgroup, "id", &v) == ERR_CORRUPT);
    sfmt_free(fs);
    sfmt_free(f);
    proto_schema_free(s);
    /* Depth limit on a recursive message. */
    s = parse_ok("syntax = \"proto3\"; message R { R child = 1; int32 v = 2; }");
    REQUIRE(s);
    f = fmt_for(s, "R");
    struct sbuf b, t;
    sbuf_init(&b, 0);
    sbuf_init(&t, 0);
    put_vfield(&b, 2, 1);
    for (int i = 0; i < 100; i++) {
        sbuf_reset(&t);
        put_lfield(&t, 1, b.data, b.len);
        sbuf_reset(&b);
        sbuf_append(&b, t.data, t.len);
    }
    CHECK(get(f, b.data, b.len, "v", &v) == ERR_CORRUPT);
    struct sbuf o;
    sbuf_init(&o, 0);
    CHECK(f->ops->to_json(f, slice_of(b.data, b.len), &o, &A, &err) != 0);
    CHECK(o.len == 0);
    /* 20 deep is fine for extract and for JSON. */
    sbuf_reset(&b);
    put_vfield(&b, 2, 1);
    for (int i = 0; i < 20; i++) {
        sbuf_reset(&t);
        put_lfield(&t, 1, b.data, b.len);
        sbuf_reset(&b);
        sbuf_append(&b, t.data, t.len);
    }
    CHECK(is_int(f, b.data, b.len, "child.child.child.v", 0));
    CHECK(f->ops->to_json(f, slice_of(b.data, b.len), &o, &A, &err) == 0);
    sbuf_free(&o);
    sbuf_free(&b);
    sbuf_free(&t);
    sfmt_free(f);
    proto_schema_free(s);
}

TEST(proto_wkt_json)
{
    const char *text =
        "syntax = \"proto3\"; package w;\n"
        "import \"google/protobuf/struct.proto\"; import \"google/protobuf/duration.proto\";\n"
        "import \"google/protobuf/field_mask.proto\"; import \"google/protobuf/any.proto\";\n"
        "import \"google/protobuf/empty.proto\"; import \"google/protobuf/wrappers.proto\";\n"
        "message W { google.protobuf.Struct st = 1; google.protobuf.Duration du = 2;\n"
        "  google.protobuf.FieldMask fm = 3; google.protobuf.Any any = 4;\n"
        "  google.protobuf.Empty em = 5; google.protobuf.BytesValue bv = 6;\n"
        "  google.protobuf.ListValue lv = 7; }\n"
        "message Inner { int32 a_b = 1; }\n";
    struct proto_schema *s = parse_ok(text);
    REQUIRE(s);
    struct sfmt *f = fmt_for(s, "w.W");
    REQUIRE(f);
    struct sbuf b, t, u;
    sbuf_init(&b, 0);
    sbuf_init(&t, 0);
    sbuf_init(&u, 0);
    /* Struct {"k": 1.5, "n": null, "l": [true, "s"]} */
    struct sbuf val;
    sbuf_init(&val, 0);
    double d = 1.5;
    uint64_t du;
    memcpy(&du, &d, 8);
    put_tag(&val, 2, 1);
    sbuf_put_le64(&val, du);
    put_lfield(&t, 1, "k", 1);
    put_lfield(&t, 2, val.data, val.len);
    put_lfield(&b, 1, "", 0); /* placeholder removed below */
    b.len = 0;
    struct sbuf st;
    sbuf_init(&st, 0);
    put_lfield(&st, 1, t.data, t.len);
    sbuf_reset(&t);
    put_lfield(&t, 1, "n", 1);
    put_lfield(&t, 2, "\x08\x00", 2);
    put_lfield(&st, 1, t.data, t.len);
    /* list value: [true, "s"] */
    sbuf_reset(&u);
    put_lfield(&u, 1, "\x20\x01", 2);
    put_lfield(&u, 1, "\x1a\x01s", 3);
    sbuf_reset(&val);
    put_lfield(&val, 6, u.data, u.len);
    sbuf_reset(&t);
    put_lfield(&t, 1, "l", 1);
    put_lfield(&t, 2, val.data, val.len);
    put_lfield(&st, 1, t.data, t.len);
    put_lfield(&b, 1, st.data, st.len);
    /* Duration -1.5s */
    sbuf_reset(&t);
    put_vfield(&t, 1, (uint64_t)-1);
    put_vfield(&t, 2, (uint64_t)(int64_t)-500000000);
    put_lfield(&b, 2, t.data, t.len);
    /* FieldMask */
    sbuf_reset(&t);
    put_lfield(&t, 1, "a_b.c_d", 7);
    put_lfield(&t, 1, "e", 1);
    put_lfield(&b, 3, t.data, t.len);
    /* Any holding w.Inner{a_b: 3} */
    sbuf_reset(&t);
    put_lfield(&t, 1, "type.googleapis.com/w.Inner", 27);
    put_lfield(&t, 2, "\x08\x03", 2);
    put_lfield(&b, 4, t.data, t.len);
    put_lfield(&b, 5, "", 0);
    put_lfield(&b, 6, "\x0a\x02hi", 4);
    sbuf_reset(&t);
    put_lfield(&t, 1, "\x11\x00\x00\x00\x00\x00\x00\x00\x00", 9);
    put_lfield(&b, 7, t.data, t.len);
    CHECK(json_is(f, b.data, b.len,
                  "{\"st\":{\"k\":1.5,\"n\":null,\"l\":[true,\"s\"]},\"du\":\"-1.500s\","
                  "\"fm\":\"aB.cD,e\",\"any\":{\"@type\":\"type.googleapis.com/w.Inner\",\"aB\":3},"
                  "\"em\":{},\"bv\":\"aGk=\",\"lv\":[0]}"));
    CHECK(is_str(f, b.data, b.len, "du", "-1.500s"));
    struct sval v;
    CHECK(get(f, b.data, b.len, "bv", &v) == 0 && v.type == SV_BYTES && v.len == 2);
    CHECK(is_json(f, b.data, b.len, "st", "{\"k\":1.5,\"n\":null,\"l\":[true,\"s\"]}"));
    CHECK(is_json(f, b.data, b.len, "st.fields.l", "[true,\"s\"]"));
    sbuf_free(&b);
    sbuf_free(&t);
    sbuf_free(&u);
    sbuf_free(&val);
    sbuf_free(&st);
    sfmt_free(f);
    proto_schema_free(s);
}

TEST(proto_confluent_indexes)
{
    int64_t idx[8];
    size_t n, used;
    uint8_t zero[] = {0x00, 0xAA};
    CHECK(proto_read_message_indexes(slice_of(zero, 2), idx, 8, &n, &used) == 0);
    CHECK(n == 1 && idx[0] == 0 && used == 1);
    uint8_t one[] = {0x02, 0x04}; /* zigzag: count 1, index 2 */
    CHECK(proto_read_message_indexes(slice_of(one, 2), idx, 8, &n, &used) == 0);
    CHECK(n == 1 && idx[0] == 2 && used == 2);
    uint8_t two[] = {0x04, 0x04, 0x02}; /* [2, 1] */
    CHECK(proto_read_message_indexes(slice_of(two, 3), idx, 8, &n, &used) == 0);
    CHECK(n == 2 && idx[0] == 2 && idx[1] == 1 && used == 3);
    uint8_t neg[] = {0x01};
    CHECK(proto_read_message_indexes(slice_of(neg, 1), idx, 8, &n, &used) == ERR_CORRUPT);
    uint8_t cut[] = {0x04, 0x04};
    CHECK(proto_read_message_indexes(slice_of(cut, 2), idx, 8, &n, &used) == ERR_CORRUPT);
    CHECK(proto_read_message_indexes(slice_of(two, 3), idx, 1, &n, &used) == ERR_CORRUPT);
    /* And the lookup they feed. */
    struct proto_schema *s = parse_ok(fx_proto_text);
    REQUIRE(s);
    CHECK(proto_read_message_indexes(slice_of(two, 3), idx, 8, &n, &used) == 0);
    CHECK(proto_message_by_index(s, idx, n) == proto_message_by_name(s, "fx.Order.ItemsByIdEntry"));
    proto_schema_free(s);
}

__attribute__((constructor)) static void test_proto_init(void) { arena_init(&A, 64u << 20); }

/* ---- the proto3 JSON encoding as records ------------------------------------------------------- */

TEST(proto_json_records)
{
    struct proto_schema *s = parse_ok(fx_proto_text);
    REQUIRE(s);
    json_t *aliases = json_loads("{\"user_name\": [\"login\", \"user\"]}", 0, NULL);
    struct sfmt *f = NULL;
    struct serr e;
    REQUIRE(sfmt_proto_json_new(s, proto_message_by_name(s, "fx.Order"), aliases, &f, &e) == 0);
    json_decref(aliases);
    const char *rec = "{\"id\":\"42\",\"login\":\"ann\",\"packed_nums\":[1,\"2\",300],"
                      "\"labels\":{\"env\":\"prod\"},\"itemsById\":{\"5\":{\"sku\":\"A5\"}},"
                      "\"items\":[{\"sku\":\"x\",\"qty\":2}],\"main\":null,\"cashCents\":1999,"
                      "\"ts\":\"2023-11-14T22:13:20.500Z\",\"maybe\":\"77\",\"color\":1,"
                      "\"nested\":{\"deep\":{\"x\":\"d\"}},\"unknown\":true}";
    const uint8_t *r = (const uint8_t *)rec;
    size_t n = strlen(rec);
    CHECK(is_int(f, r, n, "id", 42));
    CHECK(is_str(f, r, n, "user_name", "ann"));
    CHECK(is_str(f, r, n, "login", "ann"));
    CHECK(is_int(f, r, n, "packed_nums[1]", 2));
    CHECK(is_json(f, r, n, "packedNums", "[1,\"2\",300]"));
    CHECK(is_str(f, r, n, "labels.env", "prod"));
    CHECK(is_str(f, r, n, "items_by_id.5.sku", "A5"));
    CHECK(is_int(f, r, n, "items_by_id.5.qty", 0));
    CHECK(is_int(f, r, n, "items[0].qty", 2));
    CHECK(is_type(f, r, n, "main", SV_MISSING));
    CHECK(is_type(f, r, n, "main.sku", SV_MISSING));
    CHECK(is_type(f, r, n, "card", SV_MISSING));
    CHECK(is_int(f, r, n, "cash_cents", 1999));
    CHECK(is_str(f, r, n, "ts", "2023-11-14T22:13:20.500Z"));
    CHECK(is_int(f, r, n, "maybe", 77));
    CHECK(is_str(f, r, n, "color", "RED"));
    CHECK(is_str(f, r, n, "nested.deep.x", "d"));
    CHECK(is_json(f, r, n, "unpacked_nums", "[]"));
    CHECK(json_is(f, r, n,
                  "{\"id\":\"42\",\"userName\":\"ann\",\"packedNums\":[1,2,300],"
                  "\"labels\":{\"env\":\"prod\"},\"itemsById\":{\"5\":{\"sku\":\"A5\"}},"
                  "\"items\":[{\"sku\":\"x\",\"qty\":2}],\"cashCents\":\"1999\","
                  "\"ts\":\"2023-11-14T22:13:20.500Z\",\"maybe\":\"77\","
                  "\"nested\":{\"deep\":{\"x\":\"d\"}},\"color\":\"RED\"}"));
    /* Wrong types and damage. */
    struct sval v;
    const char *bad1 = "{\"id\":true}";
    CHECK(get(f, (const uint8_t *)bad1, strlen(bad1), "id", &v) == ERR_CORRUPT);
    const char *bad2 = "{\"id\":1";
    CHECK(get(f, (const uint8_t *)bad2, strlen(bad2), "id", &v) == ERR_CORRUPT);
    const char *bad3 = "[1]";
    CHECK(get(f, (const uint8_t *)bad3, strlen(bad3), "id", &v) == ERR_INVALID);
    const char *bad4 = "{\"color\":\"PURPLE\"}";
    CHECK(get(f, (const uint8_t *)bad4, strlen(bad4), "color", &v) == ERR_CORRUPT);
    sfmt_free(f);
    /* Every scalar type, bytes in URL-safe base64, 32-bit range checks. */
    REQUIRE(sfmt_proto_json_new(s, proto_message_by_name(s, "fx.Scalars"), NULL, &f, &e) == 0);
    const char *sc = "{\"d\":\"NaN\",\"f\":-2.25,\"i64\":\"-9000000000\","
                     "\"u64\":\"18446744073709551615\",\"i32\":-1,\"by\":\"AAH_\",\"b\":true,"
                     "\"si32\":-7,\"opt\":0}";
    r = (const uint8_t *)sc;
    n = strlen(sc);
    CHECK(get(f, r, n, "d", &v) == 0 && v.type == SV_DOUBLE && isnan(v.d));
    CHECK(is_int(f, r, n, "i64", -9000000000LL));
    CHECK(get(f, r, n, "u64", &v) == 0 && v.type == SV_DOUBLE);
    CHECK(get(f, r, n, "by", &v) == 0 && v.type == SV_BYTES && v.len == 3 &&
          memcmp(v.p, "\x00\x01\xff", 3) == 0);
    CHECK(is_int(f, r, n, "opt", 0));
    CHECK(is_int(f, r, n, "sf32", 0));
    CHECK(is_str(f, r, n, "s", ""));
    CHECK(json_is(f, r, n,
                  "{\"d\":\"NaN\",\"f\":-2.25,\"i64\":\"-9000000000\","
                  "\"u64\":\"18446744073709551615\",\"i32\":-1,\"b\":true,\"by\":\"AAH/\","
                  "\"si32\":-7,\"opt\":0}"));
    const char *big = "{\"i32\":2147483648}";
    CHECK(get(f, (const uint8_t *)big, strlen(big), "i32", &v) == ERR_CORRUPT);
    sfmt_free(f);
    proto_schema_free(s);
}

/* Every allocation failing in turn: an error (never a crash or a leak; ASan checks the latter). */
TEST(proto_alloc_failures)
{
    for (long k = 1; k < 100000; k++) {
        struct proto_schema *s = NULL;
        struct serr e;
        alloc_fail_after(k);
        int rc = proto_schema_parse(fx_proto_text, strlen(fx_proto_text), NULL, NULL, &s, &e);
        alloc_fail_after(0);
        CHECK(rc == 0 || rc == ERR_NOMEM || rc == ERR_INVALID);
        CHECK((rc == 0) == (s != NULL));
        proto_schema_free(s);
        if (rc == 0)
            break;
    }
    for (long k = 1; k < 100000; k++) {
        struct proto_schema *s = NULL;
        struct serr e;
        alloc_fail_after(k);
        int rc = proto_schema_from_fds(slice_of(fx_fds, fx_fds_len), &s, &e);
        alloc_fail_after(0);
        CHECK(rc == 0 || rc == ERR_NOMEM || rc == ERR_INVALID);
        proto_schema_free(s);
        if (rc == 0)
            break;
    }
}
