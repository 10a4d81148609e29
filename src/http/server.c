/* server.c -- libuv HTTP/1.1 server: see server.h for the model.
 *
 * Connection state machine (per connection, on its worker thread):
 *
 *        +------+  head complete   +------+  body complete   +----------+  can_start  +-------+
 *   ---> | HEAD | ---------------> | BODY | ---------------> | dispatch |-----------> | start |
 *        +------+                  +------+                  +----------+             +-------+
 *         ^  ^ ^   (no body)                                      | else                |
 *         |  | +--------------------------------------------------)---------------------+
 *         |  |                                                    v                     |
 *         |  |   an earlier request finishes (req_finish)  +--------+                   |
 *         |  +---------------------------------------------| parked |  (nothing parsed; |
 *         |      -> start, then parse on                   +--------+   reading paused) |
 *         |           next pipelined request (while in flight < pipeline_max) <---------+
 *         +-- parse error / limit: error response queued in order, then CLOSING
 *
 * Invariants:
 *  1. Responses leave a connection in request order: a request's output goes straight to the
 *     connection's output buffer only when it is the oldest unanswered request; otherwise it is
 *     held in the request until all earlier ones are written (flush_ready()).
 *  2. A request is freed only when it is answered-and-flushed (or orphaned) AND its reference count
 *     is zero; so another thread holding a reference never sees freed memory.
 *  3. A connection is freed only after its libuv handle is closed and no request references it.
 *  4. Reading stops while pipeline_max requests are in flight or while the connection is closing;
 *     unparsed bytes stay in the connection's input buffer (bounded by the head/body limits).
 *  5. Every limit is answered with its status (414/431/413/408/503) in the seed's error shape.
 *  6. Order of effect (server.h): a request is started only when can_start() holds -- no earlier
 *     request on the connection is unfinished, or it is a write (config.request_is_write) and
 *     every unfinished earlier one is a write. A request finishes when it is responded and has
 *     no holds (req_finish); c->unfinished / c->unfinished_reads count started, unfinished
 *     requests. At most one request is parked (complete, queued for its response, not started);
 *     while one is, nothing after it is parsed and reading is paused, so the requests behind it
 *     wait in the socket, bounded by TCP, not in our buffers. Requests start in the order sent,
 *     so a read (anything not a write) starts after every earlier request finished and sees its
 *     effect, and a run of writes stays in flight together (the handler orders them).
 *  7. Streaming responses (server.h): a streaming request stays unfinished (and at the head of
 *     the FIFO once earlier responses are out) from http_stream_begin to http_stream_end, so
 *     rules 1 and 6 hold unchanged: its bytes go to c->out only while it is the FIFO head (else
 *     they are held in r->resp and moved by flush_ready), and nothing after it starts before it
 *     ends. c->stream is the connection's open stream (at most one: it blocks later starts).
 *     An ended stream sits on c->ended until c->out and the in-flight write are empty; then its
 *     close function is posted. The stream holds one reference of its own from begin until its
 *     close function has run, so the request outlives both its answer and its connection.
 *     Owner callbacks (close, drain) are always posted, never run inside a server call, so an
 *     owner may call any server function from anywhere without meeting itself re-entered.
 *
 *   stream states:  NONE --begin--> OPEN --end--> ENDED --(flushed | conn closed)--> OVER
 *                                     \------------------(conn closed)-----------------^
 *                   OVER is entered in stream_closed_cb, which runs the owner's close function.
 *  8. HTTPS (tls.h) lives at the socket edge only: on_read decrypts into c->in and conn_write
 *     seals c->out into ciphertext just before writing, so parsing, pipelining, limits and
 *     deadlines are the HTTP ones unchanged. A connection accepted on the HTTPS listener has the
 *     header deadline from its accept until its first complete request head, handshake
 *     included, so a half-open handshake is dropped like a slow head. Anything queued before
 *     the handshake completed (a 408, an overload 503) cannot be sent: the connection closes
 *     instead. A handshake or record failure closes that connection only.
 */
#include "http/server.h"
#include "http/tls.h"

#include "base/alloc.h"
#include "base/assert.h"
#include "base/clock.h"
#include "base/err.h"
#include "base/json.h"
#include "base/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#define READ_CHUNK 65536

struct worker;
struct conn;

struct post_item {
    struct http_req *req;
    http_req_fn fn;
    void *arg;
};

/* A worker's posts come in two classes (run_posts): answers and everything else first, stream
 * wake-ups (http_req_post_low) after them. */
enum { POST_NORMAL, POST_LOW, POST_CLASSES };

struct post_queue {
    struct post_item *items;
    size_t len, cap;
};

struct http_req {
    struct conn *conn;        /* NULL once orphaned */
    struct worker *w;
    struct http_req *next;    /* in conn FIFO, or freelist */
    struct http_request head;
    struct sbuf raw;          /* copy of the head bytes */
    struct sbuf body;
    struct sbuf resp;         /* held response (when not first in line) */
    struct arena arena;
    struct http_chunked chunked;
    uint64_t body_left;       /* Content-Length bytes still to read */
    uint64_t recv_ns, dispatch_ns;
    void *user;
    _Atomic int refs;         /* 1 for the server until answered+flushed/orphaned */
    bool responded;
    bool is_head;
    bool close_after;
    bool is_write;            /* config.request_is_write said so (order of effect) */
    bool started;             /* handed to the handler */
    bool finished;            /* started, responded and no holds left */
    int holds;                /* http_req_hold() count (worker thread) */
    bool timer_init;
    uv_timer_t timer;
    http_req_fn timer_fn;
    void *timer_arg;
    /* streaming (rule 7) */
    uint8_t stream_state;     /* enum stream_state */
    bool stream_chunked;      /* HTTP/1.1: chunked; else close-delimited */
    bool stream_notified;     /* close function posted */
    bool stream_aborted;      /* the connection closed before the stream was written out */
    bool drain_posted;
    size_t drain_low;
    http_req_fn drain_fn, close_fn;
    void *drain_arg, *close_arg;
    struct http_req *ended_next; /* conn's list of ended streams waiting for their bytes out */
};

enum stream_state { STREAM_NONE, STREAM_OPEN, STREAM_ENDED, STREAM_OVER };

enum conn_state { CONN_HEAD, CONN_BODY_CL, CONN_BODY_CHUNKED, CONN_CLOSING };

struct conn {
    uv_tcp_t tcp;
    struct worker *w;
    struct conn *prev, *next;   /* worker's connection list */
    enum conn_state state;
    struct sbuf in;             /* unparsed bytes */
    struct sbuf out;            /* bytes to write */
    struct sbuf inflight_out;   /* bytes being written by uv_write */
    uv_write_t wreq;
    bool writing;
    bool reading;
    bool closed;                /* uv_close called */
    bool busy;                  /* inside conn_process: responses are queued, written at its end */
    struct http_req *parked;    /* parsed, queued for its response, but not yet started */
    uint32_t unfinished;        /* started requests not yet finished (order of effect) */
    uint32_t unfinished_reads;  /* ... of which not writes */
    bool close_when_flushed;
    struct http_req *fifo_head, *fifo_tail, *cur; /* cur = request whose body is being read */
    uint32_t fifo_len;
    uint64_t deadline_ns;       /* header/body/idle deadline, 0 = none (set_deadline) */
    bool deadline_is_idle;
    struct conn *dl_prev, *dl_next; /* worker's list of connections with a deadline */
    bool on_dl;
    int live_reqs;              /* requests not yet freed that point at this conn */
    struct http_req *stream;    /* the open streaming response, if any (rule 7) */
    struct http_req *ended;     /* ended streams whose bytes are not all written yet */
    struct http_tls_conn *tls;  /* HTTPS: records in/out of c->in and c->out (rule 8) */
};

