/* bench.h -- `ayder bench`: an HTTP/1.1 load generator with honest (coordinated-omission
 * corrected) latency, plus the two pure pieces it is built from.
 *
 * The module owns three things:
 *   - struct bench_hist: a fixed-size log-linear latency histogram (HdrHistogram-style). The
 *     caller allocates it (it is ~31 KB, so usually on the heap or inside another struct); it
 *     holds no pointers and may be copied with memcpy.
 *   - bench_json_u64()/bench_json_true(): member scanners for the answers it validates (responses
 *     themselves are parsed by http_resp_parse(), shared with the CLI: src/http/http_client.h).
 *   - bench_main(): the command itself (option parsing, setup requests, worker threads on epoll,
 *     live line on stderr, final report on stdout). It owns every socket, thread and buffer it
 *     creates and releases them all before it returns.
 *
 * bench depends only on src/base, the pure http_client and libc/pthreads (epoll, no libuv, no server code).
 */
#ifndef AYDER_BENCH_BENCH_H
#define AYDER_BENCH_BENCH_H

#include "base/buf.h"
#include "http/http_client.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- latency histogram ------------------------------------------------------------------- */

/* Values are nanoseconds. 0..255 ns are exact; above that each power of two [2^e, 2^(e+1)) is
 * split into 128 equal sub-buckets, so a reported value is within 1/128 (< 0.8%) of the true one.
 * Values above BENCH_HIST_MAX_NS (~68.7 s) are clamped to it and counted in `saturated`. */
#define BENCH_HIST_SUB_BITS 7
#define BENCH_HIST_SUB_COUNT (1u << BENCH_HIST_SUB_BITS)
#define BENCH_HIST_MAX_BITS 36
#define BENCH_HIST_MAX_NS ((UINT64_C(1) << BENCH_HIST_MAX_BITS) - 1)
#define BENCH_HIST_BUCKETS (BENCH_HIST_SUB_COUNT * (BENCH_HIST_MAX_BITS - BENCH_HIST_SUB_BITS + 1))

struct bench_hist {
    uint64_t count;
    uint64_t saturated;
    uint64_t min_ns; /* UINT64_MAX when empty */
    uint64_t max_ns;
    double sum_ns;
    uint64_t counts[BENCH_HIST_BUCKETS];
};

void bench_hist_init(struct bench_hist *h); /* also used to reset */
void bench_hist_record(struct bench_hist *h, uint64_t value_ns);
void bench_hist_record_n(struct bench_hist *h, uint64_t value_ns, uint64_t n);
void bench_hist_merge(struct bench_hist *dst, const struct bench_hist *src);
/* The value at percentile pct (0..100]: the highest value equivalent to the bucket holding the
 * ceil(pct% * count)-th smallest sample, clamped to [min, max]. 0 when empty; pct >= 100 -> max. */
uint64_t bench_hist_percentile(const struct bench_hist *h, double pct);
double bench_hist_mean(const struct bench_hist *h);
/* Bucket geometry (exposed for tests): index of a value, and the value range a bucket covers. */
uint32_t bench_hist_index(uint64_t value_ns);
void bench_hist_bucket_range(uint32_t index, uint64_t *lo_ns, uint64_t *hi_ns);

/* ---- JSON member scanners (answers are parsed with http_resp_parse, src/http/http_client.h) */

/* Scan a JSON body for a top-level-looking member "key": <unsigned integer> (last occurrence
 * wins; whitespace around ':' allowed). Returns true and sets *v if found. Meant for bodies whose
 * strings cannot contain the quoted key (ours are base64 or fixed), not for arbitrary JSON. */
bool bench_json_u64(struct slice body, const char *key, uint64_t *v);
/* True if body has the member "key": true. */
bool bench_json_true(struct slice body, const char *key);

/* ---- the command ------------------------------------------------------------------------- */

/* `ayder bench ...` (argv[0] is "bench"). Returns a process exit code: 0 run completed (errors, if
 * any, are in the report), 1 setup or runtime failure, 2 usage error. */
int bench_main(int argc, char **argv);

#endif
