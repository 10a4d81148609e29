/* test_transport.c -- the Raft peer transport: codecs, then real sockets on loopback.
 *
 * Every wait polls a condition against a deadline (wait_until); nothing sleeps in place of a
 * condition. Ports come from the transports themselves (listen_port 0) or from reserve_port()
 * when a config must name a peer's port before that peer exists. TLS material (two CAs, node
 * certificates) is generated with the OpenSSL API into a temporary directory. The membership
 * tests (transport_add_remove_*, transport_membership_*) change the peer set at run time; one
 * of them races add/remove against sends from another thread (run it under TSan too).
 */
#include "harness.h"

#include "base/alloc.h"
#include "base/buf.h"
#include "base/clock.h"
#include "base/err.h"
#include "raft/transport.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <pthread.h>
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

/* ------------------------------------------------------------------------------ helpers */

static void nap(void)
{
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
}

typedef bool (*cond_fn)(void *);

static bool wait_until(cond_fn fn, void *arg, uint32_t timeout_ms)
{
    uint64_t end = clock_mono_ms() + timeout_ms;
    while (!fn(arg)) {
        if (clock_mono_ms() > end)
            return false;
        nap();
    }
    return true;
}

static uint16_t reserve_port(int family)
{
    int fd = socket(family, SOCK_STREAM, 0);
    struct sockaddr_storage ss = {0};
    socklen_t sl;
    if (family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_addr = in6addr_loopback;
        sl = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sl = sizeof *a;
    }
    if (fd < 0 || bind(fd, (struct sockaddr *)&ss, sl) != 0) {
        if (fd >= 0)
            close(fd);
        return 0;
    }
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    uint16_t port = ntohs(family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                             : ((struct sockaddr_in *)&ss)->sin_port);
    close(fd);
    return port;
}

#define MAXN 3

struct cluster {
    int n;
    uint64_t ids[MAXN];
    char names[MAXN][16];
    uint16_t ports[MAXN];
    struct transport *t[MAXN];
    struct transport_config base; /* per-test overrides (tls files set per node below) */
    const char *host;
    const char *cert[MAXN], *key[MAXN], *ca[MAXN];
};

static int node_start(struct cluster *c, int i)
{
    struct transport_peer_config peers[MAXN];
    size_t np = 0;
    for (int j = 0; j < c->n; j++) {
        if (j == i)
            continue;
        peers[np++] = (struct transport_peer_config){c->ids[j], c->names[j], c->host, c->ports[j]};
    }
    struct transport_config cfg = c->base;
    cfg.self_id = c->ids[i];
    cfg.self_name = c->names[i];
    cfg.listen_host = c->host;
    cfg.listen_port = c->ports[i];
    cfg.peers = peers;
    cfg.n_peers = np;
    if (cfg.tls) {
        cfg.tls_ca_file = c->ca[i];
        cfg.tls_cert_file = c->cert[i];
        cfg.tls_key_file = c->key[i];
    }
    int rc = transport_new(&cfg, &c->t[i]);
    if (rc != 0)
        return rc;
    rc = transport_start(c->t[i]);
    if (rc != 0) {
        transport_free(c->t[i]);
        c->t[i] = NULL;
    }
    return rc;
}

static bool cluster_init(struct cluster *c, int n, const char *host, int family)
{
    c->n = n;
    c->host = host;
    if (!c->base.cluster_id)
        c->base.cluster_id = 77;
    if (!c->base.backoff_min_ms)
        c->base.backoff_min_ms = 10;
    if (!c->base.backoff_max_ms)
        c->base.backoff_max_ms = 200;
    for (int i = 0; i < n; i++) {
        c->ids[i] = (uint64_t)(i + 1);
        snprintf(c->names[i], sizeof c->names[i], "n%d", i + 1);
        c->ports[i] = reserve_port(family);
        if (!c->ports[i])
            return false;
    }
    for (int i = 0; i < n; i++)
        if (node_start(c, i) != 0)
            return false;
    return true;
}

static void cluster_free(struct cluster *c)
{
    for (int i = 0; i < c->n; i++) {
        transport_free(c->t[i]);
        c->t[i] = NULL;
    }
}

static bool all_connected(void *arg)
{
    struct cluster *c = arg;
    for (int i = 0; i < c->n; i++)
        for (int j = 0; j < c->n; j++) {
            if (i == j || !c->t[i])
                continue;
            struct transport_peer_state st;
            if (transport_peer_state(c->t[i], c->ids[j], &st) != 0 || !st.connected ||
                st.conns != 1)
                return false;
        }
    return true;
}

/* Payload: u32 seq | u8 sender | pattern bytes; length varies with seq. */
static size_t make_payload(uint8_t *buf, uint32_t seq, uint8_t sender)
{
    size_t n = 5 + (seq * 7919u) % 1500u;
    put_le32(buf, seq);
    buf[4] = sender;
    for (size_t i = 5; i < n; i++)
        buf[i] = (uint8_t)(seq * 31u + i + sender);
    return n;
}

struct rx_check {
    uint32_t next_seq[MAXN + 1]; /* per sender id */
    uint64_t total;
    int errors;
};

static void rx_cb(void *ctx, uint64_t from, struct slice b)
{
    struct rx_check *r = ctx;
    uint8_t expect[1600];
    if (from == 0 || from > MAXN || b.len < 5) {
        r->errors++;
        return;
    }
    uint32_t seq = get_le32(b.ptr);
    size_t n = make_payload(expect, seq, (uint8_t)from);
    if (seq != r->next_seq[from] || b.ptr[4] != from || n != b.len || memcmp(expect, b.ptr, n))
        r->errors++;
    r->next_seq[from] = seq + 1;
    r->total++;
}

/* ------------------------------------------------------------------------------ codecs */

TEST(transport_frame_codec)
{
    struct sbuf b;
    sbuf_init(&b, 0);
    const char *msg = "hello raft";
    REQUIRE(transport_frame_encode(TRANSPORT_FRAME_MSG, slice_cstr(msg), &b) == 0);
    CHECK_EQ_INT(b.len, TRANSPORT_FRAME_HEADER + strlen(msg));
    uint8_t raw[64];
    CHECK_EQ_INT(transport_frame_put(raw, TRANSPORT_FRAME_MSG, slice_cstr(msg)), b.len);
    CHECK(memcmp(raw, b.data, b.len) == 0);
    uint8_t type = 0;
    struct slice pl;
    size_t used = 0;
    REQUIRE(transport_frame_decode(slice_of(b.data, b.len), 100, &type, &pl, &used) == 0);
    CHECK(type == TRANSPORT_FRAME_MSG && used == b.len && slice_eq_cstr(pl, msg));
    for (size_t k = 0; k < b.len; k++) /* every prefix is incomplete */
        CHECK(transport_frame_decode(slice_of(b.data, k), 100, &type, &pl, &used) == ERR_AGAIN);
    CHECK(transport_frame_decode(slice_of(b.data, b.len), 5, &type, &pl, &used) == ERR_TOO_LARGE);
    /* The CRC covers the length: shrink it by one and the frame is corrupt, not truncated. */
    b.data[0]--;
    CHECK(transport_frame_decode(slice_of(b.data, b.len), 100, &type, &pl, &used) == ERR_CORRUPT);
    b.data[0]++;
    for (size_t k = 4; k < b.len; k++) { /* any flipped bit after the length is caught */
        b.data[k] ^= 0x10;
        CHECK(transport_frame_decode(slice_of(b.data, b.len), 100, &type, &pl, &used) ==
              ERR_CORRUPT);
        b.data[k] ^= 0x10;
    }
    uint8_t zero[8] = {0};
    CHECK(transport_frame_decode(slice_of(zero, 8), 100, &type, &pl, &used) == ERR_INVALID);
    sbuf_free(&b);
}

