/* metrics.h -- the metrics registry and Prometheus text exposition (format 0.0.4).
 *
 * Request metrics are fixed-size arrays indexed by route id and status class, updated with relaxed
 * atomics from any worker thread. Other modules' figures (journal, partitions, KV, connections) are
 * read at scrape time by the caller and written with metrics_write_gauge/counter.
 *
 * struct metrics_hist is a latency histogram any module can embed (the core keeps its fsync and
 * write-completion histograms in one): observing is three relaxed atomic adds and a short bucket
 * search, so it is cheap enough for the write path; every histogram shares the same bucket bounds
 * (50 us .. 30 s), so dashboards can aggregate them alike.
 *
 * Exposition rules the writers below keep (promtool check metrics verifies them in the tests):
 * one HELP and one TYPE line per family, before its samples; counters end in _total; units are
 * base units (seconds, bytes). Label values are written verbatim: callers pass only names already
 * restricted to [A-Za-z0-9._-] (topics, groups, node ids), which need no escaping.
 */
#ifndef AYDER_METRICS_METRICS_H
#define AYDER_METRICS_METRICS_H

#include "base/buf.h"

#include <stdatomic.h>
#include <stdint.h>

#define METRICS_ROUTES_MAX 64
#define METRICS_BUCKETS 18

struct metrics;

/* A latency histogram (per-bucket counts; cumulative only when rendered). Zero-initialize. */
struct metrics_hist {
    _Atomic uint64_t buckets[METRICS_BUCKETS + 1]; /* the last one is +Inf */
    _Atomic uint64_t sum_ns;
    _Atomic uint64_t count;
};
void metrics_hist_observe(struct metrics_hist *h, uint64_t latency_ns);
/* The _bucket/_sum/_count samples of one series (labels may be NULL); HELP/TYPE are the
 * caller's (metrics_write_family with type "histogram"). */
void metrics_hist_render(struct sbuf *out, const char *name, const char *labels,
                         const struct metrics_hist *h);

/* route_names[i] is the label of route id i (static strings). */
struct metrics *metrics_new(const char *const *route_names, int nroutes);
void metrics_free(struct metrics *m);
void metrics_observe(struct metrics *m, int route_id, int status, uint64_t latency_ns);
/* Append the request metrics (counters by route and status class, latency histograms). */
void metrics_render_requests(struct metrics *m, struct sbuf *out);
void metrics_write_gauge(struct sbuf *out, const char *name, const char *help, double v);
void metrics_write_counter(struct sbuf *out, const char *name, const char *help, uint64_t v);
/* A labelled sample line without HELP/TYPE (the caller writes those once per family). */
void metrics_write_family(struct sbuf *out, const char *name, const char *type, const char *help);
void metrics_write_sample(struct sbuf *out, const char *name, const char *labels, double v);
/* The same for an integer value (exact above 2^53, and faster to format: per-partition and
 * per-group families have tens of thousands of samples). */
void metrics_write_sample_u64(struct sbuf *out, const char *name, const char *labels, uint64_t v);

#endif
