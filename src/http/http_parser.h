/* http_parser.h -- a pure, zero-copy, allocation-free HTTP/1.1 request parser (RFC 9112).
 *
 * The module owns nothing. http_parse_head() reads a request head from a buffer the caller owns and
 * fills a caller-allocated struct http_request whose slices (method, target, path, query, header
 * names and values, host, ...) all point into that buffer: they stay valid exactly as long as the
 * caller keeps those bytes in place and unmodified. The chunked decoder keeps only a few integers
 * of state in a caller-allocated struct http_chunked; the data slices it hands out point into the
 * input the caller passed to that call.
 *
 * Strictness: every deviation from RFC 9112 that matters for request smuggling or ambiguity is an
 * error (bare CR, bare LF, obs-fold, space before a colon, duplicate or malformed Content-Length,
 * Content-Length with Transfer-Encoding, duplicate singleton headers). No I/O, no libuv.
 */
#ifndef AYDER_HTTP_HTTP_PARSER_H
#define AYDER_HTTP_HTTP_PARSER_H

#include "base/buf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HTTP_MAX_HEADERS 64
/* Longest chunk-size line (size digits + extensions, without CRLF) the decoder accepts. */
#define HTTP_CHUNK_LINE_MAX 4096

struct http_header {
    struct slice name, value; /* value has leading/trailing SP/HTAB removed */
};

struct http_limits {
    size_t request_line_max; /* default 8192: a longer request line (without CRLF)
                                -> ERR_URI_TOO_LONG */
    size_t head_max;         /* default 65536: longer head (incl. leading CRLFs and final CRLF)
                                -> ERR_HEADERS_TOO_LARGE */
    size_t header_count_max; /* default 64 (clamped to HTTP_MAX_HEADERS) -> ERR_HEADERS_TOO_LARGE */
    bool host_required;      /* default false: if true, an HTTP/1.1 request without Host is
                                ERR_INVALID (RFC 9112 §3.2 MUST; off so raw test clients work) */
};

void http_limits_default(struct http_limits *l);

struct http_request {
    struct slice method, target, path, query; /* path = target up to '?', query = after '?' (no
                                                 '?'); for absolute-form targets ("http://h/p")
                                                 path starts at the first '/' after the authority */
    int version_minor;                        /* HTTP/1.0 -> 0, HTTP/1.1 -> 1 */
    struct http_header headers[HTTP_MAX_HEADERS];
    size_t header_count;
    /* Derived, validated semantics. */
    bool has_content_length;
    uint64_t content_length; /* <= INT64_MAX */
    bool chunked;            /* Transfer-Encoding: chunked */
    bool keep_alive;         /* 1.1: true unless "Connection: close";
                                1.0: false unless keep-alive */
    bool expect_continue;    /* Expect: 100-continue */
    struct slice host, authorization, content_type, origin; /* empty (len 0) if absent */
    size_t head_len;         /* bytes of leading CRLFs + request line + headers + final CRLF */
};

/* Parse the head at buf[0..len). Returns 1 when complete (req filled, req->head_len set), 0 when
 * more bytes are needed (no limit exceeded yet), or a negative ERR_*:
 *   ERR_INVALID            malformed request line or header, smuggling-prone framing
 *   ERR_UNSUPPORTED        an HTTP version other than 1.0/1.1, a transfer coding other than chunked
 *   ERR_URI_TOO_LONG       request line longer than lim->request_line_max (even if incomplete)
 *   ERR_HEADERS_TOO_LARGE  head longer than lim->head_max (even if incomplete), too many headers
 * Leading CRLFs before the request line are skipped (and counted in head_len). Bytes after the
 * head (a body or a pipelined request) are not looked at. A prefix of a request never gets a
 * different error than the whole request would (with request_line_max < head_max). lim may be
 * NULL for the defaults. On 0 or an error, *req is unspecified. */
int http_parse_head(const uint8_t *buf, size_t len, const struct http_limits *lim,
                    struct http_request *req);

/* Case-insensitive header lookup (lower_name must be lower case); the first match, or NULL. The
 * result points into req. */
const struct http_header *http_find_header(const struct http_request *req, const char *lower_name);

/* Incremental chunked-body decoder (RFC 9112 §7.1), zero-copy. Private state; init before use. */
struct http_chunked {
    uint64_t remaining;  /* bytes left in the current chunk's data (or the size being read) */
    size_t line_len;     /* bytes of the current chunk-size line / trailer section so far */
    size_t trailer_max;
    uint8_t state;
};

void http_chunked_init(struct http_chunked *c, size_t trailer_max /* e.g. 8192 */);

/* Consume input in[0..len). Sets *consumed (bytes of input used) and *data to one contiguous slice
 * of decoded body (pointing into in; len 0 if none this call). Sets *done once the last chunk and
 * the trailer section are complete; the bytes after that are not consumed (the next request).
 * Returns 0, or ERR_INVALID (bad chunk size, size > INT64_MAX, bad extension, chunk line longer
 * than HTTP_CHUNK_LINE_MAX, missing CRLF after data, bad trailer) or ERR_HEADERS_TOO_LARGE
 * (trailers longer than trailer_max). Errors are sticky. Trailer fields are validated, not
 * returned. The caller loops while bytes remain and each call consumes something or yields data. */
int http_chunked_decode(struct http_chunked *c, const uint8_t *in, size_t len, size_t *consumed,
                        struct slice *data, bool *done);

#endif
