/* test_http_diff.c -- differential test of our HTTP/1.1 parser against Debian's libhttp-parser
 * (nodejs/http-parser 2.9) as an oracle.
 *
 * Every corpus entry is a complete request (head and body). Both parsers judge it. Where both
 * accept, method, URL, header names and values, Content-Length and the decoded body must agree.
 * Where they disagree on accept/reject, the entry must say so (OURS_STRICTER / THEIRS_STRICTER)
 * with a comment giving the reason: that list is the explicit record of our deliberate strictness
 * (and of the places where the oracle is stricter than RFC 9112). An entry marked as a
 * disagreement that the parsers in fact agree on fails too, so the list cannot go stale.
 */
#include "harness.h"

#include "base/err.h"
#include "http/http_parser.h"

#include <http_parser.h>
#include <stdlib.h>
#include <string.h>

enum verdict { AGREE, OURS_STRICTER, THEIRS_STRICTER };

struct diff_case {
    const char *raw;
    enum verdict expect;
};

/* clang-format off */
static const struct diff_case diff_corpus[] = {
    /* --- both accept --- */
    {"GET / HTTP/1.1\r\n\r\n", AGREE},
    {"GET /broker/consume/t/g/0?offset=0&limit=10 HTTP/1.1\r\nHost: localhost:8001\r\n"
     "User-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n", AGREE},
    {"POST /broker/topics/t/produce?partition=0 HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n"
     "Content-Type: application/octet-stream\r\n\r\nhello world", AGREE},
    {"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
     "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", AGREE},
    {"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
     "a;name=val\r\n0123456789\r\n1;x=\"q s\"\r\nZ\r\n0\r\n\r\n", AGREE},
    {"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
     "3\r\nabc\r\n0\r\nChecksum: 1234\r\n\r\n", AGREE},
    {"POST /x HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n00003\r\nabc\r\nA\r\n0123456789\r\n"
     "0\r\n\r\n", AGREE},
    {"GET /a HTTP/1.0\r\n\r\n", AGREE},
    {"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", AGREE},
    {"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", AGREE},
    {"GET http://example.com/p?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n", AGREE},
    {"GET / HTTP/1.1\r\nX-A: a b\tc\r\nX-Empty:\r\nX-Sp:   \r\n\r\n", AGREE},
    {"DELETE /kv/ns/key HTTP/1.1\r\nAuthorization: Bearer t0k3n\r\n\r\n", AGREE},
    {"PUT /kv/ns/key?cas=3&ttl_ms=1000 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", AGREE},
    {"PATCH /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n", AGREE},
    {"HEAD /health HTTP/1.1\r\n\r\n", AGREE},
    {"\r\nGET /after-crlf HTTP/1.1\r\n\r\n", AGREE},
    {"POST / HTTP/1.1\r\nContent-Length:  5  \r\n\r\nhello", AGREE},
    {"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi", AGREE},
    {"GET /p%20q/%E2%82%AC?x=%2F HTTP/1.1\r\n\r\n", AGREE},
    {"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\nF: 6\r\nG: 7\r\nH: 8\r\n"
     "Cookie: a=b; c=d\r\nAccept-Encoding: gzip, deflate\r\n\r\n", AGREE},
    {"GET / HTTP/1.1\r\nX-Utf8: caf\xc3\xa9\r\n\r\n", AGREE},
    {"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", AGREE},

    /* --- both reject --- */
    {"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", AGREE},
    {"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", AGREE},
    {"POST / HTTP/1.1\r\nContent-Length: 12a\r\n\r\n", AGREE},
    {"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", AGREE},
    {"GE(T / HTTP/1.1\r\n\r\n", AGREE},
    {"GET / HTTP/1.1\r\nX(y): a\r\n\r\n", AGREE},
    {"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", AGREE},
    {"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n8000000000000000000\r\n", AGREE},
    {"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n", AGREE},
    {"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", AGREE},
    {"GET / http/1.1\r\n\r\n", AGREE},
    {"GET / HTTP/1.1\r\n: empty-name\r\n\r\n", AGREE},
    {"GET / HTTP/1.1\r\nX: a\x01" "b\r\n\r\n", AGREE},
    {"GET / HTTP/1.1 \r\n\r\n", AGREE},
    {"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", AGREE},
    {"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", AGREE},
    {"GET foo HTTP/1.1\r\n\r\n", AGREE},
    {"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc0\r\n\r\n", AGREE},
    {"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n", AGREE},
    {"GET / HTTP/1.1\r\nX: a\x7f\r\n\r\n", AGREE},

    /* --- deliberate strictness differences --- */
    /* Bare LF line terminators: RFC 9112 §2.2 lets a recipient accept them; we do not, because
     * parsers that disagree on line endings enable smuggling. */
    {"GET / HTTP/1.1\nHost: a\n\n", OURS_STRICTER},
    {"GET / HTTP/1.1\r\nHost: a\r\n\n", OURS_STRICTER},
    /* obs-fold: RFC 9112 §5.2 allows rejecting it with 400; the oracle unfolds it. */
    {"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", OURS_STRICTER},
    /* Versions other than 1.0/1.1 are 501 for us; the oracle accepts any single digits. */
    {"GET / HTTP/1.2\r\n\r\n", OURS_STRICTER},
    /* Duplicate singleton fields (Host, Authorization, Content-Type, Origin) are ambiguous. */
    {"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", OURS_STRICTER},
    {"GET / HTTP/1.1\r\nAuthorization: a\r\nAuthorization: b\r\n\r\n", OURS_STRICTER},
    /* Transfer-Encoding in HTTP/1.0 is faulty framing (RFC 9112 §6.1). */
    {"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", OURS_STRICTER},
    /* A fragment is never sent in a request-target (RFC 9112 §3.2). */
    {"GET /a#frag HTTP/1.1\r\n\r\n", OURS_STRICTER},
    /* Characters outside RFC 3986 in the target. */
    {"GET /a{b}|c HTTP/1.1\r\n\r\n", OURS_STRICTER},
    {"GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n", OURS_STRICTER},
    /* Chunk extensions must be token[=token/quoted-string]. */
    {"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;a b c\r\nabc\r\n0\r\n\r\n",
     OURS_STRICTER},
    /* Whitespace between field name and colon: RFC 9112 §5.1 says MUST reject with 400. */
    {"GET / HTTP/1.1\r\nX : a\r\n\r\n", OURS_STRICTER},
    /* HTTP/0.9 (no version): we only speak 1.0 and 1.1 (501). */
    {"GET /\r\n\r\n", OURS_STRICTER},
    /* Codings other than exactly "chunked" are 501: we implement no other coding, and a coding
     * list is where front ends and back ends disagree about framing. */
    {"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", OURS_STRICTER},
    /* Exactly one SP between request-line parts (RFC 9112 §3); the oracle skips extra spaces. */
    {"GET  / HTTP/1.1\r\n\r\n", OURS_STRICTER},
    /* The oracle only knows a fixed list of methods; RFC 9110 §9.1 methods are any token. */
    {"FROB /x HTTP/1.1\r\n\r\n", THEIRS_STRICTER},
};
/* clang-format on */

