/* test_avro.c -- Avro schemas, canonical form, binary decoding with resolution, the Avro JSON
 * encoding, and corrupt input.
 *
 * Fixtures: tests/fixtures/avro/cases.json, written by tests/fixtures/avro/gen.py with Debian's
 * python3-avro (bytes from its DatumWriter, expected JSON from its DatumReader; the few places
 * where python3-avro departs from the spec are corrected by hand and marked "expected_by").
 * Run from the repository root.
 */
#include "harness.h"

#include "base/arena.h"
#include "base/b64.h"
#include "base/err.h"
#include "stream/fmt/avro.h"

#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define FIXTURES "tests/fixtures/avro/cases.json"

/* ---------------------------------------------------------------------------------------- */
/* Helpers                                                                                  */

/* "a.b[2].c" -> spath (no backtick quoting; test paths never need it). Names point into text. */
static struct spath mkpath(const char *text)
{
    struct spath p;
    memset(&p, 0, sizeof p);
    const char *s = text;
    while (*s && p.nseg < SPATH_SEGS_MAX) {
        if (*s == '.') {
            s++;
            continue;
        }
        struct spath_seg *g = &p.seg[p.nseg++];
        if (*s == '[') {
            g->name = NULL;
            g->index = (int32_t)strtol(s + 1, (char **)&s, 10);
            s++; /* ']' */
        } else {
            const char *e = s;
            while (*e && *e != '.' && *e != '[')
                e++;
            g->name = s;
            g->len = (uint32_t)(e - s);
            s = e;
        }
    }
    return p;
}

static struct avro_schema *schema_of(const char *text)
{
    struct avro_schema *s = NULL;
    struct serr e;
    memset(&e, 0, sizeof e);
    int rc = avro_schema_parse(text, strlen(text), &s, &e);
    if (rc)
        fprintf(stderr, "    schema error at '%s': %s\n", e.path, e.msg);
    return s;
}

static struct avro_schema *schema_of_json(json_t *j)
{
    char *t = json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT);
    struct avro_schema *s = schema_of(t);
    free(t);
    return s;
}

