/* sub_load.c -- load client for push delivery (issue 14, docs/BENCHMARKS.md "Subscriptions").
 *
 * One process, one epoll loop over N subscriber sockets (loopback only), plus producer threads
 * with blocking sockets. Self-contained (libc + pthreads) so it builds without the server's
 * library. Driven by bench/subscribe; prints one JSON object on stdout.
 *
 *   sub_load idle    --port P --topic T --subs N --secs S [--heartbeat-ms H]
 *       open N SSE subscriptions (from=latest), wait until every one has its "subscribed"
 *       event, print {"phase":"ready"} on stderr-free stdout line, hold them S seconds while
 *       reading, then report events/heartbeats seen.
 *   sub_load latency --port P --topic T --subs N --rate R --secs S [--producers K]
 *       N SSE subscriptions; K producer connections send single-record produces on a fixed
 *       schedule (open loop: record k is due at t0 + k/R, whatever happened before); each
 *       record's value carries its send time. For every (subscriber, record) pair:
 *       receipt - ack (the produce's answer arrived) and receipt - send.
 *   sub_load fanout  --port P --topic T --subs N --secs S [--batch B] [--producers K]
 *       N NDJSON subscriptions of one partition; K producers append B x 64-byte records per
 *       produce-ndjson request, closed loop; counts record events received per second.
 *   sub_load nats-fanout --port P --subs N --secs S [--window W]
 *       NATS JetStream equivalent: stream ORDERS (file storage), N push consumers (ack none,
 *       deliver new) each delivering to its own connection; one publisher connection with W
 *       publishes awaiting their PubAcks in flight; counts messages received per second.
 *
 * Every loop is bounded by --secs (plus a setup bound of 120 s).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SETUP_MAX_S 120
#define WAVE 500 /* connections opened before waiting for their "subscribed" events */

enum mode { M_IDLE, M_LATENCY, M_FANOUT, M_NATS };

static struct {
    enum mode mode;
    int port;
    const char *topic;
    int subs, secs, rate, producers, batch, window, heartbeat_ms, warm;
} opt = {.topic = "subbench", .subs = 100, .secs = 10, .rate = 1000, .producers = 4,
         .batch = 1000, .window = 256, .heartbeat_ms = 0, .warm = 2};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *m)
{
    fprintf(stderr, "sub_load: %s: %s\n", m, strerror(errno));
    exit(1);
}

