/* http_client.h -- the pure pieces of an HTTP/1.1 client, shared by `ayder bench` (src/bench) and
 * the command-line client (src/cli): no sockets, no threads, no allocation except into the
 * caller's sbufs.
 *
 * The module owns nothing:
 *   - http_resp_parse(): a stateless parser for one response in a byte buffer. The body slice it
 *     hands out borrows either the input buffer or the caller's dechunk sbuf and lives as long as
 *     whichever of the two it points into.
 *   - struct http_dechunk: an incremental chunked-body decoder for responses that do not end (SSE
 *     and NDJSON subscriptions); the caller owns it and the output sbuf.
 *   - http_url_parse(): "http://host[:port][/prefix]" into the parts a client connects with.
 *
 * Strictness: status line "HTTP/1.x NNN"; Content-Length or chunked (a body delimited only by the
 * connection closing is refused, ERR_UNSUPPORTED); duplicate differing Content-Length is invalid;
 * header block at most HTTP_RESP_HEADER_MAX, body at most HTTP_RESP_BODY_MAX.
 */
#ifndef AYDER_HTTP_HTTP_CLIENT_H
#define AYDER_HTTP_HTTP_CLIENT_H

#include "base/buf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HTTP_RESP_HEADER_MAX (64u * 1024u)
#define HTTP_RESP_BODY_MAX (256u * 1024u * 1024u)

struct http_resp {
    int status;          /* 100..999 */
    size_t header_len;   /* bytes up to and including the blank line; 0 until headers complete */
    size_t total_len;    /* bytes of the complete response (valid when parse returns 1); when
                          * parse returns 0 with a Content-Length body, the total still needed */
    struct slice body;   /* valid when parse returns 1 */
    bool close;          /* "Connection: close", or HTTP/1.0 without keep-alive */
    bool chunked;
};

/* Parse one response at the start of p[0..n).
 * Returns 1 when complete (out filled), 0 when more bytes are needed, ERR_INVALID on malformed
 * input, ERR_TOO_LARGE when a header/body limit is exceeded, ERR_UNSUPPORTED for a body delimited
 * only by connection close. A chunked body is decoded into *dechunk (reset first; may be NULL only
 * if the caller never expects chunked responses, in which case chunked gives ERR_UNSUPPORTED). */
int http_resp_parse(const uint8_t *p, size_t n, struct sbuf *dechunk, struct http_resp *out);

/* The head only: returns 1 when the header block in p[0..n) is complete (status, header_len,
 * close, chunked set; body and total_len are not), 0 when more is needed, or an ERR_*. For
 * streaming answers whose body is then fed to http_dechunk. */
int http_resp_head(const uint8_t *p, size_t n, struct http_resp *out);

/* Find header `name` (lower-case) in a complete header block; 1 and its value (trimmed, borrowed
 * from p) or 0 if absent. */
int http_resp_header(const uint8_t *p, size_t header_len, const char *name, struct slice *value);

/* Incremental chunked decoding: feed any split of the body; decoded bytes are appended to *out.
 * Returns 1 once the last chunk and trailers were seen (*used = bytes of in consumed, the rest
 * belongs to the next response), 0 when all of in was consumed and more is needed, ERR_INVALID on
 * malformed framing, ERR_TOO_LARGE on a chunk-size line over 1 KiB or a chunk over the body limit. */
struct http_dechunk {
    int state;       /* private */
    uint64_t left;   /* bytes of data left in the current chunk */
    size_t line_len; /* bytes of the current size or trailer line seen */
};
void http_dechunk_init(struct http_dechunk *d);
int http_dechunk_feed(struct http_dechunk *d, const uint8_t *in, size_t n, struct sbuf *out,
                      size_t *used);

/* A server URL: "http://host[:port][/prefix]", "host:port" or "[v6]:port"; https is refused
 * (ERR_UNSUPPORTED). prefix has no trailing '/' ("" for none); host_hdr is what the Host header
 * says. ERR_INVALID for anything malformed. */
struct http_url {
    char host[256];
    char port[8];
    char prefix[256];
    char host_hdr[300];
};
int http_url_parse(const char *url, struct http_url *out);

#endif
