/* api.c -- the API's routing/response helper (see api.h, api_internal.h, docs/HTTP_API.md).
 *
 * The handlers live in one file per area (ops.c, broker.c, kv.c, cluster.c, schema.c, stream.c,
 * feed.c); this file holds what they share: the route registry built from the areas' tables,
 * auth, ?consistency=leader reads, dispatch, responses, parameter and JSON-body helpers, and the
 * write plumbing to the core.
 *
 * Request life cycle:
 *   api_handle (worker) -> route, auth, validate -> either answer from the state machines
 *   (reads) or build a proposal and hand it to the core (writes: api_start_write). The core calls
 *   back on its own thread (on_core_done); we copy what we need and post to the request's worker,
 *   where the area's answer function writes the response. A request handed to the core holds a
 *   reference (and a server "hold", see server.h) until the core's final PROPOSAL_DONE callback
 *   has been processed on the worker, so its memory (which holds the proposal) outlives every use
 *   by the core, and later requests on the same connection wait for its effect when they must.
 *
 * Invariants:
 *  1. Every request gets exactly one response (http_respond asserts it); late core completions
 *     after a timeout response only release memory.
 *  2. "durable":true is only ever sent for a proposal completed with PROPOSAL_DONE and err == 0
 *     (applied after its fsync).
 *  3. Bad input never reaches the core: names, numbers, JSON and sizes are validated here first
 *     (the core and apply re-validate what they decide on).
 */
#include "api/api_internal.h"

#include "base/alloc.h"
#include "base/clock.h"
#include "base/err.h"
#include "base/log.h"
#include "base/workq.h"
#include "broker/entry.h"
#include "http/url.h"
#include "metrics/metrics.h"

#include <stdio.h>
#include <string.h>

#define JSON_BODY_MAX (1u << 20)
#define JSON_DEPTH 16

/* Every area's table, registered (and matched) in this order. A new area adds one line. */
static const struct api_route *const areas[] = {
    api_broker_routes,
    api_ops_routes,
    api_cluster_routes,
    api_kv_routes,
    api_schema_routes,
    api_stream_routes,
    api_feed_routes,
    api_subscribe_routes,
    api_ui_routes,
};

/* ------------------------------------------------------------------------------------------ */
/* Responses                                                                                   */

static void respond(struct rctx *x, int status, const char *ctype, const char *extra,
                    const struct sbuf *body)
{
    uint64_t ns = clock_mono_ns() - http_req_recv_ns(x->req);
    metrics_observe(x->api->metrics, x->metric, status, ns);
    http_respond(x->req, status, ctype, extra, body->data, body->len);
}

void api_respond_json(struct rctx *x, int status, struct sbuf *body)
{
    if (!sbuf_ok(body)) {
        sbuf_reset(body);
        sbuf_puts(body, "{\"ok\":false,\"error\":\"out_of_memory\",\"message\":\"Response too large for memory\"}");
        status = 503;
    }
    respond(x, status, "application/json", NULL, body);
    sbuf_free(body);
}

void api_respond_bytes(struct rctx *x, int status, const char *ctype, const char *extra_headers,
                       const void *data, size_t len)
{
    uint64_t ns = clock_mono_ns() - http_req_recv_ns(x->req);
    metrics_observe(x->api->metrics, x->metric, status, ns);
    http_respond(x->req, status, ctype, extra_headers, data, len);
}

void api_respond_ctype(struct rctx *x, int status, const char *ctype, struct sbuf *body)
{
    api_respond_ctype_ex(x, status, ctype, NULL, body);
}

void api_respond_ctype_ex(struct rctx *x, int status, const char *ctype, const char *extra_headers,
                          struct sbuf *body)
{
    if (!sbuf_ok(body)) {
        sbuf_free(body);
        api_respond_error(x, ERR_NOMEM, "Response too large for memory");
        return;
    }
    respond(x, status, ctype, extra_headers, body);
    sbuf_free(body);
}

