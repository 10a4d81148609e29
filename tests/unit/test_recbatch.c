/* test_recbatch.c -- the Kafka RecordBatch v2 codec: exact bytes, round trips, CRC and bounds. */
#include "harness.h"

#include "base/alloc.h"
#include "base/assert.h"
#include "base/buf.h"
#include "base/crc32c.h"
#include "base/err.h"
#include "broker/recbatch.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* Decode the batch in b and compare every record with want[0..n): through recbatch_decode and
 * the decoding iterator, and through recbatch_decode_index and its entries. */
static bool same_records(const uint8_t *b, size_t len, int64_t base, const struct plog_record *want,
                         size_t n)
{
    struct recbatch_ent ents[64];
    for (int indexed = 0; indexed < 2; indexed++) {
        struct recbatch_info h;
        int drc = indexed ? recbatch_decode_index(slice_of(b, len), &h, ents, 64)
                          : recbatch_decode(slice_of(b, len), &h);
        if (drc != 0 || h.base_offset != base || (size_t)h.record_count != n ||
            h.batch_bytes != len)
            return false;
        struct recbatch_iter it;
        struct plog_record r;
        if (indexed)
            recbatch_iter_init_index(&it, slice_of(b, len), &h, ents);
        else
            recbatch_iter_init(&it, slice_of(b, len), &h);
        bool ok = true;
        size_t i = 0;
        int rc;
        while (ok && (rc = recbatch_iter_next(&it, &r)) == 1) {
            const struct plog_record *w = &want[i];
            ok = r.offset == (uint64_t)base + i && r.timestamp_ms == w->timestamp_ms &&
                 r.has_key == w->has_key && (!w->has_key || slice_eq(r.key, w->key)) &&
                 slice_eq(r.value, w->value) && r.header_count == w->header_count;
            for (size_t k = 0; ok && k < r.header_count; k++)
                ok = slice_eq(r.headers[k].key, w->headers[k].key) &&
                     slice_eq(r.headers[k].value, w->headers[k].value);
            i++;
        }
        recbatch_iter_finish(&it);
        if (!(ok && i == n && rc == 0))
            return false;
    }
    return true;
}

TEST(recbatch_exact_bytes)
{
    struct plog_record r = {.timestamp_ms = 1000, .has_key = true, .key = SLICE_LIT("k"),
                            .value = SLICE_LIT("v")};
    struct sbuf b;
    sbuf_init(&b, 0);
    struct recbatch_info h;
    REQUIRE(recbatch_encode(&b, 5, &r, 1, &h) == 0);
    static const uint8_t want[] = {
        0, 0, 0, 0, 0, 0, 0, 5,                    /* baseOffset */
        0, 0, 0, 58,                               /* batchLength */
        0, 0, 0, 0,                                /* partitionLeaderEpoch */
        2,                                         /* magic */
        0, 0, 0, 0,                                /* crc (checked below) */
        0, 0,                                      /* attributes */
        0, 0, 0, 0,                                /* lastOffsetDelta */
        0, 0, 0, 0, 0, 0, 0x03, 0xe8,              /* baseTimestamp */
        0, 0, 0, 0, 0, 0, 0x03, 0xe8,              /* maxTimestamp */
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, /* producerId */
        0xff, 0xff,                                /* producerEpoch */
        0xff, 0xff, 0xff, 0xff,                    /* baseSequence */
        0, 0, 0, 1,                                /* records count */
        0x10, 0x00, 0x00, 0x00, 0x02, 'k', 0x02, 'v', 0x00,
    };
    REQUIRE(b.len == sizeof want);
    CHECK(memcmp(b.data, want, 17) == 0);
    CHECK(memcmp(b.data + 21, want + 21, sizeof want - 21) == 0);
    CHECK(get_be32(b.data + 17) == crc32c(0, b.data + 21, b.len - 21));
    CHECK(h.crc == get_be32(b.data + 17));
    CHECK(h.batch_bytes == 70 && h.record_count == 1 && h.last_offset_delta == 0);
    CHECK(recbatch_encoded_size(&r, 1) == 70);
    sbuf_free(&b);
}

