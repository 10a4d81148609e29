/* avro_decode.c -- single-core throughput of Avro binary decode + extract (issue 13: >= 3 M
 * records/s per core for decode + filter).
 *
 * Build and run (after `make`, from the repository root):
 *   cc -O2 -Isrc bench/avro_decode.c build/libayder.a -ljansson -lm -o build/avro_decode
 *   ./build/avro_decode [seconds]
 *
 * The record is {id:long, user:string, amount:double, country:string}; the run extracts two
 * fields (amount, country) per record, as a filter `amount > x and country == "FR"` would, over a
 * ring of 1024 distinct pre-encoded records (no encoding in the loop). A second figure reads the
 * same bytes through a reader schema that adds a defaulted field and promotes id to double, a
 * third renders the whole record with to_json. One thread; numbers go to stdout.
 */
#include "base/arena.h"
#include "stream/fmt/avro.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *W = "{\"type\":\"record\",\"name\":\"Txn\",\"fields\":["
                       "{\"name\":\"id\",\"type\":\"long\"},{\"name\":\"user\",\"type\":\"string\"},"
                       "{\"name\":\"amount\",\"type\":\"double\"},"
                       "{\"name\":\"country\",\"type\":\"string\"}]}";
static const char *R = "{\"type\":\"record\",\"name\":\"Txn\",\"fields\":["
                       "{\"name\":\"id\",\"type\":\"double\"},{\"name\":\"user\",\"type\":\"string\"},"
                       "{\"name\":\"amount\",\"type\":\"double\"},"
                       "{\"name\":\"region\",\"type\":\"string\",\"default\":\"eu\"},"
                       "{\"name\":\"country\",\"type\":\"string\"}]}";

#define NREC 1024

static uint8_t recs[NREC][64];
static size_t lens[NREC];

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static size_t put_long(uint8_t *p, int64_t v)
{
    uint64_t u = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    size_t n = 0;
    while (u >= 0x80) {
        p[n++] = (uint8_t)(u | 0x80);
        u >>= 7;
    }
    p[n++] = (uint8_t)u;
    return n;
}

static size_t put_str(uint8_t *p, const char *s)
{
    size_t l = strlen(s), n = put_long(p, (int64_t)l);
    memcpy(p + n, s, l);
    return n + l;
}

static void encode_all(void)
{
    static const char *users[] = {"alice", "bob", "carol_the_admin", "dave", "eve"};
    static const char *countries[] = {"FR", "DE", "US", "JP"};
    for (int i = 0; i < NREC; i++) {
        uint8_t *p = recs[i];
        size_t n = put_long(p, 1000000 + i * 7919);
        n += put_str(p + n, users[i % 5]);
        double amount = (i % 1000) * 1.25;
        memcpy(p + n, &amount, 8);
        n += 8;
        n += put_str(p + n, countries[i % 4]);
        lens[i] = n;
    }
}

static void run(const char *label, const struct sfmt *f, double secs, int mode)
{
    struct spath paths[2];
    memset(paths, 0, sizeof paths);
    paths[0].nseg = 1;
    paths[0].seg[0].name = "amount";
    paths[0].seg[0].len = 6;
    paths[1].nseg = 1;
    paths[1].seg[0].name = "country";
    paths[1].seg[0].len = 7;
    struct sval out[2];
    struct arena a;
    arena_init(&a, 1 << 20);
    struct sbuf b;
    sbuf_init(&b, 0);
    uint64_t n = 0, matched = 0;
    double t0 = now_s(), t;
    do {
        for (int k = 0; k < 100000; k++, n++) {
            int i = (int)(n & (NREC - 1));
            const char *why;
            int rc;
            if (mode == 0) {
                rc = f->ops->extract(f, slice_of(recs[i], lens[i]), paths, 2, out, &a, &why);
                if (rc == 0 && out[0].d > 500.0 && out[1].len == 2 && out[1].p[0] == 'F' &&
                    out[1].p[1] == 'R')
                    matched++;
            } else {
                sbuf_reset(&b);
                rc = f->ops->to_json(f, slice_of(recs[i], lens[i]), &b, &a, &why);
                matched += b.len;
            }
            if (rc) {
                fprintf(stderr, "decode failed: %d %s\n", rc, why ? why : "");
                exit(1);
            }
        }
        arena_reset(&a);
        t = now_s();
    } while (t - t0 < secs);
    printf("%-40s %8.2f M records/s  (%llu records in %.2f s, avg %.1f bytes, check %llu)\n",
           label, (double)n / (t - t0) / 1e6, (unsigned long long)n, t - t0,
           (double)(lens[0] + lens[1] + lens[2] + lens[3]) / 4, (unsigned long long)matched);
    sbuf_free(&b);
    arena_free(&a);
}

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 3.0;
    struct avro_schema *w = NULL, *r = NULL;
    struct serr e;
    if (avro_schema_parse(W, strlen(W), &w, &e) || avro_schema_parse(R, strlen(R), &r, &e)) {
        fprintf(stderr, "schema: %s: %s\n", e.path, e.msg);
        return 1;
    }
    encode_all();
    struct sfmt *f1 = NULL, *f2 = NULL;
    if (sfmt_avro_new(w, NULL, &f1, &e) || sfmt_avro_new(w, r, &f2, &e)) {
        fprintf(stderr, "resolve: %s: %s\n", e.path, e.msg);
        return 1;
    }
    run("extract 2 of 4 fields (writer only)", f1, secs, 0);
    run("extract 2 of 4 fields (reader schema)", f2, secs, 0);
    run("to_json whole record", f1, secs, 1);
    sfmt_free(f1);
    sfmt_free(f2);
    avro_schema_free(w);
    avro_schema_free(r);
    return 0;
}