void api_respond_text(struct rctx *x, struct sbuf *body)
{
    if (!sbuf_ok(body)) {
        sbuf_free(body);
        api_respond_error(x, ERR_NOMEM, NULL);
        return;
    }
    respond(x, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, body);
    sbuf_free(body);
}

void api_respond_error_ex(struct rctx *x, int err, const char *msg, const char *extra_json,
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
    respond(x, status, "application/json",
            hdr.len > 1 && sbuf_ok(&hdr) ? (const char *)hdr.data : NULL, &b);
    sbuf_free(&hdr);
    sbuf_free(&b);
}

void api_respond_error(struct rctx *x, int err, const char *msg)
{
    api_respond_error_ex(x, err, msg, NULL, NULL);
}

void api_json_open_ok(struct sbuf *b, struct jw *w)
{
    sbuf_init(b, 0);
    jw_init(w, b);
    jw_obj_open(w);
    jw_kbool(w, "ok", true);
}

/* ------------------------------------------------------------------------------------------ */
/* Parameters                                                                                  */

int api_qparam(struct rctx *x, const char *name, struct slice *out)
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

int api_qparam_u64(struct rctx *x, const char *name, uint64_t min, uint64_t max, uint64_t *out)
{
    struct slice s;
    int rc = api_qparam(x, name, &s);
    if (rc <= 0) {
        if (rc < 0) {
            api_respond_error(x, rc, NULL);
            return -1;
        }
        return 0;
    }
    uint64_t v;
    if (url_parse_u64(s, &v) || v < min || v > max) {
        char msg[160];
        snprintf(msg, sizeof msg, "Query parameter '%s' must be an integer in %llu..%llu", name,
                 (unsigned long long)min, (unsigned long long)max);
        api_respond_error(x, ERR_BAD_PARAM, msg);
        return -1;
    }
    *out = v;
    return 1;
}

bool api_check_name(struct rctx *x, struct slice s, size_t max, const char *what)
{
    if (broker_valid_name(s, max))
        return true;
    char msg[200];
    snprintf(msg, sizeof msg, "%s must be 1..%zu characters of [A-Za-z0-9._-] (not '.' or '..')",
             what, max);
    api_respond_error(x, ERR_BAD_NAME, msg);
    return false;
}

/* Parse a JSON object body with a size and depth limit. NULL after answering the error. */
static json_t *json_body(struct rctx *x, bool with_path);

json_t *api_json_body(struct rctx *x)
{
    return json_body(x, false);
}

json_t *api_json_body_at(struct rctx *x)
{
    return json_body(x, true);
}

/* with_path: a body that is not a JSON object is answered with a "path" member too (the stream
 * routes name the offending place of every malformed request): "line:column" of a syntax error,
 * "" (the whole document) for valid JSON that is not an object. */
static json_t *json_body(struct rctx *x, bool with_path)
{
    struct slice b = http_req_body(x->req);
    if (b.len > JSON_BODY_MAX) {
        api_respond_error(x, ERR_TOO_LARGE, "JSON request bodies are limited to 1 MiB");
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
        api_respond_error(x, ERR_INVALID_JSON, "JSON nesting is too deep");
        return NULL;
    }
    json_error_t jerr;
    json_t *j = json_loadb((const char *)b.ptr, b.len, JSON_REJECT_DUPLICATES, &jerr);
    if (!j || !json_is_object(j)) {
        if (with_path) {
            char msg[256], extra[64];
            if (j)
                snprintf(msg, sizeof msg, "Request body must be a JSON object");
            else
                snprintf(msg, sizeof msg, "Request body is not valid JSON at %d:%d: %s",
                         jerr.line, jerr.column, jerr.text);
            if (j)
                snprintf(extra, sizeof extra, "\"path\":\"\"");
            else
                snprintf(extra, sizeof extra, "\"path\":\"%d:%d\"", jerr.line, jerr.column);
            json_decref(j);
            api_respond_error_ex(x, ERR_INVALID_JSON, msg, extra, NULL);
            return NULL;
        }
        json_decref(j);
        api_respond_error(x, ERR_INVALID_JSON, "Request body must be a JSON object");
        return NULL;
    }
    return j;
}

