/* hist.c -- the log-linear latency histogram used by `ayder bench` (see bench.h).
 *
 * Layout. A value v (ns) falls in bucket
 *     v < 256:        index = v                                  (width 1, exact)
 *     v >= 256:       e = floor(log2 v), s = e - 7,
 *                     index = 128 * s + (v >> s)                  (width 2^s)
 * so every power-of-two range [2^e, 2^(e+1)) for e >= 7 has 128 buckets of equal width. The
 * first 256 indexes are the identity, and consecutive octaves tile the index space without gaps:
 * octave e starts at 128 * (e - 6). Memory is fixed (BENCH_HIST_BUCKETS counters) whatever is
 * recorded, which is what lets every worker thread keep its own and merge at the end.
 *
 * Invariants:
 *   1. count == sum(counts[]) and count == number of recorded samples (including saturated ones).
 *   2. For every bucket, hi - lo + 1 <= max(1, lo / 128): a bucket's values are within 1/128 of
 *      each other, which is the stated precision of every percentile.
 *   3. min_ns <= max_ns whenever count > 0; both are exact (not bucketed).
 *   4. bench_hist_index() is monotonic non-decreasing in v and bench_hist_bucket_range() is its
 *      inverse: lo <= v <= hi for v's bucket.
 */
#include "bench/bench.h"

#include "base/assert.h"

#include <math.h>
#include <string.h>

void bench_hist_init(struct bench_hist *h)
{
    memset(h, 0, sizeof *h);
    h->min_ns = UINT64_MAX;
}

uint32_t bench_hist_index(uint64_t v)
{
    if (v > BENCH_HIST_MAX_NS)
        v = BENCH_HIST_MAX_NS;
    if (v < 2 * BENCH_HIST_SUB_COUNT)
        return (uint32_t)v;
    uint32_t e = 63u - (uint32_t)__builtin_clzll(v);
    uint32_t s = e - BENCH_HIST_SUB_BITS;
    uint64_t idx = (uint64_t)BENCH_HIST_SUB_COUNT * s + (v >> s);
    ASSERT(idx < BENCH_HIST_BUCKETS);
    return (uint32_t)idx;
}

void bench_hist_bucket_range(uint32_t index, uint64_t *lo_ns, uint64_t *hi_ns)
{
    ASSERT(index < BENCH_HIST_BUCKETS);
    if (index < 2 * BENCH_HIST_SUB_COUNT) {
        *lo_ns = *hi_ns = index;
        return;
    }
    uint32_t s = index / BENCH_HIST_SUB_COUNT - 1;
    uint64_t m = (uint64_t)(index % BENCH_HIST_SUB_COUNT) + BENCH_HIST_SUB_COUNT;
    *lo_ns = m << s;
    *hi_ns = *lo_ns + ((UINT64_C(1) << s) - 1);
}

void bench_hist_record_n(struct bench_hist *h, uint64_t v, uint64_t n)
{
    if (n == 0)
        return;
    if (v > BENCH_HIST_MAX_NS) {
        v = BENCH_HIST_MAX_NS;
        h->saturated += n;
    }
    h->counts[bench_hist_index(v)] += n;
    h->count += n;
    h->sum_ns += (double)v * (double)n;
    if (v < h->min_ns)
        h->min_ns = v;
    if (v > h->max_ns)
        h->max_ns = v;
}

void bench_hist_record(struct bench_hist *h, uint64_t v) { bench_hist_record_n(h, v, 1); }

void bench_hist_merge(struct bench_hist *dst, const struct bench_hist *src)
{
    if (src->count == 0)
        return;
    for (uint32_t i = 0; i < BENCH_HIST_BUCKETS; i++)
        dst->counts[i] += src->counts[i];
    dst->count += src->count;
    dst->saturated += src->saturated;
    dst->sum_ns += src->sum_ns;
    if (src->min_ns < dst->min_ns)
        dst->min_ns = src->min_ns;
    if (src->max_ns > dst->max_ns)
        dst->max_ns = src->max_ns;
}

uint64_t bench_hist_percentile(const struct bench_hist *h, double pct)
{
    if (h->count == 0)
        return 0;
    if (pct >= 100.0)
        return h->max_ns;
    if (pct < 0.0)
        pct = 0.0;
    /* The small epsilon keeps e.g. 99.999% of 100000 at rank 99999 despite 99.999 not being
     * exactly representable in binary. */
    double want = ceil(pct / 100.0 * (double)h->count - 1e-7);
    uint64_t rank = want < 1.0 ? 1 : (uint64_t)want;
    if (rank > h->count)
        rank = h->count;
    uint64_t seen = 0;
    for (uint32_t i = 0; i < BENCH_HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t lo, hi;
            bench_hist_bucket_range(i, &lo, &hi);
            if (hi > h->max_ns)
                hi = h->max_ns;
            if (hi < h->min_ns)
                hi = h->min_ns;
            return hi;
        }
    }
    ASSERT(0 && "histogram count does not match its buckets");
    return h->max_ns;
}

double bench_hist_mean(const struct bench_hist *h)
{
    return h->count ? h->sum_ns / (double)h->count : 0.0;
}
