/* http_client.c -- the pure pieces of an HTTP/1.1 client: a response parser, an incremental
 * chunked-body decoder and a client URL parser. Used by `ayder bench` and the CLI (src/cli).
 *
 * The response parser is stateless: the caller keeps appending received bytes to one buffer and
 * calls http_resp_parse() again. It looks at the header block once it is complete; for a
 * Content-Length body it reports the total length it waits for, so the caller can skip re-parsing
 * until that many bytes are buffered (O(1) per read for the common case). Chunked bodies are
 * re-walked from the start on each call, which is fine for bounded answers; a stream that never
 * ends (a subscription) goes through struct http_dechunk, which keeps its state between reads.
 *
 * Invariants:
 *   1. Every byte examined is inside p[0..n); the parser never reads past n whatever the input.
 *   2. A return of 1 means p[0..total_len) is exactly one response and total_len <= n.
 *   3. Limits: the header block is at most HTTP_RESP_HEADER_MAX bytes and a body at most
 *      HTTP_RESP_BODY_MAX; beyond either the answer is ERR_TOO_LARGE, never an overflow.
 *   4. Input is never trusted: malformed bytes give ERR_INVALID, never an assertion.
 */
#include "http/http_client.h"

#include "base/err.h"

#include <stdio.h>
#include <string.h>

static bool is_digit(uint8_t c) { return c >= '0' && c <= '9'; }

static uint8_t lower(uint8_t c) { return (c >= 'A' && c <= 'Z') ? (uint8_t)(c + 32) : c; }

/* Case-insensitive: does p[0..n) equal the lower-case name? */
static bool name_is(const uint8_t *p, size_t n, const char *name)
{
    size_t k = strlen(name);
    if (n != k)
        return false;
    for (size_t i = 0; i < n; i++)
        if (lower(p[i]) != (uint8_t)name[i])
            return false;
    return true;
}

/* Does the comma-separated header value contain the token (case-insensitive)? */
static bool value_has_token(const uint8_t *v, size_t n, const char *tok)
{
    size_t k = strlen(tok);
    size_t i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t start = i;
        while (i < n && v[i] != ',')
            i++;
        size_t end = i;
        while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t'))
            end--;
        if (end - start == k) {
            size_t j = 0;
            while (j < k && lower(v[start + j]) == (uint8_t)tok[j])
                j++;
            if (j == k)
                return true;
        }
    }
    return false;
}

static const uint8_t *find_crlf(const uint8_t *p, const uint8_t *end)
{
    for (const uint8_t *q = p; q + 1 < end; q++)
        if (q[0] == '\r' && q[1] == '\n')
            return q;
    return NULL;
}

/* Parse a decimal into *v (no sign, at least one digit, overflow-checked against max). */
static bool parse_dec(const uint8_t *p, size_t n, uint64_t max, uint64_t *v)
{
    if (n == 0)
        return false;
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (!is_digit(p[i]))
            return false;
        uint64_t d = (uint64_t)(p[i] - '0');
        if (x > (max - d) / 10)
            return false;
        x = x * 10 + d;
    }
    *v = x;
    return true;
}

/* Decode a chunked body starting at p[0..n). Returns 1 complete (*used = bytes consumed including
 * trailers), 0 need more, or a negative ERR_*. */
static int dechunk_body(const uint8_t *p, size_t n, struct sbuf *out, size_t *used)
{
    size_t off = 0;
    for (;;) {
        const uint8_t *eol = find_crlf(p + off, p + n);
        if (!eol)
            return n - off > 1024 ? ERR_INVALID : 0;
        size_t line_len = (size_t)(eol - (p + off));
        uint64_t size = 0;
        size_t i = 0;
        if (line_len == 0)
            return ERR_INVALID;
        for (; i < line_len; i++) {
            uint8_t c = lower(p[off + i]);
            int d;
            if (c >= '0' && c <= '9')
                d = c - '0';
            else if (c >= 'a' && c <= 'f')
                d = c - 'a' + 10;
            else
                break;
            if (size > (HTTP_RESP_BODY_MAX >> 4))
                return ERR_TOO_LARGE;
            size = size * 16 + (uint64_t)d;
        }
        if (i == 0 || (i < line_len && p[off + i] != ';' && p[off + i] != ' '))
            return ERR_INVALID;
        off += line_len + 2;
        if (size == 0) {
            /* Trailer section: header lines until an empty line. */
            for (;;) {
                const uint8_t *t = find_crlf(p + off, p + n);
                if (!t)
                    return n - off > HTTP_RESP_HEADER_MAX ? ERR_TOO_LARGE : 0;
                size_t tl = (size_t)(t - (p + off));
                off += tl + 2;
                if (tl == 0) {
                    *used = off;
                    return 1;
                }
            }
        }
        if (out->len + size > HTTP_RESP_BODY_MAX)
            return ERR_TOO_LARGE;
        if (n - off < size + 2)
            return 0;
        if (p[off + size] != '\r' || p[off + size + 1] != '\n')
            return ERR_INVALID;
        sbuf_append(out, p + off, (size_t)size);
        if (!sbuf_ok(out))
            return ERR_NOMEM;
        off += (size_t)size + 2;
    }
}