static int dial(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        die("socket");
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        die("connect");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            die("write");
        p += k;
        n -= (size_t)k;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Subscriber connections: a line reader with a "skip n bytes" state (NATS payloads)           */

struct conn {
    int fd, idx;
    bool ready, ended;
    size_t skip;
    char *carry;
    size_t carry_len, carry_cap;
    uint64_t events, heartbeats, bytes;
};

static struct conn *conns;
static int nready, nended, nerrors;
static uint64_t t0_ns;
/* latency: recv_us[(offset - base) * subs + idx] = receipt in us since t0, +1 (0 = missing) */
static uint32_t *recv_us;
static uint64_t lat_base, lat_max_records;
static _Atomic uint64_t *ack_ns, *send_ns_by_off;
static uint64_t nats_pub_acks;

static void carry_add(struct conn *c, const char *p, size_t n)
{
    if (c->carry_len + n > c->carry_cap) {
        size_t cap = c->carry_cap ? c->carry_cap * 2 : 4096;
        while (cap < c->carry_len + n)
            cap *= 2;
        c->carry = realloc(c->carry, cap);
        if (!c->carry)
            die("realloc");
        c->carry_cap = cap;
    }
    memcpy(c->carry + c->carry_len, p, n);
    c->carry_len += n;
}

static bool starts(const char *p, size_t n, const char *lit)
{
    size_t l = strlen(lit);
    return n >= l && memcmp(p, lit, l) == 0;
}

static uint64_t parse_u64_after(const char *p, size_t n, const char *key)
{
    const char *k = memmem(p, n, key, strlen(key));
    if (!k)
        return UINT64_MAX;
    k += strlen(key);
    uint64_t v = 0;
    while (k < p + n && *k >= '0' && *k <= '9')
        v = v * 10 + (uint64_t)(*k++ - '0');
    return v;
}

static void http_line(struct conn *c, const char *p, size_t n)
{
    if (starts(p, n, "data: {\"topic\"") || starts(p, n, "{\"type\":\"record\"")) {
        c->events++;
        if (opt.mode == M_LATENCY) {
            uint64_t off = parse_u64_after(p, n, "\"offset\":");
            if (off != UINT64_MAX && off >= lat_base && off - lat_base < lat_max_records) {
                uint64_t us = (now_ns() - t0_ns) / 1000 + 1;
                recv_us[(off - lat_base) * (uint64_t)opt.subs + (uint64_t)c->idx] = (uint32_t)us;
            }
        }
    } else if (starts(p, n, ": heartbeat") || starts(p, n, "{\"type\":\"heartbeat\"")) {
        c->heartbeats++;
    } else if (starts(p, n, "event: subscribed") || starts(p, n, "{\"type\":\"subscribed\"")) {
        if (!c->ready) {
            c->ready = true;
            nready++;
        }
    } else if (starts(p, n, "event: end") || starts(p, n, "{\"type\":\"end\"")) {
        if (!c->ended) {
            c->ended = true;
            nended++;
            fprintf(stderr, "sub_load: subscriber %d ended: %.*s\n", c->idx, (int)(n > 300 ? 300 : n), p);
        }
    } else if (starts(p, n, "HTTP/1.") && !starts(p, n, "HTTP/1.1 200")) {
        nerrors++;
        fprintf(stderr, "sub_load: subscriber %d: %.*s", c->idx, (int)n, p);
    }
}

static void nats_line(struct conn *c, const char *p, size_t n)
{
    if (starts(p, n, "MSG ")) {
        /* MSG <subject> <sid> [reply] <#bytes>: the size is the last field */
        size_t e = n;
        while (e && (p[e - 1] == '\r' || p[e - 1] == '\n'))
            e--;
        size_t b = e;
        while (b && p[b - 1] >= '0' && p[b - 1] <= '9')
            b--;
        uint64_t sz = 0;
        for (size_t i = b; i < e; i++)
            sz = sz * 10 + (uint64_t)(p[i] - '0');
        c->skip = sz + 2;
        c->events++;
    } else if (starts(p, n, "PING")) {
        write_all(c->fd, "PONG\r\n", 6);
    } else if (starts(p, n, "PONG")) {
        if (!c->ready) {
            c->ready = true;
            nready++;
        }
    } else if (starts(p, n, "-ERR")) {
        nerrors++;
        fprintf(stderr, "sub_load: nats conn %d: %.*s", c->idx, (int)n, p);
    }
}

static void feed(struct conn *c, const char *p, size_t n)
{
    c->bytes += n;
    while (n) {
        if (c->skip) {
            size_t k = c->skip < n ? c->skip : n;
            c->skip -= k;
            p += k;
            n -= k;
            continue;
        }
        const char *nl = memchr(p, '\n', n);
        if (!nl) {
            carry_add(c, p, n);
            return;
        }
        size_t l = (size_t)(nl - p) + 1;
        const char *line = p;
        size_t ll = l;
        if (c->carry_len) {
            carry_add(c, p, l);
            line = c->carry;
            ll = c->carry_len;
        }
        if (opt.mode == M_NATS)
            nats_line(c, line, ll);
        else
            http_line(c, line, ll);
        c->carry_len = 0;
        p += l;
        n -= l;
    }
}

static int ep;
static char rbuf[1 << 18];

/* Serve readable subscriber sockets for at most timeout_ms. */
static void poll_once(int timeout_ms)
{
    struct epoll_event evs[256];
    int k = epoll_wait(ep, evs, 256, timeout_ms);
    for (int i = 0; i < k; i++) {
        struct conn *c = &conns[evs[i].data.u32];
        ssize_t r = read(c->fd, rbuf, sizeof rbuf);
        if (r > 0) {
            feed(c, rbuf, (size_t)r);
        } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
            if (!c->ended) {
                c->ended = true;
                nended++;
            }
            epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        }
    }
}

static void watch(struct conn *c)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)c->idx};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
        die("epoll_ctl");
}

static void wait_ready(int want)
{
    uint64_t end = now_ns() + (uint64_t)SETUP_MAX_S * 1000000000ull;
    while (nready < want) {
        if (now_ns() > end || nerrors) {
            fprintf(stderr, "sub_load: only %d of %d subscriptions ready (%d errors)\n", nready,
                    want, nerrors);
            exit(1);
        }
        poll_once(100);
    }
}

