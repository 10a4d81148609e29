/* proto_schema.c -- the schema model shared by both front ends: allocation, the symbol table,
 * linking (name resolution per protobuf scoping), the built-in well-known .proto files, and the
 * lookups of proto.h (by Confluent message index, by name).
 *
 * Invariants (see proto_int.h for the model's own):
 *  1. Nothing here does I/O; the well-known types are embedded text.
 *  2. Name resolution follows protoc: a leading dot means fully qualified; otherwise the first
 *     component is searched from the innermost scope outwards, and once it is found as a message
 *     or package the rest must resolve inside it (no further outward search). A package found for
 *     a one-component name is skipped (it is not a type).
 *  3. Every allocation is bounded by PROTO_SCHEMA_MEM_MAX (the arena cap): ERR_NOMEM beyond it.
 */
#include "stream/fmt/proto_int.h"

#include "base/alloc.h"
#include "base/err.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int proto_schema_alloc(struct proto_schema **out)
{
    struct proto_schema *s = xcalloc(1, sizeof *s);
    if (!s)
        return ERR_NOMEM;
    arena_init(&s->mem, PROTO_SCHEMA_MEM_MAX);
    hmap_init(&s->syms);
    *out = s;
    return 0;
}

void proto_schema_free(struct proto_schema *s)
{
    if (!s)
        return;
    hmap_free(&s->syms);
    arena_free(&s->mem);
    xfree(s);
}

int proto_grow(struct proto_schema *s, void **arr, uint32_t *cap, uint32_t n, size_t el)
{
    if (n < *cap)
        return 0;
    uint32_t ncap = *cap ? *cap * 2 : 4;
    if (ncap <= n)
        ncap = n + 1;
    void *p = arena_alloc(&s->mem, (size_t)ncap * el);
    if (!p)
        return ERR_NOMEM;
    if (*arr && n)
        memcpy(p, *arr, (size_t)n * el);
    *arr = p;
    *cap = ncap;
    return 0;
}

char *proto_strdup(struct proto_schema *s, const char *p, size_t n)
{
    return arena_strndup(&s->mem, p, n);
}

int proto_sym_add(struct proto_schema *s, const char *full, uint8_t kind, void *p)
{
    struct slice k = slice_cstr(full);
    struct psym *old = hmap_get(&s->syms, k);
    if (old) {
        if (old->kind == PSYM_PACKAGE && kind == PSYM_PACKAGE)
            return 0;
        return ERR_CONFLICT;
    }
    struct psym *sym = arena_alloc(&s->mem, sizeof *sym);
    if (!sym)
        return ERR_NOMEM;
    sym->kind = kind;
    sym->p = p;
    void *prev;
    return hmap_put(&s->syms, k, sym, &prev) ? ERR_NOMEM : 0;
}

const struct psym *proto_sym_get(const struct proto_schema *s, const char *full, size_t n)
{
    return hmap_get(&s->syms, slice_of(full, n));
}

const char *proto_json_name(struct proto_schema *s, const char *name, size_t n)
{
    char *o = arena_alloc(&s->mem, n + 1);
    if (!o)
        return NULL;
    size_t k = 0;
    bool up = false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (c == '_') {
            up = true;
            continue;
        }
        if (up && c >= 'a' && c <= 'z')
            c = (char)(c - 'a' + 'A');
        up = false;
        o[k++] = c;
    }
    o[k] = 0;
    return o;
}

/* ---- linking ---------------------------------------------------------------------------------- */

#define NAME_BUF 2048

static bool is_type(const struct psym *y) { return y && (y->kind == PSYM_MESSAGE || y->kind == PSYM_ENUM); }

