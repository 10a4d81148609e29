/* query_bench.c -- records/s of the query engine's feed loop (stream/query.h) over in-memory
 * 64-byte JSON records: a filter plus a group-by with count and sum, the performance
 * target. No I/O in the timed loop. Usage:
 *   build/query_bench [records] [--dump FILE]   (--dump writes the records as NDJSON, for the
 *                                                sqlite3 comparison in bench/query_vs_sqlite)
 */
#include "stream/query.h"

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
    size_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 2000000;
    const char *dump = argc > 3 && strcmp(argv[2], "--dump") == 0 ? argv[3] : NULL;
    static const char *kinds[] = {"click", "view", "buy", "scroll"};
    char *data = malloc(n * 64);
    size_t *len = malloc(n * sizeof *len);
    unsigned seed = 12345;
    double total_bytes = 0;
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        int l = snprintf(data + i * 64, 64, "{\"id\":%zu,\"user\":\"u%04u\",\"kind\":\"%s\",\"amt\":%u}",
                         i % 10000000, (seed >> 8) % 1000, kinds[(seed >> 20) & 3], (seed >> 4) % 1000);
        /* pad to exactly 64 bytes with spaces inside the object */
        char *r = data + i * 64;
        while (l < 63) {
            memmove(r + 2, r + 1, (size_t)l);
            r[1] = ' ';
            l++;
        }
        len[i] = (size_t)l;
        total_bytes += l;
    }
    if (dump) {
        FILE *f = fopen(dump, "w");
        for (size_t i = 0; i < n; i++) {
            fwrite(data + i * 64, 1, len[i], f);
            fputc('\n', f);
        }
        fclose(f);
    }
    const char *qtext = "{\"source\":{\"topic\":\"b\",\"limit\":100000000},"
                        "\"filter\":[{\"field\":\"kind\",\"op\":\"eq\",\"value\":\"click\"}],"
                        "\"aggregate\":{\"group_by\":[\"user\"],\"measures\":[{\"op\":\"count\"},"
                        "{\"op\":\"sum\",\"field\":\"amt\"}]}}";
    json_error_t je;
    json_t *req = json_loads(qtext, 0, &je);
    struct squery_limits lim = {0};
    lim.max_records_scanned = 100000000;
    for (int rep = 0; rep < 3; rep++) {
        struct squery *q;
        struct serr e;
        if (squery_compile(req, &lim, &q, &e)) {
            fprintf(stderr, "compile: %s %s\n", e.path, e.msg);
            return 1;
        }
        double t0 = now_s();
        for (size_t i = 0; i < n; i++) {
            struct srec r = {.offset = i, .timestamp_ms = (int64_t)i,
                             .value = {(const uint8_t *)data + i * 64, len[i]}};
            if (squery_feed(q, &r)) {
                fprintf(stderr, "feed failed\n");
                return 1;
            }
        }
        struct sbuf b;
        sbuf_init(&b, 0);
        struct jw w;
        jw_init(&w, &b);
        jw_obj_open(&w);
        squery_finish(q, &w);
        jw_obj_close(&w);
        double dt = now_s() - t0;
        printf("run %d: %zu records of %.0f bytes in %.3f s: %.2f M records/s, %.0f MB/s, skipped %s "
               "(result %zu bytes)\n", rep, n, total_bytes / n, dt, n / dt / 1e6,
               total_bytes / dt / 1e6, strstr((char *)b.data, "\"skipped_parse\":0,") ? "0" : "SOME",
               b.len);
        if (rep == 0 && getenv("SHOW"))
            printf("%.*s\n", (int)(b.len > 600 ? 600 : b.len), (char *)b.data);
        sbuf_free(&b);
        squery_free(q);
    }
    json_decref(req);
    free(data);
    free(len);
    return 0;
}