struct worker {
    struct http_server *srv;
    int idx;
    uv_loop_t loop;
    uv_tcp_t listener;          /* plain HTTP (when has_plain) */
    uv_tcp_t listener_tls;      /* HTTPS (when has_tls) */
    uv_async_t async;
    uv_timer_t sweep;
    pthread_t thread;
    int listen_fd, listen_tls_fd;
    bool has_plain, has_tls;
    struct conn *conns;
    struct conn *dl_conns;      /* the connections with a deadline: what on_sweep walks */
    struct http_req *free_reqs;
    int free_count;
    pthread_mutex_t post_mu;
    struct post_queue posts[POST_CLASSES];      /* under post_mu */
    struct post_queue posts_work[POST_CLASSES]; /* worker thread: the batch being run */
    _Atomic bool normal_posted; /* a normal post waits: run_posts lets it overtake low ones */
    char date[40];
    time_t date_sec;
    uint8_t readbuf[READ_CHUNK];
    bool stopping;
};

struct http_server {
    struct http_server_config cfg;
    struct worker *workers;
    int nworkers;
    int port, tls_port;
    _Atomic uint64_t conns_open, conns_total, conns_rejected, bytes_in, bytes_out, requests,
        parse_errors, timeouts;
};

static void conn_process(struct conn *c);
static void conn_write(struct conn *c);
static void conn_close(struct conn *c);
static void clear_deadline(struct conn *c);
static void req_release(struct http_req *r);
static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf);
static void on_read_tls(struct conn *c, const uint8_t *p, size_t n);
static void stream_notify(struct http_req *r, bool aborted);
static void stream_check_drain(struct conn *c);

/* ------------------------------------------------------------------------------------------ */
/* Status lines and dates                                                                      */

const char *http_status_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    case 507: return "Insufficient Storage";
    default: return "Unknown";
    }
}

static const char *worker_date(struct worker *w)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    if (ts.tv_sec != w->date_sec) {
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        strftime(w->date, sizeof w->date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        w->date_sec = ts.tv_sec;
    }
    return w->date;
}

/* ------------------------------------------------------------------------------------------ */
/* Requests                                                                                    */

static struct http_req *req_new(struct conn *c)
{
    struct worker *w = c->w;
    struct http_req *r = w->free_reqs;
    if (r) {
        w->free_reqs = r->next;
        w->free_count--;
    } else {
        r = xcalloc(1, sizeof *r);
        if (!r)
            return NULL;
        sbuf_init(&r->raw, 0);
        sbuf_init(&r->body, 0);
        sbuf_init(&r->resp, 0);
        arena_init(&r->arena, w->srv->cfg.request_mem_max);
        r->w = w;
    }
    r->conn = c;
    r->next = NULL;
    memset(&r->head, 0, sizeof r->head);
    sbuf_reset(&r->raw);
    sbuf_reset(&r->body);
    sbuf_reset(&r->resp);
    r->body.max = w->srv->cfg.body_max_bytes;
    r->body_left = 0;
    r->recv_ns = r->dispatch_ns = 0;
    r->user = NULL;
    atomic_store(&r->refs, 1);
    r->responded = false;
    r->is_head = false;
    r->close_after = false;
    r->is_write = false;
    r->started = false;
    r->finished = false;
    r->holds = 0;
    r->timer_fn = NULL;
    r->stream_state = STREAM_NONE;
    r->stream_chunked = r->stream_notified = r->stream_aborted = r->drain_posted = false;
    r->drain_low = 0;
    r->drain_fn = r->close_fn = NULL;
    r->drain_arg = r->close_arg = NULL;
    r->ended_next = NULL;
    c->live_reqs++;
    return r;
}

static void req_timer_cb(uv_timer_t *t)
{
    struct http_req *r = t->data;
    http_req_fn fn = r->timer_fn;
    r->timer_fn = NULL;
    if (fn)
        fn(r, r->timer_arg);
}

/* Return a request to the worker's pool (or free it). */
static void req_free(struct http_req *r)
{
    struct worker *w = r->w;
    if (r->timer_init)
        uv_timer_stop(&r->timer);
    struct conn *c = r->conn;
    if (c) {
        c->live_reqs--;
        r->conn = NULL;
        if (c->closed && c->live_reqs == 0 && !c->writing && c->tcp.data == NULL) {
            /* handle already closed: conn memory was waiting for us (see on_conn_closed) */
            sbuf_free(&c->in);
            sbuf_free(&c->out);
            sbuf_free(&c->inflight_out);
            xfree(c);
        }
    }
    arena_reset(&r->arena);
    if (r->raw.cap > 65536) sbuf_free(&r->raw);
    if (r->body.cap > 1 << 20) sbuf_free(&r->body);
    if (r->resp.cap > 1 << 20) sbuf_free(&r->resp);
    if (w->free_count < 1024) {
        r->next = w->free_reqs;
        w->free_reqs = r;
        w->free_count++;
    } else {
        if (r->timer_init) {
            /* timers must be closed before memory is freed; keep it pooled instead */
            r->next = w->free_reqs;
            w->free_reqs = r;
            w->free_count++;
            return;
        }
        sbuf_free(&r->raw);
        sbuf_free(&r->body);
        sbuf_free(&r->resp);
        arena_free(&r->arena);
        xfree(r);
    }
}

void http_req_ref(struct http_req *r) { atomic_fetch_add(&r->refs, 1); }

static void req_release(struct http_req *r)
{
    if (atomic_fetch_sub(&r->refs, 1) == 1)
        req_free(r);
}

static void post_unref_cb(struct http_req *r, void *arg)
{
    (void)arg;
    req_release(r);
}

void http_req_unref(struct http_req *r)
{
    /* The final free must happen on the worker thread (pool, timer, conn); if this might be the
     * last reference and we are elsewhere, defer it through the post queue. */
    int prev = atomic_fetch_sub(&r->refs, 1);
    if (prev == 1) {
        atomic_fetch_add(&r->refs, 1);
        http_req_post(r, post_unref_cb, NULL);
    }
}

const struct http_request *http_req_head(const struct http_req *r) { return &r->head; }
struct slice http_req_body(const struct http_req *r) { return slice_of(r->body.data, r->body.len); }
struct arena *http_req_arena(struct http_req *r) { return &r->arena; }
int http_req_worker(const struct http_req *r) { return r->w->idx; }
bool http_req_is_head_method(const struct http_req *r) { return r->is_head; }
uint64_t http_req_recv_ns(const struct http_req *r) { return r->recv_ns; }
uint64_t http_req_dispatch_ns(const struct http_req *r) { return r->dispatch_ns; }
void http_req_set_user(struct http_req *r, void *user) { r->user = user; }
void *http_req_user(const struct http_req *r) { return r->user; }
bool http_req_responded(const struct http_req *r) { return r->responded; }
bool http_req_orphaned(const struct http_req *r) { return r->conn == NULL; }

