/* proto_int.h -- private to src/stream/fmt/proto_*.c: the schema model both front ends (.proto
 * text in proto_parse.c, FileDescriptorSet in proto_fds.c) build and the binary decoder reads
 * (proto_decode.c extracts, proto_render.c renders JSON; their shared wire primitives are at the
 * end of this file).
 *
 * Life of a schema:
 *
 *     front end ──adds files, messages, enums, fields (type names unresolved)──▶ proto_link()
 *        proto_link: symbols checked unique, type names resolved by protobuf scoping, json names,
 *        field-number tables, well-known-type tags ──▶ immutable struct proto_schema
 *
 * Invariants once proto_link() returned 0:
 *  1. Every PT_MESSAGE field has msg != NULL, every PT_ENUM field en != NULL, and no other field
 *     has either.
 *  2. Field numbers in a message are unique and in [1, PROTO_FIELD_NUMBER_MAX]; by_num[k] is the
 *     index of the field numbered k (k < by_num_len) or -1; fields beyond by_num_len are found by
 *     binary search in by_number (indices sorted by field number).
 *  3. is_map fields are repeated PT_MESSAGE fields whose msg->map_entry holds key (1), value (2).
 *  4. All memory (names, arrays, messages) lives in schema->mem and dies with proto_schema_free.
 */
#ifndef AYDER_STREAM_FMT_PROTO_INT_H
#define AYDER_STREAM_FMT_PROTO_INT_H

#include "base/arena.h"
#include "base/buf.h"
#include "base/err.h"
#include "base/hmap.h"
#include "base/json.h"
#include "stream/fmt/proto.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* descriptor.proto's FieldDescriptorProto.Type numbers, so the FDS front end maps 1:1. */
enum pt_type {
    PT_DOUBLE = 1, PT_FLOAT = 2, PT_INT64 = 3, PT_UINT64 = 4, PT_INT32 = 5, PT_FIXED64 = 6,
    PT_FIXED32 = 7, PT_BOOL = 8, PT_STRING = 9, PT_GROUP = 10, PT_MESSAGE = 11, PT_BYTES = 12,
    PT_UINT32 = 13, PT_ENUM = 14, PT_SFIXED32 = 15, PT_SFIXED64 = 16, PT_SINT32 = 17, PT_SINT64 = 18,
};

enum pt_label { PL_SINGULAR = 0, PL_OPTIONAL, PL_REQUIRED, PL_REPEATED };

/* Well-known types with a special JSON mapping. */
enum pt_wkt {
    WKT_NONE = 0, WKT_TIMESTAMP, WKT_DURATION, WKT_EMPTY, WKT_STRUCT, WKT_VALUE, WKT_LISTVALUE,
    WKT_FIELDMASK, WKT_ANY, WKT_WRAPPER,
};

#define PROTO_FIELD_NUMBER_MAX 536870911 /* 2^29 - 1 */
#define PROTO_BYNUM_DENSE_MAX 1024       /* dense number table up to this field number */

struct proto_enum_value {
    const char *name;
    int32_t number;
};

struct proto_enum {
    const char *full_name, *name;
    struct proto_enum_value *values; /* declaration order; values[0] is the default */
    uint32_t nvalues, cap;
    bool null_value; /* google.protobuf.NullValue: JSON null */
};

struct proto_field {
    const char *name, *json_name;
    uint32_t name_len, json_name_len;
    int32_t number;
    uint8_t type;  /* enum pt_type */
    uint8_t label; /* enum pt_label */
    bool presence; /* absent reads as SV_MISSING (message, proto3 optional, oneof member, proto2) */
    bool is_map;
    int32_t oneof; /* index into the message's oneofs, or -1 (synthetic proto3 oneofs are not) */
    const char *type_name; /* message/enum name as written, before linking */
    const struct proto_msg *msg;
    const struct proto_enum *en;
    const char *file; /* NULL = main file; for error positions */
    uint32_t line, col;
};

struct proto_msg {
    const char *full_name, *name;
    struct proto_field *fields; /* declaration order */
    uint32_t nfields, fcap;
    struct proto_msg **nested; /* declaration order, map entries included (Confluent indexes) */
    uint32_t nnested, ncap;
    const char **oneofs;
    uint32_t noneofs, ocap;
    bool map_entry, proto3;
    uint8_t wkt;
    int32_t *by_num; /* by_num_len entries */
    uint32_t by_num_len;
    uint32_t *by_number; /* field indices sorted by number */
};

struct proto_file {
    const char *name; /* "" for the main file of a parse */
    const char *package;
    bool proto3;
    struct proto_msg **msgs; /* top-level messages, declaration order */
    uint32_t nmsgs, mcap;
};

enum psym_kind { PSYM_PACKAGE = 1, PSYM_MESSAGE, PSYM_ENUM };
struct psym {
    uint8_t kind;
    void *p;
};

