/* test_schema_registry.c -- the schema registry state machine (src/schema/registry.h): ids,
 * versions, idempotence, references, limits, snapshot round trip and damage, reset, the entry
 * codec, and the parsed-schema lookup.
 *
 * The Avro and Protobuf schema parsers come from stream/fmt (merged from fmt-avro / fmt-proto). */
#include "harness.h"

#include "base/err.h"
#include "broker/entry.h"
#include "schema/registry.h"
#include "stream/fmt/avro.h"
#include "stream/fmt/proto.h"

#include <stdlib.h>
#include <string.h>

static struct schema_desc jdesc(const char *text)
{
    return (struct schema_desc){SCHEMA_JSON, 0, slice_cstr(text), {NULL, 0}, NULL, 0};
}

static int reg(struct schema_registry *r, const char *subject, const struct schema_desc *d,
               struct schema_result *res)
{
    return schema_registry_apply_register(r, slice_cstr(subject), d, res);
}

TEST(schema_ids_versions_idempotence)
{
    struct schema_registry *r = schema_registry_new(NULL);
    REQUIRE(r);
    struct schema_result res;
    struct schema_desc a = jdesc("{\"type\":\"object\"}");
    struct schema_desc b = jdesc("{\"type\":\"string\"}");
    CHECK_EQ_INT(reg(r, "t-value", &a, &res), 0);
    CHECK(res.id == 1 && res.version == 1 && res.created);
    /* the same schema under the same subject: idempotent */
    CHECK_EQ_INT(reg(r, "t-value", &a, &res), 0);
    CHECK(res.id == 1 && res.version == 1 && !res.created);
    /* a new schema: new id, next version */
    CHECK_EQ_INT(reg(r, "t-value", &b, &res), 0);
    CHECK(res.id == 2 && res.version == 2 && res.created);
    /* the first schema again under the same subject: still version 1 (any version counts) */
    CHECK_EQ_INT(reg(r, "t-value", &a, &res), 0);
    CHECK(res.id == 1 && res.version == 1 && !res.created);
    /* the same schema under another subject reuses its id */
    CHECK_EQ_INT(reg(r, "other", &b, &res), 0);
    CHECK(res.id == 2 && res.version == 1 && res.created);
    /* the same text as another type is a different schema */
    struct schema_desc bp = b;
    bp.type = SCHEMA_AVRO; /* apply never parses: the type is part of the identity */
    CHECK_EQ_INT(reg(r, "other", &bp, &res), 0);
    CHECK(res.id == 3 && res.version == 2);

    CHECK_EQ_INT(schema_registry_lookup(r, slice_cstr("t-value"), &b, &res), 0);
    CHECK(res.id == 2 && res.version == 2);
    CHECK_EQ_INT(schema_registry_lookup(r, slice_cstr("nope"), &b, &res), ERR_SUBJECT_NOT_FOUND);
    struct schema_desc c = jdesc("{}");
    CHECK_EQ_INT(schema_registry_lookup(r, slice_cstr("t-value"), &c, &res), ERR_SCHEMA_NOT_FOUND);

    struct schema_stats st;
    schema_registry_stats(r, &st);
    CHECK_EQ_INT(st.schemas, 3);
    CHECK_EQ_INT(st.subjects, 2);
    CHECK_EQ_INT(st.versions, 4);
    CHECK_EQ_INT(st.next_id, 4);
    CHECK_EQ_INT(st.idempotent, 2);
    CHECK_EQ_INT(schema_registry_check_invariants(r), 0);
    schema_registry_free(r);
}

struct view_capture {
    uint32_t id, version;
    uint8_t type;
    char text[256], subject[64];
    size_t nrefs;
};

static int capture(void *ctx, const struct schema_view *v)
{
    struct view_capture *c = ctx;
    c->id = v->id;
    c->version = v->version;
    c->type = v->type;
    snprintf(c->text, sizeof c->text, "%.*s", (int)v->text.len, (const char *)v->text.ptr);
    snprintf(c->subject, sizeof c->subject, "%.*s", (int)v->subject.len,
             (const char *)v->subject.ptr);
    c->nrefs = v->nrefs;
    return 0;
}

