/* tls.c -- HTTPS record layer for the HTTP server: see tls.h for the model.
 *
 *   socket --(server read)--> rbio --SSL_do_handshake/SSL_read--> plaintext --> conn->in
 *   conn->out plaintext --SSL_write--> wbio --(seal: drained into the same buffer)--> socket
 *
 * Per connection (worker thread):
 *
 *   HANDSHAKE --(SSL_do_handshake == 1)--> READY --(peer close_notify | error)--> closed by server
 *       \--(garbage, bad client certificate, timeout in the server)--> closed by server
 *
 * Invariants:
 *  1. The rbio is drained on every http_tls_conn_read: every complete record is decrypted into
 *     the caller's buffer before it returns, so no plaintext hides inside OpenSSL while the
 *     server has stopped reading the socket (backpressure stays with the socket, as for HTTP).
 *  2. Ciphertext leaves only through http_tls_conn_seal/take, in the order OpenSSL produced it;
 *     application data is never sealed before the handshake completed.
 *  3. The OpenSSL error queue is per thread and shared by every connection on a worker: it is
 *     cleared before each SSL call whose result goes through SSL_get_error, and after a failure.
 *  4. A connection's SSL_CTX is the one current at http_tls_conn_new; the SSL holds a reference,
 *     so a reload (which drops the context's own reference) frees it only when the last
 *     connection using it is freed.
 */
#include "http/tls.h"

#include "base/alloc.h"
#include "base/err.h"
#include "base/log.h"

#include <limits.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#define MOD "tls"
#define PLAIN_CHUNK 16384      /* one TLS record's worth of plaintext per SSL_read */
#define SEAL_STEP (1u << 20)   /* SSL_write takes an int: seal big outputs in steps */

/* TLS 1.2 suites: forward secrecy (ECDHE) and AEAD only. TLS 1.3 uses OpenSSL's defaults,
 * which are all AEAD. */
static const char TLS12_CIPHERS[] =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

struct http_tls {
    pthread_mutex_t mu;
    SSL_CTX *ctx;                /* current: taken by new connections (under mu) */
    char *cert_file, *key_file, *client_ca_file;
    _Atomic uint64_t handshakes, handshake_failures, reloads;
};

struct http_tls_conn {
    struct http_tls *tls;
    SSL *ssl;
    BIO *rbio, *wbio;            /* owned by ssl */
    bool ready;
    bool shutdown_sent;
};

/* The first queued OpenSSL error as text (then the queue is cleared). */
static void ssl_error_text(char *out, size_t len)
{
    unsigned long e = ERR_get_error();
    if (e)
        ERR_error_string_n(e, out, len);
    else
        snprintf(out, len, "unknown error");
    ERR_clear_error();
}

/* Offer "http/1.1" only: a client that asks for h2 alone gets no ALPN answer and may still
 * speak HTTP/1.1 (curl does). */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    static const unsigned char ours[] = "\x08http/1.1";
    unsigned char *sel = NULL;
    if (SSL_select_next_proto(&sel, outlen, ours, sizeof ours - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

static int ctx_build(const struct http_tls *t, SSL_CTX **out, char *err, size_t err_len)
{
    char why[256];
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        snprintf(err, err_len, "TLS: cannot create a context (out of memory)");
        return ERR_INVALID;
    }
    if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
        SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) != 1) {
        ssl_error_text(why, sizeof why);
        snprintf(err, err_len, "TLS: protocol setup: %s", why);
        goto err_free;
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    /* Idle keep-alive connections give their 34 KB of record buffers back. */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_use_certificate_chain_file(ctx, t->cert_file) != 1) {
        ssl_error_text(why, sizeof why);
        snprintf(err, err_len, "TLS: certificate %s: %s", t->cert_file, why);
        goto err_free;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, t->key_file, SSL_FILETYPE_PEM) != 1) {
        ssl_error_text(why, sizeof why);
        snprintf(err, err_len, "TLS: private key %s: %s", t->key_file, why);
        goto err_free;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        ssl_error_text(why, sizeof why);
        snprintf(err, err_len, "TLS: key %s does not match certificate %s: %s", t->key_file,
                 t->cert_file, why);
        goto err_free;
    }
    if (t->client_ca_file) {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(t->client_ca_file);
        if (!names || SSL_CTX_load_verify_locations(ctx, t->client_ca_file, NULL) != 1) {
            if (names)
                sk_X509_NAME_pop_free(names, X509_NAME_free);
            ssl_error_text(why, sizeof why);
            snprintf(err, err_len, "TLS: client CA %s: %s", t->client_ca_file, why);
            goto err_free;
        }
        SSL_CTX_set_client_CA_list(ctx, names); /* takes ownership */
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    }
    /* Resumed sessions must belong to this server (required with client verification). */
    static const unsigned char sid_ctx[] = "ayder-https";
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof sid_ctx - 1);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    *out = ctx;
    return 0;