TEST(transport_hello_codec)
{
    struct transport_hello h = {1, 3, 42, 7, 99}, g;
    uint8_t buf[TRANSPORT_HELLO_BYTES];
    transport_hello_encode(&h, buf);
    REQUIRE(transport_hello_decode(slice_of(buf, sizeof buf), &g) == 0);
    CHECK(g.version_min == 1 && g.version_max == 3 && g.cluster_id == 42 && g.node_id == 7 &&
          g.incarnation == 99);
    CHECK(transport_hello_decode(slice_of(buf, sizeof buf - 1), &g) == ERR_INVALID);
    buf[0] ^= 1;
    CHECK(transport_hello_decode(slice_of(buf, sizeof buf), &g) == ERR_INVALID);
    buf[0] ^= 1;
    struct transport_hello inv = {3, 2, 1, 1, 1};
    transport_hello_encode(&inv, buf);
    CHECK(transport_hello_decode(slice_of(buf, sizeof buf), &g) == ERR_INVALID);
    struct transport_hello a = {1, 3}, b2 = {2, 5}, c = {4, 6};
    CHECK_EQ_INT(transport_version_pick(&a, &b2), 3);
    CHECK_EQ_INT(transport_version_pick(&b2, &c), 5);
    CHECK_EQ_INT(transport_version_pick(&a, &c), 0);
}