void http_req_timer_start(struct http_req *r, uint64_t ms, http_req_fn fn, void *arg)
{
    if (!r->timer_init) {
        uv_timer_init(&r->w->loop, &r->timer);
        r->timer.data = r;
        r->timer_init = true;
    }
    r->timer_fn = fn;
    r->timer_arg = arg;
    uv_timer_start(&r->timer, req_timer_cb, ms, 0);
}

void http_req_timer_stop(struct http_req *r)
{
    r->timer_fn = NULL;
    if (r->timer_init)
        uv_timer_stop(&r->timer);
}

static void post(struct http_req *r, int cls, http_req_fn fn, void *arg)
{
    struct worker *w = r->w;
    struct post_queue *q = &w->posts[cls];
    pthread_mutex_lock(&w->post_mu);
    if (q->len == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 256;
        struct post_item *p = xrealloc(q->items, cap * sizeof *p);
        ASSERT(p != NULL); /* cannot report failure to a cross-thread caller; tiny allocation */
        q->items = p;
        q->cap = cap;
    }
    q->items[q->len++] = (struct post_item){r, fn, arg};
    if (cls == POST_NORMAL)
        atomic_store_explicit(&w->normal_posted, true, memory_order_relaxed);
    pthread_mutex_unlock(&w->post_mu);
    uv_async_send(&w->async);
}

void http_req_post(struct http_req *r, http_req_fn fn, void *arg) { post(r, POST_NORMAL, fn, arg); }

void http_req_post_low(struct http_req *r, http_req_fn fn, void *arg) { post(r, POST_LOW, fn, arg); }

/* ------------------------------------------------------------------------------------------ */
/* Responses                                                                                   */

static void format_response(struct worker *w, struct sbuf *out, struct http_req *r, int status,
                            const char *ctype, const char *extra, const void *body, size_t len)
{
    uint8_t *p = sbuf_reserve(out, 256 + (extra ? strlen(extra) : 0) + (r->is_head ? 0 : len));
    if (!p)
        return;
    sbuf_append(out, "HTTP/1.1 ", 9);
    sbuf_put_u64(out, (uint64_t)status);
    sbuf_putc(out, ' ');
    sbuf_puts(out, http_status_reason(status));
    sbuf_append(out, "\r\nDate: ", 8);
    sbuf_puts(out, worker_date(w));
    if (ctype) {
        sbuf_append(out, "\r\nContent-Type: ", 16);
        sbuf_puts(out, ctype);
    }
    sbuf_append(out, "\r\nContent-Length: ", 18);
    sbuf_put_u64(out, len);
    sbuf_append(out, "\r\nAccess-Control-Allow-Origin: *\r\n", 34);
    if (r->close_after)
        sbuf_append(out, "Connection: close\r\n", 19);
    if (extra)
        sbuf_puts(out, extra);
    sbuf_append(out, "\r\n", 2);
    if (!r->is_head)
        sbuf_append(out, body, len);
}

/* Order of effect: may r be started now? Nothing unfinished before it, or r is a write and
 * everything unfinished before it is a write too (rule 6 in the header). */
static bool can_start(const struct conn *c, const struct http_req *r)
{
    return c->unfinished == 0 || (r->is_write && c->unfinished_reads == 0);
}

/* r's effects are complete: responded and no holds. Lets a parked request start. */
static void req_finish(struct http_req *r)
{
    struct conn *c = r->conn;
    if (!r->started || r->finished || !r->responded || r->holds)
        return;
    r->finished = true;
    if (!c || c->closed)
        return;
    ASSERT(c->unfinished > 0);
    c->unfinished--;
    if (!r->is_write) {
        ASSERT(c->unfinished_reads > 0);
        c->unfinished_reads--;
    }
}

void http_req_hold(struct http_req *r)
{
    ASSERT(!r->finished);
    r->holds++;
}

void http_req_unhold(struct http_req *r)
{
    ASSERT(r->holds > 0);
    r->holds--;
    req_finish(r);
    struct conn *c = r->conn;
    if (c && !c->closed && !c->busy && c->parked)
        conn_process(c); /* start the request that waited for this one, and read on */
}

/* Move answered requests from the head of the FIFO to the output buffer, in order. */
static void flush_ready(struct conn *c)
{
    while (c->fifo_head) {
        struct http_req *r = c->fifo_head;
        if (!r->responded) {
            /* an open stream that became the head: what it wrote meanwhile goes out now */
            if (r->stream_state == STREAM_OPEN && r->resp.len) {
                sbuf_append(&c->out, r->resp.data, r->resp.len);
                sbuf_reset(&r->resp);
            }
            break;
        }
        c->fifo_head = r->next;
        if (!c->fifo_head)
            c->fifo_tail = NULL;
        c->fifo_len--;
        if (r->resp.len) {
            sbuf_append(&c->out, r->resp.data, r->resp.len);
            sbuf_reset(&r->resp);
        }
        if (r->close_after) {
            c->close_when_flushed = true;
            c->state = CONN_CLOSING;
        }
        if (r->stream_state == STREAM_ENDED) {
            /* its close function runs once these bytes are written (conn_write) */
            r->ended_next = c->ended;
            c->ended = r;
        }
        req_release(r);
        if (c->close_when_flushed)
            break;
    }
}

void http_respond(struct http_req *r, int status, const char *ctype, const char *extra,
                  const void *body, size_t len)
{
    ASSERT(!r->responded);
    ASSERT(r->stream_state == STREAM_NONE); /* a stream is answered by http_stream_end */
    r->responded = true;
    http_req_timer_stop(r);
    struct conn *c = r->conn;
    if (!c) {
        /* orphan: nobody to send to; the server's reference is dropped here */
        req_release(r);
        return;
    }
    if (c->fifo_head == r)
        format_response(c->w, &c->out, r, status, ctype, extra, body, len);
    else
        format_response(c->w, &r->resp, r, status, ctype, extra, body, len);
    req_finish(r); /* before flush_ready, which may drop the server's reference */
    flush_ready(c);
    if (!c->busy)
        conn_process(c); /* parse what was waiting behind a full pipeline, then write */
}

/* An error response in the seed's shape, generated by the server itself (parse errors, limits). */
static void respond_error(struct http_req *r, int err, const char *extra)
{
    struct sbuf b;
    sbuf_init(&b, 0);
    struct jw jw;
    jw_init(&jw, &b);
    jw_obj_open(&jw);
    jw_kbool(&jw, "ok", false);
    jw_kstr(&jw, "error", err_code_str(err));
    jw_kstr(&jw, "message", err_message(err));
    jw_obj_close(&jw);
    http_respond(r, err_http_status(err), "application/json", extra, b.data, b.len);
    sbuf_free(&b);
}

/* ------------------------------------------------------------------------------------------ */
/* Streaming responses (rule 7)                                                                */

static size_t conn_pending(const struct conn *c) { return c->out.len + c->inflight_out.len; }

