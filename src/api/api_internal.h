/* api_internal.h -- what the API's area files share: the route table entry, the per-request
 * context, and the routing/response helpers of api.c. Not a public header: only src/api/ includes
 * it.
 *
 * Areas. The API is one file per area (ops.c, broker.c, kv.c, cluster.c, ...) over api.c. An area
 * contributes its routes as one table terminated by API_ROUTES_END:
 *
 *     const struct api_route api_stream_routes[] = {
 *         {"POST", "/broker/query", "query", SCOPE_CONSUME, API_READ, h_query},
 *         API_ROUTES_END,
 *     };
 *
 * declares it below (extern const struct api_route api_stream_routes[];) and adds one line to
 * `areas[]` in api.c. Nothing else changes: api.c registers every table with the router at
 * api_new, checks the route's scope, applies its flags (below), counts it in /metrics under its
 * name, and calls its handler. Routes are matched in the order of `areas[]`, then table order
 * (first match wins), so a pattern must not shadow another area's.
 *
 * Handlers run on an HTTP worker thread. A handler answers exactly once, either at once
 * (api_respond_json / api_respond_error) or later: a write builds x->prop.payload and calls
 * api_start_write() with an answer function that api.c calls on the worker when the core is done.
 *
 * Pipelining (see server.c "Order of effect"): a route flagged API_WRITE is one whose effect is
 * applied in submission order by the core (its handler ends in api_start_write / api_json_write
 * and reads no state the write path does not re-check); it may be dispatched while earlier writes
 * on the same connection are still pending. Every other route (reads, and anything that answers
 * from state) waits until every earlier request on its connection has finished. A new route that
 * is not a plain journaled write must NOT set API_WRITE.
 */
#ifndef AYDER_API_API_INTERNAL_H
#define AYDER_API_API_INTERNAL_H

#include "api/api.h"
#include "base/hmap.h"
#include "base/json.h"
#include "http/router.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>

struct rctx;

typedef void (*api_handler_fn)(struct rctx *x, const struct route_match *m);
/* Called on the worker with PROPOSAL_APPENDED (rocket writes only) and PROPOSAL_DONE. */
typedef void (*api_answer_fn)(struct rctx *x, int phase);
/* Writes the members of a success answer (api_start_write_fields). */
typedef void (*api_fields_fn)(struct rctx *x, struct jw *w);

/* Route flags. */
#define API_READ 1u  /* answers from state: honours ?consistency=leader (ReadIndex) */
#define API_WRITE 2u /* a journaled write: may pipeline behind earlier writes (see above) */
#define API_TOKEN_IN_QUERY 4u /* also accepts ?access_token= (EventSource sends no headers) */

struct api_route {
    const char *method;     /* "GET" also matches HEAD */
    const char *pattern;    /* router.h syntax; static */
    const char *name;       /* metrics label; routes with the same name share one series */
    int scope;              /* SCOPE_* (auth.h); SCOPE_NONE = public */
    unsigned flags;         /* API_READ, API_WRITE */
    api_handler_fn handler;
};

#define API_ROUTES_END {NULL, NULL, NULL, 0, 0, NULL}

/* The areas (one table each; registered in this order by api.c's areas[]). */
extern const struct api_route api_ops_routes[];
/* ops.c: frees what /metrics remembers between scrapes (api_free). */
void api_metrics_free(struct api *a);
extern const struct api_route api_broker_routes[];
extern const struct api_route api_kv_routes[];
extern const struct api_route api_cluster_routes[];
extern const struct api_route api_schema_routes[];
extern const struct api_route api_stream_routes[];
extern const struct api_route api_feed_routes[];
extern const struct api_route api_subscribe_routes[];
extern const struct api_route api_ui_routes[];

