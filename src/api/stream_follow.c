/* stream_follow.c -- POST /broker/query with "follow": true: a continuous query streamed as SSE or
 * NDJSON (docs/HTTP_API.md "Continuous queries"; semantics in docs/STREAM.md).
 *
 * The engine's follow mode (stream/query.h F1-F5) runs here, on the request's HTTP worker, in
 * bounded turns; nothing goes through the batch stream pool:
 *
 *              start ──▶ turn ◀── wake (a partition's high watermark passed our next offset)
 *                         │  ◀── post (yield: the turn's record budget was used up)
 *                         │  ◀── drain (the connection's queued output fell below low water)
 *                         │  ◀── timer (idle clocks, heartbeats, the stall deadline)
 *                         ▼
 *   drain the engine's events into the stream while its output is below the buffer
 *   read up to TURN_RECORDS records round-robin (only while output and queue are below it)
 *   tick(now); drain again; heartbeat when nothing was written for heartbeat_ms
 *   then: budget used up ─▶ post; output full ─▶ arm drain; else park on every caught-up partition
 *
 * Invariants:
 *  1. Bounded work per wake: a turn feeds at most TURN_RECORDS records, then yields to the loop.
 *  2. Bounded memory: records are read only while the connection's pending output plus the
 *     engine's queue are below the per-subscriber buffer; the engine's state is bounded by its
 *     limits (max_groups, max_memory_bytes: an "end" event names the limit).
 *  3. A reader that takes nothing for stall_ms while its buffer is full is cut (the connection is
 *     closed; it resumes from the last event id it received).
 *  4. Every event carries the engine's position (SSE "id:", NDJSON "position"); heartbeats carry
 *     the position after every record read, so a client resumes past filtered-out records too.
 *  5. Lifetime: struct follow is freed when its last hold is released; every parked waiter and
 *     every posted callback holds it (and a request reference). The stream's close function
 *     unparks what it can and releases the stream's own hold.
 */
#include "api/stream_internal.h"

#include "base/alloc.h"
#include "base/clock.h"
#include "base/err.h"
#include "broker/broker.h"
#include "broker/entry.h"

#include <stdio.h>
#include <string.h>

#define TURN_RECORDS 1024u     /* records fed per turn at most (invariant 1) */
#define CHUNK_RECORDS 256u     /* per partition per read */
#define FOLLOW_MAX_DEFAULT 64u
#define BUFFER_DEFAULT (1u << 20)
#define STALL_MS_DEFAULT 30000u

struct follow;

struct fwait {
    struct broker_waiter w;
    struct follow *f;
    bool parked;
};

struct fpos {
    uint32_t partition;
    uint64_t next;
    uint64_t hw;
    bool done; /* end_offset / to_ms reached */
};

struct follow {
    struct api *a;
    struct http_req *req;
    struct squery *q;
    struct sdecode dec;
    char topic[SQUERY_NAME_MAX + 1];
    struct fpos *parts;
    struct fwait *waits;
    uint32_t nparts, rr;
    uint64_t end_offset; /* UINT64_MAX: none */
    bool has_to;
    int64_t to_ms;
    uint64_t limit, records; /* source.limit (UINT64_MAX: none), records read */
    bool sse;
    size_t buffer, low_water;
    uint64_t stall_ms, tick_ms;
    uint64_t last_write_ms, full_since_ms; /* mono */
    int holds;
    bool closed, ended, posted, drain_armed, in_turn;
    struct sbuf out;
};

static void follow_turn(struct follow *f);

static void hold(struct follow *f)
{
    f->holds++;
    http_req_ref(f->req);
}

static void release(struct follow *f)
{
    struct http_req *req = f->req;
    if (--f->holds == 0) {
        squery_free(f->q);
        sdecode_close(&f->dec);
        sbuf_free(&f->out);
        xfree(f->parts);
        xfree(f->waits);
        xfree(f);
    }
    http_req_unref(req);
}

/* ---- writing events ------------------------------------------------------------------------ */

/* JSON whitespace is insignificant and a raw newline cannot occur inside a JSON string, so a
 * record stored pretty-printed is flattened: SSE splits lines into "data:" lines, NDJSON needs one
 * line per event. */
static void put_flat(struct sbuf *b, struct slice s, bool sse)
{
    size_t run = 0;
    for (size_t i = 0; i < s.len; i++) {
        uint8_t c = s.ptr[i];
        if (c != '\n' && c != '\r')
            continue;
        sbuf_append(b, s.ptr + run, i - run);
        if (c == '\n')
            sbuf_puts(b, sse ? "\ndata: " : " ");
        run = i + 1;
    }
    sbuf_append(b, s.ptr + run, s.len - run);
}

