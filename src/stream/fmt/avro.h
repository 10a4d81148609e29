/* avro.h -- Avro schemas and decoders (binary, and the JSON encoding through a reader schema).
 *
 * Owns: the parsed form of an Avro schema (struct avro_schema: a graph of typed nodes, named
 * types shared by reference, defaults validated and pre-encoded), its Parsing Canonical Form,
 * and two record formats (fmt.h): "avro" (binary, writer schema resolved against an optional
 * reader schema) and "avro-json" (the Avro JSON encoding read through a reader schema).
 * No I/O, no clock. libavro is not used: its resolver lacks defaults (reference/stream.md 3.4).
 *
 * Schemas (avro_schema_parse): every type of the 1.11 spec -- primitives, record/error, enum
 * (with "default"), array, map, union, fixed, named types and references, namespaces, aliases,
 * field defaults (checked against the field type; a union's default is for its first branch),
 * "order". Logical types are annotations carried on the node (decimal, uuid, date, time-*,
 * timestamp-*, local-timestamp-*, duration); values decode as their underlying type, and an
 * invalid logical type is ignored, as the spec says. Errors: ERR_INVALID with e->path naming the
 * place, e.g. "fields[2].type", "fields[0].type[1].symbols[3]", "fields[1].default".
 *
 * Value mapping (extract -> sval; to_json -> JSON):
 *   null -> SV_NULL / null            boolean -> SV_BOOL / true|false
 *   int, long -> SV_INT / integer     float, double -> SV_DOUBLE / number (shortest text that
 *                                       reads back; NaN and +-inf -> null, as JSON has neither)
 *   string -> SV_STR (escaped=false)  bytes, fixed -> SV_BYTES / base64 string
 *   enum -> SV_STR (reader symbol)    union -> its branch's value (unwrapped; null -> SV_NULL)
 *   record, map -> SV_JSON object     array -> SV_JSON array (when a path names them whole)
 *   Logical types: decimal -> bytes (base64 of the two's-complement unscaled value), uuid ->
 *   string, date/time-millis -> int, time-micros/timestamp-* -> long, duration -> fixed.
 *   A promoted value takes the reader's type (writer int read as double -> SV_DOUBLE).
 * Paths (value.h): a record field by its reader name, an array element by index ("items[2]"),
 * a map value by key ("attrs.color"); a name step on an array or scalar is SV_MISSING. A field
 * the reader has but the writer lacks is read from its default. to_json writes fields in writer
 * order, then the defaulted ones.
 *
 * Strictness (untrusted bytes; every violation is ERR_CORRUPT with a reason in *err):
 *  1. Every length and count is checked against the bytes left; varints longer than 10 bytes,
 *     ints outside 32 bits, negative lengths, union/enum indexes out of range, booleans other
 *     than 0/1, strings (and bytes read as strings) that are not UTF-8, and array/map blocks
 *     whose byte size disagrees with their items are corrupt.
 *  2. Trailing bytes after the record are corrupt (one record is exactly one datum).
 *  3. Items of all arrays/maps in one record <= record bytes + 65536 (only zero-byte items can
 *     exceed the byte count); data nesting <= 64. Nothing is allocated per item.
 *  4. A writer union branch or enum symbol the reader cannot take is ERR_INVALID at read time
 *     (the schemas resolve, this record does not), as the spec prescribes.
 *  5. A top-level value that is not a record (e.g. schema "string") is validated and then
 *     ERR_INVALID: records are objects.
 *
 * Limits: schema text 4 MiB; nesting 64; names 255 bytes per component, fullnames 1023; 4096
 * fields per record; 65536 enum symbols; 256 union branches; 4096 named types; fixed size
 * 16 MiB. Exceeding one is ERR_INVALID.
 *
 * Ownership: a schema owns everything it points to; an sfmt borrows its schemas (they must
 * outlive it) and owns its compiled program. svals point into the record, into the schema (enum
 * symbols), into the sfmt (defaults), or into the scratch arena (SV_JSON, Avro-JSON records).
 * Threads: schemas and sfmts are immutable after construction.
 */
#ifndef AYDER_STREAM_FMT_AVRO_H
#define AYDER_STREAM_FMT_AVRO_H

#include "stream/fmt/fmt.h"

#include <jansson.h>
#include <stdbool.h>

struct avro_schema;

/* Parse and validate an Avro schema (JSON text). Errors: ERR_INVALID with e naming the offending
 * place in the schema. */
int avro_schema_parse(const char *text, size_t len, struct avro_schema **out, struct serr *e);
void avro_schema_free(struct avro_schema *s);
/* The Parsing Canonical Form, appended to out (used by the registry to tell equal schemas). */
void avro_schema_canonical(const struct avro_schema *s, struct sbuf *out);

/* Binary decoder: records written with `writer`, read through `reader` (NULL = the writer):
 * full schema resolution per the Avro spec, including reader fields absent from the writer
 * filled from their defaults. ERR_INVALID (+ e) when the schemas do not resolve. The schemas must
 * outlive the sfmt. */
int sfmt_avro_new(const struct avro_schema *writer, const struct avro_schema *reader,
                  struct sfmt **out, struct serr *e);

/* Avro JSON encoding (unions wrapped as {"type":value}) read through `reader`: missing fields take
 * the reader's defaults when apply_defaults, and field_aliases (an object {"field":["alias",...]},
 * may be NULL; borrowed for the call only) add names a field may appear under, besides the
 * schema's own "aliases".
 * Details: records are parsed with jansson (this is not the fast path), re-encoded as Avro
 * binary of the reader (in the scratch arena) and decoded by the reader's own program, so the
 * value mapping is the binary one. A union value may be wrapped ({"string":"x"}, the branch
 * named by type, fullname or short name) or bare (the first branch it fits); bytes and fixed are
 * strings of code points U+0000..U+00FF; an unknown enum symbol takes the enum's default.
 * field_aliases apply to fields of that name in records at any depth. With apply_defaults off a
 * missing field is an error (ERR_CORRUPT), even when it has a default. Errors: a record that is
 * not JSON or does not fit the schema is ERR_CORRUPT, valid JSON that is not an object is
 * ERR_INVALID. */
int sfmt_avro_json_new(const struct avro_schema *reader, bool apply_defaults, json_t *field_aliases,
                       struct sfmt **out, struct serr *e);

#endif