static int list_subject(void *ctx, struct slice s)
{
    char *out = ctx;
    strncat(out, (const char *)s.ptr, s.len);
    strcat(out, ",");
    return 0;
}

static int list_version(void *ctx, uint32_t v, uint32_t id)
{
    char *out = ctx;
    char b[32];
    snprintf(b, sizeof b, "%u:%u,", v, id);
    strcat(out, b);
    return 0;
}

TEST(schema_views_and_listings)
{
    struct schema_registry *r = schema_registry_new(NULL);
    REQUIRE(r);
    struct schema_result res;
    struct schema_desc a = jdesc("{\"a\":1}"), b = jdesc("{\"b\":2}");
    CHECK_EQ_INT(reg(r, "zeta", &a, &res), 0);
    CHECK_EQ_INT(reg(r, "alpha", &b, &res), 0);
    CHECK_EQ_INT(reg(r, "alpha", &a, &res), 0);
    struct view_capture c;
    CHECK_EQ_INT(schema_registry_view_id(r, 2, capture, &c), 0);
    CHECK(c.id == 2 && strcmp(c.text, "{\"b\":2}") == 0 && c.type == SCHEMA_JSON && c.version == 0);
    CHECK_EQ_INT(schema_registry_view_id(r, 0, capture, &c), ERR_SCHEMA_NOT_FOUND);
    CHECK_EQ_INT(schema_registry_view_id(r, 3, capture, &c), ERR_SCHEMA_NOT_FOUND);
    CHECK_EQ_INT(schema_registry_view_version(r, slice_cstr("alpha"), 0, capture, &c), 0);
    CHECK(c.id == 1 && c.version == 2 && strcmp(c.subject, "alpha") == 0);
    CHECK_EQ_INT(schema_registry_view_version(r, slice_cstr("alpha"), 1, capture, &c), 0);
    CHECK(c.id == 2 && c.version == 1);
    CHECK_EQ_INT(schema_registry_view_version(r, slice_cstr("alpha"), 3, capture, &c),
                 ERR_VERSION_NOT_FOUND);
    CHECK_EQ_INT(schema_registry_view_version(r, slice_cstr("beta"), 1, capture, &c),
                 ERR_SUBJECT_NOT_FOUND);
    CHECK_EQ_INT(schema_registry_view_version(r, slice_cstr("a b"), 1, capture, &c), ERR_BAD_NAME);
    char out[256] = "";
    CHECK_EQ_INT(schema_registry_subjects(r, list_subject, out), 0);
    CHECK(strcmp(out, "alpha,zeta,") == 0);
    out[0] = 0;
    CHECK_EQ_INT(schema_registry_versions(r, slice_cstr("alpha"), list_version, out), 0);
    CHECK(strcmp(out, "1:2,2:1,") == 0);
    CHECK_EQ_INT(schema_registry_versions(r, slice_cstr("x"), list_version, out),
                 ERR_SUBJECT_NOT_FOUND);
    schema_registry_free(r);
}