int http_resp_parse(const uint8_t *p, size_t n, struct sbuf *dechunk, struct http_resp *out)
{
    memset(out, 0, sizeof *out);
    const uint8_t *end = p + n;
    /* Find the end of the header block. */
    size_t hlen = 0;
    size_t lim = n < HTTP_RESP_HEADER_MAX ? n : HTTP_RESP_HEADER_MAX;
    for (size_t i = 3; i < lim; i++) {
        if (p[i] == '\n' && p[i - 1] == '\r' && p[i - 2] == '\n' && p[i - 3] == '\r') {
            hlen = i + 1;
            break;
        }
    }
    if (hlen == 0)
        return n >= HTTP_RESP_HEADER_MAX ? ERR_TOO_LARGE : 0;

    /* Status line: HTTP/1.x SP 3DIGIT [SP reason] CRLF */
    const uint8_t *eol = find_crlf(p, end);
    size_t sl = (size_t)(eol - p);
    if (sl < 12 || memcmp(p, "HTTP/1.", 7) != 0 || !is_digit(p[7]) || p[8] != ' ' ||
        !is_digit(p[9]) || !is_digit(p[10]) || !is_digit(p[11]) || (sl > 12 && p[12] != ' '))
        return ERR_INVALID;
    bool http10 = p[7] == '0';
    out->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    if (out->status < 100)
        return ERR_INVALID;
    out->header_len = hlen;
    out->close = http10;

    bool have_cl = false;
    uint64_t cl = 0;
    const uint8_t *line = eol + 2;
    const uint8_t *hend = p + hlen - 2; /* the final CRLF */
    while (line < hend) {
        const uint8_t *le = find_crlf(line, p + hlen);
        if (!le)
            return ERR_INVALID;
        const uint8_t *colon = memchr(line, ':', (size_t)(le - line));
        if (!colon || colon == line)
            return ERR_INVALID;
        const uint8_t *v = colon + 1;
        while (v < le && (*v == ' ' || *v == '\t'))
            v++;
        const uint8_t *ve = le;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        size_t nl = (size_t)(colon - line), vl = (size_t)(ve - v);
        if (name_is(line, nl, "content-length")) {
            uint64_t x;
            if (!parse_dec(v, vl, UINT64_MAX, &x))
                return ERR_INVALID;
            if (have_cl && x != cl)
                return ERR_INVALID;
            have_cl = true;
            cl = x;
        } else if (name_is(line, nl, "transfer-encoding")) {
            if (value_has_token(v, vl, "chunked"))
                out->chunked = true;
            else
                return ERR_UNSUPPORTED;
        } else if (name_is(line, nl, "connection")) {
            if (value_has_token(v, vl, "close"))
                out->close = true;
            else if (value_has_token(v, vl, "keep-alive"))
                out->close = false;
        }
        line = le + 2;
    }

    bool no_body = out->status < 200 || out->status == 204 || out->status == 304;
    if (no_body) {
        out->total_len = hlen;
        out->body = slice_of(p + hlen, 0);
        return 1;
    }
    if (out->chunked) {
        if (!dechunk)
            return ERR_UNSUPPORTED;
        sbuf_reset(dechunk);
        size_t used = 0;
        int rc = dechunk_body(p + hlen, n - hlen, dechunk, &used);
        if (rc != 1)
            return rc;
        out->total_len = hlen + used;
        out->body = slice_of(dechunk->data, dechunk->len);
        return 1;
    }
    if (!have_cl)
        return ERR_UNSUPPORTED;
    if (cl > HTTP_RESP_BODY_MAX)
        return ERR_TOO_LARGE;
    out->total_len = hlen + (size_t)cl;
    if (n < out->total_len)
        return 0;
    out->body = slice_of(p + hlen, (size_t)cl);
    return 1;
}


