/* transport.c -- the Raft peer transport thread: listen, dial with backoff, TLS, HELLO, frames.
 *
 * One thread runs a poll(2) loop over: a wake pipe (senders and the owner poke it), the listening
 * socket, and every connection. poll rather than libuv because src/raft must not include <uv.h>
 * (STYLE.md) and a node has at most TRANSPORT_MAX_PEERS peers. TLS uses OpenSSL directly on the
 * non-blocking socket (SSL_set_fd); WANT_READ / WANT_WRITE map to POLLIN / POLLOUT.
 *
 * Connection states (transport thread only):
 *
 *     dial() --> CONNECTING --(SO_ERROR == 0)--+
 *                                              v
 *     accept() ------------------------> [TLS] --(SSL_do_handshake ok)--> HELLO --(peer's HELLO
 *                                                                          valid; wins tie-break)
 *   The dialer sends its HELLO as soon as HELLO is entered; the acceptor answers with its own
 *   HELLO only after accepting the dialer's, so the dialer's "live" means both sides accepted.
 *                                                                            |
 *                                                                            v
 *                                                                           LIVE
 *     any state --(error, EOF, bad frame, refused, deadline)--> closed (conn_close)
 *
 * Peers (dynamic membership, transport_add_peer / transport_remove_peer):
 *
 *     add_peer: allocate, publish in t->peers[] (under t->mu), poke --> the thread dials it
 *     remove_peer: unlink from t->peers[], mark removed, drop its queues, move it to t->retired
 *                  (under t->mu), poke --> the thread closes its connections, then frees it
 *
 * Invariants:
 *  1. Sockets, SSL objects and struct conn are touched only by the transport thread; everything
 *     shared with other threads (send queues, receive queue, counters, peer.live) is under t->mu.
 *  2. A peer has at most one LIVE connection (peer.active); only it carries MSG frames, and only
 *     after it sent its HELLO, so the first frame each way on every connection is a HELLO.
 *  3. Before a connection's HELLO is accepted, frames longer than TRANSPORT_PREAUTH_MAX_FRAME are
 *     refused, so an unauthenticated client cannot make us allocate more than that; afterwards
 *     the rx buffer never exceeds max_frame_bytes + header.
 *  4. Memory is bounded: each send queue by send_queue_max_bytes (+ one tx batch of
 *     TX_BATCH_BYTES or one frame), the receive queue by recv_queue_max_bytes (+ one read burst):
 *     reading stops while it is over.
 *  5. tx is refilled from the send queue only when fully written, so an SSL_write that returned
 *     WANT_WRITE is always retried with the same bytes.
 *  6. Nothing received from the network is asserted on: bad input closes that connection.
 *  7. When listen_host is a specific IP literal (not "0.0.0.0" or "::"), outgoing connections to
 *     peers of the same address family are bound to that address (port chosen by the kernel), so
 *     a peer sees our traffic come from our own raft address. Firewall rules that match on
 *     (source, destination) pairs, as the cluster tests' partitions do, then cut both directions.
 *  8. Each peer is its own heap object. t->peers[] (the current peers) and t->retired (removed
 *     peers not yet freed) are read and written only under t->mu; other threads use a struct
 *     peer only while holding t->mu, after finding it there. A peer's id, name, host and port
 *     never change after it is published, so the transport thread reads them without the lock.
 *  9. Only the transport thread frees a peer, at the top of a loop turn, after closing and
 *     reaping every connection that points to it; so conn.peer and the thread's per-turn peer
 *     snapshot never dangle. A re-added id is a new object: connections to the old one are never
 *     mistaken for it (they are closed as the old peer's, and a HELLO matches only the current
 *     object). With no thread running (not started, or stopped) transport_free frees them.
 * 10. A removed peer is invisible to transport_send / peer_state / has_peer and to HELLO
 *     checks from the moment remove_peer returns; frames from it still waiting in the receive
 *     queue are dropped then, and frames its connections deliver later are discarded.
 * 11. The wake pipe lives from transport_new to transport_free, so poke() is safe from any thread
 *     at any time (bytes written while no thread runs are drained when one starts).
 */
#include "raft/transport.h"

#include "base/alloc.h"
#include "base/assert.h"
#include "base/clock.h"
#include "base/hash.h"
#include "base/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MOD "transport"
#define TX_BATCH_BYTES (256u << 10)
#define RX_CHUNK (64u << 10)
#define READ_BUDGET (1u << 20) /* bytes read per connection per loop turn (fairness) */
#define MAX_CONNS 96           /* live + handshaking; accepts beyond it are closed at once */

/* ------------------------------------------------------------------------------ types */

struct txf {
    struct txf *next;
    size_t len;
    uint8_t data[];
};

struct rxf {
    struct rxf *next;
    uint64_t from;
    size_t len;
    uint8_t data[];
};

enum conn_state { CS_CONNECTING, CS_TLS, CS_HELLO, CS_LIVE };

struct peer;

struct conn {
    struct conn *next;
    int fd;
    SSL *ssl;
    enum conn_state st;
    bool dialer;
    bool dead;
    bool hello_recv;
    bool ssl_want_write;
    struct peer *peer; /* the dialed peer, or the peer named by an accepted HELLO */
    uint64_t seq;
    uint64_t incarnation; /* the peer's, from its HELLO */
    uint64_t deadline_ms; /* handshake deadline; unused once LIVE */
    uint8_t *rx;
    size_t rx_len, rx_cap;
    uint8_t *tx;
    size_t tx_len, tx_off, tx_cap;
};

struct peer {
    /* immutable once published (invariant 8) */
    uint64_t id;
    char name[TRANSPORT_NAME_MAX + 1];
    char host[TRANSPORT_HOST_MAX + 1];
    uint16_t port;
    /* under t->mu */
    bool removed;
    struct peer *next_retired;
    struct txf *q_head, *q_tail;
    bool live;
    struct transport_peer_state st;
    /* transport thread only */
    struct conn *active;
    uint64_t next_dial_ms;
    uint32_t attempts;
};

struct transport {
    struct transport_config cfg; /* strings point into the copies below / in peers */
    char self_name[TRANSPORT_NAME_MAX + 1];
    char listen_host[TRANSPORT_HOST_MAX + 1];
    /* Source address for outgoing connections (invariant 7); src_family 0 = let the kernel pick. */
    int src_family;
    struct sockaddr_storage src_addr;
    socklen_t src_len;
    char *tls_ca, *tls_cert, *tls_key;
    SSL_CTX *ssl_ctx;
    int wake_fds[2];
    uint64_t incarnation;
    uint64_t rng;

