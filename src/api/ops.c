/* ops.c -- the operations area of the API: GET /health, GET /ready, GET /metrics (public), and
 * GET /auth/whoami (any valid token: which scopes it has, so a client such as the console shows
 * only the actions the token may take).
 *
 * /health and /ready answer at once from flags. /metrics renders, on the worker, every family
 * docs/HTTP_API.md lists; /metrics_ha and /ha/status are in cluster.c.
 *
 * What a scrape costs, and why it never stalls writes (measured: bench/metrics-scrape, figures in
 * docs/BENCHMARKS.md):
 *  1. Counters, gauges and histograms are relaxed atomic loads.
 *  2. Per-partition families: one pass over the partitions under the broker's metadata lock
 *     (shared; only topic creation and deletion take it exclusively), formatting two lines each.
 *  3. Per-group lag: the committed offsets are copied under their mutex (held for the copy only;
 *     applying a commit waits at most that long), then lag is computed with no lock held.
 *     Records behind = high watermark - max(committed, log start): the records the group can still
 *     read. Seconds behind (Kinesis MillisBehindLatest, in seconds) = now - timestamp of the next
 *     unread record, 0 when caught up. That timestamp costs one record read; it is remembered per
 *     (topic, group, partition) for the offset it was read at, so a stuck group (the one to alert
 *     on) is read once, and at most LAG_READS_MAX reads happen per scrape. A pair whose offset
 *     moved when the budget is spent reports the timestamp remembered for its older offset (an
 *     over-estimate, never an under-estimate); one never read yet has no seconds sample this
 *     scrape (ayder_group_lag_reads_deferred counts both). The budget bounds a scrape's time.
 *  4. No journal access, no core-thread round trip: the core thread never waits for a scrape.
 *  5. It renders on its own thread (a workq of one, 16 waiting at most, beyond that 503), not on
 *     the HTTP worker, so the worker's other connections (writes among them) are not held up.
 */
#include "api/api_internal.h"

#include "base/alloc.h"
#include "base/arena.h"
#include "base/clock.h"
#include "base/err.h"
#include "base/workq.h"
#include "metrics/metrics.h"

#include <stdio.h>
#include <string.h>

#define LAG_READS_MAX 1000

struct lag_memo {
    uint64_t offset; /* the record whose timestamp is remembered */
    int64_t ts_ms;
    uint64_t gen;    /* the last scrape that saw this committed offset */
};

static void h_health(struct rctx *x, const struct route_match *m)
{
    (void)m;
    char why[256];
    int rc = core_health(x->api->core, why, sizeof why);
    if (rc) {
        api_respond_error(x, rc == ERR_NOSPACE ? ERR_NOSPACE : ERR_STORE_FAILED, why);
        return;
    }
    struct sbuf b;
    sbuf_init(&b, 0);
    sbuf_puts(&b, "{\"ok\":true}");
    api_respond_json(x, 200, &b);
}

static void h_ready(struct rctx *x, const struct route_match *m)
{
    (void)m;
    bool ready = core_ready(x->api->core);
    struct sbuf b;
    sbuf_init(&b, 0);
    sbuf_puts(&b, ready ? "{\"ready\":true}" : "{\"ready\":false}");
    api_respond_json(x, ready ? 200 : 503, &b);
}

static void write_http_stats(struct api *a, struct sbuf *b)
{
    struct http_server *srv = atomic_load(&a->server);
    if (!srv)
        return;
    struct http_server_stats hs;
    http_server_stats(srv, &hs);
    metrics_write_gauge(b, "ayder_http_open_connections", "Open client connections.", (double)hs.connections_open);
    metrics_write_counter(b, "ayder_http_connections_total", "Accepted connections.", hs.connections_total);
    metrics_write_counter(b, "ayder_http_connections_rejected_total", "Connections refused at the connection limit.", hs.connections_rejected);
    metrics_write_counter(b, "ayder_http_received_bytes_total", "Bytes read from clients.", hs.bytes_in);
    metrics_write_counter(b, "ayder_http_sent_bytes_total", "Bytes written to clients.", hs.bytes_out);
    metrics_write_counter(b, "ayder_http_parse_errors_total", "Requests rejected by the HTTP parser or a limit.", hs.parse_errors);
    metrics_write_counter(b, "ayder_http_timeouts_total", "Requests closed by the header/body timeout.", hs.timeouts);
    if (hs.tls) {
        metrics_write_counter(b, "ayder_https_handshakes_total", "Completed client TLS handshakes.", hs.tls_handshakes);
        metrics_write_counter(b, "ayder_https_handshake_failures_total", "Client TLS handshakes that failed (garbage, refused or missing client certificate, protocol errors).", hs.tls_handshake_failures);
        metrics_write_counter(b, "ayder_https_certificate_reloads_total", "Successful certificate reloads (SIGHUP).", hs.tls_reloads);
    }
}

