/* test_http_parser.c -- the HTTP/1.1 head parser and the chunked decoder: valid requests, every
 * rejection, limits, and the split-at-every-byte property (a prefix of a request gives "need more"
 * or the same error; the whole buffer gives the same result however it is cut). */
#include "harness.h"

#include "base/err.h"
#include "http/http_parser.h"

#include <stdlib.h>
#include <string.h>

/* Parse s[0..n) from an exact-size heap copy so ASan catches any read past the end. */
static int parse_n(const char *s, size_t n, const struct http_limits *lim,
                   struct http_request *req, uint8_t **copy)
{
    uint8_t *b = malloc(n ? n : 1);
    memcpy(b, s, n);
    int rc = http_parse_head(b, n, lim, req);
    if (copy)
        *copy = b;
    else
        free(b);
    return rc;
}

static int parse_s(const char *s, struct http_request *req)
{
    return http_parse_head((const uint8_t *)s, strlen(s), NULL, req);
}

static int rc_of(const char *s)
{
    struct http_request req;
    return parse_n(s, strlen(s), NULL, &req, NULL);
}

/* ------------------------------------------------------------------------------------------------
 * Valid requests
 */

TEST(http_get_basic)
{
    struct http_request r;
    const char *s = "GET /broker/topics/t/produce?partition=0&x=1 HTTP/1.1\r\n"
                    "Host: localhost:1109\r\n"
                    "User-Agent: curl/8.0\r\n"
                    "Accept: */*\r\n"
                    "\r\n";
    REQUIRE(parse_s(s, &r) == 1);
    CHECK(slice_eq_cstr(r.method, "GET"));
    CHECK(slice_eq_cstr(r.target, "/broker/topics/t/produce?partition=0&x=1"));
    CHECK(slice_eq_cstr(r.path, "/broker/topics/t/produce"));
    CHECK(slice_eq_cstr(r.query, "partition=0&x=1"));
    CHECK_EQ_INT(r.version_minor, 1);
    CHECK_EQ_INT(r.header_count, 3);
    CHECK(slice_eq_cstr(r.headers[0].name, "Host"));
    CHECK(slice_eq_cstr(r.headers[0].value, "localhost:1109"));
    CHECK(slice_eq_cstr(r.host, "localhost:1109"));
    CHECK(r.keep_alive);
    CHECK(!r.has_content_length);
    CHECK(!r.chunked);
    CHECK(!r.expect_continue);
    CHECK(r.authorization.len == 0 && r.content_type.len == 0 && r.origin.len == 0);
    CHECK_EQ_INT(r.head_len, strlen(s));
    const struct http_header *h = http_find_header(&r, "user-agent");
    REQUIRE(h != NULL);
    CHECK(slice_eq_cstr(h->value, "curl/8.0"));
    CHECK(http_find_header(&r, "accept-encoding") == NULL);
    CHECK(http_find_header(&r, "accep") == NULL);
}

TEST(http_post_content_length_and_fields)
{
    struct http_request r;
    const char *s = "POST /kv/ns/k HTTP/1.1\r\n"
                    "host: a\r\n"
                    "CONTENT-LENGTH: 5\r\n"
                    "Content-Type:application/json  \r\n"
                    "Authorization: \t Bearer abc\t\r\n"
                    "Origin: http://x\r\n"
                    "Expect: 100-Continue\r\n"
                    "X-Empty:\r\n"
                    "\r\nhello";
    REQUIRE(parse_s(s, &r) == 1);
    CHECK(r.has_content_length);
    CHECK_EQ_INT(r.content_length, 5);
    CHECK(slice_eq_cstr(r.content_type, "application/json"));
    CHECK(slice_eq_cstr(r.authorization, "Bearer abc"));
    CHECK(slice_eq_cstr(r.origin, "http://x"));
    CHECK(slice_eq_cstr(r.host, "a"));
    CHECK(r.expect_continue);
    const struct http_header *h = http_find_header(&r, "x-empty");
    REQUIRE(h != NULL);
    CHECK(h->value.len == 0);
    CHECK_EQ_INT(r.head_len, strlen(s) - 5);
    CHECK(memcmp(s + r.head_len, "hello", 5) == 0);
    CHECK(r.query.len == 0);
}

TEST(http_chunked_request_head)
{
    struct http_request r;
    REQUIRE(parse_s("POST /p HTTP/1.1\r\nTransfer-Encoding:  Chunked \r\n\r\n", &r) == 1);
    CHECK(r.chunked);
    CHECK(!r.has_content_length);
}