/* ------------------------------------------------------------------------------------------------
 * Oracle side
 */

struct oracle {
    char url[1024];
    size_t url_len;
    struct {
        char name[256];
        char value[1024];
        size_t name_len, value_len;
    } hdr[HTTP_MAX_HEADERS + 8];
    size_t header_count;
    size_t head_header_count; /* before trailers */
    bool in_value;
    uint8_t body[4096];
    size_t body_len;
    uint64_t content_length;
    bool has_content_length;
    int messages;
    bool overflow;
};

static void append(char *dst, size_t *len, size_t cap, const char *p, size_t n, bool *overflow)
{
    if (*len + n > cap) {
        *overflow = true;
        return;
    }
    memcpy(dst + *len, p, n);
    *len += n;
}

static int o_url(http_parser *p, const char *at, size_t n)
{
    struct oracle *o = p->data;
    append(o->url, &o->url_len, sizeof o->url, at, n, &o->overflow);
    return 0;
}

static int o_field(http_parser *p, const char *at, size_t n)
{
    struct oracle *o = p->data;
    if (o->header_count == 0 || o->in_value) {
        if (o->header_count == HTTP_MAX_HEADERS + 8) {
            o->overflow = true;
            return 0;
        }
        o->header_count++;
        o->in_value = false;
    }
    size_t i = o->header_count - 1;
    append(o->hdr[i].name, &o->hdr[i].name_len, sizeof o->hdr[i].name, at, n, &o->overflow);
    return 0;
}

