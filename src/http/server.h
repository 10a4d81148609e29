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

typedef void (*http_handler_fn)(void *ctx, struct http_req *req);
typedef void (*http_req_fn)(struct http_req *req, void *arg);

struct http_server_config {
    const char *bind_addr;     /* default "0.0.0.0" */
    int port;                  /* 0 = pick a free port (see http_server_port) */
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
int http_server_port(const struct http_server *s);
/* Stop accepting, close all connections, join the workers, free. */
void http_server_stop(struct http_server *s);

struct http_server_stats {
    uint64_t connections_open, connections_total, connections_rejected;
    uint64_t bytes_in, bytes_out, requests, parse_errors, timeouts;
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
/* Run fn(r, arg) on r's worker thread soon (any thread; never runs fn inline). */
void http_req_post(struct http_req *r, http_req_fn fn, void *arg);
/* One timer per request (worker thread): fn runs after ms unless stopped or restarted. */
void http_req_timer_start(struct http_req *r, uint64_t ms, http_req_fn fn, void *arg);
void http_req_timer_stop(struct http_req *r);

const char *http_status_reason(int status);

#endif
