/* feed.c -- the Feed API v2 area (vippsas/feedapi-spec): a topic served as a partitioned feed that
 * consumers pull with their own cursors (docs/HTTP_API.md "Feed API").
 *
 *   GET /feeds/{topic}          discovery: {"token","partitions":[{"id":"0"},…],"exactlyOnce"}
 *   GET /feeds/{topic}/events   ?token=&partition=&cursor=[&pagesizehint=]
 *                               [&event-types=a;b | &skip-event-types=a;b][&wait_ms=]
 *                               → NDJSON: {"data":…} lines, then exactly one {"cursor":…} line
 *
 * Both are reads (API_READ, never API_WRITE: see "Pipelining" in api_internal.h): they answer
 * from the partition logs through broker_read, the lock-free path consume uses, so a follower
 * serves them from its committed, applied state, and say which node answered (X-Ayder-Node).
 *
 * Encodings (all strings are opaque to consumers; the grammar is what we accept back):
 *   token   "<topic id>p<partitions>", e.g. "12p8". The topic id is the journal index of the
 *           entry that created the topic (broker_topic_info): the same on every node and across
 *           restarts, new when the name is deleted and re-created. The partition count is in it
 *           so that any future change of the count changes the token too.
 *   cursor  "<topic id>o<next offset>", e.g. "12o340": the next offset to read. "_first" is the
 *           retention floor, "_last" the high watermark. Decimal without leading zeros, exact.
 *   event type  the record header "event-type" (produce: X-Ayder-Header-Event-Type), compared
 *           case-insensitively; a record without it has the empty type.
 *   data    a record whose value is a JSON object is embedded as that object (its bytes, with
 *           raw CR/LF between tokens turned into spaces so it stays on one line); any other value
 *           that is valid UTF-8 is a JSON string of its text; anything else is the base64 string
 *           of its bytes, and that line carries "encoding":"base64".
 *
 * Long-poll (wait_ms, an extension the spec allows: clients ignore what they do not know):
 *
 *   read ──events──────────────────────────────────▶ answer
 *     │ none (and time left)
 *     ▼
 *   broker_wait(cursor) ──ERR_AGAIN (data raced in)──▶ read again
 *     │ parked (one request reference held)
 *     ├── wake (core thread → http_req_post) ──▶ read: events → answer; only filtered-out
 *     │                                          records → re-park at the new cursor
 *     └── timer (deadline) ── broker_unwait ──▶ read once more → answer
 *
 * Invariants:
 *  1. Every answer to /events that is a 200 ends with exactly one cursor line, also when it
 *     carries no event (the spec's rule), and that cursor is >= the cursor asked for.
 *  2. The cursor never passes a record that was not either sent or filtered out: it is the offset
 *     after the last record the read visited (plog_read's next_offset).
 *  3. The token and the topic id in a cursor are checked after the read as well as before, so a
 *     topic deleted and re-created during a read never answers with the new topic's records under
 *     the old token (409 instead).
 *  4. A parked request holds exactly one reference; whoever answers it after parking drops it.
 *  5. Work per response is bounded: FEED_PAGE_MAX events, FEED_SCAN_MAX records visited per read
 *     and FEED_READS_MAX reads per run, and the consume byte budget.
 */
#include "api/api_internal.h"

#include "base/assert.h"
#include "base/clock.h"
#include "base/err.h"
#include "broker/broker.h"
#include "http/url.h"

#include <stdio.h>
#include <string.h>

#define FEED_PAGE_DEFAULT 100u
#define FEED_PAGE_MAX 1000u      /* pagesizehint is clamped to 1..FEED_PAGE_MAX */
#define FEED_SCAN_MAX 10000u     /* records visited per read when a type filter drops records */
#define FEED_READS_MAX 8u        /* reads per run before answering with the cursor alone */
#define FEED_TYPES_MAX 64u       /* types per filter */
#define FEED_TYPE_LEN_MAX 255u
#define FEED_PARTITION_ID_MAX 32767u /* the spec's id range; our topics have at most 1024 */
#define FEED_TYPE_HEADER "event-type"

