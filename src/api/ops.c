/* ops.c -- the operations area of the API: GET /health, GET /ready, GET /metrics (public).
 *
 * All three answer at once from counters and flags read without locks on the worker; none of
 * them touches the journal. /metrics_ha and /ha/status are in cluster.c.
 */
#include "api/api_internal.h"

#include "base/err.h"
#include "metrics/metrics.h"

#include <string.h>

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
}

static void write_store_stats(struct api *a, struct sbuf *b)
{
    struct core_stats cs;
    core_stats(a->core, &cs);
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

static void h_metrics(struct rctx *x, const struct route_match *m)
{
    (void)m;
    struct api *a = x->api;
    struct sbuf b;
    sbuf_init(&b, 0);
    metrics_render_requests(a->metrics, &b);
    write_http_stats(a, &b);
    metrics_write_counter(&b, "ayder_auth_failures_total", "Requests refused with 401.", atomic_load(&a->unauthorized));
    metrics_write_counter(&b, "ayder_auth_forbidden_total", "Requests refused with 403.", atomic_load(&a->forbidden));
    metrics_write_counter(&b, "ayder_rate_limited_total", "Requests refused with 429.", atomic_load(&a->rate_limited));
    write_store_stats(a, &b);
    api_respond_text(x, &b);
}

const struct api_route api_ops_routes[] = {
    {"GET", "/health", "health", SCOPE_NONE, 0, h_health},
    {"GET", "/ready", "ready", SCOPE_NONE, 0, h_ready},
    {"GET", "/metrics", "metrics", SCOPE_NONE, 0, h_metrics},
    API_ROUTES_END,
};