    pthread_t thread;
    bool started, stopped;
    atomic_bool stopping;
    atomic_bool wake_pending;
    int wake_rd, wake_wr;
    int listen_fd;
    uint16_t port;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct rxf *rx_head, *rx_tail;
    size_t rx_bytes;
    struct transport_stats stats;

    /* under mu (invariant 8) */
    struct peer *peers[TRANSPORT_MAX_PEERS];
    size_t n_peers;
    struct peer *retired;

    /* transport thread only */
    struct conn *conns;
    size_t n_conns;
    uint64_t conn_seq;
    struct pollfd *pfds;
    struct conn **pconns;
    size_t pcap;
};

/* ------------------------------------------------------------------------------ helpers */

static uint64_t rng_next(struct transport *t)
{
    uint64_t x = t->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return t->rng = x;
}

static void poke(struct transport *t)
{
    if (!atomic_exchange(&t->wake_pending, true)) {
        uint8_t b = 1;
        ssize_t r = write(t->wake_wr, &b, 1);
        (void)r; /* a full pipe already wakes the thread */
    }
}

/* The current peer with this id, or NULL. Caller holds t->mu (or owns t exclusively). */
static struct peer *peer_find_locked(struct transport *t, uint64_t id)
{
    for (size_t i = 0; i < t->n_peers; i++)
        if (t->peers[i]->id == id)
            return t->peers[i];
    return NULL;
}

/* For the transport thread: the pointer stays valid after unlocking because only this thread
 * frees peers (invariant 9). */
static struct peer *peer_lookup(struct transport *t, uint64_t id)
{
    pthread_mutex_lock(&t->mu);
    struct peer *p = peer_find_locked(t, id);
    pthread_mutex_unlock(&t->mu);
    return p;
}

static bool peer_name_taken_locked(struct transport *t, const char *name)
{
    if (!name[0])
        return false; /* unnamed peers (plaintext configs) do not collide */
    if (strcmp(name, t->self_name) == 0)
        return true;
    for (size_t i = 0; i < t->n_peers; i++)
        if (strcmp(t->peers[i]->name, name) == 0)
            return true;
    return false;
}

static void txq_clear_locked(struct peer *p)
{
    struct txf *f = p->q_head;
    while (f) {
        struct txf *n = f->next;
        xfree(f);
        f = n;
    }
    p->q_head = p->q_tail = NULL;
    p->st.queued_bytes = 0;
}

static char *dup_opt(const char *s) { return s ? xstrndup(s, strlen(s)) : NULL; }

static bool copy_str(char *dst, size_t cap, const char *s)
{
    if (!s || strlen(s) >= cap)
        return false;
    memcpy(dst, s, strlen(s) + 1);
    return true;
}

/* Validate pc and allocate an unpublished peer. need_name: an empty name is ERR_INVALID. */
static int peer_new(const struct transport_peer_config *pc, bool need_name, struct peer **out)
{
    if (!pc || pc->id == 0 || pc->port == 0 || !pc->host || !pc->host[0] ||
        (need_name && (!pc->name || !pc->name[0])))
        return ERR_INVALID;
    struct peer *p = xcalloc(1, sizeof *p);
    if (!p)
        return ERR_NOMEM;
    if (!copy_str(p->name, sizeof p->name, pc->name ? pc->name : "") ||
        !copy_str(p->host, sizeof p->host, pc->host)) {
        xfree(p);
        return ERR_INVALID;
    }
    p->id = pc->id;
    p->port = pc->port;
    *out = p;
    return 0;
}

static void tcp_tune(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
#ifdef TCP_KEEPIDLE
    int idle = 5, intvl = 2, cnt = 3;
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
#endif
#ifdef TCP_USER_TIMEOUT
    /* Unacknowledged data for this long means the peer is gone: fail the connection so a
     * restarted peer's new connection is not kept waiting behind a dead one. */
    unsigned int uto_ms = 15000;
    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &uto_ms, sizeof uto_ms);
#endif
}

/* ------------------------------------------------------------------------------ TLS */

static void log_ssl_errors(const char *what)
{
    unsigned long e;
    char buf[256];
    while ((e = ERR_get_error()) != 0) {
        ERR_error_string_n(e, buf, sizeof buf);
        LOG_W(MOD, "%s: %s", what, buf);
    }
}

static int tls_ctx_new(struct transport *t)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    if (!ctx)
        return ERR_NOMEM;
    if (!SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) ||
        !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) ||
        SSL_CTX_load_verify_locations(ctx, t->tls_ca, NULL) != 1 ||
        SSL_CTX_use_certificate_chain_file(ctx, t->tls_cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, t->tls_key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        log_ssl_errors("tls setup");
        SSL_CTX_free(ctx);
        return ERR_IO;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_num_tickets(ctx, 0); /* no resumption: every connection is fully verified */
    t->ssl_ctx = ctx;
    return 0;
}

/* The verified peer certificate must name the node id string (DNS SAN, or CN without SANs). */
static bool tls_names_peer(struct conn *c, const char *name)
{
    if (SSL_get_verify_result(c->ssl) != X509_V_OK)
        return false;
    X509 *x = SSL_get1_peer_certificate(c->ssl);
    if (!x)
        return false;
    int ok = X509_check_host(x, name, strlen(name), X509_CHECK_FLAG_NO_WILDCARDS, NULL);
    X509_free(x);
    return ok == 1;
}

/* ------------------------------------------------------------------------------ connections */

static void conn_attach(struct transport *t, struct conn *c, struct peer *p)
{
    c->peer = p;
    pthread_mutex_lock(&t->mu);
    p->st.conns++;
    pthread_mutex_unlock(&t->mu);
}

static void schedule_dial(struct transport *t, struct peer *p)
{
    uint64_t d = t->cfg.backoff_min_ms;
    for (uint32_t i = 0; i < p->attempts && d < t->cfg.backoff_max_ms; i++)
        d *= 2;
    if (d > t->cfg.backoff_max_ms)
        d = t->cfg.backoff_max_ms;
    if (p->attempts < 32)
        p->attempts++;
    /* Full jitter over the upper half so peers that failed together do not retry together. */
    uint64_t delay = d / 2 + rng_next(t) % (d / 2 + 1);
    p->next_dial_ms = clock_mono_ms() + delay;
}

