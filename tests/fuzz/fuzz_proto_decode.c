/* fuzz_proto_decode.c -- libFuzzer target for the Protobuf binary decoder (extract and to_json)
 * over fixed schemas: the fixture schema fx.proto (every scalar type, maps, oneof, nested,
 * well-known types), a recursive message and a message of every well-known type.
 * The first input byte picks the message; the rest is the record.
 *
 * Checks, for any input:
 *  1. extract returns 0, ERR_CORRUPT or ERR_NOMEM; SV_STR results are valid UTF-8.
 *  2. to_json returns 0 or an error; on error out->len is back to its value on entry; on success
 *     the output is one valid JSON object and extract succeeded too; if extract reported
 *     ERR_CORRUPT, to_json fails as well.
 */
#include "base/arena.h"
#include "base/assert.h"
#include "base/err.h"
#include "base/json.h"
#include "stream/fmt/proto.h"

#include "../fixtures/proto/fixtures.h"

#include <jansson.h>
#include <string.h>

static const char extra[] =
    "syntax = \"proto3\"; package z;\n"
    "import \"google/protobuf/struct.proto\"; import \"google/protobuf/duration.proto\";\n"
    "import \"google/protobuf/field_mask.proto\"; import \"google/protobuf/any.proto\";\n"
    "import \"google/protobuf/empty.proto\"; import \"google/protobuf/wrappers.proto\";\n"
    "import \"google/protobuf/timestamp.proto\";\n"
    "message R { R child = 1; int32 v = 2; repeated R kids = 3; map<string, R> named = 4; }\n"
    "message W { google.protobuf.Struct st = 1; google.protobuf.Duration du = 2;\n"
    "  google.protobuf.FieldMask fm = 3; google.protobuf.Any any = 4;\n"
    "  google.protobuf.Empty em = 5; google.protobuf.BytesValue bv = 6;\n"
    "  google.protobuf.ListValue lv = 7; google.protobuf.Value va = 8;\n"
    "  google.protobuf.Timestamp ts = 9; repeated google.protobuf.Any anys = 10; }\n";

static struct proto_schema *s1, *s2;
static struct sfmt *fmts[8];
static int nfmts;
static struct spath paths[12];
static int npaths;

static void add_path(const char *text)
{
    struct spath *p = &paths[npaths++];
    memset(p, 0, sizeof *p);
    const char *q = text;
    while (*q) {
        const char *st = q;
        while (*q && *q != '.' && *q != '[')
            q++;
        p->seg[p->nseg].name = st;
        p->seg[p->nseg].len = (uint32_t)(q - st);
        p->seg[p->nseg++].index = -1;
        if (*q == '[') {
            p->seg[p->nseg].name = NULL;
            p->seg[p->nseg++].index = q[1] - '0';
            q += 3;
        }
        if (*q == '.')
            q++;
    }
}

static void init(void)
{
    struct serr e;
    ASSERT(proto_schema_parse(fx_proto_text, strlen(fx_proto_text), NULL, NULL, &s1, &e) == 0);
    ASSERT(proto_schema_parse(extra, strlen(extra), NULL, NULL, &s2, &e) == 0);
    const char *m1[] = {"fx.Scalars", "fx.Order", "fx.Small"};
    for (int i = 0; i < 3; i++)
        ASSERT(sfmt_proto_new(s1, proto_message_by_name(s1, m1[i]), &fmts[nfmts++], NULL) == 0);
    ASSERT(sfmt_proto_new(s2, proto_message_by_name(s2, "z.R"), &fmts[nfmts++], NULL) == 0);
    ASSERT(sfmt_proto_new(s2, proto_message_by_name(s2, "z.W"), &fmts[nfmts++], NULL) == 0);
    const char *ps[] = {"id", "s", "labels.env", "items[1].sku", "nested.tags", "child.child.v",
                        "kids[0].named.x.v", "st", "ts", "items_by_id.5", "main", "color"};
    for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++)
        add_path(ps[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!s1)
        init();
    if (size < 1)
        return 0;
    struct sfmt *f = fmts[data[0] % nfmts];
    struct slice rec = slice_of(data + 1, size - 1);
    struct arena a;
    arena_init(&a, 16u << 20);
    struct sval out[12];
    const char *err;
    int rc = f->ops->extract(f, rec, paths, (size_t)npaths, out, &a, &err);
    ASSERT(rc == 0 || rc == ERR_CORRUPT || rc == ERR_NOMEM);
    if (rc == 0)
        for (int i = 0; i < npaths; i++)
            if (out[i].type == SV_STR)
                ASSERT(utf8_valid((const uint8_t *)out[i].p, out[i].len));
    struct sbuf o;
    sbuf_init(&o, 0);
    sbuf_append(&o, "[", 1);
    int rc2 = f->ops->to_json(f, rec, &o, &a, &err);
    if (rc2) {
        ASSERT(o.len == 1);
    } else {
        ASSERT(rc == 0);
        json_error_t je;
        json_t *j = json_loadb((const char *)o.data + 1, o.len - 1, JSON_ALLOW_NUL, &je);
        /* jansson refuses NUL in object keys even with JSON_ALLOW_NUL; such output is valid. */
        ASSERT((j && json_is_object(j)) ||
               (!j && memmem(o.data, o.len, "\\u0000", 6) != NULL));
        json_decref(j);
    }
    if (rc == ERR_CORRUPT)
        ASSERT(rc2 != 0);
    sbuf_free(&o);
    arena_free(&a);
    return 0;
}
