/* api.c -- HTTP handlers (see api.h and docs/HTTP_API.md).
 *
 * Request life cycle:
 *   api_handle (worker) -> route, auth, validate -> either answer from the state machines
 *   (reads) or build a proposal and hand it to the core (writes). The core calls back on its
 *   own thread (on_core_done); we copy what we need and post to the request's worker, where the
 *   response is written. A request handed to the core holds a reference until the core's final
 *   PROPOSAL_DONE callback has been processed on the worker, so its memory (which holds the
 *   proposal) outlives every use by the core.
 *
 * Invariants:
 *  1. Every request gets exactly one response (http_respond asserts it); late core completions
 *     after a timeout response only release memory.
 *  2. "durable":true is only ever sent for a proposal completed with PROPOSAL_DONE and err == 0
 *     (applied after its fsync).
 *  3. Bad input never reaches the core: names, numbers, JSON and sizes are validated here first
 *     (the core and apply re-validate what they decide on).
 */
#include "api/api.h"

#include "base/alloc.h"
#include "base/b64.h"
#include "base/clock.h"
#include "base/err.h"
#include "base/json.h"
#include "base/log.h"
#include "broker/entry.h"
#include "http/router.h"
#include "http/url.h"
#include "metrics/metrics.h"

#include <jansson.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

enum route_id {
    R_HEALTH, R_READY, R_METRICS, R_METRICS_HA,
    R_PRODUCE, R_PRODUCE_NDJSON, R_CONSUME, R_COMMIT,
    R_TOPICS_CREATE, R_TOPICS_LIST, R_TOPIC_GET, R_TOPIC_DELETE,
    R_GROUP, R_GROUP_TOPIC, R_DELETE_BEFORE, R_RETENTION,
    R_KV_LIST, R_KV_GET, R_KV_PUT, R_KV_PUT2, R_KV_DEL, R_HA_STATUS, R_HA_MEMBERSHIP,
    R_OTHER, /* unmatched, preflight, errors before routing */
    R__COUNT
};

static const char *const route_names[R__COUNT] = {
    "health", "ready", "metrics", "metrics_ha",
    "produce", "produce_ndjson", "consume", "commit",
    "topics_create", "topics_list", "topic_get", "topic_delete",
    "group", "group_topic", "delete_before", "retention",
    "kv_list", "kv_get", "kv_put", "kv_put", "kv_delete", "ha_status", "ha_membership",
    "other",
};

static const struct {
    const char *method, *pattern;
    int id, scope;
} routes[] = {
    {"POST", "/broker/topics/:topic/produce", R_PRODUCE, SCOPE_PRODUCE},
    {"GET", "/broker/consume/:topic/:group/:partition", R_CONSUME, SCOPE_CONSUME},
    {"POST", "/broker/topics/:topic/produce-ndjson", R_PRODUCE_NDJSON, SCOPE_PRODUCE},
    {"POST", "/broker/commit", R_COMMIT, SCOPE_CONSUME},
    {"GET", "/health", R_HEALTH, SCOPE_NONE},
    {"GET", "/ready", R_READY, SCOPE_NONE},
    {"GET", "/metrics", R_METRICS, SCOPE_NONE},
    {"GET", "/metrics_ha", R_METRICS_HA, SCOPE_NONE},
    {"GET", "/ha/status", R_HA_STATUS, SCOPE_NONE},
    {"POST", "/ha/membership", R_HA_MEMBERSHIP, SCOPE_ADMIN},
    {"POST", "/broker/topics", R_TOPICS_CREATE, SCOPE_ADMIN},
    {"GET", "/broker/topics", R_TOPICS_LIST, SCOPE_CONSUME},
    {"GET", "/broker/topics/:topic", R_TOPIC_GET, SCOPE_CONSUME},
    {"DELETE", "/broker/topics/:topic", R_TOPIC_DELETE, SCOPE_ADMIN},
    {"GET", "/broker/groups/:group", R_GROUP, SCOPE_CONSUME},
    {"GET", "/broker/groups/:group/:topic", R_GROUP_TOPIC, SCOPE_CONSUME},
    {"POST", "/broker/delete-before", R_DELETE_BEFORE, SCOPE_ADMIN},
    {"POST", "/broker/retention", R_RETENTION, SCOPE_ADMIN},
    {"GET", "/kv/:ns", R_KV_LIST, SCOPE_KV},
    {"GET", "/kv/:ns/*key", R_KV_GET, SCOPE_KV},
    {"POST", "/kv/:ns/*key", R_KV_PUT, SCOPE_KV},
    {"PUT", "/kv/:ns/*key", R_KV_PUT2, SCOPE_KV},
    {"DELETE", "/kv/:ns/*key", R_KV_DEL, SCOPE_KV},
};

#define NROUTES (sizeof routes / sizeof routes[0])
#define JSON_BODY_MAX (1u << 20)
#define JSON_DEPTH 16

struct api {
    struct api_config cfg;
    struct core *core;
    struct broker *broker;
    struct kv *kv;
    struct router router;
    struct metrics *metrics;
    struct http_server *_Atomic server; /* set after the workers started (api_set_server) */
    _Atomic uint64_t unauthorized, forbidden, rate_limited;
};

/* Per-request context, allocated in the request arena. */
struct rctx {
    struct api *api;
    struct http_req *req;
    int route;
    bool timing;
    bool rocket;
    bool idem;
    uint64_t timeout_ms;
    struct proposal prop;
    /* copied at PROPOSAL_APPENDED on the core thread (read on the worker after the post) */
    _Atomic bool seq_known;
    uint32_t seq_partition;
    uint64_t seq_offset, seq_index;
    uint32_t seq_count;
    int64_t seq_ts;
    /* consume */
    struct slice topic, group;
    uint32_t partition;
    uint64_t offset;
    bool offset_given;
    uint32_t limit;
    bool b64;
    uint64_t wait_ms;
    struct broker_waiter waiter;
    bool waiting;
    /* commit echo */
    uint64_t commit_offset;
    /* membership */
    char member[HA_NAME_MAX];
    int member_op;
    /* consistency=leader reads */
    struct read_barrier rb;
    struct route_match match;
};

/* ------------------------------------------------------------------------------------------ */
/* Responses                                                                                   */

static void respond(struct rctx *x, int status, const char *extra, struct sbuf *body)
{
    uint64_t ns = clock_mono_ns() - http_req_recv_ns(x->req);
    metrics_observe(x->api->metrics, x->route, status, ns);
    http_respond(x->req, status, "application/json", extra, body->data, body->len);
}

static void respond_json(struct rctx *x, int status, struct sbuf *body)
{
    if (!sbuf_ok(body)) {
        sbuf_reset(body);
        sbuf_puts(body, "{\"ok\":false,\"error\":\"out_of_memory\",\"message\":\"Response too large for memory\"}");
        status = 503;
    }
    respond(x, status, NULL, body);
    sbuf_free(body);
}

/* The seed's error shape. msg NULL = the table's message. extra: more members "k":v,... */
static void respond_error_ex(struct rctx *x, int err, const char *msg, const char *extra_json,
                             const char *extra_headers)
{
    char url[HA_HOST_MAX + 16];
    /* The leader may have become unknown since the core said "not leader": no empty Location. */
    if (err == ERR_NOT_LEADER && (!core_leader(x->api->core, url, sizeof url) || !url[0]))
        err = ERR_NO_LEADER;
    struct sbuf b;
    sbuf_init(&b, 0);
    struct jw w;
    jw_init(&w, &b);
    jw_obj_open(&w);
    jw_kbool(&w, "ok", false);
    jw_kstr(&w, "error", err_code_str(err));
    jw_kstr(&w, "message", msg ? msg : err_message(err));
    if (extra_json) {
        sbuf_putc(&b, ',');
        sbuf_puts(&b, extra_json);
    }
    struct sbuf hdr;
    sbuf_init(&hdr, 0);
    if (err == ERR_NOT_LEADER) {
        /* Redirect to the leader: the same path and query on its HTTP address. */
        jw_kstr(&w, "leader_url", url);
        const struct http_request *h = http_req_head(x->req);
        sbuf_puts(&hdr, "Location: ");
        sbuf_puts(&hdr, url);
        sbuf_append(&hdr, h->path.ptr, h->path.len);
        if (h->query.len) {
            sbuf_putc(&hdr, '?');
            sbuf_append(&hdr, h->query.ptr, h->query.len);
        }
        sbuf_puts(&hdr, "\r\n");
    }
    jw_obj_close(&w);
    int status = err_http_status(err);
    if (status == 401)
        sbuf_puts(&hdr, "WWW-Authenticate: Bearer realm=\"ayder\"\r\n");
    if (extra_headers)
        sbuf_puts(&hdr, extra_headers);
    else if (status == 503)
        sbuf_puts(&hdr, "Retry-After: 1\r\n");
    sbuf_putc(&hdr, 0);
    respond(x, status, hdr.len > 1 && sbuf_ok(&hdr) ? (const char *)hdr.data : NULL, &b);
    sbuf_free(&hdr);
    sbuf_free(&b);
}

static void respond_error(struct rctx *x, int err, const char *msg)
{
    respond_error_ex(x, err, msg, NULL, NULL);
}

/* ------------------------------------------------------------------------------------------ */
/* Parameters                                                                                  */

/* Decoded query parameter: 1 present (out set, in arena), 0 absent, <0 error. */
static int qparam(struct rctx *x, const char *name, struct slice *out)
{
    struct slice raw;
    const struct http_request *h = http_req_head(x->req);
    if (!url_query_get(h->query, name, &raw))
        return 0;
    uint8_t *d = arena_alloc(http_req_arena(x->req), raw.len + 1);
    if (!d)
        return ERR_NOMEM;
    size_t n = 0;
    int rc = url_decode(raw, true, d, &n);
    if (rc)
        return rc;
    *out = slice_of(d, n);
    return 1;
}