size_t http_stream_pending(const struct http_req *r)
{
    const struct conn *c = r->conn;
    if (!c || c->closed || r->stream_state != STREAM_OPEN)
        return 0;
    return conn_pending(c) + r->resp.len;
}

bool http_stream_open(const struct http_req *r)
{
    return r->stream_state == STREAM_OPEN || r->stream_state == STREAM_ENDED;
}

bool http_stream_aborted(const struct http_req *r) { return r->stream_aborted; }

/* Posted: the stream is over. Runs the owner's close function, then drops the references the
 * stream kept: its own, and the server's if it never ended (an aborted stream is answered by
 * nobody else). */
static void stream_closed_cb(struct http_req *r, void *arg)
{
    (void)arg;
    bool never_ended = r->stream_state == STREAM_OPEN;
    r->stream_state = STREAM_OVER;
    r->drain_fn = NULL;
    http_req_fn fn = r->close_fn;
    r->close_fn = NULL;
    if (fn)
        fn(r, r->close_arg);
    if (never_ended && !r->responded) {
        ASSERT(r->conn == NULL); /* only a closed connection ends a stream nobody ended */
        r->responded = true;
        req_release(r); /* the server's reference (conn_close kept it for the answer) */
    }
    req_release(r); /* the stream's own */
}

static void stream_notify(struct http_req *r, bool aborted)
{
    if (r->stream_notified)
        return;
    r->stream_notified = true;
    r->stream_aborted = aborted;
    http_req_post(r, stream_closed_cb, NULL);
}

static void stream_drain_cb(struct http_req *r, void *arg)
{
    (void)arg;
    r->drain_posted = false;
    if (r->stream_state != STREAM_OPEN || !r->drain_fn)
        return;
    if (http_stream_pending(r) > r->drain_low) {
        /* refilled meanwhile: stays armed, conn_write checks again as bytes leave */
        return;
    }
    http_req_fn fn = r->drain_fn;
    r->drain_fn = NULL;
    fn(r, r->drain_arg);
}

static void stream_check_drain(struct conn *c)
{
    struct http_req *s = c->stream;
    if (s && s->drain_fn && !s->drain_posted && http_stream_pending(s) <= s->drain_low) {
        s->drain_posted = true;
        http_req_post(s, stream_drain_cb, NULL);
    }
}

int http_stream_begin(struct http_req *r, int status, const char *ctype, const char *extra)
{
    if (r->is_head || r->responded || r->stream_state != STREAM_NONE)
        return ERR_INVALID;
    r->stream_state = STREAM_OPEN;
    http_req_ref(r); /* the stream's own reference, dropped in stream_closed_cb */
    http_req_timer_stop(r);
    struct conn *c = r->conn;
    if (!c || c->closed) {
        stream_notify(r, true);
        return 0;
    }
    r->stream_chunked = r->head.version_minor >= 1;
    if (!r->stream_chunked)
        r->close_after = true; /* HTTP/1.0: the body ends when the connection does */
    struct sbuf *out = c->fifo_head == r ? &c->out : &r->resp;
    sbuf_append(out, "HTTP/1.1 ", 9);
    sbuf_put_u64(out, (uint64_t)status);
    sbuf_putc(out, ' ');
    sbuf_puts(out, http_status_reason(status));
    sbuf_append(out, "\r\nDate: ", 8);
    sbuf_puts(out, worker_date(c->w));
    if (ctype) {
        sbuf_append(out, "\r\nContent-Type: ", 16);
        sbuf_puts(out, ctype);
    }
    if (r->stream_chunked)
        sbuf_puts(out, "\r\nTransfer-Encoding: chunked");
    sbuf_append(out, "\r\nAccess-Control-Allow-Origin: *\r\n", 34);
    if (r->close_after)
        sbuf_append(out, "Connection: close\r\n", 19);
    if (extra)
        sbuf_puts(out, extra);
    sbuf_append(out, "\r\n", 2);
    c->stream = r;
    if (!sbuf_ok(out)) {
        conn_close(c);
        return 0; /* the close function runs (aborted) */
    }
    if (!c->busy)
        conn_write(c);
    return 0;
}

int http_stream_write(struct http_req *r, const void *p, size_t n)
{
    struct conn *c = r->conn;
    if (r->stream_state != STREAM_OPEN || !c || c->closed)
        return ERR_CLOSED;
    if (n == 0)
        return 0; /* a zero-size chunk would end the body */
    struct sbuf *out = c->fifo_head == r ? &c->out : &r->resp;
    if (r->stream_chunked) {
        char hdr[24];
        int hl = snprintf(hdr, sizeof hdr, "%zx\r\n", n);
        sbuf_append(out, hdr, (size_t)hl);
        sbuf_append(out, p, n);
        sbuf_append(out, "\r\n", 2);
    } else {
        sbuf_append(out, p, n);
    }
    if (!sbuf_ok(out)) {
        conn_close(c); /* a torn chunk cannot be taken back: the stream is aborted */
        return ERR_NOMEM;
    }
    if (!c->busy)
        conn_write(c);
    return 0;
}

void http_stream_on_drain(struct http_req *r, size_t low_water_bytes, http_req_fn fn, void *arg)
{
    if (r->stream_state != STREAM_OPEN)
        return;
    r->drain_fn = fn;
    r->drain_arg = arg;
    r->drain_low = low_water_bytes;
    struct conn *c = r->conn;
    if (fn && c && !c->closed && c->stream == r)
        stream_check_drain(c);
}

void http_stream_on_close(struct http_req *r, http_req_fn fn, void *arg)
{
    r->close_fn = fn;
    r->close_arg = arg;
}

int http_stream_end(struct http_req *r)
{
    struct conn *c = r->conn;
    if (r->stream_state != STREAM_OPEN || !c || c->closed)
        return ERR_CLOSED;
    r->stream_state = STREAM_ENDED;
    r->drain_fn = NULL;
    if (c->stream == r)
        c->stream = NULL;
    if (r->stream_chunked) {
        struct sbuf *out = c->fifo_head == r ? &c->out : &r->resp;
        sbuf_append(out, "0\r\n\r\n", 5);
    }
    r->responded = true;
    req_finish(r);
    flush_ready(c); /* pops r (it joins c->ended) and lets what waited behind it go */
    if (!c->busy)
        conn_process(c); /* start what was parked behind the stream, then write */
    return 0;
}

void http_stream_abort(struct http_req *r)
{
    struct conn *c = r->conn;
    if (!http_stream_open(r) || !c || c->closed)
        return;
    conn_close(c);
}

/* ------------------------------------------------------------------------------------------ */
/* Writing                                                                                     */

static void on_write_done(uv_write_t *wr, int status)
{
    struct conn *c = wr->data;
    c->writing = false;
    sbuf_reset(&c->inflight_out);
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (c->closed)
        return;
    conn_write(c);
    if (!c->closed && !c->busy)
        conn_process(c);
}