struct feed_req {
    uint64_t topic_id;
    uint32_t nparts;
    uint64_t cursor;          /* next offset to read */
    uint64_t skipped;         /* records below the retention floor jumped over */
    uint32_t page;            /* events per response */
    bool skip;                /* the filter excludes (skip-event-types) instead of including */
    size_t ntypes;
    struct slice types[FEED_TYPES_MAX];
    uint64_t deadline_ms;     /* monotonic; 0 = no long-poll */
    bool parked;              /* holds a request reference (invariant 4) */
    bool final;               /* the deadline passed: answer whatever there is */
};

/* ------------------------------------------------------------------------------------------ */
/* Encodings                                                                                   */

static void token_fmt(char *out, size_t n, uint64_t id, uint32_t nparts)
{
    snprintf(out, n, "%llup%u", (unsigned long long)id, nparts);
}

static void cursor_fmt(char *out, size_t n, uint64_t id, uint64_t offset)
{
    snprintf(out, n, "%lluo%llu", (unsigned long long)id, (unsigned long long)offset);
}

/* Decimal digits without a leading zero (a lone "0" is fine), value <= max. */
static bool parse_exact_u64(struct slice s, uint64_t max, uint64_t *out)
{
    if (s.len == 0 || s.len > 20 || (s.len > 1 && s.ptr[0] == '0'))
        return false;
    uint64_t v;
    if (url_parse_u64(s, &v) || v > max)
        return false;
    *out = v;
    return true;
}

/* "<id>o<offset>": split at the one 'o'. */
static bool cursor_parse(struct slice s, uint64_t *id, uint64_t *offset)
{
    const uint8_t *o = memchr(s.ptr, 'o', s.len);
    if (!o)
        return false;
    size_t il = (size_t)(o - s.ptr);
    return parse_exact_u64(slice_of(s.ptr, il), INT64_MAX, id) &&
           parse_exact_u64(slice_of(o + 1, s.len - il - 1), INT64_MAX, offset);
}

static bool eq_nocase(struct slice a, struct slice b)
{
    if (a.len != b.len)
        return false;
    for (size_t i = 0; i < a.len; i++) {
        uint8_t x = a.ptr[i], y = b.ptr[i];
        if (x >= 'A' && x <= 'Z')
            x = (uint8_t)(x + 32);
        if (y >= 'A' && y <= 'Z')
            y = (uint8_t)(y + 32);
        if (x != y)
            return false;
    }
    return true;
}

static struct slice record_type(const struct plog_record *rec)
{
    for (size_t i = 0; i < rec->header_count; i++)
        if (slice_eq_nocase(rec->headers[i].key, FEED_TYPE_HEADER))
            return rec->headers[i].value;
    return (struct slice){NULL, 0};
}

static bool type_wanted(const struct feed_req *f, const struct plog_record *rec)
{
    if (f->ntypes == 0)
        return true;
    struct slice t = record_type(rec);
    bool listed = false;
    for (size_t i = 0; i < f->ntypes && !listed; i++)
        listed = eq_nocase(t, f->types[i]);
    return f->skip ? !listed : listed;
}

static bool is_json_object(struct slice v)
{
    size_t i = 0;
    while (i < v.len && (v.ptr[i] == ' ' || v.ptr[i] == '\t' || v.ptr[i] == '\r' || v.ptr[i] == '\n'))
        i++;
    if (i == v.len || v.ptr[i] != '{')
        return false;
    json_error_t e;
    json_t *j = json_loadb((const char *)v.ptr, v.len, JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &e);
    bool obj = j && json_is_object(j);
    json_decref(j);
    return obj;
}