/* --- per-partition and per-group families ------------------------------------------------- */

struct part_out {
    struct sbuf hw, start;
    uint64_t segments;
};

static void part_fn(void *ctx, struct slice topic, uint32_t partition, const struct plog_stats *st)
{
    struct part_out *o = ctx;
    char labels[BROKER_TOPIC_NAME_MAX + 48];
    snprintf(labels, sizeof labels, "topic=\"%.*s\",partition=\"%u\"", (int)topic.len,
             (const char *)topic.ptr, (unsigned)partition);
    metrics_write_sample_u64(&o->hw, "ayder_partition_high_watermark", labels, st->high_watermark);
    metrics_write_sample_u64(&o->start, "ayder_partition_start_offset", labels, st->start_offset);
    o->segments += st->segments;
}

static void write_partitions(struct api *a, struct sbuf *b)
{
    struct part_out o;
    memset(&o, 0, sizeof o);
    sbuf_init(&o.hw, 0);
    sbuf_init(&o.start, 0);
    broker_each_partition(a->broker, part_fn, &o);
    metrics_write_family(b, "ayder_partition_high_watermark", "gauge",
                         "Next offset to be made readable (log-end offset of committed data), by partition.");
    sbuf_append(b, o.hw.data, o.hw.len);
    metrics_write_family(b, "ayder_partition_start_offset", "gauge",
                         "First readable offset (retention floor), by partition.");
    sbuf_append(b, o.start.data, o.start.len);
    if (!sbuf_ok(&o.hw) || !sbuf_ok(&o.start))
        b->oom = true;
    sbuf_free(&o.hw);
    sbuf_free(&o.start);
    metrics_write_gauge(b, "ayder_partition_log_segments", "Partition log segment files, all partitions.",
                        (double)o.segments);
}

struct lag_out {
    struct api *a;
    struct sbuf records, seconds;
    int64_t now_ms;
    uint64_t reads, deferred;
    int err;
};

static void lag_fn(void *ctx, struct slice topic, struct slice group, uint32_t partition,
                   uint64_t committed, uint64_t start, uint64_t hw)
{
    struct lag_out *o = ctx;
    struct api *a = o->a;
    char labels[BROKER_TOPIC_NAME_MAX + BROKER_GROUP_NAME_MAX + 64];
    snprintf(labels, sizeof labels, "topic=\"%.*s\",group=\"%.*s\",partition=\"%u\"",
             (int)topic.len, (const char *)topic.ptr, (int)group.len, (const char *)group.ptr,
             (unsigned)partition);
    uint64_t next = committed > start ? committed : start;
    uint64_t behind = hw > next ? hw - next : 0;
    metrics_write_sample_u64(&o->records, "ayder_group_lag_records", labels, behind);

    uint8_t key[BROKER_TOPIC_NAME_MAX + BROKER_GROUP_NAME_MAX + 8];
    memcpy(key, topic.ptr, topic.len);
    key[topic.len] = 0;
    memcpy(key + topic.len + 1, group.ptr, group.len);
    key[topic.len + 1 + group.len] = 0;
    put_le32(key + topic.len + 2 + group.len, partition);
    struct slice k = slice_of(key, topic.len + group.len + 6);
    struct lag_memo *m = hmap_get(&a->lag_memo, k);
    if (!m) {
        m = xcalloc(1, sizeof *m);
        if (!m || hmap_put(&a->lag_memo, k, m, NULL)) {
            xfree(m);
            o->err = ERR_NOMEM;
            return;
        }
        m->offset = UINT64_MAX; /* nothing read yet */
    }
    m->gen = a->lag_gen;
    if (!behind) {
        metrics_write_sample_u64(&o->seconds, "ayder_group_lag_seconds", labels, 0);
        return;
    }
    if (m->offset != next && o->reads < LAG_READS_MAX) {
        int64_t ts;
        o->reads++;
        if (broker_record_time(a->broker, topic, partition, next, &ts) == 0) {
            m->offset = next;
            m->ts_ms = ts;
        }
    }
    if (m->offset == UINT64_MAX) {
        o->deferred++;
        return;
    }
    if (m->offset != next)
        o->deferred++;
    int64_t ms = o->now_ms > m->ts_ms ? o->now_ms - m->ts_ms : 0;
    metrics_write_sample(&o->seconds, "ayder_group_lag_seconds", labels, (double)ms / 1000.0);
}

