/* test_http_tls.c -- the HTTPS record layer (src/http/tls.c) without sockets: an OpenSSL client
 * over memory BIOs talks to http_tls_conn_read/seal; garbage, early plaintext, reload. */
#include "http/tls.h"
#include "harness.h"

#include "base/buf.h"
#include "base/err.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct files {
    char dir[64], cert[96], key[96], cert2[96], key2[96];
};

static bool write_self_signed(const char *cert_path, const char *key_path, const char *cn)
{
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    X509 *x = X509_new();
    bool ok = k && x;
    if (ok) {
        X509_set_version(x, 2);
        ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
        X509_gmtime_adj(X509_getm_notBefore(x), -3600);
        X509_gmtime_adj(X509_getm_notAfter(x), 86400);
        X509_set_pubkey(x, k);
        X509_NAME *name = X509_get_subject_name(x);
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
        X509_set_issuer_name(x, name);
        ok = X509_sign(x, k, EVP_sha256()) > 0;
    }
    FILE *fc = ok ? fopen(cert_path, "w") : NULL;
    FILE *fk = ok ? fopen(key_path, "w") : NULL;
    ok = ok && fc && fk && PEM_write_X509(fc, x) == 1 &&
         PEM_write_PrivateKey(fk, k, NULL, NULL, 0, NULL, NULL) == 1;
    if (fc)
        fclose(fc);
    if (fk)
        fclose(fk);
    X509_free(x);
    EVP_PKEY_free(k);
    return ok;
}

static bool files_make(struct files *f)
{
    snprintf(f->dir, sizeof f->dir, "/tmp/ayder-tls-XXXXXX");
    if (!mkdtemp(f->dir))
        return false;
    snprintf(f->cert, sizeof f->cert, "%s/a.pem", f->dir);
    snprintf(f->key, sizeof f->key, "%s/a.key", f->dir);
    snprintf(f->cert2, sizeof f->cert2, "%s/b.pem", f->dir);
    snprintf(f->key2, sizeof f->key2, "%s/b.key", f->dir);
    return write_self_signed(f->cert, f->key, "one") && write_self_signed(f->cert2, f->key2, "two");
}

static void files_remove(struct files *f)
{
    unlink(f->cert);
    unlink(f->key);
    unlink(f->cert2);
    unlink(f->key2);
    rmdir(f->dir);
}

struct client {
    SSL_CTX *ctx;
    SSL *ssl;
    BIO *rbio, *wbio; /* rbio: what the server sent; wbio: what the client sends */
};

static bool client_new(struct client *c)
{
    c->ctx = SSL_CTX_new(TLS_client_method());
    c->ssl = c->ctx ? SSL_new(c->ctx) : NULL;
    c->rbio = BIO_new(BIO_s_mem());
    c->wbio = BIO_new(BIO_s_mem());
    if (!c->ssl || !c->rbio || !c->wbio)
        return false;
    BIO_set_mem_eof_return(c->rbio, -1);
    SSL_set_bio(c->ssl, c->rbio, c->wbio);
    SSL_set_connect_state(c->ssl);
    return true;
}

static void client_free(struct client *c)
{
    SSL_free(c->ssl);
    SSL_CTX_free(c->ctx);
}

/* Move bytes both ways until the client's handshake is done (or nothing moves). */
static bool pump_handshake(struct client *cl, struct http_tls_conn *sc, struct sbuf *plain)
{
    struct sbuf out;
    sbuf_init(&out, 0);
    bool ok = false;
    for (int round = 0; round < 10; round++) {
        int r = SSL_do_handshake(cl->ssl);
        uint8_t buf[16384];
        int n;
        while ((n = BIO_read(cl->wbio, buf, sizeof buf)) > 0)
            if (http_tls_conn_read(sc, buf, (size_t)n, plain) != 0)
                goto done;
        sbuf_reset(&out);
        if (http_tls_conn_seal(sc, &out, false) != 0)
            goto done;
        if (out.len)
            BIO_write(cl->rbio, out.data, (int)out.len);
        if (r == 1 && http_tls_conn_ready(sc)) {
            ok = true;
            break;
        }
    }
done:
    sbuf_free(&out);
    ERR_clear_error();
    return ok;
}

static X509 *peer_cert_cn(struct client *cl, char *cn, size_t len)
{
    X509 *x = SSL_get1_peer_certificate(cl->ssl);
    if (x)
        X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, (int)len);
    return x;
}