/* ---- the head alone and header lookup ---------------------------------------------------------- */

int http_resp_head(const uint8_t *p, size_t n, struct http_resp *out)
{
    memset(out, 0, sizeof *out);
    size_t lim = n < HTTP_RESP_HEADER_MAX ? n : HTTP_RESP_HEADER_MAX;
    size_t hlen = 0;
    for (size_t i = 3; i < lim; i++)
        if (p[i] == '\n' && p[i - 1] == '\r' && p[i - 2] == '\n' && p[i - 3] == '\r') {
            hlen = i + 1;
            break;
        }
    if (hlen == 0)
        return n >= HTTP_RESP_HEADER_MAX ? ERR_TOO_LARGE : 0;
    /* Parse the head as a bodiless response: the parser stops at the header block when we hide
     * everything after it and there is no Content-Length to wait for. */
    struct sbuf none;
    sbuf_init(&none, 1);
    int rc = http_resp_parse(p, hlen, &none, out);
    sbuf_free(&none);
    /* With no body bytes given, only the head can fail as malformed; a missing length
     * (ERR_UNSUPPORTED) or an oversized one (ERR_TOO_LARGE) is the caller's business. */
    if (rc == ERR_INVALID || rc == ERR_NOMEM)
        return rc;
    return out->header_len == hlen ? 1 : ERR_INVALID;
}

int http_resp_header(const uint8_t *p, size_t header_len, const char *name, struct slice *value)
{
    const uint8_t *end = p + header_len;
    const uint8_t *line = find_crlf(p, end);
    if (!line)
        return 0;
    line += 2;
    while (line < end) {
        const uint8_t *le = find_crlf(line, end);
        if (!le || le == line)
            return 0;
        const uint8_t *colon = memchr(line, ':', (size_t)(le - line));
        if (colon && name_is(line, (size_t)(colon - line), name)) {
            const uint8_t *v = colon + 1, *ve = le;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            *value = slice_of(v, (size_t)(ve - v));
            return 1;
        }
        line = le + 2;
    }
    return 0;
}

/* ---- incremental chunked decoding ----------------------------------------------------------------
 *
 *   SIZE --CRLF, size>0--> DATA --left==0--> DATA_CR --'\r'--> DATA_LF --'\n'--> SIZE
 *     \--CRLF, size==0--> TRAILER --empty line--> DONE
 */
enum { DC_SIZE, DC_SIZE_EXT, DC_SIZE_LF, DC_DATA, DC_DATA_CR, DC_DATA_LF, DC_TRAILER,
       DC_TRAILER_LF, DC_DONE };

void http_dechunk_init(struct http_dechunk *d) { memset(d, 0, sizeof *d); }