TEST(transport_parse_addr)
{
    char host[64];
    uint16_t port = 0;
    CHECK(transport_parse_addr("10.0.0.1:7000", host, sizeof host, &port) == 0);
    CHECK(strcmp(host, "10.0.0.1") == 0 && port == 7000);
    CHECK(transport_parse_addr("[::1]:7001", host, sizeof host, &port) == 0);
    CHECK(strcmp(host, "::1") == 0 && port == 7001);
    CHECK(transport_parse_addr("node-2.example:65535", host, sizeof host, &port) == 0);
    CHECK(strcmp(host, "node-2.example") == 0 && port == 65535);
    const char *bad[] = {"", "host", "host:", ":80", "host:0", "host:65536", "host:12a",
                         "::1:80", "[::1]80", "[::1:80", "[]:80", "h:123456"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK(transport_parse_addr(bad[i], host, sizeof host, &port) == ERR_INVALID);
    CHECK(transport_parse_addr("averyveryverylonghostname:80", host, 8, &port) == ERR_INVALID);
    CHECK(transport_node_id("n1") != 0 && transport_node_id("n1") != transport_node_id("n2"));
    CHECK(transport_node_id("n1") == transport_node_id("n1"));
}

TEST(transport_config_rejected)
{
    struct transport *t = NULL;
    struct transport_peer_config p[2] = {{2, "n2", "127.0.0.1", 1}, {2, "n2b", "127.0.0.1", 2}};
    struct transport_config cfg = {.self_id = 1, .self_name = "n1", .peers = p, .n_peers = 2};
    CHECK(transport_new(&cfg, &t) == ERR_INVALID); /* duplicate id */
    p[1].id = 1;
    CHECK(transport_new(&cfg, &t) == ERR_INVALID); /* self as peer */
    cfg.n_peers = 1;
    cfg.tls = true;
    CHECK(transport_new(&cfg, &t) == ERR_INVALID); /* tls without files */
    cfg.tls_ca_file = cfg.tls_cert_file = cfg.tls_key_file = "/nonexistent/x.pem";
    CHECK(transport_new(&cfg, &t) == ERR_IO);
}

/* ------------------------------------------------------------------------------ plaintext */

static void exchange(struct cluster *c, uint32_t count)
{
    struct rx_check rx[MAXN] = {0};
    uint8_t buf[1600];
    for (uint32_t seq = 0; seq < count; seq++) {
        for (int i = 0; i < c->n; i++) {
            size_t n = make_payload(buf, seq, (uint8_t)c->ids[i]);
            for (int j = 0; j < c->n; j++) {
                if (i == j)
                    continue;
                uint64_t end = clock_mono_ms() + DEADLINE_MS;
                int rc;
                while ((rc = transport_send(c->t[i], c->ids[j], slice_of(buf, n))) == ERR_AGAIN &&
                       clock_mono_ms() < end) {
                    for (int k = 0; k < c->n; k++)
                        transport_poll(c->t[k], rx_cb, &rx[k]);
                    nap();
                }
                REQUIRE(rc == 0);
            }
        }
        if (seq % 256 == 0)
            for (int k = 0; k < c->n; k++)
                transport_poll(c->t[k], rx_cb, &rx[k]);
    }
    uint64_t want = (uint64_t)count * (uint64_t)(c->n - 1);
    uint64_t end = clock_mono_ms() + DEADLINE_MS;
    for (int k = 0; k < c->n; k++) {
        while (rx[k].total < want && clock_mono_ms() < end) {
            transport_wait(c->t[k], 50);
            transport_poll(c->t[k], rx_cb, &rx[k]);
        }
        CHECK_EQ_INT(rx[k].total, want);
        CHECK_EQ_INT(rx[k].errors, 0);
    }
}

TEST(transport_three_nodes_exchange)
{
    struct cluster c = {0};
    REQUIRE(cluster_init(&c, 3, "127.0.0.1", AF_INET));
    CHECK(wait_until(all_connected, &c, DEADLINE_MS));
    exchange(&c, 3000);
    struct transport_stats st;
    transport_get_stats(c.t[0], &st);
    CHECK(st.frames_out == 6000 && st.frames_in == 6000 && st.bad_frames == 0);
    cluster_free(&c);
}

struct peer_wait {
    struct transport *t;
    uint64_t id;
    bool connected;
    uint64_t min_connects;
};

static bool peer_is(void *arg)
{
    struct peer_wait *w = arg;
    struct transport_peer_state st;
    return transport_peer_state(w->t, w->id, &st) == 0 && st.connected == w->connected &&
           st.connects >= w->min_connects;
}

TEST(transport_peer_restart_reconnects)
{
    struct cluster c = {0};
    REQUIRE(cluster_init(&c, 3, "127.0.0.1", AF_INET));
    REQUIRE(wait_until(all_connected, &c, DEADLINE_MS));
    for (int round = 0; round < 2; round++) {
        transport_free(c.t[2]);
        c.t[2] = NULL;
        for (int i = 0; i < 2; i++) {
            struct peer_wait w = {c.t[i], 3, false, 0};
            CHECK(wait_until(peer_is, &w, DEADLINE_MS));
            CHECK(transport_send(c.t[i], 3, SLICE_LIT("x")) == ERR_UNAVAILABLE);
        }
        REQUIRE(node_start(&c, 2) == 0);
        CHECK(wait_until(all_connected, &c, DEADLINE_MS));
        for (int i = 0; i < 2; i++) {
            struct transport_peer_state st;
            REQUIRE(transport_peer_state(c.t[i], 3, &st) == 0);
            CHECK(st.connects >= (uint64_t)round + 2);
            CHECK(st.drops >= (uint64_t)round + 1);
        }
    }
    exchange(&c, 200);
    cluster_free(&c);
}

TEST(transport_simultaneous_dial_one_connection)
{
    for (int round = 0; round < 5; round++) {
        struct cluster c = {0};
        REQUIRE(cluster_init(&c, 2, "127.0.0.1", AF_INET));
        CHECK(wait_until(all_connected, &c, DEADLINE_MS));
        exchange(&c, 100); /* both directions work over the surviving connection */
        REQUIRE(all_connected(&c));
        cluster_free(&c);
    }
}

/* ------------------------------------------------------------------------------ raw clients */

static int raw_connect(int family, uint16_t port)
{
    int fd = socket(family, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {DEADLINE_MS / 1000, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static bool raw_send(int fd, const void *p, size_t n)
{
    return send(fd, p, n, MSG_NOSIGNAL) == (ssize_t)n;
}

static bool raw_hello(int fd, uint64_t cluster, uint64_t id)
{
    struct transport_hello h = {1, 1, cluster, id, 1234};
    uint8_t pl[TRANSPORT_HELLO_BYTES], fr[TRANSPORT_FRAME_HEADER + TRANSPORT_HELLO_BYTES];
    transport_hello_encode(&h, pl);
    size_t n = transport_frame_put(fr, TRANSPORT_FRAME_HELLO, slice_of(pl, sizeof pl));
    return raw_send(fd, fr, n);
}

/* Read one frame (blocking with the socket's timeout). */
static bool raw_read_frame(int fd, uint8_t *type, uint8_t *buf, size_t cap, size_t *len)
{
    size_t have = 0;
    for (;;) {
        struct slice pl;
        size_t used;
        int rc = transport_frame_decode(slice_of(buf, have), cap, type, &pl, &used);
        if (rc == 0) {
            memmove(buf, pl.ptr, pl.len);
            *len = pl.len;
            return true;
        }
        if (rc != ERR_AGAIN || have == cap)
            return false;
        ssize_t r = recv(fd, buf + have, 1, 0); /* byte at a time: never read past the frame */
        if (r <= 0)
            return false;
        have += (size_t)r;
    }
}

/* True when the server closes the connection (EOF or reset) before the receive timeout. */
static bool raw_closed(int fd)
{
    uint8_t b[4096];
    for (;;) {
        ssize_t r = recv(fd, b, sizeof b, 0);
        if (r == 0)
            return true;
        if (r < 0)
            return errno == ECONNRESET;
    }
}

struct stat_wait {
    struct transport *t;
    uint64_t refused, bad_frames;
};

static bool stats_reach(void *arg)
{
    struct stat_wait *w = arg;
    struct transport_stats st;
    transport_get_stats(w->t, &st);
    return st.refused >= w->refused && st.bad_frames >= w->bad_frames;
}

/* One transport (id 9) whose only peer (id 2) is played by raw sockets. */
static struct transport *lone_node_at(uint64_t cluster, size_t max_frame, size_t sendq,
                                      uint16_t peer_port)
{
    struct transport_peer_config p = {2, "n2", "127.0.0.1", peer_port};
    struct transport_config cfg = {.self_id = 9, .self_name = "n9", .cluster_id = cluster,
                                   .listen_host = "127.0.0.1", .peers = &p, .n_peers = 1,
                                   .max_frame_bytes = max_frame, .send_queue_max_bytes = sendq,
                                   .backoff_min_ms = 10, .backoff_max_ms = 100};
    struct transport *t = NULL;
    if (transport_new(&cfg, &t) != 0)
        return NULL;
    if (transport_start(t) != 0) {
        transport_free(t);
        return NULL;
    }
    return t;
}

static struct transport *lone_node(uint64_t cluster, size_t max_frame, size_t sendq)
{
    return lone_node_at(cluster, max_frame, sendq, reserve_port(AF_INET));
}

TEST(transport_refuses_cluster_and_unknown_node)
{
    struct transport *t = lone_node(5, 0, 0);
    REQUIRE(t);
    uint16_t port = transport_port(t);
    uint8_t type, buf[256];
    size_t len;
    /* Wrong cluster id: the transport still says hello first, then closes. */
    int fd = raw_connect(AF_INET, port);
    REQUIRE(fd >= 0);
    CHECK(raw_hello(fd, 6, 2));
    CHECK(!raw_read_frame(fd, &type, buf, sizeof buf, &len)); /* no HELLO back: closed */
    close(fd);
    fd = raw_connect(AF_INET, port);
    REQUIRE(fd >= 0);
    CHECK(raw_hello(fd, 6, 2));
    CHECK(raw_closed(fd));
    close(fd);
    struct stat_wait w = {t, 2, 0};
    CHECK(wait_until(stats_reach, &w, DEADLINE_MS));
    /* Unknown node id, and our own id. */
    uint64_t ids[] = {99, 9};
    for (size_t i = 0; i < 2; i++) {
        fd = raw_connect(AF_INET, port);
        REQUIRE(fd >= 0);
        CHECK(raw_hello(fd, 5, ids[i]));
        CHECK(raw_closed(fd));
        close(fd);
    }
    w.refused = 4;
    CHECK(wait_until(stats_reach, &w, DEADLINE_MS));
    /* Not a HELLO first, and a first frame over the pre-auth bound. */
    fd = raw_connect(AF_INET, port);
    REQUIRE(fd >= 0);
    uint8_t fr[64];
    size_t n = transport_frame_put(fr, TRANSPORT_FRAME_MSG, SLICE_LIT("hi"));
    CHECK(raw_send(fd, fr, n) && raw_closed(fd));
    close(fd);
    fd = raw_connect(AF_INET, port);
    REQUIRE(fd >= 0);
    put_le32(fr, 100000);
    CHECK(raw_send(fd, fr, 8) && raw_closed(fd));
    close(fd);
    struct transport_peer_state ps;
    REQUIRE(transport_peer_state(t, 2, &ps) == 0);
    CHECK(!ps.connected && ps.connects == 0);

    /* Two transports with different cluster ids never connect. */
    struct cluster a = {0}, b = {0};
    transport_free(t);
    uint16_t pa = reserve_port(AF_INET), pb = reserve_port(AF_INET);
    struct transport_peer_config peer_b = {2, "n2", "127.0.0.1", pb};
    struct transport_peer_config peer_a = {1, "n1", "127.0.0.1", pa};
    struct transport_config ca = {.self_id = 1, .cluster_id = 1, .listen_host = "127.0.0.1",
                                  .listen_port = pa, .peers = &peer_b, .n_peers = 1,
                                  .backoff_min_ms = 10, .backoff_max_ms = 50};
    struct transport_config cb = ca;
    cb.self_id = 2;
    cb.cluster_id = 2;
    cb.listen_port = pb;
    cb.peers = &peer_a;
    (void)a;
    (void)b;
    struct transport *ta = NULL, *tb = NULL;
    REQUIRE(transport_new(&ca, &ta) == 0 && transport_start(ta) == 0);
    REQUIRE(transport_new(&cb, &tb) == 0 && transport_start(tb) == 0);
    struct stat_wait wa = {ta, 2, 0}, wb = {tb, 2, 0};
    CHECK(wait_until(stats_reach, &wa, DEADLINE_MS));
    CHECK(wait_until(stats_reach, &wb, DEADLINE_MS));
    REQUIRE(transport_peer_state(ta, 2, &ps) == 0);
    CHECK(ps.connects == 0 && ps.dials >= 1);
    REQUIRE(transport_peer_state(tb, 1, &ps) == 0);
    CHECK(ps.connects == 0);
    transport_free(ta);
    transport_free(tb);
}

static bool peer_connected(void *arg)
{
    struct peer_wait *w = arg;
    struct transport_peer_state st;
    return transport_peer_state(w->t, w->id, &st) == 0 && st.connected;
}

/* Connect a raw client as node 2 and complete the handshake. */
static int raw_peer(struct transport *t)
{
    int fd = raw_connect(AF_INET, transport_port(t));
    if (fd < 0)
        return -1;
    uint8_t type, buf[256];
    size_t len;
    struct peer_wait w = {t, 2, true, 0};
    if (!raw_hello(fd, 5, 2) || !raw_read_frame(fd, &type, buf, sizeof buf, &len) ||
        type != TRANSPORT_FRAME_HELLO || !wait_until(peer_connected, &w, DEADLINE_MS)) {
        close(fd);
        return -1;
    }
    return fd;
}

struct got {
    int n;
    uint64_t from;
    uint8_t last[64];
    size_t len;
};

static void got_cb(void *ctx, uint64_t from, struct slice b)
{
    struct got *g = ctx;
    g->n++;
    g->from = from;
    g->len = b.len < sizeof g->last ? b.len : sizeof g->last;
    memcpy(g->last, b.ptr, g->len);
}

TEST(transport_bad_frames_close_connection)
{
    struct transport *t = lone_node(5, 4096, 0);
    REQUIRE(t);
    /* Bad CRC. */
    int fd = raw_peer(t);
    REQUIRE(fd >= 0);
    uint8_t fr[8192];
    size_t n = transport_frame_put(fr, TRANSPORT_FRAME_MSG, SLICE_LIT("payload"));
    fr[n - 1] ^= 0xff;
    CHECK(raw_send(fd, fr, n) && raw_closed(fd));
    close(fd);
    struct stat_wait w = {t, 0, 1};
    CHECK(wait_until(stats_reach, &w, DEADLINE_MS));
    /* Oversized length (max_frame_bytes is 4096): closed on the header alone. */
    fd = raw_peer(t);
    REQUIRE(fd >= 0);
    put_le32(fr, 4096 + 2);
    CHECK(raw_send(fd, fr, 8) && raw_closed(fd));
    close(fd);
    /* A HELLO after the handshake, and an unknown frame type. */
    uint8_t types[] = {TRANSPORT_FRAME_HELLO, 77};
    for (size_t i = 0; i < 2; i++) {
        fd = raw_peer(t);
        REQUIRE(fd >= 0);
        n = transport_frame_put(fr, types[i], SLICE_LIT("x"));
        CHECK(raw_send(fd, fr, n) && raw_closed(fd));
        close(fd);
    }
    w.bad_frames = 4;
    CHECK(wait_until(stats_reach, &w, DEADLINE_MS));
    /* The transport keeps working: a good frame both ways, including the largest allowed. */
    fd = raw_peer(t);
    REQUIRE(fd >= 0);
    static uint8_t big[4096];
    memset(big, 0xab, sizeof big);
    n = transport_frame_put(fr, TRANSPORT_FRAME_MSG, SLICE_LIT("good"));
    n += transport_frame_put(fr + n, TRANSPORT_FRAME_MSG, slice_of(big, sizeof big));
    CHECK(raw_send(fd, fr, n));
    struct got g = {0};
    uint64_t end = clock_mono_ms() + DEADLINE_MS;
    while (g.n < 2 && clock_mono_ms() < end) {
        transport_wait(t, 50);
        transport_poll(t, got_cb, &g);
    }
    CHECK(g.n == 2 && g.from == 2 && g.len == 64 && g.last[0] == 0xab);
    CHECK(transport_send(t, 2, SLICE_LIT("reply")) == 0);
    uint8_t type, buf[64];
    size_t len;
    CHECK(raw_read_frame(fd, &type, buf, sizeof buf, &len) && type == TRANSPORT_FRAME_MSG &&
          len == 5 && memcmp(buf, "reply", 5) == 0);
    close(fd);
    transport_free(t);
}

/* Deterministic simultaneous dial: the transport (id 9) dials the raw node 2 (conn D) while
 * node 2 dials it (conn A). Whichever completes first, A (dialed by the smaller id) must survive
 * and D must be closed by the transport. */
TEST(transport_tie_break_smaller_dialer_wins)
{
    for (int order = 0; order < 2; order++) {
        int lfd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t sl = sizeof a;
        REQUIRE(lfd >= 0 && bind(lfd, (struct sockaddr *)&a, sizeof a) == 0 &&
                listen(lfd, 4) == 0 && getsockname(lfd, (struct sockaddr *)&a, &sl) == 0);
        struct transport *t = lone_node_at(5, 0, 0, ntohs(a.sin_port));
        REQUIRE(t);
        int dfd = accept(lfd, NULL, NULL); /* blocks until the transport dials */
        REQUIRE(dfd >= 0);
        struct timeval tv = {DEADLINE_MS / 1000, 0};
        setsockopt(dfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        uint8_t type, buf[256];
        size_t len;
        CHECK(raw_read_frame(dfd, &type, buf, sizeof buf, &len) && type == TRANSPORT_FRAME_HELLO);
        int afd = -1;
        struct peer_wait w = {t, 2, true, 1};
        if (order == 0) { /* D goes live first, then A arrives */
            CHECK(raw_hello(dfd, 5, 2));
            CHECK(wait_until(peer_is, &w, DEADLINE_MS));
            afd = raw_peer(t);
        } else { /* A goes live first, then D's answer arrives */
            afd = raw_peer(t);
            CHECK(raw_hello(dfd, 5, 2));
        }
        REQUIRE(afd >= 0);
        CHECK(raw_closed(dfd));
        struct transport_peer_state st;
        REQUIRE(transport_peer_state(t, 2, &st) == 0);
        CHECK(st.connected);
        CHECK(transport_send(t, 2, SLICE_LIT("on A")) == 0);
        CHECK(raw_read_frame(afd, &type, buf, sizeof buf, &len) && type == TRANSPORT_FRAME_MSG &&
              len == 4 && memcmp(buf, "on A", 4) == 0);
        close(afd);
        close(dfd);
        close(lfd);
        transport_free(t);
    }
}

/* A transport whose listen_host is a specific address dials from it (port chosen by the kernel),
 * so firewall rules on (source, destination) pairs see the node's own address; a wildcard listen
 * host leaves the choice to the kernel (127.0.0.1 towards 127.0.0.1). */
TEST(transport_dials_from_listen_host)
{
    const char *hosts[] = {"127.0.0.2", "0.0.0.0", "127.0.0.3"};
    const char *expect[] = {"127.0.0.2", "127.0.0.1", "127.0.0.3"};
    for (size_t i = 0; i < 3; i++) {
        int lfd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t sl = sizeof a;
        REQUIRE(lfd >= 0 && bind(lfd, (struct sockaddr *)&a, sizeof a) == 0 &&
                listen(lfd, 4) == 0 && getsockname(lfd, (struct sockaddr *)&a, &sl) == 0);
        struct transport_peer_config p = {2, "n2", "127.0.0.1", ntohs(a.sin_port)};
        struct transport_config cfg = {.self_id = 9, .self_name = "n9", .cluster_id = 5,
                                       .listen_host = hosts[i], .peers = &p, .n_peers = 1,
                                       .backoff_min_ms = 10, .backoff_max_ms = 100};
        struct transport *t = NULL;
        REQUIRE(transport_new(&cfg, &t) == 0);
        REQUIRE(transport_start(t) == 0);
        struct timeval tv = {DEADLINE_MS / 1000, 0};
        setsockopt(lfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv); /* bounds accept() too */
        struct sockaddr_in from = {0};
        socklen_t fl = sizeof from;
        int dfd = accept(lfd, (struct sockaddr *)&from, &fl);
        REQUIRE(dfd >= 0);
        char got[INET_ADDRSTRLEN] = "";
        CHECK(from.sin_family == AF_INET);
        CHECK(inet_ntop(AF_INET, &from.sin_addr, got, sizeof got) != NULL);
        CHECK(strcmp(got, expect[i]) == 0);
        CHECK(ntohs(from.sin_port) != 0 && ntohs(from.sin_port) != transport_port(t));
        /* The dialed connection still works: the transport says HELLO first. */
        setsockopt(dfd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        uint8_t type, buf[256];
        size_t len;
        CHECK(raw_read_frame(dfd, &type, buf, sizeof buf, &len) && type == TRANSPORT_FRAME_HELLO);
        close(dfd);
        close(lfd);
        transport_free(t);
    }
}

/* Send until the queue refuses with ERR_AGAIN while it is full (within one frame of max) and
 * never above max. The transport thread may still be draining into the socket buffers (they grow
 * until the kernel stops autotuning), so an ERR_AGAIN seen just before a drain is followed by more
 * sends until the peer's buffers are full and the queue stays put. */
static bool got_again(struct transport *t, size_t max)
{
    static uint8_t big[16384];
    uint64_t end = clock_mono_ms() + DEADLINE_MS;
    while (clock_mono_ms() < end) {
        int rc = transport_send(t, 2, slice_of(big, sizeof big));
        if (rc != 0 && rc != ERR_AGAIN)
            return false;
        struct transport_peer_state st;
        transport_peer_state(t, 2, &st);
        if (st.queued_bytes > max)
            return false;
        if (rc == ERR_AGAIN && st.queued_bytes + sizeof big + 9 > max)
            return true;
    }
    return false;
}

TEST(transport_send_queue_bound)
{
    size_t max = 256 << 10;
    struct transport *t = lone_node(5, 1 << 20, max);
    REQUIRE(t);
    CHECK(transport_send(t, 3, SLICE_LIT("x")) == ERR_NOT_FOUND);
    CHECK(transport_send(t, 2, SLICE_LIT("x")) == ERR_UNAVAILABLE);
    int fd = raw_peer(t); /* never reads: the socket buffers fill, then the queue */
    REQUIRE(fd >= 0);
    static uint8_t huge[(1 << 20) + 1];
    CHECK(transport_send(t, 2, slice_of(huge, sizeof huge)) == ERR_TOO_LARGE);
    CHECK(got_again(t, max));
    close(fd);
    struct peer_wait w = {t, 2, false, 0};
    CHECK(wait_until(peer_is, &w, DEADLINE_MS));
    struct transport_peer_state st;
    REQUIRE(transport_peer_state(t, 2, &st) == 0);
    CHECK(st.queued_bytes == 0); /* discarded with the connection */
    transport_free(t);
}

TEST(transport_ipv6_and_hostnames)
{
    uint16_t p6 = reserve_port(AF_INET6);
    if (!p6) {
        printf("  (no IPv6 loopback: skipped)\n");
        return;
    }
    struct cluster c = {0};
    REQUIRE(cluster_init(&c, 2, "::1", AF_INET6));
    CHECK(wait_until(all_connected, &c, DEADLINE_MS));
    exchange(&c, 100);
    cluster_free(&c);
    /* A node listening on :: (dual stack) is reached through the name "localhost", whichever
     * address family the resolver returns first. */
    struct cluster d = {0};
    REQUIRE(cluster_init(&d, 2, "localhost", AF_INET));
    CHECK(wait_until(all_connected, &d, DEADLINE_MS));
    exchange(&d, 10);
    cluster_free(&d);
}

/* ------------------------------------------------------------------------------ mTLS */

struct pki {
    char dir[64];
    char files[16][128];
    int n_files;
};

static long g_serial = 1;

static bool add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value)
{
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
    if (!e)
        return false;
    bool ok = X509_add_ext(x, e, -1) == 1;
    X509_EXTENSION_free(e);
    return ok;
}

static X509 *make_cert(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key)
{
    X509 *x = X509_new();
    if (!x)
        return NULL;
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), g_serial++);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, key);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name);
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer ? issuer : x, x, NULL, NULL, 0);
    bool ok;
    if (!issuer) {
        ok = add_ext(x, &ctx, NID_basic_constraints, "critical,CA:TRUE") &&
             add_ext(x, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign");
    } else {
        char san[128];
        snprintf(san, sizeof san, "DNS:%s", cn);
        ok = add_ext(x, &ctx, NID_basic_constraints, "CA:FALSE") &&
             add_ext(x, &ctx, NID_subject_alt_name, san);
    }
    if (!ok || !X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256())) {
        X509_free(x);
        return NULL;
    }
    return x;
}