TEST(schema_references)
{
    struct schema_registry *r = schema_registry_new(NULL);
    REQUIRE(r);
    struct schema_result res;
    struct schema_desc base = jdesc("{\"base\":true}");
    CHECK_EQ_INT(reg(r, "base", &base, &res), 0);
    struct schema_reference refs[2] = {{SLICE_LIT("base.json"), SLICE_LIT("base"), 1},
                                       {SLICE_LIT("missing.json"), SLICE_LIT("base"), 2}};
    struct schema_desc d = jdesc("{\"$ref\":\"base.json\"}");
    d.refs = refs;
    d.nrefs = 2;
    /* a reference to a version that does not exist: rejected, nothing changes */
    CHECK_EQ_INT(reg(r, "user", &d, &res), ERR_SCHEMA_INVALID);
    struct serr e = {0};
    struct sbuf canon;
    sbuf_init(&canon, 0);
    CHECK_EQ_INT(schema_registry_prepare(r, &d, &canon, &e), ERR_SCHEMA_INVALID);
    CHECK(strcmp(e.path, "/references/1") == 0);
    d.nrefs = 1;
    CHECK_EQ_INT(schema_registry_prepare(r, &d, &canon, &e), 0);
    CHECK_EQ_INT(reg(r, "user", &d, &res), 0);
    CHECK(res.id == 2 && res.version == 1);
    /* same text, different references: a different schema */
    refs[0].name = SLICE_LIT("other.json");
    CHECK_EQ_INT(reg(r, "user", &d, &res), 0);
    CHECK(res.id == 3 && res.version == 2);
    /* duplicate names, bad versions, bad subjects */
    struct schema_reference dup[2] = {{SLICE_LIT("x"), SLICE_LIT("base"), 1},
                                      {SLICE_LIT("x"), SLICE_LIT("base"), 1}};
    d.refs = dup;
    d.nrefs = 2;
    CHECK_EQ_INT(schema_registry_prepare(r, &d, &canon, &e), ERR_SCHEMA_INVALID);
    CHECK(strcmp(e.path, "/references/1") == 0);
    dup[1].name = SLICE_LIT("y");
    dup[1].version = 0;
    CHECK_EQ_INT(schema_registry_prepare(r, &d, &canon, &e), ERR_SCHEMA_INVALID);
    dup[1].version = 1;
    dup[1].subject = SLICE_LIT("has space");
    CHECK_EQ_INT(reg(r, "user", &d, &res), ERR_SCHEMA_INVALID);
    struct view_capture c;
    CHECK_EQ_INT(schema_registry_view_id(r, 2, capture, &c), 0);
    CHECK_EQ_INT(c.nrefs, 1);
    CHECK_EQ_INT(schema_registry_check_invariants(r), 0);
    sbuf_free(&canon);
    schema_registry_free(r);
}