static const char *const ev_name[] = {"row", "aggregate", "late"};

/* One event: SSE "event: <type>\nid: <pos>\ndata: <json>\n\n"; NDJSON
 * {"type":"<type>","position":"<pos>","<type>":<json>}. */
static int write_event(struct follow *f, const char *type, struct slice pos, struct slice data)
{
    struct sbuf *b = &f->out;
    b->len = 0;
    if (f->sse) {
        sbuf_printf(b, "event: %s\n", type);
        if (pos.len) {
            sbuf_puts(b, "id: ");
            sbuf_append(b, pos.ptr, pos.len);
            sbuf_putc(b, '\n');
        }
        sbuf_puts(b, "data: ");
        put_flat(b, data, true);
        sbuf_puts(b, "\n\n");
    } else {
        sbuf_printf(b, "{\"type\":\"%s\"", type);
        if (pos.len) {
            sbuf_puts(b, ",\"position\":\"");
            sbuf_append(b, pos.ptr, pos.len); /* printable ASCII without quotes (query.h) */
            sbuf_putc(b, '"');
        }
        sbuf_printf(b, ",\"%s\":", type);
        put_flat(b, data, false);
        sbuf_puts(b, "}\n");
    }
    if (!sbuf_ok(b))
        return ERR_NOMEM;
    f->last_write_ms = clock_mono_ms();
    return http_stream_write(f->req, b->data, b->len);
}

static int take_event(void *ctx, const struct squery_event *ev)
{
    struct follow *f = ctx;
    if (f->closed || http_stream_pending(f->req) >= f->buffer)
        return 1;
    write_event(f, ev_name[ev->type], ev->position, ev->data);
    return 0;
}

/* {"position", "watermark_ms", "stats", [more]} for heartbeat and end events. */
static void status_event(struct follow *f, const char *type, const char *reason,
                         const struct serr *e)
{
    struct sbuf pos, data;
    sbuf_init(&pos, 0);
    sbuf_init(&data, 0);
    squery_follow_position(f->q, &pos);
    struct jw w;
    jw_init(&w, &data);
    jw_obj_open(&w);
    if (reason) {
        jw_kstr(&w, "reason", reason);
        if (e && e->path[0])
            jw_kstr(&w, "limit", e->path);
        if (e && e->msg[0])
            jw_kstr(&w, "message", e->msg);
    }
    jw_key(&w, "position");
    jw_strn(&w, pos.data ? pos.data : (const uint8_t *)"", pos.len);
    jw_key(&w, "next_offsets");
    jw_obj_open(&w);
    for (uint32_t i = 0; i < f->nparts; i++) {
        char k[16];
        snprintf(k, sizeof k, "%u", f->parts[i].partition);
        jw_ku64(&w, k, f->parts[i].next);
    }
    jw_obj_close(&w);
    jw_key(&w, "stats");
    squery_follow_stats(f->q, &w);
    jw_obj_close(&w);
    if (sbuf_ok(&pos) && sbuf_ok(&data))
        write_event(f, type, slice_of(pos.data, pos.len), slice_of(data.data, data.len));
    sbuf_free(&pos);
    sbuf_free(&data);
}

/* End the stream with an "end" event (the bytes are queued even above the buffer: it is the last
 * thing written). The close function frees everything once the bytes are out. */
static void follow_end(struct follow *f, const char *reason, const struct serr *e)
{
    if (f->ended || f->closed)
        return;
    squery_drain(f->q, take_event, f);
    status_event(f, "end", reason, e);
    f->ended = true;
    http_stream_end(f->req);
}

/* ---- reading ------------------------------------------------------------------------------- */

struct fread {
    struct follow *f;
    struct fpos *p;
    int err;
    uint32_t fed;
};

static int follow_visit(void *ctx, const struct plog_record *pr)
{
    struct fread *c = ctx;
    struct follow *f = c->f;
    struct fpos *p = c->p;
    if (pr->offset >= f->end_offset || (f->has_to && pr->timestamp_ms >= f->to_ms)) {
        p->done = true; /* a bound of the request: this record is not consumed */
        return 1;
    }
    struct shdr hdrs[ENTRY_HEADERS_MAX];
    size_t nh = pr->header_count < ENTRY_HEADERS_MAX ? pr->header_count : ENTRY_HEADERS_MAX;
    for (size_t i = 0; i < nh; i++) {
        hdrs[i].name = pr->headers[i].key;
        hdrs[i].value = pr->headers[i].value;
    }
    struct srec r = {.partition = p->partition, .offset = pr->offset,
                     .timestamp_ms = pr->timestamp_ms, .key = pr->key, .has_key = pr->has_key,
                     .headers = hdrs, .header_count = nh, .value = pr->value};
    p->next = pr->offset + 1;
    c->fed++;
    f->records++;
    int rc = squery_feed(f->q, &r);
    if (rc) {
        c->err = rc;
        return 1;
    }
    return f->records >= f->limit;
}