TEST(http_tls_roundtrip_garbage_and_reload)
{
    struct files f;
    REQUIRE(files_make(&f));
    char err[512];
    struct http_tls *t = NULL;
    struct http_tls_config cfg = {f.cert, f.key, NULL};
    REQUIRE(http_tls_new(&cfg, &t, err, sizeof err) == 0);
    CHECK(!http_tls_client_auth(t));

    /* a full handshake and a request/response each way */
    struct http_tls_conn *sc = NULL;
    REQUIRE(http_tls_conn_new(t, &sc) == 0);
    struct sbuf plain, io;
    sbuf_init(&plain, 0);
    sbuf_init(&io, 0);
    /* plaintext before the handshake is refused, untouched */
    sbuf_append(&io, "early", 5);
    CHECK(http_tls_conn_seal(sc, &io, false) == ERR_INVALID && io.len == 5);
    sbuf_reset(&io);
    struct client cl;
    REQUIRE(client_new(&cl));
    REQUIRE(pump_handshake(&cl, sc, &plain));
    CHECK(plain.len == 0);
    REQUIRE(SSL_write(cl.ssl, "GET / HTTP/1.1\r\n\r\n", 18) == 18);
    uint8_t buf[16384];
    int n = BIO_read(cl.wbio, buf, sizeof buf);
    REQUIRE(n > 0);
    /* split the record: the first half yields nothing, the rest the whole request */
    CHECK(http_tls_conn_read(sc, buf, (size_t)n / 2, &plain) == 0 && plain.len == 0);
    CHECK(http_tls_conn_read(sc, buf + n / 2, (size_t)(n - n / 2), &plain) == 0);
    CHECK(plain.len == 18 && memcmp(plain.data, "GET / HTTP/1.1\r\n\r\n", 18) == 0);
    sbuf_append(&io, "HTTP/1.1 200 OK\r\n\r\n", 19);
    REQUIRE(http_tls_conn_seal(sc, &io, true) == 0); /* with close_notify */
    CHECK(io.len > 19);
    BIO_write(cl.rbio, io.data, (int)io.len);
    n = SSL_read(cl.ssl, buf, sizeof buf);
    CHECK(n == 19 && memcmp(buf, "HTTP/1.1 200 OK", 15) == 0);
    CHECK(SSL_read(cl.ssl, buf, sizeof buf) <= 0 &&
          SSL_get_error(cl.ssl, 0) == SSL_ERROR_ZERO_RETURN);
    char cn[64] = "";
    X509_free(peer_cert_cn(&cl, cn, sizeof cn));
    CHECK(strcmp(cn, "one") == 0);

    /* reload to another certificate: the old connection keeps its session, a new one gets the
     * new certificate */
    unlink(f.cert);
    unlink(f.key);
    REQUIRE(rename(f.cert2, f.cert) == 0 && rename(f.key2, f.key) == 0);
    REQUIRE(http_tls_reload(t, err, sizeof err) == 0);
    struct http_tls_conn *sc2 = NULL;
    REQUIRE(http_tls_conn_new(t, &sc2) == 0);
    struct client cl2;
    REQUIRE(client_new(&cl2));
    sbuf_reset(&plain);
    REQUIRE(pump_handshake(&cl2, sc2, &plain));
    X509_free(peer_cert_cn(&cl2, cn, sizeof cn));
    CHECK(strcmp(cn, "two") == 0);
    /* a broken key: the reload fails with a reason, the context stays */
    FILE *fk = fopen(f.key, "w");
    REQUIRE(fk);
    fputs("garbage\n", fk);
    fclose(fk);
    CHECK(http_tls_reload(t, err, sizeof err) == ERR_INVALID && strstr(err, f.key) != NULL);
    struct http_tls_stats st;
    http_tls_stats(t, &st);
    CHECK(st.handshakes == 2 && st.reloads == 1 && st.handshake_failures == 0);

    /* garbage fails the handshake of that connection only */
    struct http_tls_conn *sc3 = NULL;
    REQUIRE(http_tls_conn_new(t, &sc3) == 0);
    sbuf_reset(&plain);
    CHECK(http_tls_conn_read(sc3, (const uint8_t *)"GET / HTTP/1.1\r\n\r\n", 18, &plain) ==
          ERR_INVALID);
    CHECK(plain.len == 0);
    http_tls_stats(t, &st);
    CHECK(st.handshake_failures == 1);

    http_tls_conn_free(sc);
    http_tls_conn_free(sc2);
    http_tls_conn_free(sc3);
    client_free(&cl);
    client_free(&cl2);
    sbuf_free(&plain);
    sbuf_free(&io);
    http_tls_free(t);
    files_remove(&f);
}

TEST(http_tls_config_errors)
{
    char err[512] = "";
    struct http_tls *t = NULL;
    struct http_tls_config cfg = {"/nonexistent/cert.pem", "/nonexistent/key.pem", NULL};
    CHECK(http_tls_new(&cfg, &t, err, sizeof err) == ERR_INVALID && t == NULL);
    CHECK(strstr(err, "/nonexistent/cert.pem") != NULL);
    struct http_tls_config none = {NULL, NULL, NULL};
    CHECK(http_tls_new(&none, &t, err, sizeof err) == ERR_INVALID);
}