static void conn_write(struct conn *c)
{
    if (c->closed)
        return;
    if (c->writing) {
        stream_check_drain(c);
        return;
    }
    /* HTTPS (rule 8): c->out becomes ciphertext here -- handshake records, the data, then
     * close_notify when this is the connection's last output. */
    if (c->tls && http_tls_conn_seal(c->tls, &c->out, c->close_when_flushed) < 0) {
        conn_close(c);
        return;
    }
    if (c->out.len) {
        struct http_server *s = c->w->srv;
        uv_buf_t b = uv_buf_init((char *)c->out.data, (unsigned)c->out.len);
        int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (n == UV_EAGAIN)
            n = 0;
        if (n < 0) {
            conn_close(c);
            return;
        }
        atomic_fetch_add_explicit(&s->bytes_out, (uint64_t)n, memory_order_relaxed);
        if ((size_t)n < c->out.len) {
            /* swap the rest into the in-flight buffer and let libuv finish it */
            sbuf_consume(&c->out, (size_t)n);
            struct sbuf tmp = c->inflight_out;
            c->inflight_out = c->out;
            c->out = tmp;
            sbuf_reset(&c->out);
            atomic_fetch_add_explicit(&s->bytes_out, c->inflight_out.len, memory_order_relaxed);
            uv_buf_t b2 = uv_buf_init((char *)c->inflight_out.data, (unsigned)c->inflight_out.len);
            c->wreq.data = c;
            if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b2, 1, on_write_done) < 0) {
                conn_close(c);
                return;
            }
            c->writing = true;
            stream_check_drain(c);
            return;
        }
        sbuf_reset(&c->out);
        if (c->out.cap > (1u << 20))
            sbuf_free(&c->out);
    }
    /* Everything queued is in the socket: ended streams are complete. */
    while (c->ended) {
        struct http_req *r = c->ended;
        c->ended = r->ended_next;
        r->ended_next = NULL;
        stream_notify(r, false);
    }
    stream_check_drain(c);
    if (c->close_when_flushed)
        conn_close(c);
}

/* ------------------------------------------------------------------------------------------ */
/* Connections                                                                                 */

static void on_conn_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    struct http_server *s = c->w->srv;
    atomic_fetch_sub(&s->conns_open, 1);
    if (c->prev)
        c->prev->next = c->next;
    else
        c->w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->tcp.data = NULL;
    if (c->live_reqs == 0) {
        sbuf_free(&c->in);
        sbuf_free(&c->out);
        sbuf_free(&c->inflight_out);
        xfree(c);
    }
    /* else: the last req_free() frees it */
}

