/* proto_decode_bench.c -- decode + extract throughput of the Protobuf binary format on one core.
 *
 * The record is fx.Small {int64 id = 1; string user = 2; double amount = 3; string country = 4}
 * (~30 bytes); each iteration extracts two fields (id and country) from one of 1024 distinct
 * records, and applies a filter (country == "DE") so the compiler cannot drop the work.
 *
 *   make build/libayder.a && cc -O2 -Isrc -o build/proto_decode_bench \
 *       bench/fmt/proto_decode_bench.c build/libayder.a -ljansson -lprotobuf-c -lm
 *   ./build/proto_decode_bench [seconds]
 */
#include "base/arena.h"
#include "base/buf.h"
#include "stream/fmt/proto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 3.0;
    const char *text = "syntax = \"proto3\"; package fx;\n"
                       "message Small { int64 id = 1; string user = 2; double amount = 3; "
                       "string country = 4; }\n";
    struct proto_schema *s;
    struct serr e;
    if (proto_schema_parse(text, strlen(text), NULL, NULL, &s, &e)) {
        fprintf(stderr, "parse: %s %s\n", e.path, e.msg);
        return 1;
    }
    struct sfmt *f;
    if (sfmt_proto_new(s, proto_message_by_name(s, "fx.Small"), &f, &e))
        return 1;
    enum { NREC = 1024 };
    static uint8_t recs[NREC][64];
    static size_t lens[NREC];
    static const char *countries[] = {"DE", "FR", "US", "JP"};
    size_t total = 0;
    for (int i = 0; i < NREC; i++) {
        struct sbuf b;
        sbuf_init(&b, 0);
        sbuf_put_uvarint(&b, 1 << 3 | 0);
        sbuf_put_uvarint(&b, 1000000000ull + (uint64_t)i * 7919);
        char user[16];
        int ul = snprintf(user, sizeof user, "user%05d", i);
        sbuf_put_uvarint(&b, 2 << 3 | 2);
        sbuf_put_lp(&b, user, (size_t)ul);
        double amount = i * 1.25;
        uint64_t u;
        memcpy(&u, &amount, 8);
        sbuf_put_uvarint(&b, 3 << 3 | 1);
        sbuf_put_le64(&b, u);
        sbuf_put_uvarint(&b, 4 << 3 | 2);
        sbuf_put_lp(&b, countries[i % 4], 2);
        memcpy(recs[i], b.data, b.len);
        lens[i] = b.len;
        total += b.len;
        sbuf_free(&b);
    }
    struct spath paths[2] = {
        {.nseg = 1, .seg = {{.name = "id", .len = 2, .index = -1}}},
        {.nseg = 1, .seg = {{.name = "country", .len = 7, .index = -1}}},
    };
    struct arena a;
    arena_init(&a, 1 << 20);
    struct sval out[2];
    const char *err;
    uint64_t n = 0, hits = 0, errors = 0;
    double t0 = now_s(), t1;
    do {
        for (int k = 0; k < 100000; k++) {
            int i = (int)(n % NREC);
            if (f->ops->extract(f, slice_of(recs[i], lens[i]), paths, 2, out, &a, &err))
                errors++;
            else if (out[1].type == SV_STR && out[1].len == 2 && memcmp(out[1].p, "DE", 2) == 0 &&
                     out[0].type == SV_INT)
                hits++;
            n++;
        }
        arena_reset(&a);
        t1 = now_s();
    } while (t1 - t0 < secs);
    printf("records=%llu errors=%llu hits=%llu avg_record_bytes=%.1f\n", (unsigned long long)n,
           (unsigned long long)errors, (unsigned long long)hits, (double)total / NREC);
    printf("decode+extract(2 fields)+filter: %.2f M records/s on one core (%.1f ns/record)\n",
           n / (t1 - t0) / 1e6, (t1 - t0) * 1e9 / n);
    sfmt_free(f);
    proto_schema_free(s);
    arena_free(&a);
    return 0;
}