static const char *pki_path(struct pki *p, const char *name)
{
    char *f = p->files[p->n_files++];
    size_t dl = strlen(p->dir), nl = strlen(name);
    if (dl + 1 + nl >= sizeof p->files[0])
        return NULL;
    memcpy(f, p->dir, dl);
    f[dl] = '/';
    memcpy(f + dl + 1, name, nl + 1);
    return f;
}

static bool write_pem(const char *path, X509 *x, EVP_PKEY *k)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return false;
    bool ok = x ? PEM_write_X509(f, x) == 1
                : PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL) == 1;
    return fclose(f) == 0 && ok;
}

/* ca1 signs n1, n2, "n3" (a cert for the wrong node); ca2 signs another n2. */
struct tls_files {
    const char *ca1, *ca2, *n1_cert, *n1_key, *n2_cert, *n2_key, *n3_cert, *n3_key;
    const char *n2x_cert, *n2x_key;
};

static bool pki_make(struct pki *p, struct tls_files *tf)
{
    snprintf(p->dir, sizeof p->dir, "/tmp/ayder_tls_XXXXXX");
    if (!mkdtemp(p->dir))
        return false;
    EVP_PKEY *k_ca1 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    EVP_PKEY *k_ca2 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    bool ok = k_ca1 && k_ca2 && k;
    X509 *ca1 = ok ? make_cert("ayder test ca", k_ca1, NULL, NULL) : NULL;
    X509 *ca2 = ok ? make_cert("ayder other ca", k_ca2, NULL, NULL) : NULL;
    ok = ok && ca1 && ca2;
    const char *names[] = {"n1", "n2", "n3", "n2"};
    X509 *certs[4] = {0};
    for (int i = 0; ok && i < 4; i++) {
        certs[i] = i < 3 ? make_cert(names[i], k, ca1, k_ca1) : make_cert(names[i], k, ca2, k_ca2);
        ok = certs[i] != NULL;
    }
    if (ok) {
        tf->ca1 = pki_path(p, "ca1.pem");
        tf->ca2 = pki_path(p, "ca2.pem");
        tf->n1_cert = pki_path(p, "n1.pem");
        tf->n2_cert = pki_path(p, "n2.pem");
        tf->n3_cert = pki_path(p, "n3.pem");
        tf->n2x_cert = pki_path(p, "n2x.pem");
        /* One key for every node keeps key generation cheap; the certs differ. */
        tf->n1_key = tf->n2_key = tf->n3_key = tf->n2x_key = pki_path(p, "key.pem");
        ok = write_pem(tf->ca1, ca1, NULL) && write_pem(tf->ca2, ca2, NULL) &&
             write_pem(tf->n1_cert, certs[0], NULL) && write_pem(tf->n2_cert, certs[1], NULL) &&
             write_pem(tf->n3_cert, certs[2], NULL) && write_pem(tf->n2x_cert, certs[3], NULL) &&
             write_pem(tf->n1_key, NULL, k);
    }
    for (int i = 0; i < 4; i++)
        X509_free(certs[i]);
    X509_free(ca1);
    X509_free(ca2);
    EVP_PKEY_free(k_ca1);
    EVP_PKEY_free(k_ca2);
    EVP_PKEY_free(k);
    return ok;
}

