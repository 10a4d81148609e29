/* record.h -- the record the stream engines consume, and its metadata fields.
 *
 * A struct srec is one log record as the host (the HTTP handler, a test, a bench) hands it to the
 * query or join engine: where it came from (partition, offset), its append timestamp, its key and
 * headers, and the value bytes that a struct sfmt decodes. Everything is borrowed: the engines read
 * the record during the feed call and keep nothing that points into it unless they copy it.
 *
 * Metadata fields. A field name that starts with '$' names record metadata rather than a payload
 * path; the engines resolve these themselves (formats never see them):
 *   $offset (SV_INT), $partition (SV_INT), $timestamp_ms (SV_INT),
 *   $key (SV_STR when the key is valid UTF-8, SV_BYTES otherwise; SV_NULL for a null key),
 *   $headers.<name> (the first header with that name, typed like $key; SV_MISSING when absent).
 * Any other name starting with '$' is an error for the query (so typos are reported, not treated
 * as an always-missing field). A payload member whose name starts with '$' is reached by quoting:
 * "`$x`".
 */
#ifndef AYDER_STREAM_RECORD_H
#define AYDER_STREAM_RECORD_H

#include "base/buf.h"
#include "stream/value.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct shdr {
    struct slice name, value;
};

struct srec {
    uint32_t partition;
    uint64_t offset;
    int64_t timestamp_ms; /* the broker's append time (or the producer's, for Kafka batches) */
    struct slice key;
    bool has_key; /* false: a null key */
    const struct shdr *headers;
    size_t header_count;
    struct slice value;
};

enum smeta {
    SMETA_NONE = 0, /* not metadata: a payload path */
    SMETA_OFFSET,
    SMETA_PARTITION,
    SMETA_TIMESTAMP,
    SMETA_KEY,
    SMETA_HEADER,
};

/* Classify a field name. Returns 0 and sets *kind (SMETA_NONE for a payload path; for
 * SMETA_HEADER, *header the name after "$headers."), or ERR_INVALID for an unknown '$' name. */
int smeta_parse(const char *text, size_t len, enum smeta *kind, struct slice *header);
/* The value of a metadata field of r (points into r for $key and headers). */
void srec_meta(const struct srec *r, enum smeta kind, struct slice header, struct sval *out);

#endif
