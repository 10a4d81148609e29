/* server.h -- the HTTP/1.1 server: libuv worker threads, connections, pipelining, limits.
 *
 * N worker threads each run a libuv loop with its own SO_REUSEPORT listening socket, so the kernel
 * spreads connections across them. A connection lives on one worker for its whole life. Requests
 * are parsed by http_parser.h, handed to the handler in order, and answered in order
 * (pipelining): a response that is ready early waits until every earlier one on the connection
 * has been written.
 *
 * Order of effect (pipelining): requests on one connection take effect in the order they were
 * sent, as Redis guarantees for pipelined commands. A request is *finished* when it is answered
 * and the handler holds it no longer (http_req_hold). A request is started (handed to the handler)
 * only when every earlier request on its connection has finished -- except that a request the
 * config's request_is_write() calls a write may start while the unfinished earlier ones are all
 * writes too: the handler must then apply writes in the order it receives them (Ayder's core
 * does), so a run of pipelined writes stays pipelined while a read, or anything else, waits for
 * every write before it and sees its effect.
 *
 * Ownership and threads:
 *  - A struct http_req belongs to the worker thread that parsed it. Every function here except
 *    http_req_post() and http_req_ref/unref must be called on that worker thread.
 *  - A handler may answer at once (http_respond) or later: to hand the request to another thread
 *    it takes a reference (http_req_ref); that thread later calls http_req_post(), which runs a
 *    function on the request's worker thread, where it responds and drops the reference.
 *  - If the client goes away first the request becomes an orphan: http_respond() discards the
 *    response; the request memory lives until the last reference is dropped.
 *  - Head slices and the body stay valid until the request is freed (they are copied out of the
 *    connection's read buffer).
 */
#ifndef AYDER_HTTP_SERVER_H
#define AYDER_HTTP_SERVER_H

#include "base/arena.h"
#include "base/buf.h"
#include "http/http_parser.h"

#include <stdbool.h>
#include <stdint.h>

struct http_server;
struct http_req;
struct http_tls;

typedef void (*http_handler_fn)(void *ctx, struct http_req *req);
typedef void (*http_req_fn)(struct http_req *req, void *arg);

struct http_server_config {
    const char *bind_addr;     /* default "0.0.0.0" */
    int port;                  /* plain HTTP; 0 = pick a free port (see http_server_port);
                                * -1 = none (HTTPS only) */
    /* HTTPS (http/tls.h): with tls set, a second listener on tls_port (0 = pick a free port)
     * speaks TLS; everything above it -- parsing, pipelining, limits, deadlines -- is the same.
     * The context is borrowed: it must outlive the server (reloading it is fine). */
    struct http_tls *tls;
    int tls_port;
    int workers;               /* >= 1 */
    struct http_limits limits; /* request line, head, header count */
    uint64_t body_max_bytes;
    uint64_t header_timeout_ms;
    uint64_t body_timeout_ms;
    uint64_t idle_timeout_ms;
    uint32_t max_connections;
    uint32_t pipeline_max;     /* requests in flight per connection before reading pauses */
    size_t request_mem_max;    /* per-request arena cap */
    http_handler_fn handler;
    void *handler_ctx;
    /* Order of effect (above): true when the request is a write the handler applies in the order
     * received, so it may start while earlier writes on its connection are unfinished. NULL:
     * every request waits for all earlier ones on its connection. Worker thread; must be cheap. */
    bool (*request_is_write)(void *ctx, const struct http_request *head);
    /* Called once per worker thread when it starts (e.g. to set up per-thread state). */
    void (*on_worker_start)(void *ctx, int worker);
};

void http_server_config_default(struct http_server_config *c);
/* Bind every worker's socket (errors such as EADDRINUSE are returned here, before any thread
 * starts) and start the worker threads. */
int http_server_start(const struct http_server_config *c, struct http_server **out);
int http_server_port(const struct http_server *s);     /* -1: no plain HTTP listener */
int http_server_tls_port(const struct http_server *s); /* -1: no HTTPS listener */
/* Stop accepting, close all connections, join the workers, free. */
void http_server_stop(struct http_server *s);

struct http_server_stats {
    uint64_t connections_open, connections_total, connections_rejected;
    uint64_t bytes_in, bytes_out, requests, parse_errors, timeouts;
    bool tls;                   /* HTTPS is on: the three below are meaningful */
    uint64_t tls_handshakes, tls_handshake_failures, tls_reloads;
};
void http_server_stats(const struct http_server *s, struct http_server_stats *st);

/* --- request accessors (worker thread) --- */
const struct http_request *http_req_head(const struct http_req *r);
struct slice http_req_body(const struct http_req *r);
struct arena *http_req_arena(struct http_req *r);
int http_req_worker(const struct http_req *r);
bool http_req_is_head_method(const struct http_req *r);
/* Monotonic ns when the first byte of this request was read, and when it was dispatched. */
uint64_t http_req_recv_ns(const struct http_req *r);
uint64_t http_req_dispatch_ns(const struct http_req *r);
void http_req_set_user(struct http_req *r, void *user);
void *http_req_user(const struct http_req *r);
bool http_req_responded(const struct http_req *r);
bool http_req_orphaned(const struct http_req *r);

/* Respond. extra_headers: NULL or complete lines "Name: value\r\n". The server adds Date,
 * Content-Length, Content-Type, Access-Control-Allow-Origin and Connection as needed. For HEAD the
 * body is not sent (Content-Length still describes it). Exactly one response per request. */
void http_respond(struct http_req *r, int status, const char *content_type, const char *extra_headers,
                  const void *body, size_t len);