/* Read one chunk of partition i. *caught_up: it is at its log end. */
static int read_part(struct follow *f, uint32_t i, uint32_t max, uint32_t *fed, bool *caught_up)
{
    struct fpos *p = &f->parts[i];
    struct fread c = {f, p, 0, 0};
    struct plog_read_result res;
    memset(&res, 0, sizeof res);
    uint64_t hw = 0, start = 0;
    *fed = 0;
    *caught_up = false;
    int rc = broker_read(f->a->broker, slice_cstr(f->topic), p->partition, p->next, max, SIZE_MAX,
                         follow_visit, &c, &res, &hw, &start);
    *fed = c.fed;
    if (rc)
        return rc;
    if (c.err)
        return c.err;
    p->hw = hw;
    if (res.from_adjusted && p->next < start)
        p->next = start; /* below the retention floor: the log starts later */
    *caught_up = !p->done && p->next >= hw && !res.more;
    return 0;
}

/* ---- the turn ------------------------------------------------------------------------------ */

static void follow_posted(struct http_req *req, void *arg)
{
    (void)req;
    struct follow *f = arg;
    f->posted = false;
    follow_turn(f);
    release(f);
}

static void follow_woken(struct http_req *req, void *arg)
{
    (void)req;
    struct fwait *fw = arg;
    struct follow *f = fw->f;
    fw->parked = false;
    follow_turn(f);
    release(f);
}

/* Core thread: a partition's high watermark passed our next offset. */
static void follow_wake(struct broker_waiter *w)
{
    struct fwait *fw = (struct fwait *)((char *)w - offsetof(struct fwait, w));
    http_req_post_low(fw->f->req, follow_woken, fw); /* after answers (http/server.h) */
}

static void follow_drained(struct http_req *req, void *arg)
{
    (void)req;
    struct follow *f = arg;
    f->drain_armed = false;
    follow_turn(f);
}

static void follow_timer(struct http_req *req, void *arg)
{
    (void)req;
    struct follow *f = arg;
    follow_turn(f);
}

static void error_end(struct follow *f, int rc)
{
    const struct serr *qe = squery_error(f->q);
    if (rc == ERR_QUERY_LIMIT && qe) {
        follow_end(f, "query_limit", qe);
        return;
    }
    struct serr e;
    memset(&e, 0, sizeof e);
    serr_set(&e, "", "%s", rc == ERR_CORRUPT ? "a stored record failed its checksum"
                                             : err_message(rc));
    follow_end(f, rc == ERR_NO_TOPIC || rc == ERR_BAD_PARTITION ? "topic_gone" : "error", &e);
}

