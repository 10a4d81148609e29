/* proto.h -- Protobuf schemas (.proto text or a FileDescriptorSet) and a descriptor-driven
 * wire-format decoder with the proto3 JSON mapping.
 *
 * What it owns: a struct proto_schema owns every message, enum, field and name of every file it
 * was built from (one arena, freed by proto_schema_free). A struct proto_msg is borrowed from its
 * schema. An sfmt from sfmt_proto_new / sfmt_proto_json_new borrows schema and message (both must
 * outlive it) and owns nothing else. Pure: no I/O, no clock; imports come through a callback and
 * the well-known types (google/protobuf/{timestamp,duration,empty,wrappers,struct,field_mask,
 * any}.proto) are built in as embedded text (the built-in wins over the callback).
 *
 * Parser strictness (proto_schema_parse), each an ERR_INVALID with e->path "line:col" (or
 * "file:line:col" inside an import) and a message naming the problem:
 *  - syntax "proto3" or "proto2" (absent = proto2); `edition` is rejected; proto2 fields need a
 *    label, proto3 rejects `required`;
 *  - unknown or ambiguous type names (resolved by protobuf scoping: relative, nested,
 *    package-qualified, leading dot), duplicate symbols, duplicate field numbers or names,
 *    field numbers outside 1..2^29-1 or in 19000..19999, reserved numbers/names in use;
 *  - enums: no values, a proto3 first value other than 0, duplicate numbers without
 *    allow_alias, duplicate names; map keys that are float/double/bytes/message/enum; labels on
 *    map fields or oneof members; empty oneofs; groups (unsupported);
 *  - parsed and ignored: options (custom "(a.b).c" names, aggregate values), field defaults,
 *    `extensions` ranges, `extend` blocks (extension fields decode as unknown fields), services.
 * Limits: 1 MiB of text per file, 64 files, imports 16 deep, messages nested 32 deep, 10000
 * fields per message, 10000 values per enum, identifiers 255 bytes, full names 1024 bytes,
 * 64 MiB of schema memory. FileDescriptorSets: 4 MiB, 64 files, nested_type 32 deep.
 *
 * Decoding (sfmt_proto_new), strictness: every read is bounds-checked; a record is ERR_CORRUPT
 * when a varint is longer than 10 bytes or overflows 64 bits, a length runs past its message,
 * a tag has field number 0 or wire type 6/7, a group is unbalanced, a packed run is not a whole
 * number of elements, a string is not UTF-8 (proto2 and proto3 alike), or messages nest deeper
 * than PROTO_DECODE_DEPTH_MAX. A field whose wire type does not match its declared type is
 * treated as an unknown field (as protobuf does); unknown fields (groups too) are validated by
 * wire type and skipped. Last value wins for a repeated occurrence of a singular field; repeated
 * occurrences of an embedded message merge (nested scalars: last wins; nested repeated:
 * concatenated); within a oneof the last member seen wins. Missing proto2 `required` fields are
 * not an error.
 *
 * Values (cross-format null semantics, see stream/value.h):
 *  - an absent scalar with implicit presence (proto3, no `optional`, not in a oneof) reads as its
 *    default: SV_INT 0, SV_DOUBLE 0, SV_BOOL false, SV_STR "", SV_BYTES empty, the enum's first
 *    value -- never SV_MISSING; a map entry without key or value uses the defaults too;
 *  - an absent proto3 `optional` field, oneof member, message field or proto2 optional/required
 *    field reads as SV_MISSING (proto2 [default=...] options are ignored);
 *  - int32/sint32/sfixed32/int64/sint64/sfixed64/uint32/fixed32 -> SV_INT; uint64/fixed64 ->
 *    SV_INT up to INT64_MAX, above it SV_DOUBLE (nearest); float/double -> SV_DOUBLE (NaN and
 *    infinities kept: they compare false); bool -> SV_BOOL; string -> SV_STR and bytes ->
 *    SV_BYTES, both pointing into the record; an enum -> SV_STR with the value's name when the
 *    number is declared, else SV_INT with the number;
 *  - paths name fields by .proto name or JSON name; `a.b` descends into message a; `items[2]`
 *    selects element 2 of a repeated field; `labels.env` selects the map value for key "env"
 *    (integer keys in decimal, bool keys "true"/"false"); a whole repeated field is SV_JSON
 *    (an array, "[]" when empty), a whole map SV_JSON ("{}" when empty), a whole message SV_JSON
 *    (its JSON mapping), except the wrapper types (google.protobuf.Int64Value, ...) which read as
 *    their value (SV_MISSING when absent) and Timestamp/Duration which read as their JSON string
 *    (SV_STR; SV_MISSING when out of the range the JSON mapping allows); a path through a scalar, an unknown name, or an index past the end is SV_MISSING.
 *
 * to_json (proto3 JSON mapping): lowerCamelCase JSON names (or json_name), fields in field-number
 * order, fields with implicit presence at their default omitted (the proto3 default; present
 * `optional`/oneof fields are emitted even at their default), 64-bit integers as strings, bytes
 * as base64, enums as names (numbers when undeclared; google.protobuf.NullValue as null), NaN and
 * infinities as "NaN"/"Infinity"/"-Infinity", maps as objects (keys as strings; duplicate keys:
 * last wins), unknown fields dropped. Well-known types: Timestamp (RFC 3339, "Z"), Duration
 * ("1.5s"), wrappers (bare values), Empty, Struct, Value, ListValue, FieldMask (camelCase paths
 * joined by ","); Any as {"@type": url, ...fields} when the type is in the schema (a well-known
 * type inside Any as {"@type", "value"}), else {"@type": url, "value": base64 bytes}. A Timestamp
 * or Duration out of its documented range is ERR_INVALID. JSON output nests at most 31 deep
 * (arrays and maps count): deeper records are ERR_INVALID for to_json (extract still works).
 *
 * sfmt_proto_json_new reads records in the proto3 JSON encoding through the same schema (rules in
 * proto_json.c: JSON or .proto names, aliases, int64 strings, enum names or numbers, the same
 * presence/default semantics); its to_json writes the canonical proto3 JSON form.
 *
 * The Confluent framing (magic byte, schema id) is fmt/confluent.h's; this module supplies the
 * message-index array reader and the index -> message lookup.
 *
 * Thread-safety: a schema and its sfmts are immutable after construction.
 */
