/* fuzz_http_parser.c -- libFuzzer target for the HTTP/1.1 head parser and the chunked decoder.
 *
 * Checks, for any input:
 *  1. http_parse_head returns 1, 0 or a known ERR_*; 0 only while the input is below head_max.
 *  2. On success: head_len <= len and <= head_max, every slice lies inside the head, the framing
 *     fields are consistent (chunked excludes Content-Length), and re-parsing exactly the head
 *     gives the same head_len.
 *  3. A prefix of the input never gives a different error than the whole input (split property).
 *  4. The chunked decoder, run over the bytes after the head (or the whole input when there is no
 *     head), gives identical data, result, done flag and consumed total whether fed in one piece
 *     or in pseudo-random pieces derived from the input; data slices stay inside the input.
 */
#include "base/assert.h"
#include "base/err.h"
#include "http/http_parser.h"

#include <stdlib.h>
#include <string.h>

static bool inside(struct slice s, const uint8_t *base, size_t len)
{
    if (s.len == 0)
        return true;
    return s.ptr >= base && s.ptr + s.len <= base + len;
}

static uint64_t fnv(const uint8_t *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h | 1;
}

static uint64_t xs(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static int parse_copy(const uint8_t *data, size_t n, const struct http_limits *lim,
                      struct http_request *req)
{
    uint8_t *b = malloc(n ? n : 1);
    memcpy(b, data, n);
    int rc = http_parse_head(b, n, lim, req);
    free(b);
    return rc;
}

struct chunk_result {
    int rc;
    bool done;
    size_t consumed;
    size_t out_len;
};

/* max_step 0 = feed everything at once. */
static struct chunk_result run_chunked(const uint8_t *in, size_t len, uint8_t *out,
                                       uint64_t *seed, size_t max_step)
{
    struct http_chunked c;
    http_chunked_init(&c, 64);
    struct chunk_result r = {0, false, 0, 0};
    size_t avail = 0;
    for (int guard = 0; guard < 1 << 20; guard++) {
        if (avail < len) {
            size_t step = max_step ? (size_t)(xs(seed) % max_step) + 1 : len;
            avail = avail + step > len ? len : avail + step;
        }
        size_t n = avail - r.consumed;
        uint8_t *win = malloc(n ? n : 1);
        memcpy(win, in + r.consumed, n);
        size_t used;
        struct slice data;
        r.rc = http_chunked_decode(&c, win, n, &used, &data, &r.done);
        ASSERT(used <= n);
        ASSERT(inside(data, win, n));
        ASSERT(data.len <= used);
        memcpy(out + r.out_len, data.ptr, data.len);
        r.out_len += data.len;
        r.consumed += used;
        free(win);
        if (r.rc < 0) {
            ASSERT(r.rc == ERR_INVALID || r.rc == ERR_HEADERS_TOO_LARGE);
            return r;
        }
        if (r.done || (used == 0 && data.len == 0 && avail == len))
            return r;
    }
    ASSERT(!"chunked decoder made no progress");
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct http_limits lim;
    http_limits_default(&lim);
    lim.request_line_max = 128;
    lim.head_max = 512;
    lim.header_count_max = 8;
    lim.host_required = size > 0 && (data[0] & 1);

    struct http_request req;
    int rc = http_parse_head(data, size, &lim, &req);
    ASSERT(rc == 1 || rc == 0 || rc == ERR_INVALID || rc == ERR_UNSUPPORTED ||
           rc == ERR_URI_TOO_LONG || rc == ERR_HEADERS_TOO_LARGE);
    if (rc == 0)
        ASSERT(size < lim.head_max);
    size_t body_off = 0;
    if (rc == 1) {
        size_t h = req.head_len;
        ASSERT(h <= size && h <= lim.head_max && h >= 4);
        ASSERT(req.method.len > 0 && req.target.len > 0);
        ASSERT(inside(req.method, data, h) && inside(req.target, data, h));
        ASSERT(inside(req.path, data, h) && inside(req.query, data, h));
        ASSERT(req.path.len + req.query.len <= req.target.len);
        ASSERT(req.version_minor == 0 || req.version_minor == 1);
        ASSERT(req.header_count <= lim.header_count_max);
        for (size_t i = 0; i < req.header_count; i++) {
            ASSERT(req.headers[i].name.len > 0);
            ASSERT(inside(req.headers[i].name, data, h));
            ASSERT(inside(req.headers[i].value, data, h));
        }
        ASSERT(inside(req.host, data, h) && inside(req.authorization, data, h));
        ASSERT(inside(req.content_type, data, h) && inside(req.origin, data, h));
        ASSERT(!(req.chunked && req.has_content_length));
        ASSERT(req.content_length <= (uint64_t)INT64_MAX);
        struct http_request again;
        ASSERT(parse_copy(data, h, &lim, &again) == 1 && again.head_len == h);
        ASSERT(again.header_count == req.header_count);
        ASSERT(parse_copy(data, h - 1, &lim, &again) == 0);
        body_off = h;
    }
    /* Split property at two prefixes. */
    uint64_t seed = fnv(data, size);
    for (int t = 0; t < 2 && size > 0; t++) {
        size_t k = (size_t)(xs(&seed) % size);
        struct http_request p;
        int prc = parse_copy(data, k, &lim, &p);
        if (rc == 1 && k >= req.head_len)
            ASSERT(prc == 1 && p.head_len == req.head_len);
        else
            ASSERT(prc == 0 || (rc < 0 && prc == rc));
    }

    /* Chunked decoder over the rest. */
    const uint8_t *in = data + body_off;
    size_t len = size - body_off;
    uint8_t *out1 = malloc(len + 1), *out2 = malloc(len + 1), *out3 = malloc(len + 1);
    struct chunk_result a = run_chunked(in, len, out1, &seed, 0);
    struct chunk_result b = run_chunked(in, len, out2, &seed, 1 + (size_t)(seed % 13));
    struct chunk_result c = run_chunked(in, len, out3, &seed, 1);
    ASSERT(a.rc == b.rc && a.rc == c.rc);
    ASSERT(a.done == b.done && a.done == c.done);
    ASSERT(a.out_len == b.out_len && a.out_len == c.out_len);
    ASSERT(memcmp(out1, out2, a.out_len) == 0 && memcmp(out1, out3, a.out_len) == 0);
    if (a.rc == 0)
        ASSERT(a.consumed == b.consumed && a.consumed == c.consumed);
    free(out1);
    free(out2);
    free(out3);
    return 0;
}