/* u64 parameter with range; 1 present, 0 absent, or an error already answered (-1). */
static int qparam_u64(struct rctx *x, const char *name, uint64_t min, uint64_t max, uint64_t *out)
{
    struct slice s;
    int rc = qparam(x, name, &s);
    if (rc <= 0) {
        if (rc < 0) {
            respond_error(x, rc, NULL);
            return -1;
        }
        return 0;
    }
    uint64_t v;
    if (url_parse_u64(s, &v) || v < min || v > max) {
        char msg[160];
        snprintf(msg, sizeof msg, "Query parameter '%s' must be an integer in %llu..%llu", name,
                 (unsigned long long)min, (unsigned long long)max);
        respond_error(x, ERR_BAD_PARAM, msg);
        return -1;
    }
    *out = v;
    return 1;
}

static bool check_name(struct rctx *x, struct slice s, size_t max, const char *what)
{
    if (broker_valid_name(s, max))
        return true;
    char msg[200];
    snprintf(msg, sizeof msg, "%s must be 1..%zu characters of [A-Za-z0-9._-] (not '.' or '..')",
             what, max);
    respond_error(x, ERR_BAD_NAME, msg);
    return false;
}

/* Parse a JSON object body with a depth limit. NULL after answering the error. */
static json_t *json_body(struct rctx *x)
{
    struct slice b = http_req_body(x->req);
    if (b.len > JSON_BODY_MAX) {
        respond_error(x, ERR_TOO_LARGE, "JSON request bodies are limited to 1 MiB");
        return NULL;
    }
    /* jansson has no depth option: reject deep nesting before parsing. */
    int depth = 0, max = 0;
    bool in_str = false, esc = false;
    for (size_t i = 0; i < b.len; i++) {
        char ch = (char)b.ptr[i];
        if (in_str) {
            if (esc) esc = false;
            else if (ch == '\\') esc = true;
            else if (ch == '"') in_str = false;
        } else if (ch == '"') {
            in_str = true;
        } else if (ch == '{' || ch == '[') {
            if (++depth > max)
                max = depth;
        } else if (ch == '}' || ch == ']') {
            depth--;
        }
    }
    if (max > JSON_DEPTH) {
        respond_error(x, ERR_INVALID_JSON, "JSON nesting is too deep");
        return NULL;
    }
    json_error_t jerr;
    json_t *j = json_loadb((const char *)b.ptr, b.len, JSON_REJECT_DUPLICATES, &jerr);
    if (!j || !json_is_object(j)) {
        json_decref(j);
        respond_error(x, ERR_INVALID_JSON, "Request body must be a JSON object");
        return NULL;
    }
    return j;
}

static bool json_str(json_t *o, const char *k, struct slice *out)
{
    json_t *v = json_object_get(o, k);
    if (!json_is_string(v))
        return false;
    *out = slice_of(json_string_value(v), json_string_length(v));
    return true;
}

static bool json_u64(json_t *o, const char *k, uint64_t max, uint64_t *out)
{
    json_t *v = json_object_get(o, k);
    if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) > max)
        return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

/* ------------------------------------------------------------------------------------------ */
/* Proposals                                                                                   */

static void prop_release(struct http_req *req, void *arg)
{
    (void)arg;
    struct rctx *x = http_req_user(req);
    sbuf_free(&x->prop.payload);
    http_req_unref(req);
}

static void write_durability(struct jw *w, struct rctx *x, bool durable)
{
    jw_kbool(w, "sealed", !x->rocket || durable);
    jw_kbool(w, "durable", durable);
    jw_kstr(w, "mode", x->rocket ? "rocket" : "sealed");
    jw_kbool(w, "synced", durable);
    jw_kstr(w, "write_concern",
            durable ? ha_write_concern_name((enum write_concern)x->prop.concern_met) : "async");
}

static void write_timing(struct jw *w, struct rctx *x)
{
    if (!x->timing)
        return;
    uint64_t recv = http_req_recv_ns(x->req), disp = http_req_dispatch_ns(x->req);
    uint64_t now = clock_mono_ns();
    struct proposal *p = &x->prop;
    jw_ku64(w, "parse_us", (disp - recv) / 1000);
    jw_ku64(w, "queue_us", p->appended_ns > p->enqueue_ns ? (p->appended_ns - p->enqueue_ns) / 1000 : 0);
    jw_ku64(w, "sync_wait_us", p->durable_ns > p->appended_ns ? (p->durable_ns - p->appended_ns) / 1000 : 0);
    jw_ku64(w, "server_us", (now - recv) / 1000);
}

typedef void (*answer_fn)(struct rctx *x, int phase);

/* Runs on the core thread. */
static void on_core_done(struct proposal *p);

static void post_answer(struct http_req *req, void *arg);

static int submit(struct rctx *x, uint8_t type)
{
    x->prop.type = type;
    x->prop.done = on_core_done;
    x->prop.ctx = x;
    http_req_ref(x->req);
    int rc = core_propose(x->api->core, &x->prop);
    if (rc) {
        http_req_unref(x->req);
        sbuf_free(&x->prop.payload);
        return rc;
    }
    return 0;
}

static void on_core_done(struct proposal *p)
{
    struct rctx *x = p->ctx;
    if (p->phase == PROPOSAL_APPENDED) {
        x->seq_partition = p->res.partition;
        x->seq_offset = p->res.offset;
        x->seq_count = p->res.count;
        x->seq_index = p->index;
        x->seq_ts = p->res.timestamp_ms;
        atomic_store_explicit(&x->seq_known, true, memory_order_release);
        if (x->rocket)
            http_req_post(x->req, post_answer, (void *)(uintptr_t)PROPOSAL_APPENDED);
        return;
    }
    http_req_post(x->req, post_answer, (void *)(uintptr_t)PROPOSAL_DONE);
}

static void answer_produce(struct rctx *x, int phase);
static void answer_simple(struct rctx *x, int phase);

static void post_answer(struct http_req *req, void *arg)
{
    struct rctx *x = http_req_user(req);
    int phase = (int)(uintptr_t)arg;
    if (!http_req_responded(req)) {
        if (x->route == R_PRODUCE || x->route == R_PRODUCE_NDJSON)
            answer_produce(x, phase);
        else
            answer_simple(x, phase);
    }
    if (phase == PROPOSAL_DONE)
        prop_release(req, NULL);
}

/* A sealed write that outlives its timeout_ms: answer honestly that it is not yet durable. */
static void on_write_timeout(struct http_req *req, void *arg)
{
    (void)arg;
    struct rctx *x = http_req_user(req);
    if (http_req_responded(req))
        return;
    struct sbuf b;
    sbuf_init(&b, 0);
    struct jw w;
    jw_init(&w, &b);
    jw_obj_open(&w);
    jw_kbool(&w, "ok", true);
    if (atomic_load_explicit(&x->seq_known, memory_order_acquire)) {
        if (x->route == R_PRODUCE_NDJSON) {
            jw_ku64(&w, "first_offset", x->seq_offset);
            jw_ku64(&w, "count", x->seq_count);
        } else if (x->route == R_PRODUCE) {
            jw_ku64(&w, "offset", x->seq_offset);
        }
        if (x->route == R_PRODUCE || x->route == R_PRODUCE_NDJSON)
            jw_ku64(&w, "partition", x->seq_partition);
        jw_ku64(&w, "batch_id", x->seq_index);
    }
    jw_kbool(&w, "sealed", true);
    jw_kbool(&w, "durable", false);
    jw_kstr(&w, "mode", "sealed");
    jw_kbool(&w, "synced", false);
    jw_kbool(&w, "timeout", true);
    jw_obj_close(&w);
    respond_json(x, 200, &b);
}

static void start_write(struct rctx *x, uint8_t type)
{
    struct slice s;
    int rc = qparam(x, "write_concern", &s);
    if (rc < 0) {
        sbuf_free(&x->prop.payload);
        respond_error(x, rc, NULL);
        return;
    }
    x->prop.concern = WC_DEFAULT;
    if (rc == 1) {
        char v[16];
        enum write_concern wc;
        struct core_ha_status st;
        size_t n = 1;
        if (s.len < sizeof v) {
            memcpy(v, s.ptr, s.len);
            v[s.len] = 0;
            core_ha_status(x->api->core, &st);
            n = st.enabled ? st.n_peers : 1;
        }
        if (s.len >= sizeof v || ha_parse_write_concern(v, n, &wc)) {
            sbuf_free(&x->prop.payload);
            respond_error(x, ERR_BAD_PARAM, "write_concern must be 1, majority, all, async or a "
                          "node count");
            return;
        }
        x->prop.concern = (uint8_t)wc;
        if (wc == WC_ASYNC && (type == ENTRY_PRODUCE) && !x->idem)
            x->rocket = true;
    }
    if (x->prop.concern == WC_DEFAULT && core_default_concern(x->api->core) == WC_ASYNC &&
        type == ENTRY_PRODUCE && !x->idem)
        x->rocket = true;
    if (x->rocket)
        x->prop.concern = WC_ASYNC;
    bool cluster = core_cluster(x->api->core);
    /* In a cluster the core enforces the deadline (a write it cannot commit in time fails with
     * commit_timeout); on a single node a late fsync is answered here as not yet synced. */
    x->prop.timeout_ms = cluster ? x->timeout_ms : 0;
    rc = submit(x, type);
    if (rc) {
        respond_error(x, rc, NULL);
        return;
    }
    if (x->timeout_ms && !x->rocket && !cluster)
        http_req_timer_start(x->req, x->timeout_ms, on_write_timeout, NULL);
}

/* ------------------------------------------------------------------------------------------ */
/* Produce                                                                                     */

