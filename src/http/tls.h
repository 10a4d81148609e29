/* tls.h -- HTTPS for the HTTP server: a reloadable server context and a per-connection TLS
 * record layer over memory BIOs.
 *
 * What this module owns: the OpenSSL server context (certificate chain, private key, optional
 * client CA), its replacement on reload, and one SSL object per connection with its two memory
 * BIOs. It does no socket I/O and knows nothing of libuv: the server's read path hands it the
 * ciphertext it read and gets plaintext back; its write path hands it plaintext and gets the
 * ciphertext to write. So the handshake never blocks a worker (it advances only as bytes
 * arrive) and the server's own limits and deadlines bound it like any other request bytes.
 *
 * Policy (modern defaults): TLS 1.2 and 1.3 only; TLS 1.2 with ECDHE and AEAD ciphers only;
 * no renegotiation, no compression; ALPN "http/1.1" when the client offers it. With a client
 * CA, a client that presents no certificate, or one the CA did not sign, fails the handshake.
 *
 * Reload (http_tls_reload): a new context is built from the same files; if that fails the old
 * one stays and the error says why. New connections take the context current when they are
 * accepted; existing ones keep theirs (SSL_new holds a reference on its SSL_CTX), so a reload
 * never drops or disturbs an open connection.
 *
 * Threads: struct http_tls is shared by every worker (new/reload/free under its own mutex);
 * a struct http_tls_conn belongs to the thread of its connection.
 */
#ifndef AYDER_HTTP_TLS_H
#define AYDER_HTTP_TLS_H

#include "base/buf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct http_tls_config {
    const char *cert_file;      /* PEM: the certificate, then any intermediates */
    const char *key_file;       /* PEM private key */
    const char *client_ca_file; /* PEM CA bundle: NULL = no client certificates asked for */
};

struct http_tls;      /* the shared, reloadable context */
struct http_tls_conn; /* one connection's TLS state */

struct http_tls_stats {
    uint64_t handshakes;        /* completed */
    uint64_t handshake_failures; /* garbage, bad or missing client certificate, protocol errors */
    uint64_t reloads;           /* successful */
};

/* Load the files (copied paths: cfg need not outlive the call). 0, or ERR_INVALID with err set
 * to a one-line reason (which file, OpenSSL's message). */
int http_tls_new(const struct http_tls_config *cfg, struct http_tls **out, char *err,
                 size_t err_len);
/* Rebuild the context from the same files (any thread). 0, or ERR_INVALID with err set; on
 * failure the current context stays in use. */
int http_tls_reload(struct http_tls *t, char *err, size_t err_len);
/* After every connection using it is freed. NULL is a no-op. */
void http_tls_free(struct http_tls *t);
void http_tls_stats(const struct http_tls *t, struct http_tls_stats *st);
bool http_tls_client_auth(const struct http_tls *t);

/* A server-side connection with the current context. 0 or ERR_NOMEM. */
int http_tls_conn_new(struct http_tls *t, struct http_tls_conn **out);
void http_tls_conn_free(struct http_tls_conn *c);
/* Ciphertext in: advance the handshake, then decrypt every complete record, appending the
 * plaintext to *plain (its sbuf limit applies: a failed sbuf is the caller's to check).
 * 0 (possibly with nothing appended: more bytes needed), ERR_CLOSED (the peer sent
 * close_notify), or ERR_INVALID (handshake failure or a bad record: close the connection; an
 * alert may be waiting in http_tls_conn_take). Handshake replies wait for http_tls_conn_seal. */
int http_tls_conn_read(struct http_tls_conn *c, const uint8_t *p, size_t n, struct sbuf *plain);
/* True once the handshake completed. */
bool http_tls_conn_ready(const struct http_tls_conn *c);
/* Encrypt all of *io (plaintext) and replace it by the ciphertext to send: pending handshake
 * records first, then the data, then close_notify when `closing` (once). Plaintext before the
 * handshake completed is refused: ERR_INVALID, *io untouched. 0 or ERR_NOMEM. */
int http_tls_conn_seal(struct http_tls_conn *c, struct sbuf *io, bool closing);
/* Move pending ciphertext (e.g. a fatal alert) into out, at most cap bytes; returns the count. */
size_t http_tls_conn_take(struct http_tls_conn *c, uint8_t *out, size_t cap);

#endif
