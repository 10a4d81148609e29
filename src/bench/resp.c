/* resp.c -- the JSON member scanners `ayder bench` uses to validate answers (the response parser
 * itself is shared with the CLI: src/http/http_client.h).
 */
#include "bench/bench.h"

#include <string.h>

static bool is_digit(uint8_t c) { return c >= '0' && c <= '9'; }

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
