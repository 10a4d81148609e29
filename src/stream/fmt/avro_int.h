/* avro_int.h -- private to the Avro format (avro_schema.c, avro_decode.c): the compiled schema
 * tree and the JSON -> Avro binary encoder shared by defaults and the Avro JSON encoding.
 *
 * A parsed schema is a graph of struct anode in the schema's own arena. Named types (record, enum,
 * fixed) appear once; every reference to a name points at the same node, so a recursive record is
 * a cycle in the graph. Nothing outside the schema owns any of these pointers.
 */
#ifndef AYDER_STREAM_FMT_AVRO_INT_H
#define AYDER_STREAM_FMT_AVRO_INT_H

#include "base/arena.h"
#include "base/buf.h"
#include "stream/fmt/avro.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

enum atype {
    AT_NULL,
    AT_BOOLEAN,
    AT_INT,
    AT_LONG,
    AT_FLOAT,
    AT_DOUBLE,
    AT_BYTES,
    AT_STRING,
    AT_RECORD,
    AT_ENUM,
    AT_ARRAY,
    AT_MAP,
    AT_UNION,
    AT_FIXED,
};

/* Logical types are annotations only: decoding always follows the underlying type. */
enum alogical {
    AL_NONE,
    AL_DECIMAL,       /* bytes | fixed */
    AL_UUID,          /* string | fixed(16) */
    AL_DATE,          /* int: days since 1970-01-01 */
    AL_TIME_MILLIS,   /* int */
    AL_TIME_MICROS,   /* long */
    AL_TS_MILLIS,     /* long */
    AL_TS_MICROS,     /* long */
    AL_LOCAL_TS_MILLIS,
    AL_LOCAL_TS_MICROS,
    AL_DURATION,      /* fixed(12) */
};

struct anode;

struct afield {
    const char *name;
    uint32_t name_len;
    struct anode *type;
    json_t *def;          /* the validated default (borrowed from the schema's JSON), or NULL */
    struct slice def_bin; /* def encoded as Avro binary of `type` (schema arena) */
    const char **aliases; /* simple names */
    uint32_t naliases;
};

struct anode {
    uint8_t type;    /* enum atype */
    uint8_t logical; /* enum alogical */
    bool is_error;   /* AT_RECORD declared as "error" (kept by the canonical form) */
    int32_t precision, scale;
    uint32_t id;          /* dense index, for per-schema bitmaps */
    const char *fullname; /* named types: "ns.Name" (or "Name") */
    const char *name;     /* named types: the unqualified part (points into fullname) */
    const char **aliases; /* named types: fullnames */
    uint32_t naliases;
    uint32_t n;              /* record fields, enum symbols, union branches */
    struct afield *fields;   /* AT_RECORD */
    const char **symbols;    /* AT_ENUM */
    int32_t enum_default;    /* AT_ENUM: index of the default symbol, -1 = none */
    struct anode *items;     /* AT_ARRAY items, AT_MAP values */
    struct anode **branches; /* AT_UNION */
    uint32_t size;           /* AT_FIXED */
};

struct avro_schema {
    struct arena mem; /* every node, string and encoded default */
    json_t *json;     /* the parsed schema text; afield.def points into it */
    struct anode *root;
    uint32_t nnodes;
};

/* Encode the JSON value v as Avro binary of type t, appending to out.
 * AENC_DEFAULT: a schema default (a union's value is for its first branch, unwrapped).
 * AENC_JSON: the Avro JSON encoding (a union's value is null or {"branch":value}; a bare value
 * is accepted when it fits a branch), with fields looked up under their aliases and
 * field_aliases, and missing fields filled from defaults when apply_defaults.
 * Returns 0 or -1 with *why set (a static string). */
enum aenc_mode { AENC_DEFAULT, AENC_JSON };
struct aenc {
    enum aenc_mode mode;
    bool apply_defaults;
    json_t *field_aliases; /* object name -> [alias...]; may be NULL */
    const char *why;
    bool nomem; /* the failure was an allocation, not the value */
    char where[128]; /* the field or member where encoding failed (best effort) */
};
int avro_encode_json(struct aenc *c, const struct anode *t, json_t *v, struct sbuf *out, int depth);

/* The type's name as used in union branch wrappers and messages: "int", "array", fullname. */
const char *avro_type_name(const struct anode *t);

/* Limits (documented in avro.h). */
#define AVRO_DEPTH_MAX 64          /* schema nesting, default nesting, data nesting */
#define AVRO_NAME_MAX 255          /* bytes in one name component (a field, symbol, type name) */
#define AVRO_FULLNAME_MAX 1023     /* bytes in a fullname */
#define AVRO_FIELDS_MAX 4096       /* fields in one record */
#define AVRO_SYMBOLS_MAX 65536     /* symbols in one enum */
#define AVRO_BRANCHES_MAX 256      /* branches in one union */
#define AVRO_NAMED_MAX 4096        /* named types in one schema (looked up linearly) */
#define AVRO_NODES_MAX 262144      /* nodes in one schema */
#define AVRO_FIXED_MAX (1u << 24)  /* bytes in one fixed */
#define AVRO_SCHEMA_TEXT_MAX (4u << 20)
#define AVRO_ZERO_ITEMS_MAX 65536  /* array/map items beyond the record's byte length */

#endif