TEST(recbatch_roundtrip_shapes)
{
    uint8_t all[256];
    for (int i = 0; i < 256; i++)
        all[i] = (uint8_t)i;
    size_t big_len = 3u << 20;
    uint8_t *big = malloc(big_len);
    REQUIRE(big);
    for (size_t i = 0; i < big_len; i++)
        big[i] = (uint8_t)(i * 7 + 3);
    struct plog_header hs[20];
    for (int i = 0; i < 20; i++) {
        hs[i].key = slice_of(all + i, (size_t)i + 1);
        hs[i].value = slice_of(all + 100, (size_t)i * 3);
    }
    struct plog_record recs[] = {
        {.timestamp_ms = 1700000000000, .has_key = false, .value = slice_of(all, 256)},
        {.timestamp_ms = 1699999999000, .has_key = true, .key = slice_of(all, 256),
         .value = slice_of(NULL, 0)},
        {.timestamp_ms = 1700000000500, .has_key = true, .key = slice_of(NULL, 0),
         .value = SLICE_LIT("x"), .headers = hs, .header_count = 3},
        {.timestamp_ms = INT64_MAX, .value = slice_of(big, big_len)},
        {.timestamp_ms = INT64_MIN, .value = SLICE_LIT("many headers"), .headers = hs,
         .header_count = 20},
        {.timestamp_ms = 0, .has_key = true, .key = SLICE_LIT("k"), .value = SLICE_LIT("")},
    };
    size_t n = sizeof recs / sizeof recs[0];
    struct sbuf b;
    sbuf_init(&b, 0);
    for (size_t k = 1; k <= n; k++) {
        sbuf_reset(&b);
        struct recbatch_info h;
        REQUIRE(recbatch_encode(&b, 123456789012345, recs, k, &h) == 0);
        CHECK(b.len == recbatch_encoded_size(recs, k));
        CHECK(same_records(b.data, b.len, 123456789012345, recs, k));
        int64_t mx = recs[0].timestamp_ms;
        for (size_t i = 1; i < k; i++)
            mx = recs[i].timestamp_ms > mx ? recs[i].timestamp_ms : mx;
        CHECK(h.max_timestamp == mx && h.base_timestamp == recs[0].timestamp_ms);
    }
    /* A batch followed by other bytes decodes alone. */
    sbuf_reset(&b);
    REQUIRE(recbatch_encode(&b, 0, recs, 3, NULL) == 0);
    size_t first = b.len;
    REQUIRE(recbatch_encode(&b, 3, recs + 3, 1, NULL) == 0);
    struct recbatch_info h;
    CHECK(recbatch_decode(slice_of(b.data, b.len), &h) == 0 && h.batch_bytes == first);
    CHECK(same_records(b.data + first, b.len - first, 3, recs + 3, 1));
    sbuf_free(&b);
    free(big);
}

TEST(recbatch_encode_errors)
{
    struct sbuf b;
    sbuf_init(&b, 0);
    struct plog_record r = {.value = SLICE_LIT("v")};
    CHECK(recbatch_encode(&b, 0, &r, 0, NULL) == ERR_INVALID);
    struct plog_record huge = {.value = slice_of("x", (size_t)RECBATCH_MAX_BYTES)};
    CHECK(recbatch_encode(&b, 0, &huge, 1, NULL) == ERR_TOO_LARGE);
    CHECK(b.len == 0);
    sbuf_free(&b);
}

static void make_batch(struct sbuf *b)
{
    struct plog_header hd = {SLICE_LIT("hk"), SLICE_LIT("hv")};
    struct plog_record recs[5];
    for (int i = 0; i < 5; i++)
        recs[i] = (struct plog_record){.timestamp_ms = 1000 + i * 3, .has_key = i & 1,
                                       .key = SLICE_LIT("key"), .value = SLICE_LIT("value!"),
                                       .headers = &hd, .header_count = (size_t)(i % 2)};
    sbuf_init(b, 0);
    ASSERT(recbatch_encode(b, 40, recs, 5, NULL) == 0);
}

TEST(recbatch_every_flip_detected)
{
    struct sbuf b;
    make_batch(&b);
    struct recbatch_info h;
    REQUIRE(recbatch_decode(slice_of(b.data, b.len), &h) == 0);
    for (size_t i = 0; i < b.len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            b.data[i] ^= (uint8_t)(1u << bit);
            int rc = recbatch_decode(slice_of(b.data, b.len), &h);
            struct recbatch_ent ents[8];
            CHECK(recbatch_decode_index(slice_of(b.data, b.len), &h, ents, 8) == rc);
            /* baseOffset and partitionLeaderEpoch are outside the CRC by design (Kafka). */
            bool covered = !(i < 8 || (i >= 12 && i < 16));
            if (covered)
                CHECK(rc == ERR_CORRUPT || rc == ERR_EOF);
            else if (i < 8 && i == 0 && bit == 7)
                CHECK(rc == ERR_CORRUPT); /* negative base offset */
            else
                CHECK(rc == 0);
            b.data[i] ^= (uint8_t)(1u << bit);
        }
    }
    sbuf_free(&b);
}