struct api {
    struct api_config cfg;
    struct core *core;
    struct broker *broker;
    struct kv *kv;
    struct router router;
    struct metrics *metrics;
    const struct api_route *routes[ROUTER_MAX_ROUTES]; /* by router id */
    int route_metric[ROUTER_MAX_ROUTES];               /* router id -> metrics id */
    const char *metric_names[ROUTER_MAX_ROUTES + 1];   /* metrics id -> label */
    int nroutes, nmetrics, metric_other;
    struct workq *stream_pool;          /* stream.c: queries and joins run here */
    _Atomic bool stream_stopping;       /* api_quiesce: jobs not yet started end with 503 */
    struct workq *metrics_pool;         /* ops.c: /metrics renders here, off the HTTP workers */
    _Atomic uint32_t follow_open;       /* stream_follow.c: continuous queries streaming now */
    struct http_server *_Atomic server; /* set after the workers started (api_set_server) */
    _Atomic uint64_t unauthorized, forbidden, rate_limited;
    /* ops.c: /metrics group lag in seconds (one record read per changed committed offset,
     * remembered here; lag_mu also makes concurrent scrapes take turns) */
    pthread_mutex_t lag_mu;
    struct hmap lag_memo;    /* offset key (topic\0group\0partition) -> struct lag_memo */
    uint64_t lag_gen;
    _Atomic uint64_t scrape_ns; /* how long the previous /metrics took to render */
    /* subscribe.c: the registry of open subscription streams (for shutdown) and their metrics */
    pthread_mutex_t sub_mu;
    struct sub *subs;
    bool sub_stopping;                  /* under sub_mu */
    _Atomic uint64_t sub_open, sub_total, sub_rejected, sub_events, sub_bytes, sub_slow,
        sub_client_gone, sub_commit_errors;
};

/* Per-request context, allocated in the request arena. */
struct rctx {
    struct api *api;
    struct http_req *req;
    const struct api_route *route; /* NULL before routing */
    int metric;                    /* metrics id */
    api_answer_fn answer;          /* of a write handed to the core */
    bool timing;
    bool rocket;
    bool idem;
    bool produce, ndjson;          /* what a timeout answer names (offset / first_offset) */
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
    /* CAS / commit echo ("expected" on a cas_mismatch) */
    uint64_t commit_offset;
    /* membership */
    char member[HA_NAME_MAX];
    int member_op;
    /* consistency=leader reads */
    struct read_barrier rb;
    struct route_match match;
    /* an area's own per-request state (stream.c: its job) */
    void *area;
    api_fields_fn fields; /* api_*_fields: the members of the success answer */
};

/* --- responses ----------------------------------------------------------------------------- */

/* Send body (application/json) and free it; a body that ran out of memory becomes a 503. */
void api_respond_json(struct rctx *x, int status, struct sbuf *body);
/* Send body with that Content-Type and free it (out of memory: a 503 error). */
void api_respond_ctype(struct rctx *x, int status, const char *ctype, struct sbuf *body);
/* The same with extra header lines ("Name: value\r\n"...; NULL = none). */
void api_respond_ctype_ex(struct rctx *x, int status, const char *ctype, const char *extra_headers,
                          struct sbuf *body);
/* Send len bytes of data (not freed: static or owned by the caller) with that Content-Type (NULL:
 * none) and extra header lines. */
void api_respond_bytes(struct rctx *x, int status, const char *ctype, const char *extra_headers,
                       const void *data, size_t len);
/* Send body as Prometheus text and free it. */
void api_respond_text(struct rctx *x, struct sbuf *body);
/* The seed's error shape. msg NULL = the error table's message. extra_json: more members
 * "k":v,... ; extra_headers: complete header lines (replaces the default Retry-After on 503). */
void api_respond_error_ex(struct rctx *x, int err, const char *msg, const char *extra_json,
                          const char *extra_headers);
void api_respond_error(struct rctx *x, int err, const char *msg);
/* Open a success object {"ok":true ... into b (caller closes it and calls api_respond_json). */
void api_json_open_ok(struct sbuf *b, struct jw *w);