static const struct psym *resolve(const struct proto_schema *s, const char *scope, const char *name)
{
    size_t nlen = strlen(name);
    if (name[0] == '.') {
        const struct psym *y = proto_sym_get(s, name + 1, nlen - 1);
        return is_type(y) ? y : NULL;
    }
    size_t first = strcspn(name, ".");
    size_t sl = strlen(scope);
    char buf[NAME_BUF];
    if (sl + nlen + 2 > sizeof buf)
        return NULL;
    for (;;) {
        size_t k = 0;
        if (sl) {
            memcpy(buf, scope, sl);
            buf[sl] = '.';
            k = sl + 1;
        }
        memcpy(buf + k, name, first);
        const struct psym *y = proto_sym_get(s, buf, k + first);
        if (y) {
            if (first == nlen) {
                if (is_type(y))
                    return y;
            } else {
                memcpy(buf + k, name, nlen);
                const struct psym *z = proto_sym_get(s, buf, k + nlen);
                return is_type(z) ? z : NULL;
            }
        }
        if (sl == 0)
            return NULL;
        while (sl > 0 && scope[sl - 1] != '.')
            sl--;
        if (sl > 0)
            sl--;
    }
}

static int link_err(struct serr *e, const struct proto_field *f, const char *fmt, const char *a,
                    const char *b)
{
    char where[160];
    if (f->file && f->file[0])
        snprintf(where, sizeof where, "%s:%u:%u", f->file, f->line, f->col);
    else
        snprintf(where, sizeof where, "%u:%u", f->line, f->col);
    serr_set(e, where, fmt, a, b);
    return ERR_INVALID;
}

