/* fuzz_query.c -- libFuzzer target for the query compiler and engine (stream/query.h).
 *
 * Input: a query as JSON text, optionally followed by a blank line and records, one per line
 * ("<timestamp_ms> <value>" or just "<value>"). Checks, for any input:
 *  1. squery_compile returns 0, ERR_UNPROCESSABLE or ERR_QUERY_LIMIT, and an error always comes
 *     with a message (the client is told what is wrong).
 *  2. Feeding fixed records and the input's records never fails except with ERR_QUERY_LIMIT
 *     naming the limit; finish writes valid JSON (checked by our own validating scanner and by
 *     jansson).
 *  3. Nothing leaks or crashes (ASan/UBSan).
 */
#include "base/assert.h"
#include "base/err.h"
#include "stream/fmt/json.h"
#include "stream/query.h"

#include <stdlib.h>
#include <string.h>

static const char *fixed[] = {
    "{\"a\":1,\"b\":\"x\",\"c\":{\"d\":[1,2,{\"e\":null}]},\"t\":1000}",
    "{\"a\":2.5,\"b\":\"y\\u00e9\",\"c\":{\"d\":[]},\"t\":-5}",
    "{\"a\":null,\"b\":[\"x\",\"y\"],\"t\":\"late\"}",
    "{\"a\":\"1\",\"b\":true,\"t\":99999999999}",
    "not json",
    "[1]",
    "{}",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *sep = NULL;
    for (size_t i = 0; i + 1 < size; i++)
        if (data[i] == '\n' && data[i + 1] == '\n') {
            sep = data + i;
            break;
        }
    size_t qlen = sep ? (size_t)(sep - data) : size;
    json_error_t je;
    json_t *req = json_loadb((const char *)data, qlen, JSON_DECODE_ANY, &je);
    if (!req)
        return 0;
    struct squery_limits lim = {0};
    lim.max_groups = 64;
    lim.max_distinct_values = 256;
    lim.max_rows = 64;
    lim.max_response_bytes = 1 << 16;
    lim.max_memory_bytes = 1 << 22;
    lim.max_records_scanned = 1000;
    struct squery *q = NULL;
    struct serr e;
    int rc = squery_compile(req, &lim, &q, &e);
    json_decref(req);
    ASSERT(rc == 0 || rc == ERR_UNPROCESSABLE || rc == ERR_QUERY_LIMIT);
    if (rc) {
        ASSERT(q == NULL && e.msg[0] != 0);
        return 0;
    }
    const struct squery_source *src = squery_source(q);
    ASSERT(src->topic[0] && src->limit > 0);
    uint32_t parts[2] = {0, 1};
    if (size & 1)
        ASSERT(squery_expect_partitions(q, parts, 2) == 0);
    uint64_t off = 0;
    for (size_t i = 0; rc == 0 && i < sizeof fixed / sizeof fixed[0]; i++) {
        struct srec r = {.partition = (uint32_t)(i & 1), .offset = off++,
                         .timestamp_ms = (int64_t)i * 700 - 1000, .value = slice_cstr(fixed[i])};
        rc = squery_feed(q, &r);
    }
    const uint8_t *p = sep ? sep + 2 : data + size, *end = data + size;
    while (rc == 0 && p < end) {
        const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
        const uint8_t *le = nl ? nl : end;
        int64_t ts = (int64_t)off * 100;
        const uint8_t *v = p;
        if (v < le && *v >= '0' && *v <= '9') {
            ts = 0;
            while (v < le && *v >= '0' && *v <= '9' && ts < 1000000000000LL)
                ts = ts * 10 + (*v++ - '0');
            if (v < le && *v == ' ')
                v++;
        }
        uint64_t this_off = off++;
        struct srec r = {.partition = (uint32_t)(this_off & 1), .offset = this_off, .timestamp_ms = ts,
                         .value = slice_of(v, (size_t)(le - v)), .has_key = true,
                         .key = slice_of(v, (size_t)(le - v) > 3 ? 3 : (size_t)(le - v))};
        rc = squery_feed(q, &r);
        p = nl ? nl + 1 : end;
    }
    if (rc) {
        ASSERT(rc == ERR_QUERY_LIMIT && squery_error(q)->path[0] != 0);
        squery_free(q);
        return 0;
    }
    struct sbuf b;
    sbuf_init(&b, 0);
    struct jw w;
    jw_init(&w, &b);
    jw_obj_open(&w);
    rc = squery_finish(q, &w);
    jw_obj_close(&w);
    ASSERT(rc == 0 || rc == ERR_QUERY_LIMIT);
    if (rc == 0) {
        ASSERT(json_scan_validate(b.data, b.len));
        json_t *out = json_loadb((const char *)b.data, b.len, 0, &je);
        /* raw rows may carry integers beyond int64, valid JSON that jansson refuses */
        ASSERT(out != NULL || strstr(je.text, "too big") || strstr(je.text, "overflow"));
        json_decref(out);
    }
    sbuf_free(&b);
    squery_free(q);
    return 0;
}