struct proto_schema {
    struct arena mem;
    struct hmap syms; /* full name -> struct psym */
    struct proto_file **files; /* the main file is the last */
    uint32_t nfiles, fcap;
    struct proto_msg **all; /* every message, for lookups by simple name */
    uint32_t nall, acap;
    struct proto_enum **enums; /* every enum */
    uint32_t nenums, ecap;
};

/* ---- building (proto_schema.c) ---------------------------------------------------------------- */

#define PROTO_SCHEMA_MEM_MAX (64u << 20)

int proto_schema_alloc(struct proto_schema **out);
/* Grow an arena-backed array to hold at least n+1 elements of size el. 0 or ERR_NOMEM. */
int proto_grow(struct proto_schema *s, void **arr, uint32_t *cap, uint32_t n, size_t el);
char *proto_strdup(struct proto_schema *s, const char *p, size_t n);
/* Register a symbol; ERR_CONFLICT if the name is taken (packages may repeat). */
int proto_sym_add(struct proto_schema *s, const char *full, uint8_t kind, void *p);
const struct psym *proto_sym_get(const struct proto_schema *s, const char *full, size_t n);
/* "foo_bar" -> "fooBar" into the schema arena. */
const char *proto_json_name(struct proto_schema *s, const char *name, size_t n);
/* Resolve names, build tables; ERR_INVALID + e on an unknown or non-type name. */
int proto_link(struct proto_schema *s, struct serr *e);
/* Parse one more file (text) into s without linking (proto_parse.c); no imports callback. */
int proto_parse_into(struct proto_schema *s, const char *fname, const char *text, size_t len,
                     struct serr *e);
/* Text of a built-in well-known .proto ("google/protobuf/timestamp.proto"), or NULL. */
const char *proto_wkt_text(const char *name);

/* ---- lookups ---------------------------------------------------------------------------------- */

static inline const struct proto_field *proto_field_by_num(const struct proto_msg *m, uint64_t num)
{
    if (num < m->by_num_len) {
        int32_t i = m->by_num[num];
        return i < 0 ? NULL : &m->fields[i];
    }
    uint32_t lo = 0, hi = m->nfields;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        const struct proto_field *f = &m->fields[m->by_number[mid]];
        if ((uint64_t)f->number == num)
            return f;
        if ((uint64_t)f->number < num)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const struct proto_field *proto_field_by_name(const struct proto_msg *m, const char *name,
                                              size_t n);
const char *proto_enum_name(const struct proto_enum *en, int32_t number);
bool proto_enum_number(const struct proto_enum *en, const char *name, size_t n, int32_t *out);

/* A float/double as proto3 JSON: shortest round-trip number, "NaN", "Infinity", "-Infinity". */
struct jw;
void proto_put_double(struct jw *w, double d, bool is_float);

/* ---- the binary decoder: shared by proto_decode.c (extract) and proto_render.c (to_json) ------
 *
 * Wire primitives are static inline here so that the walk and the renderer keep inlining them.
 * Every read goes through get_varint/get_value, which check the bounds (proto_decode.c's
 * invariant 1). struct dctx is the one context both halves carry: schema, scratch arena, the
 * reason of the first error, and the JSON nesting depth of to_json. */

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_SGROUP = 3, WT_EGROUP = 4, WT_I32 = 5 };

static const uint8_t wire_of[19] = {
    [PT_DOUBLE] = WT_I64,   [PT_FLOAT] = WT_I32,    [PT_INT64] = WT_VARINT,  [PT_UINT64] = WT_VARINT,
    [PT_INT32] = WT_VARINT, [PT_FIXED64] = WT_I64,  [PT_FIXED32] = WT_I32,   [PT_BOOL] = WT_VARINT,
    [PT_STRING] = WT_LEN,   [PT_GROUP] = WT_SGROUP, [PT_MESSAGE] = WT_LEN,   [PT_BYTES] = WT_LEN,
    [PT_UINT32] = WT_VARINT, [PT_ENUM] = WT_VARINT, [PT_SFIXED32] = WT_I32,  [PT_SFIXED64] = WT_I64,
    [PT_SINT32] = WT_VARINT, [PT_SINT64] = WT_VARINT,
};

static inline bool get_varint(const uint8_t **pp, const uint8_t *end, uint64_t *out)
{
    const uint8_t *p = *pp;
    if (p < end && *p < 0x80) {
        *out = *p;
        *pp = p + 1;
        return true;
    }
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (p >= end)
            return false;
        uint8_t b = *p++;
        if (shift == 63 && b > 1)
            return false;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (b < 0x80) {
            *out = v;
            *pp = p;
            return true;
        }
    }
    return false;
}

/* One value of wire type wt: varint/fixed into u, LEN into p/len. */
struct raw {
    uint64_t u;
    const uint8_t *p;
    uint32_t len;
};