bool api_json_str(json_t *o, const char *k, struct slice *out)
{
    json_t *v = json_object_get(o, k);
    if (!json_is_string(v))
        return false;
    *out = slice_of(json_string_value(v), json_string_length(v));
    return true;
}

bool api_json_u64(json_t *o, const char *k, uint64_t max, uint64_t *out)
{
    json_t *v = json_object_get(o, k);
    if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) > max)
        return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

void api_write_bytes(struct jw *w, const char *text_key, const char *b64_key, struct slice s,
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

/* ------------------------------------------------------------------------------------------ */
/* Writes                                                                                      */

void api_write_durability(struct jw *w, struct rctx *x, bool durable)
{
    jw_kbool(w, "sealed", !x->rocket || durable);
    jw_kbool(w, "durable", durable);
    jw_kstr(w, "mode", x->rocket ? "rocket" : "sealed");
    jw_kbool(w, "synced", durable);
    jw_kstr(w, "write_concern",
            durable ? ha_write_concern_name((enum write_concern)x->prop.concern_met) : "async");
}

void api_write_timing(struct jw *w, struct rctx *x)
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

bool api_answer_open(struct rctx *x, struct sbuf *b, struct jw *w)
{
    struct proposal *p = &x->prop;
    if (p->err) {
        if (p->err == ERR_CAS_MISMATCH) {
            char extra[96];
            snprintf(extra, sizeof extra, "\"expected\":%llu,\"current\":%llu",
                     (unsigned long long)x->commit_offset, (unsigned long long)p->res.current);
            api_respond_error_ex(x, ERR_CAS_MISMATCH, NULL, extra, NULL);
        } else {
            api_respond_error(x, p->err, NULL);
        }
        return false;
    }
    api_json_open_ok(b, w);
    return true;
}

static void answer_fields(struct rctx *x, int phase)
{
    (void)phase;
    struct sbuf b;
    struct jw w;
    if (!api_answer_open(x, &b, &w))
        return;
    x->fields(x, &w);
    jw_obj_close(&w);
    api_respond_json(x, 200, &b);
}

void api_start_write_fields(struct rctx *x, uint8_t type, api_fields_fn fields)
{
    x->fields = fields;
    api_start_write(x, type, answer_fields);
}

void api_json_write_fields(struct rctx *x, api_json_encode_fn encode, api_fields_fn fields)
{
    x->fields = fields;
    api_json_write(x, encode, answer_fields);
}

/* Worker: the core is done with the proposal (the request's last use by the core). */
static void prop_release(struct http_req *req)
{
    struct rctx *x = http_req_user(req);
    sbuf_free(&x->prop.payload);
    http_req_unhold(req);
    http_req_unref(req);
}

static void post_answer(struct http_req *req, void *arg)
{
    struct rctx *x = http_req_user(req);
    int phase = (int)(uintptr_t)arg;
    if (!http_req_responded(req))
        x->answer(x, phase);
    if (phase == PROPOSAL_DONE)
        prop_release(req);
}

/* Runs on the core thread. */
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

static int submit(struct rctx *x, uint8_t type)
{
    x->prop.type = type;
    x->prop.done = on_core_done;
    x->prop.ctx = x;
    http_req_ref(x->req);
    /* Not finished (for the connection's order of effect, server.h) until the core is done with
     * it, even when answered earlier (rocket, timeout_ms): a later read on the connection sees
     * its effect. */
    http_req_hold(x->req);
    int rc = core_propose(x->api->core, &x->prop);
    if (rc) {
        http_req_unhold(x->req);
        http_req_unref(x->req);
        sbuf_free(&x->prop.payload);
        return rc;
    }
    return 0;
}

/* A sealed write that outlives its timeout_ms: answer honestly that it is not yet durable. */
static void on_write_timeout(struct http_req *req, void *arg)
{
    (void)arg;
    struct rctx *x = http_req_user(req);
    if (http_req_responded(req))
        return;
    struct sbuf b;
    struct jw w;
    api_json_open_ok(&b, &w);
    if (atomic_load_explicit(&x->seq_known, memory_order_acquire)) {
        if (x->ndjson) {
            jw_ku64(&w, "first_offset", x->seq_offset);
            jw_ku64(&w, "count", x->seq_count);
        } else if (x->produce) {
            jw_ku64(&w, "offset", x->seq_offset);
        }
        if (x->produce || x->ndjson)
            jw_ku64(&w, "partition", x->seq_partition);
        jw_ku64(&w, "batch_id", x->seq_index);
    }
    jw_kbool(&w, "sealed", true);
    jw_kbool(&w, "durable", false);
    jw_kstr(&w, "mode", "sealed");
    jw_kbool(&w, "synced", false);
    jw_kbool(&w, "timeout", true);
    /* Without an idempotency key a produce cannot be a duplicate; with one, the outcome (fresh
     * or duplicate) is not known yet: retry with the same key to learn it. */
    if ((x->produce || x->ndjson) && !x->idem)
        jw_kbool(&w, "duplicate", false);
    jw_obj_close(&w);
    api_respond_json(x, 200, &b);
}

void api_start_write(struct rctx *x, uint8_t type, api_answer_fn answer)
{
    x->answer = answer;
    struct slice s;
    int rc = api_qparam(x, "write_concern", &s);
    if (rc < 0) {
        sbuf_free(&x->prop.payload);
        api_respond_error(x, rc, NULL);
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
            api_respond_error(x, ERR_BAD_PARAM, "write_concern must be 1, majority, all, async or a "
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
        api_respond_error(x, rc, NULL);
        return;
    }
    if (x->timeout_ms && !x->rocket && !cluster)
        http_req_timer_start(x->req, x->timeout_ms, on_write_timeout, NULL);
}

void api_json_write(struct rctx *x, api_json_encode_fn encode, api_answer_fn answer)
{
    json_t *j = api_json_body(x);
    if (!j)
        return;
    sbuf_init(&x->prop.payload, 0);
    int type = encode(x, j, &x->prop.payload);
    json_decref(j);
    if (type <= 0) {
        sbuf_free(&x->prop.payload);
        return;
    }
    api_start_write(x, (uint8_t)type, answer);
}

/* ------------------------------------------------------------------------------------------ */
/* Dispatch                                                                                    */

static void preflight(struct rctx *x)
{
    struct route_match m;
    const struct http_request *h = http_req_head(x->req);
    if (!router_path_exists(&x->api->router, h->path, &m)) {
        api_respond_error(x, ERR_NO_ROUTE, NULL);
        return;
    }
    char hdr[512];
    snprintf(hdr, sizeof hdr,
             "Access-Control-Allow-Methods: %s, OPTIONS\r\n"
             "Access-Control-Allow-Headers: Authorization, Content-Type, X-Requested-With\r\n"
             "Access-Control-Max-Age: 86400\r\n"
             "Allow: %s, OPTIONS\r\n",
             m.allow, m.allow);
    metrics_observe(x->api->metrics, x->metric, 204, clock_mono_ns() - http_req_recv_ns(x->req));
    http_respond(x->req, 204, NULL, hdr, "", 0);
}

/* Worker: the read barrier finished. */
static void post_read(struct http_req *req, void *arg)
{
    (void)arg;
    struct rctx *x = http_req_user(req);
    if (!http_req_responded(req)) {
        if (x->rb.err)
            api_respond_error(x, x->rb.err, NULL);
        else
            x->route->handler(x, &x->match);
    }
    http_req_unref(req);
}

/* Core thread. */
static void on_read_barrier(struct read_barrier *rb)
{
    struct rctx *x = rb->ctx;
    http_req_post(x->req, post_read, NULL);
}

/* Auth for the route's scope; false after answering 401/403/429. */
static bool authorize(struct rctx *x, int scope)
{
    struct api *a = x->api;
    if (scope == SCOPE_NONE)
        return true;
    uint32_t retry = 0;
    struct slice authz = http_req_head(x->req)->authorization;
    struct slice tok;
    /* A browser's EventSource cannot send headers: subscription streams also take the token as
     * ?access_token= (RFC 6750 section 2.3), only when no Authorization header is given. */
    if (authz.len == 0 && x->route && (x->route->flags & API_TOKEN_IN_QUERY) &&
        api_qparam(x, "access_token", &tok) == 1 && tok.len < 4096) {
        uint8_t *h = arena_alloc(http_req_arena(x->req), tok.len + 7);
        if (h) {
            memcpy(h, "Bearer ", 7);
            memcpy(h + 7, tok.ptr, tok.len);
            authz = slice_of(h, tok.len + 7);
        }
    }
    int rc = auth_check(a->cfg.auth, authz, scope, (uint64_t)clock_mono_ms(), &retry);
    if (rc == 0)
        return true;
    if (rc == ERR_UNAUTHORIZED)
        atomic_fetch_add_explicit(&a->unauthorized, 1, memory_order_relaxed);
    else if (rc == ERR_FORBIDDEN)
        atomic_fetch_add_explicit(&a->forbidden, 1, memory_order_relaxed);
    if (rc == ERR_RATE_LIMITED) {
        atomic_fetch_add_explicit(&a->rate_limited, 1, memory_order_relaxed);
        char hdr[64], extra[48];
        snprintf(hdr, sizeof hdr, "Retry-After: %u\r\n", retry);
        snprintf(extra, sizeof extra, "\"retry_after\":%u", retry);
        api_respond_error_ex(x, rc, NULL, extra, hdr);
    } else {
        api_respond_error(x, rc, NULL);
    }
    return false;
}

/* ?consistency=leader on a read: true when the read was handed to the core's ReadIndex barrier
 * (or answered with an error); false to serve it locally now. */
static bool read_barrier(struct rctx *x, const struct route_match *m)
{
    struct slice cons;
    int rc = api_qparam(x, "consistency", &cons);
    if (rc < 0) {
        api_respond_error(x, rc, NULL);
        return true;
    }
    if (rc == 0 || slice_eq_cstr(cons, "local"))
        return false;
    if (!slice_eq_cstr(cons, "leader") && !slice_eq_cstr(cons, "linearizable")) {
        api_respond_error(x, ERR_BAD_PARAM, "consistency must be 'local' or 'leader'");
        return true;
    }
    /* ReadIndex: serve once the leader confirmed it still leads and applied everything
     * committed before this read arrived. */
    x->match = *m;
    x->rb.done = on_read_barrier;
    x->rb.ctx = x;
    http_req_ref(x->req);
    rc = core_read_barrier(x->api->core, &x->rb);
    if (rc) {
        http_req_unref(x->req);
        api_respond_error(x, rc, NULL);
    }
    return true;
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
    x->metric = a->metric_other;
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
        api_respond_error_ex(x, ERR_METHOD, NULL, NULL, hdr);
        return;
    }
    if (rc) {
        api_respond_error(x, rc, rc == ERR_NO_ROUTE ? "No such route; see docs/HTTP_API.md" : NULL);
        return;
    }
    x->route = a->routes[m.route->id];
    x->metric = a->route_metric[m.route->id];
    if (!authorize(x, x->route->scope))
        return;
    if ((x->route->flags & API_READ) && read_barrier(x, &m))
        return;
    x->route->handler(x, &m);
}

/* ------------------------------------------------------------------------------------------ */
/* Life cycle                                                                                  */

/* Register every area's routes; routes with the same name share one metrics series. */
static int add_routes(struct api *a)
{
    router_init(&a->router);
    for (size_t k = 0; k < sizeof areas / sizeof areas[0]; k++) {
        for (const struct api_route *r = areas[k]; r->method; r++) {
            if (a->nroutes == ROUTER_MAX_ROUTES || !r->handler || !r->name)
                return ERR_INVALID;
            int rc = router_add(&a->router, r->method, r->pattern, a->nroutes);
            if (rc)
                return rc;
            int mid = 0;
            while (mid < a->nmetrics && strcmp(a->metric_names[mid], r->name) != 0)
                mid++;
            if (mid == a->nmetrics)
                a->metric_names[a->nmetrics++] = r->name;
            a->routes[a->nroutes] = r;
            a->route_metric[a->nroutes] = mid;
            a->nroutes++;
        }
    }
    a->metric_other = a->nmetrics; /* unmatched, preflight, errors before routing */
    a->metric_names[a->nmetrics++] = "other";
    return 0;
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
    if (!a->cfg.sub_buffer_bytes)
        a->cfg.sub_buffer_bytes = 256u << 10;
    if (!a->cfg.sub_streams_max)
        a->cfg.sub_streams_max = 10000;
    if (!a->cfg.sub_stall_ms)
        a->cfg.sub_stall_ms = 30000;
    pthread_mutex_init(&a->sub_mu, NULL);
    a->core = cfg->core;
    a->broker = core_broker(cfg->core);
    a->kv = core_kv(cfg->core);
    int rc = add_routes(a);
    if (rc) {
        LOG_E("api", "route table: %s", err_message(rc));
        xfree(a);
        return rc;
    }
    a->metrics = metrics_new(a->metric_names, a->nmetrics);
    if (!a->metrics) {
        xfree(a);
        return ERR_NOMEM;
    }
    rc = workq_new(a->cfg.stream_threads ? a->cfg.stream_threads : 1,
                   a->cfg.stream_queue_max ? a->cfg.stream_queue_max : 64, "ayder-stream",
                   &a->stream_pool);
    if (rc) {
        metrics_free(a->metrics);
        xfree(a);
        return rc;
    }
    /* One thread: scrapes take turns anyway (lag_mu); a few may wait, beyond that 503. */
    rc = workq_new(1, 16, "ayder-metrics", &a->metrics_pool);
    if (rc) {
        workq_free(a->stream_pool);
        metrics_free(a->metrics);
        xfree(a);
        return rc;
    }
    pthread_mutex_init(&a->lag_mu, NULL);
    hmap_init(&a->lag_memo);
    *out = a;
    return 0;
}

bool api_request_is_write(void *ctx, const struct http_request *h)
{
    struct api *a = ctx;
    int id = router_lookup(&a->router, h->method, h->path);
    return id >= 0 && (a->routes[id]->flags & API_WRITE);
}

void api_set_server(struct api *a, struct http_server *s) { atomic_store(&a->server, s); }

void api_end_subscriptions(struct api *a) { api_subscribe_quiesce(a); }

void api_quiesce(struct api *a)
{
    atomic_store(&a->stream_stopping, true);
    workq_stop(a->stream_pool);
    workq_stop(a->metrics_pool);
    api_subscribe_quiesce(a);
}

void api_free(struct api *a)
{
    if (!a)
        return;
    workq_free(a->stream_pool);
    workq_free(a->metrics_pool);
    metrics_free(a->metrics);
    api_metrics_free(a);
    pthread_mutex_destroy(&a->lag_mu);
    pthread_mutex_destroy(&a->sub_mu);
    xfree(a);
}
