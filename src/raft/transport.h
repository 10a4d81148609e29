/* transport.h -- the Raft peer transport: one framed TCP (optionally mutual-TLS) connection per
 * peer, run by its own thread.
 *
 * What this module owns: a thread, a listening socket on the node's raft address, at most one live
 * connection per configured peer (plus connections still handshaking), a bounded send queue per
 * peer and one bounded receive queue. The peer set is dynamic: transport_add_peer and
 * transport_remove_peer change it at run time (Raft membership changes). It carries opaque byte
 * strings (encoded struct raft_msg, see raft_msg_encode); it never interprets them.
 *
 * Threading:
 *  - transport_send, transport_poll, transport_wait, transport_peer_state, transport_get_stats,
 *    transport_add_peer, transport_remove_peer and transport_has_peer may be called from any
 *    thread, also while peers are being added or removed (they take the transport's mutex briefly
 *    and never touch a socket), so the core thread never blocks on the network. Sockets are only
 *    touched by the transport thread. None may run concurrently with transport_free.
 *  - Received frames are queued; the OWNER drains them with transport_poll(), whose callback runs
 *    on the caller's thread. When the receive queue goes from empty to non-empty the transport
 *    thread calls cfg.wake(cfg.wake_ctx) (if set) so the owner can schedule a drain (e.g.
 *    uv_async_send on its loop); wake must be cheap and must not call back into the transport.
 *    transport_wait() blocks until frames are queued (for owners without a loop, and tests).
 *
 * Connections (full protocol in docs/DISK_FORMAT.md, "Raft transport frames"):
 *  - every node listens and dials every peer it has no connection to, with exponential backoff
 *    with jitter in [backoff_min_ms, backoff_max_ms]; the backoff resets once a handshake
 *    completes. Host names are resolved with getaddrinfo on the transport thread; IPv4 and IPv6.
 *  - after TCP (and the TLS 1.3 handshake when tls is on) the dialer sends a HELLO frame (magic,
 *    supported protocol version range, cluster id, sender node id, incarnation); the acceptor
 *    checks it and answers with its own HELLO, which the dialer checks. A connection is refused
 *    (closed) on a bad magic, no common version, another cluster id, an unknown or own node id,
 *    a dialed peer answering with another id, or a TLS certificate that does not name the node
 *    id string (CN or DNS SAN). "Unknown" means not a peer at the moment the HELLO arrives: a
 *    removed peer is refused from then on, an added one is accepted. The highest common version
 *    is used. The whole handshake must finish within handshake_timeout_ms.
 *  - if both sides dial, the connection dialed by the node with the SMALLER id wins on both sides.
 *    A connection from a new incarnation of the peer (it restarted; HELLO carries a random
 *    incarnation) or a second one dialed by the same node replaces the old one.
 *    Frames not yet written on a losing connection are dropped (Raft tolerates loss); frames on
 *    one connection are delivered in order, exactly once.
 *  - a frame with a bad CRC, an over-long length, an unknown type, or bytes that fail TLS close
 *    the connection (never the process); the dialer then reconnects with backoff.
 *
 * Queues and flow control:
 *  - transport_send copies the bytes into the peer's send queue. If the peer has no live
 *    connection it returns ERR_UNAVAILABLE (nothing is queued for a peer that is down; Raft
 *    resends). If the queue would exceed send_queue_max_bytes it returns ERR_AGAIN: Raft's flow
 *    control should back off. When a connection is lost its queue is discarded.
 *  - when more than recv_queue_max_bytes are waiting for the owner, the transport stops reading
 *    sockets until the owner drains (TCP back-pressure), so memory stays bounded.
 *
 * Ownership: transport_new copies everything in cfg (strings included). Slices handed to the
 * transport_poll callback are valid only during that callback.
 */
#ifndef AYDER_RAFT_TRANSPORT_H
#define AYDER_RAFT_TRANSPORT_H

#include "base/buf.h"
#include "base/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TRANSPORT_MAX_PEERS 16
#define TRANSPORT_NAME_MAX 255            /* node id string, bytes */
#define TRANSPORT_HOST_MAX 255
#define TRANSPORT_DEFAULT_MAX_FRAME_BYTES ((64u << 20) + 65536u)

