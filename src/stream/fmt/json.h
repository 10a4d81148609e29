/* json.h -- JSON text records: an on-demand, validating scanner (no DOM, no allocation on the
 * common path).
 *
 * CONTRACT (other modules are written against these declarations; keep them):
 *   sfmt_json_new, json_scan_validate.
 *
 * The scanner (json.c) owns nothing: values it extracts point into the record. Its strictness
 * list (RFC 8259, UTF-8, depth <= 64, duplicate keys: the last one wins, numbers out of double
 * range fail extraction) is at the top of json.c. The JSON sfmt is a stateless singleton:
 * sfmt_free() on it is a no-op.
 */
#ifndef AYDER_STREAM_FMT_JSON_H
#define AYDER_STREAM_FMT_JSON_H

#include "stream/fmt/fmt.h"

#include <stdbool.h>

/* Records are JSON objects (RFC 8259, UTF-8 validated, nesting at most 64 deep; anything else is
 * ERR_CORRUPT, a valid non-object is ERR_INVALID). to_json copies the record's bytes as they are
 * (after validation). */
int sfmt_json_new(struct sfmt **out);
/* Validate one JSON text (any value). True if valid. */
bool json_scan_validate(const uint8_t *p, size_t n);
/* Visit the elements of the JSON array text [p, p + n) in order (each as an sval pointing into
 * p; nested containers as SV_JSON). visit returns false to stop early. Returns 0, ERR_CORRUPT
 * (not valid JSON) or ERR_INVALID (valid, but not an array). Used for `contains` on arrays. */
int json_scan_array(const uint8_t *p, size_t n, bool (*visit)(void *ctx, const struct sval *v),
                    void *ctx);
/* The same, returning 0 or ERR_CORRUPT and a static reason in *why (NULL when valid). */
int json_scan_validate_err(const uint8_t *p, size_t n, const char **why);

#endif
