/* hc.c -- the CLI's blocking HTTP/1.1 client (see hc.h for what it owns and the redirect rule).
 *
 * One connection, one request at a time (hc_request, hc_stream_open) or a pipeline of writes
 * whose answers are read in order (hc_send / hc_recv, used by produce).
 *
 *     closed --hc_connect--> open --send--> waiting --answer complete--> open
 *        ^                                     |  Connection: close / error / EOF
 *        +-------------------------------------+
 *
 * Invariants:
 *   1. c->in holds received bytes not yet handed out, starting at the next answer; the bytes of an
 *      answer handed out are dropped (c->used) at the next call, so a borrowed body stays valid
 *      until then.
 *   2. A kept-alive connection found dead before any answer byte arrived is reopened once and the
 *      request re-sent (the server closed it idle; nothing was processed). A failure after answer
 *      bytes arrived is reported, never retried: the request may have taken effect.
 *   3. At most HC_REDIRECTS_MAX redirects per request; only http:// Locations.
 */
#include "cli/hc.h"

#include "base/err.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define READ_CHUNK 65536

static void set_base_text(struct hc *c)
{
    snprintf(c->base, sizeof c->base, "http://%s%s", c->url.host_hdr, c->url.prefix);
}

int hc_init(struct hc *c, const char *url, const char *token, int timeout_ms)
{
    memset(c, 0, sizeof *c);
    c->fd = -1;
    c->token = token && *token ? token : NULL;
    c->timeout_ms = timeout_ms;
    sbuf_init(&c->req, 0);
    sbuf_init(&c->in, 0);
    sbuf_init(&c->chunk, 0);
    int rc = http_url_parse(url, &c->url);
    if (rc) {
        snprintf(c->err, sizeof c->err, "bad URL '%s'%s", url,
                 rc == ERR_UNSUPPORTED ? " (only http:// is supported)" : "");
        return rc;
    }
    set_base_text(c);
    return 0;
}

static void drop_conn(struct hc *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->streaming = false;
    c->used = 0;
    sbuf_reset(&c->in);
}

void hc_close(struct hc *c)
{
    drop_conn(c);
    sbuf_free(&c->req);
    sbuf_free(&c->in);
    sbuf_free(&c->chunk);
}

int hc_set_base(struct hc *c, const char *url)
{
    struct http_url u;
    int rc = http_url_parse(url, &u);
    if (rc) {
        snprintf(c->err, sizeof c->err, "bad redirect URL '%s'", url);
        return rc;
    }
    drop_conn(c);
    c->url = u;
    set_base_text(c);
    return 0;
}

static void set_timeouts(struct hc *c, int fd, bool streaming)
{
    /* A stream is quiet between records, but the server sends a heartbeat at least every 15 s
     * (subscriptions; follow queries default to it too): three missed ones mean a dead peer. */
    int ms = streaming ? HC_STREAM_IDLE_MS : c->timeout_ms;
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (!streaming)
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

int hc_connect(struct hc *c)
{
    if (c->fd >= 0)
        return 0;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    int g = getaddrinfo(c->url.host, c->url.port, &hints, &ai);
    if (g) {
        snprintf(c->err, sizeof c->err, "cannot resolve %s: %s", c->url.host, gai_strerror(g));
        return ERR_IO;
    }
    int e = 0;
    for (struct addrinfo *a = ai; a; a = a->ai_next) {
        int fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            e = errno;
            continue;
        }
        set_timeouts(c, fd, false);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
            c->fd = fd;
            break;
        }
        e = errno;
        close(fd);
    }
    freeaddrinfo(ai);
    if (c->fd < 0) {
        snprintf(c->err, sizeof c->err, "cannot connect to %s: %s", c->base, strerror(e));
        return ERR_IO;
    }
    sbuf_reset(&c->in);
    c->used = 0;
    return 0;
}

void hc_escape(struct sbuf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '_' || ch == '.' || ch == '~') {
            sbuf_putc(b, ch);
        } else {
            sbuf_putc(b, '%');
            sbuf_putc(b, (uint8_t)hex[ch >> 4]);
            sbuf_putc(b, (uint8_t)hex[ch & 15]);
        }
    }
}

static void build(struct hc *c, const char *method, const char *path, const char *const *headers,
                  const char *ctype, size_t body_len, bool has_body)
{
    struct sbuf *r = &c->req;
    sbuf_reset(r);
    sbuf_printf(r, "%s %s%s HTTP/1.1\r\nHost: %s\r\n", method, c->url.prefix, path,
                c->url.host_hdr);
    if (c->token)
        sbuf_printf(r, "Authorization: Bearer %s\r\n", c->token);
    for (size_t i = 0; headers && headers[i]; i++)
        sbuf_printf(r, "%s\r\n", headers[i]);
    if (has_body) {
        if (ctype)
            sbuf_printf(r, "Content-Type: %s\r\n", ctype);
        sbuf_printf(r, "Content-Length: %zu\r\n", body_len);
    }
    sbuf_puts(r, "\r\n");
}