static void follow_turn(struct follow *f)
{
    if (f->closed || f->ended || f->in_turn)
        return;
    f->in_turn = true;
    struct api *a = f->a;
    int64_t now = clock_wall_ms();
    uint64_t mono = clock_mono_ms();
    int rc = 0;
    if (atomic_load(&a->stream_stopping)) {
        follow_end(f, "shutdown", NULL);
        goto out;
    }
    squery_drain(f->q, take_event, f);
    /* read while there is room: the connection's output plus the engine's queue (invariant 2) */
    uint32_t budget = TURN_RECORDS, done = 0;
    bool all_caught_up = true;
    for (uint32_t k = 0; k < f->nparts && rc == 0; k++) {
        uint32_t i = (f->rr + k) % f->nparts;
        struct fpos *p = &f->parts[i];
        if (p->done)
            continue;
        bool caught_up = false;
        while (rc == 0 && !caught_up && !p->done && budget > 0 && f->records < f->limit &&
               http_stream_pending(f->req) + squery_pending_bytes(f->q) < f->buffer) {
            uint32_t fed;
            rc = read_part(f, i, budget < CHUNK_RECORDS ? budget : CHUNK_RECORDS, &fed, &caught_up);
            budget -= fed < budget ? fed : budget;
            squery_drain(f->q, take_event, f);
            if (fed == 0 && !caught_up)
                break;
        }
        if (caught_up)
            squery_caught_up(f->q, p->partition, now);
        else if (!p->done)
            all_caught_up = false;
    }
    f->rr = (f->rr + 1) % f->nparts;
    if (rc == 0)
        rc = squery_tick(f->q, now);
    squery_drain(f->q, take_event, f);
    if (rc) {
        error_end(f, rc);
        goto out;
    }
    for (uint32_t i = 0; i < f->nparts; i++)
        done += f->parts[i].done;
    if (f->records >= f->limit || done == f->nparts) {
        follow_end(f, f->records >= f->limit ? "limit" : "end_offset", NULL);
        goto out;
    }
    bool full = http_stream_pending(f->req) >= f->buffer || squery_pending_events(f->q) > 0;
    if (full) {
        /* a slow reader: wait for the output to drain; cut it after stall_ms (invariant 3) */
        if (!f->full_since_ms)
            f->full_since_ms = mono;
        else if (mono - f->full_since_ms >= f->stall_ms) {
            http_stream_abort(f->req);
            goto out;
        }
        if (!f->drain_armed) {
            f->drain_armed = true;
            http_stream_on_drain(f->req, f->low_water, follow_drained, f);
        }
    } else {
        f->full_since_ms = 0;
        if (mono - f->last_write_ms >= (uint64_t)squery_follow(f->q)->heartbeat_ms)
            status_event(f, "heartbeat", NULL, NULL);
    }
    if (!full && (budget == 0 || !all_caught_up)) {
        if (!f->posted) { /* more to read: yield to the loop, come back (invariant 1) */
            f->posted = true;
            hold(f);
            http_req_post(f->req, follow_posted, f);
        }
    } else if (!full) {
        for (uint32_t i = 0; i < f->nparts; i++) {
            struct fwait *fw = &f->waits[i];
            if (fw->parked || f->parts[i].done)
                continue;
            fw->w.wake = follow_wake;
            int wrc = broker_wait(a->broker, slice_cstr(f->topic), f->parts[i].partition,
                                  f->parts[i].next, &fw->w);
            if (wrc == 0) {
                fw->parked = true;
                hold(f);
            } else if (wrc == ERR_AGAIN && !f->posted) {
                f->posted = true; /* data arrived since the read */
                hold(f);
                http_req_post(f->req, follow_posted, f);
            } else if (wrc != ERR_AGAIN) {
                error_end(f, wrc);
                goto out;
            }
        }
    }
    http_req_timer_start(f->req, f->tick_ms, follow_timer, f);
out:
    f->in_turn = false;
}

/* The stream is over (ended and written, or the client left): unpark, let go. */
static void follow_closed(struct http_req *req, void *arg)
{
    struct follow *f = arg;
    f->closed = true;
    http_req_timer_stop(req);
    http_stream_on_drain(req, 0, NULL, NULL);
    for (uint32_t i = 0; i < f->nparts; i++)
        if (f->waits[i].parked && broker_unwait(f->a->broker, &f->waits[i].w)) {
            f->waits[i].parked = false;
            release(f);
        }
    atomic_fetch_sub(&f->a->follow_open, 1);
    release(f); /* the stream's own hold */
}

/* ---- start --------------------------------------------------------------------------------- */