static const struct { const char *name; uint8_t wkt; } wkts[] = {
    {"google.protobuf.Timestamp", WKT_TIMESTAMP}, {"google.protobuf.Duration", WKT_DURATION},
    {"google.protobuf.Empty", WKT_EMPTY},         {"google.protobuf.Struct", WKT_STRUCT},
    {"google.protobuf.Value", WKT_VALUE},         {"google.protobuf.ListValue", WKT_LISTVALUE},
    {"google.protobuf.FieldMask", WKT_FIELDMASK}, {"google.protobuf.Any", WKT_ANY},
    {"google.protobuf.DoubleValue", WKT_WRAPPER}, {"google.protobuf.FloatValue", WKT_WRAPPER},
    {"google.protobuf.Int64Value", WKT_WRAPPER},  {"google.protobuf.UInt64Value", WKT_WRAPPER},
    {"google.protobuf.Int32Value", WKT_WRAPPER},  {"google.protobuf.UInt32Value", WKT_WRAPPER},
    {"google.protobuf.BoolValue", WKT_WRAPPER},   {"google.protobuf.StringValue", WKT_WRAPPER},
    {"google.protobuf.BytesValue", WKT_WRAPPER},
};

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int link_msg(struct proto_schema *s, struct proto_msg *m, struct serr *e)
{
    int32_t maxnum = 0;
    for (uint32_t i = 0; i < m->nfields; i++) {
        struct proto_field *f = &m->fields[i];
        if (f->type_name && !f->msg && !f->en) {
            const struct psym *y = resolve(s, m->full_name, f->type_name);
            if (!y)
                return link_err(e, f, "unknown type \"%s\" (field \"%s\")", f->type_name, f->name);
            if (y->kind == PSYM_MESSAGE) {
                if (f->type && f->type != PT_MESSAGE)
                    return link_err(e, f, "type \"%s\" of field \"%s\" is a message", f->type_name,
                                    f->name);
                f->type = PT_MESSAGE;
                f->msg = y->p;
            } else {
                if (f->type && f->type != PT_ENUM)
                    return link_err(e, f, "type \"%s\" of field \"%s\" is an enum", f->type_name,
                                    f->name);
                f->type = PT_ENUM;
                f->en = y->p;
            }
        }
        if (f->type == PT_MESSAGE && !f->msg)
            return link_err(e, f, "field \"%s\" has no message type%s", f->name, "");
        if (f->type == PT_ENUM && !f->en)
            return link_err(e, f, "field \"%s\" has no enum type%s", f->name, "");
        if (f->type == PT_GROUP)
            return link_err(e, f, "field \"%s\": groups are not supported%s", f->name, "");
        if (f->type < PT_DOUBLE || f->type > PT_SINT64)
            return link_err(e, f, "field \"%s\" has an invalid type%s", f->name, "");
        if (f->type == PT_ENUM && f->en->nvalues == 0)
            return link_err(e, f, "enum \"%s\" of field \"%s\" has no values", f->en->full_name,
                            f->name);
        if (f->label == PL_REPEATED && f->type == PT_MESSAGE && f->msg->map_entry)
            f->is_map = true;
        if (f->is_map) {
            const struct proto_msg *em = f->msg;
            if (f->label != PL_REPEATED || !em->map_entry || em->nfields != 2 ||
                em->fields[0].number != 1 || em->fields[1].number != 2)
                return link_err(e, f, "map field \"%s\" has a malformed entry type%s", f->name, "");
        }
        if (f->type == PT_MESSAGE || f->label == PL_REPEATED)
            f->presence = f->label != PL_REPEATED;
        if (!f->json_name) {
            f->json_name = proto_json_name(s, f->name, f->name_len);
            if (!f->json_name)
                return ERR_NOMEM;
        }
        f->json_name_len = (uint32_t)strlen(f->json_name);
        if (f->number < 1 || f->number > PROTO_FIELD_NUMBER_MAX)
            return link_err(e, f, "field \"%s\" has an invalid number%s", f->name, "");
        if (f->number > maxnum)
            maxnum = f->number;
    }
    /* Number tables. */
    uint64_t *tmp = arena_alloc(&s->mem, (size_t)(m->nfields ? m->nfields : 1) * sizeof *tmp);
    m->by_number = arena_alloc(&s->mem, (size_t)(m->nfields ? m->nfields : 1) * sizeof(uint32_t));
    if (!tmp || !m->by_number)
        return ERR_NOMEM;
    for (uint32_t i = 0; i < m->nfields; i++)
        tmp[i] = (uint64_t)m->fields[i].number << 32 | i;
    qsort(tmp, m->nfields, sizeof *tmp, cmp_u64);
    for (uint32_t i = 0; i < m->nfields; i++) {
        m->by_number[i] = (uint32_t)tmp[i];
        if (i && tmp[i] >> 32 == tmp[i - 1] >> 32) {
            const struct proto_field *f = &m->fields[(uint32_t)tmp[i]];
            char num[16];
            snprintf(num, sizeof num, "%d", f->number);
            return link_err(e, f, "duplicate field number %s in message \"%s\"", num, m->full_name);
        }
    }
    m->by_num_len = (uint32_t)(maxnum < PROTO_BYNUM_DENSE_MAX ? maxnum : PROTO_BYNUM_DENSE_MAX) + 1;
    m->by_num = arena_alloc(&s->mem, m->by_num_len * sizeof(int32_t));
    if (!m->by_num)
        return ERR_NOMEM;
    for (uint32_t k = 0; k < m->by_num_len; k++)
        m->by_num[k] = -1;
    for (uint32_t i = 0; i < m->nfields; i++)
        if ((uint32_t)m->fields[i].number < m->by_num_len)
            m->by_num[m->fields[i].number] = (int32_t)i;
    for (size_t k = 0; k < sizeof wkts / sizeof wkts[0]; k++)
        if (strcmp(m->full_name, wkts[k].name) == 0)
            m->wkt = wkts[k].wkt;
    return 0;
}