static int o_value(http_parser *p, const char *at, size_t n)
{
    struct oracle *o = p->data;
    if (o->header_count == 0)
        return 0;
    o->in_value = true;
    size_t i = o->header_count - 1;
    append(o->hdr[i].value, &o->hdr[i].value_len, sizeof o->hdr[i].value, at, n, &o->overflow);
    return 0;
}

static int o_headers_complete(http_parser *p)
{
    struct oracle *o = p->data;
    o->has_content_length = (p->flags & F_CONTENTLENGTH) != 0;
    o->content_length = p->content_length;
    o->head_header_count = o->header_count;
    return 0;
}

static int o_body(http_parser *p, const char *at, size_t n)
{
    struct oracle *o = p->data;
    size_t len = o->body_len;
    append((char *)o->body, &len, sizeof o->body, at, n, &o->overflow);
    o->body_len = len;
    return 0;
}

static int o_complete(http_parser *p)
{
    struct oracle *o = p->data;
    o->messages++;
    return 0;
}

static bool oracle_parse(const char *raw, size_t len, struct oracle *o, http_parser *p)
{
    memset(o, 0, sizeof *o);
    http_parser_settings s;
    http_parser_settings_init(&s);
    s.on_url = o_url;
    s.on_header_field = o_field;
    s.on_header_value = o_value;
    s.on_headers_complete = o_headers_complete;
    s.on_body = o_body;
    s.on_message_complete = o_complete;
    http_parser_init(p, HTTP_REQUEST);
    p->data = o;
    size_t n = http_parser_execute(p, &s, raw, len);
    return HTTP_PARSER_ERRNO(p) == HPE_OK && n == len && o->messages == 1 && !o->overflow;
}

/* ------------------------------------------------------------------------------------------------
 * Our side: head, then the body by Content-Length or chunked.
 */

struct ours {
    struct http_request req;
    uint8_t body[4096];
    size_t body_len;
    int rc;
};

static bool ours_parse(const char *raw, size_t len, struct ours *u)
{
    const uint8_t *b = (const uint8_t *)raw;
    u->body_len = 0;
    u->rc = http_parse_head(b, len, NULL, &u->req);
    if (u->rc != 1)
        return false;
    size_t off = u->req.head_len;
    if (u->req.chunked) {
        struct http_chunked c;
        http_chunked_init(&c, 8192);
        bool done = false;
        while (!done) {
            size_t used;
            struct slice data;
            u->rc = http_chunked_decode(&c, b + off, len - off, &used, &data, &done);
            if (u->rc < 0)
                return false;
            if (used == 0 && data.len == 0 && !done)
                return false; /* truncated */
            if (u->body_len + data.len > sizeof u->body)
                return false;
            memcpy(u->body + u->body_len, data.ptr, data.len);
            u->body_len += data.len;
            off += used;
        }
        return off == len;
    }
    uint64_t cl = u->req.has_content_length ? u->req.content_length : 0;
    if (cl != len - off || cl > sizeof u->body)
        return false;
    memcpy(u->body, b + off, cl);
    u->body_len = cl;
    return true;
}