static void pki_free(struct pki *p)
{
    for (int i = 0; i < p->n_files; i++)
        unlink(p->files[i]);
    rmdir(p->dir);
}

static void tls_cluster(struct cluster *c, const struct tls_files *tf, const char *n2_cert,
                        const char *ca_of_n2)
{
    memset(c, 0, sizeof *c);
    c->base.tls = true;
    c->base.handshake_timeout_ms = 2000;
    c->ca[0] = tf->ca1;
    c->cert[0] = tf->n1_cert;
    c->key[0] = tf->n1_key;
    c->ca[1] = ca_of_n2;
    c->cert[1] = n2_cert;
    c->key[1] = tf->n2_key;
}

TEST(transport_tls)
{
    struct pki p = {0};
    struct tls_files tf = {0};
    REQUIRE(pki_make(&p, &tf));

    /* Mutual authentication works and carries frames. */
    struct cluster c;
    tls_cluster(&c, &tf, tf.n2_cert, tf.ca1);
    REQUIRE(cluster_init(&c, 2, "127.0.0.1", AF_INET));
    CHECK(wait_until(all_connected, &c, DEADLINE_MS));
    exchange(&c, 2000);

    /* A plaintext client gets nowhere with a TLS server. */
    int fd = raw_connect(AF_INET, transport_port(c.t[0]));
    REQUIRE(fd >= 0);
    CHECK(raw_hello(fd, 77, 2));
    CHECK(raw_closed(fd));
    close(fd);
    struct stat_wait w = {c.t[0], 1, 0};
    CHECK(wait_until(stats_reach, &w, DEADLINE_MS));

    /* An added peer is verified by its name: n2 re-added under the name "n3" (its certificate
     * names "n2") is refused both ways; re-added as "n2" it connects. */
    REQUIRE(transport_remove_peer(c.t[0], 2) == 0);
    struct transport_peer_config wrong = {2, "n3", "127.0.0.1", c.ports[1]};
    REQUIRE(transport_add_peer(c.t[0], &wrong) == 0);
    struct stat_wait w2 = {c.t[0], 4, 0};
    CHECK(wait_until(stats_reach, &w2, DEADLINE_MS));
    struct transport_peer_state ps;
    REQUIRE(transport_peer_state(c.t[0], 2, &ps) == 0);
    CHECK(ps.connects == 0 && !ps.connected && ps.dials >= 1);
    REQUIRE(transport_remove_peer(c.t[0], 2) == 0);
    struct transport_peer_config right = {2, "n2", "127.0.0.1", c.ports[1]};
    REQUIRE(transport_add_peer(c.t[0], &right) == 0);
    CHECK(wait_until(all_connected, &c, DEADLINE_MS));
    exchange(&c, 100);
    cluster_free(&c);

    /* n2 presents a valid certificate for the wrong node id ("n3"); then one from another CA. */
    const char *bad_certs[] = {tf.n3_cert, tf.n2x_cert};
    for (int k = 0; k < 2; k++) {
        tls_cluster(&c, &tf, bad_certs[k], tf.ca1);
        REQUIRE(cluster_init(&c, 2, "127.0.0.1", AF_INET));
        struct stat_wait w1 = {c.t[0], 2, 0};
        CHECK(wait_until(stats_reach, &w1, DEADLINE_MS));
        struct transport_peer_state st;
        REQUIRE(transport_peer_state(c.t[0], 2, &st) == 0);
        CHECK(st.connects == 0 && !st.connected);
        REQUIRE(transport_peer_state(c.t[1], 1, &st) == 0);
        CHECK(st.connects == 0 && !st.connected);
        cluster_free(&c);
    }
    pki_free(&p);
}

