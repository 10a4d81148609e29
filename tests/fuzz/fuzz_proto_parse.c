/* fuzz_proto_parse.c -- libFuzzer target for the .proto parser and the FileDescriptorSet front end.
 *
 * Checks, for any input:
 *  1. proto_schema_parse returns 0, ERR_INVALID (with a "line:col" or "file:line:col" path and a
 *     message) or ERR_NOMEM, and sets *out exactly when it returns 0.
 *  2. A parsed schema is usable: message 0 exists, every top-level message and its nested ones
 *     are reachable by Confluent index and by full name, and a decoder for each renders a few
 *     fixed records (including the empty one) without crashing.
 *  3. proto_schema_from_fds on the same bytes returns 0 or ERR_INVALID/ERR_NOMEM.
 * Imports of "dep.proto" resolve to a small fixed file; anything else is not found.
 */
#include "base/arena.h"
#include "base/assert.h"
#include "base/err.h"
#include "stream/fmt/proto.h"

#include <string.h>

static int imp(void *ctx, const char *name, const char **text, size_t *len)
{
    (void)ctx;
    if (strcmp(name, "dep.proto") == 0) {
        *text = "syntax = \"proto3\"; package dep; message D { int32 a = 1; enum E { Z = 0; } E e = 2; }";
        *len = strlen(*text);
        return 0;
    }
    return ERR_NOT_FOUND;
}

static void exercise(const struct proto_schema *s, const struct proto_msg *m, struct arena *a)
{
    struct sfmt *f;
    ASSERT(sfmt_proto_new(s, m, &f, NULL) == 0);
    static const uint8_t recs[][12] = {
        {0},
        {0x08, 0x01, 0x12, 0x01, 'a', 0x1a, 0x00, 0x25, 1, 2, 3, 4},
        {0x0a, 0x02, 0x08, 0x01, 0x10, 0x96, 0x01, 0x22, 0x02, 0x0a, 0x00, 0x30},
    };
    static const size_t lens[] = {0, 12, 11};
    struct spath p = {.nseg = 1, .seg = {{.name = "a", .len = 1, .index = -1}}};
    for (size_t i = 0; i < 3; i++) {
        struct sval v;
        const char *err;
        int rc = f->ops->extract(f, slice_of(recs[i], lens[i]), &p, 1, &v, a, &err);
        ASSERT(rc == 0 || rc == ERR_CORRUPT || rc == ERR_NOMEM);
        struct sbuf out;
        sbuf_init(&out, 1 << 20);
        rc = f->ops->to_json(f, slice_of(recs[i], lens[i]), &out, a, &err);
        ASSERT(rc == 0 || rc == ERR_CORRUPT || rc == ERR_INVALID || rc == ERR_NOMEM);
        ASSERT(rc != 0 || out.len > 0);
        sbuf_free(&out);
        arena_reset(a);
    }
    sfmt_free(f);
}

static void walk(const struct proto_schema *s, int64_t *idx, size_t n, struct arena *a, int *budget)
{
    const struct proto_msg *m = proto_message_by_index(s, idx, n);
    if (!m)
        return;
    if ((*budget)-- > 0)
        exercise(s, m, a);
    if (n >= 8)
        return;
    for (int64_t i = 0; i < 64; i++) {
        idx[n] = i;
        if (!proto_message_by_index(s, idx, n + 1))
            break;
        walk(s, idx, n + 1, a, budget);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct proto_schema *s = (void *)1;
    struct serr e = {{0}, {0}};
    int rc = proto_schema_parse((const char *)data, size, imp, NULL, &s, &e);
    ASSERT(rc == 0 || rc == ERR_INVALID || rc == ERR_NOMEM);
    ASSERT((rc == 0) == (s != NULL));
    if (rc == ERR_INVALID)
        ASSERT(e.path[0] && e.msg[0]);
    if (rc == 0) {
        ASSERT(proto_message_by_index(s, NULL, 0) != NULL);
        struct arena a;
        arena_init(&a, 8u << 20);
        int64_t idx[9];
        int budget = 16;
        walk(s, idx, 0, &a, &budget);
        arena_free(&a);
        proto_schema_free(s);
    }
    struct proto_schema *f = NULL;
    rc = proto_schema_from_fds(slice_of(data, size), &f, &e);
    ASSERT(rc == 0 || rc == ERR_INVALID || rc == ERR_NOMEM);
    ASSERT((rc == 0) == (f != NULL));
    proto_schema_free(f);
    return 0;
}