static void answer_produce(struct rctx *x, int phase)
{
    struct proposal *p = &x->prop;
    struct sbuf b;
    sbuf_init(&b, 0);
    struct jw w;
    jw_init(&w, &b);
    if (phase == PROPOSAL_DONE && p->err) {
        respond_error(x, p->err, NULL);
        return;
    }
    bool ndjson = x->route == R_PRODUCE_NDJSON;
    jw_obj_open(&w);
    jw_kbool(&w, "ok", true);
    if (phase == PROPOSAL_DONE && p->res.duplicate) {
        jw_ku64(&w, ndjson ? "first_offset" : "offset", p->res.offset);
        if (ndjson)
            jw_ku64(&w, "count", p->res.count);
        jw_ku64(&w, "partition", p->res.partition);
        jw_ku64(&w, "batch_id", p->index);
        jw_kbool(&w, "sealed", true);
        jw_knull(&w, "synced");
        /* the original is committed and applied: what a majority guarantees */
        jw_kstr(&w, "write_concern", "majority");
        jw_kbool(&w, "duplicate", true);
        jw_obj_close(&w);
        respond_json(x, 200, &b);
        return;
    }
    bool durable = phase == PROPOSAL_DONE;
    uint64_t off = durable ? p->res.offset : x->seq_offset;
    uint32_t part = durable ? p->res.partition : x->seq_partition;
    uint32_t count = durable ? p->res.count : x->seq_count;
    uint64_t index = durable ? p->index : x->seq_index;
    int64_t ts = durable ? p->res.timestamp_ms : x->seq_ts;
    if (ndjson) {
        jw_ku64(&w, "first_offset", off);
        jw_ku64(&w, "count", count);
    } else {
        jw_ku64(&w, "offset", off);
    }
    jw_ku64(&w, "partition", part);
    jw_ku64(&w, "batch_id", index);
    write_durability(&w, x, durable);
    jw_ki64(&w, "timestamp_ms", ts);
    write_timing(&w, x);
    jw_obj_close(&w);
    respond_json(x, 200, &b);
}

/* Record headers from "X-Ayder-Header-<name>: value" request headers. */
static size_t collect_headers(struct rctx *x, struct plog_header *hdrs, size_t max)
{
    const struct http_request *h = http_req_head(x->req);
    static const char prefix[] = "x-ayder-header-";
    size_t n = 0;
    for (size_t i = 0; i < h->header_count && n < max; i++) {
        struct slice name = h->headers[i].name;
        if (name.len <= sizeof prefix - 1 ||
            !slice_eq_nocase(slice_of(name.ptr, sizeof prefix - 1), prefix))
            continue;
        size_t kl = name.len - (sizeof prefix - 1);
        uint8_t *k = arena_alloc(http_req_arena(x->req), kl);
        if (!k)
            break;
        for (size_t j = 0; j < kl; j++) {
            uint8_t ch = name.ptr[sizeof prefix - 1 + j];
            k[j] = (ch >= 'A' && ch <= 'Z') ? (uint8_t)(ch + 32) : ch;
        }
        hdrs[n].key = slice_of(k, kl);
        hdrs[n].value = h->headers[i].value;
        n++;
    }
    return n;
}

/* Common produce parameters. Returns false after answering an error. */
static bool produce_params(struct rctx *x, struct slice *topic, struct slice *key, bool *has_key,
                           struct slice *idem)
{
    if (!check_name(x, *topic, BROKER_TOPIC_NAME_MAX, "Topic name"))
        return false;
    uint64_t v;
    int rc = qparam_u64(x, "partition", 0, BROKER_PARTITIONS_MAX - 1, &v);
    if (rc < 0)
        return false;
    x->prop.partition = rc ? (int32_t)v : -1;
    rc = qparam(x, "key", key);
    if (rc < 0) {
        respond_error(x, rc, NULL);
        return false;
    }
    *has_key = rc == 1;
    if (!*has_key)
        *key = (struct slice){NULL, 0};
    if (*has_key && key->len > ENTRY_KEY_MAX) {
        respond_error(x, ERR_TOO_LARGE, "Message keys are limited to 16 KiB");
        return false;
    }
    rc = qparam(x, "idempotency_key", idem);
    if (rc < 0) {
        respond_error(x, rc, NULL);
        return false;
    }
    if (rc == 0)
        *idem = (struct slice){NULL, 0};
    else if (idem->len == 0 || idem->len > ENTRY_IDEM_MAX) {
        respond_error(x, ERR_BAD_PARAM, "idempotency_key must be 1..512 bytes");
        return false;
    }
    rc = qparam_u64(x, "timeout_ms", 0, 600000, &x->timeout_ms);
    if (rc < 0)
        return false;
    struct slice s;
    rc = qparam(x, "mode", &s);
    if (rc == 1) {
        if (slice_eq_cstr(s, "rocket"))
            x->rocket = true;
        else if (!slice_eq_cstr(s, "sealed")) {
            respond_error(x, ERR_BAD_PARAM, "mode must be 'sealed' or 'rocket'");
            return false;
        }
    }
    rc = qparam(x, "timing", &s);
    x->timing = rc == 1 && (slice_eq_cstr(s, "1") || slice_eq_cstr(s, "true"));
    if (idem->len) {
        x->rocket = false; /* an idempotent produce is answered after its outcome is known */
        x->idem = true;
    }
    return true;
}

static void h_produce(struct rctx *x, const struct route_match *m)
{
    struct api *a = x->api;
    struct slice topic = route_param(m, "topic"), key, idem;
    bool has_key;
    if (!produce_params(x, &topic, &key, &has_key, &idem))
        return;
    struct slice body = http_req_body(x->req);
    if (body.len > a->cfg.value_max_bytes) {
        respond_error(x, ERR_TOO_LARGE, "A single message is limited to 16 MiB (use produce-ndjson for batches)");
        return;
    }
    struct plog_header hdrs[ENTRY_HEADERS_MAX];
    struct plog_record rec = {0};
    rec.has_key = has_key;
    rec.key = key;
    rec.value = body;
    rec.headers = hdrs;
    rec.header_count = collect_headers(x, hdrs, ENTRY_HEADERS_MAX);
    struct sbuf *pl = &x->prop.payload;
    sbuf_init(pl, 0);
    sbuf_reserve(pl, body.len + key.len + 64);
    entry_produce_begin(pl, clock_wall_ms(), topic, idem);
    entry_produce_add(pl, &rec);
    entry_produce_finish(pl, 1);
    if (idem.len)
        pl->data[PRODUCE_OFF_FLAGS] = PRODUCE_HAS_IDEM;
    x->prop.key = key;
    x->prop.has_key = has_key;
    x->prop.record_count = 1;
    start_write(x, ENTRY_PRODUCE);
}

static void h_produce_ndjson(struct rctx *x, const struct route_match *m)
{
    struct api *a = x->api;
    struct slice topic = route_param(m, "topic"), key, idem;
    bool has_key;
    if (!produce_params(x, &topic, &key, &has_key, &idem))
        return;
    struct slice body = http_req_body(x->req);
    struct plog_header hdrs[ENTRY_HEADERS_MAX];
    size_t nh = collect_headers(x, hdrs, ENTRY_HEADERS_MAX);
    struct sbuf *pl = &x->prop.payload;
    sbuf_init(pl, 0);
    sbuf_reserve(pl, body.len + body.len / 8 + 64);
    entry_produce_begin(pl, clock_wall_ms(), topic, idem);
    uint32_t count = 0;
    size_t i = 0;
    while (i < body.len) {
        const uint8_t *nl = memchr(body.ptr + i, '\n', body.len - i);
        size_t end = nl ? (size_t)(nl - body.ptr) : body.len;
        size_t len = end - i;
        const uint8_t *line = body.ptr + i;
        i = end + 1;
        if (len && line[len - 1] == '\r')
            len--;
        if (len == 0)
            continue;
        if (count == a->cfg.ndjson_lines_max) {
            sbuf_free(pl);
            char msg[128];
            snprintf(msg, sizeof msg, "NDJSON batches are limited to %u lines; nothing was written",
                     a->cfg.ndjson_lines_max);
            respond_error(x, ERR_TOO_LARGE, msg);
            return;
        }
        struct plog_record rec = {0};
        rec.has_key = has_key;
        rec.key = key;
        rec.value = slice_of(line, len);
        rec.headers = hdrs;
        rec.header_count = nh;
        json_t *str = NULL;
        if (line[0] == '"' && line[len - 1] == '"' && len >= 2) {
            /* a JSON string line is stored unwrapped */
            str = json_loadb((const char *)line, len, JSON_DECODE_ANY, NULL);
            if (json_is_string(str))
                rec.value = slice_of(json_string_value(str), json_string_length(str));
        }
        entry_produce_add(pl, &rec);
        json_decref(str);
        count++;
    }
    if (count == 0) {
        sbuf_free(pl);
        respond_error(x, ERR_INVALID, "NDJSON body has no lines");
        return;
    }
    entry_produce_finish(pl, count);
    if (idem.len)
        pl->data[PRODUCE_OFF_FLAGS] = PRODUCE_HAS_IDEM;
    x->prop.key = key;
    x->prop.has_key = has_key;
    x->prop.record_count = count;
    start_write(x, ENTRY_PRODUCE);
}

/* ------------------------------------------------------------------------------------------ */
/* Consume                                                                                     */

struct consume_out {
    struct rctx *x;
    struct jw *w;
};

static void write_bytes(struct jw *w, const char *text_key, const char *b64_key, struct slice s,
                        bool b64)
{
    if (!b64 && utf8_valid(s.ptr, s.len)) {
        jw_key(w, text_key);
        jw_strn(w, s.ptr, s.len);
    } else {
        jw_key(w, b64_key);
        jw_b64(w, s.ptr, s.len);
    }
}

static int consume_visit(void *ctx, const struct plog_record *r)
{
    struct consume_out *o = ctx;
    struct jw *w = o->w;
    bool b64 = o->x->b64;
    jw_obj_open(w);
    jw_ku64(w, "offset", r->offset);
    jw_ku64(w, "partition", o->x->partition);
    jw_ki64(w, "timestamp_ms", r->timestamp_ms);
    write_bytes(w, "value", "value_b64", r->value, b64);
    if (r->has_key)
        write_bytes(w, "key", "key_b64", r->key, b64);
    if (r->header_count) {
        bool text = !b64;
        for (size_t i = 0; text && i < r->header_count; i++)
            text = utf8_valid(r->headers[i].value.ptr, r->headers[i].value.len) &&
                   utf8_valid(r->headers[i].key.ptr, r->headers[i].key.len);
        jw_key(w, text ? "headers" : "headers_b64");
        jw_obj_open(w);
        for (size_t i = 0; i < r->header_count; i++) {
            struct slice k = r->headers[i].key;
            if (utf8_valid(k.ptr, k.len)) {
                jw_keyn(w, k.ptr, k.len);
            } else {
                char name[32];
                snprintf(name, sizeof name, "header-%zu", i);
                jw_key(w, name);
            }
            if (text)
                jw_strn(w, r->headers[i].value.ptr, r->headers[i].value.len);
            else
                jw_b64(w, r->headers[i].value.ptr, r->headers[i].value.len);
        }
        jw_obj_close(w);
    }
    jw_obj_close(w);
    return 0;
}

