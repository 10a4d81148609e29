/* test_base.c -- base layer: CRC32C, base64, varints, JSON writer, UTF-8, murmur2, arena. */
#include "harness.h"

#include "base/arena.h"
#include "base/b64.h"
#include "base/buf.h"
#include "base/crc32c.h"
#include "base/err.h"
#include "base/hash.h"
#include "base/json.h"

#include <stdlib.h>
#include <string.h>

/* Every path crc32c() can take, so each test checks all of them: the one chosen for this
 * process, the table, and the instruction when the CPU has it. */
typedef uint32_t (*crc_fn)(uint32_t, const void *, size_t);
static size_t crc_paths(crc_fn fns[3])
{
    size_t n = 0;
    fns[n++] = crc32c;
    fns[n++] = crc32c_sw;
    if (crc32c_hw_available())
        fns[n++] = crc32c_hw;
    return n;
}

TEST(crc32c_known_vectors)
{
    crc_fn fns[3];
    size_t nf = crc_paths(fns);
    uint8_t zeros[32] = {0}, ones[32], inc[32], dec[32];
    for (int i = 0; i < 32; i++) {
        ones[i] = 0xff;
        inc[i] = (uint8_t)i;
        dec[i] = (uint8_t)(31 - i);
    }
    /* RFC 3720 B.4 (iSCSI): 32 bytes of zeros, ones, incrementing, decrementing; an iSCSI read. */
    static const uint8_t iscsi_read[48] = {
        0x01, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x18,
        0x28, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
    for (size_t f = 0; f < nf; f++) {
        CHECK(fns[f](0, "123456789", 9) == 0xE3069283u);
        CHECK(fns[f](0, "", 0) == 0);
        CHECK(fns[f](0, zeros, 32) == 0x8A9136AAu);
        CHECK(fns[f](0, ones, 32) == 0x62A8AB43u);
        CHECK(fns[f](0, inc, 32) == 0x46DD794Eu);
        CHECK(fns[f](0, dec, 32) == 0x113FDB5Cu);
        CHECK(fns[f](0, iscsi_read, 48) == 0xD9963A56u);
        /* Incremental == one-shot. */
        CHECK(fns[f](fns[f](0, "12345", 5), "6789", 4) == 0xE3069283u);
    }
}

/* Which path this process took, as the environment asked: AYDER_CRC32C=table forces the
 * table; AYDER_TEST_CRC32C_IMPL (set by tests/arm64/run: "armv8-crc") names the path the CPU must
 * have given, so a tier that means to test the instruction fails if it silently did not. */
TEST(crc32c_dispatch)
{
    const char *force = getenv("AYDER_CRC32C"), *want = getenv("AYDER_TEST_CRC32C_IMPL");
    const char *impl = crc32c_impl();
    printf("    crc32c path: %s (instruction %savailable)\n", impl,
           crc32c_hw_available() ? "" : "not ");
    if (force && strcmp(force, "table") == 0)
        CHECK(strcmp(impl, "table") == 0);
    else
        CHECK((strcmp(impl, "table") == 0) == !crc32c_hw_available());
    if (want && *want)
        CHECK(strcmp(impl, want) == 0);
}

/* Random bytes, every length 0..1100 (every tail length and word count past the 3 x 256 join) at
 * every alignment 0..15, from zero and from a running CRC: all paths agree. */
TEST(crc32c_paths_agree_every_length_and_alignment)
{
    crc_fn fns[3];
    size_t nf = crc_paths(fns);
    enum { LEN_MAX = 1100, ALIGN = 16 };
    static uint8_t buf[LEN_MAX + ALIGN];
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < sizeof buf; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf[i] = (uint8_t)(x >> 24);
    }
    size_t bad = 0;
    for (size_t off = 0; off < ALIGN; off++)
        for (size_t n = 0; n <= LEN_MAX; n++) {
            uint32_t seed = (uint32_t)(n * 2654435761u);
            uint32_t want0 = crc32c_sw(0, buf + off, n), want1 = crc32c_sw(seed, buf + off, n);
            for (size_t f = 0; f < nf; f++)
                bad += fns[f](0, buf + off, n) != want0 || fns[f](seed, buf + off, n) != want1;
        }
    CHECK_EQ_INT(bad, 0);
}