TEST(schema_validation_and_limits)
{
    struct schema_limits l;
    schema_limits_default(&l);
    l.schema_bytes_max = 64;
    l.subjects_max = 2;
    l.versions_max = 2;
    l.schemas_max = 3;
    struct schema_registry *r = schema_registry_new(&l);
    REQUIRE(r);
    struct schema_result res;
    struct serr e = {0};
    struct sbuf canon;
    sbuf_init(&canon, 0);
    /* names */
    struct schema_desc a = jdesc("{\"a\":1}");
    CHECK_EQ_INT(reg(r, "", &a, &res), ERR_BAD_NAME);
    CHECK_EQ_INT(reg(r, "a/b c", &a, &res), ERR_BAD_NAME);
    char longname[300];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    CHECK_EQ_INT(reg(r, longname, &a, &res), ERR_BAD_NAME);
    /* JSON schema checks (prepare) */
    struct schema_desc bad = jdesc("{\"a\":");
    CHECK_EQ_INT(schema_registry_prepare(r, &bad, &canon, &e), ERR_SCHEMA_INVALID);
    CHECK(strncmp(e.path, "/schema", 7) == 0);
    bad = jdesc("[1,2]");
    CHECK_EQ_INT(schema_registry_prepare(r, &bad, &canon, &e), ERR_SCHEMA_INVALID);
    bad = jdesc("");
    CHECK_EQ_INT(schema_registry_prepare(r, &bad, &canon, &e), ERR_SCHEMA_INVALID);
    bad = jdesc("{\"\xff\":1}");
    CHECK_EQ_INT(schema_registry_prepare(r, &bad, &canon, &e), ERR_SCHEMA_INVALID);
    bad = jdesc("{\"a\":\"0123456789012345678901234567890123456789012345678901234567890\"}");
    CHECK_EQ_INT(schema_registry_prepare(r, &bad, &canon, &e), ERR_TOO_LARGE);
    CHECK_EQ_INT(reg(r, "s", &bad, &res), ERR_TOO_LARGE);
    bad = jdesc("{}");
    bad.type = 9;
    CHECK_EQ_INT(reg(r, "s", &bad, &res), ERR_SCHEMA_INVALID);
    bad = jdesc("{}");
    bad.flags = SCHEMA_F_FDS; /* only for PROTOBUF */
    CHECK_EQ_INT(reg(r, "s", &bad, &res), ERR_SCHEMA_INVALID);
    /* limits: versions per subject, subjects, schemas */
    struct schema_desc s1 = jdesc("{\"1\":1}"), s2 = jdesc("{\"2\":1}"), s3 = jdesc("{\"3\":1}"),
                       s4 = jdesc("{\"4\":1}");
    CHECK_EQ_INT(reg(r, "a", &s1, &res), 0);
    CHECK_EQ_INT(reg(r, "a", &s2, &res), 0);
    CHECK_EQ_INT(reg(r, "a", &s3, &res), ERR_NOSPACE);
    CHECK_EQ_INT(reg(r, "a", &s1, &res), 0); /* idempotent: no limit applies */
    CHECK_EQ_INT(reg(r, "b", &s3, &res), 0);
    CHECK_EQ_INT(reg(r, "c", &s1, &res), ERR_NOSPACE); /* subjects */
    CHECK_EQ_INT(reg(r, "b", &s4, &res), ERR_NOSPACE); /* schemas */
    CHECK_EQ_INT(reg(r, "b", &s1, &res), 0);           /* an existing id is fine */
    CHECK(res.id == 1 && res.version == 2);
    struct schema_stats st;
    schema_registry_stats(r, &st);
    CHECK_EQ_INT(st.schemas, 3);
    CHECK_EQ_INT(st.rejected, 9);
    CHECK_EQ_INT(schema_registry_check_invariants(r), 0);
    /* type names */
    uint8_t t = 0;
    CHECK(schema_type_parse(SLICE_LIT(""), &t) == 0 && t == SCHEMA_AVRO);
    CHECK(schema_type_parse(SLICE_LIT("PROTOBUF"), &t) == 0 && t == SCHEMA_PROTOBUF);
    CHECK(schema_type_parse(SLICE_LIT("JSON"), &t) == 0 && t == SCHEMA_JSON);
    CHECK_EQ_INT(schema_type_parse(SLICE_LIT("avro"), &t), ERR_SCHEMA_INVALID);
    sbuf_free(&canon);
    schema_registry_free(r);
}

static void fill(struct schema_registry *r, int n)
{
    struct schema_result res;
    char text[64], subj[32];
    for (int i = 0; i < n; i++) {
        snprintf(text, sizeof text, "{\"n\":%d}", i % 37);
        snprintf(subj, sizeof subj, "subject-%d", i % 11);
        struct schema_desc d = jdesc(text);
        if (i % 5 == 0)
            d.type = SCHEMA_PROTOBUF; /* apply stores what prepare accepted; no parse */
        if (i % 7 == 0)
            d.canon = SLICE_LIT("canonical");
        CHECK_EQ_INT(reg(r, subj, &d, &res), 0);
    }
    struct schema_reference ref = {SLICE_LIT("dep.proto"), SLICE_LIT("subject-1"), 1};
    struct schema_desc d = jdesc("{\"with\":\"ref\"}");
    d.refs = &ref;
    d.nrefs = 1;
    CHECK_EQ_INT(reg(r, "refs", &d, &res), 0);
}