static void consume_timeout(struct http_req *req, void *arg);
static void consume_wake(struct broker_waiter *w);

/* Read and answer, or park for long-poll. */
static void consume_run(struct rctx *x)
{
    struct api *a = x->api;
    struct sbuf b;
    sbuf_init(&b, 0);
    struct jw w;
    jw_init(&w, &b);
    jw_obj_open(&w);
    jw_key(&w, "messages");
    jw_arr_open(&w);
    struct consume_out o = {x, &w};
    struct plog_read_result res;
    memset(&res, 0, sizeof res);
    uint64_t hw = 0, start = 0;
    /* budget on stored bytes so the response stays under the cap after base64 and framing */
    size_t budget = (size_t)(a->cfg.consume_response_max_bytes / 2);
    int rc = broker_read(a->broker, x->topic, x->partition, x->offset, x->limit, budget,
                         consume_visit, &o, &res, &hw, &start);
    if (rc) {
        sbuf_free(&b);
        respond_error(x, rc, rc == ERR_CORRUPT ? "A stored record failed its checksum" : NULL);
        return;
    }
    if (res.count == 0 && x->wait_ms && !x->waiting) {
        /* long-poll: park until a record arrives or wait_ms passes */
        x->waiter.wake = consume_wake;
        int wrc = broker_wait(a->broker, x->topic, x->partition, x->offset, &x->waiter);
        if (wrc == 0) {
            sbuf_free(&b);
            x->waiting = true;
            http_req_ref(x->req);
            http_req_timer_start(x->req, x->wait_ms, consume_timeout, NULL);
            return;
        }
        if (wrc == ERR_AGAIN) { /* data arrived between the read and the wait: read again */
            sbuf_free(&b);
            x->waiting = true;
            consume_run(x);
            return;
        }
    }
    jw_arr_close(&w);
    jw_ku64(&w, "count", res.count);
    jw_ku64(&w, "next_offset", res.count ? res.next_offset : (res.from_adjusted ? res.next_offset : x->offset));
    uint64_t committed;
    if (broker_committed(a->broker, x->topic, x->group, x->partition, &committed) == 0)
        jw_ku64(&w, "committed_offset", committed);
    else
        jw_knull(&w, "committed_offset");
    jw_kbool(&w, "truncated", res.more && res.count < x->limit);
    if (res.from_adjusted)
        jw_kbool(&w, "floor_adjusted", true);
    jw_ku64(&w, "high_watermark", hw);
    jw_obj_close(&w);
    respond_json(x, 200, &b);
}

/* Core thread (apply): a record arrived. Hop to the worker. */
static void consume_woken(struct http_req *req, void *arg)
{
    (void)arg;
    struct rctx *x = http_req_user(req);
    if (!http_req_responded(req) && !http_req_orphaned(req)) {
        http_req_timer_stop(req);
        consume_run(x);
    } else if (!http_req_responded(req)) {
        http_req_timer_stop(req);
        consume_run(x); /* orphaned: the response is discarded, memory is released */
    }
    http_req_unref(req);
}

static void consume_wake(struct broker_waiter *w)
{
    struct rctx *x = (struct rctx *)((char *)w - offsetof(struct rctx, waiter));
    http_req_post(x->req, consume_woken, NULL);
}

static void consume_timeout(struct http_req *req, void *arg)
{
    (void)arg;
    struct rctx *x = http_req_user(req);
    if (broker_unwait(x->api->broker, &x->waiter)) {
        consume_run(x); /* answers with whatever is there (usually nothing) */
        http_req_unref(req);
    }
    /* else a wake is already posted; it will answer */
}

static void h_consume(struct rctx *x, const struct route_match *m)
{
    struct api *a = x->api;
    x->topic = route_param(m, "topic");
    x->group = route_param(m, "group");
    struct slice ps = route_param(m, "partition");
    if (!check_name(x, x->topic, BROKER_TOPIC_NAME_MAX, "Topic name") ||
        !check_name(x, x->group, BROKER_GROUP_NAME_MAX, "Group name"))
        return;
    uint64_t v;
    if (url_parse_u64(ps, &v) || v >= BROKER_PARTITIONS_MAX) {
        respond_error(x, ERR_BAD_PARTITION, "Partition must be an integer in 0..1023");
        return;
    }
    x->partition = (uint32_t)v;
    uint32_t nparts;
    if (broker_partitions(a->broker, x->topic, &nparts)) {
        respond_error(x, ERR_NO_TOPIC, NULL);
        return;
    }
    if (x->partition >= nparts) {
        char msg[96];
        snprintf(msg, sizeof msg, "Topic has %u partitions (0..%u)", nparts, nparts - 1);
        respond_error(x, ERR_BAD_PARTITION, msg);
        return;
    }
    int rc = qparam_u64(x, "offset", 0, INT64_MAX, &x->offset);
    if (rc < 0)
        return;
    x->offset_given = rc == 1;
    uint64_t limit = 100;
    if (qparam_u64(x, "limit", 1, 1000, &limit) < 0)
        return;
    x->limit = (uint32_t)limit;
    if (qparam_u64(x, "wait_ms", 0, a->cfg.long_poll_max_ms, &x->wait_ms) < 0)
        return;
    struct slice enc;
    rc = qparam(x, "encoding", &enc);
    if (rc == 1) {
        if (slice_eq_cstr(enc, "b64") || slice_eq_cstr(enc, "base64"))
            x->b64 = true;
        else if (!slice_eq_cstr(enc, "text") && !slice_eq_cstr(enc, "json")) {
            respond_error(x, ERR_BAD_PARAM, "encoding must be 'b64' (or omitted)");
            return;
        }
    }
    if (!x->offset_given) {
        uint64_t committed;
        x->offset = broker_committed(a->broker, x->topic, x->group, x->partition, &committed) == 0
                        ? committed : 0;
    }
    consume_run(x);
}

/* ------------------------------------------------------------------------------------------ */
/* Commit, topics, groups, retention                                                           */

static void answer_simple(struct rctx *x, int phase)
{
    (void)phase;
    struct proposal *p = &x->prop;
    struct apply_result *r = &p->res;
    if (p->err) {
        if (p->err == ERR_CAS_MISMATCH) {
            char extra[96];
            snprintf(extra, sizeof extra, "\"expected\":%llu,\"current\":%llu",
                     (unsigned long long)x->commit_offset, (unsigned long long)r->current);
            respond_error_ex(x, ERR_CAS_MISMATCH, NULL, extra, NULL);
        } else {
            respond_error(x, p->err, NULL);
        }
        return;
    }
    struct sbuf b;
    sbuf_init(&b, 0);
    struct jw w;
    jw_init(&w, &b);
    jw_obj_open(&w);
    jw_kbool(&w, "ok", true);
    switch (x->route) {
    case R_COMMIT:
        if (r->ignored) {
            jw_kbool(&w, "ignored", true);
            jw_ku64(&w, "committed_offset", r->committed);
        }
        break;
    case R_TOPICS_CREATE: {
        struct entry_topic e;
        entry_topic_decode(slice_of(p->payload.data, p->payload.len), &e);
        jw_key(&w, "topic");
        jw_strn(&w, e.name.ptr, e.name.len);
        jw_ku64(&w, "partitions", r->partitions ? r->partitions : e.partitions);
        jw_kbool(&w, "created", r->created);
        break;
    }
    case R_TOPIC_DELETE:
        jw_kbool(&w, "deleted", true);
        break;
    case R_HA_MEMBERSHIP:
        jw_kstr(&w, "op", x->member_op == CORE_PROP_MEMBER_ADD       ? "add"
                          : x->member_op == CORE_PROP_MEMBER_PROMOTE ? "promote"
                          : x->member_op == CORE_PROP_TRANSFER       ? "transfer"
                                                                     : "remove");
        jw_kstr(&w, "id", x->member);
        if (x->member_op == CORE_PROP_TRANSFER)
            jw_kbool(&w, "started", true);
        else
            jw_ku64(&w, "config_index", p->index);
        break;
    case R_DELETE_BEFORE:
        jw_ku64(&w, "deleted_count", r->deleted_count);
        jw_ku64(&w, "freed_bytes", r->freed_bytes);
        break;
    case R_RETENTION: {
        struct entry_retention e;
        entry_retention_decode(slice_of(p->payload.data, p->payload.len), &e);
        jw_key(&w, "topic");
        jw_strn(&w, e.topic.ptr, e.topic.len);
        if (e.partition != RETENTION_ALL_PARTITIONS)
            jw_ku64(&w, "partition", e.partition);
        if (e.ttl_ms != RETENTION_UNSET)
            jw_ki64(&w, "ttl_ms", e.ttl_ms);
        if (e.max_bytes != RETENTION_UNSET)
            jw_ki64(&w, "max_bytes", e.max_bytes);
        break;
    }
    case R_KV_PUT:
    case R_KV_PUT2:
        jw_ku64(&w, "cas", r->cas);
        write_durability(&w, x, true);
        jw_ku64(&w, "batch_id", p->index);
        break;
    case R_KV_DEL:
        jw_kbool(&w, "deleted", r->deleted);
        if (r->deleted)
            jw_ku64(&w, "cas", r->cas);
        write_durability(&w, x, true);
        jw_ku64(&w, "batch_id", p->index);
        break;
    default:
        break;
    }
    jw_obj_close(&w);
    respond_json(x, 200, &b);
}

/* Writes whose request is a JSON object: parse it (bounded), let `encode` validate it and build
 * the journal payload (false = it already answered the error), then hand it to the core. */
typedef bool (*json_encode_fn)(struct rctx *x, json_t *j, struct sbuf *payload);

