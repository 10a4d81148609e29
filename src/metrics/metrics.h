/* metrics.h -- the metrics registry and Prometheus text exposition (format 0.0.4).
 *
 * Request metrics are fixed-size arrays indexed by route id and status class, updated with relaxed
 * atomics from any worker thread. Other modules' figures (journal, partitions, KV, connections) are
 * read at scrape time by the caller and written with metrics_write_gauge/counter.
 */
#ifndef AYDER_METRICS_METRICS_H
#define AYDER_METRICS_METRICS_H

#include "base/buf.h"

#include <stdint.h>

#define METRICS_ROUTES_MAX 64
#define METRICS_BUCKETS 18

struct metrics;

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

#endif
