/* test_http_stream.c -- the server's streaming-response primitive (server.h "streaming
 * responses") over real loopback sockets: chunked framing, pipelined requests waiting behind a
 * stream (order of effect), HTTP/1.0 close-delimited bodies, the close notification when the
 * client goes away, and drain-driven backpressure.
 *
 * The handler runs on the server's worker thread and acts on the path; the test thread speaks
 * raw HTTP with blocking sockets and waits on atomics with a deadline (never a bare sleep).
 */
#include "harness.h"

#include "base/clock.h"
#include "base/err.h"
#include "http/server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define DEADLINE_MS 5000

static _Atomic int closes, aborts, drains;
static _Atomic uint64_t big_written;

#define BIG_TOTAL (32u << 20) /* well above what loopback socket buffers hold */
#define BIG_PIECE 65536
#define BIG_HIGH (256u << 10)

struct big {
    uint64_t sent;
    char piece[BIG_PIECE];
};

static void on_close(struct http_req *r, void *arg)
{
    (void)arg;
    if (http_stream_aborted(r))
        atomic_fetch_add(&aborts, 1);
    atomic_fetch_add(&closes, 1);
}

static void tick(struct http_req *r, void *arg)
{
    (void)arg;
    http_stream_write(r, "tock\n", 5);
    http_stream_end(r);
}

/* Write pieces while the connection's queue is under BIG_HIGH; wait for drain otherwise. */
static void big_more(struct http_req *r, void *arg)
{
    struct big *b = arg;
    atomic_fetch_add(&drains, 1);
    while (b->sent < BIG_TOTAL && http_stream_pending(r) < BIG_HIGH) {
        CHECK(http_stream_write(r, b->piece, BIG_PIECE) == 0);
        b->sent += BIG_PIECE;
        atomic_store(&big_written, b->sent);
    }
    /* the bound: never more than one piece above the mark is queued by us */
    CHECK(http_stream_pending(r) < BIG_HIGH + BIG_PIECE + 64);
    if (b->sent == BIG_TOTAL)
        http_stream_end(r);
    else
        http_stream_on_drain(r, BIG_HIGH / 4, big_more, b);
}

/* Post priorities (http_req_post_low): each post appends its mark; the fifth answers. */
struct prio {
    char order[8];
    int n;
};

static void prio_mark(struct http_req *r, void *arg);

static void prio_run(struct http_req *r, char mark)
{
    struct prio *p = http_req_user(r);
    p->order[p->n++] = mark;
    if (mark == '1') /* posted while the low batch runs: must overtake lows 2 and 3 */
        http_req_post(r, prio_mark, (void *)(uintptr_t)'M');
    if (p->n == 5)
        http_respond(r, 200, "text/plain", NULL, p->order, 5);
    http_req_unref(r);
}

static void prio_mark(struct http_req *r, void *arg) { prio_run(r, (char)(uintptr_t)arg); }

static void handler(void *ctx, struct http_req *r)
{
    (void)ctx;
    const struct http_request *h = http_req_head(r);
    if (slice_eq_cstr(h->path, "/prio")) {
        struct prio *p = arena_alloc(http_req_arena(r), sizeof *p);
        REQUIRE(p != NULL);
        memset(p, 0, sizeof *p);
        http_req_set_user(r, p);
        for (int i = 0; i < 4; i++) /* one reference per post, and one for 'M' */
            http_req_ref(r);
        http_req_ref(r);
        http_req_post_low(r, prio_mark, (void *)(uintptr_t)'1');
        http_req_post_low(r, prio_mark, (void *)(uintptr_t)'2');
        http_req_post_low(r, prio_mark, (void *)(uintptr_t)'3');
        http_req_post(r, prio_mark, (void *)(uintptr_t)'N'); /* posted last, runs first */
    } else if (slice_eq_cstr(h->path, "/stream")) {
        /* two chunks, the second from a timer after the handler returned */
        CHECK(http_stream_begin(r, 200, "text/plain", "X-Test: 1\r\n") == 0);
        http_stream_on_close(r, on_close, NULL);
        CHECK(http_stream_write(r, "tick\n", 5) == 0);
        CHECK(http_stream_open(r));
        http_req_timer_start(r, 50, tick, NULL);
    } else if (slice_eq_cstr(h->path, "/forever")) {
        CHECK(http_stream_begin(r, 200, "text/plain", NULL) == 0);
        http_stream_on_close(r, on_close, NULL);
        http_stream_write(r, "x\n", 2);
    } else if (slice_eq_cstr(h->path, "/big")) {
        struct big *b = arena_alloc(http_req_arena(r), sizeof *b);
        REQUIRE(b != NULL);
        b->sent = 0;
        memset(b->piece, 'b', sizeof b->piece);
        CHECK(http_stream_begin(r, 200, "application/octet-stream", NULL) == 0);
        http_stream_on_close(r, on_close, NULL);
        big_more(r, b);
    } else if (http_req_is_head_method(r)) {
        CHECK(http_stream_begin(r, 200, "text/plain", NULL) == ERR_INVALID);
        http_respond(r, 200, "text/plain", NULL, "", 0);
    } else {
        http_respond(r, 200, "text/plain", NULL, "plain\n", 6);
    }
}