static size_t unhex(const char *h, uint8_t *out, size_t cap)
{
    size_t n = strlen(h) / 2;
    if (n > cap)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(h + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
    return n;
}

/* JSON equality where numbers compare by value (python3-avro returns a promoted int as int). */
static bool jeq(json_t *a, json_t *b)
{
    if (json_is_number(a) && json_is_number(b))
        return json_number_value(a) == json_number_value(b);
    if (json_typeof(a) != json_typeof(b))
        return false;
    if (json_is_object(a)) {
        if (json_object_size(a) != json_object_size(b))
            return false;
        const char *k;
        json_t *v;
        json_object_foreach(a, k, v)
        {
            json_t *w = json_object_get(b, k);
            if (!w || !jeq(v, w))
                return false;
        }
        return true;
    }
    if (json_is_array(a)) {
        if (json_array_size(a) != json_array_size(b))
            return false;
        for (size_t i = 0; i < json_array_size(a); i++)
            if (!jeq(json_array_get(a, i), json_array_get(b, i)))
                return false;
        return true;
    }
    return json_equal(a, b);
}

/* An extracted sval against the expected natural JSON of the same value. */
static bool sval_matches(const struct sval *v, json_t *want)
{
    switch (v->type) {
    case SV_NULL: return json_is_null(want);
    case SV_BOOL: return json_is_boolean(want) && json_is_true(want) == v->b;
    case SV_INT: return json_is_number(want) && json_number_value(want) == (double)v->i;
    case SV_DOUBLE:
        if (json_is_null(want))
            return !isfinite(v->d);
        return json_is_number(want) && json_number_value(want) == v->d;
    case SV_STR:
        return json_is_string(want) && !v->escaped && json_string_length(want) == v->len &&
               (v->len == 0 || memcmp(json_string_value(want), v->p, v->len) == 0);
    case SV_BYTES: {
        struct sbuf b;
        sbuf_init(&b, 0);
        b64_encode(&b, (const uint8_t *)v->p, v->len);
        bool ok = json_is_string(want) && json_string_length(want) == b.len &&
                  (b.len == 0 || memcmp(json_string_value(want), b.data, b.len) == 0);
        sbuf_free(&b);
        return ok;
    }
    case SV_JSON: {
        json_t *got = json_loadb(v->p, v->len, JSON_DECODE_ANY, NULL);
        bool ok = got && jeq(got, want);
        json_decref(got);
        return ok;
    }
    default: return false;
    }
}

static json_t *load_fixtures(void)
{
    json_error_t je;
    json_t *j = json_load_file(FIXTURES, JSON_ALLOW_NUL, &je);
    if (!j)
        fprintf(stderr, "    cannot load %s: %s (run from the repository root)\n", FIXTURES,
                je.text);
    return j;
}

static int to_json_of(const struct sfmt *f, const uint8_t *p, size_t n, json_t **out)
{
    struct sbuf b;
    struct arena a;
    sbuf_init(&b, 0);
    arena_init(&a, 1 << 20);
    const char *why = NULL;
    int rc = f->ops->to_json(f, slice_of(p, n), &b, &a, &why);
    *out = NULL;
    if (rc == 0) {
        json_error_t je;
        *out = json_loadb((const char *)b.data, b.len, 0, &je);
        if (!*out)
            fprintf(stderr, "    to_json produced invalid JSON: %.*s\n", (int)b.len, b.data);
    } else {
        CHECK_EQ_INT(b.len, 0); /* restored on error */
    }
    sbuf_free(&b);
    arena_free(&a);
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* Fixtures made by python3-avro                                                             */

TEST(avro_fixtures_decode)
{
    json_t *fx = load_fixtures();
    REQUIRE(fx);
    json_t *cases = json_object_get(fx, "cases");
    REQUIRE(json_array_size(cases) >= 8);
    size_t ci;
    json_t *c;
    int nrec = 0;
    json_array_foreach(cases, ci, c)
    {
        const char *name = json_string_value(json_object_get(c, "name"));
        struct avro_schema *w = schema_of_json(json_object_get(c, "writer"));
        json_t *jr = json_object_get(c, "reader");
        struct avro_schema *r = json_is_null(jr) ? NULL : schema_of_json(jr);
        CHECK(w && (json_is_null(jr) || r));
        struct sfmt *f = NULL;
        struct serr e;
        memset(&e, 0, sizeof e);
        int rc = w ? sfmt_avro_new(w, r, &f, &e) : -1;
        if (rc)
            fprintf(stderr, "    case %s: resolve: %s: %s\n", name, e.path, e.msg);
        CHECK_EQ_INT(rc, 0);
        if (rc == 0) {
            CHECK(strcmp(f->ops->name, "avro") == 0);
            size_t ri;
            json_t *rec;
            json_array_foreach(json_object_get(c, "records"), ri, rec)
            {
                static uint8_t buf[1 << 16];
                size_t n = unhex(json_string_value(json_object_get(rec, "hex")), buf, sizeof buf - 1);
                json_t *want = json_object_get(rec, "json");
                json_t *got = NULL;
                rc = to_json_of(f, buf, n, &got);
                bool ok = rc == 0 && got && jeq(got, want);
                if (!ok) {
                    char *ws = json_dumps(want, JSON_COMPACT | JSON_SORT_KEYS);
                    char *gs = got ? json_dumps(got, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
                    fprintf(stderr, "    case %s record %zu: rc %d\n     want %s\n     got  %s\n",
                            name, ri, rc, ws, gs ? gs : "-");
                    free(ws);
                    free(gs);
                }
                CHECK(ok);
                json_decref(got);

                /* extract every top-level field at once, in reverse order */
                size_t nf = json_object_size(want);
                struct spath *paths = calloc(nf + 1, sizeof *paths);
                struct sval *out = calloc(nf + 1, sizeof *out);
                const char **keys = calloc(nf + 1, sizeof *keys);
                const char *k;
                json_t *v;
                size_t i = nf;
                json_object_foreach(want, k, v)
                {
                    keys[--i] = k;
                }
                for (i = 0; i < nf; i++)
                    paths[i] = mkpath(keys[i]);
                paths[nf] = mkpath("no_such_field");
                struct arena a;
                arena_init(&a, 1 << 20);
                const char *why = NULL;
                rc = f->ops->extract(f, slice_of(buf, n), paths, nf + 1, out, &a, &why);
                CHECK_EQ_INT(rc, 0);
                for (i = 0; rc == 0 && i < nf; i++) {
                    if (!sval_matches(&out[i], json_object_get(want, keys[i]))) {
                        fprintf(stderr, "    case %s record %zu: extract %s: type %d\n", name, ri,
                                keys[i], out[i].type);
                        CHECK(false);
                    }
                }
                CHECK_EQ_INT(out[nf].type, SV_MISSING);

                /* every strict prefix is an error (Avro binary is prefix-free), never a crash */
                for (size_t cut = 0; cut < n; cut++) {
                    uint8_t *t = malloc(cut ? cut : 1);
                    if (cut)
                        memcpy(t, buf, cut);
                    arena_reset(&a);
                    int e1 = f->ops->extract(f, slice_of(t, cut), paths, nf, out, &a, &why);
                    json_t *g2 = NULL;
                    int e2 = to_json_of(f, t, cut, &g2);
                    CHECK(e1 == ERR_CORRUPT && e2 == ERR_CORRUPT);
                    json_decref(g2);
                    free(t);
                }
                /* one trailing byte is corrupt */
                buf[n] = 0;
                arena_reset(&a);
                CHECK_EQ_INT(f->ops->extract(f, slice_of(buf, n + 1), paths, nf, out, &a, &why),
                             ERR_CORRUPT);
                arena_free(&a);
                free(paths);
                free(out);
                free(keys);
                nrec++;
            }
        }
        sfmt_free(f);
        avro_schema_free(w);
        avro_schema_free(r);
    }
    CHECK(nrec >= 15);
    json_decref(fx);
}

TEST(avro_canonical_form)
{
    json_t *fx = load_fixtures();
    REQUIRE(fx);
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(fx, "canonical"), i, c)
    {
        struct avro_schema *s = schema_of_json(json_object_get(c, "schema"));
        CHECK(s);
        if (!s)
            continue;
        struct sbuf b;
        sbuf_init(&b, 0);
        avro_schema_canonical(s, &b);
        const char *want = json_string_value(json_object_get(c, "canonical"));
        bool ok = b.len == strlen(want) && memcmp(b.data, want, b.len) == 0;
        if (!ok)
            fprintf(stderr, "    canonical %zu:\n     want %s\n     got  %.*s\n", i, want,
                    (int)b.len, b.data);
        CHECK(ok);
        /* the canonical form parses to the same canonical form */
        struct avro_schema *s2 = NULL;
        struct serr e;
        CHECK_EQ_INT(avro_schema_parse((const char *)b.data, b.len, &s2, &e), 0);
        if (s2) {
            struct sbuf b2;
            sbuf_init(&b2, 0);
            avro_schema_canonical(s2, &b2);
            CHECK(b2.len == b.len && memcmp(b2.data, b.data, b.len) == 0);
            sbuf_free(&b2);
        }
        avro_schema_free(s2);
        sbuf_free(&b);
        avro_schema_free(s);
    }
    json_decref(fx);
}

/* ---------------------------------------------------------------------------------------- */
/* Schema errors                                                                             */

TEST(avro_schema_errors_have_paths)
{
    static const struct {
        const char *text, *path, *msg;
    } t[] = {
        {"{", "", "not JSON"},
        {"\"strin\"", "", "unknown type"},
        {"{\"type\":\"record\",\"fields\":[]}", "name", "name"},
        {"{\"type\":\"record\",\"name\":\"1x\",\"fields\":[]}", "name", "invalid name"},
        {"{\"type\":\"record\",\"name\":\"R\"}", "fields", "fields"},
        {"{\"type\":\"record\",\"name\":\"R\",\"fields\":[{\"name\":\"a\",\"type\":\"int\"},"
         "{\"name\":\"b\",\"type\":\"int\"},{\"name\":\"c\",\"type\":\"nope\"}]}",
         "fields[2].type", "unknown type"},
        {"{\"type\":\"record\",\"name\":\"R\",\"fields\":[{\"name\":\"a\",\"type\":\"int\"},"
         "{\"name\":\"a\",\"type\":\"int\"}]}",
         "fields[1].name", "duplicate"},
        {"{\"type\":\"record\",\"name\":\"R\",\"fields\":[{\"name\":\"a\",\"type\":\"int\","
         "\"default\":\"x\"}]}",
         "fields[0].default", "int"},
        {"{\"type\":\"record\",\"name\":\"R\",\"fields\":[{\"name\":\"a\",\"type\":"
         "[\"null\",\"int\"],\"default\":3}]}",
         "fields[0].default", "null"},
        {"{\"type\":\"record\",\"name\":\"R\",\"fields\":[{\"name\":\"a\",\"type\":"
         "{\"type\":\"int\"},\"default\":2147483648}]}",
         "fields[0].default", "int"},
        {"{\"type\":\"record\",\"name\":\"R\",\"fields\":[{\"name\":\"a\",\"type\":"
         "{\"type\":\"fixed\",\"name\":\"F\",\"size\":2},\"default\":\"abc\"}]}",
         "fields[0].default", "length"},
        {"{\"type\":\"record\",\"name\":\"R\",\"fields\":[{\"name\":\"a\",\"type\":"
         "{\"type\":\"record\",\"name\":\"S\",\"fields\":[{\"name\":\"x\",\"type\":\"int\"}]},"
         "\"default\":{}}]}",
         "fields[0].default", "missing field"},
        {"{\"type\":\"enum\",\"name\":\"E\",\"symbols\":[\"A\",\"B\",\"A\"]}", "symbols[2]",
         "duplicate"},
        {"{\"type\":\"enum\",\"name\":\"E\",\"symbols\":[\"A\",\"b-c\"]}", "symbols[1]", "symbol"},
        {"{\"type\":\"enum\",\"name\":\"E\",\"symbols\":[\"A\"],\"default\":\"Z\"}", "default",
         "not a symbol"},
        {"[\"int\",\"int\"]", "[1]", "two branches"},
        {"[\"null\",[\"int\"]]", "[1]", "union"},
        {"[]", "", "branches"},
        {"{\"type\":\"array\"}", "items", "items"},
        {"{\"type\":\"map\",\"values\":{\"type\":\"array\",\"items\":\"bogus\"}}", "values.items",
         "unknown type"},
        {"{\"type\":\"fixed\",\"name\":\"F\",\"size\":-1}", "size", "size"},
        {"{\"type\":\"record\",\"name\":\"R\",\"fields\":[{\"name\":\"a\",\"type\":"
         "{\"type\":\"fixed\",\"name\":\"F\",\"size\":1}},{\"name\":\"b\",\"type\":"
         "{\"type\":\"enum\",\"name\":\"F\",\"symbols\":[\"X\"]}}]}",
         "fields[1].type.name", "defined twice"},
        {"{\"type\":\"record\",\"name\":\"int\",\"fields\":[]}", "name", "primitive"},
        {"{\"type\":\"record\",\"name\":\"R\",\"fields\":[{\"name\":\"a\",\"type\":\"int\","
         "\"order\":\"up\"}]}",
         "fields[0].order", "order"},
        {"{\"type\":\"record\",\"name\":\"R\",\"fields\":[{\"name\":\"a\"}]}", "fields[0].type",
         "no type"},
        {"{\"type\":\"record\",\"name\":\"R\",\"fields\":[{\"name\":\"a\",\"type\":\"int\","
         "\"aliases\":[\"ok\",\"not ok\"]}]}",
         "fields[0].aliases", "alias 1"},
        {"{\"type\":\"record\",\"name\":\"R\",\"namespace\":\"a..b\",\"fields\":[]}", "namespace",
         "namespace"},
        {"{\"type\":\"record\",\"name\":\"R\",\"fields\":[{\"name\":\"a\",\"type\":"
         "{\"type\":\"map\",\"values\":\"int\"},\"default\":{\"k\":\"v\"}}]}",
         "fields[0].default", "int"},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        struct avro_schema *s = NULL;
        struct serr e;
        memset(&e, 0, sizeof e);
        int rc = avro_schema_parse(t[i].text, strlen(t[i].text), &s, &e);
        bool ok = rc == ERR_INVALID && !s && strcmp(e.path, t[i].path) == 0 &&
                  strstr(e.msg, t[i].msg) != NULL;
        if (!ok)
            fprintf(stderr, "    case %zu (%s): rc %d path '%s' msg '%s'\n", i, t[i].text, rc,
                    e.path, e.msg);
        CHECK(ok);
        avro_schema_free(s);
    }
    /* nesting limit */
    char deep[4096] = "";
    for (int i = 0; i < 80; i++)
        strcat(deep, "{\"type\":\"array\",\"items\":");
    strcat(deep, "\"int\"");
    for (int i = 0; i < 80; i++)
        strcat(deep, "}");
    struct avro_schema *s = NULL;
    struct serr e;
    CHECK_EQ_INT(avro_schema_parse(deep, strlen(deep), &s, &e), ERR_INVALID);
    CHECK(strstr(e.msg, "deeper") != NULL);
}

TEST(avro_schema_accepts)
{
    static const char *ok[] = {
        "\"int\"",
        "{\"type\":\"long\",\"logicalType\":\"timestamp-micros\"}",
        "{\"type\":\"int\",\"logicalType\":\"no-such-logical-type\"}", /* ignored, per spec */
        "{\"type\":\"bytes\",\"logicalType\":\"decimal\",\"precision\":0}", /* invalid: ignored */
        "{\"type\":\"error\",\"name\":\"Err\",\"fields\":[]}",
        "{\"type\":\"record\",\"name\":\"R\",\"fields\":[{\"name\":\"a\",\"type\":"
        "[\"string\",\"null\"],\"default\":\"x\"},{\"name\":\"b\",\"type\":\"float\","
        "\"default\":1},{\"name\":\"c\",\"type\":\"bytes\",\"default\":\"\\u0000\\u00ff\"},"
        "{\"name\":\"d\",\"type\":{\"type\":\"array\",\"items\":\"R\"},\"default\":[]},"
        "{\"name\":\"e\",\"type\":[\"null\",\"R\"],\"default\":null}]}",
        "{\"type\":\"record\",\"name\":\"a.b.R\",\"namespace\":\"ignored\",\"fields\":"
        "[{\"name\":\"x\",\"type\":{\"type\":\"enum\",\"name\":\"E\",\"symbols\":[]}},"
        "{\"name\":\"y\",\"type\":\"a.b.E\"},{\"name\":\"z\",\"type\":\"E\"}]}",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        struct avro_schema *s = schema_of(ok[i]);
        CHECK(s);
        avro_schema_free(s);
    }
    /* "error" stays "error" in the canonical form (as Java's SchemaNormalization writes it) */
    struct avro_schema *s = schema_of(ok[4]);
    REQUIRE(s);
    struct sbuf b;
    sbuf_init(&b, 0);
    avro_schema_canonical(s, &b);
    const char *want = "{\"name\":\"Err\",\"type\":\"error\",\"fields\":[]}";
    CHECK(b.len == strlen(want) && memcmp(b.data, want, b.len) == 0);
    sbuf_free(&b);
    avro_schema_free(s);
}

TEST(avro_schema_limits)
{
    /* 65536 symbols with a duplicate at the end: found without a quadratic scan */
    struct sbuf t;
    sbuf_init(&t, 0);
    sbuf_puts(&t, "{\"type\":\"enum\",\"name\":\"E\",\"symbols\":[");
    for (int i = 0; i < 65536; i++)
        sbuf_printf(&t, "%s\"S%d\"", i ? "," : "", i == 65535 ? 7 : i);
    sbuf_puts(&t, "]}");
    struct avro_schema *s = NULL;
    struct serr e;
    CHECK_EQ_INT(avro_schema_parse((const char *)t.data, t.len, &s, &e), ERR_INVALID);
    CHECK(strcmp(e.path, "symbols[65535]") == 0 && strstr(e.msg, "S7"));
    sbuf_reset(&t);
    sbuf_puts(&t, "{\"type\":\"enum\",\"name\":\"E\",\"symbols\":[");
    for (int i = 0; i < 65537; i++)
        sbuf_printf(&t, "%s\"S%d\"", i ? "," : "", i);
    sbuf_puts(&t, "]}");
    CHECK_EQ_INT(avro_schema_parse((const char *)t.data, t.len, &s, &e), ERR_INVALID);
    CHECK(strcmp(e.path, "symbols") == 0);
    /* a name component longer than 255 bytes */
    sbuf_reset(&t);
    sbuf_puts(&t, "{\"type\":\"fixed\",\"size\":1,\"name\":\"");
    for (int i = 0; i < 256; i++)
        sbuf_putc(&t, 'a');
    sbuf_puts(&t, "\"}");
    CHECK_EQ_INT(avro_schema_parse((const char *)t.data, t.len, &s, &e), ERR_INVALID);
    CHECK(strcmp(e.path, "name") == 0);
    sbuf_free(&t);
}

/* ---------------------------------------------------------------------------------------- */
/* Resolution                                                                                */

static int resolve(const char *w, const char *r, struct serr *e)
{
    struct avro_schema *ws = schema_of(w), *rs = schema_of(r);
    struct sfmt *f = NULL;
    int rc = ws && rs ? sfmt_avro_new(ws, rs, &f, e) : -999;
    sfmt_free(f);
    avro_schema_free(ws);
    avro_schema_free(rs);
    return rc;
}

TEST(avro_resolution_errors)
{
    struct serr e;
    memset(&e, 0, sizeof e);
    CHECK_EQ_INT(resolve("{\"type\":\"record\",\"name\":\"R\",\"fields\":[{\"name\":\"a\",\"type\":"
                         "\"string\"}]}",
                         "{\"type\":\"record\",\"name\":\"R\",\"fields\":[{\"name\":\"a\",\"type\":"
                         "\"int\"}]}",
                         &e),
                 ERR_INVALID);
    CHECK(strcmp(e.path, "fields[0].type") == 0 && strstr(e.msg, "string"));
    CHECK_EQ_INT(resolve("{\"type\":\"record\",\"name\":\"R\",\"fields\":[]}",
                         "{\"type\":\"record\",\"name\":\"R\",\"fields\":[{\"name\":\"a\",\"type\":"
                         "\"int\"}]}",
                         &e),
                 ERR_INVALID);
    CHECK(strcmp(e.path, "fields[0]") == 0 && strstr(e.msg, "no default"));
    CHECK_EQ_INT(resolve("{\"type\":\"record\",\"name\":\"R\",\"fields\":[]}",
                         "{\"type\":\"record\",\"name\":\"S\",\"fields\":[]}", &e),
                 ERR_INVALID);
    CHECK_EQ_INT(resolve("\"long\"", "\"int\"", &e), ERR_INVALID); /* no demotion */
    CHECK_EQ_INT(resolve("\"double\"", "[\"null\",\"float\"]", &e), ERR_INVALID);
    CHECK_EQ_INT(resolve("{\"type\":\"fixed\",\"name\":\"F\",\"size\":2}",
                         "{\"type\":\"fixed\",\"name\":\"F\",\"size\":3}", &e),
                 ERR_INVALID);
    CHECK_EQ_INT(resolve("[\"int\",\"string\"]", "\"long\"", &e), 0); /* string fails per record */
    CHECK_EQ_INT(resolve("[\"boolean\",\"string\"]", "\"long\"", &e), ERR_INVALID);
}

static int decode1(const char *w, const char *r, const uint8_t *p, size_t n, const char *path,
                   struct sval *v, struct arena *a)
{
    struct avro_schema *ws = schema_of(w), *rs = r ? schema_of(r) : NULL;
    struct sfmt *f = NULL;
    struct serr e;
    int rc = sfmt_avro_new(ws, rs, &f, &e);
    if (rc == 0) {
        struct spath sp = mkpath(path);
        const char *why;
        rc = f->ops->extract(f, slice_of(p, n), &sp, 1, v, a, &why);
        /* enum symbols point into the reader schema, freed below */
        if (rc == 0 && v->type == SV_STR)
            v->p = arena_strndup(a, v->p, v->len);
    }
    sfmt_free(f);
    avro_schema_free(ws);
    avro_schema_free(rs);
    return rc;
}

#define REC1(t) "{\"type\":\"record\",\"name\":\"R\",\"fields\":[{\"name\":\"a\",\"type\":" t "}]}"

TEST(avro_union_and_enum_at_read_time)
{
    struct arena a;
    arena_init(&a, 1 << 16);
    struct sval v;
    /* writer [int,string] read as long: branch 1 (string) fails only when it occurs */
    const uint8_t b0[] = {0x00, 0x0e}, b1[] = {0x02, 0x02, 'x'};
    CHECK_EQ_INT(decode1(REC1("[\"int\",\"string\"]"), REC1("\"long\""), b0, 2, "a", &v, &a), 0);
    CHECK(v.type == SV_INT && v.i == 7);
    CHECK_EQ_INT(decode1(REC1("[\"int\",\"string\"]"), REC1("\"long\""), b1, 3, "a", &v, &a),
                 ERR_INVALID);
    /* enum symbol unknown to a reader without default */
    const char *we = REC1("{\"type\":\"enum\",\"name\":\"E\",\"symbols\":[\"A\",\"B\"]}");
    const char *re = REC1("{\"type\":\"enum\",\"name\":\"E\",\"symbols\":[\"B\"]}");
    const uint8_t e0[] = {0x02}, e1[] = {0x00}, e2[] = {0x04};
    CHECK_EQ_INT(decode1(we, re, e0, 1, "a", &v, &a), 0);
    CHECK(v.type == SV_STR && v.len == 1 && v.p[0] == 'B');
    CHECK_EQ_INT(decode1(we, re, e1, 1, "a", &v, &a), ERR_INVALID);
    CHECK_EQ_INT(decode1(we, NULL, e2, 1, "a", &v, &a), ERR_CORRUPT); /* index out of range */
    /* reader union picks the exact branch before a promotion */
    const uint8_t i7[] = {0x0e};
    CHECK_EQ_INT(decode1(REC1("\"int\""), REC1("[\"null\",\"double\",\"int\"]"), i7, 1, "a", &v, &a), 0);
    CHECK(v.type == SV_INT && v.i == 7);
    CHECK_EQ_INT(decode1(REC1("\"int\""), REC1("[\"null\",\"double\"]"), i7, 1, "a", &v, &a), 0);
    CHECK(v.type == SV_DOUBLE && v.d == 7.0);
    /* join keys: Avro int 7 is SV_INT 7, as Protobuf int32 7 and JSON 7 are */
    CHECK_EQ_INT(decode1(REC1("\"int\""), NULL, i7, 1, "a", &v, &a), 0);
    CHECK(v.type == SV_INT && v.i == 7);
    /* a top-level non-record is validated, then ERR_INVALID */
    CHECK_EQ_INT(decode1("\"int\"", NULL, i7, 1, "a", &v, &a), ERR_INVALID);
    CHECK_EQ_INT(decode1("\"int\"", NULL, i7, 0, "a", &v, &a), ERR_CORRUPT);
    arena_free(&a);
}

/* ---------------------------------------------------------------------------------------- */
/* Paths                                                                                     */

TEST(avro_extract_paths)
{
    json_t *fx = load_fixtures();
    REQUIRE(fx);
    json_t *c0 = json_array_get(json_object_get(fx, "cases"), 0); /* all_types */
    REQUIRE(strcmp(json_string_value(json_object_get(c0, "name")), "all_types") == 0);
    struct avro_schema *w = schema_of_json(json_object_get(c0, "writer"));
    struct sfmt *f = NULL;
    struct serr e;
    REQUIRE(w && sfmt_avro_new(w, NULL, &f, &e) == 0);
    json_t *rec = json_array_get(json_object_get(c0, "records"), 2);
    static uint8_t buf[1 << 16];
    size_t n = unhex(json_string_value(json_object_get(rec, "hex")), buf, sizeof buf);
    static const char *const ps[] = {
        "rec.x",    "rec.tags[1]", "arr[0]",      "arr[139]",   "arr[140]",  "m.k69",
        "m.nope",   "u2.x",        "u2.tags[0]",  "arr2[1][0].tags[1]", "recs", "rec",
        "rec.x.y",  "s.x",         "arr.x",       "m[0]",       "arr2[0][0].x", "fx",
        "e",        "rec",         "u",           "d",
    };
    enum { NP = sizeof ps / sizeof ps[0] };
    struct spath paths[NP];
    struct sval out[NP];
    for (int i = 0; i < NP; i++)
        paths[i] = mkpath(ps[i]);
    struct arena a;
    arena_init(&a, 1 << 20);
    const char *why = NULL;
    REQUIRE(f->ops->extract(f, slice_of(buf, n), paths, NP, out, &a, &why) == 0);
    CHECK(out[0].type == SV_INT && out[0].i == 2);
    CHECK(out[1].type == SV_STR && out[1].len == 2 && memcmp(out[1].p, "t1", 2) == 0);
    CHECK(out[2].type == SV_INT && out[2].i == -70);
    CHECK(out[3].type == SV_INT && out[3].i == 69);
    CHECK(out[4].type == SV_MISSING);
    CHECK(out[5].type == SV_STR && out[5].len == 3 && memcmp(out[5].p, "v69", 3) == 0);
    CHECK(out[6].type == SV_MISSING);
    CHECK(out[7].type == SV_INT && out[7].i == -3);
    CHECK(out[8].type == SV_STR && out[8].len == 1 && out[8].p[0] == 'a');
    CHECK(out[9].type == SV_STR && out[9].len == 1 && out[9].p[0] == 'c');
    CHECK(out[10].type == SV_JSON && out[10].len == 2 && memcmp(out[10].p, "{}", 2) == 0);
    const char *rj = "{\"x\":2,\"tags\":[\"t0\",\"t1\"]}";
    CHECK(out[11].type == SV_JSON && out[11].len == strlen(rj) && memcmp(out[11].p, rj, out[11].len) == 0);
    for (int i = 12; i <= 15; i++)
        CHECK_EQ_INT(out[i].type, SV_MISSING);
    CHECK(out[16].type == SV_INT && out[16].i == 1);
    CHECK(out[17].type == SV_BYTES && out[17].len == 4 && memcmp(out[17].p, "\xff\xfe\xfd\xfc", 4) == 0);
    CHECK(out[18].type == SV_STR && out[18].len == 4 && memcmp(out[18].p, "BLUE", 4) == 0);
    CHECK(out[19].type == SV_JSON && out[19].len == out[11].len); /* same path twice */
    CHECK(out[20].type == SV_NULL);
    CHECK(out[21].type == SV_DOUBLE && out[21].d == -1e300);
    /* a tight scratch arena: ERR_NOMEM, not a crash */
    struct arena tiny;
    arena_init(&tiny, 16);
    CHECK_EQ_INT(f->ops->extract(f, slice_of(buf, n), paths, NP, out, &tiny, &why), ERR_NOMEM);
    arena_free(&tiny);
    arena_free(&a);
    sfmt_free(f);
    avro_schema_free(w);
    json_decref(fx);
}

TEST(avro_defaults_feed_paths)
{
    /* reader-only fields come from their defaults, also through nested paths */
    const char *w = REC1("\"int\"");
    const char *r =
        "{\"type\":\"record\",\"name\":\"R\",\"fields\":[{\"name\":\"a\",\"type\":\"long\"},"
        "{\"name\":\"addr\",\"type\":{\"type\":\"record\",\"name\":\"A\",\"fields\":["
        "{\"name\":\"city\",\"type\":\"string\"},{\"name\":\"zip\",\"type\":[\"null\",\"int\"],"
        "\"default\":null}]},\"default\":{\"city\":\"Rome\"}},"
        "{\"name\":\"u\",\"type\":[\"string\",\"null\"],\"default\":\"dflt\"}]}";
    struct arena a;
    arena_init(&a, 1 << 16);
    struct sval v;
    const uint8_t b[] = {0x54};
    CHECK_EQ_INT(decode1(w, r, b, 1, "a", &v, &a), 0);
    CHECK(v.type == SV_INT && v.i == 42);
    CHECK_EQ_INT(decode1(w, r, b, 1, "addr.city", &v, &a), 0);
    CHECK(v.type == SV_STR && v.len == 4 && memcmp(v.p, "Rome", 4) == 0);
    CHECK_EQ_INT(decode1(w, r, b, 1, "addr.zip", &v, &a), 0);
    CHECK(v.type == SV_NULL);
    CHECK_EQ_INT(decode1(w, r, b, 1, "u", &v, &a), 0);
    CHECK(v.type == SV_STR && v.len == 4);
    CHECK_EQ_INT(decode1(w, r, b, 1, "addr", &v, &a), 0);
    CHECK(v.type == SV_JSON && v.len == strlen("{\"city\":\"Rome\",\"zip\":null}"));
    arena_free(&a);
}

/* ---------------------------------------------------------------------------------------- */
/* Corrupt input                                                                             */

TEST(avro_corrupt_inputs)
{
    struct arena a;
    arena_init(&a, 1 << 16);
    struct sval v;
    static const struct {
        const char *schema;
        uint8_t bytes[16];
        size_t n;
    } t[] = {
        {REC1("\"string\""), {0x01}, 1},                                   /* negative length */
        {REC1("\"string\""), {0x0a, 'a'}, 2},                              /* length past end */
        {REC1("\"string\""), {0x02, 0xff}, 2},                             /* invalid UTF-8 */
        {REC1("\"long\""), {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}, 10},
        {REC1("\"long\""), {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, 11},
        {REC1("\"int\""), {0x80, 0x80, 0x80, 0x80, 0x10}, 5},             /* beyond 32 bits */
        {REC1("\"boolean\""), {0x02}, 1},
        {REC1("[\"null\",\"int\"]"), {0x04}, 1},                           /* union index 2 */
        {REC1("[\"null\",\"int\"]"), {0x01}, 1},                           /* union index -1 */
        {REC1("{\"type\":\"array\",\"items\":\"null\"}"), {0xfe, 0xff, 0xff, 0xff, 0x0f}, 5},
        {REC1("{\"type\":\"array\",\"items\":\"int\"}"), {0x03, 0x06, 0x02, 0x02, 0x00}, 5},
        {REC1("{\"type\":\"array\",\"items\":\"int\"}"), {0x81, 0x80, 0x80, 0x80, 0x80, 0x80,
                                                         0x80, 0x80, 0x80, 0x01}, 10},
        {REC1("{\"type\":\"map\",\"values\":\"int\"}"), {0x02, 0x03, 0x00, 0x00}, 4},
        {REC1("{\"type\":\"fixed\",\"name\":\"F\",\"size\":4}"), {1, 2, 3}, 3},
        {REC1("\"double\""), {1, 2, 3, 4, 5, 6, 7}, 7},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        int rc = decode1(t[i].schema, NULL, t[i].bytes, t[i].n, "a", &v, &a);
        if (rc != ERR_CORRUPT)
            fprintf(stderr, "    corrupt case %zu: rc %d\n", i, rc);
        CHECK_EQ_INT(rc, ERR_CORRUPT);
    }
    /* 2^31 null items: bounded by the item budget, answered at once */
    const uint8_t many[] = {0xfe, 0xff, 0xff, 0xff, 0x0f, 0x00};
    CHECK_EQ_INT(decode1(REC1("{\"type\":\"array\",\"items\":\"null\"}"), NULL, many, sizeof many,
                         "a", &v, &a),
                 ERR_CORRUPT);
    /* 1000 null items are fine (zero-byte items within the allowance) */
    const uint8_t ok[] = {0xd0, 0x0f, 0x00};
    CHECK_EQ_INT(decode1(REC1("{\"type\":\"array\",\"items\":\"null\"}"), NULL, ok, sizeof ok,
                         "a[999]", &v, &a),
                 0);
    CHECK(v.type == SV_NULL);
    /* a block with a byte size that matches */
    const uint8_t sized[] = {0x01, 0x02, 0x04, 0x00};
    CHECK_EQ_INT(decode1(REC1("{\"type\":\"array\",\"items\":\"int\"}"), NULL, sized,
                         sizeof sized, "a[0]", &v, &a),
                 0);
    CHECK(v.type == SV_INT && v.i == 2);
    /* recursion deeper than the limit */
    const char *list = "{\"type\":\"record\",\"name\":\"L\",\"fields\":[{\"name\":\"next\","
                       "\"type\":[\"null\",\"L\"]}]}";
    uint8_t deep[200];
    memset(deep, 0x02, sizeof deep);
    deep[sizeof deep - 1] = 0x00;
    CHECK_EQ_INT(decode1(list, NULL, deep, sizeof deep, "next", &v, &a), ERR_CORRUPT);
    CHECK_EQ_INT(decode1(list, NULL, deep + 150, 50, "next", &v, &a), 0);
    arena_free(&a);
}

TEST(avro_nan_renders_null)
{
    struct avro_schema *s = schema_of(REC1("\"double\""));
    struct sfmt *f = NULL;
    struct serr e;
    REQUIRE(s && sfmt_avro_new(s, NULL, &f, &e) == 0);
    double d = NAN;
    uint8_t b[8];
    memcpy(b, &d, 8);
    json_t *got = NULL;
    CHECK_EQ_INT(to_json_of(f, b, 8, &got), 0);
    CHECK(got && json_is_null(json_object_get(got, "a")));
    json_decref(got);
    d = 2.0;
    memcpy(b, &d, 8);
    struct sbuf o;
    sbuf_init(&o, 0);
    struct arena a;
    arena_init(&a, 0);
    CHECK_EQ_INT(f->ops->to_json(f, slice_of(b, 8), &o, &a, NULL), 0);
    CHECK(o.len == 9 && memcmp(o.data, "{\"a\":2.0}", 9) == 0);
    sbuf_free(&o);
    arena_free(&a);
    sfmt_free(f);
    avro_schema_free(s);
}

/* ---------------------------------------------------------------------------------------- */
/* Avro JSON encoding through a reader schema                                                */

static const char *TXN =
    "{\"type\":\"record\",\"name\":\"Txn\",\"namespace\":\"pay\",\"fields\":["
    "{\"name\":\"txn_id\",\"type\":\"string\",\"aliases\":[\"tid\"]},"
    "{\"name\":\"amount\",\"type\":[\"null\",\"double\"],\"default\":null},"
    "{\"name\":\"cur\",\"type\":\"string\",\"default\":\"EUR\"},"
    "{\"name\":\"meta\",\"type\":[\"null\",{\"type\":\"record\",\"name\":\"Meta\",\"fields\":["
    "{\"name\":\"src\",\"type\":\"string\"}]}],\"default\":null},"
    "{\"name\":\"raw\",\"type\":\"bytes\",\"default\":\"\"},"
    "{\"name\":\"kind\",\"type\":{\"type\":\"enum\",\"name\":\"K\",\"symbols\":[\"A\",\"Z\"],"
    "\"default\":\"Z\"},\"default\":\"A\"}]}";

static int ajson(struct sfmt *f, const char *rec, const char *path, struct sval *v,
                 struct arena *a, char *json_out, size_t cap)
{
    const char *why = NULL;
    struct spath sp = mkpath(path);
    int rc = f->ops->extract(f, slice_of(rec, strlen(rec)), &sp, 1, v, a, &why);
    if (json_out) {
        struct sbuf b;
        sbuf_init(&b, 0);
        int rc2 = f->ops->to_json(f, slice_of(rec, strlen(rec)), &b, a, &why);
        snprintf(json_out, cap, "%.*s", rc2 ? 0 : (int)b.len, b.data ? (char *)b.data : "");
        sbuf_free(&b);
        if (rc2 != rc)
            return -12345;
    }
    return rc;
}

TEST(avro_json_encoding)
{
    struct avro_schema *s = schema_of(TXN);
    REQUIRE(s);
    json_t *al = json_loads("{\"txn_id\":[\"txnId\",\"transactionId\"],\"src\":\"source\"}", 0, NULL);
    struct sfmt *f = NULL;
    struct serr e;
    REQUIRE(sfmt_avro_json_new(s, true, al, &f, &e) == 0);
    json_decref(al); /* borrowed for the call only */
    CHECK(strcmp(f->ops->name, "avro-json") == 0);
    struct arena a;
    arena_init(&a, 1 << 16);
    struct sval v;
    char js[512];
    CHECK_EQ_INT(ajson(f, "{\"txnId\":\"t1\",\"amount\":{\"double\":9.5},\"meta\":{\"pay.Meta\":"
                          "{\"source\":\"web\"}},\"raw\":\"\\u00ff\\u0000\",\"kind\":\"Q\"}",
                       "meta.src", &v, &a, js, sizeof js),
                 0);
    CHECK(v.type == SV_STR && v.len == 3 && memcmp(v.p, "web", 3) == 0);
    CHECK(strcmp(js, "{\"txn_id\":\"t1\",\"amount\":9.5,\"cur\":\"EUR\",\"meta\":{\"src\":\"web\"},"
                     "\"raw\":\"/wA=\",\"kind\":\"Z\"}") == 0);
    if (strcmp(js, "{\"txn_id\":\"t1\",\"amount\":9.5,\"cur\":\"EUR\",\"meta\":{\"src\":\"web\"},"
                   "\"raw\":\"/wA=\",\"kind\":\"Z\"}"))
        fprintf(stderr, "    got %s\n", js);
    /* schema alias, defaults, bare union value accepted */
    CHECK_EQ_INT(ajson(f, "{\"tid\":\"t2\",\"amount\":3}", "txn_id", &v, &a, js, sizeof js), 0);
    CHECK(v.type == SV_STR && v.len == 2 && memcmp(v.p, "t2", 2) == 0);
    CHECK(strcmp(js, "{\"txn_id\":\"t2\",\"amount\":3.0,\"cur\":\"EUR\",\"meta\":null,\"raw\":\"\","
                     "\"kind\":\"A\"}") == 0);
    CHECK_EQ_INT(ajson(f, "{\"transactionId\":\"t3\"}", "amount", &v, &a, NULL, 0), 0);
    CHECK(v.type == SV_NULL);
    CHECK_EQ_INT(ajson(f, "{\"transactionId\":\"t3\"}", "cur", &v, &a, NULL, 0), 0);
    CHECK(v.type == SV_STR && v.len == 3);
    /* errors */
    CHECK_EQ_INT(ajson(f, "{\"txn_id\":", "cur", &v, &a, js, sizeof js), ERR_CORRUPT);
    CHECK_EQ_INT(ajson(f, "[1,2]", "cur", &v, &a, js, sizeof js), ERR_INVALID);
    CHECK_EQ_INT(ajson(f, "{\"cur\":\"x\"}", "cur", &v, &a, js, sizeof js), ERR_CORRUPT);
    CHECK_EQ_INT(ajson(f, "{\"txn_id\":5}", "cur", &v, &a, js, sizeof js), ERR_CORRUPT);
    CHECK_EQ_INT(ajson(f, "{\"txn_id\":\"x\",\"amount\":{\"string\":\"1\"}}", "cur", &v, &a, js,
                       sizeof js),
                 ERR_CORRUPT);
    sfmt_free(f);

    /* apply_defaults off: a missing field is an error */
    REQUIRE(sfmt_avro_json_new(s, false, NULL, &f, &e) == 0);
    CHECK_EQ_INT(ajson(f, "{\"txn_id\":\"t\"}", "txn_id", &v, &a, NULL, 0), ERR_CORRUPT);
    CHECK_EQ_INT(ajson(f, "{\"txn_id\":\"t\",\"amount\":null,\"cur\":\"X\",\"meta\":null,"
                          "\"raw\":\"\",\"kind\":\"A\"}",
                       "cur", &v, &a, NULL, 0),
                 0);
    sfmt_free(f);
    /* bad field_aliases */
    json_t *bad = json_loads("{\"txn_id\":[1]}", 0, NULL);
    CHECK_EQ_INT(sfmt_avro_json_new(s, true, bad, &f, &e), ERR_INVALID);
    CHECK(strcmp(e.path, "field_aliases.txn_id") == 0);
    json_decref(bad);
    arena_free(&a);
    avro_schema_free(s);
}

/* ---------------------------------------------------------------------------------------- */
/* Allocation failure                                                                        */

#include "base/alloc.h"

TEST(avro_alloc_failures)
{
    json_t *fx = load_fixtures();
    REQUIRE(fx);
    json_t *c = json_array_get(json_object_get(fx, "cases"), 2); /* evolution v1 -> v2 */
    char *wt = json_dumps(json_object_get(c, "writer"), JSON_COMPACT);
    char *rt = json_dumps(json_object_get(c, "reader"), JSON_COMPACT);
    int ok_at = -1;
    for (int n = 1; n < 400 && ok_at < 0; n++) {
        struct avro_schema *w = NULL, *r = NULL;
        struct sfmt *f = NULL, *fj = NULL;
        struct serr e;
        alloc_fail_after(n);
        int rc = avro_schema_parse(wt, strlen(wt), &w, &e);
        if (rc == 0)
            rc = avro_schema_parse(rt, strlen(rt), &r, &e);
        if (rc == 0)
            rc = sfmt_avro_new(w, r, &f, &e);
        if (rc == 0)
            rc = sfmt_avro_json_new(r, true, NULL, &fj, &e);
        alloc_fail_after(0);
        if (rc != 0 && rc != ERR_NOMEM)
            fprintf(stderr, "    alloc fail at %d: rc %d %s: %s\n", n, rc, e.path, e.msg);
        CHECK(rc == 0 || rc == ERR_NOMEM);
        if (rc == 0)
            ok_at = n;
        sfmt_free(f);
        sfmt_free(fj);
        avro_schema_free(w);
        avro_schema_free(r);
    }
    CHECK(ok_at > 1);
    free(wt);
    free(rt);
    json_decref(fx);
}
