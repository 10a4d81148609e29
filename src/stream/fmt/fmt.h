/* fmt.h -- record formats: one interface the stream engines decode every record through.
 *
 * A struct sfmt is a decoder for one record layout: JSON text (fmt/json.h), Avro binary with a
 * writer and an optional reader schema (fmt/avro.h), the Avro JSON encoding read through a reader
 * schema (defaults, aliases), Protobuf binary for one message type (fmt/proto.h), or the Confluent
 * wire format (magic 0, 4-byte big-endian schema id, then one of the above, fmt/confluent.h).
 *
 * Purity: no I/O, no clock, no locks. An sfmt is immutable after construction, so one instance may
 * be used from several threads at once; all per-call state lives in the caller's arena.
 *
 * Contract of the operations:
 *  - extract(): decode rec and set out[i] for each paths[i] (SV_MISSING when absent). Only what
 *    the paths need is materialised; the rest is skipped but still validated, so a record that
 *    does not decode is rejected as a whole (ERR_CORRUPT for bytes that are not this format,
 *    ERR_INVALID for a record that is well-formed but not an object/message, ERR_NOMEM when the
 *    scratch arena's cap is hit). On error out[] is unspecified.
 *  - to_json(): append the whole record as one JSON object to out (the format's natural JSON
 *    mapping: Avro unions unwrapped to their value, bytes as base64, proto3 JSON mapping for
 *    Protobuf). Same errors as extract(). On error out->len is restored to its value on entry.
 *  - err: optional human-readable reason for the last failure of this call (a static string or
 *    one in the arena); may be NULL.
 */
#ifndef AYDER_STREAM_FMT_FMT_H
#define AYDER_STREAM_FMT_FMT_H

#include "base/arena.h"
#include "base/buf.h"
#include "stream/value.h"

#include <stddef.h>

/* A schema or query error for the client: what was wrong and where (a JSON-pointer-like path into
 * the request or schema, e.g. "/filter/2/op" or "fields[3].type"). */
struct serr {
    char path[160];
    char msg[240];
};
void serr_set(struct serr *e, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

struct sfmt;
struct sfmt_ops {
    int (*extract)(const struct sfmt *f, struct slice rec, const struct spath *paths, size_t n,
                   struct sval *out, struct arena *scratch, const char **err);
    int (*to_json)(const struct sfmt *f, struct slice rec, struct sbuf *out, struct arena *scratch,
                   const char **err);
    void (*free)(struct sfmt *f);
    const char *name; /* "json", "avro", "avro-json", "protobuf", "confluent" */
};
struct sfmt {
    const struct sfmt_ops *ops;
};

static inline void sfmt_free(struct sfmt *f)
{
    if (f)
        f->ops->free(f);
}

#endif