static void json_write(struct rctx *x, uint8_t type, json_encode_fn encode)
{
    json_t *j = json_body(x);
    if (!j)
        return;
    sbuf_init(&x->prop.payload, 0);
    bool ok = encode(x, j, &x->prop.payload);
    json_decref(j);
    if (!ok) {
        sbuf_free(&x->prop.payload);
        return;
    }
    start_write(x, type);
}

/* POST /ha/membership {"op":"add","id":"n4","host":"127.0.0.4","raft_port":7004,
 * "http_port":8004,"priority":10} | {"op":"promote"|"remove","id":"n4"} */
static void h_membership(struct rctx *x)
{
    json_t *j = json_body(x);
    if (!j)
        return;
    struct slice op, id, host = SLICE_LIT("-"); /* promote/remove: only the id matters */
    uint64_t rp = 1, hp = 2, pr = 0;
    int type = 0;
    bool ok = json_str(j, "op", &op) && json_str(j, "id", &id);
    if (ok && slice_eq_cstr(op, "add")) {
        type = CORE_PROP_MEMBER_ADD;
        ok = json_str(j, "host", &host) && json_u64(j, "raft_port", 65535, &rp) && rp > 0;
        if (ok && json_object_get(j, "http_port"))
            ok = json_u64(j, "http_port", 65535, &hp) && hp > 0;
        else if (ok)
            hp = rp + 1; /* as in RF_HA_NODES */
        if (ok && json_object_get(j, "priority"))
            ok = json_u64(j, "priority", 1000000, &pr);
    } else if (ok && slice_eq_cstr(op, "promote")) {
        type = CORE_PROP_MEMBER_PROMOTE;
    } else if (ok && slice_eq_cstr(op, "remove")) {
        type = CORE_PROP_MEMBER_REMOVE;
    } else if (ok && slice_eq_cstr(op, "transfer")) {
        type = CORE_PROP_TRANSFER;
    } else {
        ok = false;
    }
    struct ha_node n;
    memset(&n, 0, sizeof n);
    if (ok && (id.len == 0 || id.len >= HA_NAME_MAX || host.len == 0 || host.len >= HA_HOST_MAX ||
               hp > 65535 || hp == 0))
        ok = false;
    if (ok) {
        char item[HA_NAME_MAX + HA_HOST_MAX + 64], err[256];
        int len = snprintf(item, sizeof item, "%.*s:%.*s:%u:%u:%u", (int)id.len, (const char *)id.ptr,
                           (int)host.len, (const char *)host.ptr, (unsigned)rp, (unsigned)pr,
                           (unsigned)hp);
        /* the same validation as RF_HA_NODES */
        ok = len > 0 && (size_t)len < sizeof item &&
             ha_parse_node(item, (size_t)len, &n, err, sizeof err) == 0;
        if (!ok && len > 0 && (size_t)len < sizeof item) {
            json_decref(j);
            respond_error(x, ERR_BAD_PARAM, err);
            return;
        }
    }
    json_decref(j);
    if (!ok) {
        respond_error(x, ERR_MISSING_FIELDS,
                      "Required: op (\"add\", \"promote\", \"remove\" or \"transfer\") and id "
                      "(string); add "
                      "also needs host (string) and raft_port (integer), optionally http_port "
                      "and priority");
        return;
    }
    sbuf_init(&x->prop.payload, 0);
    core_member_payload(&x->prop.payload, &n);
    snprintf(x->member, sizeof x->member, "%s", n.name);
    x->member_op = type;
    start_write(x, (uint8_t)type);
}

static bool enc_commit(struct rctx *x, json_t *j, struct sbuf *out)
{
    struct entry_commit e = {0};
    uint64_t part = 0;
    if (!json_str(j, "topic", &e.topic) || !json_str(j, "group", &e.group) ||
        !json_u64(j, "partition", BROKER_PARTITIONS_MAX - 1, &part) ||
        !json_u64(j, "offset", INT64_MAX, &e.offset)) {
        respond_error(x, ERR_MISSING_FIELDS, "Required fields: topic (string), group (string), "
                                             "partition (integer 0..1023), offset (integer >= 0)");
        return false;
    }
    if (!check_name(x, e.topic, BROKER_TOPIC_NAME_MAX, "Topic name") ||
        !check_name(x, e.group, BROKER_GROUP_NAME_MAX, "Group name"))
        return false;
    e.partition = (uint32_t)part;
    e.ts_ms = clock_wall_ms();
    entry_commit_encode(out, &e);
    return true;
}

static bool enc_topic_create(struct rctx *x, json_t *j, struct sbuf *out)
{
    struct entry_topic e = {0};
    uint64_t parts = x->api->cfg.default_partitions;
    if (!json_str(j, "name", &e.name)) {
        respond_error(x, ERR_MISSING_FIELDS, "Required field: name (string)");
        return false;
    }
    if ((json_object_get(j, "partitions") &&
         !json_u64(j, "partitions", BROKER_PARTITIONS_MAX, &parts)) || parts == 0) {
        respond_error(x, ERR_BAD_PARAM, "partitions must be an integer in 1..1024");
        return false;
    }
    if (!check_name(x, e.name, BROKER_TOPIC_NAME_MAX, "Topic name"))
        return false;
    e.partitions = (uint32_t)parts;
    e.ts_ms = clock_wall_ms();
    entry_topic_encode(out, &e);
    return true;
}

static bool enc_delete_before(struct rctx *x, json_t *j, struct sbuf *out)
{
    struct entry_delete_before e = {0};
    uint64_t part;
    if (!json_str(j, "topic", &e.topic) ||
        !json_u64(j, "partition", BROKER_PARTITIONS_MAX - 1, &part) ||
        !json_u64(j, "before_offset", INT64_MAX, &e.before)) {
        respond_error(x, ERR_MISSING_FIELDS, "Required fields: topic (string), partition (integer), "
                                             "before_offset (integer >= 0)");
        return false;
    }
    if (!check_name(x, e.topic, BROKER_TOPIC_NAME_MAX, "Topic name"))
        return false;
    e.partition = (uint32_t)part;
    e.ts_ms = clock_wall_ms();
    entry_delete_before_encode(out, &e);
    return true;
}

static bool enc_retention(struct rctx *x, json_t *j, struct sbuf *out)
{
    struct entry_retention e = {0};
    e.ttl_ms = e.max_bytes = RETENTION_UNSET;
    e.partition = RETENTION_ALL_PARTITIONS;
    if (!json_object_get(j, "topic")) {
        e.topic = SLICE_LIT("*");
    } else if (!json_str(j, "topic", &e.topic)) {
        respond_error(x, ERR_MISSING_FIELDS, "topic must be a string (a topic name or \"*\")");
        return false;
    }
    bool all = slice_eq_cstr(e.topic, "*");
    if (!all && !check_name(x, e.topic, BROKER_TOPIC_NAME_MAX, "Topic name"))
        return false;
    uint64_t v;
    bool bad = false;
    if (json_object_get(j, "partition")) {
        if (all || !json_u64(j, "partition", BROKER_PARTITIONS_MAX - 1, &v))
            bad = true;
        else
            e.partition = (uint32_t)v;
    }
    if (json_object_get(j, "ttl_ms")) {
        if (!json_u64(j, "ttl_ms", INT64_MAX, &v))
            bad = true;
        else
            e.ttl_ms = (int64_t)v;
    }
    if (json_object_get(j, "max_bytes")) {
        if (!json_u64(j, "max_bytes", INT64_MAX, &v))
            bad = true;
        else
            e.max_bytes = (int64_t)v;
    }
    if (bad || (e.ttl_ms == RETENTION_UNSET && e.max_bytes == RETENTION_UNSET)) {
        respond_error(x, ERR_BAD_PARAM, "Give ttl_ms and/or max_bytes (integers >= 0; 0 removes the "
                                        "limit); partition (integer) only with a named topic");
        return false;
    }
    e.ts_ms = clock_wall_ms();
    entry_retention_encode(out, &e);
    return true;
}

static void h_topic_delete(struct rctx *x, const struct route_match *m)
{
    struct entry_topic e = {clock_wall_ms(), route_param(m, "topic"), 0};
    if (!check_name(x, e.name, BROKER_TOPIC_NAME_MAX, "Topic name"))
        return;
    sbuf_init(&x->prop.payload, 0);
    entry_topic_encode(&x->prop.payload, &e);
    start_write(x, ENTRY_TOPIC_DELETE);
}

static void list_fn(void *ctx, struct slice name, uint32_t partitions)
{
    struct jw *w = ctx;
    jw_obj_open(w);
    jw_key(w, "name");
    jw_strn(w, name.ptr, name.len);
    jw_ku64(w, "partitions", partitions);
    jw_obj_close(w);
}

static void h_topics_list(struct rctx *x)
{
    struct sbuf b;
    sbuf_init(&b, 0);
    struct jw w;
    jw_init(&w, &b);
    jw_obj_open(&w);
    jw_kbool(&w, "ok", true);
    jw_key(&w, "topics");
    jw_arr_open(&w);
    broker_list(x->api->broker, list_fn, &w);
    jw_arr_close(&w);
    jw_obj_close(&w);
    respond_json(x, 200, &b);
}

static void describe_fn(void *ctx, uint32_t partition, const struct plog_stats *st)
{
    struct jw *w = ctx;
    jw_obj_open(w);
    jw_ku64(w, "partition", partition);
    jw_ku64(w, "earliest_offset", st->start_offset);
    jw_ku64(w, "latest_offset", st->high_watermark);
    jw_ku64(w, "records", st->high_watermark - st->start_offset);
    jw_ku64(w, "bytes", st->bytes);
    jw_ku64(w, "segments", st->segments);
    jw_obj_close(w);
}

static void h_topic_get(struct rctx *x, const struct route_match *m)
{
    struct slice topic = route_param(m, "topic");
    if (!check_name(x, topic, BROKER_TOPIC_NAME_MAX, "Topic name"))
        return;
    struct sbuf b;
    sbuf_init(&b, 0);
    struct jw w;
    jw_init(&w, &b);
    jw_obj_open(&w);
    jw_kbool(&w, "ok", true);
    jw_key(&w, "topic");
    jw_strn(&w, topic.ptr, topic.len);
    jw_key(&w, "partitions");
    jw_arr_open(&w);
    int rc = broker_describe(x->api->broker, topic, describe_fn, &w);
    if (rc) {
        sbuf_free(&b);
        respond_error(x, rc, NULL);
        return;
    }
    jw_arr_close(&w);
    jw_obj_close(&w);
    respond_json(x, 200, &b);
}