static bool same_bytes(const void *a, size_t alen, const void *b, size_t blen)
{
    return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

/* The oracle keeps trailing whitespace of a value in some cases; compare modulo trailing OWS. */
static size_t trim_len(const char *v, size_t n)
{
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    return n;
}

static void compare_accepted(size_t idx, const struct oracle *o, const http_parser *p,
                             const struct ours *u)
{
    const struct http_request *r = &u->req;
    const char *m = http_method_str((enum http_method)p->method);
    bool ok = true;
    if (!same_bytes(m, strlen(m), r->method.ptr, r->method.len))
        ok = false, fprintf(stderr, "diff case %zu: method %s\n", idx, m);
    if (!same_bytes(o->url, o->url_len, r->target.ptr, r->target.len))
        ok = false, fprintf(stderr, "diff case %zu: url %.*s\n", idx, (int)o->url_len, o->url);
    /* The oracle reports trailer fields as more headers; we validate but do not expose them. */
    if (o->head_header_count != r->header_count) {
        ok = false;
        fprintf(stderr, "diff case %zu: %zu vs %zu headers\n", idx, o->head_header_count,
                r->header_count);
    } else {
        for (size_t i = 0; i < r->header_count; i++) {
            const struct http_header *h = &r->headers[i];
            if (!same_bytes(o->hdr[i].name, o->hdr[i].name_len, h->name.ptr, h->name.len) ||
                !same_bytes(o->hdr[i].value, trim_len(o->hdr[i].value, o->hdr[i].value_len),
                            h->value.ptr, h->value.len)) {
                ok = false;
                fprintf(stderr, "diff case %zu: header %zu '%.*s: %.*s'\n", idx, i,
                        (int)o->hdr[i].name_len, o->hdr[i].name, (int)o->hdr[i].value_len,
                        o->hdr[i].value);
            }
        }
    }
    if (r->has_content_length != o->has_content_length ||
        (r->has_content_length && r->content_length != o->content_length))
        ok = false, fprintf(stderr, "diff case %zu: content-length\n", idx);
    if (r->chunked != ((p->flags & F_CHUNKED) != 0))
        ok = false, fprintf(stderr, "diff case %zu: chunked\n", idx);
    if (!same_bytes(o->body, o->body_len, u->body, u->body_len))
        ok = false, fprintf(stderr, "diff case %zu: body\n", idx);
    if (r->version_minor != p->http_minor || p->http_major != 1)
        ok = false, fprintf(stderr, "diff case %zu: version\n", idx);
    CHECK(ok);
}

TEST(http_diff_corpus_size)
{
    CHECK(sizeof diff_corpus / sizeof diff_corpus[0] >= 40);
}

TEST(http_diff_against_libhttp_parser)
{
    static struct oracle o;
    static struct ours u;
    for (size_t i = 0; i < sizeof diff_corpus / sizeof diff_corpus[0]; i++) {
        const char *raw = diff_corpus[i].raw;
        size_t len = strlen(raw);
        http_parser p;
        bool theirs = oracle_parse(raw, len, &o, &p);
        bool mine = ours_parse(raw, len, &u);
        enum verdict got = theirs == mine ? AGREE : theirs ? OURS_STRICTER : THEIRS_STRICTER;
        if (got != diff_corpus[i].expect) {
            fprintf(stderr, "diff case %zu: expected verdict %d, got %d (ours rc %d, theirs %s)\n",
                    i, diff_corpus[i].expect, got, u.rc,
                    http_errno_name(HTTP_PARSER_ERRNO(&p)));
            CHECK(got == diff_corpus[i].expect);
            continue;
        }
        if (theirs && mine)
            compare_accepted(i, &o, &p, &u);
    }
}

/* Agreement must not depend on how the oracle is fed: feed it byte by byte for accepted cases and
 * check the result is the same as in one piece (guards the harness, not the parsers). */
TEST(http_diff_oracle_bytewise_stable)
{
    static struct oracle o1, o2;
    for (size_t i = 0; i < sizeof diff_corpus / sizeof diff_corpus[0]; i++) {
        const char *raw = diff_corpus[i].raw;
        size_t len = strlen(raw);
        http_parser p1, p2;
        bool a = oracle_parse(raw, len, &o1, &p1);
        memset(&o2, 0, sizeof o2);
        http_parser_settings s;
        http_parser_settings_init(&s);
        s.on_url = o_url;
        s.on_header_field = o_field;
        s.on_header_value = o_value;
        s.on_headers_complete = o_headers_complete;
        s.on_body = o_body;
        s.on_message_complete = o_complete;
        http_parser_init(&p2, HTTP_REQUEST);
        p2.data = &o2;
        size_t k = 0;
        while (k < len && HTTP_PARSER_ERRNO(&p2) == HPE_OK)
            k += http_parser_execute(&p2, &s, raw + k, 1) ? 1 : len;
        bool b = HTTP_PARSER_ERRNO(&p2) == HPE_OK && o2.messages == 1 && !o2.overflow;
        CHECK(a == b);
        if (a && b)
            CHECK(same_bytes(o1.body, o1.body_len, o2.body, o2.body_len) &&
                  same_bytes(o1.url, o1.url_len, o2.url, o2.url_len));
    }
}