int http_dechunk_feed(struct http_dechunk *d, const uint8_t *in, size_t n, struct sbuf *out,
                      size_t *used)
{
    size_t i = 0;
    *used = 0;
    while (i < n) {
        uint8_t c = in[i];
        switch (d->state) {
        case DC_SIZE: {
            int v = -1;
            uint8_t l = lower(c);
            if (l >= '0' && l <= '9')
                v = l - '0';
            else if (l >= 'a' && l <= 'f')
                v = l - 'a' + 10;
            if (v >= 0) {
                if (d->left > (HTTP_RESP_BODY_MAX >> 4))
                    return ERR_TOO_LARGE;
                d->left = d->left * 16 + (uint64_t)v;
                d->line_len++;
            } else if (d->line_len > 0 && (c == ';' || c == ' ')) {
                d->state = DC_SIZE_EXT;
            } else if (d->line_len > 0 && c == '\r') {
                d->state = DC_SIZE_LF;
            } else {
                return ERR_INVALID;
            }
            i++;
            break;
        }
        case DC_SIZE_EXT:
            if (++d->line_len > 1024)
                return ERR_TOO_LARGE;
            if (c == '\r')
                d->state = DC_SIZE_LF;
            i++;
            break;
        case DC_SIZE_LF:
            if (c != '\n')
                return ERR_INVALID;
            i++;
            d->line_len = 0;
            d->state = d->left ? DC_DATA : DC_TRAILER;
            break;
        case DC_DATA: {
            size_t k = n - i < d->left ? n - i : (size_t)d->left;
            sbuf_append(out, in + i, k);
            if (!sbuf_ok(out))
                return ERR_NOMEM;
            i += k;
            d->left -= k;
            if (d->left == 0)
                d->state = DC_DATA_CR;
            break;
        }
        case DC_DATA_CR:
            if (c != '\r')
                return ERR_INVALID;
            i++;
            d->state = DC_DATA_LF;
            break;
        case DC_DATA_LF:
            if (c != '\n')
                return ERR_INVALID;
            i++;
            d->state = DC_SIZE;
            break;
        case DC_TRAILER:
            if (c == '\r') {
                d->state = DC_TRAILER_LF;
            } else if (++d->line_len > HTTP_RESP_HEADER_MAX) {
                return ERR_TOO_LARGE;
            }
            i++;
            break;
        case DC_TRAILER_LF:
            if (c != '\n')
                return ERR_INVALID;
            i++;
            if (d->line_len == 0) {
                d->state = DC_DONE;
                *used = i;
                return 1;
            }
            d->line_len = 0;
            d->state = DC_TRAILER;
            break;
        default:
            *used = i;
            return 1;
        }
    }
    *used = i;
    return d->state == DC_DONE ? 1 : 0;
}

/* ---- URLs ---------------------------------------------------------------------------------------- */

int http_url_parse(const char *url, struct http_url *o)
{
    memset(o, 0, sizeof *o);
    const char *p = url;
    if (strncmp(p, "http://", 7) == 0)
        p += 7;
    else if (strstr(p, "://"))
        return ERR_UNSUPPORTED; /* https and others */
    const char *slash = strchr(p, '/');
    size_t hp_len = slash ? (size_t)(slash - p) : strlen(p);
    const char *hp_end = p + hp_len;
    const char *colon = NULL;
    bool v6 = false;
    if (*p == '[') { /* [v6]:port */
        const char *rb = memchr(p, ']', hp_len);
        if (!rb || rb == p + 1 || (size_t)(rb - p - 1) >= sizeof o->host)
            return ERR_INVALID;
        memcpy(o->host, p + 1, (size_t)(rb - p - 1));
        v6 = true;
        if (rb + 1 < hp_end) {
            if (rb[1] != ':')
                return ERR_INVALID;
            colon = rb + 1;
        }
    } else {
        colon = memchr(p, ':', hp_len);
        size_t hl = colon ? (size_t)(colon - p) : hp_len;
        if (hl == 0 || hl >= sizeof o->host)
            return ERR_INVALID;
        memcpy(o->host, p, hl);
    }
    for (const char *h = o->host; *h; h++)
        if ((unsigned char)*h <= ' ' || *h == '@' || *h == 0x7f)
            return ERR_INVALID;
    if (colon) {
        size_t pl = (size_t)(hp_end - colon - 1);
        if (pl == 0 || pl >= sizeof o->port)
            return ERR_INVALID;
        uint64_t port;
        if (!parse_dec((const uint8_t *)colon + 1, pl, 65535, &port) || port == 0)
            return ERR_INVALID;
        memcpy(o->port, colon + 1, pl);
    } else {
        snprintf(o->port, sizeof o->port, "80");
    }
    if (slash) {
        size_t l = strlen(slash);
        while (l > 0 && slash[l - 1] == '/')
            l--;
        if (l >= sizeof o->prefix)
            return ERR_INVALID;
        memcpy(o->prefix, slash, l);
        for (size_t i = 0; i < l; i++)
            if ((unsigned char)o->prefix[i] <= ' ' || o->prefix[i] == 0x7f)
                return ERR_INVALID;
    }
    snprintf(o->host_hdr, sizeof o->host_hdr, v6 ? "[%s]:%s" : "%s:%s", o->host, o->port);
    return 0;
}