struct group_ctx {
    struct jw *w;
    bool by_topic;
    size_t n;
};

static void group_fn(void *ctx, struct slice topic, uint32_t partition, uint64_t committed,
                     uint64_t latest)
{
    struct group_ctx *g = ctx;
    struct jw *w = g->w;
    jw_obj_open(w);
    if (!g->by_topic) {
        jw_key(w, "topic");
        jw_strn(w, topic.ptr, topic.len);
    }
    jw_ku64(w, "partition", partition);
    jw_ku64(w, "committed_offset", committed);
    jw_ku64(w, "latest_offset", latest);
    jw_ku64(w, "lag", latest > committed ? latest - committed : 0);
    jw_obj_close(w);
    g->n++;
}

static void h_group(struct rctx *x, const struct route_match *m)
{
    struct slice group = route_param(m, "group"), topic = route_param(m, "topic");
    if (!check_name(x, group, BROKER_GROUP_NAME_MAX, "Group name"))
        return;
    if (x->route == R_GROUP_TOPIC) {
        uint32_t n;
        if (!check_name(x, topic, BROKER_TOPIC_NAME_MAX, "Topic name"))
            return;
        if (broker_partitions(x->api->broker, topic, &n)) {
            respond_error(x, ERR_NO_TOPIC, NULL);
            return;
        }
    }
    struct sbuf b;
    sbuf_init(&b, 0);
    struct jw w;
    jw_init(&w, &b);
    jw_obj_open(&w);
    jw_kbool(&w, "ok", true);
    jw_key(&w, "group");
    jw_strn(&w, group.ptr, group.len);
    if (x->route == R_GROUP_TOPIC) {
        jw_key(&w, "topic");
        jw_strn(&w, topic.ptr, topic.len);
    }
    jw_key(&w, x->route == R_GROUP_TOPIC ? "partitions" : "offsets");
    jw_arr_open(&w);
    struct group_ctx g = {&w, x->route == R_GROUP_TOPIC, 0};
    broker_group(x->api->broker, group, x->route == R_GROUP_TOPIC ? topic : (struct slice){NULL, 0},
                 group_fn, &g);
    jw_arr_close(&w);
    jw_obj_close(&w);
    respond_json(x, 200, &b);
}

/* ------------------------------------------------------------------------------------------ */
/* KV                                                                                          */

static bool kv_names(struct rctx *x, const struct route_match *m, struct slice *ns, struct slice *key)
{
    *ns = route_param(m, "ns");
    *key = route_param(m, "key");
    int rc = kv_validate_ns(*ns);
    if (rc) {
        respond_error(x, rc, "Namespace must be 1..128 characters of [A-Za-z0-9._-]");
        return false;
    }
    if (key) {
        rc = kv_validate_key(*key);
        if (rc) {
            respond_error(x, rc, rc == ERR_TOO_LARGE ? "Keys are limited to 1024 bytes"
                                                     : "Keys must be 1..1024 bytes without NUL");
            return false;
        }
    }
    return true;
}

static void h_kv_write(struct rctx *x, const struct route_match *m, bool del)
{
    struct slice ns, key;
    if (!kv_names(x, m, &ns, &key))
        return;
    struct entry_kv e = {0};
    e.ns = ns;
    e.key = key;
    e.expected = KV_EXPECT_ANY;
    uint64_t v;
    int rc = qparam_u64(x, "cas", 0, UINT64_MAX - 1, &v);
    if (rc < 0)
        return;
    if (rc)
        e.expected = v;
    x->commit_offset = e.expected; /* echoed as "expected" on a mismatch */
    if (!del) {
        rc = qparam_u64(x, "ttl_ms", 0, (uint64_t)INT64_MAX / 2, &e.ttl_ms);
        if (rc < 0)
            return;
        e.value = http_req_body(x->req);
        rc = kv_validate(x->api->kv, ns, key, e.value.len);
        if (rc) {
            respond_error(x, rc, rc == ERR_TOO_LARGE ? "KV values are limited to 1 MiB" : NULL);
            return;
        }
    }
    if (qparam_u64(x, "timeout_ms", 0, 600000, &x->timeout_ms) < 0)
        return;
    e.ts_ms = clock_wall_ms();
    sbuf_init(&x->prop.payload, 0);
    entry_kv_encode(&x->prop.payload, &e);
    start_write(x, del ? ENTRY_KV_DEL : ENTRY_KV_PUT);
}

static void h_kv_get(struct rctx *x, const struct route_match *m)
{
    struct slice ns, key;
    if (!kv_names(x, m, &ns, &key))
        return;
    bool meta = false;
    if (key.len > 5 && memcmp(key.ptr + key.len - 5, "/meta", 5) == 0) {
        meta = true;
        key.len -= 5;
    }
    int64_t now = clock_wall_ms();
    struct sbuf val, b;
    sbuf_init(&val, 0);
    sbuf_init(&b, 0);
    uint64_t cas = 0;
    int64_t exp = 0;
    int rc = kv_get(x->api->kv, ns, key, now, meta ? NULL : &val, &cas, &exp);
    if (rc) {
        sbuf_free(&val);
        respond_error(x, rc, rc == ERR_NOT_FOUND ? "Key does not exist (or has expired)" : NULL);
        return;
    }
    struct jw w;
    jw_init(&w, &b);
    jw_obj_open(&w);
    if (!meta) {
        jw_key(&w, "value");
        jw_b64(&w, val.data, val.len);
    }
    jw_ku64(&w, "cas", cas);
    if (meta)
        jw_ki64(&w, "ttl_ms", exp ? (exp > now ? exp - now : 0) : 0);
    jw_obj_close(&w);
    sbuf_free(&val);
    respond_json(x, 200, &b);
}

struct kv_list_ctx {
    struct jw *w;
    int64_t now;
    struct slice last;
    struct arena *a;
};

static int kv_list_visit(void *ctx, struct slice key, uint64_t cas, int64_t exp, size_t vlen)
{
    struct kv_list_ctx *k = ctx;
    struct jw *w = k->w;
    jw_obj_open(w);
    write_bytes(w, "key", "key_b64", key, false);
    jw_ku64(w, "cas", cas);
    jw_ki64(w, "ttl_ms", exp ? (exp > k->now ? exp - k->now : 0) : 0);
    jw_ku64(w, "size", vlen);
    jw_obj_close(w);
    uint8_t *c = arena_alloc(k->a, key.len);
    if (c) {
        memcpy(c, key.ptr, key.len);
        k->last = slice_of(c, key.len);
    }
    return 0;
}

static void h_kv_list(struct rctx *x, const struct route_match *m)
{
    struct slice ns = route_param(m, "ns"), prefix = {NULL, 0}, after = {NULL, 0};
    int rc = kv_validate_ns(ns);
    if (rc) {
        respond_error(x, rc, "Namespace must be 1..128 characters of [A-Za-z0-9._-]");
        return;
    }
    if (qparam(x, "prefix", &prefix) < 0 || qparam(x, "after", &after) < 0) {
        respond_error(x, ERR_BAD_ESCAPE, NULL);
        return;
    }
    uint64_t limit = 100;
    if (qparam_u64(x, "limit", 1, 1000, &limit) < 0)
        return;
    struct sbuf b;
    sbuf_init(&b, 0);
    struct jw w;
    jw_init(&w, &b);
    jw_obj_open(&w);
    jw_kbool(&w, "ok", true);
    jw_key(&w, "keys");
    jw_arr_open(&w);
    struct kv_list_ctx k = {&w, clock_wall_ms(), {NULL, 0}, http_req_arena(x->req)};
    bool more = false;
    rc = kv_list(x->api->kv, ns, prefix, after, (size_t)limit, k.now, kv_list_visit, &k, &more);
    if (rc) {
        sbuf_free(&b);
        respond_error(x, rc, NULL);
        return;
    }
    jw_arr_close(&w);
    if (more && k.last.len) {
        /* the cursor for the next page: pass it back as ?after= (URL-encode it) */
        write_bytes(&w, "next_after", "next_after_b64", k.last, false);
    } else {
        jw_knull(&w, "next_after");
    }
    jw_obj_close(&w);
    respond_json(x, 200, &b);
}

/* ------------------------------------------------------------------------------------------ */
/* Health and metrics                                                                          */

static void h_health(struct rctx *x)
{
    char why[256];
    int rc = core_health(x->api->core, why, sizeof why);
    if (rc) {
        respond_error(x, rc == ERR_NOSPACE ? ERR_NOSPACE : ERR_STORE_FAILED, why);
        return;
    }
    struct sbuf b;
    sbuf_init(&b, 0);
    sbuf_puts(&b, "{\"ok\":true}");
    respond_json(x, 200, &b);
}

static void h_ready(struct rctx *x)
{
    bool ready = core_ready(x->api->core);
    struct sbuf b;
    sbuf_init(&b, 0);
    sbuf_puts(&b, ready ? "{\"ready\":true}" : "{\"ready\":false}");
    respond_json(x, ready ? 200 : 503, &b);
}

