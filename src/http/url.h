/* url.h -- percent-decoding, query-string parameters and strict integer parsing (pure).
 *
 * The module owns nothing and allocates nothing. Slices it returns (raw names and values) point
 * into the query slice the caller passed and live as long as those bytes do. url_decode writes
 * into a buffer the caller provides.
 */
#ifndef AYDER_HTTP_URL_H
#define AYDER_HTTP_URL_H

#include "base/buf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Decode %XX escapes of src into dst (capacity >= src.len; dst may equal src.ptr for in-place
 * decoding). '+' is kept as is unless plus_as_space (query values, x-www-form-urlencoded). An
 * invalid escape (%G1, truncated %4) -> ERR_BAD_ESCAPE. Decoded bytes may be any value, NUL
 * included: callers that need text must check. Sets *dst_len on success. */
int url_decode(struct slice src, bool plus_as_space, uint8_t *dst, size_t *dst_len);

/* Find parameter `name` in a raw query string ("a=1&b=2&flag"); names are compared raw (they are
 * ASCII). Returns 1 and the first match's RAW (still encoded) value (empty for "flag" or
 * "flag="), or 0 if absent. */
int url_query_get(struct slice query, const char *name, struct slice *raw_value);

/* Iterate parameters in order: returns 1 with the raw name/value, 0 at the end. *pos starts at 0.
 * Empty segments ("a=1&&b=2") are skipped; a segment without '=' has an empty value. */
int url_query_next(struct slice query, size_t *pos, struct slice *name, struct slice *value);

/* Parse a decimal strictly: digits only (a leading '-' allowed for i64), at least one digit, no
 * spaces, no '+', no overflow. Returns 0 or ERR_BAD_PARAM. */
int url_parse_u64(struct slice s, uint64_t *out);
int url_parse_i64(struct slice s, int64_t *out);

#endif