int proto_link(struct proto_schema *s, struct serr *e)
{
    for (uint32_t i = 0; i < s->nenums; i++)
        if (strcmp(s->enums[i]->full_name, "google.protobuf.NullValue") == 0)
            s->enums[i]->null_value = true;
    for (uint32_t i = 0; i < s->nall; i++) {
        int rc = link_msg(s, s->all[i], e);
        if (rc)
            return rc;
    }
    /* Well-known types must have the shape the JSON mapping relies on. */
    for (uint32_t i = 0; i < s->nall; i++) {
        struct proto_msg *m = s->all[i];
        if (!m->wkt)
            continue;
        bool ok = true;
        if (m->wkt == WKT_WRAPPER)
            ok = m->nfields == 1 && m->fields[0].number == 1 && m->fields[0].label != PL_REPEATED &&
                 m->fields[0].type != PT_MESSAGE && m->fields[0].type != PT_ENUM;
        else if (m->wkt == WKT_TIMESTAMP || m->wkt == WKT_DURATION)
            ok = m->nfields == 2 && proto_field_by_num(m, 1) && proto_field_by_num(m, 2) &&
                 proto_field_by_num(m, 1)->type == PT_INT64 &&
                 proto_field_by_num(m, 2)->type == PT_INT32;
        else if (m->wkt == WKT_ANY)
            ok = proto_field_by_num(m, 1) && proto_field_by_num(m, 1)->type == PT_STRING &&
                 proto_field_by_num(m, 2) && proto_field_by_num(m, 2)->type == PT_BYTES;
        else if (m->wkt == WKT_FIELDMASK)
            ok = proto_field_by_num(m, 1) && proto_field_by_num(m, 1)->type == PT_STRING;
        else if (m->wkt == WKT_STRUCT)
            ok = proto_field_by_num(m, 1) && proto_field_by_num(m, 1)->is_map &&
                 proto_field_by_num(m, 1)->msg->fields[1].msg &&
                 proto_field_by_num(m, 1)->msg->fields[1].msg->wkt == WKT_VALUE;
        else if (m->wkt == WKT_LISTVALUE)
            ok = proto_field_by_num(m, 1) && proto_field_by_num(m, 1)->msg &&
                 proto_field_by_num(m, 1)->msg->wkt == WKT_VALUE;
        else if (m->wkt == WKT_VALUE) {
            static const uint8_t t[7] = {0, PT_ENUM, PT_DOUBLE, PT_STRING, PT_BOOL, PT_MESSAGE,
                                         PT_MESSAGE};
            for (int k = 1; k <= 6 && ok; k++)
                ok = proto_field_by_num(m, (uint64_t)k) &&
                     proto_field_by_num(m, (uint64_t)k)->type == t[k];
        }
        if (!ok)
            m->wkt = WKT_NONE; /* not the real one: treat as an ordinary message */
    }
    return 0;
}

/* ---- lookups ---------------------------------------------------------------------------------- */

const struct proto_field *proto_field_by_name(const struct proto_msg *m, const char *name, size_t n)
{
    for (uint32_t i = 0; i < m->nfields; i++) {
        const struct proto_field *f = &m->fields[i];
        if (f->name_len == n && memcmp(f->name, name, n) == 0)
            return f;
    }
    for (uint32_t i = 0; i < m->nfields; i++) {
        const struct proto_field *f = &m->fields[i];
        if (f->json_name_len == n && memcmp(f->json_name, name, n) == 0)
            return f;
    }
    return NULL;
}

const char *proto_enum_name(const struct proto_enum *en, int32_t number)
{
    for (uint32_t i = 0; i < en->nvalues; i++)
        if (en->values[i].number == number)
            return en->values[i].name;
    return NULL;
}

bool proto_enum_number(const struct proto_enum *en, const char *name, size_t n, int32_t *out)
{
    for (uint32_t i = 0; i < en->nvalues; i++)
        if (strlen(en->values[i].name) == n && memcmp(en->values[i].name, name, n) == 0) {
            *out = en->values[i].number;
            return true;
        }
    return false;
}