/* Mark c dead and release what it holds; the loop frees it. refused counts a failed handshake. */
static void conn_close(struct transport *t, struct conn *c, const char *why, bool refused)
{
    if (c->dead)
        return;
    c->dead = true;
    struct peer *p = c->peer;
    if (p)
        LOG_D(MOD, "conn to %s closed: %s", p->name, why);
    else
        LOG_D(MOD, "inbound conn closed: %s", why);
    pthread_mutex_lock(&t->mu);
    if (refused)
        t->stats.refused++;
    if (p) {
        p->st.conns--;
        if (p->active == c) {
            p->live = false;
            p->st.connected = false;
            p->st.drops++;
            txq_clear_locked(p);
        }
    }
    pthread_mutex_unlock(&t->mu);
    if (p && p->active == c)
        p->active = NULL;
    if (p && !p->active && (c->dialer || c->st == CS_LIVE))
        schedule_dial(t, p);
    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

static void conn_free(struct conn *c)
{
    ASSERT(c->dead && c->fd < 0 && !c->ssl);
    xfree(c->rx);
    xfree(c->tx);
    xfree(c);
}

static struct conn *conn_new(struct transport *t, int fd, bool dialer)
{
    struct conn *c = xcalloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->fd = fd;
    c->dialer = dialer;
    c->seq = ++t->conn_seq;
    c->deadline_ms = clock_mono_ms() + t->cfg.handshake_timeout_ms;
    c->next = t->conns;
    t->conns = c;
    t->n_conns++;
    return c;
}

/* Append bytes to tx (only used for the HELLO, when tx is empty). */
static bool tx_put(struct conn *c, const void *p, size_t n)
{
    if (c->tx_cap - c->tx_len < n) {
        size_t cap = c->tx_len + n < 4096 ? 4096 : c->tx_len + n;
        uint8_t *nb = xrealloc(c->tx, cap);
        if (!nb)
            return false;
        c->tx = nb;
        c->tx_cap = cap;
    }
    memcpy(c->tx + c->tx_len, p, n);
    c->tx_len += n;
    return true;
}

static bool send_hello(struct transport *t, struct conn *c)
{
    struct transport_hello h = {TRANSPORT_VERSION_MIN, TRANSPORT_VERSION_MAX, t->cfg.cluster_id,
                                t->cfg.self_id, t->incarnation};
    uint8_t pl[TRANSPORT_HELLO_BYTES];
    transport_hello_encode(&h, pl);
    struct sbuf b;
    sbuf_init(&b, 0);
    bool ok = transport_frame_encode(TRANSPORT_FRAME_HELLO, slice_of(pl, sizeof pl), &b) == 0 &&
              tx_put(c, b.data, b.len);
    sbuf_free(&b);
    return ok;
}

/* >0 bytes, 0 would block, -1 closed or failed. */
static ssize_t conn_recv(struct conn *c, uint8_t *buf, size_t n)
{
    if (!c->ssl) {
        for (;;) {
            ssize_t r = recv(c->fd, buf, n, 0);
            if (r > 0)
                return r;
            if (r == 0)
                return -1;
            if (errno == EINTR)
                continue;
            return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
        }
    }
    int r = SSL_read(c->ssl, buf, n > INT32_MAX ? INT32_MAX : (int)n);
    if (r > 0)
        return r;
    switch (SSL_get_error(c->ssl, r)) {
    case SSL_ERROR_WANT_READ:
        return 0;
    case SSL_ERROR_WANT_WRITE:
        c->ssl_want_write = true;
        return 0;
    default:
        ERR_clear_error();
        return -1;
    }
}

static ssize_t conn_xmit(struct conn *c, const uint8_t *buf, size_t n)
{
    if (!c->ssl) {
        for (;;) {
            ssize_t r = send(c->fd, buf, n, MSG_NOSIGNAL);
            if (r >= 0)
                return r;
            if (errno == EINTR)
                continue;
            return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
        }
    }
    int r = SSL_write(c->ssl, buf, n > INT32_MAX ? INT32_MAX : (int)n);
    if (r > 0)
        return r;
    switch (SSL_get_error(c->ssl, r)) {
    case SSL_ERROR_WANT_WRITE:
        c->ssl_want_write = true;
        return 0;
    case SSL_ERROR_WANT_READ:
        return 0;
    default:
        ERR_clear_error();
        return -1;
    }
}

/* Write what tx holds; refill from the peer's queue while LIVE. false = connection failed. */
static bool conn_flush(struct transport *t, struct conn *c)
{
    for (;;) {
        while (c->tx_off < c->tx_len) {
            ssize_t r = conn_xmit(c, c->tx + c->tx_off, c->tx_len - c->tx_off);
            if (r < 0)
                return false;
            if (r == 0)
                return true;
            c->tx_off += (size_t)r;
        }
        c->tx_off = c->tx_len = 0;
        if (c->st != CS_LIVE)
            return true;
        struct peer *p = c->peer;
        uint64_t n_frames = 0;
        pthread_mutex_lock(&t->mu);
        while (p->q_head && c->tx_len < TX_BATCH_BYTES) {
            struct txf *f = p->q_head;
            if (c->tx_cap - c->tx_len < f->len) {
                size_t cap = c->tx_len + f->len;
                if (cap < TX_BATCH_BYTES)
                    cap = TX_BATCH_BYTES;
                uint8_t *nb = xrealloc(c->tx, cap);
                if (!nb)
                    break;
                c->tx = nb;
                c->tx_cap = cap;
            }
            memcpy(c->tx + c->tx_len, f->data, f->len);
            c->tx_len += f->len;
            p->q_head = f->next;
            if (!p->q_head)
                p->q_tail = NULL;
            p->st.queued_bytes -= f->len;
            n_frames++;
            xfree(f);
        }
        t->stats.frames_out += n_frames;
        pthread_mutex_unlock(&t->mu);
        if (c->tx_len == 0)
            return true;
    }
}

static uint64_t dialer_id(const struct transport *t, const struct conn *c)
{
    return c->dialer ? t->cfg.self_id : c->peer->id;
}

/* c just completed its handshake: make it the peer's live connection, or drop it if the existing
 * one wins the tie-break. */
static void conn_go_live(struct transport *t, struct conn *c)
{
    struct peer *p = c->peer;
    struct conn *old = p->active;
    if (old) {
        bool c_wins;
        if (old->incarnation != c->incarnation || dialer_id(t, old) == dialer_id(t, c))
            c_wins = true; /* the peer restarted, or re-dialed: the newer connection is current */
        else
            c_wins = dialer_id(t, c) < dialer_id(t, old);
        if (!c_wins) {
            conn_close(t, c, "duplicate connection (tie-break)", false);
            return;
        }
        p->active = NULL; /* so closing old neither drops the queue nor schedules a dial */
        pthread_mutex_lock(&t->mu);
        p->st.drops++;
        pthread_mutex_unlock(&t->mu);
        conn_close(t, old, "replaced by a newer connection (tie-break)", false);
    }
    c->st = CS_LIVE;
    p->active = c;
    p->attempts = 0;
    pthread_mutex_lock(&t->mu);
    p->live = true;
    p->st.connected = true;
    p->st.connects++;
    pthread_mutex_unlock(&t->mu);
    LOG_I(MOD, "connected to %s (%s)", p->name, c->dialer ? "dialed" : "accepted");
}

static bool on_hello(struct transport *t, struct conn *c, struct slice pl)
{
    struct transport_hello h, mine = {TRANSPORT_VERSION_MIN, TRANSPORT_VERSION_MAX,
                                      t->cfg.cluster_id, t->cfg.self_id, t->incarnation};
    const char *why = NULL;
    struct peer *p = NULL;
    if (transport_hello_decode(pl, &h) != 0)
        why = "malformed HELLO";
    else if (transport_version_pick(&mine, &h) == 0)
        why = "no common protocol version";
    else if (h.cluster_id != t->cfg.cluster_id)
        why = "other cluster id";
    else if (!(p = peer_lookup(t, h.node_id)))
        why = c->peer && c->peer->id == h.node_id ? "dialed peer was removed meanwhile"
                                                  : "unknown node id";
    else if (c->peer && c->peer != p && c->peer->id == p->id)
        why = "dialed peer was removed (and re-added) meanwhile"; /* invariant 9 */
    else if (c->peer && c->peer != p)
        why = "dialed peer answered with another node id";
    else if (c->ssl && !tls_names_peer(c, p->name))
        why = "certificate does not name the node id";
    if (why) {
        LOG_W(MOD, "refused connection: %s", why);
        conn_close(t, c, why, true);
        return false;
    }
    c->hello_recv = true;
    c->incarnation = h.incarnation;
    if (!c->peer) {
        /* The acceptor answers only a valid HELLO, so a dialer never goes live on a connection
         * the acceptor refuses. */
        conn_attach(t, c, p);
        if (!send_hello(t, c)) {
            conn_close(t, c, "out of memory", false);
            return false;
        }
    }
    conn_go_live(t, c);
    return !c->dead;
}

static void on_msg(struct transport *t, struct conn *c, struct slice pl)
{
    struct rxf *f = xmalloc(sizeof *f + pl.len);
    if (!f) {
        LOG_E(MOD, "out of memory: dropped a %zu-byte frame from %s", pl.len, c->peer->name);
        return; /* Raft tolerates a lost message */
    }
    f->next = NULL;
    f->from = c->peer->id;
    f->len = pl.len;
    if (pl.len)
        memcpy(f->data, pl.ptr, pl.len);
    pthread_mutex_lock(&t->mu);
    if (c->peer->removed) { /* invariant 10 */
        pthread_mutex_unlock(&t->mu);
        xfree(f);
        return;
    }
    bool was_empty = !t->rx_head;
    if (t->rx_tail)
        t->rx_tail->next = f;
    else
        t->rx_head = f;
    t->rx_tail = f;
    t->rx_bytes += pl.len;
    t->stats.frames_in++;
    if (was_empty)
        pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
    if (was_empty && t->cfg.wake)
        t->cfg.wake(t->cfg.wake_ctx);
}

static bool rx_paused(struct transport *t)
{
    pthread_mutex_lock(&t->mu);
    bool p = t->rx_bytes >= t->cfg.recv_queue_max_bytes;
    pthread_mutex_unlock(&t->mu);
    return p;
}

static void bad_frame(struct transport *t, struct conn *c, const char *why)
{
    pthread_mutex_lock(&t->mu);
    t->stats.bad_frames++;
    pthread_mutex_unlock(&t->mu);
    LOG_W(MOD, "closing connection%s%s: %s", c->peer ? " to " : "", c->peer ? c->peer->name : "",
          why);
    conn_close(t, c, why, !c->hello_recv);
}

/* Parse every complete frame in rx. false = the connection was closed. */
static bool conn_parse(struct transport *t, struct conn *c)
{
    size_t off = 0;
    while (!c->dead) {
        size_t max = c->hello_recv ? t->cfg.max_frame_bytes : TRANSPORT_PREAUTH_MAX_FRAME;
        uint8_t type;
        struct slice pl;
        size_t used;
        int rc = transport_frame_decode(slice_of(c->rx + off, c->rx_len - off), max, &type, &pl,
                                        &used);
        if (rc == ERR_AGAIN)
            break;
        if (rc != 0) {
            bad_frame(t, c, rc == ERR_CORRUPT ? "frame CRC mismatch"
                            : rc == ERR_TOO_LARGE ? "frame too large" : "malformed frame");
            return false;
        }
        off += used;
        if (!c->hello_recv) {
            if (type != TRANSPORT_FRAME_HELLO) {
                bad_frame(t, c, "first frame is not a HELLO");
                return false;
            }
            if (!on_hello(t, c, pl))
                return false;
        } else if (type == TRANSPORT_FRAME_MSG) {
            on_msg(t, c, pl);
        } else {
            bad_frame(t, c, "unexpected frame type");
            return false;
        }
    }
    if (c->dead)
        return false;
    if (off) {
        memmove(c->rx, c->rx + off, c->rx_len - off);
        c->rx_len -= off;
    }
    return true;
}

static bool conn_read(struct transport *t, struct conn *c)
{
    size_t budget = READ_BUDGET;
    while (budget && !c->dead) {
        if (c->st == CS_LIVE && rx_paused(t))
            return true;
        size_t want = RX_CHUNK;
        if (c->rx_len >= 4) { /* the whole frame, when its (bounded) length is known */
            uint64_t total = 8 + (uint64_t)get_le32(c->rx);
            size_t max = c->hello_recv ? t->cfg.max_frame_bytes : TRANSPORT_PREAUTH_MAX_FRAME;
            if (total <= (uint64_t)max + TRANSPORT_FRAME_HEADER && total > c->rx_len + want)
                want = (size_t)total - c->rx_len;
        }
        if (c->rx_cap - c->rx_len < want) {
            uint8_t *nb = xrealloc(c->rx, c->rx_len + want);
            if (!nb) {
                conn_close(t, c, "out of memory", false);
                return false;
            }
            c->rx = nb;
            c->rx_cap = c->rx_len + want;
        }
        ssize_t r = conn_recv(c, c->rx + c->rx_len, c->rx_cap - c->rx_len);
        if (r < 0) {
            conn_close(t, c, "connection closed by peer or failed", !c->hello_recv);
            return false;
        }
        if (r == 0)
            return true;
        c->rx_len += (size_t)r;
        budget = (size_t)r >= budget ? 0 : budget - (size_t)r;
        if (!conn_parse(t, c))
            return false;
        if (c->rx_len == 0 && c->rx_cap > 4 * RX_CHUNK) { /* give back a big frame's buffer */
            xfree(c->rx);
            c->rx = NULL;
            c->rx_cap = 0;
        }
    }
    return true;
}

static void conn_start_session(struct transport *t, struct conn *c)
{
    if (t->ssl_ctx) {
        c->ssl = SSL_new(t->ssl_ctx);
        if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) {
            conn_close(t, c, "SSL_new failed", false);
            return;
        }
        if (c->dialer)
            SSL_set_connect_state(c->ssl);
        else
            SSL_set_accept_state(c->ssl);
        c->st = CS_TLS;
        return;
    }
    c->st = CS_HELLO;
    if (c->dialer && !send_hello(t, c))
        conn_close(t, c, "out of memory", false);
}