static void h_ha_status(struct rctx *x)
{
    struct core_ha_status st;
    core_ha_status(x->api->core, &st);
    bool lead = strcmp(st.role, "leader") == 0;
    struct sbuf b;
    sbuf_init(&b, 0);
    struct jw w;
    jw_init(&w, &b);
    jw_obj_open(&w);
    jw_kbool(&w, "ok", true);
    jw_kbool(&w, "enabled", st.enabled);
    jw_kstr(&w, "node_id", st.node_id);
    jw_kstr(&w, "role", st.role);
    jw_ku64(&w, "term", st.term);
    if (st.enabled && st.leader_id) {
        jw_kstr(&w, "leader_id", st.leader_name);
        jw_kstr(&w, "leader_url", st.leader_url);
    } else if (!st.enabled) {
        jw_kstr(&w, "leader_id", st.node_id);
        jw_knull(&w, "leader_url");
    } else {
        jw_knull(&w, "leader_id");
        jw_knull(&w, "leader_url");
    }
    jw_ku64(&w, "commit_index", st.commit_index);
    jw_ku64(&w, "applied_index", st.applied_index);
    jw_ku64(&w, "last_index", st.last_index);
    jw_ku64(&w, "durable_index", st.durable_index);
    if (st.enabled)
        jw_ku64(&w, "restart_index", st.restart_index);
    jw_kstr(&w, "write_concern", st.write_concern);
    jw_key(&w, "voters");
    jw_arr_open(&w);
    if (!st.enabled)
        jw_str(&w, st.node_id);
    for (size_t i = 0; i < st.n_peers; i++)
        if (st.peers[i].voter)
            jw_str(&w, st.peers[i].name);
    jw_arr_close(&w);
    jw_key(&w, "learners");
    jw_arr_open(&w);
    for (size_t i = 0; i < st.n_peers; i++)
        if (!st.peers[i].voter)
            jw_str(&w, st.peers[i].name);
    jw_arr_close(&w);
    jw_key(&w, "peers");
    jw_arr_open(&w);
    for (size_t i = 0; i < st.n_peers; i++) {
        const struct core_peer_status *p = &st.peers[i];
        if (p->self)
            continue;
        jw_obj_open(&w);
        jw_kstr(&w, "id", p->name);
        jw_kstr(&w, "url", p->url);
        jw_kbool(&w, "connected", p->connected);
        if (lead) {
            jw_ku64(&w, "match_index", p->match_index);
            jw_ku64(&w, "lag", st.last_index > p->match_index ? st.last_index - p->match_index : 0);
        } else {
            jw_knull(&w, "match_index");
            jw_knull(&w, "lag");
        }
        jw_obj_close(&w);
    }
    jw_arr_close(&w);
    jw_ku64(&w, "elections_won", st.elections_won);
    jw_ku64(&w, "leader_changes", st.leader_changes);
    jw_ku64(&w, "snapshots_sent", st.snapshots_sent);
    jw_ku64(&w, "snapshots_installed", st.snapshots_installed);
    jw_ku64(&w, "snapshot_index", st.snapshot_index);
    jw_obj_close(&w);
    respond_json(x, 200, &b);
}

static void h_metrics(struct rctx *x, bool ha)
{
    struct api *a = x->api;
    struct sbuf b;
    sbuf_init(&b, 0);
    struct core_stats cs;
    core_stats(a->core, &cs);
    if (ha) {
        struct core_ha_status st;
        core_ha_status(a->core, &st);
        bool lead = strcmp(st.role, "leader") == 0;
        metrics_write_gauge(&b, "ayder_ha_enabled", "1 when clustering is enabled.", st.enabled);
        metrics_write_gauge(&b, "ayder_ha_role", "0 leader, 1 follower, 2 candidate, 3 pre-candidate (a single node is its own leader).",
                            lead ? 0 : strcmp(st.role, "follower") == 0 ? 1 : strcmp(st.role, "candidate") == 0 ? 2 : 3);
        metrics_write_gauge(&b, "ayder_ha_term", "Current Raft term.", (double)st.term);
        metrics_write_gauge(&b, "ayder_ha_leader_known", "1 when this node knows a leader.", st.leader_id != 0);
        if (st.enabled && st.leader_id) {
            /* The leader's identity as labels (how a client finds where to write). */
            char labels[512];
            snprintf(labels, sizeof labels, "leader_id=\"%s\",leader_url=\"%s\"", st.leader_name,
                     st.leader_url);
            metrics_write_family(&b, "ayder_ha_leader", "gauge", "Always 1; the labels name the leader.");
            metrics_write_sample(&b, "ayder_ha_leader", labels, 1);
        }
        metrics_write_gauge(&b, "ayder_ha_voters", "Voting members.", st.enabled ? (double)st.n_peers : 1);
        metrics_write_gauge(&b, "ayder_ha_commit_index", "Highest committed journal index.", (double)st.commit_index);
        metrics_write_gauge(&b, "ayder_ha_applied_index", "Highest applied journal index.", (double)st.applied_index);
        metrics_write_gauge(&b, "ayder_ha_last_index", "Highest journal index written.", (double)st.last_index);
        metrics_write_gauge(&b, "ayder_ha_durable_index", "Highest fsynced journal index on this node.", (double)st.durable_index);
        metrics_write_counter(&b, "ayder_ha_elections_won_total", "Elections this node won.", st.elections_won);
        metrics_write_counter(&b, "ayder_ha_leader_changes_total", "Changes of the known leader.", st.leader_changes);
        metrics_write_counter(&b, "ayder_ha_snapshots_sent_total", "Snapshots streamed to followers behind the log's base.", st.snapshots_sent);
        metrics_write_counter(&b, "ayder_ha_snapshots_installed_total", "Snapshots received from a leader and installed.", st.snapshots_installed);
        metrics_write_gauge(&b, "ayder_ha_snapshot_index", "Index of the newest local checkpoint.", (double)st.snapshot_index);
        if (st.enabled) {
            metrics_write_family(&b, "ayder_ha_peer_connected", "gauge", "1 when the Raft connection to the peer is up.");
            for (size_t i = 0; i < st.n_peers; i++) {
                char l[128];
                snprintf(l, sizeof l, "peer=\"%s\"", st.peers[i].name);
                metrics_write_sample(&b, "ayder_ha_peer_connected", l, st.peers[i].connected);
            }
            if (lead) {
                metrics_write_family(&b, "ayder_ha_peer_match_index", "gauge", "Highest index the peer has fsynced (leader's view).");
                for (size_t i = 0; i < st.n_peers; i++) {
                    char l[128];
                    snprintf(l, sizeof l, "peer=\"%s\"", st.peers[i].name);
                    metrics_write_sample(&b, "ayder_ha_peer_match_index", l, (double)st.peers[i].match_index);
                }
                metrics_write_family(&b, "ayder_ha_peer_lag_entries", "gauge", "Entries the peer is behind the leader's log.");
                for (size_t i = 0; i < st.n_peers; i++) {
                    char l[128];
                    snprintf(l, sizeof l, "peer=\"%s\"", st.peers[i].name);
                    uint64_t m = st.peers[i].self ? st.durable_index : st.peers[i].match_index;
                    metrics_write_sample(&b, "ayder_ha_peer_lag_entries", l,
                                         st.last_index > m ? (double)(st.last_index - m) : 0);
                }
            }
        }
    } else {
        metrics_render_requests(a->metrics, &b);
        struct http_server *srv = atomic_load(&a->server);
        if (srv) {
            struct http_server_stats hs;
            http_server_stats(srv, &hs);
            metrics_write_gauge(&b, "ayder_http_open_connections", "Open client connections.", (double)hs.connections_open);
            metrics_write_counter(&b, "ayder_http_connections_total", "Accepted connections.", hs.connections_total);
            metrics_write_counter(&b, "ayder_http_connections_rejected_total", "Connections refused at the connection limit.", hs.connections_rejected);
            metrics_write_counter(&b, "ayder_http_received_bytes_total", "Bytes read from clients.", hs.bytes_in);
            metrics_write_counter(&b, "ayder_http_sent_bytes_total", "Bytes written to clients.", hs.bytes_out);
            metrics_write_counter(&b, "ayder_http_parse_errors_total", "Requests rejected by the HTTP parser or a limit.", hs.parse_errors);
            metrics_write_counter(&b, "ayder_http_timeouts_total", "Requests closed by the header/body timeout.", hs.timeouts);
        }
        metrics_write_counter(&b, "ayder_auth_failures_total", "Requests refused with 401.", atomic_load(&a->unauthorized));
        metrics_write_counter(&b, "ayder_auth_forbidden_total", "Requests refused with 403.", atomic_load(&a->forbidden));
        metrics_write_counter(&b, "ayder_rate_limited_total", "Requests refused with 429.", atomic_load(&a->rate_limited));
        metrics_write_gauge(&b, "ayder_journal_last_index", "Highest journal index written.", (double)cs.last_index);
        metrics_write_gauge(&b, "ayder_journal_durable_index", "Highest fsynced journal index.", (double)cs.durable_index);
        metrics_write_gauge(&b, "ayder_applied_index", "Highest applied journal index.", (double)cs.applied_index);
        metrics_write_counter(&b, "ayder_journal_entries_total", "Journal entries appended since start.", cs.entries);
        metrics_write_counter(&b, "ayder_journal_fsyncs_total", "Journal group-commit fsyncs since start.", cs.syncs);
        metrics_write_family(&b, "ayder_journal_fsync_seconds_total", "counter", "Time spent in journal group-commit fsyncs since start.");
        metrics_write_sample(&b, "ayder_journal_fsync_seconds_total", NULL, (double)cs.sync_ns_total / 1e9);
        metrics_write_counter(&b, "ayder_proposals_total", "Write requests handed to the core since start.", cs.proposals);
        metrics_write_counter(&b, "ayder_checkpoints_total", "Checkpoints written since start.", cs.checkpoints);
        metrics_write_gauge(&b, "ayder_inflight_writes", "Writes accepted but not yet completed.", (double)cs.inflight);
        metrics_write_gauge(&b, "ayder_recovery_seconds", "Time the last start-up recovery took.", (double)cs.recovery_ms / 1000.0);
        char why[256];
        metrics_write_gauge(&b, "ayder_storage_healthy", "1 when the store accepts writes.",
                            core_health(a->core, why, sizeof why) == 0 ? 1 : 0);
        struct broker_stats bs;
        broker_stats(a->broker, &bs);
        metrics_write_gauge(&b, "ayder_topics", "Topics.", (double)bs.topics);
        metrics_write_gauge(&b, "ayder_partitions", "Partitions.", (double)bs.partitions);
        metrics_write_gauge(&b, "ayder_partition_log_bytes", "Bytes of partition log files.", (double)bs.bytes);
        metrics_write_gauge(&b, "ayder_partition_records", "Readable records across partitions.", (double)bs.records);
        metrics_write_gauge(&b, "ayder_committed_offsets", "Committed (topic, group, partition) offsets.", (double)bs.offsets);
        metrics_write_gauge(&b, "ayder_idempotency_keys", "Idempotency keys remembered.", (double)bs.idem_keys);
        metrics_write_gauge(&b, "ayder_long_poll_waiters", "Consumers parked in a long poll.", (double)bs.waiters);
        struct kv_stats ks;
        kv_stats(a->kv, &ks);
        metrics_write_gauge(&b, "ayder_kv_keys", "KV keys.", (double)ks.keys);
        metrics_write_gauge(&b, "ayder_kv_bytes", "KV bytes (keys, values, overhead).", (double)ks.bytes);
        metrics_write_family(&b, "ayder_kv_operations_total", "counter", "KV operations by result.");
        metrics_write_sample(&b, "ayder_kv_operations_total", "op=\"put\",result=\"ok\"", (double)ks.puts_ok);
        metrics_write_sample(&b, "ayder_kv_operations_total", "op=\"put\",result=\"cas_mismatch\"", (double)ks.puts_cas_fail);
        metrics_write_sample(&b, "ayder_kv_operations_total", "op=\"delete\",result=\"ok\"", (double)ks.deletes_ok);
        metrics_write_sample(&b, "ayder_kv_operations_total", "op=\"get\",result=\"hit\"", (double)ks.gets_hit);
        metrics_write_sample(&b, "ayder_kv_operations_total", "op=\"get\",result=\"miss\"", (double)ks.gets_miss);
    }
    uint64_t ns = clock_mono_ns() - http_req_recv_ns(x->req);
    metrics_observe(a->metrics, x->route, sbuf_ok(&b) ? 200 : 503, ns);
    if (!sbuf_ok(&b)) {
        sbuf_free(&b);
        respond_error(x, ERR_NOMEM, NULL);
        return;
    }
    http_respond(x->req, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, b.data, b.len);
    sbuf_free(&b);
}