const struct proto_msg *proto_message_by_index(const struct proto_schema *s, const int64_t *idx,
                                               size_t n)
{
    if (!s || s->nfiles == 0)
        return NULL;
    const struct proto_file *f = s->files[s->nfiles - 1];
    if (n == 0)
        return f->nmsgs ? f->msgs[0] : NULL;
    if (idx[0] < 0 || (uint64_t)idx[0] >= f->nmsgs)
        return NULL;
    const struct proto_msg *m = f->msgs[idx[0]];
    for (size_t i = 1; i < n; i++) {
        if (idx[i] < 0 || (uint64_t)idx[i] >= m->nnested)
            return NULL;
        m = m->nested[idx[i]];
    }
    return m;
}

const struct proto_msg *proto_message_by_name(const struct proto_schema *s, const char *name)
{
    if (!s || !name)
        return NULL;
    if (name[0] == '.')
        name++;
    size_t n = strlen(name);
    const struct psym *y = proto_sym_get(s, name, n);
    if (y && y->kind == PSYM_MESSAGE)
        return y->p;
    /* A unique message whose full name ends in "." + name. */
    const struct proto_msg *hit = NULL;
    for (uint32_t i = 0; i < s->nall; i++) {
        const char *fn = s->all[i]->full_name;
        size_t fl = strlen(fn);
        if (fl > n && fn[fl - n - 1] == '.' && memcmp(fn + fl - n, name, n) == 0) {
            if (hit)
                return NULL;
            hit = s->all[i];
        }
    }
    return hit;
}

int proto_read_message_indexes(struct slice in, int64_t *idx, size_t max, size_t *n,
                               size_t *consumed)
{
    struct reader r = reader_of(in);
    int64_t count;
    if (!rd_varint(&r, &count) || count < 0 || (uint64_t)count > max)
        return ERR_CORRUPT;
    for (int64_t i = 0; i < count; i++)
        if (!rd_varint(&r, &idx[i]) || idx[i] < 0)
            return ERR_CORRUPT;
    if (count == 0 && max > 0) {
        idx[0] = 0;
        count = 1;
    } else if (count == 0) {
        return ERR_CORRUPT;
    }
    *n = (size_t)count;
    *consumed = in.len - rd_left(&r);
    return 0;
}

/* ---- built-in well-known types -------------------------------------------------------------- */

#define WKT_HEAD "syntax = \"proto3\"; package google.protobuf; "

static const struct { const char *name, *text; } wkt_files[] = {
    {"google/protobuf/timestamp.proto",
     WKT_HEAD "message Timestamp { int64 seconds = 1; int32 nanos = 2; }"},
    {"google/protobuf/duration.proto",
     WKT_HEAD "message Duration { int64 seconds = 1; int32 nanos = 2; }"},
    {"google/protobuf/empty.proto", WKT_HEAD "message Empty {}"},
    {"google/protobuf/field_mask.proto", WKT_HEAD "message FieldMask { repeated string paths = 1; }"},
    {"google/protobuf/any.proto", WKT_HEAD "message Any { string type_url = 1; bytes value = 2; }"},
    {"google/protobuf/wrappers.proto",
     WKT_HEAD "message DoubleValue { double value = 1; } message FloatValue { float value = 1; } "
              "message Int64Value { int64 value = 1; } message UInt64Value { uint64 value = 1; } "
              "message Int32Value { int32 value = 1; } message UInt32Value { uint32 value = 1; } "
              "message BoolValue { bool value = 1; } message StringValue { string value = 1; } "
              "message BytesValue { bytes value = 1; }"},
    {"google/protobuf/struct.proto",
     WKT_HEAD "message Struct { map<string, Value> fields = 1; } "
              "message Value { oneof kind { NullValue null_value = 1; double number_value = 2; "
              "string string_value = 3; bool bool_value = 4; Struct struct_value = 5; "
              "ListValue list_value = 6; } } "
              "enum NullValue { NULL_VALUE = 0; } "
              "message ListValue { repeated Value values = 1; }"},
};

const char *proto_wkt_text(const char *name)
{
    for (size_t i = 0; i < sizeof wkt_files / sizeof wkt_files[0]; i++)
        if (strcmp(name, wkt_files[i].name) == 0)
            return wkt_files[i].text;
    return NULL;
}