/* Advance c as far as it goes without blocking. */
static void conn_io(struct transport *t, struct conn *c, short revents)
{
    if (c->st == CS_CONNECTING) {
        if (!(revents & (POLLOUT | POLLERR | POLLHUP)))
            return;
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
            conn_close(t, c, err ? strerror(err) : "connect failed", false);
            return;
        }
        conn_start_session(t, c);
        if (c->dead)
            return;
    }
    c->ssl_want_write = false;
    if (c->st == CS_TLS) {
        int r = SSL_do_handshake(c->ssl);
        if (r != 1) {
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ)
                return;
            if (e == SSL_ERROR_WANT_WRITE) {
                c->ssl_want_write = true;
                return;
            }
            log_ssl_errors("tls handshake");
            conn_close(t, c, "TLS handshake failed", true);
            return;
        }
        if (c->dialer && !tls_names_peer(c, c->peer->name)) {
            LOG_W(MOD, "refused %s: certificate does not name the node id", c->peer->name);
            conn_close(t, c, "certificate does not name the node id", true);
            return;
        }
        c->st = CS_HELLO;
        if (c->dialer && !send_hello(t, c)) {
            conn_close(t, c, "out of memory", false);
            return;
        }
    }
    if (!conn_flush(t, c)) {
        conn_close(t, c, "write failed", !c->hello_recv);
        return;
    }
    if (!conn_read(t, c))
        return;
    if (c->st == CS_LIVE && !conn_flush(t, c))
        conn_close(t, c, "write failed", false);
}

