/* test_bench_hist.c -- `ayder bench` pure parts: the latency histogram (bucket geometry,
 * percentiles on known distributions within the stated 1/128 precision, merge) and the HTTP
 * response parser / JSON member scanners the generator validates responses with. */
#include "harness.h"

#include "base/alloc.h"
#include "base/err.h"
#include "bench/bench.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static struct bench_hist *hist_new(void)
{
    struct bench_hist *h = xmalloc(sizeof *h);
    if (h)
        bench_hist_init(h);
    return h;
}

/* |got - want| <= want / 128 (plus the exact region below 256 ns). */
static int within(uint64_t got, uint64_t want)
{
    uint64_t d = got > want ? got - want : want - got;
    return d * 128 <= want;
}

TEST(bench_hist_geometry)
{
    /* Every bucket's range maps back to itself, ranges tile [0, MAX] with no gap or overlap, and
     * each bucket is narrower than 1/128 of its lower bound. */
    uint64_t expect_lo = 0;
    for (uint32_t i = 0; i < BENCH_HIST_BUCKETS; i++) {
        uint64_t lo, hi;
        bench_hist_bucket_range(i, &lo, &hi);
        REQUIRE(lo == expect_lo);
        REQUIRE(hi >= lo);
        REQUIRE(bench_hist_index(lo) == i);
        REQUIRE(bench_hist_index(hi) == i);
        if (lo >= 256)
            REQUIRE((hi - lo + 1) * 128 <= lo);
        else
            REQUIRE(hi == lo);
        expect_lo = hi + 1;
    }
    CHECK(expect_lo == BENCH_HIST_MAX_NS + 1);
    CHECK(bench_hist_index(UINT64_MAX) == BENCH_HIST_BUCKETS - 1);
    /* Index is monotonic across a pseudo-random sample. */
    uint64_t x = 88172645463325252ull, prev_v = 0;
    uint32_t prev_i = 0;
    for (int k = 0; k < 100000; k++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        uint64_t v = prev_v + (x % 1000003);
        if (v > BENCH_HIST_MAX_NS)
            break;
        uint32_t i = bench_hist_index(v);
        CHECK(i >= prev_i);
        uint64_t lo, hi;
        bench_hist_bucket_range(i, &lo, &hi);
        CHECK(lo <= v && v <= hi);
        prev_i = i;
        prev_v = v;
    }
}

TEST(bench_hist_empty)
{
    struct bench_hist *h = hist_new();
    REQUIRE(h);
    CHECK(h->count == 0);
    CHECK(bench_hist_percentile(h, 50) == 0);
    CHECK(bench_hist_percentile(h, 100) == 0);
    CHECK(bench_hist_mean(h) == 0.0);
    xfree(h);
}

TEST(bench_hist_uniform_percentiles)
{
    /* 1..100000 us, one sample each: the p-th percentile is p * 1000 us exactly. */
    struct bench_hist *h = hist_new();
    REQUIRE(h);
    for (uint64_t v = 1; v <= 100000; v++)
        bench_hist_record(h, v * 1000);
    CHECK(h->count == 100000);
    const double pcts[] = {1, 10, 25, 50, 75, 90, 99, 99.9, 99.99, 99.999};
    for (size_t i = 0; i < sizeof pcts / sizeof pcts[0]; i++) {
        uint64_t want = (uint64_t)llround(pcts[i] * 1000.0) * 1000;
        uint64_t got = bench_hist_percentile(h, pcts[i]);
        if (!within(got, want)) {
            char m[128];
            snprintf(m, sizeof m, "p%g: got %llu want %llu", pcts[i], (unsigned long long)got,
                     (unsigned long long)want);
            harness_fail(__FILE__, __LINE__, m);
        }
        /* The histogram reports the highest equivalent value: never below the true one. */
        CHECK(got >= want);
    }
    CHECK(bench_hist_percentile(h, 100) == 100000000);
    CHECK(h->min_ns == 1000 && h->max_ns == 100000000);
    CHECK(fabs(bench_hist_mean(h) - 50000.5 * 1000) < 1e-3);
    xfree(h);
}

TEST(bench_hist_exact_small_values)
{
    /* Below 256 ns the histogram is exact. */
    struct bench_hist *h = hist_new();
    REQUIRE(h);
    for (uint64_t v = 0; v < 200; v++)
        bench_hist_record(h, v);
    CHECK(bench_hist_percentile(h, 50) == 99);
    CHECK(bench_hist_percentile(h, 0.5) == 0);
    CHECK(bench_hist_percentile(h, 100) == 199);
    xfree(h);
}