err_free:
    SSL_CTX_free(ctx);
    return ERR_INVALID;
}

int http_tls_new(const struct http_tls_config *cfg, struct http_tls **out, char *err,
                 size_t err_len)
{
    if (!cfg->cert_file || !cfg->key_file) {
        snprintf(err, err_len, "TLS: both a certificate and a private key are needed");
        return ERR_INVALID;
    }
    struct http_tls *t = xcalloc(1, sizeof *t);
    if (!t) {
        snprintf(err, err_len, "TLS: out of memory");
        return ERR_NOMEM;
    }
    t->cert_file = xstrndup(cfg->cert_file, strlen(cfg->cert_file));
    t->key_file = xstrndup(cfg->key_file, strlen(cfg->key_file));
    t->client_ca_file =
        cfg->client_ca_file ? xstrndup(cfg->client_ca_file, strlen(cfg->client_ca_file)) : NULL;
    int rc;
    if (!t->cert_file || !t->key_file || (cfg->client_ca_file && !t->client_ca_file)) {
        snprintf(err, err_len, "TLS: out of memory");
        rc = ERR_NOMEM;
        goto err_free;
    }
    if ((rc = ctx_build(t, &t->ctx, err, err_len)) != 0)
        goto err_free;
    pthread_mutex_init(&t->mu, NULL);
    *out = t;
    return 0;
err_free:
    xfree(t->cert_file);
    xfree(t->key_file);
    xfree(t->client_ca_file);
    xfree(t);
    return rc;
}

int http_tls_reload(struct http_tls *t, char *err, size_t err_len)
{
    SSL_CTX *ctx;
    int rc = ctx_build(t, &ctx, err, err_len);
    if (rc)
        return rc; /* the current context stays */
    pthread_mutex_lock(&t->mu);
    SSL_CTX *old = t->ctx;
    t->ctx = ctx;
    pthread_mutex_unlock(&t->mu);
    SSL_CTX_free(old); /* connections still using it hold their own reference (invariant 4) */
    atomic_fetch_add(&t->reloads, 1);
    return 0;
}

void http_tls_free(struct http_tls *t)
{
    if (!t)
        return;
    SSL_CTX_free(t->ctx);
    pthread_mutex_destroy(&t->mu);
    xfree(t->cert_file);
    xfree(t->key_file);
    xfree(t->client_ca_file);
    xfree(t);
}

void http_tls_stats(const struct http_tls *t, struct http_tls_stats *st)
{
    st->handshakes = atomic_load(&t->handshakes);
    st->handshake_failures = atomic_load(&t->handshake_failures);
    st->reloads = atomic_load(&t->reloads);
}

bool http_tls_client_auth(const struct http_tls *t) { return t->client_ca_file != NULL; }

int http_tls_conn_new(struct http_tls *t, struct http_tls_conn **out)
{
    struct http_tls_conn *c = xcalloc(1, sizeof *c);
    if (!c)
        return ERR_NOMEM;
    c->tls = t;
    pthread_mutex_lock(&t->mu);
    c->ssl = SSL_new(t->ctx); /* takes its own reference on the context (invariant 4) */
    pthread_mutex_unlock(&t->mu);
    c->rbio = BIO_new(BIO_s_mem());
    c->wbio = BIO_new(BIO_s_mem());
    if (!c->ssl || !c->rbio || !c->wbio) {
        BIO_free(c->rbio);
        BIO_free(c->wbio);
        SSL_free(c->ssl);
        xfree(c);
        ERR_clear_error();
        return ERR_NOMEM;
    }
    /* An empty read BIO means "wait for more", never end of file. */
    BIO_set_mem_eof_return(c->rbio, -1);
    SSL_set_bio(c->ssl, c->rbio, c->wbio); /* ssl owns both from here */
    SSL_set_accept_state(c->ssl);
    *out = c;
    return 0;
}