/* ------------------------------------------------------------------------------ dial, accept */

/* Invariant 7: a specific IPv4/IPv6 literal in listen_host becomes the dial source address.
 * Wildcards and host names leave the choice to the kernel. */
static void source_addr_init(struct transport *t)
{
    t->src_family = 0;
    memset(&t->src_addr, 0, sizeof t->src_addr);
    struct sockaddr_in *a4 = (struct sockaddr_in *)&t->src_addr;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&t->src_addr;
    if (inet_pton(AF_INET, t->listen_host, &a4->sin_addr) == 1) {
        if (a4->sin_addr.s_addr == htonl(INADDR_ANY))
            return;
        a4->sin_family = AF_INET;
        a4->sin_port = 0;
        t->src_family = AF_INET;
        t->src_len = sizeof *a4;
    } else if (inet_pton(AF_INET6, t->listen_host, &a6->sin6_addr) == 1) {
        if (memcmp(&a6->sin6_addr, &in6addr_any, sizeof in6addr_any) == 0)
            return;
        a6->sin6_family = AF_INET6;
        a6->sin6_port = 0;
        t->src_family = AF_INET6;
        t->src_len = sizeof *a6;
    }
}

/* Bind fd (of the given family) to the source address, if one applies. false = bind failed. */
static bool bind_source(struct transport *t, int fd, int family)
{
    if (t->src_family == 0 || t->src_family != family)
        return true;
#ifdef IP_BIND_ADDRESS_NO_PORT
    /* Pick the port at connect time (by 4-tuple), so many dials do not exhaust ports. */
    int one = 1;
    (void)setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
#endif
    if (bind(fd, (const struct sockaddr *)&t->src_addr, t->src_len) != 0) {
        LOG_W(MOD, "bind dial source %s: %s", t->listen_host, strerror(errno));
        return false;
    }
    return true;
}

static void dial(struct transport *t, struct peer *p)
{
    pthread_mutex_lock(&t->mu);
    p->st.dials++;
    uint64_t n_dial = p->st.dials;
    pthread_mutex_unlock(&t->mu);
    char port[8];
    snprintf(port, sizeof port, "%u", (unsigned)p->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    int gr = getaddrinfo(p->host, port, &hints, &ai);
    if (gr != 0 || !ai) {
        LOG_W(MOD, "resolve %s: %s", p->host, gai_strerror(gr));
        schedule_dial(t, p);
        return;
    }
    size_t n = 0;
    for (struct addrinfo *a = ai; a; a = a->ai_next)
        n++;
    struct addrinfo *a = ai; /* rotate through the addresses across attempts */
    for (size_t i = (size_t)(n_dial % n); i > 0; i--)
        a = a->ai_next;
    int fd = socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        freeaddrinfo(ai);
        schedule_dial(t, p);
        return;
    }
    if (!bind_source(t, fd, a->ai_family)) {
        close(fd);
        freeaddrinfo(ai);
        schedule_dial(t, p);
        return;
    }
    tcp_tune(fd);
    int r = connect(fd, a->ai_addr, a->ai_addrlen);
    int err = errno;
    freeaddrinfo(ai);
    if (r != 0 && err != EINPROGRESS) {
        LOG_D(MOD, "dial %s: %s", p->name, strerror(err));
        close(fd);
        schedule_dial(t, p);
        return;
    }
    struct conn *c = conn_new(t, fd, true);
    if (!c) {
        close(fd);
        schedule_dial(t, p);
        return;
    }
    conn_attach(t, c, p);
    c->st = CS_CONNECTING;
    if (r == 0)
        conn_io(t, c, POLLOUT);
}