/* Wire constants (docs/DISK_FORMAT.md "Raft transport frames"). */
#define TRANSPORT_MAGIC 0x54525941u /* the bytes "AYRT" read as a little-endian u32 */
#define TRANSPORT_VERSION_MIN 1
#define TRANSPORT_VERSION_MAX 1
#define TRANSPORT_FRAME_HEADER 9          /* len u32 | crc32c u32 | type u8 */
#define TRANSPORT_HELLO_BYTES 32 /* magic u32 | vmin u16 | vmax u16 | cluster | node | incarnation */
#define TRANSPORT_PREAUTH_MAX_FRAME 256   /* largest frame accepted before the HELLO */

enum transport_frame_type {
    TRANSPORT_FRAME_HELLO = 1,
    TRANSPORT_FRAME_MSG = 2,   /* an encoded raft message (opaque to the transport) */
};

struct transport_peer_config {
    uint64_t id;          /* non-zero, unique; the Raft node id */
    const char *name;     /* the node id string; TLS certificates must name it */
    const char *host;     /* host name, IPv4 or IPv6 literal (no brackets) */
    uint16_t port;
};

struct transport_config {
    uint64_t self_id;
    const char *self_name;
    uint64_t cluster_id;
    const char *listen_host;   /* e.g. "0.0.0.0", "::", "127.0.0.1"; NULL = "0.0.0.0" */
    uint16_t listen_port;      /* 0 = ephemeral; see transport_port() */
    const struct transport_peer_config *peers; /* excluding self */
    size_t n_peers;            /* <= TRANSPORT_MAX_PEERS */

    size_t max_frame_bytes;        /* payload bound; 0 = TRANSPORT_DEFAULT_MAX_FRAME_BYTES */
    size_t send_queue_max_bytes;   /* per peer, framed bytes; 0 = 64 MiB */
    size_t recv_queue_max_bytes;   /* all peers; 0 = 128 MiB */
    uint32_t backoff_min_ms;       /* 0 = 50 */
    uint32_t backoff_max_ms;       /* 0 = 2000 */
    uint32_t handshake_timeout_ms; /* 0 = 5000 */

    /* mTLS (RF_HA_TLS=1 with RF_HA_TLS_CA / _CERT / _KEY): TLS 1.3 only, both sides present a
     * certificate chained to ca_file that names the node id string. */
    bool tls;
    const char *tls_ca_file;
    const char *tls_cert_file;
    const char *tls_key_file;

    /* Called on the transport thread when the receive queue becomes non-empty. Optional. */
    void (*wake)(void *ctx);
    void *wake_ctx;
};

struct transport_peer_state {
    bool connected;         /* a live, handshaken connection exists */
    uint32_t conns;         /* connections for this peer, live or handshaking (>1 = a race) */
    size_t queued_bytes;    /* framed bytes waiting in the send queue */
    uint64_t connects;      /* handshakes completed with this peer */
    uint64_t dials;         /* outbound connection attempts */
    uint64_t drops;         /* live connections lost or replaced */
};

struct transport_stats {
    uint64_t accepted;          /* inbound TCP connections */
    uint64_t refused;           /* handshakes refused (hello, TLS, certificate, timeout) */
    uint64_t bad_frames;        /* connections closed for a bad CRC / length / type */
    uint64_t frames_in, frames_out;
};

struct transport;

/* Validate cfg and allocate; no thread or socket yet. ERR_INVALID for a bad config (including
 * a peer that is self, or a duplicate peer id or non-empty name), ERR_IO when the TLS files
 * cannot be loaded (or no pipe could be made), ERR_NOMEM. */
int transport_new(const struct transport_config *cfg, struct transport **out);
/* Bind the listener and start the thread. ERR_IO (bind/listen failed; errno logged). */
int transport_start(struct transport *t);
/* Stop the thread and close every connection (queued frames are dropped). Idempotent. */
void transport_stop(struct transport *t);
/* transport_stop + free. NULL is fine. */
void transport_free(struct transport *t);

/* The bound listening port (after transport_start). */
uint16_t transport_port(const struct transport *t);