static void write_group_lag(struct api *a, struct sbuf *b)
{
    struct lag_out o;
    memset(&o, 0, sizeof o);
    o.a = a;
    o.now_ms = clock_wall_ms();
    sbuf_init(&o.records, 0);
    sbuf_init(&o.seconds, 0);
    pthread_mutex_lock(&a->lag_mu);
    a->lag_gen++;
    int rc = broker_each_committed(a->broker, lag_fn, &o);
    /* forget the offsets that are gone (topic or group deleted) */
    struct sbuf gone;
    sbuf_init(&gone, 0);
    size_t bk = 0;
    struct hmap_node *cur = NULL, *n;
    while ((n = hmap_next(&a->lag_memo, &bk, &cur))) {
        struct lag_memo *m = n->value;
        if (m->gen != a->lag_gen) {
            sbuf_put_le32(&gone, (uint32_t)n->key_len);
            sbuf_append(&gone, n->key, n->key_len);
        }
    }
    for (size_t at = 0; at + 4 <= gone.len && sbuf_ok(&gone);) {
        uint32_t kl = get_le32(gone.data + at);
        xfree(hmap_del(&a->lag_memo, slice_of(gone.data + at + 4, kl)));
        at += 4 + kl;
    }
    sbuf_free(&gone);
    pthread_mutex_unlock(&a->lag_mu);
    metrics_write_family(b, "ayder_group_lag_records", "gauge",
                         "Records a consumer group has yet to read: high watermark - max(committed offset, log start).");
    sbuf_append(b, o.records.data, o.records.len);
    metrics_write_family(b, "ayder_group_lag_seconds", "gauge",
                         "Age of the next record the group has yet to read (now - its timestamp; 0 when caught up), like Kinesis MillisBehindLatest.");
    sbuf_append(b, o.seconds.data, o.seconds.len);
    metrics_write_gauge(b, "ayder_group_lag_reads_deferred",
                        "Group partitions whose lag in seconds this scrape did not read afresh (read budget spent): over-estimated or left out.",
                        (double)o.deferred);
    if (rc || o.err || !sbuf_ok(&o.records) || !sbuf_ok(&o.seconds))
        b->oom = true;
    sbuf_free(&o.records);
    sbuf_free(&o.seconds);
}

void api_metrics_free(struct api *a)
{
    size_t bk = 0;
    struct hmap_node *cur = NULL, *n;
    while ((n = hmap_next(&a->lag_memo, &bk, &cur)))
        xfree(n->value);
    hmap_free(&a->lag_memo);
}