TEST(bench_hist_bimodal_tail)
{
    /* 99% at 100 us, 1% at 2 s: p50/p90/p99 sit on the fast mode, p99.9 in the tail. This is the
     * shape a server stall gives under open-loop load. */
    struct bench_hist *h = hist_new();
    REQUIRE(h);
    bench_hist_record_n(h, 100000, 99000);
    bench_hist_record_n(h, 2000000000, 1000);
    CHECK(within(bench_hist_percentile(h, 50), 100000));
    CHECK(within(bench_hist_percentile(h, 99), 100000));
    CHECK(within(bench_hist_percentile(h, 99.1), 2000000000));
    CHECK(within(bench_hist_percentile(h, 99.9), 2000000000));
    /* Clamped to the exact max: never reports a value larger than any sample. */
    CHECK(bench_hist_percentile(h, 99.99) == 2000000000);
    CHECK(bench_hist_percentile(h, 100) == 2000000000);
    double mean = (99000.0 * 100000 + 1000.0 * 2e9) / 100000;
    CHECK(fabs(bench_hist_mean(h) - mean) < 1.0);
    xfree(h);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

TEST(bench_hist_precision_random)
{
    /* Log-uniform random values from 1 us to 10 s: every percentile within 1/128 of the exact
     * order statistic computed by sorting. */
    enum { N = 20000 };
    uint64_t *vals = xmalloc(N * sizeof *vals);
    struct bench_hist *h = hist_new();
    REQUIRE(vals && h);
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (int i = 0; i < N; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        double u = (double)(x >> 11) / 9007199254740992.0;
        vals[i] = (uint64_t)(1000.0 * pow(1e7, u));
        bench_hist_record(h, vals[i]);
    }
    qsort(vals, N, sizeof *vals, cmp_u64);
    const double pcts[] = {0.1, 1, 5, 50, 90, 99, 99.9, 99.99};
    for (size_t i = 0; i < sizeof pcts / sizeof pcts[0]; i++) {
        size_t rank = (size_t)ceil(pcts[i] / 100.0 * N - 1e-7);
        uint64_t want = vals[rank - 1];
        CHECK(within(bench_hist_percentile(h, pcts[i]), want));
    }
    CHECK(bench_hist_percentile(h, 100) == vals[N - 1]);
    xfree(vals);
    xfree(h);
}

TEST(bench_hist_merge)
{
    /* Two halves recorded separately and merged == all recorded in one histogram. */
    struct bench_hist *a = hist_new(), *b = hist_new(), *all = hist_new();
    REQUIRE(a && b && all);
    for (uint64_t v = 1; v <= 50000; v++) {
        uint64_t ns = v * 997;
        bench_hist_record(v % 3 ? a : b, ns);
        bench_hist_record(all, ns);
    }
    bench_hist_record(b, BENCH_HIST_MAX_NS + 12345); /* saturated */
    bench_hist_record(all, BENCH_HIST_MAX_NS + 12345);
    bench_hist_merge(a, b);
    CHECK(a->count == all->count);
    CHECK(a->saturated == 1 && all->saturated == 1);
    CHECK(a->min_ns == all->min_ns && a->max_ns == all->max_ns);
    CHECK(a->max_ns == BENCH_HIST_MAX_NS);
    CHECK(memcmp(a->counts, all->counts, sizeof a->counts) == 0);
    CHECK(fabs(a->sum_ns - all->sum_ns) <= 1e-6 * all->sum_ns);
    for (double p = 1; p < 100; p += 7.5)
        CHECK(bench_hist_percentile(a, p) == bench_hist_percentile(all, p));
    /* Merging an empty histogram changes nothing (min stays put). */
    struct bench_hist *empty = hist_new();
    REQUIRE(empty);
    bench_hist_merge(a, empty);
    CHECK(a->min_ns == all->min_ns && a->count == all->count);
    /* Merging into an empty one copies. */
    bench_hist_merge(empty, all);
    CHECK(empty->count == all->count && empty->min_ns == all->min_ns);
    xfree(a);
    xfree(b);
    xfree(all);
    xfree(empty);
}

/* ---- response parser -------------------------------------------------------------------- */

static int parse_str(const char *s, struct sbuf *chunk, struct http_resp *r)
{
    return http_resp_parse((const uint8_t *)s, strlen(s), chunk, r);
}

TEST(http_resp_content_length)
{
    const char *s = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n"
                    "\r\n{\"ok\":true}";
    struct http_resp r;
    size_t n = strlen(s);
    /* Every prefix is incomplete, never an error; the whole is one response. */
    for (size_t k = 0; k < n; k++) {
        int rc = http_resp_parse((const uint8_t *)s, k, NULL, &r);
        if (rc != 0) {
            char m[64];
            snprintf(m, sizeof m, "prefix %zu gave %d", k, rc);
            harness_fail(__FILE__, __LINE__, m);
        }
        if (r.header_len)
            CHECK(r.total_len == n);
    }
    REQUIRE(http_resp_parse((const uint8_t *)s, n, NULL, &r) == 1);
    CHECK(r.status == 200);
    CHECK(r.total_len == n);
    CHECK(!r.close && !r.chunked);
    CHECK(slice_eq_cstr(r.body, "{\"ok\":true}"));
    CHECK(bench_json_true(r.body, "ok"));
}

TEST(http_resp_chunked_and_close)
{
    struct sbuf chunk;
    sbuf_init(&chunk, 0);
    struct http_resp r;
    const char *s = "HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n"
                    "Connection: close\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\nEXTRA";
    REQUIRE(parse_str(s, &chunk, &r) == 1);
    CHECK(r.status == 503);
    CHECK(r.chunked && r.close);
    CHECK(slice_eq_cstr(r.body, "hello world"));
    CHECK(r.total_len == strlen(s) - 5);
    /* Truncated chunked bodies need more. */
    CHECK(http_resp_parse((const uint8_t *)s, strlen(s) - 10, &chunk, &r) == 0);
    CHECK(parse_str("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", NULL, &r) ==
          ERR_UNSUPPORTED);
    CHECK(parse_str("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", &chunk, &r) ==
          ERR_INVALID);
    sbuf_free(&chunk);
}

TEST(http_resp_malformed)
{
    struct http_resp r;
    CHECK(parse_str("HTTX/1.1 200 OK\r\n\r\n", NULL, &r) == ERR_INVALID);
    CHECK(parse_str("HTTP/1.1 2x0 OK\r\n\r\n", NULL, &r) == ERR_INVALID);
    CHECK(parse_str("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", NULL, &r) == ERR_INVALID);
    CHECK(parse_str("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n", NULL,
                    &r) == ERR_INVALID);
    CHECK(parse_str("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", NULL,
                    &r) == ERR_INVALID);
    CHECK(parse_str("HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", NULL, &r) == ERR_INVALID);
    CHECK(parse_str("HTTP/1.1 200 OK\r\nContent-Length: 999999999999\r\n\r\n", NULL, &r) ==
          ERR_TOO_LARGE);
    CHECK(parse_str("HTTP/1.1 200 OK\r\n\r\n", NULL, &r) == ERR_UNSUPPORTED);
    /* No body by definition. */
    REQUIRE(parse_str("HTTP/1.1 204 No Content\r\n\r\n", NULL, &r) == 1);
    CHECK(r.body.len == 0 && r.status == 204);
    /* HTTP/1.0 closes unless told otherwise. */
    REQUIRE(parse_str("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", NULL, &r) == 1);
    CHECK(r.close);
    /* An endless header block hits the limit instead of growing. */
    size_t n = HTTP_RESP_HEADER_MAX + 10;
    char *big = xmalloc(n);
    REQUIRE(big);
    memcpy(big, "HTTP/1.1 200 OK\r\nX: ", 20);
    memset(big + 20, 'a', n - 20);
    CHECK(http_resp_parse((const uint8_t *)big, n, NULL, &r) == ERR_TOO_LARGE);
    xfree(big);
}

TEST(http_resp_json_scan)
{
    struct slice b = SLICE_LIT("{\"messages\":[{\"offset\":7,\"value_b64\":\"Y291bnQ=\"}],"
                               "\"count\" : 1,\"next_offset\":8,\"committed_offset\":0}");
    uint64_t v = 0;
    CHECK(bench_json_u64(b, "count", &v) && v == 1);
    CHECK(bench_json_u64(b, "next_offset", &v) && v == 8);
    CHECK(bench_json_u64(b, "offset", &v) && v == 7);
    CHECK(!bench_json_u64(b, "missing", &v));
    CHECK(!bench_json_u64(SLICE_LIT("{\"count\":\"x\"}"), "count", &v));
    CHECK(bench_json_true(SLICE_LIT("{\"ok\": true}"), "ok"));
    CHECK(!bench_json_true(SLICE_LIT("{\"ok\":false,\"error\":\"x\"}"), "ok"));
    CHECK(!bench_json_true(SLICE_LIT("{\"okay\":true}"), "ok"));
    CHECK(!bench_json_true(SLICE_LIT("\"ok\""), "ok"));
}