static struct http_server *start_server(void)
{
    struct http_server_config c;
    http_server_config_default(&c);
    c.bind_addr = "127.0.0.1";
    c.port = 0;
    c.workers = 1;
    c.idle_timeout_ms = 300; /* must not cut an open stream */
    c.handler = handler;
    struct http_server *s = NULL;
    if (http_server_start(&c, &s))
        return NULL;
    atomic_store(&closes, 0);
    atomic_store(&aborts, 0);
    atomic_store(&drains, 0);
    atomic_store(&big_written, 0);
    return s;
}

static int dial_rcvbuf(int port, int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (rcvbuf) /* before connect, so the window is small from the start */
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static int dial(int port) { return dial_rcvbuf(port, 0); }

static void send_all(int fd, const char *s)
{
    size_t n = strlen(s);
    while (n) {
        ssize_t w = write(fd, s, n);
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

/* Read until `needle` has been seen (or EOF / timeout); returns what was read (malloc'd). */
static char *read_until(int fd, const char *needle, size_t *len_out)
{
    size_t cap = 1 << 16, len = 0;
    char *b = malloc(cap + 1);
    for (;;) {
        if (len == cap) {
            cap *= 2;
            b = realloc(b, cap + 1);
        }
        ssize_t n = read(fd, b + len, cap - len);
        if (n <= 0)
            break;
        size_t from = len > strlen(needle ? needle : "") ? len - strlen(needle ? needle : "") : 0;
        len += (size_t)n;
        b[len] = 0;
        if (needle && strstr(b + from, needle)) /* only the new tail: linear in what is read */
            break;
    }
    b[len] = 0;
    if (len_out)
        *len_out = len;
    return b;
}

static bool wait_atomic(_Atomic int *v, int want)
{
    uint64_t end = clock_mono_ms() + DEADLINE_MS;
    while (atomic_load(v) < want) {
        if (clock_mono_ms() > end)
            return false;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return true;
}

TEST(http_stream_chunked_then_pipelined_request_waits)
{
    struct http_server *s = start_server();
    REQUIRE(s != NULL);
    int fd = dial(http_server_port(s));
    REQUIRE(fd >= 0);
    /* the stream, then a plain request pipelined behind it: answered only after the stream */
    send_all(fd, "GET /stream HTTP/1.1\r\nHost: x\r\n\r\nGET /plain HTTP/1.1\r\nHost: x\r\n\r\n");
    char *got = read_until(fd, "plain\n", NULL);
    CHECK(strstr(got, "HTTP/1.1 200 OK\r\n") == got);
    CHECK(strstr(got, "Transfer-Encoding: chunked\r\n") != NULL);
    CHECK(strstr(got, "X-Test: 1\r\n") != NULL);
    CHECK(strstr(got, "Content-Length") == NULL || strstr(got, "Content-Length") > strstr(got, "0\r\n\r\n"));
    const char *body = strstr(got, "\r\n\r\n");
    REQUIRE(body != NULL);
    body += 4;
    /* exact chunked framing, terminator, then the pipelined answer */
    CHECK(strncmp(body, "5\r\ntick\n\r\n5\r\ntock\n\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n", 41) == 0);
    CHECK(strstr(body, "plain\n") != NULL);
    CHECK(wait_atomic(&closes, 1));
    CHECK_EQ_INT(atomic_load(&aborts), 0);
    free(got);
    close(fd);
    http_server_stop(s);
}

TEST(http_stream_http10_close_delimited)
{
    struct http_server *s = start_server();
    REQUIRE(s != NULL);
    int fd = dial(http_server_port(s));
    REQUIRE(fd >= 0);
    send_all(fd, "GET /stream HTTP/1.0\r\n\r\n");
    char *got = read_until(fd, NULL, NULL); /* to EOF: the server closes after the body */
    CHECK(strstr(got, "Transfer-Encoding") == NULL);
    CHECK(strstr(got, "Connection: close\r\n") != NULL);
    const char *body = strstr(got, "\r\n\r\n");
    REQUIRE(body != NULL);
    CHECK(strcmp(body + 4, "tick\ntock\n") == 0);
    CHECK(wait_atomic(&closes, 1));
    CHECK_EQ_INT(atomic_load(&aborts), 0);
    free(got);
    close(fd);
    http_server_stop(s);
}

TEST(http_stream_client_gone_notifies_and_idle_deadline_spares_it)
{
    struct http_server *s = start_server();
    REQUIRE(s != NULL);
    int fd = dial(http_server_port(s));
    REQUIRE(fd >= 0);
    send_all(fd, "GET /forever HTTP/1.1\r\nHost: x\r\n\r\n");
    char *got = read_until(fd, "x\n", NULL);
    CHECK(strstr(got, "2\r\nx\n\r\n") != NULL);
    free(got);
    /* well past the idle timeout (300 ms): the stream is still open */
    struct timespec ts = {0, 800 * 1000000};
    nanosleep(&ts, NULL);
    CHECK_EQ_INT(atomic_load(&closes), 0);
    close(fd); /* the client goes away: the owner hears it (aborted) without writing */
    CHECK(wait_atomic(&closes, 1));
    CHECK_EQ_INT(atomic_load(&aborts), 1);
    http_server_stop(s);
}

TEST(http_stream_server_stop_notifies_open_streams)
{
    struct http_server *s = start_server();
    REQUIRE(s != NULL);
    int fd = dial(http_server_port(s));
    REQUIRE(fd >= 0);
    send_all(fd, "GET /forever HTTP/1.1\r\nHost: x\r\n\r\n");
    free(read_until(fd, "x\n", NULL));
    http_server_stop(s); /* returns only after the close function ran (no leak under ASan) */
    CHECK_EQ_INT(atomic_load(&closes), 1);
    CHECK_EQ_INT(atomic_load(&aborts), 1);
    close(fd);
}

TEST(http_stream_drain_backpressure_bounded)
{
    struct http_server *s = start_server();
    REQUIRE(s != NULL);
    int fd = dial_rcvbuf(http_server_port(s), 4096);
    REQUIRE(fd >= 0);
    send_all(fd, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n");
    /* do not read for a while: the producer must stop at its mark, not run to the end */
    struct timespec ts = {0, 300 * 1000000};
    nanosleep(&ts, NULL);
    CHECK(atomic_load(&big_written) < BIG_TOTAL);
    size_t len = 0;
    char *got = read_until(fd, "\r\n0\r\n\r\n", &len);
    CHECK(len > BIG_TOTAL);
    CHECK(strstr(got, "\r\n0\r\n\r\n") != NULL);
    CHECK(atomic_load(&big_written) == BIG_TOTAL);
    CHECK(atomic_load(&drains) > 1);
    CHECK(wait_atomic(&closes, 1));
    CHECK_EQ_INT(atomic_load(&aborts), 0);
    free(got);
    close(fd);
    http_server_stop(s);
}

TEST(http_stream_head_refused)
{
    struct http_server *s = start_server();
    REQUIRE(s != NULL);
    int fd = dial(http_server_port(s));
    REQUIRE(fd >= 0);
    send_all(fd, "HEAD /x HTTP/1.1\r\nHost: x\r\n\r\n");
    char *got = read_until(fd, "\r\n\r\n", NULL);
    CHECK(strstr(got, "HTTP/1.1 200 OK") == got);
    free(got);
    close(fd);
    http_server_stop(s);
}

TEST(http_post_low_runs_after_normal_posts)
{
    struct http_server *s = start_server();
    REQUIRE(s != NULL);
    int fd = dial(http_server_port(s));
    REQUIRE(fd >= 0);
    send_all(fd, "GET /prio HTTP/1.1\r\nHost: x\r\n\r\n");
    char *got = read_until(fd, "\r\n\r\n", NULL);
    size_t more = 0;
    char *body = strstr(got, "\r\n\r\n");
    REQUIRE(body != NULL);
    if (strlen(body + 4) < 5) {
        char *rest = read_until(fd, "3", &more);
        size_t l = strlen(got);
        got = realloc(got, l + more + 1);
        memcpy(got + l, rest, more + 1);
        free(rest);
        body = strstr(got, "\r\n\r\n");
    }
    /* the normal post first though posted last; lows in order; a normal post made while the
     * lows run overtakes the lows still waiting */
    CHECK(strcmp(body + 4, "N1M23") == 0);
    free(got);
    close(fd);
    http_server_stop(s);
}