TEST(schema_snapshot_roundtrip)
{
    struct schema_registry *a = schema_registry_new(NULL), *b = schema_registry_new(NULL);
    REQUIRE(a && b);
    fill(a, 300);
    struct sbuf s1, s2;
    sbuf_init(&s1, 0);
    sbuf_init(&s2, 0);
    CHECK_EQ_INT(schema_registry_snapshot_write(a, &s1), 0);
    CHECK_EQ_INT(schema_registry_snapshot_read(b, slice_of(s1.data, s1.len)), 0);
    CHECK_EQ_INT(schema_registry_check_invariants(b), 0);
    CHECK_EQ_INT(schema_registry_snapshot_write(b, &s2), 0);
    CHECK(s1.len == s2.len && memcmp(s1.data, s2.data, s1.len) == 0);
    struct schema_stats sa, sb;
    schema_registry_stats(a, &sa);
    schema_registry_stats(b, &sb);
    CHECK(sa.schemas == sb.schemas && sa.subjects == sb.subjects && sa.versions == sb.versions &&
          sa.bytes == sb.bytes && sa.next_id == sb.next_id);
    /* the restored registry continues identically: same next id, same idempotence */
    struct schema_result ra, rb;
    struct schema_desc fresh = jdesc("{\"fresh\":1}");
    CHECK_EQ_INT(reg(a, "subject-3", &fresh, &ra), 0);
    CHECK_EQ_INT(reg(b, "subject-3", &fresh, &rb), 0);
    CHECK(ra.id == rb.id && ra.version == rb.version);
    struct schema_desc old = jdesc("{\"n\":3}");
    CHECK_EQ_INT(reg(b, "subject-3", &old, &rb), 0);
    CHECK(!rb.created);
    /* restore only into an empty registry */
    CHECK_EQ_INT(schema_registry_snapshot_read(b, slice_of(s1.data, s1.len)), ERR_INVALID);
    schema_registry_reset(b);
    schema_registry_stats(b, &sb);
    CHECK(sb.schemas == 0 && sb.subjects == 0 && sb.next_id == 1);
    CHECK_EQ_INT(schema_registry_snapshot_read(b, slice_of(s1.data, s1.len)), 0);
    /* an empty registry round-trips too */
    struct schema_registry *c = schema_registry_new(NULL), *d = schema_registry_new(NULL);
    sbuf_reset(&s2);
    CHECK_EQ_INT(schema_registry_snapshot_write(c, &s2), 0);
    CHECK_EQ_INT(schema_registry_snapshot_read(d, slice_of(s2.data, s2.len)), 0);
    schema_registry_free(c);
    schema_registry_free(d);
    sbuf_free(&s1);
    sbuf_free(&s2);
    schema_registry_free(a);
    schema_registry_free(b);
}

TEST(schema_snapshot_corrupt)
{
    struct schema_registry *a = schema_registry_new(NULL);
    REQUIRE(a);
    fill(a, 40);
    struct sbuf s;
    sbuf_init(&s, 0);
    REQUIRE(schema_registry_snapshot_write(a, &s) == 0);
    struct schema_registry *b = schema_registry_new(NULL);
    /* every flipped byte and every truncation is caught (the CRC) and leaves b empty */
    for (size_t i = 0; i < s.len; i += 3) {
        s.data[i] ^= 0x5a;
        CHECK_EQ_INT(schema_registry_snapshot_read(b, slice_of(s.data, s.len)), ERR_CORRUPT);
        s.data[i] ^= 0x5a;
    }
    for (size_t n = 0; n < s.len; n += 7)
        CHECK_EQ_INT(schema_registry_snapshot_read(b, slice_of(s.data, n)), ERR_CORRUPT);
    struct schema_stats st;
    schema_registry_stats(b, &st);
    CHECK(st.schemas == 0 && st.subjects == 0);
    CHECK_EQ_INT(schema_registry_snapshot_read(b, slice_of(s.data, s.len)), 0);
    schema_registry_free(b);
    sbuf_free(&s);
    schema_registry_free(a);
}

