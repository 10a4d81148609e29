/* b64.h -- standard base64 (RFC 4648, with padding). */
#ifndef AYDER_BASE_B64_H
#define AYDER_BASE_B64_H

#include "base/buf.h"

static inline size_t b64_encoded_len(size_t n) { return (n + 2) / 3 * 4; }
/* Append the encoding of src to out. */
void b64_encode(struct sbuf *out, const uint8_t *src, size_t n);
/* Decode into out; returns 0 or ERR_INVALID for malformed input. */
int b64_decode(struct sbuf *out, const uint8_t *src, size_t n);

#endif