/* Queue bytes (copied) for peer_id. 0, ERR_NOT_FOUND (unknown peer), ERR_UNAVAILABLE (no live
 * connection), ERR_AGAIN (send queue full), ERR_TOO_LARGE (> max_frame_bytes), ERR_NOMEM. */
int transport_send(struct transport *t, uint64_t peer_id, struct slice bytes);

typedef void (*transport_recv_fn)(void *ctx, uint64_t from, struct slice bytes);
/* Deliver every queued received frame to fn on the calling thread, in arrival order (per peer:
 * in the order the peer sent them). Returns how many. fn must not call transport_poll; do not
 * call it concurrently with transport_stop or transport_free. */
size_t transport_poll(struct transport *t, transport_recv_fn fn, void *ctx);
/* Block until at least one received frame is queued or timeout_ms passes; true if queued. */
bool transport_wait(struct transport *t, uint32_t timeout_ms);

/* 0 or ERR_NOT_FOUND. */
int transport_peer_state(struct transport *t, uint64_t peer_id, struct transport_peer_state *out);

/* ---- membership (any thread; before, during or after transport_start / transport_stop) ---- */

/* Add a peer (copied) to dial and to accept: ERR_CONFLICT if the id (or its name) is already a
 * peer or is self, ERR_OVERLOADED if TRANSPORT_MAX_PEERS are configured, ERR_INVALID for a bad
 * config (id 0, empty name/host, over-long name/host, port 0), ERR_NOMEM. The transport thread
 * starts dialing it promptly (no waiting for the poll timeout). TLS verifies it by its name, like
 * configured peers. Its state (transport_peer_state) starts from zero. */
int transport_add_peer(struct transport *t, const struct transport_peer_config *peer);
/* Remove a peer: its connections are closed (promptly, by the transport thread), its send queue
 * dropped, frames received from it and not yet polled dropped, it is no longer dialed, and
 * HELLOs from it are refused from then on. From the return on, transport_send / peer_state
 * answer ERR_NOT_FOUND for it. It may be re-added later: the old connections are never taken for
 * the new peer's. ERR_NOT_FOUND if unknown. */
int transport_remove_peer(struct transport *t, uint64_t id);
/* Is this id a configured peer right now. */
bool transport_has_peer(struct transport *t, uint64_t id);
void transport_get_stats(struct transport *t, struct transport_stats *out);

/* ---- helpers (pure; exported for main.c and the fuzz target) ---- */

/* Parse "host:port", "1.2.3.4:port" or "[v6]:port" into host (NUL-terminated, brackets removed)
 * and port (1..65535). 0 or ERR_INVALID. */
int transport_parse_addr(const char *s, char *host, size_t host_cap, uint16_t *port);
/* A stable non-zero 64-bit id for a node id string (for configs that name nodes by string). */
uint64_t transport_node_id(const char *name);

/* Append one frame (header + payload) to out. 0 or ERR_NOMEM. */
int transport_frame_encode(uint8_t type, struct slice payload, struct sbuf *out);
/* Write one frame into out (room for TRANSPORT_FRAME_HEADER + payload.len bytes, payload.len <
 * UINT32_MAX); returns the bytes written. */
size_t transport_frame_put(uint8_t *out, uint8_t type, struct slice payload);
/* Decode the frame at the start of in. 0: *type, *payload (borrowed from in) and *consumed set;
 * ERR_AGAIN: incomplete, need more bytes; ERR_TOO_LARGE: length field over max_payload;
 * ERR_CORRUPT: CRC mismatch; ERR_INVALID: zero length (no type byte). */
int transport_frame_decode(struct slice in, size_t max_payload, uint8_t *type,
                           struct slice *payload, size_t *consumed);

struct transport_hello {
    uint16_t version_min, version_max;
    uint64_t cluster_id;
    uint64_t node_id;
    uint64_t incarnation; /* random per transport instance: tells a restarted peer apart */
};
void transport_hello_encode(const struct transport_hello *h, uint8_t out[TRANSPORT_HELLO_BYTES]);
/* ERR_INVALID on a wrong size, bad magic or an empty/inverted version range. */
int transport_hello_decode(struct slice payload, struct transport_hello *out);
/* Highest version in both ranges, or 0 if they do not overlap. */
uint16_t transport_version_pick(const struct transport_hello *a, const struct transport_hello *b);

#endif