static void do_accept(struct transport *t)
{
    for (;;) {
        int fd = accept4(t->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return; /* EAGAIN, or a transient error: poll again */
        if (t->n_conns >= MAX_CONNS) {
            close(fd);
            continue;
        }
        tcp_tune(fd);
        struct conn *c = conn_new(t, fd, false);
        if (!c) {
            close(fd);
            continue;
        }
        pthread_mutex_lock(&t->mu);
        t->stats.accepted++;
        pthread_mutex_unlock(&t->mu);
        conn_start_session(t, c);
        if (!c->dead)
            conn_io(t, c, 0);
    }
}

/* ------------------------------------------------------------------------------ the loop */

static bool peer_has_conn(struct transport *t, struct peer *p)
{
    for (struct conn *c = t->conns; c; c = c->next)
        if (!c->dead && c->peer == p)
            return true;
    return false;
}

static void reap(struct transport *t)
{
    struct conn **pp = &t->conns;
    while (*pp) {
        struct conn *c = *pp;
        if (c->dead) {
            *pp = c->next;
            t->n_conns--;
            conn_free(c);
        } else {
            pp = &c->next;
        }
    }
}

static bool queue_nonempty(struct transport *t, struct peer *p)
{
    pthread_mutex_lock(&t->mu);
    bool r = p->q_head != NULL;
    pthread_mutex_unlock(&t->mu);
    return r;
}

static void peer_free(struct peer *p)
{
    txq_clear_locked(p);
    xfree(p);
}

/* Invariant 9: close every connection of a removed peer, reap them, then free the peer. */
static void retire_removed(struct transport *t)
{
    pthread_mutex_lock(&t->mu);
    struct peer *list = t->retired;
    t->retired = NULL;
    pthread_mutex_unlock(&t->mu);
    if (!list)
        return;
    for (struct conn *c = t->conns; c; c = c->next) {
        if (c->dead || !c->peer)
            continue;
        for (struct peer *p = list; p; p = p->next_retired)
            if (c->peer == p) {
                conn_close(t, c, "peer removed", false);
                break;
            }
    }
    reap(t);
    while (list) {
        struct peer *n = list->next_retired;
        LOG_I(MOD, "peer %s (%llu) removed", list->name, (unsigned long long)list->id);
        peer_free(list);
        list = n;
    }
}

static void *thread_main(void *arg)
{
    struct transport *t = arg;
    pthread_setname_np(pthread_self(), "ayder-raft");
    /* OpenSSL writes with write(2): a peer reset must fail the call, not kill the process. */
    sigset_t ss;
    sigemptyset(&ss);
    sigaddset(&ss, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &ss, NULL);

    while (!atomic_load(&t->stopping)) {
        retire_removed(t);
        struct peer *snap[TRANSPORT_MAX_PEERS];
        pthread_mutex_lock(&t->mu);
        size_t n_snap = t->n_peers;
        memcpy(snap, t->peers, n_snap * sizeof snap[0]);
        pthread_mutex_unlock(&t->mu);
        uint64_t now = clock_mono_ms();
        int64_t timeout = 1000;
        for (size_t i = 0; i < n_snap; i++) {
            struct peer *p = snap[i];
            if (p->active || peer_has_conn(t, p))
                continue;
            if (now >= p->next_dial_ms)
                dial(t, p);
            else if ((int64_t)(p->next_dial_ms - now) < timeout)
                timeout = (int64_t)(p->next_dial_ms - now);
        }
        /* Handshake deadlines. */
        for (struct conn *c = t->conns; c; c = c->next) {
            if (c->dead || c->st == CS_LIVE)
                continue;
            if (now >= c->deadline_ms)
                conn_close(t, c, "handshake timeout", c->st != CS_CONNECTING);
            else if ((int64_t)(c->deadline_ms - now) < timeout)
                timeout = (int64_t)(c->deadline_ms - now);
        }
        reap(t);

        size_t need = t->n_conns + 2;
        if (need > t->pcap) {
            struct pollfd *np = xrealloc(t->pfds, need * sizeof *np);
            if (np)
                t->pfds = np;
            struct conn **nc = xrealloc(t->pconns, need * sizeof *nc);
            if (nc)
                t->pconns = nc;
            if (!np || !nc) {
                LOG_E(MOD, "out of memory in the poll loop");
                timeout = 10;
            } else {
                t->pcap = need;
            }
        }
        size_t n = 0;
        bool paused = rx_paused(t);
        t->pfds[n++] = (struct pollfd){.fd = t->wake_rd, .events = POLLIN};
        t->pfds[n++] = (struct pollfd){.fd = t->listen_fd, .events = POLLIN};
        for (struct conn *c = t->conns; c && n < t->pcap; c = c->next) {
            short ev = 0;
            if (c->st == CS_CONNECTING)
                ev = POLLOUT;
            else if (c->st == CS_TLS)
                ev = c->ssl_want_write ? POLLOUT : POLLIN;
            else {
                if (!(paused && c->st == CS_LIVE))
                    ev |= POLLIN;
                if (c->tx_off < c->tx_len || c->ssl_want_write)
                    ev |= POLLOUT;
                if (c->st == CS_LIVE && c->tx_len == 0 && queue_nonempty(t, c->peer))
                    timeout = 0; /* a frame arrived between the last flush and now */
            }
            /* Bytes OpenSSL already decrypted are invisible to poll. */
            if (c->ssl && SSL_pending(c->ssl) > 0 && !(paused && c->st == CS_LIVE))
                timeout = 0;
            t->pconns[n] = c;
            t->pfds[n++] = (struct pollfd){.fd = c->fd, .events = ev};
        }
        if (timeout < 0)
            timeout = 0;
        int pr = poll(t->pfds, (nfds_t)n, (int)timeout);
        if (pr < 0 && errno != EINTR) {
            LOG_E(MOD, "poll: %s", strerror(errno));
            break;
        }
        if (t->pfds[0].revents) {
            /* Drain first, then clear the flag: clearing first let a poke's byte be drained
             * with the flag left set, so every later poke was skipped and queued frames waited
             * for the 1 s poll timeout. A poke between the drain and the clear is seen below:
             * every live connection's queue is checked after the poll. */
            uint8_t buf[64];
            while (read(t->wake_rd, buf, sizeof buf) > 0) {
            }
            atomic_store(&t->wake_pending, false);
        }
        if (atomic_load(&t->stopping))
            break;
        if (t->pfds[1].revents & POLLIN)
            do_accept(t);
        for (size_t i = 2; i < n; i++) {
            struct conn *c = t->pconns[i];
            if (c->dead)
                continue;
            short re = pr > 0 ? t->pfds[i].revents : 0;
            bool work = re != 0 || (c->ssl && SSL_pending(c->ssl) > 0);
            if (c->st == CS_LIVE && !work && c->tx_len == 0)
                work = queue_nonempty(t, c->peer);
            if (work)
                conn_io(t, c, re);
        }
        /* Connections that were paused by a full receive queue resume when it drains. */
        if (paused && !rx_paused(t))
            for (struct conn *c = t->conns; c; c = c->next)
                if (!c->dead && c->st == CS_LIVE)
                    conn_io(t, c, POLLIN);
    }
    for (struct conn *c = t->conns; c; c = c->next)
        conn_close(t, c, "transport stopped", false);
    reap(t);
    return NULL;
}

/* ------------------------------------------------------------------------------ public API */

int transport_new(const struct transport_config *cfg, struct transport **out)
{
    if (!cfg || cfg->self_id == 0 || cfg->n_peers > TRANSPORT_MAX_PEERS ||
        (cfg->n_peers && !cfg->peers))
        return ERR_INVALID;
    if (cfg->tls && (!cfg->tls_ca_file || !cfg->tls_cert_file || !cfg->tls_key_file))
        return ERR_INVALID;
    struct transport *t = xcalloc(1, sizeof *t);
    if (!t)
        return ERR_NOMEM;
    t->cfg = *cfg;
    t->wake_rd = t->wake_wr = t->listen_fd = -1;
    int rc = ERR_INVALID;
    if (!copy_str(t->self_name, sizeof t->self_name, cfg->self_name ? cfg->self_name : "") ||
        !copy_str(t->listen_host, sizeof t->listen_host,
                  cfg->listen_host ? cfg->listen_host : "0.0.0.0"))
        goto err_free;
    t->cfg.self_name = t->self_name;
    t->cfg.listen_host = t->listen_host;
    source_addr_init(t);
    t->cfg.peers = NULL; /* the live set is t->peers[] */
    t->cfg.n_peers = 0;
    if (!t->cfg.max_frame_bytes)
        t->cfg.max_frame_bytes = TRANSPORT_DEFAULT_MAX_FRAME_BYTES;
    if (t->cfg.max_frame_bytes > UINT32_MAX - 1)
        goto err_free;
    if (!t->cfg.send_queue_max_bytes)
        t->cfg.send_queue_max_bytes = 64u << 20;
    if (!t->cfg.recv_queue_max_bytes)
        t->cfg.recv_queue_max_bytes = 128u << 20;
    if (!t->cfg.backoff_min_ms)
        t->cfg.backoff_min_ms = 50;
    if (!t->cfg.backoff_max_ms)
        t->cfg.backoff_max_ms = 2000;
    if (t->cfg.backoff_max_ms < t->cfg.backoff_min_ms)
        t->cfg.backoff_max_ms = t->cfg.backoff_min_ms;
    if (!t->cfg.handshake_timeout_ms)
        t->cfg.handshake_timeout_ms = 5000;
    if (pipe2(t->wake_fds, O_NONBLOCK | O_CLOEXEC) != 0) {
        rc = ERR_IO;
        goto err_free;
    }
    t->wake_rd = t->wake_fds[0];
    t->wake_wr = t->wake_fds[1];
    for (size_t i = 0; i < cfg->n_peers; i++) {
        const struct transport_peer_config *pc = &cfg->peers[i];
        struct peer *p = NULL;
        /* Configured peers may be unnamed without TLS (names are only checked by TLS). */
        if ((rc = peer_new(pc, cfg->tls, &p)) != 0)
            goto err_free;
        rc = ERR_INVALID;
        if (pc->id == cfg->self_id || peer_find_locked(t, pc->id) ||
            peer_name_taken_locked(t, p->name)) {
            xfree(p);
            goto err_free;
        }
        t->peers[t->n_peers++] = p;
    }
    rc = ERR_NOMEM;
    if (cfg->tls) {
        t->tls_ca = dup_opt(cfg->tls_ca_file);
        t->tls_cert = dup_opt(cfg->tls_cert_file);
        t->tls_key = dup_opt(cfg->tls_key_file);
        if (!t->tls_ca || !t->tls_cert || !t->tls_key)
            goto err_free;
        if ((rc = tls_ctx_new(t)) != 0)
            goto err_free;
    }
    t->cfg.tls_ca_file = t->tls_ca;
    t->cfg.tls_cert_file = t->tls_cert;
    t->cfg.tls_key_file = t->tls_key;
    uint64_t seed[3] = {clock_mono_ns(), (uint64_t)(uintptr_t)t, (uint64_t)getpid()};
    t->incarnation = hash_bytes(seed, sizeof seed, (uint64_t)clock_wall_ms());
    t->rng = t->incarnation | 1;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&t->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&t->mu, NULL);
    *out = t;
    return 0;

err_free:
    for (size_t i = 0; i < t->n_peers; i++)
        peer_free(t->peers[i]);
    if (t->wake_rd >= 0) {
        close(t->wake_rd);
        close(t->wake_wr);
    }
    if (t->ssl_ctx)
        SSL_CTX_free(t->ssl_ctx);
    xfree(t->tls_ca);
    xfree(t->tls_cert);
    xfree(t->tls_key);
    xfree(t);
    return rc;
}