/* --- parameters ---------------------------------------------------------------------------- */

/* Decoded query parameter: 1 present (out set, in the request arena), 0 absent, <0 error. */
int api_qparam(struct rctx *x, const char *name, struct slice *out);
/* u64 parameter in min..max: 1 present, 0 absent, -1 after answering the error. */
int api_qparam_u64(struct rctx *x, const char *name, uint64_t min, uint64_t max, uint64_t *out);
/* broker_valid_name(), else answer 400 invalid_name naming `what`. */
bool api_check_name(struct rctx *x, struct slice s, size_t max, const char *what);
/* The request body as a JSON object (bounded: 1 MiB, depth 16); NULL after answering the error.
 * The caller owns the reference. */
json_t *api_json_body(struct rctx *x);
/* The same; a body that is not a JSON object is answered with a "path" (line:column). */
json_t *api_json_body_at(struct rctx *x);
/* A JSON object member as a string slice (borrowed from j) / a u64 in 0..max. */
bool api_json_str(json_t *o, const char *k, struct slice *out);
bool api_json_u64(json_t *o, const char *k, uint64_t max, uint64_t *out);
/* "key"/"value" as a JSON string when valid UTF-8 (and !b64), else "<b64_key>": base64. */
void api_write_bytes(struct jw *w, const char *text_key, const char *b64_key, struct slice s,
                     bool b64);

/* --- writes -------------------------------------------------------------------------------- */

/* Hand x->prop.payload (built by the handler) to the core as an entry of `type`; `answer` is
 * called on the worker when the core is done (and at PROPOSAL_APPENDED for rocket writes).
 * Applies ?write_concern= and timeout_ms; answers the error itself if the write cannot start.
 * Frees the payload on failure. */
void api_start_write(struct rctx *x, uint8_t type, api_answer_fn answer);
/* Writes whose request body is a JSON object: parse it (bounded: 1 MiB, depth 16), let `encode`
 * validate it and build the payload; it returns the entry type, or 0 after answering the error. */
typedef int (*api_json_encode_fn)(struct rctx *x, json_t *j, struct sbuf *payload);
void api_json_write(struct rctx *x, api_json_encode_fn encode, api_answer_fn answer);
/* For answer functions: answer the proposal's error (CAS mismatch with expected/current) and
 * return false, or open {"ok":true into b/w and return true. */
bool api_answer_open(struct rctx *x, struct sbuf *b, struct jw *w);
/* The common answer of a write: {"ok":true + what `fields` writes + "}" once the core is done, or
 * the proposal's error. api_*_fields are api_start_write / api_json_write with that answer. */
void api_start_write_fields(struct rctx *x, uint8_t type, api_fields_fn fields);
void api_json_write_fields(struct rctx *x, api_json_encode_fn encode, api_fields_fn fields);
/* "sealed","durable","mode","synced","write_concern" members of a write answer. */
void api_write_durability(struct jw *w, struct rctx *x, bool durable);
/* ?timing=1 members (parse_us, queue_us, sync_wait_us, server_us). */
void api_write_timing(struct jw *w, struct rctx *x);

/* --- subscriptions (subscribe.c) ---------------------------------------------------------- */

/* The consume route asks for a stream (Accept: text/event-stream or ?stream=). */
bool api_subscribe_requested(struct rctx *x);
/* Serve the route (params topic, group) as an SSE/NDJSON subscription; partition >= 0: only
 * that one (the consume route), -1: ?partitions= (the subscribe route). */
void api_subscribe(struct rctx *x, const struct route_match *m, int32_t partition);
/* api_quiesce: end every open stream with a final "shutdown" event (waits up to 2 s). */
void api_subscribe_quiesce(struct api *a);
/* /metrics lines. */
void api_subscribe_metrics(struct api *a, struct sbuf *b);

#endif