static void write_store_stats(struct api *a, struct sbuf *b)
{
    struct core_stats cs;
    core_stats(a->core, &cs);
    struct core_histograms h;
    core_histograms(a->core, &h);
    metrics_write_family(b, "ayder_journal_fsync_duration_seconds", "histogram",
                         "Duration of one journal group-commit fsync (files and directory).");
    metrics_hist_render(b, "ayder_journal_fsync_duration_seconds", NULL, h.fsync);
    metrics_write_family(b, "ayder_write_duration_seconds", "histogram",
                         "Successful writes, from hand-off to the core until done: sequenced, journaled, fsynced (a majority in a cluster) and applied.");
    metrics_hist_render(b, "ayder_write_duration_seconds", NULL, h.write);
    metrics_write_gauge(b, "ayder_journal_bytes", "Bytes of journal segment files.", (double)cs.journal_bytes);
    metrics_write_gauge(b, "ayder_journal_segments", "Journal segment files.", (double)cs.journal_segments);
    metrics_write_gauge(b, "ayder_storage_failed",
                        "1 in the sticky error state after a failed fsync or write: writes refused (503) until restart.",
                        cs.failed);
    metrics_write_gauge(b, "ayder_storage_no_space",
                        "1 while writes are refused for lack of disk space (507).", cs.no_space);
    if (cs.disk_known)
        metrics_write_gauge(b, "ayder_disk_free_bytes",
                            "Free bytes (for this user) on the data directory's file system.",
                            (double)cs.disk_free_bytes);
    metrics_write_gauge(b, "ayder_disk_min_free_bytes",
                        "Free-space watermark below which writes are refused (--min-free-bytes).",
                        (double)cs.min_free_bytes);
    metrics_write_gauge(b, "ayder_journal_last_index", "Highest journal index written.", (double)cs.last_index);
    metrics_write_gauge(b, "ayder_journal_durable_index", "Highest fsynced journal index.", (double)cs.durable_index);
    metrics_write_gauge(b, "ayder_applied_index", "Highest applied journal index.", (double)cs.applied_index);
    metrics_write_counter(b, "ayder_journal_entries_total", "Journal entries appended since start.", cs.entries);
    metrics_write_counter(b, "ayder_journal_fsyncs_total", "Journal group-commit fsyncs since start.", cs.syncs);
    metrics_write_family(b, "ayder_journal_fsync_seconds_total", "counter", "Time spent in journal group-commit fsyncs since start.");
    metrics_write_sample(b, "ayder_journal_fsync_seconds_total", NULL, (double)cs.sync_ns_total / 1e9);
    metrics_write_counter(b, "ayder_proposals_total", "Write requests handed to the core since start.", cs.proposals);
    metrics_write_counter(b, "ayder_checkpoints_total", "Checkpoints written since start.", cs.checkpoints);
    metrics_write_gauge(b, "ayder_inflight_writes", "Writes accepted but not yet completed.", (double)cs.inflight);
    metrics_write_gauge(b, "ayder_recovery_seconds", "Time the last start-up recovery took.", (double)cs.recovery_ms / 1000.0);
    char why[256];
    metrics_write_gauge(b, "ayder_storage_healthy", "1 when the store accepts writes.",
                        core_health(a->core, why, sizeof why) == 0 ? 1 : 0);
    struct broker_stats bs;
    broker_stats(a->broker, &bs);
    metrics_write_gauge(b, "ayder_topics", "Topics.", (double)bs.topics);
    metrics_write_gauge(b, "ayder_partitions", "Partitions.", (double)bs.partitions);
    metrics_write_gauge(b, "ayder_partition_log_bytes", "Bytes of partition log files.", (double)bs.bytes);
    metrics_write_gauge(b, "ayder_partition_records", "Readable records across partitions.", (double)bs.records);
    metrics_write_gauge(b, "ayder_committed_offsets", "Committed (topic, group, partition) offsets.", (double)bs.offsets);
    metrics_write_gauge(b, "ayder_idempotency_keys", "Idempotency keys remembered.", (double)bs.idem_keys);
    metrics_write_gauge(b, "ayder_long_poll_waiters", "Consumers parked in a long poll.", (double)bs.waiters);
    write_partitions(a, b);
    write_group_lag(a, b);
    struct workq_stats ws;
    workq_stats(a->stream_pool, &ws);
    metrics_write_gauge(b, "ayder_stream_jobs_running", "Stream queries and joins running.", (double)ws.running);
    metrics_write_gauge(b, "ayder_stream_jobs_queued", "Stream queries and joins waiting for a thread.", (double)ws.queued);
    api_subscribe_metrics(a, b);
    struct kv_stats ks;
    kv_stats(a->kv, &ks);
    metrics_write_gauge(b, "ayder_kv_keys", "KV keys.", (double)ks.keys);
    metrics_write_gauge(b, "ayder_kv_bytes", "KV bytes (keys, values, overhead).", (double)ks.bytes);
    metrics_write_family(b, "ayder_kv_operations_total", "counter", "KV operations by result.");
    metrics_write_sample(b, "ayder_kv_operations_total", "op=\"put\",result=\"ok\"", (double)ks.puts_ok);
    metrics_write_sample(b, "ayder_kv_operations_total", "op=\"put\",result=\"cas_mismatch\"", (double)ks.puts_cas_fail);
    metrics_write_sample(b, "ayder_kv_operations_total", "op=\"delete\",result=\"ok\"", (double)ks.deletes_ok);
    metrics_write_sample(b, "ayder_kv_operations_total", "op=\"get\",result=\"hit\"", (double)ks.gets_hit);
    metrics_write_sample(b, "ayder_kv_operations_total", "op=\"get\",result=\"miss\"", (double)ks.gets_miss);
}

