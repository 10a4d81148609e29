/* avro.h -- Avro schemas and decoders (binary, and the JSON encoding through a reader schema).
 *
 * CONTRACT (other modules are written against these declarations; keep them):
 *   avro_schema_parse, avro_schema_free, avro_schema_canonical, sfmt_avro_new, sfmt_avro_json_new.
 * The implementation's own header comment (what it owns, invariants, limits) replaces this line.
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
 * schema's own "aliases". */
int sfmt_avro_json_new(const struct avro_schema *reader, bool apply_defaults, json_t *field_aliases,
                       struct sfmt **out, struct serr *e);

#endif
