/* broker.c -- the broker area of the API: produce (single and NDJSON), consume (with long-poll),
 * commit, topics, groups, delete-before and retention (docs/HTTP_API.md).
 *
 * Writes build a journal entry (broker/entry.h) on the worker and go to the core through
 * api_start_write; their answer functions run on the worker once the core is done (or, for a
 * rocket produce, once the entry is appended). Reads (consume, topics, groups) are answered on the
 * worker from the partition logs and the broker's state, through the same read path as everything
 * else (no core-thread locks); an empty long-poll consume parks on the partition's waiter list.
 */
#include "api/api_internal.h"

#include "base/alloc.h"
#include "base/b64.h"
#include "base/clock.h"
#include "base/err.h"
#include "broker/entry.h"
#include "http/url.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
        api_respond_error(x, p->err, NULL);
        return;
    }
    bool ndjson = x->ndjson;
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
        api_respond_json(x, 200, &b);
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
    api_write_durability(&w, x, durable);
    jw_ki64(&w, "timestamp_ms", ts);
    /* Always present: clients test duplicate == false to tell a fresh write from a retry. */
    jw_kbool(&w, "duplicate", false);
    api_write_timing(&w, x);
    jw_obj_close(&w);
    api_respond_json(x, 200, &b);
}

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

static bool produce_params(struct rctx *x, struct slice *topic, struct slice *key, bool *has_key,
                           struct slice *idem)
{
    if (!api_check_name(x, *topic, BROKER_TOPIC_NAME_MAX, "Topic name"))
        return false;
    uint64_t v;
    int rc = api_qparam_u64(x, "partition", 0, BROKER_PARTITIONS_MAX - 1, &v);
    if (rc < 0)
        return false;
    x->prop.partition = rc ? (int32_t)v : -1;
    rc = api_qparam(x, "key", key);
    if (rc < 0) {
        api_respond_error(x, rc, NULL);
        return false;
    }
    *has_key = rc == 1;
    if (!*has_key)
        *key = (struct slice){NULL, 0};
    if (*has_key && key->len > ENTRY_KEY_MAX) {
        api_respond_error(x, ERR_TOO_LARGE, "Message keys are limited to 16 KiB");
        return false;
    }
    rc = api_qparam(x, "idempotency_key", idem);
    if (rc < 0) {
        api_respond_error(x, rc, NULL);
        return false;
    }
    if (rc == 0)
        *idem = (struct slice){NULL, 0};
    else if (idem->len == 0 || idem->len > ENTRY_IDEM_MAX) {
        api_respond_error(x, ERR_BAD_PARAM, "idempotency_key must be 1..512 bytes");
        return false;
    }
    rc = api_qparam_u64(x, "timeout_ms", 0, 600000, &x->timeout_ms);
    if (rc < 0)
        return false;
    struct slice s;
    rc = api_qparam(x, "mode", &s);
    if (rc == 1) {
        if (slice_eq_cstr(s, "rocket"))
            x->rocket = true;
        else if (!slice_eq_cstr(s, "sealed")) {
            api_respond_error(x, ERR_BAD_PARAM, "mode must be 'sealed' or 'rocket'");
            return false;
        }
    }
    rc = api_qparam(x, "timing", &s);
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
    x->produce = true;
    struct slice topic = route_param(m, "topic"), key, idem;
    bool has_key;
    if (!produce_params(x, &topic, &key, &has_key, &idem))
        return;
    struct slice body = http_req_body(x->req);
    if (body.len > a->cfg.value_max_bytes) {
        api_respond_error(x, ERR_TOO_LARGE, "A single message is limited to 16 MiB (use produce-ndjson for batches)");
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
    api_start_write(x, ENTRY_PRODUCE, answer_produce);
}

static void h_produce_ndjson(struct rctx *x, const struct route_match *m)
{
    struct api *a = x->api;
    x->ndjson = true;
    struct slice topic = route_param(m, "topic"), key, idem;
    bool has_key;
    if (!produce_params(x, &topic, &key, &has_key, &idem))
        return;
    struct slice body = http_req_body(x->req);
    struct plog_header hdrs[ENTRY_HEADERS_MAX];
    size_t nh = collect_headers(x, hdrs, ENTRY_HEADERS_MAX);
    /* ?encoding=b64: every line is the base64 of one binary value (Avro, Protobuf, ...) */
    bool b64 = false;
    struct slice enc;
    int prc = api_qparam(x, "encoding", &enc);
    if (prc < 0) {
        api_respond_error(x, prc, NULL);
        return;
    }
    if (prc == 1) {
        if (slice_eq_cstr(enc, "b64") || slice_eq_cstr(enc, "base64")) {
            b64 = true;
        } else if (!slice_eq_cstr(enc, "text")) {
            api_respond_error(x, ERR_BAD_PARAM, "encoding must be 'b64' or 'text'");
            return;
        }
    }
    struct sbuf raw;
    sbuf_init(&raw, 0);
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
            sbuf_free(&raw);
            char msg[128];
            snprintf(msg, sizeof msg, "NDJSON batches are limited to %u lines; nothing was written",
                     a->cfg.ndjson_lines_max);
            api_respond_error(x, ERR_TOO_LARGE, msg);
            return;
        }
        struct plog_record rec = {0};
        rec.has_key = has_key;
        rec.key = key;
        rec.value = slice_of(line, len);
        rec.headers = hdrs;
        rec.header_count = nh;
        json_t *str = NULL;
        if (b64) {
            sbuf_reset(&raw);
            if (b64_decode(&raw, line, len) || !sbuf_ok(&raw)) {
                sbuf_free(pl);
                sbuf_free(&raw);
                char msg[128];
                snprintf(msg, sizeof msg, "Line %u is not valid base64; nothing was written",
                         count + 1);
                api_respond_error(x, ERR_INVALID, msg);
                return;
            }
            rec.value = slice_of(raw.data, raw.len);
        } else if (line[0] == '"' && line[len - 1] == '"' && len >= 2) {
            /* a JSON string line is stored unwrapped */
            str = json_loadb((const char *)line, len, JSON_DECODE_ANY, NULL);
            if (json_is_string(str))
                rec.value = slice_of(json_string_value(str), json_string_length(str));
        }
        entry_produce_add(pl, &rec);
        json_decref(str);
        count++;
    }
    sbuf_free(&raw);
    if (count == 0) {
        sbuf_free(pl);
        api_respond_error(x, ERR_INVALID, "NDJSON body has no lines");
        return;
    }
    entry_produce_finish(pl, count);
    if (idem.len)
        pl->data[PRODUCE_OFF_FLAGS] = PRODUCE_HAS_IDEM;
    x->prop.key = key;
    x->prop.has_key = has_key;
    x->prop.record_count = count;
    api_start_write(x, ENTRY_PRODUCE, answer_produce);
}