static int listen_open(struct transport *t)
{
    char port[8];
    snprintf(port, sizeof port, "%u", (unsigned)t->cfg.listen_port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE},
                    *ai = NULL;
    int gr = getaddrinfo(t->listen_host, port, &hints, &ai);
    if (gr != 0 || !ai) {
        LOG_E(MOD, "resolve listen address %s: %s", t->listen_host, gai_strerror(gr));
        return ERR_INVALID;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 128) != 0) {
        LOG_E(MOD, "listen on %s:%s: %s", t->listen_host, port, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return ERR_IO;
    }
    freeaddrinfo(ai);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0) {
        close(fd);
        return ERR_IO;
    }
    t->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                             : ((struct sockaddr_in *)&ss)->sin_port);
    t->listen_fd = fd;
    return 0;
}

int transport_start(struct transport *t)
{
    if (t->started)
        return ERR_INVALID;
    int rc = listen_open(t);
    if (rc != 0)
        return rc;
    if (pthread_create(&t->thread, NULL, thread_main, t) != 0) {
        close(t->listen_fd);
        t->listen_fd = -1;
        return ERR_NOMEM;
    }
    t->started = true;
    return 0;
}

void transport_stop(struct transport *t)
{
    if (!t || !t->started || t->stopped)
        return;
    atomic_store(&t->stopping, true);
    uint8_t b = 1;
    ssize_t r = write(t->wake_wr, &b, 1);
    (void)r;
    pthread_join(t->thread, NULL);
    t->stopped = true;
    close(t->listen_fd);
    t->listen_fd = -1;
}