/* Renders everything; runs on the metrics thread (any thread is fine: see the header). */
static void render_metrics(struct api *a, struct sbuf *b)
{
    uint64_t t0 = clock_mono_ns();
    metrics_write_gauge(b, "ayder_metrics_scrape_duration_seconds",
                        "How long the previous /metrics took to render.",
                        (double)atomic_load(&a->scrape_ns) / 1e9);
    metrics_render_requests(a->metrics, b);
    write_http_stats(a, b);
    metrics_write_counter(b, "ayder_auth_failures_total", "Requests refused with 401.", atomic_load(&a->unauthorized));
    metrics_write_counter(b, "ayder_auth_forbidden_total", "Requests refused with 403.", atomic_load(&a->forbidden));
    metrics_write_counter(b, "ayder_rate_limited_total", "Requests refused with 429.", atomic_load(&a->rate_limited));
    write_store_stats(a, b);
    atomic_store(&a->scrape_ns, clock_mono_ns() - t0);
}

/* The scrape runs on the metrics thread, not on the HTTP worker that received it: with tens of
 * thousands of series it takes milliseconds, and a worker busy rendering would hold up every
 * write arriving on its other connections. */
struct mjob {
    struct workq_job job;
    struct rctx *x;
    struct sbuf out;
};

static void mjob_done(struct http_req *req, void *arg)
{
    struct mjob *s = arg;
    if (!http_req_responded(req))
        api_respond_text(s->x, &s->out); /* frees out */
    else
        sbuf_free(&s->out);
    http_req_unref(req);
}

static void mjob_fn(struct workq_job *j)
{
    struct mjob *s = (struct mjob *)j;
    if (!http_req_orphaned(s->x->req))
        render_metrics(s->x->api, &s->out);
    http_req_post(s->x->req, mjob_done, s);
}

static void h_metrics(struct rctx *x, const struct route_match *m)
{
    (void)m;
    struct mjob *s = arena_alloc(http_req_arena(x->req), sizeof *s);
    if (!s) {
        api_respond_error(x, ERR_NOMEM, NULL);
        return;
    }
    memset(s, 0, sizeof *s);
    sbuf_init(&s->out, 0);
    s->job.fn = mjob_fn;
    s->x = x;
    http_req_ref(x->req);
    int rc = workq_submit(x->api->metrics_pool, &s->job);
    if (rc) {
        http_req_unref(x->req);
        api_respond_error(x, rc, "Too many scrapes are waiting; retry later");
    }
}

/* {"ok":true,"scopes":["produce","consume","admin","kv"]}: the route checked the token already
 * (SCOPE_ANY: any valid token, rate limit charged once). */
static void h_whoami(struct rctx *x, const struct route_match *m)
{
    (void)m;
    static const struct {
        int bit;
        const char *name;
    } names[] = {{SCOPE_PRODUCE, "produce"}, {SCOPE_CONSUME, "consume"}, {SCOPE_ADMIN, "admin"},
                 {SCOPE_KV, "kv"}};
    int scopes = auth_scopes(x->api->cfg.auth, http_req_head(x->req)->authorization);
    struct sbuf b;
    struct jw w;
    api_json_open_ok(&b, &w);
    jw_key(&w, "scopes");
    jw_arr_open(&w);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (scopes & names[i].bit)
            jw_str(&w, names[i].name);
    jw_arr_close(&w);
    jw_obj_close(&w);
    api_respond_json(x, 200, &b);
}

const struct api_route api_ops_routes[] = {
    {"GET", "/health", "health", SCOPE_NONE, 0, h_health},
    {"GET", "/ready", "ready", SCOPE_NONE, 0, h_ready},
    {"GET", "/metrics", "metrics", SCOPE_NONE, 0, h_metrics},
    {"GET", "/auth/whoami", "whoami", SCOPE_ANY, 0, h_whoami},
    API_ROUTES_END,
};
