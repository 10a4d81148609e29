/* join_bench.c -- throughput of the join engine alone (no I/O): a windowed inner join of two sides
 * of N JSON records each (~64 bytes: {"uid":K,"ts":T,"item":"xxxxxxxx","n":I}), keys drawn from
 * `keys` distinct values, clocks 1 ms apart, window size_ms. One core, one call over everything.
 * Build and run: make bench-join  (or see the Makefile rule). Prints records/s (both sides). */
#include "base/buf.h"
#include "stream/fmt/json.h"
#include "stream/join.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 1000000;
    unsigned keys = argc > 2 ? (unsigned)strtoul(argv[2], NULL, 10) : 100000;
    int64_t size_ms = argc > 3 ? strtoll(argv[3], NULL, 10) : 50;
    struct sfmt *jf;
    sfmt_json_new(&jf);
    char (*vals)[2][96] = malloc(n * sizeof *vals);
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < n; i++)
        for (int s = 0; s < 2; s++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            snprintf(vals[i][s], sizeof vals[i][s],
                     "{\"uid\":%u,\"ts\":%zu,\"item\":\"sku-%05u\",\"n\":%zu}", (unsigned)(x % keys),
                     1000000 + i, (unsigned)(x % 99991), i);
        }
    struct join_spec sp;
    memset(&sp, 0, sizeof sp);
    sp.type = JOIN_INNER;
    sp.size_ms = size_ms;
    sp.max_rows = 100000000;
    sp.max_response_bytes = 1ull << 40;
    sp.max_state_records = 4 * n;
    sp.max_state_bytes = 0xffffffffu;
    sp.max_pairs = 100000000;
    for (int s = 0; s < 2; s++) {
        sp.side[s].fmt = jf;
        join_field_parse(&sp.side[s].keys[0], "uid", 3);
        sp.side[s].nkeys = 1;
        join_field_parse(&sp.side[s].fields[0], "item", 4);
        sp.side[s].nfields = 1;
    }
    struct join *j;
    if (join_new(&sp, &j)) return 1;
    struct sbuf out;
    sbuf_init(&out, 0);
    double t0 = now_s();
    for (size_t i = 0; i < n; i++)
        for (int s = 0; s < 2; s++) {
            struct srec r = {.offset = i, .timestamp_ms = (int64_t)(1000000 + i),
                             .value = slice_cstr(vals[i][s])};
            if (join_feed(j, s, &r, JOIN_NEW)) { fprintf(stderr, "feed failed\n"); return 1; }
        }
    double t1 = now_s();
    struct join_end ends[2] = {{0, n, true}, {0, n, true}};
    struct join_result res;
    int rc = join_finish(j, ends, &out, &res);
    double t2 = now_s();
    if (rc) { fprintf(stderr, "finish: %d %s\n", rc, res.limit ? res.limit : ""); return 1; }
    printf("records %zu (2 x %zu), keys %u, size_ms %lld: pairs %llu, response %.1f MB\n", 2 * n, n,
           keys, (long long)size_ms, (unsigned long long)res.pairs, out.len / 1e6);
    printf("feed %.3f s, finish %.3f s, total %.3f s: %.2f M records/s (one core)\n", t1 - t0,
           t2 - t1, t2 - t0, 2.0 * n / (t2 - t0) / 1e6);
    sbuf_free(&out);
    join_free(j);
    free(vals);
    return 0;
}