/* One event line: {"data":…}\n (see the header comment for the rule). */
static void write_event(struct sbuf *b, struct slice v)
{
    sbuf_puts(b, "{\"data\":");
    if (is_json_object(v)) {
        /* Valid JSON has no raw CR/LF inside strings, so these are whitespace between tokens. */
        size_t at = b->len;
        sbuf_append(b, v.ptr, v.len);
        if (sbuf_ok(b))
            for (size_t i = at; i < b->len; i++)
                if (b->data[i] == '\n' || b->data[i] == '\r')
                    b->data[i] = ' ';
        sbuf_puts(b, "}\n");
        return;
    }
    struct jw w;
    jw_init(&w, b);
    if (utf8_valid(v.ptr, v.len)) {
        jw_strn(&w, v.ptr, v.len);
        sbuf_puts(b, "}\n");
    } else {
        jw_b64(&w, v.ptr, v.len);
        sbuf_puts(b, ",\"encoding\":\"base64\"}\n");
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Answers                                                                                     */

/* "X-Ayder-Node: n1\r\nX-Ayder-Role: follower\r\n" (+ what the caller adds). */
static void node_headers(struct rctx *x, struct sbuf *h)
{
    struct core_ha_status st;
    core_ha_status(x->api->core, &st);
    sbuf_puts(h, "X-Ayder-Node: ");
    sbuf_puts(h, st.node_id);
    sbuf_puts(h, "\r\nX-Ayder-Role: ");
    sbuf_puts(h, st.role);
    sbuf_puts(h, "\r\n");
}

static void respond_with_node(struct rctx *x, const char *ctype, const char *more,
                              struct sbuf *body)
{
    struct sbuf h;
    sbuf_init(&h, 0);
    node_headers(x, &h);
    if (more)
        sbuf_puts(&h, more);
    sbuf_putc(&h, 0);
    api_respond_ctype_ex(x, 200, ctype, sbuf_ok(&h) ? (const char *)h.data : NULL, body);
    sbuf_free(&h);
}

/* The topic's current identity is still the one the request was checked against. 0, or the
 * answer was sent (404 gone / 409 re-created). */
static int recheck_topic(struct rctx *x, struct feed_req *f)
{
    uint64_t id;
    uint32_t n;
    if (broker_topic_info(x->api->broker, x->topic, &id, &n)) {
        api_respond_error(x, ERR_NO_TOPIC, NULL);
        return -1;
    }
    if (id != f->topic_id || n != f->nparts) {
        api_respond_error(x, ERR_STALE_TOKEN, NULL);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Events                                                                                      */

struct page_ctx {
    struct feed_req *f;
    struct sbuf *out;
    uint32_t events;
};

static int page_visit(void *ctx, const struct plog_record *rec)
{
    struct page_ctx *p = ctx;
    if (!type_wanted(p->f, rec))
        return 0;
    write_event(p->out, rec->value);
    return ++p->events >= p->f->page;
}

static void feed_timeout(struct http_req *req, void *arg);
static void feed_wake(struct broker_waiter *w);

/* Read from f->cursor and answer, or park (long-poll). Returns true when parked. `races`
 * counts data that arrived between a read and the wait (each time: read again, a few times). */
static bool feed_run_n(struct rctx *x, unsigned races)
{
    struct api *a = x->api;
    struct feed_req *f = x->area;
    if (recheck_topic(x, f))
        return false;
    struct sbuf b;
    sbuf_init(&b, 0);
    struct page_ctx p = {f, &b, 0};
    /* stored bytes visited per read: the response stays near consume's cap after framing */
    size_t budget = (size_t)(a->cfg.consume_response_max_bytes / 2);
    for (unsigned reads = 0; reads < FEED_READS_MAX; reads++) {
        struct plog_read_result res;
        memset(&res, 0, sizeof res);
        uint64_t hw = 0, start = 0;
        size_t scan = f->ntypes ? FEED_SCAN_MAX : f->page;
        int rc = broker_read(a->broker, x->topic, x->partition, f->cursor, scan, budget,
                             page_visit, &p, &res, &hw, &start);
        if (rc) {
            sbuf_free(&b);
            api_respond_error(x, rc, rc == ERR_CORRUPT ? "A stored record failed its checksum" : NULL);
            return false;
        }
        if (res.from_adjusted && start > f->cursor)
            f->skipped += start - f->cursor; /* retention removed them: start at the floor */
        ASSERT(res.next_offset >= f->cursor);
        f->cursor = res.next_offset;
        if (p.events || !res.more)
            break;
        /* only filtered-out records so far, and more are there: keep scanning (bounded) */
    }
    if (recheck_topic(x, f)) { /* invariant 3 */
        sbuf_free(&b);
        return false;
    }
    if (p.events == 0 && f->deadline_ms && !f->final && races < 4 && !http_req_orphaned(x->req)) {
        uint64_t now = clock_mono_ms();
        if (now < f->deadline_ms) {
            x->waiter.wake = feed_wake;
            int wrc = broker_wait(a->broker, x->topic, x->partition, f->cursor, &x->waiter);
            if (wrc == 0) {
                sbuf_free(&b);
                f->parked = true;
                http_req_timer_start(x->req, f->deadline_ms - now, feed_timeout, NULL);
                return true;
            }
            if (wrc == ERR_AGAIN) { /* data raced in between the read and the wait */
                sbuf_free(&b);
                return feed_run_n(x, races + 1);
            }
            /* ERR_OVERLOADED: answer at once, like wait_ms=0 */
        }
    }
    char cur[48];
    cursor_fmt(cur, sizeof cur, f->topic_id, f->cursor);
    sbuf_puts(&b, "{\"cursor\":\"");
    sbuf_puts(&b, cur);
    sbuf_puts(&b, "\"}\n");
    char more[64] = "";
    if (f->skipped)
        snprintf(more, sizeof more, "X-Ayder-Skipped-Records: %llu\r\n",
                 (unsigned long long)f->skipped);
    respond_with_node(x, "application/x-ndjson", more[0] ? more : NULL, &b);
    return false;
}

static bool feed_run(struct rctx *x)
{
    return feed_run_n(x, 0);
}

/* Worker thread, posted by feed_wake. */
static void feed_woken(struct http_req *req, void *arg)
{
    (void)arg;
    struct rctx *x = http_req_user(req);
    struct feed_req *f = x->area;
    http_req_timer_stop(req);
    if (http_req_responded(req) || !feed_run(x)) { /* answered (or re-parked: keep the ref) */
        f->parked = false;
        http_req_unref(req);
    }
}

/* Core thread (apply): the partition's high watermark passed the cursor. */
static void feed_wake(struct broker_waiter *w)
{
    struct rctx *x = (struct rctx *)((char *)w - offsetof(struct rctx, waiter));
    http_req_post(x->req, feed_woken, NULL);
}

static void feed_timeout(struct http_req *req, void *arg)
{
    (void)arg;
    struct rctx *x = http_req_user(req);
    struct feed_req *f = x->area;
    if (broker_unwait(x->api->broker, &x->waiter)) {
        f->final = true;
        feed_run(x);
        f->parked = false;
        http_req_unref(req);
    }
    /* else a wake is already posted; it answers */
}

/* "a;b;c" into f->types (empty items ignored). false after answering the error. */
static bool parse_types(struct rctx *x, struct feed_req *f, struct slice s, const char *name)
{
    size_t i = 0;
    while (i <= s.len) {
        size_t j = i;
        while (j < s.len && s.ptr[j] != ';')
            j++;
        if (j > i) {
            if (f->ntypes == FEED_TYPES_MAX || j - i > FEED_TYPE_LEN_MAX) {
                char msg[160];
                snprintf(msg, sizeof msg, "%s: at most %u types of 1..%u bytes each", name,
                         FEED_TYPES_MAX, FEED_TYPE_LEN_MAX);
                api_respond_error(x, ERR_BAD_PARAM, msg);
                return false;
            }
            f->types[f->ntypes++] = slice_of(s.ptr + i, j - i);
        }
        i = j + 1;
    }
    if (f->ntypes == 0) {
        char msg[120];
        snprintf(msg, sizeof msg, "%s must list at least one event type (';'-separated)", name);
        api_respond_error(x, ERR_BAD_PARAM, msg);
        return false;
    }
    return true;
}

/* A query parameter as a slice: 1 present, 0 absent, -1 after answering the error. */
static int qparam(struct rctx *x, const char *name, struct slice *out)
{
    int rc = api_qparam(x, name, out);
    if (rc < 0) {
        api_respond_error(x, rc, NULL);
        return -1;
    }
    return rc;
}

/* Resolve the topic and check the token (400 absent, 409 stale). false after answering. */
static bool topic_and_token(struct rctx *x, struct feed_req *f)
{
    if (!api_check_name(x, x->topic, BROKER_TOPIC_NAME_MAX, "Topic name"))
        return false;
    if (broker_topic_info(x->api->broker, x->topic, &f->topic_id, &f->nparts)) {
        api_respond_error(x, ERR_NO_TOPIC, NULL);
        return false;
    }
    struct slice tok;
    int rc = qparam(x, "token", &tok);
    if (rc < 0)
        return false;
    if (rc == 0) {
        api_respond_error(x, ERR_BAD_PARAM,
                          "token is required: take it from the discovery call GET /feeds/{topic}");
        return false;
    }
    char want[48];
    token_fmt(want, sizeof want, f->topic_id, f->nparts);
    if (!slice_eq_cstr(tok, want)) {
        api_respond_error(x, ERR_STALE_TOKEN, NULL);
        return false;
    }
    return true;
}

static void h_events(struct rctx *x, const struct route_match *m)
{
    struct api *a = x->api;
    struct feed_req *f = arena_alloc(http_req_arena(x->req), sizeof *f);
    if (!f) {
        api_respond_error(x, ERR_NOMEM, NULL);
        return;
    }
    memset(f, 0, sizeof *f);
    x->area = f;
    x->topic = route_param(m, "topic");
    if (!topic_and_token(x, f))
        return;

    struct slice s;
    int rc = qparam(x, "partition", &s);
    if (rc < 0)
        return;
    uint64_t v;
    if (rc == 0 || !parse_exact_u64(s, FEED_PARTITION_ID_MAX, &v)) {
        api_respond_error(x, ERR_BAD_PARAM, rc == 0 ? "partition is required (an id from discovery)"
                                                    : "partition must be an id from discovery");
        return;
    }
    if (v >= f->nparts) {
        char msg[96];
        snprintf(msg, sizeof msg, "The feed has partitions 0..%u", f->nparts - 1);
        api_respond_error(x, ERR_BAD_PARTITION, msg);
        return;
    }
    x->partition = (uint32_t)v;

    rc = qparam(x, "cursor", &s);
    if (rc < 0)
        return;
    if (rc == 0) {
        api_respond_error(x, ERR_BAD_PARAM, "cursor is required: _first, _last or a cursor from a "
                                            "{\"cursor\":…} line of this feed");
        return;
    }
    uint64_t hw = 0, start = 0;
    struct plog_read_result res;
    if (slice_eq_cstr(s, "_first") || slice_eq_cstr(s, "_last")) {
        rc = broker_read(a->broker, x->topic, x->partition, 0, 0, 0, NULL, NULL, &res, &hw, &start);
        if (rc) {
            api_respond_error(x, rc, NULL);
            return;
        }
        f->cursor = slice_eq_cstr(s, "_first") ? start : hw;
    } else {
        uint64_t cid;
        if (!cursor_parse(s, &cid, &f->cursor)) {
            api_respond_error(x, ERR_BAD_PARAM, "cursor must be _first, _last or a cursor from a "
                                                "{\"cursor\":…} line of this feed");
            return;
        }
        if (cid != f->topic_id) {
            api_respond_error(x, ERR_BAD_PARAM, "cursor belongs to another incarnation of this topic "
                                                "(it was deleted and re-created): start from _first");
            return;
        }
    }

    struct slice inc, exc;
    int ri = qparam(x, "event-types", &inc);
    if (ri < 0)
        return;
    int re = qparam(x, "skip-event-types", &exc);
    if (re < 0)
        return;
    if (ri && re) {
        api_respond_error(x, ERR_BAD_PARAM, "event-types and skip-event-types are mutually exclusive");
        return;
    }
    if (ri && !parse_types(x, f, inc, "event-types"))
        return;
    if (re) {
        f->skip = true;
        if (!parse_types(x, f, exc, "skip-event-types"))
            return;
    }

    f->page = FEED_PAGE_DEFAULT;
    rc = qparam(x, "pagesizehint", &s);
    if (rc == 0)
        rc = qparam(x, "pageSizeHint", &s);
    if (rc < 0)
        return;
    if (rc == 1) {
        if (url_parse_u64(s, &v)) {
            api_respond_error(x, ERR_BAD_PARAM, "pagesizehint must be a non-negative integer");
            return;
        }
        f->page = v < 1 ? 1 : v > FEED_PAGE_MAX ? FEED_PAGE_MAX : (uint32_t)v; /* a hint: clamp */
    }

    uint64_t wait_ms = 0;
    if (api_qparam_u64(x, "wait_ms", 0, a->cfg.long_poll_max_ms, &wait_ms) < 0)
        return;
    if (wait_ms)
        f->deadline_ms = clock_mono_ms() + wait_ms;
    if (feed_run(x))
        http_req_ref(x->req); /* invariant 4; the wake is posted, never run inline */
}

/* ------------------------------------------------------------------------------------------ */
/* Discovery                                                                                   */

static void h_discovery(struct rctx *x, const struct route_match *m)
{
    struct slice topic = route_param(m, "topic");
    if (!api_check_name(x, topic, BROKER_TOPIC_NAME_MAX, "Topic name"))
        return;
    /* A ZeroEventHub (v1) fetch names cursors on this path; v2 fetches go to /events. */
    struct slice s;
    if (api_qparam(x, "cursor0", &s) == 1 || api_qparam(x, "n", &s) == 1) {
        api_respond_error(x, ERR_BAD_PARAM, "Feed API v1 (ZeroEventHub) is not served: discover "
                                            "here without arguments, fetch at /feeds/{topic}/events");
        return;
    }
    uint64_t id;
    uint32_t n;
    if (broker_topic_info(x->api->broker, topic, &id, &n)) {
        api_respond_error(x, ERR_NO_TOPIC, NULL);
        return;
    }
    ASSERT(n <= FEED_PARTITION_ID_MAX + 1);
    char tok[48];
    token_fmt(tok, sizeof tok, id, n);
    struct core_ha_status st;
    core_ha_status(x->api->core, &st);
    struct sbuf b;
    sbuf_init(&b, 0);
    struct jw w;
    jw_init(&w, &b);
    jw_obj_open(&w);
    jw_kstr(&w, "token", tok);
    jw_key(&w, "partitions");
    jw_arr_open(&w);
    for (uint32_t i = 0; i < n; i++) {
        char pid[16];
        snprintf(pid, sizeof pid, "%u", i);
        jw_obj_open(&w);
        jw_kstr(&w, "id", pid);
        jw_obj_close(&w);
    }
    jw_arr_close(&w);
    /* A retried produce without an idempotency key, or one outside the dedupe window, can
     * store the same event twice: at-least-once. */
    jw_kbool(&w, "exactlyOnce", false);
    /* Our extensions, in one member so that they cannot meet a future flag of the spec. */
    jw_key(&w, "ayder");
    jw_obj_open(&w);
    jw_kbool(&w, "longPoll", true);
    jw_ku64(&w, "maxWaitMs", x->api->cfg.long_poll_max_ms);
    jw_ku64(&w, "maxPageSize", FEED_PAGE_MAX);
    jw_kstr(&w, "eventTypeHeader", FEED_TYPE_HEADER);
    jw_kstr(&w, "node", st.node_id);
    jw_kstr(&w, "role", st.role);
    jw_obj_close(&w);
    jw_obj_close(&w);
    respond_with_node(x, "application/json", NULL, &b);
}

const struct api_route api_feed_routes[] = {
    {"GET", "/feeds/:topic", "feed_discovery", SCOPE_CONSUME, API_READ, h_discovery},
    {"GET", "/feeds/:topic/events", "feed_events", SCOPE_CONSUME, API_READ, h_events},
    API_ROUTES_END,
};