/* ------------------------------------------------------------------------------ membership */

static struct transport_peer_config peer_cfg(const struct cluster *c, int i)
{
    return (struct transport_peer_config){c->ids[i], c->names[i], c->host, c->ports[i]};
}

struct refused_wait {
    struct transport *t;
    uint64_t at_least;
};

static bool refused_reach(void *arg)
{
    struct refused_wait *w = arg;
    struct transport_stats st;
    transport_get_stats(w->t, &st);
    return st.refused >= w->at_least;
}

static uint64_t refused_now(struct transport *t)
{
    struct transport_stats st;
    transport_get_stats(t, &st);
    return st.refused;
}

static bool not_connected_to_any(void *arg)
{
    struct cluster *c = arg; /* node 3 (index 2) has no live connection to nodes 1 and 2 */
    for (int j = 0; j < 2; j++) {
        struct transport_peer_state st;
        if (transport_peer_state(c->t[2], c->ids[j], &st) != 0 || st.connected)
            return false;
    }
    return true;
}

/* Nodes 1 and 2 start knowing only each other; node 3 knows both and is added at run time. */
TEST(transport_add_remove_peer_three_nodes)
{
    struct cluster c = {0};
    REQUIRE(cluster_init(&c, 2, "127.0.0.1", AF_INET));
    REQUIRE(wait_until(all_connected, &c, DEADLINE_MS));
    c.n = 3;
    c.ids[2] = 3;
    snprintf(c.names[2], sizeof c.names[2], "n3");
    c.ports[2] = reserve_port(AF_INET);
    REQUIRE(c.ports[2] != 0);
    REQUIRE(node_start(&c, 2) == 0);

    /* Unknown to 1 and 2: its dials are refused. */
    for (int i = 0; i < 2; i++) {
        struct refused_wait w = {c.t[i], 2};
        CHECK(wait_until(refused_reach, &w, DEADLINE_MS));
        CHECK(!transport_has_peer(c.t[i], 3));
        CHECK(transport_send(c.t[i], 3, SLICE_LIT("x")) == ERR_NOT_FOUND);
    }
    struct transport_peer_state st;
    REQUIRE(transport_peer_state(c.t[2], 1, &st) == 0);
    CHECK(st.connects == 0 && st.dials >= 1);

    for (int round = 0; round < 2; round++) {
        /* Added on both sides: everyone connects and frames flow every way. */
        struct transport_peer_config p3 = peer_cfg(&c, 2);
        for (int i = 0; i < 2; i++) {
            REQUIRE(transport_add_peer(c.t[i], &p3) == 0);
            CHECK(transport_has_peer(c.t[i], 3));
            CHECK(transport_add_peer(c.t[i], &p3) == ERR_CONFLICT);
        }
        REQUIRE(wait_until(all_connected, &c, DEADLINE_MS));
        exchange(&c, 300);

        /* Removed on both sides: cut, and its reconnects are refused. */
        uint64_t base_connects[2], base_refused[2];
        for (int i = 0; i < 2; i++) {
            REQUIRE(transport_peer_state(c.t[2], c.ids[i], &st) == 0);
            base_connects[i] = st.connects;
            base_refused[i] = refused_now(c.t[i]);
        }
        for (int i = 0; i < 2; i++) {
            REQUIRE(transport_remove_peer(c.t[i], 3) == 0);
            CHECK(!transport_has_peer(c.t[i], 3));
            CHECK(transport_send(c.t[i], 3, SLICE_LIT("x")) == ERR_NOT_FOUND);
            CHECK(transport_peer_state(c.t[i], 3, &st) == ERR_NOT_FOUND);
            CHECK(transport_remove_peer(c.t[i], 3) == ERR_NOT_FOUND);
        }
        CHECK(wait_until(not_connected_to_any, &c, DEADLINE_MS));
        for (int i = 0; i < 2; i++) {
            struct refused_wait w = {c.t[i], base_refused[i] + 3};
            CHECK(wait_until(refused_reach, &w, DEADLINE_MS));
        }
        /* Neither 1 nor 2 dials 3 any more: over those refused attempts 3 saw at most the
         * handshake that was in flight at the removal. */
        for (int i = 0; i < 2; i++) {
            REQUIRE(transport_peer_state(c.t[2], c.ids[i], &st) == 0);
            CHECK(st.connects <= base_connects[i] + 1);
            CHECK(!st.connected);
        }
        /* 1 and 2 keep talking. */
        struct cluster two = c;
        two.n = 2;
        REQUIRE(all_connected(&two));
        exchange(&two, 300);
    }
    cluster_free(&c);
}