#ifndef AYDER_STREAM_FMT_PROTO_H
#define AYDER_STREAM_FMT_PROTO_H

#include "stream/fmt/fmt.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

struct proto_schema;
struct proto_msg;

/* Resolves `import "x.proto";` to the text of the imported file (the schema registry maps an
 * import to a referenced subject). Returns 0 and sets *text and *len (borrowed until the parse
 * returns), or ERR_NOT_FOUND. */
typedef int (*proto_import_fn)(void *ctx, const char *name, const char **text, size_t *len);

/* Parse .proto text (proto3, and proto2 syntax where it is the same: messages, nested messages,
 * enums, repeated, maps, oneof, optional, packages, imports through imp (may be NULL: imports
 * are then an error unless they are google/protobuf well-known types)). ERR_INVALID + e (e->path
 * "line:col"). */
int proto_schema_parse(const char *text, size_t len, proto_import_fn imp, void *ctx,
                       struct proto_schema **out, struct serr *e);
/* Build the same from a serialized google.protobuf.FileDescriptorSet (the last file is the main
 * one). ERR_INVALID + e. */
int proto_schema_from_fds(struct slice fds, struct proto_schema **out, struct serr *e);
void proto_schema_free(struct proto_schema *s);

/* The message at Confluent message indexes (idx[0] = top-level message number in the main file,
 * idx[1..] = nested message numbers); n == 0 means the first top-level message. NULL if none. */
const struct proto_msg *proto_message_by_index(const struct proto_schema *s, const int64_t *idx,
                                               size_t n);
/* By full name ("pkg.Outer.Inner") or simple name if unambiguous; NULL if none. */
const struct proto_msg *proto_message_by_name(const struct proto_schema *s, const char *name);

/* Binary decoder for message m (m and its schema must outlive the sfmt). Paths name fields by
 * their .proto name or their JSON name. */
int sfmt_proto_new(const struct proto_schema *s, const struct proto_msg *m, struct sfmt **out,
                   struct serr *e);
/* The proto3 JSON encoding of m read as records (field_aliases as in avro.h; may be NULL). */
int sfmt_proto_json_new(const struct proto_schema *s, const struct proto_msg *m,
                        json_t *field_aliases, struct sfmt **out, struct serr *e);

/* Nested-message depth the decoders accept (deeper records are ERR_CORRUPT). */
#define PROTO_DECODE_DEPTH_MAX 64

/* The Confluent Protobuf message-index array at the start of in (after magic and schema id): a
 * zigzag varint count, then that many zigzag varint indexes; a count of 0 means [0]. Fills
 * idx (at most max entries), *n and *consumed (bytes read). ERR_CORRUPT when malformed, negative
 * or longer than max. */
int proto_read_message_indexes(struct slice in, int64_t *idx, size_t max, size_t *n,
                               size_t *consumed);

#endif