static void conn_close(struct conn *c)
{
    if (c->closed)
        return;
    c->closed = true;
    c->state = CONN_CLOSING;
    clear_deadline(c); /* off the sweep's list: a closed connection has no deadline */
    if (c->parked) {
        /* never started: nobody will answer it, so it is released with the answered ones */
        c->parked->responded = true;
        c->parked = NULL;
    }
    /* Orphan every request still queued: the server's reference on answered ones goes now; the
     * unanswered ones keep theirs until http_respond() discards the answer. */
    /* Streams learn it now (posted): the open one, ended ones still in the FIFO or waiting for
     * their bytes to be written. */
    c->stream = NULL;
    while (c->ended) {
        struct http_req *e = c->ended;
        c->ended = e->ended_next;
        e->ended_next = NULL;
        stream_notify(e, true);
    }
    struct http_req *r = c->fifo_head;
    while (r) {
        struct http_req *next = r->next;
        bool answered = r->responded;
        if (r->stream_state == STREAM_OPEN || r->stream_state == STREAM_ENDED)
            stream_notify(r, true);
        r->next = NULL;
        c->live_reqs--;
        r->conn = NULL;
        if (answered)
            req_release(r);
        r = next;
    }
    c->fifo_head = c->fifo_tail = NULL;
    c->fifo_len = 0;
    if (c->cur) {
        struct http_req *cur = c->cur;
        c->cur = NULL;
        c->live_reqs--;
        cur->conn = NULL;
        req_release(cur);
    }
    http_tls_conn_free(c->tls); /* nothing reads or writes after uv_close */
    c->tls = NULL;
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

/* A connection is on its worker's deadline list exactly while it has a deadline, so the sweep
 * costs nothing for connections without one (streams, parked pipelines): 10,000 idle
 * subscribers cost the 250 ms sweep nothing (docs/BENCHMARKS.md, issue 14). */
static void set_deadline(struct conn *c, uint64_t ms, bool idle)
{
    struct worker *w = c->w;
    c->deadline_ns = ms ? clock_mono_ns() + ms * 1000000ull : 0;
    c->deadline_is_idle = idle;
    if (c->deadline_ns && !c->on_dl) {
        c->on_dl = true;
        c->dl_prev = NULL;
        c->dl_next = w->dl_conns;
        if (w->dl_conns)
            w->dl_conns->dl_prev = c;
        w->dl_conns = c;
    } else if (!c->deadline_ns && c->on_dl) {
        c->on_dl = false;
        if (c->dl_prev)
            c->dl_prev->dl_next = c->dl_next;
        else
            w->dl_conns = c->dl_next;
        if (c->dl_next)
            c->dl_next->dl_prev = c->dl_prev;
        c->dl_prev = c->dl_next = NULL;
    }
}

static void clear_deadline(struct conn *c) { set_deadline(c, 0, false); }

static void fifo_push(struct conn *c, struct http_req *r)
{
    r->next = NULL;
    if (c->fifo_tail)
        c->fifo_tail->next = r;
    else
        c->fifo_head = r;
    c->fifo_tail = r;
    c->fifo_len++;
}

/* Queue an error for a request that could not be parsed; the connection closes after it. */
static void fail_request(struct conn *c, struct http_req *r, int err)
{
    struct http_server *s = c->w->srv;
    atomic_fetch_add_explicit(&s->parse_errors, 1, memory_order_relaxed);
    if (!r) {
        r = req_new(c);
        if (!r) {
            conn_close(c);
            return;
        }
    }
    r->close_after = true;
    if (c->cur == r)
        c->cur = NULL;
    fifo_push(c, r);
    c->state = CONN_CLOSING;
    respond_error(r, err, NULL);
}

static void rebase(struct slice *s, const uint8_t *old, size_t len, const uint8_t *now)
{
    if (s->ptr >= old && s->ptr <= old + len)
        s->ptr = now + (s->ptr - old);
}

/* Hand r to the handler (it may respond inside). */
static void start(struct conn *c, struct http_req *r)
{
    struct http_server *s = c->w->srv;
    r->started = true;
    c->unfinished++;
    if (!r->is_write)
        c->unfinished_reads++;
    r->dispatch_ns = clock_mono_ns();
    s->cfg.handler(s->cfg.handler_ctx, r);
}

/* r is complete (head and body): queue it for its response, then start it now or park it until
 * the requests it must not overtake have finished (rule 6). */
static void dispatch(struct conn *c, struct http_req *r)
{
    struct http_server *s = c->w->srv;
    c->cur = NULL;
    c->state = CONN_HEAD;
    if (!r->head.keep_alive)
        r->close_after = true;
    fifo_push(c, r);
    atomic_fetch_add_explicit(&s->requests, 1, memory_order_relaxed);
    if (r->close_after)
        c->state = CONN_CLOSING; /* read nothing after a "Connection: close" request */
    r->is_write = s->cfg.request_is_write && s->cfg.request_is_write(s->cfg.handler_ctx, &r->head);
    ASSERT(c->parked == NULL);
    if (can_start(c, r))
        start(c, r);
    else
        c->parked = r; /* conn_process stops parsing until it starts */
}

/* Parse and dispatch as many requests as the input and the pipeline limit allow. */
static void conn_process(struct conn *c)
{
    struct http_server *s = c->w->srv;
    const struct http_server_config *cfg = &s->cfg;
    if (c->busy || c->closed)
        return;
    c->busy = true;
    size_t pos = 0;
    while (!c->closed && (c->state != CONN_CLOSING || c->parked)) {
        if (c->parked) {
            /* Nothing after a parked request is parsed: it starts first (rule 6). */
            if (!can_start(c, c->parked))
                break;
            struct http_req *r = c->parked;
            c->parked = NULL;
            start(c, r);
            continue;
        }
        const uint8_t *in = c->in.data + pos;
        size_t avail = c->in.len - pos;
        if (c->state == CONN_HEAD) {
            if (c->fifo_len >= cfg->pipeline_max)
                break;
            if (avail == 0)
                break;
            struct http_request head;
            int rc = http_parse_head(in, avail, &cfg->limits, &head);
            if (rc == 0) {
                if (!c->deadline_ns || c->deadline_is_idle)
                    set_deadline(c, cfg->header_timeout_ms, false);
                break;
            }
            if (rc < 0) {
                fail_request(c, NULL, rc);
                break;
            }
            struct http_req *r = req_new(c);
            if (!r) {
                fail_request(c, NULL, ERR_OVERLOADED);
                break;
            }
            r->recv_ns = clock_mono_ns();
            sbuf_append(&r->raw, in, head.head_len);
            if (!sbuf_ok(&r->raw)) {
                fail_request(c, r, ERR_OVERLOADED);
                break;
            }
            r->head = head;
            /* Re-point every slice from the input buffer into the request's own copy. */
            const uint8_t *now = r->raw.data;
            rebase(&r->head.method, in, head.head_len, now);
            rebase(&r->head.target, in, head.head_len, now);
            rebase(&r->head.path, in, head.head_len, now);
            rebase(&r->head.query, in, head.head_len, now);
            rebase(&r->head.host, in, head.head_len, now);
            rebase(&r->head.authorization, in, head.head_len, now);
            rebase(&r->head.content_type, in, head.head_len, now);
            rebase(&r->head.origin, in, head.head_len, now);
            for (size_t i = 0; i < r->head.header_count; i++) {
                rebase(&r->head.headers[i].name, in, head.head_len, now);
                rebase(&r->head.headers[i].value, in, head.head_len, now);
            }
            r->is_head = slice_eq_cstr(r->head.method, "HEAD");
            pos += head.head_len;
            c->cur = r;
            if (r->head.chunked) {
                http_chunked_init(&r->chunked, 8192);
                c->state = CONN_BODY_CHUNKED;
            } else if (r->head.has_content_length && r->head.content_length > 0) {
                if (r->head.content_length > cfg->body_max_bytes) {
                    fail_request(c, r, ERR_TOO_LARGE);
                    break;
                }
                r->body_left = r->head.content_length;
                c->state = CONN_BODY_CL;
            } else {
                dispatch(c, r);
                continue;
            }
            set_deadline(c, cfg->body_timeout_ms, false);
            /* 100 Continue only when it cannot overtake an earlier pipelined response. */
            if (r->head.expect_continue && avail == head.head_len && r->head.version_minor == 1 &&
                c->fifo_len == 0)
                sbuf_append(&c->out, "HTTP/1.1 100 Continue\r\n\r\n", 25);
            size_t pre = r->body_left < (1u << 20) ? (size_t)r->body_left : (1u << 20);
            if (pre && sbuf_reserve(&r->body, pre) == NULL) {
                fail_request(c, r, ERR_OVERLOADED);
                break;
            }
        } else if (c->state == CONN_BODY_CL) {
            struct http_req *r = c->cur;
            if (avail == 0)
                break;
            size_t take = avail < r->body_left ? avail : (size_t)r->body_left;
            sbuf_append(&r->body, in, take);
            pos += take;
            r->body_left -= take;
            if (r->body_left == 0)
                dispatch(c, r);
        } else if (c->state == CONN_BODY_CHUNKED) {
            struct http_req *r = c->cur;
            size_t used = 0;
            struct slice data = {NULL, 0};
            bool done = false;
            int rc = http_chunked_decode(&r->chunked, in, avail, &used, &data, &done);
            if (rc < 0) {
                fail_request(c, r, rc);
                break;
            }
            pos += used;
            if (data.len) {
                sbuf_append(&r->body, data.ptr, data.len);
                if (!sbuf_ok(&r->body)) {
                    fail_request(c, r, r->body.too_big ? ERR_TOO_LARGE : ERR_OVERLOADED);
                    break;
                }
            }
            if (done) {
                dispatch(c, r);
                continue;
            }
            if (used == 0 && data.len == 0)
                break;
        }
    }
    if (pos)
        sbuf_consume(&c->in, pos);
    c->busy = false;
    if (c->closed)
        return;
    /* Deadline bookkeeping: idle when nothing is half-read and nothing in flight; none while a
     * parked request waits for our own work. */
    if (c->parked) {
        clear_deadline(c);
    } else if (c->state == CONN_HEAD && c->in.len == 0) {
        if (c->fifo_len == 0)
            set_deadline(c, cfg->idle_timeout_ms, true);
        else
            clear_deadline(c);
    }
    /* Backpressure: stop reading when the pipeline is full, a request is parked (what follows
     * it stays in the socket, not in our buffer) or the connection is closing. */
    bool want_read = c->state != CONN_CLOSING && c->fifo_len < cfg->pipeline_max && !c->parked;
    if (want_read && !c->reading) {
        c->reading = true;
        uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, on_read);
    } else if (!want_read && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
    conn_write(c);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct conn *c = h->data;
    *buf = uv_buf_init((char *)c->w->readbuf, READ_CHUNK);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = st->data;
    struct http_server *s = c->w->srv;
    if (nread < 0) {
        conn_close(c);
        return;
    }
    if (nread == 0)
        return;
    atomic_fetch_add_explicit(&s->bytes_in, (uint64_t)nread, memory_order_relaxed);
    if (c->state == CONN_CLOSING)
        return; /* discard input after a close-delimited request or an error */
    if (c->tls) {
        on_read_tls(c, (const uint8_t *)buf->base, (size_t)nread);
        return;
    }
    /* c->in is bounded (sbuf max): a head is at most limits.head_max, bodies move out as they
     * arrive, and reading stops while the pipeline is full, so overflow means abuse. */
    sbuf_append(&c->in, buf->base, (size_t)nread);
    if (!sbuf_ok(&c->in)) {
        conn_close(c);
        return;
    }
    conn_process(c);
}

/* HTTPS read path (rule 8): decrypt into c->in (same bound as plain bytes), then parse. */
static void on_read_tls(struct conn *c, const uint8_t *p, size_t n)
{
    size_t before = c->in.len;
    int rc = http_tls_conn_read(c->tls, p, n, &c->in);
    if (rc < 0) {
        /* garbage, a refused client certificate, close_notify: this connection only. The
         * alert (if any) goes out best-effort, without waiting for the socket. */
        uint8_t alert[256];
        size_t an = c->writing ? 0 : http_tls_conn_take(c->tls, alert, sizeof alert);
        if (an) {
            uv_buf_t b = uv_buf_init((char *)alert, (unsigned)an);
            (void)uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        }
        conn_close(c);
        return;
    }
    if (!sbuf_ok(&c->in)) {
        conn_close(c);
        return;
    }
    if (c->in.len == before) {
        /* handshake progress only: send the reply; the header deadline keeps running */
        conn_write(c);
        return;
    }
    conn_process(c);
}

static void start_reading(struct conn *c)
{
    c->reading = true;
    uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, on_read);
}