TEST(schema_entry_codec)
{
    static struct entry_schema e, d;
    memset(&e, 0, sizeof e);
    e.ts_ms = 1234;
    e.subject = SLICE_LIT("orders-value");
    e.type = 2;
    e.flags = 1;
    e.text = SLICE_LIT("\x0a\x03" "abc");
    e.canon = SLICE_LIT("");
    e.nrefs = 2;
    e.refs[0] = (struct entry_schema_ref){SLICE_LIT("a.proto"), SLICE_LIT("a"), 1};
    e.refs[1] = (struct entry_schema_ref){SLICE_LIT("b.proto"), SLICE_LIT("b"), 300};
    struct sbuf b;
    sbuf_init(&b, 0);
    entry_schema_encode(&b, &e);
    REQUIRE(sbuf_ok(&b));
    CHECK_EQ_INT(entry_schema_decode(slice_of(b.data, b.len), &d), 0);
    CHECK(d.ts_ms == 1234 && slice_eq(d.subject, e.subject) && d.type == 2 && d.flags == 1);
    CHECK(slice_eq(d.text, e.text) && d.canon.len == 0 && d.nrefs == 2);
    CHECK(slice_eq(d.refs[1].name, e.refs[1].name) && d.refs[1].version == 300);
    /* every truncation fails */
    for (size_t n = 0; n < b.len; n++)
        CHECK_EQ_INT(entry_schema_decode(slice_of(b.data, n), &d), ERR_CORRUPT);
    /* unknown type / flags */
    e.type = 4;
    sbuf_reset(&b);
    entry_schema_encode(&b, &e);
    CHECK_EQ_INT(entry_schema_decode(slice_of(b.data, b.len), &d), ERR_CORRUPT);
    e.type = 0;
    sbuf_reset(&b);
    entry_schema_encode(&b, &e);
    CHECK_EQ_INT(entry_schema_decode(slice_of(b.data, b.len), &d), ERR_CORRUPT);
    e.type = 1;
    e.flags = 2;
    sbuf_reset(&b);
    entry_schema_encode(&b, &e);
    CHECK_EQ_INT(entry_schema_decode(slice_of(b.data, b.len), &d), ERR_CORRUPT);
    sbuf_free(&b);
}

TEST(schema_get_by_id_json)
{
    struct schema_registry *r = schema_registry_new(NULL);
    REQUIRE(r);
    struct schema_result res;
    struct schema_desc a = jdesc("{\"a\":1}");
    CHECK_EQ_INT(reg(r, "s", &a, &res), 0);
    struct schema_ref *p = NULL, *q = NULL;
    struct serr e = {0};
    CHECK_EQ_INT(schema_registry_get_by_id(r, 2, &p, &e), ERR_SCHEMA_NOT_FOUND);
    CHECK_EQ_INT(schema_registry_get_by_id(r, 1, &p, &e), 0);
    REQUIRE(p);
    CHECK(p->id == 1 && p->type == SCHEMA_JSON && !p->avro && !p->proto);
    CHECK_EQ_INT(schema_registry_get_by_id(r, 1, &q, &e), 0);
    CHECK(q == p); /* parsed once, cached */
    schema_ref_release(q);
    /* a reference outlives a reset and the registry */
    schema_registry_reset(r);
    CHECK_EQ_INT(schema_registry_get_by_id(r, 1, &q, &e), ERR_SCHEMA_NOT_FOUND);
    schema_registry_free(r);
    CHECK(p->id == 1);
    schema_ref_release(p);
}