/* Keep the request unfinished after its answer (worker thread): a handler that answers before
 * the request's effect is complete (e.g. before an asynchronous write is applied) holds it, and
 * unholds it when the effect is complete; later requests on the connection wait for that
 * (order of effect, above). Every hold is matched by one unhold. */
void http_req_hold(struct http_req *r);
void http_req_unhold(struct http_req *r);

/* Reference counting for requests handed to other threads (any thread). */
void http_req_ref(struct http_req *r);
void http_req_unref(struct http_req *r);
/* Run fn(r, arg) on r's worker thread soon (any thread; never runs fn inline). Posts to one worker
 * run in the order posted. */
void http_req_post(struct http_req *r, http_req_fn fn, void *arg);
/* The same at low priority, for stream wake-ups (a subscription's partition woken by an append,
 * a long catch-up's next turn): the worker runs every normal post ahead of them, including ones
 * posted after them while it works through a batch, so a request's answer never waits behind a
 * fan-out to thousands of streams. Low posts run in the order posted among themselves, but a
 * normal post may overtake one: its function must hold its own reference on r. */
void http_req_post_low(struct http_req *r, http_req_fn fn, void *arg);
/* One timer per request (worker thread): fn runs after ms unless stopped or restarted. */
void http_req_timer_start(struct http_req *r, uint64_t ms, http_req_fn fn, void *arg);
void http_req_timer_stop(struct http_req *r);

/* --- streaming responses (worker thread) -----------------------------------------------------
 *
 * A handler may answer with a stream instead of http_respond: the head goes out at once and the
 * body follows piece by piece for as long as the handler likes (SSE, NDJSON, continuous queries).
 *
 *   http_stream_begin(r, 200, "text/event-stream", "Cache-Control: no-store\r\n");
 *   http_stream_on_close(r, done, owner);        // learn promptly when it is over, either way
 *   http_stream_write(r, p, n) ...               // one chunk each; never blocks
 *   if (http_stream_pending(r) > high) http_stream_on_drain(r, low, more, owner);
 *   http_stream_end(r);                          // then `done` runs once the bytes are written
 *
 * Framing: HTTP/1.1 -> "Transfer-Encoding: chunked" (each write is one chunk; end writes the
 * last chunk, and the connection stays open for later requests). HTTP/1.0 -> no length, the
 * body is delimited by closing the connection at the end ("Connection: close").
 *
 * Rules:
 *  1. Order: a stream is this request's response, so it leaves the connection in request order
 *     (output written before earlier responses are sent is held, like a response). A stream is
 *     unfinished until http_stream_end: later pipelined requests on its connection are parsed
 *     but wait (order of effect) until it ends. A stream is the last thing on its connection
 *     for as long as it lasts.
 *  2. Deadlines: the idle/keep-alive deadline never applies while a stream is open; the server
 *     puts no limit on how long one lasts (the owner keeps its own deadlines, e.g. heartbeats
 *     with http_req_timer_start, which stays usable while streaming).
 *  3. Backpressure: writes never block and never fail for a slow client; they queue in the
 *     connection's output. http_stream_pending() is what is queued and not yet handed to the
 *     socket (the kernel's socket buffer comes on top); the OWNER bounds it (stop producing
 *     above a high mark, resume from the drain callback).
 *  4. Close notification: the function given to http_stream_on_close runs exactly once, on the
 *     worker, never inline inside a server call: (a) after http_stream_end, once the stream's
 *     last byte has been handed to the socket; or (b) as soon as the connection closes first
 *     (client gone, write error, http_stream_abort, server stop): http_stream_aborted() is then
 *     true. After it returns the stream is over: every http_stream_* call on r is a no-op (end
 *     and write return ERR_CLOSED), and r lives on only while the owner holds references
 *     (http_req_ref). A stream aborted before http_stream_end needs no http_stream_end.
 *  5. HEAD: http_stream_begin returns ERR_INVALID and does nothing; answer with http_respond.
 *  6. http_respond must not be called on a request whose stream has begun.
 */
/* Send the head (status, Content-Type ctype, extra_headers: NULL or complete lines) and open
 * the body. 0, or ERR_INVALID (HEAD request, or already responded/streaming). On an orphaned
 * request (client already gone) it returns 0, the close function still runs (aborted). */
int http_stream_begin(struct http_req *r, int status, const char *ctype, const char *extra_headers);
/* Append n bytes as one chunk (n == 0: nothing). 0, ERR_CLOSED when the stream is over or its
 * connection closed (the close function will run / has run), ERR_NOMEM. */
int http_stream_write(struct http_req *r, const void *p, size_t n);
/* Bytes this connection has queued and not yet handed to the socket (0 when closed). */
size_t http_stream_pending(const struct http_req *r);
/* One-shot: run fn(r, arg) on the worker once pending <= low_water_bytes (if it already is,
 * on the next loop iteration; never inline). Re-arm each time. Replaces an armed one; fn NULL
 * disarms. Not called after the close function ran. */
void http_stream_on_drain(struct http_req *r, size_t low_water_bytes, http_req_fn fn, void *arg);
/* Set the close function (rule 4). Call it right after http_stream_begin. */
void http_stream_on_close(struct http_req *r, http_req_fn fn, void *arg);
/* Finish the body (last chunk / close for HTTP/1.0). The request is then finished (later
 * pipelined requests start) and the close function runs once the bytes are written. */
int http_stream_end(struct http_req *r);
/* Close the connection now, dropping what is queued (a client that stopped reading). The close
 * function runs (aborted). No-op when the stream is already over. */
void http_stream_abort(struct http_req *r);
/* True between http_stream_begin and the close function's return. */
bool http_stream_open(const struct http_req *r);
/* In the close function: true if the connection closed before the stream was fully written. */
bool http_stream_aborted(const struct http_req *r);

const char *http_status_reason(int status);

#endif