static void open_http_subs(void)
{
    for (int i = 0; i < opt.subs; i++) {
        struct conn *c = &conns[i];
        c->idx = i;
        c->fd = dial(opt.port);
        char req[512];
        const char *fmt = opt.mode == M_FANOUT ? "ndjson" : "sse";
        char hb[48] = "";
        if (opt.heartbeat_ms)
            snprintf(hb, sizeof hb, "&heartbeat_ms=%d", opt.heartbeat_ms);
        int l = snprintf(req, sizeof req,
                         "GET /broker/subscribe/%s/bench?stream=%s&partitions=0&from=latest%s "
                         "HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer dev\r\n\r\n",
                         opt.topic, fmt, hb);
        write_all(c->fd, req, (size_t)l);
        watch(c);
        if ((i + 1) % WAVE == 0)
            wait_ready(i + 1);
    }
    wait_ready(opt.subs);
}

/* ------------------------------------------------------------------------------------------ */
/* Blocking HTTP round trip (producers): returns the body length, body in buf                   */

static size_t http_rt(int fd, const char *req, size_t n, char *buf, size_t cap)
{
    write_all(fd, req, n);
    size_t have = 0;
    for (;;) {
        ssize_t r = read(fd, buf + have, cap - have - 1);
        if (r <= 0)
            die("read (producer)");
        have += (size_t)r;
        buf[have] = 0;
        char *e = strstr(buf, "\r\n\r\n");
        if (!e)
            continue;
        char *cl = strcasestr(buf, "content-length:");
        if (!cl || cl > e) {
            errno = EPROTO;
            die("producer answer without content-length");
        }
        size_t len = strtoul(cl + 15, NULL, 10);
        size_t hl = (size_t)(e + 4 - buf);
        if (have < hl + len)
            continue;
        if (strncmp(buf, "HTTP/1.1 200", 12) != 0) {
            fprintf(stderr, "sub_load: producer: %.*s\n", (int)have, buf);
            exit(1);
        }
        memmove(buf, buf + hl, len);
        buf[len] = 0;
        return len;
    }
}

static _Atomic bool stop;
static _Atomic uint64_t produced, produce_late_max_us, produce_late_over_1ms;

/* Open loop: the sender writes record k at t0 + k/rate on its connection, pipelined, never
 * waiting for an answer; the reader takes the answers in order (HTTP/1.1 answers pipelined
 * requests in order) and stamps each record's ack. */
struct lat_conn {
    int fd, id;
    uint64_t *sent_at; /* per request sequence on this connection */
    size_t cap;
    _Atomic uint64_t nsent, nacked;
    _Atomic bool sender_done;
};

static void *latency_sender(void *arg)
{
    struct lat_conn *lc = arg;
    char req[512];
    uint64_t period_ns = 1000000000ull / (uint64_t)opt.rate;
    for (uint64_t k = (uint64_t)lc->id;; k += (uint64_t)opt.producers) {
        uint64_t due = t0_ns + k * period_ns;
        uint64_t seq = atomic_load(&lc->nsent);
        if (atomic_load(&stop) || k >= lat_max_records || seq >= lc->cap)
            break;
        uint64_t t = now_ns();
        if (t < due) {
            struct timespec ts = {(time_t)(due / 1000000000ull), (long)(due % 1000000000ull)};
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
        }
        uint64_t sent = now_ns();
        uint64_t late = sent > due ? (sent - due) / 1000 : 0;
        if (late > 1000)
            atomic_fetch_add(&produce_late_over_1ms, 1);
        uint64_t m = atomic_load(&produce_late_max_us);
        while (late > m && !atomic_compare_exchange_weak(&produce_late_max_us, &m, late))
            ;
        char body[64];
        int bl = snprintf(body, sizeof body, "{\"send_ns\":%llu}", (unsigned long long)sent);
        int l = snprintf(req, sizeof req,
                         "POST /broker/topics/%s/produce?partition=0 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         "Authorization: Bearer dev\r\nContent-Length: %d\r\n\r\n%s",
                         opt.topic, bl, body);
        lc->sent_at[seq] = sent;
        atomic_store(&lc->nsent, seq + 1);
        write_all(lc->fd, req, (size_t)l);
    }
    atomic_store(&lc->sender_done, true);
    return NULL;
}

