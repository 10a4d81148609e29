/* resp.c -- the HTTP/1.1 response parser and JSON member scanners used by `ayder bench`.
 *
 * The parser is stateless: the caller keeps appending received bytes to one buffer and calls
 * bench_resp_parse() again. It looks at the header block once it is complete; for a
 * Content-Length body it reports the total length it waits for, so the caller can skip re-parsing
 * until that many bytes are buffered (O(1) per read for the common case). Chunked bodies are
 * re-walked from the start on each call, which is fine for a client whose server does not use them
 * on the hot path.
 *
 * Invariants:
 *   1. Every byte examined is inside p[0..n); the parser never reads past n whatever the input.
 *   2. A return of 1 means p[0..total_len) is exactly one response and total_len <= n.
 *   3. Limits: the header block is at most BENCH_RESP_HEADER_MAX bytes and a body at most
 *      BENCH_RESP_BODY_MAX; beyond either the answer is ERR_TOO_LARGE, never an overflow.
 *   4. Input is never trusted: malformed bytes give ERR_INVALID, never an assertion.
 */
#include "bench/bench.h"

#include "base/err.h"

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
            if (size > (BENCH_RESP_BODY_MAX >> 4))
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
                    return n - off > BENCH_RESP_HEADER_MAX ? ERR_TOO_LARGE : 0;
                size_t tl = (size_t)(t - (p + off));
                off += tl + 2;
                if (tl == 0) {
                    *used = off;
                    return 1;
                }
            }
        }
        if (out->len + size > BENCH_RESP_BODY_MAX)
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

int bench_resp_parse(const uint8_t *p, size_t n, struct sbuf *dechunk, struct bench_resp *out)
{
    memset(out, 0, sizeof *out);
    const uint8_t *end = p + n;
    /* Find the end of the header block. */
    size_t hlen = 0;
    size_t lim = n < BENCH_RESP_HEADER_MAX ? n : BENCH_RESP_HEADER_MAX;
    for (size_t i = 3; i < lim; i++) {
        if (p[i] == '\n' && p[i - 1] == '\r' && p[i - 2] == '\n' && p[i - 3] == '\r') {
            hlen = i + 1;
            break;
        }
    }
    if (hlen == 0)
        return n >= BENCH_RESP_HEADER_MAX ? ERR_TOO_LARGE : 0;

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
    if (cl > BENCH_RESP_BODY_MAX)
        return ERR_TOO_LARGE;
    out->total_len = hlen + (size_t)cl;
    if (n < out->total_len)
        return 0;
    out->body = slice_of(p + hlen, (size_t)cl);
    return 1;
}

/* Find the last `"key"` followed by optional whitespace and ':'; return the value start or NULL. */
static const uint8_t *find_member(struct slice body, const char *key)
{
    size_t k = strlen(key);
    if (body.len < k + 3)
        return NULL;
    const uint8_t *end = body.ptr + body.len;
    for (size_t i = body.len - (k + 2) + 1; i-- > 0;) {
        const uint8_t *q = body.ptr + i;
        if (q[0] != '"' || q[k + 1] != '"' || memcmp(q + 1, key, k) != 0)
            continue;
        const uint8_t *v = q + k + 2;
        while (v < end && (*v == ' ' || *v == '\t' || *v == '\r' || *v == '\n'))
            v++;
        if (v >= end || *v != ':')
            continue;
        v++;
        while (v < end && (*v == ' ' || *v == '\t' || *v == '\r' || *v == '\n'))
            v++;
        return v;
    }
    return NULL;
}

bool bench_json_u64(struct slice body, const char *key, uint64_t *v)
{
    const uint8_t *q = find_member(body, key);
    if (!q)
        return false;
    const uint8_t *end = body.ptr + body.len;
    const uint8_t *d = q;
    while (d < end && is_digit(*d))
        d++;
    return parse_dec(q, (size_t)(d - q), UINT64_MAX, v);
}

bool bench_json_true(struct slice body, const char *key)
{
    const uint8_t *q = find_member(body, key);
    const uint8_t *end = body.ptr + body.len;
    return q && end - q >= 4 && memcmp(q, "true", 4) == 0;
}