/* ------------------------------------------------------------------------------------------ */
/* Dispatch                                                                                    */

static void preflight(struct rctx *x)
{
    struct route_match m;
    const struct http_request *h = http_req_head(x->req);
    if (!router_path_exists(&x->api->router, h->path, &m)) {
        respond_error(x, ERR_NO_ROUTE, NULL);
        return;
    }
    char hdr[512];
    snprintf(hdr, sizeof hdr,
             "Access-Control-Allow-Methods: %s, OPTIONS\r\n"
             "Access-Control-Allow-Headers: Authorization, Content-Type, X-Requested-With\r\n"
             "Access-Control-Max-Age: 86400\r\n"
             "Allow: %s, OPTIONS\r\n",
             m.allow, m.allow);
    metrics_observe(x->api->metrics, R_OTHER, 204, clock_mono_ns() - http_req_recv_ns(x->req));
    http_respond(x->req, 204, NULL, hdr, "", 0);
}

static void dispatch(struct rctx *x, struct route_match *mp)
{
    struct route_match m = *mp;
    int id = x->route;
    switch (id) {
    case R_HEALTH: h_health(x); break;
    case R_READY: h_ready(x); break;
    case R_METRICS: h_metrics(x, false); break;
    case R_METRICS_HA: h_metrics(x, true); break;
    case R_HA_STATUS: h_ha_status(x); break;
    case R_HA_MEMBERSHIP: h_membership(x); break;
    case R_PRODUCE: h_produce(x, &m); break;
    case R_PRODUCE_NDJSON: h_produce_ndjson(x, &m); break;
    case R_CONSUME: h_consume(x, &m); break;
    case R_COMMIT: json_write(x, ENTRY_COMMIT, enc_commit); break;
    case R_TOPICS_CREATE: json_write(x, ENTRY_TOPIC_CREATE, enc_topic_create); break;
    case R_TOPICS_LIST: h_topics_list(x); break;
    case R_TOPIC_GET: h_topic_get(x, &m); break;
    case R_TOPIC_DELETE: h_topic_delete(x, &m); break;
    case R_GROUP:
    case R_GROUP_TOPIC: h_group(x, &m); break;
    case R_DELETE_BEFORE: json_write(x, ENTRY_DELETE_BEFORE, enc_delete_before); break;
    case R_RETENTION: json_write(x, ENTRY_RETENTION, enc_retention); break;
    case R_KV_LIST: h_kv_list(x, &m); break;
    case R_KV_GET: h_kv_get(x, &m); break;
    case R_KV_PUT:
    case R_KV_PUT2: h_kv_write(x, &m, false); break;
    case R_KV_DEL: h_kv_write(x, &m, true); break;
    default: respond_error(x, ERR_NO_ROUTE, NULL); break;
    }
}

/* Worker: the read barrier finished. */
static void post_read(struct http_req *req, void *arg)
{
    (void)arg;
    struct rctx *x = http_req_user(req);
    if (!http_req_responded(req)) {
        if (x->rb.err)
            respond_error(x, x->rb.err, NULL);
        else
            dispatch(x, &x->match);
    }
    http_req_unref(req);
}

/* Core thread. */
static void on_read_barrier(struct read_barrier *rb)
{
    struct rctx *x = rb->ctx;
    http_req_post(x->req, post_read, NULL);
}

void api_handle(void *ctx, struct http_req *req)
{
    struct api *a = ctx;
    struct rctx *x = arena_alloc(http_req_arena(req), sizeof *x);
    if (!x) {
        static const char body[] = "{\"ok\":false,\"error\":\"out_of_memory\",\"message\":\"Out of memory\"}";
        http_respond(req, 503, "application/json", NULL, body, sizeof body - 1);
        return;
    }
    memset(x, 0, sizeof *x);
    x->api = a;
    x->req = req;
    x->route = R_OTHER;
    x->prop.partition = -1;
    http_req_set_user(req, x);
    const struct http_request *h = http_req_head(req);
    if (slice_eq_cstr(h->method, "OPTIONS")) {
        preflight(x);
        return;
    }
    struct route_match m;
    int rc = router_match(&a->router, h->method, h->path, http_req_arena(req), &m);
    if (rc == ERR_METHOD) {
        char hdr[160];
        snprintf(hdr, sizeof hdr, "Allow: %s, OPTIONS\r\n", m.allow);
        respond_error_ex(x, ERR_METHOD, NULL, NULL, hdr);
        return;
    }
    if (rc) {
        respond_error(x, rc, rc == ERR_NO_ROUTE ? "No such route; see docs/HTTP_API.md" : NULL);
        return;
    }
    int id = m.route->id;
    x->route = id;
    int scope = SCOPE_NONE;
    for (size_t i = 0; i < NROUTES; i++)
        if (routes[i].id == id)
            scope = routes[i].scope;
    if (scope != SCOPE_NONE) {
        uint32_t retry = 0;
        rc = auth_check(a->cfg.auth, h->authorization, scope, (uint64_t)clock_mono_ms(), &retry);
        if (rc) {
            if (rc == ERR_UNAUTHORIZED)
                atomic_fetch_add_explicit(&a->unauthorized, 1, memory_order_relaxed);
            else if (rc == ERR_FORBIDDEN)
                atomic_fetch_add_explicit(&a->forbidden, 1, memory_order_relaxed);
            if (rc == ERR_RATE_LIMITED) {
                atomic_fetch_add_explicit(&a->rate_limited, 1, memory_order_relaxed);
                char hdr[64], extra[48];
                snprintf(hdr, sizeof hdr, "Retry-After: %u\r\n", retry);
                snprintf(extra, sizeof extra, "\"retry_after\":%u", retry);
                respond_error_ex(x, rc, NULL, extra, hdr);
            } else {
                respond_error(x, rc, NULL);
            }
            return;
        }
    }
    if (id == R_CONSUME || id == R_KV_GET || id == R_KV_LIST || id == R_TOPICS_LIST ||
        id == R_TOPIC_GET || id == R_GROUP || id == R_GROUP_TOPIC) {
        struct slice cons;
        rc = qparam(x, "consistency", &cons);
        if (rc < 0) {
            respond_error(x, rc, NULL);
            return;
        }
        if (rc == 1 && !slice_eq_cstr(cons, "local")) {
            if (!slice_eq_cstr(cons, "leader") && !slice_eq_cstr(cons, "linearizable")) {
                respond_error(x, ERR_BAD_PARAM, "consistency must be 'local' or 'leader'");
                return;
            }
            /* ReadIndex: serve once the leader confirmed it still leads and applied
             * everything committed before this read arrived. */
            x->match = m;
            x->rb.done = on_read_barrier;
            x->rb.ctx = x;
            http_req_ref(req);
            rc = core_read_barrier(a->core, &x->rb);
            if (rc) {
                http_req_unref(req);
                respond_error(x, rc, NULL);
            }
            return;
        }
    }
    dispatch(x, &m);
}

int api_new(const struct api_config *cfg, struct api **out)
{
    struct api *a = xcalloc(1, sizeof *a);
    if (!a)
        return ERR_NOMEM;
    a->cfg = *cfg;
    if (!a->cfg.consume_response_max_bytes)
        a->cfg.consume_response_max_bytes = 16u << 20;
    if (!a->cfg.long_poll_max_ms)
        a->cfg.long_poll_max_ms = 30000;
    if (!a->cfg.ndjson_lines_max)
        a->cfg.ndjson_lines_max = 100000;
    if (!a->cfg.value_max_bytes)
        a->cfg.value_max_bytes = 16u << 20;
    if (!a->cfg.default_partitions)
        a->cfg.default_partitions = 8;
    a->core = cfg->core;
    a->broker = core_broker(cfg->core);
    a->kv = core_kv(cfg->core);
    router_init(&a->router);
    for (size_t i = 0; i < NROUTES; i++) {
        int rc = router_add(&a->router, routes[i].method, routes[i].pattern, routes[i].id);
        if (rc) {
            xfree(a);
            return rc;
        }
    }
    a->metrics = metrics_new(route_names, R__COUNT);
    if (!a->metrics) {
        xfree(a);
        return ERR_NOMEM;
    }
    *out = a;
    return 0;
}

void api_set_server(struct api *a, struct http_server *s) { atomic_store(&a->server, s); }

void api_free(struct api *a)
{
    if (!a)
        return;
    metrics_free(a->metrics);
    xfree(a);
}