/* ------------------------------------------------------------------------------------------ */
/* Consume                                                                                     */

struct consume_out {
    struct rctx *x;
    struct jw *w;
};

static int consume_visit(void *ctx, const struct plog_record *r)
{
    struct consume_out *o = ctx;
    struct jw *w = o->w;
    bool b64 = o->x->b64;
    jw_obj_open(w);
    jw_ku64(w, "offset", r->offset);
    jw_ku64(w, "partition", o->x->partition);
    jw_ki64(w, "timestamp_ms", r->timestamp_ms);
    api_write_bytes(w, "value", "value_b64", r->value, b64);
    if (r->has_key)
        api_write_bytes(w, "key", "key_b64", r->key, b64);
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
        api_respond_error(x, rc, rc == ERR_CORRUPT ? "A stored record failed its checksum" : NULL);
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
    api_respond_json(x, 200, &b);
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
    if (!api_check_name(x, x->topic, BROKER_TOPIC_NAME_MAX, "Topic name") ||
        !api_check_name(x, x->group, BROKER_GROUP_NAME_MAX, "Group name"))
        return;
    uint64_t v;
    if (url_parse_u64(ps, &v) || v >= BROKER_PARTITIONS_MAX) {
        api_respond_error(x, ERR_BAD_PARTITION, "Partition must be an integer in 0..1023");
        return;
    }
    x->partition = (uint32_t)v;
    if (api_subscribe_requested(x)) { /* SSE / NDJSON stream of this partition: subscribe.c */
        api_subscribe(x, m, (int32_t)v);
        return;
    }
    uint32_t nparts;
    if (broker_partitions(a->broker, x->topic, &nparts)) {
        api_respond_error(x, ERR_NO_TOPIC, NULL);
        return;
    }
    if (x->partition >= nparts) {
        char msg[96];
        snprintf(msg, sizeof msg, "Topic has %u partitions (0..%u)", nparts, nparts - 1);
        api_respond_error(x, ERR_BAD_PARTITION, msg);
        return;
    }
    int rc = api_qparam_u64(x, "offset", 0, INT64_MAX, &x->offset);
    if (rc < 0)
        return;
    x->offset_given = rc == 1;
    uint64_t limit = 100;
    if (api_qparam_u64(x, "limit", 1, 1000, &limit) < 0)
        return;
    x->limit = (uint32_t)limit;
    if (api_qparam_u64(x, "wait_ms", 0, a->cfg.long_poll_max_ms, &x->wait_ms) < 0)
        return;
    struct slice enc;
    rc = api_qparam(x, "encoding", &enc);
    if (rc == 1) {
        if (slice_eq_cstr(enc, "b64") || slice_eq_cstr(enc, "base64"))
            x->b64 = true;
        else if (!slice_eq_cstr(enc, "text") && !slice_eq_cstr(enc, "json")) {
            api_respond_error(x, ERR_BAD_PARAM, "encoding must be 'b64' (or omitted)");
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

static void answer_commit_fields(struct rctx *x, struct jw *w)
{
    if (x->prop.res.ignored) {
        jw_kbool(w, "ignored", true);
        jw_ku64(w, "committed_offset", x->prop.res.committed);
    }
}

static void answer_topic_create_fields(struct rctx *x, struct jw *w)
{
    const struct proposal *p = &x->prop;
    struct entry_topic e;
    entry_topic_decode(slice_of(p->payload.data, p->payload.len), &e);
    jw_key(w, "topic");
    jw_strn(w, e.name.ptr, e.name.len);
    jw_ku64(w, "partitions", p->res.partitions ? p->res.partitions : e.partitions);
    jw_kbool(w, "created", p->res.created);
}

static void answer_topic_delete_fields(struct rctx *x, struct jw *w)
{
    (void)x;
    jw_kbool(w, "deleted", true);
}

static void answer_delete_before_fields(struct rctx *x, struct jw *w)
{
    jw_ku64(w, "deleted_count", x->prop.res.deleted_count);
    jw_ku64(w, "freed_bytes", x->prop.res.freed_bytes);
}

static void answer_retention_fields(struct rctx *x, struct jw *w)
{
    struct entry_retention e;
    entry_retention_decode(slice_of(x->prop.payload.data, x->prop.payload.len), &e);
    jw_key(w, "topic");
    jw_strn(w, e.topic.ptr, e.topic.len);
    if (e.partition != RETENTION_ALL_PARTITIONS)
        jw_ku64(w, "partition", e.partition);
    if (e.ttl_ms != RETENTION_UNSET)
        jw_ki64(w, "ttl_ms", e.ttl_ms);
    if (e.max_bytes != RETENTION_UNSET)
        jw_ki64(w, "max_bytes", e.max_bytes);
}

static int enc_commit(struct rctx *x, json_t *j, struct sbuf *out)
{
    struct entry_commit e = {0};
    uint64_t part = 0;
    if (!api_json_str(j, "topic", &e.topic) || !api_json_str(j, "group", &e.group) ||
        !api_json_u64(j, "partition", BROKER_PARTITIONS_MAX - 1, &part) ||
        !api_json_u64(j, "offset", INT64_MAX, &e.offset)) {
        api_respond_error(x, ERR_MISSING_FIELDS, "Required fields: topic (string), group (string), "
                                             "partition (integer 0..1023), offset (integer >= 0)");
        return 0;
    }
    if (!api_check_name(x, e.topic, BROKER_TOPIC_NAME_MAX, "Topic name") ||
        !api_check_name(x, e.group, BROKER_GROUP_NAME_MAX, "Group name"))
        return 0;
    e.partition = (uint32_t)part;
    e.ts_ms = clock_wall_ms();
    entry_commit_encode(out, &e);
    return ENTRY_COMMIT;
}

static int enc_topic_create(struct rctx *x, json_t *j, struct sbuf *out)
{
    struct entry_topic e = {0};
    uint64_t parts = x->api->cfg.default_partitions;
    if (!api_json_str(j, "name", &e.name)) {
        api_respond_error(x, ERR_MISSING_FIELDS, "Required field: name (string)");
        return 0;
    }
    if ((json_object_get(j, "partitions") &&
         !api_json_u64(j, "partitions", BROKER_PARTITIONS_MAX, &parts)) || parts == 0) {
        api_respond_error(x, ERR_BAD_PARAM, "partitions must be an integer in 1..1024");
        return 0;
    }
    if (!api_check_name(x, e.name, BROKER_TOPIC_NAME_MAX, "Topic name"))
        return 0;
    e.partitions = (uint32_t)parts;
    e.ts_ms = clock_wall_ms();
    entry_topic_encode(out, &e);
    return ENTRY_TOPIC_CREATE;
}

static int enc_delete_before(struct rctx *x, json_t *j, struct sbuf *out)
{
    struct entry_delete_before e = {0};
    uint64_t part;
    if (!api_json_str(j, "topic", &e.topic) ||
        !api_json_u64(j, "partition", BROKER_PARTITIONS_MAX - 1, &part) ||
        !api_json_u64(j, "before_offset", INT64_MAX, &e.before)) {
        api_respond_error(x, ERR_MISSING_FIELDS, "Required fields: topic (string), partition (integer), "
                                             "before_offset (integer >= 0)");
        return 0;
    }
    if (!api_check_name(x, e.topic, BROKER_TOPIC_NAME_MAX, "Topic name"))
        return 0;
    e.partition = (uint32_t)part;
    e.ts_ms = clock_wall_ms();
    entry_delete_before_encode(out, &e);
    return ENTRY_DELETE_BEFORE;
}

static int enc_retention(struct rctx *x, json_t *j, struct sbuf *out)
{
    struct entry_retention e = {0};
    e.ttl_ms = e.max_bytes = RETENTION_UNSET;
    e.partition = RETENTION_ALL_PARTITIONS;
    if (!json_object_get(j, "topic")) {
        e.topic = SLICE_LIT("*");
    } else if (!api_json_str(j, "topic", &e.topic)) {
        api_respond_error(x, ERR_MISSING_FIELDS, "topic must be a string (a topic name or \"*\")");
        return 0;
    }
    bool all = slice_eq_cstr(e.topic, "*");
    if (!all && !api_check_name(x, e.topic, BROKER_TOPIC_NAME_MAX, "Topic name"))
        return 0;
    uint64_t v;
    bool bad = false;
    if (json_object_get(j, "partition")) {
        if (all || !api_json_u64(j, "partition", BROKER_PARTITIONS_MAX - 1, &v))
            bad = true;
        else
            e.partition = (uint32_t)v;
    }
    if (json_object_get(j, "ttl_ms")) {
        if (!api_json_u64(j, "ttl_ms", INT64_MAX, &v))
            bad = true;
        else
            e.ttl_ms = (int64_t)v;
    }
    if (json_object_get(j, "max_bytes")) {
        if (!api_json_u64(j, "max_bytes", INT64_MAX, &v))
            bad = true;
        else
            e.max_bytes = (int64_t)v;
    }
    if (bad || (e.ttl_ms == RETENTION_UNSET && e.max_bytes == RETENTION_UNSET)) {
        api_respond_error(x, ERR_BAD_PARAM, "Give ttl_ms and/or max_bytes (integers >= 0; 0 removes the "
                                        "limit); partition (integer) only with a named topic");
        return 0;
    }
    e.ts_ms = clock_wall_ms();
    entry_retention_encode(out, &e);
    return ENTRY_RETENTION;
}

static void h_topic_delete(struct rctx *x, const struct route_match *m)
{
    struct entry_topic e = {clock_wall_ms(), route_param(m, "topic"), 0};
    if (!api_check_name(x, e.name, BROKER_TOPIC_NAME_MAX, "Topic name"))
        return;
    sbuf_init(&x->prop.payload, 0);
    entry_topic_encode(&x->prop.payload, &e);
    api_start_write_fields(x, ENTRY_TOPIC_DELETE, answer_topic_delete_fields);
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

static void h_topics_list(struct rctx *x, const struct route_match *m)
{
    (void)m;
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
    api_respond_json(x, 200, &b);
}

/* The partitions' stats are copied out under the broker's metadata lock, then written with the
 * retention policy in effect for each (broker_retention_get takes that lock itself). */
struct describe_ctx {
    struct plog_stats st[BROKER_PARTITIONS_MAX];
    uint32_t n;
};

static void describe_fn(void *ctx, uint32_t partition, const struct plog_stats *st)
{
    struct describe_ctx *d = ctx;
    if (partition < BROKER_PARTITIONS_MAX && partition == d->n)
        d->st[d->n++] = *st;
}

static void h_topic_get(struct rctx *x, const struct route_match *m)
{
    struct slice topic = route_param(m, "topic");
    if (!api_check_name(x, topic, BROKER_TOPIC_NAME_MAX, "Topic name"))
        return;
    struct describe_ctx *d = arena_alloc(http_req_arena(x->req), sizeof *d);
    if (!d) {
        api_respond_error(x, ERR_NOMEM, NULL);
        return;
    }
    d->n = 0;
    int rc = broker_describe(x->api->broker, topic, describe_fn, d);
    if (rc) {
        api_respond_error(x, rc, NULL);
        return;
    }
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
    for (uint32_t i = 0; i < d->n; i++) {
        const struct plog_stats *st = &d->st[i];
        int64_t ttl = 0, mb = 0;
        if (broker_retention_get(x->api->broker, topic, i, &ttl, &mb))
            ttl = mb = 0; /* deleted meanwhile: the stats above are still what was there */
        jw_obj_open(&w);
        jw_ku64(&w, "partition", i);
        jw_ku64(&w, "earliest_offset", st->start_offset);
        jw_ku64(&w, "latest_offset", st->high_watermark);
        jw_ku64(&w, "records", st->high_watermark - st->start_offset);
        jw_ku64(&w, "bytes", st->bytes);
        jw_ku64(&w, "segments", st->segments);
        jw_ku64(&w, "retention_ttl_ms", (uint64_t)ttl);
        jw_ku64(&w, "retention_max_bytes", (uint64_t)mb);
        jw_obj_close(&w);
    }
    jw_arr_close(&w);
    jw_obj_close(&w);
    api_respond_json(x, 200, &b);
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
    bool by_topic = topic.len > 0; /* /broker/groups/:group/:topic */
    if (!api_check_name(x, group, BROKER_GROUP_NAME_MAX, "Group name"))
        return;
    if (by_topic) {
        uint32_t n;
        if (!api_check_name(x, topic, BROKER_TOPIC_NAME_MAX, "Topic name"))
            return;
        if (broker_partitions(x->api->broker, topic, &n)) {
            api_respond_error(x, ERR_NO_TOPIC, NULL);
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
    if (by_topic) {
        jw_key(&w, "topic");
        jw_strn(&w, topic.ptr, topic.len);
    }
    jw_key(&w, by_topic ? "partitions" : "offsets");
    jw_arr_open(&w);
    struct group_ctx g = {&w, by_topic, 0};
    broker_group(x->api->broker, group, by_topic ? topic : (struct slice){NULL, 0},
                 group_fn, &g);
    jw_arr_close(&w);
    jw_obj_close(&w);
    api_respond_json(x, 200, &b);
}

/* GET /broker/groups: every group that has committed an offset, with how many topics and
 * partitions it committed, its total lag, and each committed offset with its lag (high watermark -
 * max(committed, start offset), as ayder_group_lag_records). The entries are copied out of the
 * broker first (its locks are held only for that copy), then sorted by (group, topic, partition)
 * and folded. Bounded: past GROUPS_LIST_MAX offsets the answer says "truncated":true. */
#define GROUPS_LIST_MAX 100000

struct glist_ent {
    char *group, *topic;
    uint32_t partition;
    uint64_t committed, start, hw, lag;
};
struct glist {
    struct glist_ent *e;
    size_t n, cap, seen;
    bool oom;
};

static void glist_fn(void *ctx, struct slice topic, struct slice group, uint32_t partition,
                     uint64_t committed, uint64_t start, uint64_t hw)
{
    struct glist *g = ctx;
    if (g->oom || g->seen++ >= GROUPS_LIST_MAX)
        return;
    if (g->n == g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 64;
        struct glist_ent *e = xrealloc(g->e, cap * sizeof *e);
        if (!e) {
            g->oom = true;
            return;
        }
        g->e = e;
        g->cap = cap;
    }
    uint64_t from = committed > start ? committed : start;
    struct glist_ent *e = &g->e[g->n];
    e->group = xstrndup((const char *)group.ptr, group.len);
    e->topic = xstrndup((const char *)topic.ptr, topic.len);
    e->partition = partition;
    e->committed = committed;
    e->start = start;
    e->hw = hw;
    e->lag = hw > from ? hw - from : 0;
    if (!e->group || !e->topic) {
        xfree(e->group);
        xfree(e->topic);
        g->oom = true;
        return;
    }
    g->n++;
}

static int glist_cmp(const void *a, const void *b)
{
    const struct glist_ent *x = a, *y = b;
    int c = strcmp(x->group, y->group);
    if (!c)
        c = strcmp(x->topic, y->topic);
    return c ? c : (x->partition > y->partition) - (x->partition < y->partition);
}

static void h_groups_list(struct rctx *x, const struct route_match *m)
{
    (void)m;
    struct glist g = {0};
    int rc = broker_each_committed(x->api->broker, glist_fn, &g);
    if (rc || g.oom) {
        for (size_t i = 0; i < g.n; i++) {
            xfree(g.e[i].group);
            xfree(g.e[i].topic);
        }
        xfree(g.e);
        api_respond_error(x, rc ? rc : ERR_NOMEM, NULL);
        return;
    }
    if (g.n)
        qsort(g.e, g.n, sizeof *g.e, glist_cmp);
    struct sbuf b;
    struct jw w;
    api_json_open_ok(&b, &w);
    jw_key(&w, "groups");
    jw_arr_open(&w);
    for (size_t i = 0; i < g.n;) {
        size_t j = i, topics = 0;
        uint64_t lag = 0;
        for (; j < g.n && strcmp(g.e[j].group, g.e[i].group) == 0; j++) {
            if (j == i || strcmp(g.e[j].topic, g.e[j - 1].topic) != 0)
                topics++;
            lag += g.e[j].lag;
        }
        jw_obj_open(&w);
        jw_key(&w, "group");
        jw_strn(&w, (const uint8_t *)g.e[i].group, strlen(g.e[i].group));
        jw_ku64(&w, "topics", topics);
        jw_ku64(&w, "partitions", j - i);
        jw_ku64(&w, "lag", lag);
        jw_key(&w, "offsets");
        jw_arr_open(&w);
        for (size_t k = i; k < j; k++) {
            const struct glist_ent *e = &g.e[k];
            jw_obj_open(&w);
            jw_key(&w, "topic");
            jw_strn(&w, (const uint8_t *)e->topic, strlen(e->topic));
            jw_ku64(&w, "partition", e->partition);
            jw_ku64(&w, "committed_offset", e->committed);
            jw_ku64(&w, "start_offset", e->start);
            jw_ku64(&w, "latest_offset", e->hw);
            jw_ku64(&w, "lag", e->lag);
            jw_obj_close(&w);
        }
        jw_arr_close(&w);
        jw_obj_close(&w);
        i = j;
    }
    jw_arr_close(&w);
    jw_kbool(&w, "truncated", g.seen > GROUPS_LIST_MAX);
    jw_obj_close(&w);
    for (size_t i = 0; i < g.n; i++) {
        xfree(g.e[i].group);
        xfree(g.e[i].topic);
    }
    xfree(g.e);
    api_respond_json(x, 200, &b);
}

static void h_commit(struct rctx *x, const struct route_match *m)
{
    (void)m;
    api_json_write_fields(x, enc_commit, answer_commit_fields);
}

static void h_topic_create(struct rctx *x, const struct route_match *m)
{
    (void)m;
    api_json_write_fields(x, enc_topic_create, answer_topic_create_fields);
}

static void h_delete_before(struct rctx *x, const struct route_match *m)
{
    (void)m;
    api_json_write_fields(x, enc_delete_before, answer_delete_before_fields);
}

static void h_retention(struct rctx *x, const struct route_match *m)
{
    (void)m;
    api_json_write_fields(x, enc_retention, answer_retention_fields);
}

/* Produce and consume first: the router tries routes in order. */
const struct api_route api_broker_routes[] = {
    {"POST", "/broker/topics/:topic/produce", "produce", SCOPE_PRODUCE, API_WRITE, h_produce},
    {"GET", "/broker/consume/:topic/:group/:partition", "consume", SCOPE_CONSUME, API_READ | API_TOKEN_IN_QUERY, h_consume},
    {"POST", "/broker/topics/:topic/produce-ndjson", "produce_ndjson", SCOPE_PRODUCE, API_WRITE, h_produce_ndjson},
    {"POST", "/broker/commit", "commit", SCOPE_CONSUME, API_WRITE, h_commit},
    {"POST", "/broker/topics", "topics_create", SCOPE_ADMIN, API_WRITE, h_topic_create},
    {"GET", "/broker/topics", "topics_list", SCOPE_CONSUME, API_READ, h_topics_list},
    {"GET", "/broker/topics/:topic", "topic_get", SCOPE_CONSUME, API_READ, h_topic_get},
    {"DELETE", "/broker/topics/:topic", "topic_delete", SCOPE_ADMIN, API_WRITE, h_topic_delete},
    {"GET", "/broker/groups", "groups_list", SCOPE_CONSUME, API_READ, h_groups_list},
    {"GET", "/broker/groups/:group", "group", SCOPE_CONSUME, API_READ, h_group},
    {"GET", "/broker/groups/:group/:topic", "group_topic", SCOPE_CONSUME, API_READ, h_group},
    {"POST", "/broker/delete-before", "delete_before", SCOPE_ADMIN, API_WRITE, h_delete_before},
    {"POST", "/broker/retention", "retention", SCOPE_ADMIN, API_WRITE, h_retention},
    API_ROUTES_END,
};