/* The hardware path joins three chains for buffers of 3 x 256 and 3 x 8192 bytes and more:
 * lengths around those thresholds, at odd alignments, with a running CRC. */
TEST(crc32c_hw_3way_matches_sw)
{
    enum { CAP = 3 * 8192 * 2 + 3 * 256 + 64 };
    uint8_t *buf = malloc(CAP);
    REQUIRE(buf);
    uint32_t x = 12345;
    for (size_t i = 0; i < CAP; i++) {
        x = x * 1103515245u + 12345u;
        buf[i] = (uint8_t)(x >> 16);
    }
    static const size_t lens[] = {767, 768, 769, 775, 1000, 3 * 256 * 2 + 5, 24575, 24576,
                                  24577, 24576 + 768, 24576 + 771, 49152, 49152 + 768 + 13,
                                  CAP - 8};
    for (size_t k = 0; k < sizeof lens / sizeof lens[0]; k++)
        for (size_t off = 0; off < 8; off++) {
            CHECK(crc32c(0, buf + off, lens[k]) == crc32c_sw(0, buf + off, lens[k]));
            CHECK(crc32c(0x1234567u, buf + off, lens[k]) == crc32c_sw(0x1234567u, buf + off, lens[k]));
            if (crc32c_hw_available())
                CHECK(crc32c_hw(0x1234567u, buf + off, lens[k]) ==
                      crc32c_sw(0x1234567u, buf + off, lens[k]));
        }
    free(buf);
}

TEST(b64_roundtrip_all_lengths)
{
    uint8_t src[300];
    for (size_t i = 0; i < sizeof src; i++)
        src[i] = (uint8_t)i;
    for (size_t n = 0; n < sizeof src; n++) {
        struct sbuf e, d;
        sbuf_init(&e, 0);
        sbuf_init(&d, 0);
        b64_encode(&e, src, n);
        CHECK(e.len == b64_encoded_len(n));
        CHECK(b64_decode(&d, e.data, e.len) == 0);
        CHECK(d.len == n && (n == 0 || memcmp(d.data, src, n) == 0));
        sbuf_free(&e);
        sbuf_free(&d);
    }
    struct sbuf d;
    sbuf_init(&d, 0);
    CHECK(b64_decode(&d, (const uint8_t *)"aGVsbG8=", 8) == 0);
    CHECK(d.len == 5 && memcmp(d.data, "hello", 5) == 0);
    CHECK(b64_decode(&d, (const uint8_t *)"aGV", 3) == ERR_INVALID);
    CHECK(b64_decode(&d, (const uint8_t *)"a=Vs", 4) == ERR_INVALID);
    sbuf_free(&d);
}

TEST(varint_roundtrip)
{
    int64_t vals[] = {0, 1, -1, 63, -64, 64, 300, -300, INT32_MAX, INT32_MIN, INT64_MAX, INT64_MIN};
    struct sbuf b;
    sbuf_init(&b, 0);
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        sbuf_put_varint(&b, vals[i]);
        sbuf_put_uvarint(&b, (uint64_t)vals[i]);
    }
    struct reader r = reader_of(slice_of(b.data, b.len));
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        int64_t v;
        uint64_t u;
        CHECK(rd_varint(&r, &v) && v == vals[i]);
        CHECK(rd_uvarint(&r, &u) && u == (uint64_t)vals[i]);
    }
    CHECK(rd_left(&r) == 0);
    uint64_t u;
    CHECK(!rd_uvarint(&r, &u) && r.bad);
    /* Overlong varint (11 continuation bytes) is rejected. */
    uint8_t bad[11];
    memset(bad, 0xff, sizeof bad);
    struct reader r2 = reader_of(slice_of(bad, sizeof bad));
    CHECK(!rd_uvarint(&r2, &u));
    sbuf_free(&b);
}