TEST(http_keep_alive_semantics)
{
    struct http_request r;
    REQUIRE(parse_s("GET / HTTP/1.1\r\nConnection: close\r\n\r\n", &r) == 1);
    CHECK(!r.keep_alive);
    REQUIRE(parse_s("GET / HTTP/1.1\r\nConnection: Upgrade, CLOSE\r\n\r\n", &r) == 1);
    CHECK(!r.keep_alive);
    REQUIRE(parse_s("GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n", &r) == 1);
    CHECK(r.keep_alive);
    REQUIRE(parse_s("GET / HTTP/1.0\r\n\r\n", &r) == 1);
    CHECK_EQ_INT(r.version_minor, 0);
    CHECK(!r.keep_alive);
    REQUIRE(parse_s("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &r) == 1);
    CHECK(r.keep_alive);
    REQUIRE(parse_s("GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
                    &r) == 1);
    CHECK(!r.keep_alive);
    REQUIRE(parse_s("GET / HTTP/1.1\r\nConnection: closed\r\n\r\n", &r) == 1);
    CHECK(r.keep_alive);
}

TEST(http_pipelined_requests)
{
    const char *s = "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
                    "POST /b?z HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi"
                    "GET /c HTTP/1.1\r\n\r\n";
    const uint8_t *b = (const uint8_t *)s;
    size_t len = strlen(s), off = 0;
    struct http_request r;
    REQUIRE(http_parse_head(b, len, NULL, &r) == 1);
    CHECK(slice_eq_cstr(r.path, "/a"));
    CHECK_EQ_INT(r.head_len, strlen("GET /a HTTP/1.1\r\nHost: h\r\n\r\n"));
    off += r.head_len;
    REQUIRE(http_parse_head(b + off, len - off, NULL, &r) == 1);
    CHECK(slice_eq_cstr(r.path, "/b"));
    CHECK(slice_eq_cstr(r.query, "z"));
    CHECK_EQ_INT(r.content_length, 2);
    off += r.head_len + r.content_length;
    REQUIRE(http_parse_head(b + off, len - off, NULL, &r) == 1);
    CHECK(slice_eq_cstr(r.path, "/c"));
    CHECK_EQ_INT(off + r.head_len, len);
}

TEST(http_leading_crlf_skipped)
{
    struct http_request r;
    const char *s = "\r\n\r\nGET /x HTTP/1.1\r\n\r\n";
    REQUIRE(parse_s(s, &r) == 1);
    CHECK(slice_eq_cstr(r.method, "GET"));
    CHECK_EQ_INT(r.head_len, strlen(s));
    CHECK_EQ_INT(rc_of("\nGET / HTTP/1.1\r\n\r\n"), ERR_INVALID);
    CHECK_EQ_INT(rc_of("\r\rGET / HTTP/1.1\r\n\r\n"), ERR_INVALID);
}

TEST(http_target_forms)
{
    struct http_request r;
    REQUIRE(parse_s("OPTIONS * HTTP/1.1\r\n\r\n", &r) == 1);
    CHECK(slice_eq_cstr(r.path, "*"));
    CHECK(r.query.len == 0);
    REQUIRE(parse_s("GET http://example.com:80/a/b?c=d HTTP/1.1\r\n\r\n", &r) == 1);
    CHECK(slice_eq_cstr(r.target, "http://example.com:80/a/b?c=d"));
    CHECK(slice_eq_cstr(r.path, "/a/b"));
    CHECK(slice_eq_cstr(r.query, "c=d"));
    REQUIRE(parse_s("GET HTTPS://h/ HTTP/1.1\r\n\r\n", &r) == 1);
    CHECK(slice_eq_cstr(r.path, "/"));
    REQUIRE(parse_s("GET /a?b?c=%20&d HTTP/1.1\r\n\r\n", &r) == 1);
    CHECK(slice_eq_cstr(r.path, "/a"));
    CHECK(slice_eq_cstr(r.query, "b?c=%20&d"));
    REQUIRE(parse_s("GET /? HTTP/1.1\r\n\r\n", &r) == 1);
    CHECK(slice_eq_cstr(r.path, "/"));
    CHECK(r.query.len == 0 && r.query.ptr != NULL);
    REQUIRE(parse_s("GET /a-._~!$&'()*+,;=:@%41 HTTP/1.1\r\n\r\n", &r) == 1);

    CHECK_EQ_INT(rc_of("GET * HTTP/1.1\r\n\r\n"), ERR_INVALID);
    CHECK_EQ_INT(rc_of("GET foo HTTP/1.1\r\n\r\n"), ERR_INVALID);
    CHECK_EQ_INT(rc_of("GET http://h HTTP/1.1\r\n\r\n"), ERR_INVALID);
    CHECK_EQ_INT(rc_of("GET http:///p HTTP/1.1\r\n\r\n"), ERR_INVALID);
    CHECK_EQ_INT(rc_of("GET http://h?x/y HTTP/1.1\r\n\r\n"), ERR_INVALID);
    CHECK_EQ_INT(rc_of("GET ftp://h/p HTTP/1.1\r\n\r\n"), ERR_INVALID);
    CHECK_EQ_INT(rc_of("CONNECT h:443 HTTP/1.1\r\n\r\n"), ERR_INVALID);
    CHECK_EQ_INT(rc_of("GET /a#frag HTTP/1.1\r\n\r\n"), ERR_INVALID);
    CHECK_EQ_INT(rc_of("GET /a\"b HTTP/1.1\r\n\r\n"), ERR_INVALID);
    CHECK_EQ_INT(rc_of("GET /{x} HTTP/1.1\r\n\r\n"), ERR_INVALID);
    CHECK_EQ_INT(rc_of("GET /\xc3\xa9 HTTP/1.1\r\n\r\n"), ERR_INVALID);
    CHECK_EQ_INT(rc_of("GET /a\tb HTTP/1.1\r\n\r\n"), ERR_INVALID);
}

/* ------------------------------------------------------------------------------------------------
 * Rejections
 */

TEST(http_reject_request_line)
{
    CHECK_EQ_INT(rc_of(" / HTTP/1.1\r\n\r\n"), ERR_INVALID);
    CHECK_EQ_INT(rc_of("GE(T / HTTP/1.1\r\n\r\n"), ERR_INVALID);
    CHECK_EQ_INT(rc_of("GET  / HTTP/1.1\r\n\r\n"), ERR_INVALID);
    CHECK_EQ_INT(rc_of("GET /  HTTP/1.1\r\n\r\n"), ERR_INVALID);
    CHECK_EQ_INT(rc_of("GET / HTTP/1.1 \r\n\r\n"), ERR_INVALID);
    CHECK_EQ_INT(rc_of("GET\t/ HTTP/1.1\r\n\r\n"), ERR_INVALID);
    CHECK_EQ_INT(rc_of("GET / http/1.1\r\n\r\n"), ERR_INVALID);
    CHECK_EQ_INT(rc_of("GET / HTTP/1.10\r\n\r\n"), ERR_INVALID);
    CHECK_EQ_INT(rc_of("GET / HTTP/11\r\n\r\n"), ERR_INVALID);
    CHECK_EQ_INT(rc_of("GET / HTTP/1.x\r\n\r\n"), ERR_INVALID);
    CHECK_EQ_INT(rc_of("GET / FTP/1.1\r\n\r\n"), ERR_INVALID);
    CHECK_EQ_INT(rc_of("\r\n\r\n\r\n"), 0); /* empty lines skipped: need more */
    CHECK_EQ_INT(rc_of("GET\r\n\r\n"), ERR_INVALID);
    /* Versions we do not speak. */
    CHECK_EQ_INT(rc_of("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), ERR_UNSUPPORTED);
    CHECK_EQ_INT(rc_of("GET / HTTP/1.2\r\n\r\n"), ERR_UNSUPPORTED);
    CHECK_EQ_INT(rc_of("GET / HTTP/0.9\r\n\r\n"), ERR_UNSUPPORTED);
    CHECK_EQ_INT(rc_of("GET / HTTP/3.0\r\n\r\n"), ERR_UNSUPPORTED);
    CHECK_EQ_INT(rc_of("GET /\r\n\r\n"), ERR_UNSUPPORTED);
    /* A request line without a target is malformed, not HTTP/0.9 (issue #12). */
    CHECK_EQ_INT(rc_of("GET HTTP/1.1\r\n\r\n"), ERR_INVALID);
    CHECK_EQ_INT(rc_of("POST HTTP/1.0\r\n\r\n"), ERR_INVALID);
}

TEST(http_reject_line_endings)
{
    CHECK_EQ_INT(rc_of("GET / HTTP/1.1\nHost: a\r\n\r\n"), ERR_INVALID);
    CHECK_EQ_INT(rc_of("GET / HTTP/1.1\r\nHost: a\n\r\n"), ERR_INVALID);
    CHECK_EQ_INT(rc_of("GET / HTTP/1.1\r\nHost: a\r\n\n"), ERR_INVALID);
    CHECK_EQ_INT(rc_of("GET / HTTP/1.1\n\n"), ERR_INVALID);
    CHECK_EQ_INT(rc_of("GET / HTTP/1.1\r\r\n\r\n"), ERR_INVALID);
    CHECK_EQ_INT(rc_of("GET /\r HTTP/1.1\r\n\r\n"), ERR_INVALID);
    CHECK_EQ_INT(rc_of("GET / HTTP/1.1\r\nX: a\rb\r\n\r\n"), ERR_INVALID);
    CHECK_EQ_INT(rc_of("GET / HTTP/1.1\r\nX: a\r\r\n\r\n"), ERR_INVALID);
    CHECK_EQ_INT(rc_of("GET / HTTP/1.1\r\nX: a\r\n\r\r\n"), ERR_INVALID);
}

TEST(http_reject_header_syntax)
{
    CHECK_EQ_INT(rc_of("GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n"), ERR_INVALID);  /* obs-fold */
    CHECK_EQ_INT(rc_of("GET / HTTP/1.1\r\nX: a\r\n\tb\r\n\r\n"), ERR_INVALID); /* obs-fold */
    CHECK_EQ_INT(rc_of("GET / HTTP/1.1\r\n X: a\r\n\r\n"), ERR_INVALID);
    CHECK_EQ_INT(rc_of("GET / HTTP/1.1\r\nX : a\r\n\r\n"), ERR_INVALID);
    CHECK_EQ_INT(rc_of("GET / HTTP/1.1\r\nX\t: a\r\n\r\n"), ERR_INVALID);
    CHECK_EQ_INT(rc_of("GET / HTTP/1.1\r\n: a\r\n\r\n"), ERR_INVALID);
    CHECK_EQ_INT(rc_of("GET / HTTP/1.1\r\nX(y): a\r\n\r\n"), ERR_INVALID);
    CHECK_EQ_INT(rc_of("GET / HTTP/1.1\r\nX/y: a\r\n\r\n"), ERR_INVALID);
    CHECK_EQ_INT(rc_of("GET / HTTP/1.1\r\nNoColon\r\n\r\n"), ERR_INVALID);
    CHECK_EQ_INT(rc_of("GET / HTTP/1.1\r\nX: a\x01\r\n\r\n"), ERR_INVALID);
    CHECK_EQ_INT(rc_of("GET / HTTP/1.1\r\nX: a\x7f\r\n\r\n"), ERR_INVALID);
    CHECK_EQ_INT(rc_of("GET / HTTP/1.1\r\nX: a\x1b[0m\r\n\r\n"), ERR_INVALID);
    CHECK_EQ_INT(rc_of("GET / HTTP/1.1\r\nX\xc3\xa9: a\r\n\r\n"), ERR_INVALID);
    static const char nul[] = "GET / HTTP/1.1\r\nX: a\0b\r\n\r\n";
    struct http_request r;
    CHECK_EQ_INT(parse_n(nul, sizeof nul - 1, NULL, &r, NULL), ERR_INVALID);
    /* HTAB and obs-text in values are fine. */
    REQUIRE(parse_s("GET / HTTP/1.1\r\nX: a\tb \xc3\xa9\r\n\r\n", &r) == 1);
    CHECK(slice_eq_cstr(r.headers[0].value, "a\tb \xc3\xa9"));
}

TEST(http_reject_content_length)
{
    const char *bad[] = {"12a", "+5", "-1", "5 5", "", "0x10", "5,5", "5, 5", "1e3",
                         "9223372036854775808", "99999999999999999999", "18446744073709551616",
                         "\xd9\xa5"};
    char s[256];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(s, sizeof s, "POST / HTTP/1.1\r\nContent-Length: %s\r\n\r\n", bad[i]);
        CHECK_EQ_INT(rc_of(s), ERR_INVALID);
    }
    CHECK_EQ_INT(rc_of("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"),
                 ERR_INVALID);
    CHECK_EQ_INT(rc_of("POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 6\r\n\r\n"),
                 ERR_INVALID);
    struct http_request r;
    REQUIRE(parse_s("POST / HTTP/1.1\r\nContent-Length: 9223372036854775807\r\n\r\n", &r) == 1);
    CHECK(r.content_length == (uint64_t)INT64_MAX);
    REQUIRE(parse_s("POST / HTTP/1.1\r\nContent-Length:  007 \r\n\r\n", &r) == 1);
    CHECK_EQ_INT(r.content_length, 7);
    REQUIRE(parse_s("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", &r) == 1);
    CHECK(r.has_content_length && r.content_length == 0);
}

TEST(http_reject_transfer_encoding)
{
    CHECK_EQ_INT(rc_of("POST / HTTP/1.1\r\nContent-Length: 5\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n"),
                 ERR_INVALID);
    CHECK_EQ_INT(rc_of("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
                       "Content-Length: 5\r\n\r\n"),
                 ERR_INVALID);
    CHECK_EQ_INT(rc_of("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"), ERR_UNSUPPORTED);
    CHECK_EQ_INT(rc_of("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
                 ERR_UNSUPPORTED);
    CHECK_EQ_INT(rc_of("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"),
                 ERR_UNSUPPORTED);
    CHECK_EQ_INT(rc_of("POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n"), ERR_UNSUPPORTED);
    CHECK_EQ_INT(rc_of("POST / HTTP/1.1\r\nTransfer-Encoding:\r\n\r\n"), ERR_UNSUPPORTED);
    CHECK_EQ_INT(rc_of("POST / HTTP/1.1\r\nTransfer-Encoding: chunkedx\r\n\r\n"), ERR_UNSUPPORTED);
    CHECK_EQ_INT(rc_of("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n"),
                 ERR_INVALID);
    CHECK_EQ_INT(rc_of("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), ERR_INVALID);
}

TEST(http_reject_duplicate_singletons)
{
    CHECK_EQ_INT(rc_of("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"), ERR_INVALID);
    CHECK_EQ_INT(rc_of("GET / HTTP/1.1\r\nAuthorization: a\r\nauthorization: b\r\n\r\n"),
                 ERR_INVALID);
    CHECK_EQ_INT(rc_of("GET / HTTP/1.1\r\nContent-Type: a\r\nContent-Type: a\r\n\r\n"),
                 ERR_INVALID);
    CHECK_EQ_INT(rc_of("GET / HTTP/1.1\r\nOrigin: a\r\nOrigin: b\r\n\r\n"), ERR_INVALID);
    /* Non-singletons may repeat. */
    struct http_request r;
    REQUIRE(parse_s("GET / HTTP/1.1\r\nAccept: a\r\nAccept: b\r\n\r\n", &r) == 1);
    CHECK_EQ_INT(r.header_count, 2);
}

TEST(http_host_required_option)
{
    struct http_limits lim;
    http_limits_default(&lim);
    struct http_request r;
    const char *s = "GET / HTTP/1.1\r\n\r\n";
    CHECK_EQ_INT(parse_n(s, strlen(s), &lim, &r, NULL), 1);
    lim.host_required = true;
    CHECK_EQ_INT(parse_n(s, strlen(s), &lim, &r, NULL), ERR_INVALID);
    s = "GET / HTTP/1.0\r\n\r\n";
    CHECK_EQ_INT(parse_n(s, strlen(s), &lim, &r, NULL), 1);
    s = "GET / HTTP/1.1\r\nHost: h\r\n\r\n";
    CHECK_EQ_INT(parse_n(s, strlen(s), &lim, &r, NULL), 1);
}

/* ------------------------------------------------------------------------------------------------
 * Limits
 */

static char *make_request_line(size_t target_len, const char *rest)
{
    /* "GET /aaaa HTTP/1.1" + rest; the request line (without CRLF) is 4 + target_len + 9 long. */
    size_t n = 4 + target_len + 9 + strlen(rest);
    char *s = malloc(n + 1);
    memcpy(s, "GET /", 5);
    memset(s + 5, 'a', target_len - 1);
    memcpy(s + 4 + target_len, " HTTP/1.1", 9);
    strcpy(s + 4 + target_len + 9, rest);
    return s;
}

TEST(http_limit_request_line)
{
    struct http_request r;
    char *s = make_request_line(8192 - 13, "\r\n\r\n"); /* exactly 8192 */
    CHECK_EQ_INT(rc_of(s), 1);
    free(s);
    s = make_request_line(8193 - 13, "\r\n\r\n");
    CHECK_EQ_INT(rc_of(s), ERR_URI_TOO_LONG);
    /* Decided before the CRLF arrives. */
    CHECK_EQ_INT(parse_n(s, 8193, NULL, &r, NULL), ERR_URI_TOO_LONG);
    CHECK_EQ_INT(parse_n(s, 8192, NULL, &r, NULL), 0);
    free(s);
    /* A line with no CRLF at all. */
    char *big = malloc(100000);
    memset(big, 'a', 100000);
    memcpy(big, "GET /", 5);
    CHECK_EQ_INT(parse_n(big, 100000, NULL, &r, NULL), ERR_URI_TOO_LONG);
    free(big);
    /* Custom limit. */
    struct http_limits lim;
    http_limits_default(&lim);
    lim.request_line_max = 16;
    const char *t = "GET /123 HTTP/1.1\r\n\r\n"; /* 17 */
    CHECK_EQ_INT(parse_n(t, strlen(t), &lim, &r, NULL), ERR_URI_TOO_LONG);
    t = "GET /12 HTTP/1.1\r\n\r\n"; /* 16 */
    CHECK_EQ_INT(parse_n(t, strlen(t), &lim, &r, NULL), 1);
    CHECK_EQ_INT(parse_n(t, 17, &lim, &r, NULL), 0); /* "...1.1\r": the CR may start the CRLF */
}

TEST(http_limit_head_size)
{
    struct http_limits lim;
    http_limits_default(&lim);
    lim.head_max = 64;
    struct http_request r;
    /* head of exactly 64 bytes: 16 + 46 + 2 */
    char s[256];
    snprintf(s, sizeof s, "GET / HTTP/1.1\r\nX: %041d\r\n\r\n", 0);
    REQUIRE(strlen(s) == 64);
    CHECK_EQ_INT(parse_n(s, strlen(s), &lim, &r, NULL), 1);
    CHECK_EQ_INT(r.head_len, 64);
    snprintf(s, sizeof s, "GET / HTTP/1.1\r\nX: %042d\r\n\r\n", 0);
    CHECK_EQ_INT(parse_n(s, strlen(s), &lim, &r, NULL), ERR_HEADERS_TOO_LARGE);
    /* Incomplete heads past the limit fail early. */
    CHECK_EQ_INT(parse_n(s, 64, &lim, &r, NULL), ERR_HEADERS_TOO_LARGE);
    CHECK_EQ_INT(parse_n(s, 63, &lim, &r, NULL), 0);
    /* Default: 65536. */
    size_t n = 70000;
    char *big = malloc(n);
    memcpy(big, "GET / HTTP/1.1\r\nX: ", 19);
    memset(big + 19, 'v', n - 19);
    CHECK_EQ_INT(parse_n(big, n, NULL, &r, NULL), ERR_HEADERS_TOO_LARGE);
    CHECK_EQ_INT(parse_n(big, 65535, NULL, &r, NULL), 0);
    free(big);
    /* Leading CRLFs count. */
    lim.head_max = 20;
    const char *t = "\r\n\r\n\r\nGET / HTTP/1.1\r\n\r\n";
    CHECK_EQ_INT(parse_n(t, strlen(t), &lim, &r, NULL), ERR_HEADERS_TOO_LARGE);
}

TEST(http_limit_header_count)
{
    char *s = malloc(8192);
    size_t n = 0;
    n += (size_t)sprintf(s + n, "GET / HTTP/1.1\r\n");
    for (int i = 0; i < 64; i++)
        n += (size_t)sprintf(s + n, "H%d: %d\r\n", i, i);
    strcpy(s + n, "\r\n");
    struct http_request r;
    REQUIRE(parse_s(s, &r) == 1);
    CHECK_EQ_INT(r.header_count, 64);
    CHECK(slice_eq_cstr(r.headers[63].name, "H63"));
    n += (size_t)sprintf(s + n, "H64: x\r\n\r\n");
    CHECK_EQ_INT(rc_of(s), ERR_HEADERS_TOO_LARGE);
    free(s);
    struct http_limits lim;
    http_limits_default(&lim);
    lim.header_count_max = 2;
    const char *t = "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n";
    CHECK_EQ_INT(parse_n(t, strlen(t), &lim, &r, NULL), 1);
    t = "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    CHECK_EQ_INT(parse_n(t, strlen(t), &lim, &r, NULL), ERR_HEADERS_TOO_LARGE);
    lim.header_count_max = 1000; /* clamped to HTTP_MAX_HEADERS */
    s = malloc(8192);
    n = (size_t)sprintf(s, "GET / HTTP/1.1\r\n");
    for (int i = 0; i < 65; i++)
        n += (size_t)sprintf(s + n, "H%d: %d\r\n", i, i);
    strcpy(s + n, "\r\n");
    CHECK_EQ_INT(parse_n(s, strlen(s), &lim, &r, NULL), ERR_HEADERS_TOO_LARGE);
    free(s);
}

/* ------------------------------------------------------------------------------------------------
 * Split at every byte
 */

struct corpus_case {
    const char *raw;
    int rc; /* expected result of parsing the whole thing */
};

static const struct corpus_case split_corpus[] = {
    {"GET / HTTP/1.1\r\n\r\n", 1},
    {"GET /broker/consume/t/g/0?offset=0&limit=10 HTTP/1.1\r\nHost: localhost:8001\r\n"
     "User-Agent: curl/7.88\r\nAccept: */*\r\n\r\n",
     1},
    {"POST /broker/topics/t/produce?partition=0 HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n"
     "Content-Type: application/octet-stream\r\n\r\nhello world",
     1},
    {"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 1},
    {"\r\n\r\nGET /after-crlf HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 1},
    {"OPTIONS * HTTP/1.1\r\n\r\n", 1},
    {"GET http://h/p?q=1 HTTP/1.1\r\nX:\r\n\r\n", 1},
    {"GET / HTTP/1.1\r\nA: 1\r\n\r\nGET /next HTTP/1.1\r\n\r\n", 1},
    {"GET / HTTP/1.1\nHost: a\r\n\r\n", ERR_INVALID},
    {"GET / HTTP/1.1\r\nHost: a\r\n\n", ERR_INVALID},
    {"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n", ERR_INVALID},
    {"GET / HTTP/1.1\r\nX : a\r\n\r\n", ERR_INVALID},
    {"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", ERR_INVALID},
    {"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", ERR_INVALID},
    {"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", ERR_INVALID},
    {"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", ERR_UNSUPPORTED},
    {"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", ERR_UNSUPPORTED},
    {"GET /\r\n\r\n", ERR_UNSUPPORTED},
    {"GE T / HTTP/1.1\r\n\r\n", ERR_INVALID},
    {"GET / HTTP/1.1\r\nX: \x01\r\n\r\n", ERR_INVALID},
    {"\r\nGET / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", ERR_INVALID},
};

static bool slice_same(struct slice a, const uint8_t *abase, struct slice b, const uint8_t *bbase)
{
    if (a.len != b.len)
        return false;
    if (a.len == 0)
        return (a.ptr == NULL) == (b.ptr == NULL);
    return a.ptr - abase == b.ptr - bbase;
}

static bool req_same(const struct http_request *a, const uint8_t *abase,
                     const struct http_request *b, const uint8_t *bbase)
{
    bool ok = slice_same(a->method, abase, b->method, bbase) &&
              slice_same(a->target, abase, b->target, bbase) &&
              slice_same(a->path, abase, b->path, bbase) &&
              slice_same(a->query, abase, b->query, bbase) &&
              a->version_minor == b->version_minor && a->header_count == b->header_count &&
              a->has_content_length == b->has_content_length &&
              a->content_length == b->content_length && a->chunked == b->chunked &&
              a->keep_alive == b->keep_alive && a->expect_continue == b->expect_continue &&
              slice_same(a->host, abase, b->host, bbase) &&
              slice_same(a->authorization, abase, b->authorization, bbase) &&
              slice_same(a->content_type, abase, b->content_type, bbase) &&
              slice_same(a->origin, abase, b->origin, bbase) && a->head_len == b->head_len;
    for (size_t i = 0; ok && i < a->header_count; i++)
        ok = slice_same(a->headers[i].name, abase, b->headers[i].name, bbase) &&
             slice_same(a->headers[i].value, abase, b->headers[i].value, bbase);
    return ok;
}

TEST(http_split_every_byte)
{
    for (size_t c = 0; c < sizeof split_corpus / sizeof split_corpus[0]; c++) {
        const char *s = split_corpus[c].raw;
        size_t len = strlen(s);
        struct http_request full, part;
        uint8_t *fb;
        int rc = parse_n(s, len, NULL, &full, &fb);
        CHECK_EQ_INT(rc, split_corpus[c].rc);
        size_t decided = rc == 1 ? full.head_len : len;
        for (size_t k = 0; k <= len; k++) {
            uint8_t *pb;
            int prc = parse_n(s, k, NULL, &part, &pb);
            if (k < decided) {
                if (!(prc == 0 || (rc < 0 && prc == rc))) {
                    fprintf(stderr, "case %zu prefix %zu: rc %d (full %d)\n", c, k, prc, rc);
                    CHECK(prc == 0 || (rc < 0 && prc == rc));
                }
            } else {
                CHECK_EQ_INT(prc, rc);
                if (rc == 1)
                    CHECK(req_same(&full, fb, &part, pb));
            }
            free(pb);
        }
        free(fb);
    }
}

/* Under small limits, every prefix of an oversized request either needs more or gives the error
 * the whole request gives. */
TEST(http_split_every_byte_limits)
{
    struct http_limits lim;
    http_limits_default(&lim);
    lim.request_line_max = 20;
    lim.head_max = 48;
    lim.header_count_max = 2;
    const struct corpus_case cases[] = {
        {"GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\n\r\n", ERR_URI_TOO_LONG},
        {"GET /aaaaaa HTTP/1.1\r\n\r\n", 1},
        {"GET /aaaaaaa HTTP/1.1\r\n\r\n", ERR_URI_TOO_LONG},
        {"GET / HTTP/1.1\r\nX: 0123456789012345678901234567890123\r\n\r\n", ERR_HEADERS_TOO_LARGE},
        {"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", ERR_HEADERS_TOO_LARGE},
        {"GET / HTTP/1.1\r\nA: 1\r\nB\x01: 2\r\nC: 3\r\n\r\n", ERR_INVALID},
        {"\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n"
         "\r\n\r\n\r\nGET / HTTP/1.1\r\n\r\n",
         ERR_HEADERS_TOO_LARGE},
        {"GET /\r\xff/aaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\n\r\n", ERR_URI_TOO_LONG},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const char *s = cases[c].raw;
        size_t len = strlen(s);
        struct http_request r;
        int rc = parse_n(s, len, &lim, &r, NULL);
        CHECK_EQ_INT(rc, cases[c].rc);
        size_t decided = rc == 1 ? r.head_len : len;
        for (size_t k = 0; k < decided; k++) {
            int prc = parse_n(s, k, &lim, &r, NULL);
            if (!(prc == 0 || (rc < 0 && prc == rc)))
                fprintf(stderr, "limits case %zu prefix %zu: rc %d (full %d)\n", c, k, prc, rc);
            CHECK(prc == 0 || (rc < 0 && prc == rc));
        }
    }
}

/* ------------------------------------------------------------------------------------------------
 * Chunked decoder
 */

/* Decode in[0..len) fed in pieces whose sizes come from next_piece(); appends data to out. Returns
 * the decoder's final rc; *total = bytes consumed, *done as reported. */
static uint64_t rng_state;
static size_t rng_next(size_t max)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (size_t)(rng_state % max) + 1;
}

enum split_mode { SPLIT_ONE, SPLIT_BYTE, SPLIT_RANDOM };

static int chunked_run(const uint8_t *in, size_t len, enum split_mode mode, uint8_t *out,
                       size_t *out_len, size_t *total, bool *done)
{
    struct http_chunked c;
    http_chunked_init(&c, 8192);
    *out_len = 0;
    *total = 0;
    *done = false;
    size_t avail_end = 0;
    for (;;) {
        if (avail_end < len) {
            size_t step = mode == SPLIT_ONE ? len : mode == SPLIT_BYTE ? 1 : rng_next(16);
            avail_end = avail_end + step > len ? len : avail_end + step;
        }
        /* Feed only the newly available window, from an exact-size copy (ASan checks bounds). */
        size_t n = avail_end - *total;
        uint8_t *win = malloc(n ? n : 1);
        memcpy(win, in + *total, n);
        size_t used;
        struct slice data;
        int rc = http_chunked_decode(&c, win, n, &used, &data, done);
        if (data.len) {
            if (!(data.ptr >= win && data.ptr + data.len <= win + n))
                rc = -1000; /* slice outside the input */
            else
                memcpy(out + *out_len, data.ptr, data.len);
            *out_len += data.len;
        }
        free(win);
        if (rc < 0)
            return rc;
        if (used > n)
            return -1001;
        *total += used;
        if (*done)
            return 0;
        if (used == 0 && data.len == 0 && avail_end == len)
            return 0; /* needs more input than there is */
    }
}

struct chunk_case {
    const char *raw;
    const char *body; /* expected decoded body (NULL if an error) */
    int rc;
    size_t tail; /* bytes after the message that must not be consumed */
};

static const struct chunk_case chunk_corpus[] = {
    {"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world", 0, 0},
    {"0\r\n\r\n", "", 0, 0},
    {"A\r\n0123456789\r\n0\r\n\r\nGET / HTTP/1.1\r\n", "0123456789", 0, 16},
    {"a;name=val\r\n0123456789\r\n1 ; x ; y=\"q\\\"s\" ;z=t\r\nZ\r\n0\r\n\r\n", "0123456789Z", 0,
     0},
    {"0000003\r\nabc\r\n0;last\r\nTrailer-A: 1\r\nX: y z\r\n\r\n", "abc", 0, 0},
    {"1\r\n\r\r\n1\r\n\n\r\n0\r\n\r\n", "\r\n", 0, 0},
    {"7fffffffffffffff\r\nabc", "abc", 0, 0}, /* max size accepted; data still incomplete */
    {"8000000000000000\r\n", NULL, ERR_INVALID, 0},
    {"10000000000000000\r\n", NULL, ERR_INVALID, 0},
    {"g\r\n", NULL, ERR_INVALID, 0},
    {"\r\n", NULL, ERR_INVALID, 0},
    {" 5\r\nhello\r\n0\r\n\r\n", NULL, ERR_INVALID, 0},
    {"-5\r\nhello\r\n0\r\n\r\n", NULL, ERR_INVALID, 0},
    {"0x5\r\nhello\r\n0\r\n\r\n", NULL, ERR_INVALID, 0},
    {"5\nhello\r\n0\r\n\r\n", NULL, ERR_INVALID, 0},
    {"5\r\nhelloX\r\n0\r\n\r\n", NULL, ERR_INVALID, 0},
    {"5\r\nhello\n0\r\n\r\n", NULL, ERR_INVALID, 0},
    {"5\r\nhello\r0\r\n\r\n", NULL, ERR_INVALID, 0},
    {"5 \r\nhello\r\n0\r\n\r\n", NULL, ERR_INVALID, 0},
    {"5;\r\nhello\r\n0\r\n\r\n", NULL, ERR_INVALID, 0},
    {"5;a=\r\nhello\r\n0\r\n\r\n", NULL, ERR_INVALID, 0},
    {"5;a=\"x\r\nhello\r\n0\r\n\r\n", NULL, ERR_INVALID, 0},
    {"5;a b\r\nhello\r\n0\r\n\r\n", NULL, ERR_INVALID, 0},
    {"5;a=b c\r\nhello\r\n0\r\n\r\n", NULL, ERR_INVALID, 0},
    {"5;a=\"\x01\"\r\nhello\r\n0\r\n\r\n", NULL, ERR_INVALID, 0},
    {"5;(\r\nhello\r\n0\r\n\r\n", NULL, ERR_INVALID, 0},
    {"0\r\nX: a\r\n b\r\n\r\n", NULL, ERR_INVALID, 0},
    {"0\r\n X: a\r\n\r\n", NULL, ERR_INVALID, 0},
    {"0\r\nX : a\r\n\r\n", NULL, ERR_INVALID, 0},
    {"0\r\nX: a\x01\r\n\r\n", NULL, ERR_INVALID, 0},
    {"0\r\nX: a\n\r\n", NULL, ERR_INVALID, 0},
    {"0\r\n\n", NULL, ERR_INVALID, 0},
    {"0\r\n\rX", NULL, ERR_INVALID, 0},
};

TEST(http_chunked_corpus_all_splits)
{
    uint8_t out[256];
    for (size_t i = 0; i < sizeof chunk_corpus / sizeof chunk_corpus[0]; i++) {
        const struct chunk_case *cc = &chunk_corpus[i];
        const uint8_t *in = (const uint8_t *)cc->raw;
        size_t len = strlen(cc->raw);
        for (int mode = SPLIT_ONE; mode <= SPLIT_RANDOM; mode++) {
            int reps = mode == SPLIT_RANDOM ? 50 : 1;
            rng_state = 0x9E3779B97F4A7C15ull + i;
            for (int rep = 0; rep < reps; rep++) {
                size_t out_len, total;
                bool done;
                int rc = chunked_run(in, len, (enum split_mode)mode, out, &out_len, &total, &done);
                if (rc != cc->rc)
                    fprintf(stderr, "chunk case %zu mode %d: rc %d\n", i, mode, rc);
                CHECK_EQ_INT(rc, cc->rc);
                if (cc->body) {
                    CHECK_EQ_INT(out_len, strlen(cc->body));
                    CHECK(out_len == strlen(cc->body) && memcmp(out, cc->body, out_len) == 0);
                    bool complete = strstr(cc->raw, "\r\n0") != NULL || cc->raw[0] == '0';
                    CHECK(done == complete);
                    if (complete)
                        CHECK_EQ_INT(total, len - cc->tail);
                }
            }
        }
    }
}

TEST(http_chunked_large_random_body)
{
    /* Encode 20000 pseudo-random bytes in chunks of varied sizes, then decode under splits. */
    size_t body_len = 20000;
    uint8_t *body = malloc(body_len);
    rng_state = 12345;
    for (size_t i = 0; i < body_len; i++)
        body[i] = (uint8_t)rng_next(256);
    uint8_t *enc = malloc(body_len * 2 + 1024);
    size_t n = 0;
    for (size_t off = 0; off < body_len;) {
        size_t cs = rng_next(3000);
        if (cs > body_len - off)
            cs = body_len - off;
        n += (size_t)sprintf((char *)enc + n, (off & 1) ? "%zx;ext=\"v\"\r\n" : "%zX\r\n", cs);
        memcpy(enc + n, body + off, cs);
        n += cs;
        memcpy(enc + n, "\r\n", 2);
        n += 2;
        off += cs;
    }
    n += (size_t)sprintf((char *)enc + n, "0\r\nChecksum: abc\r\n\r\n");
    uint8_t *out = malloc(body_len);
    for (int mode = SPLIT_ONE; mode <= SPLIT_RANDOM; mode++) {
        size_t out_len, total;
        bool done;
        int rc = chunked_run(enc, n, (enum split_mode)mode, out, &out_len, &total, &done);
        CHECK_EQ_INT(rc, 0);
        CHECK(done);
        CHECK_EQ_INT(total, n);
        CHECK(out_len == body_len && memcmp(out, body, body_len) == 0);
    }
    free(out);
    free(enc);
    free(body);
}

TEST(http_chunked_limits_and_sticky)
{
    struct http_chunked c;
    size_t used;
    struct slice data;
    bool done;
    /* Trailers larger than trailer_max. */
    http_chunked_init(&c, 16);
    const char *t = "0\r\nX-Long: 0123456789abcdef\r\n\r\n";
    CHECK_EQ_INT(http_chunked_decode(&c, (const uint8_t *)t, strlen(t), &used, &data, &done),
                 ERR_HEADERS_TOO_LARGE);
    CHECK_EQ_INT(http_chunked_decode(&c, (const uint8_t *)"\r\n", 2, &used, &data, &done),
                 ERR_HEADERS_TOO_LARGE);
    CHECK_EQ_INT(used, 0);
    /* Chunk line longer than HTTP_CHUNK_LINE_MAX. */
    char *line = malloc(HTTP_CHUNK_LINE_MAX + 16);
    memset(line, '0', HTTP_CHUNK_LINE_MAX + 1);
    http_chunked_init(&c, 8192);
    CHECK_EQ_INT(http_chunked_decode(&c, (const uint8_t *)line, HTTP_CHUNK_LINE_MAX, &used, &data,
                                     &done),
                 0);
    CHECK_EQ_INT(used, HTTP_CHUNK_LINE_MAX);
    CHECK_EQ_INT(http_chunked_decode(&c, (const uint8_t *)line, 1, &used, &data, &done),
                 ERR_INVALID);
    free(line);
    /* Done is sticky and consumes nothing more. */
    http_chunked_init(&c, 8192);
    CHECK_EQ_INT(http_chunked_decode(&c, (const uint8_t *)"0\r\n\r\nxx", 7, &used, &data, &done),
                 0);
    CHECK(done);
    CHECK_EQ_INT(used, 5);
    CHECK_EQ_INT(http_chunked_decode(&c, (const uint8_t *)"xx", 2, &used, &data, &done), 0);
    CHECK(done);
    CHECK_EQ_INT(used, 0);
    CHECK_EQ_INT(data.len, 0);
    /* Empty input: nothing consumed, not done. */
    http_chunked_init(&c, 8192);
    CHECK_EQ_INT(http_chunked_decode(&c, NULL, 0, &used, &data, &done), 0);
    CHECK(!done && used == 0 && data.len == 0);
}

/* Every byte value against the RFC character sets, independently of the parser's table. */
TEST(http_char_classes_exhaustive)
{
    const char *tchar = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
                        "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    const char *target = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                         "-._~:/?@!$&'()*+,;=%";
    for (int c = 0; c < 256; c++) {
        char s[64];
        struct http_request r;
        bool in_tchar = c != 0 && strchr(tchar, c) != NULL;
        bool in_target = c != 0 && strchr(target, c) != NULL;
        bool in_value = c == '\t' || c == ' ' || (c >= 0x21 && c != 0x7f);

        int n = snprintf(s, sizeof s, "GET / HTTP/1.1\r\nX%c: v\r\n\r\n", 'Y');
        s[17] = (char)c; /* the byte after 'X' */
        int rc = parse_n(s, (size_t)n, NULL, &r, NULL);
        bool name_ok = in_tchar || c == ':'; /* "X:: v" is name X, value ": v" */
        if ((rc == 1) != name_ok)
            fprintf(stderr, "name byte 0x%02x: rc %d\n", c, rc);
        CHECK((rc == 1) == name_ok);

        n = snprintf(s, sizeof s, "GET / HTTP/1.1\r\nX: aYb\r\n\r\n");
        s[20] = (char)c;
        rc = parse_n(s, (size_t)n, NULL, &r, NULL);
        if ((rc == 1) != in_value)
            fprintf(stderr, "value byte 0x%02x: rc %d\n", c, rc);
        CHECK((rc == 1) == in_value);

        n = snprintf(s, sizeof s, "GET /aYb HTTP/1.1\r\n\r\n");
        s[6] = (char)c;
        rc = parse_n(s, (size_t)n, NULL, &r, NULL);
        if ((rc == 1) != in_target)
            fprintf(stderr, "target byte 0x%02x: rc %d\n", c, rc);
        CHECK((rc == 1) == in_target);

        n = snprintf(s, sizeof s, "GYT / HTTP/1.1\r\n\r\n");
        s[1] = (char)c;
        rc = parse_n(s, (size_t)n, NULL, &r, NULL);
        CHECK((rc == 1) == in_tchar);
    }
}