static void *latency_reader(void *arg)
{
    struct lat_conn *lc = arg;
    static __thread char buf[1 << 16];
    size_t have = 0;
    for (;;) {
        if (atomic_load(&lc->sender_done) && atomic_load(&lc->nacked) >= atomic_load(&lc->nsent))
            break;
        /* one whole answer at the front of buf? */
        buf[have] = 0;
        char *e = have ? strstr(buf, "\r\n\r\n") : NULL;
        if (e) {
            char *cl = strcasestr(buf, "content-length:");
            size_t hl = (size_t)(e + 4 - buf);
            size_t len = cl && cl < e ? strtoul(cl + 15, NULL, 10) : 0;
            if (have >= hl + len) {
                uint64_t acked = now_ns();
                if (strncmp(buf, "HTTP/1.1 200", 12) != 0) {
                    fprintf(stderr, "sub_load: producer: %.*s\n", (int)(hl + len), buf);
                    exit(1);
                }
                uint64_t seq = atomic_load(&lc->nacked);
                uint64_t off = parse_u64_after(buf + hl, len, "\"offset\":");
                if (off != UINT64_MAX && off >= lat_base && off - lat_base < lat_max_records) {
                    atomic_store(&ack_ns[off - lat_base], acked);
                    atomic_store(&send_ns_by_off[off - lat_base], lc->sent_at[seq]);
                }
                atomic_store(&lc->nacked, seq + 1);
                atomic_fetch_add(&produced, 1);
                memmove(buf, buf + hl + len, have - hl - len);
                have -= hl + len;
                continue;
            }
        }
        struct timeval tv = {0, 200000}; /* recheck sender_done at least every 200 ms */
        setsockopt(lc->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        ssize_t r = read(lc->fd, buf + have, sizeof buf - have - 1);
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (r <= 0)
            die("read (producer)");
        have += (size_t)r;
    }
    return NULL;
}

static void *fanout_producer(void *arg)
{
    (void)arg;
    int fd = dial(opt.port);
    size_t blen = (size_t)opt.batch * 65;
    char *body = malloc(blen + 1);
    char *req = malloc(blen + 512);
    static __thread char buf[8192];
    for (int i = 0; i < opt.batch; i++) /* 64 bytes of JSON + \n */
        snprintf(body + (size_t)i * 65, 66, "{\"id\":%010d,\"v\":\"%-40s\"}\n", i, "payload");
    int hl = snprintf(req, 512,
                      "POST /broker/topics/%s/produce-ndjson?partition=0 HTTP/1.1\r\nHost: "
                      "127.0.0.1\r\nAuthorization: Bearer dev\r\nContent-Length: %zu\r\n\r\n",
                      opt.topic, blen);
    memcpy(req + hl, body, blen);
    while (!atomic_load(&stop)) {
        http_rt(fd, req, (size_t)hl + blen, buf, sizeof buf);
        atomic_fetch_add(&produced, (uint64_t)opt.batch);
    }
    close(fd);
    free(body);
    free(req);
    return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* NATS: a minimal client (the text protocol), enough for JetStream API requests                */

static int nats_dial(void)
{
    int fd = dial(opt.port);
    const char *hello = "CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1,"
                        "\"headers\":true,\"no_responders\":true}\r\nPING\r\n";
    write_all(fd, hello, strlen(hello));
    return fd;
}

/* Read until a line starting with `want` (blocking fd); for MSG also read its payload into out. */
static void nats_expect(int fd, const char *want, char *out, size_t cap)
{
    static char buf[1 << 16];
    static size_t have;
    for (;;) {
        char *nl = memchr(buf, '\n', have);
        if (nl) {
            size_t l = (size_t)(nl - buf) + 1;
            bool hit = starts(buf, l, want);
            size_t total = l;
            if (starts(buf, l, "MSG ")) {
                size_t e = l - 2, b = e;
                while (b && buf[b - 1] >= '0' && buf[b - 1] <= '9')
                    b--;
                size_t sz = strtoul(buf + b, NULL, 10);
                while (have < l + sz + 2) {
                    ssize_t r = read(fd, buf + have, sizeof buf - have);
                    if (r <= 0)
                        die("nats read");
                    have += (size_t)r;
                }
                if (hit && out) {
                    size_t k = sz < cap - 1 ? sz : cap - 1;
                    memcpy(out, buf + l, k);
                    out[k] = 0;
                }
                total = l + sz + 2;
            } else if (starts(buf, l, "-ERR")) {
                fprintf(stderr, "sub_load: nats: %.*s", (int)l, buf);
                exit(1);
            } else if (starts(buf, l, "PING")) {
                write_all(fd, "PONG\r\n", 6);
            }
            memmove(buf, buf + total, have - total);
            have -= total;
            if (hit)
                return;
            continue;
        }
        ssize_t r = read(fd, buf + have, sizeof buf - have);
        if (r <= 0)
            die("nats read");
        have += (size_t)r;
    }
}

static void nats_request(int fd, const char *subj, const char *json, char *out, size_t cap)
{
    char hdr[256];
    int l = snprintf(hdr, sizeof hdr, "PUB %s _INBOX.api %zu\r\n", subj, strlen(json));
    write_all(fd, hdr, (size_t)l);
    write_all(fd, json, strlen(json));
    write_all(fd, "\r\n", 2);
    nats_expect(fd, "MSG _INBOX.api", out, cap);
}

static void *nats_publisher(void *arg)
{
    (void)arg;
    int fd = nats_dial();
    write_all(fd, "SUB _INBOX.pub 1\r\nPING\r\n", 24);
    /* PONG for the CONNECT's PING, then the SUB's */
    static char rb[1 << 16];
    size_t have = 0;
    int pongs = 0;
    char msg[256];
    int ml = 0;
    char payload[65];
    memset(payload, 'v', 64);
    payload[64] = 0;
    ml = snprintf(msg, sizeof msg, "PUB orders _INBOX.pub 64\r\n%s\r\n", payload);
    char *burst = malloc((size_t)ml * (size_t)opt.window);
    for (int i = 0; i < opt.window; i++)
        memcpy(burst + (size_t)i * (size_t)ml, msg, (size_t)ml);
    size_t skip = 0;
    bool started = false;
    int64_t inflight = 0;
    while (!atomic_load(&stop)) {
        if (started && inflight <= opt.window / 2) {
            /* keep window publishes awaiting their PubAck */
            int k = (int)(opt.window - inflight);
            write_all(fd, burst, (size_t)ml * (size_t)k);
            inflight += k;
        }
        ssize_t r = read(fd, rb + have, sizeof rb - have);
        if (r <= 0)
            die("nats publisher read");
        have += (size_t)r;
        size_t pos = 0;
        for (;;) {
            if (skip) {
                size_t k = skip < have - pos ? skip : have - pos;
                skip -= k;
                pos += k;
                if (skip)
                    break;
            }
            char *nl = memchr(rb + pos, '\n', have - pos);
            if (!nl)
                break;
            size_t l = (size_t)(nl - (rb + pos)) + 1;
            const char *p = rb + pos;
            if (starts(p, l, "MSG ")) {
                size_t e = l - 2, b = e;
                while (b && p[b - 1] >= '0' && p[b - 1] <= '9')
                    b--;
                skip = strtoul(p + b, NULL, 10) + 2;
                inflight--;
                nats_pub_acks++;
                atomic_fetch_add(&produced, 1);
            } else if (starts(p, l, "PONG")) {
                if (++pongs == 2)
                    started = true;
            } else if (starts(p, l, "PING")) {
                write_all(fd, "PONG\r\n", 6);
            } else if (starts(p, l, "-ERR")) {
                fprintf(stderr, "sub_load: nats publisher: %.*s", (int)l, p);
                exit(1);
            }
            pos += l;
        }
        memmove(rb, rb + pos, have - pos);
        have -= pos;
    }
    close(fd);
    free(burst);
    return NULL;
}

static void nats_setup(void)
{
    int api = nats_dial();
    write_all(api, "SUB _INBOX.api 1\r\n", 18);
    nats_expect(api, "PONG", NULL, 0);
    char out[4096];
    nats_request(api, "$JS.API.STREAM.DELETE.ORDERS", "", out, sizeof out);
    nats_request(api, "$JS.API.STREAM.CREATE.ORDERS",
                 "{\"name\":\"ORDERS\",\"subjects\":[\"orders\"],\"storage\":\"file\","
                 "\"num_replicas\":1,\"retention\":\"limits\"}",
                 out, sizeof out);
    if (!strstr(out, "\"config\"")) {
        fprintf(stderr, "sub_load: stream create: %s\n", out);
        exit(1);
    }
    for (int i = 0; i < opt.subs; i++) {
        struct conn *c = &conns[i];
        c->idx = i;
        c->fd = nats_dial();
        char sub[64];
        int l = snprintf(sub, sizeof sub, "SUB d.%d 1\r\nPING\r\n", i);
        write_all(c->fd, sub, (size_t)l);
        watch(c);
    }
    /* each connection answers two PONGs (CONNECT's PING, then ours); ready after the first is
     * enough once the SUB was sent before it on the same connection */
    wait_ready(opt.subs);
    for (int i = 0; i < opt.subs; i++) {
        char subj[96], cfg[512];
        snprintf(subj, sizeof subj, "$JS.API.CONSUMER.DURABLE.CREATE.ORDERS.c%d", i);
        snprintf(cfg, sizeof cfg,
                 "{\"stream_name\":\"ORDERS\",\"config\":{\"durable_name\":\"c%d\","
                 "\"deliver_subject\":\"d.%d\",\"ack_policy\":\"none\",\"deliver_policy\":\"new\","
                 "\"replay_policy\":\"instant\"}}",
                 i, i);
        nats_request(api, subj, cfg, out, sizeof out);
        if (!strstr(out, "\"config\"")) {
            fprintf(stderr, "sub_load: consumer create: %s\n", out);
            exit(1);
        }
    }
    /* keep `api` open: closing it is harmless, but the stream outlives it either way */
}

/* ------------------------------------------------------------------------------------------ */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t total_events(void)
{
    uint64_t t = 0;
    for (int i = 0; i < opt.subs; i++)
        t += conns[i].events;
    return t;
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static void run_for(uint64_t ns)
{
    uint64_t end = now_ns() + ns;
    while (now_ns() < end)
        poll_once(50);
}

static void pct_print(const char *name, uint64_t *v, size_t n)
{
    if (!n) {
        printf("\"%s\":null,", name);
        return;
    }
    qsort(v, n, sizeof *v, cmp_u64);
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (double)v[i];
#define P(q) (v[(size_t)((double)(n - 1) * (q))] / 1000.0)
    printf("\"%s\":{\"n\":%zu,\"mean_ms\":%.3f,\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,"
           "\"p999_ms\":%.3f,\"max_ms\":%.3f},",
           name, n, sum / (double)n / 1000.0, P(0.5), P(0.9), P(0.99), P(0.999), v[n - 1] / 1000.0);
#undef P
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: sub_load idle|latency|fanout|nats-fanout --port P [...]\n");
        return 2;
    }
    if (!strcmp(argv[1], "idle"))
        opt.mode = M_IDLE;
    else if (!strcmp(argv[1], "latency"))
        opt.mode = M_LATENCY;
    else if (!strcmp(argv[1], "fanout"))
        opt.mode = M_FANOUT;
    else if (!strcmp(argv[1], "nats-fanout"))
        opt.mode = M_NATS;
    else
        return 2;
    for (int i = 2; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--port")) opt.port = atoi(v);
        else if (!strcmp(k, "--topic")) opt.topic = v;
        else if (!strcmp(k, "--subs")) opt.subs = atoi(v);
        else if (!strcmp(k, "--secs")) opt.secs = atoi(v);
        else if (!strcmp(k, "--rate")) opt.rate = atoi(v);
        else if (!strcmp(k, "--producers")) opt.producers = atoi(v);
        else if (!strcmp(k, "--batch")) opt.batch = atoi(v);
        else if (!strcmp(k, "--window")) opt.window = atoi(v);
        else if (!strcmp(k, "--heartbeat-ms")) opt.heartbeat_ms = atoi(v);
        else if (!strcmp(k, "--warm")) opt.warm = atoi(v);
        else { fprintf(stderr, "sub_load: unknown option %s\n", k); return 2; }
    }
    if (opt.secs < 1 || opt.secs > 120 || opt.subs < 1 || opt.producers < 1 || opt.rate < 1) {
        fprintf(stderr, "sub_load: bad options (secs 1..120)\n");
        return 2;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    conns = calloc((size_t)opt.subs, sizeof *conns);
    ep = epoll_create1(0);
    if (!conns || ep < 0)
        die("setup");
    uint64_t setup0 = now_ns();
    if (opt.mode == M_NATS)
        nats_setup();
    else
        open_http_subs();
    double setup_s = (double)(now_ns() - setup0) / 1e9;
    fprintf(stderr, "sub_load: %d subscriptions ready in %.2f s\n", opt.subs, setup_s);
    printf("{\"mode\":\"%s\",\"subs\":%d,\"secs\":%d,\"setup_s\":%.3f,", argv[1], opt.subs, opt.secs,
           setup_s);

    if (opt.mode == M_IDLE) {
        /* the driver samples the server between these two lines */
        fprintf(stderr, "READY\n");
        double c0 = cpu_s();
        uint64_t e0 = total_events();
        run_for((uint64_t)opt.secs * 1000000000ull);
        uint64_t hb = 0, bytes = 0;
        for (int i = 0; i < opt.subs; i++)
            hb += conns[i].heartbeats, bytes += conns[i].bytes;
        printf("\"events\":%llu,\"heartbeats\":%llu,\"bytes\":%llu,\"client_cpu_s\":%.3f,"
               "\"ended\":%d}\n",
               (unsigned long long)(total_events() - e0), (unsigned long long)hb,
               (unsigned long long)bytes, cpu_s() - c0, nended);
        fflush(stdout);
        fprintf(stderr, "DONE\n");
        /* hold until the driver closes our stdin (it samples after the window first) */
        char b;
        while (read(0, &b, 1) > 0)
            ;
        return 0;
    }

    if (opt.mode == M_LATENCY) {
        lat_max_records = (uint64_t)opt.rate * (uint64_t)opt.secs;
        recv_us = calloc(lat_max_records * (uint64_t)opt.subs, sizeof *recv_us);
        ack_ns = calloc(lat_max_records, sizeof *ack_ns);
        send_ns_by_off = calloc(lat_max_records, sizeof *send_ns_by_off);
        if (!recv_us || !ack_ns || !send_ns_by_off)
            die("calloc");
        /* the topic was created empty by the driver: offsets start at 0 */
        lat_base = 0;
        t0_ns = now_ns() + 20000000ull;
        pthread_t th[64], rth[64];
        static struct lat_conn lcs[64];
        int np = opt.producers > 64 ? 64 : opt.producers;
        opt.producers = np;
        double c0 = cpu_s();
        fprintf(stderr, "WINDOW\n");
        for (int i = 0; i < np; i++) {
            lcs[i].id = i;
            lcs[i].fd = dial(opt.port);
            lcs[i].cap = lat_max_records / (uint64_t)np + 2;
            lcs[i].sent_at = calloc(lcs[i].cap, sizeof(uint64_t));
            pthread_create(&th[i], NULL, latency_sender, &lcs[i]);
            pthread_create(&rth[i], NULL, latency_reader, &lcs[i]);
        }
        run_for((uint64_t)opt.secs * 1000000000ull + 20000000ull);
        atomic_store(&stop, true);
        for (int i = 0; i < np; i++)
            pthread_join(th[i], NULL);
        /* answers still in flight: bounded by the readers' own loop (socket timeout) */
        uint64_t wend = now_ns() + 10000000000ull;
        for (int i = 0; i < np; i++)
            while (atomic_load(&lcs[i].nacked) < atomic_load(&lcs[i].nsent) && now_ns() < wend)
                poll_once(20);
        for (int i = 0; i < np; i++)
            if (atomic_load(&lcs[i].nacked) >= atomic_load(&lcs[i].nsent))
                pthread_join(rth[i], NULL);
        fprintf(stderr, "WINDOWEND\n");
        run_for(1000000000ull); /* stragglers */
        double cpu = cpu_s() - c0;
        uint64_t n = atomic_load(&produced);
        uint64_t *from_ack = malloc(n * (uint64_t)opt.subs * sizeof *from_ack);
        uint64_t *from_send = malloc(n * (uint64_t)opt.subs * sizeof *from_send);
        size_t na = 0, ns = 0, missing = 0, before_ack = 0;
        uint64_t *ack_lat = malloc(n * sizeof *ack_lat);
        size_t nak = 0;
        for (uint64_t o = 0; o < lat_max_records; o++) {
            uint64_t a = atomic_load(&ack_ns[o]), s = atomic_load(&send_ns_by_off[o]);
            if (!a)
                continue;
            ack_lat[nak++] = a - s;
            for (int i = 0; i < opt.subs; i++) {
                uint32_t r = recv_us[o * (uint64_t)opt.subs + (uint64_t)i];
                if (!r) {
                    missing++;
                    continue;
                }
                uint64_t rn = t0_ns + ((uint64_t)r - 1) * 1000;
                /* receipt is stamped in us: compare at that resolution */
                uint64_t a_us = a / 1000 * 1000;
                if (rn < a_us) {
                    before_ack++;
                    from_ack[na++] = 0;
                } else {
                    from_ack[na++] = rn - a_us;
                }
                from_send[ns++] = rn > s ? rn - s : 0;
            }
        }
        printf("\"rate\":%d,\"producers\":%d,\"produced\":%llu,\"late_max_ms\":%.3f,"
               "\"late_over_1ms\":%llu,\"missing\":%zu,\"before_ack\":%zu,\"client_cpu_s\":%.3f,",
               opt.rate, np, (unsigned long long)n, atomic_load(&produce_late_max_us) / 1000.0,
               (unsigned long long)atomic_load(&produce_late_over_1ms), missing, before_ack, cpu);
        /* ns values: pct_print divides by 1000 -> us; convert to ms by passing us */
        for (size_t i = 0; i < na; i++)
            from_ack[i] /= 1000;
        for (size_t i = 0; i < ns; i++)
            from_send[i] /= 1000;
        for (size_t i = 0; i < nak; i++)
            ack_lat[i] /= 1000;
        pct_print("produce_ack", ack_lat, nak);
        pct_print("from_send", from_send, ns);
        pct_print("from_ack", from_ack, na);
        printf("\"ended\":%d}\n", nended);
        return 0;
    }

    /* fan-out: Ayder or NATS */
    pthread_t th[16];
    int np = opt.mode == M_NATS ? 1 : (opt.producers > 16 ? 16 : opt.producers);
    for (int i = 0; i < np; i++)
        pthread_create(&th[i], NULL, opt.mode == M_NATS ? nats_publisher : fanout_producer, NULL);
    run_for((uint64_t)opt.warm * 1000000000ull);
    uint64_t e0 = total_events(), p0 = atomic_load(&produced), t_a = now_ns();
    double c0 = cpu_s();
    fprintf(stderr, "WINDOW\n"); /* the driver samples the server's CPU at these two lines */
    uint64_t *per0 = malloc((size_t)opt.subs * sizeof *per0);
    for (int i = 0; i < opt.subs; i++)
        per0[i] = conns[i].events;
    run_for((uint64_t)opt.secs * 1000000000ull);
    uint64_t e1 = total_events(), p1 = atomic_load(&produced), t_b = now_ns();
    double cpu = cpu_s() - c0;
    fprintf(stderr, "WINDOWEND\n");
    atomic_store(&stop, true);
    uint64_t mn = UINT64_MAX, mx = 0;
    for (int i = 0; i < opt.subs; i++) {
        uint64_t d = conns[i].events - per0[i];
        mn = d < mn ? d : mn;
        mx = d > mx ? d : mx;
    }
    double dt = (double)(t_b - t_a) / 1e9;
    uint64_t lag_max = 0;
    for (int i = 0; i < opt.subs; i++) {
        uint64_t lag = p1 > conns[i].events ? p1 - conns[i].events : 0;
        lag_max = lag > lag_max ? lag : lag_max;
    }
    printf("\"window_s\":%.3f,\"events\":%llu,\"events_per_s\":%.0f,\"produced_per_s\":%.0f,"
           "\"per_sub_min_per_s\":%.0f,\"per_sub_max_per_s\":%.0f,\"lag_max_at_end\":%llu,"
           "\"client_cpu_s\":%.3f,\"ended\":%d,\"errors\":%d}\n",
           dt, (unsigned long long)(e1 - e0), (double)(e1 - e0) / dt, (double)(p1 - p0) / dt,
           (double)mn / dt, (double)mx / dt, (unsigned long long)lag_max, cpu, nended, nerrors);
    fflush(stdout);
    /* producers may block in a read; the process exit ends them */
    _exit(0);
}
