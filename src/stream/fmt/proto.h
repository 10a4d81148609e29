/* proto.h -- Protobuf schemas (.proto text or a FileDescriptorSet) and a descriptor-driven
 * wire-format decoder.
 *
 * CONTRACT (other modules are written against these declarations; keep them):
 *   proto_schema_parse, proto_schema_from_fds, proto_schema_free, proto_message_by_index,
 *   proto_message_by_name, sfmt_proto_new, sfmt_proto_json_new.
 * The implementation's own header comment (what it owns, invariants, limits) replaces this line.
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

#endif
