/* test_http_client.c -- the client pieces shared by bench and the CLI (src/http/http_client.h):
 * the incremental chunked decoder over every split of its input, the head-only parse and header
 * lookup the CLI's streams and redirects use, and the client URL parser. */
#include "harness.h"

#include "base/err.h"
#include "http/http_client.h"

#include <string.h>

static const char chunked[] = "5\r\nhello\r\n1;ext=1\r\n \r\n6\r\nworld\n\r\n0\r\nX-T: 1\r\n\r\nNEXT";

TEST(http_dechunk_every_split)
{
    size_t n = strlen(chunked);
    for (size_t cut1 = 0; cut1 <= n; cut1++) {
        struct http_dechunk d;
        http_dechunk_init(&d);
        struct sbuf out;
        sbuf_init(&out, 0);
        size_t used = 0;
        int rc = http_dechunk_feed(&d, (const uint8_t *)chunked, cut1, &out, &used);
        size_t total = used;
        if (rc == 0) {
            CHECK(used == cut1);
            rc = http_dechunk_feed(&d, (const uint8_t *)chunked + cut1, n - cut1, &out, &used);
            total += used;
        }
        CHECK(rc == 1);
        CHECK(total == n - 4); /* "NEXT" belongs to the next answer */
        CHECK(out.len == 12 && memcmp(out.data, "hello world\n", 12) == 0);
        sbuf_free(&out);
    }
}

TEST(http_dechunk_malformed)
{
    static const char *const bad[] = {"x\r\n", "5\r\nhelloXY", "\r\n", "5\nhello"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        struct http_dechunk d;
        http_dechunk_init(&d);
        struct sbuf out;
        sbuf_init(&out, 0);
        size_t used;
        CHECK(http_dechunk_feed(&d, (const uint8_t *)bad[i], strlen(bad[i]), &out, &used) < 0);
        sbuf_free(&out);
    }
}

TEST(http_resp_head_and_header)
{
    const char *s = "HTTP/1.1 307 Temporary Redirect\r\nLocation:  http://h:2/x?y=1 \r\n"
                    "Transfer-Encoding: chunked\r\n\r\n5\r\nab";
    struct http_resp r;
    CHECK(http_resp_head((const uint8_t *)s, 20, &r) == 0);
    REQUIRE(http_resp_head((const uint8_t *)s, strlen(s), &r) == 1);
    CHECK(r.status == 307 && r.chunked && r.header_len == strlen(s) - 5);
    struct slice v;
    REQUIRE(http_resp_header((const uint8_t *)s, r.header_len, "location", &v) == 1);
    CHECK(slice_eq_cstr(v, "http://h:2/x?y=1"));
    CHECK(http_resp_header((const uint8_t *)s, r.header_len, "content-length", &v) == 0);
    CHECK(http_resp_head((const uint8_t *)"HTTP/1.1 2x0 OK\r\n\r\n", 19, &r) == ERR_INVALID);
}

TEST(http_url_parse_forms)
{
    struct http_url u;
    REQUIRE(http_url_parse("http://127.0.0.1:1109", &u) == 0);
    CHECK(!strcmp(u.host, "127.0.0.1") && !strcmp(u.port, "1109") && !strcmp(u.prefix, ""));
    CHECK(!strcmp(u.host_hdr, "127.0.0.1:1109"));
    REQUIRE(http_url_parse("node-a/api/", &u) == 0);
    CHECK(!strcmp(u.host, "node-a") && !strcmp(u.port, "80") && !strcmp(u.prefix, "/api"));
    REQUIRE(http_url_parse("http://[::1]:8001", &u) == 0);
    CHECK(!strcmp(u.host, "::1") && !strcmp(u.host_hdr, "[::1]:8001"));
    CHECK(http_url_parse("https://x", &u) == ERR_UNSUPPORTED);
    CHECK(http_url_parse("http://x:0", &u) == ERR_INVALID);
    CHECK(http_url_parse("http://x:99999", &u) == ERR_INVALID);
    CHECK(http_url_parse("http://:80", &u) == ERR_INVALID);
    CHECK(http_url_parse("http://u@x", &u) == ERR_INVALID);
    CHECK(http_url_parse("http://[::1", &u) == ERR_INVALID);
}