static inline bool get_value(const uint8_t **pp, const uint8_t *end, uint32_t wt, struct raw *r)
{
    const uint8_t *p = *pp;
    switch (wt) {
    case WT_VARINT:
        return get_varint(pp, end, &r->u);
    case WT_I64:
        if (end - p < 8)
            return false;
        r->u = get_le64(p);
        *pp = p + 8;
        return true;
    case WT_I32:
        if (end - p < 4)
            return false;
        r->u = get_le32(p);
        *pp = p + 4;
        return true;
    case WT_LEN: {
        uint64_t n;
        if (!get_varint(&p, end, &n) || n > (uint64_t)(end - p) || n > UINT32_MAX)
            return false;
        r->p = p;
        r->len = (uint32_t)n;
        *pp = p + n;
        return true;
    }
    default:
        return false;
    }
}

struct dctx {
    const struct proto_schema *s;
    struct arena *a;
    const char *why;
    int jdepth;
};

static inline int corrupt(struct dctx *c, const char *why)
{
    c->why = why;
    return ERR_CORRUPT;
}

static inline bool packable(uint8_t type) { return wire_of[type] != WT_LEN && type != PT_GROUP; }

static inline int32_t zz32(uint64_t u) { return (int32_t)((uint32_t)u >> 1 ^ -(uint32_t)(u & 1)); }
static inline int64_t zz64(uint64_t u) { return (int64_t)(u >> 1 ^ -(u & 1)); }

static inline bool check_str(const struct proto_field *f, const struct raw *r)
{
    return f->type != PT_STRING || utf8_valid(r->p, r->len);
}

/* Read the next element of a packed run. */
static inline bool packed_next(const uint8_t **pp, const uint8_t *end, uint32_t wt, struct raw *r)
{
    return get_value(pp, end, wt, r);
}

/* Map entry: key (1) and value (2), last wins, validated; unknown fields skipped. */
struct proto_entry {
    struct raw key, val;
    bool has_key, has_val;
};

/* Last value of fields 1..6 with their declared wire types (validated; strings UTF-8). */
struct proto_small {
    struct raw v[7];
    bool has[7];
    int last; /* number of the last known field seen (Value's oneof) */
};

/* proto_decode.c: the wire walk. Each returns 0, or ERR_CORRUPT with c->why set (ERR_NOMEM when
 * the arena is full).
 *
 * Skip one field of wire type wt (groups: up to the matching end tag). */
int proto_skip_field(struct dctx *c, const uint8_t **pp, const uint8_t *end, uint32_t wt,
                     uint64_t num, int depth);
/* A packed run's length fits its element width; varints in it are well formed. */
int proto_check_packed(struct dctx *c, uint32_t wt, const struct raw *run);
/* Append p..p+n to a growing arena buffer (merging repeated occurrences of a message); the first
 * piece is borrowed, not copied (*cap = 0). */
int proto_cat(struct dctx *c, const uint8_t **buf, size_t *len, size_t *cap, const uint8_t *p,
              size_t n);
/* One map entry (bytes p..end of message type em) into e. */
int proto_parse_entry(struct dctx *c, const struct proto_msg *em, const uint8_t *p,
                      const uint8_t *end, struct proto_entry *e, int depth);
/* Validate message m (bytes p..p+len) and every message embedded in it, capturing nothing. */
int proto_validate_msg(struct dctx *c, const struct proto_msg *m, const uint8_t *p, size_t len,
                       int depth);

/* proto_render.c: the proto3 JSON mapping. Same returns, and ERR_INVALID for what JSON cannot
 * hold (nesting past JSON_NEST_MAX, a Timestamp out of range).
 *
 * Message m (bytes p..p+len) as a JSON value (an object, or a well-known type's own form). */
int proto_render_message(struct dctx *c, struct jw *w, const struct proto_msg *m,
                         const uint8_t *p, size_t len, int depth);
/* Every occurrence of field f in a container message's bytes, as a map's object (is_map) or a
 * list: extract's LEAF_MAP / LEAF_LIST results. */
int proto_render_field(struct dctx *c, struct jw *w, const struct proto_field *f,
                       const uint8_t *buf, size_t blen, bool is_map);
/* The key of a map entry as text (JSON object key / path segment); buf holds 24 bytes. */
void proto_map_key_text(const struct proto_field *kf, const struct raw *r, char *buf,
                        const char **out, size_t *n);
/* Fields 1..6 of a small well-known message (wrapper, Timestamp, Duration) into o. */
int proto_scan_small(struct dctx *c, const struct proto_msg *m, const uint8_t *p, size_t len,
                     struct proto_small *o, int depth);
/* Timestamp/Duration as their JSON strings into buf (>= 48 bytes). ERR_INVALID out of range. */
int proto_time_text(struct dctx *c, uint8_t wkt, const struct proto_small *sm, char *buf);

#endif
