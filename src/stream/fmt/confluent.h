/* confluent.h -- the Confluent wire format: records framed as
 *
 *     0x00 | schema id u32 big-endian | [Protobuf: message indexes] | payload
 *
 * where the Protobuf message indexes are a zigzag varint count followed by that many zigzag
 * varint indexes (a count of 0 means [0], the first top-level message). The payload is then
 * decoded by the format the schema's type calls for: Avro binary with the writer schema from the
 * id (fmt/avro.h), Protobuf binary for the indexed message (fmt/proto.h), or JSON text
 * (fmt/json.h; the JSON Schema itself is not enforced on records).
 *
 * stream/ does not depend on the schema registry: schemas are resolved by id through a callback
 * (src/schema/registry.h provides one), which hands out a refcounted, already parsed schema.
 *
 * Errors (extract/to_json): a record without the framing (shorter than 5 bytes, magic not 0), a
 * magic 0x01 record (the newer 16-byte-GUID framing: not supported), an unknown id, a schema that
 * cannot be used, or malformed message indexes -> ERR_CORRUPT with *err saying which; the engine
 * counts those records as skipped_decode. Errors of the inner format pass through.
 *
 * Threads: unlike the other formats, this one holds state that changes after construction -- a
 * bounded cache of inner decoders per (schema id, message indexes) -- behind a mutex, so one
 * instance is still safe to share between threads. A cached decoder is refcounted: eviction never
 * frees a decoder another thread is using. The cache holds at most SFMT_CONFLUENT_CACHE_MAX
 * decoders (least recently used evicted first).
 */
#ifndef AYDER_STREAM_FMT_CONFLUENT_H
#define AYDER_STREAM_FMT_CONFLUENT_H

#include "stream/fmt/fmt.h"

#include <stdint.h>

#define SFMT_CONFLUENT_CACHE_MAX 256
#define SFMT_CONFLUENT_INDEXES_MAX 16 /* message-index path depth */

enum sfmt_schema_type {
    SFMT_SCHEMA_AVRO = 1,
    SFMT_SCHEMA_PROTOBUF = 2,
    SFMT_SCHEMA_JSON = 3,
};

struct avro_schema;
struct proto_schema;

/* What a lookup hands out: the parsed schema (borrowed until release(ctx, handle)). */
struct sfmt_schema {
    uint8_t type;                     /* enum sfmt_schema_type */
    const struct avro_schema *avro;   /* SFMT_SCHEMA_AVRO */
    const struct proto_schema *proto; /* SFMT_SCHEMA_PROTOBUF */
    void *handle;                     /* passed back to release */
};
/* 0, or an error (ERR_SCHEMA_NOT_FOUND etc.; e may be filled). Called with the cache mutex NOT
 * held, from any thread. */
typedef int (*sfmt_schema_lookup_fn)(void *ctx, uint32_t id, struct sfmt_schema *out,
                                     struct serr *e);
typedef void (*sfmt_schema_release_fn)(void *ctx, void *handle);

/* lookup and release are required; ctx must outlive the sfmt. ERR_INVALID for NULL callbacks,
 * ERR_NOMEM. */
int sfmt_confluent_new(sfmt_schema_lookup_fn lookup, sfmt_schema_release_fn release, void *ctx,
                       struct sfmt **out);

/* The framing alone (for tests and tools): the schema id, the message indexes and the payload.
 * with_indexes says whether to read the index array (Protobuf); a count of 0 reads as [0]
 * (*nidx = 1); without it *nidx = 0. idx holds SFMT_CONFLUENT_INDEXES_MAX. ERR_CORRUPT + *err. */
int sfmt_confluent_frame(struct slice rec, bool with_indexes, uint32_t *id, int64_t *idx,
                         size_t *nidx, struct slice *payload, const char **err);

#endif
