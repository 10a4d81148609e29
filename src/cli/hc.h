/* hc.h -- the CLI's blocking HTTP/1.1 client: one keep-alive connection to one node, requests
 * with bodies, 307/308 redirects followed to the leader, and streaming (chunked) answers read as
 * they arrive. Built on the pure response parser in src/http/http_client.h; plain sockets, no
 * libuv, no server code.
 *
 * Ownership: the caller allocates struct hc and calls hc_init/hc_close. The answer of
 * hc_request (struct hc_resp: status and body) borrows the connection's buffers and lives until
 * the next call on the same hc. One hc is used by one thread at a time.
 *
 * Redirects. A write sent to a follower is answered 307 with Location: the leader's URL for the
 * same path and query (docs/HTTP_API.md "Cluster"). hc re-sends the same request, body and
 * Authorization header included, to that Location, up to HC_REDIRECTS_MAX times, and keeps the
 * new node as its base for every later request (the leader stays the leader until it does not,
 * and then it redirects us again). Re-sending the token across hosts is deliberate: a Location
 * given by a node of the cluster names another node of the same cluster, which honours the same
 * tokens (the `curl --location-trusted` behaviour). Only http:// Locations are followed.
 *
 * Errors: hc functions return 0 or a negative ERR_* (ERR_IO: could not connect or the connection
 * broke, ERR_TIMEOUT, ERR_INVALID: a malformed answer); hc->err then says what, in words.
 */
#ifndef AYDER_CLI_HC_H
#define AYDER_CLI_HC_H

#include "base/buf.h"
#include "http/http_client.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HC_REDIRECTS_MAX 5
#define HC_STREAM_IDLE_MS 45000 /* a stream silent this long (3 heartbeats) is dead */

struct hc {
    struct http_url url;
    char base[600];        /* "http://host:port/prefix", for messages */
    const char *token;     /* borrowed; NULL = no Authorization header */
    int timeout_ms;        /* connect, send and each receive; 0 = none */
    int fd;
    int redirects;         /* redirects followed so far (all requests) */
    struct sbuf req;       /* the request being sent (kept for re-sending after a redirect) */
    struct sbuf in;        /* received, not yet consumed bytes */
    size_t used;           /* bytes of c->in of the answer handed out last (dropped next call) */
    struct sbuf chunk;     /* decoded chunked body */
    struct http_resp head; /* head of the current streaming answer */
    struct http_dechunk dc;
    bool streaming;
    char err[2048];
};

struct hc_resp {
    int status;
    struct slice body;
    struct slice location; /* of a 3xx not followed; borrowed */
};

int hc_init(struct hc *c, const char *url, const char *token, int timeout_ms);
void hc_close(struct hc *c);
/* Point the client at another base URL ("http://host:port"); the connection is closed. */
int hc_set_base(struct hc *c, const char *url);

/* Extra request headers, each "Name: value" without CRLF; NULL-terminated list or NULL. */
int hc_request(struct hc *c, const char *method, const char *path, const char *const *headers,
               const char *ctype, const void *body, size_t body_len, struct hc_resp *out);

/* Streaming GET/POST: sends the request (following redirects) and reads the head. On a 2xx
 * chunked answer returns 0 with out->status set and the stream open; read it with hc_stream_read.
 * Any other answer is read whole and returned in *out (status, body) with the stream closed. */
int hc_stream_open(struct hc *c, const char *method, const char *path, const char *const *headers,
                   const char *ctype, const void *body, size_t body_len, struct hc_resp *out);
/* Append decoded body bytes to *out. Returns 1 at the end of the answer, 0 after appending at
 * least one byte, or an ERR_*. Blocks until bytes arrive, at most HC_STREAM_IDLE_MS (not
 * timeout_ms: a quiet stream is not an error, the server's heartbeats keep it alive). */
int hc_stream_read(struct hc *c, struct sbuf *out);

/* The building blocks of pipelining (produce): write one request without reading, then read
 * answers in order. The base must already be the leader (hc_request follows redirects first). */
int hc_connect(struct hc *c);
int hc_send(struct hc *c, const char *method, const char *path, const char *const *headers,
            const char *ctype, const void *body, size_t body_len);
int hc_recv(struct hc *c, struct hc_resp *out);

/* Append s percent-encoded for a path segment or query value (unreserved bytes kept). */
void hc_escape(struct sbuf *b, const char *s, size_t n);

#endif
