/* value.h -- the one row model of the stream layer: typed values and field paths.
 *
 * Every format (JSON text, Avro binary, Protobuf binary, Avro/Protobuf JSON encodings) decodes a
 * record into struct sval values, one per field path the query asked for; the query and join
 * engines (stream/query.h, stream/join.h) only ever see svals. That is what makes a join of an
 * Avro topic with a Protobuf topic compare keys by value: Avro int 7, Protobuf int32 7 and JSON 7
 * are all SV_INT 7.
 *
 * Ownership: an sval never owns memory. SV_STR/SV_BYTES/SV_JSON point either into the record
 * being decoded (valid while the record's slice is) or into the caller's scratch arena (valid
 * until the caller resets it). Nothing here allocates except sval_unescape into an arena.
 *
 * Semantics (docs/STREAM.md "Values"):
 *  1. SV_MISSING (field absent) and SV_NULL (explicit null) are both "null" to comparisons: every
 *     comparison op against them is false; only exists / is_null tell them apart.
 *  2. SV_INT and SV_DOUBLE compare numerically with each other (an int64 compared with a double
 *     exactly, never by rounding the int to a double first). No string <-> number coercion.
 *  3. Strings compare bytewise (UTF-8 code point order) after JSON unescaping.
 *  4. SV_BOOL compares false < true and only with bools. Values of different kinds (number,
 *     string, bool, bytes, json) are never equal and never ordered.
 *  5. SV_JSON is a nested object or array as compact or raw JSON text; it supports exists,
 *     is_null and contains (for arrays: an element equal to the operand), nothing else.
 */
#ifndef AYDER_STREAM_VALUE_H
#define AYDER_STREAM_VALUE_H

#include "base/arena.h"
#include "base/buf.h"
#include "base/json.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum sval_type {
    SV_MISSING = 0, /* the field is not in the record (or a path step hit a non-container) */
    SV_NULL,
    SV_BOOL,
    SV_INT,    /* i */
    SV_DOUBLE, /* d; never NaN or infinite from JSON; Avro/Protobuf NaN/inf compare false */
    SV_STR,    /* p/len: UTF-8; `escaped` = still JSON-escaped (contains a backslash) */
    SV_BYTES,  /* p/len: raw bytes (Avro bytes/fixed, Protobuf bytes) */
    SV_JSON,   /* p/len: a nested object or array as JSON text */
};

struct sval {
    uint8_t type;
    bool escaped;
    uint32_t len;
    union {
        bool b;
        int64_t i;
        double d;
        const char *p;
    };
};

/* Field paths: "a.b.c", "items[0].sku", "a.b.0" is the member named "0" (not an index).
 * Names may be quoted with backticks for dots: "`a.b`.c". At most SPATH_SEGS_MAX segments, each
 * name at most SPATH_NAME_MAX bytes. Record metadata ($offset, $partition, $timestamp_ms, $key,
 * $headers.<name>) is resolved by the engines, never handed to a format. */
#define SPATH_SEGS_MAX 16
#define SPATH_NAME_MAX 255
struct spath_seg {
    const char *name; /* NULL for an array index */
    uint32_t len;
    int32_t index; /* >= 0 when name == NULL */
};
struct spath {
    uint8_t nseg;
    struct spath_seg seg[SPATH_SEGS_MAX];
};

/* Parse text into p; segment names point into text (which must outlive p). Returns 0 or
 * ERR_INVALID (empty, too deep, bad index, unterminated quote). */
int spath_parse(const char *text, size_t len, struct spath *p);

/* Comparison (semantics above). sval_cmp returns false when the pair is not ordered; otherwise
 * sets *out to <0, 0, >0. Escaped strings are compared after unescaping (no allocation). */
bool sval_cmp(const struct sval *a, const struct sval *b, int *out);
bool sval_eq(const struct sval *a, const struct sval *b);
/* A hash consistent with sval_eq (an int and a double of equal value hash alike; escaped and
 * unescaped forms of one string hash alike). Used for group-by and join keys. */
uint64_t sval_hash(const struct sval *v, uint64_t seed);
/* Write v as one JSON value (SV_MISSING as null, SV_BYTES as a base64 string). */
void sval_write_json(struct jw *w, const struct sval *v);
/* The shortest "%.15g".."%.17g" text that reads back as d, with ".0" added to an integral
 * value so it still reads as a double (a valid JSON number; "null" for a non-finite d). Returns its length; buf is not NUL-terminated by contract. */
#define SVAL_DOUBLE_CHARS 40
size_t sval_fmt_double(char buf[SVAL_DOUBLE_CHARS], double d);
/* Unescape an escaped SV_STR into the arena (v is rewritten in place, escaped = false). Returns
 * 0 or ERR_NOMEM. */
int sval_unescape(struct sval *v, struct arena *a);

#endif