static void free_handle_conn(uv_handle_t *h) { xfree(h->data); }

static void on_connection(uv_stream_t *server, int status)
{
    struct worker *w = server->data;
    struct http_server *s = w->srv;
    if (status < 0)
        return;
    struct conn *c = xcalloc(1, sizeof *c);
    if (!c)
        return;
    c->w = w;
    uv_tcp_init(&w->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
        uv_close((uv_handle_t *)&c->tcp, free_handle_conn);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    sbuf_init(&c->in, s->cfg.limits.head_max + 8 * READ_CHUNK);
    sbuf_init(&c->out, 0);
    sbuf_init(&c->inflight_out, 0);
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    uint64_t open = atomic_fetch_add(&s->conns_open, 1) + 1;
    atomic_fetch_add_explicit(&s->conns_total, 1, memory_order_relaxed);
    bool https = server == (uv_stream_t *)&w->listener_tls;
    if (open > s->cfg.max_connections && https) {
        /* no handshake for a connection we refuse: a 503 could not be sent before one */
        atomic_fetch_add_explicit(&s->conns_rejected, 1, memory_order_relaxed);
        conn_close(c);
        return;
    }
    if (https && http_tls_conn_new(s->cfg.tls, &c->tls) < 0) {
        conn_close(c);
        return;
    }
    if (open > s->cfg.max_connections) {
        atomic_fetch_add_explicit(&s->conns_rejected, 1, memory_order_relaxed);
        struct http_req *r = req_new(c);
        if (!r) {
            conn_close(c);
            return;
        }
        r->close_after = true;
        fifo_push(c, r);
        c->state = CONN_CLOSING;
        respond_error(r, ERR_OVERLOADED, "Retry-After: 1\r\n");
        return;
    }
    set_deadline(c, s->cfg.header_timeout_ms, false);
    start_reading(c);
}

/* ------------------------------------------------------------------------------------------ */
/* Worker loop                                                                                 */

/* Move the queued posts of one class into its work batch (worker thread). */
static size_t take_posts(struct worker *w, int cls, bool *stopping_out)
{
    struct post_queue *q = &w->posts[cls], *wk = &w->posts_work[cls];
    pthread_mutex_lock(&w->post_mu);
    size_t n = q->len;
    if (wk->cap < n) {
        struct post_item *p = xrealloc(wk->items, n * sizeof *p);
        ASSERT(p != NULL);
        wk->items = p;
        wk->cap = n;
    }
    if (n)
        memcpy(wk->items, q->items, n * sizeof *q->items);
    q->len = 0;
    if (cls == POST_NORMAL)
        atomic_store_explicit(&w->normal_posted, false, memory_order_relaxed);
    if (stopping_out)
        *stopping_out = w->stopping; /* written under post_mu by http_server_stop */
    pthread_mutex_unlock(&w->post_mu);
    return n;
}

static size_t run_normal_posts(struct worker *w, bool *stopping_out)
{
    size_t n = take_posts(w, POST_NORMAL, stopping_out);
    for (size_t i = 0; i < n; i++) {
        struct post_item *p = &w->posts_work[POST_NORMAL].items[i];
        p->fn(p->req, p->arg);
    }
    return n;
}

/* Run what other threads (and stream notifications) posted; true if anything ran.
 * Normal posts (answers, closes, drains) run first; then the low ones (stream wake-ups), and
 * before each of those any normal post that arrived meanwhile: a fan-out that wakes 1,000
 * subscribers on this worker delays an answer by at most one subscriber's turn, not by all of
 * them. Low posts run in the order posted among themselves; a normal post may overtake a low
 * one, which is why a low post's function holds its own reference on the request. */
static bool run_posts(struct worker *w, bool *stopping_out)
{
    size_t n = run_normal_posts(w, stopping_out);
    size_t nl = take_posts(w, POST_LOW, NULL);
    for (size_t i = 0; i < nl; i++) {
        if (atomic_load_explicit(&w->normal_posted, memory_order_relaxed))
            n += run_normal_posts(w, NULL);
        struct post_item *p = &w->posts_work[POST_LOW].items[i];
        p->fn(p->req, p->arg);
    }
    return n + nl > 0;
}

static void on_async(uv_async_t *a)
{
    struct worker *w = a->data;
    bool stopping = false;
    run_posts(w, &stopping);
    if (stopping) {
        struct conn *c = w->conns;
        while (c) {
            struct conn *next = c->next;
            conn_close(c);
            c = next;
        }
        /* closing connections posts stream close notifications: run them (and what they
         * post) before the async handle goes */
        while (run_posts(w, NULL))
            ;
        if (w->has_plain && !uv_is_closing((uv_handle_t *)&w->listener))
            uv_close((uv_handle_t *)&w->listener, NULL);
        if (w->has_tls && !uv_is_closing((uv_handle_t *)&w->listener_tls))
            uv_close((uv_handle_t *)&w->listener_tls, NULL);
        if (!uv_is_closing((uv_handle_t *)&w->sweep))
            uv_close((uv_handle_t *)&w->sweep, NULL);
        if (!uv_is_closing((uv_handle_t *)&w->async))
            uv_close((uv_handle_t *)&w->async, NULL);
    }
}

static void on_sweep(uv_timer_t *t)
{
    struct worker *w = t->data;
    struct http_server *s = w->srv;
    uint64_t now = clock_mono_ns();
    /* Only connections with a deadline are on this list (set_deadline). Handling one may take
     * others off it (a close), never the next one we hold: a connection's handling only
     * touches itself. */
    struct conn *c = w->dl_conns;
    while (c) {
        struct conn *next = c->dl_next;
        ASSERT(c->on_dl && c->deadline_ns);
        if (!c->closed && now >= c->deadline_ns) {
            if (c->deadline_is_idle) {
                conn_close(c);
            } else {
                atomic_fetch_add_explicit(&s->timeouts, 1, memory_order_relaxed);
                struct http_req *r = c->cur;
                clear_deadline(c);
                fail_request(c, r, ERR_TIMEOUT);
            }
        }
        c = next;
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct http_server *s = w->srv;
    char name[16];
    snprintf(name, sizeof name, "ayder-http%d", w->idx);
    pthread_setname_np(pthread_self(), name); /* shown by top -H, perf, /proc/PID/task */
    if (s->cfg.on_worker_start)
        s->cfg.on_worker_start(s->cfg.handler_ctx, w->idx);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    /* drain close callbacks */
    uv_run(&w->loop, UV_RUN_NOWAIT);
    return NULL;
}

static void walk_close(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static int open_listener(const struct http_server_config *cfg, int port, int *fd_out)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    int family;
    if (inet_pton(AF_INET, cfg->bind_addr, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        sl = sizeof *a4;
        family = AF_INET;
    } else if (inet_pton(AF_INET6, cfg->bind_addr, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        sl = sizeof *a6;
        family = AF_INET6;
    } else {
        return ERR_INVALID;
    }
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return err_from_errno(errno);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, 4096) < 0) {
        int e = errno;
        close(fd);
        LOG_E("http", "bind %s:%d: %s", cfg->bind_addr, port, strerror(e));
        return e == EADDRINUSE ? ERR_CONFLICT : err_from_errno(e);
    }
    *fd_out = fd;
    return 0;
}

static int bound_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
        return 0;
    return ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                         : ((struct sockaddr_in6 *)&ss)->sin6_port);
}