TEST(recbatch_truncated_every_length)
{
    struct sbuf b;
    make_batch(&b);
    struct recbatch_info h;
    for (size_t n = 0; n < b.len; n++) {
        /* A fresh copy of exactly n bytes so ASan catches any read past the end. */
        uint8_t *c = malloc(n ? n : 1);
        memcpy(c, b.data, n);
        CHECK(recbatch_decode(slice_of(c, n), &h) == ERR_EOF);
        free(c);
    }
    CHECK(recbatch_decode(slice_of(b.data, b.len), &h) == 0);
    sbuf_free(&b);
}

/* Re-seal a mutated batch with a correct CRC so only the structural checks can catch it. */
static int decode_resealed(uint8_t *p, size_t n)
{
    put_be32(p + 17, crc32c(0, p + RECBATCH_CRC_START, n - RECBATCH_CRC_START));
    struct recbatch_info h;
    struct recbatch_ent ents[64];
    int rc = recbatch_decode(slice_of(p, n), &h);
    ASSERT(recbatch_decode_index(slice_of(p, n), &h, ents, 64) == rc); /* the same verdict */
    return rc;
}

TEST(recbatch_structure_checked_beyond_crc)
{
    struct sbuf b;
    make_batch(&b);
    uint8_t *c = malloc(b.len);
    /* Any single-byte change in the records area, re-sealed, must either be rejected or still
     * decode into records that stay within the batch (no crash, no over-read under ASan). */
    size_t rejected = 0;
    for (size_t i = RECBATCH_HEADER_BYTES; i < b.len; i++) {
        for (int v = 0; v < 256; v += 17) {
            memcpy(c, b.data, b.len);
            c[i] = (uint8_t)v;
            if (decode_resealed(c, b.len) != 0)
                rejected++;
        }
    }
    CHECK(rejected > 0);
    /* Specific lies: more records than present, fewer, lastOffsetDelta too small, bad magic,
     * compression. */
    memcpy(c, b.data, b.len);
    put_be32(c + 57, 6);
    CHECK(decode_resealed(c, b.len) == ERR_CORRUPT);
    memcpy(c, b.data, b.len);
    put_be32(c + 57, 4);
    CHECK(decode_resealed(c, b.len) == ERR_CORRUPT);
    memcpy(c, b.data, b.len);
    put_be32(c + 23, 3);
    CHECK(decode_resealed(c, b.len) == ERR_CORRUPT);
    memcpy(c, b.data, b.len);
    c[16] = 1;
    CHECK(decode_resealed(c, b.len) == ERR_CORRUPT);
    memcpy(c, b.data, b.len);
    put_be16(c + 21, 1);
    CHECK(decode_resealed(c, b.len) == ERR_CORRUPT);
    memcpy(c, b.data, b.len);
    put_be32(c + 8, 0x7fffffff); /* batchLength far beyond the limit */
    CHECK(decode_resealed(c, b.len) == ERR_CORRUPT);
    free(c);
    sbuf_free(&b);
}

TEST(recbatch_iter_nomem_many_headers)
{
    struct plog_header hs[12] = {{SLICE_LIT("a"), SLICE_LIT("b")}};
    for (int i = 1; i < 12; i++)
        hs[i] = hs[0];
    struct plog_record r = {.value = SLICE_LIT("v"), .headers = hs, .header_count = 12};
    struct sbuf b;
    sbuf_init(&b, 0);
    REQUIRE(recbatch_encode(&b, 0, &r, 1, NULL) == 0);
    struct recbatch_info h;
    struct recbatch_ent ents[1];
    /* Validation allocates nothing; iterating a record with more than 8 headers does. */
    alloc_fail_after(1);
    CHECK(recbatch_decode(slice_of(b.data, b.len), &h) == 0);
    CHECK(recbatch_decode_index(slice_of(b.data, b.len), &h, ents, 1) == 0);
    alloc_fail_after(0);
    for (int indexed = 0; indexed < 2; indexed++) {
        struct recbatch_iter it;
        struct plog_record rec;
        if (indexed)
            recbatch_iter_init_index(&it, slice_of(b.data, b.len), &h, ents);
        else
            recbatch_iter_init(&it, slice_of(b.data, b.len), &h);
        alloc_fail_after(1);
        CHECK(recbatch_iter_next(&it, &rec) == ERR_NOMEM);
        alloc_fail_after(0);
        recbatch_iter_finish(&it);
    }
    /* Too many records for the entries: refused before the CRC. */
    CHECK(recbatch_decode_index(slice_of(b.data, b.len), &h, ents, 0) == ERR_TOO_LARGE);
    sbuf_free(&b);
}
