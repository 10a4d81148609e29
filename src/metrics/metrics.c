/* metrics.c -- see metrics.h.
 * Invariants: 1. bucket counts are cumulative only at render time (stored per bucket);
 * 2. every family gets exactly one HELP and one TYPE line (promtool checks this). */
#include "metrics/metrics.h"

#include "base/alloc.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

static const double bucket_le_s[METRICS_BUCKETS] = {
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05,    0.1,    0.25,    0.5,    1.0,   2.5,    5.0,   10.0, 30.0,
};

struct route_stats {
    _Atomic uint64_t by_class[6]; /* index status/100: 1xx..5xx */
    struct metrics_hist latency;
};

struct metrics {
    const char *const *names;
    int nroutes;
    struct route_stats routes[METRICS_ROUTES_MAX];
};

struct metrics *metrics_new(const char *const *route_names, int nroutes)
{
    struct metrics *m = xcalloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->names = route_names;
    m->nroutes = nroutes > METRICS_ROUTES_MAX ? METRICS_ROUTES_MAX : nroutes;
    return m;
}

void metrics_free(struct metrics *m) { xfree(m); }

void metrics_observe(struct metrics *m, int route_id, int status, uint64_t latency_ns)
{
    if (route_id < 0 || route_id >= m->nroutes)
        return;
    struct route_stats *r = &m->routes[route_id];
    int cls = status / 100;
    if (cls < 1 || cls > 5)
        cls = 5;
    atomic_fetch_add_explicit(&r->by_class[cls], 1, memory_order_relaxed);
    metrics_hist_observe(&r->latency, latency_ns);
}

void metrics_hist_observe(struct metrics_hist *h, uint64_t latency_ns)
{
    double s = (double)latency_ns / 1e9;
    int b = 0;
    while (b < METRICS_BUCKETS && s > bucket_le_s[b])
        b++;
    atomic_fetch_add_explicit(&h->buckets[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_ns, latency_ns, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
}

/* Buckets are loaded one by one while observers keep adding, so _count is taken as the sum of
 * the buckets read (never the separate counter): the +Inf bucket then always equals _count, as
 * the exposition format requires, even in a scrape that races an observation. */
void metrics_hist_render(struct sbuf *out, const char *name, const char *labels,
                         const struct metrics_hist *h)
{
    const char *sep = labels && *labels ? "," : "";
    if (!labels)
        labels = "";
    uint64_t cum = 0;
    for (int b = 0; b < METRICS_BUCKETS; b++) {
        cum += atomic_load_explicit(&h->buckets[b], memory_order_relaxed);
        sbuf_printf(out, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep, bucket_le_s[b],
                    (unsigned long long)cum);
    }
    cum += atomic_load_explicit(&h->buckets[METRICS_BUCKETS], memory_order_relaxed);
    sbuf_printf(out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep,
                (unsigned long long)cum);
    double sum_s = (double)atomic_load_explicit(&h->sum_ns, memory_order_relaxed) / 1e9;
    if (*labels) {
        sbuf_printf(out, "%s_sum{%s} %.9f\n", name, labels, sum_s);
        sbuf_printf(out, "%s_count{%s} %llu\n", name, labels, (unsigned long long)cum);
    } else {
        sbuf_printf(out, "%s_sum %.9f\n", name, sum_s);
        sbuf_printf(out, "%s_count %llu\n", name, (unsigned long long)cum);
    }
}

void metrics_write_family(struct sbuf *out, const char *name, const char *type, const char *help)
{
    sbuf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void metrics_write_sample(struct sbuf *out, const char *name, const char *labels, double v)
{
    if (labels && *labels)
        sbuf_printf(out, "%s{%s} %.17g\n", name, labels, v);
    else
        sbuf_printf(out, "%s %.17g\n", name, v);
}

void metrics_write_sample_u64(struct sbuf *out, const char *name, const char *labels, uint64_t v)
{
    sbuf_puts(out, name);
    if (labels && *labels) {
        sbuf_putc(out, '{');
        sbuf_puts(out, labels);
        sbuf_putc(out, '}');
    }
    sbuf_putc(out, ' ');
    sbuf_put_u64(out, v);
    sbuf_putc(out, '\n');
}

void metrics_write_gauge(struct sbuf *out, const char *name, const char *help, double v)
{
    metrics_write_family(out, name, "gauge", help);
    metrics_write_sample(out, name, NULL, v);
}

void metrics_write_counter(struct sbuf *out, const char *name, const char *help, uint64_t v)
{
    metrics_write_family(out, name, "counter", help);
    sbuf_printf(out, "%s %llu\n", name, (unsigned long long)v);
}

void metrics_render_requests(struct metrics *m, struct sbuf *out)
{
    metrics_write_family(out, "ayder_http_requests_total", "counter",
                         "HTTP requests answered, by route and status class.");
    for (int i = 0; i < m->nroutes; i++) {
        for (int c = 1; c <= 5; c++) {
            uint64_t v = atomic_load_explicit(&m->routes[i].by_class[c], memory_order_relaxed);
            if (v)
                sbuf_printf(out, "ayder_http_requests_total{route=\"%s\",code=\"%dxx\"} %llu\n",
                            m->names[i], c, (unsigned long long)v);
        }
    }
    metrics_write_family(out, "ayder_http_request_duration_seconds", "histogram",
                         "Time from the first byte of a request to its response, by route.");
    for (int i = 0; i < m->nroutes; i++) {
        struct route_stats *r = &m->routes[i];
        if (!atomic_load_explicit(&r->latency.count, memory_order_relaxed))
            continue;
        char labels[96];
        snprintf(labels, sizeof labels, "route=\"%s\"", m->names[i]);
        metrics_hist_render(out, "ayder_http_request_duration_seconds", labels, &r->latency);
    }
}