static bool method_has_body(const char *method, const void *body)
{
    return body || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0;
}

/* Write the head in c->req and the body, without copying the body (it may be megabytes). */
static int write_all(struct hc *c, const void *body, size_t body_len)
{
    struct iovec iov[2] = {{c->req.data, c->req.len}, {(void *)body, body ? body_len : 0}};
    struct msghdr m = {.msg_iov = iov, .msg_iovlen = 2};
    while (iov[0].iov_len + iov[1].iov_len > 0) {
        ssize_t k = sendmsg(c->fd, &m, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            int e = k < 0 ? errno : EPIPE;
            snprintf(c->err, sizeof c->err, "send to %s: %s", c->base,
                     e == EAGAIN ? "timed out" : strerror(e));
            return e == EAGAIN ? ERR_TIMEOUT : ERR_IO;
        }
        size_t n = (size_t)k;
        for (int i = 0; i < 2 && n; i++) {
            size_t t = n < iov[i].iov_len ? n : iov[i].iov_len;
            iov[i].iov_base = (uint8_t *)iov[i].iov_base + t;
            iov[i].iov_len -= t;
            n -= t;
        }
        if (iov[0].iov_len == 0) {
            m.msg_iov = &iov[1];
            m.msg_iovlen = 1;
        }
    }
    return 0;
}

int hc_send(struct hc *c, const char *method, const char *path, const char *const *headers,
            const char *ctype, const void *body, size_t body_len)
{
    int rc = hc_connect(c);
    if (rc)
        return rc;
    build(c, method, path, headers, ctype, body_len, method_has_body(method, body));
    if (!sbuf_ok(&c->req))
        return ERR_NOMEM;
    return write_all(c, body, body_len);
}

/* Receive more bytes into c->in. */
static int fill(struct hc *c)
{
    uint8_t *dst = sbuf_reserve(&c->in, READ_CHUNK);
    if (!dst)
        return ERR_NOMEM;
    for (;;) {
        ssize_t k = recv(c->fd, dst, READ_CHUNK, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            snprintf(c->err, sizeof c->err, "no answer from %s within %d ms", c->base,
                     c->timeout_ms);
            return ERR_TIMEOUT;
        }
        if (k <= 0) {
            snprintf(c->err, sizeof c->err, "connection to %s %s", c->base,
                     k < 0 ? strerror(errno) : "closed by the server");
            return k < 0 ? ERR_IO : ERR_EOF;
        }
        c->in.len += (size_t)k;
        return 0;
    }
}

/* The answer handed out last time: its bytes leave c->in now (invariant 1). */
static size_t *used_of(struct hc *c) { return &c->used; }

int hc_recv(struct hc *c, struct hc_resp *out)
{
    size_t *used = used_of(c);
    if (*used) {
        sbuf_consume(&c->in, *used);
        *used = 0;
    }
    memset(out, 0, sizeof *out);
    struct http_resp r;
    for (;;) {
        int rc = http_resp_parse(c->in.data, c->in.len, &c->chunk, &r);
        if (rc == 1)
            break;
        if (rc < 0) {
            snprintf(c->err, sizeof c->err, "malformed answer from %s (%s)", c->base,
                     err_message(rc));
            drop_conn(c);
            return rc;
        }
        if ((rc = fill(c)) != 0) {
            int was_empty = c->in.len == 0;
            drop_conn(c);
            return was_empty && rc == ERR_EOF ? ERR_EOF : rc;
        }
    }
    out->status = r.status;
    out->body = r.body;
    struct slice loc;
    if (r.status >= 300 && r.status < 400 && http_resp_header(c->in.data, r.header_len, "location", &loc))
        out->location = loc;
    *used = r.total_len;
    if (r.close) {
        /* Keep the bytes (the body borrows them) but the socket is done. */
        close(c->fd);
        c->fd = -1;
    }
    return 0;
}

/* Follow one redirect: the Location's origin becomes the base and its path+query the new path.
 * Returns 0 with *path pointing into pathbuf. */