void transport_free(struct transport *t)
{
    if (!t)
        return;
    transport_stop(t);
    /* No thread runs now: every connection is gone, so every peer can be freed. */
    for (size_t i = 0; i < t->n_peers; i++)
        peer_free(t->peers[i]);
    while (t->retired) {
        struct peer *n = t->retired->next_retired;
        peer_free(t->retired);
        t->retired = n;
    }
    close(t->wake_rd);
    close(t->wake_wr);
    struct rxf *f = t->rx_head;
    while (f) {
        struct rxf *n = f->next;
        xfree(f);
        f = n;
    }
    xfree(t->pfds);
    xfree(t->pconns);
    if (t->ssl_ctx)
        SSL_CTX_free(t->ssl_ctx);
    xfree(t->tls_ca);
    xfree(t->tls_cert);
    xfree(t->tls_key);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    xfree(t);
}

uint16_t transport_port(const struct transport *t) { return t->port; }

/* 0 if a payload of len bytes may be queued for peer_id now. Caller holds t->mu. */
static int send_check_locked(struct transport *t, uint64_t peer_id, size_t len, struct peer **out)
{
    struct peer *p = peer_find_locked(t, peer_id);
    *out = p;
    if (!p)
        return ERR_NOT_FOUND;
    if (len > t->cfg.max_frame_bytes)
        return ERR_TOO_LARGE;
    size_t flen = TRANSPORT_FRAME_HEADER + len;
    if (!p->live)
        return ERR_UNAVAILABLE;
    if (p->st.queued_bytes + flen > t->cfg.send_queue_max_bytes)
        return ERR_AGAIN;
    return 0;
}

int transport_send(struct transport *t, uint64_t peer_id, struct slice bytes)
{
    struct peer *p;
    pthread_mutex_lock(&t->mu);
    int rc = send_check_locked(t, peer_id, bytes.len, &p);
    pthread_mutex_unlock(&t->mu);
    if (rc != 0)
        return rc;
    /* Frame and checksum outside the lock, on the caller's thread. */
    size_t flen = TRANSPORT_FRAME_HEADER + bytes.len;
    struct txf *f = xmalloc(sizeof *f + flen);
    if (!f)
        return ERR_NOMEM;
    ASSERT(transport_frame_put(f->data, TRANSPORT_FRAME_MSG, bytes) == flen);
    f->next = NULL;
    f->len = flen;
    /* Look the peer up again: it may have been removed (and even re-added) meanwhile. */
    pthread_mutex_lock(&t->mu);
    rc = send_check_locked(t, peer_id, bytes.len, &p);
    bool was_empty = rc == 0 && !p->q_head;
    if (rc == 0) {
        if (p->q_tail)
            p->q_tail->next = f;
        else
            p->q_head = f;
        p->q_tail = f;
        p->st.queued_bytes += flen;
    }
    pthread_mutex_unlock(&t->mu);
    if (rc != 0) {
        xfree(f);
        return rc;
    }
    if (was_empty)
        poke(t);
    return 0;
}

size_t transport_poll(struct transport *t, transport_recv_fn fn, void *ctx)
{
    pthread_mutex_lock(&t->mu);
    struct rxf *f = t->rx_head;
    bool was_full = t->rx_bytes >= t->cfg.recv_queue_max_bytes;
    t->rx_head = t->rx_tail = NULL;
    t->rx_bytes = 0;
    pthread_mutex_unlock(&t->mu);
    if (was_full)
        poke(t); /* the thread stopped reading; let it resume (invariant 11) */
    size_t n = 0;
    while (f) {
        struct rxf *next = f->next;
        fn(ctx, f->from, slice_of(f->data, f->len));
        xfree(f);
        f = next;
        n++;
    }
    return n;
}

bool transport_wait(struct transport *t, uint32_t timeout_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&t->mu);
    while (!t->rx_head) {
        if (pthread_cond_timedwait(&t->cv, &t->mu, &ts) != 0)
            break;
    }
    bool r = t->rx_head != NULL;
    pthread_mutex_unlock(&t->mu);
    return r;
}

int transport_peer_state(struct transport *t, uint64_t peer_id, struct transport_peer_state *out)
{
    pthread_mutex_lock(&t->mu);
    struct peer *p = peer_find_locked(t, peer_id);
    if (p)
        *out = p->st;
    pthread_mutex_unlock(&t->mu);
    return p ? 0 : ERR_NOT_FOUND;
}

int transport_add_peer(struct transport *t, const struct transport_peer_config *peer)
{
    struct peer *p = NULL;
    int rc = peer_new(peer, true, &p);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&t->mu);
    if (peer->id == t->cfg.self_id || peer_find_locked(t, peer->id) ||
        peer_name_taken_locked(t, p->name))
        rc = ERR_CONFLICT;
    else if (t->n_peers >= TRANSPORT_MAX_PEERS)
        rc = ERR_OVERLOADED;
    else
        t->peers[t->n_peers++] = p; /* next_dial_ms 0: dialed on the thread's next turn */
    pthread_mutex_unlock(&t->mu);
    if (rc != 0) {
        xfree(p);
        return rc;
    }
    LOG_I(MOD, "peer %s (%llu) added at %s:%u", p->name, (unsigned long long)p->id, p->host,
          (unsigned)p->port);
    poke(t);
    return 0;
}

int transport_remove_peer(struct transport *t, uint64_t id)
{
    pthread_mutex_lock(&t->mu);
    size_t i = 0;
    while (i < t->n_peers && t->peers[i]->id != id)
        i++;
    if (i == t->n_peers) {
        pthread_mutex_unlock(&t->mu);
        return ERR_NOT_FOUND;
    }
    struct peer *p = t->peers[i];
    t->peers[i] = t->peers[--t->n_peers];
    t->peers[t->n_peers] = NULL;
    p->removed = true;
    p->live = false;
    p->st.connected = false;
    txq_clear_locked(p);
    /* Invariant 10: what it sent and the owner has not polled yet is dropped. */
    struct rxf **pp = &t->rx_head;
    t->rx_tail = NULL;
    while (*pp) {
        struct rxf *f = *pp;
        if (f->from == id) {
            *pp = f->next;
            t->rx_bytes -= f->len;
            xfree(f);
        } else {
            t->rx_tail = f;
            pp = &f->next;
        }
    }
    p->next_retired = t->retired;
    t->retired = p;
    pthread_mutex_unlock(&t->mu);
    poke(t); /* close its connections now (and resume reading if the rx queue was full) */
    return 0;
}

bool transport_has_peer(struct transport *t, uint64_t id)
{
    pthread_mutex_lock(&t->mu);
    bool r = peer_find_locked(t, id) != NULL;
    pthread_mutex_unlock(&t->mu);
    return r;
}

void transport_get_stats(struct transport *t, struct transport_stats *out)
{
    pthread_mutex_lock(&t->mu);
    *out = t->stats;
    pthread_mutex_unlock(&t->mu);
}
