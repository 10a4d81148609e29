/* test_kafka_codec.c -- the Kafka codec: exact request layouts per version, strictness, and the
 * ApiVersions answer. */
#include "harness.h"

#include "base/arena.h"
#include "base/buf.h"
#include "base/err.h"
#include "broker/recbatch.h"
#include "kafka/codec.h"

#include <string.h>

static void put16(struct sbuf *b, int16_t v) { kw_i16(b, v); }
static void put32(struct sbuf *b, int32_t v) { kw_i32(b, v); }

static void header(struct sbuf *b, int16_t key, int16_t ver, int32_t corr)
{
    put16(b, key);
    put16(b, ver);
    put32(b, corr);
    kw_cstr(b, "client");
}

TEST(kafka_decode_fetch_v11)
{
    struct sbuf b;
    sbuf_init(&b, 0);
    header(&b, KAFKA_FETCH, 11, 42);
    put32(&b, -1);          /* replica */
    put32(&b, 500);         /* max wait */
    put32(&b, 1);           /* min bytes */
    put32(&b, 1 << 20);     /* max bytes */
    kw_i8(&b, 0);           /* isolation */
    put32(&b, 0);           /* session id */
    put32(&b, -1);          /* session epoch */
    put32(&b, 1);
    kw_cstr(&b, "topic");
    put32(&b, 1);
    put32(&b, 3);           /* partition */
    put32(&b, -1);          /* leader epoch */
    kw_i64(&b, 12345);      /* fetch offset */
    kw_i64(&b, -1);         /* log start */
    put32(&b, 65536);
    put32(&b, 0);           /* forgotten */
    kw_cstr(&b, "");        /* rack */
    struct arena a;
    arena_init(&a, 1 << 20);
    struct kafka_request q;
    CHECK(kafka_request_decode(slice_of(b.data, b.len), &a, &q) == 0);
    CHECK(q.h.correlation_id == 42 && slice_eq_cstr(q.h.client_id, "client"));
    CHECK(q.max_wait_ms == 500 && q.min_bytes == 1 && q.max_bytes == 1 << 20);
    CHECK(q.ntopics == 1 && slice_eq_cstr(q.topics[0].name, "topic"));
    CHECK(q.topics[0].nparts == 1 && q.topics[0].parts[0].partition == 3);
    CHECK(q.topics[0].parts[0].offset == 12345 && q.topics[0].parts[0].max_bytes == 65536);
    /* one byte short, one byte extra: both malformed */
    CHECK(kafka_request_decode(slice_of(b.data, b.len - 1), &a, &q) == ERR_INVALID);
    kw_i8(&b, 0);
    CHECK(kafka_request_decode(slice_of(b.data, b.len), &a, &q) == ERR_INVALID);
    /* the same bytes as v12 (flexible): not spoken */
    put16(&b, 0);
    b.data[2] = 0;
    b.data[3] = 12;
    CHECK(kafka_request_decode(slice_of(b.data, b.len), &a, &q) == ERR_UNSUPPORTED);
    CHECK(q.h.api_key == KAFKA_FETCH && q.h.api_version == 12 && q.h.correlation_id == 42);
    arena_free(&a);
    sbuf_free(&b);
}

TEST(kafka_decode_lying_counts)
{
    struct sbuf b;
    sbuf_init(&b, 0);
    header(&b, KAFKA_METADATA, 1, 1);
    put32(&b, 0x7fffffff); /* topics */
    struct arena a;
    arena_init(&a, 1 << 20);
    struct kafka_request q;
    CHECK(kafka_request_decode(slice_of(b.data, b.len), &a, &q) == ERR_INVALID);
    CHECK(a.used_bytes == 0); /* nothing allocated for the lie */
    sbuf_reset(&b);
    header(&b, KAFKA_METADATA, 1, 1);
    put32(&b, -1); /* null = all topics (v1+) */
    CHECK(kafka_request_decode(slice_of(b.data, b.len), &a, &q) == 0 && q.topics_null);
    sbuf_reset(&b);
    header(&b, KAFKA_METADATA, 0, 1);
    put32(&b, -1); /* v0: not nullable */
    CHECK(kafka_request_decode(slice_of(b.data, b.len), &a, &q) == ERR_INVALID);
    arena_free(&a);
    sbuf_free(&b);
}

TEST(kafka_api_versions_answer)
{
    struct sbuf b;
    sbuf_init(&b, 0);
    size_t st = kafka_resp_begin(&b, 9);
    kafka_write_api_versions(&b, 1, 0);
    kafka_resp_end(&b, st);
    CHECK(get_be32(b.data) == b.len - 4);
    CHECK(get_be32(b.data + 4) == 9 && get_be16(b.data + 8) == 0);
    CHECK(get_be32(b.data + 10) == kafka_api_table_len);
    CHECK(b.len == 4 + 4 + 2 + 4 + 6 * kafka_api_table_len + 4);
    const struct kafka_api_range *p = kafka_api_find(KAFKA_PRODUCE);
    CHECK(p && p->min == 3 && p->max == 7);
    CHECK(kafka_api_find(KAFKA_API_VERSIONS)->max == 2); /* v3 is flexible */
    CHECK(kafka_api_find(22) == NULL);
    sbuf_free(&b);
}

TEST(kafka_check_batch_rules)
{
    struct plog_record r[2];
    memset(r, 0, sizeof r);
    r[0].value = SLICE_LIT("a");
    r[1].value = SLICE_LIT("b");
    struct sbuf b;
    sbuf_init(&b, 0);
    REQUIRE(recbatch_encode(&b, 0, r, 2, NULL) == 0);
    uint32_t n = 0;
    CHECK(kafka_check_batch(slice_of(b.data, b.len), &n) == 0 && n == 2);
    b.data[b.len - 1] ^= 1; /* a record byte: CRC mismatch */
    CHECK(kafka_check_batch(slice_of(b.data, b.len), &n) == KERR_CORRUPT_MESSAGE);
    b.data[b.len - 1] ^= 1;
    b.data[RECBATCH_CRC_START + 1] |= 2; /* snappy */
    CHECK(kafka_check_batch(slice_of(b.data, b.len), &n) == KERR_UNSUPPORTED_COMPRESSION_TYPE);
    b.data[RECBATCH_CRC_START + 1] = 0x10; /* transactional */
    CHECK(kafka_check_batch(slice_of(b.data, b.len), &n) == KERR_UNSUPPORTED_FOR_MESSAGE_FORMAT);
    b.data[RECBATCH_CRC_START + 1] = 0;
    b.data[16] = 1; /* magic 1 */
    CHECK(kafka_check_batch(slice_of(b.data, b.len), &n) == KERR_UNSUPPORTED_FOR_MESSAGE_FORMAT);
    b.data[16] = 2;
    size_t one = b.len;
    sbuf_append(&b, b.data, one); /* two batches in one record set */
    CHECK(kafka_check_batch(slice_of(b.data, b.len), &n) == KERR_UNSUPPORTED_FOR_MESSAGE_FORMAT);
    CHECK(kafka_check_batch(slice_of(b.data, 10), &n) == KERR_CORRUPT_MESSAGE);
    sbuf_free(&b);
}