static int follow(struct hc *c, struct slice loc, char *pathbuf, size_t pathcap, const char **path)
{
    char url[1200];
    if (loc.len == 0 || loc.len >= sizeof url) {
        snprintf(c->err, sizeof c->err, "redirect from %s without a usable Location", c->base);
        return ERR_INVALID;
    }
    memcpy(url, loc.ptr, loc.len);
    url[loc.len] = 0;
    if (url[0] == '/') { /* same origin: only the path changes */
        snprintf(pathbuf, pathcap, "%s", url);
        *path = pathbuf;
        return 0;
    }
    if (strncmp(url, "http://", 7) != 0) {
        snprintf(c->err, sizeof c->err, "redirect to '%s' not followed (only http://)", url);
        return ERR_UNSUPPORTED;
    }
    char *slash = strchr(url + 7, '/');
    snprintf(pathbuf, pathcap, "%s", slash ? slash : "/");
    if (slash)
        *slash = 0;
    int rc = hc_set_base(c, url);
    if (rc)
        return rc;
    /* The new base has no prefix: the Location's path is complete. */
    *path = pathbuf;
    return 0;
}

/* Send and read the head of one answer, following redirects. With stream=false the whole answer
 * is read. */
static int exchange(struct hc *c, const char *method, const char *path,
                    const char *const *headers, const char *ctype, const void *body,
                    size_t body_len, bool stream, struct hc_resp *out)
{
    char pathbuf[8192];
    for (int hop = 0;; hop++) {
        int rc = 0;
        for (int attempt = 0; attempt < 2; attempt++) {
            bool reused = c->fd >= 0;
            size_t *used = used_of(c);
            if (*used) {
                sbuf_consume(&c->in, *used);
                *used = 0;
            }
            rc = hc_send(c, method, path, headers, ctype, body, body_len);
            if (rc == 0) {
                if (stream) {
                    struct http_resp h;
                    for (;;) {
                        rc = http_resp_head(c->in.data, c->in.len, &h);
                        if (rc != 0)
                            break;
                        if ((rc = fill(c)) != 0)
                            break;
                    }
                    if (rc == 1 && !(h.status >= 200 && h.status < 300 && h.chunked)) {
                        rc = hc_recv(c, out); /* a whole (error or plain) answer */
                    } else if (rc == 1) {
                        sbuf_consume(&c->in, h.header_len);
                        c->head = h;
                        http_dechunk_init(&c->dc);
                        c->streaming = true;
                        set_timeouts(c, c->fd, true);
                        memset(out, 0, sizeof *out);
                        out->status = h.status;
                        return 0;
                    }
                } else {
                    rc = hc_recv(c, out);
                }
            }
            /* Invariant 2: a reused connection that died before answering is retried once. */
            if ((rc == ERR_EOF || rc == ERR_IO) && reused && c->in.len == 0)
                continue;
            break;
        }
        if (rc < 0)
            return rc;
        if ((out->status == 307 || out->status == 308) && out->location.len) {
            if (hop >= HC_REDIRECTS_MAX) {
                snprintf(c->err, sizeof c->err, "more than %d redirects (last to %.*s)",
                         HC_REDIRECTS_MAX, (int)out->location.len, out->location.ptr);
                return ERR_INVALID;
            }
            char loc[1200];
            size_t n = out->location.len < sizeof loc - 1 ? out->location.len : sizeof loc - 1;
            memcpy(loc, out->location.ptr, n);
            loc[n] = 0;
            c->redirects++;
            if ((rc = follow(c, slice_of(loc, n), pathbuf, sizeof pathbuf, &path)) != 0)
                return rc;
            continue;
        }
        return 0;
    }
}

int hc_request(struct hc *c, const char *method, const char *path, const char *const *headers,
               const char *ctype, const void *body, size_t body_len, struct hc_resp *out)
{
    if (c->streaming)
        drop_conn(c);
    return exchange(c, method, path, headers, ctype, body, body_len, false, out);
}

int hc_stream_open(struct hc *c, const char *method, const char *path, const char *const *headers,
                   const char *ctype, const void *body, size_t body_len, struct hc_resp *out)
{
    if (c->streaming)
        drop_conn(c);
    return exchange(c, method, path, headers, ctype, body, body_len, true, out);
}

int hc_stream_read(struct hc *c, struct sbuf *out)
{
    if (!c->streaming)
        return 1;
    size_t before = out->len;
    for (;;) {
        if (c->in.len) {
            size_t used = 0;
            int rc = http_dechunk_feed(&c->dc, c->in.data, c->in.len, out, &used);
            sbuf_consume(&c->in, used);
            if (rc < 0) {
                snprintf(c->err, sizeof c->err, "malformed stream from %s (%s)", c->base,
                         err_message(rc));
                drop_conn(c);
                return rc;
            }
            if (rc == 1) {
                c->streaming = false;
                set_timeouts(c, c->fd, false);
                if (c->head.close)
                    drop_conn(c);
                return out->len > before ? 0 : 1;
            }
            if (out->len > before)
                return 0;
        }
        int rc = fill(c);
        if (rc) {
            drop_conn(c);
            return rc;
        }
    }
}