void stream_follow_start(struct rctx *x, struct squery *q, struct sdecode *dec, struct ssource *src)
{
    struct api *a = x->api;
    struct serr e;
    memset(&e, 0, sizeof e);
    const struct squery_source *qs = squery_source(q);
    /* the format: SSE (Accept: text/event-stream or ?stream=sse) or NDJSON (?stream=ndjson, the
     * default) */
    bool sse = false;
    struct slice mode;
    int prc = api_qparam(x, "stream", &mode);
    if (prc < 0)
        goto bad_request;
    if (prc == 1) {
        if (slice_eq_cstr(mode, "sse"))
            sse = true;
        else if (!slice_eq_cstr(mode, "ndjson")) {
            serr_set(&e, "stream", "?stream= is sse or ndjson");
            stream_respond_serr(x, ERR_INVALID, &e);
            goto free_in;
        }
    } else {
        const struct http_header *h = http_find_header(http_req_head(x->req), "accept");
        sse = h && memmem(h->value.ptr, h->value.len, "text/event-stream", 17) != NULL;
    }
    uint32_t max_open = a->cfg.stream_follow_max ? a->cfg.stream_follow_max : FOLLOW_MAX_DEFAULT;
    if (atomic_fetch_add(&a->follow_open, 1) >= max_open) {
        atomic_fetch_sub(&a->follow_open, 1);
        api_respond_error(x, ERR_OVERLOADED, "Too many continuous queries are open; retry later");
        goto free_in;
    }
    struct follow *f = xcalloc(1, sizeof *f);
    if (!f || src->nparts == 0) {
        atomic_fetch_sub(&a->follow_open, 1);
        xfree(f);
        api_respond_error(x, f ? ERR_UNPROCESSABLE : ERR_NOMEM,
                          f ? "The topic has no partitions" : NULL);
        goto free_in;
    }
    f->a = a;
    f->req = x->req;
    f->q = q;
    f->dec = *dec;
    f->sse = sse;
    snprintf(f->topic, sizeof f->topic, "%s", src->topic);
    f->nparts = src->nparts;
    f->parts = xcalloc(f->nparts, sizeof *f->parts);
    f->waits = xcalloc(f->nparts, sizeof *f->waits);
    uint32_t *pn = xcalloc(f->nparts, sizeof *pn);
    uint64_t *off = xcalloc(f->nparts, sizeof *off);
    sbuf_init(&f->out, 0);
    f->holds = 1;
    http_req_ref(f->req);
    int rc = (!f->parts || !f->waits || !pn || !off) ? ERR_NOMEM : 0;
    for (uint32_t i = 0; rc == 0 && i < f->nparts; i++) {
        pn[i] = src->parts[i].partition;
        off[i] = src->parts[i].start;
        f->waits[i].f = f;
    }
    /* resume: the Last-Event-ID header (EventSource sends it on reconnect) or ?last_event_id= */
    struct slice last = {0};
    const struct http_header *lh = http_find_header(http_req_head(x->req), "last-event-id");
    if (lh)
        last = lh->value;
    else if (api_qparam(x, "last_event_id", &last) < 0)
        rc = ERR_INVALID;
    if (rc == 0 && last.len &&
        squery_follow_resume(q, (const char *)last.ptr, last.len) != 0) {
        serr_set(&e, "Last-Event-ID", "not a position of this query (an event id it sent)");
        rc = ERR_INVALID;
    }
    if (rc == 0) {
        rc = squery_follow_begin(q, pn, off, f->nparts, clock_wall_ms());
        if (rc == ERR_INVALID)
            serr_set(&e, "Last-Event-ID", "names a partition this query does not read");
    }
    for (uint32_t i = 0; rc == 0 && i < f->nparts; i++)
        f->parts[i] = (struct fpos){pn[i], off[i], 0, false};
    xfree(pn);
    xfree(off);
    if (rc) {
        stream_respond_serr(x, rc, &e);
        atomic_fetch_sub(&a->follow_open, 1);
        memset(dec, 0, sizeof *dec);
        release(f);
        return;
    }
    f->end_offset = qs->has_end_offset ? qs->end_offset : UINT64_MAX;
    f->has_to = qs->has_to_ms;
    f->to_ms = qs->to_ms;
    f->limit = qs->limit;
    f->buffer = a->cfg.stream_follow_buffer_bytes ? a->cfg.stream_follow_buffer_bytes
                                                  : BUFFER_DEFAULT;
    f->low_water = f->buffer / 2;
    f->stall_ms = a->cfg.stream_follow_stall_ms ? a->cfg.stream_follow_stall_ms : STALL_MS_DEFAULT;
    const struct squery_follow_opts *o = squery_follow(q);
    f->tick_ms = o->idle_timeout_ms ? (uint64_t)o->idle_timeout_ms / 4 : 1000;
    if (f->tick_ms < 50)
        f->tick_ms = 50;
    if (f->tick_ms > 1000)
        f->tick_ms = 1000;
    if (f->tick_ms > (uint64_t)o->heartbeat_ms)
        f->tick_ms = (uint64_t)o->heartbeat_ms;
    rc = http_stream_begin(f->req, 200, sse ? "text/event-stream" : "application/x-ndjson",
                           "Cache-Control: no-store\r\nX-Accel-Buffering: no\r\n");
    if (rc) {
        api_respond_error(x, rc, "A continuous query needs a streaming response (not HEAD)");
        atomic_fetch_sub(&a->follow_open, 1);
        memset(dec, 0, sizeof *dec);
        release(f);
        return;
    }
    http_stream_on_close(f->req, follow_closed, f);
    memset(dec, 0, sizeof *dec);
    /* the first event says the query is live and where it starts */
    status_event(f, "heartbeat", NULL, NULL);
    follow_turn(f);
    return;

bad_request:
    serr_set(&e, "", "bad query parameter");
    stream_respond_serr(x, ERR_INVALID, &e);
free_in:
    squery_free(q);
    sdecode_close(dec);
}