TEST(schema_avro_parse)
{
    struct schema_registry *r = schema_registry_new(NULL);
    REQUIRE(r);
    struct serr e = {0};
    struct sbuf canon;
    sbuf_init(&canon, 0);
    const char *rec = "{\"type\": \"record\", \"name\": \"User\", \"fields\": "
                      "[{\"name\": \"id\", \"type\": \"long\"}]}";
    struct schema_desc d = {SCHEMA_AVRO, 0, slice_cstr(rec), {NULL, 0}, NULL, 0};
    {
        CHECK_EQ_INT(schema_registry_prepare(r, &d, &canon, &e), 0);
        CHECK(d.canon.len > 0); /* the spaces go: canonical form differs from the text */
        struct schema_result res, res2;
        CHECK_EQ_INT(schema_registry_apply_register(r, SLICE_LIT("u"), &d, &res), 0);
        /* the same schema written differently is the same id */
        const char *rec2 = "{\"type\":\"record\",\"name\":\"User\",\"fields\":"
                           "[{\"name\":\"id\",\"type\":\"long\"}],\"doc\":\"x\"}";
        struct schema_desc d2 = {SCHEMA_AVRO, 0, slice_cstr(rec2), {NULL, 0}, NULL, 0};
        sbuf_reset(&canon);
        CHECK_EQ_INT(schema_registry_prepare(r, &d2, &canon, &e), 0);
        CHECK_EQ_INT(schema_registry_apply_register(r, SLICE_LIT("u"), &d2, &res2), 0);
        CHECK(res2.id == res.id && !res2.created);
        struct schema_ref *p = NULL;
        CHECK_EQ_INT(schema_registry_get_by_id(r, res.id, &p, &e), 0);
        CHECK(p && p->avro);
        schema_ref_release(p);
        struct schema_desc bad = {SCHEMA_AVRO, 0, SLICE_LIT("{\"type\":\"record\"}"), {NULL, 0},
                                  NULL, 0};
        CHECK_EQ_INT(schema_registry_prepare(r, &bad, &canon, &e), ERR_SCHEMA_INVALID);
        CHECK(strncmp(e.path, "/schema", 7) == 0);
    }
    sbuf_free(&canon);
    schema_registry_free(r);
}

TEST(schema_proto_parse_imports)
{
    struct schema_registry *r = schema_registry_new(NULL);
    REQUIRE(r);
    struct serr e = {0};
    struct sbuf canon;
    sbuf_init(&canon, 0);
    const char *dep = "syntax = \"proto3\";\npackage dep;\nmessage Money { int64 units = 1; }\n";
    const char *main_ = "syntax = \"proto3\";\nimport \"dep.proto\";\n"
                        "message Order { string id = 1; dep.Money total = 2; }\n";
    struct schema_desc d = {SCHEMA_PROTOBUF, 0, slice_cstr(dep), {NULL, 0}, NULL, 0};
    {
        struct schema_result res;
        CHECK_EQ_INT(schema_registry_prepare(r, &d, &canon, &e), 0);
        CHECK_EQ_INT(schema_registry_apply_register(r, SLICE_LIT("dep"), &d, &res), 0);
        struct schema_reference ref = {SLICE_LIT("dep.proto"), SLICE_LIT("dep"), 1};
        struct schema_desc m = {SCHEMA_PROTOBUF, 0, slice_cstr(main_), {NULL, 0}, NULL, 0};
        CHECK_EQ_INT(schema_registry_prepare(r, &m, &canon, &e), ERR_SCHEMA_INVALID);
        m.refs = &ref;
        m.nrefs = 1;
        CHECK_EQ_INT(schema_registry_prepare(r, &m, &canon, &e), 0);
        CHECK_EQ_INT(schema_registry_apply_register(r, SLICE_LIT("orders-value"), &m, &res), 0);
        struct schema_ref *p = NULL;
        CHECK_EQ_INT(schema_registry_get_by_id(r, res.id, &p, &e), 0);
        CHECK(p && p->proto);
        schema_ref_release(p);
    }
    sbuf_free(&canon);
    schema_registry_free(r);
}

/* ---- the Confluent wire format over the registry ------------------------------------------ */

#include "stream/fmt/confluent.h"