TEST(json_writer_escapes_and_commas)
{
    struct sbuf b;
    sbuf_init(&b, 0);
    struct jw w;
    jw_init(&w, &b);
    jw_obj_open(&w);
    jw_kbool(&w, "ok", true);
    jw_kstr(&w, "s", "a\"b\\c\n\x01");
    jw_key(&w, "arr");
    jw_arr_open(&w);
    jw_u64(&w, 1);
    jw_i64(&w, -2);
    jw_null(&w);
    jw_obj_open(&w);
    jw_obj_close(&w);
    jw_arr_close(&w);
    jw_key(&w, "b");
    jw_b64(&w, (const uint8_t *)"hello", 5);
    jw_obj_close(&w);
    sbuf_putc(&b, 0);
    CHECK(strcmp((char *)b.data,
                 "{\"ok\":true,\"s\":\"a\\\"b\\\\c\\n\\u0001\",\"arr\":[1,-2,null,{}],\"b\":\"aGVsbG8=\"}") == 0);
    sbuf_free(&b);
}

TEST(utf8_validation)
{
    CHECK(utf8_valid((const uint8_t *)"hello", 5));
    CHECK(utf8_valid((const uint8_t *)"\xc3\xa9", 2));
    CHECK(utf8_valid((const uint8_t *)"\xf0\x9f\x98\x80", 4));
    CHECK(!utf8_valid((const uint8_t *)"\xc3", 1));
    CHECK(!utf8_valid((const uint8_t *)"\xc0\x80", 2));       /* overlong */
    CHECK(!utf8_valid((const uint8_t *)"\xed\xa0\x80", 3));   /* surrogate */
    CHECK(!utf8_valid((const uint8_t *)"\xff", 1));
}

/* hash_bytes names nodes on the wire (transport_frame.c) and so must not depend on the host:
 * fixed values, the same on x86-64 and aarch64 (and on a big-endian host: load_le64). */
TEST(hash_bytes_pinned_values)
{
    static const char *in[] = {"", "a", "abcdefgh", "abcdefghi", "0123456789abcdefXYZ"};
    static const uint64_t want[] = {0xb9034ad37056f5fbull, 0x82a2a958a9bece5bull,
                                    0xb8878ce5b552041aull, 0x89ea2d639b1f54bfull,
                                    0xa7974f0ca0f3b179ull};
    for (int i = 0; i < 5; i++)
        CHECK(hash_bytes(in[i], strlen(in[i]), i ? 0x9e3779b97f4a7c15ull : 0) == want[i]);
    /* Any alignment gives the same hash. */
    char buf[40];
    for (int off = 0; off < 8; off++) {
        memcpy(buf + off, in[4], strlen(in[4]));
        CHECK(hash_bytes(buf + off, strlen(in[4]), 0x9e3779b97f4a7c15ull) == want[4]);
    }
}

TEST(murmur2_matches_kafka)
{
    /* Values from Kafka's UtilsTest.testMurmur2 / DefaultPartitioner behaviour. */
    CHECK(murmur2((const uint8_t *)"21", 2) == -973932308);
    CHECK(murmur2((const uint8_t *)"foobar", 6) == -790332482);
    CHECK(murmur2((const uint8_t *)"a-little-bit-long-string", 24) == -985981536);
    CHECK(murmur2((const uint8_t *)"a-little-bit-longer-string", 26) == -1486304829);
    CHECK(murmur2((const uint8_t *)"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", 48) == -58897971);
    CHECK(murmur2((const uint8_t *)"abc", 3) == 479470107);
}

TEST(arena_cap_and_reset)
{
    struct arena a;
    arena_init(&a, 100000);
    void *p = arena_alloc(&a, 50000);
    CHECK(p != NULL);
    CHECK(arena_alloc(&a, 60000) == NULL);
    CHECK(arena_alloc(&a, 100) != NULL);
    arena_reset(&a);
    CHECK(a.used_bytes == 0);
    CHECK(arena_alloc(&a, 90000) != NULL);
    arena_free(&a);
}

TEST(err_table)
{
    CHECK(ERR_INVALID == -1);
    CHECK(err_http_status(ERR_CAS_MISMATCH) == 409);
    CHECK(strcmp(err_code_str(ERR_UNAUTHORIZED), "unauthorized") == 0);
    CHECK(err_http_status(12345) == 500);
    CHECK(err_http_status(ERR_NOSPACE) == 507);
}