void http_server_config_default(struct http_server_config *c)
{
    memset(c, 0, sizeof *c);
    c->bind_addr = "0.0.0.0";
    c->port = 1109;
    c->tls_port = -1;
    c->workers = 1;
    http_limits_default(&c->limits);
    c->body_max_bytes = 64u << 20;
    c->header_timeout_ms = 10000;
    c->body_timeout_ms = 60000;
    c->idle_timeout_ms = 60000;
    c->max_connections = 10000;
    c->pipeline_max = 256;
    c->request_mem_max = 128u << 20;
}

int http_server_start(const struct http_server_config *cfg, struct http_server **out)
{
    struct http_server *s = xcalloc(1, sizeof *s);
    if (!s)
        return ERR_NOMEM;
    s->cfg = *cfg;
    s->nworkers = cfg->workers < 1 ? 1 : cfg->workers;
    s->workers = xcalloc((size_t)s->nworkers, sizeof *s->workers);
    if (!s->workers) {
        xfree(s);
        return ERR_NOMEM;
    }
    if (cfg->port < 0 && !cfg->tls) {
        xfree(s->workers);
        xfree(s);
        return ERR_INVALID; /* no listener at all */
    }
    /* Every worker gets its own SO_REUSEPORT socket per listener (port 0: the first picks one,
     * the others join it). */
    int port = cfg->port, tls_port = cfg->tls ? cfg->tls_port : -1;
    int rc = 0;
    int i;
    for (i = 0; i < s->nworkers; i++) {
        struct worker *w = &s->workers[i];
        w->srv = s;
        w->idx = i;
        w->listen_fd = w->listen_tls_fd = -1;
        if (port >= 0 && (rc = open_listener(cfg, port, &w->listen_fd)) != 0)
            break;
        if (tls_port >= 0 && (rc = open_listener(cfg, tls_port, &w->listen_tls_fd)) != 0)
            break;
        w->has_plain = port >= 0;
        w->has_tls = tls_port >= 0;
        if (port == 0)
            port = bound_port(w->listen_fd);
        if (tls_port == 0)
            tls_port = bound_port(w->listen_tls_fd);
    }
    if (rc) {
        for (int k = 0; k <= i && k < s->nworkers; k++) {
            if (s->workers[k].listen_fd >= 0)
                close(s->workers[k].listen_fd);
            if (s->workers[k].listen_tls_fd >= 0)
                close(s->workers[k].listen_tls_fd);
        }
        xfree(s->workers);
        xfree(s);
        return rc;
    }
    s->port = port;
    s->tls_port = tls_port;
    for (i = 0; i < s->nworkers; i++) {
        struct worker *w = &s->workers[i];
        uv_loop_init(&w->loop);
        pthread_mutex_init(&w->post_mu, NULL);
        if (w->has_plain) {
            uv_tcp_init(&w->loop, &w->listener);
            w->listener.data = w;
            uv_tcp_open(&w->listener, w->listen_fd);
            uv_listen((uv_stream_t *)&w->listener, 4096, on_connection);
        }
        if (w->has_tls) {
            uv_tcp_init(&w->loop, &w->listener_tls);
            w->listener_tls.data = w;
            uv_tcp_open(&w->listener_tls, w->listen_tls_fd);
            uv_listen((uv_stream_t *)&w->listener_tls, 4096, on_connection);
        }
        uv_async_init(&w->loop, &w->async, on_async);
        w->async.data = w;
        uv_timer_init(&w->loop, &w->sweep);
        w->sweep.data = w;
        uv_timer_start(&w->sweep, on_sweep, 250, 250);
        pthread_create(&w->thread, NULL, worker_main, w);
    }
    *out = s;
    return 0;
}

int http_server_port(const struct http_server *s) { return s->port; }
int http_server_tls_port(const struct http_server *s) { return s->tls_port; }

void http_server_stop(struct http_server *s)
{
    for (int i = 0; i < s->nworkers; i++) {
        struct worker *w = &s->workers[i];
        pthread_mutex_lock(&w->post_mu);
        w->stopping = true;
        pthread_mutex_unlock(&w->post_mu);
        uv_async_send(&w->async);
    }
    for (int i = 0; i < s->nworkers; i++) {
        struct worker *w = &s->workers[i];
        /* The loop exits once the listener and connections are closed; the async and timer
         * handles keep it alive, so close them from the loop thread via uv_stop semantics. */
        pthread_join(w->thread, NULL);
        /* anything posted after the loop's last turn (the thread is gone: run it here) */
        while (run_posts(w, NULL))
            ;
    }
    for (int i = 0; i < s->nworkers; i++) {
        struct worker *w = &s->workers[i];
        uv_walk(&w->loop, walk_close, NULL);
        uv_run(&w->loop, UV_RUN_DEFAULT);
        uv_loop_close(&w->loop);
        while (w->free_reqs) {
            struct http_req *r = w->free_reqs;
            w->free_reqs = r->next;
            sbuf_free(&r->raw);
            sbuf_free(&r->body);
            sbuf_free(&r->resp);
            arena_free(&r->arena);
            xfree(r);
        }
        for (int k = 0; k < POST_CLASSES; k++) {
            xfree(w->posts[k].items);
            xfree(w->posts_work[k].items);
        }
        pthread_mutex_destroy(&w->post_mu);
    }
    xfree(s->workers);
    xfree(s);
}

void http_server_stats(const struct http_server *s, struct http_server_stats *st)
{
    st->connections_open = atomic_load(&s->conns_open);
    st->connections_total = atomic_load(&s->conns_total);
    st->connections_rejected = atomic_load(&s->conns_rejected);
    st->bytes_in = atomic_load(&s->bytes_in);
    st->bytes_out = atomic_load(&s->bytes_out);
    st->requests = atomic_load(&s->requests);
    st->parse_errors = atomic_load(&s->parse_errors);
    st->timeouts = atomic_load(&s->timeouts);
    st->tls = s->cfg.tls != NULL;
    st->tls_handshakes = st->tls_handshake_failures = st->tls_reloads = 0;
    if (s->cfg.tls) {
        struct http_tls_stats ts;
        http_tls_stats(s->cfg.tls, &ts);
        st->tls_handshakes = ts.handshakes;
        st->tls_handshake_failures = ts.handshake_failures;
        st->tls_reloads = ts.reloads;
    }
}