TEST(schema_confluent_frame)
{
    uint32_t id;
    int64_t idx[SFMT_CONFLUENT_INDEXES_MAX];
    size_t n;
    struct slice pl;
    const char *err = NULL;
    const uint8_t avro[] = {0, 0, 0, 1, 0x2c, 0xaa};
    CHECK_EQ_INT(sfmt_confluent_frame(slice_of(avro, sizeof avro), false, &id, idx, &n, &pl, &err), 0);
    CHECK(id == 300 && n == 0 && pl.len == 1 && pl.ptr[0] == 0xaa);
    const uint8_t p0[] = {0, 0, 0, 0, 7, 0x00, 0x08, 0x01};
    CHECK_EQ_INT(sfmt_confluent_frame(slice_of(p0, sizeof p0), true, &id, idx, &n, &pl, &err), 0);
    CHECK(id == 7 && n == 1 && idx[0] == 0 && pl.len == 2);
    const uint8_t p2[] = {0, 0, 0, 0, 7, 0x04, 0x02, 0x00, 0x08};
    CHECK_EQ_INT(sfmt_confluent_frame(slice_of(p2, sizeof p2), true, &id, idx, &n, &pl, &err), 0);
    CHECK(n == 2 && idx[0] == 1 && idx[1] == 0 && pl.len == 1);
    const uint8_t neg[] = {0, 0, 0, 0, 7, 0x01};
    CHECK_EQ_INT(sfmt_confluent_frame(slice_of(neg, sizeof neg), true, &id, idx, &n, &pl, &err),
                 ERR_CORRUPT);
    const uint8_t v1[] = {1, 0, 0, 0, 7, 0};
    CHECK_EQ_INT(sfmt_confluent_frame(slice_of(v1, sizeof v1), false, &id, idx, &n, &pl, &err),
                 ERR_CORRUPT);
    CHECK(err && strstr(err, "0x01"));
    const uint8_t shortrec[] = {0, 0, 0};
    CHECK_EQ_INT(sfmt_confluent_frame(slice_of(shortrec, 3), false, &id, idx, &n, &pl, &err),
                 ERR_CORRUPT);
    CHECK_EQ_INT(sfmt_confluent_frame(SLICE_LIT("{\"a\":1}"), false, &id, idx, &n, &pl, &err),
                 ERR_CORRUPT);
}

TEST(schema_confluent_avro_records)
{
    struct schema_registry *r = schema_registry_new(NULL);
    REQUIRE(r);
    const char *text = "{\"type\":\"record\",\"name\":\"U\",\"fields\":[{\"name\":\"id\",\"type\":"
                       "\"long\"},{\"name\":\"name\",\"type\":\"string\"}]}";
    struct schema_desc d = {SCHEMA_AVRO, 0, slice_cstr(text), {NULL, 0}, NULL, 0};
    struct sbuf canon, out;
    sbuf_init(&canon, 0);
    sbuf_init(&out, 0);
    struct serr e;
    struct schema_result res;
    REQUIRE(schema_registry_prepare(r, &d, &canon, &e) == 0);
    REQUIRE(schema_registry_apply_register(r, SLICE_LIT("u-value"), &d, &res) == 0);
    struct sfmt *f = NULL;
    REQUIRE(sfmt_confluent_new(schema_registry_sfmt_lookup, schema_registry_sfmt_release, r, &f) == 0);
    struct arena a;
    arena_init(&a, 1 << 20);
    const char *err = NULL;
    uint8_t rec[] = {0, 0, 0, 0, (uint8_t)res.id, 0x2a, 0x04, 'h', 'i'};
    for (int i = 0; i < 3; i++) { /* the second and third hit the cache */
        sbuf_reset(&out);
        CHECK_EQ_INT(f->ops->to_json(f, slice_of(rec, sizeof rec), &out, &a, &err), 0);
        CHECK(out.len == 21 && memcmp(out.data, "{\"id\":21,\"name\":\"hi\"}", 21) == 0);
    }
    uint8_t unknown[] = {0, 0, 0, 0, 99, 0x2a};
    CHECK_EQ_INT(f->ops->to_json(f, slice_of(unknown, sizeof unknown), &out, &a, &err), ERR_CORRUPT);
    CHECK(err && strstr(err, "99"));
    uint8_t bare[] = {0x2a, 0x04, 'h', 'i', 0};
    CHECK_EQ_INT(f->ops->to_json(f, slice_of(bare, sizeof bare), &out, &a, &err), ERR_CORRUPT);
    /* the format outlives a registry reset (it holds its parsed schema) */
    schema_registry_reset(r);
    sbuf_reset(&out);
    CHECK_EQ_INT(f->ops->to_json(f, slice_of(rec, sizeof rec), &out, &a, &err), 0);
    sfmt_free(f);
    arena_free(&a);
    sbuf_free(&canon);
    sbuf_free(&out);
    schema_registry_free(r);
}