TEST(transport_add_peer_rejected)
{
    struct transport_peer_config p2 = {2, "n2", "127.0.0.1", 7002};
    struct transport_config cfg = {.self_id = 1, .self_name = "n1", .cluster_id = 5,
                                   .listen_host = "127.0.0.1", .peers = &p2, .n_peers = 1};
    struct transport *t = NULL;
    REQUIRE(transport_new(&cfg, &t) == 0);
    struct transport_peer_config self = {1, "n1x", "127.0.0.1", 7001};
    CHECK(transport_add_peer(t, &self) == ERR_CONFLICT);       /* own id */
    struct transport_peer_config self_name = {9, "n1", "127.0.0.1", 7009};
    CHECK(transport_add_peer(t, &self_name) == ERR_CONFLICT);  /* own name */
    CHECK(transport_add_peer(t, &p2) == ERR_CONFLICT);         /* duplicate id */
    struct transport_peer_config dup_name = {3, "n2", "127.0.0.1", 7003};
    CHECK(transport_add_peer(t, &dup_name) == ERR_CONFLICT);   /* duplicate name */
    struct transport_peer_config bad[] = {
        {0, "n0", "127.0.0.1", 7000}, {3, "", "127.0.0.1", 7003}, {3, NULL, "127.0.0.1", 7003},
        {3, "n3", "", 7003},          {3, "n3", NULL, 7003},      {3, "n3", "127.0.0.1", 0},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK(transport_add_peer(t, &bad[i]) == ERR_INVALID);
    CHECK(!transport_has_peer(t, 3) && !transport_has_peer(t, 0));
    /* Fill up to TRANSPORT_MAX_PEERS (one is configured), then the 17th fails. */
    char names[TRANSPORT_MAX_PEERS + 1][16];
    for (uint64_t id = 3; id < 3 + TRANSPORT_MAX_PEERS; id++) {
        snprintf(names[id - 3], sizeof names[0], "n%llu", (unsigned long long)id);
        struct transport_peer_config pc = {id, names[id - 3], "127.0.0.1", (uint16_t)(7000 + id)};
        int rc = transport_add_peer(t, &pc);
        if (id < 2 + TRANSPORT_MAX_PEERS)
            CHECK(rc == 0);
        else
            CHECK(rc == ERR_OVERLOADED);
    }
    struct transport_peer_config p99 = {99, "n2", "127.0.0.1", 7099};
    CHECK(transport_add_peer(t, &p99) == ERR_CONFLICT); /* conflict is reported before a full set */
    CHECK(transport_has_peer(t, 2 + TRANSPORT_MAX_PEERS - 1));
    CHECK(!transport_has_peer(t, 2 + TRANSPORT_MAX_PEERS));
    /* Remove frees a slot; the removed id and name can be reused. */
    CHECK(transport_remove_peer(t, 4) == 0);
    CHECK(transport_remove_peer(t, 4) == ERR_NOT_FOUND);
    struct transport_peer_config again = {4, "n4", "127.0.0.1", 7104};
    CHECK(transport_add_peer(t, &again) == 0);
    CHECK(transport_add_peer(t, &p99) == ERR_CONFLICT);
    p99.name = "n99";
    CHECK(transport_add_peer(t, &p99) == ERR_OVERLOADED);
    /* Removed before start, added before start: the thread starts with the current set. */
    CHECK(transport_remove_peer(t, 5) == 0);
    REQUIRE(transport_start(t) == 0);
    CHECK(transport_remove_peer(t, 6) == 0);
    transport_stop(t);
    CHECK(transport_remove_peer(t, 7) == 0); /* after stop: freed by transport_free */
    CHECK(transport_add_peer(t, &p99) == 0);
    transport_free(t);

    /* transport_new still rejects duplicate names among configured peers. */
    struct transport_peer_config two[2] = {{2, "n2", "127.0.0.1", 1}, {3, "n2", "127.0.0.1", 2}};
    struct transport_config cfg2 = {.self_id = 1, .self_name = "n1", .peers = two, .n_peers = 2};
    t = NULL;
    CHECK(transport_new(&cfg2, &t) == ERR_INVALID);
}

struct hammer {
    struct transport *t;
    atomic_bool done;
    uint32_t sent;
    int send_errors;
};

/* Sends numbered frames to peer 2 until told to stop; ERR_AGAIN is retried. */
static void *hammer_send(void *arg)
{
    struct hammer *h = arg;
    uint8_t buf[1600];
    while (!atomic_load(&h->done) || h->sent < 500) {
        size_t n = make_payload(buf, h->sent, 1);
        int rc = transport_send(h->t, 2, slice_of(buf, n));
        if (rc == 0)
            h->sent++;
        else if (rc != ERR_AGAIN)
            h->send_errors++;
        if (h->sent >= 50000 || h->send_errors > 0)
            break;
    }
    return NULL;
}

struct churn {
    struct cluster *c;
    int iterations;
    int errors;
    atomic_bool finished;
};

static bool peer3_connected(void *arg)
{
    struct transport_peer_state st;
    return transport_peer_state(arg, 3, &st) == 0 && st.connected;
}

/* Adds and removes peer 3 on node 1 in a loop; every 20th round waits for it to connect so
 * live connections are torn down too. */
static void *churn_peers(void *arg)
{
    struct churn *ch = arg;
    struct cluster *c = ch->c;
    struct transport_peer_config p3 = peer_cfg(c, 2);
    uint8_t x = 0; /* node 3 drops what it gets from node 1 */
    for (int i = 0; i < ch->iterations; i++) {
        if (transport_add_peer(c->t[0], &p3) != 0 || !transport_has_peer(c->t[0], 3))
            ch->errors++;
        if (i % 20 == 0 && !wait_until(peer3_connected, c->t[0], DEADLINE_MS))
            ch->errors++;
        int rc = transport_send(c->t[0], 3, slice_of(&x, 1));
        if (rc != 0 && rc != ERR_UNAVAILABLE)
            ch->errors++;
        struct transport_peer_state st;
        if (transport_peer_state(c->t[0], 3, &st) != 0)
            ch->errors++;
        if (transport_remove_peer(c->t[0], 3) != 0 || transport_has_peer(c->t[0], 3) ||
            transport_send(c->t[0], 3, slice_of(&x, 1)) != ERR_NOT_FOUND)
            ch->errors++;
    }
    atomic_store(&ch->finished, true);
    return NULL;
}

static void drop_cb(void *ctx, uint64_t from, struct slice b)
{
    (void)b;
    if (from != 1)
        ++*(int *)ctx;
}

/* One thread sends to node 2 while another adds and removes node 3; node 2 must get every frame
 * in order, and node 3 must still connect afterwards. */
TEST(transport_membership_churn_while_sending)
{
    struct cluster c = {0};
    REQUIRE(cluster_init(&c, 3, "127.0.0.1", AF_INET));
    REQUIRE(wait_until(all_connected, &c, DEADLINE_MS));
    REQUIRE(transport_remove_peer(c.t[0], 3) == 0);

    struct hammer h = {.t = c.t[0]};
    atomic_init(&h.done, false);
    struct churn ch = {&c, 200, 0};
    atomic_init(&ch.finished, false);
    pthread_t th_send, th_churn;
    REQUIRE(pthread_create(&th_send, NULL, hammer_send, &h) == 0);
    REQUIRE(pthread_create(&th_churn, NULL, churn_peers, &ch) == 0);
    struct rx_check rx = {0};
    int stray = 0;
    /* Drain while churn_peers runs its bounded rounds (each wait in it has a deadline). */
    while (!atomic_load(&ch.finished)) {
        transport_wait(c.t[1], 20);
        transport_poll(c.t[1], rx_cb, &rx);
        transport_poll(c.t[2], drop_cb, &stray);
    }
    pthread_join(th_churn, NULL);
    atomic_store(&h.done, true);
    pthread_join(th_send, NULL);
    CHECK_EQ_INT(ch.errors, 0);
    CHECK_EQ_INT(h.send_errors, 0);
    CHECK(h.sent >= 500);
    uint64_t end = clock_mono_ms() + DEADLINE_MS;
    while (rx.total < h.sent && clock_mono_ms() < end) {
        transport_wait(c.t[1], 50);
        transport_poll(c.t[1], rx_cb, &rx);
    }
    CHECK_EQ_INT(rx.total, h.sent);
    CHECK_EQ_INT(rx.errors, 0);
    CHECK_EQ_INT(stray, 0);

    /* After the churn, 3 comes back as a full member. */
    struct transport_peer_config p3 = peer_cfg(&c, 2);
    REQUIRE(transport_add_peer(c.t[0], &p3) == 0);
    CHECK(wait_until(all_connected, &c, DEADLINE_MS));
    exchange(&c, 200);
    cluster_free(&c);
}