void http_tls_conn_free(struct http_tls_conn *c)
{
    if (!c)
        return;
    SSL_free(c->ssl);
    xfree(c);
}

bool http_tls_conn_ready(const struct http_tls_conn *c) { return c->ready; }

static int fail(struct http_tls_conn *c, const char *what)
{
    if (log_level_min <= LOG_DEBUG) {
        char why[256];
        ssl_error_text(why, sizeof why);
        LOG_D(MOD, "%s: %s", what, why);
    }
    ERR_clear_error();
    if (!c->ready)
        atomic_fetch_add_explicit(&c->tls->handshake_failures, 1, memory_order_relaxed);
    return ERR_INVALID;
}

int http_tls_conn_read(struct http_tls_conn *c, const uint8_t *p, size_t n, struct sbuf *plain)
{
    /* A memory BIO write only fails on allocation failure; n is at most one socket read. */
    if (n && BIO_write(c->rbio, p, (int)n) != (int)n) {
        ERR_clear_error();
        return ERR_NOMEM;
    }
    if (!c->ready) {
        ERR_clear_error();
        int r = SSL_do_handshake(c->ssl);
        if (r != 1) {
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                return 0; /* more bytes needed; the reply waits in wbio for seal */
            return fail(c, "handshake");
        }
        c->ready = true;
        atomic_fetch_add_explicit(&c->tls->handshakes, 1, memory_order_relaxed);
    }
    for (;;) {
        uint8_t *dst = sbuf_reserve(plain, PLAIN_CHUNK);
        if (!dst)
            return 0; /* the caller sees !sbuf_ok(plain) and closes */
        ERR_clear_error();
        int r = SSL_read(c->ssl, dst, PLAIN_CHUNK);
        if (r > 0) {
            plain->len += (size_t)r;
            continue;
        }
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
            return 0; /* rbio drained (invariant 1) */
        if (e == SSL_ERROR_ZERO_RETURN)
            return ERR_CLOSED;
        return fail(c, "read");
    }
}

/* Append everything waiting in wbio to out. */
static int drain_wbio(struct http_tls_conn *c, struct sbuf *out)
{
    size_t pending;
    while ((pending = BIO_ctrl_pending(c->wbio)) > 0) {
        int step = pending > INT_MAX ? INT_MAX : (int)pending;
        uint8_t *dst = sbuf_reserve(out, (size_t)step);
        if (!dst)
            return ERR_NOMEM;
        int r = BIO_read(c->wbio, dst, step);
        if (r <= 0)
            break;
        out->len += (size_t)r;
    }
    return 0;
}

int http_tls_conn_seal(struct http_tls_conn *c, struct sbuf *io, bool closing)
{
    if (io->len && !c->ready)
        return ERR_INVALID;
    /* Encrypt the plaintext into wbio in steps (SSL_write takes an int), then move the
     * ciphertext back into the same buffer, reusing its memory. */
    for (size_t off = 0; off < io->len;) {
        size_t step = io->len - off < SEAL_STEP ? io->len - off : SEAL_STEP;
        ERR_clear_error();
        int r = SSL_write(c->ssl, io->data + off, (int)step);
        if (r <= 0) {
            /* a memory wbio always accepts: only allocation failure or a broken session */
            ERR_clear_error();
            return ERR_NOMEM;
        }
        off += (size_t)r;
    }
    if (closing && c->ready && !c->shutdown_sent) {
        c->shutdown_sent = true;
        ERR_clear_error();
        SSL_shutdown(c->ssl); /* queues close_notify; we do not wait for the peer's */
        ERR_clear_error();
    }
    sbuf_reset(io);
    return drain_wbio(c, io);
}

size_t http_tls_conn_take(struct http_tls_conn *c, uint8_t *out, size_t cap)
{
    int r = BIO_read(c->wbio, out, cap > INT_MAX ? INT_MAX : (int)cap);
    ERR_clear_error();
    return r > 0 ? (size_t)r : 0;
}
